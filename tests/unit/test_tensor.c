/* Tensors: element types (KServe names and sizes); storages (heap zeroed
 * and aligned, borrowed with a release called exactly once at the last
 * reference, from several threads); tensors (contiguous strides, scalars,
 * empty ones, views with explicit and negative strides, every bound
 * refused with a message); DLPack 0.6 export and import without copies
 * (the data pointer is the same, the deleter runs once, the storage lives
 * as long as either side holds it), and what import refuses (a device,
 * lanes, complex, too many dims), each allocation failing in turn. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlpack/dlpack.h>
#include <pthread.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/tensor.h"

static void test_tensor_elem_table(void **state)
{
    (void)state;
    static const struct {
        inferd_elem e;
        const char *name;
        size_t size;
    } want[] = {
        {INFERD_ELEM_BOOL, "BOOL", 1},  {INFERD_ELEM_U8, "UINT8", 1},
        {INFERD_ELEM_U16, "UINT16", 2}, {INFERD_ELEM_U32, "UINT32", 4},
        {INFERD_ELEM_U64, "UINT64", 8}, {INFERD_ELEM_I8, "INT8", 1},
        {INFERD_ELEM_I16, "INT16", 2},  {INFERD_ELEM_I32, "INT32", 4},
        {INFERD_ELEM_I64, "INT64", 8},  {INFERD_ELEM_F16, "FP16", 2},
        {INFERD_ELEM_BF16, "BF16", 2},  {INFERD_ELEM_F32, "FP32", 4},
        {INFERD_ELEM_F64, "FP64", 8},   {INFERD_ELEM_BYTES, "BYTES", 1},
    };
    assert_int_equal(sizeof(want) / sizeof(want[0]), INFERD_ELEM_COUNT);
    for (size_t i = 0; i < INFERD_ELEM_COUNT; i++) {
        assert_string_equal(inferd_elem_name(want[i].e), want[i].name);
        assert_int_equal(inferd_elem_size(want[i].e), want[i].size);
        assert_int_equal(inferd_elem_parse(want[i].name), want[i].e);
    }
    assert_int_equal(inferd_elem_parse("fp32"), -1);
    assert_int_equal(inferd_elem_parse("FP8"), -1);
    assert_int_equal(inferd_elem_parse(""), -1);
    assert_int_equal(inferd_elem_parse(NULL), -1);
    assert_int_equal(inferd_elem_size(INFERD_ELEM_COUNT), 0);
    assert_string_equal(inferd_elem_name((inferd_elem)99), "unknown");
}

static void test_tensor_heap_storage(void **state)
{
    (void)state;
    inferd_storage *s = NULL;
    inferd_error e = {0};
    assert_int_equal(inferd_storage_heap(1000, &s, &e), 0);
    assert_int_equal(inferd_storage_bytes(s), 1000);
    assert_int_equal((uintptr_t)inferd_storage_data(s) % 64, 0);
    const uint8_t *p = inferd_storage_data(s);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(p[i], 0);
    assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_HEAP);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_ptr_equal(inferd_storage_ref(s), s);
    assert_int_equal(inferd_storage_refs(s), 2);
    inferd_storage_unref(s);
    assert_int_equal(inferd_storage_refs(s), 1);
    inferd_storage_unref(s);
    /* 0 bytes is a storage too. */
    assert_int_equal(inferd_storage_heap(0, &s, &e), 0);
    assert_int_equal(inferd_storage_bytes(s), 0);
    inferd_storage_unref(s);
    inferd_storage_unref(NULL);
    assert_null(inferd_storage_ref(NULL));
}

typedef struct released {
    int calls;
    void *ctx, *data;
    size_t bytes;
} released;

