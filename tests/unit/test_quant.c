/* Quant formats and kernels: known values, f16/bf16 edge cases, every ISA
 * this CPU has against the scalar reference on fixed-seed random data at odd
 * sizes (bit-exact: the order of operations is fixed, quant_impl.h),
 * round-trip error bounds, the dot products against an independent
 * double-precision evaluation with a named tolerance per format, and the
 * reference quantizers against the fixtures llama-quantize wrote. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/gguf.h"
#include "inferd/quant.h"

/* Relative tolerances of a dot product against the double-precision value
 * of the same formula, as a fraction of sum |term|: the f32 roundings of
 * the lane accumulations and reduction (float types) or of one fma per
 * block (block formats), at most ~n/16 or ~n/32 of them at 2^-24 each. */
#define TOL_DOT_F32 2e-5
#define TOL_DOT_F16 2e-5
#define TOL_DOT_BF16 2e-5
#define TOL_DOT_QUANT 2e-5
/* SIMD against scalar: the fixed order of operations makes them equal. */
#define TOL_SIMD_VS_SCALAR_ULP 0

static const uint32_t all_types[] = {
    INFERD_DTYPE_F32, INFERD_DTYPE_F16, INFERD_DTYPE_BF16, INFERD_DTYPE_Q4_0,
    INFERD_DTYPE_Q4_1, INFERD_DTYPE_Q5_0, INFERD_DTYPE_Q5_1, INFERD_DTYPE_Q8_0,
    INFERD_DTYPE_Q8_1,
};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

/* ---- deterministic random data ----------------------------------------- */

static uint64_t rng_state;

static void rng_seed(uint64_t s)
{
    rng_state = s;
}

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float rng_float(void)
{
    return (float)((double)(rng_next() >> 40) / (double)(1ull << 23) - 1.0);
}

/* Random activations/weights with varied magnitudes per 32-block, so the
 * block scales differ and some blocks are tiny. */
static void fill_floats(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (i % 32 == 0)
            rng_next();
        float scale = (float)(1 + (i / 32) % 5) * ((i / 32) % 7 == 3 ? 1e-3f : 1.0f);
        x[i] = rng_float() * scale;
    }
}

static int is_block_type(uint32_t t)
{
    return inferd_dtype_get(t)->block_size > 1;
}

static size_t row_size(uint32_t t, int64_t n)
{
    return inferd_quant_row_size(t, n);
}

static int n_isas(void)
{
    return (int)inferd_cpu_isa_hw() + 1;
}

/* ---- structs and table --------------------------------------------------- */

static void test_quant_block_sizes_match_dtype_table(void **state)
{
    (void)state;
    assert_int_equal(sizeof(inferd_block_q4_0), inferd_dtype_get(INFERD_DTYPE_Q4_0)->type_size);
    assert_int_equal(sizeof(inferd_block_q4_1), inferd_dtype_get(INFERD_DTYPE_Q4_1)->type_size);
    assert_int_equal(sizeof(inferd_block_q5_0), inferd_dtype_get(INFERD_DTYPE_Q5_0)->type_size);
    assert_int_equal(sizeof(inferd_block_q5_1), inferd_dtype_get(INFERD_DTYPE_Q5_1)->type_size);
    assert_int_equal(sizeof(inferd_block_q8_0), inferd_dtype_get(INFERD_DTYPE_Q8_0)->type_size);
    assert_int_equal(sizeof(inferd_block_q8_1), inferd_dtype_get(INFERD_DTYPE_Q8_1)->type_size);
    assert_int_equal(offsetof(inferd_block_q5_1, qh), 4);
    assert_int_equal(offsetof(inferd_block_q5_0, qs), 6);
}

static void test_quant_table_covers_types(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TYPES; i++) {
        for (int isa = 0; isa < n_isas(); isa++) {
            const inferd_kernels *k = inferd_kernels_get_isa(all_types[i], (inferd_isa)isa);
            assert_non_null(k);
            assert_int_equal(k->type, all_types[i]);
            assert_int_equal((int)k->isa, isa);
            assert_non_null(k->to_float);
            assert_non_null(k->from_float);
            assert_non_null(k->quantize);
            if (all_types[i] == INFERD_DTYPE_Q8_1) {
                assert_null(k->vec_dot);
            } else {
                assert_non_null(k->vec_dot);
                assert_non_null(k->mdot);
            }
        }
    }
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q4_0)->vec_dot_type, INFERD_DTYPE_Q8_0);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q5_0)->vec_dot_type, INFERD_DTYPE_Q8_0);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q4_1)->vec_dot_type, INFERD_DTYPE_Q8_1);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q5_1)->vec_dot_type, INFERD_DTYPE_Q8_1);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_F16)->vec_dot_type, INFERD_DTYPE_F16);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_BF16)->vec_dot_type, INFERD_DTYPE_BF16);
    assert_null(inferd_kernels_get(INFERD_DTYPE_Q4_K));
    assert_null(inferd_kernels_get(INFERD_DTYPE_I32));
    assert_null(inferd_kernels_get(999));
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q4_0, 64), 36);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q4_0, 33), 0);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_F16, 3), 6);
}

