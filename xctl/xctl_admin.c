/* control (cancel, retry, hold, release, drain, undrain), workers, events. */
#include "xctl.h"

#include <stdlib.h>
#include <string.h>

int xctl_cmd_control(xctl *x) {
    json_t *body;
    int rc = xctl_call(x, PROTO_CONTROL, json_pack("{s:s, s:s}", "action", x->command, "target", x->pos[0]), &body);
    if (rc) return rc;
    if (x->json) {
        xctl_print_json(body);
    } else {
        char buf[256];
        json_t *msg = json_is_string(body) ? body : xctl_get(body, "message|state");
        json_t *jobs = xctl_get(body, "jobs");
        if (json_is_array(jobs)) { /* the jobs the action changed */
            printf("%s %s: %zu job%s", x->command, x->pos[0], json_array_size(jobs), json_array_size(jobs) == 1 ? "" : "s");
            for (size_t i = 0; i < json_array_size(jobs); i++)
                printf("%s%s", i ? ", " : " (", xctl_text(json_array_get(jobs, i), buf, sizeof buf));
            printf("%s\n", json_array_size(jobs) ? ")" : "");
        } else {
            printf("%s %s: %s\n", x->command, x->pos[0], msg ? xctl_text(msg, buf, sizeof buf) : "ok");
        }
    }
    json_decref(body);
    return XCTL_OK;
}

/* "cpu", "cuda 0,1 (NVIDIA H100 80GB HBM3)", ... */
static const char *devices_cell(json_t *devs, char *buf, size_t cap) {
    if (!json_is_array(devs)) return xctl_text(devs, buf, cap);
    size_t at = 0;
    buf[0] = 0;
    const char *last_kind = NULL, *first_name = NULL;
    for (size_t i = 0; i < json_array_size(devs); i++) {
        json_t *d = json_array_get(devs, i);
        const char *kind = json_string_value(xctl_get(d, "kind"));
        json_t *index = xctl_get(d, "index");
        int n;
        if (kind && !strcmp(kind, "cpu")) {
            n = snprintf(buf + at, cap - at, "%scpu", at ? " " : "");
        } else {
            bool same = last_kind && kind && !strcmp(kind, last_kind);
            n = snprintf(buf + at, cap - at, "%s%lld", same ? "," : at ? " cuda " : "cuda ",
                         (long long)json_integer_value(index));
            if (!first_name) first_name = json_string_value(xctl_get(d, "name"));
        }
        if (n < 0 || (size_t)n >= cap - at) break;
        at += (size_t)n;
        last_kind = kind;
    }
    if (first_name && at + strlen(first_name) + 4 < cap) snprintf(buf + at, cap - at, " (%s)", first_name);
    return at ? buf : "-";
}

/* "1.2 s", from an age in seconds (heartbeat_age) or milliseconds (heartbeat_age_ms). */
static const char *age_cell(json_t *w, char *buf, size_t cap) {
    json_t *s = xctl_get(w, "last_heartbeat_age_s|heartbeat_age|heartbeat_age_s|age"),
           *ms = xctl_get(w, "heartbeat_age_ms|age_ms");
    if (json_is_number(s)) snprintf(buf, cap, "%.1f s", json_number_value(s));
    else if (json_is_number(ms)) snprintf(buf, cap, "%.1f s", json_number_value(ms) / 1000);
    else return xctl_time(xctl_get(w, "last_heartbeat|heartbeat"), buf, cap);
    return buf;
}

static const char *attempt_cell(json_t *w, char *buf, size_t cap) {
    json_t *a = xctl_get(w, "current_attempt|attempt|running");
    if (json_is_array(a)) a = json_array_get(a, 0);
    if (json_is_object(a)) a = xctl_get(a, "attempt|id");
    return xctl_text(a, buf, cap);
}

int xctl_cmd_workers(xctl *x) {
    json_t *body;
    int rc = xctl_call(x, PROTO_WORKERS, json_object(), &body);
    if (rc) return rc;
    json_t *list = xctl_list(body, "workers");
    if (x->json || !list) {
        xctl_print_json(body);
    } else if (!json_array_size(list)) {
        printf("no workers\n");
    } else {
        xctl_table t;
        xctl_table_init(&t, 6);
        const char *head[] = {"WORKER", "DEVICES", "HEARTBEAT", "ATTEMPT", "DRAINING", "STATE"};
        xctl_table_add(&t, head);
        for (size_t i = 0; i < json_array_size(list); i++) {
            json_t *w = json_array_get(list, i);
            char c0[128], c1[256], c2[64], c3[128], c4[16], c5[32];
            const char *row[] = {xctl_text(xctl_get(w, "name|worker|id"), c0, sizeof c0),
                                 devices_cell(xctl_get(w, "devices"), c1, sizeof c1), age_cell(w, c2, sizeof c2),
                                 attempt_cell(w, c3, sizeof c3), xctl_text(xctl_get(w, "draining"), c4, sizeof c4),
                                 xctl_text(xctl_get(w, "state|status"), c5, sizeof c5)};
            xctl_table_add(&t, row);
        }
        xctl_table_print(&t, stdout);
        xctl_table_free(&t);
    }
    json_decref(body);
    return XCTL_OK;
}

int xctl_cmd_events(xctl *x) {
    json_t *body;
    int rc = xctl_call(x, PROTO_EVENTS, json_pack("{s:s, s:i}", "run", x->pos[0], "since", x->since), &body);
    if (rc) return rc;
    json_t *list = xctl_list(body, "events");
    if (x->json || !list) {
        xctl_print_json(body);
    } else if (!json_array_size(list)) {
        printf("no events\n");
    } else {
        xctl_table t;
        xctl_table_init(&t, 5);
        const char *head[] = {"ID", "TIME", "JOB", "KIND", "MESSAGE"};
        xctl_table_add(&t, head);
        for (size_t i = 0; i < json_array_size(list); i++) {
            json_t *ev = json_array_get(list, i);
            char c0[32], c1[64], c2[128], c3[64], c4[1024];
            const char *row[] = {xctl_text(xctl_get(ev, "id"), c0, sizeof c0), xctl_time(xctl_get(ev, "time|at"), c1, sizeof c1),
                                 xctl_text(xctl_get(ev, "job"), c2, sizeof c2), xctl_text(xctl_get(ev, "kind|type"), c3, sizeof c3),
                                 xctl_text(xctl_get(ev, "message|msg"), c4, sizeof c4)};
            xctl_table_add(&t, row);
        }
        xctl_table_print(&t, stdout);
        xctl_table_free(&t);
    }
    json_decref(body);
    return XCTL_OK;
}
