/* Model registry: entries in one list ordered by last use (head = least
 * recently used), a byte budget reserved before each load from the model's
 * estimate, keep-alive expiry on an injectable clock.
 * Invariants: at most one entry per id in the list; bytes_reserved is the
 * cost of every listed entry whose estimate is known; models are loaded and
 * destroyed only outside r->mu.
 * Threads: any thread calls anything; one mutex guards the registry, each
 * entry has a condition variable its load's waiters sleep on. */
#include "inferd/registry.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"

#define COMP "registry"

/* An entry is also the handle type: every handle to one instance is the
 * same pointer, counted in n_handles. All fields but id, path, params and
 * cv are guarded by r->mu; model is written once (LOADING -> READY, under
 * r->mu) and then read without the lock by holders of a handle. */
struct inferd_registry_handle {
    struct inferd_registry_handle *prev, *next; /* LRU list links */
    struct inferd_registry_handle *victim_next; /* chain of entries to destroy */
    char *id;
    char *path;
    inferd_sched_opts sched_opts;
    int64_t keep_alive_ms;
    inferd_registry_state state;
    bool listed;        /* in r's list */
    bool cost_reserved; /* weight + state bytes counted in bytes_reserved */
    bool load_done;     /* the load finished (see load_rc) */
    int load_rc;        /* 0 or the load's error, for waiters */
    inferd_error load_err;
    inferd_sched *sched; /* the model's scheduler (owns the model) */
    inferd_model *model;
    uint64_t weight_bytes, state_bytes;
    uint32_t n_handles;
    uint32_t n_waiters; /* threads sleeping on cv for the load */
    uint64_t last_use_ms;
    bool file_check;         /* a thread is checking a new file at the path */
    bool file_rejected;      /* the new file below did not load: keep serving
                              * this instance until the path changes again */
    inferd_file_id rejected; /* the file that did not load */
    pthread_cond_t cv;       /* signalled when load_done is set */
};

typedef struct inferd_registry_handle entry;

struct inferd_registry {
    pthread_mutex_t mu;
    /* Guarded by mu. */
    entry *head, *tail; /* head: least recently used */
    uint32_t n_entries;
    uint64_t bytes_reserved;
    uint64_t bytes_resident;
    inferd_registry_metrics m; /* counters (bytes and n_models filled on read) */
    bool reaper_stop;
    pthread_cond_t reaper_cv; /* wakes the reaper to stop */
    /* Immutable after create. */
    uint64_t budget_bytes;
    uint32_t n_models_max;
    uint32_t reaper_interval_ms;
    inferd_registry_clock_fn clock;
    void *clock_ctx;
    bool reaper_running;
    pthread_t reaper;
};

static uint64_t monotonic_ms(void *ctx)
{
    (void)ctx;
    return inferd_now_ns() / 1000000u;
}

inferd_registry_opts inferd_registry_opts_default(void)
{
    inferd_registry_opts o = {.budget_bytes = 0,
                              .n_models_max = 64,
                              .reaper_interval_ms = 0,
                              .clock = NULL,
                              .clock_ctx = NULL};
    return o;
}

inferd_registry_model_opts inferd_registry_model_opts_default(void)
{
    inferd_registry_model_opts o = {.path = NULL,
                                    .sched = inferd_sched_opts_default(),
                                    .keep_alive_ms = INFERD_REGISTRY_KEEP_ALIVE_DEFAULT_MS};
    return o;
}

const char *inferd_registry_state_name(inferd_registry_state s)
{
    switch (s) {
    case INFERD_REGISTRY_LOADING: return "loading";
    case INFERD_REGISTRY_READY: return "ready";
    case INFERD_REGISTRY_UNLOADING: return "unloading";
    }
    return "unknown";
}

static uint64_t now_ms(const inferd_registry *r) { return r->clock(r->clock_ctx); }

/* --- entries and the LRU list (caller holds r->mu) ---------------------- */

