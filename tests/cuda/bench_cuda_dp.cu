/* tests/cuda/bench_cuda_dp — the data-parallel all-reduce (kernels/cuda/dp.c, NCCL loaded at run
 * time) on a GPU host; not a ctest (CI has no GPU).
 *
 *   bench_cuda_dp [SEED] [--ranks N] [--floats M] [--fault]
 *
 * One process per rank (N > 1: forked before any CUDA call, rank r on device r), meeting through
 * the id file as xtrain's ranks do (stages/dp.h: rank 0 writes it, the others wait for it). Checks:
 *   - a buffer of random finite fp32 bit patterns, summed: with one rank it must come back
 *     unchanged bit for bit; with N, every rank must hold the same bits (compared by hash), and an
 *     integer-valued buffer must hold the exact sums;
 *   - the sum waits for work queued before it on the default stream (a memset just before it);
 *   - the host f64 sum and u64 max used for the loss terms and the ranks' checks;
 *   - --fault (N > 1): the last rank leaves after joining; the others' next all-reduce must fail
 *     within the timeout (15 s) instead of hanging.
 * Then the time of an all-reduce of M floats (default 100M, 400 MB): median of 10 after 3
 * warm-ups, as xtrain waits for it (queued, then polled to completion), with its bus bandwidth.
 * Exit 0 when every check passed. XD_NCCL_LIBRARY names libnccl.so.2 when the loader cannot find
 * it. Shared hosts may keep NVLink multicast off (NCCL_NVLS_ENABLE=0): leave that as it is. */
#include "bench_cuda.h"

extern "C" {
#include "stages/dp.h"
}

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef XD_HAVE_NCCL
int main(void) {
    fprintf(stderr, "bench_cuda_dp: built without NCCL (no nccl.h beside the CUDA headers at configure time)\n");
    return 1;
}
#else

