/* tests/fuzz/fuzz_gguf.c — libFuzzer target for the GGUF reader: any bytes must give either a clean
 * error or a handle whose every kv, string and tensor can be read and converted safely. */
#include "model/gguf.h"

#include <stdlib.h>
#include <string.h>

/* Tensors above this many elements are skipped: converting them proves nothing more and would
 * make the fuzzer slow (their extents are still checked by the reader). */
#define FUZZ_MAX_ELEMENTS (1u << 20)

/* Reads every byte of a string, so the sanitiser sees any pointer outside the input. */
static unsigned touch(model_gguf_str s) {
    unsigned sum = 0;
    for (uint64_t i = 0; i < s.len; i++) sum += (unsigned char)s.ptr[i];
    return sum;
}

static volatile unsigned sink;

static void walk_kvs(const model_gguf *g) {
    unsigned sum = 0;
    xd_err e;
    for (uint64_t i = 0; i < model_gguf_kv_count(g); i++) {
        const model_gguf_kv *kv = model_gguf_kv_at(g, i);
        sum += touch(kv->key);
        /* Look-ups by key must find this very kv (keys are unique and NUL-free). */
        char key[256];
        if (kv->key.len < sizeof key) {
            memcpy(key, kv->key.ptr, kv->key.len);
            key[kv->key.len] = 0;
            if (model_gguf_find(g, key) != kv) abort();
            int64_t iv;
            double fv;
            bool bv;
            model_gguf_str sv;
            const model_gguf_kv *av;
            (void)model_gguf_get_int(g, key, &iv, &e);
            (void)model_gguf_get_float(g, key, &fv, &e);
            (void)model_gguf_get_bool(g, key, &bv, &e);
            (void)model_gguf_get_array(g, key, MODEL_GGUF_STRING, &av, &e);
            if (model_gguf_get_string(g, key, &sv, &e) == 0) sum += touch(sv);
        }
        if (kv->type == MODEL_GGUF_STRING) sum += touch(kv->value.s);
        if (kv->type != MODEL_GGUF_ARRAY) continue;
        for (uint64_t j = 0; j < kv->array_count; j++) {
            if (kv->array_type == MODEL_GGUF_STRING) {
                sum += touch(model_gguf_array_string(kv, j));
            } else {
                sum += (unsigned)model_gguf_array_int(kv, j);
                double f = model_gguf_array_float(kv, j);
                sum += f == f ? 1u : 0u;
            }
        }
    }
    sink = sum;
}

static void walk_tensors(const model_gguf *g) {
    xd_err e;
    for (uint64_t i = 0; i < model_gguf_tensor_count(g); i++) {
        const model_tensor_view *t = model_gguf_tensor_at(g, i);
        if (model_gguf_tensor(g, t->name) != t) abort();
        uint64_t n = model_tensor_numel(t);
        if (n > FUZZ_MAX_ELEMENTS) continue;
        float *out = malloc((n ? n : 1) * sizeof *out);
        if (!out) continue;
        /* The reader validated dtype, shape and extent, so conversion must succeed. */
        if (model_tensor_to_f32(t, out, n, &e) != 0) abort();
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_gguf *g = NULL;
    xd_err e;
    if (model_gguf_open_memory(data, size, "fuzz.gguf", &g, &e) != 0) {
        /* Every error names the input. */
        if (strncmp(e.msg, "fuzz.gguf: ", 11) != 0) abort();
        return 0;
    }
    walk_kvs(g);
    walk_tensors(g);
    model_gguf_close(g);
    return 0;
}
