/* inferd-http-load: an HTTP/1.1 load generator and latency benchmark, libc
 * only. One thread and one epoll instance (edge-triggered) drive up to N
 * non-blocking connections ("slots"); each slot runs requests one after
 * another until M have been started. Every request ends exactly once: a
 * complete, well-formed response (counted by status) or one error kind;
 * nothing is retried. Usage: --help. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

#define PROG "inferd-http-load"
#define usage_error(...) bench_usage_error(PROG, __VA_ARGS__)
#define fatal(...) bench_error(1, PROG, __VA_ARGS__)

#define CONCURRENCY_MAX 10000
#define REQUESTS_MAX 10000000u     /* per-request samples are kept */
#define USER_HEADERS_MAX 64        /* --header options */
#define BODY_MAX_BYTES (64u << 20) /* --body / --body-file */
#define LINE_MAX_BYTES 16384       /* status, header, chunk-size, trailer line */
#define HEAD_MAX_BYTES 65536       /* status line + headers; trailers alike */
#define RECV_BUF_BYTES 65536
#define EVENTS_MAX 512
#define FDS_SPARE 32 /* stdio, epoll, files: beyond one per slot */
#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)
#define STATUS_MIN 100
#define STATUS_MAX 599

static const char usage_text[] =
    "usage: " PROG " --url http://HOST[:PORT]/PATH --concurrency N [options]\n"
    "\n"
    "Opens up to N connections at once, sends each request and reads the full\n"
    "HTTP/1.1 response (Content-Length, chunked, or until close).\n"
    "\n"
    "  --url URL             http:// only; the host is resolved once at start\n"
    "  --concurrency N       connections open at once, 1..10000\n"
    "  --requests M          total requests, 1..10000000 (default: N)\n"
    "  --method POST|GET     default: POST with a body, else GET\n"
    "  --body JSON           request body (Content-Type: application/json)\n"
    "  --body-file FILE      request body read from FILE (at most 64 MiB)\n"
    "  --header 'K: V'       extra request header, repeatable (at most 64)\n"
    "  --api-key KEY         sends Authorization: Bearer KEY\n"
    "  --keep-alive          reuse connections (default: one per request)\n"
    "  --timeout-s S         per-request limit from connect start, default 60;\n"
    "                        no complete response by then counts as timeout\n"
    "  --ramp-ms MS          spread the first connects over MS (default 0)\n"
    "  --json                print one JSON object instead of the table\n"
    "  --help                this text\n"
    "\n"
    "Every request sent ends as completed (counted by status) or as one error:\n"
    "connect (no connection), reset (closed or reset before any response byte),\n"
    "truncated (closed mid-response), malformed (response breaks HTTP/1.1),\n"
    "timeout. completed + errors == sent. Latency runs from the first byte\n"
    "written to the last byte read; ttfb to the first body byte (the end of the\n"
    "head when the body is empty); connect_ms covers new connections.\n"
    "Exit status: 0 when it ran (even with errors), 2 usage error, 1 when it\n"
    "could not run.\n";

enum err_kind { ERR_CONNECT, ERR_RESET, ERR_TRUNCATED, ERR_MALFORMED, ERR_TIMEOUT, N_ERR_KINDS };
static const char *const err_names[N_ERR_KINDS] = {"connect", "reset", "truncated", "malformed",
                                                   "timeout"};

struct options {
    const char *url;
    const char *method; /* "GET" or "POST" */
    const char *body;   /* --body, borrowed from argv */
    const char *body_file;
    const char *headers[USER_HEADERS_MAX]; /* borrowed from argv */
    size_t n_headers;
    const char *api_key;
    uint32_t concurrency;
    uint64_t n_requests; /* 0 until defaulted to concurrency */
    bool keep_alive;
    int64_t timeout_ns;
    int64_t ramp_ns;
    bool json;
};

struct target {
    char host[256];      /* as in the URL, brackets of IPv6 removed */
    char authority[300]; /* Host header value: host[:port] as written */
    char port[8];
    const char *path; /* borrowed from the URL, "/" when empty */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int family;
};

enum conn_state { CONN_IDLE, CONN_CONNECTING, CONN_ACTIVE };

/* Where the response parser is; the line-based states take input through
 * next_line(). */
enum parse_state {
    P_STATUS,      /* status line */
    P_HEADER,      /* header lines up to the empty one */
    P_LENGTH,      /* body of Content-Length bytes */
    P_CHUNK_SIZE,  /* chunk-size line */
    P_CHUNK_DATA,  /* chunk data */
    P_CHUNK_END,   /* the CRLF after chunk data */
    P_TRAILER,     /* trailer lines up to the empty one */
    P_UNTIL_CLOSE, /* body delimited by the server closing */
    P_DONE,
};

/* One slot: a connection (or none) and the request it is running. */
struct conn {
    int fd; /* -1 when closed */
    enum conn_state state;
    bool queued;              /* in run.ready */
    struct conn *prev, *next; /* in-flight list, oldest (= earliest deadline) first */
    int64_t t_begin;          /* ns: request start (connect start when new) */
    int64_t t_send;           /* ns: first byte written */
    int64_t t_head;           /* ns: end of the response head */
    int64_t t_body;           /* ns: first body byte, 0 before */
    size_t n_sent;            /* request bytes written */
    bool send_done;
    bool send_failed;
    /* Response parser. */
    enum parse_state ps;
    int status;
    bool http10;
    bool close_after;     /* no further request may use the connection */
    bool conn_keep_alive; /* "Connection: keep-alive" seen */
    bool have_len;
    bool te_seen, te_chunked; /* Transfer-Encoding seen; last coding is chunked */
    uint64_t len;             /* Content-Length */
    uint64_t remaining;       /* bytes left of the body or of this chunk */
    size_t head_bytes;        /* head (or trailer) bytes so far */
    uint64_t bytes_in;        /* response bytes read */
    uint64_t body_bytes;      /* decoded body bytes */
    char *line;               /* LINE_MAX_BYTES, allocated on first split line */
    size_t line_len;
    const char *why; /* malformed: what was wrong (static string) */
};

