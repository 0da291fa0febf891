/* GGUF reader: maps a file read-only (or borrows a caller's buffer), checks
 * every count, length, type, offset and extent against the file size before
 * using it, and builds an index of kv entries and tensor infos whose strings
 * point into the mapping. Allocations are bounded by what the bytes left in
 * the file could hold. A handle is immutable once opened (but for the
 * atomic record of a change to its file): any thread may read it
 * concurrently. A mapped file stays open and its mapping is guarded
 * against SIGBUS (mapguard.h), so a change to it can be detected. */
#include "inferd/gguf.h"

#include <assert.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "inferd/alloc.h"
#include "inferd/mapguard.h"

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define HEADER_SIZE 24u        /* magic, version, n_tensors, n_kv */
#define SHOWN_MAX 64           /* bytes of a key or name quoted in a message */
#define NO_INDEX UINT64_MAX

/* The smallest possible serialized kv (u64 key length, u32 type, a one-byte
 * value) and tensor info (u64 name length, u32 n_dims, one u64 dim, u32
 * type, u64 offset): used to reject absurd counts before allocating. */
#define MIN_KV_BYTES (8u + 4u + 1u)
#define MIN_TENSOR_INFO_BYTES (8u + 4u + 8u + 4u + 8u)

typedef struct gguf_kv {
    inferd_gguf_str key;
    uint32_t type;     /* inferd_gguf_type */
    uint32_t arr_type; /* element type, arrays only */
    uint64_t arr_n;    /* element count, arrays only */
    uint64_t val_off;  /* file offset of the serialized value */
    uint64_t val_len;  /* its size in bytes */
    union {
        uint64_t u; /* u8, u16, u32, u64, bool */
        int64_t i;  /* i8, i16, i32, i64 */
        double f;   /* f32, f64 */
    } num;
    inferd_gguf_str str;   /* string values */
    inferd_gguf_str *strs; /* (arr_n) elements of an array of strings */
} gguf_kv;

/* A name and the index of its kv or tensor, sorted by name for lookups and
 * the duplicate check. */
typedef struct name_ref {
    const char *ptr;
    uint64_t len;
    uint64_t idx;
} name_ref;

struct inferd_gguf {
    const uint8_t *data; /* whole file */
    uint64_t size;       /* bytes */
    int mapped;          /* data came from mmap (else borrowed or owned) */
    bool owned;          /* data was read into memory (inferd_free) */
    int fd;              /* the mapped file, kept open to watch it; else -1 */
    int guard;           /* mapguard slot of the mapping, or -1 */
    char *path;          /* as opened; NULL for memory handles */
    struct stat st;      /* the file as opened */
    atomic_int changed;  /* a file_change once inferd_gguf_check_file saw one */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset; /* header end rounded up to the alignment */
    uint64_t n_kv;
    gguf_kv *kvs;        /* (n_kv) in file order */
    name_ref *kv_sorted; /* (n_kv) by key */
    uint64_t n_tensors;
    inferd_gguf_tensor *tensors; /* (n_tensors) in file order */
    name_ref *tensor_sorted;     /* (n_tensors) by name */
};

/* --- value types ----------------------------------------------------------- */

static const struct {
    const char *name;
    uint32_t size; /* 0: variable */
} type_table[] = {
    [INFERD_GGUF_U8] = {"u8", 1},         [INFERD_GGUF_I8] = {"i8", 1},
    [INFERD_GGUF_U16] = {"u16", 2},       [INFERD_GGUF_I16] = {"i16", 2},
    [INFERD_GGUF_U32] = {"u32", 4},       [INFERD_GGUF_I32] = {"i32", 4},
    [INFERD_GGUF_F32] = {"f32", 4},       [INFERD_GGUF_BOOL] = {"bool", 1},
    [INFERD_GGUF_STRING] = {"string", 0}, [INFERD_GGUF_ARRAY] = {"array", 0},
    [INFERD_GGUF_U64] = {"u64", 8},       [INFERD_GGUF_I64] = {"i64", 8},
    [INFERD_GGUF_F64] = {"f64", 8},
};
#define N_TYPES (sizeof(type_table) / sizeof(type_table[0]))

const char *inferd_gguf_type_name(inferd_gguf_type type)
{
    return (uint32_t)type < N_TYPES ? type_table[type].name : "?";
}

uint32_t inferd__gguf_type_size(uint32_t type)
{
    return type < N_TYPES ? type_table[type].size : 0;
}

static int type_known(uint32_t type) { return type < N_TYPES; }

static int type_is_unsigned(uint32_t t)
{
    return t == INFERD_GGUF_U8 || t == INFERD_GGUF_U16 || t == INFERD_GGUF_U32 ||
           t == INFERD_GGUF_U64;
}

static int type_is_signed(uint32_t t)
{
    return t == INFERD_GGUF_I8 || t == INFERD_GGUF_I16 || t == INFERD_GGUF_I32 ||
           t == INFERD_GGUF_I64;
}

/* Smallest number of bytes one element of @p type can take. */
static uint64_t type_min_bytes(uint32_t type)
{
    if (type == INFERD_GGUF_STRING)
        return 8;
    if (type == INFERD_GGUF_ARRAY)
        return 12;
    return type_table[type].size;
}

