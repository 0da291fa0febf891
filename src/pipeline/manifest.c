/* Manifests: parsed with jansson, every field checked, the graph checked
 * (one publisher and some subscriber per channel, no cycle), and the
 * options of each kind of node checked. Errors name the field as a path
 * ("nodes[1].options.model") in err->param and in the message. */
#include "manifest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inferd/alloc.h"

#define SLOT_BYTES_DEFAULT ((uint64_t)1 << 20)
#define SLOTS_DEFAULT 4u

static const char *const kind_names[] = {"identity", "tokenize", "detokenize", "llm", "python"};

const char *inferd__pl_kind_name(pl_kind k) { return kind_names[k]; }

/* Fail with @p path as the param, the message "PATH: ...". */
static int bad(inferd_error *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(inferd_error *err, const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return inferd_fail_param(err, INFERD_E_INVALID, path, "manifest: %s: %s", path, msg);
}

static bool good_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= PL_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int inferd__manifest_channel(const pl_manifest *m, const char *name)
{
    for (size_t i = 0; i < m->n_ch; i++)
        if (strcmp(m->ch[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Only the keys in @p allowed (NULL-terminated) may appear in @p obj. */
static int only_keys(json_t *obj, const char *const *allowed, const char *path, inferd_error *err)
{
    const char *k;
    json_t *v;
    json_object_foreach (obj, k, v) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], k) != 0)
            i++;
        if (!allowed[i]) {
            char p[256];
            snprintf(p, sizeof(p), "%s.%.63s", path, k);
            return bad(err, p, "unknown field");
        }
    }
    return 0;
}

/* A list of channel names into indices (@p out, @p n), each declared. */
static int channel_list(pl_manifest *m, json_t *a, const char *path, int **out, size_t *n,
                        inferd_error *err)
{
    *out = NULL;
    *n = 0;
    if (!a)
        return 0;
    if (!json_is_array(a))
        return bad(err, path, "expected an array of channel names");
    *out = inferd_calloc(json_array_size(a) + 1, sizeof(int));
    if (!*out)
        return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    size_t i;
    json_t *v;
    json_array_foreach (a, i, v) {
        char p[256];
        snprintf(p, sizeof(p), "%s[%zu]", path, i);
        if (!json_is_string(v))
            return bad(err, p, "expected a channel name");
        const int c = inferd__manifest_channel(m, json_string_value(v));
        if (c < 0)
            return bad(err, p, "no channel '%s' is declared in channels", json_string_value(v));
        for (size_t j = 0; j < *n; j++)
            if ((*out)[j] == c)
                return bad(err, p, "channel '%s' is listed twice", json_string_value(v));
        (*out)[(*n)++] = c;
    }
    return 0;
}

static int parse_channels(pl_manifest *m, json_t *chs, inferd_error *err)
{
    if (!json_is_object(chs) || json_object_size(chs) == 0)
        return bad(err, "channels", "expected an object of channels, at least one");
    m->ch = inferd_calloc(json_object_size(chs), sizeof(*m->ch));
    if (!m->ch)
        return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    const char *name;
    json_t *c;
    json_object_foreach (chs, name, c) {
        char path[128];
        snprintf(path, sizeof(path), "channels.%s", name);
        if (!good_name(name))
            return bad(err, path, "a channel's name is 1 to 63 of [A-Za-z0-9_-]");
        if (!json_is_object(c))
            return bad(err, path, "expected an object (slot_bytes, slots, policy)");
        static const char *const keys[] = {"slot_bytes", "slots", "policy", NULL};
        if (only_keys(c, keys, path, err) < 0)
            return INFERD_E_INVALID;
        pl_channel *ch = &m->ch[m->n_ch++];
        snprintf(ch->name, sizeof(ch->name), "%s", name);
        ch->spec.slot_bytes = SLOT_BYTES_DEFAULT;
        ch->spec.n_slots = SLOTS_DEFAULT;
        ch->publisher = -2; /* none yet */
        json_t *v = json_object_get(c, "slot_bytes");
        if (v && (!json_is_integer(v) || json_integer_value(v) < 65 ||
                  json_integer_value(v) > ((json_int_t)1 << 40)))
            return bad(err, (snprintf(path, sizeof(path), "channels.%s.slot_bytes", name), path),
                       "expected bytes, 65 (a sample's 64-byte header and more) to 2^40");
        if (v)
            ch->spec.slot_bytes = (uint64_t)json_integer_value(v);
        v = json_object_get(c, "slots");
        if (v && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                  json_integer_value(v) > INFERD_CHANNEL_SLOTS_MAX))
            return bad(err, (snprintf(path, sizeof(path), "channels.%s.slots", name), path),
                       "expected 1 to %d", INFERD_CHANNEL_SLOTS_MAX);
        if (v)
            ch->spec.n_slots = (uint32_t)json_integer_value(v);
        v = json_object_get(c, "policy");
        if (v) {
            const char *p = json_string_value(v);
            if (p && strcmp(p, "block") == 0)
                ch->spec.policy = INFERD_CHANNEL_BLOCK;
            else if (p && strcmp(p, "drop_oldest") == 0)
                ch->spec.policy = INFERD_CHANNEL_DROP_OLDEST;
            else
                return bad(err, (snprintf(path, sizeof(path), "channels.%s.policy", name), path),
                           "expected \"block\" or \"drop_oldest\"");
        }
    }
    return 0;
}

