/* `inferd make-model`: write a llama model with random weights, N(0, 0.02)
 * for matrices and 1 for norms, of a given shape and weight type, with the
 * vocabulary (tokenizer.* keys) of an existing GGUF file. Benchmarks use it
 * to get real shapes (e.g. TinyLlama-1.1B) without shipping weights.
 * Tensors are generated and quantized one at a time at write time. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/gguf.h"
#include "inferd/quant.h"

#define CMD "make-model"

typedef struct fill_ctx {
    uint32_t type;
    uint64_t n_elems;
    uint64_t seed;       /* distinct per tensor */
    bool ones;           /* norm weights */
} fill_ctx;

/* splitmix64: a small, well-mixed generator for reproducible weights. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float uniform01(uint64_t *s)
{
    return ((float)(splitmix64(s) >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

#define CHUNK 65536 /* elements generated and converted per step */

static int fill_tensor(void *arg, void *dst, uint64_t size_bytes, inferd_error *err)
{
    fill_ctx *c = arg;
    const inferd_kernels *k = inferd_kernels_get(c->type);
    float *buf = inferd_malloc(CHUNK * sizeof(float));
    uint64_t s = c->seed;
    uint8_t *out = dst;
    (void)size_bytes;

    if (!buf)
        return inferd_fail(err, INFERD_E_NOMEM, "make-model: no memory");
    for (uint64_t i = 0; i < c->n_elems; i += CHUNK) {
        uint64_t n = c->n_elems - i < CHUNK ? c->n_elems - i : CHUNK;
        for (uint64_t j = 0; j < n; j += 2) {
            if (c->ones) {
                buf[j] = 1.0f;
                if (j + 1 < n)
                    buf[j + 1] = 1.0f;
                continue;
            }
            /* Box-Muller: two normal samples from two uniforms. */
            float u1 = uniform01(&s), u2 = uniform01(&s);
            float r = sqrtf(-2.0f * logf(u1)) * 0.02f;
            buf[j] = r * cosf(6.2831853f * u2);
            if (j + 1 < n)
                buf[j + 1] = r * sinf(6.2831853f * u2);
        }
        uint64_t off;
        inferd_dtype_nbytes(c->type, i, &off);
        k->quantize(buf, out + off, (int64_t)n);
    }
    inferd_free(buf);
    return 0;
}

