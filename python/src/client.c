/* Clients of model workers for Python, over the C client library
 * (include/inferd/client.h): _Client wraps one worker (inferd_client) or
 * several (inferd_resilient: retries, breakers, failover of streams). Calls
 * block with the GIL released; a stream calls a Python callable for each
 * piece (with the GIL). The asyncio classes (inferd/client.py) run these
 * calls in threads. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "ext.h"
#include "inferd/client.h"

typedef struct Client {
    PyObject_HEAD inferd_client *one; /* or */
    inferd_resilient *many;
} Client;

static int client_new_args(PyObject *urls, const char *key, double deadline_ms, int attempts,
                           double backoff_ms, double cooldown_ms, int breaker_failures, Client *c)
{
    PyObject *fast = PySequence_Fast(urls, "urls: expected a list of URLs");
    if (!fast)
        return -1;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1 || n > 64) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "urls: 1 to 64 URLs");
        return -1;
    }
    const char *u[64];
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(u[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, i)))) {
            Py_DECREF(fast);
            return -1;
        }
    inferd_resilient_opts o = inferd_resilient_opts_default();
    o.client.api_key = key;
    if (deadline_ms >= 0)
        o.retry.deadline_ms = (int64_t)deadline_ms;
    if (attempts > 0)
        o.retry.attempts = (uint32_t)attempts;
    if (backoff_ms >= 0) {
        o.retry.backoff_base_ms = (int64_t)backoff_ms;
        if (o.retry.backoff_cap_ms < o.retry.backoff_base_ms)
            o.retry.backoff_cap_ms = o.retry.backoff_base_ms;
    }
    if (cooldown_ms >= 0)
        o.breaker_cooldown_ms = (int64_t)cooldown_ms;
    if (breaker_failures > 0)
        o.breaker_failures = (uint32_t)breaker_failures;
    inferd_error err = {0};
    int rc = attempts == 0 && n == 1 ? inferd_client_open(u[0], &o.client, &c->one, &err)
                                     : inferd_resilient_open(u, (size_t)n, &o, &c->many, &err);
    Py_DECREF(fast);
    if (rc < 0) {
        inferd_py_raise(&err);
        return -1;
    }
    return 0;
}

/* _Client(urls, api_key=None, deadline_ms=-1, attempts=0, backoff_ms=-1,
 * cooldown_ms=-1, breaker_failures=0): attempts 0 with one URL is the plain
 * client; else the resilient one. */
static int client_init(Client *c, PyObject *args, PyObject *kw)
{
    static char *names[] = {"urls",       "api_key",     "deadline_ms",      "attempts",
                            "backoff_ms", "cooldown_ms", "breaker_failures", NULL};
    PyObject *urls;
    const char *key = NULL;
    double deadline = -1, backoff = -1, cooldown = -1;
    int attempts = 0, failures = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|zdiddi", names, &urls, &key, &deadline, &attempts,
                                     &backoff, &cooldown, &failures))
        return -1;
    if (c->one || c->many) {
        PyErr_SetString(PyExc_RuntimeError, "_Client: initialized twice");
        return -1;
    }
    return client_new_args(urls, key, deadline, attempts, backoff, cooldown, failures, c);
}

static void client_close_now(Client *c)
{
    inferd_client *one = c->one;
    inferd_resilient *many = c->many;
    c->one = NULL;
    c->many = NULL;
    Py_BEGIN_ALLOW_THREADS inferd_client_close(one);
    inferd_resilient_close(many);
    Py_END_ALLOW_THREADS
}

