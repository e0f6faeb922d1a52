/* xtrain prepare: a corpus (text files, .jsonl, directories) tokenised into token shards, split into
 * train and val deterministically; --inspect checks and shows a shard directory. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "args.h"
#include "stages.h"
#include "model/data.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREP_LISTED_SKIPS 5 /* skipped files named one by one; the rest are only counted */

typedef struct prep_dir_id {
    dev_t dev;
    ino_t ino;
} prep_dir_id;

typedef struct prep_counts {
    uint64_t documents, tokens, skipped;
} prep_counts;

typedef struct prep {
    const model_tokenizer *tok;
    model_data_writer *w;
    const char *field;
    double val_fraction;
    uint64_t seed;
    bool add_bos;
    int eos;
    prep_counts n;            /* documents written, their tokens, documents skipped */
    uint64_t binary, empty, other; /* why documents were skipped */
    uint64_t bytes;
    prep_dir_id out;          /* the output directory: never read as input */
    prep_dir_id *visited;     /* directories entered: a symlink back to one is a loop */
    size_t n_visited, cap_visited;
    bool tty;
    double t0, last_report;
} prep;

static void prep_progress(prep *p, bool done) {
    if (!p->tty) return;
    double now = xd_now();
    if (!done && now - p->last_report < 0.5) return;
    p->last_report = now;
    double mb = p->bytes / 1e6, secs = now - p->t0;
    fprintf(stderr, "\r[prepare] %llu documents  %llu tokens  %.1f MB  %.2f MB/s   ",
            (unsigned long long)p->n.documents, (unsigned long long)p->n.tokens, mb,
            secs > 0 ? mb / secs : 0.0);
    if (done) fprintf(stderr, "\r%78s\r", "");
}

static void prep_skip(prep *p, uint64_t *reason, const char *path, const char *why) {
    (*reason)++;
    p->n.skipped++;
    uint64_t listed = p->binary + p->empty + p->other;
    if (listed <= PREP_LISTED_SKIPS) {
        if (p->tty) fprintf(stderr, "\r%78s\r", "");
        xd_info("prepare: skipped %s (%s)%s", path, why,
                listed == PREP_LISTED_SKIPS ? "; further skips are only counted" : "");
    }
}

/* Text is UTF-8 without NUL bytes: anything else is taken for a binary file. */
static bool prep_is_text(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (len == 0 || c > 0xf4 || i + len > n) return false;
        uint32_t cp = c & (0x3f >> (len - 1));
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        /* overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 */
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return false;
        i += len;
    }
    return true;
}

/* Train or val from a hash of (seed, the document's name, its line): the same corpus and seed give
 * the same split wherever and in whatever order it is read. */
static bool prep_is_val(const prep *p, const char *key, uint64_t index) {
    if (p->val_fraction <= 0) return false;
    uint8_t b[8], d[32];
    xd_sha256_ctx c;
    xd_sha256_init(&c);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(p->seed >> (8 * i));
    xd_sha256_update(&c, b, 8);
    xd_sha256_update(&c, key, strlen(key) + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(index >> (8 * i));
    xd_sha256_update(&c, b, 8);
    xd_sha256_final(&c, d);
    uint64_t h = 0;
    for (int i = 0; i < 8; i++) h = h << 8 | d[i];
    return (double)(h >> 11) * 0x1.0p-53 < p->val_fraction;
}

static int prep_document(prep *p, const char *text, size_t len, const char *key, uint64_t index,
                         bool parse_special, const char *where, xd_err *e) {
    if (len == 0) {
        prep_skip(p, &p->empty, where, "empty");
        return 0;
    }
    int *ids;
    size_t n;
    if (model_tokenizer_encode(p->tok, text, len, p->add_bos, parse_special, &ids, &n, e))
        return xd_wrap(e, "%s", where);
    if (n == 0 || (n == 1 && p->add_bos)) {
        free(ids);
        prep_skip(p, &p->empty, where, "no tokens");
        return 0;
    }
    int *grown = realloc(ids, sizeof(int) * (n + 1));
    if (!grown) {
        free(ids);
        return xd_fail(e, "out of memory");
    }
    ids = grown;
    ids[n++] = p->eos; /* documents are separated by EOS */
    model_data_split split = prep_is_val(p, key, index) ? MODEL_DATA_VAL : MODEL_DATA_TRAIN;
    int rc = model_data_writer_add(p->w, split, ids, n, e);
    free(ids);
    if (rc) return rc;
    p->n.documents++;
    p->n.tokens += n;
    prep_progress(p, false);
    return 0;
}

/* A chat: "messages" = [{"role", "content"}, ...], rendered with the tokenizer's template. */
static int prep_chat(prep *p, json_t *msgs, const char *key, uint64_t line, const char *where, xd_err *e) {
    size_t n = json_array_size(msgs);
    if (n == 0) {
        prep_skip(p, &p->empty, where, "empty \"messages\"");
        return 0;
    }
    model_chat_message *m = xd_calloc(n, sizeof *m, e);
    if (!m) return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(msgs, i);
        m[i].role = json_string_value(json_object_get(it, "role"));
        m[i].content = json_string_value(json_object_get(it, "content"));
        if (!m[i].role || !m[i].content) {
            free(m);
            return xd_fail(e, "%s: messages[%zu] needs string \"role\" and \"content\"", where, i);
        }
    }
    char *text;
    int rc = model_chat_render(p->tok, m, n, false, &text, e);
    free(m);
    if (rc) return xd_wrap(e, "%s", where);
    /* the template's markers (<|im_start|>, <|im_end|>) are special tokens */
    rc = prep_document(p, text, strlen(text), key, line, true, where, e);
    free(text);
    return rc;
}

