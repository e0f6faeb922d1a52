/* The student ops' CUDA harness (kernels/cuda/student.cu): fresh random inputs every run, each op
 * compared with the CPU reference of kernels/ (bf16 outputs to 1e-2 relative max|diff|/max|ref|,
 * fp32 outputs to 1e-5 against _f64 and _f32, except dM against _f32: see below), then timed
 * with CUDA events (3 warm-ups, median of 20) at SmolLM2's shape (8 x 2048 tokens, 9 heads,
 * d 64). Exit 1 on a mismatch.
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

static uint64_t rng_state;
static float frand(void) { /* xorshift, uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}
static std::vector<uint16_t> random_bf16(size_t n, float scale) {
    std::vector<uint16_t> v(n);
    for (auto &x : v) x = xd_f32_to_bf16(scale * frand());
    return v;
}
static std::vector<float> random_f32(size_t n, float scale) {
    std::vector<float> v(n);
    for (auto &x : v) x = scale * frand();
    return v;
}
static std::vector<float> widen(const std::vector<uint16_t> &v) {
    std::vector<float> w(v.size());
    for (size_t i = 0; i < v.size(); i++) w[i] = xd_bf16_to_f32(v[i]);
    return w;
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
 * (256-token chunks, then the chunks), so their difference is of the order eps * sqrt(T) ~ 1e-5
 * relative with cancellation; the GPU is held to 1e-5 against _f64 and to 1e-4 against _f32. */
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
    report("feature_map_bwd dM/f32", shape, rel_err(gdM, dM), 1e-4, 0, 0);
    report("feature_map_bwd repeat", shape, same ? 0.0 : 1.0, 0, 0, 0);
    cudaFree(d_x), cudaFree(d_M), cudaFree(d_phi), cudaFree(d_dphi), cudaFree(d_phiin), cudaFree(d_dx), cudaFree(d_dM);
}

int main(int argc, char **argv) {
    rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) : 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
    if (!rng_state) rng_state = 1;
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
    printf("\n%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
