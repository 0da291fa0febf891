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
    int st = atomic_load(&c->srv->state);
    bool ok = !ready || st == SERVER_READY;
    /* The protocol: 200 means true, a 4xx false. */
    http_json(c, ok ? 200 : 400,
              json_pack("{s:b,s:s}", ready ? "ready" : "live", ok, "state", server_state_name(st)));
}

static bool model_ready(inferd_server *s, const served *sm)
{
    inferd_sched_stats st;
    return inferd_registry_sched_stats(s->reg, sm->id, &st) == 0 &&
           st.state == INFERD_SCHED_READY;
}

static json_t *tensor_meta(const char *name, const char *type)
{
    return json_pack("{s:s,s:s,s:[i]}", "name", name, "datatype", type, "shape", 1);
}

void kserve_model(http_conn *c, const char *m, const char *what)
{
    served *sm = server_find_model(c, m);
    if (!sm)
        return;
    bool ready = model_ready(c->srv, sm);
    if (strcmp(what, "ready") == 0) {
        http_json(c, ready ? 200 : 400, json_pack("{s:s,s:b}", "name", sm->id, "ready", ready));
        return;
    }
    json_t *inputs = json_pack("[o,o,o,o,o,o,o]", tensor_meta("text_input", "BYTES"),
                               tensor_meta("max_tokens", "INT32"),
                               tensor_meta("temperature", "FP32"), tensor_meta("top_p", "FP32"),
                               tensor_meta("top_k", "INT32"), tensor_meta("seed", "INT64"),
                               tensor_meta("stop", "BYTES"));
    json_t *outputs = json_pack("[o]", tensor_meta("text_output", "BYTES"));
    http_json(c, 200,
              json_pack("{s:s,s:[s],s:s,s:o,s:o,s:b}", "name", sm->id, "versions", "1",
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
        "{s:s,s:s,s:[{s:s,s:s,s:[i],s:[s%]}],s:{s:s,s:i,s:i,s:I}}", "model_name", g->sm->id,
        "model_version", "1", "outputs", "name", "text_output", "datatype", "BYTES", "shape", 1,
        "data", g->text.p ? g->text.p : "", g->text.len, "parameters", "finish_reason",
        gen_finish_name(g->done.finish), "prompt_tokens", (int)g->done.n_prompt,
        "completion_tokens", (int)g->done.n_gen, "seed", (json_int_t)g->done.seed);
    json_t *id = ctx;
    if (o && json_is_string(id))
        json_object_set(o, "id", id);
    return o;
}

void kserve_infer(http_conn *c, const char *m, json_t *body)
{
    served *sm = server_find_model(c, m);
    if (!sm)
        return;
    json_t *inputs = json_object_get(body, "inputs");
    if (!inputs || json_is_null(inputs)) {
        http_error(c, 400, "missing_required_parameter", "inputs",
                   "inputs: it is required (a text_input tensor, BYTES, shape [1])");
        return;
    }
    if (!json_is_array(inputs)) {
        http_error(c, 400, "invalid_type", "inputs", "inputs: expected an array of tensors");
        return;
    }
    json_t *params = json_object_get(body, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params)) {
        http_error(c, 400, "invalid_type", "parameters", "parameters: expected an object");
        return;
    }
    /* Sampling fields from "parameters", overridden by inputs of the same
     * name (Triton's LLM models take them as inputs). */
    json_t *merged = params && json_is_object(params) ? json_deep_copy(params) : json_object();
    const char *text = NULL;
    size_t text_len = 0, i;
    json_t *in;
    json_array_foreach(inputs, i, in) {
        json_t *name = json_object_get(in, "name");
        if (!json_is_string(name)) {
            http_error(c, 400, "invalid_type", "inputs", "inputs[%zu].name: expected a string", i);
            json_decref(merged);
            return;
        }
        const char *n = json_string_value(name);
        json_t *dt = json_object_get(in, "datatype");
        if (strcmp(n, "text_input") == 0) {
            json_t *v = scalar_of(in);
            if (!json_is_string(dt) || strcmp(json_string_value(dt), "BYTES") != 0 ||
                !json_is_string(v)) {
                http_error(c, 400, "invalid_value", "inputs",
                           "inputs[%zu] (text_input): expected datatype BYTES with one string "
                           "in data",
                           i);
                json_decref(merged);
                return;
            }
            text = json_string_value(v);
            text_len = json_string_length(v);
        } else if (strcmp(n, "stop") == 0) {
            if (!json_is_array(json_object_get(in, "data"))) {
                http_error(c, 400, "invalid_value", "inputs",
                           "inputs[%zu] (stop): expected a data array of strings", i);
                json_decref(merged);
                return;
            }
            json_object_set(merged, n, json_object_get(in, "data"));
        } else {
            json_t *v = scalar_of(in);
            if (!v) {
                http_error(c, 400, "invalid_value", "inputs",
                           "inputs[%zu] (%s): expected one element in data", i, n);
                json_decref(merged);
                return;
            }
            json_object_set(merged, n, v);
        }
    }
    if (!text) {
        http_error(c, 400, "missing_required_parameter", "inputs",
                   "inputs: no text_input tensor (BYTES, shape [1])");
        json_decref(merged);
        return;
    }
    if (text_len == 0) {
        http_error(c, 400, "invalid_value", "inputs", "text_input: it is empty");
        json_decref(merged);
        return;
    }
    static const char *const openai_only[] = {"logprobs", "top_logprobs", "stream_options"};
    for (size_t k = 0; k < sizeof(openai_only) / sizeof(openai_only[0]); k++)
        if (json_object_get(merged, openai_only[k])) {
            http_error(c, 400, "unsupported", openai_only[k],
                       "%s: not supported on /infer (use /v1/completions)", openai_only[k]);
            json_decref(merged);
            return;
        }
    inferd_request_params p = inferd_request_params_default();
    gen_opts go;
    req_err re;
    if (params_from_json(&re, merged, false, KSERVE_DEFAULT_MAX_TOKENS, &p, &go) < 0) {
        http_req_error(c, &re);
        json_decref(merged);
        return;
    }
    if (go.stream) {
        http_error(c, 400, "unsupported", "stream",
                   "stream: not supported on /infer (use /v1/completions with stream)");
        json_decref(merged);
        return;
    }
    p.text = text;
    p.text_len = text_len;
    gen *g = gen_start(c, sm, &p, GEN_KSERVE);
    json_decref(merged); /* stop strings were copied by submit */
    if (!g)
        return;
    gen_respond(g, build_infer, json_object_get(body, "id"));
}

