/* xtrain align: stage 1 (DESIGN 1.2). For every layer, the teacher's normalised input goes into
 * the student's attention, whose output yhat (before W_o) is pulled towards the teacher's
 * attention output by MSE. Only the new parameters of the chosen layers train; one teacher forward
 * feeds every layer, so layers can be split across jobs (--layers A-B). */
#include "config.h"
#include "stages.h"
#include "trainer.h"
#include "model/data.h"
#ifdef XD_HAVE_CUDA
#include "model/gpu.h"
#endif

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct align_layers {
    char *spec;
    int first, last;
} align_layers;

/* "all" or "A-B", checked against the student once it is loaded */
static int parse_layers(trainer_session *t, void *ctx, xd_err *e) {
    align_layers *a = ctx;
    int n = t->student.cfg.n_layers;
    if (!strcmp(a->spec, "all")) {
        a->first = 0;
        a->last = n - 1;
        return 0;
    }
    char *end;
    long x = strtol(a->spec, &end, 10), y = x;
    if (*end == '-') y = strtol(end + 1, &end, 10);
    if (*end || end == a->spec || x < 0 || y < x || y >= n)
        return xd_fail(e, "layers \"%s\": expected all or A-B with 0 <= A <= B < %d", a->spec, n);
    a->first = (int)x;
    a->last = (int)y;
    return 0;
}

static bool is_trainable(const model_tensor_entry *t, void *ctx) {
    const align_layers *a = ctx;
    int layer = -1;
    if (!t->student_new || sscanf(t->name, "model.layers.%d.", &layer) != 1) return false;
    return layer >= a->first && layer <= a->last;
}

/* The student must have been made from this teacher: same architecture, same copied weights. */
int stage_check_lineage(const model_transformer *teacher, const model_transformer *student,
                        bool weights_unchanged, xd_err *e) {
    const model_config *t = &teacher->cfg, *s = &student->cfg;
    if (!s->student) return xd_fail(e, "%s is not a student (make one with xtrain init)", student->source);
    if (t->n_layers != s->n_layers || t->hidden != s->hidden || t->n_heads != s->n_heads ||
        t->n_kv_heads != s->n_kv_heads || t->head_dim != s->head_dim || t->ffn != s->ffn ||
        t->vocab != s->vocab || t->tied_embeddings != s->tied_embeddings)
        return xd_fail(e, "student %s does not belong to teacher %s: their architectures differ",
                       student->source, teacher->source);
    if (weights_unchanged) {
        const model_tensor_entry *te = model_layout_find(&teacher->layout, "model.embed_tokens.weight");
        const model_tensor_entry *se = model_layout_find(&student->layout, "model.embed_tokens.weight");
        if (!te || !se || memcmp(teacher->params + te->offset, student->params + se->offset,
                                 sizeof(float) * te->count) != 0)
            return xd_fail(e, "student %s does not belong to teacher %s: its embeddings differ",
                           student->source, teacher->source);
    }
    return 0;
}

/* the step's metrics (the mean MSE and each layer's), progress, update and checkpoint */
static int align_step_end(trainer_session *t, long step, double t0, const double *layer_loss, int nl, int first,
                          xd_err *e) {
    double mean = 0;
    json_t *per = json_array();
    for (int l = 0; l < nl; l++) {
        mean += layer_loss[l] / nl;
        json_array_append_new(per, json_real(layer_loss[l]));
    }
    char progress[64];
    snprintf(progress, sizeof progress, "mse %.4g", mean);
    return trainer_session_step_end(t, step, t0, mean, json_pack("{s:o, s:i}", "mse_layer", per, "first_layer", first),
                                    progress, e);
}

#ifdef XD_HAVE_CUDA

/* The step on the GPU: one teacher forward of t->micro sequences captures every chosen layer's
 * input and target; each layer's attention then trains on them. */
static int align_gpu(trainer_session *t, const align_layers *sel, xd_err *e) {
    const trainer_settings *s = t->s;
    int T = (int)s->seq_len, B = t->micro, nl = sel->last - sel->first + 1;
    gpu_net *gt = NULL, *gs = NULL;
    double *layer_loss = xd_calloc((size_t)nl, sizeof(double), e);
    int rc = layer_loss ? gpu_net_open(&gt, &t->teacher, t->cuda, B, T, 0, sel->first, sel->last, e) : -1;
    if (rc == 0) rc = gpu_net_open(&gs, &t->student, t->cuda, B, T, GPU_TRAIN | GPU_ONE_LAYER, 0, -1, e);
    if (rc == 0) rc = trainer_session_use_gpu(t, gs, e);
    if (rc == 0)
        fprintf(stderr, "[align] %s: %s, layers %d-%d, %llu trainable parameters, %.1f GiB, micro-batches of %d x %d\n",
                s->out, gpu_net_device(gs), sel->first, sel->last, (unsigned long long)t->ranges.total,
                (gpu_net_bytes(gt) + gpu_net_bytes(gs)) / 1073741824.0, B, T);
    double share = (double)B / (double)s->batch;
    for (long step = t->start_step; step < s->steps && rc == 0; step++) {
        double t0 = xd_now();
        if ((rc = gpu_net_zero_grads(gs, e))) break;
        for (int l = 0; l < nl; l++) layer_loss[l] = 0;
        for (long b = 0; b < s->batch / B && rc == 0; b++) {
            if ((rc = trainer_session_next_pass(t, e)) || (rc = gpu_teacher_forward(gt, t->inputs, e))) break;
            for (int l = 0; l < nl && rc == 0; l++) {
                int layer = sel->first + l;
                const uint16_t *xn = gpu_net_capture_xn(gt, layer);
                const uint16_t *yhat = gpu_student_layer_forward(gs, layer, xn, e);
                double mse = 0;
                if (!yhat || gpu_mse(gs, &mse, yhat, gpu_net_capture_attn(gt, layer), share, e) ||
                    gpu_student_layer_backward(gs, layer, xn, gpu_net_dyhat(gs), e))
                    rc = -1;
                layer_loss[l] += mse * share;
            }
        }
        if (rc) break;
        rc = align_step_end(t, step, t0, layer_loss, nl, sel->first, e);
    }
    if (rc == 0) rc = trainer_session_finish(t, e);
    t->gpu = NULL;
    gpu_net_close(gs);
    gpu_net_close(gt);
    free(layer_loss);
    return rc;
}
#endif

