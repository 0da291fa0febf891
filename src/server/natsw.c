/* The NATS worker (see include/inferd/natsworker.h and docs/nats.md). */
#include "inferd/natsworker.h"

#include <nats/nats.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/buf.h"
#include "inferd/clock.h"
#include "inferd/cpu.h"
#include "inferd/frontend.h"
#include "inferd/host.h"
#include "inferd/log.h"
#include "inferd/region.h"
#include "inferd/procstat.h"

#include "doors.h"

#define COMP "nats"
#define QUEUE_GROUP "inferd"
#define SERVICE_NAME "inferd"
#define REQUEST_ID_MAX 128
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 10000
#define RECONNECT_BUF_BYTES (8 << 20)
#define NATS_TEXT_MAX (64 << 20) /* the done event's text */

typedef enum nw_state {
    NW_IDLE,
    NW_CONNECTING,
    NW_REGISTERING,
    NW_READY,
    NW_DRAINING,
    NW_STOPPED,
} nw_state;

static const char *state_name(int st)
{
    static const char *const names[] = {"idle",  "connecting", "registering",
                                        "ready", "draining",   "stopped"};
    return (unsigned)st < 6 ? names[st] : "?";
}

/* Endpoints, for $SRV.INFO and $SRV.STATS. */
enum { EPI_DIRECT, EPI_LOAD, EPI_UNLOAD, EPI_LIST, EPI_MODEL0 };
#define EPS_N (EPI_MODEL0 + INFERD_FE_MODELS_MAX)

typedef struct nw_endpoint {
    char name[INFERD_REGISTRY_ID_MAX + 16];
    char subject[INFERD_REGISTRY_ID_MAX + 16];
    bool queue;  /* in queue group "inferd" */
    bool active; /* subscribed */
    uint64_t n_requests, n_errors, time_ns;
    char last_error[160];
} nw_endpoint;

/* The $SRV requests, in the order of their subjects (three each). */
typedef enum srv_verb { SRV_PING = 0, SRV_INFO, SRV_STATS } srv_verb;

/* The closure of a subscription. */
typedef enum sub_kind { SUB_INFER, SUB_LOAD, SUB_UNLOAD, SUB_LIST, SUB_SRV } sub_kind;
typedef struct nw_sub {
    struct inferd_nats_worker *w;
    sub_kind kind;
    int ep;        /* endpoint index (SUB_INFER: direct or a model) */
    srv_verb verb; /* SUB_SRV: which $SRV request */
    natsSubscription *sub;
} nw_sub;

#define SRV_SUBS 9

struct inferd_nats_worker {
    inferd_frontend *fe;
    inferd_nats_opts o; /* strings below are owned copies */
    char *url, *id, *advertise, *http_host, *inbox_prefix, *control_token;
    char **tags;
    size_t n_tags;
    char hostname[256];
    uint32_t max_inflight;
    const char **live_rids; /* (max_inflight) mu: requestIds in flight, or NULL */

    natsOptions *nopts;
    natsConnection *nc;
    atomic_int state; /* nw_state */
    atomic_bool connected;
    atomic_int n_inflight; /* request threads running */
    atomic_uint_least64_t n_requests, n_malformed, n_rejected, n_bad_reply, n_duplicate;

    pthread_mutex_t mu;     /* guards what follows */
    pthread_cond_t cv;      /* the control thread's wake-up */
    pthread_cond_t idle_cv; /* n_inflight dropped */
    bool stop;
    bool need_register;            /* (re)connected and not yet acknowledged */
    bool reg_pending;              /* a registration awaits its reply */
    uint64_t reg_seq;              /* attempt number: the reply subject's last token */
    double reg_deadline, next_reg; /* monotonic seconds */
    int64_t backoff_ms;
    char reg_inbox[128]; /* replies come on reg_inbox.{seq} */
    natsSubscription *reg_sub;
    uint64_t n_reconnects, n_registrations, n_register_attempts, n_heartbeats;
    char last_error[256];
    inferd_log_limit warn_malformed, warn_reply;
    nw_endpoint eps[EPS_N];
    nw_sub direct, ctl[3], srv_subs[SRV_SUBS], models[INFERD_FE_MODELS_MAX];
    pthread_t thread;
    bool thread_running;
    double started_unix_s;

    /* Heartbeat rates. */
    pthread_mutex_t hb_mu; /* guards hb_* */
    inferd_procstat hb_ps;
    uint64_t hb_tokens;
    double hb_t_s;
    bool hb_primed;
};

/* ---- small helpers ---- */

static void set_last_error(inferd_nats_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_last_error(inferd_nats_worker *w, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&w->mu);
    va_start(ap, fmt);
    vsnprintf(w->last_error, sizeof(w->last_error), fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&w->mu);
}

/* Publish @p o (taken) as compact JSON on @p subject. */
static natsStatus publish_json(inferd_nats_worker *w, const char *subject, json_t *o)
{
    if (!o)
        return NATS_NO_MEMORY;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return NATS_NO_MEMORY;
    natsStatus st = natsConnection_Publish(w->nc, subject, s, (int)strlen(s));
    inferd_free(s);
    return st;
}

/* A model id as one subject token: [A-Za-z0-9_-] kept, the rest '_'. */
static void subject_token(const char *id, char *out, size_t cap)
{
    size_t i = 0;
    for (; id[i] && i + 1 < cap; i++) {
        char ch = id[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        out[i] = ok ? ch : '_';
    }
    out[i] = '\0';
}

/* Why @p rid cannot end a subject ("response.{rid}"), or NULL. */
static const char *request_id_problem(const char *rid, size_t len)
{
    if (len == 0)
        return "it is empty";
    if (len > REQUEST_ID_MAX)
        return "it is longer than 128 characters";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)rid[i];
        if (ch <= ' ' || ch == 0x7f)
            return "it has a space or control character";
        if (ch == '*' || ch == '>')
            return "it has a '*' or '>' (subject wildcards)";
        if (ch == '.' && (i == 0 || i + 1 == len || rid[i + 1] == '.'))
            return "it has an empty '.'-separated token";
    }
    return NULL;
}

static void ep_record(inferd_nats_worker *w, int ep, uint64_t ns, const char *error)
{
    pthread_mutex_lock(&w->mu);
    nw_endpoint *e = &w->eps[ep];
    e->n_requests++;
    e->time_ns += ns;
    if (error) {
        e->n_errors++;
        snprintf(e->last_error, sizeof(e->last_error), "%.159s", error); /* cut to fit */
    }
    pthread_mutex_unlock(&w->mu);
}

/* ---- host facts ---- */

static json_t *isa_json(const inferd_host_info *h)
{
    json_t *a = json_array();
    for (unsigned i = 0; i < INFERD_HOST_ISA_COUNT; i++)
        if (h->isa & (1u << i))
            json_array_append_new(a, json_string(inferd_host_isa_name(i)));
    return a;
}

static json_t *gpus_json(const inferd_host_info *h)
{
    json_t *a = json_array();
    for (uint32_t i = 0; i < h->n_gpus; i++) {
        const inferd_host_gpu *g = &h->gpus[i];
        json_array_append_new(a, json_pack("{s:i,s:s,s:s,s:s,s:I}", "index", (int)g->index,
                                           "vendor", g->vendor, "model", g->model, "busId",
                                           g->bus_id, "memoryBytes", (json_int_t)g->memory_bytes));
    }
    return a;
}

static double gib(uint64_t bytes) { return (double)bytes / (double)(1ull << 30); }

/* ---- figures of the served models ---- */

