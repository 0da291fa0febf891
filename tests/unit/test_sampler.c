/* Sampler and stop-string matcher: greedy and top-k=1 agreement, seeded
 * determinism, the drawn distribution against its expected probabilities,
 * each filter and the chain order, exact penalty values, parameter errors,
 * random seeds, fault injection, and the stopper under every chunking. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/sampler.h"

/* ---- helpers ---- */

/* Test-side generator (independent of the sampler's). */
static uint64_t lcg_state;

static void lcg_seed(uint64_t s) { lcg_state = s * 2862933555777941757ULL + 3037000493ULL; }

static uint32_t lcg_u32(void)
{
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg_state >> 33);
}

/* Uniform float in [lo, hi). */
static float lcg_float(float lo, float hi)
{
    return lo + (hi - lo) * (float)(lcg_u32() >> 8) * (1.0f / 16777216.0f);
}

static void fill_random(float *x, int n, float lo, float hi)
{
    for (int i = 0; i < n; i++)
        x[i] = lcg_float(lo, hi);
}

static int32_t argmax_ref(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* Parameters with every filter and penalty off. */
static inferd_sampler_params plain(float temp, uint64_t seed)
{
    inferd_sampler_params p = inferd_sampler_params_default();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.has_seed = true;
    p.seed = seed;
    return p;
}

static inferd_sampler *make(const inferd_sampler_params *p, int32_t n_vocab)
{
    inferd_sampler *s = NULL;
    inferd_error err = {0};
    int rc = inferd_sampler_create(p, n_vocab, &s, &err);
    if (rc != 0)
        fail_msg("create: %d %s", rc, err.msg);
    assert_non_null(s);
    return s;
}

/* Draw n tokens from fixed logits and count each id. */
static void histogram(inferd_sampler *s, const float *logits, int n_vocab, int n, int *counts)
{
    memset(counts, 0, (size_t)n_vocab * sizeof(int));
    for (int i = 0; i < n; i++) {
        int32_t t = inferd_sampler_sample(s, logits);
        assert_true(t >= 0 && t < n_vocab);
        counts[t]++;
    }
}

/* ---- sampler ---- */

static void test_sampler_params_default(void **state)
{
    (void)state;
    inferd_sampler_params p = inferd_sampler_params_default();
    assert_true(p.temperature == 0.8f);
    assert_int_equal(p.top_k, 40);
    assert_true(p.top_p == 0.95f);
    assert_true(p.min_p == 0.05f);
    assert_true(p.repeat_penalty == 1.0f);
    assert_int_equal(p.repeat_last_n, 64);
    assert_true(p.frequency_penalty == 0.0f);
    assert_true(p.presence_penalty == 0.0f);
    assert_false(p.has_seed);
}

static void test_sampler_greedy_is_argmax(void **state)
{
    (void)state;
    enum { N = 5003 };
    static float x[N];
    inferd_sampler_params p = plain(0.0f, 1);
    inferd_sampler *s = make(&p, N);

    lcg_seed(11);
    for (int round = 0; round < 50; round++) {
        fill_random(x, N, -20.0f, 20.0f);
        assert_int_equal(inferd_sampler_sample(s, x), argmax_ref(x, N));
    }
    /* Ties go to the lowest id; NaN never wins. */
    fill_random(x, N, -1.0f, 1.0f);
    x[4000] = 7.0f;
    x[17] = 7.0f;
    x[3] = NAN;
    assert_int_equal(inferd_sampler_sample(s, x), 17);
    for (int i = 0; i < N; i++)
        x[i] = 0.5f;
    assert_int_equal(inferd_sampler_sample(s, x), 0);
    for (int i = 0; i < N; i++)
        x[i] = -INFINITY;
    x[0] = NAN;
    x[9] = -1e30f;
    assert_int_equal(inferd_sampler_sample(s, x), 9);
    inferd_sampler_destroy(s);
}

static void test_sampler_top_k1_is_greedy(void **state)
{
    (void)state;
    enum { N = 2000 };
    static float x[N];
    const float temps[] = {0.01f, 0.8f, 1.0f, 5.0f, 1000.0f};

    lcg_seed(12);
    for (size_t ti = 0; ti < sizeof(temps) / sizeof(temps[0]); ti++) {
        inferd_sampler_params p = inferd_sampler_params_default();
        p.temperature = temps[ti];
        p.top_k = 1;
        p.has_seed = true;
        p.seed = 1000 + ti;
        p.repeat_penalty = 1.3f;
        p.frequency_penalty = 0.2f;
        inferd_sampler_params g = p;
        g.temperature = 0.0f;
        inferd_sampler *s = make(&p, N);
        inferd_sampler *gs = make(&g, N);
        for (int round = 0; round < 40; round++) {
            fill_random(x, N, -5.0f, 5.0f);
            x[round * 7] = 4.9f + (float)(round % 3) * 0.1f; /* near-ties */
            int32_t a = inferd_sampler_sample(s, x);
            int32_t b = inferd_sampler_sample(gs, x);
            assert_int_equal(a, b);
            inferd_sampler_accept(s, a);
            inferd_sampler_accept(gs, b);
        }
        inferd_sampler_destroy(s);
        inferd_sampler_destroy(gs);
    }
}

/* 1000 draws over changing logits; returns how many tokens differ between
 * samplers a and b. */
static int compare_runs(inferd_sampler *a, inferd_sampler *b, int n_vocab, uint64_t logit_seed,
                        int32_t *seq_a)
{
    float *x = malloc((size_t)n_vocab * sizeof(float));
    int diff = 0;
    assert_non_null(x);
    lcg_seed(logit_seed);
    for (int i = 0; i < 1000; i++) {
        fill_random(x, n_vocab, -2.0f, 2.0f);
        int32_t ta = inferd_sampler_sample(a, x);
        int32_t tb = inferd_sampler_sample(b, x);
        if (seq_a)
            seq_a[i] = ta;
        diff += ta != tb;
        inferd_sampler_accept(a, ta);
        inferd_sampler_accept(b, tb);
    }
    free(x);
    return diff;
}

static void test_sampler_seed_determinism(void **state)
{
    (void)state;
    /* Defaults (top-k 40, top-p, min-p), then everything off, then
     * penalties on: same seed, same tokens; another seed, other tokens. */
    for (int mode = 0; mode < 3; mode++) {
        inferd_sampler_params p = inferd_sampler_params_default();
        if (mode == 1)
            p = plain(1.0f, 0);
        if (mode == 2) {
            p.repeat_penalty = 1.1f;
            p.presence_penalty = 0.3f;
            p.top_k = 0;
        }
        p.has_seed = true;
        p.seed = 42;
        inferd_sampler *a = make(&p, 1000);
        inferd_sampler *b = make(&p, 1000);
        p.seed = 43;
        inferd_sampler *c = make(&p, 1000);
        inferd_sampler *d = make(&p, 1000);

        assert_int_equal(compare_runs(a, b, 1000, 7, NULL), 0);
        assert_true(compare_runs(c, d, 1000, 7, NULL) == 0);
        inferd_sampler_reset(a);
        inferd_sampler_reset(c);
        int diff = compare_runs(a, c, 1000, 7, NULL);
        assert_true(diff > 500);
        inferd_sampler_destroy(a);
        inferd_sampler_destroy(b);
        inferd_sampler_destroy(c);
        inferd_sampler_destroy(d);
    }
}

static void test_sampler_reset_replays(void **state)
{
    (void)state;
    static int32_t first[1000], second[1000];
    inferd_sampler_params p = inferd_sampler_params_default();
    p.repeat_penalty = 1.5f;
    p.has_seed = true;
    p.seed = 99;
    inferd_sampler *a = make(&p, 300);
    inferd_sampler *b = make(&p, 300);

    compare_runs(a, b, 300, 5, first);
    inferd_sampler_reset(a);
    inferd_sampler_reset(b);
    compare_runs(a, b, 300, 5, second);
    assert_memory_equal(first, second, sizeof(first));
    inferd_sampler_destroy(a);
    inferd_sampler_destroy(b);
}

/* Empirical frequencies within 4.5 standard deviations of n * prob. */
static void check_frequencies(const int *counts, const double *prob, int k, int n)
{
    for (int i = 0; i < k; i++) {
        double mean = n * prob[i];
        double sd = sqrt(n * prob[i] * (1.0 - prob[i]));
        if (fabs(counts[i] - mean) > 4.5 * sd + 1e-9)
            fail_msg("token %d: %d draws, expected %.1f +- %.1f", i, counts[i], mean, sd);
    }
}

static void test_sampler_distribution(void **state)
{
    (void)state;
    enum { N_DRAWS = 20000 };
    const double prob[4] = {0.1, 0.2, 0.3, 0.4};
    float logits[4];
    int counts[4];
    double expect[4];

    for (int i = 0; i < 4; i++)
        logits[i] = (float)log(prob[i]) + 3.0f; /* shift-invariant */

    inferd_sampler_params p = plain(1.0f, 2024);
    inferd_sampler *s = make(&p, 4);
    histogram(s, logits, 4, N_DRAWS, counts);
    check_frequencies(counts, prob, 4, N_DRAWS);
    inferd_sampler_destroy(s);

    /* Temperature 2: p_i proportional to sqrt(prob_i). */
    double z = 0.0;
    for (int i = 0; i < 4; i++)
        z += sqrt(prob[i]);
    for (int i = 0; i < 4; i++)
        expect[i] = sqrt(prob[i]) / z;
    p = plain(2.0f, 7);
    s = make(&p, 4);
    histogram(s, logits, 4, N_DRAWS, counts);
    check_frequencies(counts, expect, 4, N_DRAWS);
    inferd_sampler_destroy(s);

    /* Temperature 0.5: p_i proportional to prob_i^2. */
    z = 0.0;
    for (int i = 0; i < 4; i++)
        z += prob[i] * prob[i];
    for (int i = 0; i < 4; i++)
        expect[i] = prob[i] * prob[i] / z;
    p = plain(0.5f, 8);
    s = make(&p, 4);
    histogram(s, logits, 4, N_DRAWS, counts);
    check_frequencies(counts, expect, 4, N_DRAWS);
    inferd_sampler_destroy(s);
}

/* 1000 tokens, uniform but for a shuffled order: draws walk far past the
 * first 256 ranked candidates, so the full-vocabulary path is exercised. */
static void test_sampler_distribution_full_vocab(void **state)
{
    (void)state;
    enum { N = 1000, N_DRAWS = 40000 };
    static float x[N];
    static int counts[N];
    /* Ids are split into two classes: weight 1 (even ids) and weight 3
     * (odd ids), so each class's share is 1/4 and 3/4. */
    for (int i = 0; i < N; i++)
        x[i] = (i % 2) ? logf(3.0f) : 0.0f;
    inferd_sampler_params p = plain(1.0f, 31337);
    inferd_sampler *s = make(&p, N);
    histogram(s, x, N, N_DRAWS, counts);
    int odd = 0, seen = 0;
    for (int i = 0; i < N; i++) {
        odd += (i % 2) ? counts[i] : 0;
        seen += counts[i] > 0;
    }
    int pair[2] = {N_DRAWS - odd, odd};
    const double share[2] = {0.25, 0.75};
    check_frequencies(pair, share, 2, N_DRAWS);
    /* Every token is reachable (expected >= 20 draws each). */
    assert_int_equal(seen, N);
    inferd_sampler_destroy(s);
}

/* With top-k off the filters and the draw walk bucketed ranks over the
 * whole vocabulary; with top-k on they walk a sorted array.  Setting top_k
 * to n_vocab - 1 where the last-ranked token is -inf (never drawable) makes
 * the two paths compute the same distribution, so with one seed they must
 * draw the same tokens.  Logits are quantized to create many ties. */
static void test_sampler_bucket_path_matches_sorted(void **state)
{
    (void)state;
    enum { N = 5000 };
    static float x[N];
    const struct {
        float temp, top_p, min_p, spread;
    } cases[] = {
        {0.7f, 0.9f, 0.05f, 15.0f},  {1.0f, 1.0f, 0.0f, 15.0f},  {2.0f, 0.5f, 0.0f, 15.0f},
        {0.3f, 1.0f, 0.2f, 15.0f},   {1.3f, 0.97f, 0.01f, 3.0f}, {1.0f, 1.0f, 0.0f, 60.0f},
        {0.05f, 0.99f, 0.0f, 30.0f},
    };

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        inferd_sampler_params p = plain(cases[c].temp, 500 + c);
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.repeat_penalty = 1.2f;
        p.top_k = N - 1;
        inferd_sampler *sorted = make(&p, N);
        p.top_k = 0;
        inferd_sampler *bucketed = make(&p, N);
        int distinct = 0, prev = -1;

        lcg_seed(900 + c);
        for (int round = 0; round < 300; round++) {
            fill_random(x, N, -cases[c].spread, cases[c].spread);
            for (int i = 0; i < N; i++)
                x[i] = roundf(x[i] * 4.0f) / 4.0f;
            x[lcg_u32() % N] = -INFINITY;
            int32_t a = inferd_sampler_sample(sorted, x);
            int32_t b = inferd_sampler_sample(bucketed, x);
            if (a != b)
                fail_msg("case %zu round %d: sorted path %d, bucketed %d", c, round, a, b);
            distinct += a != prev;
            prev = a;
            inferd_sampler_accept(sorted, a);
            inferd_sampler_accept(bucketed, b);
        }
        assert_true(distinct > 100);
        inferd_sampler_destroy(sorted);
        inferd_sampler_destroy(bucketed);
    }
}

