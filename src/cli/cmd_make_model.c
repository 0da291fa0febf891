/* `inferd make-model`: write a model of a given architecture (llama, qwen2,
 * phi3, gemma, llama3) and shape with random weights, N(0, 0.02) for
 * matrices and biases and 1 for norms, its tensors typed by one of
 * llama.cpp's quantization recipes (quant_recipe.h), with the vocabulary
 * (tokenizer.* keys) of an existing GGUF file. Benchmarks use it to get real
 * shapes (e.g. TinyLlama-1.1B) without shipping weights; --dry-run prints
 * each tensor's name, type and shape instead of writing. Tensor names,
 * shapes and keys are those llama.cpp c392e5094 loads. Values depend only on
 * the seed and the tensor's position, and are generated and quantized one
 * tensor at a time while the file is written. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/gguf.h"
#include "inferd/quant.h"
#include "quant_recipe.h"

#define CMD "make-model"

/* Whether an architecture has an output.weight or reads logits through
 * token_embd.weight ("tied"). */
typedef enum arch_output {
    OUTPUT_OPTIONAL, /* either: --tied-output chooses */
    OUTPUT_REQUIRED, /* always has one (phi3) */
    OUTPUT_NONE,     /* always tied (gemma) */
} arch_output;

typedef struct arch_desc {
    const char *name;       /* as --arch spells it */
    const char *gguf_arch;  /* general.architecture, the prefix of its keys */
    const char *model_name; /* general.name */
    float rms_eps;          /* attention.layer_norm_rms_epsilon */
    float rope_base;        /* rope.freq_base unless --rope-base */
    arch_output output;
    bool tied_by_default; /* for OUTPUT_OPTIONAL */
    bool qkv_bias;        /* attn_q/k/v.bias (qwen2) */
    bool fused;           /* attn_qkv, and ffn_up holding gate and up (phi3) */
    bool free_head_dim;   /* --head-dim may differ from dim / heads */
    bool head_dim_keys;   /* always write attention.key_length/value_length */
    bool llama3_rope;     /* rope_freqs.weight with Llama 3.1's scaling */
    bool sliding_window;  /* attention.sliding_window (phi3) */
} arch_desc;

static const arch_desc archs[] = {
    {.name = "llama",
     .gguf_arch = "llama",
     .model_name = "inferd random llama",
     .rms_eps = 1e-5f,
     .rope_base = 10000.0f,
     .output = OUTPUT_OPTIONAL,
     .free_head_dim = true},
    {.name = "qwen2",
     .gguf_arch = "qwen2",
     .model_name = "inferd random qwen2",
     .rms_eps = 1e-6f,
     .rope_base = 1000000.0f,
     .output = OUTPUT_OPTIONAL,
     .tied_by_default = true,
     .qkv_bias = true},
    /* Not "phi3": llama.cpp gives models so named Phi-3's token attributes,
     * looking up "<|endoftext|>", which other vocabularies lack. Microsoft's
     * own files are named "Phi 3 ..." too. */
    {.name = "phi3",
     .gguf_arch = "phi3",
     .model_name = "inferd random Phi 3",
     .rms_eps = 1e-5f,
     .rope_base = 10000.0f,
     .output = OUTPUT_REQUIRED,
     .fused = true,
     .sliding_window = true},
    {.name = "gemma",
     .gguf_arch = "gemma",
     .model_name = "inferd random gemma",
     .rms_eps = 1e-6f,
     .rope_base = 10000.0f,
     .output = OUTPUT_NONE,
     .tied_by_default = true,
     .free_head_dim = true,
     .head_dim_keys = true},
    {.name = "llama3",
     .gguf_arch = "llama",
     .model_name = "inferd random llama3",
     .rms_eps = 1e-5f,
     .rope_base = 500000.0f,
     .output = OUTPUT_OPTIONAL,
     .free_head_dim = true,
     .llama3_rope = true},
};
#define N_ARCHS (sizeof(archs) / sizeof(archs[0]))

typedef struct model_shape {
    int64_t dim; /* embedding_length */
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim; /* per head: key_length = value_length = rope dims */
    int64_t ffn;      /* feed_forward_length */
    int64_t n_vocab;
    int64_t n_ctx; /* context_length */
    int64_t swa;   /* attention.sliding_window (phi3) */
    double rope_base;
    bool tied; /* no output.weight */
} model_shape;

