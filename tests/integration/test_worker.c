/* tests/integration/test_worker.c — the real xworker, running the real xtrain, against a scripted
 * coordinator (fake_coord.c) over loopback. One scenario per run:
 *   run        hello with devices; an align of 2 steps: accept, progress, checkpoint, done ok;
 *              failures (a bad setting, init's flags, a bad attempt id) reported as done
 *   cancel     a second assign while busy is refused; a cancel of another epoch is ignored;
 *              cancel: done "cancelled" and the child is gone
 *   fence      fence of a stale epoch ignored; fence: the child is killed, nothing is reported
 *   reconnect  the coordinator goes silent, then away: the worker reconnects and says hello
 *              listing the attempt it still runs; progress goes on
 *   drain      SIGTERM: draining, the child stopped, done "drained", exit 0
 *   garbage    undecodable, unknown, mistyped, multi-frame and oversized messages are ignored
 *   curve      --keys: the worker is a CURVE client of a CURVE coordinator
 *   quiet      a coordinator that does not answer heartbeats: no reconnect churn; error 404
 *              brings a hello; after a coordinator restart libzmq reconnects and the worker
 *              says hello (socket monitor)
 * usage: test_worker SCENARIO XWORKER XTRAIN FIXTURE_DIR TEACHER */
#include "fake_coord.h"
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static const char *xworker, *xtrain, *fixture, *teacher;
static char tmp[256], workdir[512];
static pid_t worker_pid;

#define NAME "test-worker"
#define SLOW_MS 240000 /* a step of the real align (ASan builds are slow) */

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *worker_keys; /* --keys DIR, or NULL */

static pid_t start_worker(fake_coord *c) {
    char err[600];
    snprintf(err, sizeof err, "%s/worker.err", tmp);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2);
        execl(xworker, xworker, "--coordinator", c->endpoint, "--workdir", workdir, "--name", NAME,
              "--xtrain", xtrain, "--poll-ms", "100", "--grace", "5", "--heartbeat-ms", "200",
              "--drain-timeout", "20", worker_keys ? "--keys" : (char *)NULL, worker_keys, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The worker's exit status, or -1 when it still runs after timeout_ms. */
static int wait_exit(pid_t pid, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 50) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(50);
    }
    return -1;
}

/* A process is gone (or a zombie nobody reaps: the worker reaps its children itself). */
static bool gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

static bool wait_gone(pid_t pid, fake_coord *c, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 100) {
        if (gone(pid)) return true;
        fake_coord_pump(c, 100);
    }
    return gone(pid);
}

static pid_t child_pid(const char *attempt) {
    char p[800];
    snprintf(p, sizeof p, "%s/attempts/%s/pid", workdir, attempt);
    FILE *f = fopen(p, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1) pid = 0;
        fclose(f);
    }
    return pid;
}

static const char *align_config(int steps, int checkpoint_every) {
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "teacher: %s\nstudent: %s/student\ndata: [%s/data]\nseq_len: 32\nbatch: 2\nsteps: %d\n"
             "warmup: 1\ncheckpoint_every: %d\nkeep_checkpoints: 1\n",
             teacher, fixture, fixture, steps, checkpoint_every);
    return buf;
}

static void assign(fake_coord *c, const char *id, long epoch, const char *stage, const char *config, const char *out) {
    fake_coord_send(c, PROTO_ASSIGN, json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:[]}", "attempt", id, "epoch",
                                               (json_int_t)epoch, "job", "job-1", "stage", stage, "config",
                                               config, "workdir", out, "gpus"));
}

static const char *str(json_t *f, const char *key) {
    const char *s = json_string_value(json_object_get(f, key));
    return s ? s : "";
}

static long long num(json_t *f, const char *key) { return (long long)json_integer_value(json_object_get(f, key)); }

/* The next message of type t about attempt id. */
static json_t *expect_for(fake_coord *c, proto_type t, const char *id, int timeout_ms) {
    double end = xd_now() + timeout_ms / 1000.0;
    for (;;) {
        int left = (int)((end - xd_now()) * 1000);
        json_t *f = fake_coord_expect(c, t, left > 0 ? left : 0);
        if (!f || !strcmp(str(f, "attempt"), id)) return f;
    }
}

