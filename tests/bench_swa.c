/* Benchmark (not a test): CPU time per token of the sliding-window + sink attention forward and
 * backward at SmolLM2-135M's shape, T = 2048, W = 512, S = 4, H = 9, G = 3, d = 64, in f32 and f64.
 * Usage: bench_swa [reps]   (OPENBLAS_NUM_THREADS sets the BLAS threads). */
#include "common/xd.h"
#include "kernels/swa.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { T = 2048, W = 512, S = 4, H = 9, G = 3, D = 64 };

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Useful multiply-adds: the keys query t attends to, times d, twice (scores and P V). */
static double useful_flops_fwd(void) {
    double keys = 0;
    for (int t = 0; t < T; t++) {
        int win = t + 1 < W ? t + 1 : W, old = t - W + 1 > 0 ? t - W + 1 : 0;
        keys += win + (S < old ? S : old);
    }
    return 2.0 * 2.0 * H * D * keys;
}

typedef struct timing {
    double wall, cpu;
} timing;

static void report(const char *what, timing best, double flops) {
    printf("  %-12s %8.3f ms/token wall  %8.3f ms/token CPU  (%6.1f ms per sequence, %5.1f "
           "GFLOP/s useful)\n",
           what, 1e3 * best.wall / T, 1e3 * best.cpu / T, 1e3 * best.wall,
           flops / best.wall * 1e-9);
}

#define BENCH_TYPE(real, sfx)                                                                      \
    static void bench_##sfx(int reps) {                                                            \
        size_t nq = (size_t)T * H * D, nkv = (size_t)T * G * D;                                    \
        xd_rng r;                                                                                  \
        xd_rng_seed(&r, 1);                                                                        \
        real *q = malloc(sizeof(real) * nq), *k = malloc(sizeof(real) * nkv);                      \
        real *v = malloc(sizeof(real) * nkv), *out = malloc(sizeof(real) * nq);                    \
        real *dout = malloc(sizeof(real) * nq), *dq = malloc(sizeof(real) * nq);                   \
        real *dk = malloc(sizeof(real) * nkv), *dv = malloc(sizeof(real) * nkv);                   \
        real *lse = malloc(sizeof(real) * T * H);                                                  \
        real *scratch = malloc(sizeof(real) * kern_swa_scratch_elems(T, W, S));                    \
        for (size_t i = 0; i < nq; i++) q[i] = (real)xd_rng_normal(&r), dout[i] = q[i] * 0.5f;     \
        for (size_t i = 0; i < nkv; i++)                                                           \
            k[i] = (real)xd_rng_normal(&r), v[i] = (real)xd_rng_normal(&r);                        \
        timing bf = {1e30, 1e30}, bb = {1e30, 1e30};                                               \
        for (int rep = 0; rep < reps; rep++) {                                                     \
            double w0 = xd_now(), c0 = cpu_now();                                                  \
            kern_swa_fwd_##sfx(out, lse, q, k, v, T, H, G, D, W, S, scratch);                      \
            double w1 = xd_now(), c1 = cpu_now();                                                  \
            memset(dq, 0, sizeof(real) * nq);                                                      \
            memset(dk, 0, sizeof(real) * nkv);                                                     \
            memset(dv, 0, sizeof(real) * nkv);                                                     \
            double w2 = xd_now(), c2 = cpu_now();                                                  \
            kern_swa_bwd_##sfx(dq, dk, dv, dout, q, k, v, out, lse, T, H, G, D, W, S, scratch);    \
            double w3 = xd_now(), c3 = cpu_now();                                                  \
            if (w1 - w0 < bf.wall) bf = (timing){w1 - w0, c1 - c0};                                \
            if (w3 - w2 < bb.wall) bb = (timing){w3 - w2, c3 - c2};                                \
        }                                                                                          \
        double f = useful_flops_fwd();                                                             \
        printf(#sfx " (best of %d):\n", reps);                                                     \
        report("forward", bf, f);                                                                  \
        report("backward", bb, 2.5 * f);                                                           \
        free(q), free(k), free(v), free(out), free(dout), free(dq), free(dk), free(dv);            \
        free(lse), free(scratch);                                                                  \
    }

BENCH_TYPE(float, f32)
BENCH_TYPE(double, f64)

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1) reps = 1;
    printf("SWA T=%d W=%d S=%d H=%d G=%d d=%d, OpenBLAS threads %d\n", T, W, S, H, G, D,
           openblas_get_num_threads());
    printf("(useful GFLOP/s: the keys each query attends to; the backward counts five products\n"
           " per key: scores, dP, dv, dq, dk, against the forward's two: scores, P V)\n");
    bench_f32(reps);
    bench_f64(reps);
    return 0;
}
