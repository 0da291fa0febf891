/* Time: the monotonic clock every duration and deadline is measured on, the
 * wall clock for timestamps people read, and timed waits that a step of the
 * wall clock cannot move.
 *
 * A condition variable waited on with a timeout must be created by
 * inferd_cond_init_monotonic: the waits below give it CLOCK_MONOTONIC
 * deadlines. Thread: any. */
#ifndef INFERD_CLOCK_H
#define INFERD_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/** CLOCK_MONOTONIC in nanoseconds (and seconds): for durations and
 * deadlines. */
uint64_t inferd_now_ns(void);
double inferd_now_s(void);

/** The wall clock (CLOCK_REALTIME), in milliseconds and seconds since the
 * Unix epoch: only for timestamps shown to people or sent on the wire. */
int64_t inferd_unix_ms(void);
double inferd_unix_s(void);

/* A point on the monotonic clock by which something must be done. */
typedef struct inferd_deadline {
    uint64_t at_ns; /* inferd_now_ns() time; 0: none */
} inferd_deadline;

/** The deadline @p ms from now; ms < 0: none. */
inferd_deadline inferd_deadline_in_ms(int64_t ms);
/** Has @p d passed? Never for no deadline. */
bool inferd_deadline_passed(inferd_deadline d);
/** Milliseconds left, rounded up; 0 once passed; -1 for no deadline. */
int64_t inferd_deadline_left_ms(inferd_deadline d);

/** pthread_cond_init with CLOCK_MONOTONIC for timed waits. @return 0 or an
 * errno value. */
int inferd_cond_init_monotonic(pthread_cond_t *cv);
/** Wait on @p cv (made by inferd_cond_init_monotonic; @p mu held) until
 * signalled or the monotonic time @p at_ns (0: no limit). @return 0, or
 * ETIMEDOUT. Spurious wake-ups return 0, as pthread_cond_timedwait. */
int inferd_cond_wait_until_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t at_ns);
/** The same for @p ms from now (< 0: no limit). */
int inferd_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);

/** Sleep @p ms milliseconds on the monotonic clock (signals do not cut it
 * short). */
void inferd_sleep_ms(int64_t ms);

#endif
