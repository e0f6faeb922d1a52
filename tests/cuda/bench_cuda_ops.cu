/* The CUDA ops' test-and-benchmark harness: fresh random inputs every run, each op compared with
 * the CPU reference of kernels/ (bf16 ops to 1e-2 relative, fp32 ops to 1e-5), then timed with CUDA
 * events (3 warm-ups, median of 20) and set against the ceilings measured here: a large
 * device-to-device copy (GB/s) and a large cuBLAS bf16 GEMM (TFLOP/s). Exit 1 on a mismatch.
 *     build/tests/bench_cuda_ops [seed] */
#include "bench_cuda.h"
extern "C" { /* the CPU reference is C */
#include "kernels/kernels.h"
}

#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>



static double rel_err(const std::vector<float> &got, const std::vector<float> &want) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < got.size(); i++) {
        md = std::max(md, (double)fabsf(got[i] - want[i]));
        mw = std::max(mw, (double)fabsf(want[i]));
    }
    return md / std::max(mw, 1e-30);
}


static int failures = 0;
static double copy_gbs, gemm_tflops;

static void report(const char *op, const char *shape, double err, double tol, double us, double bytes, double flops) {
    bool ok = err <= tol;
    failures += !ok;
    printf("%-14s %-22s err %.2e (tol %.0e) %-4s %9.1f us", op, shape, err, tol, ok ? "ok" : "FAIL", us);
    if (bytes > 0) printf("  %7.1f GB/s (%3.0f%% of copy)", bytes / us / 1e3, 100.0 * bytes / us / 1e3 / copy_gbs);
    if (flops > 0) printf("  %6.1f TFLOP/s (%3.0f%% of cuBLAS)", flops / us / 1e6, 100.0 * flops / us / 1e6 / gemm_tflops);
    printf("\n");
}

