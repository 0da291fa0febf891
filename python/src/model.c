/* In-process models for Python: the process registry (one instance per
 * model, shared by every caller in the process), Model handles, and
 * generation through the model's scheduler. The GIL is released while
 * the engine works (loading, waiting for tokens), so Python threads run
 * beside generation. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <string.h>

#include "ext.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"
#include "inferd/tokenizer.h"

/* ---- the process registry ---- */

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static inferd_registry *g_reg;
static uint64_t g_budget; /* for the registry made next */

static inferd_registry *registry(inferd_error *err)
{
    pthread_mutex_lock(&reg_mu);
    if (!g_reg) {
        inferd_registry_opts o = inferd_registry_opts_default();
        o.budget_bytes = g_budget;
        o.reaper_interval_ms = 1000;
        if (inferd_registry_create(&o, &g_reg, err) < 0)
            g_reg = NULL;
    }
    inferd_registry *r = g_reg;
    pthread_mutex_unlock(&reg_mu);
    return r;
}

PyObject *inferd_py_configure(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *names[] = {"budget_bytes", NULL};
    unsigned long long budget = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$K", names, &budget))
        return NULL;
    pthread_mutex_lock(&reg_mu);
    const bool made = g_reg != NULL;
    if (!made)
        g_budget = budget;
    pthread_mutex_unlock(&reg_mu);
    if (made) {
        PyErr_SetString(PyExc_RuntimeError,
                        "inferd.configure: the registry exists already (configure first)");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *inferd_py_registry_info(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    inferd_error err = {0};
    inferd_registry *r = registry(&err);
    if (!r)
        return inferd_py_raise(&err);
    inferd_registry_model_info info[64];
    size_t n = 0;
    inferd_registry_list(r, info, 64, &n);
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list && i < n && i < 64; i++) {
        PyObject *d = Py_BuildValue("{s:s,s:s,s:K,s:K,s:I,s:L}", "id", info[i].id, "state",
                                    inferd_registry_state_name(info[i].state), "weight_bytes",
                                    (unsigned long long)info[i].weight_bytes, "state_bytes",
                                    (unsigned long long)info[i].state_bytes, "handles",
                                    (unsigned)info[i].n_handles, "keep_alive_ms",
                                    (long long)info[i].keep_alive_ms);
        if (!d || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(list);
        }
        Py_XDECREF(d);
    }
    return list;
}

/* ---- Model ---- */

typedef struct Model {
    PyObject_HEAD inferd_registry_handle *h; /* NULL once closed */
    PyObject *id;
} Model;

static PyTypeObject ModelType;

static int model_open(Model *m)
{
    if (m->h)
        return 0;
    PyErr_SetString(PyExc_ValueError, "inferd.Model: the model is closed");
    return -1;
}

PyObject *inferd_py_get_or_load(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *names[] = {"cls",     "path",          "id",    "n_ctx", "slots",
                            "threads", "keep_alive_ms", "queue", NULL};
    const char *path = NULL, *id = NULL;
    PyTypeObject *cls = NULL;
    int n_ctx = 0, slots = 4, threads = 0, queue = 64;
    long long keep = 300000;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s|$ziiiLi", names, &PyType_Type, &cls, &path, &id,
                                     &n_ctx, &slots, &threads, &keep, &queue))
        return NULL;
    if (!PyType_IsSubtype(cls, &ModelType)) {
        PyErr_SetString(PyExc_TypeError, "get_or_load: cls must be a Model type");
        return NULL;
    }
    if (n_ctx < 0 || slots < 1 || threads < 0 || queue < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "get_or_load: n_ctx >= 0, slots >= 1, threads >= 0, queue >= 1");
        return NULL;
    }
    inferd_error err = {0};
    inferd_registry *r = registry(&err);
    if (!r)
        return inferd_py_raise(&err);
    inferd_registry_model_opts o = inferd_registry_model_opts_default();
    o.path = path;
    o.keep_alive_ms = keep;
    o.sched.n_slots = (uint32_t)slots;
    o.sched.n_threads = (uint32_t)threads;
    o.sched.n_queue_max = (uint32_t)queue;
    o.sched.model.n_ctx = (uint32_t)n_ctx;
    inferd_registry_handle *h = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = inferd_registry_get_or_load(r, id ? id : path, &o, &h, &err);
    Py_END_ALLOW_THREADS if (rc < 0) return inferd_py_raise(&err);
    Model *m = (Model *)cls->tp_alloc(cls, 0);
    if (!m) {
        inferd_registry_release(r, h);
        return NULL;
    }
    m->h = h;
    m->id = PyUnicode_FromString(id ? id : path);
    return (PyObject *)m;
}

