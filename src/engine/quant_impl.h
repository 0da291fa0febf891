/* Private to the kernels and the matmul: the per-ISA tables that quant.c
 * merges, the panel (tokens-in-lanes) kernels the matmul uses for prompts,
 * and the order of operations every dot product follows, so that all ISAs
 * and every tile shape give the same bits.
 *
 * The canonical order:
 *  - F32/F16/BF16: sixteen f32 lanes acc[0..15] from +0; element 16i+l goes
 *    to lane l, acc[l] = fma(w, x, acc[l]), i ascending over whole groups of
 *    16; then v[l] = acc[l] + acc[l+8] (l < 8),
 *    r = ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7)) (ggml's hsum_float_8), and the
 *    n % 16 tail elements in order: r = fma(w, x, r).
 *  - Block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 rows against a Q8_0 or
 *    Q8_1 row): ggml-cpu's AVX2 order (ggml_vec_dot_q*_q8_*), which
 *    llama.cpp c392e5094 runs on AVX2 and AVX-512 machines alike for
 *    generation, and which llamafile's tinyBLAS_Q0_AVX (its prompt GEMM
 *    for Q8_0, Q5_0 and Q4_0) reproduces. Eight f32 lanes acc[0..7] from
 *    +0 (Q4_1/Q5_1 also one summs from +0). For each block b in order,
 *    with dw_b, da_b the f16 scales widened (mw_b the weight's minimum,
 *    sa_b Q8_1's s):
 *        d_b    = dw_b * da_b                    (exact: two f16 values)
 *        isum_bl = sum_{j = 4l..4l+3} qw_j * qa_j (exact int32, l = 0..7)
 *        acc[l] = fma(d_b, (float)isum_bl, acc[l])
 *        summs  = fma(mw_b, sa_b, summs)          (Q4_1/Q5_1)
 *    with qw_j element j of the weight block, offset removed (Q4_0: q - 8,
 *    Q5_0: q - 16; element order as in quant.h: for the 4-bit formats the
 *    low nibbles are elements 0..15, the high ones 16..31), qa_j the
 *    activation's quant j. Result hsum8(acc) (+ summs for Q4_1/Q5_1) with
 *    hsum8(x) = ((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7)) (ggml's
 *    hsum_float_8). GCC fuses ggml's `summs += m * s` into one
 *    vfmadd231ss (checked in c392e5094's libggml-cpu.so). The lane sums
 *    are exact however they are formed (ggml: maddubs of |w| and sign(a, w)
 *    and madd, or vpdpbusd; ours also vpdpbusd of unsigned weights from a
 *    start of -offset * (lane sum of a), or of a + 128 against signed
 *    weights from -128 * (lane sum of w)), so any vectorization over
 *    elements, rows or tokens that keeps the eight lanes apart gives the
 *    same bits; |isum_bl| <= 4 * 128 * 128 = 2^16.
 *    Q4_0 matrices whose row count is a multiple of 8 are the exception:
 *    c392e5094 on an AVX2 or AVX-512 machine repacks those at load
 *    (ggml-cpu-aarch64.cpp, q4_0_8x8_q8_0: its "CPU_AARCH64" buffer type
 *    is used on x86 too), and its ggml_gemv/gemm_q4_0_8x8_q8_0 kernels sum
 *    one fma per block of the whole block sum, for prompts and generation:
 *        acc = fma((float)isum_b, dw_b * da_b, acc)     (acc from +0)
 *    with isum_b the exact sum of the block's 32 products; the result is
 *    acc. inferd follows it (inferd_kernels.vec_dot_rows8 / mdot_rows8; no
 *    panels: the AVX-512 tiles of 8 tokens are as fast), and the
 *    eight-lane order for other Q4_0 matrices.
 *  - K-quants (Q4_K, Q5_K, Q6_K rows against a Q8_K row): ggml-cpu's AVX2
 *    order, which llama.cpp runs on AVX2 and AVX-512 machines alike, for
 *    prompts and generation. Eight f32 lanes acc[0..7] from +0 (Q4_K also
 *    four acc_m[0..3], Q5_K one summs, all from +0). For each super-block
 *    b in order, with da Q8_K's f32 d and dw, dminw the f16 scales widened:
 *        d    = da * dw                (rounded to f32)
 *        dmin = (-da) * dminw          (rounded; Q4_K/Q5_K)
 *    and eight exact int32 lane sums: lane k (0..7) of each 32-element
 *    piece i (elements 32i..32i+31, i = 0..7) holds its elements
 *    32i + 4k..32i + 4k + 3, each lane's dot product with the activation's
 *    quants times the scale of the sub-block holding those four elements:
 *        sumi_k = sum_i sc_(s(i, k)) * sum_{e = 32i+4k..32i+4k+3} q_e * a_e
 *    with s(i, k) = i for Q4_K/Q5_K (sub-blocks of 32) and 2i + k / 4 for
 *    Q6_K (sub-blocks of 16), and Q6_K's q_e its stored value minus 32. Then
 *        acc[k] = fma(d, (float)sumi_k, acc[k])            (k = 0..7)
 *    and with q8s_s = bsums[2s] + bsums[2s + 1], the sum of sub-block s's
 *    activation quants (exact: from_float writes bsums as exact sums):
 *        Q4_K: prod_p = m_2p * q8s_2p + m_2p+1 * q8s_2p+1  (p = 0..3)
 *              acc_m[p] = fma(dmin, (float)prod_p, acc_m[p])
 *        Q5_K: t = sum_s m_s * q8s_s;  summs = fma(dmin, (float)t, summs)
 *    (GCC fuses ggml's `summs += dmin * t` into one vfmadd231ss). The
 *    result, with hsum8(x) = ((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7)) (ggml's
 *    hsum_float_8):
 *        Q4_K: hsum8(acc) + ((acc_m0 + acc_m2) + (acc_m1 + acc_m3))
 *        Q5_K: hsum8(acc) + summs
 *        Q6_K: hsum8(acc)
 *    (float) rounds to nearest even. The lane sums are exact however they
 *    are formed (ggml: maddubs pairs, madd by the broadcast scale; Q6_K's
 *    offset as maddubs(q, a) - maddubs(32, a)), so any vectorization over
 *    elements, rows or tokens that keeps the eight lanes apart gives the
 *    same bits. Every partial sum fits int32 (|a| <= 128): Q4_K
 *    |sumi_k| <= 8*63*4*15*128 < 2^22, Q5_K < 2^23, Q6_K <= 8*128*4*32*128
 *    = 2^24; |prod_p| and |t| <= 8*63*32*128 < 2^21.
 */
