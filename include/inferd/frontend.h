/* The request front end: the one way in that every door (HTTP with its
 * OpenAI and KServe routes, NATS, and the doors to come) uses to run a
 * request. A door maps its wire format onto the field table below, and the
 * front end does the rest: it checks the fields, resolves the model (one
 * registry handle per request), renders chat messages with the template
 * detected when the model was loaded, submits to the model's scheduler and
 * hands the events back. Every error it raises carries an INFERD_E_* code
 * and the field at fault, so a door answers with the faces of the one
 * error table (inferd_fe_error_*), never with codes of its own.
 *
 * The front end owns the served models (their ids, paths and the registry
 * that loads them) and the serving state: LOADING (created) -> READY
 * (inferd_frontend_load_models loaded every model) -> DRAINING
 * (inferd_frontend_drain: new requests get INFERD_E_UNAVAILABLE, running
 * ones finish within the grace period) -> STOPPED.
 *
 * JSON values allocate through inferd_malloc once a front end was created
 * (json_set_alloc_funcs): free what jansson returns with inferd_free.
 *
 * Threads: every function may be called from any thread (doors call them
 * from their connection and message threads), except create, load_models,
 * drain and destroy, which belong to the owner. Doors never get a mutable
 * model: only ids, vocabularies and figures.
 */
#ifndef INFERD_FRONTEND_H
#define INFERD_FRONTEND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/chat.h"
#include "inferd/error.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"

#define INFERD_FE_MODELS_MAX 16
#define INFERD_FE_SESSION_ID_MAX 256

typedef struct inferd_frontend inferd_frontend;

/* ------------------------------------------------------------------------ */
/* Life cycle */

typedef enum inferd_fe_state {
    INFERD_FE_LOADING = 0,
    INFERD_FE_READY,
    INFERD_FE_DRAINING,
    INFERD_FE_STOPPED,
} inferd_fe_state;

/** "loading", "ready", "draining", "stopped". Thread: any. */
const char *inferd_fe_state_name(inferd_fe_state s);

typedef struct inferd_fe_model_cfg {
    const char *path;  /* GGUF file; borrowed for create */
    const char *alias; /* id to serve it as; NULL: the file name
                                    * without ".gguf" */
} inferd_fe_model_cfg;

typedef struct inferd_frontend_opts {
    inferd_fe_model_cfg models[INFERD_FE_MODELS_MAX];
    size_t
        n_models; /* the first is the default model; 0: none (a server of built-in models only) */
    inferd_registry_model_opts model_opts; /* every model's scheduler options
                                    * and keep-alive (path ignored) */
    uint64_t budget_bytes;                 /* registry budget; 0: none */
    int64_t drain_grace_ms;                /* default 30000; < 0: no limit */
    const char *chat_template;             /* NULL: each model's own (detected at
                                    * load); else a name for every model
                                    * (inferd_chat_template_parse) */
} inferd_frontend_opts;

/** Defaults as documented on each field; no models. */
inferd_frontend_opts inferd_frontend_opts_default(void);

/**
 * Check @p opts (model ids, readable files, the template name) and create
 * the registry (state LOADING). Nothing is loaded yet.
 * @return 0; INFERD_E_INVALID (an option: the message names it),
 * INFERD_E_IO (a model file cannot be read), INFERD_E_NOMEM.
 */
int inferd_frontend_create(const inferd_frontend_opts *opts, inferd_frontend **out,
                           inferd_error *err);

/** Load every model in order; READY once all are. @return 0 or the first
 * load's error (the message names the model). */
int inferd_frontend_load_models(inferd_frontend *fe, inferd_error *err);

/** DRAINING: refuse new requests, let every loaded model's scheduler finish
 * what it runs within the grace period (in parallel), then STOPPED. */
void inferd_frontend_drain(inferd_frontend *fe);

/** Drain with no grace if not stopped, unload the models and free. Accepts
 * NULL. No door may use @p fe afterwards. */
void inferd_frontend_destroy(inferd_frontend *fe);

inferd_fe_state inferd_frontend_state(const inferd_frontend *fe);
/** Monotonic seconds since create. */
double inferd_frontend_uptime_s(const inferd_frontend *fe);

/* ------------------------------------------------------------------------ */
/* Served models */

