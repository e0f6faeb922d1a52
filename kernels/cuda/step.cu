/* kernels/cuda/step.cu — the step form for generation (kernels/cuda/cuda_ops.h): attention of one
 * query per head over a KV cache (flash-decoding), one mLSTM step of every head, and the mLSTM
 * state after a chunkwise prefill. Same maths as kern_swa_step_f32 and kern_mlstm_step_f32;
 * checked by tests/cuda/bench_cuda_step. Deterministic: fixed work splits, fixed-order reductions,
 * no atomics. */
#include "cuda_internal.cuh"

#include <float.h>

/* ---- decode attention ----
 * Kernel 1, grid (splits, H / QB), 128 threads: one block per key split and group of QB query
 * heads sharing a kv head, so each key row is read once for all of them (QB = the whole group
 * up to 8 heads). A key row is spread over D / 8 lanes, 8 dims each (one 16-byte load of k and
 * one of v), so a warp reads 32 / (D / 8) rows at once, U times over before using any. Each lane
 * keeps an online softmax (max, sum, its 8 dims of the accumulator) over the keys of its row
 * slot; the slots and warps are merged in a fixed order into the split's partial (max, sum,
 * accumulator [D]). Kernel 2, one block per query head: merges the splits in a fixed order.
 * Scores are in log2 units (q is scaled by log2(e) / sqrt(d)) so the softmax uses exp2. */

#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_QMAX 8         /* query heads per block at most */
#define DEC_BLOCKS 1024    /* blocks aimed at: enough splits to fill the GPU at long contexts */
#define DEC_MIN_ROUND 16   /* the smallest keys per block round (D 128, U 2): bounds the splits */
#define DEC_COMBINE 256

/* the start of every running max: finite, so that a masked key (score -inf) weighs exp2(-inf) = 0
 * and merging two empty partials gives exp2(0) * 0, never exp2(-inf + inf) */
#define DEC_EMPTY (-FLT_MAX)

