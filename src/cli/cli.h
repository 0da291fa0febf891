/* The `inferd` command: one function per subcommand, and the small option
 * parser they share. Exit status: 0 success, 1 failure, 2 usage error. */
#ifndef INFERD_CLI_H
#define INFERD_CLI_H

#include <stdbool.h>
#include <stdint.h>

#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

int inferd__cmd_info(int argc, char **argv);
int inferd__cmd_generate(int argc, char **argv);
int inferd__cmd_tokenize(int argc, char **argv);
int inferd__cmd_make_model(int argc, char **argv);
int inferd__cmd_bench(int argc, char **argv);
int inferd__cmd_serve(int argc, char **argv);
int inferd__cmd_client(int argc, char **argv);
int inferd__cmd_pipeline(int argc, char **argv);
int inferd__cmd_pipeline_node(int argc, char **argv);

/* Option table for inferd__cli_parse. */
typedef enum cli_opt_kind {
    CLI_FLAG,    /* bool, no value */
    CLI_STR,     /* const char * */
    CLI_INT,     /* int64_t, checked against [min, max] */
    CLI_FLOAT,   /* double, checked against [min, max] */
    CLI_STR_LIST /* appends to a const char *[max_items] array, counts in *count */
} cli_opt_kind;

typedef struct cli_opt {
    const char *name;  /* "--temp" */
    const char *alias; /* "-t" or NULL */
    cli_opt_kind kind;
    void *out;       /* bool *, const char **, int64_t *, double *, const char ** */
    double min, max; /* for numbers */
    int *count;      /* CLI_STR_LIST: items stored so far */
    int max_items;   /* CLI_STR_LIST capacity */
    bool *seen;      /* optional: set when given */
} cli_opt;

/**
 * Parse argv[1..argc) against @p opts. Non-option words are stored in
 * @p positional (up to max_positional). On error prints
 * "inferd CMD: <problem>" to stderr and returns -1.
 */
int inferd__cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts,
                      const char **positional, int max_positional, int *out_n_positional);

/**
 * As inferd__cli_parse, then, when *@p config_path was set by it (an option
 * such as --config), read that JSON object of option names without the
 * leading dashes ("ctx": 512, "model": ["a.gguf"]; '_' may stand for '-')
 * and apply each option the command line did not give: flags win. Unknown
 * names and wrong types are errors naming the file and the key.
 */
int inferd__cli_parse_with_config(const char *cmd, int argc, char **argv, const cli_opt *opts,
                                  const char **positional, int max_positional,
                                  int *out_n_positional, const char *const *config_path);

/** Print "inferd CMD: msg" to stderr. */
void inferd__cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
