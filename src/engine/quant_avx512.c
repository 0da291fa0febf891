/* AVX-512 (F/BW/VL/DQ + VNNI) kernels, called only when cpuid reports them.
 * Float types: one zmm accumulator per output holds the 16 canonical lanes
 * of quant_impl.h. Block formats: vpdpbusd with the weights as unsigned
 * bytes, their offset (8, 16, or 128 after Q8_0's sign flip) removed
 * exactly by starting the i32 sums at -off * sum(a); generation tiles put
 * one weight row per lane, prompt panels one token per lane. Results equal
 * the scalar and AVX2 ones bit for bit. Thread: any (no state). */
#include "quant_avx512.h"

/* Float tile shapes: rows x tokens for prompts, rows for a single token. */
#define F_MR 4
#define F_MT 4
#define F_MR1 4

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

XI void ftile(const int kind, const int NR, const int NT, int64_t n, const char *w, size_t ws,
              const char *a, size_t as, float *out, size_t os)
{
    __m512 acc[TILE_R_MAX][TILE_T_MAX];
    UNROLL
    for (int r = 0; r < NR; r++)
        UNROLL
    for (int t = 0; t < NT; t++)
        acc[r][t] = _mm512_setzero_ps();
    const int64_t n16 = n & ~(int64_t)15;
    for (int64_t i = 0; i < n16; i += 16) {
        __m512 wv[TILE_R_MAX];
        UNROLL
        for (int r = 0; r < NR; r++) {
            wv[r] = fload16(kind, w + (size_t)r * ws, i);
            /* One token streams the weights: fetch the next tile's rows
             * into L2 (the hardware prefetcher loses track of many
             * interleaved row streams). */
            if (NT == 1 && ((size_t)i * fsize(kind)) % 64 == 0)
                _mm_prefetch(w + (size_t)(r + NR) * ws + (size_t)i * fsize(kind), _MM_HINT_T1);
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const __m512 xv = fload16(kind, a + (size_t)t * as, i);
            UNROLL
            for (int r = 0; r < NR; r++)
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    UNROLL
    for (int r = 0; r < NR; r++) {
        UNROLL
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

#define GEN_ROWS 16  /* rows per generation tile, two per zmm */
#define GEN_TOKENS 2 /* tokens per generation tile at most (8 zmm each) */
#define PANEL_ROWS 2 /* rows per panel tile (8 zmm each) */
#define P_LANES 16   /* tokens per panel, one per lane */

/* Weight block as 32 unsigned bytes in element order (Q8_0: w + 128). */
XI __m256i wblock32_u8(const int k, const uint8_t *wb)
{
    if (k == QK_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wb + 2)),
                                _mm256_set1_epi8((char)0x80));
    __m256i q = nibbles32(wb + qk_wqs(k));
    if (qk_is5(k))
        q = _mm256_or_si256(
            q, _mm256_maskz_mov_epi8(load_u32(wb + qk_wqh(k)), _mm256_set1_epi8(0x10)));
    return q;
}

/* What the unsigned weight bytes carry above the quant: 8, 16, 128 or 0. */
XI int u8_offset(const int k) { return k == QK_Q8_0 ? 0x80 : qk_off(k); }

/* The eight canonical lane sums of one block (lane l: elements 4l..4l+3):
 * vpdpbusd of the unsigned weight bytes with the activation quants x,
 * started at -off times each lane's sum of x, so the offset comes off
 * exactly for any x. */
XI __m256i block_lanes_u8(const int k, __m256i wu8, __m256i x)
{
    __m256i c = _mm256_setzero_si256();
    if (u8_offset(k))
        c = _mm256_sub_epi32(c, _mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                    _mm256_set1_epi8((char)u8_offset(k)), x));
    return _mm256_dpbusd_epi32(c, wu8, x);
}

/* One output in the canonical order: per block, the eight lane sums into
 * eight f32 lanes by one fma each with d = dw * da (exact); then hsum8. */
XI float qdot1(const int k, int64_t n, const void *w, const void *a)
{
    const size_t wbytes = qk_wbytes(k), abytes = qk_abytes(k), aqs = qk_aqs(k);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        const uint8_t *wb = (const uint8_t *)w + (size_t)b * wbytes;
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * abytes;
        const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + aqs));
        const __m256i lanes = block_lanes_u8(k, wblock32_u8(k, wb), x);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_scalar(wb) * f16_scalar(ab)),
                              _mm256_cvtepi32_ps(lanes), acc);
        if (qk_has_m(k))
            summs = fmaf(f16_scalar(wb + 2), f16_scalar(ab + 2), summs);
    }
    return qk_has_m(k) ? hsum8(acc) + summs : hsum8(acc);
}

/*
 * Generation tiles: 16 rows by up to two tokens, elements in lanes as in
 * vec_dot. Per block, row pair (2p, 2p+1) shares a zmm: Q8_0 as [row 2p's
 * 32 bytes, row 2p+1's] against the token's quants [a, a]; the nibble
 * formats as 128-bit lanes [2p lo, 2p+1 lo, 2p hi, 2p+1 hi] (lo = elements
 * 0..15) against [a lo, a lo, a hi, a hi]. Each dword of the vpdpbusd
 * result is then one canonical lane of one row, and its own f32
 * accumulator takes it by one fma with that row's d (pair_scales).
 */
