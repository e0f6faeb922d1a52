/* CUDA kernels of kernels/cuda/cuda_ops.h: the top-k of the teacher's logits and the fused
 * distillation loss (cross-entropy + top-k KL) with its gradient, as kern_topk_f32 and
 * kern_distill_loss_f32 of kernels/train_ops.h. One block per row for both; every result is
 * deterministic (integer shared-memory atomics only, fixed reduction trees). */
#include "cuda_internal.cuh"

#include <stdint.h>

/* ---- top-k --------------------------------------------------------------------------------
 * The order: each entry becomes the 64-bit key (ord(value) << 32) | ~index, where ord maps a
 * float's bits to a uint32 with the floats' order (-0.0 taken as +0.0, so the two zeros tie as
 * they do on the CPU). Keys are unique, and "larger key" is exactly the CPU's "ranks higher"
 * (value descending, ties to the lower index), so the top k is the k largest keys, sorted.
 *
 * Fast path, one read of the row: the row goes by in chunks of TK_CHUNK entries; a histogram of
 * the key's top 11 bits (sign, exponent, 2 mantissa bits) over everything seen so far gives a
 * lower bound on the final k-th key's bin (the bin where the count from the top reaches k can
 * only rise as entries come), and only the entries at or above it are counted and kept in a
 * shared-memory buffer (compacted when it fills): after the first chunk few entries touch shared
 * memory at all. At the end the buffer holds every entry of a bin at or above
 * the final one (typically a few hundred beyond k): a bitonic sort of it gives the k.
 * Slow path, when the buffer would overflow (thousands of entries in the threshold bin: heavy
 * ties): an exact radix select of the k-th key over the row in global memory (up to 6 passes of
 * 11 bits, stopping when a bin is taken whole), then one pass gathers the k keys above it. */
#define TK_NT 512
#define TK_E 16                        /* entries per thread per chunk */
#define TK_CHUNK (TK_NT * TK_E)        /* 8192 */
#define TK_BINS 2048                   /* 11-bit digits */
#define TK_CAP 4096                    /* keys in the buffer (32 KB) */

static __device__ __forceinline__ uint32_t f2ord(float f) {
    uint32_t u = f == 0.0f ? 0u : __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static __device__ __forceinline__ float ord2f(uint32_t o) {
    return __uint_as_float((o & 0x80000000u) ? (o ^ 0x80000000u) : ~o);
}
static __device__ __forceinline__ unsigned long long tk_key(float f, int i) {
    return ((unsigned long long)f2ord(f) << 32) | (uint32_t)~(uint32_t)i;
}

/* The largest bin b with sum(hist[b..]) >= need (0 when the total is below need): *b_out, and
 * the count above it, *above_out. Every thread of the block calls it; ends with a barrier. */
static __device__ void tk_find_bin(const int *hist, int need, int *wsum, int *b_out, int *above_out) {
    const int per = TK_BINS / TK_NT; /* 4 bins per thread */
    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int local = 0;
#pragma unroll
    for (int j = 0; j < per; j++) local += hist[tid * per + j];
    int incl = local; /* inclusive suffix sum within the warp */
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_down_sync(0xffffffffu, incl, o);
        if (lane + o < 32) incl += y;
    }
    if (lane == 0) wsum[warp] = incl;
    if (tid == 0) *b_out = 0, *above_out = 0;
    __syncthreads();
    int excl = incl - local;
    for (int w = warp + 1; w < TK_NT / 32; w++) excl += wsum[w];
    if (excl < need && excl + local >= need) {
        int acc = excl;
        for (int j = per - 1; j >= 0; j--) {
            int h = hist[tid * per + j];
            if (acc + h >= need) {
                *b_out = tid * per + j;
                *above_out = acc;
                break;
            }
            acc += h;
        }
    }
    __syncthreads();
}

/* Appends key to buf at *cnt when keep, one shared atomic per warp (positions in any order:
 * the keys are sorted afterwards). Every lane of the warp calls it. */
