/* kernels/train_ops_impl.h — the bodies of the training kernels, written once over `real`.
 * train_ops.c includes this file once per element type with real, KFN (name suffix), KGEMM,
 * KEXP, KLOG, KSQRT defined; hence no include guard. Sums of many terms (norms, losses) run
 * in double for both types, so the f32 variants lose nothing there. */

/* ---- linear ---------------------------------------------------------------------------- */

void KFN(kern_linear)(real *y, const real *x, const real *w, const real *b, int n, int in,
                      int out) {
    if (b) {
        for (int t = 0; t < n; t++) memcpy(y + (size_t)t * out, b, sizeof(real) * out);
    }
    KGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1, x, in, w, in, b ? 1 : 0, y,
          out);
}

void KFN(kern_linear_backward)(real *dx, real *dw, real *db, const real *dy, const real *x,
                               const real *w, int n, int in, int out, bool accumulate) {
    if (n <= 0) return;
    /* dx[n, in] = dy[n, out] W[out, in] */
    if (dx)
        KGEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1, dy, out, w, in,
              accumulate ? 1 : 0, dx, in);
    /* dW[out, in] += dy^T[out, n] x[n, in] */
    if (dw)
        KGEMM(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1, dy, out, x, in, 1, dw, in);
    /* Row by row rather than a GEMV against ones: contiguous and needs no scratch. */
    if (db)
        for (int t = 0; t < n; t++) {
            const real *r = dy + (size_t)t * out;
            for (int o = 0; o < out; o++) db[o] += r[o];
        }
}

/* ---- rmsnorm --------------------------------------------------------------------------- */

static real KFN(rms_inv)(const real *x, int d, real eps) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += (double)x[i] * x[i];
    return (real)(1.0 / sqrt(ss / d + eps));
}

void KFN(kern_rmsnorm)(real *y, const real *x, const real *weight, int n, int d, real eps) {
    for (int t = 0; t < n; t++) {
        const real *xr = x + (size_t)t * d;
        real *yr = y + (size_t)t * d;
        real r = KFN(rms_inv)(xr, d, eps);
        for (int i = 0; i < d; i++) yr[i] = xr[i] * r * weight[i];
    }
}

/* y_i = w_i x_i r with r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / d, so
 * dx_j = r w_j dy_j - (r^3 / d) x_j sum_i(w_i dy_i x_i), dw_i += r x_i dy_i. */
void KFN(kern_rmsnorm_backward)(real *dx, real *dweight, const real *dy, const real *x,
                                const real *weight, int n, int d, real eps, bool accumulate) {
    for (int t = 0; t < n; t++) {
        const real *xr = x + (size_t)t * d, *gr = dy + (size_t)t * d;
        real *dxr = dx + (size_t)t * d;
        real r = KFN(rms_inv)(xr, d, eps);
        double dot = 0;
        for (int i = 0; i < d; i++) dot += (double)weight[i] * gr[i] * xr[i];
        real c = (real)((double)r * r * r * dot / d);
        for (int i = 0; i < d; i++) {
            real g = r * weight[i] * gr[i] - c * xr[i];
            dxr[i] = accumulate ? dxr[i] + g : g;
        }
        if (dweight)
            for (int i = 0; i < d; i++) dweight[i] += r * xr[i] * gr[i];
    }
}

/* ---- rope ------------------------------------------------------------------------------ */

void KFN(kern_rope_tables)(real *cos_table, real *sin_table, int pos0, int n_pos, int half,
                           const double *inv_freq) {
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < half; i++) {
            double a = (double)(pos0 + p) * inv_freq[i];
            cos_table[(size_t)p * half + i] = (real)cos(a);
            sin_table[(size_t)p * half + i] = (real)sin(a);
        }
}

/* sign +1 rotates by the angle (forward), -1 by its negative: a rotation's transpose is its
 * inverse, so the backward is the same loop. */
