/* The model worker over HTTP: OpenAI (/v1/completions, /v1/chat/completions,
 * /v1/models), KServe v2 / Open Inference Protocol (/v2/...) and operations
 * (/health, /metrics, /v1/status). See docs/http.md.
 *
 * A server owns a registry whose models are the ones it was configured with
 * (their ids: file names without ".gguf", or aliases). Each HTTP request is
 * parsed and validated on its connection's thread, holds a registry handle
 * for its model while it runs, and is submitted to that model's scheduler;
 * the connection thread then waits for the request's events (woken by the
 * scheduler through an eventfd) and writes the response: one JSON body, or
 * an SSE stream. A client that hangs up cancels its request.
 *
 * States: LOADING (created; the HTTP port answers, /health is 503) -> READY
 * (inferd_server_load_models loaded every configured model) -> DRAINING
 * (inferd_server_drain: new inference requests get 503, accepted ones run
 * for the grace period) -> STOPPED.
 *
 * Threads: libmicrohttpd's listener plus one thread per connection (bounded
 * by max_connections), a ticker thread sampling throughput and CPU once a
 * second, and each model's scheduler thread. The functions below are called
 * by the owner's thread.
 */
#ifndef INFERD_SERVER_H
#define INFERD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/registry.h"

#define INFERD_SERVER_MODELS_MAX 16

typedef struct inferd_server inferd_server;

typedef struct inferd_server_model {
    const char *path;              /* GGUF file; borrowed for create */
    const char *alias;             /* id to serve it as; NULL: file name
                                    * without ".gguf" */
} inferd_server_model;

typedef struct inferd_server_opts {
    const char *host;              /* address to bind; default "127.0.0.1" */
    uint16_t port;                 /* 0: any free port (see inferd_server_port) */
    const char *api_key;           /* NULL/"": none; else "Authorization:
                                    * Bearer KEY" on every route but the
                                    * health probes */
    size_t max_body_bytes;         /* request body limit; default 1 MiB */
    uint32_t max_connections;      /* open connections; default 1024 */
    uint32_t conn_timeout_s;       /* idle connection timeout; default 30 */

    inferd_server_model models[INFERD_SERVER_MODELS_MAX];
    size_t n_models;               /* >= 1; the first is the default model */
    inferd_registry_model_opts model_opts; /* every model's scheduler options
                                    * and keep-alive (path ignored) */
    uint64_t budget_bytes;         /* registry budget; 0: none */
    int64_t drain_grace_ms;        /* default 30000; < 0: no limit */
    const char *chat_template;     /* NULL: detect per model; else a name
                                    * (inferd_chat_template_parse) */
} inferd_server_opts;

/** Defaults as documented on each field; no models. */
inferd_server_opts inferd_server_opts_default(void);

/**
 * Validate @p opts, create the registry and start listening (state
 * LOADING). Models are not loaded yet.
 * @return 0; INFERD_E_INVALID (an option: the message names it; a model id
 * given twice), INFERD_E_IO (the address cannot be bound: the message says
 * which and why), INFERD_E_NOMEM, INFERD_E_INTERNAL.
 */
int inferd_server_create(const inferd_server_opts *opts, inferd_server **out_server,
                         inferd_error *err);

/** The port listened on (the one chosen when opts.port was 0). */
uint16_t inferd_server_port(const inferd_server *s);

/**
 * Load every configured model through the registry, in order; READY once
 * all are loaded. @return 0, or the first load's error (the message names
 * the model). Thread: the owner.
 */
int inferd_server_load_models(inferd_server *s, inferd_error *err);

/** What the loaded models take: weights + state bytes, and their sequence
 * slots together. */
void inferd_server_capacity(inferd_server *s, uint64_t *out_memory_bytes,
                            uint32_t *out_slots_total);

/**
 * Drain: new inference requests get 503 (code "unavailable"), /health
 * answers 503, the accepted requests are served for at most the grace
 * period and then end; returns when every model's scheduler has stopped and
 * the connections have answered (state STOPPED). Thread: the owner.
 */
void inferd_server_drain(inferd_server *s);

/** Stop listening (closing the connections left), unload the models and
 * free the server. Accepts NULL. */
void inferd_server_destroy(inferd_server *s);

#endif
