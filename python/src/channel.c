/* Pipeline channels for Python (include/inferd/channel.h): _Channel holds
 * one seat (publisher, subscriber or observer) on a channel's memfd;
 * _Sample is a received sample (read-only bytes in the channel's memory,
 * released once) or a view of the publisher's loan (writable). Loans and
 * receives wait with the GIL released.
 *
 * Lifetimes: every _Sample keeps its _Channel alive, and a _Channel is
 * unmapped only once no _Sample of it holds memory and no wait is under
 * way (close() asks, the last of those does it), so no view ever points
 * into unmapped memory. A received sample goes back to the channel when
 * its _Sample is released (release(), refused while buffer views of it
 * are alive) or deallocated (which the views' references put off until
 * the last of them goes).
 *
 * Threads: the GIL guards every field here. One wait per _Channel at a
 * time (a second thread's loan or receive is refused); release, stats and
 * shutdown may come from another thread during a wait (they touch only
 * the channel's shared atomics). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <string.h>

#include "ext.h"
#include "inferd/channel.h"

typedef struct Channel {
    PyObject_HEAD inferd_channel *ch; /* NULL once unmapped */
    inferd_channel_role role;
    bool closing;              /* close() was asked */
    bool busy;                 /* a loan or receive waits, the GIL released */
    bool loaned;               /* loan: the publisher's sample out */
    inferd_sample loan;        /* valid while loaned */
    Py_ssize_t n_out;          /* _Samples holding memory of the channel */
    inferd_channel_stats seen; /* the last stats read outside a wait */
} Channel;

typedef struct Sample {
    PyObject_HEAD Channel *owner; /* NULL once released */
    inferd_sample s;
    bool loaned;        /* a view of the publisher's loan: writable, cap bytes */
    Py_ssize_t exports; /* buffer views alive */
} Sample;

static PyTypeObject ChannelType, SampleType;

static const char *role_name(inferd_channel_role r)
{
    return r == INFERD_CHANNEL_PUBLISHER    ? "publisher"
           : r == INFERD_CHANNEL_SUBSCRIBER ? "subscriber"
                                            : "observer";
}

/* Unmap once close() was asked and nothing uses the mapping. */
static void maybe_unmap(Channel *c)
{
    if (c->ch && c->closing && !c->busy && c->n_out == 0) {
        inferd_channel_close(c->ch);
        c->ch = NULL;
        c->loaned = false;
    }
}

/* 0 if @p c is open (and, with @p wait, no other thread waits on it). */
static int usable(Channel *c, bool wait)
{
    if (!c->ch || c->closing) {
        PyErr_SetString(PyExc_ValueError, "channel: closed");
        return -1;
    }
    if (wait && c->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "channel: another thread is waiting on it (one loan or receive at a time)");
        return -1;
    }
    return 0;
}

/* ---- _Sample ---- */

static Sample *sample_new(Channel *c, const inferd_sample *s, bool loaned)
{
    Sample *x = PyObject_New(Sample, &SampleType);
    if (!x)
        return NULL;
    x->owner = (Channel *)Py_NewRef(c);
    x->s = *s;
    x->loaned = loaned;
    x->exports = 0;
    c->n_out++;
    return x;
}

/* Give the sample back (a received one to the channel) and let go of the
 * channel. No view may be alive. */
static void sample_let_go(Sample *x)
{
    Channel *c = x->owner;
    if (!c)
        return;
    x->owner = NULL;
    if (!x->loaned && c->ch)
        inferd_channel_release(c->ch, &x->s);
    c->n_out--;
    maybe_unmap(c);
    Py_DECREF(c);
}

static void sample_dealloc(Sample *x)
{
    sample_let_go(x); /* views hold references: none is alive here */
    PyObject_Free(x);
}

/* A loan's view is only for the loan still out: once published, the slot
 * is the subscribers'. */
static bool loan_current(const Sample *x)
{
    return x->owner->loaned && x->owner->loan.seq == x->s.seq;
}

