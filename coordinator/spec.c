/* coordinator/spec.c — the pipeline spec (docs/pipeline-spec.md): YAML checked key by key, then
 * expanded into the jobs of a run, each with the complete YAML config of its xtrain stage. */
#include "coordinator.h"
#include "internal.h"
#include "model/gguf.h"
#include "stages/args.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#define SPEC_MAX_DOMAINS 256
#define SPEC_MAX_BLOCKS 1024
#define SPEC_MAX_NAME 64

typedef enum { KEY_INT, KEY_NUMBER, KEY_STRING, KEY_PATHS } key_type;

typedef struct key_def {
    const char *key;
    key_type type;
} key_def;

/* One stage setting as it will be written to the stage's YAML: the checked text of a scalar, or
 * a list of paths. */
typedef struct spec_setting {
    const char *key;
    key_type type;
    char *text;
    char **paths;
    int n_paths;
    size_t line; /* of the value, for the checks made after parsing */
} spec_setting;

typedef struct spec_settings {
    spec_setting *items;
    int n;
} spec_settings;

typedef struct spec_domain {
    char *name, *data;
    double weight;
} spec_domain;

struct coord_spec {
    char *name, *teacher;
    spec_settings student, align, distill, merge, final, eval;
    bool has_final, merge_search;
    long layer_blocks, num_layers;
    spec_domain *domains;
    int n_domains;
    int gpus;
    long retries, worker_retries;
};

/* The settings each stage takes from the spec (docs/stages.md); the coordinator writes teacher,
 * student, out, data, experts and layers itself. */
#define TRAIN_KEYS                                                                                 \
    {"seq_len", KEY_INT}, {"batch", KEY_INT}, {"steps", KEY_INT}, {"lr", KEY_NUMBER},              \
        {"lr_min", KEY_NUMBER}, {"warmup", KEY_INT}, {"schedule", KEY_STRING},                     \
        {"weight_decay", KEY_NUMBER}, {"grad_clip", KEY_NUMBER}, {"beta1", KEY_NUMBER},            \
        {"beta2", KEY_NUMBER}, {"eps", KEY_NUMBER}, {"seed", KEY_INT},                             \
        {"checkpoint_every", KEY_INT}, {"keep_checkpoints", KEY_INT}
static const key_def student_keys[] = {{"window", KEY_INT},         {"sinks", KEY_INT},
                                       {"chunk", KEY_INT},          {"mlstm_eps", KEY_NUMBER},
                                       {"forget_bias", KEY_STRING}, {"output_bias", KEY_NUMBER}};
static const key_def align_keys[] = {TRAIN_KEYS, {"layer_blocks", KEY_INT}, {"num_layers", KEY_INT}};
static const key_def distill_keys[] = {TRAIN_KEYS, {"topk", KEY_INT}, {"ce_weight", KEY_NUMBER},
                                       {"kl_weight", KEY_NUMBER}};
static const key_def eval_keys[] = {{"seq_len", KEY_INT},     {"max_tokens", KEY_INT},     {"tasks", KEY_PATHS},
                                    {"general", KEY_PATHS},   {"passkey", KEY_STRING},     {"passkey_samples", KEY_INT},
                                    {"seed", KEY_INT},        {"window_only", KEY_STRING}, {"score", KEY_STRING}};
/* weights: search picks the merge's weights on the domains' val split (xtrain merge's settings of
 * that name); the others belong to the search */
static const key_def merge_keys[] = {{"weights", KEY_STRING}, {"candidates", KEY_INT}, {"max_tokens", KEY_INT},
                                     {"seq_len", KEY_INT}};
static const char *const coordinator_keys[] = {"teacher", "student", "out", "data", "experts", "layers"};
static const key_def top_keys[] = {
    {"name", KEY_STRING},    {"teacher", KEY_STRING}, {"student", KEY_STRING},       {"domains", KEY_STRING},
    {"align", KEY_STRING},   {"distill", KEY_STRING}, {"merge", KEY_STRING},         {"final_distill", KEY_STRING},
    {"eval", KEY_STRING},    {"devices", KEY_STRING}, {"retries", KEY_STRING},       {"worker_retries", KEY_STRING},
};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- small helpers ---- */

static int unknown_key(const key_def *keys, int n, const char *key, const char *section, size_t line,
                       xd_err *e) {
    const char *best = NULL;
    int best_d = 4;
    for (int i = 0; i < n; i++) {
        int d = args_edit_distance(key, keys[i].key);
        if (d < best_d) best_d = d, best = keys[i].key;
    }
    const char *dot = section[0] ? "." : "";
    if (best)
        return xd_fail(e, "spec line %zu: unknown key \"%s%s%s\" (did you mean \"%s%s%s\"?)", line, section, dot,
                       key, section, dot, best);
    return xd_fail(e, "spec line %zu: unknown key \"%s%s%s\"", line, section, dot, key);
}