static void on_release(void *ctx, void *data, size_t bytes)
{
    released *r = ctx;
    r->calls++;
    r->ctx = ctx;
    r->data = data;
    r->bytes = bytes;
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
    assert_ptr_equal(inferd_storage_data(s), buf);
    assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_BORROWED);
    inferd_storage_ref(s);
    inferd_storage_unref(s);
    assert_int_equal(r.calls, 0);
    inferd_storage_unref(s);
    assert_int_equal(r.calls, 1);
    assert_ptr_equal(r.ctx, &r);
    assert_ptr_equal(r.data, buf);
    assert_int_equal(r.bytes, sizeof(buf));
    /* No release callback: fine. */
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_REGION, buf, 8, NULL, NULL, &s, &e), 0);
    assert_int_equal(inferd_storage_kind_of(s), INFERD_STORAGE_REGION);
    inferd_storage_unref(s);
    /* Refused: no memory given for bytes, and the heap kind. */
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_BORROWED, NULL, 8, on_release, &r, &s, &e),
                     INFERD_E_INVALID);
    assert_true(e.msg[0] != '\0');
    e = (inferd_error){0};
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_HEAP, buf, 8, NULL, NULL, &s, &e),
                     INFERD_E_INVALID);
    assert_true(e.msg[0] != '\0');
    assert_int_equal(r.calls, 1);
}

static void *ref_unref_loop(void *arg)
{
    inferd_storage *s = arg;
    for (int i = 0; i < 100000; i++) {
        inferd_storage_ref(s);
        inferd_storage_unref(s);
    }
    return NULL;
}

static void test_tensor_refs_across_threads(void **state)
{
    (void)state;
    static char buf[8];
    released r = {0};
    inferd_storage *s = NULL;
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_BORROWED, buf, 8, on_release, &r, &s, NULL),
                     0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, ref_unref_loop, s), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(inferd_storage_refs(s), 1);
    assert_int_equal(r.calls, 0);
    inferd_storage_unref(s);
    assert_int_equal(r.calls, 1);
}

static void test_tensor_alloc_contiguous(void **state)
{
    (void)state;
    inferd_tensor t;
    inferd_error e = {0};
    const int64_t shape[3] = {2, 3, 4};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 3, shape, &e), 0);
    assert_int_equal(t.ndim, 3);
    assert_int_equal(t.strides[0], 12);
    assert_int_equal(t.strides[1], 4);
    assert_int_equal(t.strides[2], 1);
    assert_int_equal(inferd_tensor_numel(&t), 24);
    assert_int_equal(inferd_tensor_nbytes(&t), 96);
    assert_true(inferd_tensor_is_contiguous(&t));
    assert_ptr_equal(inferd_tensor_data(&t), inferd_storage_data(t.storage));
    assert_int_equal(inferd_storage_bytes(t.storage), 96);
    assert_int_equal(inferd_storage_refs(t.storage), 1);
    inferd_tensor u;
    inferd_tensor_share(&u, &t);
    assert_int_equal(inferd_storage_refs(t.storage), 2);
    inferd_tensor_fini(&u);
    assert_null(u.storage);
    inferd_tensor_fini(&u); /* twice: fine */
    inferd_tensor_fini(&t);

    /* A scalar has one element; a zero dimension none. */
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_I64, 0, NULL, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 1);
    assert_int_equal(inferd_tensor_nbytes(&t), 8);
    inferd_tensor_fini(&t);
    const int64_t empty[2] = {3, 0};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_U8, 2, empty, &e), 0);
    assert_int_equal(inferd_tensor_numel(&t), 0);
    inferd_tensor_fini(&t);
    inferd_tensor zero;
    memset(&zero, 0, sizeof(zero));
    inferd_tensor_fini(&zero);
    inferd_tensor_fini(NULL);
}

