/* Shared-memory regions (see include/inferd/region.h).
 *
 * A region is refcounted: the table holds one reference while the region
 * has its name, each view one more. The last reference unmaps it, closes
 * its object and, for a created region, unlinks the object. */
#include "inferd/region.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/mapguard.h"
#include "tensor_internal.h"

typedef struct region {
    struct region *next; /* the table's list, while named */
    atomic_uint refs;
    char name[INFERD_REGION_NAME_MAX];
    char key[INFERD_REGION_KEY_MAX];
    char session[INFERD_REGION_SESSION_MAX];
    uint64_t offset, byte_size; /* the window onto the object */
    bool created, writable;
    int fd; /* the object, kept open to check its size at each use */
    dev_t dev;
    ino_t ino;
    char *map;      /* the mapping: from the page holding offset */
    size_t map_len; /* bytes mapped */
    size_t skip;    /* from map to the window's start */
    int guard;      /* mapguard slot */
    atomic_uint views;
    _Atomic uint64_t last_used_ns;
} region;

/* A view: a window onto a region for one request. */
typedef struct view {
    region *rg;
    uint64_t off, size; /* within the region's window */
} view;

struct inferd_regions {
    inferd_regions_opts o;
    char prefix[64];
    pthread_mutex_t mu; /* guards the fields below */
    region *list;
    uint32_t n;
    uint64_t created_bytes;
    uint64_t n_expired;
};

inferd_regions_opts inferd_regions_opts_default(void)
{
    inferd_regions_opts o;
    memset(&o, 0, sizeof(o));
    o.max_regions = 1024;
    o.max_bytes = (uint64_t)1 << 30;
    o.session_regions = 64;
    o.session_bytes = (uint64_t)256 << 20;
    o.ttl_ms = 600000;
    o.key_prefix = "inferd";
    return o;
}

int inferd_regions_create(const inferd_regions_opts *o, inferd_regions **out_r, inferd_error *err)
{
    *out_r = NULL;
    const char *prefix = o->key_prefix && *o->key_prefix ? o->key_prefix : "inferd";
    if (strlen(prefix) > 32 || strchr(prefix, '/'))
        return inferd_fail(err, INFERD_E_INVALID, "shm key prefix '%s': at most 32 bytes, no '/'",
                           prefix);
    inferd_regions *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the region table");
    r->o = *o;
    snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
    r->o.key_prefix = r->prefix;
    pthread_mutex_init(&r->mu, NULL);
    *out_r = r;
    return 0;
}

static void region_unref(region *rg)
{
    if (atomic_fetch_sub_explicit(&rg->refs, 1, memory_order_acq_rel) != 1)
        return;
    inferd_mapguard_remove(rg->guard);
    if (rg->map)
        munmap(rg->map, rg->map_len);
    if (rg->fd >= 0)
        close(rg->fd);
    if (rg->created)
        shm_unlink(rg->key);
    inferd_free(rg);
}

void inferd_regions_destroy(inferd_regions *r)
{
    if (!r)
        return;
    while (r->list) {
        region *rg = r->list;
        r->list = rg->next;
        region_unref(rg);
    }
    pthread_mutex_destroy(&r->mu);
    inferd_free(r);
}

/* ---- names and keys ---- */

static int check_name(const char *name, inferd_error *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= INFERD_REGION_NAME_MAX)
        return inferd_fail_param(err, INFERD_E_INVALID, "name", "a region name has 1 to %d bytes",
                                 INFERD_REGION_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f || name[i] == '/')
            return inferd_fail_param(err, INFERD_E_INVALID, "name",
                                     "a region name has no '/' or control characters");
    return 0;
}

