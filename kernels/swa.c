/* Sliding-window + sink attention, CPU reference in float and double (bodies in swa_impl.h). */
#include "swa.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* W >= T means full causal attention and S >= T all sinks: clamping both to T changes nothing
 * and keeps the scratch (and the block) bounded by T when a caller passes a huge W. */
static void swa_clamp(int T, int *W, int *S) {
    if (*W > T) *W = T > 1 ? T : 1;
    if (*S > T) *S = T;
}

/* Queries per block: at most 64 so the block's scores fit in cache, at most W so the keys a block
 * needs (W + block - 1, plus sinks) stay O(W + S). */
static int swa_block(int W) { return W < 64 ? W : 64; }

/* Longest key list of a block: S sinks + the window of its first query + the block. */
static size_t swa_lmax(int W, int S) { return (size_t)S + (size_t)W + (size_t)swa_block(W) - 1; }

size_t kern_swa_scratch_elems(int T, int W, int S) {
    swa_clamp(T, &W, &S);
    size_t bq = (size_t)swa_block(W);
    return 2 * bq * swa_lmax(W, S) + bq;
}

/* The keys a query block [t0, t0+nq) reads: sinks 0..ns-1, then the contiguous range
 * ws0..ws0+nw-1 (the first query's window start up to the last query). L = ns + nw columns. */
typedef struct swa_span {
    int ns, ws0, nw, L;
} swa_span;

static swa_span swa_block_span(int t0, int nq, int W, int S) {
    swa_span sp;
    sp.ws0 = t0 - W + 1 > 0 ? t0 - W + 1 : 0;
    sp.ns = S < sp.ws0 ? S : sp.ws0;
    sp.nw = t0 + nq - sp.ws0;
    sp.L = sp.ns + sp.nw;
    return sp;
}

/* Query t's keys among the block's columns: [0, a) and [b, e). Columns >= e are after t (causal);
 * [a, b) are the keys between the sinks and t's own window, which t no longer sees. Sink columns
 * always lie in [0, a): they precede the window of every query of the block. */
static inline void swa_row_ranges(const swa_span *sp, int t, int W, int S, int *a, int *b, int *e) {
    int ws = t - W + 1 > 0 ? t - W + 1 : 0;
    int lo = S > sp->ws0 ? S : sp->ws0, hi = ws > lo ? ws : lo; /* dropped keys: lo <= j < hi */
    *e = sp->ns + (t - sp->ws0) + 1;
    *a = sp->ns + (lo - sp->ws0);
    *b = sp->ns + (hi - sp->ws0);
    if (*a > *e) *a = *e;
    if (*b > *e) *b = *e;
}

#define real float
#define KFN(n) n##_f32
#define GEMM cblas_sgemm
#define EXPR expf
#include "swa_impl.h"
#undef real
#undef KFN
#undef GEMM
#undef EXPR

#define real double
#define KFN(n) n##_f64
#define GEMM cblas_dgemm
#define EXPR exp
#include "swa_impl.h"
#undef real
#undef KFN
#undef GEMM
#undef EXPR
