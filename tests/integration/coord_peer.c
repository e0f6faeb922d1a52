/* tests/integration/coord_peer.c — a test peer of xcoord that speaks the real protocol (proto/)
 * over a real DEALER (or REQ) socket. It is a fake worker or a client; the coordinator is real.
 *
 *   coord_peer [--connect EP] [--timeout-ms N] [--curve-server FILE.pub --curve-key BASE] MODE ...
 *
 *   request TYPE [FIELDS_JSON] [--file KEY=PATH]... [--req]
 *       one client request; prints the reply's fields as JSON. Exit 0 reply ok, 1 reply not ok,
 *       2 an error message came back, 3 no answer within the timeout.
 *   worker --name N [--gpus K] [--job-ms MS] [--progress-ms MS] [--fail SUBSTR] [--silent-on SUBSTR
 *          --silent-ms MS] [--save-configs DIR] [--max-seconds S] [--rich 1]
 *       a fake xworker: hello, heartbeats at the coordinator's rate, accept, progress, a checkpoint,
 *       done (ok, or failed for jobs whose id contains --fail). --silent-on: after accepting such
 *       a job (the first time) it goes silent for --silent-ms (no heartbeat, no progress), then
 *       lists the attempt in a heartbeat and sends its late done. Re-sends hello whenever its
 *       connection comes back (a restarted coordinator), after reading every message already
 *       received (so the hello lists an assign that arrived just before) and sending its last
 *       dones again (one may have died with the old connection). Logs on stdout:
 *       welcome, assign ATTEMPT EPOCH JOB STAGE gpus=LIST, done ATTEMPT EPOCH ok|fail, fence ATTEMPT EPOCH,
 *       cancel ATTEMPT EPOCH, drain, error CODE MESSAGE, silent ATTEMPT, late-done ATTEMPT EPOCH,
 *       badconfig JOB WHY. Runs until SIGTERM or --max-seconds. --rich 1: progress lines shaped like
 *       xtrain's metrics.jsonl (align: mse_layer per layer; distill and final: ce, kl; all: tokens,
 *       tokens_per_s, grad_norm), and a succeeded eval job writes a small report JSON to its
 *       config's out (for the dashboard tests).
 *   send-raw garbage|oversize|wrong-version|bad-field|two-frames|wrong-way [--count N]
 *       a malformed message (N times); waits for an answer to each, prints the first. Exit 2 when
 *       errors came back (to all N), 3 when nothing did, 4 when some answers were missing.
 *   keygen DIR NAME      writes DIR/NAME.key (0600) and DIR/NAME.pub, Z85. */
#define _XOPEN_SOURCE 700
#include "proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>
#include <zmq.h>

static volatile sig_atomic_t stop;
static void on_signal(int s) { stop = s; }

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void say(const char *fmt, ...) XD_PRINTF(1, 2);
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int die(const char *fmt, const char *arg) {
    fprintf(stderr, "coord_peer: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 4;
}

typedef struct peer {
    void *ctx, *sock;
    const char *endpoint, *server_pub, *key_base;
    int timeout_ms;
    bool req;
    void *monitor; /* PAIR reading the socket monitor (worker mode) */
} peer;

static int read_z85(const char *path, char out[41]) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = fscanf(f, "%40s", out);
    fclose(f);
    return n == 1 && strlen(out) == 40 ? 0 : -1;
}

/* monitor_ep (may be NULL): a socket monitor reporting connections, attached before connecting so
 * no connection goes unseen. */
