/* The pipeline manager: channels made, nodes forked and exec'd with their
 * control sockets, and one monitor thread that waits (epoll) on every
 * node's pidfd, control socket and stderr pipe, plus an eventfd to stop
 * it. The monitor owns the node states and the failure; callers read them
 * under mu and wait on cv. On a failure the monitor shuts every channel
 * down (so no node or caller stays blocked), asks the other nodes to stop
 * and kills those still alive 100 ms later. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl.h"
#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"
#include "inferd/pipeline.h"
#include "inferd/tensor.h"
#include "manifest.h"
#include "sample.h"

#define TAIL_BYTES 4096
#define KILL_GRACE_MS 100
#define PROGRESS_EVERY_MS 2000
#define COMP "pipeline"

typedef struct node_rt {
    pid_t pid;
    int pidfd, ctl, err_fd; /* -1 once closed */
    inferd_node_info info;
    char tail[TAIL_BYTES]; /* the last bytes of its stderr */
    size_t tail_len;
    char line[512]; /* the stderr line being read, for the log */
    size_t line_len;
    bool exited;
    int status; /* waitid's si_code/si_status, once exited */
} node_rt;

struct inferd_pipeline {
    pl_manifest *m;
    node_rt *n;
    int *ch_fd;               /* per channel */
    inferd_channel **ch_obs;  /* per channel, no seat: shutdown */
    inferd_channel **ch_seat; /* per channel: the pipeline's publisher or subscriber seat */
    inferd_pipeline_opts o;
    int epfd, wake;
    int ended; /* eventfd: readable once failed or done */
    pthread_t monitor;
    bool monitor_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool all_ready, stopping, done; /* done: every node exited */
    bool quit;                      /* the monitor ends (destroy) */
    int failure;                    /* 0 or its code */
    inferd_error failure_err;
    uint64_t kill_at_ns; /* nodes still alive then are killed; 0: none planned */
    uint64_t next_progress_ns;
};