static void test_sampler_top_k_filter(void **state)
{
    (void)state;
    enum { N = 300 };
    static float x[N];
    static int counts[N];
    lcg_seed(3);
    fill_random(x, N, -1.0f, 0.0f);
    x[250] = 3.0f;
    x[10] = 2.0f;
    x[99] = 1.5f; /* tie at the cut: the lower id (99) is kept, 200 is not */
    x[200] = 1.5f;

    inferd_sampler_params p = plain(100.0f, 5);
    p.top_k = 3;
    inferd_sampler *s = make(&p, N);
    histogram(s, x, N, 6000, counts);
    for (int i = 0; i < N; i++) {
        if (i == 250 || i == 10 || i == 99)
            assert_true(counts[i] > 1500); /* nearly flat at temp 100 */
        else
            assert_int_equal(counts[i], 0);
    }
    inferd_sampler_destroy(s);

    /* top_k >= n_vocab is no filter. */
    p.top_k = N + 5;
    s = make(&p, N);
    histogram(s, x, N, 6000, counts);
    int seen = 0;
    for (int i = 0; i < N; i++)
        seen += counts[i] > 0;
    assert_true(seen > 250);
    inferd_sampler_destroy(s);
}

static void test_sampler_top_p_filter(void **state)
{
    (void)state;
    const float logits[5] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f), -INFINITY};
    int counts[5];

    /* Ranked: 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05). */
    inferd_sampler_params p = plain(1.0f, 6);
    p.top_p = 0.75f;
    inferd_sampler *s = make(&p, 5);
    histogram(s, logits, 5, 5000, counts);
    assert_true(counts[1] > 0 && counts[3] > 0);
    assert_int_equal(counts[0] + counts[2] + counts[4], 0);
    inferd_sampler_destroy(s);

    p.top_p = 0.85f;
    s = make(&p, 5);
    histogram(s, logits, 5, 5000, counts);
    assert_true(counts[1] > 0 && counts[3] > 0 && counts[0] > 0);
    assert_int_equal(counts[2] + counts[4], 0);
    inferd_sampler_destroy(s);

    /* top_p 0 keeps exactly one token (min_keep 1). */
    p.top_p = 0.0f;
    s = make(&p, 5);
    histogram(s, logits, 5, 500, counts);
    assert_int_equal(counts[1], 500);
    inferd_sampler_destroy(s);
}

