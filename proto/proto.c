/* proto/proto.c — the wire messages: a schema per type, msgpack-c for the bytes, jansson in
 * memory. Decoding first walks the raw bytes with a bounded scanner of our own (nothing is
 * allocated before every length, count, depth and type on the wire is known to be acceptable),
 * then lets msgpack-c unpack them and converts the result to jansson, then checks the schema. */
#include "proto.h"

#include <limits.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROTO_MAX_ID 256   /* bytes of an id: worker, attempt, job, run names */
#define PROTO_MAX_PATH 4096 /* bytes of a path (PATH_MAX on Linux) */

/* ---------------------------------------------------------------------------------------------
 * The schema of every type (docs/protocol.md). */

typedef enum proto_kind {
    PROTO_K_STR,  /* a string of min_len..max_len bytes, one of choices when they are given */
    PROTO_K_INT,  /* an integer >= min */
    PROTO_K_BOOL,
    PROTO_K_ANY,  /* any value, null included (reply's body) */
    PROTO_K_INTS, /* an array of integers >= min */
    PROTO_K_MAPS, /* an array of maps, each checked against items */
} proto_kind;

typedef struct proto_field {
    const char *name; /* NULL ends a schema */
    proto_kind kind;
    bool optional;
    size_t min_len, max_len;
    const char *const *choices;
    long long min;
    const struct proto_field *items;
} proto_field;

#define PROTO_ID(n) {.name = (n), .kind = PROTO_K_STR, .min_len = 1, .max_len = PROTO_MAX_ID}
#define PROTO_TEXT(n) {.name = (n), .kind = PROTO_K_STR, .max_len = PROTO_MAX_STRING}
#define PROTO_PATH(n) {.name = (n), .kind = PROTO_K_STR, .min_len = 1, .max_len = PROTO_MAX_PATH}
#define PROTO_ENUM(n, c) {.name = (n), .kind = PROTO_K_STR, .min_len = 1, .max_len = 64, .choices = (c)}
/* Counts, ids, sizes and positions: pid, epoch, step, total, index, memory, lines, since, gpus. */
#define PROTO_UINT(n) {.name = (n), .kind = PROTO_K_INT, .min = 0}
/* A period: zero would mean a busy loop (heartbeat) or a lease that is lost at once. */
#define PROTO_PERIOD(n) {.name = (n), .kind = PROTO_K_INT, .min = 1}
/* exit_code may be negative (a signal), error codes are the coordinator's own. */
#define PROTO_INT(n) {.name = (n), .kind = PROTO_K_INT, .min = LLONG_MIN}
#define PROTO_BOOL(n) {.name = (n), .kind = PROTO_K_BOOL}
#define PROTO_MAPS(n, s) {.name = (n), .kind = PROTO_K_MAPS, .items = (s)}
#define PROTO_END {.name = NULL}

static const char *const proto_device_kinds[] = {"cpu", "cuda", NULL};
static const char *const proto_stages[] = {"init", "align", "distill", "merge", "eval", "prepare", NULL};
static const char *const proto_actions[] = {"cancel", "retry", "hold", "release", "drain", "undrain", NULL};

static const proto_field proto_device[] = {
    PROTO_ENUM("kind", proto_device_kinds),
    PROTO_UINT("index"),
    {.name = "name", .kind = PROTO_K_STR, .max_len = PROTO_MAX_ID},
    PROTO_UINT("memory_mb"),
    PROTO_END,
};
static const proto_field proto_running[] = {PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_END};

