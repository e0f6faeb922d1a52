/* Sliding-window + sink attention, CPU reference in float and double (bodies in swa_impl.h). */
#include "swa.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

/* Queries per block: at most 64 so the block's scores fit in cache, at most W so the keys a block
 * needs (W + block - 1, plus sinks) stay O(W + S). */
static int swa_block(int W) { return W < 64 ? W : 64; }

/* Longest key list of a block: S sinks + the window of its first query + the block. */
static size_t swa_lmax(int W, int S) { return (size_t)S + (size_t)W + (size_t)swa_block(W) - 1; }

size_t kern_swa_scratch_elems(int W, int S) {
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

/* Whether column c of the block's scores is in query t's key set. Sink columns always are: they
 * precede the window of every query of the block. A window column j is when it is causal and
 * either a sink or within t's own window. */
static inline bool swa_allowed(const swa_span *sp, int c, int t, int W, int S) {
    if (c < sp->ns) return true;
    int j = sp->ws0 + (c - sp->ns);
    return j <= t && (j < S || j > t - W);
}

#define real float
#define KFN(n) n##_f32
#define GEMM cblas_sgemm
#include "swa_impl.h"
#undef real
#undef KFN
#undef GEMM

#define real double
#define KFN(n) n##_f64
#define GEMM cblas_dgemm
#include "swa_impl.h"
#undef real
#undef KFN
#undef GEMM
