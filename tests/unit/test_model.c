/* Model loading errors and the determinism contract: the same tokens and
 * bit-identical logits with 1, 2 or 4 threads, with the prompt read in one
 * chunk or several, and for a sequence alone or batched beside others. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/gguf.h"
#include "inferd/model.h"
#include "inferd/tokenizer.h"

#define N_GEN 24

static void fixture(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s/models/%s", INFERD_FIXTURES, file);
}

static inferd_model *load(const char *file, uint32_t n_seq, uint32_t n_batch)
{
    char path[512];
    inferd_error err = {0};
    inferd_model *m = NULL;
    inferd_model_params p = inferd_model_params_default();
    fixture(path, sizeof(path), file);
    p.n_ctx = 128;
    p.n_seq_max = n_seq;
    p.n_batch_max = n_batch;
    if (inferd_model_load(path, &p, &m, &err) < 0)
        fail_msg("load %s: %s", path, err.msg);
    return m;
}

static int32_t argmax(const float *x, uint32_t n)
{
    int32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (int32_t)i;
    return best;
}

/* Greedy run of one sequence: prompt in chunks of @p chunk tokens, then
 * N_GEN steps. Writes the ids and the last logits. */
static void run_seq(inferd_model *m, int n_threads, const int32_t *prompt, int n_prompt, int chunk,
                    int32_t *out_ids, float *out_logits)
{
    const uint32_t V = inferd_model_get_hparams(m)->n_vocab;
    inferd_error err = {0};
    inferd_pool *pool = NULL;
    int32_t pos[64], seq[64] = {0};
    int8_t want[64], prefill[64];
    memset(prefill, 1, sizeof(prefill));
    assert_int_equal(inferd_pool_create(n_threads, &pool, &err), 0);
    inferd_model_seq_reset(m, 0);
    for (int i = 0; i < n_prompt; i += chunk) {
        int n = n_prompt - i < chunk ? n_prompt - i : chunk;
        for (int j = 0; j < n; j++) {
            pos[j] = i + j;
            want[j] = (i + j == n_prompt - 1);
        }
        inferd_batch b = {n, prompt + i, pos, seq, want, prefill, NULL};
        assert_int_equal(inferd_model_forward(m, pool, &b, out_logits, &err), 0);
    }
    for (int s = 0; s < N_GEN; s++) {
        int32_t tok = argmax(out_logits, V);
        int32_t p0 = n_prompt + s;
        int8_t one = 1;
        out_ids[s] = tok;
        inferd_batch b = {1, &tok, &p0, seq, &one, NULL, NULL};
        assert_int_equal(inferd_model_forward(m, pool, &b, out_logits, &err), 0);
    }
    inferd_pool_destroy(pool);
}

static void check_determinism(const char *file)
{
    static const int32_t prompt[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};
    const int n_prompt = (int)(sizeof(prompt) / sizeof(prompt[0]));
    inferd_model *m = load(file, 1, 64);
    const uint32_t V = inferd_model_get_hparams(m)->n_vocab;
    float *ref = inferd_malloc(V * sizeof(float)), *got = inferd_malloc(V * sizeof(float));
    int32_t ref_ids[N_GEN], ids[N_GEN];
    assert_non_null(ref);
    assert_non_null(got);

    run_seq(m, 1, prompt, n_prompt, n_prompt, ref_ids, ref);
    static const struct {
        int threads, chunk;
    } runs[] = {
        {2, 12}, {4, 12}, {1, 1}, {2, 5}, {4, 3}, {3, 7},
    };
    for (size_t r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
        run_seq(m, runs[r].threads, prompt, n_prompt, runs[r].chunk, ids, got);
        if (memcmp(ids, ref_ids, sizeof(ids)) != 0 || memcmp(got, ref, V * sizeof(float)) != 0)
            fail_msg("%s: %d threads, chunks of %d: output differs from 1 thread, one chunk", file,
                     runs[r].threads, runs[r].chunk);
    }
    inferd_free(ref);
    inferd_free(got);
    inferd_model_destroy(m);
}

static void test_model_deterministic_threads_chunks_f32(void **state)
{
    (void)state;
    check_determinism("stories260K.gguf");
}

