/* GGUF writer: collects metadata (each value kept already serialized) and
 * tensor descriptions in memory, then writes a GGUF v3 file to a temporary
 * name next to the target and renames it over the target, so readers never
 * see a half-written file. Tensor bytes are borrowed or produced by a fill
 * callback one tensor at a time. A writer is used by one thread at a time. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "inferd/alloc.h"
#include "inferd/gguf.h"

#define GGUF_VERSION_WRITTEN 3u
#define ZERO_PAD_MAX 4096u /* padding is written from a zero block this big */

typedef struct wkv {
    char *key;     /* owned, NUL-terminated */
    uint32_t type; /* inferd_gguf_type */
    uint8_t *val;  /* owned serialized value (arrays: elem type, count, elems) */
    uint64_t val_len;
} wkv;

typedef struct wtensor {
    char *name;    /* owned */
    uint32_t type; /* inferd_dtype */
    uint32_t n_dims;
    uint64_t ne[INFERD_GGUF_MAX_DIMS];
    uint64_t size_bytes;
    const void *data; /* borrowed, or NULL with fill */
    inferd_gguf_fill_fn fill;
    void *fill_ctx;
} wtensor;

struct inferd_gguf_writer {
    wkv *kvs; /* (n_kv) in insertion order */
    uint64_t n_kv, cap_kv;
    wtensor *tensors; /* (n_tensors) in insertion order */
    uint64_t n_tensors, cap_tensors;
};

/* Distinguishes temp names of concurrent writers in one process. */
static atomic_uint tmp_counter;

static void store_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void store_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int inferd_gguf_writer_create(inferd_gguf_writer **out_w, inferd_error *err)
{
    inferd_gguf_writer *w = inferd_calloc(1, sizeof(*w));
    if (!w)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf writer: no memory");
    *out_w = w;
    return 0;
}

void inferd_gguf_writer_destroy(inferd_gguf_writer *w)
{
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_kv; i++) {
        inferd_free(w->kvs[i].key);
        inferd_free(w->kvs[i].val);
    }
    for (uint64_t i = 0; i < w->n_tensors; i++)
        inferd_free(w->tensors[i].name);
    inferd_free(w->kvs);
    inferd_free(w->tensors);
    inferd_free(w);
}

/* Grow *@p arr (of @p elem bytes) so that it holds at least @p n + 1. */
static int grow(void **arr, uint64_t *cap, uint64_t n, size_t elem)
{
    uint64_t new_cap;
    void *p;

    if (n < *cap)
        return 0;
    new_cap = *cap ? *cap * 2 : 16;
    if (new_cap > SIZE_MAX / elem)
        return -1;
    p = inferd_realloc(*arr, (size_t)(new_cap * elem));
    if (!p)
        return -1;
    *arr = p;
    *cap = new_cap;
    return 0;
}

static const wkv *find_wkv(const inferd_gguf_writer *w, const char *key)
{
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0)
            return &w->kvs[i];
    return NULL;
}

static int check_key(const inferd_gguf_writer *w, const char *key, inferd_error *err)
{
    if (!key || !key[0])
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: empty key");
    if (!inferd__gguf_utf8_valid(key, strlen(key)))
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: key is not valid UTF-8");
    if (find_wkv(w, key))
        return inferd_fail(err, INFERD_E_EXISTS, "gguf writer: key '%s' is already set", key);
    return 0;
}

/* Append @p key with a value of @p type whose serialized form is built by
 * the caller in a buffer of @p val_len bytes, returned through @p out_val.
 * Ownership of nothing moves until the call succeeds. */
