/* Base layer: the error table and error recording, the allocator's fault
 * injection and overflow checks, the logger's level parsing and line format
 * (stderr is captured through a temp file dup2-ed onto fd 2), and the cpu
 * ISA helpers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/cpu.h"
#include "inferd/error.h"
#include "inferd/log.h"

/* ---- error table ---- */

typedef struct {
    const char *name;
    int value;
    int http;
    const char *hcode;
    const char *ncode;
    int grpc;
    const char *text;
} error_row;

static const error_row error_rows[] = {
#define X(name, value, http, hcode, ncode, grpc, text) \
    {#name, value, http, hcode, ncode, grpc, text},
    INFERD_ERRORS(X)
#undef X
};
#define N_ERROR_ROWS (sizeof(error_rows) / sizeof(error_rows[0]))

static int is_wire_code(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
            return 0;
    return 1;
}

static void test_error_table_rows(void **state)
{
    (void)state;
    assert_true(N_ERROR_ROWS >= 2);
    for (size_t i = 0; i < N_ERROR_ROWS; i++) {
        const error_row *r = &error_rows[i];
        for (size_t j = 0; j < i; j++)
            assert_int_not_equal(r->value, error_rows[j].value);
        assert_non_null(r->text);
        assert_true(strlen(r->text) > 0);
        assert_true(is_wire_code(r->hcode));
        assert_true(is_wire_code(r->ncode));
        assert_in_range(r->grpc, 0, 16);
        if (r->value == 0) {
            assert_string_equal(r->name, "OK");
            assert_int_equal(r->http, 200);
            assert_int_equal(r->grpc, 0);
        } else {
            assert_true(r->value < 0);
            assert_true(strncmp(r->name, "E_", 2) == 0);
            assert_in_range(r->http, 400, 599);
            assert_int_not_equal(r->grpc, 0);
        }
        /* The lookups must agree with the table they are generated from. */
        assert_string_equal(inferd_strerror(r->value), r->text);
        assert_int_equal(inferd_error_http_status(r->value), r->http);
        assert_string_equal(inferd_error_http_code(r->value), r->hcode);
        assert_string_equal(inferd_error_nats_code(r->value), r->ncode);
        assert_int_equal(inferd_error_grpc_status(r->value), r->grpc);
    }
}

static void test_error_table_known_values(void **state)
{
    (void)state;
    assert_int_equal(INFERD_OK, 0);
    assert_string_equal(inferd_strerror(INFERD_OK), "success");
    assert_int_equal(inferd_error_http_status(INFERD_E_INVALID), 400);
    assert_string_equal(inferd_error_http_code(INFERD_E_INVALID), "invalid_value");
    assert_string_equal(inferd_error_nats_code(INFERD_E_INVALID), "bad_request");
    assert_string_equal(inferd_error_openai_type(INFERD_E_INVALID), "invalid_request_error");
    assert_string_equal(inferd_error_openai_type(INFERD_E_UNAUTHORIZED), "authentication_error");
    assert_string_equal(inferd_error_openai_type(INFERD_E_MODEL_NOT_FOUND), "not_found_error");
    assert_string_equal(inferd_error_openai_type(INFERD_E_TIMEOUT), "server_error");
    assert_int_equal(inferd_error_grpc_status(INFERD_E_OVERLOADED), 8);
    assert_int_equal(inferd_error_http_status(INFERD_E_NOT_FOUND), 404);
    assert_int_equal(inferd_error_http_status(INFERD_E_OVERLOADED), 503);
    assert_string_equal(inferd_strerror(INFERD_E_NOMEM), "out of memory");
    assert_string_equal(inferd_error_http_code(INFERD_E_RANGE), "invalid_value");
}

static void test_error_unknown_codes(void **state)
{
    (void)state;
    const int unknown[] = {1, 2, -99, -100, 42, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(inferd_strerror(unknown[i]), "unknown error");
        assert_int_equal(inferd_error_http_status(unknown[i]), 500);
        assert_string_equal(inferd_error_http_code(unknown[i]), "internal");
        assert_string_equal(inferd_error_nats_code(unknown[i]), "internal");
        assert_int_equal(inferd_error_grpc_status(unknown[i]), 13);
        assert_string_equal(inferd_error_openai_type(unknown[i]), "server_error");
    }
}

static void test_error_fail_formats(void **state)
{
    (void)state;
    inferd_error err;
    memset(&err, 0x5a, sizeof(err));
    int rc = inferd_fail(&err, INFERD_E_FORMAT, "field '%s' at %d: %s", "n_ctx", 17, "bad");
    assert_int_equal(rc, INFERD_E_FORMAT);
    assert_int_equal(err.code, INFERD_E_FORMAT);
    assert_int_equal(err.sys_errno, 0);
    assert_string_equal(err.msg, "field 'n_ctx' at 17: bad");
    assert_string_equal(err.param, "");

    /* A field at fault is recorded (truncated to fit), and cleared by the
     * next failure that names none. */
    rc = inferd_fail_param(&err, INFERD_E_INVALID_TYPE, "max_tokens", "max_tokens: %s", "no");
    assert_int_equal(rc, INFERD_E_INVALID_TYPE);
    assert_string_equal(err.param, "max_tokens");
    assert_string_equal(err.msg, "max_tokens: no");
    char longparam[200];
    memset(longparam, 'p', sizeof(longparam) - 1);
    longparam[sizeof(longparam) - 1] = '\0';
    inferd_fail_param(&err, INFERD_E_INVALID, longparam, "x");
    assert_int_equal(strlen(err.param), INFERD_ERROR_PARAM_MAX - 1);

    /* A later failure overwrites the earlier one, sys_errno included. */
    rc = inferd_fail_errno(&err, INFERD_E_IO, ENOENT, "open '%s'", "/x");
    assert_int_equal(rc, INFERD_E_IO);
    assert_int_equal(err.code, INFERD_E_IO);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_string_equal(err.msg, "open '/x'");
    assert_string_equal(err.param, "");
    rc = inferd_fail(&err, INFERD_E_INVALID, "plain");
    assert_int_equal(err.sys_errno, 0);
    assert_string_equal(err.msg, "plain");
    assert_int_equal(rc, INFERD_E_INVALID);
}

static void test_error_fail_truncates(void **state)
{
    (void)state;
    char longmsg[1000];
    longmsg[sizeof(longmsg) - 1] = '\0';
    for (size_t i = 0; i < sizeof(longmsg) - 1; i++)
        longmsg[i] = (char)('a' + i % 26);

    inferd_error err;
    memset(&err, 0x5a, sizeof(err));
    int rc = inferd_fail(&err, INFERD_E_RANGE, "%s", longmsg);
    assert_int_equal(rc, INFERD_E_RANGE);
    assert_int_equal(err.code, INFERD_E_RANGE);
    assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
    assert_int_equal(err.msg[sizeof(err.msg) - 1], '\0');
    assert_memory_equal(err.msg, longmsg, sizeof(err.msg) - 1);

    /* Exactly 255 characters fit whole. */
    longmsg[255] = '\0';
    rc = inferd_fail_errno(&err, INFERD_E_IO, EIO, "%s", longmsg);
    assert_int_equal(rc, INFERD_E_IO);
    assert_int_equal(err.sys_errno, EIO);
    assert_string_equal(err.msg, longmsg);
}

static void test_error_fail_null_err(void **state)
{
    (void)state;
    assert_int_equal(inferd_fail(NULL, INFERD_E_TIMEOUT, "x %d", 1), INFERD_E_TIMEOUT);
    assert_int_equal(inferd_fail_errno(NULL, INFERD_E_IO, EPIPE, "y"), INFERD_E_IO);
    assert_int_equal(inferd_fail(NULL, INFERD_OK, "ok"), INFERD_OK);
    inferd_error_clear(NULL);
}

static void test_error_clear(void **state)
{
    (void)state;
    inferd_error err;
    inferd_fail_errno(&err, INFERD_E_IO, EACCES, "denied");
    inferd_error_clear(&err);
    assert_int_equal(err.code, 0);
    assert_int_equal(err.sys_errno, 0);
    assert_string_equal(err.msg, "");
}

/* ---- allocator ---- */

static void test_alloc_count_increases(void **state)
{
    (void)state;
    long c0 = inferd_alloc_count();
    void *p = inferd_malloc(16);
    assert_non_null(p);
    assert_int_equal(inferd_alloc_count(), c0 + 1);
    void *q = inferd_calloc(4, 8);
    assert_non_null(q);
    assert_int_equal(inferd_alloc_count(), c0 + 2);
    p = inferd_realloc(p, 64);
    assert_non_null(p);
    assert_int_equal(inferd_alloc_count(), c0 + 3);
    char *s = inferd_strdup("hello");
    assert_non_null(s);
    assert_int_equal(inferd_alloc_count(), c0 + 4);
    void *a = inferd_aligned_alloc(64, 100);
    assert_non_null(a);
    assert_int_equal(inferd_alloc_count(), c0 + 5);
    inferd_free(a);
    inferd_free(s);
    inferd_free(q);
    inferd_free(p);
}

static void test_alloc_zero_sizes(void **state)
{
    (void)state;
    void *p = inferd_malloc(0);
    void *q = inferd_calloc(0, 8);
    void *r = inferd_calloc(8, 0);
    void *a = inferd_aligned_alloc(32, 0);
    assert_non_null(p);
    assert_non_null(q);
    assert_non_null(r);
    assert_non_null(a);
    p = inferd_realloc(p, 0);
    assert_non_null(p);
    inferd_free(p);
    inferd_free(q);
    inferd_free(r);
    inferd_free(a);
    inferd_free(NULL);
}

static void test_alloc_calloc_zeroes(void **state)
{
    (void)state;
    unsigned char *p = inferd_calloc(37, 13);
    assert_non_null(p);
    for (size_t i = 0; i < 37 * 13; i++)
        assert_int_equal(p[i], 0);
    inferd_free(p);
}

static void test_alloc_calloc_overflow(void **state)
{
    (void)state;
    assert_null(inferd_calloc(SIZE_MAX / 2 + 1, 2));
    assert_null(inferd_calloc(2, SIZE_MAX / 2 + 1));
    assert_null(inferd_calloc(SIZE_MAX, SIZE_MAX));
    assert_null(
        inferd_calloc((size_t)1 << (sizeof(size_t) * 4), (size_t)1 << (sizeof(size_t) * 4)));
}

static void test_alloc_aligned(void **state)
{
    (void)state;
    for (size_t align = sizeof(void *); align <= 65536; align *= 2) {
        for (size_t size = 1; size <= 4096; size = size * 3 + 1) {
            unsigned char *p = inferd_aligned_alloc(align, size);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % align, 0);
            memset(p, 0xab, size);
            assert_int_equal(p[size - 1], 0xab);
            inferd_free(p);
        }
    }
}

