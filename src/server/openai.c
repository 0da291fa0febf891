/* OpenAI-compatible endpoints: GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions (JSON or SSE). */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"

#define COMPLETION_DEFAULT_MAX_TOKENS 16  /* OpenAI's default for completions */
#define CHAT_DEFAULT_MAX_TOKENS (-1)      /* chat: until the context is full */

static json_t *model_object(const served *sm)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", sm->id, "object", "model", "created",
                     (json_int_t)sm->created_s, "owned_by", "inferd");
}

void openai_models(http_conn *c, const char *one_id)
{
    inferd_server *s = c->srv;
    if (one_id) {
        served *sm = server_find_model(c, one_id);
        if (sm)
            http_json(c, 200, model_object(sm));
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < s->n_models; i++)
        json_array_append_new(data, model_object(&s->models[i]));
    http_json(c, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* ---- shared pieces ---- */

static void make_id(gen *g, const char *prefix)
{
    static atomic_uint_fast64_t counter;
    uint64_t n = atomic_fetch_add(&counter, 1);
    snprintf(g->id, sizeof(g->id), "%s-%llx%06llx", prefix, (unsigned long long)g->created,
             (unsigned long long)(n & 0xffffff));
}

static json_t *usage_json(const gen *g)
{
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", (int)g->done.n_prompt,
                     "completion_tokens", (int)g->done.n_gen, "total_tokens",
                     (int)(g->done.n_prompt + g->done.n_gen));
}

static json_t *bytes_json(const char *p, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

/* A token's text as a JSON string; bytes that are not valid UTF-8 on their
 * own (part of a character) are written as U+FFFD. */
static json_t *token_string(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s)
        return s;
    char buf[256];
    size_t m = 0;
    for (size_t i = 0; i < n && m + 3 < sizeof(buf); i++) {
        unsigned char b = (unsigned char)p[i];
        if (b < 0x80) {
            buf[m++] = (char)b;
        } else {
            buf[m++] = (char)0xef;
            buf[m++] = (char)0xbf;
            buf[m++] = (char)0xbd;
        }
    }
    return json_stringn(buf, m);
}

/* Chat logprobs of tokens [from, to): {"content": [{token, logprob, bytes,
 * top_logprobs: [...]}, ...]}. */
static json_t *chat_logprobs(const gen *g, size_t from, size_t to)
{
    json_t *content = json_array();
    char piece[256];
    for (size_t i = from; i < to; i++) {
        const gen_token *t = &g->toks[i];
        json_t *top = json_array();
        for (uint32_t k = 0; k < t->n_top; k++) {
            size_t m = gen_token_text(g, t->top_ids[k], piece, sizeof(piece));
            json_array_append_new(top, json_pack("{s:o,s:f,s:o}", "token", token_string(piece, m),
                                                 "logprob", (double)t->top_lp[k], "bytes",
                                                 bytes_json(piece, m)));
        }
        size_t n = gen_token_text(g, t->id, piece, sizeof(piece));
        json_array_append_new(content,
                              json_pack("{s:o,s:f,s:o,s:o}", "token", token_string(piece, n),
                                        "logprob", (double)t->logprob, "bytes",
                                        bytes_json(piece, n), "top_logprobs", top));
    }
    return json_pack("{s:o}", "content", content);
}

/* Completion logprobs of tokens [from, to): {tokens, token_logprobs,
 * top_logprobs: [{text: lp}], text_offset}. */
static json_t *completion_logprobs(const gen *g, size_t from, size_t to)
{
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(),
           *offs = json_array();
    char piece[256];
    for (size_t i = from; i < to; i++) {
        const gen_token *t = &g->toks[i];
        size_t n = gen_token_text(g, t->id, piece, sizeof(piece));
        json_array_append_new(tokens, token_string(piece, n));
        json_array_append_new(lps, json_real(t->logprob));
        json_t *top = json_object();
        for (uint32_t k = 0; k < t->n_top; k++) {
            size_t m = gen_token_text(g, t->top_ids[k], piece, sizeof(piece));
            json_t *key = token_string(piece, m);
            if (key && !json_object_get(top, json_string_value(key)))
                json_object_set_new(top, json_string_value(key), json_real(t->top_lp[k]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer((json_int_t)t->text_offset));
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offs);
}

/* ---- streaming formats ---- */

static void sse(gen *g, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) {
        g->out.failed = true;
        return;
    }
    sbuf_add(&g->out, "data: ", 6);
    sbuf_add(&g->out, s, strlen(s));
    sbuf_add(&g->out, "\n\n", 2);
    free(s);
}

static void sse_error_and_end(gen *g, const inferd_event *ev)
{
    const char *code = ev->code == INFERD_E_TIMEOUT ? "timeout" : inferd_error_wire_code(ev->code);
    unsigned status = (unsigned)inferd_error_http_status(ev->code);
    sse(g, json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", g->err_msg, "type",
                     server_openai_type(status), "param", "code", code));
    sbuf_add(&g->out, "data: [DONE]\n\n", 14);
}

static json_t *chunk_head(const gen *g, const char *object)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", g->id, "object", object, "created",
                     (json_int_t)g->created, "model", g->sm->id);
}

