/* Continuous-batching scheduler: see include/inferd/scheduler.h and
 * docs/runtime.md.
 *
 * Locks: s->mu guards the queue, the state, the counters and the rolling
 * windows; r->mu guards a request's event list. The only nesting is r->mu
 * then s->mu (inferd_request_cancel wakes the scheduler while it knows the
 * request has not ended, which keeps s alive). The scheduler thread never
 * holds s->mu while it takes r->mu: requests to end are collected under
 * s->mu and ended after it is released.
 *
 * Lifetimes: a request has two references, the submitter's and the
 * scheduler's (from submit until its terminal event is pushed). Its
 * terminal event storage is part of the request, so a request can always
 * be ended, even when memory runs out. */
#include "inferd/scheduler.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"
#include "inferd/pool.h"
#include "inferd/tokenizer.h"

#define TERM_TEXT_CAP (INFERD_STOP_LEN_MAX + 16) /* held stop text + a flushed character */

/* ------------------------------------------------------------------------ */
/* Time */

static double ms_between(uint64_t t0, uint64_t t1)
{
    return t1 > t0 ? (double)(t1 - t0) / 1e6 : 0.0;
}

/* ------------------------------------------------------------------------ */
/* Requests and their events */

/* A request's output is an append-only log sized at admission for its
 * worst case (max_new tokens of at most max_piece_len + 8 bytes each), so
 * generating allocates nothing per token: the scheduler writes token i's id
 * and text, then publishes n_pub = i + 1 under r->mu; what lies below n_pub
 * is never written again, so the reader uses it without the lock. */
struct inferd_request {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int refs; /* the submitter's + the scheduler's */
    atomic_bool cancel;
    inferd_sched *s; /* mu: valid while the request has not ended */

    /* Immutable after submit, except prompt/n_prompt/text: set once under
     * mu by the scheduler thread at admission when the prompt was given as
     * text during the load. */
    int32_t *prompt; /* (n_prompt) */
    size_t n_prompt;
    char *text; /* text to tokenize at admission, or NULL */
    size_t text_len;
    bool add_special, parse_special;
    inferd_sampler_params sampling;
    int32_t max_tokens;
    bool ignore_eos;
    bool logprobs;
    uint32_t n_top; /* top log-probabilities per token */
    inferd_positions keep_logits, keep_hidden;
    uint32_t s_n_vocab, s_n_embd; /* the rows' widths, set with the kept rows */
    inferd_stopper *stopper;      /* NULL without stop strings */
    inferd_priority priority;
    uint64_t t_submit_ns;
    uint64_t deadline_ns; /* 0: none */
    int64_t timeout_ms;
    inferd_request_notify_fn on_event;
    void *on_event_ctx;
    inferd_request *qnext; /* queue link (s->mu) */
    bool queued;           /* s->mu: in the queue */

    /* The log: written by the scheduler thread, allocated at admission. */
    int32_t *out_ids; /* (max_new) */
    size_t *out_off;  /* (max_new + 1) byte offsets into out_text */
    char *out_text;   /* (out_text_cap) */
    size_t out_text_cap;
    float *out_lp;        /* logprobs: (max_new), else NULL */
    int32_t *out_top_ids; /* (max_new * n_top) */
    float *out_top_lp;    /* (max_new * n_top) */
    float *kept_logits;   /* (n_kept_logits, n_vocab), written before DONE */
    float *kept_hidden;   /* (n_kept_hidden, n_embd) */
    uint32_t n_kept_logits, n_kept_hidden;

    /* Guarded by mu. */
    uint32_t n_pub;  /* tokens published */
    uint32_t n_read; /* tokens returned by next */
    bool ended;      /* the terminal event is published */
    bool sched_done; /* the scheduler no longer touches it */
    bool terminal_read;
    inferd_event term; /* the terminal event (written before ended) */
    char term_text[TERM_TEXT_CAP];
    char term_msg[sizeof(((inferd_error *)0)->msg)];
};

static void request_free(inferd_request *r)
{
    inferd_free(r->out_ids);
    inferd_free(r->out_off);
    inferd_free(r->out_text);
    inferd_free(r->out_lp);
    inferd_free(r->out_top_ids);
    inferd_free(r->out_top_lp);
    inferd_free(r->kept_logits);
    inferd_free(r->kept_hidden);
    inferd_stopper_destroy(r->stopper);
    inferd_free(r->prompt);
    inferd_free(r->text);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    inferd_free(r);
}

static void request_unref(inferd_request *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        request_free(r);
}

