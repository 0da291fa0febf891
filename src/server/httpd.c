/* A small HTTP/1.1 server on epoll; see httpd.h. The message syntax is
 * http1.c's; this file is sockets, buffers, states and threads.
 *
 * A connection goes through these states; every step runs on its loop's
 * thread and returns what it waits for:
 *
 *   S_HEAD ──> S_BODY ──> S_HANDLE ──> S_WRITE ──> S_HEAD (keep-alive)
 *     │          │           │ ^          │ ^  └──> S_LINGER ──> closed
 *     └──────────┴─ refused ─┘ └ parked ──┘ └ parked (a stream waits)
 *
 * Memory per connection: the struct, a read buffer while a request is
 * being read (freed when the connection is idle), the body (at most
 * max_body) and the output of the response being sent. */
#include "httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"

#define COMP "http"
#define IN_FIRST 4096           /* a read buffer's first size */
#define OUT_CAP 16384           /* a stream's output between two writes */
#define OUT_PAD 16              /* room before it for a chunk's size line */
#define RESP_HEADERS_MAX 8192   /* bytes of a response's own header lines */
#define LINGER_MS 2000          /* draining input before a close */
#define LINGER_BYTES (1u << 20) /* at most this much of it */
#define ACCEPT_BATCH 64         /* connections accepted per wake */
#define LISTENERS_MAX 8
#define SWEEP_MS 1000           /* timeouts are checked this often */
#define LOOP_STACK (512u << 10) /* bytes of a loop thread's stack */

enum { K_LISTENER = 1, K_CONN, K_WAKE };

typedef struct lsock {
    uint8_t kind; /* K_LISTENER */
    int fd;
    uint32_t max_conns;
    _Atomic uint32_t n_conns;
    void *lcls;
} lsock;

struct httpd_resp {
    char *data; /* a buffer response's body */
    size_t len;
    void (*free_data)(void *);
    ssize_t (*read)(void *, char *, size_t); /* a stream's */
    void *cls;
    void (*free_cls)(void *);
    char *hdrs; /* "Name: value\r\n"... */
    size_t hdrs_len, hdrs_cap;
    bool close; /* "Connection: close" */
};

typedef enum cstate { S_HEAD, S_BODY, S_HANDLE, S_WRITE, S_LINGER } cstate;

typedef enum step {
    STEP_ON,       /* go on with the next state */
    STEP_WAIT_IN,  /* until the socket is readable */
    STEP_WAIT_OUT, /* until it is writable */
    STEP_PARKED,   /* suspended: until httpd_resume */
    STEP_CLOSE,
} step;

typedef struct loop loop;

struct httpd_conn {
    uint8_t kind; /* K_CONN */
    loop *lp;
    lsock *ls;
    httpd_conn *prev, *next; /* the loop's connections */
    int fd;
    void *ctx, *req_ctx;
    cstate st;
    uint32_t events;  /* watched in the loop's epoll (0: not in it) */
    uint64_t last_ns; /* the last progress */

    /* Suspension: `suspended` is the loop thread's; `queued` and `rnext`
     * are under the loop's mutex. */
    bool suspended, queued;
    httpd_conn *rnext;

    /* Input: in[0, in_len) read, of which in[0, in_pos) belongs to the
     * request being answered. */
    char *in;
    size_t in_len, in_cap, in_pos;

    /* The request. */
    bool have_req;  /* its head parsed */
    bool seen;      /* the handler had its HEAD call */
    bool head_only; /* method HEAD */
    bool close_after;
    bool unread; /* input of this request may be left unread (answered
                    before its body, or refused): linger before the close */
    http1_request head;
    httpd_req rq;
    char *strs; /* method, path, query */
    char *body;
    size_t body_len, body_cap;
    http1_chunked ch;
    char why[160]; /* a refusal's message made here */

    /* The response. */
    httpd_resp *resp;
    unsigned status;
    char *out;
    size_t out_len, out_pos, out_cap;
    size_t data_pos; /* of resp->data sent */
    bool chunked, stream_end;
    bool dead; /* nothing more can be sent: close */

    uint64_t linger_until_ns;
    size_t linger_bytes;
};

struct loop {
    httpd *h;
    pthread_t th;
    bool running;
    int ep, wake_fd;
    pthread_mutex_t mu; /* guards resumed, stop */
    httpd_conn *resumed;
    bool stop;
    httpd_conn *conns;
    uint64_t last_sweep_ns;
    time_t date_t;
    char date[40]; /* "Date: ...\r\n" of date_t */
};

