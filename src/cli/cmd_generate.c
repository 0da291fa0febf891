/* `inferd generate`: load a model, tokenize the prompt, stream the
 * continuation to stdout (or print one JSON object with --json). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/generate.h"
#include "inferd/log.h"

#define CMD "generate"

static void help(void)
{
    printf("usage: inferd generate -m FILE -p TEXT [options]\n"
           "  -m, --model FILE        GGUF model\n"
           "  -p, --prompt TEXT       prompt (special-token text such as <s> is parsed)\n"
           "  -n, --n-predict N       tokens to generate (default 128; -1: until context end)\n"
           "      --temp T            temperature (default 0.8; 0: greedy)\n"
           "      --top-k K           top-k (default 40; 0: off)\n"
           "      --top-p P           top-p (default 0.95; 1: off)\n"
           "      --min-p P           min-p (default 0.05; 0: off)\n"
           "      --repeat-penalty R  repetition penalty (default 1.0: off)\n"
           "      --repeat-last-n N   tokens the penalties look back at (default 64)\n"
           "      --frequency-penalty F, --presence-penalty P  (default 0)\n"
           "      --stop TEXT         stop string (repeatable, up to %d)\n"
           "      --seed S            RNG seed (default: random, reported)\n"
           "  -t, --threads N         compute threads (default: all CPUs)\n"
           "  -b, --batch N           prompt tokens per forward call (default 512)\n"
           "  -c, --ctx N             context length (default: the model's)\n"
           "      --no-bos            do not add BOS\n"
           "      --no-mmap           read the model into memory instead of mapping it\n"
           "      --json              print {\"prompt_ids\",\"ids\",\"text\",...} instead of "
           "streaming\n",
           INFERD_GEN_MAX_STOP);
}

static int on_text(void *ctx, const char *text, size_t len)
{
    (void)ctx;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static json_t *ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

int inferd__cmd_generate(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL;
    int64_t n_predict = 128, top_k = 40, threads = 0, batch = 512, ctx = 0, seed = 0,
            repeat_last_n = 64;
    double temp = 0.8, top_p = 0.95, min_p = 0.05, repeat_penalty = 1.0, freq_pen = 0.0,
           pres_pen = 0.0;
    bool json = false, no_bos = false, no_mmap = false, want_help = false, seed_given = false;
    inferd_gen_params gp = inferd_gen_params_default();
    const char *pos[1];
    int n_pos;

    const cli_opt opts[] = {
        {"--model", "-m", CLI_STR, &model_path, 0, 0, NULL, 0, NULL},
        {"--prompt", "-p", CLI_STR, &prompt, 0, 0, NULL, 0, NULL},
        {"--n-predict", "-n", CLI_INT, &n_predict, -1, 1e9, NULL, 0, NULL},
        {"--temp", NULL, CLI_FLOAT, &temp, 0, 100, NULL, 0, NULL},
        {"--top-k", NULL, CLI_INT, &top_k, 0, 1e9, NULL, 0, NULL},
        {"--top-p", NULL, CLI_FLOAT, &top_p, 0, 1, NULL, 0, NULL},
        {"--min-p", NULL, CLI_FLOAT, &min_p, 0, 1, NULL, 0, NULL},
        {"--repeat-penalty", NULL, CLI_FLOAT, &repeat_penalty, 1e-6, 100, NULL, 0, NULL},
        {"--repeat-last-n", NULL, CLI_INT, &repeat_last_n, 0, 1e6, NULL, 0, NULL},
        {"--frequency-penalty", NULL, CLI_FLOAT, &freq_pen, -100, 100, NULL, 0, NULL},
        {"--presence-penalty", NULL, CLI_FLOAT, &pres_pen, -100, 100, NULL, 0, NULL},
        {"--stop", NULL, CLI_STR_LIST, gp.stop, 0, 0, &gp.n_stop, INFERD_GEN_MAX_STOP, NULL},
        {"--seed", NULL, CLI_INT, &seed, 0, 9.007199254740991e15, NULL, 0, &seed_given},
        {"--threads", "-t", CLI_INT, &threads, 1, 256, NULL, 0, NULL},
        {"--batch", "-b", CLI_INT, &batch, 1, 65536, NULL, 0, NULL},
        {"--ctx", "-c", CLI_INT, &ctx, 1, 1 << 20, NULL, 0, NULL},
        {"--no-bos", NULL, CLI_FLAG, &no_bos, 0, 0, NULL, 0, NULL},
        {"--no-mmap", NULL, CLI_FLAG, &no_mmap, 0, 0, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 0, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        help();
        return 0;
    }
    if (!model_path || !prompt) {
        inferd__cli_error(CMD, "%s is required (see --help)", !model_path ? "-m FILE" : "-p TEXT");
        return CLI_EXIT_USAGE;
    }

    gp.n_predict = (int32_t)n_predict;
    gp.n_batch = (int32_t)batch;
    gp.sampling.temperature = (float)temp;
    gp.sampling.top_k = (int32_t)top_k;
    gp.sampling.top_p = (float)top_p;
    gp.sampling.min_p = (float)min_p;
    gp.sampling.repeat_penalty = (float)repeat_penalty;
    gp.sampling.repeat_last_n = (int32_t)repeat_last_n;
    gp.sampling.frequency_penalty = (float)freq_pen;
    gp.sampling.presence_penalty = (float)pres_pen;
    gp.sampling.has_seed = seed_given;
    gp.sampling.seed = (uint64_t)seed;

    inferd_error err = {0};
    inferd_model *m = NULL;
    inferd_pool *pool = NULL;
    int32_t *ids = NULL;
    inferd_gen_result res = {0};
    int status = CLI_EXIT_FAIL;
    inferd_model_params mp = inferd_model_params_default();
    mp.n_ctx = (uint32_t)ctx;
    mp.n_batch_max = (uint32_t)batch;
    mp.no_mmap = no_mmap;

    if (inferd_model_load(model_path, &mp, &m, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }
    if (inferd_pool_create(threads ? (int)threads : inferd_cpu_count(), &pool, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }
    const inferd_vocab *vocab = inferd_model_get_vocab(m);
    size_t len = strlen(prompt), cap = len + 8, n_ids = 0;
    ids = inferd_malloc(cap * sizeof(int32_t));
    if (!ids || inferd_tokenize(vocab, prompt, len, !no_bos, true, ids, cap, &n_ids, &err) < 0) {
        inferd__cli_error(CMD, "tokenize: %s", ids ? err.msg : "no memory");
        goto done;
    }
    if (!json) {
        fwrite(prompt, 1, len, stdout);
        fflush(stdout);
    }
    if (inferd_generate(m, pool, ids, n_ids, &gp, json ? NULL : on_text, NULL, &res, &err) < 0) {
        if (!json)
            putchar('\n');
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }
    if (json) {
        static const char *finish_names[] = {"length", "eog", "stop"};
        json_t *o = json_object();
        json_object_set_new(o, "prompt_ids", ids_json(ids, n_ids));
        json_object_set_new(o, "ids", ids_json(res.ids, res.n_ids));
        json_object_set_new(o, "text", json_stringn(res.text, res.text_len));
        json_object_set_new(o, "seed", json_integer((json_int_t)res.seed));
        json_object_set_new(o, "finish_reason", json_string(finish_names[res.finish]));
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        putchar('\n');
        fflush(stdout); /* the text's end comes before the stats on stderr */
        fprintf(stderr,
                "prompt: %zu tokens in %.1f ms (%.1f tok/s); generated: %zu tokens in "
                "%.1f ms (%.1f tok/s); seed %llu\n",
                n_ids, res.prompt_ms, res.prompt_ms > 0 ? 1e3 * (double)n_ids / res.prompt_ms : 0.0,
                res.n_ids, res.gen_ms, res.gen_ms > 0 ? 1e3 * (double)res.n_ids / res.gen_ms : 0.0,
                (unsigned long long)res.seed);
    }
    status = 0;

done:
    inferd_gen_result_fini(&res);
    inferd_free(ids);
    inferd_pool_destroy(pool);
    inferd_model_destroy(m);
    return status;
}
