/* Runtime: the request front end without sockets. The field table as
 * doors spell it (types, ranges, defaults, refusals, prompts and chat
 * messages, allocation failures), the error faces of every row of the
 * error table, and requests submitted through a front end serving the
 * stories260K fixture (events, counts, errors with the field at fault,
 * the chat template detected at load, draining). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <stdlib.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/frontend.h"
#include "inferd/gguf.h"
#include "inferd/log.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* A door spelled as NATS spells it, with its defaults. */
static const inferd_fe_spelling camel_fields[] = {
    {INFERD_F_MAX_TOKENS, "maxTokens", NULL},
    {INFERD_F_TEMPERATURE, "temperature", NULL},
    {INFERD_F_TOP_P, "topP", NULL},
    {INFERD_F_TOP_K, "topK", NULL},
    {INFERD_F_SEED, "seed", NULL},
    {INFERD_F_STOP, "stop", NULL},
    {INFERD_F_SESSION_ID, "sessionId", NULL},
    {INFERD_F_MODEL, "modelId", NULL},
    {INFERD_F_PROMPT, "prompt", NULL},
    {INFERD_F_MESSAGES, "messages", NULL},
};
static const inferd_fe_default camel_defaults[] = {
    {INFERD_F_MAX_TOKENS, 100}, {INFERD_F_TEMPERATURE, 0.5}, {INFERD_F_TOP_P, 0.9}};
static const inferd_fe_door camel = {"camel", camel_fields, N_OF(camel_fields), camel_defaults,
                                     N_OF(camel_defaults)};

/* A door spelled as OpenAI's completions, with refusals of its own. */
static const inferd_fe_spelling snake_fields[] = {
    {INFERD_F_N, "n", NULL},
    {INFERD_F_LOGIT_BIAS, "logit_bias", NULL},
    {INFERD_F_RESPONSE_FORMAT, "response_format", NULL},
    {INFERD_F_MAX_TOKENS, "max_tokens", NULL},
    {INFERD_F_MAX_TOKENS, "max_completion_tokens", NULL},
    {INFERD_F_TEMPERATURE, "temperature", NULL},
    {INFERD_F_STREAM, "stream", NULL},
    {INFERD_F_STREAM_OPTIONS, "stream_options", NULL},
    {INFERD_F_LOGPROBS, "logprobs", NULL},
    {INFERD_F_TOP_LOGPROBS, "top_logprobs", NULL},
    {INFERD_F_PRIORITY, "priority", NULL},
    {INFERD_F_IGNORE_EOS, "ignore_eos", "not on this door"},
    {INFERD_F_PROMPT, "prompt", NULL},
};
static const inferd_fe_door snake = {"snake", snake_fields, N_OF(snake_fields), NULL, 0};

/* A chat door: messages only. */
static const inferd_fe_spelling chat_fields[] = {
    {INFERD_F_MODEL, "model", NULL},
    {INFERD_F_MAX_TOKENS, "max_tokens", NULL},
    {INFERD_F_TEMPERATURE, "temperature", NULL},
    {INFERD_F_MESSAGES, "messages", NULL},
};
static const inferd_fe_door chat = {"chat", chat_fields, N_OF(chat_fields), NULL, 0};

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j)
        fail_msg("test JSON does not parse: %s: %s", text, je.text);
    return j;
}

/* Read @p text through @p door: the code, with *in read on success. */
static int read_body(const inferd_fe_door *door, const char *text, json_t **body,
                     inferd_fe_input *in, inferd_error *e)
{
    *body = parse(text);
    memset(e, 0, sizeof(*e));
    return inferd_fe_read(door, *body, in, e);
}

/* ---- the field table ---- */