XI __m512i weights_pair(const int k, const uint8_t *w0, const uint8_t *w1)
{
    if (k == QK_Q8_0) {
        const __m512i v = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w0 + 2))),
            _mm256_loadu_si256((const __m256i *)(w1 + 2)), 1);
        return _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
    }
    const size_t qs = qk_wqs(k);
    const __m256i y =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w0 + qs))),
                                _mm_loadu_si128((const __m128i *)(w1 + qs)), 1);
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1);
    z = _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
    if (qk_is5(k)) {
        const uint64_t h0 = load_u32(w0 + qk_wqh(k)), h1 = load_u32(w1 + qk_wqh(k));
        const __mmask64 m =
            (h0 & 0xffffu) | (h1 & 0xffffu) << 16 | (h0 >> 16) << 32 | (h1 >> 16) << 48;
        z = _mm512_or_si512(z, _mm512_maskz_mov_epi8(m, _mm512_set1_epi8(0x10)));
    }
    return z;
}

/* An f16 field of rows 2p (at @p w0) and 2p+1 (at @p w1) widened and spread
 * over the dwords of a pair vector that belong to each row. */
XI __m512 pair_scales(const int k, const uint8_t *w0, const uint8_t *w1)
{
    uint16_t h0, h1;
    memcpy(&h0, w0, 2);
    memcpy(&h1, w1, 2);
    const __mmask16 second = k == QK_Q8_0 ? 0xff00 : 0xf0f0;
    return _mm512_cvtph_ps(_mm256_mask_blend_epi16(second, _mm256_set1_epi16((short)h0),
                                                   _mm256_set1_epi16((short)h1)));
}

/* Dword of a pair vector that holds row 2p + 1's result after pair_hsum8
 * (row 2p's is dword 0). */
XI int pair_second(const int k) { return k == QK_Q8_0 ? 8 : 4; }

/* The activation block's quants laid out against a pair vector. */
XI __m512i act_pair(const int k, const uint8_t *qs)
{
    const __m512i x = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)qs));
    return k == QK_Q8_0 ? _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(1, 0, 1, 0))
                        : _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(1, 1, 0, 0));
}

/* hsum8 of each row's eight lanes of a pair vector, in ggml's order
 * ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): lanes l and l+4 of a row sit in
 * 128-bit lanes two apart (nibble formats) or adjacent (Q8_0), lanes
 * 0..3 in order within them. */
XI __m512 pair_hsum8(const int k, __m512 v)
{
    v = _mm512_add_ps(v, k == QK_Q8_0 ? _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1))
                                      : _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* nr (<= 16) rows by NT (<= GEN_TOKENS) tokens, nb blocks; the spare row
 * slots repeat the last row. Every output in qdot1's order. */
XI void gen_tile(const int k, const int NT, int64_t nb, const char *w, size_t ws, int nr,
                 const char *a, size_t as, float *out, size_t os)
{
    const size_t wbytes = qk_wbytes(k), abytes = qk_abytes(k), aqs = qk_aqs(k);
    const int has_m = qk_has_m(k), off = u8_offset(k);
    const uint8_t *rp[GEN_ROWS];
    for (int r = 0; r < GEN_ROWS; r++)
        rp[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
    /* Per (token, pair): the rows' lanes, and Q4_1/Q5_1's summs spread as
     * the scales are (every dword of a row holds the same value). */
    __m512 acc[GEN_TOKENS][GEN_ROWS / 2], summs[GEN_TOKENS][GEN_ROWS / 2];
    UNROLL
    for (int t = 0; t < NT; t++)
        UNROLL
    for (int p = 0; p < GEN_ROWS / 2; p++)
        acc[t][p] = summs[t][p] = _mm512_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        __m512i z[GEN_ROWS / 2];
        __m512 dw[GEN_ROWS / 2], mw[GEN_ROWS / 2];
        /* One token streams the weights: fetch the next tile's rows into L2,
         * every 64 bytes of progress (the hardware prefetcher loses track
         * of 16 interleaved row streams). */
        UNROLL
        for (int p = 0; p < GEN_ROWS / 2; p++) {
            const uint8_t *w0 = rp[2 * p] + (size_t)b * wbytes,
                          *w1 = rp[2 * p + 1] + (size_t)b * wbytes;
            z[p] = weights_pair(k, w0, w1);
            dw[p] = pair_scales(k, w0, w1);
            mw[p] = has_m ? pair_scales(k, w0 + 2, w1 + 2) : _mm512_setzero_ps();
            if (NT == 1 && b % (int64_t)(64 / wbytes) == 0) {
                _mm_prefetch((const char *)w0 + GEN_ROWS * ws, _MM_HINT_T1);
                _mm_prefetch((const char *)w1 + GEN_ROWS * ws, _MM_HINT_T1);
            }
        }
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *ab = (const uint8_t *)a + (size_t)t * as + (size_t)b * abytes;
            const __m512i x = act_pair(k, ab + aqs);
            __m512i c = _mm512_setzero_si512();
            if (off)
                c = _mm512_sub_epi32(
                    c, _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)off), x));
            const __m512 da = _mm512_set1_ps(f16_scalar(ab));
            UNROLL
            for (int p = 0; p < GEN_ROWS / 2; p++) {
                const __m512i lanes = _mm512_dpbusd_epi32(c, z[p], x);
                /* d = dw * da, exact: two f16 values. */
                acc[t][p] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dw[p], da), _mm512_cvtepi32_ps(lanes), acc[t][p]);
                if (has_m)
                    summs[t][p] =
                        _mm512_fmadd_ps(mw[p], _mm512_set1_ps(f16_scalar(ab + 2)), summs[t][p]);
            }
        }
    }
    UNROLL
    for (int t = 0; t < NT; t++) {
        _Alignas(64) float res[GEN_ROWS], tmp[16], sm[16];
        UNROLL
        for (int p = 0; p < GEN_ROWS / 2; p++) {
            _mm512_store_ps(tmp, pair_hsum8(k, acc[t][p]));
            res[2 * p] = tmp[0];
            res[2 * p + 1] = tmp[pair_second(k)];
            if (has_m) {
                _mm512_store_ps(sm, summs[t][p]);
                res[2 * p] += sm[0];
                res[2 * p + 1] += sm[pair_second(k)];
            }
        }
        for (int r = 0; r < nr; r++)
            out[(size_t)t * os + (size_t)r] = res[r];
    }
}

