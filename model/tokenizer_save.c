/* model/tokenizer_save.c — a loaded tokenizer written back as a Hugging Face tokenizer.json +
 * tokenizer_config.json, whatever it was loaded from (a GGUF teacher's metadata included), so that
 * a student directory carries its own tokenizer and HF tokenizers / transformers can read it. */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *tok_text(const model_tokenizer *t, int id) {
    return json_stringn(t->arena + t->tok[id].str_off, t->tok[id].str_len);
}

static json_t *byte_level(bool prefix_space, bool trim, bool regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", prefix_space,
                     "trim_offsets", trim, "use_regex", regex);
}

/* Token kinds tokenizer.json cannot express would load back as something else: refuse them. */
static int check_representable(const model_tokenizer *t, xd_err *e) {
    for (int id = 0; id < t->n_vocab; id++) {
        const tok_token *k = &t->tok[id];
        const char *s = t->arena + k->str_off;
        if (k->str_len == 0) return xd_fail(e, "token %d is empty", id);
        if (k->kind == TOK_UNUSED)
            return xd_fail(e, "token %d is of the unused kind, which tokenizer.json has no way to mark", id);
        int other = tok_lookup(t, s, k->str_len);
        if (other != id)
            return xd_fail(e, "tokens %d and %d have the same text, which a tokenizer.json vocabulary "
                              "cannot hold", id, other);
        /* the HF loader marks <0xNN> as byte tokens exactly when byte fallback is on */
        bool byte_form = k->str_len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>';
        bool marked = t->algo == TOK_ALGO_SPM && t->byte_fallback && byte_form;
        if ((k->kind == TOK_BYTE && !marked) || (k->kind == TOK_NORMAL && marked))
            return xd_fail(e, "token %d (%s) would not load back as a %s token", id, s,
                           k->kind == TOK_BYTE ? "byte" : "normal");
    }
    return 0;
}

static int pair_cmp(const void *a, const void *b) {
    const tok_pair *x = a, *y = b;
    if (x->pri != y->pri) return x->pri < y->pri ? -1 : 1;
    return x->merged < y->merged ? -1 : x->merged > y->merged; /* ties: any fixed order */
}

/* The merges by priority: their ranks order them as the priorities did (SentencePiece scores
 * become ranks, as HF's own conversion does). */
static json_t *merges_json(const model_tokenizer *t, xd_err *e) {
    tok_pair *p = xd_malloc((t->n_pairs ? t->n_pairs : 1) * sizeof *p, e);
    if (!p) return NULL;
    size_t n = 0;
    bool spaced = false;
    for (size_t i = 0; t->pairs && i <= t->pair_mask; i++) {
        if (t->pairs[i].key == UINT64_MAX) continue;
        p[n++] = t->pairs[i];
        int ids[2] = {(int)(t->pairs[i].key >> 32), (int)(uint32_t)t->pairs[i].key};
        for (int k = 0; k < 2; k++)
            spaced |= memchr(t->arena + t->tok[ids[k]].str_off, ' ', t->tok[ids[k]].str_len) != NULL;
    }
    qsort(p, n, sizeof *p, pair_cmp);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        int a = (int)(p[i].key >> 32), b = (int)(uint32_t)p[i].key;
        if (spaced) { /* "a b" cannot hold a token with a space: the [a, b] form (tokenizers 0.20) */
            json_array_append_new(arr, json_pack("[o, o]", tok_text(t, a), tok_text(t, b)));
        } else {
            const tok_token *x = &t->tok[a], *y = &t->tok[b];
            char *s = xd_malloc((size_t)x->str_len + y->str_len + 2, e);
            if (!s) {
                json_decref(arr);
                free(p);
                return NULL;
            }
            memcpy(s, t->arena + x->str_off, x->str_len);
            s[x->str_len] = ' ';
            memcpy(s + x->str_len + 1, t->arena + y->str_off, y->str_len);
            json_array_append_new(arr, json_stringn(s, (size_t)x->str_len + y->str_len + 1));
            free(s);
        }
    }
    free(p);
    return arr;
}