static bool running_lists(json_t *f, const char *id) {
    json_t *r = json_object_get(f, "running");
    return json_array_size(r) == 1 && !strcmp(str(json_array_get(r, 0), "attempt"), id);
}

static json_t *hello(fake_coord *c) {
    json_t *h = fake_coord_expect(c, PROTO_HELLO, 20000);
    CHECK_MSG(h != NULL, "no hello from the worker");
    return h;
}

static void stop_worker(fake_coord *c) {
    kill(worker_pid, SIGTERM);
    json_t *d = fake_coord_expect(c, PROTO_DRAINING, 10000);
    CHECK_MSG(d && !strcmp(str(d, "worker"), NAME), "draining on SIGTERM");
    int rc = wait_exit(worker_pid, 15000);
    CHECK_MSG(rc == 0, "the worker exits 0 after SIGTERM (got %d)", rc);
    if (rc < 0) kill(worker_pid, SIGKILL), wait_exit(worker_pid, 5000);
    worker_pid = 0;
}

/* A long align, running: accepted and past its first step. Returns the child's pid. */
static pid_t start_long(fake_coord *c, const char *id, long epoch) {
    char out[700];
    snprintf(out, sizeof out, "%s/out-%s", tmp, id);
    assign(c, id, epoch, "align", align_config(100000, 100000), out);
    json_t *a = expect_for(c, PROTO_ACCEPT, id, 10000);
    CHECK_MSG(a && num(a, "epoch") == epoch, "accept of %s", id);
    json_t *p = expect_for(c, PROTO_PROGRESS, id, SLOW_MS);
    CHECK_MSG(p != NULL, "progress of %s", id);
    pid_t pid = child_pid(id);
    CHECK_MSG(pid > 1 && !gone(pid), "the child of %s runs (pid %d)", id, (int)pid);
    return pid;
}

