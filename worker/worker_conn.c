/* The DEALER socket to the coordinator, polled by libuv through ZMQ_FD. ZMQ_FD is edge
 * triggered: after every send and receive ZMQ_EVENTS is read again and incoming messages are
 * drained while it says POLLIN.
 * Liveness, two ways: ZMTP heartbeats (ZMQ_HEARTBEAT_IVL/TIMEOUT, answered by the peer's libzmq)
 * drop a dead TCP connection, which libzmq then re-establishes by itself; and when the
 * coordinator answers heartbeats (a second welcome on one socket shows it does), its silence for
 * WORKER_SILENT_BEATS heartbeat periods closes the socket and opens a new one after an
 * exponential backoff, and the worker says hello again. */
#include "worker.h"
#include "worker_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define WORKER_SILENT_BEATS 5
#define WORKER_BACKOFF_MIN_S 0.25
#define WORKER_BACKOFF_MAX_S 30.0
#define WORKER_MAX_FRAMES 8
#define WORKER_DRAIN_BATCH 256

static void drain_incoming(worker *w);

static void free_handle(uv_handle_t *h) { free(h); }

static void on_poll(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    drain_incoming(h->data);
}

static void on_kick(uv_idle_t *h) {
    uv_idle_stop(h);
    drain_incoming(h->data);
}

/* Reads ZMQ_EVENTS again on the next turn of the loop (a send may have consumed the edge). */
static void kick(worker *w) {
    if (!uv_is_active((uv_handle_t *)&w->kick)) uv_idle_start(&w->kick, on_kick);
}

/* One multipart message; its single non-empty frame is the protocol message (a leading empty
 * delimiter frame from a REQ-style peer is tolerated). */
static void receive_one(worker *w) {
    zmq_msg_t frames[WORKER_MAX_FRAMES];
    int n = 0, more = 0, extra = 0;
    do {
        zmq_msg_t tmp, *m = n < WORKER_MAX_FRAMES ? &frames[n] : &tmp;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, w->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (m == &tmp) {
            zmq_msg_close(m);
            extra++;
        } else {
            n++;
        }
    } while (more);
    if (n == 0) return;
    w->last_rx = xd_now();
    w->backoff_s = WORKER_BACKOFF_MIN_S;
    for (int i = 0; i < w->n_pending;) {
        if (++w->pending[i].seen < 2) {
            i++;
            continue;
        }
        json_decref(w->pending[i].fields);
        w->pending[i] = w->pending[--w->n_pending];
    }
    int payload = -1, non_empty = 0;
    for (int i = 0; i < n; i++)
        if (zmq_msg_size(&frames[i]) > 0) payload = i, non_empty++;
    if (non_empty == 0) {
        xd_warn("ignored an empty message from the coordinator");
    } else if (non_empty != 1 || extra) {
        xd_warn("ignored a message of %d frames from the coordinator (expected one)", n + extra);
    } else {
        proto_type t;
        json_t *fields = NULL;
        xd_err e = {{0}};
        if (proto_decode(zmq_msg_data(&frames[payload]), zmq_msg_size(&frames[payload]), &t, &fields, &e))
            xd_warn("ignored an undecodable message from the coordinator: %s", e.msg);
        else
            worker_handle(w, t, fields);
        json_decref(fields);
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
}

static void drain_incoming(worker *w) {
    static bool busy; /* handlers send, and sends kick: no recursion */
    if (busy) return;
    busy = true;
    int handled = 0;
    while (w->sock && handled < WORKER_DRAIN_BATCH) {
        int ev = 0;
        size_t sz = sizeof ev;
        if (zmq_getsockopt(w->sock, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) break;
        receive_one(w);
        handled++;
    }
    busy = false;
    if (handled == WORKER_DRAIN_BATCH) kick(w); /* let timers and signals run, then go on */
}

int worker_send(worker *w, proto_type t, json_t *fields) {
    void *buf = NULL;
    size_t len = 0;
    xd_err e = {{0}};
    if (proto_encode(t, fields, &buf, &len, &e)) {
        xd_log(XD_LOG_ERROR, "cannot encode %s: %s", proto_type_name(t), e.msg);
        json_decref(fields);
        return -1;
    }
    json_decref(fields);
    int rc = -1;
    if (!w->sock) {
        xd_warn("not connected: %s dropped", proto_type_name(t));
    } else if (zmq_send(w->sock, buf, len, ZMQ_DONTWAIT) < 0) {
        xd_warn("cannot send %s: %s", proto_type_name(t), zmq_strerror(zmq_errno()));
    } else {
        rc = 0;
        xd_debug("sent %s", proto_type_name(t));
    }
    free(buf);
    if (w->sock) kick(w);
    return rc;
}

json_t *worker_running(worker *w) {
    json_t *list = json_array();
    if (w->cur && !w->cur->exited)
        json_array_append_new(list, json_pack("{s:s, s:I}", "attempt", w->cur->id, "epoch", (json_int_t)w->cur->epoch));
    return list;
}

void worker_send_done(worker *w, json_t *fields) {
    if (w->n_pending == (int)(sizeof w->pending / sizeof w->pending[0])) {
        json_decref(w->pending[0].fields);
        memmove(&w->pending[0], &w->pending[1], sizeof w->pending[0] * (size_t)(w->n_pending - 1));
        w->n_pending--;
    }
    w->pending[w->n_pending].fields = json_deep_copy(fields);
    w->pending[w->n_pending].seen = 0;
    if (w->pending[w->n_pending].fields) w->n_pending++;
    worker_send(w, PROTO_DONE, fields);
}

void worker_send_hello(worker *w) {
    w->last_hello = xd_now();
    w->welcomes = 0;
    json_t *f = json_pack("{s:s, s:I, s:o, s:o}", "worker", w->name, "pid", (json_int_t)getpid(),
                          "devices", worker_devices_json(w), "running", worker_running(w));
    worker_send(w, PROTO_HELLO, f);
    for (int i = 0; i < w->n_pending; i++) { /* what may have been lost with the old socket */
        w->pending[i].seen = 0;
        worker_send(w, PROTO_DONE, json_deep_copy(w->pending[i].fields));
    }
}

/* Socket monitor events: a connection made again (libzmq reconnected by itself, e.g. to a
 * restarted coordinator) gets a hello, so the coordinator learns at once what runs here. The
 * first connection of a socket needs none: its hello was queued when the socket was made. */
static void on_monitor(uv_poll_t *h, int status, int events) {
    (void)status;
    (void)events;
    worker *w = h->data;
    for (int n = 0; w->mon && n < 64; n++) {
        int ev = 0;
        size_t sz = sizeof ev;
        if (zmq_getsockopt(w->mon, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) break;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, w->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&m) >= 6) memcpy(&event, zmq_msg_data(&m), 2);
        while (zmq_msg_more(&m)) { /* the endpoint frame */
            zmq_msg_close(&m);
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, w->mon, ZMQ_DONTWAIT) < 0) break;
        }
        zmq_msg_close(&m);
        xd_debug("socket event %u", (unsigned)event);
        if (event == ZMQ_EVENT_CONNECTED && ++w->connects > 1 && w->sock) {
            xd_info("connected to %s again: hello", w->coordinator);
            worker_send_hello(w);
        }
    }
}

