/* llama-family forward pass over a batch of tokens from several sequences.
 * Invariants: weights are borrowed from the GGUF mmap; every buffer is
 * allocated at load; the KV cache has one slot per sequence, K as
 * (pos, kv_dim) rows and V transposed as (kv_head, head_dim, pos) rows so
 * that both attention products are plain F16 dot products.
 * Threads: one caller at a time; parallel sections run on the caller's pool
 * and split work by tokens, heads or output rows only. */
#include "inferd/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/fp16.h"
#include "inferd/log.h"
#include "inferd/matmul.h"
#include "inferd/quant.h"

#include "vecops.h"

#define MAX_THREADS 256
/* Attention sums over the cached positions rounded up to a multiple of
 * KV_PAD, the extra weights being zero, as llama.cpp pads its KV cache; with
 * the GEMV reduction order that decides which products are summed where. */
#define KV_PAD 32

typedef struct weight {
    uint32_t type;
    const void *data; /* (n_rows, n_cols) in type, in the mapping */
    int64_t n_rows;
    int64_t n_cols;
    size_t row_bytes;
} weight;

static inferd_matmul_op mm_op(const weight *w, float *y)
{
    inferd_matmul_op op = {w->type, w->data, w->n_rows, y, w->n_rows};
    return op;
}

/* The rows [r0, r0 + n) of @p w as a weight of their own: how the fused
 * tensors (phi3's attn_qkv, its gate+up ffn_up) are split. Every output is
 * one dot product of one row, so a part gives the same bits as the whole. */
static weight weight_rows(const weight *w, int64_t r0, int64_t n)
{
    weight part = *w;
    part.data = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    part.n_rows = n;
    return part;
}

typedef enum ffn_act {
    FFN_SILU, /* silu(gate) * up */
    FFN_GELU, /* gelu_tanh(gate) * up, through an F16 table as ggml */
} ffn_act;

/* What sets the supported architectures apart, as llama.cpp c392e5094
 * builds their graphs (build_llama, build_qwen2, build_phi3, build_gemma). */
typedef struct arch_desc {
    const char *name;     /* general.architecture */
    bool rope_neox;       /* rotate (x[i], x[i + n_rot/2]) instead of (x[2i], x[2i+1]) */
    bool qkv_bias;        /* attn_{q,k,v}.bias are required */
    bool fused;           /* attn_qkv (or separate q/k/v) and ffn_up = [gate; up] */
    bool embd_scale;      /* embeddings times sqrt(n_embd) */
    bool q_prescale;      /* Q times 1/sqrt(head_dim) after rope, KQ scale 1 */
    bool output_required; /* no tying of output to token_embd */
    bool sliding_window;  /* reads attention.sliding_window */
    ffn_act act;
} arch_desc;

static const arch_desc archs[] = {
    {.name = "llama", .act = FFN_SILU},
    {.name = "qwen2", .rope_neox = true, .qkv_bias = true, .act = FFN_SILU},
    {.name = "phi3",
     .rope_neox = true,
     .fused = true,
     .q_prescale = true,
     .output_required = true,
     .sliding_window = true,
     .act = FFN_SILU},
    {.name = "gemma", .rope_neox = true, .embd_scale = true, .q_prescale = true, .act = FFN_GELU},
};
#define N_ARCHS (sizeof(archs) / sizeof(archs[0]))

typedef struct layer {
    const float *attn_norm; /* (n_embd) */
    const float *ffn_norm;  /* (n_embd) */
    weight wq, wk, wv, wo;
    const float *bq;      /* (q_dim) Q bias, or NULL */
    const float *bk, *bv; /* (kv_dim) K and V biases, or NULL */
    weight w_gate, w_up, w_down;
} layer;

struct inferd_model {
    inferd_gguf *gguf;
    inferd_vocab *vocab;
    inferd_model_hparams hp;
    const arch_desc *arch;
    weight tok_embd;
    weight output;
    const float *output_norm; /* (n_embd) */
    const float *rope_freqs;  /* (n_rot/2) frequency divisors, or NULL */
    layer *layers;            /* (n_layer) */

    uint32_t n_ctx, n_seq_max, n_batch_max;
    uint32_t n_ctx_pad;    /* n_ctx rounded up to KV_PAD: V row length */
    uint32_t kv_dim;       /* n_head_kv * head_dim */
    uint32_t q_dim;        /* n_head * head_dim */
    inferd_f16 *k_cache;   /* (n_layer, n_seq_max, n_ctx, kv_dim) */
    inferd_f16 *v_cache;   /* (n_layer, n_seq_max, n_head_kv, head_dim, n_ctx_pad);
                                 * entries at and past a sequence's length, up
                                 * to the next multiple of KV_PAD, are zero */
    uint32_t *seq_len;     /* (n_seq_max) tokens in each slot */
    uint32_t *seq_len_tmp; /* (n_seq_max) scratch for batch checks */
    uint64_t state_bytes;

    /* Work buffers, (n_batch_max, width) each. */
    float *x;        /* residual stream (n_embd) */
    float *xb;       /* normed input / block output (n_embd) */
    float *q;        /* (q_dim) */
    float *k, *v;    /* (kv_dim) */
    float *att;      /* attention output (q_dim) */
    float *hb, *hb2; /* (n_ff) */
    float *rope_cs;  /* (n_batch_max, n_rot): cos, sin pairs */
    void *mm_work;   /* matmul activation conversion */
    /* Per-thread attention scratch. */
    float *scores;     /* (MAX_THREADS, n_ctx) */
    inferd_f16 *p16;   /* (MAX_THREADS, n_ctx) */
    inferd_f16 *q16;   /* (MAX_THREADS, head_dim) */
    int32_t *out_rows; /* (n_batch_max) batch index of each output */

    inferd_chat_template chat_tmpl; /* from tokenizer.chat_template, or chatml */
    int chat_tmpl_rc;               /* 0 detected; INFERD_E_NOT_FOUND none in the
                                 * file; INFERD_E_UNSUPPORTED not recognised */
    const inferd_kernels *f16k;     /* F16 kernels for attention */
    const inferd__vecops *vecops;   /* softmax exp and SiLU as ggml */
};

inferd_model_params inferd_model_params_default(void)
{
    inferd_model_params p = {.n_ctx = 0, .n_seq_max = 1, .n_batch_max = 512, .no_mmap = false};
    return p;
}

/* --- loading ----------------------------------------------------------- */

static int get_arch_u32(const inferd_gguf *g, const char *arch, const char *name, bool required,
                        uint32_t dflt, uint32_t *out, inferd_error *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, name);
    int rc = inferd_gguf_get_u32(g, key, out, err);
    if (rc == INFERD_E_NOT_FOUND) {
        if (required)
            return inferd_fail(err, INFERD_E_FORMAT, "model: missing key '%s'", key);
        *out = dflt;
        return 0;
    }
    return rc;
}

