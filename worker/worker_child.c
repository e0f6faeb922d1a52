/* The child xtrain of an attempt: written config, spawned in its own process group with its
 * output in a log, signalled as a group, reported when it exits. A pid file in the attempt's
 * directory lets the next xworker on this workdir kill a child that outlived its worker. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define WORKER_ERROR_LINES 20
#define WORKER_ERROR_BYTES 4000

static bool plain_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* The attempt's directory name: the id when it is a plain name, else (the coordinator's ids are
 * RUN/JOB#EPOCH) every other character as '_' and the first 8 hex digits of the id's SHA-256, so
 * two ids never share a directory and no id reaches outside attempts/. */
static void dir_name(const char *id, char *out, size_t cap) {
    size_t n = strlen(id);
    bool plain = n > 0 && n <= 200 && id[0] != '.';
    for (const char *c = id; *c && plain; c++) plain = plain_char(*c);
    if (plain) {
        snprintf(out, cap, "%s", id);
        return;
    }
    char hex[65];
    xd_sha256_hex(id, n, hex);
    size_t k = 0;
    for (const char *c = id; *c && k < 200 && k + 1 < cap; c++, k++) out[k] = plain_char(*c) && !(k == 0 && *c == '.') ? *c : '_';
    snprintf(out + k, cap - k, "-%.8s", hex);
}

/* mkdir -p */
static int make_dirs(const char *path, xd_err *e) {
    char p[WORKER_PATH_MAX];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return xd_fail(e, "%s: path too long", path);
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != 0) continue;
        char saved = *c;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return xd_fail(e, "%s: cannot create: %s", p, strerror(errno));
        *c = saved;
        if (!saved) break;
    }
    if (!xd_is_dir(path)) return xd_fail(e, "%s: not a directory", path);
    return 0;
}

/* Field 22 of /proc/PID/stat: the start time, which tells a reused pid apart. */
static unsigned long long start_time(int pid) {
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *c = strrchr(buf, ')');
    if (!c) return 0;
    unsigned long long v = 0;
    /* after ") ": state is field 3; the start time is field 22 */
    int field = 2;
    for (c++; *c && field < 22; c++)
        if (*c == ' ') field++;
    if (field == 22) v = strtoull(c, NULL, 10);
    return v;
}

static void pid_file(const worker_attempt *a, char *out, size_t cap) { snprintf(out, cap, "%s/pid", a->dir); }

