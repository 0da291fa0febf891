/* The machine a worker runs on, described for operators (the NATS
 * registration, status pages): CPU model and count, the x86 ISA extensions,
 * memory, GPUs. Read from /proc and /sys only (no subprocess); every file is
 * optional. What the kernels may use is cpu.h's business, not this one's. */
#ifndef INFERD_HOST_H
#define INFERD_HOST_H

#include <stdint.h>

#include "inferd/error.h"

/* ISA extensions, one bit each, in the order operators see them listed.
 * They are the kernel's /proc/cpuinfo "flags" of the first CPU: the CPU has
 * the instructions *and* the OS saves their registers. inferd_cpu_isa()
 * (cpu.h) is what the kernels run, decided from cpuid: it needs a whole set
 * (AVX2 = avx2 fma f16c; AVX512 = avx512f bw vl dq avx512_vnni), may be capped
 * by $INFERD_ISA, and so can be lower than these bits, never higher. */
/* clang-format off */
enum {
    INFERD_HOST_ISA_SSE4_2      = 1u << 0,  /* "sse4_2" */
    INFERD_HOST_ISA_AVX         = 1u << 1,  /* "avx" */
    INFERD_HOST_ISA_AVX2        = 1u << 2,  /* "avx2" */
    INFERD_HOST_ISA_FMA         = 1u << 3,  /* "fma" */
    INFERD_HOST_ISA_F16C        = 1u << 4,  /* "f16c" */
    INFERD_HOST_ISA_AVX512F     = 1u << 5,  /* "avx512f" */
    INFERD_HOST_ISA_AVX512BW    = 1u << 6,  /* "avx512bw" */
    INFERD_HOST_ISA_AVX512VL    = 1u << 7,  /* "avx512vl" */
    INFERD_HOST_ISA_AVX512DQ    = 1u << 8,  /* "avx512dq" */
    INFERD_HOST_ISA_AVX512_VNNI = 1u << 9,  /* "avx512_vnni" */
    INFERD_HOST_ISA_AVX_VNNI    = 1u << 10, /* "avx_vnni" */
    INFERD_HOST_ISA_AVX512_BF16 = 1u << 11, /* "avx512_bf16" */
    INFERD_HOST_ISA_AMX_TILE    = 1u << 12, /* "amx_tile" */
    INFERD_HOST_ISA_AMX_INT8    = 1u << 13, /* "amx_int8" */
    INFERD_HOST_ISA_COUNT       = 14,       /* bit indices are 0..COUNT-1 */
};
/* clang-format on */

/** The /proc/cpuinfo name of ISA bit @p bit_index (0 is "sse4_2", the bit
 * INFERD_HOST_ISA_SSE4_2); NULL when bit_index >= INFERD_HOST_ISA_COUNT.
 * To list the present extensions in order:
 *   for (unsigned i = 0; i < INFERD_HOST_ISA_COUNT; i++)
 *       if (info.isa & (1u << i)) add(inferd_host_isa_name(i));
 * Static strings. Thread: any. */
const char *inferd_host_isa_name(unsigned bit_index);

#define INFERD_HOST_GPUS_MAX 16

typedef struct inferd_host_gpu {
    uint32_t index;        /* position in inferd_host_info.gpus */
    char vendor[16];       /* "nvidia", "amd" or "intel" */
    char model[128];       /* "NVIDIA H100 80GB HBM3"; "unknown" when not known */
    char bus_id[32];       /* PCI address, e.g. "0000:01:00.0" */
    uint64_t memory_bytes; /* VRAM; 0 when not known (only amdgpu says) */
} inferd_host_gpu;

typedef struct inferd_host_info {
    char cpu_model[128];          /* "model name" of the first CPU; "unknown" if not known */
    uint32_t n_cpus;              /* online logical CPUs (>= 1), not the process's share */
    uint32_t isa;                 /* INFERD_HOST_ISA_* bits */
    uint64_t mem_total_bytes;     /* MemTotal of /proc/meminfo; 0 when unknown */
    uint64_t mem_available_bytes; /* MemAvailable; 0 when unknown */
    uint32_t n_gpus;              /* 0..INFERD_HOST_GPUS_MAX */
    inferd_host_gpu gpus[INFERD_HOST_GPUS_MAX]; /* [n_gpus] */
} inferd_host_info;

/**
 * Describe this machine in @p out. Fills what it can: a missing or
 * unreadable file leaves its fields "unknown" / 0 (n_cpus 1) and is not an
 * error.
 *
 * Sources: the CPU model and ISA flags from /proc/cpuinfo; n_cpus from
 * /sys/devices/system/cpu/online (else the "processor" entries of
 * /proc/cpuinfo); memory from /proc/meminfo. CPUs and memory are the
 * machine's, not the process's affinity mask or cgroup limits.
 *
 * GPUs: first those the NVIDIA driver lists in
 * /proc/driver/nvidia/gpus/<bus id>/information ("Model:"), by bus id, which
 * is nvidia-smi's order; then the display-class PCI devices
 * (/sys/bus/pci/devices/<bus id>/class 0x03xxxx) of NVIDIA, AMD or Intel not
 * already listed, by bus id, with the model from the device's product_name
 * and the memory from its mem_info_vram_total where the driver (amdgpu) has
 * them. Other display devices (BMC and virtual VGA) are not GPUs and are
 * left out; so are any past INFERD_HOST_GPUS_MAX.
 *
 * @param out  caller's storage, overwritten.
 * @return 0. Thread: any (no shared state; it opens files, so not in a
 * signal handler).
 */
int inferd_host_read(inferd_host_info *out, inferd_error *err);

/**
 * inferd_host_read with every path prefixed by @p root: "/tmp/x" reads
 * /tmp/x/proc/cpuinfo. For tests, on a fake tree.
 *
 * @param root  borrowed; "" or NULL is the real machine; at most 2047 bytes.
 * @return 0; INFERD_E_INVALID when root is too long (@p out untouched).
 * Thread: any.
 */
int inferd_host_read_at(const char *root, inferd_host_info *out, inferd_error *err);

#endif
