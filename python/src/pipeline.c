/* The pipeline manager from Python (include/inferd/pipeline.h):
 * _Pipeline starts a manifest's nodes and talks to its inputs and outputs;
 * received samples are _PipelineSample objects whose buffer (read-only)
 * is the channel's memory, released when the object goes. The progress
 * callback runs on the manager's thread and takes the GIL. The Python API
 * is inferd.Pipeline (inferd/pipeline.py). */
#include <stdatomic.h>
#include <string.h>

#include "ext.h"
#include "inferd/pipeline.h"

typedef struct Pipe {
    PyObject_HEAD inferd_pipeline *p;
    PyObject *on_progress; /* or NULL */
    atomic_int samples;    /* _PipelineSample objects alive */
} Pipe;

typedef struct PSample {
    PyObject_HEAD Pipe *owner;
    inferd_pipeline_sample s;
    Py_ssize_t shape[INFERD_SAMPLE_DIMS];
    Py_ssize_t strides[INFERD_SAMPLE_DIMS];
    int exports;
} PSample;

static PyTypeObject PipeType, PSampleType;

static int pipe_live(Pipe *p)
{
    if (p->p)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the pipeline is closed");
    return -1;
}

static PyObject *node_dict(const inferd_node_info *n)
{
    return Py_BuildValue("{s:s,s:s,s:s,s:d,s:s,s:i}", "name", n->name, "kind", n->kind, "state",
                         inferd_node_state_name(n->state), "progress", n->progress, "message",
                         n->message, "pid", (int)n->pid);
}

static PyObject *node_list(const inferd_node_info *v, size_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *d = node_dict(&v[i]);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

/* The manager's thread: hand the nodes to the Python callback. */
static void on_progress(void *ctx, const inferd_node_info *nodes, size_t n)
{
    Pipe *p = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *list = node_list(nodes, n);
    PyObject *r = list ? PyObject_CallOneArg(p->on_progress, list) : NULL;
    if (!r)
        PyErr_WriteUnraisable(p->on_progress);
    Py_XDECREF(r);
    Py_XDECREF(list);
    PyGILState_Release(g);
}

static int pipe_init(Pipe *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"manifest", "base_dir", "python", "inferd_exe", "on_progress", NULL};
    const char *json, *base = NULL, *python = NULL, *exe = NULL;
    PyObject *cb = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|zzzO", names, &json, &base, &python, &exe, &cb))
        return -1;
    if (self->p) {
        PyErr_SetString(PyExc_RuntimeError, "the pipeline is started already");
        return -1;
    }
    if (cb != Py_None && !PyCallable_Check(cb)) {
        PyErr_SetString(PyExc_TypeError, "on_progress: expected a callable");
        return -1;
    }
    if (cb != Py_None)
        self->on_progress = Py_NewRef(cb);
    inferd_pipeline_opts o = {.python = python, .inferd_exe = exe};
    if (self->on_progress) {
        o.on_progress = on_progress;
        o.ctx = self;
    }
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_pipeline_start(json, base, &o, &self->p, &err);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        inferd_py_raise(&err);
        return -1;
    }
    return 0;
}

static void pipe_destroy(Pipe *self)
{
    inferd_pipeline *p = self->p;
    self->p = NULL;
    if (p) {
        Py_BEGIN_ALLOW_THREADS inferd_pipeline_destroy(p); /* the callback takes the GIL */
        Py_END_ALLOW_THREADS
    }
}

