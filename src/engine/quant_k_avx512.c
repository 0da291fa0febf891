/* AVX-512 (F/BW/VL/DQ + VNNI) kernels of the K-quants, called only when
 * cpuid reports them, in the order of quant_impl.h: per (row, token) and
 * super-block, eight exact int32 lane sums (lane k: elements 4k..4k+3 of
 * each 32-element piece, times their sub-block's scale), each added to its
 * f32 lane by one fma.
 *  - vec_dot and generation (one token) keep elements in lanes, as ggml's
 *    AVX2 code does: a row's super-block is four vectors of 64 stored
 *    values against the token's quants arranged to match (vpmaddubsw, then
 *    vpdpwssd by the scales), whose two 8-lane halves add up to the eight
 *    lane sums. mdot takes 16 rows at a time: they share the token's
 *    vectors, keep their lanes two rows per zmm, and the next 16 rows are
 *    prefetched meanwhile.
 *  - Prompts (several tokens) work on tiles of 16 rows, one per vector
 *    lane: the stored values in 4-element groups, transposed so that row
 *    r's group sits in lane r. Each transposed dword holds two groups of
 *    the same canonical lane k (of pieces 2c and 2c + 1, or Q6_K's 4h + j
 *    and 4h + 2 + j); they are rearranged into two dwords of (two elements
 *    of one, two of the other), the token's quants alike, so that
 *    vpmaddubsw gives both groups' partial sums as an i16 pair, vpaddw
 *    their whole sums, and one vpdpwssd by the two sub-block scales adds
 *    them to lane k's sum. Q6_K multiplies a + 128 by q - 32 and starts
 *    each lane's sum at -128 * sum sc * (q - 32). A few super-blocks of a
 *    tile are unpacked once and every token passes over them.
 * The integer sums are exact, so all equal the scalar reference bit for
 * bit. Thread: any (no state). */
#include "quant_avx512.h"

#define QK_K INFERD_QK_K
#define Q8K_BYTES sizeof(inferd_block_q8_k)
#define Q8K_QS offsetof(inferd_block_q8_k, qs)
#define Q8K_BSUMS offsetof(inferd_block_q8_k, bsums)

#define TILE_ROWS 16 /* rows per tile, one per lane */

enum { KQ_Q4, KQ_Q5, KQ_Q6 };

XI size_t k_block_bytes(const int kind)
{
    return kind == KQ_Q4   ? sizeof(inferd_block_q4_k)
           : kind == KQ_Q5 ? sizeof(inferd_block_q5_k)
                           : sizeof(inferd_block_q6_k);
}

XI __m512i bytes(int v) { return _mm512_set1_epi8((char)v); }

XI __m256i load32(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* The f32 d of the Q8_K block at @p ab. */
XI float q8k_d(const uint8_t *ab)
{
    float d;
    memcpy(&d, ab, sizeof(d));
    return d;
}

/* ggml's hsum_float_8 of eight floats in memory. */
XI float hsum8_mem(const float x[8])
{
    return ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
}

/* ---- elements in lanes: vec_dot and one token -------------------------------- */

/*
 * A super-block is four vectors of 64 elements, v = 0..3. Q6_K: vector v is
 * elements 64v..64v+63 (pieces 2v, 2v + 1). Q4_K/Q5_K, following the 64
 * qs bytes of each half h: vector 2h + u holds pieces 4h + u (low 256 bits)
 * and 4h + 2 + u (high), u = 0 the low nibbles, 1 the high ones. Either
 * way dword lane L of a vector holds elements 4(L % 8).. of one piece: its
 * lane L % 8.
 */

/* The 12 packed bytes of a Q4_K/Q5_K super-block's scales and mins as two
 * sets of eight words (layout in quant.h). */
XI void q45_scale_words(const uint8_t packed[INFERD_K_SCALE_BYTES], __m128i *out_sc, __m128i *out_m)
{
    uint32_t u[3];
    memcpy(u, packed, sizeof(u));
    const uint32_t sc_lo = u[0] & 0x3f3f3f3fu, m_lo = u[1] & 0x3f3f3f3fu;
    const uint32_t sc_hi = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 6) & 0x03030303u) << 4;
    const uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 6) & 0x03030303u) << 4;
    const __m128i b = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
    *out_sc = _mm_cvtepu8_epi16(b);
    *out_m = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(b, b));
}

/* Indices (vpermw) of the i16 multiplier of every maddubs pair of each
 * vector, into the super-block's scales as words: Q4_K/Q5_K the scale of
 * each half's piece; Q6_K sub-block 4v + (word / 8). */
typedef struct lane_consts {
    __m512i scale_idx[4];
} lane_consts;

XI void lane_consts_init(const int kind, lane_consts *lc)
{
    UNROLL
    for (int v = 0; v < 4; v++) {
        if (kind == KQ_Q6) {
            lc->scale_idx[v] = join256(_mm256_setr_m128i(_mm_set1_epi16((short)(4 * v)),
                                                         _mm_set1_epi16((short)(4 * v + 1))),
                                       _mm256_setr_m128i(_mm_set1_epi16((short)(4 * v + 2)),
                                                         _mm_set1_epi16((short)(4 * v + 3))));
        } else {
            const int h = v / 2, u = v % 2;
            lc->scale_idx[v] = join256(_mm256_set1_epi16((short)(4 * h + u)),
                                       _mm256_set1_epi16((short)(4 * h + 2 + u)));
        }
    }
}

/* A token's Q8_K super-block arranged as the weight vectors: x[v] the 64
 * quants against vector v; for Q6_K m32[v] = maddubs(32, x[v]), the i16
 * pairs of its offset. */
typedef struct act_vectors {
    __m512i x[4];
    __m512i m32[4];
} act_vectors;

