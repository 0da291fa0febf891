/* Scalar reference of Q2_K, Q3_K (Q8_K activations), IQ4_NL (32-element
 * blocks, Q8_0 activations) and IQ4_XS (256, Q8_K activations): the
 * dequantizers, ggml's quantizers as llama-quantize runs them without an
 * importance matrix (quantize_row_q2_K_ref, quantize_row_q3_K_ref,
 * quantize_iq4_nl, quantize_iq4_xs), reproduced bit for bit, and the dot
 * products in the orders of quant_impl.h ("Q2_K, Q3_K, IQ4_NL, IQ4_XS"),
 * which every SIMD version must equal. No state. Thread: any. */
#include "quant_impl.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#define QK_K INFERD_QK_K
#define GROUP_MAX_EPS 1e-15f

const int8_t inferd__kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

/* ---- unpacking (layouts in quant.h) --------------------------------------- */

/* Element 128h + 32j + l: bits 2j..2j+1 of qs[32h + l]. */
static void q2_bits(const uint8_t qs[QK_K / 4], uint8_t q[QK_K])
{
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                q[128 * h + 32 * j + l] = (qs[32 * h + l] >> (2 * j)) & 3;
}

void inferd__q3_k_scales(const uint8_t packed[12], int sc[16])
{
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? packed[j] & 15 : packed[j - 8] >> 4;
        sc[j] = (lo | ((packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
    }
}

/* Q3_K stored values 0..7 (the element is value - 4): the high bit of
 * element e is bit e / 32 of hmask[e % 32]. */
static void q3_values(const inferd_block_q3_k *b, uint8_t q[QK_K])
{
    q2_bits(b->qs, q);
    for (int e = 0; e < QK_K; e++)
        q[e] |= (uint8_t)(((b->hmask[e % 32] >> (e / 32)) & 1) << 2);
}

int inferd__iq4_xs_scale(const inferd_block_iq4_xs *b, int ib)
{
    return (((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | ((b->scales_h >> (2 * ib)) & 3) << 4) -
           32;
}

/* ---- dequantize ----------------------------------------------------------- */

void inferd__q2_k_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q2_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = inferd_f16_to_f32(b[i].d), dmin = inferd_f16_to_f32(b[i].dmin);
        uint8_t q[QK_K];
        q2_bits(b[i].qs, q);
        for (int s = 0; s < 16; s++) {
            const float dl = d * (float)(b[i].scales[s] & 15);
            const float ml = dmin * (float)(b[i].scales[s] >> 4);
            for (int l = 0; l < 16; l++)
                dst[i * QK_K + 16 * s + l] = dl * (float)q[16 * s + l] - ml;
        }
    }
}

void inferd__q3_k_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_q3_k *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = inferd_f16_to_f32(b[i].d);
        uint8_t q[QK_K];
        int sc[16];
        q3_values(&b[i], q);
        inferd__q3_k_scales(b[i].scales, sc);
        for (int s = 0; s < 16; s++) {
            const float dl = d * (float)sc[s];
            for (int l = 0; l < 16; l++)
                dst[i * QK_K + 16 * s + l] = dl * (float)(q[16 * s + l] - 4);
        }
    }
}

void inferd__iq4_nl_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_iq4_nl *b = src;
    for (int64_t i = 0; i < n / 32; i++) {
        const float d = inferd_f16_to_f32(b[i].d);
        for (int j = 0; j < 16; j++) {
            dst[32 * i + j] = d * (float)inferd__kvalues_iq4nl[b[i].qs[j] & 15];
            dst[32 * i + j + 16] = d * (float)inferd__kvalues_iq4nl[b[i].qs[j] >> 4];
        }
    }
}

