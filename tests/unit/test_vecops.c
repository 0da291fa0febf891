/* The element-wise functions of the forward pass (src/engine/vecops.h):
 * every ISA this CPU has equals the scalar reference bit for bit on random
 * rows and on edge values, the exp is within 2 ulp of the correctly rounded
 * expf where it is normal, and the sums follow ggml's group order. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/cpu.h"

#include "../../src/engine/vecops.h"

static uint64_t rng_state = 0x1234567;

static float rng_range(float lo, float hi)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return lo + (hi - lo) * (float)((double)(z >> 40) / (double)(1ull << 24));
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static const inferd__vecops *isa_ops(int isa)
{
    if (isa == INFERD_ISA_AVX512)
        return &inferd__vecops_avx512;
    if (isa == INFERD_ISA_AVX2)
        return &inferd__vecops_avx2;
    return inferd__vecops_scalar();
}

/* Edge values mixed into the rows: zeros, huge and tiny magnitudes, the
 * limits of the fast 2^n path, infinities and NaN. */
static const float edges[] = {0.0f,     -0.0f,     1e-30f, -1e-30f, 86.9f,   87.5f,  -87.5f, -88.8f,
                              -103.5f,  -104.0f,   88.8f,  89.0f,   -150.0f, 150.0f, 1e30f,  -1e30f,
                              INFINITY, -INFINITY, NAN,    -0.345f, 5.5f,    -5.5f};
#define N_EDGES (sizeof(edges) / sizeof(edges[0]))

static void fill_row(float *x, int64_t n, float lo, float hi, int with_edges)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_range(lo, hi);
    if (with_edges)
        for (int64_t i = 0; i < n; i += 3)
            x[i] = edges[(size_t)(i / 3) % N_EDGES];
}

static void test_vecops_exp_accuracy(void **state)
{
    (void)state;
    int n_checked = 0;
    for (int i = 0; i < 200000; i++) {
        const float x = rng_range(-87.0f, 88.0f);
        const float got = inferd__exp_like_ggml(x);
        const float want = expf(x);
        const int32_t d = (int32_t)bits(got) - (int32_t)bits(want);
        if (d > 2 || d < -2)
            fail_msg("exp(%.9g) = %.9g, expf %.9g (%d ulp)", x, got, want, d);
        n_checked++;
    }
    assert_true(inferd__exp_like_ggml(-INFINITY) == 0.0f);
    assert_true(inferd__exp_like_ggml(-200.0f) == 0.0f);
    assert_true(isinf(inferd__exp_like_ggml(200.0f)));
    assert_true(isnan(inferd__exp_like_ggml(NAN)));
    assert_true(inferd__exp_like_ggml(0.0f) == 1.0f);
    /* Below -87.3 the result is subnormal and still correctly scaled. */
    const float sub = inferd__exp_like_ggml(-100.0f);
    assert_true(sub > 0.0f && sub < 1.2e-38f);
    assert_true(fabs((double)sub - exp(-100.0)) < 1e-6 * exp(-100.0) + 1.5e-45);
    print_message("%d values within 2 ulp of expf\n", n_checked);
}

static void test_vecops_softmax_sum_order(void **state)
{
    (void)state;
    /* 20 entries in a padded row of 32: two groups; the second has 4. */
    float s[32], ref[32];
    fill_row(s, 20, -8.0f, 0.0f, 0);
    memcpy(ref, s, sizeof(s));
    const double sum = inferd__vecops_scalar()->softmax_exp(s, 20, 32, 0.0f);
    float lanes[2][16] = {{0}};
    for (int j = 0; j < 20; j++) {
        lanes[j / 16][j % 16] = inferd__exp_like_ggml(ref[j]);
        assert_true(bits(s[j]) == bits(lanes[j / 16][j % 16]));
    }
    double want = 0.0;
    for (int g = 0; g < 2; g++) {
        const float *a = lanes[g];
        float v[8];
        for (int l = 0; l < 8; l++)
            v[l] = a[l] + a[l + 8];
        want += (double)(((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])));
    }
    assert_true(sum == want);
}

static void test_vecops_isas_match_scalar(void **state)
{
    (void)state;
    const inferd__vecops *ref = inferd__vecops_scalar();
    static const int64_t sizes[] = {1, 7, 15, 16, 17, 31, 32, 33, 100, 172, 1408, 4864};
    for (int isa = 1; isa <= (int)inferd_cpu_isa_hw(); isa++) {
        const inferd__vecops *ops = isa_ops(isa);
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
            const int64_t n = sizes[si], n_pad = (n + 31) / 32 * 32;
            for (int edge = 0; edge < 2; edge++) {
                float *a = calloc((size_t)n_pad, sizeof(float));
                float *b = calloc((size_t)n_pad, sizeof(float));
                float *u = calloc((size_t)n_pad, sizeof(float));
                assert_non_null(a);
                assert_non_null(b);
                assert_non_null(u);
                /* softmax: scores up to the maximum 3.5, masked entries -inf */
                fill_row(a, n, -30.0f, 3.5f, 0);
                if (edge)
                    for (int64_t i = 0; i < n; i += 4)
                        a[i] = i % 8 ? -INFINITY : -120.0f;
                memcpy(b, a, (size_t)n_pad * sizeof(float));
                const double s_ref = ref->softmax_exp(a, n, n_pad, 3.5f);
                const double s_got = ops->softmax_exp(b, n, n_pad, 3.5f);
                if (s_ref != s_got)
                    fail_msg("%s softmax n=%lld: sum %.17g vs %.17g", inferd_isa_name(isa),
                             (long long)n, s_got, s_ref);
                for (int64_t i = 0; i < n_pad; i++)
                    if (bits(a[i]) != bits(b[i]))
                        fail_msg("%s softmax n=%lld [%lld]: %.9g vs %.9g", inferd_isa_name(isa),
                                 (long long)n, (long long)i, b[i], a[i]);
                /* silu: gate values with edges, up values */
                fill_row(a, n, -12.0f, 12.0f, edge);
                memcpy(b, a, (size_t)n * sizeof(float));
                fill_row(u, n, -2.0f, 2.0f, 0);
                ref->silu_mul(a, u, n);
                ops->silu_mul(b, u, n);
                for (int64_t i = 0; i < n; i++)
                    if (bits(a[i]) != bits(b[i]) && !(isnan(a[i]) && isnan(b[i])))
                        fail_msg("%s silu n=%lld [%lld]: %.9g vs %.9g", inferd_isa_name(isa),
                                 (long long)n, (long long)i, b[i], a[i]);
                free(a);
                free(b);
                free(u);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vecops_exp_accuracy),
        cmocka_unit_test(test_vecops_softmax_sum_order),
        cmocka_unit_test(test_vecops_isas_match_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
