/* Tolerant rendering: the coordinator's bodies are read by field name with alternatives, and a
 * missing field is shown as "-" (docs/xctl.md lists what is read). */
#include "xctl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

json_t *xctl_get(json_t *o, const char *keys) {
    if (!json_is_object(o)) return NULL;
    char k[64];
    for (const char *s = keys; *s;) {
        size_t n = strcspn(s, "|");
        if (n < sizeof k) {
            memcpy(k, s, n);
            k[n] = 0;
            json_t *v = json_object_get(o, k);
            if (v && !json_is_null(v)) return v;
        }
        s += n;
        if (*s == '|') s++;
    }
    return NULL;
}

const char *xctl_text(json_t *v, char *buf, size_t cap) {
    if (!v || json_is_null(v)) return "-";
    if (json_is_string(v)) return json_string_value(v)[0] ? json_string_value(v) : "-";
    if (json_is_integer(v)) snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) snprintf(buf, cap, "%.4g", json_real_value(v));
    else if (json_is_boolean(v)) snprintf(buf, cap, "%s", json_is_true(v) ? "yes" : "no");
    else if (json_is_array(v)) snprintf(buf, cap, "%zu items", json_array_size(v));
    else {
        char *s = json_dumps(v, JSON_COMPACT);
        snprintf(buf, cap, "%s", s ? s : "?");
        free(s);
    }
    return buf;
}

const char *xctl_time(json_t *v, char *buf, size_t cap) {
    if (!json_is_number(v)) return xctl_text(v, buf, cap);
    double t = json_number_value(v);
    if (t > 1e12) t /= 1000; /* milliseconds */
    if (!(t > 0) || t > 1e11) return xctl_text(v, buf, cap);
    time_t s = (time_t)t;
    struct tm tm;
    if (!localtime_r(&s, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm)) return xctl_text(v, buf, cap);
    return buf;
}

json_t *xctl_list(json_t *body, const char *keys) {
    if (json_is_array(body)) return body;
    json_t *v = xctl_get(body, keys);
    return json_is_array(v) ? v : NULL;
}

/* An object, or a JSON object in a string (a metrics.jsonl line); new reference or NULL. */
static json_t *as_object(json_t *v) {
    if (json_is_object(v)) return json_incref(v);
    if (json_is_string(v)) {
        json_t *o = json_loads(json_string_value(v), 0, NULL);
        if (json_is_object(o)) return o;
        json_decref(o);
    }
    return NULL;
}

json_t *xctl_metrics(json_t *job) {
    json_t *m = as_object(xctl_get(job, "metrics|latest_metrics|latest|progress|last_metrics"));
    /* a progress record {step, total, line|metrics: LINE}: the line's fields join it */
    json_t *inner = m ? as_object(xctl_get(m, "line|metrics")) : NULL;
    if (inner) {
        json_object_update_missing(m, inner);
        json_decref(inner);
    }
    return m;
}

static long as_long(json_t *v) {
    if (json_is_integer(v)) return (long)json_integer_value(v);
    if (json_is_real(v) && isfinite(json_real_value(v))) return (long)json_real_value(v);
    return -1;
}

void xctl_progress(json_t *job, long *step, long *total) {
    json_t *m = xctl_metrics(job);
    *step = as_long(xctl_get(job, "step"));
    if (*step < 0) *step = as_long(xctl_get(m, "step"));
    *total = as_long(xctl_get(job, "total|steps"));
    if (*total < 0) *total = as_long(xctl_get(m, "total|steps"));
    json_decref(m);
}

int xctl_state_end(const char *s) {
    static const char *ok[] = {"succeeded", "success", "done", "completed", "complete", "finished", "ok"};
    static const char *bad[] = {"failed", "failure", "error", "upstream_failed", "upstream-failed",
                                "cancelled", "canceled", "aborted", "killed"};
    if (!s) return -1;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(s, ok[i])) return 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (!strcmp(s, bad[i])) return 1;
    return -1;
}

void xctl_print_json(json_t *body) {
    char *s = json_dumps(body ? body : json_null(), JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    printf("%s\n", s ? s : "null");
    free(s);
}

void xctl_table_init(xctl_table *t, int cols) {
    t->cols = cols;
    t->rows = 0;
    t->cells = NULL;
}

void xctl_table_add(xctl_table *t, const char *const *cells) {
    char **grown = realloc(t->cells, sizeof *grown * (size_t)(t->rows + 1) * (size_t)t->cols);
    if (!grown) return;
    t->cells = grown;
    for (int c = 0; c < t->cols; c++) {
        const char *s = cells[c] ? cells[c] : "-";
        char *copy = strdup(s);
        if (copy) /* one line per cell */
            for (char *p = copy; *p; p++)
                if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
        t->cells[t->rows * t->cols + c] = copy;
    }
    t->rows++;
}

/* Display width: UTF-8 continuation bytes take no column. */
static int width(const char *s) {
    int w = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) w++;
    return w;
}

void xctl_table_print(const xctl_table *t, FILE *f) {
    int *wd = calloc((size_t)t->cols, sizeof *wd);
    if (!wd) return;
    for (int r = 0; r < t->rows; r++)
        for (int c = 0; c < t->cols; c++) {
            int w = width(t->cells[r * t->cols + c]);
            if (w > wd[c]) wd[c] = w;
        }
    for (int r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->cols; c++) {
            const char *s = t->cells[r * t->cols + c] ? t->cells[r * t->cols + c] : "-";
            if (c + 1 == t->cols) fputs(s, f);
            else fprintf(f, "%s%*s  ", s, wd[c] - width(s), "");
        }
        fputc('\n', f);
    }
    free(wd);
}

void xctl_table_free(xctl_table *t) {
    for (int i = 0; i < t->rows * t->cols; i++) free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = 0;
}
