/* Training kernels: every f64 backward against central finite differences (relative error
 * max|a - b| / max|b| <= 1e-6), the f32 backward against the f64 one (printed, loosely
 * bounded), the losses against direct evaluation, top-k against a full sort, AdamW against a
 * float64 rendering of PyTorch's update, clipping, the LR schedule; then a timing. */
#include "kernels/kernels.h"
#include "kernels/train_ops.h"
#include "test.h"

#include <time.h>

#define FD_TOL 1e-6
#define F32_TOL 1e-4

static xd_rng rng;

static double *randn(size_t n, double scale) {
    double *a = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) a[i] = scale * xd_rng_normal(&rng);
    return a;
}
static double *zeros(size_t n) { return calloc(n ? n : 1, sizeof(double)); }
static float *to32(const double *a, size_t n) {
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = (float)a[i];
    return f;
}
static float *zeros32(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double max_abs(const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(b[i]) > m ? fabs(b[i]) : m;
    return m;
}
/* max|a - b| / max(max|b|, 1e-30) */
static double relerr(const double *a, const double *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fabs(a[i] - b[i]) > d ? fabs(a[i] - b[i]) : d;
    double s = max_abs(b, n);
    return d / (s > 1e-30 ? s : 1e-30);
}
static double relerr32(const float *a, const double *b, size_t n) {
    double *t = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) t[i] = a[i];
    double r = relerr(t, b, n);
    free(t);
    return r;
}
static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Central differences of f(ctx) with respect to each x[i]. */
typedef double (*loss_fn)(void *ctx);
static void fd_grad(double *x, size_t n, loss_fn f, void *ctx, double *g) {
    const double h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double save = x[i];
        x[i] = save + h;
        double lp = f(ctx);
        x[i] = save - h;
        double lm = f(ctx);
        x[i] = save;
        g[i] = (lp - lm) / (2 * h);
    }
}

/* Compares an analytic f64 gradient to finite differences, and the f32 one (NULL: none) to
 * the f64 one. */
static void check_grad(const char *what, double *x, size_t n, loss_fn f, void *ctx,
                       const double *g64, const float *g32) {
    double *fd = zeros(n);
    fd_grad(x, n, f, ctx, fd);
    double e64 = relerr(g64, fd, n);
    double e32 = g32 ? relerr32(g32, g64, n) : 0;
    if (g32)
        printf("  %-34s f64 vs FD %.2e   f32 vs f64 %.2e\n", what, e64, e32);
    else
        printf("  %-34s f64 vs FD %.2e\n", what, e64);
    CHECK_MSG(e64 <= FD_TOL, "%s: f64 backward vs finite differences %.3g", what, e64);
    CHECK_MSG(e32 <= F32_TOL, "%s: f32 backward vs f64 %.3g", what, e32);
    free(fd);
}

/* ---- linear ---------------------------------------------------------------------------- */

typedef struct {
    int n, in, out;
    double *x, *w, *b, *r, *y;
} lin_ctx;
static double lin_loss(void *p) {
    lin_ctx *c = p;
    kern_linear_f64(c->y, c->x, c->w, c->b, c->n, c->in, c->out);
    return dot(c->y, c->r, (size_t)c->n * c->out);
}

static void test_linear(void) {
    printf("linear\n");
    lin_ctx c = {.n = 4, .in = 5, .out = 3};
    size_t nx = (size_t)c.n * c.in, nw = (size_t)c.out * c.in, ny = (size_t)c.n * c.out;
    c.x = randn(nx, 1);
    c.w = randn(nw, 1);
    c.b = randn(c.out, 1);
    c.r = randn(ny, 1);
    c.y = zeros(ny);
    /* dx accumulates onto a prefilled buffer, dW and db always do: the prefill is removed. */
    double *pre_x = randn(nx, 1), *pre_w = randn(nw, 1), *pre_b = randn(c.out, 1);
    double *dx = malloc(sizeof(double) * nx), *dw = malloc(sizeof(double) * nw);
    double *db = malloc(sizeof(double) * c.out);
    memcpy(dx, pre_x, sizeof(double) * nx);
    memcpy(dw, pre_w, sizeof(double) * nw);
    memcpy(db, pre_b, sizeof(double) * c.out);
    kern_linear_backward_f64(dx, dw, db, c.r, c.x, c.w, c.n, c.in, c.out, true);
    for (size_t i = 0; i < nx; i++) dx[i] -= pre_x[i];
    for (size_t i = 0; i < nw; i++) dw[i] -= pre_w[i];
    for (int i = 0; i < c.out; i++) db[i] -= pre_b[i];
    /* Overwrite mode gives the same dx over garbage. */
    double *dx2 = randn(nx, 1e3);
    kern_linear_backward_f64(dx2, NULL, NULL, c.r, c.x, c.w, c.n, c.in, c.out, false);
    CHECK(relerr(dx2, dx, nx) < 1e-12);

    float *x32 = to32(c.x, nx), *w32 = to32(c.w, nw), *r32 = to32(c.r, ny);
    float *dx32 = zeros32(nx), *dw32 = zeros32(nw), *db32 = zeros32(c.out);
    kern_linear_backward_f32(dx32, dw32, db32, r32, x32, w32, c.n, c.in, c.out, false);

    check_grad("linear dx", c.x, nx, lin_loss, &c, dx, dx32);
    check_grad("linear dW", c.w, nw, lin_loss, &c, dw, dw32);
    check_grad("linear db", c.b, c.out, lin_loss, &c, db, db32);

    float *b32 = to32(c.b, c.out), *y1 = zeros32(ny), *y2 = zeros32(ny);
    kern_linear_f32(y2, x32, w32, b32, c.n, c.in, c.out);

    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y), free(pre_x), free(pre_w), free(pre_b);
    free(dx), free(dw), free(db), free(dx2), free(x32), free(w32), free(r32), free(dx32);
    free(dw32), free(db32), free(b32), free(y1), free(y2);
}

/* ---- rmsnorm --------------------------------------------------------------------------- */

typedef struct {
    int n, d;
    double eps, *x, *w, *r, *y;
} rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    kern_rmsnorm_f64(c->y, c->x, c->w, c->n, c->d, c->eps);
    return dot(c->y, c->r, (size_t)c->n * c->d);
}