static void client_dealloc(Client *c)
{
    client_close_now(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int client_live(Client *c)
{
    if (c->one || c->many)
        return 0;
    PyErr_SetString(PyExc_ValueError, "the client is closed");
    return -1;
}

static PyObject *client_close(Client *c, PyObject *unused)
{
    (void)unused;
    client_close_now(c);
    Py_RETURN_NONE;
}

static PyObject *client_health(Client *c, PyObject *arg)
{
    const int ready = PyObject_IsTrue(arg);
    if (ready < 0 || client_live(c) < 0)
        return NULL;
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = c->one ? inferd_client_health(c->one, ready, &err)
                                       : inferd_resilient_health(c->many, ready, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Py_RETURN_TRUE;
}

static PyObject *client_status(Client *c, PyObject *unused)
{
    (void)unused;
    if (client_live(c) < 0)
        return NULL;
    inferd_error err = {0};
    char *js = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = c->one ? inferd_client_status(c->one, &js, &err)
                                       : inferd_resilient_status(c->many, &js, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    PyObject *s = PyUnicode_FromString(js);
    free(js);
    return s;
}

/* ---- generation ---- */

typedef struct stream_ctx {
    PyObject *fn; /* fn(index, text) -> truthy cancels */
    bool failed;  /* fn raised: the exception is kept */
} stream_ctx;

static int on_piece(void *ctx, uint32_t index, const char *text, size_t len)
{
    stream_ctx *s = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    int stop = 0;
    PyObject *r = PyObject_CallFunction(s->fn, "Is#", (unsigned)index, text, (Py_ssize_t)len);
    if (!r) {
        s->failed = true; /* the error stays set for the caller */
        stop = 1;
    } else {
        stop = PyObject_IsTrue(r) == 1;
        Py_DECREF(r);
    }
    PyGILState_Release(g);
    return stop;
}

/* The keywords of a request into @p g (strings borrowed from @p kw). */
static int read_gen(PyObject *kw, inferd_client_gen *g, inferd_client_message *msgs,
                    size_t cap_msgs)
{
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (kw && PyDict_Next(kw, &pos, &key, &val)) {
        const char *k = PyUnicode_AsUTF8(key);
        if (!k)
            return -1;
        if (val == Py_None)
            continue;
        if (strcmp(k, "prompt") == 0 || strcmp(k, "model") == 0) {
            const char *s = PyUnicode_AsUTF8(val);
            if (!s)
                return -1;
            *(strcmp(k, "prompt") == 0 ? &g->prompt : &g->model) = s;
        } else if (strcmp(k, "messages") == 0) {
            PyObject *fast = PySequence_Fast(val, "messages: expected a list of dicts");
            if (!fast)
                return -1;
            const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
            Py_DECREF(fast); /* the items stay referenced by val */
            if ((size_t)n > cap_msgs) {
                PyErr_Format(PyExc_ValueError, "messages: at most %zu", cap_msgs);
                return -1;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                PyObject *m = PySequence_GetItem(val, i);
                PyObject *role = m ? PyMapping_GetItemString(m, "role") : NULL;
                PyObject *content = m ? PyMapping_GetItemString(m, "content") : NULL;
                msgs[i].role = role ? PyUnicode_AsUTF8(role) : NULL;
                msgs[i].content = content ? PyUnicode_AsUTF8(content) : NULL;
                /* role and content are owned by the dict m, itself by val */
                Py_XDECREF(role);
                Py_XDECREF(content);
                Py_XDECREF(m);
                if (!msgs[i].role || !msgs[i].content) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "messages: role and content");
                    return -1;
                }
            }
            g->messages = msgs;
            g->n_messages = (size_t)n;
        } else if (strcmp(k, "stop") == 0) {
            PyObject *fast = PySequence_Fast(val, "stop: expected a list of strings");
            if (!fast)
                return -1;
            const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
            if (n > INFERD_CLIENT_STOP_MAX) {
                Py_DECREF(fast);
                PyErr_Format(PyExc_ValueError, "stop: at most %d strings", INFERD_CLIENT_STOP_MAX);
                return -1;
            }
            for (Py_ssize_t i = 0; i < n; i++)
                if (!(g->stop[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, i)))) {
                    Py_DECREF(fast);
                    return -1;
                }
            g->n_stop = (int)n;
            Py_DECREF(fast);
        } else if (strcmp(k, "ignore_eos") == 0) {
            g->ignore_eos = PyObject_IsTrue(val) == 1;
        } else if (strcmp(k, "max_tokens") == 0 || strcmp(k, "top_k") == 0 ||
                   strcmp(k, "seed") == 0 || strcmp(k, "timeout_ms") == 0) {
            long long x = PyLong_AsLongLong(val);
            if (x == -1 && PyErr_Occurred())
                return -1;
            if (k[0] == 'm')
                g->max_tokens = (int32_t)x;
            else if (k[0] == 't' && k[1] == 'o')
                g->top_k = (int32_t)x;
            else if (k[0] == 't')
                g->timeout_ms = x;
            else {
                g->has_seed = true;
                g->seed = (uint64_t)x;
            }
        } else if (strcmp(k, "temperature") == 0 || strcmp(k, "top_p") == 0 ||
                   strcmp(k, "min_p") == 0) {
            double d = PyFloat_AsDouble(val);
            if (d == -1.0 && PyErr_Occurred())
                return -1;
            *(k[0] == 'm' ? &g->min_p : k[4] == 'p' ? &g->top_p : &g->temperature) = d;
        } else {
            PyErr_Format(PyExc_TypeError,
                         "unexpected keyword '%s' (prompt, messages, model, max_tokens, "
                         "temperature, top_p, top_k, min_p, seed, stop, ignore_eos, timeout_ms)",
                         k);
            return -1;
        }
    }
    if (!g->prompt && !g->messages) {
        PyErr_SetString(PyExc_TypeError, "a prompt or messages is required");
        return -1;
    }
    return 0;
}

/* complete(on_piece=None, **request) -> dict */
static PyObject *client_complete(Client *c, PyObject *args, PyObject *kw)
{
    PyObject *fn = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &fn) || client_live(c) < 0)
        return NULL;
    inferd_client_gen g = inferd_client_gen_default();
    inferd_client_message msgs[64];
    if (read_gen(kw, &g, msgs, 64) < 0)
        return NULL;
    stream_ctx s = {.fn = fn};
    inferd_client_result res;
    inferd_error err = {0};
    int rc;
    const bool stream = fn != Py_None;
    Py_BEGIN_ALLOW_THREADS rc =
        c->one ? inferd_client_complete(c->one, &g, stream ? on_piece : NULL, &s, &res, &err)
               : inferd_resilient_complete(c->many, &g, stream ? on_piece : NULL, &s, &res, &err);
    Py_END_ALLOW_THREADS PyObject *out = NULL;
    if (s.failed) {
        /* the callable's exception is set */
    } else if (rc < 0) {
        inferd_py_raise(&err);
    } else {
        out = Py_BuildValue("{s:s#,s:s,s:I,s:I,s:K,s:I}", "text", res.text ? res.text : "",
                            (Py_ssize_t)res.text_len, "finish_reason", res.finish_reason,
                            "prompt_tokens", res.prompt_tokens, "completion_tokens",
                            res.completion_tokens, "seed", (unsigned long long)res.seed, "pieces",
                            res.n_pieces);
    }
    inferd_client_result_free(&res);
    return out;
}