/* Top-p over a large unfiltered vocabulary needs more than the first 256
 * ranked candidates: 1000 equal logits in shuffled positions among 2000. */
static void test_sampler_top_p_large(void **state)
{
    (void)state;
    enum { N = 2000 };
    static float x[N];
    static int counts[N];
    for (int i = 0; i < N; i++)
        x[i] = (i % 2) ? 0.0f : -1e30f; /* odd ids: equal mass, even: ~0 */
    inferd_sampler_params p = plain(1.0f, 77);
    /* 1000 odd ids, ranked by id; 0.8995 of the mass needs 900 of them. */
    p.top_p = 0.8995f;
    inferd_sampler *s = make(&p, N);
    histogram(s, x, N, 30000, counts);
    int max_id = 0, seen = 0;
    for (int i = 0; i < N; i++) {
        if (counts[i] > 0) {
            assert_true(i % 2 == 1);
            max_id = i;
            seen++;
        }
    }
    assert_int_equal(max_id, 2 * 899 + 1);
    assert_true(seen > 880);
    inferd_sampler_destroy(s);
}

static void test_sampler_min_p_filter(void **state)
{
    (void)state;
    enum { N = 1000 };
    static float x[N];
    static int counts[N];
    /* Relative to the max (id 500): log(0.1) = -2.303. */
    for (int i = 0; i < N; i++)
        x[i] = -10.0f;
    x[500] = 1.0f;
    x[3] = 0.0f;
    x[900] = -1.0f;
    x[42] = -1.30f; /* kept: -2.30 relative */
    x[43] = -1.31f; /* dropped: -2.31 relative */

    for (int with_top_k = 0; with_top_k < 2; with_top_k++) {
        inferd_sampler_params p = plain(50.0f, 8);
        p.min_p = 0.1f;
        p.top_k = with_top_k ? 10 : 0; /* sorted path vs whole vocabulary */
        inferd_sampler *s = make(&p, N);
        histogram(s, x, N, 8000, counts);
        for (int i = 0; i < N; i++) {
            bool kept = i == 500 || i == 3 || i == 900 || i == 42;
            if (kept)
                assert_true(counts[i] > 1000);
            else
                assert_int_equal(counts[i], 0);
        }
        inferd_sampler_destroy(s);
    }

    /* min_p 1 keeps only the maximum. */
    inferd_sampler_params p = plain(10.0f, 9);
    p.min_p = 1.0f;
    inferd_sampler *s = make(&p, N);
    histogram(s, x, N, 200, counts);
    assert_int_equal(counts[500], 200);
    inferd_sampler_destroy(s);
}

