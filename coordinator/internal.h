/* coordinator/internal.h — what the coordinator's files share (not a way in: coordinator.h is).
 * One libuv loop owns everything: the ROUTER socket, the ZAP socket, the timers and the database
 * handle, so nothing here is locked. The database is the truth; the maps below are a cache of
 * what is live (connected workers, attempts holding a lease), rebuilt from it at start. */
#ifndef XD_COORD_INTERNAL_H
#define XD_COORD_INTERNAL_H

#include "coordinator.h"
#include "proto/proto.h"

#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <uv.h>

/* ---- util.c: text buffers, a string-keyed hash map, clocks ---- */

typedef struct coord_buf {
    char *data;
    size_t len, cap;
    bool oom;
} coord_buf;
void coord_buf_put(coord_buf *b, const char *s);
void coord_buf_printf(coord_buf *b, const char *fmt, ...) XD_PRINTF(2, 3);
/* The text (malloc'd; NULL when an append ran out of memory); the buffer is empty again. */
char *coord_buf_take(coord_buf *b);
void coord_buf_free(coord_buf *b);

typedef struct coord_map_slot {
    char *key; /* NULL: empty */
    void *value;
} coord_map_slot;
typedef struct coord_map {
    coord_map_slot *slots;
    size_t cap, count;
} coord_map;
void *coord_map_get(const coord_map *m, const char *key);
/* Copies key; replaces the value of a key already there. -1 when out of memory. */
int coord_map_put(coord_map *m, const char *key, void *value);
void *coord_map_remove(coord_map *m, const char *key);
/* for (size_t i = 0; coord_map_next(m, &i, &key, &value);) — do not change m inside. */
bool coord_map_next(const coord_map *m, size_t *i, const char **key, void **value);
void coord_map_free(coord_map *m);

/* Replaces what is not UTF-8 (a sequence cut by truncation, say) with '?': JSON and the wire
 * carry only UTF-8, and the database feeds replies. */
void coord_utf8_clean(char *s);

int64_t coord_wall_ms(void); /* Unix time in ms: what the database stores */
uint64_t coord_mono_ms(void);  /* monotonic ms: leases and heartbeat ages */

/* ---- the live state ---- */

typedef enum {
    ATTEMPT_DISPATCHED, /* assign sent, not accepted yet */
    ATTEMPT_RUNNING,
    ATTEMPT_CANCELLING, /* cancel sent: the worker stops the child and reports done */
} coord_attempt_state;

/* An attempt that holds a lease: at most one per job, always with the job's current epoch. */
typedef struct coord_attempt {
    char *id, *job, *run, *worker;
    int64_t epoch;
    coord_attempt_state state;
    uint64_t lease_deadline; /* monotonic ms */
} coord_attempt;

#define COORD_MAX_RID 255
#define COORD_MAX_GPUS 64

typedef struct coord_worker {
    char *name;
    uint8_t rid[COORD_MAX_RID]; /* ZeroMQ routing id of its connection */
    size_t rid_len;             /* 0: not connected since this coordinator started */
    bool alive;                 /* heartbeating within the lease */
    bool draining;
    int n_cuda;
    int cuda_index[COORD_MAX_GPUS];
    json_t *devices;
    int64_t pid;
    uint64_t last_heartbeat; /* monotonic ms */
    int active;              /* attempts holding a lease on it */
} coord_worker;

/* The sender of the message being handled. */
typedef struct coord_peer {
    uint8_t rid[COORD_MAX_RID];
    size_t rid_len;
    bool req; /* a REQ socket: replies carry the empty delimiter frame */
} coord_peer;

typedef struct coord_stats {
    uint64_t messages, heartbeats, rejected, stale, send_failures, dispatched, commits;
} coord_stats;

typedef struct coord_keys coord_keys;
typedef struct coord_outgoing coord_outgoing;
typedef struct coord_stmt coord_stmt;

