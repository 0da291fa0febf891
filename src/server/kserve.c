/* KServe v2 / Open Inference Protocol: server and model metadata, health,
 * inference with a BYTES text_input (as Triton's LLM models take it) and
 * the model repository (load and unload through the registry). Errors are
 * {"error": "message"}. */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#define KSERVE_DEFAULT_MAX_TOKENS 16

void kserve_server(http_conn *c)
{
    http_json(c, 200, json_pack("{s:s,s:s,s:[s]}", "name", "inferd", "version", INFERD_VERSION,
                                "extensions", "model_repository"));
}

void kserve_health(http_conn *c, bool ready)
{
    inferd_fe_state st = inferd_frontend_state(c->srv->fe);
    bool ok = !ready || st == INFERD_FE_READY;
    /* The protocol: 200 means true, a 4xx false. */
    http_json(c, ok ? 200 : 400,
              json_pack("{s:b,s:s}", ready ? "ready" : "live", ok, "state",
                        inferd_fe_state_name(st)));
}

static bool model_ready(inferd_server *s, size_t i)
{
    inferd_sched_stats st;
    return inferd_frontend_sched_stats(s->fe, i, &st) == 0 && st.state == INFERD_SCHED_READY;
}

static json_t *tensor_meta(const char *name, const char *type)
{
    return json_pack("{s:s,s:s,s:[i]}", "name", name, "datatype", type, "shape", 1);
}

void kserve_model(http_conn *c, const char *m, const char *what)
{
    int i = server_find_model(c, m);
    if (i < 0)
        return;
    inferd_fe_model_info mi;
    inferd_frontend_model(c->srv->fe, (size_t)i, &mi);
    bool ready = model_ready(c->srv, (size_t)i);
    if (strcmp(what, "ready") == 0) {
        http_json(c, ready ? 200 : 400, json_pack("{s:s,s:b}", "name", mi.id, "ready", ready));
        return;
    }
    json_t *inputs = json_pack("[o,o,o,o,o,o,o]", tensor_meta("text_input", "BYTES"),
                               tensor_meta("max_tokens", "INT32"),
                               tensor_meta("temperature", "FP32"), tensor_meta("top_p", "FP32"),
                               tensor_meta("top_k", "INT32"), tensor_meta("seed", "INT64"),
                               tensor_meta("stop", "BYTES"));
    json_t *outputs = json_pack("[o]", tensor_meta("text_output", "BYTES"));
    http_json(c, 200,
              json_pack("{s:s,s:[s],s:s,s:o,s:o,s:b}", "name", mi.id, "versions", "1",
                        "platform", "inferd_gguf", "inputs", inputs, "outputs", outputs,
                        "ready", ready));
}

/* The single element of input tensor @p in (data [x] or [[x]]). */
static json_t *scalar_of(json_t *in)
{
    json_t *d = json_object_get(in, "data");
    while (json_is_array(d) && json_array_size(d) == 1)
        d = json_array_get(d, 0);
    return json_is_array(d) ? NULL : d;
}

/* The /infer response; @p ctx is the request's "id" (echoed when a string). */
static json_t *build_infer(gen *g, void *ctx)
{
    json_t *o = json_pack(
        "{s:s,s:s,s:[{s:s,s:s,s:[i],s:[s%]}],s:{s:s,s:i,s:i,s:I}}", "model_name", gen_model(g),
        "model_version", "1", "outputs", "name", "text_output", "datatype", "BYTES", "shape", 1,
        "data", g->text.p ? g->text.p : "", g->text.len, "parameters", "finish_reason",
        gen_finish_name(g->done.finish), "prompt_tokens", (int)g->done.n_prompt,
        "completion_tokens", (int)g->done.n_gen, "seed", (json_int_t)g->done.seed);
    json_t *id = ctx;
    if (o && json_is_string(id))
        json_object_set(o, "id", id);
    return o;
}

#define NOT_ON_INFER "not supported on /infer (use /v1/completions)"

static const inferd_fe_spelling infer_fields[] = {
    {INFERD_F_LOGPROBS_N, "logprobs", NOT_ON_INFER},
    {INFERD_F_TOP_LOGPROBS, "top_logprobs", NOT_ON_INFER},
    {INFERD_F_STREAM_OPTIONS, "stream_options", NOT_ON_INFER},
    SERVER_OPENAI_REFUSED_FIELDS,
    SERVER_OPENAI_SAMPLING_FIELDS,
    {INFERD_F_STREAM, "stream", "not supported on /infer (use /v1/completions with stream)"},
    {INFERD_F_PRIORITY, "priority", NULL},
    {INFERD_F_STOP, "stop", NULL},
    {INFERD_F_MODEL, "model_name", NULL},
    {INFERD_F_PROMPT, "text_input", NULL},
};
static const inferd_fe_default infer_defaults[] = {{INFERD_F_MAX_TOKENS, KSERVE_DEFAULT_MAX_TOKENS}};
static const inferd_fe_door infer_door = {"kserve", infer_fields, N_OF(infer_fields),
                                          infer_defaults, N_OF(infer_defaults)};

