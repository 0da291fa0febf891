/* llama.cpp's quantization recipes: which element type each tensor of a
 * model gets for a file type such as Q4_K_M, as llama_tensor_get_type in
 * llama.cpp c392e5094's src/llama-quant.cpp decides it without an importance
 * matrix. A pure function of the tensor's name, row length and layer and of
 * a few facts about the model, so that `inferd make-model --dry-run` can
 * print it and tests can hold it against what llama-quantize chose.
 *
 * Left out, because make-model offers neither: the IQ1/IQ2/IQ3/TQ file types
 * and Falcon's rules. Thread: any (no state). */
#ifndef INFERD_CLI_QUANT_RECIPE_H
#define INFERD_CLI_QUANT_RECIPE_H

#include <stdbool.h>
#include <stdint.h>

#include "inferd/error.h"

/* Element types the recipes name that inferd_dtype does not list yet, in
 * GGUF numbering (ggml_type). */
#define INFERD__RECIPE_IQ4_NL 20u /* blocks of 32 elements, 18 bytes */
#define INFERD__RECIPE_IQ4_XS 23u /* blocks of 256 elements, 136 bytes */

/* general.file_type, numbered as llama.h's enum llama_ftype. */
typedef enum inferd__ftype {
    INFERD__FTYPE_ALL_F32 = 0,
    INFERD__FTYPE_F16 = 1,
    INFERD__FTYPE_Q4_0 = 2,
    INFERD__FTYPE_Q4_1 = 3,
    INFERD__FTYPE_Q8_0 = 7,
    INFERD__FTYPE_Q5_0 = 8,
    INFERD__FTYPE_Q5_1 = 9,
    INFERD__FTYPE_Q2_K = 10,
    INFERD__FTYPE_Q3_K_S = 11,
    INFERD__FTYPE_Q3_K_M = 12,
    INFERD__FTYPE_Q3_K_L = 13,
    INFERD__FTYPE_Q4_K_S = 14,
    INFERD__FTYPE_Q4_K_M = 15,
    INFERD__FTYPE_Q5_K_S = 16,
    INFERD__FTYPE_Q5_K_M = 17,
    INFERD__FTYPE_Q6_K = 18,
    INFERD__FTYPE_IQ4_NL = 25,
    INFERD__FTYPE_IQ4_XS = 30,
    INFERD__FTYPE_BF16 = 32,
} inferd__ftype;

/* One value of `make-model --type`. */
typedef struct inferd__recipe {
    const char *name;    /* as --type spells it: "Q4_K_M", "Q4_0" */
    inferd__ftype ftype; /* written as general.file_type */
    uint32_t base_type;  /* type of a matrix no rule singles out */
    /* Every matrix is base_type and no rule applies: our plain types, and
     * any recipe under `--pure` (llama-quantize --pure). */
    bool uniform;
} inferd__recipe;

/* What the rules need to know about the model (llama.cpp's hparams). */
typedef struct inferd__recipe_model {
    uint32_t n_layer;  /* blocks; also the count of attn_v (or attn_qkv)
                              and of ffn_down tensors */
    uint32_t n_gqa;    /* n_head / n_head_kv */
    uint32_t n_expert; /* 0 or 1 for dense models */
    bool is_70b;       /* llama.cpp's model type 70B (llama with 80
                              layers and GQA, qwen2 with 80 layers) */
    bool has_output;   /* an output.weight exists; else token_embd is
                              the output and takes the output's rules */
} inferd__recipe_model;

/** The --type value @p name (case-insensitive), or NULL. */
const inferd__recipe *inferd__recipe_find(const char *name);
/** The @p i-th --type value (in --help order), NULL past the end. */
const inferd__recipe *inferd__recipe_at(uint32_t i);
/** Name of an element type, IQ4_NL and IQ4_XS included ("unknown" if
 * none). */
const char *inferd__recipe_type_name(uint32_t type);
/** Elements per block of @p type, IQ4_NL and IQ4_XS included; 0 if
 * unknown. */
uint32_t inferd__recipe_block_size(uint32_t type);

/**
 * The element type of tensor @p name in a model quantized with recipe @p r.
 *
 * Tensors llama-quantize leaves as they are (1-D ones: norms, biases,
 * rope_freqs; and any *_norm.weight) are F32: make-model writes them so.
 * Under a uniform recipe every other tensor is base_type. Otherwise
 * llama.cpp's rules choose, then its fallback for rows that are not a whole
 * number of the chosen type's blocks (Q2_K, Q3_K, IQ4_XS -> IQ4_NL;
 * Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0; then F16 if that does not fit
 * either).
 *
 * @param r      the recipe (borrowed).
 * @param m      the model (borrowed).
 * @param name   e.g. "blk.3.ffn_down.weight" (borrowed).
 * @param n_dims 1 or 2.
 * @param ne0    row length; @p ne1 number of rows (1 for 1-D), for messages.
 * @param layer  where llama.cpp counts this tensor among its kind (attn_v,
 *               ffn_down...): tensors are visited in layer order, one of
 *               each kind per layer, so this is the block index; 0 outside
 *               blocks.
 * @return 0 and *out_type; INFERD_E_INVALID when no type of the recipe can
 * hold rows of @p ne0 elements (message names the tensor; llama-quantize
 * refuses such a tensor too).
 */
int inferd__recipe_type(const inferd__recipe *r, const inferd__recipe_model *m, const char *name,
                        uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint32_t layer,
                        uint32_t *out_type, inferd_error *err);

#endif
