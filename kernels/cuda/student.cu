/* kernels/cuda/student.cu — the student's small ops on the GPU: rotate-half RoPE (forward and
 * backward, in place on bf16 rows, fp32 tables from kern_rope_tables_f32) and the Hedgehog
 * feature map of one layer (forward and backward). Same maths as kernels/train_ops_impl.h and
 * kernels/student_ops_impl.h; checked by tests/cuda/bench_cuda_student. */
#include "cuda_internal.cuh"

/* ---- RoPE ---- */

/* One thread per pair (i, i + half) of one head of one token; sign +1 forward, -1 backward
 * (the transposed rotation), exactly as rope_rotate in train_ops_impl.h. */
static __global__ void rope_kernel(kern_bf16 *x, int n, int heads, int half, int pos0,
                                   const float *__restrict__ ct, const float *__restrict__ st,
                                   float sign) {
    size_t total = (size_t)n * heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t th = idx / half; /* t * heads + h */
        int t = (int)(th / heads);
        size_t row = (size_t)(pos0 + t) * half + i;
        float c = ct[row], si = sign * st[row];
        kern_bf16 *v = x + th * (size_t)(2 * half);
        float a = bf(v[i]), b = bf(v[i + half]);
        v[i] = to_bf(a * c - b * si);
        v[i + half] = to_bf(b * c + a * si);
    }
}

static int rope_launch(kern_bf16 *x, int n, int heads, int head_dim, int pos0, const float *ct,
                       const float *st, float sign, kern_cuda_stream s) {
    if (head_dim % 2 || n < 0 || heads < 0) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_rope: bad shape n %d heads %d head_dim %d", n, heads, head_dim);
        return -1;
    }
    size_t total = (size_t)n * heads * (head_dim / 2);
    if (!total) return 0;
    size_t blocks = (total + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    rope_kernel<<<(unsigned)blocks, 256, 0, s>>>(x, n, heads, head_dim / 2, pos0, ct, st, sign);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int kern_cuda_rope_bf16(kern_bf16 *x, int n, int heads, int head_dim, int pos0,
                                   const float *cos_table, const float *sin_table,
                                   kern_cuda_stream s) {
    return rope_launch(x, n, heads, head_dim, pos0, cos_table, sin_table, 1.0f, s);
}

extern "C" int kern_cuda_rope_backward_bf16(kern_bf16 *dx, int n, int heads, int head_dim,
                                            int pos0, const float *cos_table,
                                            const float *sin_table, kern_cuda_stream s) {
    return rope_launch(dx, n, heads, head_dim, pos0, cos_table, sin_table, -1.0f, s);
}

/* ---- Hedgehog feature map ---- */
/* d = 32 JW. M of the block's head sits in shared memory with row stride d + 1, so both the
 * column walk (forward, dM) and the row walk (dx = dz M^T) are free of bank conflicts. */

#define FM_THREADS 256
#define FM_FWD_ROWS 64   /* tokens per forward block (8 per warp) */
#define FM_TILE 32       /* tokens per backward tile (4 per warp) */
#define FM_CHUNK 256     /* tokens per backward block: one partial dM each */

template <int JW>
static __global__ void __launch_bounds__(FM_THREADS)
fm_fwd_kernel(float *__restrict__ phi, const kern_bf16 *__restrict__ x, const float *__restrict__ M,
              int T, int H) {
    constexpr int d = 32 * JW, ld = d + 1;
    extern __shared__ float Ms[];
    int h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *Mh = M + (size_t)h * d * d;
    for (int e = threadIdx.x; e < d * d; e += FM_THREADS) Ms[(e / d) * ld + e % d] = Mh[e];
    __syncthreads();
    size_t ldx = (size_t)H * d;
    for (int r = warp; r < FM_FWD_ROWS; r += FM_THREADS / 32) {
        int t = blockIdx.x * FM_FWD_ROWS + r;
        if (t >= T) break;
        const kern_bf16 *xr = x + (size_t)t * ldx + (size_t)h * d;
        float xv[JW], z[JW];
#pragma unroll
        for (int k = 0; k < JW; k++) xv[k] = bf(xr[lane + 32 * k]), z[k] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < JW; kk++)
#pragma unroll 8
            for (int l = 0; l < 32; l++) {
                float xc = __shfl_sync(0xffffffffu, xv[kk], l);
                const float *Mc = Ms + (kk * 32 + l) * ld + lane;
#pragma unroll
                for (int k = 0; k < JW; k++) z[k] = fmaf(xc, Mc[32 * k], z[k]);
            }
        float m = z[0];
#pragma unroll
        for (int k = 1; k < JW; k++) m = fmaxf(m, z[k]);
        m = warp_max(m);
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < JW; k++) z[k] = expf(z[k] - m), sum += z[k];
        sum = warp_sum(sum);
        float *pr = phi + (size_t)t * ldx + (size_t)h * d;
#pragma unroll
        for (int k = 0; k < JW; k++) pr[lane + 32 * k] = z[k] / sum;
    }
}