typedef struct inferd_fe_model_info {
    const char *id; /* valid as long as the front end */
    const char *path;
    int64_t created_s;           /* the file's mtime */
    bool load_failed;            /* its last load failed */
    bool loaded;                 /* in the registry (any state) */
    inferd_registry_state state; /* when loaded: */
    uint64_t weight_bytes, state_bytes;
    uint32_t n_handles;        /* requests holding it */
    const char *chat_template; /* its template's name once it was loaded
                                    * (static), else NULL */
    uint32_t n_vocab, n_embd;  /* once it was loaded, else 0 */
} inferd_fe_model_info;

size_t inferd_frontend_n_models(const inferd_frontend *fe);
/** Model @p i (< n_models) as it is now. */
void inferd_frontend_model(inferd_frontend *fe, size_t i, inferd_fe_model_info *out);
/** The index of model @p id; NULL: the default (0). @return the index, or
 * INFERD_E_MODEL_NOT_FOUND (err names it, param "model"). */
int inferd_frontend_find(const inferd_frontend *fe, const char *id, inferd_error *err);
/** Load model @p i if it is not (keeping it loaded as its keep-alive says).
 * @return 0; INFERD_E_UNAVAILABLE (draining, or the model is being
 * unloaded); the load's error (INFERD_E_QUOTA, _IO, _FORMAT, ...). */
int inferd_frontend_load(inferd_frontend *fe, size_t i, inferd_error *err);
/** Unload model @p i, waiting for its running requests. 0 when it was not
 * loaded. */
int inferd_frontend_unload(inferd_frontend *fe, size_t i, inferd_error *err);
/** Model @p i's scheduler figures: 0, or INFERD_E_NOT_FOUND (not loaded). */
int inferd_frontend_sched_stats(inferd_frontend *fe, size_t i, inferd_sched_stats *out);
void inferd_frontend_registry_metrics(inferd_frontend *fe, inferd_registry_metrics *out);
/** Bytes the loaded models take (weights + state) and their slots. */
void inferd_frontend_capacity(inferd_frontend *fe, uint64_t *out_memory_bytes,
                              uint32_t *out_slots_total);
/** Requests the models' queues and slots hold at once, as configured. */
uint32_t inferd_frontend_request_capacity(const inferd_frontend *fe);
/** Generation requests finished (DONE) through the front end, and the
 * tokens they generated. */
void inferd_frontend_counts(inferd_frontend *fe, uint64_t *out_requests, uint64_t *out_tokens);

/** A door's part of the status reports: fn(ctx) returns a new JSON value
 * (or NULL), called from any thread while registered. */
typedef json_t *(*inferd_fe_status_fn)(void *ctx);
/** Register (or, with fn NULL, remove) the section @p name (static). At
 * most 4. @return 0 or INFERD_E_QUOTA. */
int inferd_frontend_set_status(inferd_frontend *fe, const char *name, inferd_fe_status_fn fn,
                               void *ctx);
/** Add every registered section to object @p into. */
void inferd_frontend_status_sections(inferd_frontend *fe, json_t *into);

/* ------------------------------------------------------------------------ */
/* The request field table */

/* Every request field any door knows, by its canonical name (the OpenAI
 * spelling). The table in fields.c gives each its type, range, default and
 * where it goes; a door lists the ones it takes, spelled its own way. */
