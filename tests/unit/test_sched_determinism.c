/* Batch-invariant determinism of the scheduler: 32 requests (greedy and
 * seeded sampling, prompts of 1..60 tokens, some with stop strings or a
 * repetition penalty) are run one by one through inferd_generate as the
 * reference, then through schedulers alone, 8, 16 and 32 at once, in
 * different arrival orders (one submitting thread or four), thread counts
 * and prefill chunk sizes. Every request's ids, text, finish reason, prompt
 * length and seed must equal the reference's exactly, on an F32 and a Q4_0
 * model. Events are read by polling after on_event wake-ups. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/generate.h"
#include "inferd/model.h"
#include "inferd/pool.h"
#include "inferd/scheduler.h"
#include "inferd/tokenizer.h"

#define N_REQ 32
#define N_CTX 128
#define PROMPT_MAX 64
#define GEN_MAX 48
#define N_SUBMITTERS 4
/* No wake-up at all for this long while requests are pending means the
 * scheduler is stuck; a generous bound so that slow (sanitizer) builds pass. */
#define STALL_MS 60000

/* One request of the set and its reference result. */
typedef struct req_spec {
    int32_t prompt[PROMPT_MAX]; /* (n_prompt) BOS first */
    size_t n_prompt;
    const char *text; /* non-NULL: submitted as text (same ids) */
    inferd_sampler_params sampling;
    int32_t max_tokens;
    const char *stop[2];
    int n_stop;
    /* Reference, from inferd_generate. */
    int32_t ref_ids[GEN_MAX];
    size_t ref_n_ids;
    char *ref_text; /* owned */
    size_t ref_text_len;
    inferd_finish ref_finish;
} req_spec;

/* What one scheduler run gave for one request. */
typedef struct req_result {
    inferd_request *r;
    int32_t ids[GEN_MAX];
    size_t n_ids;
    char text[4096];
    size_t text_len;
    bool ended;
    inferd_event_type end_type;
    inferd_finish finish;
    uint32_t n_prompt, n_gen;
    uint64_t seed;
    int code;
    char message[256];
} req_result;

static const char *const openings[] = {
    "Once upon a time",
    "Tom",
    "The little dog ran to the park and saw a big red ball.",
    "One day, a girl named Lily found a shiny stone in the garden. She wanted to show it to "
    "her mom, so she ran inside the house as fast as she could.",
    "Ben and Mia were friends.",
    "The sun was hot.",
    "Once there was a small bird who could not fly. Every day he watched the other birds "
    "go up into the sky and he felt sad.",
    "A cat sat on the mat",
    "Sara liked to paint",
    "In a big forest there lived a bear named Bob. Bob was very hungry.",
    "It was a rainy day and",
    "The boy said, \"",
    "Mom made a cake for",
    "Once upon a time, in a small town, there was a kind old man who loved to help "
    "everyone.",
    "Max had a toy car.",
    "The frog jumped",
};

static req_spec specs[N_REQ];

static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static void fixture(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s/models/%s", INFERD_FIXTURES, file);
}

/* Build the 32 requests for the model's vocabulary: even ones from story
 * openings (tokenized with BOS; some submitted as text), odd ones BOS +
 * pseudo-random ids; requests 0,1, 4,5, ... greedy, the others sampled with
 * explicit seeds and varied filters. */
