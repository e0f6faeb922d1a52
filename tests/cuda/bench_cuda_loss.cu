/* The harness of the top-k and the distillation loss (kernels/cuda/loss.cu): fresh random inputs
 * every run, each result compared with the CPU reference of kernels/train_ops.h (kern_topk_f32:
 * idx and values identical; kern_distill_loss_f32 row by row: ce and kl to 1e-5 relative, the
 * bf16 dlogits to 1e-2 relative, max |got - want| / max |want|), over rows with ignored targets,
 * targets among the top k, ties (bf16-rounded values, a few distinct values, both zeros), k = 1,
 * k = V, k = 1024 and V = 7, 999, 1000, 1001, 49152, 128256, 128257; then both kernels timed with
 * CUDA events (3 warm-ups, median of 20) at the distill step's shape (16384 x 49152, k 256) and
 * at Llama 3's vocabulary, against a large device-to-device copy. Exit 1 on a failed check.
 *     build/tests/bench_cuda_loss [seed [small]]   (small: only V <= 20000 and no timing, for
 *                                                  compute-sanitizer) */
#include "bench_cuda.h"
extern "C" { /* the CPU reference is C */
#include "kernels/train_ops.h"
}

#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

static int checks = 0, failures = 0;
static double copy_gbs;

static double rel_err(const std::vector<float> &got, const std::vector<float> &want) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < got.size(); i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        md = std::max(md, d != d ? INFINITY : d); /* NaN fails */
        mw = std::max(mw, (double)fabsf(want[i]));
    }
    return md / std::max(mw, 1e-30);
}

static void check(const char *what, const char *shape, double err, double tol) {
    bool ok = err <= tol;
    checks++;
    failures += !ok;
    printf("%-22s %-26s err %.2e (tol %.0e) %s\n", what, shape, err, tol, ok ? "ok" : "FAIL");
}
static void check_exact(const char *what, const char *shape, size_t mismatches) {
    checks++;
    failures += mismatches != 0;
    printf("%-22s %-26s %zu mismatches %s\n", what, shape, mismatches, mismatches ? "FAIL" : "ok");
}

enum gen { NORMAL, BF16, FEW, FEW_INF };
/* values: roughly normal (sum of three uniforms) times scale; bf16-rounded (ties); a few
 * distinct values with both zeros (heavy ties); the same with some infinities */
static std::vector<float> make_logits(size_t count, gen g, float scale) {
    std::vector<float> v(count);
    static const float few[] = {-2.0f, -1.0f, -0.0f, 0.0f, 0.5f, 1.0f, 1.5f, 2.0f};
    for (auto &x : v) {
        float f = scale * (frand() + frand() + frand());
        if (g == BF16) f = xd_bf16_to_f32(xd_f32_to_bf16(f));
        if (g == FEW || g == FEW_INF) f = few[(int)(urand() * 8)];
        if (g == FEW_INF && urand() < 0.001) f = urand() < 0.5 ? INFINITY : -INFINITY;
        x = f;
    }
    return v;
}

static size_t bits_differ(const std::vector<float> &a, const std::vector<float> &b) {
    size_t d = 0;
    for (size_t i = 0; i < a.size(); i++) d += memcmp(&a[i], &b[i], 4) != 0;
    return d;
}

/* GPU top-k of the rows of h (already at d) against kern_topk_f32; the GPU's idx/val stay at
 * didx/dval */
static void check_topk(const char *shape, const std::vector<float> &h, const float *d, int n, int V, int k,
                       int **didx, float **dval) {
    CHECK_CUDA(cudaMalloc(didx, sizeof(int) * n * k));
    CHECK_CUDA(cudaMalloc(dval, sizeof(float) * n * k));
    CHECK_OP(kern_cuda_topk_f32(*didx, *dval, d, n, V, k, 0));
    auto gi = to_host(*didx, (size_t)n * k);
    auto gv = to_host(*dval, (size_t)n * k);
    std::vector<int> wi((size_t)n * k);
    std::vector<float> wv((size_t)n * k);
    xd_err e;
    if (kern_topk_f32(wi.data(), wv.data(), h.data(), n, V, k, &e) < 0) {
        fprintf(stderr, "kern_topk_f32: %s\n", e.msg);
        exit(2);
    }
    size_t bad = 0;
    for (size_t i = 0; i < wi.size(); i++) bad += gi[i] != wi[i];
    check_exact("topk idx", shape, bad);
    check_exact("topk val (bits)", shape, bits_differ(gv, wv));
}

/* Top-k of teacher logits, then the distillation loss of student logits against it, row by
 * row against kern_distill_loss_f32 (per-row calls: g_ce = w_ce, g_kl = w_kl), and the means
 * against one call over all rows. */