static __device__ __forceinline__ void bf16x8(float (&x)[8], uint4 w) {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        x[2 * i] = __uint_as_float(u[i] << 16);
        x[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

struct dec_params {
    float *acc, *ml; /* partials: acc [splits, H, D], ml [splits, H, 2] (max, sum) */
    const kern_bf16 *q, *k, *v;
    int s1, n1, s2, n; /* n = n1 + n2 keys; key i < n1 is row s1 + i, else row s2 + i - n1 */
    int H, G, ks;      /* ks: keys per split */
    float qscale;      /* log2(e) / sqrt(d) */
};

template <int D, int QB, int U> __global__ void __launch_bounds__(DEC_THREADS) decode_split_kernel(dec_params p) {
    constexpr int LK = D / 8, KW = 32 / LK; /* lanes per key row, rows per warp load */
    __shared__ float s_acc[DEC_WARPS][QB][D], s_m[DEC_WARPS][QB], s_l[DEC_WARPS][QB];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, slot = lane / LK, part = lane % LK;
    const int split = blockIdx.x, groups = p.H / p.G / QB; /* query-head blocks per kv head */
    const int g = blockIdx.y / groups, h0 = g * (p.H / p.G) + (blockIdx.y % groups) * QB;
    const int k0 = split * p.ks, k1 = min(k0 + p.ks, p.n);
    const size_t row_stride = (size_t)p.G * D, col = (size_t)g * D + part * 8;

    float q[QB][8], acc[QB][8], m[QB], l[QB];
#pragma unroll
    for (int j = 0; j < QB; j++) {
        bf16x8(q[j], __ldg(reinterpret_cast<const uint4 *>(p.q + (size_t)(h0 + j) * D + part * 8)));
#pragma unroll
        for (int e = 0; e < 8; e++) q[j][e] *= p.qscale, acc[j][e] = 0.0f;
        m[j] = DEC_EMPTY, l[j] = 0.0f;
    }

    for (int base = k0 + warp * U * KW; base < k1; base += DEC_WARPS * U * KW) {
        uint4 kw[U], vw[U];
#pragma unroll
        for (int u = 0; u < U; u++) { /* every load of the round before any use */
            const int i = base + u * KW + slot;
            kw[u] = vw[u] = make_uint4(0, 0, 0, 0);
            if (i < k1) {
                const size_t off = (size_t)(i < p.n1 ? p.s1 + i : p.s2 + (i - p.n1)) * row_stride + col;
                kw[u] = __ldg(reinterpret_cast<const uint4 *>(p.k + off));
                vw[u] = __ldg(reinterpret_cast<const uint4 *>(p.v + off));
            }
        }
        float s[U][QB];
#pragma unroll
        for (int u = 0; u < U; u++) {
            float kf[8];
            bf16x8(kf, kw[u]);
#pragma unroll
            for (int j = 0; j < QB; j++) {
                float x = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) x = fmaf(q[j][e], kf[e], x);
#pragma unroll
                for (int o = LK / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
                s[u][j] = base + u * KW + slot < k1 ? x : -INFINITY;
            }
        }
#pragma unroll
        for (int j = 0; j < QB; j++) {
            float mx = m[j];
#pragma unroll
            for (int u = 0; u < U; u++) mx = fmaxf(mx, s[u][j]);
            const float corr = exp2f(m[j] - mx);
            m[j] = mx, l[j] *= corr;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[j][e] *= corr;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            float vf[8];
            bf16x8(vf, vw[u]);
#pragma unroll
            for (int j = 0; j < QB; j++) {
                const float pr = exp2f(s[u][j] - m[j]);
                l[j] += pr;
#pragma unroll
                for (int e = 0; e < 8; e++) acc[j][e] = fmaf(pr, vf[e], acc[j][e]);
            }
        }
    }

    /* the warp's row slots into slot 0, pairwise by lane distance */
#pragma unroll
    for (int o = LK; o < 32; o <<= 1)
#pragma unroll
        for (int j = 0; j < QB; j++) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[j], o), lo = __shfl_xor_sync(0xffffffffu, l[j], o);
            const float mx = fmaxf(m[j], mo), ca = exp2f(m[j] - mx), cb = exp2f(mo - mx);
            l[j] = l[j] * ca + lo * cb;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[j][e] = acc[j][e] * ca + __shfl_xor_sync(0xffffffffu, acc[j][e], o) * cb;
            m[j] = mx;
        }
    if (slot == 0)
#pragma unroll
        for (int j = 0; j < QB; j++) {
#pragma unroll
            for (int e = 0; e < 8; e++) s_acc[warp][j][part * 8 + e] = acc[j][e];
            if (part == 0) s_m[warp][j] = m[j], s_l[warp][j] = l[j];
        }
    __syncthreads();
    /* then the warps, in order; every split holds at least one key, so its max is finite */
    for (int idx = tid; idx < QB * D; idx += DEC_THREADS) {
        const int j = idx / D, c = idx % D;
        float mx = s_m[0][j];
#pragma unroll
        for (int w = 1; w < DEC_WARPS; w++) mx = fmaxf(mx, s_m[w][j]);
        float a = 0.0f, sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float f = exp2f(s_m[w][j] - mx);
            a += s_acc[w][j][c] * f, sum += s_l[w][j] * f;
        }
        const size_t hp = (size_t)split * p.H + h0 + j;
        p.acc[hp * D + c] = a;
        if (c == 0) p.ml[2 * hp] = mx, p.ml[2 * hp + 1] = sum;
    }
}

/* One block per query head: out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i over the
 * splits i; warp w takes the splits w, w + 8, ..., each lane D / 32 dims, then the warps' sums
 * are added in order. */
template <int D>
__global__ void __launch_bounds__(DEC_COMBINE)
    decode_combine_kernel(kern_bf16 *out, const float *acc, const float *ml, int H, int splits) {
    constexpr int NW = DEC_COMBINE / 32, E = D / 32;
    __shared__ float s_red[NW], s_acc[NW][D], s_l[NW];
    const int h = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float mx = DEC_EMPTY;
    for (int i = tid; i < splits; i += DEC_COMBINE) mx = fmaxf(mx, ml[2 * ((size_t)i * H + h)]);
    mx = warp_max(mx);
    if (lane == 0) s_red[warp] = mx;
    __syncthreads();
    mx = s_red[0];
#pragma unroll
    for (int w = 1; w < NW; w++) mx = fmaxf(mx, s_red[w]);
    float a[E], sum = 0.0f;
#pragma unroll
    for (int e = 0; e < E; e++) a[e] = 0.0f;
#pragma unroll 4
    for (int i = warp; i < splits; i += NW) {
        const size_t hp = (size_t)i * H + h;
        const float f = exp2f(ml[2 * hp] - mx);
        sum += ml[2 * hp + 1] * f;
        const float *src = acc + hp * D + lane * E;
        if constexpr (E == 2) {
            const float2 x = *reinterpret_cast<const float2 *>(src);
            a[0] += x.x * f, a[1] += x.y * f;
        } else {
            const float4 x = *reinterpret_cast<const float4 *>(src);
            a[0] += x.x * f, a[1] += x.y * f, a[2] += x.z * f, a[3] += x.w * f;
        }
    }
#pragma unroll
    for (int e = 0; e < E; e++) s_acc[warp][lane * E + e] = a[e];
    if (lane == 0) s_l[warp] = sum;
    __syncthreads();
    if (tid < D) {
        float x = 0.0f, tot = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) x += s_acc[w][tid], tot += s_l[w];
        out[(size_t)h * D + tid] = to_bf(x / tot);
    }
}