static int get_arch_f32(const inferd_gguf *g, const char *arch, const char *name, float dflt,
                        float *out, inferd_error *err)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", arch, name);
    int rc = inferd_gguf_get_f32(g, key, out, err);
    if (rc == INFERD_E_NOT_FOUND) {
        *out = dflt;
        return 0;
    }
    return rc;
}

static int load_hparams(inferd_model *m, inferd_error *err)
{
    const inferd_gguf *g = m->gguf;
    inferd_model_hparams *hp = &m->hp;
    inferd_gguf_str arch;
    int rc;

    rc = inferd_gguf_get_str(g, "general.architecture", &arch, err);
    if (rc == INFERD_E_NOT_FOUND)
        return inferd_fail(err, INFERD_E_FORMAT, "model: missing key 'general.architecture'");
    if (rc < 0)
        return rc;
    if (arch.len >= sizeof(hp->arch))
        return inferd_fail(err, INFERD_E_UNSUPPORTED, "model: architecture name too long");
    memcpy(hp->arch, arch.ptr, arch.len);
    hp->arch[arch.len] = '\0';
    for (size_t i = 0; i < N_ARCHS && !m->arch; i++)
        if (strcmp(hp->arch, archs[i].name) == 0)
            m->arch = &archs[i];
    if (!m->arch)
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "model: architecture '%s' is not supported (supported: llama, "
                           "qwen2, phi3, gemma)",
                           hp->arch);

    const char *a = hp->arch;
    if ((rc = get_arch_u32(g, a, "embedding_length", true, 0, &hp->n_embd, err)) < 0 ||
        (rc = get_arch_u32(g, a, "block_count", true, 0, &hp->n_layer, err)) < 0 ||
        (rc = get_arch_u32(g, a, "feed_forward_length", true, 0, &hp->n_ff, err)) < 0 ||
        (rc = get_arch_u32(g, a, "attention.head_count", true, 0, &hp->n_head, err)) < 0 ||
        (rc = get_arch_u32(g, a, "context_length", true, 0, &hp->n_ctx_train, err)) < 0)
        return rc;
    if ((rc = get_arch_u32(g, a, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv,
                           err)) < 0)
        return rc;
    if (hp->n_embd == 0 || hp->n_embd > 65536 || hp->n_layer == 0 || hp->n_layer > 1024 ||
        hp->n_head == 0 || hp->n_head > 1024 || hp->n_ff == 0 || hp->n_ff > 1u << 20 ||
        hp->n_ctx_train == 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "model: implausible hyper-parameters (embd %u, layers %u, "
                           "heads %u, ffn %u, context %u)",
                           hp->n_embd, hp->n_layer, hp->n_head, hp->n_ff, hp->n_ctx_train);
    if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "model: head_count %u is not a multiple of head_count_kv %u", hp->n_head,
                           hp->n_head_kv);
    if (hp->n_embd % hp->n_head != 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "model: embedding_length %u is not a multiple of head_count %u",
                           hp->n_embd, hp->n_head);
    if ((rc = get_arch_u32(g, a, "attention.key_length", false, hp->n_embd / hp->n_head,
                           &hp->head_dim, err)) < 0)
        return rc;
    uint32_t v_len;
    if ((rc = get_arch_u32(g, a, "attention.value_length", false, hp->head_dim, &v_len, err)) < 0)
        return rc;
    if (v_len != hp->head_dim || hp->head_dim == 0 || hp->head_dim > 1024 || hp->head_dim % 2 != 0)
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "model: head dims key %u / value %u are not supported", hp->head_dim,
                           v_len);
    if ((rc = get_arch_u32(g, a, "rope.dimension_count", false, hp->head_dim, &hp->n_rot, err)) < 0)
        return rc;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "model: rope.dimension_count %u must be even and <= head dim %u",
                           hp->n_rot, hp->head_dim);
    if ((rc = get_arch_f32(g, a, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->rms_eps, err)) <
            0 ||
        (rc = get_arch_f32(g, a, "rope.freq_base", 10000.0f, &hp->rope_freq_base, err)) < 0)
        return rc;
    if (!(hp->rms_eps >= 0.0f) || !(hp->rope_freq_base > 0.0f))
        return inferd_fail(err, INFERD_E_FORMAT, "model: bad rms epsilon or rope base");
    hp->n_swa = 0;
    if (m->arch->sliding_window) {
        /* llama.cpp's window for Phi-3 files written before the key existed;
         * a key present and 0 means no window (Phi-4). */
        uint32_t dflt = 0;
        if ((hp->n_layer == 32 || hp->n_layer == 40) && hp->n_ctx_train == 4096)
            dflt = 2047;
        else if (hp->n_layer == 32 && hp->n_head_kv == 32 && hp->n_ctx_train == 131072)
            dflt = 262144;
        else if (hp->n_layer == 40 && hp->n_ctx_train == 131072)
            dflt = 131072;
        const uint32_t unset = UINT32_MAX;
        if ((rc = get_arch_u32(g, a, "attention.sliding_window", false, unset, &hp->n_swa, err)) <
            0)
            return rc;
        if (hp->n_swa == unset) {
            if (dflt == 0)
                return inferd_fail(err, INFERD_E_FORMAT,
                                   "model: missing key '%s.attention.sliding_window'", a);
            hp->n_swa = dflt;
        }
    }

    /* Rope scaling: none or linear (freq_scale = 1/factor). */
    char key[128];
    inferd_gguf_str stype = {"none", 4};
    snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
    rc = inferd_gguf_get_str(g, key, &stype, err);
    if (rc < 0 && rc != INFERD_E_NOT_FOUND)
        return rc;
    float factor = 0.0f;
    if ((rc = get_arch_f32(g, a, "rope.scaling.factor", 0.0f, &factor, err)) < 0)
        return rc;
    hp->rope_freq_scale = 1.0f;
    if (stype.len == 6 && memcmp(stype.ptr, "linear", 6) == 0) {
        if (factor > 0.0f)
            hp->rope_freq_scale = 1.0f / factor;
    } else if (!(stype.len == 4 && memcmp(stype.ptr, "none", 4) == 0)) {
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "model: rope scaling type '%.*s' is not supported",
                           (int)(stype.len > 32 ? 32 : stype.len), stype.ptr);
    }
    return 0;
}

