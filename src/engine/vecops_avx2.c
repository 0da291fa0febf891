/* AVX2 versions of vecops.h: the same operations as the AVX-512 ones, eight
 * lanes at a time. AVX2 has no scalef: 2^n is built in the exponent bits
 * when it is a normal float (|x| below about 87), and a group with a lane
 * outside that range is redone by the scalar reference, which handles the
 * rest exactly as scalef. Equal to the scalar reference bit for bit.
 * Thread: any (no state). */
#include <immintrin.h>
#include <math.h>

#include "vecops.h"

/* exp of 8 lanes; *ok is false when some lane needs the slow path. */
static inline __m256 exp8(__m256 x, int *ok)
{
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    /* In range: -126 <= n <= 127 (NaN compares false and goes slow). */
    const __m256 in = _mm256_and_ps(_mm256_cmp_ps(n, _mm256_set1_ps(-126.0f), _CMP_GE_OQ),
                                    _mm256_cmp_ps(n, _mm256_set1_ps(127.0f), _CMP_LE_OQ));
    *ok = _mm256_movemask_ps(in) == 0xff;
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(j, _mm256_castsi256_ps(e));
}

static double softmax_exp(float *s, int64_t n, int64_t n_pad, float mx)
{
    const __m256 vmx = _mm256_set1_ps(mx);
    double sum = 0.0;
    for (int64_t g = 0; g < n_pad; g += 16) {
        float lanes[16];
        for (int h = 0; h < 2; h++) {
            const int64_t at = g + 8 * h;
            float x[8];
            for (int l = 0; l < 8; l++)
                x[l] = at + l < n ? s[at + l] : -INFINITY;
            int ok;
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x), vmx), &ok);
            _mm256_storeu_ps(lanes + 8 * h, e);
            if (!ok) {
                /* Rare lanes (masked, far below the maximum, or NaN): the
                 * reference, one by one. */
                for (int l = 0; l < 8; l++)
                    lanes[8 * h + l] = inferd__exp_like_ggml(x[l] - mx);
            }
        }
        for (int l = 0; l < 16; l++) {
            if (g + l < n)
                s[g + l] = lanes[l];
            else
                lanes[l] = 0.0f;
        }
        const __m256 v = _mm256_add_ps(_mm256_loadu_ps(lanes), _mm256_loadu_ps(lanes + 8));
        const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
        sum += (double)_mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
    }
    return sum;
}

static void silu_mul(float *g, const float *u, int64_t n)
{
    const int64_t n_vec = n - n % 16;
    for (int64_t i = 0; i < n_vec; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        int ok;
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x), &ok);
        if (!ok) {
            /* A lane with |x| past ~87: the reference exp, lane by lane. */
            for (int l = 0; l < 8; l++)
                g[i + l] = (g[i + l] / (1.0f + inferd__exp_like_ggml(0.0f - g[i + l]))) * u[i + l];
            continue;
        }
        const __m256 y = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
    }
    for (int64_t i = n_vec; i < n; i++)
        g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

const inferd__vecops inferd__vecops_avx2 = {
    .softmax_exp = softmax_exp,
    .silu_mul = silu_mul,
};
