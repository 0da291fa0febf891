/* Model registry: one load under racing callers, reference counts,
 * keep-alive on a fake clock, LRU eviction under a byte budget, refusals
 * with exact figures, failed loads shared and retried, unload and drain,
 * list and metrics, and allocation failures. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/model.h"
#include "inferd/registry.h"

#define N_RACERS 16
#define MODEL_FILE "stories260K.gguf"

typedef struct fake_clock {
    _Atomic uint64_t now_ms;
} fake_clock;

static uint64_t fake_now(void *ctx)
{
    fake_clock *c = ctx;
    return atomic_load_explicit(&c->now_ms, memory_order_relaxed);
}

static void advance(fake_clock *c, uint64_t ms)
{
    atomic_fetch_add_explicit(&c->now_ms, ms, memory_order_relaxed);
}

static void fixture(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s/models/%s", INFERD_FIXTURES, file);
}

/* Small params: a short context and batch keep the state a few hundred KB. */
static inferd_registry_model_opts small_opts(const char *path)
{
    inferd_registry_model_opts o = inferd_registry_model_opts_default();
    o.path = path;
    o.sched.model.n_ctx = 32;
    o.sched.n_slots = 1;
    o.sched.n_prefill_chunk = 3;
    o.sched.n_threads = 1;
    return o;
}

static uint64_t cost_of(const char *path)
{
    inferd_registry_model_opts o = small_opts(path);
    const inferd_model_params mp = inferd_sched_model_params(&o.sched);
    inferd_error err = {0};
    uint64_t wb = 0, sb = 0;
    assert_int_equal(inferd_model_estimate(path, &mp, &wb, &sb, &err), 0);
    return wb + sb;
}

static inferd_registry *make_registry(fake_clock *clk, uint64_t budget_bytes)
{
    inferd_registry_opts o = inferd_registry_opts_default();
    inferd_registry *r = NULL;
    inferd_error err = {0};
    o.budget_bytes = budget_bytes;
    o.clock = fake_now;
    o.clock_ctx = clk;
    assert_int_equal(inferd_registry_create(&o, &r, &err), 0);
    return r;
}

static inferd_registry_handle *get_ok(inferd_registry *r, const char *id, const char *path)
{
    inferd_registry_model_opts o = small_opts(path);
    inferd_registry_handle *h = NULL;
    inferd_error err = {0};
    if (inferd_registry_get_or_load(r, id, &o, &h, &err) != 0)
        fail_msg("get '%s': %s", id, err.msg);
    assert_non_null(inferd_registry_handle_model(h));
    return h;
}

static size_t list_all(inferd_registry *r, inferd_registry_model_info *out, size_t cap)
{
    size_t n = 0;
    inferd_registry_list(r, out, cap, &n);
    return n;
}

static const inferd_registry_model_info *find_info(const inferd_registry_model_info *infos,
                                                   size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(infos[i].id, id) == 0)
            return &infos[i];
    return NULL;
}

/* --- racing callers ---------------------------------------------------- */

typedef struct racer {
    inferd_registry *r;
    pthread_barrier_t *start;
    const char *id;
    const char *path;
    inferd_registry_handle *h;
    int rc;
    inferd_error err;
} racer;

static void *racer_main(void *arg)
{
    racer *x = arg;
    inferd_registry_model_opts o = small_opts(x->path);
    pthread_barrier_wait(x->start);
    x->rc = inferd_registry_get_or_load(x->r, x->id, &o, &x->h, &x->err);
    return NULL;
}

static void race(inferd_registry *r, const char *id, const char *path, racer *xs)
{
    pthread_t th[N_RACERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_RACERS);
    for (int i = 0; i < N_RACERS; i++) {
        xs[i] = (racer){.r = r, .start = &start, .id = id, .path = path, .rc = 1};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &xs[i]), 0);
    }
    for (int i = 0; i < N_RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
}

static void test_registry_single_load_under_race(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    racer xs[N_RACERS];
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry *r = make_registry(&clk, 0);

    race(r, "m", path, xs);
    for (int i = 0; i < N_RACERS; i++) {
        if (xs[i].rc != 0)
            fail_msg("racer %d: %s", i, xs[i].err.msg);
        assert_ptr_equal(xs[i].h, xs[0].h);
        assert_ptr_equal(inferd_registry_handle_model(xs[i].h),
                         inferd_registry_handle_model(xs[0].h));
    }
    inferd_registry_metrics m;
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.loads, 1);
    assert_int_equal(m.load_failures, 0);
    assert_int_equal(m.hits, N_RACERS - 1);
    inferd_registry_model_info info[4];
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(info[0].n_handles, N_RACERS);
    for (int i = 0; i < N_RACERS; i++)
        inferd_registry_release(r, xs[i].h);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(info[0].n_handles, 0);
    inferd_registry_destroy(r);
}