static __device__ __forceinline__ void tk_append(unsigned long long *buf, int *cnt, bool keep,
                                                 unsigned long long key) {
    unsigned mask = __ballot_sync(0xffffffffu, keep);
    if (!mask) return;
    int lane = threadIdx.x % 32, base = 0;
    if (lane == __ffs(mask) - 1) base = atomicAdd(cnt, __popc(mask));
    base = __shfl_sync(0xffffffffu, base, __ffs(mask) - 1);
    if (keep) buf[base + __popc(mask & ((1u << lane) - 1))] = key;
}

/* Keeps the buffered keys whose top 11 bits are >= b. */
static __device__ void tk_compact(unsigned long long *buf, int *cnt, int b) {
    unsigned long long r[TK_CAP / TK_NT];
    int c = *cnt;
#pragma unroll
    for (int j = 0; j < TK_CAP / TK_NT; j++) {
        int i = threadIdx.x + j * TK_NT;
        r[j] = i < c ? buf[i] : 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) *cnt = 0;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < TK_CAP / TK_NT; j++) {
        int i = threadIdx.x + j * TK_NT;
        tk_append(buf, cnt, i < c && (int)(r[j] >> 53) >= b, r[j]);
    }
    __syncthreads();
}

template <bool VEC>
__global__ void __launch_bounds__(TK_NT, 2)
    topk_kernel(int *idx, float *val, const float *logits, int V, int k) {
    __shared__ int hist[TK_BINS];
    __shared__ unsigned long long buf[TK_CAP];
    __shared__ int wsum[TK_NT / 32];
    __shared__ int s_b, s_above, s_cnt, s_q;
    int tid = threadIdx.x;
    const float *x = logits + (size_t)blockIdx.x * V;
    for (int i = tid; i < TK_BINS; i += TK_NT) hist[i] = 0;
    if (tid == 0) s_cnt = 0;
    __syncthreads();

    bool overflow = false;
    int bound = 0; /* no key of a bin below it can be in the top k */
    for (int c0 = 0; c0 < V; c0 += TK_CHUNK) {
        float v[TK_E]; /* entry e is at index tk_at(e), V and beyond past the row */
        auto tk_at = [&](int e) { return VEC ? c0 + 4 * ((e / 4) * TK_NT + tid) + e % 4 : c0 + e * TK_NT + tid; };
        if (VEC) {
            const float4 *x4 = reinterpret_cast<const float4 *>(x + c0);
#pragma unroll
            for (int u = 0; u < TK_E / 4; u++) {
                float4 f = tk_at(4 * u) < V ? __ldcs(x4 + u * TK_NT + tid) : make_float4(0, 0, 0, 0);
                v[4 * u] = f.x, v[4 * u + 1] = f.y, v[4 * u + 2] = f.z, v[4 * u + 3] = f.w;
            }
        } else {
#pragma unroll
            for (int e = 0; e < TK_E; e++) v[e] = tk_at(e) < V ? __ldcs(x + tk_at(e)) : 0.0f;
        }
        /* The first chunk in 4 steps, so that the bound rises early; each entry is counted only
         * when at or above the bound before its step: the bound never falls, so the counts of
         * the bins at or above it stay exact, and the rest are never looked at again. */
        int steps = c0 == 0 ? 4 : 1;
        for (int g = 0; g < steps; g++) {
            auto in = [&](int e) { return (steps == 1 || e / 4 == g) && tk_at(e) < V; };
#pragma unroll
            for (int e = 0; e < TK_E; e++) {
                int d = (int)(f2ord(v[e]) >> 21);
                if (in(e) && d >= bound) atomicAdd(&hist[d], 1);
            }
            if (tid == 0) s_q = 0;
            __syncthreads();
            tk_find_bin(hist, k, wsum, &s_b, &s_above);
            int b = s_b, q = 0;
#pragma unroll
            for (int e = 0; e < TK_E; e++) q += in(e) && (int)(f2ord(v[e]) >> 21) >= b;
            for (int o = 16; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
            if (tid % 32 == 0 && q) atomicAdd(&s_q, q);
            __syncthreads();
            bool full = s_cnt + s_q > TK_CAP;
            if (full) {
                tk_compact(buf, &s_cnt, b);
                full = s_cnt + s_q > TK_CAP;
            }
            __syncthreads(); /* every thread has read s_cnt before the appends change it */
            if (full) {      /* uniform: every thread read the same shared values */
                overflow = true;
                break;
            }
#pragma unroll
            for (int e = 0; e < TK_E; e++) {
                bool keep = in(e) && (int)(f2ord(v[e]) >> 21) >= b;
                tk_append(buf, &s_cnt, keep, keep ? tk_key(v[e], tk_at(e)) : 0);
            }
            __syncthreads();
            bound = b;
        }
        if (overflow) break;
    }

    int M;
    if (!overflow) {
        tk_compact(buf, &s_cnt, s_b);
        M = s_cnt;
    } else {
        /* exact radix select of the k-th largest key, 11 bits at a time from the top */
        unsigned long long prefix = 0;
        int need = k, shift = 64;
        for (int d = 0; d < 6; d++) {
            int width = d < 5 ? 11 : 9;
            shift -= width;
            __syncthreads();
            for (int i = tid; i < TK_BINS; i += TK_NT) hist[i] = 0;
            __syncthreads();
            for (int i = tid; i < V; i += TK_NT) {
                unsigned long long key = tk_key(x[i], i);
                if (d == 0 || (key >> (shift + width)) == prefix)
                    atomicAdd(&hist[(int)(key >> shift) & ((1 << width) - 1)], 1);
            }
            __syncthreads();
            tk_find_bin(hist, need, wsum, &s_b, &s_above);
            need -= s_above;
            prefix = (prefix << width) | (unsigned)s_b;
            if (hist[s_b] == need) break; /* the bin is taken whole */
        }
        unsigned long long thr = prefix << shift; /* the keys >= thr are exactly the k */
        __syncthreads();
        if (tid == 0) s_cnt = 0;
        __syncthreads();
        for (int base = 0; base < V; base += TK_NT) {
            int i = base + tid;
            unsigned long long key = i < V ? tk_key(x[i], i) : 0;
            tk_append(buf, &s_cnt, i < V && key >= thr, key);
        }
        __syncthreads();
        M = s_cnt;
    }

    /* bitonic sort of buf[0, P), descending; zero keys pad (below every real key) */
    int P = 1;
    while (P < M) P <<= 1;
    for (int i = M + tid; i < P; i += TK_NT) buf[i] = 0;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size / 2; stride > 0; stride >>= 1) {
            for (int t = tid; t < P / 2; t += TK_NT) {
                int lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
                unsigned long long a = buf[lo], c = buf[hi];
                bool desc = (lo & size) == 0;
                if ((a < c) == desc) buf[lo] = c, buf[hi] = a;
            }
            __syncthreads();
        }
    for (int j = tid; j < k; j += TK_NT) {
        unsigned long long key = buf[j];
        int i = (int)~(uint32_t)key;
        float f = ord2f((uint32_t)(key >> 32));
        if (f == 0.0f) f = x[i]; /* the zero's own sign */
        idx[(size_t)blockIdx.x * k + j] = i;
        val[(size_t)blockIdx.x * k + j] = f;
    }
}