static int tensor_check(const inferd_model *m, const char *name, bool optional, int64_t ne0,
                        int64_t ne1, const inferd_gguf_tensor **out, inferd_error *err)
{
    const inferd_gguf_tensor *t = inferd_gguf_find_tensor(m->gguf, name);
    if (!t) {
        if (optional) {
            *out = NULL;
            return 0;
        }
        return inferd_fail(err, INFERD_E_FORMAT, "model: missing tensor '%s'", name);
    }
    uint32_t want_dims = ne1 > 0 ? 2 : 1;
    if (t->n_dims != want_dims || (int64_t)t->ne[0] != ne0 || (ne1 > 0 && (int64_t)t->ne[1] != ne1))
        return inferd_fail(err, INFERD_E_FORMAT,
                           "model: tensor '%s' has shape [%llu, %llu] (%u dims), "
                           "expected [%lld, %lld]",
                           name, (unsigned long long)t->ne[0],
                           (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 1), t->n_dims,
                           (long long)ne0, (long long)(ne1 > 0 ? ne1 : 1));
    *out = t;
    return 0;
}

static int load_norm(const inferd_model *m, const char *name, int64_t n, const float **out,
                     inferd_error *err)
{
    const inferd_gguf_tensor *t = NULL;
    int rc = tensor_check(m, name, false, n, 0, &t, err);
    if (rc < 0)
        return rc;
    if (t->type != INFERD_DTYPE_F32)
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "model: tensor '%s' has type %s, expected F32", name,
                           inferd_dtype_name(t->type));
    if (((uintptr_t)t->data & 3u) != 0)
        return inferd_fail(err, INFERD_E_FORMAT, "model: tensor '%s' is not 4-byte aligned", name);
    *out = t->data;
    return 0;
}

static int load_weight(const inferd_model *m, const char *name, bool optional, int64_t n_cols,
                       int64_t n_rows, weight *out, inferd_error *err)
{
    const inferd_gguf_tensor *t = NULL;
    int rc = tensor_check(m, name, optional, n_cols, n_rows, &t, err);
    if (rc < 0)
        return rc;
    if (!t) {
        out->data = NULL;
        return 0;
    }
    if (!inferd_kernels_get(t->type))
        return inferd_fail(err, INFERD_E_UNSUPPORTED,
                           "model: tensor '%s' has type %s, which is not supported", name,
                           inferd_dtype_name(t->type));
    uint64_t row_bytes;
    if (inferd_dtype_nbytes(t->type, (uint64_t)n_cols, &row_bytes) < 0)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "model: tensor '%s' row of %lld is not a whole number of %s blocks",
                           name, (long long)n_cols, inferd_dtype_name(t->type));
    out->type = t->type;
    out->data = t->data;
    out->n_rows = n_rows;
    out->n_cols = n_cols;
    out->row_bytes = row_bytes;
    return 0;
}

/* An optional F32 bias of @p n elements; *out stays NULL when absent (an
 * error when @p required). */
static int load_bias(const inferd_model *m, const char *name, int64_t n, bool required,
                     const float **out, inferd_error *err)
{
    if (!required && !inferd_gguf_find_tensor(m->gguf, name)) {
        *out = NULL;
        return 0;
    }
    return load_norm(m, name, n, out, err);
}

/* Tensors llama.cpp reads for some of these architectures that this forward
 * pass has no use for: refused rather than silently ignored. */
