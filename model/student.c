/* The hybrid student: made from a teacher (copy every weight, add the new parameters), saved as a
 * Hugging Face style directory, run chunkwise (training, perplexity) or one token at a time in
 * constant memory (generation, ppl --recurrent). */
#include "model.h"
#include "safetensors.h"
#include "kernels/kernels.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define real float
#define KFN(n) n##_f32
#define MLSTM_STATE kern_mlstm_state_f32
#include "student_impl.h"
#undef real
#undef KFN
#undef MLSTM_STATE
#define real double
#define KFN(n) n##_f64
#define MLSTM_STATE kern_mlstm_state_f64
#include "student_impl.h"
#undef real
#undef KFN
#undef MLSTM_STATE

/* ---- the public training entry points (f32 and f64) ---- */

#define STUDENT_API(real, S)                                                                      \
    int model_student_acts_new_##S(const model_config *c, int T, bool keep,                       \
                                   model_student_acts_##S **out, xd_err *e) {                     \
        *out = xd_calloc(1, sizeof **out, e);                                                     \
        if (!*out) return -1;                                                                     \
        if (student_acts_alloc_##S(*out, c, T, keep, e)) {                                        \
            free(*out);                                                                           \
            *out = NULL;                                                                          \
            return -1;                                                                            \
        }                                                                                         \
        return 0;                                                                                 \
    }                                                                                             \
    void model_student_acts_free_##S(model_student_acts_##S *s) {                                 \
        if (!s) return;                                                                           \
        student_acts_free_##S(s);                                                                 \
        free(s);                                                                                  \
    }                                                                                             \
    const real *model_student_acts_hidden_##S(const model_student_acts_##S *s) { return s->xnf; } \
    int model_student_forward_##S(const model_config *c, const model_layout *L,                   \
                                  const real *params, const double *inv_freq, const int *tokens, \
                                  int T, real *logits, model_student_acts_##S *s, xd_err *e) {    \
        if (!c->student) return xd_fail(e, "not a student model");                              \
        return student_forward_##S(c, L, params, inv_freq, tokens, T, logits, s, e);              \
    }                                                                                             \
    int model_student_backward_##S(const model_config *c, const model_layout *L,                  \
                                   const real *params, const model_student_acts_##S *s,           \
                                   const real *dlogits, real *grads, const int *tokens,           \
                                   xd_err *e) {                                                   \
        return student_backward_##S(c, L, params, s, dlogits, grads, tokens, e);                  \
    }
STUDENT_API(float, f32)
STUDENT_API(double, f64)

/* ---- one layer's attention alone, for align (DESIGN 1.2 stage 1) ---- */

#define STUDENT_LAYER_API(real, S)                                                                \
    struct model_student_layer_##S {                                                              \
        model_student_attn_acts_##S a;                                                            \
        real *cos_t, *sin_t;                                                                      \
    };                                                                                            \
    int model_student_layer_new_##S(const model_config *c, const double *inv_freq, int T,         \
                                    model_student_layer_##S **out, xd_err *e) {                   \
        model_student_layer_##S *w = xd_calloc(1, sizeof *w, e);                                  \
        if (!w) return -1;                                                                        \
        size_t half = (size_t)c->head_dim / 2;                                                    \
        w->cos_t = xd_malloc(sizeof(real) * 2 * half * (size_t)T, e);                             \
        if (!w->cos_t || attn_acts_alloc_##S(&w->a, c, T, e)) {                                   \
            free(w->cos_t);                                                                       \
            free(w);                                                                              \
            return -1;                                                                            \
        }                                                                                         \
        w->sin_t = w->cos_t + half * (size_t)T;                                                   \
        kern_rope_tables_##S(w->cos_t, w->sin_t, 0, T, (int)half, inv_freq);                     \
        *out = w;                                                                                 \
        return 0;                                                                                 \
    }                                                                                             \
    void model_student_layer_free_##S(model_student_layer_##S *w) {                               \
        if (!w) return;                                                                           \
        attn_acts_free_##S(&w->a);                                                                \
        free(w->cos_t);                                                                           \
        free(w);                                                                                  \
    }                                                                                             \
    const real *model_student_layer_forward_##S(const model_config *c, const model_layout *L,     \
                                                const real *params, int layer, const real *xn,    \
                                                model_student_layer_##S *w, xd_err *e) {          \
        if (student_attention_fwd_##S(c, L, params, layer, xn, w->a.T, w->cos_t, w->sin_t, &w->a, NULL, \
                                      e))                                                         \
            return NULL;                                                                          \
        return w->a.yhat;                                                                         \
    }                                                                                             \
    int model_student_layer_backward_##S(const model_config *c, const model_layout *L,            \
                                         const real *params, int layer, const real *xn,           \
                                         const model_student_layer_##S *w, const real *dyhat,     \
                                         real *grads, xd_err *e) {                                \
        return student_attention_bwd_##S(c, L, params, layer, xn, w->cos_t, w->sin_t, &w->a,      \
                                         dyhat, grads, false, NULL, e);                           \
    }
