/* Tensors and their refcounted storage; DLPack 0.6 export and import. See
 * include/inferd/tensor.h. */
#include "inferd/tensor.h"

#include <dlpack/dlpack.h>
#include <stdatomic.h>
#include <string.h>

#include "inferd/alloc.h"
#include "tensor_internal.h"

#define HEAP_ALIGN 64

/* ---- element types ---- */

typedef struct elem_info {
    const char *name; /* KServe datatype */
    uint8_t size;     /* bytes */
    uint8_t dl_code;  /* DLPack type code (0xff: none) */
} elem_info;

static const elem_info ELEMS[INFERD_ELEM_COUNT] = {
    [INFERD_ELEM_BOOL] = {"BOOL", 1, kDLUInt},   [INFERD_ELEM_U8] = {"UINT8", 1, kDLUInt},
    [INFERD_ELEM_U16] = {"UINT16", 2, kDLUInt},  [INFERD_ELEM_U32] = {"UINT32", 4, kDLUInt},
    [INFERD_ELEM_U64] = {"UINT64", 8, kDLUInt},  [INFERD_ELEM_I8] = {"INT8", 1, kDLInt},
    [INFERD_ELEM_I16] = {"INT16", 2, kDLInt},    [INFERD_ELEM_I32] = {"INT32", 4, kDLInt},
    [INFERD_ELEM_I64] = {"INT64", 8, kDLInt},    [INFERD_ELEM_F16] = {"FP16", 2, kDLFloat},
    [INFERD_ELEM_BF16] = {"BF16", 2, kDLBfloat}, [INFERD_ELEM_F32] = {"FP32", 4, kDLFloat},
    [INFERD_ELEM_F64] = {"FP64", 8, kDLFloat},   [INFERD_ELEM_BYTES] = {"BYTES", 1, 0xff},
};

size_t inferd_elem_size(inferd_elem e)
{
    return (unsigned)e < INFERD_ELEM_COUNT ? ELEMS[e].size : 0;
}

const char *inferd_elem_name(inferd_elem e)
{
    return (unsigned)e < INFERD_ELEM_COUNT ? ELEMS[e].name : "unknown";
}

int inferd_elem_parse(const char *name)
{
    for (int i = 0; name && i < INFERD_ELEM_COUNT; i++)
        if (strcmp(name, ELEMS[i].name) == 0)
            return i;
    return -1;
}

/* ---- storage ---- */

struct inferd_storage {
    atomic_uint refs;
    inferd_storage_kind kind;
    void *data;
    size_t bytes;
    inferd_storage_release_fn release;
    void *ctx;
};

static void release_heap(void *ctx, void *data, size_t bytes)
{
    (void)ctx, (void)bytes;
    inferd_free(data);
}

int inferd_storage_heap(size_t bytes, inferd_storage **out_s, inferd_error *err)
{
    void *p = inferd_aligned_alloc(HEAP_ALIGN, bytes ? (bytes + HEAP_ALIGN - 1) & ~(size_t)63 : 64);
    if (!p)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a tensor of %zu bytes", bytes);
    memset(p, 0, bytes);
    inferd_storage *s = inferd_calloc(1, sizeof(*s));
    if (!s) {
        inferd_free(p);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a tensor of %zu bytes", bytes);
    }
    atomic_init(&s->refs, 1);
    s->kind = INFERD_STORAGE_HEAP;
    s->data = p;
    s->bytes = bytes;
    s->release = release_heap;
    *out_s = s;
    return 0;
}

int inferd_storage_wrap(inferd_storage_kind kind, void *data, size_t bytes,
                        inferd_storage_release_fn release, void *ctx, inferd_storage **out_s,
                        inferd_error *err)
{
    if (kind != INFERD_STORAGE_BORROWED && kind != INFERD_STORAGE_REGION)
        return inferd_fail(err, INFERD_E_INVALID, "a wrapped storage is borrowed or a region's");
    if (!data && bytes > 0)
        return inferd_fail(err, INFERD_E_INVALID, "no memory given for a storage of %zu bytes",
                           bytes);
    inferd_storage *s = inferd_calloc(1, sizeof(*s));
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a storage");
    atomic_init(&s->refs, 1);
    s->kind = kind;
    s->data = data;
    s->bytes = bytes;
    s->release = release;
    s->ctx = ctx;
    *out_s = s;
    return 0;
}

