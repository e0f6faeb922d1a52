/* Hugging Face config.json for the Llama family. */
#include "model.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#define CONFIG_MAX_BYTES (4u << 20)

/* Reads an integer key. Absent or null: *out = dflt (or an error when required). */
static int get_int(json_t *obj, const char *key, bool required, int dflt, int *out,
                   const char *name, xd_err *e) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return xd_fail(e, "%s: missing \"%s\"", name, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return xd_fail(e, "%s: \"%s\" must be an integer", name, key);
    json_int_t x = json_integer_value(v);
    if (x < -1 || x > 100000000)
        return xd_fail(e, "%s: \"%s\" = %lld is out of range", name, key, (long long)x);
    *out = (int)x;
    return 0;
}

static int get_num(json_t *obj, const char *key, bool required, double dflt, double *out,
                   const char *name, xd_err *e) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return xd_fail(e, "%s: missing \"%s\"", name, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v)) return xd_fail(e, "%s: \"%s\" must be a number", name, key);
    *out = json_number_value(v);
    if (!isfinite(*out)) return xd_fail(e, "%s: \"%s\" is not finite", name, key);
    return 0;
}

static int get_bool(json_t *obj, const char *key, bool dflt, bool *out, const char *name,
                    xd_err *e) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) return xd_fail(e, "%s: \"%s\" must be true or false", name, key);
    *out = json_is_true(v);
    return 0;
}

