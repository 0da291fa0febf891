/* inferd-nats-latency: latency of one request at a time over NATS and over
 * HTTP against one `inferd serve --nats` worker. Four phases, each after its
 * own warm-up: round trip of a 1-token greedy request over NATS (publish to
 * --subject, read response.{requestId} up to `done`) and over HTTP (POST
 * /v1/completions on one keep-alive TCP connection, TCP_NODELAY), then time
 * to the first token over NATS (first `token` event) and over HTTP (first SSE
 * `data:` chunk carrying text). One thread, plus the NATS library's reader
 * thread. Times are taken when a message or a read returns, before any
 * parsing. Usage: --help. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <nats/nats.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define PROG "inferd-nats-latency"
#define usage_error(...) bench_usage_error(PROG, __VA_ARGS__)
#define fail(...) bench_error(-1, PROG, __VA_ARGS__)

#define REQUESTS_MAX 10000000u        /* per phase; every sample is kept */
#define RESPONSE_MAX_BYTES (8u << 20) /* one HTTP response, raw and decoded */
#define SUBJECT_MAX 256
#define NS_PER_MS INT64_C(1000000)
#define NS_PER_US INT64_C(1000)
#define NS_PER_S INT64_C(1000000000)

static const char usage_text[] =
    "usage: " PROG " [--nats URL] [--http HOST:PORT] [options]\n"
    "\n"
    "Sends one request at a time to an `inferd serve --nats` worker and prints\n"
    "mean, p50 and p99 in microseconds of:\n"
    "  nats_rtt   publish of a maxTokens 1, temperature 0 request to its `done` event\n"
    "  http_rtt   POST /v1/completions (max_tokens 1, temperature 0) to the last\n"
    "             byte of the response, on one keep-alive connection\n"
    "  nats_ttft  publish to the first `token` event (maxTokens --max-tokens)\n"
    "  http_ttft  POST with stream:true to the first SSE `data:` chunk with text\n"
    "Rows whose door (--nats, --http) is not given are skipped.\n"
    "\n"
    "  --nats URL          NATS server, e.g. nats://127.0.0.1:4222\n"
    "  --http HOST:PORT    inferd's HTTP address, e.g. 127.0.0.1:8080\n"
    "  --subject S         inference subject (default inference.{model} with\n"
    "                      --model, else inference.stories260K)\n"
    "  --model ID          modelId / model sent with each request (default: none,\n"
    "                      the subject's model and the server's default model)\n"
    "  -n, --requests N    measured requests per row, 1..10000000 (default 1000)\n"
    "  --warmup N          unmeasured requests before each row (default 100)\n"
    "  --max-tokens N      tokens of the first-token requests, 1..100000 (default 32)\n"
    "  --prompt TEXT       the prompt (default \"Once upon a time\")\n"
    "  --timeout-ms MS     limit for one request (default 30000)\n"
    "  --help              this text\n"
    "\n"
    "Percentiles are nearest-rank. Exit status: 0 when every request succeeded,\n"
    "1 on a failed request or connection, 2 on a usage error.\n";

struct options {
    const char *nats_url;
    const char *http_addr; /* HOST:PORT, borrowed from argv */
    const char *subject;   /* NULL until defaulted */
    const char *model;
    const char *prompt;
    uint64_t n_requests;
    uint64_t n_warmup;
    uint64_t max_tokens;
    int64_t timeout_ns;
};

/* Samples of one row, in ns. */
struct samples {
    int64_t *v; /* (cap) */
    size_t n;
    size_t cap;
};

/* Times of one request, ns from its send; first_ns is -1 until seen. */
struct req_times {
    int64_t first_ns;
    int64_t done_ns;
};

struct nats_side {
    natsConnection *nc;
    natsSubscription *sub;
    char id_prefix[64]; /* "b.<nonce>": requestIds are "b.<nonce>.<seq>" */
    uint64_t seq;
    char *payload; /* (payload_cap) request JSON, rebuilt per request */
    size_t payload_cap;
    uint64_t n_stale;       /* events of earlier requests skipped */
    uint64_t n_empty_first; /* first token events with empty text */
};

