/* stages/merge_score.c — the val log-likelihood objective of merge's weight search (merge_score.h).
 * Scored as eval scores a perplexity task (stages/eval.c): the val split read by the loader in
 * windows of seq_len, targets counted up to max_tokens per domain, each row's log-probability from
 * kern_cross_entropy_row on the host. */
#include "merge_score.h"
#include "kernels/kernels.h"
#include "model/data.h"
#include "model/model.h"
#ifdef XD_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "model/gpu.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct merge_score_domain {
    char *path;
    int n_windows;
    int *inputs, *targets; /* [n_windows][T]; a target past max_tokens or the split's end is -1 */
    long tokens;           /* targets >= 0 */
} merge_score_domain;

struct merge_score {
    int T, V, D, cuda;
    merge_score_domain *domains;
    int n_domains;
    char **skipped;
    int n_skipped;
    float *hidden, *logits; /* [T, D], [T, V] */
    void *gpu;              /* a gpu_net of the student for one window (CUDA build, cuda >= 0) */
};

/* One directory's val windows, read once so that every candidate sees the same tokens. Returns 1
 * when the directory has no val tokens. */
static int merge_score_read(merge_score_domain *d, const char *dir, int T, int V, long max_tokens, xd_err *e) {
    model_data_dir probe;
    if (model_data_open(dir, &probe, e)) return -1;
    uint64_t val_tokens = probe.tokens[MODEL_DATA_VAL];
    int vocab = probe.vocab;
    model_data_close(&probe);
    if (val_tokens == 0) return 1;
    /* ids the student has no row for would index past its embedding */
    if (vocab > V) return xd_fail(e, "%s: its vocabulary (%d) is larger than the student's (%d)", dir, vocab, V);
    model_data_source src = {dir, 1.0};
    model_data_loader *l;
    if (model_data_loader_open(&src, 1, MODEL_DATA_VAL, T, 0, &l, e)) return -1;
    int rc = 0, cap = 0;
    while (rc == 0 && d->tokens < max_tokens) {
        if (d->n_windows == cap) {
            cap = cap ? cap * 2 : 8;
            int *in = realloc(d->inputs, sizeof(int) * (size_t)cap * T);
            if (in) d->inputs = in;
            int *tg = in ? realloc(d->targets, sizeof(int) * (size_t)cap * T) : NULL;
            if (tg) d->targets = tg;
            if (!in || !tg) {
                rc = xd_fail(e, "out of memory");
                break;
            }
        }
        int *in = d->inputs + (size_t)d->n_windows * T, *tg = d->targets + (size_t)d->n_windows * T;
        int r = model_data_next(l, in, tg, NULL, e);
        if (r == 1) break;
        if (r < 0) {
            rc = -1;
            break;
        }
        d->n_windows++;
        for (int t = 0; t < T; t++) /* the budget ends inside a window: its last targets are not scored */
            if (tg[t] >= 0) {
                if (d->tokens < max_tokens) d->tokens++;
                else tg[t] = -1;
            }
    }
    model_data_loader_free(l);
    if (rc == 0 && d->tokens == 0) rc = xd_fail(e, "%s: no validation tokens to score", dir);
    return rc;
}

void merge_score_free(merge_score *s) {
    if (!s) return;
    for (int i = 0; i < s->n_domains; i++) {
        free(s->domains[i].path);
        free(s->domains[i].inputs);
        free(s->domains[i].targets);
    }
    free(s->domains);
    for (int i = 0; i < s->n_skipped; i++) free(s->skipped[i]);
    free(s->skipped);
    free(s->hidden);
    free(s->logits);
#ifdef XD_HAVE_CUDA
    gpu_net_close(s->gpu);
#endif
    free(s);
}

