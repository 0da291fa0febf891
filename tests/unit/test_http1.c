/* Server: the HTTP/1.1 request-head parser and chunked decoder
 * (src/server/http1.h), black-box against the header's contract. Good heads
 * (views, head_bytes, body kind, keep-alive, Expect), every proper prefix
 * INCOMPLETE, max_head met exactly and passed, each refusal (BAD, TOO_LARGE,
 * VERSION, EXPECT with a reason), the list matcher, and chunked bodies fed
 * whole, split at every point, a byte at a time, in place and into a small
 * output. Inputs are copied into exact-size heap buffers, so the ASan build
 * catches any read past the bytes given. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/server/http1.h"

#define MAX_HEAD 8192

/* A string literal and its length, NULs inside included. */
#define LIT(lit) lit, sizeof(lit) - 1

#define RL11 "GET / HTTP/1.1\r\n"
#define HOST "Host: example.com\r\n"

/* One parse of an exact-size copy of the input. */
typedef struct parsed {
    char *buf; /* the copy the request's views point into */
    size_t len;
    http1_request req;
    const char *why;
    http1_result rc;
} parsed;

/* Heap copies still held when a failing test jumps out; freed by the group
 * teardown so that a failure does not also read as a leak under ASan. */
static void *held[64];

static void *hold(size_t n)
{
    void *b = malloc(n ? n : 1);
    assert_non_null(b);
    for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
        if (!held[i]) {
            held[i] = b;
            return b;
        }
    }
    fail_msg("more than %zu buffers held", sizeof(held) / sizeof(held[0]));
    return NULL;
}

static void release(void *b)
{
    for (size_t i = 0; b && i < sizeof(held) / sizeof(held[0]); i++) {
        if (held[i] == b)
            held[i] = NULL;
    }
    free(b);
}

static int release_all(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
        free(held[i]);
        held[i] = NULL;
    }
    return 0;
}

/* The input printed with its control bytes escaped, for failure messages. */
static const char *escaped(const char *s, size_t len)
{
    static char out[2048];
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < sizeof(out); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"') {
            o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return out;
}

static void parsed_fini(parsed *p)
{
    release(p->buf);
    p->buf = NULL;
}

static http1_result parse_max(parsed *p, const char *s, size_t len, size_t max_head)
{
    release(p->buf);
    p->buf = hold(len);
    memcpy(p->buf, s, len);
    p->len = len;
    p->why = NULL;
    /* Garbage in every field, so one the parser forgets to set shows. */
    memset(&p->req, 0xa5, sizeof(p->req));
    p->rc = http1_parse_head(p->buf, len, max_head, &p->req, &p->why);
    return p->rc;
}

static void parse_ok(parsed *p, const char *s, size_t len)
{
    parse_max(p, s, len, MAX_HEAD);
    if (p->rc != HTTP1_OK)
        fail_msg("\"%s\": got %d (%s), want HTTP1_OK", escaped(s, len), p->rc,
                 p->why ? p->why : "no reason");
}

/* A refusal: the code wanted and a sentence saying why. */
static void check_refused_max(const char *s, size_t len, size_t max_head, http1_result want)
{
    parsed p = {0};
    parse_max(&p, s, len, max_head);
    if (p.rc != want)
        fail_msg("\"%s\": got %d (%s), want %d", escaped(s, len), p.rc, p.why ? p.why : "no reason",
                 want);
    if (!p.why || !p.why[0])
        fail_msg("\"%s\": refused with no reason", escaped(s, len));
    parsed_fini(&p);
}

static void check_refused(const char *s, size_t len, http1_result want)
{
    check_refused_max(s, len, MAX_HEAD, want);
}

static void check_incomplete(const char *s, size_t len, size_t max_head)
{
    parsed p = {0};
    parse_max(&p, s, len, max_head);
    if (p.rc != HTTP1_INCOMPLETE)
        fail_msg("prefix %zu \"%s\" (max_head %zu): got %d (%s), want HTTP1_INCOMPLETE", len,
                 escaped(s, len), max_head, p.rc, p.why ? p.why : "no reason");
    parsed_fini(&p);
}

#define ASSERT_VIEW(v, lit)                             \
    do {                                                \
        assert_int_equal((v).n, strlen(lit));           \
        assert_memory_equal((v).p, (lit), strlen(lit)); \
    } while (0)

/* The view lies inside the parsed copy. */
#define ASSERT_IN_BUF(pp, v)                                 \
    do {                                                     \
        assert_true((v).p >= (pp)->buf);                     \
        assert_true((v).p + (v).n <= (pp)->buf + (pp)->len); \
    } while (0)

typedef struct byte_case {
    const char *s;
    size_t len;
} byte_case;

#define CASE(lit)            \
    {                        \
        lit, sizeof(lit) - 1 \
    }

/* ---- good heads ---- */