static const proto_field proto_hello[] = {
    PROTO_ID("worker"), PROTO_UINT("pid"), PROTO_MAPS("devices", proto_device),
    PROTO_MAPS("running", proto_running), PROTO_END,
};
static const proto_field proto_heartbeat[] = {
    PROTO_ID("worker"), PROTO_MAPS("running", proto_running), PROTO_END,
};
static const proto_field proto_attempt_epoch[] = {PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_END};
static const proto_field proto_progress[] = {
    PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_UINT("step"), PROTO_UINT("total"),
    PROTO_TEXT("metrics"), PROTO_END,
};
static const proto_field proto_checkpoint[] = {
    PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_UINT("step"), PROTO_PATH("path"), PROTO_END,
};
static const proto_field proto_done[] = {
    PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_BOOL("ok"), PROTO_INT("exit_code"),
    PROTO_TEXT("error"),
    /* empty when the attempt failed before writing anything */
    {.name = "output", .kind = PROTO_K_STR, .max_len = PROTO_MAX_PATH},
    PROTO_END,
};
static const proto_field proto_worker_only[] = {PROTO_ID("worker"), PROTO_END};
static const proto_field proto_welcome[] = {
    PROTO_ID("worker_id"), PROTO_PERIOD("heartbeat_ms"), PROTO_PERIOD("lease_ms"), PROTO_END,
};
static const proto_field proto_assign[] = {
    PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_ID("job"), PROTO_ENUM("stage", proto_stages),
    PROTO_TEXT("config"), PROTO_PATH("workdir"),
    {.name = "gpus", .kind = PROTO_K_INTS, .min = 0},
    PROTO_END,
};
static const proto_field proto_cancel[] = {
    PROTO_ID("attempt"), PROTO_UINT("epoch"), PROTO_TEXT("reason"), PROTO_END,
};
static const proto_field proto_none[] = {PROTO_END};
static const proto_field proto_submit[] = {
    PROTO_TEXT("spec"),
    {.name = "name", .kind = PROTO_K_STR, .optional = true, .min_len = 1, .max_len = PROTO_MAX_ID},
    PROTO_END,
};
static const proto_field proto_query[] = {
    {.name = "run", .kind = PROTO_K_STR, .optional = true, .min_len = 1, .max_len = PROTO_MAX_ID},
    PROTO_END,
};
static const proto_field proto_control[] = {
    PROTO_ENUM("action", proto_actions), PROTO_ID("target"), PROTO_END,
};
static const proto_field proto_log_tail[] = {PROTO_ID("job"), PROTO_UINT("lines"), PROTO_END};
static const proto_field proto_events[] = {PROTO_ID("run"), PROTO_UINT("since"), PROTO_END};
static const proto_field proto_reply[] = {
    PROTO_BOOL("ok"),
    {.name = "error", .kind = PROTO_K_STR, .optional = true, .max_len = PROTO_MAX_STRING},
    {.name = "body", .kind = PROTO_K_ANY, .optional = true},
    PROTO_END,
};
static const proto_field proto_error[] = {PROTO_INT("code"), PROTO_TEXT("message"), PROTO_END};

static const struct {
    const char *name;
    const proto_field *fields;
} proto_types[PROTO_TYPE_COUNT] = {
    [PROTO_HELLO] = {"hello", proto_hello},
    [PROTO_HEARTBEAT] = {"heartbeat", proto_heartbeat},
    [PROTO_ACCEPT] = {"accept", proto_attempt_epoch},
    [PROTO_PROGRESS] = {"progress", proto_progress},
    [PROTO_CHECKPOINT] = {"checkpoint", proto_checkpoint},
    [PROTO_DONE] = {"done", proto_done},
    [PROTO_DRAINING] = {"draining", proto_worker_only},
    [PROTO_WELCOME] = {"welcome", proto_welcome},
    [PROTO_ASSIGN] = {"assign", proto_assign},
    [PROTO_CANCEL] = {"cancel", proto_cancel},
    [PROTO_FENCE] = {"fence", proto_attempt_epoch},
    [PROTO_DRAIN] = {"drain", proto_none},
    [PROTO_SUBMIT] = {"submit", proto_submit},
    [PROTO_QUERY] = {"query", proto_query},
    [PROTO_CONTROL] = {"control", proto_control},
    [PROTO_LOG_TAIL] = {"log_tail", proto_log_tail},
    [PROTO_EVENTS] = {"events", proto_events},
    [PROTO_WORKERS] = {"workers", proto_none},
    [PROTO_REPLY] = {"reply", proto_reply},
    [PROTO_ERROR] = {"error", proto_error},
};

const char *proto_type_name(proto_type t) {
    /* Never NULL, so a caller may print whatever it holds. */
    if ((unsigned)t >= PROTO_TYPE_COUNT) return "(unknown)";
    return proto_types[t].name;
}