static int refuse_unused(const inferd_model *m, inferd_error *err)
{
    static const char *const names[] = {
        "blk.0.attn_output.bias",
        "blk.0.ffn_up.bias",
        "blk.0.ffn_gate.bias",
        "blk.0.ffn_down.bias",
        "blk.0.attn_norm.bias",
        "blk.0.ffn_norm.bias",
        "output_norm.bias",
        "output.bias",
        "rope_factors_long.weight",
        "rope_factors_short.weight",
        "blk.0.rope_factors_long.weight",
        "blk.0.rope_factors_short.weight",
        "blk.0.ffn_gate_inp.weight",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (inferd_gguf_find_tensor(m->gguf, names[i]))
            return inferd_fail(err, INFERD_E_UNSUPPORTED,
                               "model: tensor '%s' (%s) is not supported", names[i],
                               strstr(names[i], "rope_factors") ? "LongRoPE scaling"
                               : strstr(names[i], "gate_inp")   ? "mixture of experts"
                                                                : "a bias this architecture "
                                                                  "does not have");
    return 0;
}

static int load_tensors(inferd_model *m, inferd_error *err)
{
    const inferd_model_hparams *hp = &m->hp;
    int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    int64_t QD = m->q_dim, KVD = m->kv_dim;
    char name[96];
    int rc;

    if ((rc = load_weight(m, "token_embd.weight", false, E, V, &m->tok_embd, err)) < 0 ||
        (rc = load_norm(m, "output_norm.weight", E, &m->output_norm, err)) < 0 ||
        (rc = load_weight(m, "output.weight", true, E, V, &m->output, err)) < 0)
        return rc;
    if (!m->output.data) {
        if (m->arch->output_required)
            return inferd_fail(err, INFERD_E_FORMAT, "model: missing tensor 'output.weight'");
        m->output = m->tok_embd;
        m->hp.tied_output = true;
    }
    if ((rc = refuse_unused(m, err)) < 0)
        return rc;
    const inferd_gguf_tensor *rf = NULL;
    if ((rc = tensor_check(m, "rope_freqs.weight", true, hp->n_rot / 2, 0, &rf, err)) < 0)
        return rc;
    if (rf) {
        if (rf->type != INFERD_DTYPE_F32)
            return inferd_fail(err, INFERD_E_UNSUPPORTED, "model: rope_freqs.weight must be F32");
        m->rope_freqs = rf->data;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        layer *L = &m->layers[il];
#define W(field, suffix, cols, rows)                                        \
    snprintf(name, sizeof(name), "blk.%u." suffix ".weight", il);           \
    if ((rc = load_weight(m, name, false, cols, rows, &L->field, err)) < 0) \
        return rc;
#define N(field, suffix)                                          \
    snprintf(name, sizeof(name), "blk.%u." suffix ".weight", il); \
    if ((rc = load_norm(m, name, E, &L->field, err)) < 0)         \
        return rc;
#define B(field, suffix, n)                                                  \
    snprintf(name, sizeof(name), "blk.%u." suffix ".bias", il);              \
    if ((rc = load_bias(m, name, n, m->arch->qkv_bias, &L->field, err)) < 0) \
        return rc;
        N(attn_norm, "attn_norm")
        N(ffn_norm, "ffn_norm")
        weight fused = {0};
        if (m->arch->fused) {
            snprintf(name, sizeof(name), "blk.%u.attn_qkv.weight", il);
            if ((rc = load_weight(m, name, true, E, QD + 2 * KVD, &fused, err)) < 0)
                return rc;
        }
        if (fused.data) {
            L->wq = weight_rows(&fused, 0, QD);
            L->wk = weight_rows(&fused, QD, KVD);
            L->wv = weight_rows(&fused, QD + KVD, KVD);
        } else {
            W(wq, "attn_q", E, QD)
            W(wk, "attn_k", E, KVD)
            W(wv, "attn_v", E, KVD)
            B(bq, "attn_q", QD)
            B(bk, "attn_k", KVD)
            B(bv, "attn_v", KVD)
        }
        W(wo, "attn_output", QD, E)
        if (m->arch->fused) {
            /* ffn_up holds the gate rows, then the up rows. */
            W(w_up, "ffn_up", E, 2 * F)
            L->w_gate = weight_rows(&L->w_up, 0, F);
            L->w_up = weight_rows(&L->w_up, F, F);
        } else {
            W(w_gate, "ffn_gate", E, F)
            W(w_up, "ffn_up", E, F)
        }
        W(w_down, "ffn_down", F, E)
#undef B
#undef W
#undef N
    }
    return 0;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

#define N_STATE_BUFS 18

/* One buffer of the KV cache or the work area: where load stores it and
 * how many bytes it takes. */
typedef struct state_buf {
    void **ptr;
    uint64_t bytes;
} state_buf;

/* The single sizing function: the byte size of every buffer load
 * allocates, from the hyper-parameters, the weight types and the params
 * already in @p m. Used by load (to allocate) and by estimate (to sum). */
static int state_layout(inferd_model *m, state_buf bufs[N_STATE_BUFS], inferd_error *err)
{
    const inferd_model_hparams *hp = &m->hp;
    uint64_t B = m->n_batch_max;
    uint64_t cache_elems = (uint64_t)hp->n_layer * m->n_seq_max * m->n_ctx_pad * m->kv_dim;
    size_t fl = sizeof(float);

    if (cache_elems > (uint64_t)1 << 40)
        return inferd_fail(err, INFERD_E_RANGE, "model: KV cache of %llu elements is too large",
                           (unsigned long long)cache_elems);
    /* Work size for the largest matmul: the widest input is max(n_embd,
     * n_ff, q_dim) columns over the whole batch. */
    size_t work = inferd_matmul_work_size(m->output.type, m->output.n_cols, (int64_t)B);
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const layer *L = &m->layers[il];
        inferd_matmul_op qkv[3] = {mm_op(&L->wq, NULL), mm_op(&L->wk, NULL), mm_op(&L->wv, NULL)};
        inferd_matmul_op gu[2] = {mm_op(&L->w_gate, NULL), mm_op(&L->w_up, NULL)};
        work = max_sz(work, inferd_matmul_multi_work_size(qkv, 3, hp->n_embd, (int64_t)B));
        work = max_sz(work, inferd_matmul_multi_work_size(gu, 2, hp->n_embd, (int64_t)B));
        work = max_sz(work, inferd_matmul_work_size(L->wo.type, L->wo.n_cols, (int64_t)B));
        work = max_sz(work, inferd_matmul_work_size(L->w_down.type, L->w_down.n_cols, (int64_t)B));
    }

    const state_buf table[N_STATE_BUFS] = {
        {(void **)&m->k_cache, cache_elems * sizeof(inferd_f16)},
        {(void **)&m->v_cache, cache_elems * sizeof(inferd_f16)},
        {(void **)&m->seq_len, (uint64_t)m->n_seq_max * sizeof(uint32_t)},
        {(void **)&m->seq_len_tmp, (uint64_t)m->n_seq_max * sizeof(uint32_t)},
        {(void **)&m->x, B * hp->n_embd * fl},
        {(void **)&m->xb, B * max_sz(hp->n_embd, m->q_dim) * fl},
        {(void **)&m->q, B * m->q_dim * fl},
        {(void **)&m->k, B * m->kv_dim * fl},
        {(void **)&m->v, B * m->kv_dim * fl},
        {(void **)&m->att, B * m->q_dim * fl},
        {(void **)&m->hb, B * hp->n_ff * fl},
        {(void **)&m->hb2, B * hp->n_ff * fl},
        {(void **)&m->rope_cs, B * hp->n_rot * fl},
        {(void **)&m->mm_work, work},
        {(void **)&m->scores, (uint64_t)MAX_THREADS * m->n_ctx_pad * fl},
        {(void **)&m->p16, (uint64_t)MAX_THREADS * m->n_ctx_pad * sizeof(inferd_f16)},
        {(void **)&m->q16, (uint64_t)MAX_THREADS * hp->head_dim * sizeof(inferd_f16)},
        {(void **)&m->out_rows, B * sizeof(int32_t)},
    };
    for (size_t i = 0; i < N_STATE_BUFS; i++) {
        if (table[i].bytes > SIZE_MAX - 64)
            return inferd_fail(err, INFERD_E_NOMEM, "model: buffer of %llu bytes is too large",
                               (unsigned long long)table[i].bytes);
        bufs[i] = table[i];
    }
    return 0;
}

static uint64_t state_total(const state_buf bufs[N_STATE_BUFS])
{
    uint64_t total = 0;
    for (size_t i = 0; i < N_STATE_BUFS; i++)
        total += bufs[i].bytes;
    return total;
}

static int alloc_state(inferd_model *m, inferd_error *err)
{
    state_buf bufs[N_STATE_BUFS];
    int rc = state_layout(m, bufs, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < N_STATE_BUFS; i++) {
        *bufs[i].ptr = inferd_aligned_alloc(64, (size_t)bufs[i].bytes);
        if (!*bufs[i].ptr)
            return inferd_fail(err, INFERD_E_NOMEM,
                               "model: cannot allocate %llu bytes for the KV cache or work buffers",
                               (unsigned long long)bufs[i].bytes);
        /* Zero everything: the V cache's padding must read as zero. */
        memset(*bufs[i].ptr, 0, (size_t)bufs[i].bytes);
    }
    m->state_bytes = state_total(bufs);
    return 0;
}

/* Sum of every tensor's bytes in the file: the weights as mapped. */
static uint64_t gguf_weight_bytes(const inferd_gguf *g)
{
    uint64_t total = 0;
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++)
        total += inferd_gguf_tensor_at(g, i)->size_bytes;
    return total;
}

static void free_state(inferd_model *m)
{
    void *ps[] = {m->k_cache, m->v_cache, m->seq_len, m->seq_len_tmp, m->x,   m->xb,
                  m->q,       m->k,       m->v,       m->att,         m->hb,  m->hb2,
                  m->rope_cs, m->mm_work, m->scores,  m->p16,         m->q16, m->out_rows};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        inferd_free(ps[i]);
}

/* Everything load does but allocating the KV cache and work buffers:
 * check the params, map the file, read the hyper-parameters and the
 * vocabulary, and check every tensor. On error nothing is left behind. */
static int detect_chat_template(inferd_model *m, inferd_error *err);

