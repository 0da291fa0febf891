/* Connections: what each may cost and for how long.
 *
 * The HTTP server (httpd.c) runs on epoll with a small pool of threads; a
 * connection that waits costs memory, not a thread:
 * - a request waiting for its generation, or a stream waiting for its next
 *   token, parks its connection (waker: suspend, resumed by the scheduler's
 *   on_event);
 * - work that may block (loading a model) runs on a job thread while its
 *   connection is parked;
 * - the guard thread watches the clients of parked requests for a hang-up
 *   (which cancels the request), pings idle streams, ends connections that
 *   take longer than the receive timeout to send a request (trickling
 *   cannot extend it), and keeps the connection limits: max_connections in
 *   all and max_client_connections per client address. A connection beyond
 *   a limit is answered 503 (only the operations routes are served on it)
 *   and has a short receive deadline; when all connections are in use, the
 *   oldest idle keep-alive connection is closed to make room. */
#include "server_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/log.h"

#define COMP "http"
#define GUARD_TICK_MS 250
#define OVER_LIMIT_RECEIVE_MS 2000 /* receive deadline beyond a limit */
#define CLIENT_EXTRA 8             /* connections a client has beyond its limit */

/* ---- waker ---- */

void inferd__waker_init(waker *w, inferd_server *s, httpd_conn *hc)
{
    pthread_mutex_init(&w->mu, NULL);
    w->hc = hc;
    w->srv = s;
    w->suspended = false;
    w->pending = false;
    w->fired = false;
}

void inferd__waker_destroy(waker *w) { pthread_mutex_destroy(&w->mu); }

bool inferd__waker_sleep(waker *w)
{
    pthread_mutex_lock(&w->mu);
    if (w->pending) {
        w->pending = false;
        pthread_mutex_unlock(&w->mu);
        return false;
    }
    w->suspended = true;
    atomic_fetch_add(&w->srv->n_parked, 1);
    httpd_suspend(w->hc);
    pthread_mutex_unlock(&w->mu);
    return true;
}

void inferd__waker_wake(waker *w)
{
    pthread_mutex_lock(&w->mu);
    httpd_conn *hc = w->hc;
    inferd_server *s = w->srv;
    const bool resume = w->suspended;
    if (resume)
        w->suspended = false;
    else if (hc)
        w->pending = true;
    w->fired = true;
    pthread_mutex_unlock(&w->mu);
    /* w is not touched past the unlock: once the connection runs again its
     * owner may free it. A suspended connection stays until resumed. */
    if (resume) {
        atomic_fetch_sub(&s->n_parked, 1);
        httpd_resume(hc);
    }
}

bool inferd__waker_fired(waker *w)
{
    pthread_mutex_lock(&w->mu);
    bool f = w->fired;
    pthread_mutex_unlock(&w->mu);
    return f;
}

void inferd__waker_detach(waker *w)
{
    pthread_mutex_lock(&w->mu);
    w->hc = NULL;
    pthread_mutex_unlock(&w->mu);
}

/* ---- client addresses ---- */

typedef struct ip_count {
    struct ip_count *next;
    uint8_t addr[16];
    uint8_t len;
    uint32_t total;    /* open connections */
    uint32_t admitted; /* of those, within the limits */
} ip_count;

/* The address of @p sa as bytes (an IPv4-mapped IPv6 address as IPv4; a
 * Unix-socket peer as its user: "u" and the uid). */
static size_t addr_key(const struct sockaddr *sa, int fd, uint8_t key[16])
{
    if (sa && sa->sa_family == AF_UNIX) {
        struct ucred cr;
        socklen_t n = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &n) != 0)
            return 0;
        key[0] = 'u';
        memcpy(key + 1, &cr.uid, sizeof(cr.uid));
        return 1 + sizeof(cr.uid);
    }
    if (sa && sa->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            memcpy(key, a + 12, 4);
            return 4;
        }
        memcpy(key, a, 16);
        return 16;
    }
    return 0; /* unknown: one shared count */
}

static uint32_t addr_hash(const uint8_t *key, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % IP_BUCKETS;
}

