/* Chunkwise mLSTM on CUDA, forward and backward in fp32 (kernels/cuda/cuda_ops.h). The maths and
 * the order of the operations follow the CPU reference, kernels/mlstm_impl.h, step by step: the
 * same running max m_t (computed by the same sequential recurrence, so bit for bit the same and
 * the backward's max branches agree), the same log decays (running sums over at most L terms), the
 * same split of each chunk into the entering-state term and the causal intra-chunk term.
 *
 * Forward, for B sequences of nch = ceil(T / L) chunks:
 *   1. max_scan    <<<B, 256>>>       m_t, sequential per sequence (T adds and compares)
 *   2. fwd_local   <<<(nch-1, B)>>>   chunk c's own contribution to the state leaving it,
 *                                     sum_s u_s (k_s v_s^T, k_s), and its decay ae_c
 *   3. state_scan  <<<(ssz/256, B)>>> S_{c+1} = ae_c S_c + local_c over chunks, in place in saved
 *   4. fwd_chunk   <<<(nch, B)>>>     h and the denominators of each chunk from its entering state
 *                                     (fwd_chunk_tc for L in 33 .. 64: its three products on tensor
 *                                     cores in 3xTF32, fp32-accurate; kern_cuda_mlstm_fwd_fp32
 *                                     keeps this one, the reference)
 * Backward:
 *   1. bwd_local   <<<(nch-1, B)>>>   chunk c's own part of the gradient of its entering state,
 *                                     Q^T diag(alpha) dnum and sum_j alpha_j dden_j q_j
 *   2. state_scan  (reverse)          G_c = ae_c G_{c+1} + local_c
 *   3. bwd_chunk   <<<(nch, B)>>>     every gradient of chunk c given G_{c+1} and S_c (its eight
 *                                     products on tensor cores in 3xTF32 for L in 33 .. 64, the
 *                                     bwd_tc tiling; kern_cuda_mlstm_bwd_fp32 keeps bwd_fp32's)
 *   4. mpath_scan  <<<B, 256>>>       the path through m_t (via eps), a reverse linear scan
 * Inside a chunk all products are small smem matrix products on 256 threads: on CUDA cores 16 x 16
 * threads, each a register tile of rows ty + 16 i, cols tx + 16 j, smem rows padded to an odd
 * stride so that both plain and transposed reads are free of bank conflicts; on tensor cores the
 * fragment layouts of wmma (forward) or mma.sync (backward, over swizzled tiles). */
#include "cuda_internal.cuh"

#ifndef XD_CUDA_EMU
#include <mma.h>
/* a block's dynamic shared memory (the emulator gives each block a buffer of its own) */
#define MLSTM_DYNAMIC_SMEM(name) extern __shared__ __align__(128) float name[]
#endif
#include <type_traits>

#define MLSTM_THREADS 256
#define MLSTM_SCAN_TILE 1024

/* ---- sizes ---- */

static size_t mlstm_nch(int T, int L) { return T > 0 ? ((size_t)T + L - 1) / L : 0; }
/* per sequence, exactly the CPU reference's layout (kern_mlstm_saved_len): m [T], den [T], then
 * the state entering chunks 1 .. nch-1, each C [dk x dv] then n [dk] */
static size_t mlstm_seq_saved(int T, int L, int dk, int dv) {
    size_t nch = mlstm_nch(T, L);
    return 2 * (size_t)T + (nch > 0 ? nch - 1 : 0) * ((size_t)dk * dv + dk);
}

extern "C" size_t kern_cuda_mlstm_saved_bytes(int B, int T, int L, int dk, int dv) {
    if (B <= 0 || T <= 0 || L <= 0) return 0;
    /* B per-sequence blocks, then the decay of every chunk [B, nch] */
    return sizeof(float) * ((size_t)B * mlstm_seq_saved(T, L, dk, dv) + (size_t)B * mlstm_nch(T, L));
}

extern "C" size_t kern_cuda_mlstm_workspace_bytes(int B, int T, int L, int dk, int dv) {
    if (B <= 0 || T <= 0 || L <= 0) return 0;
    size_t nch = mlstm_nch(T, L);
    /* the gradient of the state entering chunks 1 .. nch-1 [B, nch-1, ssz], then the m-path
     * term of every token [B, T] */
    return sizeof(float) * ((size_t)B * (nch - 1) * ((size_t)dk * dv + dk) + (size_t)B * T);
}

/* ---- device helpers ---- */

/* acc[i][j] += sum_k A(r_i, k) B(k, c_j), r_i = ty + 16 i, c_j = tx + 16 j, where
 * A(r, k) = A[r * ars + k * aks] and B(k, c) = B[k * bks + c * bcs] (smem). No synchronisation:
 * every thread of the block calls it, and the caller orders it against the writes it reads. */
template <int TM, int TN>
static __device__ __forceinline__ void mm_acc(float (&acc)[TM][TN], int K, const float *A, int ars, int aks,
                                              const float *Bm, int bks, int bcs) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const float *a0 = A + ty * ars, *b0 = Bm + tx * bcs;
#pragma unroll 4
    for (int kk = 0; kk < K; kk++) {
        float a[TM], b[TN];
#pragma unroll
        for (int i = 0; i < TM; i++) a[i] = a0[16 * i * ars + kk * aks];
#pragma unroll
        for (int j = 0; j < TN; j++) b[j] = b0[kk * bks + 16 * j * bcs];
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

template <int TM, int TN> static __device__ __forceinline__ void acc_zero(float (&acc)[TM][TN]) {
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;
}

/* The sum over the 16 lanes (tx) that hold one row of a register tile; every lane of the warp
 * must call it (the two halves of a warp are two rows and reduce separately). */
static __device__ __forceinline__ float row_sum16(float x) {
    for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* Zero-padded copy of rows [0, Lc) of a [*, D] global tile into smem [LM][D] laid out by IX
 * (rows of stride D + 1 but in the tensor-core kernels). Every load of a thread is issued before its first store: the compiler
 * cannot move global loads past smem stores itself, and one round trip to memory per token would
 * dominate the kernels. */
/* Where element (r, c) of a smem tile lives. ix_pad: rows of stride S. ix_swz: the tensor-core
 * backward's [64][64] tiles, unpadded, column c of row r at c ^ mlstm_swz(r). With it the mma
 * fragment reads either way round (lanes (g, t) at (r0 + g, c0 + t) and at (r0 + t, c0 + g),
 * r0 and c0 multiples of 8 and 4 or the other way), the accumulators' element-wise reads (rows
 * r0 + 2 t + i, columns c0 + g), and a warp along a row or down a column all hit 32 distinct
 * banks (checked exhaustively for every offset): the low 3 bits of r move bits 2..4 of the
 * column (r0, r1 alone and r1, r2 alone moving bits 3..4 both ways), bits 3..4 of r move bits
 * 0..1. Only the diagonal (r, r) meets a 4-way conflict. */
template <int S> struct ix_pad {
    static constexpr int stride = S;
    static __device__ __forceinline__ int at(int r, int c) { return r * S + c; }
};
static __device__ __forceinline__ int mlstm_swz(int r) { return ((r & 3) << 3) ^ ((r & 4) ? 12 : 0) ^ ((r >> 3) & 3); }
struct ix_swz {
    static constexpr int stride = 64;
    static __device__ __forceinline__ int at(int r, int c) { return r * 64 + (c ^ mlstm_swz(r)); }
    /* from p = at(r, y) to at(r, k0 + y), and from p = at(y, c) to at(k0 + y, c), for y < 8 and
     * k0 a multiple of 8: k0 + y = k0 ^ y, and swz(k0 + y) = swz(y) ^ (k0 / 8 % 4) */
    static __device__ __forceinline__ int row_step(int p, int k0) { return p ^ k0; }
    static __device__ __forceinline__ int col_step(int p, int k0) { return (p ^ ((k0 >> 3) & 3)) + 64 * k0; }
};

template <int D, int LM, class IX = ix_pad<D + 1>>
static __device__ __forceinline__ void load_rows(float *dst, const float *src, int Lc) {
    constexpr int PER = LM * D / MLSTM_THREADS;
    static_assert(LM * D % MLSTM_THREADS == 0, "tile not a multiple of the block");
    float r[PER];
#pragma unroll
    for (int u = 0; u < PER; u++) {
        const int idx = threadIdx.x + MLSTM_THREADS * u, row = idx / D;
        r[u] = row < Lc ? __ldg(src + (size_t)row * D + idx % D) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < PER; u++) {
        const int idx = threadIdx.x + MLSTM_THREADS * u;
        dst[IX::at(idx / D, idx % D)] = r[u];
    }
}

/* A [D x D] state from global into smem [D][D + 1], the same way. */
template <int D> static __device__ __forceinline__ void load_square(float *dst, const float *src) {
    load_rows<D, D>(dst, src, D);
}

/* Per row r = warp + 8 k of a chunk, this lane's D / 32 values of h (zero past Lc) and den:
 * fetched together before the row loops that use them. */
template <int D, int LM> struct mlstm_rows {
    float h[LM / 8][D / 32], den[LM / 8];
};
template <int D, int LM>
static __device__ __forceinline__ void load_h_den(mlstm_rows<D, LM> &x, const float *h, const float *den, int Lc) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < LM / 8; k++) {
        const int r = warp + 8 * k;
#pragma unroll
        for (int i = 0; i < D / 32; i++) x.h[k][i] = r < Lc ? __ldg(h + (size_t)r * D + lane + 32 * i) : 0.0f;
        x.den[k] = r < Lc ? __ldg(den + r) : 1.0f;
    }
}