static void test_tensor_views_and_bounds(void **state)
{
    (void)state;
    inferd_storage *s = NULL;
    inferd_error e = {0};
    assert_int_equal(inferd_storage_heap(6 * 4, &s, &e), 0); /* 6 floats */
    inferd_tensor t;
    /* The transpose of a 2x3: valid, not contiguous. */
    const int64_t shape[2] = {3, 2}, tr[2] = {1, 3};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, tr, 0, s, &e), 0);
    assert_false(inferd_tensor_is_contiguous(&t));
    assert_int_equal(inferd_storage_refs(s), 2); /* init took its own reference */
    inferd_tensor_fini(&t);
    assert_int_equal(inferd_storage_refs(s), 1);
    /* A reversed row: negative stride from the last element. */
    const int64_t row[1] = {6}, rev[1] = {-1};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 1, row, rev, 20, s, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), (char *)inferd_storage_data(s) + 20);
    inferd_tensor_fini(&t);

    struct {
        uint32_t ndim;
        int64_t shape[9], strides[9];
        bool strided;
        uint64_t offset;
    } bad[] = {
        {1, {6}, {1}, false, 4},                         /* the last element beyond the end */
        {1, {2}, {1}, false, 28},                        /* the offset beyond the storage */
        {1, {6}, {-1}, true, 16},                        /* reaches before the start */
        {1, {-1}, {1}, false, 0},                        /* a negative dimension */
        {9, {1, 1, 1, 1, 1, 1, 1, 1, 1}, {0}, false, 0}, /* 9 dims */
        {1, {1}, {1}, false, 2},                         /* offset not a multiple of 4 */
        {2, {(int64_t)1 << 40, (int64_t)1 << 40}, {0}, false, 0}, /* overflow */
        {2, {3, 2}, {1, 4}, true, 0},                             /* a stride past the end */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        e = (inferd_error){0};
        int rc = inferd_tensor_init(&t, INFERD_ELEM_F32, bad[i].ndim, bad[i].shape,
                                    bad[i].strided ? bad[i].strides : NULL, bad[i].offset, s, &e);
        if (rc != INFERD_E_INVALID && rc != INFERD_E_RANGE)
            print_error("case %zu: rc %d\n", i, rc);
        assert_true(rc == INFERD_E_INVALID || rc == INFERD_E_RANGE);
        assert_true(e.msg[0] != '\0');
    }
    assert_int_equal(inferd_storage_refs(s), 1); /* no reference kept by a refusal */
    inferd_storage_unref(s);
}

/* ---- DLPack ---- */

static void test_tensor_dlpack_export(void **state)
{
    (void)state;
    static float buf[6] = {1, 2, 3, 4, 5, 6};
    released r = {0};
    inferd_storage *s = NULL;
    assert_int_equal(
        inferd_storage_wrap(INFERD_STORAGE_BORROWED, buf, sizeof(buf), on_release, &r, &s, NULL),
        0);
    inferd_tensor t;
    const int64_t shape[2] = {2, 3};
    assert_int_equal(inferd_tensor_init(&t, INFERD_ELEM_F32, 2, shape, NULL, 0, s, NULL), 0);
    inferd_storage_unref(s); /* the tensor holds it */
    DLManagedTensor *m = NULL;
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), 0);
    const DLTensor *d = &m->dl_tensor;
    assert_ptr_equal((char *)d->data + d->byte_offset, buf);
    assert_int_equal(d->device.device_type, kDLCPU);
    assert_int_equal(d->device.device_id, 0);
    assert_int_equal(d->ndim, 2);
    assert_int_equal(d->dtype.code, kDLFloat);
    assert_int_equal(d->dtype.bits, 32);
    assert_int_equal(d->dtype.lanes, 1);
    assert_int_equal(d->shape[0], 2);
    assert_int_equal(d->shape[1], 3);
    if (d->strides) {
        assert_int_equal(d->strides[0], 3);
        assert_int_equal(d->strides[1], 1);
    }
    assert_int_equal(inferd_storage_refs(t.storage), 2);
    inferd_tensor_fini(&t); /* the consumer still holds the memory */
    assert_int_equal(r.calls, 0);
    assert_float_equal(((float *)d->data)[5], 6, 0);
    m->deleter(m);
    assert_int_equal(r.calls, 1);

    /* Every type but BYTES has a DLPack type of its width. */
    for (int el = 0; el < INFERD_ELEM_COUNT; el++) {
        const int64_t one = 1;
        assert_int_equal(inferd_tensor_alloc(&t, (inferd_elem)el, 1, &one, NULL), 0);
        inferd_error e = {0};
        int rc = inferd_tensor_to_dlpack(&t, &m, &e);
        if (el == INFERD_ELEM_BYTES) {
            assert_int_equal(rc, INFERD_E_UNSUPPORTED);
            assert_true(e.msg[0] != '\0');
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(m->dl_tensor.dtype.bits, 8 * inferd_elem_size((inferd_elem)el));
            m->deleter(m);
        }
        inferd_tensor_fini(&t);
    }
}

