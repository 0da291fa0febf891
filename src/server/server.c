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
#include "inferd/log.h"

#define COMP "http"

const char *const server_endpoint_names[EP_COUNT] = {
    [EP_NONE] = "other",          [EP_HEALTH] = "/health",
    [EP_METRICS] = "/metrics",    [EP_STATUS] = "/v1/status",
    [EP_MODELS] = "/v1/models",   [EP_COMPLETIONS] = "/v1/completions",
    [EP_CHAT] = "/v1/chat/completions",
    [EP_V2_SERVER] = "/v2",       [EP_V2_HEALTH] = "/v2/health",
    [EP_V2_MODEL] = "/v2/models/{m}", [EP_V2_INFER] = "/v2/models/{m}/infer",
    [EP_V2_REPOSITORY] = "/v2/repository",
};

const unsigned server_http_codes[HTTP_CODES_N] = {
    200, 400, 401, 404, 405, 408, 409, 413, 415, 422, 499, 500, 501, 503, 504, 507,
};

const char *server_state_name(server_state st)
{
    static const char *const names[] = {"loading", "ready", "draining", "stopped"};
    return (unsigned)st < 4 ? names[st] : "?";
}

uint64_t server_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double server_now_s(void)
{
    return (double)server_now_ns() / 1e9;
}

/* ---- sbuf ---- */