/* eos_token_id may be an integer or a list of them (Llama 3 lists several); take the first. */
static int get_token_id(json_t *obj, const char *key, int *out, const char *name, xd_err *e) {
    json_t *v = json_object_get(obj, key);
    *out = -1;
    if (!v || json_is_null(v)) return 0;
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : NULL;
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100000000)
        return xd_fail(e, "%s: \"%s\" must be a token id or a list of them", name, key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* The rope scaling object: old "rope_scaling" ({"type"|"rope_type": ...}) or new
 * "rope_parameters" (which also carries rope_theta). */
static int parse_rope(json_t *root, model_config *c, const char *name, xd_err *e) {
    json_t *params = json_object_get(root, "rope_parameters");
    json_t *scaling = json_object_get(root, "rope_scaling");
    if (params && !json_is_null(params) && !json_is_object(params))
        return xd_fail(e, "%s: \"rope_parameters\" must be an object", name);
    if (scaling && !json_is_null(scaling) && !json_is_object(scaling))
        return xd_fail(e, "%s: \"rope_scaling\" must be an object or null", name);
    if (params && json_is_null(params)) params = NULL;
    if (scaling && json_is_null(scaling)) scaling = NULL;

    if (get_num(root, "rope_theta", false, 10000.0, &c->rope_theta, name, e)) return -1;
    json_t *s = scaling;
    if (params) {
        if (get_num(params, "rope_theta", false, c->rope_theta, &c->rope_theta, name, e))
            return xd_wrap(e, "rope_parameters");
        s = params;
    }
    if (c->rope_theta <= 0) return xd_fail(e, "%s: rope_theta must be positive", name);
    c->rope_type = MODEL_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    if (!s) return 0;

    json_t *t = json_object_get(s, "rope_type");
    if (!t) t = json_object_get(s, "type");
    const char *type = "default";
    if (t && !json_is_null(t)) {
        if (!json_is_string(t)) return xd_fail(e, "%s: rope \"rope_type\" must be a string", name);
        type = json_string_value(t);
    }
    if (!strcmp(type, "default")) return 0;
    if (get_num(s, "factor", true, 1.0, &c->rope_factor, name, e)) return xd_wrap(e, "rope scaling");
    if (c->rope_factor <= 0) return xd_fail(e, "%s: rope scaling factor must be positive", name);
    if (!strcmp(type, "linear")) {
        c->rope_type = MODEL_ROPE_LINEAR;
        return 0;
    }
    if (!strcmp(type, "llama3")) {
        c->rope_type = MODEL_ROPE_LLAMA3;
        if (get_num(s, "low_freq_factor", true, 1, &c->rope_low_freq_factor, name, e) ||
            get_num(s, "high_freq_factor", true, 4, &c->rope_high_freq_factor, name, e) ||
            get_int(s, "original_max_position_embeddings", true, 8192, &c->rope_original_max,
                    name, e))
            return xd_wrap(e, "llama3 rope scaling");
        if (c->rope_high_freq_factor <= c->rope_low_freq_factor || c->rope_low_freq_factor <= 0 ||
            c->rope_original_max <= 0)
            return xd_fail(e, "%s: llama3 rope scaling needs 0 < low_freq_factor < "
                              "high_freq_factor and original_max_position_embeddings > 0", name);
        return 0;
    }
    return xd_fail(e, "%s: rope type \"%s\" is not supported (default, linear and llama3 are)", name,
                   type);
}

static int parse_student(json_t *root, const char *name, model_config *c, xd_err *e);

/* A teacher configuration from its JSON object. */
static int parse_object(json_t *root, const char *name, model_config *c, xd_err *e) {
    memset(c, 0, sizeof *c);
    int rc = -1;
    if (!json_is_object(root)) return xd_fail(e, "%s: must be a JSON object", name);
    json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) {
        xd_fail(e, "%s: \"model_type\" must be a string", name);
        goto done;
    }
    const char *type = json_string_value(mt);
    if (!strcmp(type, "xlstm_hybrid")) return parse_student(root, name, c, e);
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    if (!strcmp(type, "llama")) c->arch = MODEL_ARCH_LLAMA;
    else if (!strcmp(type, "qwen2")) c->arch = MODEL_ARCH_QWEN2;
    else if (!strcmp(type, "mistral")) c->arch = MODEL_ARCH_MISTRAL;
    else {
        xd_fail(e, "%s: model_type \"%s\" is not supported (llama, qwen2 and mistral are)", name,
                type);
        goto done;
    }
    bool attention_bias = false;
    if (get_int(root, "hidden_size", true, 0, &c->hidden, name, e) ||
        get_int(root, "intermediate_size", true, 0, &c->ffn, name, e) ||
        get_int(root, "num_hidden_layers", true, 0, &c->n_layers, name, e) ||
        get_int(root, "num_attention_heads", true, 0, &c->n_heads, name, e) ||
        get_int(root, "num_key_value_heads", false, c->n_heads, &c->n_kv_heads, name, e) ||
        get_int(root, "vocab_size", true, 0, &c->vocab, name, e) ||
        get_int(root, "max_position_embeddings", false, 2048, &c->max_positions, name, e) ||
        get_num(root, "rms_norm_eps", false, 1e-6, &c->rms_eps, name, e) ||
        get_bool(root, "tie_word_embeddings", false, &c->tied_embeddings, name, e) ||
        get_bool(root, "attention_bias", false, &attention_bias, name, e) ||
        get_token_id(root, "bos_token_id", &c->bos_id, name, e) ||
        get_token_id(root, "eos_token_id", &c->eos_id, name, e) || parse_rope(root, c, name, e))
        goto done;
    if (c->n_heads <= 0) {
        xd_fail(e, "%s: num_attention_heads must be positive", name);
        goto done;
    }
    if (get_int(root, "head_dim", false, c->hidden / c->n_heads, &c->head_dim, name, e)) goto done;
    if (c->arch == MODEL_ARCH_QWEN2) {
        c->qkv_bias = true; /* Qwen2 always has q/k/v biases, no o bias */
        bool use_sw = false;
        if (get_bool(root, "use_sliding_window", false, &use_sw, name, e)) goto done;
        if (use_sw) {
            xd_fail(e, "%s: Qwen2 with use_sliding_window is not supported", name);
            goto done;
        }
    } else {
        c->qkv_bias = c->o_bias = attention_bias;
    }
    if (c->arch == MODEL_ARCH_MISTRAL &&
        get_int(root, "sliding_window", false, 0, &c->sliding_window, name, e))
        goto done;
    rc = model_config_validate(c, name, e);
done:
    return rc;
}

