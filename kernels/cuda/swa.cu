/* Sliding-window + sink attention on the GPU (kernels/cuda/cuda_ops.h): the launchers, the device
 * primitives and the __global__ wrappers around the bodies of swa_body.cuh, which
 * tests/cuda/emu_cuda_swa.cu also runs on the host. */
#include "cuda_internal.cuh"

#include <stdint.h>
#include <string.h>

#define SWA_FN static __device__ __forceinline__
#define SWA_UNROLL _Pragma("unroll")

static __device__ __forceinline__ void swa_sync(void) { __syncthreads(); }
static __device__ __forceinline__ float swa_shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
static __device__ __forceinline__ void swa_mma(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
static __device__ __forceinline__ float swa_exp(float x) { return __expf(x); }
static __device__ __forceinline__ float swa_log(float x) { return logf(x); }
static __device__ __forceinline__ float swa_bf(kern_bf16 h) { return bf(h); }
static __device__ __forceinline__ kern_bf16 swa_to_bf(float x) { return to_bf(x); }
static __device__ __forceinline__ uint32_t swa_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x = lo, in the low half */
    return *reinterpret_cast<uint32_t *>(&v);
}
static __device__ __forceinline__ uint32_t swa_ld32(const kern_bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }
static __device__ __forceinline__ void swa_st32(kern_bf16 *p, uint32_t w) { *reinterpret_cast<uint32_t *>(p) = w; }
static __device__ __forceinline__ void swa_ld16(uint32_t w[4], const kern_bf16 *p) {
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    w[0] = u.x, w[1] = u.y, w[2] = u.z, w[3] = u.w;
}
static __device__ __forceinline__ void swa_st16(kern_bf16 *p, const uint32_t w[4]) {
    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

static __device__ __forceinline__ void swa_ldsm(uint32_t r[4], const kern_bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((uint32_t)__cvta_generic_to_shared(p)));
}
static __device__ __forceinline__ void swa_ldsm_t(uint32_t r[4], const kern_bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((uint32_t)__cvta_generic_to_shared(p)));
}

#include "swa_body.cuh"

extern __shared__ __align__(16) unsigned char swa_smem_buf[];

static __device__ __forceinline__ swa_ctx swa_here(void) {
    swa_ctx c = {(int)threadIdx.x, (int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, swa_smem_buf};
    return c;
}
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_fwd_mma_kernel(swa_params p) { swa_fwd_mma<D>(p, swa_here()); }
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_dq_mma_kernel(swa_params p) { swa_dq_mma<D>(p, swa_here()); }
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_dkdv_mma_kernel(swa_params p) { swa_dkdv_mma<D>(p, swa_here()); }
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_delta_kernel(swa_params p) { swa_delta<D>(p, swa_here()); }
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_fwd_simple_kernel(swa_params p) { swa_fwd_simple<D>(p, swa_here()); }
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_dq_simple_kernel(swa_params p) { swa_dq_simple<D>(p, swa_here()); }
template <int D> __global__ void __launch_bounds__(SWA_THREADS) swa_dkdv_simple_kernel(swa_params p) { swa_dkdv_simple<D>(p, swa_here()); }

static bool swa_misaligned(const void *p, uintptr_t a) { return ((uintptr_t)p & (a - 1)) != 0; }

/* Checks the shape and fills p (W, S clamped to T: W >= T is full causal attention). Returns 1 when
 * there is nothing to do, -1 with the message set on a bad argument. */
static int swa_setup(const char *fn, swa_params *p, int B, int T, int H, int G, int d, int W, int S,
                     const void *const *bf16_ptrs, int n_bf16, const void *const *f32_ptrs, int n_f32) {
    const char *why = NULL;
    if (d != 64 && d != 128) why = "unsupported head dim (64 or 128)";
    else if (B < 0 || T < 0 || H < 1 || G < 1 || H % G != 0) why = "bad shape (B, T >= 0, H, G >= 1, H % G == 0)";
    else if (W < 1 || S < 0) why = "bad window (W >= 1, S >= 0)";
    else if (H > 65535 || B > 65535 || G > 65535) why = "H, G or B above the grid limit 65535";
    else if (((size_t)T + SWA_BT - 1) / SWA_BT * G * B > 0x7fffffffu) why = "too many key tiles for one grid";
    for (int i = 0; !why && i < n_bf16; i++)
        if (swa_misaligned(bf16_ptrs[i], 16)) why = "bf16 tensors must be 16-byte aligned";
    for (int i = 0; !why && i < n_f32; i++)
        if (swa_misaligned(f32_ptrs[i], 4)) why = "fp32 tensors must be 4-byte aligned";
    if (why) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "%s: %s (B %d T %d H %d G %d d %d W %d S %d)", fn, why, B, T, H, G, d, W, S);
        return -1;
    }
    memset(p, 0, sizeof *p);
    p->B = B, p->T = T, p->H = H, p->G = G;
    p->W = W < T ? W : (T > 0 ? T : 1);
    p->S = S < T ? S : T;
    p->scale = (float)(1.0 / sqrt((double)d));
    return B == 0 || T == 0 ? 1 : 0;
}

