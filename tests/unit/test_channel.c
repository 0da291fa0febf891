/* Pipeline layer: channels (inferd/channel.h), black box. Specs out of
 * range, fds that are not channels, seats; samples in order with their
 * bytes, read-only for subscribers; BLOCK backpressure with its timeout;
 * DROP_OLDEST taking back unreceived samples but never a held one; a
 * subscriber in another process; and threads publishing and receiving at
 * once under both policies. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "inferd/channel.h"

static int make(uint64_t bytes, uint32_t slots, uint32_t subs, inferd_channel_policy pol)
{
    inferd_channel_spec sp = {
        .slot_bytes = bytes, .n_slots = slots, .max_subscribers = subs, .policy = pol};
    int fd = -1;
    inferd_error e = {0};
    assert_int_equal(inferd_channel_create(&sp, "test", &fd, &e), 0);
    return fd;
}

static inferd_channel *open_as(int fd, inferd_channel_role role)
{
    inferd_channel *ch = NULL;
    inferd_error e = {0};
    assert_int_equal(inferd_channel_open(fd, role, &ch, &e), 0);
    return ch;
}

/* Sample n: its size and its bytes, a function of n. */
static uint64_t size_of(uint64_t n, uint64_t cap) { return 8 + (n * 7919) % (cap - 8 + 1); }

static void fill(unsigned char *p, uint64_t n, uint64_t len)
{
    memcpy(p, &n, 8);
    for (uint64_t i = 8; i < len; i++)
        p[i] = (unsigned char)(n * 31 + i);
}

static bool check(const unsigned char *p, uint64_t n, uint64_t len)
{
    uint64_t got;
    memcpy(&got, p, 8);
    if (got != n)
        return false;
    for (uint64_t i = 8; i < len; i++)
        if (p[i] != (unsigned char)(n * 31 + i))
            return false;
    return true;
}

static void publish(inferd_channel *pub, uint64_t n, int64_t timeout_ms)
{
    inferd_sample s;
    inferd_error e = {0};
    assert_int_equal(inferd_channel_loan(pub, timeout_ms, &s, &e), 0);
    const uint64_t len = size_of(n, s.cap);
    fill(s.data, n, len);
    assert_int_equal(inferd_channel_publish(pub, &s, len, &e), 0);
}

