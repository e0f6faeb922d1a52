/* The step form's harness (kernels/cuda/step.cu): fresh random inputs every run, compared with the
 * CPU reference, then timed with CUDA events (3 warm-ups, median of 20) against a device copy
 * measured here. Exit 1 on any mismatch.
 *   1. decode attention against kern_swa_step_f32 on the bf16 inputs widened to float: the
 *      student's cache (one buffer of S + W rows, sinks then the ring, filled as
 *      kern_swa_cache_push fills the CPU's) at positions before the sinks, inside the first window
 *      and far past it, GQA groups of 1 to 12 heads, d 64 and 128; and plain key ranges (the
 *      teacher's causal cache, a sliding window, two ranges) up to 32768 keys. Rows outside the
 *      key set hold NaN, so reading one shows. Tolerance 1e-2 of max |cpu| (bf16 output); a
 *      second run must give the same bits.
 *   2. 50 mLSTM steps of several heads from the empty state against kern_mlstm_step_f32: h, C, n
 *      within 1e-5 of max |cpu| at every step, m bit for bit.
 *   3. the state after a chunkwise forward (kern_cuda_mlstm_fwd, then kern_cuda_mlstm_final_state)
 *      against kern_mlstm_fwd_f32's `final` (C, n within 1e-5, m bit for bit; the f64 reference's
 *      distances printed beside), then 20 steps continued from it on both sides (h, C, n within
 *      1e-5, m bit for bit).
 *   4. timings: decode attention at 32768 keys and at the student's 516 (SmolLM2's H 9, G 3 and a
 *      Llama-3.2-1B shape H 32, G 8, d 64), GB/s of K + V read; the mLSTM step for BH 9 x 30 and
 *      32 x 16. Each call reads a different copy of its cache or states, enough copies to exceed
 *      the L2 several times (a token's layers evict each other), so the figures are from memory.
 * Inputs of the mLSTM: the model's kind (softmax features, gates in regimes that move the max).
 *     build/tests/bench_cuda_step [seed] [check]     (check: the comparisons only) */
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

static int failures = 0, checks = 0;

static void verdict(bool ok) { checks++, failures += !ok; }
static void expect(bool ok, const char *what) {
    verdict(ok);
    printf("  %-66s %s\n", what, ok ? "ok" : "FAIL");
}

template <typename T> static T *device_nan(size_t n) { /* 0xff bytes: NaN as bf16 and as float */
    T *d;
    CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(sizeof(T) * n, 16)));
    CHECK_CUDA(cudaMemset(d, 0xff, std::max<size_t>(sizeof(T) * n, 16)));
    return d;
}
/* max |got - want| / max |want| (NaN or inf in got: infinite) */
template <typename A, typename B> static double rel_err(const A *got, const B *want, size_t n) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i];
        if (!(fabs(g) < INFINITY)) return INFINITY;
        md = std::max(md, fabs(g - (double)want[i]));
        mw = std::max(mw, fabs((double)want[i]));
    }
    return md / std::max(mw, 1e-30);
}
static size_t bits_differ(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(a + i, b + i, 4) != 0;
    return d;
}

/* ---- 1. decode attention ---- */

static const uint16_t BF16_NAN = 0x7fc0;

/* The GPU's answer for the key set (s1, n1, s2, n2) of the cache ck, cv (host bf16, rows of G*d),
 * run twice; *same: whether the second run gave the same bits. */
static std::vector<float> gpu_decode(const std::vector<uint16_t> &q, const std::vector<uint16_t> &ck,
                                     const std::vector<uint16_t> &cv, int s1, int n1, int s2, int n2, int H, int G,
                                     int d, bool *same) {
    kern_bf16 *dq = to_device(q), *dk = to_device(ck), *dv = to_device(cv), *out = device_nan<kern_bf16>((size_t)H * d);
    void *ws;
    CHECK_CUDA(cudaMalloc(&ws, kern_cuda_decode_attn_ws_bytes(H, d, n1 + n2)));
    CHECK_OP(kern_cuda_decode_attn_bf16(out, dq, dk, dv, s1, n1, s2, n2, H, G, d, ws, 0));
    std::vector<uint16_t> a = to_host(out, (size_t)H * d);
    CHECK_CUDA(cudaMemset(out, 0xff, 2 * (size_t)H * d));
    CHECK_OP(kern_cuda_decode_attn_bf16(out, dq, dk, dv, s1, n1, s2, n2, H, G, d, ws, 0));
    *same = a == to_host(out, (size_t)H * d);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(out), cudaFree(ws);
    return widen(a);
}

