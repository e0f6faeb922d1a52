/* xtrain distill: stage 2 (and 4, the final distill), DESIGN 1.2. End to end, every parameter
 * trains on loss = ce_weight * CE(next token) + kl_weight * KL(p_T^k || p_S^k), the teacher's
 * top-k distribution computed online from its logits. */
#include "config.h"
#include "stages.h"
#include "trainer.h"
#include "kernels/kernels.h"
#include "model/data.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct distill_settings {
    char *teacher, *student, *out, *schedule;
    cfg_sources data;
    long seq_len, batch, steps, warmup, seed, checkpoint_every, keep_checkpoints, topk;
    double lr, lr_min, weight_decay, grad_clip, beta1, beta2, eps, ce_weight, kl_weight;
} distill_settings;

static int distill_fields(distill_settings *s, cfg_field *f) {
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &s->teacher, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"student", CFG_STRING, &s->student, NULL, "the starting student (align's model/, or a merge)", 0, 0},
        {"out", CFG_STRING, &s->out, NULL, "run directory (checkpoints, metrics, model/)", 0, 0},
        {"data", CFG_SOURCES, &s->data, NULL, "token shard directories with mixture weights", 0, 0},
        {"seq_len", CFG_INT, &s->seq_len, "256", "tokens per sequence", 2, 1 << 20},
        {"batch", CFG_INT, &s->batch, "4", "sequences per step", 1, 1 << 20},
        {"steps", CFG_INT, &s->steps, "100", "optimizer steps", 1, 1e12},
        {"lr", CFG_NUMBER, &s->lr, "1e-5", "peak learning rate (paper: 1e-5)", 0, 10},
        {"lr_min", CFG_NUMBER, &s->lr_min, "1e-5", "final learning rate of the cosine", 0, 10},
        {"warmup", CFG_INT, &s->warmup, "10", "warm-up steps (the re-warm)", 0, 1e12},
        {"schedule", CFG_STRING, &s->schedule, "constant", "constant or cosine after warm-up", 0, 0},
        {"weight_decay", CFG_NUMBER, &s->weight_decay, "0.1", "AdamW decoupled weight decay", 0, 10},
        {"grad_clip", CFG_NUMBER, &s->grad_clip, "1.0", "global gradient-norm clip (0: off)", 0, 1e9},
        {"beta1", CFG_NUMBER, &s->beta1, "0.9", "AdamW beta1", 0, 1},
        {"beta2", CFG_NUMBER, &s->beta2, "0.999", "AdamW beta2", 0, 1},
        {"eps", CFG_NUMBER, &s->eps, "1e-8", "AdamW epsilon", 0, 1},
        {"topk", CFG_INT, &s->topk, "256", "teacher logits kept per position for the KL", 1, 1 << 24},
        {"ce_weight", CFG_NUMBER, &s->ce_weight, "0.9", "weight of the next-token cross-entropy", 0, 1e6},
        {"kl_weight", CFG_NUMBER, &s->kl_weight, "0.1", "weight of the top-k KL to the teacher", 0, 1e6},
        {"seed", CFG_INT, &s->seed, "0", "data order seed", 0, 9e18},
        {"checkpoint_every", CFG_INT, &s->checkpoint_every, "50", "steps between checkpoints", 1, 1e12},
        {"keep_checkpoints", CFG_INT, &s->keep_checkpoints, "2", "complete checkpoints kept", 1, 1000},
    };
    memcpy(f, fields, sizeof fields);
    return (int)(sizeof fields / sizeof fields[0]);
}

static bool every_tensor(const model_tensor_entry *t, void *ctx) {
    (void)t;
    (void)ctx;
    return true;
}

