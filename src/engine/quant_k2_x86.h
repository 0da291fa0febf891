/* The x86 kernels of Q2_K, Q3_K, IQ4_NL and IQ4_XS, included by
 * quant_k2_avx2.c (K2_VNNI 0) and quant_k2_avx512.c (K2_VNNI 1: the 4-byte
 * groups summed by vpdpbusd instead of maddubs + madd). Elements in lanes,
 * as ggml-cpu's AVX2 kernels: each 32-element piece of a weight block is
 * unpacked to bytes and the i16 scale of each of its eight 4-element groups
 * (one per i32 lane); the exact int32 lane sums of quant_impl.h then go
 * through the float steps of each type's order. mdot unpacks every weight
 * (super-)block once and uses it for up to K2_TOKS tokens. Everything is
 * static inline. Thread: any (no state). */
#ifndef INFERD_ENGINE_QUANT_K2_X86_H
#define INFERD_ENGINE_QUANT_K2_X86_H

#include <immintrin.h>
#include <string.h>

#include "quant_x86.h"

#define K2_TOKS 8 /* tokens sharing one unpacked weight block in mdot */

enum { K2_Q2, K2_Q3, K2_XS, K2_NL };

XI size_t k2_wbytes(const int kind)
{
    return kind == K2_Q2   ? sizeof(inferd_block_q2_k)
           : kind == K2_Q3 ? sizeof(inferd_block_q3_k)
           : kind == K2_XS ? sizeof(inferd_block_iq4_xs)
                           : sizeof(inferd_block_iq4_nl);
}

XI int k2_pieces(const int kind) { return kind == K2_NL ? 1 : 8; }

/* One weight (super-)block unpacked: per piece the signed values (v), as
 * bytes in element order, and the i16 multiplier of each maddubs pair. */
typedef struct k2_block {
    __m256i v[8];
    __m256i mul[8];
    __m256i mins;    /* Q2_K: the 16 mins as i16 */
    float dw, dminw; /* the block's scales, widened */
} k2_block;

/* Values of IQ4 piece from 16 bytes of nibbles: kv of low nibbles
 * (elements 0..15), then of high nibbles (16..31). */
XI __m256i k2_iq4_piece(const uint8_t *qs)
{
    const __m128i kv = _mm_loadu_si128((const __m128i *)inferd__kvalues_iq4nl);
    const __m128i b = _mm_loadu_si128((const __m128i *)qs);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_shuffle_epi8(kv, _mm_and_si128(b, m4));
    const __m128i hi = _mm_shuffle_epi8(kv, _mm_and_si128(_mm_srli_epi16(b, 4), m4));
    return _mm256_setr_m128i(lo, hi);
}

/* Scales of sub-blocks of 16: the low 128-bit half of piece p is
 * sub-block 2p, the high one 2p + 1. */
XI __m256i k2_mul16(int lo, int hi)
{
    return _mm256_setr_m128i(_mm_set1_epi16((short)lo), _mm_set1_epi16((short)hi));
}

XI void k2_unpack(const int kind, const uint8_t *blk, k2_block *u)
{
    if (kind == K2_NL) {
        const inferd_block_iq4_nl *b = (const inferd_block_iq4_nl *)(const void *)blk;
        u->v[0] = k2_iq4_piece(b->qs);
        u->mul[0] = _mm256_set1_epi16(1);
        u->dw = f16_scalar(&b->d);
        return;
    }
    if (kind == K2_XS) {
        const inferd_block_iq4_xs *b = (const inferd_block_iq4_xs *)(const void *)blk;
        for (int p = 0; p < 8; p++) {
            u->v[p] = k2_iq4_piece(b->qs + 16 * p);
            u->mul[p] = _mm256_set1_epi16((short)inferd__iq4_xs_scale(b, p));
        }
        u->dw = f16_scalar(&b->d);
        return;
    }
    const uint8_t *qs = blk + (kind == K2_Q2 ? 16 : 32);
    const __m256i m3 = _mm256_set1_epi8(3);
    if (kind == K2_Q2) {
        const inferd_block_q2_k *b = (const inferd_block_q2_k *)(const void *)blk;
        const __m128i sm = _mm_loadu_si128((const __m128i *)b->scales);
        u->mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(0x0f)));
        for (int p = 0; p < 8; p++)
            u->mul[p] = k2_mul16(b->scales[2 * p] & 15, b->scales[2 * p + 1] & 15);
        u->dw = f16_scalar(&b->d);
        u->dminw = f16_scalar(&b->dmin);
    } else {
        const inferd_block_q3_k *b = (const inferd_block_q3_k *)(const void *)blk;
        int sc[16];
        inferd__q3_k_scales(b->scales, sc);
        for (int p = 0; p < 8; p++)
            u->mul[p] = k2_mul16(sc[2 * p], sc[2 * p + 1]);
        u->dw = f16_scalar(&b->d);
    }
    const __m256i hm = _mm256_loadu_si256((const __m256i *)blk); /* Q3_K's hmask */
    for (int h = 0; h < 2; h++) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * j), m3);
            if (kind == K2_Q3) {
                const __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + j)));
                const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(4)));
            }
            u->v[4 * h + j] = v;
        }
    }
}

