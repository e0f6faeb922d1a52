/* kernels/kernels.h — the arithmetic of the teacher and student, CPU reference in fp32.
 * Matrices are row-major. Weights follow the Hugging Face layout W[out, in], so a linear layer
 * is y = x W^T (+ b). */
#ifndef XD_KERNELS_H
#define XD_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

/* y[n, out] = x[n, in] W[out, in]^T + b[out] (b may be NULL). */
void kern_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out);
/* y[n, d] = x * rsqrt(mean(x^2) + eps) * weight; y may alias x. */
void kern_rmsnorm(float *y, const float *x, const float *weight, int n, int d, float eps);
/* Rotates each head of x[n, heads * head_dim] in place, HF "rotate_half" layout (pairs i and
 * i + head_dim/2), token t at position pos0 + t. cos/sin tables are [positions, head_dim/2]. */
void kern_rope(float *x, int n, int heads, int head_dim, int pos0, const float *cos_table,
               const float *sin_table);
/* Fills cos/sin tables [n_pos, half] for positions pos0..pos0+n_pos-1 from per-pair inverse
 * frequencies (the angle in double, so long positions keep their precision). */
void kern_rope_tables(float *cos_table, float *sin_table, int pos0, int n_pos, int half,
                      const double *inv_freq);
/* out[n, F] = silu(gate) * up, from gate[n, F] and up[n, F]. */
void kern_swiglu(float *out, const float *gate, const float *up, size_t count);
/* In-place softmax over each row of x[n, d]. */
void kern_softmax_rows(float *x, int n, int d);

/* Grouped-query causal attention for n new queries at positions pos0..pos0+n-1 over keys
 * 0..pos0+n-1. q[n, H*d]; k, v: [pos0+n, G*d] (the cache, row stride G*d); out[n, H*d].
 * window > 0 limits each query to its last `window` keys. scratch holds n * (pos0+n) floats. */
void kern_attention_causal(float *out, const float *q, const float *k, const float *v, int n,
                           int pos0, int n_heads, int n_kv_heads, int head_dim, int window,
                           float *scratch);

/* log-softmax cross-entropy of one row of logits against a target: -log p(target). */
double kern_cross_entropy_row(const float *logits, int vocab, int target);

#endif
