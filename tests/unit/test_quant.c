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
 * the lane accumulations and the 8-lane reduction, at most ~n/16 per lane
 * (float types: one fma per element) or ~n/32 (block formats: one fma per
 * lane and block, plus summs' one per block) at 2^-24 each, and a few
 * more for the reduction. */
#define TOL_DOT_F32 2e-5
#define TOL_DOT_F16 2e-5
#define TOL_DOT_BF16 2e-5
#define TOL_DOT_QUANT 2e-5
/* SIMD against scalar: the fixed order of operations makes them equal. */
#define TOL_SIMD_VS_SCALAR_ULP 0
/* K-quant round trips, in steps amax / nmax of the super-block (see
 * test_quant_k_round_trip_error_bounds; the test data reach 1.01, 1.25 and
 * 0.55: the asymmetric grids span up to 2 * amax, and the 6-bit scales and
 * mins can cost about half a step more). */
#define TOL_ROUND_TRIP_Q4_K 1.5
#define TOL_ROUND_TRIP_Q5_K 1.5
#define TOL_ROUND_TRIP_Q6_K 0.75
/* Q2_K (levels 0..3 over [min, max]: up to ~2 * amax / 3 wide, 4-bit scales
 * and mins), Q3_K (-4..3 against amax / 4, 6-bit scales) and the IQ4
 * types (16 non-uniform levels, steps up to 24/127 of amax ~ 1.5 / 8):
 * measured 0.97, 0.93 and 0.94 steps. */
#define TOL_ROUND_TRIP_Q2_K 1.5
#define TOL_ROUND_TRIP_Q3_K 1.0
#define TOL_ROUND_TRIP_IQ4 1.25

static const uint32_t all_types[] = {
    INFERD_DTYPE_F32,    INFERD_DTYPE_F16,  INFERD_DTYPE_BF16, INFERD_DTYPE_Q4_0,
    INFERD_DTYPE_Q4_1,   INFERD_DTYPE_Q5_0, INFERD_DTYPE_Q5_1, INFERD_DTYPE_Q8_0,
    INFERD_DTYPE_Q8_1,   INFERD_DTYPE_Q4_K, INFERD_DTYPE_Q5_K, INFERD_DTYPE_Q6_K,
    INFERD_DTYPE_Q8_K,   INFERD_DTYPE_Q2_K, INFERD_DTYPE_Q3_K, INFERD_DTYPE_IQ4_NL,
    INFERD_DTYPE_IQ4_XS,
};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

/* ---- deterministic random data ----------------------------------------- */

static uint64_t rng_state;

static void rng_seed(uint64_t s) { rng_state = s; }

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

static int is_block_type(uint32_t t) { return inferd_dtype_get(t)->block_size > 1; }

static int is_k_type(uint32_t t)
{
    return t == INFERD_DTYPE_Q4_K || t == INFERD_DTYPE_Q5_K || t == INFERD_DTYPE_Q6_K ||
           t == INFERD_DTYPE_Q8_K;
}

/* Q2_K, Q3_K, IQ4_NL, IQ4_XS (quant_k2*.c). */
static int is_k2_type(uint32_t t)
{
    return t == INFERD_DTYPE_Q2_K || t == INFERD_DTYPE_Q3_K || t == INFERD_DTYPE_IQ4_NL ||
           t == INFERD_DTYPE_IQ4_XS;
}

/* Types whose rows only ever hold activations: no dot product. */
static int is_activation_type(uint32_t t)
{
    return t == INFERD_DTYPE_Q8_1 || t == INFERD_DTYPE_Q8_K;
}

static int64_t block_size(uint32_t t) { return inferd_dtype_get(t)->block_size; }

static size_t row_size(uint32_t t, int64_t n) { return inferd_quant_row_size(t, n); }

static int n_isas(void) { return (int)inferd_cpu_isa_hw() + 1; }

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
    assert_int_equal(sizeof(inferd_block_q4_k), inferd_dtype_get(INFERD_DTYPE_Q4_K)->type_size);
    assert_int_equal(sizeof(inferd_block_q5_k), inferd_dtype_get(INFERD_DTYPE_Q5_K)->type_size);
    assert_int_equal(sizeof(inferd_block_q6_k), inferd_dtype_get(INFERD_DTYPE_Q6_K)->type_size);
    assert_int_equal(sizeof(inferd_block_q8_k), inferd_dtype_get(INFERD_DTYPE_Q8_K)->type_size);
    assert_int_equal(inferd_dtype_get(INFERD_DTYPE_Q4_K)->block_size, INFERD_QK_K);
    /* GGUF's byte offsets. */
    assert_int_equal(offsetof(inferd_block_q4_k, scales), 4);
    assert_int_equal(offsetof(inferd_block_q4_k, qs), 16);
    assert_int_equal(offsetof(inferd_block_q5_k, qh), 16);
    assert_int_equal(offsetof(inferd_block_q5_k, qs), 48);
    assert_int_equal(offsetof(inferd_block_q6_k, qh), 128);
    assert_int_equal(offsetof(inferd_block_q6_k, scales), 192);
    assert_int_equal(offsetof(inferd_block_q6_k, d), 208);
    assert_int_equal(offsetof(inferd_block_q8_k, qs), 4);
    assert_int_equal(offsetof(inferd_block_q8_k, bsums), 260);
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
            if (is_activation_type(all_types[i])) {
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
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q4_K)->vec_dot_type, INFERD_DTYPE_Q8_K);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q5_K)->vec_dot_type, INFERD_DTYPE_Q8_K);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q6_K)->vec_dot_type, INFERD_DTYPE_Q8_K);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q2_K)->vec_dot_type, INFERD_DTYPE_Q8_K);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_Q3_K)->vec_dot_type, INFERD_DTYPE_Q8_K);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_IQ4_NL)->vec_dot_type, INFERD_DTYPE_Q8_0);
    assert_int_equal(inferd_kernels_get(INFERD_DTYPE_IQ4_XS)->vec_dot_type, INFERD_DTYPE_Q8_K);
    assert_int_equal(sizeof(inferd_block_q2_k), inferd_dtype_get(INFERD_DTYPE_Q2_K)->type_size);
    assert_int_equal(sizeof(inferd_block_q3_k), inferd_dtype_get(INFERD_DTYPE_Q3_K)->type_size);
    assert_int_equal(sizeof(inferd_block_iq4_nl), inferd_dtype_get(INFERD_DTYPE_IQ4_NL)->type_size);
    assert_int_equal(sizeof(inferd_block_iq4_xs), inferd_dtype_get(INFERD_DTYPE_IQ4_XS)->type_size);
    assert_null(inferd_kernels_get(INFERD_DTYPE_I32));
    assert_null(inferd_kernels_get(999));
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q4_0, 64), 36);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q4_0, 33), 0);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_F16, 3), 6);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q4_K, 4864), 19 * 144);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q8_K, 11008), 43 * 292);
    assert_int_equal(inferd_quant_row_size(INFERD_DTYPE_Q6_K, 128), 0);
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

typedef struct {
    uint32_t f32_bits;
    uint16_t f16;
} f16_case;

static void test_quant_f16_edge_cases(void **state)
{
    (void)state;
    static const f16_case cases[] = {
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000}, /* +-0 */
        {0x3f800000u, 0x3c00}, {0xc0000000u, 0xc000}, /* 1, -2 */
        {0x477fe000u, 0x7bff},                        /* 65504, largest */
        {0x477ff000u, 0x7c00},                        /* 65520 rounds to inf */
        {0x477fefffu, 0x7bff},                        /* just below */
        {0x7f800000u, 0x7c00}, {0xff800000u, 0xfc00}, /* +-inf */
        {0x33800000u, 0x0001},                        /* 2^-24 smallest subnormal */
        {0x33000000u, 0x0000},                        /* 2^-25: tie -> even 0 */
        {0x33c00000u, 0x0002},                        /* 1.5*2^-24: tie -> even 2 */
        {0x38800000u, 0x0400},                        /* 2^-14 smallest normal */
        {0x387fc000u, 0x03ff},                        /* largest subnormal */
        {0x3f801000u, 0x3c00},                        /* 1 + 2^-11: tie -> even */
        {0x3f803000u, 0x3c02},                        /* 1 + 3*2^-11: tie -> even */
        {0x3f801001u, 0x3c01},                        /* just above the tie */
        {0x7fc00000u, 0x7e00},                        /* quiet nan */
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
        const uint16_t h[9] = {0x0001, 0x03ff, 0x8001, 0x7bff, 0x7c00,
                               0xfc00, 0x3555, 0xc123, 0x0400};
        float out[9];
        k->to_float(h, out, 9);
        for (int j = 0; j < 9; j++)
            assert_int_equal(inferd__f32_bits(out[j]), inferd__f32_bits(inferd_f16_to_f32(h[j])));
    }
}

