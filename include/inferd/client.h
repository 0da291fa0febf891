/* inferd client: a C library for programs that talk to an inferd worker
 * over HTTP (http://host:port) or its Unix socket (unix:///path).
 *
 * One inferd_client per worker. It keeps a pool of keep-alive connections
 * (libcurl easy handles, one per call in flight, reused), so it may be
 * used from many threads at once. Every call returns 0 or an error code
 * and fills an inferd_error:
 *   - an answer of the worker: its code from the error table (the same
 *     INFERD_E_* the worker raised, read back from the HTTP status and the
 *     OpenAI error code) and its message;
 *   - no answer (connection refused or broken, a timeout before the
 *     answer, a malformed answer): INFERD_E_TRANSPORT, whose message says
 *     what happened (inferd_client_is_transport).
 *
 * Calls: health, status, models; completions and chat (blocking, or
 * streamed with a callback per token that may cancel); KServe inference
 * with tensors in JSON, binary data or shared memory (zero copy: the
 * client maps the region and the tensors are pointers into it); and the
 * shared-memory regions. Thread: any, unless a function says otherwise.
 */
#ifndef INFERD_CLIENT_H
#define INFERD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/tensor.h"

typedef struct inferd_client inferd_client;

typedef struct inferd_client_opts {
    const char *api_key;        /* sent as "Authorization: Bearer KEY"; NULL: none */
    int64_t connect_timeout_ms; /* to open a connection. Default 2000 */
    int64_t timeout_ms;         /* a whole call, 0: none. Default 0 (streams may be long) */
    int64_t idle_timeout_ms;    /* no byte from the worker this long ends the call
                                 * with INFERD_E_TRANSPORT; 0: none. Default 60000
                                 * (inferd pings idle streams every 15 s) */
} inferd_client_opts;

inferd_client_opts inferd_client_opts_default(void);

/**
 * A client of the worker at @p url: "http://HOST:PORT" (a path prefix is
 * kept) or "unix:///PATH/TO.sock". Nothing is connected yet.
 * @return 0 and *out (inferd_client_close it); INFERD_E_INVALID (a URL of
 * another form), INFERD_E_NOMEM.
 */
int inferd_client_open(const char *url, const inferd_client_opts *opts, inferd_client **out,
                       inferd_error *err);
/** Close @p c (no call may be in flight) and its connections. NULL is fine. */
void inferd_client_close(inferd_client *c);
/** The URL @p c was opened with. */
const char *inferd_client_url(const inferd_client *c);

/** Is @p err a failure to get an answer (INFERD_E_TRANSPORT)? */
bool inferd_client_is_transport(const inferd_error *err);

/* ------------------------------------------------------------------------ */
/* Operations */

/** GET /health (live) or /v2/health/ready (@p ready). @return 0 when
 * live/ready; INFERD_E_UNAVAILABLE when the worker answers not ready. */
int inferd_client_health(inferd_client *c, bool ready, inferd_error *err);
/** GET /v1/status: *out_json, the worker's JSON text (free() it). */
int inferd_client_status(inferd_client *c, char **out_json, inferd_error *err);
/** GET /v1/models: the ids (*out_ids, free with inferd_client_strings_free). */
int inferd_client_models(inferd_client *c, char ***out_ids, size_t *out_n, inferd_error *err);
void inferd_client_strings_free(char **strs, size_t n);

/* ------------------------------------------------------------------------ */
/* Generation: POST /v1/completions and /v1/chat/completions */

#define INFERD_CLIENT_STOP_MAX 4

typedef struct inferd_client_message {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} inferd_client_message;

/* A request; fields left as inferd_client_gen_default() sets them are not
 * sent (the worker's defaults apply). */
typedef struct inferd_client_gen {
    const char *model;                     /* NULL: the worker's default model */
    const char *prompt;                    /* completions */
    const inferd_client_message *messages; /* chat */
    size_t n_messages;
    int32_t max_tokens;               /* -1: not sent */
    double temperature, top_p, min_p; /* < 0: not sent */
    int32_t top_k;                    /* < 0: not sent */
    bool has_seed;                    /* send seed */
    uint64_t seed;
    const char *stop[INFERD_CLIENT_STOP_MAX];
    int n_stop;
    bool ignore_eos;
    int64_t timeout_ms;        /* the worker's deadline for it; 0: not sent */
    int64_t client_timeout_ms; /* this call's own limit here; 0: the client's */
} inferd_client_gen;

inferd_client_gen inferd_client_gen_default(void);

typedef struct inferd_client_result {
    char *text; /* the generated text (NUL-terminated, malloc'd; streamed:
                 * what was delivered) */
    size_t text_len;
    char finish_reason[16]; /* "length", "stop"; "" if it did not finish */
    uint32_t prompt_tokens, completion_tokens;
    uint64_t seed;     /* the seed the worker used (streamed: the one sent, else 0) */
    uint32_t n_pieces; /* streamed: pieces delivered */
} inferd_client_result;

void inferd_client_result_free(inferd_client_result *r);

