/* The chunkwise mLSTM's harness (kernels/cuda/mlstm.cu): fresh random inputs every run (the
 * model's kind: softmax features, gates in regimes that push the max stabiliser), the forward's h
 * and saved state and every gradient of the backward compared with the CPU reference of
 * kernels/mlstm.h, then the design's shapes timed with CUDA events (3 warm-ups, median of 20)
 * against ceilings measured here. Exit 1 on a mismatch.
 *     build/tests/bench_cuda_mlstm [seed] [check | profile]
 * check: the comparisons only (for compute-sanitizer); profile: one forward and backward at the
 * design's shape, then the fp32 backward, nothing else (for ncu).
 * Errors are max|diff| / max|ref|. fp32 sums in another order cannot reach 1e-5 on every output
 * (the gate gradients are sums of many cancelling terms), so each output is held against the
 * CPU f32 (gpu-f32) and, on the same inputs, the f64 reference (gpu-f64); it passes when gpu-f32
 * <= 1e-5 or when the GPU is no further from f64 than 4 times the CPU f32 is (cpu-f64), plus
 * 1e-6 of max(max|ref|, 1). Both slacks are for outputs that are mostly rounding noise (at
 * T = 1, d_itilde is 0 in exact arithmetic; cancellations elsewhere), where the GPU's noise and
 * the CPU's differ by small factors (seen on an H200); a real bug shows as O(1), and the cases
 * with T > 1 have cpu-f64 near 1e-6.
 * Two forwards and two backwards: kern_cuda_mlstm_fwd_fp32 and kern_cuda_mlstm_bwd_fp32 (CUDA
 * cores, every L) are held to the rule above; kern_cuda_mlstm_fwd and kern_cuda_mlstm_bwd, the
 * model's (training's and inference's), run the chunks' products on tensor cores in 3xTF32 for L
 * in 33 .. 64 (LM = 64). There the tensor-core backward after the fp32 forward is held to the
 * same rule, and after the tensor-core forward (tc_check) the forward's m,
 * states and decays must be the fp32 path's bits, h and den meet the same rule against the CPU
 * forward, the backward fed with its h and saved must match the CPU backward fed with the same h
 * and saved, and those gradients must also match the CPU's forward-and-backward, all by the rule
 * above: 3xTF32 is fp32-accurate, so nothing is looser than on the fp32 path. */
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



static float *dev_nan(size_t bytes) { /* filled with NaN: reads of unwritten memory show up */
    float *d;
    CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(bytes, 4)));
    CHECK_CUDA(cudaMemset(d, 0xff, std::max<size_t>(bytes, 4)));
    return d;
}
static std::vector<double> widen(const std::vector<float> &v) { return std::vector<double>(v.begin(), v.end()); }

/* max|got - want| / max|want| over n values (NaN in got counts as infinitely far) */
template <typename A, typename B> static double rel_err(const A *got, const B *want, size_t n) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d != d) d = INFINITY;
        md = std::max(md, d);
        mw = std::max(mw, fabs((double)want[i]));
    }
    return md / std::max(mw, 1e-30);
}

/* B sequences of the model's inputs: features softmax(2 N(0,1)) (positive, summing to 1), v N(0,1),
 * gates in runs of three regimes: logf ~ 0 with itilde up to +-20, logf down to -20, ordinary. */
struct inputs {
    int B, T, dk, dv;
    std::vector<float> q, k, v, it, lf, dh;
};
static inputs make_inputs(int B, int T, int dk, int dv) {
    inputs x{B, T, dk, dv, {}, {}, {}, {}, {}, {}};
    size_t n = (size_t)B * T;
    softmax_features(x.q, n, dk);
    softmax_features(x.k, n, dk);
    x.v.resize(n * dv), x.dh.resize(n * dv);
    for (auto &e : x.v) e = (float)nrand();
    for (auto &e : x.dh) e = (float)nrand();
    gate_regimes(x.it, x.lf, n);
    return x;
}

