/* Private to the kernels and the matmul: the per-ISA tables that quant.c
 * merges, the panel (tokens-in-lanes) kernels the matmul uses for prompts,
 * and the order of operations every dot product follows, so that all ISAs
 * and every tile shape give the same bits.
 *
 * The canonical order:
 *  - F32/F16/BF16: sixteen f32 lanes acc[0..15] from +0; element 16i+l goes
 *    to lane l, acc[l] = fma(w, x, acc[l]), i ascending over whole groups of
 *    16; then v[l] = acc[l] + acc[l+8] (l < 8),
 *    r = ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)) (ggml's hsum_float_8), and the
 *    n % 16 tail elements in order: r = fma(w, x, r).
 *  - Block formats: one f32 accumulator from +0; for each block b in order,
 *    acc = fma(dw_b * da_b, (float)isum_b, acc), where isum_b is the exact
 *    integer dot product of the block's quants (offset removed) with the
 *    activation's, and dw*da is exact in f32 (both are f16). Q4_1/Q5_1 also
 *    keep summs = summs + mw_b * sa_b (an exact product) in block order and
 *    return acc + summs. This is ggml's reference formula with the multiply-
 *    add fused; since the integer sums are exact, any way of computing them
 *    (lanes over elements, rows or tokens) gives the same result.
 */
#ifndef INFERD_ENGINE_QUANT_IMPL_H
#define INFERD_ENGINE_QUANT_IMPL_H

#include "inferd/quant.h"

/* Per-ISA tables indexed by inferd_dtype; a NULL member falls back to the
 * next lower ISA. Only the entries whose `type` is set are meaningful. */
extern const inferd_kernels inferd__kernels_avx2[INFERD_DTYPE_COUNT];
extern const inferd_kernels inferd__kernels_avx512[INFERD_DTYPE_COUNT];

/*
 * Panels: activations of up to `lanes` tokens interleaved so that one vector
 * lane holds one token, for the block formats. For each block b of the row,
 * a panel holds (bytes from the block's start, P = lanes):
 *     0        int8  q[8][P][4]   q[g][t][j] = quant 4g+j of token t
 *     32P      f32   d[P]         the token's block scale (f16 widened)
 *     36P      i32   sum[P]       sum of the token's 32 quants
 *     40P      f32   s[P]         Q8_1's s (f16 widened), 0 for Q8_0
 * so a block takes 44P bytes. Missing tokens (a last panel with fewer than
 * P) are zero.
 */
typedef struct inferd__panel_kernels {
    int lanes;             /* P: tokens per panel */
    int min_tokens;        /* use panels from this many tokens on */
    /* Convert n_toks (<= P) f32 rows of n elements (stride x_stride floats)
     * to one panel, quantizing exactly as the vec_dot_type's from_float. */
    void (*pack)(int64_t n, const float *x, int64_t x_stride, int n_toks,
                 void *panel);
    /* out[t * out_stride + r] for r < n_rows, t < n_toks (<= P): bit-identical
     * to vec_dot of row r with token t's from_float row. */
    void (*gemm)(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                 const void *panel, int n_toks, float *out, size_t out_stride);
} inferd__panel_kernels;

/** Bytes of one panel of @p lanes tokens over @p n elements. */
static inline size_t inferd__panel_bytes(int lanes, int64_t n)
{
    return (size_t)(n / 32) * 44u * (size_t)lanes;
}

/** Panel kernels of @p type for the ISA inferd_cpu_isa() picks, or NULL
 * when that ISA has none for it (the matmul then uses mdot). Thread: any. */
const inferd__panel_kernels *inferd__panel_get(uint32_t type);
/* Per-ISA panel tables (NULL entries: none). */
extern const inferd__panel_kernels *const inferd__panels_avx512[INFERD_DTYPE_COUNT];

/* The canonical reduction of the 16 float lanes, on scalars. */
static inline float inferd__reduce16(const float a[16])
{
    float v[8];
    for (int l = 0; l < 8; l++)
        v[l] = a[l] + a[l + 8];
    float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
    float t0 = s0 + s2, t1 = s1 + s3;
    return t0 + t1;
}

#endif
