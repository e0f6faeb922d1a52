/* tests/integration/http_host.c — a test peer for the dashboard: the real server module
 * (coordinator/http.h) on a real libuv loop, with its data read from JSON files in a fixture
 * directory instead of the coordinator's database:
 *   runs.json, runs/RUN_ID.json, jobs/RUN_ID/JOB_NAME.json, workers.json, events.json, metrics.prom
 * Files are read on every request, so a test changes the fixture by rewriting them; SIGHUP calls
 * coord_http_notify (the coordinator calls it on every change). SIGINT/SIGTERM stop it cleanly.
 *
 * usage: http_host FIXTURE_DIR HOST:PORT TOKEN_DIR URL_FILE
 * It writes the URL to open (with the token) to URL_FILE once it listens. */
#include "coordinator/http.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct host {
    const char *dir;
    uv_loop_t loop;
    uv_signal_t sighup, sigint, sigterm;
    coord_http *http;
} host;

static char *read_fixture(host *h, const char *a, const char *b, const char *suffix) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%s%s", h->dir, a, b ? b : "", suffix);
    char *text = NULL;
    size_t len;
    xd_err e;
    if (xd_read_file(path, 64u << 20, &text, &len, &e)) return NULL;
    return text;
}

static char *api_runs(void *ctx) { return read_fixture(ctx, "runs.json", NULL, ""); }

static char *api_run(void *ctx, const char *id, int *status) {
    char *t = read_fixture(ctx, "runs/", id, ".json");
    if (!t) *status = 404;
    return t;
}

static char *api_job(void *ctx, const char *id, int *status) {
    char *t = read_fixture(ctx, "jobs/", id, ".json");
    if (!t) *status = 404;
    return t;
}

static char *api_workers(void *ctx) { return read_fixture(ctx, "workers.json", NULL, ""); }

static json_t *load_events(host *h) {
    char path[4096];
    snprintf(path, sizeof path, "%s/events.json", h->dir);
    json_t *all = json_load_file(path, 0, NULL);
    if (!json_is_array(all)) {
        json_decref(all);
        return NULL;
    }
    return all;
}

static char *api_events(void *ctx, const char *run, long since) {
    json_t *all = load_events(ctx);
    if (!all) return NULL;
    json_t *out = json_array();
    size_t i;
    json_t *ev;
    json_array_foreach(all, i, ev) {
        const char *r = json_string_value(json_object_get(ev, "run"));
        if (json_integer_value(json_object_get(ev, "id")) > since && (!run || (r && !strcmp(r, run))))
            json_array_append(out, ev);
    }
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    json_decref(all);
    return text;
}

static char *api_prometheus(void *ctx) { return read_fixture(ctx, "metrics.prom", NULL, ""); }

static long api_last_event_id(void *ctx) {
    json_t *all = load_events(ctx);
    long last = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(all, i, ev) {
        long id = (long)json_integer_value(json_object_get(ev, "id"));
        if (id > last) last = id;
    }
    json_decref(all);
    return last;
}

static void on_close(uv_handle_t *hd) { (void)hd; }

static void on_signal(uv_signal_t *s, int signum) {
    host *h = s->data;
    if (signum == SIGHUP) {
        coord_http_notify(h->http);
        return;
    }
    coord_http_stop(h->http);
    h->http = NULL;
    uv_close((uv_handle_t *)&h->sighup, on_close);
    uv_close((uv_handle_t *)&h->sigint, on_close);
    uv_close((uv_handle_t *)&h->sigterm, on_close);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: http_host FIXTURE_DIR HOST:PORT TOKEN_DIR URL_FILE\n");
        return 2;
    }
    host h = {.dir = argv[1]};
    uv_loop_init(&h.loop);
    coord_http_api api = {&h, api_runs, api_run, api_job, api_workers, api_events, api_prometheus, api_last_event_id};
    xd_err e = {{0}};
    if (coord_http_start(&h.loop, argv[2], argv[3], &api, &h.http, &e)) {
        fprintf(stderr, "http_host: %s\n", e.msg);
        uv_run(&h.loop, UV_RUN_DEFAULT);
        uv_loop_close(&h.loop);
        return 1;
    }
    const char *url = coord_http_url(h.http);
    char line[600];
    snprintf(line, sizeof line, "%s\n", url);
    if (xd_write_file_atomic(argv[4], line, strlen(line), &e)) {
        fprintf(stderr, "http_host: %s\n", e.msg);
        return 1;
    }
    uv_signal_init(&h.loop, &h.sighup);
    uv_signal_init(&h.loop, &h.sigint);
    uv_signal_init(&h.loop, &h.sigterm);
    h.sighup.data = h.sigint.data = h.sigterm.data = &h;
    uv_signal_start(&h.sighup, on_signal, SIGHUP);
    uv_signal_start(&h.sigint, on_signal, SIGINT);
    uv_signal_start(&h.sigterm, on_signal, SIGTERM);
    uv_run(&h.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&h.loop);
    if (rc) fprintf(stderr, "http_host: the loop still has handles: %s\n", uv_strerror(rc));
    return rc ? 1 : 0;
}
