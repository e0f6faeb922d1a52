#include "model/safetensors.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/xd_test_st_XXXXXX";

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
    xd_err e;
    if (xd_path_join(out, cap, dir, name, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

static void write_bytes(const char *path, const void *data, size_t len) {
    xd_err e;
    if (xd_write_file_atomic(path, data, len, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

/* A safetensors image: 8-byte little-endian length, header as given (no padding), data. */
static uint8_t *make_st(const char *header, const void *data, size_t dlen, size_t *size) {
    size_t hlen = strlen(header);
    *size = 8 + hlen + dlen;
    uint8_t *buf = malloc(*size ? *size : 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (dlen) memcpy(buf + 8 + hlen, data, dlen);
    return buf;
}

/* Opening the image must fail with a message that starts with the name and holds fragment. */
static void expect_mem_err_(const uint8_t *buf, size_t size, const char *fragment, int line) {
    model_safetensors *st = (model_safetensors *)1;
    xd_err e = {{0}};
    int rc = model_st_open_memory(buf, size, "mem.st", &st, &e);
    if (rc >= 0 || !strstr(e.msg, fragment) || strncmp(e.msg, "mem.st: ", 8) != 0 || st) {
        fprintf(stderr, "%s:%d: expected an error \"mem.st: ...%s...\", got rc=%d \"%s\"\n",
                __FILE__, line, fragment, rc, e.msg);
        test_failures++;
    }
    if (rc >= 0) model_st_close(st);
}
#define expect_mem_err(buf, size, fragment) expect_mem_err_(buf, size, fragment, __LINE__)

static void expect_header_err_(const char *header, size_t dlen, const char *fragment, int line) {
    uint8_t zeros[256] = {0};
    size_t size;
    uint8_t *buf = make_st(header, zeros, dlen, &size);
    expect_mem_err_(buf, size, fragment, line);
    free(buf);
}
#define expect_header_err(header, dlen, fragment)                                                  \
    expect_header_err_(header, dlen, fragment, __LINE__)

static int header_ok(const char *header, size_t dlen) {
    uint8_t zeros[256] = {0};
    size_t size;
    uint8_t *buf = make_st(header, zeros, dlen, &size);
    model_safetensors *st;
    xd_err e;
    int rc = model_st_open_memory(buf, size, "mem.st", &st, &e);
    if (rc == 0)
        model_st_close(st);
    else
        fprintf(stderr, "unexpected error: %s\n", e.msg);
    free(buf);
    return rc;
}

/* ---- round trip ---- */

static void test_round_trip(void) {
    float f32[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -1e6f};
    uint16_t f16[4], bf16[4];
    const float halves[4] = {0.5f, -1.0f, 65504.0f, 6.1035156e-05f};
    for (int i = 0; i < 4; i++) {
        f16[i] = xd_f32_to_f16(halves[i]);
        bf16[i] = xd_f32_to_bf16(halves[i] * 3.0f);
    }
    int64_t i64[3] = {-1, (int64_t)1 << 40, 7};
    int32_t i32[2] = {-5, 123456};
    float scalar = 42.0f;
    model_st_entry entries[] = {
        {"layers.0.w", MODEL_F32, 2, {2, 3}, f32},   {"layers.0.h", MODEL_F16, 1, {4}, f16},
        {"layers.0.b", MODEL_BF16, 2, {2, 2}, bf16}, {"ids", MODEL_I64, 1, {3}, i64},
        {"small", MODEL_I32, 1, {2}, i32},           {"scalar", MODEL_F32, 0, {0}, &scalar},
        {"empty", MODEL_F32, 2, {0, 5}, NULL},
    };
    const size_t n = sizeof entries / sizeof entries[0];
    const char *meta[] = {"format", "pt", "note", "h\xc3\xa9llo \"quoted\""};
    char path[512];
    path_in(path, sizeof path, tmpdir, "rt.safetensors");
    xd_err e;
    int rc = model_st_write(path, entries, n, meta, 2, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);

    model_safetensors *st;
    rc = model_st_open(path, &st, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc != 0) return;
    CHECK(model_st_count(st) == n);
    CHECK(model_st_at(st, n) == NULL);
    CHECK(strcmp(model_st_metadata(st, "format"), "pt") == 0);
    CHECK(strcmp(model_st_metadata(st, "note"), "h\xc3\xa9llo \"quoted\"") == 0);
    CHECK(model_st_metadata(st, "missing") == NULL);
    CHECK(model_st_find(st, "nope") == NULL);
    for (size_t i = 0; i < n; i++) {
        const model_tensor_view *v = model_st_at(st, i);
        /* header order is kept */
        CHECK(v && strcmp(v->name, entries[i].name) == 0);
        CHECK(model_st_find(st, entries[i].name) == v);
        CHECK(v->dtype == entries[i].dtype);
        CHECK(v->ndim == entries[i].ndim);
        for (int d = 0; d < v->ndim; d++) CHECK(v->shape[d] == entries[i].shape[d]);
        uint64_t want;
        CHECK(model_dtype_nbytes(v->dtype, model_tensor_numel(v), &want, &e) == 0);
        CHECK(v->nbytes == want);
        if (v->nbytes) CHECK(memcmp(v->data, entries[i].data, v->nbytes) == 0);
    }
    float out[6];
    const model_tensor_view *v = model_st_find(st, "layers.0.w");
    CHECK(model_tensor_to_f32(v, out, 6, &e) == 0);
    for (int i = 0; i < 6; i++) CHECK(out[i] == f32[i]);
    v = model_st_find(st, "layers.0.h");
    CHECK(model_tensor_to_f32(v, out, 4, &e) == 0);
    for (int i = 0; i < 4; i++) CHECK(out[i] == halves[i]);
    v = model_st_find(st, "layers.0.b");
    CHECK(model_tensor_to_f32(v, out, 4, &e) == 0);
    for (int i = 0; i < 4; i++) CHECK_NEAR(out[i], halves[i] * 3.0f, fabs(halves[i] * 3.0) / 128);
    v = model_st_find(st, "ids");
    CHECK(model_tensor_to_f32(v, out, 3, &e) == 0);
    CHECK(out[0] == -1.0f && out[1] == 1099511627776.0f && out[2] == 7.0f);
    v = model_st_find(st, "small");
    CHECK(model_tensor_to_f32(v, out, 2, &e) == 0);
    CHECK(out[0] == -5.0f && out[1] == 123456.0f);
    v = model_st_find(st, "scalar");
    CHECK(model_tensor_numel(v) == 1 && model_tensor_to_f32(v, out, 1, &e) == 0 && out[0] == 42.0f);
    v = model_st_find(st, "empty");
    CHECK(model_tensor_numel(v) == 0 && v->nbytes == 0);
    model_st_close(st);

    /* No temporary file is left behind. */
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        CHECK_MSG(!strstr(de->d_name, ".tmp."), "left over %s", de->d_name);
    if (d) closedir(d);
    unlink(path);
}

/* The exact bytes model_st_write produces for a small file. Checked by hand against the Python
 * library (safetensors 0.8.0): safetensors.numpy.load_file on this file gives
 * {"a": float32 [1, 2], "b": int64 [[-3]]} and safe_open(...).metadata() == {"format": "pt"}.
 * The layout follows the Python writer: compact JSON, __metadata__ first, header padded with
 * spaces to a multiple of 8, tensors contiguous from offset 0 (the Rust loader requires it). */
static void test_header_layout(void) {
    float a[2] = {1.0f, 2.0f};
    int64_t b[1] = {-3};
    model_st_entry entries[] = {
        {"a", MODEL_F32, 1, {2}, a},
        {"b", MODEL_I64, 2, {1, 1}, b},
    };
    const char *meta[] = {"format", "pt"};
    char path[512];
    path_in(path, sizeof path, tmpdir, "layout.safetensors");
    xd_err e;
    CHECK_MSG(model_st_write(path, entries, 2, meta, 1, &e) == 0, "%s", e.msg);
    char *buf;
    size_t len;
    CHECK(xd_read_file(path, 4096, &buf, &len, &e) == 0);
    const char *want_hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                           "\"b\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[8,16]}}";
    size_t hlen = strlen(want_hdr), padded = (hlen + 7) / 8 * 8;
    CHECK(len == 8 + padded + 16);
    if (len == 8 + padded + 16) {
        uint64_t n = 0;
        for (int i = 0; i < 8; i++) n |= (uint64_t)(uint8_t)buf[i] << (8 * i);
        CHECK(n == padded);
        CHECK(memcmp(buf + 8, want_hdr, hlen) == 0);
        for (size_t i = hlen; i < padded; i++) CHECK(buf[8 + i] == ' ');
        CHECK(memcmp(buf + 8 + padded, a, 8) == 0 && memcmp(buf + 8 + padded + 8, b, 8) == 0);
    }
    free(buf);
    unlink(path);

    /* Without metadata there is no __metadata__ key at all. */
    CHECK_MSG(model_st_write(path, entries, 1, NULL, 0, &e) == 0, "%s", e.msg);
    CHECK(xd_read_file(path, 4096, &buf, &len, &e) == 0);
    CHECK(len > 8 && memcmp(buf + 8, "{\"a\":{", 6) == 0);
    free(buf);
    unlink(path);
}

static void test_write_errors(void) {
    float a[2] = {1, 2};
    char path[512];
    path_in(path, sizeof path, tmpdir, "bad.safetensors");
    xd_err e;
    model_st_entry q8 = {"q", MODEL_Q8_0, 1, {32}, a};
    CHECK_ERR_CONTAINS(model_st_write(path, &q8, 1, NULL, 0, &e), e, "cannot hold dtype Q8_0");
    model_st_entry dup[2] = {{"x", MODEL_F32, 1, {2}, a}, {"x", MODEL_F32, 1, {2}, a}};
    CHECK_ERR_CONTAINS(model_st_write(path, dup, 2, NULL, 0, &e), e, "given twice");
    model_st_entry reserved = {"__metadata__", MODEL_F32, 1, {2}, a};
    CHECK_ERR_CONTAINS(model_st_write(path, &reserved, 1, NULL, 0, &e), e, "reserved");
    model_st_entry nodata = {"x", MODEL_F32, 1, {2}, NULL};
    CHECK_ERR_CONTAINS(model_st_write(path, &nodata, 1, NULL, 0, &e), e, "no data");
    model_st_entry neg = {"x", MODEL_F32, 2, {2, -1}, a};
    CHECK_ERR_CONTAINS(model_st_write(path, &neg, 1, NULL, 0, &e), e, "bad shape");
    model_st_entry ovf = {"x", MODEL_F32, 2, {INT64_MAX, 4}, a};
    CHECK_ERR_CONTAINS(model_st_write(path, &ovf, 1, NULL, 0, &e), e, "overflow");
    model_st_entry dims = {"x", MODEL_F32, MODEL_MAX_DIMS + 1, {1}, a};
    CHECK_ERR_CONTAINS(model_st_write(path, &dims, 1, NULL, 0, &e), e, "ndim 9 out of range");
    model_st_entry badutf = {"x\xff", MODEL_F32, 1, {2}, a};
    CHECK_ERR_CONTAINS(model_st_write(path, &badutf, 1, NULL, 0, &e), e, "not valid UTF-8");
    model_st_entry ok = {"x", MODEL_F32, 1, {2}, a};
    const char *dupmeta[] = {"k", "1", "k", "2"};
    CHECK_ERR_CONTAINS(model_st_write(path, &ok, 1, dupmeta, 2, &e), e, "\"k\" given twice");
    const char *nullmeta[] = {"k", NULL};
    CHECK_ERR_CONTAINS(model_st_write(path, &ok, 1, nullmeta, 1, &e), e, "NULL");
    CHECK(!xd_file_exists(path));
    CHECK_ERR_CONTAINS(model_st_write("/nonexistent-dir/x.safetensors", &ok, 1, NULL, 0, &e), e,
                       "/nonexistent-dir/x.safetensors.tmp.");
}

/* ---- golden file from the Python library (tests/golden/make_safetensors_fixture.py) ---- */

static void test_golden(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/safetensors/golden.safetensors", test_data_dir());
    model_safetensors *st;
    xd_err e;
    int rc = model_st_open(path, &st, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc != 0) return;
    CHECK(model_st_count(st) == 5);
    CHECK(strcmp(model_st_metadata(st, "format"), "np") == 0);
    CHECK(strcmp(model_st_metadata(st, "source"), "xdistill fixture") == 0);

    float out[12];
    const model_tensor_view *v = model_st_find(st, "embed.weight");
    CHECK(v && v->dtype == MODEL_F32 && v->ndim == 2 && v->shape[0] == 4 && v->shape[1] == 3);
    if (v) {
        CHECK(model_tensor_to_f32(v, out, 12, &e) == 0);
        for (int i = 0; i < 12; i++) CHECK(out[i] == 0.5f * (float)i - 1.0f);
    }
    v = model_st_find(st, "model.norm.weight");
    CHECK(v && v->dtype == MODEL_F16 && v->ndim == 1 && v->shape[0] == 5);
    if (v) {
        const float want[5] = {1.0f, -2.0f, 0.5f, 65504.0f, 6.1035156e-05f};
        CHECK(model_tensor_to_f32(v, out, 5, &e) == 0);
        for (int i = 0; i < 5; i++) CHECK(out[i] == want[i]);
    }
    v = model_st_find(st, "positions");
    CHECK(v && v->dtype == MODEL_I64 && v->ndim == 2 && v->shape[0] == 2 && v->shape[1] == 3);
    if (v) {
        const int64_t want[6] = {0, 1, -1, (int64_t)1 << 40, -((int64_t)1 << 40), 7};
        CHECK(v->nbytes == 48 && memcmp(v->data, want, 48) == 0);
    }
    v = model_st_find(st, "scalar");
    CHECK(v && v->ndim == 0 && model_tensor_to_f32(v, out, 1, &e) == 0 && out[0] == 3.25f);
    v = model_st_find(st, "empty");
    CHECK(v && v->ndim == 2 && v->shape[0] == 0 && v->shape[1] == 4 && v->nbytes == 0);
    model_st_close(st);
}

/* ---- sharded directories ---- */

static void write_shard(const char *dir, const char *name, const char *t1, const char *t2) {
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    model_st_entry entries[2] = {{t1, MODEL_F32, 1, {2}, a}, {t2, MODEL_F32, 1, {3}, b}};
    const char *meta[] = {"format", "pt"};
    char path[512];
    path_in(path, sizeof path, dir, name);
    xd_err e;
    if (model_st_write(path, entries, t2 ? 2 : 1, meta, 1, &e) != 0) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

static void write_index(const char *dir, const char *json) {
    char path[512];
    path_in(path, sizeof path, dir, "model.safetensors.index.json");
    write_bytes(path, json, strlen(json));
}

static void expect_dir_err_(const char *dir, const char *fragment, int line) {
    model_safetensors *st;
    xd_err e = {{0}};
    int rc = model_st_open(dir, &st, &e);
    if (rc >= 0 || !strstr(e.msg, fragment) || strncmp(e.msg, dir, strlen(dir)) != 0) {
        fprintf(stderr, "%s:%d: expected an error \"%s...%s...\", got rc=%d \"%s\"\n", __FILE__,
                line, dir, fragment, rc, e.msg);
        test_failures++;
    }
    if (rc >= 0) model_st_close(st);
}
#define expect_dir_err(dir, fragment) expect_dir_err_(dir, fragment, __LINE__)

static void test_sharded(void) {
    char dir[512];
    path_in(dir, sizeof dir, tmpdir, "sharded");
    CHECK(mkdir(dir, 0755) == 0);
    expect_dir_err(dir, "directory has neither model.safetensors.index.json nor model.safetensors");

    const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
    write_shard(dir, s1, "embed", "layers.0.w");
    write_shard(dir, s2, "layers.1.w", "lm_head");
    const char *good = "{\"metadata\": {\"total_size\": 40}, \"weight_map\": {"
                       "\"embed\": \"model-00001-of-00002.safetensors\","
                       "\"layers.0.w\": \"model-00001-of-00002.safetensors\","
                       "\"layers.1.w\": \"model-00002-of-00002.safetensors\","
                       "\"lm_head\": \"model-00002-of-00002.safetensors\"}}";
    write_index(dir, good);
    model_safetensors *st;
    xd_err e;
    int rc = model_st_open(dir, &st, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) {
        CHECK(model_st_count(st) == 4);
        const char *names[] = {"embed", "layers.0.w", "layers.1.w", "lm_head"};
        for (int i = 0; i < 4; i++) {
            const model_tensor_view *v = model_st_find(st, names[i]);
            CHECK(v != NULL);
            float out[3];
            if (v) {
                uint64_t nel = model_tensor_numel(v);
                CHECK(model_tensor_to_f32(v, out, nel, &e) == 0);
                CHECK(out[0] == (nel == 2 ? 1.0f : 3.0f));
            }
        }
        CHECK(strcmp(model_st_metadata(st, "format"), "pt") == 0);
        model_st_close(st);
    }

    /* The index names a shard that is not there. */
    write_index(dir, "{\"weight_map\": {\"embed\": \"model-00001-of-00002.safetensors\","
                     "\"x\": \"model-00003-of-00003.safetensors\"}}");
    expect_dir_err(dir, "model-00003-of-00003.safetensors: cannot open");
    /* The index names a tensor its shard does not hold. */
    write_index(dir, "{\"weight_map\": {\"embed\": \"model-00001-of-00002.safetensors\","
                     "\"ghost\": \"model-00002-of-00002.safetensors\"}}");
    expect_dir_err(dir, "tensor ghost is mapped to model-00002-of-00002.safetensors, which does "
                        "not contain it");
    /* ... or puts it in the wrong shard. */
    write_index(dir, "{\"weight_map\": {\"embed\": \"model-00002-of-00002.safetensors\","
                     "\"layers.0.w\": \"model-00001-of-00002.safetensors\"}}");
    expect_dir_err(dir, "tensor embed is mapped to model-00002-of-00002.safetensors, but it is in "
                        "model-00001-of-00002.safetensors");
    /* Shard names may not leave the directory. */
    write_index(dir, "{\"weight_map\": {\"embed\": \"../evil.safetensors\"}}");
    expect_dir_err(dir,
                   "shard name \"../evil.safetensors\" (tensor embed) must be a plain file name");
    write_index(dir, "{\"weight_map\": {\"embed\": \"/etc/passwd\"}}");
    expect_dir_err(dir, "must be a plain file name");
    write_index(dir, "{\"weight_map\": {\"embed\": \"..\"}}");
    expect_dir_err(dir, "must be a plain file name");
    write_index(dir, "{\"weight_map\": {\"embed\": \"\"}}");
    expect_dir_err(dir, "must be a plain file name");
    /* A tensor in two shards. */
    write_shard(dir, "extra.safetensors", "layers.0.w", "other");
    write_index(dir, "{\"weight_map\": {\"embed\": \"model-00001-of-00002.safetensors\","
                     "\"other\": \"extra.safetensors\"}}");
    expect_dir_err(dir, "tensor layers.0.w appears in both");
    /* Broken index files. */
    write_index(dir, "{\"weight_map\": ");
    expect_dir_err(dir, "model.safetensors.index.json: not valid JSON");
    write_index(dir, "{\"metadata\": {}}");
    expect_dir_err(dir, "\"weight_map\" must be a non-empty object");
    write_index(dir, "{\"weight_map\": {}}");
    expect_dir_err(dir, "\"weight_map\" must be a non-empty object");
    write_index(dir, "[]");
    expect_dir_err(dir, "\"weight_map\" must be a non-empty object");
    write_index(dir, "{\"weight_map\": {\"embed\": 3}}");
    expect_dir_err(dir, "weight_map entry for tensor embed must be a string");
    write_index(dir, "{\"weight_map\": {\"embed\": \"a\", \"embed\": \"b\"}}");
    expect_dir_err(dir, "duplicate");
    /* A bad shard: its own error, with its path. */
    char p[512];
    path_in(p, sizeof p, dir, "broken.safetensors");
    write_bytes(p, "\x02\0\0\0\0\0\0\0[]", 10);
    write_index(dir, "{\"weight_map\": {\"embed\": \"broken.safetensors\"}}");
    expect_dir_err(dir, "broken.safetensors: header is not a JSON object");

    /* Without an index, model.safetensors in the directory. */
    path_in(p, sizeof p, dir, "model.safetensors.index.json");
    unlink(p);
    write_shard(dir, "model.safetensors", "only", NULL);
    rc = model_st_open(dir, &st, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) {
        CHECK(model_st_count(st) == 1 && model_st_find(st, "only"));
        model_st_close(st);
    }

    const char *files[] = {s1, s2, "extra.safetensors", "broken.safetensors", "model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        path_in(p, sizeof p, dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* ---- malformed files ---- */

/* Every prefix of a valid file is invalid: each must give a clean error (ASan watches for reads
 * past the end: the copy is exactly len bytes). */
static void test_truncation(void) {
    uint16_t h[3] = {1, 2, 3};
    int64_t ids[2] = {5, 6};
    model_st_entry entries[] = {
        {"h", MODEL_F16, 1, {3}, h},
        {"ids", MODEL_I64, 1, {2}, ids},
    };
    const char *meta[] = {"k", "v"};
    char path[512];
    path_in(path, sizeof path, tmpdir, "trunc.safetensors");
    xd_err e;
    CHECK(model_st_write(path, entries, 2, meta, 1, &e) == 0);
    char *full;
    size_t len;
    CHECK(xd_read_file(path, 1 << 16, &full, &len, &e) == 0);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, full, cut);
        model_safetensors *st;
        xd_err err = {{0}};
        int rc = model_st_open_memory(copy, cut, "trunc", &st, &err);
        CHECK_MSG(rc < 0 && strncmp(err.msg, "trunc: ", 7) == 0, "cut %zu: rc %d \"%s\"", cut, rc,
                  err.msg);
        if (rc == 0) model_st_close(st);
        free(copy);
    }
    /* The same through real files, for a few lengths. */
    const size_t cuts[] = {0, 7, 8, 20, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(path, full, cuts[i]);
        model_safetensors *st;
        int rc = model_st_open(path, &st, &e);
        CHECK_MSG(rc < 0 && strncmp(e.msg, path, strlen(path)) == 0, "cut %zu: \"%s\"", cuts[i],
                  e.msg);
        if (rc == 0) model_st_close(st);
    }
    free(full);
    unlink(path);
    expect_dir_err("/nonexistent/x.safetensors", "cannot open");
}

static void test_header_errors(void) {
    /* Header length field. */
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    expect_mem_err(huge, sizeof huge,
                   "header length 18446744073709551615 is more than the 100000000 allowed");
    uint8_t big[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100000001 */
    expect_mem_err(big, sizeof big, "is more than the 100000000 allowed");
    uint8_t past[16] = {9, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    expect_mem_err(past, sizeof past, "header length 9 runs past the end of the file (16 bytes)");
    uint8_t tiny[16] = {1, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    expect_mem_err(tiny, sizeof tiny, "header length 1 is too small");
    expect_mem_err(tiny, 5, "too short");

    /* JSON itself. */
    expect_header_err("{not json", 0, "header is not valid JSON");
    expect_header_err("{\"a\": ", 0, "header is not valid JSON");
    expect_header_err("[1, 2]", 0, "header is not a JSON object");
    expect_header_err("\"str\"", 0, "header is not valid JSON");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                      " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                      8, "duplicate object key");
    expect_header_err("{\"w\xff\": {}}", 0, "header is not valid JSON");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [99999999999999999999999], "
                      "\"data_offsets\": [0, 4]}}",
                      4, "header is not valid JSON");
    CHECK(header_ok("{}", 0) == 0);
    CHECK(header_ok("{}    \n\t ", 0) == 0); /* trailing whitespace is padding */

    /* Metadata. */
    expect_header_err("{\"__metadata__\": [\"a\"]}", 0,
                      "\"__metadata__\" must be an object of strings");
    expect_header_err("{\"__metadata__\": {\"a\": 1}}", 0,
                      "\"__metadata__\" value of \"a\" must be a string");

    /* Wrong JSON types, named by tensor and key. */
    expect_header_err(
        "{\"model.norm.weight\": {\"dtype\": \"F32\", \"shape\": \"4\", "
        "\"data_offsets\": [0, 16]}}",
        16, "tensor model.norm.weight: \"shape\" must be an array of non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",
                      4, "tensor w: \"shape\" must be an array of non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 4]}}",
                      4, "tensor w: \"shape\" must be an array of non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [true], \"data_offsets\": [0, 4]}}",
                      4, "tensor w: \"shape\" must be an array of non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": 32, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                      "tensor w: \"dtype\" must be a string");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
                      "tensor w: \"data_offsets\" must be an array of two non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}",
                      8,
                      "tensor w: \"data_offsets\" must be an array of two non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": \"0-4\"}}", 4,
                      "tensor w: \"data_offsets\" must be an array of two non-negative integers");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
                      "tensor w: \"data_offsets\" must be an array of two non-negative integers");
    expect_header_err("{\"w\": [\"F32\"]}", 0, "tensor w: entry must be an object");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4,
                      "tensor w: missing \"shape\"");
    expect_header_err("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                      "tensor w: missing \"dtype\"");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
                      "tensor w: missing \"data_offsets\"");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], "
                      "\"extra\": 1}}",
                      4, "tensor w: unexpected key \"extra\"");

    /* Dtypes xdistill does not read. */
    expect_header_err("{\"w\": {\"dtype\": \"F8_E4M3\", \"shape\": [1], \"data_offsets\": [0, 1]}}",
                      1, "tensor w has dtype F8_E4M3, which xdistill does not read");
    expect_header_err("{\"w\": {\"dtype\": \"BOOL\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
                      "tensor w has dtype BOOL, which xdistill does not read");
    expect_header_err("{\"w\": {\"dtype\": \"Q8_0\", \"shape\": [32], \"data_offsets\": [0, 34]}}",
                      34, "tensor w has dtype Q8_0, which xdistill does not read");

    /* Shapes. */
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                      "\"data_offsets\": [0, 4]}}",
                      4, "tensor w has 9 dimensions, more than the 8 supported");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 2], "
                      "\"data_offsets\": [0, 4]}}",
                      4, "tensor w: element count of shape [4294967296, 4294967296, 2] overflows");
    expect_header_err("{\"w\": {\"dtype\": \"I64\", \"shape\": [4294967296, 536870912], "
                      "\"data_offsets\": [0, 4]}}",
                      4, "tensor w: tensor size overflows");
    CHECK(header_ok("{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1], "
                    "\"data_offsets\": [0, 4]}}",
                    4) == 0);

    /* Offsets. */
    expect_header_err(
        "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4,
        "tensor w: data_offsets [0, 8] run past the end of the data section (4 bytes)");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], "
                      "\"data_offsets\": [9223372036854775800, 9223372036854775807]}}",
                      4, "run past the end of the data section");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8,
                      "tensor w: data_offsets [8, 0] end before they begin");
    expect_header_err("{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8,
                      "tensor w: data_offsets [0, 8] hold 8 bytes, but shape [3] of F32 needs 12");
    expect_header_err("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                      " \"b\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [6, 10]}}",
                      16, "tensors a [0, 8] and b [6, 10] overlap");
    expect_header_err("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                      " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                      16, "overlap");
    expect_header_err("{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                      " \"b\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [4, 8]}}",
                      16, "overlap");
    /* Gaps, trailing bytes and empty tensors anywhere in range are fine. */
    CHECK(header_ok("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]},"
                    " \"b\": {\"dtype\": \"F16\", \"shape\": [0, 3], \"data_offsets\": [10, 10]},"
                    " \"c\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 2]}}",
                    32) == 0);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_header_layout();
    test_write_errors();
    test_golden();
    test_sharded();
    test_truncation();
    test_header_errors();
    rmdir(tmpdir);
    TEST_MAIN_END();
}
