/* Channels: one sealed memfd holding a header (sizes, the publish count,
 * two futex words, seats) and a ring of n_slots slot states, then the
 * samples' bytes (subscribers map those read-only).
 *
 * Sample seq lives in slot seq % n_slots. Each slot has two masks of
 * subscribers: pending (must still receive it) and held (received, not
 * released); it is free when both are empty. A subscriber receives by
 * setting its held bit and then clearing its pending bit; if that bit was
 * gone the sample was taken back (DROP_OLDEST) and it lets go again. After
 * taking it, it checks the slot still holds the seq it wanted (a slot can be
 * reused between the check and the take), and gives it back if not. */
#include "inferd/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"

#define MAGIC 0x314e4843444e4649ull /* "IFNDCHN1" */
#define STRIDE_ALIGN 64u

typedef struct slot_state {
    _Atomic uint64_t seq; /* the sample it holds; UINT64_MAX: none yet */
    _Atomic uint64_t len;
    _Atomic uint64_t pending, held, dropped; /* subscriber masks */
    uint64_t pad_[3];
} slot_state;

typedef struct header {
    uint64_t magic;
    uint64_t slot_bytes, stride, data_offset, total;
    uint32_t n_slots, max_subscribers, policy, pad0_;
    _Atomic uint64_t head;                /* samples published */
    _Atomic uint32_t pub_word, free_word; /* futexes: published, freed */
    _Atomic uint32_t publisher;           /* seat taken */
    _Atomic uint32_t shut;                /* inferd_channel_shutdown */
    _Atomic uint64_t subscribers;         /* seats taken (mask) */
    _Atomic uint64_t dropped_total;
    uint64_t pad2_[6];
    slot_state slots[];
} header;

struct inferd_channel {
    header *h;
    size_t h_bytes;
    unsigned char *data; /* the samples: read-only for subscribers */
    size_t data_bytes;
    inferd_channel_role role;
    uint64_t bit;    /* a subscriber's */
    uint64_t cursor; /* a subscriber's next seq; the publisher's loan */
    bool loaned;
    uint64_t received, dropped;
};

static size_t page_up(uint64_t n)
{
    const uint64_t pg = (uint64_t)sysconf(_SC_PAGESIZE);
    return (size_t)((n + pg - 1) / pg * pg);
}

static int sizes(const inferd_channel_spec *s, uint64_t *stride, uint64_t *data_off,
                 uint64_t *total, inferd_error *err)
{
    if (s->slot_bytes < 1 || s->slot_bytes > ((uint64_t)1 << 40))
        return inferd_fail_param(err, INFERD_E_RANGE, "slot_bytes",
                                 "slot_bytes: %llu, expected 1 to 2^40",
                                 (unsigned long long)s->slot_bytes);
    if (s->n_slots < 1 || s->n_slots > INFERD_CHANNEL_SLOTS_MAX)
        return inferd_fail_param(err, INFERD_E_RANGE, "n_slots", "n_slots: %u, expected 1 to %d",
                                 s->n_slots, INFERD_CHANNEL_SLOTS_MAX);
    if (s->max_subscribers < 1 || s->max_subscribers > INFERD_CHANNEL_SUBSCRIBERS_MAX)
        return inferd_fail_param(err, INFERD_E_RANGE, "max_subscribers",
                                 "max_subscribers: %u, expected 1 to %d", s->max_subscribers,
                                 INFERD_CHANNEL_SUBSCRIBERS_MAX);
    if (s->policy != INFERD_CHANNEL_BLOCK && s->policy != INFERD_CHANNEL_DROP_OLDEST)
        return inferd_fail_param(err, INFERD_E_RANGE, "policy",
                                 "policy: %d, expected block or "
                                 "drop_oldest",
                                 (int)s->policy);
    *stride = (s->slot_bytes + STRIDE_ALIGN - 1) / STRIDE_ALIGN * STRIDE_ALIGN;
    *data_off = page_up(sizeof(header) + (uint64_t)s->n_slots * sizeof(slot_state));
    if (*stride > (UINT64_MAX - *data_off) / s->n_slots)
        return inferd_fail_param(err, INFERD_E_RANGE, "slot_bytes", "the channel is too large");
    *total = *data_off + page_up(*stride * s->n_slots);
    return 0;
}