STUDENT_LAYER_API(float, f32)
STUDENT_LAYER_API(double, f64)

/* ---- init from a teacher ---- */

int model_student_init(const model_transformer *teacher, const model_student_settings *set,
                       model_transformer *st, xd_err *e) {
    memset(st, 0, sizeof *st);
    if (teacher->cfg.student) return xd_fail(e, "%s is already a student", teacher->source);
    st->cfg = teacher->cfg;
    st->cfg.student = true;
    st->cfg.window = set->window;
    st->cfg.sinks = set->sinks;
    st->cfg.chunk = set->chunk;
    st->cfg.mlstm_eps = set->mlstm_eps;
    /* a fresh identity for this student's lineage (time, pid and address mixed) */
    xd_rng r;
    xd_rng_seed(&r, (uint64_t)(xd_now() * 1e9) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)st);
    snprintf(st->cfg.init_id, sizeof st->cfg.init_id, "%016llx", (unsigned long long)xd_rng_next(&r));
    snprintf(st->source, sizeof st->source, "student of %.900s", teacher->source);
    if (model_config_validate(&st->cfg, "student", e)) return -1;
    const model_config *c = &st->cfg;
    if (model_layout_build(&st->layout, c, false, e)) return -1;
    st->params = xd_calloc(st->layout.n_params, sizeof(float), e);
    st->layers = xd_calloc((size_t)c->n_layers, sizeof *st->layers, e);
    st->rope_inv_freq = xd_calloc((size_t)c->head_dim / 2, sizeof(double), e);
    if (!st->params || !st->layers || !st->rope_inv_freq) goto fail;
    st->n_params = st->layout.n_params;
    memcpy(st->rope_inv_freq, teacher->rope_inv_freq, sizeof(double) * (size_t)c->head_dim / 2);
    /* teacher tensors by name; new ones as DESIGN 1.1 suggests: M = I, gate weights 0, b_i = 0,
     * b_f spread over the heads (by default 3 to 6: long memory at start), b_o */
    for (int i = 0; i < st->layout.n_entries; i++) {
        const model_tensor_entry *t = &st->layout.entries[i];
        float *dst = st->params + t->offset;
        if (!t->student_new) {
            const model_tensor_entry *src = model_layout_find(&teacher->layout, t->name);
            if (!src || src->count != t->count) {
                xd_fail(e, "teacher %s has no tensor %s", teacher->source, t->name);
                goto fail;
            }
            memcpy(dst, teacher->params + src->offset, sizeof(float) * t->count);
        }
    }
    int H = c->n_heads, d = c->head_dim;
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer_offsets *o = &st->layout.layers[l];
        for (int h = 0; h < H; h++)
            for (int i = 0; i < d; i++) {
                st->params[o->fmap_q + ((size_t)h * d + i) * d + i] = 1.0f;
                st->params[o->fmap_k + ((size_t)h * d + i) * d + i] = 1.0f;
            }
        double lo = set->forget_bias_min, hi = set->forget_bias_max;
        for (int h = 0; h < H; h++) {
            st->params[o->fgate_b + h] = (float)(H > 1 ? lo + (hi - lo) * h / (H - 1) : (lo + hi) / 2);
            st->params[o->ogate_b + h] = (float)set->output_bias;
        }
    }
    for (int l = 0; l < c->n_layers; l++) { /* the teacher's forward pointers, for completeness */
        const model_layer_offsets *o = &st->layout.layers[l];
        float *p = st->params;
        st->layers[l] = (model_layer_weights){
            p + o->attn_norm, p + o->wq, p + o->wk, p + o->wv, p + o->wo,
            o->bq == MODEL_ABSENT ? NULL : p + o->bq, o->bk == MODEL_ABSENT ? NULL : p + o->bk,
            o->bv == MODEL_ABSENT ? NULL : p + o->bv, o->bo == MODEL_ABSENT ? NULL : p + o->bo,
            p + o->mlp_norm, p + o->w_gate, p + o->w_up, p + o->w_down};
    }
    st->embed = st->params + st->layout.embed;
    st->final_norm = st->params + st->layout.final_norm;
    st->lm_head = st->params + st->layout.lm_head;
    return 0;
