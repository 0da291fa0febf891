/* AVX-512 (F/BW/VL/DQ + VNNI) kernels, called only when cpuid reports them.
 * Float types: one zmm accumulator per output holds the 16 canonical lanes
 * of quant_impl.h. Block formats: vpdpbusd with the weights as unsigned
 * bytes, their offset (8, 16, or 128 after Q8_0's sign flip) removed
 * exactly by starting the i32 sums at -off * sum(a); generation tiles put
 * one weight row per lane, prompt panels one token per lane. Results equal
 * the scalar and AVX2 ones bit for bit. Thread: any (no state). */
#include "quant_x86.h"

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

XI void ftile(const int kind, const int NR, const int NT, int64_t n, const char *w,
              size_t ws, const char *a, size_t as, float *out, size_t os)
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

/* Rows per generation tile (one per zmm lane), rows per panel tile. */
#define Q_RL 16
#define P_ROWS 8
#define P_ROWS_M 6   /* Q4_1/Q5_1, which also keep summs per row */
#define P_LANES 16

/* Weight block as 32 unsigned bytes in element order (Q8_0: w + 128). */
XI __m256i wblock32_u8(const int k, const uint8_t *wb)
{
    if (k == QK_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(wb + 2)),
                                _mm256_set1_epi8((char)0x80));
    __m256i q = nibbles32(wb + qk_wqs(k));
    if (qk_is5(k))
        q = _mm256_or_si256(q, _mm256_maskz_mov_epi8(load_u32(wb + qk_wqh(k)),
                                                     _mm256_set1_epi8(0x10)));
    return q;
}

/* What the unsigned weight bytes carry above the quant: 8, 16, 128 or 0. */
XI int u8_offset(const int k)
{
    return k == QK_Q8_0 ? 0x80 : qk_off(k);
}

/* One output: the canonical block chain. */
XI float qdot1(const int k, int64_t n, const void *w, const void *a)
{
    const size_t wbs = qk_wbytes(k), abs_ = qk_abytes(k), aqs = qk_aqs(k);
    const __m256i offv = _mm256_set1_epi8((char)u8_offset(k));
    float acc = 0.0f, summs = 0.0f;
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        const uint8_t *wb = (const uint8_t *)w + (size_t)b * wbs;
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * abs_;
        const __m256i x = _mm256_loadu_si256((const __m256i *)(ab + aqs));
        __m256i c = _mm256_setzero_si256();
        if (u8_offset(k))
            c = _mm256_sub_epi32(c, _mm256_dpbusd_epi32(_mm256_setzero_si256(), offv, x));
        const int32_t isum = hsum_i32x8(_mm256_dpbusd_epi32(c, wblock32_u8(k, wb), x));
        acc = fmaf(f16_scalar(wb) * f16_scalar(ab), (float)isum, acc);
        if (qk_has_m(k))
            summs = summs + f16_scalar(wb + 2) * f16_scalar(ab + 2);
    }
    return qk_has_m(k) ? acc + summs : acc;
}