/* The count of @p sa's address, made when new; NULL without memory. */
static ip_count *ip_get(inferd_server *s, const struct sockaddr *sa, int fd)
{
    uint8_t key[16];
    size_t n = addr_key(sa, fd, key);
    ip_count **head = &s->ips[addr_hash(key, n)];
    for (ip_count *p = *head; p; p = p->next)
        if (p->len == n && memcmp(p->addr, key, n) == 0)
            return p;
    ip_count *p = inferd_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    memcpy(p->addr, key, n);
    p->len = (uint8_t)n;
    p->next = *head;
    *head = p;
    return p;
}

/* Forget @p p when no connection counts in it. */
static void ip_put_if_unused(inferd_server *s, ip_count *p)
{
    if (!p || p->total > 0)
        return;
    ip_count **at = &s->ips[addr_hash(p->addr, p->len)];
    while (*at != p)
        at = &(*at)->next;
    *at = p->next;
    inferd_free(p);
}

static void ip_put(inferd_server *s, ip_count *p)
{
    if (!p)
        return;
    p->total--;
    ip_put_if_unused(s, p);
}

/* ---- connection tracking (httpd's opened and closed) ---- */

static void unadmit(inferd_server *s, conn_track *t)
{
    if (!t->admitted)
        return;
    t->admitted = false;
    s->n_admitted--;
    if (t->ip)
        t->ip->admitted--;
}

/* Close the connection of @p t: the guard's way (httpd sees the end of its
 * stream and closes it). */
static void shed(inferd_server *s, conn_track *t)
{
    t->shed = true;
    unadmit(s, t);
    shutdown(t->fd, SHUT_RDWR);
}

/* All connections are in use: close the longest-idle keep-alive one (it
 * answered a request and waits for the next). */
static bool shed_idle(inferd_server *s)
{
    conn_track *oldest = NULL;
    for (conn_track *t = s->conns; t; t = t->next)
        if (t->admitted && !t->shed && t->phase == PH_RECEIVING && t->requests > 0 &&
            (!oldest || t->since_ns < oldest->since_ns))
            oldest = t;
    if (!oldest)
        return false;
    shed(s, oldest);
    atomic_fetch_add(&s->n_shed_idle, 1);
    return true;
}

int inferd__conn_opened(void *lcls, httpd_conn *hc, int fd, const struct sockaddr *peer, void **ctx)
{
    (void)hc;
    const listener *l = lcls;
    inferd_server *s = l->srv;
    conn_track *t = inferd_calloc(1, sizeof(*t));
    *ctx = t;
    if (!t)
        return 0; /* untracked: answered as beyond the limits */
    t->fd = fd;
    t->phase = PH_RECEIVING;
    t->since_ns = inferd_now_ns();
    pthread_mutex_lock(&s->guard_mu);
    if (!l->ops) {
        t->ip = ip_get(s, peer, fd);
        /* Beyond its limit a client gets a few connections more, each
         * answered 503 at once (or an operations route); past those they
         * are closed unanswered. */
        if (t->ip && t->ip->total >= s->o.max_client_connections + CLIENT_EXTRA) {
            ip_put_if_unused(s, t->ip);
            pthread_mutex_unlock(&s->guard_mu);
            inferd_free(t);
            *ctx = NULL;
            atomic_fetch_add(&s->n_refused, 1);
            return -1;
        }
    }
    t->next = s->conns;
    if (s->conns)
        s->conns->prev = t;
    s->conns = t;
    s->n_conns++;
    if (!l->ops) { /* the operations port's connections are counted apart */
        if (t->ip)
            t->ip->total++;
        const bool client_ok = t->ip && t->ip->admitted < s->o.max_client_connections;
        if (client_ok && s->n_admitted >= s->o.max_connections)
            shed_idle(s);
        if (client_ok && s->n_admitted < s->o.max_connections) {
            t->admitted = true;
            s->n_admitted++;
            t->ip->admitted++;
        }
    }
    pthread_mutex_unlock(&s->guard_mu);
    return 0;
}

void inferd__conn_closed(void *lcls, httpd_conn *hc, void *ctx)
{
    (void)hc;
    const listener *l = lcls;
    inferd_server *s = l->srv;
    conn_track *t = ctx;
    if (!t)
        return;
    pthread_mutex_lock(&s->guard_mu);
    unadmit(s, t);
    ip_put(s, t->ip);
    if (t->prev)
        t->prev->next = t->next;
    else
        s->conns = t->next;
    if (t->next)
        t->next->prev = t->prev;
    s->n_conns--;
    pthread_mutex_unlock(&s->guard_mu);
    inferd_free(t);
}