const char *inferd_node_state_name(inferd_node_state s)
{
    static const char *const names[] = {"starting", "initializing", "ready", "running",
                                        "stopping", "stopped",      "failed"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

int inferd_pipeline_check(const char *json, const char *base_dir, inferd_error *err)
{
    pl_manifest *m = NULL;
    int rc = inferd__manifest_parse(json, base_dir, &m, err);
    inferd__manifest_free(m);
    return rc;
}

/* ---- the monitor (its thread; mu held where said) ---- */

static void report_progress_locked(inferd_pipeline *p)
{
    if (!p->o.on_progress)
        return;
    inferd_node_info *v = inferd_calloc(p->m->n_nodes, sizeof(*v));
    if (!v)
        return;
    for (size_t i = 0; i < p->m->n_nodes; i++)
        v[i] = p->n[i].info;
    p->o.on_progress(p->o.ctx, v, p->m->n_nodes);
    inferd_free(v);
    p->next_progress_ns = inferd_now_ns() + (uint64_t)PROGRESS_EVERY_MS * 1000000u;
}

static void shutdown_channels(inferd_pipeline *p)
{
    for (size_t i = 0; i < p->m->n_ch; i++)
        if (p->ch_obs[i])
            inferd_channel_shutdown(p->ch_obs[i]);
}

/* The last @p max_lines lines of node @p i's stderr, into @p out. */
static void tail_lines(const node_rt *n, char *out, size_t cap, int max_lines)
{
    size_t end = n->tail_len;
    while (end > 0 && (n->tail[end - 1] == '\n' || n->tail[end - 1] == '\r'))
        end--;
    size_t start = end;
    int lines = 0;
    while (start > 0) {
        if (n->tail[start - 1] == '\n' && ++lines == max_lines)
            break;
        start--;
    }
    snprintf(out, cap, "%.*s", (int)(end - start), n->tail + start);
    for (char *c = out; *c; c++)
        if (*c == '\n')
            *c = '|';
}

/* Ask every live node to stop and shut the channels down (so that none
 * stays blocked). */
static void stop_nodes_locked(inferd_pipeline *p)
{
    shutdown_channels(p);
    for (size_t i = 0; i < p->m->n_nodes; i++) {
        node_rt *n = &p->n[i];
        if (n->exited)
            continue;
        if (n->ctl >= 0)
            inferd__ctl_send_type(n->ctl, "stop", NULL);
        if (n->info.state != INFERD_NODE_FAILED)
            n->info.state = INFERD_NODE_STOPPING;
    }
}

static void signal_ended(inferd_pipeline *p)
{
    uint64_t one = 1;
    if (write(p->ended, &one, sizeof(one)) < 0) { /* already readable */
    }
}

/* Record the pipeline's failure (the first wins), then stop the rest. */
static void fail_locked(inferd_pipeline *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_locked(inferd_pipeline *p, int code, const char *fmt, ...)
{
    if (!p->failure && !p->stopping) {
        char msg[sizeof(p->failure_err.msg)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        p->failure = code;
        inferd_fail(&p->failure_err, code, "%s", msg);
        inferd_log_warn(COMP, "pipeline '%s' failed: %s", p->m->name, msg);
    }
    if (p->kill_at_ns)
        return;
    stop_nodes_locked(p);
    p->kill_at_ns = inferd_now_ns() + (uint64_t)KILL_GRACE_MS * 1000000u;
    signal_ended(p);
    pthread_cond_broadcast(&p->cv);
}

static void drain_stderr(inferd_pipeline *p, node_rt *n)
{
    char buf[4096];
    for (;;) {
        ssize_t r = read(n->err_fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                epoll_ctl(p->epfd, EPOLL_CTL_DEL, n->err_fd, NULL);
                close(n->err_fd);
                n->err_fd = -1;
            }
            return;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (n->tail_len == TAIL_BYTES) {
                memmove(n->tail, n->tail + TAIL_BYTES / 2, TAIL_BYTES / 2);
                n->tail_len = TAIL_BYTES / 2;
            }
            n->tail[n->tail_len++] = buf[i];
            if (buf[i] == '\n' || n->line_len == sizeof(n->line) - 1) {
                n->line[n->line_len] = 0;
                inferd_log_info(COMP, "[%s] %s", n->info.name, n->line);
                n->line_len = 0;
            } else {
                n->line[n->line_len++] = buf[i];
            }
        }
    }
}

static void on_exit_locked(inferd_pipeline *p, size_t i)
{
    node_rt *n = &p->n[i];
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PIDFD, (id_t)n->pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
        return;
    n->exited = true;
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, n->pidfd, NULL);
    if (n->err_fd >= 0)
        drain_stderr(p, n);
    char how[96];
    if (si.si_code == CLD_EXITED)
        snprintf(how, sizeof(how), "exited with status %d", si.si_status);
    else
        snprintf(how, sizeof(how), "was killed by signal %d (%s)", si.si_status,
                 sigabbrev_np(si.si_status) ? sigabbrev_np(si.si_status) : "?");
    const bool asked = n->info.state == INFERD_NODE_STOPPING || p->stopping;
    if (asked && n->info.state != INFERD_NODE_FAILED) {
        n->info.state = INFERD_NODE_STOPPED;
    } else {
        const bool reported = n->info.state == INFERD_NODE_FAILED;
        n->info.state = INFERD_NODE_FAILED;
        char tail[1024];
        tail_lines(n, tail, sizeof(tail), 3);
        if (reported)
            fail_locked(p, INFERD_E_UNAVAILABLE, "node '%s' (%s) failed: %s; it %s", n->info.name,
                        n->info.kind, n->info.message, how);
        else
            fail_locked(p, INFERD_E_UNAVAILABLE, "node '%s' (%s) %s%s%s", n->info.name,
                        n->info.kind, how, tail[0] ? "; its stderr ends: " : "", tail);
    }
    bool all = true;
    for (size_t k = 0; k < p->m->n_nodes; k++)
        all = all && p->n[k].exited;
    p->done = all;
    if (all)
        signal_ended(p);
    pthread_cond_broadcast(&p->cv);
}

static void on_ctl_locked(inferd_pipeline *p, size_t i)
{
    node_rt *n = &p->n[i];
    json_t *msg = NULL;
    inferd_error e = {0};
    const int rc = inferd__ctl_recv(n->ctl, &msg, NULL, NULL, &e);
    if (rc == INFERD_E_UNAVAILABLE || rc == INFERD_E_IO) { /* its exit comes through the pidfd */
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, n->ctl, NULL);
        return;
    }
    if (rc < 0) {
        snprintf(n->info.message, sizeof(n->info.message), "%.120s", e.msg);
        n->info.state = INFERD_NODE_FAILED;
        fail_locked(p, INFERD_E_UNAVAILABLE, "node '%s' (%s) broke the control protocol: %s",
                    n->info.name, n->info.kind, e.msg);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (strcmp(type, "progress") == 0) {
        json_t *f = json_object_get(msg, "fraction");
        const char *text = json_string_value(json_object_get(msg, "message"));
        if (json_is_number(f)) {
            double v = json_number_value(f);
            n->info.progress = v < 0 ? 0 : v > 1 ? 1 : v;
        }
        if (text)
            snprintf(n->info.message, sizeof(n->info.message), "%s", text);
        report_progress_locked(p);
    } else if (strcmp(type, "ready") == 0 && n->info.state == INFERD_NODE_INITIALIZING) {
        n->info.state = INFERD_NODE_READY;
        n->info.progress = 1;
        bool all = true;
        for (size_t k = 0; k < p->m->n_nodes; k++)
            all = all && p->n[k].info.state == INFERD_NODE_READY;
        if (all && !p->failure && !p->stopping) {
            for (size_t k = 0; k < p->m->n_nodes; k++) {
                inferd__ctl_send_type(p->n[k].ctl, "run", NULL);
                p->n[k].info.state = INFERD_NODE_RUNNING;
            }
            p->all_ready = true;
            inferd_log_info(COMP, "pipeline '%s': every node is ready, running", p->m->name);
        }
        report_progress_locked(p);
        pthread_cond_broadcast(&p->cv);
    } else if (strcmp(type, "error") == 0) {
        const char *text = json_string_value(json_object_get(msg, "message"));
        snprintf(n->info.message, sizeof(n->info.message), "%s", text ? text : "an error");
        n->info.state = INFERD_NODE_FAILED;
        fail_locked(p, INFERD_E_UNAVAILABLE, "node '%s' (%s) failed: %s", n->info.name,
                    n->info.kind, n->info.message);
    }
    json_decref(msg);
}

/* epoll data: node index * 4 + what (1 pidfd, 2 ctl, 3 stderr); 0 the wake fd. */
static void *monitor_main(void *arg)
{
    inferd_pipeline *p = arg;
    struct epoll_event ev[16];
    for (;;) {
        pthread_mutex_lock(&p->mu);
        const uint64_t now = inferd_now_ns();
        if (p->kill_at_ns && now >= p->kill_at_ns) {
            for (size_t i = 0; i < p->m->n_nodes; i++)
                if (!p->n[i].exited)
                    pidfd_send_signal(p->n[i].pidfd, SIGKILL, NULL, 0);
            p->kill_at_ns = UINT64_MAX; /* once */
        }
        if (!p->all_ready && !p->failure && now >= p->next_progress_ns)
            report_progress_locked(p);
        uint64_t until = p->all_ready || p->failure ? UINT64_MAX : p->next_progress_ns;
        if (p->kill_at_ns && p->kill_at_ns != UINT64_MAX && p->kill_at_ns < until)
            until = p->kill_at_ns;
        const bool done = p->done;
        pthread_mutex_unlock(&p->mu);
        if (done)
            break;
        int timeout = -1;
        if (until != UINT64_MAX)
            timeout = until > now ? (int)((until - now) / 1000000u) + 1 : 0;
        int k = epoll_wait(p->epfd, ev, 16, timeout);
        if (k < 0 && errno != EINTR)
            break;
        bool quit = false;
        pthread_mutex_lock(&p->mu);
        for (int j = 0; j < k; j++) {
            const uint64_t d = ev[j].data.u64;
            if (d == 0) { /* a nudge: re-read the state; quit if destroying */
                uint64_t v;
                if (read(p->wake, &v, sizeof(v)) < 0) {
                }
                quit = p->quit;
                continue;
            }
            const size_t i = (size_t)(d / 4 - 1);
            if (d % 4 == 3 && p->n[i].err_fd >= 0)
                drain_stderr(p, &p->n[i]);
            else if (d % 4 == 2 && p->n[i].ctl >= 0)
                on_ctl_locked(p, i);
        }
        for (int j = 0; j < k; j++) /* exits last: their stderr and messages are in */
            if (ev[j].data.u64 % 4 == 1)
                on_exit_locked(p, (size_t)(ev[j].data.u64 / 4 - 1));
        pthread_mutex_unlock(&p->mu);
        if (quit)
            break;
    }
    return NULL;
}

/* ---- start ---- */

static char *self_exe(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    return inferd_strdup(buf);
}

/* argv and envp of node @p i, made before fork. */
typedef struct exec_plan {
    char *argv[6];
    char **envp;
    size_t n_env;
} exec_plan;

extern char **environ;

static int plan_exec(inferd_pipeline *p, size_t i, exec_plan *x, inferd_error *err)
{
    memset(x, 0, sizeof(*x));
    const pl_node *nd = &p->m->nodes[i];
    size_t n = 0;
    while (environ[n])
        n++;
    x->envp = inferd_calloc(n + 4, sizeof(char *));
    if (!x->envp)
        return inferd_fail(err, INFERD_E_NOMEM, "pipeline: no memory");
    const char *pp = getenv("PYTHONPATH");
    for (size_t k = 0; k < n; k++) {
        if (strncmp(environ[k], "INFERD_NODE_FD=", 15) == 0 ||
            (nd->kind == PL_PYTHON && strncmp(environ[k], "PYTHONPATH=", 11) == 0))
            continue;
        x->envp[x->n_env++] = inferd_strdup(environ[k]);
    }
    x->envp[x->n_env++] = inferd_strdup("INFERD_NODE_FD=3");
    if (nd->kind == PL_PYTHON) {
        size_t len = strlen(p->m->python_path) + (pp ? strlen(pp) : 0) + 16;
        char *v = inferd_malloc(len);
        if (v)
            snprintf(v, len, "PYTHONPATH=%s%s%s", p->m->python_path, pp && pp[0] ? ":" : "",
                     pp ? pp : "");
        x->envp[x->n_env++] = v;
        const char *py = p->o.python ? p->o.python : getenv("INFERD_PYTHON");
        x->argv[0] = inferd_strdup(py && py[0] ? py : "/usr/bin/python3");
        x->argv[1] = inferd_strdup("-m");
        x->argv[2] = inferd_strdup("inferd.runner");
    } else {
        const char *exe = p->o.inferd_exe ? p->o.inferd_exe : getenv("INFERD_EXE");
        x->argv[0] = exe && exe[0] ? inferd_strdup(exe) : self_exe();
        x->argv[1] = inferd_strdup("pipeline-node");
    }
    for (size_t k = 0; k < x->n_env; k++)
        if (!x->envp[k])
            return inferd_fail(err, INFERD_E_NOMEM, "pipeline: no memory");
    if (!x->argv[0])
        return inferd_fail(err, INFERD_E_IO, "pipeline: cannot tell which program runs nodes");
    return 0;
}

static void plan_free(exec_plan *x)
{
    for (size_t k = 0; k < x->n_env; k++)
        inferd_free(x->envp[k]);
    inferd_free(x->envp);
    for (size_t k = 0; k < 6; k++)
        inferd_free(x->argv[k]);
}

static int start_node(inferd_pipeline *p, size_t i, inferd_error *err)
{
    node_rt *n = &p->n[i];
    const pl_node *nd = &p->m->nodes[i];
    exec_plan x;
    int rc = plan_exec(p, i, &x, err);
    int sv[2] = {-1, -1}, ep[2] = {-1, -1};
    if (rc == 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "pipeline: socketpair");
    if (rc == 0 && pipe2(ep, O_CLOEXEC) < 0)
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "pipeline: pipe");
    const int devnull = rc == 0 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    pid_t pid = -1;
    if (rc == 0) {
        pid = fork();
        if (pid < 0)
            rc = inferd_fail_errno(err, INFERD_E_IO, errno, "pipeline: fork");
    }
    if (pid == 0) { /* the child: async-signal-safe calls only */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(devnull, 0) < 0 || dup2(ep[1], 2) < 0 || dup2(sv[1], 3) < 0)
            _exit(127);
        close_range(4, ~0u, 0);
        signal(SIGPIPE, SIG_DFL);
        execve(x.argv[0], x.argv, x.envp);
        static const char msg[] = "inferd pipeline: cannot run the node's program\n";
        if (write(2, msg, sizeof(msg) - 1) < 0) {
        }
        _exit(127);
    }
    if (devnull >= 0)
        close(devnull);
    if (sv[1] >= 0)
        close(sv[1]);
    if (ep[1] >= 0)
        close(ep[1]);
    char prog[PATH_MAX];
    snprintf(prog, sizeof(prog), "%s", x.argv[0] ? x.argv[0] : "");
    plan_free(&x);
    n->ctl = sv[0];
    n->err_fd = ep[0];
    if (rc < 0)
        return rc;
    n->pid = pid;
    n->info.pid = pid;
    n->pidfd = pidfd_open(pid, 0);
    if (n->pidfd < 0)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "pipeline: pidfd_open");
    fcntl(n->err_fd, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = (i + 1) * 4 + 1;
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, n->pidfd, &ev);
    ev.data.u64 = (i + 1) * 4 + 2;
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, n->ctl, &ev);
    ev.data.u64 = (i + 1) * 4 + 3;
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, n->err_fd, &ev);

    /* Its configuration, with its channels. */
    json_t *cfg =
        json_pack("{ss ss ss ss sO}", "type", "config", "pipeline", p->m->name, "node", nd->name,
                  "kind", inferd__pl_kind_name(nd->kind), "options", nd->options);
    json_t *ins = json_array(), *outs = json_array();
    int fds[CTL_FDS_MAX];
    size_t n_fds = 0;
    for (size_t k = 0; k < nd->n_in; k++) {
        json_array_append_new(ins, json_string(p->m->ch[nd->in[k]].name));
        fds[n_fds++] = p->ch_fd[nd->in[k]];
    }
    for (size_t k = 0; k < nd->n_out; k++) {
        json_array_append_new(outs, json_string(p->m->ch[nd->out[k]].name));
        fds[n_fds++] = p->ch_fd[nd->out[k]];
    }
    json_object_set_new(cfg, "inputs", ins);
    json_object_set_new(cfg, "outputs", outs);
    if (nd->kind == PL_PYTHON) {
        json_object_set_new(cfg, "module", json_string(nd->module));
        json_object_set_new(cfg, "class", json_string(nd->cls));
    }
    rc = inferd__ctl_send(n->ctl, cfg, fds, n_fds, err);
    json_decref(cfg);
    if (rc < 0) /* it died at once: its exit says why */
        inferd_log_warn(COMP, "node '%s' (%s): %s", nd->name, prog, err ? err->msg : "");
    n->info.state = INFERD_NODE_INITIALIZING;
    return 0;
}