XI void act_vectors_load(const int kind, const uint8_t *ab, act_vectors *av)
{
    const uint8_t *qs = ab + Q8K_QS;
    UNROLL
    for (int v = 0; v < 4; v++) {
        if (kind == KQ_Q6) {
            av->x[v] = _mm512_loadu_si512(qs + 64 * v);
            av->m32[v] = _mm512_maddubs_epi16(bytes(32), av->x[v]);
        } else {
            const int h = v / 2, u = v % 2;
            av->x[v] = join256(load32(qs + 32 * (4 * h + u)), load32(qs + 32 * (4 * h + 2 + u)));
        }
    }
}

/* The stored values of a super-block as its four vectors. */
XI void row_vectors(const int kind, const uint8_t *blk, __m512i q[4])
{
    if (kind == KQ_Q6) {
        /* Per half h: ql[64h + l] holds elements 128h + l (low nibble) and
         * 128h + 64 + l (high), l < 64; bits 4-5 from qh[32h + l % 32],
         * bits 0-1 / 2-3 for the two 32-element pieces of the low nibbles,
         * 4-5 / 6-7 for those of the high ones, shifted per 16-bit word
         * and masked to bits 4-5 of each byte. */
        const __m512i up = join256(_mm256_set1_epi16(4), _mm256_set1_epi16(2));
        const __m512i down = join256(_mm256_set1_epi16(0), _mm256_set1_epi16(2));
        UNROLL
        for (int h = 0; h < 2; h++) {
            const __m512i l = _mm512_loadu_si512(blk + 64 * h);
            const __m512i qh = _mm512_broadcast_i64x4(load32(blk + 128 + 32 * h));
            q[2 * h] = _mm512_ternarylogic_epi32(
                l, bytes(0x0f), _mm512_and_si512(_mm512_sllv_epi16(qh, up), bytes(0x30)), 0xea);
            q[2 * h + 1] = _mm512_ternarylogic_epi32(
                _mm512_srli_epi16(l, 4), bytes(0x0f),
                _mm512_and_si512(_mm512_srlv_epi16(qh, down), bytes(0x30)), 0xea);
        }
        return;
    }
    const uint8_t *qs = blk + (kind == KQ_Q5 ? 48 : 16);
    UNROLL
    for (int h = 0; h < 2; h++) {
        const __m512i l = _mm512_loadu_si512(qs + 64 * h);
        q[2 * h] = _mm512_and_si512(l, bytes(0x0f));
        q[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(l, 4), bytes(0x0f));
    }
    if (kind == KQ_Q5) {
        /* The fifth bit of piece i is bit i of qh[l]. */
        const __m512i qh = _mm512_broadcast_i64x4(load32(blk + 16));
        UNROLL
        for (int v = 0; v < 4; v++) {
            const int h = v / 2, u = v % 2;
            const __m512i sel = join256(_mm256_set1_epi8((char)(1 << (4 * h + u))),
                                        _mm256_set1_epi8((char)(1 << (4 * h + 2 + u))));
            q[v] = _mm512_mask_add_epi8(q[v], _mm512_test_epi8_mask(qh, sel), q[v], bytes(0x10));
        }
    }
}

/* The super-block's scales as words (vpermw table for scale_idx). */
XI __m512i row_scale_words(const int kind, const uint8_t *blk)
{
    if (kind == KQ_Q6)
        return _mm512_castsi256_si512(_mm256_cvtepi8_epi16(load16(blk + 192)));
    __m128i sc, m;
    q45_scale_words(blk + 4, &sc, &m);
    return _mm512_castsi128_si512(sc);
}

/* The i16 multipliers of a row's four vectors, from its scales as words. */
XI void row_multipliers(const int kind, const uint8_t *blk, const lane_consts *lc, __m512i mul[4])
{
    const __m512i sw = row_scale_words(kind, blk);
    UNROLL
    for (int v = 0; v < 4; v++)
        mul[v] = _mm512_permutexvar_epi16(lc->scale_idx[v], sw);
}

/* The 16 i32 lanes of one row's super-block against a token: lanes L and
 * L + 8 hold lane L of two of its pieces, so that their sum is the
 * canonical sumi_L. maddubs: u8 x s8 pairs within i16 (<= 2 * 63 * 128,
 * and Q6_K's difference with maddubs(32, a) within +-24320); vpdpwssd by
 * the multipliers @p mul adds exact i32. */
XI __m512i row_lanes(const int kind, const uint8_t *blk, const act_vectors *av,
                     const __m512i mul[4])
{
    __m512i q[4];
    row_vectors(kind, blk, q);
    __m512i s = _mm512_setzero_si512();
    UNROLL
    for (int v = 0; v < 4; v++) {
        __m512i p = _mm512_maddubs_epi16(q[v], av->x[v]);
        if (kind == KQ_Q6)
            p = _mm512_sub_epi16(p, av->m32[v]);
        s = _mm512_dpwssd_epi32(s, p, mul[v]);
    }
    return s;
}

/* The Q4_K/Q5_K min terms of one (row, token) super-block: the i32 lanes
 * prod_p = m_2p * q8s_2p + m_2p+1 * q8s_2p+1 (p < 4), q8s_s =
 * bsums[2s] + bsums[2s + 1] (|q8s| <= 4096: exact in i16). */
XI __m128i row_min_prods(const uint8_t *blk, const uint8_t *ab)
{
    __m128i sc, m;
    q45_scale_words(blk + 4, &sc, &m);
    const __m256i bs = load32(ab + Q8K_BSUMS);
    const __m128i q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    return _mm_madd_epi16(m, q8s);
}