inferd_storage *inferd_storage_ref(inferd_storage *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void inferd_storage_unref(inferd_storage *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->release)
        s->release(s->ctx, s->data, s->bytes);
    inferd_free(s);
}

void *inferd_storage_data(const inferd_storage *s) { return s->data; }

size_t inferd_storage_bytes(const inferd_storage *s) { return s->bytes; }

inferd_storage_kind inferd_storage_kind_of(const inferd_storage *s) { return s->kind; }

uint32_t inferd_storage_refs(const inferd_storage *s) { return atomic_load(&s->refs); }

void *inferd__storage_ctx_if(const inferd_storage *s, inferd_storage_release_fn fn)
{
    return s && s->release == fn ? s->ctx : NULL;
}

/* ---- tensors ---- */

/* The byte range [*lo, *hi) that a tensor of this geometry addresses,
 * relative to its first element; an empty tensor addresses nothing. */
static int extent(inferd_elem elem, uint32_t ndim, const int64_t *shape, const int64_t *strides,
                  int64_t *lo, int64_t *hi, bool *empty, inferd_error *err)
{
    const int64_t esz = (int64_t)inferd_elem_size(elem);
    __int128 min = 0, max = 0;
    *empty = false;
    for (uint32_t d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return inferd_fail(err, INFERD_E_INVALID, "dimension %u is %lld, negative", d,
                               (long long)shape[d]);
        if (shape[d] == 0)
            *empty = true;
    }
    if (*empty) {
        *lo = *hi = 0;
        return 0;
    }
    const __int128 limit = (__int128)1 << 62;
    __int128 numel = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        __int128 span = (__int128)(shape[d] - 1) * strides[d]; /* < 2^126 */
        numel *= shape[d];
        if (span > limit || span < -limit || numel > limit)
            return inferd_fail(err, INFERD_E_RANGE,
                               "dimension %u: the tensor is larger than memory can be", d);
        span *= esz;
        if (span < 0)
            min += span;
        else
            max += span;
        if (min < -limit || max > limit)
            return inferd_fail(err, INFERD_E_RANGE,
                               "dimension %u: the tensor is larger than memory can be", d);
    }
    *lo = (int64_t)min;
    *hi = (int64_t)max + esz;
    return 0;
}

int inferd_tensor_init(inferd_tensor *out, inferd_elem elem, uint32_t ndim, const int64_t *shape,
                       const int64_t *strides, uint64_t offset, inferd_storage *s,
                       inferd_error *err)
{
    if ((unsigned)elem >= INFERD_ELEM_COUNT)
        return inferd_fail(err, INFERD_E_INVALID, "unknown element type %d", (int)elem);
    if (ndim > INFERD_TENSOR_DIMS_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "%u dimensions, at most %d", ndim,
                           INFERD_TENSOR_DIMS_MAX);
    if (!s)
        return inferd_fail(err, INFERD_E_INVALID, "a tensor needs a storage");
    const uint64_t esz = inferd_elem_size(elem);
    if (offset % esz != 0)
        return inferd_fail(
            err, INFERD_E_INVALID, "offset %llu is not a multiple of the %s element size (%llu)",
            (unsigned long long)offset, inferd_elem_name(elem), (unsigned long long)esz);
    inferd_tensor t;
    memset(&t, 0, sizeof(t));
    t.elem = elem;
    t.ndim = ndim;
    for (uint32_t d = 0; d < ndim; d++)
        t.shape[d] = shape[d];
    if (strides) {
        for (uint32_t d = 0; d < ndim; d++)
            t.strides[d] = strides[d];
    } else {
        __int128 st = 1; /* saturates at 2^63: extent() refuses such a shape */
        for (uint32_t d = ndim; d-- > 0;) {
            t.strides[d] = st > INT64_MAX ? INT64_MAX : (int64_t)st;
            st *= shape[d] > 0 ? shape[d] : 1;
            if (st > INT64_MAX)
                st = (__int128)INT64_MAX + 1;
        }
    }
    int64_t lo, hi;
    bool empty;
    int rc = extent(elem, ndim, t.shape, t.strides, &lo, &hi, &empty, err);
    if (rc < 0)
        return rc;
    const __int128 first = (__int128)offset + lo, end = (__int128)offset + hi;
    const __int128 size = (__int128)inferd_storage_bytes(s);
    if (offset > size)
        return inferd_fail(err, INFERD_E_RANGE, "offset %llu is beyond the storage's %zu bytes",
                           (unsigned long long)offset, inferd_storage_bytes(s));
    if (!empty && first < 0)
        return inferd_fail(err, INFERD_E_RANGE,
                           "a negative stride reaches %lld bytes before the storage's start",
                           (long long)-first);
    if (!empty && end > size)
        return inferd_fail(err, INFERD_E_RANGE,
                           "the tensor needs %lld bytes of its storage from offset %llu; it has "
                           "%zu",
                           (long long)(hi - lo), (unsigned long long)offset,
                           inferd_storage_bytes(s));
    t.offset = offset;
    t.storage = inferd_storage_ref(s);
    *out = t;
    return 0;
}