/* Make a model path absolute (from the manifest's directory) and check it
 * can be read. */
static int model_path(pl_manifest *m, json_t *opts, const char *path, inferd_error *err)
{
    json_t *v = json_object_get(opts, "model");
    char p[256];
    snprintf(p, sizeof(p), "%s.model", path);
    if (!v)
        return bad(err, p, "required (a GGUF file)");
    if (!json_is_string(v) || !json_string_value(v)[0])
        return bad(err, p, "expected a file name");
    const char *f = json_string_value(v);
    char abs[PATH_MAX * 2];
    if (f[0] == '/')
        snprintf(abs, sizeof(abs), "%s", f);
    else
        snprintf(abs, sizeof(abs), "%s/%s", m->base_dir, f);
    if (access(abs, R_OK) != 0)
        return bad(err, p, "cannot read '%s': %s", abs, strerror(errno));
    json_object_set_new(opts, "model", json_string(abs));
    return 0;
}

static int check_number(json_t *opts, const char *key, double lo, double hi, bool integer,
                        const char *path, inferd_error *err)
{
    json_t *v = json_object_get(opts, key);
    if (!v)
        return 0;
    char p[256];
    snprintf(p, sizeof(p), "%s.%.63s", path, key);
    if (integer ? !json_is_integer(v) : !json_is_number(v))
        return bad(err, p, "expected %s", integer ? "an integer" : "a number");
    const double d = json_number_value(v);
    if (d < lo || d > hi)
        return bad(err, p, "%g is out of range [%g, %g]", d, lo, hi);
    return 0;
}

static int check_bool(json_t *opts, const char *key, const char *path, inferd_error *err)
{
    json_t *v = json_object_get(opts, key);
    if (v && !json_is_boolean(v)) {
        char p[256];
        snprintf(p, sizeof(p), "%s.%.63s", path, key);
        return bad(err, p, "expected true or false");
    }
    return 0;
}