/* The CPU reference on x in f32 and f64: h, saved and the five gradients. */
struct reference {
    std::vector<float> h, saved, gq, gk, gv, git, glf;
    std::vector<double> h64, saved64, gq64, gk64, gv64, git64, glf64;
};
static reference cpu_reference(const inputs &x, int L, double eps) {
    reference r;
    kern_mlstm_dims d = {x.B, x.T, x.dk, x.dv, L, eps};
    size_t n = (size_t)x.B * x.T, sl = kern_mlstm_saved_len(x.T, L, x.dk, x.dv) * x.B;
    size_t sc = kern_mlstm_scratch_len(L, x.dk, x.dv);
    r.h.resize(n * x.dv), r.saved.resize(sl + 1), r.gq.resize(n * x.dk), r.gk.resize(n * x.dk);
    r.gv.resize(n * x.dv), r.git.resize(n), r.glf.resize(n);
    std::vector<float> scratch(sc);
    kern_mlstm_fwd_f32(&d, x.q.data(), x.k.data(), x.v.data(), x.it.data(), x.lf.data(), r.h.data(), r.saved.data(),
                       scratch.data(), NULL);
    kern_mlstm_bwd_f32(&d, x.q.data(), x.k.data(), x.v.data(), x.it.data(), x.lf.data(), r.h.data(), x.dh.data(),
                       r.saved.data(), scratch.data(), r.gq.data(), r.gk.data(), r.gv.data(), r.git.data(),
                       r.glf.data());
    std::vector<double> q = widen(x.q), k = widen(x.k), v = widen(x.v), it = widen(x.it), lf = widen(x.lf);
    std::vector<double> dh = widen(x.dh), scratch64(sc);
    r.h64.resize(n * x.dv), r.saved64.resize(sl + 1), r.gq64.resize(n * x.dk), r.gk64.resize(n * x.dk);
    r.gv64.resize(n * x.dv), r.git64.resize(n), r.glf64.resize(n);
    kern_mlstm_fwd_f64(&d, q.data(), k.data(), v.data(), it.data(), lf.data(), r.h64.data(), r.saved64.data(),
                       scratch64.data(), NULL);
    kern_mlstm_bwd_f64(&d, q.data(), k.data(), v.data(), it.data(), lf.data(), r.h64.data(), dh.data(),
                       r.saved64.data(), scratch64.data(), r.gq64.data(), r.gk64.data(), r.gv64.data(),
                       r.git64.data(), r.glf64.data());
    return r;
}

/* GPU buffers for one shape; the outputs start as NaN so that anything left unwritten shows. */
struct gpu_run {
    int B, T, L, dk, dv;
    float *q, *k, *v, *it, *lf, *dh, *h, *saved, *gq, *gk, *gv, *git, *glf;
    void *ws;
    size_t saved_bytes;
};
static gpu_run gpu_alloc(const inputs &x, int L) {
    gpu_run g;
    g.B = x.B, g.T = x.T, g.L = L, g.dk = x.dk, g.dv = x.dv;
    size_t n = (size_t)x.B * x.T;
    g.q = to_device(x.q), g.k = to_device(x.k), g.v = to_device(x.v), g.it = to_device(x.it), g.lf = to_device(x.lf);
    g.dh = to_device(x.dh);
    g.saved_bytes = kern_cuda_mlstm_saved_bytes(x.B, x.T, L, x.dk, x.dv);
    g.h = dev_nan(4 * n * x.dv), g.saved = dev_nan(g.saved_bytes);
    g.gq = dev_nan(4 * n * x.dk), g.gk = dev_nan(4 * n * x.dk), g.gv = dev_nan(4 * n * x.dv);
    g.git = dev_nan(4 * n), g.glf = dev_nan(4 * n);
    g.ws = dev_nan(kern_cuda_mlstm_workspace_bytes(x.B, x.T, L, x.dk, x.dv));
    return g;
}
static void gpu_free(gpu_run &g) {
    float *all[] = {g.q, g.k, g.v, g.it, g.lf, g.dh, g.h, g.saved, g.gq, g.gk, g.gv, g.git, g.glf};
    for (float *p : all) cudaFree(p);
    cudaFree(g.ws);
}
/* tc: the model's forward (tensor cores where built), else the fp32 CUDA-core reference */
static int gpu_fwd(const gpu_run &g, double eps, bool tc) {
    return (tc ? kern_cuda_mlstm_fwd : kern_cuda_mlstm_fwd_fp32)(g.h, g.saved, g.q, g.k, g.v, g.it, g.lf, g.B, g.T,
                                                                 g.L, g.dk, g.dv, (float)eps, 0);
}
/* kern_cuda_mlstm_fwd takes the tensor-core chunk kernel for these L (LM = 64) */
static bool tc_path(int L) { return L > 32 && L <= 64; }
static void gpu_renan(const gpu_run &g) { /* every output back to NaN before another run */
    size_t n = (size_t)g.B * g.T;
    CHECK_CUDA(cudaMemset(g.h, 0xff, 4 * n * g.dv));
    CHECK_CUDA(cudaMemset(g.saved, 0xff, g.saved_bytes));
    CHECK_CUDA(cudaMemset(g.gq, 0xff, 4 * n * g.dk));
    CHECK_CUDA(cudaMemset(g.gk, 0xff, 4 * n * g.dk));
    CHECK_CUDA(cudaMemset(g.gv, 0xff, 4 * n * g.dv));
    CHECK_CUDA(cudaMemset(g.git, 0xff, 4 * n));
    CHECK_CUDA(cudaMemset(g.glf, 0xff, 4 * n));
}
/* tc: the model's backward (tensor cores where built), else the fp32 CUDA-core reference */
static int gpu_bwd(const gpu_run &g, double eps, bool tc) {
    return (tc ? kern_cuda_mlstm_bwd : kern_cuda_mlstm_bwd_fp32)(g.gq, g.gk, g.gv, g.git, g.glf, g.ws, g.dh, g.h,
                                                                 g.saved, g.q, g.k, g.v, g.it, g.lf, g.B, g.T, g.L,
                                                                 g.dk, g.dv, (float)eps, 0);
}