/* ---------------------------------------------------------------------------------------------
 * Helpers for error messages. */

/* s (n bytes, from the wire or a caller) as text that is safe in a log line: printable ASCII as
 * is, other bytes as \xNN, at most 64 bytes then "...". */
static const char *proto_quote(char *out, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 64 || o + 8 >= cap) {
            memcpy(out + o, "...", 4);
            return out;
        }
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o] = 0;
    return out;
}

static bool proto_streq(const char *a, size_t alen, const char *b) {
    return strlen(b) == alen && memcmp(a, b, alen) == 0;
}

/* ---------------------------------------------------------------------------------------------
 * Schema checks, the same for encode and decode. */

typedef struct proto_ctx {
    const char *type; /* the type's name, the first word of every error */
    xd_err *e;
} proto_ctx;

static int proto_check_map(const proto_ctx *c, const proto_field *schema, const json_t *obj,
                           const char *prefix);

static int proto_check_int(const proto_ctx *c, const json_t *v, long long min, const char *path) {
    if (!json_is_integer(v)) return xd_fail(c->e, "%s: field \"%s\" must be an integer", c->type, path);
    long long x = json_integer_value(v);
    if (x < min)
        return xd_fail(c->e, "%s: field \"%s\" must be at least %lld (not %lld)", c->type, path, min, x);
    return 0;
}

static int proto_check_value(const proto_ctx *c, const proto_field *f, const json_t *v,
                             const char *path) {
    char q[300];
    switch (f->kind) {
    case PROTO_K_STR: {
        if (!json_is_string(v)) return xd_fail(c->e, "%s: field \"%s\" must be a string", c->type, path);
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (n < f->min_len) return xd_fail(c->e, "%s: field \"%s\" must not be empty", c->type, path);
        if (n > f->max_len)
            return xd_fail(c->e, "%s: field \"%s\" has %zu bytes, more than %zu", c->type, path, n,
                           f->max_len);
        if (f->choices) {
            for (const char *const *ch = f->choices; *ch; ch++)
                if (proto_streq(s, n, *ch)) return 0;
            char list[200] = "";
            size_t o = 0;
            for (const char *const *ch = f->choices; *ch; ch++)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", *ch);
            return xd_fail(c->e, "%s: field \"%s\" must be one of %s (not \"%s\")", c->type, path,
                           list, proto_quote(q, sizeof q, s, n));
        }
        return 0;
    }
    case PROTO_K_INT:
        return proto_check_int(c, v, f->min, path);
    case PROTO_K_BOOL:
        if (!json_is_boolean(v)) return xd_fail(c->e, "%s: field \"%s\" must be a boolean", c->type, path);
        return 0;
    case PROTO_K_ANY:
        return 0;
    case PROTO_K_INTS: {
        if (!json_is_array(v))
            return xd_fail(c->e, "%s: field \"%s\" must be an array of integers", c->type, path);
        for (size_t i = 0; i < json_array_size(v); i++) {
            char sub[320];
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            if (proto_check_int(c, json_array_get(v, i), f->min, sub)) return -1;
        }
        return 0;
    }
    case PROTO_K_MAPS: {
        if (!json_is_array(v))
            return xd_fail(c->e, "%s: field \"%s\" must be an array of maps", c->type, path);
        for (size_t i = 0; i < json_array_size(v); i++) {
            char sub[320];
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            const json_t *item = json_array_get(v, i);
            if (!json_is_object(item)) return xd_fail(c->e, "%s: field \"%s\" must be a map", c->type, sub);
            size_t n = strlen(sub);
            snprintf(sub + n, sizeof sub - n, ".");
            if (proto_check_map(c, f->items, item, sub)) return -1;
        }
        return 0;
    }
    }
    return xd_fail(c->e, "%s: field \"%s\" has no kind", c->type, path);
}

/* Every key of obj is in schema, every required field is present, every value has its kind.
 * prefix names where obj sits ("" at the top, "devices[1]." inside an array). */