static entry *find_locked(const inferd_registry *r, const char *id)
{
    for (entry *e = r->head; e; e = e->next)
        if (strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

static void list_append_locked(inferd_registry *r, entry *e)
{
    e->prev = r->tail;
    e->next = NULL;
    if (r->tail)
        r->tail->next = e;
    else
        r->head = e;
    r->tail = e;
    e->listed = true;
    r->n_entries++;
}

static void list_unlink_locked(inferd_registry *r, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        r->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        r->tail = e->prev;
    e->prev = e->next = NULL;
    e->listed = false;
    r->n_entries--;
}

/* Mark a use: move to the most recently used end. */
static void touch_locked(inferd_registry *r, entry *e)
{
    e->last_use_ms = now_ms(r);
    if (r->tail != e) {
        list_unlink_locked(r, e);
        list_append_locked(r, e);
    }
}

static uint64_t entry_cost(const entry *e) { return e->weight_bytes + e->state_bytes; }

/* Take an entry out of the list and give back its bytes. */
static void unlist_locked(inferd_registry *r, entry *e)
{
    list_unlink_locked(r, e);
    if (e->cost_reserved) {
        r->bytes_reserved -= entry_cost(e);
        e->cost_reserved = false;
    }
    if (e->model)
        r->bytes_resident -= entry_cost(e);
}

/* Take a loaded entry out of the registry and queue it on @p victims, to
 * be destroyed once the lock is dropped. */
static void retire_locked(inferd_registry *r, entry *e, entry **victims)
{
    unlist_locked(r, e);
    e->victim_next = *victims;
    *victims = e;
}

static void entry_free(entry *e)
{
    if (!e)
        return;
    pthread_cond_destroy(&e->cv);
    inferd_free(e->id);
    inferd_free(e->path);
    inferd_free(e);
}

/* Destroy the queued entries and their models. Never under r->mu: a model's
 * destruction unmaps its file and frees its buffers. */
static void destroy_victims(entry *victims)
{
    while (victims) {
        entry *next = victims->victim_next;
        inferd_sched_destroy(victims->sched);
        entry_free(victims);
        victims = next;
    }
}

static bool expired(const entry *e, uint64_t now)
{
    return e->state == INFERD_REGISTRY_READY && e->n_handles == 0 && e->keep_alive_ms >= 0 &&
           now >= e->last_use_ms && now - e->last_use_ms >= (uint64_t)e->keep_alive_ms;
}

static size_t expire_locked(inferd_registry *r, entry **victims)
{
    const uint64_t now = now_ms(r);
    size_t n = 0;
    entry *e = r->head;
    while (e) {
        entry *next = e->next;
        if (expired(e, now)) {
            retire_locked(r, e, victims);
            r->m.expiries++;
            n++;
        }
        e = next;
    }
    return n;
}

/* Reserve @p self's cost, evicting idle models least recently used first
 * if it does not fit. Evicts nothing when even evicting every idle model
 * would not make room. */
static int reserve_locked(inferd_registry *r, entry *self, entry **victims, inferd_error *err)
{
    const uint64_t cost = entry_cost(self);
    if (r->budget_bytes > 0) {
        uint64_t evictable = 0;
        for (entry *e = r->head; e; e = e->next)
            if (e != self && e->state == INFERD_REGISTRY_READY && e->n_handles == 0)
                evictable += entry_cost(e);
        const uint64_t held = r->bytes_reserved - evictable;
        const uint64_t free_bytes = r->budget_bytes > held ? r->budget_bytes - held : 0;
        if (cost > free_bytes)
            return inferd_fail(
                err, INFERD_E_QUOTA,
                "registry: model '%s' needs %llu bytes (weights %llu + state "
                "%llu) but only %llu bytes are free (budget %llu, %llu held by "
                "models in use or loading)",
                self->id, (unsigned long long)cost, (unsigned long long)self->weight_bytes,
                (unsigned long long)self->state_bytes, (unsigned long long)free_bytes,
                (unsigned long long)r->budget_bytes, (unsigned long long)held);
        entry *e = r->head;
        while (r->bytes_reserved + cost > r->budget_bytes && e) {
            entry *next = e->next;
            if (e != self && e->state == INFERD_REGISTRY_READY && e->n_handles == 0) {
                retire_locked(r, e, victims);
                r->m.evictions++;
            }
            e = next;
        }
    }
    r->bytes_reserved += cost;
    self->cost_reserved = true;
    return 0;
}

/* --- lifecycle ----------------------------------------------------------- */

static void *reaper_main(void *arg)
{
    inferd_registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->reaper_stop) {
        inferd_cond_wait_ms(&r->reaper_cv, &r->mu, (int64_t)r->reaper_interval_ms);
        if (r->reaper_stop)
            break;
        entry *victims = NULL;
        expire_locked(r, &victims);
        pthread_mutex_unlock(&r->mu);
        destroy_victims(victims);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int inferd_registry_create(const inferd_registry_opts *opts, inferd_registry **out_registry,
                           inferd_error *err)
{
    inferd_registry_opts o = opts ? *opts : inferd_registry_opts_default();
    int rc;

    if (o.n_models_max < 1 || o.n_models_max > 4096)
        return inferd_fail(err, INFERD_E_RANGE, "registry: n_models_max %u out of range 1..4096",
                           o.n_models_max);
    inferd_registry *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "registry: no memory");
    r->budget_bytes = o.budget_bytes;
    r->n_models_max = o.n_models_max;
    r->reaper_interval_ms = o.reaper_interval_ms;
    r->clock = o.clock ? o.clock : monotonic_ms;
    r->clock_ctx = o.clock ? o.clock_ctx : NULL;
    pthread_mutex_init(&r->mu, NULL);
    /* The reaper sleeps on CLOCK_MONOTONIC so a wall-clock jump cannot
     * stall or hurry it. */
    inferd_cond_init_monotonic(&r->reaper_cv);
    if (o.reaper_interval_ms > 0) {
        rc = pthread_create(&r->reaper, NULL, reaper_main, r);
        if (rc != 0) {
            inferd_fail_errno(err, INFERD_E_INTERNAL, rc, "registry: cannot start the reaper: %s",
                              strerror(rc));
            goto fail;
        }
        r->reaper_running = true;
    }
    *out_registry = r;
    return 0;

fail:
    pthread_cond_destroy(&r->reaper_cv);
    pthread_mutex_destroy(&r->mu);
    inferd_free(r);
    return INFERD_E_INTERNAL;
}

void inferd_registry_destroy(inferd_registry *r)
{
    if (!r)
        return;
    if (r->reaper_running) {
        pthread_mutex_lock(&r->mu);
        r->reaper_stop = true;
        pthread_cond_signal(&r->reaper_cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->reaper, NULL);
    }
    entry *victims = NULL;
    pthread_mutex_lock(&r->mu);
    while (r->head) {
        entry *e = r->head;
        assert(e->n_handles == 0 && e->state != INFERD_REGISTRY_LOADING);
        retire_locked(r, e, &victims);
    }
    pthread_mutex_unlock(&r->mu);
    destroy_victims(victims);
    pthread_cond_destroy(&r->reaper_cv);
    pthread_mutex_destroy(&r->mu);
    inferd_free(r);
}

/* --- get / release --------------------------------------------------------- */

static int entry_new(const char *id, const char *path, const inferd_registry_model_opts *o,
                     entry **out_entry, inferd_error *err)
{
    entry *e = inferd_calloc(1, sizeof(*e));
    if (!e)
        return inferd_fail(err, INFERD_E_NOMEM, "registry: model '%s': no memory", id);
    e->id = inferd_strdup(id);
    e->path = inferd_strdup(path);
    if (!e->id || !e->path) {
        inferd_free(e->id);
        inferd_free(e->path);
        inferd_free(e);
        return inferd_fail(err, INFERD_E_NOMEM, "registry: model '%s': no memory", id);
    }
    pthread_cond_init(&e->cv, NULL);
    e->sched_opts = o->sched;
    e->keep_alive_ms = o->keep_alive_ms;
    e->state = INFERD_REGISTRY_LOADING;
    *out_entry = e;
    return 0;
}

/* The load of a new entry, by the thread that created it: estimate and
 * reserve, load, then publish the result to the waiters. Runs without
 * r->mu except to reserve and to publish. */
static int load_entry(inferd_registry *r, entry *e, const char *id,
                      inferd_registry_handle **out_handle, inferd_error *err)
{
    inferd_error lerr = {0};
    entry *victims = NULL;
    inferd_model *model = NULL;
    inferd_sched *sched = NULL;
    const inferd_model_params mp = inferd_sched_model_params(&e->sched_opts);
    uint64_t wb = 0, sb = 0, t0 = 0, t1 = 0;

    int rc = inferd_model_estimate(e->path, &mp, &wb, &sb, &lerr);
    if (rc == 0) {
        pthread_mutex_lock(&r->mu);
        e->weight_bytes = wb;
        e->state_bytes = sb;
        rc = reserve_locked(r, e, &victims, &lerr);
        pthread_mutex_unlock(&r->mu);
        destroy_victims(victims);
    }
    if (rc == 0) {
        t0 = monotonic_ms(NULL);
        rc = inferd_sched_create(e->path, &e->sched_opts, &sched, &lerr);
        if (rc == 0 && (rc = inferd_sched_wait_ready(sched, -1, &lerr)) < 0) {
            inferd_sched_destroy(sched);
            sched = NULL;
        }
        if (rc == 0)
            model = inferd_sched_model(sched);
        t1 = monotonic_ms(NULL);
    }
    if (rc == 0) {
        /* The load's own figures: the same as the estimate unless the file
         * was replaced in between, in which case the books follow the
         * model actually loaded. */
        wb = inferd_model_weight_bytes(model);
        sb = inferd_model_state_bytes(model);
    }

    pthread_mutex_lock(&r->mu);
    e->load_done = true;
    e->load_rc = rc;
    if (rc == 0) {
        r->bytes_reserved -= entry_cost(e);
        e->weight_bytes = wb;
        e->state_bytes = sb;
        r->bytes_reserved += entry_cost(e);
        e->model = model;
        e->sched = sched;
        e->state = INFERD_REGISTRY_READY;
        /* Every waiter gets a handle now, so the model cannot expire or be
         * evicted between this broadcast and their waking. */
        e->n_handles = 1 + e->n_waiters;
        r->bytes_resident += entry_cost(e);
        r->m.loads++;
        r->m.load_ms_total += t1 - t0;
        touch_locked(r, e);
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&r->mu);
        *out_handle = e;
        return 0;
    }
    /* Failed: the entry leaves the list at once, so the next call loads
     * again; the last of the waiters (or this thread) frees it. */
    e->load_err = lerr;
    unlist_locked(r, e);
    r->m.load_failures++;
    pthread_cond_broadcast(&e->cv);
    const bool free_now = e->n_waiters == 0;
    pthread_mutex_unlock(&r->mu);
    /* From here on @p e belongs to the waiters unless free_now: only the
     * caller's own copies (id, lerr) are read. */
    inferd_log_debug("registry", "load of model '%s' failed: %s", id, lerr.msg);
    if (err)
        *err = lerr;
    if (free_now)
        entry_free(e);
    return rc;
}

static bool same_file(const inferd_file_id *a, const inferd_file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size_bytes == b->size_bytes &&
           a->mtime_ns == b->mtime_ns;
}

typedef enum freshness {
    FRESH_KEEP,   /* serve the instance */
    FRESH_REFUSE, /* refuse the get (*err says why) */
    FRESH_RELOAD, /* the instance was retired: load the path anew */
} freshness;

/* Is READY entry @p e still fit to serve what its path holds? Its weights
 * cannot be trusted once its mapped file changed in place: it is retired
 * when idle (to be loaded anew), and gets are refused while requests still
 * hold it (its scheduler is failing them). A new file at the path (renamed
 * over it, or rewritten when the model was read into memory) replaces an
 * idle instance once that file is seen to load; a file that does not load
 * leaves the instance serving. Caller holds r->mu; the check of a new file
 * drops and retakes it (meanwhile @p e is held, so it stays listed). */
static freshness freshness_locked(inferd_registry *r, entry *e, entry **victims, int *out_rc,
                                  inferd_error *err)
{
    inferd_error ferr = {0};
    int frc = inferd_model_check_file(e->model, &ferr);
    if (frc < 0) {
        if (e->n_handles > 0) {
            if (err)
                *err = ferr;
            *out_rc = frc;
            return FRESH_REFUSE;
        }
        inferd_log_warn(COMP, "model '%s': %s (unloaded; loading the file again)", e->id, ferr.msg);
        retire_locked(r, e, victims);
        r->m.file_reloads++;
        return FRESH_RELOAD;
    }
    inferd_file_id now;
    if (e->n_handles > 0 || e->file_check || !inferd_model_path_changed(e->model, &now) ||
        (e->file_rejected && same_file(&now, &e->rejected)))
        return FRESH_KEEP;

    e->file_check = true;
    e->n_handles++;
    pthread_mutex_unlock(&r->mu);
    const inferd_model_params mp = inferd_sched_model_params(&e->sched_opts);
    inferd_error verr = {0};
    uint64_t wb = 0, sb = 0;
    const int vrc = inferd_model_estimate(e->path, &mp, &wb, &sb, &verr);
    pthread_mutex_lock(&r->mu);
    e->file_check = false;
    e->n_handles--;
    if (e->state == INFERD_REGISTRY_UNLOADING) {
        /* A drain came meanwhile and waited for this handle. */
        if (e->n_handles == 0) {
            retire_locked(r, e, victims);
            r->m.unloads++;
        }
        *out_rc = inferd_fail(err, INFERD_E_BUSY, "registry: model '%s' is being unloaded", e->id);
        return FRESH_REFUSE;
    }
    if (vrc < 0) {
        e->file_rejected = true;
        e->rejected = now;
        inferd_log_warn(COMP,
                        "model '%s': the new file at '%s' does not load (%s); still serving the "
                        "one loaded before",
                        e->id, e->path, verr.msg);
        return FRESH_KEEP;
    }
    if (e->n_handles > 0)
        return FRESH_KEEP; /* busy again: the next idle get reloads */
    inferd_log_info(COMP, "model '%s': a new file is at '%s': loading it", e->id, e->path);
    retire_locked(r, e, victims);
    r->m.file_reloads++;
    return FRESH_RELOAD;
}

int inferd_registry_get_or_load(inferd_registry *r, const char *id,
                                const inferd_registry_model_opts *opts,
                                inferd_registry_handle **out_handle, inferd_error *err)
{
    const inferd_registry_model_opts o = opts ? *opts : inferd_registry_model_opts_default();
    const char *path = o.path ? o.path : id;
    entry *victims = NULL, *e;
    int rc = 0;

    if (!id || id[0] == '\0' || strlen(id) >= INFERD_REGISTRY_ID_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "registry: model id must be 1..%d bytes",
                           INFERD_REGISTRY_ID_MAX - 1);
    if (path[0] == '\0' || strlen(path) >= INFERD_REGISTRY_PATH_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "registry: model '%s': path must be 1..%d bytes",
                           id, INFERD_REGISTRY_PATH_MAX - 1);

    pthread_mutex_lock(&r->mu);
    expire_locked(r, &victims);
    e = find_locked(r, id);
    freshness fresh = FRESH_KEEP;
    if (e && e->state == INFERD_REGISTRY_READY) {
        fresh = freshness_locked(r, e, &victims, &rc, err);
        if (fresh == FRESH_RELOAD)
            e = NULL;
    }
    if (fresh == FRESH_REFUSE) {
        /* rc and *err are set */
    } else if (e && e->state == INFERD_REGISTRY_UNLOADING) {
        rc = inferd_fail(err, INFERD_E_BUSY,
                         "registry: model '%s' is being unloaded (%u handles left)", id,
                         e->n_handles);
    } else if (e && e->state == INFERD_REGISTRY_READY) {
        e->n_handles++;
        r->m.hits++;
        touch_locked(r, e);
    } else if (e) {
        /* Another thread is loading it: wait for that load. */
        e->n_waiters++;
        while (!e->load_done)
            pthread_cond_wait(&e->cv, &r->mu);
        e->n_waiters--;
        rc = e->load_rc;
        if (rc == 0) {
            r->m.hits++; /* the loader granted this thread its handle */
        } else {
            if (err)
                *err = e->load_err;
            /* The failed entry is out of the list; the last waiter frees it. */
            if (e->n_waiters == 0) {
                e->victim_next = victims;
                victims = e;
            }
        }
    } else if (r->n_entries >= r->n_models_max) {
        rc = inferd_fail(err, INFERD_E_OVERLOADED,
                         "registry: cannot load model '%s': %u models are loaded or loading "
                         "(the maximum)",
                         id, r->n_entries);
    } else {
        rc = entry_new(id, path, &o, &e, err);
        if (rc == 0)
            list_append_locked(r, e);
        pthread_mutex_unlock(&r->mu);
        destroy_victims(victims);
        if (rc < 0)
            return rc;
        return load_entry(r, e, id, out_handle, err);
    }
    pthread_mutex_unlock(&r->mu);
    destroy_victims(victims);
    if (rc == 0)
        *out_handle = e;
    return rc;
}

inferd_model *inferd_registry_handle_model(const inferd_registry_handle *h) { return h->model; }

inferd_sched *inferd_registry_handle_sched(const inferd_registry_handle *h) { return h->sched; }

void inferd_registry_release(inferd_registry *r, inferd_registry_handle *h)
{
    if (!h)
        return;
    entry *victims = NULL;
    pthread_mutex_lock(&r->mu);
    assert(h->n_handles > 0);
    h->n_handles--;
    touch_locked(r, h);
    if (h->n_handles == 0 && h->state == INFERD_REGISTRY_UNLOADING) {
        retire_locked(r, h, &victims);
        r->m.unloads++;
    } else if (h->n_handles == 0 && h->state == INFERD_REGISTRY_READY &&
               inferd_model_check_file(h->model, NULL) < 0) {
        /* Its file changed under it: its weights are no use to anyone. */
        retire_locked(r, h, &victims);
        r->m.file_reloads++;
    }
    /* A keep-alive of 0 has expired now: this picks it up with the rest. */
    expire_locked(r, &victims);
    pthread_mutex_unlock(&r->mu);
    destroy_victims(victims);
}

int inferd_registry_unload(inferd_registry *r, const char *id, bool drain, inferd_error *err)
{
    entry *victims = NULL;
    int rc = 0;

    if (!id)
        return inferd_fail(err, INFERD_E_INVALID, "registry: unload: no model id");
    pthread_mutex_lock(&r->mu);
    entry *e = find_locked(r, id);
    if (!e) {
        rc = inferd_fail(err, INFERD_E_NOT_FOUND, "registry: model '%s' is not loaded", id);
    } else if (e->state == INFERD_REGISTRY_LOADING) {
        rc = inferd_fail(err, INFERD_E_BUSY, "registry: model '%s' is still loading", id);
    } else if (e->n_handles == 0) {
        retire_locked(r, e, &victims);
        r->m.unloads++;
    } else if (!drain) {
        rc = inferd_fail(err, INFERD_E_BUSY,
                         "registry: model '%s' is in use (%u handles); release them or "
                         "unload with drain",
                         id, e->n_handles);
    } else {
        /* Drain: refuse new handles; the last release unloads it. */
        e->state = INFERD_REGISTRY_UNLOADING;
    }
    pthread_mutex_unlock(&r->mu);
    destroy_victims(victims);
    return rc;
}

size_t inferd_registry_collect(inferd_registry *r)
{
    entry *victims = NULL;
    pthread_mutex_lock(&r->mu);
    size_t n = expire_locked(r, &victims);
    pthread_mutex_unlock(&r->mu);
    destroy_victims(victims);
    return n;
}

/* --- introspection ------------------------------------------------------ */

void inferd_registry_list(inferd_registry *r, inferd_registry_model_info *out, size_t cap,
                          size_t *out_n)
{
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (const entry *e = r->head; e; e = e->next, n++) {
        if (n >= cap)
            continue;
        inferd_registry_model_info *info = &out[n];
        memset(info, 0, sizeof(*info));
        /* Ids are shorter than INFERD_REGISTRY_ID_MAX (checked at get). */
        memcpy(info->id, e->id, strlen(e->id) + 1);
        info->state = e->state;
        info->weight_bytes = e->weight_bytes;
        info->state_bytes = e->state_bytes;
        info->n_handles = e->n_handles;
        info->keep_alive_ms = e->keep_alive_ms;
        info->last_use_ms = e->last_use_ms;
    }
    pthread_mutex_unlock(&r->mu);
    *out_n = n;
}

int inferd_registry_sched_stats(inferd_registry *r, const char *id, inferd_sched_stats *out_stats)
{
    int rc = INFERD_E_NOT_FOUND;
    pthread_mutex_lock(&r->mu);
    const entry *e = find_locked(r, id);
    /* A listed entry past LOADING keeps its scheduler until it is unlisted
     * under this lock, so the scheduler outlives the call. */
    if (e && e->state != INFERD_REGISTRY_LOADING && e->sched) {
        inferd_sched_get_stats(e->sched, out_stats);
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void inferd_registry_get_metrics(inferd_registry *r, inferd_registry_metrics *out_metrics)
{
    pthread_mutex_lock(&r->mu);
    inferd_registry_metrics m = r->m;
    m.bytes_resident = r->bytes_resident;
    m.bytes_reserved = r->bytes_reserved;
    m.budget_bytes = r->budget_bytes;
    m.n_models = r->n_entries;
    pthread_mutex_unlock(&r->mu);
    *out_metrics = m;
}
