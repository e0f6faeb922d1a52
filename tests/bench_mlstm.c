/* bench_mlstm — CPU time of the mLSTM kernels at SmolLM2 size: 9 heads of 64, T = 2048, chunk 64.
 * Not a test: prints time per token (all heads) for the chunkwise forward and backward in f32
 * (and f64 for comparison) and for the step form. OpenBLAS threads: OPENBLAS_NUM_THREADS.
 * Usage: bench_mlstm [T] [repeats] */
#include "common/xd.h"
#include "kernels/mlstm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { H = 9, D = 64, L = 64 };

static void *must(void *p) {
    if (!p) {
        fprintf(stderr, "bench_mlstm: out of memory\n");
        exit(1);
    }
    return p;
}

typedef struct timing {
    double wall, cpu; /* best over repeats, seconds */
} timing;

static void take(timing *t, double w0, clock_t c0) {
    double w = xd_now() - w0, c = (double)(clock() - c0) / CLOCKS_PER_SEC;
    if (t->wall == 0 || w < t->wall) t->wall = w;
    if (t->cpu == 0 || c < t->cpu) t->cpu = c;
}

static void report(const char *what, timing t, int T) {
    printf("%-28s %9.2f us/token (CPU %9.2f us/token), %7.3f us per head-token\n", what,
           1e6 * t.wall / T, 1e6 * t.cpu / T, 1e6 * t.cpu / T / H);
}

#define BENCH(real, SUF)                                                                         \
    static void bench_##SUF(int T, int reps) {                                                   \
        kern_mlstm_dims d = {H, T, D, D, L, 1e-6};                                               \
        size_t n = (size_t)H * T, sl = kern_mlstm_saved_len(T, L, D, D);                         \
        real *q = must(malloc(sizeof(real) * n * D)), *k = must(malloc(sizeof(real) * n * D));   \
        real *v = must(malloc(sizeof(real) * n * D)), *h = must(malloc(sizeof(real) * n * D));   \
        real *dh = must(malloc(sizeof(real) * n * D)), *it = must(malloc(sizeof(real) * n));     \
        real *lf = must(malloc(sizeof(real) * n)), *saved = must(malloc(sizeof(real) * H * sl)); \
        real *scratch = must(malloc(sizeof(real) * kern_mlstm_scratch_len(L, D, D)));            \
        real *g[5];                                                                              \
        size_t glen[5] = {n * D, n * D, n * D, n, n};                                            \
        for (int a = 0; a < 5; a++) g[a] = must(malloc(sizeof(real) * glen[a]));                 \
        xd_rng r;                                                                                \
        xd_rng_seed(&r, 7);                                                                      \
        for (size_t i = 0; i < n * D; i++) {                                                     \
            q[i] = (real)xd_rng_uniform(&r) / D;                                                 \
            k[i] = (real)xd_rng_uniform(&r) / D;                                                 \
            v[i] = xd_rng_normal(&r);                                                            \
            dh[i] = xd_rng_normal(&r);                                                           \
        }                                                                                        \
        for (size_t i = 0; i < n; i++) {                                                         \
            it[i] = xd_rng_normal(&r);                                                           \
            lf[i] = (real)-log1p(exp(-(3.0 + xd_rng_normal(&r))));                               \
        }                                                                                        \
        timing tf = {0, 0}, tb = {0, 0}, ts = {0, 0};                                            \
        for (int rep = 0; rep < reps; rep++) {                                                   \
            double w0 = xd_now();                                                                \
            clock_t c0 = clock();                                                                \
            kern_mlstm_fwd_##SUF(&d, q, k, v, it, lf, h, saved, scratch, NULL);                  \
            take(&tf, w0, c0);                                                                   \
            w0 = xd_now(), c0 = clock();                                                         \
            kern_mlstm_bwd_##SUF(&d, q, k, v, it, lf, h, dh, saved, scratch, g[0], g[1], g[2],   \
                                 g[3], g[4]);                                                    \
            take(&tb, w0, c0);                                                                   \
        }                                                                                        \
        /* Step form: all heads, one token after another, as in generation. */                   \
        real *C = must(malloc(sizeof(real) * H * D * D));                                        \
        real *nn = must(malloc(sizeof(real) * H * D));                                           \
        kern_mlstm_state_##SUF st[H];                                                            \
        for (int rep = 0; rep < reps; rep++) {                                                   \
            for (int b = 0; b < H; b++)                                                          \
                kern_mlstm_state_init_##SUF(&st[b], C + (size_t)b * D * D, nn + (size_t)b * D,   \
                                            D, D);                                               \
            double w0 = xd_now();                                                                \
            clock_t c0 = clock();                                                                \
            for (int t = 0; t < T; t++)                                                          \
                for (int b = 0; b < H; b++) {                                                    \
                    size_t o = (size_t)b * T + t;                                                \
                    kern_mlstm_step_##SUF(&st[b], q + o * D, k + o * D, v + o * D, it[o], lf[o], \
                                          (real)1e-6, h + o * D);                                \
                }                                                                                \
            take(&ts, w0, c0);                                                                   \
        }                                                                                        \
        double sum = 0;                                                                          \
        for (size_t i = 0; i < n; i++) sum += g[3][i];                                           \
        printf(#SUF ": T=%d, %d heads of %d, L=%d (checksum %.6g)\n", T, H, D, L, sum);          \
        report("  chunkwise forward", tf, T);                                                    \
        report("  chunkwise backward", tb, T);                                                   \
        report("  step form (generation)", ts, T);                                               \
        free(q), free(k), free(v), free(h), free(dh), free(it), free(lf), free(saved);           \
        free(scratch), free(C), free(nn);                                                        \
        for (int a = 0; a < 5; a++) free(g[a]);                                                  \
    }

BENCH(float, f32)
BENCH(double, f64)

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 2048, reps = argc > 2 ? atoi(argv[2]) : 5;
    if (T < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_mlstm [T >= 1] [repeats >= 1]\n");
        return 2;
    }
    bench_f32(T, reps);
    bench_f64(T, reps);
    return 0;
}
