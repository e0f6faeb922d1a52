/* xtrain merge: stage 3 (DESIGN 1.2). The merged student is the weighted average of expert
 * students, theta = sum_i lambda_i theta_i, lambda >= 0 normalised to sum 1. Experts must share
 * their init (the init_id xtrain init gave them) and every tensor's shape.
 * mode: layers joins the outputs of align jobs that each trained a block of layers: expert i
 * gives the new parameters of the layers in its range (layers: "A-B,C-D,..."), the rest comes
 * from the first expert (align leaves the teacher's weights alone). */
#include "config.h"
#include "stages.h"
#include "trainer.h"

#include <stdlib.h>
#include <string.h>

int stage_merge(int argc, char **argv) {
    xd_err e = {{0}};
    char *out = NULL, *mode = NULL, *layers = NULL;
    cfg_sources experts = {0};
    cfg_field fields[] = {
        {"experts", CFG_SOURCES, &experts, NULL, "expert students (model directories) with weights lambda", 0, 0},
        {"out", CFG_STRING, &out, NULL, "directory to write the merged student to", 0, 0},
        {"mode", CFG_STRING, &mode, "average", "average, or layers (join align layer blocks)", 0, 0},
        {"layers", CFG_STRING, &layers, "", "mode layers: each expert's layer range, \"A-B,C-D,...\"", 0, 0},
    };
    int n_fields = 4;
    int cli = cfg_stage_cli("merge", argc, argv, fields, n_fields, NULL, NULL, NULL);
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    int rc = 0, n = experts.count;
    double total = 0;
    bool by_layers = !strcmp(mode, "layers");
    int first[64], last[64];
    if (!by_layers && strcmp(mode, "average")) {
        fprintf(stderr, "xtrain merge: mode \"%s\" must be average or layers\n", mode);
        cfg_free(fields, n_fields);
        return 2;
    }
    if (by_layers) { /* one range per expert */
        int k = 0;
        for (const char *p = layers; *p && k < 64; k++) {
            char *end;
            first[k] = (int)strtol(p, &end, 10);
            last[k] = *end == '-' ? (int)strtol(end + 1, &end, 10) : first[k];
            if (end == p || (*end && *end != ',') || last[k] < first[k] || first[k] < 0) {
                fprintf(stderr, "xtrain merge: layers \"%s\": expected A-B,C-D,...\n", layers);
                cfg_free(fields, n_fields);
                return 2;
            }
            p = *end ? end + 1 : end;
        }
        if (k != n) {
            fprintf(stderr, "xtrain merge: layers gives %d ranges for %d experts\n", k, n);
            cfg_free(fields, n_fields);
            return 2;
        }
    }
    for (int i = 0; i < n; i++) total += experts.items[i].weight;
    model_transformer merged = {0}, other = {0};
    double *acc = NULL;
    if (!(total > 0)) {
        rc = xd_fail(&e, "the expert weights sum to %g; at least one must be positive", total);
        goto done;
    }
    /* the first expert is the template; the average is accumulated in double */
    if ((rc = model_transformer_load(experts.items[0].path, &merged, &e))) goto done;
    if (!merged.cfg.student) {
        rc = xd_fail(&e, "%s is not a student", experts.items[0].path);
        goto done;
    }
    uint64_t N = merged.layout.n_params;
    for (int i = 0; by_layers && i < n; i++)
        if (last[i] >= merged.cfg.n_layers) {
            rc = xd_fail(&e, "layers: range %d-%d is past the model's %d layers", first[i], last[i], merged.cfg.n_layers);
            goto done;
        }
    if (!(acc = xd_calloc(N, sizeof(double), &e))) {
        rc = -1;
        goto done;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        const model_transformer *m = &merged;
        if (i > 0) {
            model_transformer_free(&other);
            if ((rc = model_transformer_load(experts.items[i].path, &other, &e))) break;
            m = &other;
            if (!m->cfg.student) {
                rc = xd_fail(&e, "%s is not a student", experts.items[i].path);
                break;
            }
            if (strcmp(m->cfg.init_id, merged.cfg.init_id) != 0 || !merged.cfg.init_id[0]) {
                rc = xd_fail(&e, "%s does not share an init with %s (init_id %s vs %s): experts must all come "
                                 "from the same student",
                             experts.items[i].path, experts.items[0].path, m->cfg.init_id[0] ? m->cfg.init_id : "none",
                             merged.cfg.init_id[0] ? merged.cfg.init_id : "none");
                break;
            }
            if (m->layout.n_entries != merged.layout.n_entries || m->layout.n_params != N) {
                rc = xd_fail(&e, "%s has other shapes than %s", experts.items[i].path, experts.items[0].path);
                break;
            }
            for (int k = 0; k < m->layout.n_entries; k++) {
                const model_tensor_entry *a = &m->layout.entries[k], *b = &merged.layout.entries[k];
                if (strcmp(a->name, b->name) || a->count != b->count || a->ndim != b->ndim ||
                    memcmp(a->shape, b->shape, sizeof a->shape)) {
                    rc = xd_fail(&e, "%s: tensor %s differs in name or shape from %s", experts.items[i].path, a->name,
                                 experts.items[0].path);
                    break;
                }
            }
            if (rc) break;
        }
        if (by_layers) {
            for (int k = 0; k < m->layout.n_entries; k++) {
                const model_tensor_entry *t = &m->layout.entries[k];
                int layer = -1;
                bool mine = t->student_new && sscanf(t->name, "model.layers.%d.", &layer) == 1 &&
                            layer >= first[i] && layer <= last[i];
                if (mine || i == 0) /* the first expert lays down everything, the others their layers */
                    for (uint64_t j = 0; j < t->count; j++) acc[t->offset + j] = m->params[t->offset + j];
            }
            fprintf(stderr, "[merge] %s  layers %d-%d\n", experts.items[i].path, first[i], last[i]);
            continue;
        }
        double lambda = experts.items[i].weight / total;
        for (uint64_t j = 0; j < N; j++) acc[j] += lambda * (double)m->params[j];
        fprintf(stderr, "[merge] %s  lambda %.4f\n", experts.items[i].path, lambda);
    }
    if (rc) goto done;
    for (uint64_t j = 0; j < N; j++) merged.params[j] = (float)acc[j];
    snprintf(merged.source, sizeof merged.source, "merge of %d experts", n);
    if ((rc = model_save(&merged, out, NULL, &e))) goto done;
    printf("merged %d experts into %s\n", n, out);
done:
    if (rc) fprintf(stderr, "xtrain merge: %s\n", e.msg);
    free(acc);
    model_transformer_free(&other);
    model_transformer_free(&merged);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
