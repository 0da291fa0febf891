/* Matrix products on the compute pool: one parallel section converts the
 * activation rows to each vec_dot_type (split by tokens, or by panels of
 * tokens for the prompt kernels), a second computes the outputs (split by
 * contiguous runs of output rows, every output one whole dot product by one
 * thread). Bit-identical results for any thread count, batch size or kernel
 * choice follow from the kernels' contract (quant.h, quant_impl.h).
 * Nothing here allocates. Thread: the pool's owner. */
#include "inferd/matmul.h"
#include "inferd/quant.h"

#include "quant_impl.h"

#include <assert.h>
#include <stdint.h>

#define MAX_OPS 8
/* Threads get output rows in multiples of this, so kernel tiles stay whole
 * (16 rows per generation tile, 8 or 6 per panel tile, 4 or 8 per float
 * tile all divide or nearly divide it). */
#define ROW_UNIT 48
/* Activation bytes one pass over a thread's rows may use, so that they stay
 * in L2 while the rows' weights are reused from L1. */
#define L2_BUDGET_BYTES (512u * 1024u)
/* Row-layout passes take tokens in multiples of this (every token tile of
 * the row kernels divides it). */
#define TOK_UNIT 12

static size_t align64(size_t v)
{
    return (v + (INFERD_MATMUL_WORK_ALIGN - 1)) & ~(size_t)(INFERD_MATMUL_WORK_ALIGN - 1);
}

/* One converted copy of x per distinct vec_dot_type among the ops. */
typedef struct act_buf {
    uint32_t vdt;                       /* the vec_dot_type */
    const inferd__panel_kernels *panel; /* set: panel layout, else rows */
    inferd_from_float_fn from_float;    /* row layout; NULL for F32 (x used) */
    const char *data;
    size_t stride;  /* rows: bytes between token rows; panels: per panel */
    size_t n_items; /* rows: tokens; panels: panels */
} act_buf;

typedef struct mm_plan {
    int n_ops;
    int n_bufs;
    int64_t n_cols;
    int64_t n_tokens;
    int64_t total_rows; /* sum of the ops' n_rows */
    const float *x;
    int64_t x_stride;
    const inferd_matmul_op *ops;
    const inferd_kernels *k[MAX_OPS];
    const inferd__panel_kernels *pk[MAX_OPS]; /* per op when its buf is panels */
    inferd_vec_dot_fn gemv[MAX_OPS];          /* set: op runs element by element in the
                                       * GEMV order (F32/F16 rows, see
                                       * inferd_kernels_dot) */
    inferd_mdot_fn mdot[MAX_OPS];             /* the op's mdot (inferd_kernels_matrix_mdot) */
    int buf_of[MAX_OPS];                      /* index into bufs */
    size_t w_row_bytes[MAX_OPS];
    act_buf bufs[MAX_OPS];
} mm_plan;

/*
 * Decide the kernels and activation layouts of ops and lay the buffers out
 * from @p work (NULL only to measure). Returns the work bytes needed, or
 * SIZE_MAX when an op's type has no kernels or n_cols does not fit it.
 */
