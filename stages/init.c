/* xtrain init: a hybrid student from a teacher (DESIGN 1.2, stage 0). */
#define _XOPEN_SOURCE 700
#include "args.h"
#include "config.h"
#include "stages.h"
#include "model/model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)
/* the starting values of model.h, as the settings' defaults */
#define FORGET_BIAS_DEFAULT STR(MODEL_FORGET_BIAS_MIN) "," STR(MODEL_FORGET_BIAS_MAX)
#define OUTPUT_BIAS_DEFAULT STR(MODEL_OUTPUT_BIAS)

static int init_run(const char *teacher_path, const char *out, const model_student_settings *set, bool force,
                    bool reuse);

/* "LO,HI" (or one number for every head) into the forget-gate bias range. */
static const char *parse_forget_bias(const char *text, model_student_settings *set) {
    char *end;
    set->forget_bias_min = strtod(text, &end);
    set->forget_bias_max = *end == ',' ? strtod(end + 1, &end) : set->forget_bias_min;
    if (end == text || *end || !isfinite(set->forget_bias_min) || !isfinite(set->forget_bias_max) ||
        fabs(set->forget_bias_min) > 50 || fabs(set->forget_bias_max) > 50)
        return "forget bias: expected LO,HI (or one number), each in [-50, 50], e.g. 3,6";
    return NULL;
}

/* xtrain init --config FILE.yaml: the same settings as keys (how the coordinator runs it). */
static int init_from_config(int argc, char **argv) {
    char *teacher = NULL, *out = NULL, *forget = NULL;
    long window = 0, sinks = 0, chunk = 0;
    double eps = 0, output_bias = 0;
    bool force = false;
    cfg_field fields[] = {
        {"teacher", CFG_STRING, &teacher, NULL, "the teacher: HF directory or .gguf", 0, 0},
        {"out", CFG_STRING, &out, NULL, "directory to write the student to", 0, 0},
        {"window", CFG_INT, &window, "512", "sliding-window length W", 1, 1 << 24},
        {"sinks", CFG_INT, &sinks, "4", "sink tokens S", 0, 1 << 16},
        {"chunk", CFG_INT, &chunk, "64", "mLSTM chunk length L", 1, 1 << 16},
        {"mlstm_eps", CFG_NUMBER, &eps, "1e-6", "mLSTM denominator epsilon", 0, 0.999},
        {"forget_bias", CFG_STRING, &forget, FORGET_BIAS_DEFAULT,
         "forget-gate biases b_f at start, LO,HI spread over the heads (f = sigmoid(b_f))", 0, 0},
        {"output_bias", CFG_NUMBER, &output_bias, OUTPUT_BIAS_DEFAULT,
         "output-gate bias b_o at start (o = sigmoid(b_o) weighs the mLSTM against the window)", -50, 50},
        {"force", CFG_BOOL, &force, "false", "overwrite a student already in out", 0, 0},
    };
    int n = (int)(sizeof fields / sizeof fields[0]);
    int cli = cfg_stage_cli("init", argc, argv, fields, n, NULL, NULL, NULL);
    model_student_settings set = {(int)window, (int)sinks, (int)chunk, eps, 0, 0, output_bias};
    const char *bad = cli == 0 ? parse_forget_bias(forget, &set) : NULL;
    if (bad) fprintf(stderr, "xtrain init: %s (got \"%s\")\n", bad, forget);
    /* a re-run of a finished init (a retried job) finds its student and succeeds */
    int rc = cli == 1 ? 0 : cli == 2 || bad ? 2 : init_run(teacher, out, &set, force, true);
    cfg_free(fields, n);
    return rc;
}

int stage_init(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--config") || !strncmp(argv[i], "--config=", 9) || !strcmp(argv[i], "--print-keys"))
            return init_from_config(argc, argv);
    const char *teacher_path = NULL, *out = NULL, *forget = FORGET_BIAS_DEFAULT;
    int window = 512, sinks = 4, chunk = 64;
    double eps = 1e-6, output_bias = MODEL_OUTPUT_BIAS;
    bool force = false;
    arg_spec specs[] = {
        {"--teacher", ARG_STRING, &teacher_path, "teacher: HF model directory or .gguf file", false},
        {"--out", ARG_STRING, &out, "directory to write the student to", false},
        {"--window", ARG_INT, &window, "sliding-window length W (default 512)", false},
        {"--sinks", ARG_INT, &sinks, "sink tokens S (default 4)", false},
        {"--chunk", ARG_INT, &chunk, "mLSTM chunk length L (default 64)", false},
        {"--mlstm-eps", ARG_DOUBLE, &eps, "mLSTM denominator epsilon (default 1e-6)", false},
        {"--forget-bias", ARG_STRING, &forget, "forget-gate biases at start, LO,HI over the heads (default "
                                               FORGET_BIAS_DEFAULT ")", false},
        {"--output-bias", ARG_DOUBLE, &output_bias, "output-gate bias at start (default " OUTPUT_BIAS_DEFAULT ")",
         false},
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
                    : !(eps >= 0 && eps < 1) ? "--mlstm-eps must be in [0, 1)"
                    : !(fabs(output_bias) <= 50) ? "--output-bias must be in [-50, 50]" : NULL;
    model_student_settings set = {window, sinks, chunk, eps, 0, 0, output_bias};
    if (!bad) bad = parse_forget_bias(forget, &set);
    if (bad) {
        fprintf(stderr, "xtrain init: %s\n", bad);
        return 2;
    }
    return init_run(teacher_path, out, &set, force, false);
}

/* reuse: a student already complete in out is the answer (a job run again after a crash). */
static int init_run(const char *teacher_path, const char *out, const model_student_settings *set, bool force,
                    bool reuse) {
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
    int rc = model_student_init(&teacher, set, &student, &e);
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
               teacher_path, out, student.cfg.n_layers, set->window, set->sinks, set->chunk,
               (unsigned long long)teacher.n_params, (unsigned long long)added,
               100.0 * (double)added / (double)teacher.n_params);
    } else {
        fprintf(stderr, "xtrain init: %s\n", e.msg);
    }
    model_transformer_free(&student);
    model_transformer_free(&teacher);
    return rc ? 1 : 0;
}
