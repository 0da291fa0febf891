/* Tensor elements as JSON values (KServe "data"): shared by the worker's
 * KServe door and the client library. */
#ifndef INFERD_TENSOR_JSON_H
#define INFERD_TENSOR_JSON_H

#include <jansson.h>

#include "inferd/tensor.h"

/** The element of type @p e (not BYTES) at @p p as a new JSON value: BOOL
 * true/false, integers, FP16/BF16/FP32/FP64 as reals; NULL without memory. */
json_t *inferd_elem_to_json(inferd_elem e, const void *p);

/** JSON value @p v as an element of type @p e (not BYTES) at @p p.
 * @return 0; INFERD_E_INVALID_TYPE (not a boolean, integer or number as the
 * type needs); INFERD_E_RANGE (an integer outside the type's range). */
int inferd_elem_from_json(inferd_elem e, json_t *v, void *p);

#endif
