/* The worker's command line for a stage (worker/worker_stage.c): an attempt given GPUs trains on
 * them (--device cuda, the first of CUDA_VISIBLE_DEVICES), one without stays on the CPU, and a
 * config that names its device keeps it. */
#include "worker/worker.h"
#include "test.h"

static bool has(const worker_argv *av, const char *a, const char *b) {
    for (int i = 0; i + 1 < av->argc; i++)
        if (!strcmp(av->argv[i], a) && !strcmp(av->argv[i + 1], b)) return true;
    return false;
}

static void argv_of(const char *stage, const char *config, int gpus, worker_argv *av) {
    char out[256] = "";
    long total;
    xd_err e;
    int rc = worker_stage_argv("xtrain", stage, "/w/config.yaml", config, "/w", gpus, out, sizeof out, av, &total, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
}

int main(void) {
    worker_argv av;
    argv_of("distill", "teacher: t\nsteps: 5\n", 2, &av);
    CHECK(has(&av, "--device", "cuda"));
    CHECK(has(&av, "--config", "/w/config.yaml"));
    worker_argv_free(&av);
    argv_of("align", "teacher: t\n", 1, &av);
    CHECK(has(&av, "--device", "cuda"));
    worker_argv_free(&av);
    argv_of("distill", "teacher: t\n", 0, &av); /* a CPU attempt */
    CHECK(!has(&av, "--device", "cuda"));
    worker_argv_free(&av);
    argv_of("distill", "teacher: t\ndevice: cpu\n", 2, &av); /* the config's device wins */
    CHECK(!has(&av, "--device", "cuda"));
    worker_argv_free(&av);
    argv_of("eval", "teacher: t\n", 2, &av); /* eval runs both models on the GPU */
    CHECK(has(&av, "--device", "cuda"));
    worker_argv_free(&av);
    argv_of("merge", "out: m\n", 2, &av); /* merge has no device key */
    CHECK(!has(&av, "--device", "cuda"));
    worker_argv_free(&av);
    return test_failures ? 1 : 0;
}
