/* The client library against real workers (run by
 * tests/integration/test_client.sh, which starts them): every call over
 * TCP and the Unix socket, streaming and cancel, the worker's errors and
 * transport errors told apart, tensors as JSON, binary data and shared
 * memory (outputs read in place), regions made here or by the worker, an
 * API key, a quota, and one client used by four threads at once.
 *
 * Environment: TCP_URL, UNIX_URL, KEY (the worker's API key), GEN_TEXT
 * and GEN_N (what `inferd generate` gives for PROMPT with seed 42 and its
 * default sampling), DEAD_URL (nobody listens there). */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "inferd/client.h"

#define PROMPT "Once upon a time"

#define OK(call)                                   \
    do {                                           \
        inferd_error e_ = {0};                     \
        int rc_ = (call);                          \
        if (rc_ != 0)                              \
            fail("%s: %d %s", #call, rc_, e_.msg); \
    } while (0)

static inferd_client *open_client(const char *url, const char *key)
{
    inferd_client_opts o = inferd_client_opts_default();
    o.api_key = key;
    inferd_client *c = NULL;
    inferd_error e = {0};
    if (inferd_client_open(url, &o, &c, &e) != 0)
        fail("open %s: %s", url, e.msg);
    return c;
}

/* ---- generation ---- */

typedef struct pieces {
    char text[65536];
    size_t len;
    uint32_t n;
    bool order_ok;
    uint32_t cancel_at; /* return nonzero at this piece (0: never) */
} pieces;

static int on_piece(void *ctx, uint32_t index, const char *text, size_t len)
{
    pieces *p = ctx;
    if (index != p->n || len == 0)
        p->order_ok = false;
    p->n++;
    if (p->len + len < sizeof(p->text)) {
        memcpy(p->text + p->len, text, len);
        p->len += len;
    }
    return p->cancel_at && p->n == p->cancel_at;
}

/* The sampling of `inferd generate` by default, seed 42. */
static inferd_client_gen as_generate(int n)
{
    inferd_client_gen g = inferd_client_gen_default();
    g.prompt = PROMPT;
    g.max_tokens = n;
    g.temperature = 0.8;
    g.top_k = 40;
    g.top_p = 0.95;
    g.min_p = 0.05;
    g.has_seed = true;
    g.seed = 42;
    return g;
}

static void check_generation(inferd_client *c)
{
    const char *want = env("GEN_TEXT");
    const int n = atoi(env("GEN_N"));
    inferd_client_gen g = as_generate(n);
    inferd_client_result r;
    inferd_error e = {0};

    /* Blocking: the text of inferd generate for the same seed. */
    CHECK(inferd_client_complete(c, &g, NULL, NULL, &r, &e) == 0, "complete: %s", e.msg);
    CHECK(strcmp(r.text, want) == 0, "complete: '%s', inferd generate '%s'", r.text, want);
    CHECK(strcmp(r.finish_reason, "length") == 0 && r.completion_tokens == (uint32_t)n &&
              r.prompt_tokens == 5 && r.seed == 42,
          "complete: finish %s, %u/%u tokens, seed %llu", r.finish_reason, r.prompt_tokens,
          r.completion_tokens, (unsigned long long)r.seed);
    inferd_client_result_free(&r);

    /* Streamed: the same text, piece by piece. */
    pieces p = {.order_ok = true};
    CHECK(inferd_client_complete(c, &g, on_piece, &p, &r, &e) == 0, "stream: %s", e.msg);
    CHECK(strcmp(r.text, want) == 0, "stream: '%s', inferd generate '%s'", r.text, want);
    CHECK(p.len == r.text_len && memcmp(p.text, want, p.len) == 0 && p.order_ok &&
              p.n == r.n_pieces && p.n >= 2,
          "stream: %u pieces, in order %d", p.n, p.order_ok);
    CHECK(strcmp(r.finish_reason, "length") == 0 && r.completion_tokens == (uint32_t)n,
          "stream: finish '%s', %u tokens", r.finish_reason, r.completion_tokens);
    inferd_client_result_free(&r);

    /* Cancel from the callback: CANCELLED, what came until then, and the
     * worker serves on. */
    pieces pc = {.order_ok = true, .cancel_at = 2};
    int rc = inferd_client_complete(c, &g, on_piece, &pc, &r, &e);
    CHECK(rc == INFERD_E_CANCELLED && pc.n == 2 && r.n_pieces == 2 &&
              strncmp(r.text, want, r.text_len) == 0,
          "cancel: rc %d (%s), %u pieces", rc, e.msg, pc.n);
    inferd_client_result_free(&r);
    OK(inferd_client_health(c, true, &e_));

    /* Chat, blocking and streamed, equal. */
    const inferd_client_message msgs[] = {{"user", "Tell me a story"}};
    inferd_client_gen ch = as_generate(8);
    ch.prompt = NULL;
    ch.messages = msgs;
    ch.n_messages = 1;
    inferd_client_result a, b;
    pieces pb = {.order_ok = true};
    CHECK(inferd_client_complete(c, &ch, NULL, NULL, &a, &e) == 0, "chat: %s", e.msg);
    CHECK(inferd_client_complete(c, &ch, on_piece, &pb, &b, &e) == 0, "chat stream: %s", e.msg);
    CHECK(a.text_len > 0 && strcmp(a.text, b.text) == 0 && pb.order_ok,
          "chat: '%s' blocking, '%s' streamed", a.text, b.text);
    inferd_client_result_free(&a);
    inferd_client_result_free(&b);

    /* The worker's errors come back with its code and message. */
    g.temperature = 9;
    rc = inferd_client_complete(c, &g, NULL, NULL, &r, &e);
    CHECK(rc == INFERD_E_INVALID && strstr(e.msg, "temperature: 9 is outside [0, 2]") &&
              strcmp(e.param, "temperature") == 0 && !inferd_client_is_transport(&e),
          "bad temperature: %d %s (param %s)", rc, e.msg, e.param);
    inferd_client_result_free(&r);
    rc = inferd_client_complete(c, &g, on_piece, &p, &r, &e);
    CHECK(rc == INFERD_E_INVALID && strstr(e.msg, "temperature"), "bad temperature, streamed: %d",
          rc);
    inferd_client_result_free(&r);
    g = as_generate(2);
    g.model = "nope";
    rc = inferd_client_complete(c, &g, NULL, NULL, &r, &e);
    CHECK(rc == INFERD_E_MODEL_NOT_FOUND && strstr(e.msg, "model 'nope' is not served here"),
          "unknown model: %d %s", rc, e.msg);
    inferd_client_result_free(&r);
}

/* ---- tensors ---- */

static inferd_client_tensor tensor(const char *name, inferd_elem e, uint32_t nd, const int64_t *sh,
                                   inferd_client_via via, const void *data, size_t bytes)
{
    inferd_client_tensor t;
    memset(&t, 0, sizeof(t));
    t.name = name;
    t.elem = e;
    t.ndim = nd;
    memcpy(t.shape, sh, nd * sizeof(int64_t));
    t.via = via;
    t.data = data;
    t.bytes = bytes;
    return t;
}

static void check_tensors(inferd_client *c, const char *tag)
{
    inferd_error e = {0};
    inferd_client_infer_result res;

    /* JSON both ways. */
    const float f[6] = {1.5f, -2, 3.25f, 0, 1e-3f, -7};
    const int64_t s23[2] = {2, 3};
    inferd_client_tensor in =
        tensor("INPUT0", INFERD_ELEM_F32, 2, s23, INFERD_CLIENT_VIA_JSON, f, sizeof(f));
    inferd_client_tensor out = {.name = "OUTPUT0", .via = INFERD_CLIENT_VIA_JSON};
    CHECK(inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0, "json: %s", e.msg);
    CHECK(out.elem == INFERD_ELEM_F32 && out.ndim == 2 && out.shape[0] == 2 && out.shape[1] == 3 &&
              out.bytes == sizeof(f) && memcmp(out.data, f, sizeof(f)) == 0,
          "json: the output differs");
    inferd_client_infer_result_free(&res);

    /* Binary both ways: the output points into the answer. */
    static int8_t b[100000];
    for (size_t i = 0; i < sizeof(b); i++)
        b[i] = (int8_t)(i * 7);
    const int64_t sb[1] = {sizeof(b)};
    in = tensor("INPUT0", INFERD_ELEM_I8, 1, sb, INFERD_CLIENT_VIA_BINARY, b, sizeof(b));
    out = (inferd_client_tensor){.name = "OUTPUT0", .via = INFERD_CLIENT_VIA_BINARY};
    CHECK(inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0, "binary: %s",
          e.msg);
    CHECK(out.elem == INFERD_ELEM_I8 && out.bytes == sizeof(b) &&
              memcmp(out.data, b, sizeof(b)) == 0 && (const char *)out.data > (char *)res.memory,
          "binary: the output differs");
    inferd_client_infer_result_free(&res);

    /* BYTES as JSON strings. */
    const char enc[] = "\x01\x00\x00\x00"
                       "a"
                       "\x02\x00\x00\x00"
                       "bc";
    const int64_t s2[1] = {2};
    in = tensor("INPUT3", INFERD_ELEM_BYTES, 1, s2, INFERD_CLIENT_VIA_JSON, enc, sizeof(enc) - 1);
    out = (inferd_client_tensor){.name = "OUTPUT3", .via = INFERD_CLIENT_VIA_JSON};
    CHECK(inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0, "bytes: %s",
          e.msg);
    CHECK(out.elem == INFERD_ELEM_BYTES && out.bytes == sizeof(enc) - 1 &&
              memcmp(out.data, enc, out.bytes) == 0,
          "bytes: the output differs");
    inferd_client_infer_result_free(&res);

    /* A NUL inside a BYTES element: binary in, JSON ("\u0000") out. */
    const char nul[] = "\x03\x00\x00\x00"
                       "a\0b";
    const int64_t s1[1] = {1};
    in = tensor("INPUT2", INFERD_ELEM_BYTES, 1, s1, INFERD_CLIENT_VIA_BINARY, nul, sizeof(nul) - 1);
    out = (inferd_client_tensor){.name = "OUTPUT2", .via = INFERD_CLIENT_VIA_JSON};
    CHECK(inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0, "a NUL: %s",
          e.msg);
    CHECK(out.bytes == sizeof(nul) - 1 && memcmp(out.data, nul, out.bytes) == 0,
          "a NUL: the output differs");
    inferd_client_infer_result_free(&res);

    /* Shared memory: a region made here, input and output in it; the
     * output is a pointer into the region (zero copy). */
    char name[64];
    snprintf(name, sizeof(name), "mine-%s", tag);
    inferd_client_region *r = NULL;
    CHECK(inferd_client_region_register(c, name, 65536, &r, &e) == 0, "register: %s", e.msg);
    float *x = r->base;
    for (int i = 0; i < 1024; i++)
        x[i] = (float)i * 0.5f;
    const int64_t s1k[1] = {1024};
    in = tensor("INPUT0", INFERD_ELEM_F32, 1, s1k, INFERD_CLIENT_VIA_SHM, NULL, 4096);
    in.region = r;
    out = (inferd_client_tensor){.name = "OUTPUT0",
                                 .via = INFERD_CLIENT_VIA_SHM,
                                 .region = r,
                                 .offset = 32768,
                                 .bytes = 8192};
    CHECK(inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0, "shm: %s", e.msg);
    CHECK(out.data == (char *)r->base + 32768 && out.bytes == 4096 && out.shape[0] == 1024 &&
              memcmp(out.data, x, 4096) == 0,
          "shm: the output is not the input, in place in the region");
    inferd_client_infer_result_free(&res);

    /* A language model: input_ids from the region, logits into it; equal
     * to the logits answered as JSON. */
    int32_t *ids = (int32_t *)((char *)r->base + 16384);
    const int32_t prompt[5] = {1, 403, 407, 261, 378};
    memcpy(ids, prompt, sizeof(prompt));
    const int64_t s5[1] = {5};
    in = tensor("input_ids", INFERD_ELEM_I32, 1, s5, INFERD_CLIENT_VIA_SHM, NULL, 20);
    in.region = r;
    in.offset = 16384;
    inferd_client_tensor lg = {.name = "logits",
                               .via = INFERD_CLIENT_VIA_SHM,
                               .region = r,
                               .offset = 40960,
                               .bytes = 2048};
    CHECK(inferd_client_infer(c, "stories260K", &in, 1, &lg, 1, "{\"max_tokens\":0}", &res, &e) ==
              0,
          "logits in shm: %s", e.msg);
    CHECK(lg.elem == INFERD_ELEM_F32 && lg.ndim == 2 && lg.shape[1] == 512 && lg.bytes == 2048 &&
              lg.data == (char *)r->base + 40960,
          "logits in shm: shape [%lld, %lld], %zu bytes", (long long)lg.shape[0],
          (long long)lg.shape[1], lg.bytes);
    inferd_client_infer_result res2;
    in =
        tensor("input_ids", INFERD_ELEM_I32, 1, s5, INFERD_CLIENT_VIA_JSON, prompt, sizeof(prompt));
    inferd_client_tensor lj = {.name = "logits", .via = INFERD_CLIENT_VIA_JSON};
    CHECK(inferd_client_infer(c, "stories260K", &in, 1, &lj, 1, "{\"max_tokens\":0}", &res2, &e) ==
              0,
          "logits as JSON: %s", e.msg);
    CHECK(lj.bytes == 2048 && memcmp(lj.data, lg.data, 2048) == 0,
          "logits: shared memory and JSON differ");
    inferd_client_infer_result_free(&res);
    inferd_client_infer_result_free(&res2);
    OK(inferd_client_region_release(c, r, &e_));

    /* A region the worker makes: mapped here, identity in place. */
    snprintf(name, sizeof(name), "theirs-%s", tag);
    CHECK(inferd_client_region_create(c, name, 4096, &r, &e) == 0, "create: %s", e.msg);
    CHECK(r->created_by_worker && r->size == 4096 && r->key[0] == '/', "create: %s %zu", r->key,
          r->size);
    memcpy(r->base, f, sizeof(f));
    const int64_t s6[1] = {6};
    in = tensor("INPUT0", INFERD_ELEM_F32, 1, s6, INFERD_CLIENT_VIA_SHM, NULL, sizeof(f));
    in.region = r;
    out = (inferd_client_tensor){
        .name = "OUTPUT0", .via = INFERD_CLIENT_VIA_SHM, .region = r, .bytes = sizeof(f)};
    CHECK(inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0,
          "created region: %s", e.msg);
    CHECK(out.data == r->base && memcmp(r->base, f, sizeof(f)) == 0, "created region: in place");
    inferd_client_infer_result_free(&res);
    OK(inferd_client_region_release(c, r, &e_));

    /* The worker's tensor errors. */
    in = tensor("INPUT0", INFERD_ELEM_F32, 2, s23, INFERD_CLIENT_VIA_JSON, f, sizeof(f));
    out = (inferd_client_tensor){.name = "OUTPUT9", .via = INFERD_CLIENT_VIA_JSON};
    int rc = inferd_client_infer(c, "ident", &in, 1, &out, 1, NULL, &res, &e);
    CHECK(rc == INFERD_E_INVALID && strstr(e.msg, "identity model 'ident' has no output 'OUTPUT9'"),
          "no such output: %d %s", rc, e.msg);
    /* The client's own: bytes that do not fill the shape. */
    in.bytes = 8;
    rc = inferd_client_infer(c, "ident", &in, 1, NULL, 0, NULL, &res, &e);
    CHECK(rc == INFERD_E_INVALID && strstr(e.msg, "input 'INPUT0': 8 bytes, the shape needs 24"),
          "short input: %d %s", rc, e.msg);
}

/* ---- threads: one client, many callers ---- */

typedef struct worker_arg {
    inferd_client *c;
    int ok;
    char msg[256];
} worker_arg;

static void *caller(void *arg)
{
    worker_arg *w = arg;
    const char *want = getenv("GEN_TEXT");
    inferd_client_gen g = as_generate(atoi(getenv("GEN_N")));
    for (int i = 0; i < 5; i++) {
        inferd_client_result r;
        inferd_error e = {0};
        pieces p = {.order_ok = true};
        int rc = inferd_client_complete(w->c, &g, i % 2 ? on_piece : NULL, &p, &r, &e);
        if (rc != 0 || strcmp(r.text, want) != 0) {
            snprintf(w->msg, sizeof(w->msg), "call %d: %d %.150s '%.60s'", i, rc, e.msg,
                     r.text ? r.text : "");
            inferd_client_result_free(&r);
            return NULL;
        }
        inferd_client_result_free(&r);
    }
    w->ok = 1;
    return NULL;
}

static void check_threads(inferd_client *c)
{
    pthread_t th[4];
    worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_arg){.c = c};
        CHECK(pthread_create(&th[i], NULL, caller, &w[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].ok, "thread %d: %s", i, w[i].msg);
    }
}

