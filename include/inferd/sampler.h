/* Token sampler and stop-string matcher, one of each per request.
 *
 * The sampler turns a row of logits into a token id with llama.cpp's sampler
 * chain for these samplers, in this order: repetition penalties -> top-k ->
 * top-p -> min-p -> temperature -> draw.  Every buffer is allocated at
 * creation; sampling allocates nothing.  The draw uses the sampler's own
 * xoshiro256** generator (seeded through splitmix64), so the same seed and
 * the same sequence of logits always give the same tokens.
 *
 * The stopper watches the generated text for stop strings and holds back only
 * the bytes that may still turn out to start one.
 */
#ifndef INFERD_SAMPLER_H
#define INFERD_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"

/** Largest vocabulary a sampler accepts. */
#define INFERD_SAMPLER_VOCAB_MAX (1 << 24)
/** Largest penalty window (repeat_last_n, or n_ctx when it is -1). */
#define INFERD_SAMPLER_LAST_N_MAX (1 << 20)

/** Largest seed drawn when none is given: 2^53 - 1, exact in a double. */
#define INFERD_SEED_MAX ((UINT64_C(1) << 53) - 1)

typedef struct inferd_sampler_params {
    float temperature;       /* >= 0; <= 0 (i.e. 0) means greedy.
                                   Default 0.8 */
    int32_t top_k;           /* keep the k most likely; <= 0 off. Default 40 */
    float top_p;             /* [0,1]; keep the smallest most-likely set of
                                   mass >= top_p; 1 off. Default 0.95 */
    float min_p;             /* [0,1]; keep tokens with p >= min_p * p_max;
                                   0 off. Default 0.05 */
    float repeat_penalty;    /* > 0; 1 off. Default 1 */
    int32_t repeat_last_n;   /* penalty window in accepted tokens; 0 off,
                                   -1 = n_ctx. Default 64 */
    float frequency_penalty; /* subtracted once per occurrence. Default 0 */
    float presence_penalty;  /* subtracted once if present. Default 0 */
    int32_t n_ctx;           /* context size, used only when repeat_last_n
                                   is -1. Default 4096 */
    bool has_seed;           /* false: a random seed is drawn at creation */
    uint64_t seed;           /* used when has_seed */
} inferd_sampler_params;

typedef struct inferd_sampler inferd_sampler;

/** llama.cpp's defaults (common_params_sampling): temperature 0.8, top_k 40,
 * top_p 0.95, min_p 0.05, repeat_penalty 1, repeat_last_n 64, frequency and
 * presence penalties 0, n_ctx 4096, no seed. Thread: any. */
inferd_sampler_params inferd_sampler_params_default(void);

/**
 * Create a sampler for a vocabulary of @p n_vocab tokens.
 *
 * All buffers (candidate arrays of n_vocab entries; penalty history and
 * per-token counts when a penalty is active) are allocated here.  Without a
 * seed one is drawn from getrandom() (falling back to the clock if that
 * fails) and can be read back with inferd_sampler_seed().
 *
 * @param p      copied; validated, and the error message names the field.
 * @return 0; INFERD_E_INVALID (NULL p or out_s), INFERD_E_RANGE (temperature
 * < 0 or not finite, top_p or min_p outside [0,1], repeat_penalty <= 0 or not
 * finite, frequency/presence penalty not finite, repeat_last_n < -1 or above
 * INFERD_SAMPLER_LAST_N_MAX, n_ctx outside [1, INFERD_SAMPLER_LAST_N_MAX]
 * when repeat_last_n is -1, n_vocab outside [1, INFERD_SAMPLER_VOCAB_MAX]),
 * INFERD_E_NOMEM.
 * Thread: any.  Lifetime: until inferd_sampler_destroy().
 */
int inferd_sampler_create(const inferd_sampler_params *p, int32_t n_vocab, inferd_sampler **out_s,
                          inferd_error *err);

/** Check @p p as inferd_sampler_create does (same codes and messages),
 * without allocating. Thread: any. */
int inferd_sampler_params_validate(const inferd_sampler_params *p, int32_t n_vocab,
                                   inferd_error *err);

/** Free a sampler. Accepts NULL. Thread: the owner. */
void inferd_sampler_destroy(inferd_sampler *s);

/** Forget the penalty history and restart the generator from the same seed
 * (the one drawn at creation when none was given), so a reset sampler
 * repeats its earlier draws. Thread: the owner. */
void inferd_sampler_reset(inferd_sampler *s);

/**
 * Add @p token to the penalty history; only the last repeat_last_n accepted
 * tokens count.  As llama.cpp's server and CLI do, the generation loop
 * accepts every prompt token (in order) before the first sample, then each
 * generated token.  Sampling never accepts by itself.  Ids outside
 * [0, n_vocab) are ignored.  O(1).  Thread: the owner.
 */
void inferd_sampler_accept(inferd_sampler *s, int32_t token);