static int sample_getbuffer(Sample *x, Py_buffer *view, int flags)
{
    if (!x->owner) {
        PyErr_SetString(PyExc_BufferError, "channel sample: released");
        view->obj = NULL;
        return -1;
    }
    if (x->loaned && !loan_current(x)) {
        PyErr_SetString(PyExc_BufferError, "channel loan: published already");
        view->obj = NULL;
        return -1;
    }
    if ((flags & PyBUF_WRITABLE) && !x->loaned) {
        PyErr_SetString(PyExc_BufferError,
                        "channel sample: read-only (it is the publisher's memory, shared)");
        view->obj = NULL;
        return -1;
    }
    const uint64_t n = x->loaned ? x->s.cap : x->s.len;
    if (PyBuffer_FillInfo(view, (PyObject *)x, x->s.data, (Py_ssize_t)n, !x->loaned, flags) < 0)
        return -1;
    x->exports++;
    return 0;
}

static void sample_releasebuffer(Sample *x, Py_buffer *view)
{
    (void)view;
    x->exports--;
}

static PyBufferProcs sample_as_buffer = {(getbufferproc)sample_getbuffer,
                                         (releasebufferproc)sample_releasebuffer};

static PyObject *sample_release(Sample *x, PyObject *unused)
{
    (void)unused;
    if (x->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "channel sample: %zd view(s) of it are alive (NumPy arrays, memoryviews): "
                     "drop them, or copy what you keep, before releasing it",
                     x->exports);
        return NULL;
    }
    sample_let_go(x);
    Py_RETURN_NONE;
}

static PyObject *sample_nbytes(Sample *x, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(x->loaned ? x->s.cap : x->s.len);
}

static PyObject *sample_seq(Sample *x, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(x->s.seq);
}

static PyObject *sample_released(Sample *x, void *c)
{
    (void)c;
    return PyBool_FromLong(x->owner == NULL);
}

static PyObject *sample_exports(Sample *x, void *c)
{
    (void)c;
    return PyLong_FromSsize_t(x->exports);
}

static PyObject *sample_address(Sample *x, void *c)
{
    (void)c;
    return PyLong_FromVoidPtr(x->owner ? x->s.data : NULL);
}

static PyMethodDef sample_methods[] = {
    {"release", (PyCFunction)sample_release, METH_NOARGS,
     "Give the sample back to the channel (BufferError while views of it are alive)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sample_getset[] = {
    {"nbytes", (getter)sample_nbytes, NULL, "bytes: the sample's (received) or the slot's (loan)",
     NULL},
    {"seq", (getter)sample_seq, NULL, "its number on the channel, from 0", NULL},
    {"released", (getter)sample_released, NULL, "whether it went back", NULL},
    {"exports", (getter)sample_exports, NULL, "buffer views of it alive", NULL},
    {"address", (getter)sample_address, NULL, "where its bytes are mapped (diagnostics)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SampleType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd._Sample",
    .tp_basicsize = sizeof(Sample),
    .tp_dealloc = (destructor)sample_dealloc,
    .tp_as_buffer = &sample_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A sample of a channel: received (read-only bytes, released once) or the view of "
              "a loan (writable). Exports the buffer protocol without copies.",
    .tp_methods = sample_methods,
    .tp_getset = sample_getset,
};

/* ---- _Channel ---- */

static int channel_init(Channel *c, PyObject *args, PyObject *kw)
{
    static char *names[] = {"fd", "role", NULL};
    int fd;
    const char *role;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "is", names, &fd, &role))
        return -1;
    if (c->ch) {
        PyErr_SetString(PyExc_RuntimeError, "channel: initialized already");
        return -1;
    }
    inferd_channel_role r;
    if (strcmp(role, "publisher") == 0)
        r = INFERD_CHANNEL_PUBLISHER;
    else if (strcmp(role, "subscriber") == 0)
        r = INFERD_CHANNEL_SUBSCRIBER;
    else if (strcmp(role, "observer") == 0)
        r = INFERD_CHANNEL_OBSERVER;
    else {
        PyErr_Format(PyExc_ValueError,
                     "channel: role '%s', expected 'publisher', 'subscriber' or 'observer'", role);
        return -1;
    }
    inferd_error err = {0};
    inferd_channel *ch = NULL;
    if (inferd_channel_open(fd, r, &ch, &err) < 0) {
        inferd_py_raise(&err);
        return -1;
    }
    c->ch = ch;
    c->role = r;
    c->closing = c->busy = c->loaned = false;
    c->n_out = 0;
    memset(&c->seen, 0, sizeof(c->seen));
    return 0;
}

