/* KServe v2 inference runs for doors other than HTTP (kvrun.h): a request
 * read as ktensor.c reads it, submitted through the front end, and its
 * events turned into callbacks on the pump's threads.
 *
 * A run is queued on the pump when the scheduler says its events are
 * ready (on_event, on the scheduler thread: it only queues), and a pump
 * thread reads them (inferd_fe_request_next without waiting) and calls
 * back. A run is in the pump's hands while queued or being read (busy);
 * its release waits for neither, then releases the front-end request,
 * which waits for the scheduler's last on_event. */
#include "kvrun.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/buf.h"
#include "inferd/log.h"

#include "doors.h"
#include "ktensor.h"
#include "server_internal.h"

#define KV_JOBS_MAX 64
#define KV_THREADS_MAX 16
#define KV_TEXT_MAX ((size_t)64 << 20)

typedef struct kv_job {
    void (*fn)(void *ctx);
    void *ctx;
} kv_job;

struct kv_pump {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work for the threads */
    pthread_cond_t idle_cv; /* a run left the pump's hands */
    kv_run *head, *tail;    /* runs whose events wait to be read */
    kv_job jobs[KV_JOBS_MAX];
    uint32_t job_head, job_n;
    bool stop;
    pthread_t th[KV_THREADS_MAX];
    uint32_t n_th;
};

typedef enum run_stage {
    RS_NEW = 0,  /* being started: nothing for the pump yet */
    RS_SUBMIT,   /* to be submitted on a pump thread */
    RS_RUNNING,  /* submitted: events come */
    RS_FINISHED, /* its answer is made (identity) or its error known: done() to call */
    RS_ENDED,    /* done() was called */
} run_stage;

struct kv_run {
    kv_pump *p;
    kv_env env;
    kv_run_cbs cbs;
    void *ctx;
    char model[INFERD_REGISTRY_ID_MAX];
    bool stream;

    /* The request: its tensors (views of bin or of shared memory, held to
     * the end), the outputs asked for, and the front end's input. */
    kt_req r;
    char *bin; /* owned copy */
    size_t bin_len;
    bool want[KT_LLM_OUTS];
    inferd_fe_input in;
    bool have_in;
    json_t *fields;
    int32_t *ids;
    /* Its front-end request, released as soon as it ended (before done():
     * a client that has its answer may unload the model at once). Set and
     * cleared under fr_mu, which cancel takes (never the pump's mu, which
     * the scheduler's on_event takes). */
    pthread_mutex_t fr_mu;
    inferd_fe_request *fr;

    /* Collected output (not streaming: all of it; streaming: the DONE
     * event's held-back text). */
    inferd_buf text, out_ids;
    json_t *resp; /* RS_FINISHED with an answer (identity) */
    inferd_buf resp_bin;
    inferd_error err; /* RS_FINISHED without one */

    /* Under the pump's mu. */
    run_stage stage;
    kv_run *next;
    bool queued, busy, again, releasing, cancelled;
    pthread_t busy_thread; /* the pump thread reading it, while busy */
    bool free_when_idle;   /* released from its own callback */
    atomic_bool gone;      /* released: no more callbacks (read unlocked by the pump) */
};

/* ---- the pump ---- */

/* Queue @p r to be read (pump mu held). */
static void enqueue_locked(kv_run *r)
{
    kv_pump *p = r->p;
    if (r->queued || r->releasing)
        return;
    r->queued = true;
    r->next = NULL;
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    pthread_cond_signal(&p->cv);
}

/* Take @p r out of the pump's list if it is there (pump mu held). */
static void dequeue_locked(kv_run *r)
{
    kv_pump *p = r->p;
    if (!r->queued)
        return;
    kv_run **pp = &p->head, *prev = NULL;
    while (*pp != r) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = r->next;
    if (p->tail == r)
        p->tail = prev;
    r->queued = false;
}

static void on_event(void *ctx)
{
    kv_run *r = ctx;
    pthread_mutex_lock(&r->p->mu);
    enqueue_locked(r);
    pthread_mutex_unlock(&r->p->mu);
}

static void call_done(kv_run *r, json_t *resp, const inferd_buf *bin, const inferd_error *e)
{
    r->cbs.done(r->ctx, resp, bin ? bin->p : NULL, bin ? bin->len : 0, e);
}