static size_t line_of(const yaml_node_t *n) { return n->start_mark.line + 1; }

static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* YAML's null: an empty plain scalar, ~ or null. */
static bool is_null(const yaml_node_t *n) {
    const char *s = scalar(n);
    return s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && (!*s || !strcmp(s, "~") || !strcmp(s, "null"));
}

static int parse_long(const yaml_node_t *n, const char *what, long min, long max, long *out, xd_err *e) {
    const char *s = scalar(n);
    if (!s) return xd_fail(e, "spec line %zu: \"%s\" must be an integer", line_of(n), what);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !*s || *end) return xd_fail(e, "spec line %zu: \"%s\" must be an integer, got \"%s\"", line_of(n), what, s);
    if (v < min || v > max)
        return xd_fail(e, "spec line %zu: \"%s\" = %ld is outside %ld..%ld", line_of(n), what, v, min, max);
    *out = v;
    return 0;
}

static int parse_number(const yaml_node_t *n, const char *what, double *out, xd_err *e) {
    const char *s = scalar(n);
    if (!s) return xd_fail(e, "spec line %zu: \"%s\" must be a number", line_of(n), what);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || !*s || *end || !isfinite(v))
        return xd_fail(e, "spec line %zu: \"%s\" must be a number, got \"%s\"", line_of(n), what, s);
    *out = v;
    return 0;
}

/* Paths go to workers on other hosts: only absolute paths mean the same thing there. */
static int parse_path(const yaml_node_t *n, const char *what, char **out, xd_err *e) {
    const char *s = scalar(n);
    if (!s || !*s) return xd_fail(e, "spec line %zu: \"%s\" must be a path", line_of(n), what);
    if (s[0] != '/') return xd_fail(e, "spec line %zu: \"%s\" must be an absolute path, got \"%s\"", line_of(n), what, s);
    if (strlen(s) > 4000) return xd_fail(e, "spec line %zu: \"%s\" is too long", line_of(n), what);
    free(*out);
    *out = strdup(s);
    return *out ? 0 : xd_fail(e, "out of memory");
}

static bool valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 32) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              (c == '.' && i > 0)))
            return false;
    }
    return true;
}

static void setting_free(spec_setting *st) {
    free(st->text);
    for (int k = 0; k < st->n_paths; k++) free(st->paths[k]);
    free(st->paths);
}

static void settings_free(spec_settings *s) {
    for (int i = 0; i < s->n; i++) setting_free(&s->items[i]);
    free(s->items);
    s->items = NULL;
    s->n = 0;
}

static const spec_setting *settings_find(const spec_settings *s, const char *key) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->items[i].key, key)) return &s->items[i];
    return NULL;
}

/* One setting's value, checked against its type. */
static int parse_setting(yaml_document_t *doc, yaml_node_t *v, const char *what, spec_setting *st, xd_err *e) {
    if (st->type == KEY_PATHS) {
        if (v->type != YAML_SEQUENCE_NODE)
            return xd_fail(e, "spec line %zu: \"%s\" must be a list of absolute paths", line_of(v), what);
        int count = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
        if (count > 1024) return xd_fail(e, "spec line %zu: \"%s\": more than 1024 paths", line_of(v), what);
        st->paths = calloc((size_t)count + 1, sizeof *st->paths);
        if (!st->paths) return xd_fail(e, "out of memory");
        for (; st->n_paths < count; st->n_paths++)
            if (parse_path(yaml_document_get_node(doc, v->data.sequence.items.start[st->n_paths]), what,
                           &st->paths[st->n_paths], e))
                return -1;
        return 0;
    }
    const char *s = scalar(v);
    if (!s || is_null(v))
        return xd_fail(e, "spec line %zu: \"%s\" must be %s", line_of(v), what,
                       st->type == KEY_INT ? "an integer" : st->type == KEY_NUMBER ? "a number" : "a single value");
    long lv;
    double dv;
    if (st->type == KEY_INT && parse_long(v, what, 0, 1000000000000L, &lv, e)) return -1;
    if (st->type == KEY_NUMBER && parse_number(v, what, &dv, e)) return -1;
    if (strlen(s) > 1000) return xd_fail(e, "spec line %zu: \"%s\" is too long", line_of(v), what);
    st->text = strdup(s);
    return st->text ? 0 : xd_fail(e, "out of memory");
}

