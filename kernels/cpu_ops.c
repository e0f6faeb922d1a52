/* CPU reference kernels: fp32 arithmetic, OpenBLAS for the matrix products. */
#include "kernels.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

void kern_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out) {
    if (b) {
        for (int t = 0; t < n; t++) memcpy(y + (size_t)t * out, b, sizeof(float) * out);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
                b ? 1.0f : 0.0f, y, out);
}

void kern_rmsnorm(float *y, const float *x, const float *weight, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * d;
        float *yr = y + (size_t)t * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        float r = (float)(1.0 / sqrt(ss / d + eps));
        for (int i = 0; i < d; i++) yr[i] = xr[i] * r * weight[i];
    }
}

void kern_rope_tables(float *cos_table, float *sin_table, int pos0, int n_pos, int half,
                      const double *inv_freq) {
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)(pos0 + p) * inv_freq[i];
            cos_table[(size_t)p * half + i] = (float)cos(a);
            sin_table[(size_t)p * half + i] = (float)sin(a);
        }
}

void kern_rope(float *x, int n, int heads, int head_dim, int pos0, const float *cos_table,
               const float *sin_table) {
    int half = head_dim / 2;
    for (int t = 0; t < n; t++) {
        const float *c = cos_table + (size_t)(pos0 + t) * half;
        const float *s = sin_table + (size_t)(pos0 + t) * half;
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)t * heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void kern_swiglu(float *out, const float *gate, const float *up, size_t count) {
    for (size_t i = 0; i < count; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kern_softmax_rows(float *x, int n, int d) {
    for (int t = 0; t < n; t++) {
        float *r = x + (size_t)t * d;
        float m = -FLT_MAX;
        for (int i = 0; i < d; i++) m = r[i] > m ? r[i] : m;
        double s = 0;
        for (int i = 0; i < d; i++) {
            r[i] = expf(r[i] - m);
            s += r[i];
        }
        float inv = (float)(1.0 / s);
        for (int i = 0; i < d; i++) r[i] *= inv;
    }
}

void kern_attention_causal(float *out, const float *q, const float *k, const float *v, int n,
                           int pos0, int n_heads, int n_kv_heads, int head_dim, int window,
                           float *scratch) {
    int total = pos0 + n;
    int group = n_heads / n_kv_heads;
    int q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int h = 0; h < n_heads; h++) {
        int g = h / group;
        /* scores[n, total] = q_h K_g^T * scale */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, total, head_dim, scale,
                    q + (size_t)h * head_dim, q_stride, k + (size_t)g * head_dim, kv_stride, 0.0f,
                    scratch, total);
        for (int t = 0; t < n; t++) {
            float *row = scratch + (size_t)t * total;
            int pos = pos0 + t;
            int first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
            float m = -FLT_MAX;
            for (int j = first; j <= pos; j++) m = row[j] > m ? row[j] : m;
            double s = 0;
            for (int j = 0; j < total; j++) {
                if (j < first || j > pos) {
                    row[j] = 0.0f;
                } else {
                    row[j] = expf(row[j] - m);
                    s += row[j];
                }
            }
            float inv = (float)(1.0 / s);
            for (int j = first; j <= pos; j++) row[j] *= inv;
        }
        /* out_h[n, d] = P[n, total] V_g[total, d] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, head_dim, total, 1.0f, scratch,
                    total, v + (size_t)g * head_dim, kv_stride, 0.0f, out + (size_t)h * head_dim,
                    q_stride);
    }
}

double kern_cross_entropy_row(const float *logits, int vocab, int target) {
    float m = -FLT_MAX;
    for (int i = 0; i < vocab; i++) m = logits[i] > m ? logits[i] : m;
    double s = 0;
    for (int i = 0; i < vocab; i++) s += exp((double)logits[i] - m);
    return log(s) + m - logits[target];
}