XI float k_dot(const int kind, int64_t n, const void *w, const void *a)
{
    lane_consts lc;
    lane_consts_init(kind, &lc);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)w + (size_t)b * k_block_bytes(kind);
        const uint8_t *ab = (const uint8_t *)a + (size_t)b * Q8K_BYTES;
        act_vectors av;
        __m512i mul[4];
        act_vectors_load(kind, ab, &av);
        row_multipliers(kind, blk, &lc, mul);
        const __m512i s = row_lanes(kind, blk, &av, mul);
        const __m256i lanes =
            _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
        const float da = q8k_d(ab);
        const float d = da * f16_scalar(blk + (kind == KQ_Q6 ? 208 : 0));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
        if (kind == KQ_Q6)
            continue;
        const float dmin = -da * f16_scalar(blk + 2);
        const __m128i prod = row_min_prods(blk, ab);
        if (kind == KQ_Q4) {
            acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        } else {
            __m128i t = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, _MM_SHUFFLE(2, 3, 0, 1)));
            summs = fmaf(dmin, (float)_mm_cvtsi128_si32(t), summs);
        }
    }
    const float r = hsum8(acc);
    if (kind == KQ_Q6)
        return r;
    if (kind == KQ_Q5)
        return r + summs;
    __m128 m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m)); /* (m0 + m2) + (m1 + m3) */
    return r + _mm_cvtss_f32(m);
}

/* ---- transposes ------------------------------------------------------------------ */

/* out[k] lane r = dword k of the 64 bytes at rp[r] + off (k, r < 16): a
 * 16x16 dword transpose in four steps (32-bit and 64-bit interleaves within
 * 128-bit lanes, then two 128-bit lane shuffles). */
XI void rows16_dwords16(const uint8_t *const rp[TILE_ROWS], size_t off, __m512i out[16])
{
    __m512i t[16], u[16];
    UNROLL
    for (int p = 0; p < 8; p++) {
        const __m512i x = _mm512_loadu_si512(rp[2 * p] + off);
        const __m512i y = _mm512_loadu_si512(rp[2 * p + 1] + off);
        t[2 * p] = _mm512_unpacklo_epi32(x, y);
        t[2 * p + 1] = _mm512_unpackhi_epi32(x, y);
    }
    /* u[4q + j], 128-bit lane L: dword 4L + j of rows 4q..4q+3. */
    UNROLL
    for (int q = 0; q < 4; q++) {
        u[4 * q] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
    }
    UNROLL
    for (int j = 0; j < 4; j++) {
        const __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44);
        const __m512i v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xee);
        const __m512i v2 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44);
        const __m512i v3 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xee);
        out[j] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        out[4 + j] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
        out[8 + j] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        out[12 + j] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
    }
}

/* While super-block @p off of a tile is unpacked, fetch the next tile's
 * rows into L1 in memory order, one slice of 16 * block_bytes per
 * super-block, so that the whole next tile has arrived when it starts
 * (the hardware prefetcher loses track of 16 interleaved row streams; a
 * sequential walk over the contiguous rows keeps DRAM pages open, and
 * measured best). Prefetches never fault, so addresses past the matrix
 * are fine. */
XI void prefetch_next_tile(const uint8_t *const rp[TILE_ROWS], size_t ws, size_t off,
                           size_t block_bytes)
{
    const char *p = (const char *)rp[0] + TILE_ROWS * ws + off * TILE_ROWS;
    for (size_t o = 0; o < TILE_ROWS * block_bytes; o += 64)
        _mm_prefetch(p + o, _MM_HINT_T0);
}

/* ---- tiles: rows in lanes ----------------------------------------------------------- */

#define TILE_TOKENS 8   /* tokens per pass over the prepared super-blocks */
#define TILE_BLOCKS 4   /* super-blocks prepared at a time (22 KiB) */
#define CHUNK_TOKENS 32 /* tokens whose running sums a tile keeps (24 KiB) */
/* Up to this many tokens the weights are streamed once: prefetch them. */
#define STREAM_TOKENS 4

/* Scales of one super-block of a tile: lane r of every vector is row r. */
typedef struct tile_header {
    /* The i16 scale pair of each kind of transposed dword (see
     * scale_pair_index): Q4_K/Q5_K (sc_2c, sc_2c+1) for c < 4; Q6_K
     * (sc_s, sc_s+4) for s = 0..3, 8..11. */
    __m512i scale_pair[8];
    __m512i min_pair[4]; /* Q4_K/Q5_K: (m_2p, m_2p+1), against (q8s_2p, q8s_2p+1) */
    __m512 d, dmin;      /* dmin 0 for Q6_K */
} tile_header;

/* One super-block of a tile, unpacked for several tokens. Transposed dword
 * k holds two groups, lo (see above) and hi (16 groups after it for Q6_K,
 * 8 for Q4_K/Q5_K), of four values each: q[2k] = (lo0, lo1, hi0, hi1), q[2k + 1] = (lo2, lo3, hi2, hi3), the
 * stored values (Q4_K/Q5_K, unsigned) or q - 32 (Q6_K, signed). */
typedef struct tile_block {
    __m512i q[64];
    __m512i start[8]; /* Q6_K: lane k's sum starts at -128 * sum sc * (q - 32) */
    tile_header hdr;
} tile_block;

/* One token's running sums over a tile (rows in lanes): the eight lanes,
 * Q4_K's four min lanes, Q5_K's summs in acc_m[0]. */
typedef struct tile_sums {
    __m512 acc[8];
    __m512 acc_m[4];
} tile_sums;

/* The low words of each dword of @p lo and @p hi as (lo, hi) word pairs. */
XI __m512i pack_pair(__m512i lo, __m512i hi)
{
    return _mm512_mask_blend_epi16(0xAAAAAAAAu, lo, _mm512_slli_epi32(hi, 16));
}

/* The high words of each dword of @p lo and @p hi as (lo, hi) word pairs. */
XI __m512i pack_pair_high(__m512i lo, __m512i hi)
{
    return _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(lo, 16), hi);
}

