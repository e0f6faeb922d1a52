/* model/tokenizer.c — the tokenizer core: vocabulary and merge tables, BPE encoding (byte-level
 * and SentencePiece-style), decoding and the ChatML chat prompt. The loaders are in
 * tokenizer_hf.c and tokenizer_gguf.c, the pre-tokenisers in tokenizer_pretok.c. */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define TOK_MAX_TOKEN_BYTES 4096

/* ---------------------------------------------------------------- building */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key) {
    key *= 0x9e3779b97f4a7c15ull;
    return key ^ (key >> 31);
}

/* A token for an error message: escaped, cut at 60 bytes. */
static const char *show(const char *s, size_t len, char *buf, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 60) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o] = 0;
    return buf;
}

int tok_create(int n_vocab, model_tokenizer **out, xd_err *e) {
    *out = NULL;
    if (n_vocab <= 0) return xd_fail(e, "the vocabulary is empty");
    if (n_vocab > TOK_MAX_VOCAB)
        return xd_fail(e, "the vocabulary has %d tokens, more than the %d supported", n_vocab,
                       TOK_MAX_VOCAB);
    model_tokenizer *t = xd_calloc(1, sizeof *t, e);
    if (!t) return -1;
    t->n_vocab = n_vocab;
    t->tok = xd_calloc((size_t)n_vocab, sizeof *t->tok, e);
    if (!t->tok) {
        free(t);
        return -1;
    }
    t->unk = t->bos = t->eos = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    *out = t;
    return 0;
}

static int arena_add(model_tokenizer *t, const void *p, size_t n, size_t *off, xd_err *e) {
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return xd_fail(e, "out of memory for the token texts");
        t->arena = a;
        t->arena_cap = cap;
    }
    *off = t->arena_len;
    if (n) memcpy(t->arena + t->arena_len, p, n);
    t->arena[t->arena_len + n] = 0; /* texts stay NUL-terminated for messages */
    t->arena_len += n + 1;
    return 0;
}

static const char *tok_str(const model_tokenizer *t, int id) {
    return t->arena + t->tok[id].str_off;
}

int tok_set(model_tokenizer *t, int id, const char *s, size_t len, int kind, float score,
            xd_err *e) {
    char sb[200];
    if (id < 0 || id >= t->n_vocab)
        return xd_fail(e, "token id %d is out of range (vocabulary of %d)", id, t->n_vocab);
    if (kind == 0) kind = TOK_NORMAL; /* GGUF "undefined" */
    if (kind < TOK_NORMAL || kind > TOK_BYTE)
        return xd_fail(e, "token %d has type %d, not one of 1-6", id, kind);
    tok_token *k = &t->tok[id];
    if (k->present) {
        /* HF lists special tokens both in the vocabulary and in added_tokens */
        if (k->str_len == len && memcmp(tok_str(t, id), s, len) == 0) {
            k->kind = (uint8_t)kind;
            return 0;
        }
        char sb2[200];
        return xd_fail(e, "token id %d is given twice (\"%s\" and \"%s\")", id,
                       show(tok_str(t, id), k->str_len, sb, sizeof sb),
                       show(s, len, sb2, sizeof sb2));
    }
    if (len == 0 && kind != TOK_UNUSED) return xd_fail(e, "token %d is empty", id);
    if (len > TOK_MAX_TOKEN_BYTES)
        return xd_fail(e, "token %d is %zu bytes long, more than %d", id, len, TOK_MAX_TOKEN_BYTES);
    if (memchr(s, 0, len)) return xd_fail(e, "token %d contains a NUL byte", id);
    if (!tok_utf8_valid(s, len))
        return xd_fail(e, "token %d (\"%s\") is not valid UTF-8", id, show(s, len, sb, sizeof sb));
    if (arena_add(t, s, len, &k->str_off, e) < 0) return -1;
    k->str_len = (uint32_t)len;
    k->kind = (uint8_t)kind;
    k->score = score;
    k->present = true;
    return 0;
}

int tok_lookup(const model_tokenizer *t, const char *s, size_t len) {
    if (!t->map || len == 0) return -1;
    size_t h = (size_t)hash_bytes(s, len) & t->map_mask;
    for (;;) {
        int32_t id = t->map[h];
        if (id < 0) return -1;
        if (t->tok[id].str_len == len && memcmp(tok_str(t, id), s, len) == 0) return id;
        h = (h + 1) & t->map_mask;
    }
}