static void test_http1_get_simple(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"));
    ASSERT_VIEW(p.req.method, "GET");
    assert_ptr_equal(p.req.method.p, p.buf);
    ASSERT_VIEW(p.req.target, "/index.html?q=1");
    ASSERT_IN_BUF(&p, p.req.target);
    assert_int_equal(p.req.minor, 1);
    assert_int_equal(p.req.head_bytes, p.len);
    assert_int_equal(p.req.n_headers, 1);
    ASSERT_VIEW(p.req.headers[0].name, "Host");
    ASSERT_VIEW(p.req.headers[0].value, "example.com");
    ASSERT_IN_BUF(&p, p.req.headers[0].name);
    ASSERT_IN_BUF(&p, p.req.headers[0].value);
    assert_int_equal(p.req.body, HTTP1_BODY_NONE);
    assert_true(p.req.keep_alive);
    assert_false(p.req.expect_continue);

    /* Several headers keep their order. */
    parse_ok(&p, LIT("DELETE /v1/models/x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                     "User-Agent: t/1.0\r\n\r\n"));
    ASSERT_VIEW(p.req.method, "DELETE");
    ASSERT_VIEW(p.req.target, "/v1/models/x");
    assert_int_equal(p.req.n_headers, 3);
    ASSERT_VIEW(p.req.headers[0].name, "Host");
    ASSERT_VIEW(p.req.headers[0].value, "h");
    ASSERT_VIEW(p.req.headers[1].name, "Accept");
    ASSERT_VIEW(p.req.headers[1].value, "*/*");
    ASSERT_VIEW(p.req.headers[2].name, "User-Agent");
    ASSERT_VIEW(p.req.headers[2].value, "t/1.0");
    assert_int_equal(p.req.head_bytes, p.len);

    /* No header fields at all. */
    parse_ok(&p, LIT("GET / HTTP/1.0\r\n\r\n"));
    assert_int_equal(p.req.n_headers, 0);
    assert_int_equal(p.req.minor, 0);
    assert_int_equal(p.req.head_bytes, p.len);
    assert_int_equal(p.req.body, HTTP1_BODY_NONE);
    parsed_fini(&p);
}

static void test_http1_post_content_length(void **state)
{
    (void)state;
    static const char head[] = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                               "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n";
    char msg[256];
    size_t head_len = sizeof(head) - 1;
    memcpy(msg, head, head_len);
    memcpy(msg + head_len, "hello world", 11);

    parsed p = {0};
    /* The whole body there, part of it, and none of it. */
    size_t body_have[] = {11, 3, 0};
    for (size_t i = 0; i < sizeof(body_have) / sizeof(body_have[0]); i++) {
        parse_ok(&p, msg, head_len + body_have[i]);
        ASSERT_VIEW(p.req.method, "POST");
        ASSERT_VIEW(p.req.target, "/v1/completions");
        assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
        assert_int_equal(p.req.content_length, 11);
        assert_int_equal(p.req.head_bytes, head_len);
        assert_memory_equal(p.buf + p.req.head_bytes, "hello world", body_have[i]);
        const http1_str *ct = http1_header_get(&p.req, "content-type");
        assert_non_null(ct);
        ASSERT_VIEW(*ct, "application/json");
    }

    /* A body full of NULs and CRs is not the head's business. */
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\0\r\0\x01"));
    assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.req.content_length, 4);
    assert_int_equal(p.req.head_bytes, p.len - 4);

    /* OWS around the number, leading zeros. */
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \t 007 \t\r\n\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.req.content_length, 7);

    /* Header name case does not matter. */
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 5\r\n\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.req.content_length, 5);
    parsed_fini(&p);
}

static void test_http1_content_length_zero(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_NONE);
    assert_int_equal(p.req.head_bytes, p.len);
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 000\r\n\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_NONE);
    /* Without Content-Length, bytes after the head are not a body. */
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_NONE);
    assert_int_equal(p.req.head_bytes, strlen("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    parsed_fini(&p);
}

/* Any value a uint64_t holds is digits only and fits content_length. */
static void test_http1_content_length_max(void **state)
{
    (void)state;
    static const struct {
        const char *digits;
        uint64_t value;
    } cases[] = {
        {"9223372036854775807", 9223372036854775807ull},
        {"9223372036854775808", 9223372036854775808ull},
        {"10000000000000000000", 10000000000000000000ull},
        {"18446744073709551615", UINT64_MAX},
        {"000000000000000000000042", 42},
    };
    char head[128], failed[512] = "";
    size_t n_failed = 0;
    parsed p = {0};
    /* Every value is tried before failing, so one report lists them all. */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int n =
            snprintf(head, sizeof(head), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n",
                     cases[i].digits);
        parse_max(&p, head, (size_t)n, MAX_HEAD);
        if (p.rc != HTTP1_OK || p.req.body != HTTP1_BODY_LENGTH ||
            p.req.content_length != cases[i].value) {
            size_t o = strlen(failed);
            snprintf(failed + o, sizeof(failed) - o, " %s (rc %d: %s)", cases[i].digits, p.rc,
                     p.why && p.rc != HTTP1_OK ? p.why : "wrong value");
            n_failed++;
        }
    }
    parsed_fini(&p);
    if (n_failed)
        fail_msg("Content-Length not read as a uint64_t:%s", failed);
}

static void test_http1_content_length_repeated_same(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX: y\r\n"
                     "Content-Length: 5\r\n\r\nhello"));
    assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.req.content_length, 5);
    assert_int_equal(p.req.head_bytes, p.len - 5);
    parsed_fini(&p);
}

