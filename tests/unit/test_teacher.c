#define _XOPEN_SOURCE 700
/* The teacher forward pass against Hugging Face transformers (float64 golden logits), the GGUF
 * loader against the HF checkpoint it was converted from, the KV cache against a full forward,
 * and the loader's errors. */
#include "model/model.h"
#include "test.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static int *read_ids(const char *path, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    int cap = 4096, *ids = malloc(sizeof(int) * cap);
    *n = 0;
    while (*n < cap && fscanf(f, "%d", &ids[*n]) == 1) (*n)++;
    fclose(f);
    return ids;
}

static float *read_floats(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *x = malloc(sizeof(float) * count);
    size_t got = fread(x, sizeof(float), count, f);
    fclose(f);
    if (got != count) {
        free(x);
        return NULL;
    }
    return x;
}

/* max |a - b| / max |b| over n values */
static double rel_max_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

/* Full forward of the golden ids, then again in pieces through the KV cache (a prefix, then one
 * token at a time): both must reproduce transformers' logits. */
static void check_golden(const char *model_path, const char *case_dir) {
    char path[2048];
    xd_err e = {{0}};
    model_transformer m;
    int rc = model_transformer_load(model_path, &m, &e);
    CHECK_MSG(rc == 0, "%s: %s", model_path, e.msg);
    if (rc) return;
    int n = 0;
    snprintf(path, sizeof path, "%s/ids.txt", case_dir);
    int *ids = read_ids(path, &n);
    CHECK_MSG(ids && n > 0, "cannot read %s", path);
    size_t V = (size_t)m.cfg.vocab;
    snprintf(path, sizeof path, "%s/logits.f32", case_dir);
    float *want = read_floats(path, (size_t)n * V);
    CHECK_MSG(want != NULL, "cannot read %s", path);
    float *got = calloc((size_t)n * V, sizeof(float));
    model_kv_cache cache;
    CHECK(model_kv_cache_init(&cache, &m.cfg, n, &e) == 0);
    if (ids && want) {
        CHECK(model_transformer_forward(&m, &cache, ids, n, got, true, &e) == 0);
        double err = rel_max_err(got, want, (size_t)n * V);
        printf("%-40s full forward:   max|dlogit|/max|logit| = %.3g\n", model_path, err);
        CHECK_MSG(err <= 1e-4, "%s: relative logit error %g", model_path, err);

        cache.length = 0;
        int prefix = n / 2;
        CHECK(model_transformer_forward(&m, &cache, ids, prefix, got, true, &e) == 0);
        for (int t = prefix; t < n; t++)
            CHECK(model_transformer_forward(&m, &cache, ids + t, 1, got + (size_t)t * V, false, &e) == 0);
        err = rel_max_err(got, want, (size_t)n * V);
        printf("%-40s cached decoding: max|dlogit|/max|logit| = %.3g\n", model_path, err);
        CHECK_MSG(err <= 1e-4, "%s: relative logit error with the KV cache %g", model_path, err);
        /* one past the cache is an error, not an overflow */
        rc = model_transformer_forward(&m, &cache, ids, 1, got, false, &e);
        CHECK_ERR_CONTAINS(rc, e, "exceeds the KV cache");
    }
    model_kv_cache_free(&cache);
    free(got);
    free(want);
    free(ids);
    model_transformer_free(&m);
}