/* Growable byte buffer bounded by RESPONSE_MAX_BYTES. */
struct buf {
    char *p;
    size_t len;
    size_t cap;
};

enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

struct http_side {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char authority[300];   /* Host header */
    int fd;                /* -1 when closed */
    struct buf raw;        /* bytes of the current response as read */
    struct buf body;       /* its body, chunked encoding removed */
    uint64_t n_reconnects; /* connections after the first of a row */
    /* Parser of the current response. */
    bool head_done;
    size_t head_len;
    int status;
    int64_t content_length; /* -1: none */
    bool chunked;
    bool close_after;
    enum chunk_state ch;
    size_t ch_pos;    /* raw bytes consumed by the chunked decoder */
    uint64_t ch_left; /* data bytes left in the current chunk */
    size_t sse_pos;   /* body bytes already split into SSE events */
    bool complete;
};

/* ---------------------------------------------------------------- helpers */

static bool buf_add(struct buf *b, const char *s, size_t n)
{
    if (n > RESPONSE_MAX_BYTES - b->len)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

/* A JSON string literal of s (quotes and escapes), malloc'd. */
static char *json_quote(const char *s)
{
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;

    json_decref(j);
    return q;
}

/* ---------------------------------------------------------------- options */

static void parse_args(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof(*o));
    o->prompt = "Once upon a time";
    o->n_requests = 1000;
    o->n_warmup = 100;
    o->max_tokens = 32;
    o->timeout_ns = 30 * NS_PER_S;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL, *eq = NULL;
        char name[32];
        uint64_t v;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (a[0] != '-')
            usage_error("unexpected argument '%s'", a);
        /* "--name=value" and "--name value" are both accepted. */
        eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq) {
            if ((size_t)(eq - a) >= sizeof(name))
                usage_error("unknown option '%s'", a);
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            val = eq + 1;
        } else {
            if (strlen(a) >= sizeof(name))
                usage_error("unknown option '%s'", a);
            strcpy(name, a);
            if (i + 1 >= argc)
                usage_error("%s needs a value", a);
            val = argv[++i];
        }
        if (strcmp(name, "--nats") == 0) {
            o->nats_url = val;
        } else if (strcmp(name, "--http") == 0) {
            o->http_addr = val;
        } else if (strcmp(name, "--subject") == 0) {
            o->subject = val;
        } else if (strcmp(name, "--model") == 0) {
            o->model = val;
        } else if (strcmp(name, "--prompt") == 0) {
            o->prompt = val;
        } else if (strcmp(name, "-n") == 0 || strcmp(name, "--requests") == 0) {
            if (!bench_parse_u64(val, 1, REQUESTS_MAX, &o->n_requests))
                usage_error("%s: expected 1..%u, got '%s'", name, REQUESTS_MAX, val);
        } else if (strcmp(name, "--warmup") == 0) {
            if (!bench_parse_u64(val, 0, REQUESTS_MAX, &o->n_warmup))
                usage_error("--warmup: expected 0..%u, got '%s'", REQUESTS_MAX, val);
        } else if (strcmp(name, "--max-tokens") == 0) {
            if (!bench_parse_u64(val, 1, 100000, &o->max_tokens))
                usage_error("--max-tokens: expected 1..100000, got '%s'", val);
        } else if (strcmp(name, "--timeout-ms") == 0) {
            if (!bench_parse_u64(val, 1, 86400000, &v))
                usage_error("--timeout-ms: expected 1..86400000, got '%s'", val);
            o->timeout_ns = (int64_t)v * NS_PER_MS;
        } else {
            usage_error("unknown option '%s'", name);
        }
    }
    if (!o->nats_url && !o->http_addr)
        usage_error("give --nats URL, --http HOST:PORT or both");
}

/* inference.{model} with every character outside [A-Za-z0-9_-] as '_', as
 * the worker subscribes it (docs/nats.md, Subjects). */
