/* Matrix products on the compute pool: one parallel section converts the
 * activation rows to each vec_dot_type (split by tokens), a second computes
 * the outputs (split by contiguous runs of output rows, every output one
 * whole dot product by one thread). Bit-identical results for any thread
 * count or batch size follow from the kernels' mdot contract (quant.h).
 * Nothing here allocates. Thread: the pool's owner. */
#include "inferd/matmul.h"
#include "inferd/quant.h"

#include <assert.h>

#define MAX_OPS 8
/* Threads get output rows in multiples of this, so tiles stay whole. */
#define ROW_UNIT 8
/* Tokens per pass over a thread's rows: a multiple of every token tile, and
 * small enough that the converted activations of a pass stay in L2. */
#define TOK_UNIT 60
#define L2_BUDGET_BYTES (512u * 1024u)

static size_t align64(size_t v)
{
    return (v + (INFERD_MATMUL_WORK_ALIGN - 1)) & ~(size_t)(INFERD_MATMUL_WORK_ALIGN - 1);
}

/* Bytes of one converted activation row, 0 for F32 (x is used in place). */
static size_t act_row_bytes(const inferd_kernels *k, int64_t n_cols)
{
    if (k->vec_dot_type == INFERD_DTYPE_F32)
        return 0;
    return align64(inferd_quant_row_size(k->vec_dot_type, n_cols));
}

size_t inferd_matmul_work_size(uint32_t w_type, int64_t n_cols, int64_t n_tokens)
{
    inferd_matmul_op op = {.w_type = w_type};
    return inferd_matmul_multi_work_size(&op, 1, n_cols, n_tokens);
}

/* One activation buffer per distinct vec_dot_type among the ops. */
typedef struct act_buf {
    uint32_t type;             /* the vec_dot_type */
    inferd_from_float_fn from_float;   /* that type's conversion, NULL: F32 */
    const char *data;          /* converted rows (or x itself for F32) */
    size_t stride;             /* bytes between rows */
} act_buf;

typedef struct mm_plan {
    int n_ops;
    int n_bufs;
    int64_t n_cols;
    int64_t n_tokens;
    int64_t total_rows;        /* sum of the ops' n_rows */
    const float *x;
    int64_t x_stride;
    const inferd_matmul_op *ops;
    const inferd_kernels *k[MAX_OPS];
    int buf_of[MAX_OPS];       /* index into bufs */
    size_t w_row_bytes[MAX_OPS];
    act_buf bufs[MAX_OPS];
} mm_plan;

size_t inferd_matmul_multi_work_size(const inferd_matmul_op *ops, int n_ops,
                                     int64_t n_cols, int64_t n_tokens)
{
    uint32_t seen[MAX_OPS];
    int n_seen = 0;
    size_t total = 0;

    if (n_ops < 1 || n_ops > MAX_OPS || n_cols <= 0 || n_tokens <= 0)
        return 0;
    for (int i = 0; i < n_ops; i++) {
        const inferd_kernels *k = inferd_kernels_get(ops[i].w_type);
        if (!k || !k->vec_dot || inferd_quant_row_size(ops[i].w_type, n_cols) == 0)
            return 0;
        int dup = 0;
        for (int j = 0; j < n_seen; j++)
            dup |= seen[j] == k->vec_dot_type;
        if (dup)
            continue;
        seen[n_seen++] = k->vec_dot_type;
        total += act_row_bytes(k, n_cols) * (size_t)n_tokens;
    }
    return total;
}

static void convert_task(void *ctx, int ith, int nth)
{
    const mm_plan *p = ctx;
    const int64_t per = (p->n_tokens + nth - 1) / nth;
    const int64_t t0 = per * ith;
    const int64_t t1 = t0 + per < p->n_tokens ? t0 + per : p->n_tokens;

    for (int b = 0; b < p->n_bufs; b++) {
        const act_buf *ab = &p->bufs[b];
        if (!ab->from_float)
            continue;
        for (int64_t t = t0; t < t1; t++)
            ab->from_float(p->x + t * p->x_stride,
                              (char *)ab->data + (size_t)t * ab->stride, p->n_cols);
    }
}

