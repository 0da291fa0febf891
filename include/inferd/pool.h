/* Fixed-size compute thread pool for data-parallel work: the caller runs a
 * task on all n threads at once (itself included) and waits for all of them.
 * Workers spin briefly between tasks, then sleep on a condition variable, so
 * the many small parallel sections of a forward pass stay cheap. */
#ifndef INFERD_POOL_H
#define INFERD_POOL_H

#include "inferd/error.h"

typedef struct inferd_pool inferd_pool;

/** Work function: called once on each of @p nth threads with ith in [0,nth).
 * Must split work by index only, so results never depend on nth. */
typedef void (*inferd_pool_fn)(void *ctx, int ith, int nth);

/**
 * Create a pool of @p n_threads (1..256) compute threads: the caller of
 * inferd_pool_run counts as thread 0, so n_threads-1 workers are started.
 * @return 0; INFERD_E_RANGE, INFERD_E_NOMEM, INFERD_E_INTERNAL (thread
 * creation failed).  Thread: any.
 */
int inferd_pool_create(int n_threads, inferd_pool **out_pool, inferd_error *err);
/** Stop and join the workers. Accepts NULL. Thread: the owner. */
void inferd_pool_destroy(inferd_pool *pool);
int inferd_pool_n_threads(const inferd_pool *pool);

/**
 * Run @p fn(ctx, ith, nth) on every pool thread and return when all are done.
 * A NULL pool runs fn(ctx, 0, 1) inline.
 * Thread: one caller at a time (the pool's owner).
 */
void inferd_pool_run(inferd_pool *pool, inferd_pool_fn fn, void *ctx);

/** Number of online CPUs (>= 1). Thread: any. */
int inferd_cpu_count(void);

#endif