/* Header of the Q4_K / Q5_K super-block at byte @p off of the 16 rows. */
XI void tile_header_q45(const uint8_t *const rp[TILE_ROWS], size_t off, tile_header *th)
{
    __m512i h[4], sc[8], m[8];
    /* Dwords: (d, dmin), scales[0..3], scales[4..7], scales[8..11]. */
    rows16_dwords4(rp, off, h);
    th->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h[0]));
    th->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h[0], 16)));
    const __m512i six = _mm512_set1_epi32(63), four = _mm512_set1_epi32(15);
    const __m512i top = _mm512_set1_epi32(0x30);
    UNROLL
    for (int s = 0; s < 4; s++) {
        m[s] = _mm512_and_si512(_mm512_srli_epi32(h[2], 8 * s), six);
        m[s + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(h[3], 8 * s + 4), four),
                                   _mm512_and_si512(_mm512_srli_epi32(h[2], 8 * s + 2), top));
        sc[s] = _mm512_and_si512(_mm512_srli_epi32(h[1], 8 * s), six);
        sc[s + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(h[3], 8 * s), four),
                                    _mm512_and_si512(_mm512_srli_epi32(h[1], 8 * s + 2), top));
    }
    UNROLL
    for (int c = 0; c < 4; c++) {
        th->scale_pair[c] = pack_pair(sc[2 * c], sc[2 * c + 1]);
        th->min_pair[c] = pack_pair(m[2 * c], m[2 * c + 1]);
    }
}

/* Header of the Q6_K super-block at byte @p off of the 16 rows. */
XI void tile_header_q6(const uint8_t *const rp[TILE_ROWS], size_t off, tile_header *th)
{
    __m512i sc4[4], tail[4], sc[16];
    rows16_dwords4(rp, off + 192, sc4);
    /* Bytes 194..209: the last dword holds d in its high half. */
    rows16_dwords4(rp, off + 194, tail);
    th->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(tail[3], 16)));
    th->dmin = _mm512_setzero_ps();
    UNROLL
    for (int s = 0; s < 16; s++)
        sc[s] = _mm512_srai_epi32(_mm512_slli_epi32(sc4[s / 4], 24 - 8 * (s % 4)), 24);
    UNROLL
    for (int i = 0; i < 8; i++) {
        const int s = i % 4 + 8 * (i / 4);
        th->scale_pair[i] = pack_pair(sc[s], sc[s + 4]);
    }
}

/*
 * Where the quants of transposed dword k of a super-block come from (its
 * low group: 32 * (k / 16) + k % 16 for Q6_K, 16 * (k / 8) + k % 8 for
 * Q4_K/Q5_K). Q4_K/Q5_K:
 * qs dword k holds chunk c = k / 8's elements 64c + 4m.. (m = k % 8) in
 * its low nibbles and 64c + 32 + 4m.. in its high ones: groups 16c + m and
 * 16c + 8 + m, sub-blocks 2c and 2c + 1. Q6_K: ql dword k of half h = k / 16
 * (e = k % 16) holds groups 32h + e (low) and 32h + 16 + e (high), their
 * bits 4-5 in qh dword 8h + k % 8.
 */

/* Byte-wise (a & 0x0f) | b, for b holding bits only above the nibble. */
XI __m512i merge_low_nibble(__m512i a, __m512i b)
{
    return _mm512_ternarylogic_epi32(a, bytes(0x0f), b, 0xea);
}

/* The bits of every byte of @p h from bit @p from on, moved to start at
 * bit @p to and kept where @p mask_at_to has them (32-bit shifts: the mask
 * keeps only bits that stayed in their byte). */
XI __m512i move_bits(__m512i h, int from, int to, int mask_at_to)
{
    const __m512i v = from < to   ? _mm512_slli_epi32(h, (unsigned)(to - from))
                      : from > to ? _mm512_srli_epi32(h, (unsigned)(from - to))
                                  : h;
    return _mm512_and_si512(v, bytes(mask_at_to));
}

/* Split qs dword k (d) into its two groups' stored values; Q5_K adds the
 * fifth bits, bits 2c and 2c + 1 of qh dword k % 8. */
XI void split_q45(const int kind, int k, __m512i d, const __m512i *qh, __m512i *lo, __m512i *hi)
{
    const int c = k / 8;
    if (kind == KQ_Q4) {
        *lo = _mm512_and_si512(d, bytes(0x0f));
        *hi = _mm512_and_si512(_mm512_srli_epi32(d, 4), bytes(0x0f));
        return;
    }
    const __m512i h = qh[k % 8];
    *lo = merge_low_nibble(d, move_bits(h, 2 * c, 4, 0x10));
    *hi = merge_low_nibble(_mm512_srli_epi32(d, 4), move_bits(h, 2 * c + 1, 4, 0x10));
}

/* Split Q6_K ql dword k (d) with its qh dword (bits 0-1 / 4-5 for e < 8,
 * 2-3 / 6-7 for e >= 8) into its two groups. */
XI void split_q6(int k, __m512i d, __m512i h, __m512i *lo, __m512i *hi)
{
    const int sh = k % 16 < 8 ? 0 : 2;
    *lo = merge_low_nibble(d, move_bits(h, sh, 4, 0x30));
    *hi = merge_low_nibble(_mm512_srli_epi32(d, 4), move_bits(h, sh + 4, 4, 0x30));
}

/* Offset of the quants (Q4_K/Q5_K qs, Q6_K ql) inside a block. */
XI size_t quants_off(const int kind) { return kind == KQ_Q4 ? 16 : kind == KQ_Q5 ? 48 : 0; }

/* The high bits of a super-block: Q5_K's 8 qh dwords, Q6_K's 16. */
XI void tile_high_bits(const int kind, const uint8_t *const rp[TILE_ROWS], size_t off,
                       __m512i qh[16])
{
    if (kind == KQ_Q5) {
        rows16_dwords4(rp, off + 16, qh);
        rows16_dwords4(rp, off + 32, qh + 4);
    } else if (kind == KQ_Q6) {
        rows16_dwords16(rp, off + 128, qh);
    }
}