/* Let go of r's front-end request (its slot and its model handle). */
static void drop_request(kv_run *r)
{
    pthread_mutex_lock(&r->fr_mu);
    inferd_fe_request *fr = r->fr;
    r->fr = NULL;
    pthread_mutex_unlock(&r->fr_mu);
    inferd_fe_request_release(fr);
}

/* Build the answer of r's DONE event @p ev, let go of its request, and
 * send the answer. */
static void answer(kv_run *r, const inferd_event *ev)
{
    inferd_error e = {0};
    json_t *resp = NULL;
    inferd_buf bin = INFERD_BUF_INIT(KV_TEXT_MAX);
    const kt_src src = {r->bin, r->bin_len, r->env.regions};
    const kt_llm_result res = {inferd_fe_request_model(r->fr),
                               r->fr,
                               r->text.p,
                               r->text.len,
                               (const int32_t *)r->out_ids.p,
                               r->out_ids.len / sizeof(int32_t),
                               ev};
    const int rc = inferd__kt_llm_response(&src, &r->r, r->want, &res, &resp, &bin, &e);
    drop_request(r);
    if (rc < 0)
        call_done(r, NULL, NULL, &e);
    else
        call_done(r, resp, &bin, NULL);
    json_decref(resp);
    inferd_buf_free(&bin);
}

static void submit(kv_run *r);
static void run_free(kv_run *r);

/* Read what r has for its door (a pump thread; r busy). @return true
 * when r ended. */
static bool pump_run(kv_run *r, run_stage stage)
{
    if (stage == RS_SUBMIT) {
        submit(r);
        return false;
    }
    if (stage == RS_FINISHED) {
        if (r->resp)
            call_done(r, r->resp, &r->resp_bin, NULL);
        else
            call_done(r, NULL, NULL, &r->err);
        return true;
    }
    if (stage != RS_RUNNING)
        return false;
    for (;;) {
        inferd_event ev;
        int rc = inferd_fe_request_next(r->fr, &ev, 0);
        if (rc < 0)
            return rc == INFERD_E_NOT_FOUND;
        if (ev.type == INFERD_EVENT_TOKEN) {
            if (r->stream) {
                r->cbs.token(r->ctx, ev.token, ev.index, ev.text, ev.text_len);
                if (atomic_load(&r->gone))
                    return false; /* let go of in the callback */
                continue;
            }
            bool ok = inferd_buf_add(&r->text, ev.text, ev.text_len) == 0;
            if (ok && r->want[KT_OUTPUT_IDS])
                ok = inferd_buf_add(&r->out_ids, &ev.token, sizeof(ev.token)) == 0;
            if (!ok) {
                inferd_fe_request_cancel(r->fr);
                inferd_fail(&r->err, INFERD_E_NOMEM, "no memory for the generated output");
            }
            continue;
        }
        inferd_error e = r->err;
        if (ev.type == INFERD_EVENT_DONE && !e.code &&
            inferd_buf_add(&r->text, ev.text, ev.text_len) == 0) {
            answer(r, &ev);
            return true;
        }
        if (ev.type == INFERD_EVENT_ERROR)
            inferd_fe_event_error(r->fr, &ev, &e);
        else if (!e.code)
            inferd_fail(&e, INFERD_E_NOMEM, "no memory for the generated output");
        drop_request(r);
        call_done(r, NULL, NULL, &e);
        return true;
    }
}

