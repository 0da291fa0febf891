/* The doors' request formats: how each door spells the front end's
 * request fields (include/inferd/frontend.h); the KServe tensors become
 * fields in ktensor.h. Shared by the doors and the request fuzz
 * target; needs neither the HTTP server nor libnats. Not a public header. */
#ifndef INFERD_SERVER_DOORS_H
#define INFERD_SERVER_DOORS_H

#include <jansson.h>

#include "inferd/frontend.h"

extern const inferd_fe_door inferd__door_completions; /* POST /v1/completions */
extern const inferd_fe_door inferd__door_chat;        /* POST /v1/chat/completions */
extern const inferd_fe_door inferd__door_kserve;      /* POST /v2/models/{m}/infer */
extern const inferd_fe_door inferd__door_nats;        /* worker.{id}.inference, inference.{m} */

#endif