int inferd_channel_create(const inferd_channel_spec *spec, const char *name, int *out_fd,
                          inferd_error *err)
{
    *out_fd = -1;
    uint64_t stride, data_off, total;
    if (sizes(spec, &stride, &data_off, &total, err) < 0)
        return err ? err->code : INFERD_E_RANGE;
    int fd =
        memfd_create(name && name[0] ? name : "inferd-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "channel: memfd_create");
    int rc;
    if (ftruncate(fd, (off_t)total) < 0) {
        rc = inferd_fail_errno(err,
                               errno == ENOMEM || errno == ENOSPC ? INFERD_E_QUOTA : INFERD_E_IO,
                               errno, "channel: %llu bytes", (unsigned long long)total);
        goto fail;
    }
    header *h = mmap(NULL, data_off, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (h == MAP_FAILED) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "channel: mmap");
        goto fail;
    }
    h->slot_bytes = spec->slot_bytes;
    h->stride = stride;
    h->data_offset = data_off;
    h->total = total;
    h->n_slots = spec->n_slots;
    h->max_subscribers = spec->max_subscribers;
    h->policy = (uint32_t)spec->policy;
    for (uint32_t i = 0; i < spec->n_slots; i++)
        atomic_init(&h->slots[i].seq, UINT64_MAX);
    atomic_thread_fence(memory_order_release);
    h->magic = MAGIC;
    munmap(h, data_off);
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "channel: seals");
        goto fail;
    }
    *out_fd = fd;
    return 0;
fail:
    close(fd);
    return rc;
}

static int futex_wait(_Atomic uint32_t *w, uint32_t val, uint64_t deadline_ns)
{
    struct timespec ts, *tp = NULL;
    if (deadline_ns != UINT64_MAX) {
        const uint64_t now = inferd_now_ns();
        if (now >= deadline_ns)
            return ETIMEDOUT;
        const uint64_t left = deadline_ns - now;
        ts.tv_sec = (time_t)(left / 1000000000u);
        ts.tv_nsec = (long)(left % 1000000000u);
        tp = &ts;
    }
    if (syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, tp, NULL, 0) < 0 && errno == ETIMEDOUT)
        return ETIMEDOUT;
    return 0;
}