static int add_kv(inferd_gguf_writer *w, const char *key, uint32_t type, uint64_t val_len,
                  uint8_t **out_val, inferd_error *err)
{
    char *k = NULL;
    uint8_t *v = NULL;
    int rc = check_key(w, key, err);

    if (rc < 0)
        return rc;
    if (val_len > SIZE_MAX - 1)
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: value of key '%s' is too large",
                           key);
    if (grow((void **)&w->kvs, &w->cap_kv, w->n_kv, sizeof(*w->kvs)) < 0)
        goto nomem;
    k = inferd_strdup(key);
    v = inferd_malloc((size_t)val_len);
    if (!k || !v)
        goto nomem;
    w->kvs[w->n_kv++] = (wkv){k, type, v, val_len};
    *out_val = v;
    return 0;

nomem:
    inferd_free(k);
    inferd_free(v);
    return inferd_fail(err, INFERD_E_NOMEM, "gguf writer: no memory for key '%s'", key);
}

static int set_scalar(inferd_gguf_writer *w, const char *key, uint32_t type, uint64_t bits,
                      inferd_error *err)
{
    uint32_t size = inferd__gguf_type_size(type);
    uint8_t *v;
    int rc = add_kv(w, key, type, size, &v, err);

    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < size; i++)
        v[i] = (uint8_t)(bits >> (8 * i));
    return 0;
}

int inferd_gguf_writer_set_u32(inferd_gguf_writer *w, const char *key, uint32_t v,
                               inferd_error *err)
{
    return set_scalar(w, key, INFERD_GGUF_U32, v, err);
}

int inferd_gguf_writer_set_i32(inferd_gguf_writer *w, const char *key, int32_t v, inferd_error *err)
{
    return set_scalar(w, key, INFERD_GGUF_I32, (uint32_t)v, err);
}

int inferd_gguf_writer_set_u64(inferd_gguf_writer *w, const char *key, uint64_t v,
                               inferd_error *err)
{
    return set_scalar(w, key, INFERD_GGUF_U64, v, err);
}

int inferd_gguf_writer_set_f32(inferd_gguf_writer *w, const char *key, float v, inferd_error *err)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof(bits));
    return set_scalar(w, key, INFERD_GGUF_F32, bits, err);
}

int inferd_gguf_writer_set_bool(inferd_gguf_writer *w, const char *key, bool v, inferd_error *err)
{
    return set_scalar(w, key, INFERD_GGUF_BOOL, v ? 1 : 0, err);
}

int inferd_gguf_writer_set_str(inferd_gguf_writer *w, const char *key, const char *v,
                               inferd_error *err)
{
    uint64_t len = strlen(v);
    uint8_t *p;
    int rc = add_kv(w, key, INFERD_GGUF_STRING, 8 + len, &p, err);

    if (rc < 0)
        return rc;
    store_u64(p, len);
    memcpy(p + 8, v, len);
    return 0;
}

int inferd_gguf_writer_set_arr(inferd_gguf_writer *w, const char *key, inferd_gguf_type type,
                               const void *data, uint64_t n, inferd_error *err)
{
    uint32_t size = inferd__gguf_type_size(type);
    uint8_t *p;
    int rc;

    if (size == 0)
        return inferd_fail(err, INFERD_E_INVALID,
                           "gguf writer: key '%s': set_arr takes fixed-size numbers, not type %d",
                           key, (int)type);
    if (n > (SIZE_MAX - 12) / size)
        return inferd_fail(err, INFERD_E_INVALID,
                           "gguf writer: key '%s': array of %" PRIu64 " elements is too large", key,
                           n);
    if (n && !data)
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: key '%s': NULL array data", key);
    rc = add_kv(w, key, INFERD_GGUF_ARRAY, 12 + n * size, &p, err);
    if (rc < 0)
        return rc;
    store_u32(p, (uint32_t)type);
    store_u64(p + 4, n);
    if (n)
        memcpy(p + 12, data, n * size);
    return 0;
}

