/* stages/dp.c — data-parallel distill (stages/dp.h): the settings' checks, the split of a step's
 * batch, the NCCL id file, and the session's all-reduces over the CUDA backend's NCCL. */
#include "dp.h"

#include "trainer.h"
#ifdef XD_HAVE_NCCL
#include "kernels/cuda/cuda_ops.h"
#include "model/gpu.h"
#endif

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ID_MAGIC "xdistill-dp-id 1"

int dp_plan_make(long dp_size, long dp_rank, const char *dp_id, long batch, long micro_batch, dp_plan *p,
                 xd_err *e) {
    memset(p, 0, sizeof *p);
    long size = dp_size < 1 ? 1 : dp_size;
    p->on = size > 1 || (dp_id && dp_id[0]);
    p->size = (int)size;
    p->per_rank = batch;
    if (!p->on) {
        if (dp_rank >= 0)
            return xd_fail(e, "--dp-rank %ld (dp_rank) needs data parallelism: set dp_size to the number of ranks "
                              "(or give --dp-id FILE for a one-rank run)", dp_rank);
        return 0;
    }
    if (dp_rank < 0 && size > 1)
        return xd_fail(e, "dp_size %ld: every rank needs its --dp-rank R (dp_rank), R in 0 .. %ld", size, size - 1);
    if (dp_rank >= size)
        return xd_fail(e, "--dp-rank %ld (dp_rank) is outside 0 .. %ld (dp_size %ld)", dp_rank, size - 1, size);
    if (batch % size)
        return xd_fail(e, "batch %ld is not divisible by dp_size %ld: every rank takes batch / dp_size sequences of "
                          "each step", batch, size);
    p->rank = dp_rank < 0 ? 0 : (int)dp_rank;
    dp_share(batch, p->size, p->rank, &p->first, &p->per_rank);
    if (micro_batch > 0 && p->per_rank % micro_batch)
        return xd_fail(e, "micro_batch %ld does not divide a rank's share of the batch, %ld sequences (batch %ld / "
                          "dp_size %ld)", micro_batch, p->per_rank, batch, size);
    return 0;
}

void dp_share(long batch, int size, int rank, long *first, long *count) {
    *count = size > 0 ? batch / size : batch;
    *first = (long)rank * *count;
}