static void test_model_deterministic_threads_chunks_q8_0(void **state)
{
    (void)state;
    check_determinism("stories260K-ff192-q8_0.gguf");
}

static void test_model_deterministic_threads_chunks_q4_0(void **state)
{
    (void)state;
    check_determinism("stories260K-ff192-q4_0.gguf");
}

/* Three sequences decoded together in one batch give bit-identical logits
 * to each decoded alone. */
static void test_model_batch_equals_alone(void **state)
{
    (void)state;
    static const int32_t prompts[3][6] = {
        {1, 403, 407, 261, 378, 432},
        {1, 291, 376, 298, 315, 421},
        {1, 317, 269, 368, 302, 382},
    };
    const char *files[] = {"stories260K.gguf", "stories260K-ff192-q8_0.gguf"};
    for (size_t f = 0; f < 2; f++) {
        inferd_model *m = load(files[f], 3, 64);
        const uint32_t V = inferd_model_get_hparams(m)->n_vocab;
        inferd_error err = {0};
        inferd_pool *pool = NULL;
        float *alone = inferd_malloc(3 * V * sizeof(float));
        float *together = inferd_malloc(3 * V * sizeof(float));
        assert_int_equal(inferd_pool_create(2, &pool, &err), 0);

        for (int s = 0; s < 3; s++) {
            int32_t pos[6], seq[6];
            int8_t want[6] = {0, 0, 0, 0, 0, 1}, pf[6] = {1, 1, 1, 1, 1, 1};
            for (int j = 0; j < 6; j++) {
                pos[j] = j;
                seq[j] = s;
            }
            inferd_model_seq_reset(m, s);
            inferd_batch b = {6, prompts[s], pos, seq, want, pf, NULL};
            assert_int_equal(inferd_model_forward(m, pool, &b, alone + (size_t)s * V, &err), 0);
        }
        /* Interleaved: token j of every sequence, in one batch. */
        int32_t tok[18], pos[18], seq[18];
        int8_t want[18], pf[18];
        memset(pf, 1, sizeof(pf));
        for (int j = 0; j < 6; j++)
            for (int s = 0; s < 3; s++) {
                int i = j * 3 + s;
                tok[i] = prompts[s][j];
                pos[i] = j;
                seq[i] = s;
                want[i] = (j == 5);
            }
        for (int s = 0; s < 3; s++)
            inferd_model_seq_reset(m, s);
        inferd_batch b = {18, tok, pos, seq, want, pf, NULL};
        assert_int_equal(inferd_model_forward(m, pool, &b, together, &err), 0);
        for (int s = 0; s < 3; s++)
            if (memcmp(alone + (size_t)s * V, together + (size_t)s * V, V * sizeof(float)) != 0)
                fail_msg("%s: sequence %d differs when batched with others", files[f], s);
        inferd_free(alone);
        inferd_free(together);
        inferd_pool_destroy(pool);
        inferd_model_destroy(m);
    }
}

/* Read @p n prompt tokens into sequence @p s from position 0 in one call;
 * the last token's logits go to @p out when @p want_last. */
static void read_prompt(inferd_model *m, inferd_pool *pool, int32_t s, const int32_t *toks, int n,
                        bool want_last, float *out)
{
    int32_t pos[16], seq[16];
    int8_t want[16], pf[16];
    inferd_error err = {0};
    assert_true(n <= 16);
    inferd_model_seq_reset(m, s);
    for (int j = 0; j < n; j++) {
        pos[j] = j;
        seq[j] = s;
        want[j] = want_last && j == n - 1;
        pf[j] = 1;
    }
    inferd_batch b = {n, toks, pos, seq, want, pf, NULL};
    assert_int_equal(inferd_model_forward(m, pool, &b, out, &err), 0);
}

/* Continuous batching's shape: one step holds generated tokens of two
 * sequences and a prompt chunk of a third. Each sequence's logits equal
 * those it gets alone. */
