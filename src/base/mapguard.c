/* SIGBUS guard for file mappings (see mapguard.h). Slots are claimed and
 * released under a mutex; the handler only reads them through atomics and
 * writes a slot's broken flag. A slot is published by storing its length
 * and then its start (release); it is retired by storing start 0 first.
 * The handler reads start, then len, then start again, and trusts the
 * pair only if start did not change in between. */
#include "inferd/mapguard.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

typedef struct guard_slot {
    _Atomic uintptr_t start; /* 0: free */
    _Atomic size_t len;      /* bytes */
    atomic_bool broken;      /* the handler mapped zeros over it */
    atomic_bool writable;    /* the zeros are mapped writable */
} guard_slot;

static guard_slot slots[INFERD_MAPGUARD_MAX];
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER; /* add / remove */
/* The disposition found when the handler was installed (slots_mu). */
static struct sigaction previous;

/* Hand a fault that is not ours to the disposition that was there before. */
static void chain(int sig, siginfo_t *si, void *uctx)
{
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
        previous.sa_sigaction(sig, si, uctx);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    /* Default (or ignored, which cannot be honoured for a fault): die of
     * SIGBUS as if no handler had been installed. The signal is blocked
     * while this handler runs, so the raise is delivered on return, and a
     * faulting instruction would fault again anyway. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

/* Async-signal-safe: atomics, mmap, sigaction and raise only. */
static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    const uintptr_t a = (uintptr_t)si->si_addr;
    for (size_t i = 0; i < INFERD_MAPGUARD_MAX; i++) {
        const uintptr_t start = atomic_load_explicit(&slots[i].start, memory_order_acquire);
        if (start == 0 || a < start)
            continue;
        const size_t len = atomic_load_explicit(&slots[i].len, memory_order_acquire);
        if (atomic_load_explicit(&slots[i].start, memory_order_acquire) != start ||
            a - start >= len)
            continue;
        /* Zero pages over the whole mapping: the faulting read, and every
         * later one, reads zeros instead of faulting. */
        const int prot = atomic_load_explicit(&slots[i].writable, memory_order_relaxed)
                             ? PROT_READ | PROT_WRITE
                             : PROT_READ;
        void *p = mmap((void *)start, len, prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            break;
        atomic_store_explicit(&slots[i].broken, true, memory_order_release);
        return;
    }
    chain(sig, si, uctx);
}

/* Install the handler unless it is in place. Someone may have replaced it
 * since (a test framework, a library): it is installed again over theirs,
 * which then becomes the one faults outside our mappings go to.
 * Caller holds slots_mu. */
static void install_locked(void)
{
    struct sigaction sa;
    if (sigaction(SIGBUS, NULL, &sa) == 0 && (sa.sa_flags & SA_SIGINFO) &&
        sa.sa_sigaction == on_sigbus)
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous);
}

int inferd_mapguard_add(const void *addr, size_t len)
{
    return inferd_mapguard_add_rw(addr, len, false);
}

int inferd_mapguard_add_rw(const void *addr, size_t len, bool writable)
{
    if (!addr || len == 0)
        return -1;
    int found = -1;
    pthread_mutex_lock(&slots_mu);
    install_locked();
    for (int i = 0; i < INFERD_MAPGUARD_MAX; i++) {
        if (atomic_load_explicit(&slots[i].start, memory_order_relaxed) == 0) {
            atomic_store_explicit(&slots[i].broken, false, memory_order_relaxed);
            atomic_store_explicit(&slots[i].writable, writable, memory_order_relaxed);
            atomic_store_explicit(&slots[i].len, len, memory_order_release);
            atomic_store_explicit(&slots[i].start, (uintptr_t)addr, memory_order_release);
            found = i;
            break;
        }
    }
    pthread_mutex_unlock(&slots_mu);
    return found;
}

void inferd_mapguard_remove(int slot)
{
    if (slot < 0 || slot >= INFERD_MAPGUARD_MAX)
        return;
    pthread_mutex_lock(&slots_mu);
    atomic_store_explicit(&slots[slot].start, 0, memory_order_release);
    atomic_store_explicit(&slots[slot].len, 0, memory_order_release);
    pthread_mutex_unlock(&slots_mu);
}

bool inferd_mapguard_broken(int slot)
{
    if (slot < 0 || slot >= INFERD_MAPGUARD_MAX)
        return false;
    return atomic_load_explicit(&slots[slot].broken, memory_order_acquire);
}
