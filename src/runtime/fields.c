/* The request field table: every field a door can take, with its type,
 * range and where it goes in the scheduler's request parameters, and the
 * reader that applies a door's spelling of it to a JSON body. Chat
 * messages are checked and turned into inferd_chat_message here; they are
 * rendered at submit, when the model's template is known. */
#include "frontend_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "inferd/alloc.h"

typedef enum kind {
    K_MODEL,
    K_PROMPT,
    K_MESSAGES,
    K_INT,
    K_NUMBER,
    K_BOOL,
    K_STOP,
    K_PRIORITY,
    K_STREAM_OPTIONS,
    K_STRING,
    K_NEUTRAL_ONLY,
} kind;

/* The value of a field that asks for nothing (a door that does not take
 * the field accepts it). */
typedef enum neutral {
    N_NONE,
    N_ONE,
    N_FALSE,
    N_EMPTY_OBJECT,
    N_EMPTY_STRING,
    N_EMPTY_ARRAY,
    N_TEXT_FORMAT,
} neutral;

typedef struct field_def {
    const char *name; /* canonical */
    kind k;
    int64_t ilo, ihi; /* K_INT range; K_STRING: most bytes */
    double lo, hi;    /* K_NUMBER range */
    neutral nv;
    int refuse_code;         /* K_NEUTRAL_ONLY: the error otherwise, */
    const char *refuse_text; /* and its message after the door's name */
} field_def;

#define I(name, lo, hi)                            \
    {                                              \
        name, K_INT, lo, hi, 0, 0, N_NONE, 0, NULL \
    }
#define F(name, lo, hi)                               \
    {                                                 \
        name, K_NUMBER, 0, 0, lo, hi, N_NONE, 0, NULL \
    }
#define OF(name, k, nv)                  \
    {                                    \
        name, k, 0, 0, 0, 0, nv, 0, NULL \
    }
#define ONLY(name, nv, code, text)                       \
    {                                                    \
        name, K_NEUTRAL_ONLY, 0, 0, 0, 0, nv, code, text \
    }

static const field_def fields[INFERD_F_COUNT] = {
    [INFERD_F_MODEL] = OF("model", K_MODEL, N_NONE),
    [INFERD_F_PROMPT] = OF("prompt", K_PROMPT, N_NONE),
    [INFERD_F_MESSAGES] = OF("messages", K_MESSAGES, N_NONE),
    [INFERD_F_MAX_TOKENS] = I("max_tokens", 0, INT32_MAX),
    [INFERD_F_TEMPERATURE] = F("temperature", 0.0, 2.0),
    [INFERD_F_TOP_P] = F("top_p", 0.0, 1.0),
    [INFERD_F_TOP_K] = I("top_k", 0, INT32_MAX),
    [INFERD_F_MIN_P] = F("min_p", 0.0, 1.0),
    [INFERD_F_PRESENCE_PENALTY] = F("presence_penalty", -2.0, 2.0),
    [INFERD_F_FREQUENCY_PENALTY] = F("frequency_penalty", -2.0, 2.0),
    [INFERD_F_REPEAT_PENALTY] = F("repeat_penalty", 1e-6, 100.0),
    [INFERD_F_REPEAT_LAST_N] = I("repeat_last_n", -1, INT32_MAX),
    [INFERD_F_SEED] = I("seed", INT64_MIN, INT64_MAX),
    [INFERD_F_TIMEOUT_MS] = I("timeout_ms", 1, INT32_MAX),
    [INFERD_F_IGNORE_EOS] = OF("ignore_eos", K_BOOL, N_FALSE),
    [INFERD_F_STOP] = OF("stop", K_STOP, N_NONE),
    [INFERD_F_PRIORITY] = OF("priority", K_PRIORITY, N_NONE),
    [INFERD_F_STREAM] = OF("stream", K_BOOL, N_FALSE),
    [INFERD_F_STREAM_OPTIONS] = OF("stream_options", K_STREAM_OPTIONS, N_NONE),
    [INFERD_F_LOGPROBS] = OF("logprobs", K_BOOL, N_NONE),
    [INFERD_F_LOGPROBS_N] = I("logprobs", 0, INFERD_TOP_LOGPROBS_MAX),
    [INFERD_F_TOP_LOGPROBS] = I("top_logprobs", 0, INFERD_TOP_LOGPROBS_MAX),
    [INFERD_F_SESSION_ID] = {"session_id", K_STRING, 0, INFERD_FE_SESSION_ID_MAX, 0, 0, N_NONE, 0,
                             NULL},
    [INFERD_F_N] = ONLY("n", N_ONE, INFERD_E_INVALID, ": only 1 choice per request is supported"),
    [INFERD_F_BEST_OF] = ONLY("best_of", N_ONE, INFERD_E_INVALID, ": only 1 is supported"),
    [INFERD_F_LOGIT_BIAS] =
        ONLY("logit_bias", N_EMPTY_OBJECT, INFERD_E_FIELD_UNSUPPORTED, " is not supported"),
    [INFERD_F_ECHO] = ONLY("echo", N_FALSE, INFERD_E_FIELD_UNSUPPORTED, " is not supported"),
    [INFERD_F_SUFFIX] =
        ONLY("suffix", N_EMPTY_STRING, INFERD_E_FIELD_UNSUPPORTED, " is not supported"),
    [INFERD_F_TOOLS] =
        ONLY("tools", N_EMPTY_ARRAY, INFERD_E_FIELD_UNSUPPORTED, " are not supported"),
    [INFERD_F_RESPONSE_FORMAT] = ONLY("response_format", N_TEXT_FORMAT, INFERD_E_FIELD_UNSUPPORTED,
                                      ": only {\"type\": \"text\"} is supported"),
};

