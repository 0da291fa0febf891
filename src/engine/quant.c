/* Scalar reference kernels (dequantize, quantize, dot product) for every
 * supported type but the K-quants, which live in quant_k.c, and the per-ISA
 * dispatch table. The scalar dot products follow the canonical order of
 * quant_impl.h exactly, so the SIMD versions must equal them bit for bit.
 * Tables are built once (pthread_once) and then only read. Thread: any. */
#include "quant_impl.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define QK INFERD_QK

/* ---- helpers ----------------------------------------------------------- */

/* C's float -> int truncation for values a cast handles, with NaN and values
 * out of int range mapped to 0 instead of undefined behaviour. */
static int trunc_int(float v)
{
    if (!(v > -2147483648.0f && v < 2147483648.0f))
        return 0;
    return (int)v;
}

/* What x86 cvtps2dq + saturating packs to int8 give for a float already
 * rounded to an integer: NaN and |v| >= 2^31 become INT32_MIN, hence -128. */
static int8_t sat_i8_like_x86(float r)
{
    if (!(r >= -2147483648.0f && r < 2147483648.0f))
        return -128;
    if (r >= 127.0f)
        return 127;
    if (r <= -128.0f)
        return -128;
    return (int8_t)(int)r;
}

static void q4_unpack(const uint8_t qs[16], int q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0f;
        q[j + 16] = qs[j] >> 4;
    }
}

static void q5_unpack(const uint8_t qh_bytes[4], const uint8_t qs[16], int q[32])
{
    uint32_t qh = (uint32_t)qh_bytes[0] | (uint32_t)qh_bytes[1] << 8 | (uint32_t)qh_bytes[2] << 16 |
                  (uint32_t)qh_bytes[3] << 24;
    q4_unpack(qs, q);
    for (int j = 0; j < 32; j++)
        q[j] |= (int)((qh >> j) & 1u) << 4;
}

static void q5_pack(const int q[32], uint8_t qh_bytes[4], uint8_t qs[16])
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    for (int i = 0; i < 4; i++)
        qh_bytes[i] = (uint8_t)(qh >> (8 * i));
}

/* Integer weights (offset removed) and scales of one block, whatever the
 * format: what the canonical block dot product consumes. */
typedef struct wblock {
    int q[32];
    float d;
    float m; /* Q4_1/Q5_1 minimum, else 0 */
} wblock;

typedef void (*unpack_fn)(const void *row, int64_t b, wblock *out);

/* ggml's hsum_float_8: ((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7)). */
static float hsum8(const float x[8])
{
    return ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
}

/* The canonical dot product (quant_impl.h) of a block-format row with a
 * Q8_0 row, or a Q8_1 row when has_m (then summs adds m * s per block):
 * eight lanes of four consecutive elements, one fma per lane and block. */
static float block_dot(int64_t n, const void *w, const void *a, unpack_fn unpack, int has_m)
{
    const size_t abytes = has_m ? sizeof(inferd_block_q8_1) : sizeof(inferd_block_q8_0);
    const size_t aqs = has_m ? offsetof(inferd_block_q8_1, qs) : offsetof(inferd_block_q8_0, qs);
    float acc[8] = {0}, summs = 0.0f;

    for (int64_t b = 0; b < n / QK; b++) {
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * abytes;
        const int8_t *qa = (const int8_t *)(ab + aqs);
        uint16_t h[2];
        wblock wb;
        memcpy(h, ab, sizeof(h));
        unpack(w, b, &wb);
        /* Two f16 values: the product is exact in f32. */
        const float d = wb.d * inferd_f16_to_f32(h[0]);
        for (int l = 0; l < 8; l++) {
            int32_t isum = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++)
                isum += wb.q[j] * qa[j];
            acc[l] = fmaf(d, (float)isum, acc[l]);
        }
        if (has_m)
            summs = fmaf(wb.m, inferd_f16_to_f32(h[1]), summs);
    }
    return has_m ? hsum8(acc) + summs : hsum8(acc);
}

/* ---- F32 / F16 / BF16 --------------------------------------------------- */

