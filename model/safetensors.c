/* model/safetensors.c — safetensors reader (every header entry validated before use; tensor data
 * stays in the read-only map) and streaming atomic writer. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The Python library refuses headers over 100 MB (MAX_HEADER_SIZE); so do we. */
#define ST_HEADER_MAX ((uint64_t)100000000)
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

struct model_safetensors {
    model_tensor_view *views; /* names are owned (strdup) */
    uint32_t *file_of;        /* views[i] came from files[file_of[i]] */
    size_t n, cap;
    const model_tensor_view **by_name; /* sorted by name, for bsearch in model_st_find */
    char **meta;                       /* key, value, key, value... (owned) */
    size_t n_meta, cap_meta;
    xd_mapped_file *maps; /* one per file opened from disk; none for model_st_open_memory */
    size_t n_maps;
};

static const struct {
    const char *name;
    model_dtype dtype;
} st_dtypes[] = {
    {"F32", MODEL_F32}, {"F16", MODEL_F16}, {"BF16", MODEL_BF16},
    {"I32", MODEL_I32}, {"I64", MODEL_I64},
};

static bool st_dtype_from_name(const char *s, model_dtype *out) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(s, st_dtypes[i].name)) {
            *out = st_dtypes[i].dtype;
            return true;
        }
    return false;
}

static bool st_dtype_writable(model_dtype t) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dtype == t) return true;
    return false;
}

