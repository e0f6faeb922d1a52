/* xctl/xctl.h — the parts of xctl (docs/xctl.md): the request to the coordinator (xctl_client.c),
 * tolerant rendering of reply bodies (xctl_render.c), the commands (xctl_*.c). Internal. */
#ifndef XD_XCTL_H
#define XD_XCTL_H

#include "common/xd.h"
#include "proto/proto.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* Exit codes. */
enum { XCTL_OK = 0, XCTL_FAIL = 1, XCTL_USAGE = 2, XCTL_UNREACHABLE = 3 };

#define XCTL_DEFAULT_ADDR "tcp://127.0.0.1:7070"
#define XCTL_MAX_POS 4

typedef struct xctl {
    /* global */
    const char *addr;
    const char *keys;
    bool json;
    double timeout_s;     /* a reply must come within this; for wait: the whole wait */
    bool timeout_set;
    /* per command */
    const char *command;
    const char *pos[XCTL_MAX_POS];
    int n_pos;
    const char *name;     /* submit, keygen */
    bool follow;          /* logs -f */
    int lines;            /* logs */
    bool force;           /* keygen */
    int since;            /* events */
    double interval_s;    /* wait, logs -f: seconds between polls */
    /* the connection */
    void *zctx, *sock;
} xctl;

/* xctl_client.c: one request and its reply. Returns an exit code; on XCTL_OK *body is the
 * reply's body (new reference, may be JSON null). Errors are printed to stderr. */
int xctl_call(xctl *x, proto_type t, json_t *fields, json_t **body); /* steals fields */
void xctl_disconnect(xctl *x);

/* xctl_render.c */
/* The first of the '|'-separated keys that o holds and that is not null. */
json_t *xctl_get(json_t *o, const char *keys);
/* A value as text: strings as they are, numbers, booleans as yes/no; NULL and null as "-". */
const char *xctl_text(json_t *v, char *buf, size_t cap);
/* A time: a number of seconds (or milliseconds) since the epoch in local time; text as is. */
const char *xctl_time(json_t *v, char *buf, size_t cap);
/* The list in a body: the body itself when an array, else the first array under keys. */
json_t *xctl_list(json_t *body, const char *keys);
/* A job's latest metrics as an object (an object, or a metrics.jsonl line that is parsed);
 * new reference or NULL. */
json_t *xctl_metrics(json_t *job);
/* A job's step and total (-1 when unknown). */
void xctl_progress(json_t *job, long *step, long *total);
/* 0 success, 1 failure, -1 not finished. */
int xctl_state_end(const char *state);
void xctl_print_json(json_t *body);

/* A table of text cells, columns padded to their widest cell. */
typedef struct xctl_table {
    int cols, rows;
    char **cells; /* rows x cols, malloc'd */
} xctl_table;
void xctl_table_init(xctl_table *t, int cols);
void xctl_table_add(xctl_table *t, const char *const *cells);
void xctl_table_print(const xctl_table *t, FILE *f);
void xctl_table_free(xctl_table *t);

/* The commands: each returns the exit code. */
int xctl_cmd_submit(xctl *x);
int xctl_cmd_status(xctl *x);
int xctl_cmd_wait(xctl *x);
int xctl_cmd_logs(xctl *x);
int xctl_cmd_control(xctl *x); /* cancel, retry, hold, release, drain, undrain */
int xctl_cmd_workers(xctl *x);
int xctl_cmd_events(xctl *x);
int xctl_cmd_keygen(xctl *x);
/* status RUN's table of jobs (also wait's plain output). */
void xctl_print_run(json_t *run, FILE *f);

#endif
