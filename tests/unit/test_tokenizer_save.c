/* model_tokenizer_save_hf: every tokenizer the loaders read (the SmolLM2 teacher's GGUF — found
 * through XD_MODELS, the test fails without it —, the Llama-2 / Llama-3 / Qwen2 fixtures as GGUF
 * and as tokenizer.json, Llama-2 behind Metaspace) written as tokenizer.json and read back: the
 * same ids for varied text, the same decoded text, the same special tokens and chat prompt. */
#define _XOPEN_SOURCE 700
#include "tokenizer_fixture.h"

#include "model/gguf.h"

#include <unistd.h>

static char tmpdir[64];

static char *read_all(const char *path, size_t *len) {
    char *s = NULL;
    xd_err e;
    if (xd_read_file(path, 64u << 20, &s, len, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return NULL;
    }
    return s;
}

/* Texts a user would feed: English prose, code, scripts and emoji, digits, whitespace runs,
 * special tokens written in the text, a leading space (SentencePiece prefixes). */
static const char *TEXTS[] = {
    ("def main(argv):\n    for i in range(10):\n\t\tprint(f\"{i:03d} -> {i*i}\")  # squares\n    "
     "return {'a': [1, 2.5e-3], \"b\": None}\n"),
    "int x = 0x1F; /* C */ if (x >= 31 && y != -7) { z += 1234567; }\r\n",
    "Grüße aus Köln! Ελληνικά, русский, 日本語のテキスト、中文，한국어 — «quotes» … ½ ⅞ ²³",
    "emoji 🤖🚀👩‍👩‍👧 and combining e\xcc\x81 vs \xc3\xa9, NBSP\xc2\xa0here, zero\xe2\x80\x8bwidth",
    "   leading spaces and\n\n\nnewlines\t\ttabs   trailing   ",
    " a leading space",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<s>[INST] hi [/INST]</s><|begin_of_text|><|endoftext|><unk>",
    "1234567890 3.14159 1,000,000 v2.0.1 ٣٤٥ ١٢",
    "I'm sure they'd've known: it's 'quoted' -- DON'T SHOUT. The end.",
};

static void check_same(const model_tokenizer *a, const model_tokenizer *b, const char *name,
                       const char *text, size_t len) {
    for (int mode = 0; mode < 4; mode++) {
        bool add_bos = mode & 1, parse_special = mode & 2;
        if (add_bos && model_tokenizer_bos(a) < 0) continue; /* Qwen2 has none */
        int *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        xd_err e;
        int ra = model_tokenizer_encode(a, text, len, add_bos, parse_special, &ia, &na, &e);
        CHECK_MSG(ra == 0, "%s: %s", name, e.msg);
        CHECK(model_tokenizer_encode(b, text, len, add_bos, parse_special, &ib, &nb, &e) == ra);
        bool same = na == nb && (na == 0 || memcmp(ia, ib, na * sizeof *ia) == 0);
        CHECK_MSG(same, "%s: ids differ after the round trip (bos %d, special %d) for \"%.60s\"", name,
                  add_bos, parse_special, text);
        if (!same) {
            print_ids("original", ia, na);
            print_ids("saved", ib, nb);
        }
        for (int skip = 0; skip < 2 && same; skip++) {
            char *da = NULL, *db = NULL;
            size_t la = 0, lb = 0;
            CHECK(model_tokenizer_decode(a, ia, na, skip, &da, &la, &e) == 0);
            CHECK(model_tokenizer_decode(b, ia, na, skip, &db, &lb, &e) == 0);
            CHECK_MSG(la == lb && memcmp(da, db, la) == 0, "%s: decode differs for \"%.60s\"", name, text);
            free(da);
            free(db);
        }
        free(ia);
        free(ib);
    }
}

/* Saves t, loads the directory back and compares everything a user sees. */
static void check_roundtrip(const model_tokenizer *t, const char *name, json_t *exp, bool hf_ids, bool nfc,
                            bool spm) {
    xd_err e = {{0}};
    int rc = model_tokenizer_save_hf(t, tmpdir, &e);
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    if (rc) return;
    model_tokenizer *u = NULL;
    rc = model_tokenizer_load_hf(tmpdir, &u, &e);
    CHECK_MSG(rc == 0, "%s: the saved tokenizer does not load: %s", name, e.msg);
    if (rc) return;
    int n = model_tokenizer_vocab_size(t);
    CHECK(model_tokenizer_vocab_size(u) == n);
    CHECK(model_tokenizer_bos(u) == model_tokenizer_bos(t));
    CHECK(model_tokenizer_eos(u) == model_tokenizer_eos(t));
    CHECK(model_tokenizer_adds_bos(u) == model_tokenizer_adds_bos(t));
    int bad = 0;
    for (int id = 0; id < n && model_tokenizer_vocab_size(u) == n; id++) {
        const char *ba, *bb;
        size_t la, lb;
        model_tokenizer_token_bytes(t, id, &ba, &la);
        model_tokenizer_token_bytes(u, id, &bb, &lb);
        if (la != lb || memcmp(ba, bb, la) || model_tokenizer_is_special(t, id) != model_tokenizer_is_special(u, id))
            bad++;
    }
    CHECK_MSG(bad == 0, "%s: %d tokens decode differently or changed their special flag", name, bad);

    char path[1024];
    snprintf(path, sizeof path, "%s/english.txt", test_data_dir());
    size_t len;
    char *english = read_all(path, &len);
    CHECK(english != NULL);
    if (english) check_same(t, u, name, english, len);
    free(english);
    for (size_t i = 0; i < sizeof TEXTS / sizeof *TEXTS; i++) check_same(t, u, name, TEXTS[i], strlen(TEXTS[i]));
    size_t i;
    json_t *js;
    json_array_foreach(json_object_get(exp, "strings"), i, js)
        check_same(t, u, name, json_string_value(js), json_string_length(js));
    /* and the saved one still gives HF tokenizers' ids (exp: computed by HF on the original) */
    if (hf_ids) {
        check_fixture_strings(u, exp, name, nfc);
        if (json_object_get(exp, "with_bos")) check_with_bos(u, exp, name);
        if (json_object_get(exp, "chat")) check_chat(u, json_object_get(exp, "chat"), name);
    }
    check_random_roundtrip(u, name, nfc, spm, 300);
    xd_rng r;
    xd_rng_seed(&r, 7);
    char buf[512];
    for (int k = 0; k < 300; k++) { /* random scripts, and arbitrary bytes */
        size_t m = random_text(&r, buf, sizeof buf, k % 3 == 0, false, NULL);
        check_same(t, u, name, buf, m);
    }

    model_chat_message msgs[] = {{"user", "What is 2+2?"}, {"assistant", "4"}, {"user", "Thanks!"}};
    char *ca = NULL, *cb = NULL;
    xd_err ea = {{0}}, eb = {{0}};
    int ra = model_chat_render(t, msgs, 3, true, &ca, &ea), rb = model_chat_render(u, msgs, 3, true, &cb, &eb);
    CHECK_MSG(ra == rb, "%s: the chat template did not survive (%s / %s)", name, ea.msg, eb.msg);
    if (ra == 0 && rb == 0) CHECK_MSG(!strcmp(ca, cb), "%s: chat prompts differ", name);
    free(ca);
    free(cb);

    /* saving what was loaded gives the same files: the format is a fixed point */
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/tokenizer.json", tmpdir);
    size_t l1, l2;
    char *first = read_all(p1, &l1);
    CHECK(model_tokenizer_save_hf(u, tmpdir, &e) == 0);
    char *second = read_all(p1, &l2);
    CHECK_MSG(first && second && l1 == l2 && !memcmp(first, second, l1),
              "%s: tokenizer.json changes when saved again", name);
    snprintf(p2, sizeof p2, "%s/tokenizer_config.json", tmpdir);
    free(first);
    free(second);
    json_error_t je;
    json_t *cfg = json_load_file(p2, 0, &je);
    CHECK_MSG(cfg && json_is_boolean(json_object_get(cfg, "add_bos_token")), "%s: tokenizer_config.json", name);
    json_decref(cfg);
    model_tokenizer_free(u);
}

static model_tokenizer *load_gguf(const char *path) {
    model_gguf *g;
    xd_err e;
    int rc = model_gguf_open(path, &g, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return NULL;
    model_tokenizer *t = NULL;
    rc = model_tokenizer_load_gguf(g, &t, &e);
    CHECK_MSG(rc == 0, "%s: %s", path, e.msg);
    model_gguf_close(g);
    return t;
}

static void test_teacher(void) {
    const char *dir = getenv("XD_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir ? dir : "models");
    CHECK_MSG(xd_file_exists(path), "the teacher is needed (deploy/fetch-teacher.sh, XD_MODELS): %s", path);
    model_tokenizer *t = load_gguf(path);
    if (!t) return;
    json_t *exp = fixture_json("smollm2_gguf.json");
    check_roundtrip(t, "smollm2 (GGUF)", exp, true, false, false);
    /* what HF's own tokenizer.json for SmolLM2 says, so transformers reads the same tokenizer */
    char p[1024];
    snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
    json_error_t je;
    json_t *tj = json_load_file(p, 0, &je);
    json_t *model = json_object_get(tj, "model");
    CHECK(json_object_size(json_object_get(model, "vocab")) == 49152);
    CHECK(json_array_size(json_object_get(model, "merges")) > 48000);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(tj, "pre_tokenizer"), "type")), "Sequence"));
    json_t *added = json_object_get(tj, "added_tokens");
    CHECK(json_array_size(added) >= 17);
    json_t *first = json_array_get(added, 0);
    CHECK(json_integer_value(json_object_get(first, "id")) == 0 && json_is_true(json_object_get(first, "special")));
    json_decref(tj);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tmpdir);
    json_t *cfg = json_load_file(p, 0, &je);
    CHECK(!strcmp(json_string_value(json_object_get(cfg, "eos_token")), "<|im_end|>"));
    CHECK(!strcmp(json_string_value(json_object_get(cfg, "bos_token")), "<|im_start|>"));
    CHECK(json_is_false(json_object_get(cfg, "add_bos_token")));
    CHECK(strstr(json_string_value(json_object_get(cfg, "chat_template")), "<|im_start|>") != NULL);
    json_decref(cfg);
    json_decref(exp);
    model_tokenizer_free(t);
}