static size_t plan_ops(mm_plan *p, const inferd_matmul_op *ops, int n_ops, int64_t n_cols,
                       int64_t n_tokens, inferd_order order, char *work)
{
    size_t total = 0;

    p->n_ops = n_ops;
    p->n_bufs = 0;
    p->n_cols = n_cols;
    p->n_tokens = n_tokens;
    p->ops = ops;
    p->total_rows = 0;
    for (int i = 0; i < n_ops; i++) {
        const inferd_kernels *k = inferd_kernels_get(ops[i].w_type);
        if (!k || !k->vec_dot || !k->mdot)
            return SIZE_MAX;
        p->k[i] = k;
        p->w_row_bytes[i] = inferd_quant_row_size(ops[i].w_type, n_cols);
        if (p->w_row_bytes[i] == 0)
            return SIZE_MAX;
        p->total_rows += ops[i].n_rows;
        const inferd_vec_dot_fn dot = inferd_kernels_matrix_dot(k, n_cols, ops[i].n_rows, order);
        p->gemv[i] = dot == k->vec_dot || dot == k->vec_dot_rows8 ? NULL : dot;
        p->mdot[i] = inferd_kernels_matrix_mdot(k, ops[i].n_rows);
        /* No panels for the K-quants (NULL): their Q8_K rows (292-byte
         * blocks of 256, padded to 64 bytes per row) go to mdot. */
        /* Panels follow vec_dot's order: not for ops in another one
         * (gemv, or Q4_0's mdot_rows8, whose tiles are as fast at any
         * token count). */
        const inferd__panel_kernels *pk = inferd__panel_get(ops[i].w_type);
        if (pk && (n_tokens < pk->min_tokens || p->gemv[i] || p->mdot[i] != k->mdot))
            pk = NULL;
        int b = 0;
        while (b < p->n_bufs && p->bufs[b].vdt != k->vec_dot_type)
            b++;
        if (b == p->n_bufs) {
            act_buf *ab = &p->bufs[p->n_bufs++];
            *ab = (act_buf){.vdt = k->vec_dot_type, .panel = pk};
        } else if (p->bufs[b].panel && (!pk || pk->pack != p->bufs[b].panel->pack ||
                                        pk->lanes != p->bufs[b].panel->lanes)) {
            p->bufs[b].panel = NULL; /* not every op can read these panels */
        }
        p->buf_of[i] = b;
    }
    for (int b = 0; b < p->n_bufs; b++) {
        act_buf *ab = &p->bufs[b];
        if (ab->panel) {
            ab->stride = align64(inferd__panel_bytes(ab->panel->lanes, n_cols));
            ab->n_items = (size_t)((n_tokens + ab->panel->lanes - 1) / ab->panel->lanes);
        } else if (ab->vdt == INFERD_DTYPE_F32) {
            ab->data = (const char *)p->x;
            ab->stride = (size_t)p->x_stride * sizeof(float);
            ab->n_items = 0; /* nothing to convert, nothing in work */
            continue;
        } else {
            ab->from_float = inferd_kernels_get(ab->vdt)->from_float;
            ab->stride = align64(inferd_quant_row_size(ab->vdt, n_cols));
            ab->n_items = (size_t)n_tokens;
        }
        ab->data = work ? work + total : NULL;
        total += ab->stride * ab->n_items;
    }
    for (int i = 0; i < n_ops; i++)
        p->pk[i] = p->bufs[p->buf_of[i]].panel ? inferd__panel_get(ops[i].w_type) : NULL;
    return total;
}

size_t inferd_matmul_multi_work_size(const inferd_matmul_op *ops, int n_ops, int64_t n_cols,
                                     int64_t n_tokens)
{
    mm_plan p = {0};
    if (n_ops < 1 || n_ops > MAX_OPS || n_cols <= 0 || n_tokens <= 0)
        return 0;
    p.x_stride = n_cols;
    /* The layouts differ by order (panels for prompts) and by row count
     * (none for Q4_0's 8-row matrices), which callers may leave out: room
     * for any. */
    inferd_matmul_op tmp[MAX_OPS];
    size_t most = 0;
    for (int rows = 1; rows <= 8; rows += 7) {
        for (int i = 0; i < n_ops; i++) {
            tmp[i] = ops[i];
            tmp[i].n_rows = rows;
        }
        for (int o = 0; o < 2; o++) {
            const size_t need = plan_ops(&p, tmp, n_ops, n_cols, n_tokens,
                                         o ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE, NULL);
            if (need == SIZE_MAX)
                return 0;
            most = need > most ? need : most;
        }
    }
    return most;
}

size_t inferd_matmul_work_size(uint32_t w_type, int64_t n_cols, int64_t n_tokens)
{
    const inferd_matmul_op op = {.w_type = w_type};
    return inferd_matmul_multi_work_size(&op, 1, n_cols, n_tokens);
}

