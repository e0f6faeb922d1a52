/* The chunkwise mLSTM's CUDA kernels (kernels/cuda/mlstm.cu: both forwards and both backwards,
 * the tensor-core tilings included) on the host, without a GPU or a CUDA toolkit. mlstm.cu is
 * compiled here by the host C++ compiler with the CUDA built-ins it uses defined below: every
 * CUDA thread a fiber (emu_fibers.h), __syncthreads a barrier of the block, shuffles exchanges
 * through the warp, wmma fragments and mma.sync m16n8k8 (TF32 operands read as the tensor core
 * reads them: the low 13 bits ignored) warp-collective products with the PTX fragment layouts,
 * a block's dynamic shared memory a heap block of exactly the bytes the launch asked for, filled
 * with NaN (so an out-of-range access is an ASan error, an unwritten read a failed check). The
 * launches are mlstm.cu's own host code (mlstm_launch), so the kernels, grids and shared-memory
 * sizes are the product's. Then mlstm_cases.h's checks, on fewer and shorter shapes than
 * bench_cuda_mlstm runs on the GPU. What this cannot see: timing, races hidden by the turn-taking,
 * the tensor cores' own accumulation order, register limits. CI runs it as a ctest, also under
 * ASan+UBSan.
 *     build/tests/emu_cuda_mlstm [seed] */
#include "bench_host.h"
#include "emu_fibers.h"
#include "kernels/cuda/cuda_ops.h"

#include <algorithm>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>
#include <vector>

/* ---- the CUDA that kernels/cuda/mlstm.cu uses ---- */

#define XD_CUDA_EMU 1 /* in mlstm.cu and cuda_internal.cuh: the emulated build */
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static /* blocks run one after another: one copy is the block's */

struct emu_uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static dim3 emu_grid_dim, emu_block_dim;
static float *emu_smem; /* the running block's dynamic shared memory */
#define threadIdx (emu_uint3{(unsigned)emu_tid_now, 0u, 0u})
#define blockIdx (emu_uint3{(unsigned)emu_bx, (unsigned)emu_by, (unsigned)emu_bz})
#define gridDim emu_grid_dim
#define blockDim emu_block_dim
#define MLSTM_DYNAMIC_SMEM(name) float *const name = emu_smem

static inline void __syncthreads(void) { emu_syncthreads(); }
static inline float __shfl_xor_sync(unsigned, float v, int o) { return emu_shfl(v, emu_lane ^ o); }
static inline float __shfl_down_sync(unsigned, float v, int d) { /* past the warp: the lane's own */
    return emu_shfl(v, emu_lane + d < 32 ? emu_lane + d : emu_lane);
}
static inline float __shfl_sync(unsigned, float v, int src) { return emu_shfl(v, src & 31); }
template <typename T> static inline T __ldg(const T *p) { return *p; }
static inline uint32_t __float_as_uint(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static inline float __uint_as_float(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}
using std::max;
using std::min;

/* the runtime calls mlstm.cu makes: one device with an H100's / H200's 227 KiB of shared memory
 * a block, so a launch asking more fails as it would there */
typedef int cudaError_t;
enum { cudaSuccess = 0 };
typedef struct CUstream_st *cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
#define EMU_SMEM_OPTIN 232448
static inline cudaError_t cudaGetDevice(int *d) { return *d = 0, cudaSuccess; }
static inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int) { return *v = EMU_SMEM_OPTIN, cudaSuccess; }
template <typename K> static inline cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int) { return cudaSuccess; }
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline const char *cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }

/* the message behind kern_cuda_last_error (cuda_ops.cu's, on the GPU) */
char kern_cuda_error_text[512];
extern "C" const char *kern_cuda_last_error(void) { return kern_cuda_error_text; }

/* a TF32 operand as the tensor core reads it */
static inline float emu_tf32(float x) { return __uint_as_float(__float_as_uint(x) & 0xffffe000u); }

