/* model/student_impl.h — the hybrid student's forward and backward on the CPU, written once for
 * `real` = float and double (model/student.c includes it twice; KFN(name) adds _f32 / _f64, and
 * MLSTM_STATE names the matching kern_mlstm_state type). No include guard on purpose.
 *
 * Per layer (DESIGN 1.1): xn = RMSNorm(x); q0, k0, v = projections; o = sigmoid(w_o [q0; k0; v]
 * + b_o); qr, kr = RoPE(q0, k0); yswa = sliding-window + sink attention(qr, kr, v);
 * phi_q = softmax(qr M_q), phi_k = softmax(kr M_k) per query head; itilde, log f = gates(xn);
 * hm = mLSTM(phi_q, phi_k, v, itilde, log f); yhat = o hm + (1 - o) yswa; x += yhat W_o^T;
 * then the teacher's MLP block. The mLSTM works head-major ([H, T, d]); the rest token-major. */

/* Everything one layer's attention keeps for its backward. One allocation (buf). */
typedef struct KFN(model_student_attn_acts) {
    int T;
    real *q0, *k0, *v;     /* pre-RoPE projections [T, H*d], [T, G*d], [T, G*d] */
    real *qr, *kr;         /* RoPE'd */
    real *o;               /* output gate [T, H] */
    real *yswa, *lse;      /* [T, H*d], [T, H] */
    real *phi_q, *phi_k;   /* feature maps, head-major [H, T, d] */
    real *vh, *hm_h;       /* v per query head and the mLSTM output, head-major [H, T, d] */
    real *itilde, *log_f;  /* gates [T, H] */
    real *it_h, *lf_h;     /* gates head-major [H, T] */
    real *hm;              /* mLSTM output token-major [T, H*d] */
    real *msaved;          /* H * kern_mlstm_saved_len */
    real *yhat;            /* [T, H*d] */
    real *buf;
} KFN(model_student_attn_acts);

static int KFN(attn_acts_alloc)(KFN(model_student_attn_acts) *a, const model_config *c, int T,
                                xd_err *e) {
    size_t H = (size_t)c->n_heads, G = (size_t)c->n_kv_heads, d = (size_t)c->head_dim;
    size_t t = (size_t)T, qd = H * d, kvd = G * d;
    size_t msaved = H * kern_mlstm_saved_len(T, c->chunk, c->head_dim, c->head_dim);
    size_t total = t * qd * 2 + t * kvd * 3 + t * H * 6 + t * qd * 4 + t * qd * 3 + msaved;
    memset(a, 0, sizeof *a);
    a->buf = xd_malloc(sizeof(real) * total, e);
    if (!a->buf) return -1;
    real *p = a->buf;
#define TAKE(field, n) (a->field = p, p += (n))
    TAKE(q0, t * qd);
    TAKE(qr, t * qd);
    TAKE(k0, t * kvd);
    TAKE(kr, t * kvd);
    TAKE(v, t * kvd);
    TAKE(o, t * H);
    TAKE(lse, t * H);
    TAKE(itilde, t * H);
    TAKE(log_f, t * H);
    TAKE(it_h, t * H);
    TAKE(lf_h, t * H);
    TAKE(yswa, t * qd);
    TAKE(phi_q, t * qd);
    TAKE(phi_k, t * qd);
    TAKE(vh, t * qd);
    TAKE(hm_h, t * qd);
    TAKE(hm, t * qd);
    TAKE(yhat, t * qd);
    TAKE(msaved, msaved);
#undef TAKE
    a->T = T;
    return 0;
}

static void KFN(attn_acts_free)(KFN(model_student_attn_acts) *a) {
    free(a->buf);
    memset(a, 0, sizeof *a);
}

