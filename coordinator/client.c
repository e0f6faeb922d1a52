/* coordinator/client.c — requests from clients (xctl, dashboards, tests): submit, query, control,
 * log_tail, events, workers. Each is answered with reply {ok, error?, body}; a change is committed
 * before its reply is sent. The bodies are documented in docs/coordinator.md. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_MAX 1000 /* rows in one reply: proto caps an array at 4096 items */

static const char *str_field(json_t *f, const char *key) {
    const char *s = json_string_value(json_object_get(f, key));
    return s ? s : "";
}

json_t *coord_time_json(sqlite3_stmt *st, int i) {
    if (sqlite3_column_type(st, i) == SQLITE_NULL || sqlite3_column_int64(st, i) == 0) return json_null();
    return json_real((double)sqlite3_column_int64(st, i) / 1000.0);
}

static json_t *stats_json(coord *c) {
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "endpoint", c->endpoint,
                     "messages", (json_int_t)c->stats.messages, "heartbeats", (json_int_t)c->stats.heartbeats,
                     "rejected", (json_int_t)c->stats.rejected, "stale", (json_int_t)c->stats.stale,
                     "dispatched", (json_int_t)c->stats.dispatched, "commits", (json_int_t)c->stats.commits,
                     "send_failures", (json_int_t)c->stats.send_failures, "workers", (json_int_t)c->workers.count,
                     "live_attempts", (json_int_t)c->attempts.count);
}

/* ---- submit ---- */

