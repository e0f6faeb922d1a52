/* kernels/cuda/cuda_ops.h — the CUDA backend's ops (sm_90a), checked against the CPU reference of
 * kernels/ by the harness tests/cuda/bench_cuda_ops. bf16 activations, fp32 accumulation, fp32
 * master weights and optimiser state. Pointers are device pointers; every function runs on the
 * given stream. Plain C linkage so C11 code calls it. */
#ifndef XD_CUDA_OPS_H
#define XD_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t kern_bf16; /* bfloat16 bits, as kernels/ and the checkpoint formats see them */
typedef struct CUstream_st *kern_cuda_stream;

/* y[n, d] = x * rsqrt(mean(x^2) + eps) * w: one warp per row, fp32 sums. */
int kern_cuda_rmsnorm_bf16(kern_bf16 *y, const kern_bf16 *x, const float *w, int n, int d, float eps,
                           kern_cuda_stream s);
/* out = silu(gate) * up over count elements. */
int kern_cuda_swiglu_bf16(kern_bf16 *out, const kern_bf16 *gate, const kern_bf16 *up, size_t count,
                          kern_cuda_stream s);
/* Fused softmax + cross-entropy per row of logits [n, V]: loss[row] = -log p(target) (target < 0:
 * 0), dlogits = (softmax - onehot) * scale, in one pass over the row after its max and sum. */
int kern_cuda_cross_entropy_bf16(float *loss, kern_bf16 *dlogits, const kern_bf16 *logits,
                                 const int *targets, int n, int V, float scale, kern_cuda_stream s);
/* One torch.optim.AdamW step over n fp32 parameters (bias-corrected, decoupled decay). */
int kern_cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, long step, kern_cuda_stream s);
/* C[m, n] = A[m, k] B[n, k]^T (the HF linear layout) in bf16 with fp32 accumulation, cuBLAS. */
int kern_cuda_linear_bf16(kern_bf16 *c, const kern_bf16 *a, const kern_bf16 *b, int m, int n, int k,
                          kern_cuda_stream s);
/* The last CUDA/cuBLAS error as text ("file:line: call: message"), for the caller's xd_err. */
const char *kern_cuda_last_error(void);

/* ---- device memory, for the C code that drives the kernels (layer_ops.cu) ---- */
/* cudaSetDevice(device) and its name and memory; -1 when there is no such device. */
int kern_cuda_use_device(int device, char *name, size_t cap, double *mem_gib);
int kern_cuda_device_memory(double *used_gib, double *total_gib);
/* NULL on failure, with the size asked for and the memory free in kern_cuda_last_error. */
void *kern_cuda_alloc(size_t bytes);
void kern_cuda_free(void *p);
/* kind 0: host to device, 1: device to host (waits for the stream), 2: device to device. */
int kern_cuda_copy(void *dst, const void *src, size_t bytes, int kind, kern_cuda_stream s);
int kern_cuda_zero(void *p, size_t bytes, kern_cuda_stream s);
int kern_cuda_sync(kern_cuda_stream s);

/* ---- the ops that join the kernels into a model (layer_ops.cu) ----
 * Weight gradients ADD, summed in a fixed order (per-256-row partials, no atomics). */
/* Row-major C[m, n] = alpha op(A) op(B) + beta C, op(A) [m, k] (A stored [k, m] when trans_a),
 * op(B) [k, n] (B stored [n, k] when trans_b); A, B bf16, C fp32 (c_f32) or bf16, fp32
 * accumulation (cuBLAS). The linear y = x W^T is trans_b; dx = dy W plain; dW += dy^T x trans_a. */
int kern_cuda_matmul(void *c, int c_f32, const kern_bf16 *a, const kern_bf16 *b, int m, int n, int k,
                     int trans_a, int trans_b, float alpha, float beta, kern_cuda_stream s);
