/* stages/config.h — a stage's settings: declared in a table (key, type, default, help), read from
 * a YAML file and --set key=value overrides, checked before any work starts: unknown keys (with
 * the nearest known one), wrong types, values out of range. */
#ifndef XD_STAGES_CONFIG_H
#define XD_STAGES_CONFIG_H

#include "common/xd.h"

typedef enum { CFG_STRING, CFG_INT, CFG_NUMBER, CFG_BOOL, CFG_SOURCES } cfg_type;

/* A weighted data source: a shard directory and its mixture weight. */
typedef struct cfg_source {
    char *path;
    double weight;
} cfg_source;

typedef struct cfg_sources {
    cfg_source *items;
    int count;
} cfg_sources;

typedef struct cfg_field {
    const char *key;
    cfg_type type;
    void *dst;          /* char **, long *, double *, bool *, cfg_sources * */
    const char *dflt;   /* as text; NULL: required (strings, sources) */
    const char *help;
    double min, max;    /* numbers and ints: inclusive range when min < max */
} cfg_field;

/* Fills every field from defaults, then the YAML file (may be NULL), then the overrides
 * ("key=value" strings). The fields must hold nothing (zeroed, or after cfg_free); strings and
 * lists are malloc'd and cfg_free releases them, also after a failed load. */
int cfg_load(cfg_field *fields, int n_fields, const char *yaml_path, char **overrides,
             int n_overrides, xd_err *e);
void cfg_free(cfg_field *fields, int n_fields);
/* The effective settings as a JSON object text (for the run's record); caller frees. */
char *cfg_to_json(const cfg_field *fields, int n_fields);
/* Markdown table of the fields, for docs. */
void cfg_print_table(const cfg_field *fields, int n_fields);



/* The command line every training stage shares:
 *   xtrain STAGE --config FILE.yaml [--set key=value]... [EXTRA VALUE] [--print-keys]
 * extra_flag (may be NULL) is a shortcut that becomes --set extra_key=VALUE. Loads the settings.
 * Returns 0 to run, 1 when it printed what was asked (exit 0), 2 on a usage error (printed). */
int cfg_stage_cli(const char *stage, int argc, char **argv, cfg_field *fields, int n_fields,
                  const char *extra_flag, const char *extra_key, const char *extra_help);

#endif