/* ---- known values -------------------------------------------------------- */

static void test_quant_q4_0_known_block(void **state)
{
    (void)state;
    inferd_block_q4_0 b;
    b.d = 0x3800; /* 0.5 */
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    for (int isa = 0; isa < n_isas(); isa++) {
        float out[32];
        inferd_kernels_get_isa(INFERD_DTYPE_Q4_0, (inferd_isa)isa)->to_float(&b, out, 32);
        for (int j = 0; j < 16; j++) {
            assert_true(out[j] == (float)(j - 8) * 0.5f);
            assert_true(out[j + 16] == (float)(15 - j - 8) * 0.5f);
        }
    }
}

static void test_quant_q5_known_blocks(void **state)
{
    (void)state;
    inferd_block_q5_0 b0;
    inferd_block_q5_1 b1;
    /* Fifth bit set for elements 1, 17 and 31 (bits 1, 17, 31). */
    const uint32_t qh = (1u << 1) | (1u << 17) | (1u << 31);
    b0.d = 0x3c00; /* 1.0 */
    b1.d = 0x4000; /* 2.0 */
    b1.m = 0xbc00; /* -1.0 */
    for (int i = 0; i < 4; i++)
        b0.qh[i] = b1.qh[i] = (uint8_t)(qh >> (8 * i));
    for (int j = 0; j < 16; j++)
        b0.qs[j] = b1.qs[j] = (uint8_t)((j & 15) | ((j + 3) & 15) << 4);
    for (int isa = 0; isa < n_isas(); isa++) {
        float o0[32], o1[32];
        inferd_kernels_get_isa(INFERD_DTYPE_Q5_0, (inferd_isa)isa)->to_float(&b0, o0, 32);
        inferd_kernels_get_isa(INFERD_DTYPE_Q5_1, (inferd_isa)isa)->to_float(&b1, o1, 32);
        for (int e = 0; e < 32; e++) {
            int lo = e < 16 ? e : (e - 16 + 3) & 15;
            int q = lo | (((qh >> e) & 1) << 4);
            assert_true(o0[e] == (float)(q - 16));
            assert_true(o1[e] == (float)q * 2.0f - 1.0f);
        }
    }
}

static void test_quant_q8_known_rounding(void **state)
{
    (void)state;
    /* amax 127 makes the multiplier exactly 1: 2.5 shows the two roundings
     * (run-time quantizer: ties to even -> 2; file quantizer: roundf -> 3). */
    float x[32] = {0};
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -3.5f;
    x[3] = 0.49f;
    for (int isa = 0; isa < n_isas(); isa++) {
        const inferd_kernels *k = inferd_kernels_get_isa(INFERD_DTYPE_Q8_0, (inferd_isa)isa);
        inferd_block_q8_0 rt, ref;
        k->from_float(x, &rt, 32);
        k->quantize(x, &ref, 32);
        assert_int_equal(rt.d, 0x3c00);
        assert_int_equal(rt.qs[0], 127);
        assert_int_equal(rt.qs[1], 2);
        assert_int_equal(rt.qs[2], -4);
        assert_int_equal(rt.qs[3], 0);
        assert_int_equal(ref.qs[1], 3);
        assert_int_equal(ref.qs[2], -4);

        const inferd_kernels *k1 = inferd_kernels_get_isa(INFERD_DTYPE_Q8_1, (inferd_isa)isa);
        inferd_block_q8_1 b1;
        k1->from_float(x, &b1, 32);
        assert_int_equal(b1.d, 0x3c00);
        assert_int_equal(b1.s, inferd_f32_to_f16(127.0f + 2.0f - 4.0f));
    }
}

