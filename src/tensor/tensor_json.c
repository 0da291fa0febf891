/* Tensor elements as JSON values (tensor_json.h). */
#include "inferd/tensor_json.h"

#include <string.h>

#include "inferd/fp16.h"

/* Elements are copied out with memcpy: tensor bytes may sit at any address
 * (binary data follows the JSON of a request at any offset). */
json_t *inferd_elem_to_json(inferd_elem e, const void *p)
{
    union {
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        int8_t i8;
        int16_t i16;
        int32_t i32;
        int64_t i64;
        inferd_f16 f16;
        inferd_bf16 bf16;
        float f32;
        double f64;
    } v;
    if (e == INFERD_ELEM_BYTES || (unsigned)e >= INFERD_ELEM_COUNT)
        return NULL;
    memcpy(&v, p, inferd_elem_size(e));
    switch (e) {
    case INFERD_ELEM_BOOL: return json_boolean(v.u8 != 0);
    case INFERD_ELEM_U8: return json_integer(v.u8);
    case INFERD_ELEM_U16: return json_integer(v.u16);
    case INFERD_ELEM_U32: return json_integer(v.u32);
    case INFERD_ELEM_U64: return json_integer((json_int_t)v.u64);
    case INFERD_ELEM_I8: return json_integer(v.i8);
    case INFERD_ELEM_I16: return json_integer(v.i16);
    case INFERD_ELEM_I32: return json_integer(v.i32);
    case INFERD_ELEM_I64: return json_integer(v.i64);
    case INFERD_ELEM_F16: return json_real(inferd_f16_to_f32(v.f16));
    case INFERD_ELEM_BF16: return json_real(inferd_bf16_to_f32(v.bf16));
    case INFERD_ELEM_F32: return json_real(v.f32);
    default: return json_real(v.f64);
    }
}

int inferd_elem_from_json(inferd_elem e, json_t *v, void *p)
{
    if (e == INFERD_ELEM_BOOL) {
        if (!json_is_boolean(v))
            return INFERD_E_INVALID_TYPE;
        *(uint8_t *)p = json_is_true(v);
        return 0;
    }
    if (e == INFERD_ELEM_F16 || e == INFERD_ELEM_BF16 || e == INFERD_ELEM_F32 ||
        e == INFERD_ELEM_F64) {
        if (!json_is_number(v))
            return INFERD_E_INVALID_TYPE;
        const double d = json_number_value(v);
        if (e == INFERD_ELEM_F64) {
            memcpy(p, &d, 8);
        } else if (e == INFERD_ELEM_F32) {
            const float f = (float)d;
            memcpy(p, &f, 4);
        } else if (e == INFERD_ELEM_F16) {
            const inferd_f16 h = inferd_f32_to_f16((float)d);
            memcpy(p, &h, 2);
        } else {
            const inferd_bf16 h = inferd_f32_to_bf16((float)d);
            memcpy(p, &h, 2);
        }
        return 0;
    }
    if (!json_is_integer(v) || e == INFERD_ELEM_BYTES)
        return INFERD_E_INVALID_TYPE;
    const json_int_t x = json_integer_value(v);
    static const struct {
        json_int_t lo, hi;
    } range[] = {
        [INFERD_ELEM_U8] = {0, 255},
        [INFERD_ELEM_U16] = {0, 65535},
        [INFERD_ELEM_U32] = {0, 4294967295ll},
        [INFERD_ELEM_U64] = {0, INT64_MAX},
        [INFERD_ELEM_I8] = {-128, 127},
        [INFERD_ELEM_I16] = {-32768, 32767},
        [INFERD_ELEM_I32] = {INT32_MIN, INT32_MAX},
        [INFERD_ELEM_I64] = {INT64_MIN, INT64_MAX},
    };
    if ((size_t)e >= sizeof(range) / sizeof(range[0]) || x < range[e].lo || x > range[e].hi)
        return INFERD_E_RANGE;
    const uint64_t u = (uint64_t)x; /* the low bytes, little-endian hosts */
    memcpy(p, &u, inferd_elem_size(e));
    return 0;
}
