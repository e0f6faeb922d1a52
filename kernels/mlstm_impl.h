/* kernels/mlstm_impl.h — the body of the mLSTM kernels, written once for both element types.
 * mlstm.c includes it once per type with `real`, KFN(name), GEMM (cblas_?gemm) and EXP defined;
 * there is no include guard on purpose. All arithmetic, states and sums included, is in `real`.
 *
 * Chunk k covers tokens t0 .. t0+Lc-1. With a_j = sum_{r=t0..t0+j} logf_r, the state entering
 * the chunk (stabilised at m_{t0-1}) weighs alpha_j = exp(m_{t0-1} + a_j - m_j) at local time
 * j, and token s of the chunk weighs W[j][s] = exp(itilde_s + sum_{r=s+1..j} logf_r - m_j):
 *     num_j = alpha_j C^T q_j + sum_s W[j][s] (q_j.k_s) v_s,
 *     den_j = alpha_j q_j.n + sum_s W[j][s] (q_j.k_s),      h_j = num_j / (den_j + eps),
 * and the next state is alpha_{Lc-1} (C, n) + sum_s W[Lc-1][s] (k_s v_s^T, k_s). */

/* m_t = max(logf_t + m_{t-1}, itilde_t) from m_{-1} = -inf: the same expression as the step
 * form, so both forms get the same bits and eps enters identically. */
static void KFN(mlstm_running_max)(int T, const real *itilde, const real *logf, real *m) {
    real prev = (real)-INFINITY;
    for (int t = 0; t < T; t++) {
        real a = logf[t] + prev;
        prev = a > itilde[t] ? a : itilde[t];
        m[t] = prev;
    }
}

/* W [Lc x Lc] (row stride L, zero above the diagonal) and alpha [Lc] of one chunk. The log
 * decays are running sums over at most L terms (drow[s] = sum_{r=s+1..j} logf_r), not
 * differences of a long cumulative sum, so they keep their precision in f32. */
static void KFN(mlstm_decay)(int t0, int Lc, int L, const real *itilde, const real *logf,
                             const real *m, real *W, real *alpha, real *drow) {
    real m_in = t0 > 0 ? m[t0 - 1] : (real)-INFINITY, a = 0;
    for (int j = 0; j < Lc; j++) {
        real lf = logf[t0 + j], mj = m[t0 + j];
        real *w = W + (size_t)j * L;
        a += lf;
        alpha[j] = t0 > 0 ? EXP(m_in + a - mj) : 0;
        for (int s = 0; s < j; s++) {
            drow[s] += lf;
            w[s] = EXP(itilde[t0 + s] + drow[s] - mj);
        }
        drow[j] = 0;
        w[j] = EXP(itilde[t0 + j] - mj);
        for (int s = j + 1; s < Lc; s++) w[s] = 0;
    }
}

typedef struct KFN(mlstm_scratch) {
    real *W, *P, *G; /* [L x L] */
    real *dnum;      /* [L x dv] */
    real *tmp;       /* [L x max(dk, dv)] */
    real *E, *e;     /* gradient of the state leaving the chunk: [dk x dv], [dk] */
    real *alpha, *drow, *dden, *dlogu, *dloga; /* [L] each */
} KFN(mlstm_scratch);

/* Cuts scratch in the order kern_mlstm_scratch_len counts it. */
static KFN(mlstm_scratch) KFN(mlstm_carve)(real *p, int L, int dk, int dv) {
    KFN(mlstm_scratch) s;
    size_t LL = (size_t)L * L;
    s.W = p, p += LL;
    s.P = p, p += LL;
    s.G = p, p += LL;
    s.dnum = p, p += (size_t)L * dv;
    s.tmp = p, p += (size_t)L * (dk > dv ? dk : dv);
    s.E = p, p += (size_t)dk * dv;
    s.e = p, p += dk;
    s.alpha = p, p += L;
    s.drow = p, p += L;
    s.dden = p, p += L;
    s.dlogu = p, p += L;
    s.dloga = p;
    return s;
}