static void test_fixtures(void) {
    const char *names[] = {"llama2", "llama3", "qwen2"};
    for (int i = 0; i < 3; i++) {
        char rel[256], path[1024], label[64];
        snprintf(rel, sizeof rel, "%s/expected.json", names[i]);
        json_t *exp = fixture_json(rel);
        snprintf(rel, sizeof rel, "%s/tokenizer.gguf", names[i]);
        fixture_path(path, sizeof path, rel);
        model_tokenizer *t = load_gguf(path);
        snprintf(label, sizeof label, "%s (GGUF)", names[i]);
        if (t) check_roundtrip(t, label, exp, true, i == 2, i == 0);
        model_tokenizer_free(t);
        fixture_path(path, sizeof path, names[i]);
        xd_err e;
        t = NULL;
        CHECK_MSG(model_tokenizer_load_hf(path, &t, &e) == 0, "%s", e.msg);
        snprintf(label, sizeof label, "%s (tokenizer.json)", names[i]);
        if (t) check_roundtrip(t, label, exp, true, i == 2, i == 0);
        model_tokenizer_free(t);
        json_decref(exp);
    }
}

/* Llama-2's vocabulary behind the Metaspace pre-tokenizer (prefix on the first segment, and on
 * every word with split) instead of its Prepend/Replace normalizer. */