/* A stage's section: a mapping of known keys to values of their type (or null: no settings). */
static int parse_section(yaml_document_t *doc, yaml_node_t *node, const char *section, const key_def *keys,
                         int n_keys, spec_settings *out, xd_err *e) {
    if (is_null(node)) return 0;
    if (node->type != YAML_MAPPING_NODE)
        return xd_fail(e, "spec line %zu: \"%s\" must be a mapping of settings", line_of(node), section);
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
        const char *key = scalar(k);
        if (!key) return xd_fail(e, "spec line %zu: \"%s\": keys must be plain names", line_of(k), section);
        char what[160];
        snprintf(what, sizeof what, "%s.%s", section, key);
        for (int i = 0; i < COUNT(coordinator_keys); i++)
            if (!strcmp(key, coordinator_keys[i]))
                return xd_fail(e, "spec line %zu: \"%s\" is written by the coordinator (from teacher, domains and "
                               "the DAG); remove it", line_of(k), what);
        const key_def *def = NULL;
        for (int i = 0; i < n_keys; i++)
            if (!strcmp(keys[i].key, key)) def = &keys[i];
        if (!def) return unknown_key(keys, n_keys, key, section, line_of(k), e);
        for (int i = 0; i < out->n; i++)
            if (!strcmp(out->items[i].key, key)) return xd_fail(e, "spec line %zu: \"%s\" given twice", line_of(k), what);
        spec_setting st = {def->key, def->type, NULL, NULL, 0, line_of(v)};
        if (parse_setting(doc, v, what, &st, e) == 0) {
            spec_setting *grown = realloc(out->items, sizeof *grown * (size_t)(out->n + 1));
            if (grown) {
                out->items = grown;
                out->items[out->n++] = st;
                continue;
            }
            xd_fail(e, "out of memory");
        }
        setting_free(&st);
        return -1;
    }
    return 0;
}

static int parse_domains(yaml_document_t *doc, yaml_node_t *node, coord_spec *s, xd_err *e) {
    if (node->type != YAML_SEQUENCE_NODE)
        return xd_fail(e, "spec line %zu: \"domains\" must be a list of {name, data, weight}", line_of(node));
    int count = (int)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (count == 0) return xd_fail(e, "spec line %zu: \"domains\" is empty: name at least one", line_of(node));
    if (count > SPEC_MAX_DOMAINS)
        return xd_fail(e, "spec line %zu: \"domains\": more than %d", line_of(node), SPEC_MAX_DOMAINS);
    s->domains = calloc((size_t)count, sizeof *s->domains);
    if (!s->domains) return xd_fail(e, "out of memory");
    static const key_def domain_keys[] = {{"name", KEY_STRING}, {"data", KEY_STRING}, {"weight", KEY_NUMBER}};
    double total = 0;
    for (int i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(doc, node->data.sequence.items.start[i]);
        spec_domain *d = &s->domains[i];
        s->n_domains = i + 1;
        d->weight = 1.0;
        if (item->type != YAML_MAPPING_NODE)
            return xd_fail(e, "spec line %zu: domain %d must be a mapping {name, data, weight}", line_of(item), i + 1);
        for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
            const char *key = scalar(k);
            if (!key) return xd_fail(e, "spec line %zu: domain keys must be plain names", line_of(k));
            if (!strcmp(key, "name")) {
                const char *name = scalar(v);
                if (!name || !valid_name(name))
                    return xd_fail(e, "spec line %zu: domain name must be 1-32 letters, digits, '_', '-' or '.', got "
                                   "\"%s\"", line_of(v), name ? name : "(not a scalar)");
                free(d->name);
                d->name = strdup(name);
                if (!d->name) return xd_fail(e, "out of memory");
            } else if (!strcmp(key, "data")) {
                if (parse_path(v, "domains.data", &d->data, e)) return -1;
            } else if (!strcmp(key, "weight")) {
                if (parse_number(v, "domains.weight", &d->weight, e)) return -1;
                if (d->weight < 0) return xd_fail(e, "spec line %zu: domain weight must be >= 0", line_of(v));
            } else {
                return unknown_key(domain_keys, COUNT(domain_keys), key, "domains", line_of(k), e);
            }
        }
        if (!d->name) return xd_fail(e, "spec line %zu: domain %d has no \"name\"", line_of(item), i + 1);
        if (!d->data) return xd_fail(e, "spec line %zu: domain \"%s\" has no \"data\" (its shard directory)", line_of(item), d->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(s->domains[j].name, d->name))
                return xd_fail(e, "spec line %zu: domain \"%s\" named twice", line_of(item), d->name);
        total += d->weight;
    }
    if (!(total > 0)) return xd_fail(e, "spec line %zu: \"domains\": the weights sum to 0", line_of(node));
    return 0;
}