static void test_alloc_strdup_strndup(void **state)
{
    (void)state;
    char *s = inferd_strdup("");
    assert_non_null(s);
    assert_string_equal(s, "");
    inferd_free(s);
    s = inferd_strdup("inferd");
    assert_string_equal(s, "inferd");
    inferd_free(s);
    s = inferd_strndup("inferd", 3);
    assert_string_equal(s, "inf");
    inferd_free(s);
    s = inferd_strndup("ab", 100);
    assert_string_equal(s, "ab");
    inferd_free(s);
    /* strndup never reads past n bytes: the source need not be terminated. */
    const char raw[4] = {'w', 'x', 'y', 'z'};
    s = inferd_strndup(raw, sizeof(raw));
    assert_string_equal(s, "wxyz");
    inferd_free(s);
}

/* One allocation of kind @p kind (0 malloc, 1 calloc, 2 realloc of a fresh
 * block, 3 aligned, 4 strdup, 5 strndup). Returns the block or NULL; a block
 * given to realloc is freed either way. */
static void *alloc_kind(int kind, void *realloc_src)
{
    switch (kind) {
    case 0: return inferd_malloc(24);
    case 1: return inferd_calloc(3, 8);
    case 2: {
        void *q = inferd_realloc(realloc_src, 96);
        if (!q)
            inferd_free(realloc_src);
        return q;
    }
    case 3: return inferd_aligned_alloc(128, 40);
    case 4: return inferd_strdup("fault");
    default: return inferd_strndup("injection", 4);
    }
}