int inferd_pipeline_start(const char *json, const char *base_dir, const inferd_pipeline_opts *opts,
                          inferd_pipeline **out, inferd_error *err)
{
    *out = NULL;
    pl_manifest *m = NULL;
    int rc = inferd__manifest_parse(json, base_dir, &m, err);
    if (rc < 0)
        return rc;
    inferd_pipeline *p = inferd_calloc(1, sizeof(*p));
    if (!p) {
        inferd__manifest_free(m);
        return inferd_fail(err, INFERD_E_NOMEM, "pipeline: no memory");
    }
    p->m = m;
    if (opts)
        p->o = *opts;
    p->epfd = p->wake = -1;
    p->ended = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&p->mu, NULL);
    inferd_cond_init_monotonic(&p->cv);
    p->n = inferd_calloc(m->n_nodes, sizeof(*p->n));
    p->ch_fd = inferd_calloc(m->n_ch, sizeof(int));
    p->ch_obs = inferd_calloc(m->n_ch, sizeof(*p->ch_obs));
    p->ch_seat = inferd_calloc(m->n_ch, sizeof(*p->ch_seat));
    if (!p->n || !p->ch_fd || !p->ch_obs || !p->ch_seat) {
        rc = inferd_fail(err, INFERD_E_NOMEM, "pipeline: no memory");
        goto fail;
    }
    for (size_t i = 0; i < m->n_nodes; i++) {
        p->n[i].pid = -1;
        p->n[i].pidfd = p->n[i].ctl = p->n[i].err_fd = -1;
        snprintf(p->n[i].info.name, sizeof(p->n[i].info.name), "%s", m->nodes[i].name);
        snprintf(p->n[i].info.kind, sizeof(p->n[i].info.kind), "%s",
                 inferd__pl_kind_name(m->nodes[i].kind));
        p->n[i].info.state = INFERD_NODE_STARTING;
        snprintf(p->n[i].info.message, sizeof(p->n[i].info.message), "starting");
    }
    for (size_t i = 0; i < m->n_ch; i++)
        p->ch_fd[i] = -1;
    for (size_t i = 0; i < m->n_ch; i++) {
        const pl_channel *c = &m->ch[i];
        if ((rc = inferd_channel_create(&c->spec, c->name, &p->ch_fd[i], err)) < 0 ||
            (rc = inferd_channel_open(p->ch_fd[i], INFERD_CHANNEL_OBSERVER, &p->ch_obs[i], err)) <
                0)
            goto fail;
        if (c->is_input || c->is_output)
            rc = inferd_channel_open(
                p->ch_fd[i], c->is_input ? INFERD_CHANNEL_PUBLISHER : INFERD_CHANNEL_SUBSCRIBER,
                &p->ch_seat[i], err);
        if (rc < 0)
            goto fail;
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->epfd < 0 || p->wake < 0 || p->ended < 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "pipeline: epoll");
        goto fail;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake, &ev);
    /* The models: the kernel reads them ahead (asynchronously) while the
     * nodes start, so a node that maps one finds it in memory. */
    for (size_t i = 0; i < m->n_preload; i++) {
        const int fd = open(m->preload[i], O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
            close(fd);
        }
    }
    for (size_t i = 0; i < m->n_nodes; i++)
        if ((rc = start_node(p, i, err)) < 0)
            goto fail;
    p->next_progress_ns = inferd_now_ns();
    if (pthread_create(&p->monitor, NULL, monitor_main, p) != 0) {
        rc = inferd_fail(err, INFERD_E_IO, "pipeline: cannot start its monitor thread");
        goto fail;
    }
    p->monitor_started = true;
    inferd_log_info(COMP, "pipeline '%s': %zu nodes, %zu channels started", m->name, m->n_nodes,
                    m->n_ch);
    *out = p;
    return 0;
