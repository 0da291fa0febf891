/* A small HTTP/1.1 server (RFC 9112) on epoll: listeners, connections,
 * requests and responses, for the server module's doors. Not a public
 * header.
 *
 * Threads: httpd_opts.threads event loops. Each watches every listener
 * (EPOLLEXCLUSIVE) and owns the connections it accepted; every callback
 * for a connection runs on its loop's thread, one at a time. A connection
 * that waits (for a generation, a job, the next token of a stream) is
 * suspended: it costs its memory and no thread, and httpd_resume (any
 * thread) hands it back to its loop.
 *
 * A request, seen by ops.request:
 * - HTTPD_CALL_HEAD once its head is in and valid (http1.c says what is
 *   refused before this: 400, 431, 505, 417). The handler may queue a
 *   response now (the body is then not read and the connection closes).
 * - The body is read (Content-Length or chunked) up to opts.max_body
 *   (beyond: 413 and close); "Expect: 100-continue" is answered first.
 * - HTTPD_CALL_BODY once it is all in, and again after each resume, until
 *   the handler has queued a response.
 * - ops.completed when the response was sent or the connection ended.
 * Connections are kept alive (HTTP/1.1, or HTTP/1.0 with keep-alive) and
 * pipelined requests answered in order. A connection closed after an
 * answer (an error, Connection: close) is shut for writing and its unread
 * input drained for a moment first, so that the client reads the answer
 * instead of a reset. */
#ifndef INFERD_SERVER_HTTPD_H
#define INFERD_SERVER_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "http1.h"
#include "inferd/error.h"

typedef struct httpd httpd;
typedef struct httpd_conn httpd_conn;
typedef struct httpd_resp httpd_resp;

/* The request being answered on a connection: valid from the HEAD call to
 * ops.completed. Strings are NUL-terminated. */
typedef struct httpd_req {
    const http1_request *head; /* the parsed head (views into the connection) */
    const char *method;
    const char *path;  /* the target's path, percent-decoded (no query) */
    const char *query; /* after '?', as sent, or "" */
    const char *body;  /* HTTPD_CALL_BODY: the whole body (decoded when chunked) */
    size_t body_len;
} httpd_req;

typedef enum httpd_call {
    HTTPD_CALL_HEAD, /* the head is in */
    HTTPD_CALL_BODY, /* the body is in, or the connection was resumed */
} httpd_call;

/* Callbacks; @p lcls is the listener's (httpd_listen). */
typedef struct httpd_ops {
    /* A connection was accepted: 0 (*ctx is its context), or -1 to close it
     * unanswered. */
    int (*opened)(void *lcls, httpd_conn *hc, int fd, const struct sockaddr *peer, void **ctx);
    void (*closed)(void *lcls, httpd_conn *hc, void *ctx);
    /* A request (see above). Returns 0, or -1 to close the connection now.
     * At HTTPD_CALL_BODY the handler returns having queued a response or
     * suspended the connection; neither closes it. */
    int (*request)(void *lcls, httpd_conn *hc, const httpd_req *rq, httpd_call call,
                   void **req_ctx);
    /* A request ended: its response (of @p status) was sent, or (@p status
     * 0) its connection closed first. @p req_ctx is the handler's to free;
     * NULL for a request refused before the handler saw it. */
    void (*completed)(void *lcls, httpd_conn *hc, void *req_ctx, unsigned status);
    /* The server refuses a request itself (@p status 400, 413, 417, 431 or
     * 505, @p why a sentence; @p target the request target as sent, cut to
     * 63 bytes, or NULL when the head did not parse): the response to send,
     * or NULL for a plain-text one. */
    httpd_resp *(*refused)(void *lcls, unsigned status, const char *target, const char *why);
} httpd_ops;

typedef struct httpd_opts {
    uint32_t threads;        /* event loops, 1..64 */
    uint32_t idle_timeout_s; /* a connection without progress this long is
                                closed (not while suspended); 0: never */
    size_t max_head;         /* bytes of a request head (431 beyond) */
    size_t max_body;         /* bytes of a request body (413 beyond) */
} httpd_opts;

/* A server with no listeners yet; its loops start at once. */
int httpd_create(const httpd_opts *o, const httpd_ops *ops, httpd **out_h, inferd_error *err);
/* Serve listening socket @p fd (taken: closed by httpd_destroy), at most
 * @p max_conns connections at once (more are closed as accepted). */
int httpd_listen(httpd *h, int fd, uint32_t max_conns, void *lcls, inferd_error *err);
/* Stop: listeners closed, every connection closed (its request completed).
 * No connection may be suspended any more. NULL is fine. */
void httpd_destroy(httpd *h);

/* Open a TCP listening socket on @p host:@p port (0: any free port);
 * *out_port gets the port bound. */
int httpd_tcp_socket(const char *host, uint16_t port, int *out_fd, uint16_t *out_port,
                     inferd_error *err);

/* Open a Unix-domain listening socket at @p path with mode @p mode. A
 * socket file already there is replaced only when nobody listens on it;
 * any other file there is an error. *out_ino gets the socket file's inode
 * (httpd_unix_unlink removes it only if it is still that file). */
int httpd_unix_socket(const char *path, unsigned mode, int *out_fd, uint64_t *out_ino,
                      inferd_error *err);
void httpd_unix_unlink(const char *path, uint64_t ino);

int httpd_conn_fd(const httpd_conn *hc);
void *httpd_conn_ctx(const httpd_conn *hc);

/* A response whose body is @p data (@p len bytes; taken: @p free_data(data)
 * when sent, may be NULL for static data). NULL without memory (data is
 * freed). */
httpd_resp *httpd_resp_buffer(char *data, size_t len, void (*free_data)(void *));
/* A streamed response: @p read fills up to @p max bytes of @p buf and
 * returns how many; 0 when nothing is ready (after httpd_suspend: resumed,
 * it is called again), HTTPD_STREAM_END at the end, HTTPD_STREAM_ERROR to
 * close the connection. Sent with the chunked coding (HTTP/1.0: until the
 * connection closes). @p free_cls(cls) when done. */
#define HTTPD_STREAM_END (-1)
#define HTTPD_STREAM_ERROR (-2)
httpd_resp *httpd_resp_stream(ssize_t (*read)(void *cls, char *buf, size_t max), void *cls,
                              void (*free_cls)(void *cls));
/* Add a header line. "Connection: close" closes the connection after the
 * response. 0, or INFERD_E_NOMEM / INFERD_E_INVALID (a CR, LF or NUL). */
int httpd_resp_header(httpd_resp *r, const char *name, const char *value);
void httpd_resp_free(httpd_resp *r);

/* Answer the request on @p hc with @p status and @p r (taken), from its
 * loop's thread (in ops.request). */
void httpd_queue(httpd_conn *hc, unsigned status, httpd_resp *r);
/* From @p hc's loop thread, in ops.request or a stream's read: stop
 * serving @p hc until httpd_resume. */
void httpd_suspend(httpd_conn *hc);
/* Any thread, once per httpd_suspend. */
void httpd_resume(httpd_conn *hc);

#endif