static void test_quant_q4_0_quantize_formula(void **state)
{
    (void)state;
    /* max is the signed value of largest magnitude: -4 -> d = 0.5. */
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j % 8) * 0.5f - 1.5f;
    x[5] = -4.0f;
    inferd_block_q4_0 b;
    inferd_kernels_get(INFERD_DTYPE_Q4_0)->quantize(x, &b, 32);
    assert_int_equal(b.d, 0x3800);
    for (int j = 0; j < 32; j++) {
        int q = j < 16 ? b.qs[j] & 15 : b.qs[j - 16] >> 4;
        /* x/d + 8.5 truncated, clamped at 15. */
        int want = (int)(x[j] / 0.5f + 8.5f);
        want = want > 15 ? 15 : want;
        assert_int_equal(q, want);
    }
}

/* ---- f16 / bf16 ------------------------------------------------------------ */

typedef struct { uint32_t f32_bits; uint16_t f16; } f16_case;

static void test_quant_f16_edge_cases(void **state)
{
    (void)state;
    static const f16_case cases[] = {
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000},   /* +-0 */
        {0x3f800000u, 0x3c00}, {0xc0000000u, 0xc000},   /* 1, -2 */
        {0x477fe000u, 0x7bff},                          /* 65504, largest */
        {0x477ff000u, 0x7c00},                          /* 65520 rounds to inf */
        {0x477fefffu, 0x7bff},                          /* just below */
        {0x7f800000u, 0x7c00}, {0xff800000u, 0xfc00},   /* +-inf */
        {0x33800000u, 0x0001},                          /* 2^-24 smallest subnormal */
        {0x33000000u, 0x0000},                          /* 2^-25: tie -> even 0 */
        {0x33c00000u, 0x0002},                          /* 1.5*2^-24: tie -> even 2 */
        {0x38800000u, 0x0400},                          /* 2^-14 smallest normal */
        {0x387fc000u, 0x03ff},                          /* largest subnormal */
        {0x3f801000u, 0x3c00},                          /* 1 + 2^-11: tie -> even */
        {0x3f803000u, 0x3c02},                          /* 1 + 3*2^-11: tie -> even */
        {0x3f801001u, 0x3c01},                          /* just above the tie */
        {0x7fc00000u, 0x7e00},                          /* quiet nan */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float f = inferd__bits_f32(cases[i].f32_bits);
        assert_int_equal(inferd_f32_to_f16(f), cases[i].f16);
        for (int isa = 0; isa < n_isas(); isa++) {
            const inferd_kernels *k = inferd_kernels_get_isa(INFERD_DTYPE_F16, (inferd_isa)isa);
            uint16_t h[9];
            float src[9];
            for (int j = 0; j < 9; j++)
                src[j] = f;
            k->from_float(src, h, 9); /* 8 through SIMD, 1 through the tail */
            for (int j = 0; j < 9; j++)
                assert_int_equal(h[j], cases[i].f16);
        }
    }
    /* f16 -> f32: subnormals, inf, nan. */
    assert_true(inferd_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(inferd_f16_to_f32(0x03ff) == 1023.0f * ldexpf(1.0f, -24));
    assert_true(inferd_f16_to_f32(0x8001) == -ldexpf(1.0f, -24));
    assert_true(inferd_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(inferd_f16_to_f32(0x7c00)) && inferd_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(inferd_f16_to_f32(0xfc00)) && inferd_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(inferd_f16_to_f32(0x7e00)));
    for (int isa = 0; isa < n_isas(); isa++) {
        const inferd_kernels *k = inferd_kernels_get_isa(INFERD_DTYPE_F16, (inferd_isa)isa);
        const uint16_t h[9] = {0x0001, 0x03ff, 0x8001, 0x7bff, 0x7c00, 0xfc00, 0x3555, 0xc123, 0x0400};
        float out[9];
        k->to_float(h, out, 9);
        for (int j = 0; j < 9; j++)
            assert_int_equal(inferd__f32_bits(out[j]), inferd__f32_bits(inferd_f16_to_f32(h[j])));
    }
}

static void test_quant_bf16_edge_cases(void **state)
{
    (void)state;
    static const struct { uint32_t f; uint16_t b; } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie -> even */
        {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81}, {0x7f800000u, 0x7f80},
        {0x7f7fffffu, 0x7f80},                          /* rounds up to inf */
        {0x00000001u, 0x0000}, {0x80000000u, 0x8000},
        {0x7f800001u, 0x7fc0},                          /* signalling nan -> quiet */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float f = inferd__bits_f32(cases[i].f);
        assert_int_equal(inferd_f32_to_bf16(f), cases[i].b);
        for (int isa = 0; isa < n_isas(); isa++) {
            const inferd_kernels *k = inferd_kernels_get_isa(INFERD_DTYPE_BF16, (inferd_isa)isa);
            float src[17];
            uint16_t h[17];
            for (int j = 0; j < 17; j++)
                src[j] = f;
            k->from_float(src, h, 17);
            for (int j = 0; j < 17; j++)
                assert_int_equal(h[j], cases[i].b);
        }
    }
}