/* keys per block round: DEC_WARPS warps x U loads x rows per load */
template <int D, int QB> struct dec_shape {
    static constexpr int U = QB <= 4 ? 4 : 2; /* fewer loads in flight where the q and acc registers grow */
    static constexpr int ROUND = DEC_WARPS * U * (256 / D);
};

static int dec_max_splits(int max_keys) {
    const int by_keys = (max_keys + DEC_MIN_ROUND - 1) / DEC_MIN_ROUND;
    return by_keys < DEC_BLOCKS ? by_keys : DEC_BLOCKS;
}

template <int D, int QB> static int decode_run(dec_params p, kern_bf16 *out, float *ws, kern_cuda_stream s) {
    typedef dec_shape<D, QB> sh;
    const int blocks_y = p.H / QB;
    /* splits: about DEC_BLOCKS blocks in all, each split whole rounds, at most one per round */
    int want = (DEC_BLOCKS + blocks_y - 1) / blocks_y, rounds = (p.n + sh::ROUND - 1) / sh::ROUND;
    if (want > rounds) want = rounds;
    const int per = (rounds + want - 1) / want;
    p.ks = per * sh::ROUND;
    const int splits = (p.n + p.ks - 1) / p.ks;
    p.acc = ws, p.ml = ws + (size_t)splits * p.H * D;
    decode_split_kernel<D, QB, sh::U><<<dim3(splits, blocks_y), DEC_THREADS, 0, s>>>(p);
    CUDA_TRY(cudaGetLastError());
    decode_combine_kernel<D><<<p.H, DEC_COMBINE, 0, s>>>(out, p.acc, p.ml, p.H, splits);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

template <int D> static int decode_pick(const dec_params &p, int qb, kern_bf16 *out, float *ws, kern_cuda_stream s) {
    switch (qb) {
    case 1: return decode_run<D, 1>(p, out, ws, s);
    case 2: return decode_run<D, 2>(p, out, ws, s);
    case 3: return decode_run<D, 3>(p, out, ws, s);
    case 4: return decode_run<D, 4>(p, out, ws, s);
    case 5: return decode_run<D, 5>(p, out, ws, s);
    case 6: return decode_run<D, 6>(p, out, ws, s);
    case 7: return decode_run<D, 7>(p, out, ws, s);
    default: return decode_run<D, 8>(p, out, ws, s);
    }
}

extern "C" size_t kern_cuda_decode_attn_ws_bytes(int H, int d, int max_keys) {
    if (H < 1 || max_keys < 1 || (d != 64 && d != 128)) return 0;
    return sizeof(float) * (size_t)dec_max_splits(max_keys) * H * (d + 2);
}

static bool misaligned16(const void *x) { return ((uintptr_t)x & 15) != 0; }

extern "C" int kern_cuda_decode_attn_bf16(kern_bf16 *out, const kern_bf16 *q, const kern_bf16 *k, const kern_bf16 *v,
                                          int s1, int n1, int s2, int n2, int H, int G, int d, void *ws,
                                          kern_cuda_stream s) {
    const char *why = NULL;
    if (d != 64 && d != 128) why = "unsupported head dim (64 or 128)";
    else if (H < 1 || G < 1 || H % G != 0) why = "bad heads (H, G >= 1, H % G == 0)";
    else if (H > 65535) why = "H above the grid limit 65535";
    else if (n1 < 0 || n2 < 0 || s1 < 0 || s2 < 0 || (long long)n1 + n2 < 1 || (long long)n1 + n2 > 0x7fffffff)
        why = "bad key ranges (s1, s2, n1, n2 >= 0, 1 <= n1 + n2 < 2^31)";
    else if (misaligned16(q) || misaligned16(k) || misaligned16(v)) why = "q, k and v must be 16-byte aligned";
    else if (!out || !ws || ((uintptr_t)ws & 15) != 0) why = "out and ws must be given, ws 16-byte aligned";
    if (why) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_decode_attn_bf16: %s (s1 %d n1 %d s2 %d n2 %d H %d G %d d %d)", why, s1, n1, s2, n2, H, G,
                 d);
        return -1;
    }
    dec_params p;
    p.q = q, p.k = k, p.v = v, p.s1 = s1, p.n1 = n1, p.s2 = s2, p.n = n1 + n2, p.H = H, p.G = G;
    p.qscale = (float)(1.4426950408889634 / sqrt((double)d));
    /* the largest group of query heads of one kv head that divides it, up to DEC_QMAX: a group of
     * up to 8 reads each key once; a larger one is cut into equal blocks (a prime above 8: one
     * head a block) */
    const int qg = H / G;
    int qb = qg < DEC_QMAX ? qg : DEC_QMAX;
    while (qg % qb) qb--;
    return d == 64 ? decode_pick<64>(p, qb, out, (float *)ws, s) : decode_pick<128>(p, qb, out, (float *)ws, s);
}

