/* Tokenizer from GGUF metadata: the teacher (SmolLM2-135M-Instruct, found through XD_MODELS; the
 * test fails without it) against HF tokenizers' ids and the jinja chat template, the tiny
 * Llama-3 / Qwen2 / Llama-2 fixtures as GGUF against their tokenizer.json twins, speed, and
 * malformed metadata. */
#include "tokenizer_fixture.h"

#include "model/gguf.h"

static void test_teacher(void) {
    const char *dir = getenv("XD_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir ? dir : "models");
    model_gguf *g = NULL;
    xd_err e;
    int rc = model_gguf_open(path, &g, &e);
    CHECK_MSG(rc == 0, "the teacher is needed (deploy/fetch-teacher.sh, XD_MODELS): %s", e.msg);
    if (rc != 0) return;
    model_tokenizer *t = NULL;
    rc = model_tokenizer_load_gguf(g, &t, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) {
        CHECK(model_tokenizer_vocab_size(t) == 49152);
        CHECK(model_tokenizer_bos(t) == 1 && model_tokenizer_eos(t) == 2);
        CHECK(!model_tokenizer_adds_bos(t));
        CHECK(model_tokenizer_token_id(t, "<|im_end|>") == 2);
        CHECK(model_tokenizer_token_id(t, "<|im_start|>") == 1);
        json_t *exp = fixture_json("smollm2_gguf.json");
        if (exp) {
            check_fixture_strings(t, exp, "smollm2", false);
            check_chat(t, json_object_get(exp, "chat"), "smollm2");
            json_decref(exp);
        }
        check_random_roundtrip(t, "smollm2", false, false, 5000);

        /* speed: ~2 MB of mixed text */
        json_t *ex = fixture_json("smollm2_gguf.json");
        size_t cap = 2u << 20, n = 0;
        char *text = malloc(cap + 4096);
        json_t *strings = json_object_get(ex, "strings");
        for (size_t k = 0; n < cap; k++) {
            json_t *s = json_array_get(strings, k % json_array_size(strings));
            memcpy(text + n, json_string_value(s), json_string_length(s));
            n += json_string_length(s);
            text[n++] = k % 3 ? ' ' : '\n';
        }
        json_decref(ex);
        int *ids;
        size_t nid;
        double t0 = xd_now();
        CHECK(model_tokenizer_encode(t, text, n, false, false, &ids, &nid, &e) == 0);
        double dt = xd_now() - t0;
        fprintf(stderr, "smollm2: encoded %.2f MB into %zu tokens in %.3f s: %.1f MB/s\n", n / 1e6,
                nid, dt, n / 1e6 / dt);
        CHECK_MSG(n / 1e6 / dt > 0.5, "encoding is too slow: %.2f MB/s", n / 1e6 / dt);
        char *out;
        size_t out_len;
        CHECK(model_tokenizer_decode(t, ids, nid, false, &out, &out_len, &e) == 0);
        CHECK(out_len == n && memcmp(out, text, n) == 0);
        free(out);
        free(ids);
        free(text);
        model_tokenizer_free(t);
    }
    model_gguf_close(g);
}

static model_tokenizer *load_fixture_gguf(const char *name) {
    char path[1024], rel[256];
    snprintf(rel, sizeof rel, "%s/tokenizer.gguf", name);
    fixture_path(path, sizeof path, rel);
    model_gguf *g;
    xd_err e;
    int rc = model_gguf_open(path, &g, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc != 0) return NULL;
    model_tokenizer *t = NULL;
    rc = model_tokenizer_load_gguf(g, &t, &e);
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    model_gguf_close(g); /* the tokenizer keeps its own copies */
    return t;
}

/* The same vocabulary as GGUF metadata and as tokenizer.json gives the same ids: the fixture
 * strings (HF's ids) and random text. */
static void test_fixture_gguf(const char *name, bool nfc, bool spm) {
    model_tokenizer *t = load_fixture_gguf(name);
    if (!t) return;
    char rel[256], dir[1024];
    snprintf(rel, sizeof rel, "%s/expected.json", name);
    json_t *exp = fixture_json(rel);
    if (exp) {
        check_fixture_strings(t, exp, name, nfc);
        check_with_bos(t, exp, name);
        json_t *chat = json_object_get(exp, "chat");
        if (chat) check_chat(t, chat, name);
        json_decref(exp);
    }
    fixture_path(dir, sizeof dir, name);
    model_tokenizer *h;
    xd_err e;
    CHECK(model_tokenizer_load_hf(dir, &h, &e) == 0);
    CHECK(model_tokenizer_bos(h) == model_tokenizer_bos(t));
    CHECK(model_tokenizer_eos(h) == model_tokenizer_eos(t));
    CHECK(model_tokenizer_adds_bos(h) == model_tokenizer_adds_bos(t));
    xd_rng r;
    xd_rng_seed(&r, 99);
    char buf[512];
    int bad = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n = random_text(&r, buf, sizeof buf, it % 4 == 3, spm, NULL);
        int *a, *b;
        size_t na, nb;
        CHECK(model_tokenizer_encode(t, buf, n, false, true, &a, &na, &e) == 0);
        CHECK(model_tokenizer_encode(h, buf, n, false, true, &b, &nb, &e) == 0);
        if ((na != nb || memcmp(a, b, na * sizeof *a) != 0) && bad++ < 3) {
            fprintf(stderr, "%s: GGUF and tokenizer.json disagree on random text %d\n", name, it);
            print_ids("gguf", a, na);
            print_ids("json", b, nb);
        }
        free(a);
        free(b);
    }
    CHECK_MSG(bad == 0, "%s: %d random texts encode differently", name, bad);
    model_tokenizer_free(h);
    model_tokenizer_free(t);
}

