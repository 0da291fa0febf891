/* Tensor layer: tensors, storages and DLPack (inferd/tensor.h), black box.
 * Element types (KServe names and sizes, parsing); storages (heap zeroed
 * and 64-byte aligned, wrapped memory whose release runs exactly once at
 * the last reference, also from other threads); tensors (row-major
 * strides, scalars, empty ones, views with explicit, zero and negative
 * strides, every bound refused with a message and no reference kept);
 * DLPack 0.6 export and import without copies (same data pointer, the
 * deleter runs once, the storage lives while either side holds it), what
 * import refuses (the deleter still runs at once), and every allocation
 * of each constructor failing in turn (ASan builds check for leaks). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlpack/dlpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/error.h"
#include "inferd/tensor.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
/* More allocations than any constructor here makes. */
#define ALLOC_TRIES 64

/* A failed bounds check: either code the header allows, recorded in the
 * error with a message. */
#define assert_bounds_refused(rc, e)                                     \
    do {                                                                 \
        assert_true((rc) == INFERD_E_INVALID || (rc) == INFERD_E_RANGE); \
        assert_int_equal((e).code, (rc));                                \
        assert_true((e).msg[0] != '\0');                                 \
    } while (0)

/* ---- helpers ---- */

typedef struct released {
    atomic_int calls;
    void *ctx;
    void *data;
    size_t bytes;
} released;

static void on_release(void *ctx, void *data, size_t bytes)
{
    released *r = ctx;
    r->ctx = ctx;
    r->data = data;
    r->bytes = bytes;
    atomic_fetch_add_explicit(&r->calls, 1, memory_order_acq_rel);
}

static int release_calls(released *r)
{
    return atomic_load_explicit(&r->calls, memory_order_acquire);
}

/* A borrowed storage over @p data that records its release in @p r. */
static inferd_storage *borrow(void *data, size_t bytes, released *r)
{
    inferd_storage *s = NULL;
    inferd_error e = {0};
    assert_int_equal(
        inferd_storage_wrap(INFERD_STORAGE_BORROWED, data, bytes, on_release, r, &s, &e), 0);
    assert_non_null(s);
    return s;
}

static inferd_storage *heap(size_t bytes)
{
    inferd_storage *s = NULL;
    inferd_error e = {0};
    assert_int_equal(inferd_storage_heap(bytes, &s, &e), 0);
    assert_non_null(s);
    return s;
}

/* The tensor's invariant: its first element is the storage's data plus
 * the offset, and every element it can address lies inside the storage. */
static void assert_inside_storage(const inferd_tensor *t)
{
    const char *base = inferd_storage_data(t->storage);
    size_t es = inferd_elem_size(t->elem);
    assert_true(es > 0);
    assert_ptr_equal(inferd_tensor_data(t), base + t->offset);
    if (inferd_tensor_numel(t) == 0)
        return;
    int64_t lo = 0, hi = 0; /* element offsets from the first element */
    for (uint32_t d = 0; d < t->ndim; d++) {
        int64_t span = (t->shape[d] - 1) * t->strides[d];
        if (span < 0)
            lo += span;
        else
            hi += span;
    }
    assert_true((int64_t)t->offset + lo * (int64_t)es >= 0);
    assert_true((int64_t)t->offset + (hi + 1) * (int64_t)es <=
                (int64_t)inferd_storage_bytes(t->storage));
}

static void assert_shape(const inferd_tensor *t, uint32_t ndim, const int64_t *shape,
                         const int64_t *strides)
{
    assert_int_equal(t->ndim, ndim);
    for (uint32_t d = 0; d < ndim; d++) {
        assert_int_equal(t->shape[d], shape[d]);
        assert_int_equal(t->strides[d], strides[d]);
    }
}

/* A hand-made DLManagedTensor over the test's memory; its deleter counts
 * its calls and remembers what it was called with. */
typedef struct hand {
    DLManagedTensor m;
    int64_t shape[16], strides[16];
    int deleted;
    DLManagedTensor *deleted_arg;
} hand;

static void hand_delete(DLManagedTensor *m)
{
    hand *h = m->manager_ctx;
    h->deleted++;
    h->deleted_arg = m;
}

static void hand_init(hand *h, void *data, int ndim, const int64_t *shape, const int64_t *strides,
                      DLDataType dt, DLDeviceType dev, uint64_t byte_offset)
{
    memset(h, 0, sizeof(*h));
    for (int i = 0; i < ndim && i < 16; i++) {
        h->shape[i] = shape[i];
        h->strides[i] = strides ? strides[i] : 0;
    }
    h->m.dl_tensor.data = data;
    h->m.dl_tensor.device.device_type = dev;
    h->m.dl_tensor.device.device_id = 0;
    h->m.dl_tensor.ndim = ndim;
    h->m.dl_tensor.dtype = dt;
    h->m.dl_tensor.shape = h->shape;
    h->m.dl_tensor.strides = strides ? h->strides : NULL;
    h->m.dl_tensor.byte_offset = byte_offset;
    h->m.manager_ctx = h;
    h->m.deleter = hand_delete;
}

static DLDataType dl_type(uint8_t code, uint8_t bits, uint16_t lanes)
{
    DLDataType dt = {.code = code, .bits = bits, .lanes = lanes};
    return dt;
}

/* ---- element types ---- */

static const struct {
    inferd_elem e;
    const char *name;
    size_t size;
} elem_table[] = {
    {INFERD_ELEM_BOOL, "BOOL", 1},  {INFERD_ELEM_U8, "UINT8", 1},    {INFERD_ELEM_U16, "UINT16", 2},
    {INFERD_ELEM_U32, "UINT32", 4}, {INFERD_ELEM_U64, "UINT64", 8},  {INFERD_ELEM_I8, "INT8", 1},
    {INFERD_ELEM_I16, "INT16", 2},  {INFERD_ELEM_I32, "INT32", 4},   {INFERD_ELEM_I64, "INT64", 8},
    {INFERD_ELEM_F16, "FP16", 2},   {INFERD_ELEM_BF16, "BF16", 2},   {INFERD_ELEM_F32, "FP32", 4},
    {INFERD_ELEM_F64, "FP64", 8},   {INFERD_ELEM_BYTES, "BYTES", 1},
};

static void test_tensor_elem_table(void **state)
{
    (void)state;
    assert_int_equal(N_ELEMS(elem_table), INFERD_ELEM_COUNT);
    for (size_t i = 0; i < N_ELEMS(elem_table); i++) {
        assert_int_equal(inferd_elem_size(elem_table[i].e), elem_table[i].size);
        const char *name = inferd_elem_name(elem_table[i].e);
        assert_non_null(name);
        assert_string_equal(name, elem_table[i].name);
        assert_int_equal(inferd_elem_parse(elem_table[i].name), (int)elem_table[i].e);
    }
}

static void test_tensor_elem_parse_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",       "fp32",     "Fp32",  "bool",  "uint8",   "bytes",  "FP8",
        "FP3",    "FP322",    "FP32 ", " FP32", "FLOAT32", "INT",    "UINT",
        "INT128", "BFLOAT16", "FLOAT", "F32",   "STRING",  "BF16\n",
    };
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        if (inferd_elem_parse(bad[i]) != -1)
            print_error("parsed \"%s\"\n", bad[i]);
        assert_int_equal(inferd_elem_parse(bad[i]), -1);
    }
    /* Names are compared whole, not as prefixes of a longer buffer. */
    char buf[8] = {'F', 'P', '3', '2', 'X', '\0'};
    assert_int_equal(inferd_elem_parse(buf), -1);
    buf[4] = '\0';
    assert_int_equal(inferd_elem_parse(buf), INFERD_ELEM_F32);
}

static void test_tensor_elem_out_of_range(void **state)
{
    (void)state;
    const int unknown[] = {INFERD_ELEM_COUNT, INFERD_ELEM_COUNT + 1, 99, 1000, -1};
    for (size_t i = 0; i < N_ELEMS(unknown); i++) {
        inferd_elem e = (inferd_elem)unknown[i];
        assert_int_equal(inferd_elem_size(e), 0);
        /* Whatever it names an unknown type, it is no type's name. */
        const char *name = inferd_elem_name(e);
        if (name)
            assert_int_equal(inferd_elem_parse(name), -1);
    }
}