struct sample_set {
    int64_t *v; /* ns, capacity n_requests */
    size_t n;
};

struct stats {
    uint64_t sent, completed;
    uint64_t errors[N_ERR_KINDS];
    char first_error[N_ERR_KINDS][200];
    uint64_t by_status[STATUS_MAX + 1];
    uint64_t connections; /* connections opened */
    uint64_t bytes_in, body_bytes;
    struct sample_set lat, lat_200, ttfb, connect;
    int64_t t_start, t_end;
};

struct run {
    const struct options *opt;
    const struct target *tgt;
    const char *req; /* the request bytes, the same for every request */
    size_t req_len;
    int epfd;
    struct conn *conns;
    uint32_t n_conns;
    uint32_t *ready; /* slots due to start their next request (stack) */
    uint32_t n_ready;
    struct conn *head, *tail; /* in flight */
    uint64_t next_req;        /* requests started */
    uint64_t n_done;          /* requests ended */
    struct stats st;
};

static char rbuf[RECV_BUF_BYTES];

/* ---------------------------------------------------------------- helpers */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

struct buf {
    char *p;
    size_t len, cap;
};

static bool buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
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

static bool buf_str(struct buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

/* ------------------------------------------------------------ command line */

/* A --header value: "Name: value", a token name, no CR/LF. Writes the name
 * length. */
static void check_header(const char *h, size_t *out_name_len)
{
    const char *colon = strchr(h, ':');
    size_t i, n;

    if (!colon || colon == h)
        usage_error("--header must look like 'Name: value', got '%s'", h);
    n = (size_t)(colon - h);
    for (i = 0; i < n; i++)
        if (!is_tchar((unsigned char)h[i]))
            usage_error("--header name '%.*s' has a character not allowed in an HTTP field name",
                        (int)n, h);
    if (strpbrk(h, "\r\n"))
        usage_error("--header '%.*s' must not contain CR or LF", (int)n, h);
    *out_name_len = n;
}

static const char *take_value(int argc, char **argv, int *i, const char *name, const char *inline_v)
{
    if (inline_v)
        return inline_v;
    if (*i + 1 >= argc)
        usage_error("%s needs a value", name);
    return argv[++*i];
}

static void parse_args(int argc, char **argv, struct options *o)
{
    bool seen_conc = false;
    uint64_t v;

    memset(o, 0, sizeof(*o));
    o->timeout_ns = 60 * NS_PER_S;
    for (int i = 1; i < argc; i++) {
        char name[64];
        const char *a = argv[i], *eq, *val;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0)
            usage_error("unexpected argument '%s'", a);
        /* "--name=value" and "--name value" are both accepted. */
        eq = strchr(a, '=');
        if (eq && (size_t)(eq - a) < sizeof(name)) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            eq++;
        } else {
            snprintf(name, sizeof(name), "%s", a);
            eq = NULL;
        }
        if (strcmp(name, "--keep-alive") == 0 || strcmp(name, "--json") == 0) {
            if (eq)
                usage_error("%s takes no value", name);
            if (name[2] == 'k')
                o->keep_alive = true;
            else
                o->json = true;
            continue;
        }
        if (strcmp(name, "--url") == 0) {
            o->url = take_value(argc, argv, &i, name, eq);
        } else if (strcmp(name, "--method") == 0) {
            val = take_value(argc, argv, &i, name, eq);
            if (strcmp(val, "POST") != 0 && strcmp(val, "GET") != 0)
                usage_error("--method must be POST or GET, got '%s'", val);
            o->method = val;
        } else if (strcmp(name, "--body") == 0) {
            o->body = take_value(argc, argv, &i, name, eq);
        } else if (strcmp(name, "--body-file") == 0) {
            o->body_file = take_value(argc, argv, &i, name, eq);
        } else if (strcmp(name, "--header") == 0) {
            size_t nlen;

            val = take_value(argc, argv, &i, name, eq);
            if (o->n_headers == USER_HEADERS_MAX)
                usage_error("at most %d --header options", USER_HEADERS_MAX);
            check_header(val, &nlen);
            if (name_is(val, nlen, "content-length") || name_is(val, nlen, "transfer-encoding") ||
                name_is(val, nlen, "connection"))
                usage_error("--header '%.*s' is set by the tool (see --keep-alive)", (int)nlen,
                            val);
            o->headers[o->n_headers++] = val;
        } else if (strcmp(name, "--api-key") == 0) {
            o->api_key = take_value(argc, argv, &i, name, eq);
            if (!*o->api_key || strpbrk(o->api_key, "\r\n"))
                usage_error("--api-key must be non-empty without CR or LF");
        } else if (strcmp(name, "--concurrency") == 0) {
            val = take_value(argc, argv, &i, name, eq);
            if (!bench_parse_u64(val, 1, CONCURRENCY_MAX, &v))
                usage_error("--concurrency must be an integer in 1..%d, got '%s'", CONCURRENCY_MAX,
                            val);
            o->concurrency = (uint32_t)v;
            seen_conc = true;
        } else if (strcmp(name, "--requests") == 0) {
            val = take_value(argc, argv, &i, name, eq);
            if (!bench_parse_u64(val, 1, REQUESTS_MAX, &v))
                usage_error("--requests must be an integer in 1..%u, got '%s'", REQUESTS_MAX, val);
            o->n_requests = v;
        } else if (strcmp(name, "--timeout-s") == 0) {
            char *end;
            double s;

            val = take_value(argc, argv, &i, name, eq);
            errno = 0;
            s = strtod(val, &end);
            if (errno || end == val || *end || !(s > 0 && s <= 86400))
                usage_error("--timeout-s must be a number of seconds in (0, 86400], got '%s'", val);
            o->timeout_ns = (int64_t)(s * 1e9);
            if (o->timeout_ns < 1)
                o->timeout_ns = 1;
        } else if (strcmp(name, "--ramp-ms") == 0) {
            val = take_value(argc, argv, &i, name, eq);
            if (!bench_parse_u64(val, 0, 3600000, &v))
                usage_error("--ramp-ms must be an integer in 0..3600000, got '%s'", val);
            o->ramp_ns = (int64_t)v * NS_PER_MS;
        } else {
            usage_error("unknown option '%s'", name);
        }
    }
    if (!o->url)
        usage_error("--url is required");
    if (!seen_conc)
        usage_error("--concurrency N is required");
    if (o->body && o->body_file)
        usage_error("--body and --body-file are mutually exclusive");
    if (!o->method)
        o->method = (o->body || o->body_file) ? "POST" : "GET";
    if (strcmp(o->method, "GET") == 0 && (o->body || o->body_file))
        usage_error("a body needs --method POST");
    if (o->api_key)
        for (size_t h = 0; h < o->n_headers; h++)
            if (strncasecmp(o->headers[h], "authorization:", 14) == 0)
                usage_error("--api-key and --header 'Authorization: ...' conflict");
    if (!o->n_requests)
        o->n_requests = o->concurrency;
}