/* Gates and running max of one chunk into smem (zero beyond Lc). */
template <int LM>
static __device__ __forceinline__ void load_gates(float *s_it, float *s_lf, float *s_m, const float *itilde,
                                                  const float *logf, const float *m, int Lc) {
    for (int j = threadIdx.x; j < LM; j += MLSTM_THREADS) {
        s_it[j] = j < Lc ? itilde[j] : 0.0f;
        s_lf[j] = j < Lc ? logf[j] : 0.0f;
        s_m[j] = j < Lc ? m[j] : 0.0f;
    }
}

/* alpha_j = exp(m_in + a_j - m_j), a_j = logf_0 + ... + logf_j summed in that order (the CPU's
 * running sum, so the same bits); 0 for the first chunk (no entering state). Thread j < Lc. */
static __device__ __forceinline__ float chunk_alpha(int j, const float *s_lf, const float *s_m, float m_in,
                                                    bool has_in) {
    float a = 0.0f;
    for (int r = 0; r <= j; r++) a += s_lf[r];
    return has_in ? expf(m_in + a - s_m[j]) : 0.0f;
}

/* The chunk's denominators, one warp a row: den_r = sum_s P[r][s] (+ alpha_r q_r . n_in with an
 * entering state), into s_den and the chunk's slice of saved's den; P and Q rows of stride ps, qs. */
template <int D>
static __device__ __forceinline__ void chunk_den(float *den, float *s_den, const float *sP, int ps, const float *sQ,
                                                 int qs, const float *sn, const float *s_al, int Lc, bool has_in) {
    const int lane = threadIdx.x & 31;
    for (int r = threadIdx.x >> 5; r < Lc; r += MLSTM_THREADS / 32) {
        float x = 0.0f;
        for (int s = lane; s < Lc; s += 32) x += sP[r * ps + s];
        x = warp_sum(x);
        if (has_in) {
            float qn = 0.0f;
            for (int a = lane; a < D; a += 32) qn += sQ[r * qs + a] * sn[a];
            x += s_al[r] * warp_sum(qn);
        }
        if (lane == 0) s_den[r] = x, den[r] = x;
    }
}

/* W [LM][LM] of one chunk (laid out by IX): W[j][s] =
 * exp(itilde_s + sum_{r=s+1..j} logf_r - m_j) for s <= j < Lc, else 0; the log decays are running
 * sums down each column, as the CPU's drow. Also alpha [Lc]. Synchronises (two barriers); every
 * thread calls it. */
template <int LM, class IX = ix_pad<LM + 1>>
static __device__ void chunk_weights(float *sW, float *s_al, const float *s_it, const float *s_lf,
                                     const float *s_m, float m_in, bool has_in, int Lc) {
    const int tid = threadIdx.x;
    if (tid < Lc) { /* column s = tid: the log weights */
        const int s = tid;
        const float its = s_it[s];
        float drow = 0.0f;
        sW[IX::at(s, s)] = its - s_m[s];
        for (int j = s + 1; j < Lc; j++) {
            drow += s_lf[j];
            sW[IX::at(j, s)] = its + drow - s_m[j];
        }
    } else if (tid >= 128 && tid - 128 < LM) { /* other warps meanwhile: alpha (0 past Lc) */
        const int j = tid - 128;
        s_al[j] = j < Lc ? chunk_alpha(j, s_lf, s_m, m_in, has_in) : 0.0f;
    }
    __syncthreads();
    for (int idx = tid; idx < LM * LM; idx += MLSTM_THREADS) {
        int j = idx / LM, s = idx % LM;
        float *w = sW + IX::at(j, s);
        *w = (j < Lc && s <= j) ? expf(*w) : 0.0f;
    }
    __syncthreads();
}

/* ---- forward ---- */

/* m_t = max(logf_t + m_{t-1}, itilde_t) from m_{-1} = -inf, exactly the CPU's expression (a
 * parallel max-plus scan would round differently). One block per sequence: all 256 threads stage
 * a tile through smem (every load of a thread issued before its first store, so the block waits
 * for memory once a tile, not once a token), thread 0 runs the recurrence, reading 8 tokens ahead
 * so that only the add and the compare are on the critical path. */
__global__ void __launch_bounds__(MLSTM_THREADS)
    mlstm_max_scan_kernel(float *saved, const float *itilde, const float *logf, int T, size_t sl) {
    constexpr int TILE = 2048, PER = TILE / MLSTM_THREADS;
    __shared__ float s_it[TILE], s_lf[TILE], s_m[TILE];
    const int b = blockIdx.x, tid = threadIdx.x;
    const float *it = itilde + (size_t)b * T, *lf = logf + (size_t)b * T;
    float *m = saved + (size_t)b * sl;
    float prev = -INFINITY;
    for (int base = 0; base < T; base += TILE) {
        const int n = min(TILE, T - base);
        float ri[PER], rl[PER];
#pragma unroll
        for (int u = 0; u < PER; u++) {
            const int j = tid + MLSTM_THREADS * u;
            ri[u] = j < n ? it[base + j] : 0.0f;
            rl[u] = j < n ? lf[base + j] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < PER; u++) s_it[tid + MLSTM_THREADS * u] = ri[u], s_lf[tid + MLSTM_THREADS * u] = rl[u];
        __syncthreads();
        if (tid == 0) {
            int t = 0;
            for (; t + 8 <= n; t += 8) { /* whole groups: nothing but the recurrence on the chain */
                float l8[8], i8[8];
#pragma unroll
                for (int u = 0; u < 8; u++) l8[u] = s_lf[t + u], i8[u] = s_it[t + u];
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    float a = l8[u] + prev;
                    prev = a > i8[u] ? a : i8[u];
                    s_m[t + u] = prev;
                }
            }
            for (; t < n; t++) {
                float a = s_lf[t] + prev;
                prev = a > s_it[t] ? a : s_it[t];
                s_m[t] = prev;
            }
        }
        __syncthreads();
        for (int j = tid; j < n; j += MLSTM_THREADS) m[base + j] = s_m[j];
    }
}

/* Chunk c < nch-1 (a full chunk): local_c = sum_s u_s (k_s v_s^T, k_s) with
 * u_s = W[L-1][s], written to the state slot c (the state entering chunk c+1, completed by the
 * scan), and ae_c = alpha_{L-1} to decay [b, c]. */
template <int D, int LM>
__global__ void __launch_bounds__(MLSTM_THREADS)
    mlstm_fwd_local_kernel(float *saved, float *decay, const float *k, const float *v, const float *itilde,
                           const float *logf, int T, int L, int nch, size_t sl) {
    constexpr int DP = D + 1, TD = D / 16;
    MLSTM_DYNAMIC_SMEM(sm);
    float *sK = sm, *sV = sK + LM * DP, *s_it = sV + LM * DP, *s_lf = s_it + LM, *s_m = s_lf + LM,
          *s_u = s_m + LM;
    const int c = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const int t0 = c * L, Lc = L;
    const size_t tok = (size_t)b * T + t0;
    const float *m = saved + (size_t)b * sl;
    load_rows<D, LM>(sK, k + tok * D, Lc);
    load_rows<D, LM>(sV, v + tok * D, Lc);
    load_gates<LM>(s_it, s_lf, s_m, itilde + tok, logf + tok, m + t0, Lc);
    __syncthreads();
    const float m_last = s_m[Lc - 1];
    if (tid < Lc) { /* u_s: the last row of W, summed as chunk_weights does */
        const int s = tid;
        float drow = 0.0f, x = s_it[s] - s_m[s];
        for (int j = s + 1; j < Lc; j++) {
            drow += s_lf[j];
            x = s_it[s] + drow - m_last;
        }
        s_u[s] = expf(x);
    } else if (tid == 128) {
        const float m_in = c > 0 ? m[t0 - 1] : -INFINITY;
        decay[(size_t)b * nch + c] = chunk_alpha(Lc - 1, s_lf, s_m, m_in, c > 0);
    }
    for (int s = Lc; s < LM && tid == 0; s++) s_u[s] = 0.0f;
    __syncthreads();
    for (int idx = tid; idx < LM * D; idx += MLSTM_THREADS) { /* K <- diag(u) K, as the CPU's tmp */
        int s = idx / D, a = idx % D;
        sK[s * DP + a] *= s_u[s];
    }
    __syncthreads();
    float *out = saved + (size_t)b * sl + 2 * (size_t)T + (size_t)c * ((size_t)D * D + D);
    if (tid < D) {
        float x = 0.0f;
        for (int s = 0; s < Lc; s++) x += sK[s * DP + tid];
        out[(size_t)D * D + tid] = x;
    }
    float acc[TD][TD];
    acc_zero(acc);
    mm_acc(acc, Lc, sK, 1, DP, sV, DP, 1); /* (diag(u) K)^T V */
    const int tx = tid & 15, ty = tid >> 4;
#pragma unroll
    for (int i = 0; i < TD; i++)
#pragma unroll
        for (int j = 0; j < TD; j++) out[(size_t)(ty + 16 * i) * D + tx + 16 * j] = acc[i][j];
}

