#include "fake_coord.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static int setup_socket(fake_coord *c, const char *endpoint) {
    c->sock = zmq_socket(c->ctx, ZMQ_ROUTER);
    if (!c->sock) return -1;
    int linger = 0, one = 1;
    int64_t maxmsg = PROTO_MAX_MESSAGE;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one); /* a reconnecting worker */
    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (c->curve_secret[0]) {
        zmq_setsockopt(c->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->curve_secret, 41);
    }
    if (zmq_bind(c->sock, endpoint) != 0) {
        fprintf(stderr, "fake_coord: bind %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(c->sock);
        c->sock = NULL;
        return -1;
    }
    size_t n = sizeof c->endpoint;
    zmq_getsockopt(c->sock, ZMQ_LAST_ENDPOINT, c->endpoint, &n);
    return 0;
}

int fake_coord_open(fake_coord *c, const char *endpoint) { return fake_coord_open_curve(c, endpoint, NULL); }

int fake_coord_open_curve(fake_coord *c, const char *endpoint, const char *secret_z85) {
    memset(c, 0, sizeof *c);
    if (secret_z85) snprintf(c->curve_secret, sizeof c->curve_secret, "%s", secret_z85);
    c->heartbeat_ms = 200;
    c->lease_ms = 2000;
    c->ctx = zmq_ctx_new();
    c->log = json_array();
    return c->ctx ? setup_socket(c, endpoint ? endpoint : "tcp://127.0.0.1:*") : -1;
}

void fake_coord_unbind(fake_coord *c) {
    if (c->sock) zmq_close(c->sock);
    c->sock = NULL;
}

int fake_coord_rebind(fake_coord *c) {
    char ep[128];
    snprintf(ep, sizeof ep, "%s", c->endpoint);
    for (int i = 0; i < 50; i++) { /* the port may take a moment to be free again */
        if (setup_socket(c, ep) == 0) return 0;
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

void fake_coord_close(fake_coord *c) {
    fake_coord_unbind(c);
    if (c->ctx) zmq_ctx_term(c->ctx);
    json_decref(c->log);
    memset(c, 0, sizeof *c);
}

int fake_coord_send(fake_coord *c, proto_type t, json_t *fields) {
    void *buf;
    size_t len;
    xd_err e = {{0}};
    int rc = proto_encode(t, fields, &buf, &len, &e);
    json_decref(fields);
    if (rc) {
        fprintf(stderr, "fake_coord: encode %s: %s\n", proto_type_name(t), e.msg);
        return -1;
    }
    const void *frames[1] = {buf};
    size_t lens[1] = {len};
    rc = fake_coord_send_raw(c, frames, lens, 1);
    free(buf);
    return rc;
}

int fake_coord_send_raw(fake_coord *c, const void *const *frames, const size_t *lens, int n) {
    if (!c->sock || !c->peer_len) return -1;
    if (zmq_send(c->sock, c->peer, c->peer_len, ZMQ_SNDMORE) < 0) return -1;
    for (int i = 0; i < n; i++)
        if (zmq_send(c->sock, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0) return -1;
    return 0;
}

int fake_coord_reply(fake_coord *c, bool ok, const char *error, json_t *body) {
    json_t *f = json_pack("{s:b}", "ok", ok);
    if (error) json_object_set_new(f, "error", json_string(error));
    if (body) json_object_set_new(f, "body", body);
    return fake_coord_send(c, PROTO_REPLY, f);
}

static void record(fake_coord *c, const void *buf, size_t len) {
    proto_type t;
    json_t *f = NULL;
    xd_err e = {{0}};
    if (proto_decode(buf, len, &t, &f, &e)) {
        fprintf(stderr, "fake_coord: undecodable message from the worker: %s\n", e.msg);
        json_array_append_new(c->log, json_pack("{s:s, s:{}, s:f}", "t", "?", "f", "at", xd_now()));
        return;
    }
    if (getenv("FAKE_COORD_TRACE")) {
        char *s = json_dumps(f, JSON_COMPACT);
        fprintf(stderr, "fake_coord: <- %s %.300s\n", proto_type_name(t), s ? s : "");
        free(s);
    }
    json_array_append_new(c->log, json_pack("{s:s, s:o, s:f}", "t", proto_type_name(t), "f", f, "at", xd_now()));
    if (c->respond && t >= PROTO_SUBMIT && t <= PROTO_WORKERS) c->respond(c, t, f, c->respond_ctx);
    if (!c->silent && (t == PROTO_HELLO || (t == PROTO_HEARTBEAT && !c->hello_only)))
        fake_coord_send(c, PROTO_WELCOME, json_pack("{s:s, s:i, s:i}", "worker_id", c->peer,
                                                    "heartbeat_ms", c->heartbeat_ms, "lease_ms", c->lease_ms));
}

/* One message if one comes within ms. */
static int receive(fake_coord *c, int ms) {
    if (!c->sock) {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        return 0;
    }
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0) return 0;
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, c->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        return 0;
    }
    if (zmq_msg_size(&id) < sizeof c->peer) {
        c->peer_len = zmq_msg_size(&id);
        memcpy(c->peer, zmq_msg_data(&id), c->peer_len);
        c->peer[c->peer_len] = 0;
    }
    int more = zmq_msg_more(&id), frames = 0;
    zmq_msg_close(&id);
    while (more) {
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, c->sock, 0) < 0) {
            zmq_msg_close(&body);
            break;
        }
        more = zmq_msg_more(&body);
        if (frames++ == 0) record(c, zmq_msg_data(&body), zmq_msg_size(&body));
        else fprintf(stderr, "fake_coord: the worker sent more than one frame\n");
        zmq_msg_close(&body);
    }
    return 1;
}

int fake_coord_pump(fake_coord *c, int ms) {
    double end = xd_now() + ms / 1000.0;
    int n = 0;
    for (;;) {
        double left = end - xd_now();
        if (left <= 0) break;
        n += receive(c, (int)(left * 1000) + 1);
    }
    return n;
}

json_t *fake_coord_expect(fake_coord *c, proto_type t, int timeout_ms) {
    const char *name = proto_type_name(t);
    double end = xd_now() + timeout_ms / 1000.0;
    for (;;) {
        for (; c->cursor < json_array_size(c->log); c->cursor++) {
            json_t *m = json_array_get(c->log, c->cursor);
            if (!strcmp(json_string_value(json_object_get(m, "t")), name)) {
                c->cursor++;
                return json_object_get(m, "f");
            }
        }
        double left = end - xd_now();
        if (left <= 0) return NULL;
        receive(c, left > 0.1 ? 100 : (int)(left * 1000) + 1);
    }
}

int fake_coord_count_since(fake_coord *c, proto_type t, double since) {
    int n = 0;
    for (size_t i = 0; i < json_array_size(c->log); i++) {
        json_t *m = json_array_get(c->log, i);
        if (!strcmp(json_string_value(json_object_get(m, "t")), proto_type_name(t)) &&
            json_real_value(json_object_get(m, "at")) >= since)
            n++;
    }
    return n;
}
