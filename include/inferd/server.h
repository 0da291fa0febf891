/* The HTTP door: OpenAI (/v1/completions, /v1/chat/completions,
 * /v1/models), KServe v2 / Open Inference Protocol (/v2/...) and operations
 * (/health, /metrics, /v1/status). See docs/http.md.
 *
 * A server serves the models of a request front end (inferd_frontend,
 * which owns them, their registry and the serving state). Each HTTP request
 * is parsed on its connection's thread, read through the front end's field
 * table and submitted through it; the connection thread then waits for the
 * request's events (woken by the scheduler through an eventfd) and writes
 * the response: one JSON body, or an SSE stream. A client that hangs up
 * cancels its request. /health and the KServe readiness follow the front
 * end's state.
 *
 * Threads: libmicrohttpd's listener plus one thread per connection (bounded
 * by max_connections) and a ticker thread sampling throughput and CPU once
 * a second. The functions below are called by the owner's thread.
 */
#ifndef INFERD_SERVER_H
#define INFERD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/frontend.h"

typedef struct inferd_server inferd_server;

typedef struct inferd_server_opts {
    const char *host;         /* address to bind; default "127.0.0.1" */
    uint16_t port;            /* 0: any free port (see inferd_server_port) */
    const char *api_key;      /* NULL/"": none; else "Authorization:
                                    * Bearer KEY" on every route but the
                                    * health probes */
    size_t max_body_bytes;    /* request body limit; default 1 MiB */
    uint32_t max_connections; /* open connections; default 1024 */
    uint32_t conn_timeout_s;  /* idle connection timeout; default 30 */
} inferd_server_opts;

/** Defaults as documented on each field. */
inferd_server_opts inferd_server_opts_default(void);

/**
 * Validate @p opts and start listening for the models of @p fe (borrowed;
 * it must outlive the server).
 * @return 0; INFERD_E_INVALID (an option: the message names it),
 * INFERD_E_IO (the address cannot be bound: the message says which and
 * why), INFERD_E_NOMEM, INFERD_E_INTERNAL.
 */
int inferd_server_create(const inferd_server_opts *opts, inferd_frontend *fe,
                         inferd_server **out_server, inferd_error *err);

/** The port listened on (the one chosen when opts.port was 0). */
uint16_t inferd_server_port(const inferd_server *s);

/**
 * After inferd_frontend_drain (which ends every request): give the
 * connections still answering up to 2 s to finish.
 */
void inferd_server_drain(inferd_server *s);

/** Stop listening (closing the connections left) and free the server.
 * Drain the front end first, so that no connection waits on a request.
 * Accepts NULL. */
void inferd_server_destroy(inferd_server *s);

#endif
