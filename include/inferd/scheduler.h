/* Continuous-batching scheduler: one per loaded model, the only code that
 * runs that model.
 *
 * A scheduler owns a model (loaded on its own thread), a compute pool, a
 * bounded request queue and n_slots slots (one KV sequence each). Its thread
 * loops: admit queued requests into free slots (high priority first, FIFO
 * within a priority), build one batch holding one decode token from every
 * generating slot and a bounded prefill chunk from slots still reading their
 * prompt, run one forward pass, sample, and push events to each request's
 * own event queue. A request that ends frees its slot for the next step.
 *
 * Requests: inferd_sched_submit copies what it needs (prompt, stop strings),
 * validates, queues and returns at once with a request object. The caller
 * reads events with inferd_request_next (blocking with a timeout, or polled
 * after an on_event wake-up), may cancel from any thread, and releases the
 * request when done with it. Every request ends with exactly one terminal
 * event: DONE or ERROR.
 *
 * States: IDLE (created) -> LOADING (the thread loads the model) -> READY
 * -> DRAINING (inferd_sched_drain: no new requests; the queued and running
 * ones are served until the grace period ends, then failed) -> STOPPED. A
 * failed load goes from LOADING to STOPPED; the queued requests get the
 * load error.
 *
 * Model file: after each forward pass the scheduler checks that the
 * model's file did not change under its mapping (inferd_model_check_file).
 * If it did, the step's results are dropped, every running and queued
 * request ends with that INFERD_E_IO error, and so does every later
 * submission: the scheduler's owner must reload the model.
 *
 * Determinism: a request's tokens depend only on (model, prompt, sampling
 * parameters, seed, max tokens, stop): prompt tokens are computed in the
 * engine's prefill order however they are chunked, generated tokens in its
 * decode order whatever shares the batch, and each request has its own
 * sampler and RNG. They equal inferd_generate's for the same input.
 *
 * Threads: every function may be called from any thread unless it says
 * otherwise. See docs/runtime.md.
 */
#ifndef INFERD_SCHEDULER_H
#define INFERD_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/generate.h"
#include "inferd/model.h"
#include "inferd/sampler.h"

typedef struct inferd_sched inferd_sched;
typedef struct inferd_request inferd_request;

typedef enum inferd_sched_state {
    INFERD_SCHED_IDLE = 0,
    INFERD_SCHED_LOADING,
    INFERD_SCHED_READY,
    INFERD_SCHED_DRAINING,
    INFERD_SCHED_STOPPED,
} inferd_sched_state;

/** "idle", "loading", "ready", "draining", "stopped". */
const char *inferd_sched_state_name(inferd_sched_state s);

typedef enum inferd_priority {
    INFERD_PRIORITY_HIGH = 0,
    INFERD_PRIORITY_NORMAL = 1,
    INFERD_PRIORITY_LOW = 2,
} inferd_priority;
#define INFERD_PRIORITY_COUNT 3

/** "high", "normal", "low". */
const char *inferd_priority_name(inferd_priority p);
/** Parse "high"/"normal"/"low" into *out_p. @return 0 or INFERD_E_INVALID. */
int inferd_priority_parse(const char *s, inferd_priority *out_p);

#define INFERD_SCHED_SLOTS_MAX 256
#define INFERD_TOP_LOGPROBS_MAX 20
#define INFERD_SCHED_QUEUE_MAX 65536

typedef struct inferd_sched_opts {
    inferd_model_params model;  /* n_ctx is used as given; n_seq_max and
                                    * n_batch_max are derived (see
                                    * inferd_sched_model_params) */
    uint32_t n_slots;           /* concurrent sequences, 1..256; default 4 */
    uint32_t n_queue_max;       /* waiting requests, 1..65536; default 64 */
    uint32_t n_prefill_chunk;   /* prompt tokens per step over all slots,
                                    * 1..65536; default 128 */
    uint32_t n_threads;         /* compute threads; 0: one per CPU */
    int64_t default_timeout_ms; /* deadline of requests that give none;
                                    * <= 0: none. Default 600000 (10 min) */
} inferd_sched_opts;