fail:
    model_transformer_free(st);
    return -1;
}

/* ---- save ---- */

int model_save(const model_transformer *m, const char *dir, const char *tokenizer_source,
               xd_err *e) {
    if (mkdir(dir, 0755) != 0 && !xd_is_dir(dir)) return xd_fail(e, "%s: cannot create directory", dir);
    const model_layout *L = &m->layout;
    model_st_entry *entries = xd_calloc((size_t)L->n_entries, sizeof *entries, e);
    if (!entries) return -1;
    for (int i = 0; i < L->n_entries; i++) {
        const model_tensor_entry *t = &L->entries[i];
        entries[i].name = t->name;
        entries[i].dtype = MODEL_F32;
        entries[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) entries[i].shape[d] = t->shape[d];
        entries[i].data = m->params + t->offset;
    }
    char path[4096];
    const char *meta[] = {"format", "pt", "producer", "xdistill"};
    int rc = xd_path_join(path, sizeof path, dir, "model.safetensors", e);
    if (rc == 0) rc = model_st_write(path, entries, (size_t)L->n_entries, meta, 2, e);
    free(entries);
    if (rc) return -1;
    if (!tokenizer_source && m->tokenizer_source[0]) tokenizer_source = m->tokenizer_source;
    /* The tokenizer goes inside, so the directory loads wherever it is copied to. Only one that
     * tokenizer.json cannot express is still named by path, as directories were before. */
    if (m->tokenizer) {
        xd_err te = {{0}};
        if (model_tokenizer_save_hf(m->tokenizer, dir, &te) == 0) {
            tokenizer_source = NULL;
        } else if (!tokenizer_source) {
            return xd_fail(e, "%s", te.msg);
        } else {
            xd_warn("%s; the directory names %s instead", te.msg, tokenizer_source);
            for (int i = 0; i < 2; i++) /* stale copies would win over tokenizer_source */
                if (xd_path_join(path, sizeof path, dir, i ? "tokenizer_config.json" : "tokenizer.json", e) == 0)
                    unlink(path);
        }
    }
    json_t *cfg = model_config_to_json(&m->cfg);
    if (tokenizer_source) json_object_set_new(cfg, "tokenizer_source", json_string(tokenizer_source));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(cfg);
    if (!text) return xd_fail(e, "out of memory");
    rc = xd_path_join(path, sizeof path, dir, "config.json", e);
    if (rc == 0) rc = xd_write_file_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

/* ---- inference ---- */

int model_student_hidden(const model_transformer *m, const int *tokens, int T, float *hidden,
                         xd_err *e) {
    model_student_acts_f32 s;
    if (student_acts_alloc_f32(&s, &m->cfg, T, false, e)) return -1;
    int rc = student_forward_f32(&m->cfg, &m->layout, m->params, m->rope_inv_freq, tokens, T, NULL,
                                 &s, e);
    if (rc == 0) memcpy(hidden, s.xnf, sizeof(float) * (size_t)T * m->cfg.hidden);
    student_acts_free_f32(&s);
    return rc;
}

/* the prompt's keys and values of one layer into the step form's sink rows and ring */
static void prefill_push(void *ctx, int layer, const float *kr, const float *v, int T) {
    void **c = ctx;
    const model_config *cfg = c[0];
    model_student_state *st = c[1];
    model_student_swa_cache *sc = &st->swa[layer];
    size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    /* only the first S and the last W positions stay */
    for (int t = 0; t < T; t++)
        if (t < cfg->sinks || t >= T - cfg->window)
            kern_swa_cache_push_f32(sc->sink_k, sc->sink_v, sc->ring_k, sc->ring_v, kr + t * kvd, v + t * kvd, t,
                                    cfg->n_kv_heads, cfg->head_dim, cfg->window, cfg->sinks);
}

int model_student_prefill(const model_transformer *m, model_student_state *st, const int *tokens, int n,
                          float *logits, xd_err *e) {
    if (st->pos != 0 || n < 2) { /* from a state already holding tokens: one at a time */
        for (int t = 0; t < n; t++)
            if (model_student_step(m, st, tokens[t], t == n - 1 ? logits : NULL, e)) return -1;
        return 0;
    }
    model_student_acts_f32 s;
    if (student_acts_alloc_f32(&s, &m->cfg, n, false, e)) return -1;
    const void *ctx[2] = {&m->cfg, st};
    s.final = st->mlstm;
    s.on_layer = prefill_push;
    s.ctx = (void *)ctx;
    int rc = student_forward_f32(&m->cfg, &m->layout, m->params, m->rope_inv_freq, tokens, n, NULL, &s, e);
    if (rc == 0) {
        st->pos = n;
        if (logits) model_lm_head(m, s.xnf + (size_t)(n - 1) * m->cfg.hidden, 1, logits);
    }
    student_acts_free_f32(&s);
    return rc;
}

void model_lm_head(const model_transformer *m, const float *hidden, int n, float *logits) {
    kern_linear_f32(logits, hidden, m->lm_head, NULL, n, m->cfg.hidden, m->cfg.vocab);
}

/* ---- the step form: constant memory per token ---- */

int model_student_state_init(model_student_state *st, const model_config *c, xd_err *e) {
    memset(st, 0, sizeof *st);
    int H = c->n_heads, d = c->head_dim, G = c->n_kv_heads, n = c->n_layers;
    size_t per_layer = (size_t)H * ((size_t)d * d + d) + 2 * (size_t)(c->sinks + c->window) * G * d;
    size_t work = 16 * (size_t)(c->hidden + c->ffn + 4 * H * d) + (size_t)c->head_dim;
    st->buf = xd_calloc((size_t)n * per_layer + work, sizeof(float), e);
    st->mlstm = xd_calloc((size_t)n * H, sizeof *st->mlstm, e);
    st->swa = xd_calloc((size_t)n, sizeof *st->swa, e);
    if (!st->buf || !st->mlstm || !st->swa) {
        model_student_state_free(st);
        return -1;
    }
    float *p = st->buf;
    for (int l = 0; l < n; l++) {
        for (int h = 0; h < H; h++) {
            float *C = p, *nv = p + (size_t)d * d;
            p += (size_t)d * d + d;
            kern_mlstm_state_init_f32(&st->mlstm[(size_t)l * H + h], C, nv, d, d);
        }
        st->swa[l].sink_k = p, p += (size_t)c->sinks * G * d;
        st->swa[l].sink_v = p, p += (size_t)c->sinks * G * d;
        st->swa[l].ring_k = p, p += (size_t)c->window * G * d;
        st->swa[l].ring_v = p, p += (size_t)c->window * G * d;
    }
    st->work = p;
    st->bytes = sizeof(float) * ((size_t)n * per_layer + work);
    return 0;
}

void model_student_state_free(model_student_state *st) {
    free(st->buf);
    free(st->mlstm);
    free(st->swa);
    memset(st, 0, sizeof *st);
}

int model_student_step(const model_transformer *m, model_student_state *st, int token,
                       float *logits, xd_err *e) {
    const model_config *c = &m->cfg;
    const model_layout *L = &m->layout;
    const float *P = m->params;
    int D = c->hidden, F = c->ffn, H = c->n_heads, G = c->n_kv_heads, d = c->head_dim, half = d / 2;
    int qd = H * d, kvd = G * d, group = H / G, pos = st->pos;
    if (token < 0 || token >= c->vocab)
        return xd_fail(e, "token id %d is outside the vocabulary (0..%d)", token, c->vocab - 1);
    float *x = st->work, *xn = x + D, *q0 = xn + D, *k0 = q0 + qd, *v = k0 + kvd, *qr = v + kvd;
    float *kr = qr + qd, *yswa = kr + kvd, *hm = yswa + qd, *yhat = hm + qd, *o = yhat + qd;
    float *phq = o + H, *phk = phq + d, *it = phk + d, *lf = it + H, *gate = lf + H, *up = gate + F;
    float *cs = up + F, *sn = cs + half, *tmp = sn + half;
    kern_rope_tables_f32(cs, sn, pos, 1, half, m->rope_inv_freq);
    memcpy(x, P + L->embed + (size_t)token * D, sizeof(float) * D);
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer_offsets *w = &L->layers[l];
        kern_rmsnorm_f32(xn, x, P + w->attn_norm, 1, D, (float)c->rms_eps);
        kern_linear_f32(q0, xn, P + w->wq, w->bq == MODEL_ABSENT ? NULL : P + w->bq, 1, D, qd);
        kern_linear_f32(k0, xn, P + w->wk, w->bk == MODEL_ABSENT ? NULL : P + w->bk, 1, D, kvd);
        kern_linear_f32(v, xn, P + w->wv, w->bv == MODEL_ABSENT ? NULL : P + w->bv, 1, D, kvd);
        kern_output_gate_fwd_f32(o, q0, k0, v, P + w->ogate_w, P + w->ogate_b, 1, H, G, d);
        memcpy(qr, q0, sizeof(float) * qd);
        memcpy(kr, k0, sizeof(float) * kvd);
        kern_rope_f32(qr, 1, H, d, 0, cs, sn);
        kern_rope_f32(kr, 1, G, d, 0, cs, sn);
        model_student_swa_cache *sc = &st->swa[l];
        kern_swa_cache_push_f32(sc->sink_k, sc->sink_v, sc->ring_k, sc->ring_v, kr, v, pos, G, d,
                                c->window, c->sinks);
        kern_swa_step_f32(yswa, qr, sc->sink_k, sc->sink_v, sc->ring_k, sc->ring_v, pos, H, G, d,
                          c->window, c->sinks);
        kern_gates_fwd_f32(it, lf, xn, P + w->igate_w, P + w->igate_b, P + w->fgate_w,
                           P + w->fgate_b, 1, D, H);
        for (int h = 0; h < H; h++) {
            kern_feature_map_fwd_f32(phq, d, qr + (size_t)h * d, qd, P + w->fmap_q + (size_t)h * d * d, 1, d);
            kern_feature_map_fwd_f32(phk, d, kr + (size_t)(h / group) * d, kvd,
                                     P + w->fmap_k + (size_t)h * d * d, 1, d);
            kern_mlstm_step_f32(&st->mlstm[(size_t)l * H + h], phq, phk, v + (size_t)(h / group) * d,
                                it[h], lf[h], (float)c->mlstm_eps, hm + (size_t)h * d);
        }
        kern_mix_fwd_f32(yhat, o, hm, yswa, 1, H, d);
        kern_linear_f32(tmp, yhat, P + w->wo, w->bo == MODEL_ABSENT ? NULL : P + w->bo, 1, qd, D);
        for (int i = 0; i < D; i++) x[i] += tmp[i];
        kern_rmsnorm_f32(xn, x, P + w->mlp_norm, 1, D, (float)c->rms_eps);
        kern_linear_f32(gate, xn, P + w->w_gate, NULL, 1, D, F);
        kern_linear_f32(up, xn, P + w->w_up, NULL, 1, D, F);
        kern_swiglu_f32(gate, gate, up, (size_t)F);
        kern_linear_f32(tmp, gate, P + w->w_down, NULL, 1, F, D);
        for (int i = 0; i < D; i++) x[i] += tmp[i];
    }
    st->pos++;
    if (logits) {
        kern_rmsnorm_f32(xn, x, P + L->final_norm, 1, D, (float)c->rms_eps);
        kern_linear_f32(logits, xn, P + L->lm_head, NULL, 1, D, c->vocab);
    }
    return 0;
}
