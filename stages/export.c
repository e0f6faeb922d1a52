/* xtrain export: a student as a Hugging Face directory that transformers loads with
 * trust_remote_code (the PyTorch modeling files ship inside xtrain, see export_files.cmake). */
#include "args.h"
#include "stages.h"
#include "model/model.h"
#include "model/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The .py files of model/hf/, embedded at build time (export_files.c, generated). */
typedef struct export_file {
    const char *name;
    const unsigned char *data;
    size_t len;
} export_file;
extern const export_file export_hf_files[];
extern const int export_hf_n_files;

/* An absent or empty directory is fine: exporting never mixes with files already there. */
static int prepare_out(const char *out, xd_err *e) {
    DIR *d = opendir(out);
    if (!d) {
        if (errno != ENOENT) return xd_fail(e, "%s: cannot open: %s", out, strerror(errno));
        if (mkdir(out, 0755) != 0) return xd_fail(e, "%s: cannot create: %s", out, strerror(errno));
        return 0;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            rc = xd_fail(e, "%s already exists and is not empty (holds %s): export into a new directory",
                         out, de->d_name);
            break;
        }
    closedir(d);
    return rc;
}

static int write_weights(const model_transformer *m, const char *out, bool bf16, xd_err *e) {
    const model_layout *L = &m->layout;
    model_st_entry *entries = xd_calloc((size_t)L->n_entries, sizeof *entries, e);
    uint16_t *half = bf16 ? xd_malloc(sizeof(uint16_t) * L->n_params, e) : NULL;
    if (!entries || (bf16 && !half)) {
        free(entries);
        return -1;
    }
    if (bf16)
        for (uint64_t i = 0; i < L->n_params; i++) half[i] = xd_f32_to_bf16(m->params[i]);
    for (int i = 0; i < L->n_entries; i++) {
        const model_tensor_entry *t = &L->entries[i];
        entries[i].name = t->name;
        entries[i].dtype = bf16 ? MODEL_BF16 : MODEL_F32;
        entries[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) entries[i].shape[d] = t->shape[d];
        entries[i].data = bf16 ? (const void *)(half + t->offset) : (const void *)(m->params + t->offset);
    }
    char path[4096];
    const char *meta[] = {"format", "pt", "producer", "xdistill export"};
    int rc = xd_path_join(path, sizeof path, out, "model.safetensors", e);
    if (rc == 0) rc = model_st_write(path, entries, (size_t)L->n_entries, meta, 2, e);
    free(entries);
    free(half);
    return rc;
}

static int write_json(const char *out, const char *name, json_t *j, xd_err *e) {
    char path[4096];
    if (xd_path_join(path, sizeof path, out, name, e)) return -1;
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (!text) return xd_fail(e, "%s: out of memory", path);
    int rc = xd_write_file_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

/* transformers' keys (the teacher's Llama-style ones and the student's settings, flat) for the
 * shipped modeling file, and xdistill's own "teacher" and "xlstm_hybrid" objects, so the
 * directory also loads in xtrain. */
static json_t *hf_config(const model_transformer *m, bool bf16) {
    const model_config *c = &m->cfg;
    json_t *x = model_config_to_json(c); /* {"model_type", "xlstm_hybrid": {...}, "teacher": {...}} */
    json_t *teacher = json_object_get(x, "teacher");
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "XlstmHybridForCausalLM"));
    json_object_set_new(j, "model_type", json_string("xlstm_hybrid"));
    json_object_set_new(j, "auto_map",
                        json_pack("{s:s, s:s}", "AutoConfig", "configuration_xlstm_hybrid.XlstmHybridConfig",
                                  "AutoModelForCausalLM", "modeling_xlstm_hybrid.XlstmHybridForCausalLM"));
    static const char *copied[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads", "head_dim",
                                   "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
                                   "tie_word_embeddings", "bos_token_id", "eos_token_id"};
    for (size_t i = 0; i < sizeof copied / sizeof *copied; i++) {
        json_t *v = json_object_get(teacher, copied[i]);
        json_object_set(j, copied[i], v ? v : json_null());
    }
    json_object_set_new(j, "attention_bias", json_boolean(c->qkv_bias));
    json_object_set_new(j, "attention_out_bias", json_boolean(c->o_bias));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "window", json_integer(c->window));
    json_object_set_new(j, "sinks", json_integer(c->sinks));
    json_object_set_new(j, "chunk", json_integer(c->chunk));
    json_object_set_new(j, "mlstm_eps", json_real(c->mlstm_eps));
    json_object_set_new(j, "teacher_model_type", json_string(c->model_type));
    json_object_set_new(j, "torch_dtype", json_string(bf16 ? "bfloat16" : "float32"));
    json_object_set_new(j, "use_cache", json_false());
    json_object_set(j, "xlstm_hybrid", json_object_get(x, "xlstm_hybrid"));
    json_object_set(j, "teacher", teacher);
    json_decref(x);
    return j;
}

