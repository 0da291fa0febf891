/* Token sampler (llama.cpp's chain: penalties -> top-k -> top-p -> min-p ->
 * temperature -> draw) and stop-string matcher.
 * Candidates live in structure-of-arrays buffers of n_vocab entries made at
 * creation; every ordering is total (value descending, then id ascending),
 * so results never depend on a sort's stability.  NaN logits are read as
 * -inf everywhere.  A sampler or stopper is used by one thread at a time. */
#include "inferd/sampler.h"

#include "inferd/alloc.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Greedy and top-k scan the logits in blocks of BLK: a block whose largest
 * value cannot beat the current best is skipped after one vectorizable
 * max, so the common case costs one streaming pass. */
#define BLK 32 /* a multiple of 8 */

/* With top-k off, the remaining filters and the draw rank candidates by
 * bucketing their log-weight (vmax - v) / t into N_BUCKET buckets spanning
 * [0, X_SPAN); everything lighter than e^-X_SPAN shares the last bucket.
 * One pass sums weights per bucket, which locates the bucket where the
 * cumulative distribution crosses its target; only that bucket is sorted. */
#define N_BUCKET 1024
#define X_SPAN 24.0f

struct inferd_sampler {
    inferd_sampler_params p; /* validated copy */
    int32_t n_vocab;
    uint64_t seed;              /* given or drawn at creation */
    uint64_t rng[4];            /* xoshiro256** state */
    bool pen_active;            /* a penalty is on and the window is > 0 */
    int32_t win;                /* penalty window, in tokens */
    int32_t ring_head;          /* next slot of ring to write */
    int32_t ring_len;           /* valid entries in ring, <= win */
    int32_t *ring;              /* (win) accepted ids; when full, oldest at head */
    int32_t *counts;            /* (n_vocab) occurrences of each id in ring */
    float *work;                /* (n_vocab) penalized logits */
    float *cv;                  /* (n_vocab) candidate values */
    int32_t *cid;               /* (n_vocab) candidate ids */
    float *cp;                  /* (n_vocab) candidate weights, unnormalized */
    double bucket_w[N_BUCKET];  /* rank_walk: weight per bucket */
    int32_t bucket_n[N_BUCKET]; /* rank_walk: candidates per bucket */
};

/* ---- random numbers: xoshiro256** 1.0 (Blackman & Vigna), state filled by
 * splitmix64 from the 64-bit seed, as its authors recommend. ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t st[4])
{
    const uint64_t result = rotl64(st[1] * 5, 7) * 9;
    const uint64_t t = st[1] << 17;

    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return result;
}

static void rng_seed(uint64_t st[4], uint64_t seed)
{
    uint64_t x = seed;
    /* splitmix64 is a bijection of distinct counters, so at most one of the
     * four words can be zero and the state is never all-zero. */
    for (int i = 0; i < 4; i++)
        st[i] = splitmix64(&x);
}

/* Uniform double in [0, 1): the top 53 bits scaled by 2^-53. */
static double rng_uniform(uint64_t st[4]) { return (double)(xoshiro_next(st) >> 11) * 0x1.0p-53; }

static uint64_t random_bits(void);

/* A seed for a request that gave none: the kernel's getrandom(), or, if that
 * is unavailable, the clock, the pid and a process-wide counter mixed
 * through splitmix64 (distinct across calls, merely unpredictable-ish).
 * Drawn seeds keep 53 bits so that they survive JSON number parsers
 * (JavaScript, jq) when reported to clients and passed back. */
static uint64_t random_seed(void) { return random_bits() & INFERD_SEED_MAX; }

static uint64_t random_bits(void)
{
    static atomic_uint_fast64_t counter;
    uint64_t v = 0;

    for (int tries = 0; tries < 8; tries++) {
        ssize_t r = getrandom(&v, sizeof(v), 0);
        if (r == (ssize_t)sizeof(v))
            return v;
        if (r < 0 && errno != EINTR)
            break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    x ^= (uint64_t)getpid() << 32;
    /* relaxed: the counter only has to differ between calls */
    x += atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed) * 0xd1342543de82ef95ULL;
    return splitmix64(&x);
}

/* ---- candidate ordering and selection ---- */

static inline float clean(float v) { return v != v ? -INFINITY : v; }

/* True when candidate a ranks below candidate b: smaller value, or the same
 * value and a larger id. */
