/* The pipeline C API (include/inferd/pipeline.h) against real node
 * processes (`inferd pipeline-node`, $INFERD): samples of 1 KB to 10 MB
 * through two identity nodes, intact, over three interleaved sessions with
 * their ENDs in order; the progress callback; backpressure at the
 * pipeline's edges (a full input waits and times out, nothing is lost with
 * block; drop_oldest keeps the newest); a node that reports an error fails
 * the pipeline with its name and message; calls on a failed pipeline
 * return that failure; and the argument errors. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../client/check.h"
#include <jansson.h>

#include "inferd/pipeline.h"
#include "inferd/tensor.h"

static atomic_int g_calls, g_all_running;

static void on_progress(void *ctx, const inferd_node_info *nodes, size_t n)
{
    (void)ctx;
    atomic_fetch_add(&g_calls, 1);
    bool all = true;
    for (size_t i = 0; i < n; i++)
        all = all && nodes[i].state == INFERD_NODE_RUNNING;
    if (all)
        atomic_store(&g_all_running, 1);
}

static inferd_pipeline *start(const char *json)
{
    inferd_pipeline_opts o = {.inferd_exe = env("INFERD"), .on_progress = on_progress};
    inferd_pipeline *p = NULL;
    inferd_error e = {0};
    CHECK(inferd_pipeline_start(json, NULL, &o, &p, &e) == 0, "start: %s", e.msg);
    CHECK(inferd_pipeline_wait_ready(p, 60000, &e) == 0, "wait_ready: %s", e.msg);
    return p;
}

static float value(uint64_t session, size_t i) { return (float)(session * 1000003u + i * 7u); }

static void sizes_and_sessions(void)
{
    g_where = "sizes";
    inferd_pipeline *p = start(
        "{\"channels\": {\"in\": {\"slot_bytes\": 11000000, \"slots\": 2},"
        "                \"mid\": {\"slot_bytes\": 11000000, \"slots\": 2},"
        "                \"out\": {\"slot_bytes\": 11000000, \"slots\": 8}},"
        " \"inputs\": [\"in\"], \"outputs\": [\"out\"],"
        " \"nodes\": [{\"name\": \"a\", \"kind\": \"identity\", \"inputs\": [\"in\"], \"outputs\": "
        "[\"mid\"]},"
        "           {\"name\": \"b\", \"kind\": \"identity\", \"inputs\": [\"mid\"], \"outputs\": "
        "[\"out\"]}]}");
    CHECK(atomic_load(&g_all_running), "the progress callback never saw every node running");
    static const size_t sizes[] = {1024, 65536, 1 << 20, 10 << 20};
    float *buf = malloc(10 << 20);
    inferd_error e = {0};
    for (size_t k = 0; k < 4; k++) {
        const size_t n = sizes[k] / sizeof(float);
        for (uint64_t s = 1; s <= 3; s++) { /* sessions interleaved */
            for (size_t i = 0; i < n; i++)
                buf[i] = value(s, i);
            inferd_sample_header h = {
                .elem = INFERD_ELEM_F32, .ndim = 2, .shape = {2, (int64_t)n / 2}};
            CHECK(inferd_pipeline_send(p, "in", s, &h, buf, sizes[k], 10000, &e) == 0, "send: %s",
                  e.msg);
            inferd_pipeline_sample out;
            CHECK(inferd_pipeline_receive(p, "out", 10000, &out, &e) == 0, "receive: %s", e.msg);
            CHECK(out.h->session == s && out.h->elem == INFERD_ELEM_F32 && out.h->ndim == 2 &&
                      out.h->shape[0] == 2 && out.h->shape[1] == (int64_t)n / 2 &&
                      out.h->bytes == sizes[k],
                  "size %zu session %llu: the header differs", sizes[k], (unsigned long long)s);
            const float *got = out.data;
            for (size_t i = 0; i < n; i++)
                CHECK(got[i] == value(s, i), "size %zu session %llu: element %zu differs", sizes[k],
                      (unsigned long long)s, i);
            inferd_pipeline_release(p, &out);
        }
    }
    for (uint64_t s = 3; s >= 1; s--)
        CHECK(inferd_pipeline_end(p, s, 10000, &e) == 0, "end: %s", e.msg);
    for (uint64_t s = 3; s >= 1; s--) {
        inferd_pipeline_sample out;
        CHECK(inferd_pipeline_receive(p, "out", 10000, &out, &e) == 0, "receive: %s", e.msg);
        CHECK(out.h->session == s && (out.h->flags & INFERD_SAMPLE_END) && out.h->bytes == 0,
              "the ENDs come in the order sent");
        inferd_pipeline_release(p, &out);
    }
    /* Argument errors. */
    inferd_sample_header h = {.elem = INFERD_ELEM_U8, .ndim = 1, .shape = {1}};
    CHECK(inferd_pipeline_send(p, "out", 1, &h, "x", 1, 0, &e) == INFERD_E_NOT_FOUND &&
              strstr(e.msg, "has no input channel 'out'"),
          "send to an output: %s", e.msg);
    inferd_pipeline_sample out;
    CHECK(inferd_pipeline_receive(p, "in", 0, &out, &e) == INFERD_E_NOT_FOUND, "receive: %s",
          e.msg);
    CHECK(inferd_pipeline_receive(p, "out", 50, &out, &e) == INFERD_E_TIMEOUT, "timeout: %s",
          e.msg);
    CHECK(inferd_pipeline_send(p, "in", 1, &h, buf, 11000000, 0, &e) == INFERD_E_TOO_LARGE,
          "too large: %s", e.msg);
    CHECK(inferd_pipeline_stop(p, 2000, &e) == 0, "stop: %s", e.msg);
    inferd_node_info info[2];
    CHECK(inferd_pipeline_nodes(p, info, 2) == 2 && info[0].state == INFERD_NODE_STOPPED &&
              info[1].state == INFERD_NODE_STOPPED,
          "after stop: %s %s", inferd_node_state_name(info[0].state),
          inferd_node_state_name(info[1].state));
    inferd_pipeline_destroy(p);
    free(buf);
}

