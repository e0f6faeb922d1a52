/* tests/cuda/emu_fibers.h — CUDA blocks on the host, for the emulators (tests/cuda/emu_cuda_*):
 * every CUDA thread of a block a fiber (ucontext) on one host thread, switched only at barriers
 * (OS threads would spend minutes in futex wake-ups at one barrier per shuffle), the blocks of a
 * grid one after another. A warp exchanges values through its slots between two warp barriers
 * (shuffles, mma fragments). What this cannot see: timing, races that the turn-taking hides, the
 * hardware's rounding inside a tensor-core product, launch errors. */
#ifndef XD_EMU_FIBERS_H
#define XD_EMU_FIBERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

#define EMU_MAX_THREADS 256
struct emu_fiber {
    ucontext_t ctx;
    bool done;
};
static ucontext_t emu_main;
static emu_fiber emu_fibers[EMU_MAX_THREADS];
static int emu_tid_now, emu_lane, emu_wid;   /* the running fiber's thread, lane and warp */
static int emu_bx, emu_by, emu_bz;           /* its block */
static unsigned long emu_progress;           /* barrier arrivals and finished fibers: a round without any is a deadlock */

struct emu_barrier {
    int n, count = 0;
    unsigned gen = 0;
    explicit emu_barrier(int n_) : n(n_) {}
    void wait() {
        unsigned mine = gen;
        emu_progress++;
        if (++count == n) {
            count = 0, gen++;
            return;
        }
        while (gen == mine) swapcontext(&emu_fibers[emu_tid_now].ctx, &emu_main);
    }
};
struct emu_warp {
    emu_barrier bar{32};
    float f[32];                   /* shuffles */
    uint32_t a[32][4], b[32][2];   /* mma.sync fragments */
    float fa[32][8], fb[32][8], fc[32][8]; /* wmma fragments */
    const void *rows[32];          /* ldmatrix row addresses */
};
struct emu_block {
    emu_barrier bar;
    emu_warp warps[EMU_MAX_THREADS / 32];
    explicit emu_block(int n) : bar(n) {}
};
static emu_block *emu_blk;

static inline void emu_syncthreads(void) { emu_blk->bar.wait(); }
/* the value of v in lane src of this warp (every lane of the warp calls it) */
static inline float emu_shfl(float v, int src) {
    emu_warp &w = emu_blk->warps[emu_wid];
    w.f[emu_lane] = v;
    w.bar.wait();
    float r = w.f[src];
    w.bar.wait();
    return r;
}

/* Runs body (in every thread of every block) over a gx x gy x gz grid of blocks of nthreads;
 * before_block, when given, before each block's threads start (emu_bx .. set). */
static std::function<void()> emu_body;
static void emu_entry(void) {
    emu_body();
    emu_fibers[emu_tid_now].done = true;
    emu_progress++;
} /* returns to uc_link = emu_main */
/* apart from emu_grid's loops: getcontext returns twice, which -Wclobbered minds */
static void __attribute__((noinline)) emu_fiber_init(int t, char *stack, size_t size) {
    emu_fiber &f = emu_fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack;
    f.ctx.uc_stack.ss_size = size;
    f.ctx.uc_link = &emu_main;
    makecontext(&f.ctx, emu_entry, 0);
    f.done = false;
}
static void emu_grid(int gx, int gy, int gz, int nthreads, std::function<void()> body,
                     std::function<void()> before_block = nullptr) {
    static std::vector<char> stacks((size_t)EMU_MAX_THREADS << 18); /* 256 KiB each */
    if (nthreads < 1 || nthreads > EMU_MAX_THREADS || nthreads % 32) {
        fprintf(stderr, "emu: %d threads a block (1 .. %d warps)\n", nthreads, EMU_MAX_THREADS / 32);
        exit(2);
    }
    emu_body = body;
    for (int bz = 0; bz < gz; bz++)
        for (int by = 0; by < gy; by++)
            for (int bx = 0; bx < gx; bx++) {
                emu_block blk(nthreads);
                emu_blk = &blk;
                emu_bx = bx, emu_by = by, emu_bz = bz;
                if (before_block) before_block();
                for (int t = 0; t < nthreads; t++) emu_fiber_init(t, stacks.data() + ((size_t)t << 18), (size_t)1 << 18);
                for (int left = nthreads; left > 0;) {
                    unsigned long before = emu_progress;
                    for (int t = 0; t < nthreads; t++) {
                        if (emu_fibers[t].done) continue;
                        emu_tid_now = t, emu_lane = t % 32, emu_wid = t / 32;
                        swapcontext(&emu_main, &emu_fibers[t].ctx);
                        left -= emu_fibers[t].done;
                    }
                    if (left > 0 && emu_progress == before) {
                        fprintf(stderr, "emu: block (%d, %d, %d) deadlocked at a barrier\n", bx, by, bz);
                        exit(2);
                    }
                }
            }
}

#endif
