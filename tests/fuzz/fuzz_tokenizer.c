/* tests/fuzz/fuzz_tokenizer.c — libFuzzer target for the tokenizer. The first byte picks what the
 * rest is: 0-2 text for the Llama-3 / Qwen2 / Llama-2 shaped fixtures (encode, with and without
 * special tokens, must succeed and decode back; Llama-3's byte-level one exactly), 3 a
 * tokenizer.json (a clean error, or a tokenizer that encodes and decodes). */
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static model_tokenizer *fixtures[3];

static void load_fixtures(void) {
    static const char *names[3] = {"llama3", "qwen2", "llama2"};
    for (int k = 0; k < 3; k++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/tokenizer/%s", XD_FUZZ_DATA, names[k]);
        xd_err e;
        if (model_tokenizer_load_hf(dir, &fixtures[k], &e) != 0) {
            fprintf(stderr, "%s\n", e.msg);
            abort();
        }
    }
}

/* Encodes and decodes; exact: the decoded text must be the input. */
static void encode_decode(const model_tokenizer *t, const char *s, size_t n, bool special,
                          bool exact) {
    int *ids;
    size_t m;
    xd_err e;
    if (model_tokenizer_encode(t, s, n, false, special, &ids, &m, &e) != 0) abort();
    for (size_t i = 0; i < m; i++)
        if (ids[i] < 0 || ids[i] >= model_tokenizer_vocab_size(t)) abort();
    char *out;
    size_t len;
    if (model_tokenizer_decode(t, ids, m, false, &out, &len, &e) != 0) abort();
    if (exact && (len != n || memcmp(out, s, n) != 0)) abort();
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fixtures[0]) load_fixtures();
    if (size < 1) return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    int mode = data[0] % 4;
    if (mode < 3) {
        encode_decode(fixtures[mode], s, n, true, false);
        encode_decode(fixtures[mode], s, n, false, mode == 0);
        return 0;
    }
    model_tokenizer *t;
    xd_err e;
    if (model_tokenizer_load_hf_json(s, n, "fuzz.json", &t, &e) != 0) return 0;
    static const char text[] = "Hello world 123 <s> caf\xc3\xa9\n\n  x";
    encode_decode(t, text, sizeof text - 1, true, false);
    encode_decode(t, s, n < 512 ? n : 512, false, false);
    model_tokenizer_free(t);
    return 0;
}
