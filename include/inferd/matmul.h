/* Matrix products of a weight matrix (any type with kernels in quant.h,
 * rows borrowed from the model's mmap) with a batch of f32 activation rows,
 * on the compute thread pool.
 *
 * Determinism: every output element is one vec_dot of the selected ISA,
 * computed whole by one thread with a fixed order of operations, so results
 * are bit-identical whatever the number of tokens, threads or tiles. Nothing
 * here allocates; the caller passes a work buffer sized by *_work_size. */
#ifndef INFERD_MATMUL_H
#define INFERD_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "inferd/pool.h"
#include "inferd/quant.h"

/** Alignment the work buffer must have (bytes). */
#define INFERD_MATMUL_WORK_ALIGN 64

/** One weight matrix applied to a shared input by inferd_matmul_multi. */
typedef struct inferd_matmul_op {
    uint32_t w_type; /* inferd_dtype of W */
    const void *w;   /* (n_rows, n_cols) rows contiguous, borrowed */
    int64_t n_rows;
    float *y;         /* y[t * y_stride + r], r < n_rows, t < n_tokens */
    int64_t y_stride; /* floats between output rows, >= n_rows */
} inferd_matmul_op;

/**
 * Bytes of work buffer inferd_matmul needs for up to @p n_tokens rows of
 * @p n_cols activations against weights of @p w_type: room for x converted
 * to the vec_dot_type (rows padded to 64 bytes or, for prompts on AVX-512,
 * token-interleaved panels); 0 for F32 weights, which use x as it is, and 0
 * when the type is unsupported or n_cols is not a whole number of blocks.
 * A buffer sized for n tokens serves any call with fewer. Depends on the
 * ISA in use, so compute it in the process that runs the matmul.
 * Thread: any.
 */
size_t inferd_matmul_work_size(uint32_t w_type, int64_t n_cols, int64_t n_tokens);

/**
 * y[t*n_rows + r] = dot(W row r, x row t) for t < n_tokens, r < n_rows.
 *
 * @param pool    compute pool (NULL runs on the caller alone).
 * @param w_type  inferd_dtype of W; must have kernels (inferd_kernels_get).
 * @param w       n_rows rows of n_cols elements, rows contiguous; borrowed.
 * @param x       f32 (n_tokens, n_cols), borrowed.
 * @param y       f32 (n_tokens, n_rows), written.
 * @param order   INFERD_ORDER_PREFILL for prompt tokens, INFERD_ORDER_DECODE
 *                for generated ones: the reduction order of F32/F16 rows
 *                (see inferd_kernels_dot); other types have one order.
 * @param work    inferd_matmul_work_size() bytes, 64-byte aligned (may be
 *                NULL when that size is 0).
 * y must not overlap x, w or work. The caller guarantees valid arguments
 * (checked by asserts only): these are shapes fixed at model load.
 * Thread: the pool's owner.
 */
void inferd_matmul(inferd_pool *pool, uint32_t w_type, const void *w, int64_t n_rows,
                   int64_t n_cols, const float *x, int64_t n_tokens, float *y, inferd_order order,
                   void *work);

/** inferd_matmul with row strides (in floats) for x (>= n_cols) and y
 * (>= n_rows). */
void inferd_matmul_strided(inferd_pool *pool, uint32_t w_type, const void *w, int64_t n_rows,
                           int64_t n_cols, const float *x, int64_t x_stride, int64_t n_tokens,
                           float *y, int64_t y_stride, inferd_order order, void *work);

/** Work bytes for inferd_matmul_multi over @p ops (one converted copy of x
 * per distinct vec_dot_type among them). 0 if any op's type is unsupported
 * and no conversion is needed, see inferd_matmul_work_size. */
size_t inferd_matmul_multi_work_size(const inferd_matmul_op *ops, int n_ops, int64_t n_cols,
                                     int64_t n_tokens);

/**
 * Apply @p n_ops (1..8) weight matrices with the same n_cols to the same x
 * (e.g. the Q, K and V projections, or the FFN gate and up): x is converted
 * once per vec_dot_type and all outputs are computed in one parallel
 * section, the rows of all ops split among the threads. Each output equals
 * what inferd_matmul would give, bit for bit.
 * @param x_stride  floats between rows of x (>= n_cols).
 * Thread: the pool's owner.
 */
void inferd_matmul_multi(inferd_pool *pool, const inferd_matmul_op *ops, int n_ops, int64_t n_cols,
                         const float *x, int64_t x_stride, int64_t n_tokens, inferd_order order,
                         void *work);

#endif
