/* The doors' request formats (doors.h): each door's spelling of the front
 * end's fields and its defaults. */
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