static void decode_verdict(const char *label, const std::vector<float> &got, const std::vector<float> &ref, bool same) {
    const double tol = 1e-2, err = rel_err(got.data(), ref.data(), ref.size());
    verdict(err <= tol), verdict(same);
    printf("  %-66s err %.2e (tol %.0e) %s%s\n", label, err, tol, err <= tol ? "ok" : "FAIL",
           same ? "" : ", second run differs: FAIL");
}

/* The student's query at pos: the CPU's sink and ring arrays filled by kern_swa_cache_push for
 * positions 0 .. pos, the GPU's one buffer of S + W rows the same way (the positions whose ring
 * row a later one overwrites, and that are no sinks, are skipped on both sides). */
static void check_student(int pos, int W, int S, int H, int G, int d, float qscale) {
    const size_t row = (size_t)G * d;
    std::vector<uint16_t> ck((S + W) * row, BF16_NAN), cv((S + W) * row, BF16_NAN);
    std::vector<float> sk(std::max(S, 1) * row), sv(std::max(S, 1) * row), rk(W * row), rv(W * row);
    for (int p = 0; p <= pos; p++) {
        if (p >= S && p <= pos - W) continue;
        std::vector<uint16_t> kb = random_bf16(row, 1.0f), vb = random_bf16(row, 1.0f);
        std::vector<float> kf = widen(kb), vf = widen(vb);
        kern_swa_cache_push_f32(sk.data(), sv.data(), rk.data(), rv.data(), kf.data(), vf.data(), p, G, d, W, S);
        if (p < S) std::copy(kb.begin(), kb.end(), ck.begin() + p * row), std::copy(vb.begin(), vb.end(), cv.begin() + p * row);
        std::copy(kb.begin(), kb.end(), ck.begin() + (S + p % W) * row);
        std::copy(vb.begin(), vb.end(), cv.begin() + (S + p % W) * row);
    }
    std::vector<uint16_t> q = random_bf16((size_t)H * d, qscale);
    std::vector<float> qf = widen(q), ref((size_t)H * d);
    kern_swa_step_f32(ref.data(), qf.data(), sk.data(), sv.data(), rk.data(), rv.data(), pos, H, G, d, W, S);
    const int ns = std::min(S, std::max(0, pos - W + 1)), nr = std::min(pos + 1, W);
    bool same;
    std::vector<float> got = gpu_decode(q, ck, cv, 0, ns, S, nr, H, G, d, &same);
    char label[128];
    snprintf(label, sizeof label, "student pos %5d W %4d S %2d H %2d G %d d %3d: %d sinks + %d ring", pos, W, S, H, G, d,
             ns, nr);
    decode_verdict(label, got, ref, same);
}

/* Plain key ranges of a cache of `rows` rows: the CPU sees the key rows gathered in order, as a
 * ring of n rows at position n - 1 with no sinks (every row a key). */
static void check_ranges(const char *what, int rows, int s1, int n1, int s2, int n2, int H, int G, int d, float qscale) {
    const size_t row = (size_t)G * d;
    const int n = n1 + n2;
    std::vector<uint16_t> ck(rows * row, BF16_NAN), cv(rows * row, BF16_NAN);
    std::vector<float> gk(n * row), gv(n * row);
    for (int i = 0; i < n; i++) {
        const size_t r = i < n1 ? s1 + i : s2 + (i - n1);
        for (size_t e = 0; e < row; e++) {
            ck[r * row + e] = xd_f32_to_bf16(frand()), cv[r * row + e] = xd_f32_to_bf16(frand());
            gk[i * row + e] = xd_bf16_to_f32(ck[r * row + e]), gv[i * row + e] = xd_bf16_to_f32(cv[r * row + e]);
        }
    }
    std::vector<uint16_t> q = random_bf16((size_t)H * d, qscale);
    std::vector<float> qf = widen(q), ref((size_t)H * d);
    kern_swa_step_f32(ref.data(), qf.data(), NULL, NULL, gk.data(), gv.data(), n - 1, H, G, d, n, 0);
    bool same;
    std::vector<float> got = gpu_decode(q, ck, cv, s1, n1, s2, n2, H, G, d, &same);
    char label[128];
    snprintf(label, sizeof label, "%-12s [%d, +%d) [%d, +%d) H %2d G %d d %3d", what, s1, n1, s2, n2, H, G, d);
    decode_verdict(label, got, ref, same);
}