static int check_options(pl_manifest *m, pl_node *n, const char *path, inferd_error *err)
{
    char p[160];
    snprintf(p, sizeof(p), "%s.options", path);
    json_t *o = n->options;
    if (n->kind == PL_PYTHON)
        return 0; /* the node's class takes them */
    static const char *const none[] = {NULL};
    static const char *const tok[] = {"model", "add_special", "parse_special", NULL};
    static const char *const detok[] = {"model", NULL};
    static const char *const llm[] = {
        "model", "n_ctx", "threads", "slots",      "max_tokens", "temperature",    "top_k",
        "top_p", "min_p", "seed",    "ignore_eos", "stop",       "repeat_penalty", NULL};
    const char *const *keys = n->kind == PL_IDENTITY     ? none
                              : n->kind == PL_TOKENIZE   ? tok
                              : n->kind == PL_DETOKENIZE ? detok
                                                         : llm;
    if (only_keys(o, keys, p, err) < 0)
        return INFERD_E_INVALID;
    if (n->kind == PL_IDENTITY)
        return 0;
    if (model_path(m, o, p, err) < 0)
        return INFERD_E_INVALID;
    if (n->kind == PL_TOKENIZE)
        return check_bool(o, "add_special", p, err) < 0 ||
                       check_bool(o, "parse_special", p, err) < 0
                   ? INFERD_E_INVALID
                   : 0;
    if (n->kind == PL_DETOKENIZE)
        return 0;
    if (check_number(o, "n_ctx", 0, 1 << 20, true, p, err) < 0 ||
        check_number(o, "threads", 0, 256, true, p, err) < 0 ||
        check_number(o, "slots", 1, 256, true, p, err) < 0 ||
        check_number(o, "max_tokens", -1, 1 << 20, true, p, err) < 0 ||
        check_number(o, "temperature", 0, 100, false, p, err) < 0 ||
        check_number(o, "top_k", -1, 1 << 20, true, p, err) < 0 ||
        check_number(o, "top_p", 0, 1, false, p, err) < 0 ||
        check_number(o, "min_p", 0, 1, false, p, err) < 0 ||
        check_number(o, "repeat_penalty", 0, 100, false, p, err) < 0 ||
        check_number(o, "seed", 0, 9007199254740991.0, true, p, err) < 0 ||
        check_bool(o, "ignore_eos", p, err) < 0)
        return INFERD_E_INVALID;
    json_t *stop = json_object_get(o, "stop");
    if (stop) {
        snprintf(p, sizeof(p), "%s.options.stop", path);
        bool ok = json_is_string(stop);
        if (json_is_array(stop) && json_array_size(stop) <= 4) {
            ok = true;
            size_t i;
            json_t *s;
            json_array_foreach (stop, i, s)
                ok = ok && json_is_string(s) && json_string_length(s);
        }
        if (!ok)
            return bad(err, p, "expected a string or up to 4 non-empty strings");
    }
    return 0;
}

static int parse_node(pl_manifest *m, json_t *j, size_t idx, inferd_error *err)
{
    char path[64];
    snprintf(path, sizeof(path), "nodes[%zu]", idx);
    if (!json_is_object(j))
        return bad(err, path, "expected an object (name, kind, inputs, outputs, options)");
    static const char *const keys[] = {"name",   "kind",  "inputs",  "outputs",
                                       "module", "class", "options", NULL};
    if (only_keys(j, keys, path, err) < 0)
        return INFERD_E_INVALID;
    pl_node *n = &m->nodes[idx];
    char p[160];
    const char *name = json_string_value(json_object_get(j, "name"));
    snprintf(p, sizeof(p), "%s.name", path);
    if (!name || !good_name(name))
        return bad(err, p, "a node's name is 1 to 63 of [A-Za-z0-9_-]");
    for (size_t i = 0; i < idx; i++)
        if (strcmp(m->nodes[i].name, name) == 0)
            return bad(err, p, "node '%s' is named twice", name);
    snprintf(n->name, sizeof(n->name), "%s", name);
    const char *kind = json_string_value(json_object_get(j, "kind"));
    snprintf(p, sizeof(p), "%s.kind", path);
    if (!kind)
        return bad(err, p, "required: identity, tokenize, detokenize, llm or python");
    size_t k = 0;
    while (k < sizeof(kind_names) / sizeof(kind_names[0]) && strcmp(kind_names[k], kind) != 0)
        k++;
    if (k == sizeof(kind_names) / sizeof(kind_names[0]))
        return bad(err, p, "unknown kind '%s' (identity, tokenize, detokenize, llm, python)", kind);
    n->kind = (pl_kind)k;
    if (n->kind == PL_PYTHON) {
        n->module = json_string_value(json_object_get(j, "module"));
        n->cls = json_string_value(json_object_get(j, "class"));
        snprintf(p, sizeof(p), "%s.%s", path, !n->module ? "module" : "class");
        if (!n->module || !n->module[0] || !n->cls || !n->cls[0])
            return bad(err, p, "a python node needs its module and class");
    } else if (json_object_get(j, "module") || json_object_get(j, "class")) {
        snprintf(p, sizeof(p), "%s.%s", path, json_object_get(j, "module") ? "module" : "class");
        return bad(err, p, "only a python node has a module and a class");
    }
    n->options = json_object_get(j, "options");
    if (!n->options) {
        n->options = json_object();
        json_object_set_new(j, "options", n->options);
    }
    snprintf(p, sizeof(p), "%s.options", path);
    if (!json_is_object(n->options))
        return bad(err, p, "expected an object");
    snprintf(p, sizeof(p), "%s.inputs", path);
    if (channel_list(m, json_object_get(j, "inputs"), p, &n->in, &n->n_in, err) < 0)
        return INFERD_E_INVALID;
    snprintf(p, sizeof(p), "%s.outputs", path);
    if (channel_list(m, json_object_get(j, "outputs"), p, &n->out, &n->n_out, err) < 0)
        return INFERD_E_INVALID;
    if (n->n_in + n->n_out == 0)
        return bad(err, path, "node '%s' has no input and no output", name);
    if (n->kind != PL_PYTHON &&
        (n->n_in != 1 || n->n_out < 1 || (n->kind != PL_IDENTITY && n->n_out != 1))) {
        return bad(err, path, "a%s %s node has one input and %s", n->kind == PL_IDENTITY ? "n" : "",
                   kind, n->kind == PL_IDENTITY ? "one or more outputs" : "one output");
    }
    return check_options(m, n, path, err);
}

