/* The doors' request formats (doors.h): each door's spelling of the front
 * end's fields and its defaults, and the KServe tensor adapter. */
#include "doors.h"

#include <string.h>

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The OpenAI fields that ask for what inferd does not do (refused unless
 * they ask for nothing), as completions and KServe spell them. */
#define OPENAI_REFUSED_FIELDS                                                     \
    {INFERD_F_N, "n", NULL}, {INFERD_F_BEST_OF, "best_of", NULL},                 \
        {INFERD_F_LOGIT_BIAS, "logit_bias", NULL}, {INFERD_F_ECHO, "echo", NULL}, \
    {                                                                             \
        INFERD_F_SUFFIX, "suffix", NULL                                           \
    }

/* The OpenAI sampling and generation fields, as the OpenAI routes and the
 * KServe "parameters" spell them. */
#define OPENAI_SAMPLING_FIELDS                                                              \
    {INFERD_F_MAX_TOKENS, "max_tokens", NULL}, {INFERD_F_TEMPERATURE, "temperature", NULL}, \
        {INFERD_F_TOP_P, "top_p", NULL}, {INFERD_F_MIN_P, "min_p", NULL},                   \
        {INFERD_F_PRESENCE_PENALTY, "presence_penalty", NULL},                              \
        {INFERD_F_FREQUENCY_PENALTY, "frequency_penalty", NULL},                            \
        {INFERD_F_REPEAT_PENALTY, "repeat_penalty", NULL}, {INFERD_F_TOP_K, "top_k", NULL}, \
        {INFERD_F_REPEAT_LAST_N, "repeat_last_n", NULL}, {INFERD_F_SEED, "seed", NULL},     \
        {INFERD_F_TIMEOUT_MS, "timeout_ms", NULL},                                          \
    {                                                                                       \
        INFERD_F_IGNORE_EOS, "ignore_eos", NULL                                             \
    }

/* ---- OpenAI ---- */

#define COMPLETION_DEFAULT_MAX_TOKENS 16 /* OpenAI's default for completions */
#define CHAT_DEFAULT_MAX_TOKENS (-1)     /* chat: until the context is full */

static const inferd_fe_spelling completion_fields[] = {
    {INFERD_F_MODEL, "model", NULL},
    OPENAI_REFUSED_FIELDS,
    OPENAI_SAMPLING_FIELDS,
    {INFERD_F_STREAM, "stream", NULL},
    {INFERD_F_PRIORITY, "priority", NULL},
    {INFERD_F_STREAM_OPTIONS, "stream_options", NULL},
    {INFERD_F_STOP, "stop", NULL},
    {INFERD_F_LOGPROBS_N, "logprobs", NULL},
    {INFERD_F_PROMPT, "prompt", NULL},
};
static const inferd_fe_default completion_defaults[] = {
    {INFERD_F_MAX_TOKENS, COMPLETION_DEFAULT_MAX_TOKENS}};
const inferd_fe_door inferd__door_completions = {"completions", completion_fields,
                                                 N_OF(completion_fields), completion_defaults,
                                                 N_OF(completion_defaults)};

static const inferd_fe_spelling chat_fields[] = {
    {INFERD_F_MODEL, "model", NULL},
    {INFERD_F_N, "n", NULL},
    {INFERD_F_BEST_OF, "best_of", NULL},
    {INFERD_F_LOGIT_BIAS, "logit_bias", NULL},
    {INFERD_F_TOOLS, "tools", NULL},
    {INFERD_F_RESPONSE_FORMAT, "response_format", NULL},
    OPENAI_SAMPLING_FIELDS,
    {INFERD_F_MAX_TOKENS, "max_completion_tokens", NULL},
    {INFERD_F_STREAM, "stream", NULL},
    {INFERD_F_PRIORITY, "priority", NULL},
    {INFERD_F_STREAM_OPTIONS, "stream_options", NULL},
    {INFERD_F_STOP, "stop", NULL},
    {INFERD_F_LOGPROBS, "logprobs", NULL},
    {INFERD_F_TOP_LOGPROBS, "top_logprobs", NULL},
    {INFERD_F_MESSAGES, "messages", NULL},
};
static const inferd_fe_default chat_defaults[] = {{INFERD_F_MAX_TOKENS, CHAT_DEFAULT_MAX_TOKENS}};
const inferd_fe_door inferd__door_chat = {"chat", chat_fields, N_OF(chat_fields), chat_defaults,
                                          N_OF(chat_defaults)};