/* ---- 2, 3. the mLSTM ---- */

static const int DK = 64;


/* B sequences of T tokens (bench_cuda_mlstm's kind): features softmax(2 N(0,1)), v N(0,1), gates
 * in runs of three regimes: logf ~ 0 with itilde up to +-20, logf down to -20, ordinary. */
struct seqs {
    int B, T;
    std::vector<float> q, k, v, it, lf; /* [B, T, 64], [B, T] */
};
static seqs make_seqs(int B, int T) {
    seqs x{B, T, {}, {}, {}, {}, {}};
    const size_t n = (size_t)B * T;
    softmax_features(x.q, n, DK);
    softmax_features(x.k, n, DK);
    x.v.resize(n * DK);
    for (auto &e : x.v) e = (float)nrand();
    gate_regimes(x.it, x.lf, n);
    return x;
}

/* B heads' states on both sides: the GPU's [B, 64 * 64], [B, 64], [B] and the CPU's. */
struct states {
    int B;
    float *C, *n, *m;      /* device */
    std::vector<float> hC, hn; /* the CPU states' memory */
    std::vector<kern_mlstm_state_f32> cpu;
};
static states make_states(int B) {
    states s;
    s.B = B;
    s.C = device_nan<float>((size_t)B * DK * DK), s.n = device_nan<float>((size_t)B * DK), s.m = device_nan<float>(B);
    s.hC.assign((size_t)B * DK * DK, 0.0f), s.hn.assign((size_t)B * DK, 0.0f), s.cpu.resize(B);
    for (int b = 0; b < B; b++) kern_mlstm_state_init_f32(&s.cpu[b], &s.hC[(size_t)b * DK * DK], &s.hn[(size_t)b * DK], DK, DK);
    return s;
}
static void free_states(states &s) { cudaFree(s.C), cudaFree(s.n), cudaFree(s.m); }

/* The largest distances seen: h, C, n relative, m in differing bits. */
struct step_errs {
    double h = 0, C = 0, n = 0;
    size_t m = 0;
};
static void compare_states(const states &s, step_errs &e) {
    std::vector<float> C = to_host(s.C, (size_t)s.B * DK * DK), n = to_host(s.n, (size_t)s.B * DK), m = to_host(s.m, s.B);
    std::vector<float> cm(s.B);
    for (int b = 0; b < s.B; b++) cm[b] = s.cpu[b].m;
    e.C = std::max(e.C, rel_err(C.data(), s.hC.data(), C.size()));
    e.n = std::max(e.n, rel_err(n.data(), s.hn.data(), n.size()));
    e.m += bits_differ(m.data(), cm.data(), s.B);
}

/* Token t of each sequence of x through one step on both sides; h compared, and the states when
 * full (else only at the end, by the caller). */
static void step_both(states &s, const seqs &x, int t, double eps, step_errs &e, bool full) {
    const int B = s.B;
    std::vector<float> q((size_t)B * DK), k((size_t)B * DK), v((size_t)B * DK), it(B), lf(B), ref((size_t)B * DK);
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * x.T + t;
        std::copy_n(&x.q[o * DK], DK, &q[(size_t)b * DK]), std::copy_n(&x.k[o * DK], DK, &k[(size_t)b * DK]);
        std::copy_n(&x.v[o * DK], DK, &v[(size_t)b * DK]), it[b] = x.it[o], lf[b] = x.lf[o];
        kern_mlstm_step_f32(&s.cpu[b], &q[(size_t)b * DK], &k[(size_t)b * DK], &v[(size_t)b * DK], it[b], lf[b],
                            (float)eps, &ref[(size_t)b * DK]);
    }
    float *dq = to_device(q), *dk = to_device(k), *dv = to_device(v), *dit = to_device(it), *dlf = to_device(lf);
    float *h = device_nan<float>((size_t)B * DK);
    CHECK_OP(kern_cuda_mlstm_step(h, s.C, s.n, s.m, dq, dk, dv, dit, dlf, B, DK, DK, (float)eps, 0));
    std::vector<float> got = to_host(h, (size_t)B * DK);
    e.h = std::max(e.h, rel_err(got.data(), ref.data(), ref.size()));
    if (full) compare_states(s, e);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dit), cudaFree(dlf), cudaFree(h);
}