/**
 * Choose the next token from @p logits (n_vocab floats, not modified; NaN is
 * read as -inf).
 *
 * Penalties first: for each token seen c > 0 times in the window, a logit > 0
 * is divided by repeat_penalty, otherwise multiplied, then c *
 * frequency_penalty + presence_penalty is subtracted.  With temperature <= 0
 * the result is the argmax (lowest id on ties), found in one pass, and the
 * generator is not used.  Otherwise top-k, top-p and min-p filter the
 * candidates (on the penalized logits, before temperature; each keeps at
 * least one), the survivors are divided by temperature and softmaxed, and one
 * uniform double in [0,1) picks a token by walking the cumulative
 * distribution in probability-descending order (ties: lower id first).
 * Exactly one number is drawn from the generator per non-greedy call.
 * Ties in every ordering are broken by lower id, so results do not depend on
 * the platform's sort.
 *
 * Cost: greedy and top-k read the logits once (blocks that cannot beat the
 * current best are skipped after a packed max; top-k keeps a bounded heap),
 * plus a copy when a penalty is active.  With top-k off, top-p, min-p and
 * the draw work on the whole vocabulary by bucketing log-weights: a few
 * passes, one expf per token, and only the bucket holding the cut is
 * sorted.  Nothing is allocated.
 *
 * @return a token id in [0, n_vocab).  Thread: the owner.
 */
int32_t inferd_sampler_sample(inferd_sampler *s, const float *logits);

/** The seed in use: the one given, or the one drawn at creation.  Passing it
 * back with has_seed reproduces the sampler's draws. Thread: any. */
uint64_t inferd_sampler_seed(const inferd_sampler *s);

/**
 * Log-probabilities of the @p n most likely tokens under a full-vocabulary
 * log-softmax of the raw @p logits (max subtracted, sum of exp in double; NaN
 * read as -inf), most likely first, ties by lower id.  No allocation.
 *
 * @param out_ids, out_logprobs  room for n entries each.
 * @return the number written, min(n, n_vocab); INFERD_E_INVALID for NULL
 * pointers, n < 0 or n_vocab <= 0.  Thread: any.
 */
int inferd_logprobs_topn(const float *logits, int32_t n_vocab, int n, int32_t *out_ids,
                         float *out_logprobs);

/** Log-probability of token @p id under the same log-softmax as
 * inferd_logprobs_topn (bit-identical to its value for that id).
 * @return the value; NaN for NULL logits, n_vocab <= 0 or id out of range.
 * Thread: any. */
float inferd_logprob_of(const float *logits, int32_t n_vocab, int32_t id);

/* ------------------------------------------------------------------------ */

/** At most this many stop strings per request. */
#define INFERD_STOP_N_MAX 16
/** Each stop string is at most this many bytes. */
#define INFERD_STOP_LEN_MAX 256

typedef struct inferd_stopper inferd_stopper;

/**
 * Create a stop-string matcher.
 *
 * Matching is on bytes, one stop string per KMP automaton, so it costs O(1)
 * per byte and stop string whatever the chunking.  Text stops at the first
 * byte that completes any stop string; if several complete there, the
 * longest one (the earliest start) wins.  Empty strings are ignored (they
 * would stop before the first byte).  If the stop strings are valid UTF-8 and
 * each pushed chunk ends on a character boundary, every emitted chunk does
 * too.
 *
 * @param stops    n_stops NUL-terminated strings, copied; may be NULL when
 *                 n_stops is 0 (then everything passes through).
 * @return 0; INFERD_E_INVALID (NULL out_st, NULL stops with n_stops > 0, a
 * NULL string), INFERD_E_RANGE (more than INFERD_STOP_N_MAX strings, one
 * longer than INFERD_STOP_LEN_MAX bytes), INFERD_E_NOMEM.
 * Thread: any.  Lifetime: until inferd_stopper_destroy().
 */
int inferd_stopper_create(const char *const *stops, size_t n_stops, inferd_stopper **out_st,
                          inferd_error *err);

/** Free a stopper. Accepts NULL. Thread: the owner. */
void inferd_stopper_destroy(inferd_stopper *st);

/** Drop held text and the stopped state, for a new generation. */
void inferd_stopper_reset(inferd_stopper *st);

/**
 * Feed @p len bytes of generated text.  Writes to @p out the bytes that can
 * no longer be part of a stop string (earlier held bytes first) and returns
 * their count; keeps the rest, at most the longest stop string's length - 1
 * bytes.  When a stop string completes, the text before it is written, the
 * stop string and everything after it are dropped, and *out_stopped is set;
 * later pushes write nothing and keep *out_stopped true.
 *
 * @param out          room for @p cap bytes; cap >= len + INFERD_STOP_LEN_MAX
 *                     always suffices (the exact need is len + the bytes
 *                     held, see inferd_stopper_held()); a smaller cap is a
 *                     programmer error (asserted; in release builds the
 *                     excess is dropped).
 * @param out_stopped  always written.
 * Thread: the owner.
 */
size_t inferd_stopper_push(inferd_stopper *st, const char *text, size_t len, char *out, size_t cap,
                           bool *out_stopped);

/** End of generation: write the held bytes (none after a stop) to @p out
 * (cap >= inferd_stopper_held(); INFERD_STOP_LEN_MAX always suffices) and
 * return their count.  The stopper is then empty. Thread: the owner. */
size_t inferd_stopper_flush(inferd_stopper *st, char *out, size_t cap);

/** Bytes currently held back. Thread: the owner. */
size_t inferd_stopper_held(const inferd_stopper *st);

/** Index (in the array given at creation) of the stop string that stopped
 * the text, or -1 while none has. Thread: the owner. */
int inferd_stopper_matched(const inferd_stopper *st);

#endif
