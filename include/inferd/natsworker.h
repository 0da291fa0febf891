/* The NATS door: joins a NATS cluster on behalf of a request front end
 * (inferd_frontend), with or without an HTTP server beside it. It
 * registers (worker.register, retried with backoff until a controller
 * answers, and again after every reconnection), publishes heartbeats with
 * measured figures, takes inference requests on worker.{id}.inference and,
 * in queue group "inferd", on inference.{model} for each loaded model,
 * streams their events to response.{requestId} (and the message's reply
 * subject), answers worker.{id}.models.load|unload|list, and the NATS
 * micro-service discovery subjects $SRV.PING|INFO|STATS. See docs/nats.md.
 *
 * States: IDLE (created) -> CONNECTING (started; also while the connection
 * is lost) -> REGISTERING (connected and subscribed; requests are served)
 * -> READY (a controller acknowledged the registration) -> DRAINING
 * (inferd_nats_worker_drain) -> STOPPED (inferd_nats_worker_destroy).
 *
 * Threads: libnats's own (connection, one delivery thread per
 * subscription, which run the control and discovery handlers), one thread
 * that registers and sends heartbeats, and one thread per inference request
 * while it runs (bounded: past the server's capacity requests get
 * "overloaded" at once). The functions below are called by the owner's
 * thread. HTTP serving never depends on the NATS connection. The worker's
 * figures appear in the front end's status sections as "worker".
 */
#ifndef INFERD_NATSWORKER_H
#define INFERD_NATSWORKER_H

#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/frontend.h"

typedef struct inferd_nats_worker inferd_nats_worker;

typedef struct inferd_nats_opts {
    const char *url;             /* NATS server(s): "nats://h:p[,nats://h2:p2]" */
    const char *worker_id;       /* required; a subject token (no '.', ' ', '*', '>') */
    const char *tags;            /* comma-separated; NULL: none */
    int64_t heartbeat_ms;        /* default 5000 */
    int64_t register_timeout_ms; /* wait for the acknowledgement; default 2000 */
    size_t max_msg_bytes;        /* largest request message; default 1 MiB */
    const char *advertise_host;  /* "ip" in the registration; NULL: http_host,
                                    * or when that is a wildcard or absent the
                                    * local address of the NATS connection */
    const char *http_host;       /* the HTTP door's address, or NULL: none */
    uint16_t http_port;          /* its port ("port" in the registration,
                                    * null when 0) */
    const char *inbox_prefix;    /* events go to a request's reply subject
                                  * only when it starts with this; default
                                  * "_INBOX." (the NATS clients' inboxes) */
    const char *control_token;   /* NULL: none; else control requests must
                                  * carry "token": this */
} inferd_nats_opts;

/** Defaults as documented on each field; url and worker_id NULL. */
inferd_nats_opts inferd_nats_opts_default(void);

/** Check @p opts as create does (before anything is started). @return 0 or
 * INFERD_E_INVALID (the message names the option). */
int inferd_nats_opts_check(const inferd_nats_opts *opts, inferd_error *err);

/**
 * Create the worker for the models of @p fe (borrowed; it must outlive the
 * worker), in state IDLE. At most one per front end. @return 0;
 * INFERD_E_INVALID (a bad option: the message names it; a second worker),
 * INFERD_E_NOMEM.
 */
int inferd_nats_worker_create(inferd_frontend *fe, const inferd_nats_opts *opts,
                              inferd_nats_worker **out, inferd_error *err);

/**
 * Connect and subscribe (once the server's models are loaded), then
 * register and send heartbeats. An unreachable NATS server is not an error:
 * the worker keeps trying in the background (state CONNECTING).
 * @return 0; INFERD_E_INVALID (a URL libnats refuses), INFERD_E_IO,
 * INFERD_E_NOMEM.
 */
int inferd_nats_worker_start(inferd_nats_worker *w, inferd_error *err);

/**
 * Stop taking requests (DRAINING): drain every subscription (messages
 * already delivered are still served) and publish a heartbeat saying so.
 * Call before inferd_frontend_drain. Accepts NULL.
 */
void inferd_nats_worker_drain(inferd_nats_worker *w);

/**
 * Wait for the running requests' threads (call after inferd_frontend_drain,
 * which ends them), publish the last heartbeat (status "offline"), close the
 * connection and free the worker (STOPPED). Accepts NULL.
 */
void inferd_nats_worker_destroy(inferd_nats_worker *w);

#endif