/*
 * Generation tiles: 16 rows, one per lane. Per block, row pairs (2p, 2p+1)
 * share a zmm: nibble formats as 128-bit lanes [2p lo, 2p+1 lo, 2p hi,
 * 2p+1 hi] (lo = elements 0..15) against activations [lo, lo, hi, hi];
 * Q8_0 as [2p, 2p+1] (32 bytes each) against [a, a]. The eight vpdpbusd
 * results are then reduced to one exact i32 per row, in lane 4i+j for row
 * 4j+i (a 4x4 transpose, undone once at the end).
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
    const __m256i y = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w0 + qs))),
        _mm_loadu_si128((const __m128i *)(w1 + qs)), 1);
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1);
    z = _mm512_and_si512(z, _mm512_set1_epi8(0x0f));
    if (qk_is5(k)) {
        const uint64_t h0 = load_u32(w0 + qk_wqh(k)), h1 = load_u32(w1 + qk_wqh(k));
        const __mmask64 m = (h0 & 0xffffu) | (h1 & 0xffffu) << 16 | (h0 >> 16) << 32 |
                            (h1 >> 16) << 48;
        z = _mm512_or_si512(z, _mm512_maskz_mov_epi8(m, _mm512_set1_epi8(0x10)));
    }
    return z;
}

XI __m512i reduce_16x16(const int k, const __m512i v[8])
{
    /* Level 1: the two 128-bit lanes of each row added: 128-bit lane i of
     * wq[q] is row 4q+i (the shuffle immediates must be constants). */
    __m512i wq[4];
    UNROLL
    for (int q = 0; q < 4; q++) {
        const __m512i x = k == QK_Q8_0 ? _mm512_shuffle_i64x2(v[2 * q], v[2 * q + 1], _MM_SHUFFLE(2, 0, 2, 0))
                                       : _mm512_shuffle_i64x2(v[2 * q], v[2 * q + 1], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i y = k == QK_Q8_0 ? _mm512_shuffle_i64x2(v[2 * q], v[2 * q + 1], _MM_SHUFFLE(3, 1, 3, 1))
                                       : _mm512_shuffle_i64x2(v[2 * q], v[2 * q + 1], _MM_SHUFFLE(3, 2, 3, 2));
        wq[q] = _mm512_add_epi32(x, y);
    }
    /* Level 2: 32-bit interleave; level 3: 64-bit interleave. */
    const __m512i s0 = _mm512_add_epi32(_mm512_unpacklo_epi32(wq[0], wq[1]),
                                        _mm512_unpackhi_epi32(wq[0], wq[1]));
    const __m512i s1 = _mm512_add_epi32(_mm512_unpacklo_epi32(wq[2], wq[3]),
                                        _mm512_unpackhi_epi32(wq[2], wq[3]));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(s0, s1), _mm512_unpackhi_epi64(s0, s1));
}

/* Row of each lane after reduce_16x16 (and lane of each row: the same). */
#define LANE_ROWS 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15

XI void gtile(const int k, const int NT, int64_t nb, const char *w, size_t ws, int nr,
              const char *a, size_t as, float *out, size_t os)
{
    const size_t wbs = qk_wbytes(k), abs_ = qk_abytes(k), aqs = qk_aqs(k);
    const int has_m = qk_has_m(k), off = u8_offset(k);
    static const int lane_rows[Q_RL] = {LANE_ROWS};
    const uint8_t *rp[Q_RL];
    int32_t offs[Q_RL];
    for (int r = 0; r < Q_RL; r++) {
        const int rr = r < nr ? r : nr - 1;
        rp[r] = (const uint8_t *)w + (size_t)rr * ws;
    }
    for (int l = 0; l < Q_RL; l++) {
        const int rr = lane_rows[l] < nr ? lane_rows[l] : nr - 1;
        offs[l] = (int32_t)((size_t)rr * ws);
    }
    const __m512i gidx = _mm512_loadu_si512(offs);
    __m512 acc[4], summs[4];
    UNROLL
    for (int t = 0; t < NT; t++)
        acc[t] = summs[t] = _mm512_setzero_ps();

    for (int64_t b = 0; b < nb; b++) {
        __m512i z[Q_RL / 2];
        /* One token streams the weights: fetch the next tile's rows into L2,
         * every 64 bytes of progress (the hardware prefetcher loses track
         * of 16 interleaved row streams). */
        UNROLL
        for (int p = 0; p < Q_RL / 2; p++) {
            z[p] = weights_pair(k, rp[2 * p] + (size_t)b * wbs, rp[2 * p + 1] + (size_t)b * wbs);
            if (NT == 1 && b % (int64_t)(64 / wbs) == 0) {
                _mm_prefetch((const char *)rp[2 * p] + Q_RL * ws + (size_t)b * wbs, _MM_HINT_T1);
                _mm_prefetch((const char *)rp[2 * p + 1] + Q_RL * ws + (size_t)b * wbs, _MM_HINT_T1);
            }
        }
        const __m512i g = _mm512_i32gather_epi32(gidx, w + (size_t)b * wbs, 1);
        const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        const __m512 mw = has_m ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(g, 16)))
                                : _mm512_setzero_ps();
        UNROLL
        for (int t = 0; t < NT; t++) {
            const uint8_t *ab = (const uint8_t *)a + (size_t)t * as + (size_t)b * abs_;
            const __m512i x0 = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(ab + aqs)));
            const __m512i x = k == QK_Q8_0 ? _mm512_shuffle_i64x2(x0, x0, _MM_SHUFFLE(1, 0, 1, 0))
                                           : _mm512_shuffle_i64x2(x0, x0, _MM_SHUFFLE(1, 1, 0, 0));
            __m512i c = _mm512_setzero_si512();
            if (off)
                c = _mm512_sub_epi32(c, _mm512_dpbusd_epi32(_mm512_setzero_si512(),
                                                            _mm512_set1_epi8((char)off), x));
            __m512i v[Q_RL / 2];
            UNROLL
            for (int p = 0; p < Q_RL / 2; p++)
                v[p] = _mm512_dpbusd_epi32(c, z[p], x);
            const __m512 f = _mm512_cvtepi32_ps(reduce_16x16(k, v));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(f16_scalar(ab))), f, acc[t]);
            if (has_m)
                summs[t] = _mm512_add_ps(summs[t],
                                         _mm512_mul_ps(mw, _mm512_set1_ps(f16_scalar(ab + 2))));
        }
    }
    const __m512i back = _mm512_loadu_si512(lane_rows);
    UNROLL
    for (int t = 0; t < NT; t++) {
        float tmp[Q_RL];
        const __m512 r = has_m ? _mm512_add_ps(acc[t], summs[t]) : acc[t];
        _mm512_storeu_ps(tmp, _mm512_permutexvar_ps(back, r));
        for (int i = 0; i < nr; i++)
            out[(size_t)t * os + (size_t)i] = tmp[i];
    }
}