/* Split transposed dword k into its two groups, whatever the kind. */
XI void split_groups(const int kind, int k, __m512i d, const __m512i qh[16], __m512i *lo,
                     __m512i *hi)
{
    if (kind == KQ_Q6)
        split_q6(k, d, qh[8 * (k / 16) + k % 8], lo, hi);
    else
        split_q45(kind, k, d, qh, lo, hi);
}

XI void load_tile_header(const int kind, const uint8_t *const rp[TILE_ROWS], size_t off,
                         tile_header *th)
{
    if (kind == KQ_Q6)
        tile_header_q6(rp, off, th);
    else
        tile_header_q45(rp, off, th);
}

/*
 * The scale pair of transposed dword k. Both its groups are lane k % 8 of
 * their pieces: Q4_K/Q5_K pieces 2c and 2c + 1 (c = k / 8), so sub-blocks
 * 2c, 2c + 1; Q6_K (h = k / 16, e = k % 16) groups 32h + e and
 * 32h + 16 + e, so sub-blocks 8h + e / 4 and that + 4.
 */
XI int scale_pair_index(const int kind, int k)
{
    return kind == KQ_Q6 ? 4 * (k / 16) + (k % 16) / 4 : k / 8;
}

/* q8s_s = bsums[2s] + bsums[2s + 1] of a token's Q8_K block, the sum of
 * sub-block s's quants (|q8s| <= 4096: exact in i16), as the i16 pairs
 * (q8s_2p, q8s_2p+1), p < 4. */
XI void q8s_pairs(const uint8_t *ab, int32_t out[4])
{
    const __m256i bs = load32(ab + Q8K_BSUMS);
    _mm_storeu_si128((__m128i *)out,
                     _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
}

/* Source words of the arranged activation (vpermw / vpermt2w indices):
 * output dwords 2m, 2m + 1 of transposed dword k are words 2m, 16 + 2m
 * and 2m + 1, 17 + 2m of chunk c's 64 bytes for Q4_K/Q5_K (k = 8c + m);
 * for Q6_K (k = 16h + e, e = 8o + m, output o of half h) words 2e, 32 + 2e
 * and 2e + 1, 33 + 2e of half h's 128 bytes. */
static const _Alignas(64) uint16_t act_words_q45[32] = {
    0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31,
};
static const _Alignas(64) uint16_t act_words_q6[2][32] = {
    {
        0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
        8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47,
    },
    {
        16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
        24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63,
    },
};

/* A token's Q8_K super-block arranged as the tile's quants: dwords 2k and
 * 2k + 1 are (a_lo0, a_lo1, a_hi0, a_hi1) and (a_lo2, a_lo3, a_hi2, a_hi3)
 * of transposed dword k's two groups; for Q6_K the quants + 128, unsigned. */
typedef struct tile_act {
    _Alignas(64) uint8_t x[QK_K];
    int32_t q8s[4]; /* Q4_K/Q5_K: q8s_pairs */
} tile_act;

XI void tile_act_load(const int kind, const uint8_t *ab, tile_act *ta)
{
    const uint8_t *qs = ab + Q8K_QS;
    if (kind != KQ_Q6)
        q8s_pairs(ab, ta->q8s);
    const __m512i idx_q45 = _mm512_load_si512(act_words_q45);
    const __m512i idx_q6[2] = {_mm512_load_si512(act_words_q6[0]),
                               _mm512_load_si512(act_words_q6[1])};
    if (kind == KQ_Q6) {
        UNROLL
        for (int h = 0; h < 2; h++) {
            const __m512i a0 = _mm512_xor_si512(_mm512_loadu_si512(qs + 128 * h), bytes(0x80));
            const __m512i a1 = _mm512_xor_si512(_mm512_loadu_si512(qs + 128 * h + 64), bytes(0x80));
            UNROLL
            for (int o = 0; o < 2; o++)
                _mm512_store_si512(ta->x + 128 * h + 64 * o,
                                   _mm512_permutex2var_epi16(a0, idx_q6[o], a1));
        }
        return;
    }
    UNROLL
    for (int c = 0; c < 4; c++)
        _mm512_store_si512(ta->x + 64 * c,
                           _mm512_permutexvar_epi16(idx_q45, _mm512_loadu_si512(qs + 64 * c)));
}

/*
 * Transposed dword k (its rearranged pair q2[0], q2[1]) against a token,
 * added to its lane's sum: vpmaddubsw gives i16 (lo, hi) partial sums
 * (u8 x s8 pairs: Q4_K/Q5_K <= 2 * 31 * 128, Q6_K (a + 128)(q - 32)
 * within +-2 * 255 * 32), vpaddw the groups' whole sums (within i16), and
 * vpdpwssd multiplies them by the scale pair. Exact.
 */
XI __m512i dword_step(const int kind, int k, __m512i sumi, const __m512i q2[2], __m512i scale_pair,
                      const tile_act *ta)
{
    const __m512i x0 = bcast32(ta->x + 8 * (size_t)k), x1 = bcast32(ta->x + 8 * (size_t)k + 4);
    const __m512i p0 =
        kind == KQ_Q6 ? _mm512_maddubs_epi16(x0, q2[0]) : _mm512_maddubs_epi16(q2[0], x0);
    const __m512i p1 =
        kind == KQ_Q6 ? _mm512_maddubs_epi16(x1, q2[1]) : _mm512_maddubs_epi16(q2[1], x1);
    return _mm512_dpwssd_epi32(sumi, _mm512_add_epi16(p0, p1), scale_pair);
}

/* The min terms of a super-block for one token (rows in lanes): prod_p by
 * one vpdpwssd of (m_2p, m_2p+1) against (q8s_2p, q8s_2p+1); dmin =
 * (-da) * dminw is the negated rounded product, so fnmadd(da * dminw, x,
 * acc) is fma(dmin, x, acc). */
XI void block_mins(const int kind, const tile_header *th, float da, const int32_t q8s[4],
                   __m512 acc_m[4])
{
    const __m512 dmin = _mm512_mul_ps(_mm512_set1_ps(da), th->dmin);
    __m512i prod[4];
    UNROLL
    for (int p = 0; p < 4; p++)
        prod[p] =
            _mm512_dpwssd_epi32(_mm512_setzero_si512(), th->min_pair[p], _mm512_set1_epi32(q8s[p]));
    if (kind == KQ_Q4) {
        UNROLL
        for (int p = 0; p < 4; p++)
            acc_m[p] = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(prod[p]), acc_m[p]);
    } else {
        const __m512i tot = _mm512_add_epi32(_mm512_add_epi32(prod[0], prod[1]),
                                             _mm512_add_epi32(prod[2], prod[3]));
        acc_m[0] = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(tot), acc_m[0]);
    }
}

