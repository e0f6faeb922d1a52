/* The chunkwise mLSTM's harness (kernels/cuda/mlstm.cu) on the GPU: the correctness cases of
 * mlstm_cases.h (fresh random inputs, every output against the CPU reference, the rule written
 * there), then the design's shapes timed with CUDA events (3 warm-ups, median of 20) against
 * ceilings measured here. Exit 1 on a mismatch. tests/cuda/emu_cuda_mlstm.cpp runs the same cases
 * on the host, without a GPU.
 *     build/tests/bench_cuda_mlstm [seed] [check | profile]
 * check: the comparisons only (for compute-sanitizer); profile: one forward and backward at the
 * design's shape, then the fp32 backward, nothing else (for ncu). */
#include "bench_cuda.h"
#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <vector>

/* device memory for mlstm_cases.h */
static float *dev_nan(size_t bytes) { /* filled with NaN: reads of unwritten memory show up */
    float *d;
    CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(bytes, 4)));
    CHECK_CUDA(cudaMemset(d, 0xff, std::max<size_t>(bytes, 4)));
    return d;
}
static void dev_poison(void *p, size_t bytes) { CHECK_CUDA(cudaMemset(p, 0xff, bytes)); }
static void dev_free(void *p) { cudaFree(p); }
static void dev_sync(void) { CHECK_CUDA(cudaDeviceSynchronize()); }
#include "mlstm_cases.h"

/* The fp32 ceiling: 8 independent FMA chains per thread, all in registers. */
__global__ void fma_peak_kernel(float *out, int iters, float a, float b) {
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = threadIdx.x + i;
    for (int it = 0; it < iters; it++)
#pragma unroll
        for (int i = 0; i < 8; i++) x[i] = fmaf(x[i], a, b);
    float s = 0;
    for (int i = 0; i < 8; i++) s += x[i];
    if (s == 12345.0f) out[0] = s; /* keeps the loop alive */
}

static double copy_gbs, fp32_tflops, bf16_tflops;

