/* tests/gradcheck.h — relative errors and float64 central finite differences for kernel tests.
 *
 * Relative error of a against a reference b (whole tensors):
 *     rel(a, b) = max_i |a_i - b_i| / max_i |b_i|
 * so it is the worst error in units of the tensor's scale; a NaN anywhere makes it +inf. A
 * reference that is exactly zero (a gradient that vanishes identically, as dq when every query
 * sees only itself) has no scale: the error is then the absolute max_i |a_i|. */
#ifndef XD_GRADCHECK_H
#define XD_GRADCHECK_H

#include "common/xd.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

static inline double gc_rel(double maxdiff, double maxref) {
    return maxref > 0 ? maxdiff / maxref : maxdiff;
}

static inline double rel_err_f64(const double *a, const double *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - b[i]);
        md = isnan(e) ? INFINITY : (e > md ? e : md);
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return gc_rel(md, mb);
}

static inline double rel_err_f32(const float *a, const double *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        md = isnan(e) ? INFINITY : (e > md ? e : md);
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return gc_rel(md, mb);
}

/* A scalar loss of the parameters held by ctx, in float64. */
typedef double (*gc_loss_fn)(void *ctx);

/* Central differences (L(p_i + h) - L(p_i - h)) / 2h with h = 1e-5 max(1, |p_i|), p perturbed in
 * place and restored, against the analytic gradient g[n]. Checks every element when
 * n <= max_checked, else max_checked of them at random (the first and last always). Returns
 * max |g_i - fd_i| over the checked elements divided by the tensor's scale: the larger of max|g|
 * over all n and max|fd| over the checked ones (a sample could miss the largest entries). */
static inline double gc_fd_check(double *p, const double *g, size_t n, gc_loss_fn loss, void *ctx,
                                 size_t max_checked, xd_rng *rng) {
    double md = 0, mref = 0;
    for (size_t i = 0; i < n; i++) mref = fabs(g[i]) > mref ? fabs(g[i]) : mref;
    size_t count = n <= max_checked ? n : max_checked;
    for (size_t c = 0; c < count; c++) {
        size_t i = c;
        if (n > max_checked)
            i = c == 0 ? 0 : c == 1 ? n - 1 : (size_t)(xd_rng_uniform(rng) * (double)n) % n;
        double keep = p[i], h = 1e-5 * (fabs(keep) > 1 ? fabs(keep) : 1);
        p[i] = keep + h;
        double lp = loss(ctx);
        p[i] = keep - h;
        double lm = loss(ctx);
        p[i] = keep;
        double fd = (lp - lm) / (2 * h), e = fabs(fd - g[i]);
        md = isnan(e) ? INFINITY : (e > md ? e : md);
        mref = fabs(fd) > mref ? fabs(fd) : mref;
    }
    return gc_rel(md, mref);
}

/* Normal values rounded to float, so the f32 and f64 kernels see the very same inputs. */
static inline double *gc_normal(size_t n, double scale, xd_rng *r) {
    double *x = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * xd_rng_normal(r));
    return x;
}

static inline float *gc_to_f32(const double *x, size_t n) {
    float *y = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

#endif
