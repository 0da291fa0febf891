/* The client library (include/inferd/client.h): calls to one worker over
 * libcurl, a pool of easy handles (each keeps its connection alive), the
 * worker's errors read back through the error table. */
#include "inferd/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_internal.h"
#include "inferd/alloc.h"
#include "inferd/buf.h"
#include "inferd/tensor_json.h"

#define ANSWER_MAX ((size_t)1 << 31) /* bytes of one answer kept */

struct inferd_client {
    char *url;
    char *base;      /* "http://host:port[/prefix]" or "http://localhost" */
    char *unix_path; /* or NULL */
    inferd_client_opts o;
    char *auth; /* "Authorization: Bearer KEY" or NULL */
    pthread_mutex_t mu;
    CURL **idle; /* handles not in use (their connections kept) */
    size_t n_idle, cap_idle;
};

inferd_client_opts inferd_client_opts_default(void)
{
    return (inferd_client_opts){.connect_timeout_ms = 2000, .idle_timeout_ms = 60000};
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int inferd_client_open(const char *url, const inferd_client_opts *opts, inferd_client **out,
                       inferd_error *err)
{
    *out = NULL;
    if (!url)
        return inferd_fail(err, INFERD_E_INVALID, "client: no URL");
    const bool is_unix = strncmp(url, "unix://", 7) == 0;
    if (!is_unix && strncmp(url, "http://", 7) != 0)
        return inferd_fail(err, INFERD_E_INVALID,
                           "client: '%s' is not a worker's URL (http://HOST:PORT or "
                           "unix:///PATH/TO.sock)",
                           url);
    if ((is_unix && url[7] != '/') || (!is_unix && !url[7]))
        return inferd_fail(err, INFERD_E_INVALID, "client: '%s' names no %s", url,
                           is_unix ? "absolute socket path" : "host");
    pthread_once(&curl_once, curl_init_once);
    inferd_client *c = inferd_calloc(1, sizeof(*c));
    if (!c)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    c->o = opts ? *opts : inferd_client_opts_default();
    pthread_mutex_init(&c->mu, NULL);
    c->url = inferd_strdup(url);
    if (is_unix) {
        c->unix_path = inferd_strdup(url + 7);
        c->base = inferd_strdup("http://localhost");
    } else {
        size_t n = strlen(url);
        while (n > 7 && url[n - 1] == '/')
            n--;
        c->base = inferd_strndup(url, n);
    }
    if (c->o.api_key) {
        size_t n = strlen(c->o.api_key) + 32;
        c->auth = inferd_malloc(n);
        if (c->auth)
            snprintf(c->auth, n, "Authorization: Bearer %s", c->o.api_key);
    }
    c->o.api_key = NULL; /* not kept: the header holds it */
    if (!c->url || !c->base || (is_unix && !c->unix_path) || (opts && opts->api_key && !c->auth)) {
        inferd_client_close(c);
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    }
    *out = c;
    return 0;
}

void inferd_client_close(inferd_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_idle; i++)
        curl_easy_cleanup(c->idle[i]);
    inferd_free(c->idle);
    pthread_mutex_destroy(&c->mu);
    inferd_free(c->url);
    inferd_free(c->base);
    inferd_free(c->unix_path);
    inferd_free(c->auth);
    inferd_free(c);
}

const char *inferd_client_url(const inferd_client *c) { return c->url; }

bool inferd_client_is_transport(const inferd_error *err)
{
    return err && err->code == INFERD_E_TRANSPORT;
}

/* ---- one HTTP exchange ---- */

static CURL *take_handle(inferd_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->n_idle > 0)
        h = c->idle[--c->n_idle];
    pthread_mutex_unlock(&c->mu);
    return h ? h : curl_easy_init();
}

static void give_handle(inferd_client *c, CURL *h)
{
    curl_easy_reset(h); /* options cleared; its connection stays open */
    pthread_mutex_lock(&c->mu);
    if (c->n_idle == c->cap_idle) {
        size_t cap = c->cap_idle ? 2 * c->cap_idle : 4;
        CURL **n = inferd_realloc(c->idle, cap * sizeof(*n));
        if (n) {
            c->idle = n;
            c->cap_idle = cap;
        }
    }
    if (c->n_idle < c->cap_idle) {
        c->idle[c->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h)
        curl_easy_cleanup(h);
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    client_call *k = ctx;
    const size_t len = size * n;
    if (k->sink) {
        if (k->status == 0)
            curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &k->status);
        if (k->status == 200) /* a stream; errors come whole */
            return k->sink(k->sink_ctx, p, len) == 0 ? len : 0;
    }
    return inferd_buf_add(&k->body, p, len) == 0 ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    client_call *k = ctx;
    const size_t len = size * n;
    static const char hl[] = "inference-header-content-length:";
    if (len > sizeof(hl) - 1 && strncasecmp(p, hl, sizeof(hl) - 1) == 0) {
        char tmp[32];
        size_t m = len - (sizeof(hl) - 1);
        if (m >= sizeof(tmp))
            m = sizeof(tmp) - 1;
        memcpy(tmp, p + sizeof(hl) - 1, m);
        tmp[m] = '\0';
        char *end = NULL;
        unsigned long long v = strtoull(tmp, &end, 10);
        if (end != tmp) {
            k->json_len = (size_t)v;
            k->has_json_len = true;
        }
    }
    return len;
}