#ifndef INFERD_ENGINE_QUANT_IMPL_H
#define INFERD_ENGINE_QUANT_IMPL_H

#include "inferd/quant.h"

#include <string.h>

/* ggml's nearest_int: round to nearest even through the f32 mantissa
 * (|v| < 2^22). Shared by the reference quantizers (quant_k.c, quant_k2.c). */
static inline int inferd__nearest_int(float v)
{
    const float t = v + 12582912.0f;
    uint32_t u;
    memcpy(&u, &t, sizeof(u));
    return (int)(u & 0x007fffffu) - 0x00400000;
}

static inline int inferd__clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The value of largest magnitude among x[0..n) (the first of equals; 0 when
 * all are 0), its magnitude in *amax: the scan of ggml's reference
 * quantizers (a strict > keeps the first). */
static inline float inferd__max_by_magnitude(const float *x, int n, float *amax)
{
    float max = 0, am = 0;
    for (int i = 0; i < n; i++) {
        const float a = x[i] < 0 ? -x[i] : x[i];
        if (a > am) {
            am = a;
            max = x[i];
        }
    }
    *amax = am;
    return max;
}

/* ggml's make_qkx2_quants, the asymmetric sub-block fit of the K-quant
 * reference quantizers (quant_k.c). */
float inferd__fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                            float *out_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                            int use_mad);

/* Per-ISA tables indexed by inferd_dtype; a NULL member falls back to the
 * next lower ISA. Only the entries whose `type` is set are meaningful. */