static void test_rmsnorm(void) {
    printf("rmsnorm\n");
    rms_ctx c = {.n = 3, .d = 8, .eps = 1e-5};
    size_t nx = (size_t)c.n * c.d;
    c.x = randn(nx, 1);
    c.w = randn(c.d, 1);
    c.r = randn(nx, 1);
    c.y = zeros(nx);
    double *dx = zeros(nx), *dw = zeros(c.d);
    kern_rmsnorm_backward_f64(dx, dw, c.r, c.x, c.w, c.n, c.d, c.eps, false);
    float *x32 = to32(c.x, nx), *w32 = to32(c.w, c.d), *r32 = to32(c.r, nx);
    float *dx32 = zeros32(nx), *dw32 = zeros32(c.d);
    kern_rmsnorm_backward_f32(dx32, dw32, r32, x32, w32, c.n, c.d, 1e-5f, false);
    check_grad("rmsnorm dx", c.x, nx, rms_loss, &c, dx, dx32);
    check_grad("rmsnorm dweight", c.w, c.d, rms_loss, &c, dw, dw32);

    /* accumulate adds the same dx onto what is there. */
    double *dx2 = zeros(nx);
    for (size_t i = 0; i < nx; i++) dx2[i] = 1.0;
    kern_rmsnorm_backward_f64(dx2, NULL, c.r, c.x, c.w, c.n, c.d, c.eps, true);
    for (size_t i = 0; i < nx; i++) dx2[i] -= 1.0;
    CHECK(relerr(dx2, dx, nx) < 1e-14);

    float *y1 = zeros32(nx), *y2 = zeros32(nx);
    kern_rmsnorm_f32(y2, x32, w32, c.n, c.d, 1e-5f);
    free(c.x), free(c.w), free(c.r), free(c.y), free(dx), free(dw), free(dx2), free(x32);
    free(w32), free(r32), free(dx32), free(dw32), free(y1), free(y2);
}

/* ---- rope ------------------------------------------------------------------------------ */

typedef struct {
    int n, heads, hd, pos0;
    double *x, *r, *y, *ct, *st;
} rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t nx = (size_t)c->n * c->heads * c->hd;
    memcpy(c->y, c->x, sizeof(double) * nx);
    kern_rope_f64(c->y, c->n, c->heads, c->hd, c->pos0, c->ct, c->st);
    return dot(c->y, c->r, nx);
}

static void test_rope(void) {
    printf("rope\n");
    rope_ctx c = {.n = 3, .heads = 2, .hd = 8, .pos0 = 2};
    int half = c.hd / 2, npos = c.pos0 + c.n;
    size_t nx = (size_t)c.n * c.heads * c.hd;
    double inv_freq[4];
    for (int i = 0; i < half; i++) inv_freq[i] = pow(10000.0, -2.0 * i / c.hd);
    c.ct = zeros((size_t)npos * half);
    c.st = zeros((size_t)npos * half);
    kern_rope_tables_f64(c.ct, c.st, 0, npos, half, inv_freq);
    c.x = randn(nx, 1);
    c.r = randn(nx, 1);
    c.y = zeros(nx);
    double *dx = malloc(sizeof(double) * nx);
    memcpy(dx, c.r, sizeof(double) * nx);
    kern_rope_backward_f64(dx, c.n, c.heads, c.hd, c.pos0, c.ct, c.st);
    float *dx32 = to32(c.r, nx), *ct32 = zeros32((size_t)npos * half);
    float *st32 = zeros32((size_t)npos * half);
    kern_rope_tables_f32(ct32, st32, 0, npos, half, inv_freq);
    kern_rope_backward_f32(dx32, c.n, c.heads, c.hd, c.pos0, ct32, st32);
    check_grad("rope dx", c.x, nx, rope_loss, &c, dx, dx32);

    /* The backward is the inverse: it undoes the forward. */
    double *z = malloc(sizeof(double) * nx);
    memcpy(z, c.x, sizeof(double) * nx);
    kern_rope_f64(z, c.n, c.heads, c.hd, c.pos0, c.ct, c.st);
    kern_rope_backward_f64(z, c.n, c.heads, c.hd, c.pos0, c.ct, c.st);
    CHECK(relerr(z, c.x, nx) < 1e-14);
    free(c.ct), free(c.st), free(c.x), free(c.r), free(c.y), free(dx), free(dx32), free(ct32);
    free(st32), free(z);
}

/* ---- swiglu ---------------------------------------------------------------------------- */

typedef struct {
    size_t count;
    double *g, *u, *r, *y;
} swi_ctx;
static double swi_loss(void *p) {
    swi_ctx *c = p;
    kern_swiglu_f64(c->y, c->g, c->u, c->count);
    return dot(c->y, c->r, c->count);
}

static void test_swiglu(void) {
    printf("swiglu\n");
    swi_ctx c = {.count = 24};
    c.g = randn(c.count, 3);
    c.g[0] = -30, c.g[1] = 30, c.g[2] = 0;
    c.u = randn(c.count, 1);
    c.r = randn(c.count, 1);
    c.y = zeros(c.count);
    double *dg = zeros(c.count), *du = zeros(c.count);
    kern_swiglu_backward_f64(dg, du, c.r, c.g, c.u, c.count);
    float *g32 = to32(c.g, c.count), *u32 = to32(c.u, c.count), *r32 = to32(c.r, c.count);
    float *dg32 = zeros32(c.count), *du32 = zeros32(c.count);
    kern_swiglu_backward_f32(dg32, du32, r32, g32, u32, c.count);
    check_grad("swiglu dgate", c.g, c.count, swi_loss, &c, dg, dg32);
    check_grad("swiglu dup", c.u, c.count, swi_loss, &c, du, du32);

    /* Saturated gates: exp overflows, results stay finite with the right limits. */
    double gs[4] = {-1000, 1000, -100, 100}, us[4] = {1, 1, 1, 1}, o[4], dgs[4], dus[4];
    kern_swiglu_f64(o, gs, us, 4);
    kern_swiglu_backward_f64(dgs, dus, us, gs, us, 4);
    float gf[4] = {-1000, 1000, -100, 100}, uf[4] = {1, 1, 1, 1}, of[4], dgf[4], duf[4];
    kern_swiglu_f32(of, gf, uf, 4);
    kern_swiglu_backward_f32(dgf, duf, uf, gf, uf, 4);
    for (int i = 0; i < 4; i++) {
        CHECK(isfinite(o[i]) && isfinite(dgs[i]) && isfinite(dus[i]));
        CHECK(isfinite(of[i]) && isfinite(dgf[i]) && isfinite(duf[i]));
    }
    CHECK(o[0] == 0 && dgs[0] == 0 && o[1] == 1000 && dgs[1] == 1);
    CHECK(of[0] == 0 && dgf[0] == 0 && of[1] == 1000 && dgf[1] == 1);

    float *y1 = zeros32(c.count), *y2 = zeros32(c.count);
    kern_swiglu_f32(y2, g32, u32, c.count);
    free(c.g), free(c.u), free(c.r), free(c.y), free(dg), free(du), free(g32), free(u32);
    free(r32), free(dg32), free(du32), free(y1), free(y2);
}

