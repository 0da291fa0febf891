/* Shared-memory regions: named windows onto POSIX shared-memory objects,
 * through which clients on the same machine hand a worker their tensors
 * without copying them (the KServe v2 / Triton system shared-memory
 * extension).
 *
 * Two kinds:
 * - registered: the client made the object (shm_open) and registers
 *   [offset, offset + byte_size) of it under a name, as Triton's clients do;
 * - created: the worker makes an object of byte_size for the client
 *   (shm_open with a random name, O_EXCL, mode 0600) and returns its key;
 *   these count against a per-session quota (bytes and regions) and a
 *   global cap, and their objects are unlinked when they go.
 *
 * Every offset and size is checked against the object at registration,
 * and the object's size again at each use. A region is mapped once, shared
 * and read-write when the object allows it (read-only otherwise), and
 * guarded against SIGBUS (inferd_mapguard): a client that truncates its
 * object during a request makes that request fail (inferd_regions_check)
 * and the region unusable, never the worker crash. A client unlinking or
 * unmapping its own object changes nothing for the worker's mapping.
 *
 * Views: a request reads and writes a region through views, storages
 * (inferd_storage, kind INFERD_STORAGE_REGION) that keep the region's
 * mapping alive: unregistering a region in use removes its name at once
 * and unmaps it when the last view goes.
 *
 * Regions unused for ttl_ms (no view alive, and none since) are removed by
 * inferd_regions_sweep.
 *
 * Threads: any; one mutex per table. */
#ifndef INFERD_REGION_H
#define INFERD_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"
#include "inferd/tensor.h"

#define INFERD_REGION_NAME_MAX 128    /* bytes of a name, with its NUL */
#define INFERD_REGION_KEY_MAX 256     /* bytes of a key, with its NUL */
#define INFERD_REGION_SESSION_MAX 128 /* bytes of a session id, with its NUL */

typedef struct inferd_regions inferd_regions;

typedef struct inferd_regions_opts {
    uint32_t max_regions;     /* regions of both kinds at once; default 1024 */
    uint64_t max_bytes;       /* bytes of all created regions; default 1 GiB */
    uint32_t session_regions; /* created regions per session; default 64 */
    uint64_t session_bytes;   /* created bytes per session; default 256 MiB */
    uint64_t ttl_ms;          /* unused this long: removed by the sweep; 0: never.
                                 Default 600000 (10 min) */
    const char *key_prefix;   /* created objects' names: "/<prefix>-<random>";
                                 default "inferd" */
} inferd_regions_opts;

inferd_regions_opts inferd_regions_opts_default(void);

typedef struct inferd_region_info {
    char name[INFERD_REGION_NAME_MAX];
    char key[INFERD_REGION_KEY_MAX];
    uint64_t offset, byte_size; /* the window onto the object */
    bool created;               /* made by the worker (else registered) */
    bool writable;              /* mapped read-write */
    bool broken;                /* its object shrank under a request */
    char session[INFERD_REGION_SESSION_MAX];
    uint32_t views;   /* views alive (requests using it) */
    uint64_t idle_ms; /* 0 while a view is alive; else since the last view
                         went (or since it was registered) */
} inferd_region_info;

int inferd_regions_create(const inferd_regions_opts *o, inferd_regions **out_r, inferd_error *err);
/** Unmap every region (views still alive keep theirs until they go) and
 * unlink the created objects. NULL is fine. */
void inferd_regions_destroy(inferd_regions *r);

/**
 * Register [offset, offset + byte_size) of the client's shared-memory
 * object @p key (a shm_open name, "/name") as @p name for @p session (may
 * be NULL or "").
 * @return 0; INFERD_E_EXISTS (the name is taken), INFERD_E_NOT_FOUND (no
 * such object), INFERD_E_RANGE (the window is not inside the object, or
 * byte_size is 0), INFERD_E_INVALID (a bad name or key; the object is not
 * a regular shared-memory object), INFERD_E_QUOTA (max_regions),
 * INFERD_E_IO (cannot open or map it: the message says why).
 */
