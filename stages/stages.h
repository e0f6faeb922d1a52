/* stages/stages.h — xtrain's subcommands. Each takes the arguments after its name and returns the
 * process exit code (0 success, 1 failure, 2 usage error). */
#ifndef XD_STAGES_H
#define XD_STAGES_H

#include <stdbool.h>

int stage_init(int argc, char **argv);
int stage_align(int argc, char **argv);
int stage_distill(int argc, char **argv);
int stage_merge(int argc, char **argv);
int stage_eval(int argc, char **argv);

struct model_transformer;
struct xd_err;
/* The student must come from this teacher: same architecture; with weights_unchanged (align)
 * also the same copied weights. */
int stage_check_lineage(const struct model_transformer *teacher,
                        const struct model_transformer *student, bool weights_unchanged,
                        struct xd_err *e);
int stage_ppl(int argc, char **argv);
int stage_generate(int argc, char **argv);
int stage_prepare(int argc, char **argv);
int stage_bench(int argc, char **argv);
int stage_export(int argc, char **argv);

#endif