static int model_prepare(const char *path, const inferd_model_params *params,
                         inferd_model **out_model, inferd_error *err)
{
    inferd_model_params p = params ? *params : inferd_model_params_default();
    inferd_model *m;
    int rc;

    if (p.n_seq_max < 1 || p.n_seq_max > 4096)
        return inferd_fail(err, INFERD_E_RANGE, "model: n_seq_max %u out of range 1..4096",
                           p.n_seq_max);
    if (p.n_batch_max < 1 || p.n_batch_max > 65536)
        return inferd_fail(err, INFERD_E_RANGE, "model: n_batch_max %u out of range 1..65536",
                           p.n_batch_max);
    m = inferd_calloc(1, sizeof(*m));
    if (!m)
        return inferd_fail(err, INFERD_E_NOMEM, "model '%s': no memory", path);
    rc = inferd_gguf_open_ex(path, p.no_mmap ? INFERD_GGUF_OPEN_NO_MMAP : 0, &m->gguf, err);
    if (rc < 0)
        goto fail;
    rc = load_hparams(m, err);
    if (rc < 0)
        goto fail;
    rc = inferd_vocab_load(m->gguf, &m->vocab, err);
    if (rc < 0)
        goto fail;
    m->hp.n_vocab = (uint32_t)inferd_vocab_n_tokens(m->vocab);
    rc = detect_chat_template(m, err);
    if (rc < 0)
        goto fail;
    m->q_dim = m->hp.n_head * m->hp.head_dim;
    m->kv_dim = m->hp.n_head_kv * m->hp.head_dim;
    m->layers = inferd_calloc(m->hp.n_layer, sizeof(layer));
    if (!m->layers) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "model '%s': no memory", path);
        goto fail;
    }
    rc = load_tensors(m, err);
    if (rc < 0)
        goto fail;
    m->n_ctx = p.n_ctx ? p.n_ctx : m->hp.n_ctx_train;
    if (!p.n_ctx && m->n_ctx > INFERD_MODEL_N_CTX_DEFAULT_MAX)
        m->n_ctx = INFERD_MODEL_N_CTX_DEFAULT_MAX;
    if (m->n_ctx > 1u << 20) {
        rc = inferd_fail(err, INFERD_E_RANGE, "model: n_ctx %u is too large", m->n_ctx);
        goto fail;
    }
    m->n_ctx_pad = (m->n_ctx + KV_PAD - 1) / KV_PAD * KV_PAD;
    m->n_seq_max = p.n_seq_max;
    m->n_batch_max = p.n_batch_max;
    m->f16k = inferd_kernels_get(INFERD_DTYPE_F16);
    m->vecops = inferd__vecops_get();
    /* What was read above came from the file as opened only if it did not
     * change meanwhile. */
    rc = inferd_model_check_file(m, err);
    if (rc < 0)
        goto fail;
    *out_model = m;
    return 0;

fail:
    inferd_model_destroy(m);
    return rc;
}

static int detect_chat_template(inferd_model *m, inferd_error *err)
{
    inferd_gguf_str src = {0};
    m->chat_tmpl = INFERD_CHAT_CHATML;
    m->chat_tmpl_rc = INFERD_E_NOT_FOUND;
    if (inferd_gguf_get_str(m->gguf, "tokenizer.chat_template", &src, NULL) != 0)
        return 0;
    char *text = inferd_strndup(src.ptr, (size_t)src.len);
    if (!text)
        return inferd_fail(err, INFERD_E_NOMEM, "model: no memory for the chat template");
    m->chat_tmpl_rc =
        inferd_chat_template_detect(text, &m->chat_tmpl) == 0 ? 0 : INFERD_E_UNSUPPORTED;
    if (m->chat_tmpl_rc != 0)
        m->chat_tmpl = INFERD_CHAT_CHATML;
    inferd_free(text);
    return 0;
}

int inferd_model_load(const char *path, const inferd_model_params *params, inferd_model **out_model,
                      inferd_error *err)
{
    inferd_model *m = NULL;
    int rc = model_prepare(path, params, &m, err);
    if (rc < 0)
        return rc;
    rc = alloc_state(m, err);
    if (rc < 0) {
        inferd_model_destroy(m);
        return rc;
    }
    *out_model = m;
    return 0;
}

int inferd_model_estimate(const char *path, const inferd_model_params *params,
                          uint64_t *out_weight_bytes, uint64_t *out_state_bytes, inferd_error *err)
{
    inferd_model *m = NULL;
    state_buf bufs[N_STATE_BUFS];
    int rc = model_prepare(path, params, &m, err);
    if (rc < 0)
        return rc;
    rc = state_layout(m, bufs, err);
    if (rc == 0) {
        *out_weight_bytes = gguf_weight_bytes(m->gguf);
        *out_state_bytes = state_total(bufs);
    }
    /* Nothing was allocated through bufs: destroy frees only what
     * prepare made (the state pointers are still NULL). */
    inferd_model_destroy(m);
    return rc;
}

void inferd_model_destroy(inferd_model *m)
{
    if (!m)
        return;
    free_state(m);
    inferd_free(m->layers);
    inferd_vocab_destroy(m->vocab);
    inferd_gguf_close(m->gguf);
    inferd_free(m);
}

const inferd_model_hparams *inferd_model_get_hparams(const inferd_model *m) { return &m->hp; }
const inferd_vocab *inferd_model_get_vocab(const inferd_model *m) { return m->vocab; }
const inferd_gguf *inferd_model_get_gguf(const inferd_model *m) { return m->gguf; }

int inferd_model_check_file(const inferd_model *m, inferd_error *err)
{
    return inferd_gguf_check_file(m->gguf, err);
}

bool inferd_model_path_changed(const inferd_model *m, inferd_file_id *out_now)
{
    return inferd_gguf_path_changed(m->gguf, out_now);
}

uint32_t inferd_model_n_ctx(const inferd_model *m) { return m->n_ctx; }

int inferd_model_chat_template(const inferd_model *m, inferd_chat_template *out)
{
    *out = m->chat_tmpl;
    return m->chat_tmpl_rc;
}
uint32_t inferd_model_n_seq_max(const inferd_model *m) { return m->n_seq_max; }
uint32_t inferd_model_n_batch_max(const inferd_model *m) { return m->n_batch_max; }
uint64_t inferd_model_state_bytes(const inferd_model *m) { return m->state_bytes; }

uint64_t inferd_model_weight_bytes(const inferd_model *m) { return gguf_weight_bytes(m->gguf); }

uint64_t inferd_model_decode_bytes(const inferd_model *m)
{
    uint64_t total = inferd_model_weight_bytes(m);
    if (!m->hp.tied_output)
        total -= m->tok_embd.row_bytes * (uint64_t)m->tok_embd.n_rows - m->tok_embd.row_bytes;
    return total;
}

