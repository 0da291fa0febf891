/* Channel latency (bench/channel.sh): a publisher process and a subscriber
 * process (fork), the subscriber waiting. For each size, ITERATIONS times:
 * the publisher loans the slot, writes the sample (its first 8 bytes the
 * clock), publishes; the subscriber's receive returns and it takes the
 * clock. Beside it, the same bytes through a Unix socket pair: the sender
 * writes the clock and the bytes, the receiver reads every byte, then takes
 * the clock. The publisher waits 200 us between samples so that the
 * subscriber is asleep in its wait each time.
 * Prints {"size","path":"channel"|"socket","n","p50_us","p99_us"} lines.
 *
 * With --inferd BIN, then: a failure's detection, ITERATIONS/100 times
 * (at least 5): a pipeline of one identity node (BIN pipeline-node), the
 * caller waiting in inferd_pipeline_receive; kill -9 of the node; the time
 * until the receive returns the pipeline's failure. Prints
 * {"path":"failure","n","p50_ms","p99_ms"}.
 *
 *   inferd-channel-rt [--iterations N] [--sizes 1024,65536,...] [--inferd BIN] */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "inferd/channel.h"
#include "inferd/pipeline.h"

static void die(const char *what)
{
    fprintf(stderr, "inferd-channel-rt: %s\n", what);
    exit(1);
}

static void report(const char *path, uint64_t size, int64_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), bench_cmp_i64);
    printf("{\"size\":%llu,\"path\":\"%s\",\"n\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           (unsigned long long)size, path, n, (double)bench_pct(v, n, 50) / 1e3,
           (double)bench_pct(v, n, 99) / 1e3);
    fflush(stdout);
}

static void pause_us(int64_t us)
{
    const int64_t until = bench_now_ns() + us * 1000;
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
    while (bench_now_ns() < until) {
    }
}

static void channel_run(uint64_t size, size_t n)
{
    inferd_channel_spec sp = {
        .slot_bytes = size, .n_slots = 1, .max_subscribers = 1, .policy = INFERD_CHANNEL_BLOCK};
    inferd_error e = {0};
    int fd;
    if (inferd_channel_create(&sp, "bench", &fd, &e) != 0)
        die(e.msg);
    int ready[2];
    if (pipe(ready) != 0)
        die("pipe");
    pid_t c = fork();
    if (c == 0) {
        inferd_channel *sub;
        if (inferd_channel_open(fd, INFERD_CHANNEL_SUBSCRIBER, &sub, &e) != 0)
            die(e.msg);
        char one = 1;
        if (write(ready[1], &one, 1) != 1)
            die("write");
        int64_t *v = malloc(n * sizeof(*v));
        for (size_t i = 0; i < n; i++) {
            inferd_sample x;
            if (inferd_channel_receive(sub, 10000, &x, &e) != 0)
                die(e.msg);
            const int64_t now = bench_now_ns();
            int64_t t;
            memcpy(&t, x.data, 8);
            v[i] = now - t;
            inferd_channel_release(sub, &x);
        }
        report("channel", size, v, n);
        inferd_channel_close(sub);
        _exit(0);
    }
    char one;
    if (read(ready[0], &one, 1) != 1)
        die("read");
    inferd_channel *pub;
    if (inferd_channel_open(fd, INFERD_CHANNEL_PUBLISHER, &pub, &e) != 0)
        die(e.msg);
    for (size_t i = 0; i < n; i++) {
        inferd_sample s;
        if (inferd_channel_loan(pub, 10000, &s, &e) != 0)
            die(e.msg);
        memset((char *)s.data + 8, (int)i, size - 8); /* the sample, written in place */
        pause_us(200);
        const int64_t t = bench_now_ns();
        memcpy(s.data, &t, 8);
        if (inferd_channel_publish(pub, &s, size, &e) != 0)
            die(e.msg);
    }
    int st;
    waitpid(c, &st, 0);
    inferd_channel_close(pub);
    close(fd);
    close(ready[0]);
    close(ready[1]);
}