/* ---- storages ---- */

static void test_tensor_heap_storage(void **state)
{
    (void)state;
    /* Sizes up to ASan's malloc fill (4 KiB) come back dirty from malloc
     * there, so the zeroing is really checked. */
    const size_t sizes[] = {1, 3, 63, 64, 65, 1000, 4095, 4096, 4097, 100000};
    for (size_t i = 0; i < N_ELEMS(sizes); i++) {
        inferd_storage *s = NULL;
        inferd_error e = {0};
        assert_int_equal(inferd_storage_heap(sizes[i], &s, &e), 0);
        assert_non_null(s);
        assert_int_equal(e.code, 0);
        assert_int_equal(inferd_storage_bytes(s), sizes[i]);
        assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_HEAP);
        assert_int_equal(inferd_storage_refs(s), 1);
        unsigned char *p = inferd_storage_data(s);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (size_t k = 0; k < sizes[i]; k++)
            assert_int_equal(p[k], 0);
        /* The whole of it is writable (ASan checks the bounds). */
        memset(p, 0xa5, sizes[i]);
        inferd_storage_unref(s);
    }

    /* 0 bytes is a storage too. */
    inferd_storage *z = NULL;
    assert_int_equal(inferd_storage_heap(0, &z, NULL), 0);
    assert_non_null(z);
    assert_int_equal(inferd_storage_bytes(z), 0);
    assert_int_equal(inferd_storage_kind_of(z), INFERD_STORAGE_HEAP);
    assert_int_equal(inferd_storage_refs(z), 1);
    inferd_storage_unref(z);
}

static void test_tensor_storage_refs(void **state)
{
    (void)state;
    inferd_storage *s = heap(16);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_ptr_equal(inferd_storage_ref(s), s);
    assert_int_equal(inferd_storage_refs(s), 2);
    assert_ptr_equal(inferd_storage_ref(s), s);
    assert_int_equal(inferd_storage_refs(s), 3);
    inferd_storage_unref(s);
    assert_int_equal(inferd_storage_refs(s), 2);
    inferd_storage_unref(s);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);

    /* NULL is fine both ways. */
    assert_null(inferd_storage_ref(NULL));
    inferd_storage_unref(NULL);
}

static void test_tensor_borrowed_storage(void **state)
{
    (void)state;
    static char buf[256];
    released r = {0};
    inferd_storage *s = NULL;
    inferd_error e = {0};
    assert_int_equal(
        inferd_storage_wrap(INFERD_STORAGE_BORROWED, buf, sizeof(buf), on_release, &r, &s, &e), 0);
    assert_non_null(s);
    assert_ptr_equal(inferd_storage_data(s), buf);
    assert_int_equal(inferd_storage_bytes(s), sizeof(buf));
    assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_BORROWED);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_ptr_equal(inferd_storage_ref(s), s);
    assert_ptr_equal(inferd_storage_ref(s), s);
    assert_int_equal(inferd_storage_refs(s), 3);
    inferd_storage_unref(s);
    inferd_storage_unref(s);
    assert_int_equal(release_calls(&r), 0); /* not before the last */
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
    assert_int_equal(release_calls(&r), 1);
    assert_ptr_equal(r.ctx, &r);
    assert_ptr_equal(r.data, buf);
    assert_int_equal(r.bytes, sizeof(buf));

    /* A region's memory, with no release: fine. */
    s = NULL;
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_REGION, buf, 8, NULL, NULL, &s, &e), 0);
    assert_non_null(s);
    assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_REGION);
    assert_ptr_equal(inferd_storage_data(s), buf);
    assert_int_equal(inferd_storage_bytes(s), 8);
    inferd_storage_ref(s);
    inferd_storage_unref(s);
    inferd_storage_unref(s);

    /* NULL data with 0 bytes is no error, and its release still runs. */
    released r0 = {0};
    s = NULL;
    assert_int_equal(
        inferd_storage_wrap(INFERD_STORAGE_BORROWED, NULL, 0, on_release, &r0, &s, NULL), 0);
    assert_non_null(s);
    assert_int_equal(inferd_storage_bytes(s), 0);
    inferd_storage_unref(s);
    assert_int_equal(release_calls(&r0), 1);
    assert_ptr_equal(r0.ctx, &r0);
    assert_null(r0.data);
    assert_int_equal(r0.bytes, 0);
}

static void test_tensor_wrap_refused(void **state)
{
    (void)state;
    static char buf[16];
    released r = {0};
    inferd_storage *const sentinel = (inferd_storage *)(uintptr_t)0x1234;
    inferd_storage *s;
    inferd_error e;

    /* NULL data with bytes > 0. */
    s = sentinel;
    e = (inferd_error){0};
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_BORROWED, NULL, 8, on_release, &r, &s, &e),
                     INFERD_E_INVALID);
    assert_int_equal(e.code, INFERD_E_INVALID);
    assert_true(e.msg[0] != '\0');
    assert_ptr_equal(s, sentinel); /* out-params are written only on success */

    s = sentinel;
    e = (inferd_error){0};
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_REGION, NULL, 1, on_release, &r, &s, &e),
                     INFERD_E_INVALID);
    assert_true(e.msg[0] != '\0');
    assert_ptr_equal(s, sentinel);

    /* The heap kind is not wrapped memory, nor is a kind that does not exist. */
    const int kinds[] = {INFERD_STORAGE_HEAP, 3, 99, -1};
    for (size_t i = 0; i < N_ELEMS(kinds); i++) {
        s = sentinel;
        e = (inferd_error){0};
        assert_int_equal(inferd_storage_wrap((inferd_storage_kind)kinds[i], buf, sizeof(buf),
                                             on_release, &r, &s, &e),
                         INFERD_E_INVALID);
        assert_int_equal(e.code, INFERD_E_INVALID);
        assert_true(e.msg[0] != '\0');
        assert_ptr_equal(s, sentinel);
    }

    /* No err: the code alone. */
    s = sentinel;
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_BORROWED, NULL, 8, NULL, NULL, &s, NULL),
                     INFERD_E_INVALID);
    assert_ptr_equal(s, sentinel);

    /* A refused wrap takes nothing: the memory stays the caller's. */
    assert_int_equal(release_calls(&r), 0);
}

typedef struct ref_thread_arg {
    inferd_storage *s;
    int iterations;
} ref_thread_arg;

/* Takes and drops references, then drops the one it was given: the last
 * reference may go on any of these threads. */
static void *ref_unref_loop(void *p)
{
    ref_thread_arg *a = p;
    for (int i = 0; i < a->iterations; i++) {
        inferd_storage_ref(a->s);
        inferd_storage_unref(a->s);
    }
    inferd_storage_unref(a->s);
    return NULL;
}

static void test_tensor_refs_across_threads(void **state)
{
    (void)state;
    enum { N_THREADS = 4, ITERATIONS = 100000 };
    static char buf[8];

    /* Round 1: the creator keeps its reference through the race. */
    released r = {0};
    inferd_storage *s = borrow(buf, sizeof(buf), &r);
    ref_thread_arg a = {s, ITERATIONS};
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        inferd_storage_ref(s); /* one for each thread to drop */
    assert_int_equal(inferd_storage_refs(s), 1 + N_THREADS);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, ref_unref_loop, &a), 0);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(release_calls(&r), 0);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
    assert_int_equal(release_calls(&r), 1);

    /* Round 2: the creator drops its reference while they run; the last
     * goes on one of them, and the release runs once. */
    released r2 = {0};
    s = borrow(buf, sizeof(buf), &r2);
    a.s = s;
    for (int i = 0; i < N_THREADS; i++)
        inferd_storage_ref(s);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, ref_unref_loop, &a), 0);
    inferd_storage_unref(s);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(release_calls(&r2), 1);
    assert_ptr_equal(r2.data, buf);
    assert_int_equal(r2.bytes, sizeof(buf));
}

/* ---- tensors ---- */