void inferd_model_seq_reset(inferd_model *m, int32_t seq)
{
    if (seq >= 0 && (uint32_t)seq < m->n_seq_max)
        m->seq_len[seq] = 0;
}

uint32_t inferd_model_seq_len(const inferd_model *m, int32_t seq)
{
    if (seq < 0 || (uint32_t)seq >= m->n_seq_max)
        return 0;
    return m->seq_len[seq];
}

/* --- forward pass ------------------------------------------------------- */

typedef struct fwd_ctx {
    inferd_model *m;
    const inferd_batch *b;
    int32_t n_tokens;
    uint32_t il;         /* current layer */
    const float *norm_w; /* rmsnorm weight */
    const float *src;    /* rmsnorm input rows */
    float *dst;          /* rmsnorm output rows */
    int32_t n_rows;      /* rows for rmsnorm */
    const int32_t *rows; /* optional row map for rmsnorm input */
} fwd_ctx;

/* Rows [r0, r1) of n split evenly over nth threads. */
static void split_range(int64_t n, int ith, int nth, int64_t *r0, int64_t *r1)
{
    int64_t per = (n + nth - 1) / nth;
    *r0 = per * ith < n ? per * ith : n;
    *r1 = *r0 + per < n ? *r0 + per : n;
}

/* y = (x / rms(x)) * w, with the sum of squares in double and the scale
 * rounded to float, as llama.cpp. */
static void rmsnorm_row(float *y, const float *x, const float *w, int64_t n, float eps)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

static void task_rmsnorm(void *arg, int ith, int nth)
{
    fwd_ctx *c = arg;
    const int64_t E = c->m->hp.n_embd;
    int64_t r0, r1;
    split_range(c->n_rows, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        int64_t src_row = c->rows ? c->rows[r] : r;
        rmsnorm_row(c->dst + r * E, c->src + src_row * E, c->norm_w, E, c->m->hp.rms_eps);
    }
}

static void rmsnorm(inferd_pool *pool, fwd_ctx *c, const float *src, float *dst, const float *w,
                    int32_t n_rows, const int32_t *rows)
{
    c->src = src;
    c->dst = dst;
    c->norm_w = w;
    c->n_rows = n_rows;
    c->rows = rows;
    inferd_pool_run(pool, task_rmsnorm, c);
}

/* Rotate pairs of each head's first n_rot dims by the token's angles: the
 * pair of angle i/2 (i even) is (x[i], x[i+1]), or with NEOX rope
 * (x[i/2], x[i/2 + n_rot/2]). */
static void rope_rows(float *x, int64_t n_heads, int64_t head_dim, const float *cs, int64_t n_rot,
                      bool neox)
{
    const int64_t step = neox ? 1 : 2, dist = neox ? n_rot / 2 : 1;
    for (int64_t h = 0; h < n_heads; h++) {
        float *hx = x + h * head_dim;
        for (int64_t i = 0; i < n_rot; i += 2) {
            const float c = cs[i], s = cs[i + 1];
            float *p0 = hx + (i / 2) * step, *p1 = p0 + dist;
            const float x0 = *p0, x1 = *p1;
            *p0 = x0 * c - x1 * s;
            *p1 = x0 * s + x1 * c;
        }
    }
}

static void add_bias(float *x, const float *b, int64_t n)
{
    if (b)
        for (int64_t i = 0; i < n; i++)
            x[i] = x[i] + b[i];
}

/* Per token: biases, rope on q and k (and Q's scale where the
 * architecture applies it there), then store k and v into the cache. */
static void task_rope_store(void *arg, int ith, int nth)
{
    fwd_ctx *c = arg;
    inferd_model *m = c->m;
    const inferd_model_hparams *hp = &m->hp;
    const uint64_t hd = hp->head_dim, stride = m->n_ctx_pad;
    int64_t t0, t1;
    split_range(c->n_tokens, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const float *cs = m->rope_cs + t * hp->n_rot;
        float *q = m->q + t * m->q_dim;
        float *k = m->k + t * m->kv_dim;
        float *v = m->v + t * m->kv_dim;
        const layer *L = &m->layers[c->il];
        add_bias(q, L->bq, m->q_dim);
        add_bias(k, L->bk, m->kv_dim);
        add_bias(v, L->bv, m->kv_dim);
        rope_rows(q, hp->n_head, hd, cs, hp->n_rot, m->arch->rope_neox);
        rope_rows(k, hp->n_head_kv, hd, cs, hp->n_rot, m->arch->rope_neox);
        if (m->arch->q_prescale) {
            const float qs = 1.0f / sqrtf((float)hd);
            for (uint32_t i = 0; i < m->q_dim; i++)
                q[i] *= qs;
        }
        const uint64_t seq = (uint64_t)c->b->seq[t], pos = (uint64_t)c->b->pos[t];
        const uint64_t slot = (uint64_t)c->il * m->n_seq_max + seq;
        inferd_f16 *kc = m->k_cache + (slot * stride + pos) * m->kv_dim;
        m->f16k->from_float(k, kc, m->kv_dim);
        inferd_f16 *vc = m->v_cache + slot * m->kv_dim * stride;
        for (uint64_t d = 0; d < m->kv_dim; d++)
            vc[d * stride + pos] = inferd_f32_to_f16(v[d]);
    }
}

/* Keep the V cache's padding zero: after a batch, the entries of each
 * sequence it touched from its new length up to the next multiple of
 * KV_PAD may hold values of an older, longer sequence. Runs alone (after
 * the stores), so it never races with a store of the same batch. */
static void clear_v_padding(inferd_model *m, uint32_t il, const inferd_batch *b)
{
    const uint64_t stride = m->n_ctx_pad;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        const uint32_t seq = (uint32_t)b->seq[i];
        /* Once per sequence: at its last token in the batch. */
        bool last = true;
        for (int32_t j = i + 1; j < b->n_tokens && last; j++)
            last = b->seq[j] != b->seq[i];
        if (!last)
            continue;
        const uint64_t len = (uint64_t)b->pos[i] + 1;
        const uint64_t end = (len + KV_PAD - 1) / KV_PAD * KV_PAD;
        if (end == len)
            continue;
        inferd_f16 *vc = m->v_cache + ((uint64_t)il * m->n_seq_max + seq) * m->kv_dim * stride;
        for (uint64_t d = 0; d < m->kv_dim; d++)
            memset(vc + d * stride + len, 0, (end - len) * sizeof(inferd_f16));
    }
}

