/* Completions and chat through the client (client.h): the request's JSON,
 * the blocking answer, and the SSE stream read as it comes. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "inferd/alloc.h"

#define LINE_MAX_BYTES ((size_t)1 << 24) /* one SSE line */

inferd_client_gen inferd_client_gen_default(void)
{
    inferd_client_gen g;
    memset(&g, 0, sizeof(g));
    g.max_tokens = -1;
    g.temperature = -1.0;
    g.top_p = -1.0;
    g.min_p = -1.0;
    g.top_k = -1;
    return g;
}

void inferd_client_result_free(inferd_client_result *r)
{
    if (!r)
        return;
    inferd_free(r->text);
    memset(r, 0, sizeof(*r));
}

static json_t *request_json(const inferd_client_gen *g, bool stream)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = 0;
    if (g->model)
        bad |= json_object_set_new(o, "model", json_string(g->model));
    if (g->messages) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < g->n_messages; i++)
            bad |= json_array_append_new(a, json_pack("{s:s,s:s}", "role", g->messages[i].role,
                                                      "content", g->messages[i].content));
        bad |= json_object_set_new(o, "messages", a);
    } else {
        bad |= json_object_set_new(o, "prompt", json_string(g->prompt ? g->prompt : ""));
    }
    if (g->max_tokens >= 0)
        bad |= json_object_set_new(o, "max_tokens", json_integer(g->max_tokens));
    if (g->temperature >= 0)
        bad |= json_object_set_new(o, "temperature", json_real(g->temperature));
    if (g->top_p >= 0)
        bad |= json_object_set_new(o, "top_p", json_real(g->top_p));
    if (g->min_p >= 0)
        bad |= json_object_set_new(o, "min_p", json_real(g->min_p));
    if (g->top_k >= 0)
        bad |= json_object_set_new(o, "top_k", json_integer(g->top_k));
    if (g->has_seed)
        bad |= json_object_set_new(o, "seed", json_integer((json_int_t)g->seed));
    if (g->n_stop > 0) {
        json_t *a = json_array();
        for (int i = 0; a && i < g->n_stop && i < INFERD_CLIENT_STOP_MAX; i++)
            bad |= json_array_append_new(a, json_string(g->stop[i]));
        bad |= json_object_set_new(o, "stop", a);
    }
    if (g->ignore_eos)
        bad |= json_object_set_new(o, "ignore_eos", json_true());
    if (g->timeout_ms > 0)
        bad |= json_object_set_new(o, "timeout_ms", json_integer(g->timeout_ms));
    if (stream) {
        bad |= json_object_set_new(o, "stream", json_true());
        bad |= json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The text of a choice: a completion's "text", a chat message's or
 * delta's "content". */
static const char *choice_text(json_t *ch, size_t *len)
{
    json_t *t = json_object_get(ch, "text");
    if (!json_is_string(t))
        t = json_object_get(json_object_get(ch, "message"), "content");
    if (!json_is_string(t))
        t = json_object_get(json_object_get(ch, "delta"), "content");
    *len = json_is_string(t) ? json_string_length(t) : 0;
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static void read_usage(json_t *j, inferd_client_result *out)
{
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        out->prompt_tokens = (uint32_t)json_integer_value(json_object_get(u, "prompt_tokens"));
        out->completion_tokens =
            (uint32_t)json_integer_value(json_object_get(u, "completion_tokens"));
    }
}

static void read_finish(json_t *ch, inferd_client_result *out)
{
    const char *f = json_string_value(json_object_get(ch, "finish_reason"));
    if (f)
        snprintf(out->finish_reason, sizeof(out->finish_reason), "%s", f);
}

/* ---- streaming ---- */

typedef struct sse {
    client_call *k;
    inferd_client_token_fn on_token;
    void *ctx;
    inferd_client_result *out;
    inferd_buf line;
    inferd_buf text;
    bool done; /* [DONE] seen */
} sse;

/* Stop the stream with @p code and a message (k->sink_err). */
static int sse_fail(sse *s, int code, const char *msg, const char *param)
{
    s->k->sink_failed = true;
    inferd_fail_param(&s->k->sink_err, code, param, "%s", msg);
    return 1;
}

static int sse_event(sse *s, const char *data, size_t n)
{
    if (n == 6 && memcmp(data, "[DONE]", 6) == 0) {
        s->done = true;
        return 0;
    }
    json_t *j = json_loadb(data, n, JSON_ALLOW_NUL, NULL);
    if (!j)
        return sse_fail(s, INFERD_E_TRANSPORT, "a malformed event in the worker's stream", NULL);
    json_t *e = json_object_get(j, "error");
    if (json_is_object(e)) {
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *msg = json_string_value(json_object_get(e, "message"));
        int rc = sse_fail(s, code ? inferd_error_from_http(0, code) : INFERD_E_INTERNAL,
                          msg ? msg : "an error in the stream",
                          json_string_value(json_object_get(e, "param")));
        json_decref(j);
        return rc;
    }
    read_usage(j, s->out);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    int rc = 0;
    if (ch) {
        size_t len = 0;
        const char *t = choice_text(ch, &len);
        read_finish(ch, s->out);
        if (t && len > 0) {
            if (inferd_buf_add(&s->text, t, len) < 0)
                rc = sse_fail(s, INFERD_E_NOMEM, "client: no memory for the text", NULL);
            else if (s->on_token && s->on_token(s->ctx, s->out->n_pieces, t, len) != 0) {
                s->k->cancelled = true;
                rc = 1;
            }
            s->out->n_pieces++;
        }
    }
    json_decref(j);
    return rc;
}

static int sse_sink(void *ctx, const char *p, size_t n)
{
    sse *s = ctx;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (inferd_buf_add(&s->line, p + i, 1) < 0)
                return sse_fail(s, INFERD_E_TRANSPORT, "a line of the stream is too long", NULL);
            continue;
        }
        size_t len = s->line.len;
        const char *l = s->line.p ? s->line.p : "";
        if (len && l[len - 1] == '\r')
            len--;
        int rc = 0;
        if (len >= 5 && memcmp(l, "data:", 5) == 0) {
            size_t at = 5;
            if (at < len && l[at] == ' ')
                at++;
            rc = sse_event(s, l + at, len - at);
        } /* comments (": keep-alive"), blank lines and other fields: nothing */
        inferd_buf_reset(&s->line);
        if (rc)
            return rc;
    }
    return 0;
}

