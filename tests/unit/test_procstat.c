/* Process figures: plausible values, CPU time that grows with work, RSS
 * that grows with touched memory, descriptors counted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inferd/procstat.h"

static void test_procstat_values(void **state)
{
    (void)state;
    inferd_procstat a, b;
    inferd_error err = {0};
    assert_int_equal(inferd_procstat_read(&a, &err), 0);
    assert_true(a.rss_bytes > 0);
    assert_true(a.vm_bytes >= a.rss_bytes);
    assert_true(a.n_threads >= 1);
    assert_true(a.n_open_fds >= 1);
    assert_true(a.max_fds >= a.n_open_fds);
    double now = (double)time(NULL);
    assert_true(a.start_time_s > now - 3600.0 && a.start_time_s <= now + 1.0);

    /* Burn CPU until getrusage moves; the percentage is then positive. */
    volatile double x = 0;
    do {
        for (int i = 0; i < 1000000; i++)
            x += i * 0.5;
        assert_int_equal(inferd_procstat_read(&b, &err), 0);
    } while (b.cpu_user_s + b.cpu_system_s <= a.cpu_user_s + a.cpu_system_s);
    (void)x;
    assert_true(inferd_procstat_cpu_percent(&a, &b, 1.0) > 0.0);
    assert_true(inferd_procstat_cpu_percent(&a, &b, 0.0) == 0.0);
    assert_true(inferd_procstat_cpu_percent(&b, &a, 1.0) == 0.0);

    /* 64 MiB touched shows in RSS. */
    size_t big = 64u << 20;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, 1, big);
    assert_int_equal(inferd_procstat_read(&b, &err), 0);
    assert_true(b.rss_bytes >= a.rss_bytes + big / 2);
    free(p);

    /* Two more descriptors are counted. */
    int fd1 = open("/dev/null", O_RDONLY), fd2 = open("/dev/null", O_RDONLY);
    assert_true(fd1 >= 0 && fd2 >= 0);
    assert_int_equal(inferd_procstat_read(&b, &err), 0);
    assert_int_equal(b.n_open_fds, a.n_open_fds + 2);
    close(fd1);
    close(fd2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_procstat_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
