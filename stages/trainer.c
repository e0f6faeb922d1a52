#define _XOPEN_SOURCE 700
#include "trainer.h"
#ifdef XD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "model/gpu.h"
#endif
#include "stages.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>

#include "kernels/kernels.h"
#include "model/data.h"

#include <jansson.h>

#define OPTIM_MAGIC "XDOPTIM1"

static int make_dir(const char *path, xd_err *e) {
    if (mkdir(path, 0755) == 0 || (errno == EEXIST && xd_is_dir(path))) return 0;
    return xd_fail(e, "%s: cannot create directory: %s", path, strerror(errno));
}

static void fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Keeps the lines of metrics.jsonl whose "step" is at most last_step. */
static int truncate_metrics(const char *path, long last_step, xd_err *e) {
    char *text;
    size_t len;
    if (!xd_file_exists(path)) return 0;
    if (xd_read_file(path, 1u << 30, &text, &len, e)) return -1;
    size_t keep = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break; /* a torn last line (the process died mid-write) is dropped */
        const char *s = strstr(line, "\"step\":");
        long step = s && s < nl ? strtol(s + 7, NULL, 10) : -1;
        if (step > last_step) break;
        keep = (size_t)(nl + 1 - text);
        line = nl + 1;
    }
    int rc = xd_write_file_atomic(path, text, keep, e);
    free(text);
    return rc;
}

int trainer_open(trainer_run *r, const char *out, const char *stage, long resume_step, xd_err *e) {
    memset(r, 0, sizeof *r);
    snprintf(r->out, sizeof r->out, "%s", out);
    snprintf(r->stage, sizeof r->stage, "%s", stage);
    char path[1200];
    if (make_dir(out, e)) return -1;
    snprintf(path, sizeof path, "%s/checkpoints", out);
    if (make_dir(path, e)) return -1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    if (truncate_metrics(path, resume_step, e)) return -1;
    r->metrics = fopen(path, "a");
    if (!r->metrics) return xd_fail(e, "%s: cannot open: %s", path, strerror(errno));
    r->tty = isatty(STDERR_FILENO);
    r->t_start = xd_now();
    r->first_step = resume_step;
    return 0;
}

void trainer_close(trainer_run *r) {
    if (r->metrics) fclose(r->metrics);
    r->metrics = NULL;
}

int trainer_metrics(trainer_run *r, const char *line, xd_err *e) {
    if (!r->metrics) return 0; /* a data-parallel rank other than 0: rank 0 writes */
    if (fputs(line, r->metrics) < 0 || fputc('\n', r->metrics) < 0 || fflush(r->metrics) != 0)
        return xd_fail(e, "%s/metrics.jsonl: write failed", r->out);
    return 0;
}

void trainer_progress(trainer_run *r, long step, long total, const char *fmt, ...) {
    double now = xd_now();
    if (!r->tty || (now - r->last_progress < 0.5 && step < total)) return;
    r->last_progress = now;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    double rate = (double)(step - r->first_step) / (now - r->t_start);
    double eta = rate > 0 ? (double)(total - step) / rate : 0;
    fprintf(stderr, "\r[%s] step %ld/%ld  %s  ETA %.0fs   ", r->stage, step, total, msg, eta);
}

void trainer_progress_end(trainer_run *r) {
    if (r->tty) fprintf(stderr, "\n");
}

static int write_optim(const char *path, const trainer_optim *o, xd_err *e) {
    size_t bytes = 32 + 2 * sizeof(float) * o->n;
    unsigned char *buf = xd_malloc(bytes, e);
    if (!buf) return -1;
    memcpy(buf, OPTIM_MAGIC, 8);
    uint32_t version = 1, reserved = 0;
    uint64_t n = o->n, step = (uint64_t)o->step;
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 12, &reserved, 4);
    memcpy(buf + 16, &n, 8);
    memcpy(buf + 24, &step, 8);
    memcpy(buf + 32, o->m, sizeof(float) * o->n);
    memcpy(buf + 32 + sizeof(float) * o->n, o->v, sizeof(float) * o->n);
    int rc = xd_write_file_atomic(path, buf, bytes, e);
    free(buf);
    return rc;
}

static long parse_step_dir(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    char *end;
    long s = strtol(name + 5, &end, 10);
    return *end == 0 && s >= 0 ? s : -1;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[2048];
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(dir);
}

