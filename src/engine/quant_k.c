/* Scalar reference of the K-quants (quant.h): Q4_K, Q5_K and Q6_K weights,
 * Q8_K activations. Dequantizers, ggml's reference quantizers reproduced bit
 * for bit (what llama-quantize writes without an importance matrix, and
 * ggml-cpu's Q8_K activation rounding on x86), and the dot products in the
 * canonical order of quant_impl.h, which every SIMD version must equal.
 * No state. Thread: any. */
#include "quant_impl.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define QK_K INFERD_QK_K
#define N_SUB_32 (QK_K / 32) /* sub-blocks of Q4_K/Q5_K */
#define N_SUB_16 (QK_K / 16) /* sub-blocks of Q6_K, groups of Q8_K's bsums */

/* ggml treats a group whose largest magnitude is below this as all zero. */
#define GROUP_MAX_EPS 1e-15f

/* ---- rounding and the 6-bit scales --------------------------------------- */

/*
 * ggml's rounding in the K-quant quantizers: adding 1.5 * 2^23 leaves
 * round-to-nearest-even of v in the low mantissa bits. For |v| < 2^22 this
 * is rint(v); other inputs (NaN, which ggml's quantizers can meet) give
 * whatever the same bit manipulation gives, so that we match for any input.
 */
/* Scale and min of sub-block s from the 12 packed bytes (layout in quant.h). */
static void k_scale_min(const uint8_t packed[INFERD_K_SCALE_BYTES], int s, int *out_sc, int *out_m)
{
    if (s < 4) {
        *out_sc = packed[s] & 63;
        *out_m = packed[s + 4] & 63;
    } else {
        *out_sc = (packed[s + 4] & 15) | (packed[s - 4] >> 6) << 4;
        *out_m = (packed[s + 4] >> 4) | (packed[s] >> 6) << 4;
    }
}

static void k_scale_min_pack(const uint8_t sc[N_SUB_32], const uint8_t m[N_SUB_32],
                             uint8_t packed[INFERD_K_SCALE_BYTES])
{
    for (int s = 0; s < 4; s++) {
        packed[s] = (uint8_t)(sc[s] | (sc[s + 4] >> 4) << 6);
        packed[s + 4] = (uint8_t)(m[s] | (m[s + 4] >> 4) << 6);
        packed[s + 8] = (uint8_t)((sc[s + 4] & 15) | (m[s + 4] & 15) << 4);
    }
}

/* ---- element unpacking ------------------------------------------------------ */

/* Stored values of a Q4_K (qh NULL, 0..15) or Q5_K (0..31) super-block, in
 * element order. */
static void q45_k_values(const uint8_t qs[QK_K / 2], const uint8_t *qh, uint8_t q[QK_K])
{
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            const uint8_t b = qs[32 * c + l];
            q[64 * c + l] = b & 15;
            q[64 * c + 32 + l] = b >> 4;
            if (qh) {
                q[64 * c + l] |= (uint8_t)(((qh[l] >> (2 * c)) & 1) << 4);
                q[64 * c + 32 + l] |= (uint8_t)(((qh[l] >> (2 * c + 1)) & 1) << 4);
            }
        }
    }
}

/* Stored values (0..63, offset 32 not removed) of a Q6_K super-block. */
static void q6_k_values(const inferd_block_q6_k *b, uint8_t q[QK_K])
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        uint8_t *o = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (uint8_t)((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4);
            o[l + 32] = (uint8_t)((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4);
            o[l + 64] = (uint8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
            o[l + 96] = (uint8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
        }
    }
}

/* ---- dequantize ----------------------------------------------------------- */

/* x = (d * sc) * q - dmin * m, each product rounded to f32 (ggml's order). */
static void q45_k_dequant(const inferd_f16 d16, const inferd_f16 dmin16,
                          const uint8_t scales[INFERD_K_SCALE_BYTES], const uint8_t q[QK_K],
                          float *dst)
{
    const float d = inferd_f16_to_f32(d16), dmin = inferd_f16_to_f32(dmin16);
    for (int s = 0; s < N_SUB_32; s++) {
        int sc, m;
        k_scale_min(scales, s, &sc, &m);
        const float ds = d * (float)sc, ms = dmin * (float)m;
        for (int i = 0; i < 32; i++)
            dst[32 * s + i] = ds * (float)q[32 * s + i] - ms;
    }
}

void inferd__q4_k_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q4_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K];
        q45_k_values(b[i].qs, NULL, q);
        q45_k_dequant(b[i].d, b[i].dmin, b[i].scales, q, dst + i * QK_K);
    }
}

