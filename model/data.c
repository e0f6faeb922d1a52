/* Token shards and the mixture loader (model/data.h; the format is in docs/formats.md). */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_MANIFEST_MAX_BYTES (256u << 20)
#define DATA_STATE_MAGIC "XDLOADS1"

const char *model_data_split_name(model_data_split s) { return s == MODEL_DATA_VAL ? "val" : "train"; }

static void data_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void data_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t data_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t data_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ---- tokenizer only ---- */

static int data_tokenizer_gguf(const char *path, model_tokenizer **out, xd_err *e) {
    model_gguf *g;
    if (model_gguf_open(path, &g, e)) return -1;
    int rc = model_gguf_find(g, "tokenizer.ggml.model") ? model_tokenizer_load_gguf(g, out, e)
                                                        : xd_fail(e, "%s: the GGUF has no tokenizer", path);
    model_gguf_close(g);
    return rc;
}

int model_data_tokenizer_load(const char *path, model_tokenizer **out, xd_err *e) {
    *out = NULL;
    if (xd_file_exists(path)) return data_tokenizer_gguf(path, out, e);
    if (!xd_is_dir(path))
        return xd_fail(e, "%s: no such model (expected an HF model directory or a .gguf file)", path);
    char p[4096];
    if (xd_path_join(p, sizeof p, path, "tokenizer.json", e)) return -1;
    if (xd_file_exists(p)) return model_tokenizer_load_hf(path, out, e);
    /* a student made from a GGUF teacher names where its tokenizer is */
    char *text;
    size_t len;
    if (xd_path_join(p, sizeof p, path, "config.json", e)) return -1;
    if (!xd_file_exists(p)) return xd_fail(e, "%s: no tokenizer.json and no config.json", path);
    if (xd_read_file(p, 4u << 20, &text, &len, e)) return -1;
    json_t *root = json_loadb(text, len, 0, NULL);
    free(text);
    json_t *src = root ? json_object_get(root, "tokenizer_source") : NULL;
    int rc;
    if (!json_is_string(src)) {
        rc = xd_fail(e, "%s: no tokenizer.json beside it and no \"tokenizer_source\"", p);
    } else {
        const char *from = json_string_value(src);
        rc = xd_is_dir(from) ? model_tokenizer_load_hf(from, out, e) : data_tokenizer_gguf(from, out, e);
        if (rc) xd_wrap(e, "%s: the tokenizer named by tokenizer_source", p);
    }
    json_decref(root);
    return rc;
}

/* ---- writer ---- */

struct model_data_writer {
    char dir[4096];
    char *tokenizer_source, *domain;
    int vocab, eos, width;
    uint64_t shard_tokens;
    uint8_t *buf[2];   /* header space + the open shard's ids */
    uint64_t cap[2];   /* ids the buffer holds */
    uint64_t fill[2];  /* ids in the open shard */
    uint64_t tokens[2], documents[2], shards[2];
    json_t *list[2];
};

static bool data_is_shard_name(const char *name) {
    const char *p = !strncmp(name, "train-", 6) ? name + 6 : !strncmp(name, "val-", 4) ? name + 4 : NULL;
    if (!p || !(*p >= '0' && *p <= '9')) return false;
    while (*p >= '0' && *p <= '9') p++;
    return !strcmp(p, ".bin");
}

static int data_mkdirs(const char *dir, xd_err *e) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return xd_fail(e, "%s: path too long", dir);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                return xd_fail(e, "%s: cannot create directory: %s", p, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    if (!xd_is_dir(dir)) return xd_fail(e, "%s: not a directory", dir);
    return 0;
}

