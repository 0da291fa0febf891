/* llama.cpp's quantization recipes (llama_tensor_get_type in llama.cpp
 * c392e5094's src/llama-quant.cpp, without an importance matrix) as a pure
 * function: the tensor's name, row length and layer in, its element type
 * out. No state: llama.cpp's running counters of attn_v and ffn_down
 * tensors are the layer index the caller passes. */
#include "quant_recipe.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "inferd/dtype.h"

/* Our plain types first (every matrix one type), then llama.cpp's mixes.
 * Plain K types are written with the file type of their _S mix, the
 * nearest llama_ftype. llama.cpp's Q8_0 mix gives every matrix Q8_0, so it
 * is the plain Q8_0. */
static const inferd__recipe recipes[] = {
    {.name = "F32", .ftype = INFERD__FTYPE_ALL_F32, .base_type = INFERD_DTYPE_F32, .uniform = true},
    {.name = "F16", .ftype = INFERD__FTYPE_F16, .base_type = INFERD_DTYPE_F16, .uniform = true},
    {.name = "BF16", .ftype = INFERD__FTYPE_BF16, .base_type = INFERD_DTYPE_BF16, .uniform = true},
    {.name = "Q8_0", .ftype = INFERD__FTYPE_Q8_0, .base_type = INFERD_DTYPE_Q8_0, .uniform = true},
    {.name = "Q4_0", .ftype = INFERD__FTYPE_Q4_0, .base_type = INFERD_DTYPE_Q4_0, .uniform = true},
    {.name = "Q4_1", .ftype = INFERD__FTYPE_Q4_1, .base_type = INFERD_DTYPE_Q4_1, .uniform = true},
    {.name = "Q5_0", .ftype = INFERD__FTYPE_Q5_0, .base_type = INFERD_DTYPE_Q5_0, .uniform = true},
    {.name = "Q5_1", .ftype = INFERD__FTYPE_Q5_1, .base_type = INFERD_DTYPE_Q5_1, .uniform = true},
    {.name = "Q3_K",
     .ftype = INFERD__FTYPE_Q3_K_S,
     .base_type = INFERD_DTYPE_Q3_K,
     .uniform = true},
    {.name = "Q4_K",
     .ftype = INFERD__FTYPE_Q4_K_S,
     .base_type = INFERD_DTYPE_Q4_K,
     .uniform = true},
    {.name = "Q5_K",
     .ftype = INFERD__FTYPE_Q5_K_S,
     .base_type = INFERD_DTYPE_Q5_K,
     .uniform = true},
    {.name = "Q2_K", .ftype = INFERD__FTYPE_Q2_K, .base_type = INFERD_DTYPE_Q2_K},
    {.name = "Q3_K_S", .ftype = INFERD__FTYPE_Q3_K_S, .base_type = INFERD_DTYPE_Q3_K},
    {.name = "Q3_K_M", .ftype = INFERD__FTYPE_Q3_K_M, .base_type = INFERD_DTYPE_Q3_K},
    {.name = "Q3_K_L", .ftype = INFERD__FTYPE_Q3_K_L, .base_type = INFERD_DTYPE_Q3_K},
    {.name = "Q4_K_S", .ftype = INFERD__FTYPE_Q4_K_S, .base_type = INFERD_DTYPE_Q4_K},
    {.name = "Q4_K_M", .ftype = INFERD__FTYPE_Q4_K_M, .base_type = INFERD_DTYPE_Q4_K},
    {.name = "Q5_K_S", .ftype = INFERD__FTYPE_Q5_K_S, .base_type = INFERD_DTYPE_Q5_K},
    {.name = "Q5_K_M", .ftype = INFERD__FTYPE_Q5_K_M, .base_type = INFERD_DTYPE_Q5_K},
    {.name = "Q6_K", .ftype = INFERD__FTYPE_Q6_K, .base_type = INFERD_DTYPE_Q6_K},
    {.name = "IQ4_NL", .ftype = INFERD__FTYPE_IQ4_NL, .base_type = INFERD__RECIPE_IQ4_NL},
    {.name = "IQ4_XS", .ftype = INFERD__FTYPE_IQ4_XS, .base_type = INFERD__RECIPE_IQ4_XS},
};