/* Publish the first @p n_pub tokens of the log. */
static void publish_tokens(inferd_request *r, uint32_t n_pub)
{
    pthread_mutex_lock(&r->mu);
    r->n_pub = n_pub;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static bool has_event_locked(const inferd_request *r) { return r->n_read < r->n_pub || r->ended; }

int inferd_request_next(inferd_request *r, inferd_event *out_event, int64_t wait_ms)
{
    pthread_mutex_lock(&r->mu);
    if (r->terminal_read) {
        pthread_mutex_unlock(&r->mu);
        return INFERD_E_NOT_FOUND;
    }
    if (!has_event_locked(r) && wait_ms != 0) {
        /* One monotonic deadline for the whole wait (none when wait_ms < 0),
         * so spurious wake-ups do not extend it. */
        const uint64_t until = inferd_deadline_in_ms(wait_ms).at_ns;
        while (!has_event_locked(r))
            if (inferd_cond_wait_until_ns(&r->cv, &r->mu, until) != 0)
                break;
    }
    if (r->n_read < r->n_pub) {
        const uint32_t i = r->n_read++;
        memset(out_event, 0, sizeof(*out_event));
        out_event->type = INFERD_EVENT_TOKEN;
        out_event->token = r->out_ids[i];
        out_event->index = i;
        out_event->text = r->out_text + r->out_off[i];
        out_event->text_len = r->out_off[i + 1] - r->out_off[i];
        if (r->out_lp) {
            out_event->logprob = r->out_lp[i];
            out_event->n_top = r->n_top;
            out_event->top_ids = r->n_top ? r->out_top_ids + (size_t)i * r->n_top : NULL;
            out_event->top_logprobs = r->n_top ? r->out_top_lp + (size_t)i * r->n_top : NULL;
        }
    } else if (r->ended) {
        r->terminal_read = true;
        *out_event = r->term;
    } else {
        pthread_mutex_unlock(&r->mu);
        return INFERD_E_TIMEOUT;
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

int inferd_request_outputs_get(inferd_request *r, inferd_request_outputs *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&r->mu);
    const bool done = r->terminal_read && r->term.type == INFERD_EVENT_DONE;
    pthread_mutex_unlock(&r->mu);
    if (!done)
        return INFERD_E_NOT_FOUND;
    /* Written by the scheduler before it published the end. */
    out->logits = r->kept_logits;
    out->n_logits = r->n_kept_logits;
    out->n_vocab = r->s_n_vocab;
    out->hidden = r->kept_hidden;
    out->n_hidden = r->n_kept_hidden;
    out->n_embd = r->s_n_embd;
    return 0;
}

/* Defined with the scheduler below. */
static bool sched_cancel_queued(inferd_sched *s, inferd_request *r);
static void deliver_end(inferd_request *r);

void inferd_request_cancel(inferd_request *r)
{
    atomic_store(&r->cancel, true);
    pthread_mutex_lock(&r->mu);
    inferd_sched *s = r->ended ? NULL : r->s;
    /* A queued request ends here, at once (even while the model loads); a
     * running one at the scheduler's next step. */
    const bool unqueued = s && sched_cancel_queued(s, r);
    pthread_mutex_unlock(&r->mu);
    if (unqueued)
        deliver_end(r);
}

void inferd_request_release(inferd_request *r)
{
    if (!r)
        return;
    inferd_request_cancel(r);
    if (r->on_event) {
        /* The scheduler may still call on_event; the caller may free its
         * context once this returns, so wait for the scheduler to let go. */
        pthread_mutex_lock(&r->mu);
        while (!r->sched_done)
            pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
    }
    request_unref(r);
}

size_t inferd_request_n_prompt(inferd_request *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->n_prompt;
    pthread_mutex_unlock(&r->mu);
    return n;
}

inferd_request_params inferd_request_params_default(void)
{
    inferd_request_params p;
    memset(&p, 0, sizeof(p));
    p.add_special = true;
    p.sampling = inferd_sampler_params_default();
    p.max_tokens = 128;
    p.priority = INFERD_PRIORITY_NORMAL;
    return p;
}

/* ------------------------------------------------------------------------ */
/* Scheduler */

/* A slot: one KV sequence and the request it serves. Scheduler thread only. */
typedef struct slot {
    inferd_request *r; /* NULL: free */
    size_t n_fed;      /* prompt tokens computed */
    uint32_t n_gen;    /* tokens generated */
    size_t max_new;
    int32_t next_tok; /* generated token to feed next */
    bool stopped;     /* the stopper matched */
    inferd_finish finish;
    inferd_sampler *smp;
    inferd_detok detok;
    uint64_t admit_seq; /* admission order (prefill priority) */
    uint64_t t_admit_ns, t_first_ns, t_last_ns;
    int logits_row; /* this step: row in s->logits, or -1 */
    int rows0;      /* this step: its first row in s->logits (prompt
                       * position pos0), and how many it has */
    int n_rows;
    size_t pos0;
} slot;

/* Rolling window of the last INFERD_SCHED_WINDOW samples. */
typedef struct window {
    double v[INFERD_SCHED_WINDOW];
    uint32_t n, next;
} window;

static void window_add(window *w, double x)
{
    w->v[w->next] = x;
    w->next = (w->next + 1) % INFERD_SCHED_WINDOW;
    if (w->n < INFERD_SCHED_WINDOW)
        w->n++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentiles of @p w; @p tmp holds INFERD_SCHED_WINDOW. */
static inferd_percentiles window_percentiles(const window *w, double *tmp)
{
    inferd_percentiles p = {.n = w->n};
    if (w->n == 0)
        return p;
    memcpy(tmp, w->v, w->n * sizeof(double));
    qsort(tmp, w->n, sizeof(double), cmp_double);
    const double q[3] = {0.50, 0.95, 0.99};
    double *out[3] = {&p.p50, &p.p95, &p.p99};
    for (int i = 0; i < 3; i++) {
        size_t rank = (size_t)(q[i] * w->n + 0.999999999);
        if (rank < 1)
            rank = 1;
        *out[i] = tmp[rank - 1];
    }
    return p;
}

struct inferd_sched {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the scheduler thread */
    pthread_cond_t state_cv; /* state changes (wait_ready, drain) */
    pthread_t thread;
    char *path;
    inferd_sched_opts o;
    inferd_model_params mp;

    /* Guarded by mu. */
    inferd_sched_state state;
    bool loaded; /* the load succeeded */
    bool load_done;
    int load_rc;
    inferd_error load_err;
    inferd_request *q_head[INFERD_PRIORITY_COUNT], *q_tail[INFERD_PRIORITY_COUNT];
    uint32_t q_depth[INFERD_PRIORITY_COUNT];
    uint32_t n_queued;
    bool drain_limited; /* the grace period has an end */
    uint64_t drain_end_ns;
    uint32_t slots_busy;
    uint64_t n_submitted, n_done, n_cancelled, n_timeout, n_failed;
    uint64_t n_rej_overloaded, n_rej_invalid, n_rej_unavailable;
    uint64_t tokens_in, tokens_out, n_steps;
    window w_latency, w_ttft, w_itl;
    inferd_histogram h_latency, h_ttft;
    bool file_bad;         /* the model's file changed under it: every
                              * request fails with file_err from now on */
    inferd_error file_err; /* INFERD_E_IO, naming the file */

    /* Written by the thread before READY (under mu), then read-only. */
    inferd_model *model;
    const inferd_vocab *vocab;
    uint32_t n_vocab, n_ctx, n_embd;

    /* Scheduler thread only. */
    inferd_pool *pool;
    slot *slots; /* (n_slots) */
    uint64_t admit_counter;
    int32_t *b_tok, *b_pos, *b_seq; /* (n_batch_max) */
    int8_t *b_logits, *b_prefill;   /* (n_batch_max) */
    float *logits;                  /* (rows_cap, n_vocab) */
    uint32_t rows_cap;              /* n_slots; n_batch_max once a request
                                       * keeps every prompt position */
    float *hidden;                  /* (n_batch_max, n_embd) once a request
                                       * keeps hidden states, else NULL */
    bool step_hidden;               /* this step has rows whose hidden state
                                       * a request keeps */
    char *piece;                    /* (piece_cap) */
    size_t piece_cap;
    char *stop_buf; /* (piece_cap + INFERD_STOP_LEN_MAX) */
};

const char *inferd_sched_state_name(inferd_sched_state st)
{
    switch (st) {
    case INFERD_SCHED_IDLE: return "idle";
    case INFERD_SCHED_LOADING: return "loading";
    case INFERD_SCHED_READY: return "ready";
    case INFERD_SCHED_DRAINING: return "draining";
    case INFERD_SCHED_STOPPED: return "stopped";
    }
    return "unknown";
}

const char *inferd_priority_name(inferd_priority p)
{
    switch (p) {
    case INFERD_PRIORITY_HIGH: return "high";
    case INFERD_PRIORITY_NORMAL: return "normal";
    case INFERD_PRIORITY_LOW: return "low";
    }
    return "unknown";
}

int inferd_priority_parse(const char *str, inferd_priority *out_p)
{
    static const inferd_priority all[] = {INFERD_PRIORITY_HIGH, INFERD_PRIORITY_NORMAL,
                                          INFERD_PRIORITY_LOW};
    for (size_t i = 0; str && i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(str, inferd_priority_name(all[i])) == 0) {
            *out_p = all[i];
            return 0;
        }
    }
    return INFERD_E_INVALID;
}

inferd_sched_opts inferd_sched_opts_default(void)
{
    inferd_sched_opts o;
    memset(&o, 0, sizeof(o));
    o.model = inferd_model_params_default();
    o.n_slots = 4;
    o.n_queue_max = 64;
    o.n_prefill_chunk = 128;
    o.n_threads = 0;
    o.default_timeout_ms = 600000;
    return o;
}

inferd_model_params inferd_sched_model_params(const inferd_sched_opts *opts)
{
    inferd_model_params p = opts->model;
    p.n_seq_max = opts->n_slots;
    p.n_batch_max = opts->n_slots + opts->n_prefill_chunk;
    return p;
}

/* ---- ending requests ---- */

/* A request leaving the scheduler, with its terminal event filled in. */
typedef struct ending {
    inferd_request *r;
} ending;

/* Fill r's terminal event as an error (scheduler side; r not yet ended). */
static void term_error(inferd_request *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void term_error(inferd_request *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->term_msg, sizeof(r->term_msg), fmt, ap);
    va_end(ap);
    memset(&r->term, 0, sizeof(r->term));
    r->term.type = INFERD_EVENT_ERROR;
    r->term.code = code;
    r->term.message = r->term_msg;
    r->term.text = "";
}

const double inferd_sched_hist_bounds_ms[INFERD_SCHED_HIST_N - 1] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
};

static void hist_add(inferd_histogram *h, double ms)
{
    for (int i = 0; i < INFERD_SCHED_HIST_N; i++)
        if (i == INFERD_SCHED_HIST_N - 1 || ms <= inferd_sched_hist_bounds_ms[i])
            h->cumulative[i]++;
    h->sum_ms += ms;
}

/* Count an ending in the stats (s->mu held). */
static void count_end_locked(inferd_sched *s, const inferd_request *r)
{
    const inferd_event *ev = &r->term;
    if (ev->type == INFERD_EVENT_DONE) {
        s->n_done++;
        window_add(&s->w_latency, ev->total_ms);
        hist_add(&s->h_latency, ev->total_ms);
        if (ev->n_gen > 0) {
            window_add(&s->w_ttft, ev->ttft_ms);
            hist_add(&s->h_ttft, ev->ttft_ms);
        }
        if (ev->n_gen > 1)
            window_add(&s->w_itl, ev->gen_ms / (double)(ev->n_gen - 1));
    } else if (ev->code == INFERD_E_CANCELLED) {
        s->n_cancelled++;
    } else if (ev->code == INFERD_E_TIMEOUT) {
        s->n_timeout++;
    } else {
        s->n_failed++;
    }
}

/* Publish r's terminal event (filled in, and counted), wake its reader and
 * drop the scheduler's reference. Touches nothing of the scheduler, so it
 * may run after the scheduler is gone. No lock held. */
static void deliver_end(inferd_request *r)
{
    pthread_mutex_lock(&r->mu);
    r->ended = true;
    r->s = NULL;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->on_event)
        r->on_event(r->on_event_ctx);
    /* The last use of on_event_ctx: a release waiting for it may go on. */
    pthread_mutex_lock(&r->mu);
    r->sched_done = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    request_unref(r);
}