int model_data_writer_open(const char *dir, const model_data_writer_options *o,
                           model_data_writer **out, xd_err *e) {
    *out = NULL;
    if (o->vocab < 1) return xd_fail(e, "%s: vocabulary size %d", dir, o->vocab);
    if (o->eos >= o->vocab) return xd_fail(e, "%s: EOS id %d outside the vocabulary", dir, o->eos);
    if (o->shard_tokens < 1) return xd_fail(e, "%s: shard size must be at least 1 token", dir);
    char manifest[4096];
    if (xd_path_join(manifest, sizeof manifest, dir, MODEL_DATA_MANIFEST, e)) return -1;
    if (xd_file_exists(manifest) && !o->overwrite)
        return xd_fail(e, "%s already holds token shards (--force to overwrite)", dir);
    if (data_mkdirs(dir, e)) return -1;
    /* the manifest goes first: from here until finish the directory reads as incomplete */
    if (unlink(manifest) != 0 && errno != ENOENT)
        return xd_fail(e, "%s: cannot remove: %s", manifest, strerror(errno));
    DIR *d = opendir(dir);
    if (!d) return xd_fail(e, "%s: cannot open: %s", dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        if (!data_is_shard_name(de->d_name)) continue;
        char p[4096];
        rc = xd_path_join(p, sizeof p, dir, de->d_name, e);
        if (rc == 0 && unlink(p) != 0) rc = xd_fail(e, "%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    if (rc) return rc;

    model_data_writer *w = xd_calloc(1, sizeof *w, e);
    if (!w) return -1;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    w->tokenizer_source = strdup(o->tokenizer_source ? o->tokenizer_source : "");
    w->domain = o->domain ? strdup(o->domain) : NULL;
    w->vocab = o->vocab;
    w->eos = o->eos;
    w->width = o->vocab <= 65536 ? 2 : 4;
    w->shard_tokens = o->shard_tokens;
    w->list[0] = json_array();
    w->list[1] = json_array();
    if (!w->tokenizer_source || (o->domain && !w->domain) || !w->list[0] || !w->list[1]) {
        model_data_writer_free(w);
        return xd_fail(e, "out of memory");
    }
    *out = w;
    return 0;
}

/* header, sha256, temporary name + fsync + rename (xd_write_file_atomic) */
static int data_flush(model_data_writer *w, int s, xd_err *e) {
    if (w->fill[s] == 0) return 0;
    uint8_t *h = w->buf[s];
    memset(h, 0, MODEL_DATA_HEADER_BYTES);
    memcpy(h, MODEL_DATA_MAGIC, 8);
    data_put_u32(h + 8, MODEL_DATA_VERSION);
    data_put_u32(h + 12, (uint32_t)w->width);
    data_put_u64(h + 16, w->fill[s]);
    data_put_u32(h + 24, (uint32_t)w->vocab);
    size_t bytes = MODEL_DATA_HEADER_BYTES + (size_t)w->fill[s] * (size_t)w->width;
    char name[64], path[4096], hex[65];
    snprintf(name, sizeof name, "%s-%05llu.bin", model_data_split_name((model_data_split)s),
             (unsigned long long)w->shards[s]);
    if (xd_path_join(path, sizeof path, w->dir, name, e)) return -1;
    xd_sha256_hex(h, bytes, hex);
    if (xd_write_file_atomic(path, h, bytes, e)) return -1;
    json_t *entry = json_pack("{s:s, s:I, s:s}", "file", name, "tokens", (json_int_t)w->fill[s],
                              "sha256", hex);
    if (!entry || json_array_append_new(w->list[s], entry)) return xd_fail(e, "out of memory");
    w->shards[s]++;
    w->fill[s] = 0;
    return 0;
}

int model_data_writer_add(model_data_writer *w, model_data_split split, const int *ids, size_t n,
                          xd_err *e) {
    int s = split == MODEL_DATA_VAL;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->vocab)
            return xd_fail(e, "%s: token %d of a document is outside the vocabulary (0..%d)", w->dir,
                           ids[i], w->vocab - 1);
    if (n == 0) return 0;
    if (w->fill[s] > 0 && w->fill[s] + n > w->shard_tokens && data_flush(w, s, e)) return -1;
    size_t done = 0;
    while (done < n) {
        uint64_t take = w->shard_tokens - w->fill[s];
        if (take > n - done) take = n - done;
        uint64_t need = w->fill[s] + take;
        if (need > w->cap[s]) {
            /* grow geometrically, never past a shard: a small corpus stays small in memory */
            uint64_t cap = w->cap[s] ? w->cap[s] : 4096;
            while (cap < need) cap *= 2;
            if (cap > w->shard_tokens) cap = w->shard_tokens;
            uint64_t bytes;
            if (!xd_mul_ok(cap, (uint64_t)w->width, &bytes) || bytes > SIZE_MAX - MODEL_DATA_HEADER_BYTES)
                return xd_fail(e, "%s: a shard of %llu tokens does not fit in memory", w->dir,
                               (unsigned long long)cap);
            uint8_t *grown = realloc(w->buf[s], MODEL_DATA_HEADER_BYTES + (size_t)bytes);
            if (!grown) return xd_fail(e, "out of memory (a shard of %llu tokens)", (unsigned long long)cap);
            w->buf[s] = grown;
            w->cap[s] = cap;
        }
        uint8_t *p = w->buf[s] + MODEL_DATA_HEADER_BYTES + (size_t)w->fill[s] * (size_t)w->width;
        for (uint64_t i = 0; i < take; i++) {
            uint32_t v = (uint32_t)ids[done + i];
            if (w->width == 2) {
                p[2 * i] = (uint8_t)v;
                p[2 * i + 1] = (uint8_t)(v >> 8);
            } else {
                data_put_u32(p + 4 * i, v);
            }
        }
        w->fill[s] += take;
        done += (size_t)take;
        if (w->fill[s] == w->shard_tokens && data_flush(w, s, e)) return -1;
    }
    w->tokens[s] += n;
    w->documents[s]++;
    return 0;
}

int model_data_writer_finish(model_data_writer *w, uint64_t skipped, json_t *extra, xd_err *e) {
    if (data_flush(w, 0, e) || data_flush(w, 1, e)) return -1;
    json_t *m = json_object();
    json_t *tok = json_pack("{s:s, s:i, s:i}", "source", w->tokenizer_source, "vocab_size", w->vocab,
                            "eos_id", w->eos);
    json_t *splits = json_pack("{s:O, s:O}", "train", w->list[0], "val", w->list[1]);
    json_t *docs = json_pack("{s:I, s:I, s:I}", "train", (json_int_t)w->documents[0], "val",
                             (json_int_t)w->documents[1], "skipped", (json_int_t)skipped);
    int rc = 0;
    if (!m || !tok || !splits || !docs) rc = xd_fail(e, "out of memory");
    if (rc == 0) {
        json_object_set_new(m, "format", json_string("xdistill-shards"));
        json_object_set_new(m, "version", json_integer(MODEL_DATA_VERSION));
        json_object_set(m, "tokenizer", tok);
        json_object_set_new(m, "domain", w->domain ? json_string(w->domain) : json_null());
        json_object_set_new(m, "id_width", json_integer(w->width));
        json_object_set(m, "splits", splits);
        json_object_set(m, "documents", docs);
        const char *key;
        json_t *v;
        if (json_is_object(extra))
            json_object_foreach(extra, key, v) json_object_set(m, key, v);
    }
    char *text = rc == 0 ? json_dumps(m, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
    if (rc == 0 && !text) rc = xd_fail(e, "out of memory");
    char path[4096];
    if (rc == 0) rc = xd_path_join(path, sizeof path, w->dir, MODEL_DATA_MANIFEST, e);
    if (rc == 0) {
        size_t len = strlen(text);
        char *nl = realloc(text, len + 2);
        if (!nl) {
            rc = xd_fail(e, "out of memory");
        } else {
            text = nl;
            text[len] = '\n';
            text[len + 1] = 0;
            rc = xd_write_file_atomic(path, text, len + 1, e);
        }
    }
    free(text);
    json_decref(tok);
    json_decref(splits);
    json_decref(docs);
    json_decref(m);
    return rc;
}

uint64_t model_data_writer_tokens(const model_data_writer *w, model_data_split split) {
    return w->tokens[split == MODEL_DATA_VAL];
}
uint64_t model_data_writer_documents(const model_data_writer *w, model_data_split split) {
    return w->documents[split == MODEL_DATA_VAL];
}
uint64_t model_data_writer_shards(const model_data_writer *w, model_data_split split) {
    int s = split == MODEL_DATA_VAL;
    return w->shards[s] + (w->fill[s] > 0);
}

void model_data_writer_free(model_data_writer *w) {
    if (!w) return;
    for (int s = 0; s < 2; s++) {
        free(w->buf[s]);
        json_decref(w->list[s]);
    }
    free(w->tokenizer_source);
    free(w->domain);
    free(w);
}

/* ---- reader ---- */

/* Typed lookups in the manifest: every failure names the file and the key. */
static int data_get_int(const char *mpath, json_t *obj, const char *where, const char *key,
                        int64_t lo, int64_t hi, int64_t *out, xd_err *e) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return xd_fail(e, "%s: \"%s%s\" must be an integer in [%lld, %lld]", mpath, where, key,
                       (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

static int data_get_string(const char *mpath, json_t *obj, const char *where, const char *key,
                           const char **out, xd_err *e) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) return xd_fail(e, "%s: \"%s%s\" must be a string", mpath, where, key);
    *out = json_string_value(v);
    return 0;
}

static bool data_is_hex64(const char *s) {
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return s[64] == 0;
}

/* A shard's header against the manifest and the file's size. */
static int data_check_shard(const model_data_dir *d, const model_data_shard *sh, xd_err *e) {
    const uint8_t *h = sh->map.data;
    size_t size = sh->map.size;
    if (size < MODEL_DATA_HEADER_BYTES)
        return xd_fail(e, "%s: %zu bytes, too short for the %d-byte shard header", sh->path, size,
                       MODEL_DATA_HEADER_BYTES);
    if (memcmp(h, MODEL_DATA_MAGIC, 8) != 0)
        return xd_fail(e, "%s: not a token shard (bad magic; expected \"%s\")", sh->path, MODEL_DATA_MAGIC);
    uint32_t version = data_get_u32(h + 8), width = data_get_u32(h + 12), vocab = data_get_u32(h + 24);
    uint64_t count = data_get_u64(h + 16);
    if (version != MODEL_DATA_VERSION)
        return xd_fail(e, "%s: shard version %u is not supported (expected %d)", sh->path, version,
                       MODEL_DATA_VERSION);
    if (width != 2 && width != 4) return xd_fail(e, "%s: id width %u (expected 2 or 4)", sh->path, width);
    for (int i = 28; i < MODEL_DATA_HEADER_BYTES; i++)
        if (h[i]) return xd_fail(e, "%s: reserved header byte %d is not zero", sh->path, i);
    if (vocab != (uint32_t)d->vocab)
        return xd_fail(e, "%s: vocabulary size %u, but the manifest says %d", sh->path, vocab, d->vocab);
    if (width == 2 && vocab > 65536)
        return xd_fail(e, "%s: 2-byte ids cannot hold a vocabulary of %u", sh->path, vocab);
    if (count != sh->tokens)
        return xd_fail(e, "%s: holds %llu tokens, but the manifest says %llu", sh->path,
                       (unsigned long long)count, (unsigned long long)sh->tokens);
    uint64_t bytes;
    if (!xd_mul_ok(count, width, &bytes) || !xd_add_ok(bytes, MODEL_DATA_HEADER_BYTES, &bytes) ||
        bytes != size)
        return xd_fail(e, "%s: %zu bytes, but %llu tokens of %u bytes need %llu (truncated or padded)",
                       sh->path, size, (unsigned long long)count, width,
                       (unsigned long long)(MODEL_DATA_HEADER_BYTES + count * width));
    return 0;
}

static int data_open_split(model_data_dir *d, const char *mpath, json_t *arr, int s, xd_err *e) {
    const char *sname = model_data_split_name((model_data_split)s);
    char where[64];
    size_t n = json_array_size(arr);
    d->shards[s] = n ? xd_calloc(n, sizeof(model_data_shard), e) : NULL;
    if (n && !d->shards[s]) return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(arr, i);
        snprintf(where, sizeof where, "splits.%s[%zu].", sname, i);
        if (!json_is_object(it)) return xd_fail(e, "%s: \"splits.%s[%zu]\" must be an object", mpath, sname, i);
        const char *file = "", *sha = "";
        int64_t tokens = 0;
        if (data_get_string(mpath, it, where, "file", &file, e) ||
            data_get_int(mpath, it, where, "tokens", 0, INT64_MAX, &tokens, e) ||
            data_get_string(mpath, it, where, "sha256", &sha, e))
            return -1;
        /* shard names are plain names inside the directory: no paths out of it */
        if (!*file || file[0] == '.' || strchr(file, '/') || strlen(file) > 255)
            return xd_fail(e, "%s: \"%sfile\" = \"%s\" is not a plain file name", mpath, where, file);
        if (!data_is_hex64(sha))
            return xd_fail(e, "%s: \"%ssha256\" must be 64 lowercase hex digits", mpath, where);
        model_data_shard *sh = &d->shards[s][i];
        d->n_shards[s] = i + 1; /* so close frees what is open */
        size_t plen = strlen(d->path) + strlen(file) + 2;
        if (!(sh->path = xd_malloc(plen, e))) return -1;
        snprintf(sh->path, plen, "%s/%s", d->path, file);
        sh->file = sh->path + strlen(d->path) + 1;
        sh->tokens = (uint64_t)tokens;
        memcpy(sh->sha256, sha, 65);
        if (xd_map_file(sh->path, &sh->map, e) || data_check_shard(d, sh, e)) return -1;
        sh->width = (int)data_get_u32(sh->map.data + 12);
        if (!xd_add_ok(d->tokens[s], sh->tokens, &d->tokens[s]))
            return xd_fail(e, "%s: token counts overflow", mpath);
    }
    d->n_shards[s] = n;
    return 0;
}

static int data_open_manifest(model_data_dir *d, json_t *m, const char *mpath, xd_err *e) {
    if (!json_is_object(m)) return xd_fail(e, "%s: not a JSON object", mpath);
    const char *fmt = "", *src = "";
    int64_t v = 0;
    if (data_get_string(mpath, m, "", "format", &fmt, e)) return -1;
    if (strcmp(fmt, "xdistill-shards"))
        return xd_fail(e, "%s: \"format\" is \"%s\", expected \"xdistill-shards\"", mpath, fmt);
    if (data_get_int(mpath, m, "", "version", 0, INT32_MAX, &v, e)) return -1;
    if (v != MODEL_DATA_VERSION)
        return xd_fail(e, "%s: manifest version %lld is not supported (expected %d)", mpath, (long long)v,
                       MODEL_DATA_VERSION);
    json_t *tok = json_object_get(m, "tokenizer");
    if (!json_is_object(tok)) return xd_fail(e, "%s: \"tokenizer\" must be an object", mpath);
    if (data_get_string(mpath, tok, "tokenizer.", "source", &src, e) ||
        data_get_int(mpath, tok, "tokenizer.", "vocab_size", 1, UINT32_MAX, &v, e))
        return -1;
    if (v > INT32_MAX) return xd_fail(e, "%s: \"tokenizer.vocab_size\" %lld is too large", mpath, (long long)v);
    d->vocab = (int)v;
    snprintf(d->tokenizer_source, sizeof d->tokenizer_source, "%s", src);
    if (data_get_int(mpath, tok, "tokenizer.", "eos_id", -1, d->vocab - 1, &v, e)) return -1;
    d->eos = (int)v;
    json_t *dom = json_object_get(m, "domain");
    if (json_is_string(dom)) snprintf(d->domain, sizeof d->domain, "%s", json_string_value(dom));
    else if (!json_is_null(dom)) return xd_fail(e, "%s: \"domain\" must be a string or null", mpath);
    json_t *docs = json_object_get(m, "documents");
    if (!json_is_object(docs)) return xd_fail(e, "%s: \"documents\" must be an object", mpath);
    int64_t nt = 0, nv = 0, ns = 0;
    if (data_get_int(mpath, docs, "documents.", "train", 0, INT64_MAX, &nt, e) ||
        data_get_int(mpath, docs, "documents.", "val", 0, INT64_MAX, &nv, e) ||
        data_get_int(mpath, docs, "documents.", "skipped", 0, INT64_MAX, &ns, e))
        return -1;
    d->documents[0] = (uint64_t)nt;
    d->documents[1] = (uint64_t)nv;
    d->skipped = (uint64_t)ns;
    if (!json_is_array(json_object_get(m, "inputs")))
        return xd_fail(e, "%s: \"inputs\" must be an array", mpath);
    json_t *splits = json_object_get(m, "splits");
    if (!json_is_object(splits)) return xd_fail(e, "%s: \"splits\" must be an object", mpath);
    for (int s = 0; s < 2; s++) {
        json_t *arr = json_object_get(splits, model_data_split_name((model_data_split)s));
        if (!json_is_array(arr))
            return xd_fail(e, "%s: \"splits.%s\" must be an array", mpath, model_data_split_name((model_data_split)s));
        if (data_open_split(d, mpath, arr, s, e)) return -1;
    }
    return 0;
}

int model_data_open(const char *dir, model_data_dir *d, xd_err *e) {
    memset(d, 0, sizeof *d);
    if (snprintf(d->path, sizeof d->path, "%s", dir) >= (int)sizeof d->path)
        return xd_fail(e, "%s: path too long", dir);
    if (!xd_is_dir(dir)) return xd_fail(e, "%s: no such directory", dir);
    char mpath[1100];
    snprintf(mpath, sizeof mpath, "%s/%s", dir, MODEL_DATA_MANIFEST);
    if (!xd_file_exists(mpath))
        return xd_fail(e, "%s: no %s (not a token shard directory, or xtrain prepare did not finish)",
                       dir, MODEL_DATA_MANIFEST);
    char *text;
    size_t len;
    if (xd_read_file(mpath, DATA_MANIFEST_MAX_BYTES, &text, &len, e)) return -1;
    json_error_t jerr;
    json_t *m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    int rc = m ? data_open_manifest(d, m, mpath, e)
               : xd_fail(e, "%s: invalid JSON (line %d: %s)", mpath, jerr.line, jerr.text);
    json_decref(m);
    if (rc) model_data_close(d);
    return rc;
}

void model_data_close(model_data_dir *d) {
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < d->n_shards[s]; i++) {
            xd_unmap_file(&d->shards[s][i].map);
            free(d->shards[s][i].path);
        }
        free(d->shards[s]);
        d->shards[s] = NULL;
        d->n_shards[s] = 0;
    }
}

