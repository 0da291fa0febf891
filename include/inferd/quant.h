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
 * K-quants: super-blocks of 256 elements cut into sub-blocks s (of 32
 * elements for Q4_K/Q5_K, of 16 for Q6_K), each with its own integer scale
 * sc_s (and min m_s) applied through the super-block's f16 d (and dmin):
 *
 *  type  block  bytes  layout                           element j, s = sub-block
 *  Q4_K    256    144  f16 d, dmin; u8 scales[12];      d*sc_s*q_j - dmin*m_s
 *                      u8 qs[128]                       q 0..15, s = j/32
 *  Q5_K    256    176  f16 d, dmin; u8 scales[12];      d*sc_s*q_j - dmin*m_s
 *                      u8 qh[32]; u8 qs[128]            q 0..31, s = j/32
 *  Q6_K    256    210  u8 ql[128]; u8 qh[64];           d*sc_s*(q_j - 32)
 *                      i8 scales[16]; f16 d             q 0..63, s = j/16
 *  Q8_K    256    292  f32 d; i8 qs[256];               d*q_j
 *                      i16 bsums[16]                    bsums[g] = sum q_16g..16g+15
 *
 * Q4_K/Q5_K: qs[32c + l] (c < 4, l < 32) holds element 64c + l in its low
 * nibble and element 64c + 32 + l in its high nibble; Q5_K's fifth bit of
 * element 64c + l is bit 2c of qh[l], that of element 64c + 32 + l bit
 * 2c + 1. The eight 6-bit scales and mins: for s < 4, sc_s = scales[s] & 63
 * and m_s = scales[s + 4] & 63; for s >= 4, sc_s = (scales[s + 4] & 15) |
 * (scales[s - 4] >> 6) << 4 and m_s = (scales[s + 4] >> 4) |
 * (scales[s] >> 6) << 4. Q6_K: for each half h < 2 and l < 32, with
 * L = ql + 64h and H = qh + 32h, elements 128h + l, +32, +64, +96 have the
 * low 4 bits L[l] & 15, L[l + 32] & 15, L[l] >> 4, L[l + 32] >> 4 and as
 * bits 4-5 the pairs of H[l] at bits 0, 2, 4, 6; sc_s is a signed byte.
 * Q8_K holds activations only; its d is a plain f32.
 *
 * Numerics follow ggml-cpu on x86 so that we reproduce llama.cpp: the f32
 * activation row is first converted to the weight type's vec_dot_type (F32
 * stays F32, F16 -> F16, BF16 -> BF16, Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 ->
 * Q8_1, rounded as ggml-cpu's x86 quantize_row_q8_0/q8_1; Q4_K/Q5_K/Q6_K ->
 * Q8_K, rounded as ggml's quantize_row_q8_K_ref, which ggml-cpu uses on x86)
 * and the dot product runs between the weight row and that row. For the
 * block formats and the K-quants it is ggml-cpu's AVX2 order (which
 * llama.cpp also runs on AVX-512 machines): eight lanes of exact integer
 * sums (lane l: elements 4l..4l+3 of each 32-element block or piece), one
 * fused multiply-add per lane and block (or super-block) in block order,
 * then ggml's 8-lane reduction; Q4_1/Q5_1 add mw*sa per block by one more
 * fma. Q4_0 matrices whose row count is a multiple of 8 take the order of
 * llama.cpp's repacked q4_0_8x8 kernels instead, one fma per block of the
 * whole block sum (inferd_kernels.vec_dot_rows8).
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

#define INFERD_QK 32            /* elements per block of the formats Q4_0..Q8_1 */
#define INFERD_QK_K 256         /* elements per super-block of the K-quants */
#define INFERD_K_SCALE_BYTES 12 /* Q4_K/Q5_K: packed 6-bit scales and mins */

typedef struct inferd_block_q4_0 {
    inferd_f16 d;              /* scale */
    uint8_t qs[INFERD_QK / 2]; /* nibbles: low = j, high = j + 16 */
} inferd_block_q4_0;
static_assert(sizeof(inferd_block_q4_0) == 18, "Q4_0 block is 18 bytes");

typedef struct inferd_block_q4_1 {
    inferd_f16 d; /* scale */
    inferd_f16 m; /* minimum (offset) */
    uint8_t qs[INFERD_QK / 2];
} inferd_block_q4_1;
static_assert(sizeof(inferd_block_q4_1) == 20, "Q4_1 block is 20 bytes");