static void compute_task(void *ctx, int ith, int nth)
{
    const mm_plan *p = ctx;
    const int64_t n_units = (p->total_rows + ROW_UNIT - 1) / ROW_UNIT;
    /* Contiguous, balanced runs of units; the last thread may get fewer. */
    const int64_t u0 = n_units * ith / nth, u1 = n_units * (ith + 1) / nth;
    const int64_t g0 = u0 * ROW_UNIT;
    const int64_t g1 = u1 * ROW_UNIT < p->total_rows ? u1 * ROW_UNIT : p->total_rows;
    int64_t base = 0;

    if (g0 >= g1)
        return;
    for (int i = 0; i < p->n_ops; i++) {
        const inferd_matmul_op *op = &p->ops[i];
        const int64_t lo = g0 > base ? g0 - base : 0;
        const int64_t hi = g1 - base < op->n_rows ? g1 - base : op->n_rows;
        base += op->n_rows;
        if (lo >= hi)
            continue;
        const act_buf *ab = &p->bufs[p->buf_of[i]];
        const char *w = (const char *)op->w + (size_t)lo * p->w_row_bytes[i];
        int64_t chunk = (int64_t)(L2_BUDGET_BYTES / (ab->stride ? ab->stride : 1));
        chunk = chunk < TOK_UNIT ? TOK_UNIT : chunk / TOK_UNIT * TOK_UNIT;
        for (int64_t t0 = 0; t0 < p->n_tokens; t0 += chunk) {
            const int64_t nt = p->n_tokens - t0 < chunk ? p->n_tokens - t0 : chunk;
            p->k[i]->mdot(p->n_cols, w, p->w_row_bytes[i], hi - lo,
                          ab->data + (size_t)t0 * ab->stride, ab->stride, nt,
                          op->y + t0 * op->y_stride + lo, (size_t)op->y_stride);
        }
    }
}

void inferd_matmul_multi(inferd_pool *pool, const inferd_matmul_op *ops, int n_ops,
                         int64_t n_cols, const float *x, int64_t x_stride,
                         int64_t n_tokens, void *work)
{
    mm_plan p = {0};
    char *wp = work;
    int need_convert = 0;

    assert(n_ops >= 1 && n_ops <= MAX_OPS);
    assert(n_cols > 0 && x_stride >= n_cols && n_tokens >= 0);
    assert(((uintptr_t)work & (INFERD_MATMUL_WORK_ALIGN - 1)) == 0);
    if (n_tokens == 0)
        return;
    p.n_ops = n_ops;
    p.n_cols = n_cols;
    p.n_tokens = n_tokens;
    p.x = x;
    p.x_stride = x_stride;
    p.ops = ops;
    for (int i = 0; i < n_ops; i++) {
        const inferd_kernels *k = inferd_kernels_get(ops[i].w_type);
        assert(k && k->vec_dot && k->mdot);
        assert(ops[i].n_rows >= 0 && ops[i].y_stride >= ops[i].n_rows);
        p.k[i] = k;
        p.w_row_bytes[i] = inferd_quant_row_size(ops[i].w_type, n_cols);
        assert(p.w_row_bytes[i] > 0);
        p.total_rows += ops[i].n_rows;
        int b = 0;
        while (b < p.n_bufs && p.bufs[b].type != k->vec_dot_type)
            b++;
        if (b == p.n_bufs) {
            act_buf *ab = &p.bufs[p.n_bufs++];
            ab->type = k->vec_dot_type;
            if (k->vec_dot_type == INFERD_DTYPE_F32) {
                ab->data = (const char *)x;
                ab->stride = (size_t)x_stride * sizeof(float);
            } else {
                ab->from_float = inferd_kernels_get(k->vec_dot_type)->from_float;
                ab->data = wp;
                ab->stride = act_row_bytes(k, n_cols);
                wp += ab->stride * (size_t)n_tokens;
                need_convert = 1;
            }
        }
        p.buf_of[i] = b;
    }
    if (p.total_rows == 0)
        return;
    if (need_convert)
        inferd_pool_run(pool, convert_task, &p);
    inferd_pool_run(pool, compute_task, &p);
}

void inferd_matmul_strided(inferd_pool *pool, uint32_t w_type, const void *w,
                           int64_t n_rows, int64_t n_cols, const float *x,
                           int64_t x_stride, int64_t n_tokens, float *y,
                           int64_t y_stride, void *work)
{
    const inferd_matmul_op op = {.w_type = w_type, .w = w, .n_rows = n_rows,
                                 .y = y, .y_stride = y_stride};
    inferd_matmul_multi(pool, &op, 1, n_cols, x, x_stride, n_tokens, work);
}

void inferd_matmul(inferd_pool *pool, uint32_t w_type, const void *w, int64_t n_rows,
                   int64_t n_cols, const float *x, int64_t n_tokens, float *y,
                   void *work)
{
    inferd_matmul_strided(pool, w_type, w, n_rows, n_cols, x, n_cols, n_tokens, y,
                          n_rows, work);
}
