/* The wire codec (proto/): every type round-trips; every schema and limit error names its
 * problem; hostile byte strings (huge declared sizes, deep nesting, foreign types, truncation at
 * every length, every byte of a valid message replaced) are refused cleanly, never a crash. */
#include "proto/proto.h"
#include "test.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- helpers ---- */

/* Any JSON value as msgpack, without proto's checks: the way to build messages proto_encode
 * would refuse. */
static void raw_pack(msgpack_packer *pk, const json_t *v) {
    const char *key;
    size_t klen;
    json_t *x;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(v));
        json_object_keylen_foreach((json_t *)v, key, klen, x) {
            msgpack_pack_str_with_body(pk, key, klen);
            raw_pack(pk, x);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++) raw_pack(pk, json_array_get(v, i));
        break;
    case JSON_STRING: msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(v)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(v)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

/* Decodes the raw packing of whole (stolen): returns rc and fills e; fields are dropped. */
static int decode_raw(json_t *whole, xd_err *e) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    raw_pack(&pk, whole);
    json_decref(whole);
    proto_type t;
    json_t *f = NULL;
    memset(e->msg, 0, sizeof e->msg);
    int rc = proto_decode(sb.data, sb.size, &t, &f, e);
    json_decref(f);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int decode_bytes(const void *b, size_t n, xd_err *e) {
    proto_type t;
    json_t *f = NULL;
    memset(e->msg, 0, sizeof e->msg);
    int rc = proto_decode(b, n, &t, &f, e);
    json_decref(f);
    return rc;
}

/* encode then decode: same type, equal fields. Steals fields. */
static void round_trip(proto_type t, json_t *fields) {
    void *buf = NULL;
    size_t len = 0;
    xd_err e = {{0}};
    int rc = proto_encode(t, fields, &buf, &len, &e);
    CHECK_MSG(rc == 0, "%s: encode: %s", proto_type_name(t), e.msg);
    if (rc == 0) {
        proto_type t2 = PROTO_TYPE_COUNT;
        json_t *back = NULL;
        rc = proto_decode(buf, len, &t2, &back, &e);
        CHECK_MSG(rc == 0, "%s: decode: %s", proto_type_name(t), e.msg);
        CHECK(t2 == t);
        json_t *want = fields ? json_incref(fields) : json_object();
        CHECK_MSG(back && json_equal(back, want), "%s: fields differ", proto_type_name(t));
        json_decref(want);
        json_decref(back);
    }
    free(buf);
    json_decref(fields);
}

static json_t *J(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    json_error_t err;
    json_t *v = json_vpack_ex(&err, 0, fmt, ap);
    va_end(ap);
    if (!v) {
        fprintf(stderr, "json_pack(%s): %s\n", fmt, err.text);
        abort();
    }
    return v;
}

static bool contains(const void *hay, size_t n, const void *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp((const char *)hay + i, needle, m)) return true;
    return false;
}

static json_t *nested_arrays(int n, json_t *inner) {
    for (int i = 0; i < n; i++) inner = J("[o]", inner);
    return inner;
}

/* ---- round trips ---- */

