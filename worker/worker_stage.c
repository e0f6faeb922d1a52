/* The child's command line. Stages with a settings file (align, distill, merge, eval) run as
 *   xtrain STAGE --config FILE [--set out=OUT]
 * init and prepare take flags, so their YAML mapping is turned into flags: `key: value` becomes
 * `--key value` (underscores become dashes), `key: true` a bare `--key`, `key: false` nothing,
 * and prepare's `inputs` (a string or a list) the positional INPUTs; `--out OUT` is added.
 * OUT is the config's `out` when it has one (eval's is the report file inside the workdir),
 * else the assign's workdir, which is then set as the stage's out. */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define WORKER_MAX_ARGS 256

static const char *const config_stages[] = {"align", "distill", "merge", "eval"};
static const char *const flag_stages[] = {"init", "prepare"};

static bool in_list(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i])) return true;
    return false;
}

bool worker_stage_known(const char *stage) {
    return in_list(stage, config_stages, 4) || in_list(stage, flag_stages, 2);
}

static int push(worker_argv *av, const char *s, xd_err *e) {
    if (av->argc + 1 >= WORKER_MAX_ARGS) return xd_fail(e, "more than %d arguments", WORKER_MAX_ARGS);
    if (!av->argv) {
        av->argv = calloc(WORKER_MAX_ARGS, sizeof *av->argv);
        if (!av->argv) return xd_fail(e, "out of memory");
    }
    av->argv[av->argc] = strdup(s);
    if (!av->argv[av->argc]) return xd_fail(e, "out of memory");
    av->argc++;
    return 0;
}

void worker_argv_free(worker_argv *av) {
    if (av->argv)
        for (int i = 0; i < av->argc; i++) free(av->argv[i]);
    free(av->argv);
    av->argv = NULL;
    av->argc = 0;
}

/* The top level of a YAML mapping: keys with a scalar or a list of scalars. */
typedef struct yaml_entry {
    char *key;
    char **values;
    int n_values;
    bool list;
    bool nested; /* holds mappings or lists: only a --config stage takes it */
} yaml_entry;

typedef struct yaml_map {
    yaml_entry *items;
    int count;
} yaml_map;

static void map_free(yaml_map *m) {
    for (int i = 0; i < m->count; i++) {
        free(m->items[i].key);
        for (int j = 0; j < m->items[i].n_values; j++) free(m->items[i].values[j]);
        free(m->items[i].values);
    }
    free(m->items);
    m->items = NULL;
    m->count = 0;
}

static int add_value(yaml_entry *it, const char *v, xd_err *e) {
    char **grown = realloc(it->values, sizeof *grown * (size_t)(it->n_values + 1));
    if (!grown) return xd_fail(e, "out of memory");
    it->values = grown;
    if (!(it->values[it->n_values] = strdup(v))) return xd_fail(e, "out of memory");
    it->n_values++;
    return 0;
}