static void test_tensor_alloc_contiguous(void **state)
{
    (void)state;
    inferd_tensor t;
    inferd_error e = {0};
    const int64_t shape[3] = {2, 3, 4}, strides[3] = {12, 4, 1};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 3, shape, &e), 0);
    assert_int_equal(t.elem, INFERD_ELEM_F32);
    assert_shape(&t, 3, shape, strides);
    assert_int_equal(t.offset, 0);
    assert_non_null(t.storage);
    assert_int_equal(inferd_tensor_numel(&t), 24);
    assert_int_equal(inferd_tensor_nbytes(&t), 96);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), inferd_storage_data(t.storage));
    assert_int_equal((uintptr_t)inferd_tensor_data(&t) % 64, 0);
    assert_true(inferd_storage_bytes(t.storage) >= 96);
    assert_int_equal(inferd_storage_kind_of(t.storage), INFERD_STORAGE_HEAP);
    assert_int_equal(inferd_storage_refs(t.storage), 1); /* the tensor's only */
    const unsigned char *p = inferd_tensor_data(&t);
    for (int i = 0; i < 96; i++)
        assert_int_equal(p[i], 0);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);
    assert_null(t.storage);

    /* Other types and ranks: strides in elements, not bytes. */
    const int64_t s5[5] = {2, 1, 3, 5, 7}, st5[5] = {105, 105, 35, 7, 1};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F64, 5, s5, &e), 0);
    assert_shape(&t, 5, s5, st5);
    assert_int_equal(inferd_tensor_numel(&t), 210);
    assert_int_equal(inferd_tensor_nbytes(&t), 210 * 8);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    const int64_t s8[8] = {2, 2, 2, 2, 2, 2, 2, 3};
    const int64_t st8[8] = {192, 96, 48, 24, 12, 6, 3, 1};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_I16, 8, s8, &e), 0);
    assert_shape(&t, 8, s8, st8);
    assert_int_equal(inferd_tensor_numel(&t), 384);
    assert_int_equal(inferd_tensor_nbytes(&t), 768);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    /* BYTES: one byte an element. */
    const int64_t n7 = 7;
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_BYTES, 1, &n7, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 7);
    assert_int_equal(inferd_tensor_nbytes(&t), 7);
    assert_int_equal(t.strides[0], 1);
    inferd_tensor_fini(&t);

    /* Every type, one dimension. */
    for (size_t i = 0; i < N_ELEMS(elem_table); i++) {
        const int64_t n3 = 3;
        assert_int_equal(inferd_tensor_alloc(&t, elem_table[i].e, 1, &n3, &e), 0);
        assert_int_equal(t.elem, elem_table[i].e);
        assert_int_equal(inferd_tensor_nbytes(&t), 3 * elem_table[i].size);
        assert_inside_storage(&t);
        inferd_tensor_fini(&t);
    }
}

static void test_tensor_scalar_and_empty(void **state)
{
    (void)state;
    inferd_tensor t;
    inferd_error e = {0};
    const int64_t unused[1] = {42}; /* ndim 0 reads no dimension */

    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_I64, 0, unused, &e), 0);
    assert_int_equal(t.ndim, 0);
    assert_int_equal(inferd_tensor_numel(&t), 1);
    assert_int_equal(inferd_tensor_nbytes(&t), 8);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_true(inferd_storage_bytes(t.storage) >= 8);
    assert_inside_storage(&t);
    *(int64_t *)inferd_tensor_data(&t) = -5;
    inferd_tensor_fini(&t);

    /* A scalar over a storage: it needs one element's room. */
    inferd_storage *s = heap(4);
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 0, unused, NULL, 0, s, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 1);
    assert_int_equal(inferd_tensor_nbytes(&t), 4);
    inferd_tensor_fini(&t);
    memset(&t, 0, sizeof(t));
    e = (inferd_error){0};
    int rc = inferd_tensor_init(&t, INFERD_ELEM_F64, 0, unused, NULL, 0, s, &e);
    assert_bounds_refused(rc, e);
    memset(&t, 0, sizeof(t));
    e = (inferd_error){0};
    rc = inferd_tensor_init(&t, INFERD_ELEM_F32, 0, unused, NULL, 4, s, &e);
    assert_bounds_refused(rc, e);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);

    /* A zero dimension: no elements, and allowed anywhere. */
    const int64_t empty[2] = {3, 0};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_U8, 2, empty, &e), 0);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 3);
    assert_int_equal(t.shape[1], 0);
    assert_int_equal(inferd_tensor_numel(&t), 0);
    assert_int_equal(inferd_tensor_nbytes(&t), 0);
    assert_non_null(t.storage);
    inferd_tensor_fini(&t);

    const int64_t lead[3] = {0, 5, 6};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 3, lead, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 0);
    assert_int_equal(inferd_tensor_nbytes(&t), 0);
    inferd_tensor_fini(&t);

    /* An empty tensor fits even a storage of 0 bytes. */
    s = heap(0);
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 3, lead, NULL, 0, s, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 0);
    assert_int_equal(inferd_storage_refs(s), 2);
    inferd_tensor_fini(&t);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
}

static void test_tensor_init_contiguous_view(void **state)
{
    (void)state;
    inferd_storage *s = heap(100 * 4);
    inferd_tensor t;
    inferd_error e = {0};
    const int64_t shape[2] = {4, 5}, strides[2] = {5, 1};

    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, NULL, 0, s, &e), 0);
    assert_int_equal(t.elem, INFERD_ELEM_F32);
    assert_ptr_equal(t.storage, s);
    assert_shape(&t, 2, shape, strides);
    assert_int_equal(t.offset, 0);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), inferd_storage_data(s));
    inferd_tensor_fini(&t);

    /* At an offset, with strides given as a contiguous tensor's: still
     * contiguous. */
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, strides, 40, s, &e), 0);
    assert_int_equal(t.offset, 40);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), (char *)inferd_storage_data(s) + 40);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    /* Exactly filling the storage's end. */
    const int64_t rest[1] = {80};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 1, rest, NULL, 80, s, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 80);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);
    const int64_t one[1] = {1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 1, one, NULL, 396, s, &e), 0);
    inferd_tensor_fini(&t);

    /* Another type over the same bytes: offset aligned to its own size. */
    const int64_t h3[1] = {3};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F16, 1, h3, NULL, 2, s, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), (char *)inferd_storage_data(s) + 2);
    inferd_tensor_fini(&t);
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_U8, 1, h3, NULL, 397, s, &e), 0);
    inferd_tensor_fini(&t);

    /* Eight dimensions is the maximum. */
    const int64_t ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 8, ones, NULL, 0, s, &e), 0);
    assert_int_equal(t.ndim, 8);
    assert_int_equal(inferd_tensor_numel(&t), 1);
    inferd_tensor_fini(&t);

    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
}

static void test_tensor_init_strided_views(void **state)
{
    (void)state;
    inferd_storage *s = heap(6 * 4); /* a 2x3 of floats */
    float *f = inferd_storage_data(s);
    for (int i = 0; i < 6; i++)
        f[i] = (float)i;
    inferd_tensor t;
    inferd_error e = {0};

    /* The transpose: valid, not contiguous. */
    const int64_t shape[2] = {3, 2}, tr[2] = {1, 3};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, tr, 0, s, &e), 0);
    assert_shape(&t, 2, shape, tr);
    assert_false(inferd_tensor_is_contiguous(&t));
    assert_int_equal(inferd_tensor_numel(&t), 6);
    assert_int_equal(inferd_tensor_nbytes(&t), 24); /* its elements laid out contiguously */
    assert_ptr_equal(inferd_tensor_data(&t), f);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    /* Rows read backwards: the first element is the last row. */
    const int64_t m23[2] = {2, 3}, back[2] = {-3, 1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, m23, back, 12, s, &e), 0);
    assert_shape(&t, 2, m23, back);
    assert_false(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), &f[3]);
    assert_float_equal(((float *)inferd_tensor_data(&t))[back[0]], 0.0, 0);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    /* All six reversed. */
    const int64_t row[1] = {6}, rev[1] = {-1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 1, row, rev, 20, s, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), &f[5]);
    assert_false(inferd_tensor_is_contiguous(&t));
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    /* Every other element; a broadcast (stride 0). */
    const int64_t three[1] = {3}, two[1] = {2};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 1, three, two, 0, s, &e), 0);
    assert_false(inferd_tensor_is_contiguous(&t));
    inferd_tensor_fini(&t);
    const int64_t b43[2] = {4, 3}, bcast[2] = {0, 1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, b43, bcast, 12, s, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 12);
    assert_int_equal(inferd_tensor_nbytes(&t), 48);
    assert_false(inferd_tensor_is_contiguous(&t));
    inferd_tensor_fini(&t);

    /* A 1-D stride of 1 is contiguous; the last stride reaching exactly
     * the storage's last element is in bounds. */
    assert_int_equal(
        inferd_tensor_init(&t, INFERD_ELEM_F32, 1, row, (const int64_t[]){1}, 0, s, &e), 0);
    assert_true(inferd_tensor_is_contiguous(&t));
    inferd_tensor_fini(&t);
    assert_int_equal(
        inferd_tensor_init(&t, INFERD_ELEM_F32, 1, two, (const int64_t[]){5}, 0, s, &e), 0);
    inferd_tensor_fini(&t);

    /* A dimension of size 1 may have any stride: "strides as a contiguous
     * tensor's, for dims > 1". */
    const int64_t s213[3] = {2, 1, 3}, st213[3] = {3, 99, 1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 3, s213, st213, 0, s, &e), 0);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);

    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
}

