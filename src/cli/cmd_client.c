/* `inferd client`: talk to workers through the resilient client
 * (include/inferd/client.h): complete and chat stream their text to
 * stdout; status prints the worker's JSON; health says live or ready.
 * Failures exit 1 with the error's one-line message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "inferd/client.h"

#define CMD "client"
#define URLS_MAX 16

static void help(void)
{
    printf("usage: inferd client [--url URL]... [options] complete|chat|status|health\n"
           "  --url URL               a worker: http://HOST:PORT or unix:///PATH (repeatable,\n"
           "                          up to %d; default http://127.0.0.1:8080)\n"
           "  --api-key KEY           the workers' API key (default: $INFERD_API_KEY)\n"
           "  --model ID              the model (default: the worker's default)\n"
           "  --attempts N            tries per call over the workers (default 6)\n"
           "  --deadline MS           per call (default 60000; 0: none)\n"
           "  --json                  complete/chat: print the result as JSON after the text\n"
           "complete and chat (sampling as `inferd generate`):\n"
           "  -p, --prompt TEXT       the prompt (chat: the user's message)\n"
           "      --system TEXT       chat: a system message first\n"
           "  -n, --n-predict N       tokens to generate (default 128)\n"
           "      --temp T            temperature (default 0.8; 0: greedy)\n"
           "      --top-k K           top-k (default 40)\n"
           "      --top-p P           top-p (default 0.95)\n"
           "      --min-p P           min-p (default 0.05)\n"
           "      --seed S            RNG seed (default: a random one, kept for a failover)\n"
           "      --stop TEXT         stop string (repeatable, up to %d)\n"
           "health:\n"
           "      --ready             ready (serving) rather than live\n",
           URLS_MAX, INFERD_CLIENT_STOP_MAX);
}

static int print_piece(void *ctx, uint32_t index, const char *text, size_t len)
{
    (void)ctx;
    (void)index;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int inferd__cmd_client(int argc, char **argv)
{
    const char *urls[URLS_MAX], *stops[INFERD_CLIENT_STOP_MAX], *pos[1];
    int n_urls = 0, n_stops = 0, n_pos = 0;
    const char *api_key = getenv("INFERD_API_KEY"), *model = NULL, *prompt = NULL, *system = NULL;
    int64_t n_predict = 128, top_k = 40, seed = 0, attempts = 6, deadline = 60000;
    double temp = 0.8, top_p = 0.95, min_p = 0.05;
    bool seed_given = false, ready = false, json = false, want_help = false;
    const cli_opt opts[] = {
        {"--url", NULL, CLI_STR_LIST, urls, 0, 0, &n_urls, URLS_MAX, NULL},
        {"--api-key", NULL, CLI_STR, &api_key, 0, 0, NULL, 0, NULL},
        {"--model", NULL, CLI_STR, &model, 0, 0, NULL, 0, NULL},
        {"--attempts", NULL, CLI_INT, &attempts, 1, 1000, NULL, 0, NULL},
        {"--deadline", NULL, CLI_INT, &deadline, 0, 1e9, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--prompt", "-p", CLI_STR, &prompt, 0, 0, NULL, 0, NULL},
        {"--system", NULL, CLI_STR, &system, 0, 0, NULL, 0, NULL},
        {"--n-predict", "-n", CLI_INT, &n_predict, -1, 1e7, NULL, 0, NULL},
        {"--temp", NULL, CLI_FLOAT, &temp, 0, 2, NULL, 0, NULL},
        {"--top-k", NULL, CLI_INT, &top_k, 0, 1e6, NULL, 0, NULL},
        {"--top-p", NULL, CLI_FLOAT, &top_p, 0, 1, NULL, 0, NULL},
        {"--min-p", NULL, CLI_FLOAT, &min_p, 0, 1, NULL, 0, NULL},
        {"--seed", NULL, CLI_INT, &seed, 0, 9007199254740991.0, NULL, 0, &seed_given},
        {"--stop", NULL, CLI_STR_LIST, stops, 0, 0, &n_stops, INFERD_CLIENT_STOP_MAX, NULL},
        {"--ready", NULL, CLI_FLAG, &ready, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 1, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        help();
        return 0;
    }
    const char *what = n_pos ? pos[0] : "";
    const bool gen = strcmp(what, "complete") == 0 || strcmp(what, "chat") == 0;
    if (!gen && strcmp(what, "status") != 0 && strcmp(what, "health") != 0) {
        inferd__cli_error(CMD, "say complete, chat, status or health (see --help)");
        return CLI_EXIT_USAGE;
    }
    if (gen && !prompt) {
        inferd__cli_error(CMD, "%s: -p TEXT is required", what);
        return CLI_EXIT_USAGE;
    }
    if (n_urls == 0)
        urls[n_urls++] = "http://127.0.0.1:8080";

    inferd_resilient_opts o = inferd_resilient_opts_default();
    o.client.api_key = api_key && *api_key ? api_key : NULL;
    o.retry.attempts = (uint32_t)attempts;
    o.retry.deadline_ms = deadline;
    inferd_resilient *r = NULL;
    inferd_error e = {0};
    if (inferd_resilient_open(urls, (size_t)n_urls, &o, &r, &e) < 0) {
        inferd__cli_error(CMD, "%s", e.msg);
        return CLI_EXIT_USAGE;
    }
    int rc = 0;
    if (strcmp(what, "status") == 0) {
        char *js = NULL;
        rc = inferd_resilient_status(r, &js, &e);
        if (rc == 0)
            printf("%s\n", js);
        free(js);
    } else if (strcmp(what, "health") == 0) {
        rc = inferd_resilient_health(r, ready, &e);
        if (rc == 0)
            printf("%s\n", ready ? "ready" : "live");
    } else {
        inferd_client_gen g = inferd_client_gen_default();
        inferd_client_message msgs[2];
        size_t n_msgs = 0;
        if (strcmp(what, "chat") == 0) {
            if (system)
                msgs[n_msgs++] = (inferd_client_message){"system", system};
            msgs[n_msgs++] = (inferd_client_message){"user", prompt};
            g.messages = msgs;
            g.n_messages = n_msgs;
        } else {
            g.prompt = prompt;
        }
        g.model = model;
        g.max_tokens = (int32_t)n_predict;
        g.temperature = temp;
        g.top_k = (int32_t)top_k;
        g.top_p = top_p;
        g.min_p = min_p;
        g.has_seed = seed_given;
        g.seed = (uint64_t)seed;
        for (int i = 0; i < n_stops; i++)
            g.stop[i] = stops[i];
        g.n_stop = n_stops;
        inferd_client_result res;
        rc = inferd_resilient_complete(r, &g, print_piece, NULL, &res, &e);
        if (rc == 0) {
            printf("\n");
            if (json) {
                inferd_resilient_stats st;
                inferd_resilient_stats_get(r, &st);
                printf("{\"finish_reason\":\"%s\",\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                       "\"seed\":%llu,\"pieces\":%u,\"attempts\":%llu,\"failovers\":%llu,"
                       "\"replayed\":%llu}\n",
                       res.finish_reason, res.prompt_tokens, res.completion_tokens,
                       (unsigned long long)res.seed, res.n_pieces, (unsigned long long)st.attempts,
                       (unsigned long long)st.failovers, (unsigned long long)st.replayed);
            }
        } else if (res.text_len) {
            printf("\n"); /* what came before the error stays on stdout */
        }
        inferd_client_result_free(&res);
    }
    if (rc < 0)
        inferd__cli_error(CMD, "%s", e.msg);
    inferd_resilient_close(r);
    return rc < 0 ? CLI_EXIT_FAIL : 0;
}