static PyObject *client_stats(Client *c, PyObject *unused)
{
    (void)unused;
    if (client_live(c) < 0)
        return NULL;
    if (!c->many)
        return PyDict_New();
    inferd_resilient_stats st;
    inferd_resilient_stats_get(c->many, &st);
    PyObject *eps = PyList_New(0);
    for (size_t i = 0; eps && i < inferd_resilient_n_endpoints(c->many); i++) {
        inferd_endpoint_stats e;
        inferd_resilient_endpoint(c->many, i, &e);
        PyObject *d = Py_BuildValue(
            "{s:s,s:s,s:I,s:K,s:K,s:K,s:K}", "url", e.url, "breaker",
            inferd_breaker_state_name(e.breaker), "failures_in_row", e.failures_in_row, "attempts",
            (unsigned long long)e.attempts, "failures", (unsigned long long)e.failures, "successes",
            (unsigned long long)e.successes, "opened", (unsigned long long)e.opened);
        if (!d || PyList_Append(eps, d) < 0)
            Py_CLEAR(eps);
        Py_XDECREF(d);
    }
    if (!eps)
        return NULL;
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:N}", "calls", (unsigned long long)st.calls, "attempts",
                         (unsigned long long)st.attempts, "failovers",
                         (unsigned long long)st.failovers, "replayed",
                         (unsigned long long)st.replayed, "endpoints", eps);
}

/* ---- inference ---- */

/* An answer's memory, shared by the TensorBuffers over its outputs. */
typedef struct answer {
    inferd_client_infer_result res;
    atomic_int refs;
} answer;

static void answer_unref(void *ctx, void *data, size_t bytes)
{
    (void)data;
    (void)bytes;
    answer *a = ctx;
    if (atomic_fetch_sub(&a->refs, 1) == 1) {
        inferd_client_infer_result_free(&a->res);
        PyMem_RawFree(a);
    }
}

/* A region as the C client takes it: (name, base address, size). */
static int read_region(PyObject *t, inferd_client_region *r)
{
    const char *name;
    unsigned long long base, size;
    if (!PyArg_ParseTuple(t, "sKK", &name, &base, &size))
        return -1;
    memset(r, 0, sizeof(*r));
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->base = (void *)(uintptr_t)base;
    r->size = (size_t)size;
    return 0;
}