/* ---- KServe ---- */

#define KSERVE_DEFAULT_MAX_TOKENS 16
#define NOT_ON_INFER "not supported on /infer (use /v1/completions)"

static const inferd_fe_spelling kserve_fields[] = {
    {INFERD_F_LOGPROBS_N, "logprobs", NOT_ON_INFER},
    {INFERD_F_TOP_LOGPROBS, "top_logprobs", NOT_ON_INFER},
    {INFERD_F_STREAM_OPTIONS, "stream_options", NOT_ON_INFER},
    OPENAI_REFUSED_FIELDS,
    OPENAI_SAMPLING_FIELDS,
    {INFERD_F_STREAM, "stream", "not supported on /infer (use /v1/completions with stream)"},
    {INFERD_F_PRIORITY, "priority", NULL},
    {INFERD_F_STOP, "stop", NULL},
    {INFERD_F_MODEL, "model_name", NULL},
    {INFERD_F_PROMPT, "text_input", NULL},
};
static const inferd_fe_default kserve_defaults[] = {
    {INFERD_F_MAX_TOKENS, KSERVE_DEFAULT_MAX_TOKENS}};
const inferd_fe_door inferd__door_kserve = {"kserve", kserve_fields, N_OF(kserve_fields),
                                            kserve_defaults, N_OF(kserve_defaults)};

/* The single element of input tensor @p in (data [x] or [[x]]). */
static json_t *scalar_of(json_t *in)
{
    json_t *d = json_object_get(in, "data");
    while (json_is_array(d) && json_array_size(d) == 1)
        d = json_array_get(d, 0);
    return json_is_array(d) ? NULL : d;
}

/* The leaf elements of @p d (nested arrays flattened; a scalar is one), or
 * -1 past depth 8. */
static int64_t data_elems(json_t *d, int depth)
{
    if (!json_is_array(d))
        return 1;
    if (depth >= 8)
        return -1;
    int64_t n = 0;
    size_t i;
    json_t *e;
    json_array_foreach (d, i, e) {
        int64_t k = data_elems(e, depth + 1);
        if (k < 0)
            return -1;
        n += k;
    }
    return n;
}

/* Does input @p i's "shape" (required: integers >= 0, at most 8) hold as
 * many elements as its data? */
static int check_shape(json_t *in, size_t i, const char *n, inferd_error *err)
{
    json_t *shape = json_object_get(in, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > 8)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "inputs[%zu] (%s): shape: expected an array of at most 8 "
                                 "integers >= 0",
                                 i, n);
    int64_t want = 1;
    size_t k;
    json_t *dim;
    json_array_foreach (shape, k, dim) {
        if (!json_is_integer(dim) || json_integer_value(dim) < 0 ||
            json_integer_value(dim) > (int64_t)1 << 31)
            return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                     "inputs[%zu] (%s): shape[%zu]: expected an integer >= 0", i, n,
                                     k);
        want *= json_integer_value(dim);
        if (want > (int64_t)1 << 40)
            want = (int64_t)1 << 40;
    }
    int64_t have = data_elems(json_object_get(in, "data"), 0);
    if (have != want)
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "inputs[%zu] (%s): shape says %lld elements, data has %lld", i, n,
                                 (long long)want, (long long)have);
    return 0;
}