static void test_fields_spelling_and_defaults(void **state)
{
    (void)state;
    json_t *body;
    inferd_fe_input in;
    inferd_error e;
    assert_int_equal(read_body(&camel, "{\"prompt\":\"hi\"}", &body, &in, &e), 0);
    assert_int_equal(in.params.max_tokens, 100);
    assert_float_equal(in.params.sampling.temperature, 0.5, 1e-6);
    assert_float_equal(in.params.sampling.top_p, 0.9, 1e-6);
    assert_false(in.params.sampling.has_seed);
    assert_int_equal(in.prompt_field, INFERD_F_PROMPT);
    assert_int_equal(in.text_len, 2);
    assert_null(in.model);
    inferd_fe_input_free(&in);
    json_decref(body);

    assert_int_equal(read_body(&camel,
                               "{\"prompt\":\"hi\",\"maxTokens\":5,\"topP\":0,\"seed\":-3,"
                               "\"stop\":[\"a\",\"\",\"b\"],\"sessionId\":\"s1\","
                               "\"modelId\":\"m\",\"max_tokens\":9}",
                               &body, &in, &e),
                     0);
    assert_int_equal(in.params.max_tokens, 5); /* max_tokens is not this door's name */
    /* top_p 0 keeps only the most likely token. */
    assert_int_equal(in.params.sampling.top_k, 1);
    assert_float_equal(in.params.sampling.top_p, 1.0, 0);
    assert_true(in.params.sampling.has_seed);
    assert_int_equal((int64_t)in.params.sampling.seed, -3);
    assert_int_equal(in.params.n_stop, 2); /* empty strings stop nothing */
    assert_string_equal(in.params.stop[1], "b");
    assert_string_equal(in.session_id, "s1");
    assert_string_equal(in.model, "m");
    inferd_fe_input_free(&in);
    json_decref(body);

    /* The second spelling of a field is read when the first is absent. */
    assert_int_equal(
        read_body(&snake, "{\"prompt\":\"x\",\"max_completion_tokens\":7}", &body, &in, &e), 0);
    assert_int_equal(in.params.max_tokens, 7);
    inferd_fe_input_free(&in);
    json_decref(body);
    assert_int_equal(read_body(&snake,
                               "{\"prompt\":\"x\",\"max_tokens\":3,\"max_completion_tokens\":7,"
                               "\"n\":1,\"logit_bias\":{},\"response_format\":{\"type\":\"text\"},"
                               "\"ignore_eos\":false,\"stream\":true,"
                               "\"stream_options\":{\"include_usage\":true},\"logprobs\":true,"
                               "\"top_logprobs\":2,\"priority\":\"high\",\"temperature\":null}",
                               &body, &in, &e),
                     0);
    assert_int_equal(in.params.max_tokens, 3);
    assert_true(in.stream);
    assert_true(in.include_usage);
    assert_true(in.params.logprobs);
    assert_int_equal(in.params.top_logprobs, 2);
    assert_int_equal(in.params.priority, INFERD_PRIORITY_HIGH);
    inferd_fe_input_free(&in);
    json_decref(body);
    assert_string_equal(inferd_field_name(INFERD_F_TOP_P), "top_p");
    assert_string_equal(inferd_field_name(INFERD_F_COUNT), "?");
}

typedef struct bad_case {
    const inferd_fe_door *door;
    const char *body;
    int code;
    const char *param;
    const char *msg; /* the message starts with it */
} bad_case;