/* Removes all but the newest `keep` complete checkpoints, and any leftover .tmp directory. */
static void prune(const char *out, int keep) {
    char dir[1200], p[2048];
    snprintf(dir, sizeof dir, "%s/checkpoints", out);
    DIR *d = opendir(dir);
    if (!d) return;
    long steps[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096) {
        long s = parse_step_dir(de->d_name);
        if (s >= 0) steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer >= keep) {
            snprintf(p, sizeof p, "%s/step-%08ld", dir, steps[i]);
            remove_tree(p);
        }
    }
}

int trainer_checkpoint_save(const char *out, long step, const model_transformer *model,
                            const char *tokenizer_source, const trainer_optim *opt,
                            const char *state_json, int keep, xd_err *e) {
    char tmp[1300], final[1200], p[1400];
    snprintf(final, sizeof final, "%s/checkpoints/step-%08ld", out, step);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    remove_tree(tmp); /* a previous attempt that died half-way */
    if (make_dir(tmp, e)) return -1;
    if (model_save(model, tmp, tokenizer_source, e)) return -1;
    snprintf(p, sizeof p, "%s/optimizer.bin", tmp);
    if (write_optim(p, opt, e)) return -1;
    snprintf(p, sizeof p, "%s/trainer_state.json", tmp);
    if (xd_write_file_atomic(p, state_json, strlen(state_json), e)) return -1;
    snprintf(p, sizeof p, "%s/DONE", tmp);
    if (xd_write_file_atomic(p, "", 0, e)) return -1;
    remove_tree(final);
    if (rename(tmp, final) != 0) return xd_fail(e, "%s: rename failed: %s", final, strerror(errno));
    snprintf(p, sizeof p, "%s/checkpoints", out);
    fsync_path(p);
    prune(out, keep > 0 ? keep : 1);
    return 0;
}

int trainer_checkpoint_latest(const char *out, char *path, size_t cap, long *step, xd_err *e) {
    char dir[1200], p[1600];
    snprintf(dir, sizeof dir, "%s/checkpoints", out);
    DIR *d = opendir(dir);
    if (!d) return 1;
    long best = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        long s = parse_step_dir(de->d_name);
        snprintf(p, sizeof p, "%s/%s/DONE", dir, de->d_name);
        if (s > best && xd_file_exists(p)) best = s;
    }
    closedir(d);
    if (best < 0) return 1;
    int n = snprintf(path, cap, "%s/step-%08ld", dir, best);
    if (n < 0 || (size_t)n >= cap) return xd_fail(e, "%s: path too long", dir);
    *step = best;
    return 0;
}

int trainer_checkpoint_load_optim(const char *ckpt, trainer_optim *o, xd_err *e) {
    char p[1300];
    snprintf(p, sizeof p, "%s/optimizer.bin", ckpt);
    xd_mapped_file f;
    if (xd_map_file(p, &f, e)) return -1;
    int rc = 0;
    uint64_t n = 0, step = 0;
    if (f.size < 32 || memcmp(f.data, OPTIM_MAGIC, 8) != 0) {
        rc = xd_fail(e, "%s: not an xdistill optimizer state (bad magic)", p);
    } else {
        memcpy(&n, f.data + 16, 8);
        memcpy(&step, f.data + 24, 8);
        if (n != o->n) rc = xd_fail(e, "%s: holds %llu parameters, this run trains %llu", p,
                                    (unsigned long long)n, (unsigned long long)o->n);
        else if (f.size != 32 + 2 * sizeof(float) * n) rc = xd_fail(e, "%s: truncated", p);
    }
    if (rc == 0) {
        memcpy(o->m, f.data + 32, sizeof(float) * n);
        memcpy(o->v, f.data + 32 + sizeof(float) * n, sizeof(float) * n);
        o->step = (long)step;
    }
    xd_unmap_file(&f);
    return rc;
}

int trainer_checkpoint_load_state(const char *ckpt, char **json, xd_err *e) {
    char p[1300];
    snprintf(p, sizeof p, "%s/trainer_state.json", ckpt);
    return xd_read_file(p, 64u << 20, json, NULL, e);
}

/* OUT/model as hard links to a checkpoint's model files: the same bytes, stored once (a student
 * of a 1B teacher is 4+ GB in fp32). Files are only ever replaced by rename, never rewritten in
 * place, so sharing an inode is safe. 1 when linking is not possible here (another filesystem). */
