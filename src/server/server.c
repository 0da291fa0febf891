/* The HTTP server: libmicrohttpd daemons (epoll and a pool of threads; the
 * operations port apart), body reading with a limit, bearer authentication,
 * routing, the stages of a request (received, on a job, waiting for its
 * generation, answered), error responses and the per-second ticker.
 * Connections, their limits and parking are conn.c's. */
#include "server_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"

#define COMP "http"

const char *const inferd__server_endpoint_names[EP_COUNT] = {
    [EP_NONE] = "other",
    [EP_HEALTH] = "/health",
    [EP_METRICS] = "/metrics",
    [EP_STATUS] = "/v1/status",
    [EP_MODELS] = "/v1/models",
    [EP_COMPLETIONS] = "/v1/completions",
    [EP_CHAT] = "/v1/chat/completions",
    [EP_V2_SERVER] = "/v2",
    [EP_V2_HEALTH] = "/v2/health",
    [EP_V2_MODEL] = "/v2/models/{m}",
    [EP_V2_INFER] = "/v2/models/{m}/infer",
    [EP_V2_REPOSITORY] = "/v2/repository",
};

const unsigned inferd__server_http_codes[HTTP_CODES_N] = {
    200, 400, 401, 404, 405, 408, 409, 413, 415, 422, 499, 500, 501, 503, 504, 507,
};

/* ---- responses ---- */