static int parse_devices(yaml_document_t *doc, yaml_node_t *v, coord_spec *s, xd_err *e) {
    const char *text = scalar(v);
    if (text) {
        if (!strcmp(text, "cpu")) {
            s->gpus = 0;
            return 0;
        }
        return xd_fail(e, "spec line %zu: \"devices\" must be \"cpu\" or {gpus: N}, got \"%s\"", line_of(v), text);
    }
    if (v->type != YAML_MAPPING_NODE)
        return xd_fail(e, "spec line %zu: \"devices\" must be \"cpu\" or {gpus: N}", line_of(v));
    static const key_def device_keys[] = {{"gpus", KEY_INT}};
    bool seen = false;
    for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key), *val = yaml_document_get_node(doc, p->value);
        const char *key = scalar(k);
        if (!key || strcmp(key, "gpus")) return unknown_key(device_keys, 1, key ? key : "?", "devices", line_of(k), e);
        long g;
        if (parse_long(val, "devices.gpus", 1, 64, &g, e)) return -1;
        s->gpus = (int)g;
        seen = true;
    }
    if (!seen) return xd_fail(e, "spec line %zu: \"devices\": give gpus: N (or devices: cpu)", line_of(v));
    return 0;
}

/* The teacher's layer count, for splitting align into layer blocks: config.json's
 * num_hidden_layers of an HF directory, or a GGUF's ARCH.block_count. */
static int teacher_layers(const char *teacher, long *out, xd_err *e) {
    /* only a directory or a regular file: opening a FIFO or a device would block the daemon */
    struct stat sb;
    if (stat(teacher, &sb)) return xd_fail(e, "%s: cannot read it", teacher);
    if (S_ISDIR(sb.st_mode)) {
        char path[4200], *text;
        size_t len;
        if (xd_path_join(path, sizeof path, teacher, "config.json", e)) return -1;
        if (stat(path, &sb) || !S_ISREG(sb.st_mode)) return xd_fail(e, "%s: no config.json", teacher);
        if (xd_read_file(path, 1u << 20, &text, &len, e)) return -1;
        json_error_t je;
        json_t *cfg = json_loadb(text, len, 0, &je);
        free(text);
        if (!cfg) return xd_fail(e, "%s: %s", path, je.text);
        json_t *n = json_object_get(cfg, "num_hidden_layers");
        int rc = json_is_integer(n) && json_integer_value(n) > 0 ? 0 : xd_fail(e, "%s: no num_hidden_layers", path);
        if (rc == 0) *out = (long)json_integer_value(n);
        json_decref(cfg);
        return rc;
    }
    if (!S_ISREG(sb.st_mode)) return xd_fail(e, "%s: not a file or a directory", teacher);
    model_gguf *g;
    if (model_gguf_open(teacher, &g, e)) return -1;
    model_gguf_str arch;
    int rc = model_gguf_get_string(g, "general.architecture", &arch, e);
    if (rc == 0 && arch.len < 64) {
        char key[128];
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
        int64_t n;
        rc = model_gguf_get_int(g, key, &n, e);
        if (rc == 0 && n > 0 && n < 100000) *out = (long)n;
        else if (rc >= 0) rc = xd_fail(e, "%s: no %s", teacher, key);
    } else if (rc >= 0) {
        rc = xd_fail(e, "%s: no general.architecture", teacher);
    }
    model_gguf_close(g);
    return rc;
}

/* The merge section is checked whole at submit time, ranges included: a search set up wrong would
 * otherwise fail only once every expert has trained. */
static int check_merge(coord_spec *s, xd_err *e) {
    static const struct {
        const char *key;
        long min, max; /* xtrain merge's ranges */
    } ranges[] = {{"candidates", 1, 64}, {"max_tokens", 1, 1000000000000L}, {"seq_len", 2, 1L << 20}};
    const spec_setting *w = settings_find(&s->merge, "weights");
    if (w && strcmp(w->text, "search") && strcmp(w->text, "domains"))
        return xd_fail(e, "spec line %zu: \"merge.weights\" must be search (chosen on the domains' val split) or "
                       "domains (the domains' weights, the default), got \"%s\"", w->line, w->text);
    s->merge_search = w && !strcmp(w->text, "search");
    for (int i = 0; i < s->merge.n; i++) {
        const spec_setting *st = &s->merge.items[i];
        for (int k = 0; k < COUNT(ranges); k++) {
            if (strcmp(st->key, ranges[k].key)) continue;
            if (!s->merge_search)
                return xd_fail(e, "spec line %zu: \"merge.%s\" is a setting of the weight search: give merge.weights: "
                               "search", st->line, st->key);
            long v = strtol(st->text, NULL, 10);
            if (v < ranges[k].min || v > ranges[k].max)
                return xd_fail(e, "spec line %zu: \"merge.%s\" = %ld is outside %ld..%ld", st->line, st->key, v,
                               ranges[k].min, ranges[k].max);
        }
    }
    return 0;
}

