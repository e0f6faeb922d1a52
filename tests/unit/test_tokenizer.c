/* Tokenizer from tokenizer.json: ids equal to HF tokenizers' for the Llama-3, Qwen2 and Llama-2
 * shaped fixtures, round trips, special tokens, chat rendering, speed and the error paths. */
#include "tokenizer_fixture.h"

#include <sys/stat.h>
#include <unistd.h>

static model_tokenizer *load_dir(const char *name) {
    char dir[1024];
    fixture_path(dir, sizeof dir, name);
    model_tokenizer *t = NULL;
    xd_err e;
    int rc = model_tokenizer_load_hf(dir, &t, &e);
    CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
    return t;
}

static void test_fixture(const char *name, bool nfc, bool spm) {
    model_tokenizer *t = load_dir(name);
    if (!t) return;
    char rel[256];
    snprintf(rel, sizeof rel, "%s/expected.json", name);
    json_t *exp = fixture_json(rel);
    if (exp) {
        check_fixture_strings(t, exp, name, nfc);
        check_with_bos(t, exp, name);
        json_t *chat = json_object_get(exp, "chat");
        if (chat) check_chat(t, chat, name);
        json_decref(exp);
    }
    check_random_roundtrip(t, name, nfc, spm, 3000);
    model_tokenizer_free(t);
}

static void test_llama3_details(void) {
    model_tokenizer *t = load_dir("llama3");
    if (!t) return;
    int bot = model_tokenizer_token_id(t, "<|begin_of_text|>");
    CHECK(bot == 500);
    CHECK(model_tokenizer_bos(t) == bot);
    CHECK(model_tokenizer_eos(t) == model_tokenizer_token_id(t, "<|end_of_text|>"));
    CHECK(model_tokenizer_adds_bos(t)); /* from the TemplateProcessing post-processor */
    CHECK(model_tokenizer_vocab_size(t) == 505);
    CHECK(model_tokenizer_is_special(t, bot));
    CHECK(!model_tokenizer_is_special(t, 100));
    /* decode: special tokens as text unless skipped */
    int *ids;
    size_t n;
    xd_err e;
    const char *s = "<|begin_of_text|>Hi there<|eot_id|>";
    CHECK(model_tokenizer_encode(t, s, strlen(s), false, true, &ids, &n, &e) == 0);
    CHECK(n >= 3 && ids[0] == bot);
    char *out;
    size_t len;
    CHECK(model_tokenizer_decode(t, ids, n, false, &out, &len, &e) == 0);
    CHECK(strcmp(out, s) == 0 && len == strlen(s));
    free(out);
    CHECK(model_tokenizer_decode(t, ids, n, true, &out, &len, &e) == 0);
    CHECK(strcmp(out, "Hi there") == 0);
    free(out);
    free(ids);
    /* not parsed: the text of a special token is ordinary text */
    CHECK(model_tokenizer_encode(t, s, strlen(s), false, false, &ids, &n, &e) == 0);
    for (size_t i = 0; i < n; i++) CHECK(ids[i] < 500);
    free(ids);
    /* an apostrophe then a multi-byte char at the very end (found by fuzzing: read past the end) */
    for (int k = 0; k < 2; k++) {
        const char *q = k ? "x'\xcc\x81" : "'\xc5\xbf";
        CHECK(roundtrips(t, q, strlen(q), q, strlen(q)));
    }
    /* streaming: token bytes concatenate to the text */
    const char *u = "caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x8d\x95";
    CHECK(model_tokenizer_encode(t, u, strlen(u), false, false, &ids, &n, &e) == 0);
    char buf[64];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *b;
        size_t bl;
        CHECK(model_tokenizer_token_bytes(t, ids[i], &b, &bl) == 0);
        if (o + bl < sizeof buf) memcpy(buf + o, b, bl);
        o += bl;
    }
    CHECK(o == strlen(u) && memcmp(buf, u, o) == 0);
    const char *b;
    size_t bl;
    CHECK(model_tokenizer_token_bytes(t, -1, &b, &bl) < 0);
    CHECK(model_tokenizer_token_bytes(t, 505, &b, &bl) < 0);
    free(ids);
    /* decode rejects ids outside the vocabulary */
    int bad[2] = {5, 505};
    int rc = model_tokenizer_decode(t, bad, 2, false, &out, &len, &e);
    CHECK_ERR_CONTAINS(rc, e, "token 1 has id 505, out of range");
    /* add_bos puts the BOS first; empty text gives just that */
    CHECK(model_tokenizer_encode(t, "", 0, true, true, &ids, &n, &e) == 0);
    CHECK(n == 1 && ids[0] == bot);
    free(ids);
    CHECK(model_tokenizer_encode(t, "", 0, false, true, &ids, &n, &e) == 0);
    CHECK(n == 0 && ids != NULL);
    free(ids);
    /* no chat template in this one */
    model_chat_message m = {"user", "hi"};
    rc = model_chat_render(t, &m, 1, true, &out, &e);
    CHECK_ERR_CONTAINS(rc, e, "no chat template");
    model_tokenizer_free(t);
}