void inferd__iq4_xs_to_float(const void *src, float *dst, int64_t n)
{
    const inferd_block_iq4_xs *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = inferd_f16_to_f32(b[i].d);
        for (int ib = 0; ib < 8; ib++) {
            const float dl = d * (float)inferd__iq4_xs_scale(&b[i], ib);
            const uint8_t *qs = b[i].qs + 16 * ib;
            float *y = dst + i * QK_K + 32 * ib;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)inferd__kvalues_iq4nl[qs[j] & 15];
                y[j + 16] = dl * (float)inferd__kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* ---- quantizers (ggml's, bit for bit; float expressions in its order) ------ */

/* quantize_row_q2_K_ref: sub-blocks of 16 fitted on 0..3 (weights |x|,
 * mean absolute error), scales and mins to 4 bits against the largest. */
void inferd__q2_k_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q2_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        uint8_t L[QK_K], Laux[16];
        float w[16], mins[16], scales[16];
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++)
                w[l] = fabsf(x[16 * j + l]);
            scales[j] = inferd__fit_scale_min(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], Laux,
                                              -0.5f, 0.1f, 15, 1);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; j++)
                y[i].scales[j] = (uint8_t)inferd__nearest_int(iscale * scales[j]);
            y[i].d = inferd_f32_to_f16(max_scale / 15.f);
        } else {
            memset(y[i].scales, 0, sizeof(y[i].scales));
            y[i].d = inferd_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < 16; j++)
                y[i].scales[j] |= (uint8_t)(inferd__nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = inferd_f32_to_f16(max_min / 15.f);
        } else {
            y[i].dmin = inferd_f32_to_f16(0.f);
        }
        for (int j = 0; j < 16; j++) {
            const float d = inferd_f16_to_f32(y[i].d) * (float)(y[i].scales[j] & 15);
            if (d == 0)
                continue;
            const float dm = inferd_f16_to_f32(y[i].dmin) * (float)(y[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * j + l] =
                    (uint8_t)inferd__clamp_int(inferd__nearest_int((x[16 * j + l] + dm) / d), 0, 3);
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *Lh = L + 128 * h;
                y[i].qs[32 * h + l] =
                    (uint8_t)(Lh[l] | Lh[l + 32] << 2 | Lh[l + 64] << 4 | Lh[l + 96] << 6);
            }
    }
}

/* ggml's make_q3_quants(n, nmax, x, L, do_rmse = true): levels -nmax..nmax-1
 * (stored + nmax), refined by up to 5 passes of coordinate descent on the
 * x^2-weighted least-squares fit. */
static float fit_q3(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = inferd__max_by_magnitude(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = inferd__clamp_int(inferd__nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                const int new_l =
                    inferd__clamp_int(inferd__nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(L[i] + nmax);
    return sumlx / suml2;
}

/* quantize_row_q3_K_ref: sub-blocks of 16 on -4..3, signed 6-bit scales
 * against -32 / (the scale of largest magnitude). */
void inferd__q3_k_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_q3_k *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        int8_t L[QK_K];
        float scales[16];
        float amax;
        for (int j = 0; j < 16; j++)
            scales[j] = fit_q3(16, 4, x + 16 * j, L + 16 * j);
        const float max_scale = inferd__max_by_magnitude(scales, 16, &amax);
        memset(y[i].scales, 0, sizeof(y[i].scales));
        if (max_scale != 0) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                /* ggml stores the rounded value in an int8_t first. */
                int8_t l = (int8_t)inferd__nearest_int(iscale * scales[j]);
                l = (int8_t)(inferd__clamp_int(l, -32, 31) + 32);
                if (j < 8)
                    y[i].scales[j] = (uint8_t)(l & 15);
                else
                    y[i].scales[j - 8] |= (uint8_t)((l & 15) << 4);
                y[i].scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = inferd_f32_to_f16(1 / iscale);
        } else {
            y[i].d = inferd_f32_to_f16(0.f);
        }
        int sc[16];
        inferd__q3_k_scales(y[i].scales, sc);
        for (int j = 0; j < 16; j++) {
            const float d = inferd_f16_to_f32(y[i].d) * (float)sc[j];
            if (d == 0)
                continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] =
                    (int8_t)(inferd__clamp_int(inferd__nearest_int(x[16 * j + l] / d), -4, 3) + 4);
        }
        memset(y[i].hmask, 0, sizeof(y[i].hmask));
        for (int e = 0; e < QK_K; e++) {
            if (L[e] > 3) {
                y[i].hmask[e % 32] |= (uint8_t)(1 << (e / 32));
                L[e] = (int8_t)(L[e] - 4);
            }
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const int8_t *Lh = L + 128 * h;
                y[i].qs[32 * h + l] =
                    (uint8_t)(Lh[l] | Lh[l + 32] << 2 | Lh[l + 64] << 4 | Lh[l + 96] << 6);
            }
    }
}