/* Block (chunk, h): tokens [chunk * FM_CHUNK, +FM_CHUNK) of head h, in tiles of FM_TILE. Each
 * warp turns its rows into dz = phi (dphi - <dphi, phi>) and adds dz M^T into dx; then the
 * block adds x^T dz of the tile into per-thread dM entries, written once as the chunk's partial. */
template <int JW>
static __global__ void __launch_bounds__(FM_THREADS)
fm_bwd_kernel(float *__restrict__ dx, float *__restrict__ part, const float *__restrict__ dphi,
              const float *__restrict__ phi, const kern_bf16 *__restrict__ x,
              const float *__restrict__ M, int T, int H) {
    constexpr int d = 32 * JW, ld = d + 1, E = d * d / FM_THREADS;
    extern __shared__ float sm[];
    float *Ms = sm, *xs = sm + d * ld, *dzs = xs + FM_TILE * d;
    int h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *Mh = M + (size_t)h * d * d;
    for (int e = threadIdx.x; e < d * d; e += FM_THREADS) Ms[(e / d) * ld + e % d] = Mh[e];
    __syncthreads();
    size_t ldx = (size_t)H * d;
    int t_begin = blockIdx.x * FM_CHUNK, t_end = min(T, t_begin + FM_CHUNK);
    float acc[E];
#pragma unroll
    for (int q = 0; q < E; q++) acc[q] = 0.0f;
    for (int t0 = t_begin; t0 < t_end; t0 += FM_TILE) {
        for (int r = warp; r < FM_TILE; r += FM_THREADS / 32) {
            int t = t0 + r; /* warp-uniform */
            if (t < t_end) {
                size_t o = (size_t)t * ldx + (size_t)h * d;
                float p[JW], g[JW], dot = 0.0f;
#pragma unroll
                for (int k = 0; k < JW; k++) {
                    p[k] = phi[o + lane + 32 * k], g[k] = dphi[o + lane + 32 * k];
                    dot = fmaf(p[k], g[k], dot);
                }
                dot = warp_sum(dot);
#pragma unroll
                for (int k = 0; k < JW; k++) {
                    dzs[r * d + lane + 32 * k] = p[k] * (g[k] - dot);
                    xs[r * d + lane + 32 * k] = bf(x[o + lane + 32 * k]);
                }
                __syncwarp();
                float a[JW]; /* dx[t, c] for c = lane + 32 k: sum_j dz[j] M[c, j] */
#pragma unroll
                for (int k = 0; k < JW; k++) a[k] = 0.0f;
#pragma unroll 8
                for (int j = 0; j < d; j++) {
                    float zj = dzs[r * d + j];
#pragma unroll
                    for (int k = 0; k < JW; k++) a[k] = fmaf(zj, Ms[(lane + 32 * k) * ld + j], a[k]);
                }
#pragma unroll
                for (int k = 0; k < JW; k++) dx[o + lane + 32 * k] += a[k];
            } else {
#pragma unroll
                for (int k = 0; k < JW; k++) dzs[r * d + lane + 32 * k] = 0.0f, xs[r * d + lane + 32 * k] = 0.0f;
            }
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < E; q++) {
            int e = threadIdx.x + q * FM_THREADS, c = e / d, j = e % d;
            float v = acc[q];
#pragma unroll 8
            for (int r = 0; r < FM_TILE; r++) v = fmaf(xs[r * d + c], dzs[r * d + j], v);
            acc[q] = v;
        }
        __syncthreads();
    }
    float *pc = part + ((size_t)blockIdx.x * H + h) * d * d;
#pragma unroll
    for (int q = 0; q < E; q++) pc[threadIdx.x + q * FM_THREADS] = acc[q];
}