static void monitor_close(worker *w) {
    if (w->mon_poll) {
        uv_poll_stop(w->mon_poll);
        uv_close((uv_handle_t *)w->mon_poll, free_handle);
        w->mon_poll = NULL;
    }
    if (w->sock) zmq_socket_monitor(w->sock, NULL, 0);
    if (w->mon) zmq_close(w->mon);
    w->mon = NULL;
}

/* Best effort: without a monitor, heartbeats and error 404 still bring a hello. */
static void monitor_open(worker *w) {
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://xworker-monitor-%d", ++w->mon_seq);
    int fd = -1, linger = 0;
    size_t fdsz = sizeof fd;
    w->connects = 0;
    if (zmq_socket_monitor(w->sock, ep, ZMQ_EVENT_CONNECTED) != 0) {
        xd_warn("no socket monitor (%s): reconnections are noticed by heartbeats only", zmq_strerror(zmq_errno()));
        return;
    }
    w->mon = zmq_socket(w->zctx, ZMQ_PAIR);
    uv_poll_t *p = calloc(1, sizeof *p);
    if (!w->mon || !p || zmq_setsockopt(w->mon, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(w->mon, ep) ||
        zmq_getsockopt(w->mon, ZMQ_FD, &fd, &fdsz) || uv_poll_init(w->loop, p, fd)) {
        free(p);
        monitor_close(w);
        xd_warn("no socket monitor: reconnections are noticed by heartbeats only");
        return;
    }
    p->data = w;
    uv_poll_start(p, UV_READABLE, on_monitor);
    w->mon_poll = p;
    on_monitor(p, 0, 0); /* ZMQ_FD is edge triggered: read what came before the poll started */
}

int worker_conn_open(worker *w, xd_err *e) {
    void *s = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!s) return xd_fail(e, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0, one = 1;
    int64_t maxmsg = PROTO_MAX_MESSAGE;
    int hb_ivl = w->heartbeat_ms, hb_timeout = WORKER_SILENT_BEATS * w->heartbeat_ms;
    if (zmq_setsockopt(s, ZMQ_ROUTING_ID, w->name, strlen(w->name)) ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_setsockopt(s, ZMQ_TCP_KEEPALIVE, &one, sizeof one) ||
        zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl) ||
        zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout)) {
        xd_fail(e, "socket options: %s", zmq_strerror(zmq_errno()));
        zmq_close(s);
        return -1;
    }
    if (w->keys[0] && worker_keys_apply(s, w->keys, "worker", e)) {
        zmq_close(s);
        return -1;
    }
    /* The monitor before the connect: a connection made before it was attached would bring no
       CONNECTED event, and the reconnection's would then be taken for the first (no hello). */
    w->sock = s;
    monitor_open(w);
    int fd = -1;
    size_t fdsz = sizeof fd;
    uv_poll_t *p = NULL;
    if (zmq_connect(s, w->coordinator) != 0) {
        xd_fail(e, "cannot connect to %s: %s", w->coordinator, zmq_strerror(zmq_errno()));
    } else if (!(p = calloc(1, sizeof *p)) || zmq_getsockopt(s, ZMQ_FD, &fd, &fdsz) != 0 ||
               uv_poll_init(w->loop, p, fd) != 0) {
        free(p);
        p = NULL;
        xd_fail(e, "cannot poll the socket");
    }
    if (!p) {
        monitor_close(w);
        zmq_close(s);
        w->sock = NULL;
        return -1;
    }
    p->data = w;
    uv_poll_start(p, UV_READABLE, on_poll);
    w->poll = p;
    w->connected = true;
    w->last_rx = xd_now();
    w->welcomes = 0;
    w->coord_acks = false;
    w->send_failures = 0;
    xd_info("connecting to %s as %s%s", w->coordinator, w->name, w->keys[0] ? " (CURVE)" : "");
    worker_send_hello(w);
    return 0;
}