/* mdot of block kind k: tiles of 16 rows by up to two tokens. */
XI void gen_mdot(const int k, int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                 const void *a, size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    for (int64_t r0 = 0; r0 < n_rows; r0 += GEN_ROWS) {
        const char *wr = (const char *)w + (size_t)r0 * w_stride;
        const int nr = n_rows - r0 < GEN_ROWS ? (int)(n_rows - r0) : GEN_ROWS;
        int64_t t0 = 0;
        for (; t0 + GEN_TOKENS <= n_toks; t0 += GEN_TOKENS)
            gen_tile(k, GEN_TOKENS, n / INFERD_QK, wr, w_stride, nr,
                     (const char *)a + (size_t)t0 * a_stride, a_stride,
                     out + (size_t)t0 * out_stride + (size_t)r0, out_stride);
        if (t0 < n_toks)
            gen_tile(k, 1, n / INFERD_QK, wr, w_stride, nr, (const char *)a + (size_t)t0 * a_stride,
                     a_stride, out + (size_t)t0 * out_stride + (size_t)r0, out_stride);
    }
}

/* name_dot (vec_dot) and name_mdot of block kind k. */
#define BLOCK_KERNELS(name, k)                                                                     \
    static float name##_dot(int64_t n, const void *w, const void *a) { return qdot1(k, n, w, a); } \
    static void name##_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows,             \
                            const void *a, size_t a_stride, int64_t n_toks, float *out,            \
                            size_t out_stride)                                                     \
    {                                                                                              \
        gen_mdot(k, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);                 \
    }

BLOCK_KERNELS(q4_0, QK_Q4_0)
BLOCK_KERNELS(q4_1, QK_Q4_1)
BLOCK_KERNELS(q5_0, QK_Q5_0)
BLOCK_KERNELS(q5_1, QK_Q5_1)
BLOCK_KERNELS(q8_0, QK_Q8_0)

/*
 * Q4_0 in the order of its 8-row matrices (quant_impl.h: one fma per block
 * of the whole block sum), up to G_NT_MAX tokens per pass: rows in lanes,
 * without gathers or any horizontal reduction. Blocks go in pairs: the 36 bytes of blocks b, b+1
 * of a row are nine dwords, dw0 = (d_b, q0, q1), dw1..dw3 = q2..q13,
 * dw4 = (q14, q15, d_b+1), dw5..dw8 = block b+1's quants. Sixteen-byte
 * loads at 0, 16 and 20 of sixteen rows, four rows to a zmm (128-bit lane L
 * of register i is row 4L + i), and 4x4 dword transposes put dword j of
 * row l into lane l of one register; (q14, q15, q0, q1) are merged from
 * dw4 and dw0, and both scales taken out of them. Each dword holds 4 low
 * nibbles (elements 4j..) and the 4 high nibbles 16 elements on, so
 * vpdpbusd against broadcast activation dwords gives every lane its row's
 * exact block sum. The nibble split is done once per block; each token
 * then costs eight vpdpbusd and its own fma chain, block b before block
 * b + 1. The high nibbles are used in place (times 16), their
 * chain shifted right by 4 at the end: exact, every term being a multiple
 * of 16. The offset 8 comes off through -8 * sum(a) of the block. The
 * activation's per-block data is computed once per call, G_CHUNK blocks at
 * a time (the accumulators pass between chunks through the output, which
 * is exact). An odd last block of a row takes a gather for its scales.
 */
#define G_CHUNK 256 /* even */
#define G_NT_MAX 8  /* tokens per pass over a tile (one zmm accumulator each) */

typedef struct {
    int32_t corr[G_CHUNK]; /* -8 * sum of the block's activation quants */
    float da[G_CHUNK];     /* activation scale */
    int32_t mlo[G_CHUNK];  /* activation bytes (14, 15, 0, 1) */
    int32_t mhi[G_CHUNK];  /* activation bytes (30, 31, 16, 17) */
} q4_0_gen_act;

/* The low and high nibbles of four quant dwords per lane, the high ones in
 * place (times 16), split once per block and shared by every token. */
XI void q4_0_split(__m512i lo_q[4], __m512i hi_q[4], const __m512i q[4])
{
    const __m512i m = _mm512_set1_epi8(0x0f);
    UNROLL
    for (int j = 0; j < 4; j++) {
        lo_q[j] = _mm512_and_si512(q[j], m);
        hi_q[j] = _mm512_andnot_si512(m, q[j]);
    }
}

