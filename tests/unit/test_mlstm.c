/* The mLSTM kernels against a float64 evaluation of the recurrence written out here on its own:
 * chunkwise forward (f32, f64), backward against central finite differences, step form and
 * prefill-then-step, and the f32 error as T grows (a number for the notes). */
#include "common/xd.h"
#include "kernels/mlstm.h"
#include "test.h"

#include <float.h>

enum { GATES_TYPICAL, GATES_EXTREME, GATES_LONG };
static const char *gate_name[] = {"typical", "extreme", "long-memory"};

static double logsigmoid(double x) { return x > 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* B sequences of inputs, held in f64; `single` rounds them to float so that the f32 kernels
 * and the f64 reference see the same numbers. */
typedef struct seqs {
    int B, T, dk, dv;
    double *q, *k, *v, *it, *lf;
} seqs;

static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) abort();
    return p;
}
static float *falloc(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) abort();
    return p;
}
static float *to_f32(const double *x, size_t n) {
    float *y = falloc(n);
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

/* Hedgehog-like features (softmax of a random row, so positive and summing to 1) times fscale;
 * gates per regime. The extreme regime strings together runs where logf ~ 0, logf down to -20
 * and ordinary gates, with itilde in [-30, 30], to exercise the stabiliser. */
static seqs make_seqs(xd_rng *r, int B, int T, int dk, int dv, int gates, double fscale,
                      bool single) {
    seqs s = {B, T, dk, dv, NULL, NULL, NULL, NULL, NULL};
    size_t n = (size_t)B * T;
    s.q = dalloc(n * dk), s.k = dalloc(n * dk), s.v = dalloc(n * dv);
    s.it = dalloc(n), s.lf = dalloc(n);
    double *feat[2] = {s.q, s.k};
    for (int f = 0; f < 2; f++)
        for (size_t t = 0; t < n; t++) {
            double *row = feat[f] + t * dk, sum = 0;
            for (int a = 0; a < dk; a++) sum += row[a] = exp(2.0 * xd_rng_normal(r));
            for (int a = 0; a < dk; a++) row[a] *= fscale / sum;
        }
    for (size_t i = 0; i < n * dv; i++) s.v[i] = xd_rng_normal(r);
    int regime = 0, left = 0;
    for (size_t t = 0; t < n; t++) {
        double u = xd_rng_uniform(r);
        if (gates == GATES_TYPICAL) {
            s.it[t] = xd_rng_normal(r);
            s.lf[t] = logsigmoid(3.0 + 1.5 * xd_rng_normal(r));
        } else if (gates == GATES_LONG) {
            s.it[t] = 2.0 * xd_rng_normal(r);
            s.lf[t] = logsigmoid(8.0 + xd_rng_normal(r));
        } else {
            if (left-- <= 0) {
                regime = (int)(xd_rng_uniform(r) * 3);
                left = 1 + (int)(xd_rng_uniform(r) * 24);
            }
            s.it[t] = -30.0 + 60.0 * xd_rng_uniform(r);
            s.lf[t] = regime == 0   ? -1e-6 * u
                      : regime == 1 ? -20.0 * u
                                    : logsigmoid(3.0 + 2.0 * xd_rng_normal(r));
        }
    }
    if (single) {
        double *all[5] = {s.q, s.k, s.v, s.it, s.lf};
        size_t len[5] = {n * dk, n * dk, n * dv, n, n};
        for (int a = 0; a < 5; a++)
            for (size_t i = 0; i < len[a]; i++) all[a][i] = (float)all[a][i];
    }
    return s;
}

static void free_seqs(seqs *s) { free(s->q), free(s->k), free(s->v), free(s->it), free(s->lf); }

/* The definition, step by step in float64, for sequence b: h [T, dv], and the final state
 * (C [dk*dv], n [dk], m) when C is not NULL. */
static void reference(const seqs *s, int b, double eps, double *h, double *Cf, double *nf,
                      double *mf) {
    const int T = s->T, dk = s->dk, dv = s->dv;
    const double *q = s->q + (size_t)b * T * dk, *k = s->k + (size_t)b * T * dk;
    const double *v = s->v + (size_t)b * T * dv, *it = s->it + (size_t)b * T;
    const double *lf = s->lf + (size_t)b * T;
    double *C = dalloc((size_t)dk * dv), *n = dalloc(dk), m = -INFINITY;
    for (int t = 0; t < T; t++) {
        double mt = fmax(lf[t] + m, it[t]);
        double fg = exp(lf[t] + m - mt), ig = exp(it[t] - mt);
        m = mt;
        for (int a = 0; a < dk; a++) {
            n[a] = fg * n[a] + ig * k[(size_t)t * dk + a];
            for (int i = 0; i < dv; i++)
                C[(size_t)a * dv + i] =
                    fg * C[(size_t)a * dv + i] + ig * k[(size_t)t * dk + a] * v[(size_t)t * dv + i];
        }
        double D = 0;
        for (int a = 0; a < dk; a++) D += q[(size_t)t * dk + a] * n[a];
        for (int i = 0; i < dv; i++) {
            double num = 0;
            for (int a = 0; a < dk; a++) num += C[(size_t)a * dv + i] * q[(size_t)t * dk + a];
            h[(size_t)t * dv + i] = num / (D + eps);
        }
    }
    if (Cf) {
        memcpy(Cf, C, sizeof(double) * dk * dv);
        memcpy(nf, n, sizeof(double) * dk);
        *mf = m;
    }
    free(C);
    free(n);
}

/* Largest over tokens of |x_t - ref_t|_inf / |ref_t|_inf: the error relative to each token's
 * own scale, so a small output cannot hide behind a large one. */
static double token_rel_err_f64(const double *x, const double *ref, int T, int dv) {
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double e = 0, s = 0;
        for (int i = 0; i < dv; i++) {
            e = fmax(e, fabs(x[(size_t)t * dv + i] - ref[(size_t)t * dv + i]));
            s = fmax(s, fabs(ref[(size_t)t * dv + i]));
        }
        worst = fmax(worst, e / fmax(s, DBL_MIN));
    }
    return worst;
}
static double token_rel_err_f32(const float *x, const double *ref, int T, int dv) {
    double *y = dalloc((size_t)T * dv);
    for (size_t i = 0; i < (size_t)T * dv; i++) y[i] = x[i];
    double e = token_rel_err_f64(y, ref, T, dv);
    free(y);
    return e;
}
/* max |x - ref| / max |ref| over a whole tensor. */
static double norm_rel_err(const double *x, const double *ref, size_t n) {
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(x[i] - ref[i]));
        s = fmax(s, fabs(ref[i]));
    }
    return e / fmax(s, DBL_MIN);
}