int kern_cuda_cast_bf16(kern_bf16 *dst, const float *src, size_t n, kern_cuda_stream s);
int kern_cuda_add_f32(float *y, const float *x, size_t n, kern_cuda_stream s);   /* y += x */
int kern_cuda_add_bf16(float *y, const kern_bf16 *x, size_t n, kern_cuda_stream s);
int kern_cuda_scale_f32(float *x, float a, size_t n, kern_cuda_stream s);
/* *out = sum x^2 in double (waits for the stream). */
int kern_cuda_sumsq_f32(double *out, const float *x, size_t n, kern_cuda_stream s);
/* RMSNorm of the fp32 residual stream into bf16, and its backward: dx (= or += by accumulate)
 * and dw += (dw may be NULL) from fp32 dy and the forward's x. d <= 6144. */
int kern_cuda_rmsnorm_f32(kern_bf16 *y, const float *x, const float *w, int n, int d, float eps,
                          kern_cuda_stream s);
int kern_cuda_rmsnorm_bwd_f32(float *dx, float *dw, const float *dy, const float *x, const float *w,
                              int n, int d, float eps, int accumulate, kern_cuda_stream s);
/* dgate, dup (bf16) from fp32 dout and the forward's gate, up. */
int kern_cuda_swiglu_bwd(kern_bf16 *dgate, kern_bf16 *dup, const float *dout, const kern_bf16 *gate,
                         const kern_bf16 *up, size_t n, kern_cuda_stream s);
/* x[t] = table[ids[t]] (ids checked by the caller); the backward adds, for each distinct id
 * uniq[u], the rows order[starts[u] .. starts[u+1]-1] of dx in that order. */
int kern_cuda_embedding_f32(float *x, const float *table, const int *ids, int n, int d,
                            kern_cuda_stream s);
int kern_cuda_embedding_bwd_f32(float *dtable, const float *dx, const int *uniq, const int *starts,
                                const int *order, int n_uniq, int d, kern_cuda_stream s);
/* y[n, cols] += b; db += the column sums of dy. */
int kern_cuda_bias_bf16(kern_bf16 *y, const float *b, int n, int cols, kern_cuda_stream s);
int kern_cuda_bias_bwd_f32(float *db, const float *dy, int n, int cols, kern_cuda_stream s);
/* The input and forget gates as products: z = x W (cuBLAS, W [D, H]) then, in place, itilde =
 * z_i + b_i and log_f = logsigmoid(z_f + b_f); the backward's d z_f = d log_f (1 - f) (fp32) and
 * bf16 copies of d z_i, d z_f for the products dx += dz W^T, dW += x^T dz. */
int kern_cuda_gates_finish(float *itilde, float *log_f, const float *b_i, const float *b_f, int n, int H,
                           kern_cuda_stream s);
int kern_cuda_gates_dz(kern_bf16 *dzi_b, kern_bf16 *dzf_b, float *dzf, const float *ditilde,
                       const float *dlog_f, const float *log_f, int n, int H, kern_cuda_stream s);
/* The student's output gate and mixing (kernels/student_ops.h) with bf16 q, k, v, yswa: o [n, H]
 * fp32; the backward ADDS into fp32 dq [n, H*d], dk, dv [n, G*d], dw [H, 3d], db [H]. */
int kern_cuda_output_gate_fwd(float *o, const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                              const float *w, const float *b, int n, int H, int G, int d,
                              kern_cuda_stream s);
int kern_cuda_output_gate_bwd(float *dq, float *dk, float *dv, float *dw, float *db, const float *d_o,
                              const float *o, const kern_bf16 *q, const kern_bf16 *k,
                              const kern_bf16 *v, const float *w, int n, int H, int G, int d,
                              kern_cuda_stream s);
/* yhat (bf16) = o hm + (1 - o) yswa; backward writes d_o, dhm (fp32) and dyswa (bf16). */
int kern_cuda_mix_fwd(kern_bf16 *yhat, const float *o, const float *hm, const kern_bf16 *yswa, int n,
                      int H, int d, kern_cuda_stream s);
int kern_cuda_mix_bwd(float *d_o, float *dhm, kern_bf16 *dyswa, const float *dyhat, const float *o,
                      const float *hm, const kern_bf16 *yswa, int n, int H, int d, kern_cuda_stream s);