/* The sequential part, over chunks, one thread per element of the state (C then n) of one
 * sequence. Forward (dir > 0): slot c = decay_c slot c-1 + slot c for c = 1 .. nch-2 (slot c is
 * the state entering chunk c+1, and slot 0 is already complete: chunk 0 enters with zero).
 * Backward (dir < 0): slot c-1 = decay_c slot c + slot c-1 for c = nch-2 .. 1 (slot c-1 is the
 * gradient of the state entering chunk c). */
__global__ void mlstm_state_scan_kernel(float *slots, size_t seq_stride, const float *decay, int nch, int ssz,
                                        int dir) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (e >= ssz) return;
    float *st = slots + (size_t)b * seq_stride + e;
    const float *dc = decay + (size_t)b * nch;
    /* the slots are loaded 8 at a time before any is stored, so the chain waits for memory once
     * in 8 chunks (the compiler cannot reorder loads and stores to one array itself) */
    if (dir > 0) {
        float prev = st[0];
        for (int c0 = 1; c0 <= nch - 2; c0 += 8) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) x[u] = c0 + u <= nch - 2 ? st[(size_t)(c0 + u) * ssz] : 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (c0 + u <= nch - 2) {
                    prev = dc[c0 + u] * prev + x[u];
                    st[(size_t)(c0 + u) * ssz] = prev;
                }
        }
    } else {
        float prev = st[(size_t)(nch - 2) * ssz];
        for (int c0 = nch - 2; c0 >= 1; c0 -= 8) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) x[u] = c0 - u >= 1 ? st[(size_t)(c0 - u - 1) * ssz] : 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (c0 - u >= 1) {
                    prev = dc[c0 - u] * prev + x[u];
                    st[(size_t)(c0 - u - 1) * ssz] = prev;
                }
        }
    }
}

/* Chunk c: P = W o (Q K^T), den_j = sum_s P[j][s] + alpha_j q_j . n_in,
 * h_j = (alpha_j C_in^T q_j + sum_s P[j][s] v_s) / (den_j + eps). */
template <int D, int LM>
__global__ void __launch_bounds__(MLSTM_THREADS)
    mlstm_fwd_chunk_kernel(float *h, float *saved, const float *q, const float *k, const float *v,
                           const float *itilde, const float *logf, int T, int L, size_t sl, float eps) {
    constexpr int DP = D + 1, LP = LM + 1, TL = LM / 16, TD = D / 16;
    MLSTM_DYNAMIC_SMEM(sm);
    float *sQ = sm, *sK = sQ + LM * DP, *sV = sK + LM * DP, *sP = sV + LM * DP, *sC = sP + LM * LP,
          *sn = sC + D * DP, *s_it = sn + D, *s_lf = s_it + LM, *s_m = s_lf + LM, *s_al = s_m + LM,
          *s_den = s_al + LM;
    const int c = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const int tx = tid & 15, ty = tid >> 4;
    const int t0 = c * L, Lc = min(L, T - t0);
    const size_t tok = (size_t)b * T + t0;
    float *sv = saved + (size_t)b * sl, *den = sv + T;
    const float *m = sv;
    const bool has_in = c > 0;
    load_rows<D, LM>(sQ, q + tok * D, Lc);
    load_rows<D, LM>(sK, k + tok * D, Lc);
    load_rows<D, LM>(sV, v + tok * D, Lc);
    load_gates<LM>(s_it, s_lf, s_m, itilde + tok, logf + tok, m + t0, Lc);
    if (has_in) {
        const float *Cin = sv + 2 * (size_t)T + (size_t)(c - 1) * ((size_t)D * D + D);
        load_square<D>(sC, Cin);
        for (int a = tid; a < D; a += MLSTM_THREADS) sn[a] = Cin[(size_t)D * D + a];
    }
    const float m_in = has_in ? m[t0 - 1] : -INFINITY;
    __syncthreads();
    chunk_weights<LM>(sP, s_al, s_it, s_lf, s_m, m_in, has_in, Lc);

    { /* P = W o S in place: each element is read and written by its own thread only */
        float S[TL][TL];
        acc_zero(S);
        mm_acc(S, D, sQ, DP, 1, sK, 1, DP);
#pragma unroll
        for (int i = 0; i < TL; i++)
#pragma unroll
            for (int j = 0; j < TL; j++) {
                float *p = sP + (ty + 16 * i) * LP + tx + 16 * j;
                *p = S[i][j] * *p;
            }
    }
    __syncthreads();
    chunk_den<D>(den + t0, s_den, sP, LP, sQ, DP, sn, s_al, Lc, has_in);
    __syncthreads();
    float H[TL][TD];
    acc_zero(H);
    if (has_in) {
        mm_acc(H, D, sQ, DP, 1, sC, DP, 1); /* Q C_in */
#pragma unroll
        for (int i = 0; i < TL; i++)
#pragma unroll
            for (int j = 0; j < TD; j++) H[i][j] *= s_al[ty + 16 * i];
    }
    mm_acc(H, Lc, sP, LP, 1, sV, DP, 1); /* + P V */
#pragma unroll
    for (int i = 0; i < TL; i++) {
        const int r = ty + 16 * i;
        if (r >= Lc) continue;
        const float rd = 1.0f / (s_den[r] + eps);
#pragma unroll
        for (int j = 0; j < TD; j++) h[(tok + r) * D + tx + 16 * j] = H[i][j] * rd;
    }
}

/* 3xTF32 (the split of CUTLASS's fast-fp32 tensor-core GEMMs): each fp32 operand x of a
 * fragment becomes hi = tf32(x) and lo = tf32(x - hi), both rounded to nearest (x - hi is exact
 * in fp32, |x - hi| <= 2^-11 |x|), so hi + lo keeps 22 of fp32's 24 bits: |x - hi - lo| <= 2^-22
 * |x|. hi and lo share the fragment's element mapping, being split element by element in place
 * (and the hardware reads them as TF32 exactly: their low 13 bits are 0). mma3 accumulates
 * lo_a hi_b, then hi_a lo_b, then hi_a hi_b (small terms first) into one fp32 accumulator; the
 * dropped lo_a lo_b is <= 2^-22 |a b|, so each product term is within 3 2^-22 ~ 7e-7 of a b at
 * worst (~2^-22 typically), a few fp32 roundings, against TF32's 2^-10; the rest is the tensor
 * core's fp32 accumulation. Three mma per k-step instead of one. */
template <typename F> static __device__ __forceinline__ void tf32_split(F &hi, F &lo) {
#pragma unroll
    for (int e = 0; e < hi.num_elements; e++) {
        const float x = hi.x[e], xh = nvcuda::wmma::__float_to_tf32(x);
        hi.x[e] = xh, lo.x[e] = nvcuda::wmma::__float_to_tf32(x - xh);
    }
}
template <typename C, typename A, typename B>
static __device__ __forceinline__ void mma3(C &acc, const A &ah, const A &al, const B &bh, const B &bl) {
    nvcuda::wmma::mma_sync(acc, al, bh, acc);
    nvcuda::wmma::mma_sync(acc, ah, bl, acc);
    nvcuda::wmma::mma_sync(acc, ah, bh, acc);
}
/* The same split for one element of a PTX mma fragment (the backward's tensor-core tiling), in
 * integer arithmetic: cvt.rna runs at a quarter of the integer rate, and each element is split
 * by every warp that reads it. hi is x rounded to nearest TF32, ties away from zero (cvt.rna's
 * result for finite x: add half a TF32 ulp, clear the 13 low bits); lo = x - hi is exact, and
 * its low bits are left to the tensor core, which reads lo to within a TF32 ulp of lo, 2^-10
 * |lo| <= 2^-21 |x| (CUTLASS's fast-fp32 split, round_half_ulp_truncate for the big part). */
