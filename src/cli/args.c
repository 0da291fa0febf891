/* Option parsing shared by the subcommands: long options with values given
 * as "--name value" or "--name=value"; numbers are range-checked. */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void inferd__cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "inferd %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const cli_opt *find_opt(const cli_opt *opts, const char *name, size_t len)
{
    for (const cli_opt *o = opts; o->name; o++) {
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
        if (o->alias && strlen(o->alias) == len && strncmp(o->alias, name, len) == 0)
            return o;
    }
    return NULL;
}

static int set_value(const char *cmd, const cli_opt *o, const char *val)
{
    char *end;
    switch (o->kind) {
    case CLI_STR: *(const char **)o->out = val; return 0;
    case CLI_STR_LIST:
        if (*o->count >= o->max_items) {
            inferd__cli_error(cmd, "%s given more than %d times", o->name, o->max_items);
            return -1;
        }
        ((const char **)o->out)[(*o->count)++] = val;
        return 0;
    case CLI_INT: {
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end) {
            inferd__cli_error(cmd, "%s expects an integer, got '%s'", o->name, val);
            return -1;
        }
        if ((double)v < o->min || (double)v > o->max) {
            inferd__cli_error(cmd, "%s %lld out of range %.0f..%.0f", o->name, v, o->min, o->max);
            return -1;
        }
        *(int64_t *)o->out = v;
        return 0;
    }
    case CLI_FLOAT: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || isnan(v)) {
            inferd__cli_error(cmd, "%s expects a number, got '%s'", o->name, val);
            return -1;
        }
        if (v < o->min || v > o->max) {
            inferd__cli_error(cmd, "%s %g out of range %g..%g", o->name, v, o->min, o->max);
            return -1;
        }
        *(double *)o->out = v;
        return 0;
    }
    case CLI_FLAG: break;
    }
    return -1;
}

/* Parse argv; when @p given is not NULL, given[k] is set for each option
 * opts[k] that appears. */
static int parse_argv(const char *cmd, int argc, char **argv, const cli_opt *opts,
                      const char **positional, int max_positional, int *out_n_positional,
                      bool *given)
{
    int n_pos = 0;
    bool only_positional = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (n_pos >= max_positional) {
                inferd__cli_error(cmd, "unexpected argument '%s'", a);
                return -1;
            }
            positional[n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_opt *o = find_opt(opts, a, name_len);
        if (!o) {
            inferd__cli_error(cmd, "unknown option '%.*s'", (int)name_len, a);
            return -1;
        }
        if (o->seen)
            *o->seen = true;
        if (given)
            given[o - opts] = true;
        if (o->kind == CLI_FLAG) {
            if (eq) {
                inferd__cli_error(cmd, "%s takes no value", o->name);
                return -1;
            }
            *(bool *)o->out = true;
            continue;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) {
                inferd__cli_error(cmd, "%s needs a value", o->name);
                return -1;
            }
            val = argv[++i];
        }
        if (set_value(cmd, o, val) < 0)
            return -1;
    }
    *out_n_positional = n_pos;
    return 0;
}

int inferd__cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts,
                      const char **positional, int max_positional, int *out_n_positional)
{
    return parse_argv(cmd, argc, argv, opts, positional, max_positional, out_n_positional, NULL);
}

/* The parsed configuration files stay reachable until exit: their strings
 * are the options' values. */
static json_t *g_configs;

static const char *json_kind(const json_t *v)
{
    return json_is_string(v)    ? "a string"
           : json_is_integer(v) ? "an integer"
           : json_is_number(v)  ? "a number"
           : json_is_boolean(v) ? "a boolean"
           : json_is_array(v)   ? "an array"
           : json_is_object(v)  ? "an object"
                                : "null";
}