int inferd_client_complete(inferd_client *c, const inferd_client_gen *g,
                           inferd_client_token_fn on_token, void *ctx, inferd_client_result *out,
                           inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    const bool chat = g->messages != NULL;
    json_t *req = request_json(g, on_token != NULL);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory for the request");
    client_call k;
    memset(&k, 0, sizeof(k));
    k.method = "POST";
    k.path = chat ? "/v1/chat/completions" : "/v1/completions";
    k.content_type = "application/json";
    k.req = body;
    k.req_len = strlen(body);
    k.timeout_ms = g->client_timeout_ms;
    sse s = {.k = &k, .on_token = on_token, .ctx = ctx, .out = out};
    s.line = INFERD_BUF_INIT(LINE_MAX_BYTES);
    s.text = INFERD_BUF_INIT((size_t)1 << 30);
    if (on_token) {
        k.sink = sse_sink;
        k.sink_ctx = &s;
    }
    int rc = inferd__client_call(c, &k, err);
    inferd_free(body);
    if (on_token) {
        if (rc == 0 && !s.done)
            rc = inferd_fail(err, INFERD_E_TRANSPORT,
                             "the worker's stream ended before [DONE] (%u pieces)", out->n_pieces);
        if (g->has_seed)
            out->seed = g->seed;
        out->text = s.text.p ? s.text.p : inferd_strdup("");
        out->text_len = s.text.len;
        s.text.p = NULL;
    } else if (rc == 0) {
        json_error_t je;
        json_t *j = json_loadb(k.body.p ? k.body.p : "", k.body.len, JSON_ALLOW_NUL, &je);
        json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
        size_t len = 0;
        const char *t = ch ? choice_text(ch, &len) : NULL;
        if (!t) {
            rc = inferd_fail(err, INFERD_E_TRANSPORT, "a malformed answer from the worker: %s",
                             j ? "no choices[0] text" : je.text);
        } else {
            out->text = inferd_strndup(t, len);
            out->text_len = len;
            read_finish(ch, out);
            read_usage(j, out);
            out->seed = (uint64_t)json_integer_value(json_object_get(j, "seed"));
            if (!out->text)
                rc = inferd_fail(err, INFERD_E_NOMEM, "client: no memory for the text");
        }
        json_decref(j);
    }
    inferd_buf_free(&s.line);
    inferd_buf_free(&s.text);
    inferd__client_call_fini(&k);
    return rc;
}
