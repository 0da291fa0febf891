/* Helpers shared by the AVX-512 kernel files (quant_avx512.c,
 * quant_k_avx512.c), which are compiled with the AVX-512 flags; include
 * after quant_x86.h. */
#ifndef INFERD_ENGINE_QUANT_AVX512_H
#define INFERD_ENGINE_QUANT_AVX512_H

#include "quant_x86.h"

XI __m512i bcast32(const uint8_t *p) { return _mm512_set1_epi32((int)load_u32(p)); }

XI __m512i join256(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

XI __m128i load16(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }

/* The 16 bytes at rp[i] + off of 16 rows, four rows per zmm: 128-bit
 * lane L of z[i] is row 4L + i (pairs joined in ymm first: 256-bit inserts
 * are the cheaper ones). */
XI void rows16_heads(const uint8_t *const rp[16], size_t off, __m512i z[4])
{
    UNROLL
    for (int i = 0; i < 4; i++) {
        const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(rp[i] + off)),
                                                   load16(rp[4 + i] + off), 1);
        const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(load16(rp[8 + i] + off)),
                                                   load16(rp[12 + i] + off), 1);
        z[i] = join256(lo, hi);
    }
}

/* out[j] lane r = dword j of the 16 bytes at rp[r] + off, r < 16:
 * rows16_heads, then 4x4 dword transposes inside the 128-bit lanes. */
XI void rows16_dwords4(const uint8_t *const rp[16], size_t off, __m512i out[4])
{
    __m512i z[4];
    rows16_heads(rp, off, z);
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]);
    const __m512i t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]);
    const __m512i t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    out[0] = _mm512_unpacklo_epi64(t0, t2);
    out[1] = _mm512_unpackhi_epi64(t0, t2);
    out[2] = _mm512_unpacklo_epi64(t1, t3);
    out[3] = _mm512_unpackhi_epi64(t1, t3);
}

#endif