/* Token-major [B*T, G*d] -> head-major [B*H, T, d] fp32 (query head h reads kv head h/(H/G));
 * back again summing each group's heads (= or += by accumulate). d = 1 moves gates [B*T, H]. */
int kern_cuda_to_heads_f32(float *dst, const float *src, int B, int T, int H, int G, int d,
                           kern_cuda_stream s);
int kern_cuda_to_heads_bf16(float *dst, const kern_bf16 *src, int B, int T, int H, int G, int d,
                            kern_cuda_stream s);
int kern_cuda_from_heads_f32(float *dst, const float *src, int B, int T, int H, int G, int d,
                             int accumulate, kern_cuda_stream s);
/* Token-major [n, G*d] -> [n, H*d] (bf16), and dst [n, G*d] += group sums of src [n, H*d]. */
int kern_cuda_repeat_heads_bf16(kern_bf16 *dst, const kern_bf16 *src, int n, int H, int G, int d,
                                kern_cuda_stream s);
int kern_cuda_sum_heads_f32(float *dst, const float *src, int n, int H, int G, int d,
                            kern_cuda_stream s);
/* RoPE's backward in place on fp32 rows [n, heads, head_dim]: row r at table row r % T. */
int kern_cuda_rope_bwd_f32(float *dx, int n, int heads, int head_dim, int T, const float *cos_table,
                           const float *sin_table, kern_cuda_stream s);
/* *loss = mean (yhat - y)^2, dy = grad_scale (yhat - y) (fp32); waits for the stream. */
int kern_cuda_mse_bf16(double *loss, float *dy, const kern_bf16 *yhat, const kern_bf16 *y, size_t n,
                       float grad_scale, kern_cuda_stream s);

/* ---- chunkwise mLSTM (mlstm.cu) ---- */
/* The mLSTM cell of kernels/mlstm.h (same maths, same layout: B sequences one after another,
 * phi_q, phi_k [B, T, dk], v, h [B, T, dv], itilde, logf [B, T]), fp32 (kern_cuda_mlstm_fwd's
 * tensor-core products in 3xTF32, fp32-accurate), chunk length L in 1 .. 64 (T need not be a
 * multiple), dk = dv = 64. */
/* Bytes of `saved` (forward -> backward): per sequence, the CPU's kern_mlstm_saved_len layout
 * (m [T], den [T], the state C, n entering chunks 1 .. nch-1), then each chunk's decay [B, nch]. */
size_t kern_cuda_mlstm_saved_bytes(int B, int T, int L, int dk, int dv);
/* Bytes of the backward's workspace: state gradients [B, nch-1, dk*dv + dk], m-path terms [B, T]. */
size_t kern_cuda_mlstm_workspace_bytes(int B, int T, int L, int dk, int dv);
/* Forward: writes h and saved (needed by the backward); the model's, for training and inference.
 * For L in 33 .. 64 the chunks' products Q K^T, P V and Q C_in run on tensor cores in 3xTF32
 * (each fp32 operand split into TF32 hi + lo, hi hi + hi lo + lo hi accumulated in fp32: ~2^-22
 * relative per product, fp32's level, so h and den meet the fp32 path's 1e-5 tests); m, the
 * states and the decays are fp32 and the same bits as the fp32 path. (Plain TF32 products were
 * not enough for training: the backward recomputes them in fp32, and the input gate's gradient is
 * a sum over tokens that cancels almost exactly — scaling every input gate scales numerator and
 * normaliser alike — so a TF32 forward left it 140-1300 times its bf16 floor's error in
 * bench_cuda_model CHUNK 64.) */
int kern_cuda_mlstm_fwd(float *h, float *saved, const float *phi_q, const float *phi_k, const float *v,
                        const float *itilde, const float *logf, int B, int T, int L, int dk, int dv, float eps,
                        kern_cuda_stream s);
/* The same forward all in fp32 on CUDA cores, for every L (same arguments, same outputs): the
 * reference the tests hold the tensor-core path to. */