/* Count r's end and deliver it. s->mu must not be held. */
static void finish_request(inferd_sched *s, inferd_request *r)
{
    pthread_mutex_lock(&s->mu);
    count_end_locked(s, r);
    pthread_mutex_unlock(&s->mu);
    deliver_end(r);
}

/* ---- submit ---- */

/* Re-code @p err as @p code with "@p what: " before its message. */
static int prefix_error(inferd_error *err, int code, const char *what)
{
    char inner[sizeof(err->msg)];
    if (!err)
        return code;
    memcpy(inner, err->msg, sizeof(inner));
    return inferd_fail(err, code, "%s: %s", what, inner);
}

/* Rows request @p r keeps at each kind (its prompt known). */
static uint32_t keep_rows(inferd_positions p, size_t n_prompt)
{
    return p == INFERD_POSITIONS_ALL ? (uint32_t)n_prompt : p == INFERD_POSITIONS_LAST ? 1 : 0;
}

/* The prompt of @p r (tokenized) within the context and the vocabulary,
 * and what it keeps within INFERD_KEEP_BYTES_MAX. */
static int validate_prompt(const inferd_sched *s, const inferd_request *r, inferd_error *err)
{
    const int32_t *ids = r->prompt;
    const size_t n = r->n_prompt;
    if (n == 0)
        return inferd_fail_param(err, INFERD_E_INVALID, "prompt", "prompt: it is empty");
    if (n >= s->n_ctx)
        return inferd_fail_param(err, INFERD_E_CONTEXT_LENGTH, "prompt",
                                 "prompt: %zu tokens do not fit the context of %u (at most %u)", n,
                                 s->n_ctx, s->n_ctx - 1);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= s->n_vocab)
            return inferd_fail_param(err, INFERD_E_INVALID, "prompt",
                                     "prompt: token %zu has id %d, outside the vocabulary [0, %u)",
                                     i, (int)ids[i], s->n_vocab);
    const uint64_t bytes = ((uint64_t)keep_rows(r->keep_logits, n) * s->n_vocab +
                            (uint64_t)keep_rows(r->keep_hidden, n) * s->n_embd) *
                           sizeof(float);
    if (bytes > INFERD_KEEP_BYTES_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID, "keep",
                                 "keep: the logits and hidden states of %zu prompt positions "
                                 "take %llu bytes, more than %llu",
                                 n, (unsigned long long)bytes,
                                 (unsigned long long)INFERD_KEEP_BYTES_MAX);
    return 0;
}

/* Tokenize r->text into r->prompt with s's vocabulary. */
static int tokenize_request(const inferd_sched *s, inferd_request *r, inferd_error *err)
{
    size_t cap = r->text_len + 8, n = 0;
    int32_t *ids = inferd_malloc(cap * sizeof(int32_t));
    if (!ids)
        return inferd_fail(err, INFERD_E_NOMEM, "prompt: no memory to tokenize");
    int rc = inferd_tokenize(s->vocab, r->text, r->text_len, r->add_special, r->parse_special, ids,
                             cap, &n, err);
    if (rc < 0) {
        inferd_free(ids);
        rc = prefix_error(err, INFERD_E_INVALID, "prompt");
        if (err)
            snprintf(err->param, sizeof(err->param), "prompt");
        return rc;
    }
    pthread_mutex_lock(&r->mu);
    inferd_free(r->text);
    r->text = NULL;
    r->prompt = ids;
    r->n_prompt = n;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static int check_request_params(const inferd_request_params *p, inferd_error *err)
{
    if (p->n_tokens == 0 && !p->text)
        return inferd_fail_param(err, INFERD_E_INVALID, "prompt", "prompt: it is empty");
    if (p->n_tokens > 0 && !p->tokens)
        return inferd_fail_param(err, INFERD_E_INVALID, "prompt",
                                 "prompt: tokens is NULL with n_tokens %zu", p->n_tokens);
    if (p->n_tokens == 0 && p->text_len == 0)
        return inferd_fail_param(err, INFERD_E_INVALID, "prompt", "prompt: it is empty");
    if ((unsigned)p->priority >= INFERD_PRIORITY_COUNT)
        return inferd_fail(err, INFERD_E_INVALID, "priority: %d is not high, normal or low",
                           (int)p->priority);
    if ((unsigned)p->keep_logits > INFERD_POSITIONS_ALL ||
        (unsigned)p->keep_hidden > INFERD_POSITIONS_ALL)
        return inferd_fail_param(err, INFERD_E_INVALID, "keep",
                                 "keep: positions %d/%d are not none, last or all",
                                 (int)p->keep_logits, (int)p->keep_hidden);
    if (p->top_logprobs > INFERD_TOP_LOGPROBS_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "top_logprobs: %u (at most %d)",
                           (unsigned)p->top_logprobs, INFERD_TOP_LOGPROBS_MAX);
    if (p->n_stop < 0 || p->n_stop > INFERD_STOP_N_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "stop: %d strings (at most %d)", p->n_stop,
                           INFERD_STOP_N_MAX);
    int rc = inferd_sampler_params_validate(&p->sampling, 1, err);
    if (rc < 0)
        return prefix_error(err, INFERD_E_INVALID, "sampling");
    return 0;
}

static void reject_locked(inferd_sched *s, int code)
{
    if (code == INFERD_E_OVERLOADED)
        s->n_rej_overloaded++;
    else if (code == INFERD_E_UNAVAILABLE)
        s->n_rej_unavailable++;
    else if (code == INFERD_E_INVALID || code == INFERD_E_CONTEXT_LENGTH)
        s->n_rej_invalid++;
}

static int reject(inferd_sched *s, int code)
{
    pthread_mutex_lock(&s->mu);
    reject_locked(s, code);
    pthread_mutex_unlock(&s->mu);
    return code;
}

int inferd_sched_submit(inferd_sched *s, const inferd_request_params *params,
                        inferd_request **out_request, inferd_error *err)
{
    inferd_error lerr = {0};
    int rc;

    if (!params || !out_request)
        return reject(s, inferd_fail(err, INFERD_E_INVALID,
                                     "submit: params and out_request must not be NULL"));
    if ((rc = check_request_params(params, &lerr)) < 0)
        goto fail_rejected;

    inferd_request *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "submit: no memory");
    pthread_mutex_init(&r->mu, NULL);
    inferd_cond_init_monotonic(&r->cv);
    atomic_init(&r->refs, 2);
    r->sched_done = false;
    atomic_init(&r->cancel, false);
    r->s = s;
    r->add_special = params->add_special;
    r->parse_special = params->parse_special;
    r->sampling = params->sampling;
    r->max_tokens = params->max_tokens;
    r->ignore_eos = params->ignore_eos;
    r->logprobs = params->logprobs || params->top_logprobs > 0;
    r->n_top = params->top_logprobs;
    r->keep_logits = params->keep_logits;
    r->keep_hidden = params->keep_hidden;
    r->priority = params->priority;
    r->on_event = params->on_event;
    r->on_event_ctx = params->on_event_ctx;
    r->timeout_ms = params->timeout_ms == 0 ? s->o.default_timeout_ms : params->timeout_ms;
    r->t_submit_ns = inferd_now_ns();
    r->deadline_ns = r->timeout_ms > 0 ? r->t_submit_ns + (uint64_t)r->timeout_ms * 1000000u : 0;
    if (params->n_stop > 0) {
        rc = inferd_stopper_create(params->stop, (size_t)params->n_stop, &r->stopper, &lerr);
        if (rc < 0) {
            if (rc != INFERD_E_NOMEM)
                rc = prefix_error(&lerr, INFERD_E_INVALID, "stop");
            goto fail_free;
        }
    }
    if (params->n_tokens > 0) {
        r->prompt = inferd_malloc(params->n_tokens * sizeof(int32_t));
        if (!r->prompt) {
            rc = inferd_fail(&lerr, INFERD_E_NOMEM, "submit: no memory for the prompt");
            goto fail_free;
        }
        memcpy(r->prompt, params->tokens, params->n_tokens * sizeof(int32_t));
        r->n_prompt = params->n_tokens;
    } else {
        r->text = inferd_malloc(params->text_len + 1);
        if (!r->text) {
            rc = inferd_fail(&lerr, INFERD_E_NOMEM, "submit: no memory for the prompt");
            goto fail_free;
        }
        memcpy(r->text, params->text, params->text_len);
        r->text[params->text_len] = '\0';
        r->text_len = params->text_len;
    }

    /* Once loaded, the vocabulary is read-only: tokenize and check here, on
     * the caller's thread. During the load this is done at admission. */
    pthread_mutex_lock(&s->mu);
    const bool loaded = s->loaded;
    pthread_mutex_unlock(&s->mu);
    if (loaded) {
        if (r->text && (rc = tokenize_request(s, r, &lerr)) < 0)
            goto fail_free;
        if ((rc = validate_prompt(s, r, &lerr)) < 0)
            goto fail_free;
    }

    pthread_mutex_lock(&s->mu);
    if (s->file_bad) {
        rc = inferd_fail(&lerr, s->file_err.code, "%s", s->file_err.msg);
    } else if (s->state == INFERD_SCHED_DRAINING || s->state == INFERD_SCHED_STOPPED) {
        if (s->load_done && s->load_rc < 0)
            rc = inferd_fail(&lerr, INFERD_E_UNAVAILABLE, "model not loaded: %s", s->load_err.msg);
        else
            rc = inferd_fail(&lerr, INFERD_E_UNAVAILABLE, "the model is %s",
                             inferd_sched_state_name(s->state));
    } else if (s->n_queued >= s->o.n_queue_max) {
        rc = inferd_fail(&lerr, INFERD_E_OVERLOADED,
                         "the queue is full (%u requests waiting); retry later", s->n_queued);
    }
    if (rc < 0) {
        reject_locked(s, rc);
        pthread_mutex_unlock(&s->mu);
        goto fail_free_counted;
    }
    inferd_priority pr = r->priority;
    if (s->q_tail[pr])
        s->q_tail[pr]->qnext = r;
    else
        s->q_head[pr] = r;
    s->q_tail[pr] = r;
    r->queued = true;
    s->q_depth[pr]++;
    s->n_queued++;
    s->n_submitted++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out_request = r;
    return 0;

fail_free:
    reject(s, rc);
fail_free_counted:
    atomic_store(&r->refs, 1);
    request_free(r);
    if (err)
        *err = lerr;
    return rc;
fail_rejected:
    reject(s, rc);
    if (err)
        *err = lerr;
    return rc;
}