/* ---- every ISA against the scalar reference ------------------------------ */

static const int64_t float_sizes[] = {1, 5, 8, 16, 33, 100, 1023};
static const int64_t block_counts[] = {1, 2, 3, 7, 37};

static int64_t case_size(uint32_t type, int i, int *n_cases)
{
    if (is_block_type(type)) {
        *n_cases = (int)(sizeof(block_counts) / sizeof(block_counts[0]));
        return block_counts[i] * INFERD_QK;
    }
    *n_cases = (int)(sizeof(float_sizes) / sizeof(float_sizes[0]));
    return float_sizes[i];
}

/* Random weight row: quantized from random floats, then (for block types)
 * every few blocks overwritten by raw random bytes with a sane scale, so
 * the full range of stored values (Q8_0's -128, every qh bit) is covered. */
static void make_weight_row(uint32_t type, int64_t n, void *dst)
{
    float *x = inferd_malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    fill_floats(x, n);
    inferd_kernels_get_isa(type, INFERD_ISA_SCALAR)->quantize(x, dst, n);
    if (is_block_type(type)) {
        const size_t bs = inferd_dtype_get(type)->type_size;
        for (int64_t b = 1; b < n / INFERD_QK; b += 3) {
            uint8_t *p = (uint8_t *)dst + (size_t)b * bs;
            for (size_t i = 0; i < bs; i++)
                p[i] = (uint8_t)rng_next();
            p[0] = 0x55;
            p[1] = 0x21; /* d = f16 0x2155 */
            if (type == INFERD_DTYPE_Q4_1 || type == INFERD_DTYPE_Q5_1 ||
                type == INFERD_DTYPE_Q8_1) {
                p[2] = 0x00;
                p[3] = (uint8_t)(0xa8 | (rng_next() & 1)); /* m or s, negative */
            }
        }
    }
    inferd_free(x);
}

static void test_quant_to_float_matches_scalar(void **state)
{
    (void)state;
    rng_seed(11);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        int n_cases;
        case_size(type, 0, &n_cases);
        for (int c = 0; c < n_cases; c++) {
            const int64_t n = case_size(type, c, &n_cases);
            void *w = inferd_malloc(row_size(type, n));
            float *ref = inferd_malloc((size_t)n * sizeof(float));
            float *got = inferd_malloc((size_t)n * sizeof(float));
            make_weight_row(type, n, w);
            inferd_kernels_get_isa(type, INFERD_ISA_SCALAR)->to_float(w, ref, n);
            for (int isa = 1; isa < n_isas(); isa++) {
                inferd_kernels_get_isa(type, (inferd_isa)isa)->to_float(w, got, n);
                if (memcmp(ref, got, (size_t)n * sizeof(float)) != 0)
                    fail_msg("%s to_float differs on %s, n=%lld", inferd_dtype_name(type),
                             inferd_isa_name((inferd_isa)isa), (long long)n);
            }
            inferd_free(w);
            inferd_free(ref);
            inferd_free(got);
        }
    }
}

static void test_quant_from_float_matches_scalar(void **state)
{
    (void)state;
    rng_seed(12);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        int n_cases;
        case_size(type, 0, &n_cases);
        for (int c = 0; c < n_cases; c++) {
            const int64_t n = case_size(type, c, &n_cases);
            const size_t bytes = row_size(type, n);
            float *x = inferd_malloc((size_t)n * sizeof(float));
            void *ref = inferd_malloc(bytes), *got = inferd_malloc(bytes);
            void *qref = inferd_malloc(bytes);
            fill_floats(x, n);
            if (n >= 32)
                for (int j = 0; j < 32; j++) /* an all-zero block */
                    x[j] = 0.0f;
            const inferd_kernels *ks = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR);
            ks->from_float(x, ref, n);
            ks->quantize(x, qref, n);
            for (int isa = 1; isa < n_isas(); isa++) {
                const inferd_kernels *k = inferd_kernels_get_isa(type, (inferd_isa)isa);
                memset(got, 0xee, bytes);
                k->from_float(x, got, n);
                if (memcmp(ref, got, bytes) != 0)
                    fail_msg("%s from_float differs on %s, n=%lld", inferd_dtype_name(type),
                             inferd_isa_name((inferd_isa)isa), (long long)n);
                memset(got, 0xee, bytes);
                k->quantize(x, got, n);
                assert_memory_equal(qref, got, bytes);
            }
            inferd_free(qref);
            inferd_free(x);
            inferd_free(ref);
            inferd_free(got);
        }
    }
}