static int peer_open_monitored(peer *p, const char *identity, const char *monitor_ep) {
    p->ctx = zmq_ctx_new();
    p->sock = zmq_socket(p->ctx, p->req ? ZMQ_REQ : ZMQ_DEALER);
    int zero = 0;
    int64_t max = PROTO_MAX_MESSAGE;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->sock, ZMQ_MAXMSGSIZE, &max, sizeof max);
    /* a DEALER with no peer blocks in send: when the CURVE handshake is refused (an unlisted key),
       the pipe goes away and the send would wait forever; give up as a receive does */
    zmq_setsockopt(p->sock, ZMQ_SNDTIMEO, &p->timeout_ms, sizeof p->timeout_ms);
    if (identity) zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, identity, strlen(identity));
    if (p->server_pub) {
        char server[41], pub[41], secret[41], path[4200];
        snprintf(path, sizeof path, "%s.pub", p->key_base ? p->key_base : "");
        if (read_z85(p->server_pub, server) || !p->key_base || read_z85(path, pub)) return die("cannot read the CURVE keys (%s)", p->server_pub);
        snprintf(path, sizeof path, "%s.key", p->key_base);
        if (read_z85(path, secret)) return die("cannot read %s", path);
        zmq_setsockopt(p->sock, ZMQ_CURVE_SERVERKEY, server, 40);
        zmq_setsockopt(p->sock, ZMQ_CURVE_PUBLICKEY, pub, 40);
        zmq_setsockopt(p->sock, ZMQ_CURVE_SECRETKEY, secret, 40);
    }
    if (monitor_ep) { /* its reader connects before the socket does: an event with no reader is lost */
        if (zmq_socket_monitor(p->sock, monitor_ep, ZMQ_EVENT_CONNECTED)) return die("cannot monitor %s", monitor_ep);
        p->monitor = zmq_socket(p->ctx, ZMQ_PAIR);
        if (!p->monitor || zmq_connect(p->monitor, monitor_ep)) return die("cannot read %s", monitor_ep);
    }
    if (zmq_connect(p->sock, p->endpoint)) return die("cannot connect to %s", p->endpoint);
    return 0;
}

static int peer_open(peer *p, const char *identity) { return peer_open_monitored(p, identity, NULL); }

static void peer_close(peer *p) {
    if (p->monitor) {
        zmq_socket_monitor(p->sock, NULL, 0);
        zmq_close(p->monitor);
    }
    if (p->sock) zmq_close(p->sock);
    if (p->ctx) zmq_ctx_term(p->ctx);
}

static int send_raw(peer *p, const void *data, size_t len) { return zmq_send(p->sock, data, len, 0) < 0 ? -1 : 0; }

static int send_msg(peer *p, proto_type t, json_t *fields) {
    void *buf;
    size_t len;
    xd_err e = {{0}};
    int rc = proto_encode(t, fields, &buf, &len, &e);
    json_decref(fields);
    if (rc) {
        fprintf(stderr, "coord_peer: encode %s: %s\n", proto_type_name(t), e.msg);
        return -1;
    }
    rc = send_raw(p, buf, len);
    free(buf);
    return rc;
}

/* Receives one message within timeout_ms: 1 with *t and *fields, 0 on timeout, -1 undecodable. */
static int recv_msg(peer *p, int timeout_ms, proto_type *t, json_t **fields) {
    zmq_pollitem_t item = {p->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0 || !(item.revents & ZMQ_POLLIN)) return 0;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, p->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 0;
    }
    xd_err e = {{0}};
    int rc = proto_decode(zmq_msg_data(&m), zmq_msg_size(&m), t, fields, &e) ? -1 : 1;
    if (rc < 0) fprintf(stderr, "coord_peer: undecodable message: %s\n", e.msg);
    zmq_msg_close(&m);
    return rc;
}

/* ---- request ---- */