struct httpd {
    httpd_opts o;
    httpd_ops ops;
    loop *loops;
    uint32_t n_loops;
    pthread_mutex_t ls_mu;
    lsock *ls[LISTENERS_MAX];
    uint32_t n_ls;
    int spare_fd; /* closed to accept (and close) one connection at EMFILE */
};

static const uint8_t wake_kind = K_WAKE;

/* ---- responses ---- */

httpd_resp *httpd_resp_buffer(char *data, size_t len, void (*free_data)(void *))
{
    httpd_resp *r = inferd_calloc(1, sizeof(*r));
    if (!r) {
        if (free_data)
            free_data(data);
        return NULL;
    }
    r->data = data;
    r->len = len;
    r->free_data = free_data;
    return r;
}

httpd_resp *httpd_resp_stream(ssize_t (*read)(void *cls, char *buf, size_t max), void *cls,
                              void (*free_cls)(void *cls))
{
    httpd_resp *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->read = read;
    r->cls = cls;
    r->free_cls = free_cls;
    return r;
}

int httpd_resp_header(httpd_resp *r, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n") || !*name)
        return INFERD_E_INVALID;
    if (strcasecmp(name, "Connection") == 0 &&
        http1_list_has((http1_str){value, strlen(value)}, "close")) {
        r->close = true;
        return 0;
    }
    size_t n = strlen(name) + 2 + strlen(value) + 2;
    if (r->hdrs_len + n > RESP_HEADERS_MAX)
        return INFERD_E_RANGE;
    if (r->hdrs_len + n > r->hdrs_cap) {
        size_t cap = r->hdrs_cap ? r->hdrs_cap * 2 : 256;
        while (cap < r->hdrs_len + n)
            cap *= 2;
        char *p = inferd_realloc(r->hdrs, cap);
        if (!p)
            return INFERD_E_NOMEM;
        r->hdrs = p;
        r->hdrs_cap = cap;
    }
    r->hdrs_len += (size_t)sprintf(r->hdrs + r->hdrs_len, "%s: %s\r\n", name, value);
    return 0;
}

void httpd_resp_free(httpd_resp *r)
{
    if (!r)
        return;
    if (r->free_data)
        r->free_data(r->data);
    if (r->free_cls)
        r->free_cls(r->cls);
    inferd_free(r->hdrs);
    inferd_free(r);
}