static void test_sampler_chain_order(void **state)
{
    (void)state;
    float logits[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
    int counts[4];

    /* top-p runs on the top-k survivors, renormalized: {0.57, 0.43} with
     * top_p 0.5 keeps token 0 alone (on the full distribution it would
     * keep 0 and 1). */
    inferd_sampler_params p = plain(1.0f, 10);
    p.top_k = 2;
    p.top_p = 0.5f;
    inferd_sampler *s = make(&p, 4);
    histogram(s, logits, 4, 1000, counts);
    assert_int_equal(counts[0], 1000);
    inferd_sampler_destroy(s);

    /* min-p sees the logits before temperature: token 1 is e^-3 (< 0.1) of
     * token 0 and is dropped even though temperature 100 would make the two
     * almost equally likely. */
    float two[2] = {0.0f, -3.0f};
    p = plain(100.0f, 11);
    p.min_p = 0.1f;
    s = make(&p, 2);
    histogram(s, two, 2, 1000, counts);
    assert_int_equal(counts[0], 1000);
    inferd_sampler_destroy(s);

    /* Penalties run first: a heavily penalized favourite is never drawn. */
    float x[3] = {10.0f, 0.0f, 0.0f};
    p = plain(1.0f, 12);
    p.presence_penalty = 100.0f;
    s = make(&p, 3);
    inferd_sampler_accept(s, 0);
    histogram(s, x, 3, 1000, counts);
    assert_int_equal(counts[0], 0);
    assert_true(counts[1] > 400 && counts[2] > 400);
    inferd_sampler_destroy(s);
}

/* With greedy sampling, token 1 (penalized) against token 2 set to exactly
 * `want`: a tie goes to token 1, and one ulp more makes token 2 win, which
 * pins token 1's penalized logit to exactly `want`. */
static void expect_penalized(inferd_sampler *s, float raw, float want)
{
    float x[8];
    for (int i = 0; i < 8; i++)
        x[i] = -1000.0f;
    x[1] = raw;
    x[2] = want;
    assert_int_equal(inferd_sampler_sample(s, x), 1);
    x[2] = nextafterf(want, INFINITY);
    assert_int_equal(inferd_sampler_sample(s, x), 2);
}

static void test_sampler_penalties_exact(void **state)
{
    (void)state;
    inferd_sampler_params p = plain(0.0f, 1);
    p.repeat_penalty = 1.25f;
    inferd_sampler *s = make(&p, 8);

    inferd_sampler_accept(s, 1);
    expect_penalized(s, 2.0f, 2.0f / 1.25f);   /* positive: divided */
    expect_penalized(s, -1.0f, -1.0f * 1.25f); /* negative: multiplied */
    expect_penalized(s, 0.0f, 0.0f);           /* zero: multiplied */
    expect_penalized(s, 3.7f, 3.7f / 1.25f);
    inferd_sampler_destroy(s);

    /* Frequency and presence: count 3. */
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    s = make(&p, 8);
    inferd_sampler_accept(s, 1);
    inferd_sampler_accept(s, 5);
    inferd_sampler_accept(s, 1);
    inferd_sampler_accept(s, 1);
    expect_penalized(s, 2.0f, 2.0f / 1.25f - (3.0f * 0.5f + 0.25f));
    expect_penalized(s, -0.7f, -0.7f * 1.25f - (3.0f * 0.5f + 0.25f));
    inferd_sampler_destroy(s);

    /* Frequency/presence alone (repeat penalty 1): negative values allowed
     * and they raise the token. */
    p.repeat_penalty = 1.0f;
    p.frequency_penalty = -0.5f;
    p.presence_penalty = 0.0f;
    s = make(&p, 8);
    inferd_sampler_accept(s, 1);
    inferd_sampler_accept(s, 1);
    expect_penalized(s, 1.0f, 1.0f - (2.0f * -0.5f + 0.0f));
    inferd_sampler_destroy(s);

    /* Window of 2: the oldest token leaves it; counts follow the window. */
    p = plain(0.0f, 1);
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 1.0f;
    p.repeat_last_n = 2;
    s = make(&p, 8);
    inferd_sampler_accept(s, 1);
    inferd_sampler_accept(s, 1);
    expect_penalized(s, 4.0f, 4.0f / 2.0f - 2.0f); /* count 2 */
    inferd_sampler_accept(s, 3);
    expect_penalized(s, 4.0f, 4.0f / 2.0f - 1.0f); /* count 1 */
    inferd_sampler_accept(s, 3);
    expect_penalized(s, 4.0f, 4.0f); /* gone */
    inferd_sampler_accept(s, -1);    /* ignored */
    inferd_sampler_accept(s, 8);     /* ignored */
    expect_penalized(s, 4.0f, 4.0f);
    inferd_sampler_accept(s, 1);
    inferd_sampler_reset(s); /* history cleared */
    expect_penalized(s, 4.0f, 4.0f);
    inferd_sampler_destroy(s);

    /* repeat_last_n -1 is the context size. */
    p.repeat_last_n = -1;
    p.n_ctx = 3;
    p.frequency_penalty = 0.0f;
    s = make(&p, 8);
    inferd_sampler_accept(s, 1);
    inferd_sampler_accept(s, 5);
    inferd_sampler_accept(s, 6);
    expect_penalized(s, 4.0f, 2.0f);
    inferd_sampler_accept(s, 7);
    expect_penalized(s, 4.0f, 4.0f);
    inferd_sampler_destroy(s);

    /* repeat_last_n 0 turns the penalties off. */
    p.repeat_last_n = 0;
    s = make(&p, 8);
    inferd_sampler_accept(s, 1);
    expect_penalized(s, 4.0f, 4.0f);
    inferd_sampler_destroy(s);
}

/* The sampled path applies the same penalties: with top_k 1 the penalized
 * argmax is drawn whatever the temperature. */
static void test_sampler_penalties_flip_sampled(void **state)
{
    (void)state;
    float x[4] = {1.0f, 2.0f, 1.7f, -5.0f};
    inferd_sampler_params p = plain(0.9f, 3);
    p.top_k = 1;
    p.repeat_penalty = 1.25f; /* 2.0 -> 1.6 < 1.7 */
    inferd_sampler *s = make(&p, 4);
    assert_int_equal(inferd_sampler_sample(s, x), 1);
    inferd_sampler_accept(s, 1);
    assert_int_equal(inferd_sampler_sample(s, x), 2);
    inferd_sampler_destroy(s);
}

static void expect_create_error(const inferd_sampler_params *p, int32_t n_vocab, int code,
                                const char *msg)
{
    inferd_sampler *s = (inferd_sampler *)(uintptr_t)0x1;
    inferd_error err = {0};
    assert_int_equal(inferd_sampler_create(p, n_vocab, &s, &err), code);
    assert_int_equal(err.code, code);
    assert_string_equal(err.msg, msg);
    assert_ptr_equal(s, (inferd_sampler *)(uintptr_t)0x1); /* untouched */
}

static void test_sampler_param_errors(void **state)
{
    (void)state;
    inferd_sampler_params d = inferd_sampler_params_default(), p;

    p = d;
    p.temperature = -0.1f;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "temperature must be a finite number >= 0 (got -0.1)");
    p = d;
    p.temperature = NAN;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "temperature must be a finite number >= 0 (got nan)");
    p = d;
    p.temperature = INFINITY;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "temperature must be a finite number >= 0 (got inf)");
    p = d;
    p.top_p = 1.5f;
    expect_create_error(&p, 10, INFERD_E_RANGE, "top_p must be in [0, 1] (got 1.5)");
    p = d;
    p.top_p = -0.25f;
    expect_create_error(&p, 10, INFERD_E_RANGE, "top_p must be in [0, 1] (got -0.25)");
    p = d;
    p.top_p = NAN;
    expect_create_error(&p, 10, INFERD_E_RANGE, "top_p must be in [0, 1] (got nan)");
    p = d;
    p.min_p = 2.0f;
    expect_create_error(&p, 10, INFERD_E_RANGE, "min_p must be in [0, 1] (got 2)");
    p = d;
    p.min_p = -0.5f;
    expect_create_error(&p, 10, INFERD_E_RANGE, "min_p must be in [0, 1] (got -0.5)");
    p = d;
    p.repeat_penalty = 0.0f;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "repeat_penalty must be a finite number > 0 (got 0)");
    p = d;
    p.repeat_penalty = -1.0f;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "repeat_penalty must be a finite number > 0 (got -1)");
    p = d;
    p.frequency_penalty = INFINITY;
    expect_create_error(&p, 10, INFERD_E_RANGE, "frequency_penalty must be finite (got inf)");
    p = d;
    p.presence_penalty = NAN;
    expect_create_error(&p, 10, INFERD_E_RANGE, "presence_penalty must be finite (got nan)");
    p = d;
    p.repeat_last_n = -2;
    expect_create_error(&p, 10, INFERD_E_RANGE, "repeat_last_n must be in [-1, 1048576] (got -2)");
    p = d;
    p.repeat_last_n = INFERD_SAMPLER_LAST_N_MAX + 1;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "repeat_last_n must be in [-1, 1048576] (got 1048577)");
    p = d;
    p.repeat_last_n = -1;
    p.n_ctx = 0;
    expect_create_error(&p, 10, INFERD_E_RANGE,
                        "n_ctx must be in [1, 1048576] when repeat_last_n is -1 "
                        "(got 0)");
    p = d;
    expect_create_error(&p, 0, INFERD_E_RANGE, "n_vocab must be in [1, 16777216] (got 0)");
    expect_create_error(&p, -5, INFERD_E_RANGE, "n_vocab must be in [1, 16777216] (got -5)");
    expect_create_error(&p, INFERD_SAMPLER_VOCAB_MAX + 1, INFERD_E_RANGE,
                        "n_vocab must be in [1, 16777216] (got 16777217)");
    expect_create_error(NULL, 10, INFERD_E_INVALID, "sampler: params and out_s must not be NULL");

    /* Boundary values are accepted. */
    inferd_sampler *s = NULL;
    p = d;
    p.temperature = 0.0f;
    p.top_p = 0.0f;
    p.min_p = 1.0f;
    p.repeat_last_n = -1;
    p.n_ctx = 1;
    p.top_k = -7;
    assert_int_equal(inferd_sampler_create(&p, 1, &s, NULL), 0);
    float one = 0.0f;
    assert_int_equal(inferd_sampler_sample(s, &one), 0);
    inferd_sampler_destroy(s);
    inferd_sampler_destroy(NULL);
}