static void f32_to_float(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_f16 *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = inferd_f16_to_f32(h[i]);
}

static void f16_from_float(const float *src, void *dst, int64_t n)
{
    inferd_f16 *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = inferd_f32_to_f16(src[i]);
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_bf16 *h = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = inferd_bf16_to_f32(h[i]);
}

static void bf16_from_float(const float *src, void *dst, int64_t n)
{
    inferd_bf16 *h = dst;
    for (int64_t i = 0; i < n; i++)
        h[i] = inferd_f32_to_bf16(src[i]);
}

/* The canonical float dot product: 16 lanes, then the tail by fma. For F16
 * and BF16 the products are exact in f32, so fma and multiply-then-add
 * agree; fmaf keeps the three types uniform. */
#define FLOAT_DOT(name, T, CVT)                                      \
    static float name(int64_t n, const void *vw, const void *va)     \
    {                                                                \
        const T *w = vw, *a = va;                                    \
        float acc[16] = {0};                                         \
        int64_t i = 0;                                               \
        for (; i + 16 <= n; i += 16)                                 \
            for (int l = 0; l < 16; l++)                             \
                acc[l] = fmaf(CVT(w[i + l]), CVT(a[i + l]), acc[l]); \
        float sum = inferd__reduce16(acc);                           \
        for (; i < n; i++)                                           \
            sum = fmaf(CVT(w[i]), CVT(a[i]), sum);                   \
        return sum;                                                  \
    }

/* The GEMV order (see inferd_kernels.vec_dot_gemv). The F32 tail is a
 * product rounded to float, then added, except its last (n % 64) % 8
 * elements, which are fused multiply-adds: what GCC 12 -O3 makes of ggml's
 * scalar tail loop (16- and 8-wide multiplies added in order, then a scalar
 * fma remainder). The F16 one sums exact products in double. */
#define FLOAT_DOT_GEMV(name, T, CVT, TAIL_T)                                                     \
    static float name(int64_t n, const void *vw, const void *va)                                 \
    {                                                                                            \
        const T *w = vw, *a = va;                                                                \
        float acc[4][16] = {{0}};                                                                \
        const int64_t np = n & ~(int64_t)63;                                                     \
        for (int64_t i = 0; i < np; i += 64)                                                     \
            for (int j = 0; j < 4; j++)                                                          \
                for (int l = 0; l < 16; l++)                                                     \
                    acc[j][l] = fmaf(CVT(w[i + 16 * j + l]), CVT(a[i + 16 * j + l]), acc[j][l]); \
        for (int l = 0; l < 16; l++) {                                                           \
            acc[0][l] = acc[0][l] + acc[2][l];                                                   \
            acc[1][l] = acc[1][l] + acc[3][l];                                                   \
        }                                                                                        \
        for (int l = 0; l < 16; l++)                                                             \
            acc[0][l] = acc[0][l] + acc[1][l];                                                   \
        TAIL_T sum = inferd__reduce16(acc[0]);                                                   \
        const int64_t n_fma = sizeof(TAIL_T) == sizeof(float) ? (n - np) % 8 : 0;                \
        for (int64_t i = np; i < n - n_fma; i++) {                                               \
            const float p = CVT(w[i]) * CVT(a[i]);                                               \
            sum += (TAIL_T)p;                                                                    \
        }                                                                                        \
        for (int64_t i = n - n_fma; i < n; i++)                                                  \
            sum = (TAIL_T)fmaf(CVT(w[i]), CVT(a[i]), (float)sum);                                \
        return (float)sum;                                                                       \
    }

#define F32_ID(x) (x)
FLOAT_DOT_GEMV(f32_dot_gemv, float, F32_ID, float)
FLOAT_DOT_GEMV(f16_dot_gemv, inferd_f16, inferd_f16_to_f32, double)
FLOAT_DOT(f32_dot, float, F32_ID)
FLOAT_DOT(f16_dot, inferd_f16, inferd_f16_to_f32)
FLOAT_DOT(bf16_dot, inferd_bf16, inferd_bf16_to_f32)