static void test_model_mixed_decode_and_prefill_equals_alone(void **state)
{
    (void)state;
    static const int32_t prompt[2][4] = {{1, 403, 407, 261}, {1, 291, 376, 298}};
    static const int32_t third[5] = {1, 317, 269, 368, 302};
    const char *files[] = {"stories260K.gguf", "stories260K-f16.gguf",
                           "stories260K-ff192-q4_0.gguf"};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        inferd_model *m = load(files[f], 3, 16);
        const uint32_t V = inferd_model_get_hparams(m)->n_vocab;
        inferd_error err = {0};
        inferd_pool *pool = NULL;
        float *alone = inferd_malloc(3 * V * sizeof(float));
        float *mixed = inferd_malloc(3 * V * sizeof(float));
        int32_t pos[8], seq[8], tok[8];
        int8_t want[8], pf[8];
        assert_int_equal(inferd_pool_create(2, &pool, &err), 0);

        /* Alone: sequences 0 and 1 read their prompt, then decode one token;
         * sequence 2 reads its prompt. */
        for (int s = 0; s < 2; s++) {
            read_prompt(m, pool, s, prompt[s], 4, false, alone);
            int32_t t1 = 432, p1 = 4, s1 = s;
            int8_t one = 1;
            inferd_batch d = {1, &t1, &p1, &s1, &one, NULL, NULL};
            assert_int_equal(inferd_model_forward(m, pool, &d, alone + (size_t)s * V, &err), 0);
        }
        read_prompt(m, pool, 2, third, 5, true, alone + 2 * (size_t)V);

        /* Mixed: the same prompts for 0 and 1, then one step with both
         * decode tokens and the whole prompt of 2. */
        for (int s = 0; s < 3; s++)
            inferd_model_seq_reset(m, s);
        for (int s = 0; s < 2; s++)
            read_prompt(m, pool, s, prompt[s], 4, false, mixed);
        for (int i = 0; i < 7; i++) {
            const bool dec = i < 2;
            tok[i] = dec ? 432 : third[i - 2];
            pos[i] = dec ? 4 : i - 2;
            seq[i] = dec ? i : 2;
            want[i] = dec || i == 6;
            pf[i] = !dec;
        }
        inferd_batch mb = {7, tok, pos, seq, want, pf, NULL};
        assert_int_equal(inferd_model_forward(m, pool, &mb, mixed, &err), 0);
        if (memcmp(alone, mixed, 3 * V * sizeof(float)) != 0)
            fail_msg("%s: a mixed decode + prefill step differs from each sequence alone",
                     files[f]);
        inferd_free(alone);
        inferd_free(mixed);
        inferd_pool_destroy(pool);
        inferd_model_destroy(m);
    }
}

static void test_model_forward_rejects_bad_batches(void **state)
{
    (void)state;
    inferd_model *m = load("stories260K.gguf", 2, 8);
    const uint32_t V = inferd_model_get_hparams(m)->n_vocab;
    float *logits = inferd_malloc(8 * V * sizeof(float));
    inferd_error err = {0};
    int32_t tok[2] = {1, 403}, pos[2] = {0, 1}, seq[2] = {0, 0};
    int8_t want[2] = {0, 1};
    struct {
        int32_t tok1, pos1, seq1, n;
        const char *msg;
    } bad[] = {
        {9999, 1, 0, 2, "token 1: id 9999 out of range"},
        {-1, 1, 0, 2, "token 1: id -1 out of range"},
        {403, 1, 5, 2, "token 1: sequence 5 out of range"},
        {403, 3, 0, 2, "token 1: position 3 does not follow"},
        {403, 500, 0, 2, "token 1: position 500 outside the context"},
        {403, 1, 0, 9, "batch of 9 tokens"},
        {403, 1, 0, 0, "batch of 0 tokens"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int32_t t2[9] = {1, bad[i].tok1}, p2[9] = {0, bad[i].pos1}, s2[9] = {0, bad[i].seq1};
        int8_t w2[9] = {0, 1};
        inferd_batch b = {bad[i].n, t2, p2, s2, w2, NULL, NULL};
        memset(&err, 0, sizeof(err));
        assert_int_equal(inferd_model_forward(m, NULL, &b, logits, &err), INFERD_E_RANGE);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, bad[i].msg);
        assert_int_equal(inferd_model_seq_len(m, 0), 0);
    }
    /* The model still works after the rejected calls. */
    inferd_batch ok = {2, tok, pos, seq, want, NULL, NULL};
    assert_int_equal(inferd_model_forward(m, NULL, &ok, logits, &err), 0);
    assert_int_equal(inferd_model_seq_len(m, 0), 2);
    assert_int_equal(argmax(logits, V), 407);
    inferd_free(logits);
    inferd_model_destroy(m);
}