static void KFN(mlstm_fwd_one)(const kern_mlstm_dims *d, const real *q, const real *k,
                               const real *v, const real *itilde, const real *logf, real *h,
                               real *saved, KFN(mlstm_scratch) * s, KFN(kern_mlstm_state) * fin) {
    const int T = d->T, L = d->L, dk = d->dk, dv = d->dv;
    const int nch = (T + L - 1) / L;
    const real eps = (real)d->eps;
    const size_t ssz = (size_t)dk * dv + dk;
    real *m = saved, *den = saved + T, *states = saved + 2 * (size_t)T;
    KFN(mlstm_running_max)(T, itilde, logf, m);
    for (int c = 0; c < nch; c++) {
        const int t0 = c * L, Lc = T - t0 < L ? T - t0 : L;
        const real *Q = q + (size_t)t0 * dk, *K = k + (size_t)t0 * dk, *V = v + (size_t)t0 * dv;
        real *H = h + (size_t)t0 * dv;
        /* The state entering chunk c >= 1 is saved; chunk 0 starts from zero. */
        const real *Cin = c > 0 ? states + (size_t)(c - 1) * ssz : NULL;
        const real *nin = Cin ? Cin + (size_t)dk * dv : NULL;
        KFN(mlstm_decay)(t0, Lc, L, itilde, logf, m, s->W, s->alpha, s->drow);

        /* P = W o (Q K^T), den_j = its row sums. */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Lc, Lc, dk, 1, Q, dk, K, dk, 0, s->P, L);
        for (int j = 0; j < Lc; j++) {
            real *p = s->P + (size_t)j * L;
            const real *w = s->W + (size_t)j * L;
            real sum = 0;
            for (int i = 0; i <= j; i++) {
                p[i] *= w[i];
                sum += p[i];
            }
            for (int i = j + 1; i < Lc; i++) p[i] = 0;
            den[t0 + j] = sum;
        }
        if (Cin) {
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Lc, dv, dk, 1, Q, dk, Cin, dv, 0, H,
                 dv);
            for (int j = 0; j < Lc; j++) {
                const real *qj = Q + (size_t)j * dk;
                real qn = 0;
                for (int a = 0; a < dk; a++) qn += qj[a] * nin[a];
                den[t0 + j] += s->alpha[j] * qn;
                for (int i = 0; i < dv; i++) H[(size_t)j * dv + i] *= s->alpha[j];
            }
        }
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Lc, dv, Lc, 1, s->P, L, V, dv, Cin ? 1 : 0,
             H, dv);
        for (int j = 0; j < Lc; j++) {
            real r = 1 / (den[t0 + j] + eps);
            for (int i = 0; i < dv; i++) H[(size_t)j * dv + i] *= r;
        }

        /* The state leaving the chunk: saved for the next one, or the final state. */
        real *Cout = c + 1 < nch ? states + (size_t)c * ssz : fin ? fin->C : NULL;
        if (!Cout) continue;
        real *nout = c + 1 < nch ? Cout + (size_t)dk * dv : fin->n;
        const real ae = s->alpha[Lc - 1], *u = s->W + (size_t)(Lc - 1) * L;
        for (size_t i = 0; i < (size_t)dk * dv; i++) Cout[i] = Cin ? ae * Cin[i] : 0;
        for (int a = 0; a < dk; a++) nout[a] = nin ? ae * nin[a] : 0;
        for (int j = 0; j < Lc; j++) /* tmp = diag(u) K */
            for (int a = 0; a < dk; a++) {
                real x = u[j] * K[(size_t)j * dk + a];
                s->tmp[(size_t)j * dk + a] = x;
                nout[a] += x;
            }
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, dk, dv, Lc, 1, s->tmp, dk, V, dv, 1, Cout,
             dv);
        if (c + 1 == nch) fin->m = m[T - 1];
    }
}

