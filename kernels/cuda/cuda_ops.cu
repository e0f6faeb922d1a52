/* CUDA kernels of kernels/cuda/cuda_ops.h: the dense ops (RMSNorm, SwiGLU, cross-entropy, AdamW,
 * the cuBLAS linear). Every CUDA and cuBLAS call goes through a checking macro of
 * cuda_internal.cuh that records file, line and message; functions return 0 or -1. */
#include "cuda_internal.cuh"

char kern_cuda_error_text[512];

extern "C" const char *kern_cuda_last_error(void) { return kern_cuda_error_text; }

/* one warp per row; 8 bf16 (16 bytes) per load where the row allows it */
__global__ void rmsnorm_kernel(kern_bf16 *y, const kern_bf16 *x, const float *w, int n, int d, float eps) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= n) return;
    const kern_bf16 *xr = x + (size_t)row * d;
    float ss = 0;
    for (int i = lane; i < d; i += 32) {
        float v = bf(xr[i]);
        ss += v * v;
    }
    float r = rsqrtf(warp_sum(ss) / d + eps);
    for (int i = lane; i < d; i += 32) y[(size_t)row * d + i] = to_bf(bf(xr[i]) * r * w[i]);
}

extern "C" int kern_cuda_rmsnorm_bf16(kern_bf16 *y, const kern_bf16 *x, const float *w, int n, int d,
                                      float eps, kern_cuda_stream s) {
    int rows_per_block = 8;
    rmsnorm_kernel<<<(n + rows_per_block - 1) / rows_per_block, 32 * rows_per_block, 0, s>>>(y, x, w, n, d, eps);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

__global__ void swiglu_kernel(kern_bf16 *out, const kern_bf16 *gate, const kern_bf16 *up, size_t count) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (; i < count; i += stride) {
        float g = bf(gate[i]);
        out[i] = to_bf(g / (1.0f + __expf(-g)) * bf(up[i]));
    }
}

extern "C" int kern_cuda_swiglu_bf16(kern_bf16 *out, const kern_bf16 *gate, const kern_bf16 *up,
                                     size_t count, kern_cuda_stream s) {
    int blocks = (int)((count + 255) / 256);
    if (blocks > 132 * 16) blocks = 132 * 16;
    swiglu_kernel<<<blocks, 256, 0, s>>>(out, gate, up, count);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* one block of 512 threads per row: max, then sum of exp, then the gradient, fp32 throughout */
__global__ void cross_entropy_kernel(float *loss, kern_bf16 *dlogits, const kern_bf16 *logits,
                                     const int *targets, int V, float scale) {
    __shared__ float red[32];
    int row = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
    const kern_bf16 *l = logits + (size_t)row * V;
    float m = -INFINITY;
    for (int i = tid; i < V; i += blockDim.x) m = fmaxf(m, bf(l[i]));
    m = warp_max(m);
    if (lane == 0) red[warp] = m;
    __syncthreads();
    m = lane < warps ? red[lane] : -INFINITY;
    m = warp_max(m);
    __syncthreads();
    float sum = 0;
    for (int i = tid; i < V; i += blockDim.x) sum += __expf(bf(l[i]) - m);
    sum = warp_sum(sum);
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    sum = lane < warps ? red[lane] : 0;
    sum = warp_sum(sum);
    int target = targets[row];
    float inv = 1.0f / sum;
    for (int i = tid; i < V; i += blockDim.x) {
        float p = __expf(bf(l[i]) - m) * inv;
        float g = target < 0 ? 0.0f : (p - (i == target ? 1.0f : 0.0f)) * scale;
        dlogits[(size_t)row * V + i] = to_bf(g);
    }
    if (tid == 0) loss[row] = target < 0 ? 0.0f : logf(sum) + m - bf(l[target]);
}

extern "C" int kern_cuda_cross_entropy_bf16(float *loss, kern_bf16 *dlogits, const kern_bf16 *logits,
                                            const int *targets, int n, int V, float scale,
                                            kern_cuda_stream s) {
    cross_entropy_kernel<<<n, 512, 0, s>>>(loss, dlogits, logits, targets, V, scale);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                             float b2, float eps, float wd, float bc1, float bc2) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (; i < n; i += stride) {
        float pi = p[i] * (1.0f - lr * wd); /* decoupled decay first, as torch.optim.AdamW */
        float mi = b1 * m[i] + (1.0f - b1) * g[i];
        float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / sqrtf(bc2) + eps;
        p[i] = pi - (lr / bc1) * mi / denom;
    }
}

extern "C" int kern_cuda_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                               float beta2, float eps, float weight_decay, long step, kern_cuda_stream s) {
    float bc1 = 1.0f - powf(beta1, (float)step), bc2 = 1.0f - powf(beta2, (float)step);
    int blocks = (int)((n + 255) / 256);
    if (blocks > 132 * 16) blocks = 132 * 16;
    adamw_kernel<<<blocks, 256, 0, s>>>(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int kern_cuda_linear_bf16(kern_bf16 *c, const kern_bf16 *a, const kern_bf16 *b, int m, int n,
                                     int k, kern_cuda_stream s) {
    return kern_cuda_matmul(c, 0, a, b, m, n, k, 0, 1, 1.0f, 0.0f, s); /* one cuBLAS handle, layer_ops.cu */
}
