/* Shared AVX2-level (AVX2 + FMA + F16C) pieces of the x86 kernels, included
 * by quant_avx2.c, quant_avx512.c and their K-quant siblings
 * quant_k_avx2.c, quant_k_avx512.c, each compiling them with its own ISA
 * flags: the canonical reduction, loads of F32/F16/BF16 groups, the mdot
 * drivers (tile loops), the activation quantizers (ggml-cpu's x86 rounding),
 * F16/BF16 conversions, dequantizers, the block-format descriptions and the
 * K-quants' 6-bit scales. Everything is static inline: each including file
 * gets its own copy. */
#ifndef INFERD_ENGINE_QUANT_X86_H
#define INFERD_ENGINE_QUANT_X86_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <limits.h>
#include <string.h>

#include "quant_impl.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define XI static inline __attribute__((always_inline))

/* Full unrolling of the small constant-count loops over tile rows, tokens
 * and groups, so that tile arrays live in registers. */
#ifdef __clang__
#define UNROLL _Pragma("unroll")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

/* Largest tile any kernel instantiates (array bounds; the kernels use
 * compile-time NR x NT within these, which the compiler keeps in registers). */
#define TILE_R_MAX 8
#define TILE_T_MAX 8

/* ggml's hsum_float_8: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)). */
XI float hsum8(__m256 v)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* Exact sum of the 8 i32 lanes. */
XI int32_t hsum_i32x8(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

XI float f16_scalar(const void *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* ---- F32 / F16 / BF16 rows --------------------------------------------- */

enum { FK_F32, FK_F16, FK_BF16 };

XI size_t fsize(const int kind) { return kind == FK_F32 ? 4 : 2; }

XI __m256 fload8(const int kind, const char *p, int64_t i)
{
    if (kind == FK_F32)
        return _mm256_loadu_ps((const float *)p + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (kind == FK_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

XI float fload1(const int kind, const char *p, int64_t i)
{
    if (kind == FK_F32)
        return ((const float *)p)[i];
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    if (kind == FK_F16)
        return _cvtsh_ss(h);
    return inferd_bf16_to_f32(h);
}

/* The GEMV order of inferd_kernels.vec_dot_gemv on 8-wide vectors: each of
 * the four 16-lane accumulators is a pair of __m256 (lanes 0-7, 8-15), so
 * the result equals the scalar reference bit for bit. */
XI float fdot_gemv(const int kind, int64_t n, const char *w, const char *a)
{
    __m256 acc[4][2];
    UNROLL
    for (int j = 0; j < 4; j++)
        acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 64)
        UNROLL
    for (int j = 0; j < 4; j++)
        UNROLL
    for (int h = 0; h < 2; h++)
        acc[j][h] = _mm256_fmadd_ps(fload8(kind, w, i + 16 * j + 8 * h),
                                    fload8(kind, a, i + 16 * j + 8 * h), acc[j][h]);
    UNROLL
    for (int h = 0; h < 2; h++) {
        acc[0][h] = _mm256_add_ps(acc[0][h], acc[2][h]);
        acc[1][h] = _mm256_add_ps(acc[1][h], acc[3][h]);
        acc[0][h] = _mm256_add_ps(acc[0][h], acc[1][h]);
    }
    const float r = hsum8(_mm256_add_ps(acc[0][0], acc[0][1]));
    if (kind == FK_F32) {
        /* As the scalar reference: the last (n - np) % 8 by fma. */
        const int64_t n_fma = (n - np) % 8;
        float s = r;
        for (int64_t i = np; i < n - n_fma; i++) {
            const float p = fload1(kind, w, i) * fload1(kind, a, i);
            s += p;
        }
        for (int64_t i = n - n_fma; i < n; i++)
            s = fmaf(fload1(kind, w, i), fload1(kind, a, i), s);
        return s;
    }
    double s = r;
    for (int64_t i = np; i < n; i++) {
        const float p = fload1(kind, w, i) * fload1(kind, a, i);
        s += (double)p;
    }
    return (float)s;
}

static inline float f32_dot_gemv(int64_t n, const void *w, const void *a)
{
    return fdot_gemv(FK_F32, n, w, a);
}

static inline float f16_dot_gemv(int64_t n, const void *w, const void *a)
{
    return fdot_gemv(FK_F16, n, w, a);
}

/*
 * mdot driver of the float types. First the tokens that fill whole MT-token tiles:
 * MR x MT tiles over rows (outer) and tokens (inner, so the MR weight rows
 * stay in L1 while the tokens pass), single rows for the last n_rows % MR.
 * Then the n_toks % MT leftover tokens (all of them when n_toks < MT, as in
 * generation) with MR1 x 1 tiles. TILE(nr, nt, w, a, out) computes an
 * nr x nt tile; it is a macro so each shape is a compile-time constant.
 */
#define MDOT_DRIVER(TILE, MR, MT, MR1)                                              \
    do {                                                                            \
        const int64_t nt_full = n_toks - n_toks % (MT);                             \
        int64_t r0 = 0;                                                             \
        for (; r0 + (MR) <= n_rows && nt_full > 0; r0 += (MR)) {                    \
            const char *wr = (const char *)w + (size_t)r0 * w_stride;               \
            for (int64_t t0 = 0; t0 < nt_full; t0 += (MT))                          \
                TILE(MR, MT, wr, (const char *)a + (size_t)t0 * a_stride,           \
                     out + (size_t)t0 * out_stride + (size_t)r0);                   \
        }                                                                           \
        for (; r0 < n_rows && nt_full > 0; r0++) {                                  \
            const char *wr = (const char *)w + (size_t)r0 * w_stride;               \
            for (int64_t t0 = 0; t0 < nt_full; t0 += (MT))                          \
                TILE(1, MT, wr, (const char *)a + (size_t)t0 * a_stride,            \
                     out + (size_t)t0 * out_stride + (size_t)r0);                   \
        }                                                                           \
        for (int64_t t0 = nt_full; t0 < n_toks; t0++) {                             \
            const char *at = (const char *)a + (size_t)t0 * a_stride;               \
            float *ot = out + (size_t)t0 * out_stride;                              \
            int64_t r1 = 0;                                                         \
            for (; r1 + (MR1) <= n_rows; r1 += (MR1))                               \
                TILE(MR1, 1, (const char *)w + (size_t)r1 * w_stride, at, ot + r1); \
            for (; r1 < n_rows; r1++)                                               \
                TILE(1, 1, (const char *)w + (size_t)r1 * w_stride, at, ot + r1);   \
        }                                                                           \
    } while (0)

#define MDOT_SIG                                                                                \
    (int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a, size_t a_stride, \
     int64_t n_toks, float *out, size_t out_stride)

/* Define name_dot and name_mdot for a float kind from a tile function
 * ftile(kind, nr, nt, n, w, ws, a, as, out, os) of the including file. */
#define FLOAT_KERNELS(name, kind, MR, MT, MR1)                       \
    static float name##_dot(int64_t n, const void *w, const void *a) \
    {                                                                \
        float r;                                                     \
        ftile(kind, 1, 1, n, w, 0, a, 0, &r, 0);                     \
        return r;                                                    \
    }                                                                \
    static void name##_mdot MDOT_SIG { MDOT_DRIVER(FTILE_CALL_##kind, MR, MT, MR1); }

#define FTILE_CALL(kind, nr, nt, wp, ap, op) \
    ftile(kind, nr, nt, n, wp, w_stride, ap, a_stride, op, out_stride)
#define FTILE_CALL_FK_F32(nr, nt, wp, ap, op) FTILE_CALL(FK_F32, nr, nt, wp, ap, op)
#define FTILE_CALL_FK_F16(nr, nt, wp, ap, op) FTILE_CALL(FK_F16, nr, nt, wp, ap, op)
#define FTILE_CALL_FK_BF16(nr, nt, wp, ap, op) FTILE_CALL(FK_BF16, nr, nt, wp, ap, op)

/*
 * Driver of the block formats' mdot: tiles of RL rows (one per vector lane;
 * the last tile repeats its last row in the spare lanes) by up to 4 tokens.
 * Tiles' row offsets go into 32-bit gather indices, so rows longer than
 * INT32_MAX / RL bytes (never seen in practice) take the one-row path.
 * GTILE(nt, w, nr, a, out) computes nr (<= RL) rows x nt tokens; DOT1 is the
 * file's vec_dot of the kind.
 */
#define QMDOT_DRIVER(GTILE, DOT1, RL)                                      \
    do {                                                                   \
        if (w_stride > (size_t)(INT32_MAX / (RL))) {                       \
            for (int64_t t0 = 0; t0 < n_toks; t0++)                        \
                for (int64_t r0 = 0; r0 < n_rows; r0++)                    \
                    out[(size_t)t0 * out_stride + (size_t)r0] =            \
                        DOT1(n, (const char *)w + (size_t)r0 * w_stride,   \
                             (const char *)a + (size_t)t0 * a_stride);     \
            break;                                                         \
        }                                                                  \
        for (int64_t r0 = 0; r0 < n_rows; r0 += (RL)) {                    \
            const char *wr = (const char *)w + (size_t)r0 * w_stride;      \
            const int nr = n_rows - r0 < (RL) ? (int)(n_rows - r0) : (RL); \
            int64_t t0 = 0;                                                \
            for (; t0 + 4 <= n_toks; t0 += 4)                              \
                GTILE(4, wr, nr, (const char *)a + (size_t)t0 * a_stride,  \
                      out + (size_t)t0 * out_stride + (size_t)r0);         \
            const char *at = (const char *)a + (size_t)t0 * a_stride;      \
            float *ot = out + (size_t)t0 * out_stride + (size_t)r0;        \
            switch (n_toks - t0) {                                         \
            case 3: GTILE(3, wr, nr, at, ot); break;                       \
            case 2: GTILE(2, wr, nr, at, ot); break;                       \
            case 1: GTILE(1, wr, nr, at, ot); break;                       \
            default: break;                                                \
            }                                                              \
        }                                                                  \
    } while (0)

/* Define name_dot and name_mdot for block kind k from the including file's
 * qdot1(k, n, w, a) and gtile(k, nt, n_blocks, w, ws, nr, a, as, out, os). */
#define QUANT_KERNELS(name, k, RL)                                                                 \
    static float name##_dot(int64_t n, const void *w, const void *a) { return qdot1(k, n, w, a); } \
    static void name##_mdot MDOT_SIG { QMDOT_DRIVER(name##_GTILE, name##_dot, RL); }

#define GTILE_CALL(k, nt, wp, nr, ap, op) \
    gtile(k, nt, n / INFERD_QK, wp, w_stride, nr, ap, a_stride, op, out_stride)
#define q4_0_GTILE(nt, wp, nr, ap, op) GTILE_CALL(QK_Q4_0, nt, wp, nr, ap, op)
#define q4_1_GTILE(nt, wp, nr, ap, op) GTILE_CALL(QK_Q4_1, nt, wp, nr, ap, op)
#define q5_0_GTILE(nt, wp, nr, ap, op) GTILE_CALL(QK_Q5_0, nt, wp, nr, ap, op)
#define q5_1_GTILE(nt, wp, nr, ap, op) GTILE_CALL(QK_Q5_1, nt, wp, nr, ap, op)
#define q8_0_GTILE(nt, wp, nr, ap, op) GTILE_CALL(QK_Q8_0, nt, wp, nr, ap, op)

/* ---- activation quantizers (ggml-cpu's x86 quantize_row_q8_0/q8_1) ------ */

/* One block of 32: amax, d = amax/127, multiplier 127/amax, round to
 * nearest even, saturate to int8; returns d unrounded, stores the q, and
 * the sum of the q in *out_sum. Same arithmetic as the scalar reference. */
XI float q8_act_block_avx2(const float *x, int8_t *qs, int *out_sum)
{
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
    m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
#define RN_EVEN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), RN_EVEN));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), RN_EVEN));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), RN_EVEN));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), RN_EVEN));
    /* The sum is taken after saturation to int8, as the scalar does. */
    __m256i p01 = _mm256_packs_epi32(i0, i1), p23 = _mm256_packs_epi32(i2, i3);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
#undef RN_EVEN
    _mm256_storeu_si256((__m256i *)qs, p);
    /* Sum of 32 int8: widen by maddubs against ones, then madd. */
    __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p);
    *out_sum = hsum_i32x8(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
    return d;
}

XI void q8_0_from_float_x86(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / INFERD_QK; i++) {
        int sum;
        float d = q8_act_block_avx2(src + i * INFERD_QK, b[i].qs, &sum);
        b[i].d = _cvtss_sh(d, 0);
    }
}

XI void q8_1_from_float_x86(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_1 *b = dst;
    for (int64_t i = 0; i < n / INFERD_QK; i++) {
        int sum;
        float d = q8_act_block_avx2(src + i * INFERD_QK, b[i].qs, &sum);
        b[i].d = _cvtss_sh(d, 0);
        b[i].s = _cvtss_sh(d * (float)sum, 0);
    }
}

/* ---- F16 / BF16 conversions --------------------------------------------- */

XI void f16_to_float_x86(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(h[i]);
}

XI void f16_from_float_x86(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), 0));
    for (; i < n; i++)
        h[i] = _cvtss_sh(src[i], 0);
}