static inline uint32_t data_id_at(const model_data_shard *sh, uint64_t i) {
    const uint8_t *p = sh->map.data + MODEL_DATA_HEADER_BYTES + i * (uint64_t)sh->width;
    return sh->width == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : data_get_u32(p);
}

static int data_bad_id(const model_data_shard *sh, uint64_t i, uint32_t id, int vocab, xd_err *e) {
    return xd_fail(e, "%s: token %llu is %u, outside the vocabulary (0..%d)", sh->path,
                   (unsigned long long)i, id, vocab - 1);
}

int model_data_verify(const model_data_dir *d, xd_err *e) {
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; i < d->n_shards[s]; i++) {
            const model_data_shard *sh = &d->shards[s][i];
            char hex[65];
            xd_sha256_hex(sh->map.data, sh->map.size, hex);
            if (strcmp(hex, sh->sha256))
                return xd_fail(e, "%s: sha256 is %s, but the manifest says %s (the file changed)",
                               sh->path, hex, sh->sha256);
            for (uint64_t t = 0; t < sh->tokens; t++) {
                uint32_t id = data_id_at(sh, t);
                if (id >= (uint32_t)d->vocab) return data_bad_id(sh, t, id, d->vocab, e);
            }
        }
    }
    return 0;
}

int model_data_read(const model_data_dir *d, model_data_split split, size_t shard, uint64_t offset,
                    size_t n, int *out, xd_err *e) {
    int s = split == MODEL_DATA_VAL;
    if (shard >= d->n_shards[s])
        return xd_fail(e, "%s: the %s split has %zu shards, not %zu", d->path,
                       model_data_split_name(split), d->n_shards[s], shard + 1);
    const model_data_shard *sh = &d->shards[s][shard];
    if (offset > sh->tokens || n > sh->tokens - offset)
        return xd_fail(e, "%s: tokens %llu..%llu are past its %llu", sh->path, (unsigned long long)offset,
                       (unsigned long long)(offset + n), (unsigned long long)sh->tokens);
    for (size_t i = 0; i < n; i++) {
        uint32_t id = data_id_at(sh, offset + i);
        if (id >= (uint32_t)d->vocab) return data_bad_id(sh, offset + i, id, d->vocab, e);
        out[i] = (int)id;
    }
    return 0;
}