/* ---- the mLSTM step ----
 * One block of 256 threads per head: thread t owns column i = t % 64 of rows r = t / 64 + 4 j
 * (j < 16) of C, so each warp reads and writes whole rows (coalesced) and the row's q and k are
 * broadcasts from shared memory. h's four row-group partials and the two warps' q . n are added
 * in a fixed order. */

#define STEP_THREADS 256
#define STEP_D 64
#define STEP_ROWS (STEP_D * STEP_D / STEP_THREADS) /* rows a thread visits */

/* the gates of one step, as kern_mlstm_step: m' = max(logf + m, itilde), f' = exp(logf + m - m'),
 * i' = exp(itilde - m'); a -inf side weighs 0 (never exp(-inf + inf)) */
struct step_gates {
    float m, fg, ig;
};
static __device__ __forceinline__ step_gates mlstm_gates(float m, float itilde, float logf) {
    step_gates g;
    const float a = logf + m;
    g.m = a > itilde ? a : itilde;
    g.fg = a > -INFINITY ? expf(a - g.m) : 0.0f;
    g.ig = itilde > -INFINITY ? expf(itilde - g.m) : 0.0f;
    return g;
}

__global__ void __launch_bounds__(STEP_THREADS)
    mlstm_step_kernel(float *h, float *C, float *n, float *m, const float *phi_q, const float *phi_k, const float *v,
                      const float *itilde, const float *logf, float eps) {
    constexpr int D = STEP_D;
    __shared__ float s_q[D], s_k[D], s_h[STEP_THREADS / D][D], s_qn[2];
    const int b = blockIdx.x, tid = threadIdx.x, i = tid % D, rg = tid / D;
    float *Cb = C + (size_t)b * D * D;
    float c[STEP_ROWS];
#pragma unroll
    for (int j = 0; j < STEP_ROWS; j++) c[j] = Cb[(size_t)(rg + 4 * j) * D + i];
    const float vi = v[(size_t)b * D + i];
    if (tid < D) s_q[tid] = phi_q[(size_t)b * D + tid], s_k[tid] = phi_k[(size_t)b * D + tid];
    const step_gates g = mlstm_gates(m[b], itilde[b], logf[b]);
    __syncthreads();
    float hp = 0.0f;
#pragma unroll
    for (int j = 0; j < STEP_ROWS; j++) {
        const int r = rg + 4 * j;
        const float kr = g.ig * s_k[r];
        c[j] = g.fg * c[j] + kr * vi;
        hp += s_q[r] * c[j];
        Cb[(size_t)r * D + i] = c[j];
    }
    s_h[rg][i] = hp;
    if (tid < D) { /* n and q . n: warps 0 and 1 */
        const float nr = g.fg * n[(size_t)b * D + tid] + g.ig * s_k[tid];
        n[(size_t)b * D + tid] = nr;
        const float x = warp_sum(s_q[tid] * nr);
        if ((tid & 31) == 0) s_qn[tid >> 5] = x;
    }
    __syncthreads();
    if (tid < D) {
        const float r = 1.0f / (s_qn[0] + s_qn[1] + eps);
        h[(size_t)b * D + tid] = (((s_h[0][tid] + s_h[1][tid]) + s_h[2][tid]) + s_h[3][tid]) * r;
    }
    if (tid == 0) m[b] = g.m;
}

/* ---- the state after a chunkwise forward ----
 * One block per sequence: the last chunk's keys, values and gates in shared memory, thread 0
 * runs m's recurrence and the gates over its tokens, then each thread steps its 16 entries of C
 * (the step kernel's layout) and threads < 64 one entry of n through them, in registers. */
