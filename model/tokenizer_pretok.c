/* model/tokenizer_pretok.c — the pre-tokenisers as hand-written scanners (no regex library), each
 * reproducing one regex exactly as Oniguruma (HF tokenizers) and llama.cpp match it, plus the
 * GPT-2 byte alphabet and small UTF-8 helpers. */
#include "tokenizer_internal.h"

#include <utf8proc.h>

/* Character classes the patterns use. Invalid UTF-8 bytes are OTHER: they stay in the text and
 * byte-level BPE still encodes them, so decode(encode(s)) == s holds for any bytes. */
enum { CL_L, CL_N, CL_WS, CL_OTHER };

int tok_utf8_next(const uint8_t *s, size_t n, size_t i, int32_t *cp) {
    if (s[i] < 0x80) {
        *cp = s[i];
        return 1;
    }
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
    if (k <= 0) {
        *cp = -1;
        return 1;
    }
    *cp = c;
    return (int)k;
}

size_t tok_utf8_put(uint32_t cp, char *out) {
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

bool tok_utf8_valid(const char *s, size_t len) {
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < len;) {
        int32_t cp;
        i += (size_t)tok_utf8_next(u, len, i, &cp);
        if (cp < 0) return false;
    }
    return true;
}

/* \s as Oniguruma has it for Unicode: the White_Space property. */
static bool is_space(int32_t c) {
    if (c < 0) return false;
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0d);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

bool tok_is_numeric(int32_t c) {
    if (c < 0) return false;
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static int classify(int32_t c) {
    if (c < 0) return CL_OTHER;
    if (c < 0x80) {
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return CL_L;
        if (c >= '0' && c <= '9') return CL_N;
        if (c == ' ' || (c >= 0x09 && c <= 0x0d)) return CL_WS;
        return CL_OTHER;
    }
    if (is_space(c)) return CL_WS;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CL_L;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return CL_N;
    default:
        return CL_OTHER;
    }
}

typedef struct uch {
    int32_t cp;
    int len;
    int cls;
} uch;

static uch char_at(const uint8_t *s, size_t n, size_t i) {
    uch u;
    u.len = tok_utf8_next(s, n, i, &u.cp);
    u.cls = classify(u.cp);
    return u;
}

/* End of the run of characters of class cls starting at i; at most max characters. */
static size_t run_of(const uint8_t *s, size_t n, size_t i, int cls, size_t max) {
    size_t count = 0;
    while (i < n && count < max) {
        uch u = char_at(s, n, i);
        if (u.cls != cls) break;
        i += (size_t)u.len;
        count++;
    }
    return i;
}

static size_t run_newlines(const uint8_t *s, size_t n, size_t i) {
    while (i < n && (s[i] == '\r' || s[i] == '\n')) i++;
    return i;
}

/* The whitespace alternatives shared by every pattern, at a whitespace character i:
 * (llama3: \s*[\r\n]+ first) | \s+(?!\S) | \s+ . */
static size_t whitespace_tail(const uint8_t *s, size_t n, size_t i, bool newline_alt) {
    size_t j = i, last = i, last_nl = 0;
    bool saw_nl = false;
    while (j < n) {
        uch u = char_at(s, n, j);
        if (u.cls != CL_WS) break;
        if (u.cp == '\r' || u.cp == '\n') {
            saw_nl = true;
            last_nl = j + 1;
        }
        last = j;
        j += (size_t)u.len;
    }
    /* \s*[\r\n]+ : the greedy \s* gives back characters until a newline can follow it */
    if (newline_alt && saw_nl) return last_nl;
    /* \s+(?!\S): the whole run at the end of text, else all but the last whitespace char */
    if (j == n) return j;
    if (last > i) return last;
    return j; /* \s+ : one whitespace char before a non-space */
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t next_gpt2(const uint8_t *s, size_t n, size_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t c = s[i + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t d = s[i + 2];
            if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
                return i + 3;
        }
    }
    uch c0 = char_at(s, n, i);
    if (c0.cp == ' ' && i + 1 < n) {
        uch c1 = char_at(s, n, i + 1);
        if (c1.cls != CL_WS) return run_of(s, n, i + 1 + (size_t)c1.len, c1.cls, SIZE_MAX);
    }
    if (c0.cls != CL_WS) return run_of(s, n, i + (size_t)c0.len, c0.cls, SIZE_MAX);
    return whitespace_tail(s, n, i, false);
}