static void test_registry_refcounts(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    inferd_registry_model_info info[4];
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry *r = make_registry(&clk, 0);

    inferd_registry_handle *a = get_ok(r, "m", path);
    inferd_registry_handle *b = get_ok(r, "m", path);
    inferd_registry_handle *c = get_ok(r, "m", path);
    assert_ptr_equal(a, b);
    assert_ptr_equal(b, c);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(info[0].n_handles, 3);
    inferd_registry_release(r, b);
    list_all(r, info, 4);
    assert_int_equal(info[0].n_handles, 2);
    inferd_registry_release(r, a);
    inferd_registry_release(r, c);
    inferd_registry_release(r, NULL);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(info[0].n_handles, 0);
    assert_int_equal(info[0].state, INFERD_REGISTRY_READY);
    inferd_registry_destroy(r);
    inferd_registry_destroy(NULL);
}

static void test_registry_keep_alive_expiry(void **state)
{
    (void)state;
    fake_clock clk = {1000};
    char path[512];
    inferd_registry_model_info info[4];
    inferd_registry_metrics m;
    inferd_error err = {0};
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry *r = make_registry(&clk, 0);

    /* Default: 5 minutes from the last release. */
    inferd_registry_handle *h = get_ok(r, "dflt", path);
    advance(&clk, 10000);
    assert_int_equal(inferd_registry_collect(r), 0); /* in use: never expires */
    inferd_registry_release(r, h);
    advance(&clk, INFERD_REGISTRY_KEEP_ALIVE_DEFAULT_MS - 1);
    assert_int_equal(inferd_registry_collect(r), 0);
    assert_int_equal(list_all(r, info, 4), 1);
    advance(&clk, 1);
    assert_int_equal(inferd_registry_collect(r), 1);
    assert_int_equal(list_all(r, info, 4), 0);

    /* 0: unloaded when the last handle goes. */
    inferd_registry_model_opts o = small_opts(path);
    o.keep_alive_ms = 0;
    inferd_registry_handle *h1 = NULL, *h2 = NULL;
    assert_int_equal(inferd_registry_get_or_load(r, "zero", &o, &h1, &err), 0);
    assert_int_equal(inferd_registry_get_or_load(r, "zero", &o, &h2, &err), 0);
    inferd_registry_release(r, h1);
    assert_int_equal(list_all(r, info, 4), 1);
    inferd_registry_release(r, h2);
    assert_int_equal(list_all(r, info, 4), 0);

    /* Negative: never. */
    o.keep_alive_ms = -1;
    assert_int_equal(inferd_registry_get_or_load(r, "forever", &o, &h1, &err), 0);
    inferd_registry_release(r, h1);
    advance(&clk, UINT64_C(1) << 40);
    assert_int_equal(inferd_registry_collect(r), 0);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(info[0].keep_alive_ms, -1);

    /* Expiry also happens lazily in get: a short keep-alive runs out while
     * another model is asked for. */
    o.keep_alive_ms = 50;
    assert_int_equal(inferd_registry_get_or_load(r, "short", &o, &h1, &err), 0);
    inferd_registry_release(r, h1);
    advance(&clk, 50);
    h = get_ok(r, "forever", path);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_string_equal(info[0].id, "forever");
    inferd_registry_release(r, h);

    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.expiries, 3);
    assert_int_equal(m.loads, 4);
    inferd_registry_destroy(r);
}