/* ---------------------------------------------------------------- malformed metadata */

/* A GGUF v3 file with no tensors, built in memory. */
typedef struct gbuf {
    uint8_t d[1 << 16];
    size_t n;
    uint64_t kv;
} gbuf;

static void put(gbuf *b, const void *p, size_t n) {
    memcpy(b->d + b->n, p, n);
    b->n += n;
}
static void put_u32(gbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(gbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(gbuf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_str(gbuf *b, const char *key, const char *v) {
    put_str(b, key);
    put_u32(b, MODEL_GGUF_STRING);
    put_str(b, v);
    b->kv++;
}
static void kv_u32(gbuf *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, MODEL_GGUF_UINT32);
    put_u32(b, v);
    b->kv++;
}
static void kv_strs(gbuf *b, const char *key, const char *const *v, size_t n) {
    put_str(b, key);
    put_u32(b, MODEL_GGUF_ARRAY);
    put_u32(b, MODEL_GGUF_STRING);
    put_u64(b, n);
    for (size_t i = 0; i < n; i++) put_str(b, v[i]);
    b->kv++;
}
static void kv_i32s(gbuf *b, const char *key, const int32_t *v, size_t n) {
    put_str(b, key);
    put_u32(b, MODEL_GGUF_ARRAY);
    put_u32(b, MODEL_GGUF_INT32);
    put_u64(b, n);
    put(b, v, n * 4);
    b->kv++;
}

static gbuf *gguf_begin(void) {
    gbuf *b = calloc(1, sizeof *b);
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, 0); /* tensors */
    put_u64(b, 0); /* kv count, patched at the end */
    return b;
}

static int gguf_load(gbuf *b, model_tokenizer **t, xd_err *e) {
    memcpy(b->d + 16, &b->kv, 8);
    model_gguf *g;
    *t = NULL;
    int rc = model_gguf_open_memory(b->d, b->n, "synthetic.gguf", &g, e);
    CHECK_MSG(rc == 0, "%s", e->msg);
    if (rc == 0) {
        rc = model_tokenizer_load_gguf(g, t, e);
        model_gguf_close(g);
    }
    free(b);
    return rc;
}

/* The 256 byte-level chars, then "ab", so a merge "a b" is valid. */
static const char **byte_vocab(size_t *n) {
    static char chars[256][4];
    static const char *v[260];
    for (int c = 0; c < 256; c++) {
        int cp = (c <= 32)                ? 256 + c
                 : (c >= 127 && c <= 160) ? 256 + 33 + (c - 127)
                 : (c == 173)             ? 256 + 67
                                          : c;
        chars[c][utf8proc_encode_char(cp, (utf8proc_uint8_t *)chars[c])] = 0;
        v[c] = chars[c];
    }
    v[256] = "ab";
    v[257] = "<|im_end|>";
    *n = 258;
    return v;
}

static void expect_gguf_error(gbuf *b, const char *fragment) {
    model_tokenizer *t;
    xd_err e = {{0}};
    int rc = gguf_load(b, &t, &e);
    CHECK_ERR_CONTAINS(rc, e, fragment);
    if (rc == 0) model_tokenizer_free(t);
}

static void test_malformed(void) {
    size_t nv;
    const char **v = byte_vocab(&nv);
    const char *merges[] = {"a b"};
    int32_t types[258];
    for (size_t i = 0; i < nv; i++) types[i] = 1;
    types[257] = 3;

    gbuf *b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_str(b, "tokenizer.ggml.pre", "qwen2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_i32s(b, "tokenizer.ggml.token_type", types, nv);
    kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    kv_u32(b, "tokenizer.ggml.eos_token_id", 257);
    model_tokenizer *t;
    xd_err e;
    CHECK(gguf_load(b, &t, &e) == 0);
    if (t) {
        int *ids;
        size_t n;
        CHECK(model_tokenizer_encode(t, "ab<|im_end|>", 12, false, true, &ids, &n, &e) == 0);
        CHECK(n == 2 && ids[0] == 256 && ids[1] == 257);
        free(ids);
        CHECK(model_tokenizer_eos(t) == 257 && model_tokenizer_bos(t) == -1);
        model_tokenizer_free(t);
    }

    b = gguf_begin();
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    expect_gguf_error(b, "GGUF tokenizer: no tokenizer.ggml.model in the metadata");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "bert");
    expect_gguf_error(b, "tokenizer.ggml.model \"bert\" is not supported");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_str(b, "tokenizer.ggml.pre", "deepseek-coder");
    expect_gguf_error(b, "tokenizer.ggml.pre \"deepseek-coder\" is not supported");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    expect_gguf_error(b, "no tokenizer.ggml.tokens");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_i32s(b, "tokenizer.ggml.token_type", types, nv - 1);
    kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    expect_gguf_error(b, "tokenizer.ggml.token_type has 257 entries for 258 tokens");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    expect_gguf_error(b, "needs tokenizer.ggml.merges");

    const char *bad_merges[] = {"a b", "a zz"};
    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_strs(b, "tokenizer.ggml.merges", bad_merges, 2);
    expect_gguf_error(b, "tokenizer.ggml.merges: merge 1 names token \"zz\" that is not in the "
                         "vocabulary");

    const char *nospace[] = {"ab"};
    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_strs(b, "tokenizer.ggml.merges", nospace, 1);
    expect_gguf_error(b, "merge 0 is not \"a b\"");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    kv_u32(b, "tokenizer.ggml.bos_token_id", 258);
    expect_gguf_error(b, "BOS token id 258 is out of range (vocabulary of 258)");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    kv_str(b, "tokenizer.ggml.eos_token_id", "2");
    expect_gguf_error(b, "tokenizer.ggml.eos_token_id");

    types[5] = 9;
    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", v, nv);
    kv_i32s(b, "tokenizer.ggml.token_type", types, nv);
    kv_strs(b, "tokenizer.ggml.merges", merges, 1);
    expect_gguf_error(b, "tokenizer.ggml.token_type[5] is 9, not a token type");
    types[5] = 1;

    const char *dup[] = {"a", "b", ""};
    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", dup, 3);
    kv_strs(b, "tokenizer.ggml.merges", merges, 0);
    expect_gguf_error(b, "tokenizer.ggml.tokens: token 2 is empty");

    const char *invalid[] = {"a", "\xff\xfe"};
    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "gpt2");
    kv_strs(b, "tokenizer.ggml.tokens", invalid, 2);
    kv_strs(b, "tokenizer.ggml.merges", merges, 0);
    expect_gguf_error(b, "token 1 (\"\xff\xfe\") is not valid UTF-8");

    b = gguf_begin();
    kv_str(b, "tokenizer.ggml.model", "llama");
    kv_strs(b, "tokenizer.ggml.tokens", dup, 2);
    expect_gguf_error(b, "needs tokenizer.ggml.scores");
}

int main(void) {
    test_teacher();
    test_fixture_gguf("llama3", false, false);
    test_fixture_gguf("qwen2", true, false);
    test_fixture_gguf("llama2", false, true);
    test_malformed();
    TEST_MAIN_END();
}