static void test_alloc_fail_after_each_kind(void **state)
{
    (void)state;
    for (int kind = 0; kind < 6; kind++) {
        for (long nth = 1; nth <= 4; nth++) {
            /* The realloc sources are made before arming the countdown. */
            void *src[6] = {0};
            if (kind == 2)
                for (int i = 0; i < 6; i++)
                    src[i] = malloc(8);
            inferd_alloc_fail_after(nth);
            for (long i = 1; i <= 6; i++) {
                void *p = alloc_kind(kind, src[i - 1]);
                if (i == nth)
                    assert_null(p);
                else
                    assert_non_null(p);
                inferd_free(p);
            }
        }
    }
    inferd_alloc_fail_after(0);
}

static void test_alloc_fail_after_mixed(void **state)
{
    (void)state;
    /* The countdown counts every kind of allocation alike. */
    inferd_alloc_fail_after(4);
    void *a = inferd_malloc(8);
    void *b = inferd_strdup("x");
    void *c = inferd_aligned_alloc(64, 8);
    void *d = inferd_calloc(2, 2);
    void *e = inferd_realloc(NULL, 8);
    void *f = inferd_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(d);
    assert_non_null(e);
    assert_non_null(f);
    inferd_free(a);
    inferd_free(b);
    inferd_free(c);
    inferd_free(e);
    inferd_free(f);

    /* A failed realloc leaves the original block intact. */
    char *s = inferd_strdup("keep");
    assert_non_null(s);
    inferd_alloc_fail_after(1);
    assert_null(inferd_realloc(s, 1 << 20));
    assert_string_equal(s, "keep");
    inferd_free(s);

    /* Disarming stops any pending failure. */
    inferd_alloc_fail_after(2);
    inferd_alloc_fail_after(0);
    for (int i = 0; i < 5; i++) {
        void *p = inferd_malloc(8);
        assert_non_null(p);
        inferd_free(p);
    }
}