/* ---- embedding ------------------------------------------------------------------------- */

typedef struct {
    int n, vocab, d;
    const int *ids;
    double *e, *r, *y;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    xd_err err;
    if (kern_embedding_f64(c->y, c->e, c->ids, c->n, c->vocab, c->d, &err) < 0) return NAN;
    return dot(c->y, c->r, (size_t)c->n * c->d);
}

static void test_embedding(void) {
    printf("embedding\n");
    static const int ids[5] = {1, 3, 1, 5, 0}; /* 1 twice: both rows add into dE[1] */
    emb_ctx c = {.n = 5, .vocab = 6, .d = 4, .ids = ids};
    size_t ne = (size_t)c.vocab * c.d, ny = (size_t)c.n * c.d;
    c.e = randn(ne, 1);
    c.r = randn(ny, 1);
    c.y = zeros(ny);
    double *de = zeros(ne);
    xd_err err;
    CHECK(kern_embedding_backward_f64(de, c.r, ids, c.n, c.vocab, c.d, &err) == 0);
    float *r32 = to32(c.r, ny), *de32 = zeros32(ne);
    CHECK(kern_embedding_backward_f32(de32, r32, ids, c.n, c.vocab, c.d, &err) == 0);
    check_grad("embedding dE", c.e, ne, emb_loss, &c, de, de32);
    for (int i = 0; i < c.d; i++) CHECK(de[2 * c.d + i] == 0 && de[4 * c.d + i] == 0);

    static const int bad[2] = {2, 6};
    int rc = kern_embedding_f64(c.y, c.e, bad, 2, c.vocab, c.d, &err);
    CHECK_ERR_CONTAINS(rc, err, "token id 6 at row 1 is outside the vocabulary");
    static const int neg[1] = {-1};
    rc = kern_embedding_backward_f32(de32, r32, neg, 1, c.vocab, c.d, &err);
    CHECK_ERR_CONTAINS(rc, err, "outside the vocabulary");
    free(c.e), free(c.r), free(c.y), free(de), free(r32), free(de32);
}

/* ---- attention ------------------------------------------------------------------------- */

typedef struct {
    int n, pos0, h, g, hd, window;
    double *q, *k, *v, *r, *y, *scratch;
} att_ctx;
static double att_loss(void *p) {
    att_ctx *c = p;
    kern_attention_causal_f64(c->y, c->q, c->k, c->v, c->n, c->pos0, c->h, c->g, c->hd,
                              c->window, c->scratch);
    return dot(c->y, c->r, (size_t)c->n * c->h * c->hd);
}

static void test_attention(int window) {
    printf("attention (window %d)\n", window);
    att_ctx c = {.n = 4, .pos0 = 2, .h = 4, .g = 2, .hd = 4, .window = window};
    int total = c.pos0 + c.n;
    size_t nq = (size_t)c.n * c.h * c.hd, nk = (size_t)total * c.g * c.hd;
    c.q = randn(nq, 1);
    c.k = randn(nk, 1);
    c.v = randn(nk, 1);
    c.r = randn(nq, 1);
    c.y = zeros(nq);
    c.scratch = zeros(2 * (size_t)c.n * total);
    double *dq = zeros(nq), *dk = randn(nk, 1), *dv = randn(nk, 1); /* overwritten */
    kern_attention_causal_backward_f64(dq, dk, dv, c.r, c.q, c.k, c.v, c.n, c.pos0, c.h, c.g,
                                       c.hd, c.window, c.scratch);
    float *q32 = to32(c.q, nq), *k32 = to32(c.k, nk), *v32 = to32(c.v, nk), *r32 = to32(c.r, nq);
    float *dq32 = zeros32(nq), *dk32 = zeros32(nk), *dv32 = zeros32(nk);
    float *s32 = zeros32(2 * (size_t)c.n * total);
    kern_attention_causal_backward_f32(dq32, dk32, dv32, r32, q32, k32, v32, c.n, c.pos0, c.h,
                                       c.g, c.hd, c.window, s32);
    check_grad("attention dq", c.q, nq, att_loss, &c, dq, dq32);
    check_grad("attention dk", c.k, nk, att_loss, &c, dk, dk32);
    check_grad("attention dv", c.v, nk, att_loss, &c, dv, dv32);

    float *y1 = zeros32(nq), *y2 = zeros32(nq);
    kern_attention_causal_f32(y2, q32, k32, v32, c.n, c.pos0, c.h, c.g, c.hd, c.window, s32);
    free(c.q), free(c.k), free(c.v), free(c.r), free(c.y), free(c.scratch), free(dq), free(dk);
    free(dv), free(q32), free(k32), free(v32), free(r32), free(dq32), free(dk32), free(dv32);
    free(s32), free(y1), free(y2);
}

/* ---- MSE ------------------------------------------------------------------------------- */

typedef struct {
    size_t count;
    double *yh, *y;
} mse_ctx;
static double mse_loss(void *p) {
    mse_ctx *c = p;
    return kern_mse_f64(NULL, c->yh, c->y, c->count);
}

static void test_mse(void) {
    printf("mse\n");
    mse_ctx c = {.count = 30};
    c.yh = randn(c.count, 1);
    c.y = randn(c.count, 1);
    double direct = 0;
    for (size_t i = 0; i < c.count; i++) direct += (c.yh[i] - c.y[i]) * (c.yh[i] - c.y[i]);
    direct /= (double)c.count;
    double *g = zeros(c.count);
    double l = kern_mse_f64(g, c.yh, c.y, c.count);
    CHECK(fabs(l - direct) <= 1e-15 * direct);
    float *yh32 = to32(c.yh, c.count), *y32 = to32(c.y, c.count), *g32 = zeros32(c.count);
    double l32 = kern_mse_f32(g32, yh32, y32, c.count);
    printf("  mse value %.9f, f32 %.9f\n", l, l32);
    CHECK(fabs(l32 - l) <= 1e-6 * l);
    check_grad("mse dyhat", c.yh, c.count, mse_loss, &c, g, g32);
    free(c.yh), free(c.y), free(g), free(yh32), free(y32), free(g32);
}

