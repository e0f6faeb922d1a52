#include "config.h"
#include "args.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define CFG_MAX_BYTES (1u << 20)

static cfg_field *find_field(cfg_field *f, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i].key, key)) return &f[i];
    return NULL;
}

static int unknown_key(cfg_field *f, int n, const char *key, const char *where, xd_err *e) {
    const char *best = NULL;
    int best_d = 4;
    for (int i = 0; i < n; i++) {
        int d = args_edit_distance(key, f[i].key);
        if (d < best_d) best_d = d, best = f[i].key;
    }
    if (best) return xd_fail(e, "%s: unknown key \"%s\" (did you mean \"%s\"?)", where, key, best);
    return xd_fail(e, "%s: unknown key \"%s\"", where, key);
}

static void free_sources(cfg_sources *s) {
    for (int i = 0; i < s->count; i++) free(s->items[i].path);
    free(s->items);
    s->items = NULL;
    s->count = 0;
}

/* Sets a scalar field from text; where names the origin for messages. */
static int set_scalar(cfg_field *f, const char *v, const char *where, xd_err *e) {
    char *end;
    errno = 0;
    switch (f->type) {
    case CFG_STRING: {
        char *copy = strdup(v);
        if (!copy) return xd_fail(e, "out of memory");
        free(*(char **)f->dst);
        *(char **)f->dst = copy;
        return 0;
    }
    case CFG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || !*v || *end) return xd_fail(e, "%s: \"%s\" must be an integer, got \"%s\"", where, f->key, v);
        if (f->min < f->max && (x < f->min || x > f->max))
            return xd_fail(e, "%s: \"%s\" = %ld is outside %g..%g", where, f->key, x, f->min, f->max);
        *(long *)f->dst = x;
        return 0;
    }
    case CFG_NUMBER: {
        double x = strtod(v, &end);
        if (errno || !*v || *end || !isfinite(x))
            return xd_fail(e, "%s: \"%s\" must be a number, got \"%s\"", where, f->key, v);
        if (f->min < f->max && (x < f->min || x > f->max))
            return xd_fail(e, "%s: \"%s\" = %g is outside %g..%g", where, f->key, x, f->min, f->max);
        *(double *)f->dst = x;
        return 0;
    }
    case CFG_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1")) *(bool *)f->dst = true;
        else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0")) *(bool *)f->dst = false;
        else return xd_fail(e, "%s: \"%s\" must be true or false, got \"%s\"", where, f->key, v);
        return 0;
    case CFG_SOURCES: {
        /* on the command line: PATH[:WEIGHT][,PATH[:WEIGHT]]... */
        cfg_sources s = {0};
        char *copy = strdup(v), *save = NULL;
        if (!copy) return xd_fail(e, "out of memory");
        int rc = 0;
        for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
            cfg_source *grown = realloc(s.items, sizeof *grown * (size_t)(s.count + 1));
            if (!grown) {
                rc = xd_fail(e, "out of memory");
                break;
            }
            s.items = grown;
            char *colon = strrchr(tok, ':');
            double w = 1.0;
            if (colon) {
                w = strtod(colon + 1, &end);
                if (*end || !(w >= 0) || !isfinite(w)) {
                    rc = xd_fail(e, "%s: \"%s\": weight \"%s\" must be a number >= 0", where, f->key, colon + 1);
                    break;
                }
                *colon = 0;
            }
            s.items[s.count].path = strdup(tok);
            s.items[s.count++].weight = w;
        }
        free(copy);
        if (rc == 0 && s.count == 0) rc = xd_fail(e, "%s: \"%s\" names no source", where, f->key);
        if (rc) {
            free_sources(&s);
            return -1;
        }
        free_sources(f->dst);
        *(cfg_sources *)f->dst = s;
        return 0;
    }
    }
    return -1;
}