static void scenario_run(fake_coord *c) {
    json_t *h = hello(c);
    if (!h) return;
    CHECK(!strcmp(str(h, "worker"), NAME));
    CHECK(num(h, "pid") == worker_pid);
    json_t *dev = json_array_get(json_object_get(h, "devices"), 0);
    CHECK_MSG(dev && !strcmp(str(dev, "kind"), "cpu") && num(dev, "index") == 0 && num(dev, "memory_mb") > 0 &&
                  *str(dev, "name"),
              "hello lists the CPU");
    CHECK(json_array_size(json_object_get(h, "running")) == 0);

    /* a real align of 2 steps with a checkpoint every step */
    char out[700], p[900];
    snprintf(out, sizeof out, "%s/out-a1", tmp);
    const char *cfg = align_config(2, 1);
    assign(c, "a1", 1, "align", cfg, out);
    json_t *acc = expect_for(c, PROTO_ACCEPT, "a1", 10000);
    CHECK_MSG(acc && num(acc, "epoch") == 1, "accept of a1");
    size_t accept_at = c->cursor;
    json_t *done = expect_for(c, PROTO_DONE, "a1", SLOW_MS);
    CHECK_MSG(done != NULL, "done of a1");
    if (!done) return;
    size_t done_at = c->cursor - 1;
    CHECK_MSG(json_is_true(json_object_get(done, "ok")) && num(done, "exit_code") == 0 && !*str(done, "error"),
              "a1 succeeded: %s", str(done, "error"));
    snprintf(p, sizeof p, "%s/model", out);
    CHECK_MSG(!strcmp(str(done, "output"), p) && num(done, "epoch") == 1, "output %s", str(done, "output"));
    snprintf(p, sizeof p, "%s/DONE", out);
    CHECK(xd_file_exists(p));

    /* progress 1 and 2 (total 2), the checkpoint of step 2, both before done; heartbeats list a1 */
    int steps_seen = 0, ckpt2 = 0, hb_running = 0;
    for (size_t i = accept_at; i < done_at; i++) {
        json_t *m = json_array_get(c->log, i), *f = json_object_get(m, "f");
        const char *t = str(m, "t");
        if (!strcmp(t, "progress") && !strcmp(str(f, "attempt"), "a1")) {
            json_t *line = json_loads(str(f, "metrics"), 0, NULL);
            CHECK_MSG(line && json_integer_value(json_object_get(line, "step")) == num(f, "step") &&
                          json_object_get(line, "loss"),
                      "progress carries its metrics line");
            json_decref(line);
            CHECK(num(f, "total") == 2 && num(f, "epoch") == 1);
            CHECK_MSG(num(f, "step") == steps_seen + 1, "progress steps in order (%lld after %d)", num(f, "step"), steps_seen);
            steps_seen = (int)num(f, "step");
        } else if (!strcmp(t, "checkpoint") && num(f, "step") == 2) {
            snprintf(p, sizeof p, "%s/checkpoints/step-00000002", out);
            CHECK_MSG(!strcmp(str(f, "path"), p), "checkpoint path %s", str(f, "path"));
            ckpt2++;
        } else if (!strcmp(t, "heartbeat") && running_lists(f, "a1")) {
            hb_running++;
        }
    }
    CHECK_MSG(steps_seen == 2, "progress of steps 1 and 2 (last %d)", steps_seen);
    CHECK_MSG(ckpt2 == 1, "one checkpoint message for step 2 (%d)", ckpt2);
    CHECK_MSG(hb_running > 0, "heartbeats list the running attempt");
    json_t *hb = fake_coord_expect(c, PROTO_HEARTBEAT, 5000);
    CHECK_MSG(hb && json_array_size(json_object_get(hb, "running")) == 0, "an idle heartbeat lists nothing");
    snprintf(p, sizeof p, "%s/attempts/a1/config.yaml", workdir);
    char *text = NULL;
    CHECK(xd_read_file(p, 1 << 20, &text, NULL, NULL) == 0 && text && !strcmp(text, cfg));
    free(text);
    snprintf(p, sizeof p, "%s/attempts/a1/log.txt", workdir);
    CHECK(xd_read_file(p, 1 << 24, &text, NULL, NULL) == 0 && text && strstr(text, "[align] done"));
    free(text);

    /* a bad setting: xtrain's usage error comes back in done; the config's own out is kept */
    snprintf(out, sizeof out, "%s/out-a2", tmp);
    char cfg2[600];
    snprintf(cfg2, sizeof cfg2, "stepz: 3\nout: %s/elsewhere/report.json\n", tmp);
    assign(c, "a2", 1, "eval", cfg2, out);
    CHECK(expect_for(c, PROTO_ACCEPT, "a2", 10000) != NULL);
    done = expect_for(c, PROTO_DONE, "a2", 60000);
    CHECK_MSG(done && json_is_false(json_object_get(done, "ok")) && num(done, "exit_code") == 2 &&
                  strstr(str(done, "error"), "unknown key \"stepz\""),
              "a2 fails with xtrain's message: %s", done ? str(done, "error") : "(no done)");
    snprintf(p, sizeof p, "%s/elsewhere/report.json", tmp);
    CHECK_MSG(done && !strcmp(str(done, "output"), p) && !strstr(str(done, "error"), "--set out="),
              "the config's out is the stage's: %s", done ? str(done, "output") : "");

    /* init takes flags: `window: 0` becomes --window 0, which xtrain refuses */
    char cfg_init[1200];
    snprintf(cfg_init, sizeof cfg_init, "teacher: %s\nwindow: 0\nforce: true\n", teacher);
    snprintf(out, sizeof out, "%s/out-a3", tmp);
    assign(c, "a3", 1, "init", cfg_init, out);
    done = expect_for(c, PROTO_DONE, "a3", 60000);
    CHECK_MSG(done && json_is_false(json_object_get(done, "ok")) && num(done, "exit_code") == 2 &&
                  strstr(str(done, "error"), "--window must be at least 1"),
              "init's flags: %s", done ? str(done, "error") : "(no done)");

    /* the coordinator's ids (RUN/JOB#EPOCH) become plain directory names inside attempts/ */
    const char *id = "run-1/../../evil#2";
    assign(c, id, 2, "align", "stepz: 3\n", out);
    done = expect_for(c, PROTO_DONE, id, 60000);
    CHECK_MSG(done && num(done, "exit_code") == 2, "%s runs", id);
    snprintf(p, sizeof p, "%s/attempts", workdir);
    DIR *d = opendir(p);
    int found = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        if (strncmp(de->d_name, "run-1_.._.._evil_2-", 19) || strlen(de->d_name) != 27) continue;
        snprintf(p, sizeof p, "%s/attempts/%s/config.yaml", workdir, de->d_name);
        found += xd_file_exists(p);
    }
    if (d) closedir(d);
    CHECK_MSG(found == 1, "attempts/run-1_.._.._evil_2-HASH/config.yaml");
    snprintf(p, sizeof p, "%s/evil", tmp);
    CHECK(!xd_file_exists(p));
    stop_worker(c);
}