static void *pump_main(void *arg)
{
    kv_pump *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && !p->head && p->job_n == 0)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->job_n > 0) {
            kv_job j = p->jobs[p->job_head];
            p->job_head = (p->job_head + 1) % KV_JOBS_MAX;
            p->job_n--;
            pthread_mutex_unlock(&p->mu);
            j.fn(j.ctx);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (!p->head) { /* stop, and nothing left */
            break;
        }
        kv_run *r = p->head;
        p->head = r->next;
        if (!p->head)
            p->tail = NULL;
        r->queued = false;
        if (r->busy) { /* another thread reads it: it looks again when done */
            r->again = true;
            continue;
        }
        r->busy = true;
        r->busy_thread = pthread_self();
        do { /* one reader at a time, in order */
            r->again = false;
            const run_stage stage = r->stage;
            pthread_mutex_unlock(&p->mu);
            const bool ended = pump_run(r, stage);
            pthread_mutex_lock(&p->mu);
            if (ended)
                r->stage = RS_ENDED;
        } while (r->again && !r->releasing);
        r->busy = false;
        pthread_cond_broadcast(&p->idle_cv);
        if (r->free_when_idle) { /* its door let go of it in a callback */
            dequeue_locked(r);
            pthread_mutex_unlock(&p->mu);
            run_free(r);
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int inferd__kv_pump_create(uint32_t n_threads, kv_pump **out, inferd_error *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > KV_THREADS_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "pump threads: 1 to %d", KV_THREADS_MAX);
    kv_pump *p = inferd_calloc(1, sizeof(*p));
    if (!p)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the pump");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->idle_cv, NULL);
    for (; p->n_th < n_threads; p->n_th++)
        if (pthread_create(&p->th[p->n_th], NULL, pump_main, p) != 0) {
            inferd__kv_pump_destroy(p);
            return inferd_fail(err, INFERD_E_INTERNAL, "cannot start the pump's threads");
        }
    *out = p;
    return 0;
}

void inferd__kv_pump_destroy(kv_pump *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->n_th; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->idle_cv);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    inferd_free(p);
}

