/* inferd._inferd: the C extension under the inferd Python package.
 *
 * TensorBuffer: an inferd_tensor (element type, shape, strides over a
 * refcounted storage) seen from Python without copies: the buffer
 * protocol, __array_interface__, __dlpack__/__dlpack_device__ (DLPack
 * 0.6), and from_numpy/from_dlpack that wrap another object's memory,
 * keeping that object alive until the last user of the memory (a
 * TensorBuffer, a NumPy view, a DLPack consumer) lets go.
 *
 * Read-only memory stays read-only: a read-only input gives a read-only
 * buffer, which refuses writable buffer requests and DLPack export (DLPack
 * 0.6 cannot say "read-only"; NumPy refuses the same way). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlpack/dlpack.h>
#include <stdint.h>
#include <string.h>

#include "ext.h"
#include "inferd/tensor.h"

/* ---- element types and buffer-protocol formats ---- */

static const struct {
    inferd_elem elem;
    const char *fmt; /* struct module format, native */
} k_formats[] = {
    {INFERD_ELEM_BOOL, "?"}, {INFERD_ELEM_U8, "B"},  {INFERD_ELEM_U16, "H"}, {INFERD_ELEM_U32, "I"},
    {INFERD_ELEM_U64, "Q"},  {INFERD_ELEM_I8, "b"},  {INFERD_ELEM_I16, "h"}, {INFERD_ELEM_I32, "i"},
    {INFERD_ELEM_I64, "q"},  {INFERD_ELEM_F16, "e"}, {INFERD_ELEM_F32, "f"}, {INFERD_ELEM_F64, "d"},
};
#define N_FORMATS (sizeof(k_formats) / sizeof(k_formats[0]))

static const char *format_of(inferd_elem e)
{
    for (size_t i = 0; i < N_FORMATS; i++)
        if (k_formats[i].elem == e)
            return k_formats[i].fmt;
    return NULL;
}

/* The element type of buffer-protocol format @p f ("<f", "=i", "l", ...),
 * or -1. Only native byte order. */
static int elem_of_format(const char *f, Py_ssize_t itemsize)
{
    if (!f)
        return INFERD_ELEM_U8;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (!f[0] || f[1])
        return -1;
    const char c = f[0];
    /* C long/size types by their size. */
    if (c == 'l' || c == 'q' || c == 'n')
        return itemsize == 8 ? INFERD_ELEM_I64 : itemsize == 4 ? INFERD_ELEM_I32 : -1;
    if (c == 'L' || c == 'Q' || c == 'N')
        return itemsize == 8 ? INFERD_ELEM_U64 : itemsize == 4 ? INFERD_ELEM_U32 : -1;
    for (size_t i = 0; i < N_FORMATS; i++)
        if (k_formats[i].fmt[0] == c)
            return (int)k_formats[i].elem;
    return -1;
}

/* ---- the type ---- */

typedef struct TensorBuffer {
    PyObject_HEAD inferd_tensor t;
    bool readonly;
    Py_ssize_t shape[INFERD_TENSOR_DIMS_MAX];   /* for the buffer protocol */
    Py_ssize_t strides[INFERD_TENSOR_DIMS_MAX]; /* bytes */
} TensorBuffer;

static PyTypeObject TensorBufferType;

static PyObject *error_of(const inferd_error *e)
{
    PyObject *cls = e->code == INFERD_E_NOMEM         ? PyExc_MemoryError
                    : e->code == INFERD_E_UNSUPPORTED ? PyExc_TypeError
                                                      : PyExc_ValueError;
    PyErr_SetString(cls, e->msg[0] ? e->msg : inferd_strerror(e->code));
    return NULL;
}

/* A new TensorBuffer taking @p t (moved). */
static PyObject *wrap(inferd_tensor *t, bool readonly)
{
    TensorBuffer *b = PyObject_New(TensorBuffer, &TensorBufferType);
    if (!b) {
        inferd_tensor_fini(t);
        return NULL;
    }
    b->t = *t;
    memset(t, 0, sizeof(*t));
    b->readonly = readonly;
    const int64_t esz = (int64_t)inferd_elem_size(b->t.elem);
    for (uint32_t d = 0; d < b->t.ndim; d++) {
        b->shape[d] = (Py_ssize_t)b->t.shape[d];
        b->strides[d] = (Py_ssize_t)(b->t.strides[d] * esz);
    }
    return (PyObject *)b;
}