static int failures;
static void check(int rank, bool ok, const char *what) {
    printf("rank %d: %s: %s\n", rank, ok ? "PASS" : "FAIL", what);
    fflush(stdout);
    if (!ok) failures++;
}
#define DP_OK(rank, call)                                                                          \
    do {                                                                                           \
        if ((call) != 0) {                                                                         \
            fprintf(stderr, "rank %d: %s:%d: %s: %s\n", rank, __FILE__, __LINE__, #call,           \
                    kern_cuda_dp_last_error());                                                    \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int run_rank(int rank, int size, const char *id_path, size_t floats, bool fault, uint64_t seed) {
    char name[160];
    double mem = 0;
    if (kern_cuda_use_device(rank, name, sizeof name, &mem)) {
        fprintf(stderr, "rank %d: no CUDA device %d: %s\n", rank, rank, kern_cuda_last_error());
        return 2;
    }
    unsigned char id[DP_ID_BYTES];
    xd_err e = {{0}};
    double timeout = fault ? 15 : 120;
    if (rank == 0) {
        DP_OK(rank, kern_cuda_dp_create_id(id));
        if (dp_id_write(id_path, id, size, &e)) {
            fprintf(stderr, "rank 0: %s\n", e.msg);
            return 2;
        }
    } else if (dp_id_wait(id_path, rank, size, timeout, time(NULL) - (time_t)timeout, id, &e)) {
        fprintf(stderr, "rank %d: %s\n", rank, e.msg);
        return 2;
    }
    kern_dp_comm *c = NULL;
    double t0 = now_s();
    DP_OK(rank, kern_cuda_dp_open(&c, id, rank, size, rank, timeout));
    if (rank == 0) unlink(id_path);
    printf("rank %d of %d: %s (%.0f GiB), %s, communicator up in %.2f s\n", rank, size, name, mem,
           kern_cuda_dp_library(), now_s() - t0);

    if (fault) {
        if (rank == size - 1) {
            printf("rank %d: leaving without a word (--fault)\n", rank);
            fflush(stdout);
            _exit(0);
        }
        float *d;
        CHECK_CUDA(cudaMalloc(&d, 1 << 20));
        double f0 = now_s();
        int rc = kern_cuda_dp_sum_f32(c, d, (1 << 20) / 4, NULL);
        if (rc == 0) rc = kern_cuda_dp_wait(c);
        double took = now_s() - f0;
        printf("rank %d: the all-reduce without rank %d: %s after %.1f s: %s\n", rank, size - 1,
               rc ? "failed" : "completed", took, rc ? kern_cuda_dp_last_error() : "");
        check(rank, rc != 0 && took < timeout + 5, "a missing rank makes the all-reduce fail, not hang");
        kern_cuda_dp_abort(c);
        cudaFree(d);
        return failures ? 1 : 0;
    }

    /* random finite fp32 bit patterns (the same stream on every rank, then made rank's own) */
    rng_state = seed + 977 * (uint64_t)rank;
    const size_t n = (1u << 20) + 7;
    std::vector<float> h(n);
    for (auto &x : h) {
        uint32_t bits;
        do {
            bits = (uint32_t)(urand() * 4294967296.0);
        } while (((bits >> 23) & 0xff) == 0xff || ((bits >> 23) & 0xff) > 0xf0); /* finite, no overflow */
        memcpy(&x, &bits, 4);
    }
    float *d = to_device(h);
    DP_OK(rank, kern_cuda_dp_sum_f32(c, d, n, NULL));
    DP_OK(rank, kern_cuda_dp_wait(c));
    std::vector<float> got = to_host(d, n);
    uint64_t hash = dp_hash(got.data(), 4 * n, 0), v[2] = {hash, ~hash};
    DP_OK(rank, kern_cuda_dp_max_host_u64(c, v, 2));
    if (size == 1)
        check(rank, memcmp(got.data(), h.data(), 4 * n) == 0, "one rank: the summed buffer is unchanged, bit for bit");
    check(rank, v[0] == ~v[1], "every rank holds the same bits after the sum");

    /* integers: exact sums */
    for (size_t i = 0; i < n; i++) h[i] = (float)((long)((i * 7 + (size_t)rank * 13) % 1000) - 500);
    CHECK_CUDA(cudaMemcpy(d, h.data(), 4 * n, cudaMemcpyHostToDevice));
    DP_OK(rank, kern_cuda_dp_sum_f32(c, d, n, NULL));
    DP_OK(rank, kern_cuda_dp_wait(c));
    got = to_host(d, n);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        double want = 0;
        for (int r = 0; r < size; r++) want += (double)((long)((i * 7 + (size_t)r * 13) % 1000) - 500);
        wrong += got[i] != (float)want;
    }
    check(rank, wrong == 0, "integer-valued buffers: the exact sums");

    /* ordering: a memset queued on the default stream just before the sum is what gets summed */
    CHECK_CUDA(cudaMemsetAsync(d, 0x3f, 4 * n, 0)); /* every float 0x3f3f3f3f = 0.747... */
    DP_OK(rank, kern_cuda_dp_sum_f32(c, d, n, NULL));
    DP_OK(rank, kern_cuda_dp_wait(c));
    got = to_host(d, n);
    float one;
    uint32_t pattern = 0x3f3f3f3fu;
    memcpy(&one, &pattern, 4);
    float want_sum = 0;
    for (int r = 0; r < size; r++) want_sum += one;
    wrong = 0;
    for (size_t i = 0; i < n; i++) wrong += got[i] != want_sum;
    check(rank, wrong == 0, "the sum comes after the default stream's queued work");
    CHECK_CUDA(cudaFree(d));

    /* host values: the loss terms' f64 sum, the checks' u64 max */
    double hv[3] = {1.5 * (rank + 1), -(double)rank, 1e300 / size};
    DP_OK(rank, kern_cuda_dp_sum_host_f64(c, hv, 3));
    double w0 = 0, w1 = 0, w2 = 0;
    for (int r = 0; r < size; r++) w0 += 1.5 * (r + 1), w1 -= r, w2 += 1e300 / size;
    check(rank, hv[0] == w0 && hv[1] == w1 && hv[2] == w2, "host f64 sum");
    uint64_t uv[2] = {(uint64_t)rank * 1000003u, ~0ull - (uint64_t)rank};
    DP_OK(rank, kern_cuda_dp_max_host_u64(c, uv, 2));
    check(rank, uv[0] == (uint64_t)(size - 1) * 1000003u && uv[1] == ~0ull, "host u64 max");

    /* timing: M floats, as xtrain sums a gradient */
    float *big;
    CHECK_CUDA(cudaMalloc(&big, 4 * floats));
    CHECK_CUDA(cudaMemset(big, 0, 4 * floats));
    std::vector<double> ms;
    for (int i = 0; i < 13; i++) {
        CHECK_CUDA(cudaDeviceSynchronize());
        double a = now_s();
        DP_OK(rank, kern_cuda_dp_sum_f32(c, big, floats, NULL));
        DP_OK(rank, kern_cuda_dp_wait(c));
        if (i >= 3) ms.push_back(1e3 * (now_s() - a));
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2], gb = 4.0 * floats / 1e9;
    printf("rank %d: all-reduce of %zu floats (%.2f GB): median %.3f ms (min %.3f, max %.3f), algbw %.1f GB/s, "
           "busbw %.1f GB/s\n", rank, floats, gb, med, ms.front(), ms.back(), gb / (med / 1e3),
           gb / (med / 1e3) * (size > 1 ? 2.0 * (size - 1) / size : 1.0));
    CHECK_CUDA(cudaFree(big));
    kern_cuda_dp_close(c);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    int size = 1;
    size_t floats = 100000000;
    bool fault = false;
    char *seed_arg[2] = {argv[0], NULL};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ranks") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--floats") && i + 1 < argc) floats = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--fault")) fault = true;
        else seed_arg[1] = argv[i];
    }
    if (size < 1 || size > 64 || floats < 1 || (fault && size < 2)) {
        fprintf(stderr, "usage: bench_cuda_dp [SEED] [--ranks N] [--floats M] [--fault] (--fault needs N >= 2)\n");
        return 2;
    }
    uint64_t seed = bench_seed(seed_arg[1] ? 2 : 1, seed_arg);
    char id_path[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(id_path, sizeof id_path, "%s/bench_cuda_dp.%d.id", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    printf("bench_cuda_dp: seed %llu, %d rank(s), id file %s\n", (unsigned long long)seed, size, id_path);
    fflush(stdout);
    if (size == 1) {
        int rc = run_rank(0, 1, id_path, floats, false, seed);
        printf("%s\n", rc == 0 ? "bench_cuda_dp: all checks passed" : "bench_cuda_dp: FAILED");
        return rc;
    }
    std::vector<pid_t> kids;
    for (int r = 0; r < size; r++) {
        pid_t p = fork();
        if (p == 0) _exit(run_rank(r, size, id_path, floats, fault, seed));
        kids.push_back(p);
    }
    int worst = 0;
    for (int r = 0; r < size; r++) {
        int st = 0;
        waitpid(kids[r], &st, 0);
        int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        if (rc) printf("rank %d exited with %d\n", r, rc);
        if (rc > worst) worst = rc;
    }
    unlink(id_path);
    printf("%s\n", worst == 0 ? "bench_cuda_dp: all checks passed" : "bench_cuda_dp: FAILED");
    return worst;
}
#endif