typedef struct inferd_block_q5_0 {
    inferd_f16 d;
    uint8_t qh[4]; /* fifth bits, little-endian u32 */
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
    inferd_f16 s; /* d * sum(qs), both as f32 before rounding */
    int8_t qs[INFERD_QK];
} inferd_block_q8_1;
static_assert(sizeof(inferd_block_q8_1) == 36, "Q8_1 block is 36 bytes");

typedef struct inferd_block_q4_k {
    inferd_f16 d;                         /* scale of the sub-block scales */
    inferd_f16 dmin;                      /* scale of the sub-block mins */
    uint8_t scales[INFERD_K_SCALE_BYTES]; /* 8 scales, 8 mins, 6 bits each */
    uint8_t qs[INFERD_QK_K / 2];          /* per 64: low = l, high = 32 + l */
} inferd_block_q4_k;
static_assert(sizeof(inferd_block_q4_k) == 144, "Q4_K block is 144 bytes");

typedef struct inferd_block_q5_k {
    inferd_f16 d;
    inferd_f16 dmin;
    uint8_t scales[INFERD_K_SCALE_BYTES];
    uint8_t qh[INFERD_QK_K / 8]; /* fifth bits: qh[l] bit 2c (+1) */
    uint8_t qs[INFERD_QK_K / 2]; /* as Q4_K */
} inferd_block_q5_k;
static_assert(sizeof(inferd_block_q5_k) == 176, "Q5_K block is 176 bytes");

typedef struct inferd_block_q6_k {
    uint8_t ql[INFERD_QK_K / 2];     /* low 4 bits */
    uint8_t qh[INFERD_QK_K / 4];     /* bits 4-5, four elements a byte */
    int8_t scales[INFERD_QK_K / 16]; /* one per 16 elements */
    inferd_f16 d;
} inferd_block_q6_k;
static_assert(sizeof(inferd_block_q6_k) == 210, "Q6_K block is 210 bytes");

typedef struct inferd_block_q8_k {
    float d;
    int8_t qs[INFERD_QK_K];
    int16_t bsums[INFERD_QK_K / 16]; /* sum of each 16 consecutive qs */
} inferd_block_q8_k;
static_assert(sizeof(inferd_block_q8_k) == 292, "Q8_K block is 292 bytes");

/* Q2_K, Q3_K, IQ4_NL, IQ4_XS (ggml's layouts; kernels in quant_k2*.c):
 *
 *  type    block bytes layout                            element e
 *  Q2_K      256    84 u8 scales[16]; u8 qs[64];         d*(sc_s & 15)*q_e
 *                      f16 d, dmin                         - dmin*(sc_s >> 4)
 *  Q3_K      256   110 u8 hmask[32]; u8 qs[64];          d*sc_s*(q_e - 4)
 *                      u8 scales[12]; f16 d
 *  IQ4_NL     32    18 f16 d; u8 qs[16]                  d*kv[q_e]
 *  IQ4_XS    256   136 f16 d; u16 scales_h;              d*ls_b*kv[q_e]
 *                      u8 scales_l[4]; u8 qs[128]
 *
 * s = e / 16 (Q2_K, Q3_K), b = e / 32 (IQ4_XS). Q2_K/Q3_K: the low two bits
 * of element 128h + 32j + l (h < 2, j < 4, l < 32) are bits 2j, 2j+1 of
 * qs[32h + l]; Q3_K's third bit is bit e / 32 of hmask[e % 32], and its
 * 6-bit scales sc_s = ((s < 8 ? scales[s] & 15 : scales[s - 8] >> 4) |
 * ((scales[8 + s % 4] >> 2(s / 4)) & 3) << 4) - 32. IQ4_NL/IQ4_XS: per 32
 * elements, qs[j] (j < 16) holds element j in its low nibble and j + 16 in
 * its high one, an index into the 16 values kv (inferd__kvalues_iq4nl:
 * -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113); IQ4_XS's
 * ls_b = ((scales_l[b/2] >> 4(b%2)) & 15 | ((scales_h >> 2b) & 3) << 4) - 32.
 * Activations: Q8_K for Q2_K, Q3_K, IQ4_XS; Q8_0 for IQ4_NL. */
typedef struct inferd_block_q2_k {
    uint8_t scales[INFERD_QK_K / 16]; /* low nibble scale, high nibble min */
    uint8_t qs[INFERD_QK_K / 4];      /* 2-bit quants */
    inferd_f16 d;                     /* scale of the scales */
    inferd_f16 dmin;                  /* scale of the mins */
} inferd_block_q2_k;
static_assert(sizeof(inferd_block_q2_k) == 84, "Q2_K block is 84 bytes");

