/* Quantized block formats (the GGUF/ggml layouts, so files made by other
 * tools load unchanged) and the table of per-type kernels: dequantize,
 * quantize and the dot product of a weight row with an activation row.
 *
 *  type  block  bytes  layout                           element j of the block
 *  Q4_0     32     18  f16 d; u8 qs[16]                 d * (q_j - 8)
 *  Q4_1     32     20  f16 d, m; u8 qs[16]              d * q_j + m
 *  Q5_0     32     22  f16 d; u8 qh[4]; u8 qs[16]       d * (q_j - 16)
 *  Q5_1     32     24  f16 d, m; u8 qh[4]; u8 qs[16]    d * q_j + m
 *  Q8_0     32     34  f16 d; i8 qs[32]                 d * q_j
 *  Q8_1     32     36  f16 d, s; i8 qs[32]              d * q_j (s = d * sum q)
 *
 * 4-bit fields: qs[j] holds element j in its low nibble and element j+16 in
 * its high nibble (j < 16). 5-bit formats add the fifth bit from qh, read as
 * a little-endian u32: bit j is the high bit of element j (j < 32).
 *
 * Numerics follow ggml-cpu on x86 so that we reproduce llama.cpp: the f32
 * activation row is first converted to the weight type's vec_dot_type (F32
 * stays F32, F16 -> F16, BF16 -> BF16, Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 ->
 * Q8_1, rounded as ggml-cpu's x86 quantize_row_q8_0/q8_1) and the dot
 * product runs between the weight row and that row. For the block formats
 * it is ggml's reference formula sum_b dw*da*isum_b (+ mw*sa), with exact
 * integer block sums and one fused multiply-add per block in block order.
 * Every ISA, and every tile of inferd_matmul, gives the same bits: the
 * order of operations is fixed in src/engine/quant_impl.h.
 */
#ifndef INFERD_QUANT_H
#define INFERD_QUANT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/cpu.h"
#include "inferd/dtype.h"
#include "inferd/fp16.h"

#define INFERD_QK 32 /* elements per block of every format in this file */

typedef struct inferd_block_q4_0 {
    inferd_f16 d;                  /* scale */
    uint8_t qs[INFERD_QK / 2];     /* nibbles: low = j, high = j + 16 */
} inferd_block_q4_0;
static_assert(sizeof(inferd_block_q4_0) == 18, "Q4_0 block is 18 bytes");

typedef struct inferd_block_q4_1 {
    inferd_f16 d;                  /* scale */
    inferd_f16 m;                  /* minimum (offset) */
    uint8_t qs[INFERD_QK / 2];
} inferd_block_q4_1;
static_assert(sizeof(inferd_block_q4_1) == 20, "Q4_1 block is 20 bytes");

typedef struct inferd_block_q5_0 {
    inferd_f16 d;
    uint8_t qh[4];                 /* fifth bits, little-endian u32 */
    uint8_t qs[INFERD_QK / 2];
} inferd_block_q5_0;
static_assert(sizeof(inferd_block_q5_0) == 22, "Q5_0 block is 22 bytes");

typedef struct inferd_block_q5_1 {
    inferd_f16 d;
    inferd_f16 m;
    uint8_t qh[4];
    uint8_t qs[INFERD_QK / 2];
} inferd_block_q5_1;
static_assert(sizeof(inferd_block_q5_1) == 24, "Q5_1 block is 24 bytes");

typedef struct inferd_block_q8_0 {
    inferd_f16 d;
    int8_t qs[INFERD_QK];
} inferd_block_q8_0;
static_assert(sizeof(inferd_block_q8_0) == 34, "Q8_0 block is 34 bytes");

typedef struct inferd_block_q8_1 {
    inferd_f16 d;
    inferd_f16 s;                  /* d * sum(qs), both as f32 before rounding */
    int8_t qs[INFERD_QK];
} inferd_block_q8_1;
static_assert(sizeof(inferd_block_q8_1) == 36, "Q8_1 block is 36 bytes");

/** Dequantize @p n elements (a multiple of the block size) from @p src. */
typedef void (*inferd_to_float_fn)(const void *src, float *dst, int64_t n);
/** Convert @p n f32 elements (a multiple of the block size) to the type. */
typedef void (*inferd_from_float_fn)(const float *src, void *dst, int64_t n);
/** Dot product of @p n elements (a multiple of the block size): @p w a row
 * of the weight type, @p a a row of its vec_dot_type (as written by that
 * type's from_float). Bit-identical on every ISA. */
