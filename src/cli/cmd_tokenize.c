/* `inferd tokenize`: print the token ids of a text with a model's (or a
 * vocabulary-only file's) tokenizer. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/gguf.h"
#include "inferd/tokenizer.h"

#define CMD "tokenize"

int inferd__cmd_tokenize(int argc, char **argv)
{
    const char *model_path = NULL, *pos[1];
    bool no_bos = false, parse_special = false, json = false, want_help = false;
    int n_pos = 0, status = CLI_EXIT_FAIL;
    const cli_opt opts[] = {
        {"--model", "-m", CLI_STR, &model_path, 0, 0, NULL, 0, NULL},
        {"--no-bos", NULL, CLI_FLAG, &no_bos, 0, 0, NULL, 0, NULL},
        {"--parse-special", NULL, CLI_FLAG, &parse_special, 0, 0, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 1, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        printf("usage: inferd tokenize -m FILE [--no-bos] [--parse-special] [--json] TEXT\n");
        return 0;
    }
    if (!model_path || n_pos != 1) {
        inferd__cli_error(CMD, "%s is required (see --help)", !model_path ? "-m FILE" : "TEXT");
        return CLI_EXIT_USAGE;
    }

    inferd_error err = {0};
    inferd_gguf *g = NULL;
    inferd_vocab *v = NULL;
    int32_t *ids = NULL;
    size_t len = strlen(pos[0]), cap = len + 8, n = 0;
    if (inferd_gguf_open(model_path, &g, &err) < 0 || inferd_vocab_load(g, &v, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }
    ids = inferd_malloc(cap * sizeof(int32_t));
    if (!ids) {
        inferd__cli_error(CMD, "no memory");
        goto done;
    }
    if (inferd_tokenize(v, pos[0], len, !no_bos, parse_special, ids, cap, &n, &err) < 0) {
        inferd__cli_error(CMD, "%s", err.msg);
        goto done;
    }
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, json_integer(ids[i]));
        json_t *o = json_pack("{s:o}", "ids", a);
        char *s = json_dumps(o, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
    status = 0;

done:
    inferd_free(ids);
    inferd_vocab_destroy(v);
    inferd_gguf_close(g);
    return status;
}
