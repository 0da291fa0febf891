/* Matmul: every output bit-identical to the per-element vec_dot of the
 * selected ISA for 1..9 tokens and 1/2/3 threads, strides, the multi-op
 * form, token chunking, work sizes. The program re-runs itself with
 * INFERD_ISA=scalar and =avx2 (where the CPU has more) so every ISA's tiles
 * are checked. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/matmul.h"
#include "inferd/pool.h"
#include "inferd/quant.h"

static const uint32_t weight_types[] = {
    INFERD_DTYPE_F32,  INFERD_DTYPE_F16,    INFERD_DTYPE_BF16,   INFERD_DTYPE_Q4_0,
    INFERD_DTYPE_Q4_1, INFERD_DTYPE_Q5_0,   INFERD_DTYPE_Q5_1,   INFERD_DTYPE_Q8_0,
    INFERD_DTYPE_Q4_K, INFERD_DTYPE_Q5_K,   INFERD_DTYPE_Q6_K,   INFERD_DTYPE_Q2_K,
    INFERD_DTYPE_Q3_K, INFERD_DTYPE_IQ4_NL, INFERD_DTYPE_IQ4_XS,
};
#define N_WTYPES (sizeof(weight_types) / sizeof(weight_types[0]))

static uint64_t rng_state;

static float rng_float(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
}

static void fill(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = rng_float();
}

static int is_block(uint32_t t) { return inferd_dtype_get(t)->block_size > 1; }

static int64_t block_size(uint32_t t) { return inferd_dtype_get(t)->block_size; }

/* Weights of n_rows x n_cols of type t, quantized from random floats. */
static void *make_weights(uint32_t t, int64_t n_rows, int64_t n_cols)
{
    const size_t row = inferd_quant_row_size(t, n_cols);
    char *w = inferd_malloc(row * (size_t)n_rows);
    float *x = inferd_malloc((size_t)n_cols * sizeof(float));
    assert_non_null(w);
    for (int64_t r = 0; r < n_rows; r++) {
        fill(x, n_cols);
        inferd_kernels_get(t)->quantize(x, w + (size_t)r * row, n_cols);
    }
    inferd_free(x);
    return w;
}

/* y_ref[t*y_stride + r] by converting x row t with the vec_dot_type's
 * from_float and calling the dot product of @p order once per element. */
static void reference_order(uint32_t t, const void *w, int64_t n_rows, int64_t n_cols,
                            const float *x, int64_t x_stride, int64_t n_tokens, float *y,
                            int64_t y_stride, inferd_order order)
{
    const inferd_kernels *k = inferd_kernels_get(t);
    const inferd_kernels *ka = inferd_kernels_get(k->vec_dot_type);
    const size_t wrow = inferd_quant_row_size(t, n_cols);
    void *a = inferd_malloc(inferd_quant_row_size(k->vec_dot_type, n_cols));
    for (int64_t tok = 0; tok < n_tokens; tok++) {
        ka->from_float(x + tok * x_stride, a, n_cols);
        for (int64_t r = 0; r < n_rows; r++)
            y[tok * y_stride + r] = inferd_kernels_matrix_dot(k, n_cols, n_rows, order)(
                n_cols, (const char *)w + (size_t)r * wrow, a);
    }
    inferd_free(a);
}

static void reference(uint32_t t, const void *w, int64_t n_rows, int64_t n_cols, const float *x,
                      int64_t x_stride, int64_t n_tokens, float *y, int64_t y_stride)
{
    reference_order(t, w, n_rows, n_cols, x, x_stride, n_tokens, y, y_stride, INFERD_ORDER_PREFILL);
}

static void *work_alloc(size_t bytes)
{
    void *p = inferd_aligned_alloc(INFERD_MATMUL_WORK_ALIGN, bytes ? bytes : 64);
    assert_non_null(p);
    return p;
}

static void assert_bits_equal(const float *a, const float *b, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s: element %lld differs: %.9g vs %.9g", what, (long long)i, a[i], b[i]);
}