static void socket_run(uint64_t size, size_t n)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair");
    pid_t c = fork();
    if (c == 0) {
        close(sv[0]);
        char *buf = malloc(size);
        int64_t *v = malloc(n * sizeof(*v));
        for (size_t i = 0; i < n; i++) {
            size_t got = 0;
            while (got < size) {
                ssize_t r = read(sv[1], buf + got, size - got);
                if (r <= 0)
                    die("socket read");
                got += (size_t)r;
            }
            const int64_t now = bench_now_ns();
            int64_t t;
            memcpy(&t, buf, 8);
            v[i] = now - t;
            char ack = 1; /* the sender goes on once this is read */
            if (write(sv[1], &ack, 1) != 1)
                die("ack");
        }
        report("socket", size, v, n);
        _exit(0);
    }
    close(sv[1]);
    char *buf = malloc(size);
    for (size_t i = 0; i < n; i++) {
        memset(buf + 8, (int)i, size - 8);
        pause_us(200);
        const int64_t t = bench_now_ns();
        memcpy(buf, &t, 8);
        size_t put = 0;
        while (put < size) {
            ssize_t w = write(sv[0], buf + put, size - put);
            if (w <= 0)
                die("socket write");
            put += (size_t)w;
        }
        char ack;
        if (read(sv[0], &ack, 1) != 1)
            die("ack read");
    }
    int st;
    waitpid(c, &st, 0);
    close(sv[0]);
    free(buf);
}

typedef struct killer {
    pid_t pid;
    int64_t at_ns;
} killer;

static void *kill_later(void *arg)
{
    killer *k = arg;
    pause_us(20000); /* the caller is asleep in its receive by then */
    k->at_ns = bench_now_ns();
    kill(k->pid, SIGKILL);
    return NULL;
}

static void failure_run(const char *exe, size_t n)
{
    static const char json[] =
        "{\"channels\": {\"in\": {}, \"out\": {}}, \"inputs\": [\"in\"], \"outputs\": "
        "[\"out\"], \"nodes\": [{\"name\": \"a\", \"kind\": \"identity\", \"inputs\": "
        "[\"in\"], \"outputs\": [\"out\"]}]}";
    int64_t *v = malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        inferd_pipeline_opts o = {.inferd_exe = exe};
        inferd_pipeline *p;
        inferd_error e = {0};
        if (inferd_pipeline_start(json, NULL, &o, &p, &e) != 0 ||
            inferd_pipeline_wait_ready(p, 10000, &e) != 0)
            die(e.msg);
        inferd_node_info info;
        inferd_pipeline_nodes(p, &info, 1);
        killer k = {.pid = info.pid};
        pthread_t t;
        pthread_create(&t, NULL, kill_later, &k);
        inferd_pipeline_sample s;
        if (inferd_pipeline_receive(p, "out", 10000, &s, &e) != INFERD_E_UNAVAILABLE)
            die("the receive did not fail");
        v[i] = bench_now_ns() - k.at_ns;
        pthread_join(t, NULL);
        inferd_pipeline_destroy(p);
    }
    qsort(v, n, sizeof(*v), bench_cmp_i64);
    printf("{\"path\":\"failure\",\"n\":%zu,\"p50_ms\":%.2f,\"p99_ms\":%.2f}\n", n,
           (double)bench_pct(v, n, 50) / 1e6, (double)bench_pct(v, n, 99) / 1e6);
    free(v);
}

int main(int argc, char **argv)
{
    const char *exe = NULL;
    uint64_t iters = 2000;
    const char *sizes = "1024,65536,1048576,10485760";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--iterations") == 0) {
            if (!bench_parse_u64(argv[i + 1], 1, 10000000, &iters))
                die("--iterations: expected a count");
        } else if (strcmp(argv[i], "--sizes") == 0) {
            sizes = argv[i + 1];
        } else if (strcmp(argv[i], "--inferd") == 0) {
            exe = argv[i + 1];
        } else {
            die("usage: inferd-channel-rt [--iterations N] [--sizes A,B,...] [--inferd BIN]");
        }
    }
    char *list = strdup(sizes);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        uint64_t size;
        if (!bench_parse_u64(tok, 16, (uint64_t)1 << 32, &size))
            die("--sizes: expected byte counts of 16 and more");
        channel_run(size, (size_t)iters);
        socket_run(size, (size_t)iters);
    }
    free(list);
    if (exe)
        failure_run(exe, iters / 100 < 5 ? 5 : (size_t)iters / 100);
    return 0;
}