static void default_subject(const struct options *o, char *out, size_t out_cap)
{
    const char *m = o->model ? o->model : "stories260K";
    size_t n = (size_t)snprintf(out, out_cap, "inference.");

    for (; *m && n + 1 < out_cap; m++, n++) {
        char ch = *m;
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        out[n] = ok ? ch : '_';
    }
    out[n] = '\0';
}

/* ---------------------------------------------------------------- samples */

static int samples_init(struct samples *s, size_t cap)
{
    s->v = calloc(cap, sizeof(*s->v));
    s->n = 0;
    s->cap = cap;
    return s->v ? 0 : fail("no memory for %zu samples", cap);
}

static void samples_add(struct samples *s, int64_t ns)
{
    if (s->n < s->cap)
        s->v[s->n++] = ns;
}

/* Nearest-rank percentile of sorted s, in us. */
static double pct_us(const struct samples *s, unsigned p)
{
    return (double)bench_pct(s->v, s->n, p) / (double)NS_PER_US;
}

static void print_row(const char *name, struct samples *s)
{
    double sum = 0;

    if (s->n == 0)
        return;
    qsort(s->v, s->n, sizeof(*s->v), bench_cmp_i64);
    for (size_t i = 0; i < s->n; i++)
        sum += (double)s->v[i];
    printf("| %s | %zu | %.0f | %.0f | %.0f |\n", name, s->n, sum / (double)s->n / NS_PER_US,
           pct_us(s, 50), pct_us(s, 99));
}

/* ---------------------------------------------------------------- NATS */

static int nats_open(struct nats_side *ns, const struct options *o)
{
    natsOptions *opts = NULL;
    natsStatus st;
    char subj[SUBJECT_MAX];
    uint64_t nonce = (uint64_t)bench_now_ns() ^ ((uint64_t)getpid() << 32);

    st = natsOptions_Create(&opts);
    if (st == NATS_OK)
        st = natsOptions_SetURL(opts, o->nats_url);
    if (st == NATS_OK)
        st = natsOptions_SetName(opts, PROG);
    /* Publish writes to the socket at once instead of leaving the message to
     * the library's flusher thread. */
    if (st == NATS_OK)
        st = natsOptions_SetSendAsap(opts, true);
    if (st == NATS_OK)
        st = natsConnection_Connect(&ns->nc, opts);
    natsOptions_Destroy(opts);
    if (st != NATS_OK)
        return fail("NATS %s: %s", o->nats_url, natsStatus_GetText(st));
    /* One synchronous subscription for every reply of this run: requestIds
     * carry a per-run nonce, so two runs against one server do not mix. */
    snprintf(ns->id_prefix, sizeof(ns->id_prefix), "b.%016" PRIx64, nonce);
    snprintf(subj, sizeof(subj), "response.%s.>", ns->id_prefix);
    st = natsConnection_SubscribeSync(&ns->sub, ns->nc, subj);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(ns->sub, -1, -1);
    /* The subscription is known to the server before the first request. */
    if (st == NATS_OK)
        st = natsConnection_Flush(ns->nc);
    if (st != NATS_OK)
        return fail("NATS subscribe %s: %s", subj, natsStatus_GetText(st));
    size_t extra = strlen(o->prompt) * 6 + (o->model ? strlen(o->model) * 6 : 0);
    ns->payload_cap = extra + 256;
    ns->payload = malloc(ns->payload_cap);
    if (!ns->payload)
        return fail("no memory for the NATS payload");
    return 0;
}

static void nats_close(struct nats_side *ns)
{
    natsSubscription_Destroy(ns->sub);
    natsConnection_Destroy(ns->nc);
    free(ns->payload);
}

/* One request over NATS: publish it on o->subject, then read the events of
 * response.{requestId} until `done`. out_t->first_ns is the first `token`
 * event, done_ns the `done` event, both from just before the publish. */