typedef struct bad_view {
    const char *what;
    inferd_elem elem;
    uint32_t ndim;
    int64_t shape[9];
    int64_t strides[9];
    bool strided;
    uint64_t offset;
} bad_view;

static void test_tensor_init_bounds(void **state)
{
    (void)state;
    /* 24 bytes: six floats. */
    inferd_storage *s = heap(24);
    const int64_t big = (int64_t)1 << 40;
    const bad_view bad[] = {
        {"offset beyond the storage", INFERD_ELEM_F32, 1, {1}, {1}, false, 28},
        {"offset at the end, one element", INFERD_ELEM_F32, 1, {1}, {1}, false, 24},
        {"huge offset", INFERD_ELEM_F32, 1, {1}, {1}, false, UINT64_MAX - 3},
        {"last element beyond the end", INFERD_ELEM_F32, 2, {2, 3}, {0}, false, 4},
        {"one element too many", INFERD_ELEM_F32, 1, {7}, {0}, false, 0},
        {"scalar past the end", INFERD_ELEM_F64, 0, {0}, {0}, false, 24},
        {"a stride past the end", INFERD_ELEM_F32, 2, {3, 2}, {1, 4}, true, 0},
        {"a stride past the end (1-D)", INFERD_ELEM_F32, 1, {2}, {6}, true, 0},
        {"negative stride before the start", INFERD_ELEM_F32, 2, {2, 3}, {-3, 1}, true, 8},
        {"negative stride from 0", INFERD_ELEM_F32, 1, {2}, {-1}, true, 0},
        {"reversed row one short", INFERD_ELEM_F32, 1, {6}, {-1}, true, 16},
        {"negative dimension", INFERD_ELEM_F32, 2, {-1, 3}, {0}, false, 0},
        {"negative last dimension", INFERD_ELEM_F32, 2, {2, -3}, {0}, false, 0},
        {"negative dimension, strided", INFERD_ELEM_F32, 1, {-2}, {1}, true, 0},
        {"INT64_MIN dimension", INFERD_ELEM_U8, 1, {INT64_MIN}, {0}, false, 0},
        {"9 dimensions", INFERD_ELEM_F32, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {0}, false, 0},
        {"offset not a multiple of 4", INFERD_ELEM_F32, 1, {1}, {1}, false, 2},
        {"offset not a multiple of 8", INFERD_ELEM_F64, 1, {1}, {1}, false, 4},
        {"offset not a multiple of 2", INFERD_ELEM_F16, 1, {1}, {1}, false, 1},
        {"shape product overflow", INFERD_ELEM_F32, 2, {big, big}, {0}, false, 0},
        {"shape product overflow, u8", INFERD_ELEM_U8, 3, {big, big, 0x10}, {0}, false, 0},
        {"bytes overflow", INFERD_ELEM_F64, 1, {(int64_t)1 << 61}, {0}, false, 0},
        {"numel past uint64", INFERD_ELEM_U8, 2, {(int64_t)1 << 62, 8}, {0}, false, 0},
        {"INT64_MAX stride", INFERD_ELEM_F32, 1, {2}, {INT64_MAX}, true, 0},
        {"INT64_MIN stride", INFERD_ELEM_F32, 1, {2}, {INT64_MIN}, true, 20},
        {"stride overflow in bytes", INFERD_ELEM_F32, 1, {2}, {(int64_t)1 << 62}, true, 0},
        {"stride times dim overflow", INFERD_ELEM_U8, 1, {big}, {big}, true, 0},
        {"huge dimension, stride 0", INFERD_ELEM_U8, 2, {INT64_MAX, 2}, {0, 1}, true, 23},
    };
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        inferd_tensor t;
        memset(&t, 0, sizeof(t));
        inferd_error e = {0};
        int rc = inferd_tensor_init(&t, bad[i].elem, bad[i].ndim, bad[i].shape,
                                    bad[i].strided ? bad[i].strides : NULL, bad[i].offset, s, &e);
        if ((rc != INFERD_E_INVALID && rc != INFERD_E_RANGE) || e.msg[0] == '\0')
            print_error("case %zu (%s): rc %d, msg \"%s\"\n", i, bad[i].what, rc, e.msg);
        assert_bounds_refused(rc, e);
        assert_null(t.storage);                      /* nothing made */
        assert_int_equal(inferd_storage_refs(s), 1); /* no reference kept */
        /* No err: the same code. */
        assert_int_equal(inferd_tensor_init(&t, bad[i].elem, bad[i].ndim, bad[i].shape,
                                            bad[i].strided ? bad[i].strides : NULL, bad[i].offset,
                                            s, NULL),
                         rc);
        assert_int_equal(inferd_storage_refs(s), 1);
    }

    /* The same refusals from alloc (no storage made, none leaked). */
    const bad_view bad_alloc[] = {
        {"negative dimension", INFERD_ELEM_F32, 2, {4, -1}, {0}, false, 0},
        {"9 dimensions", INFERD_ELEM_F32, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {0}, false, 0},
        {"UINT32_MAX dimensions", INFERD_ELEM_F32, UINT32_MAX, {1}, {0}, false, 0},
        {"shape product overflow", INFERD_ELEM_F32, 2, {big, big}, {0}, false, 0},
        {"bytes overflow", INFERD_ELEM_F64, 1, {(int64_t)1 << 61}, {0}, false, 0},
        {"numel past uint64", INFERD_ELEM_U8, 2, {(int64_t)1 << 62, 8}, {0}, false, 0},
    };
    for (size_t i = 0; i < N_ELEMS(bad_alloc); i++) {
        inferd_tensor t;
        memset(&t, 0, sizeof(t));
        inferd_error e = {0};
        int rc =
            inferd_tensor_alloc(&t, bad_alloc[i].elem, bad_alloc[i].ndim, bad_alloc[i].shape, &e);
        if ((rc != INFERD_E_INVALID && rc != INFERD_E_RANGE) || e.msg[0] == '\0')
            print_error("alloc case %zu (%s): rc %d, msg \"%s\"\n", i, bad_alloc[i].what, rc,
                        e.msg);
        assert_bounds_refused(rc, e);
        assert_null(t.storage);
    }

    /* UINT32_MAX dims to init as well. */
    inferd_tensor t;
    memset(&t, 0, sizeof(t));
    inferd_error e = {0};
    const int64_t one[1] = {1};
    int rc = inferd_tensor_init(&t, INFERD_ELEM_F32, UINT32_MAX, one, NULL, 0, s, &e);
    assert_bounds_refused(rc, e);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
}