static void test_round_trips(void) {
    round_trip(PROTO_HELLO,
               J("{s:s, s:I, s:[{s:s, s:i, s:s, s:I}, {s:s, s:i, s:s, s:I}], s:[{s:s, s:I}]}",
                 "worker", "gpu-node-07", "pid", (json_int_t)41234, "devices", "kind", "cuda", "index", 0,
                 "name", "NVIDIA H100 80GB HBM3", "memory_mb", (json_int_t)81559, "kind", "cpu", "index",
                 0, "name", "AMD EPYC 9454", "memory_mb", (json_int_t)131072, "running", "attempt",
                 "run-3/distill/a2", "epoch", (json_int_t)17));
    round_trip(PROTO_HELLO, J("{s:s, s:i, s:[], s:[]}", "worker", "w", "pid", 1, "devices", "running"));
    round_trip(PROTO_HEARTBEAT, J("{s:s, s:[{s:s, s:i}, {s:s, s:i}]}", "worker", "gpu-node-07", "running",
                                  "attempt", "a1", "epoch", 3, "attempt", "a2", "epoch", 4));
    round_trip(PROTO_ACCEPT, J("{s:s, s:i}", "attempt", "run-3/distill/a2", "epoch", 17));
    round_trip(PROTO_PROGRESS,
               J("{s:s, s:i, s:i, s:i, s:s}", "attempt", "a2", "epoch", 17, "step", 1200, "total", 20000,
                 "metrics", "{\"step\":1200,\"loss\":2.3412,\"lr\":0.0003,\"tok_s\":48211.5}"));
    round_trip(PROTO_CHECKPOINT, J("{s:s, s:i, s:i, s:s}", "attempt", "a2", "epoch", 17, "step", 1000,
                                   "path", "/runs/run-3/distill/ckpt-001000"));
    round_trip(PROTO_DONE, J("{s:s, s:i, s:b, s:i, s:s, s:s}", "attempt", "a2", "epoch", 17, "ok", 1,
                             "exit_code", 0, "error", "", "output", "/runs/run-3/distill/final"));
    round_trip(PROTO_DONE, J("{s:s, s:i, s:b, s:i, s:s, s:s}", "attempt", "a3", "epoch", 18, "ok", 0,
                             "exit_code", -9, "error", "killed by signal 9", "output", ""));
    round_trip(PROTO_DRAINING, J("{s:s}", "worker", "gpu-node-07"));
    round_trip(PROTO_WELCOME, J("{s:s, s:i, s:i}", "worker_id", "w-0001", "heartbeat_ms", 2000, "lease_ms", 15000));
    round_trip(PROTO_ASSIGN, J("{s:s, s:i, s:s, s:s, s:s, s:s, s:[i, i, i]}", "attempt", "run-3/align/a1", "epoch",
                               5, "job", "run-3/align", "stage", "align", "config",
                               "stage: align\nsteps: 2000\nlr: 3.0e-4\nbatch: 16\n", "workdir",
                               "/runs/run-3/align", "gpus", 0, 1, 7));
    round_trip(PROTO_ASSIGN, J("{s:s, s:i, s:s, s:s, s:s, s:s, s:[]}", "attempt", "a", "epoch", 0, "job", "j",
                               "stage", "prepare", "config", "", "workdir", "/w", "gpus"));
    round_trip(PROTO_CANCEL, J("{s:s, s:i, s:s}", "attempt", "a2", "epoch", 17, "reason", "cancelled by the user"));
    round_trip(PROTO_FENCE, J("{s:s, s:i}", "attempt", "a2", "epoch", 17));
    round_trip(PROTO_DRAIN, J("{}"));
    round_trip(PROTO_DRAIN, NULL); /* NULL fields stand for {} */
    round_trip(PROTO_SUBMIT, J("{s:s, s:s}", "spec", "name: tiny\nstages:\n  - init\n  - distill\n", "name", "tiny"));
    round_trip(PROTO_SUBMIT, J("{s:s}", "spec", "stages: [init]\n"));
    round_trip(PROTO_QUERY, J("{s:s}", "run", "run-3"));
    round_trip(PROTO_QUERY, J("{}"));
    const char *actions[] = {"cancel", "retry", "hold", "release", "drain", "undrain"};
    for (int i = 0; i < 6; i++) round_trip(PROTO_CONTROL, J("{s:s, s:s}", "action", actions[i], "target", "run-3/align"));
    round_trip(PROTO_LOG_TAIL, J("{s:s, s:i}", "job", "run-3/distill", "lines", 200));
    round_trip(PROTO_EVENTS, J("{s:s, s:I}", "run", "run-3", "since", (json_int_t)1234567));
    round_trip(PROTO_WORKERS, J("{}"));
    round_trip(PROTO_REPLY, J("{s:b}", "ok", 1));
    round_trip(PROTO_REPLY, J("{s:b, s:s}", "ok", 0, "error", "no run \"run-9\""));
    round_trip(PROTO_REPLY, J("{s:b, s:n}", "ok", 1, "body"));
    round_trip(PROTO_REPLY, J("{s:b, s:s}", "ok", 1, "body", "plain text"));
    round_trip(PROTO_REPLY,
               J("{s:b, s:{s:[{s:s, s:s, s:f, s:b, s:n, s:I, s:I, s:[i, f]}], s:{}}}", "ok", 1, "body",
                 "runs", "id", "run-3", "state", "running", "progress", 0.4375, "held", 0, "finished",
                 "started", (json_int_t)INT64_MAX, "min", (json_int_t)INT64_MIN, "mixed", -1, 1e300,
                 "empty"));
    /* strings with a NUL byte and with non-ASCII text stay what they were */
    round_trip(PROTO_REPLY, J("{s:b, s:[s%, s]}", "ok", 1, "body", "a\0b", (size_t)3, "Grüße, 世界 🚀"));
    round_trip(PROTO_ERROR, J("{s:i, s:s}", "code", 400, "message", "progress: unknown field \"stepp\""));
    round_trip(PROTO_ERROR, J("{s:i, s:s}", "code", -3, "message", ""));

    for (int t = 0; t < PROTO_TYPE_COUNT; t++) CHECK(strlen(proto_type_name((proto_type)t)) > 0);
    CHECK(!strcmp(proto_type_name(PROTO_LOG_TAIL), "log_tail"));
    CHECK(!strcmp(proto_type_name(PROTO_ERROR), "error"));
    CHECK(!strcmp(proto_type_name(PROTO_TYPE_COUNT), "(unknown)"));
}