void inferd__http_text(http_conn *c, unsigned status, const char *content_type, char *text,
                       size_t len)
{
    if (c->resp) { /* a handler answers once; keep the first */
        inferd_free(text);
        return;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(len, text, inferd_free);
    if (!r) {
        inferd_free(text);
        return;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    c->resp = r;
    c->status = status;
}

void inferd__http_json(http_conn *c, unsigned status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        inferd_log_error(COMP, "no memory for a response");
        return;
    }
    size_t n = strlen(s);
    /* A newline ends the body, as curl users expect. */
    char *t = inferd_realloc(s, n + 2);
    if (t) {
        t[n] = '\n';
        t[n + 1] = '\0';
        s = t;
        n++;
    }
    inferd__http_text(c, status, "application/json", s, n);
}

void inferd__http_fail(http_conn *c, const inferd_error *e)
{
    json_t *o = c->api == API_KSERVE ? inferd_fe_error_kserve(e) : inferd_fe_error_openai(e);
    inferd__http_json(c, inferd_fe_error_status(e), o);
}

void inferd__http_error(http_conn *c, int code, const char *param, const char *fmt, ...)
{
    inferd_error e = {0};
    va_list ap;
    va_start(ap, fmt);
    inferd_vfail_param(&e, code, param, fmt, ap);
    va_end(ap);
    inferd__http_fail(c, &e);
}

int inferd__server_find_model(http_conn *c, const char *id)
{
    inferd_error e = {0};
    int i = inferd_frontend_find(c->srv->fe, id, &e);
    if (i < 0)
        inferd__http_error(c, INFERD_E_MODEL_NOT_FOUND, "model",
                           "model '%s' is not served here (see %s)", id,
                           c->api == API_KSERVE ? "/v2/repository/index" : "/v1/models");
    return i;
}

/* ---- counters ---- */

static unsigned code_index(unsigned status)
{
    for (unsigned i = 0; i < HTTP_CODES_N; i++)
        if (inferd__server_http_codes[i] == status)
            return i;
    return HTTP_CODES_N;
}

void inferd__server_count_overhead(inferd_server *s, double overhead_s)
{
    pthread_mutex_lock(&s->mu);
    s->overhead_sum_s += overhead_s;
    s->overhead_n++;
    s->overhead_win[s->overhead_next] = overhead_s;
    s->overhead_next = (s->overhead_next + 1) % OVERHEAD_WINDOW;
    if (s->overhead_filled < OVERHEAD_WINDOW)
        s->overhead_filled++;
    pthread_mutex_unlock(&s->mu);
}

static void *ticker_main(void *arg)
{
    inferd_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->tick_stop) {
        inferd_procstat ps;
        inferd_error e = {0};
        pthread_mutex_unlock(&s->mu);
        inferd_procstat_read(&ps, &e);
        uint64_t requests, tokens;
        inferd_frontend_counts(s->fe, &requests, &tokens);
        pthread_mutex_lock(&s->mu);
        tick *t = &s->ticks[s->tick_next];
        t->t_s = inferd_now_s();
        t->cpu_s = ps.cpu_user_s + ps.cpu_system_s;
        t->tokens_out = tokens;
        t->requests = requests;
        s->tick_next = (s->tick_next + 1) % TICKS_N;
        if (s->tick_filled < TICKS_N)
            s->tick_filled++;
        pthread_mutex_unlock(&s->mu);
        inferd_alloc_released(0); /* what a rate-limited trim left */
        pthread_mutex_lock(&s->mu);
        const uint64_t until = inferd_now_ns() + 1000000000u;
        while (!s->tick_stop && inferd_cond_wait_until_ns(&s->tick_cv, &s->mu, until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- routing ---- */

/* A path's segments: "/v2/models/m/infer" -> v2, models, m, infer (one
 * trailing '/' ignored). */
#define SEGS_MAX 8
typedef struct path {
    const char *seg[SEGS_MAX];
    size_t len[SEGS_MAX];
    size_t n;
    bool too_long; /* more than SEGS_MAX segments */
} path;

static void split_path(const char *url, path *p)
{
    memset(p, 0, sizeof(*p));
    const char *at = url[0] == '/' ? url + 1 : url;
    while (*at) {
        size_t n = strcspn(at, "/");
        if (p->n == SEGS_MAX) {
            p->too_long = true;
            return;
        }
        p->seg[p->n] = at;
        p->len[p->n++] = n;
        at += n;
        if (*at == '/')
            at++;
    }
}

static bool seg_is(const path *p, size_t i, const char *s)
{
    return i < p->n && p->len[i] == strlen(s) && memcmp(p->seg[i], s, p->len[i]) == 0;
}

static void drop_segments(path *p, size_t at, size_t k)
{
    for (size_t i = at; i + k < p->n; i++) {
        p->seg[i] = p->seg[i + k];
        p->len[i] = p->len[i + k];
    }
    p->n -= k;
}

typedef enum body_kind { NO_BODY, JSON_BODY, JSON_OR_EMPTY } body_kind;

/* Where a route runs: here (libmicrohttpd's thread), or on a job thread
 * (its work may block: a model load). */
typedef enum run_kind {
    RUN_HERE,
    RUN_JOB_IF_LOADING, /* on a job while a served model is not loaded */
    RUN_JOB,
} run_kind;

static void do_health(http_conn *c, const char *m, json_t *b)
{
    (void)m, (void)b;
    inferd__ops_health(c);
}
static void do_metrics(http_conn *c, const char *m, json_t *b)
{
    (void)m, (void)b;
    inferd__ops_metrics(c);
}
static void do_status(http_conn *c, const char *m, json_t *b)
{
    (void)m, (void)b;
    inferd__ops_status(c);
}
static void do_models(http_conn *c, const char *m, json_t *b)
{
    (void)b;
    inferd__openai_models(c, m);
}
static void do_completions(http_conn *c, const char *m, json_t *b)
{
    (void)m;
    inferd__openai_completions(c, b);
}
static void do_chat(http_conn *c, const char *m, json_t *b) { (void)m, inferd__openai_chat(c, b); }
static void do_v2(http_conn *c, const char *m, json_t *b)
{
    (void)m, (void)b;
    inferd__kserve_server(c);
}
static void do_live(http_conn *c, const char *m, json_t *b)
{
    (void)m, (void)b;
    inferd__kserve_health(c, false);
}
static void do_ready(http_conn *c, const char *m, json_t *b)
{
    (void)m, (void)b;
    inferd__kserve_health(c, true);
}
static void do_model(http_conn *c, const char *m, json_t *b)
{
    (void)b, inferd__kserve_model(c, m, "");
}
static void do_model_ready(http_conn *c, const char *m, json_t *b)
{
    (void)b;
    inferd__kserve_model(c, m, "ready");
}
static void do_infer(http_conn *c, const char *m, json_t *b) { inferd__kserve_infer(c, m, b); }
static void do_index(http_conn *c, const char *m, json_t *b)
{
    (void)m;
    inferd__kserve_repository_index(c, b);
}
static void do_load(http_conn *c, const char *m, json_t *b)
{
    (void)b; /* parameters are accepted and unused */
    inferd__kserve_repository_load(c, m, true);
}
static void do_unload(http_conn *c, const char *m, json_t *b)
{
    (void)b;
    inferd__kserve_repository_load(c, m, false);
}

/* A route: its segments ("{m}" stands for a model id), method, body. */
typedef struct route_def {
    const char *segs[6];
    bool post;
    endpoint ep;
    body_kind body;
    route_fn fn;
    run_kind run;
    bool ops; /* an operations route: served beyond the limits and on the
               * operations port */
} route_def;

/* clang-format off */
static const route_def routes[] = {
    /* path                                  post   endpoint          body           handler         runs on             ops */
    {{"health"},                             false, EP_HEALTH,        NO_BODY,       do_health,      RUN_HERE,           true},
    {{"metrics"},                            false, EP_METRICS,       NO_BODY,       do_metrics,     RUN_HERE,           true},
    {{"v1", "status"},                       false, EP_STATUS,        NO_BODY,       do_status,      RUN_HERE,           true},
    {{"v1", "models"},                       false, EP_MODELS,        NO_BODY,       do_models,      RUN_HERE,           false},
    {{"v1", "models", "{m}"},                false, EP_MODELS,        NO_BODY,       do_models,      RUN_HERE,           false},
    {{"v1", "completions"},                  true,  EP_COMPLETIONS,   JSON_BODY,     do_completions, RUN_JOB_IF_LOADING, false},
    {{"v1", "chat", "completions"},          true,  EP_CHAT,          JSON_BODY,     do_chat,        RUN_JOB_IF_LOADING, false},
    {{"v2"},                                 false, EP_V2_SERVER,     NO_BODY,       do_v2,          RUN_HERE,           false},
    {{"v2", "health", "live"},               false, EP_V2_HEALTH,     NO_BODY,       do_live,        RUN_HERE,           true},
    {{"v2", "health", "ready"},              false, EP_V2_HEALTH,     NO_BODY,       do_ready,       RUN_HERE,           true},
    {{"v2", "models", "{m}"},                false, EP_V2_MODEL,      NO_BODY,       do_model,       RUN_HERE,           false},
    {{"v2", "models", "{m}", "ready"},       false, EP_V2_MODEL,      NO_BODY,       do_model_ready, RUN_HERE,           false},
    {{"v2", "models", "{m}", "infer"},       true,  EP_V2_INFER,      JSON_BODY,     do_infer,       RUN_JOB_IF_LOADING, false},
    {{"v2", "repository", "index"},          true,  EP_V2_REPOSITORY, JSON_OR_EMPTY, do_index,       RUN_HERE,           false},
    {{"v2", "repository", "models", "{m}", "load"},
                                             true,  EP_V2_REPOSITORY, JSON_OR_EMPTY, do_load,        RUN_JOB,            false},
    {{"v2", "repository", "models", "{m}", "unload"},
                                             true,  EP_V2_REPOSITORY, JSON_OR_EMPTY, do_unload,      RUN_JOB,            false},
};
/* clang-format on */
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Does @p r match @p p? The model segment is copied into @p m. */
static bool route_matches(const route_def *r, const path *p, char *m, size_t cap)
{
    size_t n = 0;
    while (n < 6 && r->segs[n])
        n++;
    if (n != p->n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r->segs[i], "{m}") == 0) {
            if (p->len[i] == 0)
                return false;
            size_t k = p->len[i] < cap ? p->len[i] : cap - 1;
            memcpy(m, p->seg[i], k);
            m[k] = '\0';
        } else if (!seg_is(p, i, r->segs[i])) {
            return false;
        }
    }
    return true;
}

static void method_not_allowed(http_conn *c, const char *method, const char *allowed)
{
    inferd__http_error(c, INFERD_E_METHOD, NULL, "%s is not allowed here (allowed: %s)", method,
                       allowed);
    if (c->resp)
        MHD_add_response_header(c->resp, MHD_HTTP_HEADER_ALLOW, allowed);
}

/* Parse the body as a JSON object, or answer 400. An empty body is {} when
 * @p empty_ok. */
static json_t *body_json(http_conn *c, bool empty_ok)
{
    if (c->body.len == 0) {
        if (empty_ok)
            return json_object();
        inferd__http_error(c, INFERD_E_BAD_JSON, NULL, "the request body is empty (expected JSON)");
        return NULL;
    }
    json_t *j = NULL;
    inferd_error e = {0};
    if (inferd_fe_parse_json(c->body.p, c->body.len, &j, &e) < 0) {
        inferd__http_fail(c, &e);
        return NULL;
    }
    if (!json_is_object(j)) {
        inferd__http_error(c, INFERD_E_BAD_JSON, NULL, "the request body must be a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

/* "/v2/models/{m}/versions/{v}/...": the same as "/v2/models/{m}/...",
 * for a served model and version 1. false when answered (404). */
static bool strip_version(http_conn *c, path *p)
{
    if (!(p->n >= 5 && seg_is(p, 0, "v2") && seg_is(p, 1, "models") && seg_is(p, 3, "versions")))
        return true;
    char m[INFERD_REGISTRY_ID_MAX];
    snprintf(m, sizeof(m), "%.*s", (int)p->len[2], p->seg[2]);
    c->ep = EP_V2_MODEL;
    if (inferd__server_find_model(c, m) < 0)
        return false;
    if (!seg_is(p, 4, "1")) {
        inferd__http_error(c, INFERD_E_NOT_FOUND, NULL, "model '%s' has no version '%.*s' (only 1)",
                           m, (int)p->len[4], p->seg[4]);
        return false;
    }
    drop_segments(p, 3, 2);
    return true;
}

/* Is every served model loaded (so that a request cannot block on a load)? */
static bool all_loaded(inferd_server *s)
{
    for (size_t i = 0; i < inferd_frontend_n_models(s->fe); i++) {
        inferd_fe_model_info mi;
        inferd_frontend_model(s->fe, i, &mi);
        if (!mi.loaded)
            return false;
    }
    return true;
}

/* Route a complete request. */
static void route(http_conn *c, const char *url, const char *method)
{
    const bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    const bool post = strcmp(method, "POST") == 0;
    path p;
    split_path(url, &p);
    if (!p.too_long && !strip_version(c, &p))
        return;
    char m[INFERD_REGISTRY_ID_MAX] = "";
    const route_def *found = NULL, *other = NULL;
    const bool ops_only = c->l->ops || c->over_limit;
    for (size_t i = 0; i < N_ROUTES && !p.too_long; i++) {
        if (ops_only && !routes[i].ops)
            continue;
        if (!route_matches(&routes[i], &p, m, sizeof(m)))
            continue;
        if (routes[i].post ? post : get) {
            found = &routes[i];
            break;
        }
        other = &routes[i];
    }
    if (!found && other) {
        c->ep = other->ep;
        method_not_allowed(c, method, other->post ? "POST" : "GET, HEAD");
        return;
    }
    if (!found) {
        c->ep = EP_NONE;
        inferd__http_error(c, INFERD_E_NO_ROUTE, NULL, "no route %s %s", method, url);
        return;
    }
    c->ep = found->ep;
    json_t *body = NULL;
    if (found->body != NO_BODY && !(body = body_json(c, found->body == JSON_OR_EMPTY)))
        return;
    if (found->run == RUN_JOB || (found->run == RUN_JOB_IF_LOADING && !all_loaded(c->srv))) {
        if (inferd__job_post(c, found->fn, m, body) == 0)
            return; /* the job has the body now */
        inferd__http_error(c, INFERD_E_OVERLOADED, NULL,
                           "too many requests waiting for a model to load: retry later");
    } else {
        found->fn(c, m[0] ? m : NULL, body);
    }
    json_decref(body);
}

/* Constant-time comparison of the bearer token with the key. */
static bool authorized(const inferd_server *s, struct MHD_Connection *mc)
{
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    unsigned char diff = (unsigned char)(n != s->api_key_len);
    for (size_t i = 0; i < s->api_key_len; i++)
        diff |= (unsigned char)(s->api_key[i] ^ (i < n ? h[i] : 0));
    return diff == 0;
}

/* How a request says where its body ends. */
typedef struct framing {
    int n_cl;            /* Content-Length headers */
    bool cl_differ;      /* with different values */
    char cl[32];         /* the first one's value */
    int n_te;            /* Transfer-Encoding headers */
    bool te_not_chunked; /* a coding other than exactly "chunked" */
} framing;

static enum MHD_Result read_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                    size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    framing *f = cls;
    if (key_size == 14 && strncasecmp(key, "Content-Length", 14) == 0) {
        char v[32];
        snprintf(v, sizeof(v), "%.*s", (int)(value_size < 31 ? value_size : 31), value);
        if (f->n_cl++ == 0)
            memcpy(f->cl, v, sizeof(v));
        else if (strcmp(f->cl, v) != 0 || value_size >= 31)
            f->cl_differ = true;
    } else if (key_size == 17 && strncasecmp(key, "Transfer-Encoding", 17) == 0) {
        f->n_te++;
        if (!(value_size == 7 && strncasecmp(value, "chunked", 7) == 0))
            f->te_not_chunked = true;
    }
    return MHD_YES;
}

/* What makes a request's framing ambiguous (RFC 9112 6.1-6.3), or NULL. */
static const char *framing_problem(const framing *f)
{
    if (f->n_cl > 0 && f->n_te > 0)
        return "Content-Length together with Transfer-Encoding";
    if (f->cl_differ)
        return "Content-Length given twice with different values";
    if (f->n_te > 1 || f->te_not_chunked)
        return "a transfer coding other than chunked";
    return NULL;
}

/* Is @p url an operations route (served beyond the limits)? */
static bool is_ops_route(const char *url)
{
    path p;
    split_path(url, &p);
    char m[INFERD_REGISTRY_ID_MAX];
    for (size_t i = 0; i < N_ROUTES && !p.too_long; i++)
        if (routes[i].ops && route_matches(&routes[i], &p, m, sizeof(m)))
            return true;
    return false;
}

static bool is_health_probe(const char *url)
{
    return strcmp(url, "/health") == 0 || strncmp(url, "/v2/health/", 11) == 0;
}

static enum MHD_Result queue(http_conn *c)
{
    if (!c->resp) {
        c->status = 500;
        return MHD_NO;
    }
    if (c->close)
        MHD_add_response_header(c->resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result r = MHD_queue_response(c->mc, c->status, c->resp);
    c->queued = true;
    MHD_destroy_response(c->resp);
    c->resp = NULL;
    return r;
}

/* The first call for a request (its headers are in): checks that need no
 * body. */
static enum MHD_Result on_headers(http_conn *c, const char *url)
{
    inferd_server *s = c->srv;
    framing fr = {0};
    MHD_get_connection_values_n(c->mc, MHD_HEADER_KIND, read_framing, &fr);
    const char *bad = framing_problem(&fr);
    if (bad) {
        /* RFC 9112 6.3: a message whose length is ambiguous is refused and
         * the connection closed, so nothing in its body is taken for
         * another request. */
        c->close = true;
        inferd__http_error(c, INFERD_E_INVALID, NULL, "%s: the request is refused", bad);
        return queue(c);
    }
    c->over_limit = inferd__conn_over_limit(c);
    if (c->over_limit && !is_ops_route(url)) {
        c->close = true;
        atomic_fetch_add(&s->n_refused, 1);
        inferd__http_error(c, INFERD_E_OVERLOADED, NULL,
                           "too many connections (at most %u, and %u per client address): "
                           "retry later",
                           s->o.max_connections, s->o.max_client_connections);
        return queue(c);
    }
    const char *cl =
        MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->o.max_body_bytes) {
        c->close = true;
        inferd__http_error(c, INFERD_E_TOO_LARGE, NULL,
                           "the request body of %s bytes exceeds the limit of %zu", cl,
                           s->o.max_body_bytes);
        return queue(c);
    }
    return MHD_YES;
}

/* A body chunk. */
static enum MHD_Result on_upload(http_conn *c, const char *data, size_t *size)
{
    inferd_server *s = c->srv;
    /* A body without Content-Length (chunked) past the limit: libmicrohttpd
     * answers only once the upload ends, so the rest is read and dropped;
     * past 4 times the limit the connection is closed unanswered. */
    if (!c->too_large && inferd_buf_add(&c->body, data, *size) == INFERD_E_RANGE) {
        c->too_large = true;
        inferd_buf_free(&c->body);
    }
    if (c->too_large) {
        c->dropped += *size;
        *size = 0;
        return c->dropped > 4 * (uint64_t)s->o.max_body_bytes ? MHD_NO : MHD_YES;
    }
    *size = 0;
    return MHD_YES;
}

/* The whole request is in: answer it, or start what answers it. */
static void on_received(http_conn *c, const char *url, const char *method)
{
    inferd_server *s = c->srv;
    inferd__conn_phase(s, c->mc, PH_HANDLING);
    if (c->too_large) {
        c->close = true;
        inferd__http_error(c, INFERD_E_TOO_LARGE, NULL,
                           "the request body exceeds the limit of %zu bytes", s->o.max_body_bytes);
    } else if (c->body.err) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the request body");
    } else if (s->api_key && !is_health_probe(url) && !authorized(s, c->mc)) {
        inferd__http_error(c, INFERD_E_UNAUTHORIZED, NULL,
                           "missing or wrong API key (send 'Authorization: Bearer KEY')");
        if (c->resp)
            MHD_add_response_header(c->resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    } else {
        route(c, url, method);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    (void)version;
    const listener *l = cls;
    inferd_server *s = l->srv;
    http_conn *c = *req_cls;
    if (!c) {
        c = inferd_calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        c->srv = s;
        c->l = l;
        c->mc = mc;
        c->t_start_ns = inferd_now_ns();
        c->stage = ST_NEW;
        inferd__waker_init(&c->wk, s, mc);
        *req_cls = c;
        atomic_fetch_add(&s->n_active, 1);
        c->api = strncmp(url, "/v2", 3) == 0 ? API_KSERVE : API_OPENAI;
        c->body = INFERD_BUF_INIT(s->o.max_body_bytes);
        return on_headers(c, url);
    }
    if (*upload_data_size > 0)
        return on_upload(c, upload_data, upload_data_size);
    if (c->queued) /* answered already (an early 413, 400 or 503) */
        return MHD_YES;
    for (;;) {
        switch (c->stage) {
        case ST_NEW:
            on_received(c, url, method);
            if (c->stage == ST_NEW)
                c->stage = c->g ? ST_GEN : ST_DONE;
            continue;
        case ST_JOB:
            if (!inferd__waker_fired(&c->wk)) {
                if (inferd__waker_sleep(&c->wk))
                    return MHD_YES;
                continue;
            }
            c->stage = c->g ? ST_GEN : ST_DONE;
            continue;
        case ST_GEN:
            if (!inferd__gen_pump(c))
                return MHD_YES; /* parked until its next event */
            c->stage = ST_DONE;
            continue;
        case ST_DONE: break;
        }
        break;
    }
    if (c->streamed)
        return MHD_YES;
    if (!c->resp) /* the client left, or no memory: close the connection */
        return MHD_NO;
    return queue(c);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    const listener *l = cls;
    inferd_server *s = l->srv;
    http_conn *c = *req_cls;
    if (!c)
        return;
    unsigned status = c->status ? c->status : 499;
    pthread_mutex_lock(&s->mu);
    s->http_count[c->ep][code_index(status)]++;
    pthread_mutex_unlock(&s->mu);
    if (c->resp)
        MHD_destroy_response(c->resp);
    inferd__gen_free(c->g); /* the connection ended while it ran */
    inferd__waker_destroy(&c->wk);
    size_t body_bytes = c->body.cap;
    inferd_buf_free(&c->body);
    inferd_free(c);
    *req_cls = NULL;
    atomic_fetch_sub(&s->n_active, 1);
    inferd__conn_phase(s, mc, PH_RECEIVING); /* the next request's deadline starts */
    inferd_alloc_released(body_bytes);
}

__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    inferd_server *s = cls;
    unsigned long long more = 0;
    /* libmicrohttpd says something per refused or broken connection: a
     * flood of those is one line a second. */
    if (!inferd_log_allow(&s->mhd_warn, &more))
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (more)
        inferd_log_warn(COMP, "%s (and %llu more libmicrohttpd messages in the last second)", msg,
                        more);
    else
        inferd_log_warn(COMP, "%s", msg);
}

/* ---- life cycle ---- */

inferd_server_opts inferd_server_opts_default(void)
{
    inferd_server_opts o;
    memset(&o, 0, sizeof(o));
    o.host = "127.0.0.1";
    o.port = 8080;
    o.max_body_bytes = 1u << 20;
    o.max_connections = 1024;
    o.conn_timeout_s = 30;
    o.receive_timeout_s = 30;
    o.http_threads = 2;
    return o;
}

static int check_opts(const inferd_server_opts *o, inferd_error *err)
{
    if (o->max_body_bytes < 1024)
        return inferd_fail(err, INFERD_E_INVALID, "max-body: %zu bytes, at least 1024",
                           o->max_body_bytes);
    if (o->max_connections < 1)
        return inferd_fail(err, INFERD_E_INVALID, "max-connections: at least 1");
    if (o->max_client_connections > o->max_connections)
        return inferd_fail(err, INFERD_E_INVALID,
                           "max-client-connections: %u is more than max-connections %u",
                           o->max_client_connections, o->max_connections);
    if (o->receive_timeout_s < 1)
        return inferd_fail(err, INFERD_E_INVALID, "receive-timeout: at least 1 second");
    if (o->http_threads < 1 || o->http_threads > 64)
        return inferd_fail(err, INFERD_E_INVALID, "http-threads: %u, 1..64", o->http_threads);
    if (o->ops_listen && o->ops_port != 0 && o->ops_port == o->port)
        return inferd_fail(err, INFERD_E_INVALID, "ops-port: %u is the HTTP port",
                           (unsigned)o->ops_port);
    return 0;
}

/* Raise the descriptor limit so max_connections sockets fit. */
static void raise_nofile(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)need + 64;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        inferd_log_warn(COMP, "open-file limit %llu is below %u connections + 64",
                        (unsigned long long)rl.rlim_cur, need);
}

/* Connections one listener takes at most (libmicrohttpd closes the rest at
 * once), in all and per client address. */
typedef struct listen_limits {
    unsigned total, per_client, threads;
} listen_limits;

/* Listen on port @p port for @p l; *bound gets the port bound. */
static int start_listener(inferd_server *s, listener *l, uint16_t port, listen_limits lim,
                          struct MHD_Daemon **out, uint16_t *bound, inferd_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", (unsigned)port);
    int gai = getaddrinfo(s->host, ps, &hints, &ai);
    if (gai != 0)
        return inferd_fail(err, INFERD_E_INVALID, "host '%s': %s", s->host, gai_strerror(gai));
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    *out = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, lim.total,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, lim.per_client, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->o.conn_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
        MHD_OPTION_NOTIFY_CONNECTION, inferd__conn_notify, l, MHD_OPTION_THREAD_POOL_SIZE,
        lim.threads, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512u << 10), MHD_OPTION_END);
    int e = errno;
    freeaddrinfo(ai);
    if (!*out)
        return inferd_fail(err, INFERD_E_IO, "cannot listen on %s:%u (%s)", s->host, (unsigned)port,
                           e ? strerror(e) : "libmicrohttpd failed");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(*out, MHD_DAEMON_INFO_BIND_PORT);
    *bound = info ? info->port : port;
    return 0;
}

static int start_daemons(inferd_server *s, inferd_error *err)
{
    s->main_l = (listener){.srv = s, .ops = false};
    s->ops_l = (listener){.srv = s, .ops = true};
    /* Beyond its limits a client gets a few connections more, each
     * answered 503 at once (or an operations route); past those they are
     * closed unanswered. */
    const unsigned reserve = INFERD_SERVER_OPS_RESERVE;
    listen_limits main = {s->o.max_connections + reserve, s->o.max_client_connections + 8,
                          s->o.http_threads};
    raise_nofile(main.total + (s->o.ops_listen ? reserve : 0));
    int rc = start_listener(s, &s->main_l, s->o.port, main, &s->daemon, &s->port, err);
    if (rc == 0 && s->o.ops_listen) {
        listen_limits ops = {reserve, reserve, 1};
        rc = start_listener(s, &s->ops_l, s->o.ops_port, ops, &s->ops_daemon, &s->ops_port, err);
    }
    return rc;
}

int inferd_server_create(const inferd_server_opts *opts, inferd_frontend *fe,
                         inferd_server **out_server, inferd_error *err)
{
    *out_server = NULL;
    inferd_server_opts o = *opts;
    if (o.max_client_connections == 0)
        o.max_client_connections = o.max_connections > 1 ? o.max_connections / 2 : 1;
    int rc = check_opts(&o, err);
    if (rc < 0)
        return rc;
    inferd_server *s = inferd_calloc(1, sizeof(*s));
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
    s->o = o;
    s->fe = fe;
    s->epfd = s->stop_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->guard_mu, NULL);
    pthread_mutex_init(&s->job_mu, NULL);
    pthread_cond_init(&s->job_cv, NULL);
    inferd_cond_init_monotonic(&s->tick_cv);
    atomic_init(&s->n_active, 0);
    atomic_init(&s->n_parked, 0);
    s->t_start_s = inferd_now_s();
    s->host = inferd_strdup(opts->host && *opts->host ? opts->host : "127.0.0.1");
    if (!s->host) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
        goto fail;
    }
    if (opts->api_key && *opts->api_key) {
        s->api_key = inferd_strdup(opts->api_key);
        s->api_key_len = strlen(opts->api_key);
        if (!s->api_key) {
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
            goto fail;
        }
    }
    if (inferd__guard_start(s) < 0 || inferd__jobs_start(s) < 0) {
        rc = inferd_fail(err, INFERD_E_INTERNAL, "cannot start the server's threads: %s",
                         strerror(errno));
        goto fail;
    }
    rc = start_daemons(s, err);
    if (rc < 0)
        goto fail;
    if (pthread_create(&s->ticker, NULL, ticker_main, s) != 0) {
        rc = inferd_fail(err, INFERD_E_INTERNAL, "cannot start the ticker thread");
        goto fail;
    }
    s->ticker_running = true;
    *out_server = s;
    return 0;