static const char *reason(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

/* The loop's "Date: ...\r\n" line for now. */
static const char *date_line(loop *lp)
{
    time_t t = time(NULL);
    if (t != lp->date_t) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(lp->date, sizeof(lp->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        lp->date_t = t;
    }
    return lp->date;
}

void httpd_queue(httpd_conn *c, unsigned status, httpd_resp *r)
{
    if (!r) { /* no memory for the response: nothing can be said */
        c->dead = true;
        return;
    }
    httpd_resp_free(c->resp);
    c->resp = r;
    c->status = status;
    c->close_after |= r->close;
    if (c->st == S_HEAD && c->head.body != HTTP1_BODY_NONE)
        c->close_after = c->unread = true; /* answered before its body: that is not read */
    const bool stream = r->read != NULL;
    c->chunked = stream && c->head.minor == 1;
    if (stream && !c->chunked)
        c->close_after = true; /* HTTP/1.0: the end of the body is the close */
    size_t need = 256 + r->hdrs_len;
    if (stream && need < OUT_CAP + OUT_PAD + 8)
        need = OUT_CAP + OUT_PAD + 8;
    if (need > c->out_cap) {
        char *p = inferd_realloc(c->out, need);
        if (!p) {
            c->dead = true;
            return;
        }
        c->out = p;
        c->out_cap = need;
    }
    int n = snprintf(c->out, c->out_cap, "HTTP/1.1 %u %s\r\n%s", status, reason(status),
                     date_line(c->lp));
    if (!stream)
        n += snprintf(c->out + n, c->out_cap - (size_t)n, "Content-Length: %zu\r\n", r->len);
    else if (c->chunked)
        n += snprintf(c->out + n, c->out_cap - (size_t)n, "Transfer-Encoding: chunked\r\n");
    if (c->close_after)
        n += snprintf(c->out + n, c->out_cap - (size_t)n, "Connection: close\r\n");
    else if (c->head.minor == 0)
        n += snprintf(c->out + n, c->out_cap - (size_t)n, "Connection: keep-alive\r\n");
    if (r->hdrs_len)
        memcpy(c->out + n, r->hdrs, r->hdrs_len);
    n += (int)r->hdrs_len;
    memcpy(c->out + n, "\r\n", 2);
    c->out_len = (size_t)n + 2;
    c->out_pos = 0;
    c->data_pos = 0;
    c->stream_end = false;
    c->st = S_WRITE;
}

/* ---- the connection's socket in its loop's epoll ---- */

static void watch(httpd_conn *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(c->lp->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
    c->events = events;
}

static void unwatch(httpd_conn *c)
{
    if (!c->events)
        return;
    epoll_ctl(c->lp->ep, EPOLL_CTL_DEL, c->fd, NULL);
    c->events = 0;
}

int httpd_conn_fd(const httpd_conn *c) { return c->fd; }

void *httpd_conn_ctx(const httpd_conn *c) { return c->ctx; }

void httpd_suspend(httpd_conn *c) { c->suspended = true; }

void httpd_resume(httpd_conn *c)
{
    loop *lp = c->lp;
    pthread_mutex_lock(&lp->mu);
    if (!c->queued) {
        c->queued = true;
        c->rnext = lp->resumed;
        lp->resumed = c;
    }
    pthread_mutex_unlock(&lp->mu);
    uint64_t one = 1;
    ssize_t w = write(lp->wake_fd, &one, sizeof(one));
    (void)w;
}

/* ---- requests ---- */

/* End the request being answered (its response @p status sent, or 0). */
static void end_request(httpd_conn *c, unsigned status)
{
    httpd *h = c->lp->h;
    if (c->have_req && (c->seen || status != 0))
        h->ops.completed(c->ls->lcls, c, c->seen ? c->req_ctx : NULL, status);
    c->req_ctx = NULL;
    httpd_resp_free(c->resp);
    c->resp = NULL;
    inferd_free(c->strs);
    inferd_free(c->body);
    size_t released = c->body_cap;
    c->strs = c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->have_req = c->seen = c->head_only = false;
    c->status = 0;
    memset(&c->ch, 0, sizeof(c->ch));
    inferd_alloc_released(released);
}

static void conn_close(httpd_conn *c)
{
    loop *lp = c->lp;
    httpd *h = lp->h;
    end_request(c, 0);
    h->ops.closed(c->ls->lcls, c, c->ctx);
    unwatch(c);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        lp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    atomic_fetch_sub(&c->ls->n_conns, 1);
    const size_t bytes = sizeof(*c) + c->in_cap + c->out_cap;
    inferd_free(c->in);
    inferd_free(c->out);
    inferd_free(c);
    inferd_alloc_released(bytes); /* many closed at once: give the memory back */
}

/* Answer the request with an error of the server's own. */
static step refuse(httpd_conn *c, unsigned status, const char *why)
{
    httpd *h = c->lp->h;
    char target[64];
    const bool parsed = c->have_req; /* the head parsed: its target is known */
    if (parsed)
        snprintf(target, sizeof(target), "%.*s", (int)c->head.target.n, c->head.target.p);
    c->have_req = true; /* counted as a request, even without a head */
    httpd_resp *r =
        h->ops.refused ? h->ops.refused(c->ls->lcls, status, parsed ? target : NULL, why) : NULL;
    if (!r) {
        size_t n = strlen(why);
        char *t = inferd_malloc(n + 1);
        if (t) {
            memcpy(t, why, n);
            t[n] = '\n';
        }
        r = t ? httpd_resp_buffer(t, n + 1, inferd_free) : NULL;
        if (r)
            httpd_resp_header(r, "Content-Type", "text/plain; charset=utf-8");
    }
    c->close_after = c->unread = true;
    httpd_queue(c, status, r);
    return c->dead ? STEP_CLOSE : STEP_ON;
}

/* The method, path and query of the head as strings (c->strs). NULL, or
 * why the target is refused. */
static const char *split_target(httpd_conn *c)
{
    const http1_request *q = &c->head;
    const char *t = q->target.p;
    size_t tn = q->target.n;
    if (tn >= 7 && (strncasecmp(t, "http://", 7) == 0 || strncasecmp(t, "https://", 8) == 0)) {
        /* absolute-form: the path is what follows the authority */
        size_t i = t[4] == ':' ? 7 : 8;
        while (i < tn && t[i] != '/' && t[i] != '?')
            i++;
        t += i;
        tn -= i;
    } else if (!(tn == 1 && t[0] == '*') && (tn == 0 || t[0] != '/')) {
        return "a request target that is not a path";
    }
    size_t pn = 0;
    while (pn < tn && t[pn] != '?')
        pn++;
    char *s = inferd_malloc(q->method.n + 1 + pn + 2 + (tn - pn) + 1);
    if (!s)
        return "no memory for the request";
    c->strs = s;
    memcpy(s, q->method.p, q->method.n);
    s[q->method.n] = '\0';
    char *path = s + q->method.n + 1, *o = path;
    if (pn == 0)
        *o++ = '/';
    for (size_t i = 0; i < pn; i++) {
        int hi, lo;
        if (t[i] == '%' && i + 2 < pn && (hi = http1_hex_digit((unsigned char)t[i + 1])) >= 0 &&
            (lo = http1_hex_digit((unsigned char)t[i + 2])) >= 0) {
            *o = (char)(hi << 4 | lo);
            if (*o == '\0')
                return "a NUL byte (%00) in the request path";
            o++;
            i += 2;
        } else {
            *o++ = t[i];
        }
    }
    *o++ = '\0';
    char *query = o;
    if (pn < tn) {
        memcpy(query, t + pn + 1, tn - pn - 1);
        query[tn - pn - 1] = '\0';
    } else {
        query[0] = '\0';
    }
    c->rq = (httpd_req){.head = &c->head, .method = s, .path = path, .query = query};
    return NULL;
}

static step begin_request(httpd_conn *c)
{
    httpd *h = c->lp->h;
    c->have_req = true;
    c->in_pos = c->head.head_bytes;
    c->close_after = !c->head.keep_alive;
    const char *bad = split_target(c);
    if (bad)
        return refuse(c, 400, bad);
    c->head_only = strcmp(c->rq.method, "HEAD") == 0;
    c->seen = true;
    if (h->ops.request(c->ls->lcls, c, &c->rq, HTTPD_CALL_HEAD, &c->req_ctx) < 0 || c->dead)
        return STEP_CLOSE;
    if (c->resp)
        return STEP_ON;
    if (c->head.body == HTTP1_BODY_NONE) {
        c->st = S_HANDLE;
        return STEP_ON;
    }
    if (c->head.body == HTTP1_BODY_LENGTH && c->head.content_length > h->o.max_body) {
        snprintf(c->why, sizeof(c->why), "the request body of %llu bytes exceeds the limit of %zu",
                 (unsigned long long)c->head.content_length, h->o.max_body);
        return refuse(c, 413, c->why);
    }
    if (c->head.expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t n = send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0 && n != (ssize_t)sizeof(cont) - 1)
            return STEP_CLOSE; /* a part of it: the stream is broken */
    }
    c->st = S_BODY;
    return STEP_ON;
}

/* Receive into buf[*len, cap) and advance *len. */
static step recv_into(httpd_conn *c, char *buf, size_t cap, size_t *len)
{
    ssize_t n = recv(c->fd, buf + *len, cap - *len, 0);
    if (n > 0) {
        *len += (size_t)n;
        c->last_ns = inferd_now_ns();
        return STEP_ON;
    }
    if (n < 0 && errno == EINTR)
        return STEP_ON;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return STEP_WAIT_IN;
    return STEP_CLOSE; /* the end of the stream, or an error */
}

/* Read more input into c->in; for states that read the head or a chunked
 * body. */
static step read_in(httpd_conn *c, size_t cap_max)
{
    if (c->in_len == c->in_cap) {
        if (c->in_cap >= cap_max)
            return STEP_CLOSE; /* cannot happen: the caller bounds it */
        size_t cap = c->in_cap ? c->in_cap * 2 : IN_FIRST;
        if (cap > cap_max)
            cap = cap_max;
        char *p = inferd_realloc(c->in, cap);
        if (!p)
            return STEP_CLOSE;
        c->in = p;
        c->in_cap = cap;
    }
    return recv_into(c, c->in, c->in_cap, &c->in_len);
}

static step step_head(httpd_conn *c)
{
    httpd *h = c->lp->h;
    if (c->in_len > 0) {
        const char *why = NULL;
        http1_result r = http1_parse_head(c->in, c->in_len, h->o.max_head, &c->head, &why);
        switch (r) {
        case HTTP1_OK: return begin_request(c);
        case HTTP1_INCOMPLETE: break;
        case HTTP1_TOO_LARGE: return refuse(c, 431, why);
        case HTTP1_VERSION: return refuse(c, 505, why);
        case HTTP1_EXPECT: return refuse(c, 417, why);
        default: return refuse(c, 400, why);
        }
    }
    step s = read_in(c, h->o.max_head);
    if (s == STEP_WAIT_IN && c->in_len == 0 && c->in) {
        inferd_free(c->in); /* idle keep-alive: no buffer */
        c->in = NULL;
        c->in_cap = 0;
    }
    return s;
}

/* Make room for @p need more bytes of body (at most max_body + 1 in all). */
static bool body_room(httpd_conn *c, size_t need, size_t cap_max)
{
    if (c->body_cap - c->body_len >= need)
        return true;
    size_t cap = c->body_cap ? c->body_cap : cap_max < IN_FIRST ? cap_max : IN_FIRST;
    while (cap - c->body_len < need && cap < cap_max)
        cap = cap * 2 < cap_max ? cap * 2 : cap_max;
    char *p = inferd_realloc(c->body, cap + 1);
    if (!p)
        return false;
    c->body = p;
    c->body_cap = cap;
    return true;
}

static step step_body_length(httpd_conn *c)
{
    const size_t total = (size_t)c->head.content_length;
    if (!c->body) {
        if (!body_room(c, total, total))
            return refuse(c, 500, "no memory for the request body");
    }
    size_t want = total - c->body_len;
    size_t have = c->in_len - c->in_pos;
    if (have > 0) {
        size_t k = have < want ? have : want;
        memcpy(c->body + c->body_len, c->in + c->in_pos, k);
        c->body_len += k;
        c->in_pos += k;
        want -= k;
    }
    if (want == 0) {
        c->st = S_HANDLE;
        return STEP_ON;
    }
    return recv_into(c, c->body, total, &c->body_len);
}

static step step_body_chunked(httpd_conn *c)
{
    httpd *h = c->lp->h;
    const size_t cap_max = h->o.max_body + 1;
    while (c->in_pos < c->in_len) {
        if (!body_room(c, 1, cap_max))
            return refuse(c, 500, "no memory for the request body");
        size_t used = 0, got = 0;
        const char *why = NULL;
        http1_result r =
            http1_chunked_decode(&c->ch, c->in + c->in_pos, c->in_len - c->in_pos, &used,
                                 c->body + c->body_len, c->body_cap - c->body_len, &got, &why);
        c->in_pos += used;
        c->body_len += got;
        if (c->body_len > h->o.max_body) {
            snprintf(c->why, sizeof(c->why), "the request body exceeds the limit of %zu bytes",
                     h->o.max_body);
            return refuse(c, 413, c->why);
        }
        if (r == HTTP1_OK) {
            c->st = S_HANDLE;
            return STEP_ON;
        }
        if (r != HTTP1_INCOMPLETE)
            return refuse(c, 400, why);
        if (used == 0 && got == 0 && c->body_cap - c->body_len > 0)
            break; /* needs more input */
    }
    /* All input taken: read more into the start of c->in. */
    c->in_len = c->in_pos = 0;
    return read_in(c, IN_FIRST * 4);
}

static step step_handle(httpd_conn *c)
{
    httpd *h = c->lp->h;
    c->rq.body = c->body ? c->body : "";
    c->rq.body_len = c->body_len;
    if (c->body)
        c->body[c->body_len] = '\0';
    if (h->ops.request(c->ls->lcls, c, &c->rq, HTTPD_CALL_BODY, &c->req_ctx) < 0 || c->dead)
        return STEP_CLOSE;
    if (c->st == S_WRITE)
        return STEP_ON;
    if (c->suspended)
        return STEP_PARKED;
    return STEP_CLOSE; /* answered nothing: nothing more can be said */
}

/* The rest of the request's input is not read: the next request starts
 * after it, at the front of c->in. */
static void keep_rest(httpd_conn *c)
{
    size_t rest = c->in_len - c->in_pos;
    if (rest > 0 && c->in_pos > 0)
        memmove(c->in, c->in + c->in_pos, rest);
    c->in_len = rest;
    c->in_pos = 0;
}

static step finish_response(httpd_conn *c)
{
    end_request(c, c->status);
    inferd_free(c->out); /* an idle connection keeps no buffer */
    c->out = NULL;
    c->out_cap = c->out_len = c->out_pos = 0;
    if (c->close_after) {
        /* Closing a socket with unread input resets the connection, and
         * a reset can destroy the answer before the client reads it: when
         * input may be left, stop writing and drain it first. */
        char b;
        if (!c->unread && c->in_pos == c->in_len) {
            ssize_t k = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
            if (k == 0 || (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
                return STEP_CLOSE; /* nothing left (unread implies close_after) */
        }
        shutdown(c->fd, SHUT_WR);
        c->st = S_LINGER;
        c->linger_until_ns = inferd_now_ns() + (uint64_t)LINGER_MS * 1000000u;
        c->linger_bytes = 0;
        return STEP_ON;
    }
    keep_rest(c);
    c->st = S_HEAD;
    return STEP_ON;
}

static step step_write(httpd_conn *c)
{
    httpd_resp *r = c->resp;
    for (;;) {
        const bool body_left = !r->read && !c->head_only && c->data_pos < r->len;
        if (c->out_pos < c->out_len || body_left) {
            struct iovec iov[2];
            int n_iov = 0;
            if (c->out_pos < c->out_len)
                iov[n_iov++] = (struct iovec){c->out + c->out_pos, c->out_len - c->out_pos};
            if (body_left)
                iov[n_iov++] = (struct iovec){r->data + c->data_pos, r->len - c->data_pos};
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n_iov};
            ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return errno == EAGAIN || errno == EWOULDBLOCK ? STEP_WAIT_OUT : STEP_CLOSE;
            }
            c->last_ns = inferd_now_ns();
            size_t k = (size_t)n, head = c->out_len - c->out_pos;
            if (k <= head) {
                c->out_pos += k;
            } else {
                c->out_pos = c->out_len;
                c->data_pos += k - head;
            }
            continue;
        }
        if (!r->read || c->head_only || c->stream_end)
            return finish_response(c);
        /* The stream's next piece, framed as a chunk when chunked. */
        ssize_t k = r->read(r->cls, c->out + OUT_PAD, OUT_CAP);
        if (k == 0) {
            if (c->suspended)
                return STEP_PARKED;
            return STEP_CLOSE; /* nothing, and nothing will wake it */
        }
        if (k == HTTPD_STREAM_END) {
            c->stream_end = true;
            if (c->chunked) {
                memcpy(c->out, "0\r\n\r\n", 5);
                c->out_pos = 0;
                c->out_len = 5;
            }
            continue;
        }
        if (k < 0 || (size_t)k > OUT_CAP)
            return STEP_CLOSE;
        c->out_pos = OUT_PAD;
        c->out_len = OUT_PAD + (size_t)k;
        if (c->chunked) {
            char sz[16];
            int m = snprintf(sz, sizeof(sz), "%zx\r\n", (size_t)k);
            c->out_pos -= (size_t)m;
            memcpy(c->out + c->out_pos, sz, (size_t)m);
            memcpy(c->out + c->out_len, "\r\n", 2);
            c->out_len += 2;
        }
    }
}

static step step_linger(httpd_conn *c)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            c->linger_bytes += (size_t)n;
            if (c->linger_bytes > LINGER_BYTES)
                return STEP_CLOSE;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return STEP_WAIT_IN;
        return STEP_CLOSE;
    }
}