int inferd_regions_register(inferd_regions *r, const char *name, const char *key, uint64_t offset,
                            uint64_t byte_size, const char *session, inferd_error *err);

/**
 * Create a region of @p byte_size bytes named @p name for @p session: a new
 * object (zeroed) that only this user can open, registered whole. Its key
 * is copied to @p out_key.
 * @return 0; INFERD_E_EXISTS, INFERD_E_RANGE (byte_size 0), INFERD_E_QUOTA
 * (the session's or the global quota: the message says which), INFERD_E_IO
 * (shared memory unavailable or full: ENOSPC, no /dev/shm; the message says
 * which), INFERD_E_INVALID, INFERD_E_NOMEM.
 */
int inferd_regions_create_region(inferd_regions *r, const char *name, uint64_t byte_size,
                                 const char *session, char out_key[INFERD_REGION_KEY_MAX],
                                 inferd_error *err);

/** Unregister @p name (NULL: every region). INFERD_E_NOT_FOUND when there is
 * no region @p name. */
int inferd_regions_unregister(inferd_regions *r, const char *name, inferd_error *err);

/** Regions now: @p name's alone (INFERD_E_NOT_FOUND if none), or all (NULL)
 * sorted by name, up to @p cap in @p out; *n_out gets how many there are. */
int inferd_regions_status(inferd_regions *r, const char *name, inferd_region_info *out, size_t cap,
                          size_t *n_out, inferd_error *err);

/**
 * A view of [offset, offset + size) of region @p name (relative to the
 * region's window), for reading or (@p writable) writing: a storage of
 * kind INFERD_STORAGE_REGION over that memory, to unref when done.
 * @return 0; INFERD_E_NOT_FOUND (no such region), INFERD_E_RANGE (outside
 * the region), INFERD_E_INVALID (writable on a read-only region),
 * INFERD_E_IO (the object shrank, or the region is broken), INFERD_E_NOMEM.
 */
int inferd_regions_view(inferd_regions *r, const char *name, uint64_t offset, uint64_t size,
                        bool writable, inferd_storage **out_s, inferd_error *err);

/**
 * After a request has read or written through view @p s: 0 if its region
 * held, INFERD_E_IO (the object was truncated under the request: what was
 * read is not to be trusted, what was written is lost) otherwise.
 * INFERD_E_INVALID when @p s is not a region view.
 */
int inferd_regions_check(const inferd_storage *s, inferd_error *err);

/** Do views @p a and @p b share any byte of one object? (An output that
 * overlaps an input is refused.) false if either is not a region view. */
bool inferd_regions_overlap(const inferd_storage *a, const inferd_storage *b);

/** Remove regions idle (idle_ms above) for ttl_ms or more (created
 * ones' objects unlinked); returns how many went. */
size_t inferd_regions_sweep(inferd_regions *r);

/** Regions and created bytes now, and removals by the sweep so far. */
void inferd_regions_counts(inferd_regions *r, uint32_t *n_regions, uint64_t *created_bytes,
                           uint64_t *n_expired);

/* ---- what this machine offers ---- */

typedef struct inferd_shm_caps {
    bool shm;                 /* shm_open works (a test object made and unlinked) */
    bool memfd;               /* memfd_create works, with seals */
    uint64_t shm_total_bytes; /* of the file system at /dev/shm (0 if none) */
    uint64_t shm_free_bytes;
} inferd_shm_caps;

/** Detect shared-memory support (statvfs of /dev/shm, a test object and a
 * sealed memfd: a probe, once at start). */
void inferd_shm_caps_detect(inferd_shm_caps *out);
/** Refresh @p caps' sizes of /dev/shm (statvfs: cheap, for each report). */
void inferd_shm_caps_space(inferd_shm_caps *caps);

#endif