typedef struct inferd_block_q3_k {
    uint8_t hmask[INFERD_QK_K / 8]; /* third bits */
    uint8_t qs[INFERD_QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];             /* sixteen 6-bit scales, + 32 */
    inferd_f16 d;
} inferd_block_q3_k;
static_assert(sizeof(inferd_block_q3_k) == 110, "Q3_K block is 110 bytes");

typedef struct inferd_block_iq4_nl {
    inferd_f16 d;
    uint8_t qs[INFERD_QK / 2]; /* indices into kv: low = j, high = j + 16 */
} inferd_block_iq4_nl;
static_assert(sizeof(inferd_block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");

typedef struct inferd_block_iq4_xs {
    inferd_f16 d;
    uint16_t scales_h;                  /* high 2 bits of the 8 scales */
    uint8_t scales_l[INFERD_QK_K / 64]; /* low 4 bits, two a byte */
    uint8_t qs[INFERD_QK_K / 2];        /* as IQ4_NL, per 32 elements */
} inferd_block_iq4_xs;
static_assert(sizeof(inferd_block_iq4_xs) == 136, "IQ4_XS block is 136 bytes");

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
typedef void (*inferd_mdot_fn)(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                               const void *a, size_t a_stride, int64_t n_toks, float *out,
                               size_t out_stride);

typedef struct inferd_kernels {
    uint32_t type;         /* inferd_dtype of the rows */
    uint32_t vec_dot_type; /* type activations are converted to */
    inferd_isa isa;        /* ISA this table was chosen for */
    inferd_to_float_fn to_float;
    /* Conversion used at run time (activations): for Q8_0/Q8_1 ggml-cpu's
     * x86 rounding (see quant.c); for the other types (Q8_K included) the
     * same as quantize. */
    inferd_from_float_fn from_float;
    /* Reference quantizer for writing weight files: ggml's
     * quantize_row_<type>_ref, bit for bit (what llama-quantize writes
     * without an importance matrix). Scalar on every ISA. */
    inferd_from_float_fn quantize;
    /* NULL for Q8_1 and Q8_K, which only ever hold activations. */
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
    /* Q4_0 only (else NULL): vec_dot and mdot for matrices whose row count
     * is a multiple of 8. llama.cpp c392e5094 repacks those at load on x86
     * (q4_0_8x8) and sums them one block at a time, one fused multiply-add
     * per block of the exact whole-block sum (src/engine/quant_impl.h);
     * other Q4_0 matrices it sums in the eight-lane order of vec_dot. */
    inferd_vec_dot_fn vec_dot_rows8;
    inferd_mdot_fn mdot_rows8;
} inferd_kernels;

/* Which of llama.cpp's reduction orders a dot product follows: the GEMM
 * order for prompt tokens, the GEMV order for generated tokens. Only F32 and
 * F16 rows (and IQ4_NL: llamafile's tinyBLAS for prompts, ggml's vec_dot
 * for generation) have two orders; every other type has one. */
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

/** The dot product of @p k for a matrix of @p n_rows rows of @p n elements
 * in @p order: vec_dot_rows8 where it applies, else inferd_kernels_dot. */
static inline inferd_vec_dot_fn inferd_kernels_matrix_dot(const inferd_kernels *k, int64_t n,
                                                          int64_t n_rows, inferd_order order)
{
    if (k->vec_dot_rows8 && n_rows % 8 == 0)
        return k->vec_dot_rows8;
    return inferd_kernels_dot(k, n, order);
}

/** The mdot of @p k for a matrix of @p n_rows rows (its outputs equal
 * inferd_kernels_matrix_dot's where that is vec_dot or vec_dot_rows8). */
static inline inferd_mdot_fn inferd_kernels_matrix_mdot(const inferd_kernels *k, int64_t n_rows)
{
    return k->mdot_rows8 && n_rows % 8 == 0 ? k->mdot_rows8 : k->mdot;
}

/**
 * Kernels for rows of @p type on the ISA inferd_cpu_isa() picks (best the
 * CPU has, capped by $INFERD_ISA): F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL and IQ4_XS (Q8_1
 * and Q8_K without dot products). NULL if the type has no kernels (the
 * other IQ types, integer types, unknown ids). The table is static: valid for the process'
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
