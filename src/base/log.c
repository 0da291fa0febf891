/* Logger: formats a line into a stack buffer and writes it with one
 * write(2), so concurrent lines never interleave. */
#include "inferd/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "inferd/clock.h"

static atomic_int log_level = -1; /* -1: not yet read from the environment */

int inferd_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (s && strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

inferd_log_level inferd_log_get_level(void)
{
    int l = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (l < 0) {
        l = inferd_log_level_parse(getenv("INFERD_LOG_LEVEL"));
        if (l < 0)
            l = INFERD_LOG_INFO;
        atomic_store_explicit(&log_level, l, memory_order_relaxed);
    }
    return (inferd_log_level)l;
}

void inferd_log_set_level(inferd_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

void inferd_log(inferd_log_level level, const char *comp, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024], line[2300];
    struct tm tm;
    va_list ap;
    size_t n;

    if (level < inferd_log_get_level() || level >= INFERD_LOG_OFF)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    /* The wall clock: a timestamp people read, not a duration. */
    const int64_t unix_ms = inferd_unix_ms();
    const time_t unix_s = (time_t)(unix_ms / 1000);
    gmtime_r(&unix_s, &tm);
    n = (size_t)snprintf(line, sizeof(line),
                         "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s msg=\"",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, (long)(unix_ms % 1000), names[level], comp ? comp : "-");
    /* snprintf returns the untruncated length: a component name too long
     * for the line must not push n past the buffer. */
    if (n > sizeof(line) - 3)
        n = sizeof(line) - 3;
    /* Escape the message; leave room for the closing quote and newline. */
    for (const char *p = msg; *p && n + 6 < sizeof(line); p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            line[n++] = '\\';
            line[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(line + n, sizeof(line) - n, "\\x%02x", c);
        } else {
            line[n++] = (char)c;
        }
    }
    line[n++] = '"';
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

int inferd_log_allow(inferd_log_limit *lim, unsigned long long *out_suppressed)
{
    const unsigned long long now = inferd_now_ns() / 1000000u + 1; /* never 0 */
    unsigned long long last = atomic_load(&lim->last_ms);
    if ((last == 0 || now - last >= 1000) &&
        atomic_compare_exchange_strong(&lim->last_ms, &last, now)) {
        *out_suppressed = atomic_exchange(&lim->suppressed, 0);
        return 1;
    }
    atomic_fetch_add(&lim->suppressed, 1);
    return 0;
}
