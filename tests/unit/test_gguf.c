/* tests/unit/test_gguf.c — the GGUF reader against files this test writes byte by byte: values and
 * dequantised tensors read back, and every malformed header gives a clean, named error. */
#include "common/xd.h"
#include "model/gguf.h"
#include "test.h"

#include <unistd.h>

/* ---- a minimal GGUF writer: a growable byte buffer and little-endian puts ---- */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put_bytes(buf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_le(buf *b, uint64_t v, int nbytes) {
    for (int i = 0; i < nbytes; i++) {
        uint8_t byte = (uint8_t)(v >> (8 * i));
        put_bytes(b, &byte, 1);
    }
}
static void put_u8(buf *b, uint64_t v) { put_le(b, v, 1); }
static void put_u16(buf *b, uint64_t v) { put_le(b, v, 2); }
static void put_u32(buf *b, uint64_t v) { put_le(b, v, 4); }
static void put_u64(buf *b, uint64_t v) { put_le(b, v, 8); }
static void put_f32(buf *b, float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    put_u32(b, bits);
}
static void put_f64(buf *b, double f) {
    uint64_t bits;
    memcpy(&bits, &f, 8);
    put_u64(b, bits);
}
static void put_strn(buf *b, const char *s, size_t n) {
    put_u64(b, n);
    put_bytes(b, s, n);
}
static void put_str(buf *b, const char *s) { put_strn(b, s, strlen(s)); }
static void pad_to(buf *b, size_t alignment) {
    while (b->len % alignment) put_u8(b, 0);
}

/* GGUF value types and ggml tensor types, as numbers straight from the format. */
enum {
    T_U8 = 0, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32,
    T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64
};
enum { G_F32 = 0, G_F16 = 1, G_Q4_0 = 2, G_Q4_1 = 3, G_Q8_0 = 8, G_Q4_K = 12, G_BF16 = 30 };

static void header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put_bytes(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void kv_key(buf *b, const char *key, uint32_t type) {
    put_str(b, key);
    put_u32(b, type);
}
static void tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                        uint32_t ggml_type, uint64_t offset) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(b, ne[d]);
    put_u32(b, ggml_type);
    put_u64(b, offset);
}

/* ---- the valid file: metadata of every type and one tensor of each supported type ---- */

typedef struct test_tensor {
    const char *name;
    uint32_t ggml_type;
    model_dtype dtype;
    uint32_t n_dims;
    uint64_t ne[4];
    int ndim_expected;
    int64_t shape_expected[4]; /* row-major: ne reversed */
    uint8_t bytes[128];
    size_t nbytes;
    float expected[64]; /* dequantised by hand from the values packed into bytes */
    size_t numel;
} test_tensor;

static void set_f16(uint8_t *p, uint16_t bits) {
    p[0] = (uint8_t)bits;
    p[1] = (uint8_t)(bits >> 8);
}

/* The tensors, with their expected values written out from the format's definitions (and
 * hand-picked half-precision bit patterns), not from the reader's own conversion code. */
