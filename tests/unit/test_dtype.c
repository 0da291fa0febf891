/* Tensor element types and half/bfloat16 conversions: the dtype table for
 * every GGUF type id, name parsing, byte counts with partial blocks and
 * overflow; f16 and bf16 conversions checked exhaustively or against an
 * independent double-precision reference, with rounding ties, overflow,
 * subnormals and NaNs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "inferd/dtype.h"
#include "inferd/fp16.h"

/* ---- dtype table ---- */

typedef struct {
    uint32_t id;
    const char *name;
    uint32_t block_size;
    uint32_t type_size;
} dtype_row;

/* The GGUF type ids and their block geometry, as ggml defines them. */
static const dtype_row known_types[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292}, {20, "IQ4_NL", 32, 18},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},       {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},      {28, "F64", 1, 8},
    {30, "BF16", 1, 2},
};
#define N_KNOWN (sizeof(known_types) / sizeof(known_types[0]))

static const dtype_row *find_known(uint32_t id)
{
    for (size_t i = 0; i < N_KNOWN; i++)
        if (known_types[i].id == id)
            return &known_types[i];
    return NULL;
}

static void test_dtype_table_known(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_KNOWN; i++) {
        const dtype_row *r = &known_types[i];
        const inferd_dtype_info *t = inferd_dtype_get(r->id);
        assert_non_null(t);
        assert_string_equal(t->name, r->name);
        assert_int_equal(t->block_size, r->block_size);
        assert_int_equal(t->type_size, r->type_size);
        assert_string_equal(inferd_dtype_name(r->id), r->name);
    }
    /* The enum agrees with the table. */
    assert_int_equal(INFERD_DTYPE_Q4_0, 2);
    assert_int_equal(INFERD_DTYPE_Q5_0, 6);
    assert_int_equal(INFERD_DTYPE_Q8_K, 15);
    assert_int_equal(INFERD_DTYPE_I8, 24);
    assert_int_equal(INFERD_DTYPE_BF16, 30);
    assert_string_equal(inferd_dtype_name(INFERD_DTYPE_Q6_K), "Q6_K");
    assert_string_equal(inferd_dtype_name(INFERD_DTYPE_F64), "F64");
}

static void test_dtype_unknown_ids(void **state)
{
    (void)state;
    /* Every id below the table's end that GGUF does not define. */
    for (uint32_t id = 0; id < 64; id++) {
        if (find_known(id))
            continue;
        assert_null(inferd_dtype_get(id));
        assert_string_equal(inferd_dtype_name(id), "unknown");
    }
    const uint32_t far[] = {INFERD_DTYPE_COUNT, 100,       0x7fffffffu, 0x80000000u,
                            UINT32_MAX - 1,     UINT32_MAX};
    for (size_t i = 0; i < sizeof(far) / sizeof(far[0]); i++) {
        assert_null(inferd_dtype_get(far[i]));
        assert_string_equal(inferd_dtype_name(far[i]), "unknown");
    }
    const uint32_t named[] = {4, 5, 16, 19, 22, 29, 31, 39};
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        assert_null(inferd_dtype_get(named[i]));
}

static void test_dtype_parse_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_KNOWN; i++) {
        const dtype_row *r = &known_types[i];
        char lower[16], mixed[16];
        size_t n = strlen(r->name);
        assert_true(n < sizeof(lower));
        for (size_t j = 0; j <= n; j++) {
            lower[j] = (char)tolower((unsigned char)r->name[j]);
            mixed[j] = (char)(j % 2 ? tolower((unsigned char)r->name[j]) : r->name[j]);
        }
        assert_int_equal(inferd_dtype_parse(r->name), (int)r->id);
        assert_int_equal(inferd_dtype_parse(lower), (int)r->id);
        assert_int_equal(inferd_dtype_parse(mixed), (int)r->id);
        assert_string_equal(inferd_dtype_name((uint32_t)inferd_dtype_parse(lower)), r->name);
    }
}

