/* The resilient client (client.h): calls over several workers with a retry
 * policy, a circuit breaker per endpoint, and streams that fail over
 * without losing or repeating a piece. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "inferd/alloc.h"
#include "inferd/buf.h"
#include "inferd/client.h"
#include "inferd/clock.h"

typedef struct endpoint {
    inferd_client *c;
    inferd_breaker_state st; /* r->mu, as the rest */
    uint32_t in_row;
    uint64_t opened_ns;
    bool probing; /* half-open: a call is probing it */
    uint64_t attempts, failures, successes, opened;
} endpoint;

struct inferd_resilient {
    endpoint *ep;
    size_t n;
    inferd_resilient_opts o;
    pthread_mutex_t mu;
    uint64_t rr;  /* the next call's first endpoint */
    uint64_t rng; /* jitter (xorshift64*) */
    inferd_resilient_stats st;
};

inferd_resilient_opts inferd_resilient_opts_default(void)
{
    inferd_resilient_opts o;
    memset(&o, 0, sizeof(o));
    o.client = inferd_client_opts_default();
    o.retry = (inferd_retry_policy){
        .attempts = 6, .backoff_base_ms = 50, .backoff_cap_ms = 2000, .deadline_ms = 60000};
    o.breaker_failures = 3;
    o.breaker_cooldown_ms = 2000;
    return o;
}

const char *inferd_breaker_state_name(inferd_breaker_state s)
{
    return s == INFERD_BREAKER_OPEN        ? "open"
           : s == INFERD_BREAKER_HALF_OPEN ? "half-open"
                                           : "closed";
}

int inferd_resilient_open(const char *const *urls, size_t n, const inferd_resilient_opts *opts,
                          inferd_resilient **out, inferd_error *err)
{
    *out = NULL;
    const inferd_resilient_opts o = opts ? *opts : inferd_resilient_opts_default();
    if (!urls || n == 0)
        return inferd_fail(err, INFERD_E_INVALID, "resilient client: no endpoint");
    if (o.retry.attempts < 1 || o.retry.backoff_base_ms < 0 ||
        o.retry.backoff_cap_ms < o.retry.backoff_base_ms || o.retry.deadline_ms < 0 ||
        o.breaker_failures < 1 || o.breaker_cooldown_ms < 0)
        return inferd_fail(err, INFERD_E_INVALID,
                           "resilient client: attempts >= 1, 0 <= backoff base <= cap, deadline "
                           ">= 0, breaker failures >= 1, cooldown >= 0");
    inferd_resilient *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "resilient client: no memory");
    r->o = o;
    pthread_mutex_init(&r->mu, NULL);
    r->ep = inferd_calloc(n, sizeof(endpoint));
    if (!r->ep) {
        inferd_resilient_close(r);
        return inferd_fail(err, INFERD_E_NOMEM, "resilient client: no memory");
    }
    for (size_t i = 0; i < n; i++) {
        int rc = inferd_client_open(urls[i], &o.client, &r->ep[i].c, err);
        if (rc < 0) {
            r->n = i;
            inferd_resilient_close(r);
            return rc;
        }
    }
    r->n = n;
    r->rng = o.jitter_seed;
    if (r->rng == 0 && getrandom(&r->rng, sizeof(r->rng), 0) != (ssize_t)sizeof(r->rng))
        r->rng = inferd_now_ns();
    r->rng |= 1;
    *out = r;
    return 0;
}

void inferd_resilient_close(inferd_resilient *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->ep && i < r->n; i++)
        inferd_client_close(r->ep[i].c);
    inferd_free(r->ep);
    pthread_mutex_destroy(&r->mu);
    inferd_free(r);
}

/* ---- endpoints and breakers ---- */

/* The next endpoint to try from *cursor (r->mu held): closed ones, an open
 * one whose cooldown is over (it becomes half-open: this call probes it),
 * a half-open one nobody probes. -1 if none may be tried now. */
static int pick_locked(inferd_resilient *r, size_t *cursor, uint64_t now)
{
    const uint64_t cool = (uint64_t)r->o.breaker_cooldown_ms * 1000000u;
    for (size_t k = 0; k < r->n; k++) {
        const size_t i = (*cursor + k) % r->n;
        endpoint *e = &r->ep[i];
        if (e->st == INFERD_BREAKER_OPEN && now - e->opened_ns >= cool)
            e->st = INFERD_BREAKER_HALF_OPEN;
        if (e->st == INFERD_BREAKER_OPEN || (e->st == INFERD_BREAKER_HALF_OPEN && e->probing))
            continue;
        if (e->st == INFERD_BREAKER_HALF_OPEN)
            e->probing = true;
        *cursor = i + 1;
        return (int)i;
    }
    return -1;
}