static int make_tensors(test_tensor *t) {
    int n = 0;
    {
        test_tensor *x = &t[n++];
        *x = (test_tensor){.name = "t.f32", .ggml_type = G_F32, .dtype = MODEL_F32, .n_dims = 2,
                           .ne = {3, 2}, .ndim_expected = 2, .shape_expected = {2, 3}};
        const float v[6] = {1.5f, -2.0f, 0.25f, 3.0f, 4.5f, -0.125f};
        for (int i = 0; i < 6; i++) {
            uint32_t bits;
            memcpy(&bits, &v[i], 4);
            for (int k = 0; k < 4; k++) x->bytes[4 * i + k] = (uint8_t)(bits >> (8 * k));
            x->expected[i] = v[i];
        }
        x->nbytes = 24;
        x->numel = 6;
    }
    {
        test_tensor *x = &t[n++];
        *x = (test_tensor){.name = "t.f16", .ggml_type = G_F16, .dtype = MODEL_F16, .n_dims = 1,
                           .ne = {4}, .ndim_expected = 1, .shape_expected = {4}};
        const uint16_t bits[4] = {0x3c00, 0xc000, 0x3800, 0x7bff};
        const float v[4] = {1.0f, -2.0f, 0.5f, 65504.0f};
        for (int i = 0; i < 4; i++) {
            set_f16(x->bytes + 2 * i, bits[i]);
            x->expected[i] = v[i];
        }
        x->nbytes = 8;
        x->numel = 4;
    }
    {
        test_tensor *x = &t[n++];
        *x = (test_tensor){.name = "t.bf16", .ggml_type = G_BF16, .dtype = MODEL_BF16, .n_dims = 2,
                           .ne = {2, 2}, .ndim_expected = 2, .shape_expected = {2, 2}};
        const uint16_t bits[4] = {0x3f80, 0xc040, 0x4049, 0x0000};
        const float v[4] = {1.0f, -3.0f, 3.140625f, 0.0f};
        for (int i = 0; i < 4; i++) {
            set_f16(x->bytes + 2 * i, bits[i]);
            x->expected[i] = v[i];
        }
        x->nbytes = 8;
        x->numel = 4;
    }
    {
        /* Q8_0: per block of 32, an f16 scale d, then 32 int8 q; value = d * q. */
        test_tensor *x = &t[n++];
        *x = (test_tensor){.name = "t.q8_0", .ggml_type = G_Q8_0, .dtype = MODEL_Q8_0, .n_dims = 2,
                           .ne = {32, 2}, .ndim_expected = 2, .shape_expected = {2, 32}};
        const uint16_t d_bits[2] = {0x3800, 0x4000};
        const float d[2] = {0.5f, 2.0f};
        for (int blk = 0; blk < 2; blk++) {
            uint8_t *p = x->bytes + 34 * blk;
            set_f16(p, d_bits[blk]);
            for (int j = 0; j < 32; j++) {
                int q = blk == 0 ? j - 16 : (j == 0 ? -128 : 127 - 4 * j);
                p[2 + j] = (uint8_t)(int8_t)q;
                x->expected[32 * blk + j] = d[blk] * (float)q;
            }
        }
        x->nbytes = 68;
        x->numel = 64;
    }
    {
        /* Q4_0: f16 d, 16 bytes; byte j holds element j (low nibble) and j + 16 (high nibble);
         * value = (nibble - 8) * d. */
        test_tensor *x = &t[n++];
        *x = (test_tensor){.name = "t.q4_0", .ggml_type = G_Q4_0, .dtype = MODEL_Q4_0, .n_dims = 1,
                           .ne = {32}, .ndim_expected = 1, .shape_expected = {32}};
        set_f16(x->bytes, 0x3400); /* 0.25 */
        int nib[32];
        for (int j = 0; j < 32; j++) nib[j] = (j * 7) % 16;
        for (int j = 0; j < 16; j++) x->bytes[2 + j] = (uint8_t)(nib[j] | (nib[j + 16] << 4));
        for (int j = 0; j < 32; j++) x->expected[j] = 0.25f * (float)(nib[j] - 8);
        x->nbytes = 18;
        x->numel = 32;
    }
    {
        /* Q4_1: f16 d, f16 m, 16 bytes of nibbles as Q4_0; value = nibble * d + m. 3-D, so the
         * shape reversal shows. */
        test_tensor *x = &t[n++];
        *x = (test_tensor){.name = "t.q4_1", .ggml_type = G_Q4_1, .dtype = MODEL_Q4_1, .n_dims = 3,
                           .ne = {32, 1, 2}, .ndim_expected = 3, .shape_expected = {2, 1, 32}};
        const uint16_t d_bits[2] = {0x3c00, 0x3800}, m_bits[2] = {0xbc00, 0x4200};
        const float d[2] = {1.0f, 0.5f}, m[2] = {-1.0f, 3.0f};
        for (int blk = 0; blk < 2; blk++) {
            uint8_t *p = x->bytes + 20 * blk;
            set_f16(p, d_bits[blk]);
            set_f16(p + 2, m_bits[blk]);
            int nib[32];
            for (int j = 0; j < 32; j++) nib[j] = (j * 5 + 3 + blk) % 16;
            for (int j = 0; j < 16; j++) p[4 + j] = (uint8_t)(nib[j] | (nib[j + 16] << 4));
            for (int j = 0; j < 32; j++)
                x->expected[32 * blk + j] = (float)nib[j] * d[blk] + m[blk];
        }
        x->nbytes = 40;
        x->numel = 64;
    }
    return n;
}

#define KV_COUNT 23

static void put_metadata(buf *b) {
    kv_key(b, "k.u8", T_U8), put_u8(b, 200);
    kv_key(b, "k.i8", T_I8), put_u8(b, (uint8_t)-100);
    kv_key(b, "k.u16", T_U16), put_u16(b, 60000);
    kv_key(b, "k.i16", T_I16), put_u16(b, (uint16_t)-30000);
    kv_key(b, "k.u32", T_U32), put_u32(b, 4000000000u);
    kv_key(b, "k.i32", T_I32), put_u32(b, (uint32_t)-2000000000);
    kv_key(b, "k.f32", T_F32), put_f32(b, 0.375f);
    kv_key(b, "k.bool", T_BOOL), put_u8(b, 1);
    kv_key(b, "k.str", T_STR), put_str(b, "hello");
    kv_key(b, "k.str.empty", T_STR), put_str(b, "");
    kv_key(b, "k.u64", T_U64), put_u64(b, 10000000000ull);
    kv_key(b, "k.u64.big", T_U64), put_u64(b, UINT64_MAX);
    kv_key(b, "k.i64", T_I64), put_u64(b, (uint64_t)-5000000000000ll);
    kv_key(b, "k.f64", T_F64), put_f64(b, 3.141592653589793);
    kv_key(b, "a.u8", T_ARR), put_u32(b, T_U8), put_u64(b, 3), put_u8(b, 1), put_u8(b, 2),
        put_u8(b, 255);
    kv_key(b, "a.i16", T_ARR), put_u32(b, T_I16), put_u64(b, 2), put_u16(b, (uint16_t)-1),
        put_u16(b, 300);
    kv_key(b, "a.i32.empty", T_ARR), put_u32(b, T_I32), put_u64(b, 0);
    kv_key(b, "a.f32", T_ARR), put_u32(b, T_F32), put_u64(b, 2), put_f32(b, 0.5f),
        put_f32(b, -1.25f);
    kv_key(b, "a.f64", T_ARR), put_u32(b, T_F64), put_u64(b, 1), put_f64(b, -1e300);
    kv_key(b, "a.u64", T_ARR), put_u32(b, T_U64), put_u64(b, 1), put_u64(b, UINT64_MAX);
    kv_key(b, "a.i64", T_ARR), put_u32(b, T_I64), put_u64(b, 1), put_u64(b, (uint64_t)INT64_MIN);
    kv_key(b, "a.bool", T_ARR), put_u32(b, T_BOOL), put_u64(b, 2), put_u8(b, 1), put_u8(b, 0);
    kv_key(b, "a.str", T_ARR), put_u32(b, T_STR), put_u64(b, 3), put_str(b, "a"), put_str(b, ""),
        put_str(b, "ccc");
}

/* A valid file; alignment 0 means the default (no general.alignment key). The last tensor ends
 * the file, so any shorter prefix is invalid. */
