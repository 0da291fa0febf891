/* Allocation wrappers with fault injection: a process-wide countdown, when
 * armed, makes exactly one later allocation fail. */
#include "inferd/alloc.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/clock.h"

static atomic_long fail_countdown; /* 0: disarmed */
static atomic_long n_allocs;

void inferd_alloc_fail_after(long nth)
{
    atomic_store_explicit(&fail_countdown, nth, memory_order_relaxed);
}

long inferd_alloc_count(void) { return atomic_load_explicit(&n_allocs, memory_order_relaxed); }

/* True when this allocation must fail. */
static int injected_failure(void)
{
    atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
    long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    while (c > 0) {
        if (atomic_compare_exchange_weak_explicit(&fail_countdown, &c, c - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return c == 1;
    }
    return 0;
}

void *inferd_malloc(size_t size)
{
    if (injected_failure())
        return NULL;
    return malloc(size ? size : 1);
}

void *inferd_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    if (injected_failure())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *inferd_realloc(void *p, size_t size)
{
    if (injected_failure())
        return NULL;
    return realloc(p, size ? size : 1);
}

void *inferd_aligned_alloc(size_t alignment, size_t size)
{
    void *p = NULL;
    if (injected_failure())
        return NULL;
    if (posix_memalign(&p, alignment, size ? size : 1) != 0)
        return NULL;
    return p;
}

char *inferd_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = inferd_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *inferd_strdup(const char *s) { return inferd_strndup(s, strlen(s)); }

void inferd_free(void *p) { free(p); }

#define TRIM_AFTER_BYTES ((size_t)64 << 10)
#define TRIM_EVERY_NS 1000000000u

static atomic_bool trim_pending;
static _Atomic uint64_t trim_last_ns;

void inferd_alloc_released(size_t bytes)
{
    if (bytes >= TRIM_AFTER_BYTES)
        atomic_store(&trim_pending, true);
    if (!atomic_load(&trim_pending))
        return;
    uint64_t now = inferd_now_ns(), last = atomic_load(&trim_last_ns);
    if (now - last < TRIM_EVERY_NS || !atomic_compare_exchange_strong(&trim_last_ns, &last, now))
        return;
    atomic_store(&trim_pending, false);
    malloc_trim(0);
}
