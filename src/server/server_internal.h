/* Shared by the files of the HTTP server (server.c: daemon, routing,
 * errors, state; gen.c: running one request through a scheduler;
 * openai.c, kserve.c, ops.c: the endpoints). Not a public header. */
#ifndef INFERD_SERVER_INTERNAL_H
#define INFERD_SERVER_INTERNAL_H

#include <jansson.h>
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
#include "inferd/region.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"
#include "inferd/server.h"

#include "httpd.h"
#include "kvrun.h"

/* Bounds of the growable buffers (inferd_buf). */
#define SERVER_TEXT_MAX ((size_t)64 << 20)    /* a non-streamed completion's text */
#define SERVER_CHUNK_MAX ((size_t)16 << 20)   /* SSE output between two reads */
#define SERVER_METRICS_MAX ((size_t)16 << 20) /* the /metrics page */
#define SERVER_HEAD_MAX ((size_t)32 << 10)    /* a request's head (431 beyond) */

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
    EP_V2_SHM,
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

/* ---- connections (conn.c) ---- */

/* Parking a connection while it waits (for a request's events or for a
 * job): the waiting side sleeps from the connection's HTTP thread
 * (suspending the connection), the waking side may be any thread (resuming
 * it). A wake that comes before the sleep is kept, so none is lost. */
typedef struct waker {
    pthread_mutex_t mu;
    httpd_conn *hc;
    inferd_server *srv;
    bool suspended; /* httpd_suspend called, not resumed yet */
    bool pending;   /* woken while not suspended */
    bool fired;     /* woken at least once */
} waker;

void inferd__waker_init(waker *w, inferd_server *s, httpd_conn *hc);
void inferd__waker_destroy(waker *w);
/* From the connection's thread, in a handler or stream reader: suspend the
 * connection and return true, or false (without suspending) when a wake
 * came since the last sleep; then look again for what was awaited. */
bool inferd__waker_sleep(waker *w);
void inferd__waker_wake(waker *w); /* any thread */
/* Has @p w been woken since its init? */
bool inferd__waker_fired(waker *w);
/* The connection is gone: later wakes do nothing. */
void inferd__waker_detach(waker *w);

typedef enum conn_phase {
    PH_RECEIVING, /* a request is awaited or being received */
    PH_HANDLING,  /* a whole request was received: being answered */
} conn_phase;

/* One open connection, as the guard sees it (its httpd context). Guarded
 * by the server's guard_mu. */
typedef struct conn_track {
    struct conn_track *prev, *next;
    struct ip_count *ip; /* its client address's count */
    int fd;
    bool admitted;    /* within max_connections and its address's limit */
    bool shed;        /* shut down by the guard */
    conn_phase phase; /* since since_ns */
    uint64_t since_ns;
    uint64_t requests; /* answered on it */
} conn_track;

/* Which of the server's listeners a connection came in on. */
typedef struct listener {
    inferd_server *srv;
    bool ops;     /* the operations port: /health, /metrics, /v1/status only */
    bool is_unix; /* the Unix socket (--unix) */
} listener;

typedef struct http_conn http_conn;
typedef struct gen gen;
typedef void (*route_fn)(http_conn *c, const char *m, json_t *body);

int inferd__guard_start(inferd_server *s);
void inferd__guard_stop(inferd_server *s);
/* httpd's opened and closed (lcls: the listener). */
int inferd__conn_opened(void *lcls, httpd_conn *hc, int fd, const struct sockaddr *peer,
                        void **ctx);
void inferd__conn_closed(void *lcls, httpd_conn *hc, void *ctx);
/* The phase of connection @p hc. */
void inferd__conn_phase(inferd_server *s, httpd_conn *hc, conn_phase ph);
/* Is the connection of @p c beyond a limit (then only /health, /metrics,
 * /v1/status and /v2/health are answered, everything else a 503)? */
bool inferd__conn_over_limit(http_conn *c);
/* Open connections, and those within the limits. */
void inferd__conn_counts(inferd_server *s, uint32_t *n_conns, uint32_t *n_admitted);
/* Run fn(c, m, body) on a job thread (a model load, an unload, a request
 * that may have to load its model): c waits parked (ST_JOB) until the job
 * wakes c->wk. Takes the reference to @p body. 0, or -1 when the queue is
 * full (nothing taken). */
