/* The SWA attention kernels' test-and-benchmark harness (kernels/cuda/swa.cu): fresh random inputs
 * every run; both kernel families (tensor-core and plain fp32) compared with the CPU reference
 * kern_swa_fwd_f32 / kern_swa_bwd_f32 on the bf16 inputs widened to float (bf16 outputs to 1e-2
 * of the largest reference value, lse to 1e-4), the backward fed with the GPU forward's out and
 * lse as in training; the backward run twice must agree bit for bit. Then timed with CUDA events
 * (3 warm-ups, median of 20) at the design's shape and SmolLM2's, against a cuBLAS bf16 GEMM
 * measured here. Exit 1 on any mismatch. (emu_cuda_swa runs the same kernel bodies on the host,
 * without a GPU.) --check-only: the small shapes' checks alone, for compute-sanitizer.
 *     build/tests/bench_cuda_swa [seed] [--check-only] */
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
#include <time.h>
#include <vector>


template <typename T> static T *device_nan(size_t n) { /* 0xff bytes: NaN as bf16 and as float */
    T *d;
    CHECK_CUDA(cudaMalloc(&d, sizeof(T) * n));
    CHECK_CUDA(cudaMemset(d, 0xff, sizeof(T) * n));
    return d;
}
/* max |got - want| / max |want| over want's elements, got read from offset; the denominator at
 * least 1e-3: where the exact gradient is 0 (one key per query: T = 1, W = 1 with S = 0) both
 * sides are rounding noise. NaN (an output no thread wrote: outputs start as NaN) is infinite. */
static double rel_err(const std::vector<float> &got, size_t offset, const std::vector<float> &want) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < want.size(); i++) {
        float g = got[offset + i];
        if (!(fabsf(g) < INFINITY)) return INFINITY;
        md = std::max(md, (double)fabsf(g - want[i]));
        mw = std::max(mw, (double)fabsf(want[i]));
    }
    return md / std::max(mw, 1e-3);
}


static int failures = 0, checks = 0;
static double gemm_tflops;

struct swa_shape {
    int B, T, H, G, d, W, S;
    int check_from; /* the sequences b >= check_from are compared (the CPU reference is slow at scale) */
};
static void report(const char *what, const swa_shape &s, double err, double tol) {
    bool ok = err <= tol;
    failures += !ok, checks++;
    printf("  %-16s B %d T %4d H %2d G %d d %3d W %10d S %4d  err %.2e (tol %.0e) %s\n", what, s.B, s.T, s.H, s.G,
           s.d, s.W, s.S, err, tol, ok ? "ok" : "FAIL");
}
static void expect(bool ok, const char *what) {
    failures += !ok, checks++;
    printf("  %-60s %s\n", what, ok ? "ok" : "FAIL");
}

/* Device inputs and outputs of one shape, and the CPU reference of the checked sequences. */
struct swa_case {
    swa_shape s;
    size_t nq, nk, nl;
    kern_bf16 *q, *k, *v, *dout, *out, *dq, *dk, *dv;
    float *lse;
    std::vector<float> out_ref, lse_ref, dq_ref, dk_ref, dv_ref;
};

