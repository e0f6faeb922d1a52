/* The student's small ops: each forward (f64, f32) against a straightforward float64 evaluation,
 * each backward (f64) against central finite differences for every input and parameter, the f32
 * backward against the f64 one, and the gates at extreme pre-activations (|z| up to 40 and far
 * beyond). Gradient buffers start from random values, so the checks also prove the backward adds.
 * Errors are relative: max|a - b| / max|b| over the tensor (tests/gradcheck.h). */
#include "common/xd.h"
#include "gradcheck.h"
#include "kernels/student_ops.h"
#include "test.h"

#define FD_TOL 1e-6

static xd_rng rng;

static double *copy64(const double *x, size_t n) {
    double *y = malloc(sizeof(double) * (n ? n : 1));
    memcpy(y, x, sizeof(double) * n);
    return y;
}

static double sum_prod(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Subtracts the random starting values from a gradient buffer: what the backward added. */
static void minus(double *g, const double *start, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] -= start[i];
}

/* FD check of one tensor, printed and checked against FD_TOL. */
static void fd(const char *op, const char *name, double *p, const double *g, size_t n,
               gc_loss_fn loss, void *ctx) {
    double e = gc_fd_check(p, g, n, loss, ctx, 2000, &rng);
    printf("  %-11s d%-6s vs FD (f64): %.1e\n", op, name, e);
    CHECK_MSG(e <= FD_TOL, "%s: d%s relative error %g against finite differences", op, name, e);
}

static void report(const char *op, const char *what, double e, double tol) {
    printf("  %-11s %-22s %.1e\n", op, what, e);
    CHECK_MSG(e <= tol, "%s: %s relative error %g > %g", op, what, e, tol);
}

/* ---- Hedgehog feature map: one head (h = 1 of H = 3) of a [T, H*d] tensor, phi padded ---- */

typedef struct fm_ctx {
    int T, H, d, h, ldx, ldp;
    double *x, *M, *R, *phi;
} fm_ctx;

static double fm_loss(void *p) {
    fm_ctx *c = p;
    kern_feature_map_fwd_f64(c->phi, c->ldp, c->x + c->h * c->d, c->ldx, c->M, c->T, c->d);
    return sum_prod(c->phi, c->R, (size_t)c->T * c->ldp);
}

static void test_feature_map(void) {
    fm_ctx c = {.T = 70, .H = 3, .d = 6, .h = 1};
    c.ldx = c.H * c.d;
    c.ldp = c.d + 2;
    int T = c.T, d = c.d;
    size_t nx = (size_t)T * c.ldx, nm = (size_t)d * d, np = (size_t)T * c.ldp;
    c.x = gc_normal(nx, 1.0, &rng);
    c.M = gc_normal(nm, 0.5, &rng);
    for (int i = 0; i < d; i++) c.M[i * d + i] += 1; /* near the identity it starts from */
    c.R = gc_normal(np, 1.0, &rng);
    for (int t = 0; t < T; t++) /* the padding is not part of phi */
        for (int j = d; j < c.ldp; j++) c.R[(size_t)t * c.ldp + j] = 0;
    c.phi = calloc(np, sizeof(double));

    /* forward against softmax_j(sum_i x_i M_ij) */
    double *ref = calloc(np, sizeof(double));
    for (int t = 0; t < T; t++) {
        double z[16], s = 0;
        for (int j = 0; j < d; j++) {
            z[j] = 0;
            for (int i = 0; i < d; i++)
                z[j] += c.x[(size_t)t * c.ldx + c.h * d + i] * c.M[i * d + j];
            s += exp(z[j]);
        }
        for (int j = 0; j < d; j++) ref[(size_t)t * c.ldp + j] = exp(z[j]) / s;
    }
    fm_loss(&c);
    report("feature_map", "forward f64", rel_err_f64(c.phi, ref, np), 1e-14);
    float *xf = gc_to_f32(c.x, nx), *Mf = gc_to_f32(c.M, nm), *phif = calloc(np, sizeof(float));
    kern_feature_map_fwd_f32(phif, c.ldp, xf + c.h * d, c.ldx, Mf, T, d);
    report("feature_map", "forward f32", rel_err_f32(phif, ref, np), 1e-6);

    /* backward: dx over the whole [T, H*d] buffer (other heads must get nothing), dM */
    double *x0 = gc_normal(nx, 1.0, &rng), *M0 = gc_normal(nm, 1.0, &rng);
    double *dx = copy64(x0, nx), *dM = copy64(M0, nm);
    double *scratch = malloc(sizeof(double) * kern_feature_map_scratch_elems(d));
    fm_loss(&c);
    kern_feature_map_bwd_f64(dx + c.h * d, dM, c.R, c.phi, c.ldp, c.x + c.h * d, c.ldx, c.M, T, d,
                             scratch);
    minus(dx, x0, nx);
    minus(dM, M0, nm);
    fd("feature_map", "x", c.x, dx, nx, fm_loss, &c);
    fd("feature_map", "M", c.M, dM, nm, fm_loss, &c);

    float *Rf = gc_to_f32(c.R, np), *dxf = calloc(nx, sizeof(float)),
          *dMf = calloc(nm, sizeof(float));
    float *sf = malloc(sizeof(float) * kern_feature_map_scratch_elems(d));
    kern_feature_map_bwd_f32(dxf + c.h * d, dMf, Rf, phif, c.ldp, xf + c.h * d, c.ldx, Mf, T, d,
                             sf);
    report("feature_map", "backward f32: dx", rel_err_f32(dxf, dx, nx), 1e-5);
    report("feature_map", "backward f32: dM", rel_err_f32(dMf, dM, nm), 1e-5);

    free(c.x), free(c.M), free(c.R), free(c.phi), free(ref), free(xf), free(Mf), free(phif);
    free(x0), free(M0), free(dx), free(dM), free(scratch), free(Rf), free(dxf), free(dMf), free(sf);
}