/* A request body in pieces, read by libcurl as it sends. */
typedef struct body_reader {
    const struct iovec *iov;
    int n, i;
    size_t at;
} body_reader;

static size_t read_body(char *buf, size_t size, size_t n, void *ctx)
{
    body_reader *r = ctx;
    size_t room = size * n, got = 0;
    while (room > 0 && r->i < r->n) {
        const struct iovec *v = &r->iov[r->i];
        size_t k = v->iov_len - r->at;
        if (k > room)
            k = room;
        memcpy(buf + got, (const char *)v->iov_base + r->at, k);
        got += k;
        room -= k;
        r->at += k;
        if (r->at == v->iov_len) {
            r->i++;
            r->at = 0;
        }
    }
    return got;
}

/* Rewind (libcurl resends a body on a fresh connection when a kept-alive
 * one turned out closed). */
static int seek_body(void *ctx, curl_off_t offset, int origin)
{
    body_reader *r = ctx;
    if (origin != SEEK_SET || offset < 0)
        return CURL_SEEKFUNC_CANTSEEK;
    r->i = 0;
    r->at = 0;
    size_t left = (size_t)offset;
    while (r->i < r->n && left >= r->iov[r->i].iov_len) {
        left -= r->iov[r->i].iov_len;
        r->i++;
    }
    if (r->i == r->n && left > 0)
        return CURL_SEEKFUNC_FAIL;
    r->at = left;
    return CURL_SEEKFUNC_OK;
}

/* The worker's error answer @p body (status @p st) into @p err. */
static int worker_error(long st, const char *body, size_t len, inferd_error *err)
{
    json_t *j = json_loadb(body ? body : "", len, JSON_ALLOW_NUL, NULL);
    json_t *e = json_object_get(j, "error");
    const char *msg = NULL, *code = NULL, *param = NULL;
    if (json_is_string(e)) { /* KServe */
        msg = json_string_value(e);
    } else if (json_is_object(e)) { /* OpenAI */
        msg = json_string_value(json_object_get(e, "message"));
        code = json_string_value(json_object_get(e, "code"));
        param = json_string_value(json_object_get(e, "param"));
    }
    const int rc = inferd_error_from_http((int)st, code);
    if (msg)
        inferd_fail_param(err, rc, param, "%s", msg);
    else
        inferd_fail(err, rc, "HTTP %ld from the worker: %.*s", st, (int)(len > 160 ? 160 : len),
                    body ? body : "");
    json_decref(j);
    return rc;
}

int inferd__client_call(inferd_client *c, client_call *k, inferd_error *err)
{
    k->body = INFERD_BUF_INIT(ANSWER_MAX);
    CURL *h = take_handle(c);
    if (!h)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory for a connection");
    k->h = h;
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", c->base, k->path);
    struct curl_slist *hdrs = NULL;
    if (c->auth)
        hdrs = curl_slist_append(hdrs, c->auth);
    hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    if (k->content_type) {
        char ct[128];
        snprintf(ct, sizeof(ct), "Content-Type: %s", k->content_type);
        hdrs = curl_slist_append(hdrs, ct);
    }
    if (k->extra_header)
        hdrs = curl_slist_append(hdrs, k->extra_header);
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (c->unix_path)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->o.connect_timeout_ms);
    const int64_t t = k->timeout_ms ? k->timeout_ms : c->o.timeout_ms;
    if (t > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)t);
    if (c->o.idle_timeout_ms > 0) {
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)((c->o.idle_timeout_ms + 999) / 1000));
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, k);
    body_reader rd = {k->iov, k->n_iov, 0, 0};
    if (k->method && strcmp(k->method, "POST") == 0 && k->iov) {
        curl_off_t total = 0;
        for (int i = 0; i < k->n_iov; i++)
            total += (curl_off_t)k->iov[i].iov_len;
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, total);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, read_body);
        curl_easy_setopt(h, CURLOPT_READDATA, &rd);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, seek_body);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &rd);
    } else if (k->method && strcmp(k->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)k->req_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, k->req ? k->req : "");
    }
    const CURLcode cc = curl_easy_perform(h);
    long st = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(hdrs);
    int rc = 0;
    if (k->cancelled) {
        rc = inferd_fail(err, INFERD_E_CANCELLED, "cancelled by the caller");
    } else if (k->sink_failed) {
        rc = k->sink_err.code ? k->sink_err.code : INFERD_E_TRANSPORT;
        if (err)
            *err = k->sink_err;
    } else if (cc == CURLE_WRITE_ERROR && k->body.err) {
        rc = inferd_fail(err, INFERD_E_TRANSPORT, "the answer is over %zu bytes", ANSWER_MAX);
    } else if (cc != CURLE_OK) {
        rc = inferd_fail(err, INFERD_E_TRANSPORT, "%s: %s", c->url, curl_easy_strerror(cc));
    }
    k->status = st;
    /* A connection that failed is not kept. */
    if (cc == CURLE_OK)
        give_handle(c, h);
    else
        curl_easy_cleanup(h);
    k->h = NULL;
    if (rc == 0 && (st < 200 || st >= 300) && !k->keep_error)
        rc = worker_error(st, k->body.p, k->body.len, err);
    return rc;
}