#define INFER_MAX 16

/* infer(model, inputs, outputs, params_json)
 *   inputs:  [(name, dtype, shape, via, data, region, offset)]: data a
 *            contiguous buffer (JSON, binary), or the byte count when region
 *            (name, base, size) is given (shared memory: the bytes are at
 *            base + offset)
 *   outputs: [(name, via, region, offset, room)]
 * -> (json, [(name, dtype, shape, TensorBuffer or bytes or None)]) */
static PyObject *client_infer(Client *c, PyObject *args)
{
    const char *model, *params = NULL;
    PyObject *ins, *outs;
    if (!PyArg_ParseTuple(args, "sO!O!z", &model, &PyList_Type, &ins, &PyList_Type, &outs,
                          &params) ||
        client_live(c) < 0)
        return NULL;
    const Py_ssize_t n_in = PyList_GET_SIZE(ins), n_out = PyList_GET_SIZE(outs);
    if (n_in < 1 || n_in > INFER_MAX || n_out > INFER_MAX) {
        PyErr_Format(PyExc_ValueError, "infer: 1 to %d inputs and at most %d outputs", INFER_MAX,
                     INFER_MAX);
        return NULL;
    }
    inferd_client_tensor in[INFER_MAX], out[INFER_MAX];
    inferd_client_region regions[2 * INFER_MAX];
    Py_buffer views[INFER_MAX];
    int n_views = 0;
    PyObject *result = NULL;
    memset(in, 0, sizeof(in));
    memset(out, 0, sizeof(out));
    for (Py_ssize_t i = 0; i < n_in; i++) {
        const char *name, *dt;
        PyObject *shape, *data, *region;
        int via;
        unsigned long long offset;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(ins, i), "ssOiOOK", &name, &dt, &shape, &via, &data,
                              &region, &offset))
            goto done;
        inferd_client_tensor *t = &in[i];
        t->name = name;
        const int e = inferd_elem_parse(dt);
        PyObject *fast = PySequence_Fast(shape, "shape: expected a sequence");
        if (e < 0 || !fast || PySequence_Fast_GET_SIZE(fast) > INFERD_TENSOR_DIMS_MAX) {
            Py_XDECREF(fast);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "input '%s': datatype %s, or over 8 dims", name, dt);
            goto done;
        }
        t->elem = (inferd_elem)e;
        t->ndim = (uint32_t)PySequence_Fast_GET_SIZE(fast);
        for (uint32_t d = 0; d < t->ndim; d++)
            t->shape[d] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, d));
        Py_DECREF(fast);
        if (PyErr_Occurred())
            goto done;
        t->via = (inferd_client_via)via;
        t->offset = offset;
        if (region != Py_None) {
            if (read_region(region, &regions[i]) < 0)
                goto done;
            t->region = &regions[i];
            t->bytes = (size_t)PyLong_AsUnsignedLongLong(data); /* the byte count */
            if (PyErr_Occurred())
                goto done;
        } else {
            if (PyObject_GetBuffer(data, &views[n_views], PyBUF_C_CONTIGUOUS) < 0)
                goto done;
            t->data = views[n_views].buf;
            t->bytes = (size_t)views[n_views].len;
            n_views++;
        }
    }
    for (Py_ssize_t i = 0; i < n_out; i++) {
        const char *name;
        int via;
        PyObject *region;
        unsigned long long offset, room;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(outs, i), "siOKK", &name, &via, &region, &offset,
                              &room))
            goto done;
        out[i].name = name;
        out[i].via = (inferd_client_via)via;
        out[i].offset = offset;
        out[i].bytes = (size_t)room;
        if (region != Py_None) {
            if (read_region(region, &regions[INFER_MAX + i]) < 0)
                goto done;
            out[i].region = &regions[INFER_MAX + i];
        }
    }
    answer *a = PyMem_RawCalloc(1, sizeof(*a));
    if (!a) {
        PyErr_NoMemory();
        goto done;
    }
    atomic_init(&a->refs, 1); /* this function's */
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = c->one
                                    ? inferd_client_infer(c->one, model, in, (size_t)n_in, out,
                                                          (size_t)n_out, params, &a->res, &err)
                                    : inferd_resilient_infer(c->many, model, in, (size_t)n_in, out,
                                                             (size_t)n_out, params, &a->res, &err);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        PyMem_RawFree(a);
        inferd_py_raise(&err);
        goto done;
    }
    PyObject *list = PyList_New(n_out);
    for (Py_ssize_t i = 0; list && i < n_out; i++) {
        const inferd_client_tensor *t = &out[i];
        PyObject *shape = PyTuple_New(t->ndim), *payload = NULL;
        for (uint32_t d = 0; shape && d < t->ndim; d++)
            PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(t->shape[d]));
        if (t->via == INFERD_CLIENT_VIA_SHM) {
            payload = Py_NewRef(Py_None); /* a view of the caller's region */
        } else if (t->elem == INFERD_ELEM_BYTES) {
            payload = PyBytes_FromStringAndSize(t->data, (Py_ssize_t)t->bytes);
        } else {
            inferd_storage *st = NULL;
            inferd_tensor tt;
            atomic_fetch_add(&a->refs, 1);
            if (inferd_storage_wrap(INFERD_STORAGE_BORROWED, (void *)t->data, t->bytes,
                                    answer_unref, a, &st, &err) < 0) {
                atomic_fetch_sub(&a->refs, 1);
                inferd_py_raise(&err);
            } else if (inferd_tensor_init(&tt, t->elem, t->ndim, t->shape, NULL, 0, st, &err) < 0) {
                inferd_py_raise(&err);
            } else {
                payload = inferd_py_buffer_wrap(&tt);
            }
            inferd_storage_unref(st);
        }
        PyObject *item = shape && payload ? Py_BuildValue("(ssNN)", t->name,
                                                          inferd_elem_name(t->elem), shape, payload)
                                          : NULL;
        if (!item) {
            Py_XDECREF(shape);
            Py_XDECREF(payload);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, item);
    }
    if (list)
        result = Py_BuildValue("(sN)", a->res.json ? a->res.json : "{}", list);
    answer_unref(a, NULL, 0);
