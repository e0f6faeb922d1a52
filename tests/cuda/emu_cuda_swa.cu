/* The SWA kernels of kernels/cuda/swa_body.cuh run on the host: every CUDA thread a fiber,
 * __syncthreads a barrier of the block's 128, shuffles and mma.sync exchanges through the warp's 32
 * (mma with the PTX ISA's m16n8k16 fragment layouts). Checks the tile lists exhaustively against
 * the key-set definition, then both kernel families, forward and backward, against the CPU
 * reference on small edge-case shapes. Needs no GPU: CI runs it as a ctest. What it cannot see:
 * timing, races that the fibers' turn-taking hides, the hardware's mma rounding, launch errors;
 * tests/cuda/bench_cuda_swa checks those on the GPU.
 *     build/tests/emu_cuda_swa [seed] */
#include "kernels/cuda/cuda_ops.h"
#include "bench_host.h"
#include "emu_fibers.h"
extern "C" { /* the CPU reference is C */
#include "kernels/kernels.h"
}

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <functional>
#include <time.h>
#include <vector>

#define EMU_THREADS 128 /* SWA_THREADS, checked below */

#define SWA_FN static inline
#define SWA_UNROLL
static inline void swa_sync(void) { emu_syncthreads(); }
static inline float swa_shfl_xor(float v, int o) { return emu_shfl(v, emu_lane ^ o); }
static inline float bf16_half(uint32_t word, int half) { return xd_bf16_to_f32((uint16_t)(word >> (16 * half))); }
/* mma.m16n8k16 row.col: A element (r, k) and B element (k, n) found by inverting the PTX fragment
 * maps (A: a0..a7 in 4 words, rows g / g+8, columns 2tq, +1, +8, +9; B: b0..b3 in 2 words, column g) */
static inline void swa_mma(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    emu_warp &w = emu_blk->warps[emu_wid];
    memcpy(w.a[emu_lane], a, sizeof w.a[0]);
    memcpy(w.b[emu_lane], b, sizeof w.b[0]);
    w.bar.wait();
    int g = emu_lane / 4, tq = emu_lane % 4;
    for (int i = 0; i < 4; i++) {
        int row = g + 8 * (i / 2), col = 2 * tq + (i & 1);
        float sum = 0.0f;
        for (int k = 0; k < 16; k++) {
            float av = bf16_half(w.a[(row % 8) * 4 + (k % 8) / 2][row / 8 + 2 * (k / 8)], k % 2);
            float bv = bf16_half(w.b[col * 4 + (k % 8) / 2][k / 8], k % 2);
            sum += av * bv;
        }
        c[i] += sum;
    }
    w.bar.wait();
}
/* ldmatrix x4: lane l gives the address of row l % 8 of matrix l / 8; register i of lane l gets
 * row l/4, columns 2(l%4), +1 of matrix i, or with .trans those of its transpose: rows 2(l%4), +1
 * of column l/4 */
