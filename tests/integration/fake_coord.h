/* tests/integration/fake_coord.h — a scripted coordinator for testing xworker: a ROUTER socket
 * speaking the real protocol (proto/proto.h). Every message it receives is kept in order;
 * expect() returns the next one of a type. It answers hello and heartbeat with welcome unless
 * told to stay silent. */
#ifndef XD_FAKE_COORD_H
#define XD_FAKE_COORD_H

#include "proto/proto.h"

#include <stdbool.h>

typedef struct fake_coord {
    void *ctx, *sock;
    char endpoint[128];   /* tcp://127.0.0.1:PORT */
    char peer[256];       /* the last worker identity heard */
    size_t peer_len;
    bool silent;          /* true: hello and heartbeat go unanswered */
    bool hello_only;      /* true: hello is answered, heartbeats are not */
    int heartbeat_ms, lease_ms;
    json_t *log;          /* [{"t": type name, "f": fields, "at": seconds}] */
    size_t cursor;        /* expect() looks from here */
    char curve_secret[41]; /* a CURVE server when set */
    /* answers client requests (submit, query, ...); NULL: they go unanswered */
    void (*respond)(struct fake_coord *c, proto_type t, json_t *fields, void *ctx);
    void *respond_ctx;
} fake_coord;

/* Binds a new ROUTER to endpoint (NULL: a free port on 127.0.0.1). */
int fake_coord_open(fake_coord *c, const char *endpoint);
/* The same as a CURVE server with this secret key (Z85); any client key is let in. */
int fake_coord_open_curve(fake_coord *c, const char *endpoint, const char *secret_z85);
/* A reply {ok, error?, body?} to the peer of the request being answered (steals body). */
int fake_coord_reply(fake_coord *c, bool ok, const char *error, json_t *body);
void fake_coord_close(fake_coord *c);
/* Closes the socket only (the coordinator is gone); fake_coord_rebind binds the same endpoint. */
void fake_coord_unbind(fake_coord *c);
int fake_coord_rebind(fake_coord *c);
/* Receives for up to ms milliseconds; returns the number of messages received. */
int fake_coord_pump(fake_coord *c, int ms);
/* The next message of type t after the cursor (waiting up to timeout_ms); moves the cursor past
 * it. NULL on timeout. The fields stay owned by the log. */
json_t *fake_coord_expect(fake_coord *c, proto_type t, int timeout_ms);
/* How many messages of type t arrived at or after time `since` (xd_now()). */
int fake_coord_count_since(fake_coord *c, proto_type t, double since);
/* Sends to the worker (steals fields). */
int fake_coord_send(fake_coord *c, proto_type t, json_t *fields);
/* Sends raw frames (a garbage test). */
int fake_coord_send_raw(fake_coord *c, const void *const *frames, const size_t *lens, int n);

#endif