static void scenario_cancel(fake_coord *c) {
    if (!hello(c)) return;
    pid_t child = start_long(c, "c1", 4);
    double t = xd_now();
    assign(c, "c2", 1, "align", align_config(2, 1), "out-c2");
    fake_coord_pump(c, 1000);
    CHECK_MSG(fake_coord_count_since(c, PROTO_ACCEPT, t) == 0, "a second assign while busy is not accepted");
    fake_coord_send(c, PROTO_CANCEL, json_pack("{s:s, s:i, s:s}", "attempt", "c1", "epoch", 3, "reason", "stale"));
    fake_coord_pump(c, 1000);
    CHECK_MSG(fake_coord_count_since(c, PROTO_DONE, t) == 0 && !gone(child), "a cancel of another epoch is ignored");
    fake_coord_send(c, PROTO_CANCEL, json_pack("{s:s, s:i, s:s}", "attempt", "c1", "epoch", 4, "reason", "test"));
    json_t *done = expect_for(c, PROTO_DONE, "c1", 30000);
    CHECK_MSG(done && json_is_false(json_object_get(done, "ok")) && !strcmp(str(done, "error"), "cancelled") &&
                  num(done, "epoch") == 4,
              "done cancelled: %s", done ? str(done, "error") : "(no done)");
    CHECK_MSG(done && num(done, "exit_code") == 128 + SIGTERM, "the child ended by SIGTERM (%lld)", done ? num(done, "exit_code") : -1);
    CHECK_MSG(gone(child), "the child is gone when done is sent");
    CHECK(child_pid("c1") == 0);
    json_t *hb = fake_coord_expect(c, PROTO_HEARTBEAT, 5000);
    CHECK(hb && json_array_size(json_object_get(hb, "running")) == 0);
    stop_worker(c);
}

static void scenario_fence(fake_coord *c) {
    if (!hello(c)) return;
    pid_t child = start_long(c, "f1", 3);
    double t = xd_now();
    fake_coord_send(c, PROTO_FENCE, json_pack("{s:s, s:i}", "attempt", "f1", "epoch", 2));
    fake_coord_pump(c, 1000);
    CHECK_MSG(!gone(child), "a fence of another epoch is ignored");
    fake_coord_send(c, PROTO_FENCE, json_pack("{s:s, s:i}", "attempt", "f1", "epoch", 3));
    CHECK_MSG(wait_gone(child, c, 5000), "the fenced child is killed at once");
    double after = xd_now();
    fake_coord_pump(c, 1500);
    CHECK_MSG(fake_coord_count_since(c, PROTO_DONE, t) == 0, "nothing is reported about a fenced attempt");
    int hb = 0;
    for (size_t i = 0; i < json_array_size(c->log); i++) {
        json_t *m = json_array_get(c->log, i), *f = json_object_get(m, "f");
        if (json_real_value(json_object_get(m, "at")) < after + 0.3) continue;
        const char *ty = str(m, "t");
        CHECK_MSG(strcmp(ty, "progress") && strcmp(ty, "checkpoint") && strcmp(ty, "done"), "%s after the fence", ty);
        if (!strcmp(ty, "heartbeat")) {
            hb++;
            CHECK(json_array_size(json_object_get(f, "running")) == 0);
        }
    }
    CHECK_MSG(hb > 0, "heartbeats after the fence");
    /* the worker takes new work */
    assign(c, "f2", 1, "align", "stepz: 1\n", "out-f2");
    CHECK(expect_for(c, PROTO_ACCEPT, "f2", 10000) != NULL);
    CHECK(expect_for(c, PROTO_DONE, "f2", 60000) != NULL);
    stop_worker(c);
}