typedef enum fill_kind {
    FILL_NORMAL, /* N(0, 0.02) from the tensor's seed */
    FILL_ONES,   /* norm weights */
    FILL_DATA,   /* given values (rope_freqs) */
} fill_kind;

typedef struct tensor_plan {
    char name[64];
    uint32_t n_dims; /* 1 or 2 */
    uint64_t ne[2];  /* ne[0] row length, ne[1] rows (1 for 1-D) */
    uint32_t layer;  /* block index, 0 outside blocks */
    fill_kind fill;
    const float *data; /* FILL_DATA: ne[0] floats, borrowed */
    uint64_t seed;     /* FILL_NORMAL */
    uint32_t type;     /* chosen by the recipe */
} tensor_plan;

typedef struct tensor_list {
    tensor_plan *items;
    size_t n, cap;
    uint64_t seed; /* --seed */
} tensor_list;

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

#define CHUNK 65536 /* elements generated and converted per step: whole blocks of every type */

/* inferd_gguf_fill_fn: generate tensor @p arg's values CHUNK at a time and
 * convert them with the type's reference quantizer. */
static int fill_tensor(void *arg, void *dst, uint64_t size_bytes, inferd_error *err)
{
    const tensor_plan *t = arg;
    const inferd_kernels *k = inferd_kernels_get(t->type);
    const uint64_t n_elems = t->ne[0] * t->ne[1];
    float *buf = inferd_malloc(CHUNK * sizeof(float));
    uint64_t s = t->seed;
    uint8_t *out = dst;
    (void)size_bytes;

    if (!buf)
        return inferd_fail(err, INFERD_E_NOMEM, "make-model: no memory");
    for (uint64_t i = 0; i < n_elems; i += CHUNK) {
        uint64_t n = n_elems - i < CHUNK ? n_elems - i : CHUNK;
        for (uint64_t j = 0; j < n; j += 2) {
            if (t->fill == FILL_ONES) {
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
        inferd_dtype_nbytes(t->type, i, &off);
        k->quantize(buf, out + off, (int64_t)n);
    }
    inferd_free(buf);
    return 0;
}

/**
 * Llama 3.1's RoPE frequency factors, one per pair of dimensions of a head
 * of @p head_dim (factor 8, low_freq_factor 1, high_freq_factor 4, original
 * context 8192), as convert_hf_to_gguf.py computes them for rope_freqs: in
 * float32, and where it divides a number by a tensor, as the reciprocal
 * times the number (what torch does); powf may differ from torch's pow in
 * the last bit. Wavelengths shorter than 8192 / 4
 * keep their frequency (1), longer than 8192 / 1 are slowed by 8, and those
 * between blend the two.
 */
static void llama3_rope_factors(float *out, int64_t head_dim, float base)
{
    const float factor = 8.0f, low_freq_factor = 1.0f, high_freq_factor = 4.0f;
    const float old_ctx = 8192.0f;
    const float low_freq_wavelen = old_ctx / low_freq_factor;
    const float high_freq_wavelen = old_ctx / high_freq_factor;

    for (int64_t i = 0; i < head_dim / 2; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / (float)head_dim);
        float wavelen = (1.0f / freq) * (float)6.283185307179586; /* 2 pi */
        if (wavelen < high_freq_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_freq_wavelen) {
            out[i] = factor;
        } else {
            float smooth = ((1.0f / wavelen) * old_ctx - low_freq_factor) /
                           (high_freq_factor - low_freq_factor);
            out[i] = 1.0f / ((1.0f - smooth) / factor + smooth);
        }
    }
}

/* Append a tensor of ne0 x ne1 (ne1 0: 1-D) to @p l, which has room. */
static tensor_plan *plan_add(tensor_list *l, const char *name, uint32_t layer, uint64_t ne0,
                             uint64_t ne1, fill_kind fill)
{
    tensor_plan *t = &l->items[l->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->n_dims = ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->layer = layer;
    t->fill = fill;
    /* The seed of the n-th tensor, as make-model has always numbered them. */
    t->seed = l->seed * 1000003u + l->n;
    return t;
}

/* The same for "blk.<layer>.<what>". */
static tensor_plan *plan_add_block(tensor_list *l, uint32_t layer, const char *what, uint64_t ne0,
                                   uint64_t ne1, fill_kind fill)
{
    char name[64];
    snprintf(name, sizeof(name), "blk.%u.%s", layer, what);
    return plan_add(l, name, layer, ne0, ne1, fill);
}

/* Most tensors a model of @p n_layer blocks can have: token_embd,
 * output_norm, output, rope_freqs, and per block 2 norms, 4 attention
 * matrices, 3 biases and 3 FFN matrices. */
static size_t max_tensors(int64_t n_layer) { return 4 + 12 * (size_t)n_layer; }

/* The tensors of @p a at shape @p s, in file order, as llama.cpp's
 * load_tensors names and shapes them. @p rope_freqs: head_dim / 2 factors
 * for llama3 (borrowed), else NULL. */
static void plan_model(const arch_desc *a, const model_shape *s, const float *rope_freqs,
                       tensor_list *l)
{
    const uint64_t dim = (uint64_t)s->dim, ffn = (uint64_t)s->ffn;
    const uint64_t q_dim = (uint64_t)(s->n_head * s->head_dim);
    const uint64_t kv_dim = (uint64_t)(s->n_head_kv * s->head_dim);

    plan_add(l, "token_embd.weight", 0, dim, (uint64_t)s->n_vocab, FILL_NORMAL);
    for (uint32_t il = 0; il < (uint32_t)s->n_layer; il++) {
        plan_add_block(l, il, "attn_norm.weight", dim, 0, FILL_ONES);
        if (a->fused) {
            plan_add_block(l, il, "attn_qkv.weight", dim, q_dim + 2 * kv_dim, FILL_NORMAL);
        } else {
            plan_add_block(l, il, "attn_q.weight", dim, q_dim, FILL_NORMAL);
            if (a->qkv_bias)
                plan_add_block(l, il, "attn_q.bias", q_dim, 0, FILL_NORMAL);
            plan_add_block(l, il, "attn_k.weight", dim, kv_dim, FILL_NORMAL);
            if (a->qkv_bias)
                plan_add_block(l, il, "attn_k.bias", kv_dim, 0, FILL_NORMAL);
            plan_add_block(l, il, "attn_v.weight", dim, kv_dim, FILL_NORMAL);
            if (a->qkv_bias)
                plan_add_block(l, il, "attn_v.bias", kv_dim, 0, FILL_NORMAL);
        }
        plan_add_block(l, il, "attn_output.weight", q_dim, dim, FILL_NORMAL);
        plan_add_block(l, il, "ffn_norm.weight", dim, 0, FILL_ONES);
        if (a->fused) {
            /* phi3: the gate's rows, then the up projection's. */
            plan_add_block(l, il, "ffn_up.weight", dim, 2 * ffn, FILL_NORMAL);
        } else {
            plan_add_block(l, il, "ffn_gate.weight", dim, ffn, FILL_NORMAL);
            plan_add_block(l, il, "ffn_up.weight", dim, ffn, FILL_NORMAL);
        }
        plan_add_block(l, il, "ffn_down.weight", ffn, dim, FILL_NORMAL);
    }
    plan_add(l, "output_norm.weight", 0, dim, 0, FILL_ONES);
    if (!s->tied)
        plan_add(l, "output.weight", 0, dim, (uint64_t)s->n_vocab, FILL_NORMAL);
    /* Last, so that every other tensor has the seed of the same llama. */
    if (a->llama3_rope)
        plan_add(l, "rope_freqs.weight", 0, (uint64_t)s->head_dim / 2, 0, FILL_DATA)->data =
            rope_freqs;
}

/* llama.cpp's model type 70B, which gives attn_v more bits. */
static bool is_70b(const arch_desc *a, const model_shape *s)
{
    if (s->n_layer != 80)
        return false;
    if (strcmp(a->gguf_arch, "qwen2") == 0)
        return true;
    return strcmp(a->gguf_arch, "llama") == 0 && s->n_head != s->n_head_kv;
}

/* Give each tensor of @p l its type under recipe @p r. */
static int choose_types(const inferd__recipe *r, const arch_desc *a, const model_shape *s,
                        tensor_list *l, inferd_error *err)
{
    const inferd__recipe_model m = {
        .n_layer = (uint32_t)s->n_layer,
        .n_gqa = (uint32_t)(s->n_head / s->n_head_kv),
        .n_expert = 0,
        .is_70b = is_70b(a, s),
        .has_output = !s->tied,
    };
    for (size_t i = 0; i < l->n; i++) {
        tensor_plan *t = &l->items[i];
        int rc = inferd__recipe_type(r, &m, t->name, t->n_dims, t->ne[0], t->ne[1], t->layer,
                                     &t->type, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Every chosen type has a reference quantizer in this build. */
static int check_quantizers(const tensor_list *l, inferd_error *err)
{
    for (size_t i = 0; i < l->n; i++) {
        const tensor_plan *t = &l->items[i];
        const inferd_kernels *k = inferd_kernels_get(t->type);
        if (!k || !k->quantize)
            return inferd_fail(err, INFERD_E_UNSUPPORTED,
                               "tensor '%s' needs %s, which this build cannot quantize", t->name,
                               inferd__recipe_type_name(t->type));
    }
    return 0;
}

/* general.*, the architecture's keys, then the vocabulary's tokenizer.*. */
static int write_metadata(inferd_gguf_writer *w, const arch_desc *a, const model_shape *s,
                          const inferd__recipe *r, const inferd_gguf *vocab, inferd_error *err)
{
    const bool head_dim_keys = a->head_dim_keys || s->head_dim * s->n_head != s->dim;
    const struct {
        const char *key; /* after "<arch>." */
        int64_t value;
        bool present;
    } u32_keys[] = {
        {"context_length", s->n_ctx, true},
        {"embedding_length", s->dim, true},
        {"block_count", s->n_layer, true},
        {"feed_forward_length", s->ffn, true},
        {"attention.head_count", s->n_head, true},
        {"attention.head_count_kv", s->n_head_kv, true},
        {"rope.dimension_count", s->head_dim, true},
        {"vocab_size", s->n_vocab, true},
        {"attention.key_length", s->head_dim, head_dim_keys},
        {"attention.value_length", s->head_dim, head_dim_keys},
        {"attention.sliding_window", s->swa, a->sliding_window},
    };
    const struct {
        const char *key;
        double value;
    } f32_keys[] = {
        {"attention.layer_norm_rms_epsilon", a->rms_eps},
        {"rope.freq_base", s->rope_base},
    };
    char key[96];
    int rc;

    if ((rc = inferd_gguf_writer_set_str(w, "general.architecture", a->gguf_arch, err)) < 0 ||
        (rc = inferd_gguf_writer_set_str(w, "general.name", a->model_name, err)) < 0 ||
        (rc = inferd_gguf_writer_set_u32(w, "general.file_type", r->ftype, err)) < 0)
        return rc;
    for (size_t i = 0; i < sizeof(u32_keys) / sizeof(u32_keys[0]); i++) {
        if (!u32_keys[i].present)
            continue;
        snprintf(key, sizeof(key), "%s.%s", a->gguf_arch, u32_keys[i].key);
        if ((rc = inferd_gguf_writer_set_u32(w, key, (uint32_t)u32_keys[i].value, err)) < 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(f32_keys) / sizeof(f32_keys[0]); i++) {
        snprintf(key, sizeof(key), "%s.%s", a->gguf_arch, f32_keys[i].key);
        if ((rc = inferd_gguf_writer_set_f32(w, key, (float)f32_keys[i].value, err)) < 0)
            return rc;
    }
    return inferd_gguf_writer_copy_kv(w, vocab, "tokenizer.", err);
}

static int write_model(const char *path, const arch_desc *a, const model_shape *s,
                       const inferd__recipe *r, const inferd_gguf *vocab, tensor_list *l,
                       inferd_error *err)
{
    inferd_gguf_writer *w = NULL;
    int rc;

    if ((rc = inferd_gguf_writer_create(&w, err)) < 0)
        return rc;
    if ((rc = write_metadata(w, a, s, r, vocab, err)) < 0)
        goto out;
    for (size_t i = 0; i < l->n; i++) {
        tensor_plan *t = &l->items[i];
        if (t->fill == FILL_DATA)
            rc = inferd_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, NULL,
                                               NULL, err);
        else
            rc = inferd_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, NULL,
                                               fill_tensor, t, err);
        if (rc < 0)
            goto out;
    }
    rc = inferd_gguf_writer_write(w, path, err);
out:
    inferd_gguf_writer_destroy(w);
    return rc;
}

static void print_help(void)
{
    printf("usage: inferd make-model [--arch llama|qwen2|phi3|gemma|llama3] --dim N --layers N\n"
           "         --heads N [--kv-heads N] [--head-dim N] --ffn N --vocab-from FILE\n"
           "         [--type TYPE] [--pure] [--tied-output | --no-tied-output] [--swa N]\n"
           "         [--rope-base F] [--ctx 2048] [--seed S] (-o OUT | --dry-run)\n"
           "  --type      one type for every matrix (default F32):\n"
           "             ");
    for (uint32_t i = 0; inferd__recipe_at(i); i++)
        if (inferd__recipe_at(i)->uniform)
            printf(" %s", inferd__recipe_at(i)->name);
    printf("\n"
           "              or a llama.cpp mix (llama-quantize's choice per tensor):\n"
           "             ");
    for (uint32_t i = 0; inferd__recipe_at(i); i++)
        if (!inferd__recipe_at(i)->uniform)
            printf(" %s", inferd__recipe_at(i)->name);
    printf("\n"
           "  --pure      every matrix the mix's main type (llama-quantize --pure)\n"
           "  --head-dim  per-head width of q, k and v (llama, llama3, gemma; default dim/heads)\n"
           "  --tied-output, --no-tied-output  read logits through token_embd.weight, or write\n"
           "              output.weight (default: tied for qwen2 and gemma, not for the others)\n"
           "  --swa       phi3's attention.sliding_window (default 2047)\n"
           "  --rope-base rope.freq_base (default: llama, phi3, gemma 10000; qwen2 1e6;\n"
           "              llama3 500000, with Llama 3.1's rope_freqs.weight)\n"
           "  --dry-run   print \"name type ne0 ne1\" for each tensor and write nothing\n"
           "Matrices are N(0, 0.02), norms 1; the tokenizer.* keys come from FILE.\n"
           "e.g. TinyLlama-1.1B: --dim 2048 --layers 22 --heads 32 --kv-heads 4 --ffn 5632\n"
           "     Qwen2.5-0.5B: --arch qwen2 --dim 896 --layers 24 --heads 14 --kv-heads 2 "
           "--ffn 4864\n"
           "     gemma-2b: --arch gemma --dim 2048 --layers 18 --heads 8 --kv-heads 1 "
           "--head-dim 256 --ffn 16384\n"
           "     Phi-3-mini-4k: --arch phi3 --dim 3072 --layers 32 --heads 32 --ffn 8192 "
           "--ctx 4096\n");
}

/* Parsed options, before they are checked. */
typedef struct make_opts {
    const char *arch_name, *type_name, *vocab_path, *out_path;
    int64_t dim, layers, heads, kv_heads, head_dim, ffn, ctx, swa, seed;
    double rope_base;
    bool kv_given, head_dim_given, swa_given, rope_base_given;
    bool tied, no_tied, pure, dry_run, help;
} make_opts;

/* Check @p o and derive the architecture, recipe and shape (n_vocab still
 * 0). Prints the problem and returns -1 on a usage error. */
static int resolve(const make_opts *o, const arch_desc **out_arch, inferd__recipe *out_recipe,
                   model_shape *out_shape)
{
    const arch_desc *a = NULL;
    model_shape s = {0};

    if (!o->dim || !o->layers || !o->heads || !o->ffn || !o->vocab_path ||
        (!o->out_path && !o->dry_run)) {
        inferd__cli_error(CMD, "--dim, --layers, --heads, --ffn, --vocab-from and -o (or "
                               "--dry-run) are required");
        return -1;
    }
    for (size_t i = 0; i < N_ARCHS; i++)
        if (strcmp(archs[i].name, o->arch_name) == 0)
            a = &archs[i];
    if (!a) {
        inferd__cli_error(CMD, "unknown --arch '%s' (llama, qwen2, phi3, gemma or llama3)",
                          o->arch_name);
        return -1;
    }
    const inferd__recipe *r = inferd__recipe_find(o->type_name);
    if (!r) {
        inferd__cli_error(CMD, "unsupported --type '%s' (see --help)", o->type_name);
        return -1;
    }

    s.dim = o->dim;
    s.n_layer = o->layers;
    s.n_head = o->heads;
    s.n_head_kv = o->kv_given ? o->kv_heads : o->heads;
    s.ffn = o->ffn;
    s.n_ctx = o->ctx;
    s.rope_base = o->rope_base_given ? o->rope_base : a->rope_base;
    if (o->head_dim_given) {
        if (!a->free_head_dim && o->head_dim * o->heads != o->dim) {
            inferd__cli_error(CMD, "--head-dim must be --dim / --heads for %s", a->name);
            return -1;
        }
        if (o->head_dim % 2) {
            inferd__cli_error(CMD, "--head-dim must be even (RoPE turns pairs)");
            return -1;
        }
        s.head_dim = o->head_dim;
    } else if (s.dim % s.n_head == 0) {
        s.head_dim = s.dim / s.n_head;
    }
    if (!s.head_dim || s.head_dim % 2 || s.n_head % s.n_head_kv) {
        inferd__cli_error(CMD, "--dim must be a multiple of --heads (even head size), and "
                               "--heads a multiple of --kv-heads");
        return -1;
    }

    if (o->tied && o->no_tied) {
        inferd__cli_error(CMD, "--tied-output and --no-tied-output contradict each other");
        return -1;
    }
    if (a->output == OUTPUT_REQUIRED && o->tied) {
        inferd__cli_error(CMD, "%s always has an output.weight: --tied-output does not apply",
                          a->name);
        return -1;
    }
    if (a->output == OUTPUT_NONE && o->no_tied) {
        inferd__cli_error(CMD, "%s has no output.weight: --no-tied-output does not apply", a->name);
        return -1;
    }
    s.tied = a->output == OUTPUT_NONE ||
             (a->output == OUTPUT_OPTIONAL && (o->tied || (a->tied_by_default && !o->no_tied)));
    if (o->swa_given && !a->sliding_window) {
        inferd__cli_error(CMD, "--swa applies to phi3 only");
        return -1;
    }
    s.swa = o->swa_given ? o->swa : 2047;

    *out_recipe = *r;
    if (o->pure)
        out_recipe->uniform = true;
    if (out_recipe->uniform) {
        /* Each row must be whole blocks: rows are dim long, ffn_down's ffn
         * and attn_output's heads x head_dim. */
        uint32_t block = inferd__recipe_block_size(r->base_type);
        int64_t q_dim = s.n_head * s.head_dim;
        if (s.dim % block || s.ffn % block) {
            inferd__cli_error(CMD, "--dim and --ffn must be multiples of %u for %s", block,
                              inferd__recipe_type_name(r->base_type));
            return -1;
        }
        if (q_dim % block) {
            inferd__cli_error(CMD, "--heads x --head-dim (%lld) must be a multiple of %u for %s",
                              (long long)q_dim, block, inferd__recipe_type_name(r->base_type));
            return -1;
        }
    }
    *out_arch = a;
    *out_shape = s;
    return 0;
}

int inferd__cmd_make_model(int argc, char **argv)
{
    make_opts o = {.arch_name = "llama", .type_name = "F32", .ctx = 2048, .seed = 1};
    const char *pos[1];
    int n_pos, status = CLI_EXIT_FAIL;
    const cli_opt opts[] = {
        {"--arch", NULL, CLI_STR, &o.arch_name, 0, 0, NULL, 0, NULL},
        {"--dim", NULL, CLI_INT, &o.dim, 1, 65536, NULL, 0, NULL},
        {"--layers", NULL, CLI_INT, &o.layers, 1, 1024, NULL, 0, NULL},
        {"--heads", NULL, CLI_INT, &o.heads, 1, 1024, NULL, 0, NULL},
        {"--kv-heads", NULL, CLI_INT, &o.kv_heads, 1, 1024, NULL, 0, &o.kv_given},
        {"--head-dim", NULL, CLI_INT, &o.head_dim, 2, 4096, NULL, 0, &o.head_dim_given},
        {"--ffn", NULL, CLI_INT, &o.ffn, 1, 1 << 20, NULL, 0, NULL},
        {"--ctx", NULL, CLI_INT, &o.ctx, 1, 1 << 20, NULL, 0, NULL},
        {"--swa", NULL, CLI_INT, &o.swa, 1, 1 << 20, NULL, 0, &o.swa_given},
        {"--rope-base", NULL, CLI_FLOAT, &o.rope_base, 1, 1e12, NULL, 0, &o.rope_base_given},
        {"--tied-output", NULL, CLI_FLAG, &o.tied, 0, 0, NULL, 0, NULL},
        {"--no-tied-output", NULL, CLI_FLAG, &o.no_tied, 0, 0, NULL, 0, NULL},
        {"--vocab-from", NULL, CLI_STR, &o.vocab_path, 0, 0, NULL, 0, NULL},
        {"--type", NULL, CLI_STR, &o.type_name, 0, 0, NULL, 0, NULL},
        {"--pure", NULL, CLI_FLAG, &o.pure, 0, 0, NULL, 0, NULL},
        {"--seed", NULL, CLI_INT, &o.seed, 0, 9.007199254740991e15, NULL, 0, NULL},
        {"--output", "-o", CLI_STR, &o.out_path, 0, 0, NULL, 0, NULL},
        {"--dry-run", NULL, CLI_FLAG, &o.dry_run, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &o.help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 0, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (o.help) {
        print_help();
        return 0;
    }

    const arch_desc *a;
    inferd__recipe recipe;
    model_shape s;
    if (resolve(&o, &a, &recipe, &s) < 0)
        return CLI_EXIT_USAGE;

    inferd_error err = {0};
    inferd_gguf *vocab = NULL;
    tensor_list l = {.seed = (uint64_t)o.seed};
    float *rope_freqs = NULL;

    if (inferd_gguf_open(o.vocab_path, &vocab, &err) < 0)
        goto fail;
    int64_t tk = inferd_gguf_find_key(vocab, "tokenizer.ggml.tokens");
    if (tk < 0 || inferd_gguf_kv_type(vocab, (uint64_t)tk) != INFERD_GGUF_ARRAY) {
        inferd_fail(&err, INFERD_E_FORMAT, "'%s' has no tokenizer.ggml.tokens array", o.vocab_path);
        goto fail;
    }
    s.n_vocab = (int64_t)inferd_gguf_kv_arr_n(vocab, (uint64_t)tk);

    l.cap = max_tensors(s.n_layer);
    l.items = inferd_calloc(l.cap, sizeof(tensor_plan));
    if (a->llama3_rope)
        rope_freqs = inferd_calloc((size_t)s.head_dim / 2, sizeof(float));
    if (!l.items || (a->llama3_rope && !rope_freqs)) {
        inferd_fail(&err, INFERD_E_NOMEM, "no memory");
        goto fail;
    }
    if (rope_freqs)
        llama3_rope_factors(rope_freqs, s.head_dim, (float)s.rope_base);
    plan_model(a, &s, rope_freqs, &l);
    if (choose_types(&recipe, a, &s, &l, &err) < 0) {
        /* A shape the recipe cannot type is a usage error, as llama-quantize
         * refuses it. */
        status = CLI_EXIT_USAGE;
        goto fail;
    }

    if (o.dry_run) {
        for (size_t i = 0; i < l.n; i++)
            printf("%s %s %llu %llu\n", l.items[i].name, inferd__recipe_type_name(l.items[i].type),
                   (unsigned long long)l.items[i].ne[0], (unsigned long long)l.items[i].ne[1]);
        status = 0;
        goto done;
    }
    if (check_quantizers(&l, &err) < 0 ||
        write_model(o.out_path, a, &s, &recipe, vocab, &l, &err) < 0)
        goto fail;
    status = 0;
    goto done;

fail:
    inferd__cli_error(CMD, "%s", err.msg);
done:
    inferd_free(rope_freqs);
    inferd_free(l.items);
    inferd_gguf_close(vocab);
    return status;
}
