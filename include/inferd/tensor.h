/* Tensors: an element type, a shape (up to 8 dimensions), strides and a
 * byte offset into a refcounted storage that is heap memory, a shared-memory
 * region, or memory borrowed from its owner (a NumPy array, a PyTorch
 * tensor, a client's buffer). DLPack 0.6 export and import (the CPU device),
 * so NumPy 1.24 and PyTorch 1.13 take and give tensors without copies.
 *
 * Element types are those of the KServe v2 / Open Inference Protocol
 * (BOOL, UINT8..64, INT8..64, FP16, BF16, FP32, FP64, BYTES); BYTES holds
 * the raw bytes of length-prefixed strings (KServe's binary form: a 4-byte
 * little-endian length, then the bytes, per element) and has no DLPack
 * type.
 *
 * Ownership: a storage is refcounted (inferd_storage_ref/unref, any
 * thread); when the last reference goes its release runs once (free the
 * heap block, drop the region, call the borrowed memory's owner). A tensor
 * holds one reference; tensors are values the caller owns
 * (inferd_tensor_fini drops the reference). Bounds are checked when a
 * tensor is made: every element it can address lies inside its storage.
 */
#ifndef INFERD_TENSOR_H
#define INFERD_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/error.h"

#define INFERD_TENSOR_DIMS_MAX 8

typedef enum inferd_elem {
    INFERD_ELEM_BOOL, /* one byte, 0 or 1 */
    INFERD_ELEM_U8,
    INFERD_ELEM_U16,
    INFERD_ELEM_U32,
    INFERD_ELEM_U64,
    INFERD_ELEM_I8,
    INFERD_ELEM_I16,
    INFERD_ELEM_I32,
    INFERD_ELEM_I64,
    INFERD_ELEM_F16,
    INFERD_ELEM_BF16,
    INFERD_ELEM_F32,
    INFERD_ELEM_F64,
    INFERD_ELEM_BYTES, /* byte strings (see above); an element size of 1 */
    INFERD_ELEM_COUNT
} inferd_elem;

/** Bytes per element (BYTES: 1). 0 for an unknown type. */
size_t inferd_elem_size(inferd_elem e);
/** The KServe datatype name: "BOOL", "UINT8", ..., "FP32", "BYTES". */
const char *inferd_elem_name(inferd_elem e);
/** Parse a KServe datatype name (exact, upper case); -1 if unknown. */
int inferd_elem_parse(const char *name);

typedef enum inferd_storage_kind {
    INFERD_STORAGE_HEAP,     /* allocated here */
    INFERD_STORAGE_REGION,   /* inside a shared-memory region */
    INFERD_STORAGE_BORROWED, /* its owner's memory, released through a callback */
} inferd_storage_kind;

typedef struct inferd_storage inferd_storage;

/* Called once, when the last reference to a storage goes. */
typedef void (*inferd_storage_release_fn)(void *ctx, void *data, size_t bytes);

/**
 * A heap storage of @p bytes (zeroed; 0 is allowed), 64-byte aligned.
 * @return 0, INFERD_E_NOMEM.
 */
int inferd_storage_heap(size_t bytes, inferd_storage **out_s, inferd_error *err);
/**
 * A storage over @p bytes at @p data that the caller (or its owner) keeps
 * alive until @p release(ctx, data, bytes) is called (may be NULL), of kind
 * @p kind (BORROWED, or REGION for the region module's mappings).
 * @return 0, INFERD_E_NOMEM (release is then not called), INFERD_E_INVALID
 * (NULL data with bytes > 0, or a kind other than those two).
 */
int inferd_storage_wrap(inferd_storage_kind kind, void *data, size_t bytes,
                        inferd_storage_release_fn release, void *ctx, inferd_storage **out_s,
                        inferd_error *err);
inferd_storage *inferd_storage_ref(inferd_storage *s); /* returns s; NULL is fine */
void inferd_storage_unref(inferd_storage *s);          /* NULL is fine */
void *inferd_storage_data(const inferd_storage *s);
size_t inferd_storage_bytes(const inferd_storage *s);
inferd_storage_kind inferd_storage_kind_of(const inferd_storage *s);
/** References held now (for tests and diagnostics). */
uint32_t inferd_storage_refs(const inferd_storage *s);

typedef struct inferd_tensor {
    inferd_elem elem;
    uint32_t ndim;                           /* 0 (a scalar) .. INFERD_TENSOR_DIMS_MAX */
    int64_t shape[INFERD_TENSOR_DIMS_MAX];   /* elements per dimension, >= 0 */
    int64_t strides[INFERD_TENSOR_DIMS_MAX]; /* in elements, may be negative */
    uint64_t offset;                         /* bytes from the storage's start */
    inferd_storage *storage;                 /* one reference, the tensor's */
} inferd_tensor;

/**
 * Make @p out over @p s (a reference is taken: the caller keeps its own).
 * @p strides NULL means contiguous (row-major). Every addressable element
 * must lie inside the storage, with @p offset aligned to the element size.
 * @return 0; INFERD_E_INVALID or INFERD_E_RANGE, the message naming the
 * dimension or value at fault.
 */
int inferd_tensor_init(inferd_tensor *out, inferd_elem elem, uint32_t ndim, const int64_t *shape,
                       const int64_t *strides, uint64_t offset, inferd_storage *s,
                       inferd_error *err);
/** A contiguous tensor on a new heap storage (zeroed). */
int inferd_tensor_alloc(inferd_tensor *out, inferd_elem elem, uint32_t ndim, const int64_t *shape,
                        inferd_error *err);
/** Drop @p t's reference and clear it; a cleared tensor is fine. */
void inferd_tensor_fini(inferd_tensor *t);
/** A second tensor on the same storage (a new reference). */
void inferd_tensor_share(inferd_tensor *out, const inferd_tensor *t);

/** Elements (the product of the shape; 1 for a scalar). */
uint64_t inferd_tensor_numel(const inferd_tensor *t);
/** Bytes of its elements laid out contiguously. */
uint64_t inferd_tensor_nbytes(const inferd_tensor *t);
/** Row-major contiguous (strides as a contiguous tensor's, for dims > 1)? */
bool inferd_tensor_is_contiguous(const inferd_tensor *t);
/** Its first element (the storage's data plus the offset). */
void *inferd_tensor_data(const inferd_tensor *t);

/* ---- DLPack 0.6 (struct DLManagedTensor, <dlpack/dlpack.h>) ---- */

struct DLManagedTensor;

/**
 * Export @p t (CPU device) as a DLManagedTensor that holds a reference to
 * its storage until the consumer calls its deleter. Zero copy.
 * @return 0; INFERD_E_UNSUPPORTED (BYTES has no DLPack type);
 * INFERD_E_NOMEM.
 */
int inferd_tensor_to_dlpack(const inferd_tensor *t, struct DLManagedTensor **out_m,
                            inferd_error *err);
/**
 * Import @p m as @p out, zero copy: @p m is taken (its deleter runs when
 * the storage's last reference goes, or at once on failure). Only the CPU
 * device (kDLCPU, or kDLCUDAHost: host memory) and the types above with one
 * lane; an 8-bit unsigned type imports as U8 (DLPack 0.6 has no bool).
 * @return 0; INFERD_E_UNSUPPORTED (device or type), INFERD_E_INVALID (a
 * shape or stride that does not describe memory, more than 8 dims),
 * INFERD_E_NOMEM.
 */
int inferd_tensor_from_dlpack(struct DLManagedTensor *m, inferd_tensor *out, inferd_error *err);

#endif