static __device__ __forceinline__ void tf32_hilo(float x, uint32_t &hi, uint32_t &lo) {
    hi = (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
    lo = __float_as_uint(x - __uint_as_float(hi));
}
/* d += a b on mma.sync m16n8k8 TF32, fp32 accumulation (the PTX ISA's fragment layouts) */
static __device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef XD_CUDA_EMU
    emu_mma_m16n8k8_tf32(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/* The same chunk on tensor cores (D = LM = 64, the model's case): the three products Q K^T, P V
 * and Q C_in in 3xTF32 (above) on wmma m16n16k8 with fp32 accumulation, fp32-accurate, so that
 * the fp32 backward (which recomputes them in fp32) is consistent with this forward; everything
 * else (W, alpha, den, the scaling by alpha and by 1 / (den + eps)) is the fp32 kernel's code and
 * order. den sums the fp32 P (S from 3xTF32, times W) and alpha q . n_in in fp32.
 * Tiles: 8 warps, warp w owns column tile c = 16 (w & 3) of row stripes ra = w >> 2 and
 * rb = 3 - ra (stripes {0, 3} for warps 0-3, {1, 2} for 4-7), in S [LM x LM] and in H [LM x D]:
 * the 16 tiles of each exactly once, and the causal P V (k-steps s < 16 (stripe + 1)) as much
 * work for every warp. S tiles above the diagonal (c > stripe) are skipped: W is 0 there
 * already. P = S o W in the fragments (W loaded as an accumulator of the same shape, so element
 * i of one is element i of the other, as in CUDA's GEMM samples); alpha likewise, from an
 * [LM][16] tile of alpha_r broadcast along each row. Strides (floats): Q, K, P and the staged h
 * D + 4 (row-major A and column-major B operands: lane (g, t) reads g * 68 + t, 32 banks), V and
 * C D + 8 (row-major B: t * 72 + g, 32 banks); all multiples of 4 (wmma's ldm) and every tile
 * pointer 32-byte aligned (offsets multiples of 8 floats from a 128-byte aligned base). */
template <int D, int LM> struct fwd_tc_layout {
    static constexpr int AS = D + 4, BS = D + 8, PS = LM + 4;
    static constexpr int oQ = 0, oK = oQ + LM * AS, oV = oK + LM * AS, oC = oV + LM * BS, oP = oC + D * BS,
                         oA = oP + LM * PS, on = oA + LM * 16, oit = on + D, olf = oit + LM, om = olf + LM,
                         oal = om + LM, oden = oal + LM, total = oden + LM;
    static_assert(oK % 8 == 0 && oV % 8 == 0 && oC % 8 == 0 && oP % 8 == 0 && oA % 8 == 0, "32-byte tiles");
};

template <int D, int LM>
__global__ void __launch_bounds__(MLSTM_THREADS)
    mlstm_fwd_chunk_tc_kernel(float *h, float *saved, const float *q, const float *k, const float *v,
                              const float *itilde, const float *logf, int T, int L, size_t sl, float eps) {
    static_assert(D == 64 && LM == 64 && MLSTM_THREADS == 256, "the tile mapping is for 64 x 64 on 8 warps");
    namespace wm = nvcuda::wmma;
    using lay = fwd_tc_layout<D, LM>;
    constexpr int AS = lay::AS, BS = lay::BS, PS = lay::PS;
    using frag_a = wm::fragment<wm::matrix_a, 16, 16, 8, wm::precision::tf32, wm::row_major>;
    using frag_br = wm::fragment<wm::matrix_b, 16, 16, 8, wm::precision::tf32, wm::row_major>;
    using frag_bc = wm::fragment<wm::matrix_b, 16, 16, 8, wm::precision::tf32, wm::col_major>;
    using frag_c = wm::fragment<wm::accumulator, 16, 16, 8, float>;
    MLSTM_DYNAMIC_SMEM(sm_tc);
    float *sQ = sm_tc + lay::oQ, *sK = sm_tc + lay::oK, *sV = sm_tc + lay::oV, *sC = sm_tc + lay::oC,
          *sP = sm_tc + lay::oP, *sA = sm_tc + lay::oA, *sn = sm_tc + lay::on, *s_it = sm_tc + lay::oit,
          *s_lf = sm_tc + lay::olf, *s_m = sm_tc + lay::om, *s_al = sm_tc + lay::oal, *s_den = sm_tc + lay::oden;
    const int c = blockIdx.x, b = blockIdx.y, tid = threadIdx.x, warp = tid >> 5;
    const int t0 = c * L, Lc = min(L, T - t0);
    const size_t tok = (size_t)b * T + t0;
    float *sv = saved + (size_t)b * sl, *den = sv + T;
    const float *m = sv;
    const bool has_in = c > 0;
    load_rows<D, LM, ix_pad<AS>>(sQ, q + tok * D, Lc);
    load_rows<D, LM, ix_pad<AS>>(sK, k + tok * D, Lc);
    load_rows<D, LM, ix_pad<BS>>(sV, v + tok * D, Lc);
    load_gates<LM>(s_it, s_lf, s_m, itilde + tok, logf + tok, m + t0, Lc);
    if (has_in) {
        const float *Cin = sv + 2 * (size_t)T + (size_t)(c - 1) * ((size_t)D * D + D);
        load_rows<D, D, ix_pad<BS>>(sC, Cin, D);
        for (int a = tid; a < D; a += MLSTM_THREADS) sn[a] = Cin[(size_t)D * D + a];
    }
    const float m_in = has_in ? m[t0 - 1] : -INFINITY;
    __syncthreads();
    chunk_weights<LM, ix_pad<PS>>(sP, s_al, s_it, s_lf, s_m, m_in, has_in, Lc);

    const int col = 16 * (warp & 3), st[2] = {warp >> 2, 3 - (warp >> 2)}; /* st[0] < st[1] */
    for (int idx = tid; idx < LM * 16; idx += MLSTM_THREADS) sA[idx] = s_al[idx >> 4];
    { /* P = W o S, each tile by its own warp */
        const bool live[2] = {col <= 16 * st[0], col <= 16 * st[1]};
        if (live[1]) {
            frag_c S[2];
            wm::fill_fragment(S[0], 0.0f);
            wm::fill_fragment(S[1], 0.0f);
#pragma unroll
            for (int a0 = 0; a0 < D; a0 += 8) {
                frag_bc kb, kl;
                wm::load_matrix_sync(kb, sK + col * AS + a0, AS); /* K^T (a, s) = K[s][a] */
                tf32_split(kb, kl);
#pragma unroll
                for (int t = 0; t < 2; t++) {
                    if (!live[t]) continue;
                    frag_a qa, ql;
                    wm::load_matrix_sync(qa, sQ + 16 * st[t] * AS + a0, AS);
                    tf32_split(qa, ql);
                    mma3(S[t], qa, ql, kb, kl);
                }
            }
#pragma unroll
            for (int t = 0; t < 2; t++) {
                if (!live[t]) continue;
                float *p = sP + 16 * st[t] * PS + col;
                frag_c W;
                wm::load_matrix_sync(W, p, PS, wm::mem_row_major);
#pragma unroll
                for (int e = 0; e < W.num_elements; e++) S[t].x[e] = S[t].x[e] * W.x[e];
                wm::store_matrix_sync(p, S[t], PS, wm::mem_row_major);
            }
        }
    }
    __syncthreads();
    chunk_den<D>(den + t0, s_den, sP, PS, sQ, AS, sn, s_al, Lc, has_in);
    { /* H = diag(alpha) Q C_in + P V, staged in sK (dead since the barrier) */
        frag_c H[2];
        wm::fill_fragment(H[0], 0.0f);
        wm::fill_fragment(H[1], 0.0f);
        if (has_in) {
#pragma unroll
            for (int a0 = 0; a0 < D; a0 += 8) {
                frag_br cb, cl;
                wm::load_matrix_sync(cb, sC + a0 * BS + col, BS);
                tf32_split(cb, cl);
#pragma unroll
                for (int t = 0; t < 2; t++) {
                    frag_a qa, ql;
                    wm::load_matrix_sync(qa, sQ + 16 * st[t] * AS + a0, AS);
                    tf32_split(qa, ql);
                    mma3(H[t], qa, ql, cb, cl);
                }
            }
#pragma unroll
            for (int t = 0; t < 2; t++) {
                frag_c al;
                wm::load_matrix_sync(al, sA + 16 * st[t] * 16, 16, wm::mem_row_major);
#pragma unroll
                for (int e = 0; e < al.num_elements; e++) H[t].x[e] *= al.x[e];
            }
        }
        /* P [j][s] is 0 for s > j and for s >= Lc: stripe t needs s < min(16 (st + 1), Lc) */
        const int L8 = (Lc + 7) & ~7, send[2] = {min(16 * (st[0] + 1), L8), min(16 * (st[1] + 1), L8)};
        for (int s0 = 0; s0 < send[1]; s0 += 8) {
            frag_br vb, vl;
            wm::load_matrix_sync(vb, sV + s0 * BS + col, BS);
            tf32_split(vb, vl);
#pragma unroll
            for (int t = 0; t < 2; t++) {
                if (s0 >= send[t]) continue;
                frag_a pa, pl;
                wm::load_matrix_sync(pa, sP + 16 * st[t] * PS + s0, PS);
                tf32_split(pa, pl);
                mma3(H[t], pa, pl, vb, vl);
            }
        }
#pragma unroll
        for (int t = 0; t < 2; t++) wm::store_matrix_sync(sK + 16 * st[t] * AS + col, H[t], AS, wm::mem_row_major);
    }
    __syncthreads();
    for (int idx = tid; idx < Lc * D; idx += MLSTM_THREADS) {
        const int r = idx / D, e = idx % D;
        const float rd = 1.0f / (s_den[r] + eps);
        h[(tok + r) * D + e] = sK[r * AS + e] * rd;
    }
}

/* ---- backward ---- */

/* Chunk c >= 1: its own part of the gradient of the state entering it,
 * (Q^T diag(alpha) dnum, sum_j alpha_j dden_j q_j), into workspace slot c-1. */
template <int D, int LM>
__global__ void __launch_bounds__(MLSTM_THREADS)
    mlstm_bwd_local_kernel(float *ws, const float *q, const float *h, const float *dh, const float *saved,
                           const float *logf, int T, int L, size_t sl, float eps) {
    constexpr int DP = D + 1, TD = D / 16;
    MLSTM_DYNAMIC_SMEM(sm);
    float *sQ = sm, *sDn = sQ + LM * DP, *s_lf = sDn + LM * DP, *s_m = s_lf + LM, *s_al = s_m + LM,
          *s_ad = s_al + LM;
    const int c = blockIdx.x + 1, b = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int t0 = c * L, Lc = min(L, T - t0);
    const size_t tok = (size_t)b * T + t0;
    const float *m = saved + (size_t)b * sl, *den = m + T;
    load_rows<D, LM>(sQ, q + tok * D, Lc);
    load_rows<D, LM>(sDn, dh + tok * D, Lc);
    for (int j = tid; j < LM; j += MLSTM_THREADS) {
        s_lf[j] = j < Lc ? logf[tok + j] : 0.0f;
        s_m[j] = j < Lc ? m[t0 + j] : 0.0f;
    }
    __syncthreads();
    mlstm_rows<D, LM> hd;
    load_h_den<D, LM>(hd, h + tok * D, den + t0, Lc);
    if (tid < Lc) s_al[tid] = chunk_alpha(tid, s_lf, s_m, m[t0 - 1], true);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < LM / 8; k++) {
        const int r = warp + 8 * k;
        if (r >= Lc) { /* padding rows: no contribution */
            if (lane == 0) s_ad[r] = 0.0f;
            continue;
        }
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < D / 32; i++) dot += sDn[r * DP + lane + 32 * i] * hd.h[k][i];
        dot = warp_sum(dot);
        const float rd = 1.0f / (hd.den[k] + eps), al = s_al[r];
#pragma unroll
        for (int i = 0; i < D / 32; i++) { /* alpha dnum */
            float *x = sDn + r * DP + lane + 32 * i;
            *x = *x * rd * al;
        }
        if (lane == 0) s_ad[r] = al * (-dot * rd); /* alpha dden */
    }
    __syncthreads();
    float *out = ws + ((size_t)b * (gridDim.x) + (c - 1)) * ((size_t)D * D + D); /* gridDim.x = nch-1 */
    if (tid < D) {
        float x = 0.0f;
        for (int j = 0; j < Lc; j++) x += s_ad[j] * sQ[j * DP + tid];
        out[(size_t)D * D + tid] = x;
    }
    float acc[TD][TD];
    acc_zero(acc);
    mm_acc(acc, Lc, sQ, 1, DP, sDn, DP, 1); /* Q^T (alpha dnum) */
    const int tx = tid & 15, ty = tid >> 4;
#pragma unroll
    for (int i = 0; i < TD; i++)
#pragma unroll
        for (int j = 0; j < TD; j++) out[(size_t)(ty + 16 * i) * D + tx + 16 * j] = acc[i][j];
}

