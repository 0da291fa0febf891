/* Element types of tensors, numbered as in GGUF (ggml_type). Quantized types
 * store rows as blocks of `block_size` elements in `type_size` bytes.
 *
 *  id  name  block  bytes  layout (see engine/quant.h for the structs)
 *   0  F32       1      4  float
 *   1  F16       1      2  IEEE half
 *   2  Q4_0     32     18  f16 d; u8 qs[16]          x = d*(q-8)
 *   3  Q4_1     32     20  f16 d, m; u8 qs[16]       x = d*q + m
 *   6  Q5_0     32     22  f16 d; u8 qh[4]; qs[16]   x = d*(q-16)
 *   7  Q5_1     32     24  f16 d, m; qh[4]; qs[16]   x = d*q + m
 *   8  Q8_0     32     34  f16 d; i8 qs[32]          x = d*q
 *   9  Q8_1     32     36  f16 d, s; i8 qs[32]       x = d*q, s = d*sum(q)
 *  10..15 K-quants (Q2_K..Q8_K), 256-element super-blocks, among them
 *  12  Q4_K    256    144  f16 d, dmin; u8 scales[12]; qs[128]
 *                                             x = d*sc_s*q - dmin*m_s (s: 32)
 *  13  Q5_K    256    176  f16 d, dmin; u8 scales[12]; qh[32]; qs[128]
 *                                             x = d*sc_s*q - dmin*m_s (s: 32)
 *  14  Q6_K    256    210  u8 ql[128], qh[64]; i8 scales[16]; f16 d
 *                                             x = d*sc_s*(q-32)       (s: 16)
 *  15  Q8_K    256    292  f32 d; i8 qs[256]; i16 bsums[16]
 *                                             x = d*q (activations only)
 *  20  IQ4_NL   32     18  f16 d; u8 qs[16]          x = d*kv[q] (16 fixed values)
 *  23  IQ4_XS  256    136  f16 d; u16 scales_h; u8 scales_l[4]; qs[128]
 *                                             x = d*ls_s*kv[q]        (s: 32)
 *  30  BF16      1      2  bfloat16
 */
#ifndef INFERD_DTYPE_H
#define INFERD_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum inferd_dtype {
    INFERD_DTYPE_F32 = 0,
    INFERD_DTYPE_F16 = 1,
    INFERD_DTYPE_Q4_0 = 2,
    INFERD_DTYPE_Q4_1 = 3,
    INFERD_DTYPE_Q5_0 = 6,
    INFERD_DTYPE_Q5_1 = 7,
    INFERD_DTYPE_Q8_0 = 8,
    INFERD_DTYPE_Q8_1 = 9,
    INFERD_DTYPE_Q2_K = 10,
    INFERD_DTYPE_Q3_K = 11,
    INFERD_DTYPE_Q4_K = 12,
    INFERD_DTYPE_Q5_K = 13,
    INFERD_DTYPE_Q6_K = 14,
    INFERD_DTYPE_Q8_K = 15,
    INFERD_DTYPE_IQ4_NL = 20,
    INFERD_DTYPE_IQ4_XS = 23,
    INFERD_DTYPE_I8 = 24,
    INFERD_DTYPE_I16 = 25,
    INFERD_DTYPE_I32 = 26,
    INFERD_DTYPE_I64 = 27,
    INFERD_DTYPE_F64 = 28,
    INFERD_DTYPE_BF16 = 30,
    INFERD_DTYPE_COUNT = 40,
} inferd_dtype;

typedef struct inferd_dtype_info {
    const char *name;    /* "Q4_0"; NULL for ids GGUF does not define */
    uint32_t block_size; /* elements per block (1 for plain types) */
    uint32_t type_size;  /* bytes per block */
} inferd_dtype_info;

/** Traits of @p type, or NULL for an unknown id. Thread: any. */
const inferd_dtype_info *inferd_dtype_get(uint32_t type);
/** Name of @p type, "unknown" if none. */
const char *inferd_dtype_name(uint32_t type);
/** Parse a type name (case-insensitive: "q4_0", "F16"); -1 if unknown. */
int inferd_dtype_parse(const char *name);
/**
 * Bytes taken by @p n_elems elements of @p type; sets *out_bytes. Fails
 * (returns -1) for an unknown type, an n_elems that is not a whole number
 * of blocks, or overflow of SIZE_MAX.
 */
int inferd_dtype_nbytes(uint32_t type, uint64_t n_elems, uint64_t *out_bytes);

#endif