static void conn_run(httpd_conn *c)
{
    for (;;) {
        step s;
        switch (c->st) {
        case S_HEAD: s = step_head(c); break;
        case S_BODY:
            s = c->head.body == HTTP1_BODY_CHUNKED ? step_body_chunked(c) : step_body_length(c);
            break;
        case S_HANDLE: s = step_handle(c); break;
        case S_WRITE: s = step_write(c); break;
        default: s = step_linger(c); break;
        }
        switch (s) {
        case STEP_ON: continue;
        case STEP_WAIT_IN: watch(c, EPOLLIN | EPOLLRDHUP); return;
        case STEP_WAIT_OUT: watch(c, EPOLLOUT); return;
        case STEP_PARKED: unwatch(c); return;
        case STEP_CLOSE: conn_close(c); return;
        }
    }
}

/* ---- accepting ---- */

static void accept_some(loop *lp, lsock *ls)
{
    httpd *h = lp->h;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(ls->fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && h->spare_fd >= 0) {
                /* Out of descriptors: take the connection off the queue
                 * and close it, or epoll would report it again at once. */
                pthread_mutex_lock(&h->ls_mu);
                if (h->spare_fd >= 0) {
                    close(h->spare_fd);
                    int drop = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC);
                    if (drop >= 0)
                        close(drop);
                    h->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                }
                pthread_mutex_unlock(&h->ls_mu);
            }
            return;
        }
        if (atomic_fetch_add(&ls->n_conns, 1) >= ls->max_conns) {
            atomic_fetch_sub(&ls->n_conns, 1);
            close(fd);
            continue;
        }
        if (sa.ss_family == AF_INET || sa.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        httpd_conn *c = inferd_calloc(1, sizeof(*c));
        if (!c) {
            atomic_fetch_sub(&ls->n_conns, 1);
            close(fd);
            continue;
        }
        c->kind = K_CONN;
        c->lp = lp;
        c->ls = ls;
        c->fd = fd;
        c->st = S_HEAD;
        c->last_ns = inferd_now_ns();
        if (h->ops.opened(ls->lcls, c, fd, (struct sockaddr *)&sa, &c->ctx) < 0) {
            atomic_fetch_sub(&ls->n_conns, 1);
            close(fd);
            inferd_free(c);
            continue;
        }
        c->next = lp->conns;
        if (lp->conns)
            lp->conns->prev = c;
        lp->conns = c;
        watch(c, EPOLLIN | EPOLLRDHUP);
    }
}