typedef struct fwd_out {
    double *h, *saved;
    double *C, *n, *m; /* final states of the B sequences */
} fwd_out;

static fwd_out run_fwd_f64(const seqs *s, int L, double eps) {
    kern_mlstm_dims d = {s->B, s->T, s->dk, s->dv, L, eps};
    fwd_out o;
    o.h = dalloc((size_t)s->B * s->T * s->dv);
    o.saved = dalloc(s->B * kern_mlstm_saved_len(s->T, L, s->dk, s->dv));
    o.C = dalloc((size_t)s->B * s->dk * s->dv), o.n = dalloc((size_t)s->B * s->dk);
    o.m = dalloc(s->B);
    double *scratch = dalloc(kern_mlstm_scratch_len(L, s->dk, s->dv));
    kern_mlstm_state_f64 *fin = calloc(s->B, sizeof *fin);
    for (int b = 0; b < s->B; b++)
        kern_mlstm_state_init_f64(&fin[b], o.C + (size_t)b * s->dk * s->dv, o.n + (size_t)b * s->dk,
                                  s->dk, s->dv);
    kern_mlstm_fwd_f64(&d, s->q, s->k, s->v, s->it, s->lf, o.h, o.saved, scratch, fin);
    for (int b = 0; b < s->B; b++) o.m[b] = fin[b].m;
    free(fin);
    free(scratch);
    return o;
}
static void free_fwd(fwd_out *o) { free(o->h), free(o->saved), free(o->C), free(o->n), free(o->m); }

