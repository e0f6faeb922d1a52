/* Training kernels on the CPU: the templated ops (train_ops_impl.h, once per element type),
 * then the float32-only optimiser pieces. */
#include "train_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define real float
#define KFN(name) name##_f32
#define KGEMM cblas_sgemm
#define KEXP expf
#include "train_ops_impl.h"
#undef real
#undef KFN
#undef KGEMM
#undef KEXP

#define real double
#define KFN(name) name##_f64
#define KGEMM cblas_dgemm
#define KEXP exp
#include "train_ops_impl.h"
#undef real
#undef KFN
#undef KGEMM
#undef KEXP

/* torch.optim.AdamW (torch/optim/adam.py, _single_tensor_adam with decoupled weight decay,
 * the path taken for CPU tensors), for each parameter, step t >= 1:
 *     param.mul_(1 - lr * weight_decay)
 *     exp_avg.lerp_(grad, 1 - beta1)                 # m + (1-beta1)(g - m)
 *     exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *     bias_correction1 = 1 - beta1 ** t
 *     bias_correction2 = 1 - beta2 ** t
 *     step_size = lr / bias_correction1
 *     bias_correction2_sqrt = bias_correction2 ** 0.5
 *     denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
 *     param.addcdiv_(exp_avg, denom, value=-step_size)
 * The Python scalars are doubles, cast to float when they meet the float32 tensors; the
 * tensor arithmetic below is float in the same order (ATen's lerp for weight < 0.5 is
 * self + weight * (end - self); addcmul is self + value * t1 * t2; addcdiv self + value * t1 / t2).
 * Same formula, not promised bit for bit: ATen's vectorised lerp rounds through an FMA. */
void kern_adamw_step(float *p, const float *g, float *m, float *v, size_t n,
                     const kern_adamw *cfg, long step) {
    float decay = (float)(1.0 - cfg->lr * cfg->weight_decay);
    double w1d = 1.0 - cfg->beta1;
    float w1 = (float)w1d, beta2 = (float)cfg->beta2, w2 = (float)(1.0 - cfg->beta2);
    double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    float neg_step = (float)(-(cfg->lr / bc1));
    float bc2_sqrt = (float)pow(bc2, 0.5), eps = (float)cfg->eps;
    bool small_w1 = fabs(w1d) < 0.5;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        p[i] = p[i] * decay;
        m[i] = small_w1 ? m[i] + w1 * (gi - m[i]) : gi - (gi - m[i]) * (1.0f - w1);
        v[i] = v[i] * beta2 + w2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] + neg_step * m[i] / denom;
    }
}

/* torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), applied when
 * below 1. The norm is summed in double (ATen also accumulates float norms in double). */
double kern_clip_grad_norm(float *g, size_t n, double max_norm) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    double norm = sqrt(ss);
    if (!isfinite(norm)) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
        for (size_t i = 0; i < n; i++) g[i] *= c;
    }
    return norm;
}

double kern_lr_at(const kern_lr_schedule *s, long step) {
    if (step < 0) return 0;
    if (step < s->warmup) return s->peak * (double)step / (double)s->warmup;
    if (!s->cosine) return s->peak;
    if (step >= s->total || s->total <= s->warmup) return s->lr_min;
    double progress = (double)(step - s->warmup) / (double)(s->total - s->warmup);
    return s->lr_min + (s->peak - s->lr_min) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
}