int dp_id_write(const char *path, const unsigned char id[DP_ID_BYTES], int size, xd_err *e) {
    char text[64 + 2 * DP_ID_BYTES];
    int n = snprintf(text, sizeof text, "%s\ndp_size %d\nnccl_id ", ID_MAGIC, size);
    xd_hex(id, DP_ID_BYTES, text + n);
    n += 2 * DP_ID_BYTES;
    text[n++] = '\n';
    if (xd_write_file_atomic(path, text, (size_t)n, e)) return xd_wrap(e, "the data-parallel id file");
    return 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int dp_id_parse(const char *path, const char *text, size_t len, int size, unsigned char id[DP_ID_BYTES], xd_err *e) {
    size_t ml = strlen(ID_MAGIC);
    bool magic = len >= ml && !memcmp(text, ID_MAGIC, ml) && (len == ml || text[ml] == '\n');
    if (!magic) {
        if (len < ml && !memcmp(text, ID_MAGIC, len))
            return xd_fail(e, "%s: truncated data-parallel id file (%zu bytes)", path, len);
        return xd_fail(e, "%s: not a data-parallel id file (it should start with \"%s\"): does dp_id (--dp-id) name "
                          "the file rank 0 writes?", path, ID_MAGIC);
    }
    /* a copy that ends in a NUL, so the lines can be read with sscanf */
    char buf[512];
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, text, n);
    buf[n] = 0;
    const char *line = buf + ml + (len > ml);
    long file_size = -1;
    int used = 0;
    if (sscanf(line, "dp_size %ld\n%n", &file_size, &used) != 1 || used == 0 || line[used - 1] != '\n')
        return xd_fail(e, "%s: truncated or damaged data-parallel id file (no \"dp_size N\" line)", path);
    line += used;
    if (strncmp(line, "nccl_id ", 8) != 0)
        return xd_fail(e, "%s: truncated or damaged data-parallel id file (no \"nccl_id\" line)", path);
    line += 8;
    size_t digits = 0;
    while (line[digits] && line[digits] != '\n') digits++;
    if (digits != 2 * DP_ID_BYTES)
        return xd_fail(e, "%s: truncated or damaged data-parallel id file (the NCCL id has %zu hex digits, not %d)",
                       path, digits, 2 * DP_ID_BYTES);
    if (line[digits] != '\n')
        return xd_fail(e, "%s: truncated data-parallel id file (no final newline)", path);
    if (line[digits + 1] != 0 || (size_t)(line + digits + 1 - buf) != len)
        return xd_fail(e, "%s: damaged data-parallel id file (something follows the NCCL id)", path);
    for (int i = 0; i < DP_ID_BYTES; i++) {
        int hi = hex_digit(line[2 * i]), lo = hex_digit(line[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return xd_fail(e, "%s: damaged data-parallel id file (\"%c%c\" in the NCCL id is not hex)", path,
                           line[2 * i], line[2 * i + 1]);
        id[i] = (unsigned char)(hi * 16 + lo);
    }
    if (file_size != size)
        return xd_fail(e, "%s: written by rank 0 of a run with dp_size %ld, this rank has dp_size %d: start every rank "
                          "with the same dp_size", path, file_size, size);
    return 0;
}

int dp_id_wait(const char *path, int rank, int size, double timeout_s, time_t not_before,
               unsigned char id[DP_ID_BYTES], xd_err *e) {
    double t0 = xd_now();
    bool said = false, stale = false;
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0) {
            if (st.st_mtime >= not_before) {
                char *text;
                size_t len;
                if (xd_read_file(path, 4096, &text, &len, e)) return -1;
                int rc = dp_id_parse(path, text, len, size, id, e);
                free(text);
                if (rc == 0 && said) fprintf(stderr, "[dp] rank %d of %d: %s is there: joining\n", rank, size, path);
                return rc;
            }
            if (!stale) {
                fprintf(stderr, "[dp] rank %d of %d: %s is older than this run (an earlier run's): waiting for rank 0 "
                                "to replace it (up to %g s)\n", rank, size, path, timeout_s);
                stale = said = true;
            }
        } else if (errno != ENOENT && errno != ENOTDIR) {
            return xd_fail(e, "%s: cannot read: %s", path, strerror(errno));
        }
        double waited = xd_now() - t0;
        if (waited >= timeout_s)
            return xd_fail(e, "rank %d of %d: rank 0 did not write the NCCL id to %s within %g s%s (is rank 0 running, "
                              "with the same out and dp_id? it may be waiting for out's lock)", rank, size, path,
                           timeout_s, stale ? " (the file there is an earlier run's)" : "");
        if (!said) {
            fprintf(stderr, "[dp] rank %d of %d: waiting for rank 0 to write the NCCL id to %s (up to %g s)\n", rank,
                    size, path, timeout_s);
            said = true;
        }
        double left = timeout_s - waited;
        struct timespec ts = {0, left < 0.05 ? (long)(left * 1e9) + 1 : 50000000L};
        nanosleep(&ts, NULL);
    }
}

uint64_t dp_hash(const void *data, size_t bytes, uint64_t h) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    for (; i < bytes; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    h ^= h >> 32;
    return h * 0xd6e8feb86659fd93ull ^ (uint64_t)bytes;
}

/* ---- the session ---- */

#ifdef XD_HAVE_NCCL
/* The settings that must agree between ranks: all but the device, the rank and the timeout. */
static uint64_t settings_fingerprint(const char *settings_json) {
    json_t *o = settings_json ? json_loads(settings_json, 0, NULL) : NULL;
    if (!o) return 0;
    json_object_del(o, "device");
    json_object_del(o, "dp_rank");
    json_object_del(o, "dp_timeout");
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    uint64_t h = text ? dp_hash(text, strlen(text), 0x5851f42d4c957f2dull) : 0;
    free(text);
    return h;
}

static int dp_fail(const trainer_session *t, xd_err *e) {
    (void)t;
    return xd_fail(e, "%s", kern_cuda_dp_last_error());
}

