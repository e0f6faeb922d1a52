/* coordinator/coordinator.h — xcoord, the coordinator daemon (docs/coordinator.md): turns a
 * pipeline spec (docs/pipeline-spec.md) into a DAG of xtrain jobs, schedules them onto workers over
 * one ZeroMQ ROUTER socket, and keeps every run in SQLite. The only way into coordinator/. */
#ifndef XD_COORDINATOR_H
#define XD_COORDINATOR_H

#include "common/xd.h"

typedef struct coord_options {
    const char *listen;    /* tcp://HOST:PORT (PORT may be * for an ephemeral port), ipc://PATH */
    const char *db_path;   /* the SQLite database (created when missing) */
    const char *artifacts; /* where jobs write: ARTIFACTS/RUN_ID/JOB_NAME */
    const char *keys_dir;  /* NULL: no CURVE (loopback and ipc only) */
    int heartbeat_ms;      /* what workers are told to heartbeat at */
    int lease_ms;          /* an attempt's lease and a worker's silence limit */
    int backoff_ms;        /* first retry delay; doubles per failure */
    int backoff_max_ms;    /* cap of the retry delay */
    const char *http;      /* the dashboard's HOST:PORT (docs/dashboard.md), NULL: none */
    bool http_public;      /* --http may bind an address other hosts reach */
} coord_options;

/* Parses xcoord's command line into o (strings point into argv). Returns 0 to run, 1 when it
 * printed the usage (exit 0), -1 on a usage error (message in e). */
int coord_parse_args(int argc, char **argv, coord_options *o, xd_err *e);

/* Runs the coordinator until SIGINT or SIGTERM. Returns 0 after a clean stop, -1 when it could
 * not start (message in e). */
int coord_serve(const coord_options *o, xd_err *e);

/* A pipeline spec expanded into jobs (docs/pipeline-spec.md). */
typedef struct coord_job_spec {
    char *name;    /* unique in the run: init, align, align-0, distill-math, merge, final, eval */
    char *stage;   /* the xtrain stage */
    char *config;  /* the complete YAML for xtrain STAGE --config */
    char *workdir; /* ARTIFACTS/RUN_ID/NAME */
    char *output;  /* what dependents read: the model directory or the report */
    int gpus;      /* 0: any worker; N: a worker with at least N CUDA devices */
    int *deps;     /* indices of jobs this one needs (all earlier in the array) */
    int n_deps;
} coord_job_spec;

typedef struct coord_dag {
    char *name;
    int retries;        /* failures of the job itself before it fails */
    int worker_retries; /* lost leases and dead workers before it fails */
    coord_job_spec *jobs;
    int n_jobs;
} coord_dag;

typedef struct coord_spec coord_spec;

/* Parses and checks a pipeline spec (YAML text): unknown keys (with the nearest known one), wrong
 * types, missing teacher, empty domains, relative paths. Nothing outside the text is read unless
 * align.layer_blocks > 1 needs the teacher's layer count and align.num_layers is not given. */
int coord_spec_parse(const char *text, size_t len, coord_spec **out, xd_err *e);
void coord_spec_free(coord_spec *s);
const char *coord_spec_name(const coord_spec *s);

/* The jobs of a run: every config has absolute paths under artifacts/run_id. */
int coord_spec_expand(const coord_spec *s, const char *artifacts, const char *run_id, coord_dag *dag,
                      xd_err *e);
void coord_dag_free(coord_dag *d);

#endif
