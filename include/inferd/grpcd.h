/* The gRPC door: the KServe v2 inference service
 * (inference.GRPCInferenceService, proto/grpc_service.proto) on a TCP port
 * and/or a Unix socket, over the same front end, shared-memory regions and
 * identity models as the HTTP door. See docs/grpc.md.
 *
 * The service is one C++ translation unit (src/grpc/grpc.cc, gRPC's
 * callback API) behind this C API; KServe itself is the server layer's
 * (kvrun.h), as the HTTP routes use it. Built without gRPC
 * (-DINFERD_GRPC=OFF), inferd_grpc_create answers INFERD_E_UNSUPPORTED.
 *
 * No thread waits on a request: unary calls and streams are reactors that
 * a small pump (pump_threads) answers as the scheduler's events come. A
 * call beyond max_calls (running at once) is refused RESOURCE_EXHAUSTED,
 * as is a request the model's queue cannot take.
 *
 * Threads: gRPC's own, and the pump's. The functions below belong to the
 * owner's thread.
 */
#ifndef INFERD_GRPCD_H
#define INFERD_GRPCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/frontend.h"
#include "inferd/region.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct inferd_grpc inferd_grpc;

typedef struct inferd_grpc_opts {
    const char *host;                /* address to bind; default "127.0.0.1" */
    bool tcp;                        /* listen on host:port (default true) */
    uint16_t port;                   /* 0: any free port (inferd_grpc_port) */
    const char *unix_path;           /* also (or only) on this Unix socket; NULL: none.
                                  Removed at destroy */
    const char *api_key;             /* NULL/"": none; else metadata "authorization:
                                  Bearer KEY" on every call but ServerLive and
                                  ServerReady */
    size_t max_message_bytes;        /* a request message; default 64 MiB */
    uint32_t max_calls;              /* calls running at once (streams count one each,
                                  unary calls one each); default 1024 */
    uint32_t max_stream_requests;    /* requests running at once on one stream;
                                  default 64 */
    uint32_t pump_threads;           /* default 2 */
    uint32_t idle_timeout_s;         /* a connection with no call this long is
                                        closed (gRPC's max connection idle);
                                        default 30; 0: never */
    inferd_regions *regions;         /* the HTTP door's regions (borrowed), or NULL:
                                  system shared memory not served */
    bool shm_tcp;                    /* shared memory on the TCP port too (else the
                                  Unix socket only); the HTTP door's rule */
    const inferd_shm_caps *shm_caps; /* borrowed; NULL: probed at create */
    const char *identity[8];         /* built-in identity models (as the HTTP door's) */
    size_t n_identity;
} inferd_grpc_opts;

/** Defaults as documented on each field. */
inferd_grpc_opts inferd_grpc_opts_default(void);

/** Was inferd built with the gRPC door? */
bool inferd_grpc_built(void);

/**
 * Start serving @p fe (borrowed; it outlives the door).
 * @return 0; INFERD_E_INVALID (an option), INFERD_E_IO (the address or the
 * socket cannot be bound: the message says which), INFERD_E_UNSUPPORTED
 * (built without gRPC), INFERD_E_NOMEM, INFERD_E_INTERNAL.
 */
int inferd_grpc_create(const inferd_grpc_opts *opts, inferd_frontend *fe, inferd_grpc **out,
                       inferd_error *err);

/** The TCP port listened on (0 without one). */
uint16_t inferd_grpc_port(const inferd_grpc *g);

/** After inferd_frontend_drain (which ended every request): stop taking
 * calls, give those still answering up to 2 s, then cancel the rest. */
void inferd_grpc_drain(inferd_grpc *g);

/** Drain if not drained, stop and free. Accepts NULL. */
void inferd_grpc_destroy(inferd_grpc *g);

/** Calls running now (unary and streams). */
uint32_t inferd_grpc_active_calls(const inferd_grpc *g);

#ifdef __cplusplus
}
#endif

#endif