/* [T, n_heads * d] (head h at column h*d) <-> [n_heads, T, d]; `group` > 1 repeats kv heads. */
static void KFN(to_head_major)(real *dst, const real *src, int T, int H, int G, int d) {
    int group = H / G;
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)h * T + t) * d, src + ((size_t)t * G + h / group) * d,
                   sizeof(real) * d);
}
static void KFN(from_head_major)(real *dst, const real *src, int T, int H, int d) {
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)t * H + h) * d, src + ((size_t)h * T + t) * d, sizeof(real) * d);
}

static real *KFN(param)(real *params, uint64_t off) {
    return off == MODEL_ABSENT ? NULL : params + off;
}

/* The student's attention of one layer: yhat [T, H*d] (before W_o) from the normalised layer input
 * xn [T, D]. cos/sin: RoPE tables for positions 0..T-1. final: NULL, or the layer's H mLSTM states,
 * which receive each head's state after the last token (a prefill for the step form). */
static int KFN(student_attention_fwd)(const model_config *c, const model_layout *L,
                                      const real *params, int layer, const real *xn, int T,
                                      const real *cos_t, const real *sin_t,
                                      KFN(model_student_attn_acts) *a, MLSTM_STATE *final, xd_err *e) {
    const model_layer_offsets *o = &L->layers[layer];
    real *P = (real *)params;
    int D = c->hidden, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim;
    int qd = H * d, kvd = G * d;
    size_t tq = (size_t)T * qd, tkv = (size_t)T * kvd;
    KFN(kern_linear)(a->q0, xn, P + o->wq, KFN(param)(P, o->bq), T, D, qd);
    KFN(kern_linear)(a->k0, xn, P + o->wk, KFN(param)(P, o->bk), T, D, kvd);
    KFN(kern_linear)(a->v, xn, P + o->wv, KFN(param)(P, o->bv), T, D, kvd);
    KFN(kern_output_gate_fwd)(a->o, a->q0, a->k0, a->v, P + o->ogate_w, P + o->ogate_b, T, H, G, d);
    memcpy(a->qr, a->q0, sizeof(real) * tq);
    memcpy(a->kr, a->k0, sizeof(real) * tkv);
    KFN(kern_rope)(a->qr, T, H, d, 0, cos_t, sin_t);
    KFN(kern_rope)(a->kr, T, G, d, 0, cos_t, sin_t);

    size_t swa_n = kern_swa_scratch_elems(T, c->window, c->sinks);
    size_t ml_n = kern_mlstm_scratch_len(c->chunk, d, d);
    real *scratch = xd_malloc(sizeof(real) * (swa_n > ml_n ? swa_n : ml_n), e);
    if (!scratch) return -1;
    KFN(kern_swa_fwd)(a->yswa, a->lse, a->qr, a->kr, a->v, T, H, G, d, c->window, c->sinks, scratch);

    int group = H / G;
    for (int h = 0; h < H; h++) {
        const real *Mq = P + o->fmap_q + (size_t)h * d * d, *Mk = P + o->fmap_k + (size_t)h * d * d;
        KFN(kern_feature_map_fwd)(a->phi_q + (size_t)h * T * d, d, a->qr + (size_t)h * d, qd, Mq, T, d);
        KFN(kern_feature_map_fwd)(a->phi_k + (size_t)h * T * d, d, a->kr + (size_t)(h / group) * d,
                                  kvd, Mk, T, d);
    }
    KFN(to_head_major)(a->vh, a->v, T, H, G, d);
    KFN(kern_gates_fwd)(a->itilde, a->log_f, xn, P + o->igate_w, P + o->igate_b, P + o->fgate_w,
                        P + o->fgate_b, T, D, H);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            a->it_h[(size_t)h * T + t] = a->itilde[(size_t)t * H + h];
            a->lf_h[(size_t)h * T + t] = a->log_f[(size_t)t * H + h];
        }
    kern_mlstm_dims md = {H, T, d, d, c->chunk, c->mlstm_eps};
    KFN(kern_mlstm_fwd)(&md, a->phi_q, a->phi_k, a->vh, a->it_h, a->lf_h, a->hm_h, a->msaved,
                        scratch, final);
    free(scratch);
    KFN(from_head_major)(a->hm, a->hm_h, T, H, d);
    KFN(kern_mix_fwd)(a->yhat, a->o, a->hm, a->yswa, T, H, d);
    return 0;
}