/* ---- Q8_0 / Q8_1 -------------------------------------------------------- */

static void q8_0_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        float d = inferd_f16_to_f32(b[i].d);
        for (int j = 0; j < QK; j++)
            dst[i * QK + j] = (float)b[i].qs[j] * d;
    }
}

static void q8_1_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q8_1 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        float d = inferd_f16_to_f32(b[i].d);
        for (int j = 0; j < QK; j++)
            dst[i * QK + j] = (float)b[i].qs[j] * d;
    }
}

/*
 * Activation quantizer, following ggml-cpu's x86 quantize_row_q8_0/q8_1
 * (the AVX2 path, which every AVX build of llama.cpp uses), not the *_ref
 * functions: amax = max |x|; d = amax / 127 (stored as f16); the multiplier
 * is 127 / amax (0 when amax is 0) rather than 1 / d; q = x * mult rounded to
 * nearest, ties to even (rint, not roundf), then cvtps2dq + saturating packs.
 * Returns d (unrounded) and the sum of the q.
 */
static float q8_act_block(const float *x, int8_t qs[32], int *out_sum)
{
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) {
        float a = fabsf(x[j]);
        amax = a > amax ? a : amax;
    }
    const float d = amax / 127.0f;
    const float mult = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK; j++) {
        float v = x[j] * mult;
        qs[j] = sat_i8_like_x86(nearbyintf(v));
        sum += qs[j];
    }
    *out_sum = sum;
    return d;
}

static void q8_0_from_float(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int sum;
        float d = q8_act_block(src + i * QK, b[i].qs, &sum);
        b[i].d = inferd_f32_to_f16(d);
    }
}

static void q8_1_from_float(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int sum;
        float d = q8_act_block(src + i * QK, b[i].qs, &sum);
        b[i].d = inferd_f32_to_f16(d);
        b[i].s = inferd_f32_to_f16(d * (float)sum);
    }
}

/* ggml's quantize_row_q8_0_ref / q8_1_ref: multiplier 1/d, roundf (ties
 * away from zero). Used to write weight files. */
static float q8_ref_block(const float *x, int8_t qs[32], int *out_sum)
{
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) {
        float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < QK; j++) {
        qs[j] = (int8_t)trunc_int(roundf(x[j] * id));
        sum += qs[j];
    }
    *out_sum = sum;
    return d;
}

static void q8_0_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int sum;
        float d = q8_ref_block(src + i * QK, b[i].qs, &sum);
        b[i].d = inferd_f32_to_f16(d);
    }
}

static void q8_1_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int sum;
        float d = q8_ref_block(src + i * QK, b[i].qs, &sum);
        b[i].d = inferd_f32_to_f16(d);
        b[i].s = inferd_f32_to_f16((float)sum * d);
    }
}

static void unpack_q8_0(const void *row, int64_t b, wblock *out)
{
    const inferd_block_q8_0 *blk = (const inferd_block_q8_0 *)row + b;
    for (int j = 0; j < QK; j++)
        out->q[j] = blk->qs[j];
    out->d = inferd_f16_to_f32(blk->d);
    out->m = 0.0f;
}

static float q8_0_dot(int64_t n, const void *w, const void *a)
{
    return block_dot(n, w, a, unpack_q8_0, 0);
}

/* ---- Q4_0 / Q4_1 / Q5_0 / Q5_1 ------------------------------------------ */

static void q4_0_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        float d = inferd_f16_to_f32(b[i].d);
        int q[32];
        q4_unpack(b[i].qs, q);
        for (int j = 0; j < QK; j++)
            dst[i * QK + j] = (float)(q[j] - 8) * d;
    }
}

static void q4_1_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        float d = inferd_f16_to_f32(b[i].d), m = inferd_f16_to_f32(b[i].m);
        int q[32];
        q4_unpack(b[i].qs, q);
        for (int j = 0; j < QK; j++)
            dst[i * QK + j] = (float)q[j] * d + m;
    }
}

