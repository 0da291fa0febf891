/* Thread pool: argument range errors, every index called exactly once per
 * run for 1..8 threads, long runs of back-to-back tasks and tasks separated
 * by sleeps (spin and sleep wake-up paths), results independent of the
 * thread count, the NULL pool, create/destroy cycles and fault injection. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/pool.h"

#define MAX_THREADS 8

/* ---- work functions ---- */

typedef struct {
    atomic_int calls[MAX_THREADS]; /* calls per ith */
    atomic_int bad_nth;            /* calls that saw a wrong nth or ith */
    atomic_long total;             /* calls in all */
    int expect_nth;
} count_ctx;

static void count_fn(void *arg, int ith, int nth)
{
    count_ctx *c = arg;
    if (nth != c->expect_nth || ith < 0 || ith >= nth || ith >= MAX_THREADS) {
        atomic_fetch_add_explicit(&c->bad_nth, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&c->calls[ith], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->total, 1, memory_order_relaxed);
}

static void count_reset(count_ctx *c, int nth)
{
    for (int i = 0; i < MAX_THREADS; i++)
        atomic_store(&c->calls[i], 0);
    atomic_store(&c->bad_nth, 0);
    atomic_store(&c->total, 0);
    c->expect_nth = nth;
}

/* Each run checks that the previous run finished completely before this one
 * started: a run writes its number into every slot, then the next run reads
 * the slots back. */
typedef struct {
    int run;               /* set by the owner before each run */
    int slot[MAX_THREADS]; /* run number last written by each ith */
    atomic_int stale;      /* slots not holding run - 1 */
} seq_ctx;

static void seq_fn(void *arg, int ith, int nth)
{
    seq_ctx *s = arg;
    (void)nth;
    if (s->slot[ith] != s->run - 1)
        atomic_fetch_add_explicit(&s->stale, 1, memory_order_relaxed);
    s->slot[ith] = s->run;
}

/* Parallel sum of a fixed array: chunk k is summed by thread k % nth into
 * partial[k]; the owner then adds the partials in chunk order, so the result
 * depends on the chunking only, never on the thread count. */
#define SUM_N 100003
#define SUM_CHUNKS 61

typedef struct {
    const double *x;
    double partial[SUM_CHUNKS];
} sum_ctx;

static void sum_fn(void *arg, int ith, int nth)
{
    sum_ctx *s = arg;
    for (int k = ith; k < SUM_CHUNKS; k += nth) {
        size_t lo = (size_t)SUM_N * (size_t)k / SUM_CHUNKS;
        size_t hi = (size_t)SUM_N * (size_t)(k + 1) / SUM_CHUNKS;
        double acc = 0.0;
        for (size_t i = lo; i < hi; i++)
            acc += s->x[i];
        s->partial[k] = acc;
    }
}

static double sum_with(inferd_pool *pool, const double *x)
{
    sum_ctx s;
    memset(&s, 0, sizeof(s));
    s.x = x;
    inferd_pool_run(pool, sum_fn, &s);
    double total = 0.0;
    for (int k = 0; k < SUM_CHUNKS; k++)
        total += s.partial[k];
    return total;
}

static inferd_pool *make_pool(int n)
{
    inferd_pool *pool = NULL;
    inferd_error err;
    inferd_error_clear(&err);
    assert_int_equal(inferd_pool_create(n, &pool, &err), 0);
    assert_non_null(pool);
    assert_int_equal(err.code, 0);
    assert_int_equal(inferd_pool_n_threads(pool), n);
    return pool;
}

/* ---- tests ---- */

static void test_pool_create_range(void **state)
{
    (void)state;
    const int bad[] = {0, -1, 257, 1000, -2147483647 - 1};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* The out-param must stay untouched on failure. */
        static int sentinel_obj;
        inferd_pool *const sentinel = (inferd_pool *)&sentinel_obj;
        inferd_pool *pool = sentinel;
        inferd_error err;
        inferd_error_clear(&err);
        int rc = inferd_pool_create(bad[i], &pool, &err);
        assert_int_equal(rc, INFERD_E_RANGE);
        assert_int_equal(err.code, INFERD_E_RANGE);
        assert_true(strlen(err.msg) > 0);
        assert_non_null(strstr(err.msg, "thread"));
        assert_ptr_equal(pool, sentinel);
        assert_int_equal(inferd_pool_create(bad[i], &pool, NULL), INFERD_E_RANGE);
    }
}