void kserve_repository_index(http_conn *c, json_t *body)
{
    inferd_server *s = c->srv;
    json_t *ready_only = json_object_get(body, "ready");
    if (ready_only && !json_is_boolean(ready_only)) {
        http_error(c, 400, "invalid_type", "ready", "ready: expected a boolean");
        return;
    }
    inferd_registry_model_info info[INFERD_SERVER_MODELS_MAX];
    size_t n = 0;
    inferd_registry_list(s->reg, info, INFERD_SERVER_MODELS_MAX, &n);
    json_t *out = json_array();
    for (size_t i = 0; i < s->n_models; i++) {
        const char *state = "UNAVAILABLE", *reason = "not loaded";
        for (size_t k = 0; k < n && k < INFERD_SERVER_MODELS_MAX; k++)
            if (strcmp(info[k].id, s->models[i].id) == 0) {
                state = info[k].state == INFERD_REGISTRY_READY     ? "READY"
                        : info[k].state == INFERD_REGISTRY_LOADING ? "LOADING"
                                                                   : "UNLOADING";
                reason = "";
            }
        if (json_is_true(ready_only) && strcmp(state, "READY") != 0)
            continue;
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "name", s->models[i].id,
                                             "version", "1", "state", state, "reason", reason));
    }
    http_json(c, 200, out);
}

void kserve_repository_load(http_conn *c, const char *m, bool load)
{
    served *sm = server_find_model(c, m);
    if (!sm)
        return;
    inferd_error e = {0};
    if (load) {
        inferd_registry_handle *h = server_request_model(c, sm);
        if (!h)
            return;
        server_model_template(c->srv, sm, inferd_registry_handle_model(h));
        inferd_registry_release(c->srv->reg, h);
        http_json(c, 200, json_object());
        return;
    }
    int rc = inferd_registry_unload(c->srv->reg, sm->id, true, &e);
    if (rc < 0 && rc != INFERD_E_NOT_FOUND) {
        http_error_code(c, rc, NULL, e.msg);
        return;
    }
    http_json(c, 200, json_object());
}
