/* kernels/cuda/layer_ops.cu — the ops that join the big kernels into a model on the GPU: the
 * general cuBLAS product, casts and adds, RMSNorm from the fp32 residual stream and its backward,
 * SwiGLU's backward, the embedding and its backward, biases, the student's output gate and branch
 * mixing, token-major <-> head-major moves, the fp32 RoPE backward, the align MSE and the sums of
 * squares for clipping. Same maths as the CPU reference (kernels/train_ops_impl.h,
 * kernels/student_ops_impl.h); every reduction is a fixed-order sum (no atomics), so a run
 * repeats bit for bit. Checked end to end by tests/cuda/bench_cuda_model. */
#include "cuda_internal.cuh"

#include <stdlib.h>

#define THREADS 256
#define CHUNK 256    /* rows per partial sum of a weight gradient */
#define RMS_CHUNK 64 /* rows per block (and partial dw) of the RMSNorm backward */
#define OG_CHUNK 64  /* tokens per partial of the output gate's weight gradient */

static unsigned grid_for(size_t n) {
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b > 132 * 32 ? 132 * 32 : (b ? b : 1));
}
#define FOR_EACH(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static int bad(const char *what) {
    snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "%s", what);
    return -1;
}

/* ---- the general product ---- */

static cublasHandle_t blas_handle;