static int link_model(const char *ckpt, const char *dir, xd_err *e) {
    /* the tokenizer files first: a checkpoint written before students carried them has none */
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json", "model.safetensors",
                                  "config.json"};
    if (make_dir(dir, e)) return -1;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char src[1400], dst[1400], tmp[1500];
        snprintf(src, sizeof src, "%s/%s", ckpt, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        snprintf(tmp, sizeof tmp, "%s.link.tmp", dst);
        if (i < 2 && !xd_file_exists(src)) continue;
        struct stat a, b;
        if (stat(src, &a) == 0 && stat(dst, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            continue; /* linked already (a finished stage run again); rename would leave tmp behind */
        unlink(tmp);
        if (link(src, tmp) != 0) return 1;
        if (rename(tmp, dst) != 0) {
            unlink(tmp);
            return xd_fail(e, "%s: rename failed: %s", dst, strerror(errno));
        }
    }
    fsync_path(dir);
    return 0;
}

int trainer_finish(const char *out, const model_transformer *model, const char *tokenizer_source,
                   const char *same_as_checkpoint, const char *summary_json, xd_err *e) {
    char p[1200];
    snprintf(p, sizeof p, "%s/model", out);
    int linked = same_as_checkpoint && !tokenizer_source ? link_model(same_as_checkpoint, p, e) : 1;
    if (linked < 0) return -1;
    if (linked == 1 && model_save(model, p, tokenizer_source, e)) return -1;
    snprintf(p, sizeof p, "%s/DONE", out);
    return xd_write_file_atomic(p, summary_json, strlen(summary_json), e);
}

int trainer_ranges_select(const model_layout *L, bool (*keep)(const model_tensor_entry *, void *),
                          void *ctx, trainer_ranges *r, xd_err *e) {
    memset(r, 0, sizeof *r);
    r->offset = xd_calloc((size_t)L->n_entries, sizeof(uint64_t), e);
    r->count = xd_calloc((size_t)L->n_entries, sizeof(uint64_t), e);
    if (!r->offset || !r->count) {
        trainer_ranges_free(r);
        return -1;
    }
    for (int i = 0; i < L->n_entries; i++) {
        const model_tensor_entry *t = &L->entries[i];
        if (!keep(t, ctx)) continue;
        /* entries are laid out back to back, so neighbours merge into one range */
        if (r->n > 0 && r->offset[r->n - 1] + r->count[r->n - 1] == t->offset) {
            r->count[r->n - 1] += t->count;
        } else {
            r->offset[r->n] = t->offset;
            r->count[r->n++] = t->count;
        }
        r->total += t->count;
    }
    if (r->total == 0) {
        trainer_ranges_free(r);
        return xd_fail(e, "nothing to train: no tensor selected");
    }
    return 0;
}

void trainer_ranges_free(trainer_ranges *r) {
    free(r->offset);
    free(r->count);
    memset(r, 0, sizeof *r);
}

double trainer_clip(float *grads, const trainer_ranges *r, double max_norm) {
    double ss = 0;
    for (int k = 0; k < r->n; k++)
        for (uint64_t i = 0; i < r->count[k]; i++) {
            double g = grads[r->offset[k] + i];
            ss += g * g;
        }
    double norm = sqrt(ss);
    if (!isfinite(norm) || max_norm <= 0) return norm;
    double scale = max_norm / (norm + 1e-6);
    if (scale < 1)
        for (int k = 0; k < r->n; k++)
            for (uint64_t i = 0; i < r->count[k]; i++) grads[r->offset[k] + i] *= (float)scale;
    return norm;
}

void trainer_adamw(float *params, const float *grads, const trainer_ranges *r, trainer_optim *o,
                   double lr, double beta1, double beta2, double eps, double weight_decay) {
    kern_adamw cfg = {lr, beta1, beta2, eps, weight_decay};
    o->step++;
    uint64_t packed = 0;
    for (int k = 0; k < r->n; k++) {
        kern_adamw_step(params + r->offset[k], grads + r->offset[k], o->m + packed, o->v + packed,
                        r->count[k], &cfg, o->step);
        packed += r->count[k];
    }
}

int trainer_optim_init(trainer_optim *o, uint64_t n, xd_err *e) {
    o->n = n;
    o->step = 0;
    o->m = xd_calloc(n, sizeof(float), e);
    o->v = o->m ? xd_calloc(n, sizeof(float), e) : NULL;
    if (!o->v) {
        trainer_optim_free(o);
        return -1;
    }
    return 0;
}

void trainer_optim_free(trainer_optim *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

int trainer_restore(const char *ckpt, trainer_optim *opt, model_data_loader *loader, long *step,
                    double *tokens, xd_err *e) {
    char *text;
    if (trainer_checkpoint_load_optim(ckpt, opt, e) || trainer_checkpoint_load_state(ckpt, &text, e))
        return -1;
    json_error_t je;
    json_t *st = json_loads(text, 0, &je);
    free(text);
    int rc = 0;
    json_t *ld = st ? json_object_get(st, "loader") : NULL, *sp = st ? json_object_get(st, "step") : NULL;
    model_data_state ds;
    if (!st || !json_is_integer(sp) || !ld) {
        rc = xd_fail(e, "%s/trainer_state.json: malformed (no step or loader)", ckpt);
    } else if (model_data_state_from_json(ld, &ds, e) || model_data_loader_restore(loader, &ds, e)) {
        rc = xd_wrap(e, "%s/trainer_state.json: cannot restore the data position", ckpt);
    } else {
        *step = (long)json_integer_value(sp);
        *tokens = json_number_value(json_object_get(st, "tokens"));
    }
    json_decref(st);
    return rc;
}

char *trainer_state_json(const char *stage, long step, double tokens,
                         const model_data_loader *loader, const char *settings_json) {
    model_data_state ds;
    model_data_loader_state(loader, &ds);
    json_t *settings = settings_json ? json_loads(settings_json, 0, NULL) : NULL;
    json_t *st = json_pack("{s:s, s:I, s:f, s:o, s:o}", "stage", stage, "step", (json_int_t)step,
                           "tokens", tokens, "loader", model_data_state_to_json(&ds), "settings",
                           settings ? settings : json_object());
    char *text = json_dumps(st, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(st);
    return text;
}

/* ---- the session ---- */

int trainer_settings_fields(trainer_settings *s, cfg_field *f, const char *student_help, const char *lr,
                            const char *lr_min, const char *schedule, const char *weight_decay) {
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &s->teacher, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"student", CFG_STRING, &s->student, NULL, student_help, 0, 0},
        {"out", CFG_STRING, &s->out, NULL, "run directory (checkpoints, metrics, model/)", 0, 0},
        {"data", CFG_SOURCES, &s->data, NULL, "token shard directories with mixture weights", 0, 0},
        {"seq_len", CFG_INT, &s->seq_len, "256", "tokens per sequence", 2, 1 << 20},
        {"batch", CFG_INT, &s->batch, "4", "sequences per step", 1, 1 << 20},
        {"micro_batch", CFG_INT, &s->micro_batch, "0",
         "sequences per pass on the device (0: the whole batch); must divide batch", 0, 1 << 20},
        {"device", CFG_STRING, &s->device, "cpu", "cpu, cuda or cuda:N (the CUDA build)", 0, 0},
        {"steps", CFG_INT, &s->steps, "100", "optimizer steps", 1, 1e12},
        {"lr", CFG_NUMBER, &s->lr, lr, "peak learning rate", 0, 10},
        {"lr_min", CFG_NUMBER, &s->lr_min, lr_min, "final learning rate of the cosine", 0, 10},
        {"warmup", CFG_INT, &s->warmup, "10", "warm-up steps", 0, 1e12},
        {"schedule", CFG_STRING, &s->schedule, schedule, "cosine or constant after warm-up", 0, 0},
        {"weight_decay", CFG_NUMBER, &s->weight_decay, weight_decay, "AdamW decoupled weight decay", 0, 10},
        {"grad_clip", CFG_NUMBER, &s->grad_clip, "1.0", "global gradient-norm clip (0: off)", 0, 1e9},
        {"beta1", CFG_NUMBER, &s->beta1, "0.9", "AdamW beta1", 0, 1},
        {"beta2", CFG_NUMBER, &s->beta2, "0.999", "AdamW beta2", 0, 1},
        {"eps", CFG_NUMBER, &s->eps, "1e-8", "AdamW epsilon", 0, 1},
        {"seed", CFG_INT, &s->seed, "0", "data order seed", 0, 9e18},
        {"checkpoint_every", CFG_INT, &s->checkpoint_every, "50", "steps between checkpoints", 1, 1e12},
        {"keep_checkpoints", CFG_INT, &s->keep_checkpoints, "2", "complete checkpoints kept", 1, 1000},
    };
    memcpy(f, fields, sizeof fields);
    return (int)(sizeof fields / sizeof fields[0]);
}

int trainer_dp_fields(trainer_settings *s, cfg_field *f) {
    cfg_field fields[] = {
        {"dp_size", CFG_INT, &s->dp_size, "1",
         "data-parallel ranks: one process per GPU, each with its --dp-rank; the batch is split over them", 1, 4096},
        {"dp_rank", CFG_INT, &s->dp_rank, "-1",
         "this process's rank, 0 .. dp_size-1 (also --dp-rank); -1: not data parallel, or rank 0 of one", -1, 4095},
        {"dp_id", CFG_STRING, &s->dp_id, "",
         "file through which the ranks meet (also --dp-id; default out/dp-id); given, even one rank runs data parallel",
         0, 0},
        {"dp_timeout", CFG_NUMBER, &s->dp_timeout, "300",
         "seconds a rank waits for the id file, for the others to join, and for any all-reduce", 1, 1e6},
    };
    memcpy(f, fields, sizeof fields);
    return (int)(sizeof fields / sizeof fields[0]);
}

/* An exclusive fcntl lock on OUT/.lock (released by the kernel when the holder dies, also on
 * NFSv4); a holder's pid and host are written in it so the waiting one can say whom it waits for. */
static int lock_out(const char *out, const char *stage, int *fd_out, xd_err *e) {
    char path[1200];
    if (make_dir(out, e)) return -1;
    snprintf(path, sizeof path, "%s/.lock", out);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return xd_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &l) != 0) {
        if (errno != EAGAIN && errno != EACCES) {
            close(fd);
            return xd_fail(e, "%s: cannot lock: %s", path, strerror(errno));
        }
        char holder[128] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        fprintf(stderr, "[%s] %s is in use by another xtrain (%s): waiting for it to end\n", stage, out,
                holder[0] ? holder : "unknown holder");
        while (fcntl(fd, F_SETLKW, &l) != 0) {
            if (errno != EINTR) {
                close(fd);
                return xd_fail(e, "%s: cannot lock: %s", path, strerror(errno));
            }
        }
        fprintf(stderr, "[%s] %s is free: going on\n", stage, out);
    }
    char host[64] = "", text[160];
    gethostname(host, sizeof host - 1);
    int len = snprintf(text, sizeof text, "pid %ld on %s\n", (long)getpid(), host);
    bool noted = ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)len, 0) == len;
    (void)noted; /* only a courtesy to whoever waits next */
    *fd_out = fd;
    return 0;
}

