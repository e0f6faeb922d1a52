/* kernels/cuda/swa_body.cuh — bodies of the sliding-window + sink attention kernels (swa.cu).
 * They are written against a few primitives that the includer defines first, so that the same code
 * runs on the GPU (swa.cu) and under tests/cuda/emu_cuda_swa.cu, which runs every CUDA thread as a
 * host thread and checks the kernels against the CPU reference on a machine without a GPU.
 *
 *   SWA_FN                      qualifier of every function here (device or host)
 *   SWA_UNROLL                  #pragma unroll, or nothing
 *   swa_sync()                  __syncthreads()
 *   swa_shfl_xor(v, o)          __shfl_xor_sync over the full warp
 *   swa_mma(c, a, b)            c[4] += A B: mma.m16n8k16.row.col.f32.bf16.bf16.f32, fragments as in
 *                               the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point")
 *   swa_exp(x), swa_log(x)      fp32 exp (exp(-inf) = 0) and log
 *   swa_bf(h), swa_to_bf(x)     bf16 bits <-> float (round to nearest even)
 *   swa_pack(lo, hi)            two floats -> bf16x2 word, lo in the low half
 *   swa_ld32(p), swa_st32(p,w)  one 4-byte word (2 bf16) at a 4-byte aligned address
 *   swa_ld16(w,p), swa_st16(p,w) 16 bytes (8 bf16) at a 16-byte aligned address as 4 words
 *
 * Semantics are kernels/swa.h's: query t sees keys j <= t with j < S or j >= t - W + 1, scale
 * 1/sqrt(d), query head h reads kv head h / (H/G); a batch is B sequences one after another.
 * Every kernel runs blocks of SWA_THREADS threads. */
#ifndef XD_CUDA_SWA_BODY_CUH
#define XD_CUDA_SWA_BODY_CUH

#define SWA_THREADS 128 /* 4 warps */
#define SWA_BT 64       /* queries and keys per tile; each warp owns 16 rows of a tile */

struct swa_params {
    kern_bf16 *out, *dq, *dk, *dv;
    float *lse_out;  /* forward: [B*T, H] */
    float *delta;    /* backward: rowsum(dout * out) [B*T, H], written by swa_delta first */
    const kern_bf16 *q, *k, *v, *dout, *o;
    const float *lse; /* backward: the forward's lse */
    int B, T, H, G, W, S; /* W and S clamped to T by the launcher */
    float scale;
};

/* the thread's place: threadIdx.x, blockIdx.{x,y,z} and the block's dynamic shared memory */
struct swa_ctx {
    int tid, bx, by, bz;
    unsigned char *smem;
};

SWA_FN int swa_imin(int a, int b) { return a < b ? a : b; }
SWA_FN int swa_imax(int a, int b) { return a > b ? a : b; }

/* query t sees key j; t < T implies j < T */
SWA_FN bool swa_sees(int t, int j, int T, int W, int S) { return t < T && j <= t && (j < S || j > t - W); }

/* The key tiles of query tile qt, each once: the sink tiles below the window, then the window's
 * tiles (first query's window start to the last query). A key of both kinds lies in one tile only;
 * inside a tile the mask swa_sees decides, so each key counts once. */
struct swa_tiles {
    int n_sink, lo, n;
};
SWA_FN swa_tiles swa_key_tiles(int qt, int T, int W, int S) {
    int t0 = qt * SWA_BT, t1 = swa_imin(t0 + SWA_BT, T) - 1;
    int lo = swa_imax(0, t0 - W + 1) / SWA_BT, hi = t1 / SWA_BT;
    int sink = (S + SWA_BT - 1) / SWA_BT;
    swa_tiles r;
    r.n_sink = swa_imin(sink, lo);
    r.lo = lo;
    r.n = r.n_sink + hi - lo + 1;
    return r;
}
SWA_FN int swa_tile_at(swa_tiles r, int i) { return i < r.n_sink ? i : r.lo + i - r.n_sink; }

/* The query tiles that see key tile kt are kt..this: up to the last query whose window holds the
 * tile's last key, or every later query when the tile holds a sink. */