static void test_tensor_init_refs_share_fini(void **state)
{
    (void)state;
    static float buf[6];
    released r = {0};
    inferd_storage *s = borrow(buf, sizeof(buf), &r);
    inferd_tensor a, b, c;
    const int64_t shape[2] = {2, 3};

    /* init takes its own reference; the caller keeps its own. */
    assert_int_equal(inferd_tensor_init(&a, INFERD_ELEM_F32, 2, shape, NULL, 0, s, NULL), 0);
    assert_ptr_equal(a.storage, s);
    assert_int_equal(inferd_storage_refs(s), 2);
    assert_ptr_equal(inferd_tensor_data(&a), buf);

    /* share: a second tensor, the same storage, one more reference. */
    memset(&b, 0xab, sizeof(b));
    inferd_tensor_share(&b, &a);
    assert_int_equal(inferd_storage_refs(s), 3);
    assert_ptr_equal(b.storage, s);
    assert_int_equal(b.elem, a.elem);
    assert_int_equal(b.offset, a.offset);
    assert_shape(&b, a.ndim, a.shape, a.strides);
    assert_ptr_equal(inferd_tensor_data(&b), buf);

    /* The caller's reference goes; the tensors still hold it. */
    inferd_storage_unref(s);
    assert_int_equal(inferd_storage_refs(s), 2);
    inferd_tensor_fini(&a);
    assert_null(a.storage);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_int_equal(release_calls(&r), 0);

    /* fini twice: the second finds it cleared. */
    inferd_tensor_fini(&a);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_int_equal(release_calls(&r), 0);

    /* A share of a share. */
    inferd_tensor_share(&c, &b);
    assert_int_equal(inferd_storage_refs(s), 2);
    inferd_tensor_fini(&b);
    assert_int_equal(release_calls(&r), 0);
    inferd_tensor_fini(&c);
    assert_int_equal(release_calls(&r), 1);
    assert_ptr_equal(r.data, buf);
    inferd_tensor_fini(&c);
    inferd_tensor_fini(&b);
    assert_int_equal(release_calls(&r), 1);

    /* A zeroed tensor is a cleared one. */
    inferd_tensor z;
    memset(&z, 0, sizeof(z));
    inferd_tensor_fini(&z);
    inferd_tensor_fini(&z);
    assert_null(z.storage);
}

/* ---- DLPack export ---- */

static void test_tensor_dlpack_export(void **state)
{
    (void)state;
    static float buf[6] = {1, 2, 3, 4, 5, 6};
    released r = {0};
    inferd_storage *s = borrow(buf, sizeof(buf), &r);
    inferd_tensor t;
    const int64_t shape[2] = {2, 3};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, NULL, 0, s, NULL), 0);
    inferd_storage_unref(s); /* the tensor holds it */
    assert_int_equal(inferd_storage_refs(s), 1);

    DLManagedTensor *m = NULL;
    inferd_error e = {0};
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, &e), 0);
    assert_non_null(m);
    assert_non_null(m->deleter);
    const DLTensor *d = &m->dl_tensor;
    assert_ptr_equal((char *)d->data + d->byte_offset, inferd_tensor_data(&t));
    assert_ptr_equal((char *)d->data + d->byte_offset, buf);
    assert_int_equal(d->device.device_type, kDLCPU);
    assert_int_equal(d->device.device_id, 0);
    assert_int_equal(d->ndim, 2);
    assert_int_equal(d->dtype.code, kDLFloat);
    assert_int_equal(d->dtype.bits, 32);
    assert_int_equal(d->dtype.lanes, 1);
    assert_non_null(d->shape);
    assert_int_equal(d->shape[0], 2);
    assert_int_equal(d->shape[1], 3);
    if (d->strides) {
        assert_int_equal(d->strides[0], 3);
        assert_int_equal(d->strides[1], 1);
    }
    assert_int_equal(inferd_storage_refs(s), 2); /* the consumer's reference */

    /* The source goes (and its memory is scribbled over): the DLPack
     * tensor still describes the memory, and holds it. */
    inferd_tensor_fini(&t);
    memset(&t, 0x5a, sizeof(t));
    assert_int_equal(release_calls(&r), 0);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_int_equal(d->ndim, 2);
    assert_int_equal(d->shape[0], 2);
    assert_int_equal(d->shape[1], 3);
    if (d->strides) {
        assert_int_equal(d->strides[0], 3);
        assert_int_equal(d->strides[1], 1);
    }
    assert_float_equal(((float *)((char *)d->data + d->byte_offset))[5], 6, 0);
    m->deleter(m);
    assert_int_equal(release_calls(&r), 1);
    assert_ptr_equal(r.data, buf);
    assert_int_equal(r.bytes, sizeof(buf));
}

static void test_tensor_dlpack_export_refs(void **state)
{
    (void)state;
    inferd_tensor t;
    const int64_t shape[2] = {2, 3};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 2, shape, NULL), 0);
    inferd_storage *s = t.storage;
    DLManagedTensor *m1 = NULL, *m2 = NULL;
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m1, NULL), 0);
    assert_int_equal(inferd_storage_refs(s), 2);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m2, NULL), 0);
    assert_int_equal(inferd_storage_refs(s), 3);
    assert_true(m1 != m2);
    m1->deleter(m1);
    assert_int_equal(inferd_storage_refs(s), 2);
    m2->deleter(m2);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_tensor_fini(&t);
}

static void test_tensor_dlpack_export_views(void **state)
{
    (void)state;
    inferd_storage *s = heap(6 * 4);
    float *f = inferd_storage_data(s);
    inferd_tensor t;
    DLManagedTensor *m = NULL;

    /* The transpose: strides must be given (NULL would mean row-major). */
    const int64_t shape[2] = {3, 2}, tr[2] = {1, 3};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, tr, 0, s, NULL), 0);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
    assert_ptr_equal((char *)m->dl_tensor.data + m->dl_tensor.byte_offset, f);
    assert_int_equal(m->dl_tensor.ndim, 2);
    assert_int_equal(m->dl_tensor.shape[0], 3);
    assert_int_equal(m->dl_tensor.shape[1], 2);
    assert_non_null(m->dl_tensor.strides);
    assert_int_equal(m->dl_tensor.strides[0], 1);
    assert_int_equal(m->dl_tensor.strides[1], 3);
    inferd_tensor_fini(&t);
    m->deleter(m);

    /* At an offset, reversed rows. */
    const int64_t m23[2] = {2, 3}, back[2] = {-3, 1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, m23, back, 12, s, NULL), 0);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
    assert_ptr_equal((char *)m->dl_tensor.data + m->dl_tensor.byte_offset, &f[3]);
    assert_non_null(m->dl_tensor.strides);
    assert_int_equal(m->dl_tensor.strides[0], -3);
    assert_int_equal(m->dl_tensor.strides[1], 1);
    inferd_tensor_fini(&t);
    m->deleter(m);

    /* A contiguous view at an offset. */
    const int64_t two[1] = {2};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 1, two, NULL, 16, s, NULL), 0);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
    assert_ptr_equal((char *)m->dl_tensor.data + m->dl_tensor.byte_offset, &f[4]);
    assert_int_equal(m->dl_tensor.ndim, 1);
    assert_int_equal(m->dl_tensor.shape[0], 2);
    if (m->dl_tensor.strides)
        assert_int_equal(m->dl_tensor.strides[0], 1);
    inferd_tensor_fini(&t);
    m->deleter(m);

    /* A scalar. */
    const int64_t unused[1] = {9};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 0, unused, NULL, 8, s, NULL), 0);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
    assert_int_equal(m->dl_tensor.ndim, 0);
    assert_ptr_equal((char *)m->dl_tensor.data + m->dl_tensor.byte_offset, &f[2]);
    inferd_tensor_fini(&t);
    m->deleter(m);

    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
}