XI void bf16_to_float_x86(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, fload8(FK_BF16, (const char *)h, i));
    for (; i < n; i++)
        dst[i] = inferd_bf16_to_f32(h[i]);
}

/* Round to nearest even; NaN kept quiet, as inferd_f32_to_bf16. */
XI void bf16_from_float_x86(const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    int64_t i = 0;
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int k = 0; k < 2; k++) {
            __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i + 8 * k));
            __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
            __m256i rnd = _mm256_srli_epi32(
                _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
            __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
            __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absm), inf);
            r[k] = _mm256_blendv_epi8(rnd, qnan, isnan);
        }
        __m256i p = _mm256_packus_epi32(r[0], r[1]);
        p = _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((__m256i *)(h + i), p);
    }
    for (; i < n; i++)
        h[i] = inferd_f32_to_bf16(src[i]);
}

/* ---- block dequantizers -------------------------------------------------- */

/* Low nibbles (elements 0..15) then high nibbles (16..31), as 32 bytes. */
XI __m256i nibbles32(const uint8_t *qs)
{
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0f));
}

/* Byte j = 0x10 where bit j of x is set. */
XI __m256i fifth_bits32v(uint32_t x)
{
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                            0x0202020202020202, 0x0303030303030303);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

XI uint32_t load_u32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

