/* KServe v2 / Open Inference Protocol: server and model metadata, health
 * and the model repository (load and unload through the registry), as the
 * transport-neutral operations of kvrun.h, and their HTTP routes (errors
 * {"error": "message"}). Inference is in ktensor.c and kvrun.c. */
#include "server_internal.h"

#include "doors.h"
#include "kvrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the operations, for any door ---- */

bool inferd__kv_is_identity(const kv_env *env, const char *m)
{
    for (size_t i = 0; m && i < env->n_identity; i++)
        if (strcmp(env->identity[i], m) == 0)
            return true;
    return false;
}

int inferd__kv_find(const kv_env *env, const char *m, const char *see, inferd_error *err)
{
    inferd_error e = {0};
    int i = inferd_frontend_find(env->fe, m && m[0] ? m : NULL, &e);
    if (i < 0)
        return inferd_fail_param(err, INFERD_E_MODEL_NOT_FOUND, "model",
                                 "model '%s' is not served here (see %s)", m ? m : "", see);
    return i;
}

void inferd__kv_session(const char *api_key, size_t key_len, const char *sub, size_t sub_len,
                        char out[INFERD_REGION_SESSION_MAX])
{
    size_t n = 0;
    out[0] = '\0';
    if (api_key) { /* FNV-1a */
        uint64_t h = 14695981039346656037ull;
        for (size_t i = 0; i < key_len; i++)
            h = (h ^ (uint8_t)api_key[i]) * 1099511628211ull;
        n = (size_t)snprintf(out, INFERD_REGION_SESSION_MAX, "key:%016llx", (unsigned long long)h);
    }
    if (sub && sub_len > 0)
        snprintf(out + n, INFERD_REGION_SESSION_MAX - n, "%ssession:%.*s", n ? "/" : "",
                 (int)(sub_len < 64 ? sub_len : 64), sub);
}

json_t *inferd__kv_server_meta(const kv_env *env)
{
    json_t *ext = json_pack("[s]", "model_repository");
    if (env->regions)
        json_array_append_new(ext, json_string("system_shared_memory"));
    inferd_shm_caps caps = *env->shm_caps; /* the sizes now: /dev/shm fills and empties */
    inferd_shm_caps_space(&caps);
    return json_pack("{s:s,s:s,s:o,s:{s:b,s:b,s:I,s:I}}", "name", "inferd", "version",
                     INFERD_VERSION, "extensions", ext, "shared_memory", "shm", caps.shm, "memfd",
                     caps.memfd, "shm_total_bytes", (json_int_t)caps.shm_total_bytes,
                     "shm_free_bytes", (json_int_t)caps.shm_free_bytes);
}

bool inferd__kv_server_ready(const kv_env *env)
{
    return inferd_frontend_state(env->fe) == INFERD_FE_READY;
}

static bool model_ready(const kv_env *env, size_t i)
{
    inferd_sched_stats st;
    return inferd_frontend_sched_stats(env->fe, i, &st) == 0 && st.state == INFERD_SCHED_READY;
}

int inferd__kv_model_ready(const kv_env *env, const char *m, const char *see, bool *ready,
                           const char **id, inferd_error *err)
{
    if (inferd__kv_is_identity(env, m)) {
        *ready = true;
        *id = m;
        return 0;
    }
    int i = inferd__kv_find(env, m, see, err);
    if (i < 0)
        return i;
    inferd_fe_model_info mi;
    inferd_frontend_model(env->fe, (size_t)i, &mi);
    *ready = model_ready(env, (size_t)i);
    *id = mi.id;
    return 0;
}

static json_t *tensor_meta(const char *name, const char *type, json_int_t d0, json_int_t d1)
{
    json_t *shape = d1 ? json_pack("[I,I]", d0, d1) : json_pack("[I]", d0);
    return json_pack("{s:s,s:s,s:o}", "name", name, "datatype", type, "shape", shape);
}

int inferd__kv_model_meta(const kv_env *env, const char *m, const char *see, json_t **out,
                          inferd_error *err)
{
    if (inferd__kv_is_identity(env, m)) { /* any type and shape */
        *out = json_pack("{s:s,s:[s],s:s,s:[{s:s,s:s,s:[i]}],s:[{s:s,s:s,s:[i]}],s:b}", "name", m,
                         "versions", "1", "platform", "inferd_identity", "inputs", "name", "INPUT0",
                         "datatype", "ANY", "shape", -1, "outputs", "name", "OUTPUT0", "datatype",
                         "ANY", "shape", -1, "ready", true);
        return *out ? 0 : inferd_fail(err, INFERD_E_NOMEM, "no memory for the response");
    }
    int i = inferd__kv_find(env, m, see, err);
    if (i < 0)
        return i;
    inferd_fe_model_info mi;
    inferd_frontend_model(env->fe, (size_t)i, &mi);
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
    *out = json_pack("{s:s,s:[s],s:s,s:o,s:o,s:b}", "name", mi.id, "versions", "1", "platform",
                     "inferd_gguf", "inputs", inputs, "outputs", outputs, "ready",
                     model_ready(env, (size_t)i));
    return *out ? 0 : inferd_fail(err, INFERD_E_NOMEM, "no memory for the response");
}

