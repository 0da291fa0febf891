/* Base: the bounded growable buffer. Appends, formatted appends longer
 * than any internal scratch, the limit met exactly and passed (a sticky
 * error that leaves the contents as they were), take and reset, and every
 * allocation failing in turn (the ASan build checks for leaks). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "inferd/alloc.h"
#include "inferd/buf.h"
#include "inferd/error.h"

static void test_buf_add_and_format(void **state)
{
    (void)state;
    inferd_buf b = INFERD_BUF_INIT(1 << 20);
    assert_null(b.p);
    assert_int_equal(inferd_buf_add(&b, "ab", 2), 0);
    assert_int_equal(inferd_buf_addc(&b, 'c'), 0);
    assert_int_equal(inferd_buf_addf(&b, "-%d-%s", 42, "x"), 0);
    assert_string_equal(b.p, "abc-42-x");
    assert_int_equal(b.len, 8);
    char big[3000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(inferd_buf_addf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 8 + 2 + 2999);
    assert_int_equal(b.p[b.len - 1], ']');
    assert_int_equal(b.p[b.len], '\0');
    inferd_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    assert_int_equal(inferd_buf_add(&b, "q", 1), 0);
    assert_string_equal(b.p, "q");
    inferd_buf_free(&b);
    assert_null(b.p);
    assert_int_equal(b.limit, 1 << 20); /* the limit stays */
}

static void test_buf_limit(void **state)
{
    (void)state;
    inferd_buf b = INFERD_BUF_INIT(10);
    assert_int_equal(inferd_buf_add(&b, "0123456789", 10), 0); /* exactly the limit */
    assert_int_equal(inferd_buf_add(&b, "x", 1), INFERD_E_RANGE);
    assert_int_equal(b.err, INFERD_E_RANGE);
    assert_string_equal(b.p, "0123456789"); /* untouched */
    /* Sticky: even an empty append fails until reset. */
    assert_int_equal(inferd_buf_add(&b, "", 0), INFERD_E_RANGE);
    assert_int_equal(inferd_buf_addf(&b, "%s", ""), INFERD_E_RANGE);
    assert_true(b.cap <= 11); /* never grown past limit + 1 */
    size_t len = 99;
    assert_null(inferd_buf_take(&b, &len)); /* a failed buffer hands nothing over */
    assert_int_equal(len, 0);
    assert_null(b.p);
    assert_int_equal(b.err, 0);

    inferd_buf z = INFERD_BUF_INIT(0); /* holds nothing */
    assert_int_equal(inferd_buf_add(&z, "a", 1), INFERD_E_RANGE);
    inferd_buf_free(&z);

    inferd_buf f = INFERD_BUF_INIT(5);
    assert_int_equal(inferd_buf_addf(&f, "%s", "123456"), INFERD_E_RANGE);
    assert_null(f.p);
    inferd_buf_free(&f);
    assert_int_equal(f.err, 0); /* free clears the error */

    /* Reset clears the sticky error; the memory stays. */
    inferd_buf r = INFERD_BUF_INIT(4);
    assert_int_equal(inferd_buf_add(&r, "abcd", 4), 0);
    assert_int_equal(inferd_buf_addc(&r, 'e'), INFERD_E_RANGE);
    char *mem = r.p;
    inferd_buf_reset(&r);
    assert_int_equal(r.err, 0);
    assert_ptr_equal(r.p, mem);
    assert_int_equal(inferd_buf_addf(&r, "%d", 1234), 0);
    assert_string_equal(r.p, "1234");
    inferd_buf_free(&r);

    /* An "unbounded" limit: growth does not wrap, and no size can leave
     * room for the NUL past SIZE_MAX. */
    inferd_buf u = INFERD_BUF_INIT(SIZE_MAX);
    assert_int_equal(inferd_buf_add(&u, "abc", 3), 0);
    assert_int_equal(u.cap, 256);
    assert_int_equal(inferd_buf_add(&u, "x", SIZE_MAX), INFERD_E_RANGE);
    assert_string_equal(u.p, "abc");
    inferd_buf_free(&u);
    inferd_buf v = INFERD_BUF_INIT(SIZE_MAX);
    assert_int_equal(inferd_buf_add(&v, "x", SIZE_MAX), INFERD_E_RANGE);
    assert_null(v.p);
    inferd_buf_free(&v);
}

static void test_buf_take(void **state)
{
    (void)state;
    inferd_buf b = INFERD_BUF_INIT(100);
    size_t len = 7;
    char *p = inferd_buf_take(&b, &len); /* empty: "" */
    assert_non_null(p);
    assert_string_equal(p, "");
    assert_int_equal(len, 0);
    inferd_free(p);
    inferd_buf_add(&b, "hello", 5);
    p = inferd_buf_take(&b, &len);
    assert_string_equal(p, "hello");
    assert_int_equal(len, 5);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.limit, 100);
    inferd_free(p);
}

static void test_buf_alloc_failures(void **state)
{
    (void)state;
    int done = 0;
    for (long k = 1; k < 32 && !done; k++) {
        inferd_buf b = INFERD_BUF_INIT(1 << 20);
        inferd_alloc_fail_after(k);
        int rc = 0;
        for (int i = 0; i < 200 && rc == 0; i++)
            rc = inferd_buf_addf(&b, "%04d.", i);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(b.len, 1000);
            done = 1;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(b.err, INFERD_E_NOMEM);
            assert_int_equal(b.len % 5, 0); /* whole appends only */
        }
        inferd_buf_free(&b);
    }
    assert_true(done);

    /* Taking an empty buffer allocates its ""; when that fails, NULL and
     * the buffer is left empty and usable. */
    inferd_buf e = INFERD_BUF_INIT(16);
    size_t len = 5;
    inferd_alloc_fail_after(1);
    assert_null(inferd_buf_take(&e, &len));
    inferd_alloc_fail_after(0);
    assert_int_equal(len, 0);
    assert_int_equal(e.err, 0);
    assert_int_equal(e.limit, 16);
    char *p = inferd_buf_take(&e, &len);
    assert_non_null(p);
    assert_string_equal(p, "");
    inferd_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_add_and_format),
        cmocka_unit_test(test_buf_limit),
        cmocka_unit_test(test_buf_take),
        cmocka_unit_test(test_buf_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