static void tb_dealloc(TensorBuffer *b)
{
    inferd_tensor_fini(&b->t); /* may release a Python owner: the GIL is held */
    Py_TYPE(b)->tp_free((PyObject *)b);
}

/* ---- from_numpy: any object with the buffer protocol ---- */

typedef struct held_view {
    Py_buffer view;
} held_view;

/* The storage's release: let go of the exporter's buffer (any thread). */
static void release_view(void *ctx, void *data, size_t bytes)
{
    (void)data;
    (void)bytes;
    held_view *h = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    PyBuffer_Release(&h->view);
    PyMem_RawFree(h);
    PyGILState_Release(g);
}

static PyObject *tb_from_buffer(PyObject *cls, PyObject *obj)
{
    (void)cls;
    held_view *h = PyMem_RawCalloc(1, sizeof(*h));
    if (!h)
        return PyErr_NoMemory();
    if (PyObject_GetBuffer(obj, &h->view, PyBUF_RECORDS_RO) < 0) {
        PyMem_RawFree(h);
        return NULL;
    }
    Py_buffer *v = &h->view;
    const int e = elem_of_format(v->format, v->itemsize);
    if (e < 0 || (Py_ssize_t)inferd_elem_size((inferd_elem)e) != v->itemsize) {
        PyErr_Format(PyExc_TypeError,
                     "TensorBuffer: element format '%s' (%zd bytes) is not one inferd has "
                     "(bool, int8..int64, uint8..uint64, float16/32/64 in native order)",
                     v->format ? v->format : "B", v->itemsize);
        PyBuffer_Release(v);
        PyMem_RawFree(h);
        return NULL;
    }
    if (v->ndim > INFERD_TENSOR_DIMS_MAX) {
        PyErr_Format(PyExc_ValueError, "TensorBuffer: %d dimensions, at most %d", v->ndim,
                     INFERD_TENSOR_DIMS_MAX);
        PyBuffer_Release(v);
        PyMem_RawFree(h);
        return NULL;
    }
    /* The storage spans every addressable byte: from the lowest to the
     * highest element (negative strides reach below buf). */
    int64_t lo = 0, hi = v->itemsize, shape[INFERD_TENSOR_DIMS_MAX],
            strides[INFERD_TENSOR_DIMS_MAX];
    bool empty = false;
    for (int d = 0; d < v->ndim; d++) {
        shape[d] = v->shape[d];
        const Py_ssize_t st = v->strides ? v->strides[d] : 0;
        if (st % v->itemsize != 0) {
            PyErr_SetString(PyExc_ValueError,
                            "TensorBuffer: a stride that is not a multiple of the element size");
            PyBuffer_Release(v);
            PyMem_RawFree(h);
            return NULL;
        }
        strides[d] = st / v->itemsize;
        empty |= shape[d] == 0;
        if (shape[d] > 0) {
            if (st < 0)
                lo += st * (shape[d] - 1);
            else
                hi += st * (shape[d] - 1);
        }
    }
    if (empty)
        lo = hi = 0;
    inferd_error err = {0};
    inferd_storage *s = NULL;
    if (inferd_storage_wrap(INFERD_STORAGE_BORROWED, (char *)v->buf + lo, (size_t)(hi - lo),
                            release_view, h, &s, &err) < 0) {
        PyBuffer_Release(v);
        PyMem_RawFree(h);
        return error_of(&err);
    }
    const bool readonly = v->readonly != 0;
    inferd_tensor t;
    int rc = inferd_tensor_init(&t, (inferd_elem)e, (uint32_t)v->ndim, shape,
                                v->strides ? strides : NULL, (uint64_t)(-lo), s, &err);
    inferd_storage_unref(s); /* the tensor's reference keeps it (or it goes now) */
    if (rc < 0)
        return error_of(&err);
    return wrap(&t, readonly);
}

/* ---- from_dlpack ---- */

static PyObject *tb_from_dlpack(PyObject *cls, PyObject *obj)
{
    (void)cls;
    PyObject *cap = PyObject_CallMethod(obj, "__dlpack__", NULL);
    if (!cap)
        return NULL;
    DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
    if (!m) {
        Py_DECREF(cap);
        return NULL;
    }
    /* Ours now: the capsule must not delete it. */
    if (PyCapsule_SetName(cap, "used_dltensor") < 0) {
        Py_DECREF(cap);
        return NULL;
    }
    Py_DECREF(cap);
    inferd_tensor t;
    inferd_error err = {0};
    if (inferd_tensor_from_dlpack(m, &t, &err) < 0) /* m's deleter already ran */
        return error_of(&err);
    return wrap(&t, false);
}