void inferd__q5_k_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q5_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t q[QK_K];
        q45_k_values(b[i].qs, b[i].qh, q);
        q45_k_dequant(b[i].d, b[i].dmin, b[i].scales, q, dst + i * QK_K);
    }
}

/* x = (d * sc) * (q - 32), each product rounded to f32. */
void inferd__q6_k_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q6_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = inferd_f16_to_f32(b[i].d);
        uint8_t q[QK_K];
        q6_k_values(&b[i], q);
        for (int s = 0; s < N_SUB_16; s++) {
            const float ds = d * (float)b[i].scales[s];
            for (int j = 0; j < 16; j++)
                dst[i * QK_K + 16 * s + j] = ds * (float)(q[16 * s + j] - 32);
        }
    }
}

void inferd__q8_k_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q8_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++)
            dst[i * QK_K + j] = b[i].d * (float)b[i].qs[j];
}

/* ---- reference quantizers (ggml's *_ref, bit for bit) ------------------------ */

/*
 * Asymmetric sub-block fit (ggml's make_qkx2_quants): levels 0..nmax for
 * x ~ scale * l - min with min >= 0, chosen by weighted error (squared when
 * !use_mad) among the plain min/max fit and nstep + 1 least-squares fits of
 * the levels found with iscale = (nmax + rmin + rdelta * is) / (max - min).
 * Writes the levels to L, the min (>= 0) to *out_min; returns the scale.
 * The float expressions keep ggml's evaluation order: the result must be
 * identical, not just close.
 */