int inferd_gguf_writer_set_arr_str(inferd_gguf_writer *w, const char *key, const char *const *strs,
                                   uint64_t n, inferd_error *err)
{
    uint64_t total = 12, off;
    uint8_t *p;
    int rc;

    if (n && !strs)
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: key '%s': NULL string array", key);
    for (uint64_t j = 0; j < n; j++) {
        uint64_t len = strlen(strs[j]);
        if (len > UINT64_MAX - 8 - total)
            return inferd_fail(err, INFERD_E_INVALID,
                               "gguf writer: key '%s': string array is too large", key);
        total += 8 + len;
    }
    rc = add_kv(w, key, INFERD_GGUF_ARRAY, total, &p, err);
    if (rc < 0)
        return rc;
    store_u32(p, INFERD_GGUF_STRING);
    store_u64(p + 4, n);
    off = 12;
    for (uint64_t j = 0; j < n; j++) {
        uint64_t len = strlen(strs[j]);
        store_u64(p + off, len);
        memcpy(p + off + 8, strs[j], len);
        off += 8 + len;
    }
    return 0;
}

int inferd_gguf_writer_copy_kv(inferd_gguf_writer *w, const inferd_gguf *src, const char *prefix,
                               inferd_error *err)
{
    size_t prefix_len = prefix ? strlen(prefix) : 0;
    uint64_t n = inferd_gguf_n_kv(src);

    for (uint64_t i = 0; i < n; i++) {
        inferd_gguf_str key = inferd_gguf_kv_key(src, i);
        const void *raw;
        uint64_t raw_len;
        uint8_t *v;
        char *k;
        int rc;

        if (prefix_len && (key.len < prefix_len || memcmp(key.ptr, prefix, prefix_len) != 0))
            continue;
        k = inferd_strndup(key.ptr, (size_t)key.len);
        if (!k)
            return inferd_fail(err, INFERD_E_NOMEM, "gguf writer: no memory to copy a key");
        if (strlen(k) != key.len) {
            rc = inferd_fail(err, INFERD_E_INVALID,
                             "gguf writer: key %" PRIu64 " contains a NUL byte", i);
            inferd_free(k);
            return rc;
        }
        raw_len = inferd__gguf_kv_raw(src, i, &raw);
        rc = add_kv(w, k, (uint32_t)inferd_gguf_kv_type(src, i), raw_len, &v, err);
        inferd_free(k);
        if (rc < 0)
            return rc;
        memcpy(v, raw, raw_len);
    }
    return 0;
}

int inferd_gguf_writer_add_tensor(inferd_gguf_writer *w, const char *name, uint32_t type,
                                  uint32_t n_dims, const uint64_t *ne, const void *data,
                                  inferd_gguf_fill_fn fill, void *fill_ctx, inferd_error *err)
{
    const inferd_dtype_info *ti = inferd_dtype_get(type);
    wtensor t = {0};
    uint64_t n_elems = 1;

    if (!name || !name[0] || !inferd__gguf_utf8_valid(name, strlen(name)))
        return inferd_fail(err, INFERD_E_INVALID,
                           "gguf writer: tensor name is empty or not valid UTF-8");
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return inferd_fail(err, INFERD_E_EXISTS, "gguf writer: tensor '%s' already added",
                               name);
    if (!ti)
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: tensor '%s': unknown type %" PRIu32,
                           name, type);
    if (n_dims == 0 || n_dims > INFERD_GGUF_MAX_DIMS || !ne)
        return inferd_fail(err, INFERD_E_INVALID,
                           "gguf writer: tensor '%s': n_dims %" PRIu32 " (must be 1..%d)", name,
                           n_dims, INFERD_GGUF_MAX_DIMS);
    if (!data && !fill)
        return inferd_fail(err, INFERD_E_INVALID,
                           "gguf writer: tensor '%s': neither data nor fill given", name);
    for (uint32_t d = 0; d < INFERD_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] == 0 || t.ne[d] > (uint64_t)INT64_MAX / n_elems)
            return inferd_fail(err, INFERD_E_INVALID,
                               "gguf writer: tensor '%s': dim %" PRIu32 " = %" PRIu64
                               " is zero or overflows",
                               name, d, t.ne[d]);
        n_elems *= t.ne[d];
    }
    if (t.ne[0] % ti->block_size != 0)
        return inferd_fail(err, INFERD_E_INVALID,
                           "gguf writer: tensor '%s': row length %" PRIu64
                           " is not a multiple of the %s block size %" PRIu32,
                           name, t.ne[0], ti->name, ti->block_size);
    if (inferd_dtype_nbytes(type, n_elems, &t.size_bytes) != 0)
        return inferd_fail(err, INFERD_E_INVALID, "gguf writer: tensor '%s': size overflows", name);
    if (grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors, sizeof(*w->tensors)) < 0)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf writer: no memory for tensor '%s'", name);
    t.name = inferd_strdup(name);
    if (!t.name)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf writer: no memory for tensor '%s'", name);
    t.type = type;
    t.n_dims = n_dims;
    t.data = data;
    t.fill = data ? NULL : fill;
    t.fill_ctx = fill_ctx;
    w->tensors[w->n_tensors++] = t;
    return 0;
}