/* Tokens that BPE may produce from text: not control, byte or unused ones. */
static bool mergeable(const model_tokenizer *t, int id) {
    return id >= 0 && (t->tok[id].kind == TOK_NORMAL || t->tok[id].kind == TOK_USER);
}

static bool is_special(const model_tokenizer *t, int id) {
    return t->tok[id].kind == TOK_CONTROL || t->tok[id].kind == TOK_UNKNOWN;
}

static bool starts_spm_space(const char *s, size_t n, size_t i) {
    return i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0;
}

static int parse_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                         : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* What a token decodes to. Byte-level: each char back to its byte (HF keeps a token verbatim when
 * a char is outside the alphabet); SPM: ▁ → space, <0xNN> → the byte. Special and added tokens are
 * their text. */
static int make_token_bytes(model_tokenizer *t, int id, char *tmp, xd_err *e) {
    tok_token *k = &t->tok[id];
    const char *s = tok_str(t, id);
    size_t n = k->str_len, o = 0;
    if (k->kind == TOK_CONTROL || k->kind == TOK_USER || k->kind == TOK_UNKNOWN ||
        k->kind == TOK_UNUSED) {
        memcpy(tmp, s, n);
        o = n;
    } else if (k->kind == TOK_BYTE) {
        int b = parse_byte_token(s, n);
        if (b < 0) {
            char sb[200];
            return xd_fail(e, "byte token %d (\"%s\") is not of the form <0xNN>", id,
                           show(s, n, sb, sizeof sb));
        }
        tmp[o++] = (char)b;
    } else if (t->algo == TOK_ALGO_BYTE_BPE) {
        for (size_t i = 0; i < n;) {
            int32_t cp;
            i += (size_t)tok_utf8_next((const uint8_t *)s, n, i, &cp);
            int b = tok_cp_to_byte((uint32_t)cp);
            if (b < 0) {
                memcpy(tmp, s, n);
                o = n;
                break;
            }
            tmp[o++] = (char)b;
        }
    } else {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0) {
                tmp[o++] = ' ';
                i += 3;
            } else {
                tmp[o++] = s[i++];
            }
        }
    }
    size_t off;
    if (arena_add(t, tmp, o, &off, e) < 0) return -1;
    t->tok[id].bytes_off = off;
    t->tok[id].bytes_len = (uint32_t)o;
    return 0;
}