static void test_qwen2_details(void) {
    model_tokenizer *t = load_dir("qwen2");
    if (!t) return;
    CHECK(model_tokenizer_bos(t) == -1);
    CHECK(!model_tokenizer_adds_bos(t));
    CHECK(model_tokenizer_eos(t) == model_tokenizer_token_id(t, "<|im_end|>"));
    int *ids;
    size_t n;
    xd_err e;
    CHECK(model_tokenizer_encode(t, "x", 1, true, true, &ids, &n, &e) < 0);
    CHECK(strstr(e.msg, "no BOS") != NULL);
    /* an added non-special token is matched even without parse_special, and never skipped */
    int tc = model_tokenizer_token_id(t, "<tool_call>");
    CHECK(tc > 0 && !model_tokenizer_is_special(t, tc));
    CHECK(model_tokenizer_encode(t, "a<tool_call>b", 13, false, false, &ids, &n, &e) == 0);
    bool found = false;
    for (size_t i = 0; i < n; i++) found |= ids[i] == tc;
    CHECK(found);
    char *out;
    CHECK(model_tokenizer_decode(t, ids, n, true, &out, NULL, &e) == 0);
    CHECK(strcmp(out, "a<tool_call>b") == 0);
    free(out);
    free(ids);
    /* Qwen2.5's default system prompt comes out of its template */
    model_chat_message m = {"user", "Hi"};
    CHECK(model_chat_render(t, &m, 1, false, &out, &e) == 0);
    CHECK(strcmp(out, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                      "helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n") == 0);
    free(out);
    model_tokenizer_free(t);
}

static void test_llama2_details(void) {
    model_tokenizer *t = load_dir("llama2");
    if (!t) return;
    CHECK(model_tokenizer_bos(t) == 1 && model_tokenizer_eos(t) == 2);
    CHECK(model_tokenizer_adds_bos(t));
    json_t *exp = fixture_json("llama2/expected.json");
    if (!exp) return;
    /* decode with special tokens shown matches HF's decoder chain (Replace, ByteFallback, Fuse,
     * Strip) */
    json_t *ids_all = json_object_get(exp, "ids"), *dec = json_object_get(exp, "decoded");
    size_t i;
    json_t *want;
    json_array_foreach(dec, i, want) {
        json_t *arr = json_array_get(ids_all, i);
        size_t n = json_array_size(arr);
        int *ids = malloc((n ? n : 1) * sizeof *ids);
        for (size_t k = 0; k < n; k++) ids[k] = (int)json_integer_value(json_array_get(arr, k));
        char *out;
        size_t len;
        xd_err e;
        CHECK(model_tokenizer_decode(t, ids, n, false, &out, &len, &e) == 0);
        CHECK_MSG(len == json_string_length(want) && memcmp(out, json_string_value(want), len) == 0,
                  "llama2: decode of string %zu is \"%s\", HF says \"%s\"", i, out,
                  json_string_value(want));
        free(out);
        free(ids);
    }
    json_decref(exp);
    /* byte fallback: a char outside the vocabulary becomes its UTF-8 bytes */
    int *ids;
    size_t n;
    xd_err e;
    CHECK(model_tokenizer_encode(t, "\xf0\x9f\x8d\x95", 4, false, false, &ids, &n, &e) == 0);
    CHECK(n == 5);
    if (n == 5) {
        CHECK(ids[1] == 3 + 0xf0 && ids[2] == 3 + 0x9f && ids[3] == 3 + 0x8d && ids[4] == 3 + 0x95);
    }
    free(ids);
    model_tokenizer_free(t);
}

