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
 *   swa_ldsm(r,p), swa_ldsm_t(r,p) ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16, p this lane's
 *                               row address (shared memory, 16-byte aligned)
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

/* Every query of tile t0.. sees every key of tile j0.. (the tile needs no mask): all its queries
 * exist, its last key precedes its first query, and its keys are sinks or in the last query's window. */
SWA_FN bool swa_tile_full(int t0, int j0, int T, int W, int S) {
    return t0 + SWA_BT <= T && j0 + SWA_BT - 1 <= t0 && (j0 + SWA_BT <= S || j0 >= t0 + SWA_BT - W);
}

/* shared memory of the tensor-core kernels: [64][D] tiles, row-major, rows padded by 8 bf16 (16 bytes)
 * so that the 8 rows an ldmatrix reads fall in 8 different 16-byte bank groups */
template <int D> struct swa_smem {
    static constexpr int LD = D + 8, TILE = SWA_BT * LD;
    static constexpr size_t fwd = 2 * sizeof(kern_bf16) * (size_t)TILE;
    static constexpr size_t dq = 2 * sizeof(kern_bf16) * (size_t)TILE;
    static constexpr size_t dkdv = 4 * sizeof(kern_bf16) * (size_t)TILE + 2 * SWA_BT * sizeof(float);
};

/* ---- fragments, loaded by the whole warp with ldmatrix: lane l gives the address of row l % 8 of
 * 8 x 8 matrix l / 8; register i receives row lane/4, columns 2(lane%4), +1 of matrix i (with
 * .trans: of its transpose) ---- */

/* A (16 x 16) of row-major s, rows m0.., columns k0..: matrices (m0, k0) (m0+8, k0) (m0, k0+8)
 * (m0+8, k0+8) are a0a1, a2a3, a4a5, a6a7 */
SWA_FN void swa_lds_a(uint32_t a[4], const kern_bf16 *s, int ld, int m0, int k0, int lane) {
    int mi = lane / 8;
    swa_ldsm(a, s + (m0 + lane % 8 + 8 * (mi % 2)) * ld + k0 + 8 * (mi / 2));
}
/* B (k16 x n8) of n-tiles n0 and n0+8 from s[n][k] (B transposed, row-major): matrices (n0, k0)
 * (n0, k0+8) are b0's two words, (n0+8, k0) (n0+8, k0+8) b1's */
SWA_FN void swa_lds_b2(uint32_t b0[2], uint32_t b1[2], const kern_bf16 *s, int ld, int n0, int k0, int lane) {
    int mi = lane / 8;
    uint32_t r[4];
    swa_ldsm(r, s + (n0 + lane % 8 + 8 * (mi / 2)) * ld + k0 + 8 * (mi % 2));
    b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}
/* the same from s[k][n] (B itself, row-major) through the transposing load: matrices (k0, n0)
 * (k0+8, n0) are b0's words, (k0, n0+8) (k0+8, n0+8) b1's */