static void q5_0_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        float d = inferd_f16_to_f32(b[i].d);
        int q[32];
        q5_unpack(b[i].qh, b[i].qs, q);
        for (int j = 0; j < QK; j++)
            dst[i * QK + j] = (float)(q[j] - 16) * d;
    }
}

static void q5_1_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        float d = inferd_f16_to_f32(b[i].d), m = inferd_f16_to_f32(b[i].m);
        int q[32];
        q5_unpack(b[i].qh, b[i].qs, q);
        for (int j = 0; j < QK; j++)
            dst[i * QK + j] = (float)q[j] * d + m;
    }
}

/* Symmetric 4/5-bit reference (quantize_row_q4_0_ref / q5_0_ref): the scale
 * maps the value of largest magnitude, with its sign, to -2^(bits-1). */
static float sym_block(const float *x, int bits, int q[32])
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float half = (float)(1 << (bits - 1)); /* 8 or 16 */
    const int qmax = (1 << bits) - 1;            /* 15 or 31 */
    const float d = max / -half;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) {
        int v = (int8_t)trunc_int(x[j] * id + (half + 0.5f));
        q[j] = v < qmax ? v : qmax;
    }
    return d;
}

/* Asymmetric reference (q4_1_ref / q5_1_ref): d = (max - min) / qmax,
 * q = (x - min) / d rounded half up. */
static float asym_block(const float *x, int bits, int q[32], float *out_min)
{
    float min = 3.402823466e+38f, max = -3.402823466e+38f;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const int qmax = (1 << bits) - 1;
    const float d = (max - min) / (float)qmax;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) {
        float v = (x[j] - min) * id + 0.5f;
        if (bits == 4) {
            int t = (int8_t)trunc_int(v);
            q[j] = t < qmax ? t : qmax;
        } else {
            /* ggml casts to uint8_t without clamping; the value is < 32. */
            q[j] = (uint8_t)trunc_int(v) & 0x1f;
        }
    }
    *out_min = min;
    return d;
}

static void q4_0_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q4_0 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[32];
        b[i].d = inferd_f32_to_f16(sym_block(src + i * QK, 4, q));
        for (int j = 0; j < 16; j++)
            b[i].qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    }
}

static void q4_1_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q4_1 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[32];
        float min;
        b[i].d = inferd_f32_to_f16(asym_block(src + i * QK, 4, q, &min));
        b[i].m = inferd_f32_to_f16(min);
        for (int j = 0; j < 16; j++)
            b[i].qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
    }
}

static void q5_0_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q5_0 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[32];
        b[i].d = inferd_f32_to_f16(sym_block(src + i * QK, 5, q));
        q5_pack(q, b[i].qh, b[i].qs);
    }
}

static void q5_1_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q5_1 *b = dst;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[32];
        float min;
        b[i].d = inferd_f32_to_f16(asym_block(src + i * QK, 5, q, &min));
        b[i].m = inferd_f32_to_f16(min);
        q5_pack(q, b[i].qh, b[i].qs);
    }
}

static void unpack_q4_0(const void *row, int64_t b, wblock *out)
{
    const inferd_block_q4_0 *blk = (const inferd_block_q4_0 *)row + b;
    q4_unpack(blk->qs, out->q);
    for (int j = 0; j < QK; j++)
        out->q[j] -= 8;
    out->d = inferd_f16_to_f32(blk->d);
    out->m = 0.0f;
}

static void unpack_q4_1(const void *row, int64_t b, wblock *out)
{
    const inferd_block_q4_1 *blk = (const inferd_block_q4_1 *)row + b;
    q4_unpack(blk->qs, out->q);
    out->d = inferd_f16_to_f32(blk->d);
    out->m = inferd_f16_to_f32(blk->m);
}

static void unpack_q5_0(const void *row, int64_t b, wblock *out)
{
    const inferd_block_q5_0 *blk = (const inferd_block_q5_0 *)row + b;
    q5_unpack(blk->qh, blk->qs, out->q);
    for (int j = 0; j < QK; j++)
        out->q[j] -= 16;
    out->d = inferd_f16_to_f32(blk->d);
    out->m = 0.0f;
}