/* ---- loader state ---- */

static size_t data_state_size(uint32_t n) { return 72 + 32 * (size_t)n; }

size_t model_data_state_bytes(const model_data_state *s) { return data_state_size(s->n_sources); }

int model_data_state_encode(const model_data_state *s, uint8_t *buf, size_t cap, xd_err *e) {
    size_t need = model_data_state_bytes(s);
    if (s->n_sources > MODEL_DATA_MAX_SOURCES) return xd_fail(e, "loader state: %u sources", s->n_sources);
    if (cap < need) return xd_fail(e, "loader state: needs %zu bytes, buffer holds %zu", need, cap);
    memcpy(buf, DATA_STATE_MAGIC, 8);
    data_put_u64(buf + 8, s->seed);
    data_put_u32(buf + 16, s->seq_len);
    data_put_u32(buf + 20, s->split);
    data_put_u32(buf + 24, s->n_sources);
    data_put_u32(buf + 28, s->val_source);
    for (int i = 0; i < 4; i++) data_put_u64(buf + 32 + 8 * i, s->rng[i]);
    data_put_u64(buf + 64, s->sequences);
    for (uint32_t k = 0; k < s->n_sources; k++) {
        uint8_t *p = buf + 72 + 32 * (size_t)k;
        data_put_u64(p, s->source_tokens[k]);
        data_put_u64(p + 8, s->cursor[k].epoch);
        data_put_u64(p + 16, s->cursor[k].shard);
        data_put_u64(p + 24, s->cursor[k].offset);
    }
    return 0;
}