static int failures = 0, checks = 0;

/* One output of one case: the three errors (see the top of the file) and the verdict. */
static void check(const char *what, const float *got, const float *ref32, const double *ref64, size_t n) {
    const double tol = 1e-5;
    double e32 = rel_err(got, ref32, n), e64 = rel_err(got, ref64, n), ecpu = rel_err(ref32, ref64, n);
    double mw = 0;
    for (size_t i = 0; i < n; i++) mw = std::max(mw, fabs(ref64[i]));
    bool ok = e32 <= tol || e64 <= 4 * ecpu + 1e-6 * std::max(mw, 1.0) / std::max(mw, 1e-30);
    checks++, failures += !ok;
    printf("    %-8s gpu-f32 %.2e  gpu-f64 %.2e  cpu-f64 %.2e  %s\n", what, e32, e64, ecpu, ok ? "ok" : "FAIL");
}

/* The first nseq sequences of x. */
static inputs first_seqs(const inputs &x, int nseq) {
    size_t n = (size_t)nseq * x.T;
    auto first = [](const std::vector<float> &a, size_t len) { return std::vector<float>(a.begin(), a.begin() + len); };
    return inputs{nseq,
              x.T,
              x.dk,
              x.dv,
              first(x.q, n * x.dk),
              first(x.k, n * x.dk),
              first(x.v, n * x.dv),
              first(x.it, n),
              first(x.lf, n),
              first(x.dh, n * x.dv)};
}

/* h, the saved statistics and states, and every gradient, against the CPU reference r on the
 * first x.B sequences (x = first_seqs of the GPU's inputs); the GPU has run the whole batch. */