static void test_fields_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {&camel, "{\"prompt\":\"hi\",\"maxTokens\":\"5\"}", INFERD_E_INVALID_TYPE, "maxTokens",
         "maxTokens: expected an integer, got string"},
        {&camel, "{\"prompt\":\"hi\",\"maxTokens\":-1}", INFERD_E_INVALID, "maxTokens",
         "maxTokens: -1 is outside [0, 2147483647]"},
        {&camel, "{\"prompt\":\"hi\",\"temperature\":2.5}", INFERD_E_INVALID, "temperature",
         "temperature: 2.5 is outside [0, 2]"},
        {&camel, "{\"prompt\":\"hi\",\"topK\":1.5}", INFERD_E_INVALID_TYPE, "topK",
         "topK: expected an integer, got number"},
        {&camel, "{}", INFERD_E_MISSING, "prompt", "prompt or messages is required"},
        {&camel, "{\"prompt\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"b\"}]}",
         INFERD_E_INVALID, "prompt", "give prompt or messages, not both"},
        {&camel, "{\"prompt\":\"\"}", INFERD_E_INVALID, "prompt", "prompt: it is empty"},
        {&camel, "{\"prompt\":[]}", INFERD_E_INVALID, "prompt", "prompt: it is empty"},
        {&camel, "{\"prompt\":[\"a\",\"b\"]}", INFERD_E_INVALID, "prompt",
         "prompt: only one prompt per request is supported (got 2)"},
        {&camel, "{\"prompt\":[1,-2]}", INFERD_E_INVALID_TYPE, "prompt",
         "prompt[1]: expected a token id (integer >= 0)"},
        {&camel, "{\"prompt\":{}}", INFERD_E_INVALID_TYPE, "prompt",
         "prompt: expected a string, an array of token ids, or an array of one of those"},
        {&camel, "{\"prompt\":\"a\",\"stop\":[\"a\",1]}", INFERD_E_INVALID_TYPE, "stop",
         "stop[1]: expected a string, got integer"},
        {&camel,
         "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\","
         "\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
         INFERD_E_INVALID, "stop", "stop: 17 strings, at most 16"},
        {&camel, "{\"prompt\":\"a\",\"modelId\":7}", INFERD_E_INVALID_TYPE, "modelId",
         "modelId: expected a string, got integer"},
        {&camel, "{\"prompt\":\"a\",\"sessionId\":[]}", INFERD_E_INVALID_TYPE, "sessionId",
         "sessionId: expected a string, got array"},
        {&camel, "{\"messages\":{}}", INFERD_E_INVALID_TYPE, "messages",
         "messages: expected an array, got object"},
        {&camel, "{\"messages\":[]}", INFERD_E_INVALID, "messages", "messages: it is empty"},
        {&chat, "{}", INFERD_E_MISSING, "messages", "messages: it is required"},
        {&chat, "{\"messages\":[3]}", INFERD_E_INVALID_TYPE, "messages",
         "messages[0]: expected an object"},
        {&chat, "{\"messages\":[{\"content\":\"x\"}]}", INFERD_E_INVALID_TYPE, "messages",
         "messages[0].role: expected a string"},
        {&chat, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", INFERD_E_INVALID_TYPE,
         "messages", "messages[0].content: expected a string or an array of text parts"},
        {&chat, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
         INFERD_E_FIELD_UNSUPPORTED, "messages",
         "messages[0].content[0]: only parts of type \"text\" are supported"},
        {&chat, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
         INFERD_E_INVALID_TYPE, "messages", "messages[0].content[0].text: expected a string"},
        {&snake, "{\"prompt\":\"a\",\"n\":2}", INFERD_E_INVALID, "n",
         "n: only 1 choice per request is supported"},
        {&snake, "{\"prompt\":\"a\",\"logit_bias\":{\"1\":2}}", INFERD_E_FIELD_UNSUPPORTED,
         "logit_bias", "logit_bias is not supported"},
        {&snake, "{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_object\"}}",
         INFERD_E_FIELD_UNSUPPORTED, "response_format",
         "response_format: only {\"type\": \"text\"} is supported"},
        {&snake, "{\"prompt\":\"a\",\"ignore_eos\":true}", INFERD_E_FIELD_UNSUPPORTED, "ignore_eos",
         "ignore_eos: not on this door"},
        {&snake, "{\"prompt\":\"a\",\"ignore_eos\":\"yes\"}", INFERD_E_INVALID_TYPE, "ignore_eos",
         "ignore_eos: expected a boolean, got string"},
        {&snake, "{\"prompt\":\"a\",\"stream_options\":{}}", INFERD_E_INVALID, "stream_options",
         "stream_options: only allowed with \"stream\": true"},
        {&snake, "{\"prompt\":\"a\",\"top_logprobs\":2}", INFERD_E_INVALID, "top_logprobs",
         "top_logprobs: needs \"logprobs\": true"},
        {&snake, "{\"prompt\":\"a\",\"top_logprobs\":99,\"logprobs\":true}", INFERD_E_INVALID,
         "top_logprobs", "top_logprobs: 99 is outside [0, 20]"},
        {&snake, "{\"prompt\":\"a\",\"priority\":\"urgent\"}", INFERD_E_INVALID, "priority",
         "priority: 'urgent' is not high, normal or low"},
    };
    for (size_t i = 0; i < N_OF(cases); i++) {
        const bad_case *c = &cases[i];
        json_t *body;
        inferd_fe_input in;
        inferd_error e;
        int rc = read_body(c->door, c->body, &body, &in, &e);
        if (rc != c->code || strcmp(e.param, c->param) != 0 ||
            strncmp(e.msg, c->msg, strlen(c->msg)) != 0)
            fail_msg("%s %s: got %d param '%s' '%s', expected %d param '%s' '%s'", c->door->name,
                     c->body, rc, e.param, e.msg, c->code, c->param, c->msg);
        assert_int_equal(e.code, c->code);
        json_decref(body);
    }
}