static void on_submit(coord *c, const coord_peer *p, json_t *f) {
    const char *text = str_field(f, "spec"), *name = json_string_value(json_object_get(f, "name"));
    coord_spec *spec;
    xd_err e = {{0}};
    if (coord_spec_parse(text, strlen(text), &spec, &e)) {
        coord_reply_error(c, p, "%s", e.msg);
        return;
    }
    if (name && (!*name || strlen(name) > 200)) {
        coord_spec_free(spec);
        coord_reply_error(c, p, "submit: name must be 1-200 characters");
        return;
    }
    if (coord_tx_begin(c)) {
        coord_spec_free(spec);
        coord_reply_error(c, p, "the coordinator's database failed");
        return;
    }
    sqlite3_stmt *st = coord_sql(c, "SELECT COALESCE(MAX(seq), 0) + 1 FROM runs", "");
    int64_t seq = st && coord_sql_step(c, st) == 1 ? sqlite3_column_int64(st, 0) : -1;
    if (st) sqlite3_reset(st);
    /* the suffix keeps run ids (and so artifact directories) unique even if the database is
     * replaced while old artifacts remain: a new job must never resume an old run's checkpoints */
    char run[64];
    snprintf(run, sizeof run, "run-%lld-%04x", (long long)seq, (unsigned)(xd_rng_next(&c->rng) & 0xffff));
    coord_dag dag;
    int rc = seq > 0 ? coord_spec_expand(spec, c->artifacts, run, &dag, &e) : -1;
    if (rc) {
        coord_tx_rollback(c);
        coord_spec_free(spec);
        coord_reply_error(c, p, "%s", seq > 0 ? e.msg : "the coordinator's database failed");
        return;
    }
    const char *run_name = name ? name : dag.name;
    int64_t now = coord_wall_ms();
    rc = coord_sql_exec(c, "INSERT INTO runs(id, seq, name, spec, state, created, updated) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                        "sissii", run, seq, run_name, text, now, now);
    json_t *jobs = json_array();
    for (int i = 0; i < dag.n_jobs && rc == 0; i++) {
        coord_job_spec *j = &dag.jobs[i];
        char id[300];
        snprintf(id, sizeof id, "%s/%s", run, j->name);
        rc = coord_sql_exec(c,
                            "INSERT INTO jobs(id, run, name, seq, stage, config, workdir, output, gpus, state, retries, "
                            "worker_retries, ready_at, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
                            "?12, ?13, ?14, ?14)",
                            "sssissssisiiii", id, run, j->name, (int64_t)i, j->stage, j->config, j->workdir, j->output,
                            (int64_t)j->gpus, j->n_deps ? "pending" : "ready", (int64_t)dag.retries,
                            (int64_t)dag.worker_retries, j->n_deps ? (int64_t)0 : now, now);
        for (int d = 0; d < j->n_deps && rc == 0; d++) {
            char needs[300];
            snprintf(needs, sizeof needs, "%s/%s", run, dag.jobs[j->deps[d]].name);
            rc = coord_sql_exec(c, "INSERT INTO deps(job, needs) VALUES (?, ?)", "ss", id, needs);
        }
        json_array_append_new(jobs, json_string(id));
    }
    if (rc == 0)
        coord_event(c, run, NULL, NULL, "submitted", "run \"%s\" submitted: %d jobs", run_name, dag.n_jobs);
    json_t *body = json_pack("{s:s, s:s, s:o}", "run", run, "name", run_name, "jobs", jobs);
    int n_jobs = dag.n_jobs;
    coord_dag_free(&dag);
    coord_spec_free(spec);
    if (rc || coord_tx_commit(c)) {
        coord_tx_rollback(c);
        json_decref(body);
        coord_reply_error(c, p, "the coordinator's database failed");
        return;
    }
    xd_info("xcoord: run %s submitted (%d jobs)", run, n_jobs);
    coord_reply_ok(c, p, body);
    coord_dispatch_soon(c);
}

/* ---- query ---- */

json_t *coord_runs_json(coord *c) {
    json_t *runs = json_array(), *by_id = json_object();
    sqlite3_stmt *st = coord_sql(c, "SELECT id, name, state, created, updated, ended FROM runs ORDER BY seq DESC LIMIT ?", "i",
                                 (int64_t)LIST_MAX);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *r = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:{}}", "id", coord_col_text(st, 0), "name",
                              coord_col_text(st, 1), "state", coord_col_text(st, 2), "created", coord_time_json(st, 3),
                              "updated", coord_time_json(st, 4), "ended", coord_time_json(st, 5), "jobs");
        json_array_append_new(runs, r);
        json_object_set(by_id, coord_col_text(st, 0), r);
    }
    st = coord_sql(c,
                   "SELECT j.run, j.state, count(*) FROM jobs j JOIN (SELECT id FROM runs ORDER BY seq DESC LIMIT ?) r "
                   "ON r.id = j.run GROUP BY j.run, j.state",
                   "i", (int64_t)LIST_MAX);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *r = json_object_get(by_id, coord_col_text(st, 0));
        if (r) json_object_set_new(json_object_get(r, "jobs"), coord_col_text(st, 1), json_integer(sqlite3_column_int64(st, 2)));
    }
    json_decref(by_id);
    return runs;
}

/* A metrics line goes into a reply parsed when it is a flat object (the usual metrics.jsonl
 * line), else as its text. */
static bool flat(json_t *o) {
    if (!json_is_object(o)) return false;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) if (json_is_object(v) || json_is_array(v)) return false;
    return true;
}