static void check_config_parsing(void) {
    model_config c;
    xd_err e;
    const char *new_style =
        "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
        " \"vocab_size\": 256, \"head_dim\": 32, \"rope_parameters\": {\"rope_type\": \"llama3\","
        " \"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0,"
        " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 32}}";
    CHECK(model_config_parse_hf(new_style, strlen(new_style), "c.json", &c, &e) == 0);
    CHECK(c.rope_type == MODEL_ROPE_LLAMA3 && c.rope_theta == 500000.0 && c.rope_factor == 8.0);
    CHECK(c.head_dim == 32 && c.n_kv_heads == 2 && !c.tied_embeddings);

    struct {
        const char *json, *fragment;
    } bad[] = {
        {"{", "not valid JSON"},
        {"[1]", "must be a JSON object"},
        {"{\"model_type\": 3}", "\"model_type\" must be a string"},
        {"{\"model_type\": \"gpt2\"}", "model_type \"gpt2\" is not supported"},
        {"{\"model_type\": \"llama\", \"hidden_size\": \"64\"}", "\"hidden_size\" must be an integer"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64}", "missing \"intermediate_size\""},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"num_key_value_heads\": 3, \"vocab_size\": 256}",
         "3 key/value heads do not divide 4 heads"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"vocab_size\": 256, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}",
         "rope type \"yarn\" is not supported"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"vocab_size\": 256, \"rope_scaling\": 5}",
         "\"rope_scaling\" must be an object or null"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2,"
         " \"num_attention_heads\": 4, \"vocab_size\": 256, \"tie_word_embeddings\": 1}",
         "\"tie_word_embeddings\" must be true or false"},
        {"{\"model_type\": \"llama\", \"model_type\": \"qwen2\"}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = model_config_parse_hf(bad[i].json, strlen(bad[i].json), "c.json", &c, &e);
        CHECK_ERR_CONTAINS(rc, e, bad[i].fragment);
        CHECK_MSG(strstr(e.msg, "c.json") != NULL, "error does not name the file: %s", e.msg);
    }
}

/* A checkpoint whose config disagrees with its weights is an error naming the tensor. */
static void check_mismatched_checkpoint(const char *golden) {
    char dir[] = "/tmp/xd_test_teacher_XXXXXX", src[PATH_MAX], dst[1024];
    CHECK(mkdtemp(dir) != NULL);
    char rel[2048];
    snprintf(rel, sizeof rel, "%s/llama/model.safetensors", golden);
    CHECK(realpath(rel, src) != NULL); /* the link must work from /tmp */
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    CHECK(symlink(src, dst) == 0);
    const char *base = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_attention_heads\": 4,"
                       " \"num_key_value_heads\": 2, \"vocab_size\": 256,";
    char cfg[1024], cfg_path[1024];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    xd_err e;
    model_transformer m;

    snprintf(cfg, sizeof cfg, "%s \"intermediate_size\": 128, \"num_hidden_layers\": 2}", base);
    CHECK(xd_write_file_atomic(cfg_path, cfg, strlen(cfg), &e) == 0);
    int rc = model_transformer_load(dir, &m, &e);
    CHECK_ERR_CONTAINS(rc, e, "model.layers.0.mlp.gate_proj.weight has shape [96, 64], the config implies [128, 64]");

    snprintf(cfg, sizeof cfg, "%s \"intermediate_size\": 96, \"num_hidden_layers\": 3}", base);
    CHECK(xd_write_file_atomic(cfg_path, cfg, strlen(cfg), &e) == 0);
    rc = model_transformer_load(dir, &m, &e);
    CHECK_ERR_CONTAINS(rc, e, "missing tensor model.layers.2.input_layernorm.weight");

    rc = model_transformer_load("/nonexistent/model", &m, &e);
    CHECK_ERR_CONTAINS(rc, e, "no such model");
    unlink(cfg_path);
    unlink(dst);
    rmdir(dir);
}

int main(void) {
    char golden[900], model[1024], case_dir[1024];
    snprintf(golden, sizeof golden, "%s/golden", test_data_dir());
    const char *cases[] = {"llama", "qwen2", "llama3_rope"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(case_dir, sizeof case_dir, "%s/%s", golden, cases[i]);
        check_golden(case_dir, case_dir);
    }
    /* the GGUF converted from the llama fixture, q/k permuted as llama.cpp does */
    snprintf(model, sizeof model, "%s/llama.gguf", golden);
    snprintf(case_dir, sizeof case_dir, "%s/llama", golden);
    check_golden(model, case_dir);
    check_config_parsing();
    check_mismatched_checkpoint(golden);
    TEST_MAIN_END();
}