/* ---- exports ---- */

static int tb_getbuffer(TensorBuffer *b, Py_buffer *view, int flags)
{
    const char *fmt = format_of(b->t.elem);
    if (!fmt) {
        PyErr_Format(PyExc_BufferError,
                     "TensorBuffer: %s has no buffer-protocol format: use __dlpack__",
                     inferd_elem_name(b->t.elem));
        return -1;
    }
    if ((flags & PyBUF_WRITABLE) && b->readonly) {
        PyErr_SetString(PyExc_BufferError, "TensorBuffer: the buffer is read-only");
        return -1;
    }
    if (!(flags & PyBUF_STRIDES) && !inferd_tensor_is_contiguous(&b->t)) {
        PyErr_SetString(PyExc_BufferError,
                        "TensorBuffer: not contiguous: ask for a strided buffer");
        return -1;
    }
    view->obj = (PyObject *)b;
    Py_INCREF(b);
    view->buf = inferd_tensor_data(&b->t);
    view->itemsize = (Py_ssize_t)inferd_elem_size(b->t.elem);
    view->len = (Py_ssize_t)inferd_tensor_nbytes(&b->t);
    view->readonly = b->readonly;
    view->ndim = (int)b->t.ndim;
    view->format = (flags & PyBUF_FORMAT) ? (char *)fmt : NULL;
    view->shape = (flags & PyBUF_ND) ? b->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) ? b->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static PyBufferProcs tb_as_buffer = {(getbufferproc)tb_getbuffer, NULL};

/* NumPy's typestr of @p e (native little-endian hosts). */
static const char *typestr_of(inferd_elem e)
{
    switch (e) {
    case INFERD_ELEM_BOOL: return "|b1";
    case INFERD_ELEM_U8: return "|u1";
    case INFERD_ELEM_U16: return "<u2";
    case INFERD_ELEM_U32: return "<u4";
    case INFERD_ELEM_U64: return "<u8";
    case INFERD_ELEM_I8: return "|i1";
    case INFERD_ELEM_I16: return "<i2";
    case INFERD_ELEM_I32: return "<i4";
    case INFERD_ELEM_I64: return "<i8";
    case INFERD_ELEM_F16: return "<f2";
    case INFERD_ELEM_F32: return "<f4";
    case INFERD_ELEM_F64: return "<f8";
    default: return NULL;
    }
}

static PyObject *tb_array_interface(TensorBuffer *b, void *closure)
{
    (void)closure;
    const char *ts = typestr_of(b->t.elem);
    if (!ts) {
        PyErr_Format(PyExc_AttributeError, "TensorBuffer: NumPy has no %s: use __dlpack__",
                     inferd_elem_name(b->t.elem));
        return NULL;
    }
    PyObject *shape = PyTuple_New(b->t.ndim), *strides = PyTuple_New(b->t.ndim);
    if (!shape || !strides) {
        Py_XDECREF(shape);
        Py_XDECREF(strides);
        return NULL;
    }
    for (uint32_t d = 0; d < b->t.ndim; d++) {
        PyTuple_SET_ITEM(shape, d, PyLong_FromSsize_t(b->shape[d]));
        PyTuple_SET_ITEM(strides, d, PyLong_FromSsize_t(b->strides[d]));
    }
    return Py_BuildValue("{s:N,s:s,s:(KO),s:N,s:i}", "shape", shape, "typestr", ts, "data",
                         (unsigned long long)(uintptr_t)inferd_tensor_data(&b->t),
                         b->readonly ? Py_True : Py_False, "strides", strides, "version", 3);
}