/* data: [{path: P, weight: W}, ...] or [P, ...] */
static int set_sources_yaml(cfg_field *f, yaml_document_t *doc, yaml_node_t *node, const char *where,
                            xd_err *e) {
    if (node->type != YAML_SEQUENCE_NODE)
        return xd_fail(e, "%s: \"%s\" must be a list of {path, weight}", where, f->key);
    cfg_sources s = {0};
    int rc = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top && rc == 0; it++) {
        yaml_node_t *item = yaml_document_get_node(doc, *it);
        cfg_source src = {NULL, 1.0};
        if (item->type == YAML_SCALAR_NODE) {
            src.path = strdup((const char *)item->data.scalar.value);
        } else if (item->type == YAML_MAPPING_NODE) {
            for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top; p++) {
                yaml_node_t *k = yaml_document_get_node(doc, p->key), *v = yaml_document_get_node(doc, p->value);
                const char *key = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
                if (v->type != YAML_SCALAR_NODE) {
                    rc = xd_fail(e, "%s: \"%s\" item %d: \"%s\" must be a scalar", where, f->key, s.count + 1, key);
                    break;
                }
                const char *val = (const char *)v->data.scalar.value;
                if (!strcmp(key, "path")) {
                    free(src.path);
                    src.path = strdup(val);
                } else if (!strcmp(key, "weight")) {
                    char *end;
                    src.weight = strtod(val, &end);
                    if (*end || !*val || !(src.weight >= 0) || !isfinite(src.weight))
                        rc = xd_fail(e, "%s: \"%s\" item %d: weight \"%s\" must be a number >= 0", where, f->key, s.count + 1, val);
                } else {
                    rc = xd_fail(e, "%s: \"%s\" item %d: unknown key \"%s\" (path, weight)", where, f->key, s.count + 1, key);
                }
                if (rc) break;
            }
            if (rc == 0 && !src.path) rc = xd_fail(e, "%s: \"%s\" item %d has no path", where, f->key, s.count + 1);
        } else {
            rc = xd_fail(e, "%s: \"%s\" item %d must be a path or {path, weight}", where, f->key, s.count + 1);
        }
        if (rc) {
            free(src.path);
            break;
        }
        cfg_source *grown = realloc(s.items, sizeof *grown * (size_t)(s.count + 1));
        if (!grown) {
            free(src.path);
            rc = xd_fail(e, "out of memory");
            break;
        }
        s.items = grown;
        s.items[s.count++] = src;
    }
    if (rc == 0 && s.count == 0) rc = xd_fail(e, "%s: \"%s\" names no source", where, f->key);
    if (rc) {
        free_sources(&s);
        return -1;
    }
    free_sources(f->dst);
    *(cfg_sources *)f->dst = s;
    return 0;
}

static int load_yaml(cfg_field *fields, int n, const char *path, xd_err *e) {
    char *text;
    size_t len;
    if (xd_read_file(path, CFG_MAX_BYTES, &text, &len, e)) return -1;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = xd_fail(e, "%s: not valid YAML (line %zu: %s)", path, parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "?");
        yaml_parser_delete(&parser);
        free(text);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type != YAML_MAPPING_NODE) {
        rc = xd_fail(e, "%s: must be a mapping of key: value", path);
    } else if (root) {
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top && rc == 0; p++) {
            yaml_node_t *k = yaml_document_get_node(&doc, p->key), *v = yaml_document_get_node(&doc, p->value);
            if (k->type != YAML_SCALAR_NODE) {
                rc = xd_fail(e, "%s: keys must be plain names", path);
                break;
            }
            const char *key = (const char *)k->data.scalar.value;
            char where[1100];
            snprintf(where, sizeof where, "%s line %zu", path, k->start_mark.line + 1);
            cfg_field *f = find_field(fields, n, key);
            if (!f) {
                rc = unknown_key(fields, n, key, where, e);
            } else if (f->type == CFG_SOURCES) {
                rc = set_sources_yaml(f, &doc, v, where, e);
            } else if (v->type != YAML_SCALAR_NODE) {
                rc = xd_fail(e, "%s: \"%s\" must be a single value", where, key);
            } else {
                rc = set_scalar(f, (const char *)v->data.scalar.value, where, e);
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(text);
    return rc;
}

int cfg_load(cfg_field *fields, int n, const char *yaml_path, char **overrides, int n_overrides,
             xd_err *e) {
    for (int i = 0; i < n; i++) {
        cfg_field *f = &fields[i];
        if (f->type == CFG_STRING) *(char **)f->dst = NULL;
        if (f->type == CFG_SOURCES) *(cfg_sources *)f->dst = (cfg_sources){0};
        /* "" as a list's default: optional, empty */
        if (f->dflt && !(f->type == CFG_SOURCES && !f->dflt[0]) && set_scalar(f, f->dflt, "default", e))
            return -1;
    }
    if (yaml_path && load_yaml(fields, n, yaml_path, e)) return -1;
    for (int i = 0; i < n_overrides; i++) {
        const char *eq = strchr(overrides[i], '=');
        if (!eq || eq == overrides[i]) return xd_fail(e, "--set %s: expected key=value", overrides[i]);
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - overrides[i]), overrides[i]);
        cfg_field *f = find_field(fields, n, key);
        if (!f) return unknown_key(fields, n, key, "--set", e);
        if (set_scalar(f, eq + 1, "--set", e)) return -1;
    }
    for (int i = 0; i < n; i++) {
        cfg_field *f = &fields[i];
        bool missing = (f->type == CFG_STRING && !*(char **)f->dst) ||
                       (f->type == CFG_SOURCES && !f->dflt && ((cfg_sources *)f->dst)->count == 0);
        if (missing)
            return xd_fail(e, "%s: \"%s\" is required (%s)", yaml_path ? yaml_path : "config", f->key, f->help);
    }
    return 0;
}

void cfg_free(cfg_field *fields, int n) {
    for (int i = 0; i < n; i++) {
        if (fields[i].type == CFG_STRING) {
            free(*(char **)fields[i].dst);
            *(char **)fields[i].dst = NULL;
        } else if (fields[i].type == CFG_SOURCES) {
            free_sources(fields[i].dst);
        }
    }
}