/* ---- the scheduler thread ---- */

/* Remove from the queue (s->mu held) the requests cancelled or past their
 * deadline, or all of them when @p all; fill their terminal events and
 * chain them through qnext into *io_list. */
static void sweep_queue_locked(inferd_sched *s, uint64_t now, bool all, int all_code,
                               const char *all_msg, inferd_request **io_list)
{
    for (int p = 0; p < INFERD_PRIORITY_COUNT; p++) {
        inferd_request **link = &s->q_head[p], *prev = NULL;
        while (*link) {
            inferd_request *r = *link;
            bool cancelled = atomic_load(&r->cancel);
            bool expired = r->deadline_ns && now >= r->deadline_ns;
            if (!all && !cancelled && !expired) {
                prev = r;
                link = &r->qnext;
                continue;
            }
            *link = r->qnext;
            if (s->q_tail[p] == r)
                s->q_tail[p] = prev;
            r->queued = false;
            s->q_depth[p]--;
            s->n_queued--;
            if (all)
                term_error(r, all_code, "%s", all_msg);
            else if (cancelled)
                term_error(r, INFERD_E_CANCELLED, "cancelled while queued");
            else
                term_error(r, INFERD_E_TIMEOUT, "deadline of %lld ms passed while queued",
                           (long long)r->timeout_ms);
            r->term.total_ms = ms_between(r->t_submit_ns, now);
            r->term.queue_ms = r->term.total_ms;
            r->qnext = *io_list;
            *io_list = r;
        }
    }
}

/* Take @p r out of the queue if it is there, ending it as cancelled (the
 * caller delivers the end); wake the thread either way. Caller holds r->mu. */
