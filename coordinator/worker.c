/* coordinator/worker.c — messages from workers: hello (and reconciling what it still runs),
 * heartbeats that renew leases, accept, progress, checkpoint, done, draining. A message about an
 * attempt is acted on only when it is the live attempt of that job, on that worker, with that
 * epoch; anything else is stale: dropped, logged as an event, and (unless it is a done) answered
 * with fence so the worker stops a child that should not run. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_LINE_MAX (64u << 10)

/* A string field ("" when absent: proto checked the types, this keeps NULL out of the database). */
static const char *str_field(json_t *f, const char *key) {
    const char *s = json_string_value(json_object_get(f, key));
    return s ? s : "";
}

static int64_t int_field(json_t *f, const char *key) { return json_integer_value(json_object_get(f, key)); }

coord_worker *coord_worker_by_peer(coord *c, const coord_peer *p) {
    char key[2 * COORD_MAX_RID + 1];
    coord_rid_key(p->rid, p->rid_len, key);
    return coord_map_get(&c->workers_by_rid, key);
}

static void set_connection(coord *c, coord_worker *w, const coord_peer *p) {
    char key[2 * COORD_MAX_RID + 1];
    if (w->rid_len == p->rid_len && !memcmp(w->rid, p->rid, p->rid_len)) return;
    if (w->rid_len) {
        coord_rid_key(w->rid, w->rid_len, key);
        if (coord_map_get(&c->workers_by_rid, key) == w) coord_map_remove(&c->workers_by_rid, key);
    }
    memcpy(w->rid, p->rid, p->rid_len);
    w->rid_len = p->rid_len;
    coord_rid_key(p->rid, p->rid_len, key);
    coord_worker *old = coord_map_get(&c->workers_by_rid, key);
    if (old && old != w) old->rid_len = 0; /* that connection belongs to this name now */
    coord_map_put(&c->workers_by_rid, key, w);
}

static bool valid_worker_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("._:@-", ch)))
            return false;
    }
    return true;
}

static void set_devices(coord_worker *w, json_t *devices) {
    json_decref(w->devices);
    w->devices = json_is_array(devices) ? json_incref(devices) : json_array();
    w->n_cuda = 0;
    size_t i;
    json_t *d;
    json_array_foreach(w->devices, i, d) {
        const char *kind = json_string_value(json_object_get(d, "kind"));
        if (kind && !strcmp(kind, "cuda") && w->n_cuda < COORD_MAX_GPUS)
            w->cuda_index[w->n_cuda++] = (int)json_integer_value(json_object_get(d, "index"));
    }
}

static coord_attempt *live_attempt(coord *c, const coord_worker *w, const char *id, int64_t epoch) {
    coord_attempt *a = coord_map_get(&c->attempts, id);
    return a && w && a->epoch == epoch && !strcmp(a->worker, w->name) ? a : NULL;
}

static void send_fence(coord *c, const coord_peer *p, const char *attempt, int64_t epoch) {
    json_t *f = json_pack("{s:s, s:I}", "attempt", attempt, "epoch", (json_int_t)epoch);
    coord_send(c, p->rid, p->rid_len, p->req, PROTO_FENCE, f);
    json_decref(f);
}

/* A stale message: counted, logged once per kind and attempt, fenced unless it is a done. */
static void stale(coord *c, const coord_peer *p, const char *who, proto_type t, const char *attempt, int64_t epoch) {
    c->stats.stale++;
    char key[700];
    snprintf(key, sizeof key, "%s:%s#%lld", proto_type_name(t), attempt, (long long)epoch);
    if (!coord_map_get(&c->stale_seen, key)) {
        if (c->stale_seen.count > 4096) coord_map_free(&c->stale_seen);
        coord_map_put(&c->stale_seen, key, (void *)1);
        char job[600];
        snprintf(job, sizeof job, "%s", attempt);
        char *hash = strrchr(job, '#');
        if (hash) *hash = 0;
        char run[600];
        snprintf(run, sizeof run, "%s", job);
        char *slash = strchr(run, '/');
        if (slash) *slash = 0;
        sqlite3_stmt *st = coord_sql(c, "SELECT 1 FROM jobs WHERE id = ?", "s", job);
        bool known = st && coord_sql_step(c, st) == 1;
        if (st) sqlite3_reset(st);
        coord_batch_begin(c);
        coord_event(c, known ? run : NULL, known ? job : NULL, NULL, "stale",
                    "dropped %s from %s about attempt %s epoch %lld: not the live attempt%s", proto_type_name(t), who,
                    attempt, (long long)epoch, t == PROTO_DONE ? "" : " (fenced)");
    }
    if (t != PROTO_DONE) send_fence(c, p, attempt, epoch);
}