typedef enum outcome { OUT_OK, OUT_FAILED, OUT_NONE } outcome;

static void record(inferd_resilient *r, size_t i, outcome o)
{
    pthread_mutex_lock(&r->mu);
    endpoint *e = &r->ep[i];
    e->probing = false;
    if (o == OUT_OK) {
        e->successes++;
        e->in_row = 0;
        e->st = INFERD_BREAKER_CLOSED;
    } else if (o == OUT_FAILED) {
        e->failures++;
        e->in_row++;
        if (e->st == INFERD_BREAKER_HALF_OPEN ||
            (e->st == INFERD_BREAKER_CLOSED && e->in_row >= r->o.breaker_failures)) {
            e->st = INFERD_BREAKER_OPEN;
            e->opened_ns = inferd_now_ns();
            e->opened++;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* Does @p rc say this endpoint failed, so that another may serve? */
static bool retryable(int rc)
{
    return rc == INFERD_E_TRANSPORT || rc == INFERD_E_UNAVAILABLE || rc == INFERD_E_OVERLOADED ||
           rc == INFERD_E_TIMEOUT;
}

/* A full-jitter wait for round @p k: uniform in [0, min(cap, base * 2^k)]. */
static int64_t backoff_ms(inferd_resilient *r, uint32_t k)
{
    int64_t top = r->o.retry.backoff_base_ms;
    for (uint32_t i = 0; i < k && top < r->o.retry.backoff_cap_ms; i++)
        top *= 2;
    if (top > r->o.retry.backoff_cap_ms)
        top = r->o.retry.backoff_cap_ms;
    pthread_mutex_lock(&r->mu);
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    const uint64_t x = r->rng * 2685821657736338717ull;
    pthread_mutex_unlock(&r->mu);
    return top > 0 ? (int64_t)(x % (uint64_t)(top + 1)) : 0;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* One try of a call on client @p c with @p left_ms of its deadline (0:
 * none). */
typedef int (*attempt_fn)(inferd_client *c, void *ctx, int64_t left_ms, inferd_error *err);

/* Run a call through the policy. */
static int run(inferd_resilient *r, attempt_fn fn, void *ctx, inferd_error *err)
{
    const uint64_t t0 = inferd_now_ns();
    const int64_t dl = r->o.retry.deadline_ms;
    inferd_error last = {0};
    pthread_mutex_lock(&r->mu);
    size_t cursor = (size_t)(r->rr++ % r->n);
    r->st.calls++;
    pthread_mutex_unlock(&r->mu);
    uint32_t round = 0, since_wait = 0, tries = 0;
    for (uint32_t a = 0; a < r->o.retry.attempts; a++) {
        int64_t left = dl ? dl - (int64_t)((inferd_now_ns() - t0) / 1000000u) : 0;
        if (dl && left <= 0)
            break;
        pthread_mutex_lock(&r->mu);
        int i = pick_locked(r, &cursor, inferd_now_ns());
        if (i >= 0) {
            r->ep[i].attempts++;
            r->st.attempts++;
            if (tries > 0)
                r->st.failovers++;
        }
        pthread_mutex_unlock(&r->mu);
        if (i < 0) { /* every breaker open: wait for a cooldown or the backoff */
            if (!last.code)
                inferd_fail(&last, INFERD_E_UNAVAILABLE, "every endpoint's breaker is open");
            int64_t w = backoff_ms(r, round++);
            sleep_ms(dl && w > left ? left : w);
            continue;
        }
        tries++;
        inferd_error e = {0};
        const int rc = fn(r->ep[i].c, ctx, left, &e);
        if (rc == 0) {
            record(r, (size_t)i, OUT_OK);
            return 0;
        }
        if (!retryable(rc)) { /* an answer: the endpoint is well */
            record(r, (size_t)i, rc == INFERD_E_CANCELLED ? OUT_NONE : OUT_OK);
            if (err)
                *err = e;
            return rc;
        }
        record(r, (size_t)i, OUT_FAILED);
        last = e;
        if (++since_wait >= r->n) { /* every endpoint tried: wait before the next round */
            since_wait = 0;
            left = dl ? dl - (int64_t)((inferd_now_ns() - t0) / 1000000u) : 0;
            int64_t w = backoff_ms(r, round++);
            sleep_ms(dl && w > left ? left : w);
        }
    }
    const int64_t took = (int64_t)((inferd_now_ns() - t0) / 1000000u);
    if (dl && took >= dl)
        return inferd_fail(err, INFERD_E_TIMEOUT,
                           "deadline of %lld ms passed after %u tries; "
                           "last: %s",
                           (long long)dl, tries, last.code ? last.msg : "none");
    return inferd_fail(err, last.code ? last.code : INFERD_E_UNAVAILABLE,
                       "%u tries failed; last: %s", tries, last.code ? last.msg : "none");
}

/* ---- calls ---- */

typedef struct gen_call {
    inferd_resilient *r;
    inferd_client_gen g; /* the seed fixed */
    inferd_client_token_fn on_token;
    void *ctx;
    inferd_client_result res; /* the last try's */
    /* Streams: what was delivered, piece by piece. */
    inferd_buf text;
    size_t *ends; /* (n_delivered) end offset of each piece in text */
    size_t cap_ends;
    uint32_t n_delivered;
    bool mismatch, user_cancel, no_memory;
    uint32_t bad_piece;
} gen_call;

static int on_piece(void *ctx, uint32_t index, const char *t, size_t len)
{
    gen_call *k = ctx;
    if (index < k->n_delivered) { /* a replay: it must be what was delivered */
        const size_t from = index ? k->ends[index - 1] : 0;
        if (k->ends[index] - from != len || memcmp(k->text.p + from, t, len) != 0) {
            k->mismatch = true;
            k->bad_piece = index;
            return 1;
        }
        pthread_mutex_lock(&k->r->mu);
        k->r->st.replayed++;
        pthread_mutex_unlock(&k->r->mu);
        return 0;
    }
    if (k->n_delivered == k->cap_ends) {
        size_t cap = k->cap_ends ? 2 * k->cap_ends : 64;
        size_t *n = inferd_realloc(k->ends, cap * sizeof(*n));
        if (!n) {
            k->no_memory = true;
            return 1;
        }
        k->ends = n;
        k->cap_ends = cap;
    }
    if (inferd_buf_add(&k->text, t, len) < 0) {
        k->no_memory = true;
        return 1;
    }
    k->ends[k->n_delivered++] = k->text.len;
    if (k->on_token(k->ctx, index, t, len) != 0) {
        k->user_cancel = true;
        return 1;
    }
    return 0;
}

static int gen_attempt(inferd_client *c, void *ctx, int64_t left_ms, inferd_error *err)
{
    gen_call *k = ctx;
    inferd_client_result_free(&k->res);
    inferd_client_gen g = k->g;
    if (left_ms > 0 && (g.client_timeout_ms == 0 || g.client_timeout_ms > left_ms))
        g.client_timeout_ms = left_ms;
    int rc = inferd_client_complete(c, &g, k->on_token ? on_piece : NULL, k, &k->res, err);
    if (k->mismatch)
        return inferd_fail(err, INFERD_E_INTERNAL,
                           "replayed piece %u differs from the one delivered: the workers do not "
                           "serve the same model",
                           k->bad_piece);
    if (k->no_memory)
        return inferd_fail(err, INFERD_E_NOMEM, "resilient client: no memory for the stream");
    if (rc == 0 && k->on_token && k->res.n_pieces < k->n_delivered)
        return inferd_fail(err, INFERD_E_INTERNAL,
                           "the replayed stream has %u pieces, %u were delivered", k->res.n_pieces,
                           k->n_delivered);
    return rc;
}

int inferd_resilient_complete(inferd_resilient *r, const inferd_client_gen *g,
                              inferd_client_token_fn on_token, void *ctx, inferd_client_result *out,
                              inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    gen_call k = {.r = r, .g = *g, .on_token = on_token, .ctx = ctx};
    k.text = INFERD_BUF_INIT((size_t)1 << 30);
    if (!k.g.has_seed) { /* a replay must draw the same tokens */
        if (getrandom(&k.g.seed, sizeof(k.g.seed), 0) != (ssize_t)sizeof(k.g.seed))
            k.g.seed = inferd_now_ns();
        k.g.seed &= ((uint64_t)1 << 53) - 1; /* exact in any JSON reader */
        k.g.has_seed = true;
    }
    int rc = run(r, gen_attempt, &k, err);
    *out = k.res;
    if (on_token) { /* the text is what was delivered, over all tries */
        inferd_free(out->text);
        out->text = k.text.p ? k.text.p : inferd_strdup("");
        out->text_len = k.text.len;
        out->n_pieces = k.n_delivered;
        k.text.p = NULL;
    }
    out->seed = k.g.seed;
    inferd_buf_free(&k.text);
    inferd_free(k.ends);
    return rc;
}

typedef struct op_call {
    bool ready;
    char **json; /* status, or NULL: health */
} op_call;

static int op_attempt(inferd_client *c, void *ctx, int64_t left_ms, inferd_error *err)
{
    op_call *k = ctx;
    (void)left_ms;
    if (k->json) {
        free(*k->json);
        *k->json = NULL;
        return inferd_client_status(c, k->json, err);
    }
    return inferd_client_health(c, k->ready, err);
}

int inferd_resilient_health(inferd_resilient *r, bool ready, inferd_error *err)
{
    op_call k = {.ready = ready};
    return run(r, op_attempt, &k, err);
}

int inferd_resilient_status(inferd_resilient *r, char **out_json, inferd_error *err)
{
    *out_json = NULL;
    op_call k = {.json = out_json};
    return run(r, op_attempt, &k, err);
}

typedef struct infer_call {
    const char *model, *params;
    const inferd_client_tensor *in;
    size_t n_in;
    inferd_client_tensor *out;
    size_t n_out;
    inferd_client_infer_result *res;
} infer_call;

static int infer_attempt(inferd_client *c, void *ctx, int64_t left_ms, inferd_error *err)
{
    infer_call *k = ctx;
    (void)left_ms;
    inferd_client_infer_result_free(k->res);
    return inferd_client_infer(c, k->model, k->in, k->n_in, k->out, k->n_out, k->params, k->res,
                               err);
}

int inferd_resilient_infer(inferd_resilient *r, const char *model,
                           const inferd_client_tensor *inputs, size_t n_inputs,
                           inferd_client_tensor *outputs, size_t n_outputs, const char *params_json,
                           inferd_client_infer_result *out, inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n_inputs + n_outputs; i++) {
        const inferd_client_tensor *t = i < n_inputs ? &inputs[i] : &outputs[i - n_inputs];
        if (t->via == INFERD_CLIENT_VIA_SHM)
            return inferd_fail_param(err, INFERD_E_INVALID, t->name,
                                     "%s '%s': a resilient call sends tensors as JSON or binary "
                                     "data (a shared-memory region belongs to one worker)",
                                     i < n_inputs ? "input" : "output", t->name);
    }
    infer_call k = {.model = model,
                    .params = params_json,
                    .in = inputs,
                    .n_in = n_inputs,
                    .out = outputs,
                    .n_out = n_outputs,
                    .res = out};
    return run(r, infer_attempt, &k, err);
}

/* ---- figures ---- */

void inferd_resilient_stats_get(inferd_resilient *r, inferd_resilient_stats *out)
{
    pthread_mutex_lock(&r->mu);
    *out = r->st;
    pthread_mutex_unlock(&r->mu);
}

size_t inferd_resilient_n_endpoints(const inferd_resilient *r) { return r->n; }

void inferd_resilient_endpoint(inferd_resilient *r, size_t i, inferd_endpoint_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (i >= r->n)
        return;
    pthread_mutex_lock(&r->mu);
    endpoint *e = &r->ep[i];
    /* An open breaker whose cooldown is over shows as half-open. */
    if (e->st == INFERD_BREAKER_OPEN &&
        inferd_now_ns() - e->opened_ns >= (uint64_t)r->o.breaker_cooldown_ms * 1000000u)
        e->st = INFERD_BREAKER_HALF_OPEN;
    out->url = inferd_client_url(e->c);
    out->breaker = e->st;
    out->failures_in_row = e->in_row;
    out->attempts = e->attempts;
    out->failures = e->failures;
    out->successes = e->successes;
    out->opened = e->opened;
    pthread_mutex_unlock(&r->mu);
}