static void test_quant_bf16_edge_cases(void **state)
{
    (void)state;
    static const struct {
        uint32_t f;
        uint16_t b;
    } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie -> even */
        {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81},
        {0x7f800000u, 0x7f80}, {0x7f7fffffu, 0x7f80}, /* rounds up to inf */
        {0x00000001u, 0x0000}, {0x80000000u, 0x8000},
        {0x7f800001u, 0x7fc0}, /* signalling nan -> quiet */
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
/* Super-blocks of the K-quants: odd counts, and rows of 4864 and 11008
 * columns (19 and 43 super-blocks). */
static const int64_t k_block_counts[] = {1, 2, 3, 5, 7, 19, 43};

static int64_t case_size(uint32_t type, int i, int *n_cases)
{
    if (is_k_type(type) || (is_k2_type(type) && type != INFERD_DTYPE_IQ4_NL)) {
        *n_cases = (int)(sizeof(k_block_counts) / sizeof(k_block_counts[0]));
        return k_block_counts[i] * INFERD_QK_K;
    }
    if (is_block_type(type)) {
        *n_cases = (int)(sizeof(block_counts) / sizeof(block_counts[0]));
        return block_counts[i] * INFERD_QK;
    }
    *n_cases = (int)(sizeof(float_sizes) / sizeof(float_sizes[0]));
    return float_sizes[i];
}

/* Random weight row: quantized from random floats, then (for block types)
 * every few blocks overwritten by raw random bytes with a sane scale, so
 * the full range of stored values (Q8_0's -128, every qh bit, K-quant
 * scales 63 and Q6_K's -128) is covered. */
static void make_weight_row(uint32_t type, int64_t n, void *dst)
{
    float *x = inferd_malloc((size_t)n * sizeof(float));
    assert_non_null(x);
    fill_floats(x, n);
    inferd_kernels_get_isa(type, INFERD_ISA_SCALAR)->quantize(x, dst, n);
    if (is_block_type(type)) {
        const size_t bs = inferd_dtype_get(type)->type_size;
        for (int64_t b = 1; b < n / block_size(type); b += 3) {
            uint8_t *p = (uint8_t *)dst + (size_t)b * bs;
            for (size_t i = 0; i < bs; i++)
                p[i] = (uint8_t)rng_next();
            if (type == INFERD_DTYPE_Q6_K) {
                p[208] = 0x55;
                p[209] = 0x21; /* d = f16 0x2155 */
                continue;
            }
            if (type == INFERD_DTYPE_Q8_K) {
                const float d = 0.0123f;
                memcpy(p, &d, sizeof(d));
                continue;
            }
            if (type == INFERD_DTYPE_Q2_K || type == INFERD_DTYPE_Q3_K) {
                /* Q3_K: d = f16 0x2155 (last two bytes); Q2_K: d = 0x20?? and
                 * dmin = 0x2000 (its last four bytes). */
                p[bs - 2] = 0x55;
                p[bs - 1] = 0x21;
                if (type == INFERD_DTYPE_Q2_K) {
                    p[bs - 4] = 0x00;
                    p[bs - 3] = (uint8_t)(0x20 | (rng_next() & 1));
                    p[bs - 2] = 0x00;
                    p[bs - 1] = 0x20;
                }
                continue;
            }
            p[0] = 0x55;
            p[1] = 0x21; /* d = f16 0x2155 */
            if (type == INFERD_DTYPE_Q4_1 || type == INFERD_DTYPE_Q5_1 ||
                type == INFERD_DTYPE_Q8_1) {
                p[2] = 0x00;
                p[3] = (uint8_t)(0xa8 | (rng_next() & 1)); /* m or s, negative */
            }
            if (type == INFERD_DTYPE_Q4_K || type == INFERD_DTYPE_Q5_K) {
                p[2] = 0x00;
                p[3] = (uint8_t)(0x20 | (rng_next() & 1)); /* dmin */
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
            const int64_t zb = is_block_type(type) ? block_size(type) : 32;
            if (n >= zb)
                for (int64_t j = 0; j < zb; j++) /* an all-zero block */
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

/* Element j of a K-quant super-block, decoded from the layout documented
 * in quant.h (independently of the kernels): the integer quant with any
 * offset removed, its scale d * sc and its min dmin * m. */
static void k_decode(uint32_t type, const uint8_t *blk, int j, int *out_q, double *out_scale,
                     double *out_min)
{
    uint16_t h16;
    if (type == INFERD_DTYPE_Q6_K) {
        const int half = j / 128, quarter = (j % 128) / 32, l = j % 32;
        const uint8_t *ql = blk + 64 * half, *qh = blk + 128 + 32 * half;
        const int low = quarter % 2 ? ql[l + 32] : ql[l];
        const int lo4 = quarter < 2 ? low & 15 : low >> 4;
        const int hi2 = (qh[l] >> (2 * quarter)) & 3;
        memcpy(&h16, blk + 208, 2);
        *out_q = (lo4 | hi2 << 4) - 32;
        *out_scale = (double)inferd_f16_to_f32(h16) * (int8_t)blk[192 + j / 16];
        *out_min = 0;
        return;
    }
    const int s = j / 32, c = j / 64, l = j % 32, upper = (j % 64) >= 32;
    const uint8_t *sc = blk + 4;
    const uint8_t *qs = blk + (type == INFERD_DTYPE_Q5_K ? 48 : 16);
    int q = upper ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
    if (type == INFERD_DTYPE_Q5_K)
        q |= ((blk[16 + l] >> (2 * c + upper)) & 1) << 4;
    int scale, min;
    if (s < 4) {
        scale = sc[s] & 63;
        min = sc[s + 4] & 63;
    } else {
        scale = (sc[s + 4] & 15) | (sc[s - 4] >> 6) << 4;
        min = (sc[s + 4] >> 4) | (sc[s] >> 6) << 4;
    }
    memcpy(&h16, blk, 2);
    *out_q = q;
    *out_scale = (double)inferd_f16_to_f32(h16) * scale;
    memcpy(&h16, blk + 2, 2);
    *out_min = (double)inferd_f16_to_f32(h16) * min;
}

/* The K-quant block formula sum_j (d*sc*q - dmin*m) * da*qa in double,
 * with sum |term|. */
static double ref_dot_k(uint32_t type, int64_t n, const void *w, const void *a, double *out_abs)
{
    const size_t wbs = inferd_dtype_get(type)->type_size;
    const inferd_block_q8_k *ab = a;
    double sum = 0.0, abs_sum = 0.0;
    for (int64_t b = 0; b < n / INFERD_QK_K; b++) {
        const uint8_t *blk = (const uint8_t *)w + (size_t)b * wbs;
        for (int j = 0; j < INFERD_QK_K; j++) {
            int q;
            double scale, min;
            k_decode(type, blk, j, &q, &scale, &min);
            const double x = (double)ab[b].d * ab[b].qs[j];
            const double t1 = scale * q * x, t2 = -min * x;
            sum += t1 + t2;
            abs_sum += fabs(t1) + fabs(t2);
        }
    }
    *out_abs = abs_sum;
    return sum;
}

/* Independent double-precision value of the dot product: float types from
 * the dequantized rows; block types from the format's formula
 * sum_b dw*da*sum(qw*qa) (+ mw*sa), read straight from the dequantized
 * values, with sum |term| for the tolerance. */
static double ref_dot(uint32_t type, int64_t n, const void *w, const void *a, double *out_abs)
{
    if (is_k_type(type))
        return ref_dot_k(type, n, w, a, out_abs);
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
        if (is_activation_type(type))
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
                const float got =
                    inferd_kernels_get_isa(type, (inferd_isa)isa)->vec_dot_gemv(n, w, a);
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
        if (is_activation_type(type))
            continue;
        const int64_t n = is_block_type(type) ? 7 * block_size(type) : 77;
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
static double f16_err(double v) { return fmax(fabs(v) / 2048.0, 1.0 / 33554432.0); }

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
        if (is_k_type(type) || is_k2_type(type))
            continue; /* test_quant_k_round_trip_error_bounds */
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
 * importance matrix) from the F32 or F16 ones: quantizing those tensors
 * (F16 widened to f32) with our reference quantizers must give the same
 * bytes, for at least @p min_checked tensors. */
static void check_fixture_pair(const char *f32_name, const char *q_name, int min_checked)
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
        if (!t32 || (t32->type != INFERD_DTYPE_F32 && t32->type != INFERD_DTYPE_F16) ||
            t32->type == tq->type)
            continue;
        const inferd_kernels *k = inferd_kernels_get(tq->type);
        assert_non_null(k);
        assert_int_equal(t32->n_elems, tq->n_elems);
        /* F16 sources widen to f32 exactly, as llama-quantize reads them. */
        float *x = inferd_malloc((size_t)t32->n_elems * sizeof(float));
        void *mine = inferd_malloc((size_t)tq->size_bytes);
        inferd_kernels_get(t32->type)->to_float(t32->data, x, (int64_t)t32->n_elems);
        k->quantize(x, mine, (int64_t)t32->n_elems);
        if (memcmp(mine, tq->data, (size_t)tq->size_bytes) != 0)
            fail_msg("%s: tensor %s (%s) differs from llama-quantize's", q_name, name,
                     inferd_dtype_name(tq->type));
        inferd_free(mine);
        inferd_free(x);
        n_checked++;
    }
    assert_true(n_checked >= min_checked);
    inferd_gguf_close(gq);
    inferd_gguf_close(g32);
}

static void test_quant_quantize_matches_llama_quantize(void **state)
{
    (void)state;
    check_fixture_pair("stories260K-ff192.gguf", "stories260K-ff192-q4_0.gguf", 11);
    check_fixture_pair("stories260K-ff192.gguf", "stories260K-ff192-q8_0.gguf", 11);
    check_fixture_pair("stories260K.gguf", "stories260K-f16.gguf", 11);
    check_fixture_pair("stories260K.gguf", "stories260K-bf16.gguf", 11);
}

/* small-q4_k_m.gguf is small-q8_0.gguf requantized by llama-quantize
 * (Q4_K_M, no importance matrix): dequantizing each Q8_0 tensor and
 * quantizing it with our reference quantizer of the tensor's type in the
 * Q4_K_M file must give its bytes. Covers Q4_K, Q6_K and (for ffn_down,
 * whose 1408 columns do not fit super-blocks) Q5_0 and Q8_0. */
static void test_quant_k_quantize_matches_llama_quantize(void **state)
{
    (void)state;
    char p8[512], pk[512];
    inferd_gguf *g8 = NULL, *gk = NULL;
    snprintf(p8, sizeof(p8), "%s/models/small-q8_0.gguf", INFERD_FIXTURES);
    snprintf(pk, sizeof(pk), "%s/models/small-q4_k_m.gguf", INFERD_FIXTURES);
    assert_int_equal(inferd_gguf_open(p8, &g8, NULL), 0);
    assert_int_equal(inferd_gguf_open(pk, &gk, NULL), 0);
    int n_by_type[INFERD_DTYPE_COUNT] = {0};
    const inferd_kernels *k8 = inferd_kernels_get_isa(INFERD_DTYPE_Q8_0, INFERD_ISA_SCALAR);
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(gk); i++) {
        const inferd_gguf_tensor *tk = inferd_gguf_tensor_at(gk, i);
        char name[256];
        if (tk->type == INFERD_DTYPE_F32 || tk->name.len >= sizeof(name))
            continue;
        memcpy(name, tk->name.ptr, tk->name.len);
        name[tk->name.len] = '\0';
        const inferd_gguf_tensor *t8 = inferd_gguf_find_tensor(g8, name);
        assert_non_null(t8);
        assert_int_equal(t8->type, INFERD_DTYPE_Q8_0);
        assert_int_equal(t8->n_elems, tk->n_elems);
        const inferd_kernels *k = inferd_kernels_get_isa(tk->type, INFERD_ISA_SCALAR);
        assert_non_null(k);
        float *x = inferd_malloc((size_t)t8->n_elems * sizeof(float));
        void *mine = inferd_malloc((size_t)tk->size_bytes);
        assert_true(x && mine);
        k8->to_float(t8->data, x, (int64_t)t8->n_elems);
        k->quantize(x, mine, (int64_t)t8->n_elems);
        if (memcmp(mine, tk->data, (size_t)tk->size_bytes) != 0) {
            size_t off = 0;
            while (((const uint8_t *)mine)[off] == ((const uint8_t *)tk->data)[off])
                off++;
            fail_msg("tensor %s (%s) differs from llama-quantize's at byte %zu", name,
                     inferd_dtype_name(tk->type), off);
        }
        inferd_free(mine);
        inferd_free(x);
        n_by_type[tk->type]++;
    }
    assert_int_equal(n_by_type[INFERD_DTYPE_Q4_K], 45);
    assert_int_equal(n_by_type[INFERD_DTYPE_Q6_K], 5);
    assert_int_equal(n_by_type[INFERD_DTYPE_Q5_0], 4);
    assert_int_equal(n_by_type[INFERD_DTYPE_Q8_0], 4);
    inferd_gguf_close(gk);
    inferd_gguf_close(g8);

    /* Q5_K: random-dim256-q5_k.gguf, llama-quantize --pure Q5_K_S of the
     * F16 random-dim256-f16.gguf (F16 widens to f32 exactly). */
    check_fixture_pair("random-dim256-f16.gguf", "random-dim256-q5_k.gguf", 9);
}

/* ---- K-quants ---------------------------------------------------------------- */

/* Hand-built super-blocks, packed from the layout documented in quant.h,
 * whose elements are small exact values: every ISA's to_float gives them
 * exactly, and the test's own decoder (k_decode) agrees. */
static void pack_scale_min(uint8_t p[12], const int sc[8], const int m[8])
{
    for (int s = 0; s < 4; s++) {
        p[s] = (uint8_t)((sc[s] & 63) | (sc[s + 4] >> 4) << 6);
        p[s + 4] = (uint8_t)((m[s] & 63) | (m[s + 4] >> 4) << 6);
        p[s + 8] = (uint8_t)((sc[s + 4] & 15) | (m[s + 4] & 15) << 4);
    }
}

static void test_quant_k_known_blocks(void **state)
{
    (void)state;
    int sc[8], m[8], q[256];
    float want[256], got[256];
    for (int s = 0; s < 8; s++) {
        sc[s] = 8 * s + 7; /* 7..63: every high bit pattern */
        m[s] = 63 - 8 * s;
    }
    for (int t = 0; t < 2; t++) {
        const uint32_t type = t ? INFERD_DTYPE_Q5_K : INFERD_DTYPE_Q4_K;
        uint8_t blk[176] = {0};
        const uint16_t d = 0x3c00, dmin = 0x3800; /* 1.0, 0.5 */
        memcpy(blk, &d, 2);
        memcpy(blk + 2, &dmin, 2);
        pack_scale_min(blk + 4, sc, m);
        uint8_t *qs = blk + (t ? 48 : 16), *qh = blk + 16;
        for (int j = 0; j < 256; j++) {
            q[j] = t ? (j * 11 + 5) % 32 : (j * 7 + 3) % 16;
            const int c = j / 64, l = j % 32, upper = (j % 64) >= 32;
            qs[32 * c + l] |= (uint8_t)((q[j] & 15) << (upper ? 4 : 0));
            if (t)
                qh[l] |= (uint8_t)((q[j] >> 4) << (2 * c + upper));
            want[j] = 1.0f * (float)sc[j / 32] * (float)q[j] - 0.5f * (float)m[j / 32];
        }
        for (int j = 0; j < 256; j++) {
            int dq;
            double dscale, dmn;
            k_decode(type, blk, j, &dq, &dscale, &dmn);
            assert_true(dscale * dq - dmn == (double)want[j]);
        }
        for (int isa = 0; isa < n_isas(); isa++) {
            inferd_kernels_get_isa(type, (inferd_isa)isa)->to_float(blk, got, 256);
            for (int j = 0; j < 256; j++)
                if (got[j] != want[j])
                    fail_msg("%s %s element %d: %g, want %g", inferd_dtype_name(type),
                             inferd_isa_name((inferd_isa)isa), j, got[j], want[j]);
        }
    }

    /* Q6_K: d = 0.25, scales -128, -111, .., 127. */
    inferd_block_q6_k b6;
    memset(&b6, 0, sizeof(b6));
    b6.d = 0x3400;
    for (int s = 0; s < 16; s++)
        b6.scales[s] = (int8_t)(17 * s - 128);
    for (int j = 0; j < 256; j++) {
        q[j] = (j * 13 + 7) % 64;
        const int half = j / 128, quarter = (j % 128) / 32, l = j % 32;
        uint8_t *ql = b6.ql + 64 * half + (quarter % 2 ? 32 : 0);
        ql[l] |= (uint8_t)((q[j] & 15) << (quarter < 2 ? 0 : 4));
        b6.qh[32 * half + l] |= (uint8_t)((q[j] >> 4) << (2 * quarter));
        want[j] = 0.25f * (float)(17 * (j / 16) - 128) * (float)(q[j] - 32);
    }
    for (int j = 0; j < 256; j++) {
        int dq;
        double dscale, dmn;
        k_decode(INFERD_DTYPE_Q6_K, (const uint8_t *)&b6, j, &dq, &dscale, &dmn);
        assert_true(dscale * dq == (double)want[j]);
    }
    for (int isa = 0; isa < n_isas(); isa++) {
        inferd_kernels_get_isa(INFERD_DTYPE_Q6_K, (inferd_isa)isa)->to_float(&b6, got, 256);
        for (int j = 0; j < 256; j++)
            if (got[j] != want[j])
                fail_msg("Q6_K %s element %d: %g, want %g", inferd_isa_name((inferd_isa)isa), j,
                         got[j], want[j]);
    }

    /* Q8_K: d = 0.5, every byte value. */
    inferd_block_q8_k b8;
    memset(&b8, 0, sizeof(b8));
    b8.d = 0.5f;
    for (int j = 0; j < 256; j++)
        b8.qs[j] = (int8_t)(j - 128);
    for (int isa = 0; isa < n_isas(); isa++) {
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_K, (inferd_isa)isa)->to_float(&b8, got, 256);
        for (int j = 0; j < 256; j++)
            assert_true(got[j] == 0.5f * (float)(j - 128));
    }
}

/* The Q8_K activation quantizer's rounding (quantize_row_q8_K_ref): max is
 * the first value of largest magnitude, with its sign; iscale = -127/max;
 * ties round to even; bsums are the sums of each 16 stored quants. */
static void test_quant_q8_k_known_rounding(void **state)
{
    (void)state;
    float x[256] = {0};
    x[0] = 0.5f;                   /* 31.75 -> 32 */
    x[1] = -2.0f;                  /* the max: iscale = 63.5 */
    x[2] = 2.0f;                   /* same magnitude, later: not the max */
    x[3] = 1.0f;                   /* 63.5 -> 64 (even) */
    x[4] = -1.0f;                  /* -63.5 -> -64 */
    x[17] = 0.25f;                 /* 15.875 -> 16, second group */
    x[255] = -0.5f / 63.5f * 3.0f; /* about -1.5: lands on -1 or -2, any ISA alike */
    for (int isa = 0; isa < n_isas(); isa++) {
        inferd_block_q8_k b;
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_K, (inferd_isa)isa)->from_float(x, &b, 256);
        assert_true(b.d == 1.0f / 63.5f);
        assert_int_equal(b.qs[0], 32);
        assert_int_equal(b.qs[1], -127);
        assert_int_equal(b.qs[2], 127);
        assert_int_equal(b.qs[3], 64);
        assert_int_equal(b.qs[4], -64);
        assert_int_equal(b.qs[17], 16);
        assert_int_equal(b.bsums[0], 32 - 127 + 127 + 64 - 64);
        assert_int_equal(b.bsums[1], 16);
        assert_int_equal(b.bsums[15], b.qs[255]);
    }
}