/* f32 forward; returns h [B, T, dv] as floats. */
static float *run_fwd_f32(const seqs *s, int L, double eps, float *saved, float *Cf, float *nf,
                          float *mf) {
    kern_mlstm_dims d = {s->B, s->T, s->dk, s->dv, L, eps};
    size_t n = (size_t)s->B * s->T;
    float *q = to_f32(s->q, n * s->dk), *k = to_f32(s->k, n * s->dk), *v = to_f32(s->v, n * s->dv);
    float *it = to_f32(s->it, n), *lf = to_f32(s->lf, n), *h = falloc(n * s->dv);
    float *scratch = falloc(kern_mlstm_scratch_len(L, s->dk, s->dv));
    float *own = saved ? NULL : falloc(s->B * kern_mlstm_saved_len(s->T, L, s->dk, s->dv));
    kern_mlstm_state_f32 *fin = NULL;
    if (Cf) {
        fin = calloc(s->B, sizeof *fin);
        for (int b = 0; b < s->B; b++)
            kern_mlstm_state_init_f32(&fin[b], Cf + (size_t)b * s->dk * s->dv,
                                      nf + (size_t)b * s->dk, s->dk, s->dv);
    }
    kern_mlstm_fwd_f32(&d, q, k, v, it, lf, h, saved ? saved : own, scratch, fin);
    if (fin)
        for (int b = 0; b < s->B; b++) mf[b] = fin[b].m;
    free(fin), free(own), free(scratch), free(q), free(k), free(v), free(it), free(lf);
    return h;
}

/* 1. Chunkwise forward against the float64 recurrence, final states included. */
static void test_forward(void) {
    static const int Ls[] = {1, 3, 16, 64}, Ts[] = {1, 37, 100, 257};
    static const int dims[][2] = {{16, 16}, {8, 24}};
    const double eps = 1e-6;
    xd_rng r;
    xd_rng_seed(&r, 1);
    for (int g = GATES_TYPICAL; g <= GATES_EXTREME; g++) {
        double worst64 = 0, worst32 = 0, worst_state = 0;
        for (size_t di = 0; di < 2; di++)
            for (size_t ti = 0; ti < 4; ti++)
                for (size_t li = 0; li < 4; li++) {
                    const int B = 2, T = Ts[ti], L = Ls[li], dk = dims[di][0], dv = dims[di][1];
                    seqs s = make_seqs(&r, B, T, dk, dv, g, 1.0, true);
                    fwd_out o = run_fwd_f64(&s, L, eps);
                    float *h32 = run_fwd_f32(&s, L, eps, NULL, NULL, NULL, NULL);
                    double *ref = dalloc((size_t)T * dv), *C = dalloc((size_t)dk * dv);
                    double *n = dalloc(dk), m;
                    for (int b = 0; b < B; b++) {
                        reference(&s, b, eps, ref, C, n, &m);
                        double e64 = token_rel_err_f64(o.h + (size_t)b * T * dv, ref, T, dv);
                        double e32 = token_rel_err_f32(h32 + (size_t)b * T * dv, ref, T, dv);
                        CHECK_MSG(e64 <= 1e-12, "%s T=%d L=%d dk=%d dv=%d: f64 err %.3g",
                                  gate_name[g], T, L, dk, dv, e64);
                        CHECK_MSG(e32 <= 1e-4, "%s T=%d L=%d dk=%d dv=%d: f32 err %.3g",
                                  gate_name[g], T, L, dk, dv, e32);
                        /* Same recurrence for m, so the same number up to the last bit. */
                        CHECK(o.m[b] == m);
                        double es =
                            fmax(norm_rel_err(o.C + (size_t)b * dk * dv, C, (size_t)dk * dv),
                                 norm_rel_err(o.n + (size_t)b * dk, n, dk));
                        CHECK_MSG(es <= 1e-12, "%s T=%d L=%d: final state err %.3g", gate_name[g],
                                  T, L, es);
                        worst64 = fmax(worst64, e64);
                        worst32 = fmax(worst32, e32);
                        worst_state = fmax(worst_state, es);
                    }
                    free(ref), free(C), free(n), free(h32);
                    free_fwd(&o);
                    free_seqs(&s);
                }
        printf("forward vs f64 recurrence, %s gates (T 1..257, L 1..64): f64 %.2e, f32 %.2e, "
               "final state f64 %.2e\n",
               gate_name[g], worst64, worst32, worst_state);
    }
}