static void channel_dealloc(Channel *c)
{
    /* No _Sample and no wait is left: each holds a reference. */
    inferd_channel_close(c->ch);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* A memoryview of the current loan (the whole slot, writable). */
static PyObject *loan_view(Channel *c)
{
    Sample *x = sample_new(c, &c->loan, true);
    if (!x)
        return NULL;
    PyObject *mv = PyMemoryView_FromObject((PyObject *)x);
    Py_DECREF(x);
    return mv;
}

static PyObject *channel_loan(Channel *c, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout_ms", NULL};
    long long timeout_ms = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|L", names, &timeout_ms) || usable(c, true) < 0)
        return NULL;
    if (c->role != INFERD_CHANNEL_PUBLISHER) {
        PyErr_SetString(PyExc_ValueError, "channel: only its publisher loans");
        return NULL;
    }
    if (c->loaned) /* the loan still out: the same slot again */
        return loan_view(c);
    inferd_error err = {0};
    inferd_sample s;
    int rc;
    c->busy = true;
    PyThreadState *ts = PyEval_SaveThread();
    rc = inferd_channel_loan(c->ch, (int64_t)timeout_ms, &s, &err);
    PyEval_RestoreThread(ts);
    c->busy = false;
    if (c->closing) {
        maybe_unmap(c); /* a loan not published is simply left */
        PyErr_SetString(PyExc_ValueError, "channel: closed during the loan");
        return NULL;
    }
    if (rc < 0)
        return inferd_py_raise(&err);
    c->loan = s;
    c->loaned = true;
    return loan_view(c);
}

static PyObject *channel_publish(Channel *c, PyObject *args)
{
    unsigned long long n;
    if (!PyArg_ParseTuple(args, "K", &n) || usable(c, false) < 0)
        return NULL;
    if (!c->loaned) {
        PyErr_SetString(PyExc_ValueError, "channel: no loan to publish (loan() first)");
        return NULL;
    }
    inferd_error err = {0};
    if (inferd_channel_publish(c->ch, &c->loan, (uint64_t)n, &err) < 0)
        return inferd_py_raise(&err);
    c->loaned = false;
    Py_RETURN_NONE;
}

static PyObject *channel_receive(Channel *c, PyObject *args, PyObject *kw)
{
    static char *names[] = {"timeout_ms", NULL};
    long long timeout_ms = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|L", names, &timeout_ms) || usable(c, true) < 0)
        return NULL;
    if (c->role != INFERD_CHANNEL_SUBSCRIBER) {
        PyErr_SetString(PyExc_ValueError, "channel: only a subscriber receives");
        return NULL;
    }
    inferd_error err = {0};
    inferd_sample s;
    int rc;
    c->busy = true;
    PyThreadState *ts = PyEval_SaveThread();
    rc = inferd_channel_receive(c->ch, (int64_t)timeout_ms, &s, &err);
    PyEval_RestoreThread(ts);
    c->busy = false;
    if (rc == 0)
        inferd_channel_stats_get(c->ch, &c->seen);
    if (c->closing) {
        if (rc == 0)
            inferd_channel_release(c->ch, &s);
        maybe_unmap(c);
        PyErr_SetString(PyExc_ValueError, "channel: closed during the receive");
        return NULL;
    }
    if (rc < 0)
        return inferd_py_raise(&err);
    Sample *x = sample_new(c, &s, false);
    if (!x)
        inferd_channel_release(c->ch, &s);
    return (PyObject *)x;
}

static PyObject *channel_shutdown(Channel *c, PyObject *unused)
{
    (void)unused;
    if (!c->ch) {
        PyErr_SetString(PyExc_ValueError, "channel: closed");
        return NULL;
    }
    inferd_channel_shutdown(c->ch);
    Py_RETURN_NONE;
}

static PyObject *channel_close(Channel *c, PyObject *unused)
{
    (void)unused;
    c->closing = true;
    maybe_unmap(c);
    Py_RETURN_NONE;
}

static PyObject *channel_stats(Channel *c, PyObject *unused)
{
    (void)unused;
    if (c->ch && !c->busy)
        inferd_channel_stats_get(c->ch, &c->seen);
    return Py_BuildValue("{s:K,s:K,s:K}", "published", (unsigned long long)c->seen.published,
                         "received", (unsigned long long)c->seen.received, "dropped",
                         (unsigned long long)c->seen.dropped);
}

static PyObject *channel_enter(Channel *c, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(c);
}

static PyObject *channel_exit(Channel *c, PyObject *args)
{
    (void)args;
    c->closing = true;
    maybe_unmap(c);
    Py_RETURN_FALSE;
}

static int spec_of(Channel *c, inferd_channel_spec *out)
{
    if (!c->ch) {
        PyErr_SetString(PyExc_ValueError, "channel: closed");
        return -1;
    }
    *out = inferd_channel_get_spec(c->ch);
    return 0;
}

static PyObject *channel_slot_bytes(Channel *c, void *unused)
{
    (void)unused;
    inferd_channel_spec sp;
    return spec_of(c, &sp) < 0 ? NULL : PyLong_FromUnsignedLongLong(sp.slot_bytes);
}

static PyObject *channel_slots(Channel *c, void *unused)
{
    (void)unused;
    inferd_channel_spec sp;
    return spec_of(c, &sp) < 0 ? NULL : PyLong_FromUnsignedLong(sp.n_slots);
}

static PyObject *channel_max_subscribers(Channel *c, void *unused)
{
    (void)unused;
    inferd_channel_spec sp;
    return spec_of(c, &sp) < 0 ? NULL : PyLong_FromUnsignedLong(sp.max_subscribers);
}

static PyObject *channel_policy(Channel *c, void *unused)
{
    (void)unused;
    inferd_channel_spec sp;
    if (spec_of(c, &sp) < 0)
        return NULL;
    return PyUnicode_FromString(sp.policy == INFERD_CHANNEL_DROP_OLDEST ? "drop_oldest" : "block");
}

static PyObject *channel_role(Channel *c, void *unused)
{
    (void)unused;
    return PyUnicode_FromString(role_name(c->role));
}

static PyObject *channel_closed(Channel *c, void *unused)
{
    (void)unused;
    return PyBool_FromLong(!c->ch || c->closing);
}

static PyObject *channel_waiting(Channel *c, void *unused)
{
    (void)unused;
    return PyBool_FromLong(c->busy);
}

static PyObject *channel_outstanding(Channel *c, void *unused)
{
    (void)unused;
    return PyLong_FromSsize_t(c->n_out);
}

static PyObject *channel_repr(Channel *c)
{
    if (!c->ch)
        return PyUnicode_FromFormat("<_Channel %s, closed>", role_name(c->role));
    const inferd_channel_spec sp = inferd_channel_get_spec(c->ch);
    return PyUnicode_FromFormat("<_Channel %s, %llu bytes x %u slots%s>", role_name(c->role),
                                (unsigned long long)sp.slot_bytes, sp.n_slots,
                                c->closing ? ", closing" : "");
}

static PyMethodDef channel_methods[] = {
    {"loan", (PyCFunction)(void (*)(void))channel_loan, METH_VARARGS | METH_KEYWORDS,
     "loan(timeout_ms=-1) -> memoryview: the next slot, writable (slot_bytes), waiting up to "
     "timeout_ms (< 0: no limit) for room. While a loan is out, the same slot again."},
    {"publish", (PyCFunction)channel_publish, METH_VARARGS,
     "publish(nbytes): publish the loan's first nbytes."},
    {"receive", (PyCFunction)(void (*)(void))channel_receive, METH_VARARGS | METH_KEYWORDS,
     "receive(timeout_ms=-1) -> _Sample: the next sample (read-only), waiting up to timeout_ms "
     "(< 0: no limit)."},
    {"shutdown", (PyCFunction)channel_shutdown, METH_NOARGS,
     "Shut the channel down for every process: waits end with UnavailableError."},
    {"close", (PyCFunction)channel_close, METH_NOARGS,
     "Give the seat back and unmap, once no sample of it is held."},
    {"stats", (PyCFunction)channel_stats, METH_NOARGS,
     "{'published', 'received', 'dropped'}: the channel's and this seat's counts."},
    {"__enter__", (PyCFunction)channel_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)channel_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef channel_getset[] = {
    {"slot_bytes", (getter)channel_slot_bytes, NULL, "the largest sample, in bytes", NULL},
    {"slots", (getter)channel_slots, NULL, "samples in flight at most", NULL},
    {"max_subscribers", (getter)channel_max_subscribers, NULL, "subscribers' seats", NULL},
    {"policy", (getter)channel_policy, NULL, "'block' or 'drop_oldest'", NULL},
    {"role", (getter)channel_role, NULL, "'publisher', 'subscriber' or 'observer'", NULL},
    {"closed", (getter)channel_closed, NULL, "whether close() was asked", NULL},
    {"waiting", (getter)channel_waiting, NULL, "whether a loan or receive waits on it", NULL},
    {"outstanding", (getter)channel_outstanding, NULL,
     "samples (and loan views) holding the channel's memory", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd._Channel",
    .tp_basicsize = sizeof(Channel),
    .tp_dealloc = (destructor)channel_dealloc,
    .tp_repr = (reprfunc)channel_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "_Channel(fd, role): a seat on a pipeline channel (fd is not taken: the caller "
              "still closes it).",
    .tp_methods = channel_methods,
    .tp_getset = channel_getset,
    .tp_init = (initproc)channel_init,
    .tp_new = PyType_GenericNew,
};

/* ---- channel_create ---- */

static PyObject *channel_create(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *names[] = {"slot_bytes", "slots", "max_subscribers", "policy", "name", NULL};
    unsigned long long slot_bytes;
    unsigned int slots = 4, subs = 1;
    const char *policy = "block", *name = "inferd-py-channel";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "K|IIss", names, &slot_bytes, &slots, &subs, &policy,
                                     &name))
        return NULL;
    inferd_channel_spec sp = {.slot_bytes = slot_bytes, .n_slots = slots, .max_subscribers = subs};
    if (strcmp(policy, "block") == 0)
        sp.policy = INFERD_CHANNEL_BLOCK;
    else if (strcmp(policy, "drop_oldest") == 0)
        sp.policy = INFERD_CHANNEL_DROP_OLDEST;
    else
        return PyErr_Format(PyExc_ValueError,
                            "channel_create: policy '%s', expected 'block' or 'drop_oldest'",
                            policy);
    inferd_error err = {0};
    int fd = -1;
    if (inferd_channel_create(&sp, name, &fd, &err) < 0)
        return inferd_py_raise(&err);
    return PyLong_FromLong(fd);
}

static PyMethodDef channel_functions[] = {
    {"channel_create", (PyCFunction)(void (*)(void))channel_create, METH_VARARGS | METH_KEYWORDS,
     "channel_create(slot_bytes, slots=4, max_subscribers=1, policy='block', name=...) -> fd: "
     "a new channel (a sealed memfd, close-on-exec; the caller closes it)."},
    {NULL, NULL, 0, NULL},
};

int inferd_py_channel_init(PyObject *module)
{
    if (PyType_Ready(&ChannelType) < 0 || PyType_Ready(&SampleType) < 0)
        return -1;
    Py_INCREF(&ChannelType);
    if (PyModule_AddObject(module, "_Channel", (PyObject *)&ChannelType) < 0) {
        Py_DECREF(&ChannelType);
        return -1;
    }
    Py_INCREF(&SampleType);
    if (PyModule_AddObject(module, "_Sample", (PyObject *)&SampleType) < 0) {
        Py_DECREF(&SampleType);
        return -1;
    }
    return PyModule_AddFunctions(module, channel_functions);
}
