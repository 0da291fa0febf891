/* Operations: GET /health, GET /metrics (Prometheus text format 0.0.4) and
 * GET /v1/status (JSON). */
#include "server_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void inferd__ops_health(http_conn *c)
{
    inferd_fe_state st = inferd_frontend_state(c->srv->fe);
    inferd__http_json(
        c, st == INFERD_FE_READY ? 200 : 503,
        json_pack("{s:s}", "status", st == INFERD_FE_READY ? "ok" : inferd_fe_state_name(st)));
}

/* ---- Prometheus text format ---- */

static void family(inferd_buf *b, const char *name, const char *type, const char *help)
{
    inferd_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped. */
static void label_value(inferd_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            inferd_buf_addf(b, "\\%c", *v);
        else if (*v == '\n')
            inferd_buf_add(b, "\\n", 2);
        else
            inferd_buf_add(b, v, 1);
    }
}

static void sample_model(inferd_buf *b, const char *name, const char *model, const char *extra,
                         double v)
{
    inferd_buf_addf(b, "%s{model=\"", name);
    label_value(b, model);
    inferd_buf_addf(b, "\"%s} %.17g\n", extra ? extra : "", v);
}

static void histogram(inferd_buf *b, const char *name, const char *model, const inferd_histogram *h)
{
    for (int i = 0; i < INFERD_SCHED_HIST_N; i++) {
        char le[64];
        if (i == INFERD_SCHED_HIST_N - 1)
            snprintf(le, sizeof(le), ",le=\"+Inf\"");
        else
            snprintf(le, sizeof(le), ",le=\"%g\"", inferd_sched_hist_bounds_ms[i] / 1e3);
        char bucket[128];
        snprintf(bucket, sizeof(bucket), "%s_bucket", name);
        sample_model(b, bucket, model, le, (double)h->cumulative[i]);
    }
    char n[128];
    snprintf(n, sizeof(n), "%s_sum", name);
    sample_model(b, n, model, NULL, h->sum_ms / 1e3);
    snprintf(n, sizeof(n), "%s_count", name);
    sample_model(b, n, model, NULL, (double)h->cumulative[INFERD_SCHED_HIST_N - 1]);
}

typedef struct model_figs {
    inferd_fe_model_info mi;
    bool loaded; /* its scheduler runs */
    inferd_sched_stats st;
} model_figs;

/* What both /metrics and /v1/status report, read once per request. */
typedef struct snapshot {
    model_figs f[INFERD_FE_MODELS_MAX];
    size_t n_models;
    inferd_registry_metrics rm;
    inferd_procstat ps;
} snapshot;

static void take_snapshot(inferd_server *s, snapshot *sn)
{
    sn->n_models = inferd_frontend_n_models(s->fe);
    for (size_t i = 0; i < sn->n_models; i++) {
        inferd_frontend_model(s->fe, i, &sn->f[i].mi);
        sn->f[i].loaded = inferd_frontend_sched_stats(s->fe, i, &sn->f[i].st) == 0;
    }
    inferd_frontend_registry_metrics(s->fe, &sn->rm);
    inferd_error e = {0};
    inferd_procstat_read(&sn->ps, &e);
}