static void futex_wake(_Atomic uint32_t *w)
{
    atomic_fetch_add(w, 1);
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static uint64_t deadline_of(int64_t timeout_ms)
{
    return timeout_ms < 0 ? UINT64_MAX : inferd_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

int inferd_channel_open(int fd, inferd_channel_role role, inferd_channel **out, inferd_error *err)
{
    *out = NULL;
    if (role != INFERD_CHANNEL_PUBLISHER && role != INFERD_CHANNEL_SUBSCRIBER &&
        role != INFERD_CHANNEL_OBSERVER)
        return inferd_fail(err, INFERD_E_INVALID, "channel: role %d", (int)role);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "channel: fstat");
    const int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        return inferd_fail(err, INFERD_E_FORMAT,
                           "channel: the fd is not a sealed channel (its size is not fixed)");
    if ((uint64_t)st.st_size < sizeof(header))
        return inferd_fail(err, INFERD_E_FORMAT, "channel: %lld bytes, too small for a channel",
                           (long long)st.st_size);
    /* The sizes, from a first look at the header, checked against a spec. */
    header *peek = mmap(NULL, sizeof(header), PROT_READ, MAP_SHARED, fd, 0);
    if (peek == MAP_FAILED)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "channel: mmap");
    const inferd_channel_spec spec = {.slot_bytes = peek->slot_bytes,
                                      .n_slots = peek->n_slots,
                                      .max_subscribers = peek->max_subscribers,
                                      .policy = (inferd_channel_policy)peek->policy};
    const uint64_t magic = peek->magic, total_h = peek->total;
    munmap(peek, sizeof(header));
    uint64_t stride, data_off, total;
    if (magic != MAGIC || sizes(&spec, &stride, &data_off, &total, NULL) < 0 || total != total_h ||
        total != (uint64_t)st.st_size)
        return inferd_fail(err, INFERD_E_FORMAT, "channel: not a channel (bad header)");

    inferd_channel *ch = inferd_calloc(1, sizeof(*ch));
    if (!ch)
        return inferd_fail(err, INFERD_E_NOMEM, "channel: no memory");
    ch->role = role;
    ch->h_bytes = (size_t)data_off;
    ch->data_bytes = (size_t)(total - data_off);
    ch->h = mmap(NULL, ch->h_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int prot = role == INFERD_CHANNEL_PUBLISHER ? PROT_READ | PROT_WRITE : PROT_READ;
    ch->data = mmap(NULL, ch->data_bytes, prot, MAP_SHARED, fd, (off_t)data_off);
    if (ch->h == MAP_FAILED || ch->data == MAP_FAILED) {
        const int e = errno;
        if (ch->h != MAP_FAILED)
            munmap(ch->h, ch->h_bytes);
        if (ch->data != MAP_FAILED)
            munmap(ch->data, ch->data_bytes);
        inferd_free(ch);
        return inferd_fail_errno(err, INFERD_E_IO, e, "channel: mmap");
    }
    header *h = ch->h;
    if (role == INFERD_CHANNEL_PUBLISHER) {
        uint32_t no = 0;
        if (!atomic_compare_exchange_strong(&h->publisher, &no, 1)) {
            ch->bit = 0;
            ch->role = INFERD_CHANNEL_OBSERVER; /* nothing to give back */
            inferd_channel_close(ch);
            return inferd_fail(err, INFERD_E_BUSY, "channel: it has a publisher already");
        }
        ch->cursor = atomic_load(&h->head);
    } else if (role == INFERD_CHANNEL_SUBSCRIBER) {
        uint64_t m = atomic_load(&h->subscribers);
        for (;;) {
            int b = -1;
            for (uint32_t i = 0; i < h->max_subscribers; i++)
                if (!(m & ((uint64_t)1 << i))) {
                    b = (int)i;
                    break;
                }
            if (b < 0) {
                const uint32_t n = h->max_subscribers;
                inferd_channel_close(ch);
                return inferd_fail(err, INFERD_E_BUSY,
                                   "channel: its %u subscribers' seats are taken", n);
            }
            if (atomic_compare_exchange_weak(&h->subscribers, &m, m | ((uint64_t)1 << b))) {
                ch->bit = (uint64_t)1 << b;
                break;
            }
        }
        ch->cursor = atomic_load(&h->head);
    }
    *out = ch;
    return 0;
}

static bool slot_free(const slot_state *s)
{
    return (atomic_load(&s->pending) | atomic_load(&s->held)) == 0;
}

void inferd_channel_close(inferd_channel *ch)
{
    if (!ch)
        return;
    header *h = ch->h;
    if (ch->role == INFERD_CHANNEL_PUBLISHER) {
        atomic_store(&h->publisher, 0);
    } else if (ch->role == INFERD_CHANNEL_SUBSCRIBER && ch->bit) {
        atomic_fetch_and(&h->subscribers, ~ch->bit);
        for (uint32_t i = 0; i < h->n_slots; i++) {
            atomic_fetch_and(&h->slots[i].pending, ~ch->bit);
            atomic_fetch_and(&h->slots[i].held, ~ch->bit);
        }
        futex_wake(&h->free_word);
    }
    munmap(ch->data, ch->data_bytes);
    munmap(ch->h, ch->h_bytes);
    inferd_free(ch);
}

inferd_channel_spec inferd_channel_get_spec(const inferd_channel *ch)
{
    return (inferd_channel_spec){.slot_bytes = ch->h->slot_bytes,
                                 .n_slots = ch->h->n_slots,
                                 .max_subscribers = ch->h->max_subscribers,
                                 .policy = (inferd_channel_policy)ch->h->policy};
}

int inferd_channel_loan(inferd_channel *ch, int64_t timeout_ms, inferd_sample *out,
                        inferd_error *err)
{
    if (ch->role != INFERD_CHANNEL_PUBLISHER || ch->loaned)
        return inferd_fail(err, INFERD_E_INVALID,
                           ch->loaned ? "channel: a loan is out already"
                                      : "channel: only its publisher loans");
    header *h = ch->h;
    const uint64_t seq = atomic_load(&h->head);
    const uint32_t i = (uint32_t)(seq % h->n_slots);
    slot_state *s = &h->slots[i];
    const uint64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        const uint32_t w = atomic_load(&h->free_word);
        if (atomic_load(&h->shut))
            return inferd_fail(err, INFERD_E_UNAVAILABLE, "channel: it is shut down");
        if (h->policy == INFERD_CHANNEL_DROP_OLDEST && atomic_load(&s->pending) != 0) {
            /* Take it back from those who have not received it. */
            const uint64_t p = atomic_load(&s->pending);
            atomic_fetch_or(&s->dropped, p);
            const uint64_t gone = atomic_exchange(&s->pending, 0);
            atomic_fetch_add(&h->dropped_total, (uint64_t)__builtin_popcountll(gone));
        }
        if (slot_free(s))
            break;
        if (futex_wait(&h->free_word, w, deadline) == ETIMEDOUT && !slot_free(s))
            return inferd_fail(err, INFERD_E_TIMEOUT,
                               "channel: no free slot in %lld ms (every one of the %u is in "
                               "flight)",
                               (long long)timeout_ms, h->n_slots);
    }
    ch->loaned = true;
    ch->cursor = seq;
    *out = (inferd_sample){
        .data = ch->data + (size_t)i * h->stride, .cap = h->slot_bytes, .seq = seq, .slot = i};
    return 0;
}

