/* AVX2 + FMA + F16C kernels of the K-quants (compiled with those flags,
 * called only when cpuid reports them). Elements in lanes, as ggml-cpu's
 * AVX2 kernels: each 32-element piece of a weight super-block is unpacked
 * to its stored values and 16-bit multipliers (the sub-block scales,
 * broadcast by vpshufb); maddubs (u8 x s8 -> i16 pairs, exact here) and
 * madd by the scales give the eight exact int32 lane sums of quant_impl.h,
 * which one fma per super-block adds to eight f32 lanes, so results equal
 * the scalar reference bit for bit. One token unpacks each piece where it
 * is used; several share one unpacked super-block. Also the Q8_K
 * activation quantizer and the dequantizers, equal to the scalar ones.
 * Thread: any (no state). */
#include "quant_x86.h"

#define QK_K INFERD_QK_K

enum { KQ_Q4, KQ_Q5, KQ_Q6 };

XI size_t k_block_bytes(const int kind)
{
    return kind == KQ_Q4   ? sizeof(inferd_block_q4_k)
           : kind == KQ_Q5 ? sizeof(inferd_block_q5_k)
                           : sizeof(inferd_block_q6_k);
}

XI __m256i bytes256(int v) { return _mm256_set1_epi8((char)v); }

/* The eight 6-bit scales (bytes 0..7) and mins (bytes 8..15) of a
 * Q4_K/Q5_K super-block, unpacked four at a time in 32-bit words (layout
 * in quant.h). */
XI __m128i q45_scales_mins(const uint8_t *packed)
{
    uint32_t u[3];
    memcpy(u, packed, sizeof(u));
    const uint32_t sc_lo = u[0] & 0x3f3f3f3fu, m_lo = u[1] & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 6) & 0x03030303u) << 4;
    return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
}

/* The per-block multipliers: for Q4_K/Q5_K the eight scales as 16-bit
 * words in both 128-bit lanes; for Q6_K the sixteen scales as words,
 * sc0..7 in both lanes (lo) and sc8..15 in both lanes (hi). */
typedef struct k_scales {
    __m256i lo, hi;
    __m128i mins; /* Q4_K/Q5_K: m0..7 as words */
} k_scales;

XI void k_scales_load(const int kind, const uint8_t *blk, k_scales *ks)
{
    if (kind == KQ_Q6) {
        const __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
        ks->lo = _mm256_permute2x128_si256(sc, sc, 0x00);
        ks->hi = _mm256_permute2x128_si256(sc, sc, 0x11);
        ks->mins = _mm_setzero_si128();
        return;
    }
    const __m256i sm = _mm256_cvtepu8_epi16(q45_scales_mins(blk + 4));
    ks->lo = ks->hi = _mm256_permute2x128_si256(sm, sm, 0x00);
    ks->mins = _mm256_extracti128_si256(sm, 1);
}

/* Word @p w of each 128-bit lane of @p v, broadcast through the lane:
 * lane 0 takes word w0, lane 1 word w1. */
XI __m256i words_bcast(__m256i v, int w0, int w1)
{
    const __m256i ctrl = _mm256_setr_m128i(_mm_set1_epi16((short)((2 * w0 + 1) << 8 | 2 * w0)),
                                           _mm_set1_epi16((short)((2 * w1 + 1) << 8 | 2 * w1)));
    return _mm256_shuffle_epi8(v, ctrl);
}

/* i16 multiplier of each maddubs pair of piece i (elements 32i..32i+31):
 * Q4_K/Q5_K sub-block i's scale; Q6_K sub-blocks 2i (pairs 0..7, lanes
 * 0..3) and 2i + 1 (pairs 8..15, lanes 4..7). */
XI __m256i k_piece_mul(const int kind, const k_scales *ks, int i)
{
    if (kind != KQ_Q6)
        return words_bcast(ks->lo, i, i);
    const int w = 2 * i % 8;
    return words_bcast(i < 4 ? ks->lo : ks->hi, w, w + 1);
}