extern const inferd_kernels inferd__kernels_avx2[INFERD_DTYPE_COUNT];
extern const inferd_kernels inferd__kernels_avx512[INFERD_DTYPE_COUNT];

/* K-quant kernels (quant_k.c, quant_k_avx2.c, quant_k_avx512.c), entered
 * in the tables above and in quant.c's scalar one. Signatures are those of
 * the inferd_kernels members. */
void inferd__q4_k_to_float(const void *src, float *dst, int64_t n);
void inferd__q5_k_to_float(const void *src, float *dst, int64_t n);
void inferd__q6_k_to_float(const void *src, float *dst, int64_t n);
void inferd__q8_k_to_float(const void *src, float *dst, int64_t n);
void inferd__q4_k_quantize(const float *src, void *dst, int64_t n);
void inferd__q5_k_quantize(const float *src, void *dst, int64_t n);
void inferd__q6_k_quantize(const float *src, void *dst, int64_t n);
void inferd__q8_k_quantize(const float *src, void *dst, int64_t n);
float inferd__q4_k_dot(int64_t n, const void *w, const void *a);
float inferd__q5_k_dot(int64_t n, const void *w, const void *a);
float inferd__q6_k_dot(int64_t n, const void *w, const void *a);
void inferd__q4_k_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a,
                       size_t a_stride, int64_t n_toks, float *out, size_t out_stride);
void inferd__q5_k_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a,
                       size_t a_stride, int64_t n_toks, float *out, size_t out_stride);
void inferd__q6_k_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a,
                       size_t a_stride, int64_t n_toks, float *out, size_t out_stride);

void inferd__q4_k_to_float_avx2(const void *src, float *dst, int64_t n);
void inferd__q5_k_to_float_avx2(const void *src, float *dst, int64_t n);
void inferd__q6_k_to_float_avx2(const void *src, float *dst, int64_t n);
void inferd__q8_k_to_float_avx2(const void *src, float *dst, int64_t n);
void inferd__q8_k_quantize_avx2(const float *src, void *dst, int64_t n);
float inferd__q4_k_dot_avx2(int64_t n, const void *w, const void *a);
float inferd__q5_k_dot_avx2(int64_t n, const void *w, const void *a);
float inferd__q6_k_dot_avx2(int64_t n, const void *w, const void *a);
void inferd__q4_k_mdot_avx2(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                            const void *a, size_t a_stride, int64_t n_toks, float *out,
                            size_t out_stride);
void inferd__q5_k_mdot_avx2(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                            const void *a, size_t a_stride, int64_t n_toks, float *out,
                            size_t out_stride);
void inferd__q6_k_mdot_avx2(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                            const void *a, size_t a_stride, int64_t n_toks, float *out,
                            size_t out_stride);

float inferd__q4_k_dot_avx512(int64_t n, const void *w, const void *a);
float inferd__q5_k_dot_avx512(int64_t n, const void *w, const void *a);
float inferd__q6_k_dot_avx512(int64_t n, const void *w, const void *a);
void inferd__q4_k_mdot_avx512(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                              const void *a, size_t a_stride, int64_t n_toks, float *out,
                              size_t out_stride);
void inferd__q5_k_mdot_avx512(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                              const void *a, size_t a_stride, int64_t n_toks, float *out,
                              size_t out_stride);
void inferd__q6_k_mdot_avx512(int64_t n, const void *w, size_t w_stride, int64_t n_rows,
                              const void *a, size_t a_stride, int64_t n_toks, float *out,
                              size_t out_stride);