/* ---- gates ---- */

typedef struct gate_ctx {
    int T, D, H;
    double *x, *wi, *bi, *wf, *bf, *Ri, *Rf, *it, *lf;
} gate_ctx;

static double gate_loss(void *p) {
    gate_ctx *c = p;
    kern_gates_fwd_f64(c->it, c->lf, c->x, c->wi, c->bi, c->wf, c->bf, c->T, c->D, c->H);
    size_t n = (size_t)c->T * c->H;
    return sum_prod(c->it, c->Ri, n) + sum_prod(c->lf, c->Rf, n);
}

/* log(sigmoid(z)) by other means than the kernel's: series of log1p(e^-|z|) beyond |z| > 3 (where
 * the result is tiny or close to z), long double directly in between. */
static double ref_logsigmoid(double z) {
    if (fabs(z) <= 3) return (double)logl(1.0L / (1.0L + expl(-(long double)z)));
    long double u = expl(-fabsl((long double)z)), s = 0, un = 1;
    for (int n = 1; n <= 40; n++) {
        un *= u;
        s += (n % 2 ? un : -un) / n;
    }
    return z > 0 ? (double)-s : (double)((long double)z - s);
}

static void test_gates(void) {
    gate_ctx c = {.T = 9, .D = 7, .H = 3};
    int T = c.T, D = c.D, H = c.H;
    size_t nx = (size_t)T * D, nw = (size_t)D * H, nth = (size_t)T * H;
    c.x = gc_normal(nx, 1.0, &rng);
    c.wi = gc_normal(nw, 1.0, &rng), c.wf = gc_normal(nw, 1.0, &rng);
    c.bi = gc_normal(H, 1.0, &rng), c.bf = gc_normal(H, 2.0, &rng);
    c.Ri = gc_normal(nth, 1.0, &rng), c.Rf = gc_normal(nth, 1.0, &rng);
    c.it = malloc(sizeof(double) * nth), c.lf = malloc(sizeof(double) * nth);

    double *ri = malloc(sizeof(double) * nth), *rf = malloc(sizeof(double) * nth);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            double zi = c.bi[h], zf = c.bf[h];
            for (int i = 0; i < D; i++) {
                zi += c.x[t * D + i] * c.wi[i * H + h];
                zf += c.x[t * D + i] * c.wf[i * H + h];
            }
            ri[t * H + h] = zi;
            rf[t * H + h] = log(1.0 / (1.0 + exp(-zf)));
        }
    gate_loss(&c);
    report("gates", "forward f64: itilde", rel_err_f64(c.it, ri, nth), 1e-14);
    report("gates", "forward f64: logf", rel_err_f64(c.lf, rf, nth), 1e-14);
    float *xf = gc_to_f32(c.x, nx), *wif = gc_to_f32(c.wi, nw), *wff = gc_to_f32(c.wf, nw);
    float *bif = gc_to_f32(c.bi, H), *bff = gc_to_f32(c.bf, H);
    float *itf = malloc(sizeof(float) * nth), *lff = malloc(sizeof(float) * nth);
    kern_gates_fwd_f32(itf, lff, xf, wif, bif, wff, bff, T, D, H);
    report("gates", "forward f32: itilde", rel_err_f32(itf, ri, nth), 1e-6);
    report("gates", "forward f32: logf", rel_err_f32(lff, rf, nth), 1e-6);

    double *x0 = gc_normal(nx, 1.0, &rng), *w0 = gc_normal(nw, 1.0, &rng);
    double *b0 = gc_normal(H, 1.0, &rng);
    double *dx = copy64(x0, nx), *dwi = copy64(w0, nw), *dwf = copy64(w0, nw);
    double *dbi = copy64(b0, H), *dbf = copy64(b0, H);
    kern_gates_bwd_f64(dx, dwi, dbi, dwf, dbf, c.Ri, c.Rf, c.x, c.lf, c.wi, c.wf, T, D, H);
    minus(dx, x0, nx), minus(dwi, w0, nw), minus(dwf, w0, nw), minus(dbi, b0, H), minus(dbf, b0, H);
    fd("gates", "x", c.x, dx, nx, gate_loss, &c);
    fd("gates", "w_i", c.wi, dwi, nw, gate_loss, &c);
    fd("gates", "b_i", c.bi, dbi, H, gate_loss, &c);
    fd("gates", "w_f", c.wf, dwf, nw, gate_loss, &c);
    fd("gates", "b_f", c.bf, dbf, H, gate_loss, &c);

    float *Rif = gc_to_f32(c.Ri, nth), *Rff = gc_to_f32(c.Rf, nth);
    float *dxf = calloc(nx, sizeof(float)), *dwif = calloc(nw, sizeof(float));
    float *dwff = calloc(nw, sizeof(float)), *dbif = calloc(H, sizeof(float));
    float *dbff = calloc(H, sizeof(float));
    kern_gates_bwd_f32(dxf, dwif, dbif, dwff, dbff, Rif, Rff, xf, lff, wif, wff, T, D, H);
    double e = fmax(fmax(rel_err_f32(dxf, dx, nx), rel_err_f32(dwif, dwi, nw)),
                    fmax(rel_err_f32(dwff, dwf, nw),
                         fmax(rel_err_f32(dbif, dbi, H), rel_err_f32(dbff, dbf, H))));
    report("gates", "backward f32 (worst)", e, 1e-5);

    free(c.x), free(c.wi), free(c.wf), free(c.bi), free(c.bf), free(c.Ri), free(c.Rf), free(c.it);
    free(c.lf), free(ri), free(rf), free(xf), free(wif), free(wff), free(bif), free(bff), free(itf);
    free(lff), free(x0), free(w0), free(b0), free(dx), free(dwi), free(dwf), free(dbi), free(dbf);
    free(Rif), free(Rff), free(dxf), free(dwif), free(dwff), free(dbif), free(dbff);
}