static void build_valid(buf *b, uint32_t version, uint32_t alignment) {
    test_tensor t[8];
    int n = make_tensors(t);
    header(b, version, (uint64_t)n, KV_COUNT + (alignment ? 1 : 0));
    if (alignment) kv_key(b, "general.alignment", T_U32), put_u32(b, alignment);
    put_metadata(b);
    size_t align = alignment ? alignment : 32, offset = 0, offsets[8];
    for (int i = 0; i < n; i++) {
        offsets[i] = offset;
        tensor_info(b, t[i].name, t[i].n_dims, t[i].ne, t[i].ggml_type, offset);
        offset += (t[i].nbytes + align - 1) / align * align;
    }
    pad_to(b, align);
    size_t data_start = b->len;
    for (int i = 0; i < n; i++) {
        while (b->len < data_start + offsets[i]) put_u8(b, 0xee);
        put_bytes(b, t[i].bytes, t[i].nbytes);
    }
}

/* Opens a copy of exactly len bytes, so AddressSanitizer sees any read past the end. The copy is
 * returned through *copy and must outlive the handle. */
static int open_copy(const uint8_t *p, size_t len, const char *name, model_gguf **g, uint8_t **copy,
                     xd_err *e) {
    *copy = malloc(len ? len : 1);
    if (!*copy) abort();
    if (len) memcpy(*copy, p, len);
    return model_gguf_open_memory(*copy, len, name, g, e);
}

/* The file must be rejected with a message that starts with its name and contains fragment. */
static void expect_error_at(const buf *b, const char *fragment, int line) {
    model_gguf *g = NULL;
    uint8_t *copy;
    xd_err e = {{0}};
    int rc = open_copy(b->p, b->len, "bad.gguf", &g, &copy, &e);
    if (rc >= 0 || !strstr(e.msg, fragment) || strncmp(e.msg, "bad.gguf: ", 10) != 0) {
        fprintf(stderr, "%s:%d: expected an error \"bad.gguf: ...%s...\", got rc=%d \"%s\"\n",
                __FILE__, line, fragment, rc, e.msg);
        test_failures++;
    }
    CHECK(rc >= 0 || g == NULL);
    model_gguf_close(g);
    free(copy);
}
#define EXPECT_ERROR(b, fragment) expect_error_at((b), (fragment), __LINE__)

static void reset(buf *b) { b->len = 0; }

/* ---- tests ---- */

