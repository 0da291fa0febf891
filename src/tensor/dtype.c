/* Table of element types (GGUF numbering): names, block sizes, block bytes. */
#include "inferd/dtype.h"

#include <strings.h>

static const inferd_dtype_info dtype_table[INFERD_DTYPE_COUNT] = {
    [INFERD_DTYPE_F32] = {"F32", 1, 4},         [INFERD_DTYPE_F16] = {"F16", 1, 2},
    [INFERD_DTYPE_Q4_0] = {"Q4_0", 32, 18},     [INFERD_DTYPE_Q4_1] = {"Q4_1", 32, 20},
    [INFERD_DTYPE_Q5_0] = {"Q5_0", 32, 22},     [INFERD_DTYPE_Q5_1] = {"Q5_1", 32, 24},
    [INFERD_DTYPE_Q8_0] = {"Q8_0", 32, 34},     [INFERD_DTYPE_Q8_1] = {"Q8_1", 32, 36},
    [INFERD_DTYPE_Q2_K] = {"Q2_K", 256, 84},    [INFERD_DTYPE_Q3_K] = {"Q3_K", 256, 110},
    [INFERD_DTYPE_Q4_K] = {"Q4_K", 256, 144},   [INFERD_DTYPE_Q5_K] = {"Q5_K", 256, 176},
    [INFERD_DTYPE_Q6_K] = {"Q6_K", 256, 210},   [INFERD_DTYPE_Q8_K] = {"Q8_K", 256, 292},
    [INFERD_DTYPE_IQ4_NL] = {"IQ4_NL", 32, 18}, [INFERD_DTYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [INFERD_DTYPE_I8] = {"I8", 1, 1},           [INFERD_DTYPE_I16] = {"I16", 1, 2},
    [INFERD_DTYPE_I32] = {"I32", 1, 4},         [INFERD_DTYPE_I64] = {"I64", 1, 8},
    [INFERD_DTYPE_F64] = {"F64", 1, 8},         [INFERD_DTYPE_BF16] = {"BF16", 1, 2},
};

const inferd_dtype_info *inferd_dtype_get(uint32_t type)
{
    if (type >= INFERD_DTYPE_COUNT || !dtype_table[type].name)
        return NULL;
    return &dtype_table[type];
}

const char *inferd_dtype_name(uint32_t type)
{
    const inferd_dtype_info *t = inferd_dtype_get(type);
    return t ? t->name : "unknown";
}

int inferd_dtype_parse(const char *name)
{
    for (int i = 0; i < INFERD_DTYPE_COUNT; i++)
        if (dtype_table[i].name && strcasecmp(dtype_table[i].name, name) == 0)
            return i;
    return -1;
}

int inferd_dtype_nbytes(uint32_t type, uint64_t n_elems, uint64_t *out_bytes)
{
    const inferd_dtype_info *t = inferd_dtype_get(type);
    if (!t || n_elems % t->block_size != 0)
        return -1;
    uint64_t n_blocks = n_elems / t->block_size;
    if (n_blocks > SIZE_MAX / t->type_size)
        return -1;
    *out_bytes = n_blocks * t->type_size;
    return 0;
}