/* Byte j = 0x10 where bit j of the little-endian u32 at qh is set. */
XI __m256i fifth_bits32(const uint8_t *qh) { return fifth_bits32v(load_u32(qh)); }

/* 32 bytes (as int8) times d, plus m when add_m: the products are exact,
 * so this equals the scalar reference's multiply-then-add. */
XI void store_scaled32(float *dst, __m256i q, float d, float m, const int add_m)
{
    const __m256 dv = _mm256_set1_ps(d), mv = _mm256_set1_ps(m);
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    __m256 f[4] = {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
    };
    for (int k = 0; k < 4; k++) {
        __m256 v = _mm256_mul_ps(f[k], dv);
        if (add_m)
            v = _mm256_add_ps(v, mv);
        _mm256_storeu_ps(dst + 8 * k, v);
    }
}

XI void q4_0_to_float_x86(const void *src, float *dst, int64_t n)
{
    const inferd_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / INFERD_QK; i++) {
        __m256i q = _mm256_sub_epi8(nibbles32(b[i].qs), _mm256_set1_epi8(8));
        store_scaled32(dst + i * INFERD_QK, q, _cvtsh_ss(b[i].d), 0.0f, 0);
    }
}

XI void q4_1_to_float_x86(const void *src, float *dst, int64_t n)
{
    const inferd_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / INFERD_QK; i++)
        store_scaled32(dst + i * INFERD_QK, nibbles32(b[i].qs), _cvtsh_ss(b[i].d),
                       _cvtsh_ss(b[i].m), 1);
}