int stage_distill(int argc, char **argv) {
    xd_err e = {{0}};
    distill_settings s;
    memset(&s, 0, sizeof s);
    cfg_field fields[32];
    int n_fields = distill_fields(&s, fields);
    int cli = cfg_stage_cli("distill", argc, argv, fields, n_fields, NULL, NULL, NULL);
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    if (strcmp(s.schedule, "cosine") && strcmp(s.schedule, "constant")) {
        fprintf(stderr, "xtrain distill: schedule \"%s\" must be cosine or constant\n", s.schedule);
        cfg_free(fields, n_fields);
        return 2;
    }
    int rc = 0, T = (int)s.seq_len;
    model_transformer teacher = {0}, student = {0};
    model_data_loader *loader = NULL;
    model_data_source src[MODEL_DATA_MAX_SOURCES];
    trainer_ranges ranges = {0};
    trainer_optim opt = {0};
    trainer_run run = {0};
    model_student_acts_f32 *acts = NULL;
    model_kv_cache cache = {0};
    float *grads = NULL, *tlogits = NULL, *slogits = NULL, *topv = NULL;
    int *inputs = NULL, *targets = NULL, *topi = NULL;
    char *settings_json = cfg_to_json(fields, n_fields);
    char ckpt[1400];
    long start_step = 0, ckpt_step = 0;
    double tokens_done = 0;

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
    if (s.topk > teacher.cfg.vocab) {
        rc = xd_fail(&e, "topk %ld exceeds the vocabulary (%d)", s.topk, teacher.cfg.vocab);
        goto done;
    }
    int found = trainer_checkpoint_latest(s.out, ckpt, sizeof ckpt, &ckpt_step, &e);
    if (found < 0) {
        rc = -1;
        goto done;
    }
    if ((rc = model_transformer_load(found == 0 ? ckpt : s.student, &student, &e))) goto done;
    if ((rc = stage_check_lineage(&teacher, &student, false, &e))) goto done;
    if ((rc = trainer_ranges_select(&student.layout, every_tensor, NULL, &ranges, &e))) goto done;
    if ((rc = trainer_optim_init(&opt, ranges.total, &e))) goto done;
    if (found == 0) {
        if ((rc = trainer_restore(ckpt, &opt, loader, &start_step, &tokens_done, &e))) goto done;
        fprintf(stderr, "[distill] resuming from %s (step %ld)\n", ckpt, start_step);
    }
    if ((rc = trainer_open(&run, s.out, "distill", start_step, &e))) goto done;
    size_t V = (size_t)teacher.cfg.vocab, K = (size_t)s.topk;
    grads = xd_calloc(student.layout.n_params, sizeof(float), &e);
    tlogits = grads ? xd_malloc(sizeof(float) * (size_t)T * V, &e) : NULL;
    slogits = tlogits ? xd_malloc(sizeof(float) * (size_t)T * V, &e) : NULL;
    topv = slogits ? xd_malloc(sizeof(float) * (size_t)T * K, &e) : NULL;
    topi = topv ? xd_malloc(sizeof(int) * (size_t)T * K, &e) : NULL;
    inputs = topi ? xd_malloc(sizeof(int) * (size_t)T, &e) : NULL;
    targets = inputs ? xd_malloc(sizeof(int) * (size_t)T, &e) : NULL;
    if (!targets) {
        rc = -1;
        goto done;
    }
    if ((rc = model_student_acts_new_f32(&student.cfg, T, true, &acts, &e))) goto done;
    if ((rc = model_kv_cache_init(&cache, &teacher.cfg, T, &e))) goto done;
    kern_lr_schedule sched = {s.lr, s.lr_min, s.warmup, s.steps, !strcmp(s.schedule, "cosine")};
    fprintf(stderr, "[distill] %s: %llu parameters, %ld steps of %ld x %d tokens, top-%ld KL\n", s.out,
            (unsigned long long)ranges.total, s.steps, s.batch, T, s.topk);

    for (long step = start_step; step < s.steps && rc == 0; step++) {
        double t0 = xd_now(), ce_sum = 0, kl_sum = 0;
        memset(grads, 0, sizeof(float) * student.layout.n_params);
        for (long b = 0; b < s.batch && rc == 0; b++) {
            if ((rc = model_data_next(loader, inputs, targets, NULL, &e)) != 0) break;
            cache.length = 0;
            if ((rc = model_transformer_forward(&teacher, &cache, inputs, T, tlogits, true, &e))) break;
            if ((rc = kern_topk_f32(topi, topv, tlogits, T, (int)V, (int)K, &e))) break;
            if ((rc = model_student_forward_f32(&student.cfg, &student.layout, student.params, student.rope_inv_freq,
                                                inputs, T, slogits, acts, &e)))
                break;
            double ce, kl;
            if ((rc = kern_distill_loss_f32(&ce, &kl, slogits, slogits, targets, topi, topv, T, (int)V, (int)K,
                                            s.ce_weight, s.kl_weight, &e)))
                break;
            ce_sum += ce / (double)s.batch;
            kl_sum += kl / (double)s.batch;
            float inv_batch = 1.0f / (float)s.batch;
            for (size_t i = 0; i < (size_t)T * V; i++) slogits[i] *= inv_batch;
            rc = model_student_backward_f32(&student.cfg, &student.layout, student.params, acts, slogits, grads,
                                            inputs, &e);
        }
        if (rc) {
            if (rc > 0) rc = xd_fail(&e, "the data ran out");
            break;
        }
        double norm = trainer_clip(grads, &ranges, s.grad_clip);
        double lr = kern_lr_at(&sched, step);
        if (isfinite(norm)) trainer_adamw(student.params, grads, &ranges, &opt, lr, s.beta1, s.beta2, s.eps, s.weight_decay);
        tokens_done += (double)s.batch * T;
        double secs = xd_now() - t0, loss = s.ce_weight * ce_sum + s.kl_weight * kl_sum;
        json_t *m = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:b}", "step", (json_int_t)(step + 1),
                              "tokens", tokens_done, "loss", loss, "ce", ce_sum, "kl", kl_sum, "lr", lr,
                              "grad_norm", norm, "tokens_per_s", (double)s.batch * T / secs, "skipped",
                              !isfinite(norm));
        char *line = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(m);
        rc = trainer_metrics(&run, line, &e);
        free(line);
        trainer_progress(&run, step + 1, s.steps, "ce %.4f  kl %.4f  lr %.2e  %.0f tok/s", ce_sum, kl_sum, lr,
                         (double)s.batch * T / secs);
        if (rc == 0 && ((step + 1) % s.checkpoint_every == 0 || step + 1 == s.steps)) {
            char *text = trainer_state_json("distill", step + 1, tokens_done, loader, settings_json);
            rc = text ? trainer_checkpoint_save(s.out, step + 1, &student, NULL, &opt, text,
                                                (int)s.keep_checkpoints, &e)
                      : xd_fail(&e, "out of memory");
            free(text);
        }
    }
    trainer_progress_end(&run);
    if (rc == 0) {
        char summary[256];
        snprintf(summary, sizeof summary, "{\"stage\": \"distill\", \"steps\": %ld, \"tokens\": %.0f}\n", s.steps,
                 tokens_done);
        rc = trainer_finish(s.out, &student, NULL, summary, &e);
        if (rc == 0) fprintf(stderr, "[distill] done: %s/model\n", s.out);
    }
done:
    if (rc) fprintf(stderr, "xtrain distill: %s\n", e.msg);
    model_student_acts_free_f32(acts);
    model_kv_cache_free(&cache);
    free(grads), free(tlogits), free(slogits), free(topv), free(topi), free(inputs), free(targets);
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