static int nats_request(struct nats_side *ns, const struct options *o, const char *prompt_q,
                        const char *model_q, uint64_t max_tokens, struct req_times *out_t)
{
    char id[96], want[SUBJECT_MAX];
    natsStatus st;
    int64_t t0, deadline;
    struct req_times t = {-1, -1};
    bool first_empty = false;

    snprintf(id, sizeof(id), "%s.%" PRIu64, ns->id_prefix, ++ns->seq);
    snprintf(want, sizeof(want), "response.%s", id);
    int len = snprintf(
        ns->payload, ns->payload_cap,
        "{\"requestId\":\"%s\",\"prompt\":%s,\"maxTokens\":%" PRIu64 ",\"temperature\":0%s%s}", id,
        prompt_q, max_tokens, model_q ? ",\"modelId\":" : "", model_q ? model_q : "");
    if (len < 0 || (size_t)len >= ns->payload_cap)
        return fail("NATS payload too long");

    t0 = bench_now_ns();
    deadline = t0 + o->timeout_ns;
    st = natsConnection_Publish(ns->nc, o->subject, ns->payload, len);
    if (st != NATS_OK)
        return fail("NATS publish %s: %s", o->subject, natsStatus_GetText(st));
    for (;;) {
        natsMsg *m = NULL;
        int64_t left_ms = (deadline - bench_now_ns() + NS_PER_MS - 1) / NS_PER_MS;

        if (left_ms <= 0)
            left_ms = 1;
        st = natsSubscription_NextMsg(&m, ns->sub, left_ms);
        int64_t t_ns = bench_now_ns() - t0;
        if (st == NATS_TIMEOUT)
            return fail("request %s: no `done` within %" PRId64 " ms (%s %s)", id,
                        o->timeout_ns / NS_PER_MS,
                        t.first_ns < 0 ? "no event: is a worker subscribed to" : "tokens seen on",
                        t.first_ns < 0 ? o->subject : want);
        if (st != NATS_OK)
            return fail("request %s: %s", id, natsStatus_GetText(st));
        /* A late event of an earlier request (one that failed) is skipped. */
        if (strcmp(natsMsg_GetSubject(m), want) != 0) {
            ns->n_stale++;
            natsMsg_Destroy(m);
            continue;
        }
        json_error_t jerr;
        json_t *ev = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &jerr);
        natsMsg_Destroy(m);
        const char *type = json_string_value(json_object_get(ev, "type"));
        if (!type) {
            json_decref(ev);
            return fail("request %s: an event without a type", id);
        }
        if (strcmp(type, "token") == 0) {
            if (t.first_ns < 0) {
                t.first_ns = t_ns;
                const char *tok = json_string_value(json_object_get(ev, "token"));
                first_empty = !tok || !*tok;
            }
            json_decref(ev);
            continue;
        }
        if (strcmp(type, "done") == 0) {
            json_int_t n_tok = json_integer_value(json_object_get(ev, "totalTokens"));
            json_decref(ev);
            if (n_tok < 1 || (uint64_t)n_tok > max_tokens || t.first_ns < 0)
                return fail("request %s: done with totalTokens %lld and %s token event", id,
                            (long long)n_tok, t.first_ns < 0 ? "no" : "a");
            t.done_ns = t_ns;
            break;
        }
        if (strcmp(type, "error") == 0) {
            const char *code = json_string_value(json_object_get(ev, "code"));
            const char *msg = json_string_value(json_object_get(ev, "error"));
            fail("request %s: error %s: %s", id, code ? code : "?", msg ? msg : "?");
            json_decref(ev);
            return -1;
        }
        json_decref(ev);
        return fail("request %s: unknown event type", id);
    }
    if (first_empty)
        ns->n_empty_first++;
    *out_t = t;
    return 0;
}

/* ---------------------------------------------------------------- HTTP */

