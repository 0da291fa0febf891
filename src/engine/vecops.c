/* Scalar reference of vecops.h and the choice of ISA. The exp follows the
 * operation list in vecops.h exactly (fmaf is one rounding); the power of
 * two is applied by building its bits when 2^n is a normal float, the only
 * case outside softmax's and SiLU's underflow, and by ldexpf otherwise. */
#include "vecops.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "inferd/cpu.h"
#include "quant_impl.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

float inferd__exp_like_ggml(float x)
{
    const float shift = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, shift);
    const float n = z - shift;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = fmaf(
        fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
        u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (!(fabsf(n) <= 192.0f)) {
        if (n != n)
            return n; /* NaN in, NaN out, as scalef */
        return n <= 0.0f ? 0.0f : INFINITY;
    }
    const int e = (int)n;
    if (e >= -126 && e <= 127) {
        const uint32_t bits = (uint32_t)(e + 127) << 23;
        float p;
        memcpy(&p, &bits, sizeof(p));
        return j * p;
    }
    return ldexpf(j, e);
}

static double softmax_exp_scalar(float *s, int64_t n, int64_t n_pad, float mx)
{
    for (int64_t j = 0; j < n; j++)
        s[j] = inferd__exp_like_ggml(s[j] - mx);
    double sum = 0.0;
    for (int64_t g = 0; g < n_pad; g += 16) {
        float lanes[16];
        for (int l = 0; l < 16; l++)
            lanes[l] = g + l < n ? s[g + l] : 0.0f;
        sum += (double)inferd__reduce16(lanes);
    }
    return sum;
}

static void silu_mul_scalar(float *g, const float *u, int64_t n)
{
    const int64_t n_vec = n - n % 16;
    for (int64_t i = 0; i < n_vec; i++)
        g[i] = (g[i] / (1.0f + inferd__exp_like_ggml(0.0f - g[i]))) * u[i];
    for (int64_t i = n_vec; i < n; i++)
        g[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

static const inferd__vecops vecops_scalar = {
    .softmax_exp = softmax_exp_scalar,
    .silu_mul = silu_mul_scalar,
};

static const inferd__vecops *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    switch (inferd_cpu_isa()) {
    case INFERD_ISA_AVX512: chosen = &inferd__vecops_avx512; break;
    case INFERD_ISA_AVX2: chosen = &inferd__vecops_avx2; break;
    default: chosen = &vecops_scalar; break;
    }
}

const inferd__vecops *inferd__vecops_get(void)
{
    pthread_once(&chosen_once, choose);
    return chosen;
}

const inferd__vecops *inferd__vecops_scalar(void) { return &vecops_scalar; }