/* The backward chunk's two tilings of its products. Every product is out(r, c) = sum_k A(r, k)
 * B(k, c) of smem tiles into a register tile; operand X is read as X[IX::at(i, j)], or as
 * X[IX::at(j, i)] when the flag XT says it is stored transposed. row(i) and col(j) are the
 * indices of a thread's acc[i][j]; row_sum adds a value over the threads that hold one row (all
 * threads call it), lead() is the one of them that writes the result. */

/* CUDA cores, fp32: 16 x 16 threads, each a register tile of rows ty + 16 i, cols tx + 16 j; the
 * rows of [.][D] and [.][LM] tiles padded to the odd strides D + 1 and LM + 1, so that plain and
 * transposed reads are free of bank conflicts (mm_acc). */
template <int D, int LM> struct bwd_fp32 {
    using ixd = ix_pad<D + 1>;
    using ixl = ix_pad<LM + 1>;
    static constexpr int RT = LM / 16, CL = LM / 16, CD = D / 16; /* rows; cols of [LM x LM], of [LM x D] */
    static constexpr int szd = LM * (D + 1), szl = LM * (LM + 1), sze = D * (D + 1);
    static __device__ __forceinline__ int row(int i) { return (threadIdx.x >> 4) + 16 * i; }
    static __device__ __forceinline__ int col(int j) { return (threadIdx.x & 15) + 16 * j; }
    static __device__ __forceinline__ float row_sum(float x) { return row_sum16(x); }
    static __device__ __forceinline__ bool lead() { return (threadIdx.x & 15) == 0; }
    template <bool AT, bool BT, class IA, class IB, int TM, int TN>
    static __device__ __forceinline__ void mm(float (&acc)[TM][TN], int K, const float *A, const float *B) {
        mm_acc(acc, K, A, AT ? 1 : IA::stride, AT ? IA::stride : 1, B, BT ? 1 : IB::stride, BT ? IB::stride : 1);
    }
};

/* Tensor cores, 3xTF32 (tf32_split's arithmetic, so fp32-accurate) on mma.sync m16n8k8, for
 * D = LM = 64: warp w owns rows 8 w .. 8 w + 7 of every [64 x 64] output and computes its
 * transpose, out^T = B^T A^T, as four m16n8 tiles (16 columns each); lane (g, t) (g = lane / 4,
 * t = lane % 4) then holds rows 8 w + 2 t + i (i < 2) and columns 16 q + g + 8 h (q < 4, h < 2),
 * so a row is in the 8 lanes of one t and row sums are three shuffles. Fragments are read by
 * scalar loads from tiles in ix_swz's layout, which no read here makes conflict. */
template <int D, int LM> struct bwd_tc {
    static_assert(D == 64 && LM == 64 && MLSTM_THREADS == 256, "the tiling is for 64 x 64 on 8 warps");
    using ixd = ix_swz;
    using ixl = ix_swz;
    static constexpr int RT = 2, CL = 8, CD = 8;
    static constexpr int szd = 64 * 64, szl = 64 * 64, sze = 64 * 64;
    static __device__ __forceinline__ int row(int i) { return 8 * (threadIdx.x >> 5) + 2 * (threadIdx.x & 3) + i; }
    static __device__ __forceinline__ int col(int j) { return 16 * (j >> 1) + ((threadIdx.x & 31) >> 2) + 8 * (j & 1); }
    static __device__ __forceinline__ float row_sum(float x) {
        for (int o = 4; o < 32; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
        return x;
    }
    static __device__ __forceinline__ bool lead() { return (threadIdx.x & 28) == 0; }
    template <bool AT, bool BT, class IA, class IB, int TM, int TN>
    static __device__ __forceinline__ void mm(float (&acc)[TM][TN], int K, const float *A, const float *B) {
        static_assert(TM == 2 && TN == 8, "a thread's tile of a 64 x 64 output");
        static_assert(std::is_same<IA, ix_swz>::value && std::is_same<IB, ix_swz>::value, "ix_swz tiles");
        const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3, r0 = 8 * (threadIdx.x >> 5);
        /* Each fragment element's offset for q = 0 and k0 = 0; for column block q and k0 = 8 k8
         * it is that XOR a constant plus a constant (ix_swz::row_step, col_step, and
         * 16 q + x = 16 q ^ x for x < 16). B operand of the
         * transposed product: (k, n) = A(r0 + n, k) at (t, g), (t + 4, g). A operand: (m, k) =
         * B(k, 16 q + m) at (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4). */
        int pa[2], pb[4];
#pragma unroll
        for (int h = 0; h < 2; h++) pa[h] = AT ? IA::at(t + 4 * h, r0 + g) : IA::at(r0 + g, t + 4 * h);
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int kk = t + 4 * (e >> 1), cc = g + 8 * (e & 1);
            pb[e] = BT ? IB::at(cc, kk) : IB::at(kk, cc);
        }
        /* K past the chunk's length reads zeros (every operand is zero-padded there). Unrolled
         * by 2: by 8 (every offset a constant's reach) spilled 288 bytes and ran the backward
         * 1.39x slower (H200, design shape), and one block an SM (no spills) slower still: the
         * kernel needs its two blocks an SM to hide the serial phases. */
#pragma unroll 2
        for (int k8 = 0; k8 < 8; k8++) {
            const int k0 = 8 * k8;
            if (k0 >= K) break;
            uint32_t bh[2], bl[2];
#pragma unroll
            for (int h = 0; h < 2; h++)
                tf32_hilo(A[AT ? ix_swz::col_step(pa[h], k0) : ix_swz::row_step(pa[h], k0)], bh[h], bl[h]);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                uint32_t ah[4], al[4];
#pragma unroll
                for (int e = 0; e < 4; e++) /* B(k0 + kk, 16 q + cc): at(16 q + cc, k0 + kk) or at(k0 + kk, 16 q + cc) */
                    tf32_hilo(B[BT ? (pb[e] ^ (((q & 1) << 1) ^ k0)) + 1024 * q : ix_swz::col_step(pb[e] ^ 16 * q, k0)],
                              ah[e], al[e]);
                /* accumulator: (m, n) = out(r0 + n, 16 q + m) at (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1) */
                float d[4] = {acc[0][2 * q], acc[1][2 * q], acc[0][2 * q + 1], acc[1][2 * q + 1]};
                mma_tf32(d, al, bh);
                mma_tf32(d, ah, bl);
                mma_tf32(d, ah, bh);
                acc[0][2 * q] = d[0], acc[1][2 * q] = d[1], acc[0][2 * q + 1] = d[2], acc[1][2 * q + 1] = d[3];
            }
        }
    }
};