/* Stored values (unsigned) of piece i of a super-block, in element order. */
XI __m256i k_piece(const int kind, const uint8_t *blk, int i)
{
    const __m256i low4 = bytes256(0x0f);
    if (kind == KQ_Q6) {
        /* Elements 128h + 32j + l: ql[64h + 32(j % 2) + l], low nibble for
         * j < 2, high for j >= 2; bits 4-5 from qh[32h + l] bits 2j, 2j+1
         * (masked before the 16-bit shifts, so they stay in their byte). */
        const int h = i / 4, j = i % 4;
        const __m256i l = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32 * (j % 2)));
        const __m256i hb = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
        const __m256i lo = _mm256_and_si256(j < 2 ? l : _mm256_srli_epi16(l, 4), low4);
        __m256i hi = _mm256_and_si256(hb, bytes256(0x03 << (2 * j)));
        hi = j < 2 ? _mm256_slli_epi16(hi, 4 - 2 * j) : j > 2 ? _mm256_srli_epi16(hi, 2) : hi;
        return _mm256_or_si256(lo, hi);
    }
    /* qs[32c + l]: element 64c + l low, 64c + 32 + l high; Q5_K's fifth bit
     * of piece i is bit i of qh[l]. */
    const uint8_t *qs = blk + (kind == KQ_Q5 ? 48 : 16);
    const __m256i b = _mm256_loadu_si256((const __m256i *)(qs + 32 * (i / 2)));
    __m256i v = _mm256_and_si256(i % 2 ? _mm256_srli_epi16(b, 4) : b, low4);
    if (kind == KQ_Q5) {
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 16));
        const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(qh, i), bytes256(1));
        v = _mm256_or_si256(v, _mm256_slli_epi16(bit, 4));
    }
    return v;
}

XI float k_d(const int kind, const uint8_t *blk)
{
    return f16_scalar(blk + (kind == KQ_Q6 ? 208 : 0));
}

XI float k_dmin(const int kind, const uint8_t *blk)
{
    return kind == KQ_Q6 ? 0.0f : f16_scalar(blk + 2);
}

/* The eight lane sums of one piece: maddubs pairs of the stored values
 * with the activation's 32 quants (u8 x s8: <= 2 * 63 * 128, no
 * saturation), for Q6_K minus the pairs of 32 * a (its offset, exact in
 * i16), then madd by the i16 scales: exact i32, lane k = elements 4k..4k+3. */
XI __m256i piece_lanes(const int kind, __m256i q, __m256i mul, const int8_t *x)
{
    const __m256i a = _mm256_loadu_si256((const __m256i *)x);
    __m256i p = _mm256_maddubs_epi16(q, a);
    if (kind == KQ_Q6)
        p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(bytes256(32), a));
    return _mm256_madd_epi16(p, mul);
}

/* The running sums of one output (quant_impl.h): eight f32 lanes, Q4_K's
 * four min lanes, Q5_K's summs. */
typedef struct k_sums {
    __m256 acc;
    __m128 acc_m;
    float summs;
} k_sums;

XI void k_sums_init(k_sums *st)
{
    st->acc = _mm256_setzero_ps();
    st->acc_m = _mm_setzero_ps();
    st->summs = 0.0f;
}

/* One super-block's float steps from its exact lane sums. */
XI void k_sums_add(const int kind, k_sums *st, __m256i lanes, const k_scales *ks, float dw,
                   float dminw, const inferd_block_q8_k *a)
{
    const float d = a->d * dw;
    st->acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), st->acc);
    if (kind == KQ_Q6)
        return;
    const float dmin = -a->d * dminw;
    /* q8s_s = bsums[2s] + bsums[2s + 1] (|q8s| <= 4096: exact in i16);
     * prod_p = m_2p * q8s_2p + m_2p+1 * q8s_2p+1. */
    const __m256i bs = _mm256_loadu_si256((const __m256i *)a->bsums);
    const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    const __m128i prod = _mm_madd_epi16(ks->mins, q8s);
    if (kind == KQ_Q4) {
        st->acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), st->acc_m);
        return;
    }
    __m128i t = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
    st->summs = fmaf(dmin, (float)_mm_cvtsi128_si32(t), st->summs);
}

XI float k_sums_result(const int kind, const k_sums *st)
{
    const float r = hsum8(st->acc);
    if (kind == KQ_Q5)
        return r + st->summs;
    if (kind == KQ_Q6)
        return r;
    __m128 m = _mm_add_ps(st->acc_m, _mm_movehl_ps(st->acc_m, st->acc_m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m)); /* (m0 + m2) + (m1 + m3) */
    return r + _mm_cvtss_f32(m);
}

/* One output: each piece unpacked where it is used. */
XI float k_dot(const int kind, int64_t n, const void *w, const void *a)
{
    const inferd_block_q8_k *ab = a;
    k_sums st;
    k_sums_init(&st);
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)w + (size_t)b * k_block_bytes(kind);
        k_scales ks;
        k_scales_load(kind, blk, &ks);
        __m256i lanes = _mm256_setzero_si256();
        UNROLL
        for (int i = 0; i < 8; i++)
            lanes =
                _mm256_add_epi32(lanes, piece_lanes(kind, k_piece(kind, blk, i),
                                                    k_piece_mul(kind, &ks, i), ab[b].qs + 32 * i));
        k_sums_add(kind, &st, lanes, &ks, k_d(kind, blk), k_dmin(kind, blk), &ab[b]);
    }
    return k_sums_result(kind, &st);
}