/* ---- cross-entropy --------------------------------------------------------------------- */

typedef struct {
    int n, v;
    const int *targets;
    double *x;
} ce_ctx;
static double ce_loss(void *p) {
    ce_ctx *c = p;
    double l;
    xd_err err;
    if (kern_cross_entropy_f64(&l, NULL, c->x, c->targets, c->n, c->v, &err) < 0) return NAN;
    return l;
}

/* -log softmax(x)[target], the textbook way (fine for moderate logits). */
static double ce_direct(const double *x, int v, int target) {
    double s = 0;
    for (int j = 0; j < v; j++) s += exp(x[j]);
    return -log(exp(x[target]) / s);
}

static void test_cross_entropy(void) {
    printf("cross-entropy\n");
    static const int targets[5] = {2, KERN_IGNORE_INDEX, 0, 6, 3};
    ce_ctx c = {.n = 5, .v = 7, .targets = targets};
    size_t nx = (size_t)c.n * c.v;
    c.x = randn(nx, 2);
    double direct = 0;
    for (int t = 0; t < c.n; t++)
        if (targets[t] >= 0) direct += ce_direct(c.x + (size_t)t * c.v, c.v, targets[t]);
    direct /= 4;
    double l, l32, *g = zeros(nx);
    xd_err err;
    CHECK(kern_cross_entropy_f64(&l, g, c.x, targets, c.n, c.v, &err) == 0);
    float *x32 = to32(c.x, nx), *g32 = zeros32(nx);
    CHECK(kern_cross_entropy_f32(&l32, g32, x32, targets, c.n, c.v, &err) == 0);
    printf("  CE %.12f, direct %.12f, f32 %.9f\n", l, direct, l32);
    CHECK(fabs(l - direct) <= 1e-13 * direct);
    CHECK(fabs(l32 - direct) <= 1e-6 * direct);
    check_grad("cross-entropy dlogits", c.x, nx, ce_loss, &c, g, g32);
    for (int j = 0; j < c.v; j++) CHECK(g[c.v + j] == 0 && g32[c.v + j] == 0);

    /* In place: dlogits over logits gives the same gradient. */
    double *inplace = malloc(sizeof(double) * nx);
    memcpy(inplace, c.x, sizeof(double) * nx);
    double l2;
    CHECK(kern_cross_entropy_f64(&l2, inplace, inplace, targets, c.n, c.v, &err) == 0);
    CHECK(l2 == l && relerr(inplace, g, nx) == 0);

    /* Logits near +-1e4: rows shifted by 1e4 keep the loss of the unshifted row (the
     * offsets are multiples of 1/8, exact in f32 at that magnitude). */
    enum { V = 6 };
    double base[V] = {0, -1, -2.5, 0.125, -3, 1}, big[2 * V];
    static const int tg[2] = {3, 5};
    for (int j = 0; j < V; j++) {
        big[j] = 1e4 + base[j];
        big[V + j] = -1e4 + base[j];
    }
    double expect = (ce_direct(base, V, 3) + ce_direct(base, V, 5)) / 2, lb, gb[2 * V];
    float big32[2 * V], gb32[2 * V];
    for (int j = 0; j < 2 * V; j++) big32[j] = (float)big[j];
    CHECK(kern_cross_entropy_f64(&lb, gb, big, tg, 2, V, &err) == 0);
    CHECK(kern_cross_entropy_f32(&l32, gb32, big32, tg, 2, V, &err) == 0);
    printf("  CE at +-1e4: %.12f (f32 %.9f), expected %.12f\n", lb, l32, expect);
    CHECK(fabs(lb - expect) <= 1e-12);
    CHECK(fabs(l32 - expect) <= 1e-6);
    double gsmall[2 * V], lsmall;
    double small[2 * V];
    for (int j = 0; j < 2 * V; j++) small[j] = base[j % V];
    CHECK(kern_cross_entropy_f64(&lsmall, gsmall, small, tg, 2, V, &err) == 0);
    CHECK(relerr(gb, gsmall, 2 * V) < 1e-12);
    CHECK(relerr32(gb32, gsmall, 2 * V) < 1e-6);

    /* Every row ignored: zero loss, zero gradient. */
    static const int none[2] = {KERN_IGNORE_INDEX, KERN_IGNORE_INDEX};
    CHECK(kern_cross_entropy_f64(&lb, gb, big, none, 2, V, &err) == 0);
    CHECK(lb == 0 && max_abs(gb, 2 * V) == 0);

    static const int bad[2] = {1, 7};
    int rc = kern_cross_entropy_f64(&lb, gb, big, bad, 2, V, &err);
    CHECK_ERR_CONTAINS(rc, err, "target 7 at row 1 is outside the vocabulary [0, 6)");
    free(c.x), free(g), free(x32), free(g32), free(inplace);
}

/* ---- top-k selection ------------------------------------------------------------------- */

