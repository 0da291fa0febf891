/* A guard for file mappings that may shrink under us. A model's GGUF is
 * mapped, and an operator may truncate or overwrite the file while it is
 * loaded: reading a page past the new end of the file raises SIGBUS, which
 * would kill the process without a word. With the mapping registered here,
 * the SIGBUS handler maps anonymous zero pages over the whole mapping
 * instead (as Wayland compositors do for client buffers), sets the
 * mapping's broken flag and returns: the faulting read runs again and reads
 * zeros, and the mapping's owner, seeing inferd_mapguard_broken, stops
 * trusting its contents. A SIGBUS outside every registered mapping goes to
 * the disposition that was there before the guard was installed (by
 * default the process dies of SIGBUS, as it would have).
 *
 * Threads: any. The handler reads the registry without locks: a fixed
 * array of slots written through atomics. */
#ifndef INFERD_MAPGUARD_H
#define INFERD_MAPGUARD_H

#include <stdbool.h>
#include <stddef.h>

/** Mappings guarded at once (model files and shared-memory regions). */
#define INFERD_MAPGUARD_MAX 4096

/**
 * Guard the read-only mapping [@p addr, @p addr + @p len), installing the
 * SIGBUS handler (sigaction) if it is not in place: on first use, or again
 * if someone replaced it since (theirs then takes the faults that are not
 * ours).
 * @param addr  page-aligned start of a mapping the caller owns; borrowed.
 * @return a slot >= 0, or -1 when @p len is 0 or all INFERD_MAPGUARD_MAX
 * slots are taken (the mapping is then unguarded). Thread: any.
 */
int inferd_mapguard_add(const void *addr, size_t len);

/** The same for a mapping that is written through (a shared-memory
 * region's outputs): the zero pages that replace it are writable, so a
 * faulting write completes (into memory nobody else sees). */
int inferd_mapguard_add_rw(const void *addr, size_t len, bool writable);

/** Forget @p slot; call it before unmapping. Accepts -1. Thread: any. */
void inferd_mapguard_remove(int slot);

/** Did a read of @p slot's mapping fault (its contents are now zeros)?
 * false for -1. Thread: any (an acquire load of the flag). */
bool inferd_mapguard_broken(int slot);

#endif
