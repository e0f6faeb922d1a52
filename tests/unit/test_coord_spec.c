/* The pipeline spec (coordinator/spec.c): parsing with clear errors, the DAG, and the YAML each
 * job gets, which must read back as the same values whatever the paths hold. */
#include "coordinator/coordinator.h"
#include "test.h"

#include <yaml.h>

static int parse(const char *text, coord_spec **s, xd_err *e) { return coord_spec_parse(text, strlen(text), s, e); }

/* The scalar value of a top-level key of a YAML text (first list item's path for lists). */
static char *yaml_get(const char *text, const char *key) {
    yaml_parser_t p;
    yaml_document_t d;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    char *out = NULL;
    if (yaml_parser_load(&p, &d)) {
        yaml_node_t *root = yaml_document_get_root_node(&d);
        for (yaml_node_pair_t *q = root && root->type == YAML_MAPPING_NODE ? root->data.mapping.pairs.start : NULL;
             q && q < root->data.mapping.pairs.top; q++) {
            yaml_node_t *k = yaml_document_get_node(&d, q->key), *v = yaml_document_get_node(&d, q->value);
            if (strcmp((char *)k->data.scalar.value, key)) continue;
            if (v->type == YAML_SEQUENCE_NODE && v->data.sequence.items.start < v->data.sequence.items.top)
                v = yaml_document_get_node(&d, *v->data.sequence.items.start);
            if (v->type == YAML_MAPPING_NODE) /* {path: P, weight: W} */
                for (yaml_node_pair_t *r = v->data.mapping.pairs.start; r < v->data.mapping.pairs.top; r++)
                    if (!strcmp((char *)yaml_document_get_node(&d, r->key)->data.scalar.value, "path"))
                        v = yaml_document_get_node(&d, r->value);
            if (v->type == YAML_SCALAR_NODE) out = strdup((char *)v->data.scalar.value);
        }
        yaml_document_delete(&d);
    }
    yaml_parser_delete(&p);
    return out;
}

static const coord_job_spec *job(const coord_dag *d, const char *name) {
    for (int i = 0; i < d->n_jobs; i++)
        if (!strcmp(d->jobs[i].name, name)) return &d->jobs[i];
    return NULL;
}