/* The forward pass allocates nothing: every buffer is sized at load. */
static void test_model_forward_does_not_allocate(void **state)
{
    (void)state;
    inferd_model *m = load("stories260K-ff192-q8_0.gguf", 2, 16);
    const uint32_t V = inferd_model_get_hparams(m)->n_vocab;
    float *logits = inferd_malloc(16 * V * sizeof(float));
    inferd_error err = {0};
    inferd_pool *pool = NULL;
    int32_t tok[16], pos[16], seq[16];
    int8_t want[16], pf[16];
    assert_int_equal(inferd_pool_create(2, &pool, &err), 0);
    const long before = inferd_alloc_count();
    for (int i = 0; i < 16; i++) {
        tok[i] = 300 + i;
        pos[i] = i;
        seq[i] = 0;
        want[i] = i == 15;
        pf[i] = 1;
    }
    inferd_batch b = {16, tok, pos, seq, want, pf, NULL};
    assert_int_equal(inferd_model_forward(m, pool, &b, logits, &err), 0);
    for (int step = 0; step < 20; step++) {
        int32_t t2[2] = {400, 401}, p2[2] = {16 + step, step}, s2[2] = {0, 1};
        int8_t w2[2] = {1, 1};
        inferd_batch d = {2, t2, p2, s2, w2, NULL, NULL};
        assert_int_equal(inferd_model_forward(m, pool, &d, logits, &err), 0);
    }
    assert_int_equal(inferd_alloc_count(), before);
    inferd_free(logits);
    inferd_pool_destroy(pool);
    inferd_model_destroy(m);
}

/* Write a copy of stories260K with one tensor dropped or reshaped, or a key
 * changed, and check the load error names it. */
typedef enum { DROP_TENSOR, BAD_SHAPE, BAD_ARCH } mutation;

static void write_mutant(const char *out, mutation mut, const char *target)
{
    char path[512];
    inferd_error err = {0};
    inferd_gguf *g = NULL;
    inferd_gguf_writer *w = NULL;
    fixture(path, sizeof(path), "stories260K.gguf");
    assert_int_equal(inferd_gguf_open(path, &g, &err), 0);
    assert_int_equal(inferd_gguf_writer_create(&w, &err), 0);
    if (mut == BAD_ARCH) {
        assert_int_equal(inferd_gguf_writer_set_str(w, "general.architecture", target, &err), 0);
        assert_int_equal(inferd_gguf_writer_copy_kv(w, g, "tokenizer.", &err), 0);
    } else {
        assert_int_equal(inferd_gguf_writer_copy_kv(w, g, "", &err), 0);
    }
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++) {
        const inferd_gguf_tensor *t = inferd_gguf_tensor_at(g, i);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
        uint64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        if (target && strcmp(name, target) == 0) {
            if (mut == DROP_TENSOR)
                continue;
            if (mut == BAD_SHAPE) {
                ne[0] = t->ne[1];
                ne[1] = t->ne[0];
            }
        }
        assert_int_equal(inferd_gguf_writer_add_tensor(w, name, t->type, t->n_dims, ne, t->data,
                                                       NULL, NULL, &err),
                         0);
    }
    assert_int_equal(inferd_gguf_writer_write(w, out, &err), 0);
    inferd_gguf_writer_destroy(w);
    inferd_gguf_close(g);
}

