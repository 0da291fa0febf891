/* libFuzzer target for the network-facing request parsers: the first input
 * byte picks a door (OpenAI completions, OpenAI chat, KServe infer, NATS),
 * the rest is the request body as the door receives it. The body is parsed
 * as the doors parse it (inferd_fe_parse_json: the budget scan, then JSON
 * with duplicate keys rejected), KServe's input
 * tensors are read (JSON data) and turned into fields, and the door's fields are read through
 * the front end's field table. Any input must end in success or in an
 * error with a code from the error table, a message, and a field name
 * that the door spells; nothing may leak or read out of bounds. Also
 * linked into the replay driver, which runs tests/fuzz/corpus/request. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doors.h"
#include "inferd/alloc.h"
#include "ktensor.h"
#include "inferd/frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const inferd_fe_door *const DOORS[] = {
    &inferd__door_completions,
    &inferd__door_chat,
    &inferd__door_kserve,
    &inferd__door_nats,
};
#define N_DOORS (sizeof(DOORS) / sizeof(DOORS[0]))

/* An error as a door would answer it: a known code, a message, a field
 * the door spells (or none). */
static void check_error(const inferd_fe_door *door, int rc, const inferd_error *e)
{
    if (rc != e->code || inferd_error_http_status(rc) < 400 || e->msg[0] == '\0')
        abort();
    /* The request's parts, and the tensors' own fields (KServe). */
    static const char *const parts[] = {"inputs",
                                        "parameters",
                                        "include_usage",
                                        "outputs",
                                        "datatype",
                                        "shape",
                                        "data",
                                        "binary_data",
                                        "binary_data_size",
                                        "shared_memory_region",
                                        "shared_memory_byte_size"};
    if (e->param[0] == '\0')
        return;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        if (strcmp(e->param, parts[i]) == 0)
            return;
    for (size_t i = 0; i < door->n_fields; i++)
        if (strcmp(door->fields[i].name, e->param) == 0)
            return;
    abort(); /* an error naming a field the door does not have */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const inferd_fe_door *door = DOORS[data[0] % N_DOORS];
    json_t *body = NULL;
    inferd_error pe = {0};
    const int prc = inferd_fe_parse_json((const char *)data + 1, size - 1, &body, &pe);
    if (prc < 0 && (prc != pe.code || pe.msg[0] == '\0'))
        abort();
    if (!body || !json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    inferd_error e = {0};
    json_t *fields = body;
    int rc = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (door == &inferd__door_kserve) {
        /* Tensors from JSON data (no binary data, no shared memory). */
        const kt_src src = {NULL, 0, NULL};
        kt_req *r = calloc(1, sizeof(*r));
        bool want[KT_LLM_OUTS], all;
        if (!r)
            abort();
        rc = inferd__kt_read(&src, body, r, &e);
        if (rc == 0)
            rc = inferd__kt_llm_fields(r, body, "m", &fields, &ids, &n_ids, want, &all, &e);
        inferd__kt_free(r);
        free(r);
        if (rc < 0) {
            check_error(door, rc, &e);
            json_decref(body);
            return 0;
        }
        if (!want[KT_TEXT_OUTPUT] && !want[KT_OUTPUT_IDS] && !want[KT_LOGITS] && !want[KT_HIDDEN] &&
            json_array_size(json_object_get(body, "outputs")) == 0)
            abort(); /* none named: some are answered */
    }
    inferd_fe_input in;
    rc = ids ? inferd_fe_read_ids(door, fields, ids, n_ids, &in, &e)
             : inferd_fe_read(door, fields, &in, &e);
    inferd_free(ids);
    if (rc < 0) {
        check_error(door, rc, &e);
    } else {
        /* A read request has exactly one prompt, and what it says holds. */
        int forms = (in.text != NULL) + (in.tokens != NULL) + (in.messages != NULL);
        if (forms != 1 || (in.text && in.text_len == 0) || (in.tokens && in.n_tokens == 0) ||
            (in.messages && in.n_messages == 0) || in.params.n_stop > INFERD_STOP_N_MAX ||
            in.params.top_logprobs > INFERD_TOP_LOGPROBS_MAX)
            abort();
        for (size_t i = 0; i < in.n_messages; i++)
            if (!in.messages[i].role || !in.messages[i].content)
                abort();
        inferd_fe_input_free(&in);
    }
    if (fields != body)
        json_decref(fields);
    json_decref(body);
    return 0;
}
