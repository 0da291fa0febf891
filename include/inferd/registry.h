/* Process-wide model registry: one instance per model id, shared through
 * reference-counted handles, loaded once however many callers race for it,
 * kept for a keep-alive after its last handle goes, and evicted least
 * recently used when a byte budget would be exceeded.
 *
 * States of an entry: LOADING (one thread is loading it; others asking for
 * it wait) -> READY -> UNLOADING (a drain was asked; it unloads when its
 * last handle is released). A failed load leaves no entry behind, so the
 * next call loads again.
 *
 * Model files: a get checks that a loaded model's file is unchanged
 * (inferd_model_check_file, inferd_model_path_changed). A model whose
 * mapped file was truncated or written in place is refused (INFERD_E_IO)
 * while handles are held, unloaded when the last one goes, and loaded
 * anew by the next get. When a new file is at the path (an atomic rename,
 * or a rewrite of a model read with no_mmap), an idle instance is replaced
 * by a load of the new file once it is seen to load; until then, and while
 * handles are held, the old instance keeps serving.
 *
 * Budget: each model costs its weight bytes + its state bytes (KV cache and
 * work buffers), known before loading from inferd_model_estimate. A load
 * that does not fit evicts idle models (no handles), least recently used
 * first; models with handles are never evicted.
 *
 * Threads: every function may be called from any thread. Loads, estimates
 * and unloads (inferd_model_destroy) run outside the registry lock, so the
 * other models stay usable while one loads. See docs/runtime.md.
 */
#ifndef INFERD_REGISTRY_H
#define INFERD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/model.h"
#include "inferd/scheduler.h"

typedef struct inferd_registry inferd_registry;
/* A handle is one reference to a loaded model. Every handle to the same
 * instance is the same pointer. */
typedef struct inferd_registry_handle inferd_registry_handle;

/** Monotonic clock in milliseconds (tests inject a fake one). */
typedef uint64_t (*inferd_registry_clock_fn)(void *ctx);

#define INFERD_REGISTRY_KEEP_ALIVE_DEFAULT_MS 300000 /* 5 minutes */
#define INFERD_REGISTRY_ID_MAX 256                   /* id bytes incl. NUL */
#define INFERD_REGISTRY_PATH_MAX 4096                /* path bytes incl. NUL */

typedef struct inferd_registry_opts {
    uint64_t budget_bytes;          /* weights + state of all models; 0: no limit */
    uint32_t n_models_max;          /* entries (loading or loaded), 1..4096 */
    uint32_t reaper_interval_ms;    /* > 0: a thread runs collect this often */
    inferd_registry_clock_fn clock; /* NULL: CLOCK_MONOTONIC in ms */
    void *clock_ctx;                /* passed to clock; borrowed */
} inferd_registry_opts;

/** Defaults: no budget, 64 models, no reaper thread, CLOCK_MONOTONIC. */
inferd_registry_opts inferd_registry_opts_default(void);

typedef struct inferd_registry_model_opts {
    const char *path;        /* GGUF file; NULL: the model id is the path */
    inferd_sched_opts sched; /* the model's scheduler; its model params
                                     * (inferd_sched_model_params) load it */
    int64_t keep_alive_ms;   /* idle time before unloading once the last
                                     * handle goes: 0 at once, < 0 never */
} inferd_registry_model_opts;

/** Defaults: path NULL, inferd_sched_opts_default(), keep-alive 5 minutes. */
inferd_registry_model_opts inferd_registry_model_opts_default(void);

/**
 * Create a registry.
 * @return 0; INFERD_E_RANGE (n_models_max), INFERD_E_NOMEM, INFERD_E_INTERNAL
 * (the reaper thread could not start). Thread: any.
 */
int inferd_registry_create(const inferd_registry_opts *opts, inferd_registry **out_registry,
                           inferd_error *err);

/**
 * Stop the reaper and unload every model. Accepts NULL.
 * Precondition: no handles are held and no call is in progress (asserted).
 * Thread: any, once.
 */
void inferd_registry_destroy(inferd_registry *r);

/**
 * A handle to model @p id, loading it if it is not loaded. Callers that ask
 * for a model while it loads wait for that load and get the same instance;
 * if it fails they all get its error (same code and message), and the next
 * call tries again. @p opts (NULL: defaults) are used only when this call
 * loads the model; a hit returns the loaded instance as it is.
 *
 * @param id     copied; 1..255 bytes.
 * @return 0 and *out_handle; INFERD_E_INVALID (id or path length),
 * INFERD_E_BUSY (the model is being drained by inferd_registry_unload: it
 * refuses new handles until it is gone), INFERD_E_OVERLOADED (n_models_max
 * entries are loaded or loading), INFERD_E_QUOTA (does not fit the budget
 * even after evicting every idle model; the message gives the bytes needed
 * and the bytes free), INFERD_E_IO (the model's file changed on disk while
 * loaded and requests still hold it; see above), or the errors of
 * inferd_model_load.
 * Thread: any; may block while another thread loads the same model.
 */
