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

#include "inferd/log.h"

#define COMP "http"
#define STREAM_PING_MS 15000       /* an SSE comment after this long idle */

const char *gen_finish_name(inferd_finish f)
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

/* The 400 parameter an admission error is about. */
static const char *error_param(gen_kind kind, const char *msg)
{
    if (strncmp(msg, "prompt", 6) == 0)
        return kind == GEN_CHAT ? "messages" : kind == GEN_KSERVE ? "text_input" : "prompt";
    return NULL;
}

inferd_registry_handle *server_request_model(http_conn *c, served *sm)
{
    inferd_server *s = c->srv;
    inferd_registry_handle *h = NULL;
    inferd_error e = {0};
    if (atomic_load(&s->state) >= SERVER_DRAINING) {
        http_error(c, 503, "unavailable", NULL, "the server is shutting down");
        return NULL;
    }
    int rc = server_get_model(s, sm, &h, &e);
    if (rc == INFERD_E_BUSY || rc == INFERD_E_UNAVAILABLE)
        http_error(c, 503, "unavailable", NULL, "model '%s' is being unloaded", sm->id);
    else if (rc < 0)
        http_error_code(c, rc, NULL, e.msg);
    return rc < 0 ? NULL : h;
}

gen *gen_start(http_conn *c, served *sm, inferd_request_params *p, gen_kind kind)
{
    inferd_server *s = c->srv;
    inferd_error e = {0};
    gen *g = calloc(1, sizeof(*g));
    if (!g) {
        http_error(c, 500, "internal", NULL, "no memory for the request");
        return NULL;
    }
    g->c = c;
    g->srv = s;
    g->sm = sm;
    g->kind = kind;
    g->efd = -1;
    g->t_start_ns = c->t_start_ns;
    g->created = (int64_t)time(NULL);
    g->h = server_request_model(c, sm);
    if (!g->h) {
        gen_free(g);
        return NULL;
    }
    g->vocab = inferd_model_get_vocab(inferd_registry_handle_model(g->h));
    g->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g->efd < 0) {
        http_error(c, 500, "internal", NULL, "eventfd: %s", strerror(errno));
        gen_free(g);
        return NULL;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->sock = ci ? ci->connect_fd : -1;
    p->on_event = gen_wake;
    p->on_event_ctx = g;
    g->logprobs = p->logprobs || p->top_logprobs > 0;
    g->top_logprobs = p->top_logprobs;
    int rc = inferd_sched_submit(inferd_registry_handle_sched(g->h), p, &g->req, &e);
    if (rc < 0) {
        if (rc == INFERD_E_OVERLOADED)
            http_error(c, 503, "overloaded", NULL, "model '%s' is overloaded: %s", sm->id, e.msg);
        else if (rc == INFERD_E_UNAVAILABLE)
            http_error(c, 503, "unavailable", NULL, "model '%s' is not serving: %s", sm->id,
                       e.msg);
        else
            http_error_code(c, rc, error_param(kind, e.msg), e.msg);
        gen_free(g);
        return NULL;
    }
    /* The generation may outlast the idle timeout: none while it runs. */
    MHD_set_connection_option(c->mc, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    return g;
}

static int wait_event(gen *g, inferd_event *ev, int idle_ms)
{
    int waited_ms = 0;
    for (;;) {
        int rc = inferd_request_next(g->req, ev, 0);
        if (rc == 0)
            return 0;
        if (rc == INFERD_E_NOT_FOUND)
            return 1;
        if (idle_ms >= 0 && waited_ms >= idle_ms)
            return 2;
        struct pollfd pf[2] = {{g->efd, POLLIN, 0}, {g->sock, POLLRDHUP, 0}};
        int n = poll(pf, g->sock >= 0 ? 2 : 1, 1000);
        if (n == 0)
            waited_ms += 1000;
        if (n > 0 && g->sock >= 0 && (pf[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            inferd_request_cancel(g->req);
            return INFERD_E_CANCELLED;
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
                gen_token *t = realloc(g->toks, cap * sizeof(*t));
                if (!t) {
                    g->text.failed = true;
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
        sbuf_add(&g->text, ev->text, ev->text_len);
        return;
    }
    g->done = *ev;
    g->done.text = NULL;
    g->done.message = NULL;
    g->ended = true;
    if (ev->type == INFERD_EVENT_DONE)
        sbuf_add(&g->text, ev->text, ev->text_len);
    else
        snprintf(g->err_msg, sizeof(g->err_msg), "%s", ev->message ? ev->message : "");
}

int gen_next(gen *g, inferd_event *ev)
{
    int rc = wait_event(g, ev, -1);
    if (rc == 0)
        record(g, ev);
    return rc;
}

int gen_collect(gen *g)
{
    inferd_event ev;
    while (!g->ended) {
        int rc = gen_next(g, &ev);
        if (rc == INFERD_E_CANCELLED)
            return rc;
        if (rc == 1)
            break;
    }
    if (g->c)
        MHD_set_connection_option(g->c->mc, MHD_CONNECTION_OPTION_TIMEOUT,
                                  g->srv->o.conn_timeout_s);
    return 0;
}

void gen_count(gen *g)
{
    double http_s = (double)(server_now_ns() - g->t_start_ns) / 1e9;
    server_count_generation(g->srv, g->done.n_gen, http_s - g->done.total_ms / 1e3, true);
}

void gen_respond(gen *g, gen_build_fn build, void *ctx)
{
    http_conn *c = g->c;
    if (gen_collect(g) == INFERD_E_CANCELLED) {
        c->close = true; /* the client left: no response */
    } else if (g->done.type == INFERD_EVENT_ERROR) {
        gen_error_response(g);
    } else if (g->text.failed) {
        http_error(c, 500, "internal", NULL, "no memory for the response");
    } else {
        http_json(c, 200, build(g, ctx));
        gen_count(g);
    }
    gen_free(g);
}

void gen_error_response(gen *g)
{
    int code = g->done.code;
    if (code == INFERD_E_TIMEOUT)
        http_error(g->c, 504, "timeout", NULL, "%s", g->err_msg);
    else if (code == INFERD_E_UNAVAILABLE)
        http_error(g->c, 503, "unavailable", NULL, "%s", g->err_msg);
    else
        http_error_code(g->c, code, error_param(g->kind, g->err_msg), g->err_msg);
}

void gen_free(gen *g)
{
    if (!g)
        return;
    inferd_request_release(g->req); /* waits for the last on_event */
    if (g->efd >= 0)
        close(g->efd);
    if (g->h)
        inferd_registry_release(g->srv->reg, g->h);
    sbuf_free(&g->text);
    sbuf_free(&g->out);
    free(g->toks);
    free(g);
}

size_t gen_token_text(const gen *g, int32_t id, char *buf, size_t cap)
{
    int32_t n = inferd_token_to_piece(g->vocab, id, true, buf, cap);
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
        g->out.len = g->out_pos = 0;
        if (g->finished) {
            MHD_set_connection_option(sc->mc, MHD_CONNECTION_OPTION_TIMEOUT, sc->conn_timeout_s);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        inferd_event ev;
        int rc = wait_event(g, &ev, STREAM_PING_MS);
        if (rc == INFERD_E_CANCELLED)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (rc == 2) {
            sbuf_add(&g->out, ": keep-alive\n\n", 14);
            continue;
        }
        if (rc == 1) { /* cannot happen: the terminal event sets finished */
            g->finished = true;
            continue;
        }
        record(g, &ev);
        sc->fmt(g, &ev);
        if (ev.type != INFERD_EVENT_TOKEN) {
            g->finished = true;
            if (ev.type == INFERD_EVENT_DONE)
                server_count_generation(g->srv, ev.n_gen, 0, false);
        }
        if (g->out.failed)
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
    gen_free(sc->g);
    free(sc);
}

void gen_stream(gen *g, gen_fmt_fn fmt)
{
    http_conn *c = g->c;
    stream_ctx *sc = calloc(1, sizeof(*sc));
    struct MHD_Response *r = NULL;
    if (sc) {
        sc->g = g;
        sc->fmt = fmt;
        sc->mc = c->mc;
        sc->conn_timeout_s = g->srv->o.conn_timeout_s;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, sc,
                                              stream_free);
    }
    if (!r) {
        free(sc);
        gen_free(g);
        http_error(c, 500, "internal", NULL, "no memory for the stream");
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
