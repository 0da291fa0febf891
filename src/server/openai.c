/* OpenAI-compatible endpoints: GET /v1/models, POST /v1/completions and
 * POST /v1/chat/completions (JSON or SSE). */
#include "server_internal.h"

#include "doors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"

static json_t *model_object(const inferd_fe_model_info *mi)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", mi->id, "object", "model", "created",
                     (json_int_t)mi->created_s, "owned_by", "inferd");
}

void inferd__openai_models(http_conn *c, const char *one_id)
{
    inferd_frontend *fe = c->srv->fe;
    inferd_fe_model_info mi;
    if (one_id) {
        int i = inferd__server_find_model(c, one_id);
        if (i >= 0) {
            inferd_frontend_model(fe, (size_t)i, &mi);
            inferd__http_json(c, 200, model_object(&mi));
        }
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < inferd_frontend_n_models(fe); i++) {
        inferd_frontend_model(fe, i, &mi);
        json_array_append_new(data, model_object(&mi));
    }
    inferd__http_json(c, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

/* ---- shared pieces ---- */

static json_t *usage_json(const gen *g)
{
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", (int)g->done.n_prompt, "completion_tokens",
                     (int)g->done.n_gen, "total_tokens", (int)(g->done.n_prompt + g->done.n_gen));
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
            size_t m = inferd__gen_token_text(g, t->top_ids[k], piece, sizeof(piece));
            json_array_append_new(top, json_pack("{s:o,s:f,s:o}", "token", token_string(piece, m),
                                                 "logprob", (double)t->top_lp[k], "bytes",
                                                 bytes_json(piece, m)));
        }
        size_t n = inferd__gen_token_text(g, t->id, piece, sizeof(piece));
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
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    char piece[256];
    for (size_t i = from; i < to; i++) {
        const gen_token *t = &g->toks[i];
        size_t n = inferd__gen_token_text(g, t->id, piece, sizeof(piece));
        json_array_append_new(tokens, token_string(piece, n));
        json_array_append_new(lps, json_real(t->logprob));
        json_t *top = json_object();
        for (uint32_t k = 0; k < t->n_top; k++) {
            size_t m = inferd__gen_token_text(g, t->top_ids[k], piece, sizeof(piece));
            json_t *key = token_string(piece, m);
            if (key && !json_object_get(top, json_string_value(key)))
                json_object_set_new(top, json_string_value(key), json_real(t->top_lp[k]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer((json_int_t)t->text_offset));
    }
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offs);
}

/* ---- streaming formats ---- */

static void sse(gen *g, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) {
        g->out.err = INFERD_E_NOMEM;
        return;
    }
    inferd_buf_add(&g->out, "data: ", 6);
    inferd_buf_add(&g->out, s, strlen(s));
    inferd_buf_add(&g->out, "\n\n", 2);
    inferd_free(s);
}

static void sse_error_and_end(gen *g)
{
    sse(g, inferd_fe_error_openai(&g->err));
    inferd_buf_add(&g->out, "data: [DONE]\n\n", 14);
}

static json_t *chunk_head(const gen *g, const char *object)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", g->id, "object", object, "created",
                     (json_int_t)g->created, "model", inferd__gen_model(g));
}

static void completion_chunk(gen *g, const char *text, size_t len, json_t *finish, size_t from)
{
    json_t *o = chunk_head(g, "text_completion");
    json_t *lp = g->logprobs ? completion_logprobs(g, from, g->n_toks) : json_null();
    json_object_set_new(o, "choices",
                        json_pack("[{s:i,s:s%,s:o,s:o}]", "index", 0, "text", text, len, "logprobs",
                                  lp, "finish_reason", finish));
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
        sse_error_and_end(g);
        return;
    }
    completion_chunk(g, ev->text, ev->text_len, json_string(inferd__gen_finish_name(ev->finish)),
                     g->n_toks);
    if (g->include_usage) {
        json_t *o = chunk_head(g, "text_completion");
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", usage_json(g));
        sse(g, o);
    }
    inferd_buf_add(&g->out, "data: [DONE]\n\n", 14);
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
        sse_error_and_end(g);
        return;
    }
    if (ev->text_len > 0)
        chat_chunk(g, json_pack("{s:s%}", "content", ev->text, ev->text_len), json_null(), NULL);
    chat_chunk(g, json_object(), json_string(inferd__gen_finish_name(ev->finish)), NULL);
    if (g->include_usage) {
        json_t *o = chunk_head(g, "chat.completion.chunk");
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", usage_json(g));
        sse(g, o);
    }
    inferd_buf_add(&g->out, "data: [DONE]\n\n", 14);
}

/* ---- running a request ---- */

static void run(http_conn *c, const inferd_fe_door *door, json_t *body, gen_kind kind,
                const char *id_prefix, gen_fmt_fn fmt, gen_build_fn build)
{
    inferd_fe_input in;
    inferd_error e = {0};
    if (inferd_fe_read(door, body, &in, &e) < 0) {
        inferd__http_fail(c, &e);
        return;
    }
    gen *g = inferd__gen_start(c, &in, kind);
    inferd_fe_input_free(&in); /* the prompt was copied by submit */
    if (!g)
        return;
    static atomic_uint_fast64_t counter;
    uint64_t n = atomic_fetch_add(&counter, 1);
    snprintf(g->id, sizeof(g->id), "%s-%llx%06llx", id_prefix, (unsigned long long)g->created,
             (unsigned long long)(n & 0xffffff));
    if (g->stream)
        inferd__gen_stream(g, fmt);
    else
        inferd__gen_respond(g, build, NULL);
}

static json_t *build_completion(gen *g, json_t *echo)
{
    (void)echo;
    json_t *o = chunk_head(g, "text_completion");
    json_t *lp = g->logprobs ? completion_logprobs(g, 0, g->n_toks) : json_null();
    json_object_set_new(o, "choices",
                        json_pack("[{s:i,s:s%,s:o,s:s}]", "index", 0, "text",
                                  g->text.p ? g->text.p : "", g->text.len, "logprobs", lp,
                                  "finish_reason", inferd__gen_finish_name(g->done.finish)));
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "seed", json_integer((json_int_t)g->done.seed));
    return o;
}

static json_t *build_chat(gen *g, json_t *echo)
{
    (void)echo;
    json_t *o = chunk_head(g, "chat.completion");
    json_t *lp = g->logprobs ? chat_logprobs(g, 0, g->n_toks) : json_null();
    json_object_set_new(o, "choices",
                        json_pack("[{s:i,s:{s:s,s:s%},s:o,s:s}]", "index", 0, "message", "role",
                                  "assistant", "content", g->text.p ? g->text.p : "", g->text.len,
                                  "logprobs", lp, "finish_reason",
                                  inferd__gen_finish_name(g->done.finish)));
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "seed", json_integer((json_int_t)g->done.seed));
    return o;
}

/* ---- the two routes ---- */

void inferd__openai_completions(http_conn *c, json_t *body)
{
    run(c, &inferd__door_completions, body, GEN_COMPLETION, "cmpl", fmt_completion,
        build_completion);
}

void inferd__openai_chat(http_conn *c, json_t *body)
{
    run(c, &inferd__door_chat, body, GEN_CHAT, "chatcmpl", fmt_chat, build_chat);
}
