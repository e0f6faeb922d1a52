/* stages/trainer.h — what every training stage shares: the run directory, the metrics file (one
 * JSON object per step), the progress line, and checkpoints written atomically and resumed from.
 *
 * A run directory OUT holds metrics.jsonl, checkpoints/step-NNNNNNNN/ (model.safetensors,
 * config.json, optimizer.bin, trainer_state.json, then DONE — written in a .tmp directory and
 * renamed), and at the end model/ (the result) and DONE. */
#ifndef XD_STAGES_TRAINER_H
#define XD_STAGES_TRAINER_H

#include "common/xd.h"
#include "model/model.h"

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
/* Writes the final model to OUT/model and then OUT/DONE. */
int trainer_finish(const char *out, const model_transformer *model, const char *tokenizer_source,
                   const char *summary_json, xd_err *e);



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
#endif
