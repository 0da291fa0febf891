/* Helpers shared by the benchmark programs (each a single C or C++ file):
 * error messages, a monotonic clock, strict number parsing, and
 * nearest-rank percentiles over sorted nanosecond samples. */
#ifndef INFERD_BENCH_UTIL_H
#define INFERD_BENCH_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* "PROG: message" on stderr, then " (see --help)" and exit 2 for a usage
 * error. */
__attribute__((format(printf, 2, 0))) static inline void bench_vmessage(const char *prog,
                                                                        const char *fmt, va_list ap)
{
    fputs(prog, stderr);
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
}

__attribute__((format(printf, 2, 3), noreturn)) static inline void
bench_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bench_vmessage(prog, fmt, ap);
    va_end(ap);
    fputs(" (see --help)\n", stderr);
    exit(2);
}

/* "PROG: message" on stderr; returns @p ret. */
__attribute__((format(printf, 3, 4))) static inline int bench_error(int ret, const char *prog,
                                                                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bench_vmessage(prog, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return ret;
}

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Strict unsigned decimal: digits only, no sign or spaces, within [lo, hi]. */
static inline bool bench_parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out_v)
{
    uint64_t v = 0;

    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v < lo || v > hi)
        return false;
    *out_v = v;
    return true;
}

/* qsort comparator for int64_t. */
static inline int bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Nearest-rank percentile @p p (0..100) of the @p n sorted samples @p v
 * (n > 0). */
static inline int64_t bench_pct(const int64_t *v, size_t n, unsigned p)
{
    size_t rank = (size_t)(((uint64_t)p * n + 99) / 100);

    if (rank == 0)
        rank = 1;
    return v[rank - 1];
}

#endif
