/* The teacher: a Llama-family Transformer loaded from an HF directory or a GGUF file into one fp32
 * allocation, and its forward pass on the CPU with a KV cache. */
#include "model.h"
#include "gguf.h"
#include "safetensors.h"
#include "kernels/kernels.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* HF tensor name -> GGUF tensor name (llama.cpp's naming). */
static void gguf_name(const char *hf, char *out, size_t cap) {
    static const struct {
        const char *hf, *gguf;
    } map[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (!strcmp(hf, "model.embed_tokens.weight")) snprintf(out, cap, "token_embd.weight");
    else if (!strcmp(hf, "model.norm.weight")) snprintf(out, cap, "output_norm.weight");
    else if (!strcmp(hf, "lm_head.weight")) snprintf(out, cap, "output.weight");
    else {
        int layer = -1, consumed = 0;
        if (sscanf(hf, "model.layers.%d.%n", &layer, &consumed) == 1 && consumed > 0) {
            for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
                if (!strcmp(hf + consumed, map[i].hf)) {
                    snprintf(out, cap, "blk.%d.%s", layer, map[i].gguf);
                    return;
                }
        }
        snprintf(out, cap, "%s", hf);
    }
}

/* Undo llama.cpp's q/k row permutation: within each head, GGUF row 2i+j holds HF row
 * j*(d/2)+i (convert_hf_to_gguf.py's permute, which makes HF's rotate-half rope interleaved). */
static void unpermute_rows(float *w, int64_t rows, int64_t cols, int heads, float *tmp) {
    int64_t d = rows / heads, half = d / 2, width = cols ? cols : 1;
    for (int h = 0; h < heads; h++) {
        float *block = w + h * d * width;
        memcpy(tmp, block, sizeof(float) * d * width);
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(block + (j * half + i) * width, tmp + (2 * i + j) * width,
                       sizeof(float) * width);
    }
}

typedef const model_tensor_view *(*find_fn)(const void *src, const char *name);
static const model_tensor_view *find_st(const void *src, const char *name) {
    return model_st_find(src, name);
}
static const model_tensor_view *find_gguf(const void *src, const char *name) {
    char g[128];
    gguf_name(name, g, sizeof g);
    return model_gguf_tensor(src, g);
}

static int fill_weights(model_transformer *m, const void *src, find_fn find, xd_err *e) {
    const model_layout *L = &m->layout;
    m->params = xd_malloc(sizeof(float) * L->n_params, e);
    if (!m->params) return -1;
    m->n_params = L->n_params;
    for (int i = 0; i < L->n_entries; i++) {
        const model_tensor_entry *t = &L->entries[i];
        float *dst = m->params + t->offset;
        const model_tensor_view *v = find(src, t->name);
        if (!v) {
            char g[128];
            gguf_name(t->name, g, sizeof g);
            return xd_fail(e, "%s: missing tensor %s", m->source, find == find_gguf ? g : t->name);
        }
        bool shape_ok = v->ndim == t->ndim;
        for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = v->shape[d] == t->shape[d];
        if (!shape_ok) {
            char have[96] = "", want[96] = "";
            for (int d = 0; d < v->ndim && strlen(have) < 70; d++)
                snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? ", " : "",
                         (long long)v->shape[d]);
            for (int d = 0; d < t->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "",
                         (long long)t->shape[d]);
            return xd_fail(e, "%s: tensor %s has shape [%s], the config implies [%s]", m->source,
                           v->name, have, want);
        }
        if (model_tensor_to_f32(v, dst, t->count, e)) return xd_wrap(e, "%s", m->source);
        if (t->permute_heads) {
            int64_t cols = t->ndim == 2 ? t->shape[1] : 0;
            float *tmp = xd_malloc(sizeof(float) * t->count, e);
            if (!tmp) return -1;
            unpermute_rows(dst, t->shape[0], cols, t->permute_heads, tmp);
            free(tmp);
        }
    }
    return 0;
}