static void test_dtype_parse_junk(void **state)
{
    (void)state;
    const char *junk[] = {"",   "unknown", "Q4", "Q4_00", "F32 ", " F32", "q4-0", "Q4_2", "Q4_3",
                          "F8", "Q8_K_",   "BF", "F1",    "I128", "Q",    "_",    "F32\n"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        assert_int_equal(inferd_dtype_parse(junk[i]), -1);
}

static void test_dtype_nbytes_whole_blocks(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_KNOWN; i++) {
        const dtype_row *r = &known_types[i];
        const uint64_t blocks[] = {0, 1, 2, 7, 4096, 1000003};
        for (size_t j = 0; j < sizeof(blocks) / sizeof(blocks[0]); j++) {
            uint64_t bytes = 12345;
            assert_int_equal(inferd_dtype_nbytes(r->id, blocks[j] * r->block_size, &bytes), 0);
            assert_true(bytes == blocks[j] * r->type_size);
        }
    }
    uint64_t bytes = 0;
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_F32, 10, &bytes), 0);
    assert_true(bytes == 40);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_Q4_0, 4096, &bytes), 0);
    assert_true(bytes == 128 * 18);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_Q6_K, 4096 * 11008, &bytes), 0);
    assert_true(bytes == (uint64_t)4096 * 11008 / 256 * 210);
}

static void test_dtype_nbytes_errors(void **state)
{
    (void)state;
    const uint64_t untouched = 0xdeadbeefULL;
    uint64_t bytes = untouched;

    /* Partial blocks. */
    for (size_t i = 0; i < N_KNOWN; i++) {
        const dtype_row *r = &known_types[i];
        if (r->block_size == 1)
            continue;
        const uint64_t partial[] = {1, r->block_size - 1, r->block_size + 1,
                                    r->block_size * 3 + r->block_size / 2, UINT64_MAX};
        for (size_t j = 0; j < sizeof(partial) / sizeof(partial[0]); j++) {
            assert_int_equal(inferd_dtype_nbytes(r->id, partial[j], &bytes), -1);
            assert_true(bytes == untouched);
        }
    }

    /* Unknown types. */
    const uint32_t bad_types[] = {4, 5, 16, 29, 31, INFERD_DTYPE_COUNT, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_types) / sizeof(bad_types[0]); i++) {
        assert_int_equal(inferd_dtype_nbytes(bad_types[i], 0, &bytes), -1);
        assert_int_equal(inferd_dtype_nbytes(bad_types[i], 32, &bytes), -1);
        assert_true(bytes == untouched);
    }

    /* Overflow: the byte count does not fit in size_t. Types of more than
     * a byte per element overflow near UINT64_MAX elements. */
    const uint64_t max32 = UINT64_MAX - 31; /* a whole number of 32-blocks */
    assert_true(max32 % 32 == 0);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_Q8_0, max32, &bytes), -1);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_Q8_1, max32, &bytes), -1);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_F32, UINT64_MAX / 2, &bytes), -1);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_F16, UINT64_MAX, &bytes), -1);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_Q8_K, UINT64_MAX - 255, &bytes), -1);
    assert_true(bytes == untouched);
#if SIZE_MAX == UINT64_MAX
    /* Q4_0 takes 18 bytes per 32 elements: even the largest whole-block
     * count fits in 64 bits, and the product is exact. */
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_Q4_0, max32, &bytes), 0);
    assert_true(bytes == max32 / 32 * 18);
    assert_int_equal(inferd_dtype_nbytes(INFERD_DTYPE_I8, UINT64_MAX, &bytes), 0);
    assert_true(bytes == UINT64_MAX);
    bytes = untouched;