int inferd__gguf_utf8_valid(const char *s, uint64_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    uint64_t i = 0;

    while (i < len) {
        uint8_t c = p[i];
        uint32_t n, min, cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (uint32_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* --- cursor over the file ---------------------------------------------------- */

typedef struct cursor {
    const uint8_t *data;
    uint64_t size;
    uint64_t off;
    inferd_error *err;
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->off; }

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const uint8_t *p)
{
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

/* "reading key 5 value", "reading tensor 2 dims", "reading header n_kv". */
static int truncated(const cursor *c, const char *thing, uint64_t idx, const char *part)
{
    if (idx == NO_INDEX)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: truncated at offset %" PRIu64 " reading %s %s (file size %" PRIu64
                           ")",
                           c->off, thing, part, c->size);
    return inferd_fail(c->err, INFERD_E_FORMAT,
                       "gguf: truncated at offset %" PRIu64 " reading %s %" PRIu64
                       " %s (file size %" PRIu64 ")",
                       c->off, thing, idx, part, c->size);
}

static int need(const cursor *c, uint64_t n, const char *thing, uint64_t idx, const char *part)
{
    return left(c) < n ? truncated(c, thing, idx, part) : 0;
}

static int read_u32(cursor *c, uint32_t *out, const char *thing, uint64_t idx, const char *part)
{
    int rc = need(c, 4, thing, idx, part);
    if (rc < 0)
        return rc;
    *out = load_u32(c->data + c->off);
    c->off += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *out, const char *thing, uint64_t idx, const char *part)
{
    int rc = need(c, 8, thing, idx, part);
    if (rc < 0)
        return rc;
    *out = load_u64(c->data + c->off);
    c->off += 8;
    return 0;
}

/* A u64 length followed by that many bytes, checked against the file. */
static int read_str(cursor *c, inferd_gguf_str *out, const char *thing, uint64_t idx,
                    const char *part)
{
    uint64_t at = c->off, len;
    int rc = read_u64(c, &len, thing, idx, part);

    if (rc < 0)
        return rc;
    if (len > left(c))
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: %s %" PRIu64 " %s at offset %" PRIu64 " has length %" PRIu64
                           ", past the end of the file (size %" PRIu64 ")",
                           thing, idx, part, at, len, c->size);
    out->ptr = (const char *)c->data + c->off;
    out->len = len;
    c->off += len;
    return 0;
}

static int shown(uint64_t len) { return len > SHOWN_MAX ? SHOWN_MAX : (int)len; }

/* --- key/value section -------------------------------------------------------- */

/* Element type and count of an array, validated against the bytes left. */
static int read_array_header(cursor *c, uint64_t ki, const gguf_kv *kv, uint32_t *out_type,
                             uint64_t *out_n)
{
    uint64_t at = c->off, n;
    uint32_t type;
    int rc;

    rc = read_u32(c, &type, "key", ki, "array type");
    if (rc < 0)
        return rc;
    if (!type_known(type))
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: unknown array element type %" PRIu32
                           " for key '%.*s' at offset %" PRIu64,
                           type, shown(kv->key.len), kv->key.ptr, at);
    rc = read_u64(c, &n, "key", ki, "array count");
    if (rc < 0)
        return rc;
    if (n > left(c) / type_min_bytes(type))
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: array count %" PRIu64 " of key '%.*s' at offset %" PRIu64
                           " is absurd: only %" PRIu64 " bytes are left in the file",
                           n, shown(kv->key.len), kv->key.ptr, at + 4, left(c));
    *out_type = type;
    *out_n = n;
    return 0;
}

/* Validate and step over the body of an array nested @p depth deep. Each
 * element takes at least one byte, so the walk is bounded by the file size. */
static int skip_array(cursor *c, uint64_t ki, const gguf_kv *kv, int depth)
{
    uint64_t at = c->off, n;
    uint32_t type;
    int rc;

    if (depth > INFERD__GGUF_MAX_ARRAY_DEPTH)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: key '%.*s' nests arrays deeper than %d at offset %" PRIu64,
                           shown(kv->key.len), kv->key.ptr, INFERD__GGUF_MAX_ARRAY_DEPTH, at);
    rc = read_array_header(c, ki, kv, &type, &n);
    if (rc < 0)
        return rc;
    if (type == INFERD_GGUF_STRING) {
        for (uint64_t j = 0; j < n; j++) {
            inferd_gguf_str s;
            rc = read_str(c, &s, "key", ki, "array string");
            if (rc < 0)
                return rc;
        }
    } else if (type == INFERD_GGUF_ARRAY) {
        for (uint64_t j = 0; j < n; j++) {
            rc = skip_array(c, ki, kv, depth + 1);
            if (rc < 0)
                return rc;
        }
    } else {
        /* read_array_header bounded n * size by the bytes left. */
        c->off += n * type_table[type].size;
    }
    return 0;
}

static int read_scalar(cursor *c, gguf_kv *kv, uint64_t ki)
{
    const uint8_t *p;
    uint32_t size = type_table[kv->type].size;
    int rc = need(c, size, "key", ki, "value");

    if (rc < 0)
        return rc;
    p = c->data + c->off;
    switch (kv->type) {
    case INFERD_GGUF_U8:
    case INFERD_GGUF_BOOL: kv->num.u = p[0]; break;
    case INFERD_GGUF_I8: kv->num.i = (int8_t)p[0]; break;
    case INFERD_GGUF_U16: kv->num.u = (uint16_t)(p[0] | p[1] << 8); break;
    case INFERD_GGUF_I16: kv->num.i = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case INFERD_GGUF_U32: kv->num.u = load_u32(p); break;
    case INFERD_GGUF_I32: kv->num.i = (int32_t)load_u32(p); break;
    case INFERD_GGUF_U64: kv->num.u = load_u64(p); break;
    case INFERD_GGUF_I64: kv->num.i = (int64_t)load_u64(p); break;
    case INFERD_GGUF_F32: {
        uint32_t bits = load_u32(p);
        float f;
        memcpy(&f, &bits, sizeof(f));
        kv->num.f = f;
        break;
    }
    case INFERD_GGUF_F64: {
        uint64_t bits = load_u64(p);
        memcpy(&kv->num.f, &bits, sizeof(kv->num.f));
        break;
    }
    default: assert(!"read_scalar: not a fixed-size type");
    }
    c->off += size;
    return 0;
}