/* The wire form: {"v":1,"t":...} first, integers compact, reals as float64. */
static void test_wire_form(void) {
    void *buf;
    size_t len;
    xd_err e;
    json_t *f = J("{s:b, s:f}", "ok", 1, "body", 0.5);
    CHECK(proto_encode(PROTO_REPLY, f, &buf, &len, &e) == 0);
    const uint8_t want[] = {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa5, 'r', 'e', 'p', 'l', 'y'};
    CHECK(len > sizeof want && !memcmp(buf, want, sizeof want));
    CHECK(contains(buf, len, "\xcb\x3f\xe0\0\0\0\0\0\0", 9)); /* 0.5 as float64 */
    free(buf);
    json_decref(f);

    /* a float32 from another encoder reads as a real */
    const uint8_t f32[] = {0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa5, 'r', 'e', 'p', 'l', 'y',
                           0xa2, 'o', 'k', 0xc3, 0xa4, 'b', 'o', 'd', 'y', 0xca, 0x3f, 0xc0, 0, 0};
    proto_type t;
    json_t *out = NULL;
    CHECK(proto_decode(f32, sizeof f32, &t, &out, &e) == 0);
    CHECK(t == PROTO_REPLY && json_is_real(json_object_get(out, "body")) &&
          json_real_value(json_object_get(out, "body")) == 1.5);
    json_decref(out);
    /* integers in wide forms (int64 holding 5, uint32 holding 0) read as integers */
    const uint8_t wide[] = {0x84, 0xa1, 'v', 0xd3, 0, 0, 0, 0, 0, 0, 0, 1, 0xa1, 't', 0xa5, 'f', 'e', 'n', 'c', 'e',
                            0xa7, 'a', 't', 't', 'e', 'm', 'p', 't', 0xa1, 'a', 0xa5, 'e', 'p', 'o', 'c', 'h',
                            0xce, 0, 0, 0, 5};
    CHECK(proto_decode(wide, sizeof wide, &t, &out, &e) == 0);
    CHECK(t == PROTO_FENCE && json_integer_value(json_object_get(out, "epoch")) == 5);
    json_decref(out);
}

/* ---- schema errors ---- */