/* One (token, head) pair per work item. */
static void task_attention(void *arg, int ith, int nth)
{
    fwd_ctx *c = arg;
    inferd_model *m = c->m;
    const inferd_model_hparams *hp = &m->hp;
    const uint64_t hd = hp->head_dim, stride = m->n_ctx_pad;
    const uint32_t group = hp->n_head / hp->n_head_kv;
    const float scale = m->arch->q_prescale ? 1.0f : 1.0f / sqrtf((float)hd);
    float *scores = m->scores + (size_t)ith * stride;
    inferd_f16 *p16 = m->p16 + (size_t)ith * stride;
    inferd_f16 *q16 = m->q16 + (size_t)ith * hd;
    int64_t i0, i1;

    split_range((int64_t)c->n_tokens * hp->n_head, ith, nth, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        const int64_t t = item / hp->n_head;
        const uint32_t h = (uint32_t)(item % hp->n_head), hk = h / group;
        const uint64_t seq = (uint64_t)c->b->seq[t];
        const int64_t n_kv = (int64_t)c->b->pos[t] + 1;
        const int64_t n_pad = (n_kv + KV_PAD - 1) / KV_PAD * KV_PAD;
        const uint64_t slot = (uint64_t)c->il * m->n_seq_max + seq;
        const inferd_f16 *kc = m->k_cache + slot * stride * m->kv_dim + hk * hd;
        const inferd_f16 *vc = m->v_cache + (slot * m->kv_dim + hk * hd) * stride;
        const inferd_order order =
            c->b->prefill && c->b->prefill[t] ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE;
        const inferd_vec_dot_fn kq_dot = inferd_kernels_dot(m->f16k, (int64_t)hd, order);
        const inferd_vec_dot_fn kqv_dot = inferd_kernels_dot(m->f16k, n_pad, order);
        float *out = m->att + t * m->q_dim + h * hd;

        /* Scores: Q rounded to F16, dotted with each cached F16 key. */
        m->f16k->from_float(m->q + t * m->q_dim + h * hd, q16, (int64_t)hd);
        /* A sliding window masks keys n_swa or more positions back, as
         * llama.cpp's -inf mask: their weight is exactly zero. */
        const int64_t j0 = hp->n_swa && n_kv > (int64_t)hp->n_swa ? n_kv - hp->n_swa : 0;
        float mx = -INFINITY;
        for (int64_t j = 0; j < j0; j++)
            scores[j] = -INFINITY;
        for (int64_t j = j0; j < n_kv; j++) {
            float s = kq_dot((int64_t)hd, kc + (uint64_t)j * m->kv_dim, q16) * scale;
            scores[j] = s;
            if (s > mx)
                mx = s;
        }
        /* Softmax as ggml_vec_soft_max_f32 over the padded row: ggml's
         * vector exp, each group of 16 summed in _mm512_reduce_add_ps's
         * order, the groups in double (vecops.h). Masked (-inf) and padding
         * entries are exactly 0 and add nothing: one ulp here can flip the
         * F16 rounding of a weight. */
        const double sum = m->vecops->softmax_exp(scores, n_kv, n_pad, mx);
        const float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < n_kv; j++)
            scores[j] *= inv;
        /* Weights rounded to F16 (zero past n_kv), dotted with each
         * transposed V row over the padded length. */
        m->f16k->from_float(scores, p16, n_kv);
        memset(p16 + n_kv, 0, (size_t)(n_pad - n_kv) * sizeof(inferd_f16));
        for (uint64_t d = 0; d < hd; d++)
            out[d] = kqv_dot(n_pad, vc + d * stride, p16);
    }
}

/* GELU with tanh, as ggml-cpu computes it for f32: 0 below -10, x above
 * 10, otherwise x rounded to F16 and looked up in a table of F16 results of
 * 0.5x(1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))); computed here on the fly,
 * same bits. */
static float gelu_f16_table(float x)
{
    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    const float h = inferd_f16_to_f32(inferd_f32_to_f16(x));
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    const float g = 0.5f * h * (1.0f + tanhf(sqrt_2_over_pi * h * (1.0f + 0.044715f * h * h)));
    return inferd_f16_to_f32(inferd_f32_to_f16(g));
}

/* Work items of the FFN activation: (row, chunk of FFN_CHUNK) pairs, so
 * that a few rows still spread over the threads; chunks start at multiples
 * of 16 in their row, which keeps vecops' lane groups those of the row. */
#define FFN_CHUNK 512

static void task_ffn_act(void *arg, int ith, int nth)
{
    fwd_ctx *c = arg;
    inferd_model *m = c->m;
    const int64_t F = m->hp.n_ff, n_chunks = (F + FFN_CHUNK - 1) / FFN_CHUNK;
    int64_t i0, i1;
    split_range((int64_t)c->n_tokens * n_chunks, ith, nth, &i0, &i1);
    for (int64_t it = i0; it < i1; it++) {
        const int64_t t = it / n_chunks, off = (it % n_chunks) * FFN_CHUNK;
        const int64_t len = F - off < FFN_CHUNK ? F - off : FFN_CHUNK;
        float *g = m->hb + t * F + off;
        const float *u = m->hb2 + t * F + off;
        if (m->arch->act == FFN_GELU) {
            for (int64_t i = 0; i < len; i++)
                g[i] = gelu_f16_table(g[i]) * u[i];
        } else {
            m->vecops->silu_mul(g, u, len);
        }
    }
}