int main(void)
{
    inferd_client *c = NULL;
    inferd_error e = {0};

    g_where = "open";
    CHECK(inferd_client_open("ftp://x", NULL, &c, &e) == INFERD_E_INVALID &&
              strstr(e.msg, "is not a worker's URL"),
          "ftp: %s", e.msg);
    CHECK(inferd_client_open("unix://relative.sock", NULL, &c, &e) == INFERD_E_INVALID,
          "relative socket path: %s", e.msg);

    /* Nobody there: a transport error, not a worker's. */
    g_where = "dead";
    c = open_client(env("DEAD_URL"), NULL);
    int rc = inferd_client_health(c, false, &e);
    CHECK(rc == INFERD_E_TRANSPORT && inferd_client_is_transport(&e) && strlen(e.msg) > 0,
          "dead worker: %d %s", rc, e.msg);
    inferd_client_close(c);

    const char *doors[2][2] = {{"tcp", env("TCP_URL")}, {"unix", env("UNIX_URL")}};
    for (int d = 0; d < 2; d++) {
        g_where = doors[d][0];
        c = open_client(doors[d][1], env("KEY"));
        OK(inferd_client_health(c, false, &e_));
        OK(inferd_client_health(c, true, &e_));
        char *st = NULL;
        OK(inferd_client_status(c, &st, &e_));
        CHECK(strstr(st, "\"state\":\"ready\""), "status: %.200s", st);
        free(st);
        char **ids = NULL;
        size_t n = 0;
        OK(inferd_client_models(c, &ids, &n, &e_));
        CHECK(n == 1 && strcmp(ids[0], "stories260K") == 0, "models: %zu", n);
        inferd_client_strings_free(ids, n);
        check_generation(c);
        check_tensors(c, doors[d][0]);
        check_threads(c);
        inferd_client_close(c);

        /* Without the key: the worker's 401, as an error of its own. */
        c = open_client(doors[d][1], NULL);
        rc = inferd_client_models(c, &ids, &n, &e);
        CHECK(rc == INFERD_E_UNAUTHORIZED && !inferd_client_is_transport(&e), "no key: %d %s", rc,
              e.msg);
        inferd_client_close(c);
    }

    /* The resilient client's inference: past the dead worker to a live
     * one, binary both ways; a region is refused (it is one worker's). */
    g_where = "resilient infer";
    const char *urls[2] = {env("DEAD_URL"), env("UNIX_URL")};
    inferd_resilient_opts ro = inferd_resilient_opts_default();
    ro.client.api_key = env("KEY");
    ro.retry.backoff_base_ms = 1;
    inferd_resilient *rs = NULL;
    OK(inferd_resilient_open(urls, 2, &ro, &rs, &e_));
    const float f[4] = {0.5f, -1, 2, 1e6f};
    const int64_t s4[1] = {4};
    inferd_client_tensor in =
        tensor("INPUT0", INFERD_ELEM_F32, 1, s4, INFERD_CLIENT_VIA_BINARY, f, sizeof(f));
    inferd_client_tensor out = {.name = "OUTPUT0", .via = INFERD_CLIENT_VIA_BINARY};
    inferd_client_infer_result res;
    CHECK(inferd_resilient_infer(rs, "ident", &in, 1, &out, 1, NULL, &res, &e) == 0, "%s", e.msg);
    CHECK(out.bytes == sizeof(f) && memcmp(out.data, f, sizeof(f)) == 0, "the output differs");
    inferd_client_infer_result_free(&res);
    inferd_resilient_stats st;
    inferd_resilient_stats_get(rs, &st);
    CHECK(st.calls == 1 && st.attempts == 2 && st.failovers == 1,
          "calls %llu attempts %llu failovers %llu", (unsigned long long)st.calls,
          (unsigned long long)st.attempts, (unsigned long long)st.failovers);
    in.via = INFERD_CLIENT_VIA_SHM;
    rc = inferd_resilient_infer(rs, "ident", &in, 1, &out, 1, NULL, &res, &e);
    CHECK(rc == INFERD_E_INVALID && strcmp(e.param, "INPUT0") == 0 &&
              strstr(e.msg, "a shared-memory region belongs to one worker"),
          "shm: %d %s", rc, e.msg);
    /* The worker's 4xx comes back at once, not retried. */
    in.via = INFERD_CLIENT_VIA_BINARY;
    out.name = "OUTPUT9";
    rc = inferd_resilient_infer(rs, "ident", &in, 1, &out, 1, NULL, &res, &e);
    inferd_resilient_stats_get(rs, &st);
    CHECK(rc == INFERD_E_INVALID && strstr(e.msg, "has no output 'OUTPUT9'") && st.calls == 2 &&
              st.attempts == 3,
          "no such output: %d %s, %llu attempts", rc, e.msg, (unsigned long long)st.attempts);
    inferd_resilient_close(rs);

    /* The session's quota (--shm-session-mb 1): the worker's 507. */
    g_where = "quota";
    c = open_client(env("TCP_URL"), env("KEY"));
    inferd_client_region *r = NULL;
    rc = inferd_client_region_create(c, "big", 2 << 20, &r, &e);
    CHECK(rc == INFERD_E_QUOTA && strstr(e.msg, "quota") && !r, "quota: %d %s", rc, e.msg);
    inferd_client_close(c);
    printf("client: every call over tcp and unix, streams and cancel, tensors as JSON, binary "
           "and shared memory, errors: ok\n");
    return 0;
}