int inferd_channel_publish(inferd_channel *ch, inferd_sample *smp, uint64_t len, inferd_error *err)
{
    header *h = ch->h;
    if (ch->role != INFERD_CHANNEL_PUBLISHER || !ch->loaned || smp->seq != ch->cursor)
        return inferd_fail(err, INFERD_E_INVALID, "channel: publish what was loaned");
    if (len > h->slot_bytes)
        return inferd_fail_param(err, INFERD_E_INVALID, "len",
                                 "channel: %llu bytes, the slot holds %llu",
                                 (unsigned long long)len, (unsigned long long)h->slot_bytes);
    slot_state *s = &h->slots[smp->slot];
    atomic_store(&s->len, len);
    atomic_store(&s->seq, smp->seq);
    atomic_store(&s->dropped, 0);
    atomic_store(&s->pending, atomic_load(&h->subscribers));
    atomic_store(&h->head, smp->seq + 1);
    ch->loaned = false;
    futex_wake(&h->pub_word);
    return 0;
}

/* Let go of slot @p s (held bit dropped); wake the publisher if it is free. */
static void let_go(header *h, slot_state *s, uint64_t bit)
{
    atomic_fetch_and(&s->held, ~bit);
    if (slot_free(s))
        futex_wake(&h->free_word);
}

int inferd_channel_receive(inferd_channel *ch, int64_t timeout_ms, inferd_sample *out,
                           inferd_error *err)
{
    if (ch->role != INFERD_CHANNEL_SUBSCRIBER || !ch->bit)
        return inferd_fail(err, INFERD_E_INVALID, "channel: only a subscriber receives");
    header *h = ch->h;
    const uint64_t b = ch->bit, deadline = deadline_of(timeout_ms);
    for (;;) {
        const uint64_t c = ch->cursor;
        const uint32_t w = atomic_load(&h->pub_word);
        if (c >= atomic_load(&h->head)) {
            if (atomic_load(&h->shut))
                return inferd_fail(err, INFERD_E_UNAVAILABLE, "channel: it is shut down");
            if (futex_wait(&h->pub_word, w, deadline) == ETIMEDOUT && c >= atomic_load(&h->head))
                return inferd_fail(err, INFERD_E_TIMEOUT, "channel: no sample in %lld ms",
                                   (long long)timeout_ms);
            continue;
        }
        const uint32_t i = (uint32_t)(c % h->n_slots);
        slot_state *s = &h->slots[i];
        if (atomic_load(&s->seq) != c) { /* reused since: taken back from us */
            ch->cursor++;
            ch->dropped++;
            continue;
        }
        atomic_fetch_or(&s->held, b);
        const uint64_t had = atomic_fetch_and(&s->pending, ~b);
        if (!(had & b)) { /* not ours: taken back, or published before we came */
            /* dropped is read before seq: publish writes seq before it
             * clears dropped, so a seq still c means d was c's. */
            const uint64_t d = atomic_load(&s->dropped);
            const bool dropped = atomic_load(&s->seq) != c || (d & b);
            let_go(h, s, b);
            ch->cursor++;
            ch->dropped += dropped;
            continue;
        }
        if (atomic_load(&s->seq) != c) { /* a later sample's: give its bit back */
            atomic_fetch_or(&s->pending, b);
            let_go(h, s, b);
            ch->cursor++;
            ch->dropped++;
            continue;
        }
        ch->cursor++;
        ch->received++;
        *out = (inferd_sample){.data = ch->data + (size_t)i * h->stride,
                               .cap = h->slot_bytes,
                               .len = atomic_load(&s->len),
                               .seq = c,
                               .slot = i};
        return 0;
    }
}

void inferd_channel_release(inferd_channel *ch, inferd_sample *smp)
{
    if (ch->role != INFERD_CHANNEL_SUBSCRIBER || smp->slot >= ch->h->n_slots)
        return;
    let_go(ch->h, &ch->h->slots[smp->slot], ch->bit);
    smp->data = NULL;
}

void inferd_channel_stats_get(const inferd_channel *ch, inferd_channel_stats *out)
{
    out->published = atomic_load(&ch->h->head);
    out->received = ch->received;
    out->dropped = ch->dropped;
}

void inferd_channel_shutdown(inferd_channel *ch)
{
    atomic_store(&ch->h->shut, 1);
    futex_wake(&ch->h->pub_word);
    futex_wake(&ch->h->free_word);
}
