/* model/gguf.c — GGUF v2/v3 reader.
 *
 * Layout (all little-endian): "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count, the
 * kvs (string key, uint32 type, value), the tensor infos (string name, uint32 n_dims,
 * uint64 ne[n_dims], uint32 ggml type, uint64 offset), padding to the alignment, then the data
 * section that the tensor offsets are relative to. A string is a uint64 length and that many bytes.
 *
 * The file comes from outside, so nothing in it is trusted: every read is checked against the
 * bytes left, and every count is checked against what those bytes could hold before anything is
 * allocated for it. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_MAX_DIMS 4 /* GGML_MAX_DIMS */
#define GGUF_DEFAULT_ALIGNMENT 32
/* The smallest encodings, so a count larger than the remaining bytes can hold is rejected
 * before any allocation: key length (8) + value type (4) + a one-byte value; name length (8) +
 * n_dims (4) + ggml type (4) + offset (8) with no dimensions. */
#define GGUF_MIN_KV_BYTES 13
#define GGUF_MIN_TENSOR_INFO_BYTES 24
#define GGUF_STRING_LENGTH_BYTES 8

typedef struct gguf_tensor {
    model_tensor_view view;
    model_gguf_str name; /* inside the map; view.name is a NUL-terminated copy */
    uint64_t offset;     /* relative to the start of the data section */
} gguf_tensor;

/* Open-addressing hash table from names to indices. Slots hold index + 1 (0 = empty); the names
 * themselves are found through base + index * stride, so one table type serves kvs and tensors. */
typedef struct name_index {
    uint64_t *slots;
    uint64_t mask;
    const uint8_t *base;
    size_t stride;
} name_index;

struct model_gguf {
    char *name; /* the file name, or the name given for memory: every error starts with it */
    xd_mapped_file map; /* owned when opened from a path; empty for memory */
    const uint8_t *data;
    uint64_t size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    model_gguf_kv *kvs;
    uint64_t kv_count;
    gguf_tensor *tensors;
    uint64_t tensor_count;
    char *tensor_names; /* all tensor names, NUL-terminated, one after the other */
    name_index kv_index, tensor_index;
};

/* ---- reading with bounds checks ---- */

typedef struct reader {
    const uint8_t *data;
    uint64_t size, pos; /* pos <= size always */
    const char *file;
    char what[192]; /* the item being read, for messages: "kv 3 of 35 (general.name)" */
    xd_err *e;
} reader;

/* Copies a string from the file into buf for a message: at most ~80 bytes, with bytes that are
 * not printable ASCII shown as '?', so a hostile name cannot garble the terminal. */