char *cfg_to_json(const cfg_field *fields, int n) {
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        const cfg_field *f = &fields[i];
        json_t *v = NULL;
        switch (f->type) {
        case CFG_STRING: v = *(char **)f->dst ? json_string(*(char **)f->dst) : json_null(); break;
        case CFG_INT: v = json_integer(*(long *)f->dst); break;
        case CFG_NUMBER: v = json_real(*(double *)f->dst); break;
        case CFG_BOOL: v = json_boolean(*(bool *)f->dst); break;
        case CFG_SOURCES: {
            const cfg_sources *s = f->dst;
            v = json_array();
            for (int k = 0; k < s->count; k++)
                json_array_append_new(v, json_pack("{s:s, s:f}", "path", s->items[k].path, "weight", s->items[k].weight));
            break;
        }
        }
        json_object_set_new(o, f->key, v);
    }
    char *text = json_dumps(o, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(o);
    return text;
}

void cfg_print_table(const cfg_field *fields, int n) {
    printf("| key | default | meaning |\n| --- | --- | --- |\n");
    for (int i = 0; i < n; i++)
        printf("| `%s` | %s | %s |\n", fields[i].key, fields[i].dflt ? fields[i].dflt : "required", fields[i].help);
}

/* Flags that are shortcuts for a key (--device D is --set device=D), offered by the stages that
 * have the key. */
static const struct {
    const char *flag, *key, *usage, *help;
} key_flags[] = {
    {"--device", "device", " [--device cpu|cuda[:N]]", "cpu, cuda or cuda:N (the device key)"},
    {"--dp-rank", "dp_rank", " [--dp-rank R]", "this process's data-parallel rank (the dp_rank key)"},
    {"--dp-id", "dp_id", " [--dp-id FILE]", "the data-parallel ranks' meeting file (the dp_id key)"},
};
#define N_KEY_FLAGS (int)(sizeof key_flags / sizeof key_flags[0])

int cfg_stage_cli(const char *stage, int argc, char **argv, cfg_field *fields, int n_fields,
                  const char *extra_flag, const char *extra_key, const char *extra_help) {
    const char *config = NULL, *set_value = NULL, *extra = NULL, *flag_value[N_KEY_FLAGS] = {NULL};
    char *sets[64 + 1 + N_KEY_FLAGS], *rest[256], extra_set[256], flag_set[N_KEY_FLAGS][1100];
    int n_sets = 0, n_rest = 0;
    bool print_keys = false;
    xd_err e = {{0}};
    /* --set repeats: collect every occurrence before the flag table sees the rest */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--set") && i + 1 < argc && n_sets < 64) sets[n_sets++] = argv[++i];
        else if (!strncmp(argv[i], "--set=", 6) && n_sets < 64) sets[n_sets++] = argv[i] + 6;
        else if (n_rest < 256) rest[n_rest++] = argv[i];
    }
    arg_spec specs[4 + N_KEY_FLAGS] = {
        {"--config", ARG_STRING, &config, "stage settings (YAML); keys: --print-keys, docs/stages.md", false},
        {"--set", ARG_STRING, &set_value, "key=value: override one setting (repeatable)", false},
        {"--print-keys", ARG_FLAG, &print_keys, "print the settings with defaults (markdown) and exit", false},
    };
    int n_specs = 3;
    char usage[512];
    int len = snprintf(usage, sizeof usage, "xtrain %s --config FILE.yaml [--set key=value]...", stage);
    for (int k = 0; k < N_KEY_FLAGS; k++) {
        bool has_key = false;
        for (int i = 0; i < n_fields; i++) has_key |= !strcmp(fields[i].key, key_flags[k].key);
        if (!has_key) continue;
        specs[n_specs++] = (arg_spec){key_flags[k].flag, ARG_STRING, &flag_value[k], key_flags[k].help, false};
        len += snprintf(usage + len, sizeof usage - (size_t)len, "%s", key_flags[k].usage);
    }
    if (extra_flag) {
        specs[n_specs++] = (arg_spec){extra_flag, ARG_STRING, &extra, extra_help ? extra_help : "", false};
        snprintf(usage + len, sizeof usage - (size_t)len, " [%s VALUE]", extra_flag);
    }
    int prc = args_parse(specs, n_specs, n_rest, rest, &e);
    if (prc) {
        if (prc < 0) fprintf(stderr, "xtrain %s: %s\n", stage, e.msg);
        args_usage(usage, specs, n_specs);
        return prc < 0 ? 2 : 1;
    }
    if (print_keys) {
        cfg_print_table(fields, n_fields);
        return 1;
    }
    if (extra) {
        snprintf(extra_set, sizeof extra_set, "%s=%s", extra_key, extra);
        sets[n_sets++] = extra_set;
    }
    for (int k = 0; k < N_KEY_FLAGS; k++)
        if (flag_value[k]) {
            snprintf(flag_set[k], sizeof flag_set[k], "%s=%s", key_flags[k].key, flag_value[k]);
            sets[n_sets++] = flag_set[k];
        }
    if (cfg_load(fields, n_fields, config, sets, n_sets, &e)) {
        fprintf(stderr, "xtrain %s: %s\n", stage, e.msg);
        return 2;
    }
    return 0;
}