/* mma.sync.m16n8k8.row.col.f32.tf32.tf32.f32, d += a b, with the PTX ISA's fragments: lane
 * (g, t) = (lane / 4, lane % 4) holds A (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4), B (t, g),
 * (t + 4, g), and D (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1) */
static void emu_mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    emu_warp &w = emu_blk->warps[emu_wid];
    memcpy(w.a[emu_lane], a, sizeof w.a[0]);
    memcpy(w.b[emu_lane], b, sizeof w.b[0]);
    w.bar.wait();
    const int g = emu_lane / 4, t = emu_lane % 4;
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float sum = 0.0f;
        for (int k = 0; k < 8; k++) {
            float av = emu_tf32(__uint_as_float(w.a[(row % 8) * 4 + k % 4][row / 8 + 2 * (k / 4)]));
            float bv = emu_tf32(__uint_as_float(w.b[col * 4 + k % 4][k / 4]));
            sum += av * bv;
        }
        d[i] += sum;
    }
    w.bar.wait();
}

/* nvcuda::wmma for the shapes mlstm.cu uses (m16n16k8 TF32, fp32 accumulators). Element e of
 * lane l is element l + 32 e of the fragment's matrix in row-major order: CUDA leaves the map
 * unspecified, and the kernels only combine fragments of one shape element by element. */
namespace nvcuda {
namespace wmma {
struct matrix_a;
struct matrix_b;
struct accumulator;
struct row_major;
struct col_major;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static constexpr bool is_a = std::is_same<Use, matrix_a>::value, is_b = std::is_same<Use, matrix_b>::value;
    static constexpr int rows = is_b ? K : M, cols = is_a ? K : N, num_elements = rows * cols / 32;
    float x[num_elements];
};
template <class F> static inline void emu_at(int e, int &r, int &c) {
    const int i = emu_lane + 32 * e;
    r = i / F::cols, c = i % F::cols;
}
template <class U, int M, int N, int K, class T, class L>
static inline void load_matrix_sync(fragment<U, M, N, K, T, L> &f, const float *p, unsigned ldm) {
    using F = fragment<U, M, N, K, T, L>;
    for (int e = 0; e < F::num_elements; e++) {
        int r, c;
        emu_at<F>(e, r, c);
        f.x[e] = std::is_same<L, col_major>::value ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ldm,
                                    layout_t l) {
    using F = fragment<accumulator, M, N, K, float>;
    for (int e = 0; e < F::num_elements; e++) {
        int r, c;
        emu_at<F>(e, r, c);
        f.x[e] = l == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c];
    }
}
template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm,
                                     layout_t l) {
    using F = fragment<accumulator, M, N, K, float>;
    for (int e = 0; e < F::num_elements; e++) {
        int r, c;
        emu_at<F>(e, r, c);
        (l == mem_col_major ? p[(size_t)c * ldm + r] : p[(size_t)r * ldm + c]) = f.x[e];
    }
}
template <class F> static inline void fill_fragment(F &f, float v) {
    for (int e = 0; e < F::num_elements; e++) f.x[e] = v;
}
template <int M, int N, int K, class LA, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float> &d,
                            const fragment<matrix_a, M, N, K, precision::tf32, LA> &a,
                            const fragment<matrix_b, M, N, K, precision::tf32, LB> &b,
                            const fragment<accumulator, M, N, K, float> &c) {
    using FA = fragment<matrix_a, M, N, K, precision::tf32, LA>;
    using FB = fragment<matrix_b, M, N, K, precision::tf32, LB>;
    using FC = fragment<accumulator, M, N, K, float>;
    static_assert(FA::num_elements <= 8 && FB::num_elements <= 8 && FC::num_elements <= 8, "warp slots");
    emu_warp &w = emu_blk->warps[emu_wid];
    memcpy(w.fa[emu_lane], a.x, sizeof a.x);
    memcpy(w.fb[emu_lane], b.x, sizeof b.x);
    memcpy(w.fc[emu_lane], c.x, sizeof c.x);
    w.bar.wait();
    for (int e = 0; e < FC::num_elements; e++) {
        int r, col;
        emu_at<FC>(e, r, col);
        float sum = 0.0f;
        for (int k = 0; k < K; k++) {
            const int ia = r * K + k, ib = k * N + col;
            sum += emu_tf32(w.fa[ia % 32][ia / 32]) * emu_tf32(w.fb[ib % 32][ib / 32]);
        }
        d.x[e] = w.fc[emu_lane][e] + sum;
    }
    w.bar.wait();
}
static inline float __float_to_tf32(float x) { /* cvt.rna.tf32.f32: nearest, ties away from zero */
    return __uint_as_float((__float_as_uint(x) + 0x1000u) & 0xffffe000u);
}
} // namespace wmma
} // namespace nvcuda