static void build_specs(inferd_model *m)
{
    const inferd_vocab *v = inferd_model_get_vocab(m);
    const int32_t n_vocab = (int32_t)inferd_model_get_hparams(m)->n_vocab;
    const int32_t bos = inferd_vocab_bos(v);
    static const int32_t top_ks[] = {40, 0, 10, 100, 1};
    static const float top_ps[] = {0.95f, 1.0f, 0.9f, 0.8f};
    static const float min_ps[] = {0.05f, 0.0f, 0.1f};
    uint64_t rng = 20261125;
    inferd_error err = {0};

    for (int i = 0; i < N_REQ; i++) {
        req_spec *s = &specs[i];
        memset(s, 0, sizeof(*s));
        if (i % 2 == 0) {
            const char *o = openings[(i / 2) % (int)(sizeof(openings) / sizeof(openings[0]))];
            assert_int_equal(inferd_tokenize(v, o, strlen(o), true, false, s->prompt, PROMPT_MAX,
                                             &s->n_prompt, &err),
                             0);
            assert_int_equal(s->prompt[0], bos);
            if (i % 6 == 0 || i % 6 == 2)
                s->text = o;
        } else {
            /* Lengths 1..60: 1 (BOS alone), then spread by a stride. */
            s->n_prompt = i == 1 ? 1 : 1 + (size_t)((i * 37) % 60);
            s->prompt[0] = bos;
            for (size_t j = 1; j < s->n_prompt; j++)
                s->prompt[j] = 3 + (int32_t)(lcg_next(&rng) % (uint64_t)(n_vocab - 3));
        }
        s->sampling = inferd_sampler_params_default();
        if ((i / 2) % 2 == 0) {
            s->sampling.temperature = 0.0f;
        } else {
            s->sampling.temperature = 0.8f + 0.1f * (float)(i % 3);
            s->sampling.top_k = top_ks[i % 5];
            s->sampling.top_p = top_ps[i % 4];
            s->sampling.min_p = min_ps[i % 3];
            s->sampling.has_seed = true;
            s->sampling.seed = 1000003ULL * (uint64_t)(i + 1);
        }
        if (i % 7 == 3) {
            s->sampling.repeat_penalty = 1.1f;
            s->sampling.repeat_last_n = i % 2 ? 64 : 16;
        }
        if (i == 13)
            s->sampling.frequency_penalty = 0.2f;
        s->max_tokens = 24 + (int32_t)((i * 11) % 25);
        if (i % 5 == 2) {
            s->stop[0] = ".";
            s->n_stop = 1;
        } else if (i % 5 == 4) {
            s->stop[0] = " was";
            s->stop[1] = "!";
            s->n_stop = 2;
        }
    }
}

/* Run every request alone through inferd_generate: the reference. */
static void make_reference(const char *path)
{
    inferd_model_params mp = inferd_model_params_default();
    inferd_model *m = NULL;
    inferd_pool *pool = NULL;
    inferd_error err = {0};
    int n_stop = 0, n_length = 0;

    mp.n_ctx = N_CTX;
    mp.n_seq_max = 1;
    if (inferd_model_load(path, &mp, &m, &err) < 0)
        fail_msg("load %s: %s", path, err.msg);
    assert_int_equal(inferd_pool_create(2, &pool, &err), 0);
    build_specs(m);
    for (int i = 0; i < N_REQ; i++) {
        req_spec *s = &specs[i];
        inferd_gen_params gp = inferd_gen_params_default();
        inferd_gen_result res = {0};
        gp.sampling = s->sampling;
        gp.n_predict = s->max_tokens;
        for (int k = 0; k < s->n_stop; k++)
            gp.stop[k] = s->stop[k];
        gp.n_stop = s->n_stop;
        if (inferd_generate(m, pool, s->prompt, s->n_prompt, &gp, NULL, NULL, &res, &err) < 0)
            fail_msg("reference %d: %s", i, err.msg);
        assert_true(res.n_ids <= GEN_MAX);
        memcpy(s->ref_ids, res.ids, res.n_ids * sizeof(int32_t));
        s->ref_n_ids = res.n_ids;
        s->ref_text = res.text;
        s->ref_text_len = res.text_len;
        s->ref_finish = res.finish;
        res.text = NULL;
        inferd_gen_result_fini(&res);
        n_stop += s->ref_finish == INFERD_FINISH_STOP;
        n_length += s->ref_finish == INFERD_FINISH_LENGTH;
    }
    /* The set must exercise stop strings and the length limit. */
    assert_true(n_stop >= 1);
    assert_true(n_length >= 1);
    inferd_pool_destroy(pool);
    inferd_model_destroy(m);
}