static void model_close_handle(Model *m)
{
    if (!m->h)
        return;
    inferd_registry_handle *h = m->h;
    m->h = NULL;
    inferd_error err = {0};
    inferd_registry *r = registry(&err);
    Py_BEGIN_ALLOW_THREADS inferd_registry_release(r, h); /* may unload: the GIL goes */
    Py_END_ALLOW_THREADS
}

static void model_dealloc(Model *m)
{
    model_close_handle(m);
    Py_XDECREF(m->id);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *model_close(Model *m, PyObject *unused)
{
    (void)unused;
    model_close_handle(m);
    Py_RETURN_NONE;
}

static PyObject *model_enter(Model *m, PyObject *unused)
{
    (void)unused;
    Py_INCREF(m);
    return (PyObject *)m;
}

static PyObject *model_exit(Model *m, PyObject *args)
{
    (void)args;
    model_close_handle(m);
    Py_RETURN_FALSE;
}

static const inferd_vocab *vocab_of(Model *m)
{
    return inferd_model_get_vocab(inferd_registry_handle_model(m->h));
}

static PyObject *model_tokenize(Model *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"text", "add_special", "parse_special", NULL};
    const char *text;
    Py_ssize_t len;
    int add = 1, parse = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s#|pp", names, &text, &len, &add, &parse) ||
        model_open(m) < 0)
        return NULL;
    size_t cap = (size_t)len + 8, n = 0;
    int32_t *ids = PyMem_Malloc(cap * sizeof(int32_t));
    if (!ids)
        return PyErr_NoMemory();
    inferd_error err = {0};
    if (inferd_tokenize(vocab_of(m), text, (size_t)len, add, parse, ids, cap, &n, &err) < 0) {
        PyMem_Free(ids);
        return inferd_py_raise(&err);
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++)
        PyList_SET_ITEM(list, (Py_ssize_t)i, PyLong_FromLong(ids[i]));
    PyMem_Free(ids);
    return list;
}

/* @p seq's ints as a new int32 array (*n), or NULL and an exception. */
static int32_t *ids_of(Model *m, PyObject *seq, size_t *n)
{
    PyObject *fast = PySequence_Fast(seq, "token ids: expected a sequence of ints");
    if (!fast)
        return NULL;
    const Py_ssize_t k = PySequence_Fast_GET_SIZE(fast);
    const int32_t nv = inferd_vocab_n_tokens(vocab_of(m));
    int32_t *ids = PyMem_Malloc((size_t)(k ? k : 1) * sizeof(int32_t));
    if (!ids) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if ((v == -1 && PyErr_Occurred()) || v < 0 || v >= nv) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError,
                             "token ids: element %zd, %ld, is outside the vocabulary [0, %d)", i, v,
                             nv);
            PyMem_Free(ids);
            Py_DECREF(fast);
            return NULL;
        }
        ids[i] = (int32_t)v;
    }
    Py_DECREF(fast);
    *n = (size_t)k;
    return ids;
}

static PyObject *model_detokenize(Model *m, PyObject *arg)
{
    if (model_open(m) < 0)
        return NULL;
    size_t n = 0;
    int32_t *ids = ids_of(m, arg, &n);
    if (!ids)
        return NULL;
    const inferd_vocab *v = vocab_of(m);
    inferd_detok d;
    inferd_detok_init(&d, v);
    const size_t cap = inferd_vocab_max_piece_len(v) + 16;
    char *piece = PyMem_Malloc(cap);
    PyObject *out = piece ? PyBytes_FromStringAndSize(NULL, 0) : NULL;
    for (size_t i = 0; out && i <= n; i++) {
        size_t k =
            i < n ? inferd_detok_push(&d, ids[i], piece, cap) : inferd_detok_flush(&d, piece, cap);
        if (k == INFERD_DETOK_ERROR) {
            PyErr_Format(PyExc_ValueError, "detokenize: cannot detokenize id %d",
                         i < n ? (int)ids[i] : -1);
            Py_CLEAR(out);
            break;
        }
        PyObject *b = PyBytes_FromStringAndSize(piece, (Py_ssize_t)k);
        PyBytes_ConcatAndDel(&out, b);
    }
    PyMem_Free(piece);
    PyMem_Free(ids);
    if (!out)
        return piece ? NULL : PyErr_NoMemory();
    /* The space the tokenizer put before the text (SPM) comes off, so that
     * detokenize(tokenize(text)) is text (as llama.cpp's detokenize). */
    const char *p = PyBytes_AS_STRING(out);
    Py_ssize_t len = PyBytes_GET_SIZE(out);
    if (inferd_vocab_add_space_prefix(v) && len > 0 && p[0] == ' ') {
        p++;
        len--;
    }
    PyObject *s = PyUnicode_DecodeUTF8(p, len, "replace");
    Py_DECREF(out);
    return s;
}

