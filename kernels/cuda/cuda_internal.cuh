/* kernels/cuda/cuda_internal.cuh — what the CUDA backend's .cu files share: the checking macros
 * (every CUDA and cuBLAS call records file, line and message, and the function returns -1), bf16
 * conversions and warp reductions. Not part of the public interface (cuda_ops.h is). */
#ifndef XD_CUDA_INTERNAL_CUH
#define XD_CUDA_INTERNAL_CUH

#include "cuda_ops.h"

/* XD_CUDA_EMU: compiled by the host C++ compiler for tests/cuda/emu_cuda_mlstm.cpp, which defines
 * the CUDA runtime and built-ins used here; the bf16 and cuBLAS parts are left out */
#ifndef XD_CUDA_EMU
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

#include <math.h>
#include <stdio.h>

/* the message behind kern_cuda_last_error (defined in cuda_ops.cu) */
extern char kern_cuda_error_text[512];

#define CUDA_TRY(call)                                                                            \
    do {                                                                                          \
        cudaError_t err_ = (call);                                                                \
        if (err_ != cudaSuccess) {                                                                \
            snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "%s:%d: %s: %s", __FILE__, \
                     __LINE__, #call, cudaGetErrorString(err_));                                  \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)
#define CUBLAS_TRY(call)                                                                          \
    do {                                                                                          \
        cublasStatus_t st_ = (call);                                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                       \
            snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "%s:%d: %s: cuBLAS status %d", \
                     __FILE__, __LINE__, #call, (int)st_);                                        \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)

#ifndef XD_CUDA_EMU
static __device__ __forceinline__ float bf(kern_bf16 h) {
    return __uint_as_float((uint32_t)h << 16);
}
static __device__ __forceinline__ kern_bf16 to_bf(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<kern_bf16 *>(&b);
}
#endif
static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