done:
    for (int k = 0; k < n_views; k++)
        PyBuffer_Release(&views[k]);
    return result;
}

static PyObject *client_register(Client *c, PyObject *args)
{
    const char *name, *key;
    unsigned long long offset, bytes;
    if (!PyArg_ParseTuple(args, "ssKK", &name, &key, &offset, &bytes) || client_live(c) < 0)
        return NULL;
    if (!c->one) {
        PyErr_SetString(PyExc_TypeError, "register a region with one worker's client");
        return NULL;
    }
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_client_register_key(c->one, name, key, offset, bytes, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *client_unregister(Client *c, PyObject *args)
{
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name) || client_live(c) < 0)
        return NULL;
    if (!c->one) {
        PyErr_SetString(PyExc_TypeError, "unregister a region with one worker's client");
        return NULL;
    }
    inferd_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_client_unregister(c->one, name, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Py_RETURN_NONE;
}

static PyMethodDef client_methods[] = {
    {"infer", (PyCFunction)client_infer, METH_VARARGS,
     "infer(model, inputs, outputs, params_json) -> (json, outputs)"},
    {"register", (PyCFunction)client_register, METH_VARARGS,
     "register(name, key, offset, bytes): a shared-memory region by key"},
    {"unregister", (PyCFunction)client_unregister, METH_VARARGS, "unregister(name)"},
    {"health", (PyCFunction)client_health, METH_O, "health(ready) -> True, or raises"},
    {"status", (PyCFunction)client_status, METH_NOARGS, "the worker's /v1/status JSON text"},
    {"complete", (PyCFunction)(void (*)(void))client_complete, METH_VARARGS | METH_KEYWORDS,
     "complete(on_piece=None, **request) -> dict"},
    {"stats", (PyCFunction)client_stats, METH_NOARGS, "the resilient client's counters"},
    {"close", (PyCFunction)client_close, METH_NOARGS, "close the connections"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd._Client",
    .tp_basicsize = sizeof(Client),
    .tp_dealloc = (destructor)client_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A client of one or several workers (blocking calls; see inferd.client).",
    .tp_methods = client_methods,
    .tp_init = (initproc)client_init,
    .tp_new = PyType_GenericNew,
};

int inferd_py_client_init(PyObject *module)
{
    if (PyType_Ready(&ClientType) < 0)
        return -1;
    Py_INCREF(&ClientType);
    if (PyModule_AddObject(module, "_Client", (PyObject *)&ClientType) < 0) {
        Py_DECREF(&ClientType);
        return -1;
    }
    return 0;
}