int model_data_state_decode(const uint8_t *buf, size_t len, model_data_state *s, xd_err *e) {
    memset(s, 0, sizeof *s);
    if (len < 72 || memcmp(buf, DATA_STATE_MAGIC, 8) != 0)
        return xd_fail(e, "loader state: not a loader state (bad magic or %zu bytes)", len);
    s->seed = data_get_u64(buf + 8);
    s->seq_len = data_get_u32(buf + 16);
    s->split = data_get_u32(buf + 20);
    s->n_sources = data_get_u32(buf + 24);
    s->val_source = data_get_u32(buf + 28);
    if (s->n_sources > MODEL_DATA_MAX_SOURCES || s->split > 1)
        return xd_fail(e, "loader state: %u sources, split %u (corrupt)", s->n_sources, s->split);
    if (len != data_state_size(s->n_sources))
        return xd_fail(e, "loader state: %zu bytes, but %u sources need %zu", len, s->n_sources,
                       data_state_size(s->n_sources));
    for (int i = 0; i < 4; i++) s->rng[i] = data_get_u64(buf + 32 + 8 * i);
    s->sequences = data_get_u64(buf + 64);
    for (uint32_t k = 0; k < s->n_sources; k++) {
        const uint8_t *p = buf + 72 + 32 * (size_t)k;
        s->source_tokens[k] = data_get_u64(p);
        s->cursor[k].epoch = data_get_u64(p + 8);
        s->cursor[k].shard = data_get_u64(p + 16);
        s->cursor[k].offset = data_get_u64(p + 24);
    }
    return 0;
}

static json_t *data_hex_u64(uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "0x%016llx", (unsigned long long)v);
    return json_string(b);
}

json_t *model_data_state_to_json(const model_data_state *s) {
    json_t *rng = json_array(), *src = json_array();
    for (int i = 0; i < 4; i++) json_array_append_new(rng, data_hex_u64(s->rng[i]));
    for (uint32_t k = 0; k < s->n_sources && k < MODEL_DATA_MAX_SOURCES; k++)
        json_array_append_new(src, json_pack("{s:I, s:I, s:I, s:I}", "tokens", (json_int_t)s->source_tokens[k],
                                             "epoch", (json_int_t)s->cursor[k].epoch, "shard",
                                             (json_int_t)s->cursor[k].shard, "offset",
                                             (json_int_t)s->cursor[k].offset));
    return json_pack("{s:s, s:i, s:o, s:i, s:s, s:I, s:i, s:o, s:o}", "format", "xdistill-loader-state",
                     "version", 1, "seed", data_hex_u64(s->seed), "seq_len", (int)s->seq_len, "split",
                     model_data_split_name((model_data_split)s->split), "sequences",
                     (json_int_t)s->sequences, "val_source", (int)s->val_source, "rng", rng, "sources", src);
}