/* Inputs at the edges (NaN, infinities, subnormals, zeros, ties of the
 * largest magnitude with either sign first) quantize to the same bytes on
 * every ISA. */
static void test_quant_q8_k_edge_inputs_agree(void **state)
{
    (void)state;
    enum { N_BLOCKS = 7 };
    float x[N_BLOCKS * 256];
    rng_seed(41);
    fill_floats(x, N_BLOCKS * 256);
    float *b0 = x, *b1 = x + 256, *b2 = x + 512, *b3 = x + 768, *b4 = x + 1024, *b5 = x + 1280;
    b0[3] = NAN;
    b0[100] = -NAN;
    b1[7] = INFINITY;
    b1[9] = 5.0f;
    for (int j = 0; j < 256; j++) {
        b2[j] = j % 5 ? 1e-42f * (float)(j % 7) : -1e-45f;
        b3[j] = 0.0f;
        b5[j] = NAN;
    }
    b3[200] = -0.0f;
    b4[10] = -7.0f;
    b4[20] = 7.0f;
    b4[200] = -7.0f;
    inferd_block_q8_k ref[N_BLOCKS], got[N_BLOCKS];
    const inferd_kernels *ks = inferd_kernels_get_isa(INFERD_DTYPE_Q8_K, INFERD_ISA_SCALAR);
    ks->from_float(x, ref, N_BLOCKS * 256);
    /* max = -7, the first of the three: iscale > 0, so -7 -> -127. */
    assert_true(ref[4].d > 0 && ref[4].qs[10] == -127 && ref[4].qs[20] == 127);
    assert_true(ref[3].d == 0 && ref[5].d == 0);
    for (int isa = 1; isa < n_isas(); isa++) {
        memset(got, 0xee, sizeof(got));
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_K, (inferd_isa)isa)
            ->from_float(x, got, N_BLOCKS * 256);
        for (int b = 0; b < N_BLOCKS; b++)
            if (memcmp(&ref[b], &got[b], sizeof(ref[b])) != 0)
                fail_msg("Q8_K block %d differs on %s", b, inferd_isa_name((inferd_isa)isa));
    }
}

