/* IEEE half and bfloat16 conversions (scalar, exact, round-to-nearest-even),
 * shared by the GGUF writer, the kernels' scalar references and the tests. */
#ifndef INFERD_FP16_H
#define INFERD_FP16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t inferd_f16;
typedef uint16_t inferd_bf16;

static inline uint32_t inferd__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float inferd__bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float inferd_f16_to_f32(inferd_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) /* inf / nan */
        return inferd__bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return inferd__bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return inferd__bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

static inline inferd_f16 inferd_f32_to_f16(float f)
{
    uint32_t x = inferd__f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf / nan */
        return (inferd_f16)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (inferd_f16)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: subnormal or 0 */
        /* Adding 0.5 makes the FPU round the value to a multiple of 2^-24
         * with round-to-nearest-even. */
        float v = inferd__bits_f32(ax) + 0.5f;
        return (inferd_f16)(sign | (inferd__f32_bits(v) - 0x3f000000u));
    }
    uint32_t mant_odd = (ax >> 13) & 1u;
    ax += 0xc8000fffu + mant_odd; /* rebias exponent and round */
    return (inferd_f16)(sign | (ax >> 13));
}

static inline float inferd_bf16_to_f32(inferd_bf16 h)
{
    return inferd__bits_f32((uint32_t)h << 16);
}

static inline inferd_bf16 inferd_f32_to_bf16(float f)
{
    uint32_t u = inferd__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* nan: keep it quiet */
        return (inferd_bf16)((u >> 16) | 64);
    return (inferd_bf16)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

#endif