void worker_conn_flush_close(worker *w, int linger_ms) {
    if (w->sock) zmq_setsockopt(w->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    worker_conn_close(w);
}

void worker_conn_close(worker *w) {
    monitor_close(w);
    if (w->poll) {
        uv_poll_stop(w->poll);
        uv_close((uv_handle_t *)w->poll, free_handle);
        w->poll = NULL;
    }
    if (w->sock) {
        zmq_close(w->sock);
        w->sock = NULL;
    }
    w->connected = false;
}

static void on_reconnect(uv_timer_t *t) {
    worker *w = t->data;
    if (w->exiting) return;
    xd_err e = {{0}};
    w->reconnects++;
    if (worker_conn_open(w, &e)) {
        xd_warn("%s; retrying in %.1f s", e.msg, w->backoff_s);
        uv_timer_start(&w->reconnect_timer, on_reconnect, (uint64_t)(w->backoff_s * 1000), 0);
        w->backoff_s = w->backoff_s * 2 > WORKER_BACKOFF_MAX_S ? WORKER_BACKOFF_MAX_S : w->backoff_s * 2;
    }
}

static void reconnect_later(worker *w, const char *why) {
    xd_warn("%s: reconnecting in %.2f s", why, w->backoff_s);
    worker_conn_close(w);
    uv_timer_start(&w->reconnect_timer, on_reconnect, (uint64_t)(w->backoff_s * 1000), 0);
    w->backoff_s = w->backoff_s * 2 > WORKER_BACKOFF_MAX_S ? WORKER_BACKOFF_MAX_S : w->backoff_s * 2;
}

static void on_heartbeat(uv_timer_t *t) {
    worker *w = t->data;
    if (!w->sock || w->exiting) return;
    /* the monitor's ZMQ_FD is edge-triggered: read it once a period too, so no event waits long */
    if (w->mon_poll) on_monitor(w->mon_poll, 0, 0);
    double silent = xd_now() - w->last_rx;
    char why[128];
    if (w->coord_acks && silent > WORKER_SILENT_BEATS * w->heartbeat_ms / 1000.0) {
        snprintf(why, sizeof why, "no message from the coordinator for %.1f s", silent);
        reconnect_later(w, why);
        return;
    }
    if (worker_send(w, PROTO_HEARTBEAT, json_pack("{s:s, s:o}", "worker", w->name, "running", worker_running(w))) == 0) {
        w->send_failures = 0;
    } else if (++w->send_failures >= WORKER_SILENT_BEATS) {
        /* no connection that libzmq will bring back (it gives up after a protocol error) */
        snprintf(why, sizeof why, "%d heartbeats could not be sent", w->send_failures);
        reconnect_later(w, why);
    }
}

void worker_conn_start_timers(worker *w) {
    uv_idle_init(w->loop, &w->kick);
    w->kick.data = w;
    uv_timer_init(w->loop, &w->hb_timer);
    w->hb_timer.data = w;
    uv_timer_init(w->loop, &w->reconnect_timer);
    w->reconnect_timer.data = w;
    w->backoff_s = WORKER_BACKOFF_MIN_S;
    uv_timer_start(&w->hb_timer, on_heartbeat, (uint64_t)w->heartbeat_ms, (uint64_t)w->heartbeat_ms);
}

/* A new heartbeat period from the coordinator's welcome. */
void worker_conn_set_heartbeat(worker *w, int ms) {
    if (ms == w->heartbeat_ms) return;
    w->heartbeat_ms = ms;
    uv_timer_start(&w->hb_timer, on_heartbeat, (uint64_t)ms, (uint64_t)ms);
}

void worker_conn_stop_timers(worker *w) {
    uv_timer_stop(&w->hb_timer);
    uv_timer_stop(&w->reconnect_timer);
    uv_idle_stop(&w->kick);
}