/* Largest stored values and scales against activations of +-127: no
 * intermediate sum saturates or overflows on any ISA, and the result is
 * the exact formula's. */
static void test_quant_k_dot_extremes(void **state)
{
    (void)state;
    const uint32_t types[3] = {INFERD_DTYPE_Q4_K, INFERD_DTYPE_Q5_K, INFERD_DTYPE_Q6_K};
    const int64_t n = 3 * INFERD_QK_K;
    float x[3 * 256];
    inferd_block_q8_k a[3];
    for (int pat = 0; pat < 3; pat++) {
        for (int j = 0; j < n; j++)
            x[j] = pat == 0 ? 1.0f : pat == 1 ? (j % 2 ? -1.0f : 1.0f) : -1.0f;
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_K, INFERD_ISA_SCALAR)->from_float(x, a, n);
        for (int ti = 0; ti < 3; ti++) {
            const uint32_t type = types[ti];
            const size_t bs = inferd_dtype_get(type)->type_size;
            uint8_t w[3 * 210];
            memset(w, 0xff, sizeof(w)); /* every quant and scale at its top */
            for (int b = 0; b < 3; b++) {
                uint8_t *p = w + (size_t)b * bs;
                const uint16_t d = 0x3c00, dmin = 0x3c00;
                if (type == INFERD_DTYPE_Q6_K) {
                    /* Scales -128 in block 1, 127 elsewhere. */
                    memset(p + 192, b == 1 ? 0x80 : 0x7f, 16);
                    if (b == 2)
                        memset(p, 0, 192); /* quants 0: q - 32 = -32 */
                    memcpy(p + 208, &d, 2);
                } else {
                    memcpy(p, &d, 2);
                    memcpy(p + 2, &dmin, 2);
                }
            }
            double abs_sum;
            const double exact = ref_dot_k(type, n, w, a, &abs_sum);
            const float ref = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR)->vec_dot(n, w, a);
            if (fabs((double)ref - exact) > TOL_DOT_QUANT * abs_sum)
                fail_msg("%s pattern %d: %.9g vs exact %.9g", inferd_dtype_name(type), pat, ref,
                         exact);
            for (int isa = 0; isa < n_isas(); isa++) {
                const inferd_kernels *k = inferd_kernels_get_isa(type, (inferd_isa)isa);
                float o[2] = {0, 0};
                k->mdot(n, w, 0, 2, a, 0, 1, o, 2); /* two lanes of the same row */
                assert_true(inferd__f32_bits(k->vec_dot(n, w, a)) == inferd__f32_bits(ref));
                assert_true(inferd__f32_bits(o[0]) == inferd__f32_bits(ref));
                assert_true(inferd__f32_bits(o[1]) == inferd__f32_bits(ref));
            }
        }
    }
}