/* By first byte, then longest first, so the first match at a position is the longest. */
static int special_order(int32_t x, int32_t y, const model_tokenizer *t) {
    uint8_t fx = (uint8_t)tok_str(t, x)[0], fy = (uint8_t)tok_str(t, y)[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (t->tok[x].str_len != t->tok[y].str_len)
        return t->tok[x].str_len > t->tok[y].str_len ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Insertion sort with the tokenizer as context (qsort has none); special tokens are few. */
static void sort_specials(model_tokenizer *t) {
    for (int i = 1; i < t->n_specials; i++) {
        int32_t v = t->specials[i];
        int j = i - 1;
        while (j >= 0 && special_order(t->specials[j], v, t) > 0) {
            t->specials[j + 1] = t->specials[j];
            j--;
        }
        t->specials[j + 1] = v;
    }
}

int tok_finish_vocab(model_tokenizer *t, xd_err *e) {
    int n = t->n_vocab;
    for (int id = 0; id < n; id++)
        if (!t->tok[id].present)
            return xd_fail(e, "token id %d has no entry (ids must run from 0 to %d without gaps)",
                           id, n - 1);
    size_t cap = 16;
    while (cap < 2 * (size_t)n) cap *= 2;
    t->map = xd_malloc(cap * sizeof *t->map, e);
    if (!t->map) return -1;
    memset(t->map, 0xff, cap * sizeof *t->map);
    t->map_mask = cap - 1;
    for (int id = 0; id < n; id++) {
        size_t len = t->tok[id].str_len;
        if (!len) continue;
        const char *s = tok_str(t, id);
        size_t h = (size_t)hash_bytes(s, len) & t->map_mask;
        for (;;) {
            int32_t o = t->map[h];
            if (o < 0) {
                t->map[h] = id;
                break;
            }
            if (t->tok[o].str_len == len && memcmp(tok_str(t, o), s, len) == 0) {
                /* a repeated text (some GGUF vocabularies): the later id wins, as in llama.cpp */
                if (t->tok[id].kind != TOK_UNUSED) t->map[h] = id;
                break;
            }
            h = (h + 1) & t->map_mask;
        }
    }
    char *tmp = xd_malloc(TOK_MAX_TOKEN_BYTES + 1, e);
    if (!tmp) return -1;
    for (int id = 0; id < n; id++) {
        if (make_token_bytes(t, id, tmp, e) < 0) {
            free(tmp);
            return -1;
        }
    }
    free(tmp);
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t len;
        if (t->algo == TOK_ALGO_BYTE_BPE) {
            len = tok_utf8_put(tok_byte_to_cp((uint8_t)b), s);
        } else {
            snprintf(s, sizeof s, "<0x%02X>", b);
            len = 6;
        }
        int id = tok_lookup(t, s, len);
        if (t->algo == TOK_ALGO_SPM && id >= 0 && t->tok[id].kind != TOK_BYTE) id = -1;
        t->byte_id[b] = id;
    }
    int ns = 0;
    for (int id = 0; id < n; id++) {
        int k = t->tok[id].kind;
        if ((k == TOK_CONTROL || k == TOK_UNKNOWN || k == TOK_USER) && t->tok[id].str_len) ns++;
    }
    t->specials = xd_malloc((size_t)(ns ? ns : 1) * sizeof *t->specials, e);
    if (!t->specials) return -1;
    t->n_specials = 0;
    for (int id = 0; id < n; id++) {
        int k = t->tok[id].kind;
        if ((k == TOK_CONTROL || k == TOK_UNKNOWN || k == TOK_USER) && t->tok[id].str_len)
            t->specials[t->n_specials++] = id;
    }
    sort_specials(t);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < t->n_specials && (uint8_t)tok_str(t, t->specials[k])[0] < b) k++;
        t->special_first[b] = k;
    }
    return 0;
}

int tok_reserve_merges(model_tokenizer *t, size_t n, xd_err *e) {
    size_t cap = 16;
    while (cap < 2 * n + 16) cap *= 2;
    free(t->pairs);
    t->pairs = xd_malloc(cap * sizeof *t->pairs, e);
    if (!t->pairs) return -1;
    for (size_t i = 0; i < cap; i++) t->pairs[i].key = UINT64_MAX;
    t->pair_mask = cap - 1;
    t->n_pairs = 0;
    return 0;
}

/* Inserts unless the pair is there already: the first (best) merge of a pair wins. */
static void pair_insert(model_tokenizer *t, int a, int b, float pri, int merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t h = (size_t)hash_pair(key) & t->pair_mask;
    while (t->pairs[h].key != UINT64_MAX) {
        if (t->pairs[h].key == key) return;
        h = (h + 1) & t->pair_mask;
    }
    t->pairs[h].key = key;
    t->pairs[h].pri = pri;
    t->pairs[h].merged = merged;
    t->n_pairs++;
}

static bool pair_find(const model_tokenizer *t, int a, int b, float *pri, int *merged) {
    if (a < 0 || b < 0 || !t->pairs) return false;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t h = (size_t)hash_pair(key) & t->pair_mask;
    for (;;) {
        const tok_pair *p = &t->pairs[h];
        if (p->key == UINT64_MAX) return false;
        if (p->key == key) {
            *pri = p->pri;
            *merged = p->merged;
            return true;
        }
        h = (h + 1) & t->pair_mask;
    }
}

int tok_add_merge(model_tokenizer *t, int index, const char *a, size_t alen, const char *b,
                  size_t blen, xd_err *e) {
    char sb[200], sb2[200], sb3[200];
    int ia = tok_lookup(t, a, alen), ib = tok_lookup(t, b, blen);
    if (ia < 0)
        return xd_fail(e, "merge %d names token \"%s\" that is not in the vocabulary", index,
                       show(a, alen, sb, sizeof sb));
    if (ib < 0)
        return xd_fail(e, "merge %d names token \"%s\" that is not in the vocabulary", index,
                       show(b, blen, sb, sizeof sb));
    if (alen + blen > TOK_MAX_TOKEN_BYTES)
        return xd_fail(e, "merge %d makes a token longer than %d bytes", index,
                       TOK_MAX_TOKEN_BYTES);
    char cat[TOK_MAX_TOKEN_BYTES];
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    int im = tok_lookup(t, cat, alen + blen);
    if (im < 0)
        return xd_fail(e, "merge %d (\"%s\" + \"%s\") makes \"%s\", which is not in the vocabulary",
                       index, show(a, alen, sb, sizeof sb), show(b, blen, sb2, sizeof sb2),
                       show(cat, alen + blen, sb3, sizeof sb3));
    if (t->n_pairs + 1 > (t->pair_mask + 1) / 2 + 8)
        return xd_fail(e, "internal: merge table too small");
    pair_insert(t, ia, ib, (float)index, im);
    return 0;
}