/* mlstm_launch's emulated launch: the grid's blocks one after another, each with its own
 * NaN-filled dynamic shared memory of exactly smem bytes */
template <typename F> static void emu_launch(unsigned gx, unsigned gy, int nthreads, size_t smem, F body) {
    emu_grid_dim = dim3(gx, gy), emu_block_dim = dim3((unsigned)nthreads);
    float *buf = smem ? (float *)malloc(smem) : nullptr;
    if (smem && !buf) {
        fprintf(stderr, "emu: out of memory for %zu bytes of shared memory\n", smem);
        exit(2);
    }
    emu_smem = buf;
    emu_grid((int)gx, (int)gy, 1, nthreads, body, [&] {
        if (buf) memset(buf, 0xff, smem);
    });
    free(buf);
    emu_smem = nullptr;
}

#include "kernels/cuda/mlstm.cu"

/* ---- device memory for mlstm_cases.h: the host's ---- */

static float *dev_nan(size_t bytes) {
    float *d = (float *)malloc(std::max<size_t>(bytes, 4));
    if (!d) abort();
    memset(d, 0xff, std::max<size_t>(bytes, 4));
    return d;
}
template <typename T> static T *to_device(const std::vector<T> &h) {
    T *d = (T *)dev_nan(sizeof(T) * h.size());
    memcpy(d, h.data(), sizeof(T) * h.size());
    return d;
}
template <typename T> static std::vector<T> to_host(const T *d, size_t n) { return std::vector<T>(d, d + n); }
static void dev_poison(void *p, size_t bytes) { memset(p, 0xff, bytes); }
static void dev_free(void *p) { free(p); }
static void dev_sync(void) {}
#include "mlstm_cases.h"

int main(int argc, char **argv) {
    printf("seed %llu\n", (unsigned long long)bench_seed(argc, argv));
    const double eps = 1e-6;
    { /* a launch needing more shared memory than the device has is refused, with a message */
        size_t need = bwd_chunk_smem<64, 64, bwd_fp32<64, 64>>();
        int rc = mlstm_launch(mlstm_bwd_chunk_kernel<64, 64, bwd_fp32<64, 64>>, dim3(1), EMU_SMEM_OPTIN + (size_t)1,
                              nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                              nullptr, nullptr, nullptr, nullptr, nullptr, 1, 1, 1, (size_t)0, 0.0f);
        bool ok = need <= EMU_SMEM_OPTIN && rc == -1 && strstr(kern_cuda_last_error(), "more shared memory");
        checks++, failures += !ok;
        printf("a launch over the device's shared memory refused: %s (\"%s\")\n\n", ok ? "ok" : "FAIL",
               kern_cuda_last_error());
    }
    /* B = 2: every chunk kernel (L <= 16, 32, 64 and the tensor-core tilings at 33 .. 64), one
     * token, a partial last chunk, exactly one and several chunks, chunks in mid-state */
    const int cases[][2] = {{64, 1}, {64, 37}, {64, 64}, {64, 150}, {48, 101}, {16, 37}, {32, 70}, {20, 45}, {1, 5}};
    run_cases(cases, sizeof cases / sizeof cases[0], 2, eps);
    printf("\n%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