/* ggml's hsum_float_8. */
static float hsum8_ref(const float x[8])
{
    return ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
}

/* Integer scale and min of sub-block s of a Q4_K/Q5_K super-block. */
static void k_int_scale_min(const uint8_t *blk, int s, int *out_sc, int *out_m)
{
    const uint8_t *p = blk + 4;
    if (s < 4) {
        *out_sc = p[s] & 63;
        *out_m = p[s + 4] & 63;
    } else {
        *out_sc = (p[s + 4] & 15) | (p[s - 4] >> 6) << 4;
        *out_m = (p[s + 4] >> 4) | (p[s] >> 6) << 4;
    }
}

/* Every ISA's vec_dot, and mdot for one and for several tokens (each path
 * of the tiles), equals @p want bit for bit. */
static void assert_k_dot_everywhere(uint32_t type, int64_t n, const void *w, const void *a,
                                    float want)
{
    for (int isa = 0; isa < n_isas(); isa++) {
        const inferd_kernels *k = inferd_kernels_get_isa(type, (inferd_isa)isa);
        float out[2 * 3];
        const float got = k->vec_dot(n, w, a);
        if (inferd__f32_bits(got) != inferd__f32_bits(want))
            fail_msg("%s %s vec_dot %.9g, lane formula %.9g", inferd_dtype_name(type),
                     inferd_isa_name((inferd_isa)isa), got, want);
        for (int nt = 1; nt <= 3; nt += 2) {
            memset(out, 0, sizeof(out));
            k->mdot(n, w, 0, 2, a, 0, nt, out, 2); /* two rows, nt tokens, all alike */
            for (int i = 0; i < 2 * nt; i++)
                if (inferd__f32_bits(out[i]) != inferd__f32_bits(want))
                    fail_msg("%s %s mdot (%d tokens) %.9g, lane formula %.9g",
                             inferd_dtype_name(type), inferd_isa_name((inferd_isa)isa), nt, out[i],
                             want);
        }
    }
}

/*
 * The order of the K-quant dot products is ggml-cpu's AVX2 one
 * (quant_impl.h): lane k (0..7) sums elements 4k..4k+3 of every 32-element
 * piece times their sub-block's scale, one fma per lane and super-block
 * with d = da * dw, Q4_K's mins in four more lanes, then hsum_float_8. Two
 * hand-made super-blocks of Q4_K and of Q6_K against a Q8_K row: every
 * ISA gives that formula evaluated here, and on these data the former
 * order (one accumulator, one fma per super-block and per min term) gives
 * other bits, so the test tells the two apart.
 */
static void test_quant_k_dot_lane_order(void **state)
{
    (void)state;
    enum { NB = 2, N = NB * INFERD_QK_K };
    inferd_block_q8_k a[NB];
    inferd_block_q4_k w4[NB];
    inferd_block_q6_k w6[NB];
    rng_seed(47);
    for (int b = 0; b < NB; b++) {
        a[b].d = 0.0071f * (float)(b + 1);
        for (int j = 0; j < INFERD_QK_K; j++)
            a[b].qs[j] = (int8_t)((int)(rng_next() % 255) - 127);
        for (int g = 0; g < INFERD_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += a[b].qs[16 * g + j];
            a[b].bsums[g] = (int16_t)sum;
        }
        uint8_t *p4 = (uint8_t *)&w4[b], *p6 = (uint8_t *)&w6[b];
        for (size_t i = 0; i < sizeof(w4[b]); i++)
            p4[i] = (uint8_t)rng_next();
        for (size_t i = 0; i < sizeof(w6[b]); i++)
            p6[i] = (uint8_t)rng_next();
        w4[b].d = inferd_f32_to_f16(0.0173f * (float)(b + 1));
        w4[b].dmin = inferd_f32_to_f16(0.0041f);
        w6[b].d = inferd_f32_to_f16(-0.0213f);
    }

    /* Q4_K. */
    float acc[8] = {0}, acc_m[4] = {0}, old = 0.0f;
    for (int b = 0; b < NB; b++) {
        const uint8_t *blk = (const uint8_t *)&w4[b];
        const float dw = inferd_f16_to_f32(w4[b].d), dminw = inferd_f16_to_f32(w4[b].dmin);
        const float d = a[b].d * dw, dmin = -a[b].d * dminw;
        int32_t sumi[8] = {0}, m[8], q8s[8], sumi_all = 0, summ_all = 0;
        for (int i = 0; i < 8; i++) {
            int sc;
            k_int_scale_min(blk, i, &sc, &m[i]);
            for (int k = 0; k < 8; k++)
                for (int e = 0; e < 4; e++) {
                    const int j = 32 * i + 4 * k + e;
                    int q;
                    double ds, dm;
                    k_decode(INFERD_DTYPE_Q4_K, blk, j, &q, &ds, &dm);
                    sumi[k] += sc * q * a[b].qs[j];
                }
            q8s[i] = a[b].bsums[2 * i] + a[b].bsums[2 * i + 1];
        }
        for (int k = 0; k < 8; k++) {
            acc[k] = fmaf(d, (float)sumi[k], acc[k]);
            sumi_all += sumi[k];
        }
        for (int p = 0; p < 4; p++) {
            const int32_t prod = m[2 * p] * q8s[2 * p] + m[2 * p + 1] * q8s[2 * p + 1];
            acc_m[p] = fmaf(dmin, (float)prod, acc_m[p]);
            summ_all += prod;
        }
        old = fmaf(dw * a[b].d, (float)sumi_all, old);
        old = fmaf(-(dminw * a[b].d), (float)summ_all, old);
    }
    const float want4 = hsum8_ref(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
    assert_true(inferd__f32_bits(want4) != inferd__f32_bits(old));
    assert_k_dot_everywhere(INFERD_DTYPE_Q4_K, N, w4, a, want4);

    /* Q6_K: lane k of piece i is in sub-block (32i + 4k) / 16. */
    float acc6[8] = {0}, old6 = 0.0f;
    for (int b = 0; b < NB; b++) {
        const uint8_t *blk = (const uint8_t *)&w6[b];
        const float dw = inferd_f16_to_f32(w6[b].d), d = a[b].d * dw;
        int32_t sumi_all = 0;
        for (int k = 0; k < 8; k++) {
            int32_t sumi = 0;
            for (int i = 0; i < 8; i++)
                for (int e = 0; e < 4; e++) {
                    const int j = 32 * i + 4 * k + e;
                    int q;
                    double ds, dm;
                    k_decode(INFERD_DTYPE_Q6_K, blk, j, &q, &ds, &dm); /* q - 32 */
                    sumi += w6[b].scales[j / 16] * q * a[b].qs[j];
                }
            acc6[k] = fmaf(d, (float)sumi, acc6[k]);
            sumi_all += sumi;
        }
        old6 = fmaf(dw * a[b].d, (float)sumi_all, old6);
    }
    const float want6 = hsum8_ref(acc6);
    assert_true(inferd__f32_bits(want6) != inferd__f32_bits(old6));
    assert_k_dot_everywhere(INFERD_DTYPE_Q6_K, N, w6, a, want6);
}

/*
 * Q4_0 matrices whose row count is a multiple of 8 take the order of
 * llama.cpp's repacked q4_0_8x8 kernels (quant_impl.h): one fma per block
 * of the exact whole-block sum, acc = fma((float)isum_b, dw_b * da_b, acc).
 * Random rows against random Q8_0 rows, 7 blocks (an odd count, for the
 * AVX-512 tile's last block): every ISA's vec_dot_rows8 and mdot_rows8 (any
 * tile shape) give that formula evaluated here, and the lane order of
 * vec_dot gives other bits on some of these outputs.
 */
static void test_quant_q4_0_rows8_order(void **state)
{
    (void)state;
    enum { NB = 7, N = NB * INFERD_QK, ROWS = 11, TOKS = 18 };
    inferd_block_q4_0 w[ROWS][NB];
    inferd_block_q8_0 a[TOKS][NB];
    float x[N], want[TOKS][ROWS], out[TOKS * ROWS];
    const inferd_kernels *ks = inferd_kernels_get_isa(INFERD_DTYPE_Q4_0, INFERD_ISA_SCALAR);
    rng_seed(59);
    for (int r = 0; r < ROWS; r++)
        make_weight_row(INFERD_DTYPE_Q4_0, N, w[r]);
    for (int t = 0; t < TOKS; t++) {
        fill_floats(x, N);
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_0, INFERD_ISA_SCALAR)->from_float(x, a[t], N);
    }
    int n_differ = 0;
    for (int t = 0; t < TOKS; t++)
        for (int r = 0; r < ROWS; r++) {
            float acc = 0.0f;
            for (int b = 0; b < NB; b++) {
                int32_t isum = 0;
                for (int j = 0; j < INFERD_QK; j++) {
                    const int q = j < 16 ? w[r][b].qs[j] & 15 : w[r][b].qs[j - 16] >> 4;
                    isum += (q - 8) * a[t][b].qs[j];
                }
                acc = fmaf((float)isum, inferd_f16_to_f32(w[r][b].d) * inferd_f16_to_f32(a[t][b].d),
                           acc);
            }
            want[t][r] = acc;
            n_differ += inferd__f32_bits(acc) != inferd__f32_bits(ks->vec_dot(N, w[r], a[t]));
        }
    assert_true(n_differ > 0);
    for (int isa = 0; isa < n_isas(); isa++) {
        const inferd_kernels *k = inferd_kernels_get_isa(INFERD_DTYPE_Q4_0, (inferd_isa)isa);
        assert_non_null(k->vec_dot_rows8);
        assert_true(inferd_kernels_matrix_dot(k, N, 24, INFERD_ORDER_DECODE) == k->vec_dot_rows8);
        assert_true(inferd_kernels_matrix_dot(k, N, 20, INFERD_ORDER_DECODE) == k->vec_dot);
        assert_true(inferd_kernels_matrix_mdot(k, 24) == k->mdot_rows8);
        assert_true(inferd_kernels_matrix_mdot(k, 20) == k->mdot);
        for (int t = 0; t < TOKS; t++)
            for (int r = 0; r < ROWS; r++)
                if (inferd__f32_bits(k->vec_dot_rows8(N, w[r], a[t])) !=
                    inferd__f32_bits(want[t][r]))
                    fail_msg("%s vec_dot_rows8 (%d,%d)", inferd_isa_name((inferd_isa)isa), r, t);
        for (int nr = 1; nr <= ROWS; nr++)
            for (int nt = 1; nt <= TOKS; nt++) {
                memset(out, 0, sizeof(out));
                k->mdot_rows8(N, w, sizeof(w[0]), nr, a, sizeof(a[0]), nt, out, ROWS);
                for (int t = 0; t < nt; t++)
                    for (int r = 0; r < nr; r++)
                        if (inferd__f32_bits(out[t * ROWS + r]) != inferd__f32_bits(want[t][r]))
                            fail_msg("%s mdot_rows8 %dx%d at (%d,%d)",
                                     inferd_isa_name((inferd_isa)isa), nr, nt, r, t);
            }
    }
    for (uint32_t type = 0; type < INFERD_DTYPE_COUNT; type++) {
        const inferd_kernels *k = inferd_kernels_get(type);
        if (k && type != INFERD_DTYPE_Q4_0)
            assert_true(k->vec_dot_rows8 == NULL && k->mdot_rows8 == NULL);
    }
}

