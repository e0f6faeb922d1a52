/* tests/cuda/bench_cuda.h — what every CUDA harness (tests/cuda/bench_cuda_*.cu) shares: checks
 * that stop the harness with file and line, host <-> device copies, and the timing rule (CUDA
 * events, 3 warm-ups, the median of 20 runs, in microseconds). */
#ifndef XD_BENCH_CUDA_H
#define XD_BENCH_CUDA_H

#include "bench_host.h"
#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
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
/* The memory ceiling every harness prints its GB/s against: a 1 GiB device-to-device copy, GB/s
 * of read + write. */
static inline double copy_ceiling_gbs(void) {
    const size_t bytes = (size_t)1 << 30;
    void *a, *b;
    CHECK_CUDA(cudaMalloc(&a, bytes));
    CHECK_CUDA(cudaMalloc(&b, bytes));
    CHECK_CUDA(cudaMemset(a, 0, bytes));
    double us = median_us([&] { CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
    cudaFree(a), cudaFree(b);
    return 2.0 * bytes / us / 1e3;
}

#endif