fail:
    inferd_server_destroy(s);
    return rc;
}

uint16_t inferd_server_port(const inferd_server *s) { return s->port; }

uint16_t inferd_server_ops_port(const inferd_server *s) { return s->ops_daemon ? s->ops_port : 0; }

void inferd_server_drain(inferd_server *s)
{
    /* The requests have ended; give their connections a moment to answer. */
    for (int i = 0; i < 200 && atomic_load(&s->n_active) > 0; i++)
        inferd_sleep_ms(10);
}

void inferd_server_destroy(inferd_server *s)
{
    if (!s)
        return;
    /* Jobs end first (their connections resume); then every parked
     * connection must have resumed before libmicrohttpd stops. */
    inferd__jobs_stop(s);
    for (int i = 0; i < 500 && atomic_load(&s->n_parked) > 0; i++)
        inferd_sleep_ms(10);
    if (atomic_load(&s->n_parked) > 0)
        inferd_log_error(COMP, "%d connections still wait on requests at shutdown",
                         atomic_load(&s->n_parked));
    if (s->ops_daemon)
        MHD_stop_daemon(s->ops_daemon);
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    inferd__guard_stop(s);
    if (s->ticker_running) {
        pthread_mutex_lock(&s->mu);
        s->tick_stop = true;
        pthread_cond_broadcast(&s->tick_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->ticker, NULL);
    }
    inferd_free(s->host);
    inferd_free(s->api_key);
    pthread_cond_destroy(&s->tick_cv);
    pthread_cond_destroy(&s->job_cv);
    pthread_mutex_destroy(&s->job_mu);
    pthread_mutex_destroy(&s->guard_mu);
    pthread_mutex_destroy(&s->mu);
    inferd_free(s);
}