static int answer_exit(proto_type t, json_t *f) {
    char *text = json_dumps(f, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", text ? text : "{}");
    free(text);
    if (t == PROTO_ERROR) return 2;
    return t == PROTO_REPLY && json_is_true(json_object_get(f, "ok")) ? 0 : 1;
}

static int cmd_request(peer *p, int argc, char **argv) {
    if (argc < 1) return die("request needs a TYPE%s", "");
    proto_type type = PROTO_TYPE_COUNT;
    for (int t = 0; t < PROTO_TYPE_COUNT; t++)
        if (!strcmp(proto_type_name((proto_type)t), argv[0])) type = (proto_type)t;
    if (type == PROTO_TYPE_COUNT) return die("unknown type %s", argv[0]);
    json_t *fields = json_object();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--file") && i + 1 < argc) {
            char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq) return die("--file KEY=PATH, got %s", kv);
            *eq = 0;
            FILE *f = fopen(eq + 1, "rb");
            if (!f) return die("cannot read %s", eq + 1);
            char *text = malloc(PROTO_MAX_STRING + 1);
            size_t n = fread(text, 1, PROTO_MAX_STRING, f);
            fclose(f);
            text[n] = 0;
            json_object_set_new(fields, kv, json_string(text));
            free(text);
        } else if (!strcmp(argv[i], "--req")) {
            p->req = true;
        } else {
            json_error_t je;
            json_t *extra = json_loads(argv[i], 0, &je);
            if (!extra) return die("bad JSON: %s", je.text);
            json_object_update(fields, extra);
            json_decref(extra);
        }
    }
    if (peer_open(p, NULL)) return 4;
    if (send_msg(p, type, fields)) {
        if (zmq_errno() != EAGAIN) return 4;
        fprintf(stderr, "coord_peer: could not send within %d ms (no connection took it)\n", p->timeout_ms);
        return 3;
    }
    proto_type t;
    json_t *f;
    int rc = recv_msg(p, p->timeout_ms, &t, &f);
    if (rc == 0) {
        fprintf(stderr, "coord_peer: no answer within %d ms\n", p->timeout_ms);
        return 3;
    }
    if (rc < 0) return 4;
    rc = answer_exit(t, f);
    json_decref(f);
    return rc;
}

/* ---- send-raw ---- */

static int cmd_send_raw(peer *p, int argc, char **argv) {
    if (argc < 1) return die("send-raw needs a kind%s", "");
    int count = 1;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--count")) count = atoi(argv[i + 1]);
    if (peer_open(p, NULL)) return 4;
    const char *kind = argv[0];
    /* {"v": 2, "t": "workers"} and {"v": 1, "t": "query", "bogus": 1}, packed by hand */
    static const uint8_t wrong_version[] = {0x82, 0xa1, 'v', 0x02, 0xa1, 't', 0xa7, 'w', 'o', 'r', 'k', 'e', 'r', 's'};
    static const uint8_t bad_field[] = {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0xa5, 'q', 'u', 'e', 'r', 'y',
                                        0xa5, 'b', 'o', 'g', 'u', 's', 0x01};
    for (int i = 0; i < count; i++) {
        int rc = 0;
        if (!strcmp(kind, "garbage")) {
            rc = send_raw(p, "\xc1\xff not msgpack at all", 21);
        } else if (!strcmp(kind, "oversize")) {
            size_t n = PROTO_MAX_MESSAGE + 1;
            char *big = calloc(1, n);
            rc = big ? send_raw(p, big, n) : -1;
            free(big);
        } else if (!strcmp(kind, "wrong-version")) {
            rc = send_raw(p, wrong_version, sizeof wrong_version);
        } else if (!strcmp(kind, "bad-field")) {
            rc = send_raw(p, bad_field, sizeof bad_field);
        } else if (!strcmp(kind, "two-frames")) {
            zmq_send(p->sock, "a", 1, ZMQ_SNDMORE);
            rc = send_raw(p, "b", 1);
        } else if (!strcmp(kind, "wrong-way")) {
            rc = send_msg(p, PROTO_DRAIN, json_object());
        } else {
            return die("unknown send-raw kind %s", kind);
        }
        if (rc) return die("send failed (%s)", kind);
    }
    /* every message is answered: wait for all of them (closing earlier would drop the unsent) */
    proto_type t, first_t = PROTO_TYPE_COUNT;
    json_t *f, *first = NULL;
    int answers = 0;
    while (answers < count && recv_msg(p, p->timeout_ms, &t, &f) > 0) {
        if (!first) first = f, first_t = t;
        else json_decref(f);
        answers++;
    }
    if (!first) {
        fprintf(stderr, "coord_peer: no answer within %d ms\n", p->timeout_ms);
        return 3;
    }
    if (count > 1) fprintf(stderr, "coord_peer: %d answers to %d messages\n", answers, count);
    int rc = answers == count ? answer_exit(first_t, first) : 4;
    json_decref(first);
    return rc;
}

