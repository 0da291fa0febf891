/* KServe v2 / Open Inference Protocol: server and model metadata, health,
 * inference with a BYTES text_input (as Triton's LLM models take it) and
 * the model repository (load and unload through the registry). Errors are
 * {"error": "message"}. */
#include "server_internal.h"

#include "doors.h"

#include <stdlib.h>
#include <string.h>

void inferd__kserve_server(http_conn *c)
{
    inferd_server *s = c->srv;
    json_t *ext = json_pack("[s]", "model_repository");
    if (s->regions && (c->l->is_unix || s->shm_tcp))
        json_array_append_new(ext, json_string("system_shared_memory"));
    inferd_shm_caps caps = s->shm_caps; /* the sizes now: /dev/shm fills and empties */
    inferd_shm_caps_space(&caps);
    const inferd_shm_caps *k = &caps;
    inferd__http_json(c, 200,
                      json_pack("{s:s,s:s,s:o,s:{s:b,s:b,s:I,s:I}}", "name", "inferd", "version",
                                INFERD_VERSION, "extensions", ext, "shared_memory", "shm", k->shm,
                                "memfd", k->memfd, "shm_total_bytes",
                                (json_int_t)k->shm_total_bytes, "shm_free_bytes",
                                (json_int_t)k->shm_free_bytes));
}

void inferd__kserve_health(http_conn *c, bool ready)
{
    inferd_fe_state st = inferd_frontend_state(c->srv->fe);
    bool ok = !ready || st == INFERD_FE_READY;
    /* The protocol: 200 means true, a 4xx false. */
    inferd__http_json(
        c, ok ? 200 : 400,
        json_pack("{s:b,s:s}", ready ? "ready" : "live", ok, "state", inferd_fe_state_name(st)));
}

static bool model_ready(inferd_server *s, size_t i)
{
    inferd_sched_stats st;
    return inferd_frontend_sched_stats(s->fe, i, &st) == 0 && st.state == INFERD_SCHED_READY;
}

static json_t *tensor_meta(const char *name, const char *type, json_int_t d0, json_int_t d1)
{
    json_t *shape = d1 ? json_pack("[I,I]", d0, d1) : json_pack("[I]", d0);
    return json_pack("{s:s,s:s,s:o}", "name", name, "datatype", type, "shape", shape);
}

void inferd__kserve_model(http_conn *c, const char *m, const char *what)
{
    if (inferd__server_is_identity(c->srv, m)) { /* any type and shape */
        if (strcmp(what, "ready") == 0) {
            inferd__http_json(c, 200, json_pack("{s:s,s:b}", "name", m, "ready", true));
            return;
        }
        inferd__http_json(c, 200,
                          json_pack("{s:s,s:[s],s:s,s:[{s:s,s:s,s:[i]}],s:[{s:s,s:s,s:[i]}],s:b}",
                                    "name", m, "versions", "1", "platform", "inferd_identity",
                                    "inputs", "name", "INPUT0", "datatype", "ANY", "shape", -1,
                                    "outputs", "name", "OUTPUT0", "datatype", "ANY", "shape", -1,
                                    "ready", true));
        return;
    }
    int i = inferd__server_find_model(c, m);
    if (i < 0)
        return;
    inferd_fe_model_info mi;
    inferd_frontend_model(c->srv->fe, (size_t)i, &mi);
    bool ready = model_ready(c->srv, (size_t)i);
    if (strcmp(what, "ready") == 0) {
        inferd__http_json(c, ready ? 200 : 400,
                          json_pack("{s:s,s:b}", "name", mi.id, "ready", ready));
        return;
    }
    /* -1: any size; the widths once the model was loaded. */
    const json_int_t V = mi.n_vocab ? (json_int_t)mi.n_vocab : -1;
    const json_int_t E = mi.n_embd ? (json_int_t)mi.n_embd : -1;
    json_t *inputs = json_pack(
        "[o,o,o,o,o,o,o,o]", tensor_meta("text_input", "BYTES", 1, 0),
        tensor_meta("input_ids", "INT32", -1, 0), tensor_meta("max_tokens", "INT32", 1, 0),
        tensor_meta("temperature", "FP32", 1, 0), tensor_meta("top_p", "FP32", 1, 0),
        tensor_meta("top_k", "INT32", 1, 0), tensor_meta("seed", "INT64", 1, 0),
        tensor_meta("stop", "BYTES", -1, 0));
    json_t *outputs =
        json_pack("[o,o,o,o]", tensor_meta("text_output", "BYTES", 1, 0),
                  tensor_meta("output_ids", "INT32", -1, 0), tensor_meta("logits", "FP32", -1, V),
                  tensor_meta("hidden", "FP32", -1, E));
    inferd__http_json(c, 200,
                      json_pack("{s:s,s:[s],s:s,s:o,s:o,s:b}", "name", mi.id, "versions", "1",
                                "platform", "inferd_gguf", "inputs", inputs, "outputs", outputs,
                                "ready", ready));
}

void inferd__kserve_infer(http_conn *c, const char *m, json_t *body)
{
    if (inferd__server_is_identity(c->srv, m)) {
        inferd__kserve_identity(c, m, body);
        return;
    }
    if (inferd__server_find_model(c, m) < 0)
        return;
    inferd__kserve_llm(c, m, body);
}

void inferd__kserve_repository_index(http_conn *c, json_t *body)
{
    inferd_server *s = c->srv;
    json_t *ready_only = json_object_get(body, "ready");
    if (ready_only && !json_is_boolean(ready_only)) {
        inferd__http_error(c, INFERD_E_INVALID_TYPE, "ready", "ready: expected a boolean");
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
    for (size_t i = 0; i < s->n_identity; i++)
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "name", s->identity[i], "version",
                                             "1", "state", "READY", "reason", ""));
    inferd__http_json(c, 200, out);
}

void inferd__kserve_repository_load(http_conn *c, const char *m, bool load)
{
    if (inferd__server_is_identity(c->srv, m)) { /* built in: always loaded */
        inferd__http_json(c, 200, json_object());
        return;
    }
    int i = inferd__server_find_model(c, m);
    if (i < 0)
        return;
    inferd_error e = {0};
    int rc = load ? inferd_frontend_load(c->srv->fe, (size_t)i, &e)
                  : inferd_frontend_unload(c->srv->fe, (size_t)i, &e);
    if (rc < 0) {
        inferd__http_fail(c, &e);
        return;
    }
    inferd__http_json(c, 200, json_object());
}
