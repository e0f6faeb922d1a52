/* coordinator/db.c — the database: schema (docs/coordinator.md), cached statements,
 * transactions and events. WAL with synchronous=FULL: a commit is on disk before the coordinator
 * acts on it, so an assign, an acknowledged submit or a fence survives a power cut too; the fsync
 * per commit is paid only on state changes (heartbeats never write, progress lines are batched).
 * A database error is fatal: the loop stops and a restart recovers from the last commit, which is
 * consistent, instead of the coordinator running on with memory and disk disagreeing. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION "1"
#define BATCH_FLUSH_MS 200

struct coord_stmt {
    const char *sql; /* cached by the address of the literal */
    sqlite3_stmt *st;
    coord_stmt *next;
};

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS runs("
    "  id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, name TEXT NOT NULL, spec TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('running','succeeded','failed','cancelled')),"
    "  created INTEGER NOT NULL, updated INTEGER NOT NULL, ended INTEGER);"
    "CREATE TABLE IF NOT EXISTS jobs("
    "  id TEXT PRIMARY KEY, run TEXT NOT NULL REFERENCES runs(id), name TEXT NOT NULL,"
    "  seq INTEGER NOT NULL, stage TEXT NOT NULL, config TEXT NOT NULL, workdir TEXT NOT NULL,"
    "  output TEXT NOT NULL, gpus INTEGER NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('pending','ready','dispatched','running','succeeded',"
    "    'failed','cancelled','held','upstream_failed')),"
    "  epoch INTEGER NOT NULL DEFAULT 0,"
    "  retries INTEGER NOT NULL, failures INTEGER NOT NULL DEFAULT 0,"
    "  worker_retries INTEGER NOT NULL, worker_failures INTEGER NOT NULL DEFAULT 0,"
    "  not_before INTEGER NOT NULL DEFAULT 0, ready_at INTEGER, error TEXT,"
    "  created INTEGER NOT NULL, updated INTEGER NOT NULL, UNIQUE (run, name));"
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, ready_at);"
    "CREATE INDEX IF NOT EXISTS jobs_run_state ON jobs(run, state);"
    "CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs(state, not_before);"
    "CREATE TABLE IF NOT EXISTS deps("
    "  job TEXT NOT NULL REFERENCES jobs(id), needs TEXT NOT NULL REFERENCES jobs(id),"
    "  PRIMARY KEY (job, needs)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS deps_needs ON deps(needs);"
    "CREATE TABLE IF NOT EXISTS attempts("
    "  id TEXT PRIMARY KEY, job TEXT NOT NULL REFERENCES jobs(id), epoch INTEGER NOT NULL,"
    "  worker TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('dispatched','running','cancelling','succeeded','failed',"
    "    'cancelled','lost')),"
    "  lease_deadline INTEGER, exit_code INTEGER, error TEXT, output TEXT,"
    "  created INTEGER NOT NULL, started INTEGER, ended INTEGER, UNIQUE (job, epoch));"
    "CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);"
    "CREATE TABLE IF NOT EXISTS workers("
    "  name TEXT PRIMARY KEY, devices TEXT NOT NULL, pid INTEGER,"
    "  state TEXT NOT NULL CHECK (state IN ('alive','lost')), draining INTEGER NOT NULL DEFAULT 0,"
    "  first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, run TEXT, job TEXT, attempt TEXT,"
    "  kind TEXT NOT NULL, message TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS events_run ON events(run, id);"
    "CREATE TABLE IF NOT EXISTS metrics("
    "  id INTEGER PRIMARY KEY, attempt TEXT NOT NULL, job TEXT NOT NULL, step INTEGER NOT NULL,"
    "  total INTEGER NOT NULL, time INTEGER NOT NULL, line TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS metrics_job ON metrics(job, id);"
    "CREATE TABLE IF NOT EXISTS artifacts("
    "  id INTEGER PRIMARY KEY, job TEXT NOT NULL, attempt TEXT NOT NULL,"
    "  kind TEXT NOT NULL CHECK (kind IN ('checkpoint','output')), step INTEGER, path TEXT NOT NULL,"
    "  time INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS artifacts_job ON artifacts(job, id);";