static void test_sampler_random_seed(void **state)
{
    (void)state;
    static int32_t seq[1000], seq2[1000];
    inferd_sampler_params p = plain(1.0f, 0);
    p.has_seed = false;
    inferd_sampler *a = make(&p, 64);
    inferd_sampler *b = make(&p, 64);
    /* 64 random bits each: equal only with probability 2^-64. */
    assert_true(inferd_sampler_seed(a) != inferd_sampler_seed(b));

    /* Passing the reported seed back reproduces the draws. */
    p.has_seed = true;
    p.seed = inferd_sampler_seed(a);
    inferd_sampler *c = make(&p, 64);
    assert_int_equal(inferd_sampler_seed(c), inferd_sampler_seed(a));
    assert_int_equal(compare_runs(a, c, 64, 21, seq), 0);
    /* Reset keeps the drawn seed. */
    inferd_sampler_reset(a);
    inferd_sampler_reset(b);
    assert_int_equal(inferd_sampler_seed(a), p.seed);
    compare_runs(a, b, 64, 21, seq2);
    assert_memory_equal(seq, seq2, sizeof(seq));
    inferd_sampler_destroy(a);
    inferd_sampler_destroy(b);
    inferd_sampler_destroy(c);
}

static void test_sampler_fault_injection(void **state)
{
    (void)state;
    inferd_sampler_params p = inferd_sampler_params_default();
    p.repeat_penalty = 1.1f; /* every buffer is allocated */
    p.has_seed = true;
    int failures = 0;
    for (long nth = 1; nth < 100; nth++) {
        inferd_sampler *s = NULL;
        inferd_error err = {0};
        inferd_alloc_fail_after(nth);
        int rc = inferd_sampler_create(&p, 1000, &s, &err);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_non_null(s);
            float x[1000];
            fill_random(x, 1000, -1.0f, 1.0f);
            inferd_sampler_accept(s, 5);
            int32_t t = inferd_sampler_sample(s, x);
            assert_true(t >= 0 && t < 1000);
            inferd_sampler_destroy(s);
            break;
        }
        assert_int_equal(rc, INFERD_E_NOMEM);
        assert_int_equal(err.code, INFERD_E_NOMEM);
        assert_null(s);
        failures++;
    }
    assert_int_equal(failures, 7);
}

/* Non-finite logits: NaN reads as -inf; +inf tokens share all the mass; a
 * row of -inf is uniform. */
static void test_sampler_nonfinite(void **state)
{
    (void)state;
    float x[6] = {NAN, INFINITY, 5.0f, INFINITY, -INFINITY, 1.0f};
    int counts[6];
    inferd_sampler_params p = plain(1.0f, 4);
    inferd_sampler *s = make(&p, 6);
    histogram(s, x, 6, 2000, counts);
    assert_int_equal(counts[1] + counts[3], 2000);
    assert_true(counts[1] > 800 && counts[3] > 800);
    for (int i = 0; i < 6; i++)
        x[i] = (i % 2) ? -INFINITY : NAN;
    histogram(s, x, 6, 3000, counts);
    for (int i = 0; i < 6; i++)
        assert_true(counts[i] > 350);
    inferd_sampler_destroy(s);
}

/* A Llama-3-sized vocabulary with the default chain and with top-k off (the
 * top-p prefix path): valid, reproducible tokens. */
static void test_sampler_large_vocab(void **state)
{
    (void)state;
    enum { N = 128256 };
    float *x = malloc((size_t)N * sizeof(float));
    assert_non_null(x);
    for (int mode = 0; mode < 2; mode++) {
        inferd_sampler_params p = inferd_sampler_params_default();
        p.has_seed = true;
        p.seed = 5;
        if (mode == 1)
            p.top_k = 0;
        inferd_sampler *a = make(&p, N);
        inferd_sampler *b = make(&p, N);
        lcg_seed(13);
        for (int i = 0; i < 50; i++) {
            fill_random(x, N, -8.0f, 8.0f);
            int32_t ta = inferd_sampler_sample(a, x);
            assert_int_equal(ta, inferd_sampler_sample(b, x));
            /* min_p 0.05 at these logits: within log(20) of the maximum */
            float mx = x[argmax_ref(x, N)];
            assert_true(x[ta] >= mx + logf(0.05f));
        }
        inferd_sampler_destroy(a);
        inferd_sampler_destroy(b);
    }
    free(x);
}