/* The request's fields: "parameters", overridden by input tensors of the
 * same name (Triton's LLM models take them as inputs); the text_input
 * tensor as the prompt. NULL and an error response when malformed. */
static json_t *infer_fields_of(http_conn *c, const char *m, json_t *body)
{
    json_t *inputs = json_object_get(body, "inputs");
    if (!inputs || json_is_null(inputs)) {
        http_error(c, INFERD_E_MISSING, "inputs",
                   "inputs: it is required (a text_input tensor, BYTES, shape [1])");
        return NULL;
    }
    if (!json_is_array(inputs)) {
        http_error(c, INFERD_E_INVALID_TYPE, "inputs", "inputs: expected an array of tensors");
        return NULL;
    }
    json_t *params = json_object_get(body, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params)) {
        http_error(c, INFERD_E_INVALID_TYPE, "parameters", "parameters: expected an object");
        return NULL;
    }
    json_t *merged = params && json_is_object(params) ? json_deep_copy(params) : json_object();
    if (!merged) {
        http_error(c, INFERD_E_NOMEM, NULL, "no memory for the request");
        return NULL;
    }
    size_t i;
    json_t *in;
    bool has_text = false;
    json_array_foreach(inputs, i, in) {
        json_t *name = json_object_get(in, "name");
        if (!json_is_string(name)) {
            http_error(c, INFERD_E_INVALID_TYPE, "inputs", "inputs[%zu].name: expected a string",
                       i);
            json_decref(merged);
            return NULL;
        }
        const char *n = json_string_value(name);
        json_t *dt = json_object_get(in, "datatype");
        json_t *v = scalar_of(in);
        if (strcmp(n, "text_input") == 0) {
            if (!json_is_string(dt) || strcmp(json_string_value(dt), "BYTES") != 0 ||
                !json_is_string(v)) {
                http_error(c, INFERD_E_INVALID, "inputs",
                           "inputs[%zu] (text_input): expected datatype BYTES with one string "
                           "in data",
                           i);
                json_decref(merged);
                return NULL;
            }
            has_text = true;
        } else if (strcmp(n, "stop") == 0) {
            v = json_object_get(in, "data");
            if (!json_is_array(v)) {
                http_error(c, INFERD_E_INVALID, "inputs",
                           "inputs[%zu] (stop): expected a data array of strings", i);
                json_decref(merged);
                return NULL;
            }
        } else if (!v) {
            http_error(c, INFERD_E_INVALID, "inputs",
                       "inputs[%zu] (%s): expected one element in data", i, n);
            json_decref(merged);
            return NULL;
        }
        json_object_set(merged, n, v);
    }
    if (!has_text) {
        http_error(c, INFERD_E_MISSING, "inputs", "inputs: no text_input tensor (BYTES, shape [1])");
        json_decref(merged);
        return NULL;
    }
    json_object_set_new(merged, "model_name", json_string(m));
    return merged;
}

void kserve_infer(http_conn *c, const char *m, json_t *body)
{
    if (server_find_model(c, m) < 0)
        return;
    json_t *fields = infer_fields_of(c, m, body);
    if (!fields)
        return;
    inferd_fe_input in;
    inferd_error e = {0};
    if (inferd_fe_read(&infer_door, fields, &in, &e) < 0) {
        http_fail(c, &e);
        json_decref(fields);
        return;
    }
    gen *g = gen_start(c, &in, GEN_KSERVE);
    inferd_fe_input_free(&in);
    json_decref(fields); /* stop strings were copied by submit */
    if (!g)
        return;
    gen_respond(g, build_infer, json_object_get(body, "id"));
}

void kserve_repository_index(http_conn *c, json_t *body)
{
    inferd_server *s = c->srv;
    json_t *ready_only = json_object_get(body, "ready");
    if (ready_only && !json_is_boolean(ready_only)) {
        http_error(c, INFERD_E_INVALID_TYPE, "ready", "ready: expected a boolean");
        return;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < inferd_frontend_n_models(s->fe); i++) {
        inferd_fe_model_info mi;
        inferd_frontend_model(s->fe, i, &mi);
        const char *state = "UNAVAILABLE", *reason = "not loaded";
        if (mi.loaded) {
            state = mi.state == INFERD_REGISTRY_READY     ? "READY"
                    : mi.state == INFERD_REGISTRY_LOADING ? "LOADING"
                                                          : "UNLOADING";
            reason = "";
        }
        if (json_is_true(ready_only) && strcmp(state, "READY") != 0)
            continue;
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "name", mi.id, "version", "1",
                                             "state", state, "reason", reason));
    }
    http_json(c, 200, out);
}

void kserve_repository_load(http_conn *c, const char *m, bool load)
{
    int i = server_find_model(c, m);
    if (i < 0)
        return;
    inferd_error e = {0};
    int rc = load ? inferd_frontend_load(c->srv->fe, (size_t)i, &e)
                  : inferd_frontend_unload(c->srv->fe, (size_t)i, &e);
    if (rc < 0) {
        http_fail(c, &e);
        return;
    }
    http_json(c, 200, json_object());
}
