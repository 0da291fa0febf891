/* The client library's shared parts (not a public header). */
#ifndef INFERD_CLIENT_INTERNAL_H
#define INFERD_CLIENT_INTERNAL_H

#include <curl/curl.h>
#include <sys/uio.h>
#include <stdbool.h>
#include <stddef.h>

#include "inferd/buf.h"
#include "inferd/client.h"

/* One HTTP exchange with the worker. */
typedef struct client_call {
    /* In. */
    const char *method; /* "GET" or "POST" */
    const char *path;   /* "/v1/..." */
    const char *content_type;
    const char *extra_header; /* "Name: value", or NULL */
    const void *req;          /* the body, or: */
    size_t req_len;
    const struct iovec *iov; /* its pieces, sent in order without a copy */
    int n_iov;
    int64_t timeout_ms; /* 0: the client's */
    bool keep_error;    /* a non-2xx answer is not made an error here */
    /* A 200 answer's body goes to sink as it comes (a stream) instead of
     * into body: 0 goes on; nonzero stops the transfer, with cancelled set
     * (the caller's wish) or sink_failed and sink_err. */
    int (*sink)(void *ctx, const char *p, size_t n);
    void *sink_ctx;
    bool cancelled, sink_failed;
    inferd_error sink_err;
    /* Out. */
    long status;
    inferd_buf body;
    size_t json_len; /* Inference-Header-Content-Length */
    bool has_json_len;
    CURL *h;
} client_call;

/* Run @p k: 0 with a 2xx answer (k->body, k->status); the worker's error
 * for another status (unless keep_error); INFERD_E_TRANSPORT,
 * INFERD_E_CANCELLED. inferd__client_call_fini(k) after, always. */
int inferd__client_call(inferd_client *c, client_call *k, inferd_error *err);
void inferd__client_call_fini(client_call *k);

#endif