static void test_registry_lru_eviction(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    inferd_registry_model_info info[4];
    inferd_registry_metrics m;
    fixture(path, sizeof(path), MODEL_FILE);
    const uint64_t c = cost_of(path);
    inferd_registry *r = make_registry(&clk, 2 * c);

    inferd_registry_release(r, get_ok(r, "a", path));
    advance(&clk, 1);
    inferd_registry_release(r, get_ok(r, "b", path));
    advance(&clk, 1);
    /* Using a again makes b the least recently used. */
    inferd_registry_release(r, get_ok(r, "a", path));
    advance(&clk, 1);
    inferd_registry_release(r, get_ok(r, "c", path));
    assert_int_equal(list_all(r, info, 4), 2);
    assert_string_equal(info[0].id, "a");
    assert_string_equal(info[1].id, "c");
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.evictions, 1);
    assert_int_equal(m.bytes_resident, 2 * c);

    /* Now a is the least recently used; b comes back in its place. */
    advance(&clk, 1);
    inferd_registry_release(r, get_ok(r, "b", path));
    assert_int_equal(list_all(r, info, 4), 2);
    assert_string_equal(info[0].id, "c");
    assert_string_equal(info[1].id, "b");
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.evictions, 2);
    inferd_registry_destroy(r);
}

static void test_registry_eviction_spares_models_in_use(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    inferd_registry_model_info info[4];
    fixture(path, sizeof(path), MODEL_FILE);
    const uint64_t c = cost_of(path);
    inferd_registry *r = make_registry(&clk, 2 * c);

    /* a is the least recently used but held: b goes instead. */
    inferd_registry_handle *a = get_ok(r, "a", path);
    advance(&clk, 1);
    inferd_registry_release(r, get_ok(r, "b", path));
    advance(&clk, 1);
    inferd_registry_handle *hc = get_ok(r, "c", path);
    assert_int_equal(list_all(r, info, 4), 2);
    assert_non_null(find_info(info, 2, "a"));
    assert_non_null(find_info(info, 2, "c"));
    assert_null(find_info(info, 2, "b"));
    inferd_registry_release(r, a);
    inferd_registry_release(r, hc);
    inferd_registry_destroy(r);
}

static void test_registry_quota_refusal_message(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512], want[256];
    inferd_registry_model_info info[4];
    inferd_registry_metrics m;
    inferd_error err = {0};
    fixture(path, sizeof(path), MODEL_FILE);
    const uint64_t c = cost_of(path), spare = c / 2;
    inferd_registry *r = make_registry(&clk, 2 * c + spare);

    inferd_registry_handle *a = get_ok(r, "a", path);
    inferd_registry_handle *b = get_ok(r, "b", path);
    inferd_registry_model_opts o = small_opts(path);
    inferd_registry_handle *h = NULL;
    assert_int_equal(inferd_registry_get_or_load(r, "c", &o, &h, &err), INFERD_E_QUOTA);
    assert_null(h);
    print_message("refusal: %s\n", err.msg);
    snprintf(want, sizeof(want), "needs %llu bytes", (unsigned long long)c);
    if (!strstr(err.msg, want))
        fail_msg("'%s' lacks '%s'", err.msg, want);
    snprintf(want, sizeof(want), "only %llu bytes are free (budget %llu, %llu held",
             (unsigned long long)spare, (unsigned long long)(2 * c + spare),
             (unsigned long long)(2 * c));
    if (!strstr(err.msg, want))
        fail_msg("'%s' lacks '%s'", err.msg, want);
    /* Nothing was evicted; a and b are intact; the refusal left no entry. */
    assert_int_equal(list_all(r, info, 4), 2);
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.evictions, 0);
    assert_int_equal(m.load_failures, 1);
    assert_int_equal(m.bytes_reserved, 2 * c);

    /* One released: now c fits by evicting it. */
    inferd_registry_release(r, a);
    h = get_ok(r, "c", path);
    assert_int_equal(list_all(r, info, 4), 2);
    assert_non_null(find_info(info, 2, "b"));
    assert_non_null(find_info(info, 2, "c"));
    inferd_registry_release(r, h);
    inferd_registry_release(r, b);
    inferd_registry_destroy(r);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Copy @p src to @p dst, its first @p max_len bytes at most. */
static void copy_file(const char *dst, const char *src, long max_len)
{
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    if (n > max_len)
        n = max_len;
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    write_file(dst, buf, (size_t)n);
    free(buf);
}

/* Every racer gets the same error; nothing is cached, so once the file is
 * fixed the next call loads it. */
static void check_failed_race(inferd_registry *r, const char *id, const char *path, int code)
{
    racer xs[N_RACERS];
    race(r, id, path, xs);
    for (int i = 0; i < N_RACERS; i++) {
        assert_int_equal(xs[i].rc, code);
        assert_int_equal(xs[i].err.code, code);
        assert_null(xs[i].h);
        assert_string_equal(xs[i].err.msg, xs[0].err.msg);
    }
    inferd_registry_model_info info[4];
    assert_int_equal(list_all(r, info, 4), 0);
}