void KFN(kern_mlstm_fwd)(const kern_mlstm_dims *d, const real *phi_q, const real *phi_k,
                         const real *v, const real *itilde, const real *logf, real *h, real *saved,
                         real *scratch, KFN(kern_mlstm_state) * final) {
    const size_t T = (size_t)d->T, sl = kern_mlstm_saved_len(d->T, d->L, d->dk, d->dv);
    KFN(mlstm_scratch) s = KFN(mlstm_carve)(scratch, d->L, d->dk, d->dv);
    for (int b = 0; b < d->B; b++) {
        KFN(kern_mlstm_state) *fin = final ? final + b : NULL;
        if (fin && d->T == 0) KFN(kern_mlstm_state_init)(fin, fin->C, fin->n, d->dk, d->dv);
        const size_t qs = T * d->dk, vs = T * d->dv;
        KFN(mlstm_fwd_one)(d, phi_q + b * qs, phi_k + b * qs, v + b * vs, itilde + b * T,
                           logf + b * T, h + b * vs, saved + b * sl, &s, fin);
    }
}

static void KFN(mlstm_bwd_one)(const kern_mlstm_dims *d, const real *q, const real *k,
                               const real *v, const real *itilde, const real *logf, const real *h,
                               const real *dh, const real *saved, KFN(mlstm_scratch) * s, real *gq,
                               real *gk, real *gv, real *git, real *glf) {
    /* gq, gk, gv, git, glf: the gradients of q, k, v, itilde, logf (overwritten). */
    const int T = d->T, L = d->L, dk = d->dk, dv = d->dv;
    const int nch = (T + L - 1) / L;
    const real eps = (real)d->eps;
    const size_t ssz = (size_t)dk * dv + dk;
    const real *m = saved, *den = saved + T, *states = saved + 2 * (size_t)T;
    memset(gq, 0, sizeof(real) * T * dk);
    memset(gk, 0, sizeof(real) * T * dk);
    memset(gv, 0, sizeof(real) * T * dv);
    memset(git, 0, sizeof(real) * T);
    memset(glf, 0, sizeof(real) * T);
    /* E, e: gradient of the (stabilised) state leaving the current chunk. The stabilisers
     * cancel between a state and the weights applied to it, so with every m_t held fixed no
     * gradient reaches them here; the m path is added at the end. */
    memset(s->E, 0, sizeof(real) * dk * dv);
    memset(s->e, 0, sizeof(real) * dk);

    for (int c = nch - 1; c >= 0; c--) {
        const int t0 = c * L, Lc = T - t0 < L ? T - t0 : L;
        const size_t o = (size_t)t0;
        const real *Q = q + o * dk, *K = k + o * dk, *V = v + o * dv;
        real *dQ = gq + o * dk, *dK = gk + o * dk, *dV = gv + o * dv;
        const real *Cin = c > 0 ? states + (size_t)(c - 1) * ssz : NULL;
        const real *nin = Cin ? Cin + (size_t)dk * dv : NULL;
        const bool has_E = c + 1 < nch; /* the last chunk's state feeds nothing */
        KFN(mlstm_decay)(t0, Lc, L, itilde, logf, m, s->W, s->alpha, s->drow);
        const real *u = s->W + (size_t)(Lc - 1) * L, ae = s->alpha[Lc - 1];

        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Lc, Lc, dk, 1, Q, dk, K, dk, 0, s->P, L);
        for (int j = 0; j < Lc; j++)
            for (int i = 0; i < Lc; i++) s->P[(size_t)j * L + i] *= s->W[(size_t)j * L + i];

        /* h = num / (den + eps): dnum = dh / (den + eps), dden = -(dh . h) / (den + eps). */
        for (int j = 0; j < Lc; j++) {
            const real *dhj = dh + (o + j) * dv, *hj = h + (o + j) * dv;
            real r = 1 / (den[t0 + j] + eps), dot = 0;
            for (int i = 0; i < dv; i++) {
                s->dnum[(size_t)j * dv + i] = dhj[i] * r;
                dot += dhj[i] * hj[i];
            }
            s->dden[j] = -dot * r;
        }

        /* G[j][s] = dnum_j . v_s + dden_j: the gradient of P[j][s]. */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Lc, Lc, dv, 1, s->dnum, dv, V, dv, 0, s->G,
             L);
        for (int j = 0; j < Lc; j++)
            for (int i = 0; i <= j; i++) s->G[(size_t)j * L + i] += s->dden[j];
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, Lc, dv, Lc, 1, s->P, L, s->dnum, dv, 0, dV,
             dv);

        /* The leaving state sum_s u_s (k_s v_s^T, k_s): gradients of k, v and log u_s. */
        for (int j = 0; j < Lc; j++) s->dlogu[j] = 0;
        real dlog_ae = 0;
        if (has_E) {
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Lc, dv, dk, 1, K, dk, s->E, dv, 0,
                 s->tmp, dv); /* tmp = K E */
            for (int j = 0; j < Lc; j++) {
                const real *ke = s->tmp + (size_t)j * dv, *vj = V + (size_t)j * dv;
                const real *kj = K + (size_t)j * dk;
                real x = 0;
                for (int i = 0; i < dv; i++) {
                    x += ke[i] * vj[i];
                    dV[(size_t)j * dv + i] += u[j] * ke[i];
                }
                for (int a = 0; a < dk; a++) x += kj[a] * s->e[a];
                s->dlogu[j] = u[j] * x;
            }
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Lc, dk, dv, 1, V, dv, s->E, dv, 0, s->tmp,
                 dk); /* tmp = V E^T */
            for (int j = 0; j < Lc; j++)
                for (int a = 0; a < dk; a++)
                    dK[(size_t)j * dk + a] += u[j] * (s->tmp[(size_t)j * dk + a] + s->e[a]);
            if (Cin) {
                real x = 0;
                for (size_t i = 0; i < (size_t)dk * dv; i++) x += Cin[i] * s->E[i];
                for (int a = 0; a < dk; a++) x += nin[a] * s->e[a];
                dlog_ae = ae * x;
            }
        }

        /* A[j][s] = P o G is the gradient of log W[j][s] = itilde_s + sum_{r=s+1..j} logf_r
         * - m_j; log u_s = log W[Lc-1][s] adds dlogu_s. Column s reaches itilde_s, and logf_r
         * gets the sum over j >= r of column s < r: a suffix sum down each column. */
        for (int i = 0; i < Lc; i++) {
            real acc = s->dlogu[i], col = s->dlogu[i];
            for (int j = Lc - 1; j > i; j--) {
                real a = s->P[(size_t)j * L + i] * s->G[(size_t)j * L + i];
                acc += a;
                col += a;
                glf[t0 + j] += acc;
            }
            git[t0 + i] += col + s->P[(size_t)i * L + i] * s->G[(size_t)i * L + i];
        }

        /* dS = W o G; dQ = dS K, dK += dS^T Q. */
        for (int j = 0; j < Lc; j++) /* W is 0 above the diagonal: masks G's upper part */
            for (int i = 0; i < Lc; i++) s->G[(size_t)j * L + i] *= s->W[(size_t)j * L + i];
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, Lc, dk, Lc, 1, s->G, L, K, dk, 0, dQ, dk);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, Lc, dk, Lc, 1, s->G, L, Q, dk, 1, dK, dk);

        if (!Cin) break; /* chunk 0: no entering state */

        /* Entering state, weight alpha_j: Y_j = C dnum_j + dden_j n, dq_j += alpha_j Y_j, and
         * log alpha_j = ... + sum_{r=t0..t0+j} logf_r gets alpha_j q_j . Y_j. */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, Lc, dk, dv, 1, s->dnum, dv, Cin, dv, 0,
             s->tmp, dk);
        for (int j = 0; j < Lc; j++) {
            real *y = s->tmp + (size_t)j * dk, x = 0;
            const real *qj = Q + (size_t)j * dk;
            for (int a = 0; a < dk; a++) {
                y[a] += s->dden[j] * nin[a];
                x += qj[a] * y[a];
                dQ[(size_t)j * dk + a] += s->alpha[j] * y[a];
            }
            s->dloga[j] = s->alpha[j] * x;
        }
        /* The leaving state holds alpha_{Lc-1} times the entering one: its log weight sums
         * the whole chunk's logf. */
        real acc = dlog_ae;
        for (int j = Lc - 1; j >= 0; j--) {
            acc += s->dloga[j];
            glf[t0 + j] += acc;
        }

        /* Gradient of the entering state: E <- ae E + Q^T diag(alpha) dnum, same for e. */
        for (size_t i = 0; i < (size_t)dk * dv; i++) s->E[i] *= ae;
        for (int a = 0; a < dk; a++) s->e[a] *= ae;
        for (int j = 0; j < Lc; j++) {
            const real aj = s->alpha[j], *qj = Q + (size_t)j * dk;
            for (int i = 0; i < dv; i++) s->dnum[(size_t)j * dv + i] *= aj;
            for (int a = 0; a < dk; a++) s->e[a] += aj * s->dden[j] * qj[a];
        }
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, dk, dv, Lc, 1, Q, dk, s->dnum, dv, 1, s->E,
             dv);
    }

    /* The m path: h_t depends on m_t only through eps, dh_t/dm_t = -h_t eps / (den_t + eps).
     * m_t is a max, so its gradient follows the branch the forward took: to m_{t-1} and logf_t
     * when the forget branch won, else to itilde_t. */
    real g = 0;
    for (int t = T - 1; t >= 0; t--) {
        const real *dht = dh + (size_t)t * dv, *ht = h + (size_t)t * dv;
        real dot = 0;
        for (int i = 0; i < dv; i++) dot += dht[i] * ht[i];
        g += -eps * dot / (den[t] + eps);
        real a = logf[t] + (t > 0 ? m[t - 1] : (real)-INFINITY);
        if (a > itilde[t]) {
            glf[t] += g;
        } else {
            git[t] += g;
            g = 0;
        }
    }
}