/* {"model_type": "xlstm_hybrid", "xlstm_hybrid": {window, sinks, chunk, mlstm_eps},
 *  "teacher": {the teacher's config.json}} */
static int parse_student(json_t *root, const char *name, model_config *c, xd_err *e) {
    json_t *teacher = json_object_get(root, "teacher"), *hy = json_object_get(root, "xlstm_hybrid");
    if (!json_is_object(teacher))
        return xd_fail(e, "%s: a student config needs the teacher's config as object \"teacher\"", name);
    if (!json_is_object(hy))
        return xd_fail(e, "%s: a student config needs its settings as object \"xlstm_hybrid\"", name);
    json_t *tt = json_object_get(teacher, "model_type");
    if (json_is_string(tt) && !strcmp(json_string_value(tt), "xlstm_hybrid"))
        return xd_fail(e, "%s: the teacher of a student cannot be a student", name);
    char tname[600];
    snprintf(tname, sizeof tname, "%s (teacher)", name);
    if (parse_object(teacher, tname, c, e)) return -1;
    c->student = true;
    if (get_int(hy, "window", true, 512, &c->window, name, e) ||
        get_int(hy, "sinks", true, 4, &c->sinks, name, e) ||
        get_int(hy, "chunk", true, 64, &c->chunk, name, e) ||
        get_num(hy, "mlstm_eps", false, 1e-6, &c->mlstm_eps, name, e))
        return -1;
    json_t *id = json_object_get(hy, "init_id");
    if (id && !json_is_string(id)) return xd_fail(e, "%s: \"init_id\" must be a string", name);
    if (id) snprintf(c->init_id, sizeof c->init_id, "%s", json_string_value(id));
    return model_config_validate(c, name, e);
}

int model_config_parse_hf(const char *text, size_t len, const char *name, model_config *c,
                          xd_err *e) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return xd_fail(e, "%s: not valid JSON (line %d: %s)", name, je.line, je.text);
    int rc = parse_object(root, name, c, e);
    json_decref(root);
    return rc;
}