/* Independent double-precision value of the dot product: float types from
 * the dequantized rows; block types from the format's formula
 * sum_b dw*da*sum(qw*qa) (+ mw*sa), read straight from the dequantized
 * values, with sum |term| for the tolerance. */
static double ref_dot(uint32_t type, int64_t n, const void *w, const void *a,
                      double *out_abs)
{
    const inferd_kernels *k = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR);
    const inferd_kernels *ka = inferd_kernels_get_isa(k->vec_dot_type, INFERD_ISA_SCALAR);
    float *wf = inferd_malloc((size_t)n * sizeof(float));
    float *af = inferd_malloc((size_t)n * sizeof(float));
    double sum = 0.0, abs_sum = 0.0;

    k->to_float(w, wf, n);
    ka->to_float(a, af, n);
    if (type == INFERD_DTYPE_Q4_1 || type == INFERD_DTYPE_Q5_1) {
        /* w = dw*q + m: sum(w*a) = sum(dw*q*a) + m*sum(a), with ggml's
         * stored sa standing in for m's partner. */
        const size_t wbs = inferd_dtype_get(type)->type_size;
        const inferd_block_q8_1 *ab = a;
        for (int64_t b = 0; b < n / INFERD_QK; b++) {
            uint16_t hdr[2];
            memcpy(hdr, (const char *)w + (size_t)b * wbs, sizeof(hdr));
            const double d = inferd_f16_to_f32(hdr[0]), m = inferd_f16_to_f32(hdr[1]);
            for (int j = 0; j < INFERD_QK; j++) {
                /* Recover the integer q from the dequantized value. */
                const double q = d != 0 ? nearbyint(((double)wf[b * INFERD_QK + j] - m) / d) : 0;
                double t = d * q * (double)af[b * INFERD_QK + j];
                sum += t;
                abs_sum += fabs(t);
            }
            double t = m * inferd_f16_to_f32(ab[b].s);
            sum += t;
            abs_sum += fabs(t);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            double t = (double)wf[i] * (double)af[i];
            sum += t;
            abs_sum += fabs(t);
        }
    }
    inferd_free(wf);
    inferd_free(af);
    *out_abs = abs_sum;
    return sum;
}

static double dot_tolerance(uint32_t type)
{
    switch (type) {
    case INFERD_DTYPE_F32: return TOL_DOT_F32;
    case INFERD_DTYPE_F16: return TOL_DOT_F16;
    case INFERD_DTYPE_BF16: return TOL_DOT_BF16;
    default: return TOL_DOT_QUANT;
    }
}

static void test_quant_vec_dot_matches_scalar_and_reference(void **state)
{
    (void)state;
    rng_seed(13);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        if (type == INFERD_DTYPE_Q8_1)
            continue;
        const inferd_kernels *ks = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR);
        int n_cases;
        case_size(type, 0, &n_cases);
        for (int c = 0; c < n_cases; c++) {
            const int64_t n = case_size(type, c, &n_cases);
            for (int rep = 0; rep < 4; rep++) {
                void *w = inferd_malloc(row_size(type, n));
                void *a = inferd_malloc(row_size(ks->vec_dot_type, n));
                float *x = inferd_malloc((size_t)n * sizeof(float));
                make_weight_row(type, n, w);
                fill_floats(x, n);
                inferd_kernels_get_isa(ks->vec_dot_type, INFERD_ISA_SCALAR)->from_float(x, a, n);

                const float ref = ks->vec_dot(n, w, a);
                double abs_sum;
                const double exact = ref_dot(type, n, w, a, &abs_sum);
                const double tol = dot_tolerance(type) * abs_sum + 1e-30;
                if (fabs((double)ref - exact) > tol)
                    fail_msg("%s scalar dot n=%lld: %.9g vs %.9g (tol %.3g)",
                             inferd_dtype_name(type), (long long)n, ref, exact, tol);
                for (int isa = 1; isa < n_isas(); isa++) {
                    const float got =
                        inferd_kernels_get_isa(type, (inferd_isa)isa)->vec_dot(n, w, a);
                    if (inferd__f32_bits(got) != inferd__f32_bits(ref))
                        fail_msg("%s %s dot n=%lld: %.9g vs scalar %.9g (%d ulp allowed)",
                                 inferd_dtype_name(type), inferd_isa_name((inferd_isa)isa),
                                 (long long)n, got, ref, TOL_SIMD_VS_SCALAR_ULP);
                }
                inferd_free(w);
                inferd_free(a);
                inferd_free(x);
            }
        }
    }
}