int kern_cuda_mlstm_fwd_fp32(float *h, float *saved, const float *phi_q, const float *phi_k, const float *v,
                             const float *itilde, const float *logf, int B, int T, int L, int dk, int dv, float eps,
                             kern_cuda_stream s);
/* Backward, exact including the normaliser and the m_t path: OVERWRITES d_phi_q, d_phi_k, d_v,
 * d_itilde, d_logf, given the forward's inputs, its h and saved, and the loss gradient dh. The
 * model's: for L in 33 .. 64 the chunks' eight products (Q K^T, dnum V^T, K E, V E^T, P^T dnum,
 * dnum C_in^T, dS K, dS^T Q) run on tensor cores in 3xTF32, as the forward's. */
int kern_cuda_mlstm_bwd(float *d_phi_q, float *d_phi_k, float *d_v, float *d_itilde, float *d_logf, void *workspace,
                        const float *dh, const float *h, const float *saved, const float *phi_q, const float *phi_k,
                        const float *v, const float *itilde, const float *logf, int B, int T, int L, int dk, int dv,
                        float eps, kern_cuda_stream s);
/* The same backward all in fp32 on CUDA cores, for every L: the tests' reference. */
int kern_cuda_mlstm_bwd_fp32(float *d_phi_q, float *d_phi_k, float *d_v, float *d_itilde, float *d_logf,
                             void *workspace, const float *dh, const float *h, const float *saved, const float *phi_q,
                             const float *phi_k, const float *v, const float *itilde, const float *logf, int B, int T,
                             int L, int dk, int dv, float eps, kern_cuda_stream s);

/* ---- sliding-window + sink attention (swa.cu) ---- */
/* The attention of kernels/swa.h (query t sees keys j <= t with j < S or j >= t - W + 1, scale
 * 1/sqrt(d), query head h reads kv head h / (H/G)) over a batch of B sequences laid out one after
 * another: q, out, dq, dout [B, T, H*d]; k, v, dk, dv [B, T, G*d]; lse [B, T, H] (fp32). Head dim
 * d = 64 or 128 (else -1); W >= T is full causal attention; bf16 tensors 16-byte aligned.
 * Flash-attention style on tensor cores (mma.sync bf16, fp32 accumulation and softmax): blocks of
 * 64 queries visit only their sink and window key tiles; no T x T matrix. */
int kern_cuda_swa_fwd_bf16(kern_bf16 *out, float *lse, const kern_bf16 *q, const kern_bf16 *k,
                           const kern_bf16 *v, int B, int T, int H, int G, int d, int W, int S,
                           kern_cuda_stream s);
/* Gradients from dout, given the forward's inputs, out and lse. WRITES (overwrites) dq, dk, dv,
 * unlike kern_swa_bwd_f32, which adds. Deterministic: no atomics; dq from one pass per query tile,
 * dk and dv from one pass per key tile summing over the query heads of its kv head. Allocates a
 * B*T*H fp32 scratch on the stream (cudaMallocAsync) and frees it there. */
int kern_cuda_swa_bwd_bf16(kern_bf16 *dq, kern_bf16 *dk, kern_bf16 *dv, const kern_bf16 *dout,
                           const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                           const kern_bf16 *out, const float *lse, int B, int T, int H, int G, int d,
                           int W, int S, kern_cuda_stream s);
/* The same, same arguments and results, as plain fp32 CUDA-core kernels (one warp per query or
 * key row, keys listed one by one): much slower; a second opinion the harness checks as well. */
int kern_cuda_swa_fwd_simple_bf16(kern_bf16 *out, float *lse, const kern_bf16 *q, const kern_bf16 *k,
                                  const kern_bf16 *v, int B, int T, int H, int G, int d, int W,
                                  int S, kern_cuda_stream s);
int kern_cuda_swa_bwd_simple_bf16(kern_bf16 *dq, kern_bf16 *dk, kern_bf16 *dv,
                                  const kern_bf16 *dout, const kern_bf16 *q, const kern_bf16 *k,
                                  const kern_bf16 *v, const kern_bf16 *out, const float *lse, int B,
                                  int T, int H, int G, int d, int W, int S, kern_cuda_stream s);