/*
 * The order of the 32-element block formats is ggml-cpu's AVX2 one
 * (quant_impl.h): per block, d = dw * da and eight exact lane sums (lane l:
 * elements 4l..4l+3), each added to its own f32 lane by one fma; then
 * hsum_float_8, plus Q4_1/Q5_1's summs = fma(m, s, summs) kept per block.
 * Two hand-made blocks of Q8_0 against a Q8_0 row, and of Q4_1 against a
 * Q8_1 row: every ISA's vec_dot and mdot give that formula evaluated
 * here, and on the Q8_0 data the former order (one accumulator, one fma
 * per block over the whole block sum) gives other bits, so the test tells
 * the two apart.
 */
static void test_quant_block_dot_lane_order(void **state)
{
    (void)state;
    enum { NB = 2, N = NB * INFERD_QK };
    inferd_block_q8_0 w8[NB], a8[NB];
    inferd_block_q4_1 w41[NB];
    inferd_block_q8_1 a81[NB];
    static const float wd[NB] = {0.0173f, -0.0291f}, ad[NB] = {0.0093f, 0.0117f};
    rng_seed(53);
    for (int b = 0; b < NB; b++) {
        w8[b].d = inferd_f32_to_f16(wd[b]);
        a8[b].d = inferd_f32_to_f16(ad[b]);
        for (int j = 0; j < INFERD_QK; j++) {
            w8[b].qs[j] = (int8_t)((int)(rng_next() % 255) - 127);
            a8[b].qs[j] = (int8_t)((int)(rng_next() % 255) - 127);
        }
        w41[b].d = inferd_f32_to_f16(-wd[b]);
        w41[b].m = inferd_f32_to_f16(0.37f * (float)(b + 1));
        for (int j = 0; j < INFERD_QK / 2; j++)
            w41[b].qs[j] = (uint8_t)rng_next();
        a81[b].d = a8[b].d;
        memcpy(a81[b].qs, a8[b].qs, sizeof(a81[b].qs));
        a81[b].s = inferd_f32_to_f16(-1.93f * (float)(b + 1));
    }

    /* Q8_0. */
    float acc[8] = {0}, old = 0.0f;
    for (int b = 0; b < NB; b++) {
        const float d = inferd_f16_to_f32(w8[b].d) * inferd_f16_to_f32(a8[b].d);
        int32_t isum_all = 0;
        for (int l = 0; l < 8; l++) {
            int32_t isum = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++)
                isum += w8[b].qs[j] * a8[b].qs[j];
            acc[l] = fmaf(d, (float)isum, acc[l]);
            isum_all += isum;
        }
        old = fmaf(d, (float)isum_all, old);
    }
    const float want8 = hsum8_ref(acc);
    assert_true(inferd__f32_bits(want8) != inferd__f32_bits(old));
    assert_k_dot_everywhere(INFERD_DTYPE_Q8_0, N, w8, a8, want8);

    /* Q4_1: element j of a block is the low nibble of qs[j] (j < 16), the
     * high nibble of qs[j - 16] otherwise; no offset. */
    float acc1[8] = {0}, summs = 0.0f;
    for (int b = 0; b < NB; b++) {
        const float d = inferd_f16_to_f32(w41[b].d) * inferd_f16_to_f32(a81[b].d);
        for (int l = 0; l < 8; l++) {
            int32_t isum = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) {
                const int q = j < 16 ? w41[b].qs[j] & 15 : w41[b].qs[j - 16] >> 4;
                isum += q * a81[b].qs[j];
            }
            acc1[l] = fmaf(d, (float)isum, acc1[l]);
        }
        summs = fmaf(inferd_f16_to_f32(w41[b].m), inferd_f16_to_f32(a81[b].s), summs);
    }
    assert_k_dot_everywhere(INFERD_DTYPE_Q4_1, N, w41, a81, hsum8_ref(acc1) + summs);
}

/* mdot of the K-quants over whole and partial 16-row tiles, 1..18 tokens
 * (more than one 8-token pass), super-block counts around the prepared
 * chunk size, and long rows: every output bit-identical to the ISA's
 * vec_dot, which equals the scalar one. */