static int read_kv(cursor *c, gguf_kv *kv, uint64_t ki)
{
    uint64_t at = c->off;
    int rc;

    rc = read_str(c, &kv->key, "key", ki, "name");
    if (rc < 0)
        return rc;
    if (!inferd__gguf_utf8_valid(kv->key.ptr, kv->key.len))
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: key %" PRIu64 " at offset %" PRIu64 " is not valid UTF-8", ki,
                           at);
    at = c->off;
    rc = read_u32(c, &kv->type, "key", ki, "type");
    if (rc < 0)
        return rc;
    if (!type_known(kv->type))
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: unknown value type %" PRIu32 " for key '%.*s' at offset %" PRIu64,
                           kv->type, shown(kv->key.len), kv->key.ptr, at);
    kv->val_off = c->off;
    switch (kv->type) {
    case INFERD_GGUF_STRING: rc = read_str(c, &kv->str, "key", ki, "value"); break;
    case INFERD_GGUF_ARRAY:
        rc = read_array_header(c, ki, kv, &kv->arr_type, &kv->arr_n);
        if (rc < 0)
            break;
        if (kv->arr_type == INFERD_GGUF_STRING) {
            /* read_array_header bounded arr_n by the bytes left / 8. */
            kv->strs = inferd_calloc(kv->arr_n, sizeof(*kv->strs));
            if (!kv->strs) {
                rc = inferd_fail(c->err, INFERD_E_NOMEM,
                                 "gguf: no memory for %" PRIu64 " strings of key '%.*s'", kv->arr_n,
                                 shown(kv->key.len), kv->key.ptr);
                break;
            }
            for (uint64_t j = 0; j < kv->arr_n && rc == 0; j++)
                rc = read_str(c, &kv->strs[j], "key", ki, "array string");
        } else if (kv->arr_type == INFERD_GGUF_ARRAY) {
            for (uint64_t j = 0; j < kv->arr_n && rc == 0; j++)
                rc = skip_array(c, ki, kv, 2);
        } else {
            c->off += kv->arr_n * type_table[kv->arr_type].size;
        }
        break;
    default: rc = read_scalar(c, kv, ki); break;
    }
    if (rc < 0)
        return rc;
    kv->val_len = c->off - kv->val_off;
    return 0;
}

/* --- name index ------------------------------------------------------------------ */

static int name_cmp(const char *a, uint64_t a_len, const char *b, uint64_t b_len)
{
    uint64_t n = a_len < b_len ? a_len : b_len;
    int r = n ? memcmp(a, b, n) : 0;

    if (r)
        return r;
    return a_len < b_len ? -1 : a_len > b_len;
}

static int name_ref_cmp(const void *pa, const void *pb)
{
    const name_ref *a = pa, *b = pb;
    int r = name_cmp(a->ptr, a->len, b->ptr, b->len);

    if (r)
        return r;
    /* Ties by file order, so a duplicate report names the earlier one first. */
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Index of @p name in the sorted refs, or -1. */
static int64_t name_find(const name_ref *refs, uint64_t n, const char *name)
{
    uint64_t lo = 0, hi = n, len = strlen(name);

    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int r = name_cmp(refs[mid].ptr, refs[mid].len, name, len);
        if (r == 0)
            return (int64_t)refs[mid].idx;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Sort @p refs and return the position of the first of two equal names, or
 * -1 if all are distinct. */
static int64_t sort_and_find_duplicate(name_ref *refs, uint64_t n)
{
    if (n > 1)
        qsort(refs, n, sizeof(*refs), name_ref_cmp);
    for (uint64_t i = 1; i < n; i++)
        if (name_cmp(refs[i - 1].ptr, refs[i - 1].len, refs[i].ptr, refs[i].len) == 0)
            return (int64_t)(i - 1);
    return -1;
}

/* --- header, kvs, tensor infos -------------------------------------------------- */

static int parse_header(inferd_gguf *g, cursor *c, uint64_t *out_n_tensors, uint64_t *out_n_kv)
{
    uint32_t magic, version;
    uint64_t n_tensors = 0, n_kv = 0;
    int rc;

    rc = read_u32(c, &magic, "header", NO_INDEX, "magic");
    if (rc < 0)
        return rc;
    if (magic != GGUF_MAGIC)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: bad magic 0x%08" PRIx32 " at offset 0 (expected 0x%08" PRIx32
                           ", \"GGUF\")",
                           magic, GGUF_MAGIC);
    rc = read_u32(c, &version, "header", NO_INDEX, "version");
    if (rc < 0)
        return rc;
    if (version == 1)
        return inferd_fail(c->err, INFERD_E_UNSUPPORTED,
                           "gguf: GGUF version 1 is not supported (only 2 and 3)");
    if (version == 0x02000000u || version == 0x03000000u)
        return inferd_fail(c->err, INFERD_E_UNSUPPORTED,
                           "gguf: big-endian GGUF files are not supported (version field "
                           "0x%08" PRIx32 ")",
                           version);
    if (version != 2 && version != 3)
        return inferd_fail(c->err, INFERD_E_UNSUPPORTED,
                           "gguf: unknown GGUF version %" PRIu32 " (supported: 2, 3)", version);
    rc = read_u64(c, &n_tensors, "header", NO_INDEX, "n_tensors");
    if (rc < 0)
        return rc;
    rc = read_u64(c, &n_kv, "header", NO_INDEX, "n_kv");
    if (rc < 0)
        return rc;
    if (n_tensors > left(c) / MIN_TENSOR_INFO_BYTES)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: n_tensors %" PRIu64
                           " at offset 8 is absurd for a file of %" PRIu64 " bytes",
                           n_tensors, c->size);
    if (n_kv > left(c) / MIN_KV_BYTES)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: n_kv %" PRIu64 " at offset 16 is absurd for a file of %" PRIu64
                           " bytes",
                           n_kv, c->size);
    g->version = version;
    *out_n_tensors = n_tensors;
    *out_n_kv = n_kv;
    return 0;
}