/* The GEMV order (F32, F16): on every ISA bit-identical to the scalar
 * reference at sizes around the 64-element groups and their tails, close to
 * the exact dot product, and equal to a direct evaluation of its definition
 * (four 16-lane fma accumulators, paired sums, the ggml reduction, then the
 * tail) for one size with a tail. */
static void test_quant_vec_dot_gemv_order(void **state)
{
    (void)state;
    static const int64_t sizes[] = {1, 8, 15, 16, 63, 64, 65, 96, 127, 128, 172, 192, 1023};
    static const uint32_t types[] = {INFERD_DTYPE_F32, INFERD_DTYPE_F16};
    rng_seed(29);
    for (size_t ti = 0; ti < 2; ti++) {
        const uint32_t type = types[ti];
        const inferd_kernels *ks = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR);
        assert_non_null(ks->vec_dot_gemv);
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
            const int64_t n = sizes[si];
            void *w = inferd_malloc(row_size(type, n));
            void *a = inferd_malloc(row_size(type, n));
            float *x = inferd_malloc((size_t)n * sizeof(float));
            fill_floats(x, n);
            ks->from_float(x, w, n);
            fill_floats(x, n);
            ks->from_float(x, a, n);
            const float ref = ks->vec_dot_gemv(n, w, a);
            double abs_sum;
            const double exact = ref_dot(type, n, w, a, &abs_sum);
            if (fabs((double)ref - exact) > dot_tolerance(type) * abs_sum + 1e-30)
                fail_msg("%s gemv n=%lld: %.9g vs exact %.9g", inferd_dtype_name(type),
                         (long long)n, ref, exact);
            for (int isa = 1; isa < n_isas(); isa++) {
                const float got = inferd_kernels_get_isa(type, (inferd_isa)isa)->vec_dot_gemv(n, w, a);
                if (inferd__f32_bits(got) != inferd__f32_bits(ref))
                    fail_msg("%s %s gemv n=%lld: %.9g vs scalar %.9g", inferd_dtype_name(type),
                             inferd_isa_name((inferd_isa)isa), (long long)n, got, ref);
            }
            /* The prefill order is the 16-lane one for whole groups of 16,
             * the GEMV one otherwise; decode is always GEMV. */
            assert_true(inferd_kernels_dot(ks, n, INFERD_ORDER_DECODE) == ks->vec_dot_gemv);
            assert_true(inferd_kernels_dot(ks, n, INFERD_ORDER_PREFILL) ==
                        (n % 16 == 0 ? ks->vec_dot : ks->vec_dot_gemv));
            inferd_free(w);
            inferd_free(a);
            inferd_free(x);
        }
    }
    /* Definition, F32, n = 92: one group of 64, then a tail of 28: products
     * rounded to float and added for the first 24, fused multiply-adds for
     * the last 28 % 8 = 4 (what GCC 12 -O3 makes of ggml's tail loop). */
    float w[92], a[92], acc[4][16] = {{0}}, v[16];
    fill_floats(w, 92);
    fill_floats(a, 92);
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 16; l++)
            acc[j][l] = fmaf(w[16 * j + l], a[16 * j + l], 0.0f);
    for (int l = 0; l < 16; l++)
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    float h[8];
    for (int l = 0; l < 8; l++)
        h[l] = v[l] + v[l + 8];
    float sum = ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
    for (int i = 64; i < 88; i++) {
        const float p = w[i] * a[i];
        sum += p;
    }
    for (int i = 88; i < 92; i++)
        sum = fmaf(w[i], a[i], sum);
    for (int isa = 0; isa < n_isas(); isa++) {
        const float got =
            inferd_kernels_get_isa(INFERD_DTYPE_F32, (inferd_isa)isa)->vec_dot_gemv(92, w, a);
        assert_true(inferd__f32_bits(got) == inferd__f32_bits(sum));
    }
}