static int check_key(const char *key, inferd_error *err)
{
    size_t n = key ? strlen(key) : 0;
    if (n < 2 || n >= INFERD_REGION_KEY_MAX || key[0] != '/' || strchr(key + 1, '/'))
        return inferd_fail_param(err, INFERD_E_INVALID, "key",
                                 "a shared-memory key is '/' and a name of 1 to %d bytes "
                                 "without '/' (as shm_open takes it)",
                                 INFERD_REGION_KEY_MAX - 2);
    return 0;
}

static region *find_locked(inferd_regions *r, const char *name)
{
    for (region *rg = r->list; rg; rg = rg->next)
        if (strcmp(rg->name, name) == 0)
            return rg;
    return NULL;
}

/* May a region named @p name be added? */
static int room_locked(inferd_regions *r, const char *name, inferd_error *err)
{
    if (find_locked(r, name))
        return inferd_fail_param(err, INFERD_E_EXISTS, "name", "region '%s' is already registered",
                                 name);
    if (r->n >= r->o.max_regions)
        return inferd_fail(err, INFERD_E_QUOTA, "%u regions are registered, the most allowed",
                           r->o.max_regions);
    return 0;
}

static int check_session(const char *session, inferd_error *err)
{
    if (session && strlen(session) >= INFERD_REGION_SESSION_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "a session id has at most %d bytes",
                           INFERD_REGION_SESSION_MAX - 1);
    return 0;
}

/* ---- mapping ---- */

/* Map [offset, offset + byte_size) of rg's object (rg->fd open). */
static int map_window(region *rg, inferd_error *err)
{
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    const uint64_t start = rg->offset & ~(page - 1);
    rg->skip = (size_t)(rg->offset - start);
    if (rg->byte_size > SIZE_MAX - rg->skip)
        return inferd_fail(err, INFERD_E_RANGE, "region of %llu bytes: too large to map",
                           (unsigned long long)rg->byte_size);
    rg->map_len = rg->skip + (size_t)rg->byte_size;
    const int prot = rg->writable ? PROT_READ | PROT_WRITE : PROT_READ;
    void *p = mmap(NULL, rg->map_len, prot, MAP_SHARED, rg->fd, (off_t)start);
    if (p == MAP_FAILED)
        return inferd_fail(err, INFERD_E_IO, "cannot map %s: %s", rg->key, strerror(errno));
    rg->map = p;
    rg->guard = inferd_mapguard_add_rw(p, rg->map_len, rg->writable);
    if (rg->guard < 0) /* unguarded, a truncation would kill the worker */
        return inferd_fail(err, INFERD_E_QUOTA,
                           "too many mappings guarded at once (%d): unregister regions",
                           INFERD_MAPGUARD_MAX);
    return 0;
}

static region *region_new(const char *name, const char *key, const char *session)
{
    region *rg = inferd_calloc(1, sizeof(*rg));
    if (!rg)
        return NULL;
    atomic_init(&rg->refs, 1);
    atomic_init(&rg->views, 0);
    atomic_init(&rg->last_used_ns, inferd_now_ns());
    snprintf(rg->name, sizeof(rg->name), "%s", name);
    snprintf(rg->key, sizeof(rg->key), "%s", key);
    snprintf(rg->session, sizeof(rg->session), "%s", session ? session : "");
    rg->fd = -1;
    rg->guard = -1;
    return rg;
}

static void link_locked(inferd_regions *r, region *rg)
{
    rg->next = r->list;
    r->list = rg;
    r->n++;
    if (rg->created)
        r->created_bytes += rg->byte_size;
}

static void unlink_locked(inferd_regions *r, region *rg)
{
    region **at = &r->list;
    while (*at != rg)
        at = &(*at)->next;
    *at = rg->next;
    r->n--;
    if (rg->created)
        r->created_bytes -= rg->byte_size;
}

/* Map rg (its object open, of @p st) and add it to the table. */
static int add_locked(inferd_regions *r, region *rg, const struct stat *st, inferd_error *err)
{
    rg->dev = st->st_dev;
    rg->ino = st->st_ino;
    int rc = map_window(rg, err);
    if (rc == 0)
        link_locked(r, rg);
    return rc;
}

