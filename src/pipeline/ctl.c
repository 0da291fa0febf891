/* Control packets: JSON text in one SOCK_SEQPACKET packet. */
#include "ctl.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inferd/alloc.h"

int inferd__ctl_send(int sock, json_t *msg, const int *fds, size_t n_fds, inferd_error *err)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    if (!text)
        return inferd_fail(err, INFERD_E_NOMEM, "control: no memory");
    const size_t len = strlen(text);
    if (len > CTL_PACKET_MAX || n_fds > CTL_FDS_MAX) {
        free(text);
        return inferd_fail(err, INFERD_E_TOO_LARGE, "control: a packet of %zu bytes, %zu fds", len,
                           n_fds);
    }
    struct iovec iov = {.iov_base = text, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * CTL_FDS_MAX)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (n_fds) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
    }
    ssize_t w;
    do
        w = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    const int e = errno;
    free(text);
    if (w < 0)
        return inferd_fail_errno(err, INFERD_E_IO, e, "control: send");
    return 0;
}

int inferd__ctl_send_type(int sock, const char *type, inferd_error *err)
{
    json_t *m = json_pack("{ss}", "type", type);
    if (!m)
        return inferd_fail(err, INFERD_E_NOMEM, "control: no memory");
    int rc = inferd__ctl_send(sock, m, NULL, 0, err);
    json_decref(m);
    return rc;
}

int inferd__ctl_recv(int sock, json_t **out, int *fds, size_t *n_fds, inferd_error *err)
{
    *out = NULL;
    if (n_fds)
        *n_fds = 0;
    char *buf = inferd_malloc(CTL_PACKET_MAX + 1);
    if (!buf)
        return inferd_fail(err, INFERD_E_NOMEM, "control: no memory");
    struct iovec iov = {.iov_base = buf, .iov_len = CTL_PACKET_MAX};
    union {
        char buf[CMSG_SPACE(sizeof(int) * CTL_FDS_MAX)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        const int e = errno;
        inferd_free(buf);
        return inferd_fail_errno(err, INFERD_E_IO, e, "control: receive");
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        const size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fds && n_fds && *n_fds < CTL_FDS_MAX)
                fds[(*n_fds)++] = fd;
            else
                close(fd);
        }
    }
    if (r == 0) {
        inferd_free(buf);
        return inferd_fail(err, INFERD_E_UNAVAILABLE, "control: the peer closed");
    }
    buf[r] = 0;
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    inferd_free(buf);
    if (!json_is_object(j) || !json_is_string(json_object_get(j, "type"))) {
        json_decref(j);
        return inferd_fail(err, INFERD_E_FORMAT,
                           "control: a packet that is not a JSON object with a type");
    }
    *out = j;
    return 0;
}