static void check_distill(int n, int V, int k, gen tg, gen sg) {
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%d k %d", n, V, k);
    auto teacher = make_logits((size_t)n * V, tg, 3.0f), student = make_logits((size_t)n * V, sg, 3.0f);
    float *dt = to_device(teacher), *ds = to_device(student);
    int *didx;
    float *dval;
    check_topk(shape, teacher, dt, n, V, k, &didx, &dval);
    auto idx = to_host(didx, (size_t)n * k);
    auto tval = to_host(dval, (size_t)n * k);
    std::vector<int> targets(n);
    for (int r = 0; r < n; r++) {
        double u = urand();
        targets[r] = u < 0.15 ? KERN_IGNORE_INDEX : u < 0.3 ? idx[(size_t)r * k + (int)(urand() * k)]
                                                            : (int)(urand() * V);
    }
    targets[0] = KERN_IGNORE_INDEX;
    if (n > 1) targets[1] = idx[(size_t)k + k - 1];
    int *dtg = to_device(targets);
    float *dce, *dkl;
    kern_bf16 *dd;
    CHECK_CUDA(cudaMalloc(&dce, 4ull * n));
    CHECK_CUDA(cudaMalloc(&dkl, 4ull * n));
    CHECK_CUDA(cudaMalloc(&dd, 2ull * n * V));
    const float ce_scale = 0.8f, kl_scale = 1.7f;
    CHECK_OP(kern_cuda_distill_loss_f32(dce, dkl, dd, ds, dtg, didx, dval, n, V, k, ce_scale, kl_scale, 0));
    auto gce = to_host(dce, n), gkl = to_host(dkl, n);
    auto gd = widen(to_host(dd, (size_t)n * V));

    std::vector<float> wce(n), wkl(n), wd((size_t)n * V);
    xd_err e;
    for (int r = 0; r < n; r++) {
        double c, l;
        if (kern_distill_loss_f32(&c, &l, wd.data() + (size_t)r * V, student.data() + (size_t)r * V,
                                  &targets[r], idx.data() + (size_t)r * k, tval.data() + (size_t)r * k,
                                  1, V, k, ce_scale, kl_scale, &e) < 0) {
            fprintf(stderr, "kern_distill_loss_f32: %s\n", e.msg);
            exit(2);
        }
        wce[r] = (float)c, wkl[r] = (float)l;
    }
    double mce, mkl;
    if (kern_distill_loss_f32(&mce, &mkl, NULL, student.data(), targets.data(), idx.data(), tval.data(), n, V,
                              k, 1.0, 1.0, &e) < 0) {
        fprintf(stderr, "kern_distill_loss_f32: %s\n", e.msg);
        exit(2);
    }
    double sce = 0, skl = 0;
    int valid = 0;
    for (int r = 0; r < n; r++) sce += gce[r], skl += gkl[r], valid += targets[r] >= 0;
    sce = valid ? sce / valid : 0;
    skl /= n;
    std::vector<float> gk((size_t)n * k), wk((size_t)n * k);
    for (size_t i = 0; i < gk.size(); i++) {
        size_t at = (i / k) * V + idx[i];
        gk[i] = gd[at], wk[i] = wd[at];
    }
    check("distill ce (rows)", shape, rel_err(gce, wce), 1e-5);
    check("distill kl (rows)", shape, rel_err(gkl, wkl), 1e-5);
    check("distill ce (mean)", shape, fabs(sce - mce) / std::max(fabs(mce), 1e-30), 1e-5);
    check("distill kl (mean)", shape, fabs(skl - mkl) / std::max(fabs(mkl), 1e-30), 1e-5);
    check("distill dlogits", shape, rel_err(gd, wd), 1e-2);
    check("distill dlogits at idx", shape, rel_err(gk, wk), 1e-2);
    cudaFree(dt), cudaFree(ds), cudaFree(didx), cudaFree(dval), cudaFree(dtg), cudaFree(dce), cudaFree(dkl),
        cudaFree(dd);
}

/* device-side random logits for the timed shapes: a hash of (seed, index) into a sum of three
 * uniforms, times scale */
__global__ void fill_logits(float *x, size_t count, unsigned long long seed, float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long h = seed ^ (i * 0x9e3779b97f4a7c15ull);
        h ^= h >> 30, h *= 0xbf58476d1ce4e5b9ull, h ^= h >> 27, h *= 0x94d049bb133111ebull, h ^= h >> 31;
        float a = (float)(h & 0x1fffff), b = (float)((h >> 21) & 0x1fffff), c = (float)((h >> 42) & 0x1fffff);
        x[i] = scale * ((a + b + c) * (2.0f / 2097152.0f) - 3.0f);
    }
}