static void test_schema_errors(void) {
    xd_err e;
    int rc;
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:i, s:i, s:s}", "v", 1, "t", "progress", "attempt", "a", "epoch", 1,
                      "stepp", 2, "total", 3, "metrics", "{}"), &e);
    CHECK_ERR_CONTAINS(rc, e, "progress: unknown field \"stepp\"");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:i, s:i, s:s, s:s}", "v", 1, "t", "done", "attempt", "a", "epoch", 1,
                      "ok", 1, "exit_code", 0, "error", "", "output", ""), &e);
    CHECK_ERR_CONTAINS(rc, e, "done: field \"ok\" must be a boolean");
    rc = decode_raw(J("{s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:[]}", "v", 1, "t", "assign", "attempt", "a", "job", "j",
                      "stage", "init", "config", "", "workdir", "/w", "gpus"), &e);
    CHECK_ERR_CONTAINS(rc, e, "assign: missing field \"epoch\"");
    rc = decode_raw(J("{s:i, s:s}", "v", 2, "t", "drain"), &e);
    CHECK_ERR_CONTAINS(rc, e, "version 2 is not spoken here (1 is)");
    rc = decode_raw(J("{s:s}", "t", "drain"), &e);
    CHECK_ERR_CONTAINS(rc, e, "no version field \"v\"");
    rc = decode_raw(J("{s:s, s:s}", "v", "1", "t", "drain"), &e);
    CHECK_ERR_CONTAINS(rc, e, "field \"v\" must be an integer");
    rc = decode_raw(J("{s:i, s:s}", "v", 1, "t", "x"), &e);
    CHECK_ERR_CONTAINS(rc, e, "unknown message type \"x\"");
    rc = decode_raw(J("{s:i, s:s%}", "v", 1, "t", "drain\0x", (size_t)7), &e);
    CHECK_ERR_CONTAINS(rc, e, "unknown message type \"drain\\x00x\"");
    rc = decode_raw(J("{s:i}", "v", 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "no type field \"t\"");
    rc = decode_raw(J("{s:i, s:i}", "v", 1, "t", 3), &e);
    CHECK_ERR_CONTAINS(rc, e, "field \"t\" must be a string");
    rc = decode_raw(J("{s:i, s:s, s:s, s:s}", "v", 1, "t", "control", "action", "explode", "target", "r"), &e);
    CHECK_ERR_CONTAINS(rc, e, "control: field \"action\" must be one of cancel, retry, hold, release, drain, undrain (not \"explode\")");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i}", "v", 1, "t", "accept", "attempt", "a", "epoch", -1), &e);
    CHECK_ERR_CONTAINS(rc, e, "accept: field \"epoch\" must be at least 0 (not -1)");
    rc = decode_raw(J("{s:i, s:s, s:s, s:f}", "v", 1, "t", "accept", "attempt", "a", "epoch", 1.0), &e);
    CHECK_ERR_CONTAINS(rc, e, "accept: field \"epoch\" must be an integer");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i}", "v", 1, "t", "accept", "attempt", "", "epoch", 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "accept: field \"attempt\" must not be empty");
    char long_id[301];
    memset(long_id, 'a', 300);
    long_id[300] = 0;
    rc = decode_raw(J("{s:i, s:s, s:s, s:i}", "v", 1, "t", "accept", "attempt", long_id, "epoch", 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "accept: field \"attempt\" has 300 bytes, more than 256");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:i}", "v", 1, "t", "welcome", "worker_id", "w", "heartbeat_ms", 0,
                      "lease_ms", 100), &e);
    CHECK_ERR_CONTAINS(rc, e, "welcome: field \"heartbeat_ms\" must be at least 1 (not 0)");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:[i, i]}", "v", 1, "t", "assign", "attempt", "a",
                      "epoch", 1, "job", "j", "stage", "train", "config", "", "workdir", "/w", "gpus", 0, 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "assign: field \"stage\" must be one of init, align, distill, merge, eval, prepare (not \"train\")");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:[i, s]}", "v", 1, "t", "assign", "attempt", "a",
                      "epoch", 1, "job", "j", "stage", "init", "config", "", "workdir", "/w", "gpus", 0, "1"), &e);
    CHECK_ERR_CONTAINS(rc, e, "assign: field \"gpus[1]\" must be an integer");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:[i, i]}", "v", 1, "t", "assign", "attempt", "a",
                      "epoch", 1, "job", "j", "stage", "init", "config", "", "workdir", "/w", "gpus", 0, -2), &e);
    CHECK_ERR_CONTAINS(rc, e, "assign: field \"gpus[1]\" must be at least 0 (not -2)");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:i}", "v", 1, "t", "assign", "attempt", "a",
                      "epoch", 1, "job", "j", "stage", "init", "config", "", "workdir", "/w", "gpus", 0), &e);
    CHECK_ERR_CONTAINS(rc, e, "assign: field \"gpus\" must be an array of integers");
    /* the maps inside hello: their own unknown, missing and mistyped fields, with their place */
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:[{s:s, s:i, s:s, s:i}, {s:s, s:i, s:s, s:i, s:i}], s:[]}", "v", 1,
                      "t", "hello", "worker", "w", "pid", 1, "devices", "kind", "cpu", "index", 0, "name", "c",
                      "memory_mb", 1, "kind", "cuda", "index", 0, "name", "g", "memory_mb", 1, "cores", 8,
                      "running"), &e);
    CHECK_ERR_CONTAINS(rc, e, "hello: unknown field \"devices[1].cores\"");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:[{s:s, s:i, s:s}], s:[]}", "v", 1, "t", "hello", "worker", "w", "pid",
                      1, "devices", "kind", "cpu", "index", 0, "name", "c", "running"), &e);
    CHECK_ERR_CONTAINS(rc, e, "hello: missing field \"devices[0].memory_mb\"");
    rc = decode_raw(J("{s:i, s:s, s:s, s:i, s:[{s:s, s:i, s:s, s:i}], s:[]}", "v", 1, "t", "hello", "worker", "w",
                      "pid", 1, "devices", "kind", "tpu", "index", 0, "name", "c", "memory_mb", 1, "running"), &e);
    CHECK_ERR_CONTAINS(rc, e, "hello: field \"devices[0].kind\" must be one of cpu, cuda (not \"tpu\")");
    rc = decode_raw(J("{s:i, s:s, s:s, s:[s]}", "v", 1, "t", "heartbeat", "worker", "w", "running", "a1"), &e);
    CHECK_ERR_CONTAINS(rc, e, "heartbeat: field \"running[0]\" must be a map");
    rc = decode_raw(J("{s:i, s:s, s:s, s:{}}", "v", 1, "t", "heartbeat", "worker", "w", "running"), &e);
    CHECK_ERR_CONTAINS(rc, e, "heartbeat: field \"running\" must be an array of maps");
    rc = decode_raw(J("{s:i, s:s, s:s, s:[{s:s, s:i}]}", "v", 1, "t", "heartbeat", "worker", "w", "running",
                      "attempt", "a", "epoch", -5), &e);
    CHECK_ERR_CONTAINS(rc, e, "heartbeat: field \"running[0].epoch\" must be at least 0 (not -5)");
    /* explicit null is not an absent optional field */
    rc = decode_raw(J("{s:i, s:s, s:n}", "v", 1, "t", "query", "run"), &e);
    CHECK_ERR_CONTAINS(rc, e, "query: field \"run\" must be a string");
    rc = decode_raw(J("{s:i, s:s, s:i}", "v", 1, "t", "drain", "now", 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "drain: unknown field \"now\"");
    /* hostile field names are quoted safely */
    rc = decode_raw(J("{s:i, s:s, s:i}", "v", 1, "t", "drain", "\x1b[31m\"x", 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "drain: unknown field \"\\x1b[31m\\x22x\"");
    char big_name[2000];
    memset(big_name, 'k', sizeof big_name - 1);
    big_name[sizeof big_name - 1] = 0;
    rc = decode_raw(J("{s:i, s:s, s:i}", "v", 1, "t", "workers", big_name, 1), &e);
    CHECK_ERR_CONTAINS(rc, e, "kkkk...\"");
    CHECK(strlen(e.msg) < 120);
}

static void test_encode_errors(void) {
    void *buf = (void *)1;
    size_t len = 7;
    xd_err e;
    json_t *f;
    f = J("{s:s}", "attempt", "a");
    CHECK_ERR_CONTAINS(proto_encode(PROTO_FENCE, f, &buf, &len, &e), e, "fence: missing field \"epoch\"");
    CHECK(buf == NULL && len == 0);
    json_decref(f);
    f = J("{s:s, s:i, s:i}", "attempt", "a", "epoch", 1, "step", 3);
    CHECK_ERR_CONTAINS(proto_encode(PROTO_FENCE, f, &buf, &len, &e), e, "fence: unknown field \"step\"");
    json_decref(f);
    f = J("{s:s, s:s}", "attempt", "a", "epoch", "1");
    CHECK_ERR_CONTAINS(proto_encode(PROTO_FENCE, f, &buf, &len, &e), e, "fence: field \"epoch\" must be an integer");
    json_decref(f);
    f = J("{s:s, s:s}", "action", "stop", "target", "r");
    CHECK_ERR_CONTAINS(proto_encode(PROTO_CONTROL, f, &buf, &len, &e), e, "control: field \"action\" must be one of");
    json_decref(f);
    f = J("[]");
    CHECK_ERR_CONTAINS(proto_encode(PROTO_DRAIN, f, &buf, &len, &e), e, "drain: the fields must be a JSON object");
    json_decref(f);
    CHECK_ERR_CONTAINS(proto_encode(PROTO_FENCE, NULL, &buf, &len, &e), e, "fence: missing field \"attempt\"");
    CHECK_ERR_CONTAINS(proto_encode(PROTO_TYPE_COUNT, NULL, &buf, &len, &e), e, "unknown message type 20");
    CHECK_ERR_CONTAINS(proto_encode((proto_type)-1, NULL, &buf, &len, &e), e, "unknown message type -1");
    /* "v" and "t" are the codec's, not fields */
    f = J("{s:i}", "v", 2);
    CHECK_ERR_CONTAINS(proto_encode(PROTO_DRAIN, f, &buf, &len, &e), e, "drain: unknown field \"v\"");
    json_decref(f);
    /* a key holding a NUL byte could not be read back */
    f = J("{s:b, s:{}}", "ok", 1, "body");
    json_object_setn_new(json_object_get(f, "body"), "a\0b", 3, json_null());
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, f, &buf, &len, &e), e, "reply: map key \"a\\x00b\" holds a NUL byte");
    json_decref(f);
}

