/* kernels/student_ops.h — the small ops around the student's mLSTM branch, CPU reference in float
 * (_f32) and double (_f64): Hedgehog feature maps, input/forget gates, output gate, branch mixing.
 * Matrices are row-major. Every backward ADDS into its gradient outputs (zero them first), so a
 * tensor feeding several ops (x feeds the gates and q/k/v) collects its gradient in one buffer.
 * Shapes: T tokens, H query heads, G key/value heads (H % G == 0), head size d, model width D. */
#ifndef XD_KERNELS_STUDENT_OPS_H
#define XD_KERNELS_STUDENT_OPS_H

#include <stddef.h>

/* Hedgehog feature map of one head: phi[t, :] = softmax(x[t, :] M) over the d features, with
 * x [T, d] at row stride ldx (one head's slice of [T, H*d]: x = q + h*d, ldx = H*d), M [d, d],
 * phi [T, d] at row stride ldp. Backward: dx (row stride ldx) += ..., dM += sum over t; dphi
 * has row stride ldp; scratch holds kern_feature_map_scratch_elems(d) elements. */
size_t kern_feature_map_scratch_elems(int d);
void kern_feature_map_fwd_f32(float *phi, int ldp, const float *x, int ldx, const float *M, int T,
                              int d);
void kern_feature_map_fwd_f64(double *phi, int ldp, const double *x, int ldx, const double *M,
                              int T, int d);
void kern_feature_map_bwd_f32(float *dx, float *dM, const float *dphi, const float *phi, int ldp,
                              const float *x, int ldx, const float *M, int T, int d,
                              float *scratch);
void kern_feature_map_bwd_f64(double *dx, double *dM, const double *dphi, const double *phi,
                              int ldp, const double *x, int ldx, const double *M, int T, int d,
                              double *scratch);

/* Gates: itilde[t, h] = x[t, :] . w_i[:, h] + b_i[h]; log_f[t, h] = logsigmoid(x[t, :] . w_f[:, h]
 * + b_f[h]), computed as -softplus(-z) so it stays finite and accurate for any z.
 * x [T, D], w_i, w_f [D, H], b_i, b_f [H], itilde, log_f [T, H]. Backward takes the forward's
 * log_f (sigmoid(-z) = -expm1(log_f), so z need not be kept). */
void kern_gates_fwd_f32(float *itilde, float *log_f, const float *x, const float *w_i,
                        const float *b_i, const float *w_f, const float *b_f, int T, int D, int H);
void kern_gates_fwd_f64(double *itilde, double *log_f, const double *x, const double *w_i,
                        const double *b_i, const double *w_f, const double *b_f, int T, int D,
                        int H);
void kern_gates_bwd_f32(float *dx, float *dw_i, float *db_i, float *dw_f, float *db_f,
                        const float *ditilde, const float *dlog_f, const float *x,
                        const float *log_f, const float *w_i, const float *w_f, int T, int D,
                        int H);
void kern_gates_bwd_f64(double *dx, double *dw_i, double *db_i, double *dw_f, double *db_f,
                        const double *ditilde, const double *dlog_f, const double *x,
                        const double *log_f, const double *w_i, const double *w_f, int T, int D,
                        int H);

/* Output gate: o[t, h] = sigmoid(w_o[h, :] . [q[t, h]; k[t, g]; v[t, g]] + b_o[h]), g = h/(H/G),
 * from the pre-RoPE q [T, H*d], k, v [T, G*d]; w_o [H, 3d], b_o [H], o [T, H]. Backward from
 * d_o [T, H] and the forward's o: dk, dv collect over the heads of a group. */
void kern_output_gate_fwd_f32(float *o, const float *q, const float *k, const float *v,
                              const float *w_o, const float *b_o, int T, int H, int G, int d);
void kern_output_gate_fwd_f64(double *o, const double *q, const double *k, const double *v,
                              const double *w_o, const double *b_o, int T, int H, int G, int d);
void kern_output_gate_bwd_f32(float *dq, float *dk, float *dv, float *dw_o, float *db_o,
                              const float *d_o, const float *o, const float *q, const float *k,
                              const float *v, const float *w_o, int T, int H, int G, int d);
void kern_output_gate_bwd_f64(double *dq, double *dk, double *dv, double *dw_o, double *db_o,
                              const double *d_o, const double *o, const double *q, const double *k,
                              const double *v, const double *w_o, int T, int H, int G, int d);

/* Mixing: yhat[t, h, :] = o[t, h] hm[t, h, :] + (1 - o[t, h]) yswa[t, h, :]; yhat, hm, yswa
 * [T, H*d], o [T, H]. Backward gives d_o, dhm, dyswa from dyhat. */
void kern_mix_fwd_f32(float *yhat, const float *o, const float *hm, const float *yswa, int T, int H,
                      int d);
void kern_mix_fwd_f64(double *yhat, const double *o, const double *hm, const double *yswa, int T,
                      int H, int d);
void kern_mix_bwd_f32(float *d_o, float *dhm, float *dyswa, const float *dyhat, const float *o,
                      const float *hm, const float *yswa, int T, int H, int d);
void kern_mix_bwd_f64(double *d_o, double *dhm, double *dyswa, const double *dyhat, const double *o,
                      const double *hm, const double *yswa, int T, int H, int d);

#endif
