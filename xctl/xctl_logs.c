/* logs JOB [-f] [--lines N]: the tail of a job's log (log_tail). With -f the tail is asked for
 * again each second and only the lines after those already printed are shown; it stops when
 * the reply says the job ended. */
#include "xctl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The body's lines: an array of strings, or a text (split at newlines) under lines|text|log. */
static json_t *lines_of(json_t *body) {
    json_t *v = json_is_array(body) || json_is_string(body) ? body : xctl_get(body, "lines|text|log|tail");
    json_t *out = json_array();
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *s = json_array_get(v, i);
            json_array_append_new(out, json_is_string(s) ? json_incref(s) : json_string(""));
        }
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        while (*s) {
            size_t n = strcspn(s, "\n");
            json_array_append_new(out, json_stringn(s, n));
            s += n;
            if (*s == '\n') s++;
        }
    }
    return out;
}

/* How many of the new lines were printed already: the longest suffix of old that is a prefix
 * of new. */
static size_t overlap(json_t *old, json_t *new_) {
    size_t no = json_array_size(old), nn = json_array_size(new_);
    for (size_t k = no < nn ? no : nn; k > 0; k--) {
        bool same = true;
        for (size_t i = 0; i < k && same; i++)
            same = json_equal(json_array_get(old, no - k + i), json_array_get(new_, i));
        if (same) return k;
    }
    return 0;
}

int xctl_cmd_logs(xctl *x) {
    const char *job = x->pos[0];
    json_t *printed = json_array();
    int rc;
    for (;;) {
        json_t *body;
        rc = xctl_call(x, PROTO_LOG_TAIL, json_pack("{s:s, s:i}", "job", job, "lines", x->lines), &body);
        if (rc) break;
        if (x->json && !x->follow) {
            xctl_print_json(body);
            json_decref(body);
            break;
        }
        json_t *lines = lines_of(body);
        size_t skip = overlap(printed, lines);
        for (size_t i = skip; i < json_array_size(lines); i++) {
            if (x->json) {
                char *s = json_dumps(json_array_get(lines, i), JSON_ENCODE_ANY);
                printf("%s\n", s ? s : "\"\"");
                free(s);
            } else {
                printf("%s\n", json_string_value(json_array_get(lines, i)));
            }
        }
        fflush(stdout);
        json_decref(printed);
        printed = lines;
        int ended = xctl_state_end(json_string_value(xctl_get(body, "state")));
        json_decref(body);
        if (!x->follow || ended >= 0) break;
        struct timespec ts = {(time_t)x->interval_s, (long)((x->interval_s - (double)(time_t)x->interval_s) * 1e9)};
        nanosleep(&ts, NULL);
    }
    json_decref(printed);
    return rc;
}