static void test_registry_failed_load_shared_and_retried(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char dir[] = "/tmp/inferd-test-registry-XXXXXX", path[600], good[512];
    inferd_registry_metrics m;
    assert_non_null(mkdtemp(dir));
    fixture(good, sizeof(good), MODEL_FILE);
    snprintf(path, sizeof(path), "%s/model.gguf", dir);
    inferd_registry *r = make_registry(&clk, 0);

    check_failed_race(r, "m", path, INFERD_E_IO);
    inferd_registry_get_metrics(r, &m);
    assert_true(m.load_failures >= 1 && m.load_failures <= N_RACERS);
    assert_int_equal(m.loads, 0);
    assert_int_equal(m.bytes_reserved, 0);

    /* A corrupt file: the real one cut short inside its tensor data. */
    copy_file(path, good, 4096);
    check_failed_race(r, "m", path, INFERD_E_FORMAT);

    copy_file(path, good, 1L << 30);
    racer xs[N_RACERS];
    race(r, "m", path, xs);
    for (int i = 0; i < N_RACERS; i++) {
        assert_int_equal(xs[i].rc, 0);
        assert_ptr_equal(xs[i].h, xs[0].h);
    }
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.loads, 1);
    for (int i = 0; i < N_RACERS; i++)
        inferd_registry_release(r, xs[i].h);
    inferd_registry_destroy(r);
    unlink(path);
    rmdir(dir);
}

static void test_registry_unload_refused_while_held(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    inferd_registry_model_info info[4];
    inferd_error err = {0};
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry *r = make_registry(&clk, 0);

    inferd_registry_handle *h = get_ok(r, "m", path);
    assert_int_equal(inferd_registry_unload(r, "m", false, &err), INFERD_E_BUSY);
    assert_non_null(strstr(err.msg, "model 'm' is in use (1 handles)"));
    assert_int_equal(inferd_error_http_status(INFERD_E_BUSY), 409);
    assert_string_equal(inferd_error_http_code(INFERD_E_BUSY), "busy");
    inferd_registry_release(r, h);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(inferd_registry_unload(r, "m", false, &err), 0);
    assert_int_equal(list_all(r, info, 4), 0);
    assert_int_equal(inferd_registry_unload(r, "m", false, &err), INFERD_E_NOT_FOUND);
    assert_non_null(strstr(err.msg, "'m' is not loaded"));
    inferd_registry_destroy(r);
}

static void test_registry_drain_unload(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    inferd_registry_model_info info[4];
    inferd_registry_metrics m;
    inferd_error err = {0};
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry *r = make_registry(&clk, 0);

    inferd_registry_handle *h1 = get_ok(r, "m", path);
    inferd_registry_handle *h2 = get_ok(r, "m", path);
    assert_int_equal(inferd_registry_unload(r, "m", true, &err), 0);
    assert_int_equal(list_all(r, info, 4), 1);
    assert_int_equal(info[0].state, INFERD_REGISTRY_UNLOADING);
    assert_string_equal(inferd_registry_state_name(info[0].state), "unloading");

    /* New handles are refused while it drains. */
    inferd_registry_model_opts o = small_opts(path);
    inferd_registry_handle *h3 = NULL;
    assert_int_equal(inferd_registry_get_or_load(r, "m", &o, &h3, &err), INFERD_E_BUSY);
    assert_non_null(strstr(err.msg, "is being unloaded"));
    assert_int_equal(inferd_registry_unload(r, "m", false, &err), INFERD_E_BUSY);
    assert_int_equal(inferd_registry_unload(r, "m", true, &err), 0);

    /* The model stays usable by the holders until the last release. */
    assert_non_null(inferd_model_get_hparams(inferd_registry_handle_model(h1)));
    inferd_registry_release(r, h1);
    assert_int_equal(list_all(r, info, 4), 1);
    inferd_registry_release(r, h2);
    assert_int_equal(list_all(r, info, 4), 0);
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.unloads, 1);
    assert_int_equal(m.bytes_resident, 0);

    /* Gone, it loads again on demand. */
    inferd_registry_release(r, get_ok(r, "m", path));
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.loads, 2);
    inferd_registry_destroy(r);
}