json_t *inferd__kv_repository_index(const kv_env *env, bool ready_only)
{
    json_t *out = json_array();
    for (size_t i = 0; i < inferd_frontend_n_models(env->fe); i++) {
        inferd_fe_model_info mi;
        inferd_frontend_model(env->fe, i, &mi);
        const char *state = "UNAVAILABLE", *reason = "not loaded";
        if (mi.loaded) {
            state = mi.state == INFERD_REGISTRY_READY     ? "READY"
                    : mi.state == INFERD_REGISTRY_LOADING ? "LOADING"
                                                          : "UNLOADING";
            reason = "";
        }
        if (ready_only && strcmp(state, "READY") != 0)
            continue;
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "name", mi.id, "version", "1",
                                             "state", state, "reason", reason));
    }
    for (size_t i = 0; i < env->n_identity; i++)
        json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s}", "name", env->identity[i],
                                             "version", "1", "state", "READY", "reason", ""));
    return out;
}

int inferd__kv_repository_load(const kv_env *env, const char *m, bool load, const char *see,
                               inferd_error *err)
{
    if (inferd__kv_is_identity(env, m)) /* built in: always loaded */
        return 0;
    int i = inferd__kv_find(env, m, see, err);
    if (i < 0)
        return i;
    return load ? inferd_frontend_load(env->fe, (size_t)i, err)
                : inferd_frontend_unload(env->fe, (size_t)i, err);
}

/* ---- the HTTP routes ---- */

#define SEE "/v2/repository/index"

kv_env inferd__kserve_env(const http_conn *c)
{
    const inferd_server *s = c->srv;
    return (kv_env){s->fe, s->regions && (c->l->is_unix || s->shm_tcp) ? s->regions : NULL,
                    &s->shm_caps, s->identity, s->n_identity};
}

void inferd__kserve_server(http_conn *c)
{
    const kv_env env = inferd__kserve_env(c);
    inferd__http_json(c, 200, inferd__kv_server_meta(&env));
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

void inferd__kserve_model(http_conn *c, const char *m, const char *what)
{
    const kv_env env = inferd__kserve_env(c);
    inferd_error e = {0};
    if (strcmp(what, "ready") == 0) {
        bool ready = false;
        const char *id = NULL;
        if (inferd__kv_model_ready(&env, m, SEE, &ready, &id, &e) < 0)
            inferd__http_fail(c, &e);
        else
            inferd__http_json(c, ready ? 200 : 400,
                              json_pack("{s:s,s:b}", "name", id, "ready", ready));
        return;
    }
    json_t *meta = NULL;
    if (inferd__kv_model_meta(&env, m, SEE, &meta, &e) < 0)
        inferd__http_fail(c, &e);
    else
        inferd__http_json(c, 200, meta);
}

void inferd__kserve_infer(http_conn *c, const char *m, json_t *body)
{
    const kv_env env = inferd__kserve_env(c);
    if (inferd__kv_is_identity(&env, m)) {
        inferd__kserve_identity(c, m, body);
        return;
    }
    if (inferd__server_find_model(c, m) < 0)
        return;
    inferd__kserve_llm(c, m, body);
}

void inferd__kserve_repository_index(http_conn *c, json_t *body)
{
    json_t *ready_only = json_object_get(body, "ready");
    if (ready_only && !json_is_boolean(ready_only)) {
        inferd__http_error(c, INFERD_E_INVALID_TYPE, "ready", "ready: expected a boolean");
        return;
    }
    const kv_env env = inferd__kserve_env(c);
    inferd__http_json(c, 200, inferd__kv_repository_index(&env, json_is_true(ready_only)));
}

void inferd__kserve_repository_load(http_conn *c, const char *m, bool load)
{
    const kv_env env = inferd__kserve_env(c);
    inferd_error e = {0};
    if (inferd__kv_repository_load(&env, m, load, SEE, &e) < 0) {
        inferd__http_fail(c, &e);
        return;
    }
    inferd__http_json(c, 200, json_object());
}