static inline bool worse(float va, int32_t ia, float vb, int32_t ib)
{
    return va < vb || (va == vb && ia > ib);
}

/* Heap with the worst candidate at the root. */
static void sift_down(float *v, int32_t *id, size_t n, size_t i)
{
    const float xv = v[i];
    const int32_t xi = id[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && worse(v[c + 1], id[c + 1], v[c], id[c]))
            c++;
        if (!worse(v[c], id[c], xv, xi))
            break;
        v[i] = v[c];
        id[i] = id[c];
        i = c;
    }
    v[i] = xv;
    id[i] = xi;
}

static void heapify(float *v, int32_t *id, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(v, id, n, i);
}

/* Turn a worst-at-root heap into an array sorted best first: each step moves
 * the current worst to the end of the shrinking heap. */
static void heap_to_sorted(float *v, int32_t *id, size_t n)
{
    for (size_t end = n; end > 1; end--) {
        float tv = v[0];
        int32_t ti = id[0];
        v[0] = v[end - 1];
        id[0] = id[end - 1];
        v[end - 1] = tv;
        id[end - 1] = ti;
        sift_down(v, id, end - 1, 0);
    }
}

/* Largest of x[0..BLK), ignoring NaN (x > m is false for NaN); -inf if
 * none.  Eight independent lanes let the compiler use packed max
 * instructions, whose semantics are exactly `x > m ? x : m`. */
static inline float block_max(const float *x)
{
    float m[8];
    for (int l = 0; l < 8; l++)
        m[l] = -INFINITY;
    for (int j = 0; j < BLK; j += 8)
        for (int l = 0; l < 8; l++)
            m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    float r = m[0];
    for (int l = 1; l < 8; l++)
        r = m[l] > r ? m[l] : r;
    return r;
}

/* Write the best m (1 <= m <= n) of vals[0..n) to ov/oid, sorted best first.
 * A bounded heap: one pass over vals, and since ids arrive in increasing
 * order an equal value never displaces the root.  NaN never passes the
 * `v > root` test, so only the initial fill needs clean(). */
static void select_top(const float *vals, int32_t n, size_t m, float *ov, int32_t *oid)
{
    int32_t i = (int32_t)m;

    for (size_t j = 0; j < m; j++) {
        ov[j] = clean(vals[j]);
        oid[j] = (int32_t)j;
    }
    heapify(ov, oid, m);
    for (; i + BLK <= n; i += BLK) {
        if (!(block_max(vals + i) > ov[0]))
            continue;
        for (int32_t j = i; j < i + BLK; j++) {
            if (vals[j] > ov[0]) {
                ov[0] = vals[j];
                oid[0] = j;
                sift_down(ov, oid, m, 0);
            }
        }
    }
    for (; i < n; i++) {
        if (vals[i] > ov[0]) {
            ov[0] = vals[i];
            oid[0] = i;
            sift_down(ov, oid, m, 0);
        }
    }
    heap_to_sorted(ov, oid, m);
}

/* Largest value of vals[0..n), NaN ignored; -inf if none. */
static float max_value(const float *vals, int32_t n)
{
    float m = -INFINITY;
    int32_t i = 0;
    for (; i + BLK <= n; i += BLK) {
        float b = block_max(vals + i);
        m = b > m ? b : m;
    }
    for (; i < n; i++)
        m = vals[i] > m ? vals[i] : m;
    return m;
}

/* Softmax weight of v relative to the maximum vmax, at temperature t.  The
 * equality test keeps the weight of the maximum at 1 even when vmax is
 * infinite (where v - vmax would be NaN), so all-(-inf) rows are uniform
 * and +inf logits share the mass. */
static inline float weight(float v, float vmax, float t)
{
    return v == vmax ? 1.0f : expf((v - vmax) / t);
}

/* ---- the sampler ---- */

inferd_sampler_params inferd_sampler_params_default(void)
{
    inferd_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .n_ctx = 4096,
        .has_seed = false,
        .seed = 0,
    };
    return p;
}

