/* `inferd pipeline run|check MANIFEST`: run a pipeline of nodes in their
 * own processes (docs/pipeline.md), feeding it text sessions and printing
 * what comes out; and `inferd pipeline-node`, the program the manager runs
 * for built-in nodes. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "inferd/alloc.h"
#include "inferd/pipeline.h"
#include "inferd/tensor.h"

#define CMD "pipeline"
#define INPUTS_MAX 256

static const char usage_text[] =
    "usage: inferd pipeline run MANIFEST [--input TEXT]... [--channel IN] [--output OUT]\n"
    "                           [--progress] [--init-timeout S] [--json]\n"
    "       inferd pipeline check MANIFEST\n"
    "\n"
    "  run       start the nodes, wait until every one is ready, then send each\n"
    "            --input (or each line of standard input) as a session of text into\n"
    "            the input channel and print what the output channel gives back for\n"
    "            it, until the session's end; then stop\n"
    "  check     check the manifest and exit\n"
    "\n"
    "      --input TEXT        a session's text (repeatable); default: stdin's lines\n"
    "      --channel IN        the pipeline input to send into (default: its first)\n"
    "      --output OUT        the pipeline output to print (default: its first)\n"
    "      --progress          show each node's start-up progress on stderr\n"
    "      --init-timeout S    fail if a node is not ready after S seconds (default 300)\n"
    "      --json              print one JSON object per output sample\n";

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = 2 * cap + 8192;
            char *b = inferd_realloc(buf, cap);
            if (!b) {
                inferd_free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        size_t r = fread(buf + len, 1, 4096, f);
        len += r;
        if (r < 4096)
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

typedef struct bars {
    bool tty;
    size_t drawn; /* lines drawn last time (a terminal redraws over them) */
} bars;

static void draw(void *ctx, const inferd_node_info *nodes, size_t n)
{
    bars *b = ctx;
    if (b->tty && b->drawn)
        fprintf(stderr, "\033[%zuA", b->drawn);
    for (size_t i = 0; i < n; i++) {
        const int filled = (int)(nodes[i].progress * 20 + 0.5);
        char bar[21];
        for (int k = 0; k < 20; k++)
            bar[k] = k < filled ? '#' : '-';
        bar[20] = 0;
        fprintf(stderr, "%s%-16s [%s] %3.0f%%  %-12s %s\n", b->tty ? "\033[2K" : "", nodes[i].name,
                bar, 100 * nodes[i].progress, inferd_node_state_name(nodes[i].state),
                nodes[i].message);
    }
    b->drawn = n;
    fflush(stderr);
}

/* Print one output sample. */
static void print_sample(const inferd_pipeline_sample *s, bool json)
{
    const inferd_sample_header *h = s->h;
    if (json) {
        json_t *o = json_pack("{sI}", "session", (json_int_t)h->session);
        if (h->flags & INFERD_SAMPLE_END) {
            json_object_set_new(o, "end", json_true());
        } else if (h->flags & INFERD_SAMPLE_TEXT) {
            json_object_set_new(o, "text", json_stringn(s->data, h->bytes));
        } else {
            json_t *shape = json_array();
            for (uint32_t d = 0; d < h->ndim; d++)
                json_array_append_new(shape, json_integer(h->shape[d]));
            json_object_set_new(o, "datatype", json_string(inferd_elem_name(h->elem)));
            json_object_set_new(o, "shape", shape);
            json_object_set_new(o, "bytes", json_integer((json_int_t)h->bytes));
        }
        char *t = json_dumps(o, JSON_COMPACT);
        printf("%s\n", t ? t : "{}");
        free(t);
        json_decref(o);
    } else if (h->flags & INFERD_SAMPLE_END) {
        printf("\n");
    } else if (h->flags & INFERD_SAMPLE_TEXT) {
        fwrite(s->data, 1, h->bytes, stdout);
    } else {
        printf("[%s", inferd_elem_name(h->elem));
        for (uint32_t d = 0; d < h->ndim; d++)
            printf("%s%lld", d ? "x" : " ", (long long)h->shape[d]);
        printf("]");
    }
    fflush(stdout);
}