static int parse_kvs(inferd_gguf *g, cursor *c, uint64_t n_kv)
{
    int64_t dup;
    int rc;

    g->kvs = inferd_calloc(n_kv, sizeof(*g->kvs));
    g->kv_sorted = inferd_calloc(n_kv, sizeof(*g->kv_sorted));
    if (!g->kvs || !g->kv_sorted)
        return inferd_fail(c->err, INFERD_E_NOMEM, "gguf: no memory for %" PRIu64 " kv entries",
                           n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        /* Counted before reading, so a failure frees what this kv allocated. */
        g->n_kv = i + 1;
        rc = read_kv(c, &g->kvs[i], i);
        if (rc < 0)
            return rc;
        g->kv_sorted[i] = (name_ref){g->kvs[i].key.ptr, g->kvs[i].key.len, i};
    }
    g->n_kv = n_kv;
    dup = sort_and_find_duplicate(g->kv_sorted, n_kv);
    if (dup >= 0) {
        const name_ref *a = &g->kv_sorted[dup], *b = &g->kv_sorted[dup + 1];
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: duplicate key '%.*s' (kv %" PRIu64 " and kv %" PRIu64
                           " at offset %" PRIu64 ")",
                           shown(a->len), a->ptr, a->idx, b->idx,
                           (uint64_t)((const uint8_t *)b->ptr - c->data) - 8);
    }
    return 0;
}

static int parse_alignment(inferd_gguf *g, cursor *c)
{
    int64_t i = inferd_gguf_find_key(g, "general.alignment");
    uint64_t a;

    g->alignment = INFERD_GGUF_DEFAULT_ALIGNMENT;
    if (i < 0)
        return 0;
    if (g->kvs[i].type != INFERD_GGUF_U32)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: general.alignment has type %s (expected u32)",
                           inferd_gguf_type_name(g->kvs[i].type));
    a = g->kvs[i].num.u;
    if (a == 0 || (a & (a - 1)) != 0)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: alignment %" PRIu64 " is not a power of two (general.alignment "
                           "at offset %" PRIu64 ")",
                           a, g->kvs[i].val_off);
    g->alignment = (uint32_t)a;
    return 0;
}

/* Check a tensor's dims, type and offset (not yet its extent: the data
 * section starts only after the last tensor info). */
static int check_tensor_info(const inferd_gguf *g, cursor *c, const inferd_gguf_tensor *t,
                             uint64_t at)
{
    const inferd_dtype_info *ti;
    int nl = shown(t->name.len);
    const char *np = t->name.ptr;
    uint64_t n = 1;

    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (t->ne[d] == 0)
            return inferd_fail(c->err, INFERD_E_FORMAT,
                               "gguf: tensor '%.*s' dim %" PRIu32 " is 0 (info at offset %" PRIu64
                               ")",
                               nl, np, d, at);
        if (t->ne[d] > (uint64_t)INT64_MAX / n)
            return inferd_fail(c->err, INFERD_E_FORMAT,
                               "gguf: tensor '%.*s' element count overflows at dim %" PRIu32
                               " (ne %" PRIu64 ", info at offset %" PRIu64 ")",
                               nl, np, d, t->ne[d], at);
        n *= t->ne[d];
    }
    ti = inferd_dtype_get(t->type);
    if (!ti)
        return inferd_fail(c->err, INFERD_E_UNSUPPORTED,
                           "gguf: tensor '%.*s' has unknown type id %" PRIu32
                           " (info at offset %" PRIu64 ")",
                           nl, np, t->type, at);
    if (t->ne[0] % ti->block_size != 0)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: tensor '%.*s' row length %" PRIu64
                           " is not a multiple of the %s block size %" PRIu32,
                           nl, np, t->ne[0], ti->name, ti->block_size);
    if (t->offset % g->alignment != 0)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: tensor '%.*s' offset %" PRIu64
                           " is not a multiple of the alignment %" PRIu32,
                           nl, np, t->offset, g->alignment);
    return 0;
}

