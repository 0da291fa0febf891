/* One generation request on behalf of an HTTP request: a registry handle
 * for its model, the scheduler request, and its events read as they come
 * on the HTTP server's threads. While nothing is ready the connection is
 * parked (suspended): the scheduler's on_event wakes it, and the guard
 * wakes it when the client hangs up (which cancels the request) or a
 * stream is due a keep-alive ping. No thread waits for a request. */
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/log.h"

#define COMP "http"

const char *inferd__gen_finish_name(inferd_finish f)
{
    return f == INFERD_FINISH_LENGTH ? "length" : "stop";
}

static void gen_wake(void *ctx)
{
    gen *g = ctx;
    inferd__waker_wake(&g->wk);
}

gen *inferd__gen_start(http_conn *c, const inferd_fe_input *in, gen_kind kind)
{
    inferd_server *s = c->srv;
    gen *g = inferd_calloc(1, sizeof(*g));
    if (!g) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the request");
        return NULL;
    }
    g->c = c;
    g->srv = s;
    g->kind = kind;
    inferd__waker_init(&g->wk, s, c->hc);
    g->text = INFERD_BUF_INIT(SERVER_TEXT_MAX);
    g->ids = INFERD_BUF_INIT(SERVER_TEXT_MAX);
    g->out = INFERD_BUF_INIT(SERVER_CHUNK_MAX);
    g->t_start_ns = c->t_start_ns;
    g->created = (int64_t)time(NULL);
    atomic_init(&g->client_left, false);
    atomic_init(&g->ping_due, false);
    atomic_init(&g->last_out_ns, inferd_now_ns());
    g->sock = httpd_conn_fd(c->hc);
    g->logprobs = in->params.logprobs || in->params.top_logprobs > 0;
    g->top_logprobs = in->params.top_logprobs;
    g->stream = in->stream;
    g->include_usage = in->include_usage;
    inferd_error e = {0};
    if (inferd_fe_submit(s->fe, in, gen_wake, g, &g->fr, &e) < 0) {
        inferd__http_fail(c, &e);
        inferd__gen_free(g);
        return NULL;
    }
    inferd__guard_watch(s, g);
    return g;
}

/* Record @p ev in g: text, logprobs, the terminal event. */
static void record(gen *g, const inferd_event *ev)
{
    if (ev->type == INFERD_EVENT_TOKEN) {
        if (g->logprobs) {
            if (g->n_toks == g->cap_toks) {
                size_t cap = g->cap_toks ? 2 * g->cap_toks : 16;
                gen_token *t = inferd_realloc(g->toks, cap * sizeof(*t));
                if (!t) {
                    g->out_of_memory = true;
                    return;
                }
                g->toks = t;
                g->cap_toks = cap;
            }
            gen_token *t = &g->toks[g->n_toks++];
            t->id = ev->token;
            t->logprob = ev->logprob;
            t->n_top = ev->n_top;
            memcpy(t->top_ids, ev->top_ids, ev->n_top * sizeof(int32_t));
            memcpy(t->top_lp, ev->top_logprobs, ev->n_top * sizeof(float));
            t->text_offset = g->text.len;
        }
        inferd_buf_add(&g->text, ev->text, ev->text_len);
        if (g->want_ids)
            inferd_buf_add(&g->ids, &ev->token, sizeof(ev->token));
        return;
    }
    g->done = *ev;
    g->done.text = NULL;
    g->done.message = NULL;
    g->done.param = NULL;
    g->ended = true;
    if (ev->type == INFERD_EVENT_DONE)
        inferd_buf_add(&g->text, ev->text, ev->text_len);
    else
        inferd_fe_event_error(g->fr, ev, &g->err);
}

/* Read what g's request has ready into g (and, streaming, formatted into
 * g->out), without waiting: true once the terminal event was read. */
static bool read_ready(gen *g)
{
    inferd_event ev;
    while (!g->ended) {
        int rc = inferd_fe_request_next(g->fr, &ev, 0);
        if (rc == INFERD_E_NOT_FOUND) /* cannot happen: the terminal event sets ended */
            g->ended = true;
        if (rc != 0)
            break;
        record(g, &ev);
        if (g->fmt && !atomic_load(&g->client_left))
            g->fmt(g, &ev);
        if (g->fmt && g->out.len > 0) /* a stream sends as it goes */
            break;
    }
    return g->ended;
}

void inferd__gen_respond(gen *g, gen_build_fn build, json_t *echo)
{
    http_conn *c = g->c;
    g->build = build;
    g->echo = json_incref(echo);
    c->g = g; /* the dispatcher goes on to ST_GEN */
}

void inferd__gen_answer(gen *g, gen_answer_fn fn, void *ctx, void (*ctx_free)(void *))
{
    g->answer = fn;
    g->answer_ctx = ctx;
    g->answer_free = ctx_free;
    g->c->g = g;
}