static int http_resolve(struct http_side *hs, const char *addr)
{
    char host[256], port[16];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints = {0}, *res = NULL;
    size_t hlen;
    uint64_t pv;

    if (!colon || colon == addr)
        usage_error("--http: expected HOST:PORT, got '%s'", addr);
    hlen = (size_t)(colon - addr);
    if (addr[0] == '[' && hlen >= 2 && addr[hlen - 1] == ']') {
        addr++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host) || strlen(colon + 1) >= sizeof(port) ||
        !bench_parse_u64(colon + 1, 1, 65535, &pv))
        usage_error("--http: expected HOST:PORT, got '%s'", addr);
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    strcpy(port, colon + 1);
    snprintf(hs->authority, sizeof(hs->authority), "%s", addr);
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        return fail("--http %s: %s", host, gai_strerror(rc));
    memcpy(&hs->addr, res->ai_addr, res->ai_addrlen);
    hs->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void http_disconnect(struct http_side *hs)
{
    if (hs->fd >= 0)
        close(hs->fd);
    hs->fd = -1;
}

static int http_connect(struct http_side *hs)
{
    int one = 1;

    http_disconnect(hs);
    hs->fd = socket(hs->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (hs->fd < 0)
        return fail("socket: %s", strerror(errno));
    /* A request goes out in one write; no delay waits for more. */
    if (setsockopt(hs->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        connect(hs->fd, (const struct sockaddr *)&hs->addr, hs->addr_len) != 0) {
        int e = errno;
        http_disconnect(hs);
        return fail("connect %s: %s", hs->authority, strerror(e));
    }
    return 0;
}

/* Status line and headers of raw[0, head_len). */
static int http_parse_head(struct http_side *hs)
{
    const char *p = hs->raw.p, *end = hs->raw.p + hs->head_len;
    const char *eol = strstr(p, "\r\n");

    if (!eol || eol - p < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return fail("malformed status line");
    hs->status = atoi(p + 9);
    hs->content_length = -1;
    hs->chunked = false;
    hs->close_after = strncmp(p, "HTTP/1.0", 8) == 0;
    for (p = eol + 2; p < end - 2; p = eol + 2) {
        eol = strstr(p, "\r\n");
        size_t n = (size_t)(eol - p);
        const char *colon = memchr(p, ':', n);
        if (!colon)
            return fail("malformed header line");
        const char *v = colon + 1;
        size_t name_len = (size_t)(colon - p);
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vlen = (size_t)(eol - v);
        if (name_len == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            char tmp[24];
            uint64_t cl;
            if (vlen >= sizeof(tmp))
                return fail("bad Content-Length");
            memcpy(tmp, v, vlen);
            tmp[vlen] = '\0';
            while (vlen > 0 && (tmp[vlen - 1] == ' ' || tmp[vlen - 1] == '\t'))
                tmp[--vlen] = '\0';
            if (!bench_parse_u64(tmp, 0, RESPONSE_MAX_BYTES, &cl))
                return fail("bad Content-Length '%s'", tmp);
            hs->content_length = (int64_t)cl;
        } else if (name_len == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
            hs->chunked = vlen >= 7 && strncasecmp(eol - 7, "chunked", 7) == 0;
        } else if (name_len == 10 && strncasecmp(p, "Connection", 10) == 0) {
            hs->close_after = vlen >= 5 && strncasecmp(v, "close", 5) == 0;
        }
    }
    if (hs->chunked)
        hs->content_length = -1;
    else if (hs->content_length < 0)
        return fail("a response with neither Content-Length nor chunked encoding");
    return 0;
}

/* Decodes what has arrived of a chunked body into hs->body; sets complete
 * after the last chunk and its trailers. */
static int http_dechunk(struct http_side *hs)
{
    for (;;) {
        const char *p = hs->raw.p + hs->ch_pos;
        size_t avail = hs->raw.len - hs->ch_pos;
        const char *eol;

        switch (hs->ch) {
        case CH_SIZE: {
            eol = memmem(p, avail, "\r\n", 2);
            if (!eol)
                return 0;
            char *endp;
            errno = 0;
            unsigned long long size = strtoull(p, &endp, 16);
            if (endp == p || errno || (*endp != '\r' && *endp != ';'))
                return fail("bad chunk size line");
            hs->ch_pos += (size_t)(eol - p) + 2;
            hs->ch_left = size;
            hs->ch = size == 0 ? CH_TRAILER : CH_DATA;
            break;
        }
        case CH_DATA: {
            size_t k = avail < hs->ch_left ? avail : (size_t)hs->ch_left;
            if (k == 0)
                return 0;
            if (!buf_add(&hs->body, p, k))
                return fail("response body over %u bytes", RESPONSE_MAX_BYTES);
            hs->ch_pos += k;
            hs->ch_left -= k;
            if (hs->ch_left == 0)
                hs->ch = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (avail < 2)
                return 0;
            if (p[0] != '\r' || p[1] != '\n')
                return fail("chunk data not followed by CRLF");
            hs->ch_pos += 2;
            hs->ch = CH_SIZE;
            break;
        case CH_TRAILER:
            eol = memmem(p, avail, "\r\n", 2);
            if (!eol)
                return 0;
            hs->ch_pos += (size_t)(eol - p) + 2;
            if (eol == p) {
                hs->ch = CH_DONE;
                hs->complete = true;
                return 0;
            }
            break;
        case CH_DONE: return 0;
        }
    }
}

/* Splits the new complete SSE events of hs->body; the first `data:` event
 * whose choices[0].text is not empty sets out_t->first_ns to t_ns. */
static int http_scan_sse(struct http_side *hs, int64_t t_ns, struct req_times *out_t)
{
    for (;;) {
        const char *ev = hs->body.p + hs->sse_pos;
        const char *end =
            hs->body.len > hs->sse_pos ? memmem(ev, hs->body.len - hs->sse_pos, "\n\n", 2) : NULL;
        if (!end)
            return 0;
        hs->sse_pos = (size_t)(end - hs->body.p) + 2;
        if (strncmp(ev, "data: ", 6) != 0 || out_t->first_ns >= 0)
            continue;
        ev += 6;
        if (strncmp(ev, "[DONE]", 6) == 0)
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(ev, (size_t)(end - ev), 0, &jerr);
        if (!o)
            return fail("SSE event is not JSON: %s", jerr.text);
        if (json_object_get(o, "error")) {
            json_decref(o);
            return fail("SSE error event: %.*s", (int)(end - ev), ev);
        }
        const char *text = json_string_value(
            json_object_get(json_array_get(json_object_get(o, "choices"), 0), "text"));
        if (text && *text)
            out_t->first_ns = t_ns;
        json_decref(o);
    }
}

/* One request on the keep-alive connection (reconnecting first if the last
 * response closed it): send req, read the whole response. out_t->done_ns is
 * the read that completed it; with stream, first_ns is the read that
 * completed the first SSE event with text. */
static int http_request(struct http_side *hs, const struct options *o, const char *req,
                        size_t req_len, bool stream, struct req_times *out_t)
{
    struct req_times t = {-1, -1};
    char rb[65536];
    int64_t t0, deadline;

    if (hs->fd < 0) {
        if (http_connect(hs) < 0)
            return -1;
        hs->n_reconnects++;
    }
    hs->raw.len = 0;
    hs->body.len = 0;
    hs->head_done = false;
    hs->complete = false;
    hs->ch = CH_SIZE;
    hs->ch_pos = 0;
    hs->sse_pos = 0;

    t0 = bench_now_ns();
    deadline = t0 + o->timeout_ns;
    for (size_t off = 0; off < req_len;) {
        ssize_t w = send(hs->fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            http_disconnect(hs);
            return fail("send: %s", strerror(e));
        }
        off += (size_t)w;
    }
    while (!hs->complete) {
        struct pollfd pfd = {.fd = hs->fd, .events = POLLIN};
        int64_t left_ms = (deadline - bench_now_ns() + NS_PER_MS - 1) / NS_PER_MS;
        if (left_ms <= 0 || poll(&pfd, 1, (int)(left_ms > INT_MAX ? INT_MAX : left_ms)) == 0) {
            http_disconnect(hs);
            return fail("no complete response within %" PRId64 " ms", o->timeout_ns / NS_PER_MS);
        }
        ssize_t r = recv(hs->fd, rb, sizeof(rb), 0);
        int64_t t_ns = bench_now_ns() - t0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            http_disconnect(hs);
            return fail("connection %s before the response ended", r == 0 ? "closed" : strerror(e));
        }
        if (!buf_add(&hs->raw, rb, (size_t)r)) {
            http_disconnect(hs);
            return fail("response over %u bytes", RESPONSE_MAX_BYTES);
        }
        if (!hs->head_done) {
            const char *e = memmem(hs->raw.p, hs->raw.len, "\r\n\r\n", 4);
            if (!e)
                continue;
            hs->head_done = true;
            hs->head_len = (size_t)(e - hs->raw.p) + 4;
            hs->ch_pos = hs->head_len;
            if (http_parse_head(hs) < 0)
                goto bad;
        }
        if (hs->chunked) {
            if (http_dechunk(hs) < 0)
                goto bad;
        } else {
            size_t have = hs->raw.len - hs->head_len;
            if (have > (size_t)hs->content_length)
                have = (size_t)hs->content_length;
            hs->body.len = 0;
            if (!buf_add(&hs->body, hs->raw.p + hs->head_len, have))
                goto bad;
            hs->ch_pos = hs->head_len + have;
            hs->complete = have == (size_t)hs->content_length;
        }
        if (stream && hs->status == 200 && http_scan_sse(hs, t_ns, &t) < 0)
            goto bad;
        if (hs->complete)
            t.done_ns = t_ns;
    }
    /* One request at a time: nothing may follow the response. */
    if (hs->ch_pos != hs->raw.len) {
        fail("%zu bytes after the response", hs->raw.len - hs->ch_pos);
        goto bad;
    }
    if (hs->close_after)
        http_disconnect(hs);
    if (hs->status != 200)
        return fail("HTTP %d: %.300s", hs->status, hs->body.len ? hs->body.p : "");
    if (stream && t.first_ns < 0)
        return fail("a streamed response without a text chunk");
    if (!stream) {
        json_error_t jerr;
        json_t *b = json_loadb(hs->body.p, hs->body.len, 0, &jerr);
        bool ok = json_is_array(json_object_get(b, "choices"));
        json_decref(b);
        if (!ok)
            return fail("a response without choices: %.300s", hs->body.len ? hs->body.p : "");
    }
    *out_t = t;
    return 0;

bad:
    http_disconnect(hs);
    return -1;
}

/* The full HTTP request of one row, malloc'd. */
static char *http_build(const struct http_side *hs, const char *prompt_q, const char *model_q,
                        uint64_t max_tokens, bool stream, size_t *out_len)
{
    char *body = NULL, *req = NULL;
    int blen, rlen;

    blen = asprintf(&body, "{\"prompt\":%s,\"max_tokens\":%" PRIu64 ",\"temperature\":0%s%s%s}",
                    prompt_q, max_tokens, stream ? ",\"stream\":true" : "",
                    model_q ? ",\"model\":" : "", model_q ? model_q : "");
    if (blen < 0)
        return NULL;
    rlen = asprintf(&req,
                    "POST /v1/completions HTTP/1.1\r\nHost: %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                    hs->authority, blen, body);
    free(body);
    if (rlen < 0)
        return NULL;
    *out_len = (size_t)rlen;
    return req;
}

/* ---------------------------------------------------------------- main */

enum row { ROW_NATS_RTT, ROW_HTTP_RTT, ROW_NATS_TTFT, ROW_HTTP_TTFT, N_ROWS };
static const char *const row_names[N_ROWS] = {"nats_rtt", "http_rtt", "nats_ttft", "http_ttft"};

struct run {
    const struct options *o;
    struct nats_side ns;
    struct http_side hs;
    char *prompt_q;
    char *model_q;
    struct samples rows[N_ROWS];
};

static int run_row(struct run *r, enum row row)
{
    const struct options *o = r->o;
    const bool nats = row == ROW_NATS_RTT || row == ROW_NATS_TTFT;
    const bool ttft = row == ROW_NATS_TTFT || row == ROW_HTTP_TTFT;
    const uint64_t max_tokens = ttft ? o->max_tokens : 1;
    char *req = NULL;
    size_t req_len = 0;
    int rc = 0;

    if (!nats) {
        req = http_build(&r->hs, r->prompt_q, r->model_q, max_tokens, ttft, &req_len);
        if (!req)
            return fail("no memory for the HTTP request");
        /* Each HTTP row runs on one connection, opened here. */
        if (http_connect(&r->hs) < 0) {
            free(req);
            return -1;
        }
    }
    for (uint64_t i = 0; i < o->n_warmup + o->n_requests; i++) {
        struct req_times t;
        rc = nats ? nats_request(&r->ns, o, r->prompt_q, r->model_q, max_tokens, &t)
                  : http_request(&r->hs, o, req, req_len, ttft, &t);
        if (rc < 0)
            break;
        if (i >= o->n_warmup)
            samples_add(&r->rows[row], ttft ? t.first_ns : t.done_ns);
    }
    free(req);
    return rc;
}

int main(int argc, char **argv)
{
    struct options opt;
    struct run r;
    char subject[SUBJECT_MAX];
    int rc = 1;

    parse_args(argc, argv, &opt);
    if (!opt.subject) {
        default_subject(&opt, subject, sizeof(subject));
        opt.subject = subject;
    }
    memset(&r, 0, sizeof(r));
    r.o = &opt;
    r.hs.fd = -1;
    r.prompt_q = json_quote(opt.prompt);
    r.model_q = opt.model ? json_quote(opt.model) : NULL;
    if (!r.prompt_q || (opt.model && !r.model_q)) {
        fail("--prompt/--model: not valid UTF-8");
        goto out;
    }
    for (int i = 0; i < N_ROWS; i++)
        if (samples_init(&r.rows[i], opt.n_requests) < 0)
            goto out;
    if (opt.nats_url && nats_open(&r.ns, &opt) < 0)
        goto out;
    if (opt.http_addr && http_resolve(&r.hs, opt.http_addr) < 0)
        goto out;

    printf("prompt %s, %" PRIu64 " requests per row after %" PRIu64
           " warm-up, one at a time; ttft rows: max tokens %" PRIu64 "\n",
           r.prompt_q, opt.n_requests, opt.n_warmup, opt.max_tokens);
    if (opt.nats_url)
        printf("nats %s, subject %s\n", opt.nats_url, opt.subject);
    if (opt.http_addr)
        printf("http %s, one keep-alive connection per row\n", opt.http_addr);
    fflush(stdout);
    for (int row = 0; row < N_ROWS; row++) {
        bool nats = row == ROW_NATS_RTT || row == ROW_NATS_TTFT;
        if (nats ? !opt.nats_url : !opt.http_addr)
            continue;
        if (run_row(&r, (enum row)row) < 0) {
            fail("%s: stopped after %zu measured requests", row_names[row], r.rows[row].n);
            goto out;
        }
    }
    printf("\n| row | n | mean us | p50 us | p99 us |\n|---|---|---|---|---|\n");
    for (int row = 0; row < N_ROWS; row++)
        print_row(row_names[row], &r.rows[row]);
    if (opt.nats_url && (r.ns.n_empty_first || r.ns.n_stale))
        printf("\nnats: %" PRIu64 " first token events with empty text, %" PRIu64
               " stale events skipped\n",
               r.ns.n_empty_first, r.ns.n_stale);
    if (r.hs.n_reconnects)
        printf("http: the server closed the connection %" PRIu64 " times (reconnected)\n",
               r.hs.n_reconnects);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    if (opt.nats_url)
        nats_close(&r.ns);
    http_disconnect(&r.hs);
    free(r.hs.raw.p);
    free(r.hs.body.p);
    for (int i = 0; i < N_ROWS; i++)
        free(r.rows[i].v);
    free(r.prompt_q);
    free(r.model_q);
    if (opt.nats_url)
        nats_Close();
    return rc;
}