int stage_align(int argc, char **argv) {
    xd_err e = {{0}};
    trainer_settings s;
    align_layers sel;
    memset(&s, 0, sizeof s);
    memset(&sel, 0, sizeof sel);
    cfg_field fields[32];
    int n_fields = trainer_settings_fields(&s, fields, "the student made by xtrain init", "1e-2", "1e-5",
                                           "cosine", "0");
    fields[n_fields++] = (cfg_field){"layers", CFG_STRING, &sel.spec, "all",
                                     "layers to train: all, or A-B (0-based, inclusive)", 0, 0};
    int cli = cfg_stage_cli("align", argc, argv, fields, n_fields, "--layers", "layers",
                            "A-B: train only these layers (the layers key)");
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    trainer_session t;
    model_student_layer_f32 **work = NULL;
    model_kv_cache cache = {0};
    float *xn = NULL, *att = NULL, *dy = NULL;
    double *layer_loss = NULL;
    int rc = trainer_session_open(&t, "align", &s, fields, n_fields, true, parse_layers, is_trainable, &sel, &e);
    int nl = sel.last - sel.first + 1, T = (int)s.seq_len;
#ifdef XD_HAVE_CUDA
    if (rc == 0 && t.cuda >= 0) {
        rc = align_gpu(&t, &sel, &e);
    } else
#endif
    if (rc == 0) {
        int D = t.student.cfg.hidden, qd = t.student.cfg.n_heads * t.student.cfg.head_dim;
        size_t nx = (size_t)T * D, ny = (size_t)T * qd;
        work = xd_calloc((size_t)nl, sizeof *work, &e);
        xn = work ? xd_malloc(sizeof(float) * nx * nl, &e) : NULL;
        att = xn ? xd_malloc(sizeof(float) * ny * nl, &e) : NULL;
        dy = att ? xd_malloc(sizeof(float) * ny, &e) : NULL;
        layer_loss = dy ? xd_calloc((size_t)nl, sizeof(double), &e) : NULL;
        rc = layer_loss ? model_kv_cache_init(&cache, &t.teacher.cfg, T, &e) : -1;
        for (int l = 0; rc == 0 && l < nl; l++)
            rc = model_student_layer_new_f32(&t.student.cfg, t.student.rope_inv_freq, T, &work[l], &e);
        if (rc == 0)
            fprintf(stderr, "[align] %s: layers %d-%d, %llu trainable parameters, %ld steps of %ld x %d tokens\n",
                    s.out, sel.first, sel.last, (unsigned long long)t.ranges.total, s.steps, s.batch, T);
        model_capture cap = {sel.first, sel.last, xn, att};
        for (long step = t.start_step; step < s.steps && rc == 0; step++) {
            double t0 = xd_now();
            memset(t.grads, 0, sizeof(float) * t.student.layout.n_params);
            for (int l = 0; l < nl; l++) layer_loss[l] = 0;
            for (long b = 0; b < s.batch && rc == 0; b++) {
                if ((rc = trainer_session_next(&t, &e))) break;
                cache.length = 0;
                if ((rc = model_transformer_forward_capture(&t.teacher, &cache, t.inputs, T, NULL, false, &cap, &e)))
                    break;
                for (int l = 0; l < nl && rc == 0; l++) {
                    const float *yhat = model_student_layer_forward_f32(&t.student.cfg, &t.student.layout,
                                                                        t.student.params, sel.first + l,
                                                                        xn + (size_t)l * nx, work[l], &e);
                    if (!yhat) {
                        rc = -1;
                        break;
                    }
                    /* the mean over the batch: each sequence's MSE gradient scaled by 1/batch */
                    layer_loss[l] += kern_mse_f32(dy, yhat, att + (size_t)l * ny, ny) / (double)s.batch;
                    for (size_t i = 0; i < ny; i++) dy[i] /= (float)s.batch;
                    rc = model_student_layer_backward_f32(&t.student.cfg, &t.student.layout, t.student.params,
                                                          sel.first + l, xn + (size_t)l * nx, work[l], dy, t.grads, &e);
                }
            }
            if (rc) break;
            rc = align_step_end(&t, step, t0, layer_loss, nl, sel.first, &e);
        }
        if (rc == 0) rc = trainer_session_finish(&t, &e);
    }
    if (rc) fprintf(stderr, "xtrain align: %s\n", e.msg);
    for (int l = 0; work && l < nl; l++) model_student_layer_free_f32(work[l]);
    free(work), free(xn), free(att), free(dy), free(layer_loss);
    model_kv_cache_free(&cache);
    trainer_session_close(&t);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