static int deleted;
static void count_delete(DLManagedTensor *m)
{
    (void)m;
    deleted++;
}

/* A hand-made DLManagedTensor over static memory. */
typedef struct hand {
    DLManagedTensor m;
    int64_t shape[9], strides[9];
} hand;

static void hand_init(hand *h, void *data, int ndim, const int64_t *shape, const int64_t *strides,
                      DLDataType dt, DLDeviceType dev, uint64_t byte_offset)
{
    memset(h, 0, sizeof(*h));
    for (int i = 0; i < ndim && i < 9; i++) {
        h->shape[i] = shape[i];
        h->strides[i] = strides ? strides[i] : 0;
    }
    h->m.dl_tensor =
        (DLTensor){data, {dev, 0}, ndim, dt, h->shape, strides ? h->strides : NULL, byte_offset};
    h->m.deleter = count_delete;
}

static void test_tensor_dlpack_import(void **state)
{
    (void)state;
    static int32_t buf[12];
    for (int i = 0; i < 12; i++)
        buf[i] = i;
    const DLDataType i32 = {kDLInt, 32, 1};
    hand h;
    inferd_tensor t;
    inferd_error e = {0};
    const int64_t shape[2] = {3, 4};

    deleted = 0;
    hand_init(&h, buf, 2, shape, NULL, i32, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(t.elem, INFERD_ELEM_I32);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[1], 4);
    assert_int_equal(t.strides[0], 4);
    assert_ptr_equal(inferd_tensor_data(&t), buf);
    assert_int_equal(deleted, 0);
    inferd_tensor_fini(&t);
    assert_int_equal(deleted, 1);

    /* A byte offset, and the last row read backwards (negative stride). */
    deleted = 0;
    const int64_t row[1] = {4}, back[1] = {-1};
    hand_init(&h, buf, 1, row, back, i32, kDLCUDAHost, 11 * 4);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_ptr_equal(inferd_tensor_data(&t), &buf[11]);
    assert_int_equal(((int32_t *)inferd_tensor_data(&t))[-3], 8);
    inferd_tensor_fini(&t);
    assert_int_equal(deleted, 1);

    /* Refused, and the deleter runs at once. */
    struct {
        DLDataType dt;
        DLDeviceType dev;
        int ndim;
        int64_t dim0;
        int want;
    } bad[] = {
        {{kDLInt, 32, 1}, kDLCUDA, 1, 4, INFERD_E_UNSUPPORTED},
        {{kDLInt, 32, 2}, kDLCPU, 1, 4, INFERD_E_UNSUPPORTED},
        {{kDLComplex, 64, 1}, kDLCPU, 1, 4, INFERD_E_UNSUPPORTED},
        {{kDLInt, 32, 1}, kDLCPU, 9, 1, INFERD_E_INVALID},
        {{kDLInt, 32, 1}, kDLCPU, 1, -4, INFERD_E_INVALID},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        deleted = 0;
        int64_t shp[9] = {bad[i].dim0, 1, 1, 1, 1, 1, 1, 1, 1};
        hand_init(&h, buf, bad[i].ndim, shp, NULL, bad[i].dt, bad[i].dev, 0);
        e = (inferd_error){0};
        assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), bad[i].want);
        assert_true(e.msg[0] != '\0');
        assert_int_equal(deleted, 1);
    }

    /* An 8-bit unsigned DLPack type imports as UINT8. */
    deleted = 0;
    const DLDataType u8 = {kDLUInt, 8, 1};
    hand_init(&h, buf, 1, row, NULL, u8, kDLCPU, 0);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, &e), 0);
    assert_int_equal(t.elem, INFERD_ELEM_U8);
    inferd_tensor_fini(&t);
    assert_int_equal(deleted, 1);
}

