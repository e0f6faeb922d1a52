/* xworker: the worker daemon of a node (docs/worker.md). It connects to the coordinator, says
 * hello with its devices, heartbeats, runs each assigned attempt as a child `xtrain` process,
 * relays its progress and checkpoints, and reports when it ends. SIGTERM or SIGINT drains it. */
#include "worker.h"
#include "stages/args.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define WORKER_EXIT_LINGER_MS 2000

static const char *usage_line =
    "xworker --coordinator tcp://HOST:PORT --workdir DIR [--name N] [--gpus LIST | --cpu] [--keys DIR]\n"
    "               [--xtrain PATH] [--grace S] [--drain-timeout S] [--poll-ms N] [--heartbeat-ms N]";

static void close_if_open(uv_handle_t *h) {
    if (h->loop && !uv_is_closing(h)) uv_close(h, NULL);
}

void worker_shutdown(worker *w, int code) {
    if (w->exiting) return;
    w->exiting = true;
    w->exit_code = code;
    xd_info("exiting (%d)", code);
    worker_conn_stop_timers(w);
    close_if_open((uv_handle_t *)&w->hb_timer);
    close_if_open((uv_handle_t *)&w->reconnect_timer);
    close_if_open((uv_handle_t *)&w->kick);
    close_if_open((uv_handle_t *)&w->tail_timer);
    close_if_open((uv_handle_t *)&w->sigterm);
    close_if_open((uv_handle_t *)&w->sigint);
    worker_conn_flush_close(w, WORKER_EXIT_LINGER_MS);
}

void worker_attempt_finished(worker *w) {
    if (w->draining && !w->cur) worker_shutdown(w, 0);
}

static void on_signal(uv_signal_t *h, int signum) {
    worker *w = h->data;
    if (w->exiting) return;
    if (w->draining) {
        xd_warn("signal %d again: killing the child now", signum);
        if (w->cur) worker_signal_child(w->cur, SIGKILL);
        else worker_shutdown(w, 0);
        return;
    }
    w->draining = true;
    xd_info("signal %d: draining (taking nothing new)", signum);
    worker_send(w, PROTO_DRAINING, json_pack("{s:s}", "worker", w->name));
    if (!w->cur) {
        worker_shutdown(w, 0);
        return;
    }
    if (w->cur->end == WORKER_END_NONE) {
        xd_info("stopping attempt %s: SIGTERM, SIGKILL after %g s; it resumes from its newest checkpoint elsewhere",
                w->cur->id, w->drain_timeout_s);
        worker_stop_child(w->cur, WORKER_END_DRAIN, w->drain_timeout_s);
    }
}

static void on_tail(uv_timer_t *t) {
    worker *w = t->data;
    worker_attempt *a = w->cur;
    if (a && a->spawned && !a->exited && a->end != WORKER_END_FENCE) worker_tail_poll(a);
}

