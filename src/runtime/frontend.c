/* The request front end: the served models and their registry, the
 * serving state, submitting a door's request, and the error faces. */
#include "frontend_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inferd/alloc.h"
#include "inferd/clock.h"
#include "inferd/log.h"

#define COMP "frontend"
#define SECTIONS_MAX 4

typedef struct fe_model {
    char id[INFERD_REGISTRY_ID_MAX];
    char *path;
    int64_t created_s;
    atomic_bool load_failed;     /* its last load failed */
    atomic_int tmpl;             /* its chat template once loaded, else -1 */
    atomic_uint n_vocab, n_embd; /* once loaded, else 0 */
} fe_model;

typedef struct section {
    const char *name;
    inferd_fe_status_fn fn;
    void *ctx;
} section;

struct inferd_frontend {
    inferd_registry_model_opts model_opts;
    int64_t drain_grace_ms;
    fe_model *models;
    size_t n_models;
    bool tmpl_forced;
    inferd_chat_template tmpl_force;
    inferd_registry *reg;
    atomic_int state; /* inferd_fe_state */
    uint64_t t_start_ns;

    pthread_mutex_t mu; /* guards what follows */
    uint64_t n_done, n_tokens;
    section sections[SECTIONS_MAX];
};

struct inferd_fe_request {
    inferd_frontend *fe;
    const fe_model *model;
    inferd_registry_handle *h;
    inferd_request *req;
    const inferd_fe_door *door;
    inferd_field prompt_field;
};

const char *inferd_fe_state_name(inferd_fe_state s)
{
    static const char *const names[] = {"loading", "ready", "draining", "stopped"};
    return (unsigned)s < 4 ? names[s] : "?";
}

inferd_frontend_opts inferd_frontend_opts_default(void)
{
    inferd_frontend_opts o;
    memset(&o, 0, sizeof(o));
    o.model_opts = inferd_registry_model_opts_default();
    o.drain_grace_ms = 30000;
    return o;
}

/* ---- creation ---- */

/* The id a model is served as: its alias, or its file name without .gguf. */
static int model_id(const inferd_fe_model_cfg *m, char *out, size_t cap, inferd_error *err)
{
    const char *id = m->alias;
    size_t n;
    if (id && *id) {
        n = strlen(id);
    } else {
        const char *slash = strrchr(m->path, '/');
        id = slash ? slash + 1 : m->path;
        n = strlen(id);
        if (n > 5 && strcmp(id + n - 5, ".gguf") == 0)
            n -= 5;
    }
    if (n == 0 || n >= cap)
        return inferd_fail(err, INFERD_E_INVALID, "model '%s': its id must be 1..%zu bytes",
                           m->path, cap - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] < 0x21 || id[i] == '/' || (unsigned char)id[i] == 0x7f)
            return inferd_fail(err, INFERD_E_INVALID,
                               "model id '%.*s': no spaces, '/' or control characters", (int)n, id);
    memcpy(out, id, n);
    out[n] = '\0';
    return 0;
}

static int add_model(inferd_frontend *fe, const inferd_fe_model_cfg *cfg, inferd_error *err)
{
    fe_model *fm = &fe->models[fe->n_models];
    if (!cfg->path)
        return inferd_fail(err, INFERD_E_INVALID, "model %zu has no path", fe->n_models + 1);
    int rc = model_id(cfg, fm->id, sizeof(fm->id), err);
    if (rc < 0)
        return rc;
    for (size_t j = 0; j < fe->n_models; j++)
        if (strcmp(fe->models[j].id, fm->id) == 0)
            return inferd_fail(err, INFERD_E_INVALID,
                               "model id '%s' is given twice (use --alias to tell them apart)",
                               fm->id);
    struct stat st;
    if (stat(cfg->path, &st) != 0 || access(cfg->path, R_OK) != 0)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "model '%s': cannot read %s: %s", fm->id,
                                 cfg->path, strerror(errno));
    fm->path = inferd_strdup(cfg->path);
    if (!fm->path)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the models");
    fm->created_s = (int64_t)st.st_mtime;
    atomic_init(&fm->load_failed, false);
    atomic_init(&fm->tmpl, -1);
    atomic_init(&fm->n_vocab, 0u);
    atomic_init(&fm->n_embd, 0u);
    fe->n_models++;
    return 0;
}