static void free_reference(void)
{
    for (int i = 0; i < N_REQ; i++) {
        inferd_free(specs[i].ref_text);
        specs[i].ref_text = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Wake-ups: on_event bumps a counter the reader waits on. */

typedef struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t n_events; /* guarded by mu */
} waker;

static void waker_init(waker *w)
{
    pthread_mutex_init(&w->mu, NULL);
    assert_int_equal(inferd_cond_init_monotonic(&w->cv), 0); /* waker_wait times out */
    w->n_events = 0;
}

static void waker_fini(waker *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

static void on_event(void *ctx)
{
    waker *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->n_events++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static uint64_t waker_count(waker *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t n = w->n_events;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* Wait until the counter moves past @p seen; false after STALL_MS with no
 * wake-up at all. */
static bool waker_wait(waker *w, uint64_t seen)
{
    const uint64_t until = inferd_deadline_in_ms(STALL_MS).at_ns;
    bool moved;
    pthread_mutex_lock(&w->mu);
    while (w->n_events == seen) {
        if (inferd_cond_wait_until_ns(&w->cv, &w->mu, until) == ETIMEDOUT)
            break;
    }
    moved = w->n_events != seen;
    pthread_mutex_unlock(&w->mu);
    return moved;
}

/* Read every event available now on @p res->r; returns how many. */
static int drain_events(int idx, req_result *res)
{
    int n = 0;
    while (!res->ended) {
        inferd_event ev;
        int rc = inferd_request_next(res->r, &ev, 0);
        if (rc == INFERD_E_TIMEOUT)
            break;
        if (rc != 0)
            fail_msg("request %d: inferd_request_next returned %d before a terminal event", idx,
                     rc);
        n++;
        switch (ev.type) {
        case INFERD_EVENT_TOKEN:
            if (ev.index != res->n_ids)
                fail_msg("request %d: TOKEN index %u, expected %zu", idx, ev.index, res->n_ids);
            if (res->n_ids >= GEN_MAX)
                fail_msg("request %d: more than %d tokens", idx, GEN_MAX);
            res->ids[res->n_ids++] = ev.token;
            assert_true(res->text_len + ev.text_len < sizeof(res->text));
            if (ev.text_len)
                memcpy(res->text + res->text_len, ev.text, ev.text_len);
            res->text_len += ev.text_len;
            break;
        case INFERD_EVENT_DONE:
            assert_true(res->text_len + ev.text_len < sizeof(res->text));
            if (ev.text_len)
                memcpy(res->text + res->text_len, ev.text, ev.text_len);
            res->text_len += ev.text_len;
            res->finish = ev.finish;
            res->n_prompt = ev.n_prompt;
            res->n_gen = ev.n_gen;
            res->seed = ev.seed;
            res->ended = true;
            res->end_type = ev.type;
            break;
        case INFERD_EVENT_ERROR:
            res->code = ev.code;
            snprintf(res->message, sizeof(res->message), "%s", ev.message ? ev.message : "");
            res->ended = true;
            res->end_type = ev.type;
            break;
        default: fail_msg("request %d: unknown event type %d", idx, (int)ev.type);
        }
    }
    if (res->ended) {
        inferd_event ev;
        assert_int_equal(inferd_request_next(res->r, &ev, 0), INFERD_E_NOT_FOUND);
    }
    return n;
}

/* Poll the listed requests until each has its terminal event, sleeping on
 * the waker between rounds that found nothing. */
static void collect(waker *w, req_result *results, const int *idx, int n)
{
    for (;;) {
        uint64_t seen = waker_count(w);
        int pending = 0, got = 0;
        for (int k = 0; k < n; k++) {
            req_result *res = &results[idx[k]];
            if (res->ended)
                continue;
            got += drain_events(idx[k], res);
            pending += !res->ended;
        }
        if (!pending)
            return;
        if (!got && !waker_wait(w, seen))
            fail_msg("no on_event wake-up in %d ms with %d requests pending", STALL_MS, pending);
    }
}

static inferd_request_params request_params(int i, waker *w)
{
    const req_spec *s = &specs[i];
    inferd_request_params p = inferd_request_params_default();
    if (s->text) {
        p.text = s->text;
        p.text_len = strlen(s->text);
        p.add_special = true;
    } else {
        p.tokens = s->prompt;
        p.n_tokens = s->n_prompt;
    }
    p.sampling = s->sampling;
    p.max_tokens = s->max_tokens;
    for (int k = 0; k < s->n_stop; k++)
        p.stop[k] = s->stop[k];
    p.n_stop = s->n_stop;
    p.timeout_ms = -1;
    p.on_event = on_event;
    p.on_event_ctx = w;
    return p;
}

static void submit_one(inferd_sched *s, waker *w, req_result *results, int i)
{
    inferd_request_params p = request_params(i, w);
    inferd_error err = {0};
    if (inferd_sched_submit(s, &p, &results[i].r, &err) < 0)
        fail_msg("submit %d: %s", i, err.msg);
}

/* Compare one request's result with its reference. */
static void check_result(const char *run, int i, const req_result *res)
{
    const req_spec *s = &specs[i];
    if (res->end_type != INFERD_EVENT_DONE)
        fail_msg("%s: request %d ended with error %d: %s", run, i, res->code, res->message);
    if (res->n_ids != s->ref_n_ids)
        fail_msg("%s: request %d: %zu tokens, reference %zu", run, i, res->n_ids, s->ref_n_ids);
    for (size_t k = 0; k < res->n_ids; k++)
        if (res->ids[k] != s->ref_ids[k])
            fail_msg("%s: request %d: token %zu is %d, reference %d", run, i, k, res->ids[k],
                     s->ref_ids[k]);
    if (res->text_len != s->ref_text_len || memcmp(res->text, s->ref_text, res->text_len) != 0)
        fail_msg("%s: request %d: text '%.*s', reference '%s'", run, i, (int)res->text_len,
                 res->text, s->ref_text);
    if (res->finish != s->ref_finish)
        fail_msg("%s: request %d: finish %d, reference %d", run, i, (int)res->finish,
                 (int)s->ref_finish);
    assert_int_equal(res->n_gen, res->n_ids);
    assert_int_equal(res->n_prompt, s->n_prompt);
    assert_int_equal(inferd_request_n_prompt(res->r), s->n_prompt);
    if (s->sampling.has_seed)
        assert_int_equal(res->seed, s->sampling.seed);
}

/* ------------------------------------------------------------------------ */
/* One scheduler configuration. */

typedef enum arrival {
    ARRIVE_ONE_BY_ONE, /* submit, read to the end, next */
    ARRIVE_IN_ORDER,   /* all at once, 0..31 */
    ARRIVE_REVERSED,   /* all at once, 31..0 */
    ARRIVE_SHUFFLED_4, /* a fixed shuffle, from four threads at once */
} arrival;

typedef struct run_cfg {
    const char *name;
    uint32_t n_slots, n_threads, n_prefill_chunk;
    arrival order;
} run_cfg;

typedef struct submitter {
    inferd_sched *s;
    waker *w;
    req_result *results;
    const int *order; /* (N_REQ) */
    int first;        /* submits order[first], order[first + N_SUBMITTERS], ... */
    pthread_barrier_t *start;
    int failed_idx; /* -1, or the request whose submit failed */
    inferd_error err;
} submitter;

static void *submitter_main(void *arg)
{
    submitter *t = arg;
    pthread_barrier_wait(t->start);
    for (int k = t->first; k < N_REQ; k += N_SUBMITTERS) {
        int i = t->order[k];
        inferd_request_params p = request_params(i, t->w);
        if (inferd_sched_submit(t->s, &p, &t->results[i].r, &t->err) < 0) {
            t->failed_idx = i;
            break;
        }
    }
    return NULL;
}

static void run_config(const char *path, const run_cfg *cfg)
{
    inferd_sched_opts o = inferd_sched_opts_default();
    inferd_sched *s = NULL;
    inferd_error err = {0};
    req_result *results = inferd_calloc(N_REQ, sizeof(*results));
    int order[N_REQ];
    waker w;
    char run[160];

    assert_non_null(results);
    snprintf(run, sizeof(run), "%s (%u slots, %u threads, chunk %u)", cfg->name, cfg->n_slots,
             cfg->n_threads, cfg->n_prefill_chunk);
    waker_init(&w);
    o.model.n_ctx = N_CTX;
    o.n_slots = cfg->n_slots;
    o.n_threads = cfg->n_threads;
    o.n_prefill_chunk = cfg->n_prefill_chunk;
    o.n_queue_max = N_REQ;
    o.default_timeout_ms = -1;
    if (inferd_sched_create(path, &o, &s, &err) < 0)
        fail_msg("%s: create: %s", run, err.msg);
    /* Text prompts need the vocabulary, so wait for the load. */
    if (inferd_sched_wait_ready(s, -1, &err) < 0)
        fail_msg("%s: load: %s", run, err.msg);
    assert_int_equal(inferd_sched_get_state(s), INFERD_SCHED_READY);

    for (int k = 0; k < N_REQ; k++)
        order[k] = k;
    switch (cfg->order) {
    case ARRIVE_ONE_BY_ONE:
        for (int i = 0; i < N_REQ; i++) {
            submit_one(s, &w, results, i);
            collect(&w, results, &i, 1);
        }
        break;
    case ARRIVE_IN_ORDER:
        for (int i = 0; i < N_REQ; i++)
            submit_one(s, &w, results, i);
        collect(&w, results, order, N_REQ);
        break;
    case ARRIVE_REVERSED:
        for (int k = 0; k < N_REQ; k++)
            order[k] = N_REQ - 1 - k;
        for (int k = 0; k < N_REQ; k++)
            submit_one(s, &w, results, order[k]);
        collect(&w, results, order, N_REQ);
        break;
    case ARRIVE_SHUFFLED_4: {
        uint64_t rng = 77;
        for (int k = N_REQ - 1; k > 0; k--) {
            int j = (int)(lcg_next(&rng) % (uint64_t)(k + 1));
            int t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        pthread_t th[N_SUBMITTERS];
        submitter sub[N_SUBMITTERS];
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, N_SUBMITTERS);
        for (int t = 0; t < N_SUBMITTERS; t++) {
            sub[t] = (submitter){.s = s,
                                 .w = &w,
                                 .results = results,
                                 .order = order,
                                 .first = t,
                                 .start = &start,
                                 .failed_idx = -1};
            assert_int_equal(pthread_create(&th[t], NULL, submitter_main, &sub[t]), 0);
        }
        for (int t = 0; t < N_SUBMITTERS; t++)
            pthread_join(th[t], NULL);
        pthread_barrier_destroy(&start);
        for (int t = 0; t < N_SUBMITTERS; t++)
            if (sub[t].failed_idx >= 0)
                fail_msg("%s: submit %d: %s", run, sub[t].failed_idx, sub[t].err.msg);
        collect(&w, results, order, N_REQ);
        break;
    }
    }

    uint64_t n_in = 0, n_out = 0;
    for (int i = 0; i < N_REQ; i++) {
        check_result(run, i, &results[i]);
        n_in += specs[i].n_prompt;
        n_out += results[i].n_ids;
    }
    inferd_sched_stats st;
    inferd_sched_get_stats(s, &st);
    assert_int_equal(st.n_slots, cfg->n_slots);
    assert_int_equal(st.n_submitted, N_REQ);
    assert_int_equal(st.n_done, N_REQ);
    assert_int_equal(st.n_cancelled + st.n_timeout + st.n_failed, 0);
    assert_int_equal(st.tokens_in, n_in);
    assert_int_equal(st.tokens_out, n_out);

    for (int i = 0; i < N_REQ; i++)
        inferd_request_release(results[i].r);
    inferd_sched_destroy(s);
    waker_fini(&w);
    inferd_free(results);
}

static const run_cfg configs[] = {
    {"alone", 1, 1, 13, ARRIVE_ONE_BY_ONE},
    {"8 at once", 8, 2, 64, ARRIVE_IN_ORDER},
    {"16 at once, reversed", 16, 1, 7, ARRIVE_REVERSED},
    {"32 at once, shuffled, 4 submitters", 32, 2, 128, ARRIVE_SHUFFLED_4},
};

static void check_model(const char *file)
{
    char path[512];
    fixture(path, sizeof(path), file);
    make_reference(path);
    for (size_t c = 0; c < sizeof(configs) / sizeof(configs[0]); c++)
        run_config(path, &configs[c]);
    free_reference();
}

static void test_sched_determinism_f32(void **state)
{
    (void)state;
    check_model("stories260K.gguf");
}

static void test_sched_determinism_q4_0(void **state)
{
    (void)state;
    check_model("stories260K-ff192-q4_0.gguf");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sched_determinism_f32),
        cmocka_unit_test(test_sched_determinism_q4_0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
