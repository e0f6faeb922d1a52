/* Forwards what the child writes: each new line of OUT/metrics.jsonl as progress, each new
 * OUT/checkpoints/step-N/DONE as checkpoint. xtrain rewrites metrics.jsonl (a new file, renamed
 * over the old one) when it resumes, keeping the lines up to its checkpoint; so the file of an
 * earlier attempt is ignored, a new or shorter file is read from its start, and only lines with
 * a step beyond the last one sent (and beyond the newest checkpoint at the start) go out. */
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKER_LINE_MAX (256u << 10) /* longer metrics lines are skipped */
#define WORKER_READ_MAX (4u << 20)   /* bytes read per poll */

/* The N of "step-N" (digits only; ".tmp" directories are not checkpoints). */
static long parse_step_dir(const char *name) {
    if (strncmp(name, "step-", 5) != 0 || !name[5]) return -1;
    long v = 0;
    for (const char *c = name + 5; *c; c++) {
        if (*c < '0' || *c > '9' || v > 100000000000L) return -1;
        v = v * 10 + (*c - '0');
    }
    return v;
}

/* The newest complete checkpoint's step, or -1; its directory name into name (may be NULL). */
static long newest_checkpoint(const char *out, char name[256]) {
    char dir[WORKER_PATH_MAX + 16], p[WORKER_PATH_MAX + 300];
    snprintf(dir, sizeof dir, "%s/checkpoints", out);
    DIR *d = opendir(dir);
    if (!d) return -1;
    long best = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        long s = parse_step_dir(de->d_name);
        if (s <= best) continue;
        snprintf(p, sizeof p, "%s/%s/DONE", dir, de->d_name);
        if (!xd_file_exists(p)) continue;
        best = s;
        if (name) snprintf(name, 256, "%s", de->d_name);
    }
    closedir(d);
    return best;
}

void worker_tail_init(worker_attempt *a) {
    char p[WORKER_PATH_MAX + 16];
    struct stat st;
    snprintf(p, sizeof p, "%s/metrics.jsonl", a->out);
    a->old_ino = stat(p, &st) == 0 ? (unsigned long long)st.st_ino : 0;
    a->ino = 0;
    a->offset = 0;
    a->last_ckpt = newest_checkpoint(a->out, NULL);
    a->last_step = a->last_ckpt > 0 ? a->last_ckpt : 0;
    free(a->partial);
    a->partial = NULL;
    a->partial_len = 0;
}

void worker_tail_free(worker_attempt *a) {
    free(a->partial);
    a->partial = NULL;
    a->partial_len = 0;
}

static void send_line(worker_attempt *a, const char *line, size_t len) {
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    json_t *step = o ? json_object_get(o, "step") : NULL;
    if (!json_is_integer(step) && !json_is_real(step)) {
        xd_debug("attempt %s: a metrics line without a step skipped", a->id);
        json_decref(o);
        return;
    }
    long s = json_is_integer(step) ? (long)json_integer_value(step) : (long)json_real_value(step);
    json_decref(o);
    if (s <= a->last_step) return;
    a->last_step = s;
    json_t *metrics = json_stringn(line, len);
    if (!metrics) return; /* not UTF-8 */
    worker_send(a->w, PROTO_PROGRESS,
                json_pack("{s:s, s:I, s:I, s:I, s:o}", "attempt", a->id, "epoch", (json_int_t)a->epoch,
                          "step", (json_int_t)s, "total", (json_int_t)a->total, "metrics", metrics));
}

/* Complete lines of buf (with what was left over from the last read) go out; the rest waits. */
static void take_lines(worker_attempt *a, const char *buf, size_t n) {
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != '\n') continue;
        if (a->partial_len) {
            size_t add = i - start;
            if (a->partial_len + add <= WORKER_LINE_MAX) {
                char *grown = realloc(a->partial, a->partial_len + add + 1);
                if (grown) {
                    memcpy(grown + a->partial_len, buf + start, add);
                    a->partial = grown;
                    send_line(a, grown, a->partial_len + add);
                }
            }
            free(a->partial);
            a->partial = NULL;
            a->partial_len = 0;
        } else if (i - start <= WORKER_LINE_MAX) {
            send_line(a, buf + start, i - start);
        }
        start = i + 1;
    }
    size_t rest = n - start;
    if (rest == 0) return;
    if (a->partial_len + rest > WORKER_LINE_MAX) { /* a runaway line: dropped when it ends */
        a->partial_len = WORKER_LINE_MAX + 1;
        return;
    }
    char *grown = realloc(a->partial, a->partial_len + rest + 1);
    if (!grown) return;
    memcpy(grown + a->partial_len, buf + start, rest);
    a->partial = grown;
    a->partial_len += rest;
}

static void poll_metrics(worker_attempt *a) {
    char p[WORKER_PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/metrics.jsonl", a->out);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || (unsigned long long)st.st_ino == a->old_ino) {
        close(fd);
        return;
    }
    if ((unsigned long long)st.st_ino != a->ino || st.st_size < a->offset) {
        a->ino = (unsigned long long)st.st_ino; /* a new or rewritten file: from its start */
        a->offset = 0;
        free(a->partial);
        a->partial = NULL;
        a->partial_len = 0;
    }
    size_t want = st.st_size - a->offset > (long long)WORKER_READ_MAX ? WORKER_READ_MAX
                                                                      : (size_t)(st.st_size - a->offset);
    if (want > 0) {
        char *buf = malloc(want);
        ssize_t got = buf ? pread(fd, buf, want, a->offset) : -1;
        if (got > 0) {
            a->offset += got;
            take_lines(a, buf, (size_t)got);
        }
        free(buf);
    }
    close(fd);
}

static void poll_checkpoints(worker_attempt *a) {
    char name[256];
    long s = newest_checkpoint(a->out, name);
    if (s <= a->last_ckpt) return;
    a->last_ckpt = s;
    char p[WORKER_PATH_MAX + 300];
    snprintf(p, sizeof p, "%s/checkpoints/%s", a->out, name);
    worker_send(a->w, PROTO_CHECKPOINT,
                json_pack("{s:s, s:I, s:I, s:s}", "attempt", a->id, "epoch", (json_int_t)a->epoch,
                          "step", (json_int_t)s, "path", p));
}

void worker_tail_poll(worker_attempt *a) {
    poll_metrics(a);
    poll_checkpoints(a);
}