typedef struct sends {
    json_t *fences, *cancels; /* arrays of {attempt, epoch} */
} sends;

/* What the worker says it runs against what the coordinator has leased to it. Listed live
 * attempts are kept (marked running); listed others are fenced. A listing proves an attempt gone
 * only when the worker had accepted it: its accept was received first, so the listing was sent
 * after it. An attempt not yet accepted may have been assigned after the listing was sent (an
 * assign from this coordinator crossing a hello on a new connection), and a heartbeat may be
 * queued across a reconnect from before the worker re-sent a lost done; so unlisted attempts are
 * lost here only when accepted and the list is a hello's (the worker re-sends recent dones before
 * it), and otherwise keep their lease, which lapses unless a listing renews it. Inside the
 * caller's transaction. */
static int reconcile(coord *c, coord_worker *w, json_t *running, bool hello, sends *out) {
    int64_t now = coord_wall_ms();
    coord_map kept = {0};
    size_t i;
    json_t *item;
    int rc = 0;
    json_array_foreach(running, i, item) {
        const char *id = json_string_value(json_object_get(item, "attempt"));
        int64_t epoch = json_integer_value(json_object_get(item, "epoch"));
        if (!id) continue;
        coord_attempt *a = live_attempt(c, w, id, epoch);
        if (!a) {
            json_array_append_new(out->fences, json_pack("{s:s, s:I}", "attempt", id, "epoch", (json_int_t)epoch));
            coord_event(c, NULL, NULL, id, "fenced", "%s still runs %s (epoch %lld), which is not its live attempt",
                        w->name, id, (long long)epoch);
            continue;
        }
        coord_map_put(&kept, a->id, a);
        coord_attempt_renew(c, a);
        if (a->state == ATTEMPT_DISPATCHED) {
            rc |= coord_sql_exec(c, "UPDATE attempts SET state = 'running', started = COALESCE(started, ?) WHERE id = ?", "is", now, a->id);
            rc |= coord_sql_exec(c, "UPDATE jobs SET state = 'running', updated = ? WHERE id = ? AND state = 'dispatched'", "is", now, a->job);
            a->state = ATTEMPT_RUNNING;
        } else if (a->state == ATTEMPT_CANCELLING) {
            json_array_append_new(out->cancels, json_pack("{s:s, s:I, s:s}", "attempt", a->id, "epoch", (json_int_t)a->epoch,
                                                          "reason", "cancelled"));
        }
        coord_event(c, a->run, a->job, a->id, "kept", "%s still runs %s (epoch %lld): kept", w->name, a->id, (long long)a->epoch);
    }
    /* accepted by this worker, not in its hello: it no longer runs them (it restarted) */
    char *lost[256];
    int n_lost = 0, active = 0;
    size_t it = 0;
    void *v;
    while (hello && n_lost < 256 && coord_map_next(&c->attempts, &it, NULL, &v)) {
        coord_attempt *a = v;
        if (!strcmp(a->worker, w->name) && a->state == ATTEMPT_RUNNING && !coord_map_get(&kept, a->id))
            lost[n_lost++] = strdup(a->id);
    }
    for (int k = 0; k < n_lost; k++) {
        coord_attempt *a = lost[k] ? coord_map_get(&c->attempts, lost[k]) : NULL;
        if (a && rc == 0) rc = coord_attempt_end(c, a, END_LOST, -1, "its worker said hello without it (accepted before)", NULL);
        free(lost[k]);
    }
    /* busy with every attempt still leased to it, listed or not */
    it = 0;
    while (coord_map_next(&c->attempts, &it, NULL, &v)) active += !strcmp(((coord_attempt *)v)->worker, w->name);
    w->active = active;
    coord_map_free(&kept);
    return rc ? -1 : 0;
}

static void send_all(coord *c, coord_worker *w, proto_type t, json_t *list) {
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) coord_send_worker(c, w, t, json_incref(item));
    json_decref(list);
}

