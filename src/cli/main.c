/* `inferd`: dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"serve", inferd__cmd_serve, "serve models over HTTP (OpenAI, KServe v2)"},
    {"client", inferd__cmd_client, "talk to workers (complete, chat, status, health)"},
    {"generate", inferd__cmd_generate, "generate text from a prompt"},
    {"tokenize", inferd__cmd_tokenize, "print the token ids of a text"},
    {"info", inferd__cmd_info, "show a GGUF file's metadata and tensors"},
    {"make-model", inferd__cmd_make_model, "write a random-weight llama model"},
    {"bench", inferd__cmd_bench, "measure prompt and generation speed"},
    {"pipeline", inferd__cmd_pipeline, "run a pipeline of nodes in their own processes"},
    {"pipeline-node", inferd__cmd_pipeline_node, "(run by `inferd pipeline`) a built-in node"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: inferd COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun 'inferd COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "inferd: unknown command '%s' (see 'inferd --help')\n", argv[1]);
    return CLI_EXIT_USAGE;
}