/* Backward of the attention from dyhat [T, H*d]. Gradients ADD into grads (same layout as the
 * parameters). full: also the q/k/v projections' weights and dxn (which is overwritten) —
 * align needs neither (only the new parameters train there and xn is the teacher's). */
static int KFN(student_attention_bwd)(const model_config *c, const model_layout *L,
                                      const real *params, int layer, const real *xn,
                                      const real *cos_t, const real *sin_t,
                                      const KFN(model_student_attn_acts) *a, const real *dyhat,
                                      real *grads, bool full, real *dxn, xd_err *e) {
    const model_layer_offsets *o = &L->layers[layer];
    real *P = (real *)params, *Gr = grads;
    int T = a->T, D = c->hidden, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim;
    int qd = H * d, kvd = G * d, group = H / G;
    size_t tq = (size_t)T * qd, tkv = (size_t)T * kvd, th = (size_t)T * H;
    size_t swa_n = kern_swa_scratch_elems(T, c->window, c->sinks);
    size_t ml_n = kern_mlstm_scratch_len(c->chunk, d, d);
    size_t fm_n = kern_feature_map_scratch_elems(d);
    size_t scratch_n = swa_n > ml_n ? swa_n : ml_n;
    if (fm_n > scratch_n) scratch_n = fm_n;
    /* d_o, dhm, dyswa | head-major dhm_h, dphi_q, dphi_k, dvh | dit_h, dlf_h, dit, dlf |
     * dq (pre/post RoPE), dk, dv | scratch */
    size_t total = th + 2 * tq + 4 * tq + 4 * th + tq + 2 * tkv + scratch_n;
    real *buf = xd_calloc(total, sizeof(real), e);
    if (!buf) return -1;
    real *d_o = buf, *dhm = d_o + th, *dyswa = dhm + tq, *dhm_h = dyswa + tq;
    real *dphi_q = dhm_h + tq, *dphi_k = dphi_q + tq, *dvh = dphi_k + tq;
    real *dit_h = dvh + tq, *dlf_h = dit_h + th, *dit = dlf_h + th, *dlf = dit + th;
    real *dq = dlf + th, *dk = dq + tq, *dv = dk + tkv, *scratch = dv + tkv;

    KFN(kern_mix_bwd)(d_o, dhm, dyswa, dyhat, a->o, a->hm, a->yswa, T, H, d);
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            memcpy(dhm_h + ((size_t)h * T + t) * d, dhm + ((size_t)t * H + h) * d, sizeof(real) * d);
    kern_mlstm_dims md = {H, T, d, d, c->chunk, c->mlstm_eps};
    KFN(kern_mlstm_bwd)(&md, a->phi_q, a->phi_k, a->vh, a->it_h, a->lf_h, a->hm_h, dhm_h, a->msaved,
                        scratch, dphi_q, dphi_k, dvh, dit_h, dlf_h);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            dit[(size_t)t * H + h] = dit_h[(size_t)h * T + t];
            dlf[(size_t)t * H + h] = dlf_h[(size_t)h * T + t];
        }
    /* the gates read xn; its gradient is only wanted in full mode, but the kernel adds into one */
    real *gates_dx = full ? dxn : xd_malloc(sizeof(real) * (size_t)T * D, e);
    if (!gates_dx) {
        free(buf);
        return -1;
    }
    memset(gates_dx, 0, sizeof(real) * (size_t)T * D);
    KFN(kern_gates_bwd)(gates_dx, Gr + o->igate_w, Gr + o->igate_b, Gr + o->fgate_w, Gr + o->fgate_b,
                        dit, dlf, xn, a->log_f, P + o->igate_w, P + o->fgate_w, T, D, H);
    if (!full) free(gates_dx);
    /* feature maps: d(rope'd q, k) */
    for (int h = 0; h < H; h++) {
        size_t mo = (size_t)h * d * d;
        KFN(kern_feature_map_bwd)(dq + (size_t)h * d, Gr + o->fmap_q + mo, dphi_q + (size_t)h * T * d,
                                  a->phi_q + (size_t)h * T * d, d, a->qr + (size_t)h * d, qd,
                                  P + o->fmap_q + mo, T, d, scratch);
        KFN(kern_feature_map_bwd)(dk + (size_t)(h / group) * d, Gr + o->fmap_k + mo,
                                  dphi_k + (size_t)h * T * d, a->phi_k + (size_t)h * T * d, d,
                                  a->kr + (size_t)(h / group) * d, kvd, P + o->fmap_k + mo, T, d,
                                  scratch);
    }
    for (int h = 0; h < H; h++) /* v feeds every head of its group */
        for (int t = 0; t < T; t++) {
            real *dst = dv + (size_t)t * kvd + (size_t)(h / group) * d;
            const real *src = dvh + ((size_t)h * T + t) * d;
            for (int i = 0; i < d; i++) dst[i] += src[i];
        }
    KFN(kern_swa_bwd)(dq, dk, dv, dyswa, a->qr, a->kr, a->v, a->yswa, a->lse, T, H, G, d,
                      c->window, c->sinks, scratch);
    KFN(kern_rope_backward)(dq, T, H, d, 0, cos_t, sin_t);
    KFN(kern_rope_backward)(dk, T, G, d, 0, cos_t, sin_t);
    KFN(kern_output_gate_bwd)(dq, dk, dv, Gr + o->ogate_w, Gr + o->ogate_b, d_o, a->o, a->q0, a->k0,
                              a->v, P + o->ogate_w, T, H, G, d);
    if (full) {
        KFN(kern_linear_backward)(dxn, Gr + o->wq, KFN(param)(Gr, o->bq), dq, xn, P + o->wq, T, D, qd, true);
        KFN(kern_linear_backward)(dxn, Gr + o->wk, KFN(param)(Gr, o->bk), dk, xn, P + o->wk, T, D, kvd, true);
        KFN(kern_linear_backward)(dxn, Gr + o->wv, KFN(param)(Gr, o->bv), dv, xn, P + o->wv, T, D, kvd, true);
    }
    free(buf);
    return 0;
}