/* Exact i32 lanes of piece p against 32 activation quants @p x: lane k =
 * mul_k * sum of elements 4k..4k+3 of (value - offset) * a. */
XI __m256i k2_piece_lanes(const int kind, const k2_block *u, int p, const int8_t *x)
{
    const __m256i a = _mm256_loadu_si256((const __m256i *)x);
#if K2_VNNI
    /* vpdpbusd on unsigned bytes: Q2_K 0..3, Q3_K 0..7 (offset 4), IQ4
     * kv + 128 (offset 128); the offset times the group sum of a, exact for
     * any a. */
    const __m256i zero = _mm256_setzero_si256();
    __m256i s;
    if (kind == K2_Q2) {
        s = _mm256_dpbusd_epi32(zero, u->v[p], a);
    } else if (kind == K2_Q3) {
        s = _mm256_dpbusd_epi32(zero, u->v[p], a);
        const __m256i sa = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(4), a);
        s = _mm256_sub_epi32(s, sa);
    } else {
        const __m256i ub = _mm256_xor_si256(u->v[p], _mm256_set1_epi8((char)0x80));
        s = _mm256_dpbusd_epi32(zero, ub, a);
        const __m256i sa = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8((char)0x80), a);
        s = _mm256_sub_epi32(s, sa);
    }
    /* mul's two i16 words of each dword are equal: scale the dword. */
    return kind == K2_NL
               ? s
               : _mm256_mullo_epi32(s, _mm256_srai_epi32(_mm256_slli_epi32(u->mul[p], 16), 16));
#else
    __m256i p16;
    if (kind == K2_Q2) {
        p16 = _mm256_maddubs_epi16(u->v[p], a);
    } else if (kind == K2_Q3) {
        p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(u->v[p], a),
                               _mm256_maddubs_epi16(_mm256_set1_epi8(4), a));
    } else {
        /* ggml's mul_add_epi8: |v| times a with v's sign (a in -127..127). */
        p16 =
            _mm256_maddubs_epi16(_mm256_sign_epi8(u->v[p], u->v[p]), _mm256_sign_epi8(a, u->v[p]));
    }
    return _mm256_madd_epi16(p16, u->mul[p]);
#endif
}

/* The whole block's lanes against the activation block's quants. */
XI __m256i k2_lanes(const int kind, const k2_block *u, const int8_t *x)
{
    __m256i s = k2_piece_lanes(kind, u, 0, x);
    for (int p = 1; p < k2_pieces(kind); p++)
        s = _mm256_add_epi32(s, k2_piece_lanes(kind, u, p, x + 32 * p));
    return s;
}

XI size_t k2_abytes(const int kind)
{
    return kind == K2_NL ? sizeof(inferd_block_q8_0) : sizeof(inferd_block_q8_k);
}

XI const int8_t *k2_aqs(const int kind, const uint8_t *ab)
{
    return (const int8_t *)(ab + (kind == K2_NL ? offsetof(inferd_block_q8_0, qs)
                                                : offsetof(inferd_block_q8_k, qs)));
}

XI float k2_ad(const int kind, const uint8_t *ab)
{
    if (kind == K2_NL)
        return f16_scalar(&((const inferd_block_q8_0 *)(const void *)ab)->d);
    float d;
    memcpy(&d, ab, 4);
    return d;
}

/* One block's float steps into @p acc (orders: quant_impl.h). */
XI __m256 k2_step(const int kind, const k2_block *u, const uint8_t *ab, __m256 acc)
{
    const float ad = k2_ad(kind, ab);
    const __m256i lanes = k2_lanes(kind, u, k2_aqs(kind, ab));
    if (kind == K2_Q2) {
        const float dmin = -ad * u->dminw;
        const __m256i bs =
            _mm256_loadu_si256((const __m256i *)(ab + offsetof(inferd_block_q8_k, bsums)));
        const __m256i prod = _mm256_madd_epi16(u->mins, bs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
    }
    const float d = kind == K2_XS || kind == K2_NL ? u->dw * ad : ad * u->dw;
    return _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes), acc);
}