static int parse_template(inferd_frontend *fe, const char *name, inferd_error *err)
{
    if (inferd_chat_template_parse(name, &fe->tmpl_force) == 0) {
        fe->tmpl_forced = true;
        return 0;
    }
    char names[512] = "";
    size_t len = 0;
    for (int t = 0; t < INFERD_CHAT_TEMPLATE_COUNT && len < sizeof(names); t++)
        len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", t ? ", " : "",
                                inferd_chat_template_name((inferd_chat_template)t));
    return inferd_fail(err, INFERD_E_INVALID, "chat-template: '%s' is not one of %s", name, names);
}

/* JSON values (request bodies, responses) allocate through inferd_malloc,
 * so fault injection reaches parsing too. inferd_free is free(): values
 * made before the switch are freed the same way. */
static void route_json_allocations(void) { json_set_alloc_funcs(inferd_malloc, inferd_free); }

int inferd_frontend_create(const inferd_frontend_opts *opts, inferd_frontend **out,
                           inferd_error *err)
{
    static pthread_once_t json_once = PTHREAD_ONCE_INIT;
    pthread_once(&json_once, route_json_allocations);
    *out = NULL;
    if (opts->n_models > INFERD_FE_MODELS_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "models: %zu given, at most %d", opts->n_models,
                           INFERD_FE_MODELS_MAX);
    inferd_frontend *fe = inferd_calloc(1, sizeof(*fe));
    if (!fe)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the front end");
    fe->model_opts = opts->model_opts;
    fe->drain_grace_ms = opts->drain_grace_ms;
    pthread_mutex_init(&fe->mu, NULL);
    atomic_init(&fe->state, INFERD_FE_LOADING);
    fe->t_start_ns = inferd_now_ns();
    int rc = 0;
    fe->models = inferd_calloc(opts->n_models ? opts->n_models : 1, sizeof(fe_model));
    if (!fe->models)
        rc = inferd_fail(err, INFERD_E_NOMEM, "no memory for the front end");
    if (rc == 0 && opts->chat_template)
        rc = parse_template(fe, opts->chat_template, err);
    for (size_t i = 0; rc == 0 && i < opts->n_models; i++)
        rc = add_model(fe, &opts->models[i], err);
    if (rc == 0) {
        inferd_registry_opts ro = inferd_registry_opts_default();
        ro.budget_bytes = opts->budget_bytes;
        ro.reaper_interval_ms = 1000;
        rc = inferd_registry_create(&ro, &fe->reg, err);
    }
    if (rc < 0) {
        atomic_store(&fe->state, INFERD_FE_STOPPED);
        inferd_frontend_destroy(fe);
        return rc;
    }
    *out = fe;
    return 0;
}

/* ---- models ---- */

static inferd_chat_template template_of(const inferd_frontend *fe, const inferd_model *m,
                                        int *detected)
{
    inferd_chat_template t;
    int rc = inferd_model_chat_template(m, &t);
    if (detected)
        *detected = rc;
    return fe->tmpl_forced ? fe->tmpl_force : t;
}

/* A handle to model @p fm, loading it if needed. A failed load (not a
 * refusal while unloading) marks the model until a load succeeds. */
static int get_model(inferd_frontend *fe, fe_model *fm, inferd_registry_handle **h,
                     inferd_error *err)
{
    if (atomic_load(&fe->state) >= INFERD_FE_DRAINING)
        return inferd_fail(err, INFERD_E_UNAVAILABLE, "the worker is shutting down");
    inferd_registry_model_opts mo = fe->model_opts;
    mo.path = fm->path;
    int rc = inferd_registry_get_or_load(fe->reg, fm->id, &mo, h, err);
    if (rc == 0 || (rc != INFERD_E_BUSY && rc != INFERD_E_UNAVAILABLE && rc != INFERD_E_OVERLOADED))
        atomic_store(&fm->load_failed, rc != 0);
    if (rc == INFERD_E_BUSY || rc == INFERD_E_UNAVAILABLE)
        return inferd_fail(err, INFERD_E_UNAVAILABLE, "model '%s' is being unloaded", fm->id);
    if (rc == 0) {
        const inferd_model *m = inferd_registry_handle_model(*h);
        atomic_store(&fm->tmpl, (int)template_of(fe, m, NULL));
        atomic_store(&fm->n_vocab, inferd_model_get_hparams(m)->n_vocab);
        atomic_store(&fm->n_embd, inferd_model_get_hparams(m)->n_embd);
    }
    return rc;
}