static inline void emu_ldsm(uint32_t r[4], const kern_bf16 *p, bool trans) {
    emu_warp &w = emu_blk->warps[emu_wid];
    if ((uintptr_t)p % 16) abort();
    w.rows[emu_lane] = p;
    w.bar.wait();
    int g = emu_lane / 4, tq = emu_lane % 4;
    for (int i = 0; i < 4; i++) {
        kern_bf16 lo, hi;
        const kern_bf16 *const *rows = (const kern_bf16 *const *)w.rows;
        if (!trans) lo = rows[8 * i + g][2 * tq], hi = rows[8 * i + g][2 * tq + 1];
        else lo = rows[8 * i + 2 * tq][g], hi = rows[8 * i + 2 * tq + 1][g];
        r[i] = (uint32_t)lo | (uint32_t)hi << 16;
    }
    w.bar.wait();
}
static inline void swa_ldsm(uint32_t r[4], const kern_bf16 *p) { emu_ldsm(r, p, false); }
static inline void swa_ldsm_t(uint32_t r[4], const kern_bf16 *p) { emu_ldsm(r, p, true); }
static inline float swa_exp(float x) { return expf(x); }
static inline float swa_log(float x) { return logf(x); }
static inline float swa_bf(kern_bf16 h) { return xd_bf16_to_f32(h); }
static inline kern_bf16 swa_to_bf(float x) { return xd_f32_to_bf16(x); }
static inline uint32_t swa_pack(float lo, float hi) { return (uint32_t)swa_to_bf(lo) | (uint32_t)swa_to_bf(hi) << 16; }
static inline uint32_t swa_ld32(const kern_bf16 *p) {
    if ((uintptr_t)p % 4) abort(); /* the GPU would fault */
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}
static inline void swa_st32(kern_bf16 *p, uint32_t w) {
    if ((uintptr_t)p % 4) abort();
    memcpy(p, &w, 4);
}
static inline void swa_ld16(uint32_t w[4], const kern_bf16 *p) {
    if ((uintptr_t)p % 16) abort();
    memcpy(w, p, 16);
}
static inline void swa_st16(kern_bf16 *p, const uint32_t w[4]) {
    if ((uintptr_t)p % 16) abort();
    memcpy(p, w, 16);
}

#include "kernels/cuda/swa_body.cuh"
static_assert(EMU_THREADS == SWA_THREADS, "one fiber per CUDA thread");

/* Runs body over the grid (emu_fibers.h), its threads as fibers taking turns. Shared memory
 * starts as 0xff bytes (bf16 NaN) in every block, so a read of a slot no thread wrote poisons
 * the result. */
template <typename F> static void emu_launch(int gx, int gy, int gz, size_t smem, F body) {
    size_t bytes = (smem + 15) / 16 * 16 + 16;
    unsigned char *buf = (unsigned char *)aligned_alloc(16, bytes);
    emu_grid(
        gx, gy, gz, EMU_THREADS, [&] { body(swa_ctx{emu_tid_now, emu_bx, emu_by, emu_bz, buf}); },
        [&] { memset(buf, 0xff, bytes); });
    free(buf);
}

/* ---- the tile lists, exhaustively ---- */

static bool sees_ref(int t, int j, int W, int S) { return j <= t && (j < S || j >= t - W + 1); }

static int check_tiles(void) {
    const int Ts[] = {1, 2, 37, 63, 64, 65, 127, 128, 129, 200, 300};
    const int Ws[] = {1, 2, 5, 63, 64, 65, 100, 128, 200, 300, 1000000000};
    const int Ss[] = {0, 1, 4, 63, 64, 65, 100, 300, 1000000000};
    int bad = 0;
    for (int T : Ts)
        for (int W0 : Ws)
            for (int S0 : Ss) {
                int W = std::min(W0, T), S = std::min(S0, T), nt = (T + SWA_BT - 1) / SWA_BT;
                for (int qt = 0; qt < nt; qt++) { /* forward and dq: every key of a query once */
                    swa_tiles kl = swa_key_tiles(qt, T, W, S);
                    std::vector<int> seen(nt, 0);
                    for (int i = 0; i < kl.n; i++) {
                        int kt = swa_tile_at(kl, i);
                        if (kt < 0 || kt >= nt || seen[kt]++) bad++;
                    }
                    for (int t = qt * SWA_BT; t < std::min(T, (qt + 1) * SWA_BT); t++)
                        for (int j = 0; j < T; j++) {
                            if (swa_sees(t, j, T, W, S) != sees_ref(t, j, W0, S0)) bad++;
                            if (sees_ref(t, j, W0, S0) && !seen[j / SWA_BT]) bad++;
                        }
                }
                for (int qt = 0; qt < nt; qt++) /* a tile pair passed as full needs no mask */
                    for (int kt = 0; kt < nt; kt++) {
                        if (!swa_tile_full(qt * SWA_BT, kt * SWA_BT, T, W, S)) continue;
                        for (int t = qt * SWA_BT; t < (qt + 1) * SWA_BT; t++)
                            for (int j = kt * SWA_BT; j < (kt + 1) * SWA_BT; j++)
                                if (t >= T || !sees_ref(t, j, W0, S0)) bad++;
                    }
                for (int kt = 0; kt < nt; kt++) { /* dk, dv: every query of a key */
                    int qhi = swa_last_query_tile(kt, T, W, S);
                    if (qhi < kt || qhi >= nt) bad++;
                    for (int j = kt * SWA_BT; j < std::min(T, (kt + 1) * SWA_BT); j++)
                        for (int t = 0; t < T; t++)
                            if (sees_ref(t, j, W0, S0) && (t / SWA_BT < kt || t / SWA_BT > qhi)) bad++;
                }
                if (bad) {
                    printf("tile lists wrong at T %d W %d S %d\n", T, W0, S0);
                    return 1;
                }
            }
    printf("tile lists: every (query, key) pair covered once, %zu x %zu x %zu shapes\n", sizeof Ts / sizeof *Ts,
           sizeof Ws / sizeof *Ws, sizeof Ss / sizeof *Ss);
    return 0;
}