static int prep_jsonl(prep *p, const char *path, const char *data, size_t size, const char *key, xd_err *e) {
    uint64_t line = 0;
    char where[4200];
    const char *s = data, *end = data + size;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *stop = nl ? nl : end;
        size_t len = (size_t)(stop - s);
        line++;
        if (len && s[len - 1] == '\r') len--;
        size_t k = 0;
        while (k < len && (s[k] == ' ' || s[k] == '\t')) k++;
        snprintf(where, sizeof where, "%s:%llu", path, (unsigned long long)line);
        if (k < len) {
            json_error_t jerr;
            json_t *o = json_loadb(s, len, 0, &jerr);
            int rc = 0;
            if (!o) {
                rc = xd_fail(e, "%s: invalid JSON (column %d: %s)", where, jerr.column, jerr.text);
            } else if (!json_is_object(o)) {
                rc = xd_fail(e, "%s: not a JSON object (each line must be an object with \"%s\" or "
                             "\"messages\")", where, p->field);
            } else {
                json_t *text = json_object_get(o, p->field), *msgs = json_object_get(o, "messages");
                if (json_is_string(text))
                    rc = prep_document(p, json_string_value(text), json_string_length(text), key, line,
                                       false, where, e);
                else if (text)
                    rc = xd_fail(e, "%s: \"%s\" is not a string", where, p->field);
                else if (json_is_array(msgs))
                    rc = prep_chat(p, msgs, key, line, where, e);
                else
                    rc = xd_fail(e, "%s: no \"%s\" field (and no \"messages\" array)%s", where, p->field,
                                 msgs ? ": \"messages\" is not an array" : "");
            }
            json_decref(o);
            if (rc) return rc;
        }
        s = nl ? nl + 1 : end;
    }
    return 0;
}

static int prep_file(prep *p, const char *path, const char *key, xd_err *e) {
    xd_mapped_file m;
    if (xd_map_file(path, &m, e)) return -1;
    const char *text = (const char *)m.data;
    size_t len = m.size;
    int rc = 0;
    p->bytes += len;
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) { /* a byte-order mark is not text */
        text += 3;
        len -= 3;
    }
    const char *dot = strrchr(path, '.');
    if (!prep_is_text((const uint8_t *)text, len))
        prep_skip(p, &p->binary, path, "binary: a NUL byte or not UTF-8");
    else if (dot && !strcasecmp(dot, ".jsonl"))
        rc = prep_jsonl(p, path, text, len, key, e);
    else
        rc = prep_document(p, text, len, key, 0, false, path, e);
    xd_unmap_file(&m);
    return rc;
}

static int prep_name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Enters a directory once: false when it was entered before (a symlink loop, or a second link). */
static int prep_enter(prep *p, const struct stat *st, bool *fresh, xd_err *e) {
    for (size_t i = 0; i < p->n_visited; i++)
        if (p->visited[i].dev == st->st_dev && p->visited[i].ino == st->st_ino) {
            *fresh = false;
            return 0;
        }
    if (p->n_visited == p->cap_visited) {
        size_t cap = p->cap_visited ? 2 * p->cap_visited : 64;
        prep_dir_id *v = realloc(p->visited, cap * sizeof *v);
        if (!v) return xd_fail(e, "out of memory");
        p->visited = v;
        p->cap_visited = cap;
    }
    p->visited[p->n_visited++] = (prep_dir_id){st->st_dev, st->st_ino};
    *fresh = true;
    return 0;
}

static int prep_path(prep *p, const char *path, const char *key, bool top, xd_err *e);

