/* cpuid-based ISA detection, cached after the first call. */
#include "inferd/cpu.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

inferd_isa inferd_cpu_isa_hw(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return INFERD_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        return INFERD_ISA_AVX2;
#endif
    return INFERD_ISA_SCALAR;
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
