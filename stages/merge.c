/* xtrain merge: stage 3 (DESIGN 1.2). The merged student is the weighted average of expert
 * students, theta = sum_i lambda_i theta_i, lambda >= 0 normalised to sum 1. Experts must share
 * their init (the init_id xtrain init gave them) and every tensor's shape.
 * weights: search picks lambda by evaluation: a fixed, deterministic list of candidate weightings
 * (merge_candidates) is merged in memory, each scored by the objective on data's val split
 * (merge_score.h), and the best is written; OUT/merge_report.json lists every candidate's score.
 * mode: layers joins the outputs of align jobs that each trained a block of layers: expert i
 * gives the new parameters of the layers in its range (layers: "A-B,C-D,..."), the rest comes
 * from the first expert (align leaves the teacher's weights alone). */
#include "config.h"
#include "merge_score.h"
#include "stages.h"
#include "trainer.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MERGE_MAX_EXPERTS 64
#define MERGE_MAX_CANDIDATES 64
#define MERGE_BLOCK 65536 /* parameters mixed at a time in a search: the double sums stay small */
#define MERGE_REPORT "merge_report.json"

/* acc[j] += lambda p[j]. The only place a weight meets a parameter, kept out of line so that a
 * searched merge and a merge given the chosen weights write the same floats, bit for bit. */
__attribute__((noinline)) static void merge_accumulate(double *acc, const float *p, double lambda, uint64_t n) {
    for (uint64_t j = 0; j < n; j++) acc[j] += lambda * (double)p[j];
}

/* lambda_i = w_i / sum w, the sum taken in order: what both ways of merging compute. */
static double merge_lambdas(const double *w, int n, double *lambda) {
    double total = 0;
    for (int i = 0; i < n; i++) total += w[i];
    for (int i = 0; i < n && total > 0; i++) lambda[i] = w[i] / total;
    return total;
}

/* Expert m (path) can be averaged with the first (path0): a student of the same init and shapes. */
static int merge_check_expert(const model_transformer *m, const model_transformer *first, const char *path,
                              const char *path0, xd_err *e) {
    if (!m->cfg.student) return xd_fail(e, "%s is not a student", path);
    if (m == first) return 0;
    if (strcmp(m->cfg.init_id, first->cfg.init_id) != 0 || !first->cfg.init_id[0])
        return xd_fail(e, "%s does not share an init with %s (init_id %s vs %s): experts must all come from the same "
                          "student",
                       path, path0, m->cfg.init_id[0] ? m->cfg.init_id : "none",
                       first->cfg.init_id[0] ? first->cfg.init_id : "none");
    if (m->layout.n_entries != first->layout.n_entries || m->layout.n_params != first->layout.n_params)
        return xd_fail(e, "%s has other shapes than %s", path, path0);
    for (int k = 0; k < m->layout.n_entries; k++) {
        const model_tensor_entry *a = &m->layout.entries[k], *b = &first->layout.entries[k];
        if (strcmp(a->name, b->name) || a->count != b->count || a->ndim != b->ndim ||
            memcmp(a->shape, b->shape, sizeof a->shape))
            return xd_fail(e, "%s: tensor %s differs in name or shape from %s", path, a->name, path0);
    }
    return 0;
}

/* The merged model's record of how it was made: config.json's "merge" (loaders ignore the key;
 * a later stage's save drops it, as that model is no longer this merge). */
static int merge_note_config(const char *out, json_t *note, xd_err *e) {
    char path[4200], *text;
    size_t len;
    if (xd_path_join(path, sizeof path, out, "config.json", e)) return -1;
    if (xd_read_file(path, 16u << 20, &text, &len, e)) return -1;
    json_error_t je;
    json_t *cfg = json_loadb(text, len, JSON_DECODE_ANY, &je);
    free(text);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return xd_fail(e, "%s: not the JSON object just written", path);
    }
    json_object_set(cfg, "merge", note);
    text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(cfg);
    int rc = text ? xd_write_file_atomic(path, text, strlen(text), e) : xd_fail(e, "out of memory");
    free(text);
    return rc;
}

/* ---- weights: search ---- */

typedef struct merge_candidate {
    char kind[32];
    double w[MERGE_MAX_EXPERTS]; /* nominally summing to 1; merged as w / sum w (merge_lambdas) */
    double score;                /* the objective; NAN when it was not finite */
    double *per_domain;
} merge_candidate;

