/* tests/cuda/bench_host.h — the host side the CUDA harnesses (bench_cuda_*.cu) and the host
 * emulators (emu_cuda_*) share: their random numbers and the kinds of inputs they draw. */
#ifndef XD_BENCH_HOST_H
#define XD_BENCH_HOST_H

#include "kernels/cuda/cuda_ops.h"
extern "C" { /* bf16 conversions */
#include "common/xd.h"
}

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <vector>

/* a kernels/cuda call that failed stops the harness with its message */
#define CHECK_OP(call)                                                                            \
    do {                                                                                          \
        if ((call) != 0) {                                                                        \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, kern_cuda_last_error());          \
            exit(2);                                                                              \
        }                                                                                         \
    } while (0)

/* The harness's random numbers: xorshift from the seed given on the command line (else the
 * clock), printed so a failing run can be repeated. */
static uint64_t rng_state;
static inline uint64_t bench_seed(int argc, char **argv) {
    rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) : 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL);
    if (!rng_state) rng_state = 1;
    return rng_state;
}
static inline double urand(void) { /* uniform in [0, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}
static inline float frand(void) { return (float)urand() * 2.0f - 1.0f; } /* uniform in [-1, 1) */
static inline std::vector<uint16_t> random_bf16(size_t n, float scale) {
    std::vector<uint16_t> v(n);
    for (auto &x : v) x = xd_f32_to_bf16(scale * frand());
    return v;
}
static inline std::vector<float> widen(const std::vector<uint16_t> &v) {
    std::vector<float> w(v.size());
    for (size_t i = 0; i < v.size(); i++) w[i] = xd_bf16_to_f32(v[i]);
    return w;
}

/* The mLSTM harnesses' inputs (the model's kind): n rows of dk softmax(2 N(0,1)) features, and
 * gates in runs of 1-24 tokens of three regimes that move the stabiliser: forget ~ 1 with input
 * gates over [-20, 20], strong forgetting, and logsigmoid(3 + 2 N) with N(0,1) input gates. */
static inline double nrand(void) { /* Box-Muller */
    double u = urand(), w = urand();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * w);
}
static inline double logsigmoid(double x) { return x > 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }
static inline void softmax_features(std::vector<float> &f, size_t n, int dk) {
    f.resize(n * dk);
    for (size_t t = 0; t < n; t++) {
        float *row = f.data() + t * dk;
        double sum = 0;
        for (int a = 0; a < dk; a++) sum += row[a] = (float)exp(2.0 * nrand());
        for (int a = 0; a < dk; a++) row[a] = (float)(row[a] / sum);
    }
}
static inline void gate_regimes(std::vector<float> &it, std::vector<float> &lf, size_t n) {
    it.resize(n), lf.resize(n);
    int regime = 0, left = 0;
    for (size_t t = 0; t < n; t++) {
        if (left-- <= 0) regime = (int)(urand() * 3), left = 1 + (int)(urand() * 24);
        double u = urand();
        it[t] = regime == 2 ? (float)nrand() : (float)(-20.0 + 40.0 * urand());
        lf[t] = regime == 0 ? (float)(-1e-6 * u) : regime == 1 ? (float)(-20.0 * u) : (float)logsigmoid(3.0 + 2.0 * nrand());
    }
}

#endif