XI float k2_dot(const int kind, int64_t n, const void *w, const void *a)
{
    const int64_t nb = n / (kind == K2_NL ? 32 : INFERD_QK_K);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        k2_block u;
        k2_unpack(kind, (const uint8_t *)w + (size_t)b * k2_wbytes(kind), &u);
        acc = k2_step(kind, &u, (const uint8_t *)a + (size_t)b * k2_abytes(kind), acc);
    }
    return hsum8(acc);
}

/* IQ4_NL's generation order: alternating accumulators, scalar odd tail. */
XI float k2_iq4_nl_dot_gemv(int64_t n, const void *w, const void *a)
{
    const int64_t nb = n / 32;
    const uint8_t *wb = w, *ab = a;
    const size_t WB = sizeof(inferd_block_iq4_nl), AB = sizeof(inferd_block_q8_0);
    __m256 acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        k2_block u;
        k2_unpack(K2_NL, wb + (size_t)b * WB, &u);
        acc1 = k2_step(K2_NL, &u, ab + (size_t)b * AB, acc1);
        k2_unpack(K2_NL, wb + (size_t)(b + 1) * WB, &u);
        acc2 = k2_step(K2_NL, &u, ab + (size_t)(b + 1) * AB, acc2);
    }
    float r = hsum8(_mm256_add_ps(acc1, acc2));
    if (b < nb) {
        k2_block u;
        k2_unpack(K2_NL, wb + (size_t)b * WB, &u);
        const __m256i l = k2_lanes(K2_NL, &u, k2_aqs(K2_NL, ab + (size_t)b * AB));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
        s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        const float d = k2_ad(K2_NL, ab + (size_t)b * AB) * u.dw;
        /* A separate multiply and add, as GCC compiles ggml's tail. */
        volatile float t = d * (float)_mm_cvtsi128_si32(s);
        r = r + t;
    }
    return r;
}

/* mdot: for each row, tokens in groups of K2_TOKS, each weight block
 * unpacked once per group. Every output follows k2_dot's order. */
XI void k2_mdot(const int kind, int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                const void *a, size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    const int64_t nb = n / (kind == K2_NL ? 32 : INFERD_QK_K);
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * w_stride;
        for (int64_t t0 = 0; t0 < n_toks; t0 += K2_TOKS) {
            const int nt = n_toks - t0 < K2_TOKS ? (int)(n_toks - t0) : K2_TOKS;
            __m256 acc[K2_TOKS];
            for (int t = 0; t < K2_TOKS; t++)
                acc[t] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                k2_block u;
                k2_unpack(kind, wr + (size_t)b * k2_wbytes(kind), &u);
                for (int t = 0; t < nt; t++)
                    acc[t] = k2_step(kind, &u,
                                     (const uint8_t *)a + (size_t)(t0 + t) * a_stride +
                                         (size_t)b * k2_abytes(kind),
                                     acc[t]);
            }
            for (int t = 0; t < nt; t++)
                out[(size_t)(t0 + t) * out_stride + (size_t)r] = hsum8(acc[t]);
        }
    }
}

#define K2_DEFINE(sfx)                                                          \
    float inferd__q2_k_dot##sfx(int64_t n, const void *w, const void *a)        \
    {                                                                           \
        return k2_dot(K2_Q2, n, w, a);                                          \
    }                                                                           \
    float inferd__q3_k_dot##sfx(int64_t n, const void *w, const void *a)        \
    {                                                                           \
        return k2_dot(K2_Q3, n, w, a);                                          \
    }                                                                           \
    float inferd__iq4_xs_dot##sfx(int64_t n, const void *w, const void *a)      \
    {                                                                           \
        return k2_dot(K2_XS, n, w, a);                                          \
    }                                                                           \
    float inferd__iq4_nl_dot##sfx(int64_t n, const void *w, const void *a)      \
    {                                                                           \
        return k2_dot(K2_NL, n, w, a);                                          \
    }                                                                           \
    float inferd__iq4_nl_dot_gemv##sfx(int64_t n, const void *w, const void *a) \
    {                                                                           \
        return k2_iq4_nl_dot_gemv(n, w, a);                                     \
    }                                                                           \
    K2_DEFINE_MDOT(inferd__q2_k_mdot##sfx, K2_Q2)                               \
    K2_DEFINE_MDOT(inferd__q3_k_mdot##sfx, K2_Q3)                               \
    K2_DEFINE_MDOT(inferd__iq4_xs_mdot##sfx, K2_XS)                             \
    K2_DEFINE_MDOT(inferd__iq4_nl_mdot##sfx, K2_NL)

#define K2_DEFINE_MDOT(name, kind)                                                      \
    void name(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a, \
              size_t a_stride, int64_t n_toks, float *out, size_t out_stride)           \
    {                                                                                   \
        k2_mdot(kind, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);    \
    }

#endif