/* Unpack the super-block at byte @p off of the 16 rows for tile_pass. */
XI void tile_prep(const int kind, const uint8_t *const rp[TILE_ROWS], size_t off, tile_block *tb)
{
    __m512i qh[16];
    load_tile_header(kind, rp, off, &tb->hdr);
    tile_high_bits(kind, rp, off, qh);
    UNROLL
    for (int half = 0; half < 2; half++) {
        __m512i d[16];
        rows16_dwords16(rp, off + quants_off(kind) + 64 * (size_t)half, d);
        UNROLL
        for (int j = 0; j < 16; j++) {
            const int k = 16 * half + j;
            __m512i lo, hi;
            split_groups(kind, k, d[j], qh, &lo, &hi);
            if (kind == KQ_Q6) {
                lo = _mm512_sub_epi8(lo, bytes(32));
                hi = _mm512_sub_epi8(hi, bytes(32));
            }
            tb->q[2 * k] = pack_pair(lo, hi);
            tb->q[2 * k + 1] = pack_pair_high(lo, hi);
        }
    }
    if (kind != KQ_Q6)
        return;
    /* Lane k: transposed dwords 8c + k, the (lo, hi) sums of q - 32 by
     * vpmaddubsw against ones and vpaddw, times their scale pair. */
    UNROLL
    for (int k = 0; k < 8; k++) {
        __m512i c = _mm512_setzero_si512();
        UNROLL
        for (int cc = 0; cc < 4; cc++) {
            const int kd = 8 * cc + k;
            const __m512i s = _mm512_add_epi16(_mm512_maddubs_epi16(bytes(1), tb->q[2 * kd]),
                                               _mm512_maddubs_epi16(bytes(1), tb->q[2 * kd + 1]));
            c = _mm512_dpwssd_epi32(c, s, tb->hdr.scale_pair[scale_pair_index(kind, kd)]);
        }
        tb->start[k] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(c, 7));
    }
}

/*
 * NT tokens (1..TILE_TOKENS) through n_blocks prepared super-blocks: per
 * super-block and token, lane k's sum over transposed dwords 8c + k
 * (c < 4), its fma with d = da * dw, and the min terms. @p a[t] points at
 * token t's Q8_K block of the first prepared super-block; its running sums
 * are sums[t], which start at +0 when @p first (the row's first super-block).
 */
XI void tile_pass(const int kind, const int NT, const tile_block *tb, int n_blocks,
                  const uint8_t *const a[], tile_sums *sums, int first)
{
    if (first) {
        UNROLL
        for (int t = 0; t < NT; t++)
            UNROLL
        for (int p = 0; p < 4; p++)
            sums[t].acc_m[p] = _mm512_setzero_ps();
    }
    tile_act ta[TILE_TOKENS];
    for (int bb = 0; bb < n_blocks; bb++) {
        const tile_block *blk = &tb[bb];
        const uint8_t *ab[TILE_TOKENS];
        __m512 dv[TILE_TOKENS];
        UNROLL
        for (int t = 0; t < NT; t++) {
            ab[t] = a[t] + (size_t)bb * Q8K_BYTES;
            dv[t] = _mm512_mul_ps(_mm512_set1_ps(q8k_d(ab[t])), blk->hdr.d);
            tile_act_load(kind, ab[t], &ta[t]);
        }
        for (int k = 0; k < 8; k++) {
            __m512i sumi[TILE_TOKENS];
            UNROLL
            for (int t = 0; t < NT; t++)
                sumi[t] = kind == KQ_Q6 ? blk->start[k] : _mm512_setzero_si512();
            UNROLL
            for (int c = 0; c < 4; c++) {
                const int kd = 8 * c + k;
                const __m512i sp = blk->hdr.scale_pair[scale_pair_index(kind, kd)];
                UNROLL
                for (int t = 0; t < NT; t++)
                    sumi[t] = dword_step(kind, kd, sumi[t], &blk->q[2 * kd], sp, &ta[t]);
            }
            UNROLL
            for (int t = 0; t < NT; t++)
                sums[t].acc[k] =
                    _mm512_fmadd_ps(dv[t], _mm512_cvtepi32_ps(sumi[t]),
                                    first && bb == 0 ? _mm512_setzero_ps() : sums[t].acc[k]);
        }
        if (kind == KQ_Q6)
            continue;
        UNROLL
        for (int t = 0; t < NT; t++)
            block_mins(kind, &blk->hdr, q8k_d(ab[t]), ta[t].q8s, sums[t].acc_m);
    }
}

/* A token's results over a tile (rows in lanes, so hsum8 is vertical), to
 * out[r] for the rows in @p live. */