/*
 * Q4_0 generation (up to G_NT_MAX tokens per pass): rows in lanes, without
 * gathers or any
 * horizontal reduction. Blocks go in pairs: the 36 bytes of blocks b, b+1
 * of a row are nine dwords, dw0 = (d_b, q0, q1), dw1..dw3 = q2..q13,
 * dw4 = (q14, q15, d_b+1), dw5..dw8 = block b+1's quants. Sixteen-byte
 * loads at 0, 16 and 20 of sixteen rows, four rows to a zmm (128-bit lane L
 * of register i is row 4L + i), and 4x4 dword transposes put dword j of
 * row l into lane l of one register; (q14, q15, q0, q1) are merged from
 * dw4 and dw0, and both scales taken out of them. Each dword holds 4 low
 * nibbles (elements 4j..) and the 4 high nibbles 16 elements on, so
 * vpdpbusd against broadcast activation dwords gives every lane its row's
 * exact block sum. The nibble split is done once per block; each token
 * then costs eight vpdpbusd and its own fma chain, in vec_dot's order. The high nibbles are used in place (times 16), their
 * chain shifted right by 4 at the end: exact, every term being a multiple
 * of 16. The offset 8 comes off through -8 * sum(a) of the block. The
 * activation's per-block data is computed once per call, G_CHUNK blocks at
 * a time (the accumulators pass between chunks through the output, which
 * is exact). An odd last block of a row takes a gather for its scales.
 */
#define G_CHUNK 256   /* even */
#define G_NT_MAX 8    /* tokens per pass over a tile (one zmm accumulator each) */

typedef struct {
    int32_t corr[G_CHUNK];   /* -8 * sum of the block's activation quants */
    float da[G_CHUNK];       /* activation scale */
    int32_t mlo[G_CHUNK];    /* activation bytes (14, 15, 0, 1) */
    int32_t mhi[G_CHUNK];    /* activation bytes (30, 31, 16, 17) */
} q4_0_gen_act;

XI __m128i load16(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

/* z[i] = sixteen bytes at @p off of rows i, 4 + i, 8 + i, 12 + i (pairs
 * joined in ymm first: 256-bit inserts are the cheaper ones). */
XI void load_rows4x4(__m512i z[4], const uint8_t *const rp[Q_RL], size_t off)
{
    UNROLL
    for (int i = 0; i < 4; i++) {
        const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(rp[i] + off)),
                                                   load16(rp[4 + i] + off), 1);
        const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(rp[8 + i] + off)),
                                                   load16(rp[12 + i] + off), 1);
        z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
}

/* After load_rows4x4: out[j] lane l = dword j of row l. */
XI void transpose4x4(__m512i out[4], const __m512i z[4])
{
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]);
    const __m512i t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]);
    const __m512i t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    out[1] = _mm512_unpackhi_epi64(t0, t2);
    out[2] = _mm512_unpacklo_epi64(t1, t3);
    out[3] = _mm512_unpackhi_epi64(t1, t3);
}