SWA_FN void swa_lds_b2_t(uint32_t b0[2], uint32_t b1[2], const kern_bf16 *s, int ld, int k0, int n0, int lane) {
    int mi = lane / 8;
    uint32_t r[4];
    swa_ldsm_t(r, s + (k0 + lane % 8 + 8 * (mi % 2)) * ld + n0 + 8 * (mi / 2));
    b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
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

/* ---- tiles into shared memory (whole block), in two steps so that the next tile's global loads
 * are in flight while this one is computed on ---- */

/* Load the next tile into registers while this one is computed on: for d = 64 only, d = 128 would
 * spill (the loads then go straight before the store to shared memory). */
template <int D> SWA_FN constexpr bool swa_prefetch() { return D <= 64; }
/* this thread's D/16 16-byte pieces of one tile, in registers */
template <int D> struct swa_stage {
    uint32_t w[D / 16][4];
};
/* rows j0..j0+63 of a global [T, ld] matrix (D columns from base); rows >= T zero, so that masked
 * products (P = 0) never meet garbage. Piece v = tid + 128 i is row v / (D/8), 16-byte column
 * v % (D/8): a warp reads whole rows. */
template <int D>
SWA_FN void swa_fetch(swa_stage<D> &st, const kern_bf16 *base, size_t ld, int j0, int T, int tid) {
    SWA_UNROLL
    for (int i = 0; i < D / 16; i++) {
        int v = tid + SWA_THREADS * i, r = v / (D / 8), c = (v % (D / 8)) * 8;
        st.w[i][0] = st.w[i][1] = st.w[i][2] = st.w[i][3] = 0u;
        if (j0 + r < T) swa_ld16(st.w[i], base + (size_t)(j0 + r) * ld + c);
    }
}
template <int D> SWA_FN void swa_stash(kern_bf16 *s, const swa_stage<D> &st, int tid) {
    SWA_UNROLL
    for (int i = 0; i < D / 16; i++) {
        int v = tid + SWA_THREADS * i, r = v / (D / 8), c = (v % (D / 8)) * 8;
        swa_st16(s + r * swa_smem<D>::LD + c, st.w[i]);
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
    kern_bf16 *Ks = (kern_bf16 *)c.smem, *Vs = Ks + L::TILE;
    const int T = p.T, H = p.H, qt = c.bx, h = c.by, b = c.bz, kvh = h / (H / p.G);
    const int warp = c.tid / 32, lane = c.tid % 32, g = lane / 4, tq = lane % 4;
    const size_t qs = (size_t)H * D, ks = (size_t)p.G * D;
    const kern_bf16 *qb = p.q + (size_t)b * T * qs + (size_t)h * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    const int t0 = qt * SWA_BT, r0 = t0 + warp * 16 + g, r1 = r0 + 8;

    uint32_t qf[D / 16][4];
    swa_frag_a_rows<D>(qf, qb, qs, r0, r1, T, tq);
    float o[D / 8][4];
    SWA_UNROLL
    for (int nd = 0; nd < D / 8; nd++) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    const swa_tiles kl = swa_key_tiles(qt, T, p.W, p.S);
    swa_stage<D> nk, nv;
    auto fetch = [&](int i) {
        swa_fetch<D>(nk, kb, ks, swa_tile_at(kl, i) * SWA_BT, T, c.tid);
        swa_fetch<D>(nv, vb, ks, swa_tile_at(kl, i) * SWA_BT, T, c.tid);
    };
    if (swa_prefetch<D>()) fetch(0);
    for (int i = 0; i < kl.n; i++) {
        const int j0 = swa_tile_at(kl, i) * SWA_BT;
        swa_sync(); /* every warp is done with the previous tile */
        if (!swa_prefetch<D>()) fetch(i);
        swa_stash<D>(Ks, nk, c.tid);
        swa_stash<D>(Vs, nv, c.tid);
        swa_sync();
        if (swa_prefetch<D>() && i + 1 < kl.n) fetch(i + 1);

        float s[8][4];
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
        SWA_UNROLL
        for (int kk = 0; kk < D / 16; kk++) {
            SWA_UNROLL
            for (int np = 0; np < 4; np++) {
                uint32_t b0[2], b1[2];
                swa_lds_b2(b0, b1, Ks, L::LD, np * 16, kk * 16, lane);
                swa_mma(s[2 * np], qf[kk], b0);
                swa_mma(s[2 * np + 1], qf[kk], b1);
            }
        }
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++)
            SWA_UNROLL
            for (int e = 0; e < 4; e++) s[nt][e] *= p.scale;
        if (!swa_tile_full(t0, j0, T, p.W, p.S)) {
            SWA_UNROLL
            for (int nt = 0; nt < 8; nt++)
                SWA_UNROLL
                for (int e = 0; e < 4; e++)
                    if (!swa_sees(e < 2 ? r0 : r1, j0 + nt * 8 + 2 * tq + (e & 1), T, p.W, p.S)) s[nt][e] = -INFINITY;
        }
        float mx[2] = {-INFINITY, -INFINITY};
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++)
            SWA_UNROLL
            for (int e = 0; e < 4; e++) mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
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
            for (int np = 0; np < D / 16; np++) {
                uint32_t b0[2], b1[2];
                swa_lds_b2_t(b0, b1, Vs, L::LD, kk * 16, np * 16, lane);
                swa_mma(o[2 * np], a, b0);
                swa_mma(o[2 * np + 1], a, b1);
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

/* P = exp(S scale - lse) and dS = P (dP - delta) of one 16 x 64 accumulator pair, in place (s
 * becomes P, dp becomes dS); row(e) and col(nt, e) place element e of n-tile nt. MASK: apply
 * swa_sees (a tile that swa_tile_full passes skips it). */
template <bool MASK, typename RowF, typename ColF>
SWA_FN void swa_p_ds(float (&s)[8][4], float (&dp)[8][4], const float lse[2], const float dl[2], const swa_params &p,
                     RowF row, ColF col) {
    SWA_UNROLL
    for (int nt = 0; nt < 8; nt++) {
        SWA_UNROLL
        for (int e = 0; e < 4; e++) {
            bool ok = !MASK || swa_sees(row(nt, e), col(nt, e), p.T, p.W, p.S);
            float pe = ok ? swa_exp(s[nt][e] * p.scale - lse[e / 2]) : 0.0f;
            s[nt][e] = pe;
            dp[nt][e] = ok ? pe * (dp[nt][e] - dl[e / 2]) : 0.0f;
        }
    }
}

/* dq, grid (query tiles, H, B): recompute P from lse, dS = P (dP - delta), dq = scale dS K over
 * the same key tiles as the forward. Writes dq. */
template <int D> SWA_FN void swa_dq_mma(const swa_params &p, swa_ctx c) {
    typedef swa_smem<D> L;
    kern_bf16 *Ks = (kern_bf16 *)c.smem, *Vs = Ks + L::TILE;
    const int T = p.T, H = p.H, qt = c.bx, h = c.by, b = c.bz, kvh = h / (H / p.G);
    const int warp = c.tid / 32, lane = c.tid % 32, g = lane / 4, tq = lane % 4;
    const size_t qs = (size_t)H * D, ks = (size_t)p.G * D;
    const kern_bf16 *qb = p.q + (size_t)b * T * qs + (size_t)h * D;
    const kern_bf16 *dob = p.dout + (size_t)b * T * qs + (size_t)h * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    const int t0 = qt * SWA_BT, r0 = t0 + warp * 16 + g, r1 = r0 + 8;

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
    swa_stage<D> nk, nv;
    auto fetch = [&](int i) {
        swa_fetch<D>(nk, kb, ks, swa_tile_at(kl, i) * SWA_BT, T, c.tid);
        swa_fetch<D>(nv, vb, ks, swa_tile_at(kl, i) * SWA_BT, T, c.tid);
    };
    if (swa_prefetch<D>()) fetch(0);
    for (int i = 0; i < kl.n; i++) {
        const int j0 = swa_tile_at(kl, i) * SWA_BT;
        swa_sync();
        if (!swa_prefetch<D>()) fetch(i);
        swa_stash<D>(Ks, nk, c.tid);
        swa_stash<D>(Vs, nv, c.tid);
        swa_sync();
        if (swa_prefetch<D>() && i + 1 < kl.n) fetch(i + 1);

        float s[8][4], dp[8][4];
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++)
            SWA_UNROLL
            for (int e = 0; e < 4; e++) s[nt][e] = dp[nt][e] = 0.0f;
        SWA_UNROLL
        for (int kk = 0; kk < D / 16; kk++) {
            SWA_UNROLL
            for (int np = 0; np < 4; np++) {
                uint32_t b0[2], b1[2];
                swa_lds_b2(b0, b1, Ks, L::LD, np * 16, kk * 16, lane);
                swa_mma(s[2 * np], qf[kk], b0);
                swa_mma(s[2 * np + 1], qf[kk], b1);
                swa_lds_b2(b0, b1, Vs, L::LD, np * 16, kk * 16, lane);
                swa_mma(dp[2 * np], df[kk], b0);
                swa_mma(dp[2 * np + 1], df[kk], b1);
            }
        }
        auto row = [&](int, int e) { return e < 2 ? r0 : r1; };
        auto col = [&](int nt, int e) { return j0 + nt * 8 + 2 * tq + (e & 1); };
        if (swa_tile_full(t0, j0, T, p.W, p.S)) swa_p_ds<false>(s, dp, lse, dl, p, row, col);
        else swa_p_ds<true>(s, dp, lse, dl, p, row, col);
        SWA_UNROLL
        for (int kk = 0; kk < 4; kk++) { /* dq += dS K */
            uint32_t a[4];
            swa_frag_a_from_c(a, dp[2 * kk], dp[2 * kk + 1]);
            SWA_UNROLL
            for (int np = 0; np < D / 16; np++) {
                uint32_t b0[2], b1[2];
                swa_lds_b2_t(b0, b1, Ks, L::LD, kk * 16, np * 16, lane);
                swa_mma(acc[2 * np], a, b0);
                swa_mma(acc[2 * np + 1], a, b1);
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
    kern_bf16 *Ks = (kern_bf16 *)c.smem, *Vs = Ks + L::TILE, *Qs = Vs + L::TILE, *Os = Qs + L::TILE;
    float *lse_s = (float *)(Os + L::TILE), *dl_s = lse_s + SWA_BT;
    const int T = p.T, H = p.H, G = p.G, group = H / G;
    const int kt = c.bx / (G * p.B), kvh = c.bx % (G * p.B) % G, b = c.bx % (G * p.B) / G;
    const int warp = c.tid / 32, lane = c.tid % 32, g = lane / 4, tq = lane % 4;
    const size_t qs = (size_t)H * D, ks = (size_t)G * D;
    const kern_bf16 *kb = p.k + (size_t)b * T * ks + (size_t)kvh * D;
    const kern_bf16 *vb = p.v + (size_t)b * T * ks + (size_t)kvh * D;
    const int j0 = kt * SWA_BT, k0 = j0 + warp * 16 + g, k1 = k0 + 8; /* this thread's key rows */

    {
        swa_stage<D> st;
        swa_fetch<D>(st, kb, ks, j0, T, c.tid);
        swa_stash<D>(Ks, st, c.tid); /* read after the loop's first sync */
        swa_fetch<D>(st, vb, ks, j0, T, c.tid);
        swa_stash<D>(Vs, st, c.tid);
    }
    float dk[D / 8][4], dv[D / 8][4];
    SWA_UNROLL
    for (int nd = 0; nd < D / 8; nd++)
        SWA_UNROLL
        for (int e = 0; e < 4; e++) dk[nd][e] = dv[nd][e] = 0.0f;

    /* iteration it: query head kvh * group + it / nq, query tile kt + it % nq */
    const int nq = swa_last_query_tile(kt, T, p.W, p.S) - kt + 1, n = group * nq;
    swa_stage<D> nqs, nos;
    float nlse = 0.0f, ndl = 0.0f;
    auto fetch = [&](int it) {
        const int h = kvh * group + it / nq, t0 = (kt + it % nq) * SWA_BT;
        swa_fetch<D>(nqs, p.q + (size_t)b * T * qs + (size_t)h * D, qs, t0, T, c.tid);
        swa_fetch<D>(nos, p.dout + (size_t)b * T * qs + (size_t)h * D, qs, t0, T, c.tid);
        if (c.tid < SWA_BT) {
            int t = t0 + c.tid;
            size_t ix = ((size_t)b * T + t) * H + h;
            nlse = t < T ? p.lse[ix] : 0.0f;
            ndl = t < T ? p.delta[ix] : 0.0f;
        }
    };
    if (swa_prefetch<D>()) fetch(0);
    for (int it = 0; it < n; it++) {
        const int t0 = (kt + it % nq) * SWA_BT;
        swa_sync();
        if (!swa_prefetch<D>()) fetch(it);
        swa_stash<D>(Qs, nqs, c.tid);
        swa_stash<D>(Os, nos, c.tid);
        if (c.tid < SWA_BT) lse_s[c.tid] = nlse, dl_s[c.tid] = ndl;
        swa_sync();
        if (swa_prefetch<D>() && it + 1 < n) fetch(it + 1);

        float st[8][4], dpt[8][4]; /* rows: this warp's 16 keys; columns: the tile's queries */
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++)
            SWA_UNROLL
            for (int e = 0; e < 4; e++) st[nt][e] = dpt[nt][e] = 0.0f;
        SWA_UNROLL
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t ka[4], va[4];
            swa_lds_a(ka, Ks, L::LD, warp * 16, kk * 16, lane);
            swa_lds_a(va, Vs, L::LD, warp * 16, kk * 16, lane);
            SWA_UNROLL
            for (int np = 0; np < 4; np++) {
                uint32_t b0[2], b1[2];
                swa_lds_b2(b0, b1, Qs, L::LD, np * 16, kk * 16, lane);
                swa_mma(st[2 * np], ka, b0);
                swa_mma(st[2 * np + 1], ka, b1);
                swa_lds_b2(b0, b1, Os, L::LD, np * 16, kk * 16, lane);
                swa_mma(dpt[2 * np], va, b0);
                swa_mma(dpt[2 * np + 1], va, b1);
            }
        }
        /* per column (query) lse and delta: element e of n-tile nt is query column nt*8 + 2tq + (e&1) */
        const bool full = swa_tile_full(t0, j0, T, p.W, p.S);
        SWA_UNROLL
        for (int nt = 0; nt < 8; nt++) {
            float cl[2] = {lse_s[nt * 8 + 2 * tq], lse_s[nt * 8 + 2 * tq + 1]};
            float cd[2] = {dl_s[nt * 8 + 2 * tq], dl_s[nt * 8 + 2 * tq + 1]};
            SWA_UNROLL
            for (int e = 0; e < 4; e++) {
                int key = e < 2 ? k0 : k1, tc = nt * 8 + 2 * tq + (e & 1);
                bool ok = full || swa_sees(t0 + tc, key, T, p.W, p.S);
                float pe = ok ? swa_exp(st[nt][e] * p.scale - cl[e & 1]) : 0.0f;
                st[nt][e] = pe;                                        /* P^T */
                dpt[nt][e] = ok ? pe * (dpt[nt][e] - cd[e & 1]) : 0.0f; /* dS^T */
            }
        }
        SWA_UNROLL
        for (int kk = 0; kk < 4; kk++) { /* over the tile's queries */
            uint32_t ap[4], ads[4];
            swa_frag_a_from_c(ap, st[2 * kk], st[2 * kk + 1]);
            swa_frag_a_from_c(ads, dpt[2 * kk], dpt[2 * kk + 1]);
            SWA_UNROLL
            for (int np = 0; np < D / 16; np++) {
                uint32_t b0[2], b1[2];
                swa_lds_b2_t(b0, b1, Os, L::LD, kk * 16, np * 16, lane);
                swa_mma(dv[2 * np], ap, b0);
                swa_mma(dv[2 * np + 1], ap, b1);
                swa_lds_b2_t(b0, b1, Qs, L::LD, kk * 16, np * 16, lane);
                swa_mma(dk[2 * np], ads, b0);
                swa_mma(dk[2 * np + 1], ads, b1);
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