static void unpack_q5_1(const void *row, int64_t b, wblock *out)
{
    const inferd_block_q5_1 *blk = (const inferd_block_q5_1 *)row + b;
    q5_unpack(blk->qh, blk->qs, out->q);
    out->d = inferd_f16_to_f32(blk->d);
    out->m = inferd_f16_to_f32(blk->m);
}

static float q4_0_dot(int64_t n, const void *w, const void *a)
{
    return block_dot(n, w, a, unpack_q4_0, 0);
}

/* Q4_0 in the order of llama.cpp's repacked q4_0_8x8 kernels (quant_impl.h):
 * one fma per block of the exact whole-block sum. */
static float q4_0_dot_rows8(int64_t n, const void *w, const void *a)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        const inferd_block_q8_0 *ab = (const inferd_block_q8_0 *)a + b;
        wblock wb;
        unpack_q4_0(w, b, &wb);
        int32_t isum = 0;
        for (int j = 0; j < QK; j++)
            isum += wb.q[j] * ab->qs[j];
        acc = fmaf((float)isum, wb.d * inferd_f16_to_f32(ab->d), acc);
    }
    return acc;
}

static float q4_1_dot(int64_t n, const void *w, const void *a)
{
    return block_dot(n, w, a, unpack_q4_1, 1);
}

static float q5_0_dot(int64_t n, const void *w, const void *a)
{
    return block_dot(n, w, a, unpack_q5_0, 0);
}

static float q5_1_dot(int64_t n, const void *w, const void *a)
{
    return block_dot(n, w, a, unpack_q5_1, 1);
}

/* ---- mdot: one vec_dot per output -------------------------------------- */

#define SCALAR_MDOT(name, dot)                                                                 \
    static void name(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a, \
                     size_t a_stride, int64_t n_toks, float *out, size_t out_stride)           \
    {                                                                                          \
        for (int64_t t = 0; t < n_toks; t++)                                                   \
            for (int64_t r = 0; r < n_rows; r++)                                               \
                out[(size_t)t * out_stride + (size_t)r] =                                      \
                    dot(n, (const char *)w + (size_t)r * w_stride,                             \
                        (const char *)a + (size_t)t * a_stride);                               \
    }

SCALAR_MDOT(f32_mdot, f32_dot)
SCALAR_MDOT(f16_mdot, f16_dot)
SCALAR_MDOT(bf16_mdot, bf16_dot)
SCALAR_MDOT(q4_0_mdot, q4_0_dot)
SCALAR_MDOT(q4_0_mdot_rows8, q4_0_dot_rows8)
SCALAR_MDOT(q4_1_mdot, q4_1_dot)
SCALAR_MDOT(q5_0_mdot, q5_0_dot)
SCALAR_MDOT(q5_1_mdot, q5_1_dot)
SCALAR_MDOT(q8_0_mdot, q8_0_dot)

/* ---- tables ------------------------------------------------------------- */

