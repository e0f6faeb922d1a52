/* model/tokenizer_hf.c — loading a Hugging Face tokenizer.json (+ tokenizer_config.json): BPE
 * models only, with the pre-tokenizer / normalizer structures of GPT-2, SmolLM2, Llama-3, Qwen2
 * (byte-level) and Llama-2 (SentencePiece-style with byte fallback). */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HF_MAX_JSON_BYTES ((size_t)512 << 20)

/* What the normalizer and pre_tokenizer add up to. */
typedef struct hf_shape {
    bool byte_level;
    tok_pre pre;
    bool nfc;
    bool spm_replace; /* " " → "▁" */
    tok_prefix prefix;
    bool metaspace, metaspace_split;
} hf_shape;

static const char *type_of(json_t *o) {
    json_t *v = json_object_get(o, "type");
    return json_is_string(v) ? json_string_value(v) : "";
}

static bool bool_field(json_t *o, const char *key, bool dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static bool str_is(json_t *v, const char *s) {
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

static int parse_byte_level(json_t *p, bool want_regex, xd_err *e) {
    if (bool_field(p, "add_prefix_space", false))
        return xd_fail(e, "pre_tokenizer: ByteLevel add_prefix_space=true is not supported");
    if (bool_field(p, "use_regex", true) != want_regex)
        return xd_fail(e, "pre_tokenizer: ByteLevel use_regex=%s is not supported here",
                       want_regex ? "false" : "true");
    return 0;
}

static int parse_metaspace(json_t *p, hf_shape *sh, xd_err *e) {
    json_t *rep = json_object_get(p, "replacement");
    if (rep && !str_is(rep, SPM_SPACE))
        return xd_fail(e, "pre_tokenizer: Metaspace replacement other than \"\xe2\x96\x81\" is not "
                          "supported");
    sh->spm_replace = true;
    sh->metaspace = true;
    sh->metaspace_split = bool_field(p, "split", true);
    json_t *scheme = json_object_get(p, "prepend_scheme");
    if (json_is_string(scheme)) {
        const char *s = json_string_value(scheme);
        if (!strcmp(s, "always"))
            sh->prefix = TOK_PREFIX_ALWAYS;
        else if (!strcmp(s, "first"))
            sh->prefix = TOK_PREFIX_FIRST;
        else if (!strcmp(s, "never"))
            sh->prefix = TOK_PREFIX_NONE;
        else
            return xd_fail(e, "pre_tokenizer: Metaspace prepend_scheme \"%s\" is unknown", s);
    } else {
        sh->prefix = bool_field(p, "add_prefix_space", true) ? TOK_PREFIX_ALWAYS : TOK_PREFIX_NONE;
    }
    return 0;
}

static int parse_split(json_t *p, hf_shape *sh, xd_err *e) {
    json_t *pat = json_object_get(p, "pattern");
    json_t *re = json_object_get(pat, "Regex");
    if (!json_is_string(re))
        return xd_fail(e, "pre_tokenizer: Split needs a {\"Regex\": ...} pattern");
    const char *r = json_string_value(re);
    if (!strcmp(r, PAT_GPT2))
        sh->pre = TOK_PRE_GPT2;
    else if (!strcmp(r, PAT_LLAMA3))
        sh->pre = TOK_PRE_LLAMA3;
    else if (!strcmp(r, PAT_QWEN2))
        sh->pre = TOK_PRE_QWEN2;
    else
        return xd_fail(e,
                       "pre_tokenizer: Split pattern \"%.300s\" is not a known one (GPT-2, "
                       "Llama-3, Qwen2)",
                       r);
    json_t *beh = json_object_get(p, "behavior");
    if (beh && !str_is(beh, "Isolated"))
        return xd_fail(e, "pre_tokenizer: Split behavior other than Isolated is not supported");
    if (bool_field(p, "invert", false))
        return xd_fail(e, "pre_tokenizer: Split invert=true is not supported");
    return 0;
}

static int parse_pre_tokenizer(json_t *p, hf_shape *sh, xd_err *e) {
    if (!p || json_is_null(p)) return 0;
    if (!json_is_object(p)) return xd_fail(e, "pre_tokenizer is not an object");
    const char *type = type_of(p);
    if (!strcmp(type, "ByteLevel")) {
        if (parse_byte_level(p, true, e) < 0) return -1;
        sh->byte_level = true;
        sh->pre = TOK_PRE_GPT2;
        return 0;
    }
    if (!strcmp(type, "Metaspace")) return parse_metaspace(p, sh, e);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        size_t n = json_array_size(list);
        json_t *a = json_array_get(list, 0), *b = json_array_get(list, 1);
        if (n == 2 && !strcmp(type_of(a), "Digits") && !strcmp(type_of(b), "ByteLevel")) {
            if (!bool_field(a, "individual_digits", false))
                return xd_fail(e, "pre_tokenizer: Digits individual_digits=false is not supported");
            if (parse_byte_level(b, true, e) < 0) return -1;
            sh->byte_level = true;
            sh->pre = TOK_PRE_SMOLLM;
            return 0;
        }
        if (n == 2 && !strcmp(type_of(a), "Split") && !strcmp(type_of(b), "ByteLevel")) {
            if (parse_split(a, sh, e) < 0) return -1;
            if (parse_byte_level(b, false, e) < 0) return -1;
            sh->byte_level = true;
            return 0;
        }
        if (n == 1 && !strcmp(type_of(a), "Metaspace")) return parse_metaspace(a, sh, e);
        if (n == 1) return parse_pre_tokenizer(a, sh, e);
        return xd_fail(e,
                       "pre_tokenizer: a Sequence of %zu (%s, %s, ...) is not a known "
                       "structure (Split+ByteLevel, Digits+ByteLevel)",
                       n, type_of(a), type_of(b));
    }
    return xd_fail(e, "pre_tokenizer type \"%s\" is not supported", type);
}

static int parse_normalizer_one(json_t *n, hf_shape *sh, bool *prepend, xd_err *e) {
    const char *type = type_of(n);
    if (!strcmp(type, "NFC")) {
        sh->nfc = true;
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        if (!str_is(json_object_get(n, "prepend"), SPM_SPACE))
            return xd_fail(e,
                           "normalizer: Prepend of anything but \"\xe2\x96\x81\" is not supported");
        *prepend = true;
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        json_t *pat = json_object_get(json_object_get(n, "pattern"), "String");
        if (!str_is(pat, " ") || !str_is(json_object_get(n, "content"), SPM_SPACE))
            return xd_fail(e, "normalizer: only Replace \" \" with \"\xe2\x96\x81\" is supported");
        sh->spm_replace = true;
        return 0;
    }
    return xd_fail(e, "normalizer type \"%s\" is not supported", type);
}

static int parse_normalizer(json_t *n, hf_shape *sh, xd_err *e) {
    if (!n || json_is_null(n)) return 0;
    if (!json_is_object(n)) return xd_fail(e, "normalizer is not an object");
    bool prepend = false;
    if (!strcmp(type_of(n), "Sequence")) {
        json_t *list = json_object_get(n, "normalizers"), *v;
        size_t i;
        json_array_foreach(list, i, v) {
            if (parse_normalizer_one(v, sh, &prepend, e) < 0) return -1;
        }
    } else if (parse_normalizer_one(n, sh, &prepend, e) < 0) {
        return -1;
    }
    if (prepend && !sh->spm_replace)
        return xd_fail(e, "normalizer: Prepend \"\xe2\x96\x81\" without Replace \" \" is not "
                          "supported");
    if (prepend) sh->prefix = TOK_PREFIX_ALWAYS;
    return 0;
}

/* A special token named in tokenizer_config.json: a string, or {"content": ...}. */
static const char *token_name(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    json_t *c = json_object_get(v, "content");
    return json_is_string(c) ? json_string_value(c) : NULL;
}

/* BOS from a TemplateProcessing post-processor that starts "single" with a special token
 * (Llama-2, Llama-3). */
static void post_processor_bos(json_t *pp, const char **bos) {
    if (!json_is_object(pp)) return;
    if (!strcmp(type_of(pp), "Sequence")) {
        json_t *v;
        size_t i;
        json_array_foreach(json_object_get(pp, "processors"), i, v) post_processor_bos(v, bos);
        return;
    }
    if (strcmp(type_of(pp), "TemplateProcessing") != 0) return;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    json_t *id = json_object_get(json_object_get(first, "SpecialToken"), "id");
    if (json_is_string(id)) *bos = json_string_value(id);
}

static int load_vocab(model_tokenizer **out, json_t *model, json_t *added, bool byte_fallback,
                      xd_err *e) {
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return xd_fail(e, "model.vocab is not an object");
    long long max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v))
            return xd_fail(e, "model.vocab: the id of \"%.100s\" is not an integer", key);
        long long id = json_integer_value(v);
        if (id < 0 || id >= TOK_MAX_VOCAB)
            return xd_fail(e, "model.vocab: token \"%.100s\" has id %lld, out of range", key, id);
        if (id > max_id) max_id = id;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id))
            return xd_fail(e, "added_tokens[%zu]: id is missing or not an integer", i);
        long long x = json_integer_value(id);
        if (x < 0 || x >= TOK_MAX_VOCAB)
            return xd_fail(e, "added_tokens[%zu]: id %lld is out of range", i, x);
        if (!json_is_string(json_object_get(v, "content")))
            return xd_fail(e, "added_tokens[%zu]: content is missing or not a string", i);
        if (x > max_id) max_id = x;
    }
    model_tokenizer *t;
    if (tok_create((int)(max_id + 1), &t, e) < 0) return -1;
    *out = t;
    json_object_foreach(vocab, key, v) {
        size_t len = strlen(key);
        int kind = TOK_NORMAL;
        if (byte_fallback && len == 6 && !strncmp(key, "<0x", 3) && key[5] == '>') kind = TOK_BYTE;
        if (tok_set(t, (int)json_integer_value(v), key, len, kind, 0, e) < 0)
            return xd_wrap(e, "model.vocab");
    }
    json_array_foreach(added, i, v) {
        json_t *c = json_object_get(v, "content");
        int id = (int)json_integer_value(json_object_get(v, "id"));
        int kind = bool_field(v, "special", false) ? TOK_CONTROL : TOK_USER;
        if (tok_set(t, id, json_string_value(c), json_string_length(c), kind, 0, e) < 0)
            return xd_wrap(e, "added_tokens[%zu]", i);
        t->tok[id].flags = (uint8_t)((bool_field(v, "lstrip", false) ? TOK_F_LSTRIP : 0) |
                                     (bool_field(v, "rstrip", false) ? TOK_F_RSTRIP : 0));
    }
    return 0;
}