/* ---- worker ---- */

typedef struct job {
    char attempt[300], job[300], workdir[4200], stage[64], out[4200];
    int64_t epoch;
    uint64_t next_progress, end;
    int step, total;
    bool fail, used;
} job;

#define KEEP_DONE 8

typedef struct worker {
    peer *p;
    json_t *recent_done[KEEP_DONE]; /* the last dones: sent again after a reconnect */
    int n_done;
    const char *name, *fail, *silent_on, *save_configs;
    int gpus, job_ms, progress_ms, silent_ms, heartbeat_ms;
    bool rich;
    job jobs[4];
    uint64_t next_heartbeat, silent_until;
    bool silenced_once, draining;
    int silent_slot;
} worker;

static json_t *running_json(worker *w) {
    json_t *a = json_array();
    for (int i = 0; i < 4; i++)
        if (w->jobs[i].used) json_array_append_new(a, json_pack("{s:s, s:I}", "attempt", w->jobs[i].attempt, "epoch", (json_int_t)w->jobs[i].epoch));
    return a;
}

static void send_hello(worker *w) {
    json_t *devices = json_array();
    json_array_append_new(devices, json_pack("{s:s, s:i, s:s, s:i}", "kind", "cpu", "index", 0, "name", "fake cpu", "memory_mb", 1024));
    for (int g = 0; g < w->gpus; g++)
        json_array_append_new(devices, json_pack("{s:s, s:i, s:s, s:i}", "kind", "cuda", "index", g, "name", "fake gpu", "memory_mb", 81920));
    send_msg(w->p, PROTO_HELLO, json_pack("{s:s, s:i, s:o, s:o}", "worker", w->name, "pid", (int)getpid(), "devices", devices, "running", running_json(w)));
}

/* The config must be YAML whose out is the workdir (eval: the report inside it); out_path gets
 * its out. */
static void check_config(worker *w, const char *jobid, const char *workdir, const char *config, char *out_path, size_t cap) {
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)config, strlen(config));
    const char *why = NULL;
    char out[4200] = "";
    if (!yaml_parser_load(&parser, &doc)) {
        why = "not YAML";
    } else {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root || root->type != YAML_MAPPING_NODE) why = "not a mapping";
        for (yaml_node_pair_t *q = root && !why ? root->data.mapping.pairs.start : NULL; q && q < root->data.mapping.pairs.top; q++) {
            yaml_node_t *k = yaml_document_get_node(&doc, q->key), *v = yaml_document_get_node(&doc, q->value);
            if (k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, "out") && v->type == YAML_SCALAR_NODE)
                snprintf(out, sizeof out, "%s", (char *)v->data.scalar.value);
        }
        yaml_document_delete(&doc);
        char report[4300];
        snprintf(report, sizeof report, "%s/report.json", workdir);
        if (!why && strcmp(out, workdir) && strcmp(out, report)) why = "out is not the workdir";
    }
    yaml_parser_delete(&parser);
    snprintf(out_path, cap, "%s", out);
    if (why) say("badconfig %s %s (out %s, workdir %s)", jobid, why, out, workdir);
    if (w->save_configs) {
        char path[4600], name[300];
        snprintf(name, sizeof name, "%s", jobid);
        for (char *s = name; *s; s++)
            if (*s == '/') *s = '_';
        snprintf(path, sizeof path, "%s/%s.yaml", w->save_configs, name);
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(config, f);
            fclose(f);
        }
    }
}