/* ftilde = b_f (x = 1, w_f = 0) at extreme values: logsigmoid finite and accurate element by
 * element, its derivative sigmoid(-z) too (db_f with dlogf = 1). */
static void test_gates_extreme(void) {
    const double z[] = {-1000,        -100, -40, -30, -20, -5, -1,  -0.0009765625, 0,
                        0.0009765625, 1,    5,   20,  30,  40, 100, 1000};
    enum { H = sizeof z / sizeof z[0] };
    double x = 1, w[H] = {0}, b[H], it[H], lf[H], dit[H] = {0}, dlf[H], dx = 0, dw[H] = {0};
    double dwf[H] = {0}, dbi[H] = {0}, dbf[H] = {0};
    float xf = 1, wf32[H] = {0}, bf32[H], itf[H], lff[H], ditf[H] = {0}, dlff[H], dxf = 0;
    float dwf32[H] = {0}, dwff[H] = {0}, dbif[H] = {0}, dbff[H] = {0};
    for (int h = 0; h < H; h++) b[h] = z[h], bf32[h] = (float)z[h], dlf[h] = 1, dlff[h] = 1;
    kern_gates_fwd_f64(it, lf, &x, w, b, w, b, 1, 1, H);
    kern_gates_bwd_f64(&dx, dw, dbi, dwf, dbf, dit, dlf, &x, lf, w, w, 1, 1, H);
    kern_gates_fwd_f32(itf, lff, &xf, wf32, bf32, wf32, bf32, 1, 1, H);
    kern_gates_bwd_f32(&dxf, dwf32, dbif, dwff, dbff, ditf, dlff, &xf, lff, wf32, wf32, 1, 1, H);
    double worst64 = 0, worst32 = 0, dworst64 = 0, dworst32 = 0;
    for (int h = 0; h < H; h++) {
        bool finite = isfinite(lf[h]) && isfinite(lff[h]) && isfinite(dbf[h]) &&
                      isfinite(dbff[h]) && isfinite(dwf[h]) && isfinite(dwff[h]) && lf[h] <= 0 &&
                      lff[h] <= 0;
        CHECK_MSG(finite, "gates at z = %g: logf %g / %g, dz %g / %g", z[h], lf[h], lff[h], dbf[h],
                  dbff[h]);
        if (fabs(z[h]) > 40) continue; /* beyond: only finite (e^-z leaves the formats) */
        double ref = ref_logsigmoid(z[h]), dref = (double)(1.0L / (1.0L + expl((long double)z[h])));
        double e64 = fabs(lf[h] - ref) / fabs(ref), e32 = fabs(lff[h] - ref) / fabs(ref);
        double d64 = fabs(dbf[h] - dref) / dref, d32 = fabs(dbff[h] - dref) / dref;
        worst64 = fmax(worst64, e64), worst32 = fmax(worst32, e32);
        dworst64 = fmax(dworst64, d64), dworst32 = fmax(dworst32, d32);
        CHECK_MSG(e64 <= 1e-14 && e32 <= 1e-6, "logsigmoid(%g) = %.17g / %.9g, want %.17g", z[h],
                  lf[h], lff[h], ref);
        CHECK_MSG(d64 <= 1e-14 && d32 <= 1e-6, "dlogsigmoid(%g) = %.17g / %.9g, want %.17g", z[h],
                  dbf[h], dbff[h], dref);
    }
    printf("  %-11s |z| <= 40 elementwise rel: logsigmoid f64 %.1e f32 %.1e; sigmoid(-z) f64 "
           "%.1e f32 %.1e\n",
           "gates", worst64, worst32, dworst64, dworst32);
    printf("  %-11s logf(-40) = %.17g, logf(40) = %.17g, logf(1000) = %g\n", "gates", lf[2], lf[14],
           lf[16]);
}

