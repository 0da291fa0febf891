/* KServe v2 without a wire: the operations of the KServe v2 protocol
 * (metadata, health, the repository, inference) on the front end, the
 * shared-memory regions and the identity models, with requests and
 * responses in the protocol's JSON shape (tensors as binary data beside
 * it). The HTTP route answers with that JSON as it is; the gRPC door
 * (grpc.cc) turns protobuf messages into it and back. One KServe
 * implementation, two faces. Not a public header.
 *
 * Inference runs asynchronously: inferd__kv_start submits (on a pump
 * thread when the model may have to be loaded first) and the run's
 * callbacks come from the pump threads as its events arrive: one token()
 * per generated token when streaming, then exactly one done(). A pump
 * belongs to its door (inferd__kv_pump_create); its threads run the
 * callbacks, which must not block.
 */
#ifndef INFERD_SERVER_KVRUN_H
#define INFERD_SERVER_KVRUN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/frontend.h"
#include "inferd/region.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a door serves. Borrowed, for the door's life. */
typedef struct kv_env {
    inferd_frontend *fe;
    inferd_regions *regions; /* NULL: system shared memory not served */
    const inferd_shm_caps *shm_caps;
    char *const *identity; /* built-in identity models' names */
    size_t n_identity;
} kv_env;

bool inferd__kv_is_identity(const kv_env *env, const char *m);
/** Served model @p m (NULL or "": the default): its index, or
 * INFERD_E_MODEL_NOT_FOUND naming @p see (where the models are listed). */
int inferd__kv_find(const kv_env *env, const char *m, const char *see, inferd_error *err);
/** The session a client's created regions count in (inferd_regions):
 * "key:<hash>" of the API key @p api_key (@p key_len bytes; NULL: none,
 * the key itself is a secret), then "session:<sub>" for a session the
 * client names (@p sub, at most 64 bytes of it; NULL: none). "" for
 * neither. */
void inferd__kv_session(const char *api_key, size_t key_len, const char *sub, size_t sub_len,
                        char out[INFERD_REGION_SESSION_MAX]);

/** {"name", "version", "extensions": [...], "shared_memory": {...}}. */
json_t *inferd__kv_server_meta(const kv_env *env);
/** The server is ready: the front end serves (READY). */
bool inferd__kv_server_ready(const kv_env *env);
/** Model @p m's readiness (an identity model always is). @return 0 or
 * INFERD_E_MODEL_NOT_FOUND. */
int inferd__kv_model_ready(const kv_env *env, const char *m, const char *see, bool *ready,
                           const char **id, inferd_error *err);
/** Model @p m's metadata: {"name", "versions", "platform", "inputs",
 * "outputs", "ready"}; inputs and outputs as {"name", "datatype", "shape"}.
 * @return 0 and *out, or INFERD_E_MODEL_NOT_FOUND. */
int inferd__kv_model_meta(const kv_env *env, const char *m, const char *see, json_t **out,
                          inferd_error *err);
/** [{"name", "version", "state", "reason"}] of every model (@p ready_only:
 * those READY). */
json_t *inferd__kv_repository_index(const kv_env *env, bool ready_only);
/** Load (or unload) model @p m; an identity model is always loaded.
 * Blocks while it loads or while its requests finish. */
int inferd__kv_repository_load(const kv_env *env, const char *m, bool load, const char *see,
                               inferd_error *err);

/* ---- inference ---- */

typedef struct kv_pump kv_pump;

/** @p n_threads pump threads (>= 1) for inference runs and blocking jobs.
 * @return 0, INFERD_E_NOMEM or INFERD_E_INTERNAL (threads). */
int inferd__kv_pump_create(uint32_t n_threads, kv_pump **out, inferd_error *err);
/** Stop the threads (after every run was released and no job is posted).
 * Accepts NULL. */
void inferd__kv_pump_destroy(kv_pump *p);
/** Run fn(ctx) on a pump thread (a model load, an unload). @return 0 or
 * INFERD_E_OVERLOADED (too many waiting; nothing posted). */
int inferd__kv_post(kv_pump *p, void (*fn)(void *ctx), void *ctx, inferd_error *err);

typedef struct kv_run kv_run;

typedef struct kv_run_cbs {
    /* Streaming: token @p id (the @p index-th generated) and the text that
     * became safe to show with it (may be empty; not NUL-terminated). */
    void (*token)(void *ctx, int32_t id, uint32_t index, const char *text, size_t len);
    /* The end: @p err NULL and the response (borrowed: valid during the
     * call; outputs not in shared memory are binary data in @p bin, in
     * their order, each output's "parameters" giving its
     * "binary_data_size"), or the error. When streaming, text_output and
     * output_ids hold what the token() calls did not: the text held back
     * to the end, and no ids. */
    void (*done)(void *ctx, json_t *resp, const char *bin, size_t bin_len, const inferd_error *err);
} kv_run_cbs;

/**
 * Start infer request @p body (a KServe v2 request object, borrowed; its
 * inputs' binary data in @p bin, copied) for model @p m on @p env. The run
 * holds what it needs; @p body may go once this returns.
 * @return 0 and *out (release with inferd__kv_release, after done() or to
 * give it up); or the error found before anything started (a malformed
 * request, no such model: then no callback comes).
 */
int inferd__kv_start(kv_pump *p, const kv_env *env, const char *m, json_t *body, const char *bin,
                     size_t bin_len, bool stream, const kv_run_cbs *cbs, void *ctx, kv_run **out,
                     inferd_error *err);
/** Cancel @p r (its done() comes with INFERD_E_CANCELLED unless it ended).
 * Thread: any. */
void inferd__kv_cancel(kv_run *r);
/** Let go of @p r: cancels it if it runs; after this returns no callback
 * of it runs or will run (called from one of its own callbacks: none after
 * that callback returns, and the run is freed then). Accepts NULL. */
void inferd__kv_release(kv_run *r);

#ifdef __cplusplus
}
#endif

#endif