static void test_fields_messages_and_ids(void **state)
{
    (void)state;
    json_t *body;
    inferd_fe_input in;
    inferd_error e;
    assert_int_equal(
        read_body(&chat,
                  "{\"messages\":[{\"role\":\"system\",\"content\":null},"
                  "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"ab\"},"
                  "{\"type\":\"text\",\"text\":\"cd\"}]}]}",
                  &body, &in, &e),
        0);
    assert_int_equal(in.prompt_field, INFERD_F_MESSAGES);
    assert_int_equal(in.n_messages, 2);
    assert_string_equal(in.messages[0].content, "");
    assert_string_equal(in.messages[1].role, "user");
    assert_string_equal(in.messages[1].content, "abcd");
    inferd_fe_input_free(&in);
    json_decref(body);

    assert_int_equal(read_body(&camel, "{\"prompt\":[[5,6,7]]}", &body, &in, &e), 0);
    assert_int_equal(in.n_tokens, 3);
    assert_int_equal(in.tokens[2], 7);
    assert_null(in.text);
    inferd_fe_input_free(&in);
    json_decref(body);
}

/* Every allocation of a read can fail: the error is INFERD_E_NOMEM and
 * nothing leaks (the ASan build checks). */
static void test_fields_alloc_failures(void **state)
{
    (void)state;
    const char *text = "{\"prompt\":[1,2,3],\"messages\":null}";
    const char *chat_text = "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                            "\"text\":\"x\"}]},{\"role\":\"user\",\"content\":\"y\"}]}";
    for (int which = 0; which < 2; which++) {
        json_t *body = parse(which ? chat_text : text);
        int done = 0;
        for (long k = 1; k < 64 && !done; k++) {
            inferd_fe_input in;
            inferd_error e = {0};
            inferd_alloc_fail_after(k);
            int rc = inferd_fe_read(which ? &chat : &camel, body, &in, &e);
            inferd_alloc_fail_after(0);
            if (rc == 0) {
                inferd_fe_input_free(&in);
                done = 1;
            } else {
                assert_int_equal(rc, INFERD_E_NOMEM);
            }
        }
        assert_true(done);
        json_decref(body);
    }
}

/* ---- parsing within the budget ---- */

/* @p n copies of @p unit between @p open and @p close (malloc'd). */
static char *repeat(const char *open, const char *unit, size_t n, const char *close)
{
    size_t u = strlen(unit), len = strlen(open) + u * n + strlen(close);
    char *p = inferd_malloc(len + 1), *at = p;
    assert_non_null(p);
    at += sprintf(at, "%s", open);
    for (size_t i = 0; i < n; i++, at += u)
        memcpy(at, unit, u);
    sprintf(at, "%s", close);
    return p;
}

static void expect_refused(const char *text, const char *msg)
{
    json_t *j = (json_t *)1;
    inferd_error e = {0};
    assert_int_equal(inferd_fe_parse_json(text, strlen(text), &j, &e), INFERD_E_BAD_JSON);
    assert_null(j);
    if (!strstr(e.msg, msg))
        fail_msg("'%s' does not say '%s'", e.msg, msg);
}