static void test_model_load_errors(void **state)
{
    (void)state;
    char dir[] = "/tmp/inferd-test-model-XXXXXX", path[600];
    inferd_error err = {0};
    inferd_model *m = NULL;
    assert_non_null(mkdtemp(dir));

    assert_int_equal(inferd_model_load("/nonexistent/x.gguf", NULL, &m, &err), INFERD_E_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));

    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-llama-spm.gguf", INFERD_FIXTURES);
    assert_true(inferd_model_load(path, NULL, &m, &err) < 0);
    print_message("vocab-only file: %s\n", err.msg);

    struct {
        mutation mut;
        const char *target;
        int code;
        const char *msg;
    } cases[] = {
        {DROP_TENSOR, "blk.3.ffn_up.weight", INFERD_E_FORMAT,
         "missing tensor 'blk.3.ffn_up.weight'"},
        {BAD_SHAPE, "blk.0.attn_k.weight", INFERD_E_FORMAT,
         "tensor 'blk.0.attn_k.weight' has shape"},
        {DROP_TENSOR, "output_norm.weight", INFERD_E_FORMAT, "missing tensor 'output_norm.weight'"},
        {BAD_ARCH, "mamba", INFERD_E_UNSUPPORTED, "architecture 'mamba' is not supported"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(path, sizeof(path), "%s/m%zu.gguf", dir, i);
        write_mutant(path, cases[i].mut, cases[i].target);
        memset(&err, 0, sizeof(err));
        assert_int_equal(inferd_model_load(path, NULL, &m, &err), cases[i].code);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, cases[i].msg);
        unlink(path);
    }
    /* An untouched copy loads: the mutation, not the copying, is the fault. */
    snprintf(path, sizeof(path), "%s/ok.gguf", dir);
    write_mutant(path, DROP_TENSOR, NULL);
    assert_int_equal(inferd_model_load(path, NULL, &m, &err), 0);
    inferd_model_destroy(m);
    unlink(path);
    rmdir(dir);
}

/* Every allocation of the loader may fail: each failure is reported as
 * INFERD_E_NOMEM and leaks nothing (the ASan build checks leaks). */
static void test_model_load_alloc_failures(void **state)
{
    (void)state;
    char path[512];
    fixture(path, sizeof(path), "stories260K.gguf");
    for (long n = 1; n < 10000; n++) {
        inferd_error err = {0};
        inferd_model *m = NULL;
        inferd_alloc_fail_after(n);
        int rc = inferd_model_load(path, NULL, &m, &err);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            inferd_model_destroy(m);
            return;
        }
        assert_int_equal(rc, INFERD_E_NOMEM);
    }
    fail_msg("model load never succeeded");
}

/* The estimate is exact: the sizes a load then reports, for two models
 * with different weight types and several param sets. */
static void test_model_estimate_equals_load(void **state)
{
    (void)state;
    const char *files[] = {"stories260K.gguf", "stories260K-ff192-q4_0.gguf"};
    const inferd_model_params ps[] = {{64, 1, 8, false}, {0, 3, 512, true}};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
            char path[512];
            inferd_error err = {0};
            inferd_model *m = NULL;
            uint64_t wb = 0, sb = 0;
            fixture(path, sizeof(path), files[f]);
            assert_int_equal(inferd_model_estimate(path, &ps[k], &wb, &sb, &err), 0);
            assert_int_equal(inferd_model_load(path, &ps[k], &m, &err), 0);
            assert_true(wb > 0 && sb > 0);
            assert_int_equal(wb, inferd_model_weight_bytes(m));
            assert_int_equal(sb, inferd_model_state_bytes(m));
            inferd_model_destroy(m);
        }
    }
    inferd_error err = {0};
    uint64_t wb = 7, sb = 7;
    assert_int_equal(inferd_model_estimate("/nonexistent/x.gguf", NULL, &wb, &sb, &err),
                     INFERD_E_IO);
    assert_int_equal(wb, 7);
    assert_int_equal(sb, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_deterministic_threads_chunks_f32),
        cmocka_unit_test(test_model_deterministic_threads_chunks_q8_0),
        cmocka_unit_test(test_model_deterministic_threads_chunks_q4_0),
        cmocka_unit_test(test_model_batch_equals_alone),
        cmocka_unit_test(test_model_mixed_decode_and_prefill_equals_alone),
        cmocka_unit_test(test_model_forward_rejects_bad_batches),
        cmocka_unit_test(test_model_forward_does_not_allocate),
        cmocka_unit_test(test_model_load_errors),
        cmocka_unit_test(test_model_load_alloc_failures),
        cmocka_unit_test(test_model_estimate_equals_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