int merge_score_open(merge_score **out, const model_transformer *m, const char *const *dirs, int n_dirs,
                     int seq_len, long max_tokens, int cuda, xd_err *e) {
    *out = NULL;
    if (!m->cfg.student) return xd_fail(e, "%s is not a student", m->source);
    if (n_dirs < 1) return xd_fail(e, "no data to score on");
    merge_score *s = xd_calloc(1, sizeof *s, e);
    if (!s) return -1;
    s->T = seq_len, s->V = m->cfg.vocab, s->D = m->cfg.hidden, s->cuda = cuda;
    s->domains = xd_calloc((size_t)n_dirs, sizeof *s->domains, e);
    s->skipped = s->domains ? xd_calloc((size_t)n_dirs, sizeof *s->skipped, e) : NULL;
    int rc = s->skipped ? 0 : -1;
    for (int i = 0; i < n_dirs && rc == 0; i++) {
        merge_score_domain *d = &s->domains[s->n_domains];
        int r = merge_score_read(d, dirs[i], s->T, s->V, max_tokens, e);
        char *copy = r >= 0 ? strdup(dirs[i]) : NULL;
        if (r >= 0 && !copy) r = xd_fail(e, "out of memory");
        if (r == 1) { /* said, not hidden: that domain does not count in the objective */
            fprintf(stderr, "[merge] %s has no validation tokens: not scored\n", dirs[i]);
            free(d->inputs), free(d->targets);
            memset(d, 0, sizeof *d);
            s->skipped[s->n_skipped++] = copy;
        } else if (r == 0) {
            d->path = copy;
            s->n_domains++;
        } else {
            free(d->inputs), free(d->targets);
            memset(d, 0, sizeof *d);
            rc = -1;
        }
    }
    if (rc == 0 && s->n_domains == 0)
        rc = xd_fail(e, "none of the %d data directories has validation tokens to score the merge on (prepare "
                        "them with --val-fraction > 0)", n_dirs);
    if (rc == 0 && cuda < 0) {
        s->hidden = xd_malloc(sizeof(float) * (size_t)s->T * s->D, e);
        s->logits = s->hidden ? xd_malloc(sizeof(float) * (size_t)s->T * s->V, e) : NULL;
        if (!s->logits) rc = -1;
    }
#ifdef XD_HAVE_CUDA
    if (rc == 0 && cuda >= 0) {
        gpu_net *g = NULL;
        s->logits = xd_malloc(sizeof(float) * (size_t)s->T * s->V, e);
        rc = s->logits ? gpu_net_open(&g, m, cuda, 1, s->T, GPU_LOGITS, 0, -1, e) : -1;
        s->gpu = g;
        if (rc == 0) fprintf(stderr, "[merge] scoring on %s, windows of %d tokens\n", gpu_net_device(g), s->T);
    }
#else
    if (rc == 0 && cuda >= 0) rc = xd_fail(e, "this xtrain was built without the CUDA backend");
#endif
    if (rc) {
        merge_score_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int merge_score_domains(const merge_score *s) { return s->n_domains; }
const char *merge_score_domain_path(const merge_score *s, int i) { return s->domains[i].path; }
long merge_score_domain_tokens(const merge_score *s, int i) { return s->domains[i].tokens; }
int merge_score_skipped(const merge_score *s) { return s->n_skipped; }
const char *merge_score_skipped_path(const merge_score *s, int i) { return s->skipped[i]; }

/* Logits [T, V] of one window under m's current weights (on a GPU: those last uploaded). */
static int merge_score_logits(merge_score *s, const model_transformer *m, const int *ids, xd_err *e) {
#ifdef XD_HAVE_CUDA
    if (s->gpu) {
        if (gpu_student_forward(s->gpu, ids, e)) return -1;
        if (kern_cuda_copy(s->logits, gpu_net_logits(s->gpu), sizeof(float) * (size_t)s->T * s->V, 1, NULL))
            return xd_fail(e, "gpu: logits: %s", kern_cuda_last_error());
        return 0;
    }
#endif
    if (model_student_hidden(m, ids, s->T, s->hidden, e)) return -1;
    model_lm_head(m, s->hidden, s->T, s->logits);
    return 0;
}

int merge_score_run(merge_score *s, const model_transformer *m, double *mean, double *per_domain, xd_err *e) {
#ifdef XD_HAVE_CUDA
    if (s->gpu && gpu_net_set_params(s->gpu, m->params, e)) return -1;
#endif
    double sum = 0;
    for (int i = 0; i < s->n_domains; i++) {
        const merge_score_domain *d = &s->domains[i];
        double ll = 0;
        for (int w = 0; w < d->n_windows; w++) {
            const int *tg = d->targets + (size_t)w * s->T;
            if (merge_score_logits(s, m, d->inputs + (size_t)w * s->T, e)) return -1;
            for (int t = 0; t < s->T; t++)
                if (tg[t] >= 0) ll -= kern_cross_entropy_row(s->logits + (size_t)t * s->V, s->V, tg[t]);
        }
        double v = ll / (double)d->tokens;
        if (per_domain) per_domain[i] = v;
        sum += v;
    }
    *mean = sum / s->n_domains;
    return 0;
}