json_t *coord_run_json(coord *c, const char *run) {
    sqlite3_stmt *st = coord_sql(c, "SELECT id, name, state, created, updated, ended, spec FROM runs WHERE id = ?", "s", run);
    if (!st || coord_sql_step(c, st) != 1) return NULL;
    json_t *r = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:s}", "id", coord_col_text(st, 0), "name", coord_col_text(st, 1),
                          "state", coord_col_text(st, 2), "created", coord_time_json(st, 3), "updated", coord_time_json(st, 4),
                          "ended", coord_time_json(st, 5), "spec", coord_col_text(st, 6));
    sqlite3_reset(st);
    json_t *jobs = json_array(), *by_id = json_object();
    st = coord_sql(c,
                   "SELECT id, name, stage, state, epoch, failures, retries, worker_failures, worker_retries, gpus, "
                   "workdir, output, not_before, error, (SELECT count(*) FROM attempts a WHERE a.job = jobs.id), config "
                   "FROM jobs WHERE run = ? ORDER BY seq",
                   "s", run);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:o, s:[], s:n, s:n, s:n, s:s}",
                              "id", coord_col_text(st, 0), "name", coord_col_text(st, 1), "stage", coord_col_text(st, 2),
                              "state", coord_col_text(st, 3), "epoch", (json_int_t)sqlite3_column_int64(st, 4),
                              "attempts", (json_int_t)sqlite3_column_int64(st, 14), "failures", sqlite3_column_int(st, 5),
                              "retries", sqlite3_column_int(st, 6), "worker_failures", sqlite3_column_int(st, 7),
                              "worker_retries", sqlite3_column_int(st, 8), "gpus", sqlite3_column_int(st, 9),
                              "workdir", coord_col_text(st, 10), "output", coord_col_text(st, 11),
                              "not_before", coord_time_json(st, 12), "deps", "error", "metrics", "worker", "config",
                              coord_col_text(st, 15));
        if (!j) continue;
        if (sqlite3_column_type(st, 13) != SQLITE_NULL) json_object_set_new(j, "error", json_string(coord_col_text(st, 13)));
        json_array_append_new(jobs, j);
        json_object_set(by_id, coord_col_text(st, 0), j);
    }
    st = coord_sql(c, "SELECT d.job, u.name FROM deps d JOIN jobs u ON u.id = d.needs WHERE u.run = ? ORDER BY u.seq", "s", run);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *j = json_object_get(by_id, coord_col_text(st, 0));
        if (j) json_array_append_new(json_object_get(j, "deps"), json_string(coord_col_text(st, 1)));
    }
    /* latest metrics line per job */
    st = coord_sql(c,
                   "SELECT job, step, total, time, line, attempt FROM metrics WHERE id IN (SELECT MAX(m.id) FROM metrics m "
                   "JOIN jobs j ON j.id = m.job WHERE j.run = ? GROUP BY m.job)",
                   "s", run);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *j = json_object_get(by_id, coord_col_text(st, 0));
        if (!j) continue;
        json_t *line = json_loads(coord_col_text(st, 4), JSON_DECODE_ANY, NULL);
        if (line && !flat(line)) json_decref(line), line = NULL; /* the wire nests 8 deep at most */
        json_object_set_new(j, "metrics",
                            json_pack("{s:I, s:I, s:o, s:o, s:s}", "step", (json_int_t)sqlite3_column_int64(st, 1), "total",
                                      (json_int_t)sqlite3_column_int64(st, 2), "time", coord_time_json(st, 3), "line",
                                      line ? line : json_string(coord_col_text(st, 4)), "attempt", coord_col_text(st, 5)));
    }
    size_t it = 0;
    void *v;
    while (coord_map_next(&c->attempts, &it, NULL, &v)) {
        coord_attempt *a = v;
        json_t *j = strcmp(a->run, run) ? NULL : json_object_get(by_id, a->job);
        if (j) {
            json_object_set_new(j, "worker", json_string(a->worker));
            json_object_set_new(j, "attempt", json_string(a->id));
        }
    }
    json_decref(by_id);
    return json_pack("{s:o, s:o}", "run", r, "jobs", jobs);
}

static void query_run(coord *c, const coord_peer *p, const char *run) {
    json_t *body = coord_run_json(c, run);
    if (!body) {
        coord_reply_error(c, p, "no run \"%s\"", run);
        return;
    }
    coord_reply_ok(c, p, body);
}

static void on_query(coord *c, const coord_peer *p, json_t *f) {
    const char *run = json_string_value(json_object_get(f, "run"));
    if (run && *run) {
        query_run(c, p, run);
        return;
    }
    coord_reply_ok(c, p, json_pack("{s:o, s:o}", "runs", coord_runs_json(c), "coordinator", stats_json(c)));
}