XI __m512i bcast32(const uint8_t *p)
{
    return _mm512_set1_epi32((int)load_u32(p));
}

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
    const uint8_t *rp[Q_RL];
    UNROLL
    for (int r = 0; r < Q_RL; r++)
        rp[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
    const __mmask16 live = (__mmask16)((1u << nr) - 1u);
    __m512 acc[G_NT_MAX];
    UNROLL
    for (int t = 0; t < NT; t++)
        acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(live, out[t]);
    /* Words 0..15: low words of dw0 (d_b); 16..31: high words of dw4. */
    const __m512i didx = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41,
                                          39, 37, 35, 33, 30, 28, 26, 24, 22, 20, 18, 16,
                                          14, 12, 10, 8, 6, 4, 2, 0);
    const int64_t np = nb / 2;
    for (int64_t p = 0; p < np; p++) {
        const size_t po = (size_t)p * 36;
        /* One token streams the weights: fetch the next tile's rows into L2
         * as each 64-byte line is entered (the hardware prefetcher loses
         * track of 16 interleaved row streams). */
        if (p == 0 || ((po + 35) >> 6) != ((po - 1) >> 6)) {
            UNROLL
            for (int r = 0; r < Q_RL; r++)
                _mm_prefetch((const char *)rp[r] + Q_RL * ws + po + 35, _MM_HINT_T1);
        }
        __m512i z[4], d[4], d4, lo_q[4], hi_q[4];
        load_rows4x4(z, rp, po);
        transpose4x4(d, z);
        load_rows4x4(z, rp, po + 16);
        {
            const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]);
            const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]);
            d4 = _mm512_unpacklo_epi64(t0, t2);
        }
        const __m512i dd = _mm512_permutex2var_epi16(d[0], didx, d4);
        const __m512 dw0 = _mm512_cvtph_ps(_mm512_castsi512_si256(dd));
        const __m512 dw1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(dd, 1));
        /* (q14, q15) from dw4's low word, (q0, q1) from dw0's high one. */
        d[0] = _mm512_mask_blend_epi16(0xAAAAAAAAu, d4, d[0]);

        const int64_t b = 2 * p;
        __m512i lo_q1[4], hi_q1[4];
        q4_0_split(lo_q, hi_q, d);
        load_rows4x4(z, rp, po + 20);
        transpose4x4(d, z);
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
        int32_t offs[Q_RL];
        UNROLL
        for (int r = 0; r < Q_RL; r++)
            offs[r] = (int32_t)(rp[r] - rp[0]);
        __m512i z[4], q[4], lo_q[4], hi_q[4];
        load_rows4x4(z, rp, bo + 2);
        transpose4x4(q, z);
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
        act->corr[b] = -hsum_i32x8(_mm256_dpbusd_epi32(_mm256_setzero_si256(),
                                                       _mm256_set1_epi8(8), x));
        act->da[b] = f16_scalar(ab);
        const uint8_t *q = ab + 2;
        act->mlo[b] = (int32_t)((uint32_t)q[14] | (uint32_t)q[15] << 8 |
                                (uint32_t)q[0] << 16 | (uint32_t)q[1] << 24);
        act->mhi[b] = (int32_t)((uint32_t)q[30] | (uint32_t)q[31] << 8 |
                                (uint32_t)q[16] << 16 | (uint32_t)q[17] << 24);
    }
}

/* NT tokens (1..G_NT_MAX) at @p a (rows a_stride apart), all rows. */
XI void q4_0_gen(const int NT, int64_t n, const void *w, size_t ws, int64_t n_rows,
                 const void *a, size_t as, float *out, size_t os, q4_0_gen_act *act)
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
        for (int64_t r0 = 0; r0 < n_rows; r0 += Q_RL) {
            const int nr = n_rows - r0 < Q_RL ? (int)(n_rows - r0) : Q_RL;
            float *ot[G_NT_MAX];
            UNROLL
            for (int t = 0; t < NT; t++)
                ot[t] = out + (size_t)t * os + (size_t)r0;
            q4_0_gen_tile(NT, cb, wc + (size_t)r0 * ws, ws, nr, ac, act, b0 == 0, ot);
        }
    }
}

static float q4_0_dot(int64_t n, const void *w, const void *a)
{
    return qdot1(QK_Q4_0, n, w, a);
}

/* Tokens by the pair tiles above, up to G_NT_MAX at a time; the 32-bit
 * gather offsets of their odd last block bound w_stride as the driver's
 * do. */