extern "C" int kern_cuda_matmul(void *c, int c_f32, const kern_bf16 *a, const kern_bf16 *b, int m, int n,
                                int k, int trans_a, int trans_b, float alpha, float beta, kern_cuda_stream s) {
    if (m <= 0 || n <= 0 || k <= 0) return m >= 0 && n >= 0 && k >= 0 ? 0 : bad("kern_cuda_matmul: negative size");
    if (!blas_handle) CUBLAS_TRY(cublasCreate(&blas_handle));
    CUBLAS_TRY(cublasSetStream(blas_handle, s));
    /* row-major C[m,n] is column-major C^T[n,m] = op(B)^T op(A)^T; a row-major [r,c] matrix is
     * the column-major [c,r] one, so op(X)^T needs OP_N exactly when X is not transposed */
    cublasOperation_t ob = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, oa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    int ldb = trans_b ? k : n, lda = trans_a ? m : k;
    CUBLAS_TRY(cublasGemmEx(blas_handle, ob, oa, n, m, k, &alpha, b, CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda,
                            &beta, c, c_f32 ? CUDA_R_32F : CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* ---- casts and adds ---- */

static __global__ void cast_kernel(kern_bf16 *dst, const float *src, size_t n) {
    FOR_EACH(i, n) dst[i] = to_bf(src[i]);
}
extern "C" int kern_cuda_cast_bf16(kern_bf16 *dst, const float *src, size_t n, kern_cuda_stream s) {
    if (!n) return 0;
    cast_kernel<<<grid_for(n), THREADS, 0, s>>>(dst, src, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

static __global__ void add_kernel(float *y, const float *x, const kern_bf16 *xb, size_t n) {
    FOR_EACH(i, n) y[i] += x ? x[i] : bf(xb[i]);
}
extern "C" int kern_cuda_add_f32(float *y, const float *x, size_t n, kern_cuda_stream s) {
    if (!n) return 0;
    add_kernel<<<grid_for(n), THREADS, 0, s>>>(y, x, NULL, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
extern "C" int kern_cuda_add_bf16(float *y, const kern_bf16 *x, size_t n, kern_cuda_stream s) {
    if (!n) return 0;
    add_kernel<<<grid_for(n), THREADS, 0, s>>>(y, NULL, x, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

static __global__ void scale_kernel(float *x, float a, size_t n) {
    FOR_EACH(i, n) x[i] *= a;
}
extern "C" int kern_cuda_scale_f32(float *x, float a, size_t n, kern_cuda_stream s) {
    if (!n) return 0;
    scale_kernel<<<grid_for(n), THREADS, 0, s>>>(x, a, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* Per-block partial sums in double, written in block order and summed on the host in that order:
 * the same result every run. */
#define SUM_BLOCKS 1024
static __global__ void sumsq_kernel(double *part, const float *x, size_t n) {
    __shared__ double red[THREADS];
    double acc = 0;
    FOR_EACH(i, n) acc += (double)x[i] * x[i];
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int o = THREADS / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (!threadIdx.x) part[blockIdx.x] = red[0];
}
extern "C" int kern_cuda_sumsq_f32(double *out, const float *x, size_t n, kern_cuda_stream s) {
    double *part, host[SUM_BLOCKS];
    *out = 0;
    if (!n) return 0;
    CUDA_TRY(cudaMallocAsync((void **)&part, sizeof(double) * SUM_BLOCKS, s));
    sumsq_kernel<<<SUM_BLOCKS, THREADS, 0, s>>>(part, x, n);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpyAsync(host, part, sizeof host, cudaMemcpyDeviceToHost, s);
    if (err == cudaSuccess) err = cudaStreamSynchronize(s);
    CUDA_TRY(cudaFreeAsync(part, s));
    CUDA_TRY(err);
    for (int i = 0; i < SUM_BLOCKS; i++) *out += host[i];
    return 0;
}

/* ---- RMSNorm from the fp32 stream ---- */

/* one warp per row: y = x rsqrt(mean(x^2) + eps) w, fp32 in, bf16 out */
static __global__ void rmsnorm_f32_kernel(kern_bf16 *y, const float *x, const float *w, int n, int d, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    const float *xr = x + (size_t)row * d;
    float ss = 0;
    for (int i = lane; i < d; i += 32) ss += xr[i] * xr[i];
    float r = rsqrtf(warp_sum(ss) / d + eps);
    for (int i = lane; i < d; i += 32) y[(size_t)row * d + i] = to_bf(xr[i] * r * w[i]);
}
extern "C" int kern_cuda_rmsnorm_f32(kern_bf16 *y, const float *x, const float *w, int n, int d, float eps,
                                     kern_cuda_stream s) {
    if (n <= 0) return n == 0 ? 0 : bad("kern_cuda_rmsnorm_f32: negative rows");
    rmsnorm_f32_kernel<<<(n + 7) / 8, 256, 0, s>>>(y, x, w, n, d, eps);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* dx (= or +=) r (dy w) - x r^3 mean(dy w x); one warp per row; the row's dw terms dy x r go to
 * a per-RMS_CHUNK partial, one block of 8 warps walking RMS_CHUNK rows */
static __global__ void rmsnorm_bwd_kernel(float *dx, float *part, const float *dy, const float *x, const float *w,
                                          int n, int d, float eps, int accumulate) {
    extern __shared__ float dws[]; /* [8][d] */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int i = threadIdx.x; i < 8 * d; i += blockDim.x) dws[i] = 0;
    __syncthreads();
    int first = blockIdx.x * RMS_CHUNK, last = min(n, first + RMS_CHUNK);
    for (int row = first + warp; row < last; row += 8) {
        const float *xr = x + (size_t)row * d, *g = dy + (size_t)row * d;
        float ss = 0, dot = 0;
        for (int i = lane; i < d; i += 32) {
            ss += xr[i] * xr[i];
            dot += g[i] * w[i] * xr[i];
        }
        float r = rsqrtf(warp_sum(ss) / d + eps);
        float c = warp_sum(dot) / d * r * r * r;
        float *o = dx + (size_t)row * d;
        for (int i = lane; i < d; i += 32) {
            float v = r * g[i] * w[i] - xr[i] * c;
            o[i] = accumulate ? o[i] + v : v;
            dws[warp * d + i] += g[i] * xr[i] * r;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0;
        for (int k = 0; k < 8; k++) acc += dws[k * d + i];
        part[(size_t)blockIdx.x * d + i] = acc;
    }
}
/* dst[i] += sum over chunks c in order of part[c * cols + i] */
static __global__ void chunk_sum_kernel(float *dst, const float *part, int chunks, size_t cols) {
    FOR_EACH(i, cols) {
        float acc = 0;
        for (int c = 0; c < chunks; c++) acc += part[(size_t)c * cols + i];
        dst[i] += acc;
    }
}
static int chunk_sum(float *dst, const float *part, int chunks, size_t cols, kern_cuda_stream s) {
    chunk_sum_kernel<<<grid_for(cols), THREADS, 0, s>>>(dst, part, chunks, cols);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int kern_cuda_rmsnorm_bwd_f32(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                         int n, int d, float eps, int accumulate, kern_cuda_stream s) {
    if (n <= 0) return n == 0 ? 0 : bad("kern_cuda_rmsnorm_bwd_f32: negative rows");
    size_t smem = sizeof(float) * 8 * d;
    if (d > 6144) return bad("kern_cuda_rmsnorm_bwd_f32: rows wider than 6144");
    if (smem > 48 * 1024)
        CUDA_TRY(cudaFuncSetAttribute(rmsnorm_bwd_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int chunks = (n + RMS_CHUNK - 1) / RMS_CHUNK;
    float *part;
    CUDA_TRY(cudaMallocAsync((void **)&part, sizeof(float) * chunks * d, s));
    rmsnorm_bwd_kernel<<<chunks, 256, smem, s>>>(dx, part, dy, x, w, n, d, eps, accumulate);
    cudaError_t err = cudaGetLastError();
    int rc = err == cudaSuccess && dw ? chunk_sum(dw, part, chunks, (size_t)d, s) : 0;
    CUDA_TRY(cudaFreeAsync(part, s));
    CUDA_TRY(err);
    return rc;
}

/* ---- SwiGLU backward ---- */

static __global__ void swiglu_bwd_kernel(kern_bf16 *dgate, kern_bf16 *dup, const float *dout, const kern_bf16 *gate,
                                         const kern_bf16 *up, size_t n) {
    FOR_EACH(i, n) {
        float g = bf(gate[i]), u = bf(up[i]), sg = 1.0f / (1.0f + expf(-g)), go = dout[i];
        dgate[i] = to_bf(go * u * sg * (1.0f + g * (1.0f - sg)));
        dup[i] = to_bf(go * g * sg);
    }
}
extern "C" int kern_cuda_swiglu_bwd(kern_bf16 *dgate, kern_bf16 *dup, const float *dout, const kern_bf16 *gate,
                                    const kern_bf16 *up, size_t n, kern_cuda_stream s) {
    if (!n) return 0;
    swiglu_bwd_kernel<<<grid_for(n), THREADS, 0, s>>>(dgate, dup, dout, gate, up, n);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- embedding ---- */

static __global__ void embed_kernel(float *x, const float *table, const int *ids, int n, int d) {
    FOR_EACH(i, (size_t)n * d) x[i] = table[(size_t)ids[i / d] * d + i % d];
}
extern "C" int kern_cuda_embedding_f32(float *x, const float *table, const int *ids, int n, int d,
                                       kern_cuda_stream s) {
    if (n <= 0) return n == 0 ? 0 : bad("kern_cuda_embedding_f32: negative rows");
    embed_kernel<<<grid_for((size_t)n * d), THREADS, 0, s>>>(x, table, ids, n, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* one block per distinct id: its rows summed in position order (deterministic) */
static __global__ void embed_bwd_kernel(float *dtable, const float *dx, const int *uniq, const int *starts,
                                        const int *order, int d) {
    int u = blockIdx.x, a = starts[u], b = starts[u + 1];
    float *dst = dtable + (size_t)uniq[u] * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float acc = 0;
        for (int j = a; j < b; j++) acc += dx[(size_t)order[j] * d + i];
        dst[i] += acc;
    }
}
extern "C" int kern_cuda_embedding_bwd_f32(float *dtable, const float *dx, const int *uniq, const int *starts,
                                           const int *order, int n_uniq, int d, kern_cuda_stream s) {
    if (n_uniq <= 0) return n_uniq == 0 ? 0 : bad("kern_cuda_embedding_bwd_f32: negative count");
    embed_bwd_kernel<<<n_uniq, THREADS, 0, s>>>(dtable, dx, uniq, starts, order, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- biases ---- */

static __global__ void bias_kernel(kern_bf16 *y, const float *b, int n, int cols) {
    FOR_EACH(i, (size_t)n * cols) y[i] = to_bf(bf(y[i]) + b[i % cols]);
}
extern "C" int kern_cuda_bias_bf16(kern_bf16 *y, const float *b, int n, int cols, kern_cuda_stream s) {
    if (n <= 0) return n == 0 ? 0 : bad("kern_cuda_bias_bf16: negative rows");
    bias_kernel<<<grid_for((size_t)n * cols), THREADS, 0, s>>>(y, b, n, cols);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
/* per CHUNK rows and column: a partial column sum */
static __global__ void colsum_kernel(float *part, const float *dy, int n, int cols) {
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    int first = blockIdx.x * CHUNK, last = min(n, first + CHUNK);
    float acc = 0;
    for (int r = first; r < last; r++) acc += dy[(size_t)r * cols + c];
    part[(size_t)blockIdx.x * cols + c] = acc;
}
/* narrow dy (the gates: a column a head): one block per column, each thread a fixed stride of rows,
 * then a fixed tree (deterministic) */
static __global__ void colsum_narrow_kernel(float *db, const float *dy, int n, int cols) {
    __shared__ float red[THREADS];
    int c = blockIdx.x;
    float acc = 0;
    for (int r = threadIdx.x; r < n; r += THREADS) acc += dy[(size_t)r * cols + c];
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int o = THREADS / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (!threadIdx.x) db[c] += red[0];
}
extern "C" int kern_cuda_bias_bwd_f32(float *db, const float *dy, int n, int cols, kern_cuda_stream s) {
    if (n <= 0) return n == 0 ? 0 : bad("kern_cuda_bias_bwd_f32: negative rows");
    if (cols <= 64) {
        colsum_narrow_kernel<<<cols, THREADS, 0, s>>>(db, dy, n, cols);
        CUDA_TRY(cudaGetLastError());
        return 0;
    }
    int chunks = (n + CHUNK - 1) / CHUNK;
    float *part;
    CUDA_TRY(cudaMallocAsync((void **)&part, sizeof(float) * chunks * cols, s));
    colsum_kernel<<<dim3(chunks, (cols + THREADS - 1) / THREADS), THREADS, 0, s>>>(part, dy, n, cols);
    cudaError_t err = cudaGetLastError();
    int rc = err == cudaSuccess ? chunk_sum(db, part, chunks, (size_t)cols, s) : 0;
    CUDA_TRY(cudaFreeAsync(part, s));
    CUDA_TRY(err);
    return rc;
}

/* ---- input and forget gates around their products (the products are cuBLAS's) ---- */

/* it = z_i + b_i, lf = logsigmoid(z_f + b_f) = -softplus(-(z_f + b_f)), in place */
static __global__ void gates_finish_kernel(float *it, float *lf, const float *bi, const float *bf_, int n, int H) {
    FOR_EACH(i, (size_t)n * H) {
        int h = (int)(i % H);
        it[i] += bi[h];
        float z = lf[i] + bf_[h];
        lf[i] = z >= 0 ? -log1pf(expf(-z)) : z - log1pf(expf(z));
    }
}
extern "C" int kern_cuda_gates_finish(float *itilde, float *log_f, const float *b_i, const float *b_f, int n, int H,
                                      kern_cuda_stream s) {
    if (n <= 0) return n == 0 ? 0 : bad("kern_cuda_gates_finish: negative rows");
    gates_finish_kernel<<<grid_for((size_t)n * H), THREADS, 0, s>>>(itilde, log_f, b_i, b_f, n, H);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
/* d z_f = d log_f (1 - f) = d log_f (-expm1(log_f)); bf16 copies of d z_i, d z_f for the products */
static __global__ void gates_dz_kernel(kern_bf16 *dzi_b, kern_bf16 *dzf_b, float *dzf, const float *dit,
                                       const float *dlf, const float *lf, size_t n) {
    FOR_EACH(i, n) {
        float z = dlf[i] * -expm1f(lf[i]);
        dzf[i] = z;
        dzf_b[i] = to_bf(z);
        dzi_b[i] = to_bf(dit[i]);
    }
}
extern "C" int kern_cuda_gates_dz(kern_bf16 *dzi_b, kern_bf16 *dzf_b, float *dzf, const float *ditilde,
                                  const float *dlog_f, const float *log_f, int n, int H, kern_cuda_stream s) {
    size_t count = (size_t)n * H;
    if (!count) return 0;
    gates_dz_kernel<<<grid_for(count), THREADS, 0, s>>>(dzi_b, dzf_b, dzf, ditilde, dlog_f, log_f, count);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- output gate and mixing ---- */

/* one warp per (token, head): o = sigmoid(w_o[h] . [q; k; v] + b_o[h]) */
static __global__ void ogate_kernel(float *o, const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                                    const float *w, const float *b, int n, int H, int G, int d) {
    size_t item = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (item >= (size_t)n * H) return;
    int t = (int)(item / H), h = (int)(item % H), g = h / (H / G);
    const kern_bf16 *qr = q + ((size_t)t * H + h) * d, *kr = k + ((size_t)t * G + g) * d, *vr = v + ((size_t)t * G + g) * d;
    const float *wr = w + (size_t)h * 3 * d;
    float acc = 0;
    for (int i = lane; i < d; i += 32) acc += wr[i] * bf(qr[i]) + wr[d + i] * bf(kr[i]) + wr[2 * d + i] * bf(vr[i]);
    acc = warp_sum(acc) + b[h];
    if (!lane) o[item] = 1.0f / (1.0f + expf(-acc));
}
extern "C" int kern_cuda_output_gate_fwd(float *o, const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                                         const float *w, const float *b, int n, int H, int G, int d,
                                         kern_cuda_stream s) {
    if (n <= 0 || G <= 0 || H % G) return n == 0 ? 0 : bad("kern_cuda_output_gate_fwd: bad shape");
    size_t items = (size_t)n * H;
    ogate_kernel<<<(unsigned)((items + 7) / 8), 256, 0, s>>>(o, q, k, v, w, b, n, H, G, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* dz = d_o o (1 - o); dq[t,h] += dz w_q[h]; dk[t,g], dv[t,g] += sum over the group's heads */
static __global__ void ogate_bwd_x_kernel(float *dz, float *dq, float *dk, float *dv, const float *d_o,
                                          const float *o, const float *w, int n, int H, int G, int d) {
    int group = H / G;
    FOR_EACH(i, (size_t)n * G * d) {
        int c = (int)(i % d);
        size_t tg = i / d;
        int g = (int)(tg % G);
        size_t t = tg / G;
        float ak = 0, av = 0;
        for (int j = 0; j < group; j++) {
            int h = g * group + j;
            float oo = o[t * H + h], z = d_o[t * H + h] * oo * (1.0f - oo);
            const float *wr = w + (size_t)h * 3 * d;
            dq[(t * H + h) * d + c] += z * wr[c];
            ak += z * wr[d + c];
            av += z * wr[2 * d + c];
            if (c == 0) dz[t * H + h] = z;
        }
        dk[i] += ak;
        dv[i] += av;
    }
}
/* per OG_CHUNK tokens and head: partial dw[h, 0:3d] = sum dz [q; k; v], partial db[h] = sum dz */
static __global__ void ogate_bwd_w_kernel(float *part, const float *dz, const kern_bf16 *q, const kern_bf16 *k,
                                          const kern_bf16 *v, int n, int H, int G, int d) {
    int h = blockIdx.y, g = h / (H / G), per = 3 * d + 1;
    int first = blockIdx.x * OG_CHUNK, last = min(n, first + OG_CHUNK);
    float *out = part + ((size_t)blockIdx.x * H + h) * per;
    for (int c = threadIdx.x; c < per; c += blockDim.x) {
        float acc = 0;
        for (int t = first; t < last; t++) {
            float z = dz[(size_t)t * H + h], x;
            if (c < d) x = bf(q[((size_t)t * H + h) * d + c]);
            else if (c < 2 * d) x = bf(k[((size_t)t * G + g) * d + c - d]);
            else if (c < 3 * d) x = bf(v[((size_t)t * G + g) * d + c - 2 * d]);
            else x = 1.0f;
            acc += z * x;
        }
        out[c] = acc;
    }
}
/* w [H, 3d] and b [H] += the partials [chunks, H, 3d + 1] */
static __global__ void ogate_sum_kernel(float *dw, float *db, const float *part, int chunks, int H, int d) {
    int per = 3 * d + 1;
    FOR_EACH(i, (size_t)H * per) {
        float acc = 0;
        for (int c = 0; c < chunks; c++) acc += part[(size_t)c * H * per + i];
        int h = (int)(i / per), j = (int)(i % per);
        if (j < 3 * d) dw[(size_t)h * 3 * d + j] += acc;
        else db[h] += acc;
    }
}
extern "C" int kern_cuda_output_gate_bwd(float *dq, float *dk, float *dv, float *dw, float *db, const float *d_o,
                                         const float *o, const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                                         const float *w, int n, int H, int G, int d, kern_cuda_stream s) {
    if (n <= 0 || G <= 0 || H % G) return n == 0 ? 0 : bad("kern_cuda_output_gate_bwd: bad shape");
    int chunks = (n + OG_CHUNK - 1) / OG_CHUNK;
    float *dz, *part;
    size_t per = (size_t)H * (3 * d + 1);
    CUDA_TRY(cudaMallocAsync((void **)&dz, sizeof(float) * ((size_t)n * H + per * chunks), s));
    part = dz + (size_t)n * H;
    ogate_bwd_x_kernel<<<grid_for((size_t)n * G * d), THREADS, 0, s>>>(dz, dq, dk, dv, d_o, o, w, n, H, G, d);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) {
        ogate_bwd_w_kernel<<<dim3(chunks, H), 64 * ((3 * d + 64) / 64), 0, s>>>(part, dz, q, k, v, n, H, G, d);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess) {
        ogate_sum_kernel<<<grid_for(per), THREADS, 0, s>>>(dw, db, part, chunks, H, d);
        err = cudaGetLastError();
    }
    CUDA_TRY(cudaFreeAsync(dz, s));
    CUDA_TRY(err);
    return 0;
}

static __global__ void mix_kernel(kern_bf16 *y, const float *o, const float *hm, const kern_bf16 *yswa, int d,
                                  size_t n) {
    FOR_EACH(i, n) {
        float oo = o[i / d];
        y[i] = to_bf(oo * hm[i] + (1.0f - oo) * bf(yswa[i]));
    }
}
extern "C" int kern_cuda_mix_fwd(kern_bf16 *yhat, const float *o, const float *hm, const kern_bf16 *yswa, int n,
                                 int H, int d, kern_cuda_stream s) {
    size_t count = (size_t)n * H * d;
    if (!count) return 0;
    mix_kernel<<<grid_for(count), THREADS, 0, s>>>(yhat, o, hm, yswa, d, count);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
/* one warp per (token, head) */
static __global__ void mix_bwd_kernel(float *d_o, float *dhm, kern_bf16 *dyswa, const float *dy, const float *o,
                                      const float *hm, const kern_bf16 *yswa, size_t items, int d) {
    size_t item = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (item >= items) return;
    float oo = o[item], acc = 0;
    size_t base = item * d;
    for (int i = lane; i < d; i += 32) {
        float g = dy[base + i], sw = bf(yswa[base + i]);
        acc += g * (hm[base + i] - sw);
        dhm[base + i] = oo * g;
        dyswa[base + i] = to_bf((1.0f - oo) * g);
    }
    acc = warp_sum(acc);
    if (!lane) d_o[item] = acc;
}
extern "C" int kern_cuda_mix_bwd(float *d_o, float *dhm, kern_bf16 *dyswa, const float *dyhat, const float *o,
                                 const float *hm, const kern_bf16 *yswa, int n, int H, int d, kern_cuda_stream s) {
    size_t items = (size_t)n * H;
    if (!items) return 0;
    mix_bwd_kernel<<<(unsigned)((items + 7) / 8), 256, 0, s>>>(d_o, dhm, dyswa, dyhat, o, hm, yswa, items, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- token-major <-> head-major ---- */

/* dst [B*H, T, d] fp32 from src [B*T, G*d] (fp32 or bf16), kv head h / (H/G) for query head h;
 * four elements per thread (d % 4 == 0, checked by the callers' shapes) */
static __global__ void to_heads_kernel(float *dst, const float *src, const kern_bf16 *srcb, int B, int T, int H,
                                       int G, int d) {
    int group = H / G, q = d / 4;
    FOR_EACH(i, (size_t)B * H * T * q) {
        int c = (int)(i % q) * 4;
        size_t r = i / q;
        int t = (int)(r % T);
        size_t bh = r / T;
        int h = (int)(bh % H), b = (int)(bh / H);
        size_t from = (((size_t)b * T + t) * G + h / group) * d + c;
        float4 v;
        if (src) v = *(const float4 *)(src + from);
        else {
            uint2 u = *(const uint2 *)(srcb + from);
            v = make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                            __uint_as_float(u.y & 0xffff0000u));
        }
        *(float4 *)(dst + r * d + c) = v;
    }
}
static __global__ void gates_to_heads_kernel(float *dst, const float *src, int B, int T, int H, int G) {
    FOR_EACH(i, (size_t)B * H * T) {
        int t = (int)(i % T);
        size_t bh = i / T;
        int h = (int)(bh % H), b = (int)(bh / H);
        dst[i] = src[((size_t)b * T + t) * G + h / (H / G)];
    }
}
static int heads_shape(int d) {
    if (d % 4) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "head moves: d %d is not a multiple of 4", d);
        return -1;
    }
    return 0;
}
extern "C" int kern_cuda_to_heads_f32(float *dst, const float *src, int B, int T, int H, int G, int d,
                                      kern_cuda_stream s) {
    size_t n = (size_t)B * H * T * d;
    if (!n) return 0;
    if (d == 1) { /* the gates: a transpose per sequence */
        gates_to_heads_kernel<<<grid_for(n), THREADS, 0, s>>>(dst, src, B, T, H, G);
        CUDA_TRY(cudaGetLastError());
        return 0;
    }
    if (heads_shape(d)) return -1;
    to_heads_kernel<<<grid_for(n / 4), THREADS, 0, s>>>(dst, src, NULL, B, T, H, G, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
extern "C" int kern_cuda_to_heads_bf16(float *dst, const kern_bf16 *src, int B, int T, int H, int G, int d,
                                       kern_cuda_stream s) {
    size_t n = (size_t)B * H * T * d;
    if (!n) return 0;
    if (heads_shape(d)) return -1;
    to_heads_kernel<<<grid_for(n / 4), THREADS, 0, s>>>(dst, NULL, src, B, T, H, G, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
/* dst [B*T, G*d] (= or +=) the sum over the group's query heads of src [B*H, T, d]; d = 1 (the
 * gates) one element per thread, else four */
static __global__ void from_heads_kernel(float *dst, const float *src, int B, int T, int H, int G, int d,
                                         int accumulate) {
    int group = H / G, w = d == 1 ? 1 : 4, q = d / w;
    FOR_EACH(i, (size_t)B * T * G * q) {
        int c = (int)(i % q) * w;
        size_t r = i / q;
        int g = (int)(r % G);
        size_t bt = r / G;
        int t = (int)(bt % T), b = (int)(bt / T);
        float4 acc = make_float4(0, 0, 0, 0);
        for (int j = 0; j < group; j++) {
            const float *p = src + (((size_t)b * H + g * group + j) * T + t) * d + c;
            if (w == 1) acc.x += *p;
            else {
                float4 v = *(const float4 *)p;
                acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
            }
        }
        float *o = dst + r * d + c;
        if (w == 1) *o = accumulate ? *o + acc.x : acc.x;
        else {
            if (accumulate) {
                float4 old = *(float4 *)o;
                acc.x += old.x, acc.y += old.y, acc.z += old.z, acc.w += old.w;
            }
            *(float4 *)o = acc;
        }
    }
}
extern "C" int kern_cuda_from_heads_f32(float *dst, const float *src, int B, int T, int H, int G, int d,
                                        int accumulate, kern_cuda_stream s) {
    size_t n = (size_t)B * T * G * d;
    if (!n) return 0;
    if (d != 1 && heads_shape(d)) return -1;
    from_heads_kernel<<<grid_for(d == 1 ? n : n / 4), THREADS, 0, s>>>(dst, src, B, T, H, G, d, accumulate);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
/* token-major [n, H*d] bf16 from [n, G*d]: each query head gets its kv head's columns */
static __global__ void repeat_heads_kernel(kern_bf16 *dst, const kern_bf16 *src, int n, int H, int G, int d) {
    int group = H / G;
    FOR_EACH(i, (size_t)n * H * d) {
        int c = (int)(i % d);
        size_t th = i / d;
        int h = (int)(th % H);
        size_t t = th / H;
        dst[i] = src[(t * G + h / group) * d + c];
    }
}
extern "C" int kern_cuda_repeat_heads_bf16(kern_bf16 *dst, const kern_bf16 *src, int n, int H, int G, int d,
                                           kern_cuda_stream s) {
    size_t count = (size_t)n * H * d;
    if (!count) return 0;
    repeat_heads_kernel<<<grid_for(count), THREADS, 0, s>>>(dst, src, n, H, G, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
/* dst [n, G*d] += the sum over each group's heads of src [n, H*d] */
static __global__ void sum_heads_kernel(float *dst, const float *src, int n, int H, int G, int d) {
    int group = H / G;
    FOR_EACH(i, (size_t)n * G * d) {
        int c = (int)(i % d);
        size_t tg = i / d;
        int g = (int)(tg % G);
        size_t t = tg / G;
        float acc = 0;
        for (int j = 0; j < group; j++) acc += src[(t * H + g * group + j) * d + c];
        dst[i] += acc;
    }
}
extern "C" int kern_cuda_sum_heads_f32(float *dst, const float *src, int n, int H, int G, int d,
                                       kern_cuda_stream s) {
    size_t count = (size_t)n * G * d;
    if (!count) return 0;
    sum_heads_kernel<<<grid_for(count), THREADS, 0, s>>>(dst, src, n, H, G, d);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- RoPE backward in fp32, B sequences of T tokens (token r at table row r % T) ---- */

static __global__ void rope_bwd_f32_kernel(float *x, size_t rows, int heads, int half, int T, const float *ct,
                                           const float *st) {
    FOR_EACH(idx, rows * heads * half) {
        int i = (int)(idx % half);
        size_t th = idx / half;
        int t = (int)((th / heads) % T);
        float c = ct[(size_t)t * half + i], si = -st[(size_t)t * half + i];
        float *v = x + th * (size_t)(2 * half);
        float a = v[i], b = v[i + half];
        v[i] = a * c - b * si;
        v[i + half] = b * c + a * si;
    }
}
extern "C" int kern_cuda_rope_bwd_f32(float *dx, int n, int heads, int head_dim, int T, const float *cos_table,
                                      const float *sin_table, kern_cuda_stream s) {
    if (head_dim % 2 || T <= 0) return bad("kern_cuda_rope_bwd_f32: bad shape");
    size_t count = (size_t)n * heads * (head_dim / 2);
    if (!count) return 0;
    rope_bwd_f32_kernel<<<grid_for(count), THREADS, 0, s>>>(dx, (size_t)n, heads, head_dim / 2, T, cos_table,
                                                             sin_table);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- align's MSE ---- */

static __global__ void mse_kernel(double *part, float *dy, const kern_bf16 *yhat, const kern_bf16 *y, size_t n,
                                  float grad_scale) {
    __shared__ double red[THREADS];
    double acc = 0;
    FOR_EACH(i, n) {
        float diff = bf(yhat[i]) - bf(y[i]);
        acc += (double)diff * diff;
        dy[i] = grad_scale * diff;
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int o = THREADS / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (!threadIdx.x) part[blockIdx.x] = red[0];
}
extern "C" int kern_cuda_mse_bf16(double *loss, float *dy, const kern_bf16 *yhat, const kern_bf16 *y, size_t n,
                                  float grad_scale, kern_cuda_stream s) {
    double *part, host[SUM_BLOCKS];
    *loss = 0;
    if (!n) return 0;
    CUDA_TRY(cudaMallocAsync((void **)&part, sizeof(double) * SUM_BLOCKS, s));
    mse_kernel<<<SUM_BLOCKS, THREADS, 0, s>>>(part, dy, yhat, y, n, grad_scale);
    cudaError_t err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpyAsync(host, part, sizeof host, cudaMemcpyDeviceToHost, s);
    if (err == cudaSuccess) err = cudaStreamSynchronize(s);
    CUDA_TRY(cudaFreeAsync(part, s));
    CUDA_TRY(err);
    for (int i = 0; i < SUM_BLOCKS; i++) *loss += host[i];
    *loss /= (double)n;
    return 0;
}

/* ---- device memory and streams, for the C code that drives the kernels ---- */

extern "C" void *kern_cuda_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "cudaMalloc of %.2f GiB failed: %s (%.2f of %.2f GiB free)", bytes / 1073741824.0,
                 cudaGetErrorString(err), free_b / 1073741824.0, total_b / 1073741824.0);
        return NULL;
    }
    return p;
}
extern "C" void kern_cuda_free(void *p) {
    if (p) cudaFree(p);
}
extern "C" int kern_cuda_copy(void *dst, const void *src, size_t bytes, int kind, kern_cuda_stream s) {
    static const cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice};
    if (kind < 0 || kind > 2) return bad("kern_cuda_copy: bad direction");
    if (!bytes) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kinds[kind], s));
    if (kind == 1) CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}
extern "C" int kern_cuda_zero(void *p, size_t bytes, kern_cuda_stream s) {
    if (!bytes) return 0;
    CUDA_TRY(cudaMemsetAsync(p, 0, bytes, s));
    return 0;
}
extern "C" int kern_cuda_sync(kern_cuda_stream s) {
    CUDA_TRY(cudaStreamSynchronize(s));
    return 0;
}
extern "C" int kern_cuda_use_device(int device, char *name, size_t cap, double *mem_gib) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "no usable CUDA device (%s)",
                 cudaGetErrorString(err));
        return -1;
    }
    if (device < 0 || device >= count) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "CUDA device %d does not exist (%d found)",
                 device, count);
        return -1;
    }
    CUDA_TRY(cudaSetDevice(device));
    cudaDeviceProp p;
    CUDA_TRY(cudaGetDeviceProperties(&p, device));
    if (name) snprintf(name, cap, "%s", p.name);
    if (mem_gib) *mem_gib = p.totalGlobalMem / 1073741824.0;
    return 0;
}
extern "C" int kern_cuda_device_memory(double *used_gib, double *total_gib) {
    size_t f = 0, t = 0;
    CUDA_TRY(cudaMemGetInfo(&f, &t));
    *used_gib = (t - f) / 1073741824.0;
    *total_gib = t / 1073741824.0;
    return 0;
}