static void test_sampler_logprobs_topn(void **state)
{
    (void)state;
    const float x[5] = {1.0f, 2.0f, 3.0f, 3.0f, NAN};
    int32_t ids[8];
    float lp[8];
    double z = exp(1.0) + exp(2.0) + 2 * exp(3.0);

    assert_int_equal(inferd_logprobs_topn(x, 5, 3, ids, lp), 3);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 1);
    assert_float_equal(lp[0], 3.0 - log(z), 1e-6);
    assert_float_equal(lp[1], 3.0 - log(z), 1e-6);
    assert_float_equal(lp[2], 2.0 - log(z), 1e-6);

    assert_int_equal(inferd_logprobs_topn(x, 5, 8, ids, lp), 5);
    assert_int_equal(ids[3], 0);
    assert_int_equal(ids[4], 4);
    assert_true(isinf(lp[4]) && lp[4] < 0);

    /* inferd_logprob_of gives the same bits for each id. */
    for (int i = 0; i < 5; i++)
        assert_memory_equal(&(float){inferd_logprob_of(x, 5, ids[i])}, &lp[i], sizeof(float));
    assert_true(isnan(inferd_logprob_of(x, 5, 5)));
    assert_true(isnan(inferd_logprob_of(x, 5, -1)));
    assert_true(isnan(inferd_logprob_of(NULL, 5, 0)));

    assert_int_equal(inferd_logprobs_topn(x, 5, 0, NULL, NULL), 0);
    assert_int_equal(inferd_logprobs_topn(x, 5, -1, ids, lp), INFERD_E_INVALID);
    assert_int_equal(inferd_logprobs_topn(x, 0, 1, ids, lp), INFERD_E_INVALID);
    assert_int_equal(inferd_logprobs_topn(NULL, 5, 1, ids, lp), INFERD_E_INVALID);
    assert_int_equal(inferd_logprobs_topn(x, 5, 1, NULL, lp), INFERD_E_INVALID);

    /* A large row against a direct computation. */
    enum { N = 50000 };
    float *y = malloc(N * sizeof(float));
    assert_non_null(y);
    lcg_seed(17);
    fill_random(y, N, -10.0f, 10.0f);
    double mx = y[argmax_ref(y, N)], sum = 0.0;
    for (int i = 0; i < N; i++)
        sum += exp((double)y[i] - mx);
    assert_int_equal(inferd_logprobs_topn(y, N, 8, ids, lp), 8);
    assert_int_equal(ids[0], argmax_ref(y, N));
    for (int i = 0; i < 8; i++) {
        assert_float_equal(lp[i], (double)y[ids[i]] - mx - log(sum), 1e-5);
        if (i > 0)
            assert_true(y[ids[i]] <= y[ids[i - 1]]);
    }
    free(y);
}

/* ---- stopper ---- */

typedef struct sink {
    char buf[4096];
    size_t len;
    bool stopped;
} sink;

static inferd_stopper *make_stopper(const char *const *stops, size_t n)
{
    inferd_stopper *st = NULL;
    inferd_error err = {0};
    int rc = inferd_stopper_create(stops, n, &st, &err);
    if (rc != 0)
        fail_msg("stopper create: %d %s", rc, err.msg);
    return st;
}

/* Push text; return what came out of this push (NUL-terminated in a static
 * buffer) and append it to the sink. */
static const char *push(inferd_stopper *st, sink *k, const char *text)
{
    static char out[INFERD_STOP_LEN_MAX + 512];
    size_t len = strlen(text);
    bool stopped = false;
    assert_true(len + INFERD_STOP_LEN_MAX <= sizeof(out));
    size_t n = inferd_stopper_push(st, text, len, out, sizeof(out), &stopped);
    assert_true(n <= len + INFERD_STOP_LEN_MAX);
    memcpy(k->buf + k->len, out, n);
    k->len += n;
    k->buf[k->len] = '\0';
    k->stopped = stopped;
    out[n] = '\0';
    return out;
}

static const char *flush(inferd_stopper *st, sink *k)
{
    static char out[INFERD_STOP_LEN_MAX + 1];
    size_t n = inferd_stopper_flush(st, out, INFERD_STOP_LEN_MAX);
    memcpy(k->buf + k->len, out, n);
    k->len += n;
    k->buf[k->len] = '\0';
    out[n] = '\0';
    return out;
}

static void test_stopper_split_across_pushes(void **state)
{
    (void)state;
    const char *stops[] = {"</s>"};
    inferd_stopper *st = make_stopper(stops, 1);
    sink k = {0};

    assert_string_equal(push(st, &k, "Hello <"), "Hello ");
    assert_int_equal(inferd_stopper_held(st), 1);
    assert_string_equal(push(st, &k, "/"), "");
    assert_int_equal(inferd_stopper_held(st), 2);
    assert_false(k.stopped);
    assert_string_equal(push(st, &k, "s> and more"), "");
    assert_true(k.stopped);
    assert_int_equal(inferd_stopper_matched(st), 0);
    assert_string_equal(k.buf, "Hello ");
    /* After the stop: nothing more, still stopped; flush is empty. */
    assert_string_equal(push(st, &k, "tail"), "");
    assert_true(k.stopped);
    assert_string_equal(flush(st, &k), "");
    assert_string_equal(k.buf, "Hello ");

    /* Text before the stop string inside the same push is emitted. */
    inferd_stopper_reset(st);
    assert_int_equal(inferd_stopper_matched(st), -1);
    k = (sink){0};
    assert_string_equal(push(st, &k, "ab</"), "ab");
    assert_string_equal(push(st, &k, "x</s"), "</x");
    assert_string_equal(push(st, &k, ">"), "");
    assert_true(k.stopped);
    assert_string_equal(k.buf, "ab</x");
    inferd_stopper_destroy(st);
}

