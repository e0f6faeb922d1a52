/* kernels/mlstm.h — the mLSTM cell on the CPU: chunkwise forward and backward (training) and the
 * step form (generation), each in f32 and f64 (f64 is for gradient checks).
 *
 * One sequence per (batch, head). Per sequence of T tokens: phi_q, phi_k [T, dk], v [T, dv],
 * itilde [T] (input gate i_t = exp(itilde_t)), logf [T] (log forget gate, logsigmoid of its
 * pre-activation); output h [T, dv]. States start at C = 0, n = 0, m = -inf and follow
 *     m_t = max(logf_t + m_{t-1}, itilde_t)
 *     f'_t = exp(logf_t + m_{t-1} - m_t),  i'_t = exp(itilde_t - m_t)
 *     C_t = f'_t C_{t-1} + i'_t phi_k_t v_t^T,  n_t = f'_t n_{t-1} + i'_t phi_k_t
 *     h_t = C_t^T phi_q_t / (phi_q_t . n_t + eps)
 * The chunkwise form computes this m_t by the same recurrence, so eps enters exactly as in the
 * step form. B sequences are laid out one after another: phi_q [B, T, dk], h [B, T, dv], ... */
#ifndef XD_KERNELS_MLSTM_H
#define XD_KERNELS_MLSTM_H

#include <stddef.h>

typedef struct kern_mlstm_dims {
    int B;      /* sequences (batch x heads), contiguous */
    int T;      /* tokens per sequence, >= 0 */
    int dk, dv; /* widths of phi_q / phi_k rows and of v / h rows */
    int L;      /* chunk length of the chunkwise form, >= 1; T need not be a multiple */
    double eps; /* added to the denominator (1e-6 in the model) */
} kern_mlstm_dims;

/* The recurrent state of one sequence, stabilised: the true C and n are exp(m) times these.
 * C [dk * dv] (row-major dk x dv) and n [dk] point to caller memory. */
typedef struct kern_mlstm_state_f32 {
    float *C, *n;
    float m;
    int dk, dv;
} kern_mlstm_state_f32;
typedef struct kern_mlstm_state_f64 {
    double *C, *n;
    double m;
    int dk, dv;
} kern_mlstm_state_f64;

/* Elements (of the kernel's type) that the forward saves for the backward, per sequence:
 * m_t and the denominators phi_q_t . n_t (2T), and the state entering each chunk. */
size_t kern_mlstm_saved_len(int T, int L, int dk, int dv);
/* Elements of scratch that one forward or backward call needs (any B, any T). */
size_t kern_mlstm_scratch_len(int L, int dk, int dv);

/* Chunkwise forward. Writes h [B, T, dv] and saved [B * kern_mlstm_saved_len(...)] (needed,
 * even without a backward). final: NULL, or B states (set up with kern_mlstm_state_init_*) that
 * receive each sequence's state after its last token, for the step form to continue from. */
void kern_mlstm_fwd_f32(const kern_mlstm_dims *d, const float *phi_q, const float *phi_k,
                        const float *v, const float *itilde, const float *logf, float *h,
                        float *saved, float *scratch, kern_mlstm_state_f32 *final);
void kern_mlstm_fwd_f64(const kern_mlstm_dims *d, const double *phi_q, const double *phi_k,
                        const double *v, const double *itilde, const double *logf, double *h,
                        double *saved, double *scratch, kern_mlstm_state_f64 *final);

/* Chunkwise backward of the same inputs, given the forward's output h and saved (unchanged) and
 * the loss gradient dh [B, T, dv]. Exact, including the path through m_t (which only matters via
 * eps); the final state gets no gradient. OVERWRITES the gradients d_q, d_k [B, T, dk],
 * d_v [B, T, dv], d_itilde, d_logf [B, T]. */
void kern_mlstm_bwd_f32(const kern_mlstm_dims *d, const float *phi_q, const float *phi_k,
                        const float *v, const float *itilde, const float *logf, const float *h,
                        const float *dh, const float *saved, float *scratch, float *d_q, float *d_k,
                        float *d_v, float *d_itilde, float *d_logf);
void kern_mlstm_bwd_f64(const kern_mlstm_dims *d, const double *phi_q, const double *phi_k,
                        const double *v, const double *itilde, const double *logf, const double *h,
                        const double *dh, const double *saved, double *scratch, double *d_q,
                        double *d_k, double *d_v, double *d_itilde, double *d_logf);

/* Points s at C [dk * dv] and n [dk] and sets the empty state: C = 0, n = 0, m = -inf. */
void kern_mlstm_state_init_f32(kern_mlstm_state_f32 *s, float *C, float *n, int dk, int dv);
void kern_mlstm_state_init_f64(kern_mlstm_state_f64 *s, double *C, double *n, int dk, int dv);

/* Step form: consumes one token (phi_q, phi_k [dk], v [dv], itilde, logf), updates s and
 * writes h [dv]. */
void kern_mlstm_step_f32(kern_mlstm_state_f32 *s, const float *phi_q, const float *phi_k,
                         const float *v, float itilde, float logf, float eps, float *h);
void kern_mlstm_step_f64(kern_mlstm_state_f64 *s, const double *phi_q, const double *phi_k,
                         const double *v, double itilde, double logf, double eps, double *h);

#endif
