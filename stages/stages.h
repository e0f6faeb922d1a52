/* stages/stages.h — xtrain's subcommands. Each takes the arguments after its name and returns the
 * process exit code (0 success, 1 failure, 2 usage error). */
#ifndef XD_STAGES_H
#define XD_STAGES_H

int stage_init(int argc, char **argv);
int stage_ppl(int argc, char **argv);
int stage_generate(int argc, char **argv);
int stage_prepare(int argc, char **argv);

#endif
