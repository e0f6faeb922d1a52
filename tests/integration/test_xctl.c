/* tests/integration/test_xctl.c — the real xctl as a user runs it: every command's usage errors,
 * an unreachable coordinator (exit 3), keygen's files, and every command against a scripted
 * coordinator (fake_coord.c) with canned replies: what is sent, the tables, --json that parses,
 * wait's exit codes, logs -f, failures, and CURVE.
 * usage: test_xctl XCTL */
#include "fake_coord.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static const char *xctl;
static char tmp[256];
static char out[1 << 16], err[1 << 16];

static void slurp(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

static const char *tty_wrap; /* a command line for script(1): xctl on a pseudo-terminal */

/* Runs xctl with the arguments (NULL-terminated) while the fake coordinator (may be NULL)
 * answers; stdout and stderr into out and err. Returns the exit code. */
static int run(fake_coord *c, const char *first, ...) {
    const char *argv[64];
    int n = 0;
    if (tty_wrap) {
        argv[n++] = "/usr/bin/script";
        argv[n++] = "-qec";
        argv[n++] = tty_wrap;
        argv[n++] = "/dev/null";
        first = NULL;
    } else {
        argv[n++] = xctl;
    }
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 62; a = va_arg(ap, const char *)) argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char po[300], pe[300];
    snprintf(po, sizeof po, "%s/out", tmp);
    snprintf(pe, sizeof pe, "%s/err", tmp);
    pid_t pid = fork();
    if (pid == 0) {
        int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], (char **)argv);
        _exit(127);
    }
    int st = 0;
    for (int t = 0; t < 60000; t += 10) {
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        if (c) fake_coord_pump(c, 10);
        else {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    slurp(po, out, sizeof out);
    slurp(pe, err, sizeof err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define EXPECT_RC(want, ...)                                                                       \
    do {                                                                                           \
        int rc_ = run(__VA_ARGS__, NULL);                                                          \
        CHECK_MSG(rc_ == (want), "exit %d, wanted %d; stdout: %s; stderr: %s", rc_, (want), out, err); \
    } while (0)

/* ---- canned replies ---- */

typedef struct script {
    int wait_calls;     /* queries of run-1 answered so far */
    const char *wait_end; /* the state run-1 reaches on the 3rd query (NULL: never) */
    int log_calls;
    json_t *last;       /* the last request: {"t", "f"} */
} script;

/* A job as xcoord's query reports it: metrics {step, total, time, line (parsed), attempt}. */
static json_t *job(const char *name, const char *stage, const char *state, int step, int total, double loss) {
    char id[128];
    snprintf(id, sizeof id, "run-1/%s", name);
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:{s:i, s:i, s:f, s:{s:i, s:f, s:f}, s:s}}", "id", id, "name", name,
                     "stage", stage, "state", state, "attempts", 1, "metrics", "step", step, "total", total, "time",
                     1700000000.5, "line", "step", step, "loss", loss, "lr", 0.01, "attempt", "run-1/x#1");
}

/* The tolerated other shape: the latest progress as a metrics.jsonl line in a string. */
static json_t *job_alt(const char *name, const char *stage, const char *state, int step, int total, double loss) {
    char line[256];
    snprintf(line, sizeof line, "{\"step\":%d,\"loss\":%g,\"lr\":0.01}", step, loss);
    return json_pack("{s:s, s:s, s:s, s:i, s:{s:i, s:i, s:s}}", "name", name, "stage", stage, "state", state,
                     "attempts", 1, "latest", "step", step, "total", total, "metrics", line);
}

static void respond(fake_coord *c, proto_type t, json_t *f, void *ctx) {
    script *s = ctx;
    json_decref(s->last);
    s->last = json_pack("{s:s, s:O}", "t", proto_type_name(t), "f", f);
    const char *run = json_string_value(json_object_get(f, "run"));
    switch (t) {
    case PROTO_SUBMIT:
        fake_coord_reply(c, true, NULL, json_pack("{s:s, s:s, s:[s]}", "run", "run-1", "name", "smol", "jobs", "run-1/init"));
        break;
    case PROTO_QUERY:
        if (!run) {
            fake_coord_reply(c, true, NULL,
                             json_pack("{s:[{s:s, s:s, s:s, s:f, s:{s:i, s:i}}, {s:s, s:s, s:s, s:s, s:[o, o]}], s:{}}",
                                       "runs", "id", "run-1", "name", "smol", "state", "running", "created", 1700000000.25,
                                       "jobs", "running", 1, "succeeded", 1, "id", "run-2", "name", "old", "state",
                                       "failed", "created", "2024-01-01T00:00:00Z", "jobs",
                                       job_alt("align", "align", "failed", 12, 100, 0.0231),
                                       job_alt("prep", "prepare", "succeeded", 0, 0, 0), "coordinator"));
        } else if (!strcmp(run, "run-1")) {
            s->wait_calls++;
            const char *state = s->wait_end && s->wait_calls >= 3 ? s->wait_end : "running";
            fake_coord_reply(c, true, NULL,
                             json_pack("{s:{s:s, s:s, s:s, s:f}, s:[o, o]}", "run", "id", "run-1", "name", "smol", "state",
                                       state, "created", 1700000000.0, "jobs",
                                       job("align", "align", state, 12 * s->wait_calls, 100, 0.0231),
                                       job("prep", "prepare", "succeeded", 0, 0, 0)));
        } else {
            fake_coord_reply(c, false, "no run \"nope\"", NULL);
        }
        break;
    case PROTO_CONTROL:
        if (!strcmp(json_string_value(json_object_get(f, "target")), "refused"))
            fake_coord_send(c, PROTO_ERROR, json_pack("{s:i, s:s}", "code", 403, "message", "not allowed"));
        else
            fake_coord_reply(c, true, NULL, json_pack("{s:s, s:s, s:[s]}", "action", json_string_value(json_object_get(f, "action")),
                                                      "target", json_string_value(json_object_get(f, "target")), "jobs", "run-1/align"));
        break;
    case PROTO_LOG_TAIL:
        /* xcoord's shape: the relayed progress records, no state */
        s->log_calls++;
        {
            char l1[16], l2[16];
            snprintf(l1, sizeof l1, "line %c", 'a' + s->log_calls - 1);
            snprintf(l2, sizeof l2, "line %c", 'a' + s->log_calls);
            fake_coord_reply(c, true, NULL,
                             json_pack("{s:s, s:[{s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s}]}", "job", "run-1/align", "lines",
                                       "attempt", "a#1", "step", s->log_calls, "total", 100, "line", l1, "attempt", "a#1",
                                       "step", s->log_calls + 1, "total", 100, "line", l2));
        }
        break;
    case PROTO_EVENTS:
        fake_coord_reply(c, true, NULL,
                         json_pack("{s:[{s:i, s:f, s:s, s:s, s:s, s:s, s:n}], s:i}", "events", "id", 7, "time", 1700000000.0,
                                   "run", "run-1", "job", "run-1/align", "kind", "assigned", "message", "to w1", "attempt", "last", 7));
        break;
    case PROTO_WORKERS:
        fake_coord_reply(c, true, NULL,
                         json_pack("{s:[{s:s, s:s, s:[{s:s, s:i, s:s, s:i}, {s:s, s:i, s:s, s:i}], s:f, s:s, s:b}], s:{}}", "workers",
                                   "name", "w1", "state", "alive", "devices", "kind", "cuda", "index", 0, "name", "NVIDIA H100",
                                   "memory_mb", 81559, "kind", "cuda", "index", 1, "name", "NVIDIA H100", "memory_mb", 81559,
                                   "last_heartbeat_age_s", 0.4, "attempt", "att-3", "draining", 0, "coordinator"));
        break;
    default:
        break;
    }
}

static const char *last_type(script *s) { return json_string_value(json_object_get(s->last, "t")); }
static json_t *last_field(script *s, const char *k) { return json_object_get(json_object_get(s->last, "f"), k); }
static const char *last_str(script *s, const char *k) {
    const char *v = json_string_value(last_field(s, k));
    return v ? v : "";
}

static bool parses(const char *text) {
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    json_decref(j);
    return j != NULL;
}

static void usage_errors(void) {
    EXPECT_RC(2, NULL, NULL);
    EXPECT_RC(0, NULL, "--help");
    CHECK(strstr(out, "submit SPEC.yaml"));
    EXPECT_RC(0, NULL, "wait", "--help");
    CHECK(strstr(out, "usage: xctl wait RUN"));
    EXPECT_RC(2, NULL, "stauts");
    CHECK(strstr(err, "unknown command \"stauts\" (did you mean status?)"));
    EXPECT_RC(2, NULL, "frobnicate");
    /* each command without its argument, with one too many, with a bad flag */
    const char *need[] = {"submit", "wait", "logs", "cancel", "retry", "hold", "release", "drain", "undrain", "events", "keygen"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        EXPECT_RC(2, NULL, need[i]);
        CHECK_MSG(strstr(err, "an argument is missing") && strstr(err, "usage: xctl "), "%s: %s", need[i], err);
        EXPECT_RC(2, NULL, need[i], "a", "b");
        CHECK_MSG(strstr(err, "unexpected argument \"b\""), "%s: %s", need[i], err);
        EXPECT_RC(2, NULL, need[i], "a", "--bogus-flag");
        CHECK_MSG(strstr(err, "unknown flag --bogus-flag"), "%s: %s", need[i], err);
    }
    EXPECT_RC(2, NULL, "status", "a", "b");
    EXPECT_RC(2, NULL, "workers", "a");
    EXPECT_RC(2, NULL, "status", "--jsno");
    CHECK(strstr(err, "unknown flag --jsno (did you mean --json?)"));
    EXPECT_RC(2, NULL, "status", "--name", "x");
    CHECK(strstr(err, "--name does not go with this command"));
    EXPECT_RC(2, NULL, "logs", "j", "--lines", "many");
    CHECK(strstr(err, "--lines expects an integer"));
    EXPECT_RC(2, NULL, "logs", "j", "--lines", "0");
    EXPECT_RC(2, NULL, "status", "--timeout", "0");
    EXPECT_RC(2, NULL, "status", "--timeout");
    CHECK(strstr(err, "--timeout needs a value"));
    EXPECT_RC(2, NULL, "--coordinator", "not-an-address", "status");
    CHECK(strstr(err, "cannot connect to \"not-an-address\""));
    EXPECT_RC(2, NULL, "keygen", "d", "--name", "../x");
}

static void unreachable(void) {
    double t = xd_now();
    EXPECT_RC(3, NULL, "--coordinator", "tcp://127.0.0.1:1", "--timeout", "1", "status");
    CHECK(strstr(err, "no reply from the coordinator at tcp://127.0.0.1:1 within 1 s"));
    CHECK_MSG(xd_now() - t < 5, "the timeout is kept (%.1f s)", xd_now() - t);
    setenv("XCTL_COORDINATOR", "tcp://127.0.0.1:1", 1);
    EXPECT_RC(3, NULL, "--timeout", "0.5", "workers");
    CHECK(strstr(err, "tcp://127.0.0.1:1"));
    EXPECT_RC(3, NULL, "--timeout", "0.5", "wait", "run-1");
    unsetenv("XCTL_COORDINATOR");
}

static void check_key_file(const char *path, mode_t mode, char key[41]) {
    struct stat st;
    CHECK_MSG(stat(path, &st) == 0 && (st.st_mode & 0777) == mode, "%s has mode %o", path, (unsigned)(st.st_mode & 0777));
    char text[128];
    slurp(path, text, sizeof text);
    CHECK_MSG(strlen(text) == 41 && text[40] == '\n', "%s: 40 characters and a newline", path);
    text[40] = 0;
    uint8_t raw[32];
    CHECK_MSG(zmq_z85_decode(raw, text) != NULL, "%s is Z85", path);
    memcpy(key, text, 41);
}

static void keygen(void) {
    char dir[300], p[400], sec[41], pub[41], derived[41];
    snprintf(dir, sizeof dir, "%s/keys", tmp);
    EXPECT_RC(0, NULL, "keygen", dir, "--name", "server");
    snprintf(p, sizeof p, "%s/server.key", dir);
    check_key_file(p, 0600, sec);
    snprintf(p, sizeof p, "%s/server.pub", dir);
    check_key_file(p, 0644, pub);
    CHECK_MSG(strlen(out) == 41 && !strncmp(out, pub, 40), "the public key is printed: %s", out);
    CHECK(zmq_curve_public(derived, sec) == 0 && !strcmp(derived, pub));
    EXPECT_RC(1, NULL, "keygen", dir, "--name", "server");
    CHECK(strstr(err, "exists (--force to replace it)"));
    EXPECT_RC(0, NULL, "keygen", dir, "--name", "server", "--force");
    snprintf(p, sizeof p, "%s/server.pub", dir);
    char pub2[41];
    check_key_file(p, 0644, pub2);
    CHECK(strcmp(pub, pub2) != 0);
    EXPECT_RC(0, NULL, "keygen", dir); /* client by default */
    snprintf(p, sizeof p, "%s/client.key", dir);
    check_key_file(p, 0600, sec);
    EXPECT_RC(0, NULL, "keygen", dir, "--name", "worker", "--json");
    json_t *j = json_loads(out, 0, NULL);
    CHECK(j && json_string_length(json_object_get(j, "public")) == 40);
    json_decref(j);
}

static void commands(fake_coord *c, script *s) {
    char spec[300];
    snprintf(spec, sizeof spec, "%s/spec.yaml", tmp);
    FILE *f = fopen(spec, "w");
    fputs("name: smol\njobs: []\n", f);
    fclose(f);
    const char *ep = c->endpoint;
    EXPECT_RC(0, c, "--coordinator", ep, "submit", spec, "--name", "smol");
    CHECK(!strcmp(out, "run-1\n"));
    CHECK(!strcmp(last_type(s), "submit") && !strcmp(last_str(s, "spec"), "name: smol\njobs: []\n") &&
          !strcmp(last_str(s, "name"), "smol"));
    EXPECT_RC(0, c, "--coordinator", ep, "--json", "submit", spec);
    CHECK(parses(out) && strstr(out, "\"run-1\""));
    CHECK(!last_field(s, "name"));
    EXPECT_RC(1, c, "--coordinator", ep, "submit", "/nonexistent/spec.yaml");
    CHECK(strstr(err, "/nonexistent/spec.yaml"));

    setenv("XCTL_COORDINATOR", ep, 1);
    EXPECT_RC(0, c, "status");
    CHECK_MSG(strstr(out, "RUN") && strstr(out, "CREATED") && strstr(out, "run-1") && strstr(out, "smol") &&
                  strstr(out, "running=1 succeeded=1") && strstr(out, "1/2 succeeded") && strstr(out, "run-2") &&
                  strstr(out, "2024-01-01T00:00:00Z") && strstr(out, "2023-11-1"),
              "runs table:\n%s", out);
    CHECK(!strcmp(last_type(s), "query") && !last_field(s, "run"));
    EXPECT_RC(0, c, "status", "--json");
    CHECK(parses(out) && strstr(out, "\"runs\""));
    s->wait_calls = 0;
    EXPECT_RC(0, c, "status", "run-1");
    CHECK_MSG(strstr(out, "JOB") && strstr(out, "align") && strstr(out, "12/100") && strstr(out, "0.0231") &&
                  strstr(out, "prepare") && strstr(out, "succeeded"),
              "jobs table:\n%s", out);
    CHECK(!strcmp(last_str(s, "run"), "run-1"));
    EXPECT_RC(1, c, "status", "nope");
    CHECK(strstr(err, "no run \"nope\""));

    const char *actions[] = {"cancel", "retry", "hold", "release", "drain", "undrain"};
    for (size_t i = 0; i < 6; i++) {
        EXPECT_RC(0, c, actions[i], "target-1");
        CHECK_MSG(!strcmp(last_type(s), "control") && !strcmp(last_str(s, "action"), actions[i]) &&
                      !strcmp(last_str(s, "target"), "target-1"),
                  "%s sends control", actions[i]);
        char want[128];
        snprintf(want, sizeof want, "%s target-1: 1 job (run-1/align)\n", actions[i]);
        CHECK_MSG(!strcmp(out, want), "%s prints: %s", actions[i], out);
    }
    EXPECT_RC(0, c, "--json", "cancel", "run-1");
    CHECK(parses(out));
    EXPECT_RC(1, c, "cancel", "refused");
    CHECK(strstr(err, "not allowed (code 403)"));

    EXPECT_RC(0, c, "workers");
    CHECK_MSG(strstr(out, "WORKER") && strstr(out, "w1") && strstr(out, "cuda 0,1 (NVIDIA H100)") && strstr(out, "0.4 s") &&
                  strstr(out, "att-3"),
              "workers table:\n%s", out);
    EXPECT_RC(0, c, "workers", "--json");
    CHECK(parses(out));
    EXPECT_RC(0, c, "events", "run-1", "--since", "3");
    CHECK_MSG(strstr(out, "assigned") && strstr(out, "to w1") && strstr(out, "run-1/align") && strstr(out, "2023-11-1"),
              "events table:\n%s", out);
    CHECK(json_integer_value(last_field(s, "since")) == 3);
    EXPECT_RC(0, c, "--json", "events", "run-1");
    CHECK(parses(out));

    s->log_calls = 0;
    EXPECT_RC(0, c, "logs", "run-1/align", "--lines", "20");
    CHECK_MSG(!strcmp(out, "step 1/100  line a\nstep 2/100  line b\n") && json_integer_value(last_field(s, "lines")) == 20,
              "logs:\n%s", out);
    /* -f: new lines only, until the job (looked up in its run) has ended */
    s->log_calls = 0;
    s->wait_calls = 0;
    s->wait_end = "succeeded";
    EXPECT_RC(0, c, "logs", "run-1/align", "-f", "--interval", "0.1");
    CHECK_MSG(!strcmp(out, "step 1/100  line a\nstep 2/100  line b\nstep 3/100  line c\nstep 4/100  line d\n") &&
                  s->log_calls == 3,
              "logs -f prints each line once:\n%s", out);

    /* wait: running, running, then the end */
    s->wait_calls = 0;
    s->wait_end = "succeeded";
    EXPECT_RC(0, c, "wait", "run-1", "--interval", "0.1");
    CHECK_MSG(strstr(out, "align: running") && strstr(out, "align: succeeded") && s->wait_calls == 3, "wait:\n%s", out);
    s->wait_calls = 0;
    s->wait_end = "failed";
    EXPECT_RC(1, c, "wait", "run-1", "--interval", "0.1");
    CHECK(strstr(err, "run run-1 failed"));
    s->wait_calls = 0;
    s->wait_end = "succeeded";
    EXPECT_RC(0, c, "--json", "wait", "run-1", "--interval", "0.1");
    CHECK(parses(out));
    s->wait_calls = 0;
    s->wait_end = NULL;
    /* on a terminal: the live view, redrawn in place, with progress bars */
    if (access("/usr/bin/script", X_OK) == 0) {
        char line[600];
        snprintf(line, sizeof line, "%s wait run-1 --interval 0.1", xctl);
        tty_wrap = line;
        s->wait_calls = 0;
        s->wait_end = "succeeded";
        EXPECT_RC(0, c, NULL);
        tty_wrap = NULL;
        CHECK_MSG(strstr(out, "\033[4A\033[J") && strstr(out, "PROGRESS") && strstr(out, "[#####-------------------]  24/100") &&
                      strstr(out, "run run-1  smol  succeeded"),
                  "the live view:\n%s", out);
        s->wait_calls = 0;
        s->wait_end = NULL;
    }
    double t = xd_now();
    EXPECT_RC(3, c, "wait", "run-1", "--timeout", "1", "--interval", "0.2");
    CHECK(strstr(err, "still running after 1 s") && xd_now() - t < 5);
    unsetenv("XCTL_COORDINATOR");
}

/* xctl --keys against a CURVE coordinator; a wrong server key gets no reply. */
static void curve(script *s) {
    char dir[300], p[400], sec[41], pub[41];
    snprintf(dir, sizeof dir, "%s/keys", tmp);
    snprintf(p, sizeof p, "%s/server.key", dir);
    check_key_file(p, 0600, sec);
    fake_coord c;
    if (fake_coord_open_curve(&c, NULL, sec)) {
        CHECK_MSG(0, "a CURVE fake coordinator");
        return;
    }
    c.respond = respond;
    c.respond_ctx = s;
    EXPECT_RC(0, &c, "--coordinator", c.endpoint, "--keys", dir, "workers");
    CHECK(strstr(out, "w1"));
    snprintf(p, sizeof p, "%s/server.pub", dir);
    check_key_file(p, 0644, pub);
    char other[300];
    snprintf(other, sizeof other, "%s/other", tmp);
    mkdir(other, 0700);
    EXPECT_RC(0, NULL, "keygen", other, "--name", "server");
    EXPECT_RC(0, NULL, "keygen", other, "--name", "client");
    EXPECT_RC(3, &c, "--coordinator", c.endpoint, "--keys", other, "--timeout", "1", "workers");
    EXPECT_RC(1, NULL, "--keys", "/nonexistent", "workers");
    CHECK(strstr(err, "/nonexistent/client.key"));
    fake_coord_close(&c);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_xctl XCTL\n");
        return 2;
    }
    xctl = argv[1];
    snprintf(tmp, sizeof tmp, "/tmp/xd_xctl_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    unsetenv("XCTL_COORDINATOR");
    usage_errors();
    unreachable();
    keygen();
    script s = {0};
    fake_coord c;
    if (fake_coord_open(&c, NULL) == 0) {
        c.respond = respond;
        c.respond_ctx = &s;
        commands(&c, &s);
        fake_coord_close(&c);
    } else {
        CHECK_MSG(0, "the fake coordinator");
    }
    curve(&s);
    json_decref(s.last);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp);
    TEST_MAIN_END();
}
