/* kernels/train_ops.h — training kernels on the CPU: forward and backward of the model's ops,
 * the distillation losses fused with their softmax, AdamW, gradient clipping, the LR schedule.
 *
 * Every op exists as name_f32 and name_f64 (one body, kernels/train_ops_impl.h): f64 lets the
 * tests check each backward against finite differences and lets a float64 model be assembled.
 * Matrices are row-major, weights in the Hugging Face layout W[out, in] (y = x W^T + b).
 * Gradients of weights are always accumulated (+=), so several uses and micro-batches add up;
 * gradients of activations are overwritten unless the op takes `accumulate`.
 * Functions that index with ids from outside (tokens, targets, top-k indices) check them and
 * return 0, or -1 with the error filled (common/xd.h); losses come back through *loss then. */
#ifndef XD_TRAIN_OPS_H
#define XD_TRAIN_OPS_H

#include "common/xd.h"

#include <stdbool.h>
#include <stddef.h>

/* Index meaning "no target" in cross-entropy targets (padding, the last position). */
#define KERN_IGNORE_INDEX (-1)
/* Default number of teacher logits kept per row for the top-k KL. */
#define KERN_TOPK_DEFAULT 256

#define KERN_TRAIN_OPS_DECLARE(real, S)                                                         \
    /* y[n, out] = x[n, in] W[out, in]^T + b[out] (b may be NULL). */                          \
    void kern_linear_##S(real *y, const real *x, const real *w, const real *b, int n, int in,  \
                         int out);                                                             \
    /* dx[n, in] (= or +=, by accumulate) dy W; dw[out, in] += dy^T x; db[out] += sum_t dy.    \
     * Any of dx, dw, db may be NULL to skip it. */                                            \
    void kern_linear_backward_##S(real *dx, real *dw, real *db, const real *dy, const real *x, \
                                  const real *w, int n, int in, int out, bool accumulate);     \
    /* y[n, d] = x * rsqrt(mean(x^2) + eps) * weight; y may alias x. */                        \
    void kern_rmsnorm_##S(real *y, const real *x, const real *weight, int n, int d, real eps);  \
    /* dx (= or +=) and dweight += for rmsnorm; x is the forward's input (the norm is          \
     * recomputed, so nothing is saved). dweight may be NULL. */                               \
    void kern_rmsnorm_backward_##S(real *dx, real *dweight, const real *dy, const real *x,     \
                                   const real *weight, int n, int d, real eps, bool accumulate);\
    /* cos/sin tables [n_pos, half] for positions pos0.. (angles in double). */                \
    void kern_rope_tables_##S(real *cos_table, real *sin_table, int pos0, int n_pos, int half, \
                              const double *inv_freq);                                         \
    /* In-place rotate-half RoPE of x[n, heads * head_dim], token t at table row pos0 + t. */  \
    void kern_rope_##S(real *x, int n, int heads, int head_dim, int pos0, const real *cos_table,\
                       const real *sin_table);                                                 \
    /* In place: turns d(rotated) into d(input), the inverse (transposed) rotation. */         \
    void kern_rope_backward_##S(real *dx, int n, int heads, int head_dim, int pos0,            \
                                const real *cos_table, const real *sin_table);                 \
    /* out = silu(gate) * up over count elements; out may alias gate or up. */                 \
    void kern_swiglu_##S(real *out, const real *gate, const real *up, size_t count);           \
    /* dgate, dup (overwritten) from dout; dgate/dup may alias dout. */                        \
    void kern_swiglu_backward_##S(real *dgate, real *dup, const real *dout, const real *gate,  \
                                  const real *up, size_t count);                               \
    /* out[n, d] = table[ids[t], :]; table is [vocab, d]. */                                   \
    int kern_embedding_##S(real *out, const real *table, const int *ids, int n, int vocab,     \
                           int d, xd_err *e);                                                  \
    /* dtable[ids[t], :] += dout[t, :] (a repeated id gets every contribution). */             \
    int kern_embedding_backward_##S(real *dtable, const real *dout, const int *ids, int n,     \
                                    int vocab, int d, xd_err *e);                              \
    /* Grouped-query causal attention, as kern_attention_causal (kernels.h). */                \
    void kern_attention_causal_##S(real *out, const real *q, const real *k, const real *v,     \
                                   int n, int pos0, int n_heads, int n_kv_heads, int head_dim, \
                                   int window, real *scratch);                                 \
    /* Its backward: dq[n, H*d], dk and dv [pos0+n, G*d] (all overwritten) from dout.          \
     * scratch holds 2 * n * (pos0+n) elements. */                                             \
    void kern_attention_causal_backward_##S(real *dq, real *dk, real *dv, const real *dout,    \
                                            const real *q, const real *k, const real *v, int n,\
                                            int pos0, int n_heads, int n_kv_heads,             \
                                            int head_dim, int window, real *scratch);          \
    /* Per-layer MSE: returns mean((yhat - y)^2) over all count elements; dyhat (may be NULL,  \
     * may alias yhat) = 2 (yhat - y) / count. */                                              \
    double kern_mse_##S(real *dyhat, const real *yhat, const real *y, size_t count);           \
    /* Cross-entropy of logits[n, vocab] against targets (KERN_IGNORE_INDEX skips a row):      \
     * *loss = mean over the n_valid other rows; dlogits (may be NULL, may alias logits)       \
     * = (softmax - onehot) / n_valid, zero on ignored rows. */                                \
    int kern_cross_entropy_##S(double *loss, real *dlogits, const real *logits,                \
                               const int *targets, int n, int vocab, xd_err *e);               \
    /* The k largest entries of each row of logits[n, vocab]: idx/val [n, k], by value         \
     * descending, ties to the lower index. O(vocab log k) per row. */                         \
    int kern_topk_##S(int *idx, real *val, const real *logits, int n, int vocab, int k,        \
                      xd_err *e);                                                              \
    /* Top-k KL: p_T = softmax(teacher_val[t, :]), p_S = softmax(logits[t, idx[t, :]]);        \
     * *loss = mean over the n rows of KL(p_T || p_S); dlogits (may be NULL, may alias         \
     * logits) = (p_S - p_T) / n at the k indices, zero elsewhere in the row. */               \
    int kern_topk_kl_##S(double *loss, real *dlogits, const real *logits, const int *idx,      \
                         const real *teacher_val, int n, int vocab, int k, xd_err *e);         \
    /* Both losses from one read of the logits: dlogits = w_ce dCE + w_kl dKL, with CE and KL  \
     * exactly as above (CE over non-ignored rows, KL over all n). Either loss pointer may be  \
     * NULL. */                                                                                \
    int kern_distill_loss_##S(double *ce, double *kl, real *dlogits, const real *logits,       \
                              const int *targets, const int *idx, const real *teacher_val,     \
                              int n, int vocab, int k, double w_ce, double w_kl, xd_err *e);