static void compare(const gpu_run &g, const inputs &x, const reference &r) {
    const int nseq = x.B;
    size_t n = (size_t)nseq * x.T;
    std::vector<float> h = to_host(g.h, n * x.dv), gq = to_host(g.gq, n * x.dk), gk = to_host(g.gk, n * x.dk);
    std::vector<float> gv = to_host(g.gv, n * x.dv), git = to_host(g.git, n), glf = to_host(g.glf, n);
    std::vector<float> saved = to_host(g.saved, g.saved_bytes / 4);
    size_t sl = kern_mlstm_saved_len(x.T, g.L, x.dk, x.dv);
    /* per sequence: m (the same recurrence, so bit for bit), den, then the states */
    size_t m_diff = 0;
    std::vector<float> den, den32, st, st32;
    std::vector<double> den64, st64;
    for (int b = 0; b < nseq; b++) {
        const float *gs = saved.data() + b * sl, *cs = r.saved.data() + b * sl;
        const double *ds = r.saved64.data() + b * sl;
        for (int t = 0; t < x.T; t++) m_diff += memcmp(&gs[t], &cs[t], 4) != 0;
        den.insert(den.end(), gs + x.T, gs + 2 * x.T), den32.insert(den32.end(), cs + x.T, cs + 2 * x.T);
        den64.insert(den64.end(), ds + x.T, ds + 2 * x.T);
        st.insert(st.end(), gs + 2 * x.T, gs + sl), st32.insert(st32.end(), cs + 2 * x.T, cs + sl);
        st64.insert(st64.end(), ds + 2 * x.T, ds + sl);
    }
    checks++, failures += m_diff != 0;
    printf("    %-8s %zu of %zu differ from the CPU's bits  %s\n", "m", m_diff, n, m_diff ? "FAIL" : "ok");
    check("h", h.data(), r.h.data(), r.h64.data(), h.size());
    check("den", den.data(), den32.data(), den64.data(), den.size());
    if (!st.empty()) check("states", st.data(), st32.data(), st64.data(), st.size());
    check("d_phi_q", gq.data(), r.gq.data(), r.gq64.data(), gq.size());
    check("d_phi_k", gk.data(), r.gk.data(), r.gk64.data(), gk.size());
    check("d_v", gv.data(), r.gv.data(), r.gv64.data(), gv.size());
    check("d_itilde", git.data(), r.git.data(), r.git64.data(), git.size());
    check("d_logf", glf.data(), r.glf.data(), r.glf64.data(), glf.size());
}

/* After the model's forward (tensor cores, 3xTF32) and the backward from it, on the GPU's whole
 * batch: saved but den must be the fp32 forward's bits (saved_fp32: its whole saved, decays
 * included); on the first x.B sequences, h and den that of the CPU forward r, every gradient that
 * of the CPU backward (f32 and f64) fed with this h and saved, and that of r's backward (the CPU's
 * forward and backward: what training sees end to end), all by check's rule. */
static void tc_check(const gpu_run &g, const inputs &x, const reference &r, const std::vector<float> &saved_fp32,
                     double eps) {
    const int nseq = x.B;
    size_t n = (size_t)nseq * x.T, sl = kern_mlstm_saved_len(x.T, g.L, x.dk, x.dv);
    std::vector<float> h = to_host(g.h, n * x.dv), gq = to_host(g.gq, n * x.dk), gk = to_host(g.gk, n * x.dk);
    std::vector<float> gv = to_host(g.gv, n * x.dv), git = to_host(g.git, n), glf = to_host(g.glf, n);
    std::vector<float> saved = to_host(g.saved, g.saved_bytes / 4);
    size_t diff = 0, cmp = 0;
    for (size_t i = 0; i < saved.size(); i++) {
        size_t b = i / sl, o = i % sl;
        if (b < (size_t)g.B && o >= (size_t)x.T && o < 2 * (size_t)x.T) continue; /* den */
        diff += memcmp(&saved[i], &saved_fp32[i], 4) != 0, cmp++;
    }
    checks++, failures += diff != 0;
    printf("    %-8s %zu of %zu (m, states, decays) differ from the fp32 forward's bits  %s\n", "saved", diff, cmp,
           diff ? "FAIL" : "ok");
    std::vector<float> den, den32;
    std::vector<double> den64;
    for (int b = 0; b < nseq; b++) {
        const float *gs = saved.data() + b * sl, *cs = r.saved.data() + b * sl;
        const double *ds = r.saved64.data() + b * sl;
        den.insert(den.end(), gs + x.T, gs + 2 * x.T), den32.insert(den32.end(), cs + x.T, cs + 2 * x.T);
        den64.insert(den64.end(), ds + x.T, ds + 2 * x.T);
    }
    check("h", h.data(), r.h.data(), r.h64.data(), h.size());
    check("den", den.data(), den32.data(), den64.data(), den.size());
    /* the CPU backward from the GPU's forward */
    kern_mlstm_dims d = {nseq, x.T, x.dk, x.dv, g.L, eps};
    size_t sc = kern_mlstm_scratch_len(g.L, x.dk, x.dv);
    std::vector<float> s32(saved.begin(), saved.begin() + nseq * sl), scratch(sc);
    std::vector<float> cq(n * x.dk), ck(n * x.dk), cv(n * x.dv), cit(n), clf(n);
    kern_mlstm_bwd_f32(&d, x.q.data(), x.k.data(), x.v.data(), x.it.data(), x.lf.data(), h.data(), x.dh.data(),
                       s32.data(), scratch.data(), cq.data(), ck.data(), cv.data(), cit.data(), clf.data());
    std::vector<double> q = widen(x.q), k = widen(x.k), v = widen(x.v), it = widen(x.it), lf = widen(x.lf);
    std::vector<double> dh = widen(x.dh), h64 = widen(h), s64 = widen(s32), scratch64(sc);
    std::vector<double> dq(n * x.dk), dk(n * x.dk), dv(n * x.dv), dit(n), dlf(n);
    kern_mlstm_bwd_f64(&d, q.data(), k.data(), v.data(), it.data(), lf.data(), h64.data(), dh.data(), s64.data(),
                       scratch64.data(), dq.data(), dk.data(), dv.data(), dit.data(), dlf.data());
    printf("    backward from this forward, against the CPU's backward from it:\n");
    check("d_phi_q", gq.data(), cq.data(), dq.data(), gq.size());
    check("d_phi_k", gk.data(), ck.data(), dk.data(), gk.size());
    check("d_v", gv.data(), cv.data(), dv.data(), gv.size());
    check("d_itilde", git.data(), cit.data(), dit.data(), git.size());
    check("d_logf", glf.data(), clf.data(), dlf.data(), glf.size());
    printf("    the same gradients against the CPU's forward and backward:\n");
    check("d_phi_q", gq.data(), r.gq.data(), r.gq64.data(), gq.size());
    check("d_phi_k", gk.data(), r.gk.data(), r.gk64.data(), gk.size());
    check("d_v", gv.data(), r.gv.data(), r.gv64.data(), gv.size());
    check("d_itilde", git.data(), r.git.data(), r.git64.data(), git.size());
    check("d_logf", glf.data(), r.glf.data(), r.glf64.data(), glf.size());
}

