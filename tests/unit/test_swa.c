/* Sliding-window + sink attention: forward (f32, f64) against a naive float64 masked softmax and
 * the teacher's kern_attention_causal; backward (f64) against central finite differences, f32
 * backward against f64; the generation step over a wrapping ring buffer against the forward.
 * Errors are relative: max|a - b| / max|b| over the tensor (tests/gradcheck.h). */
#include "common/xd.h"
#include "gradcheck.h"
#include "kernels/kernels.h"
#include "kernels/swa.h"
#include "test.h"

typedef struct swa_case {
    int T, W, S, H, G, d;
    const char *what;
} swa_case;

/* Straight from the definition: query t sees keys j <= t with j < S or j > t - W. */
static void naive_swa(double *out, double *lse, const double *q, const double *k, const double *v,
                      const swa_case *c) {
    int T = c->T, H = c->H, G = c->G, d = c->d;
    double *p = malloc(sizeof(double) * T);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / G);
            double m = -INFINITY, s = 0;
            for (int j = 0; j <= t; j++) {
                p[j] = -INFINITY;
                if (!(j < c->S || j > t - c->W)) continue;
                double dot = 0;
                for (int i = 0; i < d; i++)
                    dot += q[((size_t)t * H + h) * d + i] * k[((size_t)j * G + g) * d + i];
                p[j] = dot / sqrt((double)d);
                m = p[j] > m ? p[j] : m;
            }
            for (int j = 0; j <= t; j++) s += exp(p[j] - m);
            double *o = out + ((size_t)t * H + h) * d;
            for (int i = 0; i < d; i++) o[i] = 0;
            for (int j = 0; j <= t; j++) {
                double w = exp(p[j] - m) / s;
                for (int i = 0; i < d; i++) o[i] += w * v[((size_t)j * G + g) * d + i];
            }
            lse[(size_t)t * H + h] = m + log(s);
        }
    free(p);
}

typedef struct swa_data {
    swa_case c;
    size_t nq, nkv, nl;
    double *q, *k, *v, *dout, *out, *lse, *scratch;
} swa_data;

static void swa_data_init(swa_data *D, const swa_case *c, xd_rng *r) {
    D->c = *c;
    D->nq = (size_t)c->T * c->H * c->d;
    D->nkv = (size_t)c->T * c->G * c->d;
    D->nl = (size_t)c->T * c->H;
    /* q scaled up a little so the softmax is not nearly uniform */
    D->q = gc_normal(D->nq, 1.5, r);
    D->k = gc_normal(D->nkv, 1.0, r);
    D->v = gc_normal(D->nkv, 1.0, r);
    D->dout = gc_normal(D->nq, 1.0, r);
    D->out = malloc(sizeof(double) * D->nq);
    D->lse = malloc(sizeof(double) * D->nl);
    D->scratch = malloc(sizeof(double) * kern_swa_scratch_elems(c->T, c->W, c->S));
}

static void swa_data_free(swa_data *D) {
    free(D->q), free(D->k), free(D->v), free(D->dout), free(D->out), free(D->lse);
    free(D->scratch);
}

/* L = sum(out * dout): its gradient is the backward of dout. */
static double swa_loss(void *ctx) {
    swa_data *D = ctx;
    const swa_case *c = &D->c;
    kern_swa_fwd_f64(D->out, D->lse, D->q, D->k, D->v, c->T, c->H, c->G, c->d, c->W, c->S,
                     D->scratch);
    double L = 0;
    for (size_t i = 0; i < D->nq; i++) L += D->out[i] * D->dout[i];
    return L;
}