typedef struct {
    double v;
    int i;
} vi;
static int vi_cmp(const void *a, const void *b) {
    const vi *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* kern_topk (f64 and f32) against qsort of the whole row. */
static void check_topk(const double *x, int n, int v, int k, const char *what) {
    int *idx = malloc(sizeof(int) * (size_t)n * k), *idx32 = malloc(sizeof(int) * (size_t)n * k);
    double *val = malloc(sizeof(double) * (size_t)n * k);
    float *val32 = malloc(sizeof(float) * (size_t)n * k), *x32 = to32(x, (size_t)n * v);
    xd_err err;
    CHECK(kern_topk_f64(idx, val, x, n, v, k, &err) == 0);
    CHECK(kern_topk_f32(idx32, val32, x32, n, v, k, &err) == 0);
    vi *all = malloc(sizeof(vi) * v);
    int bad = 0;
    for (int t = 0; t < n; t++) {
        for (int j = 0; j < v; j++) all[j] = (vi){x[(size_t)t * v + j], j};
        qsort(all, v, sizeof(vi), vi_cmp);
        for (int j = 0; j < k; j++) {
            size_t o = (size_t)t * k + j;
            /* The f32 copy is exact (x holds f32-representable values). */
            if (idx[o] != all[j].i || val[o] != all[j].v || idx32[o] != all[j].i ||
                val32[o] != (float)all[j].v)
                bad++;
        }
    }
    printf("  top-k %s (n %d, V %d, k %d): %d mismatches vs full sort\n", what, n, v, k, bad);
    CHECK(bad == 0);
    free(idx), free(idx32), free(val), free(val32), free(x32), free(all);
}

static void test_topk(void) {
    printf("top-k selection\n");
    enum { N = 3, V = 1000 };
    double *x = malloc(sizeof(double) * N * V);
    for (int i = 0; i < N * V; i++) x[i] = (float)xd_rng_normal(&rng);
    check_topk(x, N, V, 37, "distinct");
    check_topk(x, N, V, KERN_TOPK_DEFAULT, "distinct");
    /* Five distinct values only: ties everywhere, lower index first. */
    for (int i = 0; i < N * V; i++) x[i] = floor(xd_rng_uniform(&rng) * 5);
    check_topk(x, N, V, 256, "ties");
    check_topk(x, N, V, 1, "ties");
    check_topk(x, N, 200, 200, "ties, k = V");
    for (int i = 0; i < N * V; i++) x[i] = 1.5; /* all equal: indices 0..k-1 */
    check_topk(x, N, V, 10, "all equal");
    int idx[2];
    double val[2];
    xd_err err;
    int rc = kern_topk_f64(idx, val, x, 1, 4, 5, &err);
    CHECK_ERR_CONTAINS(rc, err, "top-k size 5 outside [1, 4]");
    rc = kern_topk_f64(idx, val, x, 1, 4, 0, &err);
    CHECK_ERR_CONTAINS(rc, err, "top-k size 0");
    free(x);
}

/* ---- top-k KL -------------------------------------------------------------------------- */

typedef struct {
    int n, v, k;
    const int *idx;
    const double *tval;
    double *x;
} kl_ctx;
static double kl_loss(void *p) {
    kl_ctx *c = p;
    double l;
    xd_err err;
    if (kern_topk_kl_f64(&l, NULL, c->x, c->idx, c->tval, c->n, c->v, c->k, &err) < 0) return NAN;
    return l;
}

/* KL(p_T || p_S) over the k gathered entries, the textbook way. */
static double kl_direct(const double *x, const int *idx, const double *tval, int n, int v,
                        int k) {
    double total = 0;
    for (int t = 0; t < n; t++) {
        const double *xr = x + (size_t)t * v, *tr = tval + (size_t)t * k;
        const int *ir = idx + (size_t)t * k;
        double zs = 0, zt = 0;
        for (int j = 0; j < k; j++) {
            zs += exp(xr[ir[j]]);
            zt += exp(tr[j]);
        }
        for (int j = 0; j < k; j++) {
            double pt = exp(tr[j]) / zt, ps = exp(xr[ir[j]]) / zs;
            total += pt * log(pt / ps);
        }
    }
    return total / n;
}

static void test_topk_kl(void) {
    printf("top-k KL\n");
    enum { N = 4, V = 30, K = 8 };
    double *teacher = randn(N * V, 2);
    int idx[N * K];
    double tval[N * K];
    xd_err err;
    CHECK(kern_topk_f64(idx, tval, teacher, N, V, K, &err) == 0);
    kl_ctx c = {.n = N, .v = V, .k = K, .idx = idx, .tval = tval};
    c.x = randn(N * V, 2);
    double l, l32, *g = zeros(N * V);
    CHECK(kern_topk_kl_f64(&l, g, c.x, idx, tval, N, V, K, &err) == 0);
    double direct = kl_direct(c.x, idx, tval, N, V, K);
    float *x32 = to32(c.x, N * V), *tv32 = to32(tval, N * K), *g32 = zeros32(N * V);
    CHECK(kern_topk_kl_f32(&l32, g32, x32, idx, tv32, N, V, K, &err) == 0);
    printf("  KL %.12f, direct %.12f, f32 %.9f\n", l, direct, l32);
    CHECK(fabs(l - direct) <= 1e-13 * direct);
    CHECK(fabs(l32 - direct) <= 1e-5 * direct);
    check_grad("top-k KL dlogits", c.x, N * V, kl_loss, &c, g, g32);
    /* Zero off the k indices. */
    int off = 0;
    for (int t = 0; t < N; t++)
        for (int j = 0; j < V; j++) {
            bool in = false;
            for (int q = 0; q < K; q++) in |= idx[t * K + q] == j;
            if (!in && g[t * V + j] != 0) off++;
        }
    CHECK(off == 0);

    /* A repeated index (precomputed input can have one) gets both of its terms. */
    idx[1] = idx[0];
    CHECK(kern_topk_kl_f64(&l, g, c.x, idx, tval, N, V, K, &err) == 0);
    CHECK(fabs(l - kl_direct(c.x, idx, tval, N, V, K)) <= 1e-13 * l);
    check_grad("top-k KL, repeated index", c.x, N * V, kl_loss, &c, g, NULL);
    CHECK(kern_topk_f64(idx, tval, teacher, N, V, K, &err) == 0);

    /* Student == teacher: exactly zero loss and gradient. */
    CHECK(kern_topk_kl_f64(&l, g, teacher, idx, tval, N, V, K, &err) == 0);
    float *t32 = to32(teacher, N * V);
    int idx32[N * K];
    float tval32[N * K];
    CHECK(kern_topk_f32(idx32, tval32, t32, N, V, K, &err) == 0);
    CHECK(kern_topk_kl_f32(&l32, g32, t32, idx32, tval32, N, V, K, &err) == 0);
    printf("  KL(student == teacher) = %g (f32 %g)\n", l, l32);
    CHECK(l == 0 && max_abs(g, N * V) == 0 && l32 == 0);
    for (int i = 0; i < N * V; i++) CHECK(g32[i] == 0);

    /* Logits near +-1e4 (teacher and student on opposite sides): the same KL as unshifted. */
    double *big = malloc(sizeof(double) * N * V), tbig[N * K];
    for (int i = 0; i < N * V; i++) big[i] = 1e4 + round(c.x[i] * 8) / 8;
    for (int i = 0; i < N * K; i++) tbig[i] = -1e4 + round(tval[i] * 8) / 8;
    double *xs = malloc(sizeof(double) * N * V), ts[N * K];
    for (int i = 0; i < N * V; i++) xs[i] = big[i] - 1e4;
    for (int i = 0; i < N * K; i++) ts[i] = tbig[i] + 1e4;
    double expect = kl_direct(xs, idx, ts, N, V, K), lb;
    float *big32 = to32(big, N * V), *tbig32 = to32(tbig, N * K);
    CHECK(kern_topk_kl_f64(&lb, g, big, idx, tbig, N, V, K, &err) == 0);
    CHECK(kern_topk_kl_f32(&l32, g32, big32, idx, tbig32, N, V, K, &err) == 0);
    printf("  KL at +-1e4: %.12f (f32 %.9f), expected %.12f\n", lb, l32, expect);
    CHECK(fabs(lb - expect) <= 1e-12 * expect);
    CHECK(fabs(l32 - expect) <= 1e-6 * expect);
    for (int i = 0; i < N * V; i++) CHECK(isfinite(g32[i]));

    idx[3] = V;
    int rc = kern_topk_kl_f64(&l, g, c.x, idx, tval, N, V, K, &err);
    CHECK_ERR_CONTAINS(rc, err, "top-k index 30 at row 0 is outside the vocabulary");
    free(teacher), free(c.x), free(g), free(x32), free(tv32), free(g32), free(t32), free(big);
    free(xs), free(big32), free(tbig32);
}

/* ---- combined distillation loss -------------------------------------------------------- */

static void test_distill(void) {
    printf("distill loss (0.9 CE + 0.1 KL)\n");
    enum { N = 5, V = 40, K = 6 };
    static const int targets[N] = {3, 39, KERN_IGNORE_INDEX, 0, 17};
    double *teacher = randn(N * V, 2), *x = randn(N * V, 2), tval[N * K];
    int idx[N * K];
    xd_err err;
    CHECK(kern_topk_f64(idx, tval, teacher, N, V, K, &err) == 0);
    double ce, kl, ce1, kl1, *g = zeros(N * V), *gce = zeros(N * V), *gkl = zeros(N * V);
    CHECK(kern_distill_loss_f64(&ce, &kl, g, x, targets, idx, tval, N, V, K, 0.9, 0.1, &err) == 0);
    CHECK(kern_cross_entropy_f64(&ce1, gce, x, targets, N, V, &err) == 0);
    CHECK(kern_topk_kl_f64(&kl1, gkl, x, idx, tval, N, V, K, &err) == 0);
    double *comb = zeros(N * V);
    for (int i = 0; i < N * V; i++) comb[i] = 0.9 * gce[i] + 0.1 * gkl[i];
    double e = relerr(g, comb, N * V);
    printf("  CE %.9f KL %.9f; gradient vs 0.9 dCE + 0.1 dKL: %.2e\n", ce, kl, e);
    CHECK(ce == ce1 && kl == kl1 && e < 1e-15);
    /* In place. */
    double *inplace = malloc(sizeof(double) * N * V);
    memcpy(inplace, x, sizeof(double) * N * V);
    CHECK(kern_distill_loss_f64(NULL, &kl1, inplace, inplace, targets, idx, tval, N, V, K, 0.9,
                                0.1, &err) == 0);
    CHECK(kl1 == kl && relerr(inplace, g, N * V) == 0);
    free(teacher), free(x), free(g), free(gce), free(gkl), free(comb), free(inplace);
}

/* ---- tied embedding / LM head through the losses --------------------------------------- */

typedef struct {
    int n, v, d, k;
    const int *ids, *targets, *idx;
    const double *tval;
    double *e, *w, *h, *hn, *logits;
} tied_ctx;
static double tied_loss(void *p) {
    tied_ctx *c = p;
    xd_err err;
    double ce, kl;
    if (kern_embedding_f64(c->h, c->e, c->ids, c->n, c->v, c->d, &err) < 0) return NAN;
    kern_rmsnorm_f64(c->hn, c->h, c->w, c->n, c->d, 1e-6);
    kern_linear_f64(c->logits, c->hn, c->e, NULL, c->n, c->d, c->v);
    if (kern_distill_loss_f64(&ce, &kl, NULL, c->logits, c->targets, c->idx, c->tval, c->n, c->v,
                              c->k, 0.9, 0.1, &err) < 0)
        return NAN;
    return 0.9 * ce + 0.1 * kl;
}

static void test_tied_head(void) {
    printf("tied embedding + LM head, distill loss\n");
    enum { N = 5, V = 11, D = 6, K = 4 };
    static const int ids[N] = {2, 7, 2, 10, 0}, targets[N] = {7, 2, 10, 0, KERN_IGNORE_INDEX};
    double *teacher = randn(N * V, 2), tval[N * K];
    int idx[N * K];
    xd_err err;
    CHECK(kern_topk_f64(idx, tval, teacher, N, V, K, &err) == 0);
    tied_ctx c = {.n = N, .v = V, .d = D, .k = K, .ids = ids, .targets = targets, .idx = idx,
                  .tval = tval};
    c.e = randn(V * D, 1);
    c.w = randn(D, 1);
    c.h = zeros(N * D);
    c.hn = zeros(N * D);
    c.logits = zeros(N * V);
    tied_loss(&c);
    double *dlog = zeros(N * V), *dhn = zeros(N * D), *dh = zeros(N * D);
    double *de = zeros(V * D), *dw = zeros(D);
    CHECK(kern_distill_loss_f64(NULL, NULL, dlog, c.logits, targets, idx, tval, N, V, K, 0.9, 0.1,
                                &err) == 0);
    kern_linear_backward_f64(dhn, de, NULL, dlog, c.hn, c.e, N, D, V, false);
    kern_rmsnorm_backward_f64(dh, dw, dhn, c.h, c.w, N, D, 1e-6, false);
    CHECK(kern_embedding_backward_f64(de, dh, ids, N, V, D, &err) == 0);

    /* The same chain in f32. */
    float *e32 = to32(c.e, V * D), *w32 = to32(c.w, D), *tv32 = to32(tval, N * K);
    float *h32 = zeros32(N * D), *hn32 = zeros32(N * D), *lg32 = zeros32(N * V);
    float *dh32 = zeros32(N * D), *dhn32 = zeros32(N * D), *de32 = zeros32(V * D);
    float *dw32 = zeros32(D);
    CHECK(kern_embedding_f32(h32, e32, ids, N, V, D, &err) == 0);
    kern_rmsnorm_f32(hn32, h32, w32, N, D, 1e-6f);
    kern_linear_f32(lg32, hn32, e32, NULL, N, D, V);
    CHECK(kern_distill_loss_f32(NULL, NULL, lg32, lg32, targets, idx, tv32, N, V, K, 0.9, 0.1,
                                &err) == 0);
    kern_linear_backward_f32(dhn32, de32, NULL, lg32, hn32, e32, N, D, V, false);
    kern_rmsnorm_backward_f32(dh32, dw32, dhn32, h32, w32, N, D, 1e-6f, false);
    CHECK(kern_embedding_backward_f32(de32, dh32, ids, N, V, D, &err) == 0);

    check_grad("tied dE (embedding + head)", c.e, V * D, tied_loss, &c, de, de32);
    check_grad("tied final-norm dweight", c.w, D, tied_loss, &c, dw, dw32);
    free(teacher), free(c.e), free(c.w), free(c.h), free(c.hn), free(c.logits), free(dlog);
    free(dhn), free(dh), free(de), free(dw), free(e32), free(w32), free(tv32), free(h32);
    free(hn32), free(lg32), free(dh32), free(dhn32), free(de32), free(dw32);
}

/* ---- optimiser ------------------------------------------------------------------------- */

/* PyTorch's AdamW in float64, the plain formula. */
static void adamw_ref(double *p, const double *g, double *m, double *v, size_t n,
                      const kern_adamw *c, long t) {
    double bc1 = 1 - pow(c->beta1, (double)t), bc2 = 1 - pow(c->beta2, (double)t);
    for (size_t i = 0; i < n; i++) {
        p[i] *= 1 - c->lr * c->weight_decay;
        m[i] = c->beta1 * m[i] + (1 - c->beta1) * g[i];
        v[i] = c->beta2 * v[i] + (1 - c->beta2) * g[i] * g[i];
        p[i] -= c->lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + c->eps);
    }
}