#define T_(ty, vdt, pfx, q)                                    \
    [INFERD_DTYPE_##ty] = {.type = INFERD_DTYPE_##ty,          \
                           .vec_dot_type = INFERD_DTYPE_##vdt, \
                           .isa = INFERD_ISA_SCALAR,           \
                           .to_float = pfx##_to_float,         \
                           .from_float = pfx##_from_float,     \
                           .quantize = q,                      \
                           .vec_dot = pfx##_dot,               \
                           .mdot = pfx##_mdot}

static const inferd_kernels kernels_scalar[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32,
                          .vec_dot_type = INFERD_DTYPE_F32,
                          .isa = INFERD_ISA_SCALAR,
                          .to_float = f32_to_float,
                          .from_float = f32_from_float,
                          .quantize = f32_from_float,
                          .vec_dot = f32_dot,
                          .mdot = f32_mdot,
                          .vec_dot_gemv = f32_dot_gemv},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16,
                          .vec_dot_type = INFERD_DTYPE_F16,
                          .isa = INFERD_ISA_SCALAR,
                          .to_float = f16_to_float,
                          .from_float = f16_from_float,
                          .quantize = f16_from_float,
                          .vec_dot = f16_dot,
                          .mdot = f16_mdot,
                          .vec_dot_gemv = f16_dot_gemv},
    T_(BF16, BF16, bf16, bf16_from_float),
    [INFERD_DTYPE_Q4_0] = {.type = INFERD_DTYPE_Q4_0,
                           .vec_dot_type = INFERD_DTYPE_Q8_0,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = q4_0_to_float,
                           .from_float = q4_0_quantize,
                           .quantize = q4_0_quantize,
                           .vec_dot = q4_0_dot,
                           .mdot = q4_0_mdot,
                           .vec_dot_rows8 = q4_0_dot_rows8,
                           .mdot_rows8 = q4_0_mdot_rows8},
    [INFERD_DTYPE_Q4_1] = {.type = INFERD_DTYPE_Q4_1,
                           .vec_dot_type = INFERD_DTYPE_Q8_1,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = q4_1_to_float,
                           .from_float = q4_1_quantize,
                           .quantize = q4_1_quantize,
                           .vec_dot = q4_1_dot,
                           .mdot = q4_1_mdot},
    [INFERD_DTYPE_Q5_0] = {.type = INFERD_DTYPE_Q5_0,
                           .vec_dot_type = INFERD_DTYPE_Q8_0,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = q5_0_to_float,
                           .from_float = q5_0_quantize,
                           .quantize = q5_0_quantize,
                           .vec_dot = q5_0_dot,
                           .mdot = q5_0_mdot},
    [INFERD_DTYPE_Q5_1] = {.type = INFERD_DTYPE_Q5_1,
                           .vec_dot_type = INFERD_DTYPE_Q8_1,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = q5_1_to_float,
                           .from_float = q5_1_quantize,
                           .quantize = q5_1_quantize,
                           .vec_dot = q5_1_dot,
                           .mdot = q5_1_mdot},
    T_(Q8_0, Q8_0, q8_0, q8_0_quantize),
    [INFERD_DTYPE_Q8_1] = {.type = INFERD_DTYPE_Q8_1,
                           .vec_dot_type = INFERD_DTYPE_Q8_1,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = q8_1_to_float,
                           .from_float = q8_1_from_float,
                           .quantize = q8_1_quantize},
    /* K-quants: quant_k.c. */
    [INFERD_DTYPE_Q4_K] = {.type = INFERD_DTYPE_Q4_K,
                           .vec_dot_type = INFERD_DTYPE_Q8_K,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = inferd__q4_k_to_float,
                           .from_float = inferd__q4_k_quantize,
                           .quantize = inferd__q4_k_quantize,
                           .vec_dot = inferd__q4_k_dot,
                           .mdot = inferd__q4_k_mdot},
    [INFERD_DTYPE_Q5_K] = {.type = INFERD_DTYPE_Q5_K,
                           .vec_dot_type = INFERD_DTYPE_Q8_K,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = inferd__q5_k_to_float,
                           .from_float = inferd__q5_k_quantize,
                           .quantize = inferd__q5_k_quantize,
                           .vec_dot = inferd__q5_k_dot,
                           .mdot = inferd__q5_k_mdot},
    [INFERD_DTYPE_Q6_K] = {.type = INFERD_DTYPE_Q6_K,
                           .vec_dot_type = INFERD_DTYPE_Q8_K,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = inferd__q6_k_to_float,
                           .from_float = inferd__q6_k_quantize,
                           .quantize = inferd__q6_k_quantize,
                           .vec_dot = inferd__q6_k_dot,
                           .mdot = inferd__q6_k_mdot},
    /* Activations only: the reference quantizer is also the run-time one. */
    [INFERD_DTYPE_Q8_K] = {.type = INFERD_DTYPE_Q8_K,
                           .vec_dot_type = INFERD_DTYPE_Q8_K,
                           .isa = INFERD_ISA_SCALAR,
                           .to_float = inferd__q8_k_to_float,
                           .from_float = inferd__q8_k_quantize,
                           .quantize = inferd__q8_k_quantize},