/* http://host[:port][/path]; IPv6 hosts in brackets. */
static void parse_url(const char *url, struct target *t)
{
    const char *p, *auth_end, *host, *host_end, *port = NULL;
    size_t n;

    memset(t, 0, sizeof(*t));
    if (strncasecmp(url, "http://", 7) != 0) {
        if (strncasecmp(url, "https://", 8) == 0)
            usage_error("--url: https is not supported, use http://");
        usage_error("--url must start with http://, got '%s'", url);
    }
    p = url + 7;
    auth_end = p + strcspn(p, "/?#");
    if (*auth_end == '#' || strchr(auth_end, '#'))
        usage_error("--url must not have a #fragment, got '%s'", url);
    if (memchr(p, '@', (size_t)(auth_end - p)))
        usage_error("--url must not have user info, got '%s'", url);
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (!host_end)
            usage_error("--url: unterminated '[' in '%s'", url);
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':')
                usage_error("--url: junk after ']' in '%s'", url);
            port = host_end + 2;
        }
    } else {
        host = p;
        host_end = memchr(p, ':', (size_t)(auth_end - p));
        if (host_end)
            port = host_end + 1;
        else
            host_end = auth_end;
    }
    n = (size_t)(host_end - host);
    if (n == 0 || n >= sizeof(t->host))
        usage_error("--url has no host (or one too long): '%s'", url);
    memcpy(t->host, host, n);
    if (port) {
        char pbuf[16];
        uint64_t v;
        size_t plen = (size_t)(auth_end - port);

        if (plen == 0 || plen >= sizeof(pbuf))
            usage_error("--url: bad port in '%s'", url);
        memcpy(pbuf, port, plen);
        pbuf[plen] = '\0';
        if (!bench_parse_u64(pbuf, 1, 65535, &v))
            usage_error("--url: port must be 1..65535, got '%s'", pbuf);
        snprintf(t->port, sizeof(t->port), "%u", (unsigned)v);
    } else {
        snprintf(t->port, sizeof(t->port), "80");
    }
    n = (size_t)(auth_end - p);
    if (n >= sizeof(t->authority))
        usage_error("--url: host too long in '%s'", url);
    memcpy(t->authority, p, n);
    t->path = *auth_end ? auth_end : "/";
    if (strpbrk(t->path, " \t\r\n"))
        usage_error("--url: the path must not contain spaces or control characters");
}

static int resolve(struct target *t)
{
    struct addrinfo hints, *res = NULL;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc != 0 || !res)
        return fatal("cannot resolve '%s': %s", t->host, rc ? gai_strerror(rc) : "no address");
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = res->ai_addrlen;
    t->family = res->ai_family;
    freeaddrinfo(res);
    return 0;
}

