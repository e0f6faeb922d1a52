/* coordinator/dashboard_api.c — xcoord --http: the dashboard (http.h, docs/dashboard.md) on the
 * coordinator's own loop, its data read from the coordinator's database and live state. The
 * bodies reuse client.c's builders (the same rows as the query, log_tail and events replies),
 * reshaped to the dashboard's API; nothing here changes state. */
#include "http.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define LOG_LINES 50
#define REPORT_MAX (16 << 20) /* an eval report bigger than this is not shown */

static const char *const job_states[] = {"pending", "ready",     "dispatched", "running",        "succeeded",
                                         "failed",  "cancelled", "held",       "upstream_failed", NULL};
static const char *const run_states[] = {"running", "succeeded", "failed", "cancelled", NULL};

static char *dump(json_t *v) {
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return s;
}

static char *error_text(int *status, int code, const char *fmt, const char *arg) {
    char msg[600];
    snprintf(msg, sizeof msg, fmt, arg);
    coord_utf8_clean(msg);
    *status = code;
    return dump(json_pack("{s:s}", "error", msg));
}

/* ---- runs ---- */

static char *api_runs(void *ctx) { return dump(coord_runs_json(ctx)); }

/* The top-level `out` of a job's YAML config (the eval stage writes its report there). */
static bool config_out(const char *config, char *out, size_t cap) {
    yaml_parser_t parser;
    yaml_document_t doc;
    bool found = false;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)config, strlen(config));
    if (yaml_parser_load(&parser, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root && root->type == YAML_MAPPING_NODE)
            for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < root->data.mapping.pairs.top && !found; q++) {
                yaml_node_t *k = yaml_document_get_node(&doc, q->key), *v = yaml_document_get_node(&doc, q->value);
                if (k && v && k->type == YAML_SCALAR_NODE && v->type == YAML_SCALAR_NODE &&
                    !strcmp((const char *)k->data.scalar.value, "out")) {
                    found = strlen((const char *)v->data.scalar.value) < cap;
                    if (found) snprintf(out, cap, "%s", (const char *)v->data.scalar.value);
                }
            }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return found;
}

/* The eval job's report (a JSON object) when that job succeeded, else null. */
static json_t *eval_report(json_t *jobs) {
    size_t i;
    json_t *j, *eval = json_string("eval"), *succeeded = json_string("succeeded"), *report = NULL;
    json_array_foreach(jobs, i, j) {
        if (!json_equal(json_object_get(j, "stage"), eval) || !json_equal(json_object_get(j, "state"), succeeded)) continue;
        char path[PATH_MAX];
        const char *config = json_string_value(json_object_get(j, "config"));
        if (!config || !config_out(config, path, sizeof path)) continue;
        FILE *f = fopen(path, "rb");
        if (!f) {
            xd_debug("xcoord: dashboard: no eval report at %s", path);
            continue;
        }
        if (fseek(f, 0, SEEK_END) == 0) {
            long size = ftell(f);
            rewind(f);
            if (size > 0 && size <= REPORT_MAX) report = json_loadf(f, 0, NULL);
        }
        fclose(f);
        if (json_is_object(report)) break;
        xd_debug("xcoord: dashboard: %s is not a JSON object", path);
        json_decref(report);
        report = NULL;
    }
    json_decref(eval);
    json_decref(succeeded);
    return report ? report : json_null();
}