/* ---- limits, at their edges, on both sides ---- */

static void test_limits(void) {
    void *buf;
    size_t len;
    xd_err e;
    json_t *f;
    /* nesting: the message map is 1, so body may hold 7 arrays, not 8 */
    f = J("{s:b, s:o}", "ok", 1, "body", nested_arrays(7, json_integer(1)));
    round_trip(PROTO_REPLY, json_incref(f));
    json_decref(f);
    f = J("{s:b, s:o}", "ok", 1, "body", nested_arrays(8, json_integer(1)));
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, f, &buf, &len, &e), e, "reply: nesting deeper than 8");
    json_decref(f);
    CHECK_ERR_CONTAINS(decode_raw(J("{s:i, s:s, s:b, s:o}", "v", 1, "t", "reply", "ok", 1, "body",
                                    nested_arrays(8, json_integer(1))), &e), e, "nesting deeper than 8");
    /* items */
    json_t *arr = json_array();
    for (int i = 0; i < PROTO_MAX_ITEMS; i++) json_array_append_new(arr, json_integer(i));
    f = J("{s:b, s:o}", "ok", 1, "body", arr);
    round_trip(PROTO_REPLY, json_incref(f));
    json_array_append_new(arr, json_integer(-1));
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, f, &buf, &len, &e), e, "reply: array of 4097 items exceeds 4096");
    json_t *whole = json_deep_copy(f);
    json_object_set_new(whole, "v", json_integer(1));
    json_object_set_new(whole, "t", json_string("reply"));
    CHECK_ERR_CONTAINS(decode_raw(whole, &e), e, "array of 4097 items exceeds 4096");
    json_decref(f);
    f = J("{s:i, s:s, s:b, s:o}", "v", 1, "t", "reply", "ok", 1, "body", json_object());
    for (int i = 0; i <= PROTO_MAX_ITEMS; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        json_object_set_new(json_object_get(f, "body"), k, json_true());
    }
    json_t *enc = json_deep_copy(f);
    json_object_del(enc, "v");
    json_object_del(enc, "t");
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, enc, &buf, &len, &e), e, "reply: map of 4097 pairs exceeds 4096");
    json_object_del(json_object_get(enc, "body"), "k0");
    round_trip(PROTO_REPLY, enc);
    CHECK_ERR_CONTAINS(decode_raw(f, &e), e, "map of 4097 pairs exceeds 4096");
    /* strings: exactly 1 MiB passes, one more byte does not */
    char *s = malloc(PROTO_MAX_STRING + 2);
    memset(s, 'x', PROTO_MAX_STRING + 1);
    f = J("{s:i, s:s%}", "code", 1, "message", s, (size_t)PROTO_MAX_STRING);
    round_trip(PROTO_ERROR, json_incref(f));
    json_decref(f);
    f = J("{s:i, s:s%}", "code", 1, "message", s, (size_t)PROTO_MAX_STRING + 1);
    CHECK_ERR_CONTAINS(proto_encode(PROTO_ERROR, f, &buf, &len, &e), e,
                       "error: field \"message\" has 1048577 bytes, more than 1048576");
    json_decref(f);
    f = J("{s:b, s:{s:s%}}", "ok", 1, "body", "log", s, (size_t)PROTO_MAX_STRING + 1);
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, f, &buf, &len, &e), e, "reply: string of 1048577 bytes exceeds 1 MiB");
    json_decref(f);
    f = J("{s:b, s:{}}", "ok", 1, "body");
    json_object_setn_new(json_object_get(f, "body"), s, PROTO_MAX_STRING + 1, json_true());
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, f, &buf, &len, &e), e, "reply: string of 1048577 bytes exceeds 1 MiB");
    json_decref(f);
    CHECK_ERR_CONTAINS(decode_raw(J("{s:i, s:s, s:i, s:s%}", "v", 1, "t", "error", "code", 1, "message", s,
                                    (size_t)PROTO_MAX_STRING + 1), &e), e, "string of 1048577 bytes exceeds 1 MiB");
    /* the whole message: five 1 MiB strings are over 4 MiB, three are not */
    f = J("{s:b, s:[s%, s%, s%, s%, s%]}", "ok", 1, "body", s, (size_t)PROTO_MAX_STRING, s, (size_t)PROTO_MAX_STRING,
          s, (size_t)PROTO_MAX_STRING, s, (size_t)PROTO_MAX_STRING, s, (size_t)PROTO_MAX_STRING);
    CHECK_ERR_CONTAINS(proto_encode(PROTO_REPLY, f, &buf, &len, &e), e, "reply: message of 5242");
    CHECK(strstr(e.msg, "bytes exceeds 4 MiB") != NULL);
    json_decref(f);
    f = J("{s:b, s:[s%, s%, s%]}", "ok", 1, "body", s, (size_t)PROTO_MAX_STRING, s, (size_t)PROTO_MAX_STRING, s,
          (size_t)PROTO_MAX_STRING);
    round_trip(PROTO_REPLY, f);
    free(s);
    uint8_t *huge = calloc(1, 5000000);
    huge[0] = 0x80;
    CHECK_ERR_CONTAINS(decode_bytes(huge, 5000000, &e), e, "message of 5000000 bytes exceeds 4 MiB");
    CHECK_ERR_CONTAINS(decode_bytes(huge, PROTO_MAX_MESSAGE + 1, &e), e, "message of 4194305 bytes exceeds 4 MiB");
    /* exactly 4 MiB is read: here an empty map and 4 MiB - 1 trailing bytes */
    CHECK_ERR_CONTAINS(decode_bytes(huge, PROTO_MAX_MESSAGE, &e), e, "4194303 trailing bytes after the message");
    free(huge);
}

