/* xtrain align: stage 1 (DESIGN 1.2). For every layer, the teacher's normalised input goes into
 * the student's attention, whose output yhat (before W_o) is pulled towards the teacher's
 * attention output by MSE. Only the new parameters of the chosen layers train; one teacher forward
 * feeds every layer, so layers can be split across jobs (--layers A-B). */
#include "args.h"
#include "config.h"
#include "stages.h"
#include "trainer.h"
#include "kernels/kernels.h"
#include "model/data.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct align_settings {
    char *teacher, *student, *out, *layers, *schedule;
    cfg_sources data;
    long seq_len, batch, steps, warmup, seed, checkpoint_every, keep_checkpoints;
    double lr, lr_min, weight_decay, grad_clip, beta1, beta2, eps;
} align_settings;

static int align_fields(align_settings *s, cfg_field *f) {
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &s->teacher, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"student", CFG_STRING, &s->student, NULL, "the student made by xtrain init", 0, 0},
        {"out", CFG_STRING, &s->out, NULL, "run directory (checkpoints, metrics, model/)", 0, 0},
        {"data", CFG_SOURCES, &s->data, NULL, "token shard directories with mixture weights", 0, 0},
        {"layers", CFG_STRING, &s->layers, "all", "layers to train: all, or A-B (0-based, inclusive)", 0, 0},
        {"seq_len", CFG_INT, &s->seq_len, "256", "tokens per sequence", 2, 1 << 20},
        {"batch", CFG_INT, &s->batch, "4", "sequences per step", 1, 1 << 20},
        {"steps", CFG_INT, &s->steps, "100", "optimizer steps", 1, 1e12},
        {"lr", CFG_NUMBER, &s->lr, "1e-2", "peak learning rate (paper: 1e-2)", 0, 10},
        {"lr_min", CFG_NUMBER, &s->lr_min, "1e-5", "final learning rate of the cosine", 0, 10},
        {"warmup", CFG_INT, &s->warmup, "10", "warm-up steps", 0, 1e12},
        {"schedule", CFG_STRING, &s->schedule, "cosine", "cosine or constant after warm-up", 0, 0},
        {"weight_decay", CFG_NUMBER, &s->weight_decay, "0", "AdamW decoupled weight decay", 0, 10},
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

static int parse_layers(const char *spec, int n_layers, int *first, int *last, xd_err *e) {
    if (!strcmp(spec, "all")) {
        *first = 0;
        *last = n_layers - 1;
        return 0;
    }
    char *end;
    long a = strtol(spec, &end, 10), b = a;
    if (*end == '-') b = strtol(end + 1, &end, 10);
    if (*end || end == spec || a < 0 || b < a || b >= n_layers)
        return xd_fail(e, "layers \"%s\": expected all or A-B with 0 <= A <= B < %d", spec, n_layers);
    *first = (int)a;
    *last = (int)b;
    return 0;
}

typedef struct layer_range {
    int first, last;
} layer_range;

