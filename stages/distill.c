/* xtrain distill: stage 2 (and 4, the final distill), DESIGN 1.2. End to end, every parameter
 * trains on loss = ce_weight * CE(next token) + kl_weight * KL(p_T^k || p_S^k), the teacher's
 * top-k distribution computed online from its logits. */
#include "config.h"
#include "stages.h"
#include "trainer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* the step's metrics, progress, update and checkpoint, from the batch-mean CE and KL */
static int distill_step_end(trainer_session *t, long step, double t0, double ce, double kl, double ce_weight,
                            double kl_weight, xd_err *e) {
    char progress[64];
    snprintf(progress, sizeof progress, "ce %.4f  kl %.4f", ce, kl);
    return trainer_session_step_end(t, step, t0, ce_weight * ce + kl_weight * kl,
                                    json_pack("{s:f, s:f}", "ce", ce, "kl", kl), progress, e);
}
#ifdef XD_HAVE_CUDA
#include "model/gpu.h"

/* The step on the GPU: the teacher's logits, its top-k and the student's forward and backward
 * for micro-batches of t->micro sequences at once; clipping and AdamW stay on the device. Data
 * parallel, each rank runs its share of the step's batch (a pass's share is still its fraction of
 * the whole batch), and the gradient and the loss terms are summed over the ranks. */
static int distill_gpu(trainer_session *t, long topk, double ce_weight, double kl_weight, xd_err *e) {
    const trainer_settings *s = t->s;
    int T = (int)s->seq_len, B = t->micro;
    gpu_net *gt = NULL, *gs = NULL;
    int rc = gpu_net_open(&gt, &t->teacher, t->cuda, B, T, GPU_LOGITS, 0, -1, e);
    if (rc == 0) rc = gpu_net_open(&gs, &t->student, t->cuda, B, T, GPU_TRAIN | GPU_LOGITS, 0, -1, e);
    if (rc == 0) rc = trainer_session_use_gpu(t, gs, e);
    if (rc == 0)
        fprintf(stderr, "[distill] %s: %s, %.1f GiB for the teacher and the student, micro-batches of %d x %d\n",
                s->out, gpu_net_device(gs), (gpu_net_bytes(gt) + gpu_net_bytes(gs)) / 1073741824.0, B, T);
    double share = (double)B / (double)s->batch;
    for (long step = t->start_step; step < s->steps && rc == 0; step++) {
        double t0 = xd_now(), ce_sum = 0, kl_sum = 0;
        if ((rc = gpu_net_zero_grads(gs, e))) break;
        for (long b = 0; b < t->dp.per_rank / B && rc == 0; b++) {
            double ce, kl;
            if ((rc = trainer_session_next_pass(t, e)) || (rc = gpu_teacher_forward(gt, t->inputs, e)) ||
                (rc = gpu_student_forward(gs, t->inputs, e)) ||
                (rc = gpu_distill_loss(gs, gt, t->targets, (int)topk, ce_weight, kl_weight, share, &ce, &kl, e)) ||
                (rc = gpu_student_backward(gs, e)))
                break;
            ce_sum += ce * share;
            kl_sum += kl * share;
        }
        double sums[2] = {ce_sum, kl_sum};
        if (rc || (rc = trainer_session_dp_sum(t, sums, 2, e))) break;
        ce_sum = sums[0], kl_sum = sums[1];
        rc = distill_step_end(t, step, t0, ce_sum, kl_sum, ce_weight, kl_weight, e);
    }
    if (rc == 0) rc = trainer_session_finish(t, e);
    t->gpu = NULL;
    gpu_net_close(gs);
    gpu_net_close(gt);
    return rc;
}
#endif

static bool every_tensor(const model_tensor_entry *t, void *ctx) {
    (void)t;
    (void)ctx;
    return true;
}