SWA_FN int swa_last_query_tile(int kt, int T, int W, int S) {
    int j0 = kt * SWA_BT, j1 = swa_imin(j0 + SWA_BT, T) - 1;
    int tmax = j0 < S ? T - 1 : swa_imin(T - 1, j1 + W - 1);
    return tmax / SWA_BT;
}

/* shared memory of the tensor-core kernels: padded rows (+8 bf16) keep fragment loads free of bank
 * conflicts; LDK for [64][D] tiles, LDT for transposed [D][64] ones */
template <int D> struct swa_smem {
    static constexpr int LDK = D + 8, LDT = SWA_BT + 8;
    static constexpr int ROWS = SWA_BT * LDK, COLS = D * LDT; /* elements of a tile either way */
    static constexpr size_t fwd = 2 * (size_t)(ROWS + COLS);
    static constexpr size_t dq = 2 * (size_t)(2 * ROWS + COLS);
    static constexpr size_t dkdv = 2 * (size_t)(4 * ROWS + 2 * COLS) + 2 * SWA_BT * sizeof(float);
};

/* ---- fragments ---- */

/* A (16 x 16) from row-major s: rows m0.., columns k0.. */
SWA_FN void swa_frag_a(uint32_t a[4], const kern_bf16 *s, int ld, int m0, int k0, int g, int tq) {
    const kern_bf16 *p0 = s + (m0 + g) * ld + k0 + 2 * tq, *p1 = p0 + 8 * ld;
    a[0] = swa_ld32(p0);
    a[1] = swa_ld32(p1);
    a[2] = swa_ld32(p0 + 8);
    a[3] = swa_ld32(p1 + 8);
}
/* B (16 x 8, k x n) from s holding B transposed, s[n][k] row-major: rows n0.., columns k0.. */
SWA_FN void swa_frag_b(uint32_t b[2], const kern_bf16 *s, int ld, int n0, int k0, int g, int tq) {
    const kern_bf16 *p0 = s + (n0 + g) * ld + k0 + 2 * tq;
    b[0] = swa_ld32(p0);
    b[1] = swa_ld32(p0 + 8);
}
/* A of the next product from two accumulators: n-tiles 2kk and 2kk+1 of a 16 x 64 result are
 * columns 16kk..16kk+15, exactly an A fragment's layout (the flash-attention register reuse) */
SWA_FN void swa_frag_a_from_c(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = swa_pack(c0[0], c0[1]);
    a[1] = swa_pack(c0[2], c0[3]);
    a[2] = swa_pack(c1[0], c1[1]);
    a[3] = swa_pack(c1[2], c1[3]);
}
/* A fragments of rows r0 and r1 = r0 + 8 (this thread's) of a global [T, ld] matrix, all D columns;
 * rows >= T read as zero */
template <int D>
SWA_FN void swa_frag_a_rows(uint32_t (&f)[D / 16][4], const kern_bf16 *base, size_t ld, int r0, int r1, int T,
                            int tq) {
    SWA_UNROLL
    for (int kk = 0; kk < D / 16; kk++) {
        int c = kk * 16 + 2 * tq;
        f[kk][0] = r0 < T ? swa_ld32(base + (size_t)r0 * ld + c) : 0u;
        f[kk][1] = r1 < T ? swa_ld32(base + (size_t)r1 * ld + c) : 0u;
        f[kk][2] = r0 < T ? swa_ld32(base + (size_t)r0 * ld + c + 8) : 0u;
        f[kk][3] = r1 < T ? swa_ld32(base + (size_t)r1 * ld + c + 8) : 0u;
    }
}

/* ---- tiles into shared memory (whole block) ---- */

/* rows j0..j0+63 of a global [T, ld] matrix (D columns from base) into s[64][lds]; rows >= T zero,
 * so that masked products (P = 0) never meet garbage */