static int data_json_u64(const json_t *v, const char *key, uint64_t *out, xd_err *e) {
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    const char *str = json_string_value(v);
    char *end;
    if (str && str[0] == '0' && str[1] == 'x' && str[2]) {
        errno = 0;
        unsigned long long x = strtoull(str + 2, &end, 16);
        if (!errno && !*end) {
            *out = x;
            return 0;
        }
    }
    return xd_fail(e, "loader state: \"%s\" must be a non-negative integer or a \"0x…\" string", key);
}

int model_data_state_from_json(const json_t *j, model_data_state *s, xd_err *e) {
    memset(s, 0, sizeof *s);
    json_t *o = (json_t *)j;
    if (!json_is_object(o) || !json_is_string(json_object_get(o, "format")) ||
        strcmp(json_string_value(json_object_get(o, "format")), "xdistill-loader-state"))
        return xd_fail(e, "loader state: not an object with \"format\": \"xdistill-loader-state\"");
    uint64_t v;
    if (data_json_u64(json_object_get(o, "version"), "version", &v, e)) return -1;
    if (v != 1) return xd_fail(e, "loader state: version %llu is not supported", (unsigned long long)v);
    if (data_json_u64(json_object_get(o, "seed"), "seed", &s->seed, e) ||
        data_json_u64(json_object_get(o, "sequences"), "sequences", &s->sequences, e))
        return -1;
    if (data_json_u64(json_object_get(o, "seq_len"), "seq_len", &v, e)) return -1;
    if (v > MODEL_DATA_MAX_SEQ_LEN) return xd_fail(e, "loader state: seq_len %llu", (unsigned long long)v);
    s->seq_len = (uint32_t)v;
    const char *split = json_string_value(json_object_get(o, "split"));
    if (!split || (strcmp(split, "train") && strcmp(split, "val")))
        return xd_fail(e, "loader state: \"split\" must be \"train\" or \"val\"");
    s->split = !strcmp(split, "val");
    json_t *rng = json_object_get(o, "rng"), *src = json_object_get(o, "sources");
    if (!json_is_array(rng) || json_array_size(rng) != 4)
        return xd_fail(e, "loader state: \"rng\" must be an array of 4");
    for (int i = 0; i < 4; i++)
        if (data_json_u64(json_array_get(rng, (size_t)i), "rng", &s->rng[i], e)) return -1;
    if (!json_is_array(src) || json_array_size(src) > MODEL_DATA_MAX_SOURCES)
        return xd_fail(e, "loader state: \"sources\" must be an array of at most %d", MODEL_DATA_MAX_SOURCES);
    s->n_sources = (uint32_t)json_array_size(src);
    if (data_json_u64(json_object_get(o, "val_source"), "val_source", &v, e)) return -1;
    if (v > s->n_sources) return xd_fail(e, "loader state: \"val_source\" %llu", (unsigned long long)v);
    s->val_source = (uint32_t)v;
    for (uint32_t k = 0; k < s->n_sources; k++) {
        json_t *it = json_array_get(src, k);
        if (data_json_u64(json_object_get(it, "tokens"), "sources[].tokens", &s->source_tokens[k], e) ||
            data_json_u64(json_object_get(it, "epoch"), "sources[].epoch", &s->cursor[k].epoch, e) ||
            data_json_u64(json_object_get(it, "shard"), "sources[].shard", &s->cursor[k].shard, e) ||
            data_json_u64(json_object_get(it, "offset"), "sources[].offset", &s->cursor[k].offset, e))
            return -1;
    }
    return 0;
}

/* ---- loader ---- */

typedef struct data_source {
    model_data_dir dir;
    double weight;
    double cum;          /* cumulative normalised weight (train) */
    uint64_t *order;     /* the shard order of order_epoch */
    uint64_t order_epoch;
    bool order_valid;
} data_source;

struct model_data_loader {
    int n;
    data_source *src;
    int split; /* 0 train, 1 val */
    int T;
    uint64_t seed;
    int vocab, eos;
    int *buf; /* T+1 */
    model_data_state st;
};

/* splitmix64's finaliser: decorrelates nearby seeds, sources and epochs */
static uint64_t data_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The shard order of a source's epoch: a Fisher-Yates shuffle seeded by (seed, source, epoch), so
 * it is recomputed from the state alone. */
static const uint64_t *data_order(model_data_loader *l, int k, uint64_t epoch) {
    data_source *s = &l->src[k];
    size_t n = s->dir.n_shards[l->split];
    if (s->order_valid && s->order_epoch == epoch) return s->order;
    for (size_t i = 0; i < n; i++) s->order[i] = i;
    if (l->split == 0) {
        xd_rng r;
        xd_rng_seed(&r, data_mix(data_mix(data_mix(l->seed) ^ (uint64_t)(k + 1)) ^ epoch));
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(xd_rng_next(&r) % i);
            uint64_t t = s->order[i - 1];
            s->order[i - 1] = s->order[j];
            s->order[j] = t;
        }
    }
    s->order_epoch = epoch;
    s->order_valid = true;
    return s->order;
}

/* n ids of source k's stream from cursor c, which moves past them; train wraps into the next
 * epoch, val never reads past its end (the caller bounds n). */
