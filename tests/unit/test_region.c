/* Tensor layer: shared-memory regions (inferd/region.h), black box.
 * Registering windows onto a client's POSIX shared-memory object (page and
 * non-page offsets, zero copy both ways), worker-created objects (key,
 * size, mode 0600, unlinked when they go) and their quotas, unregistering
 * regions in use, view bounds and kinds, clients that misbehave (truncate,
 * unlink, unmap), overlap, the TTL sweep, the machine's capabilities,
 * every allocation failing in turn (no leak, no object left in /dev/shm)
 * and views racing unregister/register on several threads. Run as root,
 * the read-only cases take nobody's effective uid (root opens anything). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/error.h"
#include "inferd/region.h"
#include "inferd/tensor.h"

#define KIB 1024u
#define OBJ_SIZE (64 * KIB)
#define ALLOC_TRIES 200

/* Names of what the running test made in /dev/shm, so that the teardown
 * after it can unlink what a failed test left behind. */
static char g_keys[256][64];
static size_t g_n_keys;
static unsigned g_seq;
static char g_prefix[32]; /* key_prefix of created objects: "inferdt<pid>" */

/* A client's shared-memory object and its own mapping of it. */
typedef struct client_obj {
    char key[64];
    int fd;
    uint8_t *map; /* NULL once unmapped */
    size_t size;
} client_obj;

static uint8_t pattern(size_t i) { return (uint8_t)(((uint32_t)i * 2654435761u) >> 13); }

static inferd_error *fresh(inferd_error *e)
{
    memset(e, 0, sizeof(*e));
    return e;
}

static void remember_key(const char *key)
{
    if (g_n_keys < sizeof(g_keys) / sizeof(g_keys[0]) && strlen(key) < sizeof(g_keys[0]))
        memcpy(g_keys[g_n_keys++], key, strlen(key) + 1);
}

static void obj_key(char key[64], const char *what)
{
    snprintf(key, 64, "/inferd-test-%ld-%u%s", (long)getpid(), g_seq++, what);
}

/* Make a client object of @p size bytes with @p mode, filled with the
 * pattern, as a client would (shm_open + ftruncate), mapped shared. */
static void obj_make_mode(client_obj *o, size_t size, mode_t mode)
{
    memset(o, 0, sizeof(*o));
    obj_key(o->key, "");
    o->size = size;
    o->fd = shm_open(o->key, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode);
    assert_true(o->fd >= 0);
    remember_key(o->key);
    assert_int_equal(ftruncate(o->fd, (off_t)size), 0);
    o->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, o->fd, 0);
    assert_true(o->map != MAP_FAILED);
    for (size_t i = 0; i < size; i++)
        o->map[i] = pattern(i);
}

static void obj_make(client_obj *o, size_t size) { obj_make_mode(o, size, 0600); }

static void obj_free(client_obj *o)
{
    if (o->map)
        munmap(o->map, o->size);
    o->map = NULL;
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    shm_unlink(o->key);
}

/* Does shared-memory object @p key exist? */
static bool shm_exists(const char *key)
{
    int fd = shm_open(key, O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0) {
        close(fd);
        return true;
    }
    assert_int_equal(errno, ENOENT);
    return false;
}

/* Objects in /dev/shm whose names start with @p prefix; -1 without
 * /dev/shm. */
static long count_shm(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    long n = 0;
    size_t len = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, len) == 0)
            n++;
    closedir(d);
    return n;
}

static long count_created(void)
{
    char p[40];
    snprintf(p, sizeof(p), "%s-", g_prefix);
    return count_shm(p);
}

/* At the end of a test: none of its objects is left in /dev/shm (the
 * client objects it made and freed, the ones it had the worker create). */