static void test_http1_chunked_head(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "4\r\nWiki\r\n0\r\n\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_CHUNKED);
    assert_int_equal(
        p.req.head_bytes,
        strlen("POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_true(p.req.keep_alive);
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding:  chunked \t\r\n\r\n"));
    assert_int_equal(p.req.body, HTTP1_BODY_CHUNKED);
    parsed_fini(&p);
}

static void test_http1_bare_lf(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET /a HTTP/1.1\nHost: x\nX-B: y\n\n"));
    ASSERT_VIEW(p.req.target, "/a");
    assert_int_equal(p.req.minor, 1);
    assert_int_equal(p.req.n_headers, 2);
    ASSERT_VIEW(p.req.headers[0].value, "x");
    ASSERT_VIEW(p.req.headers[1].name, "X-B");
    ASSERT_VIEW(p.req.headers[1].value, "y");
    assert_int_equal(p.req.head_bytes, p.len);

    /* Mixed line ends, and a body after a bare-LF head. */
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\nContent-Length: 2\r\n\nab"));
    assert_int_equal(p.req.n_headers, 2);
    ASSERT_VIEW(p.req.headers[0].value, "x");
    assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.req.content_length, 2);
    assert_int_equal(p.req.head_bytes, p.len - 2);
    assert_memory_equal(p.buf + p.req.head_bytes, "ab", 2);

    parse_ok(&p, LIT("GET / HTTP/1.1\nHost: x\r\n\r\n"));
    assert_int_equal(p.req.head_bytes, p.len);
    parsed_fini(&p);
}

static void test_http1_leading_empty_lines(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_VIEW(p.req.method, "GET");
    assert_ptr_equal(p.req.method.p, p.buf + 4);
    ASSERT_VIEW(p.req.target, "/a");
    assert_int_equal(p.req.head_bytes, p.len);

    parse_ok(&p, LIT("\n\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_ptr_equal(p.req.method.p, p.buf + 2);
    assert_int_equal(p.req.head_bytes, p.len);

    parse_ok(&p, LIT("\r\n\n\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"));
    assert_ptr_equal(p.req.method.p, p.buf + 5);
    ASSERT_VIEW(p.req.method, "POST");
    assert_int_equal(p.req.head_bytes, p.len - 1);
    assert_int_equal(p.buf[p.req.head_bytes], 'z');

    /* Only empty lines so far: no request line yet. */
    check_incomplete(LIT("\r\n\r\n\n"), MAX_HEAD);
    /* Empty lines count against max_head like any other head byte. */
    char blank[200];
    for (size_t i = 0; i < sizeof(blank); i += 2)
        memcpy(blank + i, "\r\n", 2);
    check_refused_max(blank, sizeof(blank), 100, HTTP1_TOO_LARGE);
    parsed_fini(&p);
}

static void test_http1_ows_trimmed(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost:example.com\r\nX-A: \t v \t \r\nX-B:\tw\r\n"
                     "X-C:  a b\tc  \r\n\r\n"));
    assert_int_equal(p.req.n_headers, 4);
    ASSERT_VIEW(p.req.headers[0].value, "example.com");
    ASSERT_VIEW(p.req.headers[1].value, "v");
    ASSERT_VIEW(p.req.headers[2].value, "w");
    /* Whitespace inside the value stays, HTAB included. */
    ASSERT_VIEW(p.req.headers[3].value, "a b\tc");
    ASSERT_IN_BUF(&p, p.req.headers[3].value);
    parsed_fini(&p);
}

static void test_http1_empty_value(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Blank: \t \r\nX-Last: 1\r\n\r\n"));
    assert_int_equal(p.req.n_headers, 4);
    ASSERT_VIEW(p.req.headers[1].name, "X-Empty");
    assert_int_equal(p.req.headers[1].value.n, 0);
    ASSERT_VIEW(p.req.headers[2].name, "X-Blank");
    assert_int_equal(p.req.headers[2].value.n, 0);
    ASSERT_VIEW(p.req.headers[3].value, "1");
    const http1_str *v = http1_header_get(&p.req, "x-empty");
    assert_non_null(v);
    assert_int_equal(v->n, 0);
    parsed_fini(&p);
}

/* A GET with n header fields "X-Hi: vi", Host first. */
static size_t build_headers(char *buf, size_t cap, size_t n)
{
    size_t o = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (size_t i = 1; i < n; i++)
        o += (size_t)snprintf(buf + o, cap - o, "X-H%zu: v%zu\r\n", i, i);
    o += (size_t)snprintf(buf + o, cap - o, "\r\n");
    assert_true(o < cap);
    return o;
}

static void test_http1_headers_max(void **state)
{
    (void)state;
    char buf[4096];
    parsed p = {0};
    size_t len = build_headers(buf, sizeof(buf), HTTP1_HEADERS_MAX);
    parse_ok(&p, buf, len);
    assert_int_equal(p.req.n_headers, HTTP1_HEADERS_MAX);
    assert_int_equal(p.req.head_bytes, len);
    for (size_t i = 1; i < HTTP1_HEADERS_MAX; i++) {
        char name[32], value[32];
        snprintf(name, sizeof(name), "X-H%zu", i);
        snprintf(value, sizeof(value), "v%zu", i);
        ASSERT_VIEW(p.req.headers[i].name, name);
        ASSERT_VIEW(p.req.headers[i].value, value);
        const http1_str *v = http1_header_get(&p.req, name);
        assert_non_null(v);
        ASSERT_VIEW(*v, value);
    }
    parsed_fini(&p);

    len = build_headers(buf, sizeof(buf), HTTP1_HEADERS_MAX + 1);
    check_refused(buf, len, HTTP1_TOO_LARGE);
    len = build_headers(buf, sizeof(buf), HTTP1_HEADERS_MAX + 20);
    check_refused(buf, len, HTTP1_TOO_LARGE);
}

static void test_http1_header_get_case(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nhOsT: example.com\r\nContent-Type: text/plain\r\n"
                     "X-Tok-!#$%&'*+-.^_`|~09azAZ: t\r\n\r\n"));
    const char *names[] = {"Host", "host", "HOST", "hOsT"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const http1_str *v = http1_header_get(&p.req, names[i]);
        assert_non_null(v);
        ASSERT_VIEW(*v, "example.com");
    }
    ASSERT_VIEW(p.req.headers[0].name, "hOsT"); /* as sent */
    const http1_str *ct = http1_header_get(&p.req, "CONTENT-type");
    assert_non_null(ct);
    ASSERT_VIEW(*ct, "text/plain");
    /* Every tchar is allowed in a name. */
    const http1_str *tok = http1_header_get(&p.req, "x-tok-!#$%&'*+-.^_`|~09AZaz");
    assert_non_null(tok);
    ASSERT_VIEW(*tok, "t");
    /* Only whole names match. */
    assert_null(http1_header_get(&p.req, "Hos"));
    assert_null(http1_header_get(&p.req, "Hostx"));
    assert_null(http1_header_get(&p.req, "Content"));
    assert_null(http1_header_get(&p.req, "Accept"));
    assert_null(http1_header_get(&p.req, ""));
    parsed_fini(&p);
}

static void test_http1_target_forms(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET http://h/x?y=1 HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT_VIEW(p.req.target, "http://h/x?y=1");
    parse_ok(&p, LIT("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT_VIEW(p.req.method, "OPTIONS");
    ASSERT_VIEW(p.req.target, "*");
    parse_ok(&p, LIT("GET /a/b%20c?q=%2F&r#frag HTTP/1.1\r\nHost: h\r\n\r\n"));
    ASSERT_VIEW(p.req.target, "/a/b%20c?q=%2F&r#frag");
    parsed_fini(&p);
}

static void test_http1_keep_alive(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nconnection:  close \r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive ,\tCLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", true},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nHost: x\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alived\r\n\r\n", false},
    };
    parsed p = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parse_ok(&p, cases[i].head, strlen(cases[i].head));
        if (p.req.keep_alive != cases[i].keep_alive)
            fail_msg("\"%s\": keep_alive %d, want %d",
                     escaped(cases[i].head, strlen(cases[i].head)), p.req.keep_alive,
                     cases[i].keep_alive);
    }
    parsed_fini(&p);
}