/* "[2, 3]" for messages; truncated quietly when it does not fit. */
static const char *st_shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i <= ndim && used < cap; i++) {
        int w = i == ndim ? snprintf(buf + used, cap - used, "]")
                          : snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "[",
                                     (long long)shape[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
    return buf;
}

static int st_grow_views(model_safetensors *st, size_t extra, xd_err *e) {
    if (st->n + extra <= st->cap) return 0;
    size_t cap = st->cap ? st->cap : 16;
    while (cap < st->n + extra) cap *= 2;
    model_tensor_view *v = realloc(st->views, cap * sizeof *v);
    if (!v) return xd_fail(e, "out of memory for %zu tensors", cap);
    st->views = v;
    uint32_t *f = realloc(st->file_of, cap * sizeof *f);
    if (!f) return xd_fail(e, "out of memory for %zu tensors", cap);
    st->file_of = f;
    st->cap = cap;
    return 0;
}

static int st_add_meta(model_safetensors *st, const char *key, const char *value, xd_err *e) {
    if (st->n_meta + 1 > st->cap_meta) {
        size_t cap = st->cap_meta ? 2 * st->cap_meta : 8;
        char **m = realloc(st->meta, 2 * cap * sizeof *m);
        if (!m) return xd_fail(e, "out of memory for metadata");
        st->meta = m;
        st->cap_meta = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return xd_fail(e, "out of memory for metadata");
    }
    st->meta[2 * st->n_meta] = k;
    st->meta[2 * st->n_meta + 1] = v;
    st->n_meta++;
    return 0;
}

/* A JSON integer in [0, INT64_MAX]. */
static bool st_json_nonneg(const json_t *j, int64_t *out) {
    if (!json_is_integer(j)) return false;
    json_int_t v = json_integer_value(j);
    if (v < 0) return false;
    *out = (int64_t)v;
    return true;
}

/* Validates one tensor entry and appends its view (data pointing into base). */
static int st_parse_entry(model_safetensors *st, const char *path, const char *name, json_t *obj,
                          const uint8_t *base, uint64_t data_size, uint32_t file_idx, xd_err *e) {
    if (!json_is_object(obj))
        return xd_fail(e, "%s: tensor %s: entry must be an object", path, name);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return xd_fail(e, "%s: tensor %s: unexpected key \"%s\"", path, name, key);
    }
    const json_t *jd = json_object_get(obj, "dtype"), *js = json_object_get(obj, "shape"),
                 *jo = json_object_get(obj, "data_offsets");
    if (!jd) return xd_fail(e, "%s: tensor %s: missing \"dtype\"", path, name);
    if (!js) return xd_fail(e, "%s: tensor %s: missing \"shape\"", path, name);
    if (!jo) return xd_fail(e, "%s: tensor %s: missing \"data_offsets\"", path, name);

    if (!json_is_string(jd))
        return xd_fail(e, "%s: tensor %s: \"dtype\" must be a string", path, name);
    model_tensor_view v = {0};
    if (!st_dtype_from_name(json_string_value(jd), &v.dtype))
        return xd_fail(e, "%s: tensor %s has dtype %s, which xdistill does not read", path, name,
                       json_string_value(jd));

    if (!json_is_array(js))
        return xd_fail(e, "%s: tensor %s: \"shape\" must be an array of non-negative integers",
                       path, name);
    size_t nd = json_array_size(js);
    for (size_t i = 0; i < nd; i++) {
        int64_t d;
        if (!st_json_nonneg(json_array_get(js, i), &d))
            return xd_fail(e, "%s: tensor %s: \"shape\" must be an array of non-negative integers",
                           path, name);
        if (i < MODEL_MAX_DIMS) v.shape[i] = d;
    }
    if (nd > MODEL_MAX_DIMS)
        return xd_fail(e, "%s: tensor %s has %zu dimensions, more than the %d supported", path,
                       name, nd, MODEL_MAX_DIMS);
    v.ndim = (int)nd;
    char shp[160];
    uint64_t numel = 1;
    for (int i = 0; i < v.ndim; i++)
        if (!xd_mul_ok(numel, (uint64_t)v.shape[i], &numel))
            return xd_fail(e, "%s: tensor %s: element count of shape %s overflows", path, name,
                           st_shape_str(shp, sizeof shp, v.shape, v.ndim));
    uint64_t need;
    if (model_dtype_nbytes(v.dtype, numel, &need, e) != 0)
        return xd_wrap(e, "%s: tensor %s", path, name);

    int64_t begin, end;
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !st_json_nonneg(json_array_get(jo, 0), &begin) ||
        !st_json_nonneg(json_array_get(jo, 1), &end))
        return xd_fail(e,
                       "%s: tensor %s: \"data_offsets\" must be an array of two non-negative "
                       "integers",
                       path, name);
    if (begin > end)
        return xd_fail(e, "%s: tensor %s: data_offsets [%lld, %lld] end before they begin", path,
                       name, (long long)begin, (long long)end);
    if ((uint64_t)end > data_size)
        return xd_fail(e,
                       "%s: tensor %s: data_offsets [%lld, %lld] run past the end of the data "
                       "section (%llu bytes)",
                       path, name, (long long)begin, (long long)end, (unsigned long long)data_size);
    if ((uint64_t)(end - begin) != need)
        return xd_fail(e,
                       "%s: tensor %s: data_offsets [%lld, %lld] hold %llu bytes, but shape %s of "
                       "%s needs %llu",
                       path, name, (long long)begin, (long long)end,
                       (unsigned long long)(end - begin),
                       st_shape_str(shp, sizeof shp, v.shape, v.ndim), model_dtype_name(v.dtype),
                       (unsigned long long)need);

    if (st_grow_views(st, 1, e) != 0) return -1;
    char *owned = strdup(name);
    if (!owned) return xd_fail(e, "out of memory");
    v.name = owned;
    v.data = base + begin;
    v.nbytes = need;
    st->views[st->n] = v;
    st->file_of[st->n] = file_idx;
    st->n++;
    return 0;
}