int tok_build_score_merges(model_tokenizer *t, xd_err *e) {
    size_t splits = 0;
    for (int id = 0; id < t->n_vocab; id++)
        if (mergeable(t, id)) splits += t->tok[id].str_len;
    if (tok_reserve_merges(t, splits, e) < 0) return -1;
    for (int id = 0; id < t->n_vocab; id++) {
        if (!mergeable(t, id)) continue;
        const char *s = tok_str(t, id);
        size_t n = t->tok[id].str_len;
        if (tok_lookup(t, s, n) != id) continue; /* a repeated text: the id the map gives */
        for (size_t k = 0; k < n;) {
            int32_t cp;
            k += (size_t)tok_utf8_next((const uint8_t *)s, n, k, &cp);
            if (k >= n) break;
            int a = tok_lookup(t, s, k), b = tok_lookup(t, s + k, n - k);
            if (mergeable(t, a) && mergeable(t, b)) pair_insert(t, a, b, -t->tok[id].score, id);
        }
    }
    return 0;
}

int tok_finish(model_tokenizer *t, xd_err *e) {
    if (t->bos < -1 || t->bos >= t->n_vocab)
        return xd_fail(e, "BOS token id %d is out of range (vocabulary of %d)", t->bos, t->n_vocab);
    if (t->eos < -1 || t->eos >= t->n_vocab)
        return xd_fail(e, "EOS token id %d is out of range (vocabulary of %d)", t->eos, t->n_vocab);
    if (t->unk < -1 || t->unk >= t->n_vocab)
        return xd_fail(e, "unknown token id %d is out of range (vocabulary of %d)", t->unk,
                       t->n_vocab);
    if (t->add_bos && t->bos < 0)
        return xd_fail(e, "add_bos_token is set but there is no BOS token");
    /* Words may be cut before each ▁ that follows another char when no token could span such a
     * place: the merges then never cross it, and long texts stay fast. */
    t->spm_split_safe = true;
    if (t->algo == TOK_ALGO_SPM) {
        for (int id = 0; id < t->n_vocab && t->spm_split_safe; id++) {
            if (!mergeable(t, id)) continue;
            const char *s = tok_str(t, id);
            size_t n = t->tok[id].str_len;
            for (size_t i = 1; i + 3 <= n; i++) {
                if (memcmp(s + i, SPM_SPACE, 3) == 0 &&
                    !(i >= 3 && memcmp(s + i - 3, SPM_SPACE, 3) == 0)) {
                    t->spm_split_safe = false;
                    break;
                }
            }
        }
    }
    return 0;
}

void model_tokenizer_free(model_tokenizer *t) {
    if (!t) return;
    free(t->tok);
    free(t->arena);
    free(t->map);
    free(t->pairs);
    free(t->specials);
    free(t->chat_template);
    free(t->default_system);
    free(t);
}

/* ---------------------------------------------------------------- accessors */

int model_tokenizer_vocab_size(const model_tokenizer *t) { return t->n_vocab; }
int model_tokenizer_bos(const model_tokenizer *t) { return t->bos; }
int model_tokenizer_eos(const model_tokenizer *t) { return t->eos; }
bool model_tokenizer_adds_bos(const model_tokenizer *t) { return t->add_bos; }

int model_tokenizer_token_id(const model_tokenizer *t, const char *text) {
    return tok_lookup(t, text, strlen(text));
}

int model_tokenizer_token_bytes(const model_tokenizer *t, int id, const char **bytes, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return -1;
    *bytes = t->arena + t->tok[id].bytes_off;
    *len = t->tok[id].bytes_len;
    return 0;
}

bool model_tokenizer_is_special(const model_tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab && is_special(t, id);
}