template <int D>
SWA_FN void swa_tile_rows(kern_bf16 *s, int lds, const kern_bf16 *base, size_t ld, int j0, int T, int tid) {
    for (int v = tid; v < SWA_BT * D / 8; v += SWA_THREADS) {
        int r = v / (D / 8), c = (v % (D / 8)) * 8;
        uint32_t w[4] = {0u, 0u, 0u, 0u};
        if (j0 + r < T) swa_ld16(w, base + (size_t)(j0 + r) * ld + c);
        swa_st16(s + r * lds + c, w);
    }
}
/* the same rows transposed, s[c][r] (c < D, r < 64): a warp takes 32 rows of one column chunk, so
 * its 2-byte stores hit 16 consecutive words */
template <int D>
SWA_FN void swa_tile_cols(kern_bf16 *s, int lds, const kern_bf16 *base, size_t ld, int j0, int T, int tid) {
    for (int v = tid; v < SWA_BT * D / 8; v += SWA_THREADS) {
        int r = v % SWA_BT, c = (v / SWA_BT) * 8;
        uint32_t w[4] = {0u, 0u, 0u, 0u};
        if (j0 + r < T) swa_ld16(w, base + (size_t)(j0 + r) * ld + c);
        SWA_UNROLL
        for (int i = 0; i < 8; i++) s[(c + i) * lds + r] = (kern_bf16)(w[i / 2] >> (16 * (i % 2)));
    }
}

SWA_FN float swa_quad_max(float x) {
    x = fmaxf(x, swa_shfl_xor(x, 1));
    return fmaxf(x, swa_shfl_xor(x, 2));
}
SWA_FN float swa_quad_sum(float x) {
    x += swa_shfl_xor(x, 1);
    return x + swa_shfl_xor(x, 2);
}
SWA_FN float swa_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += swa_shfl_xor(x, o);
    return x;
}

/* ---- tensor-core kernels: block = 64 rows x 4 warps; thread (warp, lane) holds rows
 * warp*16 + lane/4 and +8 of every 16 x 8 accumulator, columns 2*(lane%4) and +1 ---- */

