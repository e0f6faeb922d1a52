/* tests/unit/tokenizer_fixture.h — checks shared by test_tokenizer and test_tokenizer_gguf: the
 * expected ids that tests/golden/make_tokenizer_fixtures.py computed with HF tokenizers. */
#ifndef XD_TEST_TOKENIZER_FIXTURE_H
#define XD_TEST_TOKENIZER_FIXTURE_H

#include "common/xd.h"
#include "model/tokenizer.h"
#include "test.h"

#include <jansson.h>
#include <utf8proc.h>

static json_t *fixture_json(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s", test_data_dir(), rel);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    CHECK_MSG(j != NULL, "%s: %s", path, je.text);
    return j;
}

static void fixture_path(char *out, size_t cap, const char *rel) {
    snprintf(out, cap, "%s/tokenizer/%s", test_data_dir(), rel);
}

static void print_ids(const char *what, const int *ids, size_t n) {
    fprintf(stderr, "  %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* ids == the JSON array of integers; prints both when not. */
static bool ids_match(const int *ids, size_t n, json_t *want, const char *name, size_t idx,
                      const char *text) {
    bool ok = json_array_size(want) == n;
    for (size_t i = 0; ok && i < n; i++) ok = json_integer_value(json_array_get(want, i)) == ids[i];
    if (!ok) {
        fprintf(stderr, "%s: string %zu \"%s\": ids differ from HF tokenizers\n", name, idx, text);
        print_ids("got", ids, n);
        size_t m = json_array_size(want);
        int *w = malloc((m ? m : 1) * sizeof *w);
        for (size_t i = 0; i < m; i++) w[i] = (int)json_integer_value(json_array_get(want, i));
        print_ids("want", w, m);
        free(w);
    }
    return ok;
}

static bool roundtrips(const model_tokenizer *t, const char *s, size_t len, const char *want,
                       size_t want_len) {
    int *ids;
    size_t n;
    xd_err e;
    if (model_tokenizer_encode(t, s, len, false, false, &ids, &n, &e) != 0) {
        fprintf(stderr, "encode failed: %s\n", e.msg);
        return false;
    }
    char *out = NULL;
    size_t out_len;
    bool ok = model_tokenizer_decode(t, ids, n, false, &out, &out_len, &e) == 0 &&
              out_len == want_len && memcmp(out, want, want_len) == 0;
    free(out);
    free(ids);
    return ok;
}

/* Every fixture string: ids with and without special-token parsing, and decode(encode(s)) == s
 * (NFC(s) for an NFC tokenizer). */
static void check_fixture_strings(const model_tokenizer *t, json_t *exp, const char *name,
                                  bool nfc) {
    json_t *strings = json_object_get(exp, "strings");
    json_t *parsed = json_object_get(exp, "ids"), *raw = json_object_get(exp, "ids_raw");
    CHECK(json_array_size(strings) > 40);
    CHECK(json_array_size(parsed) == json_array_size(strings));
    CHECK(json_array_size(raw) == json_array_size(strings));
    size_t i;
    json_t *js;
    json_array_foreach(strings, i, js) {
        const char *s = json_string_value(js);
        size_t len = json_string_length(js);
        int *ids;
        size_t n;
        xd_err e;
        CHECK(model_tokenizer_encode(t, s, len, false, true, &ids, &n, &e) == 0);
        CHECK(ids_match(ids, n, json_array_get(parsed, i), name, i, s));
        free(ids);
        CHECK(model_tokenizer_encode(t, s, len, false, false, &ids, &n, &e) == 0);
        CHECK(ids_match(ids, n, json_array_get(raw, i), name, i, s));
        free(ids);
        const char *want = s;
        size_t want_len = len;
        utf8proc_uint8_t *norm = NULL;
        if (nfc) {
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len,
                                              &norm, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            CHECK(r >= 0);
            want = (const char *)norm;
            want_len = (size_t)r;
        }
        CHECK_MSG(roundtrips(t, s, len, want, want_len), "%s: string %zu does not round-trip", name,
                  i);
        free(norm);
    }
}

/* Bytes a tokenizer cannot encode: a byte-level vocabulary may lack some bytes' tokens (SmolLM2
 * lacks 21), which HF tokenizers then drops. */
static void unencodable_bytes(const model_tokenizer *t, bool out[256]) {
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        out[b] = !roundtrips(t, &c, 1, &c, 1);
    }
}

/* Random text: valid UTF-8 from a mix of scripts (or arbitrary bytes), avoiding the bytes in
 * avoid (may be NULL). */
static size_t random_text(xd_rng *r, char *buf, size_t cap, bool bytes, bool spm,
                          const bool *avoid) {
    size_t o = 0, n = 1 + xd_rng_next(r) % 60;
    static const uint32_t pool[] = {' ',    ' ',    ' ',    '\n',  '\t',    '\r', '\'',   '0',
                                    '7',    'a',    'Z',    's',   '.',     '<',  '|',    '>',
                                    0xa0,   0x3000, 0x2003, 0x301, 0x17f,   0xe9, 0x4e2d, 0x1f600,
                                    0x200d, 0x663,  0x2167, 0x5d0, 0x10ffff};
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        if (bytes) {
            uint8_t c = (uint8_t)(xd_rng_next(r) & 0xff);
            buf[o++] = (char)(avoid && avoid[c] ? 'x' : c);
            continue;
        }
        uint32_t cp;
        uint64_t k = xd_rng_next(r) % 4;
        if (k == 0)
            cp = pool[xd_rng_next(r) % (sizeof pool / sizeof pool[0])];
        else if (k == 1)
            cp = 0x20 + (uint32_t)(xd_rng_next(r) % 95);
        else if (k == 2)
            cp = 0x80 + (uint32_t)(xd_rng_next(r) % 0x3000);
        else
            cp = (uint32_t)(xd_rng_next(r) % 0x110000);
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0) cp = 'x';
        if (spm && cp == 0x2581) cp = 'y'; /* ▁ decodes to a space, as in HF */
        size_t k0 = o;
        o += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)buf + o);
        for (size_t q = k0; avoid && q < o; q++) {
            if (avoid[(uint8_t)buf[q]]) {
                buf[k0] = 'x';
                o = k0 + 1;
                break;
            }
        }
    }
    return o;
}