/* Pointers of the teacher's forward into the flat array. */
static void set_pointers(model_transformer *m) {
    const model_layout *L = &m->layout;
    float *p = m->params;
#define AT(off) ((off) == MODEL_ABSENT ? NULL : p + (off))
    m->embed = AT(L->embed);
    m->final_norm = AT(L->final_norm);
    m->lm_head = AT(L->lm_head);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const model_layer_offsets *o = &L->layers[l];
        model_layer_weights *w = &m->layers[l];
        *w = (model_layer_weights){AT(o->attn_norm), AT(o->wq), AT(o->wk), AT(o->wv), AT(o->wo),
                                   AT(o->bq), AT(o->bk), AT(o->bv), AT(o->bo), AT(o->mlp_norm),
                                   AT(o->w_gate), AT(o->w_up), AT(o->w_down)};
    }
#undef AT
}

/* ---- GGUF metadata -> config ---- */

static int gguf_int(const model_gguf *g, const char *arch, const char *key, bool required,
                    int64_t dflt, int *out, const char *path, xd_err *e) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int64_t v;
    int rc = model_gguf_get_int(g, full, &v, e);
    if (rc < 0) return -1;
    if (rc == 1) {
        if (required) return xd_fail(e, "%s: missing metadata %s", path, full);
        v = dflt;
    }
    if (v < 0 || v > 100000000) return xd_fail(e, "%s: metadata %s = %lld is out of range", path, full, (long long)v);
    *out = (int)v;
    return 0;
}

static int gguf_num(const model_gguf *g, const char *arch, const char *key, double dflt,
                    double *out, xd_err *e) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    int rc = model_gguf_get_float(g, full, out, e);
    if (rc == 1) *out = dflt;
    return rc < 0 ? -1 : 0;
}

static int config_from_gguf(const model_gguf *g, const char *path, model_config *c, xd_err *e) {
    memset(c, 0, sizeof *c);
    model_gguf_str a;
    int rc = model_gguf_get_string(g, "general.architecture", &a, e);
    if (rc != 0) return rc < 0 ? -1 : xd_fail(e, "%s: missing metadata general.architecture", path);
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(a.len < 31 ? a.len : 31), a.ptr);
    if (!strcmp(arch, "llama")) c->arch = MODEL_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2")) c->arch = MODEL_ARCH_QWEN2;
    else return xd_fail(e, "%s: GGUF architecture \"%s\" is not supported (llama and qwen2 are)", path, arch);
    snprintf(c->model_type, sizeof c->model_type, "%s", arch);
    if (gguf_int(g, arch, "block_count", true, 0, &c->n_layers, path, e) ||
        gguf_int(g, arch, "embedding_length", true, 0, &c->hidden, path, e) ||
        gguf_int(g, arch, "feed_forward_length", true, 0, &c->ffn, path, e) ||
        gguf_int(g, arch, "attention.head_count", true, 0, &c->n_heads, path, e) ||
        gguf_int(g, arch, "attention.head_count_kv", false, c->n_heads, &c->n_kv_heads, path, e) ||
        gguf_int(g, arch, "context_length", false, 2048, &c->max_positions, path, e) ||
        gguf_num(g, arch, "attention.layer_norm_rms_epsilon", 1e-5, &c->rms_eps, e) ||
        gguf_num(g, arch, "rope.freq_base", 10000.0, &c->rope_theta, e))
        return -1;
    if (c->n_heads <= 0) return xd_fail(e, "%s: %s.attention.head_count must be positive", path, arch);
    if (gguf_int(g, arch, "attention.key_length", false, c->hidden / c->n_heads, &c->head_dim, path, e))
        return -1;
    const model_tensor_view *emb = model_gguf_tensor(g, "token_embd.weight");
    if (!emb || emb->ndim != 2) return xd_fail(e, "%s: missing tensor token_embd.weight", path);
    if (gguf_int(g, arch, "vocab_size", false, emb->shape[0], &c->vocab, path, e)) return -1;
    model_gguf_str st;
    if (model_gguf_get_string(g, arch, &st, NULL) == 0) (void)st;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (model_gguf_get_string(g, key, &st, NULL) == 0 && st.len == 6 && !memcmp(st.ptr, "linear", 6)) {
        c->rope_type = MODEL_ROPE_LINEAR;
        if (gguf_num(g, arch, "rope.scaling.factor", 1.0, &c->rope_factor, e)) return -1;
    }
    c->tied_embeddings = model_gguf_tensor(g, "output.weight") == NULL;
    c->qkv_bias = model_gguf_tensor(g, "blk.0.attn_q.bias") != NULL;
    c->o_bias = model_gguf_tensor(g, "blk.0.attn_output.bias") != NULL;
    int64_t v;
    c->bos_id = model_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, NULL) == 0 ? (int)v : -1;
    c->eos_id = model_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, NULL) == 0 ? (int)v : -1;
    return model_config_validate(c, path, e);
}

