/* GGUF reader (mmap) and writer.
 *
 * File layout (little-endian), versions 2 and 3:
 *   offset  size  meaning
 *   0       4     magic "GGUF"
 *   4       4     u32 version (2 or 3)
 *   8       8     u64 n_tensors
 *   16      8     u64 n_kv
 *   24      ...   n_kv key/value pairs:
 *                   string key; u32 value type; value
 *                 n_tensors tensor infos:
 *                   string name; u32 n_dims (1..4); u64 ne[n_dims];
 *                   u32 type (inferd_dtype); u64 offset (from data start,
 *                   a multiple of the alignment)
 *                 padding to `general.alignment` (u32, default 32, power of 2)
 *   data    ...   tensor data
 * string = u64 length + bytes (no terminator; keys must be UTF-8).
 * value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool(u8),
 *   8 string, 9 array (u32 elem type, u64 count, elems), 10 u64, 11 i64,
 *   12 f64. Arrays of arrays are allowed by the format.
 *
 * Every count, length, offset, alignment, type and tensor extent is checked
 * against the file before use; a malformed file gives INFERD_E_FORMAT with
 * a message naming what is wrong and at which byte offset.
 */
#ifndef INFERD_GGUF_H
#define INFERD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "inferd/dtype.h"
#include "inferd/error.h"

typedef enum inferd_gguf_type {
    INFERD_GGUF_U8 = 0,
    INFERD_GGUF_I8 = 1,
    INFERD_GGUF_U16 = 2,
    INFERD_GGUF_I16 = 3,
    INFERD_GGUF_U32 = 4,
    INFERD_GGUF_I32 = 5,
    INFERD_GGUF_F32 = 6,
    INFERD_GGUF_BOOL = 7,
    INFERD_GGUF_STRING = 8,
    INFERD_GGUF_ARRAY = 9,
    INFERD_GGUF_U64 = 10,
    INFERD_GGUF_I64 = 11,
    INFERD_GGUF_F64 = 12,
} inferd_gguf_type;

#define INFERD_GGUF_MAX_DIMS 4
#define INFERD_GGUF_DEFAULT_ALIGNMENT 32

typedef struct inferd_gguf inferd_gguf;

/* A borrowed string inside the mapping (not NUL-terminated). */
typedef struct inferd_gguf_str {
    const char *ptr;
    uint64_t len;
} inferd_gguf_str;

typedef struct inferd_gguf_tensor {
    inferd_gguf_str name;
    uint32_t type;                     /* inferd_dtype */
    uint32_t n_dims;                   /* 1..4 */
    uint64_t ne[INFERD_GGUF_MAX_DIMS]; /* ne[0] = row length; unused dims 1 */
    uint64_t n_elems;
    uint64_t offset; /* from the start of the data section */
    uint64_t size_bytes;
    const void *data; /* inside the mapping */
} inferd_gguf_tensor;

/**
 * Open and validate a GGUF file through a read-only mmap.
 * @param path  borrowed.
 * @return 0; INFERD_E_IO (cannot open/stat/map: message names the path and
 * errno), INFERD_E_FORMAT (malformed: message names the field and offset),
 * INFERD_E_UNSUPPORTED (a version or tensor type this reader does not know),
 * INFERD_E_NOMEM. Thread: any. Lifetime: until inferd_gguf_close.
 */
int inferd_gguf_open(const char *path, inferd_gguf **out_gguf, inferd_error *err);
/* Flags of inferd_gguf_open_ex. */
#define INFERD_GGUF_OPEN_NO_MMAP \
    1u /* read the whole file into memory instead
                                     * of mapping it: later changes to the
                                     * file cannot reach the loaded data */

/** inferd_gguf_open with @p flags (INFERD_GGUF_OPEN_*). Without NO_MMAP the
 * mapping is registered with the SIGBUS guard (mapguard.h) and the file
 * stays open, so inferd_gguf_check_file can tell when it changes. */
int inferd_gguf_open_ex(const char *path, unsigned flags, inferd_gguf **out_gguf,
                        inferd_error *err);