const char *inferd_field_name(inferd_field f)
{
    return (unsigned)f < INFERD_F_COUNT ? fields[f].name : "?";
}

const char *inferd_fe_type_name(const json_t *v)
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

const char *inferd__fe_spelled(const inferd_fe_door *door, inferd_field f)
{
    for (size_t i = 0; door && i < door->n_fields; i++)
        if (door->fields[i].field == f)
            return door->fields[i].name;
    return inferd_field_name(f);
}

__attribute__((format(printf, 5, 0))) static int vfail_named(inferd_error *err, int code,
                                                             const char *param, const char *prefix,
                                                             const char *fmt, va_list ap)
{
    char msg[sizeof(err->msg)];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    return inferd_fail_param(err, code, param, "%s%s", prefix, msg);
}

int inferd_fe_fail(const inferd_fe_door *door, inferd_field f, inferd_error *err, int code,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail_named(err, code, inferd__fe_spelled(door, f), "", fmt, ap);
    va_end(ap);
    return code;
}

/* An error about field @p name (the door's spelling): "NAME: ...". */
__attribute__((format(printf, 4, 5))) static int fail(inferd_error *err, int code, const char *name,
                                                      const char *fmt, ...)
{
    char prefix[INFERD_ERROR_PARAM_MAX + 2];
    snprintf(prefix, sizeof(prefix), "%s: ", name);
    va_list ap;
    va_start(ap, fmt);
    vfail_named(err, code, name, prefix, fmt, ap);
    va_end(ap);
    return code;
}

static int bad_type(inferd_error *err, const char *name, const char *want, const json_t *v)
{
    return fail(err, INFERD_E_INVALID_TYPE, name, "expected %s, got %s", want,
                inferd_fe_type_name(v));
}

static bool is_neutral(neutral nv, const json_t *v)
{
    switch (nv) {
    case N_ONE: return json_is_integer(v) && json_integer_value(v) == 1;
    case N_FALSE: return json_is_false(v);
    case N_EMPTY_OBJECT: return json_is_object(v) && json_object_size(v) == 0;
    case N_EMPTY_STRING: return json_is_string(v) && json_string_length(v) == 0;
    case N_EMPTY_ARRAY: return json_is_array(v) && json_array_size(v) == 0;
    case N_TEXT_FORMAT: {
        json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
        return json_is_string(t) && strcmp(json_string_value(t), "text") == 0;
    }
    case N_NONE: break;
    }
    return false;
}

