/* kernels/student_ops_impl.h — bodies of the student ops, generic over the element type.
 * student_ops.c includes this once per type with `real`, KFN(name) and GEMM defined; no include
 * guard on purpose. Scalar helpers (so_logsigmoid, so_sigmoid, FM_BLOCK) live in student_ops.c. */

void KFN(kern_feature_map_fwd)(real *phi, int ldp, const real *x, int ldx, const real *M, int T,
                               int d) {
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d, d, (real)1, x, ldx, M, d, (real)0, phi,
         ldp);
    for (int t = 0; t < T; t++) {
        real *r = phi + (size_t)t * ldp;
        double m = -INFINITY, s = 0;
        for (int j = 0; j < d; j++) m = r[j] > m ? r[j] : m;
        for (int j = 0; j < d; j++) {
            double e = exp((double)r[j] - m);
            r[j] = (real)e;
            s += e;
        }
        for (int j = 0; j < d; j++) r[j] = (real)(r[j] / s);
    }
}

/* Softmax backward dz = phi * (dphi - <dphi, phi>) for a block of rows, then dx += dz M^T and
 * dM += x^T dz as GEMMs over the block. */
void KFN(kern_feature_map_bwd)(real *dx, real *dM, const real *dphi, const real *phi, int ldp,
                               const real *x, int ldx, const real *M, int T, int d, real *scratch) {
    for (int t0 = 0; t0 < T; t0 += FM_BLOCK) {
        int nb = T - t0 < FM_BLOCK ? T - t0 : FM_BLOCK;
        for (int i = 0; i < nb; i++) {
            const real *p = phi + (size_t)(t0 + i) * ldp, *g = dphi + (size_t)(t0 + i) * ldp;
            real *dz = scratch + (size_t)i * d;
            double dot = 0;
            for (int j = 0; j < d; j++) dot += (double)g[j] * p[j];
            for (int j = 0; j < d; j++) dz[j] = (real)(p[j] * (g[j] - dot));
        }
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nb, d, d, (real)1, scratch, d, M, d, (real)1,
             dx + (size_t)t0 * ldx, ldx);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, nb, (real)1, x + (size_t)t0 * ldx, ldx,
             scratch, d, (real)1, dM, d);
    }
}

/* y[T, H] = x[T, D] w[D, H] + b */
static void KFN(so_affine)(real *y, const real *x, const real *w, const real *b, int T, int D,
                           int H) {
    for (int t = 0; t < T; t++) memcpy(y + (size_t)t * H, b, sizeof(real) * H);
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, H, D, (real)1, x, D, w, H, (real)1, y, H);
}

void KFN(kern_gates_fwd)(real *itilde, real *log_f, const real *x, const real *w_i, const real *b_i,
                         const real *w_f, const real *b_f, int T, int D, int H) {
    KFN(so_affine)(itilde, x, w_i, b_i, T, D, H);
    KFN(so_affine)(log_f, x, w_f, b_f, T, D, H);
    for (size_t n = 0; n < (size_t)T * H; n++) log_f[n] = (real)so_logsigmoid(log_f[n]);
}

/* d logsigmoid(z)/dz = sigmoid(-z) = 1 - exp(log_f) = -expm1(log_f): accurate at both ends
 * (~e^-z for large z, ~1 for very negative z) without keeping z. Loops h outermost so each
 * (t, h) gradient is computed once; x, dx rows are then walked with stride 1. */
void KFN(kern_gates_bwd)(real *dx, real *dw_i, real *db_i, real *dw_f, real *db_f,
                         const real *ditilde, const real *dlog_f, const real *x, const real *log_f,
                         const real *w_i, const real *w_f, int T, int D, int H) {
    for (int h = 0; h < H; h++) {
        double sbi = 0, sbf = 0;
        for (int t = 0; t < T; t++) {
            size_t th = (size_t)t * H + h;
            real gi = ditilde[th];
            real gf = (real)(-(double)dlog_f[th] * expm1((double)log_f[th]));
            sbi += gi;
            sbf += gf;
            const real *xr = x + (size_t)t * D;
            real *dxr = dx + (size_t)t * D;
            for (int i = 0; i < D; i++) {
                size_t ih = (size_t)i * H + h;
                dxr[i] += w_i[ih] * gi + w_f[ih] * gf;
                dw_i[ih] += xr[i] * gi;
                dw_f[ih] += xr[i] * gf;
            }
        }
        db_i[h] += (real)sbi;
        db_f[h] += (real)sbf;
    }
}

void KFN(kern_output_gate_fwd)(real *o, const real *q, const real *k, const real *v,
                               const real *w_o, const real *b_o, int T, int H, int G, int d) {
    int group = H / G;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / group;
            const real *qh = q + ((size_t)t * H + h) * d;
            const real *kg = k + ((size_t)t * G + g) * d, *vg = v + ((size_t)t * G + g) * d;
            const real *w = w_o + (size_t)h * 3 * d;
            double z = b_o[h];
            for (int c = 0; c < d; c++)
                z += (double)w[c] * qh[c] + (double)w[d + c] * kg[c] + (double)w[2 * d + c] * vg[c];
            o[(size_t)t * H + h] = (real)so_sigmoid(z);
        }
}

void KFN(kern_output_gate_bwd)(real *dq, real *dk, real *dv, real *dw_o, real *db_o,
                               const real *d_o, const real *o, const real *q, const real *k,
                               const real *v, const real *w_o, int T, int H, int G, int d) {
    int group = H / G;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / group;
            real oo = o[(size_t)t * H + h];
            real dz = d_o[(size_t)t * H + h] * oo * (1 - oo);
            size_t qo = ((size_t)t * H + h) * d, ko = ((size_t)t * G + g) * d;
            const real *w = w_o + (size_t)h * 3 * d;
            real *dw = dw_o + (size_t)h * 3 * d;
            for (int c = 0; c < d; c++) {
                dq[qo + c] += dz * w[c];
                dk[ko + c] += dz * w[d + c];
                dv[ko + c] += dz * w[2 * d + c];
                dw[c] += dz * q[qo + c];
                dw[d + c] += dz * k[ko + c];
                dw[2 * d + c] += dz * v[ko + c];
            }
            db_o[h] += dz;
        }
}

void KFN(kern_mix_fwd)(real *yhat, const real *o, const real *hm, const real *yswa, int T, int H,
                       int d) {
    for (size_t th = 0; th < (size_t)T * H; th++) {
        real a = o[th];
        for (size_t c = th * d; c < (th + 1) * d; c++) yhat[c] = a * hm[c] + (1 - a) * yswa[c];
    }
}

void KFN(kern_mix_bwd)(real *d_o, real *dhm, real *dyswa, const real *dyhat, const real *o,
                       const real *hm, const real *yswa, int T, int H, int d) {
    for (size_t th = 0; th < (size_t)T * H; th++) {
        real a = o[th];
        double s = 0;
        for (size_t c = th * d; c < (th + 1) * d; c++) {
            s += (double)dyhat[c] * (hm[c] - yswa[c]);
            dhm[c] += a * dyhat[c];
            dyswa[c] += (1 - a) * dyhat[c];
        }
        d_o[th] += (real)s;
    }
}