/** A streamed piece of text: one chunk of the worker's stream (a token's
 * text; text held back, part of a UTF-8 character or of a possible stop
 * string, comes with a later piece), never empty, @p index counting the
 * pieces from 0. The pieces of a request are a function of the request and
 * its seed. Return nonzero to cancel the call (it then ends with
 * INFERD_E_CANCELLED and the worker stops generating). Called on the
 * calling thread. */
typedef int (*inferd_client_token_fn)(void *ctx, uint32_t index, const char *text, size_t len);

/**
 * Run @p g as a completion (g->prompt) or a chat (g->messages). With
 * @p on_token the answer is streamed and each token given to it as it
 * comes; without, the call waits for the whole answer.
 * @return 0 and *out (inferd_client_result_free it; also filled as far as
 * it got on error); the worker's error; INFERD_E_TRANSPORT;
 * INFERD_E_CANCELLED.
 */
int inferd_client_complete(inferd_client *c, const inferd_client_gen *g,
                           inferd_client_token_fn on_token, void *ctx, inferd_client_result *out,
                           inferd_error *err);

/* ------------------------------------------------------------------------ */
/* Shared-memory regions (KServe system shared memory) */

typedef struct inferd_client_region {
    char name[128]; /* the worker's name for it */
    char key[128];  /* the POSIX shared-memory object ("/...") */
    void *base;     /* mapped here, read-write */
    size_t size;
    bool created_by_worker;
} inferd_client_region;

/**
 * A region of @p bytes made by the worker (POST .../create) and mapped
 * here. @return 0 and *out; the worker's error (INFERD_E_QUOTA: its quota
 * or /dev/shm is full: send tensors as binary data instead; see
 * docs/http.md), INFERD_E_IO (cannot map it here), INFERD_E_TRANSPORT.
 */
int inferd_client_region_create(inferd_client *c, const char *name, size_t bytes,
                                inferd_client_region **out, inferd_error *err);
/** A region of @p bytes made here (a new shm object, mode 0600) and
 * registered with the worker by key. */
int inferd_client_region_register(inferd_client *c, const char *name, size_t bytes,
                                  inferd_client_region **out, inferd_error *err);
/** Unregister @p r at the worker, unmap it here and unlink the object if
 * this client made it; @p r is freed even when the worker's answer is an
 * error (returned). NULL is fine. */
int inferd_client_region_release(inferd_client *c, inferd_client_region *r, inferd_error *err);
/** Register an object the caller made and maps itself (POSIX shared memory
 * @p key, its window @p offset, @p bytes) as region @p name. */
int inferd_client_register_key(inferd_client *c, const char *name, const char *key, uint64_t offset,
                               uint64_t bytes, inferd_error *err);
/** Unregister region @p name (nothing is unmapped or unlinked here). */
int inferd_client_unregister(inferd_client *c, const char *name, inferd_error *err);

/* ------------------------------------------------------------------------ */
/* KServe inference: POST /v2/models/{m}/infer */

typedef enum inferd_client_via {
    INFERD_CLIENT_VIA_JSON = 0,   /* JSON "data" */
    INFERD_CLIENT_VIA_BINARY = 1, /* binary tensor data after the JSON */
    INFERD_CLIENT_VIA_SHM = 2,    /* a region (region, offset) */
} inferd_client_via;

typedef struct inferd_client_tensor {
    const char *name;
    inferd_elem elem; /* BYTES: data is KServe's encoding (4-byte length, bytes) */
    uint32_t ndim;
    int64_t shape[INFERD_TENSOR_DIMS_MAX];
    inferd_client_via via;
    /* Inputs: data and bytes (JSON, binary), or the bytes at region+offset
     * (shared memory: written there by the caller; data unused).
     * Outputs: via and, for shared memory, region, offset and bytes (the
     * room there); the call fills elem, ndim, shape, bytes and data: a
     * pointer into the region (zero copy) or into the result's memory. */
    const void *data;
    size_t bytes;
    const inferd_client_region *region;
    uint64_t offset;
} inferd_client_tensor;

typedef struct inferd_client_infer_result {
    char *json;   /* the answer's JSON (its "parameters" etc.), malloc'd */
    void *memory; /* the answer's bytes (binary outputs point into them) */
    void *blocks; /* outputs read from JSON data (a list) */
} inferd_client_infer_result;

void inferd_client_infer_result_free(inferd_client_infer_result *r);

/**
 * Infer @p model with @p inputs; ask for @p outputs (by name, each with the
 * way it should come back) and fill them. @p params_json: the request's
 * "parameters" object as JSON text, or NULL.
 * @return 0 and *out (free it after the last use of the outputs' data);
 * INFERD_E_INVALID (a tensor the client cannot send, an answer without an
 * asked-for output), the worker's error, INFERD_E_TRANSPORT.
 */
int inferd_client_infer(inferd_client *c, const char *model, const inferd_client_tensor *inputs,
                        size_t n_inputs, inferd_client_tensor *outputs, size_t n_outputs,
                        const char *params_json, inferd_client_infer_result *out,
                        inferd_error *err);