/* ---- logger ---- */

/* Capture what fd 2 receives between capture_begin and capture_end. */
typedef struct {
    FILE *tmp;
    int saved_fd;
} capture;

static void capture_begin(capture *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_true(dup2(fileno(c->tmp), STDERR_FILENO) >= 0);
}

/* Restore fd 2 and return what was written (malloc'd, NUL-terminated). */
static char *capture_end(capture *c, size_t *out_len)
{
    fflush(stderr);
    assert_true(dup2(c->saved_fd, STDERR_FILENO) >= 0);
    close(c->saved_fd);
    /* The log writes to the fd directly, so ask the fd, not stdio. */
    long len = (long)lseek(fileno(c->tmp), 0, SEEK_END);
    assert_true(len >= 0);
    char *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(c->tmp), buf, (size_t)len, 0), len);
    buf[len] = '\0';
    fclose(c->tmp);
    *out_len = (size_t)len;
    return buf;
}

static int all_digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Check the `ts=YYYY-MM-DDTHH:MM:SS.mmmZ ` prefix, close to now, and return
 * the rest of the line. */
static const char *check_ts(const char *line)
{
    assert_true(strncmp(line, "ts=", 3) == 0);
    const char *t = line + 3;
    assert_true(all_digits(t, 4));
    assert_int_equal(t[4], '-');
    assert_true(all_digits(t + 5, 2));
    assert_int_equal(t[7], '-');
    assert_true(all_digits(t + 8, 2));
    assert_int_equal(t[10], 'T');
    assert_true(all_digits(t + 11, 2));
    assert_int_equal(t[13], ':');
    assert_true(all_digits(t + 14, 2));
    assert_int_equal(t[16], ':');
    assert_true(all_digits(t + 17, 2));
    assert_int_equal(t[19], '.');
    assert_true(all_digits(t + 20, 3));
    assert_int_equal(t[23], 'Z');
    assert_int_equal(t[24], ' ');

    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = atoi(t) - 1900;
    tm.tm_mon = atoi(t + 5) - 1;
    tm.tm_mday = atoi(t + 8);
    tm.tm_hour = atoi(t + 11);
    tm.tm_min = atoi(t + 14);
    tm.tm_sec = atoi(t + 17);
    assert_in_range(tm.tm_mon, 0, 11);
    assert_in_range(tm.tm_mday, 1, 31);
    assert_in_range(tm.tm_hour, 0, 23);
    assert_in_range(tm.tm_min, 0, 59);
    assert_in_range(tm.tm_sec, 0, 60);
    time_t logged = timegm(&tm);
    time_t now = time(NULL);
    assert_true(logged <= now && now - logged <= 5);
    return t + 25;
}