/* One case: the fp32 forward and backward against the CPU (compare), then, where L takes the
 * tensor-core path, the fp32 forward with the tensor-core backward (compare), and the model's
 * forward and backward, both on tensor cores (tc_check); on the first nseq sequences. */
static void run_case(const gpu_run &g, const inputs &x, int nseq, double eps) {
    inputs xs = first_seqs(x, nseq);
    reference r = cpu_reference(xs, g.L, eps);
    CHECK_OP(gpu_fwd(g, eps, false));
    CHECK_OP(gpu_bwd(g, eps, false));
    CHECK_CUDA(cudaDeviceSynchronize());
    printf("  fp32 forward and backward (CUDA cores):\n");
    compare(g, xs, r);
    if (!tc_path(g.L)) return;
    std::vector<float> saved_fp32 = to_host(g.saved, g.saved_bytes / 4);
    gpu_renan(g);
    CHECK_OP(gpu_fwd(g, eps, false));
    CHECK_OP(gpu_bwd(g, eps, true));
    CHECK_CUDA(cudaDeviceSynchronize());
    printf("  fp32 forward, tensor-core backward (3xTF32):\n");
    compare(g, xs, r);
    gpu_renan(g);
    CHECK_OP(gpu_fwd(g, eps, true));
    CHECK_OP(gpu_bwd(g, eps, true));
    CHECK_CUDA(cudaDeviceSynchronize());
    printf("  tensor-core forward and backward (3xTF32), the model's:\n");
    tc_check(g, xs, r, saved_fp32, eps);
}


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
    for (const auto &cs : cases) {
        int L = cs[0], T = cs[1], B = 3;
        /* one token: h = (q.k) v / (q.k + eps), so with the model's eps the q and k gradients are
         * O(eps) differences of O(1) terms, rounding noise alone; a larger eps checks the code */
        double e = T == 1 ? 1e-2 : eps;
        inputs x = make_inputs(B, T, D, D);
        gpu_run g = gpu_alloc(x, L);
        printf("L %d, T %d, B %d, eps %g:\n", L, T, B, e);
        run_case(g, x, B, e);
        gpu_free(g);
    }
    printf("\n");

    if (!(argc > 2 && !strcmp(argv[2], "check"))) {
        measure_ceilings(prop.multiProcessorCount);
        bench("design (4 x 32 heads)", 128, 4096, 64, D, D, eps);
        bench("SmolLM2 (8 x 9 heads)", 72, 2048, 64, D, D, eps);
    }

    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