static void timed(int n, int V, int k) {
    char shape[64];
    snprintf(shape, sizeof shape, "%dx%d k %d", n, V, k);
    size_t count = (size_t)n * V;
    float *dt, *ds, *dval, *dce, *dkl;
    int *didx, *dtg;
    kern_bf16 *dd;
    CHECK_CUDA(cudaMalloc(&dt, 4 * count));
    CHECK_CUDA(cudaMalloc(&ds, 4 * count));
    CHECK_CUDA(cudaMalloc(&dd, 2 * count));
    CHECK_CUDA(cudaMalloc(&didx, 4ull * n * k));
    CHECK_CUDA(cudaMalloc(&dval, 4ull * n * k));
    CHECK_CUDA(cudaMalloc(&dce, 4ull * n));
    CHECK_CUDA(cudaMalloc(&dkl, 4ull * n));
    unsigned long long seed = (unsigned long long)(urand() * 0x1p53);
    fill_logits<<<132 * 8, 256>>>(dt, count, seed, 3.0f);
    fill_logits<<<132 * 8, 256>>>(ds, count, seed ^ 0x5555555555555555ull, 3.0f);
    CHECK_CUDA(cudaGetLastError());
    std::vector<int> targets(n);
    for (int r = 0; r < n; r++) targets[r] = urand() < 1.0 / 16 ? KERN_IGNORE_INDEX : (int)(urand() * V);
    dtg = to_device(targets);

    CHECK_OP(kern_cuda_topk_f32(didx, dval, dt, n, V, k, 0));
    CHECK_OP(kern_cuda_distill_loss_f32(dce, dkl, dd, ds, dtg, didx, dval, n, V, k, 1.0f / n, 1.0f / n, 0));
    /* the CPU on the last rows (size_t offsets) */
    int rows = 16, r0 = n - rows;
    std::vector<float> t(count / n * rows), st(count / n * rows);
    CHECK_CUDA(cudaMemcpy(t.data(), dt + (size_t)r0 * V, 4 * t.size(), cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(st.data(), ds + (size_t)r0 * V, 4 * st.size(), cudaMemcpyDeviceToHost));
    auto gi = to_host(didx + (size_t)r0 * k, (size_t)rows * k);
    auto gv = to_host(dval + (size_t)r0 * k, (size_t)rows * k);
    auto gce = to_host(dce + r0, rows), gkl = to_host(dkl + r0, rows);
    auto gd16 = to_host(dd + (size_t)r0 * V, (size_t)rows * V);
    std::vector<int> wi((size_t)rows * k);
    std::vector<float> wv((size_t)rows * k), wce(rows), wkl(rows), wd((size_t)rows * V);
    xd_err e;
    if (kern_topk_f32(wi.data(), wv.data(), t.data(), rows, V, k, &e) < 0) exit(2);
    size_t bad = 0;
    for (size_t i = 0; i < wi.size(); i++) bad += gi[i] != wi[i];
    char what[80];
    snprintf(what, sizeof what, "%s, last rows", shape);
    check_exact("topk idx", what, bad);
    check_exact("topk val (bits)", what, bits_differ(gv, wv));
    for (int r = 0; r < rows; r++) {
        double c, l;
        if (kern_distill_loss_f32(&c, &l, wd.data() + (size_t)r * V, st.data() + (size_t)r * V, &targets[r0 + r],
                                  gi.data() + (size_t)r * k, gv.data() + (size_t)r * k, 1, V, k, 1.0 / n,
                                  1.0 / n, &e) < 0)
            exit(2);
        wce[r] = (float)c, wkl[r] = (float)l;
    }
    check("distill ce (rows)", what, rel_err(gce, wce), 1e-5);
    check("distill kl (rows)", what, rel_err(gkl, wkl), 1e-5);
    check("distill dlogits", what, rel_err(widen(gd16), wd), 1e-2);

    double bytes_topk = 4.0 * count + 8.0 * n * k;
    double bytes_loss = 6.0 * count + 12.0 * n * k + 12.0 * n;
    double us_topk = median_us([&] { CHECK_OP(kern_cuda_topk_f32(didx, dval, dt, n, V, k, 0)); });
    double us_loss = median_us([&] {
        CHECK_OP(kern_cuda_distill_loss_f32(dce, dkl, dd, ds, dtg, didx, dval, n, V, k, 1.0f / n, 1.0f / n, 0));
    });
    /* the same results after the timed runs: deterministic */
    check_exact("topk deterministic", what,
                bits_differ(to_host(dval + (size_t)r0 * k, (size_t)rows * k), gv) +
                    (to_host(didx + (size_t)r0 * k, (size_t)rows * k) != gi));
    auto gd2 = to_host(dd + (size_t)r0 * V, (size_t)rows * V);
    check_exact("distill deterministic", what,
                (gd2 != gd16) + bits_differ(to_host(dce + r0, rows), gce) + bits_differ(to_host(dkl + r0, rows), gkl));
    printf("TIME topk          %-26s %9.1f us  %7.1f GB/s (%3.0f%% of copy)  %8.0f rows/ms\n", shape, us_topk,
           bytes_topk / us_topk / 1e3, 100.0 * bytes_topk / us_topk / 1e3 / copy_gbs, n / us_topk * 1e3);
    printf("TIME distill_loss  %-26s %9.1f us  %7.1f GB/s (%3.0f%% of copy)  %8.0f rows/ms\n", shape, us_loss,
           bytes_loss / us_loss / 1e3, 100.0 * bytes_loss / us_loss / 1e3 / copy_gbs, n / us_loss * 1e3);
    printf("     (bytes: topk reads the logits once, 4 nV + 8 nk; the loss reads them once and writes bf16, 6 nV)\n");
    cudaFree(dt), cudaFree(ds), cudaFree(dd), cudaFree(didx), cudaFree(dval), cudaFree(dce), cudaFree(dkl),
        cudaFree(dtg);
}

int main(int argc, char **argv) {
    bench_seed(argc, argv);
    bool small = argc > 2 && !strcmp(argv[2], "small");
    cudaDeviceProp prop;
    CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, %.0f MB L2; seed %llu\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize / 1e6, (unsigned long long)rng_state);
    { /* the ceiling: a large device-to-device copy */
        copy_gbs = copy_ceiling_gbs();
        printf("ceiling: device copy %.0f GB/s (read + write)\n\n", copy_gbs);
    }
    { /* argument checks */
        int bad = 0;
        bad += kern_cuda_topk_f32(NULL, NULL, NULL, 1, 100, 0, 0) != -1;
        bad += kern_cuda_topk_f32(NULL, NULL, NULL, 1, 100, 101, 0) != -1;
        bad += kern_cuda_topk_f32(NULL, NULL, NULL, 1, 5000, 1025, 0) != -1;
        bad += kern_cuda_distill_loss_f32(NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 100, 101, 1, 1, 0) != -1;
        bad += kern_cuda_topk_f32(NULL, NULL, NULL, 0, 100, 10, 0) != 0; /* no rows: nothing to do */
        check_exact("arguments", "k 0, k > V, k 1025, n 0", bad);
    }
    struct { int n, V, k; gen g; } tk[] = {
        {64, 49152, 256, NORMAL}, {32, 49152, 1024, NORMAL}, {16, 128256, 256, NORMAL}, {16, 128256, 1024, BF16},
        {64, 1000, 1, NORMAL},    {64, 1000, 1000, NORMAL},  {64, 999, 37, NORMAL},     {32, 49152, 256, BF16},
        {32, 49152, 256, FEW},    {16, 5000, 1024, FEW_INF}, {64, 7, 7, FEW},           {32, 1001, 1000, FEW},
        {16, 128257, 512, FEW_INF}, {8, 20000, 64, NORMAL}, {4, 20000, 1024, BF16},
    };
    static const char *gname[] = {"normal", "bf16", "few", "few+inf"};
    for (auto &c : tk) {
        if (small && c.V > 20000) continue;
        char shape[64];
        snprintf(shape, sizeof shape, "%dx%d k %d %s", c.n, c.V, c.k, gname[c.g]);
        auto h = make_logits((size_t)c.n * c.V, c.g, 3.0f);
        float *d = to_device(h);
        int *di;
        float *dv;
        check_topk(shape, h, d, c.n, c.V, c.k, &di, &dv);
        cudaFree(d), cudaFree(di), cudaFree(dv);
    }
    printf("\n");
    struct { int n, V, k; gen tg, sg; } dl[] = {
        {64, 49152, 256, NORMAL, NORMAL}, {32, 49152, 1024, NORMAL, BF16}, {16, 128256, 256, NORMAL, NORMAL},
        {64, 1000, 1, NORMAL, NORMAL},    {64, 1000, 1000, BF16, NORMAL},  {64, 999, 37, NORMAL, NORMAL},
        {8, 128257, 256, FEW, NORMAL},    {32, 49152, 256, FEW, BF16},     {16, 1001, 1000, NORMAL, FEW},
    };
    for (auto &c : dl)
        if (!small || c.V <= 20000) check_distill(c.n, c.V, c.k, c.tg, c.sg);
    printf("\n");
    if (!small) {
        timed(16384, 49152, 256);
        timed(4096, 128256, 256);
    }
    printf("\n%d checks: %d passed, %d failed\n", checks, checks - failures, failures);
    return failures ? 1 : 0;
}
