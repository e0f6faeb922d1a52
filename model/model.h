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
    /* The hybrid student (config.json model_type "xlstm_hybrid"; DESIGN 1.1): every attention is
     * sliding-window attention over `window` recent keys plus `sinks` sink tokens, mixed with an
     * mLSTM computed in chunks of `chunk` tokens. The rest of this struct is its teacher's. */
    bool student;
    int window, sinks, chunk;
    double mlstm_eps;
    char init_id[40]; /* set by xtrain init and kept by every later stage: experts that share it
                         started from the same student, so averaging them is meaningful */
} model_config;

/* Parses a Hugging Face config.json (llama, qwen2, mistral; SmolLM2 is llama). Reads both the keys
 * released checkpoints use (rope_theta, rope_scaling) and the newer rope_parameters object. */
int model_config_parse_hf(const char *json_text, size_t len, const char *name, model_config *c,
                          xd_err *e);
int model_config_load_hf(const char *dir, model_config *c, xd_err *e);
/* The config as config.json writes it (a student: its settings and its teacher's config). The
 * caller owns the jansson object. */
struct json_t;
struct json_t *model_config_to_json(const model_config *c);
/* Checks sizes for consistency (heads divide, dims positive and bounded). */
int model_config_validate(const model_config *c, const char *name, xd_err *e);
/* The per-pair inverse frequencies of RoPE with the configured scaling: head_dim/2 values. */
void model_rope_inv_freq(const model_config *c, double *inv_freq);

/* Where each tensor of a model lives in its one flat parameter array (teacher tensors in HF
 * layout W[out, in], then the student's new ones). Offsets are in elements; MODEL_ABSENT marks a
 * tensor the config does not have (biases, the untied LM head). */
#define MODEL_ABSENT UINT64_MAX
typedef struct model_tensor_entry {
    char name[96]; /* the Hugging Face name; new student tensors follow the same scheme */
    int ndim;
    int64_t shape[3];
    uint64_t offset, count;
    int permute_heads; /* GGUF llama q/k: rows interleaved per head, un-permuted on load */
    bool student_new;  /* a parameter the teacher does not have (the only ones align trains) */
} model_tensor_entry;

typedef struct model_layer_offsets {
    uint64_t attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, mlp_norm, w_gate, w_up, w_down;
    /* student: Hedgehog maps [H, d, d] for q and k; gates w [D, H], b [H]; output gate
     * w [H, 3d], b [H] */
    uint64_t fmap_q, fmap_k, igate_w, igate_b, fgate_w, fgate_b, ogate_w, ogate_b;
} model_layer_offsets;

typedef struct model_layout {
    model_tensor_entry *entries;
    int n_entries;
    model_layer_offsets *layers;
    uint64_t embed, final_norm, lm_head; /* lm_head == embed when tied */
    uint64_t n_params;
} model_layout;

/* gguf_permute: mark q/k for un-permuting (llama-architecture GGUF files). */
int model_layout_build(model_layout *layout, const model_config *c, bool gguf_permute, xd_err *e);
void model_layout_free(model_layout *layout);
const model_tensor_entry *model_layout_find(const model_layout *layout, const char *name);

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
    model_layout layout;
    float *params; /* layout.n_params floats */
    uint64_t n_params;
    float *embed;      /* [vocab, D] */
    float *final_norm; /* [D] */
    float *lm_head;    /* [vocab, D]; == embed when tied */
    double *rope_inv_freq; /* [head_dim/2], scaling applied (GGUF rope_freqs included) */
    model_layer_weights *layers;
    model_tokenizer *tokenizer; /* NULL when the checkpoint carries none */
    char tokenizer_source[1024]; /* a student's: where its tokenizer was loaded from ("" none) */
    char source[1024];
} model_transformer;

/* path: an HF model directory (config.json + safetensors) or a .gguf file. */
int model_transformer_load(const char *path, model_transformer *m, xd_err *e);
void model_transformer_free(model_transformer *m);
/* A teacher of config c with random weights (normal, std; norms 1), for benchmarks and tests. */
int model_transformer_random(model_transformer *m, const model_config *c, uint64_t seed, float std, xd_err *e);

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
/* What align needs from the teacher, for layers first..last: each layer's normalised input
 * xn [n, D] and its attention output before W_o, attn [n, H*d], at [layer - first]. NULL arrays
 * are skipped. */
typedef struct model_capture {
    int first_layer, last_layer;
    float *xn, *attn;
} model_capture;
int model_transformer_forward_capture(const model_transformer *m, model_kv_cache *cache,
                                      const int *tokens, int n, float *logits, bool all_logits,
                                      const model_capture *cap, xd_err *e);

/* ---- the hybrid student (model/student.c) ---- */

typedef struct model_student_settings {
    int window, sinks, chunk;
    double mlstm_eps;
    /* the new parameters' starting values: b_f spread linearly over the heads from forget_bias_min
       to forget_bias_max (f = sigmoid(b_f): 3 forgets in ~20 tokens, 6 in ~400, 9 in ~8000), b_o */
    double forget_bias_min, forget_bias_max, output_bias;
} model_student_settings;
#define MODEL_FORGET_BIAS_MIN 3.0
#define MODEL_FORGET_BIAS_MAX 6.0
#define MODEL_OUTPUT_BIAS 0.0