int trainer_session_open(trainer_session *t, const char *stage, trainer_settings *s,
                         const cfg_field *fields, int n_fields, bool same_weights,
                         int (*prepare)(trainer_session *, void *, xd_err *),
                         bool (*select)(const model_tensor_entry *, void *), void *ctx, xd_err *e) {
    memset(t, 0, sizeof *t);
    t->out_lock = -1;
    snprintf(t->stage, sizeof t->stage, "%s", stage);
    t->s = s;
    t->settings_json = cfg_to_json(fields, n_fields);
    if (strcmp(s->schedule, "cosine") && strcmp(s->schedule, "constant"))
        return xd_fail(e, "schedule \"%s\" must be cosine or constant", s->schedule);
    if (s->data.count > MODEL_DATA_MAX_SOURCES) return xd_fail(e, "at most %d data sources", MODEL_DATA_MAX_SOURCES);
    t->dp_started = time(NULL);
    /* data parallelism: the settings first, then what it needs (the CUDA backend, a GPU, NCCL) */
    bool dp_keys = false; /* a stage without the data-parallel keys (align) leaves them zeroed */
    for (int i = 0; i < n_fields; i++) dp_keys |= !strcmp(fields[i].key, "dp_rank");
    if (dp_plan_make(dp_keys ? s->dp_size : 1, dp_keys ? s->dp_rank : -1, dp_keys ? s->dp_id : NULL, s->batch,
                     s->micro_batch, &t->dp, e))
        return -1;
    if (t->dp.on) {
#ifndef XD_HAVE_CUDA
        return xd_fail(e, "data parallelism (dp_size %d%s) needs the CUDA backend: this xtrain was built without it "
                          "(no CUDA toolkit at configure time, or -DXD_CUDA=OFF)",
                       t->dp.size, s->dp_id && s->dp_id[0] ? ", dp_id given" : "");
#endif
        if (!strcmp(s->device, "cpu"))
            return xd_fail(e, "data parallelism (dp_size %d%s) needs a CUDA device: give each rank its GPU with device: "
                              "cuda:N (--device cuda:N)",
                           t->dp.size, s->dp_id && s->dp_id[0] ? ", dp_id given" : "");
#ifndef XD_HAVE_NCCL
        return xd_fail(e, "data parallelism (dp_size %d) needs NCCL: this xtrain was built without it (no nccl.h beside "
                          "the CUDA headers at configure time, or -DXD_NCCL=OFF; CUDA 13 toolkits ship it)", t->dp.size);
#endif
    }
    t->writer = !t->dp.on || t->dp.rank == 0;
    if (trainer_parse_device(s->device, &t->cuda, e)) return -1;
    /* a pass's sequences: micro_batch, else this rank's whole share (dp_plan_make checked that
       micro_batch divides a data-parallel rank's share) */
    t->micro = s->micro_batch ? (int)s->micro_batch : (int)t->dp.per_rank;
    if (t->dp.per_rank % t->micro)
        return xd_fail(e, "micro_batch %ld does not divide batch %ld", s->micro_batch, s->batch);
    if (t->cuda < 0) t->micro = 1; /* the CPU path takes one sequence at a time */
    model_data_source src[MODEL_DATA_MAX_SOURCES];
    for (int i = 0; i < s->data.count; i++) src[i] = (model_data_source){s->data.items[i].path, s->data.items[i].weight};
    int T = (int)s->seq_len;
    if (model_data_loader_open(src, s->data.count, MODEL_DATA_TRAIN, T, (uint64_t)s->seed, &t->loader, e)) return -1;
    if (model_transformer_load(s->teacher, &t->teacher, e)) return -1;
    if (model_data_loader_vocab(t->loader) != t->teacher.cfg.vocab)
        return xd_fail(e, "the data's vocabulary (%d) is not the teacher's (%d): prepare it with the teacher's tokenizer",
                       model_data_loader_vocab(t->loader), t->teacher.cfg.vocab);
    /* the student's shapes and lineage; a checkpoint to resume from is read only under out's lock
       (below): another xtrain still writing out may prune the one newest now while it is read */
    if (model_transformer_load(s->student, &t->student, e)) return -1;
    if (stage_check_lineage(&t->teacher, &t->student, same_weights, e)) return -1;
    if (prepare && prepare(t, ctx, e)) return -1;
    if (trainer_ranges_select(&t->student.layout, select, ctx, &t->ranges, e)) return -1;
    if (trainer_optim_init(&t->opt, t->ranges.total, e)) return -1;
    /* Everything is checked, nothing written yet; now out is created and locked, and the run
       resumes from its newest complete checkpoint, else starts from the student. Data parallel,
       rank 0 alone locks out: the other ranks write nothing there, and would wait on rank 0's
       lock while rank 0 waits for them to join. */
    if (t->writer && lock_out(s->out, stage, &t->out_lock, e)) return -1;
    char newest[1400];
    long newest_step = -1;
    int found = trainer_checkpoint_latest(s->out, newest, sizeof newest, &newest_step, e);
    if (found < 0) return -1;
    if (t->dp.on) {
        /* the communicator; then every rank resumes from rank 0's newest checkpoint */
        long agreed = found == 0 ? newest_step : -1;
        if (trainer_dp_join(t, &agreed, e)) return -1;
        if (agreed >= 0) {
            snprintf(newest, sizeof newest, "%s/checkpoints/step-%08ld", s->out, agreed);
            char done[1500];
            snprintf(done, sizeof done, "%s/DONE", newest);
            if (!xd_file_exists(done))
                return xd_fail(e, "rank %d of %d: rank 0 resumes from %s, which this rank cannot see (is out on a "
                                  "filesystem every rank shares?)", t->dp.rank, t->dp.size, newest);
            found = 0, newest_step = agreed;
        } else if (t->dp.rank != 0 && found == 0) {
            return xd_fail(e, "rank %d of %d: this rank sees a checkpoint in %s/checkpoints, rank 0 none: did out "
                              "change while the ranks started?", t->dp.rank, t->dp.size, s->out);
        }
    }
    if (found == 0) {
        model_transformer later;
        if (model_transformer_load(newest, &later, e)) return -1;
        if (later.layout.n_params != t->student.layout.n_params) {
            model_transformer_free(&later);
            return xd_fail(e, "%s: its shapes differ from the student's", newest);
        }
        memcpy(t->student.params, later.params, sizeof(float) * later.layout.n_params);
        model_transformer_free(&later);
        if (trainer_restore(newest, &t->opt, t->loader, &t->start_step, &t->tokens, e)) return -1;
        fprintf(stderr, "[%s] resuming from %s (step %ld)\n", stage, newest, t->start_step);
    }
    t->grads = xd_calloc(t->student.layout.n_params, sizeof(float), e);
    /* a pass's sequences one after another: the CPU's is one sequence */
    size_t nt = (size_t)T * t->micro;
    t->inputs = t->grads ? xd_malloc(sizeof(int) * 2 * nt, e) : NULL;
    if (!t->inputs) return -1;
    t->targets = t->inputs + nt;
    if (t->dp.on && !(t->skip = xd_malloc(sizeof(int) * 2 * (size_t)T, e))) return -1;
    t->sched = (kern_lr_schedule){s->lr, s->lr_min, s->warmup, s->steps, !strcmp(s->schedule, "cosine")};
    if (!t->writer) { /* no metrics file, no progress line: rank 0 has them */
        memset(&t->run, 0, sizeof t->run);
        snprintf(t->run.out, sizeof t->run.out, "%s", s->out);
        snprintf(t->run.stage, sizeof t->run.stage, "%s", stage);
        t->run.t_start = xd_now();
        t->run.first_step = t->start_step;
        return 0;
    }
    return trainer_open(&t->run, s->out, stage, t->start_step, e);
}