/* Loss sum(h o R) of sequence b through the reference, for finite differences. */
static double ref_loss(const seqs *s, int b, double eps, const double *R, double *hbuf) {
    reference(s, b, eps, hbuf, NULL, NULL, NULL);
    double l = 0;
    for (size_t i = 0; i < (size_t)s->T * s->dv; i++)
        l += hbuf[i] * R[(size_t)b * s->T * s->dv + i];
    return l;
}

typedef struct grads {
    double *g[5]; /* q, k, v, itilde, logf */
} grads;

static grads run_bwd_f64(const seqs *s, int L, double eps, const double *R) {
    kern_mlstm_dims d = {s->B, s->T, s->dk, s->dv, L, eps};
    size_t n = (size_t)s->B * s->T;
    fwd_out o = run_fwd_f64(s, L, eps);
    grads g = {{dalloc(n * s->dk), dalloc(n * s->dk), dalloc(n * s->dv), dalloc(n), dalloc(n)}};
    double *scratch = dalloc(kern_mlstm_scratch_len(L, s->dk, s->dv));
    kern_mlstm_bwd_f64(&d, s->q, s->k, s->v, s->it, s->lf, o.h, R, o.saved, scratch, g.g[0], g.g[1],
                       g.g[2], g.g[3], g.g[4]);
    free(scratch);
    free_fwd(&o);
    return g;
}

static grads run_bwd_f32(const seqs *s, int L, double eps, const double *R) {
    kern_mlstm_dims d = {s->B, s->T, s->dk, s->dv, L, eps};
    size_t n = (size_t)s->B * s->T;
    float *saved = falloc(s->B * kern_mlstm_saved_len(s->T, L, s->dk, s->dv));
    float *h = run_fwd_f32(s, L, eps, saved, NULL, NULL, NULL);
    float *q = to_f32(s->q, n * s->dk), *k = to_f32(s->k, n * s->dk), *v = to_f32(s->v, n * s->dv);
    float *it = to_f32(s->it, n), *lf = to_f32(s->lf, n), *dh = to_f32(R, n * s->dv);
    float *scratch = falloc(kern_mlstm_scratch_len(L, s->dk, s->dv));
    size_t len[5] = {n * s->dk, n * s->dk, n * s->dv, n, n};
    float *g32[5];
    for (int a = 0; a < 5; a++) g32[a] = falloc(len[a]);
    kern_mlstm_bwd_f32(&d, q, k, v, it, lf, h, dh, saved, scratch, g32[0], g32[1], g32[2], g32[3],
                       g32[4]);
    grads g;
    for (int a = 0; a < 5; a++) {
        g.g[a] = dalloc(len[a]);
        for (size_t i = 0; i < len[a]; i++) g.g[a][i] = g32[a][i];
        free(g32[a]);
    }
    free(saved), free(h), free(q), free(k), free(v), free(it), free(lf), free(dh), free(scratch);
    return g;
}

static void free_grads(grads *g) {
    for (int a = 0; a < 5; a++) free(g->g[a]);
}