/* mdot on every ISA and odd tile shapes equals vec_dot of each output. */
static void test_quant_mdot_equals_vec_dot(void **state)
{
    (void)state;
    rng_seed(14);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        if (type == INFERD_DTYPE_Q8_1)
            continue;
        const int64_t n = is_block_type(type) ? 7 * INFERD_QK : 77;
        const int max_rows = 11, max_toks = 18;
        const inferd_kernels *ks = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR);
        const size_t wrow = row_size(type, n), arow = row_size(ks->vec_dot_type, n);
        char *w = inferd_malloc(wrow * (size_t)max_rows);
        char *a = inferd_malloc(arow * (size_t)max_toks);
        float *x = inferd_malloc((size_t)n * sizeof(float));
        float out[11 * 18];
        for (int r = 0; r < max_rows; r++)
            make_weight_row(type, n, w + (size_t)r * wrow);
        for (int t = 0; t < max_toks; t++) {
            fill_floats(x, n);
            inferd_kernels_get_isa(ks->vec_dot_type, INFERD_ISA_SCALAR)
                ->from_float(x, a + (size_t)t * arow, n);
        }
        for (int isa = 0; isa < n_isas(); isa++) {
            const inferd_kernels *k = inferd_kernels_get_isa(type, (inferd_isa)isa);
            for (int nr = 1; nr <= max_rows; nr++) {
                for (int nt = 1; nt <= max_toks; nt++) {
                    memset(out, 0, sizeof(out));
                    k->mdot(n, w, wrow, nr, a, arow, nt, out, (size_t)max_rows);
                    for (int t = 0; t < nt; t++)
                        for (int r = 0; r < nr; r++) {
                            float want = k->vec_dot(n, w + (size_t)r * wrow, a + (size_t)t * arow);
                            if (inferd__f32_bits(out[t * max_rows + r]) != inferd__f32_bits(want))
                                fail_msg("%s %s mdot %dx%d at (%d,%d)", inferd_dtype_name(type),
                                         inferd_isa_name((inferd_isa)isa), nr, nt, r, t);
                        }
                }
            }
        }
        inferd_free(w);
        inferd_free(a);
        inferd_free(x);
    }
}

/* ---- round trip error bounds -------------------------------------------- */

/* Largest error of storing v as f16: half an ulp, relative 2^-11 for normal
 * values, 2^-25 absolute in the subnormal range. */
static double f16_err(double v)
{
    return fmax(fabs(v) / 2048.0, 1.0 / 33554432.0);
}

static void test_quant_round_trip_error_bounds(void **state)
{
    (void)state;
    rng_seed(15);
    const int64_t n = 64 * INFERD_QK;
    float *x = inferd_malloc((size_t)n * sizeof(float));
    float *y = inferd_malloc((size_t)n * sizeof(float));
    void *q = inferd_malloc(row_size(INFERD_DTYPE_F32, n));

    fill_floats(x, n);
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = all_types[ti];
        for (int isa = 0; isa < n_isas(); isa++) {
            const inferd_kernels *k = inferd_kernels_get_isa(type, (inferd_isa)isa);
            for (int use_ref = 0; use_ref < 2; use_ref++) {
                (use_ref ? k->quantize : k->from_float)(x, q, n);
                k->to_float(q, y, n);
                for (int64_t b = 0; b < n / INFERD_QK; b++) {
                    const float *xb = x + b * INFERD_QK, *yb = y + b * INFERD_QK;
                    double amax = 0, mn = 1e30, mx = -1e30;
                    for (int j = 0; j < INFERD_QK; j++) {
                        amax = fmax(amax, fabs(xb[j]));
                        mn = fmin(mn, xb[j]);
                        mx = fmax(mx, xb[j]);
                    }
                    for (int j = 0; j < INFERD_QK; j++) {
                        const double err = fabs((double)yb[j] - (double)xb[j]);
                        double bound;
                        switch (type) {
                        case INFERD_DTYPE_F32: bound = 0; break;
                        case INFERD_DTYPE_F16: bound = f16_err(xb[j]); break;
                        case INFERD_DTYPE_BF16: bound = fabs(xb[j]) / 256.0; break;
                        case INFERD_DTYPE_Q8_0:
                        case INFERD_DTYPE_Q8_1: {
                            const double d = amax / 127.0;
                            bound = d / 2 + 127 * f16_err(d);
                            break;
                        }
                        case INFERD_DTYPE_Q4_0:
                        case INFERD_DTYPE_Q5_0: {
                            /* The value opposite the max clamps: one step. */
                            const double d = amax / (type == INFERD_DTYPE_Q4_0 ? 8 : 16);
                            bound = d + 16 * f16_err(d);
                            break;
                        }
                        default: { /* Q4_1, Q5_1 */
                            const double d = (mx - mn) / (type == INFERD_DTYPE_Q4_1 ? 15 : 31);
                            bound = d / 2 + 31 * f16_err(d) + f16_err(mn);
                            break;
                        }
                        }
                        if (err > bound * (1 + 1e-6) + 1e-12)
                            fail_msg("%s %s round trip: |%g - %g| > %g", inferd_dtype_name(type),
                                     use_ref ? "quantize" : "from_float", xb[j], yb[j], bound);
                    }
                }
            }
        }
    }
    inferd_free(x);
    inferd_free(y);
    inferd_free(q);
}