void worker_reap_orphans(worker *w) {
    char dir[WORKER_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/attempts", w->workdir);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[WORKER_PATH_MAX + 300], *text = NULL;
        snprintf(p, sizeof p, "%s/%s/pid", dir, de->d_name);
        if (xd_read_file(p, 256, &text, NULL, NULL)) continue;
        int pid = 0, wpid = 0;
        unsigned long long st = 0, wst = 0;
        int n = sscanf(text, "%d %llu %d %llu", &pid, &st, &wpid, &wst);
        free(text);
        if (n != 4 || pid <= 1) continue;
        if (wpid > 0 && start_time(wpid) == wst && wst != 0) continue; /* its worker still runs */
        if (start_time(pid) == st && st != 0) {
            xd_warn("killing xtrain %d of attempt %s, left running by an earlier xworker", pid, de->d_name);
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
        unlink(p);
    }
    closedir(d);
}

/* The last lines of the child's log, for done's error. */
static char *log_tail(const worker_attempt *a) {
    char p[WORKER_PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/log.txt", a->dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    char buf[WORKER_ERROR_BYTES + 1];
    ssize_t n = 0;
    if (fd >= 0) {
        off_t size = lseek(fd, 0, SEEK_END);
        off_t from = size > WORKER_ERROR_BYTES ? size - WORKER_ERROR_BYTES : 0;
        n = pread(fd, buf, WORKER_ERROR_BYTES, from);
        close(fd);
    }
    if (n < 0) n = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    buf[n] = 0;
    char *start = buf;
    int lines = 0;
    for (char *c = buf + n; c > buf; c--)
        if (c[-1] == '\n' && ++lines == WORKER_ERROR_LINES) {
            start = c;
            break;
        }
    for (char *c = start; *c; c++) /* control characters out */
        if ((unsigned char)*c < 0x20 && *c != '\n' && *c != '\t') *c = ' ';
    return strdup(start);
}

static void on_closed(uv_handle_t *h) {
    worker_attempt *a = h->data;
    if (--a->closing > 0) return;
    worker_tail_free(a);
    free(a);
}

static void close_attempt(worker_attempt *a) {
    a->closing = 2;
    uv_close((uv_handle_t *)&a->proc, on_closed);
    uv_close((uv_handle_t *)&a->kill_timer, on_closed);
}

/* What the stage made: a training stage's OUT/model, else OUT (init's and merge's model, eval's
 * report, prepare's shards). */
static json_t *done_fields(const worker_attempt *a, bool ok, int exit_code, const char *error) {
    json_t *err = json_string(error ? error : "");
    if (!err) err = json_string("(the log is not UTF-8)");
    char output[WORKER_PATH_MAX + 8];
    snprintf(output, sizeof output, "%s/model", a->out);
    if (!(!strcmp(a->stage, "align") || !strcmp(a->stage, "distill")) || !xd_is_dir(output))
        snprintf(output, sizeof output, "%s", a->out);
    json_t *out = json_string(output);
    return json_pack("{s:s, s:I, s:b, s:i, s:o, s:o}", "attempt", a->id, "epoch", (json_int_t)a->epoch, "ok", ok,
                     "exit_code", exit_code, "error", err, "output", out ? out : json_string(""));
}

static void on_exit(uv_process_t *p, int64_t status, int term_signal) {
    worker_attempt *a = p->data;
    worker *w = a->w;
    a->exited = true;
    w->children--;
    uv_timer_stop(&a->kill_timer);
    char pf[WORKER_PATH_MAX + 8];
    pid_file(a, pf, sizeof pf);
    unlink(pf);
    int code = term_signal ? 128 + term_signal : (int)status;
    if (a->end == WORKER_END_FENCE) {
        xd_info("attempt %s (fenced): child %d ended (%s %d)", a->id, a->pid,
                term_signal ? "signal" : "exit", term_signal ? term_signal : (int)status);
    } else {
        worker_tail_poll(a); /* the last lines and checkpoint before done */
        bool ok = a->end == WORKER_END_NONE && status == 0 && term_signal == 0;
        char *error = NULL;
        if (a->end == WORKER_END_CANCEL) {
            error = strdup("cancelled");
        } else if (a->end == WORKER_END_DRAIN) {
            error = strdup("drained");
        } else if (!ok) {
            char *tail = log_tail(a), head[64];
            if (term_signal) snprintf(head, sizeof head, "xtrain killed by signal %d", term_signal);
            else snprintf(head, sizeof head, "xtrain exited with %d", (int)status);
            size_t n = strlen(head) + (tail ? strlen(tail) : 0) + 4;
            error = malloc(n);
            if (error) snprintf(error, n, "%s%s%s", head, tail && *tail ? ":\n" : "", tail ? tail : "");
            free(tail);
        }
        xd_info("attempt %s: %s (%s %d)", a->id, ok ? "succeeded" : error ? error : "failed",
                term_signal ? "signal" : "exit", term_signal ? term_signal : (int)status);
        worker_send_done(w, done_fields(a, ok, code, ok ? "" : error));
        free(error);
    }
    if (w->cur == a) w->cur = NULL;
    close_attempt(a);
    worker_attempt_finished(w);
}

static void on_kill_timer(uv_timer_t *t) {
    worker_attempt *a = t->data;
    if (a->exited) return;
    xd_warn("attempt %s: child %d still runs after SIGTERM: SIGKILL", a->id, a->pid);
    worker_signal_child(a, SIGKILL);
}

void worker_signal_child(worker_attempt *a, int sig) {
    if (!a->spawned || a->exited || a->pid <= 1) return;
    if (kill(-a->pid, sig) != 0) kill(a->pid, sig);
}

void worker_stop_child(worker_attempt *a, worker_end end, double grace_s) {
    if (a->end != WORKER_END_FENCE) a->end = end;
    if (!a->spawned || a->exited) return;
    if (grace_s <= 0) {
        worker_signal_child(a, SIGKILL);
        return;
    }
    worker_signal_child(a, SIGTERM);
    uv_timer_start(&a->kill_timer, on_kill_timer, (uint64_t)(grace_s * 1000), 0);
}

/* Writes the config, opens the log and spawns. */
static int launch(worker *w, worker_attempt *a, json_t *m, xd_err *e) {
    const char *config = json_string_value(json_object_get(m, "config"));
    json_t *gpus = json_object_get(m, "gpus");
    char path[WORKER_PATH_MAX + 32], cvd[512] = "";
    size_t at = 0;
    for (size_t i = 0; i < json_array_size(gpus); i++) {
        json_int_t g = json_integer_value(json_array_get(gpus, i));
        bool mine = false;
        for (int d = 0; d < w->n_devices; d++)
            if (!strcmp(w->devices[d].kind, "cuda") && w->devices[d].index == g) mine = true;
        if (!mine) return xd_fail(e, "gpu %lld is not one of this worker's devices", (long long)g);
        int n = snprintf(cvd + at, sizeof cvd - at, "%s%lld", at ? "," : "", (long long)g);
        if (n < 0 || (size_t)n >= sizeof cvd - at) return xd_fail(e, "too many gpus");
        at += (size_t)n;
    }
    if (make_dirs(a->dir, e)) return -1;
    snprintf(path, sizeof path, "%s/config.yaml", a->dir);
    if (xd_write_file_atomic(path, config, strlen(config), e)) return -1;
    worker_argv av;
    if (worker_stage_argv(w->xtrain, a->stage, path, config, w->workdir, (int)json_array_size(gpus), a->out,
                          sizeof a->out, &av, &a->total, e))
        return -1;
    char *slash = strrchr(a->out, '/');
    if (slash && slash != a->out) {
        *slash = 0;
        int rc = make_dirs(a->out, e);
        *slash = '/';
        if (rc) {
            worker_argv_free(&av);
            return -1;
        }
    }
    worker_tail_init(a);

    snprintf(path, sizeof path, "%s/log.txt", a->dir);
    int logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        worker_argv_free(&av);
        return xd_fail(e, "%s: cannot open: %s", path, strerror(errno));
    }
    char line[2048];
    int n = snprintf(line, sizeof line, "== xworker %s: attempt %s (epoch %lld) of job %s:", w->name, a->id, a->epoch, a->job);
    for (int i = 0; i < av.argc && n > 0 && (size_t)n < sizeof line; i++)
        n += snprintf(line + n, sizeof line - (size_t)n, " %s", av.argv[i]);
    if (n > 0 && (size_t)n < sizeof line - 1) {
        line[n++] = '\n';
        if (write(logfd, line, (size_t)n) < 0) { /* the log is best effort */
        }
    }

    /* the environment, with this attempt's GPUs (none: CUDA hidden) */
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **env = calloc(n_env + 4, sizeof *env);
    char cuda[600], xa[WORKER_ID_MAX + 16], xj[WORKER_ID_MAX + 16];
    snprintf(cuda, sizeof cuda, "CUDA_VISIBLE_DEVICES=%s", cvd);
    snprintf(xa, sizeof xa, "XD_ATTEMPT=%s", a->id);
    snprintf(xj, sizeof xj, "XD_JOB=%s", a->job);
    size_t k = 0;
    if (env) {
        for (size_t i = 0; i < n_env; i++)
            if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21) && strncmp(environ[i], "XD_ATTEMPT=", 11) &&
                strncmp(environ[i], "XD_JOB=", 7))
                env[k++] = environ[i];
        env[k++] = cuda;
        env[k++] = xa;
        env[k++] = xj;
    }

    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = logfd},
        {.flags = UV_INHERIT_FD, .data.fd = logfd},
    };
    uv_process_options_t opt = {
        .exit_cb = on_exit,
        .file = w->xtrain,
        .args = av.argv,
        .env = env,
        .cwd = w->workdir,
        .flags = UV_PROCESS_DETACHED, /* its own process group: signalled as one */
        .stdio_count = 3,
        .stdio = stdio,
    };
    a->proc.data = a;
    int rc = env ? uv_spawn(w->loop, &a->proc, &opt) : UV_ENOMEM;
    a->proc_init = true; /* uv_spawn initialises the handle even when it fails */
    a->proc.data = a;
    close(logfd);
    free(env);
    worker_argv_free(&av);
    if (rc != 0) return xd_fail(e, "cannot start %s: %s", w->xtrain, uv_strerror(rc));
    a->spawned = true;
    a->pid = a->proc.pid;
    w->children++;
    char pf[WORKER_PATH_MAX + 8], rec[128];
    pid_file(a, pf, sizeof pf);
    snprintf(rec, sizeof rec, "%d %llu %d %llu\n", a->pid, start_time(a->pid), (int)getpid(), start_time((int)getpid()));
    xd_err ignored;
    xd_write_file_atomic(pf, rec, strlen(rec), &ignored);
    xd_info("attempt %s (epoch %lld) of job %s: xtrain %s started, pid %d%s%s", a->id, a->epoch, a->job,
            a->stage, a->pid, cvd[0] ? ", CUDA_VISIBLE_DEVICES=" : "", cvd);
    return 0;
}