/* 2. Backward (f64) against central differences of the reference; f32 backward against f64. */
static void test_backward(void) {
    static const char *names[5] = {"phi_q", "phi_k", "v", "itilde", "logf"};
    static const struct {
        int T, L, dk, dv, gates;
        double eps, fscale;
    } cases[] = {
        {37, 1, 6, 5, GATES_TYPICAL, 1e-6, 1.0},  {37, 3, 6, 5, GATES_EXTREME, 1e-6, 1.0},
        {37, 16, 4, 7, GATES_TYPICAL, 1e-6, 1.0}, {20, 64, 5, 5, GATES_TYPICAL, 1e-6, 1.0},
        {45, 8, 5, 6, GATES_TYPICAL, 0.5, 1.0},   {45, 8, 5, 6, GATES_TYPICAL, 1e-6, 1e-3},
        {40, 16, 4, 4, GATES_LONG, 1e-6, 1.0},    {50, 7, 6, 6, GATES_EXTREME, 1e-6, 1.0},
    };
    /* Central differences with a step of 1e-6 relative to the features' scale, so the
     * scale-1e-3 case (denominators near eps) is not dominated by truncation error. */
    const double step = 1e-6;
    xd_rng r;
    xd_rng_seed(&r, 2);
    double worst_fd = 0, worst32[5] = {0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int B = 2, T = cases[c].T, L = cases[c].L, dk = cases[c].dk, dv = cases[c].dv;
        const double eps = cases[c].eps;
        seqs s = make_seqs(&r, B, T, dk, dv, cases[c].gates, cases[c].fscale, true);
        double *R = dalloc((size_t)B * T * dv), *hbuf = dalloc((size_t)T * dv);
        for (size_t i = 0; i < (size_t)B * T * dv; i++) R[i] = xd_rng_normal(&r);
        grads g = run_bwd_f64(&s, L, eps, R);
        double *in[5] = {s.q, s.k, s.v, s.it, s.lf};
        const int width[5] = {dk, dk, dv, 1, 1};
        printf("backward vs finite differences, T=%d L=%d dk=%d dv=%d %s eps=%g scale=%g:", T, L,
               dk, dv, gate_name[cases[c].gates], eps, cases[c].fscale);
        for (int a = 0; a < 5; a++) {
            size_t per = (size_t)T * width[a];
            double *fd = dalloc((size_t)B * per);
            for (int b = 0; b < B; b++)
                for (size_t i = 0; i < per; i++) {
                    double *x = in[a] + b * per + i, x0 = *x;
                    *x = x0 + step * (a < 2 ? cases[c].fscale : 1.0);
                    double lp = ref_loss(&s, b, eps, R, hbuf);
                    *x = x0 - step * (a < 2 ? cases[c].fscale : 1.0);
                    double lm = ref_loss(&s, b, eps, R, hbuf);
                    *x = x0;
                    fd[b * per + i] = (lp - lm) / (2 * step * (a < 2 ? cases[c].fscale : 1.0));
                }
            double e = norm_rel_err(g.g[a], fd, (size_t)B * per);
            CHECK_MSG(e <= 1e-6, "case %zu d%s: rel err %.3g", c, names[a], e);
            worst_fd = fmax(worst_fd, e);
            printf(" d%s %.1e", names[a], e);
            free(fd);
        }
        printf("\n");
        grads g32 = run_bwd_f32(&s, L, eps, R);
        for (int a = 0; a < 5; a++) {
            double e = norm_rel_err(g32.g[a], g.g[a], (size_t)B * T * width[a]);
            worst32[a] = fmax(worst32[a], e);
        }
        free_grads(&g32);
        free_grads(&g);
        free(R), free(hbuf);
        free_seqs(&s);
    }
    printf("backward f64 vs finite differences: worst rel err %.2e\n", worst_fd);

    printf("backward f32 vs f64 (small cases above), normwise rel err:");
    for (int a = 0; a < 5; a++) printf(" d%s %.1e", names[a], worst32[a]);
    printf("\n");
    for (int a = 0; a < 5; a++)
        CHECK_MSG(worst32[a] <= 1e-3, "f32 d%s: %.3g", names[a], worst32[a]);

    /* Model-sized f32 backward (d = 64, L = 64) against the f64 backward on the same inputs. */
    static const int gates[] = {GATES_TYPICAL, GATES_LONG};
    for (int gi = 0; gi < 2; gi++) {
        const int T = 512, L = 64, d = 64;
        seqs s = make_seqs(&r, 1, T, d, d, gates[gi], 1.0, true);
        double *R = dalloc((size_t)T * d);
        for (size_t i = 0; i < (size_t)T * d; i++) R[i] = xd_rng_normal(&r);
        grads g = run_bwd_f64(&s, L, 1e-6, R), g32 = run_bwd_f32(&s, L, 1e-6, R);
        const int width[5] = {d, d, d, 1, 1};
        printf("backward f32 vs f64, T=%d L=%d d=%d %s gates:", T, L, d, gate_name[gates[gi]]);
        for (int a = 0; a < 5; a++) {
            double e = norm_rel_err(g32.g[a], g.g[a], (size_t)T * width[a]);
            printf(" d%s %.1e", names[a], e);
            CHECK_MSG(e <= 1e-3, "f32 d%s: %.3g", names[a], e);
        }
        printf("\n");
        free_grads(&g), free_grads(&g32), free(R);
        free_seqs(&s);
    }
}

