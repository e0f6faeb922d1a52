/* coordinator/sched.c — jobs and attempts (docs/coordinator.md): dispatch onto free workers,
 * leases, requeue with exponential backoff, bounded retries (a job's own failures and its lost
 * attempts counted apart), upstream-failed dependents and the run's state.
 * A change writes its rows inside a savepoint and updates the live state; messages it sends wait
 * for the commit at the end of the loop iteration (db.c, loop.c). */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void coord_attempt_free(coord_attempt *a) {
    if (!a) return;
    free(a->id);
    free(a->job);
    free(a->run);
    free(a->worker);
    free(a);
}

void coord_attempt_renew(coord *c, coord_attempt *a) {
    a->lease_deadline = coord_mono_ms() + (uint64_t)c->opt.lease_ms;
}

void coord_dispatch_soon(coord *c) {
    c->dispatch_pending = true;
    coord_kick(c);
}

/* base * 2^(n-1), capped: 1 s, 2 s, 4 s ... by default. */
static int64_t backoff_delay(const coord *c, int n) {
    int64_t d = c->opt.backoff_ms;
    for (int i = 1; i < n && d < c->opt.backoff_max_ms; i++) d *= 2;
    return d < c->opt.backoff_max_ms ? d : c->opt.backoff_max_ms;
}

/* Collects the ids a statement returns (its first column). */
typedef struct id_list {
    char **ids;
    int n, cap;
} id_list;

static void ids_free(id_list *l) {
    for (int i = 0; i < l->n; i++) free(l->ids[i]);
    free(l->ids);
    *l = (id_list){0};
}

static int ids_collect(coord *c, sqlite3_stmt *st, id_list *l) {
    if (!st) return -1;
    int rc;
    while ((rc = coord_sql_step(c, st)) == 1) {
        if (l->n == l->cap) {
            int cap = l->cap ? l->cap * 2 : 16;
            char **grown = realloc(l->ids, sizeof *grown * (size_t)cap);
            if (!grown) {
                sqlite3_reset(st);
                return -1;
            }
            l->ids = grown;
            l->cap = cap;
        }
        l->ids[l->n] = strdup(coord_col_text(st, 0));
        if (!l->ids[l->n]) {
            sqlite3_reset(st);
            return -1;
        }
        l->n++;
    }
    return rc;
}

static const char *job_short(const char *job) {
    const char *slash = strchr(job, '/');
    return slash ? slash + 1 : job;
}

int coord_promote(coord *c, const char *run) {
    int64_t now = coord_wall_ms();
    id_list l = {0};
    int rc = ids_collect(
        c,
        coord_sql(c,
                  "UPDATE jobs SET state = 'ready', ready_at = ?1, not_before = 0, updated = ?1 "
                  "WHERE run = ?2 AND state = 'pending' AND NOT EXISTS (SELECT 1 FROM deps d JOIN jobs u "
                  "ON u.id = d.needs WHERE d.job = jobs.id AND u.state != 'succeeded') RETURNING id",
                  "is", now, run),
        &l);
    for (int i = 0; i < l.n; i++) coord_event(c, run, l.ids[i], NULL, "ready", "%s is ready", job_short(l.ids[i]));
    if (l.n) coord_dispatch_soon(c);
    ids_free(&l);
    return rc;
}

int coord_mark_upstream_failed(coord *c, const char *job) {
    id_list l = {0};
    int rc = ids_collect(
        c,
        coord_sql(c,
                  "WITH RECURSIVE down(id) AS (SELECT job FROM deps WHERE needs = ?1 UNION "
                  "SELECT d.job FROM deps d JOIN down ON d.needs = down.id) "
                  "UPDATE jobs SET state = 'upstream_failed', updated = ?2 WHERE id IN (SELECT id FROM down) "
                  "AND state IN ('pending', 'ready', 'held') RETURNING id",
                  "si", job, coord_wall_ms()),
        &l);
    char run[256];
    snprintf(run, sizeof run, "%.*s", (int)(strchr(job, '/') ? strchr(job, '/') - job : 0), job);
    for (int i = 0; i < l.n; i++)
        coord_event(c, run, l.ids[i], NULL, "upstream_failed", "%s will not run: %s did not succeed",
                    job_short(l.ids[i]), job_short(job));
    ids_free(&l);
    return rc;
}

