/* inferd channel: samples published by one process and received by others,
 * through one sealed memfd, without copies (the pipelines' channels,
 * docs/pipeline.md).
 *
 * The pipeline's manager makes a channel (inferd_channel_create: a memfd
 * sealed against shrinking and growing) and passes its fd to the nodes
 * (SCM_RIGHTS over their control sockets). Nothing is named in /dev/shm,
 * so nothing is left there whatever happens to the processes.
 *
 * One publisher and up to 64 subscribers per channel, each a seat taken
 * with inferd_channel_open. The publisher loans a slot (up to slot_bytes),
 * writes the sample in place and publishes it; every subscriber open at
 * that moment receives a read-only view of the same memory and releases
 * it. At most n_slots samples are in flight (published and not released by
 * every subscriber); then the publisher's loan waits (policy BLOCK, with a
 * timeout) or takes the oldest sample back from the subscribers that have
 * not received it yet (DROP_OLDEST; a sample a subscriber holds is never
 * taken: the loan waits for its release). Wake-ups are futexes on the
 * shared header: no polling, no daemon.
 *
 * Threads: one inferd_channel per thread at a time, except that
 * inferd_channel_release and inferd_channel_shutdown may be called from
 * another thread while one waits in a receive (a node that hands samples
 * to a worker thread). A process that dies
 * holding a seat keeps it: the manager ends the whole pipeline then. */
#ifndef INFERD_CHANNEL_H
#define INFERD_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"

#define INFERD_CHANNEL_SUBSCRIBERS_MAX 64
#define INFERD_CHANNEL_SLOTS_MAX 1024

typedef enum inferd_channel_policy {
    INFERD_CHANNEL_BLOCK = 0,       /* the publisher waits for a free slot */
    INFERD_CHANNEL_DROP_OLDEST = 1, /* unreceived samples make room */
} inferd_channel_policy;

typedef struct inferd_channel_spec {
    uint64_t slot_bytes;      /* the largest sample, >= 1 */
    uint32_t n_slots;         /* samples in flight, 1..INFERD_CHANNEL_SLOTS_MAX */
    uint32_t max_subscribers; /* 1..INFERD_CHANNEL_SUBSCRIBERS_MAX */
    inferd_channel_policy policy;
} inferd_channel_spec;

typedef enum inferd_channel_role {
    INFERD_CHANNEL_PUBLISHER = 0,
    INFERD_CHANNEL_SUBSCRIBER = 1,
    INFERD_CHANNEL_OBSERVER = 2, /* no seat: stats and shutdown only (a manager) */
} inferd_channel_role;

typedef struct inferd_channel inferd_channel;

/* A sample: loaned (data writable, cap bytes) or received (data read-only,
 * len bytes, seq its number from 0). */
typedef struct inferd_sample {
    void *data;
    uint64_t cap, len, seq;
    uint32_t slot;
} inferd_sample;

typedef struct inferd_channel_stats {
    uint64_t published; /* samples published so far (the channel's) */
    uint64_t received;  /* by this subscriber */
    uint64_t dropped;   /* samples this subscriber lost to DROP_OLDEST */
} inferd_channel_stats;

/**
 * A new channel of @p spec (@p name shows in /proc/PID/fd, for debugging).
 * @return 0 and *out_fd (close-on-exec; the caller owns it);
 * INFERD_E_RANGE (a field of @p spec), INFERD_E_IO (memfd, its size or
 * seals), INFERD_E_QUOTA (no memory for it).
 */
int inferd_channel_create(const inferd_channel_spec *spec, const char *name, int *out_fd,
                          inferd_error *err);

/**
 * Map the channel of @p fd (not taken: the caller still closes it) and take
 * a seat as @p role. Subscribers map the samples read-only and receive those
 * published from now on.
 * @return 0 and *out; INFERD_E_FORMAT (not a channel, or its seals do not
 * fix its size), INFERD_E_BUSY (the publisher's seat, or every subscriber's,
 * is taken), INFERD_E_IO, INFERD_E_NOMEM.
 */
int inferd_channel_open(int fd, inferd_channel_role role, inferd_channel **out, inferd_error *err);

/** Give the seat back (a subscriber's samples are released and what it has
 * not received is no longer kept for it) and unmap. NULL is fine. */
void inferd_channel_close(inferd_channel *ch);

/** The channel's spec, as made. */
inferd_channel_spec inferd_channel_get_spec(const inferd_channel *ch);

/**
 * Publisher: loan the next slot, waiting up to @p timeout_ms (< 0: no
 * limit) while every slot is in flight. One loan at a time.
 * @return 0 and *out (data, cap = slot_bytes); INFERD_E_TIMEOUT,
 * INFERD_E_UNAVAILABLE (shut down), INFERD_E_INVALID (not the publisher, or
 * a loan is out).
 */
int inferd_channel_loan(inferd_channel *ch, int64_t timeout_ms, inferd_sample *out,
                        inferd_error *err);

/** Publisher: publish the loaned @p s with its first @p len bytes.
 * @return 0; INFERD_E_INVALID (not the loan, @p len over cap). */
int inferd_channel_publish(inferd_channel *ch, inferd_sample *s, uint64_t len, inferd_error *err);

/**
 * Subscriber: the next sample, waiting up to @p timeout_ms (< 0: no limit).
 * Release it once done; several may be held at once (each keeps its slot).
 * @return 0 and *out; INFERD_E_TIMEOUT; INFERD_E_UNAVAILABLE (shut down and
 * nothing left to receive); INFERD_E_INVALID (not a subscriber).
 */
int inferd_channel_receive(inferd_channel *ch, int64_t timeout_ms, inferd_sample *out,
                           inferd_error *err);

/** Subscriber: release a received sample (its memory goes back). */
void inferd_channel_release(inferd_channel *ch, inferd_sample *s);

void inferd_channel_stats_get(const inferd_channel *ch, inferd_channel_stats *out);

/** Shut the channel down for every process: waiting and later loans end
 * with INFERD_E_UNAVAILABLE, and receives once the published samples are
 * taken (the pipeline's manager does this when the pipeline stops or
 * fails, so that no node or caller stays blocked). Any seat may do it. */
void inferd_channel_shutdown(inferd_channel *ch);

#endif