/* ggml's best_index_int8: the nearest of the 16 sorted values (the lower on
 * a tie), comparisons in f32. */
static int best_index(const int8_t *val, float x)
{
    if (x <= (float)val[0])
        return 0;
    if (x >= (float)val[15])
        return 15;
    int ml = 0, mu = 15;
    while (mu - ml > 1) {
        const int mav = (ml + mu) / 2;
        if (x < (float)val[mav])
            mu = mav;
        else
            ml = mav;
    }
    return x - (float)val[mu - 1] < (float)val[mu] - x ? mu - 1 : mu;
}

/* The per-32 fit of quantize_row_iq4_nl_impl with ntry = 7 and no
 * importance weights (weights x^2): the best of the scales -max / -127 and
 * max / (itry - 127), itry = -7..7, by the weighted least-squares criterion.
 * Writes the levels of the first trial to L; returns 0 for a block below
 * GROUP_MAX_EPS (L then untouched). */
static float iq4_fit32(const float *xb, uint8_t *L)
{
    const int8_t *v = inferd__kvalues_iq4nl;
    float w[32];
    float amax;
    for (int j = 0; j < 32; j++)
        w[j] = xb[j] * xb[j];
    const float max = inferd__max_by_magnitude(xb, 32, &amax);
    if (amax < GROUP_MAX_EPS)
        return 0.f;
    float d = -max / (float)v[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; j++) {
        const int l = best_index(v, id * xb[j]);
        L[j] = (uint8_t)l;
        const float q = (float)v[l];
        sumqx += w[j] * q * xb[j];
        sumq2 += w[j] * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int itry = -7; itry <= 7; itry++) {
        id = (float)(itry + v[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            const float q = (float)v[best_index(v, id * xb[j])];
            sumqx += w[j] * q * xb[j];
            sumq2 += w[j] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

static void iq4_pack(const uint8_t *L, uint8_t *qs, int n)
{
    for (int i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++)
            qs[16 * i + j] = (uint8_t)(L[32 * i + j] | L[32 * i + 16 + j] << 4);
}

/* quantize_iq4_nl (what llama-quantize calls; ntry 7): d the fitted scale
 * as f16, every element re-rounded against the f32 scale. */
void inferd__iq4_nl_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_iq4_nl *y = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        const float *x = src + 32 * i;
        uint8_t L[32] = {0};
        const float d = iq4_fit32(x, L);
        y[i].d = inferd_f32_to_f16(d);
        const float id = d != 0 ? 1 / d : 0;
        for (int j = 0; j < 32; j++)
            L[j] = (uint8_t)best_index(inferd__kvalues_iq4nl, id * x[j]);
        iq4_pack(L, y[i].qs, 32);
    }
}

/* quantize_iq4_xs: the eight per-32 fits, d = -(the scale of largest
 * magnitude) / 32 (stored as f16, used in f32), 6-bit signed sub-block
 * scales, every element re-rounded against d * l in f32. */
void inferd__iq4_xs_quantize(const float *src, void *dst, int64_t n)
{
    inferd_block_iq4_xs *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        uint8_t L[QK_K] = {0};
        float scales[8];
        float amax_scale;
        for (int ib = 0; ib < 8; ib++)
            scales[ib] = iq4_fit32(x + 32 * ib, L + 32 * ib);
        const float max_scale = inferd__max_by_magnitude(scales, 8, &amax_scale);
        y[i].scales_h = 0;
        const float d = -max_scale / 32;
        y[i].d = inferd_f32_to_f16(d);
        const float id = d != 0 ? 1 / d : 0.f;
        for (int ib = 0; ib < 8; ib++) {
            int l = inferd__clamp_int(inferd__nearest_int(id * scales[ib]), -32, 31);
            const float dl = d * (float)l;
            const float idl = dl != 0 ? 1 / dl : 0.f;
            for (int j = 0; j < 32; j++)
                L[32 * ib + j] = (uint8_t)best_index(inferd__kvalues_iq4nl, idl * x[32 * ib + j]);
            l += 32;
            if (ib % 2 == 0)
                y[i].scales_l[ib / 2] = (uint8_t)(l & 15);
            else
                y[i].scales_l[ib / 2] |= (uint8_t)((l & 15) << 4);
            y[i].scales_h = (uint16_t)(y[i].scales_h | (l >> 4) << (2 * ib));
        }
        iq4_pack(L, y[i].qs, QK_K);
    }
}

/* ---- dot products (orders: quant_impl.h) ------------------------------------ */

static float hsum8(const float x[8])
{
    return ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]));
}