int inferd_regions_register(inferd_regions *r, const char *name, const char *key, uint64_t offset,
                            uint64_t byte_size, const char *session, inferd_error *err)
{
    int rc;
    if ((rc = check_name(name, err)) < 0 || (rc = check_key(key, err)) < 0 ||
        (rc = check_session(session, err)) < 0)
        return rc;
    if (byte_size == 0)
        return inferd_fail_param(err, INFERD_E_RANGE, "byte_size", "byte_size is 0");
    region *rg = region_new(name, key, session);
    if (!rg)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a region");
    rg->offset = offset;
    rg->byte_size = byte_size;
    pthread_mutex_lock(&r->mu);
    struct stat st;
    if ((rc = room_locked(r, name, err)) < 0)
        goto fail;
    rg->writable = true;
    rg->fd = shm_open(key, O_RDWR | O_CLOEXEC, 0);
    if (rg->fd < 0 && errno == EACCES) {
        rg->writable = false;
        rg->fd = shm_open(key, O_RDONLY | O_CLOEXEC, 0);
    }
    if (rg->fd < 0) {
        const int e = errno;
        if (e == ENOENT) {
            rc = inferd_fail_param(err, INFERD_E_NOT_FOUND, "key", "no shared-memory object '%s'",
                                   key);
        } else {
            rc = inferd_fail_errno(err, INFERD_E_IO, e, "cannot open '%s': %s", key, strerror(e));
            if (err)
                snprintf(err->param, sizeof(err->param), "key");
        }
        goto fail;
    }
    if (fstat(rg->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = inferd_fail_param(err, INFERD_E_INVALID, "key", "'%s' is not a shared-memory object",
                               key);
        goto fail;
    }
    if (offset > (uint64_t)st.st_size || byte_size > (uint64_t)st.st_size - offset) {
        rc = inferd_fail_param(err, INFERD_E_RANGE, "byte_size",
                               "offset %llu + byte_size %llu is beyond the %llu bytes of '%s'",
                               (unsigned long long)offset, (unsigned long long)byte_size,
                               (unsigned long long)st.st_size, key);
        goto fail;
    }
    if ((rc = add_locked(r, rg, &st, err)) < 0)
        goto fail;
    pthread_mutex_unlock(&r->mu);
    return 0;
fail:
    pthread_mutex_unlock(&r->mu);
    region_unref(rg);
    return rc;
}

/* Bytes and regions @p session has created. */
static void session_use_locked(inferd_regions *r, const char *session, uint64_t *bytes, uint32_t *n)
{
    *bytes = 0;
    *n = 0;
    for (region *rg = r->list; rg; rg = rg->next)
        if (rg->created && strcmp(rg->session, session) == 0) {
            *bytes += rg->byte_size;
            (*n)++;
        }
}

int inferd_regions_create_region(inferd_regions *r, const char *name, uint64_t byte_size,
                                 const char *session, char out_key[INFERD_REGION_KEY_MAX],
                                 inferd_error *err)
{
    int rc;
    if ((rc = check_name(name, err)) < 0 || (rc = check_session(session, err)) < 0)
        return rc;
    if (byte_size == 0)
        return inferd_fail_param(err, INFERD_E_RANGE, "byte_size", "byte_size is 0");
    if (!session)
        session = "";
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return inferd_fail(err, INFERD_E_IO, "no random bytes for a region key: %s",
                           strerror(errno));
    char key[INFERD_REGION_KEY_MAX];
    snprintf(key, sizeof(key), "/%s-%02x%02x%02x%02x%02x%02x%02x%02x", r->prefix, rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    region *rg = region_new(name, key, session);
    if (!rg)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a region");
    rg->byte_size = byte_size;
    rg->writable = true;
    pthread_mutex_lock(&r->mu);
    uint64_t used_bytes;
    uint32_t used_n;
    session_use_locked(r, session, &used_bytes, &used_n);
    struct stat st;
    if ((rc = room_locked(r, name, err)) < 0)
        goto fail;
    if (used_n >= r->o.session_regions || byte_size > r->o.session_bytes - used_bytes ||
        used_bytes > r->o.session_bytes) {
        rc = inferd_fail_param(
            err, INFERD_E_QUOTA, "byte_size",
            "the session's quota: %u regions and %llu bytes at most; it has %u and %llu",
            r->o.session_regions, (unsigned long long)r->o.session_bytes, used_n,
            (unsigned long long)used_bytes);
        goto fail;
    }
    if (byte_size > r->o.max_bytes - r->created_bytes || r->created_bytes > r->o.max_bytes) {
        rc = inferd_fail_param(err, INFERD_E_QUOTA, "byte_size",
                               "the worker's shared memory is full: %llu of %llu bytes in use",
                               (unsigned long long)r->created_bytes,
                               (unsigned long long)r->o.max_bytes);
        goto fail;
    }
    rg->fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (rg->fd < 0) {
        rc = inferd_fail(err, INFERD_E_IO, "shared memory is unavailable (shm_open %s: %s)", key,
                         strerror(errno));
        goto fail;
    }
    rg->created = true; /* from here the object is unlinked with the region */
    /* Reserve the pages now: a full /dev/shm is an error here, not a
     * SIGBUS later. */
    int e = posix_fallocate(rg->fd, 0, (off_t)byte_size);
    if (e != 0) {
        rc = inferd_fail(err, INFERD_E_IO, "shared memory is full: %llu bytes (%s)",
                         (unsigned long long)byte_size, strerror(e));
        goto fail;
    }
    if (fstat(rg->fd, &st) != 0) {
        rc = inferd_fail(err, INFERD_E_IO, "fstat %s: %s", key, strerror(errno));
        goto fail;
    }
    if ((rc = add_locked(r, rg, &st, err)) < 0)
        goto fail;
    pthread_mutex_unlock(&r->mu);
    memcpy(out_key, key, sizeof(key));
    return 0;
fail:
    pthread_mutex_unlock(&r->mu);
    region_unref(rg);
    return rc;
}

int inferd_regions_unregister(inferd_regions *r, const char *name, inferd_error *err)
{
    pthread_mutex_lock(&r->mu);
    region *gone = NULL;
    if (name) {
        region *rg = find_locked(r, name);
        if (!rg) {
            pthread_mutex_unlock(&r->mu);
            return inferd_fail_param(err, INFERD_E_NOT_FOUND, "name", "no region '%s'", name);
        }
        unlink_locked(r, rg);
        rg->next = NULL;
        gone = rg;
    } else {
        gone = r->list;
        r->list = NULL;
        r->n = 0;
        r->created_bytes = 0;
    }
    pthread_mutex_unlock(&r->mu);
    while (gone) {
        region *next = gone->next;
        region_unref(gone);
        gone = next;
    }
    return 0;
}

static void info_of(const region *rg, uint64_t now, inferd_region_info *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->name, rg->name, sizeof(out->name));
    memcpy(out->key, rg->key, sizeof(out->key));
    memcpy(out->session, rg->session, sizeof(out->session));
    out->offset = rg->offset;
    out->byte_size = rg->byte_size;
    out->created = rg->created;
    out->writable = rg->writable;
    out->broken = inferd_mapguard_broken(rg->guard);
    out->views = atomic_load(&rg->views);
    const uint64_t used = atomic_load(&rg->last_used_ns);
    out->idle_ms = out->views == 0 && now > used ? (now - used) / 1000000u : 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const inferd_region_info *)a)->name, ((const inferd_region_info *)b)->name);
}