/* ---- requests ---- */

/* Sampling keywords as the HTTP API names them, into @p p. */
static int read_sampling(PyObject *kw, inferd_request_params *p, PyObject **stop_keep)
{
    static const char *known[] = {"max_tokens",     "temperature", "top_p", "top_k",
                                  "min_p",          "seed",        "stop",  "ignore_eos",
                                  "repeat_penalty", NULL};
    *stop_keep = NULL;
    if (!kw)
        return 0;
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(kw, &pos, &key, &val)) {
        const char *k = PyUnicode_AsUTF8(key);
        if (!k)
            return -1;
        int i = 0;
        while (known[i] && strcmp(known[i], k) != 0)
            i++;
        if (!known[i]) {
            PyErr_Format(PyExc_TypeError,
                         "unexpected keyword '%s' (max_tokens, temperature, top_p, top_k, "
                         "min_p, seed, stop, ignore_eos, repeat_penalty)",
                         k);
            return -1;
        }
        if (val == Py_None)
            continue;
        if (strcmp(k, "stop") == 0) {
            PyObject *list =
                PyUnicode_Check(val) ? Py_BuildValue("[O]", val) : PySequence_List(val);
            if (!list)
                return -1;
            const Py_ssize_t n = PyList_GET_SIZE(list);
            if (n > INFERD_STOP_N_MAX) {
                Py_DECREF(list);
                PyErr_Format(PyExc_ValueError, "stop: %zd strings, at most %d", n,
                             INFERD_STOP_N_MAX);
                return -1;
            }
            for (Py_ssize_t j = 0; j < n; j++) {
                p->stop[j] = PyUnicode_AsUTF8(PyList_GET_ITEM(list, j));
                if (!p->stop[j]) {
                    Py_DECREF(list);
                    return -1;
                }
            }
            p->n_stop = (int)n;
            *stop_keep = list; /* the strings live until submit copied them */
            continue;
        }
        if (strcmp(k, "ignore_eos") == 0) {
            p->ignore_eos = PyObject_IsTrue(val) == 1;
            continue;
        }
        if (strcmp(k, "max_tokens") == 0 || strcmp(k, "top_k") == 0 || strcmp(k, "seed") == 0) {
            long long x = PyLong_AsLongLong(val);
            if (x == -1 && PyErr_Occurred())
                return -1;
            if (strcmp(k, "max_tokens") == 0)
                p->max_tokens = (int32_t)(x > INT32_MAX ? INT32_MAX : x);
            else if (strcmp(k, "top_k") == 0)
                p->sampling.top_k = (int32_t)x;
            else if (x < 0) {
                PyErr_SetString(PyExc_ValueError, "seed: expected an integer >= 0");
                return -1;
            } else {
                p->sampling.has_seed = true;
                p->sampling.seed = (uint64_t)x;
            }
            continue;
        }
        double d = PyFloat_AsDouble(val);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (strcmp(k, "temperature") == 0)
            p->sampling.temperature = (float)d;
        else if (strcmp(k, "top_p") == 0)
            p->sampling.top_p = (float)d;
        else if (strcmp(k, "min_p") == 0)
            p->sampling.min_p = (float)d;
        else
            p->sampling.repeat_penalty = (float)d;
    }
    return 0;
}

/* A running request, iterated for its tokens. */
typedef struct Generation {
    PyObject_HEAD inferd_request *r;
    Model *model; /* a reference: its handle outlives the request */
    bool ended;
    PyObject *result; /* the end: {"finish_reason", ...} */
} Generation;

static PyTypeObject GenerationType;