void inferd__client_call_fini(client_call *k) { inferd_buf_free(&k->body); }

/* A GET of @p path answered with a 2xx; the body in k. */
static int get(inferd_client *c, const char *path, client_call *k, inferd_error *err)
{
    memset(k, 0, sizeof(*k));
    k->method = "GET";
    k->path = path;
    return inferd__client_call(c, k, err);
}

/* The answer of k as a JSON value, or NULL and a transport error. */
static json_t *answer_json(const client_call *k, inferd_error *err)
{
    json_error_t je;
    json_t *j = json_loadb(k->body.p ? k->body.p : "", k->body.len, JSON_ALLOW_NUL, &je);
    if (!j)
        inferd_fail(err, INFERD_E_TRANSPORT, "a malformed answer from the worker: %s", je.text);
    return j;
}

/* ---- operations ---- */

int inferd_client_health(inferd_client *c, bool ready, inferd_error *err)
{
    client_call k;
    int rc = get(c, ready ? "/v2/health/ready" : "/health", &k, err);
    if (rc == 0 || rc == INFERD_E_TRANSPORT || rc == INFERD_E_NOMEM) {
        inferd__client_call_fini(&k);
        return rc;
    }
    /* Not live/ready: the worker's own words when it gave some. */
    json_t *j = json_loadb(k.body.p ? k.body.p : "", k.body.len, JSON_ALLOW_NUL, NULL);
    const char *state = json_string_value(json_object_get(j, "state"));
    if (!state)
        state = json_string_value(json_object_get(j, "status"));
    if (k.status == 400 || k.status == 503)
        rc = inferd_fail(err, INFERD_E_UNAVAILABLE, "the worker is not %s (%s)",
                         ready ? "ready" : "live", state ? state : "no state");
    json_decref(j);
    inferd__client_call_fini(&k);
    return rc;
}

int inferd_client_status(inferd_client *c, char **out_json, inferd_error *err)
{
    *out_json = NULL;
    client_call k;
    int rc = get(c, "/v1/status", &k, err);
    if (rc == 0) {
        *out_json = strndup(k.body.p ? k.body.p : "", k.body.len);
        if (!*out_json)
            rc = inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    }
    inferd__client_call_fini(&k);
    return rc;
}

void inferd_client_strings_free(char **strs, size_t n)
{
    for (size_t i = 0; strs && i < n; i++)
        free(strs[i]);
    free(strs);
}

int inferd_client_models(inferd_client *c, char ***out_ids, size_t *out_n, inferd_error *err)
{
    *out_ids = NULL;
    *out_n = 0;
    client_call k;
    int rc = get(c, "/v1/models", &k, err);
    json_t *j = rc == 0 ? answer_json(&k, err) : NULL;
    inferd__client_call_fini(&k);
    if (rc < 0 || !j)
        return rc < 0 ? rc : INFERD_E_TRANSPORT;
    json_t *data = json_object_get(j, "data");
    const size_t n = json_array_size(data);
    char **ids = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; ids && i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(data, i), "id"));
        ids[i] = strdup(id ? id : "");
        if (!ids[i]) {
            inferd_client_strings_free(ids, i);
            ids = NULL;
        }
    }
    json_decref(j);
    if (!ids)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    *out_ids = ids;
    *out_n = n;
    return 0;
}