static void scenario_reconnect(fake_coord *c) {
    if (!hello(c)) return;
    pid_t child = start_long(c, "r1", 7);
    /* silent: hello and heartbeats go unanswered */
    c->silent = true;
    double t = xd_now();
    json_t *h = fake_coord_expect(c, PROTO_HELLO, 20000);
    double waited = xd_now() - t;
    CHECK_MSG(h && running_lists(h, "r1"), "after silence the worker says hello again, listing r1");
    CHECK_MSG(waited >= 0.9, "it waited for 5 heartbeat periods (%.2f s)", waited);
    CHECK_MSG(!gone(child) && child_pid("r1") == child, "the child runs on");
    c->silent = false;
    fake_coord_send(c, PROTO_WELCOME, json_pack("{s:s, s:i, s:i}", "worker_id", NAME, "heartbeat_ms", 200, "lease_ms", 2000));
    json_t *hb = fake_coord_expect(c, PROTO_HEARTBEAT, 5000);
    CHECK_MSG(hb && running_lists(hb, "r1"), "heartbeats list r1");

    /* the coordinator goes away for 2 s and comes back on the same port */
    fake_coord_unbind(c);
    sleep_ms(2000);
    CHECK(fake_coord_rebind(c) == 0);
    h = fake_coord_expect(c, PROTO_HELLO, 30000);
    CHECK_MSG(h && running_lists(h, "r1"), "hello listing r1 to the restarted coordinator");
    json_t *p = expect_for(c, PROTO_PROGRESS, "r1", SLOW_MS);
    CHECK_MSG(p != NULL, "progress goes on after the reconnect");
    CHECK_MSG(!gone(child), "the same child runs on");
    fake_coord_send(c, PROTO_CANCEL, json_pack("{s:s, s:i, s:s}", "attempt", "r1", "epoch", 7, "reason", "end"));
    json_t *done = expect_for(c, PROTO_DONE, "r1", 30000);
    CHECK(done && !strcmp(str(done, "error"), "cancelled"));
    stop_worker(c);
}

static void scenario_drain(fake_coord *c) {
    if (!hello(c)) return;
    pid_t child = start_long(c, "d1", 2);
    kill(worker_pid, SIGTERM);
    json_t *d = fake_coord_expect(c, PROTO_DRAINING, 10000);
    CHECK_MSG(d && !strcmp(str(d, "worker"), NAME), "draining");
    json_t *done = expect_for(c, PROTO_DONE, "d1", 30000);
    CHECK_MSG(done && json_is_false(json_object_get(done, "ok")) && !strcmp(str(done, "error"), "drained") &&
                  num(done, "epoch") == 2,
              "done drained: %s", done ? str(done, "error") : "(no done)");
    int rc = wait_exit(worker_pid, 15000);
    CHECK_MSG(rc == 0, "the worker exits 0 after the drain (%d)", rc);
    worker_pid = rc < 0 ? worker_pid : 0;
    CHECK(gone(child));
}