static int read_body_file(const char *path, char **out_body, size_t *out_len)
{
    FILE *f = fopen(path, "rbe");
    struct stat sb;
    char *p;

    if (!f)
        return fatal("--body-file '%s': %s", path, strerror(errno));
    if (fstat(fileno(f), &sb) < 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return fatal("--body-file '%s': not a regular file", path);
    }
    if ((uint64_t)sb.st_size > BODY_MAX_BYTES) {
        fclose(f);
        return fatal("--body-file '%s': larger than %u bytes", path, BODY_MAX_BYTES);
    }
    p = malloc((size_t)sb.st_size + 1);
    if (!p) {
        fclose(f);
        return fatal("--body-file '%s': no memory", path);
    }
    if (fread(p, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
        fclose(f);
        free(p);
        return fatal("--body-file '%s': short read", path);
    }
    fclose(f);
    *out_body = p;
    *out_len = (size_t)sb.st_size;
    return 0;
}

static bool user_has(const struct options *o, const char *name)
{
    size_t n = strlen(name);

    for (size_t h = 0; h < o->n_headers; h++)
        if (strncasecmp(o->headers[h], name, n) == 0 && o->headers[h][n] == ':')
            return true;
    return false;
}

/* The request bytes, built once: the same request goes out every time. */
static int build_request(const struct options *o, const struct target *t, const char *body,
                         size_t body_len, struct buf *out)
{
    char num[32];
    bool ok = true;

    ok = ok && buf_str(out, o->method) && buf_str(out, " ") && buf_str(out, t->path) &&
         buf_str(out, " HTTP/1.1\r\n");
    if (!user_has(o, "host"))
        ok = ok && buf_str(out, "Host: ") && buf_str(out, t->authority) && buf_str(out, "\r\n");
    if (!user_has(o, "user-agent"))
        ok = ok && buf_str(out, "User-Agent: " PROG "\r\n");
    if (!user_has(o, "accept"))
        ok = ok && buf_str(out, "Accept: */*\r\n");
    if (strcmp(o->method, "POST") == 0) {
        if (!user_has(o, "content-type"))
            ok = ok && buf_str(out, "Content-Type: application/json\r\n");
        snprintf(num, sizeof(num), "%zu", body_len);
        ok = ok && buf_str(out, "Content-Length: ") && buf_str(out, num) && buf_str(out, "\r\n");
    }
    if (o->api_key)
        ok = ok && buf_str(out, "Authorization: Bearer ") && buf_str(out, o->api_key) &&
             buf_str(out, "\r\n");
    ok = ok && buf_str(out, o->keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    for (size_t h = 0; h < o->n_headers; h++)
        ok = ok && buf_str(out, o->headers[h]) && buf_str(out, "\r\n");
    ok = ok && buf_str(out, "\r\n") && buf_add(out, body ? body : "", body_len);
    return ok ? 0 : fatal("no memory for the request");
}

/* --------------------------------------------------------- response parser */

/* Takes the next line from (*p, *n), joining it with a part kept from earlier
 * reads. Returns 1 with the line (without CRLF or LF) in out_line/out_len, 0
 * when the input ran out first (the part is kept), -1 when it is too long.
 * A line returned from c->line stays valid until the next call. */
static int next_line(struct conn *c, const char **p, size_t *n, const char **out_line,
                     size_t *out_len)
{
    const char *nl = memchr(*p, '\n', *n);
    size_t take = nl ? (size_t)(nl - *p) + 1 : *n;
    const char *line;
    size_t len;

    if (c->line_len == 0 && nl) {
        line = *p;
        len = take;
    } else {
        if (c->line_len + take > LINE_MAX_BYTES)
            return -1;
        if (!c->line) {
            c->line = malloc(LINE_MAX_BYTES);
            if (!c->line)
                return -1;
        }
        memcpy(c->line + c->line_len, *p, take);
        c->line_len += take;
        if (!nl) {
            *p += take;
            *n -= take;
            return 0;
        }
        line = c->line;
        len = c->line_len;
        c->line_len = 0;
    }
    if (len > LINE_MAX_BYTES)
        return -1;
    *p += take;
    *n -= take;
    len--; /* the LF */
    if (len && line[len - 1] == '\r')
        len--;
    *out_line = line;
    *out_len = len;
    return 1;
}

static int bad(struct conn *c, const char *why)
{
    c->why = why;
    return -1;
}

static int parse_status_line(struct conn *c, const char *s, size_t n)
{
    /* "HTTP/1.x SP 3DIGIT [SP reason]" */
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ')
        return bad(c, "bad status line");
    if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
        return bad(c, "bad status code");
    if (n > 12 && s[12] != ' ')
        return bad(c, "bad status line");
    for (size_t i = 12; i < n; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
            return bad(c, "control character in status line");
    c->http10 = s[7] == '0';
    c->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    return 0;
}

static const char *trim(const char *s, size_t *n)
{
    while (*n && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        (*n)--;
    }
    while (*n && (s[*n - 1] == ' ' || s[*n - 1] == '\t'))
        (*n)--;
    return s;
}

/* Does the comma-separated list (v, n) hold token want (case-insensitive)?
 * With last_only, only its last element counts. */
static bool list_has(const char *v, size_t n, const char *want, bool last_only)
{
    bool found = false;

    while (n) {
        const char *comma = memchr(v, ',', n);
        size_t len = comma ? (size_t)(comma - v) : n;
        size_t tl = len;
        const char *tok = trim(v, &tl);
        bool is = name_is(tok, tl, want);

        if (last_only)
            found = is;
        else if (is)
            return true;
        if (!comma)
            break;
        v = comma + 1;
        n -= len + 1;
    }
    return found;
}

static int parse_header(struct conn *c, const char *s, size_t n)
{
    const char *colon = memchr(s, ':', n);
    const char *v;
    size_t name_len, vlen;

    if (s[0] == ' ' || s[0] == '\t')
        return bad(c, "obsolete header folding");
    if (!colon || colon == s)
        return bad(c, "header line without a name");
    name_len = (size_t)(colon - s);
    for (size_t i = 0; i < name_len; i++)
        if (!is_tchar((unsigned char)s[i]))
            return bad(c, "bad character in a header name");
    vlen = n - name_len - 1;
    v = trim(colon + 1, &vlen);
    for (size_t i = 0; i < vlen; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return bad(c, "control character in a header value");
    if (name_is(s, name_len, "content-length")) {
        uint64_t len = 0;

        if (vlen == 0 || vlen > 19)
            return bad(c, "bad Content-Length");
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return bad(c, "bad Content-Length");
            len = len * 10 + (uint64_t)(v[i] - '0');
        }
        if (c->have_len && c->len != len)
            return bad(c, "conflicting Content-Length headers");
        c->have_len = true;
        c->len = len;
    } else if (name_is(s, name_len, "transfer-encoding")) {
        c->te_seen = true;
        c->te_chunked = list_has(v, vlen, "chunked", true);
    } else if (name_is(s, name_len, "connection")) {
        if (list_has(v, vlen, "close", false))
            c->close_after = true;
        if (list_has(v, vlen, "keep-alive", false))
            c->conn_keep_alive = true;
    }
    return 0;
}

/* The head is complete: decide how the body is delimited (RFC 9112 6.3). */
static int head_done(struct conn *c, int64_t now)
{
    if (c->status < 200) {
        /* An interim response (100 Continue, 103): the real one follows.
         * 101 would switch protocols, which this client never asks for. */
        if (c->status == 101)
            return bad(c, "unexpected 101 Switching Protocols");
        c->ps = P_STATUS;
        c->head_bytes = 0;
        c->have_len = c->te_seen = c->te_chunked = false;
        c->close_after = c->conn_keep_alive = false;
        return 0;
    }
    c->t_head = now;
    if (c->http10 && !c->conn_keep_alive)
        c->close_after = true;
    if (c->status == 204 || c->status == 304) {
        c->ps = P_DONE;
    } else if (c->te_seen) {
        /* Transfer-Encoding overrides Content-Length; a final coding other
         * than chunked is delimited by the close. */
        if (c->te_chunked) {
            c->ps = P_CHUNK_SIZE;
        } else {
            c->ps = P_UNTIL_CLOSE;
            c->close_after = true;
        }
        if (c->have_len)
            c->close_after = true;
    } else if (c->have_len) {
        c->remaining = c->len;
        c->ps = c->len ? P_LENGTH : P_DONE;
    } else {
        c->ps = P_UNTIL_CLOSE;
        c->close_after = true;
    }
    return 0;
}

static int parse_chunk_size(struct conn *c, const char *s, size_t n)
{
    uint64_t v = 0;
    size_t i = 0;

    for (; i < n; i++) {
        int d;

        if (s[i] >= '0' && s[i] <= '9')
            d = s[i] - '0';
        else if (s[i] >= 'a' && s[i] <= 'f')
            d = s[i] - 'a' + 10;
        else if (s[i] >= 'A' && s[i] <= 'F')
            d = s[i] - 'A' + 10;
        else
            break;
        if (i >= 15)
            return bad(c, "chunk size too large");
        v = v * 16 + (uint64_t)d;
    }
    if (i == 0)
        return bad(c, "bad chunk size");
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < n && s[i] != ';')
        return bad(c, "bad chunk size");
    if (v == 0) {
        c->ps = P_TRAILER;
        c->head_bytes = 0;
    } else {
        c->remaining = v;
        c->ps = P_CHUNK_DATA;
    }
    return 0;
}

static void take_body(struct conn *c, size_t k, int64_t now)
{
    if (k && !c->t_body)
        c->t_body = now;
    c->body_bytes += k;
}

/* Feeds n received bytes to the parser. Returns 1 when the response is
 * complete (*out_used: bytes it took), 0 when it needs more, -1 when the
 * response is malformed (c->why says how). */
static int parse_feed(struct conn *c, const char *p, size_t n, int64_t now, size_t *out_used)
{
    const size_t n0 = n;

    while (n && c->ps != P_DONE) {
        const char *line;
        size_t len, k;
        int rc;

        switch (c->ps) {
        case P_LENGTH:
        case P_CHUNK_DATA:
            k = n < c->remaining ? n : (size_t)c->remaining;
            take_body(c, k, now);
            c->remaining -= k;
            p += k;
            n -= k;
            if (c->remaining == 0)
                c->ps = c->ps == P_LENGTH ? P_DONE : P_CHUNK_END;
            continue;
        case P_UNTIL_CLOSE:
            take_body(c, n, now);
            n = 0;
            continue;
        default: break;
        }
        rc = next_line(c, &p, &n, &line, &len);
        if (rc < 0)
            return bad(c, "line too long");
        if (rc == 0) {
            if (c->ps == P_STATUS || c->ps == P_HEADER || c->ps == P_TRAILER) {
                if (c->head_bytes + c->line_len > HEAD_MAX_BYTES)
                    return bad(c, "response head too large");
            }
            break;
        }
        if (c->ps == P_STATUS || c->ps == P_HEADER || c->ps == P_TRAILER) {
            c->head_bytes += len + 2;
            if (c->head_bytes > HEAD_MAX_BYTES)
                return bad(c,
                           c->ps == P_TRAILER ? "trailers too large" : "response head too large");
        }
        switch (c->ps) {
        case P_STATUS:
            if (parse_status_line(c, line, len) < 0)
                return -1;
            c->ps = P_HEADER;
            break;
        case P_HEADER:
            if (len == 0)
                rc = head_done(c, now);
            else
                rc = parse_header(c, line, len);
            if (rc < 0)
                return -1;
            break;
        case P_CHUNK_SIZE:
            if (parse_chunk_size(c, line, len) < 0)
                return -1;
            break;
        case P_CHUNK_END:
            if (len != 0)
                return bad(c, "chunk data longer than its size");
            c->ps = P_CHUNK_SIZE;
            break;
        case P_TRAILER:
            if (len == 0)
                c->ps = P_DONE;
            else if (!memchr(line, ':', len))
                return bad(c, "bad trailer line");
            break;
        default: return bad(c, "parser state");
        }
    }
    *out_used = n0 - n;
    return c->ps == P_DONE ? 1 : 0;
}

/* ----------------------------------------------------------------- the run */

static void record_error(struct run *r, enum err_kind kind, const char *detail)
{
    struct stats *st = &r->st;

    st->errors[kind]++;
    if (!st->first_error[kind][0])
        snprintf(st->first_error[kind], sizeof(st->first_error[kind]), "%s", detail);
}

static void close_conn(struct run *r, struct conn *c)
{
    if (c->fd >= 0) {
        /* close() drops the epoll registration too; deleting first keeps a
         * duplicated descriptor from delivering events for a dead slot. */
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

static void push_ready(struct run *r, struct conn *c)
{
    if (!c->queued) {
        c->queued = true;
        r->ready[r->n_ready++] = (uint32_t)(c - r->conns);
    }
}

static void unlink_inflight(struct run *r, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        r->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        r->tail = c->prev;
    c->prev = c->next = NULL;
}

/* Ends c's request: with err < 0 as a complete response, else as error err.
 * The slot goes to the ready stack for its next request. */
static void finish(struct run *r, struct conn *c, int err, const char *detail, int64_t now)
{
    struct stats *st = &r->st;
    bool keep = false;

    unlink_inflight(r, c);
    if (err < 0) {
        int64_t lat = now - c->t_send;
        int64_t first = c->t_body ? c->t_body : c->t_head;

        st->completed++;
        st->by_status[c->status]++;
        st->lat.v[st->lat.n++] = lat;
        if (c->status == 200)
            st->lat_200.v[st->lat_200.n++] = lat;
        st->ttfb.v[st->ttfb.n++] = first - c->t_send;
        st->body_bytes += c->body_bytes;
        keep = r->opt->keep_alive && !c->close_after && c->send_done;
    } else {
        record_error(r, (enum err_kind)err, detail);
    }
    st->bytes_in += c->bytes_in;
    st->t_end = now;
    r->n_done++;
    if (!keep)
        close_conn(r, c);
    c->state = CONN_IDLE;
    push_ready(r, c);
}

static void finish_errno(struct run *r, struct conn *c, enum err_kind kind, const char *what, int e,
                         int64_t now)
{
    char msg[160];

    snprintf(msg, sizeof(msg), "%s %.80s:%s: %s", what, r->tgt->host, r->tgt->port, strerror(e));
    finish(r, c, (int)kind, msg, now);
}

/* The connection ended (EOF, or error e when e != 0) before the response
 * was complete, unless the body runs until the close. */
static void on_closed(struct run *r, struct conn *c, int e, int64_t now)
{
    char msg[160];

    if (e == 0 && c->ps == P_UNTIL_CLOSE) {
        c->ps = P_DONE;
        finish(r, c, -1, NULL, now);
        return;
    }
    if (c->bytes_in == 0) {
        if (e == 0 && c->send_failed)
            e = EPIPE;
        snprintf(msg, sizeof(msg), "%s before any response byte",
                 e ? strerror(e) : "connection closed");
        finish(r, c, ERR_RESET, msg, now);
    } else {
        snprintf(msg, sizeof(msg), "%s after %" PRIu64 " response bytes",
                 e ? strerror(e) : "connection closed", c->bytes_in);
        finish(r, c, ERR_TRUNCATED, msg, now);
    }
}

/* Writes what it can of the request, then reads what has arrived. The
 * response is read even while the request is still going out: a server may
 * answer (503) before reading the whole body. */
static void do_io(struct run *r, struct conn *c, int64_t now)
{
    while (!c->send_done && !c->send_failed) {
        ssize_t w = send(c->fd, r->req + c->n_sent, r->req_len - c->n_sent, MSG_NOSIGNAL);

        if (w > 0) {
            c->n_sent += (size_t)w;
            if (c->n_sent == r->req_len)
                c->send_done = true;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            /* The peer reset or closed: whatever it sent before still
             * decides how this request ends, so read on. */
            c->send_failed = true;
        }
    }
    for (;;) {
        ssize_t got = recv(c->fd, rbuf, sizeof(rbuf), 0);
        size_t used = 0;
        int rc;

        if (got > 0) {
            /* A fresh time: the caller's may predate the send above. */
            now = bench_now_ns();
            c->bytes_in += (uint64_t)got;
            rc = parse_feed(c, rbuf, (size_t)got, now, &used);
            if (rc < 0) {
                finish(r, c, ERR_MALFORMED, c->why, now);
                return;
            }
            if (rc == 1) {
                if (used < (size_t)got) {
                    finish(r, c, ERR_MALFORMED, "bytes after the end of the response", now);
                    return;
                }
                finish(r, c, -1, NULL, now);
                return;
            }
        } else if (got == 0) {
            on_closed(r, c, 0, bench_now_ns());
            return;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            on_closed(r, c, errno, bench_now_ns());
            return;
        }
    }
}

static void reset_request(struct conn *c)
{
    c->t_send = c->t_head = c->t_body = 0;
    c->n_sent = 0;
    c->send_done = c->send_failed = false;
    c->ps = P_STATUS;
    c->status = 0;
    c->http10 = c->close_after = c->conn_keep_alive = false;
    c->have_len = c->te_seen = c->te_chunked = false;
    c->len = c->remaining = 0;
    c->head_bytes = 0;
    c->bytes_in = c->body_bytes = 0;
    c->line_len = 0;
    c->why = NULL;
}

/* Starts the next request on slot c, on its kept connection or a new one;
 * when none are left the slot closes and stays idle. */
static void begin(struct run *r, struct conn *c, int64_t now)
{
    const struct target *t = r->tgt;
    struct epoll_event ev;
    int fd, one = 1, rc;

    if (r->next_req >= r->opt->n_requests) {
        close_conn(r, c);
        return;
    }
    r->next_req++;
    r->st.sent++;
    reset_request(c);
    c->t_begin = now;
    c->prev = r->tail;
    c->next = NULL;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (c->fd >= 0) {
        c->state = CONN_ACTIVE;
        c->t_send = now;
        do_io(r, c, now);
        return;
    }
    fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        finish_errno(r, c, ERR_CONNECT, "socket for", errno, now);
        return;
    }
    /* Requests go out in one write; Nagle would only add delay. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = connect(fd, (const struct sockaddr *)&t->addr, t->addr_len);
    if (rc < 0 && errno != EINPROGRESS) {
        int e = errno;

        close(fd);
        finish_errno(r, c, ERR_CONNECT, "connect to", e, now);
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int e = errno;

        close(fd);
        finish_errno(r, c, ERR_CONNECT, "epoll_ctl for", e, now);
        return;
    }
    c->fd = fd;
    r->st.connections++;
    if (rc == 0) {
        c->state = CONN_ACTIVE;
        c->t_send = now;
        r->st.connect.v[r->st.connect.n++] = 0;
        do_io(r, c, now);
    } else {
        c->state = CONN_CONNECTING;
    }
}

static void on_event(struct run *r, struct conn *c, uint32_t events, int64_t now)
{
    /* An event fetched in the same batch as the one that ended the request
     * belongs to a connection that is gone or idle. */
    if (c->state == CONN_IDLE || c->fd < 0)
        return;
    if (c->state == CONN_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            finish_errno(r, c, ERR_CONNECT, "connect to", soerr, now);
            return;
        }
        if (!(events & EPOLLOUT)) {
            if (events & (EPOLLERR | EPOLLHUP))
                finish_errno(r, c, ERR_CONNECT, "connect to", ECONNABORTED, now);
            return;
        }
        c->state = CONN_ACTIVE;
        c->t_send = now;
        r->st.connect.v[r->st.connect.n++] = now - c->t_begin;
    }
    do_io(r, c, now);
}

static void expire(struct run *r, int64_t now)
{
    char msg[96];

    while (r->head && r->head->t_begin + r->opt->timeout_ns <= now) {
        struct conn *c = r->head;
        const char *phase = c->state == CONN_CONNECTING ? "connecting"
                            : !c->send_done             ? "sending"
                            : c->bytes_in == 0          ? "waiting for the response"
                                                        : "reading the response";

        snprintf(msg, sizeof(msg), "no complete response after %.3f s (%s)",
                 (double)r->opt->timeout_ns / 1e9, phase);
        finish(r, c, ERR_TIMEOUT, msg, now);
    }
}

static int64_t slot_start(const struct run *r, uint32_t i)
{
    if (r->opt->ramp_ns == 0 || r->n_conns == 1)
        return r->st.t_start;
    return r->st.t_start + (int64_t)((double)r->opt->ramp_ns * i / r->n_conns);
}

static int run_loop(struct run *r)
{
    struct epoll_event evs[EVENTS_MAX];
    uint32_t n_started = 0;

    r->st.t_start = r->st.t_end = bench_now_ns();
    while (r->n_done < r->opt->n_requests) {
        int64_t now = bench_now_ns(), wake = INT64_MAX;
        int timeout_ms, n;

        while (n_started < r->n_conns && slot_start(r, n_started) <= now)
            push_ready(r, &r->conns[n_started++]);
        /* Beginning a request may end it at once (connect refused), which
         * queues the slot again; the loop runs until no slot is due. */
        while (r->n_ready) {
            struct conn *c = &r->conns[r->ready[--r->n_ready]];

            c->queued = false;
            begin(r, c, bench_now_ns());
        }
        if (r->n_done >= r->opt->n_requests)
            break;
        if (n_started < r->n_conns)
            wake = slot_start(r, n_started);
        if (r->head && r->head->t_begin + r->opt->timeout_ns < wake)
            wake = r->head->t_begin + r->opt->timeout_ns;
        if (wake == INT64_MAX) {
            timeout_ms = -1;
        } else {
            int64_t d = wake - bench_now_ns();

            d = d <= 0 ? 0 : (d + NS_PER_MS - 1) / NS_PER_MS;
            timeout_ms = d > INT_MAX ? INT_MAX : (int)d;
        }
        n = epoll_wait(r->epfd, evs, EVENTS_MAX, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fatal("epoll_wait: %s", strerror(errno));
        }
        /* Each event gets its own time: handling a large batch takes long
         * enough to matter at the latencies of a local server. */
        for (int i = 0; i < n; i++)
            on_event(r, evs[i].data.ptr, evs[i].events, bench_now_ns());
        expire(r, bench_now_ns());
    }
    return 0;
}

/* ----------------------------------------------------------------- output */

/* Nearest-rank percentile of sorted s, in ms. */
static double pct_ms(const struct sample_set *s, unsigned p)
{
    return (double)bench_pct(s->v, s->n, p) / 1e6;
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_pcts(const char *key, const struct sample_set *s, bool full)
{
    printf(",\"%s\":", key);
    if (s->n == 0) {
        printf("null");
        return;
    }
    printf("{\"n\":%zu,\"p50\":%.3f", s->n, pct_ms(s, 50));
    if (full)
        printf(",\"p90\":%.3f", pct_ms(s, 90));
    printf(",\"p99\":%.3f", pct_ms(s, 99));
    if (full)
        printf(",\"max\":%.3f", (double)s->v[s->n - 1] / 1e6);
    printf("}");
}

static void table_pcts(const char *label, const struct sample_set *s, bool full)
{
    printf("%-16s", label);
    if (s->n == 0) {
        printf("-\n");
        return;
    }
    printf("p50 %.3f", pct_ms(s, 50));
    if (full)
        printf("  p90 %.3f", pct_ms(s, 90));
    printf("  p99 %.3f", pct_ms(s, 99));
    if (full)
        printf("  max %.3f", (double)s->v[s->n - 1] / 1e6);
    printf("  (n %zu)\n", s->n);
}

static void report(struct run *r)
{
    const struct options *o = r->opt;
    struct stats *st = &r->st;
    struct sample_set *sets[] = {&st->lat, &st->lat_200, &st->ttfb, &st->connect};
    double wall = (double)(st->t_end - st->t_start) / 1e9;
    double rps = wall > 0 ? (double)st->completed / wall : 0;
    bool first;

    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
        qsort(sets[i]->v, sets[i]->n, sizeof(int64_t), bench_cmp_i64);
    if (o->json) {
        printf("{\"url\":");
        json_string(o->url);
        printf(",\"method\":\"%s\",\"concurrency\":%u,\"requests\":%" PRIu64
               ",\"keep_alive\":%s,\"timeout_s\":%.3f",
               o->method, o->concurrency, o->n_requests, o->keep_alive ? "true" : "false",
               (double)o->timeout_ns / 1e9);
        printf(",\"sent\":%" PRIu64 ",\"completed\":%" PRIu64 ",\"status\":{", st->sent,
               st->completed);
        first = true;
        for (int s = STATUS_MIN; s <= STATUS_MAX; s++)
            if (st->by_status[s]) {
                printf("%s\"%d\":%" PRIu64, first ? "" : ",", s, st->by_status[s]);
                first = false;
            }
        printf("},\"errors\":{");
        for (int k = 0; k < N_ERR_KINDS; k++)
            printf("%s\"%s\":%" PRIu64, k ? "," : "", err_names[k], st->errors[k]);
        printf("},\"first_error\":{");
        first = true;
        for (int k = 0; k < N_ERR_KINDS; k++)
            if (st->errors[k]) {
                printf("%s\"%s\":", first ? "" : ",", err_names[k]);
                json_string(st->first_error[k]);
                first = false;
            }
        printf("},\"connections\":%" PRIu64 ",\"bytes_received\":%" PRIu64
               ",\"body_bytes\":%" PRIu64 ",\"wall_s\":%.6f,\"requests_per_s\":%.3f",
               st->connections, st->bytes_in, st->body_bytes, wall, rps);
        json_pcts("latency_ms", &st->lat, true);
        json_pcts("latency_200_ms", &st->lat_200, true);
        json_pcts("ttfb_ms", &st->ttfb, false);
        json_pcts("connect_ms", &st->connect, false);
        printf("}\n");
        return;
    }
    printf("%-16s%s %s (%s, %.3f s timeout)\n", "target", o->method, o->url,
           o->keep_alive ? "keep-alive" : "new connection per request",
           (double)o->timeout_ns / 1e9);
    printf("%-16s%u\n", "concurrency", o->concurrency);
    printf("%-16s%" PRIu64 " of %" PRIu64 "\n", "sent", st->sent, o->n_requests);
    printf("%-16s%" PRIu64 "\n", "completed", st->completed);
    printf("%-16s", "status");
    first = true;
    for (int s = STATUS_MIN; s <= STATUS_MAX; s++)
        if (st->by_status[s]) {
            printf("%s%d: %" PRIu64, first ? "" : "  ", s, st->by_status[s]);
            first = false;
        }
    printf("%s\n", first ? "-" : "");
    printf("%-16s", "errors");
    for (int k = 0; k < N_ERR_KINDS; k++)
        printf("%s%s %" PRIu64, k ? "  " : "", err_names[k], st->errors[k]);
    printf("\n");
    for (int k = 0; k < N_ERR_KINDS; k++)
        if (st->errors[k])
            printf("  first %-9s %s\n", err_names[k], st->first_error[k]);
    printf("%-16s%" PRIu64 "\n", "connections", st->connections);
    printf("%-16s%" PRIu64 " (body %" PRIu64 ")\n", "bytes received", st->bytes_in, st->body_bytes);
    printf("%-16s%.3f s\n", "wall", wall);
    printf("%-16s%.1f\n", "requests/s", rps);
    table_pcts("latency ms", &st->lat, true);
    table_pcts("latency 200 ms", &st->lat_200, true);
    table_pcts("ttfb ms", &st->ttfb, false);
    table_pcts("connect ms", &st->connect, false);
}

/* ------------------------------------------------------------------- main */

/* Raises the soft descriptor limit to the hard one when the slots need more. */
static int ensure_nofile(uint32_t n_conns)
{
    rlim_t need = (rlim_t)n_conns + FDS_SPARE;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return fatal("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
        return fatal("--concurrency %u needs %llu file descriptors, but the hard RLIMIT_NOFILE is "
                     "%llu; raise it (ulimit -Hn) or lower --concurrency",
                     n_conns, (unsigned long long)need, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return fatal("cannot raise the RLIMIT_NOFILE soft limit to %llu for --concurrency %u: %s",
                     (unsigned long long)rl.rlim_cur, n_conns, strerror(errno));
    return 0;
}

int main(int argc, char **argv)
{
    struct options opt;
    struct target tgt;
    struct run r;
    struct buf req = {0};
    char *file_body = NULL;
    const char *body = NULL;
    size_t body_len = 0;
    int rc = 1;

    parse_args(argc, argv, &opt);
    parse_url(opt.url, &tgt);
    if (opt.body) {
        body = opt.body;
        body_len = strlen(opt.body);
        if (body_len > BODY_MAX_BYTES)
            usage_error("--body is longer than %u bytes", BODY_MAX_BYTES);
    } else if (opt.body_file) {
        if (read_body_file(opt.body_file, &file_body, &body_len) != 0)
            return 1;
        body = file_body;
    }
    memset(&r, 0, sizeof(r));
    r.opt = &opt;
    r.tgt = &tgt;
    r.epfd = -1;
    r.n_conns = opt.n_requests < opt.concurrency ? (uint32_t)opt.n_requests : opt.concurrency;
    if (resolve(&tgt) != 0 || build_request(&opt, &tgt, body, body_len, &req) != 0)
        goto out;
    if (ensure_nofile(r.n_conns) != 0)
        goto out;
    r.req = req.p;
    r.req_len = req.len;
    r.conns = calloc(r.n_conns, sizeof(*r.conns));
    r.ready = calloc(r.n_conns, sizeof(*r.ready));
    r.st.lat.v = calloc(opt.n_requests, sizeof(int64_t));
    r.st.lat_200.v = calloc(opt.n_requests, sizeof(int64_t));
    r.st.ttfb.v = calloc(opt.n_requests, sizeof(int64_t));
    r.st.connect.v = calloc(opt.n_requests, sizeof(int64_t));
    if (!r.conns || !r.ready || !r.st.lat.v || !r.st.lat_200.v || !r.st.ttfb.v || !r.st.connect.v) {
        fatal("no memory for %" PRIu64 " requests", opt.n_requests);
        goto out;
    }
    for (uint32_t i = 0; i < r.n_conns; i++)
        r.conns[i].fd = -1;
    r.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (r.epfd < 0) {
        fatal("epoll_create1: %s", strerror(errno));
        goto out;
    }
    if (run_loop(&r) != 0)
        goto out;
    report(&r);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    if (r.conns)
        for (uint32_t i = 0; i < r.n_conns; i++) {
            close_conn(&r, &r.conns[i]);
            free(r.conns[i].line);
        }
    if (r.epfd >= 0)
        close(r.epfd);
    free(r.conns);
    free(r.ready);
    free(r.st.lat.v);
    free(r.st.lat_200.v);
    free(r.st.ttfb.v);
    free(r.st.connect.v);
    free(req.p);
    free(file_body);
    return rc;
}