static void db_fatal(coord *c, const char *what) {
    if (!c->fatal)
        xd_log(XD_LOG_ERROR, "xcoord: database error (%s): %s; stopping, a restart recovers from the last commit",
               what, c->db ? sqlite3_errmsg(c->db) : "no database");
    c->fatal = true;
    uv_stop(&c->loop);
}

int coord_db_open(coord *c, const char *path, xd_err *e) {
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        int rc = xd_fail(e, "%s: cannot open the database: %s", path, c->db ? sqlite3_errmsg(c->db) : "out of memory");
        sqlite3_close(c->db);
        c->db = NULL;
        return rc;
    }
    sqlite3_busy_timeout(c->db, 5000);
    char *err = NULL;
    /* a 64 MiB page cache: the hot rows (live jobs, recent events) are read from memory */
    const char *setup = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
                        "PRAGMA cache_size=-65536;";
    if (sqlite3_exec(c->db, setup, NULL, NULL, &err) != SQLITE_OK || sqlite3_exec(c->db, schema, NULL, NULL, &err) != SQLITE_OK) {
        int rc = xd_fail(e, "%s: %s", path, err ? err : sqlite3_errmsg(c->db));
        sqlite3_free(err);
        coord_db_close(c);
        return rc;
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, "SELECT value FROM meta WHERE key = 'schema'", -1, &st, NULL) != SQLITE_OK)
        return xd_fail(e, "%s: %s", path, sqlite3_errmsg(c->db));
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (!v || strcmp(v, SCHEMA_VERSION))
            rc = xd_fail(e, "%s: schema version %s, this xcoord knows %s", path, v ? v : "?", SCHEMA_VERSION);
    } else if (sqlite3_exec(c->db, "INSERT INTO meta(key, value) VALUES ('schema', '" SCHEMA_VERSION "')", NULL, NULL,
                            &err) != SQLITE_OK) {
        rc = xd_fail(e, "%s: %s", path, err ? err : "?");
        sqlite3_free(err);
    }
    sqlite3_finalize(st);
    if (rc) coord_db_close(c);
    return rc;
}

void coord_db_close(coord *c) {
    while (c->stmts) {
        coord_stmt *s = c->stmts;
        c->stmts = s->next;
        sqlite3_finalize(s->st);
        free(s);
    }
    if (c->db) {
        if (c->in_tx) sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL); /* only after a fatal error */
        sqlite3_close(c->db);
    }
    c->db = NULL;
    c->in_tx = c->in_change = false;
}

static sqlite3_stmt *bind_args(coord *c, const char *sql, const char *fmt, va_list ap) {
    if (c->fatal || !c->db) return NULL;
    coord_stmt *s = c->stmts;
    while (s && s->sql != sql) s = s->next;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            db_fatal(c, "out of memory");
            return NULL;
        }
        if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st, NULL) != SQLITE_OK) {
            free(s);
            db_fatal(c, sql);
            return NULL;
        }
        s->sql = sql;
        s->next = c->stmts;
        c->stmts = s;
    }
    sqlite3_reset(s->st);
    sqlite3_clear_bindings(s->st);
    int i = 1, rc = SQLITE_OK;
    for (const char *f = fmt; f && *f && rc == SQLITE_OK; f++, i++) {
        switch (*f) {
        case 's': {
            const char *v = va_arg(ap, const char *);
            rc = v ? sqlite3_bind_text(s->st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s->st, i);
            break;
        }
        case 'i': rc = sqlite3_bind_int64(s->st, i, va_arg(ap, int64_t)); break;
        case 'd': rc = sqlite3_bind_double(s->st, i, va_arg(ap, double)); break;
        case 'n': rc = sqlite3_bind_null(s->st, i); break;
        default: rc = SQLITE_MISUSE;
        }
    }
    if (rc != SQLITE_OK) {
        db_fatal(c, sql);
        return NULL;
    }
    return s->st;
}

