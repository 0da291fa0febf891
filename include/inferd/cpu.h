/* CPU feature detection for run-time kernel selection. */
#ifndef INFERD_CPU_H
#define INFERD_CPU_H

typedef enum inferd_isa {
    INFERD_ISA_SCALAR = 0, /* portable C, the reference */
    INFERD_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    INFERD_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ + VNNI (and AVX2 set) */
} inferd_isa;

/** Best ISA this CPU supports, capped by $INFERD_ISA (scalar|avx2|avx512)
 * when set. Computed once. Thread: any. */
inferd_isa inferd_cpu_isa(void);
/** Best ISA the CPU supports, ignoring $INFERD_ISA. Thread: any. */
inferd_isa inferd_cpu_isa_hw(void);
const char *inferd_isa_name(inferd_isa isa);

#endif
