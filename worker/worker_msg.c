/* What the worker does with each message from the coordinator. Everything unexpected is logged
 * and ignored: the decoder has checked the schema, so only the meaning is checked here. */
#include "worker.h"

#include <string.h>

static const char *str_field(json_t *f, const char *key) {
    const char *s = json_string_value(json_object_get(f, key));
    return s ? s : "";
}

static long long int_field(json_t *f, const char *key) {
    return (long long)json_integer_value(json_object_get(f, key));
}

/* The attempt a cancel or fence names, when it is the one this worker runs. */
static worker_attempt *named_attempt(worker *w, json_t *f, const char *what) {
    const char *id = str_field(f, "attempt");
    long long epoch = int_field(f, "epoch");
    if (!w->cur || strcmp(w->cur->id, id) != 0) {
        xd_info("%s of attempt %s (epoch %lld) ignored: %s", what, id, epoch,
                w->cur ? "another attempt runs here" : "nothing runs here");
        return NULL;
    }
    if (w->cur->epoch != epoch) {
        xd_warn("%s of attempt %s ignored: epoch %lld, the attempt runs with epoch %lld", what, id,
                epoch, w->cur->epoch);
        return NULL;
    }
    return w->cur;
}

static void on_welcome(worker *w, json_t *f) {
    long long hb = int_field(f, "heartbeat_ms"), lease = int_field(f, "lease_ms");
    if (hb < 50 || hb > 600000) {
        xd_warn("welcome with heartbeat_ms %lld ignored (50..600000)", hb);
        return;
    }
    if (++w->welcomes == 2) {
        w->coord_acks = true;
        xd_debug("the coordinator answers heartbeats: its silence will mean it is gone");
    }
    if (hb != w->heartbeat_ms || lease != w->lease_ms)
        xd_info("welcome as %s: heartbeat every %lld ms, lease %lld ms", str_field(f, "worker_id"), hb, lease);
    w->lease_ms = (int)(lease > 0 && lease < 3600000 ? lease : 0);
    worker_conn_set_heartbeat(w, (int)hb);
}

static void on_assign(worker *w, json_t *f) {
    const char *id = str_field(f, "attempt");
    if (w->draining || w->exiting) {
        xd_warn("assign of attempt %s refused: this worker is draining", id);
        return;
    }
    if (w->cur) {
        xd_warn("assign of attempt %s refused: attempt %s runs here (one at a time)", id, w->cur->id);
        return;
    }
    worker_start_attempt(w, f);
}

static void on_cancel(worker *w, json_t *f) {
    worker_attempt *a = named_attempt(w, f, "cancel");
    if (!a) return;
    if (a->end != WORKER_END_NONE) {
        xd_info("attempt %s is already stopping", a->id);
        return;
    }
    xd_info("cancel of attempt %s: %s", a->id, str_field(f, "reason"));
    worker_stop_child(a, WORKER_END_CANCEL, w->grace_s);
}

static void on_fence(worker *w, json_t *f) {
    worker_attempt *a = named_attempt(w, f, "fence");
    if (!a) return;
    xd_warn("attempt %s is fenced: killing its child, reporting nothing", a->id);
    worker_stop_child(a, WORKER_END_FENCE, 0);
    w->cur = NULL; /* detached: it lives until its child is reaped */
}

void worker_handle(worker *w, proto_type t, json_t *f) {
    switch (t) {
    case PROTO_WELCOME:
        on_welcome(w, f);
        break;
    case PROTO_ASSIGN:
        on_assign(w, f);
        break;
    case PROTO_CANCEL:
        on_cancel(w, f);
        break;
    case PROTO_FENCE:
        on_fence(w, f);
        break;
    case PROTO_DRAIN:
        /* the coordinator's drain is its own state: it assigns nothing while it lasts and may
           undrain; the running attempt goes on. */
        xd_info("drained by the coordinator: finishing what runs, taking nothing new from it");
        worker_send(w, PROTO_DRAINING, json_pack("{s:s}", "worker", w->name));
        break;
    case PROTO_ERROR:
        xd_warn("the coordinator refused a message: %lld %s", int_field(f, "code"), str_field(f, "message"));
        /* 404: it does not know this worker (it restarted, or lost the hello): hello again, at
           most once a heartbeat period */
        if (int_field(f, "code") == 404 && xd_now() - w->last_hello >= w->heartbeat_ms / 1000.0) worker_send_hello(w);
        break;
    default:
        xd_warn("unexpected %s from the coordinator, ignored", proto_type_name(t));
        break;
    }
}