/* ---- RoPE, feature maps, gates (student.cu) ---- */
/* Rotate-half RoPE in place, as kern_rope_f32 (HF layout: pairs (i, i + head_dim/2)): x [n, heads,
 * head_dim] bf16, token t at row pos0 + t of the fp32 tables cos, sin [n_pos, head_dim/2] made on
 * the host by kern_rope_tables_f32 (so any frequency scaling is whatever the tables hold).
 * Arithmetic in fp32, one rounding to bf16 per element. Backward: the transposed rotation, in
 * place, turning d(rotated) into d(input). */
int kern_cuda_rope_bf16(kern_bf16 *x, int n, int heads, int head_dim, int pos0,
                        const float *cos_table, const float *sin_table, kern_cuda_stream s);
int kern_cuda_rope_backward_bf16(kern_bf16 *dx, int n, int heads, int head_dim, int pos0,
                                 const float *cos_table, const float *sin_table,
                                 kern_cuda_stream s);
/* Hedgehog feature map of one layer, every head at once: phi[t, h*d:(h+1)*d] = softmax(x[t, h*d:
 * (h+1)*d] M[h]) with x [T, H*d] bf16, M [H, d, d] fp32, phi [T, H*d] fp32; d in {32, 64, 96,
 * 128} (else -1). fp32 throughout (x widened exactly). One warp per token row, M[h] in shared
 * memory. */
int kern_cuda_feature_map_fwd_bf16(float *phi, const kern_bf16 *x, const float *M, int T, int H,
                                   int d, kern_cuda_stream s);
/* Backward, ADDING like kern_feature_map_bwd_f32: dx [T, H*d] fp32 += dz M[h]^T and dM [H, d, d]
 * += sum_t x^T dz, dz = phi (dphi - <dphi, phi>), from dphi, the forward's phi, x and M.
 * Deterministic (no atomics): one fp32 partial dM per 256-token chunk and head, summed in chunk
 * order by a second kernel; the partials [ceil(T/256), H, d, d] are allocated on the stream
 * (cudaMallocAsync) and freed there. */
int kern_cuda_feature_map_bwd_bf16(float *dx, float *dM, const float *dphi, const float *phi,
                                   const kern_bf16 *x, const float *M, int T, int H, int d,
                                   kern_cuda_stream s);

/* Input and forget gates, as kern_gates_fwd_f32: itilde[t, h] = x[t, :] . w_i[:, h] + b_i[h],
 * log_f[t, h] = logsigmoid(x[t, :] . w_f[:, h] + b_f[h]) (as -softplus(-z)); x [T, D] bf16,
 * w_i, w_f [D, H], b_i, b_f [H], itilde, log_f [T, H] fp32; H <= 32 (else -1). One warp per
 * (token, head), fp32 sums. */
int kern_cuda_gates_fwd_bf16(float *itilde, float *log_f, const kern_bf16 *x, const float *w_i,
                             const float *b_i, const float *w_f, const float *b_f, int T, int D,
                             int H, kern_cuda_stream s);
/* Backward, ADDING like kern_gates_bwd_f32 into dx [T, D] fp32, dw_i, dw_f [D, H], db_i, db_f [H],
 * from ditilde, dlog_f and the forward's log_f. Deterministic: per-256-token partials of the
 * weight and bias gradients (allocated on the stream, cudaMallocAsync) summed in order. */
int kern_cuda_gates_bwd_bf16(float *dx, float *dw_i, float *db_i, float *dw_f, float *db_f,
                             const float *ditilde, const float *dlog_f, const kern_bf16 *x,
                             const float *log_f, const float *w_i, const float *w_f, int T, int D,
                             int H, kern_cuda_stream s);