/* ---- loops ---- */

static void sweep(loop *lp, uint64_t now)
{
    const httpd *h = lp->h;
    const uint64_t idle_ns = (uint64_t)h->o.idle_timeout_s * 1000000000u;
    httpd_conn *next;
    for (httpd_conn *c = lp->conns; c; c = next) {
        next = c->next;
        if (c->suspended)
            continue;
        if (c->st == S_LINGER ? now >= c->linger_until_ns : idle_ns && now - c->last_ns >= idle_ns)
            conn_close(c);
    }
}

static void run_resumed(loop *lp)
{
    pthread_mutex_lock(&lp->mu);
    httpd_conn *list = lp->resumed;
    lp->resumed = NULL;
    for (httpd_conn *c = list; c; c = c->rnext)
        c->queued = false;
    pthread_mutex_unlock(&lp->mu);
    while (list) {
        httpd_conn *c = list;
        list = c->rnext;
        c->suspended = false;
        c->last_ns = inferd_now_ns();
        conn_run(c);
    }
}

static void *loop_main(void *arg)
{
    loop *lp = arg;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(lp->ep, evs, 64, SWEEP_MS);
        for (int i = 0; i < n; i++) {
            const uint8_t kind = *(const uint8_t *)evs[i].data.ptr;
            if (kind == K_WAKE) {
                uint64_t v;
                ssize_t r = read(lp->wake_fd, &v, sizeof(v));
                (void)r;
            } else if (kind == K_LISTENER) {
                accept_some(lp, evs[i].data.ptr);
            } else {
                conn_run(evs[i].data.ptr);
            }
        }
        run_resumed(lp);
        pthread_mutex_lock(&lp->mu);
        bool stop = lp->stop;
        pthread_mutex_unlock(&lp->mu);
        if (stop)
            break;
        uint64_t now = inferd_now_ns();
        if (now - lp->last_sweep_ns >= (uint64_t)SWEEP_MS * 1000000u) {
            lp->last_sweep_ns = now;
            sweep(lp, now);
        }
    }
    while (lp->conns)
        conn_close(lp->conns);
    return NULL;
}

