/* coordinator/loop.c — the event loop: one libuv loop polls the ROUTER socket (and the ZAP
 * socket) through ZMQ_FD, runs the timers, and handles every message to completion.
 * ZMQ_FD is edge-triggered and any call on the socket may consume the edge, so after every
 * receive and send ZMQ_EVENTS is read again; while it says POLLIN the pump keeps draining (in
 * batches, so timers still run under a flood). */
#define _XOPEN_SOURCE 700 /* realpath */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#define PUMP_BATCH 512
#define MAX_FRAMES 3 /* routing id, [empty delimiter of a REQ peer], payload */

static void pump_router(coord *c);

static void on_pump(uv_idle_t *h) {
    coord *c = h->data;
    uv_idle_stop(h);
    pump_router(c);
}

static void start_pump(coord *c) {
    if (c->handles_open && !c->stopping && !uv_is_active((uv_handle_t *)&c->pump)) uv_idle_start(&c->pump, on_pump);
}

void coord_rid_key(const uint8_t *rid, size_t len, char out[2 * COORD_MAX_RID + 1]) {
    xd_hex(rid, len > COORD_MAX_RID ? COORD_MAX_RID : len, out);
}

/* One encoded message waiting for the commit of what it reports. */
typedef struct coord_outgoing {
    uint8_t rid[COORD_MAX_RID];
    size_t rid_len;
    bool req;
    void *buf;
    size_t len;
    proto_type type;
} coord_outgoing;

static int send_now(coord *c, const uint8_t *rid, size_t rid_len, bool req, proto_type t, const void *buf, size_t len) {
    int rc = zmq_send(c->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0 && req) rc = zmq_send(c->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0) rc = zmq_send(c->router, buf, len, ZMQ_DONTWAIT);
    if (rc < 0) {
        c->stats.send_failures++;
        xd_debug("xcoord: %s not sent: %s", proto_type_name(t), zmq_strerror(errno));
    }
    int events = 0;
    size_t sz = sizeof events;
    if (zmq_getsockopt(c->router, ZMQ_EVENTS, &events, &sz) == 0 && (events & ZMQ_POLLIN)) start_pump(c);
    return rc < 0 ? -1 : 0;
}

/* Messages that report uncommitted state wait here for the commit at the end of the loop
 * iteration (group commit); once one waits, later ones queue behind it to keep their order. */
static int enqueue(coord *c, const uint8_t *rid, size_t rid_len, bool req, proto_type t, void *buf, size_t len) {
    if (c->n_out == c->cap_out) {
        size_t cap = c->cap_out ? c->cap_out * 2 : 256;
        coord_outgoing *grown = realloc(c->out, sizeof *grown * cap);
        if (!grown) {
            free(buf);
            return -1;
        }
        c->out = grown;
        c->cap_out = cap;
    }
    coord_outgoing *o = &c->out[c->n_out++];
    memcpy(o->rid, rid, rid_len);
    o->rid_len = rid_len, o->req = req, o->buf = buf, o->len = len, o->type = t;
    return 0;
}

/* Fault injection for tests: XCOORD_FAULT=exit-after-commit:N makes the process exit right after
 * the N-th commit that has messages waiting, before any is sent — a crash in the one window where
 * the database holds what no peer has heard yet. */
static void fault_after_commit(coord *c) {
    static long target = -1;
    if (target < 0) {
        const char *f = getenv("XCOORD_FAULT");
        target = f && !strncmp(f, "exit-after-commit:", 18) ? atol(f + 18) : 0;
    }
    if (target > 0 && c->n_out && ++c->faults_seen == target) {
        xd_log(XD_LOG_ERROR, "xcoord: XCOORD_FAULT: exiting after commit %ld with %zu messages unsent", target, c->n_out);
        _exit(70);
    }
}

