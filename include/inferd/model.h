/* llama-family model: hyper-parameters and weights from a GGUF file, a KV
 * cache with one slot per sequence, and a forward pass over a batch of
 * tokens from several sequences at their own positions.
 *
 * Weights stay in the file's mmap (no copy), unless no_mmap reads them
 * into memory; a mapped file that changes on disk is detected
 * (inferd_model_check_file). Every buffer the forward pass
 * needs is sized at load from n_batch_max, n_ctx and n_seq_max, so nothing
 * is allocated per token.
 *
 * Numerics follow llama.cpp's CPU backend (non-flash attention): each
 * matmul converts activations to the weight type's dot type; the KV cache
 * is F16; Q is rounded to F16 for Q.K, softmax sums in double, and the
 * attention weights are rounded to F16 for the product with V.
 *
 * Determinism: work is split by output rows, heads and tokens, never inside
 * one dot product, so results do not depend on the thread count, on which
 * other sequences share the batch, or on how a prompt is chunked.
 */
#ifndef INFERD_MODEL_H
#define INFERD_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "inferd/chat.h"
#include "inferd/error.h"
#include "inferd/gguf.h"
#include "inferd/pool.h"
#include "inferd/tokenizer.h"

typedef struct inferd_model inferd_model;

typedef struct inferd_model_hparams {
    char arch[32]; /* general.architecture */
    uint32_t n_vocab;
    uint32_t n_embd; /* model width */
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim; /* n_embd / n_head unless key_length says */
    uint32_t n_ff;
    uint32_t n_ctx_train;
    uint32_t n_rot; /* rotary dims per head */
    float rms_eps;
    float rope_freq_base;
    float rope_freq_scale; /* 1 / linear scaling factor */
    uint32_t n_swa;        /* sliding attention window in tokens, 0: none (phi3) */
    bool tied_output;      /* output projection shares token_embd */
} inferd_model_hparams;

/** The context a model gets when inferd_model_params.n_ctx is 0: its
 * training context, capped here so that files trained on 128K tokens load
 * with the defaults (as llama.cpp and Ollama default to a few thousand). */
#define INFERD_MODEL_N_CTX_DEFAULT_MAX 8192u

typedef struct inferd_model_params {
    uint32_t n_ctx;       /* tokens per sequence; 0: the training context,
                              * at most INFERD_MODEL_N_CTX_DEFAULT_MAX */
    uint32_t n_seq_max;   /* KV slots (concurrent sequences), >= 1 */
    uint32_t n_batch_max; /* most tokens in one forward call, >= 1 */
    bool no_mmap;         /* read the weights into memory instead of
                           * mapping the file */
} inferd_model_params;

/** Defaults: n_ctx 0 (training context, capped), 1 sequence, batch 512. */
inferd_model_params inferd_model_params_default(void);

/**
 * Load a model. @p path borrowed. Validates architecture, hyper-parameters,
 * every tensor's presence, type and shape, and the vocabulary.
 * @return 0; INFERD_E_IO, INFERD_E_FORMAT (message names the key or tensor),
 * INFERD_E_UNSUPPORTED (architecture, tensor type, rope scaling),
 * INFERD_E_RANGE (params), INFERD_E_NOMEM.
 * Thread: any. Lifetime: until inferd_model_destroy.
 */
int inferd_model_load(const char *path, const inferd_model_params *params, inferd_model **out_model,
                      inferd_error *err);
void inferd_model_destroy(inferd_model *m);

/**
 * Can the weights still be trusted? They cannot once the mapped file was
 * truncated or written in place since the load (see inferd_gguf_check_file;
 * one fstat and an atomic load). A model loaded with no_mmap always can.
 * @return 0; INFERD_E_IO ("model file 'PATH' changed on disk while loaded
 * (...); reload needed"). Thread: any.
 */
int inferd_model_check_file(const inferd_model *m, inferd_error *err);

/** Does the model's path now name other contents than were loaded (a new
 * file renamed over it, or the file rewritten)? A reload would read them.
 * One stat; see inferd_gguf_path_changed. Thread: any. */