static int st_cmp_by_begin(const void *a, const void *b) {
    const model_tensor_view *x = *(const model_tensor_view *const *)a,
                            *y = *(const model_tensor_view *const *)b;
    if (x->data != y->data) return (const uint8_t *)x->data < (const uint8_t *)y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Views [first, st->n) come from one data section starting at base: no two non-empty ones may
 * share a byte. Empty tensors own no bytes, so they cannot overlap anything. */
static int st_check_overlap(model_safetensors *st, size_t first, const uint8_t *base,
                            const char *path, xd_err *e) {
    size_t cnt = 0;
    const model_tensor_view **sorted = xd_calloc(st->n - first, sizeof *sorted, e);
    if (!sorted) return -1;
    for (size_t i = first; i < st->n; i++)
        if (st->views[i].nbytes) sorted[cnt++] = &st->views[i];
    qsort(sorted, cnt, sizeof *sorted, st_cmp_by_begin);
    int rc = 0;
    for (size_t i = 1; i < cnt; i++) {
        const model_tensor_view *p = sorted[i - 1], *q = sorted[i];
        uint64_t pb = (uint64_t)((const uint8_t *)p->data - base),
                 qb = (uint64_t)((const uint8_t *)q->data - base);
        if (qb < pb + p->nbytes) {
            rc = xd_fail(e, "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap", path,
                         p->name, (unsigned long long)pb, (unsigned long long)(pb + p->nbytes),
                         q->name, (unsigned long long)qb, (unsigned long long)(qb + q->nbytes));
            break;
        }
    }
    free(sorted);
    return rc;
}

/* Parses one file's bytes, appending its tensors and metadata to st. path names it in errors. */
static int st_parse_file(model_safetensors *st, const uint8_t *data, size_t size, const char *path,
                         uint32_t file_idx, xd_err *e) {
    if (size < 8)
        return xd_fail(e, "%s: file is %zu bytes, too short for a safetensors header", path, size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)data[i] << (8 * i);
    if (hlen < 2)
        return xd_fail(e, "%s: header length %llu is too small", path, (unsigned long long)hlen);
    if (hlen > ST_HEADER_MAX)
        return xd_fail(e, "%s: header length %llu is more than the %llu allowed", path,
                       (unsigned long long)hlen, (unsigned long long)ST_HEADER_MAX);
    if (hlen > size - 8)
        return xd_fail(e, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, size);
    json_error_t je;
    json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return xd_fail(e, "%s: header is not valid JSON: %s (at byte %d of the header)", path,
                       je.text, je.position);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = xd_fail(e, "%s: header is not a JSON object", path);
        goto done;
    }
    const uint8_t *base = data + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    size_t first = st->n;
    if ((rc = st_grow_views(st, json_object_size(root), e)) != 0) goto done;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                rc = xd_fail(e, "%s: \"__metadata__\" must be an object of strings", path);
                goto done;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = xd_fail(e, "%s: \"__metadata__\" value of \"%s\" must be a string", path,
                                 mk);
                    goto done;
                }
                if ((rc = st_add_meta(st, mk, json_string_value(mv), e)) != 0) goto done;
            }
            continue;
        }
        if ((rc = st_parse_entry(st, path, key, val, base, data_size, file_idx, e)) != 0) goto done;
    }
    rc = st_check_overlap(st, first, base, path, e);
done:
    json_decref(root);
    return rc;
}

static int st_cmp_view_names(const void *a, const void *b) {
    return strcmp((*(const model_tensor_view *const *)a)->name,
                  (*(const model_tensor_view *const *)b)->name);
}

static int st_cmp_key_view(const void *key, const void *elem) {
    return strcmp(key, (*(const model_tensor_view *const *)elem)->name);
}

/* Sorts the name index; a name twice means two shards hold it. file_names: per file, for the
 * message. */
static int st_build_index(model_safetensors *st, const char *path, const char *const *file_names,
                          xd_err *e) {
    st->by_name = xd_calloc(st->n, sizeof *st->by_name, e);
    if (!st->by_name) return -1;
    for (size_t i = 0; i < st->n; i++) st->by_name[i] = &st->views[i];
    qsort(st->by_name, st->n, sizeof *st->by_name, st_cmp_view_names);
    for (size_t i = 1; i < st->n; i++)
        if (!strcmp(st->by_name[i - 1]->name, st->by_name[i]->name)) {
            size_t a = (size_t)(st->by_name[i - 1] - st->views),
                   b = (size_t)(st->by_name[i] - st->views);
            return xd_fail(e, "%s: tensor %s appears in both %s and %s", path, st->by_name[i]->name,
                           file_names[st->file_of[a]], file_names[st->file_of[b]]);
        }
    return 0;
}