static bool merge_candidate_add(merge_candidate *c, int *count, int max, int n, const char *kind, const double *w) {
    if (*count >= max) return false;
    for (int k = 0; k < *count; k++) { /* the same weighting reached twice is scored once */
        bool same = true;
        for (int i = 0; i < n && same; i++) same = fabs(c[k].w[i] - w[i]) < 1e-9;
        if (same) return true;
    }
    merge_candidate *d = &c[(*count)++];
    snprintf(d->kind, sizeof d->kind, "%s", kind);
    memcpy(d->w, w, sizeof(double) * (size_t)n);
    return true;
}

/* The candidates, in this order, duplicates dropped, the first max kept: the experts' weights as
 * given (normalised; when they sum above 0), uniform, then per expert K "lean-K" (halfway from
 * uniform to expert K alone: 0.75/0.25 of two experts, 0.625/0.125/... of four), "given+lean-K"
 * (halfway from the given weights to lean-K) and "strong-K" (three quarters of the way to K alone). */
static int merge_candidates(const cfg_sources *experts, int max, merge_candidate *c) {
    int n = experts->count, count = 0;
    double given[MERGE_MAX_EXPERTS], u = 1.0 / n, w[MERGE_MAX_EXPERTS];
    for (int i = 0; i < n; i++) w[i] = experts->items[i].weight;
    bool has_given = merge_lambdas(w, n, given) > 0;
    for (int i = 0; i < n && !has_given; i++) given[i] = u;
    if (has_given) merge_candidate_add(c, &count, max, n, "given", given);
    for (int i = 0; i < n; i++) w[i] = u;
    merge_candidate_add(c, &count, max, n, "uniform", w);
    static const char *const kinds[] = {"lean", "given+lean", "strong"};
    for (int g = 0; g < 3; g++)
        for (int k = 0; k < n; k++) {
            for (int i = 0; i < n; i++) {
                double lean = (u + (i == k)) / 2;
                w[i] = g == 0 ? lean : g == 1 ? (given[i] + lean) / 2 : (u + 3.0 * (i == k)) / 4;
            }
            char kind[32];
            snprintf(kind, sizeof kind, "%s-%d", kinds[g], k + 1);
            if (!merge_candidate_add(c, &count, max, n, kind, w)) return count;
        }
    return count;
}

/* theta = sum lambda_i theta_i of the loaded experts into dst, in blocks (as the given-weights
 * merge, element by element: the same sums in the same order). */
static int merge_mix(float *dst, float *const *params, const double *w, int n, uint64_t N, double *acc, xd_err *e) {
    double lambda[MERGE_MAX_EXPERTS];
    if (!(merge_lambdas(w, n, lambda) > 0)) return xd_fail(e, "a candidate's weights sum to 0");
    for (uint64_t j0 = 0; j0 < N; j0 += MERGE_BLOCK) {
        uint64_t b = N - j0 < MERGE_BLOCK ? N - j0 : MERGE_BLOCK;
        memset(acc, 0, sizeof(double) * b);
        for (int i = 0; i < n; i++) merge_accumulate(acc, params[i] + j0, lambda[i], b);
        for (uint64_t j = 0; j < b; j++) dst[j0 + j] = (float)acc[j];
    }
    return 0;
}

static void merge_print_weights(const merge_candidate *c, int n) {
    for (int i = 0; i < n; i++) fprintf(stderr, " %6.4f", c->w[i]);
}

/* Loads every expert once, scores each candidate merged into the first expert's model (whose own
 * weights are kept apart), writes the best into out with the report. */