static void test_parse_json_budget(void **state)
{
    (void)state;
    json_t *j = NULL;
    inferd_error e = {0};
    const char *ok = "{\"prompt\":\"[[[{{{ \\\" ]]]\",\"stop\":[\"a\",\"b\"],\"n\":1,\"x\":null}";
    assert_int_equal(inferd_fe_parse_json(ok, strlen(ok), &j, &e), 0);
    assert_string_equal(json_string_value(json_object_get(j, "prompt")), "[[[{{{ \" ]]]");
    json_decref(j);

    /* Each limit: just inside is parsed, one past is refused before parsing. */
    char *deep = repeat("", "[", INFERD_FE_JSON_DEPTH_MAX, "");
    char *deep_ok = repeat(deep, "]", INFERD_FE_JSON_DEPTH_MAX, "");
    assert_int_equal(inferd_fe_parse_json(deep_ok, strlen(deep_ok), &j, &e), 0);
    json_decref(j);
    char *deeper = repeat("[", "", 0, deep_ok);
    char *deeper2 = repeat(deeper, "", 0, "]");
    expect_refused(deeper2, "nests deeper than 64");
    char *objs = repeat("[{}", ",{}", INFERD_FE_JSON_CONTAINERS_MAX - 2, "]");
    assert_int_equal(inferd_fe_parse_json(objs, strlen(objs), &j, &e), 0);
    json_decref(j);
    char *objs2 = repeat("[{}", ",{}", INFERD_FE_JSON_CONTAINERS_MAX, "]");
    expect_refused(objs2, "more than 16384 arrays and objects");
    char *ints = repeat("{\"prompt\":[1", ",1", INFERD_FE_JSON_VALUES_MAX, "]}");
    expect_refused(ints, "more than 262144 values");
    char *ints_ok = repeat("[1", ",22", INFERD_FE_JSON_VALUES_MAX - 2, "]");
    assert_int_equal(inferd_fe_parse_json(ints_ok, strlen(ints_ok), &j, &e), 0);
    assert_int_equal(json_array_size(j), INFERD_FE_JSON_VALUES_MAX - 1);
    json_decref(j);
    expect_refused("{\"a\":1,\"a\":2}", "invalid JSON at line 1");
    expect_refused("{\"a\":", "invalid JSON at line 1");
    inferd_free(deep);
    inferd_free(deep_ok);
    inferd_free(deeper);
    inferd_free(deeper2);
    inferd_free(objs);
    inferd_free(objs2);
    inferd_free(ints);
    inferd_free(ints_ok);
}

/* ---- error faces ---- */

typedef struct row {
    int value, http;
    const char *hcode, *ncode;
} row;

static const row rows[] = {
#define X(name, value, http, hcode, ncode, grpc, text) {value, http, hcode, ncode},
    INFERD_ERRORS(X)
#undef X
};

static void test_error_faces(void **state)
{
    (void)state;
    for (size_t i = 1; i < N_OF(rows); i++) {
        inferd_error e = {0};
        inferd_fail_param(&e, rows[i].value, i % 2 ? "max_tokens" : NULL, "row %zu", i);
        assert_int_equal(inferd_fe_error_status(&e), (unsigned)rows[i].http);

        json_t *o = inferd_fe_error_openai(&e);
        json_t *err = json_object_get(o, "error");
        assert_string_equal(json_string_value(json_object_get(err, "message")), e.msg);
        assert_string_equal(json_string_value(json_object_get(err, "code")), rows[i].hcode);
        const char *type = json_string_value(json_object_get(err, "type"));
        assert_string_equal(type, rows[i].http == 401   ? "authentication_error"
                                  : rows[i].http == 404 ? "not_found_error"
                                  : rows[i].http >= 500 ? "server_error"
                                                        : "invalid_request_error");
        json_t *param = json_object_get(err, "param");
        if (i % 2)
            assert_string_equal(json_string_value(param), "max_tokens");
        else
            assert_true(json_is_null(param));
        json_decref(o);

        o = inferd_fe_error_kserve(&e);
        assert_int_equal(json_object_size(o), 1);
        assert_string_equal(json_string_value(json_object_get(o, "error")), e.msg);
        json_decref(o);

        o = inferd_fe_error_nats(&e, i % 3 ? "r1" : NULL);
        assert_string_equal(json_string_value(json_object_get(o, "type")), "error");
        assert_string_equal(json_string_value(json_object_get(o, "code")), rows[i].ncode);
        assert_string_equal(json_string_value(json_object_get(o, "error")), e.msg);
        if (i % 3)
            assert_string_equal(json_string_value(json_object_get(o, "requestId")), "r1");
        else
            assert_true(json_is_null(json_object_get(o, "requestId")));
        assert_int_equal(json_object_get(o, "param") != NULL, i % 2 == 1);
        json_decref(o);
    }
}