static void test_dag(void) {
    const char *text = "name: t\nteacher: /m/t.gguf\nstudent: {window: 64, chunk: 16}\n"
                       "domains:\n  - {name: math, data: /d/math, weight: 0.35}\n  - {name: code, data: /d/code, weight: 0.65}\n"
                       "align: {layer_blocks: 2, num_layers: 5, steps: 7, schedule: constant}\n"
                       "distill: {steps: 3, lr: 1e-4, seq_len: 64}\nfinal_distill: {steps: 2}\n"
                       "eval: {tasks: [/t/mc.jsonl]}\ndevices: {gpus: 1}\nretries: 4\n";
    coord_spec *s;
    xd_err e = {{0}};
    CHECK_MSG(parse(text, &s, &e) == 0, "%s", e.msg);
    if (!s) return;
    coord_dag d;
    CHECK(coord_spec_expand(s, "/art", "run-1-abcd", &d, &e) == 0);
    CHECK(d.n_jobs == 9 && d.retries == 4 && d.worker_retries == 10 && !strcmp(d.name, "t"));
    const char *order[] = {"init", "align-0", "align-1", "align", "distill-math", "distill-code", "merge", "final", "eval"};
    for (int i = 0; i < 9; i++) CHECK_MSG(i < d.n_jobs && !strcmp(d.jobs[i].name, order[i]), "job %d", i);
    /* every dependency points backwards: the array is a topological order */
    for (int i = 0; i < d.n_jobs; i++)
        for (int k = 0; k < d.jobs[i].n_deps; k++) CHECK(d.jobs[i].deps[k] < i);
    const coord_job_spec *init = job(&d, "init"), *a0 = job(&d, "align-0"), *a1 = job(&d, "align-1"), *join = job(&d, "align");
    CHECK(init && !strcmp(init->config, "# xcoord: run run-1-abcd, job init\nteacher: \"/m/t.gguf\"\nout: \"/art/run-1-abcd/init\"\n"
                                        "window: 64\nchunk: 16\n"));
    CHECK(init && init->gpus == 0 && !strcmp(init->output, "/art/run-1-abcd/init"));
    CHECK(a0 && strstr(a0->config, "layers: \"0-1\"\n") && a0->gpus == 1 && strstr(a0->config, "schedule: \"constant\"\n"));
    CHECK(a1 && strstr(a1->config, "layers: \"2-4\"\n") && !strstr(a1->config, "layer_blocks") && !strstr(a1->config, "num_layers"));
    CHECK(join && !strcmp(join->stage, "merge") && join->gpus == 0 && join->n_deps == 2 &&
          strstr(join->config, "mode: layers\nexperts:\n  - \"/art/run-1-abcd/align-0/model\"\n  - \"/art/run-1-abcd/align-1/model\"\n"
                               "layers: \"0-1,2-4\"\n"));
    const coord_job_spec *dm = job(&d, "distill-math"), *merge = job(&d, "merge"), *fin = job(&d, "final"), *ev = job(&d, "eval");
    CHECK(dm && strstr(dm->config, "student: \"/art/run-1-abcd/align\"\n") && strstr(dm->config, "data:\n  - {path: \"/d/math\", weight: 1}\n"));
    CHECK(merge && strstr(merge->config, "  - {path: \"/art/run-1-abcd/distill-math/model\", weight: 0.35}\n") && merge->n_deps == 2);
    /* the final distill inherits distill's settings and overrides steps */
    CHECK(fin && strstr(fin->config, "lr: 1e-4\n") && strstr(fin->config, "seq_len: 64\n") && strstr(fin->config, "steps: 2\n") &&
          !strstr(fin->config, "steps: 3\n") && strstr(fin->config, "student: \"/art/run-1-abcd/merge\"\n"));
    CHECK(ev && !strcmp(ev->output, "/art/run-1-abcd/eval/report.json") && strstr(ev->config, "tasks:\n  - \"/t/mc.jsonl\"\n") &&
          strstr(ev->config, "student: \"/art/run-1-abcd/final/model\"\n") && ev->deps[0] == 7);
    coord_dag_free(&d);
    coord_spec_free(s);

    /* no final distill: eval reads the merge */
    CHECK(parse("teacher: /m/t\ndomains: [{name: a, data: /d/a}]\n", &s, &e) == 0);
    CHECK(coord_spec_expand(s, "/art", "r", &d, &e) == 0);
    CHECK(d.n_jobs == 5 && !job(&d, "final") && strstr(job(&d, "eval")->config, "student: \"/art/r/merge\"\n"));
    CHECK(!strcmp(coord_spec_name(s), "pipeline") && d.retries == 2);
    CHECK(!strstr(job(&d, "merge")->config, "weights: search") && job(&d, "merge")->gpus == 0);
    coord_dag_free(&d);
    coord_spec_free(s);
}

/* merge: {weights: search, ...}: the merge job searches its weights on the val split of every
 * domain, starting from the domains' weights, and scores on a GPU when the run has them. */
