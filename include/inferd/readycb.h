/* Readiness callback: once a worker's models are loaded, POST a JSON
 * announcement to a pool manager's URL, retrying transient failures.
 *
 * Body: {"worker_id", "pool_id", "endpoint", "memory_bytes", "slots_total",
 *        "capabilities": {"engine": "inferd", "engine_version", "model_ref"}}
 *
 * A 2xx answer is success. Connection errors, timeouts and 5xx answers are
 * retried with exponential backoff and jitter (delay = base * 2^attempt,
 * capped, then scaled by a random factor in [0.5, 1.5)). Any other answer
 * (4xx, 3xx) is final. See docs/operations.md.
 */
#ifndef INFERD_READYCB_H
#define INFERD_READYCB_H

#include <stdint.h>

#include "inferd/error.h"

typedef struct inferd_ready_cb {
    const char *url; /* http:// or https:// */
    const char *worker_id;
    const char *pool_id;   /* may be NULL: sent as null */
    const char *endpoint;  /* this worker's base URL */
    uint64_t memory_bytes; /* weights + state of the loaded models */
    uint32_t slots_total;  /* sequence slots over all models */
    const char *engine_version;
    const char *model_ref; /* the default model's file */
    uint32_t max_attempts; /* >= 1; default 8 */
    int64_t base_delay_ms; /* default 250 */
    int64_t max_delay_ms;  /* default 30000 */
    int64_t timeout_ms;    /* per attempt; default 10000 */
} inferd_ready_cb;

/** Defaults for the retry fields; the rest zero. */
inferd_ready_cb inferd_ready_cb_default(void);

/**
 * Post the announcement, retrying as described above. Blocks.
 * @return 0 (2xx); INFERD_E_INVALID (missing url or worker_id; a final
 * answer: the message gives its status and the start of its body);
 * INFERD_E_UNAVAILABLE (every attempt failed transiently: the message gives
 * the attempts and the last failure); INFERD_E_NOMEM, INFERD_E_INTERNAL.
 * Thread: any; calls curl_global_init on first use.
 */
int inferd_ready_cb_post(const inferd_ready_cb *cb, inferd_error *err);

/** Write a random (version 4) UUID, 36 characters and a NUL, to @p out. */
void inferd_uuid4(char out[37]);

#endif
