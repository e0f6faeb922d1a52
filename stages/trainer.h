/* stages/trainer.h — what every training stage shares: the run directory, the metrics file (one
 * JSON object per step), the progress line, and checkpoints written atomically and resumed from.
 *
 * A run directory OUT holds metrics.jsonl, checkpoints/step-NNNNNNNN/ (model.safetensors,
 * config.json, optimizer.bin, trainer_state.json, then DONE — written in a .tmp directory and
 * renamed), and at the end model/ (the result) and DONE. */
#ifndef XD_STAGES_TRAINER_H
#define XD_STAGES_TRAINER_H

#include "common/xd.h"
#include "config.h"
#include "dp.h"
#include "kernels/kernels.h"
#include "model/model.h"

#include <jansson.h>
#include <stdio.h>

typedef struct trainer_run {
    char out[1024];
    char stage[32];
    FILE *metrics;
    bool tty;
    double t_start, last_progress;
    long first_step; /* the step the run (re)started from */
} trainer_run;

/* Opens OUT (created when missing) and its metrics file; on resume from resume_step, lines of
 * later steps (written after that checkpoint) are dropped so the curve continues exactly. */
int trainer_open(trainer_run *r, const char *out, const char *stage, long resume_step, xd_err *e);
void trainer_close(trainer_run *r);
/* Appends one line (a JSON object text) to metrics.jsonl and flushes it. */
int trainer_metrics(trainer_run *r, const char *json_line, xd_err *e);
/* A progress line with ETA on a terminal (at most twice a second); nothing otherwise. */
void trainer_progress(trainer_run *r, long step, long total, const char *fmt, ...) XD_PRINTF(4, 5);
void trainer_progress_end(trainer_run *r);

/* The optimiser's moments for the trainable tensors (the entries of a layout selected by a mask),
 * packed in layout order. */
typedef struct trainer_optim {
    uint64_t n;   /* trainable parameters */
    float *m, *v;
    long step;    /* AdamW steps taken */
} trainer_optim;

int trainer_checkpoint_save(const char *out, long step, const model_transformer *model,
                            const char *tokenizer_source, const trainer_optim *opt,
                            const char *state_json, int keep, xd_err *e);
/* The newest complete checkpoint (one with DONE): 0 and its path and step, 1 when there is none. */
int trainer_checkpoint_latest(const char *out, char *path, size_t cap, long *step, xd_err *e);
int trainer_checkpoint_load_optim(const char *ckpt, trainer_optim *opt, xd_err *e);
/* trainer_state.json's text; the caller frees it. */
int trainer_checkpoint_load_state(const char *ckpt, char **json, xd_err *e);
/* Restores a run from a checkpoint: the optimiser moments, the data loader's position, and the
 * step and token count reached. */
struct model_data_loader;
int trainer_restore(const char *ckpt, trainer_optim *opt, struct model_data_loader *loader,
                    long *step, double *tokens, xd_err *e);
/* trainer_state.json for a checkpoint: stage, step, tokens, the loader's position and the settings
 * (a JSON object text). The caller frees it. */
char *trainer_state_json(const char *stage, long step, double tokens,
                         const struct model_data_loader *loader, const char *settings_json);
/* Writes the final model to OUT/model and then OUT/DONE. same_as_checkpoint (or NULL): a checkpoint
 * directory holding exactly these weights, whose files OUT/model then hard-links. */
int trainer_finish(const char *out, const model_transformer *model, const char *tokenizer_source,
                   const char *same_as_checkpoint, const char *summary_json, xd_err *e);



/* The trainable part of a model: contiguous ranges of the parameter array (merged from the
 * layout's entries a stage selects), and the optimiser step over them. */
typedef struct trainer_ranges {
    uint64_t *offset, *count;
    int n;
    uint64_t total;
} trainer_ranges;

/* keep(entry, ctx) selects a tensor. */
int trainer_ranges_select(const model_layout *L, bool (*keep)(const model_tensor_entry *, void *),
                          void *ctx, trainer_ranges *r, xd_err *e);
void trainer_ranges_free(trainer_ranges *r);
/* Global-norm clipping over the ranges (torch.nn.utils.clip_grad_norm_); returns the norm before
 * clipping; a non-finite norm leaves the gradient untouched (the caller skips the step). */
double trainer_clip(float *grads, const trainer_ranges *r, double max_norm);
/* One AdamW step over the ranges; o->m / o->v are packed in range order; o->step advances. */
void trainer_adamw(float *params, const float *grads, const trainer_ranges *r, trainer_optim *o,
                   double lr, double beta1, double beta2, double eps, double weight_decay);
int trainer_optim_init(trainer_optim *o, uint64_t n, xd_err *e);
void trainer_optim_free(trainer_optim *o);

/* ---- a training stage's session: what align and distill share around their step ---- */

