/* Fuzzes the safetensors header parser: any bytes must give either a clean error or views that
 * lie inside the input and convert without reading past it. */
#include "model/safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_safetensors *st;
    xd_err e;
    if (model_st_open_memory(data, size, "fuzz", &st, &e) != 0) {
        /* Errors must name the input. */
        if (strncmp(e.msg, "fuzz: ", 6) != 0) __builtin_trap();
        return 0;
    }
    for (uint64_t i = 0; i < model_st_count(st); i++) {
        const model_tensor_view *v = model_st_at(st, i);
        if (model_st_find(st, v->name) != v) __builtin_trap();
        const uint8_t *p = v->data;
        if (p < data || p + v->nbytes > data + size) __builtin_trap();
        uint64_t n = model_tensor_numel(v);
        if (n <= 4096) {
            float *out = malloc((n ? n : 1) * sizeof *out);
            if (!out || model_tensor_to_f32(v, out, n, &e) != 0) __builtin_trap();
            free(out);
        }
    }
    (void)model_st_metadata(st, "format");
    model_st_close(st);
    return 0;
}