/* Calls per index for the largest pool. */
typedef struct {
    atomic_int calls[256];
    atomic_int bad;
} wide_ctx;

static void wide_fn(void *arg, int ith, int nth)
{
    wide_ctx *w = arg;
    if (nth != 256 || ith < 0 || ith >= 256) {
        atomic_fetch_add_explicit(&w->bad, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&w->calls[ith], 1, memory_order_relaxed);
}

static void test_pool_create_bounds_ok(void **state)
{
    (void)state;
    inferd_pool *pool = make_pool(1);
    count_ctx c;
    count_reset(&c, 1);
    inferd_pool_run(pool, count_fn, &c);
    assert_int_equal(atomic_load(&c.calls[0]), 1);
    assert_int_equal(atomic_load(&c.bad_nth), 0);
    inferd_pool_destroy(pool);

    /* The largest pool is allowed and runs every index once. */
    pool = make_pool(256);
    static wide_ctx w;
    for (int run = 1; run <= 3; run++) {
        inferd_pool_run(pool, wide_fn, &w);
        for (int i = 0; i < 256; i++)
            assert_int_equal(atomic_load(&w.calls[i]), run);
    }
    assert_int_equal(atomic_load(&w.bad), 0);
    inferd_pool_destroy(pool);
}

static void test_pool_each_index_once(void **state)
{
    (void)state;
    for (int n = 1; n <= MAX_THREADS; n++) {
        inferd_pool *pool = make_pool(n);
        count_ctx c;
        for (int run = 0; run < 50; run++) {
            count_reset(&c, n);
            inferd_pool_run(pool, count_fn, &c);
            assert_int_equal(atomic_load(&c.bad_nth), 0);
            assert_int_equal(atomic_load(&c.total), n);
            for (int i = 0; i < MAX_THREADS; i++)
                assert_int_equal(atomic_load(&c.calls[i]), i < n ? 1 : 0);
        }
        inferd_pool_destroy(pool);
    }
}

static void test_pool_many_runs(void **state)
{
    (void)state;
    /* With more threads than CPUs every hand-off waits for a time slice, so
     * oversubscribed pools get fewer runs to keep the test fast. */
    const int n_cpu = inferd_cpu_count();
    for (int n = 2; n <= MAX_THREADS; n *= 2) {
        const int n_runs = n <= n_cpu ? 20000 : 300;
        inferd_pool *pool = make_pool(n);
        count_ctx c;
        count_reset(&c, n);
        seq_ctx s;
        memset(&s, 0, sizeof(s));
        for (int run = 1; run <= n_runs; run++) {
            inferd_pool_run(pool, count_fn, &c);
            s.run = run;
            inferd_pool_run(pool, seq_fn, &s);
        }
        assert_int_equal(atomic_load(&c.bad_nth), 0);
        assert_int_equal(atomic_load(&c.total), (long)n_runs * n);
        for (int i = 0; i < n; i++) {
            assert_int_equal(atomic_load(&c.calls[i]), n_runs);
            assert_int_equal(s.slot[i], n_runs);
        }
        assert_int_equal(atomic_load(&s.stale), 0);
        inferd_pool_destroy(pool);
    }
}

static void test_pool_runs_after_sleeps(void **state)
{
    (void)state;
    /* Pauses longer than the workers' spin window make them go to sleep on
     * the condition variable; every run must still wake all of them. */
    for (int n = 2; n <= MAX_THREADS; n += 3) {
        inferd_pool *pool = make_pool(n);
        count_ctx c;
        seq_ctx s;
        memset(&s, 0, sizeof(s));
        count_reset(&c, n);
        for (int run = 1; run <= 8; run++) {
            usleep(run % 2 ? 5000 : 20000);
            inferd_pool_run(pool, count_fn, &c);
            s.run = run;
            inferd_pool_run(pool, seq_fn, &s);
        }
        assert_int_equal(atomic_load(&c.bad_nth), 0);
        for (int i = 0; i < n; i++)
            assert_int_equal(atomic_load(&c.calls[i]), 8);
        assert_int_equal(atomic_load(&s.stale), 0);
        /* A burst after a sleep, then sleep again before destroying: the
         * destroy must wake sleeping workers. */
        for (int run = 0; run < 100; run++)
            inferd_pool_run(pool, count_fn, &c);
        assert_int_equal(atomic_load(&c.total), (long)108 * n);
        usleep(10000);
        inferd_pool_destroy(pool);
    }
}

/* A task slow enough that the owner, done with its own share early, waits
 * past its spin window for the workers. */
static void slow_worker_fn(void *arg, int ith, int nth)
{
    count_ctx *c = arg;
    if (ith != 0)
        usleep(3000);
    count_fn(c, ith, nth);
}

static void test_pool_owner_waits_for_slow_workers(void **state)
{
    (void)state;
    inferd_pool *pool = make_pool(4);
    count_ctx c;
    count_reset(&c, 4);
    for (int run = 0; run < 10; run++) {
        inferd_pool_run(pool, slow_worker_fn, &c);
        /* Every worker has finished by the time run returns. */
        assert_int_equal(atomic_load(&c.total), (long)(run + 1) * 4);
    }
    assert_int_equal(atomic_load(&c.bad_nth), 0);
    inferd_pool_destroy(pool);
}

static void test_pool_sum_independent_of_threads(void **state)
{
    (void)state;
    static double x[SUM_N];
    /* Values of mixed magnitude and sign, so that a different order of
     * additions would change the rounded result. */
    uint64_t r = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < SUM_N; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        double v = (double)(r >> 11) * (1.0 / 9007199254740992.0);
        x[i] = (i % 3 == 0 ? -v : v) * (i % 7 == 0 ? 1e8 : 1e-3);
    }
    const double ref = sum_with(NULL, x);
    for (int n = 1; n <= MAX_THREADS; n++) {
        inferd_pool *pool = make_pool(n);
        for (int rep = 0; rep < 3; rep++) {
            double got = sum_with(pool, x);
            assert_memory_equal(&got, &ref, sizeof(double));
        }
        inferd_pool_destroy(pool);
    }
}

