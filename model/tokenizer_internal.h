/* model/tokenizer_internal.h — what the tokenizer's sources share: the tokenizer struct, the
 * builder the two loaders (tokenizer.json, GGUF) fill it through, and the pre-tokenisers. */
#ifndef XD_MODEL_TOKENIZER_INTERNAL_H
#define XD_MODEL_TOKENIZER_INTERNAL_H

#include "tokenizer.h"

/* Above this the metadata is not a tokenizer we can vouch for (largest real ones: 262k). */
#define TOK_MAX_VOCAB (1 << 20)

/* Token kinds: the GGUF token_type values, which HF added_tokens map onto. */
enum {
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3, /* special: matched in text only with parse_special, skipped by skip_special */
    TOK_USER = 4,    /* added (non-special): always matched in text, decoded verbatim */
    TOK_UNUSED = 5,
    TOK_BYTE = 6, /* <0xNN> byte fallback */
};

/* Token flags (HF added_tokens attributes). */
enum { TOK_F_LSTRIP = 1, TOK_F_RSTRIP = 2 };

typedef enum tok_algo {
    TOK_ALGO_BYTE_BPE, /* GPT-2 byte→unicode alphabet, merges by rank */
    TOK_ALGO_SPM,      /* ▁ for spaces, chars as symbols, <0xNN> byte fallback */
} tok_algo;

typedef enum tok_pre {
    TOK_PRE_NONE, /* SPM: the whole segment is one word */
    TOK_PRE_GPT2,
    TOK_PRE_SMOLLM, /* every \p{N} alone, then GPT-2 */
    TOK_PRE_LLAMA3,
    TOK_PRE_QWEN2,
} tok_pre;

/* Where the SPM ▁ prefix goes: every text segment (Llama-2 Prepend normalizer, GGUF
 * add_space_prefix), only a segment at offset 0 (Metaspace prepend_scheme "first"), or none. */
typedef enum tok_prefix { TOK_PREFIX_NONE, TOK_PREFIX_ALWAYS, TOK_PREFIX_FIRST } tok_prefix;

typedef struct tok_token {
    size_t str_off; /* token text as stored in the vocabulary, in the arena */
    uint32_t str_len;
    size_t bytes_off; /* what the token decodes to, in the arena */
    uint32_t bytes_len;
    float score;
    uint8_t kind;
    uint8_t flags;
    bool present; /* assigned by the loader (holes are an error) */
} tok_token;

typedef struct tok_pair {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX when the slot is empty */
    float pri;    /* lower merges first: the rank, or -score for SentencePiece scores */
    int32_t merged;
} tok_pair;

struct model_tokenizer {
    int n_vocab;
    tok_token *tok;
    char *arena;
    size_t arena_len, arena_cap;

    /* token text → id, open addressing, -1 empty */
    int32_t *map;
    size_t map_mask;
    tok_pair *pairs;
    size_t pair_mask, n_pairs;

    tok_algo algo;
    tok_pre pre;
    bool nfc;
    bool ignore_merges; /* a pre-token that is itself a token is not merged (Llama-3) */
    bool byte_fallback;
    bool fuse_unk;
    tok_prefix prefix;
    bool strip_leading_space; /* SPM decode drops the space the prefix added */
    bool metaspace;           /* Metaspace pre-tokenizer: no ▁ prefix before a leading space */
    bool metaspace_split;     /* Metaspace split=true: words start at each ▁ */
    bool spm_split_safe;      /* no token has ▁ after another char: words can be split at ▁ */
    int32_t byte_id[256];     /* byte-level: token of each byte's char; SPM: <0xNN> token */
    int unk, bos, eos;
    bool add_bos;
    char *chat_template;
    char *default_system; /* from the chat template; NULL when it has none */

    /* special / added tokens, sorted by first byte then longest first */
    int32_t *specials;
    int n_specials;
    int32_t special_first[257]; /* specials[special_first[b] .. special_first[b+1]) start with b */
};

/* Builder. Errors do not name the source: the loaders prefix it. */
int tok_create(int n_vocab, model_tokenizer **out, xd_err *e);
int tok_set(model_tokenizer *t, int id, const char *s, size_t len, int kind, float score,
            xd_err *e);
/* After every token is set: checks holes, builds the text map, byte ids, decoded bytes and the
 * special-token matcher. */
int tok_finish_vocab(model_tokenizer *t, xd_err *e);
int tok_lookup(const model_tokenizer *t, const char *s, size_t len);
/* Merge number `index` joins a and b (rank = index). Unknown tokens are errors. */
int tok_add_merge(model_tokenizer *t, int index, const char *a, size_t alen, const char *b,
                  size_t blen, xd_err *e);
int tok_reserve_merges(model_tokenizer *t, size_t n, xd_err *e);
/* SentencePiece scores: every token that splits into two tokens becomes a merge, highest score
 * first. */
int tok_build_score_merges(model_tokenizer *t, xd_err *e);
/* Checks the configuration is usable (byte alphabet present, bos/eos in range). */
int tok_finish(model_tokenizer *t, xd_err *e);
/* Default system prompt written in a ChatML template, malloc'd; NULL when none. */
char *tok_chat_default_system(const char *tmpl);

/* Pre-tokenisation. A chunk is a stretch the pattern sees as a whole string (SmolLM2 isolates
 * digits first; the others: the rest of the text); tok_pretok_next gives the end of the piece
 * that starts at i (i < n) within s[0..n). */
size_t tok_pretok_chunk(tok_pre pre, const uint8_t *s, size_t n, size_t i);
size_t tok_pretok_next(tok_pre pre, const uint8_t *s, size_t n, size_t i);
/* GPT-2 byte→unicode alphabet. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 when cp is not in the alphabet */
/* Decodes one UTF-8 character at s[i] (i < n); invalid bytes come back as cp -1, length 1. */
int tok_utf8_next(const uint8_t *s, size_t n, size_t i, int32_t *cp);
size_t tok_utf8_put(uint32_t cp, char *out);
bool tok_utf8_valid(const char *s, size_t len);
bool tok_is_numeric(int32_t cp);

/* The pre-tokenizer regexes tokenizer.json files carry, byte for byte: tokenizer_hf.c recognises
 * them, tokenizer_save.c writes them back. SPM_SPACE is SentencePiece's ▁ (U+2581). */
static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char PAT_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char SPM_SPACE[] = "\xe2\x96\x81";

#endif