static void q4_0_mdot MDOT_SIG
{
    if (w_stride <= (size_t)(INT32_MAX / Q_RL)) {
        q4_0_gen_act act[G_NT_MAX];
        int64_t t0 = 0;
        for (; t0 + G_NT_MAX <= n_toks; t0 += G_NT_MAX)
            q4_0_gen(G_NT_MAX, n, w, w_stride, n_rows, (const char *)a + (size_t)t0 * a_stride,
                     a_stride, out + (size_t)t0 * out_stride, out_stride, act);
        const char *at = (const char *)a + (size_t)t0 * a_stride;
        float *ot = out + (size_t)t0 * out_stride;
        switch (n_toks - t0) {
#define G_CASE(k)                                                                    \
    case k:                                                                          \
        q4_0_gen(k, n, w, w_stride, n_rows, at, a_stride, ot, out_stride, act);      \
        break;
        G_CASE(1) G_CASE(2) G_CASE(3) G_CASE(4) G_CASE(5) G_CASE(6) G_CASE(7)
#undef G_CASE
        default: break;
        }
        return;
    }
    QMDOT_DRIVER(q4_0_GTILE, q4_0_dot, Q_RL);
}

QUANT_KERNELS(q4_1, QK_Q4_1, Q_RL)
QUANT_KERNELS(q5_0, QK_Q5_0, Q_RL)
QUANT_KERNELS(q5_1, QK_Q5_1, Q_RL)
QUANT_KERNELS(q8_0, QK_Q8_0, Q_RL)

/* ---- panels (tokens in lanes) for prompts --------------------------------- */

#define PANEL_BLOCK_BYTES (44 * P_LANES)

/*
 * R rows by one panel of up to 16 tokens, nb blocks. Per row and block the
 * weight bytes are unpacked once to the stack and each 4-byte group is
 * broadcast against the panel's 16 tokens x 4 bytes: 8 vpdpbusd give the
 * 16 tokens' exact block sums. The offset comes off through the start value
 * -off * sum(a) of each token.
 */
XI void ptile(const int k, const int R, int64_t nb, const char *w, size_t ws, int nr,
              const char *panel, int nt, float *out, size_t os)
{
    const size_t wbs = qk_wbytes(k);
    const int has_m = qk_has_m(k), off = u8_offset(k);
    const int shift = off == 0x80 ? 7 : off == 16 ? 4 : 3;
    const uint8_t *rp[P_ROWS];
    _Alignas(32) uint8_t buf[P_ROWS][32];
    __m512 acc[P_ROWS], summs[P_ROWS];
    UNROLL
    for (int r = 0; r < R; r++) {
        rp[r] = (const uint8_t *)w + (size_t)(r < nr ? r : nr - 1) * ws;
        acc[r] = summs[r] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const char *pb = panel + (size_t)b * PANEL_BLOCK_BYTES;
        __m512i av[8];
        UNROLL
        for (int g = 0; g < 8; g++)
            av[g] = _mm512_loadu_si512(pb + 64 * g);
        const __m512 da = _mm512_loadu_ps(pb + 32 * P_LANES);
        const __m512 sa = has_m ? _mm512_loadu_ps(pb + 40 * P_LANES) : _mm512_setzero_ps();
        __m512i corr = _mm512_setzero_si512();
        if (off)
            corr = _mm512_sub_epi32(corr, _mm512_slli_epi32(_mm512_loadu_si512(pb + 36 * P_LANES),
                                                            (unsigned)shift));
        UNROLL
        for (int r = 0; r < R; r++) {
            const uint8_t *wb = rp[r] + (size_t)b * wbs;
            _mm256_store_si256((__m256i *)buf[r], wblock32_u8(k, wb));
            /* Make the compiler read the groups back from memory: a
             * broadcast load costs no shuffle, unlike extracting each
             * dword from the register. */
            __asm__ volatile("" : "+m"(buf[r]));
            /* Two chains of vpdpbusd halve the dependent latency; the
             * integer sums are exact, so the split does not matter. */
            __m512i isum = corr, isum2 = _mm512_setzero_si512();
            UNROLL
            for (int g = 0; g < 8; g += 2) {
                int32_t wg0, wg1;
                memcpy(&wg0, buf[r] + 4 * g, 4);
                memcpy(&wg1, buf[r] + 4 * g + 4, 4);
                isum = _mm512_dpbusd_epi32(isum, _mm512_set1_epi32(wg0), av[g]);
                isum2 = _mm512_dpbusd_epi32(isum2, _mm512_set1_epi32(wg1), av[g + 1]);
            }
            isum = _mm512_add_epi32(isum, isum2);
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(f16_scalar(wb)), da),
                                     _mm512_cvtepi32_ps(isum), acc[r]);
            if (has_m)
                summs[r] = _mm512_add_ps(summs[r],
                                         _mm512_mul_ps(_mm512_set1_ps(f16_scalar(wb + 2)), sa));
        }
    }
    UNROLL
    for (int r = 0; r < R; r++) {
        if (r >= nr)
            continue;
        float tmp[P_LANES];
        _mm512_storeu_ps(tmp, has_m ? _mm512_add_ps(acc[r], summs[r]) : acc[r]);
        for (int t = 0; t < nt; t++)
            out[(size_t)t * os + (size_t)r] = tmp[t];
    }
}