static void check_case(const swa_case *c, xd_rng *r) {
    swa_data D;
    swa_data_init(&D, c, r);
    int T = c->T, H = c->H, G = c->G, d = c->d, W = c->W, S = c->S;
    size_t nq = D.nq, nkv = D.nkv, nl = D.nl;
    printf("T=%-3d W=%-3d S=%-2d H=%d G=%d d=%-2d %-26s", T, W, S, H, G, d, c->what);

    /* forward: f64 and f32 against the naive reference */
    double *ref = malloc(sizeof(double) * nq), *ref_lse = malloc(sizeof(double) * nl);
    naive_swa(ref, ref_lse, D.q, D.k, D.v, c);
    kern_swa_fwd_f64(D.out, D.lse, D.q, D.k, D.v, T, H, G, d, W, S, D.scratch);
    double e64 = rel_err_f64(D.out, ref, nq), e64l = rel_err_f64(D.lse, ref_lse, nl);
    float *qf = gc_to_f32(D.q, nq), *kf = gc_to_f32(D.k, nkv), *vf = gc_to_f32(D.v, nkv);
    float *dof = gc_to_f32(D.dout, nq), *of = malloc(sizeof(float) * nq);
    float *lf = malloc(sizeof(float) * nl);
    float *sf = malloc(sizeof(float) * kern_swa_scratch_elems(T, W, S));
    kern_swa_fwd_f32(of, lf, qf, kf, vf, T, H, G, d, W, S, sf);
    double e32 = rel_err_f32(of, ref, nq), e32l = rel_err_f32(lf, ref_lse, nl);
    printf(" fwd f64 %.1e (lse %.1e)  f32 %.1e (lse %.1e)", e64, e64l, e32, e32l);
    CHECK_MSG(e64 <= 1e-12 && e64l <= 1e-12, "%s: f64 forward %g, lse %g", c->what, e64, e64l);
    CHECK_MSG(e32 <= 1e-5 && e32l <= 1e-5, "%s: f32 forward %g, lse %g", c->what, e32, e32l);

    /* The teacher's kernel covers the cases where the key set is a plain causal window. */
    if (S == 0 || W + S >= T) {
        float *tf = malloc(sizeof(float) * nq), *ts = malloc(sizeof(float) * (size_t)T * T);
        kern_attention_causal_f32(tf, qf, kf, vf, T, 0, H, G, d, W + S >= T ? 0 : W, ts);
        double et = rel_err_f32(tf, ref, nq);
        printf("  teacher %.1e", et);
        CHECK_MSG(et <= 1e-5, "%s: kern_attention_causal differs from naive by %g", c->what, et);
        double *of64 = malloc(sizeof(double) * nq);
        for (size_t i = 0; i < nq; i++) of64[i] = tf[i];
        double es = rel_err_f32(of, of64, nq);
        CHECK_MSG(es <= 1e-5, "%s: SWA f32 differs from kern_attention_causal by %g", c->what, es);
        free(of64), free(tf), free(ts);
    }

    /* backward f64 against finite differences of L = sum(out * dout) */
    double *dq = calloc(nq, sizeof(double)), *dk = calloc(nkv, sizeof(double));
    double *dv = calloc(nkv, sizeof(double));
    kern_swa_bwd_f64(dq, dk, dv, D.dout, D.q, D.k, D.v, D.out, D.lse, T, H, G, d, W, S, D.scratch);
    double eq = gc_fd_check(D.q, dq, nq, swa_loss, &D, 600, r);
    double ek = gc_fd_check(D.k, dk, nkv, swa_loss, &D, 600, r);
    double ev = gc_fd_check(D.v, dv, nkv, swa_loss, &D, 600, r);
    printf("\n    bwd f64 vs FD: dq %.1e dk %.1e dv %.1e", eq, ek, ev);
    CHECK_MSG(eq <= 1e-6 && ek <= 1e-6 && ev <= 1e-6, "%s: FD dq %g dk %g dv %g", c->what, eq, ek,
              ev);

    /* f32 backward against f64 (same inputs; forward's out/lse of each precision) */
    float *dqf = calloc(nq, sizeof(float)), *dkf = calloc(nkv, sizeof(float));
    float *dvf = calloc(nkv, sizeof(float));
    kern_swa_bwd_f32(dqf, dkf, dvf, dof, qf, kf, vf, of, lf, T, H, G, d, W, S, sf);
    double fq = rel_err_f32(dqf, dq, nq), fk = rel_err_f32(dkf, dk, nkv);
    double fv = rel_err_f32(dvf, dv, nkv);
    printf("   bwd f32 vs f64: dq %.1e dk %.1e dv %.1e\n", fq, fk, fv);
    CHECK_MSG(fq <= 1e-4 && fk <= 1e-4 && fv <= 1e-4, "%s: f32 bwd dq %g dk %g dv %g", c->what, fq,
              fk, fv);

    /* backward adds: a second call doubles the gradients (forward again: FD left out perturbed) */
    kern_swa_fwd_f64(D.out, D.lse, D.q, D.k, D.v, T, H, G, d, W, S, D.scratch);
    double *dq2 = malloc(sizeof(double) * nq);
    memcpy(dq2, dq, sizeof(double) * nq);
    for (size_t i = 0; i < nq; i++) dq2[i] *= 2;
    kern_swa_bwd_f64(dq, dk, dv, D.dout, D.q, D.k, D.v, D.out, D.lse, T, H, G, d, W, S, D.scratch);
    CHECK_MSG(rel_err_f64(dq, dq2, nq) <= 1e-14, "%s: backward does not accumulate", c->what);

    free(dq2), free(dq), free(dk), free(dv), free(dqf), free(dkf), free(dvf);
    free(ref), free(ref_lse), free(qf), free(kf), free(vf), free(dof), free(of), free(lf), free(sf);
    swa_data_free(&D);
}