static int parse_map(const char *text, yaml_map *m, xd_err *e) {
    yaml_parser_t p;
    yaml_document_t doc;
    memset(m, 0, sizeof *m);
    if (!yaml_parser_initialize(&p)) return xd_fail(e, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&p, &doc)) {
        xd_fail(e, "config: invalid YAML at line %zu: %s", p.problem_mark.line + 1,
                p.problem ? p.problem : "?");
        yaml_parser_delete(&p);
        return -1;
    }
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        /* an empty document: no settings */
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = xd_fail(e, "config: expected a mapping of settings");
    } else {
        for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; rc == 0 && pr < root->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
            yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
            if (!k || k->type != YAML_SCALAR_NODE || !v) {
                rc = xd_fail(e, "config: keys must be plain names");
                break;
            }
            yaml_entry *grown = realloc(m->items, sizeof *grown * (size_t)(m->count + 1));
            if (!grown) {
                rc = xd_fail(e, "out of memory");
                break;
            }
            m->items = grown;
            yaml_entry *it = &m->items[m->count++];
            memset(it, 0, sizeof *it);
            it->key = strdup((const char *)k->data.scalar.value);
            if (!it->key) {
                rc = xd_fail(e, "out of memory");
            } else if (v->type == YAML_SCALAR_NODE) {
                rc = add_value(it, (const char *)v->data.scalar.value, e);
            } else if (v->type == YAML_SEQUENCE_NODE) {
                it->list = true;
                for (yaml_node_item_t *i = v->data.sequence.items.start; rc == 0 && i < v->data.sequence.items.top; i++) {
                    yaml_node_t *x = yaml_document_get_node(&doc, *i);
                    if (x && x->type == YAML_SCALAR_NODE) rc = add_value(it, (const char *)x->data.scalar.value, e);
                    else it->nested = true; /* e.g. data: [{path, weight}]: for xtrain to read */
                }
            } else {
                it->list = it->nested = true; /* a mapping: only the stages with --config take those */
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    if (rc) map_free(m);
    return rc;
}

static const yaml_entry *map_get(const yaml_map *m, const char *key) {
    for (int i = 0; i < m->count; i++)
        if (!strcmp(m->items[i].key, key)) return &m->items[i];
    return NULL;
}

static int flags_from_map(const char *stage, const yaml_map *m, worker_argv *av, xd_err *e) {
    for (int i = 0; i < m->count; i++) {
        const yaml_entry *it = &m->items[i];
        if (!strcmp(it->key, "out") || (!strcmp(stage, "prepare") && !strcmp(it->key, "inputs"))) continue;
        if (it->list) return xd_fail(e, "config: \"%s\": %s takes one plain value per setting", it->key, stage);
        char flag[160];
        size_t n = strlen(it->key);
        if (n == 0 || n > 128 || it->key[0] == '-')
            return xd_fail(e, "config: \"%s\" is not a setting name", it->key);
        snprintf(flag, sizeof flag, "--%s", it->key);
        for (char *c = flag + 2; *c; c++)
            if (*c == '_') *c = '-';
        const char *v = it->values[0];
        if (!strcmp(v, "true") || !strcmp(v, "yes")) {
            if (push(av, flag, e)) return -1;
        } else if (!strcmp(v, "false") || !strcmp(v, "no")) {
            continue;
        } else if (push(av, flag, e) || push(av, v, e)) {
            return -1;
        }
    }
    return 0;
}

int worker_stage_argv(const char *xtrain, const char *stage, const char *config_path,
                      const char *config_text, const char *base, int n_gpus, char *out, size_t out_cap,
                      worker_argv *av, long *total, xd_err *e) {
    memset(av, 0, sizeof *av);
    *total = 0;
    if (!worker_stage_known(stage)) return xd_fail(e, "unknown stage \"%s\"", stage);
    yaml_map m;
    if (parse_map(config_text, &m, e)) return -1;
    const yaml_entry *steps = map_get(&m, "steps");
    if (steps && !steps->list) {
        char *end;
        long s = strtol(steps->values[0], &end, 10);
        if (*end == 0 && s > 0) *total = s;
    }
    const yaml_entry *own = map_get(&m, "out");
    int rc = 0;
    if (own && (own->list || !own->values[0][0])) {
        rc = xd_fail(e, "config: \"out\" must be a path");
    } else if (own) {
        const char *o = own->values[0];
        int n = o[0] == '/' ? snprintf(out, out_cap, "%s", o) : snprintf(out, out_cap, "%s/%s", base, o);
        if (n < 0 || (size_t)n >= out_cap) rc = xd_fail(e, "config: \"out\" is too long");
    }
    if (rc == 0) rc = push(av, xtrain, e) || push(av, stage, e) ? -1 : 0;
    if (rc == 0 && in_list(stage, config_stages, 4)) {
        char set[WORKER_PATH_MAX + 8];
        snprintf(set, sizeof set, "out=%s", out);
        rc = push(av, "--config", e) || push(av, config_path, e) ? -1 : 0;
        if (rc == 0 && !own) rc = push(av, "--set", e) || push(av, set, e) ? -1 : 0;
        /* an attempt given GPUs runs on the first of them (CUDA_VISIBLE_DEVICES holds them all),
           unless its config names a device; merge has no model arithmetic to move */
        bool on_gpu = !strcmp(stage, "align") || !strcmp(stage, "distill") || !strcmp(stage, "eval");
        if (rc == 0 && on_gpu && n_gpus > 0 && !map_get(&m, "device"))
            rc = push(av, "--device", e) || push(av, "cuda", e) ? -1 : 0;
    } else if (rc == 0) {
        rc = flags_from_map(stage, &m, av, e) || push(av, "--out", e) || push(av, out, e) ? -1 : 0;
        const yaml_entry *inputs = map_get(&m, "inputs");
        if (rc == 0 && inputs && inputs->nested) rc = xd_fail(e, "config: \"inputs\": a list of paths expected");
        if (rc == 0 && !strcmp(stage, "prepare") && inputs) {
            rc = push(av, "--", e);
            for (int i = 0; rc == 0 && i < inputs->n_values; i++) rc = push(av, inputs->values[i], e);
        }
    }
    map_free(&m);
    if (rc) worker_argv_free(av);
    return rc;
}
