/* proto/proto.h — xdistill's wire messages (docs/protocol.md): msgpack maps {"v": 1, "t": TYPE,
 * ...fields}, checked against a schema per type. In memory a message's fields are a jansson
 * object, so every part reads and builds them the same way.
 * Decoding is bounded: the message size, container counts, nesting depth and string lengths are
 * checked on the raw bytes before anything is allocated; unknown types, unknown fields, missing
 * fields and wrong field types are errors that name them. The only way into proto/. */
#ifndef XD_PROTO_H
#define XD_PROTO_H

#include "common/xd.h"

#include <jansson.h>

#define PROTO_VERSION 1
#define PROTO_MAX_MESSAGE (4u << 20) /* bytes; every socket sets ZMQ_MAXMSGSIZE to this */
#define PROTO_MAX_DEPTH 8            /* nested containers */
#define PROTO_MAX_ITEMS 4096         /* elements of one array, pairs of one map */
#define PROTO_MAX_STRING (1u << 20)  /* bytes of one string */

typedef enum proto_type {
    /* worker -> coordinator */
    PROTO_HELLO = 0,  /* worker, pid, devices [{kind, index, name, memory_mb}], running [{attempt, epoch}] */
    PROTO_HEARTBEAT,  /* worker, running [{attempt, epoch}] */
    PROTO_ACCEPT,     /* attempt, epoch */
    PROTO_PROGRESS,   /* attempt, epoch, step, total, metrics (one metrics.jsonl line, text) */
    PROTO_CHECKPOINT, /* attempt, epoch, step, path */
    PROTO_DONE,       /* attempt, epoch, ok, exit_code, error (text), output (path) */
    PROTO_DRAINING,   /* worker: finishing what it runs, taking nothing new */
    /* coordinator -> worker */
    PROTO_WELCOME,    /* worker_id, heartbeat_ms, lease_ms */
    PROTO_ASSIGN,     /* attempt, epoch, job, stage, config (stage YAML text), workdir, gpus [int] */
    PROTO_CANCEL,     /* attempt, epoch, reason: stop the child, then report done */
    PROTO_FENCE,      /* attempt, epoch: the lease is gone; kill the child, report nothing */
    PROTO_DRAIN,      /* (no fields): finish the running attempt, take nothing new */
    /* client -> coordinator */
    PROTO_SUBMIT,     /* spec (pipeline YAML text), name (optional) */
    PROTO_QUERY,      /* run (optional: every run) */
    PROTO_CONTROL,    /* action: cancel|retry|hold|release|drain|undrain; target: run, job or worker id */
    PROTO_LOG_TAIL,   /* job, lines */
    PROTO_EVENTS,     /* run, since (event id) */
    PROTO_WORKERS,    /* (no fields) */
    /* coordinator -> client (REPLY) and to any peer whose message was refused (ERROR) */
    PROTO_REPLY,      /* ok, error (optional), body (any JSON value) */
    PROTO_ERROR,      /* code, message */
    PROTO_TYPE_COUNT
} proto_type;

/* "hello", "heartbeat", ... as on the wire. */
const char *proto_type_name(proto_type t);

/* Encodes {"v": 1, "t": name, ...fields} after checking fields against the type's schema (an
 * encoder bug is an error here, never a malformed message on the wire). *buf is malloc'd. */
int proto_encode(proto_type t, const json_t *fields, void **buf, size_t *len, xd_err *e);

/* Decodes one message: its type and a new jansson object of its fields (the caller decrefs). */
int proto_decode(const void *buf, size_t len, proto_type *t, json_t **fields, xd_err *e);

#endif