/* ---- output gate ---- */

typedef struct og_ctx {
    int T, H, G, d;
    double *q, *k, *v, *w, *b, *R, *o;
} og_ctx;

static double og_loss(void *p) {
    og_ctx *c = p;
    kern_output_gate_fwd_f64(c->o, c->q, c->k, c->v, c->w, c->b, c->T, c->H, c->G, c->d);
    return sum_prod(c->o, c->R, (size_t)c->T * c->H);
}

static void test_output_gate(void) {
    og_ctx c = {.T = 6, .H = 4, .G = 2, .d = 5};
    int T = c.T, H = c.H, G = c.G, d = c.d;
    size_t nq = (size_t)T * H * d, nk = (size_t)T * G * d, nw = (size_t)H * 3 * d,
           no = (size_t)T * H;
    c.q = gc_normal(nq, 1.0, &rng), c.k = gc_normal(nk, 1.0, &rng), c.v = gc_normal(nk, 1.0, &rng);
    c.w = gc_normal(nw, 0.4, &rng), c.b = gc_normal(H, 1.0, &rng), c.R = gc_normal(no, 1.0, &rng);
    c.o = malloc(sizeof(double) * no);

    double *ref = malloc(sizeof(double) * no);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / G);
            double zz = c.b[h];
            for (int i = 0; i < d; i++)
                zz += c.w[h * 3 * d + i] * c.q[(t * H + h) * d + i] +
                      c.w[h * 3 * d + d + i] * c.k[(t * G + g) * d + i] +
                      c.w[h * 3 * d + 2 * d + i] * c.v[(t * G + g) * d + i];
            ref[t * H + h] = 1 / (1 + exp(-zz));
        }
    og_loss(&c);
    report("output_gate", "forward f64", rel_err_f64(c.o, ref, no), 1e-14);
    float *qf = gc_to_f32(c.q, nq), *kf = gc_to_f32(c.k, nk), *vf = gc_to_f32(c.v, nk);
    float *wf = gc_to_f32(c.w, nw), *bf = gc_to_f32(c.b, H), *of = malloc(sizeof(float) * no);
    kern_output_gate_fwd_f32(of, qf, kf, vf, wf, bf, T, H, G, d);
    report("output_gate", "forward f32", rel_err_f32(of, ref, no), 1e-6);

    double *q0 = gc_normal(nq, 1, &rng), *k0 = gc_normal(nk, 1, &rng), *w0 = gc_normal(nw, 1, &rng);
    double *b0 = gc_normal(H, 1, &rng);
    double *dq = copy64(q0, nq), *dk = copy64(k0, nk), *dv = copy64(k0, nk), *dw = copy64(w0, nw);
    double *db = copy64(b0, H);
    kern_output_gate_bwd_f64(dq, dk, dv, dw, db, c.R, c.o, c.q, c.k, c.v, c.w, T, H, G, d);
    minus(dq, q0, nq), minus(dk, k0, nk), minus(dv, k0, nk), minus(dw, w0, nw), minus(db, b0, H);
    fd("output_gate", "q", c.q, dq, nq, og_loss, &c);
    fd("output_gate", "k", c.k, dk, nk, og_loss, &c);
    fd("output_gate", "v", c.v, dv, nk, og_loss, &c);
    fd("output_gate", "w_o", c.w, dw, nw, og_loss, &c);
    fd("output_gate", "b_o", c.b, db, H, og_loss, &c);

    float *Rf = gc_to_f32(c.R, no), *dqf = calloc(nq, sizeof(float)),
          *dkf = calloc(nk, sizeof(float));
    float *dvf = calloc(nk, sizeof(float)), *dwf = calloc(nw, sizeof(float));
    float *dbf = calloc(H, sizeof(float));
    kern_output_gate_bwd_f32(dqf, dkf, dvf, dwf, dbf, Rf, of, qf, kf, vf, wf, T, H, G, d);
    double e = fmax(
        fmax(rel_err_f32(dqf, dq, nq), rel_err_f32(dkf, dk, nk)),
        fmax(rel_err_f32(dvf, dv, nk), fmax(rel_err_f32(dwf, dw, nw), rel_err_f32(dbf, db, H))));
    report("output_gate", "backward f32 (worst)", e, 1e-5);

    /* saturated gates: finite, in [0, 1], zero-ish gradients */
    for (int h = 0; h < H; h++) c.b[h] = h % 2 ? 60 : -60, bf[h] = (float)c.b[h];
    og_loss(&c);
    kern_output_gate_fwd_f32(of, qf, kf, vf, wf, bf, T, H, G, d);
    bool ok = true;
    for (size_t i = 0; i < no; i++)
        ok = ok && c.o[i] >= 0 && c.o[i] <= 1 && of[i] >= 0 && of[i] <= 1 && isfinite(of[i]);
    memset(dbf, 0, sizeof(float) * H);
    kern_output_gate_bwd_f32(dqf, dkf, dvf, dwf, dbf, Rf, of, qf, kf, vf, wf, T, H, G, d);
    for (int h = 0; h < H; h++) ok = ok && isfinite(dbf[h]) && fabsf(dbf[h]) < 1e-20f;
    CHECK_MSG(ok, "output gate at |z| = 60 not finite or not saturated");

    free(c.q), free(c.k), free(c.v), free(c.w), free(c.b), free(c.R), free(c.o), free(ref);
    free(qf), free(kf), free(vf), free(wf), free(bf), free(of), free(q0), free(k0), free(w0);
    free(b0), free(dq), free(dk), free(dv), free(dw), free(db), free(Rf), free(dqf), free(dkf);
    free(dvf), free(dwf), free(dbf);
}