/* Exact block sums of split quant dwords per lane against the activation
 * dwords at @p lo (low nibbles: elements 4j..) and @p hi (high nibbles),
 * offset removed through @p corr. @p lo0/@p hi0 replace the first dword
 * (the merged (q14, q15, q0, q1) one) when @p merged. */
XI __m512i q4_0_isum(const __m512i lo_q[4], const __m512i hi_q[4], const uint8_t *lo,
                     const uint8_t *hi, const int merged, int32_t lo0, int32_t hi0, int32_t corr)
{
    __m512i slo = _mm512_set1_epi32(corr), shi = _mm512_setzero_si512();
    UNROLL
    for (int j = 0; j < 4; j++) {
        const __m512i xl = merged && j == 0 ? _mm512_set1_epi32(lo0) : bcast32(lo + 4 * j);
        const __m512i xh = merged && j == 0 ? _mm512_set1_epi32(hi0) : bcast32(hi + 4 * j);
        slo = _mm512_dpbusd_epi32(slo, lo_q[j], xl);
        shi = _mm512_dpbusd_epi32(shi, hi_q[j], xh);
    }
    return _mm512_add_epi32(slo, _mm512_srai_epi32(shi, 4));
}

/* 16 rows (one per lane) by NT tokens: each pair of blocks is loaded,
 * transposed and split once, then every token's exact block sums and its
 * fma chain follow, block b before block b + 1 as in vec_dot. */
XI void q4_0_gen_tile(const int NT, int64_t nb, const char *w, size_t ws, int nr,
                      const char *const a[], const q4_0_gen_act act[], int first,
                      float *const out[])
{
    const uint8_t *rp[GEN_ROWS];
    UNROLL
    for (int r = 0; r < GEN_ROWS; r++)
        rp[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
    const __mmask16 live = (__mmask16)((1u << nr) - 1u);
    __m512 acc[G_NT_MAX];
    UNROLL
    for (int t = 0; t < NT; t++)
        acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(live, out[t]);
    /* Words 0..15: low words of dw0 (d_b); 16..31: high words of dw4. */
    const __m512i didx =
        _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 30, 28, 26,
                         24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const int64_t np = nb / 2;
    for (int64_t p = 0; p < np; p++) {
        const size_t po = (size_t)p * 36;
        /* One token streams the weights: fetch the next tile's rows into L2
         * as each 64-byte line is entered (the hardware prefetcher loses
         * track of 16 interleaved row streams). */
        if (p == 0 || ((po + 35) >> 6) != ((po - 1) >> 6)) {
            UNROLL
            for (int r = 0; r < GEN_ROWS; r++)
                _mm_prefetch((const char *)rp[r] + GEN_ROWS * ws + po + 35, _MM_HINT_T1);
        }
        __m512i d[4], d4, lo_q[4], hi_q[4];
        rows16_dwords4(rp, po, d);
        {
            __m512i t[4]; /* only t[0] is used: the rest is dead code */
            rows16_dwords4(rp, po + 16, t);
            d4 = t[0];
        }
        const __m512i dd = _mm512_permutex2var_epi16(d[0], didx, d4);
        const __m512 dw0 = _mm512_cvtph_ps(_mm512_castsi512_si256(dd));
        const __m512 dw1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(dd, 1));
        /* (q14, q15) from dw4's low word, (q0, q1) from dw0's high one. */
        d[0] = _mm512_mask_blend_epi16(0xAAAAAAAAu, d4, d[0]);

        const int64_t b = 2 * p;
        __m512i lo_q1[4], hi_q1[4];
        q4_0_split(lo_q, hi_q, d);
        rows16_dwords4(rp, po + 20, d);
        q4_0_split(lo_q1, hi_q1, d);
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *a0 = (const uint8_t *)a[t] + (size_t)b * 34 + 2;
            const uint8_t *a1 = a0 + 34;
            const __m512i i0 = q4_0_isum(lo_q, hi_q, a0 - 2, a0 + 14, 1, act[t].mlo[b],
                                         act[t].mhi[b], act[t].corr[b]);
            const __m512i i1 = q4_0_isum(lo_q1, hi_q1, a1, a1 + 16, 0, 0, 0, act[t].corr[b + 1]);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw0, _mm512_set1_ps(act[t].da[b])),
                                     _mm512_cvtepi32_ps(i0), acc[t]);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw1, _mm512_set1_ps(act[t].da[b + 1])),
                                     _mm512_cvtepi32_ps(i1), acc[t]);
        }
    }
    if (nb % 2) {
        /* The odd last block: quants at 2 (aligned), scales by a gather. */
        const int64_t b = nb - 1;
        const size_t bo = (size_t)b * 18;
        int32_t offs[GEN_ROWS];
        UNROLL
        for (int r = 0; r < GEN_ROWS; r++)
            offs[r] = (int32_t)(rp[r] - rp[0]);
        __m512i q[4], lo_q[4], hi_q[4];
        rows16_dwords4(rp, bo + 2, q);
        q4_0_split(lo_q, hi_q, q);
        const __m512i g = _mm512_i32gather_epi32(_mm512_loadu_si512(offs), rp[0] + bo, 1);
        const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *a0 = (const uint8_t *)a[t] + (size_t)b * 34 + 2;
            const __m512i isum = q4_0_isum(lo_q, hi_q, a0, a0 + 16, 0, 0, 0, act[t].corr[b]);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(act[t].da[b])),
                                     _mm512_cvtepi32_ps(isum), acc[t]);
        }
    }
    UNROLL
    for (int t = 0; t < NT; t++)
        _mm512_mask_storeu_ps(out[t], live, acc[t]);
}