XI void q5_0_to_float_x86(const void *src, float *dst, int64_t n)
{
    const inferd_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / INFERD_QK; i++) {
        __m256i q = _mm256_or_si256(nibbles32(b[i].qs), fifth_bits32(b[i].qh));
        q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        store_scaled32(dst + i * INFERD_QK, q, _cvtsh_ss(b[i].d), 0.0f, 0);
    }
}

XI void q5_1_to_float_x86(const void *src, float *dst, int64_t n)
{
    const inferd_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / INFERD_QK; i++) {
        __m256i q = _mm256_or_si256(nibbles32(b[i].qs), fifth_bits32(b[i].qh));
        store_scaled32(dst + i * INFERD_QK, q, _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].m), 1);
    }
}

XI void q8_0_to_float_x86(const void *src, float *dst, int64_t n)
{
    const inferd_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / INFERD_QK; i++)
        store_scaled32(dst + i * INFERD_QK, _mm256_loadu_si256((const __m256i *)b[i].qs),
                       _cvtsh_ss(b[i].d), 0.0f, 0);
}

XI void q8_1_to_float_x86(const void *src, float *dst, int64_t n)
{
    const inferd_block_q8_1 *b = src;
    for (int64_t i = 0; i < n / INFERD_QK; i++)
        store_scaled32(dst + i * INFERD_QK, _mm256_loadu_si256((const __m256i *)b[i].qs),
                       _cvtsh_ss(b[i].d), 0.0f, 0);
}