/* --- writing -------------------------------------------------------------------- */

static uint32_t writer_alignment(const inferd_gguf_writer *w, inferd_error *err, int *rc)
{
    const wkv *kv = find_wkv(w, "general.alignment");
    uint32_t a;

    *rc = 0;
    if (!kv)
        return INFERD_GGUF_DEFAULT_ALIGNMENT;
    if (kv->type != INFERD_GGUF_U32) {
        *rc = inferd_fail(err, INFERD_E_INVALID, "gguf writer: general.alignment must be a u32");
        return 0;
    }
    a = (uint32_t)kv->val[0] | (uint32_t)kv->val[1] << 8 | (uint32_t)kv->val[2] << 16 |
        (uint32_t)kv->val[3] << 24;
    if (a == 0 || (a & (a - 1)) != 0) {
        *rc = inferd_fail(err, INFERD_E_INVALID,
                          "gguf writer: general.alignment %" PRIu32 " is not a power of two", a);
        return 0;
    }
    return a;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* Output state: a FILE plus the byte count, for padding. */
typedef struct out {
    FILE *f;
    uint64_t pos;
    const char *path; /* temp name, for messages */
    inferd_error *err;
} out;

static int out_bytes(out *o, const void *p, uint64_t n)
{
    if (n && fwrite(p, 1, (size_t)n, o->f) != n)
        return inferd_fail_errno(o->err, INFERD_E_IO, errno, "gguf writer: cannot write '%s': %s",
                                 o->path, strerror(errno));
    o->pos += n;
    return 0;
}

static int out_u32(out *o, uint32_t v)
{
    uint8_t b[4];
    store_u32(b, v);
    return out_bytes(o, b, 4);
}

static int out_u64(out *o, uint64_t v)
{
    uint8_t b[8];
    store_u64(b, v);
    return out_bytes(o, b, 8);
}

static int out_str(out *o, const char *s)
{
    uint64_t len = strlen(s);
    int rc = out_u64(o, len);
    return rc < 0 ? rc : out_bytes(o, s, len);
}

static int out_pad(out *o, uint64_t alignment)
{
    static const uint8_t zeros[ZERO_PAD_MAX];
    uint64_t n = align_up(o->pos, alignment) - o->pos;

    while (n) {
        uint64_t k = n < sizeof(zeros) ? n : sizeof(zeros);
        int rc = out_bytes(o, zeros, k);
        if (rc < 0)
            return rc;
        n -= k;
    }
    return 0;
}

static int write_tensor_data(const wtensor *t, out *o)
{
    void *buf;
    int rc;

    if (t->data)
        return out_bytes(o, t->data, t->size_bytes);
    if (t->size_bytes > SIZE_MAX)
        return inferd_fail(o->err, INFERD_E_NOMEM, "gguf writer: tensor '%s' is too large",
                           t->name);
    buf = inferd_malloc((size_t)t->size_bytes);
    if (!buf)
        return inferd_fail(o->err, INFERD_E_NOMEM,
                           "gguf writer: no memory for the %" PRIu64 " bytes of tensor '%s'",
                           t->size_bytes, t->name);
    rc = t->fill(t->fill_ctx, buf, t->size_bytes, o->err);
    if (rc < 0) {
        inferd_free(buf);
        return rc;
    }
    rc = out_bytes(o, buf, t->size_bytes);
    inferd_free(buf);
    return rc;
}

static int write_body(const inferd_gguf_writer *w, uint32_t alignment, out *o)
{
    uint64_t offset = 0;
    int rc;

    if ((rc = out_u32(o, 0x46554747u)) < 0 || (rc = out_u32(o, GGUF_VERSION_WRITTEN)) < 0 ||
        (rc = out_u64(o, w->n_tensors)) < 0 || (rc = out_u64(o, w->n_kv)) < 0)
        return rc;
    for (uint64_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];
        if ((rc = out_str(o, kv->key)) < 0 || (rc = out_u32(o, kv->type)) < 0 ||
            (rc = out_bytes(o, kv->val, kv->val_len)) < 0)
            return rc;
    }
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        if ((rc = out_str(o, t->name)) < 0 || (rc = out_u32(o, t->n_dims)) < 0)
            return rc;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if ((rc = out_u64(o, t->ne[d])) < 0)
                return rc;
        if ((rc = out_u32(o, t->type)) < 0 || (rc = out_u64(o, offset)) < 0)
            return rc;
        offset = align_up(offset + t->size_bytes, alignment);
    }
    /* Like llama.cpp, pad after the infos and after every tensor, so each
     * tensor starts on the alignment and the file ends on it. */
    if (w->n_tensors && (rc = out_pad(o, alignment)) < 0)
        return rc;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        if ((rc = write_tensor_data(&w->tensors[i], o)) < 0 || (rc = out_pad(o, alignment)) < 0)
            return rc;
    }
    return 0;
}