static void on_assign(worker *w, json_t *f) {
    int slot = -1;
    for (int i = 0; i < 4; i++)
        if (!w->jobs[i].used) slot = i;
    const char *attempt = json_string_value(json_object_get(f, "attempt"));
    const char *jobid = json_string_value(json_object_get(f, "job"));
    const char *workdir = json_string_value(json_object_get(f, "workdir"));
    int64_t epoch = json_integer_value(json_object_get(f, "epoch"));
    char gpus[256] = "";
    size_t gi;
    json_t *g;
    json_array_foreach(json_object_get(f, "gpus"), gi, g)
        snprintf(gpus + strlen(gpus), sizeof gpus - strlen(gpus), "%s%lld", gi ? "," : "", (long long)json_integer_value(g));
    say("assign %s %lld %s %s gpus=%s", attempt, (long long)epoch, jobid, json_string_value(json_object_get(f, "stage")), gpus);
    char out[4200];
    check_config(w, jobid, workdir, json_string_value(json_object_get(f, "config")), out, sizeof out);
    if (slot < 0) return;
    job *j = &w->jobs[slot];
    memset(j, 0, sizeof *j);
    snprintf(j->out, sizeof j->out, "%s", out);
    snprintf(j->stage, sizeof j->stage, "%s", json_string_value(json_object_get(f, "stage")));
    snprintf(j->attempt, sizeof j->attempt, "%s", attempt);
    snprintf(j->job, sizeof j->job, "%s", jobid);
    snprintf(j->workdir, sizeof j->workdir, "%s", workdir);
    j->epoch = epoch;
    j->used = true;
    j->total = w->job_ms / (w->progress_ms > 0 ? w->progress_ms : 1);
    if (j->total < 1) j->total = 1;
    j->next_progress = now_ms() + (uint64_t)w->progress_ms;
    j->end = now_ms() + (uint64_t)w->job_ms;
    j->fail = w->fail && strstr(jobid, w->fail);
    send_msg(w->p, PROTO_ACCEPT, json_pack("{s:s, s:I}", "attempt", attempt, "epoch", (json_int_t)epoch));
    if (w->silent_on && !w->silenced_once && strstr(jobid, w->silent_on)) {
        w->silenced_once = true;
        w->silent_until = now_ms() + (uint64_t)w->silent_ms;
        w->silent_slot = slot;
        say("silent %s", attempt);
    }
}

static job *find_job(worker *w, json_t *f) {
    const char *attempt = json_string_value(json_object_get(f, "attempt"));
    int64_t epoch = json_integer_value(json_object_get(f, "epoch"));
    for (int i = 0; i < 4; i++)
        if (w->jobs[i].used && !strcmp(w->jobs[i].attempt, attempt) && w->jobs[i].epoch == epoch) return &w->jobs[i];
    return NULL;
}

/* What `xtrain eval` writes to its out: recovery per task and the C_alpha curve (small). */
static void write_eval_report(const job *j) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", j->out);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    for (char *q = dir + 1; *q; q++) /* mkdir -p */
        if (*q == '/') {
            *q = 0;
            mkdir(dir, 0755);
            *q = '/';
        }
    mkdir(dir, 0755);
    static const char *const tasks[][2] = {{"ppl/math", "perplexity"}, {"ppl/code", "perplexity"}, {"mc/arc_easy", "multiple_choice"},
                                           {"mc/piqa", "multiple_choice"}};
    json_t *t = json_array(), *curve = json_array();
    for (int i = 0; i < 4; i++) {
        double teacher = 0.2 + 0.1 * i, recovery = 0.93 + 0.02 * i;
        json_array_append_new(t, json_pack("{s:s, s:s, s:f, s:f, s:f}", "task", tasks[i][0], "kind", tasks[i][1], "teacher", teacher,
                                           "student", teacher * recovery, "recovery", recovery));
    }
    static const double alphas[] = {0, 0.01, 0.02, 0.05, 0.1, 0.2};
    for (int i = 0; i < 6; i++) json_array_append_new(curve, json_pack("{s:f, s:f}", "alpha", alphas[i], "c", 0.25 + 0.15 * i));
    json_t *report = json_pack("{s:s, s:s, s:o, s:o, s:f, s:b, s:[]}", "teacher", "/models/teacher.gguf", "student", j->workdir, "tasks", t,
                               "c_alpha", curve, "alpha_star", 0.05, "lossless", 0, "skipped_sources");
    if (json_dump_file(report, j->out, JSON_INDENT(1)) == 0) say("report %s", j->out);
    json_decref(report);
}