/** Defaults as documented on each field. */
inferd_sched_opts inferd_sched_opts_default(void);

/** The model parameters a scheduler with @p opts loads with: opts->model with
 * n_seq_max = n_slots and n_batch_max = n_slots + n_prefill_chunk. */
inferd_model_params inferd_sched_model_params(const inferd_sched_opts *opts);

/**
 * Create a scheduler for the model at @p path (copied) and start its thread,
 * which loads the model (state LOADING) and then serves (READY). Requests
 * may be submitted at once; they wait in the queue for the load.
 * @return 0; INFERD_E_RANGE (an option out of range: the message names it),
 * INFERD_E_INVALID (path), INFERD_E_NOMEM, INFERD_E_INTERNAL (thread).
 * The load's own errors come from inferd_sched_wait_ready.
 */
int inferd_sched_create(const char *path, const inferd_sched_opts *opts, inferd_sched **out_sched,
                        inferd_error *err);

/**
 * Wait until the model is loaded (READY) or the load failed.
 * @param timeout_ms  < 0: no limit.
 * @return 0 when the scheduler is READY (or was: DRAINING and STOPPED after a
 * successful load also return 0); the load's error (code and message);
 * INFERD_E_TIMEOUT when still loading after timeout_ms.
 */
int inferd_sched_wait_ready(inferd_sched *s, int64_t timeout_ms, inferd_error *err);

/**
 * Drain: stop admitting (submit fails with INFERD_E_UNAVAILABLE), serve the
 * queued and running requests for at most @p grace_ms, then end the rest
 * with INFERD_E_UNAVAILABLE ("draining: grace period over"), and stop the
 * thread (STOPPED). Blocks until STOPPED. A second call waits for the first.
 * @param grace_ms  < 0: no limit (serve everything accepted).
 */
void inferd_sched_drain(inferd_sched *s, int64_t grace_ms);

/**
 * Drain with no grace (every pending request ends with
 * INFERD_E_UNAVAILABLE), join the thread, free the model and the
 * scheduler. Accepts NULL. Requests not yet released stay valid (their
 * terminal event is queued) until released.
 * Thread: any, once, not from an on_event callback.
 */
void inferd_sched_destroy(inferd_sched *s);

inferd_sched_state inferd_sched_get_state(const inferd_sched *s);

/** The model, once READY (NULL before and after a failed load). It stays
 * valid until inferd_sched_destroy. Only the scheduler runs it: callers may
 * read its vocabulary, hyper-parameters and sizes. */
inferd_model *inferd_sched_model(const inferd_sched *s);

/* ------------------------------------------------------------------------ */
/* Requests */

/** Called on the scheduler thread after events were pushed to a request.
 * Must return quickly and must not call into the scheduler other than
 * inferd_request_next/cancel on that request. */
typedef void (*inferd_request_notify_fn)(void *ctx);

/** Which prompt positions a request keeps the logits or the final hidden
 * state of (inferd_request_outputs). */
typedef enum inferd_positions {
    INFERD_POSITIONS_NONE = 0,
    INFERD_POSITIONS_LAST = 1, /* the prompt's last: what the first generated
                                * token is sampled from */
    INFERD_POSITIONS_ALL = 2,  /* every prompt position, in order */
} inferd_positions;

/** The most bytes a request may keep of logits and hidden states together
 * (a 4096-token prompt's logits over a 32000-token vocabulary are 500 MiB). */
#define INFERD_KEEP_BYTES_MAX ((uint64_t)1 << 30)