int trainer_session_next(trainer_session *t, xd_err *e) {
    int rc = model_data_next(t->loader, t->inputs, t->targets, NULL, e);
    return rc > 0 ? xd_fail(e, "the data ran out") : rc;
}

/* reads n sequences past (the other ranks' share of the step) */
static int skip_sequences(trainer_session *t, long n, xd_err *e) {
    size_t T = (size_t)t->s->seq_len;
    for (long i = 0; i < n; i++) {
        int rc = model_data_next(t->loader, t->skip, t->skip + T, NULL, e);
        if (rc) return rc > 0 ? xd_fail(e, "the data ran out") : rc;
    }
    return 0;
}

int trainer_session_next_pass(trainer_session *t, xd_err *e) {
    size_t T = (size_t)t->s->seq_len;
    /* this rank's block of the step: sequences dp.first .. dp.first + dp.per_rank - 1 */
    if (t->dp.on && t->step_pos == 0 && skip_sequences(t, t->dp.first, e)) return -1;
    for (int i = 0; i < t->micro; i++) {
        int rc = model_data_next(t->loader, t->inputs + i * T, t->targets + i * T, NULL, e);
        if (rc) return rc > 0 ? xd_fail(e, "the data ran out") : rc;
    }
    t->step_pos += t->micro;
    if (t->step_pos >= t->dp.per_rank) {
        t->step_pos = 0;
        if (t->dp.on && skip_sequences(t, t->s->batch - t->dp.first - t->dp.per_rank, e)) return -1;
    }
    return 0;
}