static void test_adamw(void) {
    printf("AdamW\n");
    kern_adamw cfg = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
    /* One parameter p = 1 with gradients 0.5, -0.25, 0.125, by hand:
     * t=1: p = 1 * 0.99 = 0.99; m = 0.05; v = 0.00025; step_size = 0.1 / 0.1 = 1;
     *      denom = sqrt(0.00025) / sqrt(0.001) + 1e-8 = 0.50000001; p = 0.99 - 0.05 / denom
     *      = 0.890000002
     * t=2: p = 0.8811; m = 0.045 - 0.025 = 0.02; v = 0.00024975 + 0.0000625 = 0.00031225;
     *      step_size = 0.1 / 0.19; denom = sqrt(0.00031225 / 0.001999) = 0.3952250...;
     *      p = 0.8811 - 0.5263158 * 0.02 / 0.3952250 = 0.8544662987
     * t=3: m = 0.018 + 0.0125 = 0.0305; v = 0.000327562750; p = 0.8118787219 */
    static const double expect[3] = {0.890000002, 0.8544662986878463, 0.8118787219097756};
    static const float grads[3] = {0.5f, -0.25f, 0.125f};
    float p = 1, m = 0, v = 0;
    for (int t = 1; t <= 3; t++) {
        kern_adamw_step(&p, &grads[t - 1], &m, &v, 1, &cfg, t);
        printf("  step %d: p = %.9f (expected %.10f)\n", t, p, expect[t - 1]);
        CHECK(fabs(p - expect[t - 1]) <= 1e-6 * expect[t - 1]);
    }

    /* Many parameters, several steps, against the float64 reference. */
    enum { N = 1000, STEPS = 6 };
    double *p64 = randn(N, 1), *m64 = zeros(N), *v64 = zeros(N), *g64 = zeros(N);
    float *p32 = to32(p64, N), *m32 = zeros32(N), *v32 = zeros32(N), *g32 = zeros32(N);
    for (int i = 0; i < N; i++) p64[i] = p32[i];
    kern_adamw cfg2 = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    double worst = 0;
    for (long t = 1; t <= STEPS; t++) {
        for (int i = 0; i < N; i++) {
            g32[i] = xd_rng_normal(&rng) * (i % 7 == 0 ? 1e-3f : 1.0f);
            g64[i] = g32[i];
        }
        kern_adamw_step(p32, g32, m32, v32, N, &cfg2, t);
        adamw_ref(p64, g64, m64, v64, N, &cfg2, t);
        double e = relerr32(p32, p64, N);
        worst = e > worst ? e : worst;
    }
    printf("  %d params x %d steps: max rel err vs f64 reference %.2e\n", N, STEPS, worst);
    CHECK(worst <= 1e-6);

    /* Decoupled decay: a zero gradient still shrinks weights by lr * wd (coupled L2 would
     * instead take a full Adam step of size lr). */
    float pz = 2, mz = 0, vz = 0, gz = 0;
    kern_adamw_step(&pz, &gz, &mz, &vz, 1, &cfg, 1);
    printf("  zero gradient: p 2 -> %.9f (2 * (1 - 0.1 * 0.1) = 1.98)\n", pz);
    CHECK(fabs(pz - 1.98) <= 1e-6);
    free(p64), free(m64), free(v64), free(g64), free(p32), free(m32), free(v32), free(g32);
}