int inferd_regions_status(inferd_regions *r, const char *name, inferd_region_info *out, size_t cap,
                          size_t *n_out, inferd_error *err)
{
    const uint64_t now = inferd_now_ns();
    pthread_mutex_lock(&r->mu);
    if (name) {
        region *rg = find_locked(r, name);
        if (!rg) {
            pthread_mutex_unlock(&r->mu);
            return inferd_fail_param(err, INFERD_E_NOT_FOUND, "name", "no region '%s'", name);
        }
        if (cap > 0)
            info_of(rg, now, &out[0]);
        pthread_mutex_unlock(&r->mu);
        *n_out = 1;
        return 0;
    }
    /* All, sorted by name; the first cap of them. */
    const size_t n = r->n;
    inferd_region_info *all = cap > 0 && n > 0 ? inferd_calloc(n, sizeof(*all)) : NULL;
    if (cap > 0 && n > 0 && !all) {
        pthread_mutex_unlock(&r->mu);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the region list");
    }
    size_t i = 0;
    for (region *rg = r->list; all && rg; rg = rg->next)
        info_of(rg, now, &all[i++]);
    pthread_mutex_unlock(&r->mu);
    if (all) {
        qsort(all, n, sizeof(*all), by_name);
        memcpy(out, all, (n < cap ? n : cap) * sizeof(*out));
        inferd_free(all);
    }
    *n_out = n;
    return 0;
}