/* ---- hostile bytes ---- */

static void test_hostile(void) {
    xd_err e;
    CHECK_ERR_CONTAINS(decode_bytes("", 0, &e), e, "empty message");
    CHECK_ERR_CONTAINS(decode_bytes(NULL, 0, &e), e, "empty message");
    CHECK_ERR_CONTAINS(decode_bytes("\x91\x01", 2, &e), e, "a message must be a map, not an array");
    CHECK_ERR_CONTAINS(decode_bytes("\x01", 1, &e), e, "a message must be a map, not an integer");
    CHECK_ERR_CONTAINS(decode_bytes("\xc1", 1, &e), e, "a message must be a map, not the reserved byte 0xc1");
    /* declared sizes far beyond the bytes there: refused before anything is allocated */
    CHECK_ERR_CONTAINS(decode_bytes("\xdf\xff\xff\xff\xff\xa1v\x01\xa1t\x01", 11, &e), e,
                       "map of 4294967295 pairs exceeds 4096");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xdd\xff\xff\xff\xff\x01\x02", 10, &e), e,
                       "array of 4294967295 items exceeds 4096");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xdd\x00\x01\x11\x70", 8, &e), e, "array of 70000 items exceeds 4096");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xdc\x0f\xa0\x01\x02", 8, &e), e,
                       "truncated message: an array of 4000 items with 2 left");
    CHECK_ERR_CONTAINS(decode_bytes("\xde\x10\x00\xa1x\x01", 6, &e), e,
                       "truncated message: a map of 4096 pairs with 3 left");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xdb\xff\xff\xff\xff\x01\x02", 10, &e), e,
                       "string of 4294967295 bytes exceeds 1 MiB");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xda\x01\x2c" "0123456789ab", 18, &e), e,
                       "truncated message: a string of 300 bytes with 12 left");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xda\x01", 5, &e), e, "truncated message: a string length with 1 left");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x\xcf\x00\x00", 6, &e), e, "truncated message: an integer with 2 left");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1x", 3, &e), e, "truncated message: a value with 0 left");
    CHECK_ERR_CONTAINS(decode_bytes("\x82\xa1x\x01", 4, &e), e, "truncated message: a map of 2 pairs with 3 left");
    /* 100 levels of nesting: refused at the ninth */
    uint8_t deep[203];
    deep[0] = 0x81, deep[1] = 0xa1, deep[2] = 'b';
    memset(deep + 3, 0x91, 199);
    deep[202] = 0x01;
    CHECK_ERR_CONTAINS(decode_bytes(deep, sizeof deep, &e), e, "nesting deeper than 8");
    memset(deep, 0x81, sizeof deep); /* maps nested in keys */
    CHECK_ERR_CONTAINS(decode_bytes(deep, sizeof deep, &e), e, "a map key at byte 1 must be a string, not a map");
    /* foreign types */
    CHECK_ERR_CONTAINS(decode_bytes("\x81\x01\x01", 3, &e), e, "a map key at byte 1 must be a string, not an integer");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xc0\x01", 3, &e), e, "must be a string, not nil");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xc4\x01\x00", 5, &e), e, "binary data at byte 3 is not accepted");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xd4\x01\x00", 5, &e), e, "an extension type at byte 3 is not accepted");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xc7\x01\x05\x00", 6, &e), e, "an extension type at byte 3");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xc1", 4, &e), e, "the reserved byte 0xc1 at byte 3 is not accepted");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 12, &e), e,
                       "integer 18446744073709551615 at byte 3 exceeds the signed 64-bit range");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xcb\x7f\xf8\0\0\0\0\0\0", 12, &e), e, "a float at byte 3 is not finite");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xca\x7f\x80\0\0", 8, &e), e, "a float at byte 3 is not finite");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xa2\xc3\x28", 6, &e), e, "a string at byte 4 is not valid UTF-8");
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xa3\xed\xa0\x80", 7, &e), e, "not valid UTF-8"); /* a surrogate */
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa1" "b\xa2\xc0\x80", 6, &e), e, "not valid UTF-8");     /* overlong NUL */
    CHECK_ERR_CONTAINS(decode_bytes("\x81\xa3" "a\0b\x01", 6, &e), e, "a map key at byte 2 holds a NUL byte");
    CHECK_ERR_CONTAINS(decode_bytes("\x83\xa1v\x01\xa1t\xa5" "drain\xa1v\x02", 15, &e), e, "duplicate map key \"v\"");
    /* one valid message with a byte after it */
    const uint8_t drain[] = {0x82, 0xa1, 'v', 0x01, 0xa1, 't', 0xa5, 'd', 'r', 'a', 'i', 'n', 0x00};
    CHECK(decode_bytes(drain, sizeof drain - 1, &e) == 0);
    CHECK_ERR_CONTAINS(decode_bytes(drain, sizeof drain, &e), e, "1 trailing bytes after the message");
}

