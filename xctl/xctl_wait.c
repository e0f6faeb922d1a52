/* wait RUN: polls the run until it ends. On a terminal, a live view redrawn each second (jobs,
 * states, progress bars); otherwise a line per job state change. Exit 0 when the run succeeded,
 * 1 when it failed or was cancelled, 3 on timeout or when the coordinator stops answering. */
#include "xctl.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XCTL_BAR 24

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static json_t *run_of(json_t *body) {
    json_t *r = xctl_get(body, "run");
    return json_is_object(r) ? r : body;
}

static json_t *jobs_of(json_t *body) {
    json_t *j = xctl_list(run_of(body), "jobs");
    return j ? j : xctl_list(body, "jobs");
}

/* The run's outcome: its state, or, without one, its jobs' (all ended: failed if any failed). */
static int run_end(json_t *body, const char **state) {
    *state = json_string_value(xctl_get(run_of(body), "state"));
    if (*state) return xctl_state_end(*state);
    json_t *jobs = jobs_of(body);
    int worst = 0;
    if (!json_array_size(jobs)) return -1;
    for (size_t i = 0; i < json_array_size(jobs); i++) {
        int e = xctl_state_end(json_string_value(xctl_get(json_array_get(jobs, i), "state")));
        if (e < 0) return -1;
        if (e > 0) worst = 1;
    }
    return worst;
}

static void bar(char *out, size_t cap, long step, long total) {
    if (step < 0 || total <= 0) {
        snprintf(out, cap, "%*s", XCTL_BAR + 2, "");
        return;
    }
    int fill = (int)(step >= total ? XCTL_BAR : (double)step / (double)total * XCTL_BAR);
    char b[XCTL_BAR + 1];
    for (int i = 0; i < XCTL_BAR; i++) b[i] = i < fill ? '#' : '-';
    b[XCTL_BAR] = 0;
    snprintf(out, cap, "[%s]", b);
}

/* The live view into a text buffer; returns its number of lines. */
static int draw(json_t *body, const char *id, double elapsed, char **text) {
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    if (!f) return 0;
    json_t *run = run_of(body), *jobs = jobs_of(body);
    char b0[64], b1[64];
    fprintf(f, "run %s  %s  %s  %ldm%02lds\n", id, xctl_text(xctl_get(run, "name"), b0, sizeof b0),
            xctl_text(xctl_get(run, "state"), b1, sizeof b1), (long)elapsed / 60, (long)elapsed % 60);
    xctl_table t;
    xctl_table_init(&t, 6);
    const char *head[] = {"  JOB", "STAGE", "STATE", "PROGRESS", "STEP", "LOSS"};
    xctl_table_add(&t, head);
    for (size_t i = 0; i < json_array_size(jobs); i++) {
        json_t *j = json_array_get(jobs, i), *m = xctl_metrics(j);
        long step, total;
        xctl_progress(j, &step, &total);
        char c0[140], c1[32], c2[32], c3[XCTL_BAR + 8], c4[48], c5[32], nm[128];
        snprintf(c0, sizeof c0, "  %s", xctl_text(xctl_get(j, "name|job|id"), nm, sizeof nm));
        bar(c3, sizeof c3, step, total);
        if (step < 0) snprintf(c4, sizeof c4, "-");
        else if (total > 0) snprintf(c4, sizeof c4, "%ld/%ld", step, total);
        else snprintf(c4, sizeof c4, "%ld", step);
        json_t *loss = xctl_get(j, "loss");
        const char *row[] = {c0, xctl_text(xctl_get(j, "stage"), c1, sizeof c1), xctl_text(xctl_get(j, "state"), c2, sizeof c2),
                             c3, c4, xctl_text(loss ? loss : xctl_get(m, "loss"), c5, sizeof c5)};
        xctl_table_add(&t, row);
        json_decref(m);
    }
    xctl_table_print(&t, f);
    xctl_table_free(&t);
    fclose(f);
    int lines = 0;
    for (char *c = *text; c && *c; c++)
        if (*c == '\n') lines++;
    return lines;
}

/* Without a terminal: one line per job whose state changed. */
static void changes(json_t *body, json_t *seen) {
    json_t *jobs = jobs_of(body);
    for (size_t i = 0; i < json_array_size(jobs); i++) {
        json_t *j = json_array_get(jobs, i);
        char b0[128], b1[32];
        const char *name = xctl_text(xctl_get(j, "name|job|id"), b0, sizeof b0);
        const char *state = xctl_text(xctl_get(j, "state"), b1, sizeof b1);
        const char *was = json_string_value(json_object_get(seen, name));
        if (was && !strcmp(was, state)) continue;
        char ts[32];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(ts, sizeof ts, "%H:%M:%S", &tm);
        printf("%s  %s: %s\n", ts, name, state);
        json_object_set_new(seen, name, json_string(state));
    }
    fflush(stdout);
}

int xctl_cmd_wait(xctl *x) {
    const char *id = x->pos[0];
    double limit = x->timeout_set ? x->timeout_s : 0; /* 0: no limit */
    if (x->timeout_s > 10 || !x->timeout_set) x->timeout_s = 10; /* each request */
    bool live = !x->json && isatty(STDOUT_FILENO);
    double start = xd_now();
    int prev_lines = 0;
    json_t *seen = json_object(), *body = NULL;
    int rc;
    const char *state = NULL;
    for (;;) {
        json_decref(body);
        if ((rc = xctl_call(x, PROTO_QUERY, json_pack("{s:s}", "run", id), &body)) != XCTL_OK) break;
        int end = run_end(body, &state);
        if (live) {
            char *text = NULL;
            int lines = draw(body, id, xd_now() - start, &text);
            if (prev_lines) printf("\033[%dA\033[J", prev_lines);
            fputs(text ? text : "", stdout);
            fflush(stdout);
            free(text);
            prev_lines = lines;
        } else if (!x->json) {
            changes(body, seen);
        }
        if (end >= 0) {
            if (x->json) xctl_print_json(body);
            else if (!live) xctl_print_run(body, stdout);
            if (end > 0) fprintf(stderr, "xctl wait: run %s %s\n", id, state ? state : "failed");
            rc = end == 0 ? XCTL_OK : XCTL_FAIL;
            break;
        }
        if (limit > 0 && xd_now() - start >= limit) {
            fprintf(stderr, "xctl wait: run %s is still %s after %g s\n", id, state ? state : "running", limit);
            rc = XCTL_UNREACHABLE;
            break;
        }
        double pause = x->interval_s;
        if (limit > 0 && start + limit - xd_now() < pause) pause = start + limit - xd_now();
        if (pause > 0) sleep_s(pause);
    }
    json_decref(body);
    json_decref(seen);
    return rc;
}