static int load_merges(model_tokenizer *t, json_t *merges, xd_err *e) {
    if (!json_is_array(merges)) return xd_fail(e, "model.merges is not an array");
    if (tok_reserve_merges(t, json_array_size(merges), e) < 0) return -1;
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *a, *b;
        size_t alen, blen;
        if (json_is_string(m)) {
            /* "a b": tokens of byte-level vocabularies never hold a space */
            a = json_string_value(m);
            const char *sp = strchr(a + (a[0] ? 1 : 0), ' ');
            if (!sp) return xd_fail(e, "merge %zu (\"%.100s\") is not \"a b\"", i, a);
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = json_string_length(m) - alen - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            alen = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            blen = json_string_length(json_array_get(m, 1));
        } else {
            return xd_fail(e, "merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
        }
        if (i > (size_t)TOK_MAX_VOCAB * 4) return xd_fail(e, "too many merges");
        if (tok_add_merge(t, (int)i, a, alen, b, blen, e) < 0) return -1;
    }
    return 0;
}

static int lookup_named(model_tokenizer *t, const char *what, const char *name, int *out,
                        xd_err *e) {
    int id = tok_lookup(t, name, strlen(name));
    if (id < 0) return xd_fail(e, "%s \"%.100s\" is not in the vocabulary", what, name);
    *out = id;
    return 0;
}

