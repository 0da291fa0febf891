/* One generation request on behalf of an HTTP request: a registry handle
 * for its model, the scheduler request, and the wait for its events on the
 * connection's thread (an eventfd woken by the scheduler, and the client's
 * socket watched for a hang-up, which cancels the request). */
#include "server_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/log.h"

#define COMP "http"
#define STREAM_PING_MS 15000 /* an SSE comment after this long idle */

const char *inferd__gen_finish_name(inferd_finish f)
{
    return f == INFERD_FINISH_LENGTH ? "length" : "stop";
}

static void gen_wake(void *ctx)
{
    gen *g = ctx;
    uint64_t one = 1;
    ssize_t n = write(g->efd, &one, sizeof(one));
    (void)n; /* a full counter already wakes the reader */
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
    g->efd = -1;
    g->text = INFERD_BUF_INIT(SERVER_TEXT_MAX);
    g->out = INFERD_BUF_INIT(SERVER_CHUNK_MAX);
    g->t_start_ns = c->t_start_ns;
    g->created = (int64_t)time(NULL);
    g->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g->efd < 0) {
        inferd__http_error(c, INFERD_E_INTERNAL, NULL, "eventfd: %s", strerror(errno));
        inferd__gen_free(g);
        return NULL;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->sock = ci ? ci->connect_fd : -1;
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
    /* The generation may outlast the idle timeout: none while it runs. */
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    return g;
}

/* The next event of g within @p idle_ms (< 0: no limit), watching the
 * client's socket. */
static gen_wait wait_event(gen *g, inferd_event *ev, int idle_ms)
{
    int waited_ms = 0;
    for (;;) {
        int rc = inferd_fe_request_next(g->fr, ev, 0);
        if (rc == 0)
            return GEN_EVENT;
        if (rc == INFERD_E_NOT_FOUND)
            return GEN_ENDED;
        if (idle_ms >= 0 && waited_ms >= idle_ms)
            return GEN_IDLE;
        struct pollfd pf[2] = {{g->efd, POLLIN, 0}, {g->sock, POLLRDHUP, 0}};
        int n = poll(pf, g->sock >= 0 ? 2 : 1, 1000);
        if (n == 0)
            waited_ms += 1000;
        if (n > 0 && g->sock >= 0 && (pf[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            inferd_fe_request_cancel(g->fr);
            return GEN_CLIENT_LEFT;
        }
        if (n > 0 && (pf[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t r = read(g->efd, &v, sizeof(v));
            (void)r;
        }
    }
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

gen_wait inferd__gen_next(gen *g, inferd_event *ev)
{
    gen_wait w = wait_event(g, ev, -1);
    if (w == GEN_EVENT)
        record(g, ev);
    return w;
}

gen_wait inferd__gen_collect(gen *g)
{
    inferd_event ev;
    while (!g->ended) {
        gen_wait w = inferd__gen_next(g, &ev);
        if (w == GEN_CLIENT_LEFT)
            return w;
        if (w == GEN_ENDED)
            break;
    }
    if (g->c)
        MHD_set_connection_option(g->c->mc, MHD_CONNECTION_OPTION_TIMEOUT,
                                  g->srv->o.conn_timeout_s);
    return GEN_ENDED;
}

void inferd__gen_respond(gen *g, gen_build_fn build, void *ctx)
{
    http_conn *c = g->c;
    if (inferd__gen_collect(g) == GEN_CLIENT_LEFT) {
        c->close = true; /* the client left: no response */
    } else if (g->done.type == INFERD_EVENT_ERROR) {
        inferd__http_fail(c, &g->err);
    } else if (g->out_of_memory || g->text.err) {
        inferd__http_error(c, g->text.err == INFERD_E_RANGE ? INFERD_E_TOO_LARGE : INFERD_E_NOMEM,
                           NULL,
                           g->text.err == INFERD_E_RANGE ? "the response is over %zu bytes"
                                                         : "no memory for the response (%zu bytes)",
                           (size_t)SERVER_TEXT_MAX);
    } else {
        inferd__http_json(c, 200, build(g, ctx));
        /* HTTP and JSON time: the request's time less the scheduler's. */
        double http_s = (double)(inferd_now_ns() - g->t_start_ns) / 1e9;
        inferd__server_count_overhead(g->srv, http_s - g->done.total_ms / 1e3);
    }
    inferd__gen_free(g);
}

void inferd__gen_free(gen *g)
{
    if (!g)
        return;
    inferd_fe_request_release(g->fr); /* waits for the last on_event */
    if (g->efd >= 0)
        close(g->efd);
    inferd_buf_free(&g->text);
    inferd_buf_free(&g->out);
    inferd_free(g->toks);
    inferd_free(g);
}

const char *inferd__gen_model(const gen *g) { return inferd_fe_request_model(g->fr); }

size_t inferd__gen_token_text(const gen *g, int32_t id, char *buf, size_t cap)
{
    int32_t n = inferd_token_to_piece(inferd_fe_request_vocab(g->fr), id, true, buf, cap);
    return n > 0 ? (size_t)n : 0;
}

/* ---- SSE ---- */

typedef struct stream_ctx {
    gen *g;
    gen_fmt_fn fmt;
    struct MHD_Connection *mc;
    unsigned conn_timeout_s;
} stream_ctx;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_ctx *sc = cls;
    gen *g = sc->g;
    while (g->out_pos >= g->out.len) {
        g->out_pos = 0;
        if (!g->out.err)
            inferd_buf_reset(&g->out);
        if (g->finished) {
            MHD_set_connection_option(sc->mc, MHD_CONNECTION_OPTION_TIMEOUT, sc->conn_timeout_s);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        inferd_event ev;
        gen_wait w = wait_event(g, &ev, STREAM_PING_MS);
        if (w == GEN_CLIENT_LEFT)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (w == GEN_IDLE) {
            inferd_buf_add(&g->out, ": keep-alive\n\n", 14);
            continue;
        }
        if (w == GEN_ENDED) { /* cannot happen: the terminal event sets finished */
            g->finished = true;
            continue;
        }
        record(g, &ev);
        sc->fmt(g, &ev);
        if (ev.type != INFERD_EVENT_TOKEN) {
            g->finished = true;
        }
        if (g->out.err)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = g->out.len - g->out_pos;
    if (n > max)
        n = max;
    memcpy(buf, g->out.p + g->out_pos, n);
    g->out_pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream_ctx *sc = cls;
    inferd__gen_free(sc->g);
    inferd_free(sc);
}

void inferd__gen_stream(gen *g, gen_fmt_fn fmt)
{
    http_conn *c = g->c;
    stream_ctx *sc = inferd_calloc(1, sizeof(*sc));
    struct MHD_Response *r = NULL;
    if (sc) {
        sc->g = g;
        sc->fmt = fmt;
        sc->mc = c->mc;
        sc->conn_timeout_s = g->srv->o.conn_timeout_s;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, sc, stream_free);
    }
    if (!r) {
        inferd_free(sc);
        inferd__gen_free(g);
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the stream");
        return;
    }
    g->c = NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (MHD_queue_response(c->mc, 200, r) == MHD_YES) {
        c->status = 200;
        c->streamed = true;
    } else {
        c->close = true;
    }
    MHD_destroy_response(r); /* frees sc and g when the connection is done */
}