/* ---- the kernels against the CPU reference ---- */

/* max |got - want| / max |want|, the denominator at least 1e-3: where the exact gradient is 0
 * (one key per query: T = 1, W = 1 with S = 0) both sides are rounding noise. NaN anywhere (an
 * unwritten output, a poisoned read) is infinite. */
static double rel_err(const std::vector<float> &got, const std::vector<float> &want) {
    double md = 0, mw = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!(fabsf(got[i]) < INFINITY)) return INFINITY;
        md = std::max(md, (double)fabsf(got[i] - want[i]));
        mw = std::max(mw, (double)fabsf(want[i]));
    }
    return md / std::max(mw, 1e-3);
}

struct swa_shape {
    int B, T, H, G, d, W, S;
};
static int failures = 0;
static void report(const char *what, const swa_shape &s, double err, double tol) {
    bool ok = err <= tol;
    failures += !ok;
    printf("  %-14s B %d T %4d H %d G %d d %3d W %10d S %10d  err %.2e (tol %.0e) %s\n", what, s.B, s.T, s.H, s.G,
           s.d, s.W, s.S, err, tol, ok ? "ok" : "FAIL");
}

template <int D> static void run_case(const swa_shape &s, bool simple) {
    const int B = s.B, T = s.T, H = s.H, G = s.G;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D, nl = (size_t)B * T * H;
    auto q = random_bf16(nq, 3.0f), k = random_bf16(nk, 1.0f), v = random_bf16(nk, 1.0f), dout = random_bf16(nq, 1.0f);
    auto fq = widen(q), fk = widen(k), fv = widen(v), fdo = widen(dout);

    std::vector<float> out_ref(nq), lse_ref(nl), dq_ref(nq, 0.0f), dk_ref(nk, 0.0f), dv_ref(nk, 0.0f);
    std::vector<float> scratch(kern_swa_scratch_elems(T, s.W, s.S));
    for (int b = 0; b < B; b++) {
        size_t oq = (size_t)b * T * H * D, ok = (size_t)b * T * G * D, ol = (size_t)b * T * H;
        kern_swa_fwd_f32(out_ref.data() + oq, lse_ref.data() + ol, fq.data() + oq, fk.data() + ok, fv.data() + ok, T, H,
                         G, D, s.W, s.S, scratch.data());
        kern_swa_bwd_f32(dq_ref.data() + oq, dk_ref.data() + ok, dv_ref.data() + ok, fdo.data() + oq, fq.data() + oq,
                         fk.data() + ok, fv.data() + ok, out_ref.data() + oq, lse_ref.data() + ol, T, H, G, D, s.W, s.S,
                         scratch.data());
    }

    /* outputs start as NaN: a row no thread writes fails the comparison */
    std::vector<uint16_t> out(nq, 0xffff), dq(nq, 0xffff), dk(nk, 0xffff), dv(nk, 0xffff);
    std::vector<float> lse(nl, NAN), delta(nl, NAN);
    swa_params p;
    memset(&p, 0, sizeof p);
    p.B = B, p.T = T, p.H = H, p.G = G; /* as swa.cu's swa_setup */
    p.W = std::min(s.W, T), p.S = std::min(s.S, T), p.scale = (float)(1.0 / sqrt((double)D));
    p.q = q.data(), p.k = k.data(), p.v = v.data(), p.dout = dout.data(), p.o = out.data();
    p.out = out.data(), p.lse_out = lse.data(), p.lse = lse.data(), p.delta = delta.data();
    p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
    int tiles = (T + SWA_BT - 1) / SWA_BT, quads = (T + 3) / 4;

    if (simple) emu_launch(quads, H, B, 0, [&](swa_ctx c) { swa_fwd_simple<D>(p, c); });
    else emu_launch(tiles, H, B, swa_smem<D>::fwd, [&](swa_ctx c) { swa_fwd_mma<D>(p, c); });
    const char *fam = simple ? "simple" : "mma";
    char name[32];
    snprintf(name, sizeof name, "%s fwd out", fam);
    report(name, s, rel_err(widen(out), out_ref), 1e-2);
    snprintf(name, sizeof name, "%s fwd lse", fam);
    report(name, s, rel_err(lse, lse_ref), 1e-4);

    /* backward from this forward's out and lse, as a training step would run it */
    emu_launch((int)((nl + 3) / 4), 1, 1, 0, [&](swa_ctx c) { swa_delta<D>(p, c); });
    if (simple) {
        emu_launch(quads, H, B, 0, [&](swa_ctx c) { swa_dq_simple<D>(p, c); });
        emu_launch(quads, G, B, 0, [&](swa_ctx c) { swa_dkdv_simple<D>(p, c); });
    } else {
        emu_launch(tiles, H, B, swa_smem<D>::dq, [&](swa_ctx c) { swa_dq_mma<D>(p, c); });
        emu_launch(tiles * G * B, 1, 1, swa_smem<D>::dkdv, [&](swa_ctx c) { swa_dkdv_mma<D>(p, c); });
    }
    snprintf(name, sizeof name, "%s bwd dq", fam);
    report(name, s, rel_err(widen(dq), dq_ref), 1e-2);
    snprintf(name, sizeof name, "%s bwd dk", fam);
    report(name, s, rel_err(widen(dk), dk_ref), 1e-2);
    snprintf(name, sizeof name, "%s bwd dv", fam);
    report(name, s, rel_err(widen(dv), dv_ref), 1e-2);
}