/* Per-block data of one token's activation row, blocks b0 .. b0 + cb. */
static void q4_0_gen_prep(const char *ac, int64_t cb, q4_0_gen_act *act)
{
    for (int64_t b = 0; b < cb; b++) {
        const uint8_t *ab = (const uint8_t *)ac + (size_t)b * 34;
        const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + 2));
        act->corr[b] =
            -hsum_i32x8(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), x));
        act->da[b] = f16_scalar(ab);
        const uint8_t *q = ab + 2;
        act->mlo[b] = (int32_t)((uint32_t)q[14] | (uint32_t)q[15] << 8 | (uint32_t)q[0] << 16 |
                                (uint32_t)q[1] << 24);
        act->mhi[b] = (int32_t)((uint32_t)q[30] | (uint32_t)q[31] << 8 | (uint32_t)q[16] << 16 |
                                (uint32_t)q[17] << 24);
    }
}

/* NT tokens (1..G_NT_MAX) at @p a (rows a_stride apart), all rows. */
XI void q4_0_gen(const int NT, int64_t n, const void *w, size_t ws, int64_t n_rows, const void *a,
                 size_t as, float *out, size_t os, q4_0_gen_act *act)
{
    const int64_t nb = n / INFERD_QK;
    for (int64_t b0 = 0; b0 < nb; b0 += G_CHUNK) {
        const int64_t cb = nb - b0 < G_CHUNK ? nb - b0 : G_CHUNK;
        const char *ac[G_NT_MAX];
        UNROLL
        for (int t = 0; t < NT; t++) {
            ac[t] = (const char *)a + (size_t)t * as + (size_t)b0 * 34;
            q4_0_gen_prep(ac[t], cb, &act[t]);
        }
        const char *wc = (const char *)w + (size_t)b0 * 18;
        for (int64_t r0 = 0; r0 < n_rows; r0 += GEN_ROWS) {
            const int nr = n_rows - r0 < GEN_ROWS ? (int)(n_rows - r0) : GEN_ROWS;
            float *ot[G_NT_MAX];
            UNROLL
            for (int t = 0; t < NT; t++)
                ot[t] = out + (size_t)t * os + (size_t)r0;
            q4_0_gen_tile(NT, cb, wc + (size_t)r0 * ws, ws, nr, ac, act, b0 == 0, ot);
        }
    }
}

/* One output of a Q4_0 row in that order. */
static float q4_0_rows8_dot(int64_t n, const void *w, const void *a)
{
    const __m256i off = _mm256_set1_epi8(8);
    float acc = 0.0f;
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        const uint8_t *wb = (const uint8_t *)w + (size_t)b * 18;
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * 34;
        const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + 2));
        const __m256i c = _mm256_sub_epi32(_mm256_setzero_si256(),
                                           _mm256_dpbusd_epi32(_mm256_setzero_si256(), off, x));
        const int32_t isum = hsum_i32x8(_mm256_dpbusd_epi32(c, wblock32_u8(QK_Q4_0, wb), x));
        acc = fmaf((float)isum, f16_scalar(wb) * f16_scalar(ab), acc);
    }
    return acc;
}

/* Tokens by the tiles above, up to G_NT_MAX at a time; rows too long for
 * the 32-bit gather offsets of an odd last block (never seen in practice)
 * take one dot product per output. */
static void q4_0_rows8_mdot MDOT_SIG
{
    if (w_stride > (size_t)(INT32_MAX / GEN_ROWS)) {
        for (int64_t t = 0; t < n_toks; t++)
            for (int64_t r = 0; r < n_rows; r++)
                out[(size_t)t * out_stride + (size_t)r] =
                    q4_0_rows8_dot(n, (const char *)w + (size_t)r * w_stride,
                                   (const char *)a + (size_t)t * a_stride);
        return;
    }
    q4_0_gen_act act[G_NT_MAX];
    int64_t t0 = 0;
    for (; t0 + G_NT_MAX <= n_toks; t0 += G_NT_MAX)
        q4_0_gen(G_NT_MAX, n, w, w_stride, n_rows, (const char *)a + (size_t)t0 * a_stride,
                 a_stride, out + (size_t)t0 * out_stride, out_stride, act);
    const char *at = (const char *)a + (size_t)t0 * a_stride;
    float *ot = out + (size_t)t0 * out_stride;
    /* clang-format off */
    switch (n_toks - t0) {
#define G_CASE(k) \
    case k: q4_0_gen(k, n, w, w_stride, n_rows, at, a_stride, ot, out_stride, act); break;
    G_CASE(1) G_CASE(2) G_CASE(3) G_CASE(4) G_CASE(5) G_CASE(6) G_CASE(7)
#undef G_CASE
    default: break;
    }
    /* clang-format on */
}

/* ---- panels (tokens in lanes) for prompts --------------------------------- */

#define PANEL_BLOCK_BYTES (40 * P_LANES)