/* ---- control ---- */

typedef struct control_result {
    json_t *changed;           /* job ids */
    json_t *cancels, *fences;  /* {worker, attempt, epoch} to send after the commit */
} control_result;

static coord_attempt *job_attempt(coord *c, const char *job) {
    size_t it = 0;
    void *v;
    while (coord_map_next(&c->attempts, &it, NULL, &v))
        if (!strcmp(((coord_attempt *)v)->job, job)) return v;
    return NULL;
}

/* The jobs a target names: a job id (RUN/NAME) or every job of a run, in reverse order so
 * dependents are handled before what they need. */
static int target_jobs(coord *c, const char *target, json_t **out, char *run, size_t run_cap) {
    *out = json_array();
    const char *slash = strchr(target, '/');
    snprintf(run, run_cap, "%.*s", (int)(slash ? (size_t)(slash - target) : strlen(target)), target);
    sqlite3_stmt *st = slash ? coord_sql(c, "SELECT id, state FROM jobs WHERE id = ?", "s", target)
                             : coord_sql(c, "SELECT id, state FROM jobs WHERE run = ? ORDER BY seq DESC", "s", target);
    int rc;
    while (st && (rc = coord_sql_step(c, st)) == 1)
        json_array_append_new(*out, json_pack("{s:s, s:s}", "id", coord_col_text(st, 0), "state", coord_col_text(st, 1)));
    return json_array_size(*out) ? 0 : -1;
}

static bool is_one_of(const char *s, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(s, *list)) return true;
    return false;
}

static int cancel_job(coord *c, const char *run, const char *job, const char *state, control_result *r) {
    static const char *const terminal[] = {"succeeded", "failed", "cancelled", "upstream_failed", NULL};
    if (is_one_of(state, terminal)) return 1;
    int64_t now = coord_wall_ms();
    coord_attempt *a = job_attempt(c, job);
    if (a) {
        if (coord_sql_exec(c, "UPDATE attempts SET state = 'cancelling' WHERE id = ?", "s", a->id)) return -1;
        a->state = ATTEMPT_CANCELLING;
        json_array_append_new(r->cancels, json_pack("{s:s, s:s, s:I}", "worker", a->worker, "attempt", a->id, "epoch", (json_int_t)a->epoch));
    }
    if (coord_sql_exec(c, "UPDATE jobs SET state = 'cancelled', updated = ? WHERE id = ?", "is", now, job)) return -1;
    coord_event(c, run, job, a ? a->id : NULL, "cancelled", "%s cancelled%s", strchr(job, '/') + 1, a ? " (its worker stops it)" : "");
    json_array_append_new(r->changed, json_string(job));
    return coord_mark_upstream_failed(c, job);
}

static int retry_job(coord *c, const char *run, const char *job, const char *state, control_result *r) {
    static const char *const retryable[] = {"failed", "cancelled", NULL};
    if (!is_one_of(state, retryable)) return 1;
    coord_attempt *a = job_attempt(c, job);
    if (a) { /* still stopping after a cancel: fence it so the new attempt is the only one */
        json_array_append_new(r->fences, json_pack("{s:s, s:s, s:I}", "worker", a->worker, "attempt", a->id, "epoch", (json_int_t)a->epoch));
        if (coord_attempt_end(c, a, END_CANCELLED, -1, "fenced by a retry", NULL)) return -1;
    }
    int64_t now = coord_wall_ms();
    if (coord_sql_exec(c,
                       "UPDATE jobs SET state = 'pending', failures = 0, worker_failures = 0, not_before = 0, error = NULL, "
                       "updated = ? WHERE id = ?",
                       "is", now, job) ||
        coord_sql_exec(c,
                       "WITH RECURSIVE down(id) AS (SELECT job FROM deps WHERE needs = ?1 UNION "
                       "SELECT d.job FROM deps d JOIN down ON d.needs = down.id) "
                       "UPDATE jobs SET state = 'pending', updated = ?2 WHERE id IN (SELECT id FROM down) AND state = 'upstream_failed'",
                       "si", job, now))
        return -1;
    coord_event(c, run, job, NULL, "retry", "%s queued again (retries and lost counts reset)", strchr(job, '/') + 1);
    json_array_append_new(r->changed, json_string(job));
    return 0;
}

