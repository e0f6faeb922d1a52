/* model/model.h — the public way into model/: configurations, the teacher Transformer (load from an
 * HF directory or a GGUF file, forward on the CPU with a KV cache), and its tokenizer. */
#ifndef XD_MODEL_H
#define XD_MODEL_H

#include "tokenizer.h"

typedef enum model_arch {
    MODEL_ARCH_LLAMA = 0, /* llama, SmolLM2, mistral */
    MODEL_ARCH_QWEN2,     /* q/k/v biases */
    MODEL_ARCH_MISTRAL,
} model_arch;

typedef enum model_rope_type {
    MODEL_ROPE_DEFAULT = 0,
    MODEL_ROPE_LINEAR,
    MODEL_ROPE_LLAMA3,
} model_rope_type;

typedef struct model_config {
    model_arch arch;
    char model_type[32];
    int n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab, max_positions;
    double rms_eps;
    double rope_theta;
    model_rope_type rope_type;
    double rope_factor;           /* linear and llama3 */
    double rope_low_freq_factor;  /* llama3 */
    double rope_high_freq_factor; /* llama3 */
    int rope_original_max;        /* llama3 original_max_position_embeddings */
    bool tied_embeddings;
    bool qkv_bias;
    bool o_bias;
    int sliding_window; /* 0: full causal attention (mistral may set a window) */
    int bos_id, eos_id; /* -1 when unknown */
} model_config;

/* Parses a Hugging Face config.json (llama, qwen2, mistral; SmolLM2 is llama). Reads both the keys
 * released checkpoints use (rope_theta, rope_scaling) and the newer rope_parameters object. */
int model_config_parse_hf(const char *json_text, size_t len, const char *name, model_config *c,
                          xd_err *e);
int model_config_load_hf(const char *dir, model_config *c, xd_err *e);
/* Checks sizes for consistency (heads divide, dims positive and bounded). */
int model_config_validate(const model_config *c, const char *name, xd_err *e);
/* The per-pair inverse frequencies of RoPE with the configured scaling: head_dim/2 values. */
void model_rope_inv_freq(const model_config *c, double *inv_freq);

/* fp32 weights in HF layout ([out, in] row-major), all in one allocation. */
typedef struct model_layer_weights {
    float *attn_norm;          /* [hidden] */
    float *wq, *wk, *wv, *wo;  /* [H*d, D], [G*d, D], [G*d, D], [D, H*d] */
    float *bq, *bk, *bv, *bo;  /* NULL without biases */
    float *mlp_norm;           /* [hidden] */
    float *w_gate, *w_up;      /* [F, D] */
    float *w_down;             /* [D, F] */
} model_layer_weights;

typedef struct model_transformer {
    model_config cfg;
    float *params;
    uint64_t n_params;
    float *embed;      /* [vocab, D] */
    float *final_norm; /* [D] */
    float *lm_head;    /* [vocab, D]; == embed when tied */
    double *rope_inv_freq; /* [head_dim/2], scaling applied (GGUF rope_freqs included) */
    model_layer_weights *layers;
    model_tokenizer *tokenizer; /* NULL when the checkpoint carries none */
    char source[1024];
} model_transformer;

/* path: an HF model directory (config.json + safetensors) or a .gguf file. */
int model_transformer_load(const char *path, model_transformer *m, xd_err *e);
void model_transformer_free(model_transformer *m);

/* A key/value cache for up to capacity positions. */
typedef struct model_kv_cache {
    int capacity, length;
    float *k, *v; /* [layers][capacity][G*d] */
} model_kv_cache;
int model_kv_cache_init(model_kv_cache *c, const model_config *cfg, int capacity, xd_err *e);
void model_kv_cache_free(model_kv_cache *c);

/* Runs n tokens at positions cache->length .. +n-1, appending to the cache. logits: NULL, or
 * [n, vocab] (all positions) when all_logits, else [vocab] for the last position only. */
int model_transformer_forward(const model_transformer *m, model_kv_cache *cache, const int *tokens,
                              int n, float *logits, bool all_logits, xd_err *e);

#endif
