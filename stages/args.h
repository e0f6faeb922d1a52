/* stages/args.h — command-line flags for xtrain's subcommands: declared in a table, parsed with
 * clear errors (unknown flag with the nearest known one, missing value, bad number). */
#ifndef XD_STAGES_ARGS_H
#define XD_STAGES_ARGS_H

#include "common/xd.h"

typedef enum { ARG_STRING, ARG_INT, ARG_DOUBLE, ARG_FLAG } arg_kind;

typedef struct arg_spec {
    const char *name; /* "--model" */
    arg_kind kind;
    void *dst;        /* const char **, int *, double *, bool * */
    const char *help;
    bool set;         /* filled by the parser */
} arg_spec;

/* Parses argv[0..argc-1] (after the subcommand). Returns 0, or -1 with e filled. "--help" → 1. */
int args_parse(arg_spec *specs, int n_specs, int argc, char **argv, xd_err *e);
void args_usage(const char *usage, const arg_spec *specs, int n_specs);
/* Edit distance, for "did you mean" suggestions. */
int args_edit_distance(const char *a, const char *b);

#endif
