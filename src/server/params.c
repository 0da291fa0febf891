/* Sampling and generation fields of an OpenAI-style request body, checked
 * with OpenAI's ranges and turned into scheduler request parameters. The
 * same names serve KServe's "parameters" object. */
#include "server_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *param_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int bad_type(req_err *c, const char *name, const char *want, const json_t *v)
{
    req_fail(c, 400, "invalid_type", name, "%s: expected %s, got %s", name, want, param_type_name(v));
    return -1;
}

/* A present, non-null field, or NULL. */
json_t *param_field(json_t *body, const char *name)
{
    json_t *v = json_object_get(body, name);
    return v && !json_is_null(v) ? v : NULL;
}

int param_number(req_err *c, json_t *body, const char *name, double lo, double hi,
                      float *out)
{
    json_t *v = param_field(body, name);
    if (!v)
        return 0;
    if (!json_is_number(v))
        return bad_type(c, name, "a number", v);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) {
        req_fail(c, 400, "invalid_value", name, "%s: %g is outside [%g, %g]", name, x, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

int param_int(req_err *c, json_t *body, const char *name, int64_t lo, int64_t hi,
                   int64_t *out, bool *given)
{
    json_t *v = param_field(body, name);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return bad_type(c, name, "an integer", v);
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        req_fail(c, 400, "invalid_value", name, "%s: %lld is outside [%lld, %lld]", name,
                   (long long)x, (long long)lo, (long long)hi);
        return -1;
    }
    *out = x;
    if (given)
        *given = true;
    return 0;
}

int param_bool(req_err *c, json_t *body, const char *name, bool *out)
{
    json_t *v = param_field(body, name);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return bad_type(c, name, "a boolean", v);
    *out = json_is_true(v);
    return 0;
}

/* Fields we do not implement: refused when they ask for something. */
static int refuse_unsupported(req_err *c, json_t *body, bool chat)
{
    json_t *v;
    if ((v = param_field(body, "n")) && !(json_is_integer(v) && json_integer_value(v) == 1)) {
        req_fail(c, 400, "invalid_value", "n", "n: only 1 choice per request is supported");
        return -1;
    }
    if ((v = param_field(body, "best_of")) && !(json_is_integer(v) && json_integer_value(v) == 1)) {
        req_fail(c, 400, "invalid_value", "best_of", "best_of: only 1 is supported");
        return -1;
    }
    if ((v = param_field(body, "logit_bias")) && !(json_is_object(v) && json_object_size(v) == 0)) {
        req_fail(c, 400, "unsupported", "logit_bias", "logit_bias is not supported");
        return -1;
    }
    if (!chat && (v = param_field(body, "echo")) && !json_is_false(v)) {
        req_fail(c, 400, "unsupported", "echo", "echo is not supported");
        return -1;
    }
    if (!chat && (v = param_field(body, "suffix")) &&
        !(json_is_string(v) && json_string_length(v) == 0)) {
        req_fail(c, 400, "unsupported", "suffix", "suffix is not supported");
        return -1;
    }
    if (chat && (v = param_field(body, "tools")) && !(json_is_array(v) && json_array_size(v) == 0)) {
        req_fail(c, 400, "unsupported", "tools", "tools are not supported");
        return -1;
    }
    if (chat && (v = param_field(body, "response_format"))) {
        json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
        if (!t || !json_is_string(t) || strcmp(json_string_value(t), "text") != 0) {
            req_fail(c, 400, "unsupported", "response_format",
                       "response_format: only {\"type\": \"text\"} is supported");
            return -1;
        }
    }
    return 0;
}

int param_stop(req_err *c, json_t *body, inferd_request_params *p)
{
    json_t *v = param_field(body, "stop");
    if (!v)
        return 0;
    if (json_is_string(v)) {
        p->stop[0] = json_string_value(v);
        p->n_stop = json_string_length(v) > 0;
        return 0;
    }
    if (!json_is_array(v))
        return bad_type(c, "stop", "a string or an array of strings", v);
    if (json_array_size(v) > INFERD_STOP_N_MAX) {
        req_fail(c, 400, "invalid_value", "stop", "stop: %zu strings, at most %d",
                   json_array_size(v), INFERD_STOP_N_MAX);
        return -1;
    }
    size_t i;
    json_t *s;
    p->n_stop = 0;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s)) {
            req_fail(c, 400, "invalid_type", "stop", "stop[%zu]: expected a string, got %s", i,
                       param_type_name(s));
            return -1;
        }
        if (json_string_length(s) > INFERD_STOP_LEN_MAX) {
            req_fail(c, 400, "invalid_value", "stop", "stop[%zu]: %zu bytes, at most %d", i,
                       json_string_length(s), INFERD_STOP_LEN_MAX);
            return -1;
        }
        if (json_string_length(s) > 0)
            p->stop[p->n_stop++] = json_string_value(s);
    }
    return 0;
}