/* ---- Q2_K, Q3_K, IQ4_NL, IQ4_XS (quant_k2.c, quant_k2_avx2.c,
 * quant_k2_avx512.c) --------------------------------------------------------
 *
 * Orders (ggml-cpu's x86 `__AVX2__` kernels, which llama.cpp c392e5094 also
 * runs on AVX-512 machines; GCC contracts nothing in them beyond the
 * explicit _mm256_fmadd_ps, checked with objdump). hsum8 as above; "lanes"
 * are eight exact int32 sums, lane k of each 32-element piece p holding its
 * elements 32p + 4k..32p + 4k + 3 times the scale of the sub-block that
 * holds them; (float) rounds to nearest even; acc from +0.
 *  - Q2_K (ggml_vec_dot_q2_K_q8_K), per super-block in order, with
 *    d = da * dw, dmin = (-da) * dminw (each rounded to f32):
 *        prod_k = m_2k * bsums[2k] + m_2k+1 * bsums[2k+1]  (m_s = sc_s >> 4)
 *        acc[k] = fma(dmin, (float)prod_k, acc[k])       then
 *        acc[k] = fma(d, (float)sumi_k, acc[k])           (scales sc_s & 15)
 *    result hsum8(acc). Pieces' lane k lies in sub-block 2p + k / 4.
 *  - Q3_K (ggml_vec_dot_q3_K_q8_K): d = da * dw; sumi_k over (q_e - 4) and
 *    the signed 6-bit scales; acc[k] = fma(d, (float)sumi_k, acc[k]);
 *    hsum8(acc).
 *  - IQ4_XS (ggml_vec_dot_iq4_xs_q8_K): d = dw * da; sumi_k = sum over the
 *    eight sub-blocks b of ls_b * (lane k of kv[q] . a); acc[k] = fma(d,
 *    (float)sumi_k, acc[k]); hsum8(acc).
 *  - IQ4_NL has two orders, like F32/F16 (inferd_kernels_dot):
 *    vec_dot (prompts: llama.cpp hands every mat-mul of >= 2 tokens to
 *    llamafile's tinyBLAS_Q0_AVX, whose gemm kernels all do this): per
 *    block b, d_b = dw * da (exact: two f16), acc[k] = fma(d_b, (float)
 *    l_bk, acc[k]) with l_bk lane k of kv[q] . a, then hsum8(acc) (tinyBLAS'
 *    hsum is hsum_float_8's sequence).
 *    vec_dot_gemv (generation, ggml_vec_dot_iq4_nl_q8_0): even blocks into
 *    acc1, odd into acc2 (fma as above), r = hsum8(acc1 + acc2 lane-wise),
 *    then for an odd block count the last block: r = r + d * (float)
 *    (sum of its lanes) -- a multiply then an add (GCC's code: vmulss,
 *    vaddss). c392 repacks IQ4_NL only on ARM (iq4_nl_4x4, NEON dotprod),
 *    never on x86.
 * The lane sums are exact however they are formed: ggml's sign trick
 * (maddubs(|kv|, sign(a, kv))) is exact for activation quants in
 * -127..127, which is all that Q8_0/Q8_K from_float write; our AVX-512
 * kernels use vpdpbusd on kv + 128 minus 128 * (sum of a), exact for any a.
 * |sumi_k| < 2^24 in every case (Q3_K: 8 * 32 * 4 * 4 * 128 * ... < 2^23;
 * IQ4_XS: 8 * 32 * 4 * 127 * 128 < 2^24). */