static swa_case make_case(const swa_shape &s, bool reference) {
    swa_case c;
    c.s = s;
    c.nq = (size_t)s.B * s.T * s.H * s.d, c.nk = (size_t)s.B * s.T * s.G * s.d, c.nl = (size_t)s.B * s.T * s.H;
    /* q larger than k so that softmaxes are peaked and the running max moves between tiles */
    auto q = random_bf16(c.nq, 3.0f), k = random_bf16(c.nk, 1.0f), v = random_bf16(c.nk, 1.0f);
    auto dout = random_bf16(c.nq, 1.0f);
    c.q = to_device(q), c.k = to_device(k), c.v = to_device(v), c.dout = to_device(dout);
    c.out = device_nan<kern_bf16>(c.nq), c.dq = device_nan<kern_bf16>(c.nq);
    c.dk = device_nan<kern_bf16>(c.nk), c.dv = device_nan<kern_bf16>(c.nk);
    c.lse = device_nan<float>(c.nl);
    if (!reference) return c;
    const int T = s.T, H = s.H, G = s.G, d = s.d, nb = s.B - s.check_from;
    size_t sq = (size_t)T * H * d, sk = (size_t)T * G * d, sl = (size_t)T * H;
    auto fq = widen(q), fk = widen(k), fv = widen(v), fdo = widen(dout);
    c.out_ref.assign(nb * sq, 0.0f), c.lse_ref.assign(nb * sl, 0.0f);
    c.dq_ref.assign(nb * sq, 0.0f), c.dk_ref.assign(nb * sk, 0.0f), c.dv_ref.assign(nb * sk, 0.0f);
    std::vector<float> scratch(kern_swa_scratch_elems(T, s.W, s.S));
    for (int i = 0; i < nb; i++) {
        int b = s.check_from + i;
        kern_swa_fwd_f32(c.out_ref.data() + i * sq, c.lse_ref.data() + i * sl, fq.data() + b * sq, fk.data() + b * sk,
                         fv.data() + b * sk, T, H, G, d, s.W, s.S, scratch.data());
        kern_swa_bwd_f32(c.dq_ref.data() + i * sq, c.dk_ref.data() + i * sk, c.dv_ref.data() + i * sk,
                         fdo.data() + b * sq, fq.data() + b * sq, fk.data() + b * sk, fv.data() + b * sk,
                         c.out_ref.data() + i * sq, c.lse_ref.data() + i * sl, T, H, G, d, s.W, s.S, scratch.data());
    }
    return c;
}
static void free_case(swa_case &c) {
    cudaFree(c.q), cudaFree(c.k), cudaFree(c.v), cudaFree(c.dout), cudaFree(c.out);
    cudaFree(c.dq), cudaFree(c.dk), cudaFree(c.dv), cudaFree(c.lse);
}

typedef int (*swa_fwd_fn)(kern_bf16 *, float *, const kern_bf16 *, const kern_bf16 *, const kern_bf16 *, int, int,
                          int, int, int, int, int, kern_cuda_stream);
typedef int (*swa_bwd_fn)(kern_bf16 *, kern_bf16 *, kern_bf16 *, const kern_bf16 *, const kern_bf16 *,
                          const kern_bf16 *, const kern_bf16 *, const kern_bf16 *, const float *, int, int, int, int,
                          int, int, int, kern_cuda_stream);
struct swa_family {
    const char *name;
    swa_fwd_fn fwd;
    swa_bwd_fn bwd;
};
static const swa_family families[] = {
    {"mma", kern_cuda_swa_fwd_bf16, kern_cuda_swa_bwd_bf16},
    {"simple", kern_cuda_swa_fwd_simple_bf16, kern_cuda_swa_bwd_simple_bf16},
};

static void run_fwd(const swa_family &f, swa_case &c) {
    const swa_shape &s = c.s;
    CHECK_OP(f.fwd(c.out, c.lse, c.q, c.k, c.v, s.B, s.T, s.H, s.G, s.d, s.W, s.S, 0));
}
static void run_bwd(const swa_family &f, swa_case &c) {
    const swa_shape &s = c.s;
    CHECK_OP(f.bwd(c.dq, c.dk, c.dv, c.dout, c.q, c.k, c.v, c.out, c.lse, s.B, s.T, s.H, s.G, s.d, s.W, s.S, 0));
}

