/* Private interface between the GGUF reader (gguf.c) and writer
 * (gguf_write.c). Not installed; nothing outside src/gguf includes it. */
#ifndef INFERD_GGUF_INTERNAL_H
#define INFERD_GGUF_INTERNAL_H

#include <stdint.h>

#include "inferd/gguf.h"

/** Maximum nesting of arrays inside arrays (an array of arrays is depth 2). */
#define INFERD__GGUF_MAX_ARRAY_DEPTH 4

/**
 * The serialized bytes of kv @p i's value as they sit in the file (for an
 * array: u32 element type, u64 count, elements), so the writer can copy any
 * value, nested arrays included, without decoding it. Returns the size in
 * bytes and points *out_ptr into the mapping; 0 and NULL if @p i is out of
 * range. Thread: any. Lifetime: the mapping of @p g.
 */
uint64_t inferd__gguf_kv_raw(const inferd_gguf *g, uint64_t i, const void **out_ptr);

/** Size in bytes of a fixed-size value type; 0 for string, array, unknown. */
uint32_t inferd__gguf_type_size(uint32_t type);

/** True if @p s[0..len) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF). */
int inferd__gguf_utf8_valid(const char *s, uint64_t len);

#endif
