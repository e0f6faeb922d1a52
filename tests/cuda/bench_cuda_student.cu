/* The student ops' CUDA harness (kernels/cuda/student.cu): fresh random inputs every run, each op
 * compared with the CPU reference of kernels/ (bf16 outputs to 1e-2 relative max|diff|/max|ref|,
 * fp32 outputs to 1e-5 against _f64 and _f32, except the gates' dw against _f32: see there;
 * the backwards' results must also repeat bit for bit), then timed
 * with CUDA events (3 warm-ups, median of 20) at SmolLM2's shape (8 x 2048 tokens, 9 heads,
 * d 64; the gates at D 576). Exit 1 on a mismatch.
 *     build/tests/bench_cuda_student [seed] */
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

static std::vector<float> random_f32(size_t n, float scale) {
    std::vector<float> v(n);
    for (auto &x : v) x = scale * frand();
    return v;
}
template <typename A, typename B> static std::vector<B> convert(const std::vector<A> &v) {
    return std::vector<B>(v.begin(), v.end());
}
template <typename W> static double rel_err(const std::vector<float> &got, const std::vector<W> &want) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < got.size(); i++) {
        md = std::max(md, fabs((double)got[i] - (double)want[i]));
        mw = std::max(mw, fabs((double)want[i]));
    }
    return md / std::max(mw, 1e-30);
}

static int failures = 0, checks = 0;

static void report(const char *op, const char *shape, double err, double tol, double us, double bytes) {
    bool ok = err <= tol;
    failures += !ok;
    checks++;
    printf("%-22s %-26s err %.2e (tol %.0e) %-4s", op, shape, err, tol, ok ? "ok" : "FAIL");
    if (us > 0) printf(" %9.1f us", us);
    if (bytes > 0 && us > 0) printf("  %7.1f GB/s", bytes / us / 1e3);
    printf("\n");
}

static void check_rope(int n, int heads, int hd, int pos0, bool timed) {
    int half = hd / 2, n_pos = pos0 + n;
    std::vector<double> inv(half);
    for (int i = 0; i < half; i++) inv[i] = pow(100000.0, -2.0 * i / hd); /* SmolLM2's theta */
    std::vector<float> ct((size_t)n_pos * half), st((size_t)n_pos * half);
    kern_rope_tables_f32(ct.data(), st.data(), 0, n_pos, half, inv.data());
    float *dct = to_device(ct), *dst = to_device(st);
    size_t count = (size_t)n * heads * hd;
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%dx%d pos0 %d", n, heads, hd, pos0);
    for (int dir = 0; dir < 2; dir++) {
        auto x = random_bf16(count, 2.0f);
        kern_bf16 *dx = to_device(x);
        if (dir == 0) CHECK_OP(kern_cuda_rope_bf16(dx, n, heads, hd, pos0, dct, dst, 0));
        else CHECK_OP(kern_cuda_rope_backward_bf16(dx, n, heads, hd, pos0, dct, dst, 0));
        auto got = widen(to_host(dx, count));
        auto want = widen(x);
        if (dir == 0) kern_rope_f32(want.data(), n, heads, hd, pos0, ct.data(), st.data());
        else kern_rope_backward_f32(want.data(), n, heads, hd, pos0, ct.data(), st.data());
        double us = 0;
        if (timed) /* in place: each run rotates the last one's output, which is fine for timing */
            us = median_us([&] {
                if (dir == 0) CHECK_OP(kern_cuda_rope_bf16(dx, n, heads, hd, pos0, dct, dst, 0));
                else CHECK_OP(kern_cuda_rope_backward_bf16(dx, n, heads, hd, pos0, dct, dst, 0));
            });
        report(dir == 0 ? "rope" : "rope_backward", shape, rel_err(got, want), 1e-2, us,
               4.0 * count + 8.0 * n * half);
        cudaFree(dx);
    }
    cudaFree(dct), cudaFree(dst);
}

/* Hedgehog feature map of one layer. The references run head by head on the bf16 inputs
 * widened exactly. The backward is fed the CPU _f32 phi on both sides (and that phi widened to
 * double for _f64), so it is checked on its own. dM sums T = 16384 products per entry: the
 * CPU _f32 does it in float (blocks of 64 rows, one float add per block), the GPU in float
 * (256-token chunks, then the chunks): both stay near 1e-6 relative (two H200 runs: <= 8e-7), so
 * both references hold it to 1e-5. */