/* Forward, grid (query tiles, H, B): online softmax over the key tiles of swa_key_tiles. */
template <int D> SWA_FN void swa_fwd_mma(const swa_params &p, swa_ctx c) {
    typedef swa_smem<D> L;
    kern_bf16 *Ks = (kern_bf16 *)c.smem, *Vt = Ks + L::ROWS;
    const int T = p.T, H = p.H, qt = c.bx, h = c.by, b = c.bz, kvh = h / (H / p.G);
    const int warp = c.tid / 32, lane = c.tid % 32, g = lane / 4, tq = lane % 4;
    const size_t qs = (size_t)H * D, ks = (size_t)p.G * D;
    const kern_bf16 *qb = p.q + (size_t)b * T * qs + (size_t)h * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    const int r0 = qt * SWA_BT + warp * 16 + g, r1 = r0 + 8;

    uint32_t qf[D / 16][4];
    swa_frag_a_rows<D>(qf, qb, qs, r0, r1, T, tq);
    float o[D / 8][4];
    SWA_UNROLL
    for (int nd = 0; nd < D / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    const swa_tiles kl = swa_key_tiles(qt, T, p.W, p.S);
    for (int i = 0; i < kl.n; i++) {
        const int j0 = swa_tile_at(kl, i) * SWA_BT;
        swa_sync(); /* every warp is done with the previous tile */
        swa_tile_rows<D>(Ks, L::LDK, kb, ks, j0, T, c.tid);
        swa_tile_cols<D>(Vt, L::LDT, vb, ks, j0, T, c.tid);
        swa_sync();

        float s[8][4];
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        SWA_UNROLL
        for (int kk = 0; kk < D / 16; kk++) {
            SWA_UNROLL
            for (int nt = 0; nt < 8; nt++) {
                uint32_t bb[2];
                swa_frag_b(bb, Ks, L::LDK, nt * 8, kk * 16, g, tq);
                swa_mma(s[nt], qf[kk], bb);
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++) {
            SWA_UNROLL
            for (int e = 0; e < 4; e++) {
                int row = e < 2 ? r0 : r1, j = j0 + nt * 8 + 2 * tq + (e & 1);
                float x = swa_sees(row, j, T, p.W, p.S) ? s[nt][e] * p.scale : -INFINITY;
                s[nt][e] = x;
                mx[e / 2] = fmaxf(mx[e / 2], x);
            }
        }
        float base[2];
        SWA_UNROLL
        for (int r = 0; r < 2; r++) {
            float mn = fmaxf(m[r], swa_quad_max(mx[r]));
            base[r] = mn == -INFINITY ? 0.0f : mn; /* no key yet: exp(-inf - 0) = 0, not NaN */
            float corr = swa_exp(m[r] - base[r]);
            m[r] = mn;
            l[r] *= corr;
            SWA_UNROLL
            for (int nd = 0; nd < D / 8; nd++) o[nd][2 * r] *= corr, o[nd][2 * r + 1] *= corr;
        }
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++) {
            SWA_UNROLL
            for (int e = 0; e < 4; e++) {
                float pe = swa_exp(s[nt][e] - base[e / 2]);
                s[nt][e] = pe;
                l[e / 2] += pe;
            }
        }
        SWA_UNROLL
        for (int kk = 0; kk < 4; kk++) { /* O += P V over the tile's 64 keys */
            uint32_t a[4];
            swa_frag_a_from_c(a, s[2 * kk], s[2 * kk + 1]);
            SWA_UNROLL
            for (int nd = 0; nd < D / 8; nd++) {
                uint32_t bb[2];
                swa_frag_b(bb, Vt, L::LDT, nd * 8, kk * 16, g, tq);
                swa_mma(o[nd], a, bb);
            }
        }
    }
    kern_bf16 *ob = p.out + (size_t)b * T * qs + (size_t)h * D;
    SWA_UNROLL
    for (int r = 0; r < 2; r++) {
        float lr = swa_quad_sum(l[r]);
        int row = r ? r1 : r0;
        if (row >= T) continue;
        float inv = 1.0f / lr;
        SWA_UNROLL
        for (int nd = 0; nd < D / 8; nd++)
            swa_st32(ob + (size_t)row * qs + nd * 8 + 2 * tq, swa_pack(o[nd][2 * r] * inv, o[nd][2 * r + 1] * inv));
        if (tq == 0) p.lse_out[((size_t)b * T + row) * H + h] = m[r] + swa_log(lr);
    }
}

/* delta = rowsum(dout * out) per (token, head), fp32: one warp per row, grid (ceil(B*T*H / 4)) */
template <int D> SWA_FN void swa_delta(const swa_params &p, swa_ctx c) {
    size_t row = (size_t)c.bx * (SWA_THREADS / 32) + c.tid / 32;
    int lane = c.tid % 32;
    if (row >= (size_t)p.B * p.T * p.H) return; /* whole warps */
    float acc = 0.0f;
    for (int i = lane; i < D; i += 32) acc += swa_bf(p.dout[row * D + i]) * swa_bf(p.o[row * D + i]);
    acc = swa_warp_sum(acc);
    if (lane == 0) p.delta[row] = acc;
}

/* dq, grid (query tiles, H, B): recompute P from lse, dS = P (dP - delta), dq = scale dS K over
 * the same key tiles as the forward. Writes dq. */
template <int D> SWA_FN void swa_dq_mma(const swa_params &p, swa_ctx c) {
    typedef swa_smem<D> L;
    kern_bf16 *Ks = (kern_bf16 *)c.smem, *Vs = Ks + L::ROWS, *Kt = Vs + L::ROWS;
    const int T = p.T, H = p.H, qt = c.bx, h = c.by, b = c.bz, kvh = h / (H / p.G);
    const int warp = c.tid / 32, lane = c.tid % 32, g = lane / 4, tq = lane % 4;
    const size_t qs = (size_t)H * D, ks = (size_t)p.G * D;
    const kern_bf16 *qb = p.q + (size_t)b * T * qs + (size_t)h * D;
    const kern_bf16 *dob = p.dout + (size_t)b * T * qs + (size_t)h * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    const int r0 = qt * SWA_BT + warp * 16 + g, r1 = r0 + 8;

    uint32_t qf[D / 16][4], df[D / 16][4];
    swa_frag_a_rows<D>(qf, qb, qs, r0, r1, T, tq);
    swa_frag_a_rows<D>(df, dob, qs, r0, r1, T, tq);
    float lse[2], dl[2];
    SWA_UNROLL
    for (int r = 0; r < 2; r++) {
        int row = r ? r1 : r0;
        size_t ix = ((size_t)b * T + row) * H + h;
        lse[r] = row < T ? p.lse[ix] : 0.0f;
        dl[r] = row < T ? p.delta[ix] : 0.0f;
    }
    float acc[D / 8][4];
    SWA_UNROLL
    for (int nd = 0; nd < D / 8; nd++) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;

    const swa_tiles kl = swa_key_tiles(qt, T, p.W, p.S);
    for (int i = 0; i < kl.n; i++) {
        const int j0 = swa_tile_at(kl, i) * SWA_BT;
        swa_sync();
        swa_tile_rows<D>(Ks, L::LDK, kb, ks, j0, T, c.tid);
        swa_tile_rows<D>(Vs, L::LDK, vb, ks, j0, T, c.tid);
        swa_tile_cols<D>(Kt, L::LDT, kb, ks, j0, T, c.tid);
        swa_sync();

        float s[8][4], dp[8][4];
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++)
            SWA_UNROLL
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
        SWA_UNROLL
        for (int kk = 0; kk < D / 16; kk++) {
            SWA_UNROLL
            for (int nt = 0; nt < 8; nt++) {
                uint32_t bb[2];
                swa_frag_b(bb, Ks, L::LDK, nt * 8, kk * 16, g, tq);
                swa_mma(s[nt], qf[kk], bb);
                swa_frag_b(bb, Vs, L::LDK, nt * 8, kk * 16, g, tq);
                swa_mma(dp[nt], df[kk], bb);
            }
        }
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++) {
            SWA_UNROLL
            for (int e = 0; e < 4; e++) {
                int row = e < 2 ? r0 : r1, j = j0 + nt * 8 + 2 * tq + (e & 1);
                bool ok = swa_sees(row, j, T, p.W, p.S);
                float pe = ok ? swa_exp(s[nt][e] * p.scale - lse[e / 2]) : 0.0f;
                s[nt][e] = ok ? pe * (dp[nt][e] - dl[e / 2]) : 0.0f; /* dS */
            }
        }
        SWA_UNROLL
        for (int kk = 0; kk < 4; kk++) { /* dq += dS K */
            uint32_t a[4];
            swa_frag_a_from_c(a, s[2 * kk], s[2 * kk + 1]);
            SWA_UNROLL
            for (int nd = 0; nd < D / 8; nd++) {
                uint32_t bb[2];
                swa_frag_b(bb, Kt, L::LDT, nd * 8, kk * 16, g, tq);
                swa_mma(acc[nd], a, bb);
            }
        }
    }
    kern_bf16 *dqb = p.dq + (size_t)b * T * qs + (size_t)h * D;
    SWA_UNROLL
    for (int r = 0; r < 2; r++) {
        int row = r ? r1 : r0;
        if (row >= T) continue;
        SWA_UNROLL
        for (int nd = 0; nd < D / 8; nd++)
            swa_st32(dqb + (size_t)row * qs + nd * 8 + 2 * tq,
                     swa_pack(acc[nd][2 * r] * p.scale, acc[nd][2 * r + 1] * p.scale));
    }
}