/* One weight super-block unpacked for several tokens. */
typedef struct k_unpacked {
    __m256i q[8];   /* stored values of piece i */
    __m256i mul[8]; /* its i16 multipliers */
    k_scales ks;
    float d, dmin;
} k_unpacked;

/* Tokens whose running sums one pass over a row keeps. */
#define K_PASS_TOKENS 8

/*
 * One token: k_dot per row. More: row by row, K_PASS_TOKENS tokens at a
 * time, each super-block unpacked once and used for each of them.
 */
XI void k_mdot(const int kind, int64_t n, const void *w, size_t w_stride, int64_t n_rows,
               const void *a, size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    if (n_toks == 1) {
        for (int64_t r = 0; r < n_rows; r++)
            out[r] = k_dot(kind, n, (const uint8_t *)w + (size_t)r * w_stride, a);
        return;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * w_stride;
        for (int64_t t0 = 0; t0 < n_toks; t0 += K_PASS_TOKENS) {
            const int nt = n_toks - t0 < K_PASS_TOKENS ? (int)(n_toks - t0) : K_PASS_TOKENS;
            k_sums st[K_PASS_TOKENS];
            for (int t = 0; t < nt; t++)
                k_sums_init(&st[t]);
            for (int64_t b = 0; b < n / QK_K; b++) {
                const uint8_t *blk = wr + (size_t)b * k_block_bytes(kind);
                k_unpacked u;
                k_scales_load(kind, blk, &u.ks);
                UNROLL
                for (int i = 0; i < 8; i++) {
                    u.q[i] = k_piece(kind, blk, i);
                    u.mul[i] = k_piece_mul(kind, &u.ks, i);
                }
                u.d = k_d(kind, blk);
                u.dmin = k_dmin(kind, blk);
                for (int t = 0; t < nt; t++) {
                    const char *at = (const char *)a + (size_t)(t0 + t) * a_stride;
                    const inferd_block_q8_k *ab = (const inferd_block_q8_k *)(const void *)at + b;
                    __m256i lanes = _mm256_setzero_si256();
                    UNROLL
                    for (int i = 0; i < 8; i++)
                        lanes = _mm256_add_epi32(
                            lanes, piece_lanes(kind, u.q[i], u.mul[i], ab->qs + 32 * i));
                    k_sums_add(kind, &st[t], lanes, &u.ks, u.d, u.dmin, ab);
                }
            }
            for (int t = 0; t < nt; t++)
                out[(size_t)(t0 + t) * out_stride + (size_t)r] = k_sums_result(kind, &st[t]);
        }
    }
}

float inferd__q4_k_dot_avx2(int64_t n, const void *w, const void *a)
{
    return k_dot(KQ_Q4, n, w, a);
}

float inferd__q5_k_dot_avx2(int64_t n, const void *w, const void *a)
{
    return k_dot(KQ_Q5, n, w, a);
}

float inferd__q6_k_dot_avx2(int64_t n, const void *w, const void *a)
{
    return k_dot(KQ_Q6, n, w, a);
}

void inferd__q4_k_mdot_avx2(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                            const void *a, size_t a_stride, int64_t n_toks, float *out,
                            size_t out_stride)
{
    k_mdot(KQ_Q4, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

void inferd__q5_k_mdot_avx2(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                            const void *a, size_t a_stride, int64_t n_toks, float *out,
                            size_t out_stride)
{
    k_mdot(KQ_Q5, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

void inferd__q6_k_mdot_avx2(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                            const void *a, size_t a_stride, int64_t n_toks, float *out,
                            size_t out_stride)
{
    k_mdot(KQ_Q6, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

/* ---- dequantizers ----------------------------------------------------------- */

/* dst[j] = ds * q[j] - ms for 32 unsigned bytes: a rounded product, then a
 * rounded difference, as the scalar reference. */
XI void store_affine32(float *dst, __m256i q, float ds, float ms)
{
    const __m256 dv = _mm256_set1_ps(ds), mv = _mm256_set1_ps(ms);
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part[k]));
        _mm256_storeu_ps(dst + 8 * k, _mm256_sub_ps(_mm256_mul_ps(f, dv), mv));
    }
}

XI void q45_k_to_float(const int kind, const void *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)src + (size_t)b * k_block_bytes(kind);
        int16_t sc[8], m[8];
        k_scales_mins(blk + 4, sc, m);
        const float d = k_d(kind, blk), dmin = k_dmin(kind, blk);
        UNROLL
        for (int s = 0; s < 8; s++)
            store_affine32(dst + b * QK_K + 32 * s, k_piece(kind, blk, s), d * (float)sc[s],
                           dmin * (float)m[s]);
    }
}

void inferd__q4_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    q45_k_to_float(KQ_Q4, src, dst, n);
}