/* ------------------------------------------------------------------------ */
/* The resilient client: several workers, retries, breakers, failover */

/* A program's calls go to a list of workers (endpoints) serving the same
 * models. Each call tries them in turn (round robin from the first, over
 * the calls) within a retry policy:
 *   - it moves to the next endpoint on a transport error (no answer, a
 *     broken connection, a timeout), a 503 (unavailable, overloaded) and a
 *     504 (the worker's deadline); never on any other answer (a 4xx is the
 *     request's fault and comes back at once);
 *   - it waits between tries once every endpoint was tried (full jitter:
 *     a random wait in [0, min(cap, base * 2^k)]) and keeps the call's
 *     deadline (INFERD_E_TIMEOUT, naming the last error);
 *   - each endpoint has a circuit breaker: open after `failures` such
 *     failures in a row (skipped), half-open after `cooldown_ms` (one call
 *     probes it), closed again by a success.
 * Streams fail over without losing or repeating a piece: inferd's output
 * is a function of (model, prompt, parameters, seed), so the call fixes
 * the seed (a random one when the request has none), and when a worker
 * fails mid-stream it sends the request to the next one, skips the pieces
 * already delivered, checking that each equals what was delivered
 * (INFERD_E_INTERNAL "replayed ... differs" otherwise, which happens only
 * when the workers serve different models or versions), and goes on. */

typedef struct inferd_resilient inferd_resilient;

typedef struct inferd_retry_policy {
    uint32_t attempts;       /* tries per call, over all endpoints, >= 1. Default 6 */
    int64_t backoff_base_ms; /* Default 50 */
    int64_t backoff_cap_ms;  /* Default 2000 */
    int64_t deadline_ms;     /* per call, 0: none. Default 60000 */
} inferd_retry_policy;

typedef struct inferd_resilient_opts {
    inferd_client_opts client; /* for every endpoint */
    inferd_retry_policy retry;
    uint32_t breaker_failures;   /* in a row, to open. Default 3 */
    int64_t breaker_cooldown_ms; /* open this long before a probe. Default 2000 */
    uint64_t jitter_seed;        /* 0: a random one */
} inferd_resilient_opts;

inferd_resilient_opts inferd_resilient_opts_default(void);

typedef enum inferd_breaker_state {
    INFERD_BREAKER_CLOSED = 0,
    INFERD_BREAKER_OPEN = 1,
    INFERD_BREAKER_HALF_OPEN = 2,
} inferd_breaker_state;

const char *inferd_breaker_state_name(inferd_breaker_state s);

typedef struct inferd_resilient_stats {
    uint64_t calls;     /* calls made */
    uint64_t attempts;  /* tries over all calls */
    uint64_t failovers; /* tries after a failed one */
    uint64_t replayed;  /* stream pieces skipped (already delivered) */
} inferd_resilient_stats;

typedef struct inferd_endpoint_stats {
    const char *url;
    inferd_breaker_state breaker;
    uint32_t failures_in_row;
    uint64_t attempts, failures, successes;
    uint64_t opened; /* times its breaker opened */
} inferd_endpoint_stats;

/**
 * A resilient client of the workers at @p urls (@p n >= 1, each as
 * inferd_client_open takes it). @return 0 and *out; INFERD_E_INVALID (a
 * URL, no URL, a policy out of range), INFERD_E_NOMEM.
 */
int inferd_resilient_open(const char *const *urls, size_t n, const inferd_resilient_opts *opts,
                          inferd_resilient **out, inferd_error *err);
void inferd_resilient_close(inferd_resilient *r);

/** As inferd_client_complete, over the endpoints (see above). out->seed is
 * the seed used. */
int inferd_resilient_complete(inferd_resilient *r, const inferd_client_gen *g,
                              inferd_client_token_fn on_token, void *ctx, inferd_client_result *out,
                              inferd_error *err);
/** As inferd_client_health/status, answered by the first endpoint that
 * answers (same retry rules). */
int inferd_resilient_health(inferd_resilient *r, bool ready, inferd_error *err);
int inferd_resilient_status(inferd_resilient *r, char **out_json, inferd_error *err);
/** As inferd_client_infer, over the endpoints (same retry rules; the
 * deadline is kept between tries). Tensors go as JSON or binary data only:
 * a shared-memory region belongs to one worker, so an input or output
 * via INFERD_CLIENT_VIA_SHM is INFERD_E_INVALID. *out and the outputs
 * are the answering endpoint's. */
int inferd_resilient_infer(inferd_resilient *r, const char *model,
                           const inferd_client_tensor *inputs, size_t n_inputs,
                           inferd_client_tensor *outputs, size_t n_outputs, const char *params_json,
                           inferd_client_infer_result *out, inferd_error *err);

void inferd_resilient_stats_get(inferd_resilient *r, inferd_resilient_stats *out);
size_t inferd_resilient_n_endpoints(const inferd_resilient *r);
/** Endpoint @p i's figures now (its url valid as long as @p r). */
void inferd_resilient_endpoint(inferd_resilient *r, size_t i, inferd_endpoint_stats *out);

#endif
