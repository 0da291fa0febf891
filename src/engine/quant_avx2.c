/* AVX2 + FMA + F16C kernels (compiled with those flags, called only when
 * cpuid reports them). The 16 canonical lanes of quant_impl.h live in two
 * ymm accumulators per output (A: lanes 0-7, B: lanes 8-15). Block formats
 * use maddubs (u8 x s8 -> i16 pairs, exact here) and madd for the per-lane
 * integer sums, so results equal the scalar reference bit for bit.
 * Thread: any (no state). */
#include "quant_x86.h"

/* Tile shapes: rows x tokens for prompts, rows for a single token. With 16
 * ymm registers the accumulators and one step's operands must fit. */
#define F_MR 2
#define F_MT 3
#define F_MR1 4
#define Q_MR 2
#define Q_MT 2
#define Q_MR1 3

/* ---- F32 / F16 / BF16 ----------------------------------------------------- */

XI void ftile(const int kind, const int NR, const int NT, int64_t n, const char *w,
              size_t ws, const char *a, size_t as, float *out, size_t os)
{
    __m256 acc_a[TILE_R_MAX][TILE_T_MAX], acc_b[TILE_R_MAX][TILE_T_MAX];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++)
            acc_a[r][t] = acc_b[r][t] = _mm256_setzero_ps();
    const int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        __m256 wa[TILE_R_MAX], wb[TILE_R_MAX];
#pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            wa[r] = fload8(kind, w + (size_t)r * ws, i);
            wb[r] = fload8(kind, w + (size_t)r * ws, i + 8);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m256 xa = fload8(kind, a + (size_t)t * as, i);
            const __m256 xb = fload8(kind, a + (size_t)t * as, i + 8);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                acc_a[r][t] = _mm256_fmadd_ps(wa[r], xa, acc_a[r][t]);
                acc_b[r][t] = _mm256_fmadd_ps(wb[r], xb, acc_b[r][t]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const char *wr = w + (size_t)r * ws, *at = a + (size_t)t * as;
            float s = hsum8(_mm256_add_ps(acc_a[r][t], acc_b[r][t]));
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

typedef struct qacc {
    __m256 a[TILE_R_MAX][TILE_T_MAX];  /* canonical lanes 0-7 */
    __m256 b[TILE_R_MAX][TILE_T_MAX];  /* canonical lanes 8-15 */
    float summs[TILE_R_MAX][TILE_T_MAX];
} qacc;

/*
 * One step over the block pair (b, b+1) of an NR x NT tile; TWO is 0 for the
 * odd last block (its pair partner then contributes nothing: zero weights,
 * activations and scale, so fma leaves those lanes as they were).
 */
XI void qstep(const int k, const int NR, const int NT, const int TWO, int64_t b,
              const char *w, size_t ws, const char *a, size_t as, qacc *acc)
{
    const size_t wbs = qk_wbytes(k), abs_ = qk_abytes(k), aqs = qk_aqs(k);
    const int has_m = qk_has_m(k), off = qk_off(k);
    const __m256i ones16 = _mm256_set1_epi16(1);
    const __m256i offv = _mm256_set1_epi8((char)off);
    const __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);

    __m256i wa[TILE_R_MAX], wb[TILE_R_MAX];
    __m256 dw[TILE_R_MAX], dw1[TILE_R_MAX];
    float mw0[TILE_R_MAX], mw1[TILE_R_MAX];
#pragma GCC unroll 8
    for (int r = 0; r < NR; r++) {
        const uint8_t *w0 = (const uint8_t *)w + (size_t)r * ws + (size_t)b * wbs;
        const uint8_t *w1 = w0 + wbs;
        if (k == QK_Q8_0) {
            wa[r] = _mm256_loadu_si256((const __m256i *)(w0 + 2));
            wb[r] = TWO ? _mm256_loadu_si256((const __m256i *)(w1 + 2)) : _mm256_setzero_si256();
            dw[r] = _mm256_set1_ps(f16_scalar(w0));
            dw1[r] = _mm256_set1_ps(TWO ? f16_scalar(w1) : 0.0f);
        } else {
            const size_t qs = qk_wqs(k);
            const __m128i q0 = _mm_loadu_si128((const __m128i *)(w0 + qs));
            const __m128i q1 = TWO ? _mm_loadu_si128((const __m128i *)(w1 + qs)) : _mm_setzero_si128();
            const __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
            wa[r] = _mm256_and_si256(y, _mm256_set1_epi8(0x0f));
            wb[r] = _mm256_and_si256(_mm256_srli_epi16(y, 4), _mm256_set1_epi8(0x0f));
            if (qk_is5(k)) {
                const uint32_t h0 = load_u32(w0 + qk_wqh(k));
                const uint32_t h1 = TWO ? load_u32(w1 + qk_wqh(k)) : 0u;
                wa[r] = _mm256_or_si256(wa[r], fifth_bits32v((h0 & 0xffffu) | h1 << 16));
                wb[r] = _mm256_or_si256(wb[r], fifth_bits32v(h0 >> 16 | (h1 & 0xffff0000u)));
            }
            dw[r] = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(f16_pair(w0, TWO ? w1 : NULL)), idx);
        }
        mw0[r] = has_m ? f16_scalar(w0 + 2) : 0.0f;
        mw1[r] = has_m && TWO ? f16_scalar(w1 + 2) : 0.0f;
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) {
        const uint8_t *a0 = (const uint8_t *)a + (size_t)t * as + (size_t)b * abs_;
        const uint8_t *a1 = a0 + abs_;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(a0 + aqs));
        const __m256i x1 = TWO ? _mm256_loadu_si256((const __m256i *)(a1 + aqs)) : _mm256_setzero_si256();
        const float sa0 = has_m ? f16_scalar(a0 + 2) : 0.0f;
        const float sa1 = has_m && TWO ? f16_scalar(a1 + 2) : 0.0f;
        if (k == QK_Q8_0) {
            const __m256 da0 = _mm256_set1_ps(f16_scalar(a0));
            const __m256 da1 = _mm256_set1_ps(TWO ? f16_scalar(a1) : 0.0f);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                /* |w| * sign(a, w): maddubs pairs stay within i16. */
                __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wa[r], wa[r]),
                                                 _mm256_sign_epi8(x0, wa[r]));
                __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones16));
                acc->a[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da0), f, acc->a[r][t]);
                if (TWO) {
                    p = _mm256_maddubs_epi16(_mm256_sign_epi8(wb[r], wb[r]),
                                             _mm256_sign_epi8(x1, wb[r]));
                    f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones16));
                    acc->b[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw1[r], da1), f, acc->b[r][t]);
                }
            }
        } else {
            /* Low halves of both blocks, then high halves: the nibble layout. */
            const __m256i xa = _mm256_permute2x128_si256(x0, x1, 0x20);
            const __m256i xb = _mm256_permute2x128_si256(x0, x1, 0x31);
            const __m256i ca = off ? _mm256_maddubs_epi16(offv, xa) : _mm256_setzero_si256();
            const __m256i cb = off ? _mm256_maddubs_epi16(offv, xb) : _mm256_setzero_si256();
            const __m256 da = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(f16_pair(a0, TWO ? a1 : NULL)), idx);
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
                __m256i pa = _mm256_maddubs_epi16(wa[r], xa);
                __m256i pb = _mm256_maddubs_epi16(wb[r], xb);
                if (off) {
                    pa = _mm256_sub_epi16(pa, ca);
                    pb = _mm256_sub_epi16(pb, cb);
                }
                const __m256 s = _mm256_mul_ps(dw[r], da);
                acc->a[r][t] = _mm256_fmadd_ps(
                    s, _mm256_cvtepi32_ps(_mm256_madd_epi16(pa, ones16)), acc->a[r][t]);
                acc->b[r][t] = _mm256_fmadd_ps(
                    s, _mm256_cvtepi32_ps(_mm256_madd_epi16(pb, ones16)), acc->b[r][t]);
            }
        }
        if (has_m) {
#pragma GCC unroll 8
            for (int r = 0; r < NR; r++) {
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
            acc.a[r][t] = acc.b[r][t] = _mm256_setzero_ps();
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
            float s = hsum8(_mm256_add_ps(acc.a[r][t], acc.b[r][t]));
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

/* Out-of-line copies of the shared converters for the table. */
static void f16_to_float(const void *s, float *d, int64_t n) { f16_to_float_x86(s, d, n); }
static void f16_from_float(const float *s, void *d, int64_t n) { f16_from_float_x86(s, d, n); }
static void bf16_to_float(const void *s, float *d, int64_t n) { bf16_to_float_x86(s, d, n); }
static void bf16_from_float(const float *s, void *d, int64_t n) { bf16_from_float_x86(s, d, n); }
static void q4_0_to_float(const void *s, float *d, int64_t n) { q4_0_to_float_x86(s, d, n); }
static void q4_1_to_float(const void *s, float *d, int64_t n) { q4_1_to_float_x86(s, d, n); }
static void q5_0_to_float(const void *s, float *d, int64_t n) { q5_0_to_float_x86(s, d, n); }
static void q5_1_to_float(const void *s, float *d, int64_t n) { q5_1_to_float_x86(s, d, n); }
static void q8_0_to_float(const void *s, float *d, int64_t n) { q8_0_to_float_x86(s, d, n); }
static void q8_1_to_float(const void *s, float *d, int64_t n) { q8_1_to_float_x86(s, d, n); }
static void q8_0_from_float(const float *s, void *d, int64_t n) { q8_0_from_float_x86(s, d, n); }
static void q8_1_from_float(const float *s, void *d, int64_t n) { q8_1_from_float_x86(s, d, n); }

/* NULL members fall back to the scalar table (quant.c). */
const inferd_kernels inferd__kernels_avx2[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32, .vec_dot = f32_dot, .mdot = f32_mdot},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16, .to_float = f16_to_float,
                          .from_float = f16_from_float, .vec_dot = f16_dot,
                          .mdot = f16_mdot},
    [INFERD_DTYPE_BF16] = {.type = INFERD_DTYPE_BF16, .to_float = bf16_to_float,
                           .from_float = bf16_from_float, .vec_dot = bf16_dot,
                           .mdot = bf16_mdot},
    [INFERD_DTYPE_Q4_0] = {.type = INFERD_DTYPE_Q4_0, .to_float = q4_0_to_float,
                           .vec_dot = q4_0_dot, .mdot = q4_0_mdot},
    [INFERD_DTYPE_Q4_1] = {.type = INFERD_DTYPE_Q4_1, .to_float = q4_1_to_float,
                           .vec_dot = q4_1_dot, .mdot = q4_1_mdot},
    [INFERD_DTYPE_Q5_0] = {.type = INFERD_DTYPE_Q5_0, .to_float = q5_0_to_float,
                           .vec_dot = q5_0_dot, .mdot = q5_0_mdot},
    [INFERD_DTYPE_Q5_1] = {.type = INFERD_DTYPE_Q5_1, .to_float = q5_1_to_float,
                           .vec_dot = q5_1_dot, .mdot = q5_1_mdot},
    [INFERD_DTYPE_Q8_0] = {.type = INFERD_DTYPE_Q8_0, .to_float = q8_0_to_float,
                           .from_float = q8_0_from_float, .vec_dot = q8_0_dot,
                           .mdot = q8_0_mdot},
    [INFERD_DTYPE_Q8_1] = {.type = INFERD_DTYPE_Q8_1, .to_float = q8_1_to_float,
                           .from_float = q8_1_from_float},
};