/**
 * Can the data of @p g still be trusted? A mapped file that was truncated
 * or written in place since the open (its size or mtime changed, or a read
 * of the mapping faulted past the new end and now reads zeros) cannot be.
 * Costs one fstat and an atomic load. Once failed it keeps failing.
 * @return 0; INFERD_E_IO with "model file 'PATH' changed on disk while
 * loaded (...); reload needed". Always 0 for memory and NO_MMAP handles.
 * Thread: any.
 */
int inferd_gguf_check_file(inferd_gguf *g, inferd_error *err);

/* Identity of a file, to tell one version of a path from another. */
typedef struct inferd_file_id {
    uint64_t dev, ino;
    uint64_t size_bytes;
    int64_t mtime_ns;
} inferd_file_id;

/**
 * Does the path @p g was opened from now name other contents: another file
 * (a rename over it), or the same file with another size or mtime? What is
 * loaded may still be intact (see inferd_gguf_check_file); a reload would
 * read the new contents. One stat. A missing path is not a change.
 * @param out_now  when true is returned, the identity of the file now at
 *                 the path (may be NULL).
 * Thread: any.
 */
bool inferd_gguf_path_changed(const inferd_gguf *g, inferd_file_id *out_now);

/** The same over a caller's buffer (borrowed; must outlive the handle). Used
 * by the fuzzer and tests. */
int inferd_gguf_open_memory(const void *data, size_t len, inferd_gguf **out_gguf,
                            inferd_error *err);
/** Unmap and free. Accepts NULL. */
void inferd_gguf_close(inferd_gguf *g);

uint32_t inferd_gguf_version(const inferd_gguf *g);
uint32_t inferd_gguf_alignment(const inferd_gguf *g);
uint64_t inferd_gguf_file_size(const inferd_gguf *g);
uint64_t inferd_gguf_data_offset(const inferd_gguf *g);  /* start of data */
const void *inferd_gguf_file_data(const inferd_gguf *g); /* whole mapping */

/* --- key/value metadata ------------------------------------------------- */
uint64_t inferd_gguf_n_kv(const inferd_gguf *g);
/** Index of @p key (NUL-terminated), or -1. */
int64_t inferd_gguf_find_key(const inferd_gguf *g, const char *key);
inferd_gguf_str inferd_gguf_kv_key(const inferd_gguf *g, uint64_t i);
inferd_gguf_type inferd_gguf_kv_type(const inferd_gguf *g, uint64_t i);
/** For arrays: element type and count. */
inferd_gguf_type inferd_gguf_kv_arr_type(const inferd_gguf *g, uint64_t i);
uint64_t inferd_gguf_kv_arr_n(const inferd_gguf *g, uint64_t i);
/** For arrays of fixed-size numbers: pointer to the packed little-endian
 * elements inside the mapping (may be unaligned: read with memcpy). */
const void *inferd_gguf_kv_arr_data(const inferd_gguf *g, uint64_t i);
/** For arrays of strings: element j. */
inferd_gguf_str inferd_gguf_kv_arr_str(const inferd_gguf *g, uint64_t i, uint64_t j);
/** For a string value. */
inferd_gguf_str inferd_gguf_kv_str(const inferd_gguf *g, uint64_t i);
/** For a fixed-size scalar value (not string or array): pointer to its
 * little-endian bytes inside the mapping (may be unaligned: read with
 * memcpy); NULL for strings and arrays. */
const void *inferd_gguf_kv_data(const inferd_gguf *g, uint64_t i);
/** Short name of a value type: "u8", "i32", "f64", "bool", "string",
 * "array"...; "?" for an unknown value. Thread: any. */
const char *inferd_gguf_type_name(inferd_gguf_type type);

/**
 * Typed getters by key. Each returns 0 and writes *out on success;
 * INFERD_E_NOT_FOUND if the key is absent (err untouched), INFERD_E_FORMAT
 * if it has a type that cannot be converted without loss (message names the
 * key and both types). Integer getters accept any integer type whose value
 * fits; get_f32 accepts f32, f64 and integers; get_bool accepts bool.
 */