void inferd__conn_phase(inferd_server *s, httpd_conn *hc, conn_phase ph)
{
    conn_track *t = httpd_conn_ctx(hc);
    if (!t)
        return;
    pthread_mutex_lock(&s->guard_mu);
    if (ph == PH_RECEIVING)
        t->requests++;
    t->phase = ph;
    t->since_ns = inferd_now_ns();
    pthread_mutex_unlock(&s->guard_mu);
}

bool inferd__conn_over_limit(http_conn *c)
{
    if (c->l->ops)
        return false;
    conn_track *t = httpd_conn_ctx(c->hc);
    if (!t)
        return true;
    pthread_mutex_lock(&c->srv->guard_mu);
    bool over = !t->admitted;
    pthread_mutex_unlock(&c->srv->guard_mu);
    return over;
}

void inferd__conn_counts(inferd_server *s, uint32_t *n_conns, uint32_t *n_admitted)
{
    pthread_mutex_lock(&s->guard_mu);
    *n_conns = s->n_conns;
    *n_admitted = s->n_admitted;
    pthread_mutex_unlock(&s->guard_mu);
}

/* ---- the guard thread ---- */

static _Atomic uint64_t watch_ids = 1;

void inferd__guard_watch(inferd_server *s, gen *g)
{
    if (g->sock < 0)
        return;
    pthread_mutex_lock(&s->guard_mu);
    g->watch_id = atomic_fetch_add(&watch_ids, 1);
    struct epoll_event ev = {.events = EPOLLRDHUP, .data.u64 = g->watch_id};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, g->sock, &ev) == 0) {
        g->watched = true;
        g->wprev = NULL;
        g->wnext = s->watched;
        if (s->watched)
            s->watched->wprev = g;
        s->watched = g;
    }
    pthread_mutex_unlock(&s->guard_mu);
}

/* Stop watching g (guard_mu held). */
static void unwatch_locked(inferd_server *s, gen *g)
{
    if (!g->watched)
        return;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, g->sock, NULL);
    if (g->wprev)
        g->wprev->wnext = g->wnext;
    else
        s->watched = g->wnext;
    if (g->wnext)
        g->wnext->wprev = g->wprev;
    g->watched = false;
}

void inferd__guard_unwatch(inferd_server *s, gen *g)
{
    pthread_mutex_lock(&s->guard_mu);
    unwatch_locked(s, g);
    pthread_mutex_unlock(&s->guard_mu);
}

/* The client of watched generation @p id hung up: cancel its request. */
static void hung_up(inferd_server *s, uint64_t id)
{
    for (gen *g = s->watched; g; g = g->wnext) {
        if (g->watch_id != id)
            continue;
        unwatch_locked(s, g);
        atomic_store(&g->client_left, true);
        atomic_fetch_add(&s->n_hangups, 1);
        inferd_fe_request_cancel(g->fr); /* its end wakes the connection */
        inferd__waker_wake(&g->wk);
        return;
    }
}

static void *guard_main(void *arg)
{
    inferd_server *s = arg;
    struct epoll_event evs[64];
    const uint64_t recv_ns = (uint64_t)s->o.receive_timeout_s * 1000000000u;
    const uint64_t over_ns = recv_ns < (uint64_t)OVER_LIMIT_RECEIVE_MS * 1000000u
                                 ? recv_ns
                                 : (uint64_t)OVER_LIMIT_RECEIVE_MS * 1000000u;
    for (;;) {
        int n = epoll_wait(s->epfd, evs, 64, GUARD_TICK_MS);
        pthread_mutex_lock(&s->guard_mu);
        if (s->guard_stop) {
            pthread_mutex_unlock(&s->guard_mu);
            break;
        }
        for (int i = 0; i < n; i++)
            if (evs[i].data.u64 != 0)
                hung_up(s, evs[i].data.u64);
        const uint64_t now = inferd_now_ns();
        for (gen *g = s->watched; g; g = g->wnext)
            if (g->stream &&
                now - atomic_load(&g->last_out_ns) >= (uint64_t)STREAM_PING_MS * 1000000u &&
                !atomic_exchange(&g->ping_due, true))
                inferd__waker_wake(&g->wk);
        for (conn_track *t = s->conns; t; t = t->next) {
            if (t->shed || t->phase != PH_RECEIVING)
                continue;
            if (now - t->since_ns >= (t->admitted || t->ip == NULL ? recv_ns : over_ns)) {
                shed(s, t);
                atomic_fetch_add(&s->n_receive_timeouts, 1);
            }
        }
        pthread_mutex_unlock(&s->guard_mu);
    }
    return NULL;
}