static void KFN(rope_rotate)(real *x, int n, int heads, int head_dim, int pos0, const real *ct,
                             const real *st, real sign) {
    int half = head_dim / 2;
    for (int t = 0; t < n; t++) {
        const real *c = ct + (size_t)(pos0 + t) * half;
        const real *s = st + (size_t)(pos0 + t) * half;
        for (int h = 0; h < heads; h++) {
            real *v = x + ((size_t)t * heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                real a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void KFN(kern_rope)(real *x, int n, int heads, int head_dim, int pos0, const real *cos_table,
                    const real *sin_table) {
    KFN(rope_rotate)(x, n, heads, head_dim, pos0, cos_table, sin_table, 1);
}

void KFN(kern_rope_backward)(real *dx, int n, int heads, int head_dim, int pos0,
                             const real *cos_table, const real *sin_table) {
    KFN(rope_rotate)(dx, n, heads, head_dim, pos0, cos_table, sin_table, -1);
}

/* ---- swiglu ---------------------------------------------------------------------------- */

void KFN(kern_swiglu)(real *out, const real *gate, const real *up, size_t count) {
    for (size_t i = 0; i < count; i++) {
        real g = gate[i];
        out[i] = g / (1 + KEXP(-g)) * up[i];
    }
}

/* silu(g) = g s with s = sigmoid(g); silu'(g) = s (1 + g (1 - s)). For g -> -inf, exp
 * overflows to inf and s to 0, which still gives the right limits (no NaN). */
void KFN(kern_swiglu_backward)(real *dgate, real *dup, const real *dout, const real *gate,
                               const real *up, size_t count) {
    for (size_t i = 0; i < count; i++) {
        real g = gate[i], u = up[i], go = dout[i];
        real s = 1 / (1 + KEXP(-g));
        dgate[i] = go * u * s * (1 + g * (1 - s));
        dup[i] = go * g * s;
    }
}

/* ---- embedding ------------------------------------------------------------------------- */

static int KFN(check_ids)(const int *ids, int n, int vocab, const char *what, xd_err *e) {
    for (int t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= vocab)
            return xd_fail(e, "%s %d at row %d is outside the vocabulary [0, %d)", what, ids[t],
                           t, vocab);
    return 0;
}

int KFN(kern_embedding)(real *out, const real *table, const int *ids, int n, int vocab, int d,
                        xd_err *e) {
    if (KFN(check_ids)(ids, n, vocab, "token id", e) < 0) return -1;
    for (int t = 0; t < n; t++)
        memcpy(out + (size_t)t * d, table + (size_t)ids[t] * d, sizeof(real) * d);
    return 0;
}

int KFN(kern_embedding_backward)(real *dtable, const real *dout, const int *ids, int n,
                                 int vocab, int d, xd_err *e) {
    if (KFN(check_ids)(ids, n, vocab, "token id", e) < 0) return -1;
    for (int t = 0; t < n; t++) {
        real *row = dtable + (size_t)ids[t] * d;
        const real *g = dout + (size_t)t * d;
        for (int i = 0; i < d; i++) row[i] += g[i];
    }
    return 0;
}

/* ---- attention ------------------------------------------------------------------------- */

/* P[n, total] = masked softmax of scale * Q_h K_g^T; zero outside each query's keys. */
static void KFN(attn_probs)(real *p, const real *q, const real *k, int n, int pos0, int h,
                            int g, int n_heads, int n_kv_heads, int head_dim, int window) {
    int total = pos0 + n;
    int q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
    real scale = (real)(1.0 / sqrt((double)head_dim));
    KGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, total, head_dim, scale,
          q + (size_t)h * head_dim, q_stride, k + (size_t)g * head_dim, kv_stride, 0, p, total);
    for (int t = 0; t < n; t++) {
        real *row = p + (size_t)t * total;
        int pos = pos0 + t;
        int first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        real m = row[first];
        for (int j = first; j <= pos; j++) m = row[j] > m ? row[j] : m;
        double s = 0;
        for (int j = 0; j < total; j++) {
            if (j < first || j > pos) {
                row[j] = 0;
            } else {
                row[j] = KEXP(row[j] - m);
                s += row[j];
            }
        }
        real inv = (real)(1.0 / s);
        for (int j = first; j <= pos; j++) row[j] *= inv;
    }
}

void KFN(kern_attention_causal)(real *out, const real *q, const real *k, const real *v, int n,
                                int pos0, int n_heads, int n_kv_heads, int head_dim, int window,
                                real *scratch) {
    int total = pos0 + n, group = n_heads / n_kv_heads;
    int q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
    for (int h = 0; h < n_heads; h++) {
        int g = h / group;
        KFN(attn_probs)(scratch, q, k, n, pos0, h, g, n_heads, n_kv_heads, head_dim, window);
        /* out_h[n, d] = P[n, total] V_g[total, d] */
        KGEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, head_dim, total, 1, scratch, total,
              v + (size_t)g * head_dim, kv_stride, 0, out + (size_t)h * head_dim, q_stride);
    }
}

/* Per head, P is recomputed rather than saved (memory over time, as a checkpointed step):
 * dP = dO V^T, dV += P^T dO, dS = P * (dP - rowsum(P * dP)), dQ = scale dS K,
 * dK += scale dS^T Q. */
void KFN(kern_attention_causal_backward)(real *dq, real *dk, real *dv, const real *dout,
                                         const real *q, const real *k, const real *v, int n,
                                         int pos0, int n_heads, int n_kv_heads, int head_dim,
                                         int window, real *scratch) {
    int total = pos0 + n, group = n_heads / n_kv_heads;
    int q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
    real scale = (real)(1.0 / sqrt((double)head_dim));
    real *p = scratch, *dp = scratch + (size_t)n * total;
    memset(dk, 0, sizeof(real) * (size_t)total * kv_stride);
    memset(dv, 0, sizeof(real) * (size_t)total * kv_stride);
    for (int h = 0; h < n_heads; h++) {
        int g = h / group;
        const real *qh = q + (size_t)h * head_dim, *doh = dout + (size_t)h * head_dim;
        const real *kg = k + (size_t)g * head_dim, *vg = v + (size_t)g * head_dim;
        KFN(attn_probs)(p, q, k, n, pos0, h, g, n_heads, n_kv_heads, head_dim, window);
        KGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, total, head_dim, 1, doh, q_stride, vg,
              kv_stride, 0, dp, total);
        KGEMM(CblasRowMajor, CblasTrans, CblasNoTrans, total, head_dim, n, 1, p, total, doh,
              q_stride, 1, dv + (size_t)g * head_dim, kv_stride);
        for (int t = 0; t < n; t++) {
            real *pr = p + (size_t)t * total, *dr = dp + (size_t)t * total;
            double dot = 0;
            for (int j = 0; j < total; j++) dot += (double)pr[j] * dr[j];
            for (int j = 0; j < total; j++) dr[j] = pr[j] * (dr[j] - (real)dot);
        }
        KGEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, head_dim, total, scale, dp, total,
              kg, kv_stride, 0, dq + (size_t)h * head_dim, q_stride);
        KGEMM(CblasRowMajor, CblasTrans, CblasNoTrans, total, head_dim, n, scale, dp, total, qh,
              q_stride, 1, dk + (size_t)g * head_dim, kv_stride);
    }
}

