/* AVX2 + FMA + F16C kernels (compiled with those flags, called only when
 * cpuid reports them). Float types: the 16 canonical lanes of quant_impl.h
 * live in two ymm accumulators per output (lanes 0-7 and 8-15). Block
 * formats: maddubs (u8 x s8 -> i16 pairs, exact here) and madd give exact
 * block sums, with one weight row per ymm lane in the tiles. Results equal
 * the scalar reference bit for bit. Thread: any (no state). */
#include "quant_x86.h"

/* Float tile shapes: rows x tokens for prompts, rows for a single token.
 * With 16 ymm registers the accumulators and one step's operands must fit. */
#define F_MR 2
#define F_MT 3
#define F_MR1 4

/* ---- F32 / F16 / BF16 ----------------------------------------------------- */

XI void ftile(const int kind, const int NR, const int NT, int64_t n, const char *w,
              size_t ws, const char *a, size_t as, float *out, size_t os)
{
    __m256 acc_a[TILE_R_MAX][TILE_T_MAX], acc_b[TILE_R_MAX][TILE_T_MAX];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
        for (int t = 0; t < NT; t++)
            acc_a[r][t] = acc_b[r][t] = _mm256_setzero_ps();
    const int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        __m256 wa[TILE_R_MAX], wb[TILE_R_MAX];
        UNROLL
        for (int r = 0; r < NR; r++) {
            wa[r] = fload8(kind, w + (size_t)r * ws, i);
            wb[r] = fload8(kind, w + (size_t)r * ws, i + 8);
            /* One token streams the weights: fetch the next tile's rows
             * into L2 (the hardware prefetcher loses track of many
             * interleaved row streams). */
            if (NT == 1 && ((size_t)i * fsize(kind)) % 64 == 0)
                _mm_prefetch(w + (size_t)(r + NR) * ws + (size_t)i * fsize(kind), _MM_HINT_T1);
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const __m256 xa = fload8(kind, a + (size_t)t * as, i);
            const __m256 xb = fload8(kind, a + (size_t)t * as, i + 8);
            UNROLL
            for (int r = 0; r < NR; r++) {
                acc_a[r][t] = _mm256_fmadd_ps(wa[r], xa, acc_a[r][t]);
                acc_b[r][t] = _mm256_fmadd_ps(wb[r], xb, acc_b[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++) {
        UNROLL
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

/* Rows per tile of the block formats: one per ymm lane. */
#define Q_RL 8

/* The exact integer products of a weight block y (wblock32) with activation
 * quants x, summed by four consecutive elements into 8 i32 lanes. cx is
 * off * x summed in pairs (maddubs), subtracted in i16 where exact. */
XI __m256i block_lanes(const int k, __m256i y, __m256i x, __m256i cx)
{
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i p;
    if (k == QK_Q8_0) {
        /* |w| * sign(a, w): pairs stay within i16, as |w| <= 128 and
         * |a| <= 127 (the quantizer only gives -128 for a NaN or infinite
         * input, whose result is not finite anyway). */
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(y, y), _mm256_sign_epi8(x, y));
    } else {
        p = _mm256_maddubs_epi16(y, x);
        if (qk_off(k))
            p = _mm256_sub_epi16(p, cx);
    }
    return _mm256_madd_epi16(p, ones16);
}

XI __m256i off_pairs(const int k, __m256i x)
{
    return qk_off(k) ? _mm256_maddubs_epi16(_mm256_set1_epi8((char)qk_off(k)), x)
                     : _mm256_setzero_si256();
}

/* One output: the canonical block chain. */
XI float qdot1(const int k, int64_t n, const void *w, const void *a)
{
    const size_t wbs = qk_wbytes(k), abs_ = qk_abytes(k), aqs = qk_aqs(k);
    float acc = 0.0f, summs = 0.0f;
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        const uint8_t *wb = (const uint8_t *)w + (size_t)b * wbs;
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * abs_;
        const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + aqs));
        const int32_t isum = hsum_i32x8(block_lanes(k, wblock32(k, wb), x, off_pairs(k, x)));
        acc = fmaf(f16_scalar(wb) * f16_scalar(ab), (float)isum, acc);
        if (qk_has_m(k))
            summs = summs + f16_scalar(wb + 2) * f16_scalar(ab + 2);
    }
    return qk_has_m(k) ? acc + summs : acc;
}

/* Sums of the 8 lanes of each v[r], as lane r. */
XI __m256i reduce_8x8(const __m256i v[8])
{
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i lo = _mm256_hadd_epi32(h01, h23), hi = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                            _mm256_permute2x128_si256(lo, hi, 0x31));
}

/* The low 16 bits (hi16 = 0) or high 16 bits of each i32 lane as f16 -> f32. */
XI __m256 half_lanes_to_f32(__m256i g, const int hi16)
{
    const __m256i sel = hi16
        ? _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1,
                           2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1)
        : _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                           0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i p = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(g, sel), 0x08);
    return _mm256_cvtph_ps(_mm256_castsi256_si128(p));
}

/*
 * nr (<= 8) rows, one per lane, by NT (<= 4) tokens, nb blocks: per block,
 * the 8 rows' lane sums reduced to one exact i32 per row, then one fma per
 * row and token in the canonical chain. Spare lanes repeat the last row.
 */
