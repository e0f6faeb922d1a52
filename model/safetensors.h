/* model/safetensors.h — safetensors checkpoints: read (mmap; one file, or a directory with one
 * model.safetensors or a sharded model.safetensors.index.json) and write. */
#ifndef XD_MODEL_SAFETENSORS_H
#define XD_MODEL_SAFETENSORS_H

#include "tensor.h"

typedef struct model_safetensors model_safetensors;

/* path: a .safetensors file, or a directory holding model.safetensors or
 * model.safetensors.index.json (+ the shards it names). Validates every header entry: dtype known,
 * shape dims non-negative and not overflowing, offsets inside the data section and matching the
 * shape, no overlaps, no duplicate names across shards. */
int model_st_open(const char *path, model_safetensors **out, xd_err *e);
/* One file's bytes in memory (fuzz target); data must outlive the handle. */
int model_st_open_memory(const uint8_t *data, size_t size, const char *name,
                         model_safetensors **out, xd_err *e);
void model_st_close(model_safetensors *st);

uint64_t model_st_count(const model_safetensors *st);
const model_tensor_view *model_st_at(const model_safetensors *st, uint64_t i);
const model_tensor_view *model_st_find(const model_safetensors *st, const char *name);
/* The __metadata__ string map value for key, or NULL. */
const char *model_st_metadata(const model_safetensors *st, const char *key);

/* Writing: tensors in the given order, data in the given dtype (F32, F16, BF16, I32, I64). */
typedef struct model_st_entry {
    const char *name;
    model_dtype dtype;
    int ndim;
    int64_t shape[MODEL_MAX_DIMS];
    const void *data;
} model_st_entry;
/* Writes atomically (temporary name, fsync, rename). metadata: NULL or pairs of key, value
 * strings, n_metadata pairs. Data is packed with no gaps from an 8-byte aligned start (the
 * Python loader requires contiguous tensors), so a tensor is aligned to its element size only if
 * those before it keep it so: list wider dtypes first when alignment matters. */
int model_st_write(const char *path, const model_st_entry *entries, size_t n,
                   const char *const *metadata, size_t n_metadata, xd_err *e);

#endif