static int read_tensor_info(const inferd_gguf *g, cursor *c, inferd_gguf_tensor *t, uint64_t ti)
{
    uint64_t at = c->off, dims_at;
    int rc;

    rc = read_str(c, &t->name, "tensor", ti, "name");
    if (rc < 0)
        return rc;
    if (!inferd__gguf_utf8_valid(t->name.ptr, t->name.len))
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: tensor %" PRIu64 " name at offset %" PRIu64 " is not valid UTF-8",
                           ti, at);
    dims_at = c->off;
    rc = read_u32(c, &t->n_dims, "tensor", ti, "n_dims");
    if (rc < 0)
        return rc;
    if (t->n_dims == 0 || t->n_dims > INFERD_GGUF_MAX_DIMS)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: tensor '%.*s' has n_dims %" PRIu32 " (%s %d) at offset %" PRIu64,
                           shown(t->name.len), t->name.ptr, t->n_dims,
                           t->n_dims == 0 ? "min" : "max",
                           t->n_dims == 0 ? 1 : INFERD_GGUF_MAX_DIMS, dims_at);
    for (uint32_t d = 0; d < INFERD_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims) {
            rc = read_u64(c, &t->ne[d], "tensor", ti, "dims");
            if (rc < 0)
                return rc;
        }
    }
    rc = read_u32(c, &t->type, "tensor", ti, "type");
    if (rc < 0)
        return rc;
    rc = read_u64(c, &t->offset, "tensor", ti, "offset");
    if (rc < 0)
        return rc;
    rc = check_tensor_info(g, c, t, at);
    if (rc < 0)
        return rc;
    t->n_elems = 1;
    for (uint32_t d = 0; d < t->n_dims; d++)
        t->n_elems *= t->ne[d];
    if (inferd_dtype_nbytes(t->type, t->n_elems, &t->size_bytes) != 0)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: tensor '%.*s' byte size overflows (%" PRIu64 " elements of %s)",
                           shown(t->name.len), t->name.ptr, t->n_elems, inferd_dtype_name(t->type));
    return 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

typedef struct extent {
    uint64_t begin, end; /* relative to the data section */
    uint64_t idx;
} extent;

static int extent_cmp(const void *pa, const void *pb)
{
    const extent *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Every tensor inside the file, no two overlapping. */
static int check_extents(inferd_gguf *g, cursor *c)
{
    uint64_t n = g->n_tensors;
    extent *ex;

    for (uint64_t i = 0; i < n; i++) {
        inferd_gguf_tensor *t = &g->tensors[i];
        uint64_t avail = g->data_offset <= g->size ? g->size - g->data_offset : 0;
        if (g->data_offset > g->size || t->offset > avail || t->size_bytes > avail - t->offset) {
            uint64_t begin = sat_add(g->data_offset, t->offset);
            return inferd_fail(c->err, INFERD_E_FORMAT,
                               "gguf: tensor '%.*s' data [%" PRIu64 ", %" PRIu64
                               ") extends past end of file (size %" PRIu64 ")",
                               shown(t->name.len), t->name.ptr, begin,
                               sat_add(begin, t->size_bytes), g->size);
        }
        t->data = g->data + g->data_offset + t->offset;
    }
    if (n < 2)
        return 0;
    ex = inferd_calloc(n, sizeof(*ex));
    if (!ex)
        return inferd_fail(c->err, INFERD_E_NOMEM, "gguf: no memory to check %" PRIu64 " tensors",
                           n);
    for (uint64_t i = 0; i < n; i++)
        ex[i] = (extent){g->tensors[i].offset, g->tensors[i].offset + g->tensors[i].size_bytes, i};
    qsort(ex, n, sizeof(*ex), extent_cmp);
    for (uint64_t i = 1; i < n; i++) {
        if (ex[i].begin < ex[i - 1].end) {
            const inferd_gguf_tensor *a = &g->tensors[ex[i - 1].idx], *b = &g->tensors[ex[i].idx];
            int rc = inferd_fail(c->err, INFERD_E_FORMAT,
                                 "gguf: tensors '%.*s' and '%.*s' overlap (data [%" PRIu64
                                 ", %" PRIu64 ") and [%" PRIu64 ", %" PRIu64 "))",
                                 shown(a->name.len), a->name.ptr, shown(b->name.len), b->name.ptr,
                                 g->data_offset + ex[i - 1].begin, g->data_offset + ex[i - 1].end,
                                 g->data_offset + ex[i].begin, g->data_offset + ex[i].end);
            inferd_free(ex);
            return rc;
        }
    }
    inferd_free(ex);
    return 0;
}

static int parse_tensors(inferd_gguf *g, cursor *c, uint64_t n_tensors)
{
    int64_t dup;
    int rc;

    /* Checked again now that the kv section has been consumed. */
    if (n_tensors > left(c) / MIN_TENSOR_INFO_BYTES)
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: n_tensors %" PRIu64 " is absurd: only %" PRIu64
                           " bytes are left after the kv section (offset %" PRIu64 ")",
                           n_tensors, left(c), c->off);
    g->tensors = inferd_calloc(n_tensors, sizeof(*g->tensors));
    g->tensor_sorted = inferd_calloc(n_tensors, sizeof(*g->tensor_sorted));
    if (!g->tensors || !g->tensor_sorted)
        return inferd_fail(c->err, INFERD_E_NOMEM, "gguf: no memory for %" PRIu64 " tensor infos",
                           n_tensors);
    for (uint64_t i = 0; i < n_tensors; i++) {
        inferd_gguf_tensor *t = &g->tensors[i];
        rc = read_tensor_info(g, c, t, i);
        if (rc < 0)
            return rc;
        g->tensor_sorted[i] = (name_ref){t->name.ptr, t->name.len, i};
    }
    g->n_tensors = n_tensors;
    dup = sort_and_find_duplicate(g->tensor_sorted, n_tensors);
    if (dup >= 0) {
        const name_ref *a = &g->tensor_sorted[dup], *b = &g->tensor_sorted[dup + 1];
        return inferd_fail(c->err, INFERD_E_FORMAT,
                           "gguf: duplicate tensor name '%.*s' (tensors %" PRIu64 " and %" PRIu64
                           ")",
                           shown(a->len), a->ptr, a->idx, b->idx);
    }
    /* The header ends inside the file, so rounding it up cannot overflow. */
    g->data_offset = (c->off + g->alignment - 1) / g->alignment * g->alignment;
    return check_extents(g, c);
}

