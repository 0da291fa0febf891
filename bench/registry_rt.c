/* The C side of the Python package's in-process overhead (bench/python.sh):
 * a greedy completion through the process registry and the model's
 * scheduler, the way python/src/model.c drives them (one registry with a
 * reaper, inferd_registry_get_or_load with the Python defaults, a text
 * prompt submitted, events read in 100 ms slices until the terminal one,
 * the request released). Each call is timed from the submit to the
 * release; the model's load is not timed. One request at a time, from
 * the main thread.
 *
 * --tokens 1 (default): max_tokens 1, temperature 0; the sample is the
 *   call's time. --tokens K > 1: K tokens with end-of-generation ignored
 *   and the default sampling with seed 42; the sample is the call's time
 *   divided by K (µs per token).
 * Prints {"path":"c","tokens":K,"n":N,"p50_us":...,"p99_us":...} and,
 * with --raw FILE, appends each sample (µs, one a line) to FILE.
 *
 *   inferd-registry-rt --model FILE [--requests N] [--tokens K]
 *       [--threads T] [--warmup W] [--raw FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"

#define PROMPT "Once upon a time"

static void die(const char *what, const inferd_error *err)
{
    fprintf(stderr, "inferd-registry-rt: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    exit(1);
}

static const char *arg(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return dflt;
}

static uint64_t arg_u64(int argc, char **argv, const char *name, const char *dflt, uint64_t lo,
                        uint64_t hi)
{
    uint64_t v = 0;
    if (!bench_parse_u64(arg(argc, argv, name, dflt), lo, hi, &v)) {
        fprintf(stderr, "inferd-registry-rt: %s: expected an integer in [%llu, %llu]\n", name,
                (unsigned long long)lo, (unsigned long long)hi);
        exit(2);
    }
    return v;
}

/* One completion of @p n_tokens on @p s, read to its end as the Python
 * Generation does; the text is gathered as Model.complete gathers it.
 * Returns the tokens generated. */
static uint32_t complete(inferd_sched *s, uint32_t n_tokens, char *text, size_t text_cap)
{
    inferd_request_params p = inferd_request_params_default();
    inferd_request *r = NULL;
    inferd_error err = {0};
    size_t text_len = 0;
    uint32_t n_gen = 0;

    p.text = PROMPT;
    p.text_len = sizeof(PROMPT) - 1;
    p.max_tokens = (int32_t)n_tokens;
    if (n_tokens == 1) {
        p.sampling.temperature = 0;
    } else {
        p.ignore_eos = true;
        p.sampling.has_seed = true;
        p.sampling.seed = 42;
    }
    if (inferd_sched_submit(s, &p, &r, &err) < 0)
        die("submit", &err);
    for (;;) {
        inferd_event ev;
        int rc = inferd_request_next(r, &ev, 100);
        if (rc == INFERD_E_TIMEOUT)
            continue;
        if (rc < 0)
            die("the request has no more events", NULL);
        if (ev.type == INFERD_EVENT_ERROR)
            die(ev.message ? ev.message : "the request failed", NULL);
        if (ev.text_len > 0 && text_len + ev.text_len < text_cap) {
            memcpy(text + text_len, ev.text, ev.text_len);
            text_len += ev.text_len;
        }
        if (ev.type == INFERD_EVENT_DONE) {
            n_gen = ev.n_gen;
            break;
        }
    }
    inferd_request_release(r);
    return n_gen;
}

int main(int argc, char **argv)
{
    const char *model = arg(argc, argv, "--model", NULL);
    const char *raw_path = arg(argc, argv, "--raw", NULL);
    const size_t n = (size_t)arg_u64(argc, argv, "--requests", "1000", 1, 10000000);
    const uint32_t n_tokens = (uint32_t)arg_u64(argc, argv, "--tokens", "1", 1, 4096);
    const uint32_t n_threads = (uint32_t)arg_u64(argc, argv, "--threads", "1", 0, 256);
    const size_t n_warmup = (size_t)arg_u64(argc, argv, "--warmup", "20", 0, 1000000);
    if (!model) {
        fprintf(stderr, "usage: see the top of bench/registry_rt.c\n");
        return 2;
    }

    /* The registry and the model as python/src/model.c makes them. */
    inferd_registry_opts ro = inferd_registry_opts_default();
    inferd_registry *reg = NULL;
    inferd_error err = {0};
    ro.reaper_interval_ms = 1000;
    if (inferd_registry_create(&ro, &reg, &err) < 0)
        die("registry", &err);
    inferd_registry_model_opts mo = inferd_registry_model_opts_default();
    mo.path = model;
    mo.keep_alive_ms = 300000;
    mo.sched.n_slots = 4;
    mo.sched.n_threads = n_threads;
    mo.sched.n_queue_max = 64;
    mo.sched.model.n_ctx = 0;
    inferd_registry_handle *h = NULL;
    if (inferd_registry_get_or_load(reg, model, &mo, &h, &err) < 0)
        die("load", &err);
    inferd_sched *s = inferd_registry_handle_sched(h);

    int64_t *v = calloc(n, sizeof(*v));
    char *text = malloc(65536);
    if (!v || !text)
        die("no memory", NULL);
    for (size_t i = 0; i < n_warmup + n; i++) {
        const int64_t t0 = bench_now_ns();
        const uint32_t n_gen = complete(s, n_tokens, text, 65536);
        const int64_t t1 = bench_now_ns();
        if (n_gen != n_tokens)
            die("a completion did not generate --tokens tokens", NULL);
        if (i >= n_warmup)
            v[i - n_warmup] = (t1 - t0) / n_tokens;
    }

    if (raw_path) {
        FILE *f = fopen(raw_path, "ae");
        if (!f)
            die("--raw: cannot open the file", NULL);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%.3f\n", (double)v[i] / 1e3);
        if (fclose(f) != 0)
            die("--raw: cannot write the file", NULL);
    }
    qsort(v, n, sizeof(*v), bench_cmp_i64);
    printf("{\"path\":\"c\",\"tokens\":%u,\"n\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", n_tokens,
           n, (double)bench_pct(v, n, 50) / 1e3, (double)bench_pct(v, n, 99) / 1e3);

    free(text);
    free(v);
    inferd_registry_release(reg, h);
    inferd_registry_destroy(reg);
    return 0;
}