static void test_quant_k_mdot_tiles(void **state)
{
    (void)state;
    const uint32_t types[] = {INFERD_DTYPE_Q4_K,  INFERD_DTYPE_Q5_K, INFERD_DTYPE_Q6_K,
                              INFERD_DTYPE_Q2_K,  INFERD_DTYPE_Q3_K, INFERD_DTYPE_IQ4_NL,
                              INFERD_DTYPE_IQ4_XS};
    static const struct {
        int64_t blocks;
        int rows, toks;
    } shapes[] = {
        {1, 37, 18}, {3, 33, 11}, {5, 17, 9}, {19, 19, 5}, {43, 18, 3},
    };
    rng_seed(42);
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const uint32_t type = types[ti];
        const inferd_kernels *ks = inferd_kernels_get_isa(type, INFERD_ISA_SCALAR);
        for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
            const int64_t n = shapes[si].blocks * INFERD_QK_K;
            const int max_rows = shapes[si].rows, max_toks = shapes[si].toks;
            const size_t wrow = row_size(type, n) + 16; /* a stride beyond the row */
            const size_t arow = row_size(ks->vec_dot_type, n);
            char *w = inferd_malloc(wrow * (size_t)max_rows);
            char *a = inferd_malloc(arow * (size_t)max_toks);
            float *x = inferd_malloc((size_t)n * sizeof(float));
            float *want = inferd_malloc((size_t)(max_rows * max_toks) * sizeof(float));
            float *out = inferd_malloc((size_t)(max_rows * max_toks) * sizeof(float));
            for (int r = 0; r < max_rows; r++)
                make_weight_row(type, n, w + (size_t)r * wrow);
            for (int t = 0; t < max_toks; t++) {
                fill_floats(x, n);
                inferd_kernels_get_isa(ks->vec_dot_type, INFERD_ISA_SCALAR)
                    ->from_float(x, a + (size_t)t * arow, n);
            }
            for (int t = 0; t < max_toks; t++)
                for (int r = 0; r < max_rows; r++)
                    want[t * max_rows + r] =
                        ks->vec_dot(n, w + (size_t)r * wrow, a + (size_t)t * arow);
            for (int isa = 0; isa < n_isas(); isa++) {
                const inferd_kernels *k = inferd_kernels_get_isa(type, (inferd_isa)isa);
                for (int t = 0; t < max_toks; t++)
                    for (int r = 0; r < max_rows; r++)
                        if (inferd__f32_bits(
                                k->vec_dot(n, w + (size_t)r * wrow, a + (size_t)t * arow)) !=
                            inferd__f32_bits(want[t * max_rows + r]))
                            fail_msg("%s %s vec_dot n=%lld (%d,%d) differs from scalar",
                                     inferd_dtype_name(type), inferd_isa_name((inferd_isa)isa),
                                     (long long)n, r, t);
                for (int nr = 1; nr <= max_rows; nr += (nr < 3 ? 1 : 7)) {
                    for (int nt = 1; nt <= max_toks; nt++) {
                        memset(out, 0xff, (size_t)(max_rows * max_toks) * sizeof(float));
                        k->mdot(n, w, wrow, nr, a, arow, nt, out, (size_t)max_rows);
                        for (int t = 0; t < max_toks; t++)
                            for (int r = 0; r < max_rows; r++) {
                                const float o = out[t * max_rows + r];
                                if (t >= nt || r >= nr) {
                                    if (inferd__f32_bits(o) != 0xffffffffu)
                                        fail_msg("%s %s mdot wrote outside %dx%d at (%d,%d)",
                                                 inferd_dtype_name(type),
                                                 inferd_isa_name((inferd_isa)isa), nr, nt, r, t);
                                } else if (inferd__f32_bits(o) !=
                                           inferd__f32_bits(want[t * max_rows + r])) {
                                    fail_msg("%s %s mdot n=%lld %dx%d at (%d,%d): %.9g vs %.9g",
                                             inferd_dtype_name(type),
                                             inferd_isa_name((inferd_isa)isa), (long long)n, nr, nt,
                                             r, t, o, want[t * max_rows + r]);
                                }
                            }
                    }
                }
            }
            inferd_free(w);
            inferd_free(a);
            inferd_free(x);
            inferd_free(want);
            inferd_free(out);
        }
    }
}

/* Round trip through each K-quant's quantizer and every ISA's to_float,
 * bounded in steps amax / nmax of each super-block (Q8_K: half a step, its
 * rounding; the others: see TOL_ROUND_TRIP_Q4_K). */
static void test_quant_k_round_trip_error_bounds(void **state)
{
    (void)state;
    static const struct {
        uint32_t type;
        double nmax, steps;
    } cases[] = {
        {INFERD_DTYPE_Q4_K, 15, TOL_ROUND_TRIP_Q4_K}, {INFERD_DTYPE_Q5_K, 31, TOL_ROUND_TRIP_Q5_K},
        {INFERD_DTYPE_Q6_K, 32, TOL_ROUND_TRIP_Q6_K}, {INFERD_DTYPE_Q8_K, 127, 0.5 + 1e-5},
        {INFERD_DTYPE_Q2_K, 3, TOL_ROUND_TRIP_Q2_K},  {INFERD_DTYPE_Q3_K, 4, TOL_ROUND_TRIP_Q3_K},
        {INFERD_DTYPE_IQ4_NL, 8, TOL_ROUND_TRIP_IQ4}, {INFERD_DTYPE_IQ4_XS, 8, TOL_ROUND_TRIP_IQ4},
    };
    rng_seed(43);
    const int64_t n = 16 * INFERD_QK_K;
    float *x = inferd_malloc((size_t)n * sizeof(float));
    float *y = inferd_malloc((size_t)n * sizeof(float));
    void *q = inferd_malloc(row_size(INFERD_DTYPE_Q8_K, n));
    fill_floats(x, n);
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const uint32_t type = cases[ci].type;
        double worst = 0;
        inferd_kernels_get_isa(type, INFERD_ISA_SCALAR)->quantize(x, q, n);
        for (int isa = 0; isa < n_isas(); isa++) {
            inferd_kernels_get_isa(type, (inferd_isa)isa)->to_float(q, y, n);
            for (int64_t b = 0; b < n / INFERD_QK_K; b++) {
                double amax = 0;
                for (int j = 0; j < INFERD_QK_K; j++)
                    amax = fmax(amax, fabs(x[b * INFERD_QK_K + j]));
                const double step = amax / cases[ci].nmax;
                for (int j = 0; j < INFERD_QK_K; j++) {
                    const int64_t i = b * INFERD_QK_K + j;
                    const double err = fabs((double)y[i] - (double)x[i]);
                    worst = fmax(worst, err / step);
                    if (err > cases[ci].steps * step + 1e-12)
                        fail_msg("%s round trip block %lld: |%g - %g| > %g steps of %g",
                                 inferd_dtype_name(type), (long long)b, x[i], y[i], cases[ci].steps,
                                 step);
                }
            }
        }
        print_message("%s round trip: worst error %.3f steps (allowed %.3f)\n",
                      inferd_dtype_name(type), worst, cases[ci].steps);
    }
    inferd_free(x);
    inferd_free(y);
    inferd_free(q);
}

/* Q2_K, Q3_K, IQ4_NL, IQ4_XS: llama-quantize --pure (no importance
 * matrix) wrote random-dim256-<type>.gguf from random-dim256-f16.gguf; our
 * reference quantizers must give its bytes for all nine matrices. */
static void test_quant_k2_quantize_matches_llama_quantize(void **state)
{
    (void)state;
    check_fixture_pair("random-dim256-f16.gguf", "random-dim256-q2_k.gguf", 9);
    check_fixture_pair("random-dim256-f16.gguf", "random-dim256-q3_k_s.gguf", 9);
    check_fixture_pair("random-dim256-f16.gguf", "random-dim256-iq4_nl.gguf", 9);
    check_fixture_pair("random-dim256-f16.gguf", "random-dim256-iq4_xs.gguf", 9);
}

/* IQ4_NL's two orders (quant_impl.h), evaluated from their definitions on
 * 1, 2, 3, 5 and 7 blocks: prompts (vec_dot) one set of eight lanes;
 * generation (vec_dot_gemv) even/odd blocks in two, then the odd tail by
 * multiply and add. Every ISA equal to both; and the dispatch. */