/* Long runs (one huge pre-token / SentencePiece word) must not go quadratic. */
static void test_long_runs(void) {
    const char *names[] = {"llama3", "qwen2", "llama2"};
    size_t n = 300000;
    char *s = malloc(n);
    for (int k = 0; k < 3; k++) {
        model_tokenizer *t = load_dir(names[k]);
        if (!t) continue;
        for (int pat = 0; pat < 3; pat++) {
            for (size_t i = 0; i < n; i++)
                s[i] = pat == 0 ? 'a' : pat == 1 ? ' ' : "ab cd\n"[i % 6];
            double t0 = xd_now();
            int *ids;
            size_t m;
            xd_err e;
            CHECK(model_tokenizer_encode(t, s, n, false, false, &ids, &m, &e) == 0);
            double dt = xd_now() - t0;
            CHECK_MSG(dt < 5.0, "%s: %zu bytes of pattern %d took %.2f s", names[k], n, pat, dt);
            CHECK(roundtrips(t, s, n, s, n));
            free(ids);
        }
        model_tokenizer_free(t);
    }
    free(s);
}

/* ---------------------------------------------------------------- error paths */

static char tmpdir[64];

static int load_text(const char *json, const char *config, model_tokenizer **t, xd_err *e) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    FILE *f = fopen(path, "wb");
    fputs(json, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
    unlink(path);
    if (config) {
        f = fopen(path, "wb");
        fputs(config, f);
        fclose(f);
    }
    return model_tokenizer_load_hf(tmpdir, t, e);
}

static void expect_error(const char *json, const char *config, const char *fragment) {
    model_tokenizer *t = (model_tokenizer *)1;
    xd_err e = {{0}};
    int rc = load_text(json, config, &t, &e);
    CHECK_ERR_CONTAINS(rc, e, fragment);
    CHECK(t == NULL);
    if (rc == 0) model_tokenizer_free(t);
}

#define BL_PRE "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}"

/* A fixture's vocabulary behind another normalizer / pre-tokenizer, against the ids HF gave for
 * that variant (expected.json key). */
static void check_variant(const char *name, const char *key, json_t *normalizer, json_t *pre) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/expected.json", name);
    json_t *exp = fixture_json(rel);
    snprintf(rel, sizeof rel, "%s/tokenizer.json", name);
    json_t *tj = fixture_json(rel);
    if (exp && tj) {
        json_object_set_new(tj, "normalizer", normalizer);
        json_object_set_new(tj, "pre_tokenizer", pre);
        char *text = json_dumps(tj, JSON_COMPACT);
        model_tokenizer *t;
        xd_err e;
        int rc = load_text(text, NULL, &t, &e);
        free(text);
        CHECK_MSG(rc == 0, "%s: %s", key, e.msg);
        json_t *strings = json_object_get(exp, "strings"), *want = json_object_get(exp, key);
        CHECK(json_array_size(want) == json_array_size(strings));
        size_t i;
        json_t *js;
        json_array_foreach(strings, i, js) {
            if (rc != 0) break;
            int *ids;
            size_t n;
            const char *s = json_string_value(js);
            CHECK(model_tokenizer_encode(t, s, json_string_length(js), false, true, &ids, &n, &e) ==
                  0);
            CHECK(ids_match(ids, n, json_array_get(want, i), key, i, s));
            free(ids);
        }
        if (rc == 0) model_tokenizer_free(t);
    } else {
        json_decref(normalizer);
        json_decref(pre);
    }
    json_decref(exp);
    json_decref(tj);
}