typedef enum inferd_field {
    INFERD_F_MODEL = 0,         /* "model": string, a served model id */
    INFERD_F_PROMPT,            /* "prompt": string, token ids, or [one of those] */
    INFERD_F_MESSAGES,          /* "messages": [{role, content}] */
    INFERD_F_MAX_TOKENS,        /* "max_tokens": integer >= 0 */
    INFERD_F_TEMPERATURE,       /* "temperature": [0, 2] */
    INFERD_F_TOP_P,             /* "top_p": [0, 1]; 0 keeps only the most likely */
    INFERD_F_TOP_K,             /* "top_k": integer >= 0 */
    INFERD_F_MIN_P,             /* "min_p": [0, 1] */
    INFERD_F_PRESENCE_PENALTY,  /* [-2, 2] */
    INFERD_F_FREQUENCY_PENALTY, /* [-2, 2] */
    INFERD_F_REPEAT_PENALTY,    /* (0, 100] */
    INFERD_F_REPEAT_LAST_N,     /* integer >= -1 */
    INFERD_F_SEED,              /* 64-bit integer */
    INFERD_F_TIMEOUT_MS,        /* integer >= 1 */
    INFERD_F_IGNORE_EOS,        /* boolean */
    INFERD_F_STOP,              /* string or up to INFERD_STOP_N_MAX strings */
    INFERD_F_PRIORITY,          /* "high", "normal", "low" */
    INFERD_F_STREAM,            /* boolean */
    INFERD_F_STREAM_OPTIONS,    /* {"include_usage": boolean}, with stream */
    INFERD_F_LOGPROBS,          /* chat: boolean */
    INFERD_F_LOGPROBS_N,        /* completions' "logprobs": integer top-n */
    INFERD_F_TOP_LOGPROBS,      /* chat: integer, with logprobs */
    INFERD_F_SESSION_ID,        /* string of at most INFERD_FE_SESSION_ID_MAX bytes */
    INFERD_F_N,                 /* choices: only 1 */
    INFERD_F_BEST_OF,           /* only 1 */
    INFERD_F_LOGIT_BIAS,        /* only {} */
    INFERD_F_ECHO,              /* only false */
    INFERD_F_SUFFIX,            /* only "" */
    INFERD_F_TOOLS,             /* only [] */
    INFERD_F_RESPONSE_FORMAT,   /* only {"type": "text"} */
    INFERD_F_COUNT
} inferd_field;

/** The canonical name of @p f ("max_tokens"), or "?". Thread: any. */
const char *inferd_field_name(inferd_field f);

/* One field as a door takes it. */
typedef struct inferd_fe_spelling {
    inferd_field field;
    const char *name;   /* the door's name for it ("maxTokens") */
    const char *refuse; /* NULL: taken. Else the door does not take
                                    * it: a value other than the field's
                                    * neutral one (or any value, for fields
                                    * with none) is INFERD_E_FIELD_UNSUPPORTED
                                    * "NAME: <refuse>" */
} inferd_fe_spelling;

/* A door's default for a numeric field (else the scheduler's). */
typedef struct inferd_fe_default {
    inferd_field field;
    double value;
} inferd_fe_default;

/* A door: the fields it takes and its defaults. A field may be listed
 * twice under two names (max_tokens, max_completion_tokens): the first one
 * present is read. When a door takes both PROMPT and MESSAGES exactly one
 * must be given; when it takes one of them, that one is required. */
typedef struct inferd_fe_door {
    const char *name; /* for logs: "completions", "nats", ... */
    const inferd_fe_spelling *fields;
    size_t n_fields;
    const inferd_fe_default *defaults;
    size_t n_defaults;
} inferd_fe_door;

/* A request as read from a door: what to run and how. */
typedef struct inferd_fe_input {
    const inferd_fe_door *door;
    const char *model;         /* borrowed; NULL: the default model */
    inferd_field prompt_field; /* PROMPT or MESSAGES: which one was given */
    const char *text;          /* prompt text (borrowed), or */
    size_t text_len;
    int32_t *tokens; /* prompt token ids (owned), or */
    size_t n_tokens;
    inferd_chat_message *messages; /* chat messages (owned array; the strings
                                    * borrowed from the body or owned below) */
    size_t n_messages;
    char **owned_contents;        /* (n_messages) joined text parts, or NULL */
    inferd_request_params params; /* sampling etc.; stop strings borrowed */
    bool stream, include_usage;
    const char *session_id; /* borrowed; NULL: none */
} inferd_fe_input;

/**
 * Read @p body (a JSON object; borrowed: @p in points into it, keep it
 * alive until submit returns) as door @p door takes it. Fields the door
 * does not list are ignored; a field given as null is absent.
 * @return 0 and *in (free with inferd_fe_input_free); on a bad field
 * INFERD_E_INVALID_TYPE, INFERD_E_INVALID (out of range),
 * INFERD_E_MISSING, INFERD_E_FIELD_UNSUPPORTED, with err->param the door's
 * name for the field and a message that starts with it; INFERD_E_NOMEM.
 */
int inferd_fe_read(const inferd_fe_door *door, json_t *body, inferd_fe_input *in,
                   inferd_error *err);
/** As inferd_fe_read, for a door whose prompt comes as token ids outside
 * the body (a tensor): @p ids (@p n_ids, copied) are the prompt; the body
 * may not give one too (INFERD_E_INVALID, param the door's prompt field). */
