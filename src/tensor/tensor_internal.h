/* Shared by the files of the tensor module (tensor.c, region.c). Not a
 * public header. */
#ifndef INFERD_TENSOR_INTERNAL_H
#define INFERD_TENSOR_INTERNAL_H

#include "inferd/tensor.h"

/* The context @p s was wrapped with, if its release function is @p fn;
 * else NULL. */
void *inferd__storage_ctx_if(const inferd_storage *s, inferd_storage_release_fn fn);

#endif