XI void tile_finish(const int kind, const tile_sums *s, float *out, __mmask16 live)
{
    const __m512 *x = s->acc;
    __m512 r = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x[0], x[4]), _mm512_add_ps(x[2], x[6])),
                             _mm512_add_ps(_mm512_add_ps(x[1], x[5]), _mm512_add_ps(x[3], x[7])));
    if (kind == KQ_Q4)
        r = _mm512_add_ps(r, _mm512_add_ps(_mm512_add_ps(s->acc_m[0], s->acc_m[2]),
                                           _mm512_add_ps(s->acc_m[1], s->acc_m[3])));
    else if (kind == KQ_Q5)
        r = _mm512_add_ps(r, s->acc_m[0]);
    _mm512_mask_storeu_ps(out, live, r);
}

/* Two rows' 16 lanes folded to their eight canonical lane sums each:
 * row a in lanes 0..7, row b in lanes 8..15. */
XI __m512i fold_pair(__m512i a, __m512i b)
{
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x44), _mm512_shuffle_i32x4(a, b, 0xee));
}

/* The canonical results of 16 rows from their lanes (acc[j]: rows 2j and
 * 2j + 1, eight lanes each) and min terms (rows in lanes), to out[r] for
 * the rows in @p live. */
XI void finish_pairs(const int kind, const __m512 acc[8], const __m512 acc_m[4], float *out,
                     __mmask16 live)
{
    _Alignas(64) float lanes[TILE_ROWS * 8], mins[TILE_ROWS];
    UNROLL
    for (int j = 0; j < 8; j++)
        _mm512_store_ps(lanes + 16 * j, acc[j]);
    if (kind == KQ_Q4)
        _mm512_store_ps(mins, _mm512_add_ps(_mm512_add_ps(acc_m[0], acc_m[2]),
                                            _mm512_add_ps(acc_m[1], acc_m[3])));
    else if (kind == KQ_Q5)
        _mm512_store_ps(mins, acc_m[0]);
    for (int r = 0; r < TILE_ROWS; r++) {
        if (!(live >> r & 1))
            continue;
        const float s = hsum8_mem(lanes + 8 * r);
        out[r] = kind == KQ_Q6 ? s : s + mins[r];
    }
}

/* 128-bit lane @p l (0..3, a constant once unrolled) of @p x in all four
 * lanes. The immediate is spelled out per lane: clang wants a constant
 * expression even where the loop is unrolled. */
XI __m512i lane128_broadcast(__m512i x, int l)
{
    switch (l) {
    case 0: return _mm512_shuffle_i32x4(x, x, 0x00);
    case 1: return _mm512_shuffle_i32x4(x, x, 0x55);
    case 2: return _mm512_shuffle_i32x4(x, x, 0xaa);
    default: return _mm512_shuffle_i32x4(x, x, 0xff);
    }
}

/* From four Q4_K/Q5_K heads (one per 128-bit lane: d, dmin, scales[12]),
 * the eight 6-bit scales as bytes 0..7 of each lane (layout in quant.h). */
XI __m512i heads_scales_q45(__m512i z)
{
    const __m512i pick = _mm512_broadcast_i32x4(
        _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1));
    const __m512i pick_top = _mm512_broadcast_i32x4(
        _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1));
    const __m512i keep = _mm512_broadcast_i32x4(
        _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 0, 0, 0, 0, 0, 0, 0, 0));
    /* sc_s+4's bits 4-5 are bits 6-7 of scales[s]: >> 2, masked to 0x30. */
    const __m512i top =
        _mm512_and_si512(_mm512_srli_epi16(_mm512_shuffle_epi8(z, pick_top), 2), bytes(0x30));
    return _mm512_ternarylogic_epi32(_mm512_shuffle_epi8(z, pick), keep, top, 0xea);
}

/*
 * One token through all super-blocks of a 16-row tile, elements in lanes:
 * the token's vectors are arranged once per super-block and serve the 16
 * rows; each row's 16 lanes fold to its eight (two rows per zmm), which
 * take one fma with the pair's d = da * dw (rows in lanes, permuted). The
 * min terms run rows in lanes, as in tile_pass. While a super-block is
 * used, the next tile's rows are prefetched.
 */
XI void tile_one_token(const int kind, const uint8_t *const rp[TILE_ROWS], size_t ws, int64_t nb,
                       const uint8_t *a, float *out, __mmask16 live)
{
    const size_t bs = k_block_bytes(kind);
    lane_consts lc;
    lane_consts_init(kind, &lc);
    /* Q4_K/Q5_K: the words of vector v's multipliers, scale bytes of its
     * two pieces (4h + u in the low 256 bits, 4h + 2 + u in the high). */
    __m512i mul_pick[4];
    UNROLL
    for (int v = 0; v < 4; v++) {
        const int h = v / 2, u = v % 2;
        mul_pick[v] = join256(_mm256_set1_epi16((short)(0xff00 | (4 * h + u))),
                              _mm256_set1_epi16((short)(0xff00 | (4 * h + 2 + u))));
    }
    const __m512i pair_idx = join256(_mm256_set1_epi32(0), _mm256_set1_epi32(1));
    tile_sums s;
    memset(&s, 0, sizeof(s));
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * bs;
        const uint8_t *ab = a + (size_t)b * Q8K_BYTES;
        prefetch_next_tile(rp, ws, off, bs);
        act_vectors av;
        act_vectors_load(kind, ab, &av);
        tile_header th;
        load_tile_header(kind, rp, off, &th);
        _Alignas(64) float d[TILE_ROWS];
        _mm512_store_ps(d, _mm512_mul_ps(_mm512_set1_ps(q8k_d(ab)), th.d));
        __m512i scz[4];
        if (kind != KQ_Q6) {
            __m512i z[4];
            rows16_heads(rp, off, z);
            UNROLL
            for (int i = 0; i < 4; i++)
                scz[i] = heads_scales_q45(z[i]);
        }
        UNROLL
        for (int j = 0; j < 8; j++) {
            __m512i lanes[2];
            UNROLL
            for (int e = 0; e < 2; e++) {
                const int r = 2 * j + e;
                __m512i mul[4];
                if (kind == KQ_Q6) {
                    row_multipliers(kind, rp[r] + off, &lc, mul);
                } else {
                    /* Row r = 4L + i: lane L of scz[i] through the vector. */
                    const __m512i sc = lane128_broadcast(scz[r % 4], r / 4);
                    UNROLL
                    for (int v = 0; v < 4; v++)
                        mul[v] = _mm512_shuffle_epi8(sc, mul_pick[v]);
                }
                lanes[e] = row_lanes(kind, rp[r] + off, &av, mul);
            }
            const __m512i f = fold_pair(lanes[0], lanes[1]);
            const __m512 dj = _mm512_permutexvar_ps(
                _mm512_add_epi32(pair_idx, _mm512_set1_epi32(2 * j)), _mm512_load_ps(d));
            s.acc[j] = _mm512_fmadd_ps(dj, _mm512_cvtepi32_ps(f), s.acc[j]);
        }
        if (kind != KQ_Q6) {
            int32_t q8s[4];
            q8s_pairs(ab, q8s);
            block_mins(kind, &th, q8k_d(ab), q8s, s.acc_m);
        }
    }
    finish_pairs(kind, s.acc, s.acc_m, out, live);
}

