/* tests/unit/test_gguf_teacher.c — reads the real teacher, SmolLM2-135M-Instruct.Q4_1.gguf, from
 * $XD_MODELS (deploy/fetch-teacher.sh puts it there). Fails, not skips, when it is missing: CI
 * fetches the teacher before testing, so a missing file is a broken setup. */
#include "common/xd.h"
#include "model/gguf.h"
#include "test.h"

static void check_metadata(const model_gguf *g) {
    xd_err e;
    CHECK(model_gguf_version(g) == 3);
    CHECK(model_gguf_tensor_count(g) == 272);
    CHECK(model_gguf_kv_count(g) == 33);

    int64_t v = 0;
    CHECK(model_gguf_get_int(g, "llama.block_count", &v, &e) == 0 && v == 30);
    CHECK(model_gguf_get_int(g, "llama.embedding_length", &v, &e) == 0 && v == 576);
    CHECK(model_gguf_get_int(g, "llama.attention.head_count", &v, &e) == 0 && v == 9);
    CHECK(model_gguf_get_int(g, "llama.attention.head_count_kv", &v, &e) == 0 && v == 3);
    double f = 0;
    CHECK(model_gguf_get_float(g, "llama.rope.freq_base", &f, &e) == 0 && f == 100000.0);
    CHECK(model_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &f, &e) == 0);
    CHECK_NEAR(f, 1e-5, 1e-12);
    model_gguf_str s;
    CHECK(model_gguf_get_string(g, "general.architecture", &s, &e) == 0 && s.len == 5 &&
          memcmp(s.ptr, "llama", 5) == 0);
    bool b = true;
    CHECK(model_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, &e) == 0 && !b);

    const model_gguf_kv *tokens = NULL;
    CHECK(model_gguf_get_array(g, "tokenizer.ggml.tokens", MODEL_GGUF_STRING, &tokens, &e) == 0);
    if (tokens) {
        CHECK(tokens->array_count == 49152);
        model_gguf_str t0 = model_gguf_array_string(tokens, 0);
        CHECK(t0.len == 13 && memcmp(t0.ptr, "<|endoftext|>", 13) == 0);
        model_gguf_str last = model_gguf_array_string(tokens, 49151);
        CHECK(last.len == 7 && memcmp(last.ptr, "ectable", 7) == 0);
    }
    const model_gguf_kv *types = NULL;
    CHECK(model_gguf_get_array(g, "tokenizer.ggml.token_type", MODEL_GGUF_INT32, &types, &e) == 0);
    if (types) {
        CHECK(types->array_count == 49152);
        CHECK(model_gguf_array_int(types, 0) == 3 && model_gguf_array_int(types, 100) == 1);
    }
    const model_gguf_kv *merges = NULL;
    CHECK(model_gguf_get_array(g, "tokenizer.ggml.merges", MODEL_GGUF_STRING, &merges, &e) == 0);
    CHECK(merges && merges->array_count == 48900);
}

static void check_tensors(const model_gguf *g) {
    xd_err e;
    const model_tensor_view *embd = model_gguf_tensor(g, "token_embd.weight");
    CHECK(embd != NULL);
    if (embd) {
        CHECK(embd->dtype == MODEL_Q8_0);
        CHECK(embd->ndim == 2 && embd->shape[0] == 49152 && embd->shape[1] == 576);
        CHECK(embd->nbytes == 30081024);
    }
    const model_tensor_view *q = model_gguf_tensor(g, "blk.0.attn_q.weight");
    CHECK(q && q->dtype == MODEL_Q4_1 && q->ndim == 2 && q->shape[0] == 576 && q->shape[1] == 576);
    const model_tensor_view *norm = model_gguf_tensor(g, "blk.0.attn_norm.weight");
    CHECK(norm && norm->dtype == MODEL_F32 && norm->ndim == 1 && norm->shape[0] == 576);

    /* Expected values from the Python gguf package (0.19.0), independently of this reader:
     *   r = gguf.GGUFReader(path); t = <the tensor named blk.0.attn_k.weight>
     *   d = gguf.quants.dequantize(t.data, t.tensor_type)   # shape (192, 576)
     *   '%.9g' % d[i, j];  d.sum(dtype=numpy.float64);  numpy.abs(d).sum(dtype=numpy.float64) */
    const model_tensor_view *k = model_gguf_tensor(g, "blk.0.attn_k.weight");
    CHECK(k && k->dtype == MODEL_Q4_1 && k->ndim == 2 && k->shape[0] == 192 && k->shape[1] == 576);
    if (k) {
        uint64_t n = model_tensor_numel(k);
        float *d = malloc(n * sizeof *d);
        CHECK(d && model_tensor_to_f32(k, d, n, &e) == 0);
        if (d) {
            CHECK_NEAR(d[0 * 576 + 0], -0.155273438, 1e-8);
            CHECK_NEAR(d[0 * 576 + 1], 0.340209961, 1e-8);
            CHECK_NEAR(d[0 * 576 + 2], -0.485595703, 1e-8);
            CHECK_NEAR(d[1 * 576 + 2], -0.126953125, 1e-8);
            CHECK_NEAR(d[100 * 576 + 300], 0.509765625, 1e-8);
            CHECK_NEAR(d[191 * 576 + 575], 0.363647461, 1e-8);
            double sum = 0, abs_sum = 0;
            for (uint64_t i = 0; i < n; i++) {
                sum += d[i];
                abs_sum += fabs(d[i]);
            }
            CHECK_NEAR(sum, 26.937057495117188, 1e-6);
            CHECK_NEAR(abs_sum, 29794.781265258789, 1e-4);
        }
        free(d);
    }
    /* Same source: token_embd.weight (Q8_0), rows 0, 1 and 49151. */
    if (embd) {
        float *d = malloc(model_tensor_numel(embd) * sizeof *d);
        CHECK(d && model_tensor_to_f32(embd, d, model_tensor_numel(embd), &e) == 0);
        if (d) {
            CHECK_NEAR(d[0], -0.106544495, 1e-8);
            CHECK_NEAR(d[1 * 576 + 5], -0.00793457031, 1e-9);
            CHECK_NEAR(d[49151ull * 576 + 575], -0.0417022705, 1e-8);
        }
        free(d);
    }
}

int main(void) {
    const char *dir = getenv("XD_MODELS");
    if (!dir || !*dir) {
        fprintf(stderr, "test_gguf_teacher: XD_MODELS is not set; run deploy/fetch-teacher.sh and "
                        "configure with -DXD_MODELS_DIR=<its models directory>\n");
        return 1;
    }
    char path[4096];
    xd_err e;
    if (xd_path_join(path, sizeof path, dir, "SmolLM2-135M-Instruct.Q4_1.gguf", &e) != 0) {
        fprintf(stderr, "test_gguf_teacher: %s\n", e.msg);
        return 1;
    }
    if (!xd_file_exists(path)) {
        fprintf(stderr, "test_gguf_teacher: the teacher %s is missing; run deploy/fetch-teacher.sh "
                        "(CI fetches it before testing)\n", path);
        return 1;
    }
    model_gguf *g = NULL;
    if (model_gguf_open(path, &g, &e) != 0) {
        fprintf(stderr, "test_gguf_teacher: %s\n", e.msg);
        return 1;
    }
    check_metadata(g);
    check_tensors(g);
    model_gguf_close(g);
    TEST_MAIN_END();
}