/* dynamic shared memory above 48 KiB needs the opt-in, per kernel */
template <typename K> static int swa_launch(K kernel, dim3 grid, size_t smem, kern_cuda_stream s, const swa_params &p) {
    if (smem > 0) CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    kernel<<<grid, SWA_THREADS, smem, s>>>(p);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

static unsigned swa_tiles_of(int T) { return (unsigned)((T + SWA_BT - 1) / SWA_BT); }
static unsigned swa_quads_of(size_t rows) { return (unsigned)((rows + 3) / 4); }

template <int D> static int swa_fwd_run(const swa_params &p, bool simple, kern_cuda_stream s) {
    if (simple) return swa_launch(swa_fwd_simple_kernel<D>, dim3(swa_quads_of(p.T), p.H, p.B), 0, s, p);
    return swa_launch(swa_fwd_mma_kernel<D>, dim3(swa_tiles_of(p.T), p.H, p.B), swa_smem<D>::fwd, s, p);
}

template <int D> static int swa_bwd_run(const swa_params &p, bool simple, kern_cuda_stream s) {
    if (swa_launch(swa_delta_kernel<D>, dim3(swa_quads_of((size_t)p.B * p.T * p.H)), 0, s, p)) return -1;
    if (simple) {
        if (swa_launch(swa_dq_simple_kernel<D>, dim3(swa_quads_of(p.T), p.H, p.B), 0, s, p)) return -1;
        return swa_launch(swa_dkdv_simple_kernel<D>, dim3(swa_quads_of(p.T), p.G, p.B), 0, s, p);
    }
    if (swa_launch(swa_dq_mma_kernel<D>, dim3(swa_tiles_of(p.T), p.H, p.B), swa_smem<D>::dq, s, p)) return -1;
    return swa_launch(swa_dkdv_mma_kernel<D>, dim3(swa_tiles_of(p.T) * p.G * p.B), swa_smem<D>::dkdv, s, p);
}

static int swa_fwd(const char *fn, bool simple, kern_bf16 *out, float *lse, const kern_bf16 *q, const kern_bf16 *k,
                   const kern_bf16 *v, int B, int T, int H, int G, int d, int W, int S, kern_cuda_stream s) {
    swa_params p;
    const void *bp[] = {out, q, k, v}, *fp[] = {lse};
    int rc = swa_setup(fn, &p, B, T, H, G, d, W, S, bp, 4, fp, 1);
    if (rc) return rc < 0 ? -1 : 0;
    p.out = out, p.lse_out = lse, p.q = q, p.k = k, p.v = v;
    return d == 64 ? swa_fwd_run<64>(p, simple, s) : swa_fwd_run<128>(p, simple, s);
}

static int swa_bwd(const char *fn, bool simple, kern_bf16 *dq, kern_bf16 *dk, kern_bf16 *dv, const kern_bf16 *dout,
                   const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v, const kern_bf16 *out, const float *lse,
                   int B, int T, int H, int G, int d, int W, int S, kern_cuda_stream s) {
    swa_params p;
    const void *bp[] = {dq, dk, dv, dout, q, k, v, out}, *fp[] = {lse};
    int rc = swa_setup(fn, &p, B, T, H, G, d, W, S, bp, 8, fp, 1);
    if (rc) return rc < 0 ? -1 : 0;
    p.dq = dq, p.dk = dk, p.dv = dv, p.dout = dout, p.q = q, p.k = k, p.v = v, p.o = out, p.lse = lse;
    CUDA_TRY(cudaMallocAsync((void **)&p.delta, sizeof(float) * (size_t)B * T * H, s));
    rc = d == 64 ? swa_bwd_run<64>(p, simple, s) : swa_bwd_run<128>(p, simple, s);
    cudaError_t freed = cudaFreeAsync(p.delta, s);
    if (rc) return -1; /* the launch's message, not the free's */
    CUDA_TRY(freed);
    return 0;
}

extern "C" int kern_cuda_swa_fwd_bf16(kern_bf16 *out, float *lse, const kern_bf16 *q, const kern_bf16 *k,
                                      const kern_bf16 *v, int B, int T, int H, int G, int d, int W, int S,
                                      kern_cuda_stream s) {
    return swa_fwd("kern_cuda_swa_fwd_bf16", false, out, lse, q, k, v, B, T, H, G, d, W, S, s);
}

extern "C" int kern_cuda_swa_bwd_bf16(kern_bf16 *dq, kern_bf16 *dk, kern_bf16 *dv, const kern_bf16 *dout,
                                      const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                                      const kern_bf16 *out, const float *lse, int B, int T, int H, int G, int d,
                                      int W, int S, kern_cuda_stream s) {
    return swa_bwd("kern_cuda_swa_bwd_bf16", false, dq, dk, dv, dout, q, k, v, out, lse, B, T, H, G, d, W, S, s);
}

extern "C" int kern_cuda_swa_fwd_simple_bf16(kern_bf16 *out, float *lse, const kern_bf16 *q, const kern_bf16 *k,
                                             const kern_bf16 *v, int B, int T, int H, int G, int d, int W, int S,
                                             kern_cuda_stream s) {
    return swa_fwd("kern_cuda_swa_fwd_simple_bf16", true, out, lse, q, k, v, B, T, H, G, d, W, S, s);
}

extern "C" int kern_cuda_swa_bwd_simple_bf16(kern_bf16 *dq, kern_bf16 *dk, kern_bf16 *dv, const kern_bf16 *dout,
                                             const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                                             const kern_bf16 *out, const float *lse, int B, int T, int H, int G,
                                             int d, int W, int S, kern_cuda_stream s) {
    return swa_bwd("kern_cuda_swa_bwd_simple_bf16", true, dq, dk, dv, dout, q, k, v, out, lse, B, T, H, G, d, W, S,
                   s);
}