static bool sched_cancel_queued(inferd_sched *s, inferd_request *r)
{
    bool unqueued = false;
    pthread_mutex_lock(&s->mu);
    if (r->queued) {
        const int p = (int)r->priority;
        inferd_request **link = &s->q_head[p], *prev = NULL;
        while (*link != r) {
            prev = *link;
            link = &(*link)->qnext;
        }
        *link = r->qnext;
        if (s->q_tail[p] == r)
            s->q_tail[p] = prev;
        r->qnext = NULL;
        r->queued = false;
        s->q_depth[p]--;
        s->n_queued--;
        term_error(r, INFERD_E_CANCELLED, "cancelled while queued");
        r->term.total_ms = ms_between(r->t_submit_ns, inferd_now_ns());
        r->term.queue_ms = r->term.total_ms;
        count_end_locked(s, r);
        unqueued = true;
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return unqueued;
}

static inferd_request *pop_queue_locked(inferd_sched *s)
{
    for (int p = 0; p < INFERD_PRIORITY_COUNT; p++) {
        inferd_request *r = s->q_head[p];
        if (!r)
            continue;
        s->q_head[p] = r->qnext;
        if (!s->q_head[p])
            s->q_tail[p] = NULL;
        r->qnext = NULL;
        r->queued = false;
        s->q_depth[p]--;
        s->n_queued--;
        return r;
    }
    return NULL;
}

/* Release slot @p sl (its request was ended or is being ended). */
static void slot_clear(inferd_sched *s, slot *sl)
{
    inferd_sampler_destroy(sl->smp);
    sl->smp = NULL;
    sl->r = NULL;
    inferd_model_seq_reset(s->model, (int32_t)(sl - s->slots));
    pthread_mutex_lock(&s->mu);
    s->slots_busy--;
    pthread_mutex_unlock(&s->mu);
}

/* End the request of slot @p sl with an error and free the slot. */
static void slot_fail(inferd_sched *s, slot *sl, int code, const char *msg)
{
    inferd_request *r = sl->r;
    uint64_t now = inferd_now_ns();
    term_error(r, code, "%s", msg);
    r->term.n_prompt = (uint32_t)r->n_prompt;
    r->term.n_gen = sl->n_gen;
    r->term.seed = sl->smp ? inferd_sampler_seed(sl->smp) : 0;
    r->term.queue_ms = ms_between(r->t_submit_ns, sl->t_admit_ns);
    r->term.total_ms = ms_between(r->t_submit_ns, now);
    slot_clear(s, sl);
    finish_request(s, r);
}

/* Append text to the terminal event's text (bounded by TERM_TEXT_CAP). */
static void term_append(inferd_request *r, const char *p, size_t n)
{
    size_t have = r->term.text_len;
    if (n > TERM_TEXT_CAP - 1 - have)
        n = TERM_TEXT_CAP - 1 - have; /* cannot happen: see TERM_TEXT_CAP */
    memcpy(r->term_text + have, p, n);
    r->term_text[have + n] = '\0';
    r->term.text_len = have + n;
}

/* End the request of slot @p sl with DONE. */
static void slot_done(inferd_sched *s, slot *sl)
{
    inferd_request *r = sl->r;
    uint64_t now = inferd_now_ns();
    memset(&r->term, 0, sizeof(r->term));
    r->term.type = INFERD_EVENT_DONE;
    r->term.text = r->term_text;
    r->term_text[0] = '\0';
    /* The detokenizer's held bytes, then the stopper's, as inferd_generate. */
    if (!sl->stopped) {
        size_t n = inferd_detok_flush(&sl->detok, s->piece, s->piece_cap);
        if (n != INFERD_DETOK_ERROR && n > 0) {
            if (r->stopper) {
                bool stopped = false;
                size_t m = inferd_stopper_push(r->stopper, s->piece, n, s->stop_buf,
                                               s->piece_cap + INFERD_STOP_LEN_MAX, &stopped);
                term_append(r, s->stop_buf, m);
                if (stopped) {
                    sl->stopped = true;
                    sl->finish = INFERD_FINISH_STOP;
                }
            } else {
                term_append(r, s->piece, n);
            }
        }
        if (!sl->stopped && r->stopper) {
            size_t m =
                inferd_stopper_flush(r->stopper, s->stop_buf, s->piece_cap + INFERD_STOP_LEN_MAX);
            term_append(r, s->stop_buf, m);
        }
    }
    r->term.finish = sl->finish;
    r->term.n_prompt = (uint32_t)r->n_prompt;
    r->term.n_gen = sl->n_gen;
    r->term.seed = sl->smp ? inferd_sampler_seed(sl->smp) : r->sampling.seed;
    r->term.queue_ms = ms_between(r->t_submit_ns, sl->t_admit_ns);
    r->term.ttft_ms = sl->n_gen ? ms_between(r->t_submit_ns, sl->t_first_ns) : 0.0;
    r->term.gen_ms = sl->n_gen ? ms_between(sl->t_first_ns, sl->t_last_ns) : 0.0;
    r->term.total_ms = ms_between(r->t_submit_ns, now);
    slot_clear(s, sl);
    finish_request(s, r);
}

/* Make room for what @p r keeps: its rows, and the step's buffers. */
static int keep_admit(inferd_sched *s, inferd_request *r, inferd_error *err)
{
    r->s_n_vocab = s->n_vocab;
    r->s_n_embd = s->n_embd;
    r->n_kept_logits = keep_rows(r->keep_logits, r->n_prompt);
    r->n_kept_hidden = keep_rows(r->keep_hidden, r->n_prompt);
    const uint32_t nb = inferd_model_n_batch_max(s->model);
    if (r->n_kept_logits)
        r->kept_logits = inferd_malloc((size_t)r->n_kept_logits * s->n_vocab * sizeof(float));
    if (r->n_kept_hidden)
        r->kept_hidden = inferd_malloc((size_t)r->n_kept_hidden * s->n_embd * sizeof(float));
    if ((r->n_kept_logits && !r->kept_logits) || (r->n_kept_hidden && !r->kept_hidden))
        return inferd_fail(err, INFERD_E_NOMEM, "no memory to keep the outputs of %zu positions",
                           r->n_prompt);
    /* Every position of a prompt chunk may want its row this step. */
    if ((r->keep_logits == INFERD_POSITIONS_ALL || r->keep_hidden == INFERD_POSITIONS_ALL) &&
        s->rows_cap < nb) {
        float *l = inferd_realloc(s->logits, (size_t)nb * s->n_vocab * sizeof(float));
        if (!l)
            return inferd_fail(err, INFERD_E_NOMEM, "no memory for the logits of %u positions", nb);
        s->logits = l;
        s->rows_cap = nb;
    }
    if (r->keep_hidden && !s->hidden) {
        s->hidden = inferd_malloc((size_t)nb * s->n_embd * sizeof(float));
        if (!s->hidden)
            return inferd_fail(err, INFERD_E_NOMEM, "no memory for the hidden states of %u rows",
                               nb);
    }
    return 0;
}

/* Keep slot @p sl's rows of this step (logits at s->logits, hidden states
 * at s->hidden) that its request asked for. */
static void keep_rows_of_step(inferd_sched *s, slot *sl)
{
    inferd_request *r = sl->r;
    const size_t lb = (size_t)s->n_vocab * sizeof(float), hb = (size_t)s->n_embd * sizeof(float);
    for (int j = 0; j < sl->n_rows; j++) {
        const size_t p = sl->pos0 + (size_t)j, last = r->n_prompt - 1;
        const size_t row = (size_t)(sl->rows0 + j);
        if (r->keep_logits == INFERD_POSITIONS_ALL || (r->keep_logits && p == last))
            memcpy((char *)r->kept_logits + (r->keep_logits == INFERD_POSITIONS_ALL ? p : 0) * lb,
                   (const char *)s->logits + row * lb, lb);
        if (r->keep_hidden == INFERD_POSITIONS_ALL || (r->keep_hidden && p == last))
            memcpy((char *)r->kept_hidden + (r->keep_hidden == INFERD_POSITIONS_ALL ? p : 0) * hb,
                   (const char *)s->hidden + row * hb, hb);
    }
}

/* Admit @p r into free slot @p sl: tokenize if needed, check the prompt,
 * make its sampler. On error the request is ended and the slot stays free.
 * Called with the slot already counted busy. */
static void slot_admit(inferd_sched *s, slot *sl, inferd_request *r)
{
    inferd_error e = {0};
    int rc = 0;

    memset(sl, 0, sizeof(*sl));
    sl->r = r;
    sl->t_admit_ns = inferd_now_ns();
    sl->admit_seq = s->admit_counter++;
    sl->logits_row = -1;
    if (r->text)
        rc = tokenize_request(s, r, &e);
    if (rc == 0)
        rc = validate_prompt(s, r, &e);
    if (rc == 0) {
        sl->max_new = s->n_ctx - r->n_prompt;
        if (r->max_tokens >= 0 && (size_t)r->max_tokens < sl->max_new)
            sl->max_new = (size_t)r->max_tokens;
        r->out_text_cap = sl->max_new * (inferd_vocab_max_piece_len(s->vocab) + 8) + 1;
        r->out_ids = inferd_malloc((sl->max_new + 1) * sizeof(int32_t));
        r->out_off = inferd_calloc(sl->max_new + 1, sizeof(size_t));
        r->out_text = inferd_malloc(r->out_text_cap);
        if (r->logprobs) {
            const size_t n_top = (sl->max_new + 1) * r->n_top;
            r->out_lp = inferd_malloc((sl->max_new + 1) * sizeof(float));
            r->out_top_ids = n_top ? inferd_malloc(n_top * sizeof(int32_t)) : NULL;
            r->out_top_lp = n_top ? inferd_malloc(n_top * sizeof(float)) : NULL;
            if (!r->out_lp || (n_top && (!r->out_top_ids || !r->out_top_lp)))
                rc = inferd_fail(&e, INFERD_E_NOMEM, "no memory for the logprobs of %zu tokens",
                                 sl->max_new);
        }
        if (rc == 0 && (!r->out_ids || !r->out_off || !r->out_text))
            rc = inferd_fail(&e, INFERD_E_NOMEM, "no memory for the output of %zu tokens",
                             sl->max_new);
        if (rc == 0)
            rc = keep_admit(s, r, &e);
    }
    if (rc == 0) {
        inferd_sampler_params sp = r->sampling;
        if (sp.repeat_last_n == -1)
            sp.n_ctx = (int32_t)s->n_ctx;
        rc = inferd_sampler_create(&sp, (int32_t)s->n_vocab, &sl->smp, &e);
    }
    if (rc < 0) {
        slot_fail(s, sl,
                  rc == INFERD_E_NOMEM || rc == INFERD_E_CONTEXT_LENGTH ? rc : INFERD_E_INVALID,
                  e.msg);
        /* Admission checks are about the prompt. */
        if (strcmp(e.param, "prompt") == 0 || rc == INFERD_E_CONTEXT_LENGTH)
            r->term.param = "prompt";
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->tokens_in += r->n_prompt;
    pthread_mutex_unlock(&s->mu);
    /* Penalties look back over the prompt too (as inferd_generate). */
    for (size_t i = 0; i < r->n_prompt; i++)
        inferd_sampler_accept(sl->smp, r->prompt[i]);
    inferd_detok_init(&sl->detok, s->vocab);
    sl->finish = INFERD_FINISH_LENGTH;
    inferd_model_seq_reset(s->model, (int32_t)(sl - s->slots));
    if (sl->max_new == 0 && !r->keep_logits && !r->keep_hidden)
        slot_done(s, sl);
}

/* Sample the next token of slot @p sl from its logits row and emit it.
 * Ends the request when it is finished. */
static void slot_sample(inferd_sched *s, slot *sl, const float *row, uint64_t now)
{
    inferd_request *r = sl->r;
    int32_t tok = inferd_sampler_sample(sl->smp, row);
    if (!r->ignore_eos && inferd_vocab_is_eog(s->vocab, tok)) {
        sl->finish = INFERD_FINISH_EOG;
        slot_done(s, sl);
        return;
    }
    inferd_sampler_accept(sl->smp, tok);
    if (sl->n_gen == 0)
        sl->t_first_ns = now;
    sl->t_last_ns = now;
    const uint32_t index = sl->n_gen++;
    pthread_mutex_lock(&s->mu);
    s->tokens_out++;
    pthread_mutex_unlock(&s->mu);

    size_t n = inferd_detok_push(&sl->detok, tok, s->piece, s->piece_cap);
    if (n == INFERD_DETOK_ERROR) {
        char msg[96];
        snprintf(msg, sizeof(msg), "cannot detokenize id %d", (int)tok);
        slot_fail(s, sl, INFERD_E_INTERNAL, msg);
        return;
    }
    const char *text = s->piece;
    if (r->stopper) {
        bool stopped = false;
        n = inferd_stopper_push(r->stopper, s->piece, n, s->stop_buf,
                                s->piece_cap + INFERD_STOP_LEN_MAX, &stopped);
        text = s->stop_buf;
        if (stopped) {
            sl->stopped = true;
            sl->finish = INFERD_FINISH_STOP;
        }
    }
    /* The log was sized for max_new tokens of max_piece_len + 8 bytes, and
     * the stopper never writes more than it was given. */
    const size_t off = r->out_off[index];
    if (n > r->out_text_cap - 1 - off) {
        slot_fail(s, sl, INFERD_E_INTERNAL, "token text exceeds its bound");
        return;
    }
    memcpy(r->out_text + off, text, n);
    r->out_text[off + n] = '\0';
    if (r->out_lp) {
        r->out_lp[index] = inferd_logprob_of(row, (int32_t)s->n_vocab, tok);
        if (r->n_top)
            inferd_logprobs_topn(row, (int32_t)s->n_vocab, (int)r->n_top,
                                 r->out_top_ids + (size_t)index * r->n_top,
                                 r->out_top_lp + (size_t)index * r->n_top);
    }
    r->out_ids[index] = tok;
    r->out_off[index + 1] = off + n;
    publish_tokens(r, index + 1);
    if (sl->stopped || sl->n_gen >= sl->max_new) {
        slot_done(s, sl);
        return;
    }
    if (r->on_event)
        r->on_event(r->on_event_ctx);
    sl->next_tok = tok;
}

/* End every running request with @p code / @p msg. */
static void fail_running(inferd_sched *s, int code, const char *msg)
{
    for (uint32_t i = 0; i < s->o.n_slots; i++)
        if (s->slots[i].r)
            slot_fail(s, &s->slots[i], code, msg);
}

static void end_list(inferd_sched *s, inferd_request *list)
{
    while (list) {
        inferd_request *next = list->qnext;
        list->qnext = NULL;
        finish_request(s, list);
        list = next;
    }
}

/* After a forward pass: if the model's file changed under it, the step's
 * results came from weights that cannot be trusted. Then nothing of the
 * step is emitted: every running and queued request ends with the file's
 * error, later submissions are refused with it (until the model is
 * reloaded, by whoever owns this scheduler), and one line is logged.
 * @return true when the file changed. Scheduler thread. */
static bool file_changed(inferd_sched *s)
{
    inferd_error fe = {0};
    if (inferd_model_check_file(s->model, &fe) == 0)
        return false;
    inferd_request *list = NULL;
    pthread_mutex_lock(&s->mu);
    const bool first = !s->file_bad;
    s->file_bad = true;
    s->file_err = fe;
    sweep_queue_locked(s, inferd_now_ns(), true, fe.code, fe.msg, &list);
    pthread_mutex_unlock(&s->mu);
    if (first)
        inferd_log_error("sched", "%s: failing the model's requests", fe.msg);
    fail_running(s, fe.code, fe.msg);
    end_list(s, list);
    return true;
}

static void set_state_locked(inferd_sched *s, inferd_sched_state st)
{
    s->state = st;
    pthread_cond_broadcast(&s->state_cv);
}

/* Allocate the thread's buffers once the model is known. */
static int alloc_buffers(inferd_sched *s, inferd_error *err)
{
    const size_t nb = inferd_model_n_batch_max(s->model);
    s->piece_cap = inferd_vocab_max_piece_len(s->vocab) + 16;
    s->slots = inferd_calloc(s->o.n_slots, sizeof(slot));
    s->b_tok = inferd_malloc(nb * sizeof(int32_t));
    s->b_pos = inferd_malloc(nb * sizeof(int32_t));
    s->b_seq = inferd_malloc(nb * sizeof(int32_t));
    s->b_logits = inferd_malloc(nb);
    s->b_prefill = inferd_malloc(nb);
    s->logits = inferd_malloc((size_t)s->o.n_slots * s->n_vocab * sizeof(float));
    s->rows_cap = s->o.n_slots;
    s->piece = inferd_malloc(s->piece_cap);
    s->stop_buf = inferd_malloc(s->piece_cap + INFERD_STOP_LEN_MAX);
    if (!s->slots || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_logits || !s->b_prefill ||
        !s->logits || !s->piece || !s->stop_buf)
        return inferd_fail(err, INFERD_E_NOMEM, "scheduler: no memory for its buffers");
    return 0;
}

static int load(inferd_sched *s, inferd_error *err)
{
    int n_threads = s->o.n_threads ? (int)s->o.n_threads : inferd_cpu_count();
    int rc = inferd_model_load(s->path, &s->mp, &s->model, err);
    if (rc < 0)
        return rc;
    s->vocab = inferd_model_get_vocab(s->model);
    s->n_vocab = inferd_model_get_hparams(s->model)->n_vocab;
    s->n_embd = inferd_model_get_hparams(s->model)->n_embd;
    s->n_ctx = inferd_model_n_ctx(s->model);
    const uint32_t n_ctx_train = inferd_model_get_hparams(s->model)->n_ctx_train;
    if (s->mp.n_ctx == 0 && s->n_ctx < n_ctx_train)
        inferd_log(INFERD_LOG_INFO, "sched",
                   "'%s': context capped at %u tokens per slot (trained on %u; set -c to use more)",
                   s->path, s->n_ctx, n_ctx_train);
    if ((rc = alloc_buffers(s, err)) < 0)
        return rc;
    return inferd_pool_create(n_threads, &s->pool, err);
}

/* One step's batch: a decode token from every generating slot, then
 * prompt chunks (oldest admission first) within n_prefill_chunk. Returns
 * the token count; sets each slot's logits_row. */
static int32_t build_batch(inferd_sched *s)
{
    int32_t n = 0, row = 0;
    s->step_hidden = false;
    for (uint32_t i = 0; i < s->o.n_slots; i++) {
        slot *sl = &s->slots[i];
        sl->logits_row = -1;
        sl->n_rows = 0;
        if (!sl->r || sl->n_fed < sl->r->n_prompt)
            continue;
        s->b_tok[n] = sl->next_tok;
        s->b_pos[n] = (int32_t)(sl->r->n_prompt + sl->n_gen - 1);
        s->b_seq[n] = (int32_t)i;
        s->b_logits[n] = 1;
        s->b_prefill[n] = 0;
        sl->logits_row = row++;
        n++;
    }
    uint32_t budget = s->o.n_prefill_chunk;
    while (budget > 0) {
        slot *best = NULL;
        for (uint32_t i = 0; i < s->o.n_slots; i++) {
            slot *sl = &s->slots[i];
            if (sl->r && sl->n_fed < sl->r->n_prompt && sl->logits_row == -1 &&
                (!best || sl->admit_seq < best->admit_seq))
                best = sl;
        }
        if (!best)
            break;
        inferd_request *r = best->r;
        size_t take = r->n_prompt - best->n_fed;
        if (take > budget)
            take = budget;
        /* Every position's row when the request keeps them all. */
        const bool every =
            r->keep_logits == INFERD_POSITIONS_ALL || r->keep_hidden == INFERD_POSITIONS_ALL;
        best->rows0 = row;
        best->pos0 = best->n_fed;
        for (size_t j = 0; j < take; j++) {
            s->b_tok[n] = r->prompt[best->n_fed + j];
            s->b_pos[n] = (int32_t)(best->n_fed + j);
            s->b_seq[n] = (int32_t)(best - s->slots);
            s->b_logits[n] = every;
            s->b_prefill[n] = 1;
            n++;
        }
        if (every)
            row += (int)take;
        best->n_rows = every ? (int)take : 0;
        best->n_fed += take;
        budget -= (uint32_t)take;
        s->step_hidden |=
            r->keep_hidden != INFERD_POSITIONS_NONE && (every || best->n_fed == r->n_prompt);
        if (best->n_fed == r->n_prompt) {
            if (!every) {
                s->b_logits[n - 1] = 1;
                best->rows0 = row++;
                best->pos0 = r->n_prompt - 1;
                best->n_rows = 1;
            }
            best->logits_row = row - 1;
        } else {
            best->logits_row = -2; /* fed this step, no logits yet */
        }
    }
    return n;
}

static void *sched_main(void *arg)
{
    inferd_sched *s = arg;
    inferd_error e = {0};
    inferd_request *list = NULL;

    pthread_mutex_lock(&s->mu);
    if (s->state == INFERD_SCHED_IDLE)
        set_state_locked(s, INFERD_SCHED_LOADING);
    pthread_mutex_unlock(&s->mu);

    int rc = load(s, &e);
    pthread_mutex_lock(&s->mu);
    s->load_done = true;
    s->load_rc = rc;
    if (rc < 0) {
        s->load_err = e;
        sweep_queue_locked(s, inferd_now_ns(), true, INFERD_E_UNAVAILABLE, "", &list);
        for (inferd_request *r = list; r; r = r->qnext)
            term_error(r, rc, "model not loaded: %s", e.msg);
        set_state_locked(s, INFERD_SCHED_STOPPED);
        pthread_mutex_unlock(&s->mu);
        inferd_log(INFERD_LOG_ERROR, "sched", "load of '%s' failed: %s", s->path, e.msg);
        end_list(s, list);
        return NULL;
    }
    s->loaded = true;
    if (s->state == INFERD_SCHED_LOADING)
        set_state_locked(s, INFERD_SCHED_READY);
    pthread_mutex_unlock(&s->mu);

    for (;;) {
        uint64_t now = inferd_now_ns();
        bool grace_over = false;

        /* Admission, under the lock. */
        pthread_mutex_lock(&s->mu);
        for (;;) {
            now = inferd_now_ns();
            grace_over =
                s->state == INFERD_SCHED_DRAINING && s->drain_limited && now >= s->drain_end_ns;
            list = NULL;
            if (grace_over)
                sweep_queue_locked(s, now, true, INFERD_E_UNAVAILABLE,
                                   "draining: the grace period is over", &list);
            else
                sweep_queue_locked(s, now, false, 0, NULL, &list);
            if (list)
                break;
            if (s->state == INFERD_SCHED_DRAINING && s->n_queued == 0 && s->slots_busy == 0) {
                /* Nothing queued or running: drained. */
                set_state_locked(s, INFERD_SCHED_STOPPED);
                pthread_mutex_unlock(&s->mu);
                return NULL;
            }
            if (grace_over)
                break;
            if (s->slots_busy < s->o.n_slots && s->n_queued > 0)
                break;
            if (s->slots_busy > 0)
                break;
            /* Idle: sleep until a submission, a cancel, the nearest queued
             * deadline, or the end of the grace period. */
            uint64_t wake = 0;
            for (int p = 0; p < INFERD_PRIORITY_COUNT; p++)
                for (inferd_request *r = s->q_head[p]; r; r = r->qnext)
                    if (r->deadline_ns && (!wake || r->deadline_ns < wake))
                        wake = r->deadline_ns;
            if (s->state == INFERD_SCHED_DRAINING && s->drain_limited &&
                (!wake || s->drain_end_ns < wake))
                wake = s->drain_end_ns;
            inferd_cond_wait_until_ns(&s->cv, &s->mu, wake); /* wake 0: no limit */
        }
        /* Pop what fits; admission work (tokenize, sampler) runs unlocked. */
        inferd_request *admit[INFERD_SCHED_SLOTS_MAX];
        uint32_t n_admit = 0;
        if (!grace_over) {
            while (s->slots_busy + n_admit < s->o.n_slots) {
                inferd_request *r = pop_queue_locked(s);
                if (!r)
                    break;
                admit[n_admit++] = r;
            }
            s->slots_busy += n_admit;
        }
        pthread_mutex_unlock(&s->mu);

        end_list(s, list);
        if (grace_over) {
            fail_running(s, INFERD_E_UNAVAILABLE, "draining: the grace period is over");
            continue;
        }
        for (uint32_t i = 0, k = 0; i < n_admit; i++) {
            while (s->slots[k].r)
                k++;
            slot_admit(s, &s->slots[k], admit[i]);
        }

        /* Cancels and deadlines of running requests. */
        now = inferd_now_ns();
        for (uint32_t i = 0; i < s->o.n_slots; i++) {
            slot *sl = &s->slots[i];
            if (!sl->r)
                continue;
            if (atomic_load(&sl->r->cancel)) {
                slot_fail(s, sl, INFERD_E_CANCELLED, "cancelled");
            } else if (sl->r->deadline_ns && now >= sl->r->deadline_ns) {
                char msg[128];
                snprintf(msg, sizeof(msg), "deadline of %lld ms passed after %u tokens",
                         (long long)sl->r->timeout_ms, sl->n_gen);
                slot_fail(s, sl, INFERD_E_TIMEOUT, msg);
            }
        }

        int32_t n = build_batch(s);
        if (n == 0)
            continue;
        inferd_batch b = {.n_tokens = n,
                          .tokens = s->b_tok,
                          .pos = s->b_pos,
                          .seq = s->b_seq,
                          .logits = s->b_logits,
                          .prefill = s->b_prefill,
                          .out_hidden = s->step_hidden ? s->hidden : NULL};
        rc = inferd_model_forward(s->model, s->pool, &b, s->logits, &e);
        pthread_mutex_lock(&s->mu);
        s->n_steps++;
        pthread_mutex_unlock(&s->mu);
        /* Checked after the pass and before sampling: a change that reached
         * the weights this pass read is visible by now (size or mtime, or a
         * faulted read), so no token computed from it is emitted. */
        if (file_changed(s))
            continue;
        if (rc < 0) {
            inferd_log(INFERD_LOG_ERROR, "sched", "forward failed: %s", e.msg);
            for (uint32_t i = 0; i < s->o.n_slots; i++)
                if (s->slots[i].r && s->slots[i].logits_row != -1)
                    slot_fail(s, &s->slots[i], INFERD_E_INTERNAL, e.msg);
            continue;
        }
        now = inferd_now_ns();
        for (uint32_t i = 0; i < s->o.n_slots; i++) {
            slot *sl = &s->slots[i];
            if (!sl->r)
                continue;
            if (sl->n_rows > 0)
                keep_rows_of_step(s, sl);
            if (sl->logits_row >= 0 && sl->max_new == 0) /* it kept, it generates nothing */
                slot_done(s, sl);
            else if (sl->logits_row >= 0)
                slot_sample(s, sl, s->logits + (size_t)sl->logits_row * s->n_vocab, now);
        }
    }
}

/* ---- create, drain, destroy ---- */

static int check_opts(const inferd_sched_opts *o, inferd_error *err)
{
    if (o->n_slots < 1 || o->n_slots > INFERD_SCHED_SLOTS_MAX)
        return inferd_fail(err, INFERD_E_RANGE, "scheduler: n_slots must be in [1, %d] (got %u)",
                           INFERD_SCHED_SLOTS_MAX, o->n_slots);
    if (o->n_queue_max < 1 || o->n_queue_max > INFERD_SCHED_QUEUE_MAX)
        return inferd_fail(err, INFERD_E_RANGE,
                           "scheduler: n_queue_max must be in [1, %d] (got %u)",
                           INFERD_SCHED_QUEUE_MAX, o->n_queue_max);
    if (o->n_prefill_chunk < 1 || o->n_prefill_chunk > 65536)
        return inferd_fail(err, INFERD_E_RANGE,
                           "scheduler: n_prefill_chunk must be in [1, 65536] (got %u)",
                           o->n_prefill_chunk);
    if (o->n_threads > 256)
        return inferd_fail(err, INFERD_E_RANGE, "scheduler: n_threads must be in [0, 256] (got %u)",
                           o->n_threads);
    return 0;
}

int inferd_sched_create(const char *path, const inferd_sched_opts *opts, inferd_sched **out_sched,
                        inferd_error *err)
{
    const inferd_sched_opts o = opts ? *opts : inferd_sched_opts_default();
    int rc;

    if (!path || !path[0] || !out_sched)
        return inferd_fail(err, INFERD_E_INVALID, "scheduler: a model path is required");
    if ((rc = check_opts(&o, err)) < 0)
        return rc;
    inferd_sched *s = inferd_calloc(1, sizeof(*s));
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "scheduler: no memory");
    s->path = inferd_malloc(strlen(path) + 1);
    if (!s->path) {
        inferd_free(s);
        return inferd_fail(err, INFERD_E_NOMEM, "scheduler: no memory");
    }
    strcpy(s->path, path);
    s->o = o;
    s->mp = inferd_sched_model_params(&o);
    s->state = INFERD_SCHED_IDLE;
    pthread_mutex_init(&s->mu, NULL);
    inferd_cond_init_monotonic(&s->cv);
    inferd_cond_init_monotonic(&s->state_cv);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        pthread_cond_destroy(&s->state_cv);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        inferd_free(s->path);
        inferd_free(s);
        return inferd_fail(err, INFERD_E_INTERNAL, "scheduler: cannot start its thread");
    }
    *out_sched = s;
    return 0;
}

