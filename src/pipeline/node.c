/* Built-in nodes (`inferd pipeline-node`): the node side of the control
 * protocol and the kinds identity, tokenize, detokenize and llm. One input
 * channel, processed sample by sample; an END sample is passed on to every
 * output. A "stop" from the manager (or its socket closing) shuts the
 * input down, which ends the loop. */
#include <errno.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "inferd/alloc.h"
#include "inferd/model.h"
#include "inferd/pipeline.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"
#include "inferd/tensor.h"
#include "inferd/tokenizer.h"
#include "sample.h"

#define OUT_MAX 16

typedef struct node {
    int ctl;
    const char *name, *kind;
    json_t *opts;
    inferd_channel *in;
    inferd_channel *out[OUT_MAX];
    size_t n_out;
    inferd_registry *reg;
    inferd_registry_handle *h;
    const inferd_vocab *vocab;
    char *buf; /* a scratch for outputs */
    size_t buf_cap;
} node;

static void progress(node *n, double f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void progress(node *n, double f, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *m = json_pack("{ss sf ss}", "type", "progress", "fraction", f, "message", msg);
    if (m)
        inferd__ctl_send(n->ctl, m, NULL, 0, NULL);
    json_decref(m);
}

/* Report @p e to the manager and on stderr; the node then exits 1. */
static int fail(node *n, const inferd_error *e)
{
    fprintf(stderr, "node '%s' (%s): %s\n", n->name ? n->name : "?", n->kind ? n->kind : "?",
            e->msg);
    json_t *m = json_pack("{ss ss}", "type", "error", "message", e->msg);
    if (m)
        inferd__ctl_send(n->ctl, m, NULL, 0, NULL);
    json_decref(m);
    return 1;
}

/* Publish a sample to output @p o (waiting for room as long as it takes). */
static int emit(node *n, size_t o, uint64_t session, inferd_sample_header h, const void *data,
                uint64_t bytes, inferd_error *err)
{
    return inferd__sample_send(n->out[o], h, session, data, bytes, -1, err);
}

static int emit_text(node *n, uint64_t session, const char *t, size_t len, inferd_error *err)
{
    return emit(n, 0, session, inferd__sample_text_header(len), t, len, err);
}

static int scratch(node *n, size_t bytes, inferd_error *err)
{
    if (bytes <= n->buf_cap)
        return 0;
    char *b = inferd_realloc(n->buf, bytes);
    if (!b)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for %zu bytes", bytes);
    n->buf = b;
    n->buf_cap = bytes;
    return 0;
}

/* ---- kinds ---- */

static int do_tokenize(node *n, const inferd_sample_header *h, const char *p, inferd_error *err)
{
    if (!(h->flags & INFERD_SAMPLE_TEXT))
        return inferd_fail(err, INFERD_E_INVALID, "tokenize takes text samples");
    const bool add = !json_is_false(json_object_get(n->opts, "add_special"));
    const bool parse = json_is_true(json_object_get(n->opts, "parse_special"));
    size_t cap = h->bytes + 8, k = 0;
    if (scratch(n, cap * sizeof(int32_t), err) < 0)
        return INFERD_E_NOMEM;
    int rc = inferd_tokenize(n->vocab, p, h->bytes, add, parse, (int32_t *)n->buf, cap, &k, err);
    if (rc < 0)
        return rc;
    inferd_sample_header o = {.elem = INFERD_ELEM_I32, .ndim = 1, .shape = {(int64_t)k}};
    return emit(n, 0, h->session, o, n->buf, k * sizeof(int32_t), err);
}

/* Token ids of an I32 or I64 sample into *ids (n->buf, or a fresh array
 * for I64 ones the caller frees). */
static int read_ids(node *n, const inferd_sample_header *h, const char *p, const int32_t **ids,
                    size_t *k, int32_t **owned, inferd_error *err)
{
    *owned = NULL;
    if ((h->elem != INFERD_ELEM_I32 && h->elem != INFERD_ELEM_I64) || h->ndim != 1)
        return inferd_fail(err, INFERD_E_INVALID,
                           "expected token ids (INT32 or INT64, one dimension)");
    *k = (size_t)h->shape[0];
    const int32_t nv = inferd_vocab_n_tokens(n->vocab);
    int32_t *v = inferd_malloc((*k ? *k : 1) * sizeof(int32_t));
    if (!v)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory");
    for (size_t i = 0; i < *k; i++) {
        int64_t id;
        if (h->elem == INFERD_ELEM_I32) {
            int32_t x;
            memcpy(&x, p + 4 * i, 4);
            id = x;
        } else {
            memcpy(&id, p + 8 * i, 8);
        }
        if (id < 0 || id >= nv) {
            inferd_free(v);
            return inferd_fail(err, INFERD_E_INVALID, "token %zu has id %lld, outside [0, %d)", i,
                               (long long)id, nv);
        }
        v[i] = (int32_t)id;
    }
    *ids = v;
    *owned = v;
    return 0;
}

static int do_detokenize(node *n, const inferd_sample_header *h, const char *p, inferd_error *err)
{
    const int32_t *ids;
    int32_t *owned;
    size_t k;
    int rc = read_ids(n, h, p, &ids, &k, &owned, err);
    if (rc < 0)
        return rc;
    const size_t piece = inferd_vocab_max_piece_len(n->vocab) + 16;
    if ((rc = scratch(n, (k + 1) * piece, err)) < 0) {
        inferd_free(owned);
        return rc;
    }
    inferd_detok d;
    inferd_detok_init(&d, n->vocab);
    size_t len = 0;
    for (size_t i = 0; i <= k; i++) {
        size_t w = i < k ? inferd_detok_push(&d, ids[i], n->buf + len, piece)
                         : inferd_detok_flush(&d, n->buf + len, piece);
        if (w == INFERD_DETOK_ERROR) {
            inferd_free(owned);
            return inferd_fail(err, INFERD_E_INVALID, "cannot detokenize token %zu", i);
        }
        len += w;
    }
    inferd_free(owned);
    const char *t = n->buf;
    if (inferd_vocab_add_space_prefix(n->vocab) && len > 0 && t[0] == ' ') {
        t++; /* the space the tokenizer put before the text */
        len--;
    }
    return emit_text(n, h->session, t, len, err);
}

/* ---- llm: every session's prompt is its own request ----
 *
 * The main thread queues each sample of a session (a prompt, copied, or
 * its END) on the session's FIFO; one event thread submits the head of each
 * session's FIFO to the scheduler, so sessions are batched together while
 * a session's own prompts run in order, and emits their pieces as the
 * scheduler's events come (its notify wakes the thread). A session's END is
 * emitted once its prompts before it are done. */

typedef struct llm_item {
    struct llm_item *next;
    bool end;
    /* A prompt: its sample stays held in the input channel until it is
     * submitted (so a node with more prompts than it runs holds the input's
     * slots, and the publisher upstream waits: backpressure, no unbounded
     * queue here). The text points into the sample; ids are copied. */
    inferd_sample s;
    bool held;
    const char *text;
    size_t text_len;
    int32_t *ids;
    size_t n_ids;
} llm_item;

typedef struct llm_session {
    struct llm_session *next;
    uint64_t id;
    inferd_request *r; /* the running prompt, or NULL */
    llm_item *head, *tail;
} llm_session;

typedef struct llm_state {
    node *n;
    pthread_mutex_t mu; /* sessions */
    llm_session *sessions;
    pthread_mutex_t wmu; /* wake, done */
    pthread_cond_t wcv;
    bool wake, done;
    pthread_t th;
    bool started;
    int rc; /* the event thread's failure */
    inferd_error err;
} llm_state;

static void llm_wake(void *ctx)
{
    llm_state *ls = ctx;
    pthread_mutex_lock(&ls->wmu);
    ls->wake = true;
    pthread_cond_signal(&ls->wcv);
    pthread_mutex_unlock(&ls->wmu);
}

static void llm_item_free(llm_state *ls, llm_item *it)
{
    if (!it)
        return;
    if (it->held)
        inferd_channel_release(ls->n->in, &it->s);
    inferd_free(it->ids);
    inferd_free(it);
}

static int llm_submit(llm_state *ls, llm_session *s, const llm_item *it, inferd_error *err)
{
    node *n = ls->n;
    inferd_request_params rp = inferd_request_params_default();
    if (it->ids) {
        rp.tokens = it->ids;
        rp.n_tokens = it->n_ids;
    } else {
        rp.text = it->text;
        rp.text_len = it->text_len;
    }
    json_t *o = n->opts, *v;
    if ((v = json_object_get(o, "max_tokens")))
        rp.max_tokens = (int32_t)json_integer_value(v);
    if ((v = json_object_get(o, "temperature")))
        rp.sampling.temperature = (float)json_number_value(v);
    if ((v = json_object_get(o, "top_k")))
        rp.sampling.top_k = (int32_t)json_integer_value(v);
    if ((v = json_object_get(o, "top_p")))
        rp.sampling.top_p = (float)json_number_value(v);
    if ((v = json_object_get(o, "min_p")))
        rp.sampling.min_p = (float)json_number_value(v);
    if ((v = json_object_get(o, "repeat_penalty")))
        rp.sampling.repeat_penalty = (float)json_number_value(v);
    if ((v = json_object_get(o, "seed"))) {
        rp.sampling.has_seed = true;
        rp.sampling.seed = (uint64_t)json_integer_value(v);
    }
    rp.ignore_eos = json_is_true(json_object_get(o, "ignore_eos"));
    json_t *stop = json_object_get(o, "stop");
    if (json_is_string(stop)) {
        rp.stop[rp.n_stop++] = json_string_value(stop);
    } else if (json_is_array(stop)) {
        size_t i;
        json_array_foreach (stop, i, v)
            rp.stop[rp.n_stop++] = json_string_value(v);
    }
    rp.timeout_ms = -1;
    rp.on_event = llm_wake;
    rp.on_event_ctx = ls;
    return inferd_sched_submit(inferd_registry_handle_sched(n->h), &rp, &s->r, err);
}

/* One pass over the sessions: start what can start, emit what came, end
 * what ended. @return 0, or an error that ends the node. */
static int llm_pass(llm_state *ls, inferd_error *err)
{
    node *n = ls->n;
    pthread_mutex_lock(&ls->mu);
    llm_session **link = &ls->sessions;
    int rc = 0;
    bool full = false; /* the scheduler refused a request this pass */
    while (rc == 0 && *link) {
        llm_session *s = *link;
        bool progressed = true;
        while (rc == 0 && progressed) {
            progressed = false;
            if (!s->r && s->head) { /* the next prompt, or the END */
                llm_item *it = s->head;
                s->head = it->next;
                if (!s->head)
                    s->tail = NULL;
                if (it->end) {
                    pthread_mutex_unlock(&ls->mu);
                    const inferd_sample_header h = {.flags = INFERD_SAMPLE_END,
                                                    .elem = INFERD_ELEM_U8};
                    for (size_t o = 0; rc == 0 && o < n->n_out; o++)
                        rc = emit(n, o, s->id, h, NULL, 0, err);
                    pthread_mutex_lock(&ls->mu);
                } else if (full) {
                    s->head = it; /* the scheduler's queue is full: later */
                    if (!it->next)
                        s->tail = it;
                    break;
                } else {
                    rc = llm_submit(ls, s, it, err);
                    if (rc == INFERD_E_OVERLOADED) { /* retried when a request ends */
                        full = true;
                        rc = 0;
                        s->head = it;
                        if (!it->next)
                            s->tail = it;
                        break;
                    }
                }
                llm_item_free(ls, it);
                progressed = true;
                continue;
            }
            if (!s->r)
                break;
            inferd_event ev;
            const int got = inferd_request_next(s->r, &ev, 0);
            if (got == INFERD_E_TIMEOUT)
                break; /* nothing yet: the scheduler wakes us */
            if (got < 0) {
                rc = inferd_fail(err, got, "the request ended without its end");
                break;
            }
            if (ev.type == INFERD_EVENT_ERROR) {
                rc = inferd_fail(err, ev.code ? ev.code : INFERD_E_INTERNAL, "%s",
                                 ev.message ? ev.message : "the request failed");
                break;
            }
            if (ev.text_len) {
                pthread_mutex_unlock(&ls->mu); /* the text stays valid: only we call next */
                rc = emit_text(n, s->id, ev.text, ev.text_len, err);
                pthread_mutex_lock(&ls->mu);
            }
            if (ev.type == INFERD_EVENT_DONE) {
                inferd_request_release(s->r);
                s->r = NULL;
            }
            progressed = true;
        }
        if (!s->r && !s->head) { /* nothing left: forget the session */
            *link = s->next;
            inferd_free(s);
        } else {
            link = &s->next;
        }
    }
    pthread_mutex_unlock(&ls->mu);
    return rc;
}

static void *llm_events(void *arg)
{
    llm_state *ls = arg;
    for (;;) {
        pthread_mutex_lock(&ls->wmu);
        while (!ls->wake && !ls->done)
            pthread_cond_wait(&ls->wcv, &ls->wmu);
        const bool done = ls->done;
        ls->wake = false;
        pthread_mutex_unlock(&ls->wmu);
        if (done)
            break;
        inferd_error e = {0};
        const int rc = llm_pass(ls, &e);
        if (rc == INFERD_E_UNAVAILABLE)
            break; /* an output shut down: stopping */
        if (rc < 0) {
            ls->rc = rc;
            ls->err = e;
            inferd_channel_shutdown(ls->n->in); /* the main thread ends */
            break;
        }
    }
    /* Cancel and forget what is left. */
    pthread_mutex_lock(&ls->mu);
    while (ls->sessions) {
        llm_session *s = ls->sessions;
        ls->sessions = s->next;
        if (s->r) {
            inferd_request_cancel(s->r);
            inferd_request_release(s->r);
        }
        while (s->head) {
            llm_item *it = s->head;
            s->head = it->next;
            llm_item_free(ls, it);
        }
        inferd_free(s);
    }
    pthread_mutex_unlock(&ls->mu);
    return NULL;
}

/* Queue the llm node's received sample @p smp (a prompt, or an END):
 * the item takes it (released once submitted, or here on an error). */
static int llm_queue(llm_state *ls, inferd_sample *smp, inferd_error *err)
{
    const inferd_sample_header *h = smp->data;
    const char *p = (const char *)smp->data + sizeof(*h);
    llm_item *it = inferd_calloc(1, sizeof(*it));
    if (!it) {
        inferd_channel_release(ls->n->in, smp);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory");
    }
    it->s = *smp;
    it->held = true;
    if (h->flags & INFERD_SAMPLE_END) {
        it->end = true;
        inferd_channel_release(ls->n->in, &it->s); /* nothing to keep */
        it->held = false;
    } else if (h->flags & INFERD_SAMPLE_TEXT) {
        it->text = p;
        it->text_len = h->bytes;
    } else {
        const int32_t *ids;
        int rc = read_ids(ls->n, h, p, &ids, &it->n_ids, &it->ids, err);
        if (rc == 0 && it->n_ids == 0)
            rc = inferd_fail(err, INFERD_E_INVALID, "an empty prompt");
        if (rc < 0) {
            llm_item_free(ls, it);
            return rc;
        }
    }
    pthread_mutex_lock(&ls->mu);
    /* New sessions go last: the event thread unlinks a session through the
     * link it walked to, which must not change while it emits unlocked. */
    llm_session **link = &ls->sessions;
    while (*link && (*link)->id != h->session)
        link = &(*link)->next;
    llm_session *s = *link;
    if (!s) {
        s = inferd_calloc(1, sizeof(*s));
        if (!s) {
            pthread_mutex_unlock(&ls->mu);
            llm_item_free(ls, it);
            return inferd_fail(err, INFERD_E_NOMEM, "no memory");
        }
        s->id = h->session;
        *link = s;
    }
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    pthread_mutex_unlock(&ls->mu);
    llm_wake(ls);
    return 0;
}

static int llm_start(llm_state *ls, node *n, inferd_error *err)
{
    memset(ls, 0, sizeof(*ls));
    ls->n = n;
    pthread_mutex_init(&ls->mu, NULL);
    pthread_mutex_init(&ls->wmu, NULL);
    pthread_cond_init(&ls->wcv, NULL);
    if (pthread_create(&ls->th, NULL, llm_events, ls) != 0)
        return inferd_fail(err, INFERD_E_INTERNAL, "cannot start the llm node's event thread");
    ls->started = true;
    return 0;
}

/* Stop the event thread; @return its failure (0 if none) into @p err. */
static int llm_stop(llm_state *ls, inferd_error *err)
{
    if (!ls->started)
        return 0;
    pthread_mutex_lock(&ls->wmu);
    ls->done = true;
    pthread_cond_signal(&ls->wcv);
    pthread_mutex_unlock(&ls->wmu);
    pthread_join(ls->th, NULL);
    ls->started = false;
    pthread_mutex_destroy(&ls->mu);
    pthread_mutex_destroy(&ls->wmu);
    pthread_cond_destroy(&ls->wcv);
    if (ls->rc && err)
        *err = ls->err;
    return ls->rc;
}

static int process(node *n, const inferd_sample_header *h, const char *p, inferd_error *err)
{
    if (strcmp(n->kind, "identity") == 0) {
        for (size_t o = 0; o < n->n_out; o++) {
            int rc = emit(n, o, h->session, *h, p, h->bytes, err);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (strcmp(n->kind, "tokenize") == 0)
        return do_tokenize(n, h, p, err);
    return do_detokenize(n, h, p, err);
}

/* ---- the protocol ---- */

static void *watch_ctl(void *arg)
{
    node *n = arg;
    for (;;) {
        json_t *m = NULL;
        int rc = inferd__ctl_recv(n->ctl, &m, NULL, NULL, NULL);
        const bool stop =
            rc == INFERD_E_UNAVAILABLE || rc == INFERD_E_IO ||
            (rc == 0 && strcmp(json_string_value(json_object_get(m, "type")), "stop") == 0);
        json_decref(m);
        if (stop) {
            inferd_channel_shutdown(n->in);
            return NULL;
        }
    }
}

static int init_model(node *n, inferd_error *err)
{
    const char *path = json_string_value(json_object_get(n->opts, "model"));
    progress(n, 0, "loading %s", path);
    inferd_registry_opts ro = inferd_registry_opts_default();
    int rc = inferd_registry_create(&ro, &n->reg, err);
    if (rc < 0)
        return rc;
    inferd_registry_model_opts mo = inferd_registry_model_opts_default();
    mo.path = path;
    json_t *v;
    if ((v = json_object_get(n->opts, "threads")))
        mo.sched.n_threads = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(n->opts, "slots")))
        mo.sched.n_slots = (uint32_t)json_integer_value(v);
    if ((v = json_object_get(n->opts, "n_ctx")))
        mo.sched.model.n_ctx = (uint32_t)json_integer_value(v);
    if (strcmp(n->kind, "llm") != 0)
        mo.sched.n_slots = 1;
    if ((rc = inferd_registry_get_or_load(n->reg, path, &mo, &n->h, err)) < 0)
        return rc;
    n->vocab = inferd_model_get_vocab(inferd_registry_handle_model(n->h));
    progress(n, 1, "loaded %s", path);
    return 0;
}

int inferd_node_main(int ctl)
{
    node n = {.ctl = ctl};
    inferd_error e = {0};
    json_t *cfg = NULL;
    int fds[CTL_FDS_MAX];
    size_t n_fds = 0;
    int status = 1;
    pthread_t watcher;
    bool watching = false;
    if (inferd__ctl_recv(ctl, &cfg, fds, &n_fds, &e) < 0) {
        fprintf(stderr, "pipeline-node: no configuration from the manager: %s\n", e.msg);
        return 1;
    }
    n.name = json_string_value(json_object_get(cfg, "node"));
    n.kind = json_string_value(json_object_get(cfg, "kind"));
    n.opts = json_object_get(cfg, "options");
    json_t *ins = json_object_get(cfg, "inputs"), *outs = json_object_get(cfg, "outputs");
    if (strcmp(json_string_value(json_object_get(cfg, "type")), "config") != 0 || !n.name ||
        !n.kind || !json_is_object(n.opts) || json_array_size(ins) != 1 ||
        json_array_size(outs) < 1 || json_array_size(outs) > OUT_MAX ||
        n_fds != 1 + json_array_size(outs)) {
        inferd_fail(&e, INFERD_E_FORMAT, "a configuration this node cannot use");
        status = fail(&n, &e);
        goto done;
    }
    n.n_out = json_array_size(outs);
    if (inferd_channel_open(fds[0], INFERD_CHANNEL_SUBSCRIBER, &n.in, &e) < 0) {
        status = fail(&n, &e);
        goto done;
    }
    for (size_t o = 0; o < n.n_out; o++)
        if (inferd_channel_open(fds[1 + o], INFERD_CHANNEL_PUBLISHER, &n.out[o], &e) < 0) {
            status = fail(&n, &e);
            goto done;
        }
    if (strcmp(n.kind, "identity") != 0 && init_model(&n, &e) < 0) {
        status = fail(&n, &e);
        goto done;
    }
    inferd__ctl_send_type(ctl, "ready", NULL);
    for (;;) { /* until run (or stop) */
        json_t *m = NULL;
        if (inferd__ctl_recv(ctl, &m, NULL, NULL, &e) < 0) {
            status = 0; /* the manager went: nothing to do */
            goto done;
        }
        const char *t = json_string_value(json_object_get(m, "type"));
        const bool run = strcmp(t, "run") == 0, stop = strcmp(t, "stop") == 0;
        json_decref(m);
        if (stop) {
            status = 0;
            goto done;
        }
        if (run)
            break;
    }
    watching = pthread_create(&watcher, NULL, watch_ctl, &n) == 0;
    status = 0;
    llm_state ls = {0};
    const bool llm = strcmp(n.kind, "llm") == 0;
    if (llm && llm_start(&ls, &n, &e) < 0) {
        status = fail(&n, &e);
        goto done;
    }
    for (;;) {
        inferd_sample s;
        int rc = inferd_channel_receive(n.in, -1, &s, &e);
        if (rc == INFERD_E_UNAVAILABLE)
            break;
        if (rc == 0)
            rc = inferd_sample_check(s.data, s.len, &e);
        if (rc == 0) {
            const inferd_sample_header *h = s.data;
            if (llm) {
                rc = llm_queue(&ls, &s, &e); /* takes the sample */
            } else if (h->flags & INFERD_SAMPLE_END) {
                for (size_t o = 0; rc == 0 && o < n.n_out; o++)
                    rc = emit(&n, o, h->session, *h, NULL, 0, &e);
            } else {
                rc = process(&n, h, (const char *)s.data + sizeof(*h), &e);
            }
            if (!llm)
                inferd_channel_release(n.in, &s);
        }
        if (rc == INFERD_E_UNAVAILABLE || rc == INFERD_E_CANCELLED)
            break; /* stopping */
        if (rc < 0) {
            status = fail(&n, &e);
            break;
        }
    }
    if (llm && llm_stop(&ls, &e) < 0 && status == 0)
        status = fail(&n, &e);
done:
    if (watching) {
        shutdown(ctl, SHUT_RDWR); /* ends the watcher's receive */
        pthread_join(watcher, NULL);
    }
    if (n.h)
        inferd_registry_release(n.reg, n.h);
    inferd_registry_destroy(n.reg);
    inferd_channel_close(n.in);
    for (size_t o = 0; o < n.n_out; o++)
        inferd_channel_close(n.out[o]);
    for (size_t i = 0; i < n_fds; i++)
        close(fds[i]);
    inferd_free(n.buf);
    json_decref(cfg);
    return status;
}