int inferd__guard_start(inferd_server *s)
{
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->epfd < 0 || s->stop_fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->stop_fd, &ev) != 0)
        return -1;
    if (pthread_create(&s->guard, NULL, guard_main, s) != 0)
        return -1;
    s->guard_running = true;
    return 0;
}

void inferd__guard_stop(inferd_server *s)
{
    if (s->guard_running) {
        pthread_mutex_lock(&s->guard_mu);
        s->guard_stop = true;
        pthread_mutex_unlock(&s->guard_mu);
        uint64_t one = 1;
        ssize_t w = write(s->stop_fd, &one, sizeof(one));
        (void)w;
        pthread_join(s->guard, NULL);
        s->guard_running = false;
    }
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    s->epfd = s->stop_fd = -1;
    for (size_t i = 0; i < IP_BUCKETS; i++) {
        while (s->ips[i]) {
            ip_count *p = s->ips[i];
            s->ips[i] = p->next;
            inferd_free(p);
        }
    }
}

/* ---- jobs ---- */

static void *job_main(void *arg)
{
    inferd_server *s = arg;
    pthread_mutex_lock(&s->job_mu);
    for (;;) {
        while (s->job_n == 0 && !s->job_stop)
            pthread_cond_wait(&s->job_cv, &s->job_mu);
        if (s->job_n == 0)
            break;
        job j = s->jobs[s->job_head];
        s->job_head = (s->job_head + 1) % JOBS_MAX;
        s->job_n--;
        pthread_mutex_unlock(&s->job_mu);
        if (j.release) {
            inferd__gen_release(j.release);
        } else {
            j.fn(j.c, j.m[0] ? j.m : NULL, j.body);
            json_decref(j.body);
            inferd__waker_wake(&j.c->wk); /* the last touch of j.c */
        }
        pthread_mutex_lock(&s->job_mu);
    }
    pthread_mutex_unlock(&s->job_mu);
    return NULL;
}

/* Queue @p j; false when the queue is full or stopped. */
static bool job_push(inferd_server *s, const job *j)
{
    pthread_mutex_lock(&s->job_mu);
    bool ok = !s->job_stop && s->n_job_threads > 0 && s->job_n < JOBS_MAX;
    if (ok) {
        s->jobs[(s->job_head + s->job_n) % JOBS_MAX] = *j;
        s->job_n++;
        pthread_cond_signal(&s->job_cv);
    }
    pthread_mutex_unlock(&s->job_mu);
    return ok;
}

int inferd__job_post(http_conn *c, route_fn fn, const char *m, json_t *body)
{
    job j = {.c = c, .fn = fn, .body = body};
    snprintf(j.m, sizeof(j.m), "%s", m ? m : "");
    c->stage = ST_JOB; /* before the job can run */
    if (!job_push(c->srv, &j)) {
        c->stage = ST_NEW;
        return -1;
    }
    return 0;
}

void inferd__job_release(inferd_server *s, gen *g)
{
    job j = {.release = g};
    if (!job_push(s, &j))
        inferd__gen_release(g); /* full or stopping: here, waiting */
}

int inferd__jobs_start(inferd_server *s)
{
    for (uint32_t i = 0; i < JOB_THREADS; i++) {
        if (pthread_create(&s->job_threads[i], NULL, job_main, s) != 0)
            return -1;
        s->n_job_threads++;
    }
    return 0;
}

void inferd__jobs_stop(inferd_server *s)
{
    pthread_mutex_lock(&s->job_mu);
    s->job_stop = true;
    pthread_cond_broadcast(&s->job_cv);
    pthread_mutex_unlock(&s->job_mu);
    for (uint32_t i = 0; i < s->n_job_threads; i++)
        pthread_join(s->job_threads[i], NULL);
    s->n_job_threads = 0;
}