/* ---------------------------------------------------------------- encoding */

typedef struct tk_sym {
    int32_t id;
    int32_t start, len; /* len 0: merged into its left neighbour */
    int32_t prev, next;
} tk_sym;

typedef struct tk_cand {
    float pri;
    int32_t start; /* of the left symbol: leftmost first among equal priorities */
    int32_t left, right, llen, rlen, merged;
} tk_cand;

/* Per-call scratch: nothing is cached in the tokenizer, so encoding is thread-safe. */
typedef struct tk_work {
    const model_tokenizer *t;
    tk_sym *sym;
    size_t nsym, sym_cap;
    tk_cand *heap;
    size_t nheap, heap_cap;
    int *ids;
    size_t n_ids, ids_cap;
    char *norm; /* the normalized segment */
    size_t norm_cap;
    char *buf; /* byte-level text of a piece */
    size_t buf_cap;
    xd_err *e;
} tk_work;

static int grow(void **p, size_t *cap, size_t need, size_t elem, xd_err *e) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return xd_fail(e, "out of memory encoding text");
    *p = q;
    *cap = c;
    return 0;
}

static int emit(tk_work *w, int id) {
    if (w->n_ids == w->ids_cap &&
        grow((void **)&w->ids, &w->ids_cap, w->n_ids + 1, sizeof(int), w->e) < 0)
        return -1;
    w->ids[w->n_ids++] = id;
    return 0;
}

static bool cand_less(const tk_cand *a, const tk_cand *b) {
    return a->pri < b->pri || (a->pri == b->pri && a->start < b->start);
}