int inferd__job_post(http_conn *c, route_fn fn, const char *m, json_t *body);
/* Let go of @p g on a job thread (its request has not ended: the release
 * waits for the scheduler's next step). */
void inferd__job_release(inferd_server *s, gen *g);
int inferd__jobs_start(inferd_server *s);
void inferd__jobs_stop(inferd_server *s);

/* Watch @p g's client socket for a hang-up (which cancels its request),
 * and a stream for keep-alive pings. */
void inferd__guard_watch(inferd_server *s, gen *g);
void inferd__guard_unwatch(inferd_server *s, gen *g);

#define IP_BUCKETS 1024
#define JOBS_MAX 64
#define JOB_THREADS 2

typedef struct job {
    gen *release; /* a generation to let go of (else a route to run) */
    http_conn *c;
    route_fn fn;
    char m[INFERD_REGISTRY_ID_MAX];
    json_t *body;
} job;

struct inferd_server {
    inferd_server_opts o; /* strings below are owned copies */
    char *host, *api_key;
    size_t api_key_len;
    inferd_frontend *fe; /* borrowed: the models and their state */

    httpd *http; /* the listeners (main, and the operations port) */
    listener main_l, ops_l, unix_l;
    uint16_t port, ops_port;
    bool ops_listening;
    char *unix_path; /* the Unix socket made (removed at destroy), or NULL */
    uint64_t unix_ino;
    inferd_regions *regions;  /* shared-memory regions; NULL with --shm off */
    bool shm_tcp;             /* served on the TCP port too (loopback, or --shm on) */
    inferd_shm_caps shm_caps; /* probed at start (sizes refreshed per report) */
    /* Creates refused (shm.c): the session's or the worker's quota, shared
     * memory full (ENOSPC), or unavailable (no /dev/shm, shm_open fails).
     * The client then sends its tensors in the request body. */
    _Atomic uint64_t shm_refused_quota, shm_refused_full, shm_refused_unavailable;
    char *identity[8]; /* identity models (ktensor.c) */
    size_t n_identity;
    double t_start_s;
    atomic_int n_active; /* HTTP requests being handled */
    atomic_int n_parked; /* connections suspended */

    /* The guard (conn.c): connection limits, receive deadlines, hang-ups
     * of waiting clients, keep-alive pings of idle streams. */
    pthread_mutex_t guard_mu; /* guards the fields below to guard_stop */
    conn_track *conns;
    struct ip_count *ips[IP_BUCKETS];
    uint32_t n_conns, n_admitted;
    gen *watched; /* generations whose client is watched */
    int epfd, stop_fd;
    bool guard_stop, guard_running;
    pthread_t guard;
    _Atomic uint64_t n_refused, n_shed_idle, n_receive_timeouts, n_hangups;

    /* Jobs that may block (conn.c). */
    pthread_mutex_t job_mu;
    pthread_cond_t job_cv;
    job jobs[JOBS_MAX];
    uint32_t job_head, job_n;
    bool job_stop;
    pthread_t job_threads[JOB_THREADS];
    uint32_t n_job_threads;

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

typedef enum conn_stage {
    ST_NEW,  /* the request is being received */
    ST_JOB,  /* its route runs on a job thread */
    ST_GEN,  /* waiting for its generation's end */
    ST_DONE, /* answered (c->resp) or streaming */
} conn_stage;

struct http_conn {
    inferd_server *srv;
    const listener *l;
    httpd_conn *hc;
    const httpd_req *rq; /* the request's method, path, head and body */
    const char *bin;     /* binary tensor data after the JSON (Triton's binary
                            data extension), or NULL */
    size_t bin_len;
    conn_stage stage;
    waker wk; /* fired when its job ran */
    gen *g;   /* ST_GEN: the generation awaited */
    uint64_t t_start_ns;
    endpoint ep;
    api_kind api;
    unsigned status;  /* of the queued response */
    httpd_resp *resp; /* set by a handler, queued by the dispatcher */
    bool close;       /* the handler wants the connection closed */
    bool streamed;    /* a stream response was queued */
    bool over_limit;  /* its connection is beyond a limit */
    bool queued;      /* the response was queued */
};

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

typedef json_t *(*gen_build_fn)(gen *g, json_t *echo);
/* Answer c for g, DONE, with a response of its own making. */
typedef void (*gen_answer_fn)(gen *g, http_conn *c, void *ctx);
typedef void (*gen_fmt_fn)(gen *g, const inferd_event *ev);

struct gen {
    http_conn *c; /* NULL once streaming */
    inferd_server *srv;
    inferd_fe_request *fr;
    waker wk; /* woken by the scheduler's on_event, a hang-up, a ping */
    int sock; /* the client's socket (hang-up watch) */
    gen_kind kind;
    bool stream, include_usage, logprobs;
    uint32_t top_logprobs;
    char id[48];
    int64_t created;
    uint64_t t_start_ns; /* the HTTP request's start */

