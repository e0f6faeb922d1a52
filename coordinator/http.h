/* coordinator/http.h — the run dashboard: an HTTP/1.1 server on the coordinator's libuv loop
 * (docs/dashboard.md). It serves the embedded page and a read-only JSON API whose data comes from
 * the callbacks below; nothing on HTTP changes state. Every route but /healthz needs the token
 * written to DIR/dashboard.token at start. */
#ifndef XD_COORD_HTTP_H
#define XD_COORD_HTTP_H

#include "common/xd.h"

#include <uv.h>

typedef struct coord_http coord_http;

/* The data the dashboard shows. Each returns malloc'd JSON text that the server frees. run and job
 * find *status at 200: to refuse, set it (404: no such id) and return NULL, or an {"error": ...}
 * text. A NULL from the others is a 500. Called on the loop, one request at a time. */
typedef struct coord_http_api {
    void *ctx;
    /* [{id, name, state, created, jobs: {state: count}}] */
    char *(*runs)(void *ctx);
    /* {id, name, state, created, jobs: [{id, name, stage, state, deps: [job ids], attempts,
     *  progress: {step, total}, worker}], report: the eval report or null} */
    char *(*run)(void *ctx, const char *run_id, int *status);
    /* {id, name, stage, state, attempts: [{id, epoch, worker, state, started, ended, exit_code,
     *  error}], metrics: [metrics.jsonl lines as objects], log: [last lines]} */
    char *(*job)(void *ctx, const char *job_id, int *status);
    /* [{name, devices, heartbeat_age_ms, attempt, draining}] */
    char *(*workers)(void *ctx);
    /* [{id, time, run, job, kind, message}] with id > since; run_id NULL: every run */
    char *(*events)(void *ctx, const char *run_id, long since);
    /* Prometheus text exposition (format 0.0.4) */
    char *(*prometheus)(void *ctx);
    /* the newest event id: polled each second, a change is pushed to /api/stream */
    long (*last_event_id)(void *ctx);
} coord_http_api;

/* Listens on host_port ("127.0.0.1:8080", "[::1]:0", "0.0.0.0:8080"; port 0 picks one), writes
 * a fresh token to token_dir/dashboard.token (mode 0600; NULL: no file) and logs the URL to open.
 * api is copied. Returns 0, or -1 with the message in e. */
int coord_http_start(uv_loop_t *loop, const char *host_port, const char *token_dir, const coord_http_api *api,
                     coord_http **out, xd_err *e);
/* http://HOST:PORT/?token=TOKEN — what to open in a browser (valid until coord_http_stop). */
const char *coord_http_url(const coord_http *h);
/* Something changed (a state, an event, a metrics line): clients of /api/stream get an event;
 * bursts within 100 ms are coalesced. Cheap: call it on every change. NULL is fine. */
void coord_http_notify(coord_http *h);
/* Closes the listener and every connection; h must not be used afterwards. The memory goes with
 * the last close callback, so run the loop afterwards (as for the loop's other handles). NULL is
 * fine. */
void coord_http_stop(coord_http *h);

#endif