int inferd_registry_get_or_load(inferd_registry *r, const char *id,
                                const inferd_registry_model_opts *opts,
                                inferd_registry_handle **out_handle, inferd_error *err);

/** The model behind @p h; valid until the handle is released. Only its
 * scheduler runs it. Thread: any. */
inferd_model *inferd_registry_handle_model(const inferd_registry_handle *h);

/** The scheduler serving the model behind @p h (submit requests to it);
 * valid until the handle is released. Hold the handle for as long as a
 * request runs: a model with handles is never evicted or unloaded.
 * Thread: any. */
inferd_sched *inferd_registry_handle_sched(const inferd_registry_handle *h);

/**
 * Release one handle (accepts NULL). When the last handle of a model goes,
 * its keep-alive starts; a keep-alive of 0, or a drain in progress, unloads
 * it now (on this thread, outside the registry lock).
 * Thread: any. The handle must not be used afterwards.
 */
void inferd_registry_release(inferd_registry *r, inferd_registry_handle *h);

/**
 * Unload model @p id. Without @p drain it is refused while handles are held.
 * With @p drain the model is marked UNLOADING: new get calls for it fail with
 * INFERD_E_BUSY, and it unloads when its last handle is released (at once if
 * it has none).
 * @return 0 (unloaded, or draining); INFERD_E_NOT_FOUND (not loaded),
 * INFERD_E_BUSY (handles held and no drain, or still loading; the message
 * says which). Thread: any.
 */
int inferd_registry_unload(inferd_registry *r, const char *id, bool drain, inferd_error *err);

/**
 * Unload every READY model with no handles whose keep-alive has run out
 * (now - last use >= keep-alive, keep-alive >= 0). Also done lazily by get
 * and release and by the reaper thread.
 * @return the number of models unloaded. Thread: any.
 */
size_t inferd_registry_collect(inferd_registry *r);

typedef enum inferd_registry_state {
    INFERD_REGISTRY_LOADING,
    INFERD_REGISTRY_READY,
    INFERD_REGISTRY_UNLOADING,
} inferd_registry_state;

/** Name of a state ("loading", "ready", "unloading"). */
const char *inferd_registry_state_name(inferd_registry_state s);

typedef struct inferd_registry_model_info {
    char id[INFERD_REGISTRY_ID_MAX];
    inferd_registry_state state;
    uint64_t weight_bytes; /* 0 while loading and not yet estimated */
    uint64_t state_bytes;
    uint32_t n_handles;
    int64_t keep_alive_ms;
    uint64_t last_use_ms; /* registry clock: last get or release */
} inferd_registry_model_info;

/**
 * The models loading or loaded, least recently used first. Writes
 * min(count, @p cap) entries to @p out and the total count to *out_n.
 * Thread: any.
 */
void inferd_registry_list(inferd_registry *r, inferd_registry_model_info *out, size_t cap,
                          size_t *out_n);

/**
 * The live figures of model @p id's scheduler (inferd_sched_get_stats),
 * without taking a handle: the model's keep-alive is not touched.
 * @return 0; INFERD_E_NOT_FOUND when the model is not loaded (loading
 * models have no scheduler figures yet). Thread: any.
 */
int inferd_registry_sched_stats(inferd_registry *r, const char *id, inferd_sched_stats *out_stats);

typedef struct inferd_registry_metrics {
    uint64_t loads;          /* successful loads */
    uint64_t load_failures;  /* loads that failed (quota included) */
    uint64_t load_ms_total;  /* time spent in successful loads */
    uint64_t hits;           /* gets served by a loaded or loading instance */
    uint64_t evictions;      /* idle models unloaded to make room */
    uint64_t expiries;       /* idle models unloaded at keep-alive's end */
    uint64_t unloads;        /* explicit unloads completed (drains included) */
    uint64_t file_reloads;   /* instances unloaded because their file changed
                              * or was replaced on disk (loaded anew by the
                              * next get) */
    uint64_t bytes_resident; /* weights + state of READY/UNLOADING models */
    uint64_t bytes_reserved; /* bytes_resident + estimates of loads in flight */
    uint64_t budget_bytes;   /* 0: no limit */
    uint32_t n_models;       /* entries listed by inferd_registry_list */
} inferd_registry_metrics;

/** A consistent snapshot of the counters. Thread: any. */
void inferd_registry_get_metrics(inferd_registry *r, inferd_registry_metrics *out_metrics);

#endif