const inferd__recipe *inferd__recipe_find(const char *name)
{
    for (size_t i = 0; i < sizeof(recipes) / sizeof(recipes[0]); i++)
        if (strcasecmp(recipes[i].name, name) == 0)
            return &recipes[i];
    return NULL;
}

const inferd__recipe *inferd__recipe_at(uint32_t i)
{
    return i < sizeof(recipes) / sizeof(recipes[0]) ? &recipes[i] : NULL;
}

const char *inferd__recipe_type_name(uint32_t type)
{
    if (type == INFERD__RECIPE_IQ4_NL)
        return "IQ4_NL";
    if (type == INFERD__RECIPE_IQ4_XS)
        return "IQ4_XS";
    return inferd_dtype_name(type);
}

uint32_t inferd__recipe_block_size(uint32_t type)
{
    if (type == INFERD__RECIPE_IQ4_NL)
        return 32;
    if (type == INFERD__RECIPE_IQ4_XS)
        return 256;
    const inferd_dtype_info *t = inferd_dtype_get(type);
    return t ? t->block_size : 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static bool contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

/* llama.cpp's layers that get more bits in some mixes: the first and last
 * eighth of @p n, and every third layer in between. */
static bool use_more_bits(uint32_t layer, uint32_t n)
{
    return layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2;
}

/* The type llama.cpp's rules pick for a matrix under mix @p ft, before the
 * fallback for rows that do not fit it. */
static uint32_t rule_type(inferd__ftype ft, uint32_t base, const inferd__recipe_model *m,
                          const char *name, uint64_t ne0, uint32_t layer)
{
    const uint32_t n = m->n_layer;
    const bool q4_k_m = ft == INFERD__FTYPE_Q4_K_M, q5_k_m = ft == INFERD__FTYPE_Q5_K_M;
    const bool iq4 = ft == INFERD__FTYPE_IQ4_NL || ft == INFERD__FTYPE_IQ4_XS;

    /* The output matrix (token_embd when the model ties them): Q6_K, unless
     * the mix is Q8_0 or its rows do not fit the mix's own blocks. */
    if (strcmp(name, "output.weight") == 0 ||
        (!m->has_output && strcmp(name, "token_embd.weight") == 0)) {
        if (ne0 % inferd__recipe_block_size(base) != 0)
            return INFERD_DTYPE_Q8_0;
        return base == INFERD_DTYPE_Q8_0 ? base : INFERD_DTYPE_Q6_K;
    }
    /* Only the IQ1-IQ3 and TQ mixes change the token embeddings. */
    if (strcmp(name, "token_embd.weight") == 0)
        return base;

    if (contains(name, "attn_v.weight")) {
        uint32_t t = base;
        if (ft == INFERD__FTYPE_Q2_K)
            t = m->n_gqa >= 4 ? INFERD_DTYPE_Q4_K : INFERD_DTYPE_Q3_K;
        else if (ft == INFERD__FTYPE_Q3_K_M)
            t = layer < 2 ? INFERD_DTYPE_Q5_K : INFERD_DTYPE_Q4_K;
        else if (ft == INFERD__FTYPE_Q3_K_L)
            t = INFERD_DTYPE_Q5_K;
        else if (iq4 && m->n_gqa >= 4)
            t = INFERD_DTYPE_Q5_K;
        else if ((q4_k_m || q5_k_m) && use_more_bits(layer, n))
            t = INFERD_DTYPE_Q6_K;
        else if (ft == INFERD__FTYPE_Q4_K_S && layer < 4)
            t = INFERD_DTYPE_Q5_K;
        /* 70B shares each V head among 8 query heads: the matrix is small,
         * more bits cost little. */
        if (m->is_70b && (t == INFERD_DTYPE_Q3_K || t == INFERD_DTYPE_Q4_K))
            t = INFERD_DTYPE_Q5_K;
        if (m->n_expert == 8)
            t = INFERD_DTYPE_Q8_0;
        return t;
    }
    if (contains(name, "attn_k.weight"))
        return m->n_expert == 8 ? INFERD_DTYPE_Q8_0 : base;
    if (contains(name, "attn_q.weight"))
        return base;
    if (contains(name, "ffn_down")) {
        if (ft == INFERD__FTYPE_Q2_K)
            return INFERD_DTYPE_Q3_K;
        if (ft == INFERD__FTYPE_Q3_K_M)
            return layer < n / 16 ? INFERD_DTYPE_Q5_K : INFERD_DTYPE_Q4_K;
        if (ft == INFERD__FTYPE_Q3_K_L)
            return INFERD_DTYPE_Q5_K;
        if (q4_k_m)
            return use_more_bits(layer, n) ? INFERD_DTYPE_Q6_K : base;
        if (iq4 && layer < n / 8)
            return INFERD_DTYPE_Q5_K;
        if (q5_k_m && use_more_bits(layer, n))
            return INFERD_DTYPE_Q6_K;
        if (ft == INFERD__FTYPE_Q4_K_S && layer < n / 8)
            return INFERD_DTYPE_Q5_K;
        return base;
    }
    if (contains(name, "attn_output.weight")) {
        if (m->n_expert == 8) {
            bool more = ft == INFERD__FTYPE_Q2_K || ft == INFERD__FTYPE_Q3_K_S ||
                        ft == INFERD__FTYPE_Q3_K_M || ft == INFERD__FTYPE_Q4_K_S || q4_k_m || iq4;
            return more ? INFERD_DTYPE_Q5_K : base;
        }
        if (ft == INFERD__FTYPE_Q2_K)
            return INFERD_DTYPE_Q3_K;
        if (ft == INFERD__FTYPE_Q3_K_M)
            return INFERD_DTYPE_Q4_K;
        if (ft == INFERD__FTYPE_Q3_K_L)
            return INFERD_DTYPE_Q5_K;
        return base;
    }
    if (contains(name, "attn_qkv.weight")) {
        if (ft == INFERD__FTYPE_Q3_K_M || ft == INFERD__FTYPE_Q3_K_L)
            return INFERD_DTYPE_Q4_K;
        if (q4_k_m)
            return INFERD_DTYPE_Q5_K;
        if (q5_k_m)
            return INFERD_DTYPE_Q6_K;
        return base;
    }
    /* ffn_gate and ffn_up change only in the IQ3_XS mix. */
    return base;
}

int inferd__recipe_type(const inferd__recipe *r, const inferd__recipe_model *m, const char *name,
                        uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint32_t layer,
                        uint32_t *out_type, inferd_error *err)
{
    /* llama-quantize touches only 2-D (or 3-D) tensors named *weight that
     * are not norms; make-model writes everything else as F32. */
    if (n_dims < 2 || !ends_with(name, "weight") || contains(name, "_norm.weight")) {
        *out_type = INFERD_DTYPE_F32;
        return 0;
    }
    uint32_t t = r->base_type;
    uint32_t block = inferd__recipe_block_size(t);
    if (r->uniform || block == 1) {
        if (ne0 % block != 0)
            return inferd_fail(err, INFERD_E_INVALID,
                               "tensor '%s' (%llu x %llu): rows of %llu are not whole %s blocks "
                               "of %u",
                               name, (unsigned long long)ne0, (unsigned long long)ne1,
                               (unsigned long long)ne0, inferd__recipe_type_name(t), block);
        *out_type = t;
        return 0;
    }

    t = rule_type(r->ftype, t, m, name, ne0, layer);
    if (ne0 % inferd__recipe_block_size(t) != 0) {
        /* llama.cpp's fallback: a type of smaller blocks and about as many
         * bits, F16 when even that does not fit. */
        uint32_t wanted = t;
        switch (t) {
        case INFERD_DTYPE_Q2_K:
        case INFERD_DTYPE_Q3_K:
        case INFERD__RECIPE_IQ4_XS: t = INFERD__RECIPE_IQ4_NL; break;
        case INFERD_DTYPE_Q4_K: t = INFERD_DTYPE_Q5_0; break;
        case INFERD_DTYPE_Q5_K: t = INFERD_DTYPE_Q5_1; break;
        case INFERD_DTYPE_Q6_K: t = INFERD_DTYPE_Q8_0; break;
        default:
            return inferd_fail(err, INFERD_E_INVALID,
                               "tensor '%s' (%llu x %llu): rows of %llu are not whole %s blocks "
                               "of %u and %s has no fallback for them",
                               name, (unsigned long long)ne0, (unsigned long long)ne1,
                               (unsigned long long)ne0, inferd__recipe_type_name(wanted),
                               inferd__recipe_block_size(wanted), r->name);
        }
        if (ne0 % inferd__recipe_block_size(t) != 0)
            t = INFERD_DTYPE_F16;
    }
    *out_type = t;
    return 0;
}