/* The settings every training stage has (docs/stages.md). */
typedef struct trainer_settings {
    char *teacher, *student, *out, *schedule, *device;
    cfg_sources data;
    long seq_len, batch, micro_batch, steps, warmup, seed, checkpoint_every, keep_checkpoints;
    double lr, lr_min, weight_decay, grad_clip, beta1, beta2, eps;
    /* data parallelism (stages/dp.h; the stages that offer it add trainer_dp_fields): zero here
       (dp_size 0, no dp_id) is off */
    long dp_size, dp_rank;
    char *dp_id;
    double dp_timeout;
} trainer_settings;

/* The shared fields, with this stage's defaults, written to f; returns how many. */
int trainer_settings_fields(trainer_settings *s, cfg_field *f, const char *student_help, const char *lr,
                            const char *lr_min, const char *schedule, const char *weight_decay);
/* The data-parallel fields (dp_size, dp_rank, dp_id, dp_timeout), written to f; returns how many. */
int trainer_dp_fields(trainer_settings *s, cfg_field *f);

struct model_data_loader;
typedef struct trainer_session {
    char stage[32];
    trainer_settings *s;
    model_transformer teacher, student;
    struct model_data_loader *loader;
    trainer_ranges ranges;
    trainer_optim opt;
    trainer_run run;
    kern_lr_schedule sched;
    float *grads;         /* one per parameter, laid out as the student's */
    int *inputs, *targets; /* one sequence: seq_len each */
    long start_step;
    double tokens;
    char *settings_json;
    int out_lock;         /* fd of OUT/.lock, held for the whole stage; -1 when none */
    int cuda;             /* the CUDA device of the device key, -1 for the CPU */
    int micro;            /* sequences per pass (micro_batch, or this rank's share of the batch) */
    struct gpu_net *gpu;  /* the student on the GPU (trainer_session_use_gpu), else NULL */
    /* data parallelism (stages/dp.h): every rank reads the whole step from the same stream and
       takes its share; only the writer (rank 0, or the only process) writes into out */
    dp_plan dp;
    bool writer;
    struct kern_dp_comm *dp_comm; /* NULL unless data parallel */
    time_t dp_started;    /* when this process opened the session (the id file's age is judged by it) */
    long step_pos;        /* sequences of the current step this rank has taken */
    int *skip;            /* one sequence's inputs and targets, for those of the other ranks */
    bool finished;        /* trainer_session_finish succeeded */
} trainer_session;

/* Everything before the first step, checked before any work (and OUT locked first: a second
 * xtrain on the same OUT — a fenced attempt's child still running on a frozen or partitioned
 * node — is waited for, never run beside, so two writers never share checkpoints and metrics): the data, the teacher, the student
 * (or the newest complete checkpoint of out, to resume from), their lineage (same_weights: the
 * copied teacher weights must be unchanged), the trainable tensors (prepare, may be NULL, runs
 * once the student is loaded; then select picks tensors), the optimiser and the run directory. */
int trainer_session_open(trainer_session *t, const char *stage, trainer_settings *s,
                         const cfg_field *fields, int n_fields, bool same_weights,
                         int (*prepare)(trainer_session *, void *, xd_err *),
                         bool (*select)(const model_tensor_entry *, void *), void *ctx, xd_err *e);
/* "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N, a CUDA device made current; an error names the key's
 * value, a CUDA device asked of a build without the CUDA backend, and one that is not there. */
int trainer_parse_device(const char *spec, int *cuda, xd_err *e);
/* From now on the student trains on the GPU: its moments are uploaded from t->opt, step_end
 * clips and steps there, and checkpoints and the final model are read back from it. */
int trainer_session_use_gpu(trainer_session *t, struct gpu_net *student, xd_err *e);
/* The next sequence into t->inputs / t->targets; _pass: the next t->micro sequences of this
 * rank's share of the step, one after another (data parallel: the other ranks' sequences of the
 * step are read past, so the stream's position is the same on every rank). */
int trainer_session_next(trainer_session *t, xd_err *e);
int trainer_session_next_pass(trainer_session *t, xd_err *e);
/* After a step's gradients are in t->grads: clip, AdamW at the step's learning rate, the metrics
 * line (step, tokens, loss, then the stage's own fields from extra (taken over), lr, grad_norm,
 * tokens_per_s, skipped), the progress line, and a checkpoint when due. Data parallel, the GPU's
 * gradient (this rank's share) is first summed over the ranks here, the caller having summed its
 * loss terms with trainer_session_dp_sum; every rank steps, rank 0 alone writes. */
int trainer_session_step_end(trainer_session *t, long step, double started, double loss, json_t *extra,
                             const char *progress, xd_err *e);
/* The final model and DONE (data parallel: after checking that every rank's weights agree; the
 * writer writes). */
int trainer_session_finish(trainer_session *t, xd_err *e);
void trainer_session_close(trainer_session *t);
#endif