/* ---- losses ---------------------------------------------------------------------------- */

/* Mean over every element, not per row: the loss is independent of how rows are split. */
double KFN(kern_mse)(real *dyhat, const real *yhat, const real *y, size_t count) {
    if (count == 0) return 0;
    double s = 0;
    real c = (real)(2.0 / (double)count);
    for (size_t i = 0; i < count; i++) {
        real diff = yhat[i] - y[i];
        s += (double)diff * diff;
        if (dyhat) dyhat[i] = c * diff;
    }
    return s / (double)count;
}

/* log sum_j exp(x_j) in one pass: a running max m and sum s of exp(x_j - m), rescaled when
 * the max grows, so no term overflows. Returns log(s) with *max = m (logsumexp = m + log s),
 * kept apart so that x_j - m - log(s) stays exact-ish in f32 even for logits near 1e4. */
static double KFN(row_logsumexp)(const real *x, int v, real *max) {
    real m = x[0];
    double s = 1;
    for (int j = 1; j < v; j++) {
        real xj = x[j];
        if (xj > m) {
            s = s * exp((double)m - (double)xj) + 1;
            m = xj;
        } else {
            s += KEXP(xj - m);
        }
    }
    *max = m;
    return log(s);
}

/* Log-softmax over k values (in double: k is small), into lp[k]; returns nothing else. */
static void KFN(log_softmax_k)(double *lp, const double *z, int k) {
    double m = z[0];
    for (int j = 1; j < k; j++) m = z[j] > m ? z[j] : m;
    double s = 0;
    for (int j = 0; j < k; j++) s += exp(z[j] - m);
    double lse = m + log(s);
    for (int j = 0; j < k; j++) lp[j] = z[j] - lse;
}