static void check_feature_map(int T, int H, int d, bool timed) {
    size_t cnt = (size_t)T * H * d, mc = (size_t)H * d * d;
    int ld = H * d;
    char shape[64];
    snprintf(shape, sizeof shape, "T %d H %d d %d", T, H, d);
    auto xb = random_bf16(cnt, 1.0f);
    std::vector<float> M(mc);
    for (int h = 0; h < H; h++) /* identity plus noise, like a trained Hedgehog map */
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                M[((size_t)h * d + i) * d + j] = (i == j ? 2.0f : 0.0f) + 0.4f * frand();
    auto x = widen(xb);
    std::vector<double> x64 = convert<float, double>(x), M64 = convert<float, double>(M);

    /* forward */
    std::vector<float> phi(cnt);
    std::vector<double> phi64(cnt);
    for (int h = 0; h < H; h++) {
        kern_feature_map_fwd_f32(phi.data() + h * d, ld, x.data() + h * d, ld, M.data() + (size_t)h * d * d, T, d);
        kern_feature_map_fwd_f64(phi64.data() + h * d, ld, x64.data() + h * d, ld, M64.data() + (size_t)h * d * d, T, d);
    }
    kern_bf16 *d_x = to_device(xb);
    float *d_M = to_device(M), *d_phi;
    CHECK_CUDA(cudaMalloc(&d_phi, 4 * cnt));
    CHECK_OP(kern_cuda_feature_map_fwd_bf16(d_phi, d_x, d_M, T, H, d, 0));
    auto got = to_host(d_phi, cnt);
    double us = timed ? median_us([&] { CHECK_OP(kern_cuda_feature_map_fwd_bf16(d_phi, d_x, d_M, T, H, d, 0)); }) : 0;
    double fbytes = 6.0 * cnt + 4.0 * mc;
    report("feature_map (vs f64)", shape, rel_err(got, phi64), 1e-5, us, fbytes);
    report("feature_map (vs f32)", shape, rel_err(got, phi), 1e-5, 0, 0);

    /* backward: adds into dx, dM, which start non-zero */
    auto dphi = random_f32(cnt, 1.0f), dx0 = random_f32(cnt, 1e-3f), dM0 = random_f32(mc, 1e-3f);
    std::vector<float> dx = dx0, dM = dM0, scratch(kern_feature_map_scratch_elems(d));
    std::vector<double> dx64 = convert<float, double>(dx0), dM64 = convert<float, double>(dM0),
                        dphi64 = convert<float, double>(dphi), phi_in64 = convert<float, double>(phi),
                        scratch64(kern_feature_map_scratch_elems(d));
    for (int h = 0; h < H; h++) {
        size_t mo = (size_t)h * d * d;
        kern_feature_map_bwd_f32(dx.data() + h * d, dM.data() + mo, dphi.data() + h * d, phi.data() + h * d, ld,
                                 x.data() + h * d, ld, M.data() + mo, T, d, scratch.data());
        kern_feature_map_bwd_f64(dx64.data() + h * d, dM64.data() + mo, dphi64.data() + h * d,
                                 phi_in64.data() + h * d, ld, x64.data() + h * d, ld, M64.data() + mo, T, d,
                                 scratch64.data());
    }
    float *d_dphi = to_device(dphi), *d_phiin = to_device(phi), *d_dx = to_device(dx0), *d_dM = to_device(dM0);
    CHECK_OP(kern_cuda_feature_map_bwd_bf16(d_dx, d_dM, d_dphi, d_phiin, d_x, d_M, T, H, d, 0));
    auto gdx = to_host(d_dx, cnt), gdM = to_host(d_dM, mc);
    /* determinism: a second run from the same start gives the same bits */
    CHECK_CUDA(cudaMemcpy(d_dx, dx0.data(), 4 * cnt, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(d_dM, dM0.data(), 4 * mc, cudaMemcpyHostToDevice));
    CHECK_OP(kern_cuda_feature_map_bwd_bf16(d_dx, d_dM, d_dphi, d_phiin, d_x, d_M, T, H, d, 0));
    auto gdx2 = to_host(d_dx, cnt), gdM2 = to_host(d_dM, mc);
    bool same = !memcmp(gdx.data(), gdx2.data(), 4 * cnt) && !memcmp(gdM.data(), gdM2.data(), 4 * mc);
    us = timed ? median_us([&] { CHECK_OP(kern_cuda_feature_map_bwd_bf16(d_dx, d_dM, d_dphi, d_phiin, d_x, d_M, T, H, d, 0)); }) : 0;
    double bbytes = 18.0 * cnt + 4.0 * mc * (2 + 2.0 * ((T + 255) / 256));
    report("feature_map_bwd dx/f64", shape, rel_err(gdx, dx64), 1e-5, us, bbytes);
    report("feature_map_bwd dx/f32", shape, rel_err(gdx, dx), 1e-5, 0, 0);
    report("feature_map_bwd dM/f64", shape, rel_err(gdM, dM64), 1e-5, 0, 0);
    report("feature_map_bwd dM/f32", shape, rel_err(gdM, dM), 1e-5, 0, 0);
    report("feature_map_bwd repeat", shape, same ? 0.0 : 1.0, 0, 0, 0);
    cudaFree(d_x), cudaFree(d_M), cudaFree(d_phi), cudaFree(d_dphi), cudaFree(d_phiin), cudaFree(d_dx), cudaFree(d_dM);
}

/* Input and forget gates. The backward is fed the CPU _f32 log_f on both sides. The CPU _f32
 * adds each token's x * g into dw one float add at a time (16384 in a row at SmolLM2's shape),
 * so dw is held to 1e-5 against _f64 and to 1e-4 against _f32. */
static void check_gates(int T, int D, int H, bool timed) {
    char shape[64];
    snprintf(shape, sizeof shape, "T %d D %d H %d", T, D, H);
    size_t DH = (size_t)D * H, TH = (size_t)T * H;
    auto xb = random_bf16((size_t)T * D, 1.0f);
    auto x = widen(xb);
    float ws = 2.0f / sqrtf((float)D);
    auto w_i = random_f32(DH, ws), w_f = random_f32(DH, ws), b_i = random_f32(H, 1.0f), b_f = random_f32(H, 6.0f);
    std::vector<float> it(TH), lf(TH);
    kern_gates_fwd_f32(it.data(), lf.data(), x.data(), w_i.data(), b_i.data(), w_f.data(), b_f.data(), T, D, H);
    auto x64 = convert<float, double>(x), wi64 = convert<float, double>(w_i), wf64 = convert<float, double>(w_f),
         bi64 = convert<float, double>(b_i), bf64 = convert<float, double>(b_f);
    std::vector<double> it64(TH), lf64(TH);
    kern_gates_fwd_f64(it64.data(), lf64.data(), x64.data(), wi64.data(), bi64.data(), wf64.data(), bf64.data(), T, D, H);
    kern_bf16 *d_x = to_device(xb);
    float *d_wi = to_device(w_i), *d_wf = to_device(w_f), *d_bi = to_device(b_i), *d_bf = to_device(b_f), *d_it, *d_lf;
    CHECK_CUDA(cudaMalloc(&d_it, 4 * TH));
    CHECK_CUDA(cudaMalloc(&d_lf, 4 * TH));
    CHECK_OP(kern_cuda_gates_fwd_bf16(d_it, d_lf, d_x, d_wi, d_bi, d_wf, d_bf, T, D, H, 0));
    auto git = to_host(d_it, TH), glf = to_host(d_lf, TH);
    double us = timed ? median_us([&] { CHECK_OP(kern_cuda_gates_fwd_bf16(d_it, d_lf, d_x, d_wi, d_bi, d_wf, d_bf, T, D, H, 0)); }) : 0;
    double fbytes = 2.0 * T * D + 8.0 * DH + 8.0 * TH;
    report("gates itilde (vs f64)", shape, rel_err(git, it64), 1e-5, us, fbytes);
    report("gates itilde (vs f32)", shape, rel_err(git, it), 1e-5, 0, 0);
    report("gates log_f (vs f64)", shape, rel_err(glf, lf64), 1e-5, 0, 0);
    report("gates log_f (vs f32)", shape, rel_err(glf, lf), 1e-5, 0, 0);

    auto dit = random_f32(TH, 1.0f), dlf = random_f32(TH, 1.0f);
    auto dx0 = random_f32((size_t)T * D, 1e-3f), dwi0 = random_f32(DH, 1e-3f), dwf0 = random_f32(DH, 1e-3f),
         dbi0 = random_f32(H, 1e-3f), dbf0 = random_f32(H, 1e-3f);
    std::vector<float> dx = dx0, dwi = dwi0, dwf = dwf0, dbi = dbi0, dbf = dbf0;
    kern_gates_bwd_f32(dx.data(), dwi.data(), dbi.data(), dwf.data(), dbf.data(), dit.data(), dlf.data(), x.data(),
                       lf.data(), w_i.data(), w_f.data(), T, D, H);
    auto dx64 = convert<float, double>(dx0), dwi64 = convert<float, double>(dwi0), dwf64 = convert<float, double>(dwf0),
         dbi64 = convert<float, double>(dbi0), dbf64 = convert<float, double>(dbf0),
         dit64 = convert<float, double>(dit), dlf64 = convert<float, double>(dlf), lfin64 = convert<float, double>(lf);
    kern_gates_bwd_f64(dx64.data(), dwi64.data(), dbi64.data(), dwf64.data(), dbf64.data(), dit64.data(), dlf64.data(),
                       x64.data(), lfin64.data(), wi64.data(), wf64.data(), T, D, H);
    float *d_dit = to_device(dit), *d_dlf = to_device(dlf), *d_lfin = to_device(lf), *d_dx = to_device(dx0),
          *d_dwi = to_device(dwi0), *d_dwf = to_device(dwf0), *d_dbi = to_device(dbi0), *d_dbf = to_device(dbf0);
    auto run = [&] {
        CHECK_OP(kern_cuda_gates_bwd_bf16(d_dx, d_dwi, d_dbi, d_dwf, d_dbf, d_dit, d_dlf, d_x, d_lfin, d_wi, d_wf, T, D,
                                          H, 0));
    };
    run();
    auto gdx = to_host(d_dx, (size_t)T * D), gdwi = to_host(d_dwi, DH), gdwf = to_host(d_dwf, DH),
         gdbi = to_host(d_dbi, H), gdbf = to_host(d_dbf, H);
    { /* a second run from the same start gives the same bits */
        CHECK_CUDA(cudaMemcpy(d_dx, dx0.data(), 4 * dx0.size(), cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(d_dwi, dwi0.data(), 4 * DH, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(d_dwf, dwf0.data(), 4 * DH, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(d_dbi, dbi0.data(), 4 * H, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(d_dbf, dbf0.data(), 4 * H, cudaMemcpyHostToDevice));
        run();
        bool same = to_host(d_dx, dx0.size()) == gdx && to_host(d_dwi, DH) == gdwi && to_host(d_dwf, DH) == gdwf &&
                    to_host(d_dbi, H) == gdbi && to_host(d_dbf, H) == gdbf;
        report("gates_bwd repeat", shape, same ? 0.0 : 1.0, 0, 0, 0);
    }
    us = timed ? median_us(run) : 0;
    double bbytes = 2.0 * T * D + 8.0 * T * D + 12.0 * TH * (1 + (D + 31) / 32) + 16.0 * DH;
    report("gates_bwd dx (vs f64)", shape, rel_err(gdx, dx64), 1e-5, us, bbytes);
    report("gates_bwd dx (vs f32)", shape, rel_err(gdx, dx), 1e-5, 0, 0);
    report("gates_bwd dw_i (vs f64)", shape, rel_err(gdwi, dwi64), 1e-5, 0, 0);
    report("gates_bwd dw_i (vs f32)", shape, rel_err(gdwi, dwi), 1e-4, 0, 0);
    report("gates_bwd dw_f (vs f64)", shape, rel_err(gdwf, dwf64), 1e-5, 0, 0);
    report("gates_bwd dw_f (vs f32)", shape, rel_err(gdwf, dwf), 1e-4, 0, 0);
    report("gates_bwd db_i (vs f64)", shape, rel_err(gdbi, dbi64), 1e-5, 0, 0);
    report("gates_bwd db_f (vs f64)", shape, rel_err(gdbf, dbf64), 1e-5, 0, 0);
    cudaFree(d_x), cudaFree(d_wi), cudaFree(d_wf), cudaFree(d_bi), cudaFree(d_bf), cudaFree(d_it), cudaFree(d_lf);
    cudaFree(d_dit), cudaFree(d_dlf), cudaFree(d_lfin), cudaFree(d_dx), cudaFree(d_dwi), cudaFree(d_dwf);
    cudaFree(d_dbi), cudaFree(d_dbf);
}

int main(int argc, char **argv) {
    bench_seed(argc, argv);
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs; seed %llu\n", prop.name, prop.multiProcessorCount,
           (unsigned long long)rng_state);
    check_rope(16384, 9, 64, 0, true); /* SmolLM2: 8 x 2048 tokens, 9 query heads */
    check_rope(16384, 3, 64, 0, true); /* its 3 kv heads */
    check_rope(1000, 5, 128, 37, false);
    check_feature_map(16384, 9, 64, true);
    check_feature_map(1000, 3, 128, false); /* T not a multiple of a chunk or a tile */
    check_feature_map(77, 2, 32, false);
    check_gates(16384, 576, 9, true); /* SmolLM2: D 576, 9 heads */
    check_gates(300, 100, 32, false); /* D not a multiple of 32, H at its limit */
    printf("\n%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