static char *api_run(void *ctx, const char *run_id, int *status) {
    coord *c = ctx;
    json_t *body = coord_run_json(c, run_id);
    if (!body) return error_text(status, 404, "no run \"%s\"", run_id);
    json_t *r = json_object_get(body, "run"), *jobs = json_object_get(body, "jobs");
    json_t *out = json_deep_copy(r);
    json_object_del(out, "spec");
    json_object_set_new(out, "report", eval_report(jobs));
    /* the worker of a job: the one holding it now, else the one of its latest attempt */
    json_t *by_id = json_object();
    size_t i;
    json_t *j;
    json_array_foreach(jobs, i, j) json_object_set(by_id, json_string_value(json_object_get(j, "id")), j);
    sqlite3_stmt *st = coord_sql(c, "SELECT a.job, a.worker FROM attempts a JOIN jobs j ON j.id = a.job WHERE j.run = ? "
                                    "ORDER BY a.epoch",
                                 "s", run_id);
    while (st && coord_sql_step(c, st) == 1) {
        j = json_object_get(by_id, coord_col_text(st, 0));
        if (j && !json_is_string(json_object_get(j, "attempt")))
            json_object_set_new(j, "worker", json_string(coord_col_text(st, 1)));
    }
    json_decref(by_id);
    json_array_foreach(jobs, i, j) {
        json_t *m = json_object_get(j, "metrics");
        json_object_set_new(j, "progress",
                            json_is_object(m) ? json_pack("{s:O, s:O}", "step", json_object_get(m, "step"), "total",
                                                          json_object_get(m, "total"))
                                              : json_null());
        json_object_del(j, "metrics");
        json_object_del(j, "config");
    }
    json_object_set(out, "jobs", jobs);
    json_decref(body);
    return dump(out);
}

/* ---- job ---- */

static char *api_job(void *ctx, const char *job_id, int *status) {
    coord *c = ctx;
    sqlite3_stmt *st = coord_sql(c, "SELECT id, run, name, stage, state, error FROM jobs WHERE id = ?", "s", job_id);
    if (!st || coord_sql_step(c, st) != 1) return error_text(status, 404, "no job \"%s\" (jobs are RUN/NAME)", job_id);
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", coord_col_text(st, 0), "run", coord_col_text(st, 1), "name",
                            coord_col_text(st, 2), "stage", coord_col_text(st, 3), "state", coord_col_text(st, 4));
    json_object_set_new(out, "error", sqlite3_column_type(st, 5) == SQLITE_NULL ? json_null() : json_string(coord_col_text(st, 5)));
    sqlite3_reset(st);

    json_t *attempts = json_array();
    st = coord_sql(c, "SELECT id, epoch, worker, state, started, ended, exit_code, error FROM attempts WHERE job = ? ORDER BY epoch",
                   "s", job_id);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *a = json_pack("{s:s, s:I, s:s, s:s, s:o, s:o}", "id", coord_col_text(st, 0), "epoch",
                              (json_int_t)sqlite3_column_int64(st, 1), "worker", coord_col_text(st, 2), "state",
                              coord_col_text(st, 3), "started", coord_time_json(st, 4), "ended", coord_time_json(st, 5));
        json_object_set_new(a, "exit_code",
                            sqlite3_column_type(st, 6) == SQLITE_NULL ? json_null() : json_integer(sqlite3_column_int64(st, 6)));
        json_object_set_new(a, "error", sqlite3_column_type(st, 7) == SQLITE_NULL || !*coord_col_text(st, 7)
                                            ? json_null() : json_string(coord_col_text(st, 7)));
        json_array_append_new(attempts, a);
    }
    json_object_set_new(out, "attempts", attempts);

    /* every metrics line, whole (arrays such as mse_layer included), in step order */
    json_t *metrics = json_array();
    st = coord_sql(c, "SELECT step, line FROM metrics WHERE job = ? ORDER BY step, id", "s", job_id);
    while (st && coord_sql_step(c, st) == 1) {
        json_t *line = json_loads(coord_col_text(st, 1), 0, NULL);
        if (!json_is_object(line)) {
            json_decref(line);
            continue;
        }
        if (!json_object_get(line, "step")) json_object_set_new(line, "step", json_integer(sqlite3_column_int64(st, 0)));
        json_array_append_new(metrics, line);
    }
    json_object_set_new(out, "metrics", metrics);

    /* the coordinator keeps the job's progress lines (what log_tail answers): the last of them */
    json_t *lines = coord_job_lines(c, job_id, LOG_LINES), *log = json_array();
    size_t i;
    json_t *l;
    json_array_foreach(lines, i, l) json_array_append(log, json_object_get(l, "line"));
    json_decref(lines);
    json_object_set_new(out, "log", log);
    return dump(out);
}

/* ---- workers, events ---- */

static int by_name(const void *a, const void *b) {
    return strcmp((*(coord_worker *const *)a)->name, (*(coord_worker *const *)b)->name);
}