/* Push every token into sinks + ring, step, and compare with the full forward row by row. */
static void check_step(const swa_case *c, xd_rng *r) {
    int T = c->T, H = c->H, G = c->G, d = c->d, W = c->W, S = c->S;
    swa_data D;
    swa_data_init(&D, c, r);
    kern_swa_fwd_f64(D.out, D.lse, D.q, D.k, D.v, T, H, G, d, W, S, D.scratch);
    size_t row = (size_t)G * d, qrow = (size_t)H * d;
    double *sk = calloc((size_t)S * row + 1, sizeof(double)),
           *sv = calloc((size_t)S * row + 1, sizeof(double));
    double *rk = calloc((size_t)W * row, sizeof(double)),
           *rv = calloc((size_t)W * row, sizeof(double));
    double *step = malloc(sizeof(double) * D.nq);
    float *qf = gc_to_f32(D.q, D.nq), *kf = gc_to_f32(D.k, D.nkv), *vf = gc_to_f32(D.v, D.nkv);
    float *skf = calloc((size_t)S * row + 1, sizeof(float)),
          *svf = calloc((size_t)S * row + 1, sizeof(float));
    float *rkf = calloc((size_t)W * row, sizeof(float)),
          *rvf = calloc((size_t)W * row, sizeof(float));
    float *stepf = malloc(sizeof(float) * D.nq);
    for (int t = 0; t < T; t++) {
        kern_swa_cache_push_f64(sk, sv, rk, rv, D.k + t * row, D.v + t * row, t, G, d, W, S);
        kern_swa_step_f64(step + t * qrow, D.q + t * qrow, sk, sv, rk, rv, t, H, G, d, W, S);
        kern_swa_cache_push_f32(skf, svf, rkf, rvf, kf + t * row, vf + t * row, t, G, d, W, S);
        kern_swa_step_f32(stepf + t * qrow, qf + t * qrow, skf, svf, rkf, rvf, t, H, G, d, W, S);
    }
    double e64 = rel_err_f64(step, D.out, D.nq), e32 = rel_err_f32(stepf, D.out, D.nq);
    printf("step T=%d W=%d S=%d H=%d G=%d (ring wraps %d times): f64 %.1e  f32 %.1e\n", T, W, S, H,
           G, (T - 1) / W, e64, e32);
    CHECK_MSG(e64 <= 1e-12, "step f64 %g", e64);
    CHECK_MSG(e32 <= 1e-5, "step f32 %g", e32);
    free(sk), free(sv), free(rk), free(rv), free(step), free(qf), free(kf), free(vf);
    free(skf), free(svf), free(rkf), free(rvf), free(stepf);
    swa_data_free(&D);
}

int main(void) {
    xd_rng r;
    xd_rng_seed(&r, 20240611);
    const swa_case cases[] = {
        {20, 32, 0, 4, 2, 8, "W > T: full causal"},
        {20, 20, 2, 4, 2, 8, "W = T: full causal"},
        {20, 1, 0, 4, 2, 8, "W = 1, S = 0: self only"},
        {21, 1, 3, 4, 2, 8, "W = 1 with sinks"},
        {37, 5, 0, 4, 1, 8, "S = 0, G = 1"},
        {10, 3, 12, 4, 2, 8, "S >= T"},
        {25, 1 << 30, 0, 4, 2, 8, "W huge (scratch from T)"},
        {12, 2, 1 << 30, 2, 1, 8, "S huge"},
        {20, 12, 10, 4, 2, 8, "W + S > T"},
        {24, 6, 4, 4, 2, 8, "sinks + window, GQA"},
        {30, 7, 2, 4, 1, 8, "sinks + window, G = 1"},
        {90, 7, 4, 4, 4, 8, "G = H, many blocks"},
        {150, 100, 4, 4, 2, 8, "blocks of 64 inside W"},
        {140, 64, 3, 2, 1, 16, "W = block"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], &r);

    const swa_case steps[] = {
        {40, 5, 3, 4, 2, 8, ""}, {50, 4, 0, 4, 1, 8, ""},    {33, 1, 2, 4, 2, 8, ""},
        {30, 7, 5, 2, 2, 8, ""}, {200, 64, 4, 9, 3, 16, ""},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) check_step(&steps[i], &r);
    TEST_MAIN_END();
}