/* The rate limit: the first line goes, the next ones in the same second
 * are counted, and the first after the second says how many were left out. */
static void test_log_allow_limits(void **state)
{
    (void)state;
    inferd_log_limit lim = {0};
    unsigned long long more = 99;
    assert_true(inferd_log_allow(&lim, &more));
    assert_int_equal(more, 0);
    for (int i = 0; i < 5; i++)
        assert_false(inferd_log_allow(&lim, &more));
    /* A second later (the last line moved back rather than waiting). */
    atomic_store(&lim.last_ms, atomic_load(&lim.last_ms) - 1500);
    assert_true(inferd_log_allow(&lim, &more));
    assert_int_equal(more, 5);
    assert_false(inferd_log_allow(&lim, &more));
}

static void test_log_level_parse(void **state)
{
    (void)state;
    assert_int_equal(inferd_log_level_parse("debug"), INFERD_LOG_DEBUG);
    assert_int_equal(inferd_log_level_parse("info"), INFERD_LOG_INFO);
    assert_int_equal(inferd_log_level_parse("warn"), INFERD_LOG_WARN);
    assert_int_equal(inferd_log_level_parse("error"), INFERD_LOG_ERROR);
    assert_int_equal(inferd_log_level_parse("off"), INFERD_LOG_OFF);
    assert_int_equal(inferd_log_level_parse("WARN"), INFERD_LOG_WARN);
    assert_int_equal(inferd_log_level_parse("Debug"), INFERD_LOG_DEBUG);
    assert_int_equal(inferd_log_level_parse("warning"), -1);
    assert_int_equal(inferd_log_level_parse(""), -1);
    assert_int_equal(inferd_log_level_parse("inf"), -1);
    assert_int_equal(inferd_log_level_parse("trace"), -1);
    assert_int_equal(inferd_log_level_parse(NULL), -1);
}

static void test_log_set_get_level(void **state)
{
    (void)state;
    inferd_log_level saved = inferd_log_get_level();
    for (int l = INFERD_LOG_DEBUG; l <= INFERD_LOG_OFF; l++) {
        inferd_log_set_level((inferd_log_level)l);
        assert_int_equal(inferd_log_get_level(), l);
    }
    inferd_log_set_level(saved);
}

static void test_log_line_format(void **state)
{
    (void)state;
    inferd_log_level saved = inferd_log_get_level();
    inferd_log_set_level(INFERD_LOG_DEBUG);
    capture c;
    size_t len;
    capture_begin(&c);
    inferd_log_warn("x", "value %d of \"%s\"", 42, "name");
    char *out = capture_end(&c, &len);
    inferd_log_set_level(saved);

    assert_int_equal(strlen(out), len);
    assert_int_equal(out[len - 1], '\n');
    assert_null(memchr(out, '\n', len - 1));
    const char *rest = check_ts(out);
    assert_string_equal(rest, "level=warn comp=x msg=\"value 42 of \\\"name\\\"\"\n");
    free(out);
}