static void test_quant_iq4_nl_orders(void **state)
{
    (void)state;
    static const int counts[] = {1, 2, 3, 5, 7};
    static const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};
    rng_seed(51);
    for (size_t ci = 0; ci < sizeof(counts) / sizeof(counts[0]); ci++) {
        const int nb = counts[ci];
        const int64_t n = 32 * nb;
        inferd_block_iq4_nl w[7];
        inferd_block_q8_0 a[7];
        float x[7 * 32];
        make_weight_row(INFERD_DTYPE_IQ4_NL, n, w);
        fill_floats(x, n);
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_0, INFERD_ISA_SCALAR)->from_float(x, a, n);
        float one[8] = {0}, acc1[8] = {0}, acc2[8] = {0};
        float tail = 0.0f;
        int has_tail = 0;
        for (int b = 0; b < nb; b++) {
            const float d = inferd_f16_to_f32(w[b].d) * inferd_f16_to_f32(a[b].d);
            int32_t lane[8] = {0}, s = 0;
            for (int e = 0; e < 32; e++) {
                const int q = e < 16 ? w[b].qs[e] & 15 : w[b].qs[e - 16] >> 4;
                lane[e / 4] += kv[q] * a[b].qs[e];
            }
            for (int k = 0; k < 8; k++) {
                one[k] = fmaf(d, (float)lane[k], one[k]);
                s += lane[k];
            }
            if (b % 2 == 1 || b + 1 < nb)
                for (int k = 0; k < 8; k++) {
                    float *acc = b % 2 ? acc2 : acc1;
                    acc[k] = fmaf(d, (float)lane[k], acc[k]);
                }
            else {
                const float t = d * (float)s;
                tail = t;
                has_tail = 1;
            }
        }
        float sum[8];
        for (int k = 0; k < 8; k++)
            sum[k] = acc1[k] + acc2[k];
        const float want_pre =
            ((one[0] + one[4]) + (one[2] + one[6])) + ((one[1] + one[5]) + (one[3] + one[7]));
        float want_gen =
            ((sum[0] + sum[4]) + (sum[2] + sum[6])) + ((sum[1] + sum[5]) + (sum[3] + sum[7]));
        if (has_tail)
            want_gen = want_gen + tail;
        for (int isa = 0; isa < n_isas(); isa++) {
            const inferd_kernels *k = inferd_kernels_get_isa(INFERD_DTYPE_IQ4_NL, (inferd_isa)isa);
            if (inferd__f32_bits(k->vec_dot(n, w, a)) != inferd__f32_bits(want_pre))
                fail_msg("IQ4_NL %s vec_dot, %d blocks: %.9g, want %.9g",
                         inferd_isa_name((inferd_isa)isa), nb, k->vec_dot(n, w, a), want_pre);
            if (inferd__f32_bits(k->vec_dot_gemv(n, w, a)) != inferd__f32_bits(want_gen))
                fail_msg("IQ4_NL %s gemv, %d blocks: %.9g, want %.9g",
                         inferd_isa_name((inferd_isa)isa), nb, k->vec_dot_gemv(n, w, a), want_gen);
            assert_true(inferd_kernels_dot(k, n, INFERD_ORDER_DECODE) == k->vec_dot_gemv);
            assert_true(inferd_kernels_dot(k, n, INFERD_ORDER_PREFILL) == k->vec_dot);
        }
    }
}

/* Q2_K, Q3_K and IQ4_XS lane order from the layout in quant.h, decoded
 * independently here: lane k of piece p holds elements 32p + 4k..+3 times
 * their sub-block scale; Q2_K adds its mins (m_2k * bsums[2k] +
 * m_2k+1 * bsums[2k+1]) into the same lanes first. Three super-blocks of
 * random bytes against a Q8_K row. */
static void test_quant_k2_lane_order(void **state)
{
    (void)state;
    static const int8_t kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                  1,    13,   25,  38,  53,  69,  89,  113};
    const uint32_t types[3] = {INFERD_DTYPE_Q2_K, INFERD_DTYPE_Q3_K, INFERD_DTYPE_IQ4_XS};
    enum { NB = 3 };
    rng_seed(52);
    for (int ti = 0; ti < 3; ti++) {
        const uint32_t type = types[ti];
        const size_t bs = inferd_dtype_get(type)->type_size;
        uint8_t w[NB * 136];
        inferd_block_q8_k a[NB];
        float x[NB * 256];
        for (size_t i = 0; i < sizeof(w); i++)
            w[i] = (uint8_t)rng_next();
        fill_floats(x, NB * 256);
        inferd_kernels_get_isa(INFERD_DTYPE_Q8_K, INFERD_ISA_SCALAR)->from_float(x, a, NB * 256);
        float acc[8] = {0};
        for (int b = 0; b < NB; b++) {
            uint8_t *blk = w + (size_t)b * bs;
            /* Sane scales: d = f16 0x2155 (dmin 0x2001 for Q2_K). */
            const size_t doff = type == INFERD_DTYPE_Q2_K   ? 80
                                : type == INFERD_DTYPE_Q3_K ? 108
                                                            : 0;
            blk[doff] = 0x55;
            blk[doff + 1] = 0x21;
            if (type == INFERD_DTYPE_Q2_K) {
                blk[82] = 0x01;
                blk[83] = 0x20;
            }
            uint16_t h;
            memcpy(&h, blk + doff, 2);
            const float dw = inferd_f16_to_f32(h);
            int32_t lane[8] = {0};
            for (int e = 0; e < 256; e++) {
                int q, sc;
                if (type == INFERD_DTYPE_IQ4_XS) {
                    const int ib = e / 32, j = e % 32;
                    const uint8_t byte = blk[8 + 16 * ib + j % 16];
                    q = kv[j < 16 ? byte & 15 : byte >> 4];
                    uint16_t sh;
                    memcpy(&sh, blk + 2, 2);
                    sc =
                        (((blk[4 + ib / 2] >> (4 * (ib % 2))) & 15) | ((sh >> (2 * ib)) & 3) << 4) -
                        32;
                } else {
                    const int hh = e / 128, jj = (e % 128) / 32, l = e % 32, s = e / 16;
                    const uint8_t *qs = blk + (type == INFERD_DTYPE_Q2_K ? 16 : 32);
                    q = (qs[32 * hh + l] >> (2 * jj)) & 3;
                    if (type == INFERD_DTYPE_Q2_K) {
                        sc = blk[s] & 15;
                    } else {
                        q += ((blk[l] >> (e / 32)) & 1) * 4 - 4;
                        const uint8_t *p = blk + 96;
                        const int lo = s < 8 ? p[s] & 15 : p[s - 8] >> 4;
                        sc = (lo | ((p[8 + s % 4] >> (2 * (s / 4))) & 3) << 4) - 32;
                    }
                }
                lane[(e % 32) / 4] += sc * q * a[b].qs[e];
            }
            if (type == INFERD_DTYPE_Q2_K) {
                memcpy(&h, blk + 82, 2);
                const float dmin = -a[b].d * inferd_f16_to_f32(h);
                for (int k = 0; k < 8; k++) {
                    const int32_t prod = (blk[2 * k] >> 4) * a[b].bsums[2 * k] +
                                         (blk[2 * k + 1] >> 4) * a[b].bsums[2 * k + 1];
                    acc[k] = fmaf(dmin, (float)prod, acc[k]);
                }
            }
            const float d = type == INFERD_DTYPE_IQ4_XS ? dw * a[b].d : a[b].d * dw;
            for (int k = 0; k < 8; k++)
                acc[k] = fmaf(d, (float)lane[k], acc[k]);
        }
        const float want =
            ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        for (int isa = 0; isa < n_isas(); isa++) {
            const float got =
                inferd_kernels_get_isa(type, (inferd_isa)isa)->vec_dot(NB * 256, w, a);
            if (inferd__f32_bits(got) != inferd__f32_bits(want))
                fail_msg("%s %s vec_dot %.9g, lane formula %.9g", inferd_dtype_name(type),
                         inferd_isa_name((inferd_isa)isa), got, want);
        }
    }
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
        cmocka_unit_test(test_quant_k_quantize_matches_llama_quantize),
        cmocka_unit_test(test_quant_k2_quantize_matches_llama_quantize),
        cmocka_unit_test(test_quant_iq4_nl_orders),
        cmocka_unit_test(test_quant_k2_lane_order),
        cmocka_unit_test(test_quant_k_known_blocks),
        cmocka_unit_test(test_quant_q8_k_known_rounding),
        cmocka_unit_test(test_quant_q8_k_edge_inputs_agree),
        cmocka_unit_test(test_quant_k_dot_extremes),
        cmocka_unit_test(test_quant_k_dot_lane_order),
        cmocka_unit_test(test_quant_block_dot_lane_order),
        cmocka_unit_test(test_quant_q4_0_rows8_order),
        cmocka_unit_test(test_quant_k_mdot_tiles),
        cmocka_unit_test(test_quant_k_round_trip_error_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