static void test_stopper_false_alarm(void **state)
{
    (void)state;
    const char *stops[] = {"STOP"};
    inferd_stopper *st = make_stopper(stops, 1);
    sink k = {0};

    assert_string_equal(push(st, &k, "ST"), "");
    assert_string_equal(push(st, &k, "ART"), "START");
    assert_int_equal(inferd_stopper_held(st), 0);
    assert_string_equal(push(st, &k, " SSTO"), " S");
    assert_string_equal(push(st, &k, "O"), "STOO");
    assert_false(k.stopped);
    assert_string_equal(k.buf, "START SSTOO");
    inferd_stopper_destroy(st);

    /* Overlapping self-prefix: "aab" in "aaab" starts at offset 1. */
    const char *s2[] = {"aab"};
    st = make_stopper(s2, 1);
    k = (sink){0};
    assert_string_equal(push(st, &k, "a"), "");
    assert_string_equal(push(st, &k, "a"), "");
    assert_string_equal(push(st, &k, "a"), "a");
    assert_string_equal(push(st, &k, "b"), "");
    assert_true(k.stopped);
    assert_string_equal(k.buf, "a");
    inferd_stopper_destroy(st);
}

static void test_stopper_multiple(void **state)
{
    (void)state;
    const char *stops[] = {"foo", "bar", "", "\n\n"};
    inferd_stopper *st = make_stopper(stops, 4);
    sink k = {0};

    assert_string_equal(push(st, &k, "xxfo"), "xx");
    assert_string_equal(push(st, &k, "barfoo"), "fo");
    assert_true(k.stopped);
    assert_int_equal(inferd_stopper_matched(st), 1);
    assert_string_equal(k.buf, "xxfo");

    inferd_stopper_reset(st);
    k = (sink){0};
    push(st, &k, "line\n");
    push(st, &k, "\nfoo");
    assert_int_equal(inferd_stopper_matched(st), 3);
    assert_string_equal(k.buf, "line");
    inferd_stopper_destroy(st);

    /* The first stop string to complete wins, whatever the chunking: "bc"
     * completes before "abcd" could. */
    const char *s2[] = {"abcd", "bc"};
    st = make_stopper(s2, 2);
    k = (sink){0};
    push(st, &k, "abcd");
    assert_int_equal(inferd_stopper_matched(st), 1);
    assert_string_equal(k.buf, "a");
    inferd_stopper_destroy(st);

    /* Completing at the same byte: the longest (earliest start) wins. */
    const char *s3[] = {"bc", "abc"};
    st = make_stopper(s3, 2);
    k = (sink){0};
    push(st, &k, "xab");
    push(st, &k, "c");
    assert_int_equal(inferd_stopper_matched(st), 1);
    assert_string_equal(k.buf, "x");
    inferd_stopper_destroy(st);
}

static void test_stopper_at_beginning(void **state)
{
    (void)state;
    const char *stops[] = {"###"};
    inferd_stopper *st = make_stopper(stops, 1);
    sink k = {0};
    assert_string_equal(push(st, &k, "###rest"), "");
    assert_true(k.stopped);
    assert_int_equal(k.len, 0);
    inferd_stopper_destroy(st);

    st = make_stopper(stops, 1);
    k = (sink){0};
    push(st, &k, "#");
    push(st, &k, "#");
    push(st, &k, "#");
    assert_true(k.stopped);
    assert_int_equal(k.len, 0);
    inferd_stopper_destroy(st);
}

static void test_stopper_flush(void **state)
{
    (void)state;
    const char *stops[] = {"</s>", "<|end|>"};
    inferd_stopper *st = make_stopper(stops, 2);
    sink k = {0};

    assert_string_equal(push(st, &k, "the end <|en"), "the end ");
    assert_int_equal(inferd_stopper_held(st), 4);
    assert_string_equal(flush(st, &k), "<|en");
    assert_int_equal(inferd_stopper_held(st), 0);
    assert_false(k.stopped);
    assert_string_equal(k.buf, "the end <|en");
    /* Flushing again gives nothing; the matcher restarts from empty. */
    assert_string_equal(flush(st, &k), "");
    assert_string_equal(push(st, &k, "d|>"), "d|>");
    inferd_stopper_destroy(st);

    /* No stop strings: pass-through, nothing held. */
    st = make_stopper(NULL, 0);
    k = (sink){0};
    assert_string_equal(push(st, &k, "anything </s>"), "anything </s>");
    assert_int_equal(inferd_stopper_held(st), 0);
    assert_string_equal(flush(st, &k), "");
    inferd_stopper_destroy(st);
}

/* True when s[0..n) ends on a UTF-8 character boundary. */
static bool utf8_complete(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + l > n)
            return false;
        i += l;
    }
    return true;
}

static void test_stopper_utf8(void **state)
{
    (void)state;
    const char *stops[] = {"。", "日本"};
    const char *text = "你好日曜日，世界。再见";

    /* Byte by byte, splitting every character. */
    inferd_stopper *st = make_stopper(stops, 2);
    sink k = {0};
    for (const char *c = text; *c && !k.stopped; c++) {
        char one[2] = {*c, 0};
        push(st, &k, one);
    }
    assert_true(k.stopped);
    assert_int_equal(inferd_stopper_matched(st), 0);
    assert_string_equal(k.buf, "你好日曜日，世界");
    inferd_stopper_destroy(st);

    /* Whole characters in: whole characters out, and the "日" held as a
     * possible start of "日本" is released when "曜" follows. */
    st = make_stopper(stops, 2);
    k = (sink){0};
    const char *chars[] = {"你", "好", "日", "曜", "日", "，", "世", "界", "。", "再"};
    for (size_t i = 0; i < sizeof(chars) / sizeof(chars[0]); i++) {
        const char *o = push(st, &k, chars[i]);
        assert_true(utf8_complete(o, strlen(o)));
        if (i == 2)
            assert_string_equal(o, "");
        if (i == 3)
            assert_string_equal(o, "日曜");
    }
    assert_string_equal(k.buf, "你好日曜日，世界");
    inferd_stopper_destroy(st);

    /* A multi-byte stop string at the start of a chunk. */
    st = make_stopper(stops, 2);
    k = (sink){0};
    push(st, &k, "ok\xe6\x97");       /* "ok" + 2 of 3 bytes of 日 */
    push(st, &k, "\xa5\xe6\x9c\xac"); /* rest of 日 + 本 */
    assert_true(k.stopped);
    assert_int_equal(inferd_stopper_matched(st), 1);
    assert_string_equal(k.buf, "ok");
    inferd_stopper_destroy(st);
}

/* Reference: the output for the whole text, stopping at the first byte that
 * completes a stop string (the longest one completing there). */
static size_t reference_stop(const char *text, const char *const *stops, size_t n_stops,
                             bool *stopped)
{
    size_t len = strlen(text);
    for (size_t e = 1; e <= len; e++) {
        size_t best = 0;
        for (size_t j = 0; j < n_stops; j++) {
            size_t l = strlen(stops[j]);
            if (l > 0 && l <= e && memcmp(text + e - l, stops[j], l) == 0 && l > best)
                best = l;
        }
        if (best) {
            *stopped = true;
            return e - best;
        }
    }
    *stopped = false;
    return len;
}