int model_st_open_memory(const uint8_t *data, size_t size, const char *name,
                         model_safetensors **out, xd_err *e) {
    *out = NULL;
    if (!name) name = "<memory>";
    model_safetensors *st = xd_calloc(1, sizeof *st, e);
    if (!st) return -1;
    if (st_parse_file(st, data, size, name, 0, e) != 0 || st_build_index(st, name, &name, e) != 0) {
        model_st_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

static int st_map_and_parse(model_safetensors *st, const char *path, uint32_t file_idx, xd_err *e) {
    xd_mapped_file *m = &st->maps[st->n_maps];
    if (xd_map_file(path, m, e) != 0) return -1;
    st->n_maps++;
    return st_parse_file(st, m->data, m->size, path, file_idx, e);
}

static int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard must be a plain file name inside the directory, never a path out of it. */
static bool st_shard_name_ok(const char *s) { return s[0] && !strchr(s, '/') && !strstr(s, ".."); }

static int st_open_index(model_safetensors *st, const char *dir, const char *index_path,
                         xd_err *e) {
    char *text;
    size_t len;
    if (xd_read_file(index_path, (size_t)ST_HEADER_MAX, &text, &len, e) != 0) return -1;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) return xd_fail(e, "%s: not valid JSON: %s (line %d)", index_path, je.text, je.line);
    int rc = -1;
    const char **shards = NULL, **paths = NULL;
    size_t n_shards = 0;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        xd_fail(e, "%s: \"weight_map\" must be a non-empty object of tensor name to shard file",
                index_path);
        goto done;
    }
    shards = xd_calloc(json_object_size(wm), sizeof *shards, e);
    if (!shards) goto done;
    const char *tname;
    json_t *jshard;
    json_object_foreach(wm, tname, jshard) {
        if (!json_is_string(jshard)) {
            xd_fail(e, "%s: weight_map entry for tensor %s must be a string", index_path, tname);
            goto done;
        }
        const char *s = json_string_value(jshard);
        if (!st_shard_name_ok(s)) {
            xd_fail(e, "%s: shard name \"%s\" (tensor %s) must be a plain file name in %s",
                    index_path, s, tname, dir);
            goto done;
        }
        shards[n_shards++] = s;
    }
    /* Each distinct shard once, in name order (which is also file order for HF's naming). */
    qsort(shards, n_shards, sizeof *shards, st_cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i])) shards[u++] = shards[i];
    n_shards = u;
    st->maps = xd_calloc(n_shards, sizeof *st->maps, e);
    paths = xd_calloc(n_shards, sizeof *paths, e);
    if (!st->maps || !paths) goto done;
    for (size_t i = 0; i < n_shards; i++) {
        char p[4096];
        if (xd_path_join(p, sizeof p, dir, shards[i], e) != 0) goto done;
        if (!(paths[i] = strdup(p))) {
            xd_fail(e, "out of memory");
            goto done;
        }
        if (st_map_and_parse(st, paths[i], (uint32_t)i, e) != 0) goto done;
    }
    if (st_build_index(st, dir, paths, e) != 0) goto done;
    /* Every tensor the index names must be in the shard it names. */
    json_object_foreach(wm, tname, jshard) {
        const char *s = json_string_value(jshard);
        const model_tensor_view *v = model_st_find(st, tname);
        const char **sp = bsearch(&s, shards, n_shards, sizeof *shards, st_cmp_str);
        if (!v) {
            xd_fail(e, "%s: tensor %s is mapped to %s, which does not contain it", index_path,
                    tname, s);
            goto done;
        }
        uint32_t want = (uint32_t)(sp - shards), got = st->file_of[v - st->views];
        if (want != got) {
            xd_fail(e, "%s: tensor %s is mapped to %s, but it is in %s", index_path, tname, s,
                    shards[got]);
            goto done;
        }
    }
    rc = 0;
done:
    if (paths)
        for (size_t i = 0; i < n_shards; i++) free((void *)paths[i]);
    free(paths);
    free(shards);
    json_decref(root);
    return rc;
}