/* ---- views ---- */

static void view_release(void *ctx, void *data, size_t bytes)
{
    (void)data, (void)bytes;
    view *v = ctx;
    atomic_store(&v->rg->last_used_ns, inferd_now_ns());
    atomic_fetch_sub(&v->rg->views, 1);
    region_unref(v->rg);
    inferd_free(v);
}

/* Is rg's object still as large as its window, and unbroken? */
static int region_intact(const region *rg, inferd_error *err)
{
    if (inferd_mapguard_broken(rg->guard))
        return inferd_fail(err, INFERD_E_IO,
                           "region '%s' (%s) was truncated while in use; unregister it and "
                           "register it again",
                           rg->name, rg->key);
    struct stat st;
    if (fstat(rg->fd, &st) != 0 || (uint64_t)st.st_size < rg->offset + rg->byte_size)
        return inferd_fail(err, INFERD_E_IO,
                           "region '%s' (%s): its object shrank to %lld bytes, below offset "
                           "%llu + byte_size %llu",
                           rg->name, rg->key, (long long)st.st_size, (unsigned long long)rg->offset,
                           (unsigned long long)rg->byte_size);
    return 0;
}

int inferd_regions_view(inferd_regions *r, const char *name, uint64_t offset, uint64_t size,
                        bool writable, inferd_storage **out_s, inferd_error *err)
{
    int rc;
    pthread_mutex_lock(&r->mu);
    region *rg = name ? find_locked(r, name) : NULL;
    if (!rg) {
        pthread_mutex_unlock(&r->mu);
        return inferd_fail_param(err, INFERD_E_NOT_FOUND, "shared_memory_region",
                                 "no region '%s' is registered", name ? name : "");
    }
    if (offset > rg->byte_size || size > rg->byte_size - offset) {
        rc = inferd_fail_param(err, INFERD_E_RANGE, "shared_memory_byte_size",
                               "offset %llu + %llu bytes is beyond region '%s' (%llu bytes)",
                               (unsigned long long)offset, (unsigned long long)size, name,
                               (unsigned long long)rg->byte_size);
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    if (writable && !rg->writable) {
        pthread_mutex_unlock(&r->mu);
        return inferd_fail_param(err, INFERD_E_INVALID, "shared_memory_region",
                                 "region '%s' is read-only for the worker: outputs cannot go "
                                 "there",
                                 name);
    }
    if ((rc = region_intact(rg, err)) < 0) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    atomic_fetch_add(&rg->refs, 1);
    atomic_fetch_add(&rg->views, 1);
    atomic_store(&rg->last_used_ns, inferd_now_ns());
    pthread_mutex_unlock(&r->mu);
    view *v = inferd_calloc(1, sizeof(*v));
    if (!v) {
        atomic_fetch_sub(&rg->views, 1);
        region_unref(rg);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a region view");
    }
    v->rg = rg;
    v->off = offset;
    v->size = size;
    rc = inferd_storage_wrap(INFERD_STORAGE_REGION, rg->map + rg->skip + offset, (size_t)size,
                             view_release, v, out_s, err);
    if (rc < 0)
        view_release(v, NULL, 0);
    return rc;
}

int inferd_regions_check(const inferd_storage *s, inferd_error *err)
{
    const view *v = inferd__storage_ctx_if(s, view_release);
    if (!v)
        return inferd_fail(err, INFERD_E_INVALID, "not a shared-memory region's view");
    return region_intact(v->rg, err);
}

bool inferd_regions_overlap(const inferd_storage *a, const inferd_storage *b)
{
    const view *x = inferd__storage_ctx_if(a, view_release);
    const view *y = inferd__storage_ctx_if(b, view_release);
    if (!x || !y || x->rg->dev != y->rg->dev || x->rg->ino != y->rg->ino || !x->size || !y->size)
        return false;
    const uint64_t xa = x->rg->offset + x->off, ya = y->rg->offset + y->off;
    return xa < ya + y->size && ya < xa + x->size;
}

size_t inferd_regions_sweep(inferd_regions *r)
{
    if (r->o.ttl_ms == 0)
        return 0;
    if (r->o.ttl_ms > UINT64_MAX / 1000000u)
        return 0; /* longer than the clock runs */
    const uint64_t now = inferd_now_ns(), ttl_ns = r->o.ttl_ms * 1000000u;
    region *gone = NULL;
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (region **at = &r->list; *at;) {
        region *rg = *at;
        const uint64_t used = atomic_load(&rg->last_used_ns);
        if (atomic_load(&rg->views) == 0 && now > used && now - used >= ttl_ns) {
            *at = rg->next;
            r->n--;
            if (rg->created)
                r->created_bytes -= rg->byte_size;
            rg->next = gone;
            gone = rg;
            n++;
        } else {
            at = &rg->next;
        }
    }
    r->n_expired += n;
    pthread_mutex_unlock(&r->mu);
    while (gone) {
        region *next = gone->next;
        region_unref(gone);
        gone = next;
    }
    return n;
}

void inferd_regions_counts(inferd_regions *r, uint32_t *n_regions, uint64_t *created_bytes,
                           uint64_t *n_expired)
{
    pthread_mutex_lock(&r->mu);
    *n_regions = r->n;
    *created_bytes = r->created_bytes;
    *n_expired = r->n_expired;
    pthread_mutex_unlock(&r->mu);
}

/* ---- capabilities ---- */

void inferd_shm_caps_space(inferd_shm_caps *caps)
{
    struct statvfs vs;
    caps->shm_total_bytes = caps->shm_free_bytes = 0;
    if (statvfs("/dev/shm", &vs) == 0) {
        caps->shm_total_bytes = (uint64_t)vs.f_blocks * vs.f_frsize;
        caps->shm_free_bytes = (uint64_t)vs.f_bavail * vs.f_frsize;
    }
}

void inferd_shm_caps_detect(inferd_shm_caps *out)
{
    memset(out, 0, sizeof(*out));
    inferd_shm_caps_space(out);
    uint8_t rnd[4] = {0};
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) < 0)
        memset(rnd, 0, sizeof(rnd));
    char key[64];
    snprintf(key, sizeof(key), "/inferd-probe-%ld-%02x%02x%02x%02x", (long)getpid(), rnd[0], rnd[1],
             rnd[2], rnd[3]);
    int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        out->shm = true;
        shm_unlink(key);
        close(fd);
    }
    fd = memfd_create("inferd-probe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd >= 0) {
        out->memfd = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0;
        close(fd);
    }
}