static void test_stopper_random_chunking(void **state)
{
    (void)state;
    const char *stops[] = {"abca", "bb", "cabcab", "aaaa"};
    char text[200];
    char chunk[64];

    lcg_seed(23);
    for (int round = 0; round < 3000; round++) {
        size_t len = 1 + lcg_u32() % 60;
        for (size_t i = 0; i < len; i++)
            text[i] = "abc"[lcg_u32() % (round % 2 ? 3 : 2)];
        text[len] = '\0';
        size_t n_stops = 1 + lcg_u32() % 4;
        bool want_stop;
        size_t want = reference_stop(text, stops, n_stops, &want_stop);

        inferd_stopper *st = make_stopper(stops, n_stops);
        sink k = {0};
        size_t longest = 0;
        for (size_t j = 0; j < n_stops; j++)
            if (strlen(stops[j]) > longest)
                longest = strlen(stops[j]);
        size_t pos = 0;
        while (pos < len) {
            size_t c = 1 + lcg_u32() % 8;
            if (c > len - pos)
                c = len - pos;
            memcpy(chunk, text + pos, c);
            chunk[c] = '\0';
            push(st, &k, chunk);
            pos += c;
            assert_true(inferd_stopper_held(st) <= longest - 1);
            /* Everything emitted so far is a prefix of the final output. */
            assert_true(k.len <= want);
            assert_memory_equal(k.buf, text, k.len);
        }
        if (!k.stopped)
            flush(st, &k);
        assert_int_equal(k.stopped, want_stop);
        assert_int_equal(k.len, want);
        assert_memory_equal(k.buf, text, want);
        inferd_stopper_destroy(st);
    }
}

static void test_stopper_errors(void **state)
{
    (void)state;
    const char *many[INFERD_STOP_N_MAX + 1];
    char long_str[INFERD_STOP_LEN_MAX + 2];
    inferd_stopper *st = (inferd_stopper *)(uintptr_t)0x1;
    inferd_error err = {0};

    for (int i = 0; i <= INFERD_STOP_N_MAX; i++)
        many[i] = "x";
    assert_int_equal(inferd_stopper_create(many, INFERD_STOP_N_MAX + 1, &st, &err), INFERD_E_RANGE);
    assert_string_equal(err.msg, "stop: 17 strings given, at most 16 allowed");
    assert_ptr_equal(st, (inferd_stopper *)(uintptr_t)0x1);

    memset(long_str, 'y', sizeof(long_str) - 1);
    long_str[sizeof(long_str) - 1] = '\0'; /* 257 bytes */
    const char *one[2] = {"ok", long_str};
    assert_int_equal(inferd_stopper_create(one, 2, &st, &err), INFERD_E_RANGE);
    assert_string_equal(err.msg, "stop[1] is longer than 256 bytes");

    const char *with_null[2] = {"ok", NULL};
    assert_int_equal(inferd_stopper_create(with_null, 2, &st, &err), INFERD_E_INVALID);
    assert_string_equal(err.msg, "stop[1] is NULL");
    assert_int_equal(inferd_stopper_create(NULL, 1, &st, &err), INFERD_E_INVALID);
    assert_ptr_equal(st, (inferd_stopper *)(uintptr_t)0x1);

    /* 16 strings of exactly 256 bytes are accepted; 255 bytes held at most. */
    long_str[INFERD_STOP_LEN_MAX] = '\0';
    for (int i = 0; i < INFERD_STOP_N_MAX; i++)
        many[i] = long_str;
    st = NULL;
    assert_int_equal(inferd_stopper_create(many, INFERD_STOP_N_MAX, &st, &err), 0);
    sink k = {0};
    char part[INFERD_STOP_LEN_MAX];
    memcpy(part, long_str, INFERD_STOP_LEN_MAX - 1);
    part[INFERD_STOP_LEN_MAX - 1] = '\0';
    push(st, &k, part);
    assert_int_equal(inferd_stopper_held(st), INFERD_STOP_LEN_MAX - 1);
    assert_int_equal(k.len, 0);
    push(st, &k, "y");
    assert_true(k.stopped);
    assert_int_equal(k.len, 0);
    inferd_stopper_destroy(st);
    inferd_stopper_destroy(NULL);
}

static void test_stopper_fault_injection(void **state)
{
    (void)state;
    const char *stops[] = {"a", "bc"};
    inferd_stopper *st = NULL;
    inferd_error err = {0};
    inferd_alloc_fail_after(1);
    assert_int_equal(inferd_stopper_create(stops, 2, &st, &err), INFERD_E_NOMEM);
    inferd_alloc_fail_after(0);
    assert_null(st);
    assert_int_equal(inferd_stopper_create(stops, 2, &st, &err), 0);
    inferd_stopper_destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_params_default),
        cmocka_unit_test(test_sampler_greedy_is_argmax),
        cmocka_unit_test(test_sampler_top_k1_is_greedy),
        cmocka_unit_test(test_sampler_seed_determinism),
        cmocka_unit_test(test_sampler_reset_replays),
        cmocka_unit_test(test_sampler_distribution),
        cmocka_unit_test(test_sampler_distribution_full_vocab),
        cmocka_unit_test(test_sampler_bucket_path_matches_sorted),
        cmocka_unit_test(test_sampler_top_k_filter),
        cmocka_unit_test(test_sampler_top_p_filter),
        cmocka_unit_test(test_sampler_top_p_large),
        cmocka_unit_test(test_sampler_min_p_filter),
        cmocka_unit_test(test_sampler_chain_order),
        cmocka_unit_test(test_sampler_penalties_exact),
        cmocka_unit_test(test_sampler_penalties_flip_sampled),
        cmocka_unit_test(test_sampler_param_errors),
        cmocka_unit_test(test_sampler_random_seed),
        cmocka_unit_test(test_sampler_fault_injection),
        cmocka_unit_test(test_sampler_nonfinite),
        cmocka_unit_test(test_sampler_large_vocab),
        cmocka_unit_test(test_sampler_logprobs_topn),
        cmocka_unit_test(test_stopper_split_across_pushes),
        cmocka_unit_test(test_stopper_false_alarm),
        cmocka_unit_test(test_stopper_multiple),
        cmocka_unit_test(test_stopper_at_beginning),
        cmocka_unit_test(test_stopper_flush),
        cmocka_unit_test(test_stopper_utf8),
        cmocka_unit_test(test_stopper_random_chunking),
        cmocka_unit_test(test_stopper_errors),
        cmocka_unit_test(test_stopper_fault_injection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