    /* The guard's (under guard_mu). */
    gen *wprev, *wnext;
    uint64_t watch_id; /* its socket's epoll key */
    bool watched;
    atomic_bool client_left;      /* hung up: the request was cancelled */
    atomic_bool ping_due;         /* a stream idle for STREAM_PING_MS */
    _Atomic uint64_t last_out_ns; /* a stream's last output */

    /* Non-streamed: the response's builder and what it echoes. */
    gen_build_fn build;
    json_t *echo;
    gen_answer_fn answer; /* or this, with its context */
    void *answer_ctx;
    void (*answer_free)(void *ctx);

    /* Collected output. */
    inferd_buf text;
    gen_token *toks; /* with logprobs: one per TOKEN event */
    size_t n_toks, cap_toks;
    bool want_ids;     /* keep the generated ids: */
    inferd_buf ids;    /* int32 each */
    inferd_event done; /* DONE or ERROR (strings not kept) */
    inferd_error err;  /* the ERROR event, as the front end raises it */
    bool ended;
    bool out_of_memory; /* a record of the output failed */

    /* Streaming. */
    gen_fmt_fn fmt;
    inferd_buf out;
    size_t out_pos;
    bool sent_head, finished;
};

#define STREAM_PING_MS 15000 /* an SSE comment after this long idle */

/* Submit @p in through the front end on behalf of @p c. On failure an
 * error response is set on c and NULL returned. */
gen *inferd__gen_start(http_conn *c, const inferd_fe_input *in, gen_kind kind);
void inferd__gen_free(gen *g);
void inferd__gen_release(gen *g); /* inferd__gen_free's end, on any thread */
/* Non-streamed: answer c with build(g, echo)'s JSON when @p g is DONE, the
 * matching HTTP error for an ERROR, nothing (the connection closed) when
 * the client left. Takes g and a reference to @p echo (may be NULL); the
 * connection waits parked for the end (inferd__gen_pump). */
void inferd__gen_respond(gen *g, gen_build_fn build, json_t *echo);
/* As inferd__gen_respond, answering with @p fn(g, c, ctx) when DONE;
 * @p ctx_free(ctx) when g goes (either way). */
void inferd__gen_answer(gen *g, gen_answer_fn fn, void *ctx, void (*ctx_free)(void *));
/* ST_GEN: read c->g's events; at the end set the response and free g:
 * true; false when it waits (the connection parked). */
bool inferd__gen_pump(http_conn *c);
/* Stream @p g as SSE: queue a 200 text/event-stream on g->c whose body is
 * made with @p fmt (called for each event, appends to g->out; g->finished
 * set when it wrote the end) as events come. Takes g. */
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
/* ktensor.c: KServe tensors (JSON, binary data, shared memory) and the
 * identity model. */
/* kserve.c: the KServe operations (kvrun.h) as @p c's listener serves them
 * (shared memory on the Unix socket, and on TCP by the --shm rule). */
kv_env inferd__kserve_env(const http_conn *c);
void inferd__kserve_identity(http_conn *c, const char *m, json_t *body);
/* A language model's /infer: text_input or input_ids in; text_output,
 * output_ids, logits, hidden out (ktensor.c). */
void inferd__kserve_llm(http_conn *c, const char *m, json_t *body);
/* shm.c: the system shared-memory extension ({r}: a region name; NULL:
 * all). */
bool inferd__shm_allowed(http_conn *c); /* else answered */
void inferd__shm_session(http_conn *c, char out[INFERD_REGION_SESSION_MAX]);
void inferd__shm_status(http_conn *c, const char *r);
void inferd__shm_register(http_conn *c, const char *r, json_t *body);
void inferd__shm_create(http_conn *c, const char *r, json_t *body);
void inferd__shm_unregister(http_conn *c, const char *r);
void inferd__ops_metrics(http_conn *c);
void inferd__ops_status(http_conn *c);

#endif