typedef struct figures {
    json_t *loaded; /* array of model ids */
    uint32_t slots, busy, queued;
    bool queue_full, load_failed;
    uint64_t handled, tokens_out, lat_count;
    double lat_sum_ms, p50, p95, p99;
} figures;

static void gather(inferd_nats_worker *w, figures *f)
{
    memset(f, 0, sizeof(*f));
    f->loaded = json_array();
    for (size_t i = 0; i < inferd_frontend_n_models(w->fe); i++) {
        inferd_sched_stats st;
        inferd_fe_model_info mi;
        inferd_frontend_model(w->fe, i, &mi);
        if (mi.load_failed)
            f->load_failed = true;
        if (inferd_frontend_sched_stats(w->fe, i, &st) != 0)
            continue;
        json_array_append_new(f->loaded, json_string(mi.id));
        uint32_t q = st.queue_depth[0] + st.queue_depth[1] + st.queue_depth[2];
        f->slots += st.n_slots;
        f->busy += st.slots_busy;
        f->queued += q;
        if (q >= st.n_queue_max)
            f->queue_full = true;
        f->handled += st.n_done + st.n_cancelled + st.n_timeout + st.n_failed;
        f->tokens_out += st.tokens_out;
        f->lat_sum_ms += st.latency_hist.sum_ms;
        f->lat_count += st.latency_hist.cumulative[INFERD_SCHED_HIST_N - 1];
        f->p50 = fmax(f->p50, st.latency.p50);
        f->p95 = fmax(f->p95, st.latency.p95);
        f->p99 = fmax(f->p99, st.latency.p99);
    }
}

static json_t *tags_json(const inferd_nats_worker *w)
{
    json_t *a = json_array();
    for (size_t i = 0; i < w->n_tags; i++)
        json_array_append_new(a, json_string(w->tags[i]));
    return a;
}

/* The address to advertise: the option, the server's host, or the local
 * address of the NATS connection when the host is a wildcard. */
static void advertise_ip(inferd_nats_worker *w, char *out, size_t cap)
{
    const char *host = w->http_host ? w->http_host : "";
    if (w->advertise) {
        snprintf(out, cap, "%s", w->advertise);
        return;
    }
    if (strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0 && strcmp(host, "") != 0) {
        snprintf(out, cap, "%s", host);
        return;
    }
    char *ip = NULL;
    int port = 0;
    if (natsConnection_GetLocalIPAndPort(w->nc, &ip, &port) == NATS_OK && ip) {
        snprintf(out, cap, "%s", ip);
        free(ip);
    } else {
        snprintf(out, cap, "%s", host);
    }
}

static json_t *registration(inferd_nats_worker *w)
{
    figures f;
    gather(w, &f);
    char ip[128];
    advertise_ip(w, ip, sizeof(ip));
    inferd_host_info host;
    inferd_host_read(&host, NULL);
    uint64_t avail = host.mem_available_bytes;
    inferd_registry_metrics rm;
    inferd_frontend_registry_metrics(w->fe, &rm);
    if (rm.budget_bytes > 0) {
        uint64_t left =
            rm.budget_bytes > rm.bytes_resident ? rm.budget_bytes - rm.bytes_resident : 0;
        if (left < avail)
            avail = left;
    }
    json_t *loadable = json_array();
    for (size_t i = 0; i < inferd_frontend_n_models(w->fe); i++) {
        inferd_fe_model_info mi;
        inferd_frontend_model(w->fe, i, &mi);
        json_array_append_new(loadable, json_string(mi.id));
    }
    inferd_shm_caps shm;
    inferd_shm_caps_detect(&shm);
    return json_pack(
        "{s:s,s:s,s:s,s:o,s:o,s:s,s:{s:s,s:i,s:o,s:s,s:f,s:f,s:o},s:{s:i,s:f,s:o,s:o,s:{s:b,s:b,"
        "s:I,s:I}},s:s,s:I}",
        "workerId", w->id, "hostname", w->hostname, "ip", ip, "port",
        w->o.http_port ? json_integer(w->o.http_port) : json_null(), "tags", tags_json(w),
        "version", INFERD_VERSION, "hardware", "cpuModel", host.cpu_model, "cpuCores",
        (int)host.n_cpus, "isa", isa_json(&host), "kernels", inferd_isa_name(inferd_cpu_isa()),
        "memoryTotalGB", gib(host.mem_total_bytes), "memoryAvailableGB",
        gib(host.mem_available_bytes), "gpus", gpus_json(&host), "capabilities", "maxConcurrent",
        (int)f.slots, "availableMemoryGB", gib(avail), "models", f.loaded, "loadableModels",
        loadable, "sharedMemory", "shm", shm.shm, "memfd", shm.memfd, "shmTotalBytes",
        (json_int_t)shm.shm_total_bytes, "shmFreeBytes", (json_int_t)shm.shm_free_bytes, "status",
        state_name(atomic_load(&w->state)), "timestamp", (json_int_t)inferd_unix_ms());
}

static json_t *heartbeat(inferd_nats_worker *w, bool offline)
{
    figures f;
    gather(w, &f);
    inferd_procstat ps;
    inferd_error e = {0};
    inferd_procstat_read(&ps, &e);
    pthread_mutex_lock(&w->hb_mu);
    double now = inferd_now_s(), cpu = 0, tps = 0;
    if (w->hb_primed && now > w->hb_t_s) {
        cpu = inferd_procstat_cpu_percent(&w->hb_ps, &ps, now - w->hb_t_s);
        if (f.tokens_out >= w->hb_tokens)
            tps = (double)(f.tokens_out - w->hb_tokens) / (now - w->hb_t_s);
    }
    w->hb_ps = ps;
    w->hb_t_s = now;
    w->hb_tokens = f.tokens_out;
    w->hb_primed = true;
    pthread_mutex_unlock(&w->hb_mu);
    int st = atomic_load(&w->state);
    const char *status = offline                           ? "offline"
                         : st == NW_DRAINING               ? "draining"
                         : (f.queue_full || f.load_failed) ? "degraded"
                                                           : "ready";
    return json_pack(
        "{s:s,s:s,s:s,s:I,s:o,s:{s:f,s:f,s:i,s:i,s:I,s:f,s:f,s:f,s:f,s:f},s:o}", "workerId", w->id,
        "status", status, "state", state_name(offline ? NW_STOPPED : st), "timestamp",
        (json_int_t)inferd_unix_ms(), "tags", tags_json(w), "metrics", "cpuUsagePercent", cpu,
        "memoryUsedGB", gib(ps.rss_bytes), "activeRequests", (int)f.busy, "queueDepth",
        (int)f.queued, "totalRequestsHandled", (json_int_t)f.handled, "avgLatencyMs",
        f.lat_count ? f.lat_sum_ms / (double)f.lat_count : 0.0, "p50LatencyMs", f.p50,
        "p95LatencyMs", f.p95, "p99LatencyMs", f.p99, "tokensPerSecond", tps, "modelsLoaded",
        f.loaded);
}

/* ---- registration and heartbeats (the control thread) ---- */

/* A failed or unanswered registration: try again after the backoff.
 * Called with mu held. */
static void register_retry(inferd_nats_worker *w)
{
    double jitter = 0.5 + (double)rand() / ((double)RAND_MAX + 1.0);
    w->reg_pending = false;
    w->next_reg = inferd_now_s() + (double)w->backoff_ms * jitter / 1e3;
    inferd_log_debug(COMP, "registration not taken (%s): again in %.0f ms", w->last_error,
                     (w->next_reg - inferd_now_s()) * 1e3);
    w->backoff_ms = w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : w->backoff_ms * 2;
}

