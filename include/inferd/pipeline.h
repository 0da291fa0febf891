/* inferd pipeline: nodes in their own processes (built-in C nodes, Python
 * nodes), joined by channels (inferd/channel.h), started and watched by a
 * manager (this API, `inferd pipeline run`). docs/pipeline.md.
 *
 * A manifest (JSON) names the channels, the nodes (kind, options, input
 * and output channels) and the pipeline's own inputs and outputs (channels
 * the caller publishes into and receives from). The manager checks it,
 * makes the channels (sealed memfds), starts every node (fork + exec, with
 * a SOCK_SEQPACKET control socket), hands each its channels' descriptors,
 * and watches them (pidfds, control sockets, stderr pipes, in one epoll
 * loop on its own thread): start-up progress, readiness, and any exit.
 * A node that exits or crashes fails the pipeline: the channels are shut
 * down (every wait wakes), the other nodes are stopped (SIGKILL after a
 * 100 ms grace), and the caller's calls return an error naming the node,
 * its exit status or signal, and the last lines of its stderr.
 *
 * Samples on every channel start with an inferd_sample_header. Sessions:
 * a pipeline serves many streams of inputs at once; each sample carries
 * its session's id, and a session ends with an END sample, which every
 * node passes on. */
#ifndef INFERD_PIPELINE_H
#define INFERD_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "inferd/channel.h"
#include "inferd/error.h"

/* ---- samples ---- */

#define INFERD_SAMPLE_MAGIC 0x53444649u /* "IFDS" */
#define INFERD_SAMPLE_DIMS 4

enum {
    INFERD_SAMPLE_END = 1u,  /* the session ends (no payload) */
    INFERD_SAMPLE_TEXT = 2u, /* the payload is UTF-8 text (elem U8, ndim 1) */
};

/* 64 bytes at the start of every sample; the payload follows. */
typedef struct inferd_sample_header {
    uint32_t magic; /* INFERD_SAMPLE_MAGIC */
    uint32_t flags; /* INFERD_SAMPLE_* */
    uint64_t session;
    uint32_t elem; /* inferd_elem of the payload (not BYTES) */
    uint32_t ndim; /* 0..INFERD_SAMPLE_DIMS */
    int64_t shape[INFERD_SAMPLE_DIMS];
    uint64_t bytes; /* payload bytes after the header */
} inferd_sample_header;

_Static_assert(sizeof(inferd_sample_header) == 64, "the sample header is 64 bytes");

/** Check the header of a received sample of @p len bytes (magic, element
 * type, shape against bytes, bytes within @p len). @return 0 or
 * INFERD_E_FORMAT with what is wrong. */
int inferd_sample_check(const void *sample, uint64_t len, inferd_error *err);

/* ---- the manager ---- */

typedef struct inferd_pipeline inferd_pipeline;

typedef enum inferd_node_state {
    INFERD_NODE_STARTING = 0,     /* its process is starting */
    INFERD_NODE_INITIALIZING = 1, /* it has its configuration, loading */
    INFERD_NODE_READY = 2,        /* initialized, waiting for the others */
    INFERD_NODE_RUNNING = 3,      /* processing */
    INFERD_NODE_STOPPING = 4,     /* asked to stop */
    INFERD_NODE_STOPPED = 5,      /* exited when asked */
    INFERD_NODE_FAILED = 6,       /* exited on its own, crashed or reported an error */
} inferd_node_state;

const char *inferd_node_state_name(inferd_node_state s);

typedef struct inferd_node_info {
    char name[64];
    char kind[32];
    inferd_node_state state;
    double progress;   /* start-up, 0..1 */
    char message[128]; /* its last progress message */
    pid_t pid;
} inferd_node_info;

/* Called on the manager's thread on every state or progress change, and at
 * least every 2 s until every node is ready; it must not call back into the
 * pipeline. */
typedef void (*inferd_pipeline_progress_fn)(void *ctx, const inferd_node_info *nodes, size_t n);

typedef struct inferd_pipeline_opts {
    const char *inferd_exe; /* built-in nodes run as `EXE pipeline-node`;
                             * NULL: $INFERD_EXE, else this program */
    const char *python;     /* Python nodes: NULL: $INFERD_PYTHON, else /usr/bin/python3 */
    inferd_pipeline_progress_fn on_progress;
    void *ctx;
} inferd_pipeline_opts;