sqlite3_stmt *coord_sql(coord *c, const char *sql, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = bind_args(c, sql, fmt, ap);
    va_end(ap);
    return st;
}

int coord_sql_exec(coord *c, const char *sql, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = bind_args(c, sql, fmt, ap);
    va_end(ap);
    if (!st) return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        db_fatal(c, sql);
        return -1;
    }
    return 0;
}

int coord_sql_step(coord *c, sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) return 1;
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) return 0;
    db_fatal(c, sqlite3_sql(st));
    return -1;
}

/* A state change is a savepoint inside the open transaction, so rolling one back never drops
 * the batched progress lines around it. Ending it marks the transaction dirty; the commit is
 * made once per loop iteration (group commit: one fsync for a burst of messages) and messages
 * sent meanwhile wait for it (loop.c), so nothing is acknowledged or acted on before it is on
 * disk. */
static int open_tx(coord *c) {
    if (c->in_tx) return 0;
    if (c->fatal || !c->db) return -1;
    if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        db_fatal(c, "BEGIN");
        return -1;
    }
    c->in_tx = true;
    return 0;
}

int coord_tx_begin(coord *c) {
    if (open_tx(c)) return -1;
    if (c->in_change) return 0;
    if (sqlite3_exec(c->db, "SAVEPOINT change", NULL, NULL, NULL) != SQLITE_OK) {
        db_fatal(c, "SAVEPOINT");
        return -1;
    }
    c->in_change = true;
    return 0;
}

int coord_tx_commit(coord *c) {
    if (c->fatal) return -1;
    if (!c->in_change) return 0;
    if (sqlite3_exec(c->db, "RELEASE change", NULL, NULL, NULL) != SQLITE_OK) {
        db_fatal(c, "RELEASE");
        return -1;
    }
    c->in_change = false;
    c->dirty = true;
    coord_kick(c);
    return 0;
}

int coord_flush(coord *c) {
    if (c->fatal) return -1;
    if (!c->in_tx) return 0;
    if (c->in_change) { /* a state change half done: never commit it */
        xd_log(XD_LOG_ERROR, "xcoord: internal error: a commit inside a state change");
        return -1;
    }
    if (sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        db_fatal(c, "COMMIT");
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        c->in_tx = c->dirty = false;
        return -1;
    }
    c->in_tx = c->dirty = false;
    c->stats.commits++;
    if (c->handles_open) uv_timer_stop(&c->flush_timer);
    return 0;
}

void coord_tx_rollback(coord *c) {
    if (!c->in_change) return;
    if (sqlite3_exec(c->db, "ROLLBACK TO change", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(c->db, "RELEASE change", NULL, NULL, NULL) != SQLITE_OK)
        db_fatal(c, "ROLLBACK");
    c->in_change = false;
    if (c->handles_open && !uv_is_active((uv_handle_t *)&c->flush_timer)) /* the batch around it stays */
        uv_timer_start(&c->flush_timer, coord_batch_flush_cb, BATCH_FLUSH_MS, 0);
}

void coord_batch_flush_cb(uv_timer_t *t) { coord_flush(t->data); }

void coord_batch_begin(coord *c) {
    if (open_tx(c)) return;
    if (c->handles_open && !uv_is_active((uv_handle_t *)&c->flush_timer))
        uv_timer_start(&c->flush_timer, coord_batch_flush_cb, BATCH_FLUSH_MS, 0);
}


void coord_event(coord *c, const char *run, const char *job, const char *attempt, const char *kind,
                 const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    coord_utf8_clean(msg);
    xd_debug("xcoord: %s %s: %s", kind, job ? job : run ? run : "", msg);
    coord_sql_exec(c,
                   "INSERT INTO events(time, run, job, attempt, kind, message) VALUES (?, ?, ?, ?, ?, ?)",
                   "isssss", coord_wall_ms(), run, job, attempt, kind, msg);
    coord_dashboard_notify(c); /* every event is a change the dashboard's stream reports */
}

const char *coord_col_text(sqlite3_stmt *st, int i) {
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}
