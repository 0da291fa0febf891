/* Micro-benchmark of inferd_matmul: one weight shape (default TinyLlama's
 * FFN, 5632 x 2048) for each type given, at 1 token (reported as GB/s of
 * weights streamed, from a set of matrices larger than the last-level cache
 * so that memory is what is measured, and from one hot matrix) and at many
 * tokens (GFLOP/s), with 1 and 2 threads.
 *
 * usage: bench_matmul [-r rows] [-c cols] [-t tokens] [-s seconds] [type...]
 * The ISA is the one inferd_cpu_isa() picks ($INFERD_ISA caps it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inferd/alloc.h"
#include "inferd/matmul.h"
#include "inferd/pool.h"
#include "inferd/quant.h"

#define COLD_BYTES (256u << 20) /* total weights of the cold set */
#define MAX_MATS 256

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }

static void fill_random(void *p, size_t n, uint64_t seed)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (uint8_t)(seed >> 56);
    }
}

/* Valid weights: random bytes with every block scale (and minimum) set to
 * a sane f16, or random floats for the float types. */
static void make_matrix(uint32_t type, void *w, int64_t rows, int64_t cols, uint64_t seed)
{
    const inferd_dtype_info *di = inferd_dtype_get(type);
    const size_t bytes = inferd_quant_row_size(type, cols) * (size_t)rows;
    if (di->block_size == 1) {
        const size_t n = (size_t)(rows * cols);
        float *x = inferd_malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float)((double)(seed >> 40) / (double)(1ull << 24) - 0.5);
        }
        inferd_kernels_get(type)->from_float(x, w, (int64_t)n);
        inferd_free(x);
        return;
    }
    fill_random(w, bytes, seed);
    for (size_t off = 0; off < bytes; off += di->type_size) {
        uint16_t d = 0x2155, m = 0xa400;
        /* Q6_K keeps its d at the end of the block; Q4_K/Q5_K's dmin
         * follows d as Q4_1's m does. */
        memcpy((char *)w + off + (type == INFERD_DTYPE_Q6_K ? 208 : 0), &d, 2);
        if (type == INFERD_DTYPE_Q4_1 || type == INFERD_DTYPE_Q5_1 || type == INFERD_DTYPE_Q4_K ||
            type == INFERD_DTYPE_Q5_K)
            memcpy((char *)w + off + 2, &m, 2);
    }
}

typedef struct {
    inferd_pool *pool;
    uint32_t type;
    int64_t rows, cols;
    void **mats;
    int n_mats;
    float *x, *y;
    void *work;
} bench_ctx;

/* Runs matmuls over mats round-robin for about `secs`; wall seconds per
 * call, and process CPU seconds per call in *out_cpu (with one thread, the
 * time the machine actually gave us: steadier on a busy machine). */
static double time_calls(bench_ctx *c, int64_t n_tok, int n_mats, double secs, double *out_cpu)
{
    int i = 0;
    for (int k = 0; k < n_mats; k++) /* warm up (and fault the pages in) */
        inferd_matmul(c->pool, c->type, c->mats[k], c->rows, c->cols, c->x, n_tok, c->y,
                      n_tok > 1 ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE, c->work);
    long calls = 0;
    double c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < 4; k++) {
            inferd_matmul(c->pool, c->type, c->mats[i], c->rows, c->cols, c->x, n_tok, c->y,
                          n_tok > 1 ? INFERD_ORDER_PREFILL : INFERD_ORDER_DECODE, c->work);
            i = (i + 1) % n_mats;
            calls++;
        }
        t = now_s() - t0;
    } while (t < secs);
    *out_cpu = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0) / (double)calls;
    return t / (double)calls;
}

