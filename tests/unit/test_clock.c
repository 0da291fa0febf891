/* Base: the monotonic clock, deadlines, and timed waits on a monotonic
 * condition variable (a timeout after at least the time asked, a signal
 * that ends the wait early). Only lower bounds on elapsed time: the
 * machine is shared. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>

#include "inferd/clock.h"

static void test_clock_reads(void **state)
{
    (void)state;
    uint64_t a = inferd_now_ns(), b = inferd_now_ns();
    assert_true(b >= a);
    assert_true(a > 0);
    /* The wall clock is after 2020-01-01. */
    assert_true(inferd_unix_ms() > 1577836800000LL);
    assert_true(inferd_unix_s() > 1577836800.0);
    uint64_t t0 = inferd_now_ns();
    inferd_sleep_ms(20);
    assert_true(inferd_now_ns() - t0 >= 20000000u);
    inferd_sleep_ms(0);
    inferd_sleep_ms(-5);
}

static void test_clock_deadlines(void **state)
{
    (void)state;
    inferd_deadline none = inferd_deadline_in_ms(-1);
    assert_int_equal(none.at_ns, 0);
    assert_false(inferd_deadline_passed(none));
    assert_int_equal(inferd_deadline_left_ms(none), -1);

    inferd_deadline now = inferd_deadline_in_ms(0);
    assert_true(now.at_ns != 0);
    assert_true(inferd_deadline_passed(now));
    assert_int_equal(inferd_deadline_left_ms(now), 0);

    inferd_deadline later = inferd_deadline_in_ms(60000);
    assert_false(inferd_deadline_passed(later));
    int64_t left = inferd_deadline_left_ms(later);
    assert_true(left > 59000 && left <= 60000);

    /* Absolute deadlines: 0 is none, a past time has passed, a time 1 ns
     * ahead has (rounded up) a millisecond left unless it passed already. */
    assert_int_equal(inferd_deadline_at_ns(0).at_ns, 0);
    assert_int_equal(inferd_deadline_left_ms(inferd_deadline_at_ns(0)), -1);
    inferd_deadline past = inferd_deadline_at_ns(inferd_now_ns() - 1);
    assert_true(inferd_deadline_passed(past));
    assert_int_equal(inferd_deadline_left_ms(past), 0);
    int64_t tiny = inferd_deadline_left_ms(inferd_deadline_at_ns(inferd_now_ns() + 1));
    assert_true(tiny == 0 || tiny == 1);
    inferd_deadline soon = inferd_deadline_at_ns(inferd_now_ns() + 2500000u); /* 2.5 ms */
    assert_true(inferd_deadline_left_ms(soon) <= 3);

    /* A timeout past the clock's range saturates instead of wrapping into
     * the past. */
    inferd_deadline huge = inferd_deadline_in_ms(INT64_MAX);
    assert_true(huge.at_ns == UINT64_MAX);
    assert_false(inferd_deadline_passed(huge));
    assert_true(inferd_deadline_left_ms(huge) > (int64_t)1e12);
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int flag;
} waiter;

static void *signal_later(void *arg)
{
    waiter *w = arg;
    inferd_sleep_ms(20);
    pthread_mutex_lock(&w->mu);
    w->flag = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Wait on @p w until signal_later sets its flag; every wait must return 0
 * (woken), never ETIMEDOUT. */
static void signalled_wait(waiter *w, uint64_t until_ns)
{
    pthread_t t;
    w->flag = 0;
    pthread_mutex_lock(&w->mu);
    assert_int_equal(pthread_create(&t, NULL, signal_later, w), 0);
    while (!w->flag)
        assert_int_equal(inferd_cond_wait_until_ns(&w->cv, &w->mu, until_ns), 0);
    pthread_mutex_unlock(&w->mu);
    pthread_join(t, NULL);
}

static void test_clock_cond_waits(void **state)
{
    (void)state;
    waiter w = {.flag = 0};
    pthread_mutex_init(&w.mu, NULL);
    assert_int_equal(inferd_cond_init_monotonic(&w.cv), 0);

    /* Nobody signals: the wait times out after at least 30 ms (on a default,
     * CLOCK_REALTIME cv the monotonic deadline would read as a date in 1970
     * and time out at once). */
    pthread_mutex_lock(&w.mu);
    uint64_t t0 = inferd_now_ns();
    int rc = 0;
    while (rc == 0)
        rc = inferd_cond_wait_ms(&w.cv, &w.mu, 30);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(inferd_now_ns() - t0 >= 30000000u);

    /* An absolute deadline already passed returns at once. */
    pthread_mutex_lock(&w.mu);
    assert_int_equal(inferd_cond_wait_until_ns(&w.cv, &w.mu, inferd_now_ns()), ETIMEDOUT);
    pthread_mutex_unlock(&w.mu);

    /* A signal ends a long wait, a wait on the saturated deadline (a valid,
     * far time, not an error) and a wait without limit (0). */
    signalled_wait(&w, inferd_now_ns() + 60ull * 1000000000u);
    signalled_wait(&w, inferd_deadline_in_ms(INT64_MAX).at_ns);
    signalled_wait(&w, 0);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_reads),
        cmocka_unit_test(test_clock_deadlines),
        cmocka_unit_test(test_clock_cond_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