static int parse_root(yaml_document_t *doc, yaml_node_t *root, coord_spec *s, xd_err *e) {
    if (!root || root->type != YAML_MAPPING_NODE) return xd_fail(e, "spec: must be a mapping of key: value");
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
        const char *key = scalar(k);
        if (!key) return xd_fail(e, "spec line %zu: keys must be plain names", line_of(k));
        for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < p; q++)
            if (!strcmp(scalar(yaml_document_get_node(doc, q->key)) ? scalar(yaml_document_get_node(doc, q->key)) : "", key))
                return xd_fail(e, "spec line %zu: \"%s\" given twice", line_of(k), key);
        int rc = 0;
        if (!strcmp(key, "name")) {
            const char *name = scalar(v);
            if (!name || !*name || strlen(name) > 200)
                return xd_fail(e, "spec line %zu: \"name\" must be a short text", line_of(v));
            s->name = strdup(name);
            if (!s->name) return xd_fail(e, "out of memory");
        } else if (!strcmp(key, "teacher")) {
            rc = parse_path(v, "teacher", &s->teacher, e);
        } else if (!strcmp(key, "student")) {
            rc = parse_section(doc, v, "student", student_keys, COUNT(student_keys), &s->student, e);
        } else if (!strcmp(key, "domains")) {
            rc = parse_domains(doc, v, s, e);
        } else if (!strcmp(key, "align")) {
            rc = parse_section(doc, v, "align", align_keys, COUNT(align_keys), &s->align, e);
        } else if (!strcmp(key, "distill")) {
            rc = parse_section(doc, v, "distill", distill_keys, COUNT(distill_keys), &s->distill, e);
        } else if (!strcmp(key, "merge")) {
            rc = parse_section(doc, v, "merge", merge_keys, COUNT(merge_keys), &s->merge, e);
            if (rc == 0) rc = check_merge(s, e);
        } else if (!strcmp(key, "final_distill")) {
            s->has_final = true;
            rc = parse_section(doc, v, "final_distill", distill_keys, COUNT(distill_keys), &s->final, e);
        } else if (!strcmp(key, "eval")) {
            rc = parse_section(doc, v, "eval", eval_keys, COUNT(eval_keys), &s->eval, e);
        } else if (!strcmp(key, "devices")) {
            rc = parse_devices(doc, v, s, e);
        } else if (!strcmp(key, "retries")) {
            rc = parse_long(v, "retries", 0, 100, &s->retries, e);
        } else if (!strcmp(key, "worker_retries")) {
            rc = parse_long(v, "worker_retries", 0, 1000, &s->worker_retries, e);
        } else {
            rc = unknown_key(top_keys, COUNT(top_keys), key, "", line_of(k), e);
        }
        if (rc) return -1;
    }
    if (!s->teacher) return xd_fail(e, "spec: \"teacher\" is required (an absolute path: HF directory or .gguf)");
    if (!s->n_domains) return xd_fail(e, "spec: \"domains\" is required: [{name, data, weight}, ...]");
    /* the coordinator's own align keys never reach the stage's YAML */
    s->layer_blocks = 1;
    for (int i = 0; i < s->align.n; i++) {
        spec_setting *st = &s->align.items[i];
        long v = strtol(st->text, NULL, 10);
        if (!strcmp(st->key, "layer_blocks")) {
            if (v < 1 || v > SPEC_MAX_BLOCKS) return xd_fail(e, "spec: \"align.layer_blocks\" must be 1..%d", SPEC_MAX_BLOCKS);
            s->layer_blocks = v;
        } else if (!strcmp(st->key, "num_layers")) {
            if (v < 1) return xd_fail(e, "spec: \"align.num_layers\" must be at least 1");
            s->num_layers = v;
        }
    }
    if (s->layer_blocks > 1) {
        if (!s->num_layers) {
            xd_err inner = {{0}};
            if (teacher_layers(s->teacher, &s->num_layers, &inner))
                return xd_fail(e, "spec: align.layer_blocks = %ld needs the teacher's layer count: %s (or give "
                               "align.num_layers)", s->layer_blocks, inner.msg);
        }
        if (s->layer_blocks > s->num_layers)
            return xd_fail(e, "spec: align.layer_blocks = %ld is more than the teacher's %ld layers", s->layer_blocks,
                           s->num_layers);
    }
    return 0;
}