int inferd_gguf_get_u32(const inferd_gguf *g, const char *key, uint32_t *out, inferd_error *err);
int inferd_gguf_get_u64(const inferd_gguf *g, const char *key, uint64_t *out, inferd_error *err);
int inferd_gguf_get_i64(const inferd_gguf *g, const char *key, int64_t *out, inferd_error *err);
int inferd_gguf_get_f32(const inferd_gguf *g, const char *key, float *out, inferd_error *err);
int inferd_gguf_get_bool(const inferd_gguf *g, const char *key, bool *out, inferd_error *err);
int inferd_gguf_get_str(const inferd_gguf *g, const char *key, inferd_gguf_str *out,
                        inferd_error *err);

/* --- tensors ------------------------------------------------------------ */
uint64_t inferd_gguf_n_tensors(const inferd_gguf *g);
const inferd_gguf_tensor *inferd_gguf_tensor_at(const inferd_gguf *g, uint64_t i);
/** Tensor named @p name (NUL-terminated), or NULL. */
const inferd_gguf_tensor *inferd_gguf_find_tensor(const inferd_gguf *g, const char *name);

/* --- writer -------------------------------------------------------------- */
typedef struct inferd_gguf_writer inferd_gguf_writer;

/** Start a GGUF v3 file description in memory. Thread: one at a time. */
int inferd_gguf_writer_create(inferd_gguf_writer **out_w, inferd_error *err);
void inferd_gguf_writer_destroy(inferd_gguf_writer *w);
/* Metadata (keys and values copied). A key set twice is INFERD_E_EXISTS. */
int inferd_gguf_writer_set_u32(inferd_gguf_writer *w, const char *key, uint32_t v,
                               inferd_error *err);
int inferd_gguf_writer_set_i32(inferd_gguf_writer *w, const char *key, int32_t v,
                               inferd_error *err);
int inferd_gguf_writer_set_u64(inferd_gguf_writer *w, const char *key, uint64_t v,
                               inferd_error *err);
int inferd_gguf_writer_set_f32(inferd_gguf_writer *w, const char *key, float v, inferd_error *err);
int inferd_gguf_writer_set_bool(inferd_gguf_writer *w, const char *key, bool v, inferd_error *err);
int inferd_gguf_writer_set_str(inferd_gguf_writer *w, const char *key, const char *v,
                               inferd_error *err);
/** Array of fixed-size numbers (@p type not STRING/ARRAY): @p n elements,
 * packed little-endian at @p data (copied). */
int inferd_gguf_writer_set_arr(inferd_gguf_writer *w, const char *key, inferd_gguf_type type,
                               const void *data, uint64_t n, inferd_error *err);
/** Array of @p n strings (copied). */
int inferd_gguf_writer_set_arr_str(inferd_gguf_writer *w, const char *key, const char *const *strs,
                                   uint64_t n, inferd_error *err);
/** Copy every key/value of @p src whose key starts with @p prefix (all if
 * NULL or ""), e.g. "tokenizer." to reuse a vocabulary. */
int inferd_gguf_writer_copy_kv(inferd_gguf_writer *w, const inferd_gguf *src, const char *prefix,
                               inferd_error *err);
/**
 * Add a tensor. @p data (size implied by type and dims) is borrowed until
 * inferd_gguf_writer_write returns; it may be NULL when @p fill is given:
 * then fill(ctx, dst, size) writes the bytes at write time (for huge
 * generated tensors).
 */
typedef int (*inferd_gguf_fill_fn)(void *ctx, void *dst, uint64_t size_bytes, inferd_error *err);
int inferd_gguf_writer_add_tensor(inferd_gguf_writer *w, const char *name, uint32_t type,
                                  uint32_t n_dims, const uint64_t *ne, const void *data,
                                  inferd_gguf_fill_fn fill, void *fill_ctx, inferd_error *err);
/** Write the file to @p path (created or truncated, written to a temp name
 * then renamed). INFERD_E_IO on failure. */
int inferd_gguf_writer_write(inferd_gguf_writer *w, const char *path, inferd_error *err);

#endif
