/* coordinator/util.c — text buffers, a string-keyed hash map (open addressing, linear probing,
 * backward-shift deletion) and clocks. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool buf_reserve(coord_buf *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) {
        b->oom = true;
        return false;
    }
    b->data = grown;
    b->cap = cap;
    return true;
}

void coord_buf_put(coord_buf *b, const char *s) {
    size_t n = strlen(s);
    if (!buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}

void coord_buf_printf(coord_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *coord_buf_take(coord_buf *b) {
    char *s = b->oom ? NULL : b->data ? b->data : strdup("");
    if (b->oom) free(b->data);
    *b = (coord_buf){0};
    return s;
}

void coord_buf_free(coord_buf *b) {
    free(b->data);
    *b = (coord_buf){0};
}

static uint64_t hash_key(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static size_t find_slot(const coord_map *m, const char *key) {
    size_t mask = m->cap - 1, i = (size_t)hash_key(key) & mask;
    while (m->slots[i].key && strcmp(m->slots[i].key, key)) i = (i + 1) & mask;
    return i;
}

void *coord_map_get(const coord_map *m, const char *key) {
    if (!m->cap) return NULL;
    size_t i = find_slot(m, key);
    return m->slots[i].key ? m->slots[i].value : NULL;
}

static int map_grow(coord_map *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    coord_map_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    coord_map old = *m;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key) m->slots[find_slot(m, old.slots[i].key)] = old.slots[i];
    free(old.slots);
    return 0;
}

int coord_map_put(coord_map *m, const char *key, void *value) {
    if ((m->count + 1) * 4 > m->cap * 3 && map_grow(m)) return -1;
    size_t i = find_slot(m, key);
    if (m->slots[i].key) {
        m->slots[i].value = value;
        return 0;
    }
    char *copy = strdup(key);
    if (!copy) return -1;
    m->slots[i] = (coord_map_slot){copy, value};
    m->count++;
    return 0;
}

void *coord_map_remove(coord_map *m, const char *key) {
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1, i = find_slot(m, key);
    if (!m->slots[i].key) return NULL;
    void *value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->count--;
    /* backward shift: move later members of the probe run into the hole when they may live there */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = (size_t)hash_key(m->slots[j].key) & mask;
        bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    return value;
}

bool coord_map_next(const coord_map *m, size_t *i, const char **key, void **value) {
    for (; *i < m->cap; (*i)++)
        if (m->slots[*i].key) {
            if (key) *key = m->slots[*i].key;
            if (value) *value = m->slots[*i].value;
            (*i)++;
            return true;
        }
    return false;
}

void coord_map_free(coord_map *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->slots[i].key);
    free(m->slots);
    *m = (coord_map){0};
}

int64_t coord_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t coord_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void coord_utf8_clean(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = n > 0;
        for (int k = 1; ok && k < n; k++) ok = (p[k] & 0xc0) == 0x80; /* stops at the NUL too */
        if (ok && n == 2) ok = *p >= 0xc2;                             /* no overlong forms */
        if (ok && n == 3) ok = !(*p == 0xe0 && p[1] < 0xa0) && !(*p == 0xed && p[1] >= 0xa0);
        if (ok && n == 4) ok = *p <= 0xf4 && !(*p == 0xf0 && p[1] < 0x90) && !(*p == 0xf4 && p[1] >= 0x90);
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}