static int proto_check_map(const proto_ctx *c, const proto_field *schema, const json_t *obj,
                           const char *prefix) {
    const char *key;
    size_t klen;
    json_t *v;
    char q[300], path[256];
    json_object_keylen_foreach((json_t *)obj, key, klen, v) {
        const proto_field *f = schema;
        while (f->name && !proto_streq(key, klen, f->name)) f++;
        if (!f->name)
            return xd_fail(c->e, "%s: unknown field \"%s%s\"", c->type, prefix,
                           proto_quote(q, sizeof q, key, klen));
    }
    for (const proto_field *f = schema; f->name; f++) {
        snprintf(path, sizeof path, "%s%s", prefix, f->name);
        v = json_object_get(obj, f->name);
        if (!v) {
            if (f->optional) continue;
            return xd_fail(c->e, "%s: missing field \"%s\"", c->type, path);
        }
        if (proto_check_value(c, f, v, path)) return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Encoding. */

/* The decoder's limits, applied to what is about to be sent, so that an encoder bug (or a reply
 * body grown too big) is an error here and not a message every peer refuses. depth counts the
 * containers this value sits in, itself included: the message map is 1. */
static int proto_check_limits(const proto_ctx *c, const json_t *v, int depth) {
    if (json_is_string(v)) {
        size_t n = json_string_length(v);
        if (n > PROTO_MAX_STRING)
            return xd_fail(c->e, "%s: string of %zu bytes exceeds 1 MiB", c->type, n);
        return 0;
    }
    if (!json_is_array(v) && !json_is_object(v)) return 0;
    if (depth > PROTO_MAX_DEPTH) return xd_fail(c->e, "%s: nesting deeper than %d", c->type, PROTO_MAX_DEPTH);
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n > PROTO_MAX_ITEMS)
            return xd_fail(c->e, "%s: array of %zu items exceeds %u", c->type, n, PROTO_MAX_ITEMS);
        for (size_t i = 0; i < n; i++)
            if (proto_check_limits(c, json_array_get(v, i), depth + 1)) return -1;
        return 0;
    }
    size_t n = json_object_size(v);
    /* the message map also holds "v" and "t" */
    if (n + (depth == 1 ? 2 : 0) > PROTO_MAX_ITEMS)
        return xd_fail(c->e, "%s: map of %zu pairs exceeds %u", c->type, n, PROTO_MAX_ITEMS);
    const char *key;
    size_t klen;
    json_t *x;
    json_object_keylen_foreach((json_t *)v, key, klen, x) {
        char q[300];
        if (memchr(key, 0, klen))
            return xd_fail(c->e, "%s: map key \"%s\" holds a NUL byte", c->type, proto_quote(q, sizeof q, key, klen));
        if (klen > PROTO_MAX_STRING)
            return xd_fail(c->e, "%s: string of %zu bytes exceeds 1 MiB", c->type, klen);
        if (proto_check_limits(c, x, depth + 1)) return -1;
    }
    return 0;
}

static int proto_pack_str(msgpack_packer *pk, const char *s, size_t n) {
    if (msgpack_pack_str(pk, n)) return -1;
    return n ? msgpack_pack_str_body(pk, s, n) : 0;
}