static int load_from_json(json_t *root, model_tokenizer **out, xd_err *e) {
    *out = NULL;
    if (!json_is_object(root)) return xd_fail(e, "the top level is not an object");
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return xd_fail(e, "no \"model\" object");
    json_t *mtype = json_object_get(model, "type");
    if (mtype && !str_is(mtype, "BPE"))
        return xd_fail(e, "model type \"%s\" is not supported (only BPE)",
                       json_is_string(mtype) ? json_string_value(mtype) : "?");
    json_t *cs = json_object_get(model, "continuing_subword_prefix");
    json_t *ew = json_object_get(model, "end_of_word_suffix");
    if ((json_is_string(cs) && json_string_length(cs)) ||
        (json_is_string(ew) && json_string_length(ew)))
        return xd_fail(e,
                       "model: continuing_subword_prefix / end_of_word_suffix are not supported");
    json_t *drop = json_object_get(model, "dropout");
    if (json_is_number(drop) && json_number_value(drop) > 0)
        return xd_fail(e, "model: BPE dropout is not supported");
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return xd_fail(e, "added_tokens is not an array");
    hf_shape sh = {0};
    sh.pre = TOK_PRE_NONE;
    if (parse_normalizer(json_object_get(root, "normalizer"), &sh, e) < 0) return -1;
    if (parse_pre_tokenizer(json_object_get(root, "pre_tokenizer"), &sh, e) < 0) return -1;
    if (sh.byte_level && sh.spm_replace)
        return xd_fail(e, "a ByteLevel pre-tokenizer together with \"\xe2\x96\x81\" replacement is "
                          "not a known structure");
    if (!sh.byte_level && !sh.spm_replace)
        return xd_fail(e, "neither a ByteLevel pre-tokenizer nor a SentencePiece-style "
                          "normalizer / Metaspace: unsupported tokenizer structure");
    bool byte_fallback = bool_field(model, "byte_fallback", false);
    model_tokenizer *t = NULL;
    int rc = load_vocab(&t, model, added, byte_fallback && !sh.byte_level, e);
    if (rc == 0) {
        t->algo = sh.byte_level ? TOK_ALGO_BYTE_BPE : TOK_ALGO_SPM;
        t->pre = sh.pre;
        t->nfc = sh.nfc;
        t->prefix = sh.prefix;
        t->metaspace = sh.metaspace;
        t->metaspace_split = sh.metaspace_split;
        t->strip_leading_space = !sh.byte_level && sh.prefix != TOK_PREFIX_NONE;
        t->byte_fallback = byte_fallback;
        t->fuse_unk = bool_field(model, "fuse_unk", false);
        t->ignore_merges = bool_field(model, "ignore_merges", false);
        rc = tok_finish_vocab(t, e);
    }
    if (rc == 0) rc = load_merges(t, json_object_get(model, "merges"), e);
    json_t *unk = json_object_get(model, "unk_token");
    if (rc == 0 && json_is_string(unk))
        rc = lookup_named(t, "model.unk_token", json_string_value(unk), &t->unk, e);
    if (rc == 0) {
        const char *bos = NULL;
        post_processor_bos(json_object_get(root, "post_processor"), &bos);
        if (bos) {
            rc = lookup_named(t, "post_processor's first special token", bos, &t->bos, e);
            t->add_bos = true;
        }
    }
    if (rc < 0) {
        model_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

static int apply_config(model_tokenizer *t, json_t *cfg, xd_err *e) {
    if (!json_is_object(cfg)) return xd_fail(e, "the top level is not an object");
    json_t *v = json_object_get(cfg, "bos_token");
    if (v && !json_is_null(v)) {
        const char *s = token_name(v);
        if (!s) return xd_fail(e, "bos_token is neither a string nor {\"content\": ...}");
        if (lookup_named(t, "bos_token", s, &t->bos, e) < 0) return -1;
    } else if (v) {
        t->bos = -1;
        t->add_bos = false;
    }
    v = json_object_get(cfg, "eos_token");
    if (v && !json_is_null(v)) {
        const char *s = token_name(v);
        if (!s) return xd_fail(e, "eos_token is neither a string nor {\"content\": ...}");
        if (lookup_named(t, "eos_token", s, &t->eos, e) < 0) return -1;
    }
    v = json_object_get(cfg, "add_bos_token");
    if (json_is_boolean(v)) t->add_bos = json_is_true(v);
    if (t->add_bos && t->bos < 0)
        return xd_fail(e, "add_bos_token is true but there is no bos_token");
    v = json_object_get(cfg, "chat_template");
    const char *tmpl = NULL;
    if (json_is_string(v)) {
        tmpl = json_string_value(v);
    } else if (json_is_array(v)) {
        /* [{"name": "default", "template": ...}, ...] */
        json_t *x;
        size_t i;
        json_array_foreach(v, i, x) {
            json_t *tt = json_object_get(x, "template");
            if (!json_is_string(tt)) continue;
            if (!tmpl || str_is(json_object_get(x, "name"), "default"))
                tmpl = json_string_value(tt);
        }
    }
    if (tmpl) {
        t->chat_template = strdup(tmpl);
        if (!t->chat_template) return xd_fail(e, "out of memory");
        t->default_system = tok_chat_default_system(tmpl);
    }
    return 0;
}

static int read_json(const char *path, json_t **out, xd_err *e) {
    char *buf;
    size_t len;
    *out = NULL;
    if (xd_read_file(path, HF_MAX_JSON_BYTES, &buf, &len, e) < 0) return -1;
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je);
    free(buf);
    if (!root)
        return xd_fail(e, "%s: not valid JSON: %s (line %d, column %d)", path, je.text, je.line,
                       je.column);
    *out = root;
    return 0;
}

int model_tokenizer_load_hf_json(const char *json, size_t len, const char *name,
                                 model_tokenizer **out, xd_err *e) {
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return xd_fail(e, "%s: not valid JSON: %s (line %d, column %d)", name, je.text, je.line,
                       je.column);
    model_tokenizer *t;
    int rc = load_from_json(root, &t, e);
    json_decref(root);
    if (rc < 0) return xd_wrap(e, "%s", name);
    if (tok_finish(t, e) < 0) {
        model_tokenizer_free(t);
        return xd_wrap(e, "%s", name);
    }
    *out = t;
    return 0;
}

int model_tokenizer_load_hf(const char *dir, model_tokenizer **out, xd_err *e) {
    *out = NULL;
    char path[4096];
    if (xd_path_join(path, sizeof path, dir, "tokenizer.json", e) < 0) return -1;
    json_t *root;
    if (read_json(path, &root, e) < 0) return -1;
    model_tokenizer *t;
    int rc = load_from_json(root, &t, e);
    json_decref(root);
    if (rc < 0) return xd_wrap(e, "%s", path);
    if (xd_path_join(path, sizeof path, dir, "tokenizer_config.json", e) < 0) {
        model_tokenizer_free(t);
        return -1;
    }
    if (xd_file_exists(path)) {
        json_t *cfg;
        rc = read_json(path, &cfg, e);
        if (rc == 0) {
            rc = apply_config(t, cfg, e);
            json_decref(cfg);
            if (rc < 0) xd_wrap(e, "%s", path);
        }
        if (rc < 0) {
            model_tokenizer_free(t);
            return -1;
        }
    }
    if (tok_finish(t, e) < 0) {
        model_tokenizer_free(t);
        return xd_wrap(e, "%s", dir);
    }
    *out = t;
    return 0;
}