/* The answer to a registration (libnats delivery thread): any reply takes
 * it unless it says {"ok": false}; "no responders" does not. */
static void on_register_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                              void *closure)
{
    (void)nc;
    (void)sub;
    inferd_nats_worker *w = closure;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subj, '.');
    uint64_t seq = dot ? strtoull(dot + 1, NULL, 10) : 0;
    bool no_responders = natsMsg_IsNoResponders(msg);
    int len = natsMsg_GetDataLength(msg);
    json_t *a = no_responders ? NULL : json_loadb(natsMsg_GetData(msg), (size_t)len, 0, NULL);
    json_t *ok = json_is_object(a) ? json_object_get(a, "ok") : NULL;
    bool taken = !no_responders && !json_is_false(ok);
    pthread_mutex_lock(&w->mu);
    if (w->reg_pending && seq == w->reg_seq) {
        if (taken) {
            w->reg_pending = false;
            w->need_register = false;
            w->n_registrations++;
            w->backoff_ms = BACKOFF_MIN_MS;
            int expected = NW_REGISTERING;
            atomic_compare_exchange_strong(&w->state, &expected, NW_READY);
            inferd_log_info(COMP, "registered as worker '%s'", w->id);
        } else {
            if (no_responders)
                snprintf(w->last_error, sizeof(w->last_error),
                         "worker.register: no controller is listening");
            else
                snprintf(w->last_error, sizeof(w->last_error), "worker.register refused: %.*s",
                         len > 160 ? 160 : len, natsMsg_GetData(msg));
            register_retry(w);
        }
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    json_decref(a);
    natsMsg_Destroy(msg);
}

/* Publish the registration with reply subject reg_inbox.{seq}. */
static void register_send(inferd_nats_worker *w)
{
    json_t *o = registration(w);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char reply[sizeof(w->reg_inbox) + 24];
    pthread_mutex_lock(&w->mu);
    w->n_register_attempts++;
    uint64_t seq = ++w->reg_seq;
    w->reg_pending = true;
    w->reg_deadline = inferd_now_s() + (double)w->o.register_timeout_ms / 1e3;
    snprintf(reply, sizeof(reply), "%s.%llu", w->reg_inbox, (unsigned long long)seq);
    pthread_mutex_unlock(&w->mu);
    natsStatus st =
        s ? natsConnection_PublishRequest(w->nc, "worker.register", reply, s, (int)strlen(s))
          : NATS_NO_MEMORY;
    inferd_free(s);
    if (st != NATS_OK) {
        pthread_mutex_lock(&w->mu);
        snprintf(w->last_error, sizeof(w->last_error), "worker.register: %s",
                 natsStatus_GetText(st));
        if (seq == w->reg_seq)
            register_retry(w);
        pthread_mutex_unlock(&w->mu);
    }
}

/* The control thread: registration attempts and heartbeats, neither
 * waiting for the other (a registration's reply comes on its own
 * subscription). */