float inferd__fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                            float *out_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                            int use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *out_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)inferd__clamp_int(inferd__nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_err += w[i] * diff;
    }
    if (nstep < 1) {
        *out_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = inferd__clamp_int(inferd__nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        const float det = sum_w * sum_l2 - sum_l * sum_l;
        if (!(det > 0))
            continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * (float)Laux[i] + this_min - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *out_min = -min;
    return scale;
}

/*
 * Symmetric sub-block fit (ggml's make_qx_quants with rmse_type 1 and no
 * importance weights): levels -nmax..nmax-1 stored as l + nmax, the scale
 * the least-squares one under weights x^2, the best of 19 trial iscales
 * -(nmax + 0.1 * is) / max, max being the value of largest magnitude.
 */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = inferd__max_by_magnitude(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = inferd__clamp_int(inferd__nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = inferd__clamp_int(inferd__nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + inferd__clamp_int(inferd__nearest_int(iscale * x[i]), -nmax,
                                                         nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/*
 * The common part of quantize_row_q4_K_ref / q5_K_ref for one super-block:
 * fit each sub-block of 32 (weights sqrt(mean x^2) + |x|), quantize the
 * eight scales and mins to 6 bits against the largest of each, then
 * re-round every element against the stored scales. Writes d, dmin, the
 * packed scales and the levels L (0..nmax).
 */
static void q45_k_quantize_block(const float *x, int nmax, float rmin, int nstep, inferd_f16 *out_d,
                                 inferd_f16 *out_dmin, uint8_t scales_out[INFERD_K_SCALE_BYTES],
                                 uint8_t L[QK_K])
{
    float scales[N_SUB_32], mins[N_SUB_32], w[32];
    uint8_t Laux[32], ls[N_SUB_32], lm[N_SUB_32];
    float max_scale = 0, max_min = 0;

    for (int s = 0; s < N_SUB_32; s++) {
        const float *xs = x + 32 * s;
        float sum_x2 = 0;
        for (int i = 0; i < 32; i++)
            sum_x2 += xs[i] * xs[i];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int i = 0; i < 32; i++)
            w[i] = av_x + fabsf(xs[i]);
        scales[s] = inferd__fit_scale_min(32, nmax, xs, w, L + 32 * s, &mins[s], Laux, rmin, 0.1f,
                                          nstep, 0);
        if (scales[s] > max_scale)
            max_scale = scales[s];
        if (mins[s] > max_min)
            max_min = mins[s];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int s = 0; s < N_SUB_32; s++) {
        /* ggml stores the rounded value in a uint8_t before the clamp. */
        const uint8_t a = (uint8_t)inferd__nearest_int(inv_scale * scales[s]);
        const uint8_t b = (uint8_t)inferd__nearest_int(inv_min * mins[s]);
        ls[s] = a < 63 ? a : 63;
        lm[s] = b < 63 ? b : 63;
    }
    k_scale_min_pack(ls, lm, scales_out);
    *out_d = inferd_f32_to_f16(max_scale / 63.f);
    *out_dmin = inferd_f32_to_f16(max_min / 63.f);

    for (int s = 0; s < N_SUB_32; s++) {
        int sc, m;
        k_scale_min(scales_out, s, &sc, &m);
        const float d = inferd_f16_to_f32(*out_d) * (float)sc;
        if (d == 0)
            continue; /* keeps the fit's levels */
        const float dm = inferd_f16_to_f32(*out_dmin) * (float)m;
        for (int i = 0; i < 32; i++)
            L[32 * s + i] =
                (uint8_t)inferd__clamp_int(inferd__nearest_int((x[32 * s + i] + dm) / d), 0, nmax);
    }
}

void inferd__q4_k_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q4_k *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t L[QK_K];
        q45_k_quantize_block(src + i * QK_K, 15, -1.0f, 20, &b[i].d, &b[i].dmin, b[i].scales, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                b[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

void inferd__q5_k_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q5_k *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t L[QK_K];
        q45_k_quantize_block(src + i * QK_K, 31, -0.5f, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
        memset(b[i].qh, 0, sizeof(b[i].qh));
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                b[i].qs[32 * c + l] = (uint8_t)((lo & 15) | (hi & 15) << 4);
                b[i].qh[l] |= (uint8_t)((lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
            }
        }
    }
}

/*
 * quantize_row_q6_K_ref: a symmetric fit per sub-block of 16, the sixteen
 * scales stored as signed bytes against -128 / (the scale of largest
 * magnitude, with its sign), then every element re-rounded against its
 * stored scale to -32..31 (+32).
 */
void inferd__q6_k_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q6_k *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        int8_t L[QK_K];
        float scales[N_SUB_16];
        float max_scale = 0, max_abs_scale = 0;
        for (int s = 0; s < N_SUB_16; s++) {
            scales[s] = fit_scale_sym(16, 32, x + 16 * s, L + 16 * s);
            if (fabsf(scales[s]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[s]);
                max_scale = scales[s];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&b[i], 0, sizeof(b[i]));
            continue;
        }
        const float iscale = -128.f / max_scale;
        b[i].d = inferd_f32_to_f16(1 / iscale);
        for (int s = 0; s < N_SUB_16; s++) {
            const int v = inferd__nearest_int(iscale * scales[s]);
            b[i].scales[s] = (int8_t)(v < 127 ? v : 127);
        }
        for (int s = 0; s < N_SUB_16; s++) {
            const float d = inferd_f16_to_f32(b[i].d) * (float)b[i].scales[s];
            if (d == 0)
                continue; /* keeps the fit's levels */
            for (int j = 0; j < 16; j++)
                L[16 * s + j] =
                    (int8_t)(inferd__clamp_int(inferd__nearest_int(x[16 * s + j] / d), -32, 31) +
                             32);
        }
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                const int q0 = Lh[l], q1 = Lh[l + 32], q2 = Lh[l + 64], q3 = Lh[l + 96];
                ql[l] = (uint8_t)((q0 & 15) | (q2 & 15) << 4);
                ql[l + 32] = (uint8_t)((q1 & 15) | (q3 & 15) << 4);
                qh[l] = (uint8_t)((q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
            }
        }
    }
}

/*
 * quantize_row_q8_K_ref, which ggml-cpu also uses for activations on x86:
 * max is the value of largest magnitude (the first, on ties), iscale =
 * -127 / max, q = round(iscale * x) capped at 127 and stored by truncation
 * to a byte, d = 1 / iscale; bsums the exact sums of each 16 stored quants.
 * An all-zero block (amax 0) gets d = 0 and zero quants and sums.
 */
void inferd__q8_k_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q8_k *b = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        float amax;
        const float max = inferd__max_by_magnitude(x, QK_K, &amax);
        if (amax == 0) {
            memset(&b[i], 0, sizeof(b[i]));
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = inferd__nearest_int(iscale * x[j]);
            b[i].qs[j] = (int8_t)(uint8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < N_SUB_16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += b[i].qs[16 * g + j];
            b[i].bsums[g] = (int16_t)sum;
        }
        b[i].d = 1 / iscale;
    }
}

/* ---- dot products against Q8_K (canonical order, quant_impl.h) -------------- */

/* ggml's hsum_float_8: ((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7)). */
static float hsum8(const float x[8])
{
    return ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
}

/* Sum of 4 stored values (offset @p off removed) times the activation's. */
static int32_t dot4(const uint8_t *q, const int8_t *a, int off)
{
    int32_t s = 0;
    for (int e = 0; e < 4; e++)
        s += ((int32_t)q[e] - off) * a[e];
    return s;
}

/* The eight lane sums of a Q4_K/Q5_K super-block: lane k of piece i (its
 * elements 4k..4k+3) times sub-block i's scale. */
static void q45_k_lanes(const uint8_t scales[INFERD_K_SCALE_BYTES], const uint8_t q[QK_K],
                        const int8_t a[QK_K], int32_t sumi[8])
{
    for (int k = 0; k < 8; k++)
        sumi[k] = 0;
    for (int i = 0; i < N_SUB_32; i++) {
        int sc, m;
        k_scale_min(scales, i, &sc, &m);
        for (int k = 0; k < 8; k++)
            sumi[k] += sc * dot4(q + 32 * i + 4 * k, a + 32 * i + 4 * k, 0);
    }
}

/* q8s_s = bsums[2s] + bsums[2s + 1] and the mins, for the min terms. */
static void q45_k_mins(const uint8_t scales[INFERD_K_SCALE_BYTES], const inferd_block_q8_k *a,
                       int32_t m[N_SUB_32], int32_t q8s[N_SUB_32])
{
    for (int s = 0; s < N_SUB_32; s++) {
        int sc, mn;
        k_scale_min(scales, s, &sc, &mn);
        m[s] = mn;
        q8s[s] = a->bsums[2 * s] + a->bsums[2 * s + 1];
    }
}

float inferd__q4_k_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_q4_k *wb = w;
    const inferd_block_q8_k *ab = a;
    float acc[8] = {0}, acc_m[4] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ab[b].d * inferd_f16_to_f32(wb[b].d);
        const float dmin = -ab[b].d * inferd_f16_to_f32(wb[b].dmin);
        uint8_t q[QK_K];
        int32_t sumi[8], m[N_SUB_32], q8s[N_SUB_32];
        q45_k_values(wb[b].qs, NULL, q);
        q45_k_lanes(wb[b].scales, q, ab[b].qs, sumi);
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(d, (float)sumi[k], acc[k]);
        q45_k_mins(wb[b].scales, &ab[b], m, q8s);
        for (int p = 0; p < 4; p++) {
            const int32_t prod = m[2 * p] * q8s[2 * p] + m[2 * p + 1] * q8s[2 * p + 1];
            acc_m[p] = fmaf(dmin, (float)prod, acc_m[p]);
        }
    }
    const float mins = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    return hsum8(acc) + mins;
}

