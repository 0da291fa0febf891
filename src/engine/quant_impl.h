/* Private to the kernels: the per-ISA tables that quant.c merges, and the
 * order of operations every vec_dot follows, so that all ISAs (and every
 * tile of inferd_matmul) give the same bits.
 *
 * The canonical order (all ISAs, all types): sixteen f32 lane accumulators
 * acc[0..15], starting at +0, updated by fma; then the reduction
 *   v[l] = acc[l] + acc[l+8] (l < 8);
 *   result = ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))   (ggml's hsum_float_8).
 *
 *  - F32/F16/BF16: element 16i+l goes to lane l: acc[l] = fma(w, x, acc[l]),
 *    i ascending over whole groups of 16; the n % 16 tail elements are added
 *    after the reduction, in order: r = fma(w, x, r).
 *  - Block formats, by steps over the block pairs (2i, 2i+1): lane l holds
 *    the exact integer sum s_l of the products of four consecutive elements
 *    of one block B(l), and acc[l] = fma(dw_B * da_B, (float)s_l, acc[l])
 *    (dw*da is exact in f32: both are f16). Which four elements:
 *      Q8_0:                  B = 2i + l/8,     elements 4(l%8) .. +3
 *      Q4_0, Q4_1, Q5_0, Q5_1: B = 2i + (l/4)%2, elements 4(l%4) + 16(l/8) .. +3
 *    (the second matches the nibble layout: low nibbles of both blocks, then
 *    high nibbles). When the row has an odd number of blocks, the last step
 *    leaves the lanes of the missing block unchanged.
 *    Q4_1/Q5_1 also keep summs = summs + mw_B * sa_B (exact product) over
 *    blocks in order and return reduction + summs.
 * The integer sums are exact, so only this float order matters; it is not
 * ggml's (which accumulates one block at a time in 8 lanes), as pairs of
 * blocks fill a 512-bit register and halve the dependent fma chain. */
#ifndef INFERD_ENGINE_QUANT_IMPL_H
#define INFERD_ENGINE_QUANT_IMPL_H

#include "inferd/quant.h"

/* Per-ISA tables indexed by inferd_dtype; a NULL member falls back to the
 * next lower ISA. Only the entries whose `type` is set are meaningful. */
extern const inferd_kernels inferd__kernels_avx2[INFERD_DTYPE_COUNT];
extern const inferd_kernels inferd__kernels_avx512[INFERD_DTYPE_COUNT];

/* The canonical reduction of 16 lanes, on scalars. */
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