/* ---- top-k and the distillation loss (loss.cu) ---- */
/* The k largest entries of each row of logits [n, V] fp32: idx/val [n, k], by value descending,
 * ties to the lower index (exactly kern_topk_f32's result). 1 <= k <= 1024 and k <= V, else -1.
 * One block per row, one read of the row: an 11-bit histogram of the order-preserving keys bounds
 * the k-th entry from below as the row goes by, the entries above the bound are kept in shared
 * memory and sorted (bitonic, on 64-bit keys value | ~index); a row with thousands of ties at the
 * threshold takes an exact radix select over the row instead (several reads). Deterministic. The
 * zeros tie (-0.0 and +0.0 rank equal, each comes back with its own sign), as on the CPU; NaN
 * (which the CPU's heap gives no defined place) ranks above +inf, or below -inf when its sign bit
 * is set: callers keep the logits finite. */
int kern_cuda_topk_f32(int *idx, float *val, const float *logits, int n, int V, int k, kern_cuda_stream s);
/* kern_distill_loss_f32 of kernels/train_ops.h on the GPU for n rows of fp32 logits [n, V]:
 * ce[row] = -log softmax(logits)[target] (0 when target < 0, i.e. KERN_IGNORE_INDEX),
 * kl[row] = KL(p_T || p_S) over the row's k indices (p_T = softmax(teacher_val[row]),
 * p_S = softmax(logits[row, idx[row]]) over those k entries only),
 * dlogits[row] (bf16, every entry written) = ce_scale * (softmax - onehot(target)) (zero row part when
 * target < 0) + kl_scale * (p_S - p_T) at the k indices. The caller folds the loss weights and the
 * means into ce_scale and kl_scale. One block per row, fp32 maths. targets, idx, teacher_val
 * [n] / [n, k] on the device; targets must be < V (the host checks them before upload: the GPU
 * has no per-row error), and idx distinct and in [0, V) within each row, as kern_cuda_topk_f32
 * gives. The log-sum-exp uses the row max, as the CPU (ce = (max - x[target]) + log sum exp(x -
 * max)). A row that fits in shared memory (V up to about 57000) is read from global memory once,
 * a longer one twice (the second read mostly from L2); a row with no target is not read beyond
 * its k entries. 1 <= k <= 1024 and k <= V, else -1. Deterministic (fixed reduction trees). */
int kern_cuda_distill_loss_f32(float *ce, float *kl, kern_bf16 *dlogits, const float *logits,
                               const int *targets, const int *idx, const float *teacher_val,
                               int n, int V, int k, float ce_scale, float kl_scale, kern_cuda_stream s);

/* ---- the step form for generation (step.cu) ---- */
/* Attention of one query per head over a cache of key/value rows (bf16, G*d per row, keys with
 * RoPE applied): out [H*d] bf16 = softmax(q . k / sqrt(d)) v over the rows [s1, s1 + n1) and
 * [s2, s2 + n2) of k and v (n1, n2 >= 0, n1 + n2 >= 1; the order of the keys does not matter);
 * query head h reads kv head h / (H / G); q [H*d] bf16; d = 64 or 128; q, k, v 16-byte aligned.
 * Split over the keys (flash-decoding): a first kernel gives each block of keys and each group
 * of up to 8 query heads of one kv head (so a key row is read once for all of them) a partial
 * max, sum and accumulator, a second combines them per head, so 32k keys spread over the GPU.
 * fp32 scores and softmax; deterministic (fixed splits for given n1 + n2 and heads, fixed-order
 * sums). The student's cache is one buffer of S + W rows a layer (rows 0 .. S-1 the sinks, row
 * S + p % W position p): for the query at pos, s1 = 0, n1 = min(S, max(0, pos - W + 1)),
 * s2 = S, n2 = min(pos + 1, W). ws: kern_cuda_decode_attn_ws_bytes(H, d, max_keys) bytes of
 * device memory (16-byte aligned, as kern_cuda_alloc gives), max_keys >= n1 + n2. */
size_t kern_cuda_decode_attn_ws_bytes(int H, int d, int max_keys);
int kern_cuda_decode_attn_bf16(kern_bf16 *out, const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v, int s1,
                               int n1, int s2, int n2, int H, int G, int d, void *ws, kern_cuda_stream s);