void KFN(kern_mlstm_bwd)(const kern_mlstm_dims *d, const real *phi_q, const real *phi_k,
                         const real *v, const real *itilde, const real *logf, const real *h,
                         const real *dh, const real *saved, real *scratch, real *d_q, real *d_k,
                         real *d_v, real *d_itilde, real *d_logf) {
    const size_t T = (size_t)d->T, sl = kern_mlstm_saved_len(d->T, d->L, d->dk, d->dv);
    const size_t qs = T * d->dk, vs = T * d->dv;
    KFN(mlstm_scratch) s = KFN(mlstm_carve)(scratch, d->L, d->dk, d->dv);
    for (int b = 0; b < d->B; b++)
        KFN(mlstm_bwd_one)(d, phi_q + b * qs, phi_k + b * qs, v + b * vs, itilde + b * T,
                           logf + b * T, h + b * vs, dh + b * vs, saved + b * sl, &s,
                           d_q + b * qs, d_k + b * qs, d_v + b * vs, d_itilde + b * T,
                           d_logf + b * T);
}

void KFN(kern_mlstm_state_init)(KFN(kern_mlstm_state) * s, real *C, real *n, int dk, int dv) {
    s->C = C;
    s->n = n;
    s->dk = dk;
    s->dv = dv;
    s->m = (real)-INFINITY;
    memset(C, 0, sizeof(real) * dk * dv);
    memset(n, 0, sizeof(real) * dk);
}

void KFN(kern_mlstm_step)(KFN(kern_mlstm_state) * s, const real *phi_q, const real *phi_k,
                          const real *v, real itilde, real logf, real eps, real *h) {
    const int dk = s->dk, dv = s->dv;
    real a = logf + s->m, m = a > itilde ? a : itilde;
    real fg = EXP(a - m), ig = EXP(itilde - m), qn = 0;
    s->m = m;
    for (int i = 0; i < dv; i++) h[i] = 0;
    for (int r = 0; r < dk; r++) {
        real *Cr = s->C + (size_t)r * dv, kr = ig * phi_k[r];
        s->n[r] = fg * s->n[r] + kr;
        qn += phi_q[r] * s->n[r];
        for (int i = 0; i < dv; i++) {
            Cr[i] = fg * Cr[i] + kr * v[i];
            h[i] += phi_q[r] * Cr[i];
        }
    }
    real r = 1 / (qn + eps);
    for (int i = 0; i < dv; i++) h[i] *= r;
}