#define OUTPUTS_MAX 16

typedef struct drain {
    inferd_pipeline *p;
    char channel[64];
    pthread_t th;
} drain;

/* An output nobody prints is received and dropped, so that it never fills
 * and holds the nodes upstream of it back. Ends when the pipeline stops. */
static void *drain_main(void *arg)
{
    drain *d = arg;
    for (;;) {
        inferd_pipeline_sample s;
        if (inferd_pipeline_receive(d->p, d->channel, -1, &s, NULL) < 0)
            return NULL;
        inferd_pipeline_release(d->p, &s);
    }
}

static int run(const char *path, const char *text, const char *const *inputs, int n_inputs,
               const char *in_ch, const char *out_ch, const char *const *outs, int n_outs,
               bool show, int64_t init_s, bool json)
{
    drain drains[OUTPUTS_MAX];
    int n_drains = 0;
    char *dir_copy = inferd_strdup(path);
    bars b = {.tty = isatty(2)};
    inferd_pipeline_opts o = {.on_progress = show ? draw : NULL, .ctx = &b};
    inferd_pipeline *p = NULL;
    inferd_error e = {0};
    int status = CLI_EXIT_FAIL;
    if (!dir_copy || inferd_pipeline_start(text, dirname(dir_copy), &o, &p, &e) < 0) {
        inferd__cli_error(CMD, "%s", dir_copy ? e.msg : "no memory");
        goto done;
    }
    if (inferd_pipeline_wait_ready(p, init_s * 1000, &e) < 0) {
        inferd__cli_error(CMD, "%s", e.msg);
        goto done;
    }
    for (int i = 0; i < n_outs && n_drains < OUTPUTS_MAX; i++) {
        if (strcmp(outs[i], out_ch) == 0)
            continue;
        drain *d = &drains[n_drains];
        d->p = p;
        snprintf(d->channel, sizeof(d->channel), "%s", outs[i]);
        if (pthread_create(&d->th, NULL, drain_main, d) == 0)
            n_drains++;
    }
    char *line = NULL;
    size_t line_cap = 0;
    for (uint64_t session = 1;; session++) {
        const char *t;
        size_t len;
        if (n_inputs > 0) {
            if ((int)session > n_inputs)
                break;
            t = inputs[session - 1];
            len = strlen(t);
        } else {
            /* Wait for a line, or for the pipeline to fail meanwhile. */
            struct pollfd pf[2] = {{.fd = 0, .events = POLLIN},
                                   {.fd = inferd_pipeline_fd(p), .events = POLLIN}};
            while (poll(pf, 2, -1) < 0 && errno == EINTR) {
            }
            if (pf[1].revents && !pf[0].revents)
                break; /* the failure is told below */
            ssize_t r = getline(&line, &line_cap, stdin);
            if (r < 0)
                break;
            while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r'))
                line[--r] = 0;
            t = line;
            len = (size_t)r;
        }
        if (inferd_pipeline_send_text(p, in_ch, session, t, len, -1, &e) < 0 ||
            inferd_pipeline_end(p, session, -1, &e) < 0) {
            inferd__cli_error(CMD, "%s", e.msg);
            free(line);
            goto done;
        }
        for (;;) {
            inferd_pipeline_sample s;
            if (inferd_pipeline_receive(p, out_ch, -1, &s, &e) < 0) {
                inferd__cli_error(CMD, "%s", e.msg);
                free(line);
                goto done;
            }
            const bool end = s.h->session == session && (s.h->flags & INFERD_SAMPLE_END);
            print_sample(&s, json);
            inferd_pipeline_release(p, &s);
            if (end)
                break;
        }
    }
    free(line);
    if (inferd_pipeline_failure(p, &e) || inferd_pipeline_stop(p, 2000, &e) < 0) {
        inferd__cli_error(CMD, "%s", e.msg);
        goto done;
    }
    status = 0;
done:
    if (p && n_drains) {
        inferd_pipeline_stop(p, 2000, NULL); /* the drains' receives end */
        for (int i = 0; i < n_drains; i++)
            pthread_join(drains[i].th, NULL);
    }
    inferd_pipeline_destroy(p);
    inferd_free(dir_copy);
    return status;
}