static void test_pool_null_runs_inline(void **state)
{
    (void)state;
    count_ctx c;
    count_reset(&c, 1);
    inferd_pool_run(NULL, count_fn, &c);
    assert_int_equal(atomic_load(&c.calls[0]), 1);
    assert_int_equal(atomic_load(&c.total), 1);
    assert_int_equal(atomic_load(&c.bad_nth), 0);
    assert_int_equal(inferd_pool_n_threads(NULL), 1);
    inferd_pool_destroy(NULL);
}

static void test_pool_create_destroy_loop(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++) {
        int n = 1 + i % MAX_THREADS;
        inferd_pool *pool = make_pool(n);
        if (i % 2) {
            count_ctx c;
            count_reset(&c, n);
            inferd_pool_run(pool, count_fn, &c);
            assert_int_equal(atomic_load(&c.total), n);
        }
        inferd_pool_destroy(pool);
    }
}

static void test_pool_fault_injection(void **state)
{
    (void)state;
    const int sizes[] = {1, 2, 5};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int n = sizes[s];
        long nth;
        /* Fail each allocation of create in turn until create succeeds;
         * LeakSanitizer checks that the failed attempts freed everything. */
        for (nth = 1; nth < 100; nth++) {
            inferd_pool *pool = NULL;
            inferd_error err;
            inferd_error_clear(&err);
            inferd_alloc_fail_after(nth);
            int rc = inferd_pool_create(n, &pool, &err);
            inferd_alloc_fail_after(0);
            if (rc == 0) {
                assert_non_null(pool);
                count_ctx c;
                count_reset(&c, n);
                inferd_pool_run(pool, count_fn, &c);
                assert_int_equal(atomic_load(&c.total), n);
                inferd_pool_destroy(pool);
                break;
            }
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(err.code, INFERD_E_NOMEM);
            assert_true(strlen(err.msg) > 0);
            assert_null(pool);
        }
        assert_true(nth > 1);   /* create allocates at least once */
        assert_true(nth < 100); /* and finally succeeds */
    }
}

static void test_pool_cpu_count(void **state)
{
    (void)state;
    int n = inferd_cpu_count();
    assert_true(n >= 1);
    assert_int_equal(inferd_cpu_count(), n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_create_range),
        cmocka_unit_test(test_pool_create_bounds_ok),
        cmocka_unit_test(test_pool_each_index_once),
        cmocka_unit_test(test_pool_many_runs),
        cmocka_unit_test(test_pool_runs_after_sleeps),
        cmocka_unit_test(test_pool_owner_waits_for_slow_workers),
        cmocka_unit_test(test_pool_sum_independent_of_threads),
        cmocka_unit_test(test_pool_null_runs_inline),
        cmocka_unit_test(test_pool_create_destroy_loop),
        cmocka_unit_test(test_pool_fault_injection),
        cmocka_unit_test(test_pool_cpu_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