float inferd__q5_k_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_q5_k *wb = w;
    const inferd_block_q8_k *ab = a;
    float acc[8] = {0}, summs = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ab[b].d * inferd_f16_to_f32(wb[b].d);
        const float dmin = -ab[b].d * inferd_f16_to_f32(wb[b].dmin);
        uint8_t q[QK_K];
        int32_t sumi[8], m[N_SUB_32], q8s[N_SUB_32];
        q45_k_values(wb[b].qs, wb[b].qh, q);
        q45_k_lanes(wb[b].scales, q, ab[b].qs, sumi);
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(d, (float)sumi[k], acc[k]);
        q45_k_mins(wb[b].scales, &ab[b], m, q8s);
        int32_t t = 0;
        for (int s = 0; s < N_SUB_32; s++)
            t += m[s] * q8s[s];
        summs = fmaf(dmin, (float)t, summs);
    }
    return hsum8(acc) + summs;
}

/* Lane k of piece i: elements 32i + 4k.. of sub-block 2i + k / 4. */
float inferd__q6_k_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_q6_k *wb = w;
    const inferd_block_q8_k *ab = a;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = ab[b].d * inferd_f16_to_f32(wb[b].d);
        uint8_t q[QK_K];
        q6_k_values(&wb[b], q);
        for (int k = 0; k < 8; k++) {
            int32_t sumi = 0;
            for (int i = 0; i < 8; i++) {
                const int e = 32 * i + 4 * k;
                sumi += wb[b].scales[e / 16] * dot4(q + e, ab[b].qs + e, 32);
            }
            acc[k] = fmaf(d, (float)sumi, acc[k]);
        }
    }
    return hsum8(acc);
}

/* One vec_dot per output. */
static void dot_each_output(float (*dot)(int64_t, const void *, const void *), int64_t n,
                            const void *w, size_t w_stride, int64_t n_rows, const void *a,
                            size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    for (int64_t t = 0; t < n_toks; t++)
        for (int64_t r = 0; r < n_rows; r++)
            out[(size_t)t * out_stride + (size_t)r] = dot(n, (const char *)w + (size_t)r * w_stride,
                                                          (const char *)a + (size_t)t * a_stride);
}

void inferd__q4_k_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a,
                       size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    dot_each_output(inferd__q4_k_dot, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

void inferd__q5_k_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a,
                       size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    dot_each_output(inferd__q5_k_dot, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}

void inferd__q6_k_mdot(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a,
                       size_t a_stride, int64_t n_toks, float *out, size_t out_stride)
{
    dot_each_output(inferd__q6_k_dot, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);
}