typedef float (*inferd_vec_dot_fn)(int64_t n, const void *w, const void *a);
/**
 * Many dot products at once:
 *   out[t * out_stride + r] = vec_dot(n, w + r * w_stride, a + t * a_stride)
 * for r < n_rows, t < n_toks (strides in bytes, out_stride in floats). Each
 * output is bit-identical to the ISA's vec_dot of the same arguments, so the
 * result never depends on n_rows, n_toks or the position in a tile; the
 * kernel tiles internally to reuse each loaded weight block across tokens.
 */
typedef void (*inferd_mdot_fn)(int64_t n, const void *w, size_t w_stride,
                               int64_t n_rows, const void *a, size_t a_stride,
                               int64_t n_toks, float *out, size_t out_stride);

typedef struct inferd_kernels {
    uint32_t type;                 /* inferd_dtype of the rows */
    uint32_t vec_dot_type;         /* type activations are converted to */
    inferd_isa isa;                /* ISA this table was chosen for */
    inferd_to_float_fn to_float;
    /* Conversion used at run time (activations): for Q8_0/Q8_1 ggml-cpu's
     * x86 rounding (see quant.c); for the other types the same as quantize. */
    inferd_from_float_fn from_float;
    /* Reference quantizer for writing weight files: ggml's
     * quantize_row_<type>_ref, bit for bit (what llama-quantize writes
     * without an importance matrix). Scalar on every ISA. */
    inferd_from_float_fn quantize;
    /* NULL for Q8_1, which only ever holds activations. */
    inferd_vec_dot_fn vec_dot;
    inferd_mdot_fn mdot;
    /* F32 and F16 only (else NULL): the dot product in the GEMV reduction
     * order, ggml's vec_dot_f32/f16 as built for AVX-512: four 16-lane
     * accumulators over whole groups of 64, summed pairwise (0+2, 1+3, then
     * 0+1), reduced like vec_dot, then the n % 64 tail: F32 by float
     * multiply-then-add but the last (n % 64) % 8 by fma (GCC's code for
     * ggml's tail loop), F16 in double. vec_dot's order (16 lanes) is that
     * of llama.cpp's tiled GEMM for n % 16 == 0; llama.cpp uses this one for
     * single-token batches and whenever n % 16 != 0. */
    inferd_vec_dot_fn vec_dot_gemv;
} inferd_kernels;

/* Which of llama.cpp's reduction orders a dot product follows: the GEMM
 * order for prompt tokens, the GEMV order for generated tokens. Only F32 and
 * F16 rows have two orders; every other type has one. */
typedef enum inferd_order {
    INFERD_ORDER_DECODE = 0,
    INFERD_ORDER_PREFILL = 1,
} inferd_order;

/** The dot product of @p k for rows of @p n elements in @p order. */
static inline inferd_vec_dot_fn inferd_kernels_dot(const inferd_kernels *k, int64_t n,
                                                   inferd_order order)
{
    if (k->vec_dot_gemv && (order == INFERD_ORDER_DECODE || n % 16 != 0))
        return k->vec_dot_gemv;
    return k->vec_dot;
}

/**
 * Kernels for rows of @p type on the ISA inferd_cpu_isa() picks (best the
 * CPU has, capped by $INFERD_ISA). NULL if the type has no kernels (K-quants,
 * integer types, unknown ids). The table is static: valid for the process'
 * lifetime. Thread: any.
 */
const inferd_kernels *inferd_kernels_get(uint32_t type);
/**
 * Kernels for @p type on one ISA, each function falling back to the next
 * lower ISA where that ISA has no version of its own. NULL if the type is
 * unsupported or the CPU lacks @p isa (see inferd_cpu_isa_hw). Thread: any.
 */
const inferd_kernels *inferd_kernels_get_isa(uint32_t type, inferd_isa isa);

/**
 * Bytes of one row of @p n elements of @p type, or 0 when @p type is unknown
 * or @p n is not a whole number of blocks. Thread: any.
 */
size_t inferd_quant_row_size(uint32_t type, int64_t n);

#endif
