/* AVX2 + FMA + F16C kernels of Q2_K, Q3_K, IQ4_NL and IQ4_XS (maddubs and
 * madd form the exact lane sums, as ggml-cpu's AVX2 kernels); see
 * quant_k2_x86.h. Called only when cpuid reports AVX2. */
#define K2_VNNI 0
#include "quant_k2_x86.h"

K2_DEFINE(_avx2)