/* A worker (re)connects: hello, or a heartbeat from one the coordinator had given up on or has
 * not seen since it restarted. */
static void worker_join(coord *c, const coord_peer *p, coord_worker *w, json_t *running, bool hello) {
    int64_t now = coord_wall_ms();
    set_connection(c, w, p);
    w->alive = true;
    w->last_heartbeat = coord_mono_ms();
    char *devices = json_dumps(w->devices, JSON_COMPACT);
    sends s = {json_array(), json_array()};
    bool ok = devices && coord_tx_begin(c) == 0 &&
              coord_sql_exec(c,
                             "INSERT INTO workers(name, devices, pid, state, draining, first_seen, last_seen) "
                             "VALUES (?1, ?2, ?3, 'alive', ?4, ?5, ?5) ON CONFLICT(name) DO UPDATE SET "
                             "devices = ?2, pid = ?3, state = 'alive', last_seen = ?5",
                             "ssiii", w->name, devices, w->pid, (int64_t)w->draining, now) == 0;
    free(devices);
    if (ok) {
        coord_event(c, NULL, NULL, NULL, hello ? "worker_joined" : "worker_back", "%s %s (pid %lld, %d CUDA devices, %zu attempts listed)",
                    w->name, hello ? "said hello" : "heartbeats again", (long long)w->pid, w->n_cuda, json_array_size(running));
        ok = reconcile(c, w, running, hello, &s) == 0 && coord_tx_commit(c) == 0;
    } else {
        coord_tx_rollback(c);
    }
    if (ok) {
        coord_send_worker(c, w, PROTO_WELCOME,
                          json_pack("{s:s, s:i, s:i}", "worker_id", w->name, "heartbeat_ms", c->opt.heartbeat_ms, "lease_ms", c->opt.lease_ms));
        send_all(c, w, PROTO_FENCE, s.fences);
        send_all(c, w, PROTO_CANCEL, s.cancels);
        if (w->draining) coord_send_worker(c, w, PROTO_DRAIN, json_object());
        coord_dispatch_soon(c);
        xd_info("xcoord: worker %s joined (%d CUDA devices, %d live attempts kept)", w->name, w->n_cuda, w->active);
    } else {
        json_decref(s.fences);
        json_decref(s.cancels);
    }
}

static void on_hello(coord *c, const coord_peer *p, json_t *f) {
    const char *name = json_string_value(json_object_get(f, "worker"));
    if (!valid_worker_name(name)) {
        coord_send_error(c, p, COORD_ERR_BAD_MESSAGE, "hello: worker names are 1-128 letters, digits and ._:@-");
        return;
    }
    coord_worker *w = coord_map_get(&c->workers, name);
    if (!w) {
        w = calloc(1, sizeof *w);
        if (!w || !(w->name = strdup(name)) || coord_map_put(&c->workers, w->name, w)) {
            if (w) free(w->name);
            free(w);
            coord_send_error(c, p, COORD_ERR_INTERNAL, "out of memory");
            return;
        }
    }
    w->pid = int_field(f, "pid");
    set_devices(w, json_object_get(f, "devices"));
    worker_join(c, p, w, json_object_get(f, "running"), true);
}

static void on_heartbeat(coord *c, const coord_peer *p, json_t *f) {
    const char *name = json_string_value(json_object_get(f, "worker"));
    coord_worker *w = name ? coord_map_get(&c->workers, name) : NULL;
    if (!w) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown worker \"%.200s\": send hello", name ? name : "");
        coord_send_error(c, p, COORD_ERR_UNKNOWN_WORKER, msg);
        return;
    }
    c->stats.heartbeats++;
    json_t *running = json_object_get(f, "running");
    if (!w->alive || !w->rid_len) {
        worker_join(c, p, w, running, false);
        return;
    }
    set_connection(c, w, p);
    w->last_heartbeat = coord_mono_ms();
    size_t i;
    json_t *item;
    json_array_foreach(running, i, item) {
        const char *id = json_string_value(json_object_get(item, "attempt"));
        int64_t epoch = json_integer_value(json_object_get(item, "epoch"));
        coord_attempt *a = id ? live_attempt(c, w, id, epoch) : NULL;
        if (a) coord_attempt_renew(c, a);
        else if (id) stale(c, p, w->name, PROTO_HEARTBEAT, id, epoch);
    }
}