int param_priority(req_err *c, json_t *body, inferd_request_params *p)
{
    json_t *v = param_field(body, "priority");
    if (!v)
        return 0;
    if (!json_is_string(v))
        return bad_type(c, "priority", "a string", v);
    if (inferd_priority_parse(json_string_value(v), &p->priority) != 0)
        return req_fail(c, 400, "invalid_value", "priority",
                        "priority: '%s' is not high, normal or low", json_string_value(v));
    return 0;
}

static int get_logprobs(req_err *c, json_t *body, bool chat, inferd_request_params *p)
{
    int64_t top = 0;
    bool top_given = false;
    if (chat) {
        bool lp = false;
        if (param_bool(c, body, "logprobs", &lp) < 0 ||
            param_int(c, body, "top_logprobs", 0, INFERD_TOP_LOGPROBS_MAX, &top, &top_given) < 0)
            return -1;
        if (top_given && !lp) {
            req_fail(c, 400, "invalid_value", "top_logprobs",
                       "top_logprobs: needs \"logprobs\": true");
            return -1;
        }
        p->logprobs = lp;
    } else {
        if (param_int(c, body, "logprobs", 0, INFERD_TOP_LOGPROBS_MAX, &top, &top_given) < 0)
            return -1;
        p->logprobs = top_given;
    }
    p->top_logprobs = (uint32_t)top;
    return 0;
}

int params_from_json(req_err *c, json_t *body, bool chat, int32_t default_max_tokens,
                     inferd_request_params *p, gen_opts *go)
{
    memset(go, 0, sizeof(*go));
    if (refuse_unsupported(c, body, chat) < 0)
        return -1;
    int64_t max_tokens = default_max_tokens, seed = 0, top_k = p->sampling.top_k,
            last_n = p->sampling.repeat_last_n, timeout_ms = 0;
    bool seed_given = false, mt_given = false;
    if (param_int(c, body, "max_tokens", 0, INT32_MAX, &max_tokens, &mt_given) < 0)
        return -1;
    if (chat && !mt_given &&
        param_int(c, body, "max_completion_tokens", 0, INT32_MAX, &max_tokens, NULL) < 0)
        return -1;
    p->max_tokens = (int32_t)max_tokens;

    inferd_sampler_params *sp = &p->sampling;
    if (param_number(c, body, "temperature", 0.0, 2.0, &sp->temperature) < 0 ||
        param_number(c, body, "top_p", 0.0, 1.0, &sp->top_p) < 0 ||
        param_number(c, body, "min_p", 0.0, 1.0, &sp->min_p) < 0 ||
        param_number(c, body, "presence_penalty", -2.0, 2.0, &sp->presence_penalty) < 0 ||
        param_number(c, body, "frequency_penalty", -2.0, 2.0, &sp->frequency_penalty) < 0 ||
        param_number(c, body, "repeat_penalty", 1e-6, 100.0, &sp->repeat_penalty) < 0 ||
        param_int(c, body, "top_k", 0, INT32_MAX, &top_k, NULL) < 0 ||
        param_int(c, body, "repeat_last_n", -1, INT32_MAX, &last_n, NULL) < 0 ||
        param_int(c, body, "seed", INT64_MIN, INT64_MAX, &seed, &seed_given) < 0 ||
        param_int(c, body, "timeout_ms", 1, INT32_MAX, &timeout_ms, NULL) < 0 ||
        param_bool(c, body, "ignore_eos", &p->ignore_eos) < 0 ||
        param_bool(c, body, "stream", &go->stream) < 0)
        return -1;
    sp->top_k = (int32_t)top_k;
    if (sp->top_p == 0.0f) { /* OpenAI's top_p 0 keeps only the most likely token */
        sp->top_k = 1;
        sp->top_p = 1.0f;
    }
    sp->repeat_last_n = (int32_t)last_n;
    sp->has_seed = seed_given;
    sp->seed = (uint64_t)seed;
    p->timeout_ms = timeout_ms;

    if (param_priority(c, body, p) < 0)
        return -1;
    json_t *v;
    if ((v = param_field(body, "stream_options"))) {
        if (!json_is_object(v))
            return bad_type(c, "stream_options", "an object", v);
        if (!go->stream) {
            req_fail(c, 400, "invalid_value", "stream_options",
                       "stream_options: only allowed with \"stream\": true");
            return -1;
        }
        if (param_bool(c, v, "include_usage", &go->include_usage) < 0)
            return -1;
    }
    if (param_stop(c, body, p) < 0 || get_logprobs(c, body, chat, p) < 0)
        return -1;
    go->logprobs = p->logprobs;
    go->top_logprobs = p->top_logprobs;
    return 0;
}