extern "C" int kern_cuda_topk_f32(int *idx, float *val, const float *logits, int n, int V, int k,
                                  kern_cuda_stream s) {
    if (n < 0 || V < 1 || k < 1 || k > 1024 || k > V) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_topk_f32: n %d, V %d, k %d (need 1 <= k <= min(1024, V))", n, V, k);
        return -1;
    }
    if (n == 0) return 0;
    if (V % 4 == 0 && ((uintptr_t)logits & 15) == 0)
        topk_kernel<true><<<n, TK_NT, 0, s>>>(idx, val, logits, V, k);
    else
        topk_kernel<false><<<n, TK_NT, 0, s>>>(idx, val, logits, V, k);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

/* ---- the distillation loss ------------------------------------------------------------------
 * One block of 1024 threads per row. Thread j < k gathers the student logit at idx[j] and the
 * teacher value j: the KL and its gradient need only those. For a row with a target, pass 1
 * reads the row once for its max m and sum s of exp(x - m) (online, per thread, then combined in
 * a fixed tree), pass 2 writes every bf16 gradient entry ce_scale (exp(x - m - log s) - onehot);
 * a row without a target writes zeros and reads nothing. After a barrier, thread j rewrites its
 * idx[j] entry with the CE part plus kl_scale (p_S - p_T) (idx entries distinct, as top-k gives).
 * Where the row fits in shared memory (V up to ~57k floats) pass 1 brings it there (by the bulk
 * copy engine, the whole row in flight at once, when V % 4 == 0 and the rows are 16-byte
 * aligned) and pass 2 reads it from there: the logits leave global memory once; else pass 2
 * reads them again (mostly from L2). */