static void test_clip(void) {
    printf("gradient clipping\n");
    float g[2] = {3, 4};
    double norm = kern_clip_grad_norm(g, 2, 1.0);
    double after = sqrt((double)g[0] * g[0] + (double)g[1] * g[1]);
    printf("  norm %.9f clipped to %.9f (max_norm 1)\n", norm, after);
    CHECK(norm == 5.0 && fabs(after - 1.0) <= 1e-6 && fabs(g[0] / g[1] - 0.75) < 1e-7);
    float h[2] = {3, 4};
    CHECK(kern_clip_grad_norm(h, 2, 10.0) == 5.0 && h[0] == 3 && h[1] == 4);
    float z[3] = {1, NAN, 2};
    CHECK(isnan(kern_clip_grad_norm(z, 3, 1.0)) && z[0] == 1 && z[2] == 2);
}

static void test_schedule(void) {
    printf("LR schedule\n");
    kern_lr_schedule s = {.peak = 1e-3, .lr_min = 1e-4, .warmup = 100, .total = 1100,
                          .cosine = true};
    double at[6] = {kern_lr_at(&s, 0),   kern_lr_at(&s, 50),   kern_lr_at(&s, 100),
                    kern_lr_at(&s, 600), kern_lr_at(&s, 1100), kern_lr_at(&s, 5000)};
    printf("  lr(0) %g lr(50) %g lr(100) %g lr(600) %g lr(1100) %g lr(5000) %g\n", at[0], at[1],
           at[2], at[3], at[4], at[5]);
    CHECK(at[0] == 0);
    CHECK_NEAR(at[1], 5e-4, 1e-18);
    CHECK_NEAR(at[2], 1e-3, 1e-18);
    CHECK_NEAR(at[3], 5.5e-4, 1e-15); /* mid-cosine: halfway between peak and floor */
    CHECK_NEAR(at[4], 1e-4, 1e-18);
    CHECK_NEAR(at[5], 1e-4, 1e-18);
    /* A quarter of the way: lr_min + (peak - lr_min)(1 + cos(pi/4))/2. */
    CHECK_NEAR(kern_lr_at(&s, 350), 1e-4 + 9e-4 * (1 + sqrt(0.5)) / 2, 1e-15);
    s.cosine = false;
    CHECK(kern_lr_at(&s, 100) == 1e-3 && kern_lr_at(&s, 5000) == 1e-3);
    CHECK_NEAR(kern_lr_at(&s, 25), 2.5e-4, 1e-18);
    s.warmup = 0;
    s.cosine = true;
    CHECK(kern_lr_at(&s, 0) == 1e-3);
}