static bool is_trainable(const model_tensor_entry *t, void *ctx) {
    const layer_range *r = ctx;
    int layer = -1;
    if (!t->student_new || sscanf(t->name, "model.layers.%d.", &layer) != 1) return false;
    return layer >= r->first && layer <= r->last;
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

int stage_align(int argc, char **argv) {
    xd_err e = {{0}};
    align_settings s;
    memset(&s, 0, sizeof s);
    cfg_field fields[32];
    int n_fields = align_fields(&s, fields);
    int cli = cfg_stage_cli("align", argc, argv, fields, n_fields, "--layers", "layers",
                            "A-B: train only these layers (the layers key)");
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    if (strcmp(s.schedule, "cosine") && strcmp(s.schedule, "constant")) {
        fprintf(stderr, "xtrain align: schedule \"%s\" must be cosine or constant\n", s.schedule);
        cfg_free(fields, n_fields);
        return 2;
    }

    int rc = 0;
    model_transformer teacher = {0}, student = {0};
    model_data_loader *loader = NULL;
    model_data_source src[MODEL_DATA_MAX_SOURCES];
    trainer_ranges ranges = {0};
    trainer_optim opt = {0};
    trainer_run run = {0};
    model_student_layer_f32 **work = NULL;
    float *grads = NULL, *xn = NULL, *att = NULL, *dy = NULL;
    int *inputs = NULL, *targets = NULL;
    char *settings_json = cfg_to_json(fields, n_fields);
    double *layer_loss = NULL;
    char ckpt[1400];
    long start_step = 0, ckpt_step = 0;
    double tokens_done = 0;
    int first = 0, last = 0, T = (int)s.seq_len;

    /* everything is checked before any work starts */
    if (s.data.count > MODEL_DATA_MAX_SOURCES) {
        rc = xd_fail(&e, "at most %d data sources", MODEL_DATA_MAX_SOURCES);
        goto done;
    }
    for (int i = 0; i < s.data.count; i++) src[i] = (model_data_source){s.data.items[i].path, s.data.items[i].weight};
    if ((rc = model_data_loader_open(src, s.data.count, MODEL_DATA_TRAIN, T, (uint64_t)s.seed, &loader, &e))) goto done;
    if ((rc = model_transformer_load(s.teacher, &teacher, &e))) goto done;
    if (model_data_loader_vocab(loader) != teacher.cfg.vocab) {
        rc = xd_fail(&e, "the data's vocabulary (%d) is not the teacher's (%d): prepare it with the teacher's tokenizer",
                     model_data_loader_vocab(loader), teacher.cfg.vocab);
        goto done;
    }
    int found = trainer_checkpoint_latest(s.out, ckpt, sizeof ckpt, &ckpt_step, &e);
    if (found < 0) {
        rc = -1;
        goto done;
    }
    /* resume from the newest complete checkpoint, else start from the student */
    if ((rc = model_transformer_load(found == 0 ? ckpt : s.student, &student, &e))) goto done;
    if ((rc = stage_check_lineage(&teacher, &student, true, &e))) goto done;
    if ((rc = parse_layers(s.layers, student.cfg.n_layers, &first, &last, &e))) goto done;
    layer_range lr_sel = {first, last};
    if ((rc = trainer_ranges_select(&student.layout, is_trainable, &lr_sel, &ranges, &e))) goto done;
    if ((rc = trainer_optim_init(&opt, ranges.total, &e))) goto done;
    if (found == 0) {
        if ((rc = trainer_restore(ckpt, &opt, loader, &start_step, &tokens_done, &e))) goto done;
        fprintf(stderr, "[align] resuming from %s (step %ld)\n", ckpt, start_step);
    }
    if ((rc = trainer_open(&run, s.out, "align", start_step, &e))) goto done;

    int nl = last - first + 1, D = student.cfg.hidden, qd = student.cfg.n_heads * student.cfg.head_dim;
    size_t nx = (size_t)T * D, ny = (size_t)T * qd;
    work = xd_calloc((size_t)nl, sizeof *work, &e);
    grads = work ? xd_calloc(student.layout.n_params, sizeof(float), &e) : NULL;
    xn = grads ? xd_malloc(sizeof(float) * nx * nl, &e) : NULL;
    att = xn ? xd_malloc(sizeof(float) * ny * nl, &e) : NULL;
    dy = att ? xd_malloc(sizeof(float) * ny, &e) : NULL;
    inputs = dy ? xd_malloc(sizeof(int) * (size_t)T, &e) : NULL;
    targets = inputs ? xd_malloc(sizeof(int) * (size_t)T, &e) : NULL;
    layer_loss = targets ? xd_calloc((size_t)nl, sizeof(double), &e) : NULL;
    if (!layer_loss) {
        rc = -1;
        goto done;
    }
    for (int l = 0; l < nl; l++)
        if ((rc = model_student_layer_new_f32(&student.cfg, student.rope_inv_freq, T, &work[l], &e))) goto done;
    model_kv_cache cache;
    if ((rc = model_kv_cache_init(&cache, &teacher.cfg, T, &e))) goto done;
    model_capture cap = {first, last, xn, att};
    kern_lr_schedule sched = {s.lr, s.lr_min, s.warmup, s.steps, !strcmp(s.schedule, "cosine")};
    fprintf(stderr, "[align] %s: layers %d-%d, %llu trainable parameters, %ld steps of %ld x %d tokens\n",
            s.out, first, last, (unsigned long long)ranges.total, s.steps, s.batch, T);

    for (long step = start_step; step < s.steps && rc == 0; step++) {
        double t0 = xd_now();
        memset(grads, 0, sizeof(float) * student.layout.n_params);
        for (int l = 0; l < nl; l++) layer_loss[l] = 0;
        for (long b = 0; b < s.batch && rc == 0; b++) {
            if ((rc = model_data_next(loader, inputs, targets, NULL, &e)) != 0) break;
            cache.length = 0;
            if ((rc = model_transformer_forward_capture(&teacher, &cache, inputs, T, NULL, false, &cap, &e))) break;
            for (int l = 0; l < nl && rc == 0; l++) {
                const float *yhat = model_student_layer_forward_f32(&student.cfg, &student.layout, student.params,
                                                                    first + l, xn + (size_t)l * nx, work[l], &e);
                if (!yhat) {
                    rc = -1;
                    break;
                }
                /* the mean over the batch: each sequence's MSE gradient scaled by 1/batch */
                layer_loss[l] += kern_mse_f32(dy, yhat, att + (size_t)l * ny, ny) / (double)s.batch;
                for (size_t i = 0; i < ny; i++) dy[i] /= (float)s.batch;
                rc = model_student_layer_backward_f32(&student.cfg, &student.layout, student.params, first + l,
                                                      xn + (size_t)l * nx, work[l], dy, grads, &e);
            }
        }
        if (rc) {
            if (rc > 0) rc = xd_fail(&e, "the data ran out");
            break;
        }
        double norm = trainer_clip(grads, &ranges, s.grad_clip);
        double lr = kern_lr_at(&sched, step);
        if (isfinite(norm)) trainer_adamw(student.params, grads, &ranges, &opt, lr, s.beta1, s.beta2, s.eps, s.weight_decay);
        tokens_done += (double)s.batch * T;
        double mean = 0;
        for (int l = 0; l < nl; l++) mean += layer_loss[l] / nl;
        double secs = xd_now() - t0;
        json_t *m = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:b}", "step", (json_int_t)(step + 1), "tokens",
                              tokens_done, "loss", mean, "lr", lr, "grad_norm", norm, "tokens_per_s",
                              (double)s.batch * T / secs, "skipped", !isfinite(norm));
        json_t *per = json_array();
        for (int l = 0; l < nl; l++) json_array_append_new(per, json_real(layer_loss[l]));
        json_object_set_new(m, "mse_layer", per);
        json_object_set_new(m, "first_layer", json_integer(first));
        char *line = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(m);
        rc = trainer_metrics(&run, line, &e);
        free(line);
        trainer_progress(&run, step + 1, s.steps, "mse %.4g  lr %.2e  %.0f tok/s", mean, lr, (double)s.batch * T / secs);
        bool last_step = step + 1 == s.steps;
        if (rc == 0 && ((step + 1) % s.checkpoint_every == 0 || last_step)) {
            char *text = trainer_state_json("align", step + 1, tokens_done, loader, settings_json);
            rc = text ? trainer_checkpoint_save(s.out, step + 1, &student, NULL, &opt, text,
                                                (int)s.keep_checkpoints, &e)
                      : xd_fail(&e, "out of memory");
            free(text);
        }
    }
    trainer_progress_end(&run);
    model_kv_cache_free(&cache);
    if (rc == 0) {
        char summary[256];
        snprintf(summary, sizeof summary, "{\"stage\": \"align\", \"steps\": %ld, \"tokens\": %.0f}\n", s.steps, tokens_done);
        /* the tokenizer travels with the student: keep what init recorded */
        rc = trainer_finish(s.out, &student, NULL, summary, &e);
        if (rc == 0) fprintf(stderr, "[align] done: %s/model\n", s.out);
    }
done:
    if (rc) fprintf(stderr, "xtrain align: %s\n", e.msg);
    if (work)
        for (int l = 0; l < last - first + 1; l++) model_student_layer_free_f32(work[l]);
    free(work), free(grads), free(xn), free(att), free(dy), free(inputs), free(targets), free(layer_loss);
    free(settings_json);
    trainer_optim_free(&opt);
    trainer_ranges_free(&ranges);
    trainer_close(&run);
    model_data_loader_free(loader);
    model_transformer_free(&student);
    model_transformer_free(&teacher);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