static void *control_main(void *arg)
{
    inferd_nats_worker *w = arg;
    double next_hb = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        double now = inferd_now_s();
        bool conn = atomic_load(&w->connected);
        if (w->reg_pending && now >= w->reg_deadline) {
            snprintf(w->last_error, sizeof(w->last_error),
                     "worker.register: no reply within %lld ms",
                     (long long)w->o.register_timeout_ms);
            register_retry(w);
        }
        if (conn && w->need_register && !w->reg_pending && now >= w->next_reg) {
            pthread_mutex_unlock(&w->mu);
            register_send(w);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (conn && now >= next_hb) {
            pthread_mutex_unlock(&w->mu);
            natsStatus st = publish_json(w, "worker.heartbeat", heartbeat(w, false));
            pthread_mutex_lock(&w->mu);
            if (st == NATS_OK)
                w->n_heartbeats++;
            next_hb = now + (double)w->o.heartbeat_ms / 1e3;
            continue;
        }
        pthread_mutex_unlock(&w->mu);
        inferd_alloc_released(0); /* what a rate-limited trim left */
        pthread_mutex_lock(&w->mu);
        double wake = conn ? next_hb : now + 1.0;
        if (w->reg_pending && w->reg_deadline < wake)
            wake = w->reg_deadline;
        if (conn && w->need_register && !w->reg_pending && w->next_reg < wake)
            wake = w->next_reg;
        double dt = wake - now;
        if (dt < 0.001)
            dt = 0.001;
        inferd_cond_wait_until_ns(&w->cv, &w->mu, inferd_now_ns() + (uint64_t)(dt * 1e9));
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- connection events (libnats threads) ---- */

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    inferd_nats_worker *w = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(w->nc ? w->nc : nc, url, sizeof(url));
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->connected, true);
    int st = atomic_load(&w->state);
    if (st == NW_CONNECTING || st == NW_READY || st == NW_REGISTERING) {
        atomic_store(&w->state, NW_REGISTERING);
        w->need_register = true;
        w->reg_pending = false; /* a reply to an earlier attempt no longer counts */
        w->reg_seq++;
        w->next_reg = 0; /* register at once */
        w->backoff_ms = BACKOFF_MIN_MS;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    inferd_log_info(COMP, "connected to %s", url);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    inferd_nats_worker *w = closure;
    pthread_mutex_lock(&w->mu);
    w->n_reconnects++;
    pthread_mutex_unlock(&w->mu);
    on_connected(nc, closure);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    inferd_nats_worker *w = closure;
    bool was = atomic_exchange(&w->connected, false);
    int st = atomic_load(&w->state);
    if (st == NW_REGISTERING || st == NW_READY)
        atomic_store(&w->state, NW_CONNECTING);
    if (was && st < NW_DRAINING)
        inferd_log_warn(COMP, "connection to NATS lost: reconnecting (HTTP keeps serving)");
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    inferd_nats_worker *w = closure;
    atomic_store(&w->connected, false);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    inferd_nats_worker *w = closure;
    set_last_error(w, "%s", natsStatus_GetText(err));
    inferd_log_warn(COMP, "NATS error: %s", natsStatus_GetText(err));
}

/* ---- inference ---- */

static int subscribe_model(inferd_nats_worker *w, size_t i);
static void unsubscribe_model(inferd_nats_worker *w, size_t i);

typedef struct job {
    inferd_nats_worker *w;
    natsMsg *msg;
    int ep;                    /* endpoint it came on */
    const char *subject_model; /* the model of inference.{model}, or NULL */
    uint64_t t0_ns;
    char rid[REQUEST_ID_MAX + 1]; /* the requestId once read, else "" */
    bool has_rid;                 /* events go to response.{rid} */
    int rid_slot;                 /* its entry in live_rids, or -1 */
    const char *reply;            /* the message's reply subject when it is an
                                    * inbox (events go there too), else NULL */
    char subject[REQUEST_ID_MAX + 16];
} job;

/* Publish one event of @p j: to response.{requestId} and the reply subject. */
static void emit(job *j, json_t *ev)
{
    char *s = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
    json_decref(ev);
    if (!s)
        return;
    int n = (int)strlen(s);
    if (j->has_rid)
        natsConnection_Publish(j->w->nc, j->subject, s, n);
    if (j->reply)
        natsConnection_Publish(j->w->nc, j->reply, s, n);
    inferd_free(s);
}

static void emit_error(job *j, const inferd_error *e)
{
    emit(j, inferd_fe_error_nats(e, j->rid[0] ? j->rid : NULL));
    ep_record(j->w, j->ep, inferd_now_ns() - j->t0_ns, e->msg);
}

static void emit_code(job *j, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void emit_code(job *j, int code, const char *fmt, ...)
{
    inferd_error e = {0};
    va_list ap;
    va_start(ap, fmt);
    inferd_vfail_param(&e, code, NULL, fmt, ap);
    va_end(ap);
    emit_error(j, &e);
}

/* The reply subject of @p msg if events may go there: an inbox (starts
 * with the inbox prefix, one subject, no wildcards), never a subject this
 * worker serves. NULL otherwise (a reply that is not an inbox is counted). */
static const char *inbox_of(inferd_nats_worker *w, natsMsg *msg)
{
    const char *reply = natsMsg_GetReply(msg);
    if (!reply || !*reply)
        return NULL;
    size_t n = strlen(w->inbox_prefix);
    bool ok = strncmp(reply, w->inbox_prefix, n) == 0 && reply[n] != '\0' &&
              !strpbrk(reply, " \t\r\n*>") && strlen(reply) < 256;
    if (ok)
        return reply;
    atomic_fetch_add(&w->n_bad_reply, 1);
    unsigned long long more = 0;
    if (inferd_log_allow(&w->warn_reply, &more))
        inferd_log_warn(COMP,
                        "request on %s with reply subject '%.64s', not an inbox (%s...): "
                        "events go to response.{requestId} only (%llu more since the last)",
                        natsMsg_GetSubject(msg), reply, w->inbox_prefix, (unsigned long long)more);
    return NULL;
}

/* Take j's requestId as in flight: false when another request has it. */
static bool rid_claim(inferd_nats_worker *w, job *j)
{
    bool dup = false;
    int slot = -1;
    pthread_mutex_lock(&w->mu);
    for (uint32_t i = 0; i < w->max_inflight && !dup; i++) {
        if (!w->live_rids[i])
            slot = slot < 0 ? (int)i : slot;
        else
            dup = strcmp(w->live_rids[i], j->rid) == 0;
    }
    if (!dup && slot >= 0) {
        w->live_rids[slot] = j->rid;
        j->rid_slot = slot;
    }
    pthread_mutex_unlock(&w->mu);
    return !dup;
}

static void rid_release(inferd_nats_worker *w, job *j)
{
    if (j->rid_slot < 0)
        return;
    pthread_mutex_lock(&w->mu);
    w->live_rids[j->rid_slot] = NULL;
    pthread_mutex_unlock(&w->mu);
    j->rid_slot = -1;
}

/* A message that cannot be answered on response.{requestId}. */
static void malformed(job *j, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void malformed(job *j, int code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    atomic_fetch_add(&j->w->n_malformed, 1);
    unsigned long long more = 0;
    if (inferd_log_allow(&j->w->warn_malformed, &more))
        inferd_log_warn(COMP, "malformed request on %s (%d bytes): %s%s (%llu more since the last)",
                        natsMsg_GetSubject(j->msg), natsMsg_GetDataLength(j->msg), msg,
                        j->reply ? "; error sent to its reply subject" : "", more);
    emit_code(j, code, "%s", msg);
}

/* The done event: the whole text, counts and timings. */
static void emit_done(job *j, const inferd_fe_request *r, const inferd_event *ev, const char *text,
                      size_t text_len, const char *session_id)
{
    json_t *d =
        json_pack("{s:s,s:s,s:s%,s:i,s:i,s:f,s:f,s:s,s:I,s:s}", "requestId", j->rid, "type", "done",
                  "text", text, text_len, "totalTokens", (int)ev->n_gen, "promptTokens",
                  (int)ev->n_prompt, "latencyMs", ev->total_ms, "ttftMs", ev->ttft_ms,
                  "finishReason", ev->finish == INFERD_FINISH_LENGTH ? "length" : "stop", "seed",
                  (json_int_t)ev->seed, "modelId", inferd_fe_request_model(r));
    if (d && session_id)
        json_object_set_new(d, "sessionId", json_string(session_id));
    emit(j, d);
    ep_record(j->w, j->ep, inferd_now_ns() - j->t0_ns, NULL);
}

/* Publish the events of @p r to their end. */
static void stream_events(job *j, inferd_fe_request *r, const char *session_id)
{
    inferd_buf text = INFERD_BUF_INIT(NATS_TEXT_MAX);
    for (;;) {
        inferd_event ev;
        if (inferd_fe_request_next(r, &ev, -1) != 0)
            break;
        if (ev.type == INFERD_EVENT_TOKEN) {
            inferd_buf_add(&text, ev.text, ev.text_len);
            emit(j, json_pack("{s:s,s:s,s:s%,s:i,s:i}", "requestId", j->rid, "type", "token",
                              "token", ev.text ? ev.text : "", ev.text_len, "tokenId", ev.token,
                              "index", (int)ev.index));
            continue;
        }
        inferd_error e = {0};
        if (ev.type == INFERD_EVENT_DONE)
            inferd_buf_add(&text, ev.text, ev.text_len);
        if (ev.type == INFERD_EVENT_DONE && text.err == 0) {
            emit_done(j, r, &ev, text.p ? text.p : "", text.len, session_id);
        } else {
            if (ev.type == INFERD_EVENT_DONE)
                inferd_fail(&e, text.err, "the completion's text does not fit %d bytes",
                            NATS_TEXT_MAX);
            else
                inferd_fe_event_error(r, &ev, &e);
            emit_error(j, &e);
        }
        break;
    }
    inferd_buf_free(&text);
}

/* Run one parsed request to its end, publishing its events. */
static void run_request(job *j, json_t *body)
{
    inferd_nats_worker *w = j->w;
    inferd_fe_input in;
    inferd_error e = {0};
    if (inferd_fe_read(&inferd__door_nats, body, &in, &e) < 0) {
        emit_error(j, &e);
        return;
    }
    if (!in.model)
        in.model = j->subject_model;
    inferd_fe_request *r = NULL;
    int rc = inferd_fe_submit(w->fe, &in, NULL, NULL, &r, &e);
    inferd_fe_input_free(&in);
    if (rc < 0) {
        emit_error(j, &e);
        return;
    }
    /* Loaded on demand: take its subject again. */
    int i = inferd_frontend_find(w->fe, inferd_fe_request_model(r), NULL);
    if (i >= 0)
        subscribe_model(w, (size_t)i);
    atomic_fetch_add(&w->n_requests, 1);
    stream_events(j, r, in.session_id);
    inferd_fe_request_release(r);
}

static void handle_request(job *j)
{
    inferd_nats_worker *w = j->w;
    const char *data = natsMsg_GetData(j->msg);
    size_t len = (size_t)natsMsg_GetDataLength(j->msg);
    /* The size first: nothing over the limit is parsed. */
    if (len > w->o.max_msg_bytes) {
        malformed(j, INFERD_E_TOO_LARGE,
                  "the message is too large: %zu bytes, over the limit of %zu", len,
                  w->o.max_msg_bytes);
        return;
    }
    json_t *body = NULL;
    inferd_error pe = {0};
    if (inferd_fe_parse_json(data, len, &body, &pe) < 0) {
        malformed(j, pe.code, "%s", pe.msg);
        return;
    }
    if (!json_is_object(body)) {
        malformed(j, INFERD_E_BAD_JSON, "the message must be a JSON object");
        json_decref(body);
        return;
    }
    json_t *rid = json_object_get(body, "requestId");
    if (!rid || json_is_null(rid)) {
        malformed(j, INFERD_E_BAD_JSON, "requestId: it is required");
    } else if (!json_is_string(rid)) {
        malformed(j, INFERD_E_BAD_JSON, "requestId: expected a string, got %s",
                  inferd_fe_type_name(rid));
    } else if (request_id_problem(json_string_value(rid), json_string_length(rid))) {
        malformed(j, INFERD_E_BAD_JSON, "requestId: %s",
                  request_id_problem(json_string_value(rid), json_string_length(rid)));
    } else {
        snprintf(j->rid, sizeof(j->rid), "%s", json_string_value(rid));
        if (!rid_claim(w, j)) {
            /* Its events would interleave with the running request's on
             * response.{requestId}: the refusal goes to the reply only. */
            atomic_fetch_add(&w->n_duplicate, 1);
            emit_code(j, INFERD_E_EXISTS, "requestId '%s' is already in flight on this worker",
                      j->rid);
        } else {
            snprintf(j->subject, sizeof(j->subject), "response.%s", j->rid);
            j->has_rid = true;
            run_request(j, body);
            rid_release(w, j);
        }
    }
    json_decref(body);
}

static void *request_main(void *arg)
{
    job *j = arg;
    inferd_nats_worker *w = j->w;
    handle_request(j);
    const size_t bytes = (size_t)natsMsg_GetDataLength(j->msg);
    natsMsg_Destroy(j->msg);
    inferd_free(j);
    inferd_alloc_released(bytes);
    pthread_mutex_lock(&w->mu);
    if (atomic_fetch_sub(&w->n_inflight, 1) == 1)
        pthread_cond_broadcast(&w->idle_cv);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void on_inference(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    nw_sub *ns = closure;
    inferd_nats_worker *w = ns->w;
    job *j = inferd_calloc(1, sizeof(*j));
    if (!j) {
        natsMsg_Destroy(msg);
        return;
    }
    j->w = w;
    j->msg = msg;
    j->ep = ns->ep;
    j->rid_slot = -1;
    j->reply = inbox_of(w, msg);
    if (ns->ep >= EPI_MODEL0) {
        inferd_fe_model_info mi;
        inferd_frontend_model(w->fe, (size_t)(ns->ep - EPI_MODEL0), &mi);
        j->subject_model = mi.id;
    }
    j->t0_ns = inferd_now_ns();
    /* Past the capacity of every queue, answer at once on this thread. */
    if ((uint32_t)atomic_fetch_add(&w->n_inflight, 1) >= w->max_inflight) {
        atomic_fetch_sub(&w->n_inflight, 1);
        atomic_fetch_add(&w->n_rejected, 1);
        const size_t len = (size_t)natsMsg_GetDataLength(msg);
        json_t *body = NULL;
        if (len <= w->o.max_msg_bytes)
            inferd_fe_parse_json(natsMsg_GetData(msg), len, &body, NULL);
        json_t *rid = json_is_object(body) ? json_object_get(body, "requestId") : NULL;
        if (json_is_string(rid) &&
            !request_id_problem(json_string_value(rid), json_string_length(rid))) {
            snprintf(j->rid, sizeof(j->rid), "%s", json_string_value(rid));
            snprintf(j->subject, sizeof(j->subject), "response.%s", j->rid);
            /* Not into the stream of a running request of the same id. */
            j->has_rid = rid_claim(w, j);
            rid_release(w, j);
        }
        json_decref(body);
        emit_code(j, INFERD_E_OVERLOADED, "the worker is at capacity: retry later");
        natsMsg_Destroy(msg);
        inferd_free(j);
        return;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int rc = pthread_create(&t, &attr, request_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&w->n_inflight, 1);
        inferd_log_error(COMP, "cannot start a request thread: %s", strerror(rc));
        emit_code(j, INFERD_E_INTERNAL, "cannot start a request thread");
        natsMsg_Destroy(msg);
        inferd_free(j);
    }
}

/* ---- control: worker.{id}.models.load|unload|list ---- */

static void reply_json(inferd_nats_worker *w, natsMsg *msg, json_t *o)
{
    const char *reply = natsMsg_GetReply(msg);
    if (!reply || !*reply) {
        json_decref(o);
        inferd_log_warn(COMP, "control request on %s without a reply subject: ignored",
                        natsMsg_GetSubject(msg));
        return;
    }
    publish_json(w, reply, o);
}

static json_t *ctl_list(inferd_nats_worker *w)
{
    json_t *a = json_array();
    for (size_t i = 0; i < inferd_frontend_n_models(w->fe); i++) {
        inferd_fe_model_info mi;
        inferd_frontend_model(w->fe, i, &mi);
        const char *state = mi.loaded ? inferd_registry_state_name(mi.state) : "unloaded";
        pthread_mutex_lock(&w->mu);
        bool subscribed = w->eps[EPI_MODEL0 + i].active;
        json_t *subj = subscribed ? json_string(w->eps[EPI_MODEL0 + i].subject) : json_null();
        pthread_mutex_unlock(&w->mu);
        json_array_append_new(a, json_pack("{s:s,s:b,s:s,s:s,s:o}", "id", mi.id, "loaded",
                                           strcmp(state, "ready") == 0, "state", state, "path",
                                           mi.path, "subject", subj));
    }
    return json_pack("{s:b,s:o}", "ok", true, "models", a);
}

/* A control error reply: {"ok": false, "code", "error"}. */
static json_t *ctl_fail(const inferd_error *e)
{
    return json_pack("{s:b,s:s,s:s}", "ok", false, "code", inferd_error_nats_code(e->code), "error",
                     e->msg);
}

static json_t *ctl_load(inferd_nats_worker *w, json_t *body, bool load)
{
    inferd_error e = {0};
    json_t *mid = json_is_object(body) ? json_object_get(body, "modelId") : NULL;
    if (!mid) {
        inferd_fail_param(&e, INFERD_E_MISSING, "modelId", "modelId: it is required");
        return ctl_fail(&e);
    }
    if (!json_is_string(mid)) {
        inferd_fail_param(&e, INFERD_E_INVALID_TYPE, "modelId",
                          "modelId: expected a string, got %s", inferd_fe_type_name(mid));
        return ctl_fail(&e);
    }
    int i = inferd_frontend_find(w->fe, json_string_value(mid), &e);
    if (i < 0)
        return ctl_fail(&e);
    inferd_fe_model_info mi;
    inferd_frontend_model(w->fe, (size_t)i, &mi);
    if (load) {
        double t0 = inferd_now_s();
        if (inferd_frontend_load(w->fe, (size_t)i, &e) < 0)
            return ctl_fail(&e);
        if (subscribe_model(w, (size_t)i) < 0) {
            inferd_fail(&e, INFERD_E_INTERNAL,
                        "model '%s' is loaded but inference.%s could not be subscribed", mi.id,
                        w->eps[EPI_MODEL0 + i].subject);
            return ctl_fail(&e);
        }
        inferd_log_info(COMP, "model '%s' loaded on request in %.0f ms", mi.id,
                        (inferd_now_s() - t0) * 1e3);
        return json_pack("{s:b,s:s,s:b}", "ok", true, "modelId", mi.id, "loaded", true);
    }
    unsubscribe_model(w, (size_t)i);
    if (inferd_frontend_unload(w->fe, (size_t)i, &e) < 0)
        return ctl_fail(&e);
    inferd_log_info(COMP, "model '%s' unloaded on request", mi.id);
    return json_pack("{s:b,s:s,s:b}", "ok", true, "modelId", mi.id, "loaded", false);
}

/* Does @p body carry the control token? (Constant time in its length.) */
static bool token_ok(const inferd_nats_worker *w, json_t *body)
{
    json_t *t = json_is_object(body) ? json_object_get(body, "token") : NULL;
    if (!json_is_string(t))
        return false;
    const char *got = json_string_value(t);
    const size_t n = strlen(w->control_token), m = json_string_length(t);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(w->control_token[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

static void on_control(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    nw_sub *ns = closure;
    inferd_nats_worker *w = ns->w;
    uint64_t t0 = inferd_now_ns();
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    json_t *body = NULL, *out;
    inferd_error e = {0};
    if (len > w->o.max_msg_bytes) {
        inferd_fail(&e, INFERD_E_TOO_LARGE,
                    "the message is too large: %zu bytes, over the limit of %zu", len,
                    w->o.max_msg_bytes);
        out = ctl_fail(&e);
    } else if (len > 0 && inferd_fe_parse_json(natsMsg_GetData(msg), len, &body, &e) < 0) {
        out = ctl_fail(&e);
    } else if (body && !json_is_object(body)) {
        inferd_fail(&e, INFERD_E_BAD_JSON, "the message must be a JSON object");
        out = ctl_fail(&e);
    } else if (w->control_token && !token_ok(w, body)) {
        inferd_fail(&e, INFERD_E_UNAUTHORIZED,
                    "control requests need \"token\" (the worker's --nats-control-token)");
        out = ctl_fail(&e);
    } else if (ns->kind == SUB_LIST) {
        out = ctl_list(w);
    } else {
        out = ctl_load(w, body, ns->kind == SUB_LOAD);
    }
    json_decref(body);
    json_t *ok = out ? json_object_get(out, "ok") : NULL;
    json_t *err = out ? json_object_get(out, "error") : NULL;
    ep_record(w, ns->ep, inferd_now_ns() - t0,
              json_is_false(ok) ? (json_is_string(err) ? json_string_value(err) : "failed") : NULL);
    reply_json(w, msg, out);
    natsMsg_Destroy(msg);
}

/* ---- discovery: $SRV.PING|INFO|STATS ---- */

static json_t *srv_identity(inferd_nats_worker *w, const char *type)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s}}", "type", type, "name", SERVICE_NAME, "id",
                     w->id, "version", INFERD_VERSION, "metadata", "workerId", w->id, "hostname",
                     w->hostname);
}

static json_t *srv_endpoints(inferd_nats_worker *w, bool stats)
{
    json_t *a = json_array();
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < EPS_N; i++) {
        const nw_endpoint *e = &w->eps[i];
        if (!e->active)
            continue;
        json_t *o = json_pack("{s:s,s:s}", "name", e->name, "subject", e->subject);
        if (e->queue)
            json_object_set_new(o, "queue_group", json_string(QUEUE_GROUP));
        if (stats) {
            json_object_set_new(o, "num_requests", json_integer((json_int_t)e->n_requests));
            json_object_set_new(o, "num_errors", json_integer((json_int_t)e->n_errors));
            json_object_set_new(o, "last_error", json_string(e->last_error));
            json_object_set_new(o, "processing_time", json_integer((json_int_t)e->time_ns));
            json_object_set_new(
                o, "average_processing_time",
                json_integer(e->n_requests ? (json_int_t)(e->time_ns / e->n_requests) : 0));
        } else {
            json_object_set_new(o, "metadata", json_null());
        }
        json_array_append_new(a, o);
    }
    pthread_mutex_unlock(&w->mu);
    return a;
}

static void on_srv(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    nw_sub *ns = closure;
    inferd_nats_worker *w = ns->w;
    json_t *o;
    if (ns->verb == SRV_PING) {
        o = srv_identity(w, "io.nats.micro.v1.ping_response");
    } else if (ns->verb == SRV_INFO) {
        o = srv_identity(w, "io.nats.micro.v1.info_response");
        json_object_set_new(o, "description",
                            json_string("inferd model worker: LLM inference over NATS"));
        json_object_set_new(o, "endpoints", srv_endpoints(w, false));
    } else {
        o = srv_identity(w, "io.nats.micro.v1.stats_response");
        char started[40];
        time_t t = (time_t)w->started_unix_s;
        struct tm tm;
        gmtime_r(&t, &tm);
        size_t n = strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(started + n, sizeof(started) - n, ".%03dZ",
                 (int)((w->started_unix_s - floor(w->started_unix_s)) * 1e3));
        json_object_set_new(o, "started", json_string(started));
        json_object_set_new(o, "endpoints", srv_endpoints(w, true));
    }
    reply_json(w, msg, o);
    natsMsg_Destroy(msg);
}

/* ---- subscriptions ---- */

static int subscribe(inferd_nats_worker *w, nw_sub *ns, const char *subject, bool queue,
                     natsMsgHandler cb)
{
    natsStatus st =
        queue ? natsConnection_QueueSubscribe(&ns->sub, w->nc, subject, QUEUE_GROUP, cb, ns)
              : natsConnection_Subscribe(&ns->sub, w->nc, subject, cb, ns);
    if (st != NATS_OK) {
        inferd_log_error(COMP, "cannot subscribe %s: %s", subject, natsStatus_GetText(st));
        ns->sub = NULL;
        return -1;
    }
    /* Requests are handed to their threads at once: no pending limit
     * matters but the byte one (a slow consumer drops, never blocks). */
    natsSubscription_SetPendingLimits(ns->sub, -1, 64 << 20);
    return 0;
}

static int subscribe_model(inferd_nats_worker *w, size_t i)
{
    nw_sub *ns = &w->models[i];
    pthread_mutex_lock(&w->mu);
    bool have = ns->sub != NULL || atomic_load(&w->state) >= NW_DRAINING;
    pthread_mutex_unlock(&w->mu);
    if (have)
        return 0;
    nw_endpoint *e = &w->eps[EPI_MODEL0 + i];
    natsSubscription *sub = NULL;
    natsStatus st =
        natsConnection_QueueSubscribe(&sub, w->nc, e->subject, QUEUE_GROUP, on_inference, ns);
    if (st != NATS_OK) {
        inferd_log_error(COMP, "cannot subscribe %s: %s", e->subject, natsStatus_GetText(st));
        return -1;
    }
    natsSubscription_SetPendingLimits(sub, -1, 64 << 20);
    pthread_mutex_lock(&w->mu);
    ns->sub = sub;
    e->active = true;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void unsubscribe_model(inferd_nats_worker *w, size_t i)
{
    nw_sub *ns = &w->models[i];
    pthread_mutex_lock(&w->mu);
    natsSubscription *sub = ns->sub;
    ns->sub = NULL;
    w->eps[EPI_MODEL0 + i].active = false;
    pthread_mutex_unlock(&w->mu);
    if (sub) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
}

/* ---- status ---- */

static json_t *status_json(void *ctx)
{
    inferd_nats_worker *w = ctx;
    char url[256] = "";
    if (w->nc && atomic_load(&w->connected))
        natsConnection_GetConnectedUrl(w->nc, url, sizeof(url));
    pthread_mutex_lock(&w->mu);
    json_t *o = json_pack(
        "{s:s,s:o,s:{s:s,s:s,s:b,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:s}}", "id", w->id,
        "tags", tags_json(w), "nats", "state", state_name(atomic_load(&w->state)), "url", w->url,
        "connected", atomic_load(&w->connected), "server", url, "reconnects",
        (json_int_t)w->n_reconnects, "registrations", (json_int_t)w->n_registrations,
        "register_attempts", (json_int_t)w->n_register_attempts, "heartbeats",
        (json_int_t)w->n_heartbeats, "requests", (json_int_t)atomic_load(&w->n_requests),
        "malformed", (json_int_t)atomic_load(&w->n_malformed), "rejected",
        (json_int_t)atomic_load(&w->n_rejected), "bad_reply",
        (json_int_t)atomic_load(&w->n_bad_reply), "duplicate",
        (json_int_t)atomic_load(&w->n_duplicate), "in_flight", atomic_load(&w->n_inflight),
        "last_error", w->last_error);
    pthread_mutex_unlock(&w->mu);
    return o;
}

/* ---- lifecycle ---- */

inferd_nats_opts inferd_nats_opts_default(void)
{
    inferd_nats_opts o;
    memset(&o, 0, sizeof(o));
    o.heartbeat_ms = 5000;
    o.register_timeout_ms = 2000;
    o.max_msg_bytes = 1 << 20;
    o.inbox_prefix = "_INBOX.";
    return o;
}

static char *dup_or_null(const char *s) { return s ? inferd_strdup(s) : NULL; }

static void worker_free(inferd_nats_worker *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_tags; i++)
        inferd_free(w->tags[i]);
    inferd_free(w->tags);
    inferd_free(w->url);
    inferd_free(w->id);
    inferd_free(w->advertise);
    inferd_free(w->http_host);
    inferd_free(w->inbox_prefix);
    inferd_free(w->control_token);
    inferd_free(w->live_rids);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->hb_mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->idle_cv);
    inferd_free(w);
}

static int split_tags(inferd_nats_worker *w, const char *tags)
{
    if (!tags || !*tags)
        return 0;
    size_t n = 1;
    for (const char *p = tags; *p; p++)
        n += *p == ',';
    w->tags = inferd_calloc(n, sizeof(char *));
    if (!w->tags)
        return -1;
    const char *p = tags;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len > 0 && !(w->tags[w->n_tags++] = inferd_strndup(p, len)))
            return -1;
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

int inferd_nats_opts_check(const inferd_nats_opts *opts, inferd_error *err)
{
    if (!opts->url || !*opts->url)
        return inferd_fail(err, INFERD_E_INVALID, "--nats: a URL is required");
    if (!opts->worker_id || !*opts->worker_id)
        return inferd_fail(err, INFERD_E_INVALID, "--worker-id: it is required");
    if (strpbrk(opts->worker_id, ".*> \t\r\n") || strlen(opts->worker_id) > 128)
        return inferd_fail(err, INFERD_E_INVALID,
                           "--worker-id: '%s' must be one subject token of at most 128 "
                           "characters (no '.', '*', '>' or spaces)",
                           opts->worker_id);
    if (opts->heartbeat_ms < 100 || opts->heartbeat_ms > 3600000)
        return inferd_fail(err, INFERD_E_INVALID, "--heartbeat-ms: %lld is outside [100, 3600000]",
                           (long long)opts->heartbeat_ms);
    if (opts->inbox_prefix && (!*opts->inbox_prefix || strpbrk(opts->inbox_prefix, "*> \t\r\n") ||
                               strlen(opts->inbox_prefix) > 128))
        return inferd_fail(err, INFERD_E_INVALID,
                           "--nats-inbox-prefix: '%s' must be 1..128 characters with no "
                           "wildcards or spaces",
                           opts->inbox_prefix);
    if (opts->control_token && !*opts->control_token)
        return inferd_fail(err, INFERD_E_INVALID,
                           "--nats-control-token: it is empty (leave the option out for none)");
    return 0;
}

int inferd_nats_worker_create(inferd_frontend *fe, const inferd_nats_opts *opts,
                              inferd_nats_worker **out, inferd_error *err)
{
    *out = NULL;
    int rc = inferd_nats_opts_check(opts, err);
    if (rc < 0)
        return rc;
    inferd_nats_worker *w = inferd_calloc(1, sizeof(*w));
    if (!w)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the NATS worker");
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->hb_mu, NULL);
    inferd_cond_init_monotonic(&w->cv);
    pthread_cond_init(&w->idle_cv, NULL);
    w->fe = fe;
    w->o = *opts;
    w->url = inferd_strdup(opts->url);
    w->id = inferd_strdup(opts->worker_id);
    w->advertise = dup_or_null(opts->advertise_host);
    w->http_host = dup_or_null(opts->http_host);
    w->inbox_prefix = inferd_strdup(opts->inbox_prefix ? opts->inbox_prefix : "_INBOX.");
    w->control_token = dup_or_null(opts->control_token);
    if (!w->url || !w->id || (opts->advertise_host && !w->advertise) ||
        (opts->http_host && !w->http_host) || !w->inbox_prefix ||
        (opts->control_token && !w->control_token) || split_tags(w, opts->tags) < 0) {
        worker_free(w);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the NATS worker");
    }
    if (w->o.register_timeout_ms <= 0)
        w->o.register_timeout_ms = 2000;
    if (w->o.max_msg_bytes == 0)
        w->o.max_msg_bytes = 1 << 20;
    if (gethostname(w->hostname, sizeof(w->hostname) - 1) != 0)
        snprintf(w->hostname, sizeof(w->hostname), "unknown");
    w->max_inflight = inferd_frontend_request_capacity(fe) + 16;
    w->live_rids = inferd_calloc(w->max_inflight, sizeof(*w->live_rids));
    if (!w->live_rids) {
        worker_free(w);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the NATS worker");
    }
    w->backoff_ms = BACKOFF_MIN_MS;
    atomic_store(&w->state, NW_IDLE);

    /* Endpoints. */
    snprintf(w->eps[EPI_DIRECT].name, sizeof(w->eps[0].name), "inference");
    snprintf(w->eps[EPI_DIRECT].subject, sizeof(w->eps[0].subject), "worker.%s.inference", w->id);
    static const char *const verbs[] = {"load", "unload", "list"};
    for (int k = 0; k < 3; k++) {
        snprintf(w->eps[EPI_LOAD + k].name, sizeof(w->eps[0].name), "models-%s", verbs[k]);
        snprintf(w->eps[EPI_LOAD + k].subject, sizeof(w->eps[0].subject), "worker.%s.models.%s",
                 w->id, verbs[k]);
    }
    for (size_t i = 0; i < inferd_frontend_n_models(fe); i++) {
        char tok[INFERD_REGISTRY_ID_MAX];
        inferd_fe_model_info mi;
        inferd_frontend_model(fe, i, &mi);
        subject_token(mi.id, tok, sizeof(tok));
        nw_endpoint *e = &w->eps[EPI_MODEL0 + i];
        snprintf(e->name, sizeof(e->name), "inference-%s", tok);
        snprintf(e->subject, sizeof(e->subject), "inference.%s", tok);
        e->queue = true;
        w->models[i] = (nw_sub){.w = w, .kind = SUB_INFER, .ep = (int)(EPI_MODEL0 + i)};
    }
    w->direct = (nw_sub){.w = w, .kind = SUB_INFER, .ep = EPI_DIRECT};
    for (int k = 0; k < 3; k++)
        w->ctl[k] = (nw_sub){.w = w, .kind = (sub_kind)(SUB_LOAD + k), .ep = EPI_LOAD + k};
    for (int k = 0; k < SRV_SUBS; k++)
        w->srv_subs[k] = (nw_sub){.w = w, .kind = SUB_SRV, .verb = (srv_verb)(k / 3)};

    if (inferd_frontend_set_status(fe, "worker", status_json, w) < 0) {
        worker_free(w);
        return inferd_fail(err, INFERD_E_INVALID, "the front end already has a NATS worker");
    }
    *out = w;
    return 0;
}

