/* The HTTP server: libmicrohttpd daemon (one thread per connection), body
 * reading with a limit, bearer authentication, routing, error responses,
 * the served models, state and the per-second ticker. */
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
typedef void (*route_fn)(http_conn *c, const char *m, json_t *body);

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
} route_def;

static const route_def routes[] = {
    {{"health"}, false, EP_HEALTH, NO_BODY, do_health},
    {{"metrics"}, false, EP_METRICS, NO_BODY, do_metrics},
    {{"v1", "status"}, false, EP_STATUS, NO_BODY, do_status},
    {{"v1", "models"}, false, EP_MODELS, NO_BODY, do_models},
    {{"v1", "models", "{m}"}, false, EP_MODELS, NO_BODY, do_models},
    {{"v1", "completions"}, true, EP_COMPLETIONS, JSON_BODY, do_completions},
    {{"v1", "chat", "completions"}, true, EP_CHAT, JSON_BODY, do_chat},
    {{"v2"}, false, EP_V2_SERVER, NO_BODY, do_v2},
    {{"v2", "health", "live"}, false, EP_V2_HEALTH, NO_BODY, do_live},
    {{"v2", "health", "ready"}, false, EP_V2_HEALTH, NO_BODY, do_ready},
    {{"v2", "models", "{m}"}, false, EP_V2_MODEL, NO_BODY, do_model},
    {{"v2", "models", "{m}", "ready"}, false, EP_V2_MODEL, NO_BODY, do_model_ready},
    {{"v2", "models", "{m}", "infer"}, true, EP_V2_INFER, JSON_BODY, do_infer},
    {{"v2", "repository", "index"}, true, EP_V2_REPOSITORY, JSON_OR_EMPTY, do_index},
    {{"v2", "repository", "models", "{m}", "load"}, true, EP_V2_REPOSITORY, JSON_OR_EMPTY, do_load},
    {{"v2", "repository", "models", "{m}", "unload"},
     true,
     EP_V2_REPOSITORY,
     JSON_OR_EMPTY,
     do_unload},
};
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
    for (size_t i = 0; i < N_ROUTES && !p.too_long; i++) {
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
    found->fn(c, m[0] ? m : NULL, body);
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
    MHD_destroy_response(c->resp);
    c->resp = NULL;
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    (void)version;
    inferd_server *s = cls;
    http_conn *c = *req_cls;
    if (!c) {
        c = inferd_calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        c->srv = s;
        c->mc = mc;
        c->t_start_ns = inferd_now_ns();
        *req_cls = c;
        atomic_fetch_add(&s->n_active, 1);
        c->api = strncmp(url, "/v2", 3) == 0 ? API_KSERVE : API_OPENAI;
        c->body = INFERD_BUF_INIT(s->o.max_body_bytes);
        framing fr = {0};
        MHD_get_connection_values_n(mc, MHD_HEADER_KIND, read_framing, &fr);
        const char *bad = framing_problem(&fr);
        if (bad) {
            /* RFC 9112 6.3: a message whose length is ambiguous is refused
             * and the connection closed, so nothing in its body is taken
             * for another request. */
            c->close = true;
            inferd__http_error(c, INFERD_E_INVALID, NULL, "%s: the request is refused", bad);
            return queue(c);
        }
        const char *cl =
            MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body_bytes) {
            c->close = true;
            inferd__http_error(c, INFERD_E_TOO_LARGE, NULL,
                               "the request body of %s bytes exceeds the limit of %zu", cl,
                               s->o.max_body_bytes);
            return queue(c);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        /* A body without Content-Length (chunked) past the limit: libmicrohttpd
         * answers only once the upload ends, so the rest is read and dropped;
         * past 4 times the limit the connection is closed unanswered. */
        if (!c->too_large &&
            inferd_buf_add(&c->body, upload_data, *upload_data_size) == INFERD_E_RANGE) {
            c->too_large = true;
            inferd_buf_free(&c->body);
        }
        if (c->too_large) {
            c->dropped += *upload_data_size;
            *upload_data_size = 0;
            return c->dropped > 4 * (uint64_t)s->o.max_body_bytes ? MHD_NO : MHD_YES;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->status) /* answered already (the early 413) */
        return MHD_YES;
    if (c->too_large) {
        c->close = true;
        inferd__http_error(c, INFERD_E_TOO_LARGE, NULL,
                           "the request body exceeds the limit of %zu bytes", s->o.max_body_bytes);
        return queue(c);
    }
    if (c->body.err) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the request body");
        return queue(c);
    }
    if (s->api_key && !is_health_probe(url) && !authorized(s, mc)) {
        inferd__http_error(c, INFERD_E_UNAUTHORIZED, NULL,
                           "missing or wrong API key (send 'Authorization: Bearer KEY')");
        if (c->resp)
            MHD_add_response_header(c->resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        return queue(c);
    }
    route(c, url, method);
    if (c->streamed)
        return MHD_YES;
    if (!c->resp) /* the client left, or no memory: close the connection */
        return MHD_NO;
    return queue(c);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    (void)toe;
    inferd_server *s = cls;
    http_conn *c = *req_cls;
    if (!c)
        return;
    unsigned status = c->status ? c->status : 499;
    pthread_mutex_lock(&s->mu);
    s->http_count[c->ep][code_index(status)]++;
    pthread_mutex_unlock(&s->mu);
    if (c->resp)
        MHD_destroy_response(c->resp);
    inferd_buf_free(&c->body);
    inferd_free(c);
    *req_cls = NULL;
    atomic_fetch_sub(&s->n_active, 1);
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
    return o;
}

static int check_opts(const inferd_server_opts *o, inferd_error *err)
{
    if (o->max_body_bytes < 1024)
        return inferd_fail(err, INFERD_E_INVALID, "max-body: %zu bytes, at least 1024",
                           o->max_body_bytes);
    if (o->max_connections < 1)
        return inferd_fail(err, INFERD_E_INVALID, "max-connections: at least 1");
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
        inferd_log_warn(COMP, "open-file limit %llu is below max-connections %u + 64",
                        (unsigned long long)rl.rlim_cur, need);
}

static int start_daemon(inferd_server *s, inferd_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)s->o.port);
    int gai = getaddrinfo(s->host, port, &hints, &ai);
    if (gai != 0)
        return inferd_fail(err, INFERD_E_INVALID, "host '%s': %s", s->host, gai_strerror(gai));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    raise_nofile(s->o.max_connections);
    s->daemon =
        MHD_start_daemon(flags, s->o.port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                         mhd_log, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)s->o.conn_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                         s, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512u << 10), MHD_OPTION_END);
    int e = errno;
    freeaddrinfo(ai);
    if (!s->daemon)
        return inferd_fail(err, INFERD_E_IO, "cannot listen on %s:%u (%s)", s->host,
                           (unsigned)s->o.port, e ? strerror(e) : "libmicrohttpd failed");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->o.port;
    return 0;
}

int inferd_server_create(const inferd_server_opts *opts, inferd_frontend *fe,
                         inferd_server **out_server, inferd_error *err)
{
    *out_server = NULL;
    int rc = check_opts(opts, err);
    if (rc < 0)
        return rc;
    inferd_server *s = inferd_calloc(1, sizeof(*s));
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
    s->o = *opts;
    s->fe = fe;
    pthread_mutex_init(&s->mu, NULL);
    inferd_cond_init_monotonic(&s->tick_cv);
    atomic_init(&s->n_active, 0);
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
    rc = start_daemon(s, err);
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
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
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
    pthread_mutex_destroy(&s->mu);
    inferd_free(s);
}
