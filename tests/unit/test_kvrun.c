/* The transport-neutral KServe runs (src/server/kvrun.h) that the gRPC door
 * completes: identity and language-model runs, streamed and not, many at
 * once on a two-thread pump (each run's tokens in order, exactly one done,
 * nothing after it), cancel, release at any moment, a run whose model must
 * load first, errors found before a run starts, and posted jobs. Run under
 * ThreadSanitizer by `make tsan`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <pthread.h>

#include "inferd/frontend.h"
#include "inferd/log.h"
#include "kvrun.h"

static char g_stories[512];
static inferd_frontend *g_fe;
static kv_pump *g_pump;
static char *g_ident[] = {"ident"};
static inferd_shm_caps g_caps;

static kv_env env(void) { return (kv_env){g_fe, NULL, &g_caps, g_ident, 1}; }

/* What one run's callbacks saw. */
typedef struct seen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t n_tokens, next_index;
    bool out_of_order;
    char text[4096];
    size_t text_len;
    int n_done, n_after_done;
    int code;           /* the done's error code, 0: none */
    char final[1024];   /* text_output of the response */
    int64_t completion; /* completion_tokens */
    size_t bin_len;
} seen;

static void seen_init(seen *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void seen_fini(seen *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static void on_token(void *ctx, int32_t id, uint32_t index, const char *text, size_t len)
{
    seen *s = ctx;
    (void)id;
    pthread_mutex_lock(&s->mu);
    if (s->n_done)
        s->n_after_done++;
    if (index != s->next_index)
        s->out_of_order = true;
    s->next_index = index + 1;
    s->n_tokens++;
    if (s->text_len + len < sizeof(s->text)) {
        memcpy(s->text + s->text_len, text, len);
        s->text_len += len;
    }
    pthread_mutex_unlock(&s->mu);
}

/* The text_output of @p resp (binary data: 4-byte length, bytes). */
static void text_output(json_t *resp, const char *bin, size_t bin_len, char *out, size_t cap)
{
    size_t at = 0, i;
    json_t *o;
    out[0] = '\0';
    json_array_foreach (json_object_get(resp, "outputs"), i, o) {
        size_t n = (size_t)json_integer_value(
            json_object_get(json_object_get(o, "parameters"), "binary_data_size"));
        if (strcmp(json_string_value(json_object_get(o, "name")), "text_output") == 0 && n >= 4 &&
            at + n <= bin_len) {
            uint32_t len;
            memcpy(&len, bin + at, 4);
            snprintf(out, cap, "%.*s", (int)len, bin + at + 4);
        }
        at += n;
    }
}

static void on_done(void *ctx, json_t *resp, const char *bin, size_t bin_len,
                    const inferd_error *err)
{
    seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->n_done)
        s->n_after_done++;
    s->n_done++;
    s->code = err ? err->code : 0;
    s->bin_len = bin_len;
    if (resp) {
        text_output(resp, bin, bin_len, s->final, sizeof(s->final));
        s->completion = json_integer_value(
            json_object_get(json_object_get(resp, "parameters"), "completion_tokens"));
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static const kv_run_cbs CBS = {on_token, on_done};

static void wait_done(seen *s)
{
    pthread_mutex_lock(&s->mu);
    while (!s->n_done)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void wait_tokens(seen *s, uint32_t n)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool ok = s->n_tokens >= n || s->n_done;
        pthread_mutex_unlock(&s->mu);
        if (ok)
            return;
        usleep(1000);
    }
}

/* A text_input request: the prompt as JSON data. */
static json_t *llm_body(const char *prompt, int max_tokens, bool ignore_eos)
{
    return json_pack("{s:[{s:s,s:s,s:[i],s:[s]}],s:{s:i,s:f,s:b,s:b}}", "inputs", "name",
                     "text_input", "datatype", "BYTES", "shape", 1, "data", prompt, "parameters",
                     "max_tokens", max_tokens, "temperature", 0.0, "ignore_eos", ignore_eos,
                     "binary_data_output", true);
}

static int start(const char *model, json_t *body, bool stream, seen *s, kv_run **out,
                 inferd_error *e)
{
    const kv_env en = env();
    int rc = inferd__kv_start(g_pump, &en, model, body, NULL, 0, stream, &CBS, s, out, e);
    json_decref(body);
    return rc;
}

static void test_identity(void **state)
{
    (void)state;
    seen s;
    seen_init(&s);
    const float in[2] = {1.5f, -2.0f};
    json_t *body = json_pack("{s:[{s:s,s:s,s:[i],s:{s:i}}],s:{s:b}}", "inputs", "name", "INPUT0",
                             "datatype", "FP32", "shape", 2, "parameters", "binary_data_size", 8,
                             "parameters", "binary_data_output", true);
    const kv_env en = env();
    kv_run *r = NULL;
    inferd_error e = {0};
    assert_int_equal(inferd__kv_start(g_pump, &en, "ident", body, (const char *)in, sizeof(in),
                                      false, &CBS, &s, &r, &e),
                     0);
    json_decref(body);
    wait_done(&s);
    assert_int_equal(s.code, 0);
    assert_int_equal(s.bin_len, 8);
    inferd__kv_release(r);
    assert_int_equal(s.n_after_done, 0);
    seen_fini(&s);
}

/* A streamed run's pieces join to the text of the same run not streamed. */
static void test_stream_equals_unary(void **state)
{
    (void)state;
    seen a, b;
    seen_init(&a);
    seen_init(&b);
    kv_run *ra = NULL, *rb = NULL;
    inferd_error e = {0};
    assert_int_equal(
        start("stories260K", llm_body("Once upon a time", 24, false), false, &a, &ra, &e), 0);
    assert_int_equal(
        start("stories260K", llm_body("Once upon a time", 24, false), true, &b, &rb, &e), 0);
    wait_done(&a);
    wait_done(&b);
    assert_int_equal(a.code, 0);
    assert_int_equal(b.code, 0);
    assert_int_equal(a.n_tokens, 0); /* not streamed: no token callbacks */
    assert_int_equal(b.n_tokens, 24);
    assert_false(b.out_of_order);
    assert_int_equal(a.completion, 24);
    char joined[4096];
    snprintf(joined, sizeof(joined), "%.*s%s", (int)b.text_len, b.text, b.final);
    assert_string_equal(joined, a.final);
    assert_true(strlen(a.final) > 10);
    inferd__kv_release(ra);
    inferd__kv_release(rb);
    assert_int_equal(a.n_after_done + b.n_after_done, 0);
    seen_fini(&a);
    seen_fini(&b);
}

/* Many streamed runs at once: each in order, each done once. */
static void test_many_streams(void **state)
{
    (void)state;
    enum { N = 40 };
    static seen s[N];
    kv_run *r[N];
    inferd_error e = {0};
    for (int i = 0; i < N; i++) {
        seen_init(&s[i]);
        assert_int_equal(
            start("stories260K", llm_body("Once upon a time", 12, true), true, &s[i], &r[i], &e),
            0);
    }
    for (int i = 0; i < N; i++) {
        wait_done(&s[i]);
        assert_int_equal(s[i].code, 0);
        assert_int_equal(s[i].n_tokens, 12);
        assert_false(s[i].out_of_order);
        assert_int_equal(s[i].text_len, s[0].text_len);
        assert_memory_equal(s[i].text, s[0].text, s[0].text_len);
    }
    for (int i = 0; i < N; i++) {
        inferd__kv_release(r[i]);
        assert_int_equal(s[i].n_after_done, 0);
        seen_fini(&s[i]);
    }
}

/* Cancel after the first token: done once, with INFERD_E_CANCELLED. */
static void test_cancel(void **state)
{
    (void)state;
    seen s;
    seen_init(&s);
    kv_run *r = NULL;
    inferd_error e = {0};
    assert_int_equal(start("stories260K", llm_body("Hello", 400, true), true, &s, &r, &e), 0);
    wait_tokens(&s, 1);
    inferd__kv_cancel(r);
    inferd__kv_cancel(r); /* idempotent */
    wait_done(&s);
    assert_int_equal(s.code, INFERD_E_CANCELLED);
    assert_true(s.n_tokens < 400);
    inferd__kv_release(r);
    assert_int_equal(s.n_after_done, 0);
    seen_fini(&s);
}

/* Released at once or mid-run, from another thread's point of view: no
 * callback after the release returns. */
static void test_release_any_time(void **state)
{
    (void)state;
    enum { N = 24 };
    static seen s[N];
    for (int i = 0; i < N; i++) {
        seen_init(&s[i]);
        kv_run *r = NULL;
        inferd_error e = {0};
        assert_int_equal(
            start("stories260K", llm_body("Once upon a time", 200, true), i % 2, &s[i], &r, &e), 0);
        if (i % 3 == 1)
            wait_tokens(&s[i], 1 + (uint32_t)i);
        inferd__kv_release(r);
        pthread_mutex_lock(&s[i].mu);
        const uint32_t tokens = s[i].n_tokens;
        const int done = s[i].n_done;
        pthread_mutex_unlock(&s[i].mu);
        usleep(2000);
        pthread_mutex_lock(&s[i].mu);
        assert_int_equal(s[i].n_tokens, tokens);
        assert_int_equal(s[i].n_done, done);
        pthread_mutex_unlock(&s[i].mu);
        seen_fini(&s[i]);
    }
    /* The model still serves. */
    seen t;
    seen_init(&t);
    kv_run *r = NULL;
    inferd_error e = {0};
    assert_int_equal(
        start("stories260K", llm_body("Once upon a time", 4, false), false, &t, &r, &e), 0);
    wait_done(&t);
    assert_int_equal(t.code, 0);
    inferd__kv_release(r);
    seen_fini(&t);
}

/* A run whose model is not loaded is submitted on a pump thread once the
 * model loads; one cancelled before it was submitted ends CANCELLED. */
static void test_load_first(void **state)
{
    (void)state;
    inferd_error e = {0};
    const kv_env en = env();
    assert_int_equal(inferd__kv_repository_load(&en, "stories260K", false, "index", &e), 0);
    seen a, b;
    seen_init(&a);
    seen_init(&b);
    kv_run *ra = NULL, *rb = NULL;
    assert_int_equal(
        start("stories260K", llm_body("Once upon a time", 8, false), true, &a, &ra, &e), 0);
    assert_int_equal(
        start("stories260K", llm_body("Once upon a time", 8, false), true, &b, &rb, &e), 0);
    inferd__kv_cancel(rb);
    wait_done(&a);
    wait_done(&b);
    assert_int_equal(a.code, 0);
    assert_int_equal(a.n_tokens, 8);
    assert_true(b.code == INFERD_E_CANCELLED || b.code == 0);
    inferd__kv_release(ra);
    inferd__kv_release(rb);
    seen_fini(&a);
    seen_fini(&b);
}

/* Errors found before a run starts: returned, and no callback. */
static void test_errors_before_start(void **state)
{
    (void)state;
    seen s;
    seen_init(&s);
    kv_run *r = NULL;
    inferd_error e = {0};
    assert_int_equal(start("nope", llm_body("Hi", 4, false), false, &s, &r, &e),
                     INFERD_E_MODEL_NOT_FOUND);
    assert_non_null(strstr(e.msg, "model 'nope'"));
    assert_null(r);
    memset(&e, 0, sizeof(e));
    assert_int_equal(start("stories260K", json_pack("{s:[]}", "inputs"), false, &s, &r, &e),
                     INFERD_E_INVALID);
    assert_null(r);
    memset(&e, 0, sizeof(e));
    assert_int_equal(start("stories260K", llm_body("Hi", -3, false), false, &s, &r, &e),
                     INFERD_E_INVALID);
    assert_string_equal(e.param, "max_tokens");
    assert_int_equal(s.n_done + (int)s.n_tokens, 0);
    seen_fini(&s);
}

/* Released from inside its own callbacks (a door whose call ended there):
 * nothing after, and freed once the callback returns. */
typedef struct self_release {
    seen s;
    kv_run *run;
    uint32_t at_token; /* release in the token callback with this index; else in done */
    pthread_mutex_t mu;
    bool released;
} self_release;

static void sr_token(void *ctx, int32_t id, uint32_t index, const char *text, size_t len)
{
    self_release *x = ctx;
    on_token(&x->s, id, index, text, len);
    if (index == x->at_token) {
        pthread_mutex_lock(&x->mu);
        kv_run *r = x->run;
        x->released = true;
        pthread_mutex_unlock(&x->mu);
        inferd__kv_release(r);
    }
}

static void sr_done(void *ctx, json_t *resp, const char *bin, size_t bin_len,
                    const inferd_error *err)
{
    self_release *x = ctx;
    pthread_mutex_lock(&x->mu);
    kv_run *r = x->run;
    const bool already = x->released;
    x->released = true;
    pthread_mutex_unlock(&x->mu);
    on_done(&x->s, resp, bin, bin_len, err);
    if (!already)
        inferd__kv_release(r);
}

static void test_release_in_callback(void **state)
{
    (void)state;
    static const kv_run_cbs cbs = {sr_token, sr_done};
    for (int k = 0; k < 6; k++) {
        self_release x;
        memset(&x, 0, sizeof(x));
        seen_init(&x.s);
        pthread_mutex_init(&x.mu, NULL);
        x.at_token = k < 3 ? (uint32_t)k * 3 : UINT32_MAX;
        const kv_env en = env();
        inferd_error e = {0};
        json_t *body = llm_body("Once upon a time", 16, true);
        pthread_mutex_lock(&x.mu); /* the callbacks wait until run is set */
        assert_int_equal(
            inferd__kv_start(g_pump, &en, "stories260K", body, NULL, 0, true, &cbs, &x, &x.run, &e),
            0);
        pthread_mutex_unlock(&x.mu);
        json_decref(body);
        for (;;) { /* until it let go of itself */
            pthread_mutex_lock(&x.mu);
            const bool done = x.released;
            pthread_mutex_unlock(&x.mu);
            if (done)
                break;
            usleep(1000);
        }
        usleep(20000); /* nothing comes after the release */
        pthread_mutex_lock(&x.s.mu);
        if (k < 3)
            assert_int_equal(x.s.n_tokens, x.at_token + 1);
        else
            assert_int_equal(x.s.n_done, 1);
        assert_int_equal(x.s.n_after_done, 0);
        pthread_mutex_unlock(&x.s.mu);
        pthread_mutex_destroy(&x.mu);
        seen_fini(&x.s);
    }
}

static void job(void *ctx)
{
    seen *s = ctx;
    on_done(s, NULL, NULL, 0, NULL);
}

static void test_post(void **state)
{
    (void)state;
    seen s;
    seen_init(&s);
    inferd_error e = {0};
    assert_int_equal(inferd__kv_post(g_pump, job, &s, &e), 0);
    wait_done(&s);
    assert_int_equal(s.n_done, 1);
    seen_fini(&s);
}

static int setup(void **state)
{
    (void)state;
    inferd_frontend_opts o = inferd_frontend_opts_default();
    o.n_models = 1;
    o.models[0].path = g_stories;
    o.model_opts.sched.n_slots = 4;
    o.model_opts.sched.n_threads = 1;
    o.model_opts.sched.n_queue_max = 64;
    inferd_error e = {0};
    if (inferd_frontend_create(&o, &g_fe, &e) < 0 || inferd_frontend_load_models(g_fe, &e) < 0 ||
        inferd__kv_pump_create(2, &g_pump, &e) < 0) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    inferd__kv_pump_destroy(g_pump);
    inferd_frontend_drain(g_fe);
    inferd_frontend_destroy(g_fe);
    return 0;
}

int main(void)
{
    inferd_log_set_level(INFERD_LOG_WARN);
    snprintf(g_stories, sizeof(g_stories), "%s/models/stories260K.gguf", INFERD_FIXTURES);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_stream_equals_unary),
        cmocka_unit_test(test_many_streams),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_release_any_time),
        cmocka_unit_test(test_load_first),
        cmocka_unit_test(test_errors_before_start),
        cmocka_unit_test(test_post),
        cmocka_unit_test(test_release_in_callback),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