static int nats_fail(inferd_error *err, natsStatus st, const char *what)
{
    int code = st == NATS_NO_MEMORY                         ? INFERD_E_NOMEM
               : (st == NATS_INVALID_ARG || st == NATS_ERR) ? INFERD_E_INVALID
                                                            : INFERD_E_IO;
    return inferd_fail(err, code, "%s: %s", what, natsStatus_GetText(st));
}

int inferd_nats_worker_start(inferd_nats_worker *w, inferd_error *err)
{
    natsStatus st;
    char name[200];
    snprintf(name, sizeof(name), "inferd-%s", w->id);
    if ((st = natsOptions_Create(&w->nopts)) != NATS_OK)
        return nats_fail(err, st, "NATS options");
    natsOptions *o = w->nopts;
    if ((st = natsOptions_SetServers(o, NULL, 0)) == NATS_OK)
        st = natsOptions_SetURL(o, w->url);
    if (st == NATS_OK)
        st = natsOptions_SetName(o, name);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(o, 250);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectJitter(o, 250, 1000);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectBufSize(o, RECONNECT_BUF_BYTES);
    if (st == NATS_OK)
        st = natsOptions_SetSendAsap(o, true);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(o, 2000);
    if (st == NATS_OK)
        st = natsOptions_SetDisconnectedCB(o, on_disconnected, w);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectedCB(o, on_reconnected, w);
    if (st == NATS_OK)
        st = natsOptions_SetClosedCB(o, on_closed, w);
    if (st == NATS_OK)
        st = natsOptions_SetErrorHandler(o, on_async_error, w);
    if (st == NATS_OK)
        st = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, w);
    if (st != NATS_OK)
        return nats_fail(err, st, "--nats");
    atomic_store(&w->state, NW_CONNECTING);
    w->started_unix_s = inferd_unix_s();
    inferd_log_info(COMP, "connecting to %s as worker '%s'", w->url, w->id);
    st = natsConnection_Connect(&w->nc, o);
    if (st != NATS_OK && st != NATS_NOT_YET_CONNECTED) {
        atomic_store(&w->state, NW_IDLE);
        return nats_fail(err, st, "--nats");
    }
    if (st == NATS_NOT_YET_CONNECTED)
        inferd_log_warn(COMP,
                        "NATS at %s is not reachable yet: retrying in the background "
                        "(HTTP serves meanwhile)",
                        w->url);
    else
        on_connected(w->nc, w);

    /* Subscriptions (sent once connected when the connect is pending). */
    natsInbox *inbox = NULL;
    if ((st = natsInbox_Create(&inbox)) != NATS_OK)
        return nats_fail(err, st, "NATS inbox");
    char reg_subject[sizeof(w->reg_inbox) + 4];
    snprintf(w->reg_inbox, sizeof(w->reg_inbox), "%s", inbox);
    natsInbox_Destroy(inbox);
    snprintf(reg_subject, sizeof(reg_subject), "%s.*", w->reg_inbox);
    if ((st = natsConnection_Subscribe(&w->reg_sub, w->nc, reg_subject, on_register_reply, w)) !=
        NATS_OK)
        return nats_fail(err, st, "subscribing the registration replies");
    int rc = subscribe(w, &w->direct, w->eps[EPI_DIRECT].subject, false, on_inference);
    for (int k = 0; k < 3 && rc == 0; k++)
        rc = subscribe(w, &w->ctl[k], w->eps[EPI_LOAD + k].subject, false, on_control);
    static const char *const verbs[] = {"PING", "INFO", "STATS"};
    for (int k = 0; k < SRV_SUBS && rc == 0; k++) {
        char subj[200];
        if (k % 3 == 0)
            snprintf(subj, sizeof(subj), "$SRV.%s", verbs[k / 3]);
        else if (k % 3 == 1)
            snprintf(subj, sizeof(subj), "$SRV.%s.%s", verbs[k / 3], SERVICE_NAME);
        else
            snprintf(subj, sizeof(subj), "$SRV.%s.%s.%s", verbs[k / 3], SERVICE_NAME, w->id);
        rc = subscribe(w, &w->srv_subs[k], subj, false, on_srv);
    }
    pthread_mutex_lock(&w->mu);
    for (int k = 0; k < EPI_MODEL0; k++)
        w->eps[k].active = rc == 0;
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < inferd_frontend_n_models(w->fe) && rc == 0; i++) {
        inferd_sched_stats st_m;
        if (inferd_frontend_sched_stats(w->fe, i, &st_m) == 0)
            rc = subscribe_model(w, i);
    }
    if (rc < 0)
        return inferd_fail(err, INFERD_E_IO, "cannot subscribe the worker's subjects: %s",
                           w->last_error[0] ? w->last_error : "see the log");
    if ((rc = pthread_create(&w->thread, NULL, control_main, w)) != 0)
        return inferd_fail(err, INFERD_E_INTERNAL, "cannot start the worker thread: %s",
                           strerror(rc));
    w->thread_running = true;
    return 0;
}