static void test_log_escapes(void **state)
{
    (void)state;
    inferd_log_level saved = inferd_log_get_level();
    inferd_log_set_level(INFERD_LOG_INFO);
    capture c;
    size_t len;
    capture_begin(&c);
    inferd_log_error("gguf", "a\"b\\c\nd\te\x01\x1f~%s", "\x7f\xc3\xa9");
    char *out = capture_end(&c, &len);
    inferd_log_set_level(saved);

    const char *rest = check_ts(out);
    /* Quotes and backslashes get a backslash; control characters become
     * \xNN; other bytes (DEL, UTF-8) pass through. */
    assert_string_equal(rest, "level=error comp=gguf msg=\"a\\\"b\\\\c\\x0ad\\x09e"
                              "\\x01\\x1f~\x7f\xc3\xa9\"\n");
    free(out);
}

static void test_log_levels_filter(void **state)
{
    (void)state;
    inferd_log_level saved = inferd_log_get_level();
    capture c;
    size_t len;

    inferd_log_set_level(INFERD_LOG_WARN);
    capture_begin(&c);
    inferd_log_debug("t", "debug line");
    inferd_log_info("t", "info line");
    char *out = capture_end(&c, &len);
    assert_int_equal(len, 0);
    free(out);

    capture_begin(&c);
    inferd_log_debug("t", "one");
    inferd_log_warn("t", "two");
    inferd_log_info("t", "three");
    inferd_log_error(NULL, "four");
    out = capture_end(&c, &len);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    assert_string_equal(check_ts(out), "level=warn comp=t msg=\"two\"");
    /* A NULL component is written as "-". */
    assert_string_equal(check_ts(nl + 1), "level=error comp=- msg=\"four\"\n");
    free(out);

    inferd_log_set_level(INFERD_LOG_OFF);
    capture_begin(&c);
    inferd_log_error("t", "even errors");
    inferd_log(INFERD_LOG_OFF, "t", "level off itself");
    out = capture_end(&c, &len);
    assert_int_equal(len, 0);
    free(out);

    inferd_log_set_level(INFERD_LOG_DEBUG);
    capture_begin(&c);
    inferd_log_debug("t", "d");
    inferd_log(INFERD_LOG_OFF, "t", "never written");
    out = capture_end(&c, &len);
    assert_string_equal(check_ts(out), "level=debug comp=t msg=\"d\"\n");
    free(out);
    inferd_log_set_level(saved);
}