int trainer_parse_device(const char *spec, int *cuda, xd_err *e) {
    char *end;
    *cuda = -1;
    if (!strcmp(spec, "cpu")) return 0;
    if (!strcmp(spec, "cuda")) *cuda = 0;
    else if (!strncmp(spec, "cuda:", 5) && spec[5] >= '0' && spec[5] <= '9') {
        long n = strtol(spec + 5, &end, 10);
        if (*end || n > 1023) return xd_fail(e, "device \"%s\": expected cpu, cuda or cuda:N", spec);
        *cuda = (int)n;
    } else
        return xd_fail(e, "device \"%s\": expected cpu, cuda or cuda:N", spec);
#ifndef XD_HAVE_CUDA
    return xd_fail(e, "device \"%s\": this xtrain was built without the CUDA backend (no CUDA toolkit at configure time)",
                   spec);
#else
    if (kern_cuda_use_device(*cuda, NULL, 0, NULL)) /* there, before any work */
        return xd_fail(e, "device \"%s\": %s", spec, kern_cuda_last_error());
    return 0;
#endif
}

int trainer_session_use_gpu(trainer_session *t, struct gpu_net *student, xd_err *e) {
#ifdef XD_HAVE_CUDA
    if (gpu_net_set_moments(student, t->opt.m, t->opt.v, t->opt.n, e)) return -1;
    t->gpu = student;
    return 0;
#else
    (void)t, (void)student;
    return xd_fail(e, "built without the CUDA backend");
#endif
}