extern const int8_t inferd__kvalues_iq4nl[16];
/** Q3_K's sixteen signed sub-block scales from the 12 packed bytes. */
void inferd__q3_k_scales(const uint8_t packed[12], int sc[16]);
/** IQ4_XS's signed scale of sub-block @p ib (0..7). */
int inferd__iq4_xs_scale(const inferd_block_iq4_xs *b, int ib);
void inferd__q2_k_to_float(const void *src, float *dst, int64_t n);
void inferd__q3_k_to_float(const void *src, float *dst, int64_t n);
void inferd__iq4_nl_to_float(const void *src, float *dst, int64_t n);
void inferd__iq4_xs_to_float(const void *src, float *dst, int64_t n);
void inferd__q2_k_quantize(const float *src, void *dst, int64_t n);
void inferd__q3_k_quantize(const float *src, void *dst, int64_t n);
void inferd__iq4_nl_quantize(const float *src, void *dst, int64_t n);
void inferd__iq4_xs_quantize(const float *src, void *dst, int64_t n);
#define INFERD__K2_DECL(sfx)                                                                  \
    float inferd__q2_k_dot##sfx(int64_t n, const void *w, const void *a);                     \
    float inferd__q3_k_dot##sfx(int64_t n, const void *w, const void *a);                     \
    float inferd__iq4_nl_dot##sfx(int64_t n, const void *w, const void *a);                   \
    float inferd__iq4_nl_dot_gemv##sfx(int64_t n, const void *w, const void *a);              \
    float inferd__iq4_xs_dot##sfx(int64_t n, const void *w, const void *a);                   \
    void inferd__q2_k_mdot##sfx(int64_t n, const void *w, size_t w_stride, int64_t n_rows,    \
                                const void *a, size_t a_stride, int64_t n_toks, float *out,   \
                                size_t out_stride);                                           \
    void inferd__q3_k_mdot##sfx(int64_t n, const void *w, size_t w_stride, int64_t n_rows,    \
                                const void *a, size_t a_stride, int64_t n_toks, float *out,   \
                                size_t out_stride);                                           \
    void inferd__iq4_nl_mdot##sfx(int64_t n, const void *w, size_t w_stride, int64_t n_rows,  \
                                  const void *a, size_t a_stride, int64_t n_toks, float *out, \
                                  size_t out_stride);                                         \
    void inferd__iq4_xs_mdot##sfx(int64_t n, const void *w, size_t w_stride, int64_t n_rows,  \
                                  const void *a, size_t a_stride, int64_t n_toks, float *out, \
                                  size_t out_stride);
INFERD__K2_DECL()
INFERD__K2_DECL(_avx2)
INFERD__K2_DECL(_avx512)
#undef INFERD__K2_DECL

/*
 * Panels: activations of up to `lanes` tokens interleaved so that one vector
 * lane holds one token, for the block formats. For each block b of the row,
 * a panel holds (bytes from the block's start, P = lanes):
 *     0        uint8 q[8][P][4]   q[g][t][j] = quant 4g+j of token t, + 128
 *     32P      f32   d[P]         the token's block scale (f16 widened)
 *     36P      f32   s[P]         Q8_1's s (f16 widened), 0 for Q8_0
 * so a block takes 40P bytes; q[g] is the canonical lane g of the P tokens.
 * Missing tokens (a last panel with fewer than P) have quants 0 (stored as
 * 128), d = 0 and s = 0.
 */
typedef struct inferd__panel_kernels {
    int lanes;      /* P: tokens per panel */
    int min_tokens; /* use panels from this many tokens on */
    /* Convert n_toks (<= P) f32 rows of n elements (stride x_stride floats)
     * to one panel, quantizing exactly as the vec_dot_type's from_float. */
    void (*pack)(int64_t n, const float *x, int64_t x_stride, int n_toks, void *panel);
    /* out[t * out_stride + r] for r < n_rows, t < n_toks (<= P): bit-identical
     * to vec_dot of row r with token t's from_float row. */
    void (*gemm)(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *panel,
                 int n_toks, float *out, size_t out_stride);
} inferd__panel_kernels;

/** Bytes of one panel of @p lanes tokens over @p n elements. */
static inline size_t inferd__panel_bytes(int lanes, int64_t n)
{
    return (size_t)(n / 32) * 40u * (size_t)lanes;
}

/** Panel kernels of @p type for the ISA inferd_cpu_isa() picks, or NULL
 * when that ISA has none for it (the matmul then uses mdot). Panels exist
 * for the 32-element block formats only: the K-quants' mdot tiles reuse
 * each unpacked super-block across tokens themselves. Thread: any. */
const inferd__panel_kernels *inferd__panel_get(uint32_t type);
/* Per-ISA panel tables (NULL entries: none). */
extern const inferd__panel_kernels *const inferd__panels_avx512[INFERD_DTYPE_COUNT];

/* The canonical reduction of the 16 float lanes, on scalars. */
static inline float inferd__reduce16(const float a[16])
{
    float v[8];
    for (int l = 0; l < 8; l++)
        v[l] = a[l] + a[l + 8];
    float s0 = v[0] + v[4], s1 = v[1] + v[5], s2 = v[2] + v[6], s3 = v[3] + v[7];
    float t0 = s0 + s2, t1 = s1 + s3;
    return t0 + t1;
}

#endif