/* Depth-first search for a cycle from node @p i; @p color 0 new, 1 on the
 * path, 2 done; @p stack the path. */
static int find_cycle(const pl_manifest *m, size_t i, int *color, size_t *stack, size_t depth,
                      inferd_error *err)
{
    color[i] = 1;
    stack[depth] = i;
    const pl_node *n = &m->nodes[i];
    for (size_t o = 0; o < n->n_out; o++) {
        for (size_t j = 0; j < m->n_nodes; j++) {
            const pl_node *s = &m->nodes[j];
            bool sub = false;
            for (size_t k = 0; k < s->n_in; k++)
                sub = sub || s->in[k] == n->out[o];
            if (!sub)
                continue;
            if (color[j] == 1) {
                char msg[300] = "";
                size_t at = 0;
                for (size_t d = 0; d <= depth; d++)
                    if (stack[d] == j || at) {
                        at = 1;
                        strncat(msg, m->nodes[stack[d]].name, sizeof(msg) - strlen(msg) - 1);
                        strncat(msg, " -> ", sizeof(msg) - strlen(msg) - 1);
                    }
                strncat(msg, m->nodes[j].name, sizeof(msg) - strlen(msg) - 1);
                return bad(err, "nodes", "a cycle: %s (a pipeline's channels form no cycle)", msg);
            }
            if (color[j] == 0 && find_cycle(m, j, color, stack, depth + 1, err) < 0)
                return INFERD_E_INVALID;
        }
    }
    color[i] = 2;
    return 0;
}