/* Activations of the whole student for one sequence (keep = true: every layer, for the
 * backward; false: one layer's worth, reused, for inference). */
typedef struct KFN(model_student_acts) {
    int T, n_layers;
    bool keep;
    real *x;    /* residual stream entering each layer [n+1][T, D] (keep) or [2][T, D] */
    real *xn1;  /* attention norm output [n][T, D] */
    real *xmid; /* after the attention residual [n][T, D] */
    real *xn2;  /* MLP norm output [n][T, D] */
    real *gate, *up; /* [n][T, F] */
    real *act;  /* silu(gate) * up [T, F] scratch */
    real *xnf;  /* final norm output [T, D] */
    real *cos_t, *sin_t;
    KFN(model_student_attn_acts) * attn;
    real *buf;
    /* a prefill for the step form (NULL otherwise): every layer's final mLSTM states
     * [n_layers * H], and on_layer(ctx, layer, kr, v, T) after each layer's attention */
    MLSTM_STATE *final;
    void (*on_layer)(void *ctx, int layer, const real *kr, const real *v, int T);
    void *ctx;
} KFN(model_student_acts);

static void KFN(student_acts_free)(KFN(model_student_acts) *s) {
    if (s->attn)
        for (int l = 0; l < (s->keep ? s->n_layers : 1); l++) KFN(attn_acts_free)(&s->attn[l]);
    free(s->attn);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

static int KFN(student_acts_alloc)(KFN(model_student_acts) *s, const model_config *c, int T, bool keep,
                                   xd_err *e) {
    memset(s, 0, sizeof *s);
    int n = c->n_layers, nl = keep ? n : 1;
    size_t td = (size_t)T * c->hidden, tf = (size_t)T * c->ffn, half = (size_t)c->head_dim / 2;
    size_t total = (size_t)(keep ? n + 1 : 2) * td + 3 * (size_t)nl * td + 2 * (size_t)nl * tf + tf +
                   td + 2 * (size_t)T * half;
    s->buf = xd_malloc(sizeof(real) * total, e);
    s->attn = s->buf ? xd_calloc((size_t)nl, sizeof *s->attn, e) : NULL;
    if (!s->attn) {
        free(s->buf);
        return -1;
    }
    s->T = T;
    s->n_layers = n;
    s->keep = keep;
    real *p = s->buf;
    s->x = p, p += (size_t)(keep ? n + 1 : 2) * td;
    s->xn1 = p, p += (size_t)nl * td;
    s->xmid = p, p += (size_t)nl * td;
    s->xn2 = p, p += (size_t)nl * td;
    s->gate = p, p += (size_t)nl * tf;
    s->up = p, p += (size_t)nl * tf;
    s->act = p, p += tf;
    s->xnf = p, p += td;
    s->cos_t = p, p += (size_t)T * half;
    s->sin_t = p;
    for (int l = 0; l < nl; l++)
        if (KFN(attn_acts_alloc)(&s->attn[l], c, T, e)) {
            KFN(student_acts_free)(s);
            return -1;
        }
    return 0;
}

/* Full forward of one sequence: logits [T, V] (NULL: stop at the final norm, s->xnf). */
static int KFN(student_forward)(const model_config *c, const model_layout *L, const real *params,
                                const double *inv_freq, const int *tokens, int T, real *logits,
                                KFN(model_student_acts) *s, xd_err *e) {
    int D = c->hidden, F = c->ffn, V = c->vocab, qd = c->n_heads * c->head_dim;
    size_t td = (size_t)T * D, tf = (size_t)T * F;
    real *P = (real *)params;
    if (T != s->T) return xd_fail(e, "student forward of %d tokens with activations for %d", T, s->T);
    KFN(kern_rope_tables)(s->cos_t, s->sin_t, 0, T, c->head_dim / 2, inv_freq);
    if (KFN(kern_embedding)(s->x, P + L->embed, tokens, T, V, D, e)) return -1;
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer_offsets *o = &L->layers[l];
        int k = s->keep ? l : 0;
        real *x = s->keep ? s->x + (size_t)l * td : s->x, *xnext = s->keep ? x + td : s->x;
        real *xn1 = s->xn1 + (size_t)k * td, *xmid = s->xmid + (size_t)k * td;
        real *xn2 = s->xn2 + (size_t)k * td, *gate = s->gate + (size_t)k * tf;
        real *up = s->up + (size_t)k * tf;
        KFN(model_student_attn_acts) *a = &s->attn[k];
        KFN(kern_rmsnorm)(xn1, x, P + o->attn_norm, T, D, (real)c->rms_eps);
        MLSTM_STATE *fin = s->final ? s->final + (size_t)l * c->n_heads : NULL;
        if (KFN(student_attention_fwd)(c, L, params, l, xn1, T, s->cos_t, s->sin_t, a, fin, e)) return -1;
        if (s->on_layer) s->on_layer(s->ctx, l, a->kr, a->v, T);
        KFN(kern_linear)(xmid, a->yhat, P + o->wo, KFN(param)(P, o->bo), T, qd, D);
        for (size_t i = 0; i < td; i++) xmid[i] += x[i];
        KFN(kern_rmsnorm)(xn2, xmid, P + o->mlp_norm, T, D, (real)c->rms_eps);
        KFN(kern_linear)(gate, xn2, P + o->w_gate, NULL, T, D, F);
        KFN(kern_linear)(up, xn2, P + o->w_up, NULL, T, D, F);
        KFN(kern_swiglu)(s->act, gate, up, tf);
        KFN(kern_linear)(xnext, s->act, P + o->w_down, NULL, T, F, D);
        for (size_t i = 0; i < td; i++) xnext[i] += xmid[i];
    }
    real *xl = s->keep ? s->x + (size_t)c->n_layers * td : s->x;
    KFN(kern_rmsnorm)(s->xnf, xl, P + L->final_norm, T, D, (real)c->rms_eps);
    if (logits) KFN(kern_linear)(logits, s->xnf, P + L->lm_head, NULL, T, D, V);
    return 0;
}

