/* SIGBUS guard: a guarded mapping whose file is truncated reads zeros and
 * is flagged broken instead of killing the process (a writable one takes
 * the faulting write in zero pages); a fault outside every
 * guarded mapping still kills (a forked child) with SIGBUS; slots are
 * bounded and reusable. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inferd/mapguard.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* A temp file of @p n_pages pages of @p byte, mapped read-only and private
 * as the GGUF reader maps models. */
static const uint8_t *map_temp(size_t n_pages, int byte, size_t *out_len, int *out_fd)
{
    char path[] = "/tmp/inferd-mapguard-XXXXXX";
    const size_t len = n_pages * (size_t)sysconf(_SC_PAGESIZE);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, byte, len);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    free(buf);
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    assert_true(p != MAP_FAILED);
    *out_len = len;
    *out_fd = fd;
    return p;
}

static void test_mapguard_truncated_mapping_reads_zeros(void **state)
{
    (void)state;
    size_t len;
    int fd;
    const volatile uint8_t *p = map_temp(4, 0xab, &len, &fd);
    int slot = inferd_mapguard_add((const void *)p, len);
    assert_true(slot >= 0);
    assert_int_equal(p[0], 0xab);
    assert_int_equal(p[len - 1], 0xab);
    assert_false(inferd_mapguard_broken(slot));

    assert_int_equal(ftruncate(fd, 0), 0);
    /* Past the new end of the file: SIGBUS, turned into zeros. */
    assert_int_equal(p[len / 2], 0);
    assert_true(inferd_mapguard_broken(slot));
    /* The whole mapping reads zeros now, and reading faults no more. */
    for (size_t i = 0; i < len; i += 512)
        assert_int_equal(p[i], 0);

    inferd_mapguard_remove(slot);
    munmap((void *)p, len);
    close(fd);
}

/* A shared, writable mapping (a shared-memory region's outputs) whose
 * object is truncated: a write faults, lands in writable zero pages, and
 * the mapping is flagged broken; nothing reaches the file. */
static void test_mapguard_truncated_writable_mapping(void **state)
{
    (void)state;
    char path[] = "/tmp/inferd-mapguard-XXXXXX";
    const size_t len = 2 * (size_t)sysconf(_SC_PAGESIZE);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    volatile uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    int slot = inferd_mapguard_add_rw((const void *)p, len, true);
    assert_true(slot >= 0);
    p[0] = 7;
    assert_int_equal(p[0], 7);
    assert_int_equal(ftruncate(fd, 0), 0);
    p[len - 1] = 9; /* SIGBUS, then the write completes in zero pages */
    assert_true(inferd_mapguard_broken(slot));
    assert_int_equal(p[len - 1], 9);
    assert_int_equal(p[0], 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 0);
    inferd_mapguard_remove(slot);
    munmap((void *)p, len);
    close(fd);
}

static void test_mapguard_unguarded_fault_kills(void **state)
{
    (void)state;
    size_t glen, len;
    int gfd, fd;
    const uint8_t *guarded = map_temp(1, 1, &glen, &gfd);
    const volatile uint8_t *p = map_temp(2, 2, &len, &fd);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka catches SIGBUS during a test: start from the default, as
         * a program would, then guard one mapping but not the other. */
        signal(SIGBUS, SIG_DFL);
        if (inferd_mapguard_add(guarded, glen) < 0 || ftruncate(fd, 0) != 0)
            _exit(3);
        volatile uint8_t v = p[len - 1];
        (void)v;
        _exit(0); /* the read did not fault: wrong */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
#ifdef UNDER_ASAN
    /* AddressSanitizer's own SIGBUS handler was there before: it reports
     * the fault and exits non-zero. */
    assert_true((WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
                (WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3));
#else
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGBUS);
#endif
    munmap((void *)p, len);
    munmap((void *)guarded, glen);
    close(fd);
    close(gfd);
}

static void test_mapguard_slots(void **state)
{
    (void)state;
    static uint8_t page[64];
    assert_int_equal(inferd_mapguard_add(page, 0), -1);
    assert_int_equal(inferd_mapguard_add(NULL, 10), -1);
    assert_false(inferd_mapguard_broken(-1));
    inferd_mapguard_remove(-1);
    int slots[INFERD_MAPGUARD_MAX];
    for (int i = 0; i < INFERD_MAPGUARD_MAX; i++) {
        slots[i] = inferd_mapguard_add(page + (i % 64), 1);
        assert_true(slots[i] >= 0);
    }
    assert_int_equal(inferd_mapguard_add(page, 1), -1); /* full */
    inferd_mapguard_remove(slots[7]);
    int again = inferd_mapguard_add(page, 1);
    assert_int_equal(again, slots[7]);
    assert_false(inferd_mapguard_broken(again));
    for (int i = 0; i < INFERD_MAPGUARD_MAX; i++)
        inferd_mapguard_remove(slots[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapguard_truncated_mapping_reads_zeros),
        cmocka_unit_test(test_mapguard_truncated_writable_mapping),
        cmocka_unit_test(test_mapguard_unguarded_fault_kills),
        cmocka_unit_test(test_mapguard_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