/* Apply config value @p v to option @p o. */
static int apply_config_value(const char *cmd, const char *path, const cli_opt *o, json_t *v)
{
    char num[64];
    switch (o->kind) {
    case CLI_FLAG:
        if (!json_is_boolean(v))
            break;
        *(bool *)o->out = json_is_true(v);
        return 0;
    case CLI_STR:
        if (!json_is_string(v))
            break;
        return set_value(cmd, o, json_string_value(v));
    case CLI_INT:
        if (!json_is_integer(v))
            break;
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        return set_value(cmd, o, num);
    case CLI_FLOAT:
        if (!json_is_number(v))
            break;
        snprintf(num, sizeof(num), "%.17g", json_number_value(v));
        return set_value(cmd, o, num);
    case CLI_STR_LIST: {
        if (json_is_string(v))
            return set_value(cmd, o, json_string_value(v));
        if (!json_is_array(v))
            break;
        size_t i;
        json_t *item;
        json_array_foreach (v, i, item) {
            if (!json_is_string(item)) {
                inferd__cli_error(cmd, "config %s: \"%s\"[%zu] must be a string", path, o->name + 2,
                                  i);
                return -1;
            }
            if (set_value(cmd, o, json_string_value(item)) < 0)
                return -1;
        }
        return 0;
    }
    }
    inferd__cli_error(cmd, "config %s: \"%s\" must be %s, not %s", path, o->name + 2,
                      o->kind == CLI_FLAG    ? "a boolean"
                      : o->kind == CLI_STR   ? "a string"
                      : o->kind == CLI_INT   ? "an integer"
                      : o->kind == CLI_FLOAT ? "a number"
                                             : "a string or an array of strings",
                      json_kind(v));
    return -1;
}

int inferd__cli_parse_with_config(const char *cmd, int argc, char **argv, const cli_opt *opts,
                                  const char **positional, int max_positional,
                                  int *out_n_positional, const char *const *config_path)
{
    size_t n_opts = 0;
    while (opts[n_opts].name)
        n_opts++;
    bool *given = calloc(n_opts + 1, sizeof(bool));
    if (!given) {
        inferd__cli_error(cmd, "no memory");
        return -1;
    }
    int rc = parse_argv(cmd, argc, argv, opts, positional, max_positional, out_n_positional, given);
    if (rc < 0 || !*config_path) {
        free(given);
        return rc;
    }
    const char *path = *config_path;
    json_error_t je;
    json_t *cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!cfg) {
        if (je.line > 0)
            inferd__cli_error(cmd, "config %s: %s (line %d, column %d)", path, je.text, je.line,
                              je.column);
        else
            inferd__cli_error(cmd, "config %s: %s", path, je.text);
        free(given);
        return -1;
    }
    if (!g_configs)
        g_configs = json_array();
    json_array_append(g_configs, cfg);
    if (!json_is_object(cfg)) {
        inferd__cli_error(cmd, "config %s: expected a JSON object of option names", path);
        json_decref(cfg);
        free(given);
        return -1;
    }
    const char *key;
    json_t *v;
    rc = 0;
    json_object_foreach (cfg, key, v) {
        /* "ctx" or "--ctx"; "max_body" means "--max-body" as well. */
        char name[128];
        snprintf(name, sizeof(name), "--%s", strncmp(key, "--", 2) == 0 ? key + 2 : key);
        for (char *q = name + 2; *q; q++)
            if (*q == '_')
                *q = '-';
        const cli_opt *o = find_opt(opts, name, strlen(name));
        if (!o || strcmp(o->name, name) != 0 || strcmp(o->name, "--config") == 0 ||
            strcmp(o->name, "--help") == 0) {
            inferd__cli_error(cmd, "config %s: unknown option \"%s\"", path, key);
            rc = -1;
            break;
        }
        if (given[o - opts])
            continue; /* the command line wins */
        if (o->seen)
            *o->seen = true;
        if (apply_config_value(cmd, path, o, v) < 0) {
            rc = -1;
            break;
        }
    }
    json_decref(cfg);
    free(given);
    return rc;
}
