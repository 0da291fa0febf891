/* The gRPC door's options: the same with or without gRPC built in. */
#include "inferd/grpcd.h"

inferd_grpc_opts inferd_grpc_opts_default(void)
{
    inferd_grpc_opts o = {0};
    o.host = "127.0.0.1";
    o.tcp = true;
    o.max_message_bytes = (size_t)64 << 20;
    o.max_calls = 1024;
    o.max_stream_requests = 64;
    o.pump_threads = 2;
    o.idle_timeout_s = 30;
    return o;
}