/* dk, dv, one block per (key tile, kv head, sequence): it loops over the group's query heads and
 * the query tiles that see its keys, so dk and dv sum in registers in a fixed order and are written
 * once (deterministic, no atomics). Works on transposed scores S^T = K Q^T: its accumulators are
 * then already the A operands of dv += P^T dout and dk += dS^T q. Grid: one dimension, the key tile
 * slowest, so the sink tiles, which see every later query and run longest, start first. */
template <int D> SWA_FN void swa_dkdv_mma(const swa_params &p, swa_ctx c) {
    typedef swa_smem<D> L;
    kern_bf16 *Ks = (kern_bf16 *)c.smem, *Vs = Ks + L::ROWS, *Qs = Vs + L::ROWS, *Os = Qs + L::ROWS;
    kern_bf16 *Qt = Os + L::ROWS, *Ot = Qt + L::COLS;
    float *lse_s = (float *)(Ot + L::COLS), *dl_s = lse_s + SWA_BT;
    const int T = p.T, H = p.H, G = p.G, group = H / G;
    const int kt = c.bx / (G * p.B), kvh = c.bx % (G * p.B) % G, b = c.bx % (G * p.B) / G;
    const int warp = c.tid / 32, lane = c.tid % 32, g = lane / 4, tq = lane % 4;
    const size_t qs = (size_t)H * D, ks = (size_t)G * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    const int j0 = kt * SWA_BT, k0 = j0 + warp * 16 + g, k1 = k0 + 8; /* this thread's key rows */

    swa_tile_rows<D>(Ks, L::LDK, kb, ks, j0, T, c.tid); /* read after the loop's first sync */
    swa_tile_rows<D>(Vs, L::LDK, vb, ks, j0, T, c.tid);
    float dk[D / 8][4], dv[D / 8][4];
    SWA_UNROLL
    for (int nd = 0; nd < D / 8; nd++)
        SWA_UNROLL
        for (int e = 0; e < 4; e++) dk[nd][e] = dv[nd][e] = 0.0f;

    const int qhi = swa_last_query_tile(kt, T, p.W, p.S);
    for (int hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        const kern_bf16 *qb = p.q + (size_t)b * T * qs + (size_t)h * D;
        const kern_bf16 *dob = p.dout + (size_t)b * T * qs + (size_t)h * D;
        for (int qt = kt; qt <= qhi; qt++) {
            const int t0 = qt * SWA_BT;
            swa_sync();
            swa_tile_rows<D>(Qs, L::LDK, qb, qs, t0, T, c.tid);
            swa_tile_rows<D>(Os, L::LDK, dob, qs, t0, T, c.tid);
            swa_tile_cols<D>(Qt, L::LDT, qb, qs, t0, T, c.tid);
            swa_tile_cols<D>(Ot, L::LDT, dob, qs, t0, T, c.tid);
            if (c.tid < SWA_BT) {
                int t = t0 + c.tid;
                size_t ix = ((size_t)b * T + t) * H + h;
                lse_s[c.tid] = t < T ? p.lse[ix] : 0.0f;
                dl_s[c.tid] = t < T ? p.delta[ix] : 0.0f;
            }
            swa_sync();

            float st[8][4], dpt[8][4]; /* rows: this warp's 16 keys; columns: the tile's queries */
            SWA_UNROLL
            for (int nt = 0; nt < 8; nt++)
                SWA_UNROLL
                for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.0f;
            SWA_UNROLL
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t ka[4], va[4];
                swa_frag_a(ka, Ks, L::LDK, warp * 16, kk * 16, g, tq);
                swa_frag_a(va, Vs, L::LDK, warp * 16, kk * 16, g, tq);
                SWA_UNROLL
                for (int nt = 0; nt < 8; nt++) {
                    uint32_t bb[2];
                    swa_frag_b(bb, Qs, L::LDK, nt * 8, kk * 16, g, tq);
                    swa_mma(st[nt], ka, bb);
                    swa_frag_b(bb, Os, L::LDK, nt * 8, kk * 16, g, tq);
                    swa_mma(dpt[nt], va, bb);
                }
            }
            SWA_UNROLL
            for (int nt = 0; nt < 8; nt++) {
                SWA_UNROLL
                for (int e = 0; e < 4; e++) {
                    int key = e < 2 ? k0 : k1, tc = nt * 8 + 2 * tq + (e & 1);
                    bool ok = swa_sees(t0 + tc, key, T, p.W, p.S);
                    float pe = ok ? swa_exp(st[nt][e] * p.scale - lse_s[tc]) : 0.0f;
                    st[nt][e] = pe;                                        /* P^T */
                    dpt[nt][e] = ok ? pe * (dpt[nt][e] - dl_s[tc]) : 0.0f; /* dS^T */
                }
            }
            SWA_UNROLL
            for (int kk = 0; kk < 4; kk++) { /* over the tile's queries */
                uint32_t ap[4], ads[4];
                swa_frag_a_from_c(ap, st[2 * kk], st[2 * kk + 1]);
                swa_frag_a_from_c(ads, dpt[2 * kk], dpt[2 * kk + 1]);
                SWA_UNROLL
                for (int nd = 0; nd < D / 8; nd++) {
                    uint32_t bb[2];
                    swa_frag_b(bb, Ot, L::LDT, nd * 8, kk * 16, g, tq);
                    swa_mma(dv[nd], ap, bb);
                    swa_frag_b(bb, Qt, L::LDT, nd * 8, kk * 16, g, tq);
                    swa_mma(dk[nd], ads, bb);
                }
            }
        }
    }
    kern_bf16 *dkb = p.dk + (size_t)b * T * ks + (size_t)kvh * D;
    kern_bf16 *dvb = p.dv + (size_t)b * T * ks + (size_t)kvh * D;
    SWA_UNROLL
    for (int r = 0; r < 2; r++) {
        int key = r ? k1 : k0;
        if (key >= T) continue;
        SWA_UNROLL
        for (int nd = 0; nd < D / 8; nd++) {
            size_t off = (size_t)key * ks + nd * 8 + 2 * tq;
            swa_st32(dkb + off, swa_pack(dk[nd][2 * r] * p.scale, dk[nd][2 * r + 1] * p.scale));
            swa_st32(dvb + off, swa_pack(dv[nd][2 * r], dv[nd][2 * r + 1]));
        }
    }
}