static void check_metadata(const model_gguf *g) {
    xd_err e;
    int64_t i = 0;
    double f = 0;
    bool flag = false;
    model_gguf_str s;
    CHECK(model_gguf_get_int(g, "k.u8", &i, &e) == 0 && i == 200);
    CHECK(model_gguf_get_int(g, "k.i8", &i, &e) == 0 && i == -100);
    CHECK(model_gguf_get_int(g, "k.u16", &i, &e) == 0 && i == 60000);
    CHECK(model_gguf_get_int(g, "k.i16", &i, &e) == 0 && i == -30000);
    CHECK(model_gguf_get_int(g, "k.u32", &i, &e) == 0 && i == 4000000000ll);
    CHECK(model_gguf_get_int(g, "k.i32", &i, &e) == 0 && i == -2000000000ll);
    CHECK(model_gguf_get_int(g, "k.u64", &i, &e) == 0 && i == 10000000000ll);
    CHECK(model_gguf_get_int(g, "k.i64", &i, &e) == 0 && i == -5000000000000ll);
    CHECK(model_gguf_get_float(g, "k.f32", &f, &e) == 0 && f == 0.375);
    CHECK(model_gguf_get_float(g, "k.f64", &f, &e) == 0 && f == 3.141592653589793);
    CHECK(model_gguf_get_float(g, "k.i32", &f, &e) == 0 && f == -2000000000.0);
    CHECK(model_gguf_get_float(g, "k.u64.big", &f, &e) == 0 && f == 18446744073709551615.0);
    CHECK(model_gguf_get_bool(g, "k.bool", &flag, &e) == 0 && flag);
    CHECK(model_gguf_get_string(g, "k.str", &s, &e) == 0 && s.len == 5 &&
          memcmp(s.ptr, "hello", 5) == 0);
    CHECK(model_gguf_get_string(g, "k.str.empty", &s, &e) == 0 && s.len == 0);

    /* Absent keys: 1, and the output untouched. */
    i = 7;
    CHECK(model_gguf_get_int(g, "no.such.key", &i, &e) == 1 && i == 7);
    CHECK(model_gguf_get_float(g, "no.such.key", &f, &e) == 1);
    CHECK(model_gguf_get_bool(g, "no.such.key", &flag, &e) == 1);
    CHECK(model_gguf_get_string(g, "no.such.key", &s, &e) == 1);
    CHECK(model_gguf_find(g, "k.u") == NULL && model_gguf_find(g, "") == NULL);

    /* Wrong types: -1 and a message naming the file, the key and both types. */
    int rc = model_gguf_get_int(g, "k.str", &i, &e);
    CHECK_ERR_CONTAINS(rc, e, "good.gguf: key k.str is a string, expected an integer");
    rc = model_gguf_get_int(g, "k.f32", &i, &e);
    CHECK_ERR_CONTAINS(rc, e, "k.f32 is a float32");
    rc = model_gguf_get_int(g, "k.bool", &i, &e);
    CHECK_ERR_CONTAINS(rc, e, "k.bool is a bool");
    rc = model_gguf_get_int(g, "k.u64.big", &i, &e);
    CHECK_ERR_CONTAINS(rc, e, "does not fit in int64");
    rc = model_gguf_get_float(g, "k.str", &f, &e);
    CHECK_ERR_CONTAINS(rc, e, "expected a number");
    rc = model_gguf_get_bool(g, "k.u8", &flag, &e);
    CHECK_ERR_CONTAINS(rc, e, "k.u8 is a uint8, expected a bool");
    rc = model_gguf_get_string(g, "a.str", &s, &e);
    CHECK_ERR_CONTAINS(rc, e, "a.str is an array of string, expected a string");
    const model_gguf_kv *arr = NULL;
    rc = model_gguf_get_array(g, "a.str", MODEL_GGUF_INT32, &arr, &e);
    CHECK_ERR_CONTAINS(rc, e, "expected an array of int32");
    rc = model_gguf_get_array(g, "k.u32", MODEL_GGUF_UINT32, &arr, &e);
    CHECK_ERR_CONTAINS(rc, e, "k.u32 is a uint32, expected an array of uint32");
    CHECK(model_gguf_get_array(g, "no.such", MODEL_GGUF_STRING, &arr, &e) == 1);

    /* Arrays. */
    CHECK(model_gguf_get_array(g, "a.u8", MODEL_GGUF_UINT8, &arr, &e) == 0);
    CHECK(arr->array_count == 3 && model_gguf_array_int(arr, 2) == 255);
    CHECK(model_gguf_array_float(arr, 2) == 255.0);
    CHECK(model_gguf_array_int(arr, 3) == 0); /* out of range */
    CHECK(model_gguf_get_array(g, "a.i16", MODEL_GGUF_INT16, &arr, &e) == 0);
    CHECK(model_gguf_array_int(arr, 0) == -1 && model_gguf_array_int(arr, 1) == 300);
    CHECK(model_gguf_array_float(arr, 0) == -1.0);
    CHECK(model_gguf_get_array(g, "a.i32.empty", MODEL_GGUF_INT32, &arr, &e) == 0);
    CHECK(arr->array_count == 0 && model_gguf_array_int(arr, 0) == 0);
    CHECK(model_gguf_get_array(g, "a.f32", MODEL_GGUF_FLOAT32, &arr, &e) == 0);
    CHECK(model_gguf_array_float(arr, 0) == 0.5 && model_gguf_array_float(arr, 1) == -1.25);
    CHECK(model_gguf_array_int(arr, 1) == -1); /* truncated toward zero */
    CHECK(model_gguf_get_array(g, "a.f64", MODEL_GGUF_FLOAT64, &arr, &e) == 0);
    CHECK(model_gguf_array_float(arr, 0) == -1e300 && model_gguf_array_int(arr, 0) == INT64_MIN);
    CHECK(model_gguf_get_array(g, "a.u64", MODEL_GGUF_UINT64, &arr, &e) == 0);
    CHECK(model_gguf_array_int(arr, 0) == INT64_MAX); /* clamped */
    CHECK(model_gguf_get_array(g, "a.i64", MODEL_GGUF_INT64, &arr, &e) == 0);
    CHECK(model_gguf_array_int(arr, 0) == INT64_MIN);
    CHECK(model_gguf_get_array(g, "a.bool", MODEL_GGUF_BOOL, &arr, &e) == 0);
    CHECK(model_gguf_array_int(arr, 0) == 1 && model_gguf_array_int(arr, 1) == 0);
    CHECK(model_gguf_get_array(g, "a.str", MODEL_GGUF_STRING, &arr, &e) == 0);
    CHECK(arr->array_count == 3 && arr->array_strings != NULL);
    model_gguf_str a0 = model_gguf_array_string(arr, 0), a1 = model_gguf_array_string(arr, 1),
                   a2 = model_gguf_array_string(arr, 2), a3 = model_gguf_array_string(arr, 3);
    CHECK(a0.len == 1 && a0.ptr[0] == 'a');
    CHECK(a1.len == 0);
    CHECK(a2.len == 3 && memcmp(a2.ptr, "ccc", 3) == 0);
    CHECK(a3.ptr == NULL && a3.len == 0);
    CHECK(model_gguf_array_int(arr, 0) == 0); /* not a numeric array */
    CHECK(model_gguf_array_string(model_gguf_find(g, "a.u8"), 0).ptr == NULL);
}

static void check_kv_order(const model_gguf *g, bool with_alignment) {
    static const char *const keys[KV_COUNT] = {
        "k.u8",  "k.i8",  "k.u16", "k.i16", "k.u32", "k.i32", "k.f32", "k.bool",
        "k.str", "k.str.empty", "k.u64", "k.u64.big", "k.i64", "k.f64", "a.u8", "a.i16",
        "a.i32.empty", "a.f32", "a.f64", "a.u64", "a.i64", "a.bool", "a.str"};
    static const model_gguf_type types[KV_COUNT] = {
        MODEL_GGUF_UINT8,  MODEL_GGUF_INT8,   MODEL_GGUF_UINT16, MODEL_GGUF_INT16,
        MODEL_GGUF_UINT32, MODEL_GGUF_INT32,  MODEL_GGUF_FLOAT32, MODEL_GGUF_BOOL,
        MODEL_GGUF_STRING, MODEL_GGUF_STRING, MODEL_GGUF_UINT64, MODEL_GGUF_UINT64,
        MODEL_GGUF_INT64,  MODEL_GGUF_FLOAT64};
    uint64_t first = with_alignment ? 1 : 0;
    CHECK(model_gguf_kv_count(g) == KV_COUNT + first);
    for (uint64_t i = 0; i < KV_COUNT; i++) {
        const model_gguf_kv *kv = model_gguf_kv_at(g, i + first);
        CHECK(kv && kv->key.len == strlen(keys[i]) &&
              memcmp(kv->key.ptr, keys[i], kv->key.len) == 0);
        if (kv && i < 14) CHECK(kv->type == types[i] && kv->array_strings == NULL);
        if (kv && i >= 14) CHECK(kv->type == MODEL_GGUF_ARRAY);
        CHECK(model_gguf_find(g, keys[i]) == kv);
    }
    CHECK(model_gguf_kv_at(g, KV_COUNT + first) == NULL);
}