/* Two Connection field lines are one list (RFC 9110 5.3). */
static void test_http1_keep_alive_two_connection_lines(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n"
                     "Connection: close\r\n\r\n"));
    assert_false(p.req.keep_alive);
    parse_ok(&p, LIT("GET / HTTP/1.0\r\nConnection: x-other\r\nConnection: keep-alive\r\n\r\n"));
    assert_true(p.req.keep_alive);
    parsed_fini(&p);
}

static void test_http1_expect_continue(void **state)
{
    (void)state;
    parsed p = {0};
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     "Expect: 100-continue\r\n\r\n"));
    assert_true(p.req.expect_continue);
    assert_int_equal(p.req.body, HTTP1_BODY_LENGTH);
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     "expect:  100-Continue \r\n\r\n"));
    assert_true(p.req.expect_continue);
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     "EXPECT: 100-CONTINUE\r\n\r\n"));
    assert_true(p.req.expect_continue);
    parse_ok(&p, LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"));
    assert_false(p.req.expect_continue);
    parsed_fini(&p);
}

static void test_http1_expect_other(void **state)
{
    (void)state;
    check_refused(LIT("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                      "Expect: something-else\r\n\r\n"),
                  HTTP1_EXPECT);
    check_refused(LIT("GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"), HTTP1_EXPECT);
    check_refused(LIT("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continued\r\n\r\n"), HTTP1_EXPECT);
}

static void test_http1_pipelined(void **state)
{
    (void)state;
    static const char two[] = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                              "GET /b HTTP/1.1\r\nHost: y\r\n\r\n";
    parsed p = {0};
    parse_ok(&p, LIT(two));
    ASSERT_VIEW(p.req.target, "/a");
    size_t next = p.req.head_bytes + (size_t)p.req.content_length;
    parsed q = {0};
    parse_ok(&q, two + next, sizeof(two) - 1 - next);
    ASSERT_VIEW(q.req.target, "/b");
    ASSERT_VIEW(q.req.headers[0].value, "y");
    assert_int_equal(q.req.head_bytes, sizeof(two) - 1 - next);
    parsed_fini(&p);
    parsed_fini(&q);
}

/* ---- incomplete heads and max_head ---- */

static void test_http1_incomplete_prefixes(void **state)
{
    (void)state;
    static const byte_case heads[] = {
        CASE("GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        CASE("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
             "Expect: 100-continue\r\nX-Empty:\r\nX-Ows: \t a \t\r\n\r\n"),
        CASE("GET /a HTTP/1.1\nHost: x\nX-B: y\n\n"),
        CASE("\r\n\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    };
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        size_t len = heads[i].len;
        parsed p = {0};
        parse_max(&p, heads[i].s, len, len);
        if (p.rc != HTTP1_OK)
            fail_msg("\"%s\" with max_head = its length: got %d (%s)", escaped(heads[i].s, len),
                     p.rc, p.why ? p.why : "no reason");
        assert_int_equal(p.req.head_bytes, len);
        parsed_fini(&p);
        for (size_t k = 0; k < len; k++) {
            check_incomplete(heads[i].s, k, MAX_HEAD);
            check_incomplete(heads[i].s, k, len); /* within max: read more */
        }
    }
}

static void test_http1_max_head(void **state)
{
    (void)state;
    static const char head[] = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
    static const char msg[] = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    size_t head_len = sizeof(head) - 1;
    parsed p = {0};

    /* The complete head exactly max_head long; body bytes after it do not
     * count against the head. */
    parse_max(&p, LIT(head), head_len);
    assert_int_equal(p.rc, HTTP1_OK);
    assert_int_equal(p.req.head_bytes, head_len);
    parse_max(&p, LIT(msg), head_len);
    assert_int_equal(p.rc, HTTP1_OK);
    assert_int_equal(p.req.head_bytes, head_len);
    assert_int_equal(p.req.content_length, 5);
    parsed_fini(&p);

    /* One byte over, complete or not. */
    check_refused_max(LIT(head), head_len - 1, HTTP1_TOO_LARGE);
    check_refused_max(LIT(msg), head_len - 1, HTTP1_TOO_LARGE);
    check_refused_max(LIT(head), 10, HTTP1_TOO_LARGE);

    /* No end of the head within max_head, more bytes than that read. */
    char big[600];
    size_t o = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-Long: ");
    memset(big + o, 'a', sizeof(big) - o);
    check_refused_max(big, sizeof(big), 100, HTTP1_TOO_LARGE);
    check_refused_max(big, 101, 100, HTTP1_TOO_LARGE);
    check_refused_max(big, sizeof(big), 599, HTTP1_TOO_LARGE);
    /* A request line alone longer than max_head. */
    memcpy(big, "GET /", 5);
    memset(big + 5, 'b', sizeof(big) - 5);
    check_refused_max(big, sizeof(big), 64, HTTP1_TOO_LARGE);
    /* Within max_head and no end yet: read more. */
    check_incomplete(big, 64, 65);
}

/* ---- refusals ---- */

static void check_refused_cases(const byte_case *cases, size_t n, http1_result want)
{
    for (size_t i = 0; i < n; i++)
        check_refused(cases[i].s, cases[i].len, want);
}

#define CHECK_REFUSED_CASES(cases, want) \
    check_refused_cases(cases, sizeof(cases) / sizeof(cases[0]), want)

static void test_http1_nul_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        CASE("G\0ET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET\0 / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1\0.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\0\r\nHost: x\r\n\r\n"),
        CASE("GET / \0HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("\0\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("\r\n\0GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHo\0st: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\n\0Host: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost\0: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\0junk\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer KEY\0\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: \0\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX:\0 v\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: v \0 \r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\0\r\n\r\nhello"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\n\0\r\n\r\n"),
        CASE("GET / HTTP/1.1\nHost: x\0\n\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);
}

static void test_http1_cr_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\r \r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: \r\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\rY: b\r\n\r\n"),
        CASE("GET / HTTP/1.1\rHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\rHost: x\r\n\r\n"),
        CASE("GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET\r/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHo\rst: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\n\r\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\n\rX: y\r\n\r\n"),
        CASE("\rGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("\r\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\nHost: x\r\r\n\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);
}

static void test_http1_ctl_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01"
             "b\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f"
             "b\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: \x1b[31mred\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\x0b"
             "b\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\x0c"
             "b\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\x1f\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: \x7f\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX\x01: a\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX\x7f: a\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX\t: a\r\n\r\n"),
        CASE("GET /a\x01"
             "b HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET /a\x7f"
             "b HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("G\x01"
             "ET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET /\tHTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\t\r\nHost: x\r\n\r\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);

    /* HTAB inside a value is fine. */
    parsed p = {0};
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\t\tc\r\n\r\n"));
    ASSERT_VIEW(p.req.headers[1].value, "a\tb\t\tc");
    /* So are visible bytes and obs-text in a value. */
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost: x\r\nX: !\"#~ caf\xc3\xa9\r\n\r\n"));
    ASSERT_VIEW(p.req.headers[1].value, "!\"#~ caf\xc3\xa9");
    parsed_fini(&p);
}