static int check_graph(pl_manifest *m, inferd_error *err)
{
    uint32_t *subs = inferd_calloc(m->n_ch, sizeof(uint32_t));
    if (!subs)
        return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    int rc = 0;
    for (size_t i = 0; i < m->n_inputs; i++) {
        m->ch[m->inputs[i]].publisher = -1;
        m->ch[m->inputs[i]].is_input = true;
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        m->ch[m->outputs[i]].is_output = true;
        subs[m->outputs[i]]++;
    }
    for (size_t i = 0; rc == 0 && i < m->n_nodes; i++) {
        const pl_node *n = &m->nodes[i];
        for (size_t k = 0; k < n->n_in; k++)
            subs[n->in[k]]++;
        for (size_t k = 0; rc == 0 && k < n->n_out; k++) {
            pl_channel *c = &m->ch[n->out[k]];
            if (c->publisher != -2) {
                char p[160];
                snprintf(p, sizeof(p), "nodes[%zu].outputs", i);
                rc = bad(err, p, "channel '%s' has a publisher already (%s%s%s)", c->name,
                         c->publisher < 0 ? "the pipeline's inputs" : "node '",
                         c->publisher < 0 ? "" : m->nodes[c->publisher].name,
                         c->publisher < 0 ? "" : "'");
            }
            c->publisher = (int)i;
        }
    }
    for (size_t i = 0; rc == 0 && i < m->n_ch; i++) {
        pl_channel *c = &m->ch[i];
        char p[160];
        snprintf(p, sizeof(p), "channels.%s", c->name);
        if (c->publisher == -2)
            rc = bad(err, p, "nobody publishes into it (no node's output, not a pipeline input)");
        else if (subs[i] == 0)
            rc = bad(err, p, "nobody receives from it (no node's input, not a pipeline output)");
        else if (subs[i] > INFERD_CHANNEL_SUBSCRIBERS_MAX)
            rc = bad(err, p, "%u subscribers, at most %d", subs[i], INFERD_CHANNEL_SUBSCRIBERS_MAX);
        else if (c->is_input && c->is_output)
            rc = bad(err, p, "a pipeline input cannot be one of its outputs");
        c->spec.max_subscribers = subs[i];
    }
    inferd_free(subs);
    if (rc < 0)
        return rc;
    int *color = inferd_calloc(m->n_nodes + 1, sizeof(int));
    size_t *stack = inferd_calloc(m->n_nodes + 1, sizeof(size_t));
    if (!color || !stack)
        rc = inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    for (size_t i = 0; rc == 0 && i < m->n_nodes; i++)
        if (color[i] == 0)
            rc = find_cycle(m, i, color, stack, 0, err);
    inferd_free(color);
    inferd_free(stack);
    return rc;
}

static int python_path(pl_manifest *m, json_t *pp, inferd_error *err)
{
    size_t cap = strlen(m->base_dir) + 2;
    if (pp && (!json_is_array(pp)))
        return bad(err, "python_path", "expected an array of directories");
    size_t i;
    json_t *v;
    json_array_foreach (pp, i, v) {
        if (!json_is_string(v)) {
            char p[64];
            snprintf(p, sizeof(p), "python_path[%zu]", i);
            return bad(err, p, "expected a directory");
        }
        cap += strlen(m->base_dir) + json_string_length(v) + 3;
    }
    m->python_path = inferd_malloc(cap);
    if (!m->python_path)
        return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    size_t at = (size_t)snprintf(m->python_path, cap, "%s", m->base_dir);
    json_array_foreach (pp, i, v) {
        const char *d = json_string_value(v);
        at += (size_t)snprintf(m->python_path + at, cap - at, d[0] == '/' ? ":%s%s" : ":%s/%s",
                               d[0] == '/' ? "" : m->base_dir, d);
    }
    return 0;
}

/* The files to read ahead: the manifest's "preload" (each readable) and
 * every built-in node's model (checked already), once each. */
static int preload_list(pl_manifest *m, json_t *pre, inferd_error *err)
{
    if (pre && !json_is_array(pre))
        return bad(err, "preload", "expected an array of files");
    const size_t cap = json_array_size(pre) + m->n_nodes;
    m->preload = inferd_calloc(cap ? cap : 1, sizeof(char *));
    if (!m->preload)
        return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    for (size_t i = 0; i < cap; i++) {
        const char *f;
        char abs[PATH_MAX * 2];
        if (i < json_array_size(pre)) {
            json_t *v = json_array_get(pre, i);
            char p[64];
            snprintf(p, sizeof(p), "preload[%zu]", i);
            if (!json_is_string(v) || !json_string_value(v)[0])
                return bad(err, p, "expected a file name");
            f = json_string_value(v);
            if (f[0] != '/') {
                snprintf(abs, sizeof(abs), "%s/%s", m->base_dir, f);
                f = abs;
            }
            if (access(f, R_OK) != 0)
                return bad(err, p, "cannot read '%s': %s", f, strerror(errno));
        } else {
            const pl_node *n = &m->nodes[i - json_array_size(pre)];
            f = n->kind == PL_PYTHON || n->kind == PL_IDENTITY
                    ? NULL
                    : json_string_value(json_object_get(n->options, "model"));
            if (!f)
                continue;
        }
        bool seen = false;
        for (size_t k = 0; k < m->n_preload; k++)
            seen = seen || strcmp(m->preload[k], f) == 0;
        if (seen)
            continue;
        if (!(m->preload[m->n_preload] = inferd_strdup(f)))
            return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
        m->n_preload++;
    }
    return 0;
}