static void send_done(worker *w, job *j, bool ok, int exit_code, const char *error) {
    if (ok && w->rich && !strcmp(j->stage, "eval") && j->out[0]) write_eval_report(j);
    char output[4300];
    snprintf(output, sizeof output, "%s/model", j->workdir);
    json_t *done = json_pack("{s:s, s:I, s:b, s:i, s:s, s:s}", "attempt", j->attempt, "epoch", (json_int_t)j->epoch,
                             "ok", ok, "exit_code", exit_code, "error", error, "output", ok ? output : "");
    json_decref(w->recent_done[w->n_done % KEEP_DONE]);
    w->recent_done[w->n_done++ % KEEP_DONE] = json_incref(done);
    send_msg(w->p, PROTO_DONE, done);
    say("done %s %lld %s", j->attempt, (long long)j->epoch, ok ? "ok" : "fail");
    j->used = false;
}

static void handle_message(worker *w, proto_type t, json_t *f) {
    switch (t) {
    case PROTO_WELCOME:
        w->heartbeat_ms = (int)json_integer_value(json_object_get(f, "heartbeat_ms"));
        say("welcome %s", json_string_value(json_object_get(f, "worker_id")));
        break;
    case PROTO_ASSIGN: on_assign(w, f); break;
    case PROTO_FENCE: {
        say("fence %s %lld", json_string_value(json_object_get(f, "attempt")), (long long)json_integer_value(json_object_get(f, "epoch")));
        job *j = find_job(w, f);
        if (j) j->used = false; /* killed, nothing reported */
        break;
    }
    case PROTO_CANCEL: {
        say("cancel %s %lld", json_string_value(json_object_get(f, "attempt")), (long long)json_integer_value(json_object_get(f, "epoch")));
        job *j = find_job(w, f);
        if (j) send_done(w, j, false, 130, "cancelled");
        break;
    }
    case PROTO_DRAIN:
        say("drain");
        w->draining = true;
        send_msg(w->p, PROTO_DRAINING, json_pack("{s:s}", "worker", w->name));
        break;
    case PROTO_ERROR:
        say("error %lld %s", (long long)json_integer_value(json_object_get(f, "code")), json_string_value(json_object_get(f, "message")));
        break;
    default: say("unexpected %s", proto_type_name(t)); break;
    }
}

static void drain_messages(worker *w) {
    proto_type t;
    json_t *f;
    int rc;
    while ((rc = recv_msg(w->p, 0, &t, &f)) != 0) {
        if (rc > 0) {
            handle_message(w, t, f);
            json_decref(f);
        }
    }
}

