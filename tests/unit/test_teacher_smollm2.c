/* The default teacher, SmolLM2-135M-Instruct from its Q4_1 GGUF, against transformers (which
 * dequantises the same GGUF with gguf-py and runs it in float64): the logits of the first tokens
 * and the perplexity of tests/data/english.txt. Needs deploy/fetch-teacher.sh to have run. */
#include "kernels/kernels.h"
#include "model/model.h"
#include "test.h"

int main(void) {
    const char *models = getenv("XD_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", models ? models : "models");
    xd_err e = {{0}};
    model_transformer m;
    int rc = model_transformer_load(path, &m, &e);
    CHECK_MSG(rc == 0, "%s (run deploy/fetch-teacher.sh first)", e.msg);
    if (rc) TEST_MAIN_END();
    CHECK(m.cfg.n_layers == 30 && m.cfg.hidden == 576 && m.cfg.n_heads == 9 && m.cfg.n_kv_heads == 3);
    CHECK(m.cfg.ffn == 1536 && m.cfg.vocab == 49152 && m.cfg.tied_embeddings && m.cfg.head_dim == 64);
    CHECK(m.tokenizer != NULL);

    int ids[4096], n = 0;
    snprintf(path, sizeof path, "%s/golden/smollm2/ids.txt", test_data_dir());
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    while (f && n < 4096 && fscanf(f, "%d", &ids[n]) == 1) n++;
    if (f) fclose(f);
    CHECK(n == 336);

    size_t V = 49152;
    float *logits = malloc(sizeof(float) * V * (size_t)n), *want = malloc(sizeof(float) * V * 2);
    snprintf(path, sizeof path, "%s/golden/smollm2/logits_head.f32", test_data_dir());
    f = fopen(path, "rb");
    CHECK(f && fread(want, sizeof(float), V * 2, f) == V * 2);
    if (f) fclose(f);
    model_kv_cache cache;
    CHECK(model_kv_cache_init(&cache, &m.cfg, n, &e) == 0);
    CHECK(model_transformer_forward(&m, &cache, ids, n, logits, true, &e) == 0);
    double md = 0, mw = 0;
    for (size_t i = 0; i < 2 * V; i++) {
        md = fmax(md, fabs((double)logits[i] - want[i]));
        mw = fmax(mw, fabs(want[i]));
    }
    printf("SmolLM2 GGUF first 2 tokens: max|dlogit|/max|logit| = %.3g\n", md / mw);
    CHECK_MSG(md / mw <= 1e-4, "relative logit error %g", md / mw);

    double nll = 0;
    for (int t = 0; t + 1 < n; t++) nll += kern_cross_entropy_row(logits + (size_t)t * V, (int)V, ids[t + 1]);
    double ppl = exp(nll / (n - 1));
    /* tests/data/golden/smollm2/ppl.json: transformers 5.17, float64, same GGUF */
    const double reference = 22.625751031581196;
    printf("SmolLM2 GGUF perplexity on english.txt: %.6f (transformers float64: %.6f)\n", ppl, reference);
    CHECK_MSG(fabs(ppl / reference - 1) <= 1e-4, "perplexity %.6f vs %.6f", ppl, reference);

    free(logits);
    free(want);
    model_kv_cache_free(&cache);
    model_transformer_free(&m);
    TEST_MAIN_END();
}
