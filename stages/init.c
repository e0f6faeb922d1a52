/* xtrain init: a hybrid student from a teacher (DESIGN 1.2, stage 0). */
#define _XOPEN_SOURCE 700
#include "args.h"
#include "config.h"
#include "stages.h"
#include "model/model.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int init_run(const char *teacher_path, const char *out, int window, int sinks, int chunk,
                    double eps, bool force, bool reuse);

/* xtrain init --config FILE.yaml: the same settings as keys (how the coordinator runs it). */
static int init_from_config(int argc, char **argv) {
    char *teacher = NULL, *out = NULL;
    long window = 0, sinks = 0, chunk = 0;
    double eps = 0;
    bool force = false;
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &teacher, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"out", CFG_STRING, &out, NULL, "directory to write the student to", 0, 0},
        {"window", CFG_INT, &window, "512", "sliding-window length W", 1, 1 << 24},
        {"sinks", CFG_INT, &sinks, "4", "sink tokens S", 0, 1 << 16},
        {"chunk", CFG_INT, &chunk, "64", "mLSTM chunk length L", 1, 1 << 16},
        {"mlstm_eps", CFG_NUMBER, &eps, "1e-6", "mLSTM denominator epsilon", 0, 0.999},
        {"force", CFG_BOOL, &force, "false", "overwrite a student already in out", 0, 0},
    };
    int n = (int)(sizeof fields / sizeof fields[0]);
    int cli = cfg_stage_cli("init", argc, argv, fields, n, NULL, NULL, NULL);
    /* a re-run of a finished init (a retried job) finds its student and succeeds */
    int rc = cli == 1 ? 0 : cli == 2 ? 2 : init_run(teacher, out, (int)window, (int)sinks, (int)chunk, eps, force, true);
    cfg_free(fields, n);
    return rc;
}

int stage_init(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9) || !strcmp(argv[i], "--print-keys"))
            return init_from_config(argc, argv);
    const char *teacher_path = NULL, *out = NULL;
    int window = 512, sinks = 4, chunk = 64;
    double eps = 1e-6;
    bool force = false;
    arg_spec specs[] = {
        {"--teacher", ARG_STRING, &teacher_path, "teacher: HF model directory or .gguf file", false},
        {"--out", ARG_STRING, &out, "directory to write the student to", false},
        {"--window", ARG_INT, &window, "sliding-window length W (default 512)", false},
        {"--sinks", ARG_INT, &sinks, "sink tokens S (default 4)", false},
        {"--chunk", ARG_INT, &chunk, "mLSTM chunk length L (default 64)", false},
        {"--mlstm-eps", ARG_DOUBLE, &eps, "mLSTM denominator epsilon (default 1e-6)", false},
        {"--force", ARG_FLAG, &force, "overwrite a student already in --out", false},
    };
    int n_specs = sizeof specs / sizeof specs[0];
    const char *usage = "xtrain init --teacher PATH --out DIR [--window W] [--sinks S] [--chunk L]";
    xd_err e = {{0}};
    int prc = args_parse(specs, n_specs, argc, argv, &e);
    if (prc) {
        if (prc < 0) fprintf(stderr, "xtrain init: %s\n", e.msg);
        args_usage(usage, specs, n_specs);
        return prc < 0 ? 2 : 0;
    }
    const char *bad = !teacher_path ? "--teacher is required" : !out ? "--out is required"
                    : window < 1 ? "--window must be at least 1" : sinks < 0 ? "--sinks must be at least 0"
                    : chunk < 1 ? "--chunk must be at least 1"
                    : !(eps >= 0 && eps < 1) ? "--mlstm-eps must be in [0, 1)" : NULL;
    if (bad) {
        fprintf(stderr, "xtrain init: %s\n", bad);
        return 2;
    }
    return init_run(teacher_path, out, window, sinks, chunk, eps, force, false);
}

/* reuse: a student already complete in out is the answer (a job run again after a crash). */
static int init_run(const char *teacher_path, const char *out, int window, int sinks, int chunk,
                    double eps, bool force, bool reuse) {
    xd_err e = {{0}};
    char cfg_path[4096], st_path[4096];
    bool complete = xd_path_join(cfg_path, sizeof cfg_path, out, "config.json", &e) == 0 &&
                    xd_path_join(st_path, sizeof st_path, out, "model.safetensors", &e) == 0 &&
                    xd_file_exists(cfg_path) && xd_file_exists(st_path);
    if (reuse && complete && !force) {
        printf("student already in %s\n", out);
        return 0;
    }
    if (xd_file_exists(cfg_path) && !force) {
        fprintf(stderr, "xtrain init: %s already holds a model (--force to overwrite)\n", out);
        return 1;
    }
    model_transformer teacher, student;
    if (model_transformer_load(teacher_path, &teacher, &e)) {
        fprintf(stderr, "xtrain init: %s\n", e.msg);
        return 1;
    }
    if (teacher.cfg.student) {
        fprintf(stderr, "xtrain init: %s is already a student; the teacher must be a Transformer\n", teacher_path);
        model_transformer_free(&teacher);
        return 1;
    }
    model_student_settings set = {window, sinks, chunk, eps};
    int rc = model_student_init(&teacher, &set, &student, &e);
    if (rc == 0) {
        /* the student carries the teacher's tokenizer (model_save writes it); the teacher's path
         * is named only for a tokenizer that tokenizer.json cannot express */
        char abs[PATH_MAX];
        const char *tok_source = NULL;
        student.tokenizer = teacher.tokenizer;
        if (teacher.tokenizer && realpath(teacher_path, abs)) tok_source = abs;
        rc = model_save(&student, out, tok_source, &e);
        student.tokenizer = NULL; /* the teacher's, freed with it */
    }
    if (rc == 0) {
        uint64_t added = student.n_params - teacher.n_params;
        printf("student of %s written to %s: %d layers, window %d, sinks %d, chunk %d; %llu teacher "
               "parameters + %llu new (%.2f%%)\n",
               teacher_path, out, student.cfg.n_layers, window, sinks, chunk,
               (unsigned long long)teacher.n_params, (unsigned long long)added,
               100.0 * (double)added / (double)teacher.n_params);
    } else {
        fprintf(stderr, "xtrain init: %s\n", e.msg);
    }
    model_transformer_free(&student);
    model_transformer_free(&teacher);
    return rc ? 1 : 0;
}