typedef struct inferd_request_params {
    /* The prompt: token ids (used when n_tokens > 0), else text, tokenized
     * with the model's vocabulary by submit (or, while the model loads, at
     * admission: errors then come as an ERROR event). */
    const int32_t *tokens; /* (n_tokens) borrowed; copied by submit */
    size_t n_tokens;
    const char *text; /* borrowed; copied/tokenized by submit */
    size_t text_len;
    bool add_special;   /* text: prepend BOS as the vocab says. Default true */
    bool parse_special; /* text: read special-token text as tokens. Default false */

    inferd_sampler_params sampling;
    int32_t max_tokens;                  /* < 0: until the context is full. Default 128 */
    const char *stop[INFERD_STOP_N_MAX]; /* borrowed; copied by submit */
    int n_stop;
    bool ignore_eos;          /* keep generating past end-of-generation
                                    * tokens (benchmarks). Default false */
    bool logprobs;            /* TOKEN events carry the token's
                                    * log-probability. Default false */
    uint32_t top_logprobs;    /* and the most likely tokens' (0..
                                    * INFERD_TOP_LOGPROBS_MAX). Default 0 */
    inferd_priority priority; /* Default NORMAL */
    /* Keep the logits (FP32, n_vocab per position, as the output layer gives
     * them) and the final normalized hidden state (FP32, n_embd per position)
     * of these prompt positions. The prompt is computed even with
     * max_tokens 0. Keeping changes no generated token. Default NONE. */
    inferd_positions keep_logits, keep_hidden;
    int64_t timeout_ms; /* deadline from submission; 0: the
                                    * scheduler's default; < 0: none */

    inferd_request_notify_fn on_event; /* optional wake-up */
    void *on_event_ctx;
} inferd_request_params;

/** Defaults as documented on each field (sampling:
 * inferd_sampler_params_default()). */
inferd_request_params inferd_request_params_default(void);

/**
 * Submit a request. Returns at once.
 * @return 0 and *out_request (release it with inferd_request_release);
 * INFERD_E_INVALID (empty prompt, an id outside the vocabulary, bad
 * sampling parameters or stop strings; the message names the field, and
 * err->param is "prompt" for the prompt's; kept outputs over
 * INFERD_KEEP_BYTES_MAX, param "keep"), INFERD_E_CONTEXT_LENGTH (a
 * prompt with as many tokens as the context or more; param "prompt");
 * prompts given during the load are checked at admission instead, and an
 * ERROR event then carries the code and param, INFERD_E_OVERLOADED (the queue holds
 * n_queue_max requests), INFERD_E_UNAVAILABLE (draining or stopped, or the
 * load failed), INFERD_E_IO (the model's file changed on disk while loaded:
 * see above), INFERD_E_NOMEM. Nothing is queued on error.
 */
int inferd_sched_submit(inferd_sched *s, const inferd_request_params *params,
                        inferd_request **out_request, inferd_error *err);

typedef enum inferd_event_type {
    INFERD_EVENT_TOKEN = 0,
    INFERD_EVENT_DONE = 1,
    INFERD_EVENT_ERROR = 2,
} inferd_event_type;

typedef struct inferd_event {
    inferd_event_type type;
    /* TOKEN: a generated id and the text that became safe to show with it
     * (whole UTF-8 characters, never part of a stop string; may be empty).
     * DONE: the text held back until the end (may be empty). */
    int32_t token;
    uint32_t index; /* TOKEN: 0-based position among the generated */
    /* TOKEN with params.logprobs: log-probabilities under the model's raw
     * distribution (log-softmax of the logits, before any sampling
     * transform), as inferd_logprobs_topn computes them; n_top entries of
     * the most likely tokens first (valid until the next call). */
    float logprob;
    uint32_t n_top;
    const int32_t *top_ids;
    const float *top_logprobs;
    const char *text; /* valid until the next call on the request */
    size_t text_len;
    /* DONE */
    inferd_finish finish;
    uint32_t n_prompt, n_gen; /* n_gen counts the TOKEN events */
    uint64_t seed;            /* the seed used (drawn when none given) */
    double queue_ms;          /* submission -> admission into a slot */
    double ttft_ms;           /* submission -> first token (0 if none) */
    double gen_ms;            /* first token -> last token */
    double total_ms;          /* submission -> end */
    /* ERROR (also ends the stream) */
    int code;            /* INFERD_E_* */
    const char *message; /* valid until the next call on the request */
    const char *param;   /* the request field at fault (canonical
                                    * name, static), or NULL */
} inferd_event;

/**
 * The next event of @p r.
 * @param wait_ms  0: do not wait; < 0: wait as long as it takes.
 * @return 0 and *out_event (its strings valid until the next call on @p r
 * or its release); INFERD_E_TIMEOUT when nothing came within wait_ms;
 * INFERD_E_NOT_FOUND after the terminal event was read (the stream is over).
 * Thread: one reader per request.
 */
