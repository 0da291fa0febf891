/* AVX-512 (F/BW/VL/DQ + VNNI) kernels, called only when cpuid reports them.
 * One zmm accumulator per output holds the 16 canonical lanes of
 * quant_impl.h. Block formats: one vpdpbusd per block pair, the weights as
 * unsigned bytes and their offset (8, 16, or 128 after Q8_0's sign flip)
 * removed exactly by starting the i32 accumulation at -off*sum(a); then
 * acc = fma(dw*da, lanes, acc). Results equal the scalar and AVX2 ones bit
 * for bit; the 32 registers allow larger tiles. Thread: any (no state). */
#include "quant_x86.h"

#define F_MR 4
#define F_MT 4
#define F_MR1 8
#define Q_MR 4
#define Q_MT 4
#define Q_MR1 8

/* ---- F32 / F16 / BF16 ----------------------------------------------------- */

XI __m512 fload16(const int kind, const char *p, int64_t i)
{
    if (kind == FK_F32)
        return _mm512_loadu_ps((const float *)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
    if (kind == FK_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

XI float hsum16(__m512 v)
{
    return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

XI void ftile(const int kind, const int NR, const int NT, int64_t n, const char *w,
              size_t ws, const char *a, size_t as, float *out, size_t os)
{
    __m512 acc[TILE_R_MAX][TILE_T_MAX];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++)
            acc[r][t] = _mm512_setzero_ps();
    const int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        __m512 wv[TILE_R_MAX];
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++)
            wv[r] = fload16(kind, w + (size_t)r * ws, i);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m512 xv = fload16(kind, a + (size_t)t * as, i);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const char *wr = w + (size_t)r * ws, *at = a + (size_t)t * as;
            float s = hsum16(acc[r][t]);
            for (int64_t i = n16; i < n; i++)
                s = fmaf(fload1(kind, wr, i), fload1(kind, at, i), s);
            out[(size_t)t * os + (size_t)r] = s;
        }
    }
}

FLOAT_KERNELS(f32, FK_F32, F_MR, F_MT, F_MR1)
FLOAT_KERNELS(f16, FK_F16, F_MR, F_MT, F_MR1)
FLOAT_KERNELS(bf16, FK_BF16, F_MR, F_MT, F_MR1)

/* ---- block formats -------------------------------------------------------- */

/* Scales of a block pair, (s0, s1) in lanes 0 and 1 of p, spread to the
 * kind's lane layout: Q8_0 [s0 x8, s1 x8], nibble formats [s0 x4, s1 x4,
 * s0 x4, s1 x4]. */
XI __m512 spread_scales(const int k, __m128 p)
{
    const __m512i idx = k == QK_Q8_0
        ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
        : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(p));
}

typedef struct qacc {
    __m512 v[TILE_R_MAX][TILE_T_MAX];
    float summs[TILE_R_MAX][TILE_T_MAX];
} qacc;

/*
 * One step over the block pair (b, b+1) of an NR x NT tile; TWO is 0 for the
 * odd last block, whose missing partner gets zero activations and scale, so
 * its lanes are left as they were.
 */
