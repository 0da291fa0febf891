/* The gRPC door when inferd is built without gRPC (-DINFERD_GRPC=OFF): the
 * options exist, creating one says why it cannot be. */
#include "inferd/grpcd.h"

bool inferd_grpc_built(void) { return false; }

int inferd_grpc_create(const inferd_grpc_opts *opts, inferd_frontend *fe, inferd_grpc **out,
                       inferd_error *err)
{
    (void)opts, (void)fe;
    *out = NULL;
    return inferd_fail(err, INFERD_E_UNSUPPORTED,
                       "this inferd was built without the gRPC door (-DINFERD_GRPC=OFF)");
}

uint16_t inferd_grpc_port(const inferd_grpc *g)
{
    (void)g;
    return 0;
}

void inferd_grpc_drain(inferd_grpc *g) { (void)g; }
void inferd_grpc_destroy(inferd_grpc *g) { (void)g; }

uint32_t inferd_grpc_active_calls(const inferd_grpc *g)
{
    (void)g;
    return 0;
}