static int merge_search(const cfg_sources *experts, const char *out, const cfg_sources *data, long max_candidates,
                        const char *objective, long seq_len, long max_tokens, int cuda, xd_err *e) {
    int n = experts->count, rc = 0, nc = 0;
    model_transformer merged = {0}, other = {0};
    float *params[MERGE_MAX_EXPERTS] = {0};
    merge_candidate *cand = xd_calloc(MERGE_MAX_CANDIDATES, sizeof *cand, e);
    double *acc = NULL;
    merge_score *sc = NULL;
    const char **dirs = xd_calloc((size_t)data->count, sizeof *dirs, e);
    json_t *report = NULL;
    if (!cand || !dirs) {
        rc = -1;
        goto done;
    }
    double t0 = xd_now();
    if ((rc = model_transformer_load(experts->items[0].path, &merged, e))) goto done;
    if ((rc = merge_check_expert(&merged, &merged, experts->items[0].path, NULL, e))) goto done;
    uint64_t N = merged.layout.n_params;
    if (!(params[0] = xd_malloc(sizeof(float) * N, e)) || !(acc = xd_malloc(sizeof(double) * MERGE_BLOCK, e))) {
        rc = -1;
        goto done;
    }
    memcpy(params[0], merged.params, sizeof(float) * N);
    /* the data before the other experts: a bad directory is said before gigabytes are read */
    for (int i = 0; i < data->count; i++) dirs[i] = data->items[i].path;
    if ((rc = merge_score_open(&sc, &merged, dirs, data->count, (int)seq_len, max_tokens, cuda, e))) goto done;
    for (int i = 1; i < n; i++) { /* each expert's weights kept, the rest of its model dropped */
        if ((rc = model_transformer_load(experts->items[i].path, &other, e))) goto done;
        if ((rc = merge_check_expert(&other, &merged, experts->items[i].path, experts->items[0].path, e))) goto done;
        params[i] = other.params;
        other.params = NULL;
        model_transformer_free(&other);
    }
    fprintf(stderr, "[merge] %d experts loaded (%.1f s)\n", n, xd_now() - t0);
    int nd = merge_score_domains(sc);
    nc = merge_candidates(experts, (int)max_candidates, cand);
    fprintf(stderr, "[merge] weights: search: %d candidates, objective %s over %d domain%s (val split, at most %ld "
                    "tokens each, windows of %ld)\n",
            nc, objective, nd, nd == 1 ? "" : "s", max_tokens, seq_len);
    int best = -1;
    for (int k = 0; k < nc; k++) {
        double t = xd_now();
        if (!(cand[k].per_domain = xd_calloc((size_t)nd, sizeof(double), e))) {
            rc = -1;
            goto done;
        }
        if ((rc = merge_mix(merged.params, params, cand[k].w, n, N, acc, e))) goto done;
        if ((rc = merge_score_run(sc, &merged, &cand[k].score, cand[k].per_domain, e))) goto done;
        if (!isfinite(cand[k].score)) cand[k].score = NAN; /* never chosen, reported as null */
        if (!isnan(cand[k].score) && (best < 0 || cand[k].score > cand[best].score)) best = k;
        fprintf(stderr, "[merge] candidate %d/%d %-14s", k + 1, nc, cand[k].kind);
        merge_print_weights(&cand[k], n);
        fprintf(stderr, "  %s %.5f  (%.1f s)\n", objective, cand[k].score, xd_now() - t);
    }
    if (best < 0) {
        rc = xd_fail(e, "no candidate has a finite %s: the experts' outputs are not finite on the data", objective);
        goto done;
    }

    /* the readable table: weights per expert, the objective and each domain's log-likelihood */
    fprintf(stderr, "[merge] %s = mean log-likelihood per val token, the %d domains weighted equally (higher is "
                    "better)\n[merge]      candidate      ",
            objective, nd);
    for (int i = 0; i < n; i++) fprintf(stderr, "   w%-3d", i + 1);
    fprintf(stderr, "  %10s", objective);
    for (int d = 0; d < nd; d++) fprintf(stderr, "  domain%-3d", d + 1);
    fprintf(stderr, "\n");
    for (int k = 0; k < nc; k++) {
        fprintf(stderr, "[merge]  %s %2d %-14s", k == best ? "*" : " ", k + 1, cand[k].kind);
        merge_print_weights(&cand[k], n);
        fprintf(stderr, "  %10.5f", cand[k].score);
        for (int d = 0; d < nd; d++) fprintf(stderr, "  %9.5f", cand[k].per_domain[d]);
        fprintf(stderr, "\n");
    }
    for (int d = 0; d < nd; d++)
        fprintf(stderr, "[merge]   domain%d: %s (%ld tokens)\n", d + 1, merge_score_domain_path(sc, d),
                merge_score_domain_tokens(sc, d));

    json_t *jexperts = json_array(), *jdomains = json_array(), *jskipped = json_array(), *jcands = json_array();
    json_t *chosen = json_array();
    for (int i = 0; i < n; i++) {
        json_array_append_new(jexperts, json_string(experts->items[i].path));
        json_array_append_new(chosen, json_real(cand[best].w[i]));
    }
    for (int d = 0; d < nd; d++)
        json_array_append_new(jdomains, json_pack("{s:s, s:I}", "path", merge_score_domain_path(sc, d), "tokens",
                                                  (json_int_t)merge_score_domain_tokens(sc, d)));
    for (int d = 0; d < merge_score_skipped(sc); d++)
        json_array_append_new(jskipped, json_string(merge_score_skipped_path(sc, d)));
    for (int k = 0; k < nc; k++) {
        json_t *w = json_array(), *pd = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(w, json_real(cand[k].w[i]));
        for (int d = 0; d < nd; d++)
            json_array_append_new(pd, isfinite(cand[k].per_domain[d]) ? json_real(cand[k].per_domain[d]) : json_null());
        json_array_append_new(jcands, json_pack("{s:i, s:s, s:o, s:o, s:o, s:b}", "index", k + 1, "kind", cand[k].kind,
                                                "weights", w, "score",
                                                isnan(cand[k].score) ? json_null() : json_real(cand[k].score),
                                                "per_domain", pd, "chosen", k == best));
    }
    report = json_pack("{s:s, s:s, s:o, s:o, s:o, s:i, s:I, s:o, s:i, s:f, s:o}", "weights", "search", "objective",
                       objective, "experts", jexperts, "domains", jdomains, "skipped_domains", jskipped, "seq_len",
                       (int)seq_len, "max_tokens", (json_int_t)max_tokens,
                       "candidates", jcands, "chosen", best + 1, "score", cand[best].score, "chosen_weights", chosen);
    /* the report first: config.json, written last by model_save, marks a finished merge */
    char path[4200];
    char *text = report ? json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    rc = !text ? xd_fail(e, "out of memory") : xd_path_join(path, sizeof path, out, MERGE_REPORT, e);
    if (rc == 0 && mkdir(out, 0755) != 0 && !xd_is_dir(out)) rc = xd_fail(e, "%s: cannot create directory", out);
    if (rc == 0) rc = xd_write_file_atomic(path, text, strlen(text), e);
    free(text);
    if (rc) goto done;
    /* the chosen weights, written */
    if ((rc = merge_mix(merged.params, params, cand[best].w, n, N, acc, e))) goto done;
    snprintf(merged.source, sizeof merged.source, "merge of %d experts", n);
    if ((rc = model_save(&merged, out, NULL, e))) goto done;
    json_t *note = json_pack("{s:s, s:O, s:O, s:s, s:f, s:s}", "weights", "search", "experts", jexperts,
                             "chosen_weights", chosen, "objective", objective, "score", cand[best].score, "report",
                             MERGE_REPORT);
    rc = note ? merge_note_config(out, note, e) : xd_fail(e, "out of memory");
    json_decref(note);
    if (rc) goto done;
    printf("merged %d experts into %s with the weights of candidate %d (%s):", n, out, best + 1, cand[best].kind);
    for (int i = 0; i < n; i++) printf(" %.4f", cand[best].w[i]);
    printf("; %s %.5f; report %s/%s\n", objective, cand[best].score, out, MERGE_REPORT);
done:
    json_decref(report);
    for (int k = 0; cand && k < nc; k++) free(cand[k].per_domain);
    free(cand);
    free(dirs);
    free(acc);
    merge_score_free(sc);
    for (int i = 0; i < n && i < MERGE_MAX_EXPERTS; i++) free(params[i]);
    model_transformer_free(&other);
    model_transformer_free(&merged);
    return rc;
}