/* One metrics line: the plain {step, loss, lr}, or with --rich one shaped like the stage's. */
static void progress_line(const worker *w, const job *j, char *line, size_t cap) {
    int s = j->step;
    if (!w->rich) {
        snprintf(line, cap, "{\"step\":%d,\"loss\":%.4f,\"lr\":0.001}", s, 5.0 / s);
        return;
    }
    size_t n = (size_t)snprintf(line, cap, "{\"step\":%d,\"tokens\":%d,\"lr\":0.001,\"grad_norm\":%.4f,\"tokens_per_s\":%.1f",
                                s, s * 16384, 1.0 / (1.0 + s), 40000.0 + 500.0 * s);
    if (!strcmp(j->stage, "align")) {
        n += (size_t)snprintf(line + n, cap - n, ",\"loss\":%.6f,\"first_layer\":0,\"mse_layer\":[", 0.05 / s);
        for (int l = 0; l < 4 && n < cap; l++) n += (size_t)snprintf(line + n, cap - n, "%s%.6f", l ? "," : "", (0.02 + 0.01 * l) / s);
        if (n < cap) n += (size_t)snprintf(line + n, cap - n, "]");
    } else if (!strcmp(j->stage, "distill") || !strcmp(j->stage, "final")) {
        n += (size_t)snprintf(line + n, cap - n, ",\"loss\":%.4f,\"ce\":%.4f,\"kl\":%.4f", 2.0 / s + 1.0, 1.5 / s + 1.1, 0.8 / s);
    } else {
        n += (size_t)snprintf(line + n, cap - n, ",\"loss\":%.4f", 5.0 / s);
    }
    if (n < cap) snprintf(line + n, cap - n, "}");
}

static int cmd_worker(peer *p, int argc, char **argv) {
    worker w = {.p = p, .gpus = 0, .job_ms = 300, .progress_ms = 100, .silent_ms = 3000, .heartbeat_ms = 1000};
    int max_seconds = 120;
    for (int i = 0; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--name")) w.name = v;
        else if (!strcmp(k, "--gpus")) w.gpus = atoi(v);
        else if (!strcmp(k, "--job-ms")) w.job_ms = atoi(v);
        else if (!strcmp(k, "--progress-ms")) w.progress_ms = atoi(v);
        else if (!strcmp(k, "--fail")) w.fail = v;
        else if (!strcmp(k, "--silent-on")) w.silent_on = v;
        else if (!strcmp(k, "--silent-ms")) w.silent_ms = atoi(v);
        else if (!strcmp(k, "--save-configs")) w.save_configs = v;
        else if (!strcmp(k, "--max-seconds")) max_seconds = atoi(v);
        else if (!strcmp(k, "--rich")) w.rich = atoi(v) != 0;
        else return die("unknown worker flag %s", k);
    }
    if (!w.name) return die("worker needs --name%s", "");
    /* hello on every connection: the first, and each after a restarted coordinator */
    char mon_ep[128];
    snprintf(mon_ep, sizeof mon_ep, "inproc://monitor-%d", (int)getpid());
    if (peer_open_monitored(p, w.name, mon_ep)) return 4;
    void *mon = p->monitor;
    uint64_t deadline = now_ms() + (uint64_t)max_seconds * 1000;
    w.next_heartbeat = now_ms() + (uint64_t)w.heartbeat_ms;
    while (!stop && now_ms() < deadline) {
        uint64_t now = now_ms();
        bool silent = w.silent_until && now < w.silent_until;
        if (w.silent_until && !silent) { /* back: list the old attempt, then its late done */
            w.silent_until = 0;
            job *j = &w.jobs[w.silent_slot];
            send_msg(p, PROTO_HEARTBEAT, json_pack("{s:s, s:o}", "worker", w.name, "running", running_json(&w)));
            if (j->used) {
                say("late-done %s %lld", j->attempt, (long long)j->epoch);
                send_done(&w, j, true, 0, "");
            }
            w.next_heartbeat = now + (uint64_t)w.heartbeat_ms;
        }
        if (!silent && now >= w.next_heartbeat) {
            send_msg(p, PROTO_HEARTBEAT, json_pack("{s:s, s:o}", "worker", w.name, "running", running_json(&w)));
            w.next_heartbeat = now + (uint64_t)w.heartbeat_ms;
        }
        for (int i = 0; i < 4 && !silent; i++) {
            job *j = &w.jobs[i];
            if (!j->used) continue;
            if (now >= j->next_progress && j->step < j->total) {
                j->step++;
                char line[1024];
                progress_line(&w, j, line, sizeof line);
                send_msg(p, PROTO_PROGRESS, json_pack("{s:s, s:I, s:i, s:i, s:s}", "attempt", j->attempt, "epoch", (json_int_t)j->epoch,
                                                      "step", j->step, "total", j->total, "metrics", line));
                if (j->step == 1) {
                    char ck[4300];
                    snprintf(ck, sizeof ck, "%s/checkpoints/step-00000001", j->workdir);
                    send_msg(p, PROTO_CHECKPOINT, json_pack("{s:s, s:I, s:i, s:s}", "attempt", j->attempt, "epoch", (json_int_t)j->epoch, "step", 1, "path", ck));
                }
                j->next_progress = now + (uint64_t)w.progress_ms;
            }
            if (now >= j->end) send_done(&w, j, !j->fail, j->fail ? 1 : 0, j->fail ? "injected failure" : "");
        }
        zmq_pollitem_t items[2] = {{p->sock, 0, ZMQ_POLLIN, 0}, {mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 20) < 0 && errno != EINTR) break;
        drain_messages(&w);
        if (items[1].revents & ZMQ_POLLIN) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            while (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) >= 0) {
                bool more = zmq_msg_more(&m);
                if (!more) { /* the second frame ends one event */
                    /* an assign read off the old connection counts as running: take it first; a
                     * done may have died with the old connection: send the recent ones again */
                    drain_messages(&w);
                    for (int k = w.n_done > KEEP_DONE ? w.n_done - KEEP_DONE : 0; k < w.n_done; k++)
                        send_msg(p, PROTO_DONE, json_incref(w.recent_done[k % KEEP_DONE]));
                    send_hello(&w);
                }
                zmq_msg_close(&m);
                zmq_msg_init(&m);
            }
            zmq_msg_close(&m);
        }
    }
    for (int k = 0; k < KEEP_DONE; k++) json_decref(w.recent_done[k]);
    say("exit");
    return 0;
}

