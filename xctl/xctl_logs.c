/* logs JOB [-f] [--lines N]: the tail of a job's log (log_tail). The coordinator keeps the
 * progress lines its workers relay, so a line is a string or a record {attempt, step, total,
 * time, line}, printed as "step S/T  LINE". With -f the tail is asked for again each interval
 * and only the lines after those already printed are shown; it stops when the reply says the job
 * ended. */
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
            if (json_is_string(s)) {
                json_array_append(out, s);
                continue;
            }
            json_t *line = xctl_get(s, "line|text|metrics");
            char *text = json_is_string(line) ? strdup(json_string_value(line)) : line ? json_dumps(line, JSON_COMPACT | JSON_ENCODE_ANY) : json_dumps(s, JSON_COMPACT | JSON_ENCODE_ANY);
            json_t *step = xctl_get(s, "step"), *total = xctl_get(s, "total");
            char head[64] = "";
            if (json_is_integer(step) && json_integer_value(total) > 0)
                snprintf(head, sizeof head, "step %lld/%lld  ", (long long)json_integer_value(step), (long long)json_integer_value(total));
            else if (json_is_integer(step))
                snprintf(head, sizeof head, "step %lld  ", (long long)json_integer_value(step));
            size_t n = strlen(head) + (text ? strlen(text) : 0) + 1;
            char *joined = malloc(n);
            if (joined) snprintf(joined, n, "%s%s", head, text ? text : "");
            json_t *js = joined ? json_string(joined) : NULL;
            json_array_append_new(out, js ? js : json_string("?"));
            free(joined);
            free(text);
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

/* Whether job RUN/NAME has ended, from its run (-1: not, or not known). */
static int job_ended(xctl *x, const char *job) {
    const char *slash = strchr(job, '/');
    if (!slash) return -1;
    char run[256];
    snprintf(run, sizeof run, "%.*s", (int)(slash - job), job);
    json_t *body;
    if (xctl_call(x, PROTO_QUERY, json_pack("{s:s}", "run", run), &body)) return -1;
    json_t *jobs = xctl_list(body, "jobs");
    int ended = -1;
    for (size_t i = 0; i < json_array_size(jobs); i++) {
        json_t *j = json_array_get(jobs, i);
        const char *id = json_string_value(xctl_get(j, "id")), *name = json_string_value(xctl_get(j, "name"));
        if ((id && !strcmp(id, job)) || (name && !strcmp(name, slash + 1)))
            ended = xctl_state_end(json_string_value(xctl_get(j, "state")));
    }
    json_decref(body);
    return ended;
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
        bool has_state = xctl_get(body, "state") != NULL;
        json_decref(body);
        if (!x->follow) break;
        if (!has_state) ended = job_ended(x, job); /* the coordinator's log_tail has no state */
        if (ended >= 0) break;
        struct timespec ts = {(time_t)x->interval_s, (long)((x->interval_s - (double)(time_t)x->interval_s) * 1e9)};
        nanosleep(&ts, NULL);
    }
    json_decref(printed);
    return rc;
}