void sbuf_add(sbuf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void sbuf_addf(sbuf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        sbuf_add(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->failed = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sbuf_add(b, big, (size_t)n);
    free(big);
}

void sbuf_free(sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- responses ---- */

void http_text(http_conn *c, unsigned status, const char *content_type, char *text, size_t len)
{
    if (c->resp) { /* a handler answers once; keep the first */
        free(text);
        return;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer_with_free_callback(len, text, free);
    if (!r) {
        free(text);
        return;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    c->resp = r;
    c->status = status;
}

void http_json(http_conn *c, unsigned status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        inferd_log_error(COMP, "no memory for a response");
        return;
    }
    size_t n = strlen(s);
    /* A newline ends the body, as curl users expect. */
    char *t = realloc(s, n + 2);
    if (t) {
        t[n] = '\n';
        t[n + 1] = '\0';
        s = t;
        n++;
    }
    http_text(c, status, "application/json", s, n);
}

const char *server_openai_type(unsigned status)
{
    if (status == 401)
        return "authentication_error";
    if (status == 404)
        return "not_found_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

void http_error(http_conn *c, unsigned status, const char *code, const char *param,
                const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o;
    if (c->api == API_KSERVE) {
        o = json_pack("{s:s}", "error", msg);
    } else {
        o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", msg, "type",
                      server_openai_type(status), "param", param ? json_string(param) : json_null(),
                      "code", code ? json_string(code) : json_null());
    }
    http_json(c, status, o);
}

void http_error_code(http_conn *c, int code, const char *param, const char *msg)
{
    unsigned status = (unsigned)inferd_error_http_status(code);
    const char *wire = inferd_error_wire_code(code);
    if (code == INFERD_E_INVALID && strncmp(msg, "prompt: ", 8) == 0 && strstr(msg, "context"))
        wire = "context_length_exceeded";
    else if (code == INFERD_E_INVALID || code == INFERD_E_RANGE)
        wire = "invalid_value";
    http_error(c, status, wire, param, "%s", msg);
}

void http_req_error(http_conn *c, const req_err *e)
{
    http_error(c, e->status, e->code, e->param, "%s", e->msg);
}

/* ---- models ---- */

served *server_find_model(http_conn *c, const char *id)
{
    inferd_server *s = c->srv;
    if (!id)
        return &s->models[0];
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].id, id) == 0)
            return &s->models[i];
    http_error(c, 404, "model_not_found", "model", "model '%s' is not served here (see %s)", id,
               c->api == API_KSERVE ? "/v2/repository/index" : "/v1/models");
    return NULL;
}

inferd_chat_template server_model_template(inferd_server *s, served *sm, const inferd_model *m)
{
    pthread_mutex_lock(&sm->mu);
    if (!sm->tmpl_ready) {
        sm->tmpl = INFERD_CHAT_CHATML;
        if (s->tmpl_forced) {
            sm->tmpl = s->tmpl_force;
        } else {
            inferd_gguf_str src = {0};
            inferd_error e = {0};
            const inferd_gguf *g = inferd_model_get_gguf(m);
            char *text = NULL;
            if (inferd_gguf_get_str(g, "tokenizer.chat_template", &src, &e) == 0)
                text = inferd_strndup(src.ptr, (size_t)src.len);
            if (!text) {
                inferd_log_info(COMP, "model '%s' has no chat template: using chatml", sm->id);
            } else if (inferd_chat_template_detect(text, &sm->tmpl) != 0) {
                sm->tmpl = INFERD_CHAT_CHATML;
                inferd_log_warn(COMP,
                                "model '%s': unknown chat template (%zu bytes), using chatml",
                                sm->id, (size_t)src.len);
            } else {
                inferd_log_info(COMP, "model '%s': chat template %s", sm->id,
                                inferd_chat_template_name(sm->tmpl));
            }
            inferd_free(text);
        }
        sm->tmpl_ready = true;
    }
    inferd_chat_template t = sm->tmpl;
    pthread_mutex_unlock(&sm->mu);
    return t;
}

/* ---- counters ---- */

static unsigned code_index(unsigned status)
{
    for (unsigned i = 0; i < HTTP_CODES_N; i++)
        if (server_http_codes[i] == status)
            return i;
    return HTTP_CODES_N;
}

void server_count_generation(inferd_server *s, uint32_t n_gen, double overhead_s,
                             bool has_overhead)
{
    pthread_mutex_lock(&s->mu);
    s->gen_tokens += n_gen;
    s->gen_requests++;
    if (has_overhead) {
        s->overhead_sum_s += overhead_s;
        s->overhead_n++;
        s->overhead_win[s->overhead_next] = overhead_s;
        s->overhead_next = (s->overhead_next + 1) % OVERHEAD_WINDOW;
        if (s->overhead_filled < OVERHEAD_WINDOW)
            s->overhead_filled++;
    }
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
        pthread_mutex_lock(&s->mu);
        tick *t = &s->ticks[s->tick_next];
        t->t_s = server_now_s();
        t->cpu_s = ps.cpu_user_s + ps.cpu_system_s;
        t->tokens_out = s->gen_tokens;
        t->requests = s->gen_requests;
        s->tick_next = (s->tick_next + 1) % TICKS_N;
        if (s->tick_filled < TICKS_N)
            s->tick_filled++;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        while (!s->tick_stop && pthread_cond_timedwait(&s->tick_cv, &s->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- routing ---- */

static bool path_is(const char *url, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncmp(url, prefix, n) != 0)
        return false;
    *rest = url + n;
    return true;
}

/* Copy the path segment at @p p (up to '/' or the end) into @p out; returns
 * the position after it. */
static const char *segment(const char *p, char *out, size_t cap)
{
    size_t n = 0;
    while (p[n] && p[n] != '/')
        n++;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    while (*p && *p != '/')
        p++;
    return p;
}

static void method_not_allowed(http_conn *c, const char *method, const char *allowed)
{
    http_error(c, 405, "method_not_allowed", NULL, "%s is not allowed here (allowed: %s)",
               method, allowed);
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
        http_error(c, 400, "invalid_json", NULL, "the request body is empty (expected JSON)");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(c->body.p, c->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        http_error(c, 400, "invalid_json", NULL, "invalid JSON at line %d column %d: %s",
                   je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        http_error(c, 400, "invalid_json", NULL, "the request body must be a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

static bool is_get(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

/* Route a complete request. */
static void route(http_conn *c, const char *url, const char *method)
{
    const char *rest;
    const bool get = is_get(method), post = strcmp(method, "POST") == 0;

    if (strcmp(url, "/health") == 0) {
        c->ep = EP_HEALTH;
        get ? ops_health(c) : method_not_allowed(c, method, "GET, HEAD");
    } else if (strcmp(url, "/metrics") == 0) {
        c->ep = EP_METRICS;
        get ? ops_metrics(c) : method_not_allowed(c, method, "GET, HEAD");
    } else if (strcmp(url, "/v1/status") == 0) {
        c->ep = EP_STATUS;
        get ? ops_status(c) : method_not_allowed(c, method, "GET, HEAD");
    } else if (strcmp(url, "/v1/models") == 0) {
        c->ep = EP_MODELS;
        get ? openai_models(c, NULL) : method_not_allowed(c, method, "GET, HEAD");
    } else if (path_is(url, "/v1/models/", &rest) && *rest) {
        c->ep = EP_MODELS;
        get ? openai_models(c, rest) : method_not_allowed(c, method, "GET, HEAD");
    } else if (strcmp(url, "/v1/completions") == 0 || strcmp(url, "/v1/chat/completions") == 0) {
        const bool chat = url[4] == 'c' && url[5] == 'h';
        c->ep = chat ? EP_CHAT : EP_COMPLETIONS;
        if (!post) {
            method_not_allowed(c, method, "POST");
            return;
        }
        json_t *body = body_json(c, false);
        if (!body)
            return;
        chat ? openai_chat(c, body) : openai_completions(c, body);
        json_decref(body);
    } else if (strcmp(url, "/v2") == 0 || strcmp(url, "/v2/") == 0) {
        c->ep = EP_V2_SERVER;
        get ? kserve_server(c) : method_not_allowed(c, method, "GET, HEAD");
    } else if (strcmp(url, "/v2/health/live") == 0 || strcmp(url, "/v2/health/ready") == 0) {
        c->ep = EP_V2_HEALTH;
        get ? kserve_health(c, url[11] == 'r') : method_not_allowed(c, method, "GET, HEAD");
    } else if (path_is(url, "/v2/models/", &rest) && *rest) {
        char m[INFERD_REGISTRY_ID_MAX], what[32] = "", ver[32] = "";
        rest = segment(rest, m, sizeof(m));
        if (strncmp(rest, "/versions/", 10) == 0) {
            rest = segment(rest + 10, ver, sizeof(ver));
            c->ep = EP_V2_MODEL;
            if (!server_find_model(c, m))
                return;
            if (strcmp(ver, "1") != 0) {
                http_error(c, 404, "not_found", NULL, "model '%s' has no version '%s' (only 1)",
                           m, ver);
                return;
            }
        }
        if (*rest == '/')
            segment(rest + 1, what, sizeof(what));
        else if (*rest)
            what[0] = '?';
        if (strcmp(what, "infer") == 0) {
            c->ep = EP_V2_INFER;
            if (!post) {
                method_not_allowed(c, method, "POST");
                return;
            }
            json_t *body = body_json(c, false);
            if (body)
                kserve_infer(c, m, body);
            json_decref(body);
        } else if (what[0] == '\0' || strcmp(what, "ready") == 0) {
            c->ep = EP_V2_MODEL;
            get ? kserve_model(c, m, what) : method_not_allowed(c, method, "GET, HEAD");
        } else {
            c->ep = EP_V2_MODEL;
            http_error(c, 404, "not_found", NULL, "no route %s", url);
        }
    } else if (strcmp(url, "/v2/repository/index") == 0) {
        c->ep = EP_V2_REPOSITORY;
        if (!post) {
            method_not_allowed(c, method, "POST");
            return;
        }
        json_t *body = body_json(c, true);
        if (body)
            kserve_repository_index(c, body);
        json_decref(body);
    } else if (path_is(url, "/v2/repository/models/", &rest) && *rest) {
        char m[INFERD_REGISTRY_ID_MAX], what[32] = "";
        rest = segment(rest, m, sizeof(m));
        if (*rest == '/')
            segment(rest + 1, what, sizeof(what));
        c->ep = EP_V2_REPOSITORY;
        if (strcmp(what, "load") != 0 && strcmp(what, "unload") != 0) {
            http_error(c, 404, "not_found", NULL, "no route %s", url);
        } else if (!post) {
            method_not_allowed(c, method, "POST");
        } else {
            json_t *body = body_json(c, true); /* parameters are accepted and unused */
            if (body)
                kserve_repository_load(c, m, what[0] == 'l');
            json_decref(body);
        }
    } else {
        c->ep = EP_NONE;
        http_error(c, 404, "not_found", NULL, "no route %s %s", method, url);
    }
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
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    inferd_server *s = cls;
    http_conn *c = *req_cls;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        c->srv = s;
        c->mc = mc;
        c->t_start_ns = server_now_ns();
        *req_cls = c;
        atomic_fetch_add(&s->n_active, 1);
        c->api = strncmp(url, "/v2", 3) == 0 ? API_KSERVE : API_OPENAI;
        const char *cl =
            MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body_bytes) {
            c->close = true;
            http_error(c, 413, "request_too_large", NULL,
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
        if (!c->too_large && c->body.len + *upload_data_size > s->o.max_body_bytes)
            c->too_large = true;
        if (c->too_large) {
            c->dropped += *upload_data_size;
            *upload_data_size = 0;
            return c->dropped > 4 * (uint64_t)s->o.max_body_bytes ? MHD_NO : MHD_YES;
        }
        sbuf_add(&c->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->status) /* answered already (the early 413) */
        return MHD_YES;
    if (c->too_large) {
        c->close = true;
        http_error(c, 413, "request_too_large", NULL,
                   "the request body exceeds the limit of %zu bytes", s->o.max_body_bytes);
        return queue(c);
    }
    if (c->body.failed) {
        http_error(c, 500, "internal", NULL, "no memory for the request body");
        return queue(c);
    }
    if (s->api_key && !is_health_probe(url) && !authorized(s, mc)) {
        http_error(c, 401, "invalid_api_key", NULL,
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
    sbuf_free(&c->body);
    free(c);
    *req_cls = NULL;
    atomic_fetch_sub(&s->n_active, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
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
    o.model_opts = inferd_registry_model_opts_default();
    o.drain_grace_ms = 30000;
    return o;
}

/* The id a model is served as: its alias, or its file name without .gguf. */
static int model_id(const inferd_server_model *m, char *out, size_t cap, inferd_error *err)
{
    const char *id = m->alias;
    size_t n;
    if (id && *id) {
        n = strlen(id);
    } else {
        const char *slash = strrchr(m->path, '/');
        id = slash ? slash + 1 : m->path;
        n = strlen(id);
        if (n > 5 && strcmp(id + n - 5, ".gguf") == 0)
            n -= 5;
    }
    if (n == 0 || n >= cap)
        return inferd_fail(err, INFERD_E_INVALID, "model '%s': its id must be 1..%zu bytes",
                           m->path, cap - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || id[i] == '/' || (unsigned char)id[i] == 0x7f)
            return inferd_fail(err, INFERD_E_INVALID,
                               "model id '%.*s': no spaces, '/' or control characters", (int)n,
                               id);
    memcpy(out, id, n);
    out[n] = '\0';
    return 0;
}

static int check_opts(const inferd_server_opts *o, inferd_error *err)
{
    if (o->n_models == 0)
        return inferd_fail(err, INFERD_E_INVALID, "no model: give at least one (-m FILE)");
    if (o->n_models > INFERD_SERVER_MODELS_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "models: %zu given, at most %d", o->n_models,
                           INFERD_SERVER_MODELS_MAX);
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
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
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
    s->daemon = MHD_start_daemon(
        flags, s->o.port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->o.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.conn_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)(512u << 10), MHD_OPTION_END);
    int e = errno;
    freeaddrinfo(ai);
    if (!s->daemon)
        return inferd_fail(err, INFERD_E_IO, "cannot listen on %s:%u (%s)", s->host,
                           (unsigned)s->o.port, e ? strerror(e) : "libmicrohttpd failed");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : s->o.port;
    return 0;
}

int inferd_server_create(const inferd_server_opts *opts, inferd_server **out_server,
                         inferd_error *err)
{
    *out_server = NULL;
    int rc = check_opts(opts, err);
    if (rc < 0)
        return rc;
    inferd_server *s = calloc(1, sizeof(*s));
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
    s->o = *opts;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->tick_cv, NULL);
    atomic_init(&s->state, SERVER_LOADING);
    atomic_init(&s->n_active, 0);
    s->t_start_s = server_now_s();
    s->host = strdup(opts->host && *opts->host ? opts->host : "127.0.0.1");
    s->models = calloc(opts->n_models, sizeof(served));
    if (!s->host || !s->models) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
        goto fail;
    }
    if (opts->api_key && *opts->api_key) {
        s->api_key = strdup(opts->api_key);
        s->api_key_len = strlen(opts->api_key);
        if (!s->api_key) {
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
            goto fail;
        }
    }
    if (opts->chat_template) {
        if (inferd_chat_template_parse(opts->chat_template, &s->tmpl_force) != 0) {
            char names[512] = "";
            size_t len = 0;
            for (int t = 0; t < INFERD_CHAT_TEMPLATE_COUNT && len < sizeof(names); t++)
                len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", t ? ", " : "",
                                        inferd_chat_template_name((inferd_chat_template)t));
            rc = inferd_fail(err, INFERD_E_INVALID, "chat-template: '%s' is not one of %s",
                             opts->chat_template, names);
            goto fail;
        }
        s->tmpl_forced = true;
    }
    for (size_t i = 0; i < opts->n_models; i++) {
        served *sm = &s->models[i];
        pthread_mutex_init(&sm->mu, NULL);
        s->n_models = i + 1;
        if (!opts->models[i].path) {
            rc = inferd_fail(err, INFERD_E_INVALID, "model %zu has no path", i + 1);
            goto fail;
        }
        rc = model_id(&opts->models[i], sm->id, sizeof(sm->id), err);
        if (rc < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->models[j].id, sm->id) == 0) {
                rc = inferd_fail(err, INFERD_E_INVALID,
                                 "model id '%s' is given twice (use --alias to tell them apart)",
                                 sm->id);
                goto fail;
            }
        sm->path = strdup(opts->models[i].path);
        if (!sm->path) {
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the server");
            goto fail;
        }
        struct stat st;
        if (stat(sm->path, &st) != 0 || access(sm->path, R_OK) != 0) {
            rc = inferd_fail(err, INFERD_E_IO, "model '%s': cannot read %s: %s", sm->id,
                             sm->path, strerror(errno));
            goto fail;
        }
        sm->created_s = (int64_t)st.st_mtime;
    }
    inferd_registry_opts ro = inferd_registry_opts_default();
    ro.budget_bytes = opts->budget_bytes;
    ro.reaper_interval_ms = 1000;
    rc = inferd_registry_create(&ro, &s->reg, err);
    if (rc < 0)
        goto fail;
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

uint16_t inferd_server_port(const inferd_server *s)
{
    return s->port;
}

int server_get_model(inferd_server *s, served *sm, inferd_registry_handle **h,
                     inferd_error *err)
{
    inferd_registry_model_opts mo = s->o.model_opts;
    mo.path = sm->path;
    int rc = inferd_registry_get_or_load(s->reg, sm->id, &mo, h, err);
    /* A failed load (not a refusal while unloading) degrades the worker
     * until a load succeeds. */
    if (rc == 0 || (rc != INFERD_E_BUSY && rc != INFERD_E_UNAVAILABLE && rc != INFERD_E_OVERLOADED))
        atomic_store(&sm->load_failed, rc != 0);
    return rc;
}

int inferd_server_load_models(inferd_server *s, inferd_error *err)
{
    for (size_t i = 0; i < s->n_models; i++) {
        served *sm = &s->models[i];
        inferd_registry_handle *h = NULL;
        double t0 = server_now_s();
        int rc = server_get_model(s, sm, &h, err);
        if (rc < 0) {
            char msg[sizeof(err->msg)];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            return inferd_fail(err, rc, "model '%s' (%s): %s", sm->id, sm->path, msg);
        }
        server_model_template(s, sm, inferd_registry_handle_model(h));
        inferd_log_info(COMP, "model '%s' loaded from %s in %.0f ms", sm->id, sm->path,
                        (server_now_s() - t0) * 1e3);
        inferd_registry_release(s->reg, h);
    }
    int expected = SERVER_LOADING;
    atomic_compare_exchange_strong(&s->state, &expected, SERVER_READY);
    return 0;
}

void inferd_server_capacity(inferd_server *s, uint64_t *out_memory_bytes,
                            uint32_t *out_slots_total)
{
    inferd_registry_metrics rm;
    inferd_registry_get_metrics(s->reg, &rm);
    uint32_t slots = 0;
    for (size_t i = 0; i < s->n_models; i++) {
        inferd_sched_stats st;
        if (inferd_registry_sched_stats(s->reg, s->models[i].id, &st) == 0)
            slots += st.n_slots;
    }
    *out_memory_bytes = rm.bytes_resident;
    *out_slots_total = slots;
}

typedef struct drain_job {
    inferd_server *s;
    inferd_registry_handle *h;
    pthread_t th;
} drain_job;

static void *drain_main(void *arg)
{
    drain_job *j = arg;
    inferd_sched_drain(inferd_registry_handle_sched(j->h), j->s->o.drain_grace_ms);
    return NULL;
}

void inferd_server_drain(inferd_server *s)
{
    atomic_store(&s->state, SERVER_DRAINING);
    /* Drain every loaded model at once, each with the whole grace period. */
    drain_job jobs[INFERD_SERVER_MODELS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < s->n_models; i++) {
        inferd_sched_stats st;
        if (inferd_registry_sched_stats(s->reg, s->models[i].id, &st) != 0)
            continue;
        inferd_error e = {0};
        jobs[n].s = s;
        if (server_get_model(s, &s->models[i], &jobs[n].h, &e) != 0)
            continue;
        if (pthread_create(&jobs[n].th, NULL, drain_main, &jobs[n]) != 0) {
            drain_main(&jobs[n]);
            inferd_registry_release(s->reg, jobs[n].h);
            continue;
        }
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        pthread_join(jobs[i].th, NULL);
        inferd_registry_release(s->reg, jobs[i].h);
    }
    /* The requests have ended; give their connections a moment to answer. */
    for (int i = 0; i < 200 && atomic_load(&s->n_active) > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&s->state, SERVER_STOPPED);
}

void inferd_server_destroy(inferd_server *s)
{
    if (!s)
        return;
    if (s->daemon && atomic_load(&s->state) != SERVER_STOPPED) {
        /* End what runs, so that no connection thread waits on a request. */
        s->o.drain_grace_ms = 0;
        inferd_server_drain(s);
    }
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    if (s->ticker_running) {
        pthread_mutex_lock(&s->mu);
        s->tick_stop = true;
        pthread_cond_broadcast(&s->tick_cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->ticker, NULL);
    }
    inferd_registry_destroy(s->reg);
    for (size_t i = 0; i < s->n_models; i++) {
        free(s->models[i].path);
        pthread_mutex_destroy(&s->models[i].mu);
    }
    free(s->models);
    free(s->host);
    free(s->api_key);
    pthread_cond_destroy(&s->tick_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