/* Commits, then sends what waited for it. After a failed commit nothing is sent. */
static void commit_and_send(coord *c) {
    if (c->dirty && coord_flush(c)) {
        for (size_t i = 0; i < c->n_out; i++) free(c->out[i].buf);
        c->n_out = 0;
        return;
    }
    fault_after_commit(c);
    for (size_t i = 0; i < c->n_out; i++) {
        coord_outgoing *o = &c->out[i];
        send_now(c, o->rid, o->rid_len, o->req, o->type, o->buf, o->len);
        free(o->buf);
    }
    c->n_out = 0;
}

int coord_send(coord *c, const uint8_t *rid, size_t rid_len, bool req, proto_type t, json_t *fields) {
    void *buf = NULL;
    size_t len = 0;
    xd_err e = {{0}};
    if (!fields || proto_encode(t, fields, &buf, &len, &e)) {
        xd_log(XD_LOG_ERROR, "xcoord: cannot encode %s: %s", proto_type_name(t), fields ? e.msg : "no fields");
        return -2;
    }
    if (c->dirty || c->n_out) return enqueue(c, rid, rid_len, req, t, buf, len);
    int rc = send_now(c, rid, rid_len, req, t, buf, len);
    free(buf);
    return rc;
}

void coord_send_worker(coord *c, coord_worker *w, proto_type t, json_t *fields) {
    if (w && w->rid_len) coord_send(c, w->rid, w->rid_len, false, t, fields);
    json_decref(fields);
}

void coord_reply_ok(coord *c, const coord_peer *p, json_t *body) {
    json_t *f = body ? json_pack("{s:b, s:o}", "ok", 1, "body", body) : NULL;
    /* a body the wire cannot carry (over 4096 items, too deep) still gets an answer */
    if (!f || coord_send(c, p->rid, p->rid_len, p->req, PROTO_REPLY, f) == -2)
        coord_reply_error(c, p, "the reply does not fit in a message (ask for less)");
    json_decref(f);
}

void coord_reply_error(coord *c, const coord_peer *p, const char *fmt, ...) {
    char msg[XD_ERR_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    coord_utf8_clean(msg);
    json_t *f = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
    coord_send(c, p->rid, p->rid_len, p->req, PROTO_REPLY, f);
    json_decref(f);
}

void coord_send_error(coord *c, const coord_peer *p, int code, const char *message) {
    char msg[XD_ERR_MAX + 64];
    snprintf(msg, sizeof msg, "%s", message);
    coord_utf8_clean(msg);
    json_t *f = json_pack("{s:i, s:s}", "code", code, "message", msg);
    coord_send(c, p->rid, p->rid_len, p->req, PROTO_ERROR, f);
    json_decref(f);
}

/* A refused message: counted, answered with error, logged at most once a second. */
static void reject(coord *c, const coord_peer *p, int code, const char *why) {
    c->stats.rejected++;
    uint64_t now = coord_mono_ms();
    if (now - c->rejected_logged_at >= 1000) {
        xd_warn("xcoord: refused a message (%s); %llu refused so far", why, (unsigned long long)c->stats.rejected);
        c->rejected_logged_at = now;
    }
    coord_send_error(c, p, code, why);
}

static void handle(coord *c, const coord_peer *p, const void *data, size_t len) {
    proto_type t;
    json_t *f = NULL;
    xd_err e = {{0}};
    if (proto_decode(data, len, &t, &f, &e)) {
        reject(c, p, COORD_ERR_BAD_MESSAGE, e.msg);
        return;
    }
    c->stats.messages++;
    switch (t) {
    case PROTO_HELLO:
    case PROTO_HEARTBEAT:
    case PROTO_ACCEPT:
    case PROTO_PROGRESS:
    case PROTO_CHECKPOINT:
    case PROTO_DONE:
    case PROTO_DRAINING: coord_on_worker_message(c, p, t, f); break;
    case PROTO_SUBMIT:
    case PROTO_QUERY:
    case PROTO_CONTROL:
    case PROTO_LOG_TAIL:
    case PROTO_EVENTS:
    case PROTO_WORKERS: coord_on_client_message(c, p, t, f); break;
    case PROTO_REPLY:
    case PROTO_ERROR: c->stats.rejected++; break; /* never answer an answer: no ping-pong */
    default: {
        char why[128];
        snprintf(why, sizeof why, "\"%s\" is sent by the coordinator, not to it", proto_type_name(t));
        reject(c, p, COORD_ERR_WRONG_WAY, why);
    }
    }
    json_decref(f);
}

/* Receives one multipart message and handles it. 1: one handled, 0: nothing waiting. */
static int receive_one(coord *c) {
    zmq_msg_t frames[MAX_FRAMES];
    int n = 0, more = 1;
    bool too_many = false, broken = false;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            broken = true;
            break;
        }
        more = zmq_msg_more(&m);
        if (n < MAX_FRAMES) frames[n++] = m;
        else too_many = true, zmq_msg_close(&m);
    }
    if (n == 0) return 0;
    coord_peer p = {.rid_len = zmq_msg_size(&frames[0])};
    if (p.rid_len > COORD_MAX_RID) p.rid_len = COORD_MAX_RID;
    memcpy(p.rid, zmq_msg_data(&frames[0]), p.rid_len);
    if (!broken && !too_many && n == 2) {
        handle(c, &p, zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]));
    } else if (!broken && !too_many && n == 3 && zmq_msg_size(&frames[1]) == 0) {
        p.req = true;
        handle(c, &p, zmq_msg_data(&frames[2]), zmq_msg_size(&frames[2]));
    } else if (!broken) {
        reject(c, &p, COORD_ERR_BAD_MESSAGE, "a message is one frame (after a REQ socket's empty delimiter)");
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
    return 1;
}

