/* Compute thread pool. The owner publishes a task by bumping `gen`
 * (release); workers spin on it (acquire) for a short while, then sleep on
 * `cv`. Completion is counted in `n_done`; the owner spins, then sleeps.
 * Lock: mu guards the sleeping paths only (cv waits and stop). */
#include "inferd/pool.h"
#include "inferd/alloc.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define SPIN_ITERS 20000

struct inferd_pool {
    int n_threads;
    pthread_t *threads; /* (n_threads - 1) workers */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* workers wait for a new generation */
    pthread_cond_t cv_done; /* owner waits for completion */
    atomic_uint gen;        /* task generation; workers run on change */
    atomic_int n_done;      /* workers finished with the current task */
    atomic_int stop;
    inferd_pool_fn fn; /* written by the owner before gen++ */
    void *ctx;
};

typedef struct {
    inferd_pool *pool;
    int ith;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    inferd_pool *p = wa->pool;
    int ith = wa->ith;
    unsigned seen = 0;

    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (atomic_load_explicit(&p->stop, memory_order_acquire))
                return NULL;
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
                   !atomic_load_explicit(&p->stop, memory_order_acquire))
                pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        seen = g;
        p->fn(p->ctx, ith, p->n_threads);
        if (atomic_fetch_add_explicit(&p->n_done, 1, memory_order_acq_rel) + 1 ==
            p->n_threads - 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int inferd_pool_create(int n_threads, inferd_pool **out_pool, inferd_error *err)
{
    inferd_pool *p;
    int i, rc;

    if (n_threads < 1 || n_threads > 256)
        return inferd_fail(err, INFERD_E_RANGE, "thread count %d out of range 1..256", n_threads);
    p = inferd_calloc(1, sizeof(*p) + (size_t)n_threads * sizeof(worker_arg));
    if (!p)
        return inferd_fail(err, INFERD_E_NOMEM, "thread pool: no memory");
    p->n_threads = n_threads;
    p->threads = inferd_calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "thread pool: no memory");
        goto fail_free;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    worker_arg *args = (worker_arg *)(p + 1);
    for (i = 1; i < n_threads; i++) {
        args[i].pool = p;
        args[i].ith = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, &args[i]) != 0) {
            rc = inferd_fail(err, INFERD_E_INTERNAL, "thread pool: cannot start thread %d", i);
            goto fail_join;
        }
    }
    *out_pool = p;
    return 0;

fail_join:
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    while (--i >= 1)
        pthread_join(p->threads[i - 1], NULL);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    inferd_free(p->threads);
fail_free:
    inferd_free(p);
    return rc;
}

void inferd_pool_destroy(inferd_pool *p)
{
    if (!p)
        return;
    atomic_store_explicit(&p->stop, 1, memory_order_release);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->threads[i - 1], NULL);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    inferd_free(p->threads);
    inferd_free(p);
}

int inferd_pool_n_threads(const inferd_pool *p) { return p ? p->n_threads : 1; }

void inferd_pool_run(inferd_pool *p, inferd_pool_fn fn, void *ctx)
{
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    /* Publish the task; the mutex makes a sleeping worker's re-check of gen
     * and its wait atomic with respect to this wakeup. */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n_threads);

    int spins = 0;
    while (atomic_load_explicit(&p->n_done, memory_order_acquire) < p->n_threads - 1) {
        if (++spins < SPIN_ITERS) {
            cpu_relax();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->n_done, memory_order_acquire) < p->n_threads - 1)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

int inferd_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
