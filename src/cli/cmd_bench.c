/* `inferd bench`: prompt processing and generation speed, measured the way
 * llama-bench does: pp = one forward pass over p random tokens from an
 * empty context; tg = n single-token forward passes from an empty context;
 * each repeated r times after a warm-up run, reported as mean and standard
 * deviation of tokens per second. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/cpu.h"
#include "inferd/model.h"

#define CMD "bench"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct bench_buf {
    int32_t *tokens, *pos, *seq;
    int8_t *want;
    int8_t *prefill;     /* all ones: pp tokens are prompt tokens */
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
        inferd_batch bt = {n, b->tokens, b->pos, b->seq, b->want, b->prefill};
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
        inferd_batch bt = {1, b->tokens, b->pos, b->seq, b->want, NULL};
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

int inferd__cmd_bench(int argc, char **argv)
{
    const char *model_path = NULL, *pos_args[1];
    int64_t n_prompt = 128, n_gen = 64, threads = 0, reps = 5, batch = 512;
    bool json = false, want_help = false;
    int n_pos, status = CLI_EXIT_FAIL;
    const cli_opt opts[] = {
        {"--model", "-m", CLI_STR, &model_path, 0, 0, NULL, 0, NULL},
        {"--n-prompt", "-p", CLI_INT, &n_prompt, 0, 65536, NULL, 0, NULL},
        {"--n-gen", "-n", CLI_INT, &n_gen, 0, 65536, NULL, 0, NULL},
        {"--threads", "-t", CLI_INT, &threads, 1, 256, NULL, 0, NULL},
        {"--repetitions", "-r", CLI_INT, &reps, 1, 1000, NULL, 0, NULL},
        {"--batch", "-b", CLI_INT, &batch, 1, 65536, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos_args, 0, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        printf("usage: inferd bench -m FILE [-p 128] [-n 64] [-t THREADS] [-r 5] [-b 512] "
               "[--json]\n");
        return 0;
    }
    if (!model_path) {
        inferd__cli_error(CMD, "-m FILE is required (see --help)");
        return CLI_EXIT_USAGE;
    }
    if (threads == 0)
        threads = inferd_cpu_count();

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
            double t0 = now_s();
            if (run_pp(m, pool, &b, (int)n_prompt, (int)nb, &rng, &err) < 0)
                goto fail_run;
            pp_tps[r] = (double)n_prompt / (now_s() - t0);
        }
        mean_std(pp_tps, (int)reps, &pp_mean, &pp_sd);
    }
    if (n_gen > 0) {
        if (run_tg(m, pool, &b, n_gen < 8 ? (int)n_gen : 8, &rng, &err) < 0)
            goto fail_run;
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            if (run_tg(m, pool, &b, (int)n_gen, &rng, &err) < 0)
                goto fail_run;
            tg_tps[r] = (double)n_gen / (now_s() - t0);
        }
        mean_std(tg_tps, (int)reps, &tg_mean, &tg_sd);
    }

    if (json) {
        json_t *o = json_pack("{s:f,s:f,s:f,s:f,s:I,s:I,s:I,s:I,s:s,s:I,s:I}", "pp_tps", pp_mean,
                              "pp_std", pp_sd, "tg_tps", tg_mean, "tg_std", tg_sd, "n_prompt",
                              (json_int_t)n_prompt, "n_gen", (json_int_t)n_gen, "threads",
                              (json_int_t)threads, "repetitions", (json_int_t)reps, "isa",
                              inferd_isa_name(inferd_cpu_isa()), "weight_bytes",
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