/*
 * Panel tiles: PANEL_ROWS rows by one panel of up to 16 tokens. The panel
 * holds each token's quants plus 128 as unsigned bytes, group g (elements
 * 4g..4g+3, the canonical lane g) of the 16 tokens in one zmm; each group of
 * a row's signed weights is broadcast against it, and vpdpbusd, started at
 * -128 times the group's weight sum, gives lane g of the 16 tokens exactly.
 * Each (row, lane) keeps a zmm of 16 tokens' f32 accumulators; the lanes
 * are summed at the end in hsum8's order.
 *
 * The weights' share of that work (signed bytes, start values, scales) is
 * the same for every panel: it is prepared once per PANEL_CHUNK blocks of
 * the tile's rows and used by up to PANEL_GROUP panels, which keeps the
 * per-panel loop to loads, vpdpbusd, conversions and fmas. Rows longer than
 * a chunk carry each panel's accumulators over to the next chunk in
 * memory (exact).
 */
#define PANEL_CHUNK 128 /* blocks prepared at a time */
#define PANEL_GROUP 8   /* panels sharing one preparation */

typedef struct panel_prep {
    _Alignas(64) int32_t start[PANEL_CHUNK][8]; /* -128 * each lane's weight sum */
    _Alignas(64) int8_t q[PANEL_CHUNK][32];     /* signed weights (not Q8_0) */
    float dw[PANEL_CHUNK], mw[PANEL_CHUNK];     /* scale, minimum (Q4_1/Q5_1) */
} panel_prep;

typedef struct panel_acc {
    __m512 acc[PANEL_ROWS][8]; /* (row, lane): 16 tokens */
    __m512 summs[PANEL_ROWS];  /* Q4_1/Q5_1 */
} panel_acc;

/* Weight block as 32 signed bytes in element order, offset removed: Q4_0
 * -8..7, Q5_0 -16..15, Q4_1 0..15, Q5_1 0..31, Q8_0 as stored. */
XI __m256i wblock32_s8(const int k, const uint8_t *wb)
{
    if (k == QK_Q8_0)
        return _mm256_loadu_si256((const __m256i *)(wb + 2));
    const __m256i q = wblock32_u8(k, wb);
    return qk_off(k) ? _mm256_sub_epi8(q, _mm256_set1_epi8((char)qk_off(k))) : q;
}

/* The weights' share of cb blocks of one row from block @p wb on. */
XI void panel_prepare(const int k, const uint8_t *wb, int64_t cb, panel_prep *pp)
{
    const size_t wbytes = qk_wbytes(k);
    for (int64_t b = 0; b < cb; b++, wb += wbytes) {
        const __m256i q = wblock32_s8(k, wb);
        const __m256i wsum128 =
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), q);
        _mm256_store_si256((__m256i *)pp->start[b],
                           _mm256_sub_epi32(_mm256_setzero_si256(), wsum128));
        if (k != QK_Q8_0)
            _mm256_store_si256((__m256i *)pp->q[b], q);
        pp->dw[b] = f16_scalar(wb);
        pp->mw[b] = qk_has_m(k) ? f16_scalar(wb + 2) : 0.0f;
    }
}

/* cb blocks of R rows against the panel blocks at @p pb, into @p st (zero
 * first when @p first); when @p last, the results of the nr rows and nt
 * tokens go to out instead. @p wb: the rows' first weight block of the
 * chunk (Q8_0's groups are broadcast straight from the weights, the other
 * formats' from their prepared copy). */
XI void panel_run(const int k, const int R, int64_t cb, const uint8_t *const wb[PANEL_ROWS],
                  const panel_prep *pp, const char *pb, int first, int last, panel_acc *st, int nr,
                  int nt, float *out, size_t os)
{
    const size_t wbytes = qk_wbytes(k);
    const int has_m = qk_has_m(k);
    __m512 acc[PANEL_ROWS][8], summs[PANEL_ROWS];
    UNROLL
    for (int r = 0; r < R; r++) {
        summs[r] = first ? _mm512_setzero_ps() : st->summs[r];
        UNROLL
        for (int g = 0; g < 8; g++)
            acc[r][g] = first ? _mm512_setzero_ps() : st->acc[r][g];
    }
    for (int64_t b = 0; b < cb; b++, pb += PANEL_BLOCK_BYTES) {
        const __m512 da = _mm512_loadu_ps(pb + 32 * P_LANES);
        const uint8_t *groups[PANEL_ROWS];
        __m512 d[PANEL_ROWS];
        UNROLL
        for (int r = 0; r < R; r++) {
            groups[r] = k == QK_Q8_0 ? wb[r] + (size_t)b * wbytes + 2 : (const uint8_t *)pp[r].q[b];
            d[r] = _mm512_mul_ps(_mm512_set1_ps(pp[r].dw[b]), da);
        }
        /* Lanes outer: each group of the panel is loaded once for the R
         * rows. */
        UNROLL
        for (int g = 0; g < 8; g++) {
            const __m512i av = _mm512_loadu_si512(pb + 64 * g);
            UNROLL
            for (int r = 0; r < R; r++) {
                const __m512i lane =
                    _mm512_dpbusd_epi32(_mm512_set1_epi32(pp[r].start[b][g]), av,
                                        _mm512_set1_epi32((int)load_u32(groups[r] + 4 * g)));
                acc[r][g] = _mm512_fmadd_ps(d[r], _mm512_cvtepi32_ps(lane), acc[r][g]);
            }
        }
        if (has_m) {
            const __m512 sa = _mm512_loadu_ps(pb + 36 * P_LANES);
            UNROLL
            for (int r = 0; r < R; r++)
                summs[r] = _mm512_fmadd_ps(_mm512_set1_ps(pp[r].mw[b]), sa, summs[r]);
        }
    }
    if (!last) {
        UNROLL
        for (int r = 0; r < R; r++) {
            st->summs[r] = summs[r];
            UNROLL
            for (int g = 0; g < 8; g++)
                st->acc[r][g] = acc[r][g];
        }
        return;
    }
    UNROLL
    for (int r = 0; r < R; r++) {
        if (r >= nr)
            continue;
        const __m512 *x = acc[r];
        __m512 s =
            _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x[0], x[4]), _mm512_add_ps(x[2], x[6])),
                          _mm512_add_ps(_mm512_add_ps(x[1], x[5]), _mm512_add_ps(x[3], x[7])));
        if (has_m)
            s = _mm512_add_ps(s, summs[r]);
        float tmp[P_LANES];
        _mm512_storeu_ps(tmp, s);
        for (int t = 0; t < nt; t++)
            out[(size_t)t * os + (size_t)r] = tmp[t];
    }
}

