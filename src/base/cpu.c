/* cpuid-based ISA detection, cached after the first call. Checks both the
 * instruction-set bits and that the OS saves the AVX / AVX-512 register
 * state (XCR0), so a kernel is only chosen where it can run. */
#include "inferd/cpu.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

inferd_isa inferd_cpu_isa_hw(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return INFERD_ISA_SCALAR;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), f16c = c & (1u << 29);
    if (!osxsave || !fma || !f16c)
        return INFERD_ISA_SCALAR;
    const uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) /* SSE and AVX state */
        return INFERD_ISA_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return INFERD_ISA_SCALAR;
    const bool avx2 = b & (1u << 5);
    if (!avx2)
        return INFERD_ISA_SCALAR;
    const bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) &&
                        (b & (1u << 31)) && (c & (1u << 11)) /* F DQ BW VL VNNI */;
    if (avx512 && (xcr0 & 0xe0) == 0xe0) /* opmask and ZMM state */
        return INFERD_ISA_AVX512;
    return INFERD_ISA_AVX2;
#else
    return INFERD_ISA_SCALAR;
#endif
}

inferd_isa inferd_cpu_isa(void)
{
    static atomic_int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        inferd_isa isa = inferd_cpu_isa_hw();
        const char *env = getenv("INFERD_ISA");
        if (env) {
            inferd_isa cap = isa;
            if (strcmp(env, "scalar") == 0)
                cap = INFERD_ISA_SCALAR;
            else if (strcmp(env, "avx2") == 0)
                cap = INFERD_ISA_AVX2;
            if (cap < isa)
                isa = cap;
        }
        v = (int)isa;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (inferd_isa)v;
}

const char *inferd_isa_name(inferd_isa isa)
{
    switch (isa) {
    case INFERD_ISA_AVX512: return "avx512";
    case INFERD_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}