int inferd_gguf_writer_write(inferd_gguf_writer *w, const char *path, inferd_error *err)
{
    size_t tmp_len = strlen(path) + 48;
    char *tmp = NULL;
    out o = {NULL, 0, NULL, err};
    uint32_t alignment;
    int fd, rc;

    alignment = writer_alignment(w, err, &rc);
    if (rc < 0)
        return rc;
    tmp = inferd_malloc(tmp_len);
    if (!tmp)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf writer: no memory for a file name");
    snprintf(tmp, tmp_len, "%s.tmp.%ld.%u", path, (long)getpid(),
             atomic_fetch_add_explicit(&tmp_counter, 1, memory_order_relaxed));
    o.path = tmp;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "gguf writer: cannot create '%s': %s", tmp,
                               strerror(errno));
        goto fail_free;
    }
    o.f = fdopen(fd, "wb");
    if (!o.f) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "gguf writer: cannot open '%s': %s", tmp,
                               strerror(errno));
        close(fd);
        goto fail_unlink;
    }
    rc = write_body(w, alignment, &o);
    if (rc < 0)
        goto fail_fclose;
    if (fflush(o.f) != 0 || fsync(fileno(o.f)) != 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "gguf writer: cannot flush '%s': %s", tmp,
                               strerror(errno));
        goto fail_fclose;
    }
    if (fclose(o.f) != 0) {
        o.f = NULL;
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "gguf writer: cannot close '%s': %s", tmp,
                               strerror(errno));
        goto fail_unlink;
    }
    if (rename(tmp, path) != 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno,
                               "gguf writer: cannot rename '%s' to '%s': %s", tmp, path,
                               strerror(errno));
        goto fail_unlink;
    }
    inferd_free(tmp);
    return 0;

fail_fclose:
    fclose(o.f);
fail_unlink:
    unlink(tmp);
fail_free:
    inferd_free(tmp);
    return rc;
}
