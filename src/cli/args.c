/* Option parsing shared by the subcommands: long options with values given
 * as "--name value" or "--name=value"; numbers are range-checked. */
#include "cli.h"

#include <errno.h>
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
    case CLI_STR:
        *(const char **)o->out = val;
        return 0;
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
    case CLI_FLAG:
        break;
    }
    return -1;
}

int inferd__cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts,
                      const char **positional, int max_positional, int *out_n_positional)
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