/* ---- values ---- */

static int read_int(inferd_error *err, const char *name, const field_def *d, const json_t *v,
                    int64_t *out)
{
    if (!json_is_integer(v))
        return bad_type(err, name, "an integer", v);
    int64_t x = json_integer_value(v);
    if (x < d->ilo || x > d->ihi)
        return fail(err, INFERD_E_INVALID, name, "%lld is outside [%lld, %lld]", (long long)x,
                    (long long)d->ilo, (long long)d->ihi);
    *out = x;
    return 0;
}

static int read_number(inferd_error *err, const char *name, const field_def *d, const json_t *v,
                       float *out)
{
    if (!json_is_number(v))
        return bad_type(err, name, "a number", v);
    double x = json_number_value(v);
    if (!(x >= d->lo && x <= d->hi))
        return fail(err, INFERD_E_INVALID, name, "%g is outside [%g, %g]", x, d->lo, d->hi);
    *out = (float)x;
    return 0;
}

static int read_bool(inferd_error *err, const char *name, const json_t *v, bool *out)
{
    if (!json_is_boolean(v))
        return bad_type(err, name, "a boolean", v);
    *out = json_is_true(v);
    return 0;
}

static int read_stop(inferd_error *err, const char *name, json_t *v, inferd_request_params *p)
{
    if (json_is_string(v)) {
        p->stop[0] = json_string_value(v);
        p->n_stop = json_string_length(v) > 0;
        return 0;
    }
    if (!json_is_array(v))
        return bad_type(err, name, "a string or an array of strings", v);
    if (json_array_size(v) > INFERD_STOP_N_MAX)
        return fail(err, INFERD_E_INVALID, name, "%zu strings, at most %d", json_array_size(v),
                    INFERD_STOP_N_MAX);
    size_t i;
    json_t *s;
    p->n_stop = 0;
    json_array_foreach (v, i, s) {
        if (!json_is_string(s))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                     "%s[%zu]: expected a string, got %s", name, i,
                                     inferd_fe_type_name(s));
        if (json_string_length(s) > INFERD_STOP_LEN_MAX)
            return inferd_fail_param(err, INFERD_E_INVALID, name, "%s[%zu]: %zu bytes, at most %d",
                                     name, i, json_string_length(s), INFERD_STOP_LEN_MAX);
        if (json_string_length(s) > 0)
            p->stop[p->n_stop++] = json_string_value(s);
    }
    return 0;
}

/* A prompt: a string, token ids, or an array of one of those. */
static int read_prompt(inferd_error *err, const char *name, json_t *v, inferd_fe_input *in)
{
    if (json_is_array(v) && json_array_size(v) > 0 &&
        (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0)))) {
        if (json_array_size(v) != 1)
            return fail(err, INFERD_E_INVALID, name,
                        "only one prompt per request is supported (got %zu)", json_array_size(v));
        v = json_array_get(v, 0);
    }
    if (json_is_string(v)) {
        if (json_string_length(v) == 0)
            return fail(err, INFERD_E_INVALID, name, "it is empty");
        in->text = json_string_value(v);
        in->text_len = json_string_length(v);
        return 0;
    }
    if (!json_is_array(v))
        return bad_type(err, name, "a string, an array of token ids, or an array of one of those",
                        v);
    size_t n = json_array_size(v), i;
    if (n == 0)
        return fail(err, INFERD_E_INVALID, name, "it is empty");
    int32_t *ids = inferd_malloc(n * sizeof(int32_t));
    if (!ids)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the prompt");
    json_t *t;
    json_array_foreach (v, i, t) {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) {
            inferd_free(ids);
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                     "%s[%zu]: expected a token id (integer >= 0)", name, i);
        }
        ids[i] = (int32_t)json_integer_value(t);
    }
    in->tokens = ids;
    in->n_tokens = n;
    return 0;
}