int worker_start_attempt(worker *w, json_t *m) {
    worker_attempt *a = calloc(1, sizeof *a);
    if (!a) {
        xd_log(XD_LOG_ERROR, "out of memory: assign ignored");
        return -1;
    }
    a->w = w;
    a->epoch = (long long)json_integer_value(json_object_get(m, "epoch"));
    const char *id = json_string_value(json_object_get(m, "attempt"));
    const char *job = json_string_value(json_object_get(m, "job"));
    const char *stage = json_string_value(json_object_get(m, "stage"));
    const char *out = json_string_value(json_object_get(m, "workdir"));
    snprintf(a->id, sizeof a->id, "%s", id ? id : "");
    dir_name(a->id, a->dirname, sizeof a->dirname);
    snprintf(a->job, sizeof a->job, "%s", job ? job : "");
    snprintf(a->stage, sizeof a->stage, "%s", stage ? stage : "");
    uv_timer_init(w->loop, &a->kill_timer);
    a->kill_timer.data = a;
    w->cur = a;
    worker_send(w, PROTO_ACCEPT, json_pack("{s:s, s:I}", "attempt", a->id, "epoch", (json_int_t)a->epoch));

    xd_err e = {{0}};
    int rc = 0;
    if (!id || !*id || strlen(id) >= WORKER_ID_MAX) {
        rc = xd_fail(&e, "the attempt id is empty or longer than %d bytes", WORKER_ID_MAX - 1);
    } else if (!stage || !worker_stage_known(stage)) {
        rc = xd_fail(&e, "unknown stage \"%.64s\" (init, align, distill, merge, eval, prepare)", stage ? stage : "");
    } else if (!out || !*out) {
        rc = xd_fail(&e, "the assign has an empty workdir");
    } else if (snprintf(a->dir, sizeof a->dir, "%s/attempts/%s", w->workdir, a->dirname) >= (int)sizeof a->dir ||
               (out[0] == '/' ? snprintf(a->out, sizeof a->out, "%s", out)
                              : snprintf(a->out, sizeof a->out, "%s/%s", w->workdir, out)) >= (int)sizeof a->out) {
        rc = xd_fail(&e, "paths too long");
    } else {
        size_t n = strlen(a->out);
        while (n > 1 && a->out[n - 1] == '/') a->out[--n] = 0;
        rc = launch(w, a, m, &e);
    }
    if (rc == 0) return 0;
    xd_warn("attempt %s failed to start: %s", a->id, e.msg);
    worker_send_done(w, done_fields(a, false, -1, e.msg));
    w->cur = NULL;
    if (a->proc_init) {
        close_attempt(a);
    } else {
        a->closing = 1;
        uv_close((uv_handle_t *)&a->kill_timer, on_closed);
    }
    worker_attempt_finished(w);
    return -1;
}