static void log_template(const inferd_frontend *fe, const fe_model *fm, const inferd_model *m)
{
    int detected;
    inferd_chat_template t = template_of(fe, m, &detected);
    if (fe->tmpl_forced)
        inferd_log_info(COMP, "model '%s': chat template %s (--chat-template)", fm->id,
                        inferd_chat_template_name(t));
    else if (detected == INFERD_E_NOT_FOUND)
        inferd_log_info(COMP, "model '%s' has no chat template: using chatml", fm->id);
    else if (detected < 0)
        inferd_log_warn(COMP, "model '%s': unknown chat template, using chatml", fm->id);
    else
        inferd_log_info(COMP, "model '%s': chat template %s", fm->id, inferd_chat_template_name(t));
}

int inferd_frontend_load(inferd_frontend *fe, size_t i, inferd_error *err)
{
    if (i >= fe->n_models)
        return inferd_fail(err, INFERD_E_MODEL_NOT_FOUND, "model %zu is not served", i);
    fe_model *fm = &fe->models[i];
    inferd_registry_handle *h = NULL;
    const uint64_t t0 = inferd_now_ns();
    int rc = get_model(fe, fm, &h, err);
    if (rc < 0)
        return rc;
    log_template(fe, fm, inferd_registry_handle_model(h));
    inferd_log_info(COMP, "model '%s' ready (%s) after %.0f ms", fm->id, fm->path,
                    (double)(inferd_now_ns() - t0) / 1e6);
    inferd_registry_release(fe->reg, h);
    return 0;
}

int inferd_frontend_unload(inferd_frontend *fe, size_t i, inferd_error *err)
{
    if (i >= fe->n_models)
        return inferd_fail(err, INFERD_E_MODEL_NOT_FOUND, "model %zu is not served", i);
    int rc = inferd_registry_unload(fe->reg, fe->models[i].id, true, err);
    return rc == INFERD_E_NOT_FOUND ? 0 : rc;
}

int inferd_frontend_load_models(inferd_frontend *fe, inferd_error *err)
{
    for (size_t i = 0; i < fe->n_models; i++) {
        int rc = inferd_frontend_load(fe, i, err);
        if (rc < 0) {
            char msg[sizeof(err->msg)];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            return inferd_fail(err, rc, "model '%s' (%s): %s", fe->models[i].id, fe->models[i].path,
                               msg);
        }
    }
    int expected = INFERD_FE_LOADING;
    atomic_compare_exchange_strong(&fe->state, &expected, INFERD_FE_READY);
    return 0;
}

size_t inferd_frontend_n_models(const inferd_frontend *fe) { return fe->n_models; }

void inferd_frontend_model(inferd_frontend *fe, size_t i, inferd_fe_model_info *out)
{
    memset(out, 0, sizeof(*out));
    if (i >= fe->n_models)
        return;
    const fe_model *fm = &fe->models[i];
    out->id = fm->id;
    out->path = fm->path;
    out->created_s = fm->created_s;
    out->load_failed = atomic_load(&fm->load_failed);
    int t = atomic_load(&fm->tmpl);
    out->chat_template = t >= 0 ? inferd_chat_template_name((inferd_chat_template)t) : NULL;
    out->n_vocab = atomic_load(&fm->n_vocab);
    out->n_embd = atomic_load(&fm->n_embd);
    inferd_registry_model_info info[INFERD_FE_MODELS_MAX];
    size_t n = 0;
    inferd_registry_list(fe->reg, info, INFERD_FE_MODELS_MAX, &n);
    for (size_t k = 0; k < n && k < INFERD_FE_MODELS_MAX; k++)
        if (strcmp(info[k].id, fm->id) == 0) {
            out->loaded = true;
            out->state = info[k].state;
            out->weight_bytes = info[k].weight_bytes;
            out->state_bytes = info[k].state_bytes;
            out->n_handles = info[k].n_handles;
        }
}

