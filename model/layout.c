/* The table of a model's tensors and their place in one flat parameter array. Teacher and
 * student share it: the student is the teacher's table plus its new per-layer tensors. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add(model_layout *L, int *cap, uint64_t *offset_out, bool new_param, int permute,
               int ndim, int64_t d0, int64_t d1, int64_t d2, xd_err *e, const char *fmt, ...)
    XD_PRINTF(11, 12);
static int add(model_layout *L, int *cap, uint64_t *offset_out, bool new_param, int permute,
               int ndim, int64_t d0, int64_t d1, int64_t d2, xd_err *e, const char *fmt, ...) {
    if (L->n_entries == *cap) {
        int grown = *cap ? 2 * *cap : 64;
        model_tensor_entry *p = realloc(L->entries, sizeof *p * grown);
        if (!p) return xd_fail(e, "out of memory");
        L->entries = p;
        *cap = grown;
    }
    model_tensor_entry *t = &L->entries[L->n_entries++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    t->count = (uint64_t)d0 * (ndim > 1 ? (uint64_t)d1 : 1) * (ndim > 2 ? (uint64_t)d2 : 1);
    t->offset = L->n_params;
    t->permute_heads = permute;
    t->student_new = new_param;
    L->n_params += t->count;
    *offset_out = t->offset;
    return 0;
}

int model_layout_build(model_layout *L, const model_config *c, bool gguf_permute, xd_err *e) {
    memset(L, 0, sizeof *L);
    L->layers = xd_calloc((size_t)c->n_layers, sizeof *L->layers, e);
    if (!L->layers) return -1;
    int cap = 0;
    int64_t D = c->hidden, F = c->ffn, V = c->vocab, H = c->n_heads, d = c->head_dim;
    int64_t qd = H * d, kvd = (int64_t)c->n_kv_heads * d;
    int pq = gguf_permute ? c->n_heads : 0, pk = gguf_permute ? c->n_kv_heads : 0;
    const char *p = "model.layers";
#define ADD(off, newp, perm, nd, a, b, cc, ...) \
    if (add(L, &cap, off, newp, perm, nd, a, b, cc, e, __VA_ARGS__)) goto fail
    ADD(&L->embed, false, 0, 2, V, D, 0, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        model_layer_offsets *o = &L->layers[l];
        o->bq = o->bk = o->bv = o->bo = MODEL_ABSENT;
        o->fmap_q = o->fmap_k = o->igate_w = o->igate_b = MODEL_ABSENT;
        o->fgate_w = o->fgate_b = o->ogate_w = o->ogate_b = MODEL_ABSENT;
        ADD(&o->attn_norm, false, 0, 1, D, 0, 0, "%s.%d.input_layernorm.weight", p, l);
        ADD(&o->wq, false, pq, 2, qd, D, 0, "%s.%d.self_attn.q_proj.weight", p, l);
        ADD(&o->wk, false, pk, 2, kvd, D, 0, "%s.%d.self_attn.k_proj.weight", p, l);
        ADD(&o->wv, false, 0, 2, kvd, D, 0, "%s.%d.self_attn.v_proj.weight", p, l);
        ADD(&o->wo, false, 0, 2, D, qd, 0, "%s.%d.self_attn.o_proj.weight", p, l);
        if (c->qkv_bias) {
            ADD(&o->bq, false, pq, 1, qd, 0, 0, "%s.%d.self_attn.q_proj.bias", p, l);
            ADD(&o->bk, false, pk, 1, kvd, 0, 0, "%s.%d.self_attn.k_proj.bias", p, l);
            ADD(&o->bv, false, 0, 1, kvd, 0, 0, "%s.%d.self_attn.v_proj.bias", p, l);
        }
        if (c->o_bias) ADD(&o->bo, false, 0, 1, D, 0, 0, "%s.%d.self_attn.o_proj.bias", p, l);
        ADD(&o->mlp_norm, false, 0, 1, D, 0, 0, "%s.%d.post_attention_layernorm.weight", p, l);
        ADD(&o->w_gate, false, 0, 2, F, D, 0, "%s.%d.mlp.gate_proj.weight", p, l);
        ADD(&o->w_up, false, 0, 2, F, D, 0, "%s.%d.mlp.up_proj.weight", p, l);
        ADD(&o->w_down, false, 0, 2, D, F, 0, "%s.%d.mlp.down_proj.weight", p, l);
        if (c->student) {
            ADD(&o->fmap_q, true, 0, 3, H, d, d, "%s.%d.self_attn.fmap_q", p, l);
            ADD(&o->fmap_k, true, 0, 3, H, d, d, "%s.%d.self_attn.fmap_k", p, l);
            ADD(&o->igate_w, true, 0, 2, D, H, 0, "%s.%d.self_attn.igate.weight", p, l);
            ADD(&o->igate_b, true, 0, 1, H, 0, 0, "%s.%d.self_attn.igate.bias", p, l);
            ADD(&o->fgate_w, true, 0, 2, D, H, 0, "%s.%d.self_attn.fgate.weight", p, l);
            ADD(&o->fgate_b, true, 0, 1, H, 0, 0, "%s.%d.self_attn.fgate.bias", p, l);
            ADD(&o->ogate_w, true, 0, 2, H, 3 * d, 0, "%s.%d.self_attn.ogate.weight", p, l);
            ADD(&o->ogate_b, true, 0, 1, H, 0, 0, "%s.%d.self_attn.ogate.bias", p, l);
        }
    }
    ADD(&L->final_norm, false, 0, 1, D, 0, 0, "model.norm.weight");
    if (c->tied_embeddings) L->lm_head = L->embed;
    else ADD(&L->lm_head, false, 0, 2, V, D, 0, "lm_head.weight");
#undef ADD
    return 0;
fail:
    model_layout_free(L);
    return -1;
}

void model_layout_free(model_layout *L) {
    free(L->entries);
    free(L->layers);
    memset(L, 0, sizeof *L);
}

const model_tensor_entry *model_layout_find(const model_layout *L, const char *name) {
    for (int i = 0; i < L->n_entries; i++)
        if (!strcmp(L->entries[i].name, name)) return &L->entries[i];
    return NULL;
}
