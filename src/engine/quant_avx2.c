/* AVX2 + FMA + F16C kernels (compiled with those flags, called only when
 * cpuid reports them). Float types: the 16 canonical lanes of quant_impl.h
 * live in two ymm accumulators per output (lanes 0-7 and 8-15). Block
 * formats: ggml-cpu's AVX2 arithmetic, maddubs (u8 x s8 -> i16 pairs, exact
 * here) and madd give the eight exact lane sums of a block, one ymm of f32
 * lanes per output takes them by one fma. Results equal the scalar
 * reference bit for bit. Thread: any (no state). */
#include "quant_x86.h"

/* Float tile shapes: rows x tokens for prompts, rows for a single token.
 * With 16 ymm registers the accumulators and one step's operands must fit. */
#define F_MR 2
#define F_MT 3
#define F_MR1 4

/* ---- F32 / F16 / BF16 ----------------------------------------------------- */

XI void ftile(const int kind, const int NR, const int NT, int64_t n, const char *w, size_t ws,
              const char *a, size_t as, float *out, size_t os)
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

/* Tile shapes of the block formats: rows x tokens for prompts, rows for a
 * single token. Each (row, token) output keeps one ymm: its eight lanes. */
#define Q_MR 2
#define Q_MT 2
#define Q_MR1 4

/* The exact integer products of a weight block y (wblock32) with activation
 * quants x, summed by four consecutive elements into 8 i32 lanes: lane l
 * holds elements 4l..4l+3, the canonical lanes of quant_impl.h. cx is
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

/* One output in the canonical order: per block, its eight lane sums into
 * eight f32 lanes by one fma each, d = dw * da (exact); then hsum8. */
XI float qdot1(const int k, int64_t n, const void *w, const void *a)
{
    const size_t wbytes = qk_wbytes(k), abytes = qk_abytes(k), aqs = qk_aqs(k);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        const uint8_t *wb = (const uint8_t *)w + (size_t)b * wbytes;
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * abytes;
        const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + aqs));
        const __m256i lanes = block_lanes(k, wblock32(k, wb), x, off_pairs(k, x));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_scalar(wb) * f16_scalar(ab)),
                              _mm256_cvtepi32_ps(lanes), acc);
        if (qk_has_m(k))
            summs = fmaf(f16_scalar(wb + 2), f16_scalar(ab + 2), summs);
    }
    return qk_has_m(k) ? hsum8(acc) + summs : hsum8(acc);
}

/*
 * NR rows by NT tokens, nb blocks, each output in qdot1's order: every
 * weight block is unpacked once for the NT tokens, every activation block
 * once for the NR rows.
 */
