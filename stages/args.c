#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int args_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    int prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb];
}

static int parse_value(arg_spec *s, const char *v, xd_err *e) {
    char *end;
    errno = 0;
    switch (s->kind) {
    case ARG_STRING:
        *(const char **)s->dst = v;
        return 0;
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (errno || *v == 0 || *end || x < -2147483647L || x > 2147483647L)
            return xd_fail(e, "%s expects an integer, got \"%s\"", s->name, v);
        *(int *)s->dst = (int)x;
        return 0;
    }
    case ARG_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || *v == 0 || *end) return xd_fail(e, "%s expects a number, got \"%s\"", s->name, v);
        *(double *)s->dst = x;
        return 0;
    }
    case ARG_FLAG:
        break;
    }
    return -1;
}

int args_parse(arg_spec *specs, int n_specs, int argc, char **argv, xd_err *e) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        arg_spec *s = NULL;
        for (int k = 0; k < n_specs; k++)
            if (strlen(specs[k].name) == name_len && !strncmp(specs[k].name, a, name_len)) s = &specs[k];
        if (!s) {
            if (a[0] != '-') return xd_fail(e, "unexpected argument \"%s\"", a);
            const char *best = NULL;
            int best_d = 4;
            for (int k = 0; k < n_specs; k++) {
                int d = args_edit_distance(a, specs[k].name);
                if (d < best_d) {
                    best_d = d;
                    best = specs[k].name;
                }
            }
            if (best) return xd_fail(e, "unknown flag %s (did you mean %s?)", a, best);
            return xd_fail(e, "unknown flag %s (see --help)", a);
        }
        if (s->kind == ARG_FLAG) {
            if (eq) return xd_fail(e, "%s takes no value", s->name);
            *(bool *)s->dst = true;
        } else {
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) return xd_fail(e, "%s needs a value", s->name);
            if (parse_value(s, v, e)) return -1;
        }
        s->set = true;
    }
    return 0;
}

void args_usage(const char *usage, const arg_spec *specs, int n_specs) {
    fprintf(stderr, "usage: %s\n\n", usage);
    for (int k = 0; k < n_specs; k++) {
        const char *meta = specs[k].kind == ARG_STRING ? " VALUE"
                         : specs[k].kind == ARG_INT    ? " N"
                         : specs[k].kind == ARG_DOUBLE ? " X"
                                                       : "";
        char left[64];
        snprintf(left, sizeof left, "%s%s", specs[k].name, meta);
        fprintf(stderr, "  %-22s %s\n", left, specs[k].help);
    }
}