static void test_bad_specs_fds_and_seats(void **state)
{
    (void)state;
    inferd_error e = {0};
    int fd = -1;
    inferd_channel_spec sp = {.slot_bytes = 0, .n_slots = 4, .max_subscribers = 1};
    assert_int_equal(inferd_channel_create(&sp, "x", &fd, &e), INFERD_E_RANGE);
    assert_string_equal(e.param, "slot_bytes");
    sp.slot_bytes = 16;
    sp.n_slots = 0;
    assert_int_equal(inferd_channel_create(&sp, "x", &fd, &e), INFERD_E_RANGE);
    assert_string_equal(e.param, "n_slots");
    sp.n_slots = 2;
    sp.max_subscribers = 65;
    assert_int_equal(inferd_channel_create(&sp, "x", &fd, &e), INFERD_E_RANGE);
    assert_non_null(strstr(e.msg, "max_subscribers: 65, expected 1 to 64"));
    assert_int_equal(fd, -1);

    /* A memfd that is not sealed, one sealed but not a channel. */
    inferd_channel *ch = NULL;
    int m = memfd_create("other", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(m, 65536), 0);
    assert_int_equal(inferd_channel_open(m, INFERD_CHANNEL_SUBSCRIBER, &ch, &e), INFERD_E_FORMAT);
    assert_non_null(strstr(e.msg, "not a sealed channel"));
    assert_int_equal(fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
    assert_int_equal(inferd_channel_open(m, INFERD_CHANNEL_SUBSCRIBER, &ch, &e), INFERD_E_FORMAT);
    assert_non_null(strstr(e.msg, "bad header"));
    assert_null(ch);
    close(m);
    /* Its size is fixed. */
    fd = make(100, 2, 2, INFERD_CHANNEL_BLOCK);
    assert_int_not_equal(ftruncate(fd, 1 << 20), 0);

    /* One publisher; max_subscribers subscribers; a seat given back is free. */
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    assert_int_equal(inferd_channel_open(fd, INFERD_CHANNEL_PUBLISHER, &ch, &e), INFERD_E_BUSY);
    inferd_channel *a = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    inferd_channel *b = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    assert_int_equal(inferd_channel_open(fd, INFERD_CHANNEL_SUBSCRIBER, &ch, &e), INFERD_E_BUSY);
    assert_non_null(strstr(e.msg, "its 2 subscribers' seats are taken"));
    inferd_channel_close(b);
    b = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    /* Roles: a subscriber does not loan, a publisher does not receive. */
    inferd_sample s;
    assert_int_equal(inferd_channel_loan(a, 0, &s, &e), INFERD_E_INVALID);
    assert_int_equal(inferd_channel_receive(pub, 0, &s, &e), INFERD_E_INVALID);
    assert_int_equal(inferd_channel_loan(pub, 0, &s, &e), 0);
    inferd_sample s2;
    assert_int_equal(inferd_channel_loan(pub, 0, &s2, &e), INFERD_E_INVALID);
    assert_int_equal(inferd_channel_publish(pub, &s, 101, &e), INFERD_E_INVALID);
    assert_non_null(strstr(e.msg, "101 bytes, the slot holds 100"));
    assert_int_equal(inferd_channel_publish(pub, &s, 100, &e), 0);
    inferd_channel_close(a);
    inferd_channel_close(b);
    inferd_channel_close(pub);
    close(fd);
}

/* A write to a subscriber's view faults: run it in a child. */
static void test_in_order_and_read_only(void **state)
{
    (void)state;
    int fd = make(4096, 4, 2, INFERD_CHANNEL_BLOCK);
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    inferd_channel *a = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    inferd_channel *b = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    inferd_error e = {0};
    for (uint64_t n = 0; n < 40; n++) {
        publish(pub, n, 1000);
        inferd_sample x, y;
        assert_int_equal(inferd_channel_receive(a, 1000, &x, &e), 0);
        assert_int_equal(inferd_channel_receive(b, 1000, &y, &e), 0);
        assert_int_equal(x.seq, n);
        assert_int_equal(y.seq, n);
        assert_int_equal(x.len, size_of(n, 4096));
        assert_true(check(x.data, n, x.len));
        assert_true(check(y.data, n, y.len));
        inferd_channel_release(a, &x);
        inferd_channel_release(b, &y);
    }
    inferd_sample x;
    assert_int_equal(inferd_channel_receive(a, 20, &x, &e), INFERD_E_TIMEOUT);
    /* No copy: the subscriber's view is the memory the publisher wrote
     * (a write after publishing, which only a test does, shows through). */
    inferd_sample w;
    assert_int_equal(inferd_channel_loan(pub, 0, &w, &e), 0);
    fill(w.data, 40, 4096);
    assert_int_equal(inferd_channel_publish(pub, &w, 4096, &e), 0);
    assert_int_equal(inferd_channel_receive(a, 1000, &x, &e), 0);
    assert_int_equal(x.slot, w.slot);
    ((unsigned char *)w.data)[4000] ^= 0xff;
    assert_int_equal(((const unsigned char *)x.data)[4000], ((unsigned char *)w.data)[4000]);
    assert_false(check(x.data, 40, x.len));
    pid_t c = fork();
    if (c == 0) {
        signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
        ((volatile unsigned char *)x.data)[0] = 1;
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(c, &st, 0), c);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    inferd_channel_stats stats;
    inferd_channel_stats_get(a, &stats);
    assert_int_equal(stats.published, 41);
    assert_int_equal(stats.received, 41);
    assert_int_equal(stats.dropped, 0);
    inferd_channel_release(a, &x);
    inferd_channel_close(a);
    inferd_channel_close(b);
    inferd_channel_close(pub);
    close(fd);
}

static void test_block_backpressure(void **state)
{
    (void)state;
    int fd = make(64, 2, 1, INFERD_CHANNEL_BLOCK);
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    inferd_channel *a = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    inferd_error e = {0};
    publish(pub, 0, 0);
    publish(pub, 1, 0);
    inferd_sample s;
    assert_int_equal(inferd_channel_loan(pub, 30, &s, &e), INFERD_E_TIMEOUT);
    assert_non_null(strstr(e.msg, "no free slot in 30 ms"));
    /* Received but held: still in flight. Released: room. */
    inferd_sample x;
    assert_int_equal(inferd_channel_receive(a, 0, &x, &e), 0);
    assert_int_equal(inferd_channel_loan(pub, 0, &s, &e), INFERD_E_TIMEOUT);
    inferd_channel_release(a, &x);
    publish(pub, 2, 0);
    for (uint64_t n = 1; n <= 2; n++) {
        assert_int_equal(inferd_channel_receive(a, 0, &x, &e), 0);
        assert_int_equal(x.seq, n);
        assert_true(check(x.data, n, x.len));
        inferd_channel_release(a, &x);
    }
    /* A subscriber that leaves frees what it held and had not received. */
    publish(pub, 3, 0);
    publish(pub, 4, 0);
    inferd_channel_close(a);
    publish(pub, 5, 0);
    publish(pub, 6, 0);
    inferd_channel_close(pub);
    close(fd);
}

static void test_drop_oldest(void **state)
{
    (void)state;
    int fd = make(64, 2, 2, INFERD_CHANNEL_DROP_OLDEST);
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    inferd_channel *a = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    inferd_error e = {0};
    for (uint64_t n = 0; n < 5; n++)
        publish(pub, n, 0); /* never waits */
    inferd_sample x, y;
    assert_int_equal(inferd_channel_receive(a, 0, &x, &e), 0);
    assert_int_equal(x.seq, 3);
    assert_true(check(x.data, 3, x.len));
    /* Held: never taken back; the loan of its slot (the next one, 5's)
     * waits for it. */
    inferd_sample s;
    assert_int_equal(inferd_channel_loan(pub, 30, &s, &e), INFERD_E_TIMEOUT);
    assert_true(check(x.data, 3, x.len));
    inferd_channel_release(a, &x);
    publish(pub, 5, 0);
    publish(pub, 6, 0); /* takes 4 back */
    assert_int_equal(inferd_channel_receive(a, 0, &y, &e), 0);
    assert_int_equal(y.seq, 5);
    inferd_channel_release(a, &y);
    assert_int_equal(inferd_channel_receive(a, 0, &y, &e), 0);
    assert_int_equal(y.seq, 6);
    inferd_channel_release(a, &y);
    inferd_channel_stats st;
    inferd_channel_stats_get(a, &st);
    assert_int_equal(st.received, 3);
    assert_int_equal(st.dropped, 4); /* 0, 1, 2, 4 */
    /* A subscriber that joins later sees only what comes after it. */
    inferd_channel *b = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    assert_int_equal(inferd_channel_receive(b, 0, &y, &e), INFERD_E_TIMEOUT);
    publish(pub, 7, 0);
    assert_int_equal(inferd_channel_receive(b, 0, &y, &e), 0);
    assert_int_equal(y.seq, 7);
    inferd_channel_release(b, &y);
    inferd_channel_close(b);
    inferd_channel_close(a);
    inferd_channel_close(pub);
    close(fd);
}

typedef struct waiter {
    inferd_channel *ch;
    int rc;
} waiter;

static void *wait_receive(void *arg)
{
    waiter *w = arg;
    inferd_sample x;
    inferd_error e = {0};
    w->rc = inferd_channel_receive(w->ch, -1, &x, &e);
    return NULL;
}

static void *wait_loan(void *arg)
{
    waiter *w = arg;
    inferd_sample x;
    inferd_error e = {0};
    w->rc = inferd_channel_loan(w->ch, -1, &x, &e);
    return NULL;
}

static void test_shutdown_wakes_every_wait(void **state)
{
    (void)state;
    int fd = make(64, 1, 2, INFERD_CHANNEL_BLOCK);
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    inferd_channel *a = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    inferd_channel *b = open_as(fd, INFERD_CHANNEL_SUBSCRIBER);
    publish(pub, 0, 0);
    inferd_error e = {0};
    inferd_sample x;
    assert_int_equal(inferd_channel_receive(a, 0, &x, &e), 0); /* a is done; b has 0 to take */
    inferd_channel_release(a, &x);
    waiter wr = {.ch = a, .rc = 1}, wl = {.ch = pub, .rc = 1};
    pthread_t tr, tl;
    assert_int_equal(pthread_create(&tr, NULL, wait_receive, &wr), 0);
    assert_int_equal(pthread_create(&tl, NULL, wait_loan, &wl), 0); /* b holds the slot */
    usleep(20000);
    inferd_channel_shutdown(b);
    assert_int_equal(pthread_join(tr, NULL), 0);
    assert_int_equal(pthread_join(tl, NULL), 0);
    assert_int_equal(wr.rc, INFERD_E_UNAVAILABLE);
    assert_int_equal(wl.rc, INFERD_E_UNAVAILABLE);
    /* What was published is still received; then the end. */
    assert_int_equal(inferd_channel_receive(b, 0, &x, &e), 0);
    assert_int_equal(x.seq, 0);
    inferd_channel_release(b, &x);
    assert_int_equal(inferd_channel_receive(b, -1, &x, &e), INFERD_E_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "shut down"));
    inferd_channel_close(a);
    inferd_channel_close(b);
    inferd_channel_close(pub);
    close(fd);
}