static void step_verdict(const char *label, const step_errs &e) {
    const double tol = 1e-5;
    const bool ok = e.h <= tol && e.C <= tol && e.n <= tol && e.m == 0;
    verdict(ok);
    printf("  %-44s h %.2e  C %.2e  n %.2e  m: %zu differ  %s\n", label, e.h, e.C, e.n, e.m, ok ? "ok" : "FAIL");
}

static void check_steps(int B, int T, double eps) {
    seqs x = make_seqs(B, T);
    states s = make_states(B);
    CHECK_CUDA(cudaMemset(s.C, 0, sizeof(float) * B * DK * DK));
    CHECK_CUDA(cudaMemset(s.n, 0, sizeof(float) * B * DK));
    std::vector<float> minf(B, -INFINITY);
    CHECK_CUDA(cudaMemcpy(s.m, minf.data(), sizeof(float) * B, cudaMemcpyHostToDevice));
    step_errs e;
    for (int t = 0; t < T; t++) step_both(s, x, t, eps, e, true);
    char label[96];
    snprintf(label, sizeof label, "%d heads, %d steps from the empty state:", B, T);
    step_verdict(label, e);
    free_states(s);
}

/* The forward on the GPU, its final state against the CPU forward's (f32 and, for the record,
 * f64), then `more` steps continued on both sides. */
static void check_final(int B, int T, int L, int more, double eps) {
    seqs x = make_seqs(B, T);
    const size_t n = (size_t)B * T, sl = kern_mlstm_saved_len(T, L, DK, DK);
    /* CPU: f32 and f64 forwards with their final states */
    kern_mlstm_dims dims = {B, T, DK, DK, L, eps};
    states s = make_states(B);
    std::vector<float> h32(std::max<size_t>(n * DK, 1)), saved32(std::max<size_t>(B * sl, 1));
    std::vector<float> scratch(kern_mlstm_scratch_len(L, DK, DK));
    kern_mlstm_fwd_f32(&dims, x.q.data(), x.k.data(), x.v.data(), x.it.data(), x.lf.data(), h32.data(), saved32.data(),
                       scratch.data(), s.cpu.data());
    std::vector<double> q(x.q.begin(), x.q.end()), k(x.k.begin(), x.k.end()), v(x.v.begin(), x.v.end());
    std::vector<double> it(x.it.begin(), x.it.end()), lf(x.lf.begin(), x.lf.end());
    std::vector<double> h64(h32.size()), saved64(saved32.size()), scratch64(scratch.size());
    std::vector<double> C64((size_t)B * DK * DK), n64((size_t)B * DK);
    std::vector<kern_mlstm_state_f64> fin64(B);
    for (int b = 0; b < B; b++) kern_mlstm_state_init_f64(&fin64[b], &C64[(size_t)b * DK * DK], &n64[(size_t)b * DK], DK, DK);
    kern_mlstm_fwd_f64(&dims, q.data(), k.data(), v.data(), it.data(), lf.data(), h64.data(), saved64.data(),
                       scratch64.data(), fin64.data());
    /* GPU: the chunkwise forward, then the final state from its saved */
    auto up = [](std::vector<float> a) { /* T = 0: a buffer of one element, not a copy of nothing */
        a.resize(std::max<size_t>(a.size(), 1));
        return to_device(a);
    };
    float *dq = up(x.q), *dk = up(x.k), *dv = up(x.v), *dit = up(x.it), *dlf = up(x.lf);
    float *h = device_nan<float>(n * DK), *saved = device_nan<float>(kern_cuda_mlstm_saved_bytes(B, T, L, DK, DK) / 4);
    CHECK_OP(kern_cuda_mlstm_fwd(h, saved, dq, dk, dv, dit, dlf, B, T, L, DK, DK, (float)eps, 0));
    CHECK_OP(kern_cuda_mlstm_final_state(s.C, s.n, s.m, saved, dk, dv, dit, dlf, B, T, L, DK, DK, 0));
    step_errs e;
    compare_states(s, e);
    std::vector<float> C = to_host(s.C, C64.size()), nn = to_host(s.n, n64.size());
    const double tol = 1e-5;
    const bool ok = e.C <= tol && e.n <= tol && e.m == 0;
    verdict(ok);
    char label[96];
    snprintf(label, sizeof label, "B %d T %4d L %2d final state:", B, T, L);
    printf("  %-44s C %.2e (gpu-f64 %.2e, cpu-f64 %.2e)  n %.2e (%.2e, %.2e)  m: %zu differ  %s\n", label, e.C,
           rel_err(C.data(), C64.data(), C.size()), rel_err(s.hC.data(), C64.data(), C.size()), e.n,
           rel_err(nn.data(), n64.data(), nn.size()), rel_err(s.hn.data(), n64.data(), nn.size()), e.m,
           ok ? "ok" : "FAIL");
    /* the step form continues from either side's state */
    seqs y = make_seqs(B, more);
    step_errs ce;
    for (int t = 0; t < more; t++) step_both(s, y, t, eps, ce, false);
    compare_states(s, ce);
    snprintf(label, sizeof label, "  then %d steps:", more);
    step_verdict(label, ce);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dit), cudaFree(dlf), cudaFree(h), cudaFree(saved);
    free_states(s);
}