int main(int argc, char **argv)
{
    int64_t rows = 5632, cols = 2048, many = 128;
    double secs = 1.0;
    int argi = 1;
    for (; argi + 1 < argc && argv[argi][0] == '-'; argi += 2) {
        if (strcmp(argv[argi], "-r") == 0)
            rows = atoll(argv[argi + 1]);
        else if (strcmp(argv[argi], "-c") == 0)
            cols = atoll(argv[argi + 1]);
        else if (strcmp(argv[argi], "-t") == 0)
            many = atoll(argv[argi + 1]);
        else if (strcmp(argv[argi], "-s") == 0)
            secs = atof(argv[argi + 1]);
        else {
            fprintf(stderr, "usage: %s [-r rows] [-c cols] [-t tokens] [-s secs] [type...]\n",
                    argv[0]);
            return 2;
        }
    }
    const char *default_types[] = {"q4_0", "q8_0", "q4_k", "q5_k", "q6_k"};
    const int n_default = (int)(sizeof(default_types) / sizeof(default_types[0]));
    const char **types = argi < argc ? (const char **)argv + argi : default_types;
    const int n_types = argi < argc ? argc - argi : n_default;

    printf("isa=%s shape=%lldx%lld cpus=%d\n", inferd_isa_name(inferd_cpu_isa()), (long long)rows,
           (long long)cols, inferd_cpu_count());
    printf("wall-clock figures; [cpu] = per CPU-second of the process (1 thread only)\n");
    printf("%-5s %3s %13s %13s %11s %11s %16s\n", "type", "thr", "tg_cold GB/s", "tg_hot GB/s",
           "tg_hot us", "pp GFLOP/s", "[cpu] cold/hot/pp");
    for (int ti = 0; ti < n_types; ti++) {
        const int tp = inferd_dtype_parse(types[ti]);
        if (tp < 0 || !inferd_kernels_get((uint32_t)tp) ||
            !inferd_kernels_get((uint32_t)tp)->vec_dot) {
            fprintf(stderr, "unsupported type %s\n", types[ti]);
            return 2;
        }
        bench_ctx c = {.type = (uint32_t)tp, .rows = rows, .cols = cols};
        const size_t mbytes = inferd_quant_row_size(c.type, cols) * (size_t)rows;
        if (mbytes == 0) {
            fprintf(stderr, "%s: %lld columns are not whole blocks of %lld\n", types[ti],
                    (long long)cols, (long long)inferd_dtype_get(c.type)->block_size);
            return 2;
        }
        c.n_mats = (int)(COLD_BYTES / mbytes) + 1;
        c.n_mats = c.n_mats > MAX_MATS ? MAX_MATS : c.n_mats;
        c.mats = inferd_calloc((size_t)c.n_mats, sizeof(void *));
        for (int k = 0; k < c.n_mats; k++) {
            c.mats[k] = inferd_aligned_alloc(64, mbytes);
            make_matrix(c.type, c.mats[k], rows, cols, 1000u + (uint64_t)k);
        }
        c.x = inferd_malloc((size_t)(cols * many) * sizeof(float));
        c.y = inferd_malloc((size_t)(rows * many) * sizeof(float));
        for (int64_t i = 0; i < cols * many; i++)
            c.x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        c.work = inferd_aligned_alloc(INFERD_MATMUL_WORK_ALIGN,
                                      inferd_matmul_work_size(c.type, cols, many) + 64);
        for (int nth = 1; nth <= 2; nth++) {
            if (inferd_pool_create(nth, &c.pool, NULL) != 0)
                return 1;
            double cold_cpu, hot_cpu, pp_cpu;
            const double cold = time_calls(&c, 1, c.n_mats, secs, &cold_cpu);
            const double hot = time_calls(&c, 1, 1, secs, &hot_cpu);
            const double pp = time_calls(&c, many, 1, secs, &pp_cpu);
            const double flop = 2.0 * (double)rows * (double)cols * (double)many;
            printf("%-5s %3d %13.1f %13.1f %11.1f %11.1f", types[ti], nth,
                   (double)mbytes / cold / 1e9, (double)mbytes / hot / 1e9, hot * 1e6,
                   flop / pp / 1e9);
            if (nth == 1)
                printf("   %5.1f/%5.1f/%5.1f", (double)mbytes / cold_cpu / 1e9,
                       (double)mbytes / hot_cpu / 1e9, flop / pp_cpu / 1e9);
            printf("\n");
            fflush(stdout);
            inferd_pool_destroy(c.pool);
        }
        for (int k = 0; k < c.n_mats; k++)
            inferd_free(c.mats[k]);
        inferd_free(c.mats);
        inferd_free(c.x);
        inferd_free(c.y);
        inferd_free(c.work);
    }
    return 0;
}