static void pipe_dealloc(Pipe *self)
{
    pipe_destroy(self);
    Py_CLEAR(self->on_progress);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *pipe_wait_ready(Pipe *self, PyObject *arg)
{
    const long long ms = PyLong_AsLongLong(arg);
    if ((ms == -1 && PyErr_Occurred()) || pipe_live(self) < 0)
        return NULL;
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_pipeline_wait_ready(self->p, ms, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *pipe_nodes(Pipe *self, PyObject *unused)
{
    (void)unused;
    if (pipe_live(self) < 0)
        return NULL;
    inferd_node_info v[256];
    const size_t n = inferd_pipeline_nodes(self->p, v, 256);
    return node_list(v, n < 256 ? n : 256);
}

static PyObject *pipe_failure(Pipe *self, PyObject *unused)
{
    (void)unused;
    if (pipe_live(self) < 0)
        return NULL;
    inferd_error err = {0};
    if (inferd_pipeline_failure(self->p, &err) == 0)
        Py_RETURN_NONE;
    inferd_py_raise(&err); /* an exception object to return, not to raise */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* send(channel, session, flags, elem, shape, data, timeout_ms): data a
 * contiguous buffer (or None for END). */
static PyObject *pipe_send(Pipe *self, PyObject *args)
{
    const char *channel;
    unsigned long long session;
    unsigned flags, elem;
    PyObject *shape, *data;
    long long timeout;
    if (!PyArg_ParseTuple(args, "sKIIOOL", &channel, &session, &flags, &elem, &shape, &data,
                          &timeout) ||
        pipe_live(self) < 0)
        return NULL;
    inferd_sample_header h = {.flags = flags, .elem = elem};
    PyObject *fast = PySequence_Fast(shape, "shape: expected a sequence");
    if (!fast)
        return NULL;
    if (PySequence_Fast_GET_SIZE(fast) > INFERD_SAMPLE_DIMS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "shape: at most %d dimensions", INFERD_SAMPLE_DIMS);
        return NULL;
    }
    h.ndim = (uint32_t)PySequence_Fast_GET_SIZE(fast);
    for (uint32_t d = 0; d < h.ndim; d++)
        h.shape[d] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, d));
    Py_DECREF(fast);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view = {0};
    if (data != Py_None && PyObject_GetBuffer(data, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_pipeline_send(self->p, channel, session, &h, view.buf,
                                                     (uint64_t)view.len, timeout, &err);
    Py_END_ALLOW_THREADS if (data != Py_None) PyBuffer_Release(&view);
    if (rc < 0)
        return inferd_py_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *pipe_end(Pipe *self, PyObject *args)
{
    unsigned long long session;
    long long timeout;
    if (!PyArg_ParseTuple(args, "KL", &session, &timeout) || pipe_live(self) < 0)
        return NULL;
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_pipeline_end(self->p, session, timeout, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Py_RETURN_NONE;
}

/* receive(channel, timeout_ms) -> _PipelineSample */
static PyObject *pipe_receive(Pipe *self, PyObject *args)
{
    const char *channel;
    long long timeout;
    if (!PyArg_ParseTuple(args, "sL", &channel, &timeout) || pipe_live(self) < 0)
        return NULL;
    PSample *s = PyObject_New(PSample, &PSampleType);
    if (!s)
        return NULL;
    s->owner = NULL;
    s->exports = 0;
    memset(&s->s, 0, sizeof(s->s));
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_pipeline_receive(self->p, channel, timeout, &s->s, &err);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        Py_DECREF(s);
        return inferd_py_raise(&err);
    }
    s->owner = (Pipe *)Py_NewRef(self);
    atomic_fetch_add(&self->samples, 1);
    return (PyObject *)s;
}

static PyObject *pipe_stop(Pipe *self, PyObject *arg)
{
    const long long ms = PyLong_AsLongLong(arg);
    if ((ms == -1 && PyErr_Occurred()) || pipe_live(self) < 0)
        return NULL;
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_pipeline_stop(self->p, ms, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *pipe_close(Pipe *self, PyObject *unused)
{
    (void)unused;
    if (atomic_load(&self->samples) > 0) {
        PyErr_SetString(PyExc_BufferError,
                        "received samples are still alive: release them before close()");
        return NULL;
    }
    pipe_destroy(self);
    Py_RETURN_NONE;
}

static PyMethodDef pipe_methods[] = {
    {"wait_ready", (PyCFunction)pipe_wait_ready, METH_O, "wait_ready(timeout_ms)"},
    {"nodes", (PyCFunction)pipe_nodes, METH_NOARGS, "the nodes now (list of dicts)"},
    {"failure", (PyCFunction)pipe_failure, METH_NOARGS, "the failure (an InferdError) or None"},
    {"send", (PyCFunction)pipe_send, METH_VARARGS,
     "send(channel, session, flags, elem, shape, data, timeout_ms)"},
    {"end", (PyCFunction)pipe_end, METH_VARARGS, "end(session, timeout_ms)"},
    {"receive", (PyCFunction)pipe_receive, METH_VARARGS, "receive(channel, timeout_ms)"},
    {"stop", (PyCFunction)pipe_stop, METH_O, "stop(grace_ms)"},
    {"close", (PyCFunction)pipe_close, METH_NOARGS, "stop and free"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PipeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd._Pipeline",
    .tp_basicsize = sizeof(Pipe),
    .tp_dealloc = (destructor)pipe_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A running pipeline (see inferd.Pipeline).",
    .tp_methods = pipe_methods,
    .tp_init = (initproc)pipe_init,
    .tp_new = PyType_GenericNew,
};

/* ---- received samples ---- */

static void psample_dealloc(PSample *s)
{
    if (s->owner) {
        if (s->owner->p)
            inferd_pipeline_release(s->owner->p, &s->s);
        atomic_fetch_sub(&s->owner->samples, 1);
        Py_DECREF(s->owner);
    }
    PyObject_Free(s);
}

static int psample_getbuffer(PSample *s, Py_buffer *view, int flags)
{
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "a received sample is read-only");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)s, (void *)s->s.data, (Py_ssize_t)s->s.h->bytes, 1,
                          flags) < 0)
        return -1;
    s->exports++;
    return 0;
}

static void psample_releasebuffer(PSample *s, Py_buffer *view)
{
    (void)view;
    s->exports--;
}

static PyBufferProcs psample_buffer = {
    .bf_getbuffer = (getbufferproc)psample_getbuffer,
    .bf_releasebuffer = (releasebufferproc)psample_releasebuffer,
};

static PyObject *psample_header(PSample *s, void *closure)
{
    (void)closure;
    const inferd_sample_header *h = s->s.h;
    PyObject *shape = PyTuple_New(h->ndim);
    for (uint32_t d = 0; shape && d < h->ndim; d++)
        PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(h->shape[d]));
    return shape ? Py_BuildValue("(IKIN)", h->flags, (unsigned long long)h->session, h->elem, shape)
                 : NULL;
}

static PyGetSetDef psample_getset[] = {
    {"header", (getter)psample_header, NULL, "(flags, session, elem, shape)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PSampleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd._PipelineSample",
    .tp_basicsize = sizeof(PSample),
    .tp_dealloc = (destructor)psample_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A sample received from a pipeline's output: its payload as a read-only buffer "
              "over the channel's memory (released when this object goes).",
    .tp_as_buffer = &psample_buffer,
    .tp_getset = psample_getset,
};

int inferd_py_pipeline_init(PyObject *module)
{
    if (PyType_Ready(&PipeType) < 0 || PyType_Ready(&PSampleType) < 0)
        return -1;
    Py_INCREF(&PipeType);
    if (PyModule_AddObject(module, "_Pipeline", (PyObject *)&PipeType) < 0) {
        Py_DECREF(&PipeType);
        return -1;
    }
    return 0;
}