static void completion_chunk(gen *g, const char *text, size_t len, json_t *finish, size_t from)
{
    json_t *o = chunk_head(g, "text_completion");
    json_t *lp = g->logprobs ? completion_logprobs(g, from, g->n_toks) : json_null();
    json_object_set_new(o, "choices",
                        json_pack("[{s:i,s:s%,s:o,s:o}]", "index", 0, "text", text, len,
                                  "logprobs", lp, "finish_reason", finish));
    sse(g, o);
}

static void fmt_completion(gen *g, const inferd_event *ev)
{
    if (ev->type == INFERD_EVENT_TOKEN) {
        if (ev->text_len > 0 || g->logprobs)
            completion_chunk(g, ev->text, ev->text_len, json_null(), g->n_toks - 1);
        return;
    }
    if (ev->type == INFERD_EVENT_ERROR) {
        sse_error_and_end(g, ev);
        return;
    }
    completion_chunk(g, ev->text, ev->text_len, json_string(gen_finish_name(ev->finish)),
                     g->n_toks);
    if (g->include_usage) {
        json_t *o = chunk_head(g, "text_completion");
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", usage_json(g));
        sse(g, o);
    }
    sbuf_add(&g->out, "data: [DONE]\n\n", 14);
}

static void chat_chunk(gen *g, json_t *delta, json_t *finish, json_t *logprobs)
{
    json_t *o = chunk_head(g, "chat.completion.chunk");
    json_object_set_new(o, "choices",
                        json_pack("[{s:i,s:o,s:o,s:o}]", "index", 0, "delta", delta, "logprobs",
                                  logprobs ? logprobs : json_null(), "finish_reason", finish));
    sse(g, o);
}

static void fmt_chat(gen *g, const inferd_event *ev)
{
    if (!g->sent_head) {
        g->sent_head = true;
        chat_chunk(g, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), json_null(),
                   NULL);
    }
    if (ev->type == INFERD_EVENT_TOKEN) {
        if (ev->text_len > 0 || g->logprobs)
            chat_chunk(g, json_pack("{s:s%}", "content", ev->text, ev->text_len), json_null(),
                       g->logprobs ? chat_logprobs(g, g->n_toks - 1, g->n_toks) : NULL);
        return;
    }
    if (ev->type == INFERD_EVENT_ERROR) {
        sse_error_and_end(g, ev);
        return;
    }
    if (ev->text_len > 0)
        chat_chunk(g, json_pack("{s:s%}", "content", ev->text, ev->text_len), json_null(), NULL);
    chat_chunk(g, json_object(), json_string(gen_finish_name(ev->finish)), NULL);
    if (g->include_usage) {
        json_t *o = chunk_head(g, "chat.completion.chunk");
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", usage_json(g));
        sse(g, o);
    }
    sbuf_add(&g->out, "data: [DONE]\n\n", 14);
}

/* ---- running a request ---- */

static void run(gen *g, const gen_opts *go, gen_fmt_fn fmt, gen_build_fn build)
{
    g->stream = go->stream;
    g->include_usage = go->include_usage;
    if (go->stream)
        gen_stream(g, fmt);
    else
        gen_respond(g, build, NULL);
}

static json_t *build_completion(gen *g, void *ctx)
{
    (void)ctx;
    json_t *o = chunk_head(g, "text_completion");
    json_t *lp = g->logprobs ? completion_logprobs(g, 0, g->n_toks) : json_null();
    json_object_set_new(o, "choices",
                        json_pack("[{s:i,s:s%,s:o,s:s}]", "index", 0, "text", g->text.p ? g->text.p : "",
                                  g->text.len, "logprobs", lp, "finish_reason",
                                  gen_finish_name(g->done.finish)));
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "seed", json_integer((json_int_t)g->done.seed));
    return o;
}

static json_t *build_chat(gen *g, void *ctx)
{
    (void)ctx;
    json_t *o = chunk_head(g, "chat.completion");
    json_t *lp = g->logprobs ? chat_logprobs(g, 0, g->n_toks) : json_null();
    json_object_set_new(
        o, "choices",
        json_pack("[{s:i,s:{s:s,s:s%},s:o,s:s}]", "index", 0, "message", "role", "assistant",
                  "content", g->text.p ? g->text.p : "", g->text.len, "logprobs", lp,
                  "finish_reason", gen_finish_name(g->done.finish)));
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "seed", json_integer((json_int_t)g->done.seed));
    return o;
}