static void backpressure(const char *policy)
{
    g_where = policy;
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"channels\": {\"in\": {\"slot_bytes\": 128, \"slots\": 1},"
             "                \"out\": {\"slot_bytes\": 128, \"slots\": 2, \"policy\": \"%s\"}},"
             " \"inputs\": [\"in\"], \"outputs\": [\"out\"],"
             " \"nodes\": [{\"name\": \"a\", \"kind\": \"identity\", \"inputs\": [\"in\"], "
             "\"outputs\": [\"out\"]}]}",
             policy);
    inferd_pipeline *p = start(json);
    inferd_error e = {0};
    inferd_sample_header h = {.elem = INFERD_ELEM_U64, .ndim = 1, .shape = {1}};
    uint64_t sent = 0;
    const bool block = strcmp(policy, "block") == 0;
    /* Nobody receives: with block the pipeline fills (out 2, the node holds
     * 1, in 1) and a send waits, then times out; with drop_oldest it
     * never does. */
    for (uint64_t s = 1; s <= 12; s++) {
        int rc = inferd_pipeline_send(p, "in", s, &h, &s, 8, 300, &e);
        if (rc == INFERD_E_TIMEOUT) {
            CHECK(block && strstr(e.msg, "no free slot"), "send %llu: %s", (unsigned long long)s,
                  e.msg);
            break;
        }
        CHECK(rc == 0, "send %llu: %s", (unsigned long long)s, e.msg);
        sent = s;
    }
    CHECK(block ? sent >= 3 && sent < 12 : sent == 12, "%llu sent", (unsigned long long)sent);
    uint64_t got = 0, last = 0;
    for (;;) {
        inferd_pipeline_sample out;
        int rc = inferd_pipeline_receive(p, "out", 1000, &out, &e);
        if (rc == INFERD_E_TIMEOUT)
            break;
        CHECK(rc == 0, "receive: %s", e.msg);
        uint64_t v;
        memcpy(&v, out.data, 8);
        CHECK(v == out.h->session && v > last, "received %llu after %llu", (unsigned long long)v,
              (unsigned long long)last);
        last = v;
        got++;
        inferd_pipeline_release(p, &out);
    }
    if (block)
        CHECK(got == sent, "block: %llu sent, %llu received", (unsigned long long)sent,
              (unsigned long long)got);
    else
        CHECK(got < sent && last == sent, "drop_oldest: %llu sent, %llu received, the last %llu",
              (unsigned long long)sent, (unsigned long long)got, (unsigned long long)last);
    inferd_pipeline_destroy(p);
}

static void node_error(void)
{
    g_where = "node error";
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"channels\": {\"in\": {}, \"out\": {}}, \"inputs\": [\"in\"], \"outputs\": "
             "[\"out\"],"
             " \"nodes\": [{\"name\": \"tok\", \"kind\": \"tokenize\", \"inputs\": [\"in\"], "
             "\"outputs\": [\"out\"], \"options\": {\"model\": \"%s/models/stories260K.gguf\"}}]}",
             env("INFERD_FIXTURES"));
    inferd_pipeline *p = start(json);
    inferd_error e = {0};
    const float x[2] = {1, 2};
    inferd_sample_header h = {.elem = INFERD_ELEM_F32, .ndim = 1, .shape = {2}};
    CHECK(inferd_pipeline_send(p, "in", 1, &h, x, sizeof(x), 1000, &e) == 0, "send: %s", e.msg);
    inferd_pipeline_sample out;
    int rc = inferd_pipeline_receive(p, "out", 30000, &out, &e);
    CHECK(rc == INFERD_E_UNAVAILABLE &&
              strstr(e.msg, "node 'tok' (tokenize) failed: tokenize takes text samples"),
          "receive: %d %s", rc, e.msg);
    CHECK(inferd_pipeline_failure(p, &e) == INFERD_E_UNAVAILABLE, "failure: %s", e.msg);
    rc = inferd_pipeline_send_text(p, "in", 2, "x", 1, 1000, &e);
    CHECK(rc == INFERD_E_UNAVAILABLE && strstr(e.msg, "node 'tok'"), "send after: %d %s", rc,
          e.msg);
    CHECK(inferd_pipeline_stop(p, 1000, &e) == INFERD_E_UNAVAILABLE && strstr(e.msg, "tok"),
          "stop: %s", e.msg);
    inferd_node_info info;
    inferd_pipeline_nodes(p, &info, 1);
    CHECK(info.state == INFERD_NODE_FAILED, "state %s", inferd_node_state_name(info.state));
    inferd_pipeline_destroy(p);
}