/* ---- a front end serving stories260K ---- */

static char g_stories[512], g_llama3[512], g_dir[64] = "/tmp/inferd-fetest-XXXXXX";

/* stories260K again, with a llama-3 tokenizer.chat_template: the template
 * is detected when the model is loaded. */
static void write_llama3_copy(void)
{
    inferd_error e = {0};
    inferd_gguf *src = NULL;
    inferd_gguf_writer *w = NULL;
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_llama3, sizeof(g_llama3), "%s/llama3-chat.gguf", g_dir);
    assert_int_equal(inferd_gguf_open(g_stories, &src, &e), 0);
    assert_int_equal(inferd_gguf_writer_create(&w, &e), 0);
    assert_int_equal(inferd_gguf_writer_copy_kv(w, src, NULL, &e), 0);
    assert_int_equal(inferd_gguf_writer_set_str(w, "tokenizer.chat_template",
                                                "{% for m in messages %}<|start_header_id|>"
                                                "{{ m['role'] }}<|end_header_id|>\n\n"
                                                "{{ m['content'] }}<|eot_id|>{% endfor %}",
                                                &e),
                     0);
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(src); i++) {
        const inferd_gguf_tensor *t = inferd_gguf_tensor_at(src, i);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
        assert_int_equal(inferd_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data,
                                                       NULL, NULL, &e),
                         0);
    }
    assert_int_equal(inferd_gguf_writer_write(w, g_llama3, &e), 0);
    inferd_gguf_writer_destroy(w);
    inferd_gguf_close(src);
}

static inferd_frontend *make_fe(const char *tmpl, inferd_error *e)
{
    inferd_frontend_opts o = inferd_frontend_opts_default();
    o.n_models = 2;
    o.models[0].path = g_stories;
    o.models[1].path = g_llama3;
    o.models[1].alias = "l3";
    o.model_opts.sched.model.n_ctx = 64;
    o.model_opts.sched.n_slots = 2;
    o.model_opts.sched.n_threads = 1;
    o.chat_template = tmpl;
    inferd_frontend *fe = NULL;
    int rc = inferd_frontend_create(&o, &fe, e);
    if (rc < 0)
        return NULL;
    return fe;
}

/* Submit @p text through @p door; the code, and on success the text and
 * the number of tokens. */
static int run(inferd_frontend *fe, const inferd_fe_door *door, const char *text, char *out,
               size_t cap, uint32_t *n_gen, inferd_error *e)
{
    json_t *body;
    inferd_fe_input in;
    int rc = read_body(door, text, &body, &in, e);
    if (rc < 0) {
        json_decref(body);
        return rc;
    }
    inferd_fe_request *r = NULL;
    rc = inferd_fe_submit(fe, &in, NULL, NULL, &r, e);
    inferd_fe_input_free(&in);
    json_decref(body);
    if (rc < 0)
        return rc;
    size_t len = 0;
    out[0] = '\0';
    for (;;) {
        inferd_event ev;
        assert_int_equal(inferd_fe_request_next(r, &ev, -1), 0);
        if (ev.type == INFERD_EVENT_ERROR) {
            inferd_fe_event_error(r, &ev, e);
            rc = ev.code;
            break;
        }
        if (ev.text_len < cap - len) {
            memcpy(out + len, ev.text, ev.text_len);
            len += ev.text_len;
            out[len] = '\0';
        }
        if (ev.type == INFERD_EVENT_DONE) {
            *n_gen = ev.n_gen;
            break;
        }
    }
    inferd_fe_request_release(r);
    return rc;
}