/* All rows by all panels: row tiles outer (their weights stay in L1),
 * groups of panels, chunks of blocks, then each panel of the group. */
XI void panel_gemm(const int k, int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                   const void *panel, int n_toks, float *out, size_t out_stride)
{
    const size_t pbytes = inferd__panel_bytes(P_LANES, n), wbytes = qk_wbytes(k);
    const int64_t nb = n / INFERD_QK;
    const int n_panels = (n_toks + P_LANES - 1) / P_LANES;
    panel_prep pp[PANEL_ROWS];
    panel_acc st[PANEL_GROUP];
    for (int64_t r0 = 0; r0 < n_rows; r0 += PANEL_ROWS) {
        const int nr = n_rows - r0 < PANEL_ROWS ? (int)(n_rows - r0) : PANEL_ROWS;
        const uint8_t *rp[PANEL_ROWS];
        for (int r = 0; r < PANEL_ROWS; r++)
            rp[r] = (const uint8_t *)w + (size_t)(r0 + (r < nr ? r : nr - 1)) * w_stride;
        for (int p0 = 0; p0 < n_panels; p0 += PANEL_GROUP) {
            const int p1 = n_panels - p0 < PANEL_GROUP ? n_panels : p0 + PANEL_GROUP;
            for (int64_t b0 = 0; b0 < nb; b0 += PANEL_CHUNK) {
                const int64_t cb = nb - b0 < PANEL_CHUNK ? nb - b0 : PANEL_CHUNK;
                const uint8_t *wb[PANEL_ROWS];
                for (int r = 0; r < PANEL_ROWS; r++) {
                    wb[r] = rp[r] + (size_t)b0 * wbytes;
                    panel_prepare(k, wb[r], cb, &pp[r]);
                }
                for (int p = p0; p < p1; p++) {
                    const int t0 = p * P_LANES;
                    const int nt = n_toks - t0 < P_LANES ? n_toks - t0 : P_LANES;
                    panel_run(k, PANEL_ROWS, cb, wb, pp,
                              (const char *)panel + (size_t)p * pbytes +
                                  (size_t)b0 * PANEL_BLOCK_BYTES,
                              b0 == 0, b0 + cb == nb, &st[p - p0], nr, nt,
                              out + (size_t)t0 * out_stride + (size_t)r0, out_stride);
                }
            }
        }
    }
}

#define PANEL_GEMM(name, k)                                                                \
    static void name##_pgemm(int64_t n, const void *w, size_t w_stride, int64_t n_rows,    \
                             const void *panel, int n_toks, float *out, size_t out_stride) \
    {                                                                                      \
        panel_gemm(k, n, w, w_stride, n_rows, panel, n_toks, out, out_stride);             \
    }

PANEL_GEMM(q4_0, QK_Q4_0)
PANEL_GEMM(q4_1, QK_Q4_1)
PANEL_GEMM(q5_0, QK_Q5_0)
PANEL_GEMM(q5_1, QK_Q5_1)
PANEL_GEMM(q8_0, QK_Q8_0)

/* Quantize n_toks rows exactly as q8_0/q8_1 from_float and lay them out
 * as a panel (quant_impl.h); missing tokens have quants 0 and d = 0. */
XI void pack_panel(int64_t n, const float *x, int64_t x_stride, int n_toks, void *panel,
                   const int q8_1)
{
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        char *pb = (char *)panel + (size_t)b * PANEL_BLOCK_BYTES;
        float *pd = (float *)(void *)(pb + 32 * P_LANES);
        float *ps = (float *)(void *)(pb + 36 * P_LANES);
        for (int t = 0; t < P_LANES; t++) {
            _Alignas(32) int8_t qs[INFERD_QK] = {0};
            int sum = 0;
            float d = 0.0f, s = 0.0f;
            if (t < n_toks) {
                const float dr = q8_act_block_avx2(x + t * x_stride + b * INFERD_QK, qs, &sum);
                d = _cvtsh_ss(_cvtss_sh(dr, 0));
                s = q8_1 ? _cvtsh_ss(_cvtss_sh(dr * (float)sum, 0)) : 0.0f;
            }
            for (int g = 0; g < 8; g++) {
                const uint32_t biased = load_u32((const uint8_t *)qs + 4 * g) ^ 0x80808080u;
                memcpy(pb + 64 * g + 4 * t, &biased, 4);
            }
            pd[t] = d;
            ps[t] = s;
        }
    }
}

