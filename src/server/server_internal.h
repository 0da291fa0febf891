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

#include "inferd/chat.h"
#include "inferd/procstat.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"
#include "inferd/server.h"

/* ---- growable byte buffer ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;                   /* an append ran out of memory */
} sbuf;

void sbuf_add(sbuf *b, const void *data, size_t n);
void sbuf_addf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(sbuf *b);

/* ---- served models ---- */

typedef struct served {
    char id[INFERD_REGISTRY_ID_MAX];
    char *path;
    pthread_mutex_t mu;
    bool tmpl_ready;               /* mu: tmpl was chosen */
    inferd_chat_template tmpl;
    int64_t created_s;             /* file mtime, for /v1/models "created" */
    atomic_bool load_failed;       /* the last load of it failed */
} served;

/* ---- endpoints (for metrics) and the API a route belongs to ---- */

typedef enum endpoint {
    EP_NONE = 0, EP_HEALTH, EP_METRICS, EP_STATUS, EP_MODELS, EP_COMPLETIONS, EP_CHAT,
    EP_V2_SERVER, EP_V2_HEALTH, EP_V2_MODEL, EP_V2_INFER, EP_V2_REPOSITORY,
    EP_COUNT
} endpoint;

extern const char *const server_endpoint_names[EP_COUNT];

typedef enum api_kind { API_OPENAI, API_KSERVE } api_kind;

#define HTTP_CODES_N 16            /* statuses counted one by one, then "other" */
extern const unsigned server_http_codes[HTTP_CODES_N];

typedef enum server_state {
    SERVER_LOADING, SERVER_READY, SERVER_DRAINING, SERVER_STOPPED,
} server_state;

const char *server_state_name(server_state st);

/* A per-second sample for rates over the last minute. */
#define TICKS_N 61
typedef struct tick {
    double t_s;                    /* monotonic seconds */
    double cpu_s;
    uint64_t tokens_out, requests;
} tick;

#define OVERHEAD_WINDOW 1000

struct inferd_server {
    inferd_server_opts o;          /* strings below are owned copies */
    char *host, *api_key;
    size_t api_key_len;
    served *models;
    size_t n_models;
    bool tmpl_forced;
    inferd_chat_template tmpl_force;

    inferd_registry *reg;
    struct MHD_Daemon *daemon;
    uint16_t port;
    double t_start_s;

    atomic_int state;              /* server_state */
    atomic_int n_active;           /* HTTP requests being handled */

    pthread_mutex_t mu;            /* guards everything below */
    uint64_t http_count[EP_COUNT][HTTP_CODES_N + 1];
    uint64_t gen_tokens, gen_requests;    /* generation requests answered */
    double overhead_sum_s;         /* HTTP + JSON time of non-streamed requests */
    uint64_t overhead_n;
    double overhead_win[OVERHEAD_WINDOW];
    uint32_t overhead_next, overhead_filled;
    tick ticks[TICKS_N];
    uint32_t tick_next, tick_filled;
    pthread_cond_t tick_cv;
    bool tick_stop;
    pthread_t ticker;
    bool ticker_running;
    struct inferd_nats_worker *nats; /* mu: the NATS worker attached, or NULL */
};

/* ---- one HTTP request ---- */

typedef struct gen gen;

typedef struct http_conn {
    inferd_server *srv;
    struct MHD_Connection *mc;
    uint64_t t_start_ns;
    sbuf body;
    bool too_large;                /* the body passed max_body_bytes */
    uint64_t dropped;              /* bytes dropped since */
    endpoint ep;
    api_kind api;
    unsigned status;               /* of the queued response */
    struct MHD_Response *resp;     /* set by a handler, queued by the dispatcher */
    bool close;                    /* the handler wants the connection closed */
    bool streamed;                 /* a stream response was queued */
} http_conn;