/* Chunk c: every gradient, given the gradient (E, e) of the state leaving the chunk (workspace slot
 * c, when c + 1 < nch) and the state (C, n) entering it (saved slot c-1, when c >= 1). The same
 * steps as the CPU's mlstm_bwd_one; writes d_q, d_k, d_v of the chunk's tokens, d_itilde and d_logf
 * without the m path, and the m-path term of each token to the workspace. TI: the tiling of the
 * products (bwd_fp32 or bwd_tc); the steps are the same with both. */
template <int D, int LM, class TI>
__global__ void __launch_bounds__(MLSTM_THREADS, 2)
    mlstm_bwd_chunk_kernel(float *gq, float *gk, float *gv, float *git, float *glf, float *ws, const float *q,
                           const float *k, const float *v, const float *itilde, const float *logf, const float *h,
                           const float *dh, const float *saved, int T, int L, int nch, size_t sl, float eps) {
    using ixd = typename TI::ixd; /* [LM][D] and [D][D] tiles */
    using ixl = typename TI::ixl; /* [LM][LM] tiles */
    constexpr int RT = TI::RT, CL = TI::CL, CD = TI::CD, NW = MLSTM_THREADS / 32;
    static_assert(TI::szl <= TI::szd, "dS [LM][LM] reuses V's [LM][D]");
    MLSTM_DYNAMIC_SMEM(sm);
    /* six big buffers (two blocks per SM): V's holds dS once V is dead, E's holds C_in */
    float *sQ = sm, *sK = sQ + TI::szd, *sV = sK + TI::szd, *sDn = sV + TI::szd, *sW = sDn + TI::szd,
          *sE = sW + TI::szl, *se = sE + TI::sze, *sn = se + D, *s_it = sn + D, *sG = sV,
          *s_lf = s_it + LM, *s_m = s_lf + LM, *s_al = s_m + LM, *s_u = s_al + LM, *s_dden = s_u + LM,
          *s_dlogu = s_dden + LM, *s_dloga = s_dlogu + LM, *s_git = s_dloga + LM, *s_red = s_git + LM;
    const int c = blockIdx.x, b = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int t0 = c * L, Lc = min(L, T - t0);
    const size_t tok = (size_t)b * T + t0, ssz = (size_t)D * D + D;
    const float *m = saved + (size_t)b * sl, *den = m + T;
    const float *Cin = c > 0 ? m + 2 * (size_t)T + (size_t)(c - 1) * ssz : nullptr;
    const bool has_in = c > 0, has_E = c + 1 < nch;
    float *wsm = ws + (size_t)b * (nch - 1) * ssz; /* this sequence's state gradients */
    float *mterm = ws + (size_t)(nch - 1) * ssz * gridDim.y + tok;

    /* A: loads */
    load_rows<D, LM, ixd>(sQ, q + tok * D, Lc);
    load_rows<D, LM, ixd>(sK, k + tok * D, Lc);
    load_rows<D, LM, ixd>(sV, v + tok * D, Lc);
    load_rows<D, LM, ixd>(sDn, dh + tok * D, Lc);
    load_gates<LM>(s_it, s_lf, s_m, itilde + tok, logf + tok, m + t0, Lc);
    if (has_E) {
        const float *E = wsm + (size_t)c * ssz;
        load_rows<D, D, ixd>(sE, E, D);
        for (int a = tid; a < D; a += MLSTM_THREADS) se[a] = E[(size_t)D * D + a];
    }
    if (has_in)
        for (int a = tid; a < D; a += MLSTM_THREADS) sn[a] = Cin[(size_t)D * D + a];
    const float m_in = has_in ? m[t0 - 1] : -INFINITY;
    mlstm_rows<D, LM> hd; /* for phase B */
    load_h_den<D, LM>(hd, h + tok * D, den + t0, Lc);
    __syncthreads();

    /* B, C: W and alpha (with two barriers); before them, per row: dnum = dh / (den + eps),
     * dden = -(dh . h) / (den + eps) and the m-path term -eps (dh . h) / (den + eps) */
#pragma unroll
    for (int k = 0; k < LM / NW; k++) {
        const int r = warp + NW * k;
        if (r >= Lc) {
            if (lane == 0) s_dden[r] = 0.0f;
            continue;
        }
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < D / 32; i++) dot += sDn[ixd::at(r, lane + 32 * i)] * hd.h[k][i];
        dot = warp_sum(dot);
        const float dr = hd.den[k] + eps, rd = 1.0f / dr;
#pragma unroll
        for (int i = 0; i < D / 32; i++) sDn[ixd::at(r, lane + 32 * i)] *= rd;
        if (lane == 0) s_dden[r] = -dot * rd, mterm[r] = -eps * dot / dr;
    }
    chunk_weights<LM, ixl>(sW, s_al, s_it, s_lf, s_m, m_in, has_in, Lc);
    const float ae = s_al[Lc - 1];

    /* D: S = Q K^T, G = dnum V^T + dden; P = W o S (over W, in place); dS = W o G and A = P o G,
     * the gradient of log W, kept in registers until V and P are no longer needed */
    float A[RT][CL], dS[RT][CL];
    {
        float S[RT][CL], G[RT][CL];
        acc_zero(S);
        acc_zero(G);
        TI::template mm<false, true, ixd, ixd>(S, D, sQ, sK);
        TI::template mm<false, true, ixd, ixd>(G, D, sDn, sV);
#pragma unroll
        for (int i = 0; i < RT; i++)
#pragma unroll
            for (int j = 0; j < CL; j++) {
                const int r = TI::row(i), s = TI::col(j);
                const float w = sW[ixl::at(r, s)], p = S[i][j] * w, g = G[i][j] + s_dden[r];
                if (r == Lc - 1) s_u[s] = w; /* u = W's last row, read before P covers it */
                sW[ixl::at(r, s)] = p;
                dS[i][j] = g * w;
                A[i][j] = p * g;
            }
    }
    __syncthreads();

    /* E: dV = P^T dnum + diag(u) K E; dlogu_j = u_j (k_j E v_j + k_j . e);
     * dK starts as diag(u) (V E^T + e); dlog_ae = ae (C_in . E + n_in . e) */
    float dK[RT][CD];
    acc_zero(dK);
    {
        float dV[RT][CD];
        acc_zero(dV);
        if (has_E) {
            TI::template mm<false, false, ixd, ixd>(dV, D, sK, sE); /* K E */
#pragma unroll
            for (int i = 0; i < RT; i++) {
                const int r = TI::row(i);
                float x = 0.0f;
#pragma unroll
                for (int j = 0; j < CD; j++) {
                    const int col = TI::col(j);
                    x += dV[i][j] * sV[ixd::at(r, col)] + sK[ixd::at(r, col)] * se[col];
                    dV[i][j] *= s_u[r];
                }
                x = TI::row_sum(x);
                if (TI::lead()) s_dlogu[r] = s_u[r] * x;
            }
            TI::template mm<false, true, ixd, ixd>(dK, D, sV, sE); /* V E^T */
#pragma unroll
            for (int i = 0; i < RT; i++)
#pragma unroll
                for (int j = 0; j < CD; j++) dK[i][j] = s_u[TI::row(i)] * (dK[i][j] + se[TI::col(j)]);
        } else if (TI::lead()) {
#pragma unroll
            for (int i = 0; i < RT; i++) s_dlogu[TI::row(i)] = 0.0f;
        }
        TI::template mm<true, false, ixl, ixd>(dV, Lc, sW, sDn); /* + P^T dnum */
#pragma unroll
        for (int i = 0; i < RT; i++) {
            const int r = TI::row(i);
            if (r >= Lc) continue;
#pragma unroll
            for (int j = 0; j < CD; j++) gv[(tok + r) * D + TI::col(j)] = dV[i][j];
        }
    }
    {
        float x = 0.0f;
        if (has_E && has_in) {
#pragma unroll
            for (int u = 0; u < D * D / MLSTM_THREADS; u++) {
                const int idx = tid + MLSTM_THREADS * u;
                x += __ldg(Cin + idx) * sE[ixd::at(idx / D, idx % D)];
            }
            for (int a = tid; a < D; a += MLSTM_THREADS) x += sn[a] * se[a];
        }
        x = warp_sum(x);
        if (lane == 0) s_red[warp] = x;
    }
    __syncthreads();

    /* F: A over P, dS over V, C_in over E (all three dead now) */
    float dlog_ae = 0.0f;
    if (has_E && has_in) {
        for (int w = 0; w < NW; w++) dlog_ae += s_red[w];
        dlog_ae *= ae;
    }
#pragma unroll
    for (int i = 0; i < RT; i++)
