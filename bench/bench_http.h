/* Plain HTTP/1.1 over one socket for the benchmark programs (libc only):
 * connect over TCP (loopback, TCP_NODELAY) or a Unix socket, send all,
 * read one Content-Length framed response, POST. Define BENCH_PROG (the
 * program's name, for messages) before including. */
#ifndef INFERD_BENCH_HTTP_H
#define INFERD_BENCH_HTTP_H

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static inline void die(const char *what)
{
    fprintf(stderr, "%s: %s%s%s\n", BENCH_PROG, what, errno ? ": " : "",
            errno ? strerror(errno) : "");
    exit(1);
}

static inline double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static inline int dial(int port, const char *path)
{
    int fd;
    if (path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            die("connect to the Unix socket");
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            die("connect to 127.0.0.1");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

static inline void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("send");
        p += k;
        n -= (size_t)k;
    }
}

/* Read one response (Content-Length framed); returns its status. */
static inline int read_response(int fd, char **buf, size_t *cap)
{
    size_t len = 0, head = 0;
    long long body = -1;
    for (;;) {
        if (len == *cap) {
            *cap = *cap ? *cap * 2 : 1 << 16;
            if (!(*buf = realloc(*buf, *cap)))
                die("memory");
        }
        ssize_t k = recv(fd, *buf + len, *cap - len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("the server closed the connection");
        len += (size_t)k;
        if (!head) {
            char *e = memmem(*buf, len, "\r\n\r\n", 4);
            if (!e)
                continue;
            head = (size_t)(e - *buf) + 4;
            char *cl = memmem(*buf, head, "Content-Length: ", 16);
            if (!cl)
                die("a response without Content-Length");
            body = atoll(cl + 16);
        }
        if (len >= head + (size_t)body)
            break;
    }
    return atoi(*buf + 9);
}

/* POST @p body to @p path on @p fd; the status. */
static inline int post(int fd, const char *path, const char *extra, const char *body, size_t n,
                       char **rb, size_t *rcap)
{
    char h[512];
    int k =
        snprintf(h, sizeof(h), "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Length: %zu\r\n%s\r\n",
                 path, n, extra ? extra : "");
    send_all(fd, h, (size_t)k);
    send_all(fd, body, n);
    return read_response(fd, rb, rcap);
}

#endif