/* A capsule not consumed deletes its tensor. */
static void dlpack_capsule_free(PyObject *cap)
{
    if (PyCapsule_IsValid(cap, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(cap, "dltensor");
        if (m && m->deleter)
            m->deleter(m);
    }
}

static PyObject *tb_dlpack(TensorBuffer *b, PyObject *args, PyObject *kw)
{
    static char *names[] = {"stream", NULL};
    PyObject *stream = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", names, &stream))
        return NULL;
    if (stream != Py_None) {
        PyErr_SetString(PyExc_BufferError, "TensorBuffer: CPU memory takes no stream");
        return NULL;
    }
    if (b->readonly) {
        PyErr_SetString(PyExc_BufferError,
                        "TensorBuffer: cannot export a read-only buffer through DLPack (it "
                        "cannot say read-only)");
        return NULL;
    }
    DLManagedTensor *m = NULL;
    inferd_error err = {0};
    if (inferd_tensor_to_dlpack(&b->t, &m, &err) < 0) {
        PyErr_SetString(PyExc_BufferError, err.msg);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(m, "dltensor", dlpack_capsule_free);
    if (!cap)
        m->deleter(m);
    return cap;
}

static PyObject *tb_dlpack_device(TensorBuffer *b, PyObject *unused)
{
    (void)b;
    (void)unused;
    return Py_BuildValue("(ii)", (int)kDLCPU, 0);
}

static PyObject *tb_dtype(TensorBuffer *b, void *c)
{
    (void)c;
    return PyUnicode_FromString(inferd_elem_name(b->t.elem));
}

static PyObject *tb_shape(TensorBuffer *b, void *c)
{
    (void)c;
    PyObject *t = PyTuple_New(b->t.ndim);
    for (uint32_t d = 0; t && d < b->t.ndim; d++)
        PyTuple_SET_ITEM(t, d, PyLong_FromSsize_t(b->shape[d]));
    return t;
}

static PyObject *tb_strides(TensorBuffer *b, void *c)
{
    (void)c;
    PyObject *t = PyTuple_New(b->t.ndim);
    for (uint32_t d = 0; t && d < b->t.ndim; d++)
        PyTuple_SET_ITEM(t, d, PyLong_FromSsize_t(b->strides[d]));
    return t;
}

static PyObject *tb_nbytes(TensorBuffer *b, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(inferd_tensor_nbytes(&b->t));
}

static PyObject *tb_readonly(TensorBuffer *b, void *c)
{
    (void)c;
    return PyBool_FromLong(b->readonly);
}

static PyObject *tb_data_ptr(TensorBuffer *b, void *c)
{
    (void)c;
    return PyLong_FromVoidPtr(inferd_tensor_data(&b->t));
}

static PyObject *tb_contiguous(TensorBuffer *b, void *c)
{
    (void)c;
    return PyBool_FromLong(inferd_tensor_is_contiguous(&b->t));
}

static PyObject *tb_refs(TensorBuffer *b, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLong(inferd_storage_refs(b->t.storage));
}

static PyObject *tb_repr(TensorBuffer *b)
{
    PyObject *shape = tb_shape(b, NULL);
    PyObject *r =
        PyUnicode_FromFormat("TensorBuffer(dtype=%s, shape=%R%s)", inferd_elem_name(b->t.elem),
                             shape, b->readonly ? ", readonly" : "");
    Py_XDECREF(shape);
    return r;
}

static PyObject *tb_to_numpy(TensorBuffer *b, PyObject *unused)
{
    (void)unused;
    if (!typestr_of(b->t.elem))
        return PyErr_Format(PyExc_TypeError,
                            "TensorBuffer: NumPy has no %s: share it through __dlpack__ "
                            "(PyTorch)",
                            inferd_elem_name(b->t.elem));
    PyObject *np = PyImport_ImportModule("numpy");
    if (!np)
        return NULL;
    PyObject *a = PyObject_CallMethod(np, "asarray", "O", (PyObject *)b);
    Py_DECREF(np);
    return a;
}

/* The same memory seen as BOOL or as UINT8 (DLPack 0.6 and PyTorch 1.13
 * have no bool in DLPack). */
static PyObject *tb_as_bool(TensorBuffer *b, PyObject *arg)
{
    const int want = PyObject_IsTrue(arg);
    if (want < 0)
        return NULL;
    if (b->t.elem != INFERD_ELEM_BOOL && b->t.elem != INFERD_ELEM_U8)
        return PyErr_Format(PyExc_TypeError, "TensorBuffer: %s is not BOOL or UINT8",
                            inferd_elem_name(b->t.elem));
    inferd_tensor t;
    inferd_tensor_share(&t, &b->t);
    t.elem = want ? INFERD_ELEM_BOOL : INFERD_ELEM_U8;
    return wrap(&t, b->readonly);
}

static PyMethodDef tb_methods[] = {
    {"_as_bool", (PyCFunction)tb_as_bool, METH_O,
     "The same memory as BOOL (True) or UINT8 (False)."},
    {"to_numpy", (PyCFunction)tb_to_numpy, METH_NOARGS,
     "A NumPy view of this memory (no copy; it keeps the buffer alive)."},
    {"from_numpy", (PyCFunction)tb_from_buffer, METH_O | METH_CLASS,
     "Wrap an object with the buffer protocol (a NumPy array) without copying."},
    {"from_buffer", (PyCFunction)tb_from_buffer, METH_O | METH_CLASS,
     "Wrap an object with the buffer protocol without copying."},
    {"from_dlpack", (PyCFunction)tb_from_dlpack, METH_O | METH_CLASS,
     "Wrap an object with __dlpack__ (NumPy, PyTorch) without copying."},
    {"__dlpack__", (PyCFunction)(void (*)(void))tb_dlpack, METH_VARARGS | METH_KEYWORDS,
     "A DLPack 0.6 capsule of this memory."},
    {"__dlpack_device__", (PyCFunction)tb_dlpack_device, METH_NOARGS, "(kDLCPU, 0)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tb_getset[] = {
    {"__array_interface__", (getter)tb_array_interface, NULL, "NumPy's array interface", NULL},
    {"dtype", (getter)tb_dtype, NULL, "element type, as KServe names it (FP32, INT64, ...)", NULL},
    {"shape", (getter)tb_shape, NULL, "elements per dimension", NULL},
    {"strides", (getter)tb_strides, NULL, "bytes per step in each dimension", NULL},
    {"nbytes", (getter)tb_nbytes, NULL, "bytes of the elements", NULL},
    {"readonly", (getter)tb_readonly, NULL, "whether writes are refused", NULL},
    {"data_ptr", (getter)tb_data_ptr, NULL, "address of the first element", NULL},
    {"contiguous", (getter)tb_contiguous, NULL, "row-major contiguous", NULL},
    {"_storage_refs", (getter)tb_refs, NULL, "references to the memory (diagnostics)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TensorBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd.TensorBuffer",
    .tp_basicsize = sizeof(TensorBuffer),
    .tp_dealloc = (destructor)tb_dealloc,
    .tp_repr = (reprfunc)tb_repr,
    .tp_as_buffer = &tb_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Tensor memory shared without copies (buffer protocol, __array_interface__, "
              "DLPack).",
    .tp_methods = tb_methods,
    .tp_getset = tb_getset,
};

PyObject *inferd_py_buffer_wrap(inferd_tensor *t) { return wrap(t, false); }

PyObject *inferd_py_buffer_copy(inferd_elem elem, uint32_t ndim, const int64_t *shape,
                                const void *src)
{
    inferd_tensor t;
    inferd_error err = {0};
    if (inferd_tensor_alloc(&t, elem, ndim, shape, &err) < 0)
        return error_of(&err);
    const uint64_t n = inferd_tensor_nbytes(&t);
    if (n)
        memcpy(inferd_tensor_data(&t), src, (size_t)n);
    return wrap(&t, false);
}

/* ---- errors ---- */

static PyObject *InferdError;

/* InferdError's subclasses, one per kind of failure, by INFERD_E_* code. */
enum {
    K_INVALID,
    K_AUTH,
    K_NOT_FOUND,
    K_CONFLICT,
    K_OVERLOADED,
    K_UNAVAILABLE,
    K_DEADLINE,
    K_CANCELLED,
    K_TRANSPORT,
    K_INTERNAL,
    K_N
};

static const struct {
    const char *name, *doc;
} kinds[K_N] = {
    [K_INVALID] = {"InvalidRequestError", "The request is at fault (HTTP 400, 405, 413, 422)."},
    [K_AUTH] = {"AuthenticationError", "A missing or wrong API key (401)."},
    [K_NOT_FOUND] = {"NotFoundError", "No such model, region or route (404)."},
    [K_CONFLICT] = {"ConflictError", "It exists already, or is busy (409)."},
    [K_OVERLOADED] = {"OverloadedError",
                      "The queue is full (503 overloaded) or a quota is spent (507): retry "
                      "later or elsewhere."},
    [K_UNAVAILABLE] = {"UnavailableError", "Not serving: loading, draining or stopped (503)."},
    [K_DEADLINE] = {"DeadlineExceededError", "A deadline passed (504)."},
    [K_CANCELLED] = {"RequestCancelledError", "The request was cancelled (499)."},
    [K_TRANSPORT] = {"TransportError",
                     "No answer from the worker: connection refused, broken or timed out "
                     "(502)."},
    [K_INTERNAL] = {"InternalError", "The worker failed (500, 501)."},
};

static PyObject *kind_class[K_N];

static int kind_of(int code)
{
    switch (code) {
    case INFERD_E_INVALID:
    case INFERD_E_RANGE:
    case INFERD_E_INVALID_TYPE:
    case INFERD_E_MISSING:
    case INFERD_E_CONTEXT_LENGTH:
    case INFERD_E_FIELD_UNSUPPORTED:
    case INFERD_E_BAD_JSON:
    case INFERD_E_TOO_LARGE:
    case INFERD_E_FORMAT:
    case INFERD_E_METHOD: return K_INVALID;
    case INFERD_E_UNAUTHORIZED: return K_AUTH;
    case INFERD_E_NOT_FOUND:
    case INFERD_E_MODEL_NOT_FOUND:
    case INFERD_E_NO_ROUTE: return K_NOT_FOUND;
    case INFERD_E_EXISTS:
    case INFERD_E_BUSY: return K_CONFLICT;
    case INFERD_E_OVERLOADED:
    case INFERD_E_QUOTA: return K_OVERLOADED;
    case INFERD_E_UNAVAILABLE: return K_UNAVAILABLE;
    case INFERD_E_TIMEOUT: return K_DEADLINE;
    case INFERD_E_CANCELLED: return K_CANCELLED;
    case INFERD_E_TRANSPORT: return K_TRANSPORT;
    default: return K_INTERNAL;
    }
}

static void set_attr(PyObject *e, const char *name, PyObject *v)
{
    if (v) {
        PyObject_SetAttrString(e, name, v);
        Py_DECREF(v);
    }
}

PyObject *inferd_py_raise(const inferd_error *err)
{
    if (err->code == INFERD_E_NOMEM)
        return PyErr_NoMemory();
    const char *msg = err->msg[0] ? err->msg : inferd_strerror(err->code);
    PyObject *cls = kind_class[kind_of(err->code)];
    PyObject *e = PyObject_CallFunction(cls, "s", msg);
    if (!e)
        return NULL;
    set_attr(e, "code", PyUnicode_FromString(inferd_error_http_code(err->code)));
    set_attr(e, "errno", PyLong_FromLong(err->code));
    set_attr(e, "status", PyLong_FromLong(inferd_error_http_status(err->code)));
    set_attr(e, "param", err->param[0] ? PyUnicode_FromString(err->param) : Py_NewRef(Py_None));
    set_attr(e, "message", PyUnicode_FromString(msg));
    PyErr_SetObject(cls, e);
    Py_DECREF(e);
    return NULL;
}

static int errors_init(PyObject *m)
{
    InferdError = PyErr_NewExceptionWithDoc(
        "inferd.InferdError",
        "An error of inferd: .code (the wire code, e.g. 'invalid_value'), .status (its HTTP "
        "status), .errno (INFERD_E_*), .param (the field at fault or None), .message. "
        "Raised as one of its subclasses, by kind.",
        NULL, NULL);
    if (!InferdError || PyModule_AddObject(m, "InferdError", Py_NewRef(InferdError)) < 0)
        return -1;
    for (int k = 0; k < K_N; k++) {
        char full[64];
        snprintf(full, sizeof(full), "inferd.%s", kinds[k].name);
        kind_class[k] = PyErr_NewExceptionWithDoc(full, kinds[k].doc, InferdError, NULL);
        if (!kind_class[k] || PyModule_AddObject(m, kinds[k].name, Py_NewRef(kind_class[k])) < 0)
            return -1;
    }
    return 0;
}

/* ---- the module ---- */

static PyMethodDef module_methods[] = {
    {"get_or_load", (PyCFunction)(void (*)(void))inferd_py_get_or_load,
     METH_VARARGS | METH_KEYWORDS,
     "get_or_load(path, *, id=None, n_ctx=0, slots=4, threads=0, keep_alive_ms=300000, "
     "queue=64) -> Model"},
    {"registry_info", (PyCFunction)inferd_py_registry_info, METH_NOARGS,
     "The models of the process registry."},
    {"configure", (PyCFunction)(void (*)(void))inferd_py_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(*, budget_bytes=0): before the first model."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "inferd._inferd",
    "inferd's C extension.",
    -1,
    module_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__inferd(void)
{
    if (PyType_Ready(&TensorBufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&TensorBufferType);
    if (PyModule_AddObject(m, "TensorBuffer", (PyObject *)&TensorBufferType) < 0) {
        Py_DECREF(&TensorBufferType);
        Py_DECREF(m);
        return NULL;
    }
    if (errors_init(m) < 0 || inferd_py_model_init(m) < 0 || inferd_py_client_init(m) < 0 ||
        inferd_py_channel_init(m) < 0 || inferd_py_pipeline_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