int model_st_open(const char *path, model_safetensors **out, xd_err *e) {
    *out = NULL;
    model_safetensors *st = xd_calloc(1, sizeof *st, e);
    if (!st) return -1;
    int rc;
    if (xd_is_dir(path)) {
        char p[4096];
        if ((rc = xd_path_join(p, sizeof p, path, ST_INDEX_NAME, e)) != 0) goto done;
        if (xd_file_exists(p)) {
            rc = st_open_index(st, path, p, e);
            goto done;
        }
        if ((rc = xd_path_join(p, sizeof p, path, ST_SINGLE_NAME, e)) != 0) goto done;
        if (!xd_file_exists(p)) {
            rc = xd_fail(e, "%s: directory has neither %s nor %s", path, ST_INDEX_NAME,
                         ST_SINGLE_NAME);
            goto done;
        }
        const char *names[1] = {p};
        if (!(st->maps = xd_calloc(1, sizeof *st->maps, e))) {
            rc = -1;
            goto done;
        }
        rc = st_map_and_parse(st, p, 0, e);
        if (rc == 0) rc = st_build_index(st, p, names, e);
    } else {
        const char *names[1] = {path};
        if (!(st->maps = xd_calloc(1, sizeof *st->maps, e))) {
            rc = -1;
            goto done;
        }
        rc = st_map_and_parse(st, path, 0, e);
        if (rc == 0) rc = st_build_index(st, path, names, e);
    }
done:
    if (rc != 0) {
        model_st_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

void model_st_close(model_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) free((void *)st->views[i].name);
    free(st->views);
    free(st->file_of);
    free(st->by_name);
    for (size_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->meta);
    for (size_t i = 0; i < st->n_maps; i++) xd_unmap_file(&st->maps[i]);
    free(st->maps);
    free(st);
}

uint64_t model_st_count(const model_safetensors *st) { return st->n; }

const model_tensor_view *model_st_at(const model_safetensors *st, uint64_t i) {
    return i < st->n ? &st->views[i] : NULL;
}

const model_tensor_view *model_st_find(const model_safetensors *st, const char *name) {
    if (!st->by_name || !name) return NULL;
    const model_tensor_view **hit =
        bsearch(name, st->by_name, st->n, sizeof *st->by_name, st_cmp_key_view);
    return hit ? *hit : NULL;
}

const char *model_st_metadata(const model_safetensors *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

/* ---- writing ---- */

static int st_write_all(int fd, const void *buf, uint64_t len) {
    const uint8_t *p = buf;
    while (len > 0) {
        /* Linux writes at most ~2 GiB per call; ask for 1 GiB at a time. */
        size_t chunk = len > ((uint64_t)1 << 30) ? (size_t)1 << 30 : (size_t)len;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (uint64_t)w;
    }
    return 0;
}

/* The rename is durable only once the directory entry is synced too. */
static void st_fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* The header JSON (without padding) for the entries; fills each entry's byte size. */
static char *st_build_header(const char *path, const model_st_entry *entries, size_t n,
                             const char *const *metadata, size_t n_metadata, uint64_t *nbytes,
                             xd_err *e) {
    json_t *root = json_object();
    char *out = NULL;
    if (!root) {
        xd_fail(e, "out of memory");
        return NULL;
    }
    if (n_metadata) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) != 0) {
            xd_fail(e, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < n_metadata; i++) {
            const char *k = metadata[2 * i], *v = metadata[2 * i + 1];
            if (!k || !v) {
                xd_fail(e, "%s: metadata pair %zu has a NULL key or value", path, i);
                goto done;
            }
            if (json_object_get(m, k)) {
                xd_fail(e, "%s: metadata key \"%s\" given twice", path, k);
                goto done;
            }
            json_t *js = json_string(v);
            if (!js || json_object_set_new(m, k, js) != 0) {
                xd_fail(e, "%s: metadata \"%s\" is not valid UTF-8", path, k);
                goto done;
            }
        }
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const model_st_entry *en = &entries[i];
        const char *name = en->name;
        if (!name || !name[0]) {
            xd_fail(e, "%s: tensor %zu has no name", path, i);
            goto done;
        }
        if (!strcmp(name, "__metadata__") || json_object_get(root, name)) {
            xd_fail(e, "%s: tensor name %s is reserved or given twice", path, name);
            goto done;
        }
        if (!st_dtype_writable(en->dtype)) {
            xd_fail(e, "%s: tensor %s: safetensors cannot hold dtype %s", path, name,
                    model_dtype_name(en->dtype));
            goto done;
        }
        if (en->ndim < 0 || en->ndim > MODEL_MAX_DIMS) {
            xd_fail(e, "%s: tensor %s: ndim %d out of range", path, name, en->ndim);
            goto done;
        }
        uint64_t numel = 1;
        json_t *shape = json_array(), *obj = json_object(), *offs = json_array();
        bool ok = shape && obj && offs;
        if (ok)
            ok = json_object_set_new(root, name, obj) == 0;
        else
            json_decref(obj);
        if (!ok) {
            json_decref(shape);
            json_decref(offs);
            xd_fail(e, "%s: tensor %s: name is not valid UTF-8 (or out of memory)", path, name);
            goto done;
        }
        ok = json_object_set_new(obj, "dtype", json_string(model_dtype_name(en->dtype))) == 0 &&
             json_object_set_new(obj, "shape", shape) == 0 &&
             json_object_set_new(obj, "data_offsets", offs) == 0;
        if (!ok) {
            xd_fail(e, "out of memory");
            goto done;
        }
        for (int d = 0; d < en->ndim; d++) {
            if (en->shape[d] < 0 || !xd_mul_ok(numel, (uint64_t)en->shape[d], &numel)) {
                xd_fail(e, "%s: tensor %s: bad shape (negative or overflowing)", path, name);
                goto done;
            }
            json_array_append_new(shape, json_integer(en->shape[d]));
        }
        uint64_t end;
        if (model_dtype_nbytes(en->dtype, numel, &nbytes[i], e) != 0 ||
            !xd_add_ok(off, nbytes[i], &end) || end > (uint64_t)INT64_MAX) {
            xd_fail(e, "%s: tensor %s: size overflows", path, name);
            goto done;
        }
        if (nbytes[i] && !en->data) {
            xd_fail(e, "%s: tensor %s: no data", path, name);
            goto done;
        }
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)end));
        off = end;
    }
    /* Compact separators like the Python library; keys stay in insertion order. */
    out = json_dumps(root, JSON_COMPACT);
    if (!out) xd_fail(e, "%s: cannot serialise the header", path);