int coord_run_refresh(coord *c, const char *run) {
    sqlite3_stmt *st = coord_sql(c, "SELECT state, count(*) FROM jobs WHERE run = ? GROUP BY state", "s", run);
    if (!st) return -1;
    int total = 0, succeeded = 0, failed = 0, cancelled = 0, rc;
    while ((rc = coord_sql_step(c, st)) == 1) {
        const char *s = coord_col_text(st, 0);
        int n = sqlite3_column_int(st, 1);
        total += n;
        if (!strcmp(s, "succeeded")) succeeded += n;
        else if (!strcmp(s, "failed")) failed += n;
        else if (!strcmp(s, "cancelled")) cancelled += n;
    }
    if (rc < 0) return -1;
    const char *state = total && succeeded == total ? "succeeded" : failed ? "failed" : cancelled ? "cancelled" : "running";
    st = coord_sql(c, "SELECT state FROM runs WHERE id = ?", "s", run);
    if (!st || coord_sql_step(c, st) != 1) return -1;
    bool same = !strcmp(coord_col_text(st, 0), state);
    sqlite3_reset(st);
    if (same) return 0;
    int64_t now = coord_wall_ms();
    bool ended = strcmp(state, "running") != 0;
    if (coord_sql_exec(c, "UPDATE runs SET state = ?, updated = ?, ended = ? WHERE id = ?", "siis", state, now,
                       ended ? now : 0, run))
        return -1;
    coord_event(c, run, NULL, NULL, "run", "the run is %s", state);
    xd_info("xcoord: run %s is %s", run, state);
    return 0;
}

/* The job: why it fails, requeued with backoff or failed for good. */
static int job_requeue_or_fail(coord *c, const char *job, const char *run, bool worker_fault, const char *why) {
    sqlite3_stmt *st = coord_sql(c, "SELECT retries, failures, worker_retries, worker_failures FROM jobs WHERE id = ?", "s", job);
    if (!st || coord_sql_step(c, st) != 1) return -1;
    int retries = sqlite3_column_int(st, 0), failures = sqlite3_column_int(st, 1);
    int worker_retries = sqlite3_column_int(st, 2), worker_failures = sqlite3_column_int(st, 3);
    sqlite3_reset(st);
    if (worker_fault) worker_failures++;
    else failures++;
    int64_t now = coord_wall_ms();
    bool give_up = worker_fault ? worker_failures > worker_retries : failures > retries;
    if (give_up) {
        char err[700];
        snprintf(err, sizeof err, "%s (%s %d times: the bound is %d retries)", why,
                 worker_fault ? "lost" : "failed", worker_fault ? worker_failures : failures,
                 worker_fault ? worker_retries : retries);
        coord_utf8_clean(err);
        if (coord_sql_exec(c, "UPDATE jobs SET state = 'failed', failures = ?, worker_failures = ?, error = ?, updated = ? WHERE id = ?",
                           "iisis", (int64_t)failures, (int64_t)worker_failures, err, now, job))
            return -1;
        coord_event(c, run, job, NULL, "failed", "%s failed: %s", job_short(job), err);
        return coord_mark_upstream_failed(c, job);
    }
    int64_t delay = backoff_delay(c, failures + worker_failures);
    if (coord_sql_exec(c,
                       "UPDATE jobs SET state = 'ready', failures = ?, worker_failures = ?, error = ?, not_before = ?, "
                       "ready_at = ?, updated = ? WHERE id = ?",
                       "iisiiis", (int64_t)failures, (int64_t)worker_failures, why, now + delay, now + delay, now, job))
        return -1;
    coord_event(c, run, job, NULL, "requeued", "%s requeued in %.1f s after %s (failures %d/%d, lost %d/%d)",
                job_short(job), delay / 1000.0, why, failures, retries, worker_failures, worker_retries);
    if (c->handles_open) {
        uint64_t due = uv_timer_get_due_in(&c->backoff_timer);
        if (!uv_is_active((uv_handle_t *)&c->backoff_timer) || due > (uint64_t)delay)
            uv_timer_start(&c->backoff_timer, coord_on_backoff_timer, (uint64_t)delay, 0);
    }
    return 0;
}

