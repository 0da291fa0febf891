/* Private to the engine: the element-wise functions of the forward pass
 * whose rounding llama.cpp's results depend on, computed as ggml-cpu does
 * on AVX-512 (its vectorised expf, used by softmax and SiLU) and identical
 * bit for bit on every ISA: a scalar reference (vecops.c) and AVX2 /
 * AVX-512 versions (vecops_avx2.c, vecops_avx512.c), picked once from
 * inferd_cpu_isa(). Thread: any (no state but the one-time choice).
 *
 * exp_like_ggml(x), one lane at a time with these fused operations:
 *   z = fma(x, 0x1.715476p+0, 0x1.8p23); n = z - 0x1.8p23  (x / ln 2, rounded)
 *   b = fma(-n, 0x1.7f7d1cp-20, fma(-n, 0x1.62e4p-1, x)); u = b * b
 *   j = fma(fma(fma(0x1.0e4020p-7, b, 0x1.573e2ep-5), u,
 *               fma(0x1.555e66p-3, b, 0x1.fffdb6p-2)), u,
 *           fma(0x1.ffffecp-1, b, 1))
 *   result j * 2^n (one rounding), or for |n| > 192: 0 when n <= 0, else +inf.
 * (the polynomial of Arm's optimized-routines expf; max error ~1.5 ulp).
 */
#ifndef INFERD_ENGINE_VECOPS_H
#define INFERD_ENGINE_VECOPS_H

#include <stdint.h>

typedef struct inferd__vecops {
    /* s[j] = exp_like_ggml(s[j] - mx) for j < n (s[j] = -inf gives 0), and
     * return the sum over 16-element groups of the padded row [0, n_pad)
     * (entries from n on count as 0), each group reduced in the lane order
     * of _mm512_reduce_add_ps (inferd__reduce16), the groups added in
     * double: ggml_vec_soft_max_f32's sum. n_pad is a multiple of 16. */
    double (*softmax_exp)(float *s, int64_t n, int64_t n_pad, float mx);
    /* g[i] = silu(g[i]) * u[i] for one row of n, silu(x) = x / (1 + e(-x))
     * with e = exp_like_ggml on the lanes of the row's whole groups of 16
     * and libm's expf on its n % 16 tail (ggml_vec_silu_f32), the product
     * a plain float multiply. */
    void (*silu_mul)(float *g, const float *u, int64_t n);
} inferd__vecops;

/** exp_like_ggml of one float (the scalar reference). */
float inferd__exp_like_ggml(float x);

/** The functions for the ISA inferd_cpu_isa() picks. Thread: any. */
const inferd__vecops *inferd__vecops_get(void);
/** The scalar reference (for tests). */
const inferd__vecops *inferd__vecops_scalar(void);

extern const inferd__vecops inferd__vecops_avx2;
extern const inferd__vecops inferd__vecops_avx512;

#endif