/* Depth is bounded by proto_check_limits, which runs first. */
static int proto_pack(msgpack_packer *pk, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (msgpack_pack_map(pk, json_object_size(v))) return -1;
        const char *key;
        size_t klen;
        json_t *x;
        json_object_keylen_foreach((json_t *)v, key, klen, x) {
            if (proto_pack_str(pk, key, klen) || proto_pack(pk, x)) return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (msgpack_pack_array(pk, n)) return -1;
        for (size_t i = 0; i < n; i++)
            if (proto_pack(pk, json_array_get(v, i))) return -1;
        return 0;
    }
    case JSON_STRING:
        return proto_pack_str(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return -1;
}

int proto_encode(proto_type t, const json_t *fields, void **buf, size_t *len, xd_err *e) {
    *buf = NULL;
    *len = 0;
    if ((unsigned)t >= PROTO_TYPE_COUNT) return xd_fail(e, "unknown message type %d", (int)t);
    proto_ctx c = {proto_types[t].name, e};
    /* NULL fields stand for {}: drain and workers have none. */
    json_t *empty = NULL;
    if (!fields) fields = empty = json_object();
    if (!fields) return xd_fail(e, "%s: out of memory", c.type);
    int rc = -1;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (!json_is_object(fields)) {
        xd_fail(e, "%s: the fields must be a JSON object", c.type);
        goto out;
    }
    if (proto_check_map(&c, proto_types[t].fields, fields, "") || proto_check_limits(&c, fields, 1))
        goto out;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const char *key;
    size_t klen;
    json_t *v;
    int bad = msgpack_pack_map(&pk, 2 + json_object_size(fields)) || proto_pack_str(&pk, "v", 1) ||
              msgpack_pack_int(&pk, PROTO_VERSION) || proto_pack_str(&pk, "t", 1) ||
              proto_pack_str(&pk, c.type, strlen(c.type));
    json_object_keylen_foreach((json_t *)fields, key, klen, v) {
        if (bad) break;
        bad = proto_pack_str(&pk, key, klen) || proto_pack(&pk, v);
    }
    if (bad) {
        xd_fail(e, "%s: out of memory while packing", c.type);
        goto out;
    }
    if (sb.size > PROTO_MAX_MESSAGE) {
        xd_fail(e, "%s: message of %zu bytes exceeds 4 MiB", c.type, sb.size);
        goto out;
    }
    *len = sb.size;
    *buf = msgpack_sbuffer_release(&sb);
    rc = 0;
out:
    msgpack_sbuffer_destroy(&sb);
    json_decref(empty);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * The bounded pre-scan: walks the encoding without allocating. Every length and count is checked
 * against the limits and against the bytes left before it is trusted, so a header that declares
 * 2^32 items in a 10-byte message fails at once; recursion is at most PROTO_MAX_DEPTH deep. */

typedef struct proto_scan {
    const uint8_t *p;
    size_t len, pos;
} proto_scan;

static size_t proto_left(const proto_scan *s) { return s->len - s->pos; }

/* Big-endian unsigned of n bytes at the cursor (the caller checked they are there). */
static uint64_t proto_be(proto_scan *s, size_t n) {
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x = x << 8 | s->p[s->pos + i];
    s->pos += n;
    return x;
}

static int proto_need(proto_scan *s, size_t n, const char *what, xd_err *e) {
    if (n > proto_left(s)) return xd_fail(e, "truncated message: %s with %zu left", what, proto_left(s));
    return 0;
}

/* What a leading byte announces, for errors. */
static const char *proto_byte_kind(uint8_t b) {
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) return "an integer";
    if (b <= 0x8f || b == 0xde || b == 0xdf) return "a map";
    if (b <= 0x9f || b == 0xdc || b == 0xdd) return "an array";
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return "a string";
    switch (b) {
    case 0xc0: return "nil";
    case 0xc2: case 0xc3: return "a boolean";
    case 0xca: case 0xcb: return "a float";
    case 0xc4: case 0xc5: case 0xc6: return "binary data";
    case 0xc1: return "the reserved byte 0xc1";
    default: return "an extension type";
    }
}

/* The same UTF-8 jansson accepts: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool proto_utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((b & 0xe0) == 0xc0) k = 1, cp = b & 0x1f, min = 0x80;
        else if ((b & 0xf0) == 0xe0) k = 2, cp = b & 0x0f, min = 0x800;
        else if ((b & 0xf8) == 0xf0) k = 3, cp = b & 0x07, min = 0x10000;
        else return false;
        if (n - i - 1 < k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += k + 1;
    }
    return true;
}

static int proto_scan_value(proto_scan *s, int depth, bool is_key, xd_err *e);

static int proto_scan_string(proto_scan *s, size_t n, bool is_key, xd_err *e) {
    if (n > PROTO_MAX_STRING) return xd_fail(e, "string of %zu bytes exceeds 1 MiB", n);
    char what[64];
    snprintf(what, sizeof what, "a string of %zu bytes", n);
    if (proto_need(s, n, what, e)) return -1;
    const uint8_t *p = s->p + s->pos;
    if (!proto_utf8_ok(p, n)) return xd_fail(e, "a string at byte %zu is not valid UTF-8", s->pos);
    /* jansson keys are C strings on the way in: a NUL would cut the key short */
    if (is_key && memchr(p, 0, n)) return xd_fail(e, "a map key at byte %zu holds a NUL byte", s->pos);
    s->pos += n;
    return 0;
}