static int data_take(model_data_loader *l, int k, model_data_cursor *c, size_t n, int *out, xd_err *e) {
    data_source *s = &l->src[k];
    const model_data_dir *d = &s->dir;
    size_t ns = d->n_shards[l->split];
    while (n > 0) {
        if (c->shard >= ns) {
            if (l->split == 1) return xd_fail(e, "%s: read past the end of the val split", d->path);
            c->shard = 0;
            c->epoch++;
        }
        const uint64_t *order = data_order(l, k, c->epoch);
        const model_data_shard *sh = &d->shards[l->split][order[c->shard]];
        if (c->offset >= sh->tokens) {
            c->shard++;
            c->offset = 0;
            continue;
        }
        uint64_t avail = sh->tokens - c->offset;
        size_t take = avail < n ? (size_t)avail : n;
        for (size_t i = 0; i < take; i++) {
            uint32_t id = data_id_at(sh, c->offset + i);
            if (id >= (uint32_t)l->vocab) return data_bad_id(sh, c->offset + i, id, l->vocab, e);
            out[i] = (int)id;
        }
        out += take;
        n -= take;
        c->offset += take;
    }
    return 0;
}

static void data_initial_state(model_data_loader *l) {
    model_data_state *st = &l->st;
    memset(st, 0, sizeof *st);
    st->seed = l->seed;
    st->seq_len = (uint32_t)l->T;
    st->split = (uint32_t)l->split;
    st->n_sources = (uint32_t)l->n;
    xd_rng r;
    xd_rng_seed(&r, data_mix(l->seed ^ 0x6d69787475726573ull)); /* apart from the shard orders */
    memcpy(st->rng, r.s, sizeof st->rng);
    for (int k = 0; k < l->n; k++) st->source_tokens[k] = l->src[k].dir.tokens[l->split];
}

void model_data_loader_free(model_data_loader *l) {
    if (!l) return;
    for (int k = 0; k < l->n; k++) {
        model_data_close(&l->src[k].dir);
        free(l->src[k].order);
    }
    free(l->src);
    free(l->buf);
    free(l);
}

int model_data_loader_open(const model_data_source *sources, int n_sources, model_data_split split,
                           int seq_len, uint64_t seed, model_data_loader **out, xd_err *e) {
    *out = NULL;
    if (n_sources < 1 || n_sources > MODEL_DATA_MAX_SOURCES)
        return xd_fail(e, "the loader takes 1 to %d sources, not %d", MODEL_DATA_MAX_SOURCES, n_sources);
    if (seq_len < 1 || seq_len > MODEL_DATA_MAX_SEQ_LEN)
        return xd_fail(e, "sequence length %d is outside 1..%d", seq_len, MODEL_DATA_MAX_SEQ_LEN);
    model_data_loader *l = xd_calloc(1, sizeof *l, e);
    if (!l) return -1;
    l->split = split == MODEL_DATA_VAL;
    l->T = seq_len;
    l->seed = seed;
    int rc = 0;
    if (!(l->src = xd_calloc((size_t)n_sources, sizeof *l->src, e)) ||
        !(l->buf = xd_malloc(sizeof(int) * ((size_t)seq_len + 1), e)))
        rc = -1;
    double total = 0;
    int val_sources = 0; /* sources with a val sequence (2 tokens or more) */
    for (int k = 0; rc == 0 && k < n_sources; k++) {
        data_source *s = &l->src[k];
        double w = sources[k].weight;
        if (!isfinite(w) || w < 0) {
            rc = xd_fail(e, "source %d (%s): weight %g must be finite and at least 0", k, sources[k].dir, w);
            break;
        }
        if (model_data_open(sources[k].dir, &s->dir, e)) {
            rc = xd_wrap(e, "source %d", k);
            break;
        }
        l->n = k + 1;
        s->weight = w;
        size_t ns = s->dir.n_shards[l->split];
        if (!(s->order = xd_calloc(ns ? ns : 1, sizeof(uint64_t), e))) rc = -1;
        if (rc == 0 && k == 0) {
            l->vocab = s->dir.vocab;
            l->eos = s->dir.eos;
        } else if (rc == 0 && (s->dir.vocab != l->vocab || s->dir.eos != l->eos)) {
            rc = xd_fail(e, "source %d (%s): vocabulary %d, EOS %d, but source 0 (%s) has %d, %d: "
                         "the sources must share a tokenizer", k, s->dir.path, s->dir.vocab, s->dir.eos,
                         l->src[0].dir.path, l->vocab, l->eos);
        }
        uint64_t have = s->dir.tokens[l->split];
        if (rc == 0 && l->split == 0 && w > 0 && have < (uint64_t)seq_len + 1)
            rc = xd_fail(e, "source %d (%s): %llu train tokens, fewer than one sequence of %d (T+1); "
                         "give it weight 0 or more data", k, s->dir.path, (unsigned long long)have,
                         seq_len + 1);
        total += w;
        val_sources += have >= 2;
    }
    if (rc == 0 && l->split == 0 && !(total > 0))
        rc = xd_fail(e, "the source weights sum to %g: at least one must be positive", total);
    if (rc == 0 && l->split == 1 && val_sources == 0)
        rc = xd_fail(e, "no validation tokens in any of the %d source(s) (%s%s)", n_sources,
                     l->src[0].dir.path, n_sources > 1 ? ", …" : "");
    if (rc) {
        model_data_loader_free(l);
        return rc;
    }
    double cum = 0;
    int last_positive = 0;
    for (int k = 0; k < l->n; k++) {
        cum += l->src[k].weight / total;
        l->src[k].cum = cum;
        if (l->src[k].weight > 0) last_positive = k;
    }
    l->src[last_positive].cum = 2.0; /* rounding can leave the sum a hair below 1 */
    for (int k = last_positive + 1; k < l->n; k++) l->src[k].cum = 2.0;
    data_initial_state(l);
    *out = l;
    return 0;
}