fail:
    inferd_pipeline_destroy(p);
    return rc;
}

/* ---- the caller's side ---- */

int inferd_pipeline_wait_ready(inferd_pipeline *p, int64_t timeout_ms, inferd_error *err)
{
    const uint64_t deadline =
        timeout_ms < 0 ? UINT64_MAX : inferd_now_ns() + (uint64_t)timeout_ms * 1000000u;
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    while (!p->all_ready && !p->failure && !p->stopping) {
        if (deadline != UINT64_MAX && inferd_now_ns() >= deadline) {
            char msg[512] = "";
            for (size_t i = 0; i < p->m->n_nodes; i++) {
                const inferd_node_info *n = &p->n[i].info;
                if (n->state == INFERD_NODE_READY || n->state == INFERD_NODE_RUNNING)
                    continue;
                char one[400];
                snprintf(one, sizeof(one), "%s%s (%s, %.0f%%: %s)", msg[0] ? ", " : "", n->name,
                         inferd_node_state_name(n->state), 100 * n->progress, n->message);
                strncat(msg, one, sizeof(msg) - strlen(msg) - 1);
            }
            rc = inferd_fail(err, INFERD_E_TIMEOUT,
                             "pipeline '%s': not ready after %lld ms; still loading: %s",
                             p->m->name, (long long)timeout_ms, msg);
            break;
        }
        inferd_cond_wait_until_ns(&p->cv, &p->mu, deadline == UINT64_MAX ? 0 : deadline);
    }
    if (rc == 0 && p->failure) {
        rc = p->failure;
        if (err)
            *err = p->failure_err;
    } else if (rc == 0 && !p->all_ready) {
        rc = inferd_fail(err, INFERD_E_UNAVAILABLE, "pipeline '%s': stopped", p->m->name);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

size_t inferd_pipeline_nodes(inferd_pipeline *p, inferd_node_info *out, size_t cap)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->m->n_nodes && i < cap; i++)
        out[i] = p->n[i].info;
    pthread_mutex_unlock(&p->mu);
    return p->m->n_nodes;
}