static int ascii_lower(int32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* (?i:'s|'t|'re|'ve|'m|'ll|'d): returns the end, or 0 when none matches at i. */
static size_t contraction_ci(const uint8_t *s, size_t n, size_t i) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    int32_t c1;
    int l1 = tok_utf8_next(s, n, i + 1, &c1);
    c1 = ascii_lower(c1);
    if (c1 == 0x17f) c1 = 's'; /* LATIN SMALL LETTER LONG S case-folds to s */
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 1 + (size_t)l1;
    if (i + 1 + (size_t)l1 < n) {
        int32_t c2;
        int l2 = tok_utf8_next(s, n, i + 1 + (size_t)l1, &c2);
        c2 = ascii_lower(c2);
        if (c2 == 0x17f) c2 = 's';
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
            return i + 1 + (size_t)l1 + (size_t)l2;
    }
    return 0;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+   — Qwen2 has \p{N} for \p{N}{1,3}. */
static size_t next_llama3(const uint8_t *s, size_t n, size_t i, size_t max_digits) {
    size_t k = contraction_ci(s, n, i);
    if (k) return k;
    uch c0 = char_at(s, n, i);
    size_t i1 = i + (size_t)c0.len;
    if (c0.cls == CL_L) return run_of(s, n, i1, CL_L, SIZE_MAX);
    if (c0.cls != CL_N && c0.cp != '\r' && c0.cp != '\n' && i1 < n) {
        uch c1 = char_at(s, n, i1);
        if (c1.cls == CL_L) return run_of(s, n, i1 + (size_t)c1.len, CL_L, SIZE_MAX);
    }
    if (c0.cls == CL_N) return run_of(s, n, i1, CL_N, max_digits - 1);
    if (c0.cp == ' ' && i1 < n) {
        uch c1 = char_at(s, n, i1);
        if (c1.cls == CL_OTHER)
            return run_newlines(s, n, run_of(s, n, i1 + (size_t)c1.len, CL_OTHER, SIZE_MAX));
    }
    if (c0.cls == CL_OTHER) return run_newlines(s, n, run_of(s, n, i1, CL_OTHER, SIZE_MAX));
    return whitespace_tail(s, n, i, true);
}

size_t tok_pretok_chunk(tok_pre pre, const uint8_t *s, size_t n, size_t i) {
    if (pre != TOK_PRE_SMOLLM) return n;
    /* Digits(individual_digits) runs first: each number char is a piece; the GPT-2 pattern then
     * sees the text between numbers as if it were the whole string. */
    int32_t cp;
    int len = tok_utf8_next(s, n, i, &cp);
    if (tok_is_numeric(cp)) return i + (size_t)len;
    size_t end = i + (size_t)len;
    while (end < n) {
        len = tok_utf8_next(s, n, end, &cp);
        if (tok_is_numeric(cp)) break;
        end += (size_t)len;
    }
    return end;
}

size_t tok_pretok_next(tok_pre pre, const uint8_t *s, size_t n, size_t i) {
    switch (pre) {
    case TOK_PRE_GPT2:
        return next_gpt2(s, n, i);
    case TOK_PRE_SMOLLM: /* within a chunk (tok_pretok_chunk) it is GPT-2 */
        return next_gpt2(s, n, i);
    case TOK_PRE_LLAMA3:
        return next_llama3(s, n, i, 3);
    case TOK_PRE_QWEN2:
        return next_llama3(s, n, i, 1);
    case TOK_PRE_NONE:
        break;
    }
    return n;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the other 68 bytes
 * (0-32, 127-160, 173) take the code points from U+0100 up, in byte order. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (b <= 32) return 256u + b;
    if (b >= 127 && b <= 160) return 256u + 33u + (b - 127u);
    if (b == 173) return 256u + 67u;
    return b;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ? -1 : (int)cp;
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(127 + (k - 33));
    if (k == 67) return 173;
    return -1;
}