static int validate(const inferd_sampler_params *p, int32_t n_vocab, inferd_error *err)
{
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return inferd_fail(err, INFERD_E_RANGE, "temperature must be a finite number >= 0 (got %g)",
                           (double)p->temperature);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return inferd_fail(err, INFERD_E_RANGE, "top_p must be in [0, 1] (got %g)",
                           (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return inferd_fail(err, INFERD_E_RANGE, "min_p must be in [0, 1] (got %g)",
                           (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return inferd_fail(err, INFERD_E_RANGE,
                           "repeat_penalty must be a finite number > 0 (got %g)",
                           (double)p->repeat_penalty);
    if (!isfinite(p->frequency_penalty))
        return inferd_fail(err, INFERD_E_RANGE, "frequency_penalty must be finite (got %g)",
                           (double)p->frequency_penalty);
    if (!isfinite(p->presence_penalty))
        return inferd_fail(err, INFERD_E_RANGE, "presence_penalty must be finite (got %g)",
                           (double)p->presence_penalty);
    if (p->repeat_last_n < -1 || p->repeat_last_n > INFERD_SAMPLER_LAST_N_MAX)
        return inferd_fail(err, INFERD_E_RANGE, "repeat_last_n must be in [-1, %d] (got %d)",
                           INFERD_SAMPLER_LAST_N_MAX, (int)p->repeat_last_n);
    if (p->repeat_last_n == -1 && (p->n_ctx < 1 || p->n_ctx > INFERD_SAMPLER_LAST_N_MAX))
        return inferd_fail(err, INFERD_E_RANGE,
                           "n_ctx must be in [1, %d] when repeat_last_n is -1 "
                           "(got %d)",
                           INFERD_SAMPLER_LAST_N_MAX, (int)p->n_ctx);
    if (n_vocab < 1 || n_vocab > INFERD_SAMPLER_VOCAB_MAX)
        return inferd_fail(err, INFERD_E_RANGE, "n_vocab must be in [1, %d] (got %d)",
                           INFERD_SAMPLER_VOCAB_MAX, (int)n_vocab);
    return 0;
}

int inferd_sampler_params_validate(const inferd_sampler_params *p, int32_t n_vocab,
                                   inferd_error *err)
{
    if (!p)
        return inferd_fail(err, INFERD_E_INVALID, "sampler: params must not be NULL");
    return validate(p, n_vocab, err);
}

int inferd_sampler_create(const inferd_sampler_params *p, int32_t n_vocab, inferd_sampler **out_s,
                          inferd_error *err)
{
    inferd_sampler *s;
    size_t n;
    int rc;

    if (!p || !out_s)
        return inferd_fail(err, INFERD_E_INVALID, "sampler: params and out_s must not be NULL");
    rc = validate(p, n_vocab, err);
    if (rc < 0)
        return rc;

    s = inferd_calloc(1, sizeof(*s));
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "sampler: no memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->win = p->repeat_last_n == -1 ? p->n_ctx : p->repeat_last_n;
    /* Like llama.cpp, penalties at their neutral values cost nothing: no
     * history is kept and the logits are not copied. */
    s->pen_active = s->win > 0 && (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f ||
                                   p->presence_penalty != 0.0f);

    n = (size_t)n_vocab;
    s->cv = inferd_malloc(n * sizeof(float));
    s->cid = inferd_malloc(n * sizeof(int32_t));
    s->cp = inferd_malloc(n * sizeof(float));
    if (!s->cv || !s->cid || !s->cp)
        goto fail_nomem;
    if (s->pen_active) {
        s->ring = inferd_malloc((size_t)s->win * sizeof(int32_t));
        s->counts = inferd_calloc(n, sizeof(int32_t));
        s->work = inferd_malloc(n * sizeof(float));
        if (!s->ring || !s->counts || !s->work)
            goto fail_nomem;
    }

    s->seed = p->has_seed ? p->seed : random_seed();
    rng_seed(s->rng, s->seed);
    *out_s = s;
    return 0;

fail_nomem:
    /* destroy frees exactly the buffers that were allocated */
    inferd_sampler_destroy(s);
    return inferd_fail(err, INFERD_E_NOMEM, "sampler: no memory for n_vocab=%d", (int)n_vocab);
}

void inferd_sampler_destroy(inferd_sampler *s)
{
    if (!s)
        return;
    inferd_free(s->work);
    inferd_free(s->counts);
    inferd_free(s->ring);
    inferd_free(s->cp);
    inferd_free(s->cid);
    inferd_free(s->cv);
    inferd_free(s);
}

void inferd_sampler_reset(inferd_sampler *s)
{
    if (s->pen_active) {
        /* Zero only the counts the history touched: O(window), not
         * O(n_vocab). */
        for (int32_t i = 0; i < s->ring_len; i++)
            s->counts[s->ring[i]] = 0;
    }
    s->ring_len = 0;
    s->ring_head = 0;
    rng_seed(s->rng, s->seed);
}

uint64_t inferd_sampler_seed(const inferd_sampler *s) { return s->seed; }

void inferd_sampler_accept(inferd_sampler *s, int32_t token)
{
    if (!s->pen_active || token < 0 || token >= s->n_vocab)
        return;
    if (s->ring_len == s->win)
        s->counts[s->ring[s->ring_head]]--; /* the oldest leaves the window */
    else
        s->ring_len++;
    s->ring[s->ring_head] = token;
    s->counts[token]++;
    if (++s->ring_head == s->win)
        s->ring_head = 0;
}

/* The penalties sampler on one logit of a token seen c > 0 times. */
static inline float penalize(const inferd_sampler_params *p, float v, int32_t c)
{
    if (v <= 0.0f)
        v *= p->repeat_penalty;
    else
        v /= p->repeat_penalty;
    return v - ((float)c * p->frequency_penalty + p->presence_penalty);
}

/* The row the filters read: the logits themselves, or a penalized copy. */
static const float *penalized(inferd_sampler *s, const float *logits)
{
    if (!s->pen_active || s->ring_len == 0)
        return logits;
    memcpy(s->work, logits, (size_t)s->n_vocab * sizeof(float));
    /* A token may sit in the ring several times; each visit computes the
     * same value from the raw logit, so repeats are harmless. */
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i];
        s->work[t] = penalize(&s->p, clean(logits[t]), s->counts[t]);
    }
    return s->work;
}

/* Argmax of the penalized logits in one pass; the first maximum wins, so
 * ties go to the lowest id.  Penalized tokens are skipped in the scan and
 * weighed afterwards with their penalized value (the tie rule included). */
static int32_t sample_greedy(const inferd_sampler *s, const float *logits)
{
    const bool pen = s->pen_active && s->ring_len > 0;
    const int32_t n = s->n_vocab;
    int32_t best = 0, i = 0;
    /* Token 0 at -inf is a valid starting point: anything better replaces
     * it, and at a tie at -inf it is the lowest id. */
    float bv = -INFINITY;

    for (; i + BLK <= n; i += BLK) {
        if (!(block_max(logits + i) > bv))
            continue;
        for (int32_t j = i; j < i + BLK; j++) {
            if (logits[j] > bv && !(pen && s->counts[j] > 0)) {
                bv = logits[j];
                best = j;
            }
        }
    }
    for (; i < n; i++) {
        if (logits[i] > bv && !(pen && s->counts[i] > 0)) {
            bv = logits[i];
            best = i;
        }
    }
    if (pen) {
        for (int32_t r = 0; r < s->ring_len; r++) {
            int32_t t = s->ring[r];
            float v = penalize(&s->p, clean(logits[t]), s->counts[t]);
            if (v > bv || (v == bv && t < best)) {
                bv = v;
                best = t;
            }
        }
    }
    return best;
}

/* A rank cut-off: the candidates are the tokens ranked at or above (v, id),
 * i.e. value > v, or value == v and id <= id. */
typedef struct bound {
    float v;
    int32_t id;
} bound;

static inline bool within(float v, int32_t id, bound b)
{
    return v > b.v || (v == b.v && id <= b.id);
}

/* Bucket of value v: monotone non-increasing in v, 0 for the maximum. */
static inline int bucket_of(float v, float vmax, float scale)
{
    if (v == vmax)
        return 0;
    /* vmax - v > 0 here, possibly +inf; v is never NaN (cleaned). */
    float y = (vmax - v) * scale;
    return y < (float)(N_BUCKET - 1) ? (int)y : N_BUCKET - 1;
}

/* Among the tokens of vals within bound b, find the first one in rank order
 * at which the running sum of softmax weights at temperature t reaches
 * frac times their total, and return it as the new bound.  frac in [0, 1];
 * the maximum (weight 1) is always within b, so the result exists. */
static bound rank_walk(inferd_sampler *s, const float *vals, float vmax, float t, bound b,
                       double frac)
{
    const int32_t n = s->n_vocab;
    const float scale = (float)N_BUCKET / (X_SPAN * t);
    double *bw = s->bucket_w;
    int32_t *bn = s->bucket_n;
    double total = 0.0, run = 0.0, before = 0.0;
    int kb = -1;

    memset(bw, 0, sizeof(s->bucket_w));
    memset(bn, 0, sizeof(s->bucket_n));
    for (int32_t i = 0; i < n; i++) {
        float v = clean(vals[i]);
        if (!within(v, i, b))
            continue;
        int k = bucket_of(v, vmax, scale);
        bw[k] += weight(v, vmax, t);
        bn[k]++;
    }
    for (int k = 0; k < N_BUCKET; k++)
        total += bw[k];

    const double target = frac * total;
    for (int k = 0; k < N_BUCKET; k++) {
        if (bw[k] > 0.0) {
            /* Remember the last bucket with weight in case rounding keeps
             * the running sum just below the target. */
            kb = k;
            before = run;
        }
        run += bw[k];
        if (bw[k] > 0.0 && run >= target)
            break;
    }

    /* Sort that bucket's candidates and walk them. */
    size_t c = 0;
    for (int32_t i = 0; i < n; i++) {
        float v = clean(vals[i]);
        if (within(v, i, b) && bucket_of(v, vmax, scale) == kb) {
            s->cv[c] = v;
            s->cid[c] = i;
            c++;
        }
    }
    heapify(s->cv, s->cid, c);
    heap_to_sorted(s->cv, s->cid, c);

    size_t last_pos = 0;
    run = before;
    for (size_t j = 0; j < c; j++) {
        float w = weight(s->cv[j], vmax, t);
        if (w > 0.0f)
            last_pos = j;
        run += w;
        if (w > 0.0f && run >= target)
            return (bound){s->cv[j], s->cid[j]};
    }
    /* The bucket's weights summed in rank order fell short of their sum in
     * id order by a rounding error: take its last weighted candidate. */
    return (bound){s->cv[last_pos], s->cid[last_pos]};
}

/* top-k on: the candidates are a sorted array from the start. */
static int32_t sample_sorted(inferd_sampler *s, const float *vals)
{
    const inferd_sampler_params *p = &s->p;
    float *cv = s->cv;
    int32_t *cid = s->cid;
    size_t n_cand = (size_t)p->top_k;

    select_top(vals, s->n_vocab, n_cand, cv, cid);
    const float vmax = cv[0];

    if (p->top_p < 1.0f) {
        /* Softmax over the top-k (before temperature), then keep the
         * shortest prefix whose mass reaches top_p. */
        double sum = 0.0, cum = 0.0;
        for (size_t i = 0; i < n_cand; i++)
            sum += weight(cv[i], vmax, 1.0f);
        for (size_t i = 0; i < n_cand; i++) {
            cum += weight(cv[i], vmax, 1.0f) / sum;
            if (cum >= p->top_p) {
                n_cand = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  v_i >= vmax + log(min_p); the first
         * candidate always stays. */
        const float thr = vmax + logf(p->min_p);
        size_t i = 1;
        while (i < n_cand && cv[i] >= thr)
            i++;
        n_cand = i;
    }

    /* Temperature, softmax and the draw. */
    const double u = rng_uniform(s->rng);
    double sum = 0.0, run = 0.0;
    for (size_t i = 0; i < n_cand; i++) {
        s->cp[i] = weight(cv[i], vmax, p->temperature);
        sum += s->cp[i];
    }
    const double target = u * sum;
    /* The walk adds the same weights in the same order as the sum and
     * target <= sum, so it ends on a candidate of weight > 0 (the first one
     * when target is 0). */
    for (size_t i = 0; i < n_cand; i++) {
        run += s->cp[i];
        if (run >= target)
            return cid[i];
    }
    return cid[n_cand - 1];
}

/* top-k off: the candidates stay the whole vocabulary, cut by a rank bound;
 * nothing is sorted but the one bucket each walk lands in. */
static int32_t sample_bounded(inferd_sampler *s, const float *vals)
{
    const inferd_sampler_params *p = &s->p;
    const float vmax = max_value(vals, s->n_vocab);
    bound b = {-INFINITY, INT32_MAX}; /* everything */

    if (p->top_p < 1.0f)
        b = rank_walk(s, vals, vmax, 1.0f, b, (double)p->top_p);
    if (p->min_p > 0.0f) {
        /* The tokens with v >= thr are those ranked at or above (thr, max
         * id); keep whichever bound is tighter. */
        bound m = {vmax + logf(p->min_p), INT32_MAX};
        if (m.v > b.v)
            b = m;
    }
    const double u = rng_uniform(s->rng);
    return rank_walk(s, vals, vmax, p->temperature, b, u).id;
}

int32_t inferd_sampler_sample(inferd_sampler *s, const float *logits)
{
    if (s->p.temperature <= 0.0f)
        return sample_greedy(s, logits);

    const float *vals = penalized(s, logits);
    if (s->p.top_k > 0 && s->p.top_k < s->n_vocab)
        return sample_sorted(s, vals);
    return sample_bounded(s, vals);
}

/* log(sum(exp(logit - vmax))) over the vocabulary, in double. */
static double log_sum_exp(const float *logits, int32_t n_vocab, float vmax)
{
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) {
        float v = clean(logits[i]);
        sum += v == vmax ? 1.0 : exp((double)v - (double)vmax);
    }
    return log(sum);
}

static float logprob_at(float v, float vmax, double lse)
{
    return v == vmax ? (float)-lse : (float)((double)v - (double)vmax - lse);
}

int inferd_logprobs_topn(const float *logits, int32_t n_vocab, int n, int32_t *out_ids,
                         float *out_logprobs)
{
    if (!logits || n_vocab <= 0 || n < 0 || (n > 0 && (!out_ids || !out_logprobs)))
        return INFERD_E_INVALID;
    if (n == 0)
        return 0;

    const size_t m = (size_t)n < (size_t)n_vocab ? (size_t)n : (size_t)n_vocab;
    select_top(logits, n_vocab, m, out_logprobs, out_ids);

    const float vmax = out_logprobs[0];
    const double lse = log_sum_exp(logits, n_vocab, vmax);
    for (size_t i = 0; i < m; i++)
        out_logprobs[i] = logprob_at(out_logprobs[i], vmax, lse);
    return (int)m;
}

float inferd_logprob_of(const float *logits, int32_t n_vocab, int32_t id)
{
    if (!logits || n_vocab <= 0 || id < 0 || id >= n_vocab)
        return NAN;
    float vmax = -INFINITY;
    for (int32_t i = 0; i < n_vocab; i++) {
        float v = clean(logits[i]);
        if (v > vmax)
            vmax = v;
    }
    return logprob_at(clean(logits[id]), vmax, log_sum_exp(logits, n_vocab, vmax));
}

/* ---- stop strings ---- */

struct stop {
    uint16_t len;                       /* 1..INFERD_STOP_LEN_MAX bytes */
    int16_t orig;                       /* index in the creator's array */
    uint16_t state;                     /* longest suffix of the text that
                                            is a prefix of str (< len) */
    uint16_t fail[INFERD_STOP_LEN_MAX]; /* KMP: fail[i] = longest proper
                                            border of str[0..i] */
    unsigned char str[INFERD_STOP_LEN_MAX];
};

struct inferd_stopper {
    size_t n_stops;
    struct stop stops[INFERD_STOP_N_MAX];
    size_t held_len; /* <= longest stop length - 1 */
    bool stopped;
    int matched; /* orig index, or -1 */
    char held[INFERD_STOP_LEN_MAX];
};

static void build_fail(struct stop *sp)
{
    size_t k = 0;
    sp->fail[0] = 0;
    for (size_t i = 1; i < sp->len; i++) {
        while (k > 0 && sp->str[i] != sp->str[k])
            k = sp->fail[k - 1];
        if (sp->str[i] == sp->str[k])
            k++;
        sp->fail[i] = (uint16_t)k;
    }
}

/* Feed one byte to one automaton; true when the stop string completes. */
static inline bool stop_step(struct stop *sp, unsigned char c)
{
    size_t q = sp->state;
    while (q > 0 && sp->str[q] != c)
        q = sp->fail[q - 1];
    if (sp->str[q] == c)
        q++;
    sp->state = (uint16_t)q;
    return q == sp->len;
}

int inferd_stopper_create(const char *const *stops, size_t n_stops, inferd_stopper **out_st,
                          inferd_error *err)
{
    inferd_stopper *st;

    if (!out_st || (n_stops > 0 && !stops))
        return inferd_fail(err, INFERD_E_INVALID, "stop: out_st and stops must not be NULL");
    if (n_stops > INFERD_STOP_N_MAX)
        return inferd_fail(err, INFERD_E_RANGE, "stop: %zu strings given, at most %d allowed",
                           n_stops, INFERD_STOP_N_MAX);
    for (size_t i = 0; i < n_stops; i++) {
        if (!stops[i])
            return inferd_fail(err, INFERD_E_INVALID, "stop[%zu] is NULL", i);
        size_t len = strnlen(stops[i], INFERD_STOP_LEN_MAX + 1);
        if (len > INFERD_STOP_LEN_MAX)
            return inferd_fail(err, INFERD_E_RANGE, "stop[%zu] is longer than %d bytes", i,
                               INFERD_STOP_LEN_MAX);
    }

    st = inferd_calloc(1, sizeof(*st));
    if (!st)
        return inferd_fail(err, INFERD_E_NOMEM, "stop: no memory");
    for (size_t i = 0; i < n_stops; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0)
            continue; /* would stop before any text: ignored */
        struct stop *sp = &st->stops[st->n_stops++];
        sp->len = (uint16_t)len;
        sp->orig = (int16_t)i;
        memcpy(sp->str, stops[i], len);
        build_fail(sp);
    }
    st->matched = -1;
    *out_st = st;
    return 0;
}

void inferd_stopper_destroy(inferd_stopper *st) { inferd_free(st); }

static void clear_states(inferd_stopper *st)
{
    for (size_t j = 0; j < st->n_stops; j++)
        st->stops[j].state = 0;
}

void inferd_stopper_reset(inferd_stopper *st)
{
    clear_states(st);
    st->held_len = 0;
    st->stopped = false;
    st->matched = -1;
}

size_t inferd_stopper_held(const inferd_stopper *st) { return st->held_len; }

int inferd_stopper_matched(const inferd_stopper *st) { return st->matched; }

/* Write the first n bytes of held ++ text to out (n <= held_len + len). */
static size_t emit(const inferd_stopper *st, const char *text, size_t n, char *out, size_t cap)
{
    assert(n <= cap && "inferd_stopper: output buffer too small");
    if (n > cap)
        n = cap;
    size_t a = n < st->held_len ? n : st->held_len;
    if (a > 0)
        memcpy(out, st->held, a);
    if (n > a)
        memcpy(out + a, text, n - a);
    return n;
}

size_t inferd_stopper_push(inferd_stopper *st, const char *text, size_t len, char *out, size_t cap,
                           bool *out_stopped)
{
    if (st->stopped) {
        *out_stopped = true;
        return 0;
    }

    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)text[i];
        struct stop *best = NULL;

        for (size_t j = 0; j < st->n_stops; j++) {
            struct stop *sp = &st->stops[j];
            if (stop_step(sp, c) && (!best || sp->len > best->len))
                best = sp;
        }
        if (best) {
            /* Each automaton's state never exceeds the unemitted bytes (the
             * held ones were chosen as the longest live prefix), so the
             * match starts inside held ++ text[0..i]. */
            size_t n_emit = st->held_len + i + 1 - best->len;
            n_emit = emit(st, text, n_emit, out, cap);
            st->stopped = true;
            st->matched = best->orig;
            st->held_len = 0;
            clear_states(st);
            *out_stopped = true;
            return n_emit;
        }
    }

    /* Hold back the longest tail that is still a prefix of a stop string. */
    size_t keep = 0;
    for (size_t j = 0; j < st->n_stops; j++)
        if (st->stops[j].state > keep)
            keep = st->stops[j].state;
    const size_t total = st->held_len + len;
    size_t n_emit = emit(st, text, total - keep, out, cap);
    if (keep <= len) {
        if (keep > 0)
            memcpy(st->held, text + len - keep, keep);
    } else {
        /* The kept tail begins inside the old held bytes. */
        size_t from_held = keep - len;
        memmove(st->held, st->held + st->held_len - from_held, from_held);
        if (len > 0)
            memcpy(st->held + from_held, text, len);
    }
    st->held_len = keep;
    *out_stopped = false;
    return n_emit;
}

size_t inferd_stopper_flush(inferd_stopper *st, char *out, size_t cap)
{
    size_t n = st->held_len;
    assert(n <= cap && "inferd_stopper: output buffer too small");
    if (n > cap)
        n = cap;
    if (n > 0)
        memcpy(out, st->held, n);
    st->held_len = 0;
    clear_states(st);
    return n;
}