static void heap_push(tk_work *w, tk_cand c) {
    size_t i = w->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static tk_cand heap_pop(tk_work *w) {
    tk_cand top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0, n = w->nheap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const tk_cand *best = &last;
        if (l < n && cand_less(&w->heap[l], best)) {
            m = l;
            best = &w->heap[l];
        }
        if (r < n && cand_less(&w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void try_pair(tk_work *w, int l, int r) {
    float pri;
    int merged;
    if (!pair_find(w->t, w->sym[l].id, w->sym[r].id, &pri, &merged)) return;
    tk_cand c = {pri, w->sym[l].start, l, r, w->sym[l].len, w->sym[r].len, merged};
    heap_push(w, c);
}

/* BPE over the symbols: repeatedly merge the best adjacent pair (lowest rank / highest score,
 * leftmost on ties), as HF tokenizers and llama.cpp do with their priority queues. */
static int merge_symbols(tk_work *w) {
    size_t n = w->nsym;
    if (n < 2) return 0;
    /* each merge adds at most two candidates to the n - 1 first ones */
    if (grow((void **)&w->heap, &w->heap_cap, 3 * n, sizeof(tk_cand), w->e) < 0) return -1;
    w->nheap = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(w, (int)i, (int)i + 1);
    while (w->nheap) {
        tk_cand c = heap_pop(w);
        tk_sym *L = &w->sym[c.left], *R = &w->sym[c.right];
        if (L->len != c.llen || R->len != c.rlen || L->next != c.right) continue;
        L->id = c.merged;
        L->len += R->len;
        L->next = R->next;
        if (R->next >= 0) w->sym[R->next].prev = c.left;
        R->len = 0;
        if (L->prev >= 0) try_pair(w, L->prev, c.left);
        if (L->next >= 0) try_pair(w, c.left, L->next);
    }
    return 0;
}

static int add_sym(tk_work *w, int id, size_t start, size_t len) {
    if (grow((void **)&w->sym, &w->sym_cap, w->nsym + 1, sizeof(tk_sym), w->e) < 0) return -1;
    tk_sym *s = &w->sym[w->nsym];
    s->id = id;
    s->start = (int32_t)start;
    s->len = (int32_t)len;
    s->prev = (int32_t)w->nsym - 1;
    s->next = -1;
    if (w->nsym) w->sym[w->nsym - 1].next = (int32_t)w->nsym;
    w->nsym++;
    return 0;
}

static int emit_symbols(tk_work *w) {
    int prev = -2;
    for (int i = w->nsym ? 0 : -1; i >= 0; i = w->sym[i].next) {
        int id = w->sym[i].id;
        if (id < 0) continue; /* unknown char and no <unk>: dropped, as HF does */
        if (w->t->fuse_unk && id == w->t->unk && prev == id) continue;
        if (emit(w, id) < 0) return -1;
        prev = id;
    }
    return 0;
}

/* The token of a byte's char. Real vocabularies may lack some (SmolLM2 has no token for 21
 * bytes, e.g. 0x04): like HF tokenizers and llama.cpp, such a byte becomes <unk> when there is one
 * and is dropped otherwise. */
static int byte_symbol(const model_tokenizer *t, uint8_t b) {
    return t->byte_id[b] >= 0 ? t->byte_id[b] : t->unk;
}

static int encode_byte_piece(tk_work *w, const uint8_t *p, size_t m) {
    const model_tokenizer *t = w->t;
    if (m == 1) return byte_symbol(t, p[0]) >= 0 ? emit(w, byte_symbol(t, p[0])) : 0;
    if (t->ignore_merges) {
        if (grow((void **)&w->buf, &w->buf_cap, 2 * m, 1, w->e) < 0) return -1;
        size_t o = 0;
        for (size_t i = 0; i < m; i++) o += tok_utf8_put(tok_byte_to_cp(p[i]), w->buf + o);
        int id = tok_lookup(t, w->buf, o);
        if (id >= 0 && !is_special(t, id)) return emit(w, id);
    }
    w->nsym = 0;
    for (size_t i = 0; i < m; i++)
        if (add_sym(w, byte_symbol(t, p[i]), i, 1) < 0) return -1;
    if (merge_symbols(w) < 0) return -1;
    return emit_symbols(w);
}

/* One SentencePiece word: chars are symbols; a char that is not a token becomes its <0xNN>
 * byte tokens (byte fallback) or <unk>. */
static int encode_spm_word(tk_work *w, const uint8_t *p, size_t m) {
    const model_tokenizer *t = w->t;
    w->nsym = 0;
    for (size_t i = 0; i < m;) {
        int32_t cp;
        size_t l = (size_t)tok_utf8_next(p, m, i, &cp);
        int id = tok_lookup(t, (const char *)p + i, l);
        if (!mergeable(t, id)) id = -1;
        if (id >= 0) {
            if (add_sym(w, id, i, l) < 0) return -1;
        } else {
            bool bytes = t->byte_fallback;
            for (size_t k = 0; k < l && bytes; k++) bytes = t->byte_id[p[i + k]] >= 0;
            if (bytes) {
                for (size_t k = 0; k < l; k++)
                    if (add_sym(w, t->byte_id[p[i + k]], i + k, 1) < 0) return -1;
            } else if (add_sym(w, t->unk, i, l) < 0) {
                return -1;
            }
        }
        i += l;
    }
    if (merge_symbols(w) < 0) return -1;
    return emit_symbols(w);
}

/* NFC when the tokenizer asks for it (Qwen2). ASCII and invalid UTF-8 are left as they are. */
static int normalize_nfc(tk_work *w, const char *s, size_t n, const char **out, size_t *out_n) {
    *out = s;
    *out_n = n;
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++) ascii = (uint8_t)s[i] < 0x80;
    if (ascii) return 0;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) {
        free(dst);
        return 0;
    }
    if (grow((void **)&w->norm, &w->norm_cap, (size_t)r + 1, 1, w->e) < 0) {
        free(dst);
        return -1;
    }
    memcpy(w->norm, dst, (size_t)r);
    free(dst);
    *out = w->norm;
    *out_n = (size_t)r;
    return 0;
}

/* Encodes text between special tokens. at_start: the segment begins the text (Metaspace
 * prepend_scheme "first"). */
static int encode_segment(tk_work *w, const char *s, size_t n, bool at_start) {
    const model_tokenizer *t = w->t;
    if (n == 0) return 0;
    if (t->nfc && normalize_nfc(w, s, n, &s, &n) < 0) return -1;
    if (t->algo == TOK_ALGO_BYTE_BPE) {
        const uint8_t *u = (const uint8_t *)s;
        for (size_t c = 0; c < n;) {
            size_t cend = tok_pretok_chunk(t->pre, u, n, c);
            for (size_t i = c; i < cend;) {
                size_t j = tok_pretok_next(t->pre, u, cend, i);
                if (encode_byte_piece(w, u + i, j - i) < 0) return -1;
                i = j;
            }
            c = cend;
        }
        return 0;
    }
    /* SentencePiece: ▁ for every space, one in front (Prepend normalizer / Metaspace) */
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    bool prefix = t->prefix == TOK_PREFIX_ALWAYS || (t->prefix == TOK_PREFIX_FIRST && at_start);
    /* Metaspace adds no ▁ to text that already starts with one (the Prepend normalizer does) */
    if (prefix && t->metaspace && (s[0] == ' ' || starts_spm_space(s, n, 0))) prefix = false;
    size_t need = n + 2 * spaces + 3 + 1;
    /* the normalized text can live in norm when NFC did not use it */
    char *dst;
    char *own = NULL;
    if (s == w->norm) {
        own = xd_malloc(need, w->e);
        if (!own) return -1;
        dst = own;
    } else {
        if (grow((void **)&w->norm, &w->norm_cap, need, 1, w->e) < 0) return -1;
        dst = w->norm;
    }
    size_t o = 0;
    if (prefix) {
        memcpy(dst, SPM_SPACE, 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(dst + o, SPM_SPACE, 3);
            o += 3;
        } else {
            dst[o++] = s[i];
        }
    }
    int rc = 0;
    size_t w0 = 0;
    for (size_t i = 0; i <= o && rc == 0;) {
        /* a word ends before a ▁ (Metaspace split: every one; otherwise one after another char,
         * when no token can span that place) or at the end */
        bool cut = i == o;
        if (!cut && i > w0 && starts_spm_space(dst, o, i)) {
            if (t->metaspace_split)
                cut = true;
            else if (t->spm_split_safe && !(i >= 3 && starts_spm_space(dst, o, i - 3)))
                cut = true;
        }
        if (cut) {
            if (i > w0) rc = encode_spm_word(w, (const uint8_t *)dst + w0, i - w0);
            w0 = i;
            if (i == o) break;
        }
        i += starts_spm_space(dst, o, i) ? 3 : 1;
    }
    free(own);
    return rc;
}

/* The longest special / added token at s[i], or -1. */
static int match_special(const model_tokenizer *t, const char *s, size_t n, size_t i,
                         bool parse_special) {
    uint8_t b = (uint8_t)s[i];
    for (int k = t->special_first[b]; k < t->special_first[b + 1]; k++) {
        int id = t->specials[k];
        if (!parse_special && t->tok[id].kind != TOK_USER) continue;
        size_t len = t->tok[id].str_len;
        if (len <= n - i && memcmp(s + i, tok_str(t, id), len) == 0) return id;
    }
    return -1;
}

static bool ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int model_tokenizer_encode(const model_tokenizer *t, const char *text, size_t len, bool add_bos,
                           bool parse_special, int **ids, size_t *n_ids, xd_err *e) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return xd_fail(e, "encode: text is NULL");
    if (len > (size_t)INT32_MAX) return xd_fail(e, "encode: text of %zu bytes is too long", len);
    tk_work w = {0};
    w.t = t;
    w.e = e;
    int rc = 0;
    if (add_bos) {
        if (t->bos < 0) return xd_fail(e, "encode: the tokenizer has no BOS token");
        rc = emit(&w, t->bos);
    }
    size_t seg = 0, i = 0;
    while (rc == 0 && i < len) {
        int id = t->special_first[(uint8_t)text[i]] < t->special_first[(uint8_t)text[i] + 1]
                     ? match_special(t, text, len, i, parse_special)
                     : -1;
        if (id < 0) {
            i++;
            continue;
        }
        size_t end = i;
        if (t->tok[id].flags & TOK_F_LSTRIP)
            while (end > seg && ascii_space(text[end - 1])) end--;
        rc = encode_segment(&w, text + seg, end - seg, seg == 0);
        if (rc == 0) rc = emit(&w, id);
        i += t->tok[id].str_len;
        if (t->tok[id].flags & TOK_F_RSTRIP)
            while (i < len && ascii_space(text[i])) i++;
        seg = i;
    }
    if (rc == 0) rc = encode_segment(&w, text + seg, len - seg, seg == 0);
    free(w.sym);
    free(w.heap);
    free(w.norm);
    free(w.buf);
    if (rc < 0) {
        free(w.ids);
        return -1;
    }
    if (!w.ids) {
        w.ids = malloc(sizeof(int));
        if (!w.ids) return xd_fail(e, "out of memory encoding text");
    }
    *ids = w.ids;
    *n_ids = w.n_ids;
    return 0;
}

/* ---------------------------------------------------------------- decoding */

int model_tokenizer_decode(const model_tokenizer *t, const int *ids, size_t n, bool skip_special,
                           char **out, size_t *out_len, xd_err *e) {
    *out = NULL;
    if (out_len) *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return xd_fail(e, "decode: token %zu has id %d, out of range (vocabulary of %d)", i,
                           ids[i], t->n_vocab);
        total += t->tok[ids[i]].bytes_len;
    }
    char *s = xd_malloc(total + 1, e);
    if (!s) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_token *k = &t->tok[ids[i]];
        if (skip_special && is_special(t, ids[i])) continue;
        memcpy(s + o, t->arena + k->bytes_off, k->bytes_len);
        o += k->bytes_len;
    }
    /* SentencePiece: the space the ▁ prefix stood for (HF Strip decoder, start=1) */
    if (t->strip_leading_space && o > 0 && s[0] == ' ') {
        memmove(s, s + 1, o - 1);
        o--;
    }
    s[o] = 0;
    *out = s;
    if (out_len) *out_len = o;
    return 0;
}

