/* Stage settings: YAML, defaults, --set overrides, and the errors a user makes. */
#include "stages/config.h"
#include "test.h"

#include <unistd.h>

static long steps;
static double lr;
static bool flag;
static char *out;
static cfg_sources data;
static cfg_field fields[] = {
    {"steps", CFG_INT, &steps, "100", "optimizer steps", 1, 1e9},
    {"lr", CFG_NUMBER, &lr, "1e-3", "peak learning rate", 0, 10},
    {"cosine", CFG_BOOL, &flag, "true", "cosine decay", 0, 0},
    {"out", CFG_STRING, &out, NULL, "output directory", 0, 0},
    {"data", CFG_SOURCES, &data, NULL, "shard directories", 0, 0},
};
#define N_FIELDS ((int)(sizeof fields / sizeof fields[0]))

static int load_text(const char *yaml, char **over, int n_over, xd_err *e) {
    char path[] = "/tmp/xd_test_config_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    if (write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml)) return -1;
    close(fd);
    cfg_free(fields, N_FIELDS);
    int rc = cfg_load(fields, N_FIELDS, path, over, n_over, e);
    unlink(path);
    return rc;
}

int main(void) {
    xd_err e;
    char *over[] = {"lr=0.5", "cosine=false"};
    int rc = load_text("out: runs/a\ndata:\n  - {path: shards/code, weight: 0.7}\n  - shards/math\n", over, 2, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(steps == 100 && lr == 0.5 && !flag && !strcmp(out, "runs/a"));
    CHECK(data.count == 2 && !strcmp(data.items[0].path, "shards/code") && data.items[0].weight == 0.7);
    CHECK(!strcmp(data.items[1].path, "shards/math") && data.items[1].weight == 1.0);
    char *json = cfg_to_json(fields, N_FIELDS);
    CHECK(json && strstr(json, "\"lr\":0.5") && strstr(json, "\"path\":\"shards/code\""));
    free(json);

    char *src_over[] = {"data=a:0.25,b"};
    rc = load_text("out: x\ndata: [c]\n", src_over, 1, &e);
    CHECK(rc == 0 && data.count == 2 && data.items[0].weight == 0.25 && !strcmp(data.items[1].path, "b"));

    struct {
        const char *yaml, *override, *fragment;
    } bad[] = {
        {"out: x\ndata: [a]\nsteps_: 5\n", NULL, "line 3: unknown key \"steps_\" (did you mean \"steps\"?)"},
        {"out: x\ndata: [a]\nsteps: five\n", NULL, "\"steps\" must be an integer, got \"five\""},
        {"out: x\ndata: [a]\nsteps: 0\n", NULL, "\"steps\" = 0 is outside 1..1e+09"},
        {"out: x\ndata: [a]\n", "lrr=1", "--set: unknown key \"lrr\" (did you mean \"lr\"?)"},
        {"out: x\ndata: [a]\n", "lr", "--set lr: expected key=value"},
        {"data: [a]\n", NULL, "\"out\" is required (output directory)"},
        {"out: x\n", NULL, "\"data\" is required"},
        {"out: x\ndata: [{path: a, weight: -1}]\n", NULL, "weight \"-1\" must be a number >= 0"},
        {"out: x\ndata: [{paht: a}]\n", NULL, "unknown key \"paht\" (path, weight)"},
        {"out: [x]\ndata: [a]\n", NULL, "\"out\" must be a single value"},
        {"- a\n- b\n", NULL, "must be a mapping of key: value"},
        {"out: x\n  bad: [\n", NULL, "not valid YAML"},
        {"out: x\ndata: [a]\ncosine: maybe\n", NULL, "\"cosine\" must be true or false"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *o[1] = {(char *)bad[i].override};
        rc = load_text(bad[i].yaml, o, bad[i].override ? 1 : 0, &e);
        CHECK_ERR_CONTAINS(rc, e, bad[i].fragment);
    }
    cfg_free(fields, N_FIELDS); /* cfg_load fills fields that hold nothing */
    rc = cfg_load(fields, N_FIELDS, "/nonexistent/stage.yaml", NULL, 0, &e);
    CHECK_ERR_CONTAINS(rc, e, "/nonexistent/stage.yaml: cannot open");
    cfg_free(fields, N_FIELDS);
    TEST_MAIN_END();
}