/* The workers sorted by name (malloc'd; NULL when there are none or no memory). */
static coord_worker **sorted_workers(coord *c, size_t *n) {
    *n = 0;
    coord_worker **ws = c->workers.count ? malloc(sizeof *ws * c->workers.count) : NULL;
    size_t it = 0;
    void *v;
    while (ws && *n < c->workers.count && coord_map_next(&c->workers, &it, NULL, &v)) ws[(*n)++] = v;
    if (ws) qsort(ws, *n, sizeof *ws, by_name);
    return ws;
}

static char *api_workers(void *ctx) {
    coord *c = ctx;
    size_t n;
    coord_worker **ws = sorted_workers(c, &n);
    json_t *out = json_array();
    uint64_t now = coord_mono_ms();
    for (size_t i = 0; i < n; i++) {
        json_t *w = coord_worker_json(c, ws[i]);
        if (!w) continue;
        json_object_set_new(w, "heartbeat_age_ms",
                            ws[i]->rid_len ? json_integer((json_int_t)(now - ws[i]->last_heartbeat)) : json_null());
        json_array_append_new(out, w);
    }
    free(ws);
    return dump(out);
}

static char *api_events(void *ctx, const char *run_id, long since) {
    int64_t last;
    return dump(coord_events_json(ctx, run_id, since, &last));
}

static long api_last_event_id(void *ctx) {
    coord *c = ctx;
    sqlite3_stmt *st = coord_sql(c, "SELECT COALESCE(MAX(id), 0) FROM events", "");
    long id = st && coord_sql_step(c, st) == 1 ? (long)sqlite3_column_int64(st, 0) : 0;
    if (st) sqlite3_reset(st);
    return id;
}

/* ---- /metrics ---- */

/* A label value: backslash, quote and newline escaped. */
static void put_label(coord_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '\\') coord_buf_put(b, "\\\\");
        else if (*s == '"') coord_buf_put(b, "\\\"");
        else if (*s == '\n') coord_buf_put(b, "\\n");
        else coord_buf_printf(b, "%c", *s);
    }
}

