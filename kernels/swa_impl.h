/* kernels/swa_impl.h — bodies of the sliding-window + sink attention kernels, generic over the
 * element type. swa.c includes this once per type with `real`, KFN(name), GEMM and EXPR defined; no
 * include guard on purpose. Helpers shared by both types (swa_block, swa_span...) are in swa.c. */

/* Scores of query block [t0, t0+nq) of head h against the block's keys: the sink part
 * (keys 0..sp->ns-1) then the window part (keys sp->ws0..), into P[nq, sp->L], scaled. */
static void KFN(swa_scores)(real *P, const real *q, const real *k, int t0, int nq, int h, int g,
                            int H, int G, int d, const swa_span *sp) {
    int qs = H * d, ks = G * d;
    real scale = (real)(1.0 / sqrt((double)d));
    const real *qb = q + (size_t)t0 * qs + (size_t)h * d;
    if (sp->ns > 0)
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nq, sp->ns, d, scale, qb, qs,
             k + (size_t)g * d, ks, (real)0, P, sp->L);
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nq, sp->nw, d, scale, qb, qs,
         k + (size_t)sp->ws0 * ks + (size_t)g * d, ks, (real)0, P + sp->ns, sp->L);
}

void KFN(kern_swa_fwd)(real *out, real *lse, const real *q, const real *k, const real *v, int T,
                       int H, int G, int d, int W, int S, real *scratch) {
    swa_clamp(T, &W, &S);
    int qs = H * d, ks = G * d, group = H / G, bq = swa_block(W);
    real *P = scratch, *inv = scratch + (size_t)bq * swa_lmax(W, S);
    for (int h = 0; h < H; h++) {
        int g = h / group;
        for (int t0 = 0; t0 < T; t0 += bq) {
            int nq = T - t0 < bq ? T - t0 : bq;
            swa_span sp = swa_block_span(t0, nq, W, S);
            KFN(swa_scores)(P, q, k, t0, nq, h, g, H, G, d, &sp);
            for (int i = 0; i < nq; i++) {
                int t = t0 + i, a, b, e;
                swa_row_ranges(&sp, t, W, S, &a, &b, &e);
                real *row = P + (size_t)i * sp.L;
                double m = -INFINITY, s = 0;
                for (int c = 0; c < a; c++) m = row[c] > m ? row[c] : m;
                for (int c = b; c < e; c++) m = row[c] > m ? row[c] : m;
                /* unnormalised exp (in the kernel's type: expf is much cheaper), summed in double;
                 * the rows of out are divided by the sum after the GEMM */
                real mr = (real)m;
                for (int c = 0; c < a; c++) s += row[c] = EXPR(row[c] - mr);
                for (int c = a; c < b; c++) row[c] = 0;
                for (int c = b; c < e; c++) s += row[c] = EXPR(row[c] - mr);
                for (int c = e; c < sp.L; c++) row[c] = 0;
                inv[i] = (real)(1.0 / s);
                lse[(size_t)t * H + h] = (real)(m + log(s));
            }
            /* out_h[block] = P V over the two key ranges */
            real *ob = out + (size_t)t0 * qs + (size_t)h * d;
            if (sp.ns > 0)
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, sp.ns, (real)1, P, sp.L,
                     v + (size_t)g * d, ks, (real)0, ob, qs);
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, sp.nw, (real)1, P + sp.ns, sp.L,
                 v + (size_t)sp.ws0 * ks + (size_t)g * d, ks, sp.ns > 0 ? (real)1 : (real)0, ob,
                 qs);
            for (int i = 0; i < nq; i++)
                for (int c = 0; c < d; c++) ob[(size_t)i * qs + c] *= inv[i];
        }
    }
}

/* Flash-attention backward per query block: P is recomputed from the saved lse, then
 * dS = P * (dP - rowsum(dout * out)) with dP = dout V^T; dq += dS K, dk += dS^T q, dv += P^T dout
 * (the 1/sqrt(d) scale folded into the GEMMs for dq and dk). */