static void check_random_roundtrip(const model_tokenizer *t, const char *name, bool nfc, bool spm,
                                   int count) {
    xd_rng r;
    xd_rng_seed(&r, 1234);
    char buf[512];
    int bad = 0;
    bool avoid[256];
    unencodable_bytes(t, avoid);
    for (int it = 0; it < count; it++) {
        bool bytes = it % 3 == 2;
        size_t n = random_text(&r, buf, sizeof buf, bytes, spm, avoid);
        const char *want = buf;
        size_t want_len = n;
        utf8proc_uint8_t *norm = NULL;
        if (nfc && !bytes) {
            utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)buf, (utf8proc_ssize_t)n,
                                              &norm, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (k >= 0) {
                want = (const char *)norm;
                want_len = (size_t)k;
            }
        }
        if (!roundtrips(t, buf, n, want, want_len) && bad++ < 5) {
            fprintf(stderr, "%s: random text %d (%zu bytes) does not round-trip:", name, it, n);
            for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", (unsigned char)buf[i]);
            fputc('\n', stderr);
        }
        free(norm);
    }
    CHECK_MSG(bad == 0, "%s: %d random texts do not round-trip", name, bad);
}

/* ChatML prompts rendered by the jinja template in Python: same text, same ids. */
static void check_chat(const model_tokenizer *t, json_t *chats, const char *name) {
    CHECK(json_array_size(chats) >= 4);
    size_t i;
    json_t *c;
    json_array_foreach(chats, i, c) {
        json_t *msgs = json_object_get(c, "messages");
        size_t n = json_array_size(msgs);
        model_chat_message m[8];
        CHECK(n <= 8);
        for (size_t k = 0; k < n && k < 8; k++) {
            m[k].role = json_string_value(json_object_get(json_array_get(msgs, k), "role"));
            m[k].content = json_string_value(json_object_get(json_array_get(msgs, k), "content"));
        }
        char *out;
        xd_err e;
        bool gen = json_is_true(json_object_get(c, "add_generation_prompt"));
        int rc = model_chat_render(t, m, n, gen, &out, &e);
        CHECK_MSG(rc == 0, "%s: chat %zu: %s", name, i, e.msg);
        if (rc != 0) continue;
        const char *want = json_string_value(json_object_get(c, "text"));
        CHECK_MSG(strcmp(out, want) == 0, "%s: chat %zu renders\n%s\ninstead of\n%s", name, i, out,
                  want);
        int *ids;
        size_t nid;
        CHECK(model_tokenizer_encode(t, out, strlen(out), false, true, &ids, &nid, &e) == 0);
        CHECK(ids_match(ids, nid, json_object_get(c, "ids"), name, i, "(chat prompt)"));
        free(ids);
        free(out);
    }
}

/* encode("Hello world") with the BOS the tokenizer adds, as HF's post-processor does. */
static void check_with_bos(const model_tokenizer *t, json_t *exp, const char *name) {
    int *ids;
    size_t n;
    xd_err e;
    CHECK(model_tokenizer_encode(t, "Hello world", 11, model_tokenizer_adds_bos(t), true, &ids, &n,
                                 &e) == 0);
    CHECK(ids_match(ids, n, json_object_get(exp, "with_bos"), name, 0, "Hello world (with BOS)"));
    free(ids);
}

#endif