static void pack_q8_0(int64_t n, const float *x, int64_t x_stride, int n_toks, void *panel)
{
    pack_panel(n, x, x_stride, n_toks, panel, 0);
}

static void pack_q8_1(int64_t n, const float *x, int64_t x_stride, int n_toks, void *panel)
{
    pack_panel(n, x, x_stride, n_toks, panel, 1);
}

#define PANEL_ENTRY(name, pack_fn, min_toks)            \
    static const inferd__panel_kernels name##_panel = { \
        .lanes = P_LANES, .min_tokens = min_toks, .pack = pack_fn, .gemm = name##_pgemm}

/* From this many tokens on, a panel beats the generation tiles. */
#ifndef PANEL_MIN_TOKENS
#define PANEL_MIN_TOKENS 8
#endif
PANEL_ENTRY(q4_0, pack_q8_0, PANEL_MIN_TOKENS);
PANEL_ENTRY(q4_1, pack_q8_1, PANEL_MIN_TOKENS);
PANEL_ENTRY(q5_0, pack_q8_0, PANEL_MIN_TOKENS);
PANEL_ENTRY(q5_1, pack_q8_1, PANEL_MIN_TOKENS);
PANEL_ENTRY(q8_0, pack_q8_0, PANEL_MIN_TOKENS);

const inferd__panel_kernels *const inferd__panels_avx512[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_Q4_0] = &q4_0_panel, [INFERD_DTYPE_Q4_1] = &q4_1_panel,
    [INFERD_DTYPE_Q5_0] = &q5_0_panel, [INFERD_DTYPE_Q5_1] = &q5_1_panel,
    [INFERD_DTYPE_Q8_0] = &q8_0_panel,
};

/* Only the dot products differ from AVX2; conversions fall back to it. */
const inferd_kernels inferd__kernels_avx512[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32,
                          .vec_dot = f32_dot,
                          .mdot = f32_mdot,
                          .vec_dot_gemv = f32_dot_gemv},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16,
                          .vec_dot = f16_dot,
                          .mdot = f16_mdot,
                          .vec_dot_gemv = f16_dot_gemv},
    [INFERD_DTYPE_BF16] = {.type = INFERD_DTYPE_BF16, .vec_dot = bf16_dot, .mdot = bf16_mdot},
    [INFERD_DTYPE_Q4_0] = {.type = INFERD_DTYPE_Q4_0,
                           .vec_dot = q4_0_dot,
                           .mdot = q4_0_mdot,
                           .vec_dot_rows8 = q4_0_rows8_dot,
                           .mdot_rows8 = q4_0_rows8_mdot},
    [INFERD_DTYPE_Q4_1] = {.type = INFERD_DTYPE_Q4_1, .vec_dot = q4_1_dot, .mdot = q4_1_mdot},
    [INFERD_DTYPE_Q5_0] = {.type = INFERD_DTYPE_Q5_0, .vec_dot = q5_0_dot, .mdot = q5_0_mdot},
    [INFERD_DTYPE_Q5_1] = {.type = INFERD_DTYPE_Q5_1, .vec_dot = q5_1_dot, .mdot = q5_1_mdot},
    [INFERD_DTYPE_Q8_0] = {.type = INFERD_DTYPE_Q8_0, .vec_dot = q8_0_dot, .mdot = q8_0_mdot},
    /* K-quants: quant_k_avx512.c (no panels: matmul uses their mdot). */
    [INFERD_DTYPE_Q4_K] = {.type = INFERD_DTYPE_Q4_K,
                           .vec_dot = inferd__q4_k_dot_avx512,
                           .mdot = inferd__q4_k_mdot_avx512},
    [INFERD_DTYPE_Q5_K] = {.type = INFERD_DTYPE_Q5_K,
                           .vec_dot = inferd__q5_k_dot_avx512,
                           .mdot = inferd__q5_k_mdot_avx512},
    [INFERD_DTYPE_Q6_K] = {.type = INFERD_DTYPE_Q6_K,
                           .vec_dot = inferd__q6_k_dot_avx512,
                           .mdot = inferd__q6_k_mdot_avx512},
    /* Q2_K, Q3_K, IQ4_NL, IQ4_XS: quant_k2_avx512.c. */
    [INFERD_DTYPE_Q2_K] = {.type = INFERD_DTYPE_Q2_K,
                           .vec_dot = inferd__q2_k_dot_avx512,
                           .mdot = inferd__q2_k_mdot_avx512},
    [INFERD_DTYPE_Q3_K] = {.type = INFERD_DTYPE_Q3_K,
                           .vec_dot = inferd__q3_k_dot_avx512,
                           .mdot = inferd__q3_k_mdot_avx512},
    [INFERD_DTYPE_IQ4_NL] = {.type = INFERD_DTYPE_IQ4_NL,
                             .vec_dot = inferd__iq4_nl_dot_avx512,
                             .mdot = inferd__iq4_nl_mdot_avx512,
                             .vec_dot_gemv = inferd__iq4_nl_dot_gemv_avx512},
    [INFERD_DTYPE_IQ4_XS] = {.type = INFERD_DTYPE_IQ4_XS,
                             .vec_dot = inferd__iq4_xs_dot_avx512,
                             .mdot = inferd__iq4_xs_mdot_avx512},
};