static void measure_ceilings(int sms) {
    copy_gbs = copy_ceiling_gbs();
    int blocks = sms * 8, threads = 256, iters = 1 << 14;
    float *a;
    CHECK_CUDA(cudaMalloc(&a, sizeof(float) * (size_t)blocks * threads));
    double us = median_us([&] { fma_peak_kernel<<<blocks, threads>>>(a, iters, 0.999f, 0.001f); });
    CHECK_CUDA(cudaGetLastError());
    fp32_tflops = 2.0 * 8 * iters * (double)blocks * threads / us / 1e6;
    cudaFree(a);
    int n = 8192;
    kern_bf16 *x, *y, *z;
    CHECK_CUDA(cudaMalloc(&x, 2ull * n * n));
    CHECK_CUDA(cudaMalloc(&y, 2ull * n * n));
    CHECK_CUDA(cudaMalloc(&z, 2ull * n * n));
    std::vector<uint16_t> r((size_t)n * n);
    for (auto &e : r) e = xd_f32_to_bf16((float)(2 * urand() - 1));
    CHECK_CUDA(cudaMemcpy(x, r.data(), 2ull * n * n, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(y, r.data(), 2ull * n * n, cudaMemcpyHostToDevice));
    us = median_us([&] { CHECK_OP(kern_cuda_linear_bf16(z, x, y, n, n, n, 0)); });
    bf16_tflops = 2.0 * n * n * n / us / 1e6;
    cudaFree(x), cudaFree(y), cudaFree(z);
    printf("ceilings: device copy %.0f GB/s (read + write), fp32 FMA %.1f TFLOP/s, cuBLAS bf16 GEMM 8192^3 %.0f "
           "TFLOP/s\n\n",
           copy_gbs, fp32_tflops, bf16_tflops);
}

/* Nominal FLOPs of one pass over B x T tokens in chunks of L: every product of the kernels, the
 * causal L x L ones counted whole (the kernels compute them whole). Per token,
 *   forward:  2 (L dk [Q K^T] + L dv [P V] + dk dv [Q C_in] + dk dv [the chunk's state])
 *   backward: 2 (3 L dk [Q K^T, dS K, dS^T Q] + 2 L dv [dnum V^T, P^T dnum]
 *                + 4 dk dv [K E, V E^T, dnum C_in^T, Q^T dnum]). */
static double flops_fwd(int B, int T, int L, int dk, int dv) {
    return 2.0 * B * T * ((double)L * (dk + dv) + 2.0 * dk * dv);
}
static double flops_bwd(int B, int T, int L, int dk, int dv) {
    return 2.0 * B * T * ((double)L * (3 * dk + 2 * dv) + 4.0 * dk * dv);
}
/* Bytes each pass must move at the least: forward reads q, k, v, gates, writes h, m, den and
 * the states; backward reads those and dh, writes five gradients and the state gradients. */
static double bytes_fwd(int B, int T, int L, int dk, int dv) {
    double n = (double)B * T, nch = (double)B * ((T + L - 1) / L);
    return 4.0 * (n * (2 * dk + 2 * dv + 4) + nch * (dk * dv + dk));
}
static double bytes_bwd(int B, int T, int L, int dk, int dv) {
    double n = (double)B * T, nch = (double)B * ((T + L - 1) / L);
    return 4.0 * (n * (4 * dk + 5 * dv + 6) + 3 * nch * (dk * dv + dk));
}

static void bench(const char *name, int B, int T, int L, int dk, int dv, double eps) {
    inputs x = make_inputs(B, T, dk, dv);
    gpu_run g = gpu_alloc(x, L);
    printf("%s: B %d, T %d, L %d, dk %d, dv %d (the first 2 sequences against the CPU)\n", name, B, T, L, dk, dv);
    run_case(g, x, 2, eps); /* leaves the model's forward's h and saved for the backward's timing */
    const bool tc = tc_path(L);
    double tf = median_us([&] { CHECK_OP(gpu_fwd(g, eps, false)); });
    double tt = tc ? median_us([&] { CHECK_OP(gpu_fwd(g, eps, true)); }) : 0;
    double tb = median_us([&] { CHECK_OP(gpu_bwd(g, eps, false)); });
    double tbt = tc ? median_us([&] { CHECK_OP(gpu_bwd(g, eps, true)); }) : 0;
    double ta = median_us([&] { /* the model's pair */
        CHECK_OP(gpu_fwd(g, eps, true));
        CHECK_OP(gpu_bwd(g, eps, true));
    });
    double ff = flops_fwd(B, T, L, dk, dv), fb = flops_bwd(B, T, L, dk, dv);
    double bf = bytes_fwd(B, T, L, dk, dv), bb = bytes_bwd(B, T, L, dk, dv);
    auto line = [&](const char *what, double us, double flops, double bytes) {
        printf("  %-10s %9.1f us  %6.2f TFLOP/s (%3.0f%% of fp32 FMA)  %7.1f GB/s (%3.0f%% of copy)\n", what, us,
               flops / us / 1e6, 100.0 * flops / us / 1e6 / fp32_tflops, bytes / us / 1e3,
               100.0 * bytes / us / 1e3 / copy_gbs);
    };
    line("fwd fp32", tf, ff, bf);
    if (tc) {
        line("fwd 3xtf32", tt, ff, bf);
        printf("            tensor cores: %.2fx the fp32 forward\n", tf / tt);
    }
    line("bwd fp32", tb, fb, bb);
    if (tc) {
        line("bwd 3xtf32", tbt, fb, bb);
        printf("            tensor cores: %.2fx the fp32 backward\n", tb / tbt);
    }
    line("fwd+bwd", ta, ff + fb, bf + bb);
    printf("\n");
    gpu_free(g);
}

int main(int argc, char **argv) {
    bench_seed(argc, argv);
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.0f MB L2; seed %llu\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6,
           (unsigned long long)rng_state);
    const double eps = 1e-6;
    const int D = 64;
    if (argc > 2 && !strcmp(argv[2], "profile")) {
        inputs x = make_inputs(128, 4096, D, D);
        gpu_run g = gpu_alloc(x, 64);
        CHECK_OP(gpu_fwd(g, eps, true));
        CHECK_OP(gpu_bwd(g, eps, true));
        CHECK_OP(gpu_bwd(g, eps, false)); /* the CUDA-core backward, to compare */
        CHECK_CUDA(cudaDeviceSynchronize());
        gpu_free(g);
        return 0;
    }

    { /* the API refuses what is not built, with a message */
        float *p = dev_nan(4);
        int rc = kern_cuda_mlstm_fwd(p, p, p, p, p, p, p, 1, 4, 16, 32, 32, (float)eps, 0);
        bool ok = rc == -1 && strstr(kern_cuda_last_error(), "dk = dv = 64");
        checks++, failures += !ok;
        printf("dk = dv = 32 refused: %s (\"%s\")\n\n", ok ? "ok" : "FAIL", kern_cuda_last_error());
        cudaFree(p);
    }

    /* correctness: B = 3, the chunk lengths of the design and a few others, T from one token to
     * many chunks and not a multiple of L */
    const int cases[][2] = {{16, 1},   {16, 37},  {16, 200}, {16, 1000}, {64, 1},  {64, 37},
                            {64, 200}, {64, 1000}, {32, 200}, {20, 77},   {1, 9},   {64, 64},
                            {64, 2500}, {16, 1100}, /* these two: the scans' tiles of 1024 */
                            {48, 301}}; /* tensor cores with every chunk short of LM = 64 */
    run_cases(cases, sizeof cases / sizeof cases[0], 3, eps);
    printf("\n");

    if (!(argc > 2 && !strcmp(argv[2], "check"))) {
        measure_ceilings(prop.multiProcessorCount);
        bench("design (4 x 32 heads)", 128, 4096, 64, D, D, eps);
        bench("SmolLM2 (8 x 9 heads)", 72, 2048, 64, D, D, eps);
    }

    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
