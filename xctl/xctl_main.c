/* xctl: the command line of xdistill's job system (docs/xctl.md).
 *   xctl [--coordinator ADDR] [--keys DIR] [--json] [--timeout S] COMMAND [ARGS]
 * Exit codes: 0 success, 1 failure, 2 usage error, 3 timeout or coordinator unreachable. */
#include "xctl.h"
#include "stages/args.h"

#include <stdlib.h>
#include <string.h>

enum { F_NAME = 1, F_FOLLOW = 2, F_LINES = 4, F_FORCE = 8, F_SINCE = 16, F_INTERVAL = 32 };

typedef struct command {
    const char *name;
    int min_pos, max_pos;
    unsigned flags;
    int (*run)(xctl *x);
    const char *args, *help;
} command;

static const command commands[] = {
    {"submit", 1, 1, F_NAME, xctl_cmd_submit, "SPEC.yaml [--name N]", "submit a pipeline; prints the run id"},
    {"status", 0, 1, 0, xctl_cmd_status, "[RUN]", "the runs, or one run's jobs"},
    {"wait", 1, 1, F_INTERVAL, xctl_cmd_wait, "RUN [--timeout S]", "wait for a run to end: exit 0 when it succeeded"},
    {"logs", 1, 1, F_FOLLOW | F_LINES | F_INTERVAL, xctl_cmd_logs, "JOB [-f] [--lines N]", "the tail of a job's log (-f: follow)"},
    {"cancel", 1, 1, 0, xctl_cmd_control, "RUN|JOB", "cancel a run or a job"},
    {"retry", 1, 1, 0, xctl_cmd_control, "JOB", "run a failed or cancelled job again"},
    {"hold", 1, 1, 0, xctl_cmd_control, "JOB", "keep a job from starting"},
    {"release", 1, 1, 0, xctl_cmd_control, "JOB", "let a held job start"},
    {"workers", 0, 0, 0, xctl_cmd_workers, "", "the workers: devices, heartbeat, attempt, draining"},
    {"drain", 1, 1, 0, xctl_cmd_control, "WORKER", "give a worker nothing new"},
    {"undrain", 1, 1, 0, xctl_cmd_control, "WORKER", "give a drained worker work again"},
    {"events", 1, 1, F_SINCE, xctl_cmd_events, "RUN [--since ID]", "a run's events"},
    {"keygen", 1, 1, F_NAME | F_FORCE, xctl_cmd_keygen, "DIR [--name server|worker|client] [--force]",
     "write a CURVE keypair DIR/NAME.key (0600) and DIR/NAME.pub; prints the public key"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fprintf(f, "usage: xctl [--coordinator ADDR] [--keys DIR] [--json] [--timeout S] COMMAND [ARGS]\n\n");
    for (int i = 0; i < N_COMMANDS; i++) {
        char left[80];
        snprintf(left, sizeof left, "%s %s", commands[i].name, commands[i].args);
        if (strlen(left) > 30) fprintf(f, "  %s\n  %-30s %s\n", left, "", commands[i].help);
        else fprintf(f, "  %-30s %s\n", left, commands[i].help);
    }
    fprintf(f, "\n  --coordinator ADDR   the coordinator (default $XCTL_COORDINATOR, else %s)\n"
               "  --keys DIR           CURVE: DIR/client.key, DIR/client.pub, DIR/server.pub\n"
               "  --json               print the reply body as JSON\n"
               "  --timeout S          seconds to wait for a reply (default 10); wait: for the run\n"
               "exit codes: 0 success, 1 failure, 2 usage, 3 timeout or coordinator unreachable\n",
            XCTL_DEFAULT_ADDR);
}

static int usage_error(const command *c, const char *fmt, const char *arg) {
    fprintf(stderr, "xctl%s%s: ", c ? " " : "", c ? c->name : "");
    fprintf(stderr, fmt, arg);
    if (c) fprintf(stderr, "\nusage: xctl %s %s\n", c->name, c->args);
    else fprintf(stderr, "\n(xctl --help lists the commands)\n");
    return XCTL_USAGE;
}

int main(int argc, char **argv) {
    xctl x = {0};
    x.addr = getenv("XCTL_COORDINATOR");
    if (!x.addr || !*x.addr) x.addr = XCTL_DEFAULT_ADDR;
    x.timeout_s = 10;
    x.lines = 50;
    x.interval_s = 1;
    bool follow_long = false;
    const char *coordinator = NULL;
    arg_spec specs[] = {
        {"--coordinator", ARG_STRING, &coordinator, "", false},
        {"--keys", ARG_STRING, &x.keys, "", false},
        {"--json", ARG_FLAG, &x.json, "", false},
        {"--timeout", ARG_DOUBLE, &x.timeout_s, "", false},
        {"--name", ARG_STRING, &x.name, "", false},
        {"-f", ARG_FLAG, &x.follow, "", false},
        {"--follow", ARG_FLAG, &follow_long, "", false},
        {"--lines", ARG_INT, &x.lines, "", false},
        {"--force", ARG_FLAG, &x.force, "", false},
        {"--since", ARG_INT, &x.since, "", false},
        {"--interval", ARG_DOUBLE, &x.interval_s, "", false},
    };
    static const unsigned spec_flag[] = {0, 0, 0, 0, F_NAME, F_FOLLOW, F_FOLLOW, F_LINES, F_FORCE, F_SINCE, F_INTERVAL};
    int n_specs = (int)(sizeof specs / sizeof specs[0]);

    /* positionals out, flags (with their values) to the parser */
    char **flags = calloc((size_t)argc + 1, sizeof *flags);
    const char *pos[16];
    int n_flags = 0, n_pos = 0;
    bool help = false;
    if (!flags) return XCTL_FAIL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help = true;
        } else if (a[0] == '-' && a[1]) {
            flags[n_flags++] = argv[i];
            if (strchr(a, '=')) continue;
            for (int k = 0; k < n_specs; k++)
                if (!strcmp(specs[k].name, a) && specs[k].kind != ARG_FLAG && i + 1 < argc) flags[n_flags++] = argv[++i];
        } else if (n_pos < 16) {
            pos[n_pos++] = a;
        } else {
            free(flags);
            return usage_error(NULL, "too many arguments (at \"%s\")", a);
        }
    }
    const command *cmd = NULL;
    if (n_pos > 0) {
        for (int i = 0; i < N_COMMANDS; i++)
            if (!strcmp(pos[0], commands[i].name)) cmd = &commands[i];
        if (!cmd) {
            const char *best = NULL;
            int best_d = 3;
            for (int i = 0; i < N_COMMANDS; i++) {
                int d = args_edit_distance(pos[0], commands[i].name);
                if (d < best_d) best_d = d, best = commands[i].name;
            }
            free(flags);
            if (best) {
                fprintf(stderr, "xctl: unknown command \"%s\" (did you mean %s?)\n", pos[0], best);
                return XCTL_USAGE;
            }
            return usage_error(NULL, "unknown command \"%s\"", pos[0]);
        }
    }
    if (help) {
        free(flags);
        if (cmd) printf("usage: xctl %s %s\n  %s\n", cmd->name, cmd->args, cmd->help);
        else usage(stdout);
        return XCTL_OK;
    }
    if (!cmd) {
        free(flags);
        usage(stderr);
        return XCTL_USAGE;
    }
    /* a flag of another command is named as such; the rest is parsed against this command's */
    for (int i = 0; i < n_flags; i++)
        for (int k = 0; k < n_specs; k++) {
            size_t n = strcspn(flags[i], "=");
            if (spec_flag[k] && !(cmd->flags & spec_flag[k]) && strlen(specs[k].name) == n &&
                !strncmp(specs[k].name, flags[i], n)) {
                free(flags);
                return usage_error(cmd, "%s does not go with this command", specs[k].name);
            }
        }
    arg_spec allowed[sizeof specs / sizeof specs[0]];
    int n_allowed = 0;
    for (int k = 0; k < n_specs; k++)
        if (!spec_flag[k] || (cmd->flags & spec_flag[k])) allowed[n_allowed++] = specs[k];
    xd_err e = {{0}};
    int rc = args_parse(allowed, n_allowed, n_flags, flags, &e);
    free(flags);
    if (rc < 0) return usage_error(cmd, "%s", e.msg);
    if (cmd->run == xctl_cmd_wait && allowed[3].set) x.timeout_set = true; /* --timeout */
    x.follow = x.follow || follow_long;
    x.command = cmd->name;
    x.n_pos = n_pos - 1;
    for (int i = 1; i < n_pos && i <= XCTL_MAX_POS; i++) x.pos[i - 1] = pos[i];
    if (x.n_pos < cmd->min_pos) return usage_error(cmd, "%s", cmd->min_pos == 1 ? "an argument is missing" : "arguments are missing");
    if (x.n_pos > cmd->max_pos) return usage_error(cmd, "unexpected argument \"%s\"", pos[1 + cmd->max_pos]);
    if (coordinator) x.addr = coordinator;
    if (!(x.timeout_s > 0 && x.timeout_s <= 86400 * 7)) return usage_error(cmd, "%s", "--timeout must be a positive number of seconds");
    if (x.lines < 1 || x.lines > 100000) return usage_error(cmd, "%s", "--lines must be in 1..100000");
    if (x.since < 0) return usage_error(cmd, "%s", "--since must be at least 0");
    if (!(x.interval_s >= 0.05 && x.interval_s <= 3600)) return usage_error(cmd, "%s", "--interval must be in [0.05, 3600] seconds");
    for (int i = 0; i < x.n_pos; i++)
        if (!*x.pos[i]) return usage_error(cmd, "%s", "an empty argument");
    rc = cmd->run(&x);
    fflush(stdout);
    xctl_disconnect(&x);
    return rc;
}