static void test_tensor_dlpack_export_types(void **state)
{
    (void)state;
    static const struct {
        inferd_elem e;
        uint8_t code, bits;
    } want[] = {
        {INFERD_ELEM_U8, kDLUInt, 8},    {INFERD_ELEM_U16, kDLUInt, 16},
        {INFERD_ELEM_U32, kDLUInt, 32},  {INFERD_ELEM_U64, kDLUInt, 64},
        {INFERD_ELEM_I8, kDLInt, 8},     {INFERD_ELEM_I16, kDLInt, 16},
        {INFERD_ELEM_I32, kDLInt, 32},   {INFERD_ELEM_I64, kDLInt, 64},
        {INFERD_ELEM_F16, kDLFloat, 16}, {INFERD_ELEM_BF16, kDLBfloat, 16},
        {INFERD_ELEM_F32, kDLFloat, 32}, {INFERD_ELEM_F64, kDLFloat, 64},
    };
    const int64_t shape[2] = {2, 2};
    for (size_t i = 0; i < N_ELEMS(want); i++) {
        inferd_tensor t, u;
        DLManagedTensor *m = NULL;
        assert_int_equal(inferd_tensor_alloc(&t, want[i].e, 2, shape, NULL), 0);
        assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
        if (m->dl_tensor.dtype.code != want[i].code || m->dl_tensor.dtype.bits != want[i].bits)
            print_error("%s: DLPack code %u bits %u\n", inferd_elem_name(want[i].e),
                        m->dl_tensor.dtype.code, m->dl_tensor.dtype.bits);
        assert_int_equal(m->dl_tensor.dtype.code, want[i].code);
        assert_int_equal(m->dl_tensor.dtype.bits, want[i].bits);
        assert_int_equal(m->dl_tensor.dtype.lanes, 1);
        /* And back: the same type, the same memory. */
        assert_int_equal(inferd_tensor_from_dlpack(m, &u, NULL), 0);
        assert_int_equal(u.elem, want[i].e);
        assert_ptr_equal(inferd_tensor_data(&u), inferd_tensor_data(&t));
        assert_int_equal(inferd_storage_refs(t.storage), 2);
        inferd_tensor_fini(&u);
        assert_int_equal(inferd_storage_refs(t.storage), 1);
        inferd_tensor_fini(&t);
    }

    /* BOOL: DLPack 0.6 has no bool; one byte, an integer code. Back it
     * comes as the 8-bit integer of that signedness. */
    inferd_tensor t, u;
    DLManagedTensor *m = NULL;
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_BOOL, 2, shape, NULL), 0);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
    assert_int_equal(m->dl_tensor.dtype.bits, 8);
    assert_int_equal(m->dl_tensor.dtype.lanes, 1);
    uint8_t code = m->dl_tensor.dtype.code;
    assert_true(code == kDLUInt || code == kDLInt);
    assert_int_equal(inferd_tensor_from_dlpack(m, &u, NULL), 0);
    assert_int_equal(u.elem, code == kDLUInt ? INFERD_ELEM_U8 : INFERD_ELEM_I8);
    assert_ptr_equal(inferd_tensor_data(&u), inferd_tensor_data(&t));
    inferd_tensor_fini(&u);
    inferd_tensor_fini(&t);

    /* BYTES has no DLPack type. */
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_BYTES, 2, shape, NULL), 0);
    DLManagedTensor *const sentinel = (DLManagedTensor *)(uintptr_t)0x1234;
    m = sentinel;
    inferd_error e = {0};
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, &e), INFERD_E_UNSUPPORTED);
    assert_int_equal(e.code, INFERD_E_UNSUPPORTED);
    assert_true(e.msg[0] != '\0');
    assert_ptr_equal(m, sentinel);
    assert_int_equal(inferd_storage_refs(t.storage), 1);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), INFERD_E_UNSUPPORTED);
    inferd_tensor_fini(&t);
}

/* ---- DLPack import ---- */

static void test_tensor_dlpack_import(void **state)
{
    (void)state;
    static float buf[6] = {0, 1, 2, 3, 4, 5};
    const int64_t shape[2] = {2, 3}, strides[2] = {3, 1};
    hand h;
    inferd_tensor t;
    inferd_error e = {0};

    hand_init(&h, buf, 2, shape, strides, dl_type(kDLFloat, 32, 1), kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(e.code, 0);
    assert_int_equal(t.elem, INFERD_ELEM_F32);
    assert_shape(&t, 2, shape, strides);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), buf); /* zero copy */
    assert_non_null(t.storage);
    assert_int_equal(inferd_storage_kind_of(t.storage), INFERD_STORAGE_BORROWED);
    assert_int_equal(inferd_storage_refs(t.storage), 1);
    assert_inside_storage(&t);
    assert_int_equal(h.deleted, 0);
    /* The shape was copied: the producer's arrays may change. */
    h.shape[0] = 99;
    h.strides[0] = 99;
    assert_int_equal(t.shape[0], 2);
    assert_int_equal(t.strides[0], 3);

    /* A share keeps it alive past the first fini. */
    inferd_tensor u;
    inferd_tensor_share(&u, &t);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 0);
    assert_float_equal(((float *)inferd_tensor_data(&u))[5], 5, 0);
    inferd_tensor_fini(&u);
    assert_int_equal(h.deleted, 1);
    assert_ptr_equal(h.deleted_arg, &h.m);
    inferd_tensor_fini(&u);
    assert_int_equal(h.deleted, 1);
}

static void test_tensor_dlpack_import_layouts(void **state)
{
    (void)state;
    static int32_t buf[12];
    for (int i = 0; i < 12; i++)
        buf[i] = i;
    hand h;
    inferd_tensor t;
    inferd_error e = {0};
    const DLDataType i32 = dl_type(kDLInt, 32, 1);

    /* Strides NULL: row-major. */
    const int64_t s34[2] = {3, 4}, st34[2] = {4, 1};
    hand_init(&h, buf, 2, s34, NULL, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(t.elem, INFERD_ELEM_I32);
    assert_shape(&t, 2, s34, st34);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), buf);
    assert_inside_storage(&t);
    assert_int_equal(h.deleted, 0);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* A byte offset. */
    const int64_t s22[2] = {2, 2}, st22[2] = {2, 1};
    hand_init(&h, buf, 2, s22, NULL, i32, kDLCPU, 4 * 4);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_shape(&t, 2, s22, st22);
    assert_ptr_equal(inferd_tensor_data(&t), &buf[4]);
    assert_int_equal(((int32_t *)inferd_tensor_data(&t))[3], 7);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* Negative strides: data points at the last row. */
    const int64_t back[2] = {-4, 1};
    hand_init(&h, &buf[8], 2, s34, back, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_shape(&t, 2, s34, back);
    assert_false(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), &buf[8]);
    assert_int_equal(((int32_t *)inferd_tensor_data(&t))[2 * back[0]], 0);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* Negative strides with a byte offset, reversed in both dimensions. */
    const int64_t rev[2] = {-4, -1};
    hand_init(&h, buf, 2, s34, rev, i32, kDLCPU, 11 * 4);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), &buf[11]);
    assert_shape(&t, 2, s34, rev);
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* Transposed (column-major) strides. */
    const int64_t s43[2] = {4, 3}, tr[2] = {1, 4};
    hand_init(&h, buf, 2, s43, tr, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_shape(&t, 2, s43, tr);
    assert_false(inferd_tensor_is_contiguous(&t));
    assert_inside_storage(&t);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* Pinned host memory is host memory. */
    hand_init(&h, buf, 2, s34, NULL, i32, kDLCUDAHost, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), buf);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* A scalar, and an empty tensor. */
    const int64_t none[1] = {0};
    hand_init(&h, &buf[3], 0, none, NULL, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(t.ndim, 0);
    assert_int_equal(inferd_tensor_numel(&t), 1);
    assert_int_equal(*(int32_t *)inferd_tensor_data(&t), 3);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);
    const int64_t s03[2] = {0, 3};
    hand_init(&h, buf, 2, s03, NULL, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 0);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* Eight dimensions. */
    const int64_t s8[8] = {1, 1, 1, 1, 1, 1, 3, 4};
    hand_init(&h, buf, 8, s8, NULL, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(t.ndim, 8);
    assert_int_equal(inferd_tensor_numel(&t), 12);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 1);

    /* No deleter (DLPack allows NULL): nothing to call. */
    hand_init(&h, buf, 2, s34, NULL, i32, kDLCPU, 0);
    h.m.deleter = NULL;
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), buf);
    inferd_tensor_fini(&t);
    assert_int_equal(h.deleted, 0);
}

