#include "tensor.h"

#include <string.h>

static const struct {
    const char *name;
    uint64_t block_elems, block_bytes;
} dtype_info[MODEL_DTYPE_COUNT] = {
    [MODEL_F32] = {"F32", 1, 4},      [MODEL_F16] = {"F16", 1, 2},
    [MODEL_BF16] = {"BF16", 1, 2},    [MODEL_Q8_0] = {"Q8_0", 32, 34},
    [MODEL_Q4_0] = {"Q4_0", 32, 18},  [MODEL_Q4_1] = {"Q4_1", 32, 20},
    [MODEL_I32] = {"I32", 1, 4},      [MODEL_I64] = {"I64", 1, 8},
};

const char *model_dtype_name(model_dtype t) {
    return (unsigned)t < MODEL_DTYPE_COUNT ? dtype_info[t].name : "unknown";
}

int model_dtype_block(model_dtype t, uint64_t *elems_per_block, uint64_t *bytes_per_block) {
    if ((unsigned)t >= MODEL_DTYPE_COUNT) return -1;
    *elems_per_block = dtype_info[t].block_elems;
    *bytes_per_block = dtype_info[t].block_bytes;
    return 0;
}

int model_dtype_nbytes(model_dtype t, uint64_t n, uint64_t *out, xd_err *e) {
    uint64_t be, bb;
    if (model_dtype_block(t, &be, &bb) != 0) return xd_fail(e, "unknown dtype %d", (int)t);
    if (n % be != 0)
        return xd_fail(e, "%llu elements is not a whole number of %s blocks of %llu",
                       (unsigned long long)n, dtype_info[t].name, (unsigned long long)be);
    if (!xd_mul_ok(n / be, bb, out)) return xd_fail(e, "tensor size overflows");
    return 0;
}

uint64_t model_tensor_numel(const model_tensor_view *t) {
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
    return n;
}

static inline float load_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return xd_f16_to_f32(h);
}

int model_convert_to_f32(model_dtype t, const void *src, float *dst, uint64_t n, xd_err *e) {
    const uint8_t *p = src;
    switch (t) {
    case MODEL_F32:
        memcpy(dst, p, n * 4);
        return 0;
    case MODEL_F16:
        for (uint64_t i = 0; i < n; i++) dst[i] = load_f16(p + 2 * i);
        return 0;
    case MODEL_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = xd_bf16_to_f32(h);
        }
        return 0;
    case MODEL_Q8_0:
        if (n % 32) return xd_fail(e, "Q8_0 tensor of %llu elements", (unsigned long long)n);
        for (uint64_t b = 0; b < n / 32; b++, p += 34) {
            float d = load_f16(p);
            const int8_t *q = (const int8_t *)(p + 2);
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)q[j];
        }
        return 0;
    case MODEL_Q4_0:
        if (n % 32) return xd_fail(e, "Q4_0 tensor of %llu elements", (unsigned long long)n);
        for (uint64_t b = 0; b < n / 32; b++, p += 18) {
            float d = load_f16(p);
            const uint8_t *q = p + 2;
            /* ggml layout: low nibbles are elements 0..15, high nibbles 16..31 */
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)((q[j] & 0x0f) - 8);
                dst[b * 32 + j + 16] = d * (float)((q[j] >> 4) - 8);
            }
        }
        return 0;
    case MODEL_Q4_1:
        if (n % 32) return xd_fail(e, "Q4_1 tensor of %llu elements", (unsigned long long)n);
        for (uint64_t b = 0; b < n / 32; b++, p += 20) {
            float d = load_f16(p), m = load_f16(p + 2);
            const uint8_t *q = p + 4;
            for (int j = 0; j < 16; j++) {
                dst[b * 32 + j] = d * (float)(q[j] & 0x0f) + m;
                dst[b * 32 + j + 16] = d * (float)(q[j] >> 4) + m;
            }
        }
        return 0;
    case MODEL_I32:
        for (uint64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = (float)v;
        }
        return 0;
    case MODEL_I64:
        for (uint64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
        }
        return 0;
    default:
        return xd_fail(e, "cannot convert dtype %d to f32", (int)t);
    }
}

int model_tensor_to_f32(const model_tensor_view *t, float *dst, uint64_t n, xd_err *e) {
    uint64_t numel = model_tensor_numel(t), need;
    if (n != numel)
        return xd_fail(e, "tensor %s has %llu elements, expected %llu", t->name,
                       (unsigned long long)numel, (unsigned long long)n);
    if (model_dtype_nbytes(t->dtype, numel, &need, e) != 0) return xd_wrap(e, "tensor %s", t->name);
    if (need != t->nbytes)
        return xd_fail(e, "tensor %s: %llu bytes of data for %llu bytes of %s", t->name,
                       (unsigned long long)t->nbytes, (unsigned long long)need,
                       model_dtype_name(t->dtype));
    return model_convert_to_f32(t->dtype, t->data, dst, n, e);
}