/* A student from a teacher: every teacher weight copied, the new parameters at their starting
 * values (feature maps = identity, gate weights 0, b_i = 0, b_f spread over the heads and b_o as
 * the settings say). The result is a model_transformer with cfg.student set. */
int model_student_init(const model_transformer *teacher, const model_student_settings *settings,
                       model_transformer *student, xd_err *e);
/* Writes DIR/model.safetensors (F32), the tokenizer (DIR/tokenizer.json, tokenizer_config.json:
 * model_tokenizer_save_hf) and DIR/config.json, each atomically. tokenizer_source (may be NULL;
 * else m->tokenizer_source is used) is written into config.json only when m has no tokenizer or
 * one that tokenizer.json cannot express: where the tokenizer is loaded from then. */
int model_save(const model_transformer *m, const char *dir, const char *tokenizer_source,
               xd_err *e);

/* Chunkwise inference over one window: the final-norm hidden states [T, D]. */
int model_student_hidden(const model_transformer *m, const int *tokens, int T, float *hidden,
                         xd_err *e);
/* logits [n, V] = hidden [n, D] times the LM head. */
void model_lm_head(const model_transformer *m, const float *hidden, int n, float *logits);

/* The step form's state: per layer and head an mLSTM state (C, n, m), per layer the sink keys and
 * values and a ring of the last `window` — a fixed size whatever the context length. */
typedef struct model_student_swa_cache {
    float *sink_k, *sink_v, *ring_k, *ring_v;
} model_student_swa_cache;
typedef struct model_student_state {
    int pos;
    size_t bytes; /* the state's whole size */
    struct kern_mlstm_state_f32 *mlstm;
    model_student_swa_cache *swa;
    float *work, *buf;
} model_student_state;
int model_student_state_init(model_student_state *st, const model_config *c, xd_err *e);
void model_student_state_free(model_student_state *st);
/* Consumes one token at position st->pos; logits [V] (may be NULL). */
int model_student_step(const model_transformer *m, model_student_state *st, int token,
                       float *logits, xd_err *e);
/* Consumes n tokens; from an empty state in the chunkwise form (every token at once, the mLSTM
 * states and the window's keys and values handed to the step form), else one at a time. logits:
 * the last token's [V] (may be NULL). The same state as n steps, to float rounding. */
int model_student_prefill(const model_transformer *m, model_student_state *st, const int *tokens, int n,
                          float *logits, xd_err *e);

/* Training: forward with the activations kept (keep) and backward, in f32 and f64 (f64 for the
 * gradient checks). Gradients add into grads, laid out as the parameters. */
typedef struct model_student_acts_f32 model_student_acts_f32;
typedef struct model_student_acts_f64 model_student_acts_f64;
#define MODEL_STUDENT_TRAIN_DECLARE(real, S)                                                     \
    int model_student_acts_new_##S(const model_config *c, int T, bool keep,                      \
                                   model_student_acts_##S **out, xd_err *e);                     \
    void model_student_acts_free_##S(model_student_acts_##S *s);                                 \
    const real *model_student_acts_hidden_##S(const model_student_acts_##S *s);                  \
    int model_student_forward_##S(const model_config *c, const model_layout *L,                  \
                                  const real *params, const double *inv_freq, const int *tokens,\
                                  int T, real *logits, model_student_acts_##S *s, xd_err *e);    \
    int model_student_backward_##S(const model_config *c, const model_layout *L,                 \
                                   const real *params, const model_student_acts_##S *s,          \
                                   const real *dlogits, real *grads, const int *tokens,          \
                                   xd_err *e);
MODEL_STUDENT_TRAIN_DECLARE(float, f32)
MODEL_STUDENT_TRAIN_DECLARE(double, f64)

/* One layer's attention alone (align): yhat [T, H*d] from the teacher's normalised input xn
 * [T, D]; the backward adds the gradients of that layer's new parameters only into grads. */
typedef struct model_student_layer_f32 model_student_layer_f32;
typedef struct model_student_layer_f64 model_student_layer_f64;
#define MODEL_STUDENT_LAYER_DECLARE(real, S)                                                     \
    int model_student_layer_new_##S(const model_config *c, const double *inv_freq, int T,        \
                                    model_student_layer_##S **out, xd_err *e);                   \
    void model_student_layer_free_##S(model_student_layer_##S *w);                               \
    const real *model_student_layer_forward_##S(const model_config *c, const model_layout *L,    \
                                                const real *params, int layer, const real *xn,   \
                                                model_student_layer_##S *w, xd_err *e);          \
    int model_student_layer_backward_##S(const model_config *c, const model_layout *L,           \
                                         const real *params, int layer, const real *xn,          \
                                         const model_student_layer_##S *w, const real *dyhat,    \
                                         real *grads, xd_err *e);
MODEL_STUDENT_LAYER_DECLARE(float, f32)
MODEL_STUDENT_LAYER_DECLARE(double, f64)

#endif