int stage_merge(int argc, char **argv) {
    xd_err e = {{0}};
    char *out = NULL, *mode = NULL, *layers = NULL, *weights = NULL, *objective = NULL, *device = NULL;
    cfg_sources experts = {0}, data = {0};
    long candidates = 0, seq_len = 0, max_tokens = 0;
    cfg_field fields[] = {
        {"experts", CFG_SOURCES, &experts, NULL, "expert students (model directories) with weights lambda", 0, 0},
        {"out", CFG_STRING, &out, NULL, "directory to write the merged student to", 0, 0},
        {"mode", CFG_STRING, &mode, "average", "average, or layers (join align layer blocks)", 0, 0},
        {"layers", CFG_STRING, &layers, "", "mode layers: each expert's layer range, \"A-B,C-D,...\"", 0, 0},
        {"weights", CFG_STRING, &weights, "given",
         "given (the experts' weights), or search: the best of the candidates by the objective", 0, 0},
        {"candidates", CFG_INT, &candidates, "8", "weights: search: candidate weightings scored at most", 1,
         MERGE_MAX_CANDIDATES},
        {"objective", CFG_STRING, &objective, "val_loglik",
         "weights: search: val_loglik (mean log-likelihood per val token, domains weighted equally)", 0, 0},
        {"data", CFG_SOURCES, &data, "", "weights: search: token shard directories scored on (val split)", 0, 0},
        {"seq_len", CFG_INT, &seq_len, "256", "weights: search: tokens per scored window", 2, 1 << 20},
        {"max_tokens", CFG_INT, &max_tokens, "4096", "weights: search: val tokens scored per domain at most", 1, 1e12},
        {"device", CFG_STRING, &device, "cpu", "weights: search: cpu, cuda or cuda:N: where candidates are scored", 0,
         0},
    };
    int n_fields = (int)(sizeof fields / sizeof fields[0]);
    int cli = cfg_stage_cli("merge", argc, argv, fields, n_fields, NULL, NULL, NULL);
    if (cli) {
        cfg_free(fields, n_fields);
        return cli == 1 ? 0 : 2;
    }
    int rc = 0, n = experts.count;
    double total = 0;
    bool by_layers = !strcmp(mode, "layers"), search = !strcmp(weights, "search");
    int first[MERGE_MAX_EXPERTS], last[MERGE_MAX_EXPERTS];
    const char *usage = NULL;
    char msg[512];
    if (!by_layers && strcmp(mode, "average")) {
        snprintf(msg, sizeof msg, "mode \"%s\" must be average or layers", mode);
        usage = msg;
    } else if (!search && strcmp(weights, "given")) {
        snprintf(msg, sizeof msg, "weights \"%s\" must be given (the experts' own) or search", weights);
        usage = msg;
    } else if (search && by_layers) {
        usage = "weights: search is for mode average: mode layers joins layer blocks and has no weights to choose";
    } else if (search && strcmp(objective, "val_loglik")) {
        snprintf(msg, sizeof msg, "objective \"%s\" is not known: the one objective is val_loglik", objective);
        usage = msg;
    } else if (search && data.count == 0) {
        usage = "weights: search needs data: the token shard directories whose val split scores the candidates";
    } else if (!search && data.count > 0) {
        usage = "data is the search's: give weights: search to choose the weights on it, or drop data";
    } else if (n > MERGE_MAX_EXPERTS) {
        snprintf(msg, sizeof msg, "%d experts: at most %d are merged", n, MERGE_MAX_EXPERTS);
        usage = msg;
    }
    if (usage) {
        fprintf(stderr, "xtrain merge: %s\n", usage);
        cfg_free(fields, n_fields);
        return 2;
    }
    if (by_layers) { /* one range per expert */
        int k = 0;
        for (const char *p = layers; *p && k < MERGE_MAX_EXPERTS; k++) {
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
    model_transformer merged = {0}, other = {0};
    double *acc = NULL, weight[MERGE_MAX_EXPERTS], lambda[MERGE_MAX_EXPERTS];
    if (search) {
        int cuda = -1;
        rc = trainer_parse_device(device, &cuda, &e);
        if (rc == 0) rc = merge_search(&experts, out, &data, candidates, objective, seq_len, max_tokens, cuda, &e);
        goto done;
    }
    for (int i = 0; i < n; i++) weight[i] = experts.items[i].weight;
    total = merge_lambdas(weight, n, lambda);
    if (!by_layers && !(total > 0)) {
        rc = xd_fail(&e, "the expert weights sum to %g; at least one must be positive", total);
        goto done;
    }
    /* the first expert is the template; the average is accumulated in double */
    if ((rc = model_transformer_load(experts.items[0].path, &merged, &e))) goto done;
    if ((rc = merge_check_expert(&merged, &merged, experts.items[0].path, NULL, &e))) goto done;
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
            if ((rc = merge_check_expert(m, &merged, experts.items[i].path, experts.items[0].path, &e))) break;
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
        merge_accumulate(acc, m->params, lambda[i], N);
        fprintf(stderr, "[merge] %s  lambda %.4f\n", experts.items[i].path, lambda[i]);
    }
    if (rc) goto done;
    for (uint64_t j = 0; j < N; j++) merged.params[j] = (float)acc[j];
    snprintf(merged.source, sizeof merged.source, "merge of %d experts", n);
    if ((rc = model_save(&merged, out, NULL, &e))) goto done;
    if (!by_layers) {
        json_t *jexperts = json_array(), *jlambda = json_array();
        for (int i = 0; i < n; i++) {
            json_array_append_new(jexperts, json_string(experts.items[i].path));
            json_array_append_new(jlambda, json_real(lambda[i]));
        }
        json_t *note = json_pack("{s:s, s:o, s:o}", "weights", "given", "experts", jexperts, "lambda", jlambda);
        rc = note ? merge_note_config(out, note, &e) : xd_fail(&e, "out of memory");
        json_decref(note);
        if (rc) goto done;
    }
    printf("merged %d experts into %s\n", n, out);
done:
    if (rc) fprintf(stderr, "xtrain merge: %s\n", e.msg);
    free(acc);
    model_transformer_free(&other);
    model_transformer_free(&merged);
    cfg_free(fields, n_fields);
    return rc ? 1 : 0;
}