/* 3. The step form reproduces the chunkwise output token by token, and a chunkwise prefill
 * continued by steps ends where the chunkwise run over the whole sequence ends. */
static void test_step(void) {
    const int B = 2, T = 100, T1 = 53, L = 16, dk = 8, dv = 12;
    const double eps = 1e-6;
    xd_rng r;
    xd_rng_seed(&r, 3);
    seqs s = make_seqs(&r, B, T, dk, dv, GATES_EXTREME, 1.0, true);
    seqs pre = s; /* the first T1 tokens of each sequence */
    pre.T = T1;
    pre.q = dalloc((size_t)B * T1 * dk), pre.k = dalloc((size_t)B * T1 * dk);
    pre.v = dalloc((size_t)B * T1 * dv), pre.it = dalloc((size_t)B * T1);
    pre.lf = dalloc((size_t)B * T1);
    for (int b = 0; b < B; b++) {
        memcpy(pre.q + (size_t)b * T1 * dk, s.q + (size_t)b * T * dk, sizeof(double) * T1 * dk);
        memcpy(pre.k + (size_t)b * T1 * dk, s.k + (size_t)b * T * dk, sizeof(double) * T1 * dk);
        memcpy(pre.v + (size_t)b * T1 * dv, s.v + (size_t)b * T * dv, sizeof(double) * T1 * dv);
        memcpy(pre.it + (size_t)b * T1, s.it + (size_t)b * T, sizeof(double) * T1);
        memcpy(pre.lf + (size_t)b * T1, s.lf + (size_t)b * T, sizeof(double) * T1);
    }

    /* f64 */
    fwd_out full = run_fwd_f64(&s, L, eps), head = run_fwd_f64(&pre, L, eps);
    double *C = dalloc((size_t)dk * dv), *n = dalloc(dk), *h = dalloc(dv);
    double e_step = 0, e_cont = 0, e_state = 0;
    for (int b = 0; b < B; b++) {
        const double *q = s.q + (size_t)b * T * dk, *k = s.k + (size_t)b * T * dk;
        const double *v = s.v + (size_t)b * T * dv, *it = s.it + (size_t)b * T;
        const double *lf = s.lf + (size_t)b * T, *hf = full.h + (size_t)b * T * dv;
        kern_mlstm_state_f64 st;
        kern_mlstm_state_init_f64(&st, C, n, dk, dv);
        for (int t = 0; t < T; t++) {
            kern_mlstm_step_f64(&st, q + (size_t)t * dk, k + (size_t)t * dk, v + (size_t)t * dv,
                                it[t], lf[t], eps, h);
            e_step = fmax(e_step, token_rel_err_f64(h, hf + (size_t)t * dv, 1, dv));
        }
        /* Continue from the prefill's final state. */
        st.C = head.C + (size_t)b * dk * dv, st.n = head.n + (size_t)b * dk, st.m = head.m[b];
        for (int t = T1; t < T; t++) {
            kern_mlstm_step_f64(&st, q + (size_t)t * dk, k + (size_t)t * dk, v + (size_t)t * dv,
                                it[t], lf[t], eps, h);
            e_cont = fmax(e_cont, token_rel_err_f64(h, hf + (size_t)t * dv, 1, dv));
        }
        CHECK(st.m == full.m[b]);
        e_state = fmax(e_state, norm_rel_err(st.C, full.C + (size_t)b * dk * dv, (size_t)dk * dv));
        e_state = fmax(e_state, norm_rel_err(st.n, full.n + (size_t)b * dk, dk));
    }
    printf("step form f64: vs chunkwise %.2e, after prefill %.2e, final state %.2e\n", e_step,
           e_cont, e_state);
    CHECK(e_step <= 1e-12 && e_cont <= 1e-12 && e_state <= 1e-12);
    free_fwd(&full), free_fwd(&head);
    free(C), free(n), free(h);

    /* f32: same comparisons at float precision. */
    float *Cf = falloc((size_t)B * dk * dv), *nf = falloc((size_t)B * dk), mf[2];
    float *Cp = falloc((size_t)B * dk * dv), *np = falloc((size_t)B * dk), mp[2];
    float *hfull = run_fwd_f32(&s, L, eps, NULL, Cf, nf, mf);
    float *hpre = run_fwd_f32(&pre, L, eps, NULL, Cp, np, mp);
    float *Cs = falloc((size_t)dk * dv), *ns = falloc(dk), *h32 = falloc(dv);
    size_t nt = (size_t)B * T;
    float *q = to_f32(s.q, nt * dk), *k = to_f32(s.k, nt * dk), *v = to_f32(s.v, nt * dv);
    float *it = to_f32(s.it, nt), *lf = to_f32(s.lf, nt);
    double *ref = dalloc(dv), e32 = 0, e32c = 0, e32s = 0, cmax = 0;
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * T;
        kern_mlstm_state_f32 st;
        kern_mlstm_state_init_f32(&st, Cs, ns, dk, dv);
        for (int t = 0; t < T; t++) {
            kern_mlstm_step_f32(&st, q + (o + t) * dk, k + (o + t) * dk, v + (o + t) * dv,
                                it[o + t], lf[o + t], (float)eps, h32);
            for (int i = 0; i < dv; i++) ref[i] = hfull[(o + t) * dv + i];
            e32 = fmax(e32, token_rel_err_f32(h32, ref, 1, dv));
        }
        st.C = Cp + (size_t)b * dk * dv, st.n = np + (size_t)b * dk, st.m = mp[b];
        for (int t = T1; t < T; t++) {
            kern_mlstm_step_f32(&st, q + (o + t) * dk, k + (o + t) * dk, v + (o + t) * dv,
                                it[o + t], lf[o + t], (float)eps, h32);
            for (int i = 0; i < dv; i++) ref[i] = hfull[(o + t) * dv + i];
            e32c = fmax(e32c, token_rel_err_f32(h32, ref, 1, dv));
        }
        CHECK(st.m == mf[b]);
        for (int a = 0; a < dk * dv; a++) {
            e32s = fmax(e32s, fabs(st.C[a] - Cf[(size_t)b * dk * dv + a]));
            cmax = fmax(cmax, fabs(Cf[(size_t)b * dk * dv + a]));
        }
    }
    e32s /= cmax;
    printf("step form f32: vs chunkwise %.2e, after prefill %.2e, final C %.2e\n", e32, e32c, e32s);
    CHECK(e32 <= 1e-4 && e32c <= 1e-4 && e32s <= 1e-4);
    free(Cf), free(nf), free(Cp), free(np), free(hfull), free(hpre), free(Cs), free(ns);
    free(h32), free(q), free(k), free(v), free(it), free(lf), free(ref);
    free_seqs(&pre);
    free_seqs(&s);

    /* An empty prefill hands over the empty state. */
    kern_mlstm_dims d0 = {1, 0, dk, dv, L, eps};
    double C0[8 * 12], n0[8], dummy = 0, scratch[2048];
    CHECK(kern_mlstm_scratch_len(L, dk, dv) <= 2048 && kern_mlstm_saved_len(0, L, dk, dv) == 0);
    kern_mlstm_state_f64 st0;
    kern_mlstm_state_init_f64(&st0, C0, n0, dk, dv);
    C0[0] = n0[0] = 1, st0.m = 0;
    kern_mlstm_fwd_f64(&d0, &dummy, &dummy, &dummy, &dummy, &dummy, &dummy, &dummy, scratch, &st0);
    CHECK(C0[0] == 0 && n0[0] == 0 && st0.m == -INFINITY);
}