int coord_attempt_end(coord *c, coord_attempt *a, coord_end how, int exit_code, const char *error,
                      const char *output) {
    sqlite3_stmt *st = coord_sql(c, "SELECT state FROM jobs WHERE id = ?", "s", a->job);
    if (!st || coord_sql_step(c, st) != 1) return -1;
    bool job_cancelled = !strcmp(coord_col_text(st, 0), "cancelled");
    sqlite3_reset(st);
    if (job_cancelled && how != END_LOST) how = END_CANCELLED;
    static const char *const names[] = {"succeeded", "failed", "lost", "cancelled"};
    int64_t now = coord_wall_ms();
    if (coord_sql_exec(c, "UPDATE attempts SET state = ?, exit_code = ?, error = ?, output = ?, ended = ? WHERE id = ?",
                       "sissis", names[how], (int64_t)exit_code, error && *error ? error : NULL,
                       output && *output ? output : NULL, now, a->id))
        return -1;
    int rc = 0;
    switch (how) {
    case END_SUCCEEDED:
        rc = coord_sql_exec(c, "UPDATE jobs SET state = 'succeeded', error = NULL, updated = ? WHERE id = ?", "is", now, a->job);
        if (rc == 0 && output && *output)
            rc = coord_sql_exec(c, "INSERT INTO artifacts(job, attempt, kind, path, time) VALUES (?, ?, 'output', ?, ?)",
                                "sssi", a->job, a->id, output, now);
        coord_event(c, a->run, a->job, a->id, "succeeded", "%s succeeded on %s (epoch %lld)", job_short(a->job),
                    a->worker, (long long)a->epoch);
        if (rc == 0) rc = coord_promote(c, a->run);
        break;
    case END_FAILED: {
        char why[600];
        snprintf(why, sizeof why, "exit code %d%s%.500s", exit_code, error && *error ? ": " : "", error ? error : "");
        coord_utf8_clean(why);
        coord_event(c, a->run, a->job, a->id, "attempt_failed", "%s failed on %s: %s", job_short(a->job), a->worker, why);
        rc = job_requeue_or_fail(c, a->job, a->run, false, why);
        break;
    }
    case END_LOST:
        coord_event(c, a->run, a->job, a->id, "lost", "%s on %s lost: %s", job_short(a->job), a->worker,
                    error ? error : "lease expired");
        if (!job_cancelled) rc = job_requeue_or_fail(c, a->job, a->run, true, error ? error : "lease expired");
        break;
    case END_CANCELLED:
        coord_event(c, a->run, a->job, a->id, "cancelled", "attempt %s on %s ended after a cancel", a->id, a->worker);
        break;
    }
    if (rc == 0) rc = coord_run_refresh(c, a->run);
    coord_worker *w = coord_map_get(&c->workers, a->worker);
    if (w && w->active > 0) w->active--;
    coord_map_remove(&c->attempts, a->id);
    coord_attempt_free(a);
    coord_dispatch_soon(c);
    return rc;
}

/* ---- dispatch ---- */

typedef struct assignment {
    coord_worker *worker;
    char *job, *run, *stage, *config, *workdir;
    int64_t epoch;
    int gpus;
} assignment;