/* ---- plain fp32 kernels on CUDA cores: one warp per query row (per key row for dk, dv), lane i
 * holds elements i, i+32, ... of a head; keys listed one by one as kern_swa_step does. Slow, kept
 * as a second opinion that shares no tiling or masking code with the kernels above. ---- */

/* grid (ceil(T / 4), H, B) */
template <int D> SWA_FN void swa_fwd_simple(const swa_params &p, swa_ctx c) {
    constexpr int E = D / 32;
    const int T = p.T, H = p.H, t = c.bx * (SWA_THREADS / 32) + c.tid / 32, h = c.by, b = c.bz;
    const int lane = c.tid % 32, kvh = h / (H / p.G);
    if (t >= T) return; /* whole warps */
    const size_t qs = (size_t)H * D, ks = (size_t)p.G * D;
    const kern_bf16 *qr = p.q + ((size_t)b * T + t) * qs + (size_t)h * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    float qv[E], acc[E];
    for (int e = 0; e < E; e++) qv[e] = swa_bf(qr[lane + 32 * e]), acc[e] = 0.0f;
    int ws = swa_imax(0, t - p.W + 1), ns = swa_imin(p.S, ws), n = ns + t - ws + 1;
    float m = -INFINITY, l = 0.0f;
    for (int i = 0; i < n; i++) {
        int j = i < ns ? i : ws + i - ns;
        const kern_bf16 *kr = kb + (size_t)j * ks, *vr = vb + (size_t)j * ks;
        float dot = 0.0f;
        for (int e = 0; e < E; e++) dot += qv[e] * swa_bf(kr[lane + 32 * e]);
        float x = swa_warp_sum(dot) * p.scale, mn = fmaxf(m, x);
        float corr = swa_exp(m - mn), pe = swa_exp(x - mn);
        l = l * corr + pe;
        for (int e = 0; e < E; e++) acc[e] = acc[e] * corr + pe * swa_bf(vr[lane + 32 * e]);
        m = mn;
    }
    kern_bf16 *orow = p.out + ((size_t)b * T + t) * qs + (size_t)h * D;
    for (int e = 0; e < E; e++) orow[lane + 32 * e] = swa_to_bf(acc[e] / l);
    if (lane == 0) p.lse_out[((size_t)b * T + t) * H + h] = m + swa_log(l);
}