/* Input tensor @p i (named @p n) into @p fields. */
static int input_field(json_t *fields, size_t i, const char *n, json_t *in, bool *has_text,
                       inferd_error *err)
{
    json_t *dt = json_object_get(in, "datatype");
    json_t *v = scalar_of(in);
    if (strcmp(n, "text_input") == 0) {
        if (!json_is_string(dt) || strcmp(json_string_value(dt), "BYTES") != 0 ||
            !json_is_string(v))
            return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                     "inputs[%zu] (text_input): expected datatype BYTES with one "
                                     "string in data",
                                     i);
        *has_text = true;
    } else if (strcmp(n, "stop") == 0) {
        v = json_object_get(in, "data");
        if (!json_is_array(v))
            return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                     "inputs[%zu] (stop): expected a data array of strings", i);
    } else if (!v) {
        return inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                 "inputs[%zu] (%s): expected one element in data", i, n);
    }
    int rc = check_shape(in, i, n, err);
    if (rc < 0)
        return rc;
    if (json_object_set(fields, n, v) != 0)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    return 0;
}

int inferd__kserve_fields(json_t *body, const char *model, json_t **out, inferd_error *err)
{
    *out = NULL;
    json_t *inputs = json_object_get(body, "inputs");
    if (!inputs || json_is_null(inputs))
        return inferd_fail_param(err, INFERD_E_MISSING, "inputs",
                                 "inputs: it is required (a text_input tensor, BYTES, shape [1])");
    if (!json_is_array(inputs))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "inputs",
                                 "inputs: expected an array of tensors");
    json_t *params = json_object_get(body, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params))
        return inferd_fail_param(err, INFERD_E_INVALID_TYPE, "parameters",
                                 "parameters: expected an object");
    json_t *fields = json_is_object(params) ? json_deep_copy(params) : json_object();
    if (!fields)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    size_t i;
    json_t *in;
    bool has_text = false;
    int rc = 0;
    json_t *seen = json_object(); /* input names so far (an input overrides a parameter) */
    if (!seen)
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    json_array_foreach (inputs, i, in) {
        if (rc < 0)
            break;
        json_t *name = json_object_get(in, "name");
        if (!json_is_string(name))
            rc = inferd_fail_param(err, INFERD_E_INVALID_TYPE, "inputs",
                                   "inputs[%zu].name: expected a string", i);
        else if (json_object_get(seen, json_string_value(name)))
            rc = inferd_fail_param(err, INFERD_E_INVALID, "inputs",
                                   "inputs[%zu] (%s): the input is given twice", i,
                                   json_string_value(name));
        else if (json_object_set_new(seen, json_string_value(name), json_true()) != 0)
            rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
        else
            rc = input_field(fields, i, json_string_value(name), in, &has_text, err);
    }
    json_decref(seen);
    if (rc == 0 && !has_text)
        rc = inferd_fail_param(err, INFERD_E_MISSING, "inputs",
                               "inputs: no text_input tensor (BYTES, shape [1])");
    if (rc == 0 && model && json_object_set_new(fields, "model_name", json_string(model)) != 0)
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    if (rc < 0) {
        json_decref(fields);
        return rc;
    }
    *out = fields;
    return 0;
}

/* ---- NATS ---- */

static const inferd_fe_spelling nats_fields[] = {
    {INFERD_F_MAX_TOKENS, "maxTokens", NULL},
    {INFERD_F_TEMPERATURE, "temperature", NULL},
    {INFERD_F_TOP_P, "topP", NULL},
    {INFERD_F_TOP_K, "topK", NULL},
    {INFERD_F_SEED, "seed", NULL},
    {INFERD_F_TIMEOUT_MS, "timeoutMs", NULL},
    {INFERD_F_STOP, "stop", NULL},
    {INFERD_F_PRIORITY, "priority", NULL},
    {INFERD_F_SESSION_ID, "sessionId", NULL},
    {INFERD_F_IGNORE_EOS, "ignoreEos", NULL},
    {INFERD_F_MODEL, "modelId", NULL},
    {INFERD_F_PROMPT, "prompt", NULL},
    {INFERD_F_MESSAGES, "messages", NULL},
};
static const inferd_fe_default nats_defaults[] = {
    {INFERD_F_MAX_TOKENS, 100}, /* the NATS protocol's defaults */
    {INFERD_F_TEMPERATURE, 0.7},
    {INFERD_F_TOP_P, 0.9},
};
const inferd_fe_door inferd__door_nats = {"nats", nats_fields, N_OF(nats_fields), nats_defaults,
                                          N_OF(nats_defaults)};