/* ---- keygen ---- */

static int cmd_keygen(int argc, char **argv) {
    if (argc < 2) return die("keygen DIR NAME%s", "");
    char pub[41], secret[41], path[4200];
    if (zmq_curve_keypair(pub, secret)) return die("zmq_curve_keypair failed (libzmq without CURVE?)%s", "");
    snprintf(path, sizeof path, "%s/%s.key", argv[0], argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, secret, 40) != 40 || write(fd, "\n", 1) != 1) return die("cannot write %s", path);
    close(fd);
    snprintf(path, sizeof path, "%s/%s.pub", argv[0], argv[1]);
    FILE *f = fopen(path, "w");
    if (!f) return die("cannot write %s", path);
    fprintf(f, "%s\n", pub);
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    peer p = {.endpoint = getenv("XCOORD_ENDPOINT"), .timeout_ms = 5000};
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
        if (i + 1 >= argc) return die("%s needs a value", argv[i]);
        if (!strcmp(argv[i], "--connect")) p.endpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--timeout-ms")) p.timeout_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--curve-server")) p.server_pub = argv[i + 1];
        else if (!strcmp(argv[i], "--curve-key")) p.key_base = argv[i + 1];
        else return die("unknown flag %s", argv[i]);
    }
    if (i >= argc) return die("usage: coord_peer [--connect EP] MODE ... (see the source)%s", "");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    const char *mode = argv[i++];
    if (!strcmp(mode, "keygen")) return cmd_keygen(argc - i, argv + i);
    if (!p.endpoint) return die("--connect is required%s", "");
    int rc;
    if (!strcmp(mode, "request")) rc = cmd_request(&p, argc - i, argv + i);
    else if (!strcmp(mode, "send-raw")) rc = cmd_send_raw(&p, argc - i, argv + i);
    else if (!strcmp(mode, "worker")) rc = cmd_worker(&p, argc - i, argv + i);
    else rc = die("unknown mode %s", mode);
    peer_close(&p);
    return rc;
}