static int hold_job(coord *c, const char *run, const char *job, const char *state, control_result *r) {
    static const char *const holdable[] = {"pending", "ready", NULL};
    if (!is_one_of(state, holdable)) return 1;
    if (coord_sql_exec(c, "UPDATE jobs SET state = 'held', updated = ? WHERE id = ?", "is", coord_wall_ms(), job)) return -1;
    coord_event(c, run, job, NULL, "held", "%s held: not dispatched until released", strchr(job, '/') + 1);
    json_array_append_new(r->changed, json_string(job));
    return 0;
}

static int release_job(coord *c, const char *run, const char *job, const char *state, control_result *r) {
    if (strcmp(state, "held")) return 1;
    if (coord_sql_exec(c, "UPDATE jobs SET state = 'pending', updated = ? WHERE id = ?", "is", coord_wall_ms(), job)) return -1;
    coord_event(c, run, job, NULL, "released", "%s released", strchr(job, '/') + 1);
    json_array_append_new(r->changed, json_string(job));
    return 0;
}

/* After a retry or a release: dependents of jobs still failed or cancelled stay upstream_failed,
 * the rest become ready when what they need has succeeded. */
static int settle_run(coord *c, const char *run) {
    sqlite3_stmt *st = coord_sql(c, "SELECT id FROM jobs WHERE run = ? AND state IN ('failed', 'cancelled')", "s", run);
    json_t *bad = json_array();
    while (st && coord_sql_step(c, st) == 1) json_array_append_new(bad, json_string(coord_col_text(st, 0)));
    size_t i;
    json_t *id;
    int rc = st ? 0 : -1;
    json_array_foreach(bad, i, id) if (rc == 0) rc = coord_mark_upstream_failed(c, json_string_value(id));
    json_decref(bad);
    if (rc == 0) rc = coord_promote(c, run);
    return rc;
}

static void send_list(coord *c, json_t *list, proto_type t) {
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        coord_worker *w = coord_map_get(&c->workers, json_string_value(json_object_get(item, "worker")));
        json_t *f = json_pack("{s:O, s:O}", "attempt", json_object_get(item, "attempt"), "epoch", json_object_get(item, "epoch"));
        if (t == PROTO_CANCEL) json_object_set_new(f, "reason", json_string("cancelled by a client"));
        coord_send_worker(c, w, t, f);
    }
}

static void control_jobs(coord *c, const coord_peer *p, const char *action, const char *target) {
    typedef int (*job_op)(coord *, const char *, const char *, const char *, control_result *);
    job_op op = !strcmp(action, "cancel") ? cancel_job : !strcmp(action, "retry") ? retry_job
              : !strcmp(action, "hold") ? hold_job : release_job;
    json_t *jobs;
    char run[256];
    if (target_jobs(c, target, &jobs, run, sizeof run)) {
        json_decref(jobs);
        coord_reply_error(c, p, "%s: no %s \"%s\"", action, strchr(target, '/') ? "job" : "run", target);
        return;
    }
    control_result r = {json_array(), json_array(), json_array()};
    char refused_state[32] = "";
    int rc = coord_tx_begin(c);
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) {
        if (rc < 0) break;
        const char *state = json_string_value(json_object_get(j, "state"));
        int one = op(c, run, json_string_value(json_object_get(j, "id")), state, &r);
        if (one < 0) rc = -1;
        else if (one > 0 && !refused_state[0]) snprintf(refused_state, sizeof refused_state, "%s", state);
    }
    bool single = strchr(target, '/') != NULL;
    if (rc == 0 && single && refused_state[0]) {
        coord_tx_rollback(c);
        json_decref(jobs);
        json_decref(r.changed), json_decref(r.cancels), json_decref(r.fences);
        coord_reply_error(c, p, "%s: job %s is %s%s", action, target, refused_state,
                          !strcmp(action, "hold") && (!strcmp(refused_state, "running") || !strcmp(refused_state, "dispatched"))
                              ? " (cancel it instead)" : "");
        return;
    }
    if (rc == 0 && (!strcmp(action, "retry") || !strcmp(action, "release"))) rc = settle_run(c, run);
    if (rc == 0) rc = coord_run_refresh(c, run);
    if (rc == 0) rc = coord_tx_commit(c);
    json_decref(jobs);
    if (rc) {
        coord_tx_rollback(c);
        json_decref(r.changed), json_decref(r.cancels), json_decref(r.fences);
        coord_reply_error(c, p, "the coordinator's database failed");
        return;
    }
    send_list(c, r.cancels, PROTO_CANCEL);
    send_list(c, r.fences, PROTO_FENCE);
    json_decref(r.cancels), json_decref(r.fences);
    coord_dispatch_soon(c);
    coord_reply_ok(c, p, json_pack("{s:s, s:s, s:o}", "action", action, "target", target, "jobs", r.changed));
}

