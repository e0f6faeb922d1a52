/* model/gpu.h — the teacher and the student on one CUDA GPU (built with the CUDA backend only:
 * XD_HAVE_CUDA). A gpu_net holds a model's fp32 master weights and their bf16 copy on the device,
 * activations for B sequences of T tokens, and in training mode the fp32 gradients and the AdamW
 * moments. Same maths as the CPU model (model/student_impl.h, model/transformer.c): bf16 matrix
 * products with fp32 accumulation, fp32 residual stream, norms, gates, mLSTM states and every
 * reduction (summed in a fixed order: a run repeats bit for bit). Checked against the CPU f32
 * model by tests/cuda/bench_cuda_model. */
#ifndef XD_MODEL_GPU_H
#define XD_MODEL_GPU_H

#include "model.h"

#include <stdint.h>
#include <stdio.h>

typedef struct gpu_net gpu_net;

enum {
    GPU_TRAIN = 1,    /* gradients, optimiser moments, every layer's activations kept */
    GPU_LOGITS = 2,   /* fp32 logits [B*T, V] (teacher or student forward) */
    GPU_ONE_LAYER = 4 /* student: activations for one layer's attention only (align) */
};

/* Uploads m (teacher or student) to CUDA device `device` for batches of B x T tokens. capture_*:
 * a teacher forward also keeps, for layers capture_first..capture_last (capture_last < 0: none),
 * each layer's normalised input xn [B*T, D] and its attention output before W_o [B*T, H*d]
 * (bf16). */
int gpu_net_open(gpu_net **out, const model_transformer *m, int device, int B, int T, unsigned flags,
                 int capture_first, int capture_last, xd_err *e);
void gpu_net_close(gpu_net *g);
/* "NVIDIA H100 80GB HBM3, 80 GiB" and the bytes this net holds on the device. */
const char *gpu_net_device(const gpu_net *g);
double gpu_net_bytes(const gpu_net *g);

/* Host <-> device copies of the fp32 parameters (set also refreshes the bf16 copy). */
int gpu_net_set_params(gpu_net *g, const float *params, xd_err *e);
int gpu_net_get_params(gpu_net *g, float *params, xd_err *e);

/* Forward of B sequences of T tokens (host ids, checked against the vocabulary). The teacher's
 * fills the logits (GPU_LOGITS) and the captures; the student's keeps what its backward needs. */
int gpu_teacher_forward(gpu_net *g, const int *tokens, xd_err *e);
int gpu_student_forward(gpu_net *g, const int *tokens, xd_err *e);
/* Device pointers: logits [B*T, V] fp32; a capture's xn [B*T, D] and attn [B*T, H*d] bf16. */
const float *gpu_net_logits(const gpu_net *g);
const uint16_t *gpu_net_capture_xn(const gpu_net *g, int layer);
const uint16_t *gpu_net_capture_attn(const gpu_net *g, int layer);
/* A device buffer of B*T*V bf16 for the loss's dlogits (GPU_TRAIN with GPU_LOGITS). */
uint16_t *gpu_net_dlogits(gpu_net *g);
/* Backward of the last student forward from dlogits (gpu_net_dlogits): gradients ADD. */
int gpu_student_backward(gpu_net *g, xd_err *e);

/* Align: one layer's attention from a normalised input xn [B*T, D] (device, bf16): yhat [B*T,
 * H*d] (device, bf16), and its backward from dyhat (device, fp32), adding the gradients of that
 * layer's new parameters only. */
const uint16_t *gpu_student_layer_forward(gpu_net *g, int layer, const uint16_t *xn, xd_err *e);
int gpu_student_layer_backward(gpu_net *g, int layer, const uint16_t *xn, const float *dyhat, xd_err *e);
/* A device fp32 buffer of B*T*H*d for dyhat. */
float *gpu_net_dyhat(gpu_net *g);
/* *mse = mean (yhat - target)^2 over B*T*H*d, and dyhat = scale * 2 (yhat - target) / count. */
int gpu_mse(gpu_net *g, double *mse, const uint16_t *yhat, const uint16_t *target, double scale, xd_err *e);

/* The distillation loss over the last student forward's logits against the teacher's (teacher:
 * a GPU_LOGITS net run on the same tokens): per sequence, CE over its valid targets (< 0 ignored)
 * and the top-k KL over its T rows, each averaged over the sequence and then over the B
 * sequences; dlogits = share (w_ce dCE + w_kl dKL), written into gpu_net_dlogits (share: the
 * fraction of the step's batch these B sequences are). */
int gpu_distill_loss(gpu_net *student, const gpu_net *teacher, const int *targets, int topk, double w_ce,
                     double w_kl, double share, double *ce, double *kl, xd_err *e);

/* Gradients and the optimiser, over trainable ranges of the parameter array (offsets and counts
 * in elements; the moments packed in range order, as trainer_optim). */
int gpu_net_zero_grads(gpu_net *g, xd_err *e);
int gpu_net_get_grads(gpu_net *g, float *grads, xd_err *e);
/* The device's fp32 gradient buffer [n_params] (GPU_TRAIN; else NULL), laid out as the parameters:
 * for the data-parallel all-reduce, which runs after the work queued on the default stream. */
float *gpu_net_grad_buffer(gpu_net *g);
int gpu_net_set_moments(gpu_net *g, const float *m, const float *v, uint64_t n, xd_err *e);
int gpu_net_get_moments(gpu_net *g, float *m, float *v, xd_err *e);
/* Global-norm clipping (torch's clip_grad_norm_) then one AdamW step (step is 1-based) over the
 * ranges; *norm is the norm before clipping; a non-finite norm skips the update. */
int gpu_net_clip_adamw(gpu_net *g, const uint64_t *offset, const uint64_t *count, int n_ranges,
                       double max_norm, double lr, double beta1, double beta2, double eps,
                       double weight_decay, long step, double *norm, xd_err *e);

/* Generation for one sequence: the teacher with a KV cache of `capacity` positions, the student in
 * step form with its fixed-size state (per layer the sink and window rows, bf16, and per head the
 * mLSTM state, fp32). The first feed of n >= 2 tokens (n <= max_prompt) runs them at once, as the
 * chunkwise forward, and hands the states over (as model_student_prefill); every other token is
 * a step. Same maths as the CPU's model_transformer_forward and model_student_step. */
typedef struct gpu_gen gpu_gen;
int gpu_gen_open(gpu_gen **out, const model_transformer *m, int device, int max_prompt, int capacity, xd_err *e);
void gpu_gen_close(gpu_gen *g);
/* Consumes n tokens; logits (host, may be NULL): the last one's [V]. */
int gpu_gen_feed(gpu_gen *g, const int *tokens, int n, float *logits, xd_err *e);
/* Back to the empty context (position 0), for the next sequence. */
int gpu_gen_reset(gpu_gen *g, xd_err *e);
const char *gpu_gen_device(const gpu_gen *g);
/* The device bytes of the context: the KV cache in use (teacher) or the whole state (student). */
double gpu_gen_state_bytes(const gpu_gen *g);
/* Every device byte it holds: weights, the prompt's activations, caches and states. */
double gpu_gen_bytes(const gpu_gen *g);

/* Per-kernel timing (each call alone, synchronised) summed by function; the report divides by
 * per (steps) and lists the largest first. For benchmarks only: the syncs cost time. */
void gpu_profile(bool on);
void gpu_profile_report(FILE *f, double per);

#endif