XI void gtile(const int k, const int NT, int64_t nb, const char *w, size_t ws, int nr,
              const char *a, size_t as, float *out, size_t os)
{
    const size_t wbs = qk_wbytes(k), abs_ = qk_abytes(k), aqs = qk_aqs(k);
    const int has_m = qk_has_m(k);
    const uint8_t *rp[Q_RL];
    int32_t offs[Q_RL];
    for (int r = 0; r < Q_RL; r++) {
        const int rr = r < nr ? r : nr - 1;
        rp[r] = (const uint8_t *)w + (size_t)rr * ws;
        offs[r] = (int32_t)((size_t)rr * ws);
    }
    const __m256i gidx = _mm256_loadu_si256((const __m256i *)offs);
    __m256 acc[4], summs[4];
    UNROLL
    for (int t = 0; t < NT; t++)
        acc[t] = summs[t] = _mm256_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        __m256i y[Q_RL];
        /* One token streams the weights: fetch the next tile's rows into L2,
         * every 64 bytes of progress. */
        UNROLL
        for (int r = 0; r < Q_RL; r++) {
            y[r] = wblock32(k, rp[r] + (size_t)b * wbs);
            if (NT == 1 && b % (int64_t)(64 / wbs) == 0)
                _mm_prefetch((const char *)rp[r] + Q_RL * ws + (size_t)b * wbs, _MM_HINT_T1);
        }
        const __m256i g = _mm256_i32gather_epi32((const int *)(w + (size_t)b * wbs), gidx, 1);
        const __m256 dw = half_lanes_to_f32(g, 0);
        const __m256 mw = has_m ? half_lanes_to_f32(g, 1) : _mm256_setzero_ps();
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *ab = (const uint8_t *)a + (size_t)t * as + (size_t)b * abs_;
            const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + aqs));
            const __m256i cx = off_pairs(k, x);
            __m256i v[Q_RL];
            UNROLL
            for (int r = 0; r < Q_RL; r++)
                v[r] = block_lanes(k, y[r], x, cx);
            const __m256 f = _mm256_cvtepi32_ps(reduce_8x8(v));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(f16_scalar(ab))), f, acc[t]);
            if (has_m)
                summs[t] = _mm256_add_ps(summs[t],
                                         _mm256_mul_ps(mw, _mm256_set1_ps(f16_scalar(ab + 2))));
        }
    }
    UNROLL
    for (int t = 0; t < NT; t++) {
        float tmp[Q_RL];
        _mm256_storeu_ps(tmp, has_m ? _mm256_add_ps(acc[t], summs[t]) : acc[t]);
        for (int r = 0; r < nr; r++)
            out[(size_t)t * os + (size_t)r] = tmp[r];
    }
}

QUANT_KERNELS(q4_0, QK_Q4_0, Q_RL)
QUANT_KERNELS(q4_1, QK_Q4_1, Q_RL)
QUANT_KERNELS(q5_0, QK_Q5_0, Q_RL)
QUANT_KERNELS(q5_1, QK_Q5_1, Q_RL)
QUANT_KERNELS(q8_0, QK_Q8_0, Q_RL)

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
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32, .vec_dot = f32_dot, .mdot = f32_mdot,
                          .vec_dot_gemv = f32_dot_gemv},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16, .to_float = f16_to_float,
                          .from_float = f16_from_float, .vec_dot = f16_dot,
                          .mdot = f16_mdot, .vec_dot_gemv = f16_dot_gemv},
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
    /* K-quants: quant_k_avx2.c. */
    [INFERD_DTYPE_Q4_K] = {.type = INFERD_DTYPE_Q4_K, .to_float = inferd__q4_k_to_float_avx2,
                           .vec_dot = inferd__q4_k_dot_avx2, .mdot = inferd__q4_k_mdot_avx2},
    [INFERD_DTYPE_Q5_K] = {.type = INFERD_DTYPE_Q5_K, .to_float = inferd__q5_k_to_float_avx2,
                           .vec_dot = inferd__q5_k_dot_avx2, .mdot = inferd__q5_k_mdot_avx2},
    [INFERD_DTYPE_Q6_K] = {.type = INFERD_DTYPE_Q6_K, .to_float = inferd__q6_k_to_float_avx2,
                           .vec_dot = inferd__q6_k_dot_avx2, .mdot = inferd__q6_k_mdot_avx2},
    [INFERD_DTYPE_Q8_K] = {.type = INFERD_DTYPE_Q8_K, .to_float = inferd__q8_k_to_float_avx2,
                           .from_float = inferd__q8_k_quantize_avx2},
    /* Q2_K, Q3_K, IQ4_NL, IQ4_XS: quant_k2_avx2.c. */
    [INFERD_DTYPE_Q2_K] = {.type = INFERD_DTYPE_Q2_K, .vec_dot = inferd__q2_k_dot_avx2,
                           .mdot = inferd__q2_k_mdot_avx2},
    [INFERD_DTYPE_Q3_K] = {.type = INFERD_DTYPE_Q3_K, .vec_dot = inferd__q3_k_dot_avx2,
                           .mdot = inferd__q3_k_mdot_avx2},
    [INFERD_DTYPE_IQ4_NL] = {.type = INFERD_DTYPE_IQ4_NL, .vec_dot = inferd__iq4_nl_dot_avx2,
                             .mdot = inferd__iq4_nl_mdot_avx2,
                             .vec_dot_gemv = inferd__iq4_nl_dot_gemv_avx2},
    [INFERD_DTYPE_IQ4_XS] = {.type = INFERD_DTYPE_IQ4_XS, .vec_dot = inferd__iq4_xs_dot_avx2,
                             .mdot = inferd__iq4_xs_mdot_avx2},
};