static void test_log_long_lines_bounded(void **state)
{
    (void)state;
    inferd_log_level saved = inferd_log_get_level();
    inferd_log_set_level(INFERD_LOG_INFO);
    capture c;
    size_t len;

    /* A message that escapes to far more than a line holds is cut at a
     * whole escape and the line still ends with a quote and newline. */
    char ctl[1001];
    memset(ctl, 0x01, 1000);
    ctl[1000] = '\0';
    capture_begin(&c);
    inferd_log_info("t", "%s", ctl);
    char *out = capture_end(&c, &len);
    assert_true(len > 1000 && len <= 2300);
    assert_int_equal(strlen(out), len);
    const char *rest = check_ts(out);
    assert_true(strncmp(rest, "level=info comp=t msg=\"", 23) == 0);
    const char *body = rest + 23;
    size_t body_len = strlen(body);
    assert_true(body_len >= 2);
    assert_string_equal(body + body_len - 2, "\"\n");
    assert_int_equal((body_len - 2) % 4, 0);
    for (size_t i = 0; i + 2 < body_len; i += 4)
        assert_memory_equal(body + i, "\\x01", 4);
    free(out);

    /* A long plain message is cut to the 1023 bytes the formatting buffer
     * holds, and the line stays whole. */
    char plain[3000];
    memset(plain, 'p', sizeof(plain) - 1);
    plain[sizeof(plain) - 1] = '\0';
    capture_begin(&c);
    inferd_log_info("t", "%s", plain);
    out = capture_end(&c, &len);
    rest = check_ts(out);
    assert_true(strncmp(rest, "level=info comp=t msg=\"", 23) == 0);
    body = rest + 23;
    assert_int_equal(strlen(body), 1023 + 2);
    assert_int_equal(strspn(body, "p"), 1023);
    assert_string_equal(body + 1023, "\"\n");
    free(out);

    /* An oversized component name must not overrun the line buffer. */
    char comp[4000];
    memset(comp, 'c', sizeof(comp) - 1);
    comp[sizeof(comp) - 1] = '\0';
    capture_begin(&c);
    inferd_log_info(comp, "m");
    out = capture_end(&c, &len);
    assert_true(len > 0 && len <= 2300);
    assert_true(strncmp(out, "ts=", 3) == 0);
    assert_int_equal(out[len - 1], '\n');
    assert_null(memchr(out, '\n', len - 1));
    free(out);

    inferd_log_set_level(saved);
}

/* ---- cpu ---- */

static void test_cpu_isa(void **state)
{
    (void)state;
    inferd_isa hw = inferd_cpu_isa_hw();
    inferd_isa isa = inferd_cpu_isa();
    assert_in_range(hw, INFERD_ISA_SCALAR, INFERD_ISA_AVX512);
    assert_in_range(isa, INFERD_ISA_SCALAR, INFERD_ISA_AVX512);
    assert_true(isa <= hw);
    /* Cached: the same answer every time. */
    assert_int_equal(inferd_cpu_isa(), isa);
    assert_int_equal(inferd_cpu_isa_hw(), hw);
    const char *env = getenv("INFERD_ISA");
    if (!env)
        assert_int_equal(isa, hw);
    else if (strcmp(env, "scalar") == 0)
        assert_int_equal(isa, INFERD_ISA_SCALAR);
}

static void test_cpu_isa_names(void **state)
{
    (void)state;
    assert_string_equal(inferd_isa_name(INFERD_ISA_SCALAR), "scalar");
    assert_string_equal(inferd_isa_name(INFERD_ISA_AVX2), "avx2");
    assert_string_equal(inferd_isa_name(INFERD_ISA_AVX512), "avx512");
    assert_string_equal(inferd_isa_name((inferd_isa)77), "scalar");
    assert_non_null(inferd_isa_name(inferd_cpu_isa()));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_table_rows),
        cmocka_unit_test(test_error_table_known_values),
        cmocka_unit_test(test_error_unknown_codes),
        cmocka_unit_test(test_error_fail_formats),
        cmocka_unit_test(test_error_fail_truncates),
        cmocka_unit_test(test_error_fail_null_err),
        cmocka_unit_test(test_error_clear),
        cmocka_unit_test(test_alloc_count_increases),
        cmocka_unit_test(test_alloc_zero_sizes),
        cmocka_unit_test(test_alloc_calloc_zeroes),
        cmocka_unit_test(test_alloc_calloc_overflow),
        cmocka_unit_test(test_alloc_aligned),
        cmocka_unit_test(test_alloc_strdup_strndup),
        cmocka_unit_test(test_alloc_fail_after_each_kind),
        cmocka_unit_test(test_alloc_fail_after_mixed),
        cmocka_unit_test(test_log_allow_limits),
        cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_log_set_get_level),
        cmocka_unit_test(test_log_line_format),
        cmocka_unit_test(test_log_escapes),
        cmocka_unit_test(test_log_levels_filter),
        cmocka_unit_test(test_log_long_lines_bounded),
        cmocka_unit_test(test_cpu_isa),
        cmocka_unit_test(test_cpu_isa_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
