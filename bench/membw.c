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

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} part;

static void *reader(void *arg)
{
    part *pt = arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= pt->n; i += 4) {
        s0 += pt->p[i];
        s1 += pt->p[i + 1];
        s2 += pt->p[i + 2];
        s3 += pt->p[i + 3];
    }
    pt->sum = s0 + s1 + s2 + s3;
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
    uint64_t *buf = malloc(bytes);
    if (!buf) {
        fprintf(stderr, "membw: no memory\n");
        return 1;
    }
    memset(buf, 1, bytes);
    size_t n = bytes / sizeof(uint64_t), per = n / (size_t)n_threads;
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
        double gbs = (double)(per * (size_t)n_threads * 8) / (now_s() - t0) / 1e9;
        if (gbs > best)
            best = gbs;
    }
    printf("%.2f\n", best);
    free(buf);
    return total == 42 ? 1 : 0; /* keeps the sums alive */
}