static int alloc_layers(model_transformer *m, xd_err *e) {
    m->layers = xd_calloc((size_t)m->cfg.n_layers, sizeof *m->layers, e);
    m->rope_inv_freq = xd_calloc((size_t)m->cfg.head_dim / 2, sizeof(double), e);
    return m->layers && m->rope_inv_freq ? 0 : -1;
}

static int load_gguf(const char *path, model_transformer *m, xd_err *e) {
    model_gguf *g;
    if (model_gguf_open(path, &g, e)) return -1;
    int rc = config_from_gguf(g, path, &m->cfg, e);
    if (rc == 0) rc = alloc_layers(m, e);
    /* llama.cpp permutes q/k for the llama architecture only; qwen2 keeps HF's layout */
    if (rc == 0) rc = model_layout_build(&m->layout, &m->cfg, m->cfg.arch == MODEL_ARCH_LLAMA, e);
    if (rc == 0) rc = fill_weights(m, g, find_gguf, e);
    if (rc == 0) set_pointers(m);
    if (rc == 0) {
        model_rope_inv_freq(&m->cfg, m->rope_inv_freq);
        /* Llama 3 GGUFs carry the rope scaling as per-pair frequency divisors */
        const model_tensor_view *rf = model_gguf_tensor(g, "rope_freqs.weight");
        if (rf) {
            int half = m->cfg.head_dim / 2;
            float *f = xd_malloc(sizeof(float) * half, e);
            rc = f ? model_tensor_to_f32(rf, f, (uint64_t)half, e) : -1;
            for (int i = 0; rc == 0 && i < half; i++) m->rope_inv_freq[i] /= f[i];
            free(f);
            if (rc) xd_wrap(e, "%s", path);
        }
    }
    /* a GGUF without tokenizer metadata still runs on token ids */
    if (rc == 0 && model_gguf_find(g, "tokenizer.ggml.model"))
        rc = model_tokenizer_load_gguf(g, &m->tokenizer, e);
    model_gguf_close(g);
    return rc;
}

/* A student made from a GGUF teacher names where its tokenizer lives ("tokenizer_source"). */
static int load_tokenizer_source(const char *dir, model_transformer *m, bool load, xd_err *e) {
    char path[4096], *text;
    size_t len;
    if (xd_path_join(path, sizeof path, dir, "config.json", e) || xd_read_file(path, 4u << 20, &text, &len, e))
        return -1;
    json_t *root = json_loadb(text, len, 0, NULL);
    free(text);
    json_t *src = root ? json_object_get(root, "tokenizer_source") : NULL;
    int rc = 0;
    if (src && !json_is_string(src)) {
        rc = xd_fail(e, "%s: \"tokenizer_source\" must be a string", path);
    } else if (src) {
        snprintf(m->tokenizer_source, sizeof m->tokenizer_source, "%s", json_string_value(src));
    }
    if (src && rc == 0 && load) {
        const char *from = m->tokenizer_source;
        if (xd_is_dir(from)) {
            rc = model_tokenizer_load_hf(from, &m->tokenizer, e);
        } else {
            model_gguf *g;
            rc = model_gguf_open(from, &g, e);
            if (rc == 0) {
                rc = model_tokenizer_load_gguf(g, &m->tokenizer, e);
                model_gguf_close(g);
            }
        }
        if (rc) xd_wrap(e, "%s: the tokenizer named by tokenizer_source", path);
    }
    json_decref(root);
    return rc;
}