static json_t *generation_config(const model_transformer *m) {
    int bos = m->cfg.bos_id, eos = m->cfg.eos_id;
    if (m->tokenizer && bos < 0) bos = model_tokenizer_bos(m->tokenizer);
    if (m->tokenizer && eos < 0) eos = model_tokenizer_eos(m->tokenizer);
    json_t *g = json_object();
    if (bos >= 0) json_object_set_new(g, "bos_token_id", json_integer(bos));
    if (eos >= 0) json_object_set_new(g, "eos_token_id", json_integer(eos));
    json_object_set_new(g, "use_cache", json_false()); /* the modeling file recomputes, no cache */
    return g;
}

static int export_run(const char *model_path, const char *out, bool bf16) {
    xd_err e = {{0}};
    model_transformer m;
    if (model_transformer_load(model_path, &m, &e)) {
        fprintf(stderr, "xtrain export: %s\n", e.msg);
        return 1;
    }
    if (!m.cfg.student) {
        fprintf(stderr, "xtrain export: %s is a %s Transformer, not a student (export writes students made by "
                        "xtrain init, align, distill or merge)\n", model_path, m.cfg.model_type);
        model_transformer_free(&m);
        return 1;
    }
    int rc = prepare_out(out, &e);
    if (rc == 0) rc = write_weights(&m, out, bf16, &e);
    if (rc == 0) {
        json_t *cfg = hf_config(&m, bf16), *gen = generation_config(&m);
        rc = write_json(out, "config.json", cfg, &e);
        if (rc == 0) rc = write_json(out, "generation_config.json", gen, &e);
        json_decref(cfg);
        json_decref(gen);
    }
    if (rc == 0 && m.tokenizer) rc = model_tokenizer_save_hf(m.tokenizer, out, &e);
    if (rc == 0 && !m.tokenizer)
        fprintf(stderr, "xtrain export: warning: %s has no tokenizer; the export has none either\n", model_path);
    for (int i = 0; rc == 0 && i < export_hf_n_files; i++) {
        char path[4096];
        rc = xd_path_join(path, sizeof path, out, export_hf_files[i].name, &e);
        if (rc == 0) rc = xd_write_file_atomic(path, export_hf_files[i].data, export_hf_files[i].len, &e);
    }
    if (rc == 0)
        printf("exported %s to %s: %llu parameters in %s, %d layers, window %d, sinks %d; load it with "
               "AutoModelForCausalLM.from_pretrained(\"%s\", trust_remote_code=True)\n",
               model_path, out, (unsigned long long)m.n_params, bf16 ? "bf16" : "f32", m.cfg.n_layers,
               m.cfg.window, m.cfg.sinks, out);
    else
        fprintf(stderr, "xtrain export: %s\n", e.msg);
    model_transformer_free(&m);
    return rc ? 1 : 0;
}

int stage_export(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *dtype = "bf16";
    arg_spec specs[] = {
        {"--model", ARG_STRING, &model_path, "the student: a directory written by xtrain init/align/distill/merge", false},
        {"--out", ARG_STRING, &out, "new (or empty) directory to write the Hugging Face model to", false},
        {"--dtype", ARG_STRING, &dtype, "weights as bf16 (default) or f32", false},
    };
    int n_specs = sizeof specs / sizeof specs[0];
    const char *usage = "xtrain export --model STUDENT --out DIR [--dtype bf16|f32]";
    xd_err e = {{0}};
    int prc = args_parse(specs, n_specs, argc, argv, &e);
    if (prc) {
        if (prc < 0) fprintf(stderr, "xtrain export: %s\n", e.msg);
        args_usage(usage, specs, n_specs);
        return prc < 0 ? 2 : 0;
    }
    const char *bad = !model_path ? "--model is required" : !out ? "--out is required" : NULL;
    if (bad || (strcmp(dtype, "bf16") && strcmp(dtype, "f32"))) {
        if (bad) fprintf(stderr, "xtrain export: %s\n", bad);
        else fprintf(stderr, "xtrain export: --dtype must be bf16 or f32, not \"%s\"\n", dtype);
        args_usage(usage, specs, n_specs);
        return 2;
    }
    return export_run(model_path, out, !strcmp(dtype, "bf16"));
}