static void test_variants(void) {
    /* Llama-2 with the newer Metaspace pre-tokenizer in place of the Prepend/Replace normalizer */
    check_variant("llama2", "metaspace_first", json_null(),
                  json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                            "\xe2\x96\x81", "prepend_scheme", "first", "split", 0));
    check_variant("llama2", "metaspace_always_split", json_null(),
                  json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                            "\xe2\x96\x81", "prepend_scheme", "always", "split", 1));
    /* GPT-2 (ByteLevel with its own regex) and SmolLM2 (Digits first) over Llama-3's vocabulary */
    check_variant(
        "llama3", "gpt2", json_null(),
        json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 1));
    check_variant("llama3", "smollm", json_null(),
                  json_pack("{s:s, s:[{s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                            "pretokenizers", "type", "Digits", "individual_digits", 1, "type",
                            "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1));
}

static void test_errors(void) {
    model_tokenizer *t;
    xd_err e;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/none", tmpdir);
    int rc = model_tokenizer_load_hf(missing, &t, &e);
    CHECK_ERR_CONTAINS(rc, e, "tokenizer.json: cannot open");

    expect_error("{\"model\": ", NULL, "tokenizer.json: not valid JSON");
    expect_error("[1, 2]", NULL, "tokenizer.json: the top level is not an object");
    expect_error("{\"version\": \"1.0\"}", NULL, "tokenizer.json: no \"model\" object");
    expect_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", NULL,
                 "model type \"WordPiece\" is not supported");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": [\"a\"], \"merges\": []}}",
                 NULL, "tokenizer.json: model.vocab is not an object");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"0\"}, "
                 "\"merges\": []}}",
                 NULL, "model.vocab: the id of \"a\" is not an integer");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, "
                 "\"merges\": []}}",
                 NULL, "model.vocab: token \"a\" has id -3, out of range");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999}, "
                 "\"merges\": []}}",
                 NULL, "has id 99999999, out of range");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, "
                 "\"merges\": []}}",
                 NULL, "token id 1 has no entry");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, "
                 "\"merges\": []}}",
                 NULL, "token id 0 is given twice");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, "
                 "\"ab\": 2}, \"merges\": [\"a b\", \"a c\"]}}",
                 NULL, "tokenizer.json: merge 1 names token \"c\" that is not in the vocabulary");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                 "\"merges\": [[\"a\", \"b\"]]}}",
                 NULL, "merge 0 (\"a\" + \"b\") makes \"ab\", which is not in the vocabulary");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                 "\"merges\": [7]}}",
                 NULL, "merge 0 is neither \"a b\" nor [\"a\", \"b\"]");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                 "\"merges\": [\"ab\"]}}",
                 NULL, "merge 0 (\"ab\") is not \"a b\"");
    expect_error("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                 "\"merges\": {}}}",
                 NULL, "model.merges is not an array");
    /* a byte without a token is dropped, as HF tokenizers does when there is no unk_token */
    rc = load_text("{" BL_PRE ", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, "
                   "\"merges\": []}}",
                   NULL, &t, &e);
    CHECK(rc == 0);
    if (rc == 0) {
        int *ids;
        size_t n;
        CHECK(model_tokenizer_encode(t, "ba", 2, false, false, &ids, &n, &e) == 0);
        CHECK(n == 1 && ids[0] == 0);
        free(ids);
        model_tokenizer_free(t);
    }
    expect_error("{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                 "\"Split\", \"pattern\": {\"Regex\": \"\\\\w+|\\\\s+\"}, \"behavior\": "
                 "\"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}, \"model\": "
                 "{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                 NULL, "Split pattern \"\\w+|\\s+\" is not a known one");
    expect_error("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", "
                 "\"vocab\": {\"a\": 0}, \"merges\": []}}",
                 NULL, "pre_tokenizer type \"Whitespace\" is not supported");
    expect_error("{\"normalizer\": {\"type\": \"Lowercase\"}, " BL_PRE ", \"model\": {\"type\": "
                 "\"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                 NULL, "normalizer type \"Lowercase\" is not supported");
    expect_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", NULL,
                 "neither a ByteLevel pre-tokenizer nor a SentencePiece-style normalizer");
    expect_error("{" BL_PRE ", \"added_tokens\": [{\"id\": \"x\", \"content\": \"<s>\"}], "
                 "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                 NULL, "added_tokens[0]: id is missing or not an integer");
    expect_error("{" BL_PRE ", \"added_tokens\": [{\"id\": 1, \"content\": 5}], "
                 "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                 NULL, "added_tokens[0]: content is missing or not a string");
    expect_error("{" BL_PRE ", \"added_tokens\": [{\"id\": 0, \"content\": \"<s>\"}], "
                 "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
                 NULL, "added_tokens[0]: token id 0 is given twice (\"a\" and \"<s>\")");

    /* tokenizer_config.json problems name that file; the valid Llama-3 fixture as the base */
    char path[1024];
    fixture_path(path, sizeof path, "llama3/tokenizer.json");
    char *good;
    size_t len;
    CHECK(xd_read_file(path, 1 << 20, &good, &len, &e) == 0);
    expect_error(good, "{\"bos_token\": \"<nope>\"}",
                 "tokenizer_config.json: bos_token \"<nope>\" is not in the vocabulary");
    expect_error(good, "{\"eos_token\": 3}", "tokenizer_config.json: eos_token is neither");
    expect_error(good, "{\"bos_token\": null, \"add_bos_token\": true}",
                 "add_bos_token is true but there is no bos_token");
    expect_error(good, "not json", "tokenizer_config.json: not valid JSON");
    /* a chat template that is not ChatML */
    rc = load_text(good,
                   "{\"chat_template\": \"{% for m in messages %}[INST] {{ m.content }}"
                   "{% endfor %}\"}",
                   &t, &e);
    CHECK(rc == 0);
    if (rc == 0) {
        char *out;
        model_chat_message m = {"user", "hi"};
        rc = model_chat_render(t, &m, 1, true, &out, &e);
        CHECK_ERR_CONTAINS(rc, e, "chat template is not ChatML");
        model_tokenizer_free(t);
    }
    /* chat_template as a list of named templates; a template without a default system prompt */
    rc = load_text(good,
                   "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}, "
                   "{\"name\": \"default\", \"template\": \"{% for message in messages %}"
                   "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                   "'<|im_end|>\\n'}}{% endfor %}\"}]}",
                   &t, &e);
    CHECK(rc == 0);
    if (rc == 0) {
        char *out;
        model_chat_message m[2] = {{"user", "hi"}, {"assistant", "yo"}};
        CHECK(model_chat_render(t, m, 2, true, &out, &e) == 0);
        CHECK(strcmp(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
                          "<|im_start|>assistant\n") == 0);
        free(out);
        m[1].content = NULL;
        rc = model_chat_render(t, m, 2, true, &out, &e);
        CHECK_ERR_CONTAINS(rc, e, "message 1 has no content");
        model_tokenizer_free(t);
    }
    /* Qwen2's (pre-2.5) template, with its newlines written as \n escapes inside the jinja string
     * literals as well */
    for (int k = 0; k < 2; k++) {
        const char *cfg =
            k == 0 ? "{\"chat_template\": \"{% for message in messages %}{% if loop.first and "
                     "messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
                     "assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
                     "'\\n' "
                     "+ message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
                     "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\"}"
                   : "{\"chat_template\": \"{{ '<|im_start|>system\\\\nYou are a\\\\tbot.<|im_end|>"
                     "\\\\n' }}\"}";
        rc = load_text(good, cfg, &t, &e);
        CHECK_MSG(rc == 0, "%s", e.msg);
        if (rc != 0) continue;
        char *out;
        model_chat_message m[2] = {{"user", "Hi"}, {"system", "S"}};
        CHECK(model_chat_render(t, m, 1, true, &out, &e) == 0);
        CHECK_MSG(strcmp(out, k == 0
                                  ? "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                                  : "<|im_start|>system\nYou are a\tbot.<|im_end|>\n"
                                    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") == 0,
                  "%s", out);
        free(out);
        /* a system message first: no default one */
        CHECK(model_chat_render(t, m + 1, 1, false, &out, &e) == 0);
        CHECK(strcmp(out, "<|im_start|>system\nS<|im_end|>\n") == 0);
        free(out);
        model_tokenizer_free(t);
    }
    free(good);
}

int main(void) {
    test_fixture("llama3", false, false);
    test_fixture("qwen2", true, false);
    test_fixture("llama2", false, true);
    test_llama3_details();
    test_qwen2_details();
    test_llama2_details();
    test_long_runs();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/xd_test_tok_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);
    test_variants();
    test_errors();
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    TEST_MAIN_END();
}