/* Rows outer (their weights stay in L1), panels inner. */
#define PANEL_GEMM(name, k, R)                                                 \
    static void name##_pgemm(int64_t n, const void *w, size_t w_stride,        \
                             int64_t n_rows, const void *panel, int n_toks,    \
                             float *out, size_t out_stride)                    \
    {                                                                          \
        const size_t pbytes = inferd__panel_bytes(P_LANES, n);                 \
        for (int64_t r0 = 0; r0 < n_rows; r0 += (R)) {                         \
            const int nr = n_rows - r0 < (R) ? (int)(n_rows - r0) : (R);       \
            for (int t0 = 0; t0 < n_toks; t0 += P_LANES) {                     \
                const int nt = n_toks - t0 < P_LANES ? n_toks - t0 : P_LANES;  \
                ptile(k, R, n / INFERD_QK,                                     \
                      (const char *)w + (size_t)r0 * w_stride, w_stride, nr,   \
                      (const char *)panel + (size_t)(t0 / P_LANES) * pbytes,   \
                      nt, out + (size_t)t0 * out_stride + (size_t)r0,          \
                      out_stride);                                             \
            }                                                                  \
        }                                                                      \
    }

PANEL_GEMM(q4_0, QK_Q4_0, P_ROWS)
PANEL_GEMM(q4_1, QK_Q4_1, P_ROWS_M)
PANEL_GEMM(q5_0, QK_Q5_0, P_ROWS)
PANEL_GEMM(q5_1, QK_Q5_1, P_ROWS_M)
PANEL_GEMM(q8_0, QK_Q8_0, P_ROWS)

/* Quantize n_toks rows exactly as q8_0/q8_1 from_float and lay them out
 * as a panel (quant_impl.h); missing tokens are zero. */
