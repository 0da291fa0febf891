/* `inferd bench`: prompt processing and generation speed, measured the way
 * llama-bench does: pp = one forward pass over p random tokens from an
 * empty context; tg = n single-token forward passes from an empty context;
 * each repeated r times after a warm-up run, reported as mean and standard
 * deviation of tokens per second.
 *
 * With --streams N1,N2,...: the scheduler's aggregate speed, measured the
 * way llama-batched-bench does: for each N, N requests reach an idle
 * scheduler together, their prompts are read in one step and they then
 * decode together; tg t/s is the decode-phase throughput of all streams and
 * TTFT each request's submission -> first token. Threads: the main thread
 * submits and reads events; the scheduler runs on its own thread. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/cpu.h"
#include "inferd/model.h"
#include "inferd/scheduler.h"

#define CMD "bench"

typedef struct bench_buf {
    int32_t *tokens, *pos, *seq;
    int8_t *want;
    int8_t *prefill; /* all ones: pp tokens are prompt tokens */
    float *logits;
} bench_buf;

/* One pp run: n_prompt tokens in batches of n_batch, logits for the last. */
static int run_pp(inferd_model *m, inferd_pool *pool, bench_buf *b, int n_prompt, int n_batch,
                  uint64_t *rng, inferd_error *err)
{
    const uint32_t n_vocab = inferd_model_get_hparams(m)->n_vocab;
    inferd_model_seq_reset(m, 0);
    for (int i = 0; i < n_prompt; i += n_batch) {
        int n = n_prompt - i < n_batch ? n_prompt - i : n_batch;
        for (int j = 0; j < n; j++) {
            *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
            b->tokens[j] = (int32_t)((*rng >> 33) % n_vocab);
            b->pos[j] = i + j;
            b->want[j] = (i + j == n_prompt - 1);
        }
        inferd_batch bt = {n, b->tokens, b->pos, b->seq, b->want, b->prefill, NULL};
        int rc = inferd_model_forward(m, pool, &bt, b->logits, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* One tg run: n_gen single-token passes from an empty context. */
static int run_tg(inferd_model *m, inferd_pool *pool, bench_buf *b, int n_gen, uint64_t *rng,
                  inferd_error *err)
{
    const uint32_t n_vocab = inferd_model_get_hparams(m)->n_vocab;
    inferd_model_seq_reset(m, 0);
    for (int i = 0; i < n_gen; i++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        b->tokens[0] = (int32_t)((*rng >> 33) % n_vocab);
        b->pos[0] = i;
        b->want[0] = 1;
        inferd_batch bt = {1, b->tokens, b->pos, b->seq, b->want, NULL, NULL};
        int rc = inferd_model_forward(m, pool, &bt, b->logits, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void mean_std(const double *v, int n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0.0;
}

/* ------------------------------------------------------------------------ */
/* --streams: concurrent requests through the scheduler */

#define STREAMS_LIST_MAX 64
/* One slot is kept for the gate request (below), so n <= SLOTS_MAX - 1. */
#define STREAMS_MAX (INFERD_SCHED_SLOTS_MAX - 1)
#define PREFILL_MAX 65536 /* the scheduler's n_prefill_chunk limit */

/* Parse "1,2,4" into @p out (1..STREAMS_MAX each). Prints the problem and
 * returns -1 on bad input. */
static int parse_streams(const char *list, int *out, int cap, int *out_n)
{
    const char *p = list;
    int n = 0;

    for (;;) {
        const char *start = p;
        long v = 0;
        while (*p >= '0' && *p <= '9') {
            if (v <= STREAMS_MAX)
                v = v * 10 + (*p - '0');
            p++;
        }
        if (p == start || (*p != ',' && *p != '\0')) {
            inferd__cli_error(CMD,
                              "--streams expects a comma-separated list of stream counts "
                              "such as 1,2,4,8, got '%s'",
                              list);
            return -1;
        }
        if (v < 1 || v > STREAMS_MAX) {
            inferd__cli_error(CMD, "--streams: %.*s out of range 1..%d (in '%s')", (int)(p - start),
                              start, STREAMS_MAX, list);
            return -1;
        }
        if (n == cap) {
            inferd__cli_error(CMD, "--streams: more than %d counts", cap);
            return -1;
        }
        out[n++] = (int)v;
        if (*p == '\0')
            break;
        p++;
    }
    *out_n = n;
    return 0;
}

/* Wake-ups from the scheduler thread: on_event bumps a counter that the
 * reading thread sleeps on. */
typedef struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t n_events; /* guarded by mu */
} waker;

static void waker_notify(void *ctx)
{
    waker *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->n_events++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The gate holds the scheduler thread inside the on_event callback of a
 * one-token request while the measured requests are submitted, so that
 * all of them are admitted in the same step (otherwise the scheduler may
 * wake on the first submission and prefill it alone, one step ahead of the
 * others). The hold lasts as long as N submissions, microseconds. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open; /* guarded by mu */
} gate;

static void gate_on_event(void *ctx)
{
    gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    if (!g->entered) {
        g->entered = true;
        pthread_cond_broadcast(&g->cv);
        while (!g->open)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* What a round leaves per stream, and the buffers it uses (sized for the
 * largest stream count). */
typedef struct streams_ctx {
    inferd_sched *s;
    int n_prompt;
    uint32_t n_vocab;
    int32_t *prompts;      /* (n, n_prompt) */
    inferd_request **reqs; /* (n) */
    double *t_sub_ms;      /* (n) CLOCK_MONOTONIC at submission */
    double *ttft_ms;       /* (n) from the DONE event */
    double *gen_ms;        /* (n) first -> last token, from the DONE event */
    uint32_t *n_gen;       /* (n) */
    bool *ended;           /* (n) */
    waker w;
    gate g;
} streams_ctx;

/* Read every event of @p r available now. Returns how many were read, or a
 * negative code (the stream failed; message in err). */
static int drain_request(streams_ctx *c, int i, int n_gen_want, inferd_error *err)
{
    int n = 0;
    while (!c->ended[i]) {
        inferd_event ev;
        int rc = inferd_request_next(c->reqs[i], &ev, 0);
        if (rc == INFERD_E_TIMEOUT)
            break;
        if (rc < 0)
            return inferd_fail(err, INFERD_E_INTERNAL, "stream %d: no terminal event", i);
        n++;
        if (ev.type == INFERD_EVENT_ERROR)
            return inferd_fail(err, ev.code, "stream %d: %s", i, ev.message);
        if (ev.type != INFERD_EVENT_DONE)
            continue;
        if ((int)ev.n_gen != n_gen_want)
            return inferd_fail(err, INFERD_E_INTERNAL, "stream %d ended after %u of %d tokens", i,
                               ev.n_gen, n_gen_want);
        c->ttft_ms[i] = ev.ttft_ms;
        c->gen_ms[i] = ev.gen_ms;
        c->n_gen[i] = ev.n_gen;
        c->ended[i] = true;
    }
    return n;
}

/* One round: @p n requests of random distinct prompts, greedy, ignoring
 * end-of-generation, @p n_gen tokens each, submitted together behind the
 * gate; then read to the end. Sets *out_tg_tps (decode-phase tokens/s of
 * all streams) and c->ttft_ms[0..n). */
static int run_streams_round(streams_ctx *c, int n, int n_gen, uint64_t *rng, double *out_tg_tps,
                             inferd_error *err)
{
    inferd_request_params p = inferd_request_params_default();
    inferd_request *g_req = NULL;
    int n_sub = 0, rc;

    for (int i = 0; i < n * c->n_prompt; i++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        c->prompts[i] = (int32_t)((*rng >> 33) % c->n_vocab);
    }
    p.sampling.temperature = 0.0f;
    p.ignore_eos = true;
    p.timeout_ms = -1;

    /* The gate: a one-token request whose terminal event's callback holds
     * the scheduler thread until every measured request is queued. */
    c->g.entered = c->g.open = false;
    p.tokens = c->prompts;
    p.n_tokens = 1;
    p.max_tokens = 1;
    p.on_event = gate_on_event;
    p.on_event_ctx = &c->g;
    if ((rc = inferd_sched_submit(c->s, &p, &g_req, err)) < 0)
        return rc;
    pthread_mutex_lock(&c->g.mu);
    while (!c->g.entered)
        pthread_cond_wait(&c->g.cv, &c->g.mu);
    pthread_mutex_unlock(&c->g.mu);

    p.n_tokens = (size_t)c->n_prompt;
    p.max_tokens = n_gen;
    p.on_event = waker_notify;
    p.on_event_ctx = &c->w;
    for (; n_sub < n; n_sub++) {
        p.tokens = c->prompts + (size_t)n_sub * (size_t)c->n_prompt;
        c->ended[n_sub] = false;
        c->t_sub_ms[n_sub] = inferd_now_s() * 1e3;
        if ((rc = inferd_sched_submit(c->s, &p, &c->reqs[n_sub], err)) < 0)
            break;
    }
    gate_open(&c->g);
    if (rc < 0)
        goto done;

    inferd_event ev;
    while ((rc = inferd_request_next(g_req, &ev, -1)) == 0 && ev.type == INFERD_EVENT_TOKEN)
        ;
    if (rc < 0 || ev.type == INFERD_EVENT_ERROR) {
        rc = inferd_fail(err, rc < 0 ? INFERD_E_INTERNAL : ev.code, "gate request: %s",
                         rc < 0 ? "no terminal event" : ev.message);
        goto done;
    }

    /* Poll every stream; sleep until the next wake-up when none had news. */
    for (;;) {
        pthread_mutex_lock(&c->w.mu);
        uint64_t seen = c->w.n_events;
        pthread_mutex_unlock(&c->w.mu);
        int pending = 0, got = 0;
        for (int i = 0; i < n; i++) {
            if ((rc = drain_request(c, i, n_gen, err)) < 0)
                goto done;
            got += rc;
            pending += !c->ended[i];
        }
        if (!pending)
            break;
        if (!got) {
            pthread_mutex_lock(&c->w.mu);
            while (c->w.n_events == seen)
                pthread_cond_wait(&c->w.cv, &c->w.mu);
            pthread_mutex_unlock(&c->w.mu);
        }
    }

    /* Decode phase: from the moment the last stream got its first token to
     * the last token of all; every stream's tokens after its first count.
     * All prompts are read in one step, so every stream gets its first
     * token in that step and then one per step. */
    double t_first_max = 0, t_last_max = 0, tokens = 0;
    for (int i = 0; i < n; i++) {
        double t_first = c->t_sub_ms[i] + c->ttft_ms[i];
        double t_last = t_first + c->gen_ms[i];
        if (i == 0 || t_first > t_first_max)
            t_first_max = t_first;
        if (i == 0 || t_last > t_last_max)
            t_last_max = t_last;
        tokens += (double)c->n_gen[i] - 1.0;
    }
    if (t_last_max <= t_first_max) {
        rc = inferd_fail(err, INFERD_E_INTERNAL, "no decode phase was measured");
        goto done;
    }
    *out_tg_tps = tokens / ((t_last_max - t_first_max) / 1e3);
    rc = 0;

done:
    for (int i = 0; i < n_sub; i++) {
        inferd_request_release(c->reqs[i]);
        c->reqs[i] = NULL;
    }
    inferd_request_release(g_req);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile @p q (0..100) of @p v (sorted in place). */
static double percentile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    int k = (int)ceil(q / 100.0 * n) - 1;
    return v[k < 0 ? 0 : (k >= n ? n - 1 : k)];
}

typedef struct streams_row {
    int n;
    double tg_mean, tg_sd, ttft_p50, ttft_p99;
} streams_row;

/* Measure every count of @p list; print a table or JSON. */
static int bench_streams(const char *model_path, const int *list, int n_list, int n_prompt,
                         int n_gen, int threads, int reps, bool json)
{
    int n_max = 0, status = CLI_EXIT_FAIL;
    for (int k = 0; k < n_list; k++)
        if (list[k] > n_max)
            n_max = list[k];

    inferd_error err = {0};
    inferd_sched_opts so = inferd_sched_opts_default();
    so.model.n_ctx = (uint32_t)(n_prompt + n_gen + 1);
    so.n_threads = (uint32_t)threads;
    so.default_timeout_ms = -1;
    streams_ctx c = {.n_prompt = n_prompt};
    streams_row rows[STREAMS_LIST_MAX];
    double *tg = inferd_calloc((size_t)reps, sizeof(double));
    double *ttft_all = inferd_calloc((size_t)reps * (size_t)n_max, sizeof(double));
    uint64_t rng = 1234, w_bytes, st_bytes;

    pthread_mutex_init(&c.w.mu, NULL);
    pthread_cond_init(&c.w.cv, NULL);
    pthread_mutex_init(&c.g.mu, NULL);
    pthread_cond_init(&c.g.cv, NULL);
    c.prompts = inferd_calloc((size_t)n_max * (size_t)n_prompt, sizeof(int32_t));
    c.reqs = inferd_calloc((size_t)n_max, sizeof(*c.reqs));
    c.t_sub_ms = inferd_calloc((size_t)n_max, sizeof(double));
    c.ttft_ms = inferd_calloc((size_t)n_max, sizeof(double));
    c.gen_ms = inferd_calloc((size_t)n_max, sizeof(double));
    c.n_gen = inferd_calloc((size_t)n_max, sizeof(uint32_t));
    c.ended = inferd_calloc((size_t)n_max, sizeof(bool));
    if (!tg || !ttft_all || !c.prompts || !c.reqs || !c.t_sub_ms || !c.ttft_ms || !c.gen_ms ||
        !c.n_gen || !c.ended) {
        inferd__cli_error(CMD, "no memory");
        goto done;
    }

    /* Check the file before starting schedulers, so that a bad path is one
     * error line (a scheduler would also log its failed load). */
    so.n_slots = (uint32_t)n_max + 1;
    so.n_prefill_chunk = (uint32_t)(n_max * n_prompt);
    inferd_model_params mp = inferd_sched_model_params(&so);
    if (inferd_model_estimate(model_path, &mp, &w_bytes, &st_bytes, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }

    for (int k = 0; k < n_list; k++) {
        const int n = list[k];
        so.n_slots = (uint32_t)n + 1; /* + the gate */
        so.n_queue_max = (uint32_t)n + 1;
        so.n_prefill_chunk = (uint32_t)(n * n_prompt);
        if (inferd_sched_create(model_path, &so, &c.s, &err) < 0 ||
            inferd_sched_wait_ready(c.s, -1, &err) < 0)
            goto fail_run;
        c.n_vocab = inferd_model_get_hparams(inferd_sched_model(c.s))->n_vocab;
        /* Warm-up: the first passes fault the weights in. */
        double tps;
        if (run_streams_round(&c, n, n_gen < 8 ? n_gen : 8, &rng, &tps, &err) < 0)
            goto fail_run;
        for (int r = 0; r < reps; r++) {
            if (run_streams_round(&c, n, n_gen, &rng, &tg[r], &err) < 0)
                goto fail_run;
            memcpy(ttft_all + (size_t)r * (size_t)n, c.ttft_ms, (size_t)n * sizeof(double));
        }
        inferd_sched_destroy(c.s);
        c.s = NULL;
        rows[k].n = n;
        mean_std(tg, reps, &rows[k].tg_mean, &rows[k].tg_sd);
        rows[k].ttft_p50 = percentile(ttft_all, n * reps, 50);
        rows[k].ttft_p99 = percentile(ttft_all, n * reps, 99);
    }

    double base = 0;
    for (int k = 0; k < n_list; k++)
        if (rows[k].n == 1)
            base = rows[k].tg_mean;
    if (json) {
        json_t *arr = json_array();
        for (int k = 0; k < n_list; k++) {
            json_t *e = json_pack("{s:I,s:f,s:f,s:f,s:f}", "n", (json_int_t)rows[k].n, "tg_tps",
                                  rows[k].tg_mean, "tg_tps_std", rows[k].tg_sd, "ttft_p50_ms",
                                  rows[k].ttft_p50, "ttft_p99_ms", rows[k].ttft_p99);
            if (e && base > 0)
                json_object_set_new(e, "speedup", json_real(rows[k].tg_mean / base));
            json_array_append_new(arr, e);
        }
        json_t *o =
            json_pack("{s:o,s:I,s:I,s:I,s:I,s:s}", "streams", arr, "n_prompt", (json_int_t)n_prompt,
                      "n_gen", (json_int_t)n_gen, "threads", (json_int_t)threads, "repetitions",
                      (json_int_t)reps, "isa", inferd_isa_name(inferd_cpu_isa()));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (!s) {
            inferd__cli_error(CMD, "no memory");
            json_decref(o);
            goto done;
        }
        puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("%s: %d threads, %d-token prompts, %d tokens per stream, %d repetitions\n\n",
               model_path, threads, n_prompt, n_gen, reps);
        printf("| streams | tg t/s | speedup vs 1 | ttft p50 ms | ttft p99 ms |\n"
               "|---|---|---|---|---|\n");
        for (int k = 0; k < n_list; k++) {
            char speedup[32] = "-";
            if (base > 0)
                snprintf(speedup, sizeof(speedup), "%.2fx", rows[k].tg_mean / base);
            printf("| %d | %.2f ± %.2f | %s | %.1f | %.1f |\n", rows[k].n, rows[k].tg_mean,
                   rows[k].tg_sd, speedup, rows[k].ttft_p50, rows[k].ttft_p99);
        }
    }
    status = 0;
    goto done;

fail_run:
    inferd__cli_error(CMD, "%s", err.msg);
done:
    inferd_sched_destroy(c.s);
    inferd_free(c.ended);
    inferd_free(c.n_gen);
    inferd_free(c.gen_ms);
    inferd_free(c.ttft_ms);
    inferd_free(c.t_sub_ms);
    inferd_free(c.reqs);
    inferd_free(c.prompts);
    pthread_cond_destroy(&c.g.cv);
    pthread_mutex_destroy(&c.g.mu);
    pthread_cond_destroy(&c.w.cv);
    pthread_mutex_destroy(&c.w.mu);
    inferd_free(ttft_all);
    inferd_free(tg);
    return status;
}

int inferd__cmd_bench(int argc, char **argv)
{
    const char *model_path = NULL, *pos_args[1], *streams = NULL;
    int64_t n_prompt = 128, n_gen = 64, threads = 0, reps = 5, batch = 512;
    bool json = false, want_help = false, seen_p = false, seen_r = false, seen_b = false;
    int n_pos, status = CLI_EXIT_FAIL;
    const cli_opt opts[] = {
        {"--model", "-m", CLI_STR, &model_path, 0, 0, NULL, 0, NULL},
        {"--n-prompt", "-p", CLI_INT, &n_prompt, 0, 65536, NULL, 0, &seen_p},
        {"--n-gen", "-n", CLI_INT, &n_gen, 0, 65536, NULL, 0, NULL},
        {"--threads", "-t", CLI_INT, &threads, 1, 256, NULL, 0, NULL},
        {"--repetitions", "-r", CLI_INT, &reps, 1, 1000, NULL, 0, &seen_r},
        {"--batch", "-b", CLI_INT, &batch, 1, 65536, NULL, 0, &seen_b},
        {"--streams", NULL, CLI_STR, &streams, 0, 0, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos_args, 0, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        printf(
            "usage: inferd bench -m FILE [-p 128] [-n 64] [-t THREADS] [-r 5] [-b 512] [--json]\n"
            "       inferd bench -m FILE --streams 1,2,4,8,16 [-p 32] [-n 64] [-t THREADS] "
            "[-r 3] [--json]\n"
            "\n"
            "Without --streams: pp = one pass over -p random prompt tokens (in batches of -b),\n"
            "tg = -n single-token passes; tokens/s, mean ± stddev over -r runs.\n"
            "\n"
            "--streams LIST: for each N (1..%d), N greedy requests of -p random tokens\n"
            "(default 32) and -n generated tokens (default 64, at least 2; end-of-generation\n"
            "ignored) reach an idle scheduler (a slot each, prefill chunk N*p, -t threads)\n"
            "together, and all prompts are read in one step. tg t/s = the tokens every\n"
            "stream generated after its first one / the time from the first tokens to the\n"
            "last token of all: the decode-phase throughput of all streams together, as\n"
            "llama-batched-bench's S_TG (mean ± stddev over -r runs, default 3). ttft =\n"
            "submission -> first token, p50 and p99 over all requests of the -r runs.\n"
            "--json: {\"streams\":[{\"n\",\"tg_tps\",\"tg_tps_std\",\"ttft_p50_ms\",\n"
            "\"ttft_p99_ms\",\"speedup\"},...],\"n_prompt\",\"n_gen\",\"threads\",...}.\n",
            STREAMS_MAX);
        return 0;
    }
    if (!model_path) {
        inferd__cli_error(CMD, "-m FILE is required (see --help)");
        return CLI_EXIT_USAGE;
    }
    if (threads == 0)
        threads = inferd_cpu_count();
    if (streams) {
        int list[STREAMS_LIST_MAX], n_list = 0;
        if (parse_streams(streams, list, STREAMS_LIST_MAX, &n_list) < 0)
            return CLI_EXIT_USAGE;
        if (seen_b) {
            inferd__cli_error(CMD, "--batch does not apply to --streams (prompts are read "
                                   "in one step)");
            return CLI_EXIT_USAGE;
        }
        if (!seen_p)
            n_prompt = 32;
        if (!seen_r)
            reps = 3;
        if (n_prompt < 1 || n_gen < 2) {
            inferd__cli_error(CMD, "--streams needs -p >= 1 and -n >= 2 (got -p %lld -n %lld)",
                              (long long)n_prompt, (long long)n_gen);
            return CLI_EXIT_USAGE;
        }
        for (int k = 0; k < n_list; k++) {
            if ((int64_t)list[k] * n_prompt > PREFILL_MAX) {
                inferd__cli_error(CMD,
                                  "--streams %d with -p %lld: %lld prompt tokens in one step, "
                                  "at most %d",
                                  list[k], (long long)n_prompt, (long long)list[k] * n_prompt,
                                  PREFILL_MAX);
                return CLI_EXIT_USAGE;
            }
        }
        return bench_streams(model_path, list, n_list, (int)n_prompt, (int)n_gen, (int)threads,
                             (int)reps, json);
    }

    inferd_error err = {0};
    inferd_model *m = NULL;
    inferd_pool *pool = NULL;
    bench_buf b = {0};
    double *pp_tps = NULL, *tg_tps = NULL;
    uint64_t rng = 1234;
    inferd_model_params mp = inferd_model_params_default();
    int64_t need_ctx = (n_prompt > n_gen ? n_prompt : n_gen) + 1;
    mp.n_ctx = (uint32_t)need_ctx;
    mp.n_batch_max = (uint32_t)(batch < n_prompt ? batch : (n_prompt > 0 ? n_prompt : 1));

    if (inferd_model_load(model_path, &mp, &m, &err) < 0 ||
        inferd_pool_create((int)threads, &pool, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }
    const uint32_t nb = mp.n_batch_max;
    b.tokens = inferd_calloc(nb, sizeof(int32_t));
    b.pos = inferd_calloc(nb, sizeof(int32_t));
    b.seq = inferd_calloc(nb, sizeof(int32_t));
    b.want = inferd_calloc(nb, 1);
    b.prefill = inferd_malloc(nb);
    if (b.prefill)
        memset(b.prefill, 1, nb);
    b.logits = inferd_calloc(inferd_model_get_hparams(m)->n_vocab, sizeof(float));
    pp_tps = inferd_calloc((size_t)reps, sizeof(double));
    tg_tps = inferd_calloc((size_t)reps, sizeof(double));
    if (!b.tokens || !b.pos || !b.seq || !b.want || !b.prefill || !b.logits || !pp_tps || !tg_tps) {
        inferd__cli_error(CMD, "no memory");
        goto done;
    }

    double pp_mean = 0, pp_sd = 0, tg_mean = 0, tg_sd = 0;
    if (n_prompt > 0) {
        if (run_pp(m, pool, &b, (int)n_prompt, (int)nb, &rng, &err) < 0)
            goto fail_run;
        for (int r = 0; r < reps; r++) {
            double t0 = inferd_now_s();
            if (run_pp(m, pool, &b, (int)n_prompt, (int)nb, &rng, &err) < 0)
                goto fail_run;
            pp_tps[r] = (double)n_prompt / (inferd_now_s() - t0);
        }
        mean_std(pp_tps, (int)reps, &pp_mean, &pp_sd);
    }
    if (n_gen > 0) {
        if (run_tg(m, pool, &b, n_gen < 8 ? (int)n_gen : 8, &rng, &err) < 0)
            goto fail_run;
        for (int r = 0; r < reps; r++) {
            double t0 = inferd_now_s();
            if (run_tg(m, pool, &b, (int)n_gen, &rng, &err) < 0)
                goto fail_run;
            tg_tps[r] = (double)n_gen / (inferd_now_s() - t0);
        }
        mean_std(tg_tps, (int)reps, &tg_mean, &tg_sd);
    }

    if (json) {
        json_t *o =
            json_pack("{s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I,s:s,s:I,s:I}", "pp_tps", pp_mean, "pp_std",
                      pp_sd, "tg_tps", tg_mean, "tg_std", tg_sd, "n_prompt", (json_int_t)n_prompt,
                      "n_gen", (json_int_t)n_gen, "threads", (json_int_t)threads, "repetitions",
                      (json_int_t)reps, "isa", inferd_isa_name(inferd_cpu_isa()), "weight_bytes",
                      (json_int_t)inferd_model_weight_bytes(m), "decode_bytes",
                      (json_int_t)inferd_model_decode_bytes(m));
        char *s = json_dumps(o, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("| model | threads | test | t/s |\n|---|---|---|---|\n");
        if (n_prompt > 0)
            printf("| %s | %lld | pp%lld | %.2f ± %.2f |\n", model_path, (long long)threads,
                   (long long)n_prompt, pp_mean, pp_sd);
        if (n_gen > 0)
            printf("| %s | %lld | tg%lld | %.2f ± %.2f |\n", model_path, (long long)threads,
                   (long long)n_gen, tg_mean, tg_sd);
    }
    status = 0;
    goto done;

fail_run:
    inferd__cli_error(CMD, "%s", err.msg);
done:
    inferd_free(pp_tps);
    inferd_free(tg_tps);
    inferd_free(b.tokens);
    inferd_free(b.pos);
    inferd_free(b.seq);
    inferd_free(b.want);
    inferd_free(b.prefill);
    inferd_free(b.logits);
    inferd_pool_destroy(pool);
    inferd_model_destroy(m);
    return status;
}