void coord_dispatch(coord *c) {
    c->dispatch_pending = false;
    if (c->fatal || c->stopping) return;
    int n_free = 0, max_cuda = -1;
    coord_worker **free_workers = malloc(sizeof *free_workers * (c->workers.count + 1));
    if (!free_workers) return;
    size_t it = 0;
    void *v;
    while (coord_map_next(&c->workers, &it, NULL, &v)) {
        coord_worker *w = v;
        if (w->alive && !w->draining && w->active == 0 && w->rid_len) {
            free_workers[n_free++] = w;
            if (w->n_cuda > max_cuda) max_cuda = w->n_cuda;
        }
    }
    if (n_free == 0) {
        free(free_workers);
        return;
    }
    int64_t now = coord_wall_ms();
    int limit = n_free * 2 + 16;
    sqlite3_stmt *st = coord_sql(c,
                                 "SELECT id, run, stage, config, workdir, gpus, epoch FROM jobs WHERE state = 'ready' "
                                 "AND not_before <= ? AND gpus <= ? ORDER BY ready_at, rowid LIMIT ?",
                                 "iii", now, (int64_t)max_cuda, (int64_t)limit);
    assignment *as = calloc((size_t)n_free, sizeof *as);
    int n_as = 0, rows = 0, rc = 0;
    while (st && as && n_as < n_free && (rc = coord_sql_step(c, st)) == 1) {
        rows++;
        int gpus = sqlite3_column_int(st, 5);
        int best = -1; /* best fit: the fewest GPUs that are enough, so big workers stay free for big jobs */
        for (int i = 0; i < n_free; i++)
            if (free_workers[i] && free_workers[i]->n_cuda >= gpus && (best < 0 || free_workers[i]->n_cuda < free_workers[best]->n_cuda))
                best = i;
        if (best < 0) continue;
        assignment *a = &as[n_as++];
        a->worker = free_workers[best];
        free_workers[best] = NULL;
        a->job = strdup(coord_col_text(st, 0));
        a->run = strdup(coord_col_text(st, 1));
        a->stage = strdup(coord_col_text(st, 2));
        a->config = strdup(coord_col_text(st, 3));
        a->workdir = strdup(coord_col_text(st, 4));
        a->gpus = gpus;
        a->epoch = sqlite3_column_int64(st, 6) + 1;
    }
    if (st && rc == 1) sqlite3_reset(st);
    free(free_workers);
    if (n_as == 0) {
        free(as);
        return;
    }
    bool ok = coord_tx_begin(c) == 0;
    for (int i = 0; ok && i < n_as; i++) {
        assignment *a = &as[i];
        if (!a->job || !a->run || !a->stage || !a->config || !a->workdir) {
            ok = false;
            break;
        }
        char attempt[600];
        snprintf(attempt, sizeof attempt, "%s#%lld", a->job, (long long)a->epoch);
        ok = coord_sql_exec(c, "UPDATE jobs SET state = 'dispatched', epoch = ?, updated = ? WHERE id = ? AND state = 'ready'",
                            "iis", a->epoch, now, a->job) == 0 &&
             coord_sql_exec(c,
                            "INSERT INTO attempts(id, job, epoch, worker, state, lease_deadline, created) "
                            "VALUES (?, ?, ?, ?, 'dispatched', ?, ?)",
                            "ssisii", attempt, a->job, a->epoch, a->worker->name, now + c->opt.lease_ms, now) == 0;
        if (ok)
            coord_event(c, a->run, a->job, attempt, "dispatched", "%s to %s (epoch %lld)", job_short(a->job),
                        a->worker->name, (long long)a->epoch);
    }
    if (ok) ok = coord_tx_commit(c) == 0;
    else coord_tx_rollback(c);
    for (int i = 0; i < n_as; i++) {
        assignment *a = &as[i];
        coord_attempt *at = ok ? calloc(1, sizeof *at) : NULL;
        char attempt[600];
        snprintf(attempt, sizeof attempt, "%s#%lld", a->job ? a->job : "", (long long)a->epoch);
        if (at) {
            at->id = strdup(attempt);
            at->job = a->job, a->job = NULL;
            at->run = a->run, a->run = NULL;
            at->worker = strdup(a->worker->name);
            at->epoch = a->epoch;
            at->state = ATTEMPT_DISPATCHED;
            coord_attempt_renew(c, at);
            if (!at->id || !at->worker || coord_map_put(&c->attempts, at->id, at)) {
                coord_attempt_free(at); /* its lease lapses in the database: recovered as lost at restart */
                at = NULL;
            } else {
                a->worker->active++;
                c->stats.dispatched++;
            }
        }
        if (at) {
            json_t *gpus = json_array();
            for (int g = 0; g < a->gpus && g < a->worker->n_cuda; g++)
                json_array_append_new(gpus, json_integer(a->worker->cuda_index[g]));
            json_t *f = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:o}", "attempt", at->id, "epoch", (json_int_t)at->epoch,
                                  "job", at->job, "stage", a->stage, "config", a->config, "workdir", a->workdir, "gpus", gpus);
            coord_send_worker(c, a->worker, PROTO_ASSIGN, f);
        }
        free(a->job);
        free(a->run);
        free(a->stage);
        free(a->config);
        free(a->workdir);
    }
    free(as);
    /* more ready jobs than this pass looked at, and workers still free: go again */
    if (ok && rows == limit) coord_dispatch_soon(c);
}

