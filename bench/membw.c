/* Memory-bandwidth probe: the read bandwidth (GB/s) of a buffer much larger
 * than the caches, with 1..N threads each summing its own part. This is the
 * ceiling of generation speed: each generated token reads every weight
 * once, so tg tokens/s <= bandwidth / weight bytes. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 16-byte vectors (SSE2 on any x86-64): the reader must not be the
 * bottleneck, so it keeps eight independent accumulators. */
typedef uint64_t v2u64 __attribute__((vector_size(16)));

typedef struct {
    const v2u64 *p;
    size_t n; /* vectors */
    uint64_t sum;
} part;

static void *reader(void *arg)
{
    part *pt = arg;
    v2u64 s[8] = {{0}};
    for (size_t i = 0; i + 8 <= pt->n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += pt->p[i + (size_t)j];
    v2u64 t = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    pt->sum = t[0] + t[1];
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int n_threads = argc > 1 ? atoi(argv[1]) : 1;
    size_t bytes = (size_t)1 << 30;
    if (n_threads < 1 || n_threads > 64) {
        fprintf(stderr, "usage: membw [THREADS]\n");
        return 2;
    }
    v2u64 *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "membw: no memory\n");
        return 1;
    }
    memset(buf, 1, bytes);
    size_t n = bytes / sizeof(v2u64), per = n / (size_t)n_threads;
    double best = 0;
    uint64_t total = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t th[64];
        part parts[64];
        double t0 = now_s();
        for (int t = 0; t < n_threads; t++) {
            parts[t] = (part){buf + (size_t)t * per, per, 0};
            pthread_create(&th[t], NULL, reader, &parts[t]);
        }
        for (int t = 0; t < n_threads; t++) {
            pthread_join(th[t], NULL);
            total += parts[t].sum;
        }
        double gbs = (double)(per * (size_t)n_threads * sizeof(v2u64)) / (now_s() - t0) / 1e9;
        if (gbs > best)
            best = gbs;
    }
    printf("%.2f\n", best);
    free(buf);
    return total == 42 ? 1 : 0; /* keeps the sums alive */
}