static void test_registry_list_and_metrics(void **state)
{
    (void)state;
    fake_clock clk = {5000};
    char p1[512], p2[512];
    inferd_registry_model_info info[4];
    inferd_registry_metrics m;
    fixture(p1, sizeof(p1), MODEL_FILE);
    fixture(p2, sizeof(p2), "stories260K-ff192-q4_0.gguf");
    inferd_registry *r = make_registry(&clk, 0);

    inferd_registry_model_opts o = small_opts(p1);
    const inferd_model_params mp = inferd_sched_model_params(&o.sched);
    uint64_t w1 = 0, s1 = 0, w2 = 0, s2 = 0;
    inferd_error err = {0};
    assert_int_equal(inferd_model_estimate(p1, &mp, &w1, &s1, &err), 0);
    assert_int_equal(inferd_model_estimate(p2, &mp, &w2, &s2, &err), 0);

    inferd_registry_handle *a = get_ok(r, "one", p1);
    advance(&clk, 100);
    inferd_registry_handle *b = get_ok(r, "two", p2);
    inferd_registry_handle *b2 = get_ok(r, "two", p2);
    advance(&clk, 100);
    inferd_registry_release(r, a);

    assert_int_equal(list_all(r, info, 4), 2);
    /* Least recently used first: two (t=5100), then one (released at 5200). */
    assert_string_equal(info[0].id, "two");
    assert_int_equal(info[0].state, INFERD_REGISTRY_READY);
    assert_int_equal(info[0].weight_bytes, w2);
    assert_int_equal(info[0].state_bytes, s2);
    assert_int_equal(info[0].n_handles, 2);
    assert_int_equal(info[0].last_use_ms, 5100);
    assert_int_equal(info[0].keep_alive_ms, INFERD_REGISTRY_KEEP_ALIVE_DEFAULT_MS);
    assert_string_equal(info[1].id, "one");
    assert_int_equal(info[1].weight_bytes, w1);
    assert_int_equal(info[1].state_bytes, s1);
    assert_int_equal(info[1].n_handles, 0);
    assert_int_equal(info[1].last_use_ms, 5200);
    assert_string_equal(inferd_registry_state_name(info[1].state), "ready");

    /* A short array gets the first entries and the full count. */
    size_t n = 0;
    inferd_registry_list(r, info, 1, &n);
    assert_int_equal(n, 2);
    assert_string_equal(info[0].id, "two");

    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.loads, 2);
    assert_int_equal(m.hits, 1);
    assert_int_equal(m.load_failures, 0);
    assert_int_equal(m.evictions, 0);
    assert_int_equal(m.expiries, 0);
    assert_int_equal(m.bytes_resident, w1 + s1 + w2 + s2);
    assert_int_equal(m.bytes_reserved, w1 + s1 + w2 + s2);
    assert_int_equal(m.n_models, 2);
    assert_int_equal(m.budget_bytes, 0);
    assert_true(m.load_ms_total < 60000);

    /* Scheduler figures by id, without touching the keep-alive. */
    inferd_sched_stats st;
    assert_int_equal(inferd_registry_sched_stats(r, "one", &st), 0);
    assert_int_equal(st.state, INFERD_SCHED_READY);
    assert_int_equal(st.n_slots, o.sched.n_slots);
    assert_int_equal(inferd_registry_sched_stats(r, "three", &st), INFERD_E_NOT_FOUND);
    assert_int_equal(list_all(r, info, 4), 2);
    assert_string_equal(info[1].id, "one");
    assert_int_equal(info[1].last_use_ms, 5200);
    inferd_registry_release(r, b);
    inferd_registry_release(r, b2);
    inferd_registry_destroy(r);
}

static void test_registry_bad_arguments(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512], long_id[INFERD_REGISTRY_ID_MAX + 8];
    inferd_error err = {0};
    inferd_registry_handle *h = NULL;
    inferd_registry *r = NULL;
    fixture(path, sizeof(path), MODEL_FILE);

    inferd_registry_opts ro = inferd_registry_opts_default();
    ro.n_models_max = 0;
    assert_int_equal(inferd_registry_create(&ro, &r, &err), INFERD_E_RANGE);
    ro.n_models_max = 1;
    ro.clock = fake_now;
    ro.clock_ctx = &clk;
    assert_int_equal(inferd_registry_create(&ro, &r, &err), 0);

    assert_int_equal(inferd_registry_get_or_load(r, "", NULL, &h, &err), INFERD_E_INVALID);
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    assert_int_equal(inferd_registry_get_or_load(r, long_id, NULL, &h, &err), INFERD_E_INVALID);

    /* The cap on models counts loaded ones too. */
    inferd_registry_handle *a = get_ok(r, "a", path);
    inferd_registry_model_opts o = small_opts(path);
    assert_int_equal(inferd_registry_get_or_load(r, "b", &o, &h, &err), INFERD_E_OVERLOADED);
    assert_null(h);
    inferd_registry_release(r, a);
    inferd_registry_destroy(r);
}