static void test_http1_field_syntax_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        /* Whitespace between the name and the colon. */
        CASE("GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"),
        /* No colon. */
        CASE("GET / HTTP/1.1\r\nHost x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
        CASE("GET / HTTP/1.1\nHost: x\nNoColon\n\n"),
        /* An empty name. */
        CASE("GET / HTTP/1.1\r\n: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\n:\r\n\r\n"),
        /* obs-fold, and whitespace before the first field. */
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX: a\n b\n\n"),
        CASE("GET / HTTP/1.1\r\n Host: x\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\n\tHost: x\r\n\r\n"),
        /* A name that is not a token. */
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX@y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX\"y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX/y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX,y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX;y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX=y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX?y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX[y]: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX{y}: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX\\y: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX<y>: 1\r\n\r\n"),
        CASE("GET / HTTP/1.1\r\nHost: x\r\nX\xc3\xa9: 1\r\n\r\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);
}

static void test_http1_request_line_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        CASE("GET /\r\nHost: x\r\n\r\n"),
        CASE("GET\r\nHost: x\r\n\r\n"),
        CASE("GET HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / \r\nHost: x\r\n\r\n"),
        CASE("/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE(" / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET /  HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET  HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1 \r\nHost: x\r\n\r\n"),
        CASE("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n"),
        CASE("GET / http/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / Http/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.1x\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTPS/1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/11\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/ 1.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1.10\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/10.1\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/a.b\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/1,1\r\nHost: x\r\n\r\n"),
        CASE("\r\n\r\n \r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        CASE("Host: x\r\n\r\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);
}

static void test_http1_content_length_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  \t \r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\t2\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5.0\r\n\r\nhello"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xd9\xa3\r\n\r\n"),
        CASE(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 123456789012345678901234567890\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        /* Two different values, in either order, adjacent or not. */
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nContent-Length: 6\r\nHost: x\r\ncontent-length: 5\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);
}

static void test_http1_transfer_encoding_refused(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        /* Content-Length with Transfer-Encoding, in either order. */
        CASE("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Content-Length: 5\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Content-Length: 0\r\n\r\n"),
        /* Anything but one "chunked". */
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
             "Transfer-Encoding: chunked\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunkedx\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"),
        CASE("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n"),
        /* None at all on HTTP/1.0. */
        CASE("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        CASE("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             "Connection: keep-alive\r\n\r\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_BAD);
}