int trainer_dp_join(trainer_session *t, long *ckpt_step, xd_err *e) {
    const trainer_settings *s = t->s;
    const dp_plan *p = &t->dp;
    char path[1200];
    if (s->dp_id && s->dp_id[0]) snprintf(path, sizeof path, "%s", s->dp_id);
    else snprintf(path, sizeof path, "%s/dp-id", s->out);
    unsigned char id[DP_ID_BYTES];
    double t0 = xd_now();
    if (p->rank == 0) {
        if (kern_cuda_dp_create_id(id)) return dp_fail(t, e);
        if (dp_id_write(path, id, p->size, e)) return -1;
        if (p->size > 1)
            fprintf(stderr, "[%s] rank 0 of %d: NCCL id written to %s: waiting up to %g s for the other ranks\n",
                    t->stage, p->size, path, s->dp_timeout);
    } else if (dp_id_wait(path, p->rank, p->size, s->dp_timeout, t->dp_started - (time_t)s->dp_timeout, id, e)) {
        return -1;
    }
    int rc = kern_cuda_dp_open(&t->dp_comm, id, p->rank, p->size, t->cuda, s->dp_timeout);
    /* every rank has read the id once the communicator is up; after a failure nobody should */
    if (p->rank == 0) unlink(path);
    if (rc) return dp_fail(t, e);
    fprintf(stderr, "[%s] rank %d of %d: %s, communicator up after %.1f s; this rank takes sequences %ld .. %ld of "
                    "each step's %ld\n", t->stage, p->rank, p->size, kern_cuda_dp_library(), xd_now() - t0, p->first,
            p->first + p->per_rank - 1, s->batch);
    /* the same settings everywhere, and rank 0's newest checkpoint for everyone */
    uint64_t fp = settings_fingerprint(t->settings_json);
    uint64_t v[3] = {fp, ~fp, p->rank == 0 ? (uint64_t)(*ckpt_step + 1) : 0};
    if (kern_cuda_dp_max_host_u64(t->dp_comm, v, 3)) return dp_fail(t, e);
    if (v[0] != ~v[1])
        return xd_fail(e, "rank %d of %d: the ranks were started with different settings (only device, dp_rank and "
                          "dp_timeout may differ): start every rank with the same config", p->rank, p->size);
    *ckpt_step = (long)v[2] - 1;
    return 0;
}

int trainer_dp_sum_grads(trainer_session *t, xd_err *e) {
    if (!t->dp_comm) return 0;
    float *g = t->gpu ? gpu_net_grad_buffer(t->gpu) : NULL;
    if (!g) return xd_fail(e, "data parallelism: no gradients on the GPU");
    /* the trainable ranges only (distill's one range is the whole buffer), after the backward
       queued on the default stream */
    for (int k = 0; k < t->ranges.n; k++)
        if (kern_cuda_dp_sum_f32(t->dp_comm, g + t->ranges.offset[k], t->ranges.count[k], NULL)) return dp_fail(t, e);
    if (kern_cuda_dp_wait(t->dp_comm)) return dp_fail(t, e);
    return 0;
}

int trainer_session_dp_sum(trainer_session *t, double *v, int n, xd_err *e) {
    if (!t->dp_comm) return 0;
    if (kern_cuda_dp_sum_host_f64(t->dp_comm, v, n)) return dp_fail(t, e);
    return 0;
}

int trainer_dp_check_weights(trainer_session *t, xd_err *e) {
    if (!t->dp_comm) return 0;
    if (!t->gpu) return xd_fail(e, "data parallelism: no student on the GPU");
    if (gpu_net_get_params(t->gpu, t->student.params, e)) return -1;
    uint64_t h = dp_hash(t->student.params, sizeof(float) * t->student.layout.n_params, 0);
    uint64_t v[2] = {h, ~h};
    if (kern_cuda_dp_max_host_u64(t->dp_comm, v, 2)) return dp_fail(t, e);
    if (v[0] != ~v[1])
        return xd_fail(e, "rank %d of %d: the ranks' weights differ after the last step (their summed gradients were "
                          "not identical): no final model written", t->dp.rank, t->dp.size);
    return 0;
}

void trainer_dp_close(trainer_session *t, bool finished) {
    if (!t->dp_comm) return;
    if (finished) kern_cuda_dp_close(t->dp_comm);
    else kern_cuda_dp_abort(t->dp_comm);
    t->dp_comm = NULL;
}
#else
int trainer_dp_join(trainer_session *t, long *ckpt_step, xd_err *e) {
    (void)t, (void)ckpt_step;
    return xd_fail(e, "data parallelism needs the CUDA backend with NCCL (this xtrain was built without it)");
}
int trainer_dp_sum_grads(trainer_session *t, xd_err *e) {
    (void)t, (void)e;
    return 0;
}
int trainer_session_dp_sum(trainer_session *t, double *v, int n, xd_err *e) {
    (void)t, (void)v, (void)n, (void)e;
    return 0;
}
int trainer_dp_check_weights(trainer_session *t, xd_err *e) {
    (void)t, (void)e;
    return 0;
}
void trainer_dp_close(trainer_session *t, bool finished) { (void)t, (void)finished; }
#endif