/* ---- K-quants --------------------------------------------------------------- */

/* The eight 6-bit scales and mins of a Q4_K/Q5_K super-block (layout in
 * quant.h). */
XI void k_scales_mins(const uint8_t p[INFERD_K_SCALE_BYTES], int16_t sc[8], int16_t m[8])
{
    for (int s = 0; s < 4; s++) {
        sc[s] = (int16_t)(p[s] & 63);
        m[s] = (int16_t)(p[s + 4] & 63);
        sc[s + 4] = (int16_t)((p[s + 8] & 15) | (p[s] >> 6) << 4);
        m[s + 4] = (int16_t)((p[s + 8] >> 4) | (p[s + 4] >> 6) << 4);
    }
}

/* ---- block format descriptions (byte offsets inside a block) ------------ */

enum { QK_Q4_0, QK_Q4_1, QK_Q5_0, QK_Q5_1, QK_Q8_0 };

XI size_t qk_wbytes(const int k)
{
    return k == QK_Q4_0 ? 18 : k == QK_Q4_1 ? 20 : k == QK_Q5_0 ? 22 : k == QK_Q5_1 ? 24 : 34;
}
XI size_t qk_wqs(const int k) /* offset of qs */
{
    return k == QK_Q4_0 ? 2 : k == QK_Q4_1 ? 4 : k == QK_Q5_0 ? 6 : k == QK_Q5_1 ? 8 : 2;
}
XI size_t qk_wqh(const int k) /* offset of qh (5-bit formats) */ { return k == QK_Q5_0 ? 2 : 4; }
XI int qk_has_m(const int k) { return k == QK_Q4_1 || k == QK_Q5_1; }
XI int qk_is5(const int k) { return k == QK_Q5_0 || k == QK_Q5_1; }
/* Offset subtracted from the stored unsigned value (0 when none). */
XI int qk_off(const int k) { return k == QK_Q4_0 ? 8 : k == QK_Q5_0 ? 16 : 0; }
/* Activation block (Q8_1 for the formats with a minimum, else Q8_0). */
XI size_t qk_abytes(const int k) { return qk_has_m(k) ? 36 : 34; }
XI size_t qk_aqs(const int k) { return qk_has_m(k) ? 4 : 2; }

/* Weight block as 32 bytes in element order: for the nibble formats the
 * stored unsigned value (0..15, or 0..31 with the fifth bit), for Q8_0 the
 * signed quants. */
XI __m256i wblock32(const int k, const uint8_t *wb)
{
    if (k == QK_Q8_0)
        return _mm256_loadu_si256((const __m256i *)(wb + 2));
    __m256i q = nibbles32(wb + qk_wqs(k));
    if (qk_is5(k))
        q = _mm256_or_si256(q, fifth_bits32(wb + qk_wqh(k)));
    return q;
}

#endif