int inferd__cmd_pipeline(int argc, char **argv)
{
    const char *pos[2], *inputs[INPUTS_MAX], *in_ch = NULL, *out_ch = NULL;
    bool show = false, json = false, want_help = false;
    int64_t init_s = 300;
    int n_pos = 0, n_inputs = 0;
    const cli_opt opts[] = {
        {"--input", NULL, CLI_STR_LIST, inputs, 0, 0, &n_inputs, INPUTS_MAX, NULL},
        {"--channel", NULL, CLI_STR, &in_ch, 0, 0, NULL, 0, NULL},
        {"--output", NULL, CLI_STR, &out_ch, 0, 0, NULL, 0, NULL},
        {"--progress", NULL, CLI_FLAG, &show, 0, 0, NULL, 0, NULL},
        {"--init-timeout", NULL, CLI_INT, &init_s, 0, 86400, NULL, 0, NULL},
        {"--json", NULL, CLI_FLAG, &json, 0, 0, NULL, 0, NULL},
        {"--help", "-h", CLI_FLAG, &want_help, 0, 0, NULL, 0, NULL},
        {NULL, NULL, 0, NULL, 0, 0, NULL, 0, NULL},
    };
    if (inferd__cli_parse(CMD, argc, argv, opts, pos, 2, &n_pos) < 0)
        return CLI_EXIT_USAGE;
    if (want_help) {
        printf("%s", usage_text);
        return 0;
    }
    if (n_pos != 2 || (strcmp(pos[0], "run") != 0 && strcmp(pos[0], "check") != 0)) {
        inferd__cli_error(CMD, "expected run or check, then a manifest (see --help)");
        return CLI_EXIT_USAGE;
    }
    char *text = read_file(pos[1]);
    if (!text) {
        inferd__cli_error(CMD, "cannot read '%s'", pos[1]);
        return CLI_EXIT_FAIL;
    }
    int status;
    if (strcmp(pos[0], "check") == 0) {
        inferd_error e = {0};
        char *dir_copy = inferd_strdup(pos[1]);
        status = inferd_pipeline_check(text, dirname(dir_copy), &e) < 0 ? CLI_EXIT_FAIL : 0;
        if (status)
            inferd__cli_error(CMD, "%s", e.msg);
        else
            printf("%s: ok\n", pos[1]);
        inferd_free(dir_copy);
    } else {
        /* Default channels: the manifest's first input and output. */
        json_t *j = json_loads(text, 0, NULL);
        json_t *outs_j = json_object_get(j, "outputs");
        const char *in0 = json_string_value(json_array_get(json_object_get(j, "inputs"), 0));
        const char *out0 = json_string_value(json_array_get(outs_j, 0));
        char in_buf[64] = "", out_buf[64] = "";
        snprintf(in_buf, sizeof(in_buf), "%s", in_ch ? in_ch : in0 ? in0 : "");
        snprintf(out_buf, sizeof(out_buf), "%s", out_ch ? out_ch : out0 ? out0 : "");
        const char *outs[OUTPUTS_MAX];
        int n_outs = 0;
        for (size_t i = 0; i < json_array_size(outs_j) && n_outs < OUTPUTS_MAX; i++)
            if (json_is_string(json_array_get(outs_j, i)))
                outs[n_outs++] = json_string_value(json_array_get(outs_j, i));
        status =
            run(pos[1], text, inputs, n_inputs, in_buf, out_buf, outs, n_outs, show, init_s, json);
        json_decref(j);
    }
    inferd_free(text);
    return status;
}

int inferd__cmd_pipeline_node(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "inferd pipeline-node: started by `inferd pipeline` only (no options)\n");
        return CLI_EXIT_USAGE;
    }
    const char *fd = getenv("INFERD_NODE_FD");
    return inferd_node_main(fd ? atoi(fd) : 3);
}
