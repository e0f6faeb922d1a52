/* stages/merge_score.h — what merge's weight search maximises (weights: search): a student's mean
 * validation log-likelihood per token over token shard directories, each domain weighted equally.
 * The val tokens are read once; each candidate's weights are then scored on the same windows, on
 * the CPU (model_student_hidden + model_lm_head) or on one CUDA GPU (the CUDA build). */
#ifndef XD_STAGES_MERGE_SCORE_H
#define XD_STAGES_MERGE_SCORE_H

#include "common/xd.h"

struct model_transformer;
typedef struct merge_score merge_score;

/* Reads up to max_tokens val targets of each directory in windows of seq_len. A directory without
 * val tokens is passed over (said on stderr, listed by merge_score_skipped); all empty is an
 * error, as is a vocabulary larger than the student's. cuda: the device, -1 for the CPU; m gives
 * the shapes (and on a GPU the first weights uploaded). */
int merge_score_open(merge_score **out, const struct model_transformer *m, const char *const *dirs, int n_dirs,
                     int seq_len, long max_tokens, int cuda, xd_err *e);
void merge_score_free(merge_score *s);

/* The scored domains: their directory and number of scored tokens. */
int merge_score_domains(const merge_score *s);
const char *merge_score_domain_path(const merge_score *s, int i);
long merge_score_domain_tokens(const merge_score *s, int i);
/* The directories that had no val tokens (not scored). */
int merge_score_skipped(const merge_score *s);
const char *merge_score_skipped_path(const merge_score *s, int i);

/* m's current weights: *mean = the mean over the domains of the mean log-likelihood per token
 * (natural log; higher is better), per_domain[i] (may be NULL) each domain's. */
int merge_score_run(merge_score *s, const struct model_transformer *m, double *mean, double *per_domain, xd_err *e);

#endif