int inferd_pipeline_fd(inferd_pipeline *p) { return p->ended; }

int inferd_pipeline_failure(inferd_pipeline *p, inferd_error *err)
{
    pthread_mutex_lock(&p->mu);
    const int rc = p->failure;
    if (rc && err)
        *err = p->failure_err;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* A channel call's "shut down" as the pipeline's failure or its stop. */
static int channel_end(inferd_pipeline *p, int rc, inferd_error *err)
{
    if (rc != INFERD_E_UNAVAILABLE)
        return rc;
    pthread_mutex_lock(&p->mu);
    if (p->failure) {
        rc = p->failure;
        if (err)
            *err = p->failure_err;
    } else {
        rc = inferd_fail(err, INFERD_E_UNAVAILABLE, "pipeline '%s': stopped", p->m->name);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

static int seat(inferd_pipeline *p, const char *channel, bool input, inferd_error *err)
{
    const int c = inferd__manifest_channel(p->m, channel);
    if (c < 0 || !(input ? p->m->ch[c].is_input : p->m->ch[c].is_output))
        return inferd_fail_param(err, INFERD_E_NOT_FOUND, "channel",
                                 "pipeline '%s' has no %s channel '%s'", p->m->name,
                                 input ? "input" : "output", channel);
    return c;
}

int inferd_pipeline_send(inferd_pipeline *p, const char *channel, uint64_t session,
                         const inferd_sample_header *h, const void *data, uint64_t bytes,
                         int64_t timeout_ms, inferd_error *err)
{
    const int c = seat(p, channel, true, err);
    if (c < 0)
        return c;
    const int rc = inferd__sample_send(p->ch_seat[c], *h, session, data, bytes, timeout_ms, err);
    return rc < 0 ? channel_end(p, rc, err) : 0;
}

int inferd_pipeline_send_text(inferd_pipeline *p, const char *channel, uint64_t session,
                              const char *text, size_t len, int64_t timeout_ms, inferd_error *err)
{
    const inferd_sample_header h = inferd__sample_text_header(len);
    return inferd_pipeline_send(p, channel, session, &h, text, len, timeout_ms, err);
}

int inferd_pipeline_end(inferd_pipeline *p, uint64_t session, int64_t timeout_ms, inferd_error *err)
{
    inferd_sample_header h = {.flags = INFERD_SAMPLE_END, .elem = INFERD_ELEM_U8};
    for (size_t i = 0; i < p->m->n_inputs; i++) {
        int rc = inferd_pipeline_send(p, p->m->ch[p->m->inputs[i]].name, session, &h, NULL, 0,
                                      timeout_ms, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int inferd_pipeline_receive(inferd_pipeline *p, const char *channel, int64_t timeout_ms,
                            inferd_pipeline_sample *out, inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    const int c = seat(p, channel, false, err);
    if (c < 0)
        return c;
    int rc = inferd_channel_receive(p->ch_seat[c], timeout_ms, &out->s_, err);
    if (rc < 0)
        return channel_end(p, rc, err);
    out->ch_ = c;
    if ((rc = inferd_sample_check(out->s_.data, out->s_.len, err)) < 0) {
        inferd_channel_release(p->ch_seat[c], &out->s_);
        return rc;
    }
    out->h = out->s_.data;
    out->data = (const char *)out->s_.data + sizeof(inferd_sample_header);
    return 0;
}

void inferd_pipeline_release(inferd_pipeline *p, inferd_pipeline_sample *s)
{
    if (s->h)
        inferd_channel_release(p->ch_seat[s->ch_], &s->s_);
    s->h = NULL;
    s->data = NULL;
}

int inferd_pipeline_stop(inferd_pipeline *p, int64_t grace_ms, inferd_error *err)
{
    pthread_mutex_lock(&p->mu);
    const bool first = !p->stopping;
    p->stopping = true;
    if (first && p->monitor_started) {
        stop_nodes_locked(p);
        if (!p->kill_at_ns)
            p->kill_at_ns = inferd_now_ns() + (uint64_t)(grace_ms < 0 ? 0 : grace_ms) * 1000000u;
        uint64_t one = 1;
        if (write(p->wake, &one, sizeof(one)) < 0) { /* the monitor re-reads kill_at */
        }
    }
    pthread_cond_broadcast(&p->cv);
    while (p->monitor_started && !p->done)
        pthread_cond_wait(&p->cv, &p->mu);
    const int rc = p->failure;
    if (rc && err)
        *err = p->failure_err;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void inferd_pipeline_destroy(inferd_pipeline *p)
{
    if (!p)
        return;
    if (p->monitor_started) {
        inferd_pipeline_stop(p, 1000, NULL);
        pthread_mutex_lock(&p->mu);
        p->quit = true;
        pthread_mutex_unlock(&p->mu);
        uint64_t one = 1;
        if (write(p->wake, &one, sizeof(one)) < 0) {
        }
        pthread_join(p->monitor, NULL);
    } else {
        for (size_t i = 0; p->n && i < p->m->n_nodes; i++) /* a start that failed */
            if (p->n[i].pid > 0) {
                kill(p->n[i].pid, SIGKILL);
                waitpid(p->n[i].pid, NULL, 0);
            }
    }
    for (size_t i = 0; p->n && i < p->m->n_nodes; i++) {
        node_rt *n = &p->n[i];
        if (n->pidfd >= 0)
            close(n->pidfd);
        if (n->ctl >= 0)
            close(n->ctl);
        if (n->err_fd >= 0)
            close(n->err_fd);
    }
    for (size_t i = 0; p->ch_fd && i < p->m->n_ch; i++) {
        if (p->ch_seat && p->ch_seat[i])
            inferd_channel_close(p->ch_seat[i]);
        if (p->ch_obs && p->ch_obs[i])
            inferd_channel_close(p->ch_obs[i]);
        if (p->ch_fd[i] >= 0)
            close(p->ch_fd[i]);
    }
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->wake >= 0)
        close(p->wake);
    if (p->ended >= 0)
        close(p->ended);
    inferd_free(p->n);
    inferd_free(p->ch_fd);
    inferd_free(p->ch_obs);
    inferd_free(p->ch_seat);
    inferd__manifest_free(p->m);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    inferd_free(p);
}