/* The "model" field: absent or null is the default model. */
static served *request_model(http_conn *c, json_t *body)
{
    json_t *m = json_object_get(body, "model");
    if (m && !json_is_null(m) && !json_is_string(m)) {
        http_error(c, 400, "invalid_type", "model", "model: expected a string");
        return NULL;
    }
    return server_find_model(c, m && json_is_string(m) ? json_string_value(m) : NULL);
}

/* ---- /v1/completions ---- */

void openai_completions(http_conn *c, json_t *body)
{
    served *sm = request_model(c, body);
    if (!sm)
        return;
    inferd_request_params p = inferd_request_params_default();
    gen_opts go;
    req_err re;
    if (params_from_json(&re, body, false, COMPLETION_DEFAULT_MAX_TOKENS, &p, &go) < 0) {
        http_req_error(c, &re);
        return;
    }

    /* The prompt: a string, or token ids; an array of one of those. */
    json_t *pr = json_object_get(body, "prompt");
    if (!pr || json_is_null(pr)) {
        http_error(c, 400, "missing_required_parameter", "prompt", "prompt: it is required");
        return;
    }
    if (json_is_array(pr) && json_array_size(pr) > 0 &&
        (json_is_string(json_array_get(pr, 0)) || json_is_array(json_array_get(pr, 0)))) {
        if (json_array_size(pr) != 1) {
            http_error(c, 400, "invalid_value", "prompt",
                       "prompt: only one prompt per request is supported (got %zu)",
                       json_array_size(pr));
            return;
        }
        pr = json_array_get(pr, 0);
    }
    int32_t *ids = NULL;
    if (json_is_string(pr)) {
        p.text = json_string_value(pr);
        p.text_len = json_string_length(pr);
        if (p.text_len == 0) {
            http_error(c, 400, "invalid_value", "prompt", "prompt: it is empty");
            return;
        }
    } else if (json_is_array(pr)) {
        size_t n = json_array_size(pr), i;
        json_t *v;
        if (n == 0) {
            http_error(c, 400, "invalid_value", "prompt", "prompt: it is empty");
            return;
        }
        ids = malloc(n * sizeof(int32_t));
        if (!ids) {
            http_error(c, 500, "internal", NULL, "no memory for the prompt");
            return;
        }
        json_array_foreach(pr, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > INT32_MAX) {
                http_error(c, 400, "invalid_type", "prompt",
                           "prompt[%zu]: expected a token id (integer >= 0)", i);
                free(ids);
                return;
            }
            ids[i] = (int32_t)json_integer_value(v);
        }
        p.tokens = ids;
        p.n_tokens = n;
    } else {
        http_error(c, 400, "invalid_type", "prompt",
                   "prompt: expected a string, an array of token ids, or an array of one "
                   "of those");
        return;
    }
    gen *g = gen_start(c, sm, &p, GEN_COMPLETION);
    free(ids); /* copied by submit */
    if (!g)
        return;
    make_id(g, "cmpl");
    run(g, &go, fmt_completion, build_completion);
}

/* ---- /v1/chat/completions ---- */

void openai_chat(http_conn *c, json_t *body)
{
    served *sm = request_model(c, body);
    if (!sm)
        return;
    inferd_request_params p = inferd_request_params_default();
    gen_opts go;
    req_err re;
    json_t *msgs = json_object_get(body, "messages");
    if (params_from_json(&re, body, true, CHAT_DEFAULT_MAX_TOKENS, &p, &go) < 0 ||
        param_messages(&re, msgs) < 0) {
        http_req_error(c, &re);
        return;
    }
    /* The template comes from the model: take a handle (loading it if
     * needed) to read it; gen_start takes its own. */
    inferd_registry_handle *h = server_request_model(c, sm);
    if (!h)
        return;
    inferd_chat_template t = server_model_template(c->srv, sm, inferd_registry_handle_model(h));
    size_t len = 0;
    char *prompt = param_render_messages(&re, msgs, t, &len);
    if (!prompt) {
        http_req_error(c, &re);
        inferd_registry_release(c->srv->reg, h);
        return;
    }
    p.text = prompt;
    p.text_len = len;
    p.add_special = true;
    p.parse_special = true;
    gen *g = gen_start(c, sm, &p, GEN_CHAT);
    inferd_free(prompt);
    inferd_registry_release(c->srv->reg, h);
    if (!g)
        return;
    make_id(g, "chatcmpl");
    run(g, &go, fmt_chat, build_chat);
}