static int KFN(check_targets)(const int *targets, int n, int vocab, int *n_valid, xd_err *e) {
    int nv = 0;
    for (int t = 0; t < n; t++) {
        if (targets[t] == KERN_IGNORE_INDEX) continue;
        if (targets[t] < 0 || targets[t] >= vocab)
            return xd_fail(e, "target %d at row %d is outside the vocabulary [0, %d)",
                           targets[t], t, vocab);
        nv++;
    }
    *n_valid = nv;
    return 0;
}

/* The shared body of the three logit losses. Per row: gathers the student's logits at the
 * top-k indices first (dlogits may alias logits), the one-pass logsumexp for CE, then writes
 * the row's gradient: w_ce (softmax - onehot) / n_valid everywhere, plus w_kl (p_S - p_T) / n
 * at the k indices (+=, so a repeated index gets each of its terms). */
static int KFN(logit_losses)(double *ce, double *kl, real *dlogits, const real *logits,
                             const int *targets, const int *idx, const real *tval, int n,
                             int vocab, int k, double w_ce, double w_kl, xd_err *e) {
    if (n < 0 || vocab <= 0) return xd_fail(e, "bad logits shape [%d, %d]", n, vocab);
    int n_valid = 0;
    if (targets && KFN(check_targets)(targets, n, vocab, &n_valid, e) < 0) return -1;
    double *buf = NULL, *zs = NULL, *zt = NULL, *ls = NULL, *lt = NULL;
    if (idx) {
        if (k < 1 || k > vocab) return xd_fail(e, "top-k size %d outside [1, %d]", k, vocab);
        for (size_t i = 0; i < (size_t)n * k; i++)
            if (idx[i] < 0 || idx[i] >= vocab)
                return xd_fail(e, "top-k index %d at row %zu is outside the vocabulary [0, %d)",
                               idx[i], i / k, vocab);
        buf = xd_malloc(sizeof(double) * 4 * (size_t)k, e);
        if (!buf) return -1;
        zs = buf;
        zt = zs + k;
        ls = zt + k;
        lt = ls + k;
    }
    double ce_sum = 0, kl_sum = 0;
    double g_ce = n_valid > 0 ? w_ce / n_valid : 0, g_kl = n > 0 ? w_kl / n : 0;
    for (int t = 0; t < n; t++) {
        const real *x = logits + (size_t)t * vocab;
        real *dx = dlogits ? dlogits + (size_t)t * vocab : NULL;
        if (idx) {
            const int *ir = idx + (size_t)t * k;
            const real *tr = tval + (size_t)t * k;
            for (int j = 0; j < k; j++) {
                zs[j] = x[ir[j]];
                zt[j] = tr[j];
            }
            KFN(log_softmax_k)(ls, zs, k);
            KFN(log_softmax_k)(lt, zt, k);
            double r = 0;
            for (int j = 0; j < k; j++) r += exp(lt[j]) * (lt[j] - ls[j]);
            kl_sum += r;
        }
        int target = targets ? targets[t] : KERN_IGNORE_INDEX;
        if (target != KERN_IGNORE_INDEX) {
            real m;
            double log_s = KFN(row_logsumexp)(x, vocab, &m);
            ce_sum += ((double)m - (double)x[target]) + log_s;
            if (dx) {
                /* softmax = exp(x - m - log s): no separate normalising pass. */
                real ls_r = (real)log_s, gc = (real)g_ce;
                for (int j = 0; j < vocab; j++) dx[j] = gc * KEXP((x[j] - m) - ls_r);
                dx[target] -= gc;
            }
        } else if (dx) {
            memset(dx, 0, sizeof(real) * vocab);
        }
        if (idx && dx) {
            const int *ir = idx + (size_t)t * k;
            for (int j = 0; j < k; j++) dx[ir[j]] += (real)(g_kl * (exp(ls[j]) - exp(lt[j])));
        }
    }
    free(buf);
    if (ce) *ce = n_valid > 0 ? ce_sum / n_valid : 0;
    if (kl) *kl = n > 0 ? kl_sum / n : 0;
    return 0;
}