static void test_merge_search(void) {
    const char *text = "teacher: /m/t.gguf\n"
                       "domains:\n  - {name: math, data: /d/math, weight: 0.35}\n  - {name: code, data: /d/code, weight: 0.65}\n"
                       "merge: {weights: search, candidates: 5, max_tokens: 2048}\n";
    coord_spec *s;
    xd_err e = {{0}};
    CHECK_MSG(parse(text, &s, &e) == 0, "%s", e.msg);
    if (!s) return;
    coord_dag d;
    CHECK(coord_spec_expand(s, "/art", "r", &d, &e) == 0);
    const coord_job_spec *m = job(&d, "merge");
    CHECK_MSG(m && !strcmp(m->config, "# xcoord: run r, job merge (weights: searched on the domains' val split, theirs first)\n"
                                      "out: \"/art/r/merge\"\nexperts:\n"
                                      "  - {path: \"/art/r/distill-math/model\", weight: 0.35}\n"
                                      "  - {path: \"/art/r/distill-code/model\", weight: 0.65}\n"
                                      "weights: search\ndata:\n  - \"/d/math\"\n  - \"/d/code\"\n"
                                      "candidates: 5\nmax_tokens: 2048\n"),
              "%s", m ? m->config : "no merge job");
    CHECK(m && m->gpus == 0 && m->n_deps == 2);
    char *data = m ? yaml_get(m->config, "data") : NULL;
    CHECK(data && !strcmp(data, "/d/math"));
    free(data);
    coord_dag_free(&d);
    coord_spec_free(s);

    /* on GPUs: the merge job takes one and scores there */
    CHECK(parse("teacher: /m/t\ndomains: [{name: a, data: /d/a}]\nmerge: {weights: search}\ndevices: {gpus: 4}\n", &s, &e) == 0);
    CHECK(coord_spec_expand(s, "/art", "r", &d, &e) == 0);
    m = job(&d, "merge");
    CHECK(m && m->gpus == 1 && strstr(m->config, "weights: search\ndata:\n  - \"/d/a\"\ndevice: cuda\n"));
    CHECK(job(&d, "distill-a") && job(&d, "distill-a")->gpus == 4);
    coord_dag_free(&d);
    coord_spec_free(s);

    /* weights: domains is the default, written as no search at all */
    CHECK(parse("teacher: /m/t\ndomains: [{name: a, data: /d/a}]\nmerge: {weights: domains}\n", &s, &e) == 0);
    CHECK(coord_spec_expand(s, "/art", "r", &d, &e) == 0);
    m = job(&d, "merge");
    CHECK(m && !strstr(m->config, "\nweights:") && !strstr(m->config, "data:") && m->gpus == 0);
    coord_dag_free(&d);
    coord_spec_free(s);
}

/* Paths with quotes, backslashes, newlines, colons and non-ASCII read back unchanged. */
static void test_quoting(void) {
    const char *text = "teacher: \"/m/a \\\"quoted\\\" \\\\ back: colon # hash\"\n"
                       "domains: [{name: x, data: \"/d/line\\nbreak/é/{braces}, [brackets]\"}]\n";
    coord_spec *s;
    xd_err e = {{0}};
    CHECK_MSG(parse(text, &s, &e) == 0, "%s", e.msg);
    if (!s) return;
    coord_dag d;
    CHECK(coord_spec_expand(s, "/art dir/with 'quote'", "r", &d, &e) == 0);
    char *teacher = yaml_get(d.jobs[0].config, "teacher"), *out = yaml_get(d.jobs[0].config, "out");
    char *data = yaml_get(job(&d, "distill-x")->config, "data");
    CHECK(teacher && !strcmp(teacher, "/m/a \"quoted\" \\ back: colon # hash"));
    CHECK(out && !strcmp(out, "/art dir/with 'quote'/r/init"));
    CHECK(data && !strcmp(data, "/d/line\nbreak/é/{braces}, [brackets]"));
    free(teacher), free(out), free(data);
    coord_dag_free(&d);
    coord_spec_free(s);
}

