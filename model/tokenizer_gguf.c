/* model/tokenizer_gguf.c — loading the tokenizer from GGUF metadata (tokenizer.ggml.*), the way
 * llama.cpp reads it: "gpt2" = byte-level BPE with ranked merges and a pre-tokenizer named by
 * tokenizer.ggml.pre; "llama" = SentencePiece BPE merging by token score, with byte fallback. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static bool gstr_is(model_gguf_str s, const char *lit) {
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

static int get_id(const model_gguf *g, const char *key, int *out, xd_err *e) {
    int64_t v;
    int rc = model_gguf_get_int(g, key, &v, e);
    if (rc < 0) return -1;
    if (rc == 0) {
        if (v < 0 || v > INT32_MAX)
            return xd_fail(e, "%s: %lld is out of range", key, (long long)v);
        *out = (int)v;
    }
    return 0;
}

static int get_flag(const model_gguf *g, const char *key, bool *out, xd_err *e) {
    bool v;
    int rc = model_gguf_get_bool(g, key, &v, e);
    if (rc < 0) return -1;
    if (rc == 0) *out = v;
    return 0;
}

static int load(const model_gguf *g, model_tokenizer **out, xd_err *e) {
    model_gguf_str model;
    int rc = model_gguf_get_string(g, "tokenizer.ggml.model", &model, e);
    if (rc < 0) return -1;
    if (rc > 0) return xd_fail(e, "no tokenizer.ggml.model in the metadata");
    bool spm;
    if (gstr_is(model, "gpt2"))
        spm = false;
    else if (gstr_is(model, "llama"))
        spm = true;
    else
        return xd_fail(e, "tokenizer.ggml.model \"%.*s\" is not supported (gpt2, llama)",
                       (int)(model.len > 100 ? 100 : model.len), model.ptr);

    tok_pre pre = TOK_PRE_NONE;
    bool ignore_merges = false;
    if (!spm) {
        model_gguf_str p;
        rc = model_gguf_get_string(g, "tokenizer.ggml.pre", &p, e);
        if (rc < 0) return -1;
        if (rc > 0 || gstr_is(p, "default") || gstr_is(p, "gpt-2"))
            pre = TOK_PRE_GPT2;
        else if (gstr_is(p, "smollm"))
            pre = TOK_PRE_SMOLLM;
        else if (gstr_is(p, "llama-bpe") || gstr_is(p, "llama3")) {
            pre = TOK_PRE_LLAMA3;
            ignore_merges = true; /* Llama-3's tokenizer.json sets ignore_merges; llama.cpp too */
        } else if (gstr_is(p, "qwen2"))
            pre = TOK_PRE_QWEN2;
        else
            return xd_fail(e,
                           "tokenizer.ggml.pre \"%.*s\" is not supported (default, gpt-2, "
                           "smollm, llama-bpe, qwen2)",
                           (int)(p.len > 100 ? 100 : p.len), p.ptr);
    }

    const model_gguf_kv *tokens, *types = NULL, *scores = NULL, *merges = NULL;
    rc = model_gguf_get_array(g, "tokenizer.ggml.tokens", MODEL_GGUF_STRING, &tokens, e);
    if (rc < 0) return -1;
    if (rc > 0) return xd_fail(e, "no tokenizer.ggml.tokens in the metadata");
    uint64_t n = tokens->array_count;
    if (n == 0 || n > TOK_MAX_VOCAB)
        return xd_fail(e, "tokenizer.ggml.tokens has %llu entries (1 to %d supported)",
                       (unsigned long long)n, TOK_MAX_VOCAB);
    rc = model_gguf_get_array(g, "tokenizer.ggml.token_type", MODEL_GGUF_INT32, &types, e);
    if (rc < 0) return -1;
    if (rc > 0) types = NULL;
    if (types && types->array_count != n)
        return xd_fail(e, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                       (unsigned long long)types->array_count, (unsigned long long)n);
    rc = model_gguf_get_array(g, "tokenizer.ggml.scores", MODEL_GGUF_FLOAT32, &scores, e);
    if (rc < 0) return -1;
    if (rc > 0) scores = NULL;
    if (scores && scores->array_count != n)
        return xd_fail(e, "tokenizer.ggml.scores has %llu entries for %llu tokens",
                       (unsigned long long)scores->array_count, (unsigned long long)n);
    if (spm && !scores)
        return xd_fail(e, "tokenizer.ggml.model \"llama\" needs tokenizer.ggml.scores");
    if (!spm) {
        rc = model_gguf_get_array(g, "tokenizer.ggml.merges", MODEL_GGUF_STRING, &merges, e);
        if (rc < 0) return -1;
        if (rc > 0) return xd_fail(e, "tokenizer.ggml.model \"gpt2\" needs tokenizer.ggml.merges");
    }

    model_tokenizer *t;
    if (tok_create((int)n, &t, e) < 0) return -1;
    t->algo = spm ? TOK_ALGO_SPM : TOK_ALGO_BYTE_BPE;
    t->pre = pre;
    t->nfc = pre == TOK_PRE_QWEN2; /* Qwen2's tokenizer.json has an NFC normalizer */
    t->ignore_merges = ignore_merges;
    t->byte_fallback = spm;
    for (uint64_t i = 0; i < n && rc >= 0; i++) {
        model_gguf_str s = tokens->array_strings[i];
        int kind = TOK_NORMAL;
        if (types) {
            int64_t k = model_gguf_array_int(types, i);
            if (k < 0 || k > TOK_BYTE) {
                rc = xd_fail(e, "tokenizer.ggml.token_type[%llu] is %lld, not a token type",
                             (unsigned long long)i, (long long)k);
                break;
            }
            kind = (int)k;
        }
        float score = scores ? (float)model_gguf_array_float(scores, i) : 0.0f;
        if (tok_set(t, (int)i, s.ptr, (size_t)s.len, kind, score, e) < 0)
            rc = xd_wrap(e, "tokenizer.ggml.tokens");
    }
    if (rc >= 0) rc = tok_finish_vocab(t, e);
    if (rc >= 0 && !spm) {
        uint64_t nm = merges->array_count;
        if (nm > (uint64_t)TOK_MAX_VOCAB * 4)
            rc = xd_fail(e, "tokenizer.ggml.merges has %llu entries", (unsigned long long)nm);
        if (rc >= 0) rc = tok_reserve_merges(t, (size_t)nm, e);
        for (uint64_t i = 0; i < nm && rc >= 0; i++) {
            model_gguf_str m = merges->array_strings[i];
            /* "a b", split at the first space after the first byte (as llama.cpp does) */
            const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
            if (!sp) {
                rc = xd_fail(e, "tokenizer.ggml.merges: merge %llu is not \"a b\"",
                             (unsigned long long)i);
                break;
            }
            size_t alen = (size_t)(sp - m.ptr);
            if (tok_add_merge(t, (int)i, m.ptr, alen, sp + 1, (size_t)m.len - alen - 1, e) < 0)
                rc = xd_wrap(e, "tokenizer.ggml.merges");
        }
    }
    if (rc >= 0 && spm) rc = tok_build_score_merges(t, e);
    if (rc >= 0) {
        /* llama.cpp's defaults where the keys are absent: SentencePiece <unk> <s> </s> = 0 1 2 */
        t->add_bos = spm;
        bool space_prefix = spm;
        if (spm && n > 2) {
            t->unk = 0;
            t->bos = 1;
            t->eos = 2;
        }
        rc = get_id(g, "tokenizer.ggml.bos_token_id", &t->bos, e);
        if (rc >= 0) rc = get_id(g, "tokenizer.ggml.eos_token_id", &t->eos, e);
        /* byte-level: llama.cpp drops a byte without a token rather than writing <unk> */
        if (rc >= 0 && spm) rc = get_id(g, "tokenizer.ggml.unknown_token_id", &t->unk, e);
        if (rc >= 0) rc = get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, e);
        if (rc >= 0) rc = get_flag(g, "tokenizer.ggml.add_space_prefix", &space_prefix, e);
        if (spm) {
            t->prefix = space_prefix ? TOK_PREFIX_ALWAYS : TOK_PREFIX_NONE;
            t->strip_leading_space = space_prefix;
        }
    }
    if (rc >= 0) {
        model_gguf_str tmpl;
        rc = model_gguf_get_string(g, "tokenizer.chat_template", &tmpl, e);
        if (rc == 0) {
            t->chat_template = malloc((size_t)tmpl.len + 1);
            if (!t->chat_template) {
                rc = xd_fail(e, "out of memory");
            } else {
                memcpy(t->chat_template, tmpl.ptr, (size_t)tmpl.len);
                t->chat_template[tmpl.len] = 0;
                t->default_system = tok_chat_default_system(t->chat_template);
            }
        } else if (rc > 0) {
            rc = 0;
        }
    }
    if (rc >= 0) rc = tok_finish(t, e);
    if (rc < 0) {
        model_tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int model_tokenizer_load_gguf(const model_gguf *g, model_tokenizer **out, xd_err *e) {
    *out = NULL;
    if (load(g, out, e) < 0) return xd_wrap(e, "GGUF tokenizer");
    return 0;
}