/* grid (ceil(T / 4), H, B); writes dq */
template <int D> SWA_FN void swa_dq_simple(const swa_params &p, swa_ctx c) {
    constexpr int E = D / 32;
    const int T = p.T, H = p.H, t = c.bx * (SWA_THREADS / 32) + c.tid / 32, h = c.by, b = c.bz;
    const int lane = c.tid % 32, kvh = h / (H / p.G);
    if (t >= T) return;
    const size_t qs = (size_t)H * D, ks = (size_t)p.G * D, row = ((size_t)b * T + t) * qs + (size_t)h * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    float qv[E], dov[E], acc[E];
    for (int e = 0; e < E; e++)
        qv[e] = swa_bf(p.q[row + lane + 32 * e]), dov[e] = swa_bf(p.dout[row + lane + 32 * e]), acc[e] = 0.0f;
    const float lse = p.lse[((size_t)b * T + t) * H + h], dl = p.delta[((size_t)b * T + t) * H + h];
    int ws = swa_imax(0, t - p.W + 1), ns = swa_imin(p.S, ws), n = ns + t - ws + 1;
    for (int i = 0; i < n; i++) {
        int j = i < ns ? i : ws + i - ns;
        const kern_bf16 *kr = kb + (size_t)j * ks, *vr = vb + (size_t)j * ks;
        float dot = 0.0f, dpp = 0.0f;
        for (int e = 0; e < E; e++) dot += qv[e] * swa_bf(kr[lane + 32 * e]), dpp += dov[e] * swa_bf(vr[lane + 32 * e]);
        float pe = swa_exp(swa_warp_sum(dot) * p.scale - lse);
        float ds = pe * (swa_warp_sum(dpp) - dl);
        for (int e = 0; e < E; e++) acc[e] += ds * swa_bf(kr[lane + 32 * e]);
    }
    for (int e = 0; e < E; e++) p.dq[row + lane + 32 * e] = swa_to_bf(acc[e] * p.scale);
}