/* Submit @p prompt (str, or a sequence of ids) with @p kw to @p m. */
static inferd_request *submit(Model *m, PyObject *prompt, PyObject *kw, inferd_positions keep)
{
    inferd_request_params p = inferd_request_params_default();
    PyObject *stop_keep = NULL;
    int32_t *ids = NULL;
    inferd_request *r = NULL;
    if (read_sampling(kw, &p, &stop_keep) < 0)
        goto done;
    if (PyUnicode_Check(prompt)) {
        Py_ssize_t n;
        p.text = PyUnicode_AsUTF8AndSize(prompt, &n);
        if (!p.text)
            goto done;
        p.text_len = (size_t)n;
    } else {
        size_t n = 0;
        if (!(ids = ids_of(m, prompt, &n)))
            goto done;
        p.tokens = ids;
        p.n_tokens = n;
    }
    p.keep_logits = p.keep_hidden = keep;
    inferd_error err = {0};
    int rc;
    inferd_sched *s = inferd_registry_handle_sched(m->h);
    Py_BEGIN_ALLOW_THREADS rc = inferd_sched_submit(s, &p, &r, &err);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        r = NULL;
        inferd_py_raise(&err);
    }
done:
    PyMem_Free(ids);
    Py_XDECREF(stop_keep);
    return r;
}

/* The next event of @p r, waiting without the GIL in slices so that a
 * signal (Ctrl-C) is seen. 0, or -1 with an exception. */