/* sumi[k] = sum over pieces p of sc[p][k] * (elements 32p + 4k..+3 of
 * (q - off) times a), for the 256 elements of a super-block; sc16 the
 * scale of each sub-block of 16. */
static void lanes16(const uint8_t *q, int off, const int8_t *a, const int sc16[16], int32_t sumi[8])
{
    for (int k = 0; k < 8; k++) {
        int32_t s = 0;
        for (int p = 0; p < 8; p++) {
            const int e = 32 * p + 4 * k;
            int32_t t = 0;
            for (int j = 0; j < 4; j++)
                t += ((int32_t)q[e + j] - off) * a[e + j];
            s += sc16[e / 16] * t;
        }
        sumi[k] = s;
    }
}

float inferd__q2_k_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_q2_k *x = w;
    const inferd_block_q8_k *y = a;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * inferd_f16_to_f32(x[b].d);
        const float dmin = -y[b].d * inferd_f16_to_f32(x[b].dmin);
        for (int k = 0; k < 8; k++) {
            const int32_t prod = (x[b].scales[2 * k] >> 4) * y[b].bsums[2 * k] +
                                 (x[b].scales[2 * k + 1] >> 4) * y[b].bsums[2 * k + 1];
            acc[k] = fmaf(dmin, (float)prod, acc[k]);
        }
        uint8_t q[QK_K];
        int sc[16];
        int32_t sumi[8];
        q2_bits(x[b].qs, q);
        for (int s = 0; s < 16; s++)
            sc[s] = x[b].scales[s] & 15;
        lanes16(q, 0, y[b].qs, sc, sumi);
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(d, (float)sumi[k], acc[k]);
    }
    return hsum8(acc);
}

float inferd__q3_k_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_q3_k *x = w;
    const inferd_block_q8_k *y = a;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * inferd_f16_to_f32(x[b].d);
        uint8_t q[QK_K];
        int sc[16];
        int32_t sumi[8];
        q3_values(&x[b], q);
        inferd__q3_k_scales(x[b].scales, sc);
        lanes16(q, 4, y[b].qs, sc, sumi);
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(d, (float)sumi[k], acc[k]);
    }
    return hsum8(acc);
}

/* Lane sums of one IQ4_NL block (sub-block of an IQ4_XS one) against 32
 * activation quants: lane k holds elements 4k..4k+3. */
static void iq4_lanes32(const uint8_t qs[16], const int8_t *a, int32_t out[8])
{
    int v[32];
    for (int j = 0; j < 16; j++) {
        v[j] = inferd__kvalues_iq4nl[qs[j] & 15];
        v[j + 16] = inferd__kvalues_iq4nl[qs[j] >> 4];
    }
    for (int k = 0; k < 8; k++)
        out[k] = v[4 * k] * a[4 * k] + v[4 * k + 1] * a[4 * k + 1] + v[4 * k + 2] * a[4 * k + 2] +
                 v[4 * k + 3] * a[4 * k + 3];
}

