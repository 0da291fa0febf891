/* The bounded growable buffer (include/inferd/buf.h). Invariants: len <=
 * limit; once p is allocated, len < cap <= limit + 1 and p[len] == '\0'; a
 * failed append changes nothing but err. Not thread-safe. */
#include "inferd/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/error.h"

/* Room for @p n more bytes and the NUL, or the (sticky) reason why not. */
static int reserve(inferd_buf *b, size_t n)
{
    if (b->err)
        return b->err;
    if (n > b->limit || b->len > b->limit - n)
        return b->err = INFERD_E_RANGE;
    /* len + n <= limit; the NUL needs one more, which a limit of SIZE_MAX
     * cannot give. */
    if (b->len + n == SIZE_MAX)
        return b->err = INFERD_E_RANGE;
    const size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    const size_t cap_max = b->limit < SIZE_MAX ? b->limit + 1 : SIZE_MAX;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
    if (cap > cap_max)
        cap = cap_max;
    char *p = inferd_realloc(b->p, cap);
    if (!p)
        return b->err = INFERD_E_NOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int inferd_buf_add(inferd_buf *b, const void *data, size_t n)
{
    int rc = reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int inferd_buf_addc(inferd_buf *b, char c) { return inferd_buf_add(b, &c, 1); }

int inferd_buf_addf(inferd_buf *b, const char *fmt, ...)
{
    if (b->err)
        return b->err;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return b->err = INFERD_E_INVALID;
    int rc = reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void inferd_buf_reset(inferd_buf *b)
{
    b->len = 0;
    b->err = 0;
    if (b->p)
        b->p[0] = '\0';
}

char *inferd_buf_take(inferd_buf *b, size_t *len)
{
    if (!b->err && !b->p && reserve(b, 0) == 0)
        b->p[0] = '\0';
    char *p = b->err ? NULL : b->p;
    if (len)
        *len = p ? b->len : 0;
    if (!p)
        inferd_free(b->p);
    size_t limit = b->limit;
    *b = INFERD_BUF_INIT(limit);
    return p;
}

void inferd_buf_free(inferd_buf *b)
{
    inferd_free(b->p);
    size_t limit = b->limit;
    *b = INFERD_BUF_INIT(limit);
}