typedef struct coord {
    coord_options opt;
    char artifacts[PATH_MAX];
    char endpoint[512]; /* what the socket is bound to (an ephemeral port resolved) */
    uv_loop_t loop;
    sqlite3 *db;
    coord_stmt *stmts;
    bool in_tx;     /* a transaction is open (a batch, a state change or both) */
    bool in_change; /* a state change's savepoint is open inside it */
    bool dirty;     /* ended state changes wait in it for the commit */
    void *zctx, *router, *zap;
    uv_poll_t router_poll, zap_poll;
    uv_idle_t pump;
    uv_check_t commit_check; /* commits a dirty transaction at the end of each loop iteration */
    coord_outgoing *out;     /* messages waiting for that commit */
    size_t n_out, cap_out;
    long faults_seen; /* XCOORD_FAULT's counter (loop.c) */
    uv_timer_t lease_timer, backoff_timer, flush_timer;
    uv_idle_t kick;        /* keeps the loop from blocking while a commit or a dispatch waits */
    bool dispatch_pending; /* a dispatch pass runs at the end of this loop iteration */
    uv_signal_t sigint, sigterm;
    bool handles_open, stopping;
    bool fatal; /* a database error: the loop stops, a restart recovers */
    coord_map workers;        /* name -> coord_worker */
    coord_map workers_by_rid; /* hex routing id -> coord_worker */
    coord_map attempts;       /* attempt id -> coord_attempt */
    coord_map stale_seen;     /* "type:attempt#epoch" already logged as stale */
    coord_keys *keys;
    coord_stats stats;
    uint64_t rejected_logged_at, refused_logged_at; /* log rate limits */
    xd_rng rng;
    struct coord_http *http; /* the dashboard (--http), or NULL */
} coord;

/* ---- db.c: the schema (docs/coordinator.md), statements, transactions, events ---- */

int coord_db_open(coord *c, const char *path, xd_err *e);
void coord_db_close(coord *c);
/* A cached prepared statement for sql (a string literal: cached by address), reset, with the
 * arguments bound by fmt: s text (NULL binds null), i int64, d double, n null. NULL on error. */
sqlite3_stmt *coord_sql(coord *c, const char *sql, const char *fmt, ...);
/* Steps a query: 1 a row, 0 done (reset), -1 error (reset, fatal). */
int coord_sql_step(coord *c, sqlite3_stmt *st);
/* Runs a statement to completion: 0, or -1 with the database's message logged. */
int coord_sql_exec(coord *c, const char *sql, const char *fmt, ...);
/* A state change: begin (a savepoint, joining an open batch), end it (the transaction is then
 * dirty), or roll it back. coord_flush commits; the loop does it at the end of each iteration,
 * then sends the messages that waited for it. */
int coord_tx_begin(coord *c);
int coord_tx_commit(coord *c);
void coord_tx_rollback(coord *c);
int coord_flush(coord *c);
/* Progress lines and stale-message events: written inside a batch that the next state change or
 * the flush timer (at most 200 ms later) commits. */
void coord_batch_begin(coord *c);
void coord_batch_flush_cb(uv_timer_t *t);
/* An events row (inside the caller's transaction). run, job, attempt may be NULL. */
void coord_event(coord *c, const char *run, const char *job, const char *attempt, const char *kind,
                 const char *fmt, ...) XD_PRINTF(6, 7);
/* A column as text (never NULL: "" for null). */
const char *coord_col_text(sqlite3_stmt *st, int i);

/* ---- keys.c: CURVE keys and the ZAP allow-list ---- */

/* Whether the endpoint can only be reached from this host (loopback TCP, ipc, inproc). */
bool coord_endpoint_is_local(const char *endpoint);
/* Loads DIR/server.key, DIR/server.pub and DIR/authorized/ *.pub. */
int coord_keys_load(const char *dir, coord_keys **out, xd_err *e);
void coord_keys_free(coord_keys *k);
const char *coord_keys_server_secret(const coord_keys *k); /* z85, 40 characters */
/* Answers every ZAP request waiting on c->zap. */
void coord_zap_serve(coord *c);

/* ---- loop.c: sending ---- */

/* Encodes and sends to a routing id, or, while state changes wait for their commit, queues it
 * to go right after that commit. A peer that went away is logged and counted, not an error of
 * the caller (the lease machinery copes with lost messages). -1: not sent, -2: the fields do not
 * encode (nothing sent). */
int coord_send(coord *c, const uint8_t *rid, size_t rid_len, bool req, proto_type t, json_t *fields);
/* Sends to a worker's current connection (when it has one). Steals fields. */
void coord_send_worker(coord *c, coord_worker *w, proto_type t, json_t *fields);
/* reply {ok: true, body} (steals body) or {ok: false, error}. */
void coord_reply_ok(coord *c, const coord_peer *p, json_t *body);
void coord_reply_error(coord *c, const coord_peer *p, const char *fmt, ...) XD_PRINTF(3, 4);
/* error {code, message}: a message that was refused. */
void coord_send_error(coord *c, const coord_peer *p, int code, const char *message);