static void check_tensors(const model_gguf *g) {
    test_tensor t[8];
    int n = make_tensors(t);
    CHECK(model_gguf_tensor_count(g) == (uint64_t)n);
    CHECK(model_gguf_tensor_at(g, (uint64_t)n) == NULL);
    CHECK(model_gguf_tensor(g, "t.f3") == NULL && model_gguf_tensor(g, "") == NULL);
    for (int i = 0; i < n; i++) {
        const model_tensor_view *v = model_gguf_tensor(g, t[i].name);
        CHECK_MSG(v != NULL, "tensor %s", t[i].name);
        if (!v) continue;
        CHECK(v == model_gguf_tensor_at(g, (uint64_t)i));
        CHECK(strcmp(v->name, t[i].name) == 0);
        CHECK_MSG(v->dtype == t[i].dtype, "tensor %s", t[i].name);
        CHECK(v->ndim == t[i].ndim_expected);
        for (int d = 0; d < v->ndim; d++) CHECK(v->shape[d] == t[i].shape_expected[d]);
        CHECK(v->nbytes == t[i].nbytes);
        CHECK(memcmp(v->data, t[i].bytes, t[i].nbytes) == 0);
        CHECK(model_tensor_numel(v) == t[i].numel);
        float out[64];
        xd_err e;
        CHECK(model_tensor_to_f32(v, out, t[i].numel, &e) == 0);
        for (size_t k = 0; k < t[i].numel; k++)
            CHECK_MSG(out[k] == t[i].expected[k], "tensor %s element %zu: %g, expected %g",
                      t[i].name, k, out[k], t[i].expected[k]);
    }
}

static void test_valid_files(void) {
    const uint32_t versions[2] = {2, 3};
    const uint32_t alignments[3] = {0, 64, 8};
    for (int vi = 0; vi < 2; vi++)
        for (int ai = 0; ai < 3; ai++) {
            buf b = {0};
            build_valid(&b, versions[vi], alignments[ai]);
            model_gguf *g = NULL;
            uint8_t *copy;
            xd_err e;
            int rc = open_copy(b.p, b.len, "good.gguf", &g, &copy, &e);
            CHECK_MSG(rc == 0, "version %u alignment %u: %s", versions[vi], alignments[ai], e.msg);
            if (rc == 0) {
                CHECK(model_gguf_version(g) == versions[vi]);
                check_kv_order(g, alignments[ai] != 0);
                check_metadata(g);
                check_tensors(g);
            }
            model_gguf_close(g);
            free(copy);
            free(b.p);
        }
}

static void test_open_path(void) {
    char dir[] = "/tmp/xd_test_gguf_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[512];
    xd_err e;
    CHECK(xd_path_join(path, sizeof path, dir, "m.gguf", &e) == 0);
    buf b = {0};
    build_valid(&b, 3, 0);
    CHECK(xd_write_file_atomic(path, b.p, b.len, &e) == 0);
    model_gguf *g = NULL;
    CHECK(model_gguf_open(path, &g, &e) == 0);
    if (g) check_tensors(g);
    model_gguf_close(g);

    /* A truncated file on disk names its path. */
    CHECK(truncate(path, 100) == 0);
    int rc = model_gguf_open(path, &g, &e);
    CHECK_ERR_CONTAINS(rc, e, path);
    CHECK_ERR_CONTAINS(rc, e, "truncated header");
    CHECK(g == NULL);
    CHECK(truncate(path, 0) == 0);
    rc = model_gguf_open(path, &g, &e);
    CHECK_ERR_CONTAINS(rc, e, "truncated header: magic runs past end of file");
    unlink(path);
    rmdir(dir);
    rc = model_gguf_open("/nonexistent/m.gguf", &g, &e);
    CHECK_ERR_CONTAINS(rc, e, "/nonexistent/m.gguf: cannot open");
    free(b.p);
}

/* Every proper prefix of a valid file is rejected cleanly (the last tensor ends the file). */
static void test_truncation_everywhere(void) {
    buf b = {0};
    build_valid(&b, 3, 0);
    size_t header_errors = 0, data_errors = 0;
    for (size_t len = 0; len < b.len; len++) {
        model_gguf *g = NULL;
        uint8_t *copy;
        xd_err e = {{0}};
        int rc = open_copy(b.p, len, "trunc.gguf", &g, &copy, &e);
        CHECK_MSG(rc < 0 && g == NULL, "prefix of %zu bytes was accepted", len);
        CHECK_MSG(strncmp(e.msg, "trunc.gguf: ", 12) == 0, "prefix %zu: \"%s\"", len, e.msg);
        CHECK_MSG(strstr(e.msg, "past end of file") || strstr(e.msg, "truncated header"),
                  "prefix %zu: \"%s\"", len, e.msg);
        if (strstr(e.msg, "truncated header")) header_errors++;
        else data_errors++;
        model_gguf_close(g);
        free(copy);
    }
    CHECK(header_errors > 500 && data_errors > 100);
    free(b.p);
}

/* Cheap in-test fuzzing: every byte replaced by a few values must give success or a clean error,
 * and on success every tensor must convert. */