static int parse(inferd_gguf *g, inferd_error *err)
{
    cursor c = {g->data, g->size, 0, err};
    uint64_t n_tensors = 0, n_kv = 0;
    int rc;

    rc = parse_header(g, &c, &n_tensors, &n_kv);
    if (rc < 0)
        return rc;
    rc = parse_kvs(g, &c, n_kv);
    if (rc < 0)
        return rc;
    rc = parse_alignment(g, &c);
    if (rc < 0)
        return rc;
    return parse_tensors(g, &c, n_tensors);
}

/* --- open / close ----------------------------------------------------------------- */

static void free_index(inferd_gguf *g)
{
    if (g->kvs)
        for (uint64_t i = 0; i < g->n_kv; i++)
            inferd_free(g->kvs[i].strs);
    inferd_free(g->kvs);
    inferd_free(g->kv_sorted);
    inferd_free(g->tensors);
    inferd_free(g->tensor_sorted);
}

int inferd_gguf_open_memory(const void *data, size_t len, inferd_gguf **out_gguf, inferd_error *err)
{
    inferd_gguf *g;
    int rc;

    if (!data && len)
        return inferd_fail(err, INFERD_E_INVALID, "gguf: NULL buffer of %zu bytes", len);
    g = inferd_calloc(1, sizeof(*g));
    if (!g)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf: no memory for the file handle");
    g->data = data;
    g->size = len;
    g->fd = -1;
    g->guard = -1;
    rc = parse(g, err);
    if (rc < 0) {
        free_index(g);
        inferd_free(g);
        return rc;
    }
    *out_gguf = g;
    return 0;
}

/* Read all of @p fd (@p size bytes) into a new buffer. */
static int read_all(int fd, const char *path, uint64_t size, uint8_t **out, inferd_error *err)
{
    if (size > (uint64_t)SIZE_MAX - 64)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf: '%s' is too large to read", path);
    uint8_t *buf = inferd_aligned_alloc(64, (size_t)size ? (size_t)size : 64);
    if (!buf)
        return inferd_fail(err, INFERD_E_NOMEM, "gguf: no memory to read '%s' (%llu bytes)", path,
                           (unsigned long long)size);
    uint64_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, buf + got, (size_t)(size - got), (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : 0;
            inferd_free(buf);
            return e ? inferd_fail_errno(err, INFERD_E_IO, e, "gguf: cannot read '%s': %s", path,
                                         strerror(e))
                     : inferd_fail(err, INFERD_E_IO,
                                   "gguf: '%s' ended at %llu of %llu bytes while read", path,
                                   (unsigned long long)got, (unsigned long long)size);
        }
        got += (uint64_t)n;
    }
    *out = buf;
    return 0;
}

int inferd_gguf_open_ex(const char *path, unsigned flags, inferd_gguf **out_gguf, inferd_error *err)
{
    const bool no_mmap = (flags & INFERD_GGUF_OPEN_NO_MMAP) != 0;
    static const uint8_t empty[1];
    inferd_gguf *g = NULL;
    struct stat st;
    uint8_t *data = NULL;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "gguf: cannot open '%s': %s", path,
                                 strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "gguf: cannot stat '%s': %s", path,
                               strerror(errno));
        goto fail_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = inferd_fail(err, INFERD_E_IO, "gguf: '%s' is not a regular file", path);
        goto fail_close;
    }
    /* mmap of zero bytes fails; an empty file is parsed (and rejected) as an
     * empty buffer instead. */
    if (st.st_size > 0 && no_mmap) {
        rc = read_all(fd, path, (uint64_t)st.st_size, &data, err);
        if (rc < 0)
            goto fail_close;
        /* A copy taken while the file was being written would mix two
         * versions: refuse it rather than parse it. */
        struct stat after;
        if (fstat(fd, &after) == 0 &&
            (after.st_size != st.st_size || after.st_mtim.tv_sec != st.st_mtim.tv_sec ||
             after.st_mtim.tv_nsec != st.st_mtim.tv_nsec)) {
            rc = inferd_fail(err, INFERD_E_IO, "gguf: '%s' changed while it was being read", path);
            goto fail_unmap;
        }
    } else if (st.st_size > 0) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = inferd_fail_errno(err, INFERD_E_IO, errno, "gguf: cannot map '%s': %s", path,
                                   strerror(errno));
            goto fail_close;
        }
        data = map;
    }
    g = inferd_calloc(1, sizeof(*g));
    char *pcopy = inferd_strdup(path);
    if (!g || !pcopy) {
        inferd_free(g);
        inferd_free(pcopy);
        g = NULL;
        rc = inferd_fail(err, INFERD_E_NOMEM, "gguf: no memory for the handle of '%s'", path);
        goto fail_unmap;
    }
    g->data = data ? data : empty;
    g->size = (uint64_t)st.st_size;
    g->mapped = data != NULL && !no_mmap;
    g->owned = data != NULL && no_mmap;
    g->path = pcopy;
    g->st = st;
    g->guard = -1;
    g->fd = -1;
    if (g->mapped) {
        /* Kept open to see the file change under the mapping. */
        g->fd = fd;
        fd = -1;
        g->guard = inferd_mapguard_add(g->data, (size_t)g->size);
    } else {
        close(fd);
        fd = -1;
    }
    rc = parse(g, err);
    if (rc < 0) {
        inferd_gguf_close(g);
        return rc;
    }
    *out_gguf = g;
    return 0;

