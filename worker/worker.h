/* worker/worker.h — xworker's parts (docs/worker.md): one libuv loop owns the DEALER socket to
 * the coordinator (worker_conn.c), the message handlers (worker_msg.c), the child xtrain
 * (worker_child.c) and what it writes (worker_tail.c). Internal to worker/. */
#ifndef XD_WORKER_H
#define XD_WORKER_H

#include "common/xd.h"
#include "proto/proto.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#define WORKER_ID_MAX 512
#define WORKER_PATH_MAX 1024
#define WORKER_MAX_GPUS 64

/* How a child's end is reported. */
typedef enum {
    WORKER_END_NONE = 0, /* running: its exit is reported as it is (ok or failed) */
    WORKER_END_CANCEL,   /* cancel: done {ok false, "cancelled"} */
    WORKER_END_FENCE,    /* fence: nothing is reported */
    WORKER_END_DRAIN,    /* the worker drains: done {ok false, "drained"} */
} worker_end;

/* One attempt: its child xtrain and the progress forwarded so far. Heap-allocated; freed when
 * the child's handle is closed (a fenced attempt lives on, detached, until its child is reaped). */
typedef struct worker_attempt {
    struct worker *w;
    char id[WORKER_ID_MAX];
    char dirname[WORKER_ID_MAX + 16]; /* the id as a file name (attempts/DIRNAME) */
    long long epoch;
    char job[WORKER_ID_MAX];
    char stage[32];
    char dir[WORKER_PATH_MAX]; /* WORKDIR/attempts/ID */
    char out[WORKER_PATH_MAX]; /* the stage's out: the config's, else the assign's workdir */
    long total;                /* the config's steps, else 0 */
    uv_process_t proc;
    bool proc_init, spawned, exited;
    int closing; /* handles still to close before it is freed */
    int pid;
    worker_end end;
    uv_timer_t kill_timer; /* SIGKILL after the grace period */
    bool kill_timer_open;
    /* worker_tail.c */
    unsigned long long old_ino; /* metrics.jsonl of an earlier attempt: ignored */
    unsigned long long ino;     /* the file being read */
    long long offset;
    long last_step;             /* progress sent up to this step */
    long last_ckpt;             /* checkpoint sent up to this step */
    char *partial;              /* a line without its newline yet */
    size_t partial_len;
} worker_attempt;

typedef struct worker_device {
    char kind[8]; /* "cpu" or "cuda" */
    int index;
    char name[128];
    long long memory_mb;
} worker_device;

typedef struct worker {
    uv_loop_t *loop;
    /* settings */
    char coordinator[512];
    char workdir[WORKER_PATH_MAX];
    char name[129];
    char keys[WORKER_PATH_MAX]; /* empty: no CURVE */
    char xtrain[WORKER_PATH_MAX];
    worker_device devices[WORKER_MAX_GPUS];
    int n_devices;
    bool cpu;
    double grace_s;       /* SIGTERM → SIGKILL on cancel */
    double drain_timeout_s;
    int poll_ms;          /* how often the child's files are read */
    /* connection (worker_conn.c) */
    void *zctx, *sock;
    uv_poll_t *poll;
    void *mon;             /* the socket monitor's PAIR: ZMQ_EVENT_CONNECTED */
    uv_poll_t *mon_poll;
    int mon_seq, connects; /* connections made by this socket */
    uv_idle_t kick; /* re-reads ZMQ_EVENTS on the next loop turn after a send */
    uv_timer_t hb_timer, reconnect_timer;
    int heartbeat_ms, lease_ms;
    double last_rx;        /* xd_now() of the last message from the coordinator */
    double backoff_s;      /* the next reconnect delay */
    int welcomes;          /* since the last hello: the first answers it, later ones heartbeats */
    bool coord_acks;       /* the coordinator answers heartbeats: its silence means it is gone */
    int send_failures;     /* heartbeats in a row the socket would not take */
    double last_hello;     /* xd_now() of the last hello sent */
    bool connected;        /* a socket exists (the coordinator may still be unreachable) */
    int reconnects;
    /* done messages kept until two later messages from the coordinator arrive on the same
       socket (so the done went before them), and sent again after a reconnect */
    struct worker_pending {
        json_t *fields;
        int seen;
    } pending[8];
    int n_pending;
    /* the work */
    worker_attempt *cur;   /* the attempt that is run and reported; NULL when idle */
    int children;          /* child processes not yet reaped (fenced ones included) */
    uv_timer_t tail_timer;
    bool draining;         /* SIGTERM: take nothing new, stop the child, exit */
    bool exiting;
    uv_signal_t sigterm, sigint;
    int exit_code;
} worker;

/* worker_conn.c: the socket. */
int worker_conn_open(worker *w, xd_err *e);
void worker_conn_close(worker *w);
/* Encodes and queues a message (never blocks; a full queue drops it with a warning). */
int worker_send(worker *w, proto_type t, json_t *fields); /* steals fields */
/* done: sent, and kept to be sent again after a reconnect until it is known to have arrived. */
void worker_send_done(worker *w, json_t *fields); /* steals fields */
/* hello {worker, pid, devices, running}. */
void worker_send_hello(worker *w);
/* [{attempt, epoch}] of the attempt being run, for hello and heartbeat. */
json_t *worker_running(worker *w);
void worker_conn_start_timers(worker *w);
void worker_conn_stop_timers(worker *w);
void worker_conn_set_heartbeat(worker *w, int ms);
/* Closes the socket after waiting up to linger_ms for queued messages to go (on exit). */
void worker_conn_flush_close(worker *w, int linger_ms);

/* worker_msg.c: one decoded message from the coordinator. */
void worker_handle(worker *w, proto_type t, json_t *fields);

/* worker_child.c: the child xtrain. */
int worker_start_attempt(worker *w, json_t *assign);
/* Sends sig to the child's process group. */
void worker_signal_child(worker_attempt *a, int sig);
/* Stops the child: SIGTERM, then SIGKILL after grace_s (0: SIGKILL at once). */
void worker_stop_child(worker_attempt *a, worker_end end, double grace_s);
/* Kills what a previous xworker left running in this workdir (attempts/ * /pid). */
void worker_reap_orphans(worker *w);

/* worker_tail.c: forwards new metrics lines and checkpoints of the current attempt. */
void worker_tail_init(worker_attempt *a);
void worker_tail_poll(worker_attempt *a);
void worker_tail_free(worker_attempt *a);

/* worker_stage.c: the child's command line from the stage and its YAML config. */
typedef struct worker_argv {
    char **argv; /* NULL-terminated; every string malloc'd */
    int argc;
} worker_argv;
/* out: in, the assign's workdir; out, what the stage writes to (the config's out, relative to
 * base, when it has one). n_gpus: the attempt's GPUs; align, distill and eval given some run
 * with --device cuda unless their config names a device. */
int worker_stage_argv(const char *xtrain, const char *stage, const char *config_path,
                      const char *config_text, const char *base, int n_gpus, char *out, size_t out_cap,
                      worker_argv *av, long *total, xd_err *e);
void worker_argv_free(worker_argv *av);
bool worker_stage_known(const char *stage);

/* worker_devices.c */
int worker_devices_cpu(worker *w);
int worker_devices_gpus(worker *w, const char *list, xd_err *e);
json_t *worker_devices_json(const worker *w);

/* worker_main.c */
void worker_shutdown(worker *w, int code);
/* Called when an attempt is finished and reported; exits after a drain. */
void worker_attempt_finished(worker *w);

#endif
