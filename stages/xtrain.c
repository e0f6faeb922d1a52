/* xtrain: runs one stage of xdistill in one process. */
#include "stages.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"init", stage_init, "make a hybrid student from a teacher (stage 0)"},
    {"align", stage_align, "stage 1: per-layer MSE of the student's attention against the teacher's"},
    {"distill", stage_distill, "stage 2: knowledge distillation (CE + top-k KL), every parameter"},
    {"merge", stage_merge, "stage 3: weighted average of expert students"},
    {"eval", stage_eval, "stage 5: teacher and student on perplexity and multiple-choice tasks"},
    {"ppl", stage_ppl, "perplexity of a text or token ids under a model"},
    {"generate", stage_generate, "stream text from a model (greedy or sampled; --chat)"},
    {"bench", stage_bench, "tokens/s and MFU of the align and distill steps on a GPU (random weights)"},
    {"prepare", stage_prepare, "tokenise a corpus into train/val token shards (--inspect to check them)"},
    {"export", stage_export, "a student as a Hugging Face directory (transformers, trust_remote_code)"},
};

static void usage(void) {
    fprintf(stderr, "usage: xtrain COMMAND [ARGS]   (xtrain COMMAND --help for its flags)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(stderr, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("xtrain (xdistill) %s\n", XD_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "xtrain: unknown command \"%s\"\n", argv[1]);
    usage();
    return 2;
}