done:
    json_decref(root);
    return out;
}

int model_st_write(const char *path, const model_st_entry *entries, size_t n,
                   const char *const *metadata, size_t n_metadata, xd_err *e) {
    uint64_t *nbytes = xd_calloc(n, sizeof *nbytes, e);
    if (!nbytes) return -1;
    char *hdr = st_build_header(path, entries, n, metadata, n_metadata, nbytes, e);
    if (!hdr) {
        free(nbytes);
        return -1;
    }
    /* Pad with spaces so the data section starts 8-byte aligned, as the Python library does. */
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";

    char tmp[4096];
    int rc = -1, fd = -1;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp) {
        xd_fail(e, "%s: path too long", path);
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        xd_fail(e, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    if (st_write_all(fd, lenbuf, 8) != 0 || st_write_all(fd, hdr, hlen) != 0 ||
        st_write_all(fd, spaces, padded - hlen) != 0)
        goto write_failed;
    for (size_t i = 0; i < n; i++)
        if (st_write_all(fd, entries[i].data, nbytes[i]) != 0) goto write_failed;
    if (fsync(fd) != 0) goto write_failed;
    int cr = close(fd);
    fd = -1;
    if (cr != 0) goto write_failed;
    if (rename(tmp, path) != 0) {
        xd_fail(e, "%s: rename failed: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    st_fsync_parent(path);
    rc = 0;
    goto out;
write_failed:
    xd_fail(e, "%s: write failed: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp);
out:
    free(hdr);
    free(nbytes);
    return rc;
}