static void test_http1_version(void **state)
{
    (void)state;
    static const byte_case cases[] = {
        CASE("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), CASE("GET / HTTP/3.0\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/0.9\r\nHost: x\r\n\r\n"), CASE("GET / HTTP/1.2\r\nHost: x\r\n\r\n"),
        CASE("GET / HTTP/9.9\r\nHost: x\r\n\r\n"),
    };
    CHECK_REFUSED_CASES(cases, HTTP1_VERSION);

    parsed p = {0};
    parse_ok(&p, LIT("GET / HTTP/1.0\r\n\r\n"));
    assert_int_equal(p.req.minor, 0);
    parse_ok(&p, LIT("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_int_equal(p.req.minor, 1);
    parsed_fini(&p);
}

/* ---- http1_list_has ---- */

static http1_str view(const char *s) { return (http1_str){.p = s, .n = strlen(s)}; }

static void test_http1_list_has(void **state)
{
    (void)state;
    assert_true(http1_list_has(view("close"), "close"));
    assert_true(http1_list_has(view("Close"), "close"));
    assert_true(http1_list_has(view("close"), "CLOSE"));
    assert_true(http1_list_has(view("keep-alive, close"), "close"));
    assert_true(http1_list_has(view("keep-alive, close"), "keep-alive"));
    assert_true(http1_list_has(view("keep-alive,close"), "close"));
    assert_true(http1_list_has(view("  keep-alive \t,\t CLOSE  "), "close"));
    assert_true(http1_list_has(view("\tclose\t"), "close"));
    assert_true(http1_list_has(view("a, , close,,"), "close"));
    assert_true(http1_list_has(view(",close"), "close"));
    assert_true(http1_list_has(view("Upgrade, Keep-Alive"), "keep-alive"));

    /* Only whole tokens count. */
    assert_false(http1_list_has(view("closed"), "close"));
    assert_false(http1_list_has(view("xclose"), "close"));
    assert_false(http1_list_has(view("clos"), "close"));
    assert_false(http1_list_has(view("keep-alive, closed"), "close"));
    assert_false(http1_list_has(view("close-it, enclose"), "close"));
    assert_false(http1_list_has(view("keep-alive"), "keep"));
    assert_false(http1_list_has(view("keep-alive"), "alive"));
    assert_false(http1_list_has(view("clo se"), "close"));

    /* Empty lists. */
    assert_false(http1_list_has(view(""), "close"));
    assert_false(http1_list_has(view(" , ,\t"), "close"));
    assert_false(http1_list_has((http1_str){.p = NULL, .n = 0}, "close"));

    /* The view ends at n, not at a NUL: an exact-size copy for ASan. */
    char *b = hold(6);
    memcpy(b, "closed", 6);
    assert_true(http1_list_has((http1_str){.p = b, .n = 5}, "close"));
    assert_false(http1_list_has((http1_str){.p = b, .n = 6}, "close"));
    assert_false(http1_list_has((http1_str){.p = b, .n = 4}, "close"));
    release(b);
}

/* ---- chunked decoding ---- */

#define WIKI "4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"

/* Feed @p len bytes to a fresh decoder as a receiver would: @p first bytes
 * arrive, then @p step more per call; each call gets what is unconsumed
 * and at most @p room bytes of output (in place: the input's own buffer).
 * Returns the last result; *in_total and *out_total add up the calls. */
static http1_result feed(const char *src, size_t len, size_t first, size_t step, size_t room,
                         bool in_place, char *out, size_t out_cap, size_t *in_total,
                         size_t *out_total, const char **why)
{
    http1_chunked d;
    memset(&d, 0, sizeof(d));
    char *in = hold(len); /* exact size: ASan sees overreads */
    memcpy(in, src, len);
    size_t arrived = first < len ? first : len, used = 0, produced = 0;
    http1_result rc = HTTP1_INCOMPLETE;
    *why = NULL;
    for (size_t calls = 0;; calls++) {
        assert_true(calls < 100000);
        char *o = in_place ? in + produced : out + produced;
        size_t cap = in_place ? len - produced : out_cap - produced;
        if (cap > room)
            cap = room;
        size_t in_len = arrived - used, in_used = (size_t)-1, out_len = (size_t)-1;
        rc = http1_chunked_decode(&d, in + used, in_len, &in_used, o, cap, &out_len, why);
        if (rc == HTTP1_BAD)
            break;
        assert_true(in_used <= in_len);
        assert_true(out_len <= cap);
        used += in_used;
        produced += out_len;
        if (rc != HTTP1_INCOMPLETE)
            break;
        /* INCOMPLETE: either all input used or the output full. */
        assert_true(in_used == in_len || out_len == cap);
        if (in_used == 0 && out_len == 0 && arrived == len)
            break; /* stuck: it wants bytes that never come */
        arrived = arrived + step < len ? arrived + step : len;
    }
    if (in_place && produced)
        memcpy(out, in, produced);
    release(in);
    *in_total = used;
    *out_total = produced;
    return rc;
}

/* A well-formed body of @p body_len bytes (then @p len - @p body_len bytes
 * of the next request) decodes to @p want in every way of feeding it. */
static void check_decodes(const char *src, size_t len, size_t body_len, const char *want)
{
    size_t want_len = strlen(want);
    char out[512];
    size_t in_total, out_total;
    const char *why;
    assert_true(want_len <= sizeof(out));

    struct {
        size_t first, step, room;
        bool in_place;
    } ways[] = {
        {len, len, sizeof(out), false}, {len, len, sizeof(out), true}, {1, 1, sizeof(out), false},
        {1, 1, sizeof(out), true},      {3, 3, sizeof(out), true},     {len, len, 1, false},
        {len, len, 2, false},           {len, len, 3, true},           {7, 5, 2, false},
    };
    for (size_t w = 0; w < sizeof(ways) / sizeof(ways[0]); w++) {
        memset(out, 0, sizeof(out));
        http1_result rc = feed(src, len, ways[w].first, ways[w].step, ways[w].room,
                               ways[w].in_place, out, sizeof(out), &in_total, &out_total, &why);
        if (rc != HTTP1_OK || in_total != body_len || out_total != want_len ||
            memcmp(out, want, want_len) != 0)
            fail_msg("\"%s\" fed first %zu step %zu room %zu%s: rc %d (%s), in %zu/%zu, "
                     "out %zu/%zu",
                     escaped(src, len), ways[w].first, ways[w].step, ways[w].room,
                     ways[w].in_place ? " in place" : "", rc, why ? why : "no reason", in_total,
                     body_len, out_total, want_len);
    }
    /* Split in two at every point. */
    for (size_t k = 1; k < len; k++) {
        memset(out, 0, sizeof(out));
        http1_result rc = feed(src, len, k, len, sizeof(out), false, out, sizeof(out), &in_total,
                               &out_total, &why);
        if (rc != HTTP1_OK || in_total != body_len || out_total != want_len ||
            memcmp(out, want, want_len) != 0)
            fail_msg("\"%s\" split at %zu: rc %d (%s), in %zu/%zu, out %zu/%zu", escaped(src, len),
                     k, rc, why ? why : "no reason", in_total, body_len, out_total, want_len);
    }
}

#define CHECK_DECODES(body, want) check_decodes(LIT(body), sizeof(body) - 1, want)

static void test_http1_chunked_simple(void **state)
{
    (void)state;
    /* One call, the whole body. */
    http1_chunked d;
    memset(&d, 0, sizeof(d));
    char out[64];
    size_t in_used = 99, out_len = 99;
    const char *why = NULL;
    assert_int_equal(
        http1_chunked_decode(&d, LIT(WIKI), &in_used, out, sizeof(out), &out_len, &why), HTTP1_OK);
    assert_int_equal(in_used, strlen(WIKI));
    assert_int_equal(out_len, 9);
    assert_memory_equal(out, "Wikipedia", 9);

    CHECK_DECODES(WIKI, "Wikipedia");
    CHECK_DECODES("0\r\n\r\n", "");
    CHECK_DECODES("1\r\nx\r\n0\r\n\r\n", "x");
    /* Data bytes are opaque: CR, LF, NUL, "0\r\n\r\n" inside a chunk. */
    CHECK_DECODES("7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n", "\r\n0\r\n\r\n");

    /* A zero-length call asks for more. */
    memset(&d, 0, sizeof(d));
    assert_int_equal(http1_chunked_decode(&d, "", 0, &in_used, out, sizeof(out), &out_len, &why),
                     HTTP1_INCOMPLETE);
    assert_int_equal(in_used, 0);
    assert_int_equal(out_len, 0);
}

/* The NUL-in-data case above cannot go through strlen; check it here. */
static void test_http1_chunked_binary_data(void **state)
{
    (void)state;
    static const char body[] = "3\r\n\0\r\0\r\n2\r\n\xff\n\r\n0\r\n\r\n";
    char out[64];
    size_t in_total, out_total;
    const char *why;
    for (size_t step = 1; step <= sizeof(body) - 1; step++) {
        memset(out, 0x55, sizeof(out));
        assert_int_equal(feed(body, sizeof(body) - 1, step, step, sizeof(out), step % 2 == 0, out,
                              sizeof(out), &in_total, &out_total, &why),
                         HTTP1_OK);
        assert_int_equal(in_total, sizeof(body) - 1);
        assert_int_equal(out_total, 5);
        assert_memory_equal(out, "\0\r\0\xff\n", 5);
    }
}

static void test_http1_chunked_next_request(void **state)
{
    (void)state;
    static const char msg[] = WIKI "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    check_decodes(LIT(msg), strlen(WIKI), "Wikipedia");
    /* Even a byte that would be malformed in a chunk. */
    static const char junk[] = WIKI "zz\r\n\0";
    check_decodes(LIT(junk), strlen(WIKI), "Wikipedia");
    static const char trailer[] = "4\r\nWiki\r\n0\r\nX-T: 1\r\n\r\nPOST";
    check_decodes(LIT(trailer), sizeof(trailer) - 1 - 4, "Wiki");
}

static void test_http1_chunked_extensions(void **state)
{
    (void)state;
    CHECK_DECODES("4;name=val\r\nWiki\r\n5;a;b=\"q;r\"\r\npedia\r\n0;last\r\n\r\n", "Wikipedia");
    CHECK_DECODES("4;x\r\nWiki\r\n0;y=z\r\n\r\n", "Wiki");
}

static void test_http1_chunked_hex(void **state)
{
    (void)state;
    CHECK_DECODES("a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij");
    CHECK_DECODES("1f\r\n0123456789012345678901234567890\r\n1F\r\n"
                  "abcdefghijabcdefghijabcdefghija\r\n0\r\n\r\n",
                  "0123456789012345678901234567890abcdefghijabcdefghijabcdefghija");
    CHECK_DECODES("0004\r\nWiki\r\n000\r\n\r\n", "Wiki");
    CHECK_DECODES(
        "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n1a\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n0\r\n\r\n",
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ");
    /* Mixed case in one size: 0xBc = 188 bytes. */
    char body[256], want[200];
    memset(want, 'x', 188);
    want[188] = '\0';
    size_t n = (size_t)snprintf(body, sizeof(body), "Bc\r\n%s\r\n0\r\n\r\n", want);
    check_decodes(body, n, n, want);
}

static void test_http1_chunked_trailers(void **state)
{
    (void)state;
    CHECK_DECODES("4\r\nWiki\r\n0\r\nX-Trailer: v\r\nY: w\r\n\r\n", "Wiki");
    CHECK_DECODES(WIKI, "Wikipedia");
    CHECK_DECODES("5\r\npedia\r\n0\r\nChecksum: abc\r\n\r\n", "pedia");
}

static void test_http1_chunked_small_output(void **state)
{
    (void)state;
    http1_chunked d;
    memset(&d, 0, sizeof(d));
    const char *in = WIKI;
    size_t len = strlen(WIKI), in_used, out_len;
    const char *why = NULL;
    char out[16];

    /* Room for 3: it stops with the output full, before the body's end. */
    assert_int_equal(http1_chunked_decode(&d, in, len, &in_used, out, 3, &out_len, &why),
                     HTTP1_INCOMPLETE);
    assert_int_equal(out_len, 3);
    assert_memory_equal(out, "Wik", 3);
    assert_true(in_used < len);
    size_t pos = in_used, produced = out_len;
    /* Room for the rest. */
    assert_int_equal(http1_chunked_decode(&d, in + pos, len - pos, &in_used, out + produced,
                                          sizeof(out) - produced, &out_len, &why),
                     HTTP1_OK);
    assert_int_equal(pos + in_used, len);
    assert_int_equal(produced + out_len, 9);
    assert_memory_equal(out, "Wikipedia", 9);

    /* Room for exactly the data: OK now, or OK on a call with no room. */
    memset(&d, 0, sizeof(d));
    http1_result rc = http1_chunked_decode(&d, in, len, &in_used, out, 9, &out_len, &why);
    assert_int_equal(out_len, 9);
    assert_memory_equal(out, "Wikipedia", 9);
    if (rc == HTTP1_INCOMPLETE) {
        pos = in_used;
        rc = http1_chunked_decode(&d, in + pos, len - pos, &in_used, out + 9, 0, &out_len, &why);
        assert_int_equal(out_len, 0);
        in_used += pos;
    }
    assert_int_equal(rc, HTTP1_OK);
    assert_int_equal(in_used, len);
}

static void test_http1_chunked_huge_chunk(void **state)
{
    (void)state;
    /* The largest size a uint64_t holds is a size, not an overflow. */
    http1_chunked d;
    memset(&d, 0, sizeof(d));
    char out[16];
    size_t in_used, out_len;
    const char *why = NULL;
    assert_int_equal(http1_chunked_decode(&d, LIT("ffffffffffffffff\r\nab"), &in_used, out,
                                          sizeof(out), &out_len, &why),
                     HTTP1_INCOMPLETE);
    assert_int_equal(in_used, 20);
    assert_int_equal(out_len, 2);
    assert_memory_equal(out, "ab", 2);
    assert_true(d.left == UINT64_MAX - 2);
}

/* Malformed in every way of feeding it: whole, a byte at a time, split. */
static void check_chunked_bad(const char *src, size_t len)
{
    char out[8192];
    size_t in_total, out_total;
    const char *why;
    size_t steps[] = {len, 1, 2, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        http1_result rc = feed(src, len, steps[i], steps[i], sizeof(out), false, out, sizeof(out),
                               &in_total, &out_total, &why);
        if (rc != HTTP1_BAD)
            fail_msg("\"%s\" fed %zu at a time: rc %d, in %zu/%zu, want HTTP1_BAD",
                     escaped(src, len), steps[i], rc, in_total, len);
        if (!why || !why[0])
            fail_msg("\"%s\": refused with no reason", escaped(src, len));
    }
}

#define CHECK_CHUNKED_BAD(lit) check_chunked_bad(LIT(lit))

static void test_http1_chunked_malformed(void **state)
{
    (void)state;
    CHECK_CHUNKED_BAD("zz\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4z\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("-4\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("0x4\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD(";ext\r\nWiki\r\n0\r\n\r\n");
    /* Data not followed by CRLF. */
    CHECK_CHUNKED_BAD("4\r\nWikiX");
    CHECK_CHUNKED_BAD("4\r\nWikiX\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\r\nWiki\rX\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\r\nWiki\r\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\r\nWikipedia\r\n0\r\n\r\n");
    /* Sizes past 64 bits. */
    CHECK_CHUNKED_BAD("fffffffffffffffff\r\n");
    CHECK_CHUNKED_BAD("10000000000000000\r\n");
    CHECK_CHUNKED_BAD("ffffffffffffffffffffffffffffffff\r\nWiki\r\n0\r\n\r\n");
    /* Bare CR, NUL in a size line. */
    CHECK_CHUNKED_BAD("4\rWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\r\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4;a\rb\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\0\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("\0"
                      "4\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4;a\0b\r\nWiki\r\n0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\r\nWiki\r\n0\0\r\n\r\n");
    CHECK_CHUNKED_BAD("4\r\nWiki\r\n0\r\n\r\r\n");
    CHECK_CHUNKED_BAD("4\r\nWiki\r\n0\r\nX: y\rz\r\n\r\n");
}

static void test_http1_chunked_line_too_long(void **state)
{
    (void)state;
    enum { EXT = HTTP1_CHUNK_LINE_MAX + 100 };
    static char buf[EXT + 64];
    size_t o = 0;

    /* A size line far past the limit, with and without its end. */
    memcpy(buf, "4;", 2);
    o = 2;
    memset(buf + o, 'a', EXT);
    o += EXT;
    check_chunked_bad(buf, o);
    memcpy(buf + o, "\r\nWiki\r\n0\r\n\r\n", 13);
    check_chunked_bad(buf, o + 13);

    /* The same for a trailer field. */
    memcpy(buf, "4\r\nWiki\r\n0\r\nX: ", 15);
    o = 15;
    memset(buf + o, 'b', EXT);
    o += EXT;
    check_chunked_bad(buf, o);
    memcpy(buf + o, "\r\n\r\n", 4);
    check_chunked_bad(buf, o + 4);

    /* Leading zeros past the line limit are no way around it either. */
    memset(buf, '0', EXT);
    buf[EXT - 1] = '4';
    memcpy(buf + EXT, "\r\nWiki\r\n0\r\n\r\n", 13);
    check_chunked_bad(buf, EXT + 13);

    /* Well under the limit is fine. */
    static char ok[1200];
    memcpy(ok, "4;", 2);
    memset(ok + 2, 'e', 1000);
    memcpy(ok + 1002, "\r\nWiki\r\n0\r\n\r\n", 13);
    char out[16];
    size_t in_total, out_total;
    const char *why;
    assert_int_equal(feed(ok, 1015, 1015, 1015, sizeof(out), false, out, sizeof(out), &in_total,
                          &out_total, &why),
                     HTTP1_OK);
    assert_int_equal(in_total, 1015);
    assert_int_equal(out_total, 4);
    assert_int_equal(
        feed(ok, 1015, 1, 1, sizeof(out), false, out, sizeof(out), &in_total, &out_total, &why),
        HTTP1_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http1_get_simple),
        cmocka_unit_test(test_http1_post_content_length),
        cmocka_unit_test(test_http1_content_length_zero),
        cmocka_unit_test(test_http1_content_length_max),
        cmocka_unit_test(test_http1_content_length_repeated_same),
        cmocka_unit_test(test_http1_chunked_head),
        cmocka_unit_test(test_http1_bare_lf),
        cmocka_unit_test(test_http1_leading_empty_lines),
        cmocka_unit_test(test_http1_ows_trimmed),
        cmocka_unit_test(test_http1_empty_value),
        cmocka_unit_test(test_http1_headers_max),
        cmocka_unit_test(test_http1_header_get_case),
        cmocka_unit_test(test_http1_target_forms),
        cmocka_unit_test(test_http1_keep_alive),
        cmocka_unit_test(test_http1_keep_alive_two_connection_lines),
        cmocka_unit_test(test_http1_expect_continue),
        cmocka_unit_test(test_http1_expect_other),
        cmocka_unit_test(test_http1_pipelined),
        cmocka_unit_test(test_http1_incomplete_prefixes),
        cmocka_unit_test(test_http1_max_head),
        cmocka_unit_test(test_http1_nul_refused),
        cmocka_unit_test(test_http1_cr_refused),
        cmocka_unit_test(test_http1_ctl_refused),
        cmocka_unit_test(test_http1_field_syntax_refused),
        cmocka_unit_test(test_http1_request_line_refused),
        cmocka_unit_test(test_http1_content_length_refused),
        cmocka_unit_test(test_http1_transfer_encoding_refused),
        cmocka_unit_test(test_http1_version),
        cmocka_unit_test(test_http1_list_has),
        cmocka_unit_test(test_http1_chunked_simple),
        cmocka_unit_test(test_http1_chunked_binary_data),
        cmocka_unit_test(test_http1_chunked_next_request),
        cmocka_unit_test(test_http1_chunked_extensions),
        cmocka_unit_test(test_http1_chunked_hex),
        cmocka_unit_test(test_http1_chunked_trailers),
        cmocka_unit_test(test_http1_chunked_small_output),
        cmocka_unit_test(test_http1_chunked_huge_chunk),
        cmocka_unit_test(test_http1_chunked_malformed),
        cmocka_unit_test(test_http1_chunked_line_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, release_all);
}