/* ---------------------------------------------------------------- chat */

/* The default system prompt of a ChatML template: the text between "<|im_start|>system\n" and
 * "<|im_end|>" inside one string literal (no quote or brace in between, which would mean the text
 * comes from a variable), e.g. SmolLM2's and Qwen2's "if messages[0] is not system" branch. */
char *tok_chat_default_system(const char *tmpl) {
    static const char key[] = "<|im_start|>system";
    const char *p = tmpl;
    while (p && (p = strstr(p, key)) != NULL) {
        const char *q = p + sizeof key - 1;
        p = q;
        if (*q == '\n')
            q++;
        else if (q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *end = strstr(q, "<|im_end|>");
        if (!end) return NULL;
        size_t n = (size_t)(end - q);
        if (n == 0 || memchr(q, '\'', n) || memchr(q, '"', n) || memchr(q, '{', n) ||
            memchr(q, '}', n))
            continue;
        char *s = malloc(n + 1);
        if (!s) return NULL;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            if (q[i] == '\\' && i + 1 < n) {
                char c = q[i + 1];
                if (c == 'n' || c == 't' || c == '\\') {
                    s[o++] = c == 'n' ? '\n' : c == 't' ? '\t' : '\\';
                    i++;
                    continue;
                }
            }
            s[o++] = q[i];
        }
        s[o] = 0;
        return s;
    }
    return NULL;
}

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static int sb_add(sbuf *b, const char *s, xd_err *e) {
    size_t m = strlen(s);
    if (grow((void **)&b->s, &b->cap, b->n + m + 1, 1, e) < 0) return -1;
    memcpy(b->s + b->n, s, m + 1);
    b->n += m;
    return 0;
}