int coord_spec_parse(const char *text, size_t len, coord_spec **out, xd_err *e) {
    *out = NULL;
    coord_spec *s = calloc(1, sizeof *s);
    if (!s) return xd_fail(e, "out of memory");
    s->retries = 2;
    s->worker_retries = 10;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = xd_fail(e, "spec: not valid YAML (line %zu: %s)", parser.problem_mark.line + 1,
                         parser.problem ? parser.problem : "?");
        yaml_parser_delete(&parser);
        coord_spec_free(s);
        return rc;
    }
    int rc = parse_root(&doc, yaml_document_get_root_node(&doc), s, e);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) {
        coord_spec_free(s);
        return -1;
    }
    if (!s->name) s->name = strdup("pipeline");
    if (!s->name) {
        coord_spec_free(s);
        return xd_fail(e, "out of memory");
    }
    *out = s;
    return 0;
}

void coord_spec_free(coord_spec *s) {
    if (!s) return;
    free(s->name);
    free(s->teacher);
    settings_free(&s->student);
    settings_free(&s->align);
    settings_free(&s->distill);
    settings_free(&s->final);
    settings_free(&s->merge);
    settings_free(&s->eval);
    for (int i = 0; i < s->n_domains; i++) {
        free(s->domains[i].name);
        free(s->domains[i].data);
    }
    free(s->domains);
    free(s);
}

const char *coord_spec_name(const coord_spec *s) { return s->name; }

/* ---- expansion ---- */

/* A YAML double-quoted scalar: safe for any path. */
static void put_quoted(coord_buf *b, const char *s) {
    coord_buf_put(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') coord_buf_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) coord_buf_printf(b, "\\x%02x", c);
        else coord_buf_printf(b, "%c", c);
    }
    coord_buf_put(b, "\"");
}

static void put_path_key(coord_buf *b, const char *key, const char *path) {
    coord_buf_printf(b, "%s: ", key);
    put_quoted(b, path);
    coord_buf_put(b, "\n");
}

/* key: "ROOT/NAME" */
static void put_out(coord_buf *b, const char *key, const char *root, const char *name) {
    coord_buf p = {0};
    coord_buf_printf(&p, "%s/%s", root, name);
    put_path_key(b, key, p.data ? p.data : "");
    coord_buf_free(&p);
}

static void put_setting(coord_buf *b, const spec_setting *st) {
    if (st->type == KEY_PATHS) {
        coord_buf_printf(b, "%s:\n", st->key);
        for (int i = 0; i < st->n_paths; i++) {
            coord_buf_put(b, "  - ");
            put_quoted(b, st->paths[i]);
            coord_buf_put(b, "\n");
        }
    } else if (st->type == KEY_STRING) {
        coord_buf_printf(b, "%s: ", st->key);
        put_quoted(b, st->text);
        coord_buf_put(b, "\n");
    } else {
        coord_buf_printf(b, "%s: %s\n", st->key, st->text);
    }
}

/* Settings of a section, minus the coordinator's own keys; over (may be NULL) wins per key. */
static void put_settings(coord_buf *b, const spec_settings *base, const spec_settings *over) {
    for (int i = 0; i < base->n; i++) {
        const spec_setting *st = &base->items[i];
        if (!strcmp(st->key, "layer_blocks") || !strcmp(st->key, "num_layers")) continue;
        if (over && settings_find(over, st->key)) continue;
        put_setting(b, st);
    }
    if (over)
        for (int i = 0; i < over->n; i++) put_setting(b, &over->items[i]);
}

/* The shortest text that reads back as the same double: 0.35, not 0.34999999999999998. */
static void put_number(coord_buf *b, double v) {
    char text[40];
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, v);
        if (strtod(text, NULL) == v) break;
    }
    coord_buf_put(b, text);
}

static void put_mixture(coord_buf *b, const coord_spec *s) {
    coord_buf_put(b, "data:\n");
    for (int i = 0; i < s->n_domains; i++) {
        coord_buf_put(b, "  - {path: ");
        put_quoted(b, s->domains[i].data);
        coord_buf_put(b, ", weight: ");
        put_number(b, s->domains[i].weight);
        coord_buf_put(b, "}\n");
    }
}

typedef struct dag_builder {
    coord_dag *dag;
    const char *root; /* ARTIFACTS/RUN_ID */
    int cap;
    bool oom;
} dag_builder;