int httpd_create(const httpd_opts *o, const httpd_ops *ops, httpd **out_h, inferd_error *err)
{
    *out_h = NULL;
    if (o->threads < 1 || o->threads > 64)
        return inferd_fail(err, INFERD_E_INVALID, "http threads: %u, 1..64", o->threads);
    httpd *h = inferd_calloc(1, sizeof(*h));
    if (!h)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the HTTP server");
    h->o = *o;
    h->ops = *ops;
    pthread_mutex_init(&h->ls_mu, NULL);
    h->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    h->loops = inferd_calloc(o->threads, sizeof(loop));
    if (!h->loops) {
        httpd_destroy(h);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the HTTP server");
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, LOOP_STACK);
    int rc = 0;
    for (uint32_t i = 0; i < o->threads && rc == 0; i++) {
        loop *lp = &h->loops[i];
        lp->h = h;
        lp->ep = epoll_create1(EPOLL_CLOEXEC);
        lp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        pthread_mutex_init(&lp->mu, NULL);
        h->n_loops++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)&wake_kind};
        if (lp->ep < 0 || lp->wake_fd < 0 ||
            epoll_ctl(lp->ep, EPOLL_CTL_ADD, lp->wake_fd, &ev) != 0 ||
            pthread_create(&lp->th, &attr, loop_main, lp) != 0) {
            rc = inferd_fail(err, INFERD_E_INTERNAL, "cannot start an HTTP thread: %s",
                             strerror(errno));
            break;
        }
        lp->running = true;
    }
    pthread_attr_destroy(&attr);
    if (rc < 0) {
        httpd_destroy(h);
        return rc;
    }
    *out_h = h;
    return 0;
}