/* Entries in sorted order (byte order of names), hidden ones left out. */
static int prep_walk(prep *p, const char *dir, const char *key, xd_err *e) {
    DIR *d = opendir(dir);
    if (!d) return xd_fail(e, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **g = realloc(names, cap * sizeof *g);
            if (!g) {
                rc = xd_fail(e, "out of memory");
                break;
            }
            names = g;
        }
        if (!(names[n] = strdup(de->d_name))) rc = xd_fail(e, "out of memory");
        else n++;
    }
    closedir(d);
    if (rc == 0) qsort(names, n, sizeof *names, prep_name_cmp);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char child[4096], child_key[4096];
        rc = xd_path_join(child, sizeof child, dir, names[i], e);
        if (rc == 0) rc = xd_path_join(child_key, sizeof child_key, key, names[i], e);
        if (rc == 0) rc = prep_path(p, child, child_key, false, e);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

static int prep_path(prep *p, const char *path, const char *key, bool top, xd_err *e) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (top) return xd_fail(e, "%s: %s", path, strerror(errno));
        prep_skip(p, &p->other, path, "a dangling link");
        return 0;
    }
    if (S_ISDIR(st.st_mode)) {
        if (st.st_dev == p->out.dev && st.st_ino == p->out.ino) {
            xd_info("prepare: %s is the output directory: not read", path);
            return 0;
        }
        bool fresh;
        if (prep_enter(p, &st, &fresh, e)) return -1;
        if (!fresh) {
            xd_warn("prepare: %s: a directory already read (a symlink loop?): not read again", path);
            return 0;
        }
        return prep_walk(p, path, key, e);
    }
    if (!S_ISREG(st.st_mode)) {
        if (top) return xd_fail(e, "%s: not a regular file or directory", path);
        prep_skip(p, &p->other, path, "not a regular file");
        return 0;
    }
    return prep_file(p, path, key, e);
}

/* An input's documents are named from its own last component on ("corpus/a/b.txt", "chat.jsonl"),
 * so the split does not depend on where the corpus lies or how it is named on the command line. */
static int prep_input(prep *p, const char *arg, json_t *inputs, xd_err *e) {
    char abs[PATH_MAX];
    if (!realpath(arg, abs)) return xd_fail(e, "%s: %s", arg, strerror(errno));
    const char *slash = strrchr(abs, '/');
    const char *key = slash && slash[1] ? slash + 1 : abs;
    prep_counts before = p->n;
    if (prep_path(p, arg, key, true, e)) return -1;
    json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "path", arg, "documents",
                          (json_int_t)(p->n.documents - before.documents), "tokens",
                          (json_int_t)(p->n.tokens - before.tokens), "skipped",
                          (json_int_t)(p->n.skipped - before.skipped));
    if (!o || json_array_append_new(inputs, o)) return xd_fail(e, "out of memory");
    return 0;
}

/* ---- --inspect ---- */

static int prep_inspect(const char *dir, const char *tok_path, int decode) {
    model_data_dir d;
    xd_err e = {{0}};
    if (model_data_open(dir, &d, &e)) {
        fprintf(stderr, "xtrain prepare: %s\n", e.msg);
        return 1;
    }
    printf("%s: xdistill-shards v%d, domain %s\n", dir, MODEL_DATA_VERSION, d.domain[0] ? d.domain : "null");
    printf("tokenizer %s (vocab %d, eos %d)\n", d.tokenizer_source, d.vocab, d.eos);
    for (int s = 0; s < 2; s++)
        printf("%-5s %zu shard(s), %llu tokens, %llu documents\n", model_data_split_name((model_data_split)s),
               d.n_shards[s], (unsigned long long)d.tokens[s], (unsigned long long)d.documents[s]);
    printf("skipped %llu documents\n", (unsigned long long)d.skipped);
    int rc = model_data_verify(&d, &e);
    if (rc == 0) printf("verified: the sha256 and ids of %zu shard(s)\n", d.n_shards[0] + d.n_shards[1]);
    int s = d.n_shards[0] ? 0 : 1;
    if (rc == 0 && decode > 0 && d.n_shards[s]) {
        const model_data_shard *sh = &d.shards[s][0];
        size_t n = sh->tokens < (uint64_t)decode ? (size_t)sh->tokens : (size_t)decode;
        int *ids = xd_malloc(sizeof(int) * (n ? n : 1), &e);
        model_tokenizer *tok = NULL;
        char *text = NULL;
        if (!ids) rc = -1;
        if (rc == 0) rc = model_data_read(&d, (model_data_split)s, 0, 0, n, ids, &e);
        if (rc == 0) rc = model_data_tokenizer_load(tok_path ? tok_path : d.tokenizer_source, &tok, &e);
        if (rc == 0 && model_tokenizer_vocab_size(tok) != d.vocab)
            rc = xd_fail(&e, "the tokenizer has %d tokens, the shards %d", model_tokenizer_vocab_size(tok), d.vocab);
        if (rc == 0) rc = model_tokenizer_decode(tok, ids, n, false, &text, NULL, &e);
        if (rc == 0) {
            printf("--- the first %zu tokens of %s ---\nids:", n, sh->file);
            for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
            printf("\n%s\n", text);
        }
        free(text);
        free(ids);
        model_tokenizer_free(tok);
    }
    model_data_close(&d);
    if (rc) fprintf(stderr, "xtrain prepare: %s\n", e.msg);
    return rc ? 1 : 0;
}