json_t *model_config_to_json(const model_config *c) {
    json_t *t = json_object();
    json_object_set_new(t, "model_type", json_string(c->model_type));
    json_object_set_new(t, "hidden_size", json_integer(c->hidden));
    json_object_set_new(t, "intermediate_size", json_integer(c->ffn));
    json_object_set_new(t, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(t, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(t, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(t, "head_dim", json_integer(c->head_dim));
    json_object_set_new(t, "vocab_size", json_integer(c->vocab));
    json_object_set_new(t, "max_position_embeddings", json_integer(c->max_positions));
    json_object_set_new(t, "rms_norm_eps", json_real(c->rms_eps));
    json_object_set_new(t, "rope_theta", json_real(c->rope_theta));
    if (c->rope_type != MODEL_ROPE_DEFAULT) {
        json_t *r = json_object();
        json_object_set_new(r, "rope_type", json_string(c->rope_type == MODEL_ROPE_LINEAR ? "linear" : "llama3"));
        json_object_set_new(r, "factor", json_real(c->rope_factor));
        if (c->rope_type == MODEL_ROPE_LLAMA3) {
            json_object_set_new(r, "low_freq_factor", json_real(c->rope_low_freq_factor));
            json_object_set_new(r, "high_freq_factor", json_real(c->rope_high_freq_factor));
            json_object_set_new(r, "original_max_position_embeddings", json_integer(c->rope_original_max));
        }
        json_object_set_new(t, "rope_scaling", r);
    }
    json_object_set_new(t, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    if (c->arch != MODEL_ARCH_QWEN2) json_object_set_new(t, "attention_bias", json_boolean(c->qkv_bias));
    if (c->arch == MODEL_ARCH_MISTRAL && c->sliding_window)
        json_object_set_new(t, "sliding_window", json_integer(c->sliding_window));
    if (c->bos_id >= 0) json_object_set_new(t, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(t, "eos_token_id", json_integer(c->eos_id));
    if (!c->student) return t;
    json_t *root = json_object(), *hy = json_object();
    json_object_set_new(root, "model_type", json_string("xlstm_hybrid"));
    json_object_set_new(hy, "window", json_integer(c->window));
    json_object_set_new(hy, "sinks", json_integer(c->sinks));
    json_object_set_new(hy, "chunk", json_integer(c->chunk));
    json_object_set_new(hy, "mlstm_eps", json_real(c->mlstm_eps));
    if (c->init_id[0]) json_object_set_new(hy, "init_id", json_string(c->init_id));
    json_object_set_new(root, "xlstm_hybrid", hy);
    json_object_set_new(root, "teacher", t);
    return root;
}

int model_config_load_hf(const char *dir, model_config *c, xd_err *e) {
    char path[4096];
    if (xd_path_join(path, sizeof path, dir, "config.json", e)) return -1;
    char *text;
    size_t len;
    if (xd_read_file(path, CONFIG_MAX_BYTES, &text, &len, e)) return -1;
    int rc = model_config_parse_hf(text, len, path, c, e);
    free(text);
    return rc;
}

int model_config_validate(const model_config *c, const char *name, xd_err *e) {
    if (c->n_layers <= 0 || c->n_layers > 1024)
        return xd_fail(e, "%s: %d layers is out of range (1..1024)", name, c->n_layers);
    if (c->hidden <= 0 || c->hidden > 65536)
        return xd_fail(e, "%s: hidden size %d is out of range", name, c->hidden);
    if (c->ffn <= 0 || c->ffn > 1 << 20) return xd_fail(e, "%s: FFN size %d is out of range", name, c->ffn);
    if (c->n_heads <= 0 || c->n_heads > 1024) return xd_fail(e, "%s: %d heads is out of range", name, c->n_heads);
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads != 0)
        return xd_fail(e, "%s: %d key/value heads do not divide %d heads", name, c->n_kv_heads,
                       c->n_heads);
    if (c->head_dim <= 0 || c->head_dim % 2 != 0 || c->head_dim > 1024)
        return xd_fail(e, "%s: head_dim %d must be even and in 2..1024", name, c->head_dim);
    if (c->vocab <= 0 || c->vocab > 4 << 20) return xd_fail(e, "%s: vocab size %d is out of range", name, c->vocab);
    if (c->max_positions <= 0) return xd_fail(e, "%s: max_position_embeddings must be positive", name);
    if (!(c->rms_eps > 0 && c->rms_eps < 1)) return xd_fail(e, "%s: rms_norm_eps must be in (0, 1)", name);
    if (c->sliding_window < 0) return xd_fail(e, "%s: sliding_window must be positive", name);
    if (c->student) {
        if (c->window < 1) return xd_fail(e, "%s: window %d must be at least 1", name, c->window);
        if (c->sinks < 0) return xd_fail(e, "%s: sinks %d must be at least 0", name, c->sinks);
        if (c->chunk < 1) return xd_fail(e, "%s: chunk %d must be at least 1", name, c->chunk);
        if (!(c->mlstm_eps >= 0 && c->mlstm_eps < 1))
            return xd_fail(e, "%s: mlstm_eps must be in [0, 1)", name);
    }
    return 0;
}

void model_rope_inv_freq(const model_config *c, double *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = pow(c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_type == MODEL_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_type == MODEL_ROPE_LLAMA3) {
            /* As transformers' _compute_llama3_parameters: keep high frequencies, divide low ones
             * by the factor, interpolate smoothly between. */
            double low_wavelen = c->rope_original_max / c->rope_low_freq_factor;
            double high_wavelen = c->rope_original_max / c->rope_high_freq_factor;
            double wavelen = 2.0 * 3.14159265358979323846 / f;
            if (wavelen > low_wavelen) {
                f /= c->rope_factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (c->rope_original_max / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1 - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}