fail_unmap:
    if (data && no_mmap)
        inferd_free(data);
    else if (data)
        munmap(data, (size_t)st.st_size);
fail_close:
    if (fd >= 0)
        close(fd);
    return rc;
}

int inferd_gguf_open(const char *path, inferd_gguf **out_gguf, inferd_error *err)
{
    return inferd_gguf_open_ex(path, 0, out_gguf, err);
}

/* What inferd_gguf_check_file found, kept in g->changed. */
enum file_change { CHANGE_NONE = 0, CHANGE_TRUNCATED, CHANGE_WRITTEN, CHANGE_FAULTED };

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int inferd_gguf_check_file(inferd_gguf *g, inferd_error *err)
{
    if (!g->mapped)
        return 0;
    int change = atomic_load_explicit(&g->changed, memory_order_acquire);
    if (change == CHANGE_NONE) {
        struct stat now;
        if (inferd_mapguard_broken(g->guard))
            change = CHANGE_FAULTED;
        else if (fstat(g->fd, &now) != 0)
            change = CHANGE_NONE; /* cannot tell: an fd we hold does not go away */
        else if ((uint64_t)now.st_size < g->size)
            change = CHANGE_TRUNCATED;
        else if ((uint64_t)now.st_size != g->size || mtime_ns(&now) != mtime_ns(&g->st))
            change = CHANGE_WRITTEN;
        if (change == CHANGE_NONE)
            return 0;
        /* The first finding stays: the mapping may already have been read
         * while the file was changing, whatever the file looks like later. */
        int expected = CHANGE_NONE;
        if (!atomic_compare_exchange_strong(&g->changed, &expected, change))
            change = expected;
    }
    static const char *const what[] = {
        [CHANGE_TRUNCATED] = "truncated",
        [CHANGE_WRITTEN] = "modified in place",
        [CHANGE_FAULTED] = "truncated: a read of its weights went past the new end",
    };
    return inferd_fail(err, INFERD_E_IO,
                       "model file '%s' changed on disk while loaded (%s); reload needed", g->path,
                       what[change]);
}

bool inferd_gguf_path_changed(const inferd_gguf *g, inferd_file_id *out_now)
{
    struct stat now;
    if (!g->path || stat(g->path, &now) != 0)
        return false;
    if (now.st_dev == g->st.st_dev && now.st_ino == g->st.st_ino && now.st_size == g->st.st_size &&
        mtime_ns(&now) == mtime_ns(&g->st))
        return false;
    if (out_now) {
        out_now->dev = (uint64_t)now.st_dev;
        out_now->ino = (uint64_t)now.st_ino;
        out_now->size_bytes = (uint64_t)now.st_size;
        out_now->mtime_ns = mtime_ns(&now);
    }
    return true;
}

void inferd_gguf_close(inferd_gguf *g)
{
    if (!g)
        return;
    inferd_mapguard_remove(g->guard);
    if (g->mapped)
        munmap((void *)g->data, g->size);
    if (g->owned)
        inferd_free((void *)g->data);
    if (g->fd >= 0)
        close(g->fd);
    inferd_free(g->path);
    free_index(g);
    inferd_free(g);
}

/* --- accessors --------------------------------------------------------------------- */

uint32_t inferd_gguf_version(const inferd_gguf *g) { return g->version; }

uint32_t inferd_gguf_alignment(const inferd_gguf *g) { return g->alignment; }

uint64_t inferd_gguf_file_size(const inferd_gguf *g) { return g->size; }

uint64_t inferd_gguf_data_offset(const inferd_gguf *g) { return g->data_offset; }

const void *inferd_gguf_file_data(const inferd_gguf *g) { return g->data; }

uint64_t inferd_gguf_n_kv(const inferd_gguf *g) { return g->n_kv; }

int64_t inferd_gguf_find_key(const inferd_gguf *g, const char *key)
{
    return name_find(g->kv_sorted, g->n_kv, key);
}

static const gguf_kv *kv_at(const inferd_gguf *g, uint64_t i)
{
    assert(i < g->n_kv && "kv index out of range");
    return &g->kvs[i];
}

inferd_gguf_str inferd_gguf_kv_key(const inferd_gguf *g, uint64_t i) { return kv_at(g, i)->key; }

inferd_gguf_type inferd_gguf_kv_type(const inferd_gguf *g, uint64_t i)
{
    return (inferd_gguf_type)kv_at(g, i)->type;
}

inferd_gguf_type inferd_gguf_kv_arr_type(const inferd_gguf *g, uint64_t i)
{
    return (inferd_gguf_type)kv_at(g, i)->arr_type;
}

uint64_t inferd_gguf_kv_arr_n(const inferd_gguf *g, uint64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv->type == INFERD_GGUF_ARRAY ? kv->arr_n : 0;
}

const void *inferd_gguf_kv_arr_data(const inferd_gguf *g, uint64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    if (kv->type != INFERD_GGUF_ARRAY || inferd__gguf_type_size(kv->arr_type) == 0)
        return NULL;
    return g->data + kv->val_off + 12;
}

inferd_gguf_str inferd_gguf_kv_arr_str(const inferd_gguf *g, uint64_t i, uint64_t j)
{
    const gguf_kv *kv = kv_at(g, i);
    inferd_gguf_str none = {NULL, 0};

    if (kv->type != INFERD_GGUF_ARRAY || kv->arr_type != INFERD_GGUF_STRING || j >= kv->arr_n)
        return none;
    return kv->strs[j];
}

inferd_gguf_str inferd_gguf_kv_str(const inferd_gguf *g, uint64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    inferd_gguf_str none = {NULL, 0};
    return kv->type == INFERD_GGUF_STRING ? kv->str : none;
}