static const char *printable(char *buf, size_t cap, const char *p, uint64_t len) {
    size_t limit = cap > 4 ? cap - 4 : 0, n = 0;
    if (limit > 80) limit = 80;
    for (uint64_t i = 0; i < len && n < limit; i++) {
        unsigned char c = (unsigned char)p[i];
        buf[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (len > n) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = 0;
    return buf;
}

static int reader_fail(reader *r, const char *fmt, ...) XD_PRINTF(2, 3);
static int reader_fail(reader *r, const char *fmt, ...) {
    char msg[XD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return xd_fail(r->e, "%s: %s: %s", r->file, r->what, msg);
}

static uint64_t bytes_left(const reader *r) { return r->size - r->pos; }

static int need(reader *r, uint64_t n) {
    if (n <= bytes_left(r)) return 0;
    return xd_fail(r->e,
                   "%s: truncated header: %s runs past end of file at byte %llu (needs %llu "
                   "bytes there, the file is %llu bytes)",
                   r->file, r->what, (unsigned long long)r->pos, (unsigned long long)n,
                   (unsigned long long)r->size);
}

/* GGUF is little-endian whatever the host is. */
static uint64_t load_le(const uint8_t *p, int nbytes) {
    uint64_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int read_u32(reader *r, uint32_t *out) {
    if (need(r, 4) != 0) return -1;
    *out = (uint32_t)load_le(r->data + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int read_u64(reader *r, uint64_t *out) {
    if (need(r, 8) != 0) return -1;
    *out = load_le(r->data + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int read_string(reader *r, model_gguf_str *out) {
    uint64_t len;
    if (read_u64(r, &len) != 0) return -1;
    if (len > bytes_left(r))
        return xd_fail(r->e,
                       "%s: truncated header: %s: string length %llu at byte %llu runs past end "
                       "of file (%llu bytes left)",
                       r->file, r->what, (unsigned long long)len, (unsigned long long)(r->pos - 8),
                       (unsigned long long)bytes_left(r));
    out->ptr = (const char *)(r->data + r->pos);
    out->len = len;
    r->pos += len;
    return 0;
}

/* ---- value types ---- */

const char *model_gguf_type_name(model_gguf_type t) {
    static const char *const names[] = {
        [MODEL_GGUF_UINT8] = "uint8",     [MODEL_GGUF_INT8] = "int8",
        [MODEL_GGUF_UINT16] = "uint16",   [MODEL_GGUF_INT16] = "int16",
        [MODEL_GGUF_UINT32] = "uint32",   [MODEL_GGUF_INT32] = "int32",
        [MODEL_GGUF_FLOAT32] = "float32", [MODEL_GGUF_BOOL] = "bool",
        [MODEL_GGUF_STRING] = "string",   [MODEL_GGUF_ARRAY] = "array",
        [MODEL_GGUF_UINT64] = "uint64",   [MODEL_GGUF_INT64] = "int64",
        [MODEL_GGUF_FLOAT64] = "float64",
    };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Bytes of one value of a fixed-size type; 0 for strings, arrays and unknown types. */
static uint64_t fixed_size(model_gguf_type t) {
    switch (t) {
    case MODEL_GGUF_UINT8: case MODEL_GGUF_INT8: case MODEL_GGUF_BOOL: return 1;
    case MODEL_GGUF_UINT16: case MODEL_GGUF_INT16: return 2;
    case MODEL_GGUF_UINT32: case MODEL_GGUF_INT32: case MODEL_GGUF_FLOAT32: return 4;
    case MODEL_GGUF_UINT64: case MODEL_GGUF_INT64: case MODEL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static bool is_unsigned(model_gguf_type t) {
    return t == MODEL_GGUF_UINT8 || t == MODEL_GGUF_UINT16 || t == MODEL_GGUF_UINT32 ||
           t == MODEL_GGUF_UINT64;
}
static bool is_signed(model_gguf_type t) {
    return t == MODEL_GGUF_INT8 || t == MODEL_GGUF_INT16 || t == MODEL_GGUF_INT32 ||
           t == MODEL_GGUF_INT64;
}
static bool is_float(model_gguf_type t) {
    return t == MODEL_GGUF_FLOAT32 || t == MODEL_GGUF_FLOAT64;
}

/* Decoded fixed-size value: exactly one of u (unsigned, bool), i (signed) or f (floats) is set. */
typedef struct scalar {
    uint64_t u;
    int64_t i;
    double f;
} scalar;

static scalar decode_scalar(model_gguf_type t, const uint8_t *p) {
    scalar s = {0, 0, 0.0};
    uint64_t raw = load_le(p, (int)fixed_size(t));
    switch (t) {
    case MODEL_GGUF_UINT8: case MODEL_GGUF_UINT16: case MODEL_GGUF_UINT32:
    case MODEL_GGUF_UINT64: case MODEL_GGUF_BOOL: s.u = raw; break;
    case MODEL_GGUF_INT8: s.i = (int8_t)raw; break;
    case MODEL_GGUF_INT16: s.i = (int16_t)raw; break;
    case MODEL_GGUF_INT32: s.i = (int32_t)raw; break;
    case MODEL_GGUF_INT64: s.i = (int64_t)raw; break;
    case MODEL_GGUF_FLOAT32: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, 4);
        s.f = f;
        break;
    }
    case MODEL_GGUF_FLOAT64: memcpy(&s.f, &raw, 8); break;
    default: break;
    }
    return s;
}

static int read_value_type(reader *r, const char *role, model_gguf_type *out) {
    uint32_t t;
    if (read_u32(r, &t) != 0) return -1;
    if (t > MODEL_GGUF_FLOAT64) return reader_fail(r, "unknown %s type %u", role, t);
    *out = (model_gguf_type)t;
    return 0;
}

/* An array value: element type, count, elements. Strings get an index of their own so that
 * element i is found without walking the ones before it. */
static int read_array(reader *r, model_gguf_kv *kv) {
    if (read_value_type(r, "array element", &kv->array_type) != 0) return -1;
    if (kv->array_type == MODEL_GGUF_ARRAY)
        return reader_fail(r, "arrays of arrays are not supported (GGUF readers use none)");
    if (read_u64(r, &kv->array_count) != 0) return -1;
    uint64_t count = kv->array_count, start = r->pos;
    kv->array_data = r->data + r->pos;
    uint64_t elem = fixed_size(kv->array_type);
    if (elem != 0) {
        if (count > bytes_left(r) / elem)
            return reader_fail(r,
                               "truncated header: array count %llu of %s (%llu bytes each) runs "
                               "past end of file: only %llu bytes left at byte %llu",
                               (unsigned long long)count, model_gguf_type_name(kv->array_type),
                               (unsigned long long)elem, (unsigned long long)bytes_left(r),
                               (unsigned long long)r->pos);
        if (kv->array_type == MODEL_GGUF_BOOL)
            for (uint64_t j = 0; j < count; j++)
                if (r->data[r->pos + j] > 1)
                    return reader_fail(r, "bool array element %llu is %u, neither 0 nor 1",
                                       (unsigned long long)j, r->data[r->pos + j]);
        r->pos += count * elem;
        return 0;
    }
    /* Strings: each needs at least its 8-byte length. */
    if (count > bytes_left(r) / GGUF_STRING_LENGTH_BYTES)
        return reader_fail(r,
                           "truncated header: array count %llu of strings runs past end of file: "
                           "only %llu bytes left at byte %llu, each string needs at least 8",
                           (unsigned long long)count, (unsigned long long)bytes_left(r),
                           (unsigned long long)r->pos);
    /* First pass validates every string; only then is the index allocated, so its size (16 bytes
     * per string) stays proportional to bytes that were really there. */
    for (uint64_t j = 0; j < count; j++) {
        model_gguf_str s;
        uint64_t before = r->pos;
        if (read_string(r, &s) == 0) continue;
        /* Name the element only on failure: formatting it for each of 49152 tokens is waste. */
        char base_what[sizeof r->what];
        memcpy(base_what, r->what, sizeof base_what);
        snprintf(r->what, sizeof r->what, "%.120s, string %llu of %llu", base_what,
                 (unsigned long long)j, (unsigned long long)count);
        r->pos = before;
        return read_string(r, &s);
    }
    model_gguf_str *strings = xd_calloc(count, sizeof *strings, r->e);
    if (!strings) return xd_wrap(r->e, "%s: %s", r->file, r->what);
    r->pos = start;
    for (uint64_t j = 0; j < count; j++) {
        int rc = read_string(r, &strings[j]);
        (void)rc; /* cannot fail: the first pass read the same bytes */
    }
    kv->array_strings = strings;
    return 0;
}

static int read_value(reader *r, model_gguf_kv *kv) {
    if (kv->type == MODEL_GGUF_STRING) return read_string(r, &kv->value.s);
    if (kv->type == MODEL_GGUF_ARRAY) return read_array(r, kv);
    uint64_t n = fixed_size(kv->type);
    if (need(r, n) != 0) return -1;
    scalar s = decode_scalar(kv->type, r->data + r->pos);
    if (kv->type == MODEL_GGUF_BOOL && s.u > 1)
        return reader_fail(r, "bool value is %llu, neither 0 nor 1", (unsigned long long)s.u);
    if (is_signed(kv->type)) kv->value.i = s.i;
    else if (is_float(kv->type)) kv->value.f = s.f;
    else kv->value.u = s.u;
    r->pos += n;
    return 0;
}

/* ---- name look-up ---- */

static uint64_t hash_name(const char *p, uint64_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

static const model_gguf_str *index_name(const name_index *ix, uint64_t i) {
    return (const model_gguf_str *)(const void *)(ix->base + i * ix->stride);
}

static bool str_equal(const model_gguf_str *a, const char *p, uint64_t len) {
    return a->len == len && (len == 0 || memcmp(a->ptr, p, len) == 0);
}

/* Index + 1 of the entry named p[0..len), or 0. */
static uint64_t index_lookup(const name_index *ix, const char *p, uint64_t len) {
    if (!ix->slots) return 0;
    for (uint64_t h = hash_name(p, len) & ix->mask;; h = (h + 1) & ix->mask) {
        uint64_t slot = ix->slots[h];
        if (slot == 0 || str_equal(index_name(ix, slot - 1), p, len)) return slot;
    }
}

/* Builds the table over count names; on a duplicate, names the two indices and returns 1. */
static int index_build(name_index *ix, const void *base, size_t stride, uint64_t count,
                       uint64_t *dup_first, uint64_t *dup_second, xd_err *e) {
    uint64_t cap = 8;
    while (cap < 2 * count) cap *= 2; /* count is bounded by the file size, so this ends */
    ix->slots = xd_calloc((size_t)cap, sizeof *ix->slots, e);
    if (!ix->slots) return -1;
    ix->mask = cap - 1;
    ix->base = base;
    ix->stride = stride;
    for (uint64_t i = 0; i < count; i++) {
        const model_gguf_str *name = index_name(ix, i);
        uint64_t h = hash_name(name->ptr, name->len) & ix->mask;
        while (ix->slots[h] != 0) {
            if (str_equal(index_name(ix, ix->slots[h] - 1), name->ptr, name->len)) {
                *dup_first = ix->slots[h] - 1;
                *dup_second = i;
                return 1;
            }
            h = (h + 1) & ix->mask;
        }
        ix->slots[h] = i + 1;
    }
    return 0;
}

/* ---- ggml tensor types ---- */

static const char *ggml_type_name(uint32_t t) {
    static const char *const names[] = {
        "F32",     "F16",    "Q4_0",    "Q4_1",  "Q4_2 (removed)", "Q4_3 (removed)", "Q5_0",
        "Q5_1",    "Q8_0",   "Q8_1",    "Q2_K",  "Q3_K",           "Q4_K",           "Q5_K",
        "Q6_K",    "Q8_K",   "IQ2_XXS", "IQ2_XS", "IQ3_XXS",       "IQ1_S",          "IQ4_NL",
        "IQ3_S",   "IQ2_S",  "IQ4_XS",  "I8",    "I16",            "I32",            "I64",
        "F64",     "IQ1_M",  "BF16",    "Q4_0_4_4 (removed)", "Q4_0_4_8 (removed)",
        "Q4_0_8_8 (removed)", "TQ1_0", "TQ2_0", "IQ4_NL_4_4 (removed)", "IQ4_NL_4_8 (removed)",
        "IQ4_NL_8_8 (removed)", "MXFP4",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static bool dtype_from_ggml(uint32_t t, model_dtype *out) {
    switch (t) {
    case 0: *out = MODEL_F32; return true;
    case 1: *out = MODEL_F16; return true;
    case 2: *out = MODEL_Q4_0; return true;
    case 3: *out = MODEL_Q4_1; return true;
    case 8: *out = MODEL_Q8_0; return true;
    case 30: *out = MODEL_BF16; return true;
    default: return false;
    }
}

/* ---- parsing ---- */

static int parse_header_start(reader *r, model_gguf *g, uint64_t *kv_count,
                              uint64_t *tensor_count) {
    snprintf(r->what, sizeof r->what, "magic");
    if (need(r, 4) != 0) return -1;
    if (memcmp(r->data, "GGUF", 4) != 0) {
        char shown[16];
        return xd_fail(r->e, "%s: bad magic \"%s\" (expected \"GGUF\"): not a GGUF file", r->file,
                       printable(shown, sizeof shown, (const char *)r->data, 4));
    }
    r->pos = 4;
    snprintf(r->what, sizeof r->what, "version");
    if (read_u32(r, &g->version) != 0) return -1;
    if (g->version != 2 && g->version != 3) {
        uint32_t v = g->version;
        uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
        if (swapped == 2 || swapped == 3)
            return xd_fail(r->e,
                           "%s: unsupported version: GGUF version %u read big-endian; xdistill "
                           "reads little-endian GGUF only",
                           r->file, swapped);
        return xd_fail(r->e,
                       "%s: unsupported version %u: xdistill reads GGUF versions 2 and 3%s",
                       r->file, v, v == 1 ? " (convert the v1 file with a current llama.cpp)" : "");
    }
    snprintf(r->what, sizeof r->what, "tensor_count");
    if (read_u64(r, tensor_count) != 0) return -1;
    snprintf(r->what, sizeof r->what, "kv_count");
    if (read_u64(r, kv_count) != 0) return -1;
    /* Both fit in the rest of the file at their smallest, or the counts are lies. */
    uint64_t left = bytes_left(r);
    if (*kv_count > left / GGUF_MIN_KV_BYTES)
        return xd_fail(r->e,
                       "%s: truncated header: kv_count %llu cannot fit in the %llu bytes left in "
                       "the file (each kv needs at least %d bytes)",
                       r->file, (unsigned long long)*kv_count, (unsigned long long)left,
                       GGUF_MIN_KV_BYTES);
    if (*tensor_count > (left - *kv_count * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_INFO_BYTES)
        return xd_fail(r->e,
                       "%s: truncated header: tensor_count %llu cannot fit in the %llu bytes left "
                       "in the file after %llu kvs (each kv needs at least %d bytes, each tensor "
                       "info at least %d)",
                       r->file, (unsigned long long)*tensor_count, (unsigned long long)left,
                       (unsigned long long)*kv_count, GGUF_MIN_KV_BYTES,
                       GGUF_MIN_TENSOR_INFO_BYTES);
    return 0;
}

/* Grows *array (of elem-byte entries) to hold at least n; capacity doubles. Growth follows the
 * entries actually parsed, so a lying count never reserves memory by itself. */
static int grow(void **array, uint64_t *cap, uint64_t n, size_t elem, xd_err *e) {
    if (n <= *cap) return 0;
    uint64_t new_cap = *cap ? *cap * 2 : 16;
    if (new_cap < n) new_cap = n;
    uint64_t bytes;
    if (!xd_mul_ok(new_cap, elem, &bytes) || bytes > SIZE_MAX)
        return xd_fail(e, "too many entries (%llu)", (unsigned long long)n);
    void *p = realloc(*array, (size_t)bytes);
    if (!p) return xd_fail(e, "out of memory allocating %llu bytes", (unsigned long long)bytes);
    memset((uint8_t *)p + *cap * elem, 0, (size_t)((new_cap - *cap) * elem));
    *array = p;
    *cap = new_cap;
    return 0;
}

static int parse_kvs(reader *r, model_gguf *g, uint64_t kv_count) {
    uint64_t cap = 0;
    for (uint64_t i = 0; i < kv_count; i++) {
        if (grow((void **)&g->kvs, &cap, i + 1, sizeof *g->kvs, r->e) != 0)
            return xd_wrap(r->e, "%s", r->file);
        model_gguf_kv *kv = &g->kvs[i];
        g->kv_count = i + 1; /* so close frees this kv's string index whatever happens next */
        snprintf(r->what, sizeof r->what, "kv %llu of %llu", (unsigned long long)i,
                 (unsigned long long)kv_count);
        if (read_string(r, &kv->key) != 0) return -1;
        char shown[96];
        printable(shown, sizeof shown, kv->key.ptr, kv->key.len);
        snprintf(r->what, sizeof r->what, "kv %llu of %llu (%s)", (unsigned long long)i,
                 (unsigned long long)kv_count, shown);
        if (memchr(kv->key.ptr, 0, kv->key.len))
            return reader_fail(r, "key contains a NUL byte");
        if (read_value_type(r, "value", &kv->type) != 0) return -1;
        if (read_value(r, kv) != 0) return -1;
    }
    g->kv_count = kv_count;
    uint64_t first, second;
    int rc = index_build(&g->kv_index, g->kvs ? (const void *)&g->kvs[0].key : NULL,
                         sizeof *g->kvs, kv_count, &first, &second, r->e);
    if (rc < 0) return xd_wrap(r->e, "%s", r->file);
    if (rc > 0) {
        char shown[96];
        const model_gguf_str *k = &g->kvs[second].key;
        return xd_fail(r->e, "%s: duplicate key %s (kvs %llu and %llu)", r->file,
                       printable(shown, sizeof shown, k->ptr, k->len), (unsigned long long)first,
                       (unsigned long long)second);
    }
    return 0;
}

static int parse_alignment(reader *r, model_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const model_gguf_kv *kv = model_gguf_find(g, "general.alignment");
    if (!kv) return 0;
    if (is_signed(kv->type)) {
        if (kv->value.i <= 0)
            return xd_fail(r->e, "%s: general.alignment %lld is not a positive power of two",
                           r->file, (long long)kv->value.i);
        g->alignment = (uint64_t)kv->value.i;
    } else if (is_unsigned(kv->type)) {
        g->alignment = kv->value.u;
    } else {
        return xd_fail(r->e, "%s: general.alignment is a %s, expected an unsigned integer",
                       r->file, model_gguf_type_name(kv->type));
    }
    if (g->alignment == 0 || (g->alignment & (g->alignment - 1)) != 0)
        return xd_fail(r->e, "%s: general.alignment %llu is not a positive power of two",
                       r->file, (unsigned long long)g->alignment);
    return 0;
}

static int parse_tensor_info(reader *r, gguf_tensor *t, uint64_t i, uint64_t count) {
    snprintf(r->what, sizeof r->what, "tensor info %llu of %llu", (unsigned long long)i,
             (unsigned long long)count);
    if (read_string(r, &t->name) != 0) return -1;
    char shown[96];
    printable(shown, sizeof shown, t->name.ptr, t->name.len);
    snprintf(r->what, sizeof r->what, "tensor info %llu of %llu (%s)", (unsigned long long)i,
             (unsigned long long)count, shown);
    if (t->name.len == 0) return reader_fail(r, "empty tensor name");
    if (memchr(t->name.ptr, 0, t->name.len))
        return reader_fail(r, "tensor name contains a NUL byte");
    uint32_t n_dims;
    if (read_u32(r, &n_dims) != 0) return -1;
    if (n_dims > GGUF_MAX_DIMS)
        return reader_fail(r, "n_dims %u is more than the %d GGUF allows", n_dims, GGUF_MAX_DIMS);
    uint64_t ne[GGUF_MAX_DIMS], numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (read_u64(r, &ne[d]) != 0) return -1;
        if (ne[d] > INT64_MAX)
            return reader_fail(r, "ne[%u] = %llu is larger than int64 allows", d,
                               (unsigned long long)ne[d]);
    }
    uint32_t ggml_type;
    if (read_u32(r, &ggml_type) != 0) return -1;
    if (read_u64(r, &t->offset) != 0) return -1;

    for (uint32_t d = 0; d < n_dims; d++)
        if (!xd_mul_ok(numel, ne[d], &numel) || numel > INT64_MAX)
            return reader_fail(r, "dimensions overflow: the product of ne[] exceeds int64");
    if (!dtype_from_ggml(ggml_type, &t->view.dtype))
        return xd_fail(r->e,
                       "%s: tensor %s has ggml type %u (%s), which xdistill cannot dequantise "
                       "(it reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1)",
                       r->file, shown, ggml_type, ggml_type_name(ggml_type));
    uint64_t block_elems, block_bytes;
    model_dtype_block(t->view.dtype, &block_elems, &block_bytes);
    if (n_dims > 0 && ne[0] % block_elems != 0)
        return reader_fail(r, "rows of %llu elements are not whole %s blocks of %llu",
                           (unsigned long long)ne[0], model_dtype_name(t->view.dtype),
                           (unsigned long long)block_elems);
    xd_err size_err;
    if (model_dtype_nbytes(t->view.dtype, numel, &t->view.nbytes, &size_err) != 0)
        return reader_fail(r, "%s", size_err.msg);
    /* ne[0] is the innermost dimension; the view's shape is outermost first. */
    t->view.ndim = (int)n_dims;
    for (uint32_t d = 0; d < n_dims; d++) t->view.shape[n_dims - 1 - d] = (int64_t)ne[d];
    return 0;
}

typedef struct extent {
    uint64_t start, end, index;
} extent;

static int compare_extents(const void *a, const void *b) {
    const extent *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Every tensor lies inside the file at an aligned offset, and no two share bytes. */
static int check_extents(reader *r, model_gguf *g) {
    char shown[96], other[96];
    extent *ext = xd_calloc((size_t)g->tensor_count, sizeof *ext, r->e);
    if (!ext) return xd_wrap(r->e, "%s", r->file);
    int rc = 0;
    for (uint64_t i = 0; i < g->tensor_count && rc == 0; i++) {
        gguf_tensor *t = &g->tensors[i];
        printable(shown, sizeof shown, t->name.ptr, t->name.len);
        uint64_t start, end;
        if (t->offset % g->alignment != 0)
            rc = xd_fail(r->e, "%s: tensor %s: offset %llu is not a multiple of the alignment %llu",
                         r->file, shown, (unsigned long long)t->offset,
                         (unsigned long long)g->alignment);
        else if (!xd_add_ok(g->data_offset, t->offset, &start) ||
                 !xd_add_ok(start, t->view.nbytes, &end) || end > g->size)
            rc = xd_fail(r->e,
                         "%s: tensor %s: data at offset %llu (%llu bytes) runs past end of file: "
                         "the data section starts at byte %llu and the file is %llu bytes",
                         r->file, shown, (unsigned long long)t->offset,
                         (unsigned long long)t->view.nbytes, (unsigned long long)g->data_offset,
                         (unsigned long long)g->size);
        else {
            t->view.data = g->data + start;
            ext[i] = (extent){t->offset, t->offset + t->view.nbytes, i};
        }
    }
    if (rc == 0) {
        qsort(ext, (size_t)g->tensor_count, sizeof *ext, compare_extents);
        /* Sorted by start, any overlap shows between neighbours that hold bytes: keep the
         * furthest end seen so far, so an empty tensor in between hides nothing. */
        uint64_t furthest = 0, owner = 0;
        bool any = false;
        for (uint64_t k = 0; k < g->tensor_count && rc == 0; k++) {
            if (ext[k].start == ext[k].end) continue; /* zero bytes overlap nothing */
            if (any && ext[k].start < furthest) {
                const gguf_tensor *a = &g->tensors[owner], *b = &g->tensors[ext[k].index];
                rc = xd_fail(r->e,
                             "%s: tensors %s and %s overlap: the first ends at data offset %llu, "
                             "the second starts at %llu",
                             r->file, printable(shown, sizeof shown, a->name.ptr, a->name.len),
                             printable(other, sizeof other, b->name.ptr, b->name.len),
                             (unsigned long long)furthest, (unsigned long long)ext[k].start);
            }
            if (!any || ext[k].end > furthest) {
                furthest = ext[k].end;
                owner = ext[k].index;
            }
            any = true;
        }
    }
    free(ext);
    return rc;
}

static int parse_tensors(reader *r, model_gguf *g, uint64_t tensor_count) {
    uint64_t cap = 0, names_bytes = 0;
    for (uint64_t i = 0; i < tensor_count; i++) {
        if (grow((void **)&g->tensors, &cap, i + 1, sizeof *g->tensors, r->e) != 0)
            return xd_wrap(r->e, "%s", r->file);
        if (parse_tensor_info(r, &g->tensors[i], i, tensor_count) != 0) return -1;
        names_bytes += g->tensors[i].name.len + 1; /* names lie inside the file: no overflow */
    }
    g->tensor_count = tensor_count;

    uint64_t header_end = r->pos;
    if (!xd_add_ok(header_end, g->alignment - 1, &g->data_offset))
        return xd_fail(r->e, "%s: data section offset overflows with alignment %llu", r->file,
                       (unsigned long long)g->alignment);
    g->data_offset -= g->data_offset % g->alignment;

    uint64_t first, second;
    int rc = index_build(&g->tensor_index, g->tensors ? (const void *)&g->tensors[0].name : NULL,
                         sizeof *g->tensors, tensor_count, &first, &second, r->e);
    if (rc < 0) return xd_wrap(r->e, "%s", r->file);
    if (rc > 0) {
        char shown[96];
        const model_gguf_str *n = &g->tensors[second].name;
        return xd_fail(r->e, "%s: duplicate tensor name %s (tensor infos %llu and %llu)", r->file,
                       printable(shown, sizeof shown, n->ptr, n->len), (unsigned long long)first,
                       (unsigned long long)second);
    }

    g->tensor_names = xd_malloc((size_t)names_bytes, r->e);
    if (!g->tensor_names) return xd_wrap(r->e, "%s", r->file);
    char *p = g->tensor_names;
    for (uint64_t i = 0; i < tensor_count; i++) {
        gguf_tensor *t = &g->tensors[i];
        memcpy(p, t->name.ptr, (size_t)t->name.len);
        p[t->name.len] = 0;
        t->view.name = p;
        p += t->name.len + 1;
    }
    return check_extents(r, g);
}

static int parse(const uint8_t *data, size_t size, const char *name, model_gguf **out, xd_err *e) {
    *out = NULL;
    if (!name) name = "<memory>";
    model_gguf *g = xd_calloc(1, sizeof *g, e);
    if (!g) return xd_wrap(e, "%s", name);
    size_t name_len = strlen(name);
    g->name = xd_malloc(name_len + 1, e);
    if (!g->name) {
        free(g);
        return xd_wrap(e, "%s", name);
    }
    memcpy(g->name, name, name_len + 1);
    g->data = data;
    g->size = size;

    reader r = {.data = data, .size = size, .pos = 0, .file = g->name, .e = e};
    uint64_t kv_count, tensor_count;
    if (parse_header_start(&r, g, &kv_count, &tensor_count) != 0 ||
        parse_kvs(&r, g, kv_count) != 0 || parse_alignment(&r, g) != 0 ||
        parse_tensors(&r, g, tensor_count) != 0) {
        model_gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

int model_gguf_open_memory(const uint8_t *data, size_t size, const char *name, model_gguf **out,
                           xd_err *e) {
    if (!data && size) {
        *out = NULL;
        return xd_fail(e, "%s: no data", name ? name : "<memory>");
    }
    return parse(data ? data : (const uint8_t *)"", size, name, out, e);
}

int model_gguf_open(const char *path, model_gguf **out, xd_err *e) {
    *out = NULL;
    xd_mapped_file map;
    if (xd_map_file(path, &map, e) != 0) return -1;
    if (parse(map.data, map.size, path, out, e) != 0) {
        xd_unmap_file(&map);
        return -1;
    }
    (*out)->map = map;
    return 0;
}

void model_gguf_close(model_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; i < g->kv_count; i++) free((void *)g->kvs[i].array_strings);
    free(g->kvs);
    free(g->tensors);
    free(g->tensor_names);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(g->name);
    xd_unmap_file(&g->map);
    free(g);
}

/* ---- queries ---- */

uint32_t model_gguf_version(const model_gguf *g) { return g->version; }
uint64_t model_gguf_kv_count(const model_gguf *g) { return g->kv_count; }

const model_gguf_kv *model_gguf_kv_at(const model_gguf *g, uint64_t i) {
    return i < g->kv_count ? &g->kvs[i] : NULL;
}

const model_gguf_kv *model_gguf_find(const model_gguf *g, const char *key) {
    uint64_t slot = index_lookup(&g->kv_index, key, strlen(key));
    return slot ? &g->kvs[slot - 1] : NULL;
}

uint64_t model_gguf_tensor_count(const model_gguf *g) { return g->tensor_count; }

const model_tensor_view *model_gguf_tensor_at(const model_gguf *g, uint64_t i) {
    return i < g->tensor_count ? &g->tensors[i].view : NULL;
}

const model_tensor_view *model_gguf_tensor(const model_gguf *g, const char *name) {
    uint64_t slot = index_lookup(&g->tensor_index, name, strlen(name));
    return slot ? &g->tensors[slot - 1].view : NULL;
}

static int wrong_type(const model_gguf *g, const char *key, const model_gguf_kv *kv,
                      const char *expected, xd_err *e) {
    if (kv->type == MODEL_GGUF_ARRAY)
        return xd_fail(e, "%s: key %s is an array of %s, expected %s", g->name, key,
                       model_gguf_type_name(kv->array_type), expected);
    return xd_fail(e, "%s: key %s is a %s, expected %s", g->name, key,
                   model_gguf_type_name(kv->type), expected);
}

int model_gguf_get_int(const model_gguf *g, const char *key, int64_t *out, xd_err *e) {
    const model_gguf_kv *kv = model_gguf_find(g, key);
    if (!kv) return 1;
    if (is_signed(kv->type)) {
        *out = kv->value.i;
        return 0;
    }
    if (!is_unsigned(kv->type)) return wrong_type(g, key, kv, "an integer", e);
    if (kv->value.u > INT64_MAX)
        return xd_fail(e, "%s: key %s = %llu does not fit in int64", g->name, key,
                       (unsigned long long)kv->value.u);
    *out = (int64_t)kv->value.u;
    return 0;
}

int model_gguf_get_float(const model_gguf *g, const char *key, double *out, xd_err *e) {
    const model_gguf_kv *kv = model_gguf_find(g, key);
    if (!kv) return 1;
    if (is_float(kv->type)) *out = kv->value.f;
    else if (is_signed(kv->type)) *out = (double)kv->value.i;
    else if (is_unsigned(kv->type)) *out = (double)kv->value.u;
    else return wrong_type(g, key, kv, "a number", e);
    return 0;
}

int model_gguf_get_bool(const model_gguf *g, const char *key, bool *out, xd_err *e) {
    const model_gguf_kv *kv = model_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->type != MODEL_GGUF_BOOL) return wrong_type(g, key, kv, "a bool", e);
    *out = kv->value.u != 0;
    return 0;
}

int model_gguf_get_string(const model_gguf *g, const char *key, model_gguf_str *out, xd_err *e) {
    const model_gguf_kv *kv = model_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->type != MODEL_GGUF_STRING) return wrong_type(g, key, kv, "a string", e);
    *out = kv->value.s;
    return 0;
}

int model_gguf_get_array(const model_gguf *g, const char *key, model_gguf_type elem_type,
                         const model_gguf_kv **out, xd_err *e) {
    const model_gguf_kv *kv = model_gguf_find(g, key);
    if (!kv) return 1;
    if (kv->type != MODEL_GGUF_ARRAY || kv->array_type != elem_type) {
        char expected[48];
        snprintf(expected, sizeof expected, "an array of %s", model_gguf_type_name(elem_type));
        return wrong_type(g, key, kv, expected, e);
    }
    *out = kv;
    return 0;
}

/* Element i of a fixed-size array, decoded; false when there is none. */
static bool array_element(const model_gguf_kv *kv, uint64_t i, scalar *s) {
    if (!kv || kv->type != MODEL_GGUF_ARRAY || i >= kv->array_count) return false;
    uint64_t n = fixed_size(kv->array_type);
    if (n == 0) return false;
    *s = decode_scalar(kv->array_type, kv->array_data + i * n);
    return true;
}

int64_t model_gguf_array_int(const model_gguf_kv *kv, uint64_t i) {
    scalar s;
    if (!array_element(kv, i, &s)) return 0;
    if (is_signed(kv->array_type)) return s.i;
    if (is_float(kv->array_type)) {
        /* Converting a double outside int64's range is undefined: clamp first (NaN gives 0). */
        if (!(s.f == s.f)) return 0;
        if (s.f >= 9223372036854775807.0) return INT64_MAX;
        if (s.f <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)s.f;
    }
    return s.u > INT64_MAX ? INT64_MAX : (int64_t)s.u;
}

double model_gguf_array_float(const model_gguf_kv *kv, uint64_t i) {
    scalar s;
    if (!array_element(kv, i, &s)) return 0.0;
    if (is_signed(kv->array_type)) return (double)s.i;
    if (is_float(kv->array_type)) return s.f;
    return (double)s.u;
}

model_gguf_str model_gguf_array_string(const model_gguf_kv *kv, uint64_t i) {
    model_gguf_str none = {NULL, 0};
    if (!kv || kv->type != MODEL_GGUF_ARRAY || kv->array_type != MODEL_GGUF_STRING ||
        !kv->array_strings || i >= kv->array_count)
        return none;
    return kv->array_strings[i];
}