int inferd__kv_post(kv_pump *p, void (*fn)(void *ctx), void *ctx, inferd_error *err)
{
    pthread_mutex_lock(&p->mu);
    if (p->job_n == KV_JOBS_MAX || p->stop) {
        pthread_mutex_unlock(&p->mu);
        return inferd_fail(err, INFERD_E_OVERLOADED,
                           "too many requests waiting for a model to load: retry later");
    }
    p->jobs[(p->job_head + p->job_n) % KV_JOBS_MAX] = (kv_job){fn, ctx};
    p->job_n++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* ---- runs ---- */

static void run_free(kv_run *r)
{
    inferd_fe_request_release(r->fr);
    pthread_mutex_destroy(&r->fr_mu);
    if (r->have_in)
        inferd_fe_input_free(&r->in);
    json_decref(r->fields);
    inferd_free(r->ids);
    inferd__kt_free(&r->r);
    inferd_free(r->bin);
    inferd_buf_free(&r->text);
    inferd_buf_free(&r->out_ids);
    json_decref(r->resp);
    inferd_buf_free(&r->resp_bin);
    inferd_free(r);
}

/* Submit r's input (any thread; r not yet visible to on_event). */
static int submit_now(kv_run *r, inferd_error *err)
{
    inferd_fe_request *fr = NULL;
    int rc = inferd_fe_submit(r->env.fe, &r->in, on_event, r, &fr, err);
    pthread_mutex_lock(&r->fr_mu);
    r->fr = fr;
    pthread_mutex_unlock(&r->fr_mu);
    /* The input is no longer needed (submit copied the prompt and the stop
     * strings). */
    inferd_fe_input_free(&r->in);
    r->have_in = false;
    json_decref(r->fields);
    r->fields = NULL;
    inferd_free(r->ids);
    r->ids = NULL;
    return rc;
}

/* A pump thread: submit r (its model may have to load first). */
static void submit(kv_run *r)
{
    kv_pump *p = r->p;
    inferd_error e = {0};
    pthread_mutex_lock(&p->mu);
    const bool cancelled = r->cancelled;
    pthread_mutex_unlock(&p->mu);
    int rc = cancelled ? inferd_fail(&e, INFERD_E_CANCELLED, "the request was cancelled")
                       : submit_now(r, &e);
    pthread_mutex_lock(&p->mu);
    if (rc < 0) {
        r->err = e;
        r->stage = RS_FINISHED;
        enqueue_locked(r);
    } else {
        r->stage = RS_RUNNING;
        enqueue_locked(r);  /* events that came before the stage changed */
        if (r->cancelled) { /* cancelled while it was submitted */
            pthread_mutex_unlock(&p->mu);
            inferd__kv_cancel(r);
            return;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* Is model @p i running (no load to wait for)? */
static bool model_running(const kv_env *env, size_t i)
{
    inferd_sched_stats st;
    return inferd_frontend_sched_stats(env->fe, i, &st) == 0 && st.state == INFERD_SCHED_READY;
}

int inferd__kv_start(kv_pump *p, const kv_env *env, const char *m, json_t *body, const char *bin,
                     size_t bin_len, bool stream, const kv_run_cbs *cbs, void *ctx, kv_run **out,
                     inferd_error *err)
{
    *out = NULL;
    kv_run *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the request");
    r->p = p;
    pthread_mutex_init(&r->fr_mu, NULL);
    r->env = *env;
    r->cbs = *cbs;
    r->ctx = ctx;
    r->stream = stream;
    r->text = (inferd_buf)INFERD_BUF_INIT(KV_TEXT_MAX);
    r->out_ids = (inferd_buf)INFERD_BUF_INIT(KV_TEXT_MAX);
    r->resp_bin = (inferd_buf)INFERD_BUF_INIT(KV_TEXT_MAX);
    if (bin_len && !(r->bin = inferd_malloc(bin_len))) {
        inferd_free(r);
        return inferd_fail(err, INFERD_E_NOMEM, "no memory for the request's tensors");
    }
    if (bin_len)
        memcpy(r->bin, bin, bin_len);
    r->bin_len = bin_len;
    const kt_src src = {r->bin, r->bin_len, env->regions};
    int rc = 0;
    if (inferd__kv_is_identity(env, m)) {
        snprintf(r->model, sizeof(r->model), "%s", m);
        rc = inferd__kt_identity(&src, body, m, &r->resp, &r->resp_bin, err);
        if (rc < 0)
            goto fail;
        pthread_mutex_lock(&p->mu);
        r->stage = RS_FINISHED;
        enqueue_locked(r);
        pthread_mutex_unlock(&p->mu);
        *out = r;
        return 0;
    }
    int i = inferd__kv_find(env, m, "RepositoryIndex", err);
    if (i < 0) {
        rc = i;
        goto fail;
    }
    inferd_fe_model_info mi;
    inferd_frontend_model(env->fe, (size_t)i, &mi);
    snprintf(r->model, sizeof(r->model), "%s", mi.id);
    if ((rc = inferd__kt_llm_input(&src, body, r->model, &r->r, r->want, &r->in, &r->fields,
                                   &r->ids, err)) < 0)
        goto fail;
    r->have_in = true;
    r->in.stream = false;
    if (model_running(env, (size_t)i)) {
        if ((rc = submit_now(r, err)) < 0)
            goto fail;
        pthread_mutex_lock(&p->mu);
        r->stage = RS_RUNNING;
        enqueue_locked(r); /* events that came before the stage was set */
        pthread_mutex_unlock(&p->mu);
    } else { /* a load first: on a pump thread */
        pthread_mutex_lock(&p->mu);
        r->stage = RS_SUBMIT;
        enqueue_locked(r);
        pthread_mutex_unlock(&p->mu);
    }
    *out = r;
    return 0;
fail:
    run_free(r);
    return rc;
}

void inferd__kv_cancel(kv_run *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->p->mu);
    r->cancelled = true; /* not submitted yet: it will not be */
    pthread_mutex_unlock(&r->p->mu);
    pthread_mutex_lock(&r->fr_mu);
    if (r->fr)
        inferd_fe_request_cancel(r->fr);
    pthread_mutex_unlock(&r->fr_mu);
}

void inferd__kv_release(kv_run *r)
{
    if (!r)
        return;
    kv_pump *p = r->p;
    atomic_store(&r->gone, true);
    pthread_mutex_lock(&p->mu);
    r->releasing = true;
    r->cancelled = true;
    if (r->busy && pthread_equal(r->busy_thread, pthread_self())) {
        /* From one of its own callbacks: the pump frees it when the
         * callback returns (no other callback comes). */
        r->free_when_idle = true;
        pthread_mutex_unlock(&p->mu);
        inferd__kv_cancel(r);
        return;
    }
    while (r->busy)
        pthread_cond_wait(&p->idle_cv, &p->mu);
    dequeue_locked(r);
    pthread_mutex_unlock(&p->mu);
    run_free(r); /* the front-end request's release waits for its last on_event */
}