/* A block with amax so small that 127/amax overflows: scalar and SIMD agree
 * on what x86 gives (the NaN/inf products saturate to -128). */
static void test_quant_q8_tiny_block_agrees(void **state)
{
    (void)state;
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = j % 3 == 0 ? 1e-40f : 0.0f;
    inferd_block_q8_0 ref, got;
    inferd_kernels_get_isa(INFERD_DTYPE_Q8_0, INFERD_ISA_SCALAR)->from_float(x, &ref, 32);
    for (int isa = 1; isa < n_isas(); isa++) {
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_0, (inferd_isa)isa)->from_float(x, &got, 32);
        assert_memory_equal(&ref, &got, sizeof(ref));
    }
}

/* The fixtures' quantized models were written by llama-quantize (no
 * importance matrix) from the F32 ones: quantizing the F32 tensors with our
 * reference quantizers must give the same bytes. */
static void check_fixture_pair(const char *f32_name, const char *q_name)
{
    char p32[512], pq[512];
    inferd_gguf *g32 = NULL, *gq = NULL;
    snprintf(p32, sizeof(p32), "%s/models/%s", INFERD_FIXTURES, f32_name);
    snprintf(pq, sizeof(pq), "%s/models/%s", INFERD_FIXTURES, q_name);
    assert_int_equal(inferd_gguf_open(p32, &g32, NULL), 0);
    assert_int_equal(inferd_gguf_open(pq, &gq, NULL), 0);
    int n_checked = 0;
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(gq); i++) {
        const inferd_gguf_tensor *tq = inferd_gguf_tensor_at(gq, i);
        char name[256];
        if (tq->type == INFERD_DTYPE_F32 || tq->name.len >= sizeof(name))
            continue;
        memcpy(name, tq->name.ptr, tq->name.len);
        name[tq->name.len] = '\0';
        const inferd_gguf_tensor *t32 = inferd_gguf_find_tensor(g32, name);
        if (!t32 || t32->type != INFERD_DTYPE_F32)
            continue;
        const inferd_kernels *k = inferd_kernels_get(tq->type);
        assert_non_null(k);
        assert_int_equal(t32->n_elems, tq->n_elems);
        void *mine = inferd_malloc((size_t)tq->size_bytes);
        k->quantize(t32->data, mine, (int64_t)t32->n_elems);
        if (memcmp(mine, tq->data, (size_t)tq->size_bytes) != 0)
            fail_msg("%s: tensor %s (%s) differs from llama-quantize's", q_name, name,
                     inferd_dtype_name(tq->type));
        inferd_free(mine);
        n_checked++;
    }
    assert_true(n_checked > 10);
    inferd_gguf_close(gq);
    inferd_gguf_close(g32);
}

static void test_quant_quantize_matches_llama_quantize(void **state)
{
    (void)state;
    check_fixture_pair("stories260K-ff192.gguf", "stories260K-ff192-q4_0.gguf");
    check_fixture_pair("stories260K-ff192.gguf", "stories260K-ff192-q8_0.gguf");
    check_fixture_pair("stories260K.gguf", "stories260K-f16.gguf");
    check_fixture_pair("stories260K.gguf", "stories260K-bf16.gguf");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quant_block_sizes_match_dtype_table),
        cmocka_unit_test(test_quant_table_covers_types),
        cmocka_unit_test(test_quant_q4_0_known_block),
        cmocka_unit_test(test_quant_q5_known_blocks),
        cmocka_unit_test(test_quant_q8_known_rounding),
        cmocka_unit_test(test_quant_q4_0_quantize_formula),
        cmocka_unit_test(test_quant_f16_edge_cases),
        cmocka_unit_test(test_quant_bf16_edge_cases),
        cmocka_unit_test(test_quant_to_float_matches_scalar),
        cmocka_unit_test(test_quant_from_float_matches_scalar),
        cmocka_unit_test(test_quant_vec_dot_matches_scalar_and_reference),
        cmocka_unit_test(test_quant_vec_dot_gemv_order),
        cmocka_unit_test(test_quant_mdot_equals_vec_dot),
        cmocka_unit_test(test_quant_round_trip_error_bounds),
        cmocka_unit_test(test_quant_q8_tiny_block_agrees),
        cmocka_unit_test(test_quant_quantize_matches_llama_quantize),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