/* ---- another process, threads ---- */

#define MANY 20000

typedef struct sub_arg {
    int fd;
    uint64_t n;
    inferd_channel *ch;
    bool ok;
    uint64_t received, dropped;
} sub_arg;

static void *subscriber(void *arg)
{
    sub_arg *a = arg;
    uint64_t last = 0;
    bool first = true;
    a->ok = true;
    for (;;) {
        inferd_sample x;
        inferd_error e = {0};
        if (inferd_channel_receive(a->ch, 5000, &x, &e) != 0) {
            a->ok = false;
            break;
        }
        if ((!first && x.seq <= last) || !check(x.data, x.seq, x.len) ||
            x.len != size_of(x.seq, x.cap))
            a->ok = false;
        first = false;
        last = x.seq;
        inferd_channel_release(a->ch, &x);
        if (x.seq == a->n - 1)
            break;
    }
    inferd_channel_stats st;
    inferd_channel_stats_get(a->ch, &st);
    a->received = st.received;
    a->dropped = st.dropped;
    return NULL;
}

static void test_another_process(void **state)
{
    (void)state;
    int fd = make(1 << 20, 4, 1, INFERD_CHANNEL_BLOCK);
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t c = fork();
    if (c == 0) {
        sub_arg a = {.fd = fd, .n = 2000, .ch = open_as(fd, INFERD_CHANNEL_SUBSCRIBER)};
        char one = 1;
        if (write(go[1], &one, 1) != 1)
            _exit(3);
        subscriber(&a);
        _exit(a.ok && a.received == 2000 && a.dropped == 0 ? 0 : 1);
    }
    char one;
    assert_int_equal(read(go[0], &one, 1), 1);
    for (uint64_t n = 0; n < 2000; n++)
        publish(pub, n, 5000);
    int st;
    assert_int_equal(waitpid(c, &st, 0), c);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    inferd_channel_close(pub);
    close(go[0]);
    close(go[1]);
    close(fd);
}