static void check_family(const swa_family &f, swa_case &c) {
    const swa_shape &s = c.s;
    size_t sq = (size_t)s.T * s.H * s.d, sk = (size_t)s.T * s.G * s.d, sl = (size_t)s.T * s.H;
    char name[48];
    /* outputs back to NaN, so that this family's unwritten elements show */
    CHECK_CUDA(cudaMemset(c.out, 0xff, 2 * c.nq));
    CHECK_CUDA(cudaMemset(c.lse, 0xff, 4 * c.nl));
    CHECK_CUDA(cudaMemset(c.dq, 0xff, 2 * c.nq));
    CHECK_CUDA(cudaMemset(c.dk, 0xff, 2 * c.nk));
    CHECK_CUDA(cudaMemset(c.dv, 0xff, 2 * c.nk));
    run_fwd(f, c);
    CHECK_CUDA(cudaDeviceSynchronize());
    snprintf(name, sizeof name, "%s fwd out", f.name);
    report(name, s, rel_err(widen(to_host(c.out, c.nq)), s.check_from * sq, c.out_ref), 1e-2);
    snprintf(name, sizeof name, "%s fwd lse", f.name);
    report(name, s, rel_err(to_host(c.lse, c.nl), s.check_from * sl, c.lse_ref), 1e-4);

    run_bwd(f, c);
    CHECK_CUDA(cudaDeviceSynchronize());
    auto dq = to_host(c.dq, c.nq), dk = to_host(c.dk, c.nk), dv = to_host(c.dv, c.nk);
    snprintf(name, sizeof name, "%s bwd dq", f.name);
    report(name, s, rel_err(widen(dq), s.check_from * sq, c.dq_ref), 1e-2);
    snprintf(name, sizeof name, "%s bwd dk", f.name);
    report(name, s, rel_err(widen(dk), s.check_from * sk, c.dk_ref), 1e-2);
    snprintf(name, sizeof name, "%s bwd dv", f.name);
    report(name, s, rel_err(widen(dv), s.check_from * sk, c.dv_ref), 1e-2);

    /* deterministic: a second run writes the same bits */
    run_bwd(f, c);
    CHECK_CUDA(cudaDeviceSynchronize());
    bool same = dq == to_host(c.dq, c.nq) && dk == to_host(c.dk, c.nk) && dv == to_host(c.dv, c.nk);
    failures += !same, checks++;
    if (!same) printf("  %-16s the second backward differs from the first: FAIL\n", f.name);
}