int inferd_frontend_find(const inferd_frontend *fe, const char *id, inferd_error *err)
{
    if (!id && fe->n_models == 0)
        return inferd_fail_param(err, INFERD_E_MODEL_NOT_FOUND, "model",
                                 "no language model is served here");
    if (!id)
        return 0;
    for (size_t i = 0; i < fe->n_models; i++)
        if (strcmp(fe->models[i].id, id) == 0)
            return (int)i;
    return inferd_fail_param(err, INFERD_E_MODEL_NOT_FOUND, "model",
                             "model '%s' is not served here", id);
}

int inferd_frontend_sched_stats(inferd_frontend *fe, size_t i, inferd_sched_stats *out)
{
    if (i >= fe->n_models)
        return INFERD_E_NOT_FOUND;
    return inferd_registry_sched_stats(fe->reg, fe->models[i].id, out) == 0 ? 0
                                                                            : INFERD_E_NOT_FOUND;
}

void inferd_frontend_registry_metrics(inferd_frontend *fe, inferd_registry_metrics *out)
{
    inferd_registry_get_metrics(fe->reg, out);
}

void inferd_frontend_capacity(inferd_frontend *fe, uint64_t *out_memory_bytes,
                              uint32_t *out_slots_total)
{
    inferd_registry_metrics rm;
    inferd_registry_get_metrics(fe->reg, &rm);
    uint32_t slots = 0;
    for (size_t i = 0; i < fe->n_models; i++) {
        inferd_sched_stats st;
        if (inferd_frontend_sched_stats(fe, i, &st) == 0)
            slots += st.n_slots;
    }
    *out_memory_bytes = rm.bytes_resident;
    *out_slots_total = slots;
}

uint32_t inferd_frontend_request_capacity(const inferd_frontend *fe)
{
    const inferd_sched_opts *so = &fe->model_opts.sched;
    uint32_t per_model = (so->n_slots ? so->n_slots : 4) + (so->n_queue_max ? so->n_queue_max : 64);
    return per_model * (uint32_t)fe->n_models;
}

void inferd_frontend_counts(inferd_frontend *fe, uint64_t *out_requests, uint64_t *out_tokens)
{
    pthread_mutex_lock(&fe->mu);
    *out_requests = fe->n_done;
    *out_tokens = fe->n_tokens;
    pthread_mutex_unlock(&fe->mu);
}

inferd_fe_state inferd_frontend_state(const inferd_frontend *fe)
{
    return (inferd_fe_state)atomic_load(&fe->state);
}

double inferd_frontend_uptime_s(const inferd_frontend *fe)
{
    return (double)(inferd_now_ns() - fe->t_start_ns) / 1e9;
}

int inferd_frontend_set_status(inferd_frontend *fe, const char *name, inferd_fe_status_fn fn,
                               void *ctx)
{
    int rc = INFERD_E_QUOTA;
    pthread_mutex_lock(&fe->mu);
    section *free_slot = NULL;
    for (size_t i = 0; i < SECTIONS_MAX; i++) {
        section *s = &fe->sections[i];
        if (s->name && strcmp(s->name, name) == 0) {
            free_slot = s;
            break;
        }
        if (!s->name && !free_slot)
            free_slot = s;
    }
    if (free_slot) {
        free_slot->name = fn ? name : NULL;
        free_slot->fn = fn;
        free_slot->ctx = ctx;
        rc = 0;
    }
    pthread_mutex_unlock(&fe->mu);
    return rc;
}

void inferd_frontend_status_sections(inferd_frontend *fe, json_t *into)
{
    pthread_mutex_lock(&fe->mu);
    for (size_t i = 0; i < SECTIONS_MAX; i++) {
        section *s = &fe->sections[i];
        if (s->name) {
            json_t *v = s->fn(s->ctx);
            if (v)
                json_object_set_new(into, s->name, v);
        }
    }
    pthread_mutex_unlock(&fe->mu);
}

/* ---- drain ---- */

typedef struct drain_job {
    inferd_frontend *fe;
    inferd_registry_handle *h;
    pthread_t th;
} drain_job;