/* Every allocation on the way may fail: E_NOMEM, no entry left behind, no
 * leak (the ASan build checks), and the registry works afterwards. */
static void test_registry_alloc_failures(void **state)
{
    (void)state;
    fake_clock clk = {0};
    char path[512];
    inferd_registry_model_info info[4];
    inferd_registry_metrics m;
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry *r = make_registry(&clk, 0);
    inferd_registry_model_opts o = small_opts(path);
    long n;

    for (n = 1; n < 100000; n++) {
        inferd_error err = {0};
        inferd_registry_handle *h = NULL;
        inferd_alloc_fail_after(n);
        int rc = inferd_registry_get_or_load(r, "m", &o, &h, &err);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            inferd_registry_release(r, h);
            break;
        }
        assert_int_equal(rc, INFERD_E_NOMEM);
        assert_null(h);
        assert_int_equal(list_all(r, info, 4), 0);
        inferd_registry_get_metrics(r, &m);
        assert_int_equal(m.bytes_reserved, 0);
    }
    assert_true(n > 3);
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.loads, 1);
    /* The first three failures hit the entry's own allocations (entry, id,
     * path), before any load starts; every later one is a failed load. */
    assert_int_equal(m.load_failures, (uint64_t)(n - 1 - 3));
    inferd_registry_release(r, get_ok(r, "m", path));
    inferd_registry_release(r, get_ok(r, "other", path));
    assert_int_equal(list_all(r, info, 4), 2);
    inferd_registry_destroy(r);

    /* Creating the registry itself. */
    for (n = 1; n < 100; n++) {
        inferd_registry *r2 = NULL;
        inferd_error err = {0};
        inferd_alloc_fail_after(n);
        int rc = inferd_registry_create(NULL, &r2, &err);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            inferd_registry_destroy(r2);
            break;
        }
        assert_int_equal(rc, INFERD_E_NOMEM);
    }
}

/* The background reaper unloads an expired model on its own (real clock,
 * bounded wait). */
static void test_registry_reaper_thread(void **state)
{
    (void)state;
    char path[512];
    inferd_registry_model_info info[4];
    inferd_error err = {0};
    inferd_registry *r = NULL;
    fixture(path, sizeof(path), MODEL_FILE);
    inferd_registry_opts ro = inferd_registry_opts_default();
    ro.reaper_interval_ms = 5;
    assert_int_equal(inferd_registry_create(&ro, &r, &err), 0);

    inferd_registry_model_opts o = small_opts(path);
    o.keep_alive_ms = 1;
    inferd_registry_handle *h = NULL;
    assert_int_equal(inferd_registry_get_or_load(r, "m", &o, &h, &err), 0);
    inferd_registry_release(r, h);
    size_t n = 1;
    for (int i = 0; i < 2000 && n > 0; i++) {
        inferd_sleep_ms(5);
        n = list_all(r, info, 4);
    }
    assert_int_equal(n, 0);
    inferd_registry_metrics m;
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.expiries, 1);
    inferd_registry_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_single_load_under_race),
        cmocka_unit_test(test_registry_refcounts),
        cmocka_unit_test(test_registry_keep_alive_expiry),
        cmocka_unit_test(test_registry_lru_eviction),
        cmocka_unit_test(test_registry_eviction_spares_models_in_use),
        cmocka_unit_test(test_registry_quota_refusal_message),
        cmocka_unit_test(test_registry_failed_load_shared_and_retried),
        cmocka_unit_test(test_registry_unload_refused_while_held),
        cmocka_unit_test(test_registry_drain_unload),
        cmocka_unit_test(test_registry_list_and_metrics),
        cmocka_unit_test(test_registry_bad_arguments),
        cmocka_unit_test(test_registry_alloc_failures),
        cmocka_unit_test(test_registry_reaper_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