/* grid (ceil(T / 4), G, B): key j is seen by queries j..T-1 if a sink, else j..j+W-1; writes dk, dv */
template <int D> SWA_FN void swa_dkdv_simple(const swa_params &p, swa_ctx c) {
    constexpr int E = D / 32;
    const int T = p.T, H = p.H, G = p.G, j = c.bx * (SWA_THREADS / 32) + c.tid / 32, kvh = c.by, b = c.bz;
    const int lane = c.tid % 32, group = H / G;
    if (j >= T) return;
    const size_t qs = (size_t)H * D, ks = (size_t)G * D, krow = ((size_t)b * T + j) * ks + (size_t)kvh * D;
    float kv[E], vv[E], dk[E], dv[E];
    for (int e = 0; e < E; e++)
        kv[e] = swa_bf(p.k[krow + lane + 32 * e]), vv[e] = swa_bf(p.v[krow + lane + 32 * e]), dk[e] = dv[e] = 0.0f;
    const int tmax = j < p.S ? T - 1 : swa_imin(T - 1, j + p.W - 1);
    for (int hh = 0; hh < group; hh++) {
        const int h = kvh * group + hh;
        for (int t = j; t <= tmax; t++) {
            const size_t row = ((size_t)b * T + t) * qs + (size_t)h * D, ix = ((size_t)b * T + t) * H + h;
            float qv[E], dov[E], dot = 0.0f, dpp = 0.0f;
            for (int e = 0; e < E; e++) {
                qv[e] = swa_bf(p.q[row + lane + 32 * e]), dov[e] = swa_bf(p.dout[row + lane + 32 * e]);
                dot += qv[e] * kv[e], dpp += dov[e] * vv[e];
            }
            float pe = swa_exp(swa_warp_sum(dot) * p.scale - p.lse[ix]);
            float ds = pe * (swa_warp_sum(dpp) - p.delta[ix]);
            for (int e = 0; e < E; e++) dv[e] += pe * dov[e], dk[e] += ds * qv[e];
        }
    }
    for (int e = 0; e < E; e++) {
        p.dk[krow + lane + 32 * e] = swa_to_bf(dk[e] * p.scale);
        p.dv[krow + lane + 32 * e] = swa_to_bf(dv[e]);
    }
}

#endif