/* Appends a job; its workdir is ROOT/NAME and output is workdir + output_suffix. Returns its index. */
static int add_job(dag_builder *db, const char *name, const char *stage, int gpus, const char *output_suffix,
                   coord_buf *config, const int *deps, int n_deps) {
    coord_dag *d = db->dag;
    if (d->n_jobs == db->cap) {
        int cap = db->cap ? db->cap * 2 : 16;
        coord_job_spec *grown = realloc(d->jobs, sizeof *grown * (size_t)cap);
        if (!grown) {
            db->oom = true;
            return -1;
        }
        d->jobs = grown;
        db->cap = cap;
    }
    coord_job_spec *j = &d->jobs[d->n_jobs];
    memset(j, 0, sizeof *j);
    j->name = strdup(name);
    j->stage = strdup(stage);
    j->config = coord_buf_take(config);
    j->gpus = gpus;
    coord_buf w = {0};
    coord_buf_printf(&w, "%s/%s", db->root, name);
    j->workdir = coord_buf_take(&w);
    coord_buf_printf(&w, "%s/%s%s", db->root, name, output_suffix);
    j->output = coord_buf_take(&w);
    j->deps = n_deps ? malloc(sizeof *j->deps * (size_t)n_deps) : NULL;
    if (n_deps && j->deps) memcpy(j->deps, deps, sizeof *deps * (size_t)n_deps);
    j->n_deps = n_deps;
    d->n_jobs++;
    if (!j->name || !j->stage || !j->config || !j->workdir || !j->output || (n_deps && !j->deps)) db->oom = true;
    return d->n_jobs - 1;
}