static void test_tensor_dlpack_round_trip(void **state)
{
    (void)state;
    static double buf[4] = {0.5, 1.5, 2.5, 3.5};
    released r = {0};
    inferd_storage *s = NULL;
    assert_int_equal(
        inferd_storage_wrap(INFERD_STORAGE_BORROWED, buf, sizeof(buf), on_release, &r, &s, NULL),
        0);
    inferd_tensor a, b;
    const int64_t n = 4;
    assert_int_equal(inferd_tensor_init(&a, INFERD_ELEM_F64, 1, &n, NULL, 0, s, NULL), 0);
    inferd_storage_unref(s);
    DLManagedTensor *m = NULL;
    assert_int_equal(inferd_tensor_to_dlpack(&a, &m, NULL), 0);
    assert_int_equal(inferd_tensor_from_dlpack(m, &b, NULL), 0);
    assert_ptr_equal(inferd_tensor_data(&b), buf);
    assert_int_equal(b.elem, INFERD_ELEM_F64);
    inferd_tensor_fini(&a);
    assert_int_equal(r.calls, 0); /* b still holds it, through the DLPack tensor */
    inferd_tensor_fini(&b);
    assert_int_equal(r.calls, 1);
}

/* Every allocation failing in turn: a clean INFERD_E_NOMEM, nothing held. */
static void test_tensor_allocation_failures(void **state)
{
    (void)state;
    for (long nth = 1; nth <= 3; nth++) {
        inferd_tensor t;
        const int64_t shape[1] = {10};
        inferd_alloc_fail_after(nth);
        int rc = inferd_tensor_alloc(&t, INFERD_ELEM_F32, 1, shape, NULL);
        inferd_alloc_fail_after(0);
        if (rc == 0) {
            inferd_tensor_fini(&t);
            continue;
        }
        assert_int_equal(rc, INFERD_E_NOMEM);
    }
    inferd_tensor t;
    const int64_t shape[1] = {10};
    assert_int_equal(inferd_tensor_alloc(&t, INFERD_ELEM_F32, 1, shape, NULL), 0);
    DLManagedTensor *m = NULL;
    inferd_alloc_fail_after(1);
    assert_int_equal(inferd_tensor_to_dlpack(&t, &m, NULL), INFERD_E_NOMEM);
    inferd_alloc_fail_after(0);
    assert_int_equal(inferd_storage_refs(t.storage), 1);
    inferd_tensor_fini(&t);

    static char buf[8];
    released r = {0};
    inferd_storage *s = NULL;
    inferd_alloc_fail_after(1);
    assert_int_equal(inferd_storage_wrap(INFERD_STORAGE_BORROWED, buf, 8, on_release, &r, &s, NULL),
                     INFERD_E_NOMEM);
    inferd_alloc_fail_after(0);
    assert_int_equal(r.calls, 0); /* not called on failure */

    /* Import: the storage cannot be made; the deleter still runs, once. */
    static int32_t ibuf[4];
    hand h;
    const int64_t four = 4;
    deleted = 0;
    hand_init(&h, ibuf, 1, &four, NULL, (DLDataType){kDLInt, 32, 1}, kDLCPU, 0);
    inferd_alloc_fail_after(1);
    assert_int_equal(inferd_tensor_from_dlpack(&h.m, &t, NULL), INFERD_E_NOMEM);
    inferd_alloc_fail_after(0);
    assert_int_equal(deleted, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_elem_table),
        cmocka_unit_test(test_tensor_heap_storage),
        cmocka_unit_test(test_tensor_borrowed_storage),
        cmocka_unit_test(test_tensor_refs_across_threads),
        cmocka_unit_test(test_tensor_alloc_contiguous),
        cmocka_unit_test(test_tensor_views_and_bounds),
        cmocka_unit_test(test_tensor_dlpack_export),
        cmocka_unit_test(test_tensor_dlpack_import),
        cmocka_unit_test(test_tensor_dlpack_round_trip),
        cmocka_unit_test(test_tensor_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
