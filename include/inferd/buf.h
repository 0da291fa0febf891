/* One bounded growable byte buffer: every buffer that grows with input has
 * a limit, and allocates through inferd_malloc (so fault injection reaches
 * it). Appending past the limit or out of memory fails once and sticks: the
 * contents stay as they were before the failing append, and err says why.
 *
 *   inferd_buf b = INFERD_BUF_INIT(1 << 20);
 *   inferd_buf_add(&b, data, n);
 *   inferd_buf_addf(&b, "%d", x);
 *   if (b.err) ...;
 *   inferd_buf_free(&b);
 *
 * Thread: a buffer belongs to one thread at a time. */
#ifndef INFERD_BUF_H
#define INFERD_BUF_H

#include <stddef.h>

typedef struct inferd_buf {
    char *p; /* contents, NUL-terminated after any add; NULL before */
    size_t len, cap;
    size_t limit; /* most bytes it may hold (excluding the NUL); 0 holds nothing */
    int err;      /* 0, or the first failure (sticky): INFERD_E_NOMEM,
                     * INFERD_E_RANGE (the limit) */
} inferd_buf;

#define INFERD_BUF_INIT(lim) ((inferd_buf){.limit = (lim)})

/** Append @p n bytes. @return 0, or b->err (nothing added). */
int inferd_buf_add(inferd_buf *b, const void *data, size_t n);
/** Append formatted text. @return 0, or b->err (nothing added). */
int inferd_buf_addf(inferd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append one byte. */
int inferd_buf_addc(inferd_buf *b, char c);
/** Empty it (len 0, err 0), keeping its memory and limit. */
void inferd_buf_reset(inferd_buf *b);
/** Hand over the contents (free with inferd_free; "" when empty) and their
 * length; @p b is left empty with its limit. NULL when b->err is set (the
 * buffer is then freed) or no memory. */
char *inferd_buf_take(inferd_buf *b, size_t *len);
/** Free the memory; keeps the limit. */
void inferd_buf_free(inferd_buf *b);

#endif