static void test_matmul_bitwise_equal_to_vec_dot(void **state)
{
    (void)state;
    inferd_pool *pools[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        assert_int_equal(inferd_pool_create(i + 1, &pools[i], NULL), 0);
    rng_state = 21;
    for (size_t ti = 0; ti < N_WTYPES; ti++) {
        const uint32_t t = weight_types[ti];
        const int64_t bs = block_size(t);
        const int64_t col_cases[2] = {is_block(t) ? (bs > 32 ? 5 : 9) * bs : 77,
                                      is_block(t) ? bs : 8};
        for (int cc = 0; cc < 2; cc++) {
            const int64_t n_cols = col_cases[cc], n_rows = 37, max_tok = 9;
            void *w = make_weights(t, n_rows, n_cols);
            float *x = inferd_malloc((size_t)(n_cols * max_tok) * sizeof(float));
            float *ref = inferd_malloc((size_t)(n_rows * max_tok) * sizeof(float));
            float *y = inferd_malloc((size_t)(n_rows * max_tok) * sizeof(float));
            fill(x, n_cols * max_tok);
            void *work = work_alloc(inferd_matmul_work_size(t, n_cols, max_tok));
            for (int o = 0; o < 2; o++) {
                const inferd_order order = o ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE;
                reference_order(t, w, n_rows, n_cols, x, n_cols, max_tok, ref, n_rows, order);
                for (int64_t nt = 1; nt <= max_tok; nt++) {
                    for (int p = 0; p < 3; p++) {
                        char what[128];
                        memset(y, 0xff, (size_t)(n_rows * max_tok) * sizeof(float));
                        inferd_matmul(pools[p], t, w, n_rows, n_cols, x, nt, y, order, work);
                        snprintf(what, sizeof(what),
                                 "%s on %s, %lld cols, %lld tokens, %d threads, %s order",
                                 inferd_dtype_name(t), inferd_isa_name(inferd_cpu_isa()),
                                 (long long)n_cols, (long long)nt, p + 1, o ? "prefill" : "decode");
                        assert_bits_equal(y, ref, n_rows * nt, what);
                    }
                }
            }
            inferd_free(work);
            inferd_free(w);
            inferd_free(x);
            inferd_free(ref);
            inferd_free(y);
        }
    }
    for (int i = 0; i < 3; i++)
        inferd_pool_destroy(pools[i]);
}

static void test_matmul_strided_leaves_padding(void **state)
{
    (void)state;
    inferd_pool *pool;
    assert_int_equal(inferd_pool_create(2, &pool, NULL), 0);
    rng_state = 22;
    const int64_t n_rows = 19, n_tok = 5, ys = 23;
    for (size_t ti = 0; ti < N_WTYPES; ti++) {
        const uint32_t t = weight_types[ti];
        const int64_t n_cols = block_size(t) > 64 ? block_size(t) : 64, xs = n_cols + 6;
        void *w = make_weights(t, n_rows, n_cols);
        float *x = inferd_malloc((size_t)(xs * n_tok) * sizeof(float));
        float *y = inferd_malloc((size_t)(ys * n_tok) * sizeof(float));
        float *ref = inferd_malloc((size_t)(ys * n_tok) * sizeof(float));
        fill(x, xs * n_tok);
        for (int64_t i = 0; i < ys * n_tok; i++)
            y[i] = ref[i] = -7.0f;
        reference(t, w, n_rows, n_cols, x, xs, n_tok, ref, ys);
        void *work = work_alloc(inferd_matmul_work_size(t, n_cols, n_tok));
        inferd_matmul_strided(pool, t, w, n_rows, n_cols, x, xs, n_tok, y, ys, INFERD_ORDER_PREFILL,
                              work);
        assert_bits_equal(y, ref, ys * n_tok, inferd_dtype_name(t));
        inferd_free(work);
        inferd_free(w);
        inferd_free(x);
        inferd_free(y);
        inferd_free(ref);
    }
    inferd_pool_destroy(pool);
}

static void test_matmul_multi_equals_single(void **state)
{
    (void)state;
    inferd_pool *pool;
    assert_int_equal(inferd_pool_create(3, &pool, NULL), 0);
    rng_state = 23;
    const uint32_t types[5] = {INFERD_DTYPE_Q4_0, INFERD_DTYPE_Q4_1, INFERD_DTYPE_F16,
                               INFERD_DTYPE_F32, INFERD_DTYPE_Q8_0};
    const int64_t rows[5] = {13, 8, 21, 3, 40};
    const int64_t n_cols = 96, n_tok = 6;
    inferd_matmul_op ops[5];
    void *ws[5];
    float *ys[5], *refs[5];
    float *x = inferd_malloc((size_t)(n_cols * n_tok) * sizeof(float));
    fill(x, n_cols * n_tok);
    for (int i = 0; i < 5; i++) {
        ws[i] = make_weights(types[i], rows[i], n_cols);
        ys[i] = inferd_malloc((size_t)(rows[i] * n_tok) * sizeof(float));
        refs[i] = inferd_malloc((size_t)(rows[i] * n_tok) * sizeof(float));
        reference(types[i], ws[i], rows[i], n_cols, x, n_cols, n_tok, refs[i], rows[i]);
        ops[i] = (inferd_matmul_op){
            .w_type = types[i], .w = ws[i], .n_rows = rows[i], .y = ys[i], .y_stride = rows[i]};
    }
    /* Q4_0 and Q8_0 share Q8_0 activations; Q4_1 needs Q8_1; F16 its own. */
    const size_t need = inferd_matmul_multi_work_size(ops, 5, n_cols, n_tok);
    assert_int_equal(need, (size_t)n_tok * (128 + 128 + 192));
    void *work = work_alloc(need);
    inferd_matmul_multi(pool, ops, 5, n_cols, x, n_cols, n_tok, INFERD_ORDER_PREFILL, work);
    for (int i = 0; i < 5; i++) {
        assert_bits_equal(ys[i], refs[i], rows[i] * n_tok, inferd_dtype_name(types[i]));
        inferd_free(ws[i]);
        inferd_free(ys[i]);
        inferd_free(refs[i]);
    }
    inferd_free(work);
    inferd_free(x);
    inferd_pool_destroy(pool);
}

/* Enough tokens and columns that the kernel runs several token passes and
 * (AVX-512 panels) carries its sums over several chunks of blocks; and
 * short rows with more panels than one preparation serves. 24 rows: Q4_0
 * matrices of 8k rows take their own order (vec_dot_rows8). */
static void test_matmul_many_tokens_chunked(void **state)
{
    (void)state;
    inferd_pool *pool;
    assert_int_equal(inferd_pool_create(2, &pool, NULL), 0);
    rng_state = 24;
    const uint32_t types[8] = {INFERD_DTYPE_F32,  INFERD_DTYPE_Q8_0, INFERD_DTYPE_Q4_0,
                               INFERD_DTYPE_Q4_1, INFERD_DTYPE_Q5_0, INFERD_DTYPE_Q5_1,
                               INFERD_DTYPE_Q4_K, INFERD_DTYPE_Q6_K};
    const int64_t col_cases[2] = {8192, 256};
    const int64_t row_cases[2] = {21, 24}, n_tok = 131;
    float *x = inferd_malloc((size_t)(col_cases[0] * n_tok) * sizeof(float));
    float *y = inferd_malloc((size_t)(row_cases[1] * n_tok) * sizeof(float));
    float *ref = inferd_malloc((size_t)(row_cases[1] * n_tok) * sizeof(float));
    fill(x, col_cases[0] * n_tok);
    for (int c = 0; c < 4; c++) {
        const int64_t n_rows = row_cases[c / 2];
        const int64_t n_cols = col_cases[c % 2];
        for (int i = 0; i < 8; i++) {
            char what[64];
            void *w = make_weights(types[i], n_rows, n_cols);
            void *work = work_alloc(inferd_matmul_work_size(types[i], n_cols, n_tok));
            reference(types[i], w, n_rows, n_cols, x, n_cols, n_tok, ref, n_rows);
            inferd_matmul(pool, types[i], w, n_rows, n_cols, x, n_tok, y, INFERD_ORDER_PREFILL,
                          work);
            snprintf(what, sizeof(what), "%s, %lld x %lld", inferd_dtype_name(types[i]),
                     (long long)n_rows, (long long)n_cols);
            assert_bits_equal(y, ref, n_rows * n_tok, what);
            inferd_free(work);
            inferd_free(w);
        }
    }
    inferd_free(x);
    inferd_free(y);
    inferd_free(ref);
    inferd_pool_destroy(pool);
}

/*
 * For each of @p types, row count and token count: an n_rows x n_cols
 * matrix of random weights times the first n_tok rows of random x in the
 * DECODE order, with 1 and 2 threads, equal bit for bit to the per-element
 * DECODE reference (x, then each matrix, drawn from rng_state in order).
 */
static void check_decode_bitwise(int64_t n_cols, const uint32_t *types, int n_types,
                                 const int64_t *row_cases, int n_row_cases,
                                 const int64_t *tok_cases, int n_tok_cases)
{
    inferd_pool *pools[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        assert_int_equal(inferd_pool_create(i + 1, &pools[i], NULL), 0);
    int64_t max_rows = 0, max_tok = 0;
    for (int rc = 0; rc < n_row_cases; rc++)
        max_rows = row_cases[rc] > max_rows ? row_cases[rc] : max_rows;
    for (int k = 0; k < n_tok_cases; k++)
        max_tok = tok_cases[k] > max_tok ? tok_cases[k] : max_tok;
    float *x = inferd_malloc((size_t)(n_cols * max_tok) * sizeof(float));
    float *y = inferd_malloc((size_t)(max_rows * max_tok) * sizeof(float));
    float *ref = inferd_malloc((size_t)(max_rows * max_tok) * sizeof(float));
    fill(x, n_cols * max_tok);
    for (int ti = 0; ti < n_types; ti++) {
        for (int rc = 0; rc < n_row_cases; rc++) {
            const uint32_t t = types[ti];
            const int64_t n_rows = row_cases[rc];
            void *w = make_weights(t, n_rows, n_cols);
            void *work = work_alloc(inferd_matmul_work_size(t, n_cols, max_tok));
            reference_order(t, w, n_rows, n_cols, x, n_cols, max_tok, ref, n_rows,
                            INFERD_ORDER_DECODE);
            for (int k = 0; k < n_tok_cases; k++) {
                for (int p = 0; p < 2; p++) {
                    char what[128];
                    memset(y, 0xff, (size_t)(n_rows * max_tok) * sizeof(float));
                    inferd_matmul(pools[p], t, w, n_rows, n_cols, x, tok_cases[k], y,
                                  INFERD_ORDER_DECODE, work);
                    snprintf(what, sizeof(what), "%s on %s, %lld x %lld, %lld tokens, %d threads",
                             inferd_dtype_name(t), inferd_isa_name(inferd_cpu_isa()),
                             (long long)n_rows, (long long)n_cols, (long long)tok_cases[k], p + 1);
                    assert_bits_equal(y, ref, n_rows * tok_cases[k], what);
                }
            }
            inferd_free(work);
            inferd_free(w);
        }
    }
    inferd_free(x);
    inferd_free(y);
    inferd_free(ref);
    for (int i = 0; i < 2; i++)
        inferd_pool_destroy(pools[i]);
}

/*
 * Batched decode over long rows: 11008 columns (Llama-2-7B's ffn_down
 * input) in the DECODE order, as a continuous-batching step with many
 * sequences runs it. compute_op takes the row layout's tokens in chunks of
 * L2_BUDGET_BYTES / (activation row bytes), rounded down to TOK_UNIT (12):
 * 524288 / 11712 (a Q8_0 row of 11008, 64-byte aligned) = 44 -> 36 tokens,
 * and 524288 / 12608 (Q8_K: 43 blocks of 292 bytes, aligned) = 41 -> 36 as
 * well, so 40 and 80 tokens take two and three chunks and 36 exactly one.
 * Q4_0 with 24 rows takes the repacked 8-row order (row layout), with 20
 * rows the eight-lane one (on AVX-512 from 8 tokens on as panels, chunked
 * by the same budget).
 * Every output equals the per-element DECODE reference bit for bit, with 1
 * and 2 threads.
 */
static void test_matmul_decode_long_rows_chunked(void **state)
{
    (void)state;
    static const uint32_t types[3] = {INFERD_DTYPE_Q4_0, INFERD_DTYPE_Q8_0, INFERD_DTYPE_Q4_K};
    static const int64_t row_cases[2] = {24, 20}, tok_cases[4] = {1, 36, 40, 80};
    rng_state = 27;
    check_decode_bitwise(11008, types, 3, row_cases, 2, tok_cases, 4);
}

/*
 * Generation shapes (1, 2, 3 and 8 tokens, DECODE order) over Q4_0 rows of
 * 11008 columns (Llama-2-7B's ffn_down input): 344 blocks of INFERD_QK (32),
 * more than one chunk of the AVX-512 kernels (quant_avx512.c) that cut a
 * row's blocks into chunks:
 *  - 24, 32 and 56 rows (n_rows % 8 == 0, so inferd_kernels_matrix_mdot
 *    gives mdot_rows8, and plan_ops no panels): q4_0_rows8_mdot ->
 *    q4_0_gen prepares the activations and runs the 16-row tiles G_CHUNK
 *    (256) blocks at a time, so 344 = 256 + 88 blocks take two chunks, the
 *    sums passing from the first to the second through y; tokens go
 *    G_NT_MAX (8) to a pass, so 1, 2, 3 and 8 tokens are one pass each, of
 *    q4_0_gen_tile's NT = 1, 2, 3 and 8. compute_op gives all of them to one
 *    mdot call (its token chunk at 11008 columns is 36, see above).
 *  - 20 rows (the eight-lane order): gen_mdot for 1..3 tokens (whole rows,
 *    no chunks); at 8 tokens (PANEL_MIN_TOKENS) the panels, whose
 *    panel_gemm prepares the weights PANEL_CHUNK (128) blocks at a time:
 *    128 + 128 + 88, the sums carried between chunks in panel_acc.
 * 344 and 88 are even, so q4_0_gen_tile's odd-last-block branch is not
 * reached here (test_quant_q4_0_rows8_order has 7 blocks for that).
 * AVX2 and scalar do not chunk rows; main() re-runs these shapes on them.
 * Threads get rows in multiples of ROW_UNIT (48): 56 rows are the case that
 * 2 threads split (rows 48..55, a partial tile, on the second), below that
 * the second thread only converts x.
 */
static void test_matmul_decode_q4_0_11008_column_chunks(void **state)
{
    (void)state;
    static const uint32_t types[1] = {INFERD_DTYPE_Q4_0};
    static const int64_t row_cases[4] = {24, 32, 56, 20}, tok_cases[4] = {1, 2, 3, 8};
    rng_state = 28;
    check_decode_bitwise(11008, types, 1, row_cases, 4, tok_cases, 4);
}

/*
 * A Q4_K_M-style layer: Q4_K and Q6_K matrices (Q8_K activations) next to
 * Q5_0 and Q8_0 ones (Q8_0 activations, as panels from 8 or 32 tokens on
 * AVX-512) in one inferd_matmul_multi, x converted once per vec_dot_type,
 * for 1, 6 and 40 tokens; then Q4_K and Q6_K matrices of 4864 columns
 * (Qwen2-0.5B's ffn_down) alone for 1..18 tokens. Every output equals the
 * per-element reference bit for bit, with 1 or 2 threads.
 */
static void test_matmul_k_quants_mixed_and_threads(void **state)
{
    (void)state;
    inferd_pool *pools[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(inferd_pool_create(i + 1, &pools[i], NULL), 0);
    rng_state = 25;
    const uint32_t types[4] = {INFERD_DTYPE_Q4_K, INFERD_DTYPE_Q5_0, INFERD_DTYPE_Q6_K,
                               INFERD_DTYPE_Q8_0};
    const int64_t rows[4] = {53, 20, 17, 48};
    const int64_t n_cols = 512, max_tok = 40;
    inferd_matmul_op ops[4];
    void *ws[4];
    float *ys[4], *refs[4];
    float *x = inferd_malloc((size_t)(n_cols * max_tok) * sizeof(float));
    fill(x, n_cols * max_tok);
    for (int i = 0; i < 4; i++) {
        ws[i] = make_weights(types[i], rows[i], n_cols);
        ys[i] = inferd_malloc((size_t)(rows[i] * max_tok) * sizeof(float));
        refs[i] = inferd_malloc((size_t)(rows[i] * max_tok) * sizeof(float));
        reference(types[i], ws[i], rows[i], n_cols, x, n_cols, max_tok, refs[i], rows[i]);
        ops[i] = (inferd_matmul_op){
            .w_type = types[i], .w = ws[i], .n_rows = rows[i], .y = ys[i], .y_stride = rows[i]};
    }
    /* One Q8_K copy (2 * 292 bytes, padded to 640) and one Q8_0 copy (16 *
     * 34, padded to 576) per token while the rows layout is used. */
    assert_int_equal(inferd_matmul_multi_work_size(ops, 4, n_cols, 6), (size_t)6 * (640 + 576));
    void *work = work_alloc(inferd_matmul_multi_work_size(ops, 4, n_cols, max_tok));
    static const int64_t tok_cases[3] = {1, 6, 40};
    for (int c = 0; c < 3; c++) {
        const int64_t n_tok = tok_cases[c];
        const inferd_order order = n_tok > 1 ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE;
        for (int p = 0; p < 2; p++) {
            for (int i = 0; i < 4; i++)
                memset(ys[i], 0xff, (size_t)(rows[i] * max_tok) * sizeof(float));
            inferd_matmul_multi(pools[p], ops, 4, n_cols, x, n_cols, n_tok, order, work);
            for (int i = 0; i < 4; i++) {
                char what[96];
                snprintf(what, sizeof(what), "multi %s, %lld tokens, %d threads",
                         inferd_dtype_name(types[i]), (long long)n_tok, p + 1);
                assert_bits_equal(ys[i], refs[i], rows[i] * n_tok, what);
            }
        }
    }
    inferd_free(work);
    for (int i = 0; i < 4; i++) {
        inferd_free(ws[i]);
        inferd_free(ys[i]);
        inferd_free(refs[i]);
    }
    inferd_free(x);

    const int64_t big_cols = 4864, big_rows = 100, big_tok = 18;
    float *bx = inferd_malloc((size_t)(big_cols * big_tok) * sizeof(float));
    float *ref = inferd_malloc((size_t)(big_rows * big_tok) * sizeof(float));
    float *y = inferd_malloc((size_t)(big_rows * big_tok) * sizeof(float));
    fill(bx, big_cols * big_tok);
    for (int i = 0; i < 4; i += 2) {
        void *w = make_weights(types[i], big_rows, big_cols);
        void *bwork = work_alloc(inferd_matmul_work_size(types[i], big_cols, big_tok));
        reference(types[i], w, big_rows, big_cols, bx, big_cols, big_tok, ref, big_rows);
        for (int64_t nt = 1; nt <= big_tok; nt++) {
            for (int p = 0; p < 2; p++) {
                char what[96];
                memset(y, 0xff, (size_t)(big_rows * big_tok) * sizeof(float));
                inferd_matmul(pools[p], types[i], w, big_rows, big_cols, bx, nt, y,
                              nt > 1 ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE, bwork);
                snprintf(what, sizeof(what), "%s 4864 cols, %lld tokens, %d threads",
                         inferd_dtype_name(types[i]), (long long)nt, p + 1);
                assert_bits_equal(y, ref, big_rows * nt, what);
            }
        }
        inferd_free(bwork);
        inferd_free(w);
    }
    inferd_free(bx);
    inferd_free(ref);
    inferd_free(y);
    for (int i = 0; i < 2; i++)
        inferd_pool_destroy(pools[i]);
}

static void test_matmul_work_size(void **state)
{
    (void)state;
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_F32, 100, 4), 0);
    /* 2048 Q8_0 columns: 64 blocks * 34 = 2176 bytes, padded to 2176. */
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q4_0, 2048, 3), 3 * 2176);
    /* 96 Q8_1 columns: 3 * 36 = 108, padded to 128. */
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q5_1, 96, 2), 2 * 128);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_F16, 3, 1), 64);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q4_0, 33, 1), 0);
    /* Q8_K activations: 292 bytes a super-block, rows padded to 64 bytes. */
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q4_K, 256, 1), 320);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q6_K, 4864, 3), 3 * 5568);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q5_K, 11008, 2), 2 * 12608);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q4_K, 288, 1), 0);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q2_K, 256, 1), 320);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_IQ4_XS, 4864, 3), 3 * 5568);
    /* IQ4_NL: Q8_0 activations, 34 bytes a block of 32. */
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_IQ4_NL, 2048, 3), 3 * 2176);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_IQ4_NL, 33, 1), 0);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q8_1, 256, 1), 0);
    assert_int_equal(inferd_matmul_work_size(INFERD_DTYPE_Q8_K, 256, 1), 0);
    /* A buffer sized for n tokens serves any call with fewer (the layout
     * switches to panels for prompts on some ISAs). */
    const uint32_t types[5] = {INFERD_DTYPE_Q4_0, INFERD_DTYPE_Q4_1, INFERD_DTYPE_Q8_0,
                               INFERD_DTYPE_F16, INFERD_DTYPE_Q4_K};
    for (int i = 0; i < 5; i++)
        for (int64_t n = 2; n <= 70; n++)
            assert_true(inferd_matmul_work_size(types[i], 2048, n) >=
                        inferd_matmul_work_size(types[i], 2048, n - 1));
}

