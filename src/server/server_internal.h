/* Shared by the files of the HTTP server (server.c: daemon, routing,
 * errors, state; gen.c: running one request through a scheduler;
 * openai.c, kserve.c, ops.c: the endpoints). Not a public header. */
#ifndef INFERD_SERVER_INTERNAL_H
#define INFERD_SERVER_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/buf.h"
#include "inferd/clock.h"
#include "inferd/chat.h"
#include "inferd/frontend.h"
#include "inferd/log.h"
#include "inferd/procstat.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"
#include "inferd/server.h"

/* Bounds of the growable buffers (inferd_buf). */
#define SERVER_TEXT_MAX ((size_t)64 << 20)    /* a non-streamed completion's text */
#define SERVER_CHUNK_MAX ((size_t)16 << 20)   /* SSE output between two reads */
#define SERVER_METRICS_MAX ((size_t)16 << 20) /* the /metrics page */

/* ---- endpoints (for metrics) and the API a route belongs to ---- */

typedef enum endpoint {
    EP_NONE = 0,
    EP_HEALTH,
    EP_METRICS,
    EP_STATUS,
    EP_MODELS,
    EP_COMPLETIONS,
    EP_CHAT,
    EP_V2_SERVER,
    EP_V2_HEALTH,
    EP_V2_MODEL,
    EP_V2_INFER,
    EP_V2_REPOSITORY,
    EP_COUNT
} endpoint;

extern const char *const inferd__server_endpoint_names[EP_COUNT];

typedef enum api_kind { API_OPENAI, API_KSERVE } api_kind;

#define HTTP_CODES_N 16 /* statuses counted one by one, then "other" */
extern const unsigned inferd__server_http_codes[HTTP_CODES_N];

/* A per-second sample for rates over the last minute. */
#define TICKS_N 61
typedef struct tick {
    double t_s; /* monotonic seconds */
    double cpu_s;
    uint64_t tokens_out, requests; /* the front end's counts */
} tick;

#define OVERHEAD_WINDOW 1000

struct inferd_server {
    inferd_server_opts o; /* strings below are owned copies */
    char *host, *api_key;
    size_t api_key_len;
    inferd_frontend *fe; /* borrowed: the models and their state */

    struct MHD_Daemon *daemon;
    uint16_t port;
    double t_start_s;
    atomic_int n_active;       /* HTTP requests being handled */
    inferd_log_limit mhd_warn; /* libmicrohttpd's messages, rate-limited */

    pthread_mutex_t mu; /* guards everything below */
    uint64_t http_count[EP_COUNT][HTTP_CODES_N + 1];
    double overhead_sum_s; /* HTTP + JSON time of non-streamed requests */
    uint64_t overhead_n;
    double overhead_win[OVERHEAD_WINDOW];
    uint32_t overhead_next, overhead_filled;
    tick ticks[TICKS_N];
    uint32_t tick_next, tick_filled;
    pthread_cond_t tick_cv;
    bool tick_stop;
    pthread_t ticker;
    bool ticker_running;
};

/* ---- one HTTP request ---- */

typedef struct gen gen;

typedef struct http_conn {
    inferd_server *srv;
    struct MHD_Connection *mc;
    uint64_t t_start_ns;
    inferd_buf body;  /* bounded by max_body_bytes */
    bool too_large;   /* the body passed max_body_bytes */
    uint64_t dropped; /* bytes dropped since */
    endpoint ep;
    api_kind api;
    unsigned status;           /* of the queued response */
    struct MHD_Response *resp; /* set by a handler, queued by the dispatcher */
    bool close;                /* the handler wants the connection closed */
    bool streamed;             /* a stream response was queued */
} http_conn;

/* Responses (set c->resp and c->status). */
void inferd__http_json(http_conn *c, unsigned status, json_t *body); /* steals body */
void inferd__http_text(http_conn *c, unsigned status, const char *content_type, char *text,
                       size_t len);