static void test_frontend_requests(void **state)
{
    (void)state;
    inferd_error e = {0};
    inferd_frontend *fe = make_fe(NULL, &e);
    assert_non_null(fe);
    assert_int_equal(inferd_frontend_state(fe), INFERD_FE_LOADING);
    assert_int_equal(inferd_frontend_n_models(fe), 2);
    inferd_fe_model_info mi;
    inferd_frontend_model(fe, 0, &mi);
    assert_string_equal(mi.id, "stories260K");
    assert_false(mi.loaded);
    assert_null(mi.chat_template);
    assert_int_equal(inferd_frontend_load_models(fe, &e), 0);
    assert_int_equal(inferd_frontend_state(fe), INFERD_FE_READY);
    inferd_frontend_model(fe, 0, &mi);
    assert_true(mi.loaded);
    assert_string_equal(mi.chat_template, "chatml"); /* none in the file */
    inferd_frontend_model(fe, 1, &mi);
    assert_string_equal(mi.id, "l3");
    assert_string_equal(mi.chat_template, "llama-3"); /* detected at load */

    char out[1024], again[1024];
    uint32_t n = 0, n2 = 0;
    assert_int_equal(run(fe, &camel, "{\"prompt\":\"Once upon\",\"maxTokens\":8,\"temperature\":0}",
                         out, sizeof(out), &n, &e),
                     0);
    assert_int_equal(n, 8);
    /* The same request again gives the same text. */
    assert_int_equal(run(fe, &camel, "{\"prompt\":\"Once upon\",\"maxTokens\":8,\"temperature\":0}",
                         again, sizeof(again), &n2, &e),
                     0);
    assert_string_equal(out, again);
    uint64_t requests, tokens;
    inferd_frontend_counts(fe, &requests, &tokens);
    assert_int_equal(requests, 2);
    assert_int_equal(tokens, 16);
    assert_int_equal(run(fe, &chat,
                         "{\"model\":\"stories260K\",\"max_tokens\":4,\"temperature\":0,"
                         "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                         out, sizeof(out), &n, &e),
                     0);
    assert_int_equal(n, 4);

    /* Errors name the field as the door spells it. */
    assert_int_equal(
        run(fe, &camel, "{\"prompt\":\"x\",\"modelId\":\"nope\"}", out, sizeof(out), &n, &e),
        INFERD_E_MODEL_NOT_FOUND);
    assert_string_equal(e.param, "modelId");
    assert_string_equal(e.msg, "model 'nope' is not served here");
    char big[1200] = "{\"messages\":[{\"role\":\"user\",\"content\":\"";
    for (int i = 0; i < 100; i++)
        strcat(big, "once ");
    strcat(big, "\"}]}");
    assert_int_equal(run(fe, &chat, big, out, sizeof(out), &n, &e), INFERD_E_CONTEXT_LENGTH);
    assert_string_equal(e.param, "messages");
    assert_non_null(strstr(e.msg, "do not fit the context of 64"));
    assert_int_equal(run(fe, &camel, "{\"prompt\":[999999]}", out, sizeof(out), &n, &e),
                     INFERD_E_INVALID);
    assert_string_equal(e.param, "prompt");
    assert_int_equal(run(fe, &chat, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", out,
                         sizeof(out), &n, &e),
                     INFERD_E_INVALID);
    assert_string_equal(e.param, "messages");

    /* Unload, and a request loads the model again. */
    assert_int_equal(inferd_frontend_unload(fe, 1, &e), 0);
    inferd_frontend_model(fe, 1, &mi);
    assert_false(mi.loaded);
    assert_int_equal(run(fe, &camel, "{\"prompt\":\"a\",\"modelId\":\"l3\",\"maxTokens\":2}", out,
                         sizeof(out), &n, &e),
                     0);
    assert_int_equal(inferd_frontend_unload(fe, 1, &e), 0);
    assert_int_equal(inferd_frontend_unload(fe, 1, &e), 0); /* not loaded: nothing to do */

    inferd_frontend_drain(fe);
    assert_int_equal(inferd_frontend_state(fe), INFERD_FE_STOPPED);
    assert_int_equal(run(fe, &camel, "{\"prompt\":\"a\"}", out, sizeof(out), &n, &e),
                     INFERD_E_UNAVAILABLE);
    assert_int_equal(inferd_frontend_load(fe, 0, &e), INFERD_E_UNAVAILABLE);
    inferd_frontend_destroy(fe);
}

static json_t *section(void *ctx) { return json_string(ctx); }

static void test_frontend_options_and_status(void **state)
{
    (void)state;
    inferd_error e = {0};
    inferd_frontend *fe = make_fe("zephyr", &e);
    assert_non_null(fe);
    assert_int_equal(inferd_frontend_load(fe, 1, &e), 0);
    inferd_fe_model_info mi;
    inferd_frontend_model(fe, 1, &mi);
    assert_string_equal(mi.chat_template, "zephyr"); /* the option wins */
    assert_int_equal(inferd_frontend_find(fe, NULL, &e), 0);
    assert_int_equal(inferd_frontend_find(fe, "l3", &e), 1);
    assert_int_equal(inferd_frontend_request_capacity(fe), 2 * (2 + 64));

    assert_int_equal(inferd_frontend_set_status(fe, "a", section, "A"), 0);
    assert_int_equal(inferd_frontend_set_status(fe, "b", section, "B"), 0);
    assert_int_equal(inferd_frontend_set_status(fe, "a", section, "A2"), 0); /* replaced */
    json_t *o = json_object();
    inferd_frontend_status_sections(fe, o);
    assert_string_equal(json_string_value(json_object_get(o, "a")), "A2");
    assert_string_equal(json_string_value(json_object_get(o, "b")), "B");
    json_decref(o);
    assert_int_equal(inferd_frontend_set_status(fe, "a", NULL, NULL), 0);
    o = json_object();
    inferd_frontend_status_sections(fe, o);
    assert_null(json_object_get(o, "a"));
    json_decref(o);
    inferd_frontend_destroy(fe);

    assert_null(make_fe("nonsense", &e));
    assert_int_equal(e.code, INFERD_E_INVALID);
    assert_non_null(strstr(e.msg, "chat-template: 'nonsense' is not one of chatml"));

    inferd_frontend_opts o2 = inferd_frontend_opts_default();
    inferd_frontend *none = NULL;
    /* No model: a front end for built-in models only, with no default. */
    assert_int_equal(inferd_frontend_create(&o2, &none, &e), 0);
    assert_int_equal(inferd_frontend_n_models(none), 0);
    assert_int_equal(inferd_frontend_load_models(none, &e), 0);
    assert_int_equal(inferd_frontend_state(none), INFERD_FE_READY);
    assert_int_equal(inferd_frontend_find(none, NULL, &e), INFERD_E_MODEL_NOT_FOUND);
    assert_string_equal(e.msg, "no language model is served here");
    assert_string_equal(e.param, "model");
    assert_int_equal(inferd_frontend_find(none, "stories", &e), INFERD_E_MODEL_NOT_FOUND);
    inferd_frontend_destroy(none);
    none = NULL;
    o2.n_models = 2;
    o2.models[0].path = g_stories;
    o2.models[1].path = g_stories;
    assert_int_equal(inferd_frontend_create(&o2, &none, &e), INFERD_E_INVALID);
    assert_non_null(strstr(e.msg, "is given twice"));
    o2.n_models = 1;
    o2.models[0].path = "/nonexistent/x.gguf";
    assert_int_equal(inferd_frontend_create(&o2, &none, &e), INFERD_E_IO);
    assert_non_null(strstr(e.msg, "model 'x': cannot read /nonexistent/x.gguf"));
    assert_null(none);

    /* Creation fails cleanly at every allocation. */
    o2.models[0].path = g_stories;
    int ok = 0;
    for (long k = 1; k < 200 && !ok; k++) {
        inferd_alloc_fail_after(k);
        int rc = inferd_frontend_create(&o2, &none, &e);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            inferd_frontend_destroy(none);
            ok = 1;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
        }
    }
    assert_true(ok);
}

int main(void)
{
    inferd_log_set_level(INFERD_LOG_WARN);
    snprintf(g_stories, sizeof(g_stories), "%s/models/stories260K.gguf", INFERD_FIXTURES);
    write_llama3_copy();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields_spelling_and_defaults),
        cmocka_unit_test(test_fields_errors),
        cmocka_unit_test(test_fields_messages_and_ids),
        cmocka_unit_test(test_fields_alloc_failures),
        cmocka_unit_test(test_parse_json_budget),
        cmocka_unit_test(test_error_faces),
        cmocka_unit_test(test_frontend_requests),
        cmocka_unit_test(test_frontend_options_and_status),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(g_llama3);
    rmdir(g_dir);
    return rc;
}