int main(int argc, char **argv) {
    bench_seed(argc, argv);
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.0f MB L2; seed %llu\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize / 1e6, (unsigned long long)rng_state);

    { /* ceilings */
        copy_gbs = copy_ceiling_gbs();
        int n = 8192;
        kern_bf16 *x, *y, *z;
        CHECK_CUDA(cudaMalloc(&x, 2ull * n * n));
        CHECK_CUDA(cudaMalloc(&y, 2ull * n * n));
        CHECK_CUDA(cudaMalloc(&z, 2ull * n * n));
        std::vector<uint16_t> r = random_bf16((size_t)n * n, 1.0f);
        CHECK_CUDA(cudaMemcpy(x, r.data(), 2ull * n * n, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(y, r.data(), 2ull * n * n, cudaMemcpyHostToDevice));
        double us = median_us([&] { CHECK_OP(kern_cuda_linear_bf16(z, x, y, n, n, n, 0)); });
        gemm_tflops = 2.0 * n * n * n / us / 1e6;
        cudaFree(x), cudaFree(y), cudaFree(z);
        printf("ceilings: device copy %.0f GB/s (read + write), cuBLAS bf16 GEMM 8192^3 %.0f TFLOP/s\n\n", copy_gbs,
               gemm_tflops);
    }

    { /* linear: SmolLM2's MLP up-projection at 8 x 2048 tokens */
        int m = 16384, n = 1536, k = 576;
        auto a = random_bf16((size_t)m * k, 1.0f), b = random_bf16((size_t)n * k, 0.05f);
        kern_bf16 *da = to_device(a), *db = to_device(b), *dc;
        CHECK_CUDA(cudaMalloc(&dc, 2ull * m * n));
        CHECK_OP(kern_cuda_linear_bf16(dc, da, db, m, n, k, 0));
        auto got = widen(to_host(dc, (size_t)m * n));
        int rows = 64; /* the CPU reference on the first rows */
        std::vector<float> want((size_t)rows * n), fa = widen(a), fb = widen(b);
        kern_linear_f32(want.data(), fa.data(), fb.data(), NULL, rows, k, n);
        got.resize((size_t)rows * n);
        double us = median_us([&] { CHECK_OP(kern_cuda_linear_bf16(dc, da, db, m, n, k, 0)); });
        report("linear", "16384x576 . 1536x576^T", rel_err(got, want), 1e-2, us, 0, 2.0 * m * n * k);
        cudaFree(da), cudaFree(db), cudaFree(dc);
    }
    { /* rmsnorm at 8 x 2048 tokens, D 576 */
        int n = 16384, d = 576;
        auto x = random_bf16((size_t)n * d, 2.0f);
        std::vector<float> w(d);
        for (auto &v : w) v = 1.0f + 0.5f * frand();
        kern_bf16 *dx = to_device(x), *dy;
        float *dw = to_device(w);
        CHECK_CUDA(cudaMalloc(&dy, 2ull * n * d));
        CHECK_OP(kern_cuda_rmsnorm_bf16(dy, dx, dw, n, d, 1e-5f, 0));
        auto got = widen(to_host(dy, (size_t)n * d));
        std::vector<float> want((size_t)n * d), fx = widen(x);
        kern_rmsnorm_f32(want.data(), fx.data(), w.data(), n, d, 1e-5f);
        double us = median_us([&] { CHECK_OP(kern_cuda_rmsnorm_bf16(dy, dx, dw, n, d, 1e-5f, 0)); });
        report("rmsnorm", "16384x576", rel_err(got, want), 1e-2, us, 4.0 * n * d, 0);
        cudaFree(dx), cudaFree(dy), cudaFree(dw);
    }
    { /* swiglu at 8 x 2048 x 1536 */
        size_t count = 16384ull * 1536;
        auto g = random_bf16(count, 4.0f), u = random_bf16(count, 1.0f);
        kern_bf16 *dg = to_device(g), *du = to_device(u), *dout;
        CHECK_CUDA(cudaMalloc(&dout, 2 * count));
        CHECK_OP(kern_cuda_swiglu_bf16(dout, dg, du, count, 0));
        auto got = widen(to_host(dout, count));
        std::vector<float> want(count), fg = widen(g), fu = widen(u);
        kern_swiglu_f32(want.data(), fg.data(), fu.data(), count);
        double us = median_us([&] { CHECK_OP(kern_cuda_swiglu_bf16(dout, dg, du, count, 0)); });
        report("swiglu", "16384x1536", rel_err(got, want), 1e-2, us, 6.0 * count, 0);
        cudaFree(dg), cudaFree(du), cudaFree(dout);
    }
    { /* fused softmax + cross-entropy, SmolLM2's vocabulary */
        int n = 2048, V = 49152;
        auto l = random_bf16((size_t)n * V, 8.0f);
        std::vector<int> t(n);
        for (int i = 0; i < n; i++) t[i] = i % 17 == 0 ? -1 : (int)((frand() * 0.5f + 0.5f) * (V - 1));
        kern_bf16 *dl = to_device(l), *dd;
        int *dt = to_device(t);
        float *dloss;
        CHECK_CUDA(cudaMalloc(&dd, 2ull * n * V));
        CHECK_CUDA(cudaMalloc(&dloss, 4ull * n));
        int valid = 0;
        for (int x : t) valid += x >= 0;
        CHECK_OP(kern_cuda_cross_entropy_bf16(dloss, dd, dl, dt, n, V, 1.0f / valid, 0));
        auto got = widen(to_host(dd, (size_t)n * V));
        auto loss = to_host(dloss, n);
        std::vector<float> fl = widen(l), want((size_t)n * V);
        double want_loss;
        xd_err e;
        kern_cross_entropy_f32(&want_loss, want.data(), fl.data(), t.data(), n, V, &e);
        double got_loss = 0;
        for (float x : loss) got_loss += x;
        got_loss /= valid;
        double us = median_us([&] { CHECK_OP(kern_cuda_cross_entropy_bf16(dloss, dd, dl, dt, n, V, 1.0f / valid, 0)); });
        report("cross_entropy", "2048x49152 (grad)", rel_err(got, want), 1e-2, us, 4.0 * n * V, 0);
        report("cross_entropy", "2048x49152 (loss)", fabs(got_loss - want_loss) / fabs(want_loss), 1e-5, us, 0, 0);
        cudaFree(dl), cudaFree(dd), cudaFree(dt), cudaFree(dloss);
    }
    { /* AdamW over SmolLM2's 135M fp32 parameters */
        size_t n = 134515008;
        std::vector<float> p(n), g(n), m(n), v(n);
        for (size_t i = 0; i < n; i++) p[i] = frand(), g[i] = 0.1f * frand(), m[i] = 0.01f * frand(), v[i] = 1e-4f * fabsf(frand());
        float *dp = to_device(p), *dg = to_device(g), *dm = to_device(m), *dv = to_device(v);
        CHECK_OP(kern_cuda_adamw(dp, dg, dm, dv, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, 0));
        auto got = to_host(dp, n);
        kern_adamw cfg = {1e-3, 0.9, 0.999, 1e-8, 0.1};
        kern_adamw_step(p.data(), g.data(), m.data(), v.data(), n, &cfg, 7);
        double us = median_us([&] { CHECK_OP(kern_cuda_adamw(dp, dg, dm, dv, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, 0)); });
        report("adamw", "134515008 fp32", rel_err(got, p), 1e-5, us, 7.0 * 4 * n, 0);
        cudaFree(dp), cudaFree(dg), cudaFree(dm), cudaFree(dv);
    }
    printf("\n%d passed, %d failed\n", 7 - failures, failures);
    return failures ? 1 : 0;
}