/* The xtrain beside this executable (installed side by side, or the build tree), else PATH's. */
static void default_xtrain(char *out, size_t cap) {
    char self[WORKER_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    snprintf(out, cap, "xtrain");
    if (n <= 0) return;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return;
    *slash = 0;
    const char *rel[] = {"/xtrain", "/../stages/xtrain"};
    for (size_t i = 0; i < 2; i++) {
        char p[WORKER_PATH_MAX + 32];
        snprintf(p, sizeof p, "%s%s", self, rel[i]);
        char *real = realpath(p, NULL);
        if (real && access(real, X_OK) == 0) {
            snprintf(out, cap, "%s", real);
            free(real);
            return;
        }
        free(real);
    }
}

static int mkdir_p(const char *path) {
    char p[WORKER_PATH_MAX];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return -1;
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        *c = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int setup(worker *w, int argc, char **argv) {
    const char *coordinator = NULL, *workdir = NULL, *name = NULL, *gpus = NULL, *keys = NULL, *xtrain = NULL;
    bool cpu = false;
    double grace = 10, drain_timeout = 60;
    int poll_ms = 500, heartbeat_ms = 1000;
    arg_spec specs[] = {
        {"--coordinator", ARG_STRING, &coordinator, "the coordinator's address, e.g. tcp://10.0.0.1:7070", false},
        {"--workdir", ARG_STRING, &workdir, "this worker's directory: attempts/ATTEMPT/{config.yaml,log.txt}", false},
        {"--name", ARG_STRING, &name, "the worker's name and socket identity (default HOSTNAME-PID)", false},
        {"--gpus", ARG_STRING, &gpus, "CUDA devices to offer, e.g. 0,1", false},
        {"--cpu", ARG_FLAG, &cpu, "offer the CPU (the default without --gpus)", false},
        {"--keys", ARG_STRING, &keys, "CURVE: DIR/worker.key, DIR/worker.pub, DIR/server.pub", false},
        {"--xtrain", ARG_STRING, &xtrain, "the xtrain executable (default: beside xworker, else PATH)", false},
        {"--grace", ARG_DOUBLE, &grace, "seconds from SIGTERM to SIGKILL on cancel (default 10)", false},
        {"--drain-timeout", ARG_DOUBLE, &drain_timeout, "seconds a drain waits for the child (default 60)", false},
        {"--poll-ms", ARG_INT, &poll_ms, "how often the child's metrics and checkpoints are read (default 500)", false},
        {"--heartbeat-ms", ARG_INT, &heartbeat_ms, "heartbeat period until the welcome sets it (default 1000)", false},
    };
    int n_specs = (int)(sizeof specs / sizeof specs[0]);
    xd_err e = {{0}};
    int rc = args_parse(specs, n_specs, argc, argv, &e);
    if (rc) {
        if (rc < 0) fprintf(stderr, "xworker: %s\n", e.msg);
        args_usage(usage_line, specs, n_specs);
        return rc < 0 ? 2 : -1;
    }
    const char *bad = !coordinator ? "--coordinator is required"
                    : !workdir ? "--workdir is required"
                    : gpus && cpu ? "--gpus and --cpu exclude each other"
                    : !(grace >= 0 && grace <= 3600) ? "--grace must be in [0, 3600]"
                    : !(drain_timeout >= 0 && drain_timeout <= 86400) ? "--drain-timeout must be in [0, 86400]"
                    : poll_ms < 10 || poll_ms > 60000 ? "--poll-ms must be in [10, 60000]"
                    : heartbeat_ms < 50 || heartbeat_ms > 600000 ? "--heartbeat-ms must be in [50, 600000]"
                    : strlen(coordinator) >= sizeof w->coordinator ? "--coordinator is too long"
                    : name && (!*name || strlen(name) >= sizeof w->name) ? "--name must have 1 to 128 characters"
                    : NULL;
    if (bad) {
        fprintf(stderr, "xworker: %s\n", bad);
        args_usage(usage_line, specs, n_specs);
        return 2;
    }
    snprintf(w->coordinator, sizeof w->coordinator, "%s", coordinator);
    if (mkdir_p(workdir) != 0) {
        fprintf(stderr, "xworker: %s: cannot create: %s\n", workdir, strerror(errno));
        return 1;
    }
    char *real = realpath(workdir, NULL);
    if (!real || strlen(real) >= sizeof w->workdir - 300) {
        fprintf(stderr, "xworker: %s: %s\n", workdir, real ? "path too long" : strerror(errno));
        free(real);
        return 1;
    }
    snprintf(w->workdir, sizeof w->workdir, "%s", real);
    free(real);
    if (name) {
        for (const char *c = name; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || strchr("._:@-", *c))) {
                fprintf(stderr, "xworker: --name \"%s\": letters, digits and ._:@- only\n", name);
                return 2;
            }
        snprintf(w->name, sizeof w->name, "%s", name);
    } else {
        char host[64] = "worker";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = 0;
        snprintf(w->name, sizeof w->name, "%s-%d", host, (int)getpid());
    }
    if (keys) snprintf(w->keys, sizeof w->keys, "%s", keys);
    if (xtrain && strchr(xtrain, '/')) {
        char *rx = realpath(xtrain, NULL);
        if (!rx || access(rx, X_OK) != 0) {
            fprintf(stderr, "xworker: --xtrain %s: not an executable file\n", xtrain);
            free(rx);
            return 1;
        }
        snprintf(w->xtrain, sizeof w->xtrain, "%s", rx);
        free(rx);
    } else if (xtrain) {
        snprintf(w->xtrain, sizeof w->xtrain, "%s", xtrain);
    } else {
        default_xtrain(w->xtrain, sizeof w->xtrain);
    }
    if (gpus) {
        if (worker_devices_gpus(w, gpus, &e)) {
            fprintf(stderr, "xworker: %s\n", e.msg);
            return 2;
        }
    } else {
        worker_devices_cpu(w);
    }
    w->grace_s = grace;
    w->drain_timeout_s = drain_timeout;
    w->poll_ms = poll_ms;
    w->heartbeat_ms = heartbeat_ms;
    return 0;
}

int main(int argc, char **argv) {
    static worker wk;
    worker *w = &wk;
    int rc = setup(w, argc - 1, argv + 1);
    if (rc) return rc < 0 ? 0 : rc; /* -1: --help */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "xworker: cannot start the event loop\n");
        return 1;
    }
    w->loop = &loop;
    w->zctx = zmq_ctx_new();
    if (!w->zctx) {
        fprintf(stderr, "xworker: zmq_ctx_new: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    worker_reap_orphans(w);
    xd_info("xworker %s: workdir %s, xtrain %s, %d device(s): %s%s", w->name, w->workdir, w->xtrain,
            w->n_devices, w->devices[0].name, w->n_devices > 1 ? ", ..." : "");
    worker_conn_start_timers(w);
    uv_timer_init(&loop, &w->tail_timer);
    w->tail_timer.data = w;
    uv_timer_start(&w->tail_timer, on_tail, (uint64_t)w->poll_ms, (uint64_t)w->poll_ms);
    uv_signal_init(&loop, &w->sigterm);
    uv_signal_init(&loop, &w->sigint);
    w->sigterm.data = w->sigint.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    xd_err e = {{0}};
    if (worker_conn_open(w, &e)) {
        fprintf(stderr, "xworker: %s\n", e.msg);
        worker_shutdown(w, 1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    zmq_ctx_term(w->zctx); /* waits up to the exit linger for the last messages */
    for (int i = 0; i < w->n_pending; i++) json_decref(w->pending[i].fields);
    uv_loop_close(&loop);
    return w->exit_code;
}