static void test_errors(void) {
    struct {
        const char *text, *fragment;
    } cases[] = {
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndistil: {}\n", "line 3: unknown key \"distil\" (did you mean \"distill\"?)"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nalign: {stpes: 1}\n", "unknown key \"align.stpes\" (did you mean \"align.steps\"?)"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndistill: {lr: fast}\n", "\"distill.lr\" must be a number, got \"fast\""},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndistill: {steps: 1.5}\n", "\"distill.steps\" must be an integer"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndistill: {steps: [1]}\n", "\"distill.steps\" must be an integer"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\neval: {tasks: /t.jsonl}\n", "\"eval.tasks\" must be a list of absolute paths"},
        {"domains: [{name: a, data: /d}]\n", "\"teacher\" is required"},
        {"teacher: /t\n", "\"domains\" is required"},
        {"teacher: /t\ndomains: []\n", "\"domains\" is empty"},
        {"teacher: t.gguf\ndomains: [{name: a, data: /d}]\n", "\"teacher\" must be an absolute path"},
        {"teacher: /t\ndomains: [{name: a}]\n", "domain \"a\" has no \"data\""},
        {"teacher: /t\ndomains: [{name: a/b, data: /d}]\n", "domain name must be"},
        {"teacher: /t\ndomains: [{name: a, data: /d, wieght: 2}]\n", "unknown key \"domains.wieght\" (did you mean \"domains.weight\"?)"},
        {"teacher: /t\ndomains: [{name: a, data: /d, weight: -1}]\n", "weight must be >= 0"},
        {"teacher: /t\ndomains: [{name: a, data: /d, weight: 0}]\n", "the weights sum to 0"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndistill: {data: /x}\n", "\"distill.data\" is written by the coordinator"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndevices: gpu\n", "\"devices\" must be \"cpu\" or {gpus: N}"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\ndevices: {gpus: 0}\n", "\"devices.gpus\" = 0 is outside 1..64"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nretries: -1\n", "\"retries\" = -1 is outside 0..100"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: [1]}\n", "\"merge.weights\" must be a single value"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {wieghts: search}\n",
         "unknown key \"merge.wieghts\" (did you mean \"merge.weights\"?)"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: best}\n",
         "line 3: \"merge.weights\" must be search (chosen on the domains' val split) or domains"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge:\n  weights: search\n  candidates: 0\n",
         "line 5: \"merge.candidates\" = 0 is outside 1..64"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: search, candidates: 65}\n",
         "\"merge.candidates\" = 65 is outside 1..64"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: search, max_tokens: 0}\n",
         "\"merge.max_tokens\" = 0 is outside 1..1000000000000"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: search, seq_len: 1}\n",
         "\"merge.seq_len\" = 1 is outside 2..1048576"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: search, candidates: many}\n",
         "\"merge.candidates\" must be an integer, got \"many\""},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {candidates: 4}\n",
         "\"merge.candidates\" is a setting of the weight search: give merge.weights: search"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: domains, max_tokens: 10}\n",
         "\"merge.max_tokens\" is a setting of the weight search"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nmerge: {weights: search, data: [/x]}\n",
         "\"merge.data\" is written by the coordinator"},
        {"teacher: /t\nteacher: /u\ndomains: [{name: a, data: /d}]\n", "\"teacher\" given twice"},
        {"teacher: /t\ndomains: [{name: a, data: /d}]\nalign: {layer_blocks: 5, num_layers: 4}\n", "more than the teacher's 4 layers"},
        {"teacher: /nonexistent.gguf\ndomains: [{name: a, data: /d}]\nalign: {layer_blocks: 2}\n", "give align.num_layers"},
        {"- a\n- b\n", "must be a mapping"},
        {"teacher: [\n", "not valid YAML"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        coord_spec *s = NULL;
        xd_err e = {{0}};
        int rc = parse(cases[i].text, &s, &e);
        CHECK_ERR_CONTAINS(rc, e, cases[i].fragment);
        CHECK(s == NULL);
        coord_spec_free(s);
    }
}

/* Mutated specs never crash the parser (the daemon parses whatever a client sends). */
static void test_mutations(void) {
    const char *base = "name: t\nteacher: /m/t\nstudent: {window: 64}\ndomains:\n  - {name: a, data: /d/a, weight: 1}\n"
                       "align: {layer_blocks: 2, num_layers: 4}\ndistill: {steps: 3}\nfinal_distill: {}\neval: {tasks: [/x]}\n";
    size_t n = strlen(base);
    xd_rng rng;
    xd_rng_seed(&rng, 7);
    char buf[512];
    int accepted = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, base, n + 1);
        int edits = 1 + (int)(xd_rng_next(&rng) % 4);
        for (int k = 0; k < edits; k++) buf[xd_rng_next(&rng) % n] = (char)(1 + xd_rng_next(&rng) % 127);
        coord_spec *s;
        xd_err e = {{0}};
        if (coord_spec_parse(buf, n, &s, &e) == 0) {
            coord_dag d;
            if (coord_spec_expand(s, "/art", "r", &d, &e) == 0) {
                accepted++;
                coord_dag_free(&d);
            }
            coord_spec_free(s);
        } else {
            CHECK(e.msg[0] != 0);
        }
    }
    CHECK(accepted > 0);
}

int main(void) {
    test_dag();
    test_quoting();
    test_merge_search();
    test_errors();
    test_mutations();
    TEST_MAIN_END();
}