int main(int argc, char **argv) {
    printf("seed %llu\n", (unsigned long long)bench_seed(argc, argv));
    if (check_tiles()) return 1;
    const swa_shape shapes[] = {
        {1, 1, 2, 1, 64, 4, 0},            /* one token */
        {2, 37, 2, 2, 64, 8, 0},           /* T not a multiple of the tile, no sinks, H = G */
        {1, 200, 4, 2, 64, 16, 4},         /* sinks + window, GQA */
        {1, 150, 2, 1, 128, 1000000000, 2}, /* W >= T: full causal; d 128 */
        {1, 130, 2, 2, 64, 5, 1000},       /* S >= T: every key a sink */
        {1, 160, 3, 1, 64, 10, 70},        /* sinks over two tiles, a group of 3 */
        {1, 129, 2, 1, 128, 1, 1},         /* W = 1: itself and the sink */
        {1, 70, 2, 1, 64, 1, 0},           /* W = 1, S = 0: itself only (dq = dk = 0) */
        {1, 64, 2, 1, 64, 2, 0},           /* one whole tile, W = 2 */
    };
    for (const auto &s : shapes)
        for (int simple = 0; simple < 2; simple++) {
            if (s.d == 64) run_case<64>(s, simple);
            else run_case<128>(s, simple);
            fflush(stdout);
        }
    printf("\n%s: %d failed\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