int main(int argc, char **argv) {
    bench_seed(argc, argv);
    bool check_only = argc > 2 && strcmp(argv[2], "--check-only") == 0;
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.0f MB L2; seed %llu\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6,
           (unsigned long long)rng_state);

    printf("arguments:\n");
    {
        swa_case c = make_case({1, 64, 2, 1, 64, 8, 0, 0}, false);
        expect(kern_cuda_swa_fwd_bf16(c.out, c.lse, c.q, c.k, c.v, 1, 64, 2, 1, 96, 8, 0, 0) == -1 &&
                   strstr(kern_cuda_last_error(), "head dim") != NULL,
               "d = 96 refused, the message naming the head dim");
        expect(kern_cuda_swa_bwd_bf16(c.dq, c.dk, c.dv, c.dout, c.q, c.k, c.v, c.out, c.lse, 1, 64, 3, 2, 64, 8, 0, 0) ==
                   -1,
               "H % G != 0 refused");
        expect(kern_cuda_swa_fwd_bf16(c.out, c.lse, c.q + 1, c.k, c.v, 1, 64, 2, 1, 64, 8, 0, 0) == -1,
               "a misaligned tensor refused");
        expect(kern_cuda_swa_fwd_bf16(c.out, c.lse, c.q, c.k, c.v, 1, 0, 2, 1, 64, 8, 0, 0) == 0 &&
                   kern_cuda_swa_bwd_bf16(c.dq, c.dk, c.dv, c.dout, c.q, c.k, c.v, c.out, c.lse, 0, 64, 2, 1, 64, 8, 0,
                                          0) == 0,
               "T = 0 and B = 0 do nothing and succeed");
        free_case(c);
    }

    printf("against the CPU reference:\n");
    const swa_shape shapes[] = {
        {1, 1, 2, 1, 64, 4, 0, 0},            /* one token */
        {2, 37, 8, 2, 64, 8, 0, 0},           /* T not a multiple of the tile, no sinks, GQA 4:1 */
        {2, 37, 4, 4, 128, 8, 0, 0},          /* H = G, d 128 */
        {2, 200, 8, 2, 64, 16, 4, 0},         /* sinks + window */
        {1, 200, 4, 4, 128, 16, 4, 0},
        {2, 300, 8, 2, 64, 1 << 30, 3, 0},    /* W >= T: full causal */
        {1, 130, 4, 2, 128, 1000, 0, 0},
        {1, 150, 2, 2, 64, 5, 1000, 0},       /* S >= T: every key a sink */
        {1, 160, 6, 2, 64, 10, 70, 0},        /* sinks over two tiles, groups of 3 */
        {1, 129, 2, 1, 128, 1, 1, 0},         /* W = 1: itself and the sink */
        {1, 70, 2, 1, 64, 1, 0, 0},           /* W = 1, S = 0: itself only (dq = dk = 0) */
        {1, 64, 2, 1, 64, 2, 0, 0},           /* one whole tile */
        {2, 1000, 8, 2, 64, 100, 4, 0},       /* a window across tile boundaries */
        {4, 4096, 32, 8, 64, 512, 4, 3},      /* the design's shape (last sequence checked) */
        {8, 2048, 9, 3, 64, 512, 4, 7},       /* SmolLM2's */
    };
    for (const auto &s : shapes) {
        if (check_only && s.check_from > 0) continue;
        swa_case c = make_case(s, true);
        for (const auto &f : families) check_family(f, c);
        free_case(c);
        fflush(stdout);
    }

    if (check_only) {
        printf("\n%d checks, %d failed\n", checks, failures);
        return failures ? 1 : 0;
    }
    { /* ceiling: a large cuBLAS bf16 GEMM */
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
        printf("\nceiling: cuBLAS bf16 GEMM 8192^3 %.0f TFLOP/s\n", gemm_tflops);
    }

    /* Counted work: the forward is 2 GEMMs (Q K^T and P V) of T x (W+S) x d per head and sequence,
     * 4 T (W+S) d H B flops; the backward 5 such GEMMs (S, dP, dV, dK, dQ), 2.5x that, whatever
     * the kernels really do (the tensor-core backward recomputes S and dP in both of its passes:
     * 7 GEMMs; the key tiles are 64 wide, so a window of W visits up to W + 64 keys). */
    printf("timings (median of 20):\n");
    const swa_shape benches[] = {{4, 4096, 32, 8, 64, 512, 4, 4}, {8, 2048, 9, 3, 64, 512, 4, 8}};
    for (const auto &s : benches) {
        swa_case c = make_case(s, false);
        double fwd_flops = 4.0 * s.T * (s.W + s.S) * s.d * s.H * s.B, bwd_flops = 2.5 * fwd_flops;
        printf("  B %d T %d H %d G %d d %d W %d S %d\n", s.B, s.T, s.H, s.G, s.d, s.W, s.S);
        for (const auto &f : families) {
            double fwd = median_us([&] { run_fwd(f, c); });
            double bwd = median_us([&] { run_bwd(f, c); });
            printf("    %-6s fwd %9.1f us %6.1f TFLOP/s (%3.0f%% of cuBLAS)   bwd %9.1f us %6.1f TFLOP/s (%3.0f%%)   "
                   "fwd+bwd %9.1f us\n",
                   f.name, fwd, fwd_flops / fwd / 1e6, 100.0 * fwd_flops / fwd / 1e6 / gemm_tflops, bwd,
                   bwd_flops / bwd / 1e6, 100.0 * bwd_flops / bwd / 1e6 / gemm_tflops, fwd + bwd);
            if (f.fwd == kern_cuda_swa_fwd_bf16 && s.T == 4096)
                printf("    target for the design's shape: fwd+bwd <= 1800 us on an H100: %s\n",
                       fwd + bwd <= 1800.0 ? "met" : "MISSED");
        }
        free_case(c);
    }
    printf("\n%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