void coord_backoff_rearm(coord *c) {
    if (!c->handles_open || c->fatal) return;
    int64_t now = coord_wall_ms();
    sqlite3_stmt *st = coord_sql(c, "SELECT MIN(not_before) FROM jobs WHERE state = 'ready' AND not_before > ?", "i", now);
    if (!st || coord_sql_step(c, st) != 1) return;
    bool any = sqlite3_column_type(st, 0) != SQLITE_NULL;
    int64_t next = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (any) uv_timer_start(&c->backoff_timer, coord_on_backoff_timer, (uint64_t)(next - now), 0);
}

void coord_on_backoff_timer(uv_timer_t *t) {
    coord *c = t->data;
    coord_dispatch_soon(c);
    coord_backoff_rearm(c);
}

/* ---- leases ---- */

void coord_on_lease_timer(uv_timer_t *t) {
    coord *c = t->data;
    if (c->fatal) return;
    uint64_t now = coord_mono_ms();
    /* silent workers first: their attempts go with them */
    coord_worker *silent[64];
    int n_silent = 0;
    size_t it = 0;
    void *v;
    while (n_silent < 64 && coord_map_next(&c->workers, &it, NULL, &v)) {
        coord_worker *w = v;
        if (w->alive && now - w->last_heartbeat > (uint64_t)c->opt.lease_ms) silent[n_silent++] = w;
    }
    for (int i = 0; i < n_silent; i++) {
        char why[128];
        snprintf(why, sizeof why, "no heartbeat for %llu ms", (unsigned long long)(now - silent[i]->last_heartbeat));
        coord_worker_lost(c, silent[i], why);
    }
    /* then leases that lapsed on workers still talking (an assign never accepted, an attempt no
     * longer listed in heartbeats) */
    char *expired[64];
    int n_expired = 0;
    it = 0;
    while (n_expired < 64 && coord_map_next(&c->attempts, &it, NULL, &v)) {
        coord_attempt *a = v;
        if (a->lease_deadline < now) expired[n_expired++] = strdup(a->id);
    }
    if (n_expired == 0) return;
    typedef struct fence_target {
        char *worker, *attempt;
        int64_t epoch;
    } fence_target;
    fence_target fences[64];
    int n_fences = 0;
    bool ok = coord_tx_begin(c) == 0;
    for (int i = 0; i < n_expired; i++) {
        coord_attempt *a = expired[i] ? coord_map_get(&c->attempts, expired[i]) : NULL;
        if (ok && a) {
            fences[n_fences++] = (fence_target){strdup(a->worker), strdup(a->id), a->epoch};
            char why[160];
            snprintf(why, sizeof why, "lease expired (%s)", a->state == ATTEMPT_DISPATCHED ? "never accepted" : "not renewed by heartbeats");
            ok = coord_attempt_end(c, a, END_LOST, -1, why, NULL) == 0;
        }
        free(expired[i]);
    }
    if (ok) ok = coord_tx_commit(c) == 0;
    for (int i = 0; i < n_fences; i++) {
        coord_worker *w = ok && fences[i].worker ? coord_map_get(&c->workers, fences[i].worker) : NULL;
        if (w && fences[i].attempt)
            coord_send_worker(c, w, PROTO_FENCE,
                              json_pack("{s:s, s:I}", "attempt", fences[i].attempt, "epoch", (json_int_t)fences[i].epoch));
        free(fences[i].worker);
        free(fences[i].attempt);
    }
}