static int load_hf(const char *dir, model_transformer *m, xd_err *e) {
    if (model_config_load_hf(dir, &m->cfg, e)) return -1;
    if (alloc_layers(m, e)) return -1;
    model_rope_inv_freq(&m->cfg, m->rope_inv_freq);
    model_safetensors *st;
    if (model_st_open(dir, &st, e)) return -1;
    /* Some checkpoints say tied but still store lm_head: the tied flag wins, as in transformers */
    int rc = model_layout_build(&m->layout, &m->cfg, false, e);
    if (rc == 0) rc = fill_weights(m, st, find_st, e);
    if (rc == 0) set_pointers(m);
    model_st_close(st);
    if (rc) return rc;
    char tok[4096];
    if (xd_path_join(tok, sizeof tok, dir, "tokenizer.json", e)) return -1;
    /* a student's checkpoint records where its tokenizer came from, whether or not it has a copy */
    if (xd_file_exists(tok)) {
        if (m->cfg.student && load_tokenizer_source(dir, m, false, e)) return -1;
        return model_tokenizer_load_hf(dir, &m->tokenizer, e);
    }
    return load_tokenizer_source(dir, m, true, e);
}

int model_transformer_load(const char *path, model_transformer *m, xd_err *e) {
    memset(m, 0, sizeof *m);
    snprintf(m->source, sizeof m->source, "%s", path);
    int rc;
    if (xd_is_dir(path)) {
        rc = load_hf(path, m, e);
    } else if (xd_file_exists(path)) {
        rc = load_gguf(path, m, e);
    } else {
        rc = xd_fail(e, "%s: no such model (expected an HF model directory or a .gguf file)", path);
    }
    if (rc) model_transformer_free(m);
    return rc;
}