int inferd_tensor_alloc(inferd_tensor *out, inferd_elem elem, uint32_t ndim, const int64_t *shape,
                        inferd_error *err)
{
    if ((unsigned)elem >= INFERD_ELEM_COUNT || ndim > INFERD_TENSOR_DIMS_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "element type %d, %u dimensions", (int)elem,
                           ndim);
    __int128 n = inferd_elem_size(elem);
    for (uint32_t d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return inferd_fail(err, INFERD_E_INVALID, "dimension %u is %lld, negative", d,
                               (long long)shape[d]);
        n *= shape[d];
        if (n > (__int128)SIZE_MAX / 2)
            return inferd_fail(err, INFERD_E_RANGE,
                               "the shape has more bytes than memory holds (dimension %u)", d);
    }
    inferd_storage *s;
    int rc = inferd_storage_heap((size_t)n, &s, err);
    if (rc < 0)
        return rc;
    rc = inferd_tensor_init(out, elem, ndim, shape, NULL, 0, s, err);
    inferd_storage_unref(s); /* the tensor's reference remains */
    return rc;
}

void inferd_tensor_fini(inferd_tensor *t)
{
    if (!t)
        return;
    inferd_storage_unref(t->storage);
    memset(t, 0, sizeof(*t));
}

void inferd_tensor_share(inferd_tensor *out, const inferd_tensor *t)
{
    *out = *t;
    inferd_storage_ref(out->storage);
}

uint64_t inferd_tensor_numel(const inferd_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    return n;
}

uint64_t inferd_tensor_nbytes(const inferd_tensor *t)
{
    return inferd_tensor_numel(t) * inferd_elem_size(t->elem);
}

bool inferd_tensor_is_contiguous(const inferd_tensor *t)
{
    int64_t want = 1;
    for (uint32_t d = t->ndim; d-- > 0;) {
        if (t->shape[d] != 1 && t->strides[d] != want)
            return false;
        want *= t->shape[d];
    }
    return true;
}

void *inferd_tensor_data(const inferd_tensor *t)
{
    return t->storage ? (char *)inferd_storage_data(t->storage) + t->offset : NULL;
}

/* ---- DLPack ---- */

/* What an exported tensor carries: the DLPack struct, its shape and
 * strides, and the storage reference. */
typedef struct export_ctx {
    DLManagedTensor m;
    int64_t shape[INFERD_TENSOR_DIMS_MAX];
    int64_t strides[INFERD_TENSOR_DIMS_MAX];
    inferd_storage *storage;
} export_ctx;

static void export_deleter(DLManagedTensor *m)
{
    export_ctx *x = m->manager_ctx;
    inferd_storage_unref(x->storage);
    inferd_free(x);
}

int inferd_tensor_to_dlpack(const inferd_tensor *t, DLManagedTensor **out_m, inferd_error *err)
{
    if ((unsigned)t->elem >= INFERD_ELEM_COUNT || ELEMS[t->elem].dl_code == 0xff)
        return inferd_fail(err, INFERD_E_UNSUPPORTED, "a %s tensor has no DLPack type",
                           inferd_elem_name(t->elem));
    export_ctx *x = inferd_calloc(1, sizeof(*x));
    if (!x)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for a DLPack tensor");
    memcpy(x->shape, t->shape, sizeof(x->shape));
    memcpy(x->strides, t->strides, sizeof(x->strides));
    x->storage = inferd_storage_ref(t->storage);
    DLTensor *d = &x->m.dl_tensor;
    d->data = inferd_storage_data(t->storage);
    d->byte_offset = t->offset;
    d->device = (DLDevice){kDLCPU, 0};
    d->ndim = (int)t->ndim;
    d->dtype = (DLDataType){ELEMS[t->elem].dl_code, (uint8_t)(8 * ELEMS[t->elem].size), 1};
    d->shape = x->shape;
    d->strides = x->strides;
    x->m.manager_ctx = x;
    x->m.deleter = export_deleter;
    *out_m = &x->m;
    return 0;
}