/* ---- mixing ---- */

typedef struct mix_ctx {
    int T, H, d;
    double *o, *hm, *ys, *R, *y;
} mix_ctx;

static double mix_loss(void *p) {
    mix_ctx *c = p;
    kern_mix_fwd_f64(c->y, c->o, c->hm, c->ys, c->T, c->H, c->d);
    return sum_prod(c->y, c->R, (size_t)c->T * c->H * c->d);
}

static void test_mix(void) {
    mix_ctx c = {.T = 6, .H = 3, .d = 5};
    int T = c.T, H = c.H, d = c.d;
    size_t no = (size_t)T * H, ny = no * d;
    c.o = malloc(sizeof(double) * no);
    for (size_t i = 0; i < no; i++) c.o[i] = (float)xd_rng_uniform(&rng);
    c.hm = gc_normal(ny, 1, &rng), c.ys = gc_normal(ny, 1, &rng), c.R = gc_normal(ny, 1, &rng);
    c.y = malloc(sizeof(double) * ny);
    double *ref = malloc(sizeof(double) * ny);
    for (size_t th = 0; th < no; th++)
        for (int i = 0; i < d; i++)
            ref[th * d + i] = c.o[th] * c.hm[th * d + i] + (1 - c.o[th]) * c.ys[th * d + i];
    mix_loss(&c);
    report("mix", "forward f64", rel_err_f64(c.y, ref, ny), 1e-15);
    float *of = gc_to_f32(c.o, no), *hf = gc_to_f32(c.hm, ny), *yf = gc_to_f32(c.ys, ny);
    float *outf = malloc(sizeof(float) * ny);
    kern_mix_fwd_f32(outf, of, hf, yf, T, H, d);
    report("mix", "forward f32", rel_err_f32(outf, ref, ny), 1e-6);

    double *o0 = gc_normal(no, 1, &rng), *y0 = gc_normal(ny, 1, &rng);
    double *dO = copy64(o0, no), *dh = copy64(y0, ny), *dy = copy64(y0, ny);
    kern_mix_bwd_f64(dO, dh, dy, c.R, c.o, c.hm, c.ys, T, H, d);
    minus(dO, o0, no), minus(dh, y0, ny), minus(dy, y0, ny);
    fd("mix", "o", c.o, dO, no, mix_loss, &c);
    fd("mix", "hm", c.hm, dh, ny, mix_loss, &c);
    fd("mix", "yswa", c.ys, dy, ny, mix_loss, &c);

    float *Rf = gc_to_f32(c.R, ny), *dOf = calloc(no, sizeof(float)),
          *dhf = calloc(ny, sizeof(float));
    float *dyf = calloc(ny, sizeof(float));
    kern_mix_bwd_f32(dOf, dhf, dyf, Rf, of, hf, yf, T, H, d);
    double e =
        fmax(rel_err_f32(dOf, dO, no), fmax(rel_err_f32(dhf, dh, ny), rel_err_f32(dyf, dy, ny)));
    report("mix", "backward f32 (worst)", e, 1e-5);

    free(c.o), free(c.hm), free(c.ys), free(c.R), free(c.y), free(ref), free(of), free(hf),
        free(yf);
    free(outf), free(o0), free(y0), free(dO), free(dh), free(dy), free(Rf), free(dOf), free(dhf);
    free(dyf);
}

int main(void) {
    xd_rng_seed(&rng, 7);
    test_feature_map();
    test_gates();
    test_gates_extreme();
    test_output_gate();
    test_mix();
    TEST_MAIN_END();
}