int inferd__manifest_parse(const char *text, const char *base_dir, pl_manifest **out,
                           inferd_error *err)
{
    *out = NULL;
    pl_manifest *m = inferd_calloc(1, sizeof(*m));
    if (!m)
        return inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
    int rc = 0;
    json_error_t je;
    m->json = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!m->json) {
        rc = inferd_fail(err, INFERD_E_BAD_JSON, "manifest: not JSON: %s (line %d, column %d)",
                         je.text, je.line, je.column);
        goto done;
    }
    if (!json_is_object(m->json)) {
        rc = inferd_fail(err, INFERD_E_BAD_JSON, "manifest: expected a JSON object");
        goto done;
    }
    if (!base_dir || !base_dir[0]) {
        if (!getcwd(m->base_dir, sizeof(m->base_dir)))
            snprintf(m->base_dir, sizeof(m->base_dir), ".");
    } else if (!realpath(base_dir, m->base_dir)) {
        rc = inferd_fail_errno(err, INFERD_E_INVALID, errno, "manifest: directory '%s'", base_dir);
        goto done;
    }
    static const char *const keys[] = {"name",  "channels",    "inputs",  "outputs",
                                       "nodes", "python_path", "preload", NULL};
    if (only_keys(m->json, keys, "manifest", err) < 0) {
        rc = INFERD_E_INVALID;
        goto done;
    }
    json_t *name = json_object_get(m->json, "name");
    if (name && (!json_is_string(name) || !good_name(json_string_value(name)))) {
        rc = bad(err, "name", "a pipeline's name is 1 to 63 of [A-Za-z0-9_-]");
        goto done;
    }
    m->name = name ? json_string_value(name) : "pipeline";
    if ((rc = parse_channels(m, json_object_get(m->json, "channels"), err)) < 0 ||
        (rc = channel_list(m, json_object_get(m->json, "inputs"), "inputs", &m->inputs,
                           &m->n_inputs, err)) < 0 ||
        (rc = channel_list(m, json_object_get(m->json, "outputs"), "outputs", &m->outputs,
                           &m->n_outputs, err)) < 0)
        goto done;
    json_t *nodes = json_object_get(m->json, "nodes");
    if (!json_is_array(nodes) || json_array_size(nodes) == 0) {
        rc = bad(err, "nodes", "expected an array of nodes, at least one");
        goto done;
    }
    m->nodes = inferd_calloc(json_array_size(nodes), sizeof(*m->nodes));
    if (!m->nodes) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "manifest: no memory");
        goto done;
    }
    for (size_t i = 0; i < json_array_size(nodes); i++) {
        m->n_nodes = i + 1;
        if ((rc = parse_node(m, json_array_get(nodes, i), i, err)) < 0)
            goto done;
    }
    if ((rc = check_graph(m, err)) < 0 ||
        (rc = python_path(m, json_object_get(m->json, "python_path"), err)) < 0 ||
        (rc = preload_list(m, json_object_get(m->json, "preload"), err)) < 0)
        goto done;
done:
    if (rc < 0) {
        inferd__manifest_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void inferd__manifest_free(pl_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_nodes; i++) {
        inferd_free(m->nodes[i].in);
        inferd_free(m->nodes[i].out);
    }
    inferd_free(m->nodes);
    inferd_free(m->ch);
    inferd_free(m->inputs);
    inferd_free(m->outputs);
    inferd_free(m->python_path);
    for (size_t i = 0; i < m->n_preload; i++)
        inferd_free(m->preload[i]);
    inferd_free(m->preload);
    json_decref(m->json);
    inferd_free(m);
}