/* Backward of the whole student from dlogits [T, V] (after a forward with keep = true).
 * Gradients ADD into grads. */
static int KFN(student_backward)(const model_config *c, const model_layout *L, const real *params,
                                 const KFN(model_student_acts) *s, const real *dlogits, real *grads,
                                 const int *tokens, xd_err *e) {
    if (!s->keep) return xd_fail(e, "student backward needs the activations of every layer");
    int T = s->T, D = c->hidden, F = c->ffn, V = c->vocab, qd = c->n_heads * c->head_dim;
    size_t td = (size_t)T * D, tf = (size_t)T * F;
    real *P = (real *)params, *Gr = grads;
    real *buf = xd_malloc(sizeof(real) * (3 * td + 2 * tf + (size_t)T * qd), e);
    if (!buf) return -1;
    real *dx = buf, *dtmp = dx + td, *dxn = dtmp + td, *dgate = dxn + td, *dup = dgate + tf;
    real *dyhat = dup + tf;
    int rc = 0;
    /* LM head and final norm */
    KFN(kern_linear_backward)(dtmp, Gr + L->lm_head, NULL, dlogits, s->xnf, P + L->lm_head, T, D, V, false);
    KFN(kern_rmsnorm_backward)(dx, Gr + L->final_norm, dtmp, s->x + (size_t)c->n_layers * td,
                               P + L->final_norm, T, D, (real)c->rms_eps, false);
    for (int l = c->n_layers - 1; l >= 0 && rc == 0; l--) {
        const model_layer_offsets *o = &L->layers[l];
        const real *x = s->x + (size_t)l * td, *xn1 = s->xn1 + (size_t)l * td;
        const real *xmid = s->xmid + (size_t)l * td, *xn2 = s->xn2 + (size_t)l * td;
        const real *gate = s->gate + (size_t)l * tf, *up = s->up + (size_t)l * tf;
        /* MLP: dx is d(x_next) = d(xmid) through the residual */
        KFN(kern_swiglu)(s->act, gate, up, tf);
        KFN(kern_linear_backward)(dgate, Gr + o->w_down, NULL, dx, s->act, P + o->w_down, T, F, D, false);
        KFN(kern_swiglu_backward)(dgate, dup, dgate, gate, up, tf);
        KFN(kern_linear_backward)(dxn, Gr + o->w_gate, NULL, dgate, xn2, P + o->w_gate, T, D, F, false);
        KFN(kern_linear_backward)(dxn, Gr + o->w_up, NULL, dup, xn2, P + o->w_up, T, D, F, true);
        KFN(kern_rmsnorm_backward)(dx, Gr + o->mlp_norm, dxn, xmid, P + o->mlp_norm, T, D,
                                   (real)c->rms_eps, true);
        /* attention: dx is now d(xmid) = d(x) through the residual + the attention path */
        KFN(kern_linear_backward)(dyhat, Gr + o->wo, KFN(param)(Gr, o->bo), dx, s->attn[l].yhat,
                                  P + o->wo, T, qd, D, false);
        rc = KFN(student_attention_bwd)(c, L, params, l, xn1, s->cos_t, s->sin_t, &s->attn[l], dyhat,
                                        grads, true, dxn, e);
        if (rc) break;
        KFN(kern_rmsnorm_backward)(dx, Gr + o->attn_norm, dxn, x, P + o->attn_norm, T, D,
                                   (real)c->rms_eps, true);
    }
    if (rc == 0) rc = KFN(kern_embedding_backward)(Gr + L->embed, dx, tokens, T, V, D, e);
    free(buf);
    return rc;
}