/* The worker behind a message about an attempt; unknown connections are told to say hello. */
static coord_worker *sender(coord *c, const coord_peer *p) {
    coord_worker *w = coord_worker_by_peer(c, p);
    if (!w) coord_send_error(c, p, COORD_ERR_UNKNOWN_WORKER, "unknown worker connection: send hello");
    return w;
}

static void on_accept(coord *c, const coord_peer *p, json_t *f) {
    coord_worker *w = sender(c, p);
    const char *id = str_field(f, "attempt");
    int64_t epoch = int_field(f, "epoch");
    if (!w) return;
    coord_attempt *a = live_attempt(c, w, id, epoch);
    if (!a) {
        stale(c, p, w->name, PROTO_ACCEPT, id, epoch);
        return;
    }
    coord_attempt_renew(c, a);
    if (a->state != ATTEMPT_DISPATCHED) return;
    int64_t now = coord_wall_ms();
    if (coord_tx_begin(c) ||
        coord_sql_exec(c, "UPDATE attempts SET state = 'running', started = ? WHERE id = ?", "is", now, a->id) ||
        coord_sql_exec(c, "UPDATE jobs SET state = 'running', updated = ? WHERE id = ? AND state = 'dispatched'", "is", now, a->job))
        return;
    coord_event(c, a->run, a->job, a->id, "running", "%s accepted %s", w->name, a->id);
    if (coord_tx_commit(c) == 0) a->state = ATTEMPT_RUNNING;
}

static void on_progress(coord *c, const coord_peer *p, json_t *f) {
    coord_worker *w = sender(c, p);
    const char *id = str_field(f, "attempt");
    int64_t epoch = int_field(f, "epoch");
    if (!w) return;
    coord_attempt *a = live_attempt(c, w, id, epoch);
    if (!a) {
        stale(c, p, w->name, PROTO_PROGRESS, id, epoch);
        return;
    }
    coord_attempt_renew(c, a);
    const char *line = str_field(f, "metrics");
    size_t len = strlen(line);
    char *cut = len > METRICS_LINE_MAX ? strndup(line, METRICS_LINE_MAX) : NULL;
    if (cut) coord_utf8_clean(cut);
    coord_batch_begin(c);
    coord_sql_exec(c, "INSERT INTO metrics(attempt, job, step, total, time, line) VALUES (?, ?, ?, ?, ?, ?)", "ssiiis",
                   a->id, a->job, int_field(f, "step"), int_field(f, "total"), coord_wall_ms(), cut ? cut : line);
    free(cut);
    coord_dashboard_notify(c); /* a new point for the dashboard's curves */
}

static void on_checkpoint(coord *c, const coord_peer *p, json_t *f) {
    coord_worker *w = sender(c, p);
    const char *id = str_field(f, "attempt");
    int64_t epoch = int_field(f, "epoch");
    if (!w) return;
    coord_attempt *a = live_attempt(c, w, id, epoch);
    if (!a) {
        stale(c, p, w->name, PROTO_CHECKPOINT, id, epoch);
        return;
    }
    coord_attempt_renew(c, a);
    int64_t step = int_field(f, "step");
    const char *path = str_field(f, "path");
    coord_batch_begin(c);
    coord_sql_exec(c, "INSERT INTO artifacts(job, attempt, kind, step, path, time) VALUES (?, ?, 'checkpoint', ?, ?, ?)",
                   "ssisi", a->job, a->id, step, path, coord_wall_ms());
    coord_event(c, a->run, a->job, a->id, "checkpoint", "step %lld: %.400s", (long long)step, path);
}

static void on_done(coord *c, const coord_peer *p, json_t *f) {
    coord_worker *w = sender(c, p);
    const char *id = str_field(f, "attempt");
    int64_t epoch = int_field(f, "epoch");
    if (!w) return;
    coord_attempt *a = live_attempt(c, w, id, epoch);
    if (!a) {
        stale(c, p, w->name, PROTO_DONE, id, epoch);
        return;
    }
    bool ok = json_is_true(json_object_get(f, "ok"));
    int exit_code = (int)json_integer_value(json_object_get(f, "exit_code"));
    const char *error = str_field(f, "error"), *output = str_field(f, "output");
    char *err = strlen(error) > 4000 ? strndup(error, 4000) : NULL;
    if (err) coord_utf8_clean(err);
    if (coord_tx_begin(c) == 0 &&
        coord_attempt_end(c, a, ok ? END_SUCCEEDED : END_FAILED, exit_code, err ? err : error, output) == 0)
        coord_tx_commit(c);
    free(err);
}

