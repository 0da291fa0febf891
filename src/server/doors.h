/* The doors' request formats: how each door spells the front end's
 * request fields (include/inferd/frontend.h), and the KServe adapter from
 * input tensors to fields. Shared by the doors and the request fuzz
 * target; needs neither the HTTP server nor libnats. Not a public header. */
#ifndef INFERD_SERVER_DOORS_H
#define INFERD_SERVER_DOORS_H

#include <jansson.h>

#include "inferd/frontend.h"

extern const inferd_fe_door inferd__door_completions; /* POST /v1/completions */
extern const inferd_fe_door inferd__door_chat;        /* POST /v1/chat/completions */
extern const inferd_fe_door inferd__door_kserve;      /* POST /v2/models/{m}/infer */
extern const inferd_fe_door inferd__door_nats;        /* worker.{id}.inference, inference.{m} */

/**
 * The fields of a KServe infer request @p body for model @p model: its
 * "parameters", overridden by input tensors of the same name (as Triton's
 * LLM models take them), the text_input tensor as the prompt. @return 0
 * and *out (a new object for inferd_fe_read with inferd__door_kserve), or
 * the error (INFERD_E_MISSING, _INVALID_TYPE, _INVALID, _NOMEM; param
 * "inputs" or "parameters").
 */
int inferd__kserve_fields(json_t *body, const char *model, json_t **out, inferd_error *err);

#endif