/* dM[h, e] += the chunks' partials, summed in chunk order (deterministic). */
static __global__ void fm_reduce_kernel(float *__restrict__ dM, const float *__restrict__ part,
                                        int nch, size_t per) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < per;
         i += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < nch; c++) s += part[(size_t)c * per + i];
        dM[i] += s;
    }
}

template <int JW>
static int fm_fwd_launch(float *phi, const kern_bf16 *x, const float *M, int T, int H,
                         kern_cuda_stream s) {
    constexpr int d = 32 * JW;
    size_t smem = sizeof(float) * d * (d + 1);
    if (smem > 48 * 1024)
        CUDA_TRY(cudaFuncSetAttribute(fm_fwd_kernel<JW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((T + FM_FWD_ROWS - 1) / FM_FWD_ROWS, H);
    fm_fwd_kernel<JW><<<grid, FM_THREADS, smem, s>>>(phi, x, M, T, H);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

template <int JW>
static int fm_bwd_launch(float *dx, float *dM, const float *dphi, const float *phi,
                         const kern_bf16 *x, const float *M, int T, int H, kern_cuda_stream s) {
    constexpr int d = 32 * JW;
    size_t smem = sizeof(float) * (d * (d + 1) + 2 * FM_TILE * d);
    if (smem > 48 * 1024)
        CUDA_TRY(cudaFuncSetAttribute(fm_bwd_kernel<JW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int nch = (T + FM_CHUNK - 1) / FM_CHUNK;
    size_t per = (size_t)H * d * d;
    float *part;
    CUDA_TRY(cudaMallocAsync((void **)&part, sizeof(float) * per * nch, s));
    fm_bwd_kernel<JW><<<dim3(nch, H), FM_THREADS, smem, s>>>(dx, part, dphi, phi, x, M, T, H);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) {
        size_t blocks = (per + 255) / 256;
        fm_reduce_kernel<<<(unsigned)blocks, 256, 0, s>>>(dM, part, nch, per);
        err = cudaGetLastError();
    }
    CUDA_TRY(cudaFreeAsync(part, s));
    CUDA_TRY(err);
    return 0;
}

extern "C" int kern_cuda_feature_map_fwd_bf16(float *phi, const kern_bf16 *x, const float *M, int T,
                                              int H, int d, kern_cuda_stream s) {
    if (T <= 0 || H <= 0) return T == 0 && H > 0 ? 0 : -1;
    switch (d) {
    case 32: return fm_fwd_launch<1>(phi, x, M, T, H, s);
    case 64: return fm_fwd_launch<2>(phi, x, M, T, H, s);
    case 96: return fm_fwd_launch<3>(phi, x, M, T, H, s);
    case 128: return fm_fwd_launch<4>(phi, x, M, T, H, s);
    default:
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_feature_map_fwd_bf16: head size %d not in {32, 64, 96, 128}", d);
        return -1;
    }
}

extern "C" int kern_cuda_feature_map_bwd_bf16(float *dx, float *dM, const float *dphi,
                                              const float *phi, const kern_bf16 *x, const float *M,
                                              int T, int H, int d, kern_cuda_stream s) {
    if (T <= 0 || H <= 0) return T == 0 && H > 0 ? 0 : -1;
    switch (d) {
    case 32: return fm_bwd_launch<1>(dx, dM, dphi, phi, x, M, T, H, s);
    case 64: return fm_bwd_launch<2>(dx, dM, dphi, phi, x, M, T, H, s);
    case 96: return fm_bwd_launch<3>(dx, dM, dphi, phi, x, M, T, H, s);
    case 128: return fm_bwd_launch<4>(dx, dM, dphi, phi, x, M, T, H, s);
    default:
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_feature_map_bwd_bf16: head size %d not in {32, 64, 96, 128}", d);
        return -1;
    }
}

/* ---- input and forget gates ---- */
/* x [T, D] bf16, w_i, w_f [D, H] fp32, b_i, b_f [H], itilde, log_f [T, H] fp32; H <= 32. */

#define GATE_CHUNK 256 /* tokens per backward block: one partial dw, db each */

/* One warp per (token, head): the two dot products over D, then logsigmoid = -softplus(-z). */
static __global__ void gates_fwd_kernel(float *__restrict__ itilde, float *__restrict__ log_f,
                                        const kern_bf16 *__restrict__ x,
                                        const float *__restrict__ w_i, const float *__restrict__ b_i,
                                        const float *__restrict__ w_f, const float *__restrict__ b_f,
                                        int T, int D, int H) {
    int lane = threadIdx.x & 31;
    size_t warps = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t th = blockIdx.x * (size_t)(blockDim.x / 32) + (threadIdx.x >> 5); th < (size_t)T * H;
         th += warps) {
        int h = (int)(th % H);
        const kern_bf16 *xr = x + (th / H) * (size_t)D;
        float si = 0.0f, sf = 0.0f;
        for (int i = lane; i < D; i += 32) {
            float xv = bf(xr[i]);
            si = fmaf(xv, w_i[(size_t)i * H + h], si);
            sf = fmaf(xv, w_f[(size_t)i * H + h], sf);
        }
        si = warp_sum(si), sf = warp_sum(sf);
        if (lane == 0) {
            float z = sf + b_f[h];
            itilde[th] = si + b_i[h];
            log_f[th] = fminf(z, 0.0f) - log1pf(expf(-fabsf(z)));
        }
    }
}

/* d log_f / dz = sigmoid(-z) = -expm1(log_f), as the CPU reference. */
static __device__ __forceinline__ float gate_gf(float dlogf, float logf) { return -dlogf * expm1f(logf); }

/* dx[t, i] += sum_h w_i[i, h] gi[t, h] + w_f[i, h] gf[t, h]: one warp per token. */
static __global__ void gates_bwd_dx_kernel(float *__restrict__ dx, const float *__restrict__ ditilde,
                                           const float *__restrict__ dlog_f,
                                           const float *__restrict__ log_f,
                                           const float *__restrict__ w_i,
                                           const float *__restrict__ w_f, int T, int D, int H) {
    int lane = threadIdx.x & 31;
    size_t warps = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t t = blockIdx.x * (size_t)(blockDim.x / 32) + (threadIdx.x >> 5); t < (size_t)T; t += warps) {
        float gi = 0.0f, gf = 0.0f;
        if (lane < H) gi = ditilde[t * H + lane], gf = gate_gf(dlog_f[t * H + lane], log_f[t * H + lane]);
        float *dxr = dx + t * D;
        for (int i0 = 0; i0 < D; i0 += 32) { /* uniform over the warp, for the shuffles */
            int i = i0 + lane;
            bool in = i < D;
            float s = 0.0f;
            for (int h = 0; h < H; h++) {
                float a = __shfl_sync(0xffffffffu, gi, h), b = __shfl_sync(0xffffffffu, gf, h);
                if (in) s = fmaf(w_i[(size_t)i * H + h], a, s), s = fmaf(w_f[(size_t)i * H + h], b, s);
            }
            if (in) dxr[i] += s;
        }
    }
}

/* Block (chunk, i-tile): tokens [chunk * GATE_CHUNK, +GATE_CHUNK), columns i0 + lane of x;
 * warp w owns heads w, w + 8, ... (<= 4 of them). Writes the chunk's partial [dw_i | dw_f |
 * db_i | db_f] (db from the i-tile 0 blocks). */
static __global__ void __launch_bounds__(256)
gates_bwd_dw_kernel(float *__restrict__ part, const float *__restrict__ ditilde,
                    const float *__restrict__ dlog_f, const float *__restrict__ log_f,
                    const kern_bf16 *__restrict__ x, int T, int D, int H) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, i = blockIdx.y * 32 + lane;
    int t_begin = blockIdx.x * GATE_CHUNK, t_end = min(T, t_begin + GATE_CHUNK);
    float ai[4] = {0, 0, 0, 0}, af[4] = {0, 0, 0, 0}, si[4] = {0, 0, 0, 0}, sf[4] = {0, 0, 0, 0};
    for (int t = t_begin; t < t_end; t++) {
        float xv = i < D ? bf(x[(size_t)t * D + i]) : 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int h = warp + 8 * k;
            if (h < H) {
                size_t th = (size_t)t * H + h;
                float gi = ditilde[th], gf = gate_gf(dlog_f[th], log_f[th]);
                ai[k] = fmaf(xv, gi, ai[k]), af[k] = fmaf(xv, gf, af[k]);
                si[k] += gi, sf[k] += gf;
            }
        }
    }
    size_t DH = (size_t)D * H;
    float *pc = part + (size_t)blockIdx.x * (2 * DH + 2 * H);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        int h = warp + 8 * k;
        if (h >= H) continue;
        if (i < D) pc[(size_t)i * H + h] = ai[k], pc[DH + (size_t)i * H + h] = af[k];
        if (blockIdx.y == 0 && lane == 0) pc[2 * DH + h] = si[k], pc[2 * DH + H + h] = sf[k];
    }
}

