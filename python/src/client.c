/* Clients of model workers for Python, over the C client library
 * (include/inferd/client.h): _Client wraps one worker (inferd_client) or
 * several (inferd_resilient: retries, breakers, failover of streams). Calls
 * block with the GIL released; a stream calls a Python callable for each
 * piece (with the GIL). The asyncio classes (inferd/client.py) run these
 * calls in threads. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

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