/* the Hopper bulk copy (TMA engine) global -> shared with an mbarrier counting its bytes */
static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
static __device__ __forceinline__ void mbar_init(unsigned long long *bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
}
static __device__ __forceinline__ void bulk_load(void *dst, const void *src, uint32_t bytes,
                                                 unsigned long long *bar) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(smem_addr(bar))
                 : "memory");
}
static __device__ __forceinline__ void mbar_wait0(unsigned long long *bar) { /* phase 0 complete */
    asm volatile("{\n\t.reg .pred P;\n\tWAIT:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 P, [%0], 0;\n\t"
                 "@!P bra WAIT;\n\t}" ::"r"(smem_addr(bar))
                 : "memory");
}

#define DL_NT 1024

struct f2 {
    float a, b;
};
static __device__ __forceinline__ f2 f2_max(f2 x, f2 y) { return {fmaxf(x.a, y.a), fmaxf(x.b, y.b)}; }
static __device__ __forceinline__ f2 f2_sum(f2 x, f2 y) { return {x.a + y.a, x.b + y.b}; }
/* (max, sum of exp(x - max)) pairs */
static __device__ __forceinline__ f2 ms_join(f2 x, f2 y) {
    float m = fmaxf(x.a, y.a);
    if (m == -INFINITY) return {m, x.b + y.b};
    return {m, x.b * expf(x.a - m) + y.b * expf(y.a - m)};
}
/* every thread gets the reduction; red[32] is this call's own */
template <class Op> static __device__ f2 block_reduce(f2 v, Op op, f2 *red) {
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, f2{__shfl_xor_sync(0xffffffffu, v.a, o), __shfl_xor_sync(0xffffffffu, v.b, o)});
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    f2 r = red[0];
    for (int w = 1; w < DL_NT / 32; w++) r = op(r, red[w]);
    return r;
}
static __device__ __forceinline__ void ms_add(float &m, float &s, float lm, float4 v) {
    if (lm > m) {
        s *= __expf(m - lm);
        m = lm;
    }
    s += __expf(v.x - m) + __expf(v.y - m) + __expf(v.z - m) + __expf(v.w - m);
}
static __device__ __forceinline__ uint32_t bf2(float lo, float hi) {
    return (uint32_t)to_bf(lo) | ((uint32_t)to_bf(hi) << 16);
}