static void on_draining(coord *c, const coord_peer *p, json_t *f) {
    const char *name = json_string_value(json_object_get(f, "worker"));
    coord_worker *w = name ? coord_map_get(&c->workers, name) : NULL;
    if (!w) w = sender(c, p);
    if (!w) return;
    if (coord_tx_begin(c) || coord_sql_exec(c, "UPDATE workers SET draining = 1 WHERE name = ?", "s", w->name)) return;
    coord_event(c, NULL, NULL, NULL, "worker_draining", "%s is draining: it takes no new work", w->name);
    if (coord_tx_commit(c) == 0) w->draining = true;
}

void coord_on_worker_message(coord *c, const coord_peer *p, proto_type t, json_t *f) {
    switch (t) {
    case PROTO_HELLO: on_hello(c, p, f); break;
    case PROTO_HEARTBEAT: on_heartbeat(c, p, f); break;
    case PROTO_ACCEPT: on_accept(c, p, f); break;
    case PROTO_PROGRESS: on_progress(c, p, f); break;
    case PROTO_CHECKPOINT: on_checkpoint(c, p, f); break;
    case PROTO_DONE: on_done(c, p, f); break;
    case PROTO_DRAINING: on_draining(c, p, f); break;
    default: break;
    }
}

void coord_worker_lost(coord *c, coord_worker *w, const char *why) {
    w->alive = false;
    if (coord_tx_begin(c) ||
        coord_sql_exec(c, "UPDATE workers SET state = 'lost', last_seen = ? WHERE name = ?", "is", coord_wall_ms(), w->name))
        return;
    coord_event(c, NULL, NULL, NULL, "worker_lost", "%s lost: %s", w->name, why);
    xd_warn("xcoord: worker %s lost: %s", w->name, why);
    char *lost[256], reason[300];
    int n = 0;
    size_t it = 0;
    void *v;
    while (n < 256 && coord_map_next(&c->attempts, &it, NULL, &v)) {
        coord_attempt *a = v;
        if (!strcmp(a->worker, w->name)) lost[n++] = strdup(a->id);
    }
    snprintf(reason, sizeof reason, "worker %s: %s", w->name, why);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        coord_attempt *a = lost[i] ? coord_map_get(&c->attempts, lost[i]) : NULL;
        if (a && rc == 0) rc = coord_attempt_end(c, a, END_LOST, -1, reason, NULL);
        free(lost[i]);
    }
    if (rc == 0) coord_tx_commit(c);
}

json_t *coord_worker_json(coord *c, coord_worker *w) {
    const char *attempt = NULL, *job = NULL, *state = NULL;
    size_t it = 0;
    void *v;
    while (coord_map_next(&c->attempts, &it, NULL, &v)) {
        coord_attempt *a = v;
        if (!strcmp(a->worker, w->name)) {
            attempt = a->id, job = a->job;
            state = a->state == ATTEMPT_RUNNING ? "running" : a->state == ATTEMPT_CANCELLING ? "cancelling" : "dispatched";
            break;
        }
    }
    json_t *o = json_pack("{s:s, s:s, s:O, s:I, s:i, s:b}", "name", w->name,
                          "state", w->alive ? "alive" : w->rid_len ? "lost" : "disconnected",
                          "devices", w->devices, "pid", (json_int_t)w->pid,
                          "cuda_devices", w->n_cuda, "draining", w->draining);
    if (!o) return NULL;
    json_object_set_new(o, "last_heartbeat_age_s",
                        w->rid_len ? json_real((double)(coord_mono_ms() - w->last_heartbeat) / 1000.0) : json_null());
    json_object_set_new(o, "attempt", attempt ? json_string(attempt) : json_null());
    json_object_set_new(o, "job", job ? json_string(job) : json_null());
    json_object_set_new(o, "attempt_state", state ? json_string(state) : json_null());
    return o;
}