static void pump_router(coord *c) {
    for (int handled = 0; !c->stopping;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(c->router, ZMQ_EVENTS, &events, &sz) || !(events & ZMQ_POLLIN)) return;
        if (handled == PUMP_BATCH) { /* let timers and the other socket run; the pump resumes */
            start_pump(c);
            return;
        }
        if (receive_one(c) <= 0) return;
        handled++;
    }
}

static void on_router_poll(uv_poll_t *h, int status, int events) {
    coord *c = h->data;
    pump_router(c);
}

static void on_zap_poll(uv_poll_t *h, int status, int events) {
    coord *c = h->data;
    coord_zap_serve(c);
}

static void on_signal(uv_signal_t *h, int signum) {
    coord *c = h->data;
    xd_info("xcoord: %s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
    c->stopping = true;
    uv_stop(&c->loop);
}

static void on_kick(uv_idle_t *h) { (void)h; }

void coord_kick(coord *c) {
    if (c->handles_open && !uv_is_active((uv_handle_t *)&c->kick)) uv_idle_start(&c->kick, on_kick);
}

/* The end of every loop iteration: the dispatch pass asked for, then one commit for everything
 * the iteration changed, then the messages that waited for it. */
static void on_commit_check(uv_check_t *h) {
    coord *c = h->data;
    if (c->dispatch_pending) coord_dispatch(c);
    commit_and_send(c);
    if (!c->dispatch_pending && !c->dirty) uv_idle_stop(&c->kick);
}

static int zmq_fail(xd_err *e, const char *what) { return xd_fail(e, "%s: %s", what, zmq_strerror(errno)); }

static int open_sockets(coord *c, xd_err *e) {
    c->zctx = zmq_ctx_new();
    if (!c->zctx) return zmq_fail(e, "zmq_ctx_new");
    if (c->keys) {
        /* the ZAP handler must be bound before the socket it guards */
        c->zap = zmq_socket(c->zctx, ZMQ_REP);
        int linger = 0;
        if (!c->zap || zmq_setsockopt(c->zap, ZMQ_LINGER, &linger, sizeof linger) ||
            zmq_bind(c->zap, "inproc://zeromq.zap.01"))
            return zmq_fail(e, "ZAP handler");
    }
    c->router = zmq_socket(c->zctx, ZMQ_ROUTER);
    if (!c->router) return zmq_fail(e, "zmq_socket");
    int64_t maxmsg = PROTO_MAX_MESSAGE;
    /* per connection: 10000 answers may wait for a slow reader (a burst of submits), then sends to
     * it fail (counted); 1000 incoming messages wait, then TCP pushes back on the sender */
    int one = 1, zero = 0, sndhwm = 10000, rcvhwm = 1000;
    if (zmq_setsockopt(c->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_setsockopt(c->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one) ||
        zmq_setsockopt(c->router, ZMQ_ROUTER_HANDOVER, &one, sizeof one) ||
        zmq_setsockopt(c->router, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(c->router, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm) ||
        zmq_setsockopt(c->router, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm))
        return zmq_fail(e, "socket options");
    if (c->keys) {
        const char *secret = coord_keys_server_secret(c->keys);
        if (zmq_setsockopt(c->router, ZMQ_CURVE_SERVER, &one, sizeof one) ||
            zmq_setsockopt(c->router, ZMQ_CURVE_SECRETKEY, secret, 40) ||
            zmq_setsockopt(c->router, ZMQ_ZAP_DOMAIN, "xdistill", 8))
            return zmq_fail(e, "CURVE options");
    }
    if (zmq_bind(c->router, c->opt.listen)) return xd_fail(e, "cannot listen on %s: %s", c->opt.listen, zmq_strerror(errno));
    size_t sz = sizeof c->endpoint;
    if (zmq_getsockopt(c->router, ZMQ_LAST_ENDPOINT, c->endpoint, &sz)) snprintf(c->endpoint, sizeof c->endpoint, "%s", c->opt.listen);
    return 0;
}

static int open_handles(coord *c, xd_err *e) {
    int fd;
    size_t sz = sizeof fd;
    if (zmq_getsockopt(c->router, ZMQ_FD, &fd, &sz)) return zmq_fail(e, "ZMQ_FD");
    int rc = uv_poll_init(&c->loop, &c->router_poll, fd);
    if (rc) return xd_fail(e, "uv_poll_init: %s", uv_strerror(rc));
    c->router_poll.data = c;
    if (c->zap) {
        if (zmq_getsockopt(c->zap, ZMQ_FD, &fd, &sz)) return zmq_fail(e, "ZMQ_FD");
        if ((rc = uv_poll_init(&c->loop, &c->zap_poll, fd))) return xd_fail(e, "uv_poll_init: %s", uv_strerror(rc));
        c->zap_poll.data = c;
    }
    uv_idle_init(&c->loop, &c->pump);
    uv_check_init(&c->loop, &c->commit_check);
    uv_timer_init(&c->loop, &c->lease_timer);
    uv_timer_init(&c->loop, &c->backoff_timer);
    uv_idle_init(&c->loop, &c->kick);
    uv_timer_init(&c->loop, &c->flush_timer);
    uv_signal_init(&c->loop, &c->sigint);
    uv_signal_init(&c->loop, &c->sigterm);
    c->pump.data = c->lease_timer.data = c->backoff_timer.data = c->kick.data = c->flush_timer.data = c;
    c->sigint.data = c->sigterm.data = c->commit_check.data = c;
    c->handles_open = true;
    uv_poll_start(&c->router_poll, UV_READABLE, on_router_poll);
    if (c->zap) uv_poll_start(&c->zap_poll, UV_READABLE, on_zap_poll);
    uv_check_start(&c->commit_check, on_commit_check);
    uv_signal_start(&c->sigint, on_signal, SIGINT);
    uv_signal_start(&c->sigterm, on_signal, SIGTERM);
    /* a lease is checked often enough that an expiry is noticed within a tenth of it */
    uint64_t tick = (uint64_t)c->opt.lease_ms / 10;
    if (tick < 20) tick = 20;
    if (tick > 500) tick = 500;
    uv_timer_start(&c->lease_timer, coord_on_lease_timer, tick, tick);
    return 0;
}

static void close_handles(coord *c) {
    if (!c->handles_open) return;
    uv_handle_t *handles[] = {
        (uv_handle_t *)&c->router_poll, (uv_handle_t *)&c->pump,          (uv_handle_t *)&c->lease_timer,
        (uv_handle_t *)&c->backoff_timer, (uv_handle_t *)&c->kick, (uv_handle_t *)&c->flush_timer,
        (uv_handle_t *)&c->sigint,       (uv_handle_t *)&c->sigterm,      (uv_handle_t *)&c->commit_check,
    };
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) uv_close(handles[i], NULL);
    if (c->zap) uv_close((uv_handle_t *)&c->zap_poll, NULL);
    c->handles_open = false;
    uv_run(&c->loop, UV_RUN_DEFAULT); /* runs the close callbacks */
}

static void free_state(coord *c) {
    size_t i = 0;
    void *v;
    while (coord_map_next(&c->attempts, &i, NULL, &v)) coord_attempt_free(v);
    i = 0;
    while (coord_map_next(&c->workers, &i, NULL, &v)) {
        coord_worker *w = v;
        free(w->name);
        json_decref(w->devices);
        free(w);
    }
    coord_map_free(&c->attempts);
    coord_map_free(&c->workers);
    coord_map_free(&c->workers_by_rid);
    coord_map_free(&c->stale_seen);
    for (size_t k = 0; k < c->n_out; k++) free(c->out[k].buf);
    free(c->out);
}

/* A daemon with a thousand workers needs a thousand sockets: take the hard limit. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int coord_serve(const coord_options *o, xd_err *e) {
    coord *c = calloc(1, sizeof *c);
    if (!c) return xd_fail(e, "out of memory");
    c->opt = *o;
    int rc = 0;
    if (!o->keys_dir && !coord_endpoint_is_local(o->listen)) {
        free(c);
        return xd_fail(e, "%s is reachable from other hosts: give --keys DIR (CURVE keys, docs/coordinator.md), "
                          "or listen on 127.0.0.1 or ipc://", o->listen);
    }
    if (!realpath(o->artifacts, c->artifacts) || !xd_is_dir(c->artifacts)) {
        free(c);
        return xd_fail(e, "--artifacts %s: not a directory", o->artifacts);
    }
    raise_fd_limit();
    uint64_t seed = (uint64_t)coord_wall_ms() ^ ((uint64_t)getpid() << 32);
    FILE *ur = fopen("/dev/urandom", "rb");
    if (ur) {
        if (fread(&seed, sizeof seed, 1, ur) != 1) seed ^= coord_mono_ms();
        fclose(ur);
    }
    xd_rng_seed(&c->rng, seed);
    uv_loop_init(&c->loop);
    if (o->keys_dir && coord_keys_load(o->keys_dir, &c->keys, e)) rc = -1;
    if (rc == 0) rc = coord_db_open(c, o->db_path, e);
    if (rc == 0) rc = coord_sched_recover(c, e);
    if (rc == 0) rc = open_sockets(c, e);
    if (rc == 0) rc = open_handles(c, e);
    if (rc == 0) rc = coord_dashboard_start(c, e);
    if (rc == 0) {
        xd_info("xcoord: listening on %s%s (database %s, artifacts %s, %u live attempts)", c->endpoint,
                c->keys ? " with CURVE" : "", o->db_path, c->artifacts, (unsigned)c->attempts.count);
        coord_backoff_rearm(c);
        coord_dispatch_soon(c);
        pump_router(c);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        if (!c->fatal) {
            commit_and_send(c); /* the last replies go out after their commit */
            coord_flush(c);     /* and progress lines still batched */
        }
        if (c->fatal) rc = xd_fail(e, "stopped after a database error (see the log)");
    }
    coord_dashboard_stop(c); /* its handles close with the others' */
    close_handles(c);
    if (c->router) zmq_close(c->router);
    if (c->zap) zmq_close(c->zap);
    if (c->zctx) zmq_ctx_term(c->zctx);
    coord_db_close(c);
    uv_loop_close(&c->loop);
    coord_keys_free(c->keys);
    free_state(c);
    if (rc == 0) xd_info("xcoord: stopped");
    free(c);
    return rc;
}