static void test_byte_corruption(void) {
    buf b = {0};
    build_valid(&b, 3, 0);
    const uint8_t values[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    for (size_t pos = 0; pos < b.len; pos++)
        for (size_t k = 0; k < sizeof values; k++) {
            uint8_t saved = b.p[pos];
            b.p[pos] = values[k];
            model_gguf *g = NULL;
            uint8_t *copy;
            xd_err e = {{0}};
            if (open_copy(b.p, b.len, "corrupt.gguf", &g, &copy, &e) == 0) {
                for (uint64_t i = 0; i < model_gguf_tensor_count(g); i++) {
                    const model_tensor_view *v = model_gguf_tensor_at(g, i);
                    uint64_t n = model_tensor_numel(v);
                    if (n > 4096) continue;
                    float out[4096];
                    CHECK_MSG(model_tensor_to_f32(v, out, n, &e) == 0, "%s", e.msg);
                }
            } else {
                CHECK_MSG(strncmp(e.msg, "corrupt.gguf: ", 14) == 0, "\"%s\"", e.msg);
            }
            model_gguf_close(g);
            free(copy);
            b.p[pos] = saved;
        }
    free(b.p);
}

static void test_header_errors(void) {
    buf b = {0};
    uint64_t ne8[1] = {8};

    put_bytes(&b, "GGML", 4), put_u32(&b, 3), put_u64(&b, 0), put_u64(&b, 0);
    EXPECT_ERROR(&b, "bad magic \"GGML\"");
    reset(&b);
    put_bytes(&b, "\x00\xff\x01\x02", 4), put_u32(&b, 3), put_u64(&b, 0), put_u64(&b, 0);
    EXPECT_ERROR(&b, "bad magic \"????\"");
    reset(&b);
    put_bytes(&b, "GG", 2);
    EXPECT_ERROR(&b, "truncated header: magic");

    reset(&b), header(&b, 1, 0, 0);
    EXPECT_ERROR(&b, "unsupported version 1");
    reset(&b), header(&b, 4, 0, 0);
    EXPECT_ERROR(&b, "unsupported version 4");
    reset(&b), header(&b, 0, 0, 0);
    EXPECT_ERROR(&b, "unsupported version 0");
    reset(&b), header(&b, 0x03000000u, 0, 0);
    EXPECT_ERROR(&b, "big-endian");

    /* Empty but valid: no tensors, no kvs. */
    reset(&b), header(&b, 3, 0, 0);
    {
        model_gguf *g = NULL;
        uint8_t *copy;
        xd_err e;
        CHECK(open_copy(b.p, b.len, "empty.gguf", &g, &copy, &e) == 0);
        CHECK(g && model_gguf_kv_count(g) == 0 && model_gguf_tensor_count(g) == 0);
        if (g) CHECK(model_gguf_find(g, "x") == NULL && model_gguf_tensor(g, "x") == NULL);
        model_gguf_close(g);
        free(copy);
    }
    /* NULL name and NULL data are tolerated. */
    {
        model_gguf *g = NULL;
        xd_err e;
        int rc = model_gguf_open_memory(NULL, 0, NULL, &g, &e);
        CHECK_ERR_CONTAINS(rc, e, "<memory>: truncated header: magic");
        rc = model_gguf_open_memory(NULL, 5, "null.gguf", &g, &e);
        CHECK_ERR_CONTAINS(rc, e, "null.gguf: no data");
    }

    /* Counts no file could hold, before anything is allocated for them. */
    reset(&b), header(&b, 3, 0, UINT64_MAX);
    EXPECT_ERROR(&b, "kv_count 18446744073709551615");
    reset(&b), header(&b, 3, 0, 1ull << 40), kv_key(&b, "a", T_U8), put_u8(&b, 1);
    EXPECT_ERROR(&b, "each kv needs at least");
    reset(&b), header(&b, 3, UINT64_MAX, 0);
    EXPECT_ERROR(&b, "tensor_count 18446744073709551615");
    reset(&b), header(&b, 3, 2, 0), tensor_info(&b, "w", 1, ne8, G_F32, 0);
    EXPECT_ERROR(&b, "each tensor info at least 24");
    /* Counts that fit the bound but not the file: a clean truncation error. */
    reset(&b), header(&b, 3, 0, 3), kv_key(&b, "a", T_U8), put_u8(&b, 1);
    kv_key(&b, "", T_U64), put_u64(&b, 0), put_u32(&b, 0), put_u16(&b, 0); /* 40 bytes in all */
    EXPECT_ERROR(&b, "truncated header: kv 2 of 3");

    /* Strings. */
    reset(&b), header(&b, 3, 0, 1), put_u64(&b, UINT64_MAX), put_u32(&b, T_U8), put_u8(&b, 0);
    EXPECT_ERROR(&b, "kv 0 of 1: string length 18446744073709551615");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "s", T_STR), put_u64(&b, 1ull << 62),
        put_bytes(&b, "abcdefgh", 8);
    EXPECT_ERROR(&b, "kv 0 of 1 (s): string length 4611686018427387904");
    reset(&b), header(&b, 3, 0, 1), put_strn(&b, "a\0b", 3), put_u32(&b, T_U8), put_u8(&b, 0);
    EXPECT_ERROR(&b, "key contains a NUL byte");

    /* Value types. */
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "t", 13), put_u64(&b, 0);
    EXPECT_ERROR(&b, "kv 0 of 1 (t): unknown value type 13");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "b", T_BOOL), put_u8(&b, 2);
    EXPECT_ERROR(&b, "bool value is 2");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "u", T_U64), put_u32(&b, 0);
    EXPECT_ERROR(&b, "truncated header: kv 0 of 1 (u) runs past end of file at byte");

    /* Arrays. */
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, T_ARR), put_u64(&b, 1),
        put_u32(&b, T_U8), put_u64(&b, 1), put_u8(&b, 0);
    EXPECT_ERROR(&b, "arrays of arrays are not supported");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, 77), put_u64(&b, 0);
    EXPECT_ERROR(&b, "unknown array element type 77");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, T_U32),
        put_u64(&b, UINT64_MAX / 2), put_u32(&b, 5);
    EXPECT_ERROR(&b, "array count 9223372036854775807 of uint32");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, T_F64), put_u64(&b, 3),
        put_f64(&b, 1), put_f64(&b, 2);
    EXPECT_ERROR(&b, "array count 3 of float64");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, T_STR),
        put_u64(&b, UINT64_MAX), put_str(&b, "x");
    EXPECT_ERROR(&b, "array count 18446744073709551615 of strings");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, T_STR), put_u64(&b, 3),
        put_str(&b, "x"), put_u64(&b, 1000), put_bytes(&b, "0123456789abcdef", 16);
    EXPECT_ERROR(&b, "kv 0 of 1 (a), string 1 of 3: string length 1000");
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "a", T_ARR), put_u32(&b, T_BOOL), put_u64(&b, 2),
        put_u8(&b, 0), put_u8(&b, 9);
    EXPECT_ERROR(&b, "bool array element 1 is 9");

    /* Duplicate keys; odd key bytes are shown as '?'. */
    reset(&b), header(&b, 3, 0, 3), kv_key(&b, "x", T_U8), put_u8(&b, 1), kv_key(&b, "y", T_U8),
        put_u8(&b, 1), kv_key(&b, "x", T_STR), put_str(&b, "again");
    EXPECT_ERROR(&b, "duplicate key x (kvs 0 and 2)");
    reset(&b), header(&b, 3, 0, 2), kv_key(&b, "\x1b[2J", T_U8), put_u8(&b, 1),
        kv_key(&b, "\x1b[2J", T_U8), put_u8(&b, 1);
    EXPECT_ERROR(&b, "duplicate key ?[2J");

    /* Alignment. */
    const struct {
        uint32_t type;
        uint64_t value;
        const char *fragment;
    } aligns[] = {
        {T_U32, 0, "general.alignment 0 is not a positive power of two"},
        {T_U32, 48, "general.alignment 48 is not a positive power of two"},
        {T_I32, (uint32_t)-32, "general.alignment -32 is not a positive power of two"},
        {T_U64, 3ull << 40, "not a positive power of two"},
        {T_F32, 0x42000000, "general.alignment is a float32, expected an unsigned integer"},
    };
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        reset(&b), header(&b, 3, 0, 1), kv_key(&b, "general.alignment", aligns[i].type);
        put_le(&b, aligns[i].value, aligns[i].type == T_U64 ? 8 : 4);
        EXPECT_ERROR(&b, aligns[i].fragment);
    }
    reset(&b), header(&b, 3, 0, 1), kv_key(&b, "general.alignment", T_STR), put_str(&b, "32");
    EXPECT_ERROR(&b, "general.alignment is a string");
    /* Any integer type holding a positive power of two will do. */
    reset(&b), header(&b, 3, 1, 1), kv_key(&b, "general.alignment", T_I16), put_u16(&b, 16);
    tensor_info(&b, "w", 1, (const uint64_t[]){4}, G_F32, 16), pad_to(&b, 16);
    for (int i = 0; i < 32; i++) put_u8(&b, (uint8_t)i);
    {
        model_gguf *g = NULL;
        uint8_t *copy;
        xd_err e;
        CHECK_MSG(open_copy(b.p, b.len, "align16.gguf", &g, &copy, &e) == 0, "%s", e.msg);
        const model_tensor_view *w = g ? model_gguf_tensor(g, "w") : NULL;
        CHECK(w && ((const uint8_t *)w->data)[0] == 16 && w->nbytes == 16);
        model_gguf_close(g);
        free(copy);
    }
    free(b.p);
}