XI void block_tile(const int k, const int NR, const int NT, int64_t nb, const char *w, size_t ws,
                   const char *a, size_t as, float *out, size_t os)
{
    const size_t wbytes = qk_wbytes(k), abytes = qk_abytes(k), aqs = qk_aqs(k);
    const int has_m = qk_has_m(k);
    __m256 acc[TILE_R_MAX][TILE_T_MAX];
    float summs[TILE_R_MAX][TILE_T_MAX];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
    for (int t = 0; t < NT; t++) {
        acc[r][t] = _mm256_setzero_ps();
        summs[r][t] = 0.0f;
    }
    for (int64_t b = 0; b < nb; b++) {
        __m256i y[TILE_R_MAX];
        float dw[TILE_R_MAX], mw[TILE_R_MAX];
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *wb = (const uint8_t *)w + (size_t)r * ws + (size_t)b * wbytes;
            y[r] = wblock32(k, wb);
            dw[r] = f16_scalar(wb);
            mw[r] = has_m ? f16_scalar(wb + 2) : 0.0f;
            /* One token streams the weights: fetch the next tile's rows
             * into L2, every 64 bytes of progress. */
            if (NT == 1 && b % (int64_t)(64 / wbytes) == 0)
                _mm_prefetch((const char *)wb + (size_t)NR * ws, _MM_HINT_T1);
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *ab = (const uint8_t *)a + (size_t)t * as + (size_t)b * abytes;
            const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + aqs));
            const __m256i cx = off_pairs(k, x);
            const float da = f16_scalar(ab), sa = has_m ? f16_scalar(ab + 2) : 0.0f;
            UNROLL
            for (int r = 0; r < NR; r++) {
                const __m256i lanes = block_lanes(k, y[r], x, cx);
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw[r] * da), _mm256_cvtepi32_ps(lanes),
                                            acc[r][t]);
                if (has_m)
                    summs[r][t] = fmaf(mw[r], sa, summs[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
    for (int t = 0; t < NT; t++)
        out[(size_t)t * os + (size_t)r] = has_m ? hsum8(acc[r][t]) + summs[r][t] : hsum8(acc[r][t]);
}

/* name_dot and name_mdot of block kind k (mdot: MDOT_DRIVER's tiles). */
#define BLOCK_TILE_CALL(k, nr, nt, wp, ap, op) \
    block_tile(k, nr, nt, n / INFERD_QK, wp, w_stride, ap, a_stride, op, out_stride)
#define BLOCK_KERNELS(name, k)                                                                     \
    static float name##_dot(int64_t n, const void *w, const void *a) { return qdot1(k, n, w, a); } \
    static void name##_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows,             \
                            const void *a, size_t a_stride, int64_t n_toks, float *out,            \
                            size_t out_stride)                                                     \
    {                                                                                              \
        MDOT_DRIVER(name##_TILE, Q_MR, Q_MT, Q_MR1);                                               \
    }
#define q4_0_TILE(nr, nt, wp, ap, op) BLOCK_TILE_CALL(QK_Q4_0, nr, nt, wp, ap, op)
#define q4_1_TILE(nr, nt, wp, ap, op) BLOCK_TILE_CALL(QK_Q4_1, nr, nt, wp, ap, op)
#define q5_0_TILE(nr, nt, wp, ap, op) BLOCK_TILE_CALL(QK_Q5_0, nr, nt, wp, ap, op)
#define q5_1_TILE(nr, nt, wp, ap, op) BLOCK_TILE_CALL(QK_Q5_1, nr, nt, wp, ap, op)
#define q8_0_TILE(nr, nt, wp, ap, op) BLOCK_TILE_CALL(QK_Q8_0, nr, nt, wp, ap, op)

BLOCK_KERNELS(q4_0, QK_Q4_0)
BLOCK_KERNELS(q4_1, QK_Q4_1)
BLOCK_KERNELS(q5_0, QK_Q5_0)
BLOCK_KERNELS(q5_1, QK_Q5_1)
BLOCK_KERNELS(q8_0, QK_Q8_0)

/*
 * Q4_0 matrices of 8k rows, in the order of llama.cpp's repacked q4_0_8x8
 * kernels (quant_impl.h): one fma per block of the exact block sum. NR x NT
 * outputs (NR * NT <= 8) at a time: per block, each output's eight lane
 * sums (block_lanes) are added up exactly by a tree of hadds into one
 * vector, output p = t * NR + r in lane p, which takes one fma.
 */
XI __m256i hsum_i32_8x8(const __m256i v[8])
{
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    /* Lane j < 4 of g0 (g1): the low half's sum of v[j] (v[4 + j]); lane
     * 4 + j: the high half's. */
    const __m256i g0 = _mm256_hadd_epi32(h01, h23), g1 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20),
                            _mm256_permute2x128_si256(g0, g1, 0x31));
}

XI void q4_0_rows8_tile(const int NR, const int NT, int64_t nb, const char *w, size_t ws,
                        const char *a, size_t as, float *out, size_t os)
{
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i y[TILE_R_MAX], v[8];
        float dw[TILE_R_MAX], d[8];
        UNROLL
        for (int r = 0; r < NR; r++) {
            const uint8_t *wb = (const uint8_t *)w + (size_t)r * ws + (size_t)b * 18;
            y[r] = wblock32(QK_Q4_0, wb);
            dw[r] = f16_scalar(wb);
            if (NT == 1 && b % 3 == 0)
                _mm_prefetch((const char *)wb + (size_t)NR * ws, _MM_HINT_T1);
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *ab = (const uint8_t *)a + (size_t)t * as + (size_t)b * 34;
            const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + 2));
            const __m256i cx = off_pairs(QK_Q4_0, x);
            const float da = f16_scalar(ab);
            UNROLL
            for (int r = 0; r < NR; r++) {
                v[t * NR + r] = block_lanes(QK_Q4_0, y[r], x, cx);
                d[t * NR + r] = dw[r] * da; /* exact: two f16 values */
            }
        }
        UNROLL
        for (int p = NR * NT; p < 8; p++) {
            v[p] = _mm256_setzero_si256();
            d[p] = 0.0f;
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum_i32_8x8(v)), _mm256_loadu_ps(d), acc);
    }
    _Alignas(32) float res[8];
    _mm256_store_ps(res, acc);
    UNROLL
    for (int t = 0; t < NT; t++)
        UNROLL
    for (int r = 0; r < NR; r++)
        out[(size_t)t * os + (size_t)r] = res[t * NR + r];
}

static float q4_0_rows8_dot(int64_t n, const void *w, const void *a)
{
    float r;
    q4_0_rows8_tile(1, 1, n / INFERD_QK, w, 0, a, 0, &r, 0);
    return r;
}

#define q4_0_rows8_TILE(nr, nt, wp, ap, op) \
    q4_0_rows8_tile(nr, nt, n / INFERD_QK, wp, w_stride, ap, a_stride, op, out_stride)