void inferd__ops_metrics(http_conn *c)
{
    inferd_server *s = c->srv;
    snapshot sn;
    take_snapshot(s, &sn);
    inferd_buf b = INFERD_BUF_INIT(SERVER_METRICS_MAX);
    const int state = (int)inferd_frontend_state(s->fe);

    family(&b, "inferd_server_state", "gauge", "1 for the server's current state");
    for (int i = INFERD_FE_LOADING; i <= INFERD_FE_STOPPED; i++)
        inferd_buf_addf(&b, "inferd_server_state{state=\"%s\"} %d\n",
                        inferd_fe_state_name((inferd_fe_state)i), i == state);

    family(&b, "inferd_model_loaded", "gauge", "1 when the model is loaded");
    for (size_t i = 0; i < sn.n_models; i++)
        sample_model(&b, "inferd_model_loaded", sn.f[i].mi.id, NULL, sn.f[i].loaded);

    static const char *const outcomes[] = {"done",
                                           "cancelled",
                                           "timeout",
                                           "failed",
                                           "rejected_overloaded",
                                           "rejected_invalid",
                                           "rejected_unavailable"};
    family(&b, "inferd_requests_total", "counter",
           "Generation requests by outcome (since the model was loaded)");
    for (size_t i = 0; i < sn.n_models; i++) {
        if (!sn.f[i].loaded)
            continue;
        const inferd_sched_stats *st = &sn.f[i].st;
        const uint64_t v[] = {st->n_done,
                              st->n_cancelled,
                              st->n_timeout,
                              st->n_failed,
                              st->n_rejected_overloaded,
                              st->n_rejected_invalid,
                              st->n_rejected_unavailable};
        for (size_t k = 0; k < sizeof(v) / sizeof(v[0]); k++) {
            char extra[64];
            snprintf(extra, sizeof(extra), ",outcome=\"%s\"", outcomes[k]);
            sample_model(&b, "inferd_requests_total", sn.f[i].mi.id, extra, (double)v[k]);
        }
    }

#define PER_MODEL(name, type, help, expr)                                    \
    do {                                                                     \
        family(&b, name, type, help);                                        \
        for (size_t i = 0; i < sn.n_models; i++)                             \
            if (sn.f[i].loaded) {                                            \
                const inferd_sched_stats *st = &sn.f[i].st;                  \
                sample_model(&b, name, sn.f[i].mi.id, NULL, (double)(expr)); \
            }                                                                \
    } while (0)

    PER_MODEL("inferd_prompt_tokens_total", "counter", "Prompt tokens of admitted requests",
              st->tokens_in);
    PER_MODEL("inferd_generated_tokens_total", "counter", "Generated tokens", st->tokens_out);
    PER_MODEL("inferd_batch_steps_total", "counter", "Batched forward passes", st->n_steps);
    PER_MODEL("inferd_slots", "gauge", "Sequence slots of the model", st->n_slots);
    PER_MODEL("inferd_slots_busy", "gauge", "Slots serving a request", st->slots_busy);
    PER_MODEL("inferd_queue_capacity", "gauge", "Requests the queue holds at most",
              st->n_queue_max);
#undef PER_MODEL

    family(&b, "inferd_queue_depth", "gauge", "Requests waiting for a slot, by priority");
    for (size_t i = 0; i < sn.n_models; i++) {
        if (!sn.f[i].loaded)
            continue;
        for (int p = 0; p < INFERD_PRIORITY_COUNT; p++) {
            char extra[64];
            snprintf(extra, sizeof(extra), ",priority=\"%s\"", inferd_priority_name(p));
            sample_model(&b, "inferd_queue_depth", sn.f[i].mi.id, extra, sn.f[i].st.queue_depth[p]);
        }
    }

    family(&b, "inferd_request_duration_seconds", "histogram",
           "Submission to end of requests that completed");
    for (size_t i = 0; i < sn.n_models; i++)
        if (sn.f[i].loaded)
            histogram(&b, "inferd_request_duration_seconds", sn.f[i].mi.id,
                      &sn.f[i].st.latency_hist);
    family(&b, "inferd_time_to_first_token_seconds", "histogram",
           "Submission to first token of requests that completed");
    for (size_t i = 0; i < sn.n_models; i++)
        if (sn.f[i].loaded)
            histogram(&b, "inferd_time_to_first_token_seconds", sn.f[i].mi.id,
                      &sn.f[i].st.ttft_hist);

    pthread_mutex_lock(&s->mu);
    family(&b, "inferd_http_requests_total", "counter", "HTTP requests by endpoint and status");
    for (int ep = 0; ep < EP_COUNT; ep++)
        for (int k = 0; k <= HTTP_CODES_N; k++) {
            uint64_t v = s->http_count[ep][k];
            if (v == 0)
                continue;
            char code[16];
            if (k < HTTP_CODES_N)
                snprintf(code, sizeof(code), "%u", inferd__server_http_codes[k]);
            else
                snprintf(code, sizeof(code), "other");
            inferd_buf_addf(&b, "inferd_http_requests_total{endpoint=\"%s\",code=\"%s\"} %llu\n",
                            inferd__server_endpoint_names[ep], code, (unsigned long long)v);
        }
    family(&b, "inferd_http_overhead_seconds", "summary",
           "Time of non-streamed generation requests outside the model (HTTP and JSON)");
    inferd_buf_addf(
        &b, "inferd_http_overhead_seconds_sum %.9g\ninferd_http_overhead_seconds_count %llu\n",
        s->overhead_sum_s, (unsigned long long)s->overhead_n);
    pthread_mutex_unlock(&s->mu);
    family(&b, "inferd_http_active_requests", "gauge", "HTTP requests being handled");
    inferd_buf_addf(&b, "inferd_http_active_requests %d\n", atomic_load(&s->n_active));

#define GLOBAL(name, type, help, value)                           \
    do {                                                          \
        family(&b, name, type, help);                             \
        inferd_buf_addf(&b, "%s %.17g\n", name, (double)(value)); \
    } while (0)

    uint32_t n_conns, n_admitted;
    inferd__conn_counts(s, &n_conns, &n_admitted);
    GLOBAL("inferd_http_connections", "gauge", "Open HTTP connections", n_conns);
    if (s->regions) {
        uint32_t n_regions;
        uint64_t created_bytes, n_expired;
        inferd_regions_counts(s->regions, &n_regions, &created_bytes, &n_expired);
        GLOBAL("inferd_shm_regions", "gauge",
               "Shared-memory regions registered or created (system shared memory)", n_regions);
        GLOBAL("inferd_shm_created_bytes", "gauge", "Bytes of the regions the worker created",
               created_bytes);
        GLOBAL("inferd_shm_expired_total", "counter",
               "Regions removed after --shm-ttl without a request using them", n_expired);
        family(&b, "inferd_shm_create_refused_total", "counter",
               "Region creates refused: quota (the session's or the worker's), full (no room "
               "in /dev/shm), unavailable (shared memory cannot be made)");
        inferd_buf_addf(&b,
                        "inferd_shm_create_refused_total{reason=\"quota\"} %llu\n"
                        "inferd_shm_create_refused_total{reason=\"full\"} %llu\n"
                        "inferd_shm_create_refused_total{reason=\"unavailable\"} %llu\n",
                        (unsigned long long)atomic_load(&s->shm_refused_quota),
                        (unsigned long long)atomic_load(&s->shm_refused_full),
                        (unsigned long long)atomic_load(&s->shm_refused_unavailable));
    }
    GLOBAL("inferd_http_connections_admitted", "gauge",
           "Open HTTP connections within max-connections and the per-client limit", n_admitted);
    GLOBAL("inferd_http_connections_parked", "gauge",
           "HTTP connections suspended while their request waits", atomic_load(&s->n_parked));
    GLOBAL("inferd_http_refused_total", "counter",
           "Requests answered 503 because their connection was beyond a limit",
           atomic_load(&s->n_refused));
    family(&b, "inferd_http_connections_closed_total", "counter",
           "HTTP connections the server closed: idle keep-alive ones to make room, and those "
           "that did not send a whole request within the receive timeout");
    inferd_buf_addf(&b,
                    "inferd_http_connections_closed_total{reason=\"idle_for_room\"} %llu\n"
                    "inferd_http_connections_closed_total{reason=\"receive_timeout\"} %llu\n",
                    (unsigned long long)atomic_load(&s->n_shed_idle),
                    (unsigned long long)atomic_load(&s->n_receive_timeouts));
    GLOBAL("inferd_http_client_hangups_total", "counter",
           "Requests cancelled because their client hung up while waiting",
           atomic_load(&s->n_hangups));
    GLOBAL("inferd_registry_loads_total", "counter", "Successful model loads", sn.rm.loads);
    GLOBAL("inferd_registry_load_failures_total", "counter", "Failed model loads",
           sn.rm.load_failures);
    GLOBAL("inferd_registry_hits_total", "counter", "Model gets served by a loaded instance",
           sn.rm.hits);
    GLOBAL("inferd_registry_evictions_total", "counter", "Idle models evicted for room",
           sn.rm.evictions);
    GLOBAL("inferd_registry_expiries_total", "counter", "Idle models unloaded at keep-alive end",
           sn.rm.expiries);
    GLOBAL("inferd_registry_file_reloads_total", "counter",
           "Models unloaded because their file changed or was replaced on disk",
           sn.rm.file_reloads);
    GLOBAL("inferd_registry_unloads_total", "counter", "Explicit unloads", sn.rm.unloads);
    GLOBAL("inferd_registry_resident_bytes", "gauge", "Weights and state of loaded models",
           sn.rm.bytes_resident);
    GLOBAL("inferd_registry_budget_bytes", "gauge", "Memory budget (0: none)", sn.rm.budget_bytes);
    GLOBAL("inferd_registry_models", "gauge", "Models loading or loaded", sn.rm.n_models);
    GLOBAL("process_cpu_seconds_total", "counter", "User and system CPU time",
           sn.ps.cpu_user_s + sn.ps.cpu_system_s);
    GLOBAL("process_resident_memory_bytes", "gauge", "Resident memory", sn.ps.rss_bytes);
    GLOBAL("process_virtual_memory_bytes", "gauge", "Virtual memory", sn.ps.vm_bytes);
    GLOBAL("process_start_time_seconds", "gauge", "Start time since the Unix epoch",
           sn.ps.start_time_s);
    GLOBAL("process_open_fds", "gauge", "Open file descriptors", sn.ps.n_open_fds);
    GLOBAL("process_max_fds", "gauge", "Open file descriptor limit",
           sn.ps.max_fds > (1ull << 53) ? (double)(1ull << 53) : (double)sn.ps.max_fds);
    GLOBAL("process_threads", "gauge", "OS threads", sn.ps.n_threads);
#undef GLOBAL

    if (b.err) {
        inferd_buf_free(&b);
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the metrics");
        return;
    }
    size_t len = 0;
    char *text = inferd_buf_take(&b, &len);
    if (!text) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the metrics");
        return;
    }
    inferd__http_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- /v1/status ---- */