/* One tensor of the given description followed by data_bytes of data at the default alignment. */
static void one_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                       uint64_t offset, size_t data_bytes) {
    reset(b);
    header(b, 3, 1, 0);
    tensor_info(b, name, n_dims, ne, type, offset);
    pad_to(b, 32);
    for (size_t i = 0; i < data_bytes; i++) put_u8(b, 0);
}

static void test_tensor_errors(void) {
    buf b = {0};
    uint64_t ne8[1] = {8};

    one_tensor(&b, "w", 1, ne8, G_F32, 0, 32);
    {
        model_gguf *g = NULL;
        uint8_t *copy;
        xd_err e;
        CHECK(open_copy(b.p, b.len, "one.gguf", &g, &copy, &e) == 0);
        model_gguf_close(g);
        free(copy);
    }
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, "w5", 5, ne5, G_F32, 0, 32);
    EXPECT_ERROR(&b, "tensor info 0 of 1 (w5): n_dims 5 is more than the 4 GGUF allows");
    uint64_t ne_big[4] = {1ull << 32, 1ull << 32, 2, 1};
    one_tensor(&b, "big", 4, ne_big, G_F32, 0, 32);
    EXPECT_ERROR(&b, "big): dimensions overflow");
    uint64_t ne_huge[2] = {1ull << 62, 4};
    one_tensor(&b, "huge", 2, ne_huge, G_F32, 0, 32);
    EXPECT_ERROR(&b, "dimensions overflow");
    uint64_t ne_neg[1] = {1ull << 63};
    one_tensor(&b, "neg", 1, ne_neg, G_F32, 0, 32);
    EXPECT_ERROR(&b, "ne[0] = 9223372036854775808 is larger than int64 allows");
    /* Fits int64 as elements but not as bytes. */
    uint64_t ne_bytes[1] = {1ull << 62};
    one_tensor(&b, "wide", 1, ne_bytes, G_F32, 0, 32);
    EXPECT_ERROR(&b, "tensor size overflows");

    uint64_t ne_q[2] = {256, 2};
    one_tensor(&b, "blk.0.attn_q.weight", 2, ne_q, G_Q4_K, 0, 288);
    EXPECT_ERROR(&b, "tensor blk.0.attn_q.weight has ggml type 12 (Q4_K), which xdistill cannot "
                     "dequantise");
    one_tensor(&b, "x", 1, ne8, 99, 0, 32);
    EXPECT_ERROR(&b, "tensor x has ggml type 99 (unknown)");
    one_tensor(&b, "x", 1, ne8, 28, 0, 64);
    EXPECT_ERROR(&b, "ggml type 28 (F64)");
    uint64_t ne16[2] = {16, 4};
    one_tensor(&b, "q", 2, ne16, G_Q8_0, 0, 68);
    EXPECT_ERROR(&b, "rows of 16 elements are not whole Q8_0 blocks of 32");
    one_tensor(&b, "q", 0, NULL, G_Q4_0, 0, 32);
    EXPECT_ERROR(&b, "not a whole number of Q4_0 blocks");

    /* Names. */
    reset(&b), header(&b, 3, 1, 0), put_strn(&b, "a\0b", 3), put_u32(&b, 1), put_u64(&b, 8),
        put_u32(&b, G_F32), put_u64(&b, 0), pad_to(&b, 32);
    for (int i = 0; i < 32; i++) put_u8(&b, 0);
    EXPECT_ERROR(&b, "tensor info 0 of 1 (a?b): tensor name contains a NUL byte");
    one_tensor(&b, "", 1, ne8, G_F32, 0, 32);
    EXPECT_ERROR(&b, "empty tensor name");
    reset(&b), header(&b, 3, 2, 0), tensor_info(&b, "w", 1, ne8, G_F32, 0),
        tensor_info(&b, "w", 1, ne8, G_F32, 32), pad_to(&b, 32);
    for (int i = 0; i < 64; i++) put_u8(&b, 0);
    EXPECT_ERROR(&b, "duplicate tensor name w (tensor infos 0 and 1)");

    /* Extents. */
    one_tensor(&b, "w", 1, ne8, G_F32, 0, 31);
    EXPECT_ERROR(&b, "tensor w: data at offset 0 (32 bytes) runs past end of file");
    one_tensor(&b, "w", 1, ne8, G_F32, 64, 32);
    EXPECT_ERROR(&b, "tensor w: data at offset 64 (32 bytes) runs past end of file");
    one_tensor(&b, "w", 1, ne8, G_F32, UINT64_MAX - 31, 32);
    EXPECT_ERROR(&b, "runs past end of file");
    one_tensor(&b, "w", 1, ne8, G_F32, 4, 64);
    EXPECT_ERROR(&b, "tensor w: offset 4 is not a multiple of the alignment 32");
    /* Only the data section past the header counts: the header itself is not tensor data. */
    reset(&b), header(&b, 3, 1, 0), tensor_info(&b, "w", 1, ne8, G_F32, 0);
    EXPECT_ERROR(&b, "the data section starts at byte 64");

    /* Overlaps, including through an empty tensor and a tensor inside another. */
    uint64_t ne16f[1] = {16}, ne0[1] = {0};
    reset(&b), header(&b, 3, 2, 0), tensor_info(&b, "a", 1, ne16f, G_F32, 0),
        tensor_info(&b, "b", 1, ne8, G_F32, 32), pad_to(&b, 32);
    for (int i = 0; i < 96; i++) put_u8(&b, 0);
    EXPECT_ERROR(&b, "tensors a and b overlap");
    reset(&b), header(&b, 3, 3, 0), tensor_info(&b, "big", 1, ne16f, G_F32, 0),
        tensor_info(&b, "empty", 1, ne0, G_F32, 32), tensor_info(&b, "inner", 1, ne8, G_F32, 32),
        pad_to(&b, 32);
    for (int i = 0; i < 64; i++) put_u8(&b, 0);
    EXPECT_ERROR(&b, "tensors big and inner overlap");
    reset(&b), header(&b, 3, 2, 0), tensor_info(&b, "a", 1, ne8, G_F32, 0),
        tensor_info(&b, "same", 1, ne8, G_F32, 0), pad_to(&b, 32);
    for (int i = 0; i < 32; i++) put_u8(&b, 0);
    EXPECT_ERROR(&b, "overlap");
    /* Empty tensors sharing an offset with data are fine, and tensors may come in any order. */
    reset(&b), header(&b, 3, 3, 0), tensor_info(&b, "late", 1, ne8, G_F32, 32),
        tensor_info(&b, "early", 1, ne8, G_F32, 0), tensor_info(&b, "empty", 1, ne0, G_F32, 32),
        pad_to(&b, 32);
    for (int i = 0; i < 64; i++) put_u8(&b, (uint8_t)i);
    {
        model_gguf *g = NULL;
        uint8_t *copy;
        xd_err e;
        CHECK_MSG(open_copy(b.p, b.len, "order.gguf", &g, &copy, &e) == 0, "%s", e.msg);
        if (g) {
            const model_tensor_view *late = model_gguf_tensor(g, "late");
            CHECK(late && ((const uint8_t *)late->data)[0] == 32 && late->nbytes == 32);
            const model_tensor_view *empty = model_gguf_tensor(g, "empty");
            CHECK(empty && empty->nbytes == 0 && model_tensor_numel(empty) == 0);
        }
        model_gguf_close(g);
        free(copy);
    }
    free(b.p);
}

int main(void) {
    test_valid_files();
    test_open_path();
    test_header_errors();
    test_tensor_errors();
    test_truncation_everywhere();
    test_byte_corruption();
    TEST_MAIN_END();
}