/* the GPU's weights and moments back into the host copies (before a checkpoint) */
static int pull_gpu(trainer_session *t, xd_err *e) {
#ifdef XD_HAVE_CUDA
    if (t->gpu && (gpu_net_get_params(t->gpu, t->student.params, e) ||
                   gpu_net_get_moments(t->gpu, t->opt.m, t->opt.v, e)))
        return -1;
#else
    (void)t, (void)e;
#endif
    return 0;
}

/* clip and AdamW: on the host, or where the student lives */
static int update(trainer_session *t, double lr, double *norm, xd_err *e) {
    const trainer_settings *s = t->s;
#ifdef XD_HAVE_CUDA
    if (t->gpu) {
        /* data parallel: the sum over the ranks of their shares is the whole batch's mean */
        if (trainer_dp_sum_grads(t, e)) return -1;
        if (gpu_net_clip_adamw(t->gpu, t->ranges.offset, t->ranges.count, t->ranges.n, s->grad_clip, lr, s->beta1,
                               s->beta2, s->eps, s->weight_decay, t->opt.step + 1, norm, e))
            return -1;
        if (isfinite(*norm)) t->opt.step++;
        return 0;
    }
#else
    (void)e;
#endif
    *norm = trainer_clip(t->grads, &t->ranges, s->grad_clip);
    /* a non-finite gradient skips the update (and says so in the metrics) */
    if (isfinite(*norm))
        trainer_adamw(t->student.params, t->grads, &t->ranges, &t->opt, lr, s->beta1, s->beta2, s->eps, s->weight_decay);
    return 0;
}