static void threads(inferd_channel_policy pol)
{
    int fd = make(512, 8, 3, pol);
    inferd_channel *pub = open_as(fd, INFERD_CHANNEL_PUBLISHER);
    sub_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (sub_arg){.fd = fd, .n = MANY, .ch = open_as(fd, INFERD_CHANNEL_SUBSCRIBER)};
        assert_int_equal(pthread_create(&th[i], NULL, subscriber, &a[i]), 0);
    }
    for (uint64_t n = 0; n < MANY; n++)
        publish(pub, n, 5000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_true(a[i].ok);
        assert_int_equal(a[i].received + a[i].dropped, MANY);
        if (pol == INFERD_CHANNEL_BLOCK)
            assert_int_equal(a[i].dropped, 0);
        inferd_channel_close(a[i].ch);
    }
    inferd_channel_close(pub);
    close(fd);
}

static void test_threads_block(void **state)
{
    (void)state;
    threads(INFERD_CHANNEL_BLOCK);
}

static void test_threads_drop_oldest(void **state)
{
    (void)state;
    threads(INFERD_CHANNEL_DROP_OLDEST);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_specs_fds_and_seats),
        cmocka_unit_test(test_in_order_and_read_only),
        cmocka_unit_test(test_block_backpressure),
        cmocka_unit_test(test_drop_oldest),
        cmocka_unit_test(test_shutdown_wakes_every_wait),
        cmocka_unit_test(test_another_process),
        cmocka_unit_test(test_threads_block),
        cmocka_unit_test(test_threads_drop_oldest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