XI void qstep(const int k, const int NR, const int NT, const int TWO, int64_t b,
              const char *w, size_t ws, const char *a, size_t as, qacc *acc)
{
    const size_t wbs = qk_wbytes(k), abs_ = qk_abytes(k), aqs = qk_aqs(k);
    const int has_m = qk_has_m(k);
    const int off = k == QK_Q8_0 ? 0x80 : qk_off(k);

    __m512i wq[TILE_R_MAX];
    __m512 dw[TILE_R_MAX];
    float mw0[TILE_R_MAX], mw1[TILE_R_MAX];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        const uint8_t *w0 = (const uint8_t *)w + (size_t)r * ws + (size_t)b * wbs;
        const uint8_t *w1 = w0 + wbs;
        if (k == QK_Q8_0) {
            const __m256i lo = _mm256_loadu_si256((const __m256i *)(w0 + 2));
            const __m256i hi = TWO ? _mm256_loadu_si256((const __m256i *)(w1 + 2))
                                   : _mm256_setzero_si256();
            wq[r] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
                                     _mm512_set1_epi8((char)0x80));
        } else {
            const size_t qs = qk_wqs(k);
            const __m128i q0 = _mm_loadu_si128((const __m128i *)(w0 + qs));
            const __m128i q1 = TWO ? _mm_loadu_si128((const __m128i *)(w1 + qs))
                                   : _mm_setzero_si128();
            const __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
            __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1);
            z = _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
            if (qk_is5(k)) {
                const uint64_t h0 = load_u32(w0 + qk_wqh(k));
                const uint64_t h1 = TWO ? load_u32(w1 + qk_wqh(k)) : 0u;
                const __mmask64 m = (h0 & 0xffffu) | (h1 & 0xffffu) << 16 |
                                    (h0 >> 16) << 32 | (h1 >> 16) << 48;
                z = _mm512_or_si512(z, _mm512_maskz_mov_epi8(m, _mm512_set1_epi8(0x10)));
            }
            wq[r] = z;
        }
        dw[r] = spread_scales(k, f16_pair(w0, TWO ? w1 : NULL));
        mw0[r] = has_m ? f16_scalar(w0 + 2) : 0.0f;
        mw1[r] = has_m && TWO ? f16_scalar(w1 + 2) : 0.0f;
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) {
        const uint8_t *a0 = (const uint8_t *)a + (size_t)t * as + (size_t)b * abs_;
        const uint8_t *a1 = a0 + abs_;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(a0 + aqs));
        const __m256i x1 = TWO ? _mm256_loadu_si256((const __m256i *)(a1 + aqs))
                               : _mm256_setzero_si256();
        __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1);
        if (k != QK_Q8_0) /* low halves of both blocks, then high halves */
            x = _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0));
        const __m512i corr = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)off), x));
        const __m512 da = spread_scales(k, f16_pair(a0, TWO ? a1 : NULL));
        const float sa0 = has_m ? f16_scalar(a0 + 2) : 0.0f;
        const float sa1 = has_m && TWO ? f16_scalar(a1 + 2) : 0.0f;
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            const __m512i isum = off ? _mm512_dpbusd_epi32(corr, wq[r], x)
                                     : _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[r], x);
            acc->v[r][t] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], da), _mm512_cvtepi32_ps(isum),
                                           acc->v[r][t]);
            if (has_m) {
                acc->summs[r][t] = acc->summs[r][t] + mw0[r] * sa0;
                if (TWO)
                    acc->summs[r][t] = acc->summs[r][t] + mw1[r] * sa1;
            }
        }
    }
}

XI void qtile(const int k, const int NR, const int NT, int64_t nb, const char *w,
              size_t ws, const char *a, size_t as, float *out, size_t os)
{
    qacc acc;
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            acc.v[r][t] = _mm512_setzero_ps();
            acc.summs[r][t] = 0.0f;
        }
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2)
        qstep(k, NR, NT, 1, b, w, ws, a, as, &acc);
    if (b < nb)
        qstep(k, NR, NT, 0, b, w, ws, a, as, &acc);
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            float s = hsum16(acc.v[r][t]);
            if (qk_has_m(k))
                s = s + acc.summs[r][t];
            out[(size_t)t * os + (size_t)r] = s;
        }
}

QUANT_KERNELS(q4_0, QK_Q4_0, Q_MR, Q_MT, Q_MR1)
QUANT_KERNELS(q4_1, QK_Q4_1, Q_MR, Q_MT, Q_MR1)
QUANT_KERNELS(q5_0, QK_Q5_0, Q_MR, Q_MT, Q_MR1)
QUANT_KERNELS(q5_1, QK_Q5_1, Q_MR, Q_MT, Q_MR1)
QUANT_KERNELS(q8_0, QK_Q8_0, Q_MR, Q_MT, Q_MR1)

/* Only the dot products differ from AVX2; conversions fall back to it. */
const inferd_kernels inferd__kernels_avx512[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32, .vec_dot = f32_dot, .mdot = f32_mdot},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16, .vec_dot = f16_dot, .mdot = f16_mdot},
    [INFERD_DTYPE_BF16] = {.type = INFERD_DTYPE_BF16, .vec_dot = bf16_dot, .mdot = bf16_mdot},
    [INFERD_DTYPE_Q4_0] = {.type = INFERD_DTYPE_Q4_0, .vec_dot = q4_0_dot, .mdot = q4_0_mdot},
    [INFERD_DTYPE_Q4_1] = {.type = INFERD_DTYPE_Q4_1, .vec_dot = q4_1_dot, .mdot = q4_1_mdot},
    [INFERD_DTYPE_Q5_0] = {.type = INFERD_DTYPE_Q5_0, .vec_dot = q5_0_dot, .mdot = q5_0_mdot},
    [INFERD_DTYPE_Q5_1] = {.type = INFERD_DTYPE_Q5_1, .vec_dot = q5_1_dot, .mdot = q5_1_mdot},
    [INFERD_DTYPE_Q8_0] = {.type = INFERD_DTYPE_Q8_0, .vec_dot = q8_0_dot, .mdot = q8_0_mdot},
};