/* ---- start ---- */

int coord_sched_recover(coord *c, xd_err *e) {
    sqlite3_stmt *st = coord_sql(c, "SELECT name, devices, pid, draining FROM workers", "");
    int rc;
    while (st && (rc = coord_sql_step(c, st)) == 1) {
        coord_worker *w = calloc(1, sizeof *w);
        json_t *devices = json_loads(coord_col_text(st, 1), 0, NULL);
        if (!w || !(w->name = strdup(coord_col_text(st, 0))) || coord_map_put(&c->workers, w->name, w)) {
            json_decref(devices);
            if (w) free(w->name);
            free(w);
            sqlite3_reset(st);
            return xd_fail(e, "out of memory");
        }
        w->devices = devices ? devices : json_array();
        w->pid = sqlite3_column_int64(st, 2);
        w->draining = sqlite3_column_int(st, 3) != 0;
        size_t i;
        json_t *d;
        json_array_foreach(w->devices, i, d) {
            const char *kind = json_string_value(json_object_get(d, "kind"));
            if (kind && !strcmp(kind, "cuda") && w->n_cuda < COORD_MAX_GPUS)
                w->cuda_index[w->n_cuda++] = (int)json_integer_value(json_object_get(d, "index"));
        }
    }
    if (!st) return xd_fail(e, "database: cannot read workers");
    st = coord_sql(c,
                   "SELECT a.id, a.job, j.run, a.worker, a.epoch, a.state FROM attempts a JOIN jobs j ON j.id = a.job "
                   "WHERE a.state IN ('dispatched', 'running', 'cancelling')",
                   "");
    int n = 0;
    while (st && (rc = coord_sql_step(c, st)) == 1) {
        coord_attempt *a = calloc(1, sizeof *a);
        if (!a) break;
        a->id = strdup(coord_col_text(st, 0));
        a->job = strdup(coord_col_text(st, 1));
        a->run = strdup(coord_col_text(st, 2));
        a->worker = strdup(coord_col_text(st, 3));
        a->epoch = sqlite3_column_int64(st, 4);
        const char *s = coord_col_text(st, 5);
        a->state = !strcmp(s, "running") ? ATTEMPT_RUNNING : !strcmp(s, "cancelling") ? ATTEMPT_CANCELLING : ATTEMPT_DISPATCHED;
        coord_attempt_renew(c, a); /* the worker has a lease's time to reconnect and list it */
        if (!a->id || !a->job || !a->run || !a->worker || coord_map_put(&c->attempts, a->id, a)) {
            coord_attempt_free(a);
            sqlite3_reset(st);
            return xd_fail(e, "out of memory");
        }
        coord_worker *w = coord_map_get(&c->workers, a->worker);
        if (w) w->active++;
        n++;
    }
    if (!st || c->fatal) return xd_fail(e, "database: cannot read attempts");
    int64_t deadline = coord_wall_ms() + c->opt.lease_ms;
    if (coord_tx_begin(c) ||
        coord_sql_exec(c, "UPDATE attempts SET lease_deadline = ? WHERE state IN ('dispatched', 'running', 'cancelling')", "i", deadline) ||
        coord_sql_exec(c, "UPDATE workers SET state = 'lost' WHERE state = 'alive'", ""))
        return xd_fail(e, "database: cannot renew the leases");
    if (n) coord_event(c, NULL, NULL, NULL, "restart", "coordinator started with %d live attempts: their workers have %d ms to list them", n, c->opt.lease_ms);
    if (coord_tx_commit(c) || coord_flush(c)) return xd_fail(e, "database: cannot renew the leases");
    return 0;
}
