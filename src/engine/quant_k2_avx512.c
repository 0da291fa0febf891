/* AVX-512 (VL + VNNI) kernels of Q2_K, Q3_K, IQ4_NL and IQ4_XS: the exact
 * lane sums by vpdpbusd on 256-bit vectors (unsigned weight bytes, offsets
 * removed through the activations' group sums); see quant_k2_x86.h. Called
 * only when cpuid reports AVX-512 with VNNI. */
#define K2_VNNI 1
#include "quant_k2_x86.h"

K2_DEFINE(_avx512)