/* ---- chat messages ---- */

int param_messages(req_err *c, json_t *msgs)
{
    if (!msgs || json_is_null(msgs))
        return req_fail(c, 400, "missing_required_parameter", "messages",
                        "messages: it is required");
    if (!json_is_array(msgs))
        return req_fail(c, 400, "invalid_type", "messages", "messages: expected an array");
    if (json_array_size(msgs) == 0)
        return req_fail(c, 400, "invalid_value", "messages", "messages: it is empty");
    return 0;
}

/* Message @p i's content: a string, or an array of text parts (joined).
 * Returns a malloc'd string or NULL with @p c set. */
static char *message_content(req_err *c, size_t i, json_t *content)
{
    if (json_is_string(content))
        return strdup(json_string_value(content));
    if (json_is_null(content) || !content)
        return strdup("");
    if (!json_is_array(content)) {
        req_fail(c, 400, "invalid_type", "messages",
                   "messages[%zu].content: expected a string or an array of text parts", i);
        return NULL;
    }
    sbuf b = {0};
    size_t j;
    json_t *part;
    sbuf_add(&b, "", 0);
    json_array_foreach(content, j, part) {
        if (!json_is_object(part)) {
            req_fail(c, 400, "invalid_type", "messages",
                       "messages[%zu].content[%zu]: expected an object {\"type\": \"text\", "
                       "\"text\": ...}",
                       i, j);
            sbuf_free(&b);
            return NULL;
        }
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0) {
            req_fail(c, 400, "unsupported", "messages",
                       "messages[%zu].content[%zu]: only parts of type \"text\" are supported",
                       i, j);
            sbuf_free(&b);
            return NULL;
        }
        if (!json_is_string(text)) {
            req_fail(c, 400, "invalid_type", "messages",
                       "messages[%zu].content[%zu].text: expected a string", i, j);
            sbuf_free(&b);
            return NULL;
        }
        sbuf_add(&b, json_string_value(text), json_string_length(text));
    }
    if (b.failed) {
        sbuf_free(&b);
        req_fail(c, 500, "internal", NULL, "no memory for the messages");
        return NULL;
    }
    return b.p;
}

/* Render the messages with the model's template. Returns the prompt
 * (inferd_free) or NULL with @p c set. */
char *param_render_messages(req_err *c, json_t *msgs, inferd_chat_template t, size_t *len)
{
    size_t n = json_array_size(msgs), i;
    inferd_chat_message *m = calloc(n ? n : 1, sizeof(*m));
    char **contents = calloc(n ? n : 1, sizeof(char *));
    char *out = NULL;
    json_t *msg;
    if (!m || !contents) {
        req_fail(c, 500, "internal", NULL, "no memory for the messages");
        goto done;
    }
    json_array_foreach(msgs, i, msg) {
        if (!json_is_object(msg)) {
            req_fail(c, 400, "invalid_type", "messages", "messages[%zu]: expected an object", i);
            goto done;
        }
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role)) {
            req_fail(c, 400, "invalid_type", "messages",
                       "messages[%zu].role: expected a string", i);
            goto done;
        }
        contents[i] = message_content(c, i, json_object_get(msg, "content"));
        if (!contents[i])
            goto done;
        m[i].role = json_string_value(role);
        m[i].content = contents[i];
    }
    inferd_error e = {0};
    int rc = inferd_chat_render(t, m, n, true, &out, len, &e);
    if (rc < 0) {
        out = NULL;
        if (rc == INFERD_E_NOMEM)
            req_fail(c, 500, "internal", NULL, "%s", e.msg);
        else
            req_fail(c, 400, "invalid_value", "messages", "%s", e.msg);
    }
done:
    if (contents)
        for (size_t k = 0; k < n; k++)
            free(contents[k]);
    free(contents);
    free(m);
    return out;
}


/* ---- errors ---- */

int req_fail(req_err *e, unsigned status, const char *code, const char *param, const char *fmt,
             ...)
{
    va_list ap;
    e->status = status;
    e->code = code;
    e->param = param;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}