/* text: malloc'd (free()), taken */
/* Error @p e as the route's API answers it (OpenAI or KServe face). */
void inferd__http_fail(http_conn *c, const inferd_error *e);
/* An error of code @p code (INFERD_E_*) about @p param (or NULL). */
void inferd__http_error(http_conn *c, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The index of served model @p id (NULL: the default), or -1 and a 404
 * response. */
int inferd__server_find_model(http_conn *c, const char *id);

/* Count a non-streamed generation's HTTP and JSON time. */
void inferd__server_count_overhead(inferd_server *s, double overhead_s);

/* ---- generation (gen.c) ---- */

typedef enum gen_kind { GEN_COMPLETION, GEN_CHAT, GEN_KSERVE } gen_kind;

typedef struct gen_token { /* one generated token, for logprobs */
    int32_t id;
    float logprob;
    uint32_t n_top;
    int32_t top_ids[INFERD_TOP_LOGPROBS_MAX];
    float top_lp[INFERD_TOP_LOGPROBS_MAX];
    size_t text_offset; /* in the generated text */
} gen_token;

struct gen {
    http_conn *c; /* NULL once the HTTP request is over */
    inferd_server *srv;
    inferd_fe_request *fr;
    int efd;  /* eventfd the scheduler's on_event bumps */
    int sock; /* the client's socket (hang-up check) */
    gen_kind kind;
    bool stream, include_usage, logprobs;
    uint32_t top_logprobs;
    char id[48];
    int64_t created;
    uint64_t t_start_ns; /* the HTTP request's start */

    /* Collected output. */
    inferd_buf text;
    gen_token *toks; /* with logprobs: one per TOKEN event */
    size_t n_toks, cap_toks;
    inferd_event done; /* DONE or ERROR (strings not kept) */
    inferd_error err;  /* the ERROR event, as the front end raises it */
    bool ended;
    bool out_of_memory; /* a record of the output failed */

    /* Streaming. */
    inferd_buf out;
    size_t out_pos;
    bool sent_head, finished;
};

/* Submit @p in through the front end on behalf of @p c. On failure an
 * error response is set on c and NULL returned. */
gen *inferd__gen_start(http_conn *c, const inferd_fe_input *in, gen_kind kind);
/* What waiting for a request's next event gave. */
typedef enum gen_wait {
    GEN_EVENT = 0,   /* an event (recorded in g) */
    GEN_ENDED,       /* the terminal event was read before */
    GEN_IDLE,        /* nothing within the idle time asked for */
    GEN_CLIENT_LEFT, /* the client hung up: the request is cancelled */
} gen_wait;

/* The next event into g (text, tokens, done), waiting as long as it takes:
 * GEN_EVENT and *ev, GEN_ENDED or GEN_CLIENT_LEFT. */
gen_wait inferd__gen_next(gen *g, inferd_event *ev);
/* Read to the end (non-streamed): GEN_ENDED (done or error in g->done), or
 * GEN_CLIENT_LEFT. */
gen_wait inferd__gen_collect(gen *g);
void inferd__gen_free(gen *g);
/* Non-streamed: read @p g to its end and set the response on its
 * connection: build(g, ctx)'s JSON when it is DONE, the matching HTTP error
 * for an ERROR, none when the client left. Counts it, frees g. */
typedef json_t *(*gen_build_fn)(gen *g, void *ctx);
void inferd__gen_respond(gen *g, gen_build_fn build, void *ctx);
/* Stream @p g as SSE: queue a 200 text/event-stream on g->c whose body the
 * connection thread produces with @p fmt (called for each event, appends to
 * g->out; g->finished set when it wrote the end). Takes g. */
typedef void (*gen_fmt_fn)(gen *g, const inferd_event *ev);
void inferd__gen_stream(gen *g, gen_fmt_fn fmt);
/* Text of token @p id for logprobs (not NUL-terminated); returns length. */
size_t inferd__gen_token_text(const gen *g, int32_t id, char *buf, size_t cap);
/* The id of the model serving @p g. */
const char *inferd__gen_model(const gen *g);
const char *inferd__gen_finish_name(inferd_finish f);

/* ---- endpoints ---- */

void inferd__openai_models(http_conn *c, const char *one_id);
void inferd__openai_completions(http_conn *c, json_t *body);
void inferd__openai_chat(http_conn *c, json_t *body);
void inferd__kserve_server(http_conn *c);
void inferd__kserve_health(http_conn *c, bool ready);
void inferd__kserve_model(http_conn *c, const char *m, const char *what);
void inferd__kserve_infer(http_conn *c, const char *m, json_t *body);
void inferd__kserve_repository_index(http_conn *c, json_t *body);
void inferd__kserve_repository_load(http_conn *c, const char *m, bool load);
void inferd__ops_health(http_conn *c);
void inferd__ops_metrics(http_conn *c);
void inferd__ops_status(http_conn *c);

#endif
