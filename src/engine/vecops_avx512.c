/* AVX-512 versions of vecops.h: ggml's vector expf with _mm512_scalef_ps,
 * sixteen lanes at a time; equal to the scalar reference bit for bit.
 * Thread: any (no state). */
#include <immintrin.h>
#include <math.h>

#include "vecops.h"

static inline __m512 exp16(__m512 x)
{
    const __m512 shift = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), shift);
    const __m512 n = _mm512_sub_ps(z, shift);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (!big)
        return res;
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
    return _mm512_mask_blend_ps(big, res, alt);
}

/* inferd__reduce16's order: (l + l+8), then (l + l+4), (l + l+2), (0 + 1). */
static inline float reduce16(__m512 v)
{
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

static double softmax_exp(float *s, int64_t n, int64_t n_pad, float mx)
{
    const __m512 vmx = _mm512_set1_ps(mx);
    double sum = 0.0;
    for (int64_t g = 0; g < n_pad; g += 16) {
        const int64_t left = n - g;
        const __mmask16 m = left >= 16  ? (__mmask16)0xffff
                            : left <= 0 ? (__mmask16)0
                                        : (__mmask16)((1u << left) - 1u);
        /* Lanes past n are 0 in the sum and are not written. */
        const __m512 x = _mm512_maskz_loadu_ps(m, s + g);
        const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, vmx)));
        _mm512_mask_storeu_ps(s + g, m, e);
        sum += (double)reduce16(e);
    }
    return sum;
}

static void silu_mul(float *g, const float *u, int64_t n)
{
    const int64_t n_vec = n - n % 16;
    for (int64_t i = 0; i < n_vec; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        const __m512 y = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(y, _mm512_loadu_ps(u + i)));
    }
    for (int64_t i = n_vec; i < n; i++)
        g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

const inferd__vecops inferd__vecops_avx512 = {
    .softmax_exp = softmax_exp,
    .silu_mul = silu_mul,
};