/* Positional INPUTs are taken out of argv before the flags are parsed; "--" ends the flags. */
static int prep_split_args(const arg_spec *specs, int n_specs, int argc, char **argv, char **flags,
                           int *n_flags, const char **inputs, int *n_inputs) {
    bool only_inputs = false;
    *n_flags = *n_inputs = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_inputs || a[0] != '-' || !a[1]) {
            inputs[(*n_inputs)++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_inputs = true;
            continue;
        }
        flags[(*n_flags)++] = argv[i];
        bool takes_value = false;
        for (int k = 0; k < n_specs; k++)
            if (!strcmp(specs[k].name, a) && specs[k].kind != ARG_FLAG) takes_value = true;
        if (takes_value && i + 1 < argc) flags[(*n_flags)++] = argv[++i];
    }
    return 0;
}

int stage_prepare(int argc, char **argv) {
    const char *tok_path = NULL, *out = NULL, *field = "text", *domain = NULL, *inspect = NULL;
    double val_fraction = 0.01;
    int seed = 0, shard_tokens = 1 << 24, decode = 0;
    bool force = false;
    arg_spec specs[] = {
        {"--tokenizer", ARG_STRING, &tok_path, "the model whose tokenizer is used (HF directory or .gguf)", false},
        {"--out", ARG_STRING, &out, "directory for the shards and manifest.json", false},
        {"--val-fraction", ARG_DOUBLE, &val_fraction, "share of documents in val, in [0, 1) (default 0.01)", false},
        {"--seed", ARG_INT, &seed, "seed of the train/val assignment (default 0)", false},
        {"--field", ARG_STRING, &field, ".jsonl: the text field (default \"text\")", false},
        {"--shard-tokens", ARG_INT, &shard_tokens, "most tokens per shard (default 16777216)", false},
        {"--domain", ARG_STRING, &domain, "domain name recorded in the manifest", false},
        {"--force", ARG_FLAG, &force, "replace the shards already in --out", false},
        {"--inspect", ARG_STRING, &inspect, "check a shard directory (sha256, ids) and summarise it", false},
        {"--decode", ARG_INT, &decode, "with --inspect: decode the first N tokens of the first shard", false},
    };
    int n_specs = sizeof specs / sizeof specs[0];
    const char *usage = "xtrain prepare --tokenizer MODEL --out DIR [--val-fraction F] [--seed S] "
                        "[--field NAME] [--shard-tokens N] [--domain NAME] [--force] INPUT...\n"
                        "       xtrain prepare --inspect DIR [--decode N] [--tokenizer MODEL]";
    char **flags = malloc(sizeof(char *) * (size_t)(argc + 1));
    const char **inputs = malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!flags || !inputs) {
        free(flags);
        free(inputs);
        fprintf(stderr, "xtrain prepare: out of memory\n");
        return 1;
    }
    int n_flags, n_inputs;
    prep_split_args(specs, n_specs, argc, argv, flags, &n_flags, inputs, &n_inputs);
    xd_err e = {{0}};
    int prc = args_parse(specs, n_specs, n_flags, flags, &e);
    free(flags);
    const char *bad = NULL;
    if (prc == 0) {
        if (inspect) {
            bad = n_inputs ? "--inspect takes no INPUTs" : decode < 0 ? "--decode must be at least 0" : NULL;
        } else {
            bad = !tok_path ? "--tokenizer is required" : !out ? "--out is required"
                : specs[9].set ? "--decode goes with --inspect"
                : n_inputs == 0 ? "no INPUTs: give text files, .jsonl files or directories"
                : !(val_fraction >= 0 && val_fraction < 1) ? "--val-fraction must be in [0, 1)"
                : shard_tokens < 1 ? "--shard-tokens must be at least 1"
                : !*field ? "--field must not be empty" : NULL;
        }
    }
    if (prc || bad) {
        if (prc < 0 || bad) fprintf(stderr, "xtrain prepare: %s\n", bad ? bad : e.msg);
        args_usage(usage, specs, n_specs);
        free(inputs);
        return prc > 0 ? 0 : 2;
    }
    if (inspect) {
        free(inputs);
        return prep_inspect(inspect, tok_path, decode);
    }
    /* every input must exist before anything is loaded or written */
    for (int i = 0; i < n_inputs; i++) {
        struct stat st;
        if (stat(inputs[i], &st) != 0) {
            fprintf(stderr, "xtrain prepare: %s: %s\n", inputs[i], strerror(errno));
            free(inputs);
            return 1;
        }
    }

    prep p = {0};
    p.field = field;
    p.val_fraction = val_fraction;
    p.seed = (uint64_t)(int64_t)seed;
    p.tty = isatty(STDERR_FILENO);
    p.t0 = p.last_report = xd_now();
    model_tokenizer *tok = NULL;
    json_t *in_list = json_array();
    int rc = in_list ? model_data_tokenizer_load(tok_path, &tok, &e) : xd_fail(&e, "out of memory");
    if (rc == 0) {
        p.tok = tok;
        p.eos = model_tokenizer_eos(tok);
        p.add_bos = model_tokenizer_adds_bos(tok);
        if (p.eos < 0) rc = xd_fail(&e, "%s: the tokenizer has no EOS token to separate documents", tok_path);
    }
    char abs[PATH_MAX];
    const char *source = tok_path && realpath(tok_path, abs) ? abs : tok_path;
    if (rc == 0) {
        model_data_writer_options o = {source, model_tokenizer_vocab_size(tok), p.eos, domain,
                                       (uint64_t)shard_tokens, force};
        rc = model_data_writer_open(out, &o, &p.w, &e);
    }
    struct stat out_st;
    if (rc == 0 && stat(out, &out_st) == 0) p.out = (prep_dir_id){out_st.st_dev, out_st.st_ino};
    for (int i = 0; rc == 0 && i < n_inputs; i++) rc = prep_input(&p, inputs[i], in_list, &e);
    prep_progress(&p, true);
    if (rc == 0 && p.n.tokens == 0)
        rc = xd_fail(&e, "no tokens: the inputs hold no text documents (%llu skipped); nothing written",
                     (unsigned long long)p.n.skipped);
    if (rc == 0) {
        json_t *extra = json_pack("{s:O, s:{s:I, s:f, s:s, s:I}}", "inputs", in_list, "settings", "seed",
                                  (json_int_t)seed, "val_fraction", val_fraction, "field", field,
                                  "shard_tokens", (json_int_t)shard_tokens);
        rc = extra ? model_data_writer_finish(p.w, p.n.skipped, extra, &e) : xd_fail(&e, "out of memory");
        json_decref(extra);
    }
    if (rc == 0) {
        double secs = xd_now() - p.t0;
        model_data_writer *w = p.w;
        fprintf(stderr,
                "[prepare] %s: %llu documents (train %llu, val %llu), %llu tokens (train %llu in %llu "
                "shard(s), val %llu in %llu); skipped %llu (binary %llu, empty %llu, other %llu); "
                "%.2f MB in %.2fs (%.2f MB/s)\n",
                out, (unsigned long long)p.n.documents,
                (unsigned long long)model_data_writer_documents(w, MODEL_DATA_TRAIN),
                (unsigned long long)model_data_writer_documents(w, MODEL_DATA_VAL),
                (unsigned long long)p.n.tokens, (unsigned long long)model_data_writer_tokens(w, MODEL_DATA_TRAIN),
                (unsigned long long)model_data_writer_shards(w, MODEL_DATA_TRAIN),
                (unsigned long long)model_data_writer_tokens(w, MODEL_DATA_VAL),
                (unsigned long long)model_data_writer_shards(w, MODEL_DATA_VAL),
                (unsigned long long)p.n.skipped, (unsigned long long)p.binary, (unsigned long long)p.empty,
                (unsigned long long)p.other, p.bytes / 1e6, secs, secs > 0 ? p.bytes / 1e6 / secs : 0.0);
        if (model_data_writer_tokens(w, MODEL_DATA_TRAIN) == 0)
            xd_warn("prepare: the train split is empty: every document went to val");
    } else {
        fprintf(stderr, "xtrain prepare: %s\n", e.msg);
    }
    model_data_writer_free(p.w);
    model_tokenizer_free(tok);
    json_decref(in_list);
    free(p.visited);
    free(inputs);
    return rc ? 1 : 0;
}