void inferd__q5_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    q45_k_to_float(KQ_Q5, src, dst, n);
}

/* (d * sc) * (q - 32), both products rounded. */
void inferd__q6_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const inferd_block_q6_k *blocks = src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)&blocks[b];
        const float d = k_d(KQ_Q6, blk);
        UNROLL
        for (int s = 0; s < 16; s++) {
            const __m256i piece = k_piece(KQ_Q6, blk, s / 2);
            const __m128i q =
                s % 2 ? _mm256_extracti128_si256(piece, 1) : _mm256_castsi256_si128(piece);
            const __m128i qo = _mm_sub_epi8(q, _mm_set1_epi8(32));
            const __m256 dv = _mm256_set1_ps(d * (float)blocks[b].scales[s]);
            float *o = dst + b * QK_K + 16 * s;
            _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qo)), dv));
            _mm256_storeu_ps(
                o + 8,
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(qo, 8))), dv));
        }
    }
}

void inferd__q8_k_to_float_avx2(const void *src, float *dst, int64_t n)
{
    const inferd_block_q8_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const __m256 dv = _mm256_set1_ps(b[i].d);
        for (int j = 0; j < QK_K; j += 8) {
            const __m128i q = _mm_loadl_epi64((const __m128i *)(b[i].qs + j));
            _mm256_storeu_ps(dst + i * QK_K + j,
                             _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
        }
    }
}

/* ---- Q8_K activation quantizer (quantize_row_q8_K_ref) ------------------- */

/* inferd__nearest_int on 8 lanes: adding 1.5 * 2^23 and reading the low
 * mantissa bits, for any input; then capped at 127 and reduced to its low
 * byte (the scalar's store to int8), as 0..255 in each i32 lane. */
XI __m256i q8_k_levels(__m256 x, __m256 iscale)
{
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(iscale, x), _mm256_set1_ps(12582912.0f));
    __m256i v = _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007fffff));
    v = _mm256_sub_epi32(v, _mm256_set1_epi32(0x00400000));
    v = _mm256_min_epi32(v, _mm256_set1_epi32(127));
    return _mm256_and_si256(v, _mm256_set1_epi32(0xff));
}

void inferd__q8_k_quantize_avx2(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_k *blocks = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        inferd_block_q8_k *b = &blocks[i];
        /* amax, skipping NaN as the scalar's `>` does: maxps returns its
         * second operand when either is NaN. */
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8)
            m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), m);
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (amax == 0) {
            memset(b, 0, sizeof(*b));
            continue;
        }
        /* max: the first element whose magnitude is amax, with its sign. */
        float max = 0;
        const __m256 av = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            const __m256 eq =
                _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), av, _CMP_EQ_OQ);
            const int mask = _mm256_movemask_ps(eq);
            if (mask) {
                max = x[j + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 is = _mm256_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 32) {
            const __m256i v0 = q8_k_levels(_mm256_loadu_ps(x + j), is);
            const __m256i v1 = q8_k_levels(_mm256_loadu_ps(x + j + 8), is);
            const __m256i v2 = q8_k_levels(_mm256_loadu_ps(x + j + 16), is);
            const __m256i v3 = q8_k_levels(_mm256_loadu_ps(x + j + 24), is);
            /* Values are 0..255: the unsigned packs do not saturate. */
            __m256i p =
                _mm256_packus_epi16(_mm256_packus_epi32(v0, v1), _mm256_packus_epi32(v2, v3));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(b->qs + j), p);
            /* Sums of 16: bytes + 128 are unsigned, summed by 8 with sad. */
            const __m256i s = _mm256_sad_epu8(_mm256_xor_si256(p, _mm256_set1_epi8((char)0x80)),
                                              _mm256_setzero_si256());
            const __m256i s2 = _mm256_add_epi64(s, _mm256_srli_si256(s, 8));
            b->bsums[j / 16] = (int16_t)(_mm256_extract_epi32(s2, 0) - 16 * 128);
            b->bsums[j / 16 + 1] = (int16_t)(_mm256_extract_epi32(s2, 4) - 16 * 128);
        }
        b->d = 1 / iscale;
    }
}
