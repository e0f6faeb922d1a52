/* tests/cuda/bench_cuda.h — what every CUDA harness (tests/cuda/bench_cuda_*.cu) shares: checks
 * that stop the harness with file and line, host <-> device copies, and the timing rule (CUDA
 * events, 3 warm-ups, the median of 20 runs, in microseconds). */
#ifndef XD_BENCH_CUDA_H
#define XD_BENCH_CUDA_H

#include "kernels/cuda/cuda_ops.h"
extern "C" { /* bf16 conversions */
#include "common/xd.h"
}

#include <cuda_runtime.h>

#include <algorithm>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <vector>

#define CHECK_CUDA(call)                                                                          \
    do {                                                                                          \
        cudaError_t err_ = (call);                                                                \
        if (err_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
            exit(2);                                                                              \
        }                                                                                         \
    } while (0)
#define CHECK_OP(call)                                                                            \
    do {                                                                                          \
        if ((call) != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, kern_cuda_last_error());          \
            exit(2);                                                                              \
        }                                                                                         \
    } while (0)

/* The harness's random numbers: xorshift from the seed given on the command line (else the
 * clock), printed so a failing run can be repeated. */
static uint64_t rng_state;
static inline uint64_t bench_seed(int argc, char **argv) {
    rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) : 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
    if (!rng_state) rng_state = 1;
    return rng_state;
}
static inline double urand(void) { /* uniform in [0, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}
static inline float frand(void) { return (float)urand() * 2.0f - 1.0f; } /* uniform in [-1, 1) */
static inline std::vector<uint16_t> random_bf16(size_t n, float scale) {
    std::vector<uint16_t> v(n);
    for (auto &x : v) x = xd_f32_to_bf16(scale * frand());
    return v;
}
static inline std::vector<float> widen(const std::vector<uint16_t> &v) {
    std::vector<float> w(v.size());
    for (size_t i = 0; i < v.size(); i++) w[i] = xd_bf16_to_f32(v[i]);
    return w;
}

template <typename T> static T *to_device(const std::vector<T> &h) {
    T *d;
    CHECK_CUDA(cudaMalloc(&d, sizeof(T) * h.size()));
    CHECK_CUDA(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
    return d;
}
template <typename T> static std::vector<T> to_host(const T *d, size_t n) {
    std::vector<T> h(n);
    CHECK_CUDA(cudaMemcpy(h.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost));
    return h;
}
template <typename F> static double median_us(F run) {
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) run();
    std::vector<float> t;
    for (int i = 0; i < 20; i++) {
        CHECK_CUDA(cudaEventRecord(a));
        run();
        CHECK_CUDA(cudaEventRecord(b));
        CHECK_CUDA(cudaEventSynchronize(b));
        float ms;
        CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 1000.0 * t[t.size() / 2];
}

#endif