template <bool SROW, bool VEC>
__global__ void __launch_bounds__(DL_NT, 1)
    distill_loss_kernel(float *ce, float *kl, kern_bf16 *dlogits, const float *logits,
                        const int *targets, const int *idx, const float *tval, int V, int k,
                        float ce_scale, float kl_scale) {
    extern __shared__ float4 srow4[];
    __shared__ f2 red[3][32];
    int tid = threadIdx.x, row = blockIdx.x;
    const float *x = logits + (size_t)row * V;
    kern_bf16 *dx = dlogits + (size_t)row * V;
    int target = targets[row];
    bool has = tid < k;
    int ij = has ? idx[(size_t)row * k + tid] : 0;
    float zs = has ? x[ij] : -INFINITY, zt = has ? tval[(size_t)row * k + tid] : -INFINITY;

    float m = -INFINITY, s = 0;
    if (target >= 0 && SROW && VEC) {
        /* pass 1: the row comes into shared memory by the bulk copy in 4 pieces, each summed
         * as soon as it lands (the whole row in flight at once) */
        __shared__ unsigned long long bar[4];
        int n4 = V / 4;
        if (tid == 0) {
            for (int p = 0; p < 4; p++) mbar_init(&bar[p]);
            asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
            for (int p = 0; p < 4; p++) {
                int a = p * n4 / 4, b = (p + 1) * n4 / 4;
                if (b > a) bulk_load(srow4 + a, x + 4 * (size_t)a, 16u * (b - a), &bar[p]);
            }
        }
        __syncthreads();
        for (int p = 0; p < 4; p++) {
            int a = p * n4 / 4, b = (p + 1) * n4 / 4;
            if (b == a) continue;
            mbar_wait0(&bar[p]);
            for (int j = a + tid; j < b; j += DL_NT) {
                float4 v = srow4[j];
                float lm = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
                if (lm > -INFINITY) ms_add(m, s, lm, v); /* exp(-inf - -inf) is NaN */
            }
        }
    } else if (target >= 0) { /* pass 1 */
        if (VEC) {
            const float4 *x4 = reinterpret_cast<const float4 *>(x);
            int n4 = V / 4;
            for (int base = 0; base < n4; base += 4 * DL_NT) {
                float4 v[4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int j = base + u * DL_NT + tid;
                    v[u] = j < n4 ? (SROW ? __ldcs(x4 + j) : x4[j]) : make_float4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int j = base + u * DL_NT + tid;
                    if (j < n4) {
                        if (SROW) srow4[j] = v[u];
                        float lm = fmaxf(fmaxf(v[u].x, v[u].y), fmaxf(v[u].z, v[u].w));
                        if (lm > -INFINITY) ms_add(m, s, lm, v[u]); /* exp(-inf - -inf) is NaN */
                    }
                }
            }
        } else {
            float *srow = reinterpret_cast<float *>(srow4);
            for (int base = 0; base < V; base += 4 * DL_NT) {
                float v[4];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    int j = base + u * DL_NT + tid;
                    v[u] = j < V ? (SROW ? __ldcs(x + j) : x[j]) : -INFINITY;
                    if (SROW && j < V) srow[j] = v[u];
                }
                float4 f = make_float4(v[0], v[1], v[2], v[3]);
                float lm = fmaxf(fmaxf(v[0], v[1]), fmaxf(v[2], v[3]));
                if (lm > -INFINITY) ms_add(m, s, lm, f); /* -inf pads add exp(-inf) = 0 */
            }
        }
    }
    f2 mx = block_reduce(f2{zs, zt}, f2_max, red[0]);
    f2 row_ms = block_reduce(f2{m, s}, ms_join, red[1]);
    m = row_ms.a;
    float log_s = logf(row_ms.b);
    /* the KL over the k entries, as log_softmax_k of train_ops_impl.h */
    f2 es = block_reduce(f2{has ? expf(zs - mx.a) : 0.0f, has ? expf(zt - mx.b) : 0.0f}, f2_sum, red[2]);
    float ls = zs - (mx.a + logf(es.a)), lt = zt - (mx.b + logf(es.b));
    float pt = expf(lt), ps = expf(ls);
    float term = has ? pt * (lt - ls) : 0.0f;
    float gk = kl_scale * (ps - pt);

    /* pass 2: every entry of the row */
    if (VEC) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        uint2 *d4 = reinterpret_cast<uint2 *>(dx);
        int n4 = V / 4;
        for (int j = tid; j < n4; j += DL_NT) {
            uint2 w = make_uint2(0, 0);
            if (target >= 0) {
                float4 v = SROW ? srow4[j] : x4[j];
                float g0 = ce_scale * __expf((v.x - m) - log_s), g1 = ce_scale * __expf((v.y - m) - log_s);
                float g2 = ce_scale * __expf((v.z - m) - log_s), g3 = ce_scale * __expf((v.w - m) - log_s);
                int t = target - 4 * j;
                if (t == 0) g0 -= ce_scale;
                if (t == 1) g1 -= ce_scale;
                if (t == 2) g2 -= ce_scale;
                if (t == 3) g3 -= ce_scale;
                w = make_uint2(bf2(g0, g1), bf2(g2, g3));
            }
            __stcs(d4 + j, w);
        }
    } else {
        const float *srow = reinterpret_cast<const float *>(srow4);
        for (int j = tid; j < V; j += DL_NT) {
            float g = 0.0f;
            if (target >= 0) {
                g = ce_scale * __expf(((SROW ? srow[j] : x[j]) - m) - log_s);
                if (j == target) g -= ce_scale;
            }
            dx[j] = to_bf(g);
        }
    }
    /* the KL loss: a fourth reduction, reusing red[0] (its readers passed red[1]'s barrier) */
    f2 klr = block_reduce(f2{term, 0.0f}, f2_sum, red[0]);
    /* red[0]'s barrier also orders pass 2's writes before the rewrites at the k indices */
    if (has) {
        float g = 0.0f;
        if (target >= 0) {
            g = ce_scale * __expf((zs - m) - log_s);
            if (ij == target) g -= ce_scale;
        }
        dx[ij] = to_bf(g + gk);
    }
    if (tid == 0) {
        ce[row] = target >= 0 ? (m - x[target]) + log_s : 0.0f;
        kl[row] = klr.a;
    }
}

