/* model/data.h — the training data: token shards (what `xtrain prepare` writes; docs/formats.md,
 * "Token shards"), read back with validation, and the deterministic mixture loader whose state a
 * checkpoint stores so that a resumed run sees exactly the sequences an uninterrupted one would. */
#ifndef XD_MODEL_DATA_H
#define XD_MODEL_DATA_H

#include "tokenizer.h"

struct json_t;

#define MODEL_DATA_MAGIC "XDTOKSH1"
#define MODEL_DATA_VERSION 1
#define MODEL_DATA_HEADER_BYTES 64
#define MODEL_DATA_MANIFEST "manifest.json"
#define MODEL_DATA_MAX_SOURCES 64
#define MODEL_DATA_MAX_SEQ_LEN (1 << 24)

typedef enum model_data_split { MODEL_DATA_TRAIN = 0, MODEL_DATA_VAL = 1 } model_data_split;
const char *model_data_split_name(model_data_split s); /* "train", "val" */

/* Only the tokenizer of anything --model accepts: a .gguf file, an HF directory (tokenizer.json),
 * or a student directory (its "tokenizer_source"), without loading the weights. */
int model_data_tokenizer_load(const char *path, model_tokenizer **out, xd_err *e);

/* ---- Writing shards ---- */

typedef struct model_data_writer_options {
    const char *tokenizer_source; /* recorded in the manifest */
    int vocab;                    /* ids must be < vocab; > 65536 → 4-byte ids */
    int eos;                      /* the document separator, recorded in the manifest (-1: none) */
    const char *domain;           /* NULL → "domain": null */
    uint64_t shard_tokens;        /* at most this many tokens per shard (≥ 1) */
    bool overwrite;               /* replace a complete directory (one with a manifest) */
} model_data_writer_options;

typedef struct model_data_writer model_data_writer;

/* Creates dir (and parents) when missing. A directory that already has a manifest is refused unless
 * o->overwrite; its manifest and any {train,val}-NNNNN.bin are removed first, so a directory
 * without a manifest is always an incomplete one. */
int model_data_writer_open(const char *dir, const model_data_writer_options *o,
                           model_data_writer **out, xd_err *e);
/* Appends one document's ids (separator included) to a split's stream. A document goes whole into
 * one shard unless it is longer than shard_tokens; a shard that cannot take it is closed first. */
int model_data_writer_add(model_data_writer *w, model_data_split split, const int *ids, size_t n,
                          xd_err *e);
/* Writes the last shards, then the manifest (atomically, last: its presence marks the directory
 * complete). extra (may be NULL, borrowed) is an object whose keys are added to the manifest
 * ("inputs", "settings"). */
int model_data_writer_finish(model_data_writer *w, uint64_t skipped, struct json_t *extra,
                             xd_err *e);
uint64_t model_data_writer_tokens(const model_data_writer *w, model_data_split split);
uint64_t model_data_writer_documents(const model_data_writer *w, model_data_split split);
uint64_t model_data_writer_shards(const model_data_writer *w, model_data_split split);
void model_data_writer_free(model_data_writer *w);

/* ---- Reading shards ---- */

typedef struct model_data_shard {
    char *path;     /* dir/file, for messages */
    const char *file; /* points into path */
    uint64_t tokens;
    int width;      /* bytes per id: 2 or 4 */
    char sha256[65];
    xd_mapped_file map;
} model_data_shard;

typedef struct model_data_dir {
    char path[1024];
    char tokenizer_source[1024];
    int vocab, eos;
    char domain[256]; /* "" when the manifest says null */
    model_data_shard *shards[2]; /* per split, in manifest order */
    size_t n_shards[2];
    uint64_t tokens[2];
    uint64_t documents[2], skipped;
} model_data_dir;

/* Reads dir/manifest.json (types and values checked), maps every shard and checks its header
 * against the manifest and the file's size. Errors name the file and the problem. */
int model_data_open(const char *dir, model_data_dir *d, xd_err *e);
void model_data_close(model_data_dir *d);
/* Reads every byte: each shard's sha256 against the manifest and every id against the vocabulary. */
int model_data_verify(const model_data_dir *d, xd_err *e);
/* n ids of a shard from offset (within it); an id ≥ vocab is an error naming the file. */
int model_data_read(const model_data_dir *d, model_data_split split, size_t shard, uint64_t offset,
                    size_t n, int *out, xd_err *e);