/*
 * Rows in tiles of 16 (the last repeats its last row in the spare lanes).
 * One token: tile_one_token. More: per tile, CHUNK_TOKENS tokens at a
 * time keep their running sums while the tile's super-blocks are unpacked
 * TILE_BLOCKS at a time, each pass of TILE_TOKENS tokens over them
 * continuing its tokens' sums; then the chunk's results are written.
 */
XI void k_mdot(const int kind, int64_t n, const void *w, size_t w_stride, int64_t n_rows,
               const void *a, size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    const int64_t nb = n / QK_K;
    const size_t bs = k_block_bytes(kind);
    _Alignas(64) tile_block tb[TILE_BLOCKS];
    _Alignas(64) tile_sums sums[CHUNK_TOKENS];

    for (int64_t r0 = 0; r0 < n_rows; r0 += TILE_ROWS) {
        const int nr = n_rows - r0 < TILE_ROWS ? (int)(n_rows - r0) : TILE_ROWS;
        const __mmask16 live = (__mmask16)((1u << nr) - 1u);
        const uint8_t *rp[TILE_ROWS];
        for (int r = 0; r < TILE_ROWS; r++)
            rp[r] = (const uint8_t *)w + (size_t)(r0 + (r < nr ? r : nr - 1)) * w_stride;
        if (n_toks == 1) {
            tile_one_token(kind, rp, w_stride, nb, a, out + (size_t)r0, live);
            continue;
        }
        for (int64_t c0 = 0; c0 < n_toks; c0 += CHUNK_TOKENS) {
            const int nc = n_toks - c0 < CHUNK_TOKENS ? (int)(n_toks - c0) : CHUNK_TOKENS;
            for (int64_t b0 = 0; b0 < nb; b0 += TILE_BLOCKS) {
                const int cb = nb - b0 < TILE_BLOCKS ? (int)(nb - b0) : TILE_BLOCKS;
                for (int bb = 0; bb < cb; bb++) {
                    const size_t off = (size_t)(b0 + bb) * bs;
                    if (n_toks <= STREAM_TOKENS)
                        prefetch_next_tile(rp, w_stride, off, bs);
                    tile_prep(kind, rp, off, &tb[bb]);
                }
                for (int t0 = 0; t0 < nc; t0 += TILE_TOKENS) {
                    const int nt = nc - t0 < TILE_TOKENS ? nc - t0 : TILE_TOKENS;
                    const uint8_t *at[TILE_TOKENS];
                    for (int t = 0; t < nt; t++)
                        at[t] = (const uint8_t *)a + (size_t)(c0 + t0 + t) * a_stride +
                                (size_t)b0 * Q8K_BYTES;
                    /* clang-format off */
                    switch (nt) {
#define PASS_CASE(k_) \
    case k_: tile_pass(kind, k_, tb, cb, at, sums + t0, b0 == 0); break;
                    PASS_CASE(1) PASS_CASE(2) PASS_CASE(3) PASS_CASE(4)
                    PASS_CASE(5) PASS_CASE(6) PASS_CASE(7) PASS_CASE(8)
#undef PASS_CASE
                    default: break;
                    }
                    /* clang-format on */
                }
            }
            for (int t = 0; t < nc; t++)
                tile_finish(kind, &sums[t], out + (size_t)(c0 + t) * out_stride + (size_t)r0, live);
        }
    }
}

/* ---- entry points ---------------------------------------------------------------- */

float inferd__q4_k_dot_avx512(int64_t n, const void *w, const void *a)
{
    return k_dot(KQ_Q4, n, w, a);
}

float inferd__q5_k_dot_avx512(int64_t n, const void *w, const void *a)
{
    return k_dot(KQ_Q5, n, w, a);
}

float inferd__q6_k_dot_avx512(int64_t n, const void *w, const void *a)
{
    return k_dot(KQ_Q6, n, w, a);
}

void inferd__q4_k_mdot_avx512(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                              const void *a, size_t a_stride, int64_t n_toks, float *out,
                              size_t out_stride)
{
    k_mdot(KQ_Q4, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

void inferd__q5_k_mdot_avx512(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                              const void *a, size_t a_stride, int64_t n_toks, float *out,
                              size_t out_stride)
{
    k_mdot(KQ_Q5, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

void inferd__q6_k_mdot_avx512(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                              const void *a, size_t a_stride, int64_t n_toks, float *out,
                              size_t out_stride)
{
    k_mdot(KQ_Q6, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}