static void *drain_main(void *arg)
{
    drain_job *j = arg;
    inferd_sched_drain(inferd_registry_handle_sched(j->h), j->fe->drain_grace_ms);
    return NULL;
}

void inferd_frontend_drain(inferd_frontend *fe)
{
    atomic_store(&fe->state, INFERD_FE_DRAINING);
    /* Drain every loaded model at once, each with the whole grace period. */
    drain_job jobs[INFERD_FE_MODELS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < fe->n_models; i++) {
        inferd_sched_stats st;
        if (inferd_frontend_sched_stats(fe, i, &st) != 0)
            continue;
        inferd_registry_model_opts mo = fe->model_opts;
        mo.path = fe->models[i].path;
        jobs[n].fe = fe;
        if (inferd_registry_get_or_load(fe->reg, fe->models[i].id, &mo, &jobs[n].h, NULL) != 0)
            continue;
        if (pthread_create(&jobs[n].th, NULL, drain_main, &jobs[n]) != 0) {
            drain_main(&jobs[n]);
            inferd_registry_release(fe->reg, jobs[n].h);
            continue;
        }
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        pthread_join(jobs[i].th, NULL);
        inferd_registry_release(fe->reg, jobs[i].h);
    }
    atomic_store(&fe->state, INFERD_FE_STOPPED);
}

void inferd_frontend_destroy(inferd_frontend *fe)
{
    if (!fe)
        return;
    if (atomic_load(&fe->state) != INFERD_FE_STOPPED) {
        fe->drain_grace_ms = 0;
        inferd_frontend_drain(fe);
    }
    inferd_registry_destroy(fe->reg);
    for (size_t i = 0; fe->models && i < fe->n_models; i++)
        inferd_free(fe->models[i].path);
    inferd_free(fe->models);
    pthread_mutex_destroy(&fe->mu);
    inferd_free(fe);
}

/* ---- requests ---- */

/* Render @p in's messages with the model's template: 0 and *out
 * (inferd_free), or the error about the messages. */
static int render(const inferd_frontend *fe, const inferd_fe_input *in, const inferd_model *m,
                  char **out, size_t *len, inferd_error *err)
{
    inferd_error e = {0};
    int rc = inferd_chat_render(template_of(fe, m, NULL), in->messages, in->n_messages, true, out,
                                len, &e);
    if (rc == INFERD_E_NOMEM)
        return inferd_fail(err, rc, "%s", e.msg);
    if (rc < 0)
        return inferd_fail_param(err, INFERD_E_INVALID,
                                 inferd__fe_spelled(in->door, INFERD_F_MESSAGES), "%s", e.msg);
    return 0;
}

/* The door's name of the field a scheduler error is about: the prompt
 * (as the door took it) for a prompt too long or a "prompt" error. */
static const char *param_of(const inferd_fe_request *r, int code, const char *param)
{
    if (code == INFERD_E_CONTEXT_LENGTH || (param && strcmp(param, "prompt") == 0))
        return inferd__fe_spelled(r->door, r->prompt_field);
    return NULL;
}

/* A scheduler's refusal of @p r's submission, as the front end raises it. */
static int submit_error(const inferd_fe_request *r, int rc, const inferd_error *e,
                        inferd_error *err)
{
    const char *id = r->model->id;
    if (rc == INFERD_E_OVERLOADED)
        return inferd_fail(err, rc, "model '%s' is overloaded: %s", id, e->msg);
    if (rc == INFERD_E_UNAVAILABLE)
        return inferd_fail(err, rc, "model '%s' is not serving: %s", id, e->msg);
    return inferd_fail_param(err, rc, param_of(r, rc, e->param), "%s", e->msg);
}