void KFN(kern_swa_bwd)(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k,
                       const real *v, const real *out, const real *lse, int T, int H, int G, int d,
                       int W, int S, real *scratch) {
    swa_clamp(T, &W, &S);
    int qs = H * d, ks = G * d, group = H / G, bq = swa_block(W);
    size_t lmax = swa_lmax(W, S);
    real *P = scratch, *dP = scratch + (size_t)bq * lmax, *Di = dP + (size_t)bq * lmax;
    real scale = (real)(1.0 / sqrt((double)d));
    for (int h = 0; h < H; h++) {
        int g = h / group;
        for (int t0 = 0; t0 < T; t0 += bq) {
            int nq = T - t0 < bq ? T - t0 : bq;
            swa_span sp = swa_block_span(t0, nq, W, S);
            size_t boff = (size_t)t0 * qs + (size_t)h * d;
            const real *kg = k + (size_t)g * d, *vg = v + (size_t)g * d;
            const real *kw = k + (size_t)sp.ws0 * ks + (size_t)g * d;
            const real *vw = v + (size_t)sp.ws0 * ks + (size_t)g * d;
            real *dkg = dk + (size_t)g * d, *dvg = dv + (size_t)g * d;
            real *dkw = dk + (size_t)sp.ws0 * ks + (size_t)g * d;
            real *dvw = dv + (size_t)sp.ws0 * ks + (size_t)g * d;

            KFN(swa_scores)(P, q, k, t0, nq, h, g, H, G, d, &sp);
            for (int i = 0; i < nq; i++) {
                int t = t0 + i, a, b, e;
                swa_row_ranges(&sp, t, W, S, &a, &b, &e);
                real *row = P + (size_t)i * sp.L;
                real l = lse[(size_t)t * H + h];
                for (int c = 0; c < a; c++) row[c] = EXPR(row[c] - l);
                for (int c = a; c < b; c++) row[c] = 0;
                for (int c = b; c < e; c++) row[c] = EXPR(row[c] - l);
                for (int c = e; c < sp.L; c++) row[c] = 0;
                const real *o = out + boff + (size_t)i * qs, *go = dout + boff + (size_t)i * qs;
                double acc = 0;
                for (int c = 0; c < d; c++) acc += (double)o[c] * go[c];
                Di[i] = (real)acc;
            }
            /* dP = dout V^T */
            if (sp.ns > 0)
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nq, sp.ns, d, (real)1, dout + boff,
                     qs, vg, ks, (real)0, dP, sp.L);
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, nq, sp.nw, d, (real)1, dout + boff, qs,
                 vw, ks, (real)0, dP + sp.ns, sp.L);
            /* dv += P^T dout (before P is reused) */
            if (sp.ns > 0)
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, sp.ns, d, nq, (real)1, P, sp.L,
                     dout + boff, qs, (real)1, dvg, ks);
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, sp.nw, d, nq, (real)1, P + sp.ns, sp.L,
                 dout + boff, qs, (real)1, dvw, ks);
            /* dS = P * (dP - Di), in dP; masked entries have P = 0 and stay 0 */
            for (int i = 0; i < nq; i++) {
                real *pr = P + (size_t)i * sp.L, *dr = dP + (size_t)i * sp.L;
                for (int c = 0; c < sp.L; c++) dr[c] = pr[c] * (dr[c] - Di[i]);
            }
            /* dq += scale dS K */
            if (sp.ns > 0)
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, sp.ns, scale, dP, sp.L, kg,
                     ks, (real)1, dq + boff, qs);
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, d, sp.nw, scale, dP + sp.ns, sp.L,
                 kw, ks, (real)1, dq + boff, qs);
            /* dk += scale dS^T q */
            if (sp.ns > 0)
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, sp.ns, d, nq, scale, dP, sp.L,
                     q + boff, qs, (real)1, dkg, ks);
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, sp.nw, d, nq, scale, dP + sp.ns, sp.L,
                 q + boff, qs, (real)1, dkw, ks);
        }
    }
}

void KFN(kern_swa_cache_push)(real *sink_k, real *sink_v, real *ring_k, real *ring_v,
                              const real *k_t, const real *v_t, int pos, int G, int d, int W,
                              int S) {
    size_t row = (size_t)G * d;
    if (pos < S) {
        memcpy(sink_k + (size_t)pos * row, k_t, sizeof(real) * row);
        memcpy(sink_v + (size_t)pos * row, v_t, sizeof(real) * row);
    }
    memcpy(ring_k + (size_t)(pos % W) * row, k_t, sizeof(real) * row);
    memcpy(ring_v + (size_t)(pos % W) * row, v_t, sizeof(real) * row);
}

/* One key of the step: online softmax (running max m, running sum *l), accumulated into acc. */
static void KFN(swa_step_key)(real *acc, double *m, double *l, const real *qh, const real *key,
                              const real *val, int d, double scale) {
    double s = 0;
    for (int c = 0; c < d; c++) s += (double)qh[c] * key[c];
    s *= scale;
    if (s > *m) {
        /* a new maximum: rescale what was accumulated so far (exp(-inf) = 0 on the first key) */
        double r = exp(*m - s);
        for (int c = 0; c < d; c++) acc[c] = (real)(acc[c] * r);
        *l *= r;
        *m = s;
    }
    double p = exp(s - *m);
    *l += p;
    for (int c = 0; c < d; c++) acc[c] = (real)(acc[c] + p * val[c]);
}

void KFN(kern_swa_step)(real *out, const real *q, const real *sink_k, const real *sink_v,
                        const real *ring_k, const real *ring_v, int pos, int H, int G, int d, int W,
                        int S) {
    int group = H / G, ks = G * d;
    int ws = pos - W + 1 > 0 ? pos - W + 1 : 0;
    int ns = S < ws ? S : ws; /* sinks older than the ring's oldest position */
    double scale = 1.0 / sqrt((double)d);
    for (int h = 0; h < H; h++) {
        int g = h / group;
        const real *qh = q + (size_t)h * d;
        real *acc = out + (size_t)h * d;
        memset(acc, 0, sizeof(real) * d);
        double m = -INFINITY, l = 0;
        for (int j = 0; j < ns; j++) {
            size_t r = (size_t)j * ks + (size_t)g * d;
            KFN(swa_step_key)(acc, &m, &l, qh, sink_k + r, sink_v + r, d, scale);
        }
        for (int p = ws; p <= pos; p++) {
            size_t r = (size_t)(p % W) * ks + (size_t)g * d;
            KFN(swa_step_key)(acc, &m, &l, qh, ring_k + r, ring_v + r, d, scale);
        }
        for (int c = 0; c < d; c++) acc[c] = (real)(acc[c] / l);
    }
}