static void test_metaspace(void) {
    const char *schemes[] = {"first", "always"};
    for (int i = 0; i < 2; i++) {
        json_t *tj = fixture_json("llama2/tokenizer.json");
        if (!tj) return;
        json_object_set_new(tj, "normalizer", json_null());
        json_object_set_new(tj, "pre_tokenizer",
                            json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                                      "prepend_scheme", schemes[i], "split", i));
        char *text = json_dumps(tj, JSON_COMPACT);
        json_decref(tj);
        model_tokenizer *t = NULL;
        xd_err e;
        CHECK_MSG(model_tokenizer_load_hf_json(text, strlen(text), "metaspace", &t, &e) == 0, "%s", e.msg);
        free(text);
        json_t *exp = fixture_json("llama2/expected.json");
        if (t) check_roundtrip(t, schemes[i], exp, false, false, true);
        json_decref(exp);
        model_tokenizer_free(t);
    }
}

/* Two ids of the same text cannot be keys of one vocabulary object: refused, naming both. */
static void test_unrepresentable(void) {
    const char *json = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
                       " \"added_tokens\": [{\"id\": 2, \"content\": \"a\", \"special\": true}],"
                       " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}}";
    model_tokenizer *t = NULL;
    xd_err e = {{0}};
    int rc = model_tokenizer_load_hf_json(json, strlen(json), "dup", &t, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    rc = model_tokenizer_save_hf(t, tmpdir, &e);
    CHECK_ERR_CONTAINS(rc, e, "tokens 0 and 2 have the same text");
    model_tokenizer_free(t);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/xd_toksave_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    test_teacher();
    test_fixtures();
    test_metaspace();
    test_unrepresentable();
    char p[128];
    snprintf(p, sizeof p, "%s/tokenizer.json", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    TEST_MAIN_END();
}