static void expect_nothing_left(void)
{
    for (size_t i = 0; i < g_n_keys; i++)
        if (g_keys[i][0] == '/' && shm_exists(g_keys[i])) {
            print_error("left in /dev/shm: %s\n", g_keys[i]);
            fail();
        }
    char tag[48];
    snprintf(tag, sizeof(tag), "inferd-test-%ld-", (long)getpid());
    long n = count_shm(tag);
    assert_true(n <= 0);
    n = count_created();
    assert_true(n <= 0);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static inferd_regions *regions_new(const inferd_regions_opts *o)
{
    inferd_regions *r = NULL;
    inferd_error err;
    assert_int_equal(inferd_regions_create(o, &r, fresh(&err)), 0);
    assert_non_null(r);
    return r;
}

static inferd_regions_opts opts_with_prefix(void)
{
    inferd_regions_opts o = inferd_regions_opts_default();
    o.key_prefix = g_prefix;
    return o;
}

/* The call returned @p code, recorded it in @p e with a message. */
static void expect_err(int rc, int code, const inferd_error *e)
{
    assert_int_equal(rc, code);
    assert_int_equal(e->code, code);
    assert_true(e->msg[0] != '\0');
}

/* The same, for an input the caller got wrong: the error names its field. */
static void expect_err_param(int rc, int code, const inferd_error *e)
{
    expect_err(rc, code, e);
    assert_true(e->param[0] != '\0');
}

static inferd_region_info status_of(inferd_regions *r, const char *name)
{
    inferd_region_info info;
    size_t n = 0;
    inferd_error err;
    memset(&info, 0, sizeof(info));
    assert_int_equal(inferd_regions_status(r, name, &info, 1, &n, fresh(&err)), 0);
    assert_int_equal(n, 1);
    return info;
}

static void expect_gone(inferd_regions *r, const char *name)
{
    inferd_region_info info;
    size_t n = 0;
    inferd_error err;
    expect_err(inferd_regions_status(r, name, &info, 1, &n, fresh(&err)), INFERD_E_NOT_FOUND, &err);
}

static inferd_storage *view_ok(inferd_regions *r, const char *name, uint64_t offset, uint64_t size,
                               bool writable)
{
    inferd_storage *s = NULL;
    inferd_error err;
    int rc = inferd_regions_view(r, name, offset, size, writable, &s, fresh(&err));
    if (rc != 0)
        print_error("view %s [%llu, +%llu): %d %s\n", name, (unsigned long long)offset,
                    (unsigned long long)size, rc, err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_REGION);
    assert_int_equal(inferd_storage_bytes(s), size);
    return s;
}

static void register_ok(inferd_regions *r, const char *name, const char *key, uint64_t offset,
                        uint64_t byte_size, const char *session)
{
    inferd_error err;
    int rc = inferd_regions_register(r, name, key, offset, byte_size, session, fresh(&err));
    if (rc != 0)
        print_error("register %s: %d %s\n", name, rc, err.msg);
    assert_int_equal(rc, 0);
}

static void create_ok(inferd_regions *r, const char *name, uint64_t byte_size, const char *session,
                      char key[INFERD_REGION_KEY_MAX])
{
    inferd_error err;
    int rc = inferd_regions_create_region(r, name, byte_size, session, key, fresh(&err));
    if (rc != 0)
        print_error("create_region %s: %d %s\n", name, rc, err.msg);
    assert_int_equal(rc, 0);
    remember_key(key);
}

static void unregister_ok(inferd_regions *r, const char *name)
{
    inferd_error err;
    assert_int_equal(inferd_regions_unregister(r, name, fresh(&err)), 0);
}

static void expect_counts(inferd_regions *r, uint32_t n_regions, uint64_t created_bytes)
{
    uint32_t n = 99;
    uint64_t bytes = 99, expired = 99;
    inferd_regions_counts(r, &n, &bytes, &expired);
    assert_int_equal(n, n_regions);
    assert_int_equal(bytes, created_bytes);
}

/* ---- defaults ---- */

static void test_region_opts_default(void **state)
{
    (void)state;
    inferd_regions_opts o = inferd_regions_opts_default();
    assert_int_equal(o.max_regions, 1024);
    assert_int_equal(o.max_bytes, 1ull << 30);
    assert_int_equal(o.session_regions, 64);
    assert_int_equal(o.session_bytes, 256ull << 20);
    assert_int_equal(o.ttl_ms, 600000);
    if (o.key_prefix)
        assert_string_equal(o.key_prefix, "inferd");
    inferd_regions_destroy(NULL);
    expect_nothing_left();
}

/* ---- register ---- */

/* Windows at offset 0 and at 1000 (not page-aligned): views read exactly
 * the object's bytes there, and writes go both ways without copies. */
static void test_region_register_window_zero_copy(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);

    register_ok(r, "whole", o.key, 0, OBJ_SIZE, NULL);
    register_ok(r, "w1000", o.key, 1000, 4096, "sess-1");
    expect_counts(r, 2, 0);

    inferd_storage *a = view_ok(r, "whole", 0, OBJ_SIZE, false);
    assert_memory_equal(inferd_storage_data(a), o.map, OBJ_SIZE);

    inferd_storage *v = view_ok(r, "w1000", 100, 500, true);
    volatile uint8_t *p = inferd_storage_data(v);
    assert_memory_equal((const void *)p, o.map + 1100, 500);
    /* The client writes through its mapping: the view sees it. */
    o.map[1100] = (uint8_t)~pattern(1100);
    o.map[1599] = 0x5a;
    assert_int_equal(p[0], (uint8_t)~pattern(1100));
    assert_int_equal(p[499], 0x5a);
    /* The worker writes through the view: the client sees it. */
    p[1] = 0xc3;
    p[498] = 0x3c;
    assert_int_equal(o.map[1101], 0xc3);
    assert_int_equal(o.map[1598], 0x3c);
    /* And the other window, over the same object, too. */
    assert_int_equal(((volatile uint8_t *)inferd_storage_data(a))[1101], 0xc3);
    /* Neighbours outside the view are untouched. */
    assert_int_equal(o.map[1099], pattern(1099));
    assert_int_equal(o.map[1600], pattern(1600));
    assert_int_equal(inferd_regions_check(v, NULL), 0);

    inferd_region_info info = status_of(r, "w1000");
    assert_string_equal(info.name, "w1000");
    assert_string_equal(info.key, o.key);
    assert_int_equal(info.offset, 1000);
    assert_int_equal(info.byte_size, 4096);
    assert_false(info.created);
    assert_true(info.writable);
    assert_false(info.broken);
    assert_string_equal(info.session, "sess-1");
    assert_int_equal(info.views, 1);
    assert_true(info.idle_ms < 2000);
    inferd_storage_unref(v);
    info = status_of(r, "w1000");
    assert_int_equal(info.views, 0);
    assert_true(info.idle_ms < 2000);

    info = status_of(r, "whole");
    assert_int_equal(info.views, 1);
    assert_string_equal(info.session, "");
    assert_int_equal(info.offset, 0);
    assert_int_equal(info.byte_size, OBJ_SIZE);
    inferd_storage_unref(a);
    assert_int_equal(status_of(r, "whole").views, 0);

    /* A window ending exactly at the object's end, and a one-byte one at
     * its last byte. */
    register_ok(r, "tail", o.key, 1000, OBJ_SIZE - 1000, NULL);
    register_ok(r, "last", o.key, OBJ_SIZE - 1, 1, NULL);
    v = view_ok(r, "tail", OBJ_SIZE - 1000 - 10, 10, false);
    assert_memory_equal(inferd_storage_data(v), o.map + OBJ_SIZE - 10, 10);
    inferd_storage_unref(v);
    v = view_ok(r, "last", 0, 1, false);
    assert_int_equal(*(uint8_t *)inferd_storage_data(v), o.map[OBJ_SIZE - 1]);
    inferd_storage_unref(v);

    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* Status of all regions: sorted by name, up to cap, *n_out the total. */
static void test_region_status_list(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    size_t n = 99;

    register_ok(r, "bravo", o.key, 0, 16, NULL);
    register_ok(r, "charlie", o.key, 16, 16, NULL);
    register_ok(r, "alpha", o.key, 32, 16, NULL);

    inferd_region_info info[4];
    memset(info, 0, sizeof(info));
    assert_int_equal(inferd_regions_status(r, NULL, info, 4, &n, fresh(&err)), 0);
    assert_int_equal(n, 3);
    assert_string_equal(info[0].name, "alpha");
    assert_string_equal(info[1].name, "bravo");
    assert_string_equal(info[2].name, "charlie");
    assert_int_equal(info[0].offset, 32);
    assert_int_equal(info[2].offset, 16);

    memset(info, 0, sizeof(info));
    assert_int_equal(inferd_regions_status(r, NULL, info, 2, &n, fresh(&err)), 0);
    assert_int_equal(n, 3);
    assert_string_equal(info[0].name, "alpha");
    assert_string_equal(info[1].name, "bravo");
    assert_string_equal(info[2].name, ""); /* beyond cap: not written */

    expect_gone(r, "delta");
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

static void test_region_register_errors(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;

    register_ok(r, "taken", o.key, 0, 100, NULL);
    expect_err(inferd_regions_register(r, "taken", o.key, 200, 100, NULL, fresh(&err)),
               INFERD_E_EXISTS, &err);
    /* The first registration is as it was. */
    assert_int_equal(status_of(r, "taken").offset, 0);

    char missing[64];
    obj_key(missing, "-missing");
    expect_err(inferd_regions_register(r, "nokey", missing, 0, 100, NULL, fresh(&err)),
               INFERD_E_NOT_FOUND, &err);

    /* Windows not inside the object. */
    static const struct {
        uint64_t offset, byte_size;
    } bad_windows[] = {
        {1, OBJ_SIZE},                 /* one past the end */
        {0, OBJ_SIZE + 1},             /* one past the end */
        {OBJ_SIZE, 1},                 /* starts at the end */
        {OBJ_SIZE + 1, 1},             /* starts past the end */
        {OBJ_SIZE + 4096, 4096},       /* a page past it */
        {UINT64_MAX - 100, 200},       /* the end wraps to 99 */
        {100, UINT64_MAX},             /* the end wraps to 99 */
        {UINT64_MAX, UINT64_MAX},      /* wraps */
        {1ull << 63, 1ull << 63},      /* the end wraps to 0 */
        {(uint64_t)INT64_MAX + 1, 16}, /* beyond off_t */
        {0, 0},                        /* empty */
        {1000, 0},                     /* empty */
    };
    for (size_t i = 0; i < sizeof(bad_windows) / sizeof(bad_windows[0]); i++) {
        int rc = inferd_regions_register(r, "win", o.key, bad_windows[i].offset,
                                         bad_windows[i].byte_size, NULL, fresh(&err));
        if (rc != INFERD_E_RANGE)
            print_error("window %zu [%llu, +%llu): %d\n", i,
                        (unsigned long long)bad_windows[i].offset,
                        (unsigned long long)bad_windows[i].byte_size, rc);
        expect_err(rc, INFERD_E_RANGE, &err);
        expect_gone(r, "win");
    }
    /* byte_size 0 names byte_size. */
    expect_err_param(inferd_regions_register(r, "win", o.key, 0, 0, NULL, fresh(&err)),
                     INFERD_E_RANGE, &err);

    /* Names: 1..127 bytes; no '/', no control characters. */
    char longest[INFERD_REGION_NAME_MAX];
    memset(longest, 'n', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    register_ok(r, longest, o.key, 0, 16, NULL);
    assert_string_equal(status_of(r, longest).name, longest);
    char too_long[INFERD_REGION_NAME_MAX + 1];
    memset(too_long, 'n', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    const char *bad_names[] = {"",          too_long,   "a/b",     "/lead",
                               "tab\there", "bell\x07", "del\x7f", "nl\n"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        int rc = inferd_regions_register(r, bad_names[i], o.key, 0, 16, NULL, fresh(&err));
        if (rc != INFERD_E_INVALID)
            print_error("name %zu: %d\n", i, rc);
        expect_err_param(rc, INFERD_E_INVALID, &err);
    }

    /* A session id has at most 127 bytes. */
    char long_session[INFERD_REGION_SESSION_MAX + 1];
    memset(long_session, 's', sizeof(long_session) - 1);
    long_session[sizeof(long_session) - 1] = '\0';
    expect_err(inferd_regions_register(r, "sess", o.key, 0, 16, long_session, fresh(&err)),
               INFERD_E_INVALID, &err);
    expect_gone(r, "sess");
    long_session[INFERD_REGION_SESSION_MAX - 1] = '\0';
    register_ok(r, "sess", o.key, 0, 16, long_session);
    assert_string_equal(status_of(r, "sess").session, long_session);
    unregister_ok(r, "sess");

    /* Keys: "/name", one slash, 2..255 bytes. */
    char long_key[INFERD_REGION_KEY_MAX + 1];
    long_key[0] = '/';
    memset(long_key + 1, 'k', sizeof(long_key) - 2);
    long_key[sizeof(long_key) - 1] = '\0'; /* 256 bytes and the NUL: too long */
    const char *bad_keys[] = {"noslash", "/a/b", "", "/", "//", "a/", long_key};
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        int rc = inferd_regions_register(r, "badkey", bad_keys[i], 0, 16, NULL, fresh(&err));
        if (rc != INFERD_E_INVALID)
            print_error("key %zu: %d\n", i, rc);
        expect_err_param(rc, INFERD_E_INVALID, &err);
    }
    /* 255 bytes is a valid key (of no object). */
    long_key[INFERD_REGION_KEY_MAX - 1] = '\0';
    expect_err(inferd_regions_register(r, "badkey", long_key, 0, 16, NULL, fresh(&err)),
               INFERD_E_NOT_FOUND, &err);
    expect_gone(r, "badkey");

    /* Not a regular shared-memory object: a FIFO in /dev/shm (which opens
     * read-write without blocking). The alarm ends the run rather than let
     * an open that waits for a writer hang it. */
    char odd_key[64], odd_path[80];
    obj_key(odd_key, "-fifo");
    snprintf(odd_path, sizeof(odd_path), "/dev/shm%s", odd_key);
    if (mkfifo(odd_path, 0600) == 0) {
        alarm(60);
        int rc = inferd_regions_register(r, "fifo", odd_key, 0, 16, NULL, fresh(&err));
        alarm(0);
        unlink(odd_path);
        expect_err(rc, INFERD_E_INVALID, &err);
        expect_gone(r, "fifo");
    }
    /* A directory cannot be opened read-write: not a regular object, and
     * one that cannot be opened; the header allows either code. */
    obj_key(odd_key, "-dir");
    snprintf(odd_path, sizeof(odd_path), "/dev/shm%s", odd_key);
    if (mkdir(odd_path, 0700) == 0) {
        int rc = inferd_regions_register(r, "dir", odd_key, 0, 16, NULL, fresh(&err));
        rmdir(odd_path);
        assert_true(rc == INFERD_E_INVALID || rc == INFERD_E_IO);
        expect_err(rc, rc, &err);
        expect_gone(r, "dir");
    }

    expect_counts(r, 2, 0);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

static void test_region_register_quota(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    opts.max_regions = 3;
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    char key[INFERD_REGION_KEY_MAX];

    register_ok(r, "q1", o.key, 0, 16, NULL);
    register_ok(r, "q2", o.key, 0, 16, "s");
    create_ok(r, "q3", 4096, "s", key);
    expect_err(inferd_regions_register(r, "q4", o.key, 0, 16, NULL, fresh(&err)), INFERD_E_QUOTA,
               &err);
    expect_err(inferd_regions_create_region(r, "q4", 4096, "t", key, fresh(&err)), INFERD_E_QUOTA,
               &err);
    expect_gone(r, "q4");
    expect_counts(r, 3, 4096);
    unregister_ok(r, "q1");
    register_ok(r, "q4", o.key, 0, 16, NULL);
    expect_counts(r, 3, 4096);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* Take the effective uid and gid of an unprivileged user (nobody) when the
 * test runs as root, who opens any object whatever its mode, so that the
 * object's mode is honoured; false if that cannot be done. */
static bool as_unprivileged_begin(void)
{
    if (geteuid() != 0)
        return true;
    if (setegid(65534) != 0)
        return false;
    if (seteuid(65534) != 0) {
        assert_int_equal(setegid(0), 0);
        return false;
    }
    return true;
}

static void as_unprivileged_end(void)
{
    if (getuid() == 0) {
        assert_int_equal(seteuid(0), 0);
        assert_int_equal(setegid(0), 0);
    }
}

/* An object the client made read-only (0400): registered read-only, read
 * views work, writable ones are refused. One with mode 0 cannot be opened:
 * INFERD_E_IO. As root these are made and registered with an unprivileged
 * effective uid (root would open them read-write). */
static void test_region_read_only_object(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err_ro, err_none;
    client_obj ro, none;

    if (!as_unprivileged_begin()) {
        inferd_regions_destroy(r);
        skip();
    }
    /* Asserts only once the uid is back. */
    memset(&ro, 0, sizeof(ro));
    memset(&none, 0, sizeof(none));
    obj_key(ro.key, "-ro");
    obj_key(none.key, "-none");
    int fd_ro = shm_open(ro.key, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0400);
    int fd_none = shm_open(none.key, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0);
    bool made = fd_ro >= 0 && fd_none >= 0 && ftruncate(fd_ro, OBJ_SIZE) == 0 &&
                ftruncate(fd_none, OBJ_SIZE) == 0;
    uint8_t *map =
        made ? mmap(NULL, OBJ_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd_ro, 0) : MAP_FAILED;
    int rc_ro = -100, rc_none = -100;
    if (map != MAP_FAILED) {
        for (size_t i = 0; i < OBJ_SIZE; i++)
            map[i] = pattern(i);
        rc_ro = inferd_regions_register(r, "ro", ro.key, 1000, 4096, NULL, fresh(&err_ro));
        rc_none = inferd_regions_register(r, "none", none.key, 0, 4096, NULL, fresh(&err_none));
    }
    as_unprivileged_end();
    remember_key(ro.key);
    remember_key(none.key);
    assert_true(made);
    assert_true(map != MAP_FAILED);

    if (rc_ro != 0)
        print_error("register read-only: %d %s\n", rc_ro, err_ro.msg);
    assert_int_equal(rc_ro, 0);
    inferd_region_info info = status_of(r, "ro");
    assert_false(info.writable);
    assert_false(info.created);
    inferd_storage *v = view_ok(r, "ro", 0, 4096, false);
    assert_memory_equal(inferd_storage_data(v), map + 1000, 4096);
    map[1000] ^= 0xff; /* the client's writes are still seen */
    assert_int_equal(((volatile uint8_t *)inferd_storage_data(v))[0], map[1000]);
    inferd_storage *w = NULL;
    inferd_error err;
    expect_err(inferd_regions_view(r, "ro", 0, 16, true, &w, fresh(&err)), INFERD_E_INVALID, &err);
    assert_null(w);
    assert_int_equal(status_of(r, "ro").views, 1);
    inferd_storage_unref(v);

    expect_err(rc_none, INFERD_E_IO, &err_none);
    expect_gone(r, "none");

    inferd_regions_destroy(r);
    munmap(map, OBJ_SIZE);
    close(fd_ro);
    close(fd_none);
    shm_unlink(ro.key);
    shm_unlink(none.key);
    /* An I/O error records the errno behind it (inferd/error.h). */
    assert_int_equal(err_none.sys_errno, EACCES);
    expect_nothing_left();
}

/* ---- create_region ---- */

static void test_region_create_region(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    char key[INFERD_REGION_KEY_MAX];
    char want[48];
    snprintf(want, sizeof(want), "/%s-", g_prefix);

    const uint64_t size = 3 * 4096 + 1000; /* not a page multiple */
    create_ok(r, "made", size, "sess-a", key);
    assert_memory_equal(key, want, strlen(want));
    assert_true(strlen(key) > strlen(want));
    assert_null(strchr(key + 1, '/'));

    /* The client opens it by key: its size, mode 0600, zeroed. */
    int fd = shm_open(key, O_RDWR | O_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, size);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_uid, geteuid());
    uint8_t *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    for (size_t i = 0; i < size; i++)
        assert_int_equal(map[i], 0);

    inferd_region_info info = status_of(r, "made");
    assert_string_equal(info.name, "made");
    assert_string_equal(info.key, key);
    assert_int_equal(info.offset, 0);
    assert_int_equal(info.byte_size, size);
    assert_true(info.created);
    assert_true(info.writable);
    assert_false(info.broken);
    assert_string_equal(info.session, "sess-a");
    assert_int_equal(info.views, 0);
    expect_counts(r, 1, size);

    /* Shared memory, both ways. */
    for (size_t i = 0; i < size; i++)
        map[i] = pattern(i);
    inferd_storage *v = view_ok(r, "made", 4000, size - 4000, true);
    volatile uint8_t *p = inferd_storage_data(v);
    assert_memory_equal((const void *)p, map + 4000, size - 4000);
    p[0] = 0x11;
    p[size - 4001] = 0x22;
    assert_int_equal(map[4000], 0x11);
    assert_int_equal(map[size - 1], 0x22);
    assert_int_equal(status_of(r, "made").views, 1);
    inferd_storage_unref(v);

    /* A second one has another key. */
    char key2[INFERD_REGION_KEY_MAX];
    create_ok(r, "made2", 1, NULL, key2);
    assert_string_not_equal(key, key2);
    assert_string_equal(status_of(r, "made2").session, "");
    expect_counts(r, 2, size + 1);

    /* Unregistered: the object is unlinked, the quota free again. */
    unregister_ok(r, "made");
    assert_false(shm_exists(key));
    assert_true(shm_exists(key2));
    expect_counts(r, 1, 1);
    /* The client's mapping and descriptor still work. */
    assert_int_equal(map[4000], 0x11);
    munmap(map, size);
    close(fd);

    inferd_regions_destroy(r);
    assert_false(shm_exists(key2));
    expect_nothing_left();
}

static void test_region_create_default_prefix(void **state)
{
    (void)state;
    inferd_regions_opts opts = inferd_regions_opts_default();
    inferd_regions *r = regions_new(&opts);
    char key[INFERD_REGION_KEY_MAX];
    create_ok(r, "dflt", 4096, NULL, key);
    assert_memory_equal(key, "/inferd-", 8);
    assert_true(shm_exists(key));
    unregister_ok(r, "dflt");
    assert_false(shm_exists(key));
    inferd_regions_destroy(r);
    expect_nothing_left();
}

static void test_region_create_errors(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    char key[INFERD_REGION_KEY_MAX];
    long before = count_created();

    memset(key, 'x', sizeof(key));
    expect_err_param(inferd_regions_create_region(r, "zero", 0, NULL, key, fresh(&err)),
                     INFERD_E_RANGE, &err);
    assert_int_equal(key[0], 'x'); /* out-params written only on success */
    expect_gone(r, "zero");

    register_ok(r, "reg", o.key, 0, 16, NULL);
    create_ok(r, "cre", 16, NULL, key);
    char key2[INFERD_REGION_KEY_MAX];
    expect_err(inferd_regions_create_region(r, "reg", 16, NULL, key2, fresh(&err)), INFERD_E_EXISTS,
               &err);
    expect_err(inferd_regions_create_region(r, "cre", 16, NULL, key2, fresh(&err)), INFERD_E_EXISTS,
               &err);
    expect_err(inferd_regions_register(r, "cre", o.key, 0, 16, NULL, fresh(&err)), INFERD_E_EXISTS,
               &err);
    expect_err_param(inferd_regions_create_region(r, "", 16, NULL, key2, fresh(&err)),
                     INFERD_E_INVALID, &err);
    expect_err_param(inferd_regions_create_region(r, "x/y", 16, NULL, key2, fresh(&err)),
                     INFERD_E_INVALID, &err);
    char long_session[INFERD_REGION_SESSION_MAX + 1];
    memset(long_session, 's', sizeof(long_session) - 1);
    long_session[sizeof(long_session) - 1] = '\0';
    expect_err(inferd_regions_create_region(r, "sess", 16, long_session, key2, fresh(&err)),
               INFERD_E_INVALID, &err);
    expect_gone(r, "sess");
    /* Larger than any quota (and than memory). */
    expect_err(inferd_regions_create_region(r, "huge", UINT64_MAX, NULL, key2, fresh(&err)),
               INFERD_E_QUOTA, &err);
    expect_counts(r, 2, 16);
    if (before >= 0)
        assert_int_equal(count_created(), before + 1);

    inferd_regions_destroy(r);
    assert_false(shm_exists(key));
    if (before >= 0)
        assert_int_equal(count_created(), before);
    obj_free(&o);
    expect_nothing_left();
}

/* Shared memory full: more than /dev/shm holds (tmpfs refuses that at
 * once, without filling itself first) is INFERD_E_IO, and leaves nothing. */
static void test_region_create_shm_full(void **state)
{
    (void)state;
    inferd_shm_caps caps;
    inferd_shm_caps_detect(&caps);
    if (caps.shm_total_bytes == 0)
        skip();
    inferd_regions_opts opts = opts_with_prefix();
    opts.max_bytes = UINT64_MAX;
    opts.session_bytes = UINT64_MAX;
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    char key[INFERD_REGION_KEY_MAX];
    long before = count_created();
    expect_err(inferd_regions_create_region(r, "big", caps.shm_total_bytes + (64u << 20), NULL, key,
                                            fresh(&err)),
               INFERD_E_IO, &err);
    expect_gone(r, "big");
    expect_counts(r, 0, 0);
    if (before >= 0)
        assert_int_equal(count_created(), before);
    inferd_regions_destroy(r);
    expect_nothing_left();
}

/* session_regions: per session; another session is not affected. */
static void test_region_quota_session_regions(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    opts.session_regions = 2;
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    char k1[INFERD_REGION_KEY_MAX], k2[INFERD_REGION_KEY_MAX], k3[INFERD_REGION_KEY_MAX];

    create_ok(r, "a1", 4096, "A", k1);
    create_ok(r, "a2", 4096, "A", k2);
    memset(k3, 'x', sizeof(k3));
    expect_err(inferd_regions_create_region(r, "a3", 4096, "A", k3, fresh(&err)), INFERD_E_QUOTA,
               &err);
    assert_int_equal(k3[0], 'x');
    expect_gone(r, "a3");
    create_ok(r, "b1", 4096, "B", k3);
    expect_counts(r, 3, 3 * 4096);
    unregister_ok(r, "a1");
    assert_false(shm_exists(k1));
    create_ok(r, "a3", 4096, "A", k1);
    assert_string_equal(status_of(r, "a3").session, "A");
    inferd_regions_destroy(r);
    assert_false(shm_exists(k1));
    assert_false(shm_exists(k2));
    assert_false(shm_exists(k3));
    expect_nothing_left();
}

/* session_bytes: per session, met exactly and passed. The global cap's
 * message differs from the session's (it says which). */
static void test_region_quota_bytes(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    opts.session_bytes = 8192;
    opts.max_bytes = 20000;
    inferd_regions *r = regions_new(&opts);
    inferd_error err_session, err_global, err;
    char k[6][INFERD_REGION_KEY_MAX];

    create_ok(r, "a1", 4096, "A", k[0]);
    expect_err(inferd_regions_create_region(r, "a2", 4097, "A", k[1], fresh(&err_session)),
               INFERD_E_QUOTA, &err_session);
    create_ok(r, "a2", 4096, "A", k[1]); /* exactly 8192 */
    expect_err(inferd_regions_create_region(r, "a3", 1, "A", k[2], fresh(&err)), INFERD_E_QUOTA,
               &err);
    create_ok(r, "b1", 8192, "B", k[2]); /* B has its own */
    expect_counts(r, 3, 16384);
    /* Global: 16384 + 4000 = 20384 > 20000, though C's quota allows it. */
    expect_err(inferd_regions_create_region(r, "c1", 4000, "C", k[3], fresh(&err_global)),
               INFERD_E_QUOTA, &err_global);
    assert_string_not_equal(err_session.msg, err_global.msg);
    create_ok(r, "c1", 20000 - 16384, "C", k[3]); /* exactly max_bytes */
    expect_err(inferd_regions_create_region(r, "c2", 1, "C", k[4], fresh(&err)), INFERD_E_QUOTA,
               &err);
    expect_counts(r, 4, 20000);
    /* Registered regions do not count against the bytes. */
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    register_ok(r, "reg", o.key, 0, OBJ_SIZE, "C");
    expect_counts(r, 5, 20000);
    /* Freed again. */
    unregister_ok(r, "b1");
    assert_false(shm_exists(k[2]));
    expect_counts(r, 4, 20000 - 8192);
    create_ok(r, "c2", 4096, "C", k[4]);
    unregister_ok(r, "a1");
    create_ok(r, "a3", 4096, "A", k[5]);
    inferd_regions_destroy(r);
    for (int i = 0; i < 6; i++)
        assert_false(shm_exists(k[i]));
    obj_free(&o);
    expect_nothing_left();
}

/* ---- unregister ---- */

static void test_region_unregister(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    char k1[INFERD_REGION_KEY_MAX], k2[INFERD_REGION_KEY_MAX];

    expect_err(inferd_regions_unregister(r, "nope", fresh(&err)), INFERD_E_NOT_FOUND, &err);
    register_ok(r, "r1", o.key, 0, 100, NULL);
    register_ok(r, "r2", o.key, 100, 100, NULL);
    create_ok(r, "c1", 4096, "s", k1);
    create_ok(r, "c2", 4096, "s", k2);
    unregister_ok(r, "r1");
    expect_gone(r, "r1");
    expect_err(inferd_regions_unregister(r, "r1", fresh(&err)), INFERD_E_NOT_FOUND, &err);
    expect_counts(r, 3, 8192);
    /* The client's object is the client's: still there. */
    assert_true(shm_exists(o.key));

    unregister_ok(r, NULL);
    expect_counts(r, 0, 0);
    expect_gone(r, "r2");
    expect_gone(r, "c1");
    assert_false(shm_exists(k1));
    assert_false(shm_exists(k2));
    assert_true(shm_exists(o.key));
    unregister_ok(r, NULL); /* nothing left: fine */

    /* The names are free again. */
    register_ok(r, "r1", o.key, 0, 100, NULL);
    create_ok(r, "c1", 4096, "s", k1);
    expect_counts(r, 2, 4096);
    inferd_regions_destroy(r);
    assert_false(shm_exists(k1));
    obj_free(&o);
    expect_nothing_left();
}

/* A registered region in use: its name goes at once, its memory stays for
 * the view until the view goes. */
static void test_region_unregister_in_use_registered(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);

    register_ok(r, "busy", o.key, 4096, 8192, NULL);
    inferd_storage *v = view_ok(r, "busy", 0, 8192, true);
    volatile uint8_t *p = inferd_storage_data(v);
    unregister_ok(r, "busy");
    expect_gone(r, "busy");
    inferd_storage *w = NULL;
    inferd_error err;
    expect_err(inferd_regions_view(r, "busy", 0, 16, false, &w, fresh(&err)), INFERD_E_NOT_FOUND,
               &err);
    assert_null(w);

    /* The old view still reads and writes the object. */
    assert_memory_equal((const void *)p, o.map + 4096, 8192);
    p[10] = 0x99;
    assert_int_equal(o.map[4096 + 10], 0x99);
    assert_int_equal(inferd_regions_check(v, fresh(&err)), 0);

    /* The name can be taken again, for another window. */
    register_ok(r, "busy", o.key, 0, 100, NULL);
    inferd_region_info info = status_of(r, "busy");
    assert_int_equal(info.offset, 0);
    assert_int_equal(info.byte_size, 100);
    assert_int_equal(info.views, 0);
    w = view_ok(r, "busy", 0, 100, false);
    assert_memory_equal(inferd_storage_data(w), o.map, 100);
    assert_false(inferd_regions_overlap(v, w));

    inferd_storage_unref(v);
    assert_int_equal(status_of(r, "busy").views, 1);
    inferd_storage_unref(w);
    expect_counts(r, 1, 0);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* A created region in use: name gone at once; the object is unlinked by
 * the time its last view goes, and the view works until then. */
static void test_region_unregister_in_use_created(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    opts.session_regions = 1;
    inferd_regions *r = regions_new(&opts);
    char key[INFERD_REGION_KEY_MAX], key2[INFERD_REGION_KEY_MAX];

    create_ok(r, "c", 8192, "s", key);
    inferd_storage *v = view_ok(r, "c", 0, 8192, true);
    inferd_storage *v2 = inferd_storage_ref(v);
    volatile uint8_t *p = inferd_storage_data(v);
    p[0] = 1;
    p[8191] = 2;
    unregister_ok(r, "c");
    expect_gone(r, "c");
    assert_int_equal(p[0], 1);
    assert_int_equal(p[8191], 2);
    p[100] = 3;
    assert_int_equal(p[100], 3);
    inferd_error err;
    assert_int_equal(inferd_regions_check(v, fresh(&err)), 0);

    /* The name is free. */
    create_ok(r, "c", 4096, "t", key2);
    assert_string_not_equal(key, key2);

    inferd_storage_unref(v);
    assert_int_equal(p[8191], 2); /* v2 still holds it */
    inferd_storage_unref(v2);
    assert_false(shm_exists(key));
    expect_counts(r, 1, 4096);
    /* The session's quota was given back. */
    unregister_ok(r, "c");
    create_ok(r, "c", 4096, "s", key2);
    inferd_regions_destroy(r);
    assert_false(shm_exists(key2));
    expect_nothing_left();
}

/* Destroying the table with views alive: the views keep their memory; the
 * created objects are unlinked. */
static void test_region_destroy_with_live_views(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    char key[INFERD_REGION_KEY_MAX], key2[INFERD_REGION_KEY_MAX];

    register_ok(r, "reg", o.key, 1000, 3000, NULL);
    create_ok(r, "cre", 4096, NULL, key);
    create_ok(r, "idle", 4096, NULL, key2);
    inferd_storage *a = view_ok(r, "reg", 0, 3000, false);
    inferd_storage *b = view_ok(r, "cre", 0, 4096, true);
    ((volatile uint8_t *)inferd_storage_data(b))[7] = 7;
    inferd_regions_destroy(r);
    assert_false(shm_exists(key2));
    assert_memory_equal(inferd_storage_data(a), o.map + 1000, 3000);
    assert_int_equal(((volatile uint8_t *)inferd_storage_data(b))[7], 7);
    inferd_error err;
    assert_int_equal(inferd_regions_check(a, fresh(&err)), 0);
    assert_int_equal(inferd_regions_check(b, fresh(&err)), 0);
    inferd_storage_unref(a);
    inferd_storage_unref(b);
    assert_false(shm_exists(key));
    obj_free(&o);
    expect_nothing_left();
}

/* ---- view ---- */

static void test_region_view_bounds_and_kind(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;

    register_ok(r, "w", o.key, 1000, 4096, NULL);
    inferd_storage *v = view_ok(r, "w", 0, 4096, false);
    assert_memory_equal(inferd_storage_data(v), o.map + 1000, 4096);
    assert_int_equal(inferd_regions_check(v, fresh(&err)), 0);
    inferd_storage_unref(v);
    v = view_ok(r, "w", 4095, 1, true);
    assert_int_equal(*(uint8_t *)inferd_storage_data(v), pattern(1000 + 4095));
    inferd_storage_unref(v);

    static const struct {
        uint64_t offset, size;
    } bad[] = {
        {1, 4096},
        {0, 4097},
        {4096, 1},
        {4097, 1},
        {8192, 16},
        {UINT64_MAX, 2},           /* wraps to 1 */
        {2, UINT64_MAX},           /* wraps to 1 */
        {UINT64_MAX, UINT64_MAX},  /* wraps */
        {1ull << 63, 1ull << 63},  /* wraps to 0 */
        {UINT64_MAX - 4095, 4096}, /* wraps to 0 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        inferd_storage *s = NULL;
        int rc =
            inferd_regions_view(r, "w", bad[i].offset, bad[i].size, i % 2 == 0, &s, fresh(&err));
        if (rc != INFERD_E_RANGE)
            print_error("view %zu [%llu, +%llu): %d\n", i, (unsigned long long)bad[i].offset,
                        (unsigned long long)bad[i].size, rc);
        expect_err(rc, INFERD_E_RANGE, &err);
        assert_null(s);
    }
    inferd_storage *s = NULL;
    expect_err(inferd_regions_view(r, "nope", 0, 1, false, &s, fresh(&err)), INFERD_E_NOT_FOUND,
               &err);
    assert_null(s);
    assert_int_equal(status_of(r, "w").views, 0);

    /* A heap storage, and a borrowed one, are not region views. */
    inferd_storage *heap = NULL;
    assert_int_equal(inferd_storage_heap(64, &heap, fresh(&err)), 0);
    assert_int_equal(inferd_storage_kind_of(heap), INFERD_STORAGE_HEAP);
    expect_err(inferd_regions_check(heap, fresh(&err)), INFERD_E_INVALID, &err);
    static uint8_t mem[64];
    inferd_storage *borrowed = NULL;
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_BORROWED, mem, sizeof(mem), NULL, NULL,
                                         &borrowed, fresh(&err)),
                     0);
    expect_err(inferd_regions_check(borrowed, fresh(&err)), INFERD_E_INVALID, &err);
    inferd_storage_unref(heap);
    inferd_storage_unref(borrowed);

    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* A view is one storage: more references to it are still one view, which
 * goes with its last reference. */
static void test_region_view_refs(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);

    register_ok(r, "w", o.key, 0, OBJ_SIZE, NULL);
    inferd_storage *a = view_ok(r, "w", 0, 64, false);
    inferd_storage *b = view_ok(r, "w", 64, 64, false);
    assert_int_equal(inferd_storage_refs(a), 1);
    assert_ptr_equal(inferd_storage_ref(a), a);
    assert_int_equal(inferd_storage_refs(a), 2);
    assert_int_equal(status_of(r, "w").views, 2);
    inferd_storage_unref(a);
    assert_int_equal(status_of(r, "w").views, 2);
    inferd_storage_unref(b);
    assert_int_equal(status_of(r, "w").views, 1);
    assert_memory_equal(inferd_storage_data(a), o.map, 64);
    inferd_storage_unref(a);
    assert_int_equal(status_of(r, "w").views, 0);

    /* A tensor over a view holds it. */
    inferd_tensor t;
    int64_t shape[2] = {4, 8};
    inferd_error err;
    a = view_ok(r, "w", 256, 128, true);
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, NULL, 0, a, fresh(&err)), 0);
    inferd_storage_unref(a);
    assert_int_equal(status_of(r, "w").views, 1);
    float *f = inferd_tensor_data(&t);
    f[0] = 1.5f;
    float back;
    memcpy(&back, o.map + 256, sizeof(back));
    assert_true(back == 1.5f);
    inferd_tensor_fini(&t);
    assert_int_equal(status_of(r, "w").views, 0);

    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* ---- clients that misbehave ---- */

/* The client truncates its object under a view: a new view and a check of
 * the old one say INFERD_E_IO; reading past the new end reads zeros, not
 * SIGBUS, and the region is broken from then on. */
static void test_region_truncated_read(void **state)
{
    (void)state;
    client_obj o, other;
    obj_make(&o, OBJ_SIZE);
    obj_make(&other, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;

    register_ok(r, "t", o.key, 1000, OBJ_SIZE - 2000, NULL);
    register_ok(r, "other", other.key, 0, OBJ_SIZE, NULL);
    inferd_storage *v = view_ok(r, "t", 0, OBJ_SIZE - 2000, false);
    inferd_storage *keep = view_ok(r, "other", 0, OBJ_SIZE, false);
    const volatile uint8_t *p = inferd_storage_data(v);
    assert_int_equal(p[OBJ_SIZE - 2001], pattern(OBJ_SIZE - 1001));

    assert_int_equal(ftruncate(o.fd, 0), 0);
    munmap(o.map, o.size); /* the client's own mapping would fault too */
    o.map = NULL;

    inferd_storage *s = NULL;
    expect_err(inferd_regions_view(r, "t", 0, 16, false, &s, fresh(&err)), INFERD_E_IO, &err);
    assert_null(s);
    expect_err(inferd_regions_check(v, fresh(&err)), INFERD_E_IO, &err);

    /* Past the new end: zeros instead of SIGBUS. */
    assert_int_equal(p[OBJ_SIZE - 2001], 0);
    assert_int_equal(p[0], 0);
    uint8_t sum = 0;
    for (size_t i = 0; i < OBJ_SIZE - 2000; i += 97)
        sum |= p[i];
    assert_int_equal(sum, 0);
    inferd_region_info info = status_of(r, "t");
    assert_true(info.broken);
    assert_int_equal(info.views, 1);
    expect_err(inferd_regions_check(v, fresh(&err)), INFERD_E_IO, &err);

    /* Unusable even once the client makes it whole again. */
    assert_int_equal(ftruncate(o.fd, OBJ_SIZE), 0);
    expect_err(inferd_regions_view(r, "t", 0, 16, false, &s, fresh(&err)), INFERD_E_IO, &err);
    assert_null(s);
    assert_true(status_of(r, "t").broken);

    /* Other regions are not affected. */
    assert_false(status_of(r, "other").broken);
    assert_int_equal(inferd_regions_check(keep, fresh(&err)), 0);
    assert_memory_equal(inferd_storage_data(keep), other.map, OBJ_SIZE);
    s = view_ok(r, "other", 10, 10, true);
    inferd_storage_unref(s);

    inferd_storage_unref(v);
    inferd_storage_unref(keep);
    /* A broken region can still be unregistered, its name reused. */
    unregister_ok(r, "t");
    register_ok(r, "t", other.key, 0, 16, NULL);
    inferd_regions_destroy(r);
    obj_free(&o);
    obj_free(&other);
    expect_nothing_left();
}

/* Truncated, then read at once (no check first): zeros, broken. */
static void test_region_truncated_read_first(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, 4 * 4096);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;

    register_ok(r, "t", o.key, 0, 4 * 4096, NULL);
    inferd_storage *v = view_ok(r, "t", 4096, 3 * 4096, false);
    const volatile uint8_t *p = inferd_storage_data(v);
    assert_false(status_of(r, "t").broken);
    assert_int_equal(ftruncate(o.fd, 4096), 0); /* keeps the first page only */
    assert_int_equal(p[2 * 4096 + 5], 0);
    assert_true(status_of(r, "t").broken);
    expect_err(inferd_regions_check(v, fresh(&err)), INFERD_E_IO, &err);
    inferd_storage_unref(v);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* Truncated under a writable view: writing does not crash; the check says
 * the write is lost. */
static void test_region_truncated_write(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    char key[INFERD_REGION_KEY_MAX];

    client_obj o;
    obj_make(&o, OBJ_SIZE);
    register_ok(r, "t", o.key, 4096, 8192, NULL);
    inferd_storage *v = view_ok(r, "t", 0, 8192, true);
    volatile uint8_t *p = inferd_storage_data(v);
    p[0] = 1;
    assert_int_equal(ftruncate(o.fd, 0), 0);
    p[8191] = 9;
    p[0] = 2;
    expect_err(inferd_regions_check(v, fresh(&err)), INFERD_E_IO, &err);
    assert_true(status_of(r, "t").broken);
    inferd_storage_unref(v);

    /* The same for a created region whose client truncates it. */
    create_ok(r, "c", 8192, NULL, key);
    v = view_ok(r, "c", 0, 8192, true);
    p = inferd_storage_data(v);
    int fd = shm_open(key, O_RDWR | O_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 0), 0);
    close(fd);
    p[4096] = 5;
    expect_err(inferd_regions_check(v, fresh(&err)), INFERD_E_IO, &err);
    assert_true(status_of(r, "c").broken);
    inferd_storage *s = NULL;
    expect_err(inferd_regions_view(r, "c", 0, 1, true, &s, fresh(&err)), INFERD_E_IO, &err);
    assert_null(s);
    inferd_storage_unref(v);
    unregister_ok(r, "c");
    assert_false(shm_exists(key));

    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* The client unlinks its object, unmaps it, closes it: the worker's
 * mapping stays. */
static void test_region_client_unlinks_and_unmaps(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;

    register_ok(r, "u", o.key, 1000, 8192, NULL);
    register_ok(r, "m", o.key, 0, OBJ_SIZE, NULL);
    inferd_storage *v = view_ok(r, "u", 0, 8192, true);
    assert_int_equal(shm_unlink(o.key), 0);
    assert_memory_equal(inferd_storage_data(v), o.map + 1000, 8192);
    inferd_storage *w = view_ok(r, "u", 100, 100, false);
    assert_memory_equal(inferd_storage_data(w), o.map + 1100, 100);
    ((volatile uint8_t *)inferd_storage_data(v))[100] = 0x42;
    assert_int_equal(o.map[1100], 0x42);
    assert_int_equal(((volatile uint8_t *)inferd_storage_data(w))[0], 0x42);
    assert_int_equal(inferd_regions_check(v, fresh(&err)), 0);

    uint8_t copy[OBJ_SIZE];
    memcpy(copy, o.map, OBJ_SIZE);
    munmap(o.map, o.size);
    o.map = NULL;
    close(o.fd);
    o.fd = -1;
    assert_memory_equal(inferd_storage_data(w), copy + 1100, 100);
    inferd_storage *x = view_ok(r, "m", 0, OBJ_SIZE, false);
    assert_memory_equal(inferd_storage_data(x), copy, OBJ_SIZE);
    assert_int_equal(inferd_regions_check(x, fresh(&err)), 0);
    assert_false(status_of(r, "u").broken);
    assert_false(status_of(r, "m").broken);

    inferd_storage_unref(v);
    inferd_storage_unref(w);
    inferd_storage_unref(x);
    /* Gone from /dev/shm: a new registration cannot find it. */
    expect_err(inferd_regions_register(r, "again", o.key, 0, 16, NULL, fresh(&err)),
               INFERD_E_NOT_FOUND, &err);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* ---- overlap ---- */

static void test_region_overlap(void **state)
{
    (void)state;
    client_obj o, o2;
    obj_make(&o, OBJ_SIZE);
    obj_make(&o2, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;

    register_ok(r, "a", o.key, 0, 16 * KIB, NULL);
    inferd_storage *v1 = view_ok(r, "a", 0, 100, false);
    inferd_storage *v2 = view_ok(r, "a", 50, 100, true);
    inferd_storage *v3 = view_ok(r, "a", 100, 100, true); /* v1's end == its start */
    inferd_storage *v4 = view_ok(r, "a", 200, 10, false);
    inferd_storage *v5 = view_ok(r, "a", 0, 100, false); /* the same bytes as v1 */
    inferd_storage *v6 = view_ok(r, "a", 99, 1, false);  /* v1's last byte */
    assert_true(inferd_regions_overlap(v1, v2));
    assert_true(inferd_regions_overlap(v2, v1));
    assert_true(inferd_regions_overlap(v2, v3));
    assert_false(inferd_regions_overlap(v1, v3));
    assert_false(inferd_regions_overlap(v3, v1));
    assert_false(inferd_regions_overlap(v1, v4));
    assert_false(inferd_regions_overlap(v3, v4)); /* adjacent */
    assert_true(inferd_regions_overlap(v1, v5));
    assert_true(inferd_regions_overlap(v1, v1));
    assert_true(inferd_regions_overlap(v1, v6));
    assert_false(inferd_regions_overlap(v6, v3));

    /* Two regions over one object: the object's bytes count. b's view
     * covers object bytes [3000, 3100); c starts at 3000. */
    register_ok(r, "b", o.key, 1000, 8192, NULL);
    register_ok(r, "c", o.key, 3000, 8192, NULL);
    inferd_storage *vb = view_ok(r, "b", 2000, 100, false);
    inferd_storage *vc = view_ok(r, "c", 0, 10, true);
    inferd_storage *vc2 = view_ok(r, "c", 100, 10, true); /* [3100, 3110): adjacent */
    inferd_storage *vc3 = view_ok(r, "c", 99, 10, true);  /* [3099, 3109) */
    assert_true(inferd_regions_overlap(vb, vc));
    assert_true(inferd_regions_overlap(vc, vb));
    assert_false(inferd_regions_overlap(vb, vc2));
    assert_true(inferd_regions_overlap(vb, vc3));
    /* a's [0,100) is object [0,100); b starts at 1000. */
    assert_false(inferd_regions_overlap(v1, vb));
    inferd_storage *va = view_ok(r, "a", 3005, 1, false); /* in vb and vc */
    assert_true(inferd_regions_overlap(va, vb));
    assert_true(inferd_regions_overlap(va, vc));

    /* Another object, the same offsets: no. */
    register_ok(r, "d", o2.key, 0, 16 * KIB, NULL);
    inferd_storage *vd = view_ok(r, "d", 0, 100, true);
    assert_false(inferd_regions_overlap(v1, vd));
    assert_false(inferd_regions_overlap(vd, v1));

    /* Not region views. */
    inferd_storage *heap = NULL;
    assert_int_equal(inferd_storage_heap(128, &heap, fresh(&err)), 0);
    assert_false(inferd_regions_overlap(v1, heap));
    assert_false(inferd_regions_overlap(heap, v1));
    assert_false(inferd_regions_overlap(heap, heap));

    inferd_storage *all[] = {v1, v2, v3, v4, v5, v6, vb, vc, vc2, vc3, va, vd, heap};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        inferd_storage_unref(all[i]);
    inferd_regions_destroy(r);
    obj_free(&o);
    obj_free(&o2);
    expect_nothing_left();
}

/* The client registers the object the worker created for it (its key) as
 * a second region: their views share bytes of one object. */
static void test_region_overlap_created_and_registered(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    char key[INFERD_REGION_KEY_MAX];

    create_ok(r, "out", 8192, NULL, key);
    register_ok(r, "in", key, 4096, 4096, NULL);
    inferd_storage *a = view_ok(r, "out", 4096, 16, true);
    inferd_storage *b = view_ok(r, "in", 0, 16, false);
    inferd_storage *c = view_ok(r, "out", 0, 4096, true);
    assert_true(inferd_regions_overlap(a, b));
    assert_false(inferd_regions_overlap(c, b));
    ((volatile uint8_t *)inferd_storage_data(a))[3] = 0x77;
    assert_int_equal(((volatile uint8_t *)inferd_storage_data(b))[3], 0x77);
    inferd_storage_unref(a);
    inferd_storage_unref(b);
    inferd_storage_unref(c);
    inferd_regions_destroy(r);
    assert_false(shm_exists(key));
    expect_nothing_left();
}

/* ---- sweep ---- */

static void test_region_sweep(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    opts.ttl_ms = 300;
    inferd_regions *r = regions_new(&opts);
    char key_idle[INFERD_REGION_KEY_MAX], key_busy[INFERD_REGION_KEY_MAX];
    uint32_t n;
    uint64_t bytes, expired;

    register_ok(r, "idle", o.key, 0, 100, NULL);
    register_ok(r, "busy", o.key, 0, 100, NULL);
    register_ok(r, "late", o.key, 0, 100, NULL);
    create_ok(r, "cidle", 4096, "s", key_idle);
    create_ok(r, "cbusy", 4096, "s", key_busy);
    inferd_storage *vb = view_ok(r, "busy", 0, 10, false);
    inferd_storage *vcb = view_ok(r, "cbusy", 0, 10, false);
    assert_int_equal(inferd_regions_sweep(r), 0); /* nothing idle long enough */
    inferd_regions_counts(r, &n, &bytes, &expired);
    assert_int_equal(expired, 0);

    sleep_ms(400);
    assert_true(status_of(r, "idle").idle_ms >= 350);
    /* "late" is used now: a view made resets its idle time. */
    inferd_storage_unref(view_ok(r, "late", 0, 1, false));
    assert_true(status_of(r, "late").idle_ms < 300);
    assert_int_equal(inferd_regions_sweep(r), 2);
    expect_gone(r, "idle");
    expect_gone(r, "cidle");
    assert_false(shm_exists(key_idle));
    assert_int_equal(status_of(r, "busy").views, 1);
    assert_int_equal(status_of(r, "cbusy").views, 1);
    status_of(r, "late");
    inferd_regions_counts(r, &n, &bytes, &expired);
    assert_int_equal(n, 3);
    assert_int_equal(bytes, 4096);
    assert_int_equal(expired, 2);

    /* A live view keeps its region however long it lives. */
    sleep_ms(400);
    assert_int_equal(inferd_regions_sweep(r), 1); /* "late" */
    expect_gone(r, "late");
    status_of(r, "busy");
    status_of(r, "cbusy");
    assert_true(shm_exists(key_busy));
    assert_memory_equal(inferd_storage_data(vb), o.map, 10);

    /* Once the views go, the regions are idle from then: kept for the TTL,
     * then swept. */
    inferd_storage_unref(vb);
    inferd_storage_unref(vcb);
    assert_int_equal(inferd_regions_sweep(r), 0);
    sleep_ms(400);
    assert_int_equal(inferd_regions_sweep(r), 2);
    assert_false(shm_exists(key_busy));
    inferd_regions_counts(r, &n, &bytes, &expired);
    assert_int_equal(n, 0);
    assert_int_equal(bytes, 0);
    assert_int_equal(expired, 5);
    assert_int_equal(inferd_regions_sweep(r), 0);

    /* The names are free again. */
    register_ok(r, "idle", o.key, 0, 100, NULL);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

static void test_region_sweep_ttl_zero(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    opts.ttl_ms = 0;
    inferd_regions *r = regions_new(&opts);
    char key[INFERD_REGION_KEY_MAX];
    register_ok(r, "never", o.key, 0, 100, NULL);
    create_ok(r, "cnever", 4096, NULL, key);
    sleep_ms(100);
    assert_int_equal(inferd_regions_sweep(r), 0);
    status_of(r, "never");
    status_of(r, "cnever");
    assert_true(shm_exists(key));
    uint32_t n;
    uint64_t bytes, expired;
    inferd_regions_counts(r, &n, &bytes, &expired);
    assert_int_equal(n, 2);
    assert_int_equal(expired, 0);
    inferd_regions_destroy(r);
    assert_false(shm_exists(key));
    obj_free(&o);
    expect_nothing_left();
}

/* idle_ms is 0 while a view is alive, however long, and counts from when
 * the last view went. */
static void test_region_idle_since_last_use(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    opts.ttl_ms = 0;
    inferd_regions *r = regions_new(&opts);
    register_ok(r, "held", o.key, 0, 100, NULL);
    inferd_storage *v = view_ok(r, "held", 0, 10, false);
    assert_int_equal(status_of(r, "held").idle_ms, 0);
    sleep_ms(300);
    assert_int_equal(status_of(r, "held").idle_ms, 0); /* in use */
    inferd_storage_unref(v);
    inferd_region_info info = status_of(r, "held");
    assert_int_equal(info.views, 0);
    assert_true(info.idle_ms < 250);
    sleep_ms(300);
    assert_true(status_of(r, "held").idle_ms >= 250);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* A TTL whose nanoseconds do not fit 64 bits (about 584 years, and then
 * some) is a very long TTL, not a short one. */
static void test_region_sweep_ttl_huge(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    /* The first two wrap to under a millisecond when made nanoseconds. */
    const uint64_t ttls[] = {UINT64_MAX / 1000000u + 1, 36893488147420ull, UINT64_MAX / 1000u,
                             UINT64_MAX};
    for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++) {
        opts.ttl_ms = ttls[i];
        inferd_regions *r = regions_new(&opts);
        register_ok(r, "kept", o.key, 0, 100, NULL);
        sleep_ms(20);
        size_t n = inferd_regions_sweep(r);
        if (n != 0)
            print_error("ttl_ms %llu: swept after 20 ms\n", (unsigned long long)ttls[i]);
        assert_int_equal(n, 0);
        status_of(r, "kept");
        inferd_regions_destroy(r);
    }
    obj_free(&o);
    expect_nothing_left();
}

/* ---- the machine ---- */

static void test_region_shm_caps(void **state)
{
    (void)state;
    inferd_shm_caps caps;
    memset(&caps, 0xff, sizeof(caps));
    inferd_shm_caps_detect(&caps);
    assert_true(caps.shm);
    assert_true(caps.memfd);
    struct stat st;
    if (stat("/dev/shm", &st) == 0) {
        assert_true(caps.shm_total_bytes > 0);
        assert_true(caps.shm_free_bytes > 0);
        assert_true(caps.shm_free_bytes <= caps.shm_total_bytes);
    } else {
        assert_int_equal(caps.shm_total_bytes, 0);
    }
    expect_nothing_left();
}

/* ---- allocation failures ---- */

static void test_region_alloc_fail_create_table(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    for (long nth = 1;; nth++) {
        assert_true(nth < ALLOC_TRIES);
        inferd_regions *r = NULL;
        inferd_error err;
        inferd_alloc_fail_after(nth);
        int rc = inferd_regions_create(&opts, &r, fresh(&err));
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_non_null(r);
            inferd_regions_destroy(r);
            break;
        }
        expect_err(rc, INFERD_E_NOMEM, &err);
        assert_null(r);
    }
    expect_nothing_left();
}

static void test_region_alloc_fail_register(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    register_ok(r, "first", o.key, 0, 16, NULL);
    for (long nth = 1;; nth++) {
        assert_true(nth < ALLOC_TRIES);
        inferd_error err;
        inferd_alloc_fail_after(nth);
        int rc = inferd_regions_register(r, "win", o.key, 1000, 4096, "sess", fresh(&err));
        inferd_alloc_fail_after(0);
        if (rc == 0)
            break;
        expect_err(rc, INFERD_E_NOMEM, &err);
        expect_gone(r, "win");
        expect_counts(r, 1, 0);
    }
    inferd_storage *v = view_ok(r, "win", 0, 4096, true);
    assert_memory_equal(inferd_storage_data(v), o.map + 1000, 4096);
    inferd_storage_unref(v);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

static void test_region_alloc_fail_create_region(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    opts.session_regions = 2;
    inferd_regions *r = regions_new(&opts);
    char key0[INFERD_REGION_KEY_MAX], key[INFERD_REGION_KEY_MAX];
    create_ok(r, "first", 4096, "s", key0);
    long before = count_created();
    for (long nth = 1;; nth++) {
        assert_true(nth < ALLOC_TRIES);
        inferd_error err;
        memset(key, 0, sizeof(key));
        inferd_alloc_fail_after(nth);
        int rc = inferd_regions_create_region(r, "made", 8192, "s", key, fresh(&err));
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            remember_key(key);
            break;
        }
        expect_err(rc, INFERD_E_NOMEM, &err);
        expect_gone(r, "made");
        expect_counts(r, 1, 4096);
        /* No object left behind. */
        if (before >= 0)
            assert_int_equal(count_created(), before);
    }
    assert_true(shm_exists(key));
    if (before >= 0)
        assert_int_equal(count_created(), before + 1);
    /* The failures gave the session's quota back: 2 regions, and no more. */
    expect_counts(r, 2, 4096 + 8192);
    inferd_error err;
    char key2[INFERD_REGION_KEY_MAX];
    expect_err(inferd_regions_create_region(r, "third", 1, "s", key2, fresh(&err)), INFERD_E_QUOTA,
               &err);
    inferd_regions_destroy(r);
    assert_false(shm_exists(key));
    assert_false(shm_exists(key0));
    expect_nothing_left();
}

static void test_region_alloc_fail_view(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    register_ok(r, "w", o.key, 1000, 8192, NULL);
    inferd_storage *v = NULL;
    for (long nth = 1;; nth++) {
        assert_true(nth < ALLOC_TRIES);
        inferd_error err;
        v = NULL;
        inferd_alloc_fail_after(nth);
        int rc = inferd_regions_view(r, "w", 10, 100, true, &v, fresh(&err));
        inferd_alloc_fail_after(0);
        if (rc == 0)
            break;
        expect_err(rc, INFERD_E_NOMEM, &err);
        assert_null(v);
        assert_int_equal(status_of(r, "w").views, 0);
    }
    assert_non_null(v);
    assert_int_equal(status_of(r, "w").views, 1);
    assert_memory_equal(inferd_storage_data(v), o.map + 1010, 100);
    inferd_storage_unref(v);
    assert_int_equal(status_of(r, "w").views, 0);
    /* The region can go; nothing holds it. */
    unregister_ok(r, "w");
    expect_counts(r, 0, 0);
    inferd_regions_destroy(r);
    obj_free(&o);
    expect_nothing_left();
}

/* ---- threads ---- */

#define N_VIEWERS 4
#define N_VIEWS 3000
#define N_FLIPS 400

typedef struct race {
    inferd_regions *r;
    const char *key;
    atomic_int stop;
    atomic_int bad;
    atomic_long n_views;
} race;

/* The window is page 0 or page 1 of an object whose page i holds i + 1. */
static void *viewer_main(void *arg)
{
    race *rc = arg;
    for (int i = 0; i < N_VIEWS; i++) {
        inferd_storage *s = NULL;
        inferd_error err;
        int ret =
            inferd_regions_view(rc->r, "shared", (uint64_t)(i % 64), 64, i % 3 == 0, &s, &err);
        if (ret == INFERD_E_NOT_FOUND)
            continue;
        if (ret != 0 || !s || inferd_storage_kind_of(s) != INFERD_STORAGE_REGION) {
            atomic_fetch_add(&rc->bad, 1);
            continue;
        }
        const volatile uint8_t *p = inferd_storage_data(s);
        if ((p[0] != 1 && p[0] != 2) || p[63] != p[0])
            atomic_fetch_add(&rc->bad, 1);
        if (inferd_regions_check(s, NULL) != 0)
            atomic_fetch_add(&rc->bad, 1);
        atomic_fetch_add(&rc->n_views, 1);
        inferd_storage_unref(s);
    }
    return NULL;
}

static void *flipper_main(void *arg)
{
    race *rc = arg;
    for (int i = 0; i < N_FLIPS; i++) {
        inferd_error err;
        int ret = inferd_regions_unregister(rc->r, "shared", &err);
        if (ret != 0 && ret != INFERD_E_NOT_FOUND)
            atomic_fetch_add(&rc->bad, 1);
        ret = inferd_regions_register(rc->r, "shared", rc->key, (uint64_t)(i % 2) * 4096, 4096,
                                      NULL, &err);
        if (ret != 0)
            atomic_fetch_add(&rc->bad, 1);
        /* And a created region that comes and goes. */
        char key[INFERD_REGION_KEY_MAX];
        if (inferd_regions_create_region(rc->r, "scratch", 4096, "x", key, &err) != 0)
            atomic_fetch_add(&rc->bad, 1);
        size_t n;
        inferd_region_info info[4];
        if (inferd_regions_status(rc->r, NULL, info, 4, &n, &err) != 0 || n != 2)
            atomic_fetch_add(&rc->bad, 1);
        if (inferd_regions_unregister(rc->r, "scratch", &err) != 0)
            atomic_fetch_add(&rc->bad, 1);
    }
    return NULL;
}

static void test_region_threads(void **state)
{
    (void)state;
    client_obj o;
    obj_make(&o, 2 * 4096);
    memset(o.map, 1, 4096);
    memset(o.map + 4096, 2, 4096);
    inferd_regions_opts opts = opts_with_prefix();
    race rc = {.key = o.key};
    rc.r = regions_new(&opts);
    long before = count_created();
    register_ok(rc.r, "shared", o.key, 0, 4096, NULL);

    pthread_t viewers[N_VIEWERS], flipper;
    for (int i = 0; i < N_VIEWERS; i++)
        assert_int_equal(pthread_create(&viewers[i], NULL, viewer_main, &rc), 0);
    assert_int_equal(pthread_create(&flipper, NULL, flipper_main, &rc), 0);
    for (int i = 0; i < N_VIEWERS; i++)
        assert_int_equal(pthread_join(viewers[i], NULL), 0);
    assert_int_equal(pthread_join(flipper, NULL), 0);

    assert_int_equal(atomic_load(&rc.bad), 0);
    assert_true(atomic_load(&rc.n_views) > 0);
    inferd_region_info info = status_of(rc.r, "shared");
    assert_int_equal(info.views, 0);
    assert_int_equal(info.byte_size, 4096);
    expect_counts(rc.r, 1, 0);
    if (before >= 0)
        assert_int_equal(count_created(), before);
    unregister_ok(rc.r, NULL);
    expect_counts(rc.r, 0, 0);
    inferd_regions_destroy(rc.r);
    obj_free(&o);
    expect_nothing_left();
}

/* Counting without a buffer: status with cap 0 and no @p out. Last, as
 * an implementation that hands the NULL on (qsort, memcpy) stops the
 * UBSan build here. */
static void test_region_status_count_only(void **state)
{
    (void)state;
    inferd_regions_opts opts = opts_with_prefix();
    inferd_regions *r = regions_new(&opts);
    inferd_error err;
    size_t n = 99;
    assert_int_equal(inferd_regions_status(r, NULL, NULL, 0, &n, fresh(&err)), 0);
    assert_int_equal(n, 0);
    /* The client's object goes once registered (the regions keep their
     * mappings), so that a crash below leaves nothing in /dev/shm. */
    client_obj o;
    obj_make(&o, OBJ_SIZE);
    register_ok(r, "one", o.key, 0, 16, NULL);
    register_ok(r, "two", o.key, 0, 16, NULL);
    obj_free(&o);
    n = 99;
    assert_int_equal(inferd_regions_status(r, NULL, NULL, 0, &n, fresh(&err)), 0);
    assert_int_equal(n, 2);
    n = 99;
    assert_int_equal(inferd_regions_status(r, "two", NULL, 0, &n, fresh(&err)), 0);
    assert_int_equal(n, 1);
    inferd_regions_destroy(r);
    expect_nothing_left();
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_prefix, sizeof(g_prefix), "inferdt%ld", (long)getpid());
    return 0;
}

/* After each test: unlink whatever it left in /dev/shm (a failed test
 * leaves its objects), so that the next one starts clean. */
static int cleanup(void **state)
{
    (void)state;
    for (size_t i = 0; i < g_n_keys; i++)
        shm_unlink(g_keys[i]);
    g_n_keys = 0;
    char tag[2][48];
    snprintf(tag[0], sizeof(tag[0]), "%s-", g_prefix);
    snprintf(tag[1], sizeof(tag[1]), "inferd-test-%ld-", (long)getpid());
    DIR *d = opendir("/dev/shm");
    if (d) {
        struct dirent *e;
        char key[300];
        while ((e = readdir(d)) != NULL)
            for (int i = 0; i < 2; i++)
                if (strncmp(e->d_name, tag[i], strlen(tag[i])) == 0) {
                    snprintf(key, sizeof(key), "/%s", e->d_name);
                    shm_unlink(key);
                }
        closedir(d);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_region_opts_default, cleanup),
        cmocka_unit_test_teardown(test_region_register_window_zero_copy, cleanup),
        cmocka_unit_test_teardown(test_region_status_list, cleanup),
        cmocka_unit_test_teardown(test_region_register_errors, cleanup),
        cmocka_unit_test_teardown(test_region_register_quota, cleanup),
        cmocka_unit_test_teardown(test_region_read_only_object, cleanup),
        cmocka_unit_test_teardown(test_region_create_region, cleanup),
        cmocka_unit_test_teardown(test_region_create_default_prefix, cleanup),
        cmocka_unit_test_teardown(test_region_create_errors, cleanup),
        cmocka_unit_test_teardown(test_region_create_shm_full, cleanup),
        cmocka_unit_test_teardown(test_region_quota_session_regions, cleanup),
        cmocka_unit_test_teardown(test_region_quota_bytes, cleanup),
        cmocka_unit_test_teardown(test_region_unregister, cleanup),
        cmocka_unit_test_teardown(test_region_unregister_in_use_registered, cleanup),
        cmocka_unit_test_teardown(test_region_unregister_in_use_created, cleanup),
        cmocka_unit_test_teardown(test_region_destroy_with_live_views, cleanup),
        cmocka_unit_test_teardown(test_region_view_bounds_and_kind, cleanup),
        cmocka_unit_test_teardown(test_region_view_refs, cleanup),
        cmocka_unit_test_teardown(test_region_truncated_read, cleanup),
        cmocka_unit_test_teardown(test_region_truncated_read_first, cleanup),
        cmocka_unit_test_teardown(test_region_truncated_write, cleanup),
        cmocka_unit_test_teardown(test_region_client_unlinks_and_unmaps, cleanup),
        cmocka_unit_test_teardown(test_region_overlap, cleanup),
        cmocka_unit_test_teardown(test_region_overlap_created_and_registered, cleanup),
        cmocka_unit_test_teardown(test_region_sweep, cleanup),
        cmocka_unit_test_teardown(test_region_sweep_ttl_zero, cleanup),
        cmocka_unit_test_teardown(test_region_sweep_ttl_huge, cleanup),
        cmocka_unit_test_teardown(test_region_idle_since_last_use, cleanup),
        cmocka_unit_test_teardown(test_region_shm_caps, cleanup),
        cmocka_unit_test_teardown(test_region_alloc_fail_create_table, cleanup),
        cmocka_unit_test_teardown(test_region_alloc_fail_register, cleanup),
        cmocka_unit_test_teardown(test_region_alloc_fail_create_region, cleanup),
        cmocka_unit_test_teardown(test_region_alloc_fail_view, cleanup),
        cmocka_unit_test_teardown(test_region_threads, cleanup),
        cmocka_unit_test_teardown(test_region_status_count_only, cleanup),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
