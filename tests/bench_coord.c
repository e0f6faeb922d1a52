/* tests/bench_coord.c — a benchmark of xcoord, not a test: many simulated workers in one process
 * (one DEALER socket each, the real protocol over loopback) against a real xcoord child.
 *
 *   bench_coord XCOORD WORKERS [--runs R] [--heartbeat-ms H] [--seconds S]
 *
 * Phase 1 (S seconds): every worker heartbeats every H ms; reports the heartbeats/s the
 * coordinator handled (its own counter) and its CPU time (/proc/PID/stat).
 * Phase 2: R runs of a one-domain spec (init → align → distill → merge → eval, 5 tiny jobs each)
 * are submitted at once; workers accept and report done as soon as an assign arrives. Dispatch
 * latency per job: for a root job, from sending the submit to receiving its assign; for a
 * dependent job, from sending the done of the job it waits on to receiving its assign (the
 * coordinator commits the done, promotes the job, commits the dispatch, then sends).
 * At the end the child is stopped and getrusage(RUSAGE_CHILDREN) gives its total CPU. */
#define _XOPEN_SOURCE 700
#include "proto/proto.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double child_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) == 2)
        return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

static int send_msg_flags(void *sock, proto_type t, json_t *fields, int flags) {
    void *buf;
    size_t len;
    xd_err e = {{0}};
    int rc = proto_encode(t, fields, &buf, &len, &e);
    json_decref(fields);
    if (rc) {
        fprintf(stderr, "bench: encode %s: %s\n", proto_type_name(t), e.msg);
        return -1;
    }
    rc = zmq_send(sock, buf, len, flags) < 0 ? -1 : 0;
    free(buf);
    return rc;
}

static int send_msg(void *sock, proto_type t, json_t *fields) { return send_msg_flags(sock, t, fields, ZMQ_DONTWAIT); }

static int recv_msg(void *sock, proto_type *t, json_t **fields) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 0;
    }
    xd_err e = {{0}};
    int rc = proto_decode(zmq_msg_data(&m), zmq_msg_size(&m), t, fields, &e) ? -1 : 1;
    zmq_msg_close(&m);
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    if (n == 0) return 0;
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

typedef struct bench bench;
typedef struct run_times {
    double submit_sent;
    double done_sent[5]; /* init, align, distill, merge, eval */
} run_times;