static void q4_0_rows8_mdot MDOT_SIG { MDOT_DRIVER(q4_0_rows8_TILE, 4, 2, 8); }

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
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32,
                          .vec_dot = f32_dot,
                          .mdot = f32_mdot,
                          .vec_dot_gemv = f32_dot_gemv},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16,
                          .to_float = f16_to_float,
                          .from_float = f16_from_float,
                          .vec_dot = f16_dot,
                          .mdot = f16_mdot,
                          .vec_dot_gemv = f16_dot_gemv},
    [INFERD_DTYPE_BF16] = {.type = INFERD_DTYPE_BF16,
                           .to_float = bf16_to_float,
                           .from_float = bf16_from_float,
                           .vec_dot = bf16_dot,
                           .mdot = bf16_mdot},
    [INFERD_DTYPE_Q4_0] = {.type = INFERD_DTYPE_Q4_0,
                           .to_float = q4_0_to_float,
                           .vec_dot = q4_0_dot,
                           .mdot = q4_0_mdot,
                           .vec_dot_rows8 = q4_0_rows8_dot,
                           .mdot_rows8 = q4_0_rows8_mdot},
    [INFERD_DTYPE_Q4_1] = {.type = INFERD_DTYPE_Q4_1,
                           .to_float = q4_1_to_float,
                           .vec_dot = q4_1_dot,
                           .mdot = q4_1_mdot},
    [INFERD_DTYPE_Q5_0] = {.type = INFERD_DTYPE_Q5_0,
                           .to_float = q5_0_to_float,
                           .vec_dot = q5_0_dot,
                           .mdot = q5_0_mdot},
    [INFERD_DTYPE_Q5_1] = {.type = INFERD_DTYPE_Q5_1,
                           .to_float = q5_1_to_float,
                           .vec_dot = q5_1_dot,
                           .mdot = q5_1_mdot},
    [INFERD_DTYPE_Q8_0] = {.type = INFERD_DTYPE_Q8_0,
                           .to_float = q8_0_to_float,
                           .from_float = q8_0_from_float,
                           .vec_dot = q8_0_dot,
                           .mdot = q8_0_mdot},
    [INFERD_DTYPE_Q8_1] = {.type = INFERD_DTYPE_Q8_1,
                           .to_float = q8_1_to_float,
                           .from_float = q8_1_from_float},
    /* K-quants: quant_k_avx2.c. */
    [INFERD_DTYPE_Q4_K] = {.type = INFERD_DTYPE_Q4_K,
                           .to_float = inferd__q4_k_to_float_avx2,
                           .vec_dot = inferd__q4_k_dot_avx2,
                           .mdot = inferd__q4_k_mdot_avx2},
    [INFERD_DTYPE_Q5_K] = {.type = INFERD_DTYPE_Q5_K,
                           .to_float = inferd__q5_k_to_float_avx2,
                           .vec_dot = inferd__q5_k_dot_avx2,
                           .mdot = inferd__q5_k_mdot_avx2},
    [INFERD_DTYPE_Q6_K] = {.type = INFERD_DTYPE_Q6_K,
                           .to_float = inferd__q6_k_to_float_avx2,
                           .vec_dot = inferd__q6_k_dot_avx2,
                           .mdot = inferd__q6_k_mdot_avx2},
    [INFERD_DTYPE_Q8_K] = {.type = INFERD_DTYPE_Q8_K,
                           .to_float = inferd__q8_k_to_float_avx2,
                           .from_float = inferd__q8_k_quantize_avx2},
    /* Q2_K, Q3_K, IQ4_NL, IQ4_XS: quant_k2_avx2.c. */
    [INFERD_DTYPE_Q2_K] = {.type = INFERD_DTYPE_Q2_K,
                           .vec_dot = inferd__q2_k_dot_avx2,
                           .mdot = inferd__q2_k_mdot_avx2},
    [INFERD_DTYPE_Q3_K] = {.type = INFERD_DTYPE_Q3_K,
                           .vec_dot = inferd__q3_k_dot_avx2,
                           .mdot = inferd__q3_k_mdot_avx2},
    [INFERD_DTYPE_IQ4_NL] = {.type = INFERD_DTYPE_IQ4_NL,
                             .vec_dot = inferd__iq4_nl_dot_avx2,
                             .mdot = inferd__iq4_nl_mdot_avx2,
                             .vec_dot_gemv = inferd__iq4_nl_dot_gemv_avx2},
    [INFERD_DTYPE_IQ4_XS] = {.type = INFERD_DTYPE_IQ4_XS,
                             .vec_dot = inferd__iq4_xs_dot_avx2,
                             .mdot = inferd__iq4_xs_mdot_avx2},
};
