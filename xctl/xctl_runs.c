/* submit and status: runs and their jobs. */
#include "xctl.h"

#include <stdlib.h>
#include <string.h>

int xctl_cmd_submit(xctl *x) {
    const char *path = x->pos[0];
    char *spec = NULL;
    size_t len = 0;
    xd_err e = {{0}};
    if (xd_read_file(path, PROTO_MAX_STRING, &spec, &len, &e)) {
        fprintf(stderr, "xctl submit: %s\n", e.msg);
        return XCTL_FAIL;
    }
    json_t *text = json_stringn(spec, len);
    free(spec);
    if (!text) {
        fprintf(stderr, "xctl submit: %s is not UTF-8 text\n", path);
        return XCTL_FAIL;
    }
    json_t *f = json_pack("{s:o}", "spec", text);
    if (x->name) json_object_set_new(f, "name", json_string(x->name));
    json_t *body;
    int rc = xctl_call(x, PROTO_SUBMIT, f, &body);
    if (rc) return rc;
    if (x->json) {
        xctl_print_json(body);
    } else {
        json_t *id = json_is_string(body) ? body : xctl_get(body, "run|id|run_id");
        char buf[64];
        if (id) printf("%s\n", xctl_text(id, buf, sizeof buf));
        else xctl_print_json(body);
    }
    json_decref(body);
    return XCTL_OK;
}

/* The jobs cell of a run in the list: "3/7 succeeded", a count, or counts by state. */
static const char *jobs_cell(json_t *jobs, char *buf, size_t cap) {
    if (json_is_array(jobs)) {
        size_t ok = 0;
        for (size_t i = 0; i < json_array_size(jobs); i++)
            if (xctl_state_end(json_string_value(xctl_get(json_array_get(jobs, i), "state"))) == 0) ok++;
        snprintf(buf, cap, "%zu/%zu succeeded", ok, json_array_size(jobs));
        return buf;
    }
    if (json_is_object(jobs)) {
        size_t at = 0;
        const char *k;
        json_t *v;
        buf[0] = 0;
        json_object_foreach(jobs, k, v) {
            char t[32];
            int n = snprintf(buf + at, cap - at, "%s%s=%s", at ? " " : "", k, xctl_text(v, t, sizeof t));
            if (n < 0 || (size_t)n >= cap - at) break;
            at += (size_t)n;
        }
        return buf;
    }
    return xctl_text(jobs, buf, cap);
}

static void print_runs(json_t *body) {
    json_t *runs = xctl_list(body, "runs");
    if (!runs) {
        xctl_print_json(body);
        return;
    }
    xctl_table t;
    xctl_table_init(&t, 5);
    const char *head[] = {"RUN", "NAME", "STATE", "CREATED", "JOBS"};
    xctl_table_add(&t, head);
    for (size_t i = 0; i < json_array_size(runs); i++) {
        json_t *r = json_array_get(runs, i);
        char b0[64], b1[64], b2[64], b3[64], b4[256];
        const char *row[] = {
            xctl_text(xctl_get(r, "id|run"), b0, sizeof b0), xctl_text(xctl_get(r, "name"), b1, sizeof b1),
            xctl_text(xctl_get(r, "state"), b2, sizeof b2), xctl_time(xctl_get(r, "created|created_at"), b3, sizeof b3),
            jobs_cell(xctl_get(r, "jobs"), b4, sizeof b4),
        };
        xctl_table_add(&t, row);
    }
    if (json_array_size(runs) == 0) printf("no runs\n");
    else xctl_table_print(&t, stdout);
    xctl_table_free(&t);
}

void xctl_print_run(json_t *body, FILE *f) {
    json_t *run = json_is_object(xctl_get(body, "run")) ? xctl_get(body, "run") : body;
    json_t *jobs = xctl_list(run, "jobs");
    if (!jobs) jobs = xctl_list(body, "jobs");
    char b0[64], b1[64], b2[64], b3[64];
    fprintf(f, "run %s  %s  %s  created %s\n", xctl_text(xctl_get(run, "id|run"), b0, sizeof b0),
            xctl_text(xctl_get(run, "name"), b1, sizeof b1), xctl_text(xctl_get(run, "state"), b2, sizeof b2),
            xctl_time(xctl_get(run, "created|created_at"), b3, sizeof b3));
    xctl_table t;
    xctl_table_init(&t, 6);
    const char *head[] = {"JOB", "STAGE", "STATE", "ATTEMPTS", "STEP", "LOSS"};
    xctl_table_add(&t, head);
    for (size_t i = 0; i < json_array_size(jobs); i++) {
        json_t *j = json_array_get(jobs, i), *att = xctl_get(j, "attempts");
        char c0[128], c1[32], c2[32], c3[32], c4[64], c5[32];
        long step, total;
        xctl_progress(j, &step, &total);
        if (step < 0) snprintf(c4, sizeof c4, "-");
        else if (total > 0) snprintf(c4, sizeof c4, "%ld/%ld", step, total);
        else snprintf(c4, sizeof c4, "%ld", step);
        json_t *m = xctl_metrics(j);
        json_t *loss = xctl_get(j, "loss");
        if (!loss) loss = xctl_get(m, "loss");
        if (json_is_array(att)) snprintf(c3, sizeof c3, "%zu", json_array_size(att));
        const char *row[] = {
            xctl_text(xctl_get(j, "name|job|id"), c0, sizeof c0), xctl_text(xctl_get(j, "stage"), c1, sizeof c1),
            xctl_text(xctl_get(j, "state"), c2, sizeof c2),
            json_is_array(att) ? c3 : xctl_text(att, c3, sizeof c3), c4, xctl_text(loss, c5, sizeof c5),
        };
        xctl_table_add(&t, row);
        json_decref(m);
    }
    if (json_array_size(jobs)) xctl_table_print(&t, f);
    else fprintf(f, "no jobs\n");
    xctl_table_free(&t);
}

int xctl_cmd_status(xctl *x) {
    json_t *f = json_object(), *body;
    if (x->n_pos) json_object_set_new(f, "run", json_string(x->pos[0]));
    int rc = xctl_call(x, PROTO_QUERY, f, &body);
    if (rc) return rc;
    if (x->json) xctl_print_json(body);
    else if (x->n_pos) xctl_print_run(body, stdout);
    else print_runs(body);
    json_decref(body);
    return XCTL_OK;
}