int KFN(kern_cross_entropy)(double *loss, real *dlogits, const real *logits, const int *targets,
                            int n, int vocab, xd_err *e) {
    return KFN(logit_losses)(loss, NULL, dlogits, logits, targets, NULL, NULL, n, vocab, 0, 1, 0,
                             e);
}

int KFN(kern_topk_kl)(double *loss, real *dlogits, const real *logits, const int *idx,
                      const real *teacher_val, int n, int vocab, int k, xd_err *e) {
    return KFN(logit_losses)(NULL, loss, dlogits, logits, NULL, idx, teacher_val, n, vocab, k, 0,
                             1, e);
}

int KFN(kern_distill_loss)(double *ce, double *kl, real *dlogits, const real *logits,
                           const int *targets, const int *idx, const real *teacher_val, int n,
                           int vocab, int k, double w_ce, double w_kl, xd_err *e) {
    return KFN(logit_losses)(ce, kl, dlogits, logits, targets, idx, teacher_val, n, vocab, k,
                             w_ce, w_kl, e);
}

/* ---- top-k selection ------------------------------------------------------------------- */

/* a ranks below b: smaller value, or equal value and higher index (ties go to the lower). */
static inline bool KFN(topk_below)(real va, int ia, real vb, int ib) {
    return va < vb || (va == vb && ia > ib);
}

/* Sift down in a heap whose root is its lowest-ranked entry. */
static void KFN(topk_sift)(int *idx, real *val, int size, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, low = i;
        if (l < size && KFN(topk_below)(val[l], idx[l], val[low], idx[low])) low = l;
        if (r < size && KFN(topk_below)(val[r], idx[r], val[low], idx[low])) low = r;
        if (low == i) return;
        int ti = idx[i];
        real tv = val[i];
        idx[i] = idx[low];
        val[i] = val[low];
        idx[low] = ti;
        val[low] = tv;
        i = low;
    }
}

/* A heap of the k best so far, lowest at the root: most entries lose to the root at one
 * comparison; the ones that win cost O(log k). Heap-sorting at the end gives best first. */
int KFN(kern_topk)(int *idx, real *val, const real *logits, int n, int vocab, int k, xd_err *e) {
    if (k < 1 || k > vocab) return xd_fail(e, "top-k size %d outside [1, %d]", k, vocab);
    for (int t = 0; t < n; t++) {
        const real *x = logits + (size_t)t * vocab;
        int *hi = idx + (size_t)t * k;
        real *hv = val + (size_t)t * k;
        for (int j = 0; j < k; j++) {
            hi[j] = j;
            hv[j] = x[j];
        }
        for (int j = k / 2 - 1; j >= 0; j--) KFN(topk_sift)(hi, hv, k, j);
        /* Later indices only win on a strictly larger value: on a tie the kept one is lower. */
        for (int j = k; j < vocab; j++)
            if (x[j] > hv[0]) {
                hi[0] = j;
                hv[0] = x[j];
                KFN(topk_sift)(hi, hv, k, 0);
            }
        for (int size = k; size > 1; size--) {
            int ti = hi[0];
            real tv = hv[0];
            hi[0] = hi[size - 1];
            hv[0] = hv[size - 1];
            hi[size - 1] = ti;
            hv[size - 1] = tv;
            KFN(topk_sift)(hi, hv, size - 1, 0);
        }
    }
    return 0;
}
