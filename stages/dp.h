/* stages/dp.h — data-parallel distill: one process per GPU (rank 0 .. dp_size-1), the ranks
 * meeting through an NCCL unique id that rank 0 writes into a file (docs/stages.md).
 *
 * The pure parts (always built, unit-tested by tests/unit/test_dp.c): the settings' checks, which
 * sequences of a step a rank takes, the id file (written atomically by rank 0, waited for by the
 * others with a deadline), a hash to compare the ranks' weights. The session's parts (join, the
 * all-reduces, the checks between ranks) need the CUDA backend and nccl.h (XD_HAVE_NCCL); without
 * them data parallelism is refused before any work. */
#ifndef XD_STAGES_DP_H
#define XD_STAGES_DP_H

#include "common/xd.h"

#include <time.h>

#define DP_ID_BYTES 128 /* an NCCL unique id */

typedef struct dp_plan {
    bool on;       /* data parallel: dp_size > 1, or a dp_id given (one rank is allowed) */
    int size, rank;
    long per_rank; /* sequences of each step this rank takes: batch / dp_size */
    long first;    /* the first of them in the step's batch: rank * per_rank */
} dp_plan;

/* From the settings (dp_size <= 0 counts as 1; dp_rank -1: not given; dp_id NULL or "": not
 * given): rank within [0, dp_size), given exactly when data parallel with dp_size > 1 (one rank is
 * rank 0), batch divisible by dp_size, micro_batch (0: none) dividing a rank's share. Errors name
 * the settings as a user wrote them. */
int dp_plan_make(long dp_size, long dp_rank, const char *dp_id, long batch, long micro_batch, dp_plan *p,
                 xd_err *e);
/* Rank `rank` of `size` takes sequences first .. first+count-1 of every step's batch of `batch`
 * (contiguous blocks in rank order; every rank reads the whole step from the same stream). */
void dp_share(long batch, int size, int rank, long *first, long *count);

/* The id file, text:
 *     xdistill-dp-id 1
 *     dp_size N
 *     nccl_id <256 hex digits>
 * written atomically (a temporary file renamed over path). */
int dp_id_write(const char *path, const unsigned char id[DP_ID_BYTES], int size, xd_err *e);
/* Parses an id file's text (path: for the messages): a file of something else, a truncated or
 * damaged one, or one written for another dp_size is an error saying which. */
int dp_id_parse(const char *path, const char *text, size_t len, int size, unsigned char id[DP_ID_BYTES],
                xd_err *e);
/* Waits for rank 0's id file and parses it: says once on stderr whom it waits for; a file last
 * modified before not_before is an earlier run's and is waited past; after timeout_s, an error. */
int dp_id_wait(const char *path, int rank, int size, double timeout_s, time_t not_before,
               unsigned char id[DP_ID_BYTES], xd_err *e);

/* A 64-bit hash of bytes (the ranks' weights must agree bit for bit), continuing from h. */
uint64_t dp_hash(const void *data, size_t bytes, uint64_t h);

/* ---- in a training session (stages/trainer.c calls these) ---- */
struct trainer_session;
/* The communicator: rank 0 makes the id and writes it to the id file, every other rank waits for
 * it; then all join (with the dp_timeout deadline); rank 0 removes the file once all have. Then the
 * ranks check that their settings agree and take rank 0's newest checkpoint: *ckpt_step is this
 * rank's (-1: none) on entry and rank 0's on return. */
int trainer_dp_join(struct trainer_session *t, long *ckpt_step, xd_err *e);
/* The step's gradient (every trainable range, in place on the GPU) summed over the ranks. */
int trainer_dp_sum_grads(struct trainer_session *t, xd_err *e);
/* n <= 32 host doubles summed over the ranks (a no-op unless data parallel). */
int trainer_session_dp_sum(struct trainer_session *t, double *v, int n, xd_err *e);
/* The ranks' weights after the last step must be identical: an error says otherwise. */
int trainer_dp_check_weights(struct trainer_session *t, xd_err *e);
/* Closes the communicator (finished) or aborts it (anything else), so the others fail too. */
void trainer_dp_close(struct trainer_session *t, bool finished);

#endif
