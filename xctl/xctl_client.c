/* xctl's requests: a DEALER socket to the coordinator; each request waits for its reply for
 * --timeout seconds. No reply in time is "unreachable" (exit 3): the coordinator is down, the
 * address is wrong, or (with CURVE) the keys were refused. */
#include "xctl.h"
#include "worker/worker_keys.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static int connect_once(xctl *x) {
    if (x->sock) return XCTL_OK;
    x->zctx = zmq_ctx_new();
    if (!x->zctx) {
        fprintf(stderr, "xctl: zmq_ctx_new: %s\n", zmq_strerror(zmq_errno()));
        return XCTL_FAIL;
    }
    x->sock = zmq_socket(x->zctx, ZMQ_DEALER);
    int linger = 0;
    int64_t maxmsg = PROTO_MAX_MESSAGE;
    zmq_setsockopt(x->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(x->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (x->keys) {
        xd_err e = {{0}};
        if (worker_keys_apply(x->sock, x->keys, "client", &e)) {
            fprintf(stderr, "xctl: --keys %s: %s\n", x->keys, e.msg);
            return XCTL_FAIL;
        }
    }
    if (zmq_connect(x->sock, x->addr) != 0) {
        fprintf(stderr, "xctl: cannot connect to \"%s\": %s (an address is like tcp://HOST:PORT)\n", x->addr,
                zmq_strerror(zmq_errno()));
        return XCTL_USAGE;
    }
    return XCTL_OK;
}

void xctl_disconnect(xctl *x) {
    if (x->sock) zmq_close(x->sock);
    if (x->zctx) zmq_ctx_term(x->zctx);
    x->sock = x->zctx = NULL;
}

int xctl_call(xctl *x, proto_type t, json_t *fields, json_t **body) {
    *body = NULL;
    void *buf = NULL;
    size_t len = 0;
    xd_err e = {{0}};
    int rc = proto_encode(t, fields, &buf, &len, &e);
    json_decref(fields);
    if (rc) {
        fprintf(stderr, "xctl: %s\n", e.msg);
        return XCTL_USAGE;
    }
    rc = connect_once(x);
    if (rc == XCTL_OK && zmq_send(x->sock, buf, len, ZMQ_DONTWAIT) < 0) {
        fprintf(stderr, "xctl: cannot send to %s: %s\n", x->addr, zmq_strerror(zmq_errno()));
        rc = XCTL_UNREACHABLE;
    }
    free(buf);
    if (rc != XCTL_OK) return rc;
    zmq_pollitem_t it = {x->sock, 0, ZMQ_POLLIN, 0};
    long ms = (long)(x->timeout_s * 1000);
    double end = xd_now() + x->timeout_s;
    for (;;) {
        int n = zmq_poll(&it, 1, ms);
        if (n > 0) break;
        double left = end - xd_now();
        if (n < 0 && zmq_errno() == EINTR && left > 0) {
            ms = (long)(left * 1000) + 1;
            continue;
        }
        fprintf(stderr, "xctl: no reply from the coordinator at %s within %g s (is xcoord running there?%s)\n",
                x->addr, x->timeout_s, x->keys ? " are the keys allowed?" : "");
        return XCTL_UNREACHABLE;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    int got = zmq_msg_recv(&m, x->sock, ZMQ_DONTWAIT);
    while (got == 0 && zmq_msg_more(&m)) { /* an empty delimiter frame first */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        got = zmq_msg_recv(&m, x->sock, 0);
    }
    if (got < 0) {
        zmq_msg_close(&m);
        fprintf(stderr, "xctl: receiving the reply: %s\n", zmq_strerror(zmq_errno()));
        return XCTL_UNREACHABLE;
    }
    proto_type rt;
    json_t *rf = NULL;
    rc = proto_decode(zmq_msg_data(&m), zmq_msg_size(&m), &rt, &rf, &e);
    while (zmq_msg_more(&m)) { /* frames after the message are not ours */
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, x->sock, 0) < 0) break;
    }
    zmq_msg_close(&m);
    if (rc) {
        fprintf(stderr, "xctl: the coordinator's reply does not decode: %s\n", e.msg);
        return XCTL_FAIL;
    }
    rc = XCTL_FAIL;
    if (rt == PROTO_ERROR) {
        fprintf(stderr, "xctl: the coordinator refused the request: %s (code %lld)\n",
                json_string_value(json_object_get(rf, "message")),
                (long long)json_integer_value(json_object_get(rf, "code")));
    } else if (rt != PROTO_REPLY) {
        fprintf(stderr, "xctl: the coordinator answered with %s, not a reply\n", proto_type_name(rt));
    } else if (!json_is_true(json_object_get(rf, "ok"))) {
        const char *err = json_string_value(json_object_get(rf, "error"));
        fprintf(stderr, "xctl: %s\n", err && *err ? err : "the coordinator says the request failed");
    } else {
        json_t *b = json_object_get(rf, "body");
        *body = b ? json_incref(b) : json_null();
        rc = XCTL_OK;
    }
    json_decref(rf);
    return rc;
}