/* Contiguous share [*lo, *hi) of n items for thread ith of nth. */
static void share(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

static void convert_task(void *ctx, int ith, int nth)
{
    const mm_plan *p = ctx;

    for (int b = 0; b < p->n_bufs; b++) {
        const act_buf *ab = &p->bufs[b];
        int64_t i0, i1;
        share((int64_t)ab->n_items, ith, nth, &i0, &i1);
        for (int64_t i = i0; i < i1; i++) {
            char *dst = (char *)ab->data + (size_t)i * ab->stride;
            if (ab->panel) {
                const int lanes = ab->panel->lanes;
                const int64_t t0 = i * lanes;
                const int nt = p->n_tokens - t0 < lanes ? (int)(p->n_tokens - t0) : lanes;
                ab->panel->pack(p->n_cols, p->x + t0 * p->x_stride, p->x_stride, nt, dst);
            } else {
                ab->from_float(p->x + i * p->x_stride, dst, p->n_cols);
            }
        }
    }
}

/* Rows [lo, hi) of op i, all tokens, in passes whose activations fit L2. */
static void compute_op(const mm_plan *p, int i, int64_t lo, int64_t hi)
{
    const inferd_matmul_op *op = &p->ops[i];
    const act_buf *ab = &p->bufs[p->buf_of[i]];
    const char *w = (const char *)op->w + (size_t)lo * p->w_row_bytes[i];
    const int64_t n_rows = hi - lo;

    if (p->gemv[i]) {
        for (int64_t t = 0; t < p->n_tokens; t++) {
            const char *a = ab->data + (size_t)t * ab->stride;
            float *y = op->y + t * op->y_stride + lo;
            for (int64_t r = 0; r < n_rows; r++)
                y[r] = p->gemv[i](p->n_cols, w + (size_t)r * p->w_row_bytes[i], a);
        }
        return;
    }
    if (p->pk[i]) {
        const int lanes = p->pk[i]->lanes;
        int64_t per = (int64_t)(L2_BUDGET_BYTES / ab->stride);
        per = per < 1 ? lanes : per * lanes;
        for (int64_t t0 = 0; t0 < p->n_tokens; t0 += per) {
            const int64_t nt = p->n_tokens - t0 < per ? p->n_tokens - t0 : per;
            p->pk[i]->gemm(p->n_cols, w, p->w_row_bytes[i], n_rows,
                           ab->data + (size_t)(t0 / lanes) * ab->stride, (int)nt,
                           op->y + t0 * op->y_stride + lo, (size_t)op->y_stride);
        }
        return;
    }
    int64_t per = (int64_t)(L2_BUDGET_BYTES / ab->stride);
    per = per < TOK_UNIT ? TOK_UNIT : per / TOK_UNIT * TOK_UNIT;
    for (int64_t t0 = 0; t0 < p->n_tokens; t0 += per) {
        const int64_t nt = p->n_tokens - t0 < per ? p->n_tokens - t0 : per;
        p->mdot[i](p->n_cols, w, p->w_row_bytes[i], n_rows, ab->data + (size_t)t0 * ab->stride,
                   ab->stride, nt, op->y + t0 * op->y_stride + lo, (size_t)op->y_stride);
    }
}

static void compute_task(void *ctx, int ith, int nth)
{
    const mm_plan *p = ctx;
    const int64_t n_units = (p->total_rows + ROW_UNIT - 1) / ROW_UNIT;
    int64_t u0, u1;
    share(n_units, ith, nth, &u0, &u1);
    const int64_t g0 = u0 * ROW_UNIT;
    const int64_t g1 = u1 * ROW_UNIT < p->total_rows ? u1 * ROW_UNIT : p->total_rows;
    int64_t base = 0;

    for (int i = 0; i < p->n_ops && g0 < g1; i++) {
        const int64_t n_rows = p->ops[i].n_rows;
        const int64_t lo = g0 > base ? g0 - base : 0;
        const int64_t hi = g1 - base < n_rows ? g1 - base : n_rows;
        base += n_rows;
        if (lo < hi)
            compute_op(p, i, lo, hi);
    }
}

void inferd_matmul_multi(inferd_pool *pool, const inferd_matmul_op *ops, int n_ops, int64_t n_cols,
                         const float *x, int64_t x_stride, int64_t n_tokens, inferd_order order,
                         void *work)
{
    mm_plan p = {0};

    assert(n_ops >= 1 && n_ops <= MAX_OPS);
    assert(n_cols > 0 && x_stride >= n_cols && n_tokens >= 0);
    assert(((uintptr_t)work & (INFERD_MATMUL_WORK_ALIGN - 1)) == 0);
    for (int i = 0; i < n_ops; i++)
        assert(ops[i].n_rows >= 0 && ops[i].y_stride >= ops[i].n_rows);
    if (n_tokens == 0)
        return;
    p.x = x;
    p.x_stride = x_stride;
    const size_t need = plan_ops(&p, ops, n_ops, n_cols, n_tokens, order, work);
    assert(need != SIZE_MAX && (need == 0 || work));
    (void)need;
    if (p.total_rows == 0)
        return;
    int convert = 0;
    for (int b = 0; b < p.n_bufs; b++)
        convert |= p.bufs[b].n_items > 0;
    if (convert)
        inferd_pool_run(pool, convert_task, &p);
    inferd_pool_run(pool, compute_task, &p);
}

void inferd_matmul_strided(inferd_pool *pool, uint32_t w_type, const void *w, int64_t n_rows,
                           int64_t n_cols, const float *x, int64_t x_stride, int64_t n_tokens,
                           float *y, int64_t y_stride, inferd_order order, void *work)
{
    const inferd_matmul_op op = {
        .w_type = w_type, .w = w, .n_rows = n_rows, .y = y, .y_stride = y_stride};
    inferd_matmul_multi(pool, &op, 1, n_cols, x, x_stride, n_tokens, order, work);
}

void inferd_matmul(inferd_pool *pool, uint32_t w_type, const void *w, int64_t n_rows,
                   int64_t n_cols, const float *x, int64_t n_tokens, float *y, inferd_order order,
                   void *work)
{
    inferd_matmul_strided(pool, w_type, w, n_rows, n_cols, x, n_cols, n_tokens, y, n_rows, order,
                          work);
}