static void test_matmul_zero_tokens_or_rows(void **state)
{
    (void)state;
    float x[32] = {0}, y[4] = {1, 2, 3, 4};
    void *w = make_weights(INFERD_DTYPE_Q8_0, 1, 32);
    void *work = work_alloc(inferd_matmul_work_size(INFERD_DTYPE_Q8_0, 32, 1));
    inferd_matmul(NULL, INFERD_DTYPE_Q8_0, w, 1, 32, x, 0, y, INFERD_ORDER_PREFILL, work);
    inferd_matmul(NULL, INFERD_DTYPE_Q8_0, w, 0, 32, x, 1, y, INFERD_ORDER_PREFILL, work);
    assert_true(y[0] == 1.0f && y[3] == 4.0f);
    inferd_free(w);
    inferd_free(work);
}

/* Re-run this program with a lower ISA; returns its exit status. */
static int run_with_isa(const char *isa)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("INFERD_ISA", isa, 1);
        execl("/proc/self/exe", "test_matmul", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_bitwise_equal_to_vec_dot),
        cmocka_unit_test(test_matmul_strided_leaves_padding),
        cmocka_unit_test(test_matmul_multi_equals_single),
        cmocka_unit_test(test_matmul_many_tokens_chunked),
        cmocka_unit_test(test_matmul_decode_long_rows_chunked),
        cmocka_unit_test(test_matmul_decode_q4_0_11008_column_chunks),
        cmocka_unit_test(test_matmul_k_quants_mixed_and_threads),
        cmocka_unit_test(test_matmul_work_size),
        cmocka_unit_test(test_matmul_zero_tokens_or_rows),
    };
    int failed = 0;
    if (!getenv("INFERD_ISA")) {
        static const char *lower[2] = {"scalar", "avx2"};
        for (int i = 0; i < (int)inferd_cpu_isa_hw() && i < 2; i++) {
            int rc = run_with_isa(lower[i]);
            if (rc != 0) {
                fprintf(stderr, "test_matmul with INFERD_ISA=%s failed (%d)\n", lower[i], rc);
                failed++;
            }
        }
    }
    printf("ISA: %s\n", inferd_isa_name(inferd_cpu_isa()));
    return cmocka_run_group_tests(tests, NULL, NULL) + failed;
}