/* Start draining @p sub; true when it drains (then wait for it). */
static bool drain_sub(natsSubscription *sub)
{
    if (!sub)
        return false;
    /* Drain needs a live connection; otherwise just stop the interest. */
    if (natsSubscription_Drain(sub) == NATS_OK)
        return true;
    natsSubscription_Unsubscribe(sub);
    return false;
}

void inferd_nats_worker_drain(inferd_nats_worker *w)
{
    if (!w || !w->nc)
        return;
    atomic_store(&w->state, NW_DRAINING);
    inferd_log_info(COMP, "draining: no new NATS requests");
    natsSubscription *subs[INFERD_FE_MODELS_MAX + 1];
    bool draining[INFERD_FE_MODELS_MAX + 1];
    pthread_mutex_lock(&w->mu);
    subs[0] = w->direct.sub;
    for (size_t i = 0; i < INFERD_FE_MODELS_MAX; i++)
        subs[i + 1] = w->models[i].sub;
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i <= INFERD_FE_MODELS_MAX; i++)
        draining[i] = drain_sub(subs[i]);
    /* Messages already delivered to us are handed to their threads. */
    for (size_t i = 0; i <= INFERD_FE_MODELS_MAX; i++)
        if (draining[i])
            natsSubscription_WaitForDrainCompletion(subs[i], 2000);
    if (atomic_load(&w->connected)) {
        publish_json(w, "worker.heartbeat", heartbeat(w, false));
    }
}