static void task_residual(void *arg, int ith, int nth)
{
    fwd_ctx *c = arg;
    inferd_model *m = c->m;
    const int64_t n = (int64_t)c->n_tokens * m->hp.n_embd;
    int64_t i0, i1;
    split_range(n, ith, nth, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        m->x[i] = m->xb[i] + m->x[i];
}

/* y = W x for tokens [0, n): each run of tokens with the same role goes
 * through the matmul in its own reduction order (prompt tokens: the GEMM
 * order; generated tokens: the GEMV order), so a token's result never
 * depends on the tokens beside it. @p prefill NULL: all generated. */
static void matmul_ops(inferd_pool *pool, inferd_model *m, inferd_matmul_op *ops, int n_ops,
                       int64_t n_cols, const float *x, int64_t n, const int8_t *prefill)
{
    int64_t r0 = 0;
    while (r0 < n) {
        const bool pf = prefill && prefill[r0];
        int64_t r1 = r0 + 1;
        while (r1 < n && (prefill && prefill[r1]) == pf)
            r1++;
        inferd_matmul_op run[4];
        for (int i = 0; i < n_ops; i++) {
            run[i] = ops[i];
            run[i].y = ops[i].y + r0 * ops[i].y_stride;
        }
        inferd_matmul_multi(pool, run, n_ops, n_cols, x + r0 * n_cols, n_cols, r1 - r0,
                            pf ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE, m->mm_work);
        r0 = r1;
    }
}

static void matmul(inferd_pool *pool, inferd_model *m, const weight *w, const float *x,
                   int64_t n_tokens, float *y, const int8_t *prefill)
{
    inferd_matmul_op op = mm_op(w, y);
    matmul_ops(pool, m, &op, 1, w->n_cols, x, n_tokens, prefill);
}

/* Angles for one token: theta_i = pos * base^(-2i/n_rot) computed by
 * repeated multiplication in float, as llama.cpp's rope cache. */
static void rope_angles(const inferd_model *m, int32_t pos, float *cs)
{
    const inferd_model_hparams *hp = &m->hp;
    const float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    float theta = (float)pos;
    for (uint32_t i = 0; i < hp->n_rot; i += 2) {
        const float ff = m->rope_freqs ? m->rope_freqs[i / 2] : 1.0f;
        const float th = hp->rope_freq_scale * (theta / ff);
        cs[i] = cosf(th);
        cs[i + 1] = sinf(th);
        theta *= theta_scale;
    }
}

#define SEEN 0x80000000u /* seq_len_tmp flag: sequence seen in this batch */

static int check_batch(inferd_model *m, const inferd_batch *b, int32_t *out_n_out,
                       inferd_error *err)
{
    if (!b || b->n_tokens < 1 || (uint32_t)b->n_tokens > m->n_batch_max)
        return inferd_fail(err, INFERD_E_RANGE, "forward: batch of %d tokens (allowed 1..%u)",
                           b ? b->n_tokens : 0, m->n_batch_max);
    memcpy(m->seq_len_tmp, m->seq_len, (size_t)m->n_seq_max * sizeof(uint32_t));
    int32_t n_out = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        const int32_t tok = b->tokens[i], seq = b->seq[i], pos = b->pos[i];
        if (tok < 0 || (uint32_t)tok >= m->hp.n_vocab)
            return inferd_fail(err, INFERD_E_RANGE, "forward: token %d: id %d out of range 0..%u",
                               i, tok, m->hp.n_vocab - 1);
        if (seq < 0 || (uint32_t)seq >= m->n_seq_max)
            return inferd_fail(err, INFERD_E_RANGE,
                               "forward: token %d: sequence %d out of range 0..%u", i, seq,
                               m->n_seq_max - 1);
        if (pos < 0 || (uint32_t)pos >= m->n_ctx)
            return inferd_fail(err, INFERD_E_RANGE,
                               "forward: token %d: position %d outside the context of %u", i, pos,
                               m->n_ctx);
        /* The first token of a sequence may rewind it; later ones in the
         * same batch must follow on, so that keys a token attends to are
         * never overwritten by a later token of the batch. */
        const uint32_t len = m->seq_len_tmp[seq] & ~SEEN;
        const bool seen = (m->seq_len_tmp[seq] & SEEN) != 0;
        if ((uint32_t)pos > len || (seen && (uint32_t)pos != len))
            return inferd_fail(err, INFERD_E_RANGE,
                               "forward: token %d: position %d does not follow sequence "
                               "%d's length %u",
                               i, pos, seq, len);
        m->seq_len_tmp[seq] = ((uint32_t)pos + 1) | SEEN;
        if (b->logits && b->logits[i])
            m->out_rows[n_out++] = i;
    }
    *out_n_out = n_out;
    return 0;
}

int inferd_model_forward(inferd_model *m, inferd_pool *pool, const inferd_batch *b,
                         float *out_logits, inferd_error *err)
{
    const inferd_model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd;
    int32_t n_out = 0;
    int rc;

    if (inferd_pool_n_threads(pool) > MAX_THREADS)
        return inferd_fail(err, INFERD_E_RANGE, "forward: more than %d threads", MAX_THREADS);
    rc = check_batch(m, b, &n_out, err);
    if (rc < 0)
        return rc;
    const int32_t T = b->n_tokens;
    fwd_ctx c = {.m = m, .b = b, .n_tokens = T};

    /* Embeddings and rope angles. */
    const inferd_kernels *ek = inferd_kernels_get(m->tok_embd.type);
    for (int32_t t = 0; t < T; t++) {
        const uint8_t *row =
            (const uint8_t *)m->tok_embd.data + (size_t)b->tokens[t] * m->tok_embd.row_bytes;
        ek->to_float(row, m->x + t * E, E);
        if (m->arch->embd_scale) {
            const float es = sqrtf((float)E);
            for (int64_t i = 0; i < E; i++)
                m->x[t * E + i] *= es;
        }
        rope_angles(m, b->pos[t], m->rope_cs + (size_t)t * hp->n_rot);
    }

    const int8_t *pf = b->prefill;
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const layer *L = &m->layers[il];
        c.il = il;
        c.n_tokens = T;
        rmsnorm(pool, &c, m->x, m->xb, L->attn_norm, T, NULL);
        inferd_matmul_op qkv[3] = {mm_op(&L->wq, m->q), mm_op(&L->wk, m->k), mm_op(&L->wv, m->v)};
        matmul_ops(pool, m, qkv, 3, E, m->xb, T, pf);
        inferd_pool_run(pool, task_rope_store, &c);
        clear_v_padding(m, il, b);
        inferd_pool_run(pool, task_attention, &c);
        matmul(pool, m, &L->wo, m->att, T, m->xb, pf);
        inferd_pool_run(pool, task_residual, &c);

        int32_t n_ffn = T;
        const int8_t *ffn_pf = pf;
        if (il == hp->n_layer - 1) {
            /* Only the rows that want logits go on through the last FFN and
             * the output layer, in the GEMV order (as llama.cpp, which
             * computes them for its outputs alone). */
            for (int32_t o = 0; o < n_out; o++)
                if (m->out_rows[o] != o)
                    memcpy(m->x + o * E, m->x + (int64_t)m->out_rows[o] * E,
                           (size_t)E * sizeof(float));
            n_ffn = n_out;
            ffn_pf = NULL;
            c.n_tokens = n_out;
            if (n_out == 0)
                break;
        }
        rmsnorm(pool, &c, m->x, m->xb, L->ffn_norm, n_ffn, NULL);
        inferd_matmul_op gu[2] = {mm_op(&L->w_gate, m->hb), mm_op(&L->w_up, m->hb2)};
        matmul_ops(pool, m, gu, 2, E, m->xb, n_ffn, ffn_pf);
        inferd_pool_run(pool, task_ffn_act, &c);
        matmul(pool, m, &L->w_down, m->hb, n_ffn, m->xb, ffn_pf);
        inferd_pool_run(pool, task_residual, &c);
    }

    for (uint32_t s = 0; s < m->n_seq_max; s++)
        m->seq_len[s] = m->seq_len_tmp[s] & ~SEEN;
    if (n_out > 0) {
        rmsnorm(pool, &c, m->x, m->xb, m->output_norm, n_out, NULL);
        if (b->out_hidden)
            memcpy(b->out_hidden, m->xb, (size_t)n_out * (size_t)E * sizeof(float));
        matmul(pool, m, &m->output, m->xb, n_out, out_logits, NULL);
    }
    return 0;
}