bool inferd__gen_pump(http_conn *c)
{
    gen *g = c->g;
    while (!read_ready(g)) {
        if (inferd__waker_sleep(&g->wk))
            return false;
    }
    if (atomic_load(&g->client_left)) {
        c->close = true; /* the client left: no response */
    } else if (g->done.type == INFERD_EVENT_ERROR) {
        inferd__http_fail(c, &g->err);
    } else if (g->out_of_memory || g->text.err || g->ids.err) {
        const int e = g->text.err ? g->text.err : g->ids.err;
        inferd__http_error(c, e == INFERD_E_RANGE ? INFERD_E_TOO_LARGE : INFERD_E_NOMEM, NULL,
                           e == INFERD_E_RANGE ? "the response is over %zu bytes"
                                               : "no memory for the response (%zu bytes)",
                           (size_t)SERVER_TEXT_MAX);
    } else {
        if (g->answer)
            g->answer(g, c, g->answer_ctx);
        else
            inferd__http_json(c, 200, g->build(g, g->echo));
        /* HTTP and JSON time: the request's time less the scheduler's. */
        double http_s = (double)(inferd_now_ns() - g->t_start_ns) / 1e9;
        inferd__server_count_overhead(g->srv, http_s - g->done.total_ms / 1e3);
    }
    c->g = NULL;
    inferd__gen_free(g);
    return true;
}

/* Let go of g's request and free g, now. */
void inferd__gen_release(gen *g)
{
    inferd_fe_request_release(g->fr); /* waits for the last on_event */
    inferd__waker_destroy(&g->wk);
    json_decref(g->echo);
    if (g->answer_free)
        g->answer_free(g->answer_ctx);
    inferd_buf_free(&g->text);
    inferd_buf_free(&g->ids);
    inferd_buf_free(&g->out);
    inferd_free(g->toks);
    inferd_free(g);
}

void inferd__gen_free(gen *g)
{
    if (!g)
        return;
    inferd__waker_detach(&g->wk);
    inferd__guard_unwatch(g->srv, g);
    if (g->ended || !g->fr) {
        inferd__gen_release(g);
        return;
    }
    /* Cancelled while it runs: its release waits for the scheduler's next
     * step, which is not for an HTTP thread to wait for. */
    inferd_fe_request_cancel(g->fr);
    inferd__job_release(g->srv, g);
}

const char *inferd__gen_model(const gen *g) { return inferd_fe_request_model(g->fr); }

size_t inferd__gen_token_text(const gen *g, int32_t id, char *buf, size_t cap)
{
    int32_t n = inferd_token_to_piece(inferd_fe_request_vocab(g->fr), id, true, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

/* ---- SSE ---- */

static ssize_t stream_read(void *cls, char *buf, size_t max)
{
    gen *g = cls;
    while (g->out_pos >= g->out.len) {
        g->out_pos = 0;
        if (!g->out.err)
            inferd_buf_reset(&g->out);
        if (atomic_load(&g->client_left))
            return HTTPD_STREAM_ERROR;
        if (g->finished) {
            inferd__guard_unwatch(g->srv, g);
            return HTTPD_STREAM_END;
        }
        if (g->ended) { /* the terminal event was read: fmt set finished */
            g->finished = true;
            continue;
        }
        read_ready(g);
        if (g->out.err)
            return HTTPD_STREAM_ERROR;
        if (g->out.len > 0)
            break;
        if (atomic_exchange(&g->ping_due, false)) {
            inferd_buf_add(&g->out, ": keep-alive\n\n", 14);
            break;
        }
        if (!g->ended && inferd__waker_sleep(&g->wk))
            return 0; /* parked until the next event */
    }
    size_t n = g->out.len - g->out_pos;
    if (n > max)
        n = max;
    memcpy(buf, g->out.p + g->out_pos, n);
    g->out_pos += n;
    atomic_store(&g->last_out_ns, inferd_now_ns());
    return (ssize_t)n;
}

static void stream_free(void *cls) { inferd__gen_free(cls); }

void inferd__gen_stream(gen *g, gen_fmt_fn fmt)
{
    http_conn *c = g->c;
    g->fmt = fmt;
    httpd_resp *r = c->resp ? NULL : httpd_resp_stream(stream_read, g, stream_free);
    if (!r) {
        inferd__gen_free(g);
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the stream");
        return;
    }
    g->c = NULL;
    /* Queued by the dispatcher (on the connection's thread); freeing the
     * response frees g. */
    if (httpd_resp_header(r, "Content-Type", "text/event-stream") < 0 ||
        httpd_resp_header(r, "Cache-Control", "no-cache") < 0) {
        httpd_resp_free(r);
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the stream");
        return;
    }
    c->resp = r;
    c->status = 200;
    c->streamed = true;
}