/* One mLSTM step for BH heads at once (kern_mlstm_step_f32's maths): the states C [BH, dk*dv]
 * (row r of a head's C is key index r), n [BH, dk], m [BH] fp32, updated in place (the empty
 * state: C = n = 0, m = -inf); phi_q, phi_k [BH, dk], v [BH, dv], itilde, logf [BH] fp32 in;
 * h [BH, dv] fp32 out. dk = dv = 64 (else -1). One block per head; m bit for bit the CPU's,
 * deterministic. */
int kern_cuda_mlstm_step(float *h, float *C, float *n, float *m, const float *phi_q, const float *phi_k, const float *v,
                         const float *itilde, const float *logf, int BH, int dk, int dv, float eps, kern_cuda_stream s);
/* The state after the last token of a chunkwise forward (kern_cuda_mlstm_fwd's inputs phi_k, v,
 * itilde, logf and its saved, same B, T, L): C, n, m for each of the B sequences, as
 * kern_mlstm_fwd_f32's `final`, for the step form to continue from. From the state entering the
 * last chunk (in saved, or the empty state for a single chunk) it steps through the last chunk's
 * tokens with the step form's recurrence (m recomputed by the same expression, so saved's m and
 * the CPU's bit for bit); T = 0 gives the empty state. */
int kern_cuda_mlstm_final_state(float *C, float *n, float *m, const float *saved, const float *phi_k, const float *v,
                                const float *itilde, const float *logf, int B, int T, int L, int dk, int dv,
                                kern_cuda_stream s);

/* ---- data parallelism: NCCL (dp.c; built when configure found nccl.h: XD_HAVE_NCCL) ----
 * libnccl.so.2 is loaded on first use with dlopen: the file XD_NCCL_LIBRARY names when that is
 * set (and nothing else), else the loader's search (LD_LIBRARY_PATH, ld.so.cache), then the
 * toolkit's copy found at configure time; NCCL 2.14 or later. Communicators are non-blocking, so
 * every wait below has a deadline (the communicator's timeout_s): on an NCCL error or at the
 * deadline the communicator is aborted (ncclCommAbort, which also stops its kernels) and the call
 * returns -1 with the reason in kern_cuda_dp_last_error. Collectives run on the communicator's own
 * stream, after the work already queued on the caller's stream s, and s waits for them. */
typedef struct kern_dp_comm kern_dp_comm;
#define KERN_DP_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */
/* A new NCCL unique id (ncclGetUniqueId: this process then serves the others' bootstrap). */
int kern_cuda_dp_create_id(unsigned char id[KERN_DP_ID_BYTES]);
/* Joins the communicator of `size` ranks as `rank` on CUDA device `device` (made current),
 * waiting at most timeout_s for every rank to join. */
int kern_cuda_dp_open(kern_dp_comm **out, const unsigned char id[KERN_DP_ID_BYTES], int rank, int size,
                      int device, double timeout_s);
/* In-place all-reduce SUM of n fp32 device values, queued after the work on s. */
int kern_cuda_dp_sum_f32(kern_dp_comm *c, float *buf, size_t n, kern_cuda_stream s);
/* Waits until everything queued on the communicator has finished (deadline: timeout_s). */
int kern_cuda_dp_wait(kern_dp_comm *c);
/* All-reduce of n <= 32 host values (through pinned and device scratch), waited for: the sum of
 * doubles, the maximum of uint64s. */
int kern_cuda_dp_sum_host_f64(kern_dp_comm *c, double *v, int n);
int kern_cuda_dp_max_host_u64(kern_dp_comm *c, uint64_t *v, int n);
/* Ends the communicator: close after success (ncclCommFinalize, then ncclCommDestroy), abort
 * after a failure (ncclCommAbort: never waits for the other ranks). Both free c (NULL: nothing). */
void kern_cuda_dp_close(kern_dp_comm *c);
void kern_cuda_dp_abort(kern_dp_comm *c);
/* "NCCL 2.28.9 (/usr/lib/.../libnccl.so.2)" once loaded, else "". */
const char *kern_cuda_dp_library(void);
/* The last DP error as text (what failed, NCCL's or CUDA's message, what was tried). */
const char *kern_cuda_dp_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