template <bool SROW, bool VEC>
static int distill_launch(float *ce, float *kl, kern_bf16 *dlogits, const float *logits,
                          const int *targets, const int *idx, const float *tval, int n, int V, int k,
                          float ce_scale, float kl_scale, size_t smem, kern_cuda_stream s) {
    static size_t configured; /* the dynamic shared memory this instance is allowed so far */
    if (smem > 48 * 1024 && smem > configured) {
        CUDA_TRY(cudaFuncSetAttribute(distill_loss_kernel<SROW, VEC>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = smem;
    }
    distill_loss_kernel<SROW, VEC><<<n, DL_NT, smem, s>>>(ce, kl, dlogits, logits, targets, idx, tval,
                                                          V, k, ce_scale, kl_scale);
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int kern_cuda_distill_loss_f32(float *ce, float *kl, kern_bf16 *dlogits,
                                          const float *logits, const int *targets, const int *idx,
                                          const float *teacher_val, int n, int V, int k,
                                          float ce_scale, float kl_scale, kern_cuda_stream s) {
    if (n < 0 || V < 1 || k < 1 || k > 1024 || k > V) {
        snprintf(kern_cuda_error_text, sizeof kern_cuda_error_text,
                 "kern_cuda_distill_loss_f32: n %d, V %d, k %d (need 1 <= k <= min(1024, V))", n,
                 V, k);
        return -1;
    }
    if (n == 0) return 0;
    static int optin = -1; /* the opt-in shared memory per block, bytes */
    if (optin < 0) {
        int dev;
        CUDA_TRY(cudaGetDevice(&dev));
        CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    bool vec = V % 4 == 0 && ((uintptr_t)logits & 15) == 0 && ((uintptr_t)dlogits & 7) == 0;
    size_t row_bytes = 4 * (size_t)V, stat = 3 * 32 * sizeof(f2) + 1024;
    bool srow = row_bytes + stat <= (size_t)optin;
    if (srow && vec)
        return distill_launch<true, true>(ce, kl, dlogits, logits, targets, idx, teacher_val, n, V, k,
                                          ce_scale, kl_scale, row_bytes, s);
    if (srow)
        return distill_launch<true, false>(ce, kl, dlogits, logits, targets, idx, teacher_val, n, V,
                                           k, ce_scale, kl_scale, row_bytes, s);
    if (vec)
        return distill_launch<false, true>(ce, kl, dlogits, logits, targets, idx, teacher_val, n, V,
                                           k, ce_scale, kl_scale, 0, s);
    return distill_launch<false, false>(ce, kl, dlogits, logits, targets, idx, teacher_val, n, V, k,
                                        ce_scale, kl_scale, 0, s);
}