static json_t *pct_json(const inferd_percentiles *p)
{
    return json_pack("{s:f,s:f,s:f,s:i}", "p50", p->p50, "p95", p->p95, "p99", p->p99, "n",
                     (int)p->n);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* /v1/status "shm": whether it is served and where, what the machine
 * offers now, and the regions. */
static json_t *shm_status(inferd_server *s)
{
    inferd_shm_caps k = s->shm_caps;
    inferd_shm_caps_space(&k);
    json_t *o = json_pack("{s:b,s:b,s:b,s:I,s:I}", "enabled", s->regions != NULL, "shm", k.shm,
                          "memfd", k.memfd, "shm_total_bytes", (json_int_t)k.shm_total_bytes,
                          "shm_free_bytes", (json_int_t)k.shm_free_bytes);
    if (o && s->regions) {
        uint32_t n_regions;
        uint64_t created_bytes, n_expired;
        inferd_regions_counts(s->regions, &n_regions, &created_bytes, &n_expired);
        json_object_set_new(o, "listeners",
                            json_string(s->shm_tcp ? "every listener" : "the Unix socket only"));
        json_object_set_new(o, "regions", json_integer(n_regions));
        json_object_set_new(o, "created_bytes", json_integer((json_int_t)created_bytes));
        json_object_set_new(o, "expired", json_integer((json_int_t)n_expired));
        json_object_set_new(o, "create_refused",
                            json_pack("{s:I,s:I,s:I}", "quota",
                                      (json_int_t)atomic_load(&s->shm_refused_quota), "full",
                                      (json_int_t)atomic_load(&s->shm_refused_full), "unavailable",
                                      (json_int_t)atomic_load(&s->shm_refused_unavailable)));
    }
    return o;
}

void inferd__ops_status(http_conn *c)
{
    inferd_server *s = c->srv;
    snapshot sn;
    take_snapshot(s, &sn);

    json_t *models = json_array();
    uint32_t slots = 0, busy = 0, queued = 0;
    for (size_t i = 0; i < sn.n_models; i++) {
        const inferd_fe_model_info *sm = &sn.f[i].mi;
        json_t *m =
            json_pack("{s:s,s:s,s:b}", "id", sm->id, "path", sm->path, "loaded", sn.f[i].loaded);
        const char *reg_state = "unloaded";
        if (sm->loaded) {
            reg_state = inferd_registry_state_name(sm->state);
            json_object_set_new(m, "weight_bytes", json_integer((json_int_t)sm->weight_bytes));
            json_object_set_new(m, "state_bytes", json_integer((json_int_t)sm->state_bytes));
            json_object_set_new(m, "requests_in_flight", json_integer(sm->n_handles));
        }
        if (sn.f[i].loaded) {
            const inferd_sched_stats *st = &sn.f[i].st;
            uint32_t q = st->queue_depth[0] + st->queue_depth[1] + st->queue_depth[2];
            slots += st->n_slots;
            busy += st->slots_busy;
            queued += q;
            /* The scheduler's state, unless the registry is unloading it. */
            json_object_set_new(m, "state",
                                json_string(strcmp(reg_state, "unloading") == 0
                                                ? reg_state
                                                : inferd_sched_state_name(st->state)));
            json_object_set_new(m, "slots", json_integer(st->n_slots));
            json_object_set_new(m, "slots_busy", json_integer(st->slots_busy));
            json_object_set_new(m, "queue_depth", json_integer(q));
            json_object_set_new(m, "queue_capacity", json_integer(st->n_queue_max));
            json_object_set_new(
                m, "requests",
                json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "submitted",
                          (json_int_t)st->n_submitted, "done", (json_int_t)st->n_done, "cancelled",
                          (json_int_t)st->n_cancelled, "timeout", (json_int_t)st->n_timeout,
                          "failed", (json_int_t)st->n_failed, "rejected_overloaded",
                          (json_int_t)st->n_rejected_overloaded, "rejected_invalid",
                          (json_int_t)st->n_rejected_invalid, "rejected_unavailable",
                          (json_int_t)st->n_rejected_unavailable));
            json_object_set_new(m, "tokens",
                                json_pack("{s:I,s:I}", "prompt", (json_int_t)st->tokens_in,
                                          "generated", (json_int_t)st->tokens_out));
            json_object_set_new(m, "latency_ms", pct_json(&st->latency));
            json_object_set_new(m, "ttft_ms", pct_json(&st->ttft));
            json_object_set_new(m, "itl_ms", pct_json(&st->itl));
        } else {
            json_object_set_new(m, "state", json_string(reg_state)); /* loading or unloaded */
        }
        if (sm->chat_template)
            json_object_set_new(m, "chat_template", json_string(sm->chat_template));
        json_array_append_new(models, m);
    }

    /* Rates over the ticker's window (up to a minute). */
    double window_s = 0, tok_rate = 0, req_rate = 0, cpu_pct = 0, ov_p50 = 0, ov_p99 = 0,
           ov_mean = 0;
    uint64_t ov_n;
    double ov[OVERHEAD_WINDOW];
    uint32_t n_ov;
    pthread_mutex_lock(&s->mu);
    if (s->tick_filled >= 2) {
        const tick *last = &s->ticks[(s->tick_next + TICKS_N - 1) % TICKS_N];
        const tick *first = &s->ticks[(s->tick_next + TICKS_N - s->tick_filled) % TICKS_N];
        window_s = last->t_s - first->t_s;
        if (window_s > 0) {
            tok_rate = (double)(last->tokens_out - first->tokens_out) / window_s;
            req_rate = (double)(last->requests - first->requests) / window_s;
            cpu_pct = 100.0 * (last->cpu_s - first->cpu_s) / window_s;
        }
    }
    n_ov = s->overhead_filled;
    memcpy(ov, s->overhead_win, n_ov * sizeof(double));
    ov_n = s->overhead_n;
    ov_mean = s->overhead_n ? s->overhead_sum_s / (double)s->overhead_n : 0.0;
    pthread_mutex_unlock(&s->mu);
    uint64_t gen_requests, gen_tokens;
    inferd_frontend_counts(s->fe, &gen_requests, &gen_tokens);
    if (n_ov > 0) {
        qsort(ov, n_ov, sizeof(double), cmp_double);
        ov_p50 = ov[(size_t)ceil(0.50 * n_ov) - 1];
        ov_p99 = ov[(size_t)ceil(0.99 * n_ov) - 1];
    }

    json_t *o = json_pack(
        "{s:s,s:s,s:f,s:o,s:i,s:i,s:i,s:{s:f,s:f,s:f,s:I,s:I},s:f,s:{s:I,s:I,s:i},"
        "s:{s:I,s:I,s:I},s:{s:i,s:{s:f,s:f,s:f,s:I}}}",
        "state", inferd_fe_state_name(inferd_frontend_state(s->fe)), "version", INFERD_VERSION,
        "uptime_s", inferd_frontend_uptime_s(s->fe), "models", models, "slots", (int)slots,
        "slots_busy", (int)busy, "queue_depth", (int)queued, "throughput", "window_s", window_s,
        "tokens_per_s", tok_rate, "requests_per_s", req_rate, "requests_total",
        (json_int_t)gen_requests, "tokens_total", (json_int_t)gen_tokens, "cpu_percent", cpu_pct,
        "memory", "rss_bytes", (json_int_t)sn.ps.rss_bytes, "vm_bytes", (json_int_t)sn.ps.vm_bytes,
        "threads", (int)sn.ps.n_threads, "registry", "resident_bytes",
        (json_int_t)sn.rm.bytes_resident, "budget_bytes", (json_int_t)sn.rm.budget_bytes, "loads",
        (json_int_t)sn.rm.loads, "http", "active", atomic_load(&s->n_active), "overhead_us", "p50",
        ov_p50 * 1e6, "p99", ov_p99 * 1e6, "mean", ov_mean * 1e6, "n", (json_int_t)ov_n);
    uint32_t n_conns, n_admitted;
    inferd__conn_counts(s, &n_conns, &n_admitted);
    json_t *http = o ? json_object_get(o, "http") : NULL;
    if (http) {
        json_object_set_new(http, "connections", json_integer(n_conns));
        json_object_set_new(http, "connections_admitted", json_integer(n_admitted));
        json_object_set_new(http, "parked", json_integer(atomic_load(&s->n_parked)));
        json_object_set_new(http, "refused", json_integer((json_int_t)atomic_load(&s->n_refused)));
        json_object_set_new(http, "closed_idle_for_room",
                            json_integer((json_int_t)atomic_load(&s->n_shed_idle)));
        json_object_set_new(http, "closed_receive_timeout",
                            json_integer((json_int_t)atomic_load(&s->n_receive_timeouts)));
        json_object_set_new(http, "client_hangups",
                            json_integer((json_int_t)atomic_load(&s->n_hangups)));
    }
    if (o)
        json_object_set_new(o, "shm", shm_status(s));
    if (o)
        inferd_frontend_status_sections(s->fe, o);
    if (!o) {
        inferd__http_error(c, INFERD_E_INTERNAL, NULL, "cannot build the status");
        return;
    }
    inferd__http_json(c, 200, o);
}