int inferd_fe_read_ids(const inferd_fe_door *door, json_t *body, const int32_t *ids, size_t n_ids,
                       inferd_fe_input *in, inferd_error *err);
void inferd_fe_input_free(inferd_fe_input *in);

/** Record a field error as inferd_fe_read does (param: the door's name for
 * @p f), for a door that checks a field of its own wire format. */
int inferd_fe_fail(const inferd_fe_door *door, inferd_field f, inferd_error *err, int code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* What one request body may cost to parse: jansson builds a node per value
 * (about 50 bytes; an object with its hash table about 200), so a body is
 * checked against these before it is parsed, and none costs more than a
 * bounded multiple of its size. */
#define INFERD_FE_JSON_DEPTH_MAX 64         /* nesting of arrays and objects */
#define INFERD_FE_JSON_CONTAINERS_MAX 16384 /* arrays and objects */
#define INFERD_FE_JSON_VALUES_MAX 262144    /* values of any kind (a 128k-token prompt fits) */

/**
 * Parse request body @p data (@p len bytes; duplicate keys refused) within
 * the budget above, checked by a scan before anything is allocated.
 * @return 0 and *out (a JSON value of any type; json_decref it);
 * INFERD_E_BAD_JSON (malformed, or over the budget: the message says which
 * limit), INFERD_E_NOMEM.
 */
int inferd_fe_parse_json(const char *data, size_t len, json_t **out, inferd_error *err);

/** The JSON type name of @p v ("string", "integer", ...), for messages. */
const char *inferd_fe_type_name(const json_t *v);

/* ------------------------------------------------------------------------ */
/* Requests */

typedef struct inferd_fe_request inferd_fe_request;

/**
 * Resolve the model of @p in (loading it if needed), render its messages,
 * and submit it. @p on_event (may be NULL) is called on the scheduler
 * thread when events are ready, as inferd_request_params.on_event.
 * @return 0 and *out (release with inferd_fe_request_release); or the
 * error, err->param set as inferd_fe_read does when a field is at fault:
 * INFERD_E_UNAVAILABLE (draining; the model is being unloaded or not
 * serving), INFERD_E_MODEL_NOT_FOUND, INFERD_E_OVERLOADED (its queue is
 * full), INFERD_E_CONTEXT_LENGTH, INFERD_E_INVALID (the prompt or the
 * messages), a load's error, INFERD_E_NOMEM.
 */
int inferd_fe_submit(inferd_frontend *fe, const inferd_fe_input *in,
                     inferd_request_notify_fn on_event, void *ctx, inferd_fe_request **out,
                     inferd_error *err);

/** As inferd_request_next; a DONE event is counted. One reader. */
int inferd_fe_request_next(inferd_fe_request *r, inferd_event *ev, int64_t wait_ms);
/** For an ERROR event @p ev of @p r: the error as the front end raises
 * them (code, message, and the field at fault). */
void inferd_fe_event_error(const inferd_fe_request *r, const inferd_event *ev, inferd_error *out);
void inferd_fe_request_cancel(inferd_fe_request *r);
/** Release: cancels it if not ended, drops the model handle. Accepts NULL. */
void inferd_fe_request_release(inferd_fe_request *r);
/** The id of the model serving @p r. */
const char *inferd_fe_request_model(const inferd_fe_request *r);
/** As inferd_request_outputs_get: the logits and hidden states it kept. */
int inferd_fe_request_outputs(inferd_fe_request *r, inferd_request_outputs *out);
/** Its vocabulary (for token texts). */
const inferd_vocab *inferd_fe_request_vocab(const inferd_fe_request *r);

/* ------------------------------------------------------------------------ */
/* Error faces: an error as each door's clients receive it. */

/** HTTP status of @p e. */
unsigned inferd_fe_error_status(const inferd_error *e);
/** {"error": {"message", "type", "param", "code"}} (OpenAI). */
json_t *inferd_fe_error_openai(const inferd_error *e);
/** {"error": "message"} (KServe v2). */
json_t *inferd_fe_error_kserve(const inferd_error *e);
/** {"requestId": id or null, "type": "error", "code", "error"[, "param"]}
 * (NATS). */
json_t *inferd_fe_error_nats(const inferd_error *e, const char *request_id);

#endif