int coord_spec_expand(const coord_spec *s, const char *artifacts, const char *run_id, coord_dag *dag, xd_err *e) {
    memset(dag, 0, sizeof *dag);
    coord_buf rootb = {0};
    coord_buf_printf(&rootb, "%s/%s", artifacts, run_id);
    char *root = coord_buf_take(&rootb);
    dag->name = strdup(s->name);
    dag->retries = (int)s->retries;
    dag->worker_retries = (int)s->worker_retries;
    dag_builder db = {dag, root, 0, !root || !dag->name};
    if (db.oom) goto fail;
    const int train_gpus = s->gpus;
    coord_buf c = {0};

    /* init: the student from the teacher (init's and merge's output is OUT itself) */
    coord_buf_printf(&c, "# xcoord: run %s, job init\n", run_id);
    put_path_key(&c, "teacher", s->teacher);
    put_out(&c, "out", root, "init");
    put_settings(&c, &s->student, NULL);
    int init = add_job(&db, "init", "init", 0, "", &c, NULL, 0);
    if (db.oom) goto fail;
    char student[4200];
    snprintf(student, sizeof student, "%s", dag->jobs[init].output);

    /* align: one job, or layer blocks joined by a merge in layers mode */
    int align;
    if (s->layer_blocks <= 1) {
        coord_buf_printf(&c, "# xcoord: run %s, job align\n", run_id);
        put_path_key(&c, "teacher", s->teacher);
        put_path_key(&c, "student", student);
        put_out(&c, "out", root, "align");
        put_mixture(&c, s);
        put_settings(&c, &s->align, NULL);
        align = add_job(&db, "align", "align", train_gpus, "/model", &c, &init, 1);
    } else {
        int n = (int)s->layer_blocks;
        int *blocks = malloc(sizeof *blocks * (size_t)n);
        if (!blocks) goto fail;
        coord_buf join = {0};
        coord_buf_printf(&join, "# xcoord: run %s, job align (joins %d layer blocks)\n", run_id, n);
        put_out(&join, "out", root, "align");
        coord_buf_put(&join, "mode: layers\nexperts:\n");
        coord_buf layers = {0};
        coord_buf_put(&layers, "layers: \""); /* merge's layers mode: "A-B,C-D,..." */
        for (int i = 0; i < n; i++) {
            long a = (long)i * s->num_layers / n, b = (long)(i + 1) * s->num_layers / n - 1;
            char name[SPEC_MAX_NAME];
            snprintf(name, sizeof name, "align-%d", i);
            coord_buf_printf(&c, "# xcoord: run %s, job %s (layers %ld-%ld)\n", run_id, name, a, b);
            put_path_key(&c, "teacher", s->teacher);
            put_path_key(&c, "student", student);
            put_out(&c, "out", root, name);
            coord_buf_printf(&c, "layers: \"%ld-%ld\"\n", a, b);
            put_mixture(&c, s);
            put_settings(&c, &s->align, NULL);
            blocks[i] = add_job(&db, name, "align", train_gpus, "/model", &c, &init, 1);
            if (db.oom) break;
            coord_buf_put(&join, "  - ");
            put_quoted(&join, dag->jobs[blocks[i]].output);
            coord_buf_put(&join, "\n");
            coord_buf_printf(&layers, "%s%ld-%ld", i ? "," : "", a, b);
        }
        coord_buf_put(&layers, "\"\n");
        coord_buf_put(&join, layers.data ? layers.data : "");
        coord_buf_free(&layers);
        align = db.oom ? -1 : add_job(&db, "align", "merge", 0, "", &join, blocks, n);
        coord_buf_free(&join);
        free(blocks);
    }
    if (db.oom) goto fail;
    char aligned[4200];
    snprintf(aligned, sizeof aligned, "%s", dag->jobs[align].output);

    /* distill: one expert per domain, each from align's model */
    int *experts = malloc(sizeof *experts * (size_t)s->n_domains);
    if (!experts) goto fail;
    for (int i = 0; i < s->n_domains && !db.oom; i++) {
        char name[SPEC_MAX_NAME];
        snprintf(name, sizeof name, "distill-%s", s->domains[i].name);
        coord_buf_printf(&c, "# xcoord: run %s, job %s\n", run_id, name);
        put_path_key(&c, "teacher", s->teacher);
        put_path_key(&c, "student", aligned);
        put_out(&c, "out", root, name);
        coord_buf_put(&c, "data:\n  - {path: ");
        put_quoted(&c, s->domains[i].data);
        coord_buf_put(&c, ", weight: 1}\n");
        put_settings(&c, &s->distill, NULL);
        experts[i] = add_job(&db, name, "distill", train_gpus, "/model", &c, &align, 1);
    }
    int merge = -1;
    if (!db.oom) {
        coord_buf_printf(&c, "# xcoord: run %s, job merge (weights: %s)\n", run_id,
                         s->merge_search ? "searched on the domains' val split, theirs first" : "the domains'");
        put_out(&c, "out", root, "merge");
        coord_buf_put(&c, "experts:\n");
        for (int i = 0; i < s->n_domains; i++) {
            coord_buf_put(&c, "  - {path: ");
            put_quoted(&c, dag->jobs[experts[i]].output);
            coord_buf_put(&c, ", weight: ");
            put_number(&c, s->domains[i].weight);
            coord_buf_put(&c, "}\n");
        }
        if (s->merge_search) { /* scored on the data the experts trained on, its val split */
            coord_buf_put(&c, "weights: search\ndata:\n");
            for (int i = 0; i < s->n_domains; i++) {
                coord_buf_put(&c, "  - ");
                put_quoted(&c, s->domains[i].data);
                coord_buf_put(&c, "\n");
            }
            for (int i = 0; i < s->merge.n; i++)
                if (strcmp(s->merge.items[i].key, "weights")) put_setting(&c, &s->merge.items[i]);
            /* the scoring is model arithmetic: on one GPU when the run has them */
            if (train_gpus > 0) coord_buf_put(&c, "device: cuda\n");
        }
        merge = add_job(&db, "merge", "merge", s->merge_search && train_gpus > 0 ? 1 : 0, "", &c, experts,
                        s->n_domains);
    }
    free(experts);
    if (db.oom) goto fail;

    int last = merge;
    if (s->has_final) {
        coord_buf_printf(&c, "# xcoord: run %s, job final (the merged student on every domain)\n", run_id);
        put_path_key(&c, "teacher", s->teacher);
        put_path_key(&c, "student", dag->jobs[merge].output);
        put_out(&c, "out", root, "final");
        put_mixture(&c, s);
        put_settings(&c, &s->distill, &s->final);
        last = add_job(&db, "final", "distill", train_gpus, "/model", &c, &merge, 1);
        if (db.oom) goto fail;
    }

    {
        coord_buf_printf(&c, "# xcoord: run %s, job eval\n", run_id);
        put_path_key(&c, "teacher", s->teacher);
        put_path_key(&c, "student", dag->jobs[last].output);
        put_out(&c, "out", root, "eval/report.json");
        coord_buf_put(&c, "data:\n");
        for (int i = 0; i < s->n_domains; i++) {
            coord_buf_put(&c, "  - ");
            put_quoted(&c, s->domains[i].data);
            coord_buf_put(&c, "\n");
        }
        put_settings(&c, &s->eval, NULL);
        add_job(&db, "eval", "eval", train_gpus, "/report.json", &c, &last, 1);
    }
    coord_buf_free(&c);
    if (db.oom) goto fail;
    free(root);
    return 0;
fail:
    free(root);
    coord_dag_free(dag);
    return xd_fail(e, "out of memory");
}

void coord_dag_free(coord_dag *d) {
    for (int i = 0; i < d->n_jobs; i++) {
        coord_job_spec *j = &d->jobs[i];
        free(j->name);
        free(j->stage);
        free(j->config);
        free(j->workdir);
        free(j->output);
        free(j->deps);
    }
    free(d->jobs);
    free(d->name);
    memset(d, 0, sizeof *d);
}
