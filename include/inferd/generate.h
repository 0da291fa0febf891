/* A single-sequence generation loop over the model: prompt prefill in
 * chunks, sampling, end-of-generation and stop strings, streamed text that
 * never splits a UTF-8 character. The CLI and the tests use it; the
 * scheduler (continuous batching) drives the model itself. */
#ifndef INFERD_GENERATE_H
#define INFERD_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "inferd/model.h"
#include "inferd/sampler.h"

#define INFERD_GEN_MAX_STOP 16

typedef enum inferd_finish {
    INFERD_FINISH_LENGTH = 0, /* n_predict reached or the context is full */
    INFERD_FINISH_EOG = 1,    /* end-of-generation token */
    INFERD_FINISH_STOP = 2,   /* a stop string */
} inferd_finish;

typedef struct inferd_gen_params {
    inferd_sampler_params sampling;
    int32_t n_predict; /* most tokens to generate; < 0: until the context is full */
    int32_t n_batch;   /* prompt tokens per forward call (chunking); <= 0: the model's batch max */
    const char *stop[INFERD_GEN_MAX_STOP];
    int n_stop;
    int32_t seq; /* KV slot to use (reset first) */
} inferd_gen_params;

inferd_gen_params inferd_gen_params_default(void);

/** Called with text that is safe to show (whole UTF-8 characters, never
 * part of a stop string). Return nonzero to stop early. */
typedef int (*inferd_gen_text_fn)(void *ctx, const char *text, size_t len);

typedef struct inferd_gen_result {
    int32_t *ids; /* generated ids (owned; inferd_gen_result_fini) */
    size_t n_ids;
    char *text; /* generated text, NUL-terminated (owned) */
    size_t text_len;
    uint64_t seed; /* the seed used (chosen when none given) */
    inferd_finish finish;
    double prompt_ms, gen_ms; /* wall time of prefill and of generation */
} inferd_gen_result;

/**
 * Generate from @p prompt (ids, borrowed; BOS included by the caller as
 * wanted). The prompt must fit the context.
 * @return 0; INFERD_E_RANGE (prompt empty or longer than the context, bad
 * sampling parameters: message names them), INFERD_E_NOMEM.
 * Thread: one caller per model at a time.
 */
int inferd_generate(inferd_model *m, inferd_pool *pool, const int32_t *prompt, size_t n_prompt,
                    const inferd_gen_params *p, inferd_gen_text_fn on_text, void *ctx,
                    inferd_gen_result *out_result, inferd_error *err);
void inferd_gen_result_fini(inferd_gen_result *r);

#endif