__global__ void __launch_bounds__(STEP_THREADS)
    mlstm_final_kernel(float *C, float *n, float *m, const float *saved, const float *phi_k, const float *v,
                       const float *itilde, const float *logf, int T, int L, size_t sl) {
    constexpr int D = STEP_D, LM = 64;
    __shared__ float s_k[LM][D], s_v[LM][D], s_fg[LM], s_ig[LM];
    const int b = blockIdx.x, tid = threadIdx.x, i = tid % D, rg = tid / D;
    const int nch = (T + L - 1) / L, t0 = nch > 0 ? (nch - 1) * L : 0, Lc = T - t0;
    const size_t tok = (size_t)b * T + t0;
    const float *sv = saved + (size_t)b * sl;
    const float *Cin = nch > 1 ? sv + 2 * (size_t)T + (size_t)(nch - 2) * (D * D + D) : NULL;
    float c[STEP_ROWS], nr = 0.0f;
#pragma unroll
    for (int j = 0; j < STEP_ROWS; j++) c[j] = Cin ? Cin[(size_t)(rg + 4 * j) * D + i] : 0.0f;
    if (Cin && tid < D) nr = Cin[(size_t)D * D + tid];
    for (int e = tid; e < Lc * D; e += STEP_THREADS) {
        s_k[e / D][e % D] = phi_k[tok * D + e];
        s_v[e / D][e % D] = v[tok * D + e];
    }
    if (tid == 0) {
        float mm = Cin ? sv[t0 - 1] : -INFINITY; /* the entering state is stabilised at m[t0 - 1] */
        for (int t = 0; t < Lc; t++) {
            const step_gates g = mlstm_gates(mm, itilde[tok + t], logf[tok + t]);
            s_fg[t] = g.fg, s_ig[t] = g.ig, mm = g.m;
        }
        m[b] = mm;
    }
    __syncthreads();
    for (int t = 0; t < Lc; t++) {
        const float fg = s_fg[t], ig = s_ig[t], vi = s_v[t][i];
#pragma unroll
        for (int j = 0; j < STEP_ROWS; j++) {
            const float kr = ig * s_k[t][rg + 4 * j];
            c[j] = fg * c[j] + kr * vi;
        }
        if (tid < D) nr = fg * nr + ig * s_k[t][tid];
    }
    float *Cb = C + (size_t)b * D * D;
#pragma unroll
    for (int j = 0; j < STEP_ROWS; j++) Cb[(size_t)(rg + 4 * j) * D + i] = c[j];
    if (tid < D) n[(size_t)b * D + tid] = nr;
}

static int step_fail(const char *fn, const char *why, int B, int dk, int dv) {
    snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text, "%s: %s (B %d dk %d dv %d)", fn, why, B, dk, dv);
    return -1;
}

extern "C" int kern_cuda_mlstm_step(float *h, float *C, float *n, float *m, const float *phi_q, const float *phi_k,
                                    const float *v, const float *itilde, const float *logf, int BH, int dk, int dv,
                                    float eps, kern_cuda_stream s) {
    if (dk != STEP_D || dv != STEP_D)
        return step_fail("kern_cuda_mlstm_step", "only dk = dv = 64 is built", BH, dk, dv);
    if (BH < 0) return step_fail("kern_cuda_mlstm_step", "BH must be >= 0", BH, dk, dv);
    if (BH == 0) return 0;
    mlstm_step_kernel<<<BH, STEP_THREADS, 0, s>>>(h, C, n, m, phi_q, phi_k, v, itilde, logf, eps);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int kern_cuda_mlstm_final_state(float *C, float *n, float *m, const float *saved, const float *phi_k,
                                           const float *v, const float *itilde, const float *logf, int B, int T, int L,
                                           int dk, int dv, kern_cuda_stream s) {
    if (dk != STEP_D || dv != STEP_D)
        return step_fail("kern_cuda_mlstm_final_state", "only dk = dv = 64 is built", B, dk, dv);
    if (B < 0 || T < 0 || L < 1 || L > 64)
        return step_fail("kern_cuda_mlstm_final_state", "B, T must be >= 0 and L in 1 .. 64", B, dk, dv);
    if (B == 0) return 0;
    const size_t nch = T > 0 ? ((size_t)T + L - 1) / L : 0;
    const size_t sl = 2 * (size_t)T + (nch > 0 ? nch - 1 : 0) * ((size_t)dk * dv + dk); /* kern_mlstm_saved_len */
    mlstm_final_kernel<<<B, STEP_THREADS, 0, s>>>(C, n, m, saved, phi_k, v, itilde, logf, T, L, sl);
    CUDA_TRY(cudaGetLastError());
    return 0;
}