#pragma unroll
        for (int j = 0; j < CL; j++) {
            sW[ixl::at(TI::row(i), TI::col(j))] = A[i][j];
            sG[ixl::at(TI::row(i), TI::col(j))] = dS[i][j];
        }
    if (has_in)
        load_rows<D, D, ixd>(sE, Cin, D);
    __syncthreads();

    /* G: down each column i of A, from the last row: logf_j (j > i) gets dlogu_i plus the column's
     * sum over rows >= j (left in A[j][i]), itilde_i the whole column plus dlogu_i. Then
     * dQ = dS K + diag(alpha) Y with Y = dnum C_in^T + dden n_in^T, dloga_j = alpha_j q_j . Y_j,
     * and dK += dS^T Q. */
    if (tid < Lc) {
        const int i = tid;
        float col = s_dlogu[i];
        for (int j = Lc - 1; j > i; j--) {
            col += sW[ixl::at(j, i)];
            sW[ixl::at(j, i)] = col;
        }
        s_git[i] = col + sW[ixl::at(i, i)];
    }
    {
        float dQ[RT][CD];
        acc_zero(dQ);
        if (has_in) {
            TI::template mm<false, true, ixd, ixd>(dQ, D, sDn, sE); /* dnum C_in^T */
#pragma unroll
            for (int i = 0; i < RT; i++) {
                const int r = TI::row(i);
                float x = 0.0f;
#pragma unroll
                for (int j = 0; j < CD; j++) {
                    const int a = TI::col(j);
                    dQ[i][j] += s_dden[r] * sn[a];
                    x += sQ[ixd::at(r, a)] * dQ[i][j];
                    dQ[i][j] *= s_al[r];
                }
                x = TI::row_sum(x);
                if (TI::lead()) s_dloga[r] = s_al[r] * x;
            }
        }
        TI::template mm<false, false, ixl, ixd>(dQ, Lc, sG, sK); /* + dS K */
#pragma unroll
        for (int i = 0; i < RT; i++) {
            const int r = TI::row(i);
            if (r >= Lc) continue;
#pragma unroll
            for (int j = 0; j < CD; j++) gq[(tok + r) * D + TI::col(j)] = dQ[i][j];
        }
    }
    TI::template mm<true, false, ixl, ixd>(dK, Lc, sG, sQ); /* + dS^T Q */
#pragma unroll
    for (int i = 0; i < RT; i++) {
        const int r = TI::row(i);
        if (r >= Lc) continue;
#pragma unroll
        for (int j = 0; j < CD; j++) gk[(tok + r) * D + TI::col(j)] = dK[i][j];
    }
    __syncthreads();

    /* H: logf_r = sum_{i<r} (left in A[r][i]) and, with an entering state, the suffix sum of
     * dloga from r on plus dlog_ae (the leaving state's weight spans the whole chunk) */
    if (tid < Lc) {
        const int r = tid;
        float x = 0.0f;
        for (int i = 0; i < r; i++) x += sW[ixl::at(r, i)];
        if (has_in) {
            float acc = dlog_ae;
            for (int j = Lc - 1; j >= r; j--) acc += s_dloga[j];
            x += acc;
        }
        glf[tok + r] = x;
        git[tok + r] = s_git[r];
    }
}

/* The m path. As the CPU's reverse loop: g_t = x_t + f_{t+1} g_{t+1} (g_T = 0), where x_t is the
 * token's m-path term and f_t says the forget branch won m_t's max (then the gradient flows on to
 * m_{t-1}); g_t goes to logf_t where f_t, else to itilde_t. A linear recurrence with 0/1
 * coefficients, so it scans in parallel: one block per sequence stages a tile of 1024 tokens, and
 * warp 0 scans it: each lane
 * composes its 32 tokens into g_a = X + C g_b, a shuffle scan over the lanes gives every lane the g
 * entering its tokens, and each lane replays its tokens with it. Only the order of the sums
 * differs from the CPU. Tokens are stored at (i / 32) * 33 + i % 32 so that the lanes' runs of 32
 * hit distinct banks. */
#define MLSTM_PAD(i) ((i) / 32 * 33 + (i) % 32)
__global__ void __launch_bounds__(MLSTM_THREADS)
    mlstm_mpath_scan_kernel(float *git, float *glf, const float *mterm, const float *saved, const float *itilde,
                            const float *logf, int T, size_t sl) {
    constexpr int N = MLSTM_SCAN_TILE / 32 * 33 + 1; /* the padded tile, plus one token past it */
    constexpr int PER = (MLSTM_SCAN_TILE + MLSTM_THREADS) / MLSTM_THREADS; /* tokens staged a thread */
    __shared__ float s_x[N], s_gi[N], s_gl[N];
    __shared__ unsigned char s_f[N];
    const int b = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
    const size_t o = (size_t)b * T;
    const float *m = saved + (size_t)b * sl;
    float carry = 0.0f; /* g at the first token after the tile (warp 0) */
    for (int end = T; end > 0; end -= MLSTM_SCAN_TILE) {
        const int start = max(0, end - MLSTM_SCAN_TILE), n = end - start;
        /* all threads stage (every load before any store); j = n: the token after the tile, for its flag */
        float rx[PER], rgi[PER], rgl[PER];
        bool rf[PER];
#pragma unroll
        for (int u = 0; u < PER; u++) {
            const int j = tid + MLSTM_THREADS * u, t = start + j;
            rf[u] = false, rx[u] = 0.0f, rgi[u] = 0.0f, rgl[u] = 0.0f;
            if (j <= n && t < T) rf[u] = logf[o + t] + (t > 0 ? m[t - 1] : -INFINITY) > itilde[o + t];
            if (j < n) rx[u] = mterm[o + t], rgi[u] = git[o + t], rgl[u] = glf[o + t];
        }
#pragma unroll
        for (int u = 0; u < PER; u++) {
            const int j = tid + MLSTM_THREADS * u, p = MLSTM_PAD(j);
            if (j <= n) s_f[p] = rf[u], s_x[p] = rx[u], s_gi[p] = rgi[u], s_gl[p] = rgl[u];
        }
        __syncthreads();
        if (tid < 32) { /* lane l: tokens [32 l, 32 l + 32) of the tile, those below n */
            const int a0 = 32 * lane, a1 = min(32 * lane + 32, n);
            float X = 0.0f, C = 1.0f;
            for (int j = a1 - 1; j >= a0; j--) {
                const float c = s_f[MLSTM_PAD(j + 1)] ? 1.0f : 0.0f;
                X = s_x[MLSTM_PAD(j)] + c * X;
                C = c * C;
            }
            for (int d = 1; d < 32; d <<= 1) { /* suffix scan: compose with the lanes above */
                const float Xu = __shfl_down_sync(0xffffffffu, X, d), Cu = __shfl_down_sync(0xffffffffu, C, d);
                if (lane + d < 32) X = X + C * Xu, C = C * Cu;
            }
            const float G = X + C * carry; /* g at the lane's first token */
            float g = __shfl_down_sync(0xffffffffu, G, 1);
            if (lane == 31) g = carry;
            for (int j = a1 - 1; j >= a0; j--) {
                const int p = MLSTM_PAD(j);
                g = s_x[p] + (s_f[MLSTM_PAD(j + 1)] ? g : 0.0f);
                if (s_f[p])
                    s_gl[p] += g;
                else
                    s_gi[p] += g;
            }
            carry = __shfl_sync(0xffffffffu, G, 0);
        }
        __syncthreads();
        for (int j = tid; j < n; j += MLSTM_THREADS) {
            const int p = MLSTM_PAD(j);
            git[o + start + j] = s_gi[p], glf[o + start + j] = s_gl[p];
        }
        __syncthreads(); /* before the next tile's staging overwrites */
    }
}
#undef MLSTM_PAD

/* ---- host side ---- */

template <int D> static size_t fwd_local_smem(int LM) { return sizeof(float) * (2 * (size_t)LM * (D + 1) + 4 * LM); }
template <int D> static size_t fwd_chunk_smem(int LM) {
    return sizeof(float) * (3 * (size_t)LM * (D + 1) + (size_t)LM * (LM + 1) + (size_t)D * (D + 1) + D + 5 * LM);
}
template <int D, int LM> static size_t fwd_chunk_tc_smem() { return sizeof(float) * (size_t)fwd_tc_layout<D, LM>::total; }
template <int D> static size_t bwd_local_smem(int LM) { return sizeof(float) * (2 * (size_t)LM * (D + 1) + 4 * LM); }
template <int D, int LM, class TI> static size_t bwd_chunk_smem() {
    return sizeof(float) * (4 * (size_t)TI::szd + TI::szl + TI::sze + 2 * D + 9 * LM + MLSTM_THREADS / 32);
}

static int mlstm_fail(const char *what) {
    snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "kern_cuda_mlstm: %s", what);
    return -1;
}

/* Launches kernel over grid, MLSTM_THREADS threads a block, with smem bytes of dynamic shared
 * memory (opted into, as above 48 KiB needs, and checked against the device first). Under
 * XD_CUDA_EMU the blocks run on the host (tests/cuda/emu_cuda_mlstm.cpp). */