const void *inferd_gguf_kv_data(const inferd_gguf *g, uint64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return inferd__gguf_type_size(kv->type) ? g->data + kv->val_off : NULL;
}

uint64_t inferd__gguf_kv_raw(const inferd_gguf *g, uint64_t i, const void **out_ptr)
{
    if (i >= g->n_kv) {
        *out_ptr = NULL;
        return 0;
    }
    *out_ptr = g->data + g->kvs[i].val_off;
    return g->kvs[i].val_len;
}

/* --- typed getters ------------------------------------------------------------------ */

static const gguf_kv *lookup(const inferd_gguf *g, const char *key)
{
    int64_t i = inferd_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kvs[i];
}

static int wrong_type(const gguf_kv *kv, const char *want, inferd_error *err)
{
    return inferd_fail(err, INFERD_E_FORMAT, "gguf: key '%.*s' has type %s, expected %s",
                       shown(kv->key.len), kv->key.ptr, inferd_gguf_type_name(kv->type), want);
}

/* An integer kv as a u64 (negatives rejected) with @p max as the range. */
static int get_unsigned(const inferd_gguf *g, const char *key, uint64_t max, const char *want,
                        uint64_t *out, inferd_error *err)
{
    const gguf_kv *kv = lookup(g, key);

    if (!kv)
        return INFERD_E_NOT_FOUND;
    if (type_is_unsigned(kv->type)) {
        if (kv->num.u > max)
            return inferd_fail(
                err, INFERD_E_FORMAT, "gguf: key '%.*s' value %" PRIu64 " (%s) does not fit %s",
                shown(kv->key.len), kv->key.ptr, kv->num.u, inferd_gguf_type_name(kv->type), want);
        *out = kv->num.u;
        return 0;
    }
    if (type_is_signed(kv->type)) {
        if (kv->num.i < 0 || (uint64_t)kv->num.i > max)
            return inferd_fail(
                err, INFERD_E_FORMAT, "gguf: key '%.*s' value %" PRId64 " (%s) does not fit %s",
                shown(kv->key.len), kv->key.ptr, kv->num.i, inferd_gguf_type_name(kv->type), want);
        *out = (uint64_t)kv->num.i;
        return 0;
    }
    return wrong_type(kv, want, err);
}

int inferd_gguf_get_u32(const inferd_gguf *g, const char *key, uint32_t *out, inferd_error *err)
{
    uint64_t v = 0;
    int rc = get_unsigned(g, key, UINT32_MAX, "u32", &v, err);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

int inferd_gguf_get_u64(const inferd_gguf *g, const char *key, uint64_t *out, inferd_error *err)
{
    return get_unsigned(g, key, UINT64_MAX, "u64", out, err);
}

int inferd_gguf_get_i64(const inferd_gguf *g, const char *key, int64_t *out, inferd_error *err)
{
    const gguf_kv *kv = lookup(g, key);

    if (!kv)
        return INFERD_E_NOT_FOUND;
    if (type_is_signed(kv->type)) {
        *out = kv->num.i;
        return 0;
    }
    if (type_is_unsigned(kv->type)) {
        if (kv->num.u > (uint64_t)INT64_MAX)
            return inferd_fail(
                err, INFERD_E_FORMAT, "gguf: key '%.*s' value %" PRIu64 " (%s) does not fit i64",
                shown(kv->key.len), kv->key.ptr, kv->num.u, inferd_gguf_type_name(kv->type));
        *out = (int64_t)kv->num.u;
        return 0;
    }
    return wrong_type(kv, "i64", err);
}

int inferd_gguf_get_f32(const inferd_gguf *g, const char *key, float *out, inferd_error *err)
{
    const gguf_kv *kv = lookup(g, key);

    if (!kv)
        return INFERD_E_NOT_FOUND;
    if (kv->type == INFERD_GGUF_F32 || kv->type == INFERD_GGUF_F64)
        *out = (float)kv->num.f;
    else if (type_is_unsigned(kv->type))
        *out = (float)kv->num.u;
    else if (type_is_signed(kv->type))
        *out = (float)kv->num.i;
    else
        return wrong_type(kv, "f32", err);
    return 0;
}

int inferd_gguf_get_bool(const inferd_gguf *g, const char *key, bool *out, inferd_error *err)
{
    const gguf_kv *kv = lookup(g, key);

    if (!kv)
        return INFERD_E_NOT_FOUND;
    if (kv->type != INFERD_GGUF_BOOL)
        return wrong_type(kv, "bool", err);
    *out = kv->num.u != 0;
    return 0;
}

int inferd_gguf_get_str(const inferd_gguf *g, const char *key, inferd_gguf_str *out,
                        inferd_error *err)
{
    const gguf_kv *kv = lookup(g, key);

    if (!kv)
        return INFERD_E_NOT_FOUND;
    if (kv->type != INFERD_GGUF_STRING)
        return wrong_type(kv, "string", err);
    *out = kv->str;
    return 0;
}

/* --- tensors --------------------------------------------------------------------------- */

uint64_t inferd_gguf_n_tensors(const inferd_gguf *g) { return g->n_tensors; }

const inferd_gguf_tensor *inferd_gguf_tensor_at(const inferd_gguf *g, uint64_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const inferd_gguf_tensor *inferd_gguf_find_tensor(const inferd_gguf *g, const char *name)
{
    int64_t i = name_find(g->tensor_sorted, g->n_tensors, name);
    return i < 0 ? NULL : &g->tensors[i];
}