static void control_worker(coord *c, const coord_peer *p, const char *action, const char *target) {
    coord_worker *w = coord_map_get(&c->workers, target);
    if (!w) {
        coord_reply_error(c, p, "%s: no worker \"%s\"", action, target);
        return;
    }
    bool drain = !strcmp(action, "drain");
    if (coord_tx_begin(c) || coord_sql_exec(c, "UPDATE workers SET draining = ? WHERE name = ?", "is", (int64_t)drain, w->name)) {
        coord_reply_error(c, p, "the coordinator's database failed");
        return;
    }
    coord_event(c, NULL, NULL, NULL, drain ? "drain" : "undrain", "%s %s", w->name,
                drain ? "drains: it finishes its attempt and takes no new one" : "takes work again");
    if (coord_tx_commit(c)) {
        coord_reply_error(c, p, "the coordinator's database failed");
        return;
    }
    w->draining = drain;
    if (drain) coord_send_worker(c, w, PROTO_DRAIN, json_object());
    else coord_dispatch_soon(c);
    coord_reply_ok(c, p, json_pack("{s:s, s:s, s:o}", "action", action, "target", target, "worker", coord_worker_json(c, w)));
}

static void on_control(coord *c, const coord_peer *p, json_t *f) {
    const char *action = str_field(f, "action"), *target = str_field(f, "target");
    if (!*target || strlen(target) > 250) {
        coord_reply_error(c, p, "control: target must name a run, a job (RUN/NAME) or a worker");
        return;
    }
    if (!strcmp(action, "drain") || !strcmp(action, "undrain")) control_worker(c, p, action, target);
    else if (!strcmp(action, "cancel") || !strcmp(action, "retry") || !strcmp(action, "hold") || !strcmp(action, "release"))
        control_jobs(c, p, action, target);
    else coord_reply_error(c, p, "control: unknown action \"%.64s\" (cancel, retry, hold, release, drain, undrain)", action);
}

/* ---- log_tail, events, workers ---- */

json_t *coord_job_lines(coord *c, const char *job, int64_t n) {
    json_t *out = json_array();
    sqlite3_stmt *st = coord_sql(c, "SELECT attempt, step, total, time, line FROM metrics WHERE job = ? ORDER BY id DESC LIMIT ?",
                                 "si", job, n);
    while (st && coord_sql_step(c, st) == 1)
        json_array_insert_new(out, 0,
                              json_pack("{s:s, s:I, s:I, s:o, s:s}", "attempt", coord_col_text(st, 0), "step",
                                        (json_int_t)sqlite3_column_int64(st, 1), "total", (json_int_t)sqlite3_column_int64(st, 2),
                                        "time", coord_time_json(st, 3), "line", coord_col_text(st, 4)));
    return out;
}