/* Every prefix of every valid message is refused with a message; every single-byte change is
 * either refused with a message or decodes to something that encodes and decodes back equal. */
static void test_truncation_and_mutation(void) {
    json_t *msgs[] = {
        J("{s:s, s:i, s:[{s:s, s:i, s:s, s:i}], s:[{s:s, s:i}]}", "worker", "gpu-7", "pid", 4242, "devices",
          "kind", "cuda", "index", 1, "name", "H100", "memory_mb", 81559, "running", "attempt", "a2", "epoch", 300),
        J("{s:s, s:i, s:s, s:s, s:s, s:s, s:[i, i]}", "attempt", "a1", "epoch", 70000, "job", "j", "stage",
          "eval", "config", "x: 1\n", "workdir", "/w", "gpus", 0, 65536),
        J("{s:b, s:{s:[f, n, b, s, I]}}", "ok", 1, "body", "k", 2.5, 0, "s", (json_int_t)-5000000000LL),
    };
    proto_type types[] = {PROTO_HELLO, PROTO_ASSIGN, PROTO_REPLY};
    long refused = 0, accepted = 0;
    for (size_t m = 0; m < sizeof msgs / sizeof *msgs; m++) {
        void *buf;
        size_t len;
        xd_err e;
        CHECK(proto_encode(types[m], msgs[m], &buf, &len, &e) == 0);
        for (size_t n = 0; n < len; n++) {
            uint8_t *copy = malloc(n ? n : 1); /* exactly n bytes, so ASan sees any overread */
            memcpy(copy, buf, n);
            int rc = decode_bytes(copy, n, &e);
            CHECK_MSG(rc < 0 && e.msg[0], "%s cut to %zu of %zu bytes: rc %d", proto_type_name(types[m]), n, len, rc);
            free(copy);
        }
        uint8_t *copy = malloc(len);
        for (size_t i = 0; i < len; i++) {
            for (int b = 0; b < 256; b++) {
                memcpy(copy, buf, len);
                copy[i] = (uint8_t)b;
                proto_type t;
                json_t *f = NULL;
                e.msg[0] = 0;
                if (proto_decode(copy, len, &t, &f, &e) < 0) {
                    CHECK(e.msg[0] != 0 && f == NULL);
                    refused++;
                    continue;
                }
                accepted++;
                void *b2;
                size_t l2;
                int rc = proto_encode(t, f, &b2, &l2, &e);
                CHECK_MSG(rc == 0, "re-encode: %s", e.msg);
                if (rc == 0) {
                    json_t *f2 = NULL;
                    proto_type t2;
                    CHECK(proto_decode(b2, l2, &t2, &f2, &e) == 0 && t2 == t && json_equal(f, f2));
                    json_decref(f2);
                    free(b2);
                }
                json_decref(f);
            }
        }
        free(copy);
        free(buf);
        json_decref(msgs[m]);
    }
    CHECK(refused > 0 && accepted > 0);
}

int main(void) {
    test_round_trips();
    test_wire_form();
    test_schema_errors();
    test_encode_errors();
    test_limits();
    test_hostile();
    test_truncation_and_mutation();
    TEST_MAIN_END();
}