/* ---- The mixture loader ----
 * Each source is one shard directory. train: every sequence picks a source by weight (one draw of
 * the loader's xd_rng), then takes that source's next T+1 tokens: its stream is its train shards in
 * an order shuffled per epoch (from the seed, the source's index and the epoch), wrapping into the
 * next epoch at the end. Consecutive sequences of a source overlap by one token (the cursor moves T),
 * so every adjacent pair of the stream is an (input, target) once per epoch. Weights must be finite
 * and ≥ 0 with a positive sum; a zero-weight source is opened and checked but never drawn; a source
 * with positive weight needs at least T+1 train tokens.
 * val: one pass, no sampling, weights ignored: each source in order, its val shards in file order,
 * T targets per sequence; a source's last sequence is padded (inputs with EOS, targets with -1), so
 * every val token after a source's first is a target exactly once. Sources without val tokens are
 * passed over; all empty is an error. All sources must share vocabulary size and EOS id. */

typedef struct model_data_source {
    const char *dir;
    double weight;
} model_data_source;

typedef struct model_data_cursor {
    uint64_t epoch;  /* completed passes over the source's stream */
    uint64_t shard;  /* position in the epoch's shard order */
    uint64_t offset; /* tokens into that shard */
} model_data_cursor;

/* Everything needed to continue: restoring it into a loader opened on the same sources, split,
 * T and seed reproduces the rest of the run exactly. Weights are not part of it: changing them on
 * resume deliberately changes the mixture from then on. */
typedef struct model_data_state {
    uint64_t seed;
    uint32_t seq_len; /* T */
    uint32_t split;
    uint32_t n_sources;
    uint32_t val_source; /* val: the source being read (n_sources when the pass is done) */
    uint64_t rng[4];
    uint64_t sequences; /* returned so far */
    uint64_t source_tokens[MODEL_DATA_MAX_SOURCES]; /* each source's split size, to detect changes */
    model_data_cursor cursor[MODEL_DATA_MAX_SOURCES];
} model_data_state;

/* The byte form: "XDLOADS1", then little-endian seed u64, seq_len u32, split u32, n_sources u32,
 * val_source u32, rng 4×u64, sequences u64, and per source tokens, epoch, shard, offset (u64). */
size_t model_data_state_bytes(const model_data_state *s);
int model_data_state_encode(const model_data_state *s, uint8_t *buf, size_t cap, xd_err *e);
int model_data_state_decode(const uint8_t *buf, size_t len, model_data_state *s, xd_err *e);
/* The JSON form (u64 seeds and rng words as "0x…" hex strings). A new reference. */
struct json_t *model_data_state_to_json(const model_data_state *s);
int model_data_state_from_json(const struct json_t *j, model_data_state *s, xd_err *e);

typedef struct model_data_loader model_data_loader;

int model_data_loader_open(const model_data_source *sources, int n_sources, model_data_split split,
                           int seq_len, uint64_t seed, model_data_loader **out, xd_err *e);
void model_data_loader_free(model_data_loader *l);
/* The next sequence: inputs[0..T-1] and targets[0..T-1] (targets[t] follows inputs[t]); source
 * (may be NULL) gets the source's index. Returns 0, 1 when the val pass is over (never for train),
 * or negative on error (a shard with an id outside the vocabulary). */
int model_data_next(model_data_loader *l, int *inputs, int *targets, int *source, xd_err *e);
void model_data_loader_state(const model_data_loader *l, model_data_state *s);
/* Errors, changing nothing, when the state is from other sources, split, T or seed. */
int model_data_loader_restore(model_data_loader *l, const model_data_state *s, xd_err *e);
/* Back to the beginning (a new val pass). */
void model_data_loader_reset(model_data_loader *l);
int model_data_loader_sources(const model_data_loader *l);
const model_data_dir *model_data_loader_dir(const model_data_loader *l, int source);
int model_data_loader_vocab(const model_data_loader *l);

#endif
