/* model/gguf.h — GGUF v2/v3 reader: metadata and tensor views over a read-only map of the file.
 * Every offset, count and length is checked against the file size before it is used. */
#ifndef XD_MODEL_GGUF_H
#define XD_MODEL_GGUF_H

#include "tensor.h"

typedef enum model_gguf_type {
    MODEL_GGUF_UINT8 = 0,
    MODEL_GGUF_INT8 = 1,
    MODEL_GGUF_UINT16 = 2,
    MODEL_GGUF_INT16 = 3,
    MODEL_GGUF_UINT32 = 4,
    MODEL_GGUF_INT32 = 5,
    MODEL_GGUF_FLOAT32 = 6,
    MODEL_GGUF_BOOL = 7,
    MODEL_GGUF_STRING = 8,
    MODEL_GGUF_ARRAY = 9,
    MODEL_GGUF_UINT64 = 10,
    MODEL_GGUF_INT64 = 11,
    MODEL_GGUF_FLOAT64 = 12,
} model_gguf_type;

/* A string inside the mapped file: not NUL-terminated. */
typedef struct model_gguf_str {
    const char *ptr;
    uint64_t len;
} model_gguf_str;

typedef struct model_gguf_kv {
    model_gguf_str key;
    model_gguf_type type;
    /* Scalars: value.u (unsigned ints, bool), value.i (signed ints), value.f (floats),
     * value.s (strings). Arrays: array_type, array_count, and the element data begin at
     * array_data inside the map (strings in an array are length-prefixed: use
     * model_gguf_array_string). */
    union {
        uint64_t u;
        int64_t i;
        double f;
        model_gguf_str s;
    } value;
    model_gguf_type array_type;
    uint64_t array_count;
    const uint8_t *array_data;
    const model_gguf_str *array_strings; /* for string arrays: array_count entries, else NULL */
} model_gguf_kv;

typedef struct model_gguf model_gguf;

/* Opens and validates the whole header (metadata, tensor infos, every tensor's extent inside the
 * file). Errors name the file and the problem. */
int model_gguf_open(const char *path, model_gguf **out, xd_err *e);
/* Same, over bytes already in memory (used by the fuzz target); data must outlive the handle. */
int model_gguf_open_memory(const uint8_t *data, size_t size, const char *name, model_gguf **out,
                           xd_err *e);
void model_gguf_close(model_gguf *g);

uint32_t model_gguf_version(const model_gguf *g);
uint64_t model_gguf_kv_count(const model_gguf *g);
const model_gguf_kv *model_gguf_kv_at(const model_gguf *g, uint64_t i);
const model_gguf_kv *model_gguf_find(const model_gguf *g, const char *key);

/* Typed look-ups: 0 when found and convertible, 1 when absent, -1 (with e) on a wrong type. */
int model_gguf_get_int(const model_gguf *g, const char *key, int64_t *out, xd_err *e);
int model_gguf_get_float(const model_gguf *g, const char *key, double *out, xd_err *e);
int model_gguf_get_bool(const model_gguf *g, const char *key, bool *out, xd_err *e);
int model_gguf_get_string(const model_gguf *g, const char *key, model_gguf_str *out, xd_err *e);
/* A string array (e.g. tokenizer.ggml.tokens): 0 and the kv when present with that type. */
int model_gguf_get_array(const model_gguf *g, const char *key, model_gguf_type elem_type,
                         const model_gguf_kv **out, xd_err *e);
/* Element i of a numeric array as int64 / double (any integer, bool or float element type).
 * 0 when kv is not such an array or i is out of range; array_int clamps floats to int64's range
 * and truncates them toward zero, and gives INT64_MAX for uint64 elements above it. */
int64_t model_gguf_array_int(const model_gguf_kv *kv, uint64_t i);
double model_gguf_array_float(const model_gguf_kv *kv, uint64_t i);
/* Element i of a string array; {NULL, 0} when kv is not a string array or i is out of range. */
model_gguf_str model_gguf_array_string(const model_gguf_kv *kv, uint64_t i);
/* "uint32", "string", ... for messages; "unknown" outside the enum. */
const char *model_gguf_type_name(model_gguf_type t);

uint64_t model_gguf_tensor_count(const model_gguf *g);
/* Tensor views carry the row-major shape (GGUF ne[] reversed) and point into the map. */
const model_tensor_view *model_gguf_tensor_at(const model_gguf *g, uint64_t i);
const model_tensor_view *model_gguf_tensor(const model_gguf *g, const char *name);

#endif