static void test_tensor_dlpack_import_types(void **state)
{
    (void)state;
    static const struct {
        uint8_t code, bits;
        inferd_elem e;
    } want[] = {
        {kDLUInt, 8, INFERD_ELEM_U8},    {kDLUInt, 16, INFERD_ELEM_U16},
        {kDLUInt, 32, INFERD_ELEM_U32},  {kDLUInt, 64, INFERD_ELEM_U64},
        {kDLInt, 8, INFERD_ELEM_I8},     {kDLInt, 16, INFERD_ELEM_I16},
        {kDLInt, 32, INFERD_ELEM_I32},   {kDLInt, 64, INFERD_ELEM_I64},
        {kDLFloat, 16, INFERD_ELEM_F16}, {kDLBfloat, 16, INFERD_ELEM_BF16},
        {kDLFloat, 32, INFERD_ELEM_F32}, {kDLFloat, 64, INFERD_ELEM_F64},
    };
    static uint64_t buf[4];
    const int64_t n4 = 4;
    for (size_t i = 0; i < N_ELEMS(want); i++) {
        hand h;
        inferd_tensor t;
        hand_init(&h, buf, 1, &n4, NULL, dl_type(want[i].code, want[i].bits, 1), kDLCPU, 0);
        inferd_error e = {0};
        int rc = inferd_tensor_from_dlpack(&h.m, &t, &e);
        if (rc != 0)
            print_error("code %u bits %u: rc %d (%s)\n", want[i].code, want[i].bits, rc, e.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(t.elem, want[i].e);
        assert_int_equal(inferd_tensor_nbytes(&t), 4 * inferd_elem_size(want[i].e));
        assert_ptr_equal(inferd_tensor_data(&t), buf);
        inferd_tensor_fini(&t);
        assert_int_equal(h.deleted, 1);
    }
}

typedef struct bad_import {
    const char *what;
    uint8_t code, bits;
    uint16_t lanes;
    DLDeviceType dev;
    int ndim;
    int64_t shape[10];
    int64_t strides[10];
    bool strided;
    int want; /* 0: INFERD_E_INVALID or INFERD_E_RANGE */
} bad_import;

static void test_tensor_dlpack_import_refused(void **state)
{
    (void)state;
    enum { E_INV = INFERD_E_INVALID }; /* keeps the rows below on one line */
    static int32_t buf[16];
    const int64_t big = (int64_t)1 << 40;
    const bad_import bad[] = {
        {"CUDA", kDLInt, 32, 1, kDLCUDA, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"OpenCL", kDLInt, 32, 1, kDLOpenCL, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"CUDA managed", kDLInt, 32, 1, kDLCUDAManaged, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"2 lanes", kDLInt, 32, 2, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"0 lanes", kDLFloat, 32, 0, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"complex", kDLComplex, 64, 1, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"8-bit float", kDLFloat, 8, 1, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"128-bit int", kDLInt, 128, 1, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"12-bit uint", kDLUInt, 12, 1, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"32-bit bfloat", kDLBfloat, 32, 1, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"unknown code", 42, 32, 1, kDLCPU, 1, {4}, {0}, false, INFERD_E_UNSUPPORTED},
        {"9 dims", kDLInt, 32, 1, kDLCPU, 9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {0}, false, E_INV},
        {"negative ndim", kDLInt, 32, 1, kDLCPU, -1, {4}, {0}, false, E_INV},
        {"negative shape", kDLInt, 32, 1, kDLCPU, 1, {-4}, {0}, false, E_INV},
        {"negative shape, strided", kDLInt, 32, 1, kDLCPU, 2, {2, -2}, {2, 1}, true, E_INV},
        {"shape overflow", kDLInt, 32, 1, kDLCPU, 2, {big, big}, {0}, false, 0},
        {"bytes overflow", kDLFloat, 64, 1, kDLCPU, 1, {(int64_t)1 << 61}, {0}, false, 0},
        {"stride overflow", kDLInt, 32, 1, kDLCPU, 1, {2}, {INT64_MAX}, true, 0},
        {"stride times dim overflow", kDLInt, 8, 1, kDLCPU, 1, {big}, {big}, true, 0},
        {"negative stride overflow", kDLInt, 32, 1, kDLCPU, 1, {2}, {INT64_MIN}, true, 0},
    };
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        hand h;
        inferd_tensor t;
        memset(&t, 0, sizeof(t));
        hand_init(&h, buf, bad[i].ndim, bad[i].shape, bad[i].strided ? bad[i].strides : NULL,
                  dl_type(bad[i].code, bad[i].bits, bad[i].lanes), bad[i].dev, 0);
        inferd_error e = {0};
        int rc = inferd_tensor_from_dlpack(&h.m, &t, &e);
        bool ok =
            bad[i].want ? rc == bad[i].want : (rc == INFERD_E_INVALID || rc == INFERD_E_RANGE);
        if (!ok || e.msg[0] == '\0' || h.deleted != 1)
            print_error("case %zu (%s): rc %d, msg \"%s\", deleted %d\n", i, bad[i].what, rc, e.msg,
                        h.deleted);
        assert_true(ok);
        assert_int_equal(e.code, rc);
        assert_true(e.msg[0] != '\0');
        assert_int_equal(h.deleted, 1); /* taken, and deleted at once */
        assert_ptr_equal(h.deleted_arg, &h.m);
        assert_null(t.storage);
    }

    /* No err: the same, and still deleted. */
    hand h;
    inferd_tensor t;
    const int64_t n4 = 4;
    hand_init(&h, buf, 1, &n4, NULL, dl_type(kDLInt, 32, 1), kDLCUDA, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, NULL), INFERD_E_UNSUPPORTED);
    assert_int_equal(h.deleted, 1);
}

/* ---- DLPack round trips ---- */

static void test_tensor_dlpack_round_trip(void **state)
{
    (void)state;
    static double buf[6] = {0.5, 1.5, 2.5, 3.5, 4.5, 5.5};
    const int64_t shape[2] = {2, 3};

    /* The original goes first. */
    released r = {0};
    inferd_storage *s = borrow(buf, sizeof(buf), &r);
    inferd_tensor a, b;
    assert_int_equal(inferd_tensor_init(&a, INFERD_ELEM_F64, 2, shape, NULL, 8 * 0, s, NULL), 0);
    inferd_storage_unref(s);
    DLManagedTensor *m = NULL;
    assert_int_equal(inferd_tensor_to_dlpack(&a, &m, NULL), 0);
    assert_int_equal(inferd_tensor_from_dlpack(m, &b, NULL), 0);
    assert_int_equal(b.elem, INFERD_ELEM_F64);
    assert_int_equal(b.ndim, 2);
    assert_int_equal(b.shape[0], 2);
    assert_int_equal(b.shape[1], 3);
    assert_int_equal(b.strides[0], 3);
    assert_int_equal(b.strides[1], 1);
    assert_ptr_equal(inferd_tensor_data(&b), buf);
    assert_ptr_equal(inferd_tensor_data(&b), inferd_tensor_data(&a));
    inferd_tensor_fini(&a);
    assert_int_equal(release_calls(&r), 0); /* b holds it through the DLPack tensor */
    assert_float_equal(((double *)inferd_tensor_data(&b))[5], 5.5, 0);
    inferd_tensor_fini(&b);
    assert_int_equal(release_calls(&r), 1);

    /* The import goes first. */
    released r2 = {0};
    s = borrow(buf, sizeof(buf), &r2);
    assert_int_equal(inferd_tensor_init(&a, INFERD_ELEM_F64, 2, shape, NULL, 0, s, NULL), 0);
    inferd_storage_unref(s);
    assert_int_equal(inferd_tensor_to_dlpack(&a, &m, NULL), 0);
    assert_int_equal(inferd_tensor_from_dlpack(m, &b, NULL), 0);
    inferd_tensor_fini(&b);
    assert_int_equal(release_calls(&r2), 0);
    assert_int_equal(inferd_storage_refs(a.storage), 1);
    inferd_tensor_fini(&a);
    assert_int_equal(release_calls(&r2), 1);

    /* A strided view survives the trip. */
    released r3 = {0};
    s = borrow(buf, sizeof(buf), &r3);
    const int64_t tshape[2] = {3, 2}, tr[2] = {-1, 3};
    assert_int_equal(inferd_tensor_init(&a, INFERD_ELEM_F64, 2, tshape, tr, 16, s, NULL), 0);
    inferd_storage_unref(s);
    assert_int_equal(inferd_tensor_to_dlpack(&a, &m, NULL), 0);
    assert_int_equal(inferd_tensor_from_dlpack(m, &b, NULL), 0);
    assert_shape(&b, 2, tshape, tr);
    assert_ptr_equal(inferd_tensor_data(&b), &buf[2]);
    assert_inside_storage(&b);
    inferd_tensor_fini(&a);
    inferd_tensor_fini(&b);
    assert_int_equal(release_calls(&r3), 1);

    /* Imported, then exported again: the producer's deleter waits for
     * the second consumer. */
    hand h;
    hand_init(&h, buf, 2, shape, NULL, dl_type(kDLFloat, 64, 1), kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &a, NULL), 0);
    assert_int_equal(inferd_tensor_to_dlpack(&a, &m, NULL), 0);
    assert_ptr_equal((char *)m->dl_tensor.data + m->dl_tensor.byte_offset, buf);
    inferd_tensor_fini(&a);
    assert_int_equal(h.deleted, 0);
    m->deleter(m);
    assert_int_equal(h.deleted, 1);
}