/* Q2_K, Q3_K, IQ4_NL, IQ4_XS: quant_k2.c. */
#define K2_(ty, pfx, vdt, gemv)                                    \
    [INFERD_DTYPE_##ty] = {.type = INFERD_DTYPE_##ty,              \
                           .vec_dot_type = INFERD_DTYPE_##vdt,     \
                           .isa = INFERD_ISA_SCALAR,               \
                           .to_float = inferd__##pfx##_to_float,   \
                           .from_float = inferd__##pfx##_quantize, \
                           .quantize = inferd__##pfx##_quantize,   \
                           .vec_dot = inferd__##pfx##_dot,         \
                           .mdot = inferd__##pfx##_mdot,           \
                           .vec_dot_gemv = gemv}
    K2_(Q2_K, q2_k, Q8_K, NULL),
    K2_(Q3_K, q3_k, Q8_K, NULL),
    K2_(IQ4_NL, iq4_nl, Q8_0, inferd__iq4_nl_dot_gemv),
    K2_(IQ4_XS, iq4_xs, Q8_K, NULL),
#undef K2_
};

#undef T_

#define N_ISA 3

static inferd_kernels merged[N_ISA][INFERD_DTYPE_COUNT];
static pthread_once_t merged_once = PTHREAD_ONCE_INIT;
/* inferd_cpu_isa_hw() runs cpuid, which traps to the hypervisor in a VM
 * (microseconds): read it once here. */
static inferd_isa hw_isa;

#define PICK(field) (hi->field ? hi->field : lo->field)

static void merge_tables(void)
{
    const inferd_kernels *per_isa[N_ISA] = {kernels_scalar, inferd__kernels_avx2,
                                            inferd__kernels_avx512};
    hw_isa = inferd_cpu_isa_hw();
    for (int t = 0; t < INFERD_DTYPE_COUNT; t++)
        merged[0][t] = kernels_scalar[t];
    for (int isa = 1; isa < N_ISA; isa++) {
        for (int t = 0; t < INFERD_DTYPE_COUNT; t++) {
            const inferd_kernels *lo = &merged[isa - 1][t];
            const inferd_kernels *hi = &per_isa[isa][t];
            inferd_kernels k = *lo;
            if (lo->to_float) {
                k.isa = (inferd_isa)isa;
                k.to_float = PICK(to_float);
                k.from_float = PICK(from_float);
                k.quantize = PICK(quantize);
                k.vec_dot = PICK(vec_dot);
                k.mdot = PICK(mdot);
                k.vec_dot_gemv = PICK(vec_dot_gemv);
                k.vec_dot_rows8 = PICK(vec_dot_rows8);
                k.mdot_rows8 = PICK(mdot_rows8);
            }
            merged[isa][t] = k;
        }
    }
}

#undef PICK

const inferd_kernels *inferd_kernels_get_isa(uint32_t type, inferd_isa isa)
{
    if (type >= INFERD_DTYPE_COUNT || (int)isa < 0 || (int)isa >= N_ISA)
        return NULL;
    pthread_once(&merged_once, merge_tables);
    if (isa > hw_isa)
        return NULL;
    const inferd_kernels *k = &merged[isa][type];
    return k->to_float ? k : NULL;
}

const inferd_kernels *inferd_kernels_get(uint32_t type)
{
    return inferd_kernels_get_isa(type, inferd_cpu_isa());
}

const inferd__panel_kernels *inferd__panel_get(uint32_t type)
{
    if (type >= INFERD_DTYPE_COUNT || inferd_cpu_isa() < INFERD_ISA_AVX512)
        return NULL;
    return inferd__panels_avx512[type];
}

size_t inferd_quant_row_size(uint32_t type, int64_t n)
{
    uint64_t bytes;
    if (n < 0 || inferd_dtype_nbytes(type, (uint64_t)n, &bytes) != 0)
        return 0;
    return (size_t)bytes;
}