static void scenario_garbage(fake_coord *c) {
    if (!hello(c)) return;
    static const unsigned char v2[] = {0x82, 0xa1, 'v', 0x02, 0xa1, 't', 0xa7, 'w', 'e', 'l', 'c', 'o', 'm', 'e'};
    static const unsigned char bogus[] = {0x82, 0xa1, 'v', 0x01, 0xa1, 't', 0xa5, 'b', 'o', 'g', 'u', 's'};
    static const unsigned char bare[] = {0x82, 0xa1, 'v', 0x01, 0xa1, 't', 0xa6, 'a', 's', 's', 'i', 'g', 'n'};
    static const unsigned char huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'v'};
    static const unsigned char not_map[] = {0x93, 0x01, 0x02, 0x03};
    unsigned char deep[64];
    memset(deep, 0x91, sizeof deep - 1);
    deep[sizeof deep - 1] = 0xc0;
    const char *text = "garbage, not msgpack";
    struct {
        const void *buf;
        size_t len;
    } singles[] = {
        {text, strlen(text)}, {v2, sizeof v2}, {bogus, sizeof bogus}, {bare, sizeof bare},
        {huge_map, sizeof huge_map}, {not_map, sizeof not_map}, {deep, sizeof deep}, {"", 0},
    };
    for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++) {
        const void *f[1] = {singles[i].buf};
        size_t l[1] = {singles[i].len};
        CHECK(fake_coord_send_raw(c, f, l, 1) == 0);
    }
    const void *three[3] = {bogus, bogus, bogus};
    size_t three_l[3] = {sizeof bogus, sizeof bogus, sizeof bogus};
    CHECK(fake_coord_send_raw(c, three, three_l, 3) == 0);
    /* well-formed but unexpected: a worker's own message type, a client reply, a silly welcome,
       cancel and fence of attempts that do not run here, the coordinator's drain */
    fake_coord_send(c, PROTO_PROGRESS, json_pack("{s:s, s:i, s:i, s:i, s:s}", "attempt", "x", "epoch", 1, "step", 1,
                                                 "total", 1, "metrics", "{}"));
    fake_coord_send(c, PROTO_REPLY, json_pack("{s:b}", "ok", 1));
    fake_coord_send(c, PROTO_WELCOME, json_pack("{s:s, s:i, s:i}", "worker_id", NAME, "heartbeat_ms", 1, "lease_ms", 1));
    fake_coord_send(c, PROTO_CANCEL, json_pack("{s:s, s:i, s:s}", "attempt", "nope", "epoch", 1, "reason", "x"));
    fake_coord_send(c, PROTO_FENCE, json_pack("{s:s, s:i}", "attempt", "nope", "epoch", 1));
    fake_coord_send(c, PROTO_ERROR, json_pack("{s:i, s:s}", "code", 400, "message", "a test error"));
    fake_coord_send(c, PROTO_DRAIN, json_object());
    json_t *dr = fake_coord_expect(c, PROTO_DRAINING, 5000);
    CHECK_MSG(dr && !strcmp(str(dr, "worker"), NAME), "the coordinator's drain is acknowledged");
    /* a message over PROTO_MAX_MESSAGE: the socket drops it (and the connection, which comes back) */
    size_t big = PROTO_MAX_MESSAGE + 1024;
    char *buf = calloc(1, big);
    const void *bf[1] = {buf};
    CHECK(buf && fake_coord_send_raw(c, bf, &big, 1) == 0);
    free(buf);
    double t = xd_now();
    fake_coord_pump(c, 2000);
    CHECK_MSG(wait_exit(worker_pid, 0) < 0, "the worker is alive");
    CHECK_MSG(fake_coord_count_since(c, PROTO_HEARTBEAT, t) >= 3, "heartbeats go on (%d)", fake_coord_count_since(c, PROTO_HEARTBEAT, t));
    /* and it still works */
    assign(c, "g1", 1, "align", "stepz: 1\n", "out-g1");
    CHECK(expect_for(c, PROTO_ACCEPT, "g1", 10000) != NULL);
    json_t *done = expect_for(c, PROTO_DONE, "g1", 60000);
    CHECK(done && num(done, "exit_code") == 2);
    stop_worker(c);
}

/* A coordinator that answers hello but not heartbeats (welcome on join only): the worker keeps
 * its socket (no reconnect churn), says hello again when told it is unknown (error 404), and
 * libzmq brings the connection back after the coordinator restarts. */
static void scenario_quiet(fake_coord *c) {
    c->hello_only = true;
    if (!hello(c)) return;
    double t = xd_now();
    fake_coord_pump(c, 2500);
    CHECK_MSG(fake_coord_count_since(c, PROTO_HELLO, t) == 0, "no reconnect when heartbeats are not answered");
    CHECK_MSG(fake_coord_count_since(c, PROTO_HEARTBEAT, t) >= 8, "heartbeats (%d)", fake_coord_count_since(c, PROTO_HEARTBEAT, t));
    fake_coord_send(c, PROTO_ERROR, json_pack("{s:i, s:s}", "code", 404, "message", "unknown worker: send hello"));
    CHECK_MSG(fake_coord_expect(c, PROTO_HELLO, 3000) != NULL, "hello after error 404");
    fake_coord_unbind(c);
    sleep_ms(1500);
    CHECK(fake_coord_rebind(c) == 0);
    CHECK_MSG(fake_coord_expect(c, PROTO_HELLO, 20000) != NULL, "hello when the connection comes back");
    CHECK_MSG(fake_coord_expect(c, PROTO_HEARTBEAT, 5000) != NULL, "heartbeats reach the restarted coordinator");
    t = xd_now();
    fake_coord_pump(c, 2000);
    CHECK_MSG(fake_coord_count_since(c, PROTO_HELLO, t) == 0, "and no more hellos");
    stop_worker(c);
}

