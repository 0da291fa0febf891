/* Round trip of one KServe infer of the identity model, one request at a
 * time on one keep-alive connection (TCP or a Unix socket), with the
 * tensor sent as JSON data, as Triton binary data, or in system shared
 * memory (the output into a second window of the region, or in place on
 * the input's bytes). The request is built once; each round trip is timed
 * from the first byte written to the last byte of the answer read.
 * libc only. Prints one JSON line: {"transport","mode","bytes","n",
 * "p50_us","p99_us","mean_us"}.
 *
 *   inferd-tensor-rt (--port N | --unix PATH) --model NAME
 *       --mode json|binary|shm|shm-inplace --bytes N [--requests M] */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "inferd-tensor-rt"
#include "bench_http.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int port = 0, requests = 200;
    const char *unix_path = NULL, *model = "ident", *mode = "binary";
    size_t bytes = 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--unix"))
            unix_path = argv[i + 1];
        else if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
        else if (!strcmp(argv[i], "--mode"))
            mode = argv[i + 1];
        else if (!strcmp(argv[i], "--bytes"))
            bytes = (size_t)atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--requests"))
            requests = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "inferd-tensor-rt: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if ((!port && !unix_path) || bytes == 0 || requests < 1)
        return fprintf(stderr, "usage: see the comment at the top of bench/tensor_rt.c\n"), 2;
    int fd = dial(port, unix_path);
    char path[256], *rb = NULL;
    size_t rcap = 0;
    snprintf(path, sizeof(path), "/v2/models/%s/infer", model);

    /* The request, built once. */
    size_t cap = bytes * 4 + 4096, n = 0;
    char *req = malloc(cap), extra[128] = "";
    if (!req)
        die("memory");
    char key[64], region[64];
    snprintf(key, sizeof(key), "/tensor-rt-%ld", (long)getpid());
    snprintf(region, sizeof(region), "bench-%ld", (long)getpid());
    uint8_t *shm = NULL;
    if (!strcmp(mode, "json")) {
        n = (size_t)snprintf(req, cap,
                             "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"UINT8\",\"shape\":"
                             "[%zu],\"data\":[",
                             bytes);
        for (size_t i = 0; i < bytes; i++)
            n += (size_t)snprintf(req + n, cap - n, i ? ",%u" : "%u", (unsigned)(i * 7 % 251));
        n += (size_t)snprintf(req + n, cap - n, "]}]}");
    } else if (!strcmp(mode, "binary")) {
        n = (size_t)snprintf(req, cap,
                             "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"UINT8\",\"shape\":"
                             "[%zu],\"parameters\":{\"binary_data_size\":%zu}}],\"parameters\":{"
                             "\"binary_data_output\":true}}",
                             bytes, bytes);
        snprintf(extra, sizeof(extra), "Inference-Header-Content-Length: %zu\r\n", n);
        for (size_t i = 0; i < bytes; i++)
            req[n + i] = (char)(i * 7 % 251);
        n += bytes;
    } else if (!strcmp(mode, "shm") || !strcmp(mode, "shm-inplace")) {
        int sfd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (sfd < 0 || ftruncate(sfd, (off_t)(2 * bytes)) != 0)
            die("shm_open");
        shm = mmap(NULL, 2 * bytes, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
        close(sfd);
        if (shm == MAP_FAILED)
            die("mmap");
        for (size_t i = 0; i < bytes; i++)
            shm[i] = (uint8_t)(i * 7 % 251);
        char reg[256];
        int k = snprintf(reg, sizeof(reg), "{\"key\":\"%s\",\"byte_size\":%zu}", key, 2 * bytes);
        char rpath[128];
        snprintf(rpath, sizeof(rpath), "/v2/systemsharedmemory/region/%s/register", region);
        if (post(fd, rpath, NULL, reg, (size_t)k, &rb, &rcap) != 200)
            die("register the region");
        const size_t out_off = strcmp(mode, "shm") ? 0 : bytes;
        n = (size_t)snprintf(
            req, cap,
            "{\"inputs\":[{\"name\":\"INPUT0\",\"datatype\":\"UINT8\",\"shape\":[%zu],"
            "\"parameters\":{\"shared_memory_region\":\"%s\",\"shared_memory_byte_size\":%zu}}],"
            "\"outputs\":[{\"name\":\"OUTPUT0\",\"parameters\":{\"shared_memory_region\":\"%s\","
            "\"shared_memory_byte_size\":%zu,\"shared_memory_offset\":%zu}}]}",
            bytes, region, bytes, region, bytes, out_off);
    } else {
        fprintf(stderr, "inferd-tensor-rt: --mode json|binary|shm|shm-inplace\n");
        return 2;
    }

    const int warm = requests / 10 + 3;
    double *t = malloc(sizeof(double) * (size_t)requests);
    if (!t)
        die("memory");
    for (int i = -warm; i < requests; i++) {
        double t0 = now_us();
        int st = post(fd, path, extra, req, n, &rb, &rcap);
        double dt = now_us() - t0;
        if (st != 200) {
            fprintf(stderr, "inferd-tensor-rt: status %d: %.300s\n", st, rb);
            return 1;
        }
        if (i >= 0)
            t[i] = dt;
    }
    if (shm && !strcmp(mode, "shm") && memcmp(shm, shm + bytes, bytes) != 0)
        die("the output region differs from the input");
    double sum = 0;
    for (int i = 0; i < requests; i++)
        sum += t[i];
    qsort(t, (size_t)requests, sizeof(double), cmp);
    printf("{\"transport\":\"%s\",\"mode\":\"%s\",\"bytes\":%zu,\"n\":%d,\"p50_us\":%.1f,"
           "\"p99_us\":%.1f,\"mean_us\":%.1f}\n",
           unix_path ? "unix" : "tcp", mode, bytes, requests, t[requests / 2],
           t[(size_t)((double)requests * 0.99)], sum / requests);
    if (shm) {
        char rpath[128];
        snprintf(rpath, sizeof(rpath), "/v2/systemsharedmemory/region/%s/unregister", region);
        post(fd, rpath, NULL, "{}", 2, &rb, &rcap);
        munmap(shm, 2 * bytes);
        shm_unlink(key);
    }
    close(fd);
    free(t);
    free(req);
    free(rb);
    return 0;
}