int inferd_sched_wait_ready(inferd_sched *s, int64_t timeout_ms, inferd_error *err)
{
    /* timeout_ms 0 means "do not wait": a deadline of now; < 0: none. */
    const uint64_t until = inferd_deadline_in_ms(timeout_ms).at_ns;
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->load_done)
        if (inferd_cond_wait_until_ns(&s->state_cv, &s->mu, until) != 0)
            break;
    if (!s->load_done)
        rc = inferd_fail(err, INFERD_E_TIMEOUT, "scheduler: still loading after %lld ms",
                         (long long)timeout_ms);
    else if (s->load_rc < 0) {
        rc = s->load_rc;
        if (err)
            *err = s->load_err;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void inferd_sched_drain(inferd_sched *s, int64_t grace_ms)
{
    pthread_mutex_lock(&s->mu);
    if (s->state != INFERD_SCHED_DRAINING && s->state != INFERD_SCHED_STOPPED) {
        s->drain_limited = grace_ms >= 0;
        s->drain_end_ns = inferd_now_ns() + (grace_ms > 0 ? (uint64_t)grace_ms * 1000000u : 0);
        set_state_locked(s, INFERD_SCHED_DRAINING);
        pthread_cond_signal(&s->cv);
    }
    while (s->state != INFERD_SCHED_STOPPED)
        pthread_cond_wait(&s->state_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void inferd_sched_destroy(inferd_sched *s)
{
    if (!s)
        return;
    inferd_sched_drain(s, 0);
    pthread_join(s->thread, NULL);
    inferd_pool_destroy(s->pool);
    if (s->slots)
        for (uint32_t i = 0; i < s->o.n_slots; i++)
            inferd_sampler_destroy(s->slots[i].smp);
    inferd_free(s->slots);
    inferd_free(s->b_tok);
    inferd_free(s->b_pos);
    inferd_free(s->b_seq);
    inferd_free(s->b_logits);
    inferd_free(s->b_prefill);
    inferd_free(s->logits);
    inferd_free(s->hidden);
    inferd_free(s->piece);
    inferd_free(s->stop_buf);
    inferd_model_destroy(s->model);
    pthread_cond_destroy(&s->state_cv);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    inferd_free(s->path);
    inferd_free(s);
}

inferd_sched_state inferd_sched_get_state(const inferd_sched *s)
{
    inferd_sched *m = (inferd_sched *)s;
    pthread_mutex_lock(&m->mu);
    inferd_sched_state st = m->state;
    pthread_mutex_unlock(&m->mu);
    return st;
}

inferd_model *inferd_sched_model(const inferd_sched *s)
{
    inferd_sched *m = (inferd_sched *)s;
    pthread_mutex_lock(&m->mu);
    inferd_model *model = m->loaded ? m->model : NULL;
    pthread_mutex_unlock(&m->mu);
    return model;
}

void inferd_sched_get_stats(inferd_sched *s, inferd_sched_stats *out)
{
    double tmp[INFERD_SCHED_WINDOW];
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->mu);
    out->state = s->state;
    out->n_slots = s->o.n_slots;
    out->slots_busy = s->slots_busy;
    memcpy(out->queue_depth, s->q_depth, sizeof(out->queue_depth));
    out->n_queue_max = s->o.n_queue_max;
    out->n_submitted = s->n_submitted;
    out->n_done = s->n_done;
    out->n_cancelled = s->n_cancelled;
    out->n_timeout = s->n_timeout;
    out->n_failed = s->n_failed;
    out->n_rejected_overloaded = s->n_rej_overloaded;
    out->n_rejected_invalid = s->n_rej_invalid;
    out->n_rejected_unavailable = s->n_rej_unavailable;
    out->tokens_in = s->tokens_in;
    out->tokens_out = s->tokens_out;
    out->n_steps = s->n_steps;
    out->latency = window_percentiles(&s->w_latency, tmp);
    out->ttft = window_percentiles(&s->w_ttft, tmp);
    out->itl = window_percentiles(&s->w_itl, tmp);
    out->latency_hist = s->h_latency;
    out->ttft_hist = s->h_ttft;
    pthread_mutex_unlock(&s->mu);
}