void model_data_loader_reset(model_data_loader *l) { data_initial_state(l); }

static int data_next_train(model_data_loader *l, int *inputs, int *targets, int *source, xd_err *e) {
    xd_rng r;
    memcpy(r.s, l->st.rng, sizeof r.s);
    double u = xd_rng_uniform(&r);
    int k = 0;
    while (k < l->n - 1 && !(u < l->src[k].cum && l->src[k].weight > 0)) k++;
    /* T ids move the cursor; the (T+1)-th is read from a copy: the next sequence starts there */
    model_data_cursor c = l->st.cursor[k];
    if (data_take(l, k, &c, (size_t)l->T, l->buf, e)) return -1;
    model_data_cursor peek = c;
    if (data_take(l, k, &peek, 1, l->buf + l->T, e)) return -1;
    memcpy(inputs, l->buf, sizeof(int) * (size_t)l->T);
    memcpy(targets, l->buf + 1, sizeof(int) * (size_t)l->T);
    l->st.cursor[k] = c;
    memcpy(l->st.rng, r.s, sizeof r.s);
    l->st.sequences++;
    if (source) *source = k;
    return 0;
}

/* tokens of source k's val stream before cursor c (val shards are read in file order) */
static uint64_t data_val_position(const model_data_loader *l, int k, const model_data_cursor *c) {
    const model_data_dir *d = &l->src[k].dir;
    uint64_t pos = 0;
    for (uint64_t i = 0; i < c->shard && i < d->n_shards[1]; i++) pos += d->shards[1][i].tokens;
    return pos + c->offset;
}

static int data_next_val(model_data_loader *l, int *inputs, int *targets, int *source, xd_err *e) {
    model_data_state *st = &l->st;
    while (st->val_source < st->n_sources) {
        int k = (int)st->val_source;
        uint64_t total = l->src[k].dir.tokens[1];
        model_data_cursor c = st->cursor[k];
        uint64_t pos = data_val_position(l, k, &c);
        if (pos + 1 >= total) { /* a lone last token predicts nothing */
            st->val_source++;
            continue;
        }
        size_t take = total - pos < (uint64_t)l->T + 1 ? (size_t)(total - pos) : (size_t)l->T + 1;
        if (data_take(l, k, &c, take - 1, l->buf, e)) return -1;
        model_data_cursor peek = c;
        if (data_take(l, k, &peek, 1, l->buf + take - 1, e)) return -1;
        for (int t = 0; t < l->T; t++) {
            inputs[t] = (size_t)t < take ? l->buf[t] : l->eos >= 0 ? l->eos : 0;
            targets[t] = (size_t)t + 1 < take ? l->buf[t + 1] : -1;
        }
        st->cursor[k] = c;
        st->sequences++;
        if (source) *source = k;
        return 0;
    }
    return 1;
}

int model_data_next(model_data_loader *l, int *inputs, int *targets, int *source, xd_err *e) {
    return l->split ? data_next_val(l, inputs, targets, source, e)
                    : data_next_train(l, inputs, targets, source, e);
}

void model_data_loader_state(const model_data_loader *l, model_data_state *s) { *s = l->st; }

int model_data_loader_restore(model_data_loader *l, const model_data_state *s, xd_err *e) {
    if (s->split != (uint32_t)l->split)
        return xd_fail(e, "loader state: saved for the %s split, the loader reads %s",
                       model_data_split_name((model_data_split)(s->split == 1)),
                       model_data_split_name((model_data_split)l->split));
    if (s->n_sources != (uint32_t)l->n)
        return xd_fail(e, "loader state: saved with %u source(s), the loader has %d", s->n_sources, l->n);
    if (s->seq_len != (uint32_t)l->T)
        return xd_fail(e, "loader state: saved with sequence length %u, the loader has %d", s->seq_len, l->T);
    if (s->seed != l->seed)
        return xd_fail(e, "loader state: saved with seed %llu, the loader has %llu",
                       (unsigned long long)s->seed, (unsigned long long)l->seed);
    if (s->val_source > s->n_sources)
        return xd_fail(e, "loader state: val source %u of %u", s->val_source, s->n_sources);
    if (!(s->rng[0] | s->rng[1] | s->rng[2] | s->rng[3]))
        return xd_fail(e, "loader state: the random state is all zero");
    for (int k = 0; k < l->n; k++) {
        const model_data_dir *d = &l->src[k].dir;
        const model_data_cursor *c = &s->cursor[k];
        size_t ns = d->n_shards[l->split];
        if (s->source_tokens[k] != d->tokens[l->split])
            return xd_fail(e, "loader state: source %d (%s) had %llu %s tokens when saved, now %llu "
                           "(different data?)", k, d->path, (unsigned long long)s->source_tokens[k],
                           model_data_split_name((model_data_split)l->split),
                           (unsigned long long)d->tokens[l->split]);
        /* a cursor may sit at the end of a shard (or past the last one): reading moves it on */
        bool ok = c->shard < ns ? c->offset <= d->shards[l->split][data_order(l, k, c->epoch)[c->shard]].tokens
                                : c->shard == ns && c->offset == 0;
        if (!ok || (l->split == 1 && c->epoch != 0))
            return xd_fail(e, "loader state: source %d (%s): cursor (epoch %llu, shard %llu, offset %llu) "
                           "is outside its %zu shard(s)", k, d->path, (unsigned long long)c->epoch,
                           (unsigned long long)c->shard, (unsigned long long)c->offset, ns);
    }
    l->st = *s;
    return 0;
}

int model_data_loader_sources(const model_data_loader *l) { return l->n; }
const model_data_dir *model_data_loader_dir(const model_data_loader *l, int source) {
    return source >= 0 && source < l->n ? &l->src[source].dir : NULL;
}
int model_data_loader_vocab(const model_data_loader *l) { return l->vocab; }
