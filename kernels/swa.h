/* kernels/swa.h — sliding-window causal attention with sink tokens (GQA), CPU reference, forward,
 * backward and a one-token step for generation. Every kernel exists in float (_f32) and double
 * (_f64); the double one is what the gradient tests check against finite differences.
 *
 * Key set of query t: keys j <= t with j < S (the sinks) or j >= t - W + 1 (the W most recent,
 * t included), each key once. Softmax scale 1/sqrt(d). Preconditions: W >= 1, S >= 0, H % G == 0.
 *
 * Layout (one sequence; for a batch the caller loops, offsetting the pointers by b*T rows):
 *   q, out, dq, dout: [T, H*d];  k, v, dk, dv: [T, G*d];  lse: [T, H].
 * Query head h reads key/value head h / (H/G). Backward ADDS into dq, dk, dv (zero them first),
 * so gradients of q, k, v from other branches can share the buffers. */
#ifndef XD_KERNELS_SWA_H
#define XD_KERNELS_SWA_H

#include <stddef.h>

/* Elements of scratch (of the kernel's type) that kern_swa_fwd / kern_swa_bwd need for T tokens:
 * 2b(S + W + b - 1) + b with W, S clamped to T and b = min(W, 64) queries per block (W >= T is
 * full causal attention, so a huge W costs no more than W = T). */
size_t kern_swa_scratch_elems(int T, int W, int S);

/* out = attention; lse[t*H + h] = log-sum-exp of query (t, h)'s scaled scores, for the backward.
 * Works on blocks of queries (no T x T matrix): cost O(T * (W + S) * d) per head. */
void kern_swa_fwd_f32(float *out, float *lse, const float *q, const float *k, const float *v, int T,
                      int H, int G, int d, int W, int S, float *scratch);
void kern_swa_fwd_f64(double *out, double *lse, const double *q, const double *k, const double *v,
                      int T, int H, int G, int d, int W, int S, double *scratch);

/* Gradients from dout, given the forward's inputs, out and lse. Adds into dq, dk, dv. */
void kern_swa_bwd_f32(float *dq, float *dk, float *dv, const float *dout, const float *q,
                      const float *k, const float *v, const float *out, const float *lse, int T,
                      int H, int G, int d, int W, int S, float *scratch);
void kern_swa_bwd_f64(double *dq, double *dk, double *dv, const double *dout, const double *q,
                      const double *k, const double *v, const double *out, const double *lse, int T,
                      int H, int G, int d, int W, int S, double *scratch);

/* Generation cache, owned by the caller:
 *   sink_k, sink_v: [S, G*d]  row p = key/value of position p, for p < S;
 *   ring_k, ring_v: [W, G*d]  row p % W = key/value of position p, for every position.
 * kern_swa_cache_push stores the key/value rows of position pos (k_t, v_t: [G*d]) there; push
 * position pos before calling kern_swa_step for the query at pos. The ring then holds positions
 * max(0, pos-W+1)..pos and the sink rows older than that supply the rest of the key set. After a
 * prompt run through kern_swa_fwd, push its positions in order (only the last W and the first S
 * matter) and continue with push + step per generated token. */
void kern_swa_cache_push_f32(float *sink_k, float *sink_v, float *ring_k, float *ring_v,
                             const float *k_t, const float *v_t, int pos, int G, int d, int W,
                             int S);
void kern_swa_cache_push_f64(double *sink_k, double *sink_v, double *ring_k, double *ring_v,
                             const double *k_t, const double *v_t, int pos, int G, int d, int W,
                             int S);

/* out[H*d] = attention of the query q[H*d] at position pos over the cache. No scratch. */
void kern_swa_step_f32(float *out, const float *q, const float *sink_k, const float *sink_v,
                       const float *ring_k, const float *ring_v, int pos, int H, int G, int d,
                       int W, int S);
void kern_swa_step_f64(double *out, const double *q, const double *sink_k, const double *sink_v,
                       const double *ring_k, const double *ring_v, int pos, int H, int G, int d,
                       int W, int S);

#endif