bool inferd_model_path_changed(const inferd_model *m, inferd_file_id *out_now);

/**
 * The bytes inferd_model_load(@p path, @p params) would use, without
 * allocating them: opens the file, reads the hyper-parameters and checks
 * the tensors as load does, and sizes the buffers with the same function.
 * @param out_weight_bytes  equals inferd_model_weight_bytes after the load.
 * @param out_state_bytes   equals inferd_model_state_bytes after the load
 *                          (KV cache + work buffers).
 * @return 0; the errors of inferd_model_load (except the state allocation).
 * Thread: any.
 */
int inferd_model_estimate(const char *path, const inferd_model_params *params,
                          uint64_t *out_weight_bytes, uint64_t *out_state_bytes, inferd_error *err);

const inferd_model_hparams *inferd_model_get_hparams(const inferd_model *m);
const inferd_vocab *inferd_model_get_vocab(const inferd_model *m);
const inferd_gguf *inferd_model_get_gguf(const inferd_model *m);
uint32_t inferd_model_n_ctx(const inferd_model *m);
/** The chat template named by the file's tokenizer.chat_template, detected
 * once at load. @return 0 and *out; INFERD_E_NOT_FOUND (the file has none)
 * or INFERD_E_UNSUPPORTED (not one inferd_chat_template_detect knows), with
 * *out = INFERD_CHAT_CHATML. Thread: any. */
int inferd_model_chat_template(const inferd_model *m, inferd_chat_template *out);
uint32_t inferd_model_n_seq_max(const inferd_model *m);
uint32_t inferd_model_n_batch_max(const inferd_model *m);
/** Bytes of weights (mapped) and of the KV cache + work buffers (allocated). */
uint64_t inferd_model_weight_bytes(const inferd_model *m);
/** Weight bytes one decode step reads: all of them but the token embedding
 * table, of which it reads one row (unless the output layer shares it). */
uint64_t inferd_model_decode_bytes(const inferd_model *m);
uint64_t inferd_model_state_bytes(const inferd_model *m);

/* One forward call: n_tokens tokens, each of sequence seq[i] at pos[i]. */
typedef struct inferd_batch {
    int32_t n_tokens;
    const int32_t *tokens; /* (n_tokens) token ids */
    const int32_t *pos;    /* (n_tokens) position in its sequence */
    const int32_t *seq;    /* (n_tokens) KV slot, < n_seq_max */
    const int8_t *logits;  /* (n_tokens) nonzero: compute this token's logits */
    const int8_t *prefill; /* (n_tokens) nonzero: a prompt token, computed in the
                              * GEMM reduction order (generated tokens use the
                              * GEMV order, as llama.cpp); NULL: all generated */
    float *out_hidden;     /* optional (n_out, n_embd): the final normalized hidden
                              * state (the output norm's result, which the output
                              * layer multiplies; llama.cpp's embeddings) of each
                              * token whose logits flag is set, in batch order */
} inferd_batch;

/**
 * Run the model over @p batch. Each token's K/V are written to its slot at
 * its position, and it attends to positions 0..pos of its sequence (earlier
 * tokens of the same batch included). A token's position may not be past
 * its sequence's current length (no gaps); writing at a position below the
 * length rewinds the sequence to it.
 * @param out_logits (n_out, n_vocab): one row per token whose logits flag is
 *        set, in batch order.
 * @return 0; INFERD_E_RANGE (message names the token index and the bad
 * id/position/sequence/count). Nothing is written on error.
 * Thread: one caller at a time per model; uses @p pool (may be NULL).
 */
int inferd_model_forward(inferd_model *m, inferd_pool *pool, const inferd_batch *batch,
                         float *out_logits, inferd_error *err);

/** Forget sequence @p seq (its length becomes 0). Thread: as forward. */
void inferd_model_seq_reset(inferd_model *m, int32_t seq);
/** Current length (tokens in the cache) of sequence @p seq. */
uint32_t inferd_model_seq_len(const inferd_model *m, int32_t seq);

#endif