enum {
    COORD_ERR_BAD_MESSAGE = 400, /* does not decode: garbage, wrong version, unknown type or field */
    COORD_ERR_UNKNOWN_WORKER = 404, /* a heartbeat from a worker never seen: send hello */
    COORD_ERR_WRONG_WAY = 405,   /* a message the coordinator sends, not receives */
    COORD_ERR_INTERNAL = 500,
};

/* ---- sched.c: jobs, attempts, leases, dispatch ---- */

/* Rebuilds the live state from the database at start: every leased attempt gets now + lease. */
int coord_sched_recover(coord *c, xd_err *e);
/* Asks for a dispatch pass at the end of this loop iteration, inside the same commit as the
 * change that freed a worker or readied a job. */
void coord_dispatch_soon(coord *c);
void coord_dispatch(coord *c);
/* Makes the loop run its end-of-iteration work (dispatch, commit, sends) without blocking. */
void coord_kick(coord *c);
/* Timer callbacks. */
void coord_on_lease_timer(uv_timer_t *t);
void coord_on_backoff_timer(uv_timer_t *t);
/* Arms the backoff timer for the earliest ready-but-waiting job (at start and when it fires; a
 * requeue arms it itself). */
void coord_backoff_rearm(coord *c);

typedef enum {
    END_SUCCEEDED, /* done ok */
    END_FAILED,    /* done not ok: a failure of the job, counted against retries */
    END_LOST,      /* lease expired, worker silent or not listing it: a failure of the worker */
    END_CANCELLED, /* done after a cancel, or fenced by a retry */
} coord_end;

/* Ends a live attempt inside the caller's state change: the attempts row, the job (succeeded,
 * requeued with backoff, failed, left cancelled), its dependents and the run; frees a (removed
 * from the map) and frees its worker for the next dispatch. Fencing the worker is the caller's. */
int coord_attempt_end(coord *c, coord_attempt *a, coord_end how, int exit_code, const char *error,
                      const char *output);
void coord_attempt_free(coord_attempt *a);
/* Renews a live attempt's lease. */
void coord_attempt_renew(coord *c, coord_attempt *a);

/* Job and run state changes inside the caller's transaction. */
int coord_promote(coord *c, const char *run);
int coord_mark_upstream_failed(coord *c, const char *job);
int coord_run_refresh(coord *c, const char *run);

/* ---- worker.c and client.c: the messages ---- */

void coord_on_worker_message(coord *c, const coord_peer *p, proto_type t, json_t *f);
void coord_on_client_message(coord *c, const coord_peer *p, proto_type t, json_t *f);
/* A worker found by its connection or registered name. */
coord_worker *coord_worker_by_peer(coord *c, const coord_peer *p);
/* The routing id as a map key (hex). */
void coord_rid_key(const uint8_t *rid, size_t len, char out[2 * COORD_MAX_RID + 1]);
/* Marks a worker dead: its attempts are lost and their jobs requeued (committed here). */
void coord_worker_lost(coord *c, coord_worker *w, const char *why);
json_t *coord_worker_json(coord *c, coord_worker *w);

/* ---- client.c: the bodies that the replies and the dashboard (dashboard_api.c) share ---- */

/* A time column as Unix seconds (null for null or 0). */
json_t *coord_time_json(sqlite3_stmt *st, int i);
/* The latest runs, each with its jobs by state (query's runs). */
json_t *coord_runs_json(coord *c);
/* {run, jobs} as query RUN answers; NULL: no such run. */
json_t *coord_run_json(coord *c, const char *run);
/* A job's last n metrics lines, oldest first: [{attempt, step, total, time, line}] (log_tail). */
json_t *coord_job_lines(coord *c, const char *job, int64_t n);
/* Events with id > since (run NULL or "": every run), at most 1000; *last: the last id. */
json_t *coord_events_json(coord *c, const char *run, int64_t since, int64_t *last);

/* ---- dashboard_api.c: xcoord --http (docs/dashboard.md) ---- */

/* Starts the dashboard on c's loop when --http was given (the token next to the database). */
int coord_dashboard_start(coord *c, xd_err *e);
/* Something changed: the dashboard's live stream is told (coalesced; nothing without --http). */
void coord_dashboard_notify(coord *c);
void coord_dashboard_stop(coord *c);

#endif
