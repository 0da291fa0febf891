/* One bounded growable byte buffer: every buffer that grows with input has
 * a limit, and allocates through inferd_malloc (so fault injection reaches
 * it). Appending past the limit or out of memory fails once and sticks: the
 * contents stay as they were before the failing append, and err says why,
 * so a run of appends can be checked once at the end.
 *
 *   inferd_buf b = INFERD_BUF_INIT(1 << 20);
 *   inferd_buf_add(&b, data, n);
 *   inferd_buf_addf(&b, "%d", x);
 *   if (b.err) ...;
 *   inferd_buf_free(&b);
 *
 * The struct is the caller's storage; p is owned by the buffer until
 * inferd_buf_take hands it over. Thread: a buffer belongs to one thread at
 * a time. */
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

/* An empty buffer holding at most @p lim bytes; nothing allocated yet. */
#define INFERD_BUF_INIT(lim) ((inferd_buf){.limit = (lim)})

/** Append @p n bytes of @p data (borrowed; must not point into @p b, whose
 * memory may move). Growth doubles from 256 bytes, never past limit + 1.
 * @return 0; or b->err, and nothing is added: INFERD_E_RANGE (len + n would
 * pass the limit), INFERD_E_NOMEM, or an earlier failure. */
int inferd_buf_add(inferd_buf *b, const void *data, size_t n);
/** Append printf-formatted text (arguments must not point into @p b).
 * @return as inferd_buf_add; INFERD_E_INVALID if vsnprintf fails. */
int inferd_buf_addf(inferd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Append one byte. @return as inferd_buf_add. */
int inferd_buf_addc(inferd_buf *b, char c);
/** Empty it (len 0, err 0), keeping its memory and limit. */
void inferd_buf_reset(inferd_buf *b);
/** Hand over the contents, NUL-terminated ("" when empty; free with
 * inferd_free), and their length in @p len (may be NULL; 0 on failure);
 * @p b is left empty (err 0, nothing allocated) with its limit. NULL when
 * b->err was set (the contents are then freed) or no memory. */
char *inferd_buf_take(inferd_buf *b, size_t *len);
/** Free the memory and clear err; keeps the limit, so @p b can be reused. */
void inferd_buf_free(inferd_buf *b);

#endif