/* CURVE: the worker with DIR/worker.key, worker.pub and server.pub talks to a CURVE server. */
static void scenario_curve(fake_coord *c) {
    json_t *h = hello(c);
    CHECK_MSG(h && !strcmp(str(h, "worker"), NAME), "hello over CURVE");
    stop_worker(c);
}

static int write_text(const char *dir, const char *name, const char *text) {
    char p[700], line[64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(line, sizeof line, "%s\n", text);
    return xd_write_file_atomic(p, line, strlen(line), NULL);
}

/* Keys for the curve scenario: the server's secret into server_secret. */
static int make_keys(const char *dir, char server_secret[41]) {
    char spub[41], wpub[41], wsec[41];
    mkdir(dir, 0700);
    if (zmq_curve_keypair(spub, server_secret) || zmq_curve_keypair(wpub, wsec)) return -1;
    return write_text(dir, "server.pub", spub) || write_text(dir, "worker.pub", wpub) ||
           write_text(dir, "worker.key", wsec) ? -1 : 0;
}

static void dump(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    fprintf(stderr, "---- %s\n", path);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f) && n++ < 400) fputs(line, stderr);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: test_worker SCENARIO XWORKER XTRAIN FIXTURE_DIR TEACHER\n");
        return 2;
    }
    const char *scenario = argv[1];
    xworker = argv[2], xtrain = argv[3], fixture = argv[4], teacher = argv[5];
    const char *tmp_root = getenv("TMPDIR"); /* the attempts write full-size models: not a small /tmp */
    snprintf(tmp, sizeof tmp, "%s/xd_worker_%s_XXXXXX", tmp_root && *tmp_root ? tmp_root : "/tmp", scenario);
    if (!mkdtemp(tmp)) return 1;
    snprintf(workdir, sizeof workdir, "%s/work", tmp);
    signal(SIGPIPE, SIG_IGN);
    fake_coord c;
    char keys[600], secret[41];
    snprintf(keys, sizeof keys, "%s/keys", tmp);
    if (!strcmp(scenario, "curve")) {
        if (make_keys(keys, secret) || fake_coord_open_curve(&c, NULL, secret)) return 1;
        worker_keys = keys;
    } else if (fake_coord_open(&c, NULL)) {
        return 1;
    }
    worker_pid = start_worker(&c);
    double t0 = xd_now();
    if (!strcmp(scenario, "run")) scenario_run(&c);
    else if (!strcmp(scenario, "cancel")) scenario_cancel(&c);
    else if (!strcmp(scenario, "fence")) scenario_fence(&c);
    else if (!strcmp(scenario, "reconnect")) scenario_reconnect(&c);
    else if (!strcmp(scenario, "drain")) scenario_drain(&c);
    else if (!strcmp(scenario, "garbage")) scenario_garbage(&c);
    else if (!strcmp(scenario, "curve")) scenario_curve(&c);
    else if (!strcmp(scenario, "quiet")) scenario_quiet(&c);
    else {
        fprintf(stderr, "unknown scenario %s\n", scenario);
        test_failures++;
    }
    if (worker_pid > 0) {
        kill(worker_pid, SIGKILL);
        wait_exit(worker_pid, 5000);
    }
    fprintf(stderr, "%s: %.1f s, %zu messages from the worker\n", scenario, xd_now() - t0, json_array_size(c.log));
    if (test_failures) {
        char p[900];
        snprintf(p, sizeof p, "%s/worker.err", tmp);
        dump(p);
    }
    fake_coord_close(&c);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (!getenv("XD_KEEP_TMP") && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp);
    TEST_MAIN_END();
}