int model_chat_render(const model_tokenizer *t, const model_chat_message *msgs, size_t n,
                      bool add_generation_prompt, char **out, xd_err *e) {
    *out = NULL;
    if (!t->chat_template) return xd_fail(e, "chat: the tokenizer has no chat template");
    if (!strstr(t->chat_template, "<|im_start|>"))
        return xd_fail(e, "chat template is not ChatML (no <|im_start|>)");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return xd_fail(e, "chat: message %zu has no %s", i, msgs[i].role ? "content" : "role");
    sbuf b = {0};
    int rc = sb_add(&b, "", e);
    if (rc == 0 && n > 0 && strcmp(msgs[0].role, "system") != 0 && t->default_system) {
        rc = sb_add(&b, "<|im_start|>system\n", e);
        if (rc == 0) rc = sb_add(&b, t->default_system, e);
        if (rc == 0) rc = sb_add(&b, "<|im_end|>\n", e);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = sb_add(&b, "<|im_start|>", e);
        if (rc == 0) rc = sb_add(&b, msgs[i].role, e);
        if (rc == 0) rc = sb_add(&b, "\n", e);
        if (rc == 0) rc = sb_add(&b, msgs[i].content, e);
        if (rc == 0) rc = sb_add(&b, "<|im_end|>\n", e);
    }
    if (rc == 0 && add_generation_prompt) rc = sb_add(&b, "<|im_start|>assistant\n", e);
    if (rc < 0) {
        free(b.s);
        return -1;
    }
    *out = b.s;
    return 0;
}