int trainer_session_step_end(trainer_session *t, long step, double started, double loss, json_t *extra,
                             const char *progress, xd_err *e) {
    const trainer_settings *s = t->s;
    double lr = kern_lr_at(&t->sched, step), norm;
    if (update(t, lr, &norm, e)) {
        json_decref(extra);
        return -1;
    }
    double per_step = (double)s->batch * (double)s->seq_len, secs = xd_now() - started;
    t->tokens += per_step;
    json_t *m = json_pack("{s:I, s:f, s:f}", "step", (json_int_t)(step + 1), "tokens", t->tokens, "loss", loss);
    if (extra) json_object_update(m, extra);
    json_decref(extra);
    json_object_set_new(m, "lr", json_real(lr));
    json_object_set_new(m, "grad_norm", json_real(norm));
    json_object_set_new(m, "tokens_per_s", json_real(per_step / secs));
    json_object_set_new(m, "skipped", json_boolean(!isfinite(norm)));
    char *line = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(m);
    int rc = line ? trainer_metrics(&t->run, line, e) : xd_fail(e, "out of memory");
    free(line);
    trainer_progress(&t->run, step + 1, s->steps, "%s  lr %.2e  %.0f tok/s", progress, lr, per_step / secs);
    if (rc == 0 && t->writer && ((step + 1) % s->checkpoint_every == 0 || step + 1 == s->steps)) {
        char *text = NULL;
        if (pull_gpu(t, e)) rc = -1;
        else if (!(text = trainer_state_json(t->stage, step + 1, t->tokens, t->loader, t->settings_json)))
            rc = xd_fail(e, "out of memory");
        else
            rc = trainer_checkpoint_save(s->out, step + 1, &t->student, NULL, &t->opt, text, (int)s->keep_checkpoints, e);
        free(text);
    }
    return rc;
}

int trainer_session_finish(trainer_session *t, xd_err *e) {
    trainer_progress_end(&t->run);
    if (trainer_dp_check_weights(t, e)) return -1;
    if (!t->writer) {
        fprintf(stderr, "[%s] rank %d of %d: done (rank 0 writes %s/model)\n", t->stage, t->dp.rank, t->dp.size,
                t->s->out);
        t->finished = true;
        return 0;
    }
    char summary[256];
    snprintf(summary, sizeof summary, "{\"stage\": \"%s\", \"steps\": %ld, \"tokens\": %.0f}\n", t->stage,
             t->s->steps, t->tokens);
    /* the last step always leaves a checkpoint of exactly these weights: link to it */
    char ckpt[1200];
    long ckpt_step = -1;
    if (trainer_checkpoint_latest(t->s->out, ckpt, sizeof ckpt, &ckpt_step, e) < 0 || pull_gpu(t, e)) return -1;
    if (trainer_finish(t->s->out, &t->student, NULL, ckpt_step == t->s->steps ? ckpt : NULL, summary, e))
        return -1;
    fprintf(stderr, "[%s] done: %s/model\n", t->stage, t->s->out);
    t->finished = true;
    return 0;
}

void trainer_session_close(trainer_session *t) {
    /* a rank that fails aborts the communicator, so the others fail too instead of waiting */
    trainer_dp_close(t, t->finished);
    free(t->skip);
    free(t->grads);
    free(t->inputs);
    free(t->settings_json);
    trainer_optim_free(&t->opt);
    trainer_ranges_free(&t->ranges);
    trainer_close(&t->run);
    model_data_loader_free(t->loader);
    model_transformer_free(&t->student);
    model_transformer_free(&t->teacher);
    if (t->out_lock >= 0) close(t->out_lock);
    memset(t, 0, sizeof *t);
    t->out_lock = -1;
}