/* ---- chat messages ---- */

/* Message @p i's content: a string (borrowed), null (""), or text parts
 * joined into *owned. */
static int message_content(inferd_error *err, const char *name, size_t i, json_t *content,
                           const char **out, char **owned)
{
    if (!content || json_is_null(content)) {
        *out = "";
        return 0;
    }
    if (json_is_string(content)) {
        *out = json_string_value(content);
        return 0;
    }
    if (!json_is_array(content))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                 "%s[%zu].content: expected a string or an array of text parts",
                                 name, i);
    size_t total = 0, j;
    json_t *part;
    json_array_foreach (content, j, part) {
        if (!json_is_object(part))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                     "%s[%zu].content[%zu]: expected an object {\"type\": "
                                     "\"text\", \"text\": ...}",
                                     name, i, j);
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            return inferd_fail_param(err, INFERD_E_FIELD_UNSUPPORTED, name,
                                     "%s[%zu].content[%zu]: only parts of type \"text\" are "
                                     "supported",
                                     name, i, j);
        if (!json_is_string(text))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                     "%s[%zu].content[%zu].text: expected a string", name, i, j);
        total += json_string_length(text);
    }
    char *s = inferd_malloc(total + 1);
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the messages");
    size_t at = 0;
    json_array_foreach (content, j, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(s + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    s[at] = '\0';
    *owned = s;
    *out = s;
    return 0;
}

static int read_messages(inferd_error *err, const char *name, json_t *v, inferd_fe_input *in)
{
    if (!json_is_array(v))
        return bad_type(err, name, "an array", v);
    size_t n = json_array_size(v), i;
    if (n == 0)
        return fail(err, INFERD_E_INVALID, name, "it is empty");
    in->messages = inferd_calloc(n, sizeof(inferd_chat_message));
    in->owned_contents = inferd_calloc(n, sizeof(char *));
    if (!in->messages || !in->owned_contents)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the messages");
    in->n_messages = n;
    json_t *msg;
    json_array_foreach (v, i, msg) {
        if (!json_is_object(msg))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                     "%s[%zu]: expected an object", name, i);
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role))
            return inferd_fail_param(err, INFERD_E_INVALID_TYPE, name,
                                     "%s[%zu].role: expected a string", name, i);
        in->messages[i].role = json_string_value(role);
        int rc = message_content(err, name, i, json_object_get(msg, "content"),
                                 &in->messages[i].content, &in->owned_contents[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- a door's fields ---- */

static int apply_default(inferd_fe_input *in, inferd_field f, double x)
{
    inferd_sampler_params *sp = &in->params.sampling;
    switch (f) {
    case INFERD_F_MAX_TOKENS: in->params.max_tokens = (int32_t)x; return 0;
    case INFERD_F_TEMPERATURE: sp->temperature = (float)x; return 0;
    case INFERD_F_TOP_P: sp->top_p = (float)x; return 0;
    case INFERD_F_TOP_K: sp->top_k = (int32_t)x; return 0;
    case INFERD_F_MIN_P: sp->min_p = (float)x; return 0;
    case INFERD_F_TIMEOUT_MS: in->params.timeout_ms = (int64_t)x; return 0;
    default: return INFERD_E_INVALID;
    }
}

/* What reading left to check once every field is in. */
typedef struct pending {
    const char *stream_options_name;
    json_t *stream_options;
    bool logprobs, logprobs_given, top_given;
    int64_t top;
    const char *top_name;
    bool prompt_taken, messages_taken;
} pending;

static int read_field(const inferd_fe_spelling *sp, json_t *v, inferd_fe_input *in, pending *pd,
                      inferd_error *err)
{
    const field_def *d = &fields[sp->field];
    const char *name = sp->name;
    inferd_request_params *p = &in->params;
    inferd_sampler_params *s = &p->sampling;
    int64_t x = 0;
    int rc = 0;
    if (sp->refuse) {
        /* A value of the wrong type is that error first. */
        inferd_fe_spelling taken = {sp->field, sp->name, NULL};
        inferd_fe_input scratch = *in;
        pending pd_scratch = *pd;
        if (d->k != K_PROMPT && d->k != K_MESSAGES &&
            (rc = read_field(&taken, v, &scratch, &pd_scratch, err)) < 0)
            return rc;
        if (d->nv != N_NONE && is_neutral(d->nv, v))
            return 0;
        return fail(err, INFERD_E_FIELD_UNSUPPORTED, name, "%s", sp->refuse);
    }
    switch (sp->field) {
    case INFERD_F_MODEL:
        if (!json_is_string(v))
            return bad_type(err, name, "a string", v);
        in->model = json_string_value(v);
        return 0;
    case INFERD_F_PROMPT: in->prompt_field = INFERD_F_PROMPT; return read_prompt(err, name, v, in);
    case INFERD_F_MESSAGES:
        in->prompt_field = INFERD_F_MESSAGES;
        return read_messages(err, name, v, in);
    case INFERD_F_MAX_TOKENS:
        rc = read_int(err, name, d, v, &x);
        p->max_tokens = (int32_t)x;
        return rc;
    case INFERD_F_TEMPERATURE: return read_number(err, name, d, v, &s->temperature);
    case INFERD_F_TOP_P: return read_number(err, name, d, v, &s->top_p);
    case INFERD_F_MIN_P: return read_number(err, name, d, v, &s->min_p);
    case INFERD_F_PRESENCE_PENALTY: return read_number(err, name, d, v, &s->presence_penalty);
    case INFERD_F_FREQUENCY_PENALTY: return read_number(err, name, d, v, &s->frequency_penalty);
    case INFERD_F_REPEAT_PENALTY: return read_number(err, name, d, v, &s->repeat_penalty);
    case INFERD_F_TOP_K:
        rc = read_int(err, name, d, v, &x);
        s->top_k = (int32_t)x;
        return rc;
    case INFERD_F_REPEAT_LAST_N:
        rc = read_int(err, name, d, v, &x);
        s->repeat_last_n = (int32_t)x;
        return rc;
    case INFERD_F_SEED:
        rc = read_int(err, name, d, v, &x);
        s->seed = (uint64_t)x;
        s->has_seed = rc == 0;
        return rc;
    case INFERD_F_TIMEOUT_MS: return read_int(err, name, d, v, &p->timeout_ms);
    case INFERD_F_IGNORE_EOS: return read_bool(err, name, v, &p->ignore_eos);
    case INFERD_F_STOP: return read_stop(err, name, v, p);
    case INFERD_F_PRIORITY:
        if (!json_is_string(v))
            return bad_type(err, name, "a string", v);
        if (inferd_priority_parse(json_string_value(v), &p->priority) != 0)
            return fail(err, INFERD_E_INVALID, name, "'%s' is not high, normal or low",
                        json_string_value(v));
        return 0;
    case INFERD_F_STREAM: return read_bool(err, name, v, &in->stream);
    case INFERD_F_STREAM_OPTIONS:
        if (!json_is_object(v))
            return bad_type(err, name, "an object", v);
        pd->stream_options = v;
        pd->stream_options_name = name;
        return 0;
    case INFERD_F_LOGPROBS:
        pd->logprobs_given = true;
        return read_bool(err, name, v, &pd->logprobs);
    case INFERD_F_LOGPROBS_N:
        rc = read_int(err, name, d, v, &pd->top);
        pd->logprobs = pd->logprobs_given = rc == 0;
        return rc;
    case INFERD_F_TOP_LOGPROBS:
        pd->top_given = true;
        pd->top_name = name;
        return read_int(err, name, d, v, &pd->top);
    case INFERD_F_SESSION_ID:
        if (!json_is_string(v))
            return bad_type(err, name, "a string", v);
        if (json_string_length(v) > (size_t)d->ihi)
            return fail(err, INFERD_E_INVALID, name, "%zu bytes, at most %lld",
                        json_string_length(v), (long long)d->ihi);
        in->session_id = json_string_value(v);
        return 0;
    default:
        if (d->k == K_NEUTRAL_ONLY && !is_neutral(d->nv, v))
            return inferd_fail_param(err, d->refuse_code, name, "%s%s", name, d->refuse_text);
        return 0;
    }
}

/* Rules between fields, once all are read. */
static int finish(const inferd_fe_door *door, inferd_fe_input *in, pending *pd, inferd_error *err)
{
    inferd_request_params *p = &in->params;
    if (pd->stream_options) {
        if (!in->stream)
            return fail(err, INFERD_E_INVALID, pd->stream_options_name,
                        "only allowed with \"stream\": true");
        json_t *iu = json_object_get(pd->stream_options, "include_usage");
        if (iu && !json_is_null(iu) && read_bool(err, "include_usage", iu, &in->include_usage) < 0)
            return err ? err->code : INFERD_E_INVALID_TYPE;
    }
    if (pd->top_given && !pd->logprobs)
        return fail(err, INFERD_E_INVALID, pd->top_name, "needs \"logprobs\": true");
    p->logprobs = pd->logprobs;
    p->top_logprobs = (uint32_t)pd->top;
    if (p->sampling.top_p == 0.0f) { /* OpenAI's top_p 0: only the most likely token */
        p->sampling.top_k = 1;
        p->sampling.top_p = 1.0f;
    }
    bool given = in->text || in->tokens || in->messages;
    if (pd->prompt_taken && pd->messages_taken) {
        const char *pn = inferd__fe_spelled(door, INFERD_F_PROMPT);
        const char *mn = inferd__fe_spelled(door, INFERD_F_MESSAGES);
        if ((in->text || in->tokens) && in->messages)
            return inferd_fail_param(err, INFERD_E_INVALID, pn, "give %s or %s, not both", pn, mn);
        if (!given)
            return inferd_fail_param(err, INFERD_E_MISSING, pn, "%s or %s is required", pn, mn);
    } else if (!given && (pd->prompt_taken || pd->messages_taken)) {
        inferd_field f = pd->prompt_taken ? INFERD_F_PROMPT : INFERD_F_MESSAGES;
        return fail(err, INFERD_E_MISSING, inferd__fe_spelled(door, f), "it is required");
    }
    return 0;
}

static int fe_read(const inferd_fe_door *door, json_t *body, const int32_t *ids, size_t n_ids,
                   inferd_fe_input *in, inferd_error *err);

int inferd_fe_read(const inferd_fe_door *door, json_t *body, inferd_fe_input *in, inferd_error *err)
{
    return fe_read(door, body, NULL, 0, in, err);
}

int inferd_fe_read_ids(const inferd_fe_door *door, json_t *body, const int32_t *ids, size_t n_ids,
                       inferd_fe_input *in, inferd_error *err)
{
    return fe_read(door, body, ids, n_ids, in, err);
}

static int fe_read(const inferd_fe_door *door, json_t *body, const int32_t *ids, size_t n_ids,
                   inferd_fe_input *in, inferd_error *err)
{
    memset(in, 0, sizeof(*in));
    in->door = door;
    in->prompt_field = INFERD_F_PROMPT;
    in->params = inferd_request_params_default();
    for (size_t i = 0; i < door->n_defaults; i++)
        apply_default(in, door->defaults[i].field, door->defaults[i].value);
    pending pd = {0};
    bool seen[INFERD_F_COUNT] = {false};
    int rc = 0;
    for (size_t i = 0; i < door->n_fields && rc == 0; i++) {
        const inferd_fe_spelling *sp = &door->fields[i];
        if ((unsigned)sp->field >= INFERD_F_COUNT)
            continue;
        pd.prompt_taken |= sp->field == INFERD_F_PROMPT && !sp->refuse;
        pd.messages_taken |= sp->field == INFERD_F_MESSAGES && !sp->refuse;
        json_t *v = json_object_get(body, sp->name);
        if (!v || json_is_null(v) || seen[sp->field])
            continue;
        seen[sp->field] = true;
        rc = read_field(sp, v, in, &pd, err);
    }
    if (rc == 0 && ids) { /* the prompt, given outside the body */
        const char *pn = inferd__fe_spelled(door, INFERD_F_PROMPT);
        if (in->text || in->tokens)
            rc = inferd_fail_param(err, INFERD_E_INVALID, pn, "%s: the prompt is given twice", pn);
        else if (n_ids == 0)
            rc = fail(err, INFERD_E_INVALID, pn, "it is empty");
        else if (!(in->tokens = inferd_malloc(n_ids * sizeof(int32_t))))
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the prompt");
        else {
            memcpy(in->tokens, ids, n_ids * sizeof(int32_t));
            in->n_tokens = n_ids;
        }
    }
    if (rc == 0)
        rc = finish(door, in, &pd, err);
    if (rc < 0)
        inferd_fe_input_free(in);
    return rc;
}

void inferd_fe_input_free(inferd_fe_input *in)
{
    if (!in)
        return;
    inferd_free(in->tokens);
    for (size_t i = 0; in->owned_contents && i < in->n_messages; i++)
        inferd_free(in->owned_contents[i]);
    inferd_free(in->owned_contents);
    inferd_free(in->messages);
    in->tokens = NULL;
    in->n_tokens = 0;
    in->owned_contents = NULL;
    in->messages = NULL;
    in->n_messages = 0;
}

/* ---- parsing a body within a budget ---- */

int inferd_fe_parse_json(const char *data, size_t len, json_t **out, inferd_error *err)
{
    *out = NULL;
    /* One pass over the bytes: depth, containers and values, skipping
     * strings (their escapes included). Malformed input is left to jansson,
     * which says where; this only refuses what would cost too much. */
    uint32_t depth = 0;
    uint64_t containers = 0, values = 0;
    bool in_string = false, escaped = false, in_scalar = false;
    for (size_t i = 0; i < len; i++) {
        const char ch = data[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (ch == '\\')
                escaped = true;
            else if (ch == '"')
                in_string = false;
            continue;
        }
        const bool scalar_char = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
                                 ch == '-' || ch == '+' || ch == '.' || (ch >= 'A' && ch <= 'Z');
        if (scalar_char) {
            if (!in_scalar)
                values++;
            in_scalar = true;
            continue;
        }
        in_scalar = false;
        if (ch == '"') {
            in_string = true;
            values++;
        } else if (ch == '{' || ch == '[') {
            containers++;
            values++;
            if (++depth > INFERD_FE_JSON_DEPTH_MAX)
                return inferd_fail(err, INFERD_E_BAD_JSON,
                                   "the JSON nests deeper than %d arrays and objects",
                                   INFERD_FE_JSON_DEPTH_MAX);
        } else if (ch == '}' || ch == ']') {
            if (depth > 0)
                depth--;
        }
        if (containers > INFERD_FE_JSON_CONTAINERS_MAX)
            return inferd_fail(err, INFERD_E_BAD_JSON,
                               "the JSON has more than %d arrays and objects",
                               INFERD_FE_JSON_CONTAINERS_MAX);
        if (values > INFERD_FE_JSON_VALUES_MAX)
            return inferd_fail(err, INFERD_E_BAD_JSON, "the JSON has more than %d values",
                               INFERD_FE_JSON_VALUES_MAX);
    }
    if (values > INFERD_FE_JSON_VALUES_MAX)
        return inferd_fail(err, INFERD_E_BAD_JSON, "the JSON has more than %d values",
                           INFERD_FE_JSON_VALUES_MAX);
    json_error_t je;
    json_t *j = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return inferd_fail(err, INFERD_E_BAD_JSON, "invalid JSON at line %d column %d: %s", je.line,
                           je.column, je.text);
    *out = j;
    return 0;
}