void inferd_nats_worker_destroy(inferd_nats_worker *w)
{
    if (!w)
        return;
    inferd_frontend_set_status(w->fe, "worker", NULL, NULL);
    /* The request threads end with their requests (the server's drain ended
     * them all). */
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->n_inflight) > 0)
        pthread_cond_wait(&w->idle_cv, &w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (w->thread_running)
        pthread_join(w->thread, NULL);
    if (w->nc) {
        if (atomic_load(&w->connected)) {
            publish_json(w, "worker.heartbeat", heartbeat(w, true));
            natsConnection_FlushTimeout(w->nc, 2000);
            inferd_log_info(COMP, "sent the offline heartbeat");
        }
        atomic_store(&w->state, NW_STOPPED);
        natsConnection_Close(w->nc);
        natsSubscription_Destroy(w->direct.sub);
        for (int k = 0; k < 3; k++)
            natsSubscription_Destroy(w->ctl[k].sub);
        for (int k = 0; k < SRV_SUBS; k++)
            natsSubscription_Destroy(w->srv_subs[k].sub);
        for (size_t i = 0; i < INFERD_FE_MODELS_MAX; i++)
            natsSubscription_Destroy(w->models[i].sub);
        natsSubscription_Destroy(w->reg_sub);
        natsConnection_Destroy(w->nc);
    }
    natsOptions_Destroy(w->nopts);
    /* The library's threads, which may still call on_closed with w: one
     * worker per process, so the library goes with it. */
    nats_CloseAndWait(5000);
    worker_free(w);
}
