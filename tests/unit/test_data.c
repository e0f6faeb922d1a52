/* Token shards and the mixture loader: round trips with 2- and 4-byte ids, every malformed-file
 * error, loader determinism, mixture proportions, exact resume, epoch wrap and the val pass. */
#include "model/data.h"
#include "test.h"

#include <dirent.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

static char base[] = "/tmp/xd_test_data_XXXXXX";

static void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", path, de->d_name);
            rm_rf(p);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void sub(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", base, name); }

/* Writes dir with the given documents (each n[i] ids from ids + sum of earlier n) into a split. */
static int write_dir(const char *dir, int vocab, uint64_t shard_tokens, const int *ids, const size_t *n,
                     size_t n_docs, const model_data_split *splits, bool overwrite, xd_err *e) {
    model_data_writer_options o = {"test-tokenizer", vocab, vocab - 1, "test", shard_tokens, overwrite};
    model_data_writer *w;
    if (model_data_writer_open(dir, &o, &w, e)) return -1;
    int rc = 0;
    size_t at = 0;
    for (size_t i = 0; rc == 0 && i < n_docs; i++) {
        rc = model_data_writer_add(w, splits ? splits[i] : MODEL_DATA_TRAIN, ids + at, n[i], e);
        at += n[i];
    }
    json_t *extra = json_pack("{s:[]}", "inputs");
    if (rc == 0) rc = model_data_writer_finish(w, 3, extra, e);
    json_decref(extra);
    model_data_writer_free(w);
    return rc;
}

/* A source whose train shard i holds tokens 1000*tag + 100*i + j, one document per shard. */
static void make_source(const char *name, int tag, const size_t *sizes, size_t n_shards, size_t val_tokens) {
    char dir[512];
    sub(dir, sizeof dir, name);
    int ids[4096];
    size_t n[64], at = 0, k = 0;
    model_data_split sp[64];
    size_t biggest = 0;
    for (size_t i = 0; i < n_shards; i++) {
        for (size_t j = 0; j < sizes[i]; j++) ids[at++] = 1000 * tag + 100 * (int)i + (int)j;
        n[k] = sizes[i];
        sp[k++] = MODEL_DATA_TRAIN;
        if (sizes[i] > biggest) biggest = sizes[i];
    }
    if (val_tokens) {
        for (size_t j = 0; j < val_tokens; j++) ids[at++] = 1000 * tag + 900 + (int)j;
        n[k] = val_tokens;
        sp[k++] = MODEL_DATA_VAL;
    }
    xd_err e;
    /* a shard fits the biggest document; the next document never fits the remaining space */
    int rc = write_dir(dir, 70000, biggest, ids, n, k, sp, true, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
}

static void test_round_trip(int vocab, int want_width) {
    char dir[512];
    sub(dir, sizeof dir, "rt");
    /* documents of 4, 5, 25 (longer than a shard: split), 3 (val), 6 tokens, shards of 10 */
    size_t n[] = {4, 5, 25, 3, 6};
    model_data_split sp[] = {MODEL_DATA_TRAIN, MODEL_DATA_TRAIN, MODEL_DATA_TRAIN, MODEL_DATA_VAL,
                             MODEL_DATA_TRAIN};
    int ids[43];
    for (int i = 0; i < 43; i++) ids[i] = (vocab - 1) - i * 7; /* the largest id included */
    xd_err e;
    int rc = write_dir(dir, vocab, 10, ids, n, 5, sp, true, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    model_data_dir d;
    rc = model_data_open(dir, &d, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    CHECK(d.vocab == vocab && d.eos == vocab - 1 && !strcmp(d.domain, "test"));
    CHECK(!strcmp(d.tokenizer_source, "test-tokenizer"));
    CHECK(d.documents[0] == 4 && d.documents[1] == 1 && d.skipped == 3);
    CHECK(d.tokens[0] == 40 && d.tokens[1] == 3);
    /* train: [4+5] then 25 → [10] [10] [5], then 6 does not fit the 5 → [6] */
    size_t want[] = {9, 10, 10, 5, 6};
    CHECK(d.n_shards[0] == 5 && d.n_shards[1] == 1);
    for (size_t i = 0; i < d.n_shards[0] && i < 5; i++) {
        CHECK_MSG(d.shards[0][i].tokens == want[i], "shard %zu: %llu tokens", i,
                  (unsigned long long)d.shards[0][i].tokens);
        CHECK(d.shards[0][i].width == want_width);
    }
    CHECK(!strcmp(d.shards[0][0].file, "train-00000.bin") && !strcmp(d.shards[1][0].file, "val-00000.bin"));
    int got[43], *p = got;
    for (size_t i = 0; i < d.n_shards[0]; i++) {
        rc = model_data_read(&d, MODEL_DATA_TRAIN, i, 0, d.shards[0][i].tokens, p, &e);
        CHECK_MSG(rc == 0, "%s", e.msg);
        p += d.shards[0][i].tokens;
    }
    CHECK(memcmp(got, ids, sizeof(int) * 34) == 0);   /* docs 0..2 */
    CHECK(memcmp(got + 34, ids + 37, sizeof(int) * 6) == 0); /* doc 4 */
    rc = model_data_read(&d, MODEL_DATA_VAL, 0, 1, 2, got, &e);
    CHECK(rc == 0 && got[0] == ids[35] && got[1] == ids[36]);
    rc = model_data_read(&d, MODEL_DATA_VAL, 0, 2, 2, got, &e);
    CHECK_ERR_CONTAINS(rc, e, "are past its 3");
    rc = model_data_verify(&d, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    struct stat st;
    char f[600];
    snprintf(f, sizeof f, "%s/train-00001.bin", dir);
    CHECK(stat(f, &st) == 0 && st.st_size == 64 + 10 * want_width);
    model_data_close(&d);
}

static void test_writer(void) {
    char dir[512];
    sub(dir, sizeof dir, "w");
    int ids[30];
    for (int i = 0; i < 30; i++) ids[i] = i;
    size_t n[] = {10, 10, 10};
    xd_err e;
    CHECK(write_dir(dir, 100, 10, ids, n, 3, NULL, false, &e) == 0);
    int rc = write_dir(dir, 100, 10, ids, n, 3, NULL, false, &e);
    CHECK_ERR_CONTAINS(rc, e, "already holds token shards (--force to overwrite)");
    /* overwriting with fewer shards removes the stale ones */
    rc = write_dir(dir, 100, 30, ids, n, 3, NULL, true, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    char f[600];
    snprintf(f, sizeof f, "%s/train-00001.bin", dir);
    CHECK(!xd_file_exists(f));
    model_data_dir d;
    CHECK(model_data_open(dir, &d, &e) == 0 && d.n_shards[0] == 1 && d.tokens[0] == 30);
    model_data_close(&d);
    /* ids are checked against the vocabulary on the way in */
    model_data_writer_options o = {"t", 100, 99, NULL, 10, true};
    model_data_writer *w;
    CHECK(model_data_writer_open(dir, &o, &w, &e) == 0);
    int bad[] = {1, 100};
    rc = model_data_writer_add(w, MODEL_DATA_TRAIN, bad, 2, &e);
    CHECK_ERR_CONTAINS(rc, e, "token 100 of a document is outside the vocabulary (0..99)");
    model_data_writer_free(w);
    /* vocab 65536 still fits 2-byte ids, 65537 needs 4 */
    test_round_trip(65536, 2);
    test_round_trip(65537, 4);
    test_round_trip(1000, 2);
    test_round_trip(70000, 4);
}

/* ---- malformed inputs ---- */

static char bad_dir[512];

static void make_good(void) {
    rm_rf(bad_dir);
    int ids[20];
    for (int i = 0; i < 20; i++) ids[i] = i;
    size_t n[] = {8, 8, 4};
    model_data_split sp[] = {MODEL_DATA_TRAIN, MODEL_DATA_TRAIN, MODEL_DATA_VAL};
    xd_err e;
    int rc = write_dir(bad_dir, 1000, 8, ids, n, 3, sp, true, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
}

static void expect_open_error(const char *fragment, int line) {
    model_data_dir d;
    xd_err e = {{0}};
    int rc = model_data_open(bad_dir, &d, &e);
    if (rc == 0) model_data_close(&d);
    if (rc >= 0 || !strstr(e.msg, fragment)) {
        fprintf(stderr, "test_data.c:%d: expected an error containing \"%s\", got rc=%d \"%s\"\n", line,
                fragment, rc, e.msg);
        test_failures++;
    }
}
#define EXPECT_OPEN_ERROR(fragment) expect_open_error(fragment, __LINE__)

static void edit_manifest(const char *k1, const char *k2, int index, const char *k3, json_t *v) {
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", bad_dir);
    json_t *m = json_load_file(path, 0, NULL);
    json_t *o = m;
    if (k1 && k2) o = json_object_get(o, k1);
    if (index >= 0) o = json_array_get(json_object_get(o, k2), (size_t)index);
    const char *key = k3 ? k3 : k2 ? k2 : k1;
    if (v) json_object_set_new(o, key, v);
    else json_object_del(o, key);
    json_dump_file(m, path, 0);
    json_decref(m);
}

static void write_manifest_text(const char *text) {
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", bad_dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void patch_shard(const char *file, long at, const void *bytes, size_t n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", bad_dir, file);
    FILE *f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

static void resize_shard(const char *file, long delta) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", bad_dir, file);
    struct stat st;
    stat(path, &st);
    CHECK(truncate(path, st.st_size + delta) == 0);
}

static void test_malformed(void) {
    sub(bad_dir, sizeof bad_dir, "bad");
    model_data_dir d;
    xd_err e;
    int rc = model_data_open(bad_dir, &d, &e);
    CHECK_ERR_CONTAINS(rc, e, "/bad: no such directory");
    make_good();
    rc = model_data_open(bad_dir, &d, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) model_data_close(&d);

    char path[600];
    snprintf(path, sizeof path, "%s/manifest.json", bad_dir);
    unlink(path);
    EXPECT_OPEN_ERROR("no manifest.json (not a token shard directory, or xtrain prepare did not finish)");
    make_good();
    write_manifest_text("{\"format\": \"xdistill-shards\",");
    EXPECT_OPEN_ERROR("manifest.json: invalid JSON (line 1");
    write_manifest_text("[1, 2]");
    EXPECT_OPEN_ERROR("manifest.json: not a JSON object");
    make_good();
    edit_manifest("format", NULL, -1, NULL, json_string("other"));
    EXPECT_OPEN_ERROR("manifest.json: \"format\" is \"other\", expected \"xdistill-shards\"");
    make_good();
    edit_manifest("version", NULL, -1, NULL, json_integer(2));
    EXPECT_OPEN_ERROR("manifest.json: manifest version 2 is not supported (expected 1)");
    make_good();
    edit_manifest("tokenizer", "vocab_size", -1, NULL, json_string("1000"));
    EXPECT_OPEN_ERROR("manifest.json: \"tokenizer.vocab_size\" must be an integer");
    make_good();
    edit_manifest("tokenizer", "eos_id", -1, NULL, json_integer(1000));
    EXPECT_OPEN_ERROR("\"tokenizer.eos_id\" must be an integer in [-1, 999]");
    make_good();
    edit_manifest("tokenizer", NULL, -1, NULL, json_integer(1));
    EXPECT_OPEN_ERROR("\"tokenizer\" must be an object");
    make_good();
    edit_manifest("domain", NULL, -1, NULL, json_integer(1));
    EXPECT_OPEN_ERROR("\"domain\" must be a string or null");
    make_good();
    edit_manifest("documents", "skipped", -1, NULL, json_integer(-1));
    EXPECT_OPEN_ERROR("\"documents.skipped\" must be an integer");
    make_good();
    edit_manifest("inputs", NULL, -1, NULL, NULL);
    EXPECT_OPEN_ERROR("\"inputs\" must be an array");
    make_good();
    edit_manifest("splits", "val", -1, NULL, json_object());
    EXPECT_OPEN_ERROR("\"splits.val\" must be an array");
    make_good();
    edit_manifest("splits", "train", 1, "tokens", json_string("8"));
    EXPECT_OPEN_ERROR("\"splits.train[1].tokens\" must be an integer");
    make_good();
    edit_manifest("splits", "train", 0, "file", json_string("../escape.bin"));
    EXPECT_OPEN_ERROR("\"splits.train[0].file\" = \"../escape.bin\" is not a plain file name");
    make_good();
    edit_manifest("splits", "train", 0, "sha256", json_string("abc"));
    EXPECT_OPEN_ERROR("\"splits.train[0].sha256\" must be 64 lowercase hex digits");
    make_good();
    edit_manifest("splits", "train", 0, "tokens", json_integer(7));
    EXPECT_OPEN_ERROR("train-00000.bin: holds 8 tokens, but the manifest says 7");

    make_good();
    snprintf(path, sizeof path, "%s/train-00001.bin", bad_dir);
    unlink(path);
    EXPECT_OPEN_ERROR("train-00001.bin: cannot open");
    make_good();
    patch_shard("train-00000.bin", 0, "XDTOKSH2", 8);
    EXPECT_OPEN_ERROR("train-00000.bin: not a token shard (bad magic");
    make_good();
    patch_shard("val-00000.bin", 8, "\x07\0\0\0", 4);
    EXPECT_OPEN_ERROR("val-00000.bin: shard version 7 is not supported (expected 1)");
    make_good();
    patch_shard("train-00000.bin", 12, "\x03\0\0\0", 4);
    EXPECT_OPEN_ERROR("train-00000.bin: id width 3 (expected 2 or 4)");
    make_good();
    patch_shard("train-00000.bin", 24, "\x01\0\0\0", 4);
    EXPECT_OPEN_ERROR("train-00000.bin: vocabulary size 1, but the manifest says 1000");
    make_good();
    patch_shard("train-00000.bin", 40, "\x01", 1);
    EXPECT_OPEN_ERROR("train-00000.bin: reserved header byte 40 is not zero");
    make_good();
    resize_shard("train-00001.bin", -2);
    EXPECT_OPEN_ERROR("train-00001.bin: 78 bytes, but 8 tokens of 2 bytes need 80 (truncated or padded)");
    make_good();
    resize_shard("train-00001.bin", 1);
    EXPECT_OPEN_ERROR("train-00001.bin: 81 bytes, but 8 tokens of 2 bytes need 80");
    make_good();
    resize_shard("val-00000.bin", -40);
    EXPECT_OPEN_ERROR("val-00000.bin: 32 bytes, too short for the 64-byte shard header");
    /* the header's count disagreeing with the file's size (the manifest agreeing with the header) */
    make_good();
    patch_shard("train-00000.bin", 16, "\x09\0\0\0\0\0\0\0", 8);
    edit_manifest("splits", "train", 0, "tokens", json_integer(9));
    EXPECT_OPEN_ERROR("train-00000.bin: 80 bytes, but 9 tokens of 2 bytes need 82");

    /* an id outside the vocabulary is found when it is read; verify also sees the checksum */
    make_good();
    patch_shard("train-00001.bin", 64 + 2 * 3, "\xff\xff", 2);
    rc = model_data_open(bad_dir, &d, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) {
        int out[8];
        rc = model_data_read(&d, MODEL_DATA_TRAIN, 1, 0, 8, out, &e);
        CHECK_ERR_CONTAINS(rc, e, "train-00001.bin: token 3 is 65535, outside the vocabulary (0..999)");
        rc = model_data_verify(&d, &e);
        CHECK_ERR_CONTAINS(rc, e, "train-00001.bin: sha256 is ");
        CHECK(strstr(e.msg, "but the manifest says") != NULL);
        char hex[65];
        xd_sha256_hex(d.shards[0][1].map.data, d.shards[0][1].map.size, hex);
        model_data_close(&d);
        edit_manifest("splits", "train", 1, "sha256", json_string(hex));
        CHECK(model_data_open(bad_dir, &d, &e) == 0);
        rc = model_data_verify(&d, &e);
        CHECK_ERR_CONTAINS(rc, e, "train-00001.bin: token 3 is 65535, outside the vocabulary");
        model_data_close(&d);
        /* and by the loader */
        model_data_source src = {bad_dir, 1.0};
        model_data_loader *l;
        rc = model_data_loader_open(&src, 1, MODEL_DATA_TRAIN, 15, 1, &l, &e);
        CHECK_MSG(rc == 0, "%s", e.msg);
        if (rc == 0) {
            int in[15], tg[15];
            rc = model_data_next(l, in, tg, NULL, &e);
            CHECK_ERR_CONTAINS(rc, e, "outside the vocabulary (0..999)");
            model_data_loader_free(l);
        }
    }
}

/* ---- loader ---- */

static char src_dir[4][512];

static void make_sources(void) {
    size_t a[] = {40, 25, 60}, b[] = {33, 33}, c[] = {70, 40, 31, 50}, z[] = {3};
    make_source("s0", 1, a, 3, 17);
    make_source("s1", 2, b, 2, 0);
    make_source("s2", 3, c, 4, 9);
    make_source("s3", 4, z, 1, 0);
    for (int k = 0; k < 4; k++) {
        char name[8];
        snprintf(name, sizeof name, "s%d", k);
        sub(src_dir[k], sizeof src_dir[k], name);
    }
}

typedef struct draw {
    int in[16], tg[16], src;
} draw;

static int draw_n(model_data_loader *l, draw *out, int n, int T, xd_err *e) {
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        int rc = model_data_next(l, out[i].in, out[i].tg, &out[i].src, e);
        if (rc) return rc;
        (void)T;
    }
    return 0;
}

static bool same_draws(const draw *a, const draw *b, int n) { return memcmp(a, b, sizeof(draw) * (size_t)n) == 0; }

static void test_loader_determinism_and_resume(void) {
    model_data_source src[] = {{src_dir[0], 1}, {src_dir[1], 2}, {src_dir[2], 3}};
    const int T = 7;
    xd_err e;
    model_data_loader *a, *b;
    int rc = model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 42, &a, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    static draw full[100], again[100], part[100];
    CHECK(draw_n(a, full, 100, T, &e) == 0);
    /* the same seed gives the same sequences; another seed others */
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    CHECK(draw_n(b, again, 100, T, &e) == 0);
    CHECK(same_draws(full, again, 100));
    model_data_loader_free(b);
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 43, &b, &e) == 0);
    CHECK(draw_n(b, again, 100, T, &e) == 0);
    CHECK(!same_draws(full, again, 100));
    model_data_loader_free(b);
    /* targets are the inputs shifted by one */
    for (int i = 0; i < 100; i++)
        for (int t = 0; t + 1 < T; t++) CHECK(full[i].tg[t] == full[i].in[t + 1]);
    /* every source is drawn over 100 draws */
    int seen[3] = {0};
    for (int i = 0; i < 100; i++) seen[full[i].src]++;
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);

    /* 37 draws, state through bytes, a new loader, 63 more: exactly the uninterrupted run */
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    CHECK(draw_n(b, part, 37, T, &e) == 0);
    model_data_state st, st2;
    model_data_loader_state(b, &st);
    CHECK(st.sequences == 37);
    model_data_loader_free(b);
    uint8_t buf[4096];
    size_t nb = model_data_state_bytes(&st);
    CHECK(nb == 72 + 32 * 3);
    CHECK(model_data_state_encode(&st, buf, 10, &e) < 0);
    CHECK(model_data_state_encode(&st, buf, sizeof buf, &e) == 0);
    CHECK(model_data_state_decode(buf, nb, &st2, &e) == 0);
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    rc = model_data_loader_restore(b, &st2, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(draw_n(b, part + 37, 63, T, &e) == 0);
    CHECK(same_draws(full, part, 100));
    model_data_loader_free(b);

    /* the same through JSON text, from a different split point */
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    CHECK(draw_n(b, part, 61, T, &e) == 0);
    model_data_loader_state(b, &st);
    model_data_loader_free(b);
    json_t *j = model_data_state_to_json(&st);
    char *text = json_dumps(j, 0);
    json_decref(j);
    j = json_loads(text, 0, NULL);
    free(text);
    rc = model_data_state_from_json(j, &st2, &e);
    json_decref(j);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(memcmp(&st, &st2, sizeof st) == 0);
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    CHECK(model_data_loader_restore(b, &st2, &e) == 0);
    CHECK(draw_n(b, part + 61, 39, T, &e) == 0);
    CHECK(same_draws(full, part, 100));
    /* reset starts over */
    model_data_loader_reset(b);
    CHECK(draw_n(b, part, 100, T, &e) == 0);
    CHECK(same_draws(full, part, 100));
    model_data_loader_free(b);

    /* a state from another setting is refused, naming what differs */
    model_data_loader_state(a, &st);
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T + 1, 42, &b, &e) == 0);
    rc = model_data_loader_restore(b, &st, &e);
    CHECK_ERR_CONTAINS(rc, e, "saved with sequence length 7, the loader has 8");
    model_data_loader_free(b);
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 41, &b, &e) == 0);
    rc = model_data_loader_restore(b, &st, &e);
    CHECK_ERR_CONTAINS(rc, e, "saved with seed 42, the loader has 41");
    model_data_loader_free(b);
    CHECK(model_data_loader_open(src, 2, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    rc = model_data_loader_restore(b, &st, &e);
    CHECK_ERR_CONTAINS(rc, e, "saved with 3 source(s), the loader has 2");
    model_data_loader_free(b);
    model_data_source swapped[] = {{src_dir[0], 1}, {src_dir[2], 2}, {src_dir[1], 3}};
    CHECK(model_data_loader_open(swapped, 3, MODEL_DATA_TRAIN, T, 42, &b, &e) == 0);
    rc = model_data_loader_restore(b, &st, &e);
    CHECK_ERR_CONTAINS(rc, e, "had 66 train tokens when saved, now 191");
    model_data_loader_free(b);
    st2 = st;
    st2.cursor[1].shard = 5;
    rc = model_data_loader_restore(a, &st2, &e);
    CHECK_ERR_CONTAINS(rc, e, "is outside its 2 shard(s)");
    buf[0] = 'Y';
    rc = model_data_state_decode(buf, nb, &st2, &e);
    CHECK_ERR_CONTAINS(rc, e, "not a loader state");
    model_data_state_encode(&st, buf, sizeof buf, &e);
    rc = model_data_state_decode(buf, nb - 1, &st2, &e);
    CHECK_ERR_CONTAINS(rc, e, "but 3 sources need 168");
    j = json_pack("{s:s}", "format", "nope");
    rc = model_data_state_from_json(j, &st2, &e);
    CHECK_ERR_CONTAINS(rc, e, "xdistill-loader-state");
    json_decref(j);
    model_data_loader_free(a);
}

static void test_mixture_proportions(void) {
    /* weights 1:2:7 and a zero-weight (and too small) source that is never drawn */
    model_data_source src[] = {{src_dir[0], 1}, {src_dir[3], 0}, {src_dir[1], 2}, {src_dir[2], 7}};
    xd_err e;
    model_data_loader *l;
    int rc = model_data_loader_open(src, 4, MODEL_DATA_TRAIN, 4, 7, &l, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    int count[4] = {0}, in[4], tg[4], s;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        if (model_data_next(l, in, tg, &s, &e)) break;
        count[s]++;
    }
    CHECK(count[1] == 0);
    CHECK_NEAR(count[0] / (double)N, 0.1, 0.015);
    CHECK_NEAR(count[2] / (double)N, 0.2, 0.015);
    CHECK_NEAR(count[3] / (double)N, 0.7, 0.015);
    model_data_loader_free(l);
}

/* One source, 3 shards (40, 25, 60 tokens): the stream is each epoch's shards in a shuffled order,
 * and sequences continue across shards and epochs. */
static void test_epoch_wrap(void) {
    model_data_source src = {src_dir[0], 1};
    const int T = 9;
    xd_err e;
    model_data_loader *l;
    int rc = model_data_loader_open(&src, 1, MODEL_DATA_TRAIN, T, 5, &l, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    const int total = 125, epochs = 8;
    static int stream[125 * 8 + 64];
    int len = 0, in[9], tg[9];
    while (len < total * epochs) {
        CHECK(model_data_next(l, in, tg, NULL, &e) == 0);
        if (len == 0) stream[len++] = in[0];
        CHECK(in[0] == stream[len - 1]); /* one token of overlap between sequences */
        for (int t = 0; t < T; t++) stream[len++] = tg[t];
    }
    model_data_state st;
    model_data_loader_state(l, &st);
    CHECK(st.cursor[0].epoch == (uint64_t)(len - 1) / total);
    int orders_seen = 0, first_order[3] = {0};
    for (int ep = 0; ep < epochs; ep++) {
        const int *p = stream + ep * total;
        int order[3], at = 0;
        bool ok = true;
        for (int k = 0; k < 3 && ok; k++) {
            int shard = (p[at] - 1000) / 100; /* tag 1: 1000 + 100*shard + j */
            static const int sizes[] = {40, 25, 60};
            ok = shard >= 0 && shard < 3;
            for (int j = 0; ok && j < sizes[shard]; j++) ok = p[at + j] == 1000 + 100 * shard + j;
            if (ok) at += sizes[shard];
            order[k] = shard;
        }
        CHECK_MSG(ok && at == total && order[0] != order[1] && order[1] != order[2] && order[0] != order[2],
                  "epoch %d is not the 3 shards in some order", ep);
        if (ep == 0) memcpy(first_order, order, sizeof order);
        else if (memcmp(order, first_order, sizeof order)) orders_seen++;
    }
    CHECK_MSG(orders_seen > 0, "every epoch had the same shard order");
    model_data_loader_free(l);
}

static void test_val_pass(void) {
    /* s0 has 17 val tokens, s1 none, s2 9: T = 5 → s0: 4 sequences (last with 1 target), s2: 2 */
    model_data_source src[] = {{src_dir[0], 0}, {src_dir[1], 0}, {src_dir[2], 0}};
    const int T = 5;
    xd_err e;
    model_data_loader *l;
    int rc = model_data_loader_open(src, 3, MODEL_DATA_VAL, T, 0, &l, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc) return;
    static draw got[16];
    int n = 0;
    while (n < 16 && (rc = model_data_next(l, got[n].in, got[n].tg, &got[n].src, &e)) == 0) n++;
    CHECK(rc == 1 && n == 6);
    CHECK(model_data_next(l, got[15].in, got[15].tg, NULL, &e) == 1);
    int want_src[] = {0, 0, 0, 0, 2, 2};
    for (int i = 0; i < n && i < 6; i++) CHECK(got[i].src == want_src[i]);
    /* targets cover each source's val stream after its first token, once, in order */
    int pos[3] = {1, 0, 1};
    for (int i = 0; i < n; i++) {
        int k = got[i].src, tag = k + 1;
        for (int t = 0; t < T; t++) {
            if (got[i].tg[t] == -1) {
                CHECK(got[i].in[t] == 69999 || (t > 0 && got[i].tg[t - 1] == got[i].in[t])); /* EOS pad */
                continue;
            }
            CHECK(got[i].tg[t] == 1000 * tag + 900 + pos[k]);
            CHECK(got[i].in[t] == 1000 * tag + 900 + pos[k] - 1);
            pos[k]++;
        }
    }
    CHECK(pos[0] == 17 && pos[2] == 9);
    CHECK(got[3].tg[0] == 1000 + 916 && got[3].tg[1] == -1 && got[3].in[2] == 69999);
    /* resume in the middle of the pass */
    model_data_loader_reset(l);
    static draw again[8];
    CHECK(draw_n(l, again, 3, T, &e) == 0);
    model_data_state st;
    model_data_loader_state(l, &st);
    model_data_loader *b;
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_VAL, T, 0, &b, &e) == 0);
    rc = model_data_loader_restore(b, &st, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(draw_n(b, again + 3, 3, T, &e) == 0);
    CHECK(same_draws(got, again, 6));
    CHECK(model_data_next(b, again[7].in, again[7].tg, NULL, &e) == 1);
    model_data_loader_free(b);
    CHECK(model_data_loader_open(src, 3, MODEL_DATA_TRAIN, T, 0, &b, &e) < 0); /* weights all 0 */
    CHECK_ERR_CONTAINS(-1, e, "weights sum to 0");
    model_data_loader_free(l);
    model_data_source none[] = {{src_dir[1], 1}, {src_dir[3], 1}};
    rc = model_data_loader_open(none, 2, MODEL_DATA_VAL, T, 0, &l, &e);
    CHECK_ERR_CONTAINS(rc, e, "no validation tokens in any of the 2 source(s)");
}

static void test_loader_errors(void) {
    xd_err e;
    model_data_loader *l;
    model_data_source neg[] = {{src_dir[0], 1}, {src_dir[1], -1}};
    int rc = model_data_loader_open(neg, 2, MODEL_DATA_TRAIN, 4, 0, &l, &e);
    CHECK_ERR_CONTAINS(rc, e, "source 1 (");
    CHECK(strstr(e.msg, "s1): weight -1 must be finite and at least 0") != NULL);
    model_data_source small[] = {{src_dir[0], 1}, {src_dir[3], 0.5}};
    rc = model_data_loader_open(small, 2, MODEL_DATA_TRAIN, 4, 0, &l, &e);
    CHECK_ERR_CONTAINS(rc, e, "s3): 3 train tokens, fewer than one sequence of 5 (T+1)");
    model_data_source missing[] = {{src_dir[0], 1}, {"/nonexistent/shards", 1}};
    rc = model_data_loader_open(missing, 2, MODEL_DATA_TRAIN, 4, 0, &l, &e);
    CHECK_ERR_CONTAINS(rc, e, "source 1: /nonexistent/shards: no such directory");
    rc = model_data_loader_open(missing, 1, MODEL_DATA_TRAIN, 0, 0, &l, &e);
    CHECK_ERR_CONTAINS(rc, e, "sequence length 0 is outside");
    /* sources must share the tokenizer */
    char other[512];
    sub(other, sizeof other, "other");
    int ids[10] = {0};
    size_t n[] = {10};
    CHECK(write_dir(other, 500, 100, ids, n, 1, NULL, true, &e) == 0);
    model_data_source mixed[] = {{src_dir[0], 1}, {other, 1}};
    rc = model_data_loader_open(mixed, 2, MODEL_DATA_TRAIN, 4, 0, &l, &e);
    CHECK_ERR_CONTAINS(rc, e, "the sources must share a tokenizer");
}

int main(void) {
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 1;
    }
    test_writer();
    test_malformed();
    make_sources();
    test_loader_determinism_and_resume();
    test_mixture_proportions();
    test_epoch_wrap();
    test_val_pass();
    test_loader_errors();
    rm_rf(base);
    TEST_MAIN_END();
}
