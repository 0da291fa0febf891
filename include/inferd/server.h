/* The HTTP door: OpenAI (/v1/completions, /v1/chat/completions,
 * /v1/models), KServe v2 / Open Inference Protocol (/v2/...) and operations
 * (/health, /metrics, /v1/status). See docs/http.md.
 *
 * A server serves the models of a request front end (inferd_frontend,
 * which owns them, their registry and the serving state). Each HTTP request
 * is parsed on one of the HTTP server's threads (our own HTTP/1.1 server
 * on epoll, http_threads of them), read through the front end's field
 * table and submitted through it. While a request waits for its events its connection is suspended and
 * costs no thread: the scheduler's events resume it, and the response is
 * one JSON body or an SSE stream written as tokens come. A client that
 * hangs up cancels its request. /health and the KServe readiness follow the
 * front end's state.
 *
 * Limits: max_connections open connections (plus a reserve of
 * INFERD_SERVER_OPS_RESERVE in which only the operations routes are
 * answered), max_client_connections per client address, receive_timeout_s
 * to receive a whole request however slowly it trickles; beyond a limit a
 * request is answered 503 with Retry-After at once. An operations port
 * (ops_port) serves /health, /metrics and /v1/status apart.
 *
 * Threads: the HTTP server's http_threads, a guard thread (limits, receive
 * deadlines, hang-ups, stream pings), two job threads (model loads) and a
 * ticker sampling throughput and CPU once a second. The functions below are
 * called by the owner's thread.
 */
#ifndef INFERD_SERVER_H
#define INFERD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/frontend.h"
#include "inferd/region.h"

typedef struct inferd_server inferd_server;

typedef struct inferd_server_opts {
    const char *host;                /* address to bind; default "127.0.0.1" */
    uint16_t port;                   /* 0: any free port (see inferd_server_port) */
    const char *api_key;             /* NULL/"": none; else "Authorization:
                                    * Bearer KEY" on every route but the
                                    * health probes */
    size_t max_body_bytes;           /* request body limit; default 1 MiB */
    uint32_t max_connections;        /* open connections; default 1024 */
    uint32_t conn_timeout_s;         /* a connection without progress this
                                      * long is closed; default 30 */
    uint32_t max_client_connections; /* per client address; 0: half of
                                      * max_connections (the default) */
    uint32_t receive_timeout_s;      /* to receive a whole request; default 30 */
    uint32_t http_threads;           /* HTTP event loops; default 2 */
    bool ops_listen;                 /* serve /health, /metrics, /v1/status
                                      * on ops_port too */
    uint16_t ops_port;               /* 0: any free port (inferd_server_ops_port) */
    const char *unix_path;           /* also serve on this Unix-domain socket
                                      * (NULL: none); removed at destroy */
    unsigned unix_mode;              /* its file mode; default 0600 */
    int shm_mode;                    /* system shared memory: 1 on every
                                      * listener, 0 off, -1 (default) on the
                                      * Unix socket and on a loopback host */
    uint32_t shm_ttl_s;              /* regions unused this long go; default
                                      * 600; 0: never */
    uint32_t shm_max_regions;        /* registered + created; default 1024 */
    uint64_t shm_max_bytes;          /* all created regions; default 1 GiB */
    uint32_t shm_session_regions;    /* created per session; default 64 */
    uint64_t shm_session_bytes;      /* created per session; default 256 MiB */
    const char *identity[8];         /* built-in identity models' names (KServe:
                                      * OUTPUTn = INPUTn, any type and shape) */
    size_t n_identity;
} inferd_server_opts;

/* Connections beyond max_connections kept for the operations routes. */
#define INFERD_SERVER_OPS_RESERVE 64

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
/** The shared-memory regions, for the other doors on this machine (NULL
 * with shm off); *on_tcp: served on the TCP port too (else the Unix socket
 * only). */
inferd_regions *inferd_server_regions(const inferd_server *s, bool *on_tcp);

/** The operations port (0 when opts.ops_listen was false). */
uint16_t inferd_server_ops_port(const inferd_server *s);

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