/* `inferd generate`'s text for @p prompt (24 tokens, seed 42). */
static char *generate(const char *prompt)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "'%s' generate -m '%s/models/stories260K.gguf' -p '%s' -n 24 --seed 42 -t 1 --json",
             env("INFERD"), env("INFERD_FIXTURES"), prompt);
    FILE *f = popen(cmd, "r");
    CHECK(f, "popen %s", cmd);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    CHECK(pclose(f) == 0, "%s failed", cmd);
    json_t *j = json_loads(buf, 0, NULL);
    CHECK(json_is_string(json_object_get(j, "text")), "generate: %s", buf);
    char *t = strdup(json_string_value(json_object_get(j, "text")));
    json_decref(j);
    return t;
}

/* The llm node batches sessions: two sessions' prompts run at once (their
 * pieces interleave), each session's prompts in order, each text equal to
 * `inferd generate`'s, each END after its session's last piece. */
static void llm_sessions(void)
{
    g_where = "llm sessions";
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"channels\": {\"in\": {\"slots\": 8}, \"out\": {\"slots\": 64}}, "
             "\"inputs\": [\"in\"], \"outputs\": [\"out\"],"
             " \"nodes\": [{\"name\": \"llm\", \"kind\": \"llm\", \"inputs\": [\"in\"], "
             "\"outputs\": [\"out\"], \"options\": {\"model\": "
             "\"%s/models/stories260K.gguf\", \"max_tokens\": 24, \"seed\": 42, "
             "\"threads\": 1}}]}",
             env("INFERD_FIXTURES"));
    char *a = generate("Once upon a time"), *b = generate("The cat"), *c = generate("A dog");
    inferd_pipeline *p = start(json);
    inferd_error e = {0};
    const char *p1[2] = {"Once upon a time", "The cat"};
    for (int i = 0; i < 2; i++)
        CHECK(inferd_pipeline_send_text(p, "in", 1, p1[i], strlen(p1[i]), 1000, &e) == 0, "%s",
              e.msg);
    CHECK(inferd_pipeline_send_text(p, "in", 2, "A dog", 5, 1000, &e) == 0, "%s", e.msg);
    CHECK(inferd_pipeline_end(p, 1, 1000, &e) == 0 && inferd_pipeline_end(p, 2, 1000, &e) == 0,
          "%s", e.msg);
    char got[2][4096] = {"", ""};
    bool ended[2] = {false, false}, interleaved = false;
    int last = 0;
    while (!ended[0] || !ended[1]) {
        inferd_pipeline_sample out;
        CHECK(inferd_pipeline_receive(p, "out", 30000, &out, &e) == 0, "receive: %s", e.msg);
        const int k = (int)out.h->session;
        CHECK(k == 1 || k == 2, "session %d", k);
        CHECK(!ended[k - 1], "session %d: a sample after its END", k);
        if (out.h->flags & INFERD_SAMPLE_END) {
            ended[k - 1] = true;
        } else {
            strncat(got[k - 1], out.data, out.h->bytes);
            if (last && last != k && !ended[last - 1])
                interleaved = true;
            last = k;
        }
        inferd_pipeline_release(p, &out);
    }
    char want1[8192];
    snprintf(want1, sizeof(want1), "%s%s", a, b);
    CHECK(strcmp(got[0], want1) == 0, "session 1: '%s', inferd generate '%s'", got[0], want1);
    CHECK(strcmp(got[1], c) == 0, "session 2: '%s', inferd generate '%s'", got[1], c);
    CHECK(interleaved, "the two sessions' pieces did not interleave: the node ran them in turn");
    inferd_pipeline_destroy(p);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    sizes_and_sessions();
    backpressure("block");
    backpressure("drop_oldest");
    node_error();
    llm_sessions();
    printf("pipeline API: 1 KB to 10 MB intact over interleaved sessions, backpressure, a node's "
           "error: ok\n");
    return 0;
}