/* 4. The f32 chunkwise error against the f64 recurrence as T grows (d = 64, L = 64). */
static void test_f32_error_vs_length(void) {
    static const int Ts[] = {128, 512, 2048, 8192};
    static const int gates[] = {GATES_TYPICAL, GATES_LONG, GATES_EXTREME};
    xd_rng r;
    xd_rng_seed(&r, 4);
    for (int gi = 0; gi < 3; gi++) {
        printf("f32 chunkwise vs f64 recurrence, d=64 L=64, %s gates: max (mean) per-token rel "
               "err [max of the f32 step form]:\n",
               gate_name[gates[gi]]);
        for (int ti = 0; ti < 4; ti++) {
            const int T = Ts[ti], d = 64;
            seqs s = make_seqs(&r, 1, T, d, d, gates[gi], 1.0, true);
            double *ref = dalloc((size_t)T * d);
            reference(&s, 0, 1e-6, ref, NULL, NULL, NULL);
            float *h = run_fwd_f32(&s, 64, 1e-6, NULL, NULL, NULL, NULL);
            /* Baseline: the f32 step form, i.e. the recurrence itself in float. */
            float *q = to_f32(s.q, (size_t)T * d), *k = to_f32(s.k, (size_t)T * d);
            float *v = to_f32(s.v, (size_t)T * d), *C = falloc((size_t)d * d), *n = falloc(d);
            float *hs = falloc(d);
            kern_mlstm_state_f32 st;
            kern_mlstm_state_init_f32(&st, C, n, d, d);
            double worst = 0, mean = 0, worst_step = 0;
            for (int t = 0; t < T; t++) {
                double e = token_rel_err_f32(h + (size_t)t * d, ref + (size_t)t * d, 1, d);
                worst = fmax(worst, e);
                mean += e / T;
                kern_mlstm_step_f32(&st, q + (size_t)t * d, k + (size_t)t * d, v + (size_t)t * d,
                                    (float)s.it[t], (float)s.lf[t], 1e-6f, hs);
                worst_step = fmax(worst_step, token_rel_err_f32(hs, ref + (size_t)t * d, 1, d));
            }
            printf("  T=%d %.1e (%.1e) [step %.1e]", T, worst, mean, worst_step);
            CHECK_MSG(worst <= 1e-4, "T=%d: %.3g", T, worst);
            free(ref), free(h), free(q), free(k), free(v), free(C), free(n), free(hs);
            free_seqs(&s);
        }
        printf("\n");
    }
}

int main(void) {
    test_forward();
    test_backward();
    test_step();
    test_f32_error_vs_length();
    TEST_MAIN_END();
}
