/* The HTTP server: its listeners on httpd (http1.c parses, httpd.c serves:
 * epoll and a pool of threads; the operations port beside the main one),
 * bearer authentication, routing, the stages of a request (received, on a
 * job, waiting for its generation, answered), error responses and the
 * per-second ticker. Connections, their limits and parking are conn.c's. */
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
    [EP_V2_SHM] = "/v2/systemsharedmemory",
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
    httpd_resp *r = httpd_resp_buffer(text, len, inferd_free);
    if (!r)
        return;
    if (httpd_resp_header(r, "Content-Type", content_type) < 0 ||
        (status == 503 && httpd_resp_header(r, "Retry-After", "1") < 0)) {
        httpd_resp_free(r);
        return;
    }
    c->resp = r;
    c->status = status;
}

/* @p body (taken) as a line of compact JSON (inferd_free it), or NULL. */
static char *json_line(json_t *body, size_t *out_len)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        inferd_log_error(COMP, "no memory for a response");
        return NULL;
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
    *out_len = n;
    return s;
}

void inferd__http_json(http_conn *c, unsigned status, json_t *body)
{
    size_t n;
    char *s = json_line(body, &n);
    if (s)
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

inferd_regions *inferd_server_regions(const inferd_server *s, bool *on_tcp)
{
    *on_tcp = s->shm_tcp;
    return s->regions;
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
        if (s->regions)
            inferd_regions_sweep(s->regions);
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

/* Where a route runs: here (the connection's HTTP thread), or on a job thread
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
static void do_shm_status(http_conn *c, const char *m, json_t *b)
{
    (void)b;
    inferd__shm_status(c, m);
}
static void do_shm_register(http_conn *c, const char *m, json_t *b)
{
    inferd__shm_register(c, m, b);
}
static void do_shm_create(http_conn *c, const char *m, json_t *b) { inferd__shm_create(c, m, b); }
static void do_shm_unregister(http_conn *c, const char *m, json_t *b)
{
    (void)b;
    inferd__shm_unregister(c, m);
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
    /* {m} below is a shared-memory region's name */
    {{"v2", "systemsharedmemory", "status"}, false, EP_V2_SHM,        NO_BODY,       do_shm_status,  RUN_HERE,           false},
    {{"v2", "systemsharedmemory", "region", "{m}", "status"},
                                             false, EP_V2_SHM,        NO_BODY,       do_shm_status,  RUN_HERE,           false},
    {{"v2", "systemsharedmemory", "region", "{m}", "register"},
                                             true,  EP_V2_SHM,        JSON_BODY,     do_shm_register, RUN_HERE,          false},
    {{"v2", "systemsharedmemory", "region", "{m}", "create"},
                                             true,  EP_V2_SHM,        JSON_BODY,     do_shm_create,  RUN_JOB,            false},
    {{"v2", "systemsharedmemory", "region", "{m}", "unregister"},
                                             true,  EP_V2_SHM,        JSON_OR_EMPTY, do_shm_unregister, RUN_HERE,        false},
    {{"v2", "systemsharedmemory", "unregister"},
                                             true,  EP_V2_SHM,        JSON_OR_EMPTY, do_shm_unregister, RUN_HERE,        false},
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
        httpd_resp_header(c->resp, "Allow", allowed);
}

/* Parse the body as a JSON object, or answer 400. An empty body is {} when
 * @p empty_ok. */
static json_t *body_json(http_conn *c, bool empty_ok)
{
    /* Triton's binary tensor data: the JSON is the first
     * Inference-Header-Content-Length bytes, tensor bytes follow. */
    size_t json_len = c->rq->body_len;
    const http1_str *h = http1_header_get(c->rq->head, "Inference-Header-Content-Length");
    if (h) {
        uint64_t n = 0;
        size_t i = 0;
        for (; i < h->n && h->p[i] >= '0' && h->p[i] <= '9' && n <= c->rq->body_len; i++)
            n = n * 10 + (uint64_t)(h->p[i] - '0');
        if (h->n == 0 || i != h->n || n > c->rq->body_len) {
            inferd__http_error(c, INFERD_E_INVALID, "Inference-Header-Content-Length",
                               "Inference-Header-Content-Length: '%.*s' is not a length within "
                               "the %zu bytes of the body",
                               (int)(h->n < 32 ? h->n : 32), h->p, c->rq->body_len);
            return NULL;
        }
        json_len = (size_t)n;
        c->bin = c->rq->body + json_len;
        c->bin_len = c->rq->body_len - json_len;
    }
    if (json_len == 0) {
        if (empty_ok)
            return json_object();
        inferd__http_error(c, INFERD_E_BAD_JSON, NULL, "the request body is empty (expected JSON)");
        return NULL;
    }
    json_t *j = NULL;
    inferd_error e = {0};
    if (inferd_fe_parse_json(c->rq->body, json_len, &j, &e) < 0) {
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
    const kv_env env = inferd__kserve_env(c);
    if (!inferd__kv_is_identity(&env, m) && inferd__server_find_model(c, m) < 0)
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
static bool authorized(const inferd_server *s, const httpd_req *rq)
{
    const http1_str *v = http1_header_get(rq->head, "Authorization");
    if (!v || v->n < 7 || strncasecmp(v->p, "Bearer ", 7) != 0)
        return false;
    size_t i = 7;
    while (i < v->n && v->p[i] == ' ')
        i++;
    const char *h = v->p + i;
    size_t n = v->n - i;
    unsigned char diff = (unsigned char)(n != s->api_key_len);
    for (size_t k = 0; k < s->api_key_len; k++)
        diff |= (unsigned char)(s->api_key[k] ^ (k < n ? h[k] : 0));
    return diff == 0;
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

/* Queue c's response; -1 (close the connection) when there is none. */
static int queue(http_conn *c)
{
    if (!c->resp) {
        c->status = 500;
        return -1;
    }
    if (c->close)
        httpd_resp_header(c->resp, "Connection", "close");
    httpd_queue(c->hc, c->status, c->resp);
    c->resp = NULL;
    c->queued = true;
    return 0;
}

/* The first call for a request (its head is in): checks that need no
 * body. */
static int on_head(http_conn *c, const char *url)
{
    inferd_server *s = c->srv;
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
    return 0;
}

/* The whole request is in: answer it, or start what answers it. */
static void on_received(http_conn *c, const char *url, const char *method)
{
    inferd_server *s = c->srv;
    inferd__conn_phase(s, c->hc, PH_HANDLING);
    if (s->api_key && !is_health_probe(url) && !authorized(s, c->rq)) {
        inferd__http_error(c, INFERD_E_UNAUTHORIZED, NULL,
                           "missing or wrong API key (send 'Authorization: Bearer KEY')");
        if (c->resp)
            httpd_resp_header(c->resp, "WWW-Authenticate", "Bearer");
    } else {
        route(c, url, method);
    }
}

static int on_request(void *lcls, httpd_conn *hc, const httpd_req *rq, httpd_call call,
                      void **req_ctx)
{
    const listener *l = lcls;
    inferd_server *s = l->srv;
    http_conn *c = *req_ctx;
    const char *url = rq->path;
    if (!c) {
        c = inferd_calloc(1, sizeof(*c));
        if (!c)
            return -1;
        c->srv = s;
        c->l = l;
        c->hc = hc;
        c->rq = rq;
        c->t_start_ns = inferd_now_ns();
        c->stage = ST_NEW;
        inferd__waker_init(&c->wk, s, hc);
        *req_ctx = c;
        atomic_fetch_add(&s->n_active, 1);
        c->api = strncmp(url, "/v2", 3) == 0 ? API_KSERVE : API_OPENAI;
    }
    if (call == HTTPD_CALL_HEAD)
        return on_head(c, url);
    if (c->queued) /* answered already */
        return 0;
    for (;;) {
        switch (c->stage) {
        case ST_NEW:
            on_received(c, url, rq->method);
            if (c->stage == ST_NEW)
                c->stage = c->g ? ST_GEN : ST_DONE;
            continue;
        case ST_JOB:
            if (!inferd__waker_fired(&c->wk)) {
                if (inferd__waker_sleep(&c->wk))
                    return 0;
                continue;
            }
            c->stage = c->g ? ST_GEN : ST_DONE;
            continue;
        case ST_GEN:
            if (!inferd__gen_pump(c))
                return 0; /* parked until its next event */
            c->stage = ST_DONE;
            continue;
        case ST_DONE: break;
        }
        break;
    }
    return queue(c); /* no response: the client left, or no memory */
}

static void on_completed(void *lcls, httpd_conn *hc, void *req_ctx, unsigned status)
{
    const listener *l = lcls;
    inferd_server *s = l->srv;
    http_conn *c = req_ctx;
    if (!c) { /* refused by httpd before routing (a malformed request) */
        pthread_mutex_lock(&s->mu);
        s->http_count[EP_NONE][code_index(status)]++;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (status == 0) /* the connection ended first */
        status = c->status && !c->queued ? c->status : 499;
    pthread_mutex_lock(&s->mu);
    s->http_count[c->ep][code_index(status)]++;
    pthread_mutex_unlock(&s->mu);
    httpd_resp_free(c->resp);
    inferd__gen_free(c->g); /* the connection ended while it ran */
    inferd__waker_destroy(&c->wk);
    inferd_free(c);
    atomic_fetch_sub(&s->n_active, 1);
    inferd__conn_phase(s, hc, PH_RECEIVING); /* the next request's deadline starts */
}

/* httpd refuses a malformed request: the error as the route's API says it. */
static httpd_resp *on_refused(void *lcls, unsigned status, const char *url, const char *why)
{
    (void)lcls;
    int code = status == 413 || status == 431 ? INFERD_E_TOO_LARGE
               : status == 505                ? INFERD_E_UNSUPPORTED
               : status == 500                ? INFERD_E_NOMEM
                                              : INFERD_E_INVALID;
    inferd_error e = {0};
    inferd_fail(&e, code, "%s: the request is refused", why);
    json_t *o = url && strncmp(url, "/v2", 3) == 0 ? inferd_fe_error_kserve(&e)
                                                   : inferd_fe_error_openai(&e);
    size_t n;
    char *t = json_line(o, &n);
    if (!t)
        return NULL;
    httpd_resp *r = httpd_resp_buffer(t, n, inferd_free);
    if (r && httpd_resp_header(r, "Content-Type", "application/json") < 0) {
        httpd_resp_free(r);
        r = NULL;
    }
    return r;
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
    o.unix_mode = 0600;
    o.shm_mode = -1;
    o.shm_ttl_s = 600;
    o.shm_max_regions = 1024;
    o.shm_max_bytes = (uint64_t)1 << 30;
    o.shm_session_regions = 64;
    o.shm_session_bytes = (uint64_t)256 << 20;
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
    if (o->unix_path && o->unix_mode > 0777)
        return inferd_fail(err, INFERD_E_INVALID, "unix-mode: %o is not a file mode (0..0777)",
                           o->unix_mode);
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

/* Is @p host a loopback address (only local processes reach it)? */
static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The shared-memory regions, unless --shm off. */
static int start_shm(inferd_server *s, inferd_error *err)
{
    inferd_shm_caps_detect(&s->shm_caps);
    if (s->o.shm_mode == 0)
        return 0;
    s->shm_tcp = s->o.shm_mode == 1 || is_loopback(s->host);
    inferd_regions_opts ro = inferd_regions_opts_default();
    ro.ttl_ms = (uint64_t)s->o.shm_ttl_s * 1000u;
    ro.max_regions = s->o.shm_max_regions;
    ro.max_bytes = s->o.shm_max_bytes;
    ro.session_regions = s->o.shm_session_regions;
    ro.session_bytes = s->o.shm_session_bytes;
    return inferd_regions_create(&ro, &s->regions, err);
}

/* The HTTP server and its listeners: the main port takes max_connections
 * and a reserve (answered 503 beyond the limits, or an operations route);
 * the operations port the reserve alone. More are closed as accepted. */
static int start_http(inferd_server *s, inferd_error *err)
{
    s->main_l = (listener){.srv = s, .ops = false};
    s->ops_l = (listener){.srv = s, .ops = true};
    s->unix_l = (listener){.srv = s, .is_unix = true};
    const unsigned reserve = INFERD_SERVER_OPS_RESERVE;
    raise_nofile(s->o.max_connections + reserve + (s->o.ops_listen ? reserve : 0));
    const httpd_opts ho = {.threads = s->o.http_threads,
                           .idle_timeout_s = s->o.conn_timeout_s,
                           .max_head = SERVER_HEAD_MAX,
                           .max_body = s->o.max_body_bytes};
    const httpd_ops ops = {.opened = inferd__conn_opened,
                           .closed = inferd__conn_closed,
                           .request = on_request,
                           .completed = on_completed,
                           .refused = on_refused};
    int fd;
    int rc = httpd_create(&ho, &ops, &s->http, err);
    if (rc == 0)
        rc = httpd_tcp_socket(s->host, s->o.port, &fd, &s->port, err);
    if (rc == 0)
        rc = httpd_listen(s->http, fd, s->o.max_connections + reserve, &s->main_l, err);
    if (rc == 0 && s->o.ops_listen) {
        rc = httpd_tcp_socket(s->host, s->o.ops_port, &fd, &s->ops_port, err);
        if (rc == 0)
            rc = httpd_listen(s->http, fd, reserve, &s->ops_l, err);
        s->ops_listening = rc == 0;
    }
    if (rc == 0 && s->o.unix_path) {
        /* The same routes and limits as the main port; each local user is
         * a client address of its own (conn.c). */
        rc = httpd_unix_socket(s->o.unix_path, s->o.unix_mode, &fd, &s->unix_ino, err);
        if (rc == 0 && !(s->unix_path = inferd_strdup(s->o.unix_path))) {
            close(fd);
            httpd_unix_unlink(s->o.unix_path, s->unix_ino);
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
        }
        if (rc == 0)
            rc = httpd_listen(s->http, fd, s->o.max_connections + reserve, &s->unix_l, err);
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
    for (size_t i = 0; i < o.n_identity && i < 8 && rc == 0; i++) {
        if (!(s->identity[i] = inferd_strdup(o.identity[i])))
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
        s->n_identity = i + 1;
    }
    if (rc == 0)
        rc = start_shm(s, err);
    if (rc == 0)
        rc = start_http(s, err);
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

uint16_t inferd_server_ops_port(const inferd_server *s)
{
    return s->ops_listening ? s->ops_port : 0;
}

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
     * connection must have resumed before the HTTP server stops. */
    inferd__jobs_stop(s);
    for (int i = 0; i < 500 && atomic_load(&s->n_parked) > 0; i++)
        inferd_sleep_ms(10);
    if (atomic_load(&s->n_parked) > 0)
        inferd_log_error(COMP, "%d connections still wait on requests at shutdown",
                         atomic_load(&s->n_parked));
    httpd_destroy(s->http);
    if (s->unix_path)
        httpd_unix_unlink(s->unix_path, s->unix_ino);
    inferd_free(s->unix_path);
    inferd__guard_stop(s);
    if (s->ticker_running) {
        pthread_mutex_lock(&s->mu);
        s->tick_stop = true;
        pthread_cond_broadcast(&s->tick_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->ticker, NULL);
    }
    /* The regions go after the ticker, which sweeps them. */
    inferd_regions_destroy(s->regions);
    for (size_t i = 0; i < s->n_identity; i++)
        inferd_free(s->identity[i]);
    inferd_free(s->host);
    inferd_free(s->api_key);
    pthread_cond_destroy(&s->tick_cv);
    pthread_cond_destroy(&s->job_cv);
    pthread_mutex_destroy(&s->job_mu);
    pthread_mutex_destroy(&s->guard_mu);
    pthread_mutex_destroy(&s->mu);
    inferd_free(s);
}