json_t *coord_events_json(coord *c, const char *run, int64_t since, int64_t *last) {
    json_t *out = json_array();
    *last = since;
    sqlite3_stmt *st = coord_sql(c,
                                 "SELECT id, time, run, job, attempt, kind, message FROM events WHERE (?1 = '' OR run = ?1) "
                                 "AND id > ?2 ORDER BY id LIMIT ?3",
                                 "sii", run ? run : "", since, (int64_t)LIST_MAX);
    while (st && coord_sql_step(c, st) == 1) {
        *last = sqlite3_column_int64(st, 0);
        json_t *ev = json_pack("{s:I, s:o, s:s, s:s, s:s}", "id", (json_int_t)*last, "time", coord_time_json(st, 1), "kind",
                               coord_col_text(st, 5), "message", coord_col_text(st, 6), "run", coord_col_text(st, 2));
        json_object_set_new(ev, "job", sqlite3_column_type(st, 3) == SQLITE_NULL ? json_null() : json_string(coord_col_text(st, 3)));
        json_object_set_new(ev, "attempt", sqlite3_column_type(st, 4) == SQLITE_NULL ? json_null() : json_string(coord_col_text(st, 4)));
        json_array_append_new(out, ev);
    }
    return out;
}

static void on_log_tail(coord *c, const coord_peer *p, json_t *f) {
    const char *job = str_field(f, "job");
    json_int_t lines = json_integer_value(json_object_get(f, "lines"));
    if (lines < 1) lines = 1;
    if (lines > LIST_MAX) lines = LIST_MAX;
    sqlite3_stmt *st = coord_sql(c, "SELECT 1 FROM jobs WHERE id = ?", "s", job);
    if (!st || coord_sql_step(c, st) != 1) {
        coord_reply_error(c, p, "log_tail: no job \"%s\" (jobs are RUN/NAME)", job);
        return;
    }
    sqlite3_reset(st);
    coord_reply_ok(c, p, json_pack("{s:s, s:o}", "job", job, "lines", coord_job_lines(c, job, lines)));
}

static void on_events(coord *c, const coord_peer *p, json_t *f) {
    const char *run = str_field(f, "run");
    if (!strcmp(run, "*")) run = ""; /* every event, the coordinator's own included */
    json_int_t since = json_integer_value(json_object_get(f, "since"));
    if (*run) {
        sqlite3_stmt *st = coord_sql(c, "SELECT 1 FROM runs WHERE id = ?", "s", run);
        if (!st || coord_sql_step(c, st) != 1) {
            coord_reply_error(c, p, "events: no run \"%s\" (\"*\" for every event)", run);
            return;
        }
        sqlite3_reset(st);
    }
    int64_t last;
    json_t *out = coord_events_json(c, run, since, &last);
    coord_reply_ok(c, p, json_pack("{s:o, s:I}", "events", out, "last", (json_int_t)last));
}

static void on_workers(coord *c, const coord_peer *p) {
    json_t *out = json_array();
    size_t it = 0;
    void *v;
    while (json_array_size(out) < LIST_MAX && coord_map_next(&c->workers, &it, NULL, &v))
        json_array_append_new(out, coord_worker_json(c, v));
    coord_reply_ok(c, p, json_pack("{s:o, s:o}", "workers", out, "coordinator", stats_json(c)));
}

void coord_on_client_message(coord *c, const coord_peer *p, proto_type t, json_t *f) {
    switch (t) {
    case PROTO_SUBMIT: on_submit(c, p, f); break;
    case PROTO_QUERY: on_query(c, p, f); break;
    case PROTO_CONTROL: on_control(c, p, f); break;
    case PROTO_LOG_TAIL: on_log_tail(c, p, f); break;
    case PROTO_EVENTS: on_events(c, p, f); break;
    case PROTO_WORKERS: on_workers(c, p); break;
    default: break;
    }
}
