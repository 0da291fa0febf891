/* libFuzzer target for the network-facing request parsers: the first input
 * byte picks a door (OpenAI completions, OpenAI chat, KServe infer, NATS),
 * the rest is the request body as the door receives it. The body is parsed
 * as the doors parse it (inferd_fe_parse_json: the budget scan, then JSON
 * with duplicate keys rejected), KServe's input
 * tensors are turned into fields, and the door's fields are read through
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
    if (e->param[0] == '\0' || strcmp(e->param, "inputs") == 0 ||
        strcmp(e->param, "parameters") == 0 || strcmp(e->param, "include_usage") == 0)
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
    if (door == &inferd__door_kserve) {
        rc = inferd__kserve_fields(body, "m", &fields, &e);
        if (rc < 0) {
            check_error(door, rc, &e);
            json_decref(body);
            return 0;
        }
    }
    inferd_fe_input in;
    rc = inferd_fe_read(door, fields, &in, &e);
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