int inferd_fe_submit(inferd_frontend *fe, const inferd_fe_input *in,
                     inferd_request_notify_fn on_event, void *ctx, inferd_fe_request **out,
                     inferd_error *err)
{
    *out = NULL;
    int i = inferd_frontend_find(fe, in->model, err);
    if (i < 0) {
        if (err)
            snprintf(err->param, sizeof(err->param), "%s",
                     inferd__fe_spelled(in->door, INFERD_F_MODEL));
        return i;
    }
    inferd_fe_request *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    r->fe = fe;
    r->model = &fe->models[i];
    r->door = in->door;
    r->prompt_field = in->prompt_field;
    int rc = get_model(fe, &fe->models[i], &r->h, err);
    if (rc < 0 && inferd_error_http_status(rc) < 500) {
        /* A model file that does not load (say, one being replaced on disk)
         * is the server's trouble, not the request's: not a 4xx. */
        char msg[sizeof(err->msg)] = "";
        if (err)
            snprintf(msg, sizeof(msg), "%s", err->msg);
        rc = inferd_fail(err, INFERD_E_UNAVAILABLE, "model '%s' cannot be loaded from '%s': %s",
                         fe->models[i].id, fe->models[i].path, msg);
    }
    if (rc < 0) {
        inferd_free(r);
        return rc;
    }
    inferd_request_params p = in->params;
    char *rendered = NULL;
    if (in->messages) {
        rc = render(fe, in, inferd_registry_handle_model(r->h), &rendered, &p.text_len, err);
        p.text = rendered;
        p.parse_special = true;
    } else if (in->tokens) {
        p.tokens = in->tokens;
        p.n_tokens = in->n_tokens;
    } else {
        p.text = in->text;
        p.text_len = in->text_len;
    }
    p.add_special = true;
    p.on_event = on_event;
    p.on_event_ctx = ctx;
    if (rc == 0) {
        inferd_error e = {0};
        rc = inferd_sched_submit(inferd_registry_handle_sched(r->h), &p, &r->req, &e);
        if (rc < 0)
            submit_error(r, rc, &e, err);
    }
    inferd_free(rendered);
    if (rc < 0) {
        inferd_registry_release(fe->reg, r->h);
        inferd_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int inferd_fe_request_next(inferd_fe_request *r, inferd_event *ev, int64_t wait_ms)
{
    int rc = inferd_request_next(r->req, ev, wait_ms);
    if (rc == 0 && ev->type == INFERD_EVENT_DONE) {
        pthread_mutex_lock(&r->fe->mu);
        r->fe->n_done++;
        r->fe->n_tokens += ev->n_gen;
        pthread_mutex_unlock(&r->fe->mu);
    }
    return rc;
}

void inferd_fe_event_error(const inferd_fe_request *r, const inferd_event *ev, inferd_error *out)
{
    inferd_fail_param(out, ev->code, param_of(r, ev->code, ev->param), "%s",
                      ev->message ? ev->message : "failed");
}

void inferd_fe_request_cancel(inferd_fe_request *r) { inferd_request_cancel(r->req); }

void inferd_fe_request_release(inferd_fe_request *r)
{
    if (!r)
        return;
    inferd_request_release(r->req);
    inferd_registry_release(r->fe->reg, r->h);
    inferd_free(r);
}

const char *inferd_fe_request_model(const inferd_fe_request *r) { return r->model->id; }

int inferd_fe_request_outputs(inferd_fe_request *r, inferd_request_outputs *out)
{
    return inferd_request_outputs_get(r->req, out);
}

const inferd_vocab *inferd_fe_request_vocab(const inferd_fe_request *r)
{
    return inferd_model_get_vocab(inferd_registry_handle_model(r->h));
}

/* ---- error faces ---- */

unsigned inferd_fe_error_status(const inferd_error *e)
{
    return (unsigned)inferd_error_http_status(e->code);
}

json_t *inferd_fe_error_openai(const inferd_error *e)
{
    return json_pack("{s:{s:s,s:s,s:o,s:s}}", "error", "message", e->msg, "type",
                     inferd_error_openai_type(e->code), "param",
                     e->param[0] ? json_string(e->param) : json_null(), "code",
                     inferd_error_http_code(e->code));
}

json_t *inferd_fe_error_kserve(const inferd_error *e)
{
    return json_pack("{s:s}", "error", e->msg);
}

json_t *inferd_fe_error_nats(const inferd_error *e, const char *request_id)
{
    json_t *o = json_pack("{s:o,s:s,s:s,s:s}", "requestId",
                          request_id ? json_string(request_id) : json_null(), "type", "error",
                          "code", inferd_error_nats_code(e->code), "error", e->msg);
    if (o && e->param[0])
        json_object_set_new(o, "param", json_string(e->param));
    return o;
}