template <typename... P, typename... A>
static int mlstm_launch(void (*kernel)(P...), dim3 grid, size_t smem, cudaStream_t s, A... args) {
    if (smem > 0) {
        int dev, optin;
        CUDA_TRY(cudaGetDevice(&dev));
        CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        if (smem > (size_t)optin)
            return mlstm_fail("this chunk length and width need more shared memory than the device has");
        CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    }
#ifdef XD_CUDA_EMU
    (void)s;
    emu_launch(grid.x, grid.y, MLSTM_THREADS, smem, [&] { kernel(args...); });
#else
    kernel<<<grid, MLSTM_THREADS, smem, s>>>(args...);
#endif
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* tc: the chunk kernel on tensor cores where it is built (D = LM = 64), else the fp32 one */
template <int D, int LM>
static int mlstm_fwd_impl(float *h, float *saved, const float *q, const float *k, const float *v, const float *itilde,
                          const float *logf, int B, int T, int L, float eps, bool tc, cudaStream_t s) {
    const int nch = (int)mlstm_nch(T, L), ssz = D * D + D;
    const size_t sl = mlstm_seq_saved(T, L, D, D);
    float *decay = saved + (size_t)B * sl;
    if (mlstm_launch(mlstm_max_scan_kernel, dim3(B), 0, s, saved, itilde, logf, T, sl)) return -1;
    if (nch > 1 && mlstm_launch(mlstm_fwd_local_kernel<D, LM>, dim3(nch - 1, B), fwd_local_smem<D>(LM), s, saved,
                                decay, k, v, itilde, logf, T, L, nch, sl))
        return -1;
    if (nch > 2 && mlstm_launch(mlstm_state_scan_kernel, dim3((ssz + 255) / 256, B), 0, s, saved + 2 * (size_t)T, sl,
                                decay, nch, ssz, 1))
        return -1;
    if constexpr (D == 64 && LM == 64)
        if (tc)
            return mlstm_launch(mlstm_fwd_chunk_tc_kernel<D, LM>, dim3(nch, B), fwd_chunk_tc_smem<D, LM>(), s, h, saved,
                                q, k, v, itilde, logf, T, L, sl, eps);
    (void)tc;
    return mlstm_launch(mlstm_fwd_chunk_kernel<D, LM>, dim3(nch, B), fwd_chunk_smem<D>(LM), s, h, saved, q, k, v,
                        itilde, logf, T, L, sl, eps);
}

/* The backward's chunk kernel with tiling TI */
template <int D, int LM, class TI>
static int mlstm_bwd_chunks(float *gq, float *gk, float *gv, float *git, float *glf, float *ws, const float *dh,
                            const float *h, const float *saved, const float *q, const float *k, const float *v,
                            const float *itilde, const float *logf, int B, int T, int L, int nch, size_t sl, float eps,
                            cudaStream_t s) {
    return mlstm_launch(mlstm_bwd_chunk_kernel<D, LM, TI>, dim3(nch, B), bwd_chunk_smem<D, LM, TI>(), s, gq, gk, gv,
                        git, glf, ws, q, k, v, itilde, logf, h, dh, saved, T, L, nch, sl, eps);
}

/* tc: the chunk kernel's products on tensor cores where built (D = LM = 64), else on CUDA cores */
template <int D, int LM>
static int mlstm_bwd_impl(float *gq, float *gk, float *gv, float *git, float *glf, float *ws, const float *dh,
                          const float *h, const float *saved, const float *q, const float *k, const float *v,
                          const float *itilde, const float *logf, int B, int T, int L, float eps, bool tc,
                          cudaStream_t s) {
    const int nch = (int)mlstm_nch(T, L), ssz = D * D + D;
    const size_t sl = mlstm_seq_saved(T, L, D, D);
    const float *decay = saved + (size_t)B * sl;
    if (nch > 1 && mlstm_launch(mlstm_bwd_local_kernel<D, LM>, dim3(nch - 1, B), bwd_local_smem<D>(LM), s, ws, q, h,
                                dh, saved, logf, T, L, sl, eps))
        return -1;
    if (nch > 2 && mlstm_launch(mlstm_state_scan_kernel, dim3((ssz + 255) / 256, B), 0, s, ws, (size_t)(nch - 1) * ssz,
                                decay, nch, ssz, -1))
        return -1;
    int rc;
    if constexpr (D == 64 && LM == 64)
        rc = tc ? mlstm_bwd_chunks<D, LM, bwd_tc<D, LM>>(gq, gk, gv, git, glf, ws, dh, h, saved, q, k, v, itilde, logf,
                                                          B, T, L, nch, sl, eps, s)
                : mlstm_bwd_chunks<D, LM, bwd_fp32<D, LM>>(gq, gk, gv, git, glf, ws, dh, h, saved, q, k, v, itilde,
                                                            logf, B, T, L, nch, sl, eps, s);
    else
        rc = mlstm_bwd_chunks<D, LM, bwd_fp32<D, LM>>(gq, gk, gv, git, glf, ws, dh, h, saved, q, k, v, itilde, logf, B,
                                                       T, L, nch, sl, eps, s);
    if (rc) return -1;
    const float *mterm = ws + (size_t)B * (nch - 1) * ssz;
    return mlstm_launch(mlstm_mpath_scan_kernel, dim3(B), 0, s, git, glf, mterm, saved, itilde, logf, T, sl);
}

static int mlstm_check(int B, int T, int L, int dk, int dv) {
    if (B < 0 || T < 0) return mlstm_fail("B and T must be >= 0");
    if (B > 65535) return mlstm_fail("B must be <= 65535 (the sequences are the grid's y dimension)");
    if (L < 1 || L > 64) return mlstm_fail("chunk length L must be in 1 .. 64");
    if (dk != dv || dk != 64) return mlstm_fail("only dk = dv = 64 is built (template on the width in mlstm.cu)");
    return 0;
}

static int mlstm_fwd(float *h, float *saved, const float *phi_q, const float *phi_k, const float *v,
                     const float *itilde, const float *logf, int B, int T, int L, int dk, int dv, float eps, bool tc,
                     kern_cuda_stream s) {
    if (mlstm_check(B, T, L, dk, dv)) return -1;
    if (B == 0 || T == 0) return 0;
    if (L <= 16) return mlstm_fwd_impl<64, 16>(h, saved, phi_q, phi_k, v, itilde, logf, B, T, L, eps, tc, s);
    if (L <= 32) return mlstm_fwd_impl<64, 32>(h, saved, phi_q, phi_k, v, itilde, logf, B, T, L, eps, tc, s);
    return mlstm_fwd_impl<64, 64>(h, saved, phi_q, phi_k, v, itilde, logf, B, T, L, eps, tc, s);
}

extern "C" int kern_cuda_mlstm_fwd(float *h, float *saved, const float *phi_q, const float *phi_k, const float *v,
                                   const float *itilde, const float *logf, int B, int T, int L, int dk, int dv,
                                   float eps, kern_cuda_stream s) {
    return mlstm_fwd(h, saved, phi_q, phi_k, v, itilde, logf, B, T, L, dk, dv, eps, true, s);
}

extern "C" int kern_cuda_mlstm_fwd_fp32(float *h, float *saved, const float *phi_q, const float *phi_k,
                                        const float *v, const float *itilde, const float *logf, int B, int T, int L,
                                        int dk, int dv, float eps, kern_cuda_stream s) {
    return mlstm_fwd(h, saved, phi_q, phi_k, v, itilde, logf, B, T, L, dk, dv, eps, false, s);
}

static int mlstm_bwd(float *d_phi_q, float *d_phi_k, float *d_v, float *d_itilde, float *d_logf, void *workspace,
                     const float *dh, const float *h, const float *saved, const float *phi_q, const float *phi_k,
                     const float *v, const float *itilde, const float *logf, int B, int T, int L, int dk, int dv,
                     float eps, bool tc, kern_cuda_stream s) {
    if (mlstm_check(B, T, L, dk, dv)) return -1;
    if (B == 0 || T == 0) return 0;
    float *ws = (float *)workspace;
    if (L <= 16)
        return mlstm_bwd_impl<64, 16>(d_phi_q, d_phi_k, d_v, d_itilde, d_logf, ws, dh, h, saved, phi_q, phi_k, v,
                                      itilde, logf, B, T, L, eps, tc, s);
    if (L <= 32)
        return mlstm_bwd_impl<64, 32>(d_phi_q, d_phi_k, d_v, d_itilde, d_logf, ws, dh, h, saved, phi_q, phi_k, v,
                                      itilde, logf, B, T, L, eps, tc, s);
    return mlstm_bwd_impl<64, 64>(d_phi_q, d_phi_k, d_v, d_itilde, d_logf, ws, dh, h, saved, phi_q, phi_k, v, itilde,
                                  logf, B, T, L, eps, tc, s);
}

extern "C" int kern_cuda_mlstm_bwd(float *d_phi_q, float *d_phi_k, float *d_v, float *d_itilde, float *d_logf,
                                   void *workspace, const float *dh, const float *h, const float *saved,
                                   const float *phi_q, const float *phi_k, const float *v, const float *itilde,
                                   const float *logf, int B, int T, int L, int dk, int dv, float eps,
                                   kern_cuda_stream s) {
    return mlstm_bwd(d_phi_q, d_phi_k, d_v, d_itilde, d_logf, workspace, dh, h, saved, phi_q, phi_k, v, itilde, logf,
                     B, T, L, dk, dv, eps, true, s);
}

extern "C" int kern_cuda_mlstm_bwd_fp32(float *d_phi_q, float *d_phi_k, float *d_v, float *d_itilde, float *d_logf,
                                        void *workspace, const float *dh, const float *h, const float *saved,
                                        const float *phi_q, const float *phi_k, const float *v, const float *itilde,
                                        const float *logf, int B, int T, int L, int dk, int dv, float eps,
                                        kern_cuda_stream s) {
    return mlstm_bwd(d_phi_q, d_phi_k, d_v, d_itilde, d_logf, workspace, dh, h, saved, phi_q, phi_k, v, itilde, logf,
                     B, T, L, dk, dv, eps, false, s);
}