static int next_event(inferd_request *r, inferd_event *ev)
{
    for (;;) {
        int rc;
        Py_BEGIN_ALLOW_THREADS rc = inferd_request_next(r, ev, 100);
        Py_END_ALLOW_THREADS if (rc == 0) return 0;
        if (rc != INFERD_E_TIMEOUT) {
            inferd_error e = {0};
            inferd_fail(&e, rc, "the request has no more events");
            inferd_py_raise(&e);
            return -1;
        }
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
}

static PyObject *end_dict(const inferd_event *ev)
{
    return Py_BuildValue("{s:s,s:I,s:I,s:K,s:d,s:d}", "finish_reason",
                         ev->finish == INFERD_FINISH_LENGTH ? "length" : "stop", "prompt_tokens",
                         ev->n_prompt, "completion_tokens", ev->n_gen, "seed",
                         (unsigned long long)ev->seed, "ttft_ms", ev->ttft_ms, "total_ms",
                         ev->total_ms);
}

static PyObject *gen_next(Generation *g)
{
    if (g->ended)
        return NULL; /* StopIteration */
    inferd_event ev;
    if (next_event(g->r, &ev) < 0)
        return NULL;
    if (ev.type == INFERD_EVENT_TOKEN)
        return Py_BuildValue("(is#)", (int)ev.token, ev.text, (Py_ssize_t)ev.text_len);
    g->ended = true;
    if (ev.type == INFERD_EVENT_ERROR) {
        inferd_error e = {0};
        inferd_fail_param(&e, ev.code, ev.param, "%s", ev.message ? ev.message : "failed");
        return inferd_py_raise(&e);
    }
    g->result = end_dict(&ev);
    if (ev.text_len) /* text held back until the end */
        return Py_BuildValue("(is#)", -1, ev.text, (Py_ssize_t)ev.text_len);
    return NULL;
}

static void gen_dealloc(Generation *g)
{
    if (g->r) {
        inferd_request *r = g->r;
        Py_BEGIN_ALLOW_THREADS inferd_request_release(r); /* cancels it if running */
        Py_END_ALLOW_THREADS
    }
    Py_XDECREF(g->result);
    Py_XDECREF(g->model);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static PyObject *gen_result(Generation *g, void *c)
{
    (void)c;
    PyObject *r = g->result ? g->result : Py_None;
    Py_INCREF(r);
    return r;
}

static PyObject *gen_cancel(Generation *g, PyObject *unused)
{
    (void)unused;
    if (g->r)
        inferd_request_cancel(g->r);
    Py_RETURN_NONE;
}

static PyObject *model_generate(Model *m, PyObject *args, PyObject *kw)
{
    PyObject *prompt;
    if (!PyArg_ParseTuple(args, "O", &prompt) || model_open(m) < 0)
        return NULL;
    inferd_request *r = submit(m, prompt, kw, INFERD_POSITIONS_NONE);
    if (!r)
        return NULL;
    Generation *g = PyObject_New(Generation, &GenerationType);
    if (!g) {
        inferd_request_release(r);
        return NULL;
    }
    g->r = r;
    g->ended = false;
    g->result = NULL;
    Py_INCREF(m);
    g->model = m;
    return (PyObject *)g;
}

/* logits(ids) / hidden(ids): every position's rows, a TensorBuffer. */
static PyObject *kept(Model *m, PyObject *args, bool logits)
{
    PyObject *prompt;
    if (!PyArg_ParseTuple(args, "O", &prompt) || model_open(m) < 0)
        return NULL;
    PyObject *kw = Py_BuildValue("{s:i}", "max_tokens", 0);
    inferd_request *r = kw ? submit(m, prompt, kw, INFERD_POSITIONS_ALL) : NULL;
    Py_XDECREF(kw);
    if (!r)
        return NULL;
    inferd_event ev;
    PyObject *out = NULL;
    while (next_event(r, &ev) == 0) {
        if (ev.type == INFERD_EVENT_TOKEN)
            continue;
        if (ev.type == INFERD_EVENT_ERROR) {
            inferd_error e = {0};
            inferd_fail_param(&e, ev.code, ev.param, "%s", ev.message ? ev.message : "failed");
            inferd_py_raise(&e);
            break;
        }
        inferd_request_outputs o;
        inferd_request_outputs_get(r, &o);
        const int64_t shape[2] = {logits ? o.n_logits : o.n_hidden, logits ? o.n_vocab : o.n_embd};
        out = inferd_py_buffer_copy(INFERD_ELEM_F32, 2, shape, logits ? o.logits : o.hidden);
        break;
    }
    Py_BEGIN_ALLOW_THREADS inferd_request_release(r);
    Py_END_ALLOW_THREADS return out;
}

static PyObject *model_logits(Model *m, PyObject *args) { return kept(m, args, true); }
static PyObject *model_hidden(Model *m, PyObject *args) { return kept(m, args, false); }

static PyObject *model_id(Model *m, void *c)
{
    (void)c;
    Py_INCREF(m->id);
    return m->id;
}

static PyObject *model_n_vocab(Model *m, void *c)
{
    (void)c;
    return model_open(m) < 0 ? NULL : PyLong_FromLong(inferd_vocab_n_tokens(vocab_of(m)));
}

static PyObject *model_closed(Model *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->h == NULL);
}

static PyMethodDef model_methods[] = {
    {"tokenize", (PyCFunction)(void (*)(void))model_tokenize, METH_VARARGS | METH_KEYWORDS,
     "tokenize(text, add_special=True, parse_special=False) -> [ids]"},
    {"detokenize", (PyCFunction)model_detokenize, METH_O, "detokenize(ids) -> str"},
    {"_generate", (PyCFunction)(void (*)(void))model_generate, METH_VARARGS | METH_KEYWORDS,
     "_generate(prompt, **sampling) -> an iterator of (id, text)"},
    {"logits", (PyCFunction)model_logits, METH_VARARGS,
     "logits(ids or text) -> TensorBuffer FP32 [n, n_vocab]: every position's logits"},
    {"hidden", (PyCFunction)model_hidden, METH_VARARGS,
     "hidden(ids or text) -> TensorBuffer FP32 [n, n_embd]: the final normalized hidden states"},
    {"close", (PyCFunction)model_close, METH_NOARGS, "Release the handle."},
    {"__enter__", (PyCFunction)model_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)model_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef model_getset[] = {
    {"id", (getter)model_id, NULL, "the model's id in the registry", NULL},
    {"n_vocab", (getter)model_n_vocab, NULL, "tokens in the vocabulary", NULL},
    {"closed", (getter)model_closed, NULL, "whether the handle was released", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd.Model",
    .tp_basicsize = sizeof(Model),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A handle on a model of the process registry.",
    .tp_methods = model_methods,
    .tp_getset = model_getset,
};

static PyMethodDef gen_methods[] = {
    {"cancel", (PyCFunction)gen_cancel, METH_NOARGS, "End the request at the next step."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef gen_getset[] = {
    {"result", (getter)gen_result, NULL, "the end (finish_reason, token counts, seed), or None",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject GenerationType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "inferd._inferd.Generation",
    .tp_basicsize = sizeof(Generation),
    .tp_dealloc = (destructor)gen_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A running generation: iterate for (id, text) of each token.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)gen_next,
    .tp_methods = gen_methods,
    .tp_getset = gen_getset,
};

int inferd_py_model_init(PyObject *module)
{
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&GenerationType) < 0)
        return -1;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(module, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(&ModelType);
        return -1;
    }
    return 0;
}