static json_t *pre_tokenizer_json(const model_tokenizer *t, xd_err *e) {
    if (t->algo == TOK_ALGO_SPM) {
        if (!t->metaspace) return json_null();
        const char *scheme = t->prefix == TOK_PREFIX_ALWAYS ? "always"
                             : t->prefix == TOK_PREFIX_FIRST ? "first" : "never";
        return json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement", SPM_SPACE,
                         "prepend_scheme", scheme, "split", t->metaspace_split);
    }
    switch (t->pre) {
    case TOK_PRE_GPT2:
        return byte_level(false, true, true);
    case TOK_PRE_SMOLLM:
        return json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type",
                         "Digits", "individual_digits", true, byte_level(false, true, true));
    case TOK_PRE_LLAMA3:
    case TOK_PRE_QWEN2:
        return json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence", "pretokenizers",
                         "type", "Split", "pattern", "Regex",
                         t->pre == TOK_PRE_LLAMA3 ? PAT_LLAMA3 : PAT_QWEN2, "behavior", "Isolated",
                         "invert", false, byte_level(false, true, false));
    default:
        xd_fail(e, "a byte-level tokenizer without a pre-tokenizer cannot be written");
        return NULL;
    }
}

static json_t *normalizer_json(const model_tokenizer *t, xd_err *e) {
    json_t *list = json_array();
    if (t->nfc) json_array_append_new(list, json_pack("{s:s}", "type", "NFC"));
    if (t->algo == TOK_ALGO_SPM && !t->metaspace) {
        if (t->prefix == TOK_PREFIX_FIRST) {
            json_decref(list);
            xd_fail(e, "a SentencePiece prefix on the first segment only needs a Metaspace "
                       "pre-tokenizer, which this tokenizer does not have");
            return NULL;
        }
        if (t->prefix == TOK_PREFIX_ALWAYS)
            json_array_append_new(list, json_pack("{s:s, s:s}", "type", "Prepend", "prepend", SPM_SPACE));
        json_array_append_new(list, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern",
                                              "String", " ", "content", SPM_SPACE));
    }
    if (json_array_size(list) == 0) {
        json_decref(list);
        return json_null();
    }
    if (json_array_size(list) == 1) {
        json_t *one = json_incref(json_array_get(list, 0));
        json_decref(list);
        return one;
    }
    return json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", list);
}

static json_t *decoder_json(const model_tokenizer *t) {
    if (t->algo == TOK_ALGO_BYTE_BPE) return byte_level(true, true, true);
    json_t *seq = json_array();
    json_array_append_new(seq, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String",
                                         SPM_SPACE, "content", " "));
    if (t->byte_fallback) json_array_append_new(seq, json_pack("{s:s}", "type", "ByteFallback"));
    json_array_append_new(seq, json_pack("{s:s}", "type", "Fuse"));
    if (t->strip_leading_space)
        json_array_append_new(seq, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ",
                                             "start", 1, "stop", 0));
    return json_pack("{s:s, s:o}", "type", "Sequence", "decoders", seq);
}

/* BOS in front of every encoding, as Llama-2/3's tokenizer.json say it (the loader reads it back
 * from here); the byte-level ones keep their ByteLevel offsets step. */
static json_t *post_processor_json(const model_tokenizer *t) {
    json_t *bl = t->algo == TOK_ALGO_BYTE_BPE ? byte_level(true, false, true) : NULL;
    if (!t->add_bos) return bl ? bl : json_null();
    json_t *bos = tok_text(t, t->bos);
    json_t *tp = json_pack(
        "{s:s, s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:O, s:i}}, {s:{s:s, s:i}}, {s:{s:O, s:i}}, "
        "{s:{s:s, s:i}}], s:{s:{s:O, s:[i], s:[O]}}}",
        "type", "TemplateProcessing", "single", "SpecialToken", "id", bos, "type_id", 0, "Sequence",
        "id", "A", "type_id", 0, "pair", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A",
        "type_id", 0, "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id", 1,
        "special_tokens", json_string_value(bos), "id", bos, "ids", t->bos, "tokens", bos);
    json_decref(bos);
    if (!bl) return tp;
    return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "processors", bl, tp);
}