float inferd__iq4_xs_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_iq4_xs *x = w;
    const inferd_block_q8_k *y = a;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = inferd_f16_to_f32(x[b].d) * y[b].d;
        int32_t sumi[8] = {0}, l[8];
        for (int ib = 0; ib < 8; ib++) {
            const int ls = inferd__iq4_xs_scale(&x[b], ib);
            iq4_lanes32(x[b].qs + 16 * ib, y[b].qs + 32 * ib, l);
            for (int k = 0; k < 8; k++)
                sumi[k] += ls * l[k];
        }
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(d, (float)sumi[k], acc[k]);
    }
    return hsum8(acc);
}

/* Prompt order (llamafile's tinyBLAS_Q0_AVX): one set of eight lanes. */
float inferd__iq4_nl_dot(int64_t n, const void *w, const void *a)
{
    const inferd_block_iq4_nl *x = w;
    const inferd_block_q8_0 *y = a;
    float acc[8] = {0};
    for (int64_t b = 0; b < n / 32; b++) {
        const float d = inferd_f16_to_f32(x[b].d) * inferd_f16_to_f32(y[b].d);
        int32_t l[8];
        iq4_lanes32(x[b].qs, y[b].qs, l);
        for (int k = 0; k < 8; k++)
            acc[k] = fmaf(d, (float)l[k], acc[k]);
    }
    return hsum8(acc);
}

/* Generation order (ggml_vec_dot_iq4_nl_q8_0): even blocks in acc1, odd in
 * acc2, hsum8(acc1 + acc2), then an odd last block by multiply and add. */
float inferd__iq4_nl_dot_gemv(int64_t n, const void *w, const void *a)
{
    const inferd_block_iq4_nl *x = w;
    const inferd_block_q8_0 *y = a;
    const int64_t nb = n / 32;
    float acc1[8] = {0}, acc2[8] = {0}, sum[8];
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        int32_t l[8];
        float d = inferd_f16_to_f32(y[b].d) * inferd_f16_to_f32(x[b].d);
        iq4_lanes32(x[b].qs, y[b].qs, l);
        for (int k = 0; k < 8; k++)
            acc1[k] = fmaf(d, (float)l[k], acc1[k]);
        d = inferd_f16_to_f32(y[b + 1].d) * inferd_f16_to_f32(x[b + 1].d);
        iq4_lanes32(x[b + 1].qs, y[b + 1].qs, l);
        for (int k = 0; k < 8; k++)
            acc2[k] = fmaf(d, (float)l[k], acc2[k]);
    }
    for (int k = 0; k < 8; k++)
        sum[k] = acc1[k] + acc2[k];
    float r = hsum8(sum);
    if (b < nb) {
        int32_t l[8], s = 0;
        const float d = inferd_f16_to_f32(y[b].d) * inferd_f16_to_f32(x[b].d);
        iq4_lanes32(x[b].qs, y[b].qs, l);
        for (int k = 0; k < 8; k++)
            s += l[k];
        const float t = d * (float)s;
        r = r + t;
    }
    return r;
}

static void dot_each(inferd_vec_dot_fn dot, int64_t n, const void *w, size_t w_stride,
                     int64_t n_rows, const void *a, size_t a_stride, int64_t n_toks, float *out,
                     size_t out_stride)
{
    for (int64_t t = 0; t < n_toks; t++)
        for (int64_t r = 0; r < n_rows; r++)
            out[(size_t)t * out_stride + (size_t)r] = dot(n, (const char *)w + (size_t)r * w_stride,
                                                          (const char *)a + (size_t)t * a_stride);
}

#define K2_MDOT(name, dot)                                                              \
    void name(int64_t n, const void *w, size_t w_stride, int64_t n_rows, const void *a, \
              size_t a_stride, int64_t n_toks, float *out, size_t out_stride)           \
    {                                                                                   \
        dot_each(dot, n, w, w_stride, n_rows, a, a_stride, n_toks, out, out_stride);    \
    }

K2_MDOT(inferd__q2_k_mdot, inferd__q2_k_dot)
K2_MDOT(inferd__q3_k_mdot, inferd__q3_k_dot)
K2_MDOT(inferd__iq4_nl_mdot, inferd__iq4_nl_dot)
K2_MDOT(inferd__iq4_xs_mdot, inferd__iq4_xs_dot)