/**
 * Check the manifest @p json (relative paths in it are taken from
 * @p base_dir; NULL: the working directory). @return 0;
 * INFERD_E_BAD_JSON, INFERD_E_INVALID with the exact fault (an unknown
 * node kind, a channel nobody publishes or two publish, a missing channel,
 * a cycle, a bad option...), its param the manifest path of the field
 * ("nodes[1].options.model").
 */
int inferd_pipeline_check(const char *json, const char *base_dir, inferd_error *err);

/**
 * Check the manifest, make its channels and start its nodes. The nodes
 * initialize in parallel; inferd_pipeline_wait_ready waits for them.
 * @return 0 and *out; the errors of inferd_pipeline_check; INFERD_E_IO
 * (a process, socket or memfd could not be made).
 */
int inferd_pipeline_start(const char *json, const char *base_dir, const inferd_pipeline_opts *opts,
                          inferd_pipeline **out, inferd_error *err);

/**
 * Wait until every node is ready (then they all run), up to @p timeout_ms
 * (< 0: no limit). @return 0; INFERD_E_TIMEOUT naming the nodes still
 * loading with their progress; the pipeline's failure (INFERD_E_UNAVAILABLE
 * "node 'x' ...").
 */
int inferd_pipeline_wait_ready(inferd_pipeline *p, int64_t timeout_ms, inferd_error *err);

/** The nodes now: up to @p cap into @p out; @return how many there are. */
size_t inferd_pipeline_nodes(inferd_pipeline *p, inferd_node_info *out, size_t cap);

/** A descriptor that becomes readable once the pipeline failed or every
 * node exited (poll it beside other input; do not read or close it). */
int inferd_pipeline_fd(inferd_pipeline *p);

/** The pipeline's failure, if it failed: @return 0 (running or stopped
 * cleanly) or its error code with *err filled. */
int inferd_pipeline_failure(inferd_pipeline *p, inferd_error *err);

/**
 * Send a sample of session @p session into the pipeline's input channel
 * @p channel: @p h's flags, elem, ndim and shape (magic, session and bytes
 * are filled here), @p bytes of @p data copied into the loaned slot. Waits
 * up to @p timeout_ms for room. @return 0; INFERD_E_NOT_FOUND (no such
 * input), INFERD_E_TOO_LARGE (over the channel's slot), INFERD_E_TIMEOUT,
 * the pipeline's failure.
 */
int inferd_pipeline_send(inferd_pipeline *p, const char *channel, uint64_t session,
                         const inferd_sample_header *h, const void *data, uint64_t bytes,
                         int64_t timeout_ms, inferd_error *err);

/** Send UTF-8 @p text (INFERD_SAMPLE_TEXT) into @p channel for @p session. */
int inferd_pipeline_send_text(inferd_pipeline *p, const char *channel, uint64_t session,
                              const char *text, size_t len, int64_t timeout_ms, inferd_error *err);

/** End session @p session on every input channel of the pipeline. */
int inferd_pipeline_end(inferd_pipeline *p, uint64_t session, int64_t timeout_ms,
                        inferd_error *err);

/* A received sample: its header and payload (read-only, in the channel's
 * memory) until inferd_pipeline_release. */
typedef struct inferd_pipeline_sample {
    const inferd_sample_header *h;
    const void *data;
    inferd_sample s_; /* the channel's */
    int ch_;
} inferd_pipeline_sample;

/**
 * The next sample of the pipeline's output channel @p channel (samples of
 * every session, in the order published; END samples included).
 * @return 0 and *out; INFERD_E_NOT_FOUND (no such output), INFERD_E_TIMEOUT,
 * the pipeline's failure.
 */
int inferd_pipeline_receive(inferd_pipeline *p, const char *channel, int64_t timeout_ms,
                            inferd_pipeline_sample *out, inferd_error *err);
void inferd_pipeline_release(inferd_pipeline *p, inferd_pipeline_sample *s);

/**
 * Stop: every node is asked to stop and given @p grace_ms to exit (then
 * SIGKILL); the channels are shut down. @return 0, or the pipeline's
 * failure if it failed before.
 */
int inferd_pipeline_stop(inferd_pipeline *p, int64_t grace_ms, inferd_error *err);

/** Stop (if running, with 1 s of grace) and free. NULL is fine. */
void inferd_pipeline_destroy(inferd_pipeline *p);

/* ---- a node (the `inferd pipeline-node` program and its built-in nodes) ---- */

/** Run the built-in node whose control socket is @p ctl_fd (given by the
 * manager): read its configuration, initialize, report, process until
 * stopped. @return the process's exit status. */
int inferd_node_main(int ctl_fd);

#endif