int stage_distill(int argc, char **argv) {
    xd_err e = {{0}};
    trainer_settings s;
    long topk = 0;
    double ce_weight = 0, kl_weight = 0;
    memset(&s, 0, sizeof s);
    cfg_field fields[32];
    int n_fields = trainer_settings_fields(&s, fields, "the starting student (align's model/, or a merge)", "1e-5",
                                           "1e-5", "constant", "0.1");
    fields[n_fields++] = (cfg_field){"topk", CFG_INT, &topk, "256", "teacher logits kept per position for the KL", 1, 1 << 24};
    fields[n_fields++] = (cfg_field){"ce_weight", CFG_NUMBER, &ce_weight, "0.9", "weight of the next-token cross-entropy", 0, 1e6};
    fields[n_fields++] = (cfg_field){"kl_weight", CFG_NUMBER, &kl_weight, "0.1", "weight of the top-k KL to the teacher", 0, 1e6};
    n_fields += trainer_dp_fields(&s, fields + n_fields);
    int cli = cfg_stage_cli("distill", argc, argv, fields, n_fields, NULL, NULL, NULL);
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    trainer_session t;
    model_student_acts_f32 *acts = NULL;
    model_kv_cache cache = {0};
    float *tlogits = NULL, *slogits = NULL, *topv = NULL;
    int *topi = NULL, T = (int)s.seq_len;
    int rc = trainer_session_open(&t, "distill", &s, fields, n_fields, false, NULL, every_tensor, NULL, &e);
    if (rc == 0 && topk > t.teacher.cfg.vocab)
        rc = xd_fail(&e, "topk %ld exceeds the vocabulary (%d)", topk, t.teacher.cfg.vocab);
    if (rc == 0 && t.cuda >= 0 && topk > 1024) rc = xd_fail(&e, "topk %ld: the GPU keeps at most 1024", topk);
#ifdef XD_HAVE_CUDA
    if (rc == 0 && t.cuda >= 0) {
        rc = distill_gpu(&t, topk, ce_weight, kl_weight, &e);
    } else
#endif
    if (rc == 0) {
        size_t V = (size_t)t.teacher.cfg.vocab, K = (size_t)topk;
        tlogits = xd_malloc(sizeof(float) * (size_t)T * V, &e);
        slogits = tlogits ? xd_malloc(sizeof(float) * (size_t)T * V, &e) : NULL;
        topv = slogits ? xd_malloc(sizeof(float) * (size_t)T * K, &e) : NULL;
        topi = topv ? xd_malloc(sizeof(int) * (size_t)T * K, &e) : NULL;
        rc = topi ? model_student_acts_new_f32(&t.student.cfg, T, true, &acts, &e) : -1;
        if (rc == 0) rc = model_kv_cache_init(&cache, &t.teacher.cfg, T, &e);
        if (rc == 0)
            fprintf(stderr, "[distill] %s: %llu parameters, %ld steps of %ld x %d tokens, top-%ld KL\n", s.out,
                    (unsigned long long)t.ranges.total, s.steps, s.batch, T, topk);
        for (long step = t.start_step; step < s.steps && rc == 0; step++) {
            double t0 = xd_now(), ce_sum = 0, kl_sum = 0;
            memset(t.grads, 0, sizeof(float) * t.student.layout.n_params);
            for (long b = 0; b < s.batch && rc == 0; b++) {
                if ((rc = trainer_session_next(&t, &e))) break;
                cache.length = 0;
                if ((rc = model_transformer_forward(&t.teacher, &cache, t.inputs, T, tlogits, true, &e))) break;
                if ((rc = kern_topk_f32(topi, topv, tlogits, T, (int)V, (int)K, &e))) break;
                if ((rc = model_student_forward_f32(&t.student.cfg, &t.student.layout, t.student.params,
                                                    t.student.rope_inv_freq, t.inputs, T, slogits, acts, &e)))
                    break;
                double ce, kl;
                if ((rc = kern_distill_loss_f32(&ce, &kl, slogits, slogits, t.targets, topi, topv, T, (int)V, (int)K,
                                                ce_weight, kl_weight, &e)))
                    break;
                ce_sum += ce / (double)s.batch;
                kl_sum += kl / (double)s.batch;
                float inv_batch = 1.0f / (float)s.batch;
                for (size_t i = 0; i < (size_t)T * V; i++) slogits[i] *= inv_batch;
                rc = model_student_backward_f32(&t.student.cfg, &t.student.layout, t.student.params, acts, slogits,
                                                t.grads, t.inputs, &e);
            }
            if (rc) break;
            rc = distill_step_end(&t, step, t0, ce_sum, kl_sum, ce_weight, kl_weight, &e);
        }
        if (rc == 0) rc = trainer_session_finish(&t, &e);
    }
    if (rc) fprintf(stderr, "xtrain distill: %s\n", e.msg);
    model_student_acts_free_f32(acts);
    model_kv_cache_free(&cache);
    free(tlogits), free(slogits), free(topv), free(topi);
    trainer_session_close(&t);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