/* ---- 4. timings ---- */

static double copy_gbs;
static size_t l2_bytes;

static void measure_copy(void) {
    copy_gbs = copy_ceiling_gbs();
    printf("ceiling: device copy of 1 GiB %.0f GB/s (read + write)\n", copy_gbs);
}

/* copies of `bytes` (at least 2) so that all of them exceed 4 L2s */
static int copies_for(size_t bytes) { return std::max<int>(2, (int)((4 * l2_bytes + bytes - 1) / bytes) + 1); }

/* nc copies of host data in one device buffer */
template <typename T> static T *device_copies(const std::vector<T> &h, int nc) {
    T *d;
    CHECK_CUDA(cudaMalloc(&d, sizeof(T) * h.size() * nc));
    CHECK_CUDA(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
    for (int c = 1; c < nc; c++)
        CHECK_CUDA(cudaMemcpy(d + c * h.size(), d, sizeof(T) * h.size(), cudaMemcpyDeviceToDevice));
    return d;
}

static void bench_decode(const char *name, int H, int G, int d, int n) {
    const size_t elems = (size_t)n * G * d, bytes = 2 * elems * sizeof(kern_bf16);
    const int nc = copies_for(bytes);
    kern_bf16 *k = device_copies(random_bf16(elems, 1.0f), nc), *v = device_copies(random_bf16(elems, 1.0f), nc);
    kern_bf16 *q = to_device(random_bf16((size_t)H * d, 3.0f)), *out = device_nan<kern_bf16>((size_t)H * d);
    void *ws;
    CHECK_CUDA(cudaMalloc(&ws, kern_cuda_decode_attn_ws_bytes(H, d, n)));
    int c = 0;
    double us = median_us([&] {
        CHECK_OP(kern_cuda_decode_attn_bf16(out, q, k + c * elems, v + c * elems, 0, n, 0, 0, H, G, d, ws, 0));
        c = (c + 1) % nc;
    });
    printf("  decode %-16s H %2d G %d d %3d, %5d keys: %7.1f us  %6.0f GB/s of K + V (%3.0f%% of copy), %d copies\n",
           name, H, G, d, n, us, bytes / us / 1e3, 100.0 * bytes / us / 1e3 / copy_gbs, nc);
    cudaFree(k), cudaFree(v), cudaFree(q), cudaFree(out), cudaFree(ws);
}

static void bench_step(const char *name, int BH, double eps) {
    /* per head: C and n read and written, m too, q, k, v and the gates read, h written */
    const size_t per = (size_t)DK * DK + DK + 1, bytes = sizeof(float) * (size_t)BH * (2 * per + 4 * DK + 2);
    const int nc = copies_for(sizeof(float) * BH * per);
    seqs x = make_seqs(BH, 1);
    std::vector<float> C0((size_t)BH * DK * DK), n0((size_t)BH * DK), m0(BH);
    for (auto &e : C0) e = (float)(0.01 * urand());
    for (auto &e : n0) e = (float)(0.1 * urand());
    for (auto &e : m0) e = (float)nrand();
    float *C = device_copies(C0, nc), *n = device_copies(n0, nc), *m = device_copies(m0, nc);
    float *q = to_device(x.q), *k = to_device(x.k), *v = to_device(x.v), *it = to_device(x.it), *lf = to_device(x.lf);
    float *h = device_nan<float>((size_t)BH * DK);
    int c = 0;
    double us = median_us([&] {
        CHECK_OP(kern_cuda_mlstm_step(h, C + c * C0.size(), n + c * n0.size(), m + c * m0.size(), q, k, v, it, lf, BH, DK,
                                      DK, (float)eps, 0));
        c = (c + 1) % nc;
    });
    printf("  mlstm step %-12s BH %3d: %7.1f us  %6.0f GB/s (%3.0f%% of copy), %d copies\n", name, BH, us,
           bytes / us / 1e3, 100.0 * bytes / us / 1e3 / copy_gbs, nc);
    cudaFree(C), cudaFree(n), cudaFree(m), cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(it), cudaFree(lf), cudaFree(h);
}

int main(int argc, char **argv) {
    bench_seed(argc, argv);
    const bool check_only = argc > 2 && strcmp(argv[2], "check") == 0;
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    l2_bytes = prop.l2CacheSize;
    printf("device: %s, %d SMs, %.0f MB L2; seed %llu\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6,
           (unsigned long long)rng_state);
    const double eps = 1e-6;

    printf("arguments:\n");
    {
        kern_bf16 *b = device_nan<kern_bf16>(4096);
        float *f = device_nan<float>(4096);
        void *ws;
        CHECK_CUDA(cudaMalloc(&ws, kern_cuda_decode_attn_ws_bytes(4, 128, 8)));
        expect(kern_cuda_decode_attn_bf16(b, b, b, b, 0, 4, 0, 0, 2, 1, 96, ws, 0) == -1 &&
                   strstr(kern_cuda_last_error(), "head dim") != NULL,
               "decode: d = 96 refused, the message naming the head dim");
        expect(kern_cuda_decode_attn_bf16(b, b, b, b, 0, 4, 0, 0, 3, 2, 64, ws, 0) == -1, "decode: H % G != 0 refused");
        expect(kern_cuda_decode_attn_bf16(b, b, b, b, 0, 0, 5, 0, 2, 1, 64, ws, 0) == -1, "decode: no keys refused");
        expect(kern_cuda_decode_attn_bf16(b, b + 1, b, b, 0, 4, 0, 0, 2, 1, 64, ws, 0) == -1,
               "decode: a misaligned q refused");
        expect(kern_cuda_decode_attn_ws_bytes(4, 64, 0) == 0 && kern_cuda_decode_attn_ws_bytes(4, 96, 10) == 0,
               "decode: no workspace size for no keys or d = 96");
        expect(kern_cuda_mlstm_step(f, f, f, f, f, f, f, f, f, 2, 32, 32, 1e-6f, 0) == -1 &&
                   strstr(kern_cuda_last_error(), "dk = dv = 64") != NULL,
               "mlstm step: dk = dv = 32 refused");
        expect(kern_cuda_mlstm_final_state(f, f, f, f, f, f, f, f, 2, 10, 65, 64, 64, 0) == -1,
               "mlstm final state: L = 65 refused");
        expect(kern_cuda_mlstm_step(f, f, f, f, f, f, f, f, f, 0, 64, 64, 1e-6f, 0) == 0 &&
                   kern_cuda_mlstm_final_state(f, f, f, f, f, f, f, f, 0, 10, 64, 64, 64, 0) == 0,
               "mlstm: no heads do nothing and succeed");
        CHECK_CUDA(cudaDeviceSynchronize());
        cudaFree(b), cudaFree(f), cudaFree(ws);
    }

    printf("decode attention against kern_swa_step_f32:\n");
    /* pos, W, S, H, G, d, q scale */
    const struct {
        int pos, W, S, H, G, d;
        float qs;
    } students[] = {
        {0, 8, 4, 2, 1, 64, 3.0f},        /* the first token: one key */
        {2, 8, 4, 4, 2, 64, 3.0f},        /* pos < S */
        {6, 8, 4, 9, 3, 64, 3.0f},        /* S < pos < W: the ring only */
        {9, 8, 4, 8, 2, 128, 3.0f},       /* the ring just past its first turn: 2 sinks */
        {20, 8, 4, 9, 3, 64, 3.0f},       /* pos > W: all sinks + the ring */
        {100, 1, 1, 4, 1, 64, 3.0f},      /* W = 1: itself and the sink */
        {515, 512, 4, 9, 3, 64, 3.0f},    /* SmolLM2's student at its first full window */
        {1000, 512, 4, 9, 3, 64, 3.0f},   /* far past it */
        {5000, 512, 4, 32, 8, 64, 3.0f},  /* the Llama-1B shape */
        {5000, 512, 4, 32, 8, 64, 30.0f}, /* peaked: the running max moves by far */
        {3000, 300, 16, 16, 2, 128, 3.0f}, /* d 128, groups of 8 */
        {700, 64, 0, 6, 6, 64, 3.0f},     /* no sinks, one query head a kv head */
        {77, 32, 2, 10, 2, 64, 3.0f},     /* groups of 5 */
        {77, 32, 2, 14, 2, 128, 3.0f},    /* groups of 7 */
        {40000, 2048, 4, 24, 2, 64, 3.0f}, /* groups of 12: two blocks of 6 */
        {300, 100, 10, 11, 1, 64, 3.0f},  /* a group of 11 (prime): one head a block */
    };
    for (const auto &c : students) check_student(c.pos, c.W, c.S, c.H, c.G, c.d, c.qs);
    /* what, rows of the cache, s1, n1, s2, n2, H, G, d, q scale */
    check_ranges("causal", 1, 0, 1, 0, 0, 9, 3, 64, 3.0f);
    check_ranges("causal", 37, 0, 37, 0, 0, 9, 3, 64, 3.0f);
    check_ranges("causal", 4096, 0, 4096, 0, 0, 32, 8, 64, 3.0f);
    check_ranges("causal", 32768, 0, 32768, 0, 0, 9, 3, 64, 3.0f);
    check_ranges("causal", 32768, 0, 32768, 0, 0, 32, 8, 64, 3.0f);
    check_ranges("causal", 32768, 0, 32768, 0, 0, 16, 4, 128, 3.0f);
    check_ranges("causal", 32768, 0, 32768, 0, 0, 9, 3, 64, 30.0f);
    check_ranges("window", 5000, 4000, 999, 0, 0, 9, 3, 64, 3.0f);
    check_ranges("two ranges", 5000, 100, 50, 3000, 2000, 32, 8, 64, 3.0f);
    check_ranges("two ranges", 300, 200, 100, 0, 7, 8, 8, 128, 3.0f);
    check_ranges("second only", 100, 50, 0, 90, 5, 9, 3, 64, 3.0f);

    printf("mLSTM step against kern_mlstm_step_f32 (tolerance 1e-5 of max |cpu|, m bit for bit):\n");
    check_steps(7, 50, eps);
    check_steps(3, 50, 1e-2);

    printf("mLSTM state after a chunkwise forward against kern_mlstm_fwd_f32's final:\n");
    const int finals[][3] = {{3, 0, 64},  {3, 1, 64},   {2, 5, 64},   {3, 63, 64}, {2, 64, 64},
                             {3, 65, 64}, {2, 200, 64}, {3, 1000, 64}, {3, 200, 16}, {2, 1000, 16}};
    for (const auto &f : finals) check_final(f[0], f[1], f[2], 20, eps);
    fflush(stdout);

    if (!check_only) {
        printf("\ntimings (median of 20, each call on another copy of its data):\n");
        measure_copy();
        bench_decode("SmolLM2", 9, 3, 64, 32768);
        bench_decode("Llama-1B", 32, 8, 64, 32768);
        bench_decode("SmolLM2 student", 9, 3, 64, 516);
        bench_decode("Llama-1B student", 32, 8, 64, 516);
        bench_step("SmolLM2", 9 * 30, eps);
        bench_step("Llama-1B", 32 * 16, eps);
    }

    printf("\n%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