int httpd_listen(httpd *h, int fd, uint32_t max_conns, void *lcls, inferd_error *err)
{
    pthread_mutex_lock(&h->ls_mu);
    if (h->n_ls == LISTENERS_MAX) {
        pthread_mutex_unlock(&h->ls_mu);
        close(fd);
        return inferd_fail(err, INFERD_E_RANGE, "more than %d listeners", LISTENERS_MAX);
    }
    lsock *ls = inferd_calloc(1, sizeof(*ls));
    if (!ls) {
        pthread_mutex_unlock(&h->ls_mu);
        close(fd);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a listener");
    }
    ls->kind = K_LISTENER;
    ls->fd = fd;
    ls->max_conns = max_conns;
    ls->lcls = lcls;
    h->ls[h->n_ls++] = ls;
    pthread_mutex_unlock(&h->ls_mu);
    for (uint32_t i = 0; i < h->n_loops; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = ls};
        if (epoll_ctl(h->loops[i].ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            return inferd_fail(err, INFERD_E_INTERNAL, "cannot watch a listener: %s",
                               strerror(errno));
    }
    return 0;
}

void httpd_destroy(httpd *h)
{
    if (!h)
        return;
    for (uint32_t i = 0; i < h->n_loops; i++) {
        loop *lp = &h->loops[i];
        if (!lp->running)
            continue;
        pthread_mutex_lock(&lp->mu);
        lp->stop = true;
        pthread_mutex_unlock(&lp->mu);
        uint64_t one = 1;
        ssize_t w = write(lp->wake_fd, &one, sizeof(one));
        (void)w;
    }
    for (uint32_t i = 0; i < h->n_loops; i++) {
        loop *lp = &h->loops[i];
        if (lp->running)
            pthread_join(lp->th, NULL);
        if (lp->ep >= 0)
            close(lp->ep);
        if (lp->wake_fd >= 0)
            close(lp->wake_fd);
        pthread_mutex_destroy(&lp->mu);
    }
    for (uint32_t i = 0; i < h->n_ls; i++) {
        close(h->ls[i]->fd);
        inferd_free(h->ls[i]);
    }
    if (h->spare_fd >= 0)
        close(h->spare_fd);
    pthread_mutex_destroy(&h->ls_mu);
    inferd_free(h->loops);
    inferd_free(h);
}

int httpd_tcp_socket(const char *host, uint16_t port, int *out_fd, uint16_t *out_port,
                     inferd_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", (unsigned)port);
    int gai = getaddrinfo(host, ps, &hints, &ai);
    if (gai != 0)
        return inferd_fail(err, INFERD_E_INVALID, "host '%s': %s", host, gai_strerror(gai));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    int e = 0;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0)
        e = errno;
    freeaddrinfo(ai);
    if (e) {
        if (fd >= 0)
            close(fd);
        return inferd_fail(err, INFERD_E_IO, "cannot listen on %s:%u (%s)", host, (unsigned)port,
                           strerror(e));
    }
    struct sockaddr_storage sa;
    socklen_t sl = sizeof(sa);
    uint16_t bound = port;
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        bound = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                               : ((struct sockaddr_in *)&sa)->sin_port);
    *out_fd = fd;
    *out_port = bound;
    return 0;
}

