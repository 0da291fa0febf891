/* Time (include/inferd/clock.h): CLOCK_MONOTONIC for durations, deadlines
 * and timed waits, CLOCK_REALTIME only for timestamps. Stateless; any
 * thread. */
#include "inferd/clock.h"

#include <errno.h>
#include <time.h>

static uint64_t read_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t inferd_now_ns(void) { return read_ns(CLOCK_MONOTONIC); }

double inferd_now_s(void) { return (double)inferd_now_ns() / 1e9; }

int64_t inferd_unix_ms(void) { return (int64_t)(read_ns(CLOCK_REALTIME) / 1000000u); }

double inferd_unix_s(void) { return (double)read_ns(CLOCK_REALTIME) / 1e9; }

inferd_deadline inferd_deadline_in_ms(int64_t ms)
{
    inferd_deadline d = {0};
    if (ms < 0)
        return d;
    const uint64_t now = inferd_now_ns();
    /* Saturate rather than wrap: a huge timeout is "practically never". */
    if ((uint64_t)ms > (UINT64_MAX - now) / 1000000u)
        d.at_ns = UINT64_MAX;
    else
        d.at_ns = now + (uint64_t)ms * 1000000u;
    /* 0 would read as "no deadline"; the clock is never that young, but
     * make sure. */
    if (d.at_ns == 0)
        d.at_ns = 1;
    return d;
}

inferd_deadline inferd_deadline_at_ns(uint64_t at_ns) { return (inferd_deadline){.at_ns = at_ns}; }

bool inferd_deadline_passed(inferd_deadline d)
{
    return d.at_ns != 0 && inferd_now_ns() >= d.at_ns;
}

int64_t inferd_deadline_left_ms(inferd_deadline d)
{
    if (d.at_ns == 0)
        return -1;
    uint64_t now = inferd_now_ns();
    if (now >= d.at_ns)
        return 0;
    /* Rounded up without adding first, so a saturated deadline cannot
     * wrap. */
    const uint64_t left_ns = d.at_ns - now;
    return (int64_t)(left_ns / 1000000u + (left_ns % 1000000u != 0));
}

int inferd_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc != 0)
        return rc;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

int inferd_cond_wait_until_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t at_ns)
{
    if (at_ns == 0)
        return pthread_cond_wait(cv, mu);
    struct timespec ts = {.tv_sec = (time_t)(at_ns / 1000000000u),
                          .tv_nsec = (long)(at_ns % 1000000000u)};
    return pthread_cond_timedwait(cv, mu, &ts);
}

int inferd_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    return inferd_cond_wait_until_ns(cv, mu, inferd_deadline_in_ms(ms).at_ns);
}

void inferd_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
    }
}