void model_transformer_free(model_transformer *m) {
    free(m->params);
    free(m->layers);
    free(m->rope_inv_freq);
    model_layout_free(&m->layout);
    if (m->tokenizer) model_tokenizer_free(m->tokenizer);
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

int model_kv_cache_init(model_kv_cache *c, const model_config *cfg, int capacity, xd_err *e) {
    memset(c, 0, sizeof *c);
    uint64_t per = (uint64_t)cfg->n_layers * (uint64_t)capacity * (uint64_t)cfg->n_kv_heads *
                   (uint64_t)cfg->head_dim;
    c->k = xd_malloc(sizeof(float) * per, e);
    c->v = c->k ? xd_malloc(sizeof(float) * per, e) : NULL;
    if (!c->v) {
        model_kv_cache_free(c);
        return -1;
    }
    c->capacity = capacity;
    return 0;
}

void model_kv_cache_free(model_kv_cache *c) {
    free(c->k);
    free(c->v);
    memset(c, 0, sizeof *c);
}

int model_transformer_forward(const model_transformer *m, model_kv_cache *cache, const int *tokens,
                              int n, float *logits, bool all_logits, xd_err *e) {
    return model_transformer_forward_capture(m, cache, tokens, n, logits, all_logits, NULL, e);
}

int model_transformer_forward_capture(const model_transformer *m, model_kv_cache *cache,
                                      const int *tokens, int n, float *logits, bool all_logits,
                                      const model_capture *cap, xd_err *e) {
    const model_config *c = &m->cfg;
    int pos0 = cache->length;
    if (n <= 0) return xd_fail(e, "forward of %d tokens", n);
    if (pos0 + n > cache->capacity)
        return xd_fail(e, "context of %d tokens exceeds the KV cache of %d", pos0 + n, cache->capacity);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return xd_fail(e, "token id %d is outside the vocabulary (0..%d)", tokens[t], c->vocab - 1);
    int D = c->hidden, F = c->ffn, hd = c->head_dim, half = hd / 2;
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, total = pos0 + n;
    size_t nx = (size_t)n * D, nq = (size_t)n * qd, nf = (size_t)n * F;
    size_t floats = 2 * nx + 2 * nq + 2 * nf + (size_t)n * total + 2 * (size_t)n * half;
    float *buf = xd_malloc(sizeof(float) * floats, e);
    if (!buf) return -1;
    float *x = buf, *xn = x + nx, *q = xn + nx, *att = q + nq, *gate = att + nq, *up = gate + nf;
    float *scores = up + nf, *cos_t = scores + (size_t)n * total, *sin_t = cos_t + (size_t)n * half;

    kern_rope_tables_f32(cos_t, sin_t, pos0, n, half, m->rope_inv_freq);
    for (int t = 0; t < n; t++) memcpy(x + (size_t)t * D, m->embed + (size_t)tokens[t] * D, sizeof(float) * D);

    size_t layer_stride = (size_t)cache->capacity * kvd;
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer_weights *w = &m->layers[l];
        float *kc = cache->k + l * layer_stride, *vc = cache->v + l * layer_stride;
        kern_rmsnorm_f32(xn, x, w->attn_norm, n, D, (float)c->rms_eps);
        kern_linear_f32(q, xn, w->wq, w->bq, n, D, qd);
        kern_linear_f32(kc + (size_t)pos0 * kvd, xn, w->wk, w->bk, n, D, kvd);
        kern_linear_f32(vc + (size_t)pos0 * kvd, xn, w->wv, w->bv, n, D, kvd);
        kern_rope_f32(q, n, c->n_heads, hd, 0, cos_t, sin_t);
        kern_rope_f32(kc + (size_t)pos0 * kvd, n, c->n_kv_heads, hd, 0, cos_t, sin_t);
        kern_attention_causal_f32(att, q, kc, vc, n, pos0, c->n_heads, c->n_kv_heads, hd,
                              c->sliding_window, scores);
        if (cap && l >= cap->first_layer && l <= cap->last_layer) {
            size_t k = (size_t)(l - cap->first_layer);
            /* xn still holds the layer's normalised input here */
            if (cap->xn) memcpy(cap->xn + k * nx, xn, sizeof(float) * nx);
            if (cap->attn) memcpy(cap->attn + k * nq, att, sizeof(float) * nq);
        }
        kern_linear_f32(xn, att, w->wo, w->bo, n, qd, D);
        for (size_t i = 0; i < nx; i++) x[i] += xn[i];
        kern_rmsnorm_f32(xn, x, w->mlp_norm, n, D, (float)c->rms_eps);
        kern_linear_f32(gate, xn, w->w_gate, NULL, n, D, F);
        kern_linear_f32(up, xn, w->w_up, NULL, n, D, F);
        kern_swiglu_f32(gate, gate, up, nf);
        kern_linear_f32(xn, gate, w->w_down, NULL, n, F, D);
        for (size_t i = 0; i < nx; i++) x[i] += xn[i];
    }
    cache->length = total;
    if (logits) {
        int first = all_logits ? 0 : n - 1, rows = all_logits ? n : 1;
        kern_rmsnorm_f32(xn, x + (size_t)first * D, m->final_norm, rows, D, (float)c->rms_eps);
        kern_linear_f32(logits, xn, m->lm_head, NULL, rows, D, c->vocab);
    }
    free(buf);
    return 0;
}

int model_transformer_random(model_transformer *m, const model_config *c, uint64_t seed, float std, xd_err *e) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    if (c->student) return xd_fail(e, "model_transformer_random makes teachers (xtrain init makes students)");
    if (model_config_validate(c, "random model", e) || alloc_layers(m, e) ||
        model_layout_build(&m->layout, c, false, e))
        return -1;
    m->n_params = m->layout.n_params;
    m->params = xd_malloc(sizeof(float) * m->n_params, e);
    if (!m->params) return -1;
    xd_rng r;
    xd_rng_seed(&r, seed);
    for (uint64_t i = 0; i < m->n_params; i++) m->params[i] = std * xd_rng_normal(&r);
    for (int i = 0; i < m->layout.n_entries; i++)
        if (strstr(m->layout.entries[i].name, "norm"))
            for (uint64_t j = 0; j < m->layout.entries[i].count; j++) m->params[m->layout.entries[i].offset + j] = 1;
    set_pointers(m);
    model_rope_inv_freq(c, m->rope_inv_freq);
    snprintf(m->source, sizeof m->source, "random %s (seed %llu)", c->model_type, (unsigned long long)seed);
    return 0;
}