int httpd_unix_socket(const char *path, unsigned mode, int *out_fd, uint64_t *out_ino,
                      inferd_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
        return inferd_fail(err, INFERD_E_INVALID, "unix: the socket path must have 1 to %zu bytes",
                           sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return inferd_fail(err, INFERD_E_EXISTS,
                               "unix: %s exists and is not a socket (not replaced)", path);
        /* A socket file: in use if something accepts on it, else stale. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        int e = errno;
        if (probe >= 0)
            close(probe);
        if (live)
            return inferd_fail(err, INFERD_E_EXISTS, "unix: %s is in use by another server", path);
        if (e != ECONNREFUSED && e != ENOENT)
            return inferd_fail(err, INFERD_E_IO, "unix: cannot tell whether %s is in use (%s)",
                               path, strerror(e));
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return inferd_fail(err, INFERD_E_IO, "unix: socket: %s", strerror(errno));
    /* The file is made with the umask's mode: none but the owner may use
     * it until chmod gives the mode asked for. */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (rc == 0 &&
        (chmod(path, mode & 0777) != 0 || listen(fd, SOMAXCONN) != 0 || stat(path, &st) != 0)) {
        e = errno;
        unlink(path);
        rc = -1;
    }
    if (rc != 0) {
        close(fd);
        return inferd_fail(err, INFERD_E_IO, "unix: cannot listen on %s (%s)", path, strerror(e));
    }
    *out_fd = fd;
    *out_ino = (uint64_t)st.st_ino;
    return 0;
}

void httpd_unix_unlink(const char *path, uint64_t ino)
{
    struct stat st;
    if (path && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (uint64_t)st.st_ino == ino)
        unlink(path);
}