static int elem_of_dl(DLDataType t)
{
    if (t.lanes != 1)
        return -1;
    for (int i = 0; i < INFERD_ELEM_COUNT; i++)
        if (i != INFERD_ELEM_BOOL && ELEMS[i].dl_code == t.code && 8 * ELEMS[i].size == t.bits)
            return i;
    return -1;
}

static void release_dlpack(void *ctx, void *data, size_t bytes)
{
    (void)data, (void)bytes;
    DLManagedTensor *m = ctx;
    if (m->deleter)
        m->deleter(m);
}

int inferd_tensor_from_dlpack(DLManagedTensor *m, inferd_tensor *out, inferd_error *err)
{
    const DLTensor *d = &m->dl_tensor;
    int rc;
    int e = elem_of_dl(d->dtype);
    int64_t strides[INFERD_TENSOR_DIMS_MAX];
    int64_t lo = 0, hi = 0;
    bool empty = false;
    inferd_storage *s = NULL;
    if (d->device.device_type != kDLCPU && d->device.device_type != kDLCUDAHost) {
        rc = inferd_fail(err, INFERD_E_UNSUPPORTED,
                         "DLPack device type %d: only CPU (host) memory is taken",
                         (int)d->device.device_type);
        goto fail;
    }
    if (e < 0) {
        rc = inferd_fail(err, INFERD_E_UNSUPPORTED,
                         "DLPack type code %u, %u bits, %u lanes: not a supported element type",
                         d->dtype.code, d->dtype.bits, d->dtype.lanes);
        goto fail;
    }
    if (d->ndim < 0 || d->ndim > INFERD_TENSOR_DIMS_MAX) {
        rc = inferd_fail(err, INFERD_E_INVALID, "%d dimensions, at most %d", d->ndim,
                         INFERD_TENSOR_DIMS_MAX);
        goto fail;
    }
    const uint32_t nd = (uint32_t)d->ndim;
    if (nd > 0 && !d->shape) {
        rc = inferd_fail(err, INFERD_E_INVALID, "a DLPack tensor without a shape");
        goto fail;
    }
    int64_t st = 1;
    for (uint32_t k = nd; k-- > 0;) {
        if (d->shape[k] < 0) {
            rc = inferd_fail(err, INFERD_E_INVALID, "dimension %u is %lld, negative", k,
                             (long long)d->shape[k]);
            goto fail;
        }
        strides[k] = d->strides ? d->strides[k] : st;
        if (d->shape[k] > 0 && st > INT64_MAX / d->shape[k]) {
            rc = inferd_fail(err, INFERD_E_RANGE, "the shape has more elements than memory holds");
            goto fail;
        }
        st *= d->shape[k] > 0 ? d->shape[k] : 1;
    }
    rc = extent((inferd_elem)e, nd, d->shape, strides, &lo, &hi, &empty, err);
    if (rc < 0)
        goto fail;
    if (!d->data && !empty) {
        rc = inferd_fail(err, INFERD_E_INVALID, "a DLPack tensor without data");
        goto fail;
    }
    /* The storage is exactly what the tensor addresses. */
    char *first = d->data ? (char *)d->data + d->byte_offset + lo : NULL;
    rc = inferd_storage_wrap(INFERD_STORAGE_BORROWED, first, (size_t)(hi - lo), release_dlpack, m,
                             &s, err);
    if (rc < 0)
        goto fail;
    rc = inferd_tensor_init(out, (inferd_elem)e, nd, d->shape, strides, (uint64_t)-lo, s, err);
    inferd_storage_unref(s); /* the tensor's reference remains; on failure m goes here */
    return rc;
fail:
    if (m->deleter)
        m->deleter(m);
    return rc;
}