static int stage_index(const char *name) {
    static const char *names[] = {"init", "align", "distill-x", "merge", "eval"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

/* What the simulated workers share. */
struct bench {
    void **socks;
    zmq_pollitem_t *items;
    double *next_hb;
    int n, hb_ms, runs;
    run_times *rt;
    double *lat_root, *lat_dep;
    int n_root, n_dep, done_eval, replies;
};

static void heartbeats_due(bench *b) {
    double t = now_s();
    char name[32];
    for (int i = 0; i < b->n; i++) {
        if (t < b->next_hb[i]) continue;
        snprintf(name, sizeof name, "bw-%04d", i);
        send_msg(b->socks[i], PROTO_HEARTBEAT, json_pack("{s:s, s:[]}", "worker", name, "running"));
        b->next_hb[i] += b->hb_ms / 1000.0;
    }
}

/* Workers heartbeat, accept and finish every assign at once, until `until_eval` runs are done. */
static void serve(bench *b, int until_eval, double deadline) {
    while (b->done_eval < until_eval && now_s() < deadline) {
        heartbeats_due(b);
        zmq_poll(b->items, b->n + 1, 2);
        for (int i = 0; i <= b->n; i++) {
            proto_type pt;
            json_t *f;
            while (b->items[i].revents & ZMQ_POLLIN && recv_msg(b->socks[i], &pt, &f) > 0) {
                double got = now_s();
                if (pt == PROTO_REPLY) b->replies++;
                if (pt == PROTO_ASSIGN) {
                    const char *attempt = json_string_value(json_object_get(f, "attempt"));
                    const char *job = json_string_value(json_object_get(f, "job"));
                    json_int_t epoch = json_integer_value(json_object_get(f, "epoch"));
                    int r = atoi(job + 4); /* run-N-xxxx/NAME */
                    const char *slash = strchr(job, '/');
                    int k = slash ? stage_index(slash + 1) : -1;
                    bool mine = r >= 1 && r <= b->runs && k >= 0;
                    if (mine && k == 0) b->lat_root[b->n_root++] = got - b->rt[r].submit_sent;
                    else if (mine && b->rt[r].done_sent[k - 1] > 0) b->lat_dep[b->n_dep++] = got - b->rt[r].done_sent[k - 1];
                    send_msg(b->socks[i], PROTO_ACCEPT, json_pack("{s:s, s:I}", "attempt", attempt, "epoch", epoch));
                    send_msg(b->socks[i], PROTO_DONE, json_pack("{s:s, s:I, s:b, s:i, s:s, s:s}", "attempt", attempt, "epoch",
                                                                epoch, "ok", 1, "exit_code", 0, "error", "", "output", "/tmp/x"));
                    if (mine) {
                        b->rt[r].done_sent[k] = now_s();
                        if (k == 4) b->done_eval++;
                    }
                }
                json_decref(f);
            }
        }
    }
}

/* The coordinator's counters through a workers request. */
static json_t *coord_stats(void *client) {
    send_msg(client, PROTO_WORKERS, json_object());
    zmq_pollitem_t it = {client, 0, ZMQ_POLLIN, 0};
    double end = now_s() + 10;
    while (now_s() < end) {
        zmq_poll(&it, 1, 100);
        proto_type t;
        json_t *f;
        if (recv_msg(client, &t, &f) > 0) {
            json_t *body = json_incref(json_object_get(f, "body"));
            json_decref(f);
            return body;
        }
    }
    return NULL;
}

static long stat_of(json_t *body, const char *key) {
    return (long)json_integer_value(json_object_get(json_object_get(body, "coordinator"), key));
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_coord XCOORD WORKERS [--runs R] [--heartbeat-ms H] [--seconds S]\n");
        return 2;
    }
    const char *xcoord = argv[1];
    int n = atoi(argv[2]), runs = 200, hb_ms = 1000, seconds = 10;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--heartbeat-ms")) hb_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) seconds = atoi(argv[i + 1]);
    }
    if (n < 1 || n > 5000 || runs < 1) return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char dir[] = "/tmp/bench_coord.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    /* a free loopback port */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &al);
    int port = ntohs(a.sin_port);
    close(s);
    char ep[64], db[300], art[300], hb[32], lease[32], logpath[300];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    snprintf(db, sizeof db, "%s/coord.db", dir);
    snprintf(art, sizeof art, "%s/art", dir);
    snprintf(logpath, sizeof logpath, "%s/xcoord.log", dir);
    snprintf(hb, sizeof hb, "%d", hb_ms);
    snprintf(lease, sizeof lease, "%d", hb_ms * 10 > 5000 ? hb_ms * 10 : 5000);
    mkdir(art, 0755);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *log = freopen(logpath, "w", stderr);
        (void)log;
        execl(xcoord, xcoord, "--listen", ep, "--db", db, "--artifacts", art, "--heartbeat-ms", hb, "--lease-ms", lease,
              (char *)NULL);
        _exit(127);
    }
    nanosleep(&(struct timespec){0, 300000000}, NULL);

    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, n + 16);
    void **socks = calloc((size_t)n + 1, sizeof *socks);
    zmq_pollitem_t *items = calloc((size_t)n + 1, sizeof *items);
    double *next_hb = calloc((size_t)n, sizeof *next_hb);
    int64_t max = PROTO_MAX_MESSAGE;
    int zero = 0;
    double t0 = now_s();
    for (int i = 0; i <= n; i++) {
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(socks[i], ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(socks[i], ZMQ_MAXMSGSIZE, &max, sizeof max);
        if (zmq_connect(socks[i], ep)) {
            fprintf(stderr, "bench: connect %d: %s\n", i, zmq_strerror(zmq_errno()));
            return 1;
        }
        items[i] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
    }
    void *client = socks[n];
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "bw-%04d", i);
        json_t *dev = json_pack("[{s:s, s:i, s:s, s:i}]", "kind", "cpu", "index", 0, "name", "cpu", "memory_mb", 1024);
        send_msg(socks[i], PROTO_HELLO, json_pack("{s:s, s:i, s:o, s:[]}", "worker", name, "pid", (int)getpid(), "devices", dev, "running"));
        next_hb[i] = t0 + (double)hb_ms / 1000.0 * i / n; /* staggered */
    }
    /* every welcome */
    int welcomed = 0;
    while (welcomed < n && now_s() - t0 < 60) {
        zmq_poll(items, n, 100);
        for (int i = 0; i < n; i++) {
            proto_type t;
            json_t *f;
            while (items[i].revents & ZMQ_POLLIN && recv_msg(socks[i], &t, &f) > 0) {
                if (t == PROTO_WELCOME) welcomed++;
                json_decref(f);
            }
        }
    }
    printf("workers %d connected and welcomed in %.2f s\n", welcomed, now_s() - t0);

    /* phase 1: heartbeats only */
    const char *spec = "teacher: /models/teacher.gguf\ndomains: [{name: x, data: /data/x}]\n";
    const int quiet_runs = 20; /* phase 3 */
    run_times *rt = calloc((size_t)(runs + quiet_runs) + 1, sizeof *rt);
    double *lat_root = calloc((size_t)(runs + quiet_runs), sizeof(double));
    double *lat_dep = calloc((size_t)(runs + quiet_runs) * 4, sizeof(double));
    bench b = {socks, items, next_hb, n, hb_ms, runs + quiet_runs, rt, lat_root, lat_dep, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) next_hb[i] = now_s() + (double)hb_ms / 1000.0 * i / n; /* no backlog */
    json_t *before = coord_stats(client);
    double cpu0 = child_cpu_s(pid), w0 = now_s();
    while (now_s() - w0 < seconds) {
        heartbeats_due(&b);
        zmq_poll(items, n, 2);
        for (int i = 0; i < n; i++) {
            proto_type pt;
            json_t *f;
            while (items[i].revents & ZMQ_POLLIN && recv_msg(socks[i], &pt, &f) > 0) json_decref(f);
        }
    }
    double cpu1 = child_cpu_s(pid), w1 = now_s();
    json_t *after = coord_stats(client);
    long hbs = stat_of(after, "heartbeats") - stat_of(before, "heartbeats");
    printf("phase 1: %d workers heartbeating every %d ms for %.1f s: %.0f heartbeats/s handled (%.0f offered), "
           "coordinator CPU %.1f%% of a core\n",
           n, hb_ms, w1 - w0, hbs / (w1 - w0), n * 1000.0 / hb_ms, 100 * (cpu1 - cpu0) / (w1 - w0));
    json_decref(before);
    json_decref(after);

    /* phase 2: R tiny runs at once */
    int n_root = 0, n_dep = 0, done_eval = 0, replies = 0;
    double p0 = now_s(), cpu2 = child_cpu_s(pid);
    for (int r = 1; r <= runs; r++) {
        rt[r].submit_sent = now_s();
        send_msg_flags(client, PROTO_SUBMIT, json_pack("{s:s}", "spec", spec), 0); /* blocks at the HWM */
    }
    serve(&b, runs, p0 + 300);
    done_eval = b.done_eval, replies = b.replies, n_root = b.n_root, n_dep = b.n_dep;
    double p1 = now_s(), cpu3 = child_cpu_s(pid);
    qsort(lat_root, (size_t)n_root, sizeof(double), cmp_double);
    qsort(lat_dep, (size_t)n_dep, sizeof(double), cmp_double);
    printf("phase 2: %d runs x 5 jobs on %d workers in %.2f s (%.0f jobs/s), %d submit replies; coordinator CPU %.1f%% of a core\n",
           runs, n, p1 - p0, done_eval * 5 / (p1 - p0), replies, 100 * (cpu3 - cpu2) / (p1 - p0));
    printf("  dispatch latency, dependent job (upstream done sent -> assign received): p50 %.2f ms, p99 %.2f ms (%d jobs)\n",
           1e3 * pct(lat_dep, n_dep, 0.5), 1e3 * pct(lat_dep, n_dep, 0.99), n_dep);
    printf("  dispatch latency, root job (submit sent -> assign received, %d submits queued at once): p50 %.1f ms, p99 %.1f ms\n",
           runs, 1e3 * pct(lat_root, n_root, 0.5), 1e3 * pct(lat_root, n_root, 0.99));

    /* phase 3: one run at a time, nothing else happening */
    int first_dep = n_dep, first_root = n_root;
    double *quiet_dep = lat_dep + n_dep, *quiet_root = lat_root + n_root;
    for (int r = runs + 1; r <= runs + quiet_runs; r++) {
        rt[r].submit_sent = now_s();
        send_msg_flags(client, PROTO_SUBMIT, json_pack("{s:s}", "spec", spec), 0);
        serve(&b, r, now_s() + 30);
    }
    int qd = b.n_dep - first_dep, qr = b.n_root - first_root;
    qsort(quiet_dep, (size_t)qd, sizeof(double), cmp_double);
    qsort(quiet_root, (size_t)qr, sizeof(double), cmp_double);
    printf("phase 3: %d runs one at a time: dependent job p50 %.2f ms, p99 %.2f ms; root job (submit -> assign) p50 %.2f ms, p99 %.2f ms\n",
           quiet_runs, 1e3 * pct(quiet_dep, qd, 0.5), 1e3 * pct(quiet_dep, qd, 0.99), 1e3 * pct(quiet_root, qr, 0.5),
           1e3 * pct(quiet_root, qr, 0.99));
    json_t *end = coord_stats(client);
    printf("  coordinator: %ld commits, %ld messages, %ld rejected, %ld send failures\n", stat_of(end, "commits"),
           stat_of(end, "messages"), stat_of(end, "rejected"), stat_of(end, "send_failures"));
    json_decref(end);
    for (int i = 0; i <= n; i++) zmq_close(socks[i]);
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    double total = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    printf("xcoord: exit %d, total CPU %.2f s (getrusage of the child) over %.1f s\n",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1, total, now_s() - t0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    free(socks), free(items), free(next_hb), free(rt), free(lat_root), free(lat_dep);
    return 0;
}