int inferd__cmd_make_model(int argc, char **argv)
{
    int64_t dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, seed = 1, ctx = 2048;
    const char *vocab_path = NULL, *type_name = "F32", *out_path = NULL, *pos[1];
    bool want_help = false, kv_given = false;
    int n_pos, status = CLI_EXIT_FAIL;
    const cli_opt opts[] = {
        {"--dim", NULL, CLI_INT, &dim, 1, 65536, NULL, 0, NULL},
        {"--layers", NULL, CLI_INT, &layers, 1, 1024, NULL, 0, NULL},
        {"--heads", NULL, CLI_INT, &heads, 1, 1024, NULL, 0, NULL},
        {"--kv-heads", NULL, CLI_INT, &kv_heads, 1, 1024, NULL, 0, &kv_given},
        {"--ffn", NULL, CLI_INT, &ffn, 1, 1 << 20, NULL, 0, NULL},
        {"--ctx", NULL, CLI_INT, &ctx, 1, 1 << 20, NULL, 0, NULL},
        {"--vocab-from", NULL, CLI_STR, &vocab_path, 0, 0, NULL, 0, NULL},
        {"--type", NULL, CLI_STR, &type_name, 0, 0, NULL, 0, NULL},
        {"--seed", NULL, CLI_INT, &seed, 0, 9.007199254740991e15, NULL, 0, NULL},
        {"--output", "-o", CLI_STR, &out_path, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 0, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        printf("usage: inferd make-model --dim N --layers N --heads N [--kv-heads N] --ffn N\n"
               "         --vocab-from FILE [--type F32|F16|BF16|Q8_0|Q4_0|Q4_1|Q5_0|Q5_1]\n"
               "         [--ctx 2048] [--seed S] -o OUT\n"
               "e.g. TinyLlama-1.1B: --dim 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632\n");
        return 0;
    }
    if (!dim || !layers || !heads || !ffn || !vocab_path || !out_path) {
        inferd__cli_error(CMD, "--dim, --layers, --heads, --ffn, --vocab-from and -o are required");
        return CLI_EXIT_USAGE;
    }
    if (!kv_given)
        kv_heads = heads;
    int type = inferd_dtype_parse(type_name);
    if (type < 0 || !inferd_kernels_get((uint32_t)type) ||
        !inferd_kernels_get((uint32_t)type)->quantize) {
        inferd__cli_error(CMD, "unsupported --type '%s'", type_name);
        return CLI_EXIT_USAGE;
    }
    const inferd_dtype_info *ti = inferd_dtype_get((uint32_t)type);
    if (dim % heads || heads % kv_heads || (dim / heads) % 2) {
        inferd__cli_error(CMD, "--dim must be a multiple of --heads (even head size), and "
                               "--heads a multiple of --kv-heads");
        return CLI_EXIT_USAGE;
    }
    if (dim % ti->block_size || ffn % ti->block_size) {
        inferd__cli_error(CMD, "--dim and --ffn must be multiples of %u for %s", ti->block_size,
                          ti->name);
        return CLI_EXIT_USAGE;
    }

    inferd_error err = {0};
    inferd_gguf *vg = NULL;
    inferd_gguf_writer *w = NULL;
    fill_ctx *fills = NULL;
    int64_t n_vocab;
    int rc;

    if ((rc = inferd_gguf_open(vocab_path, &vg, &err)) < 0)
        goto fail;
    int64_t tk = inferd_gguf_find_key(vg, "tokenizer.ggml.tokens");
    if (tk < 0 || inferd_gguf_kv_type(vg, (uint64_t)tk) != INFERD_GGUF_ARRAY) {
        inferd_fail(&err, INFERD_E_FORMAT, "'%s' has no tokenizer.ggml.tokens array", vocab_path);
        goto fail;
    }
    n_vocab = (int64_t)inferd_gguf_kv_arr_n(vg, (uint64_t)tk);
    const int64_t head_dim = dim / heads, kv_dim = kv_heads * head_dim;
    const uint64_t n_tensors = 3 + 9 * (uint64_t)layers;
    fills = inferd_calloc(n_tensors, sizeof(fill_ctx));
    if (!fills) {
        inferd_fail(&err, INFERD_E_NOMEM, "no memory");
        goto fail;
    }
    uint32_t file_type = type == INFERD_DTYPE_F32 ? 0 : type == INFERD_DTYPE_F16 ? 1
                       : type == INFERD_DTYPE_Q4_0 ? 2 : type == INFERD_DTYPE_Q4_1 ? 3
                       : type == INFERD_DTYPE_Q8_0 ? 7 : type == INFERD_DTYPE_Q5_0 ? 8
                       : type == INFERD_DTYPE_Q5_1 ? 9 : 32 /* BF16 */;
    if ((rc = inferd_gguf_writer_create(&w, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_str(w, "general.architecture", "llama", &err)) < 0 ||
        (rc = inferd_gguf_writer_set_str(w, "general.name", "inferd random llama", &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "general.file_type", file_type, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)ctx, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)dim, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)layers, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)ffn, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)heads, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)kv_heads, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)head_dim, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)n_vocab, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &err)) < 0 ||
        (rc = inferd_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f, &err)) < 0 ||
        (rc = inferd_gguf_writer_copy_kv(w, vg, "tokenizer.", &err)) < 0)
        goto fail;

    uint64_t ti_n = 0;
    /* name, cols, rows (0: 1-D norm) */
#define ADD(name_, cols_, rows_)                                                           \
    do {                                                                                   \
        fill_ctx *fc = &fills[ti_n++];                                                     \
        uint64_t ne_[2] = {(uint64_t)(cols_), (uint64_t)(rows_)};                          \
        fc->ones = (rows_) == 0;                                                           \
        fc->type = fc->ones ? INFERD_DTYPE_F32 : (uint32_t)type;                           \
        fc->n_elems = ne_[0] * (fc->ones ? 1 : ne_[1]);                                    \
        fc->seed = (uint64_t)seed * 1000003u + ti_n;                                       \
        if ((rc = inferd_gguf_writer_add_tensor(w, name_, fc->type, fc->ones ? 1 : 2, ne_, \
                                                NULL, fill_tensor, fc, &err)) < 0)        \
            goto fail;                                                                     \
    } while (0)
    char name[96];
    ADD("token_embd.weight", dim, n_vocab);
    for (int64_t il = 0; il < layers; il++) {
#define LNAME(s) (snprintf(name, sizeof(name), "blk.%lld." s ".weight", (long long)il), name)
        ADD(LNAME("attn_norm"), dim, 0);
        ADD(LNAME("attn_q"), dim, dim);
        ADD(LNAME("attn_k"), dim, kv_dim);
        ADD(LNAME("attn_v"), dim, kv_dim);
        ADD(LNAME("attn_output"), dim, dim);
        ADD(LNAME("ffn_norm"), dim, 0);
        ADD(LNAME("ffn_gate"), dim, ffn);
        ADD(LNAME("ffn_up"), dim, ffn);
        ADD(LNAME("ffn_down"), ffn, dim);
#undef LNAME
    }
    ADD("output_norm.weight", dim, 0);
    ADD("output.weight", dim, n_vocab);
#undef ADD
    if ((rc = inferd_gguf_writer_write(w, out_path, &err)) < 0)
        goto fail;
    status = 0;
    goto done;

fail:
    inferd__cli_error(CMD, "%s", err.msg);
done:
    inferd_gguf_writer_destroy(w);
    inferd_free(fills);
    inferd_gguf_close(vg);
    return status;
}
