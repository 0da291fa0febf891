/* Time: the monotonic clock every duration and deadline is measured on, the
 * wall clock for timestamps people read, and timed waits that a step of the
 * wall clock cannot move.
 *
 * A condition variable waited on with a timeout (inferd_cond_wait_until_ns,
 * inferd_cond_wait_ms) MUST have been created by inferd_cond_init_monotonic:
 * the waits give it CLOCK_MONOTONIC deadlines, which a default (CLOCK_REALTIME)
 * condition variable would read as dates in 1970 and time out at once.
 * Nothing here allocates. Thread: any. */
#ifndef INFERD_CLOCK_H
#define INFERD_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/** CLOCK_MONOTONIC in nanoseconds: for durations and deadlines. Never
 * steps; its origin is unspecified (boot), so only differences mean
 * anything. Thread: any. */
uint64_t inferd_now_ns(void);
/** inferd_now_ns in seconds. Thread: any. */
double inferd_now_s(void);

/** The wall clock (CLOCK_REALTIME) in milliseconds since the Unix epoch:
 * only for timestamps shown to people or sent on the wire, never for
 * durations (it steps). Thread: any. */
int64_t inferd_unix_ms(void);
/** The wall clock in seconds since the Unix epoch; same use. Thread: any. */
double inferd_unix_s(void);

/* A point on the monotonic clock by which something must be done; a value
 * type, copied freely. */
typedef struct inferd_deadline {
    uint64_t at_ns; /* inferd_now_ns() time; 0: no deadline */
} inferd_deadline;

/** The deadline @p ms milliseconds from now: 0 is now (already passed), a
 * negative value is no deadline; a sum past the clock's range saturates.
 * Thread: any. */
inferd_deadline inferd_deadline_in_ms(int64_t ms);
/** The deadline at monotonic time @p at_ns (an inferd_now_ns() value; 0: no
 * deadline). Thread: any. */
inferd_deadline inferd_deadline_at_ns(uint64_t at_ns);
/** Has @p d passed? Never for no deadline. Thread: any. */
bool inferd_deadline_passed(inferd_deadline d);
/** Milliseconds left until @p d, rounded up: -1 for no deadline, 0 once
 * passed. Thread: any. */
int64_t inferd_deadline_left_ms(inferd_deadline d);

/** pthread_cond_init of @p cv (the caller's storage; destroy it with
 * pthread_cond_destroy) with CLOCK_MONOTONIC for the timed waits below.
 * @return 0, or the errno value pthread gave. Thread: any. */
int inferd_cond_init_monotonic(pthread_cond_t *cv);
/** Wait on @p cv until signalled or the monotonic time @p at_ns has come
 * (0: no limit). @p cv must come from inferd_cond_init_monotonic; the
 * caller holds @p mu, as for pthread_cond_wait. Wake-ups may be spurious:
 * wait in a loop on the condition. @return 0 (woken), or ETIMEDOUT.
 * Thread: any holding @p mu. */
int inferd_cond_wait_until_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t at_ns);
/** The same with a limit of @p ms from now (< 0: no limit; 0: ETIMEDOUT at
 * once). For a loop on a condition, compute one deadline before the loop
 * and use inferd_cond_wait_until_ns, so spurious wake-ups do not extend the
 * wait. Thread: any holding @p mu. */
int inferd_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);

/** Sleep @p ms milliseconds on the monotonic clock (<= 0: return at once);
 * a signal does not cut it short. Thread: any. */
void inferd_sleep_ms(int64_t ms);

#endif
