/* model/tensor.h — a typed view of tensor bytes inside a mapped file, and conversion to fp32.
 * Both checkpoint readers (safetensors, GGUF) describe their tensors this way. */
#ifndef XD_MODEL_TENSOR_H
#define XD_MODEL_TENSOR_H

#include "../common/xd.h"

#define MODEL_MAX_DIMS 8

typedef enum model_dtype {
    MODEL_F32 = 0,
    MODEL_F16,
    MODEL_BF16,
    MODEL_Q8_0, /* blocks of 32: f16 scale, 32 x int8 */
    MODEL_Q4_0, /* blocks of 32: f16 scale, 16 bytes of nibbles, value = (q - 8) * d */
    MODEL_Q4_1, /* blocks of 32: f16 scale, f16 min, 16 bytes of nibbles, value = q * d + m */
    MODEL_I32,
    MODEL_I64,
    MODEL_DTYPE_COUNT
} model_dtype;

const char *model_dtype_name(model_dtype t);
/* Elements per block and bytes per block (1 and the element size for plain types). */
int model_dtype_block(model_dtype t, uint64_t *elems_per_block, uint64_t *bytes_per_block);
/* Bytes needed for n elements; error if n is not a whole number of blocks or on overflow. */
int model_dtype_nbytes(model_dtype t, uint64_t n, uint64_t *out, xd_err *e);

/* Shape is row-major, outermost first, as PyTorch prints it (GGUF's ne[] reversed). */
typedef struct model_tensor_view {
    const char *name;
    model_dtype dtype;
    int ndim;
    int64_t shape[MODEL_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} model_tensor_view;

uint64_t model_tensor_numel(const model_tensor_view *t);
/* Converts (dequantises) the whole tensor into dst, which holds n floats; n must equal numel. */
int model_tensor_to_f32(const model_tensor_view *t, float *dst, uint64_t n, xd_err *e);
/* Converts n elements of the given type starting at src into dst. */
int model_convert_to_f32(model_dtype t, const void *src, float *dst, uint64_t n, xd_err *e);

#endif