/* dw_i, dw_f, db_i, db_f += the chunks' partials, summed in chunk order (deterministic). */
static __global__ void gates_reduce_kernel(float *__restrict__ dw_i, float *__restrict__ dw_f,
                                           float *__restrict__ db_i, float *__restrict__ db_f,
                                           const float *__restrict__ part, int nch, size_t DH,
                                           int H) {
    size_t per = 2 * DH + 2 * (size_t)H;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < per;
         e += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < nch; c++) s += part[(size_t)c * per + e];
        if (e < DH) dw_i[e] += s;
        else if (e < 2 * DH) dw_f[e - DH] += s;
        else if (e < 2 * DH + H) db_i[e - 2 * DH] += s;
        else db_f[e - 2 * DH - H] += s;
    }
}

static int gates_check(int T, int D, int H) {
    if (T < 0 || D <= 0 || H <= 0 || H > 32) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_gates: bad shape T %d D %d H %d (H <= 32)", T, D, H);
        return -1;
    }
    return 0;
}

extern "C" int kern_cuda_gates_fwd_bf16(float *itilde, float *log_f, const kern_bf16 *x,
                                        const float *w_i, const float *b_i, const float *w_f,
                                        const float *b_f, int T, int D, int H, kern_cuda_stream s) {
    if (gates_check(T, D, H)) return -1;
    if (!T) return 0;
    size_t blocks = ((size_t)T * H + 7) / 8;
    if (blocks > 65536) blocks = 65536;
    gates_fwd_kernel<<<(unsigned)blocks, 256, 0, s>>>(itilde, log_f, x, w_i, b_i, w_f, b_f, T, D, H);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int kern_cuda_gates_bwd_bf16(float *dx, float *dw_i, float *db_i, float *dw_f,
                                        float *db_f, const float *ditilde, const float *dlog_f,
                                        const kern_bf16 *x, const float *log_f, const float *w_i,
                                        const float *w_f, int T, int D, int H,
                                        kern_cuda_stream s) {
    if (gates_check(T, D, H)) return -1;
    if (!T) return 0;
    size_t blocks = ((size_t)T + 7) / 8;
    if (blocks > 65536) blocks = 65536;
    gates_bwd_dx_kernel<<<(unsigned)blocks, 256, 0, s>>>(dx, ditilde, dlog_f, log_f, w_i, w_f, T, D, H);
    CUDA_TRY(cudaGetLastError());
    int nch = (T + GATE_CHUNK - 1) / GATE_CHUNK;
    size_t DH = (size_t)D * H, per = 2 * DH + 2 * (size_t)H;
    float *part;
    CUDA_TRY(cudaMallocAsync((void **)&part, sizeof(float) * per * nch, s));
    gates_bwd_dw_kernel<<<dim3(nch, (D + 31) / 32), 256, 0, s>>>(part, ditilde, dlog_f, log_f, x, T, D, H);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) {
        gates_reduce_kernel<<<(unsigned)((per + 255) / 256), 256, 0, s>>>(dw_i, dw_f, db_i, db_f, part, nch, DH, H);
        err = cudaGetLastError();
    }
    CUDA_TRY(cudaFreeAsync(part, s));
    CUDA_TRY(err);
    return 0;
}