#endif

    /* The boundary: the largest count that fits, and one block more. */
    for (size_t i = 0; i < N_KNOWN; i++) {
        const dtype_row *r = &known_types[i];
        uint64_t max_blocks = (uint64_t)SIZE_MAX / r->type_size;
        if (max_blocks > UINT64_MAX / r->block_size)
            continue; /* n_elems itself cannot express the limit */
        uint64_t n = max_blocks * r->block_size;
        assert_int_equal(inferd_dtype_nbytes(r->id, n, &bytes), 0);
        assert_true(bytes == max_blocks * r->type_size);
        assert_true(bytes <= SIZE_MAX);
        if (n <= UINT64_MAX - r->block_size) {
            bytes = untouched;
            assert_int_equal(inferd_dtype_nbytes(r->id, n + r->block_size, &bytes), -1);
            assert_true(bytes == untouched);
        }
    }
}

/* ---- f16 ---- */

static int f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

/* Reference f16 -> f32 by arithmetic in double. */
static double ref_f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f;
    int m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024.0 + m, e - 25);
    return (h & 0x8000u) ? -v : v;
}

/* Reference f32 -> f16 round-to-nearest-even, computed in double (where
 * every step below is exact) with rint in the default rounding mode. */
static uint16_t ref_f32_to_f16(float f)
{
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    double a = fabs((double)f);
    if (isnan(a))
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 65520.0)
        return (uint16_t)(sign | 0x7c00u);
    if (a < ldexp(1.0, -14)) {
        /* Subnormal range: a multiple of 2^-24; 1024 means 2^-14, which is
         * exactly the encoding of the smallest normal. */
        return (uint16_t)(sign | (uint16_t)rint(ldexp(a, 24)));
    }
    int k;
    frexp(a, &k); /* a in [2^(k-1), 2^k) */
    int e = k - 1;
    double q = rint(ldexp(a, 10 - e)); /* in [1024, 2048] */
    if (q == 2048.0) {
        q = 1024.0;
        e++;
    }
    return (uint16_t)(sign | ((e + 15) << 10) | ((uint16_t)q - 1024));
}

static void test_fp16_to_f32_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = inferd_f16_to_f32((inferd_f16)h);
        double want = ref_f16_value((uint16_t)h);
        if (f16_is_nan((uint16_t)h)) {
            assert_true(isnan(f));
            assert_int_equal(!!signbit(f), !!(h & 0x8000u));
        } else {
            assert_true((double)f == want);
            assert_int_equal(!!signbit(f), !!(h & 0x8000u)); /* -0 too */
        }
    }
}

static void test_fp16_round_trip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = inferd_f16_to_f32((inferd_f16)h);
        inferd_f16 back = inferd_f32_to_f16(f);
        if (f16_is_nan((uint16_t)h)) {
            assert_true(f16_is_nan(back));
            assert_int_equal(back & 0x8000u, h & 0x8000u);
        } else {
            assert_int_equal(back, h);
        }
    }
}

static void check_f32_to_f16(uint32_t bits)
{
    float f = inferd__bits_f32(bits);
    uint16_t got = inferd_f32_to_f16(f);
    uint16_t want = ref_f32_to_f16(f);
    if (isnan(f)) {
        if (!f16_is_nan(got) || (got & 0x8000u) != (want & 0x8000u))
            fail_msg("f32 %08x: got %04x, want a NaN", bits, got);
    } else if (got != want) {
        fail_msg("f32 %08x (%.9g): got %04x, want %04x", bits, (double)f, got, want);
    }
}

static void test_fp16_from_f32_vs_reference(void **state)
{
    (void)state;
    /* Around every f16 value: the value itself, its neighbours in f32, and
     * the midpoint to the next f16 value with its neighbours (the ties). */
    for (uint32_t h = 0; h < 0x7c00u; h++) {
        uint32_t lo = inferd__f32_bits(inferd_f16_to_f32((inferd_f16)h));
        uint32_t hi = inferd__f32_bits(inferd_f16_to_f32((inferd_f16)(h + 1)));
        uint32_t mid;
        if (h + 1 == 0x7c00u) /* midpoint between 65504 and "65536" */
            mid = inferd__f32_bits(65520.0f);
        else
            mid = inferd__f32_bits(
                (float)(((double)inferd__bits_f32(lo) + (double)inferd__bits_f32(hi)) / 2));
        for (int d = -2; d <= 2; d++) {
            if (d >= 0 || lo >= 2) {
                check_f32_to_f16(lo + (uint32_t)d);
                check_f32_to_f16(0x80000000u | (lo + (uint32_t)d));
            }
            check_f32_to_f16(mid + (uint32_t)d);
            check_f32_to_f16(0x80000000u | (mid + (uint32_t)d));
        }
    }
    /* A spread of all f32 patterns, infinities and NaNs included. */
    for (uint64_t b = 0; b <= UINT32_MAX; b += 4093)
        check_f32_to_f16((uint32_t)b);
    check_f32_to_f16(UINT32_MAX);
}