static json_t *tokenizer_json(const model_tokenizer *t, xd_err *e) {
    json_t *vocab = json_object(), *added = json_array();
    for (int id = 0; id < t->n_vocab; id++) {
        const tok_token *k = &t->tok[id];
        char *s = t->arena + k->str_off; /* NUL-terminated: tok_set refuses NUL bytes */
        json_object_set_new_nocheck(vocab, s, json_integer(id));
        if (k->kind == TOK_CONTROL || k->kind == TOK_UNKNOWN || k->kind == TOK_USER)
            json_array_append_new(
                added, json_pack("{s:i, s:o, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", tok_text(t, id),
                                 "single_word", false, "lstrip", (k->flags & TOK_F_LSTRIP) != 0, "rstrip",
                                 (k->flags & TOK_F_RSTRIP) != 0, "normalized", false, "special",
                                 k->kind != TOK_USER));
    }
    json_t *merges = merges_json(t, e);
    json_t *pre = merges ? pre_tokenizer_json(t, e) : NULL;
    json_t *norm = pre ? normalizer_json(t, e) : NULL;
    if (!norm) {
        json_decref(vocab);
        json_decref(added);
        json_decref(merges);
        json_decref(pre);
        return NULL;
    }
    json_t *model = json_pack("{s:s, s:n, s:o, s:n, s:n, s:b, s:b}", "type", "BPE", "dropout", "unk_token",
                              t->unk >= 0 ? tok_text(t, t->unk) : json_null(), "continuing_subword_prefix",
                              "end_of_word_suffix", "fuse_unk", t->fuse_unk, "byte_fallback",
                              t->byte_fallback);
    /* written only when set: older HF tokenizers do not know the key */
    if (t->ignore_merges) json_object_set_new(model, "ignore_merges", json_true());
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", merges);
    return json_pack("{s:s, s:n, s:n, s:o, s:o, s:o, s:o, s:o, s:o}", "version", "1.0", "truncation",
                     "padding", "added_tokens", added, "normalizer", norm, "pre_tokenizer", pre,
                     "post_processor", post_processor_json(t), "decoder", decoder_json(t), "model", model);
}

static json_t *config_json(const model_tokenizer *t) {
    json_t *c = json_object();
    json_object_set_new(c, "add_bos_token", json_boolean(t->add_bos));
    json_object_set_new(c, "add_eos_token", json_false());
    json_object_set_new(c, "bos_token", t->bos >= 0 ? tok_text(t, t->bos) : json_null());
    json_object_set_new(c, "eos_token", t->eos >= 0 ? tok_text(t, t->eos) : json_null());
    if (t->unk >= 0) json_object_set_new(c, "unk_token", tok_text(t, t->unk));
    if (t->chat_template) json_object_set_new(c, "chat_template", json_string(t->chat_template));
    json_object_set_new(c, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(c, "model_max_length", json_integer(1000000000));
    json_object_set_new(c, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    return c;
}

static int write_json(const char *dir, const char *name, json_t *j, xd_err *e) {
    char path[4096];
    if (xd_path_join(path, sizeof path, dir, name, e)) return -1;
    char *text = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text) return xd_fail(e, "%s: out of memory", path);
    int rc = xd_write_file_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

int model_tokenizer_save_hf(const model_tokenizer *t, const char *dir, xd_err *e) {
    if (check_representable(t, e)) return xd_wrap(e, "%s: cannot write tokenizer.json", dir);
    json_t *tj = tokenizer_json(t, e);
    if (!tj) return xd_wrap(e, "%s: cannot write tokenizer.json", dir);
    json_t *cj = config_json(t);
    /* the config names tokens of tokenizer.json: written second, so a reader never sees a config
     * whose tokens are missing */
    int rc = write_json(dir, "tokenizer.json", tj, e);
    if (rc == 0) rc = write_json(dir, "tokenizer_config.json", cj, e);
    json_decref(tj);
    json_decref(cj);
    return rc;
}