KERN_TRAIN_OPS_DECLARE(float, f32)
KERN_TRAIN_OPS_DECLARE(double, f64)

/* AdamW hyper-parameters (PyTorch's names and defaults: betas 0.9/0.999, eps 1e-8, wd 0.01). */
typedef struct kern_adamw {
    double lr, beta1, beta2, eps, weight_decay;
} kern_adamw;

/* One torch.optim.AdamW step (amsgrad off, maximize off) over n parameters, in float32:
 * p, m, v updated in place from g. step is the 1-based count including this one. */
void kern_adamw_step(float *p, const float *g, float *m, float *v, size_t n,
                     const kern_adamw *cfg, long step);

/* torch.nn.utils.clip_grad_norm_ over one flat gradient: returns the total L2 norm before
 * clipping and scales g by max_norm / (norm + 1e-6) when that is below 1. A non-finite norm
 * is returned with g left untouched (so the caller can skip the step). */
double kern_clip_grad_norm(float *g, size_t n, double max_norm);

/* Learning rate by step: linear warm-up from 0 (step 0) to peak (step warmup), then cosine
 * decay to lr_min at step total and lr_min after it, or peak from warm-up on (cosine false).
 * step counts the updates already made (Hugging Face's LambdaLR convention): the update with
 * AdamW step t uses kern_lr_at(s, t - 1). */
typedef struct kern_lr_schedule {
    double peak, lr_min;
    long warmup, total;
    bool cosine;
} kern_lr_schedule;
double kern_lr_at(const kern_lr_schedule *s, long step);

#endif