static void test_fp16_rounding_ties(void **state)
{
    (void)state;
    /* Ties go to the even mantissa. */
    assert_int_equal(inferd_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(inferd_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    assert_int_equal(inferd_f32_to_f16(1.0f + 5 * 0x1p-11f), 0x3c02);
    assert_int_equal(inferd_f32_to_f16(-(1.0f + 0x1p-11f)), 0xbc00);
    assert_int_equal(inferd_f32_to_f16(2048.0f + 1.0f), 0x6800); /* 2049 -> 2048 */
    assert_int_equal(inferd_f32_to_f16(2048.0f + 3.0f), 0x6802); /* 2051 -> 2052 */
    /* Just past a tie rounds away from it. */
    assert_int_equal(inferd_f32_to_f16(1.0f + 0x1p-11f + 0x1p-23f), 0x3c01);
    assert_int_equal(inferd_f32_to_f16(1.0f + 0x1p-11f - 0x1p-24f), 0x3c00);
    /* A tie that carries into the exponent. */
    assert_int_equal(inferd_f32_to_f16(2.0f - 0x1p-11f), 0x4000);
    assert_int_equal(inferd_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(inferd_f32_to_f16(0.333333343f), 0x3555);
}

static void test_fp16_overflow(void **state)
{
    (void)state;
    assert_int_equal(inferd_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(inferd_f32_to_f16(65519.996f), 0x7bff);
    assert_int_equal(inferd_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(inferd_f32_to_f16(-65520.0f), 0xfc00);
    assert_int_equal(inferd_f32_to_f16(65536.0f), 0x7c00);
    assert_int_equal(inferd_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(inferd_f32_to_f16(3.4028235e38f), 0x7c00);
    assert_int_equal(inferd_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(inferd_f32_to_f16(-INFINITY), 0xfc00);
    assert_true(isinf(inferd_f16_to_f32(0x7c00)));
    assert_true(inferd_f16_to_f32(0xfc00) < 0);
}

static void test_fp16_subnormals(void **state)
{
    (void)state;
    assert_int_equal(inferd_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(inferd_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(inferd_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(inferd_f32_to_f16(-0x1p-24f), 0x8001);
    assert_int_equal(inferd_f32_to_f16(0x1p-25f), 0x0000); /* tie -> 0 */
    assert_int_equal(inferd_f32_to_f16(0x1p-25f * 1.0000001f), 0x0001);
    assert_int_equal(inferd_f32_to_f16(3 * 0x1p-25f), 0x0002); /* tie -> 2 */
    assert_int_equal(inferd_f32_to_f16(5 * 0x1p-25f), 0x0002); /* tie -> 2 */
    assert_int_equal(inferd_f32_to_f16(1023 * 0x1p-24f), 0x03ff);
    assert_int_equal(inferd_f32_to_f16(0x1p-14f), 0x0400);                /* min normal */
    assert_int_equal(inferd_f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);     /* tie up */
    assert_int_equal(inferd_f32_to_f16(0x1p-14f - 3 * 0x1p-25f), 0x03fe); /* tie */
    assert_int_equal(inferd_f32_to_f16(1e-45f), 0x0000);                  /* f32 denormal */
    assert_int_equal(inferd_f32_to_f16(-1e-45f), 0x8000);
    assert_true(inferd_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(inferd_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    assert_true(inferd_f16_to_f32(0x8001) == -0x1p-24f);
}

static void test_fp16_nan(void **state)
{
    (void)state;
    const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0x7fffffffu,
                             0xffc00000u, 0xff800001u, 0x7f802000u};
    for (size_t i = 0; i < sizeof(nans) / sizeof(nans[0]); i++) {
        inferd_f16 h = inferd_f32_to_f16(inferd__bits_f32(nans[i]));
        assert_true(f16_is_nan(h));
        assert_int_equal(h & 0x8000u, (nans[i] >> 16) & 0x8000u);
        assert_true(isnan(inferd_f16_to_f32(h)));
    }
}

/* ---- bf16 ---- */

static int bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }

static void test_bf16_round_trip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = inferd_bf16_to_f32((inferd_bf16)h);
        assert_true(inferd__f32_bits(f) == h << 16);
        inferd_bf16 back = inferd_f32_to_bf16(f);
        if (bf16_is_nan((uint16_t)h)) {
            /* NaNs come back quiet, sign and payload kept. */
            assert_int_equal(back, h | 0x40u);
        } else {
            assert_int_equal(back, h);
        }
    }
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    /* Every upper half with the low halves that matter for rounding. */
    const uint32_t lows[] = {0x0000, 0x0001, 0x7fff, 0x8000, 0x8001, 0xffff};
    for (uint32_t up = 0; up < 65536; up++) {
        for (size_t i = 0; i < sizeof(lows) / sizeof(lows[0]); i++) {
            uint32_t u = (up << 16) | lows[i];
            inferd_bf16 got = inferd_f32_to_bf16(inferd__bits_f32(u));
            if ((u & 0x7fffffffu) > 0x7f800000u) {
                assert_true(bf16_is_nan(got));
                assert_true(got & 0x40u);
                assert_int_equal(got & 0x8000u, up & 0x8000u);
                continue;
            }
            uint32_t lo = lows[i];
            uint32_t want = up + (lo > 0x8000u || (lo == 0x8000u && (up & 1u)));
            assert_int_equal(got, (uint16_t)want);
        }
    }
    /* Named cases. */
    assert_int_equal(inferd_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(inferd_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie, even */
    assert_int_equal(inferd_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie, odd */
    assert_int_equal(inferd_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-23f), 0x3f81);
    assert_int_equal(inferd_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(inferd_f32_to_bf16(3.4028235e38f), 0x7f80); /* to inf */
    assert_int_equal(inferd_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(inferd_f32_to_bf16(-INFINITY), 0xff80);
    /* A signalling NaN whose payload sits only in the dropped low half
     * must not truncate to infinity. */
    assert_int_equal(inferd_f32_to_bf16(inferd__bits_f32(0x7f800001u)), 0x7fc0);
    assert_int_equal(inferd_f32_to_bf16(inferd__bits_f32(0xff800001u)), 0xffc0);
    assert_int_equal(inferd_f32_to_bf16(inferd__bits_f32(0x7fc00000u)), 0x7fc0);
    assert_int_equal(inferd_f32_to_bf16(inferd__bits_f32(0x7fffffffu)), 0x7fff);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table_known),
        cmocka_unit_test(test_dtype_unknown_ids),
        cmocka_unit_test(test_dtype_parse_round_trip),
        cmocka_unit_test(test_dtype_parse_junk),
        cmocka_unit_test(test_dtype_nbytes_whole_blocks),
        cmocka_unit_test(test_dtype_nbytes_errors),
        cmocka_unit_test(test_fp16_to_f32_all),
        cmocka_unit_test(test_fp16_round_trip_all),
        cmocka_unit_test(test_fp16_from_f32_vs_reference),
        cmocka_unit_test(test_fp16_rounding_ties),
        cmocka_unit_test(test_fp16_overflow),
        cmocka_unit_test(test_fp16_subnormals),
        cmocka_unit_test(test_fp16_nan),
        cmocka_unit_test(test_bf16_round_trip_all),
        cmocka_unit_test(test_bf16_rounding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