/* Responses (set c->resp and c->status). */
void http_json(http_conn *c, unsigned status, json_t *body); /* steals body */
void http_text(http_conn *c, unsigned status, const char *content_type, char *text, size_t len);
                                   /* text: malloc'd (free()), taken */
void http_error(http_conn *c, unsigned status, const char *code, const char *param,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The OpenAI error "type" that goes with an HTTP status. */
const char *server_openai_type(unsigned status);
/* An inferd error code and message as an HTTP error (status from the code). */
void http_error_code(http_conn *c, int code, const char *param, const char *msg);

double server_now_s(void);
uint64_t server_now_ns(void);

/* The served model named @p id (NULL/absent: the default); NULL and a 404
 * response when not served. */
served *server_find_model(http_conn *c, const char *id);

/* The chat template of @p sm, detected from the model on first use. */
inferd_chat_template server_model_template(inferd_server *s, served *sm,
                                           const inferd_model *m);

/* A handle to @p sm, loading it if needed, with the server's options. */
int server_get_model(inferd_server *s, served *sm, inferd_registry_handle **h,
                     inferd_error *err);

/* A handle to @p sm for an inference request; NULL and the error response
 * (503 while shutting down or unloading, the load's error) on failure. */
inferd_registry_handle *server_request_model(http_conn *c, served *sm);

void server_count_generation(inferd_server *s, uint32_t n_gen, double overhead_s,
                             bool has_overhead);

/* ---- generation (gen.c) ---- */

typedef enum gen_kind { GEN_COMPLETION, GEN_CHAT, GEN_KSERVE } gen_kind;

typedef struct gen_token {         /* one generated token, for logprobs */
    int32_t id;
    float logprob;
    uint32_t n_top;
    int32_t top_ids[INFERD_TOP_LOGPROBS_MAX];
    float top_lp[INFERD_TOP_LOGPROBS_MAX];
    size_t text_offset;            /* in the generated text */
} gen_token;

struct gen {
    http_conn *c;                  /* NULL once the HTTP request is over */
    inferd_server *srv;
    served *sm;
    inferd_registry_handle *h;
    const inferd_vocab *vocab;
    inferd_request *req;
    int efd;                       /* eventfd the scheduler's on_event bumps */
    int sock;                      /* the client's socket (hang-up check) */
    gen_kind kind;
    bool stream, include_usage, logprobs;
    uint32_t top_logprobs;
    char id[48];
    int64_t created;
    uint64_t t_start_ns;           /* the HTTP request's start */

    /* Collected output. */
    sbuf text;
    gen_token *toks;               /* with logprobs: one per TOKEN event */
    size_t n_toks, cap_toks;
    size_t piece_len_sum;          /* text offsets of the tokens' pieces */
    inferd_event done;             /* DONE or ERROR (strings not kept) */
    char err_msg[256];
    bool ended;

    /* Streaming. */
    sbuf out;
    size_t out_pos;
    bool sent_head, finished;
};

/* Submit @p p for @p sm on behalf of @p c. On failure an error response is
 * set on c and NULL returned. */
gen *gen_start(http_conn *c, served *sm, inferd_request_params *p, gen_kind kind);
/* The next event into g (text, tokens, done): 0 and *ev; 1 at the end (the
 * terminal event was read before); INFERD_E_CANCELLED when the client hung
 * up (the request is cancelled). */
int gen_next(gen *g, inferd_event *ev);
/* Read to the end (non-streamed). @return 0 done/error in g->done; or
 * INFERD_E_CANCELLED (client gone). */
int gen_collect(gen *g);
/* Count a DONE non-streamed request, its response built: HTTP and JSON
 * time is the time since the request began less the scheduler's. */
void gen_count(gen *g);
void gen_free(gen *g);
/* Non-streamed: read @p g to its end and set the response on its
 * connection: build(g, ctx)'s JSON when it is DONE, the matching HTTP error
 * for an ERROR, none when the client left. Counts it, frees g. */
typedef json_t *(*gen_build_fn)(gen *g, void *ctx);
void gen_respond(gen *g, gen_build_fn build, void *ctx);
/* For an ERROR event: set the matching HTTP error on c. */
void gen_error_response(gen *g);
/* Stream @p g as SSE: queue a 200 text/event-stream on g->c whose body the
 * connection thread produces with @p fmt (called for each event, appends to
 * g->out; g->finished set when it wrote the end). Takes g. */
typedef void (*gen_fmt_fn)(gen *g, const inferd_event *ev);
void gen_stream(gen *g, gen_fmt_fn fmt);
/* Text of token @p id for logprobs (not NUL-terminated); returns length. */
size_t gen_token_text(const gen *g, int32_t id, char *buf, size_t cap);
const char *gen_finish_name(inferd_finish f);

/* ---- request parameters shared by the APIs (params.c) ---- */

/* A request's error, before it is an HTTP response or a NATS error event. */
typedef struct req_err {
    unsigned status;               /* HTTP status: 400, 404, 500, 503, ... */
    const char *code;              /* static: "invalid_type", "invalid_value", ... */
    const char *param;             /* static: the field it is about, or NULL */
    char msg[256];
} req_err;

/* Set @p e; returns -1. */
int req_fail(req_err *e, unsigned status, const char *code, const char *param, const char *fmt,
             ...) __attribute__((format(printf, 5, 6)));
/* @p e as the HTTP error response of c. */
void http_req_error(http_conn *c, const req_err *e);

/* Field readers: 0 (absent or null: *out untouched; else read and checked),
 * or -1 with e set (wrong type, out of [lo, hi]). */
json_t *param_field(json_t *body, const char *name); /* present and not null */
const char *param_type_name(const json_t *v);
int param_number(req_err *e, json_t *body, const char *name, double lo, double hi, float *out);
int param_int(req_err *e, json_t *body, const char *name, int64_t lo, int64_t hi, int64_t *out,
              bool *given);
int param_bool(req_err *e, json_t *body, const char *name, bool *out);
int param_stop(req_err *e, json_t *body, inferd_request_params *p); /* "stop" */
int param_priority(req_err *e, json_t *body, inferd_request_params *p); /* "priority" */
/* "messages": required, a non-empty array. */
int param_messages(req_err *e, json_t *msgs);
/* Render checked @p msgs ({role, content: string or text parts}) with @p t:
 * the prompt (inferd_free) and its length, or NULL with e set. */
char *param_render_messages(req_err *e, json_t *msgs, inferd_chat_template t, size_t *len);

typedef struct gen_opts {
    bool stream, include_usage;
    bool logprobs;
    uint32_t top_logprobs;
} gen_opts;

/* Read the sampling and generation fields of an OpenAI-style @p body into
 * @p p (stop strings point into body). @p chat selects chat's names for
 * logprobs. On error sets e and returns -1. */
int params_from_json(req_err *e, json_t *body, bool chat, int32_t default_max_tokens,
                     inferd_request_params *p, gen_opts *go);

/* ---- endpoints ---- */

void openai_models(http_conn *c, const char *one_id);
void openai_completions(http_conn *c, json_t *body);
void openai_chat(http_conn *c, json_t *body);
void kserve_server(http_conn *c);
void kserve_health(http_conn *c, bool ready);
void kserve_model(http_conn *c, const char *m, const char *what);
void kserve_infer(http_conn *c, const char *m, json_t *body);
void kserve_repository_index(http_conn *c, json_t *body);
void kserve_repository_load(http_conn *c, const char *m, bool load);
void ops_health(http_conn *c);
void ops_metrics(http_conn *c);
void ops_status(http_conn *c);

/* ---- the NATS worker (natsw.c) ---- */

/* The worker's part of /v1/status (NULL when none). Called with s->mu held. */
json_t *natsw_status_json(struct inferd_nats_worker *w);

#endif