int inferd_request_next(inferd_request *r, inferd_event *out_event, int64_t wait_ms);

/** Ask the scheduler to end @p r: at the next step it ends with
 * INFERD_E_CANCELLED (unless it already ended) and its slot is free.
 * Idempotent. Thread: any, including on_event callbacks. */
void inferd_request_cancel(inferd_request *r);

/** Drop the caller's reference; cancels the request if it has not ended.
 * With an on_event callback it waits until the scheduler has made its last
 * call (at most until the next step), so the callback's context may be
 * freed once this returns. Accepts NULL. The request must not be used
 * afterwards. Thread: any but an on_event callback. */
void inferd_request_release(inferd_request *r);

/** What a request kept (inferd_request_params.keep_logits/keep_hidden). */
typedef struct inferd_request_outputs {
    const float *logits; /* (n_logits, n_vocab) row-major, or NULL */
    uint32_t n_logits;   /* rows: 1 (LAST), n_prompt (ALL) or 0 */
    uint32_t n_vocab;
    const float *hidden; /* (n_hidden, n_embd) row-major, or NULL */
    uint32_t n_hidden;
    uint32_t n_embd;
} inferd_request_outputs;

/**
 * The outputs @p r kept, once its DONE event was read (valid until its
 * release). @return 0; INFERD_E_NOT_FOUND before DONE was read or after an
 * ERROR. Thread: the request's reader.
 */
int inferd_request_outputs_get(inferd_request *r, inferd_request_outputs *out);

/** The prompt's token count; 0 until a text prompt submitted during the
 * load is tokenized at admission. */
size_t inferd_request_n_prompt(inferd_request *r);

/* ------------------------------------------------------------------------ */
/* Live figures */

#define INFERD_SCHED_WINDOW 1000 /* requests in the rolling percentiles */

typedef struct inferd_percentiles {
    double p50, p95, p99; /* ms; 0 when no sample */
    uint32_t n;           /* samples in the window */
} inferd_percentiles;

/* Cumulative histograms for the Prometheus exposition: bucket i counts the
 * samples <= inferd_sched_hist_bounds_ms[i]; the last bucket (+Inf) counts
 * them all. */
#define INFERD_SCHED_HIST_N 15
extern const double inferd_sched_hist_bounds_ms[INFERD_SCHED_HIST_N - 1];

typedef struct inferd_histogram {
    uint64_t cumulative[INFERD_SCHED_HIST_N]; /* the last one is the count */
    double sum_ms;
} inferd_histogram;

typedef struct inferd_sched_stats {
    inferd_sched_state state;
    uint32_t n_slots, slots_busy;
    uint32_t queue_depth[INFERD_PRIORITY_COUNT];
    uint32_t n_queue_max;
    /* Requests by outcome (ever). Rejected ones never got a request. */
    uint64_t n_submitted;                      /* accepted by submit */
    uint64_t n_done;                           /* ended with DONE */
    uint64_t n_cancelled, n_timeout, n_failed; /* ERROR: cancelled, timeout, other */
    uint64_t n_rejected_overloaded, n_rejected_invalid, n_rejected_unavailable;
    uint64_t tokens_in;  /* prompt tokens of admitted requests */
    uint64_t tokens_out; /* generated tokens */
    uint64_t n_steps;    /* forward passes */
    /* Rolling over the last INFERD_SCHED_WINDOW requests that ended DONE. */
    inferd_percentiles latency; /* submission -> end */
    inferd_percentiles ttft;    /* submission -> first token */
    inferd_percentiles itl;     /* mean inter-token latency of a request */
    /* Ever, over the requests that ended DONE. */
    inferd_histogram latency_hist; /* submission -> end */
    inferd_histogram ttft_hist;    /* submission -> first token (n_gen > 0) */
} inferd_sched_stats;

/** A consistent snapshot. */
void inferd_sched_get_stats(inferd_sched *s, inferd_sched_stats *out_stats);

#endif
