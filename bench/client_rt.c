/* The client library's costs (bench/client.sh):
 *
 * --mode overhead: a 1-token completion (greedy) REQUESTS times through a
 *   raw keep-alive socket and through inferd_client_complete (one client,
 *   its pooled connection), alternating, each timed from the call to the
 *   whole answer. Prints {"path":"raw"|"client","n","p50_us","p99_us"}.
 *
 * --mode failover: worker B runs throughout; each iteration starts worker
 *   A, streams 200 tokens through a fresh resilient client over [A, B]
 *   (so A serves), kills A (-9) when piece 100 arrives, and times the
 *   kill to the next piece delivered (B's, after it replayed 100).
 *   Prints {"n","p50_ms","p99_ms","max_ms"}.
 *
 *   inferd-client-rt --mode overhead --port N [--unix PATH] [--requests M]
 *   inferd-client-rt --mode failover --inferd BIN --model FILE --port-a N
 *       --port-b N [--iterations K] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BENCH_PROG "inferd-client-rt"
#include "bench_http.h"
#include "inferd/client.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof(double), cmp);
    size_t i = (size_t)(p * (double)n + 0.999999);
    return v[i ? i - 1 : 0];
}

static const char *arg(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return dflt;
}

static void overhead(int port, const char *unix_path, int n)
{
    static const char body[] =
        "{\"prompt\":\"Once upon a time\",\"max_tokens\":1,\"temperature\":0}";
    int fd = dial(port, unix_path);
    char url[512], *rb = NULL;
    size_t rcap = 0;
    if (unix_path)
        snprintf(url, sizeof(url), "unix://%s", unix_path);
    else
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    inferd_client *c = NULL;
    inferd_error e = {0};
    if (inferd_client_open(url, NULL, &c, &e) != 0)
        die(e.msg);
    inferd_client_gen g = inferd_client_gen_default();
    g.prompt = "Once upon a time";
    g.max_tokens = 1;
    g.temperature = 0;
    double *raw = calloc((size_t)n, sizeof(double)), *lib = calloc((size_t)n, sizeof(double));
    if (!raw || !lib)
        die("memory");
    for (int i = -20; i < n; i++) { /* 20 warm-up rounds */
        double t0 = now_us();
        if (post(fd, "/v1/completions", "Content-Type: application/json\r\n", body,
                 sizeof(body) - 1, &rb, &rcap) != 200)
            die("raw: not 200");
        double t1 = now_us();
        inferd_client_result r;
        if (inferd_client_complete(c, &g, NULL, NULL, &r, &e) != 0)
            die(e.msg);
        double t2 = now_us();
        inferd_client_result_free(&r);
        if (i >= 0) {
            raw[i] = t1 - t0;
            lib[i] = t2 - t1;
        }
    }
    printf("{\"path\":\"raw\",\"n\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", n, pct(raw, n, 0.5),
           pct(raw, n, 0.99));
    printf("{\"path\":\"client\",\"n\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", n, pct(lib, n, 0.5),
           pct(lib, n, 0.99));
    inferd_client_close(c);
    close(fd);
    free(raw);
    free(lib);
    free(rb);
}

static pid_t spawn(const char *bin, const char *model, int port)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl(bin, bin, "serve", "-m", model, "--port", p, "-t", "1", "-np", "2", (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        die("fork");
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    inferd_client *c = NULL;
    inferd_error e = {0};
    if (inferd_client_open(url, NULL, &c, &e) != 0)
        die(e.msg);
    for (int i = 0; inferd_client_health(c, true, &e) != 0; i++) {
        if (i > 600)
            die("a worker did not become ready");
        usleep(100000);
    }
    inferd_client_close(c);
    return pid;
}

typedef struct kill_at {
    pid_t pid;
    uint32_t n;
    double t_kill, t_next;
} kill_at;

static int on_piece(void *ctx, uint32_t index, const char *t, size_t len)
{
    kill_at *k = ctx;
    (void)t;
    (void)len;
    k->n = index + 1;
    if (k->n == 100) {
        k->t_kill = now_us();
        kill(k->pid, SIGKILL);
    } else if (k->n == 101) {
        k->t_next = now_us();
    }
    return 0;
}

static void failover(const char *bin, const char *model, int pa, int pb, int iters)
{
    pid_t b = spawn(bin, model, pb);
    double *ms = calloc((size_t)iters, sizeof(double));
    char ua[64], ub[64];
    snprintf(ua, sizeof(ua), "http://127.0.0.1:%d", pa);
    snprintf(ub, sizeof(ub), "http://127.0.0.1:%d", pb);
    const char *urls[2] = {ua, ub};
    int n = 0;
    for (int i = 0; i < iters; i++) {
        pid_t a = spawn(bin, model, pa);
        inferd_resilient *r = NULL;
        inferd_error e = {0};
        inferd_resilient_opts o = inferd_resilient_opts_default();
        if (inferd_resilient_open(urls, 2, &o, &r, &e) != 0)
            die(e.msg);
        inferd_client_gen g = inferd_client_gen_default();
        g.prompt = "Once upon a time";
        g.max_tokens = 200;
        g.temperature = 0.8; /* as inferd generate */
        g.top_k = 40;
        g.top_p = 0.95;
        g.min_p = 0.05;
        g.ignore_eos = true;
        g.has_seed = true;
        g.seed = (uint64_t)i + 1;
        kill_at k = {.pid = a};
        inferd_client_result res;
        int rc = inferd_resilient_complete(r, &g, on_piece, &k, &res, &e);
        inferd_client_result_free(&res);
        inferd_resilient_stats st;
        inferd_resilient_stats_get(r, &st);
        inferd_resilient_close(r);
        if (k.t_kill == 0) /* fewer than 100 pieces: A was never killed */
            kill(a, SIGKILL);
        waitpid(a, NULL, 0);
        if (rc != 0)
            die(e.msg);
        if (st.failovers == 1 && k.t_next > 0) /* A was still generating when killed */
            ms[n++] = (k.t_next - k.t_kill) / 1e3;
    }
    kill(b, SIGTERM);
    waitpid(b, NULL, 0);
    if (n == 0)
        die("no iteration failed over");
    double max = 0;
    for (int i = 0; i < n; i++)
        max = ms[i] > max ? ms[i] : max;
    printf("{\"n\":%d,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n", n, pct(ms, n, 0.5),
           pct(ms, n, 0.99), max);
    free(ms);
}

int main(int argc, char **argv)
{
    const char *mode = arg(argc, argv, "--mode", "");
    if (strcmp(mode, "overhead") == 0) {
        overhead(atoi(arg(argc, argv, "--port", "0")), arg(argc, argv, "--unix", NULL),
                 atoi(arg(argc, argv, "--requests", "1000")));
    } else if (strcmp(mode, "failover") == 0) {
        failover(arg(argc, argv, "--inferd", "inferd"), arg(argc, argv, "--model", ""),
                 atoi(arg(argc, argv, "--port-a", "0")), atoi(arg(argc, argv, "--port-b", "0")),
                 atoi(arg(argc, argv, "--iterations", "10")));
    } else {
        fprintf(stderr, "usage: see the top of bench/client_rt.c\n");
        return 2;
    }
    return 0;
}