/* ---- timing: one SmolLM2-sized MLP block ----------------------------------------------- */

static void bench_mlp(void) {
    const char *skip = getenv("XD_SKIP_BENCH");
    if (skip && *skip) return;
    enum { D = 576, F = 1536, T = 2048 };
    size_t nx = (size_t)T * D, nf = (size_t)T * F, nw = (size_t)F * D;
    float *x = malloc(sizeof(float) * nx), *xn = malloc(sizeof(float) * nx);
    float *y = malloc(sizeof(float) * nx), *dy = malloc(sizeof(float) * nx);
    float *dx = malloc(sizeof(float) * nx), *dxn = malloc(sizeof(float) * nx);
    float *nw_ = malloc(sizeof(float) * D), *dnw = zeros32(D);
    float *wg = malloc(sizeof(float) * nw), *wu = malloc(sizeof(float) * nw);
    float *wd = malloc(sizeof(float) * nw), *dwg = zeros32(nw), *dwu = zeros32(nw);
    float *dwd = zeros32(nw);
    float *g = malloc(sizeof(float) * nf), *u = malloc(sizeof(float) * nf);
    float *h = malloc(sizeof(float) * nf), *dg = malloc(sizeof(float) * nf);
    float *du = malloc(sizeof(float) * nf), *dh = malloc(sizeof(float) * nf);
    for (size_t i = 0; i < nx; i++) x[i] = xd_rng_normal(&rng), dy[i] = xd_rng_normal(&rng);
    for (size_t i = 0; i < nw; i++) {
        wg[i] = 0.04f * xd_rng_normal(&rng);
        wu[i] = 0.04f * xd_rng_normal(&rng);
        wd[i] = 0.025f * xd_rng_normal(&rng);
    }
    for (int i = 0; i < D; i++) nw_[i] = 1;
    double best = 1e30, best_cpu = 0;
    for (int rep = 0; rep < 4; rep++) { /* the first is a warm-up */
        double t0 = xd_now();
        clock_t c0 = clock();
        /* y = x + W_d (silu(W_g n(x)) * W_u n(x)) */
        kern_rmsnorm_f32(xn, x, nw_, T, D, 1e-5f);
        kern_linear_f32(g, xn, wg, NULL, T, D, F);
        kern_linear_f32(u, xn, wu, NULL, T, D, F);
        kern_swiglu_f32(h, g, u, nf);
        kern_linear_f32(y, h, wd, NULL, T, F, D);
        for (size_t i = 0; i < nx; i++) y[i] += x[i];
        /* backward */
        kern_linear_backward_f32(dh, dwd, NULL, dy, h, wd, T, F, D, false);
        kern_swiglu_backward_f32(dg, du, dh, g, u, nf);
        kern_linear_backward_f32(dxn, dwg, NULL, dg, xn, wg, T, D, F, false);
        kern_linear_backward_f32(dxn, dwu, NULL, du, xn, wu, T, D, F, true);
        memcpy(dx, dy, sizeof(float) * nx); /* the residual path */
        kern_rmsnorm_backward_f32(dx, dnw, dxn, x, nw_, T, D, 1e-5f, true);
        double wall = xd_now() - t0, cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
        if (rep > 0 && wall < best) best = wall, best_cpu = cpu;
    }
    double flops = 9.0 * 2.0 * T * D * F;
    printf("timing: MLP block D=%d F=%d T=%d fwd+bwd f32: %.1f ms wall (%.1f ms CPU), "
           "%.1f GFLOP/s\n",
           D, F, T, best * 1e3, best_cpu * 1e3, flops / best * 1e-9);
    free(x), free(xn), free(y), free(dy), free(dx), free(dxn), free(nw_), free(dnw), free(wg);
    free(wu), free(wd), free(dwg), free(dwu), free(dwd), free(g), free(u), free(h), free(dg);
    free(du), free(dh);
}

/* And the logit side: top-k of teacher rows and the fused distill loss at SmolLM2's vocab. */
static void bench_losses(void) {
    const char *skip = getenv("XD_SKIP_BENCH");
    if (skip && *skip) return;
    enum { T = 256, V = 49152, K = KERN_TOPK_DEFAULT };
    size_t nl = (size_t)T * V;
    float *teacher = malloc(sizeof(float) * nl), *student = malloc(sizeof(float) * nl);
    float *grad = malloc(sizeof(float) * nl), *tval = malloc(sizeof(float) * T * K);
    int *idx = malloc(sizeof(int) * T * K), *targets = malloc(sizeof(int) * T);
    for (size_t i = 0; i < nl; i++) {
        teacher[i] = 3 * xd_rng_normal(&rng);
        student[i] = 3 * xd_rng_normal(&rng);
    }
    for (int t = 0; t < T; t++) targets[t] = (int)(xd_rng_next(&rng) % V);
    xd_err err;
    double t0 = xd_now();
    CHECK(kern_topk_f32(idx, tval, teacher, T, V, K, &err) == 0);
    double t1 = xd_now(), ce, kl;
    CHECK(kern_distill_loss_f32(&ce, &kl, grad, student, targets, idx, tval, T, V, K, 0.9, 0.1,
                                &err) == 0);
    double t2 = xd_now();
    printf("timing: %d rows x V=%d: top-%d %.2f ms/row, fused CE+KL loss+grad %.2f ms/row\n", T,
           V, K, (t1 - t0) * 1e3 / T, (t2 - t1) * 1e3 / T);
    free(teacher), free(student), free(grad), free(tval), free(idx), free(targets);
}

int main(void) {
    xd_rng_seed(&rng, 20240611);
    test_linear();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_embedding();
    test_attention(0);
    test_attention(3);
    test_mse();
    test_cross_entropy();
    test_topk();
    test_topk_kl();
    test_distill();
    test_tied_head();
    test_adamw();
    test_clip();
    test_schedule();
    bench_mlp();
    bench_losses();
    TEST_MAIN_END();
}