static int proto_scan_container(proto_scan *s, uint64_t n, bool is_map, int depth, xd_err *e) {
    if (depth + 1 > PROTO_MAX_DEPTH) return xd_fail(e, "nesting deeper than %d", PROTO_MAX_DEPTH);
    if (n > PROTO_MAX_ITEMS)
        return xd_fail(e, "%s of %llu %s exceeds %u", is_map ? "map" : "array", (unsigned long long)n,
                       is_map ? "pairs" : "items", PROTO_MAX_ITEMS);
    /* every value takes at least one byte */
    char what[64];
    snprintf(what, sizeof what, "%s of %llu %s", is_map ? "a map" : "an array", (unsigned long long)n,
             is_map ? "pairs" : "items");
    if (proto_need(s, (size_t)n * (is_map ? 2 : 1), what, e)) return -1;
    for (uint64_t i = 0; i < n; i++) {
        if (is_map && proto_scan_value(s, depth + 1, true, e)) return -1;
        if (proto_scan_value(s, depth + 1, false, e)) return -1;
    }
    return 0;
}

/* One value at the cursor; depth counts the containers it sits in. */
static int proto_scan_value(proto_scan *s, int depth, bool is_key, xd_err *e) {
    if (proto_need(s, 1, "a value", e)) return -1;
    size_t at = s->pos;
    uint8_t b = s->p[s->pos++];
    bool str = (b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb);
    if (is_key && !str) return xd_fail(e, "a map key at byte %zu must be a string, not %s", at, proto_byte_kind(b));
    if (b <= 0x7f || b >= 0xe0) return 0; /* fixint */
    if (b <= 0x8f) return proto_scan_container(s, b & 0x0f, true, depth, e);
    if (b <= 0x9f) return proto_scan_container(s, b & 0x0f, false, depth, e);
    if (b <= 0xbf) return proto_scan_string(s, b & 0x1f, is_key, e);
    static const uint8_t width[4] = {1, 2, 4, 8};
    switch (b) {
    case 0xc0: case 0xc2: case 0xc3:
        return 0;
    case 0xca: case 0xcb: {
        size_t w = b == 0xca ? 4 : 8;
        if (proto_need(s, w, b == 0xca ? "a 4-byte float" : "an 8-byte float", e)) return -1;
        uint64_t bits = proto_be(s, w);
        double d;
        if (w == 4) {
            uint32_t b32 = (uint32_t)bits;
            float f;
            memcpy(&f, &b32, 4);
            d = f;
        } else {
            memcpy(&d, &bits, 8);
        }
        /* JSON has no NaN or infinity (jansson refuses them) */
        if (!isfinite(d)) return xd_fail(e, "a float at byte %zu is not finite", at);
        return 0;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        size_t w = width[b - 0xcc];
        if (proto_need(s, w, "an integer", e)) return -1;
        uint64_t x = proto_be(s, w);
        /* jansson integers are signed 64-bit */
        if (x > (uint64_t)INT64_MAX)
            return xd_fail(e, "integer %llu at byte %zu exceeds the signed 64-bit range", (unsigned long long)x, at);
        return 0;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        if (proto_need(s, width[b - 0xd0], "an integer", e)) return -1;
        s->pos += width[b - 0xd0];
        return 0;
    case 0xd9: case 0xda: case 0xdb: {
        size_t w = width[b - 0xd9];
        if (proto_need(s, w, "a string length", e)) return -1;
        return proto_scan_string(s, (size_t)proto_be(s, w), is_key, e);
    }
    case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        size_t w = (b & 1) ? 4 : 2;
        bool is_map = b >= 0xde;
        if (proto_need(s, w, is_map ? "a map length" : "an array length", e)) return -1;
        return proto_scan_container(s, proto_be(s, w), is_map, depth, e);
    }
    default:
        return xd_fail(e, "%s at byte %zu is not accepted", proto_byte_kind(b), at);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Decoding. */

/* msgpack-c's object (already scanned: bounded, string keys, valid UTF-8, no bin or ext) as a
 * new jansson value. Duplicate keys are refused: two readers could otherwise take different
 * ones. */
static json_t *proto_to_json(const msgpack_object *o, xd_err *e) {
    json_t *v = NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: v = json_integer((json_int_t)o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: v = json_integer((json_int_t)o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: v = json_real(o->via.f64); break;
    case MSGPACK_OBJECT_STR:
        v = json_stringn(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        v = json_array();
        for (uint32_t i = 0; v && i < o->via.array.size; i++) {
            json_t *x = proto_to_json(&o->via.array.ptr[i], e);
            if (!x || json_array_append_new(v, x)) {
                json_decref(v);
                return NULL;
            }
        }
        break;
    case MSGPACK_OBJECT_MAP:
        v = json_object();
        for (uint32_t i = 0; v && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                json_decref(v);
                xd_fail(e, "a map key must be a string");
                return NULL;
            }
            const char *k = kv->key.via.str.size ? kv->key.via.str.ptr : "";
            size_t klen = kv->key.via.str.size;
            if (json_object_getn(v, k, klen)) {
                char q[300];
                xd_fail(e, "duplicate map key \"%s\"", proto_quote(q, sizeof q, k, klen));
                json_decref(v);
                return NULL;
            }
            json_t *x = proto_to_json(&kv->val, e);
            if (!x || json_object_setn_new(v, k, klen, x)) {
                json_decref(v);
                return NULL;
            }
        }
        break;
    default:
        xd_fail(e, "unexpected msgpack type %d", (int)o->type);
        return NULL;
    }
    if (!v) xd_fail(e, "out of memory while decoding");
    return v;
}

int proto_decode(const void *buf, size_t len, proto_type *t, json_t **fields, xd_err *e) {
    *fields = NULL;
    if (len == 0) return xd_fail(e, "empty message");
    if (len > PROTO_MAX_MESSAGE) return xd_fail(e, "message of %zu bytes exceeds 4 MiB", len);
    proto_scan s = {buf, len, 0};
    uint8_t first = s.p[0];
    if (!((first >= 0x80 && first <= 0x8f) || first == 0xde || first == 0xdf))
        return xd_fail(e, "a message must be a map, not %s", proto_byte_kind(first));
    if (proto_scan_value(&s, 0, false, e)) return -1;
    if (s.pos != len) return xd_fail(e, "%zu trailing bytes after the message", len - s.pos);

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, buf, len, &off);
    json_t *obj = NULL;
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        xd_fail(e, "msgpack-c refused a message the scan accepted (%d)", (int)ur);
    else
        obj = proto_to_json(&u.data, e);
    msgpack_unpacked_destroy(&u);
    if (!obj) return -1;

    char q[300];
    json_t *v = json_object_get(obj, "v"), *tn = json_object_get(obj, "t");
    if (!v) {
        xd_fail(e, "message has no version field \"v\"");
        goto fail;
    }
    if (!json_is_integer(v)) {
        xd_fail(e, "field \"v\" must be an integer");
        goto fail;
    }
    if (json_integer_value(v) != PROTO_VERSION) {
        xd_fail(e, "version %lld is not spoken here (%d is)", (long long)json_integer_value(v), PROTO_VERSION);
        goto fail;
    }
    if (!tn) {
        xd_fail(e, "message has no type field \"t\"");
        goto fail;
    }
    if (!json_is_string(tn)) {
        xd_fail(e, "field \"t\" must be a string");
        goto fail;
    }
    int found = -1;
    for (int i = 0; i < PROTO_TYPE_COUNT && found < 0; i++)
        if (proto_streq(json_string_value(tn), json_string_length(tn), proto_types[i].name)) found = i;
    if (found < 0) {
        xd_fail(e, "unknown message type \"%s\"", proto_quote(q, sizeof q, json_string_value(tn), json_string_length(tn)));
        goto fail;
    }
    json_object_del(obj, "v");
    json_object_del(obj, "t");
    proto_ctx c = {proto_types[found].name, e};
    if (proto_check_map(&c, proto_types[found].fields, obj, "")) goto fail;
    *t = (proto_type)found;
    *fields = obj;
    return 0;
fail:
    json_decref(obj);
    return -1;
}