XI void pack_panel(int64_t n, const float *x, int64_t x_stride, int n_toks, void *panel,
                   const int q8_1)
{
    for (int64_t b = 0; b < n / INFERD_QK; b++) {
        char *pb = (char *)panel + (size_t)b * PANEL_BLOCK_BYTES;
        float *pd = (float *)(void *)(pb + 32 * P_LANES);
        int32_t *psum = (int32_t *)(void *)(pb + 36 * P_LANES);
        float *ps = (float *)(void *)(pb + 40 * P_LANES);
        for (int t = 0; t < P_LANES; t++) {
            _Alignas(32) int8_t qs[INFERD_QK] = {0};
            int sum = 0;
            float d = 0.0f, s = 0.0f;
            if (t < n_toks) {
                const float dr = q8_act_block_avx2(x + t * x_stride + b * INFERD_QK, qs, &sum);
                d = _cvtsh_ss(_cvtss_sh(dr, 0));
                s = q8_1 ? _cvtsh_ss(_cvtss_sh(dr * (float)sum, 0)) : 0.0f;
            }
            for (int g = 0; g < 8; g++)
                memcpy(pb + 64 * g + 4 * t, qs + 4 * g, 4);
            pd[t] = d;
            psum[t] = sum;
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

#define PANEL_ENTRY(name, pack, min_tokens)                                    \
    static const inferd__panel_kernels name##_panel = {P_LANES, min_tokens, pack, name##_pgemm}

/* Q4_0's token tiles beat a panel below MIN_TOKENS_Q4_0 tokens. */
#ifndef MIN_TOKENS_Q4_0
#define MIN_TOKENS_Q4_0 32
#endif
PANEL_ENTRY(q4_0, pack_q8_0, MIN_TOKENS_Q4_0);
PANEL_ENTRY(q4_1, pack_q8_1, 8);
PANEL_ENTRY(q5_0, pack_q8_0, 8);
PANEL_ENTRY(q5_1, pack_q8_1, 8);
PANEL_ENTRY(q8_0, pack_q8_0, 8);

const inferd__panel_kernels *const inferd__panels_avx512[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_Q4_0] = &q4_0_panel,
    [INFERD_DTYPE_Q4_1] = &q4_1_panel,
    [INFERD_DTYPE_Q5_0] = &q5_0_panel,
    [INFERD_DTYPE_Q5_1] = &q5_1_panel,
    [INFERD_DTYPE_Q8_0] = &q8_0_panel,
};

/* Only the dot products differ from AVX2; conversions fall back to it. */
const inferd_kernels inferd__kernels_avx512[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_F32] = {.type = INFERD_DTYPE_F32, .vec_dot = f32_dot, .mdot = f32_mdot,
                          .vec_dot_gemv = f32_dot_gemv},
    [INFERD_DTYPE_F16] = {.type = INFERD_DTYPE_F16, .vec_dot = f16_dot, .mdot = f16_mdot,
                          .vec_dot_gemv = f16_dot_gemv},
    [INFERD_DTYPE_BF16] = {.type = INFERD_DTYPE_BF16, .vec_dot = bf16_dot, .mdot = bf16_mdot},
    [INFERD_DTYPE_Q4_0] = {.type = INFERD_DTYPE_Q4_0, .vec_dot = q4_0_dot, .mdot = q4_0_mdot},
    [INFERD_DTYPE_Q4_1] = {.type = INFERD_DTYPE_Q4_1, .vec_dot = q4_1_dot, .mdot = q4_1_mdot},
    [INFERD_DTYPE_Q5_0] = {.type = INFERD_DTYPE_Q5_0, .vec_dot = q5_0_dot, .mdot = q5_0_mdot},
    [INFERD_DTYPE_Q5_1] = {.type = INFERD_DTYPE_Q5_1, .vec_dot = q5_1_dot, .mdot = q5_1_mdot},
    [INFERD_DTYPE_Q8_0] = {.type = INFERD_DTYPE_Q8_0, .vec_dot = q8_0_dot, .mdot = q8_0_mdot},
    /* K-quants: quant_k_avx512.c (no panels: matmul uses their mdot). */
    [INFERD_DTYPE_Q4_K] = {.type = INFERD_DTYPE_Q4_K, .vec_dot = inferd__q4_k_dot_avx512,
                           .mdot = inferd__q4_k_mdot_avx512},
    [INFERD_DTYPE_Q5_K] = {.type = INFERD_DTYPE_Q5_K, .vec_dot = inferd__q5_k_dot_avx512,
                           .mdot = inferd__q5_k_mdot_avx512},
    [INFERD_DTYPE_Q6_K] = {.type = INFERD_DTYPE_Q6_K, .vec_dot = inferd__q6_k_dot_avx512,
                           .mdot = inferd__q6_k_mdot_avx512},
    /* Q2_K, Q3_K, IQ4_NL, IQ4_XS: quant_k2_avx512.c. */
    [INFERD_DTYPE_Q2_K] = {.type = INFERD_DTYPE_Q2_K, .vec_dot = inferd__q2_k_dot_avx512,
                           .mdot = inferd__q2_k_mdot_avx512},
    [INFERD_DTYPE_Q3_K] = {.type = INFERD_DTYPE_Q3_K, .vec_dot = inferd__q3_k_dot_avx512,
                           .mdot = inferd__q3_k_mdot_avx512},
    [INFERD_DTYPE_IQ4_NL] = {.type = INFERD_DTYPE_IQ4_NL, .vec_dot = inferd__iq4_nl_dot_avx512,
                             .mdot = inferd__iq4_nl_mdot_avx512,
                             .vec_dot_gemv = inferd__iq4_nl_dot_gemv_avx512},
    [INFERD_DTYPE_IQ4_XS] = {.type = INFERD_DTYPE_IQ4_XS, .vec_dot = inferd__iq4_xs_dot_avx512,
                             .mdot = inferd__iq4_xs_mdot_avx512},
};