static void family(coord_buf *b, const char *name, const char *type, const char *help) {
    coord_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void count_by_state(coord *c, coord_buf *b, const char *name, const char *sql, const char *const *states) {
    int64_t n[16] = {0};
    sqlite3_stmt *st = coord_sql(c, sql, "");
    while (st && coord_sql_step(c, st) == 1)
        for (int i = 0; states[i]; i++)
            if (!strcmp(states[i], coord_col_text(st, 0))) n[i] = sqlite3_column_int64(st, 1);
    for (int i = 0; states[i]; i++) coord_buf_printf(b, "%s{state=\"%s\"} %lld\n", name, states[i], (long long)n[i]);
}

static char *api_prometheus(void *ctx) {
    coord *c = ctx;
    coord_buf b = {0};
    family(&b, "xd_runs", "gauge", "Runs by state.");
    count_by_state(c, &b, "xd_runs", "SELECT state, count(*) FROM runs GROUP BY state", run_states);
    family(&b, "xd_jobs", "gauge", "Jobs by state.");
    count_by_state(c, &b, "xd_jobs", "SELECT state, count(*) FROM jobs GROUP BY state", job_states);

    size_t n;
    coord_worker **ws = sorted_workers(c, &n);
    int alive = 0;
    for (size_t i = 0; i < n; i++) alive += ws[i]->alive;
    family(&b, "xd_workers", "gauge", "Workers by state.");
    coord_buf_printf(&b, "xd_workers{state=\"alive\"} %d\nxd_workers{state=\"lost\"} %d\n", alive, (int)n - alive);
    family(&b, "xd_worker_heartbeat_age_seconds", "gauge", "Time since the worker's last heartbeat.");
    uint64_t now = coord_mono_ms();
    for (size_t i = 0; i < n; i++) {
        if (!ws[i]->rid_len) continue; /* not connected since this coordinator started */
        coord_buf_put(&b, "xd_worker_heartbeat_age_seconds{worker=\"");
        put_label(&b, ws[i]->name);
        coord_buf_printf(&b, "\"} %.3f\n", (double)(now - ws[i]->last_heartbeat) / 1000.0);
    }
    free(ws);

    /* running jobs: their latest metrics line */
    static const struct {
        const char *name, *key, *help;
    } per_job[] = {
        {"xd_job_tokens_per_second", "tokens_per_s", "Throughput of a running job (its last metrics line)."},
        {"xd_job_loss", "loss", "Loss of a running job (its last metrics line)."},
        {"xd_job_step", "step", "Optimizer step of a running job."},
    };
    json_t *running = json_array();
    sqlite3_stmt *st = coord_sql(c,
                                 "SELECT j.run, j.name, j.stage, m.line, m.step FROM jobs j JOIN metrics m ON m.id = "
                                 "(SELECT MAX(id) FROM metrics WHERE job = j.id) WHERE j.state = 'running' ORDER BY j.run, j.seq",
                                 "");
    while (st && coord_sql_step(c, st) == 1) {
        json_t *line = json_loads(coord_col_text(st, 3), 0, NULL);
        if (!json_is_object(line)) json_decref(line), line = json_object();
        if (!json_object_get(line, "step")) json_object_set_new(line, "step", json_integer(sqlite3_column_int64(st, 4)));
        json_array_append_new(running, json_pack("{s:s, s:s, s:s, s:o}", "run", coord_col_text(st, 0), "job",
                                                 coord_col_text(st, 1), "stage", coord_col_text(st, 2), "line", line));
    }
    for (size_t k = 0; k < sizeof per_job / sizeof per_job[0]; k++) {
        family(&b, per_job[k].name, "gauge", per_job[k].help);
        size_t i;
        json_t *r;
        json_array_foreach(running, i, r) {
            json_t *v = json_object_get(json_object_get(r, "line"), per_job[k].key);
            if (!json_is_number(v)) continue;
            coord_buf_printf(&b, "%s{run=\"", per_job[k].name);
            put_label(&b, json_string_value(json_object_get(r, "run")));
            coord_buf_put(&b, "\",job=\"");
            put_label(&b, json_string_value(json_object_get(r, "job")));
            coord_buf_put(&b, "\",stage=\"");
            put_label(&b, json_string_value(json_object_get(r, "stage")));
            coord_buf_printf(&b, "\"} %.10g\n", json_number_value(v));
        }
    }
    json_decref(running);

    family(&b, "xd_coordinator_messages_total", "counter", "Messages the coordinator handled.");
    coord_buf_printf(&b, "xd_coordinator_messages_total %llu\n", (unsigned long long)c->stats.messages);
    family(&b, "xd_coordinator_dispatched_total", "counter", "Attempts dispatched.");
    coord_buf_printf(&b, "xd_coordinator_dispatched_total %llu\n", (unsigned long long)c->stats.dispatched);
    family(&b, "xd_coordinator_commits_total", "counter", "Database commits.");
    coord_buf_printf(&b, "xd_coordinator_commits_total %llu\n", (unsigned long long)c->stats.commits);
    family(&b, "xd_coordinator_live_attempts", "gauge", "Attempts holding a lease.");
    coord_buf_printf(&b, "xd_coordinator_live_attempts %zu\n", c->attempts.count);
    return coord_buf_take(&b);
}

/* ---- start, notify, stop ---- */

int coord_dashboard_start(coord *c, xd_err *e) {
    if (!c->opt.http) return 0;
    /* the token goes next to the database: its directory is the coordinator's */
    char dir[PATH_MAX];
    const char *slash = strrchr(c->opt.db_path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == c->opt.db_path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - c->opt.db_path), c->opt.db_path);
    coord_http_api api = {
        .ctx = c,
        .runs = api_runs,
        .run = api_run,
        .job = api_job,
        .workers = api_workers,
        .events = api_events,
        .prometheus = api_prometheus,
        .last_event_id = api_last_event_id,
    };
    /* coord_http_start logs the address to open, token included (the Jupyter way), on stderr */
    return coord_http_start(&c->loop, c->opt.http, dir, &api, &c->http, e);
}

void coord_dashboard_notify(coord *c) { coord_http_notify(c->http); }

void coord_dashboard_stop(coord *c) {
    coord_http_stop(c->http);
    c->http = NULL;
}