/* ---- allocation failures ---- */

/* Every allocation of each constructor failing in turn: a clean
 * INFERD_E_NOMEM with nothing written or held, until one run makes all it
 * needs. */
static void test_tensor_alloc_failures_storage(void **state)
{
    (void)state;
    bool done = false;
    for (long k = 1; k <= ALLOC_TRIES && !done; k++) {
        inferd_storage *s = (inferd_storage *)(uintptr_t)0x1234;
        inferd_error e = {0};
        inferd_alloc_fail_after(k);
        int rc = inferd_storage_heap(100, &s, &e);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(inferd_storage_bytes(s), 100);
            inferd_storage_unref(s);
            done = true;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(e.code, INFERD_E_NOMEM);
            assert_ptr_equal(s, (inferd_storage *)(uintptr_t)0x1234);
        }
    }
    assert_true(done);

    static char buf[32];
    done = false;
    for (long k = 1; k <= ALLOC_TRIES && !done; k++) {
        released r = {0};
        inferd_storage *s = (inferd_storage *)(uintptr_t)0x1234;
        inferd_error e = {0};
        inferd_alloc_fail_after(k);
        int rc =
            inferd_storage_wrap(INFERD_STORAGE_BORROWED, buf, sizeof(buf), on_release, &r, &s, &e);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(release_calls(&r), 0);
            inferd_storage_unref(s);
            assert_int_equal(release_calls(&r), 1);
            done = true;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(e.code, INFERD_E_NOMEM);
            assert_ptr_equal(s, (inferd_storage *)(uintptr_t)0x1234);
            assert_int_equal(release_calls(&r), 0); /* not called on failure */
        }
    }
    assert_true(done);
}

static void test_tensor_alloc_failures_tensor(void **state)
{
    (void)state;
    const int64_t shape[2] = {3, 5};
    bool done = false;
    for (long k = 1; k <= ALLOC_TRIES && !done; k++) {
        inferd_tensor t;
        memset(&t, 0, sizeof(t));
        inferd_error e = {0};
        inferd_alloc_fail_after(k);
        int rc = inferd_tensor_alloc(&t, INFERD_ELEM_F32, 2, shape, &e);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(inferd_tensor_numel(&t), 15);
            assert_int_equal(inferd_storage_refs(t.storage), 1);
            inferd_tensor_fini(&t);
            done = true;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(e.code, INFERD_E_NOMEM);
            assert_null(t.storage);
        }
    }
    assert_true(done);
}

static void test_tensor_alloc_failures_dlpack(void **state)
{
    (void)state;
    const int64_t shape[2] = {3, 5};

    /* Export. */
    inferd_tensor t;
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 2, shape, NULL), 0);
    bool done = false;
    for (long k = 1; k <= ALLOC_TRIES && !done; k++) {
        DLManagedTensor *m = (DLManagedTensor *)(uintptr_t)0x1234;
        inferd_error e = {0};
        inferd_alloc_fail_after(k);
        int rc = inferd_tensor_to_dlpack(&t, &m, &e);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(inferd_storage_refs(t.storage), 2);
            m->deleter(m);
            done = true;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(e.code, INFERD_E_NOMEM);
            assert_ptr_equal(m, (DLManagedTensor *)(uintptr_t)0x1234);
        }
        assert_int_equal(inferd_storage_refs(t.storage), 1);
    }
    assert_true(done);
    inferd_tensor_fini(&t);

    /* Import: the deleter runs at once on failure, and once otherwise. */
    static float buf[15];
    done = false;
    for (long k = 1; k <= ALLOC_TRIES && !done; k++) {
        hand h;
        inferd_tensor u;
        memset(&u, 0, sizeof(u));
        hand_init(&h, buf, 2, shape, NULL, dl_type(kDLFloat, 32, 1), kDLCPU, 0);
        inferd_error e = {0};
        inferd_alloc_fail_after(k);
        int rc = inferd_tensor_from_dlpack(&h.m, &u, &e);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(h.deleted, 0);
            assert_ptr_equal(inferd_tensor_data(&u), buf);
            inferd_tensor_fini(&u);
            assert_int_equal(h.deleted, 1);
            done = true;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
            assert_int_equal(e.code, INFERD_E_NOMEM);
            assert_int_equal(h.deleted, 1);
            assert_null(u.storage);
        }
    }
    assert_true(done);

    /* A round trip, each allocation of the import failing in turn: the
     * exported tensor's deleter runs, giving the reference back. */
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 2, shape, NULL), 0);
    done = false;
    for (long k = 1; k <= ALLOC_TRIES && !done; k++) {
        DLManagedTensor *m = NULL;
        assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
        inferd_tensor u;
        memset(&u, 0, sizeof(u));
        inferd_alloc_fail_after(k);
        int rc = inferd_tensor_from_dlpack(m, &u, NULL);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            assert_int_equal(inferd_storage_refs(t.storage), 2);
            inferd_tensor_fini(&u);
            done = true;
        } else {
            assert_int_equal(rc, INFERD_E_NOMEM);
        }
        assert_int_equal(inferd_storage_refs(t.storage), 1);
    }
    assert_true(done);
    inferd_tensor_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_elem_table),
        cmocka_unit_test(test_tensor_elem_parse_refuses),
        cmocka_unit_test(test_tensor_elem_out_of_range),
        cmocka_unit_test(test_tensor_heap_storage),
        cmocka_unit_test(test_tensor_storage_refs),
        cmocka_unit_test(test_tensor_borrowed_storage),
        cmocka_unit_test(test_tensor_wrap_refused),
        cmocka_unit_test(test_tensor_refs_across_threads),
        cmocka_unit_test(test_tensor_alloc_contiguous),
        cmocka_unit_test(test_tensor_scalar_and_empty),
        cmocka_unit_test(test_tensor_init_contiguous_view),
        cmocka_unit_test(test_tensor_init_strided_views),
        cmocka_unit_test(test_tensor_init_bounds),
        cmocka_unit_test(test_tensor_init_refs_share_fini),
        cmocka_unit_test(test_tensor_dlpack_export),
        cmocka_unit_test(test_tensor_dlpack_export_refs),
        cmocka_unit_test(test_tensor_dlpack_export_views),
        cmocka_unit_test(test_tensor_dlpack_export_types),
        cmocka_unit_test(test_tensor_dlpack_import),
        cmocka_unit_test(test_tensor_dlpack_import_layouts),
        cmocka_unit_test(test_tensor_dlpack_import_types),
        cmocka_unit_test(test_tensor_dlpack_import_refused),
        cmocka_unit_test(test_tensor_dlpack_round_trip),
        cmocka_unit_test(test_tensor_alloc_failures_storage),
        cmocka_unit_test(test_tensor_alloc_failures_tensor),
        cmocka_unit_test(test_tensor_alloc_failures_dlpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
