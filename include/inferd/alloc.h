/* Allocation wrappers. In every build the allocator can be told to fail the
 * Nth allocation from now (fault injection for tests): constructors and
 * parsers must then fail cleanly with no leak. */
#ifndef INFERD_ALLOC_H
#define INFERD_ALLOC_H

#include <stddef.h>

void *inferd_malloc(size_t size);
void *inferd_calloc(size_t n, size_t size); /* checks n*size overflow */
void *inferd_realloc(void *p, size_t size);
/** Aligned allocation (alignment a power of two >= sizeof(void*)); free with
 * inferd_free. */
void *inferd_aligned_alloc(size_t alignment, size_t size);
char *inferd_strdup(const char *s);
char *inferd_strndup(const char *s, size_t n);
void inferd_free(void *p);

/** Fail the @p nth allocation from now (1 = the next one); 0 disables.
 * Counts every inferd_* allocation on every thread. Thread: any (tests). */
void inferd_alloc_fail_after(long nth);
/** Number of allocations made since the process started. Thread: any. */
long inferd_alloc_count(void);

/** A door freed a request of @p bytes (its body and parsed tree). After
 * one of 64 KiB or more, free heap memory is given back to the system
 * (malloc_trim) on the calling thread, at most once a second; a later call
 * (also with 0 bytes, from a periodic thread) gives back what a
 * rate-limited one left. Thread: any. */
void inferd_alloc_released(size_t bytes);

#endif
