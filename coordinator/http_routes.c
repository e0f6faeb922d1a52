/* coordinator/http_routes.c — what the dashboard answers (docs/dashboard.md):
 *   /healthz                      "ok", no token
 *   /?token=T                     sets the cookie, redirects to /
 *   / /app.js /app.css /static/chart.min.js   the embedded page
 *   /api/runs /api/runs/ID /api/jobs/ID /api/workers /api/events?run=ID&since=N   JSON
 *   /api/stream                   Server-Sent Events: "change" when the last event id moves
 *   /metrics                      Prometheus text
 * Everything but /healthz checks the Host and Origin headers first, then the token. */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ID 256

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (plus as space when form); -1 on a bad escape, a NUL, or when
 * it does not fit. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap, bool form) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n) return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        } else if (form && ch == '+') {
            ch = ' ';
        }
        if (ch == 0 || o + 1 >= cap) return -1;
        out[o++] = ch;
    }
    out[o] = 0;
    return (int)o;
}

/* Ids are the coordinator's: run-7-3fa2, run-7-3fa2/align-0. */
static bool id_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 200 || strstr(s, "..") || s[0] == '/') return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("._:@+~/-", *p)))
            return false;
    return true;
}

/* The value of key in a query string (decoded); 0 absent, 1 found, -1 malformed. */
static int query_get(const char *q, const char *key, char *out, size_t cap) {
    size_t kl = strlen(key);
    while (q && *q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        size_t name_len = eq ? (size_t)(eq - q) : len;
        if (name_len == kl && !memcmp(q, key, kl)) {
            const char *v = eq ? eq + 1 : q + len;
            size_t vl = eq ? len - name_len - 1 : 0;
            return pct_decode(v, vl, out, cap, true) < 0 ? -1 : 1;
        }
        q += len;
        if (*q == '&') q++;
    }
    return 0;
}

static void send_json(coord_http_conn *c, char *text, int status) {
    if (!text) {
        coord_http_send_error(c, status >= 400 ? status : 500,
                              status == 404 ? "not found" : "the coordinator could not answer (see its log)");
        return;
    }
    coord_http_send(c, status, "application/json", NULL, text, strlen(text), false, false);
    free(text);
}

static const char unauthorized_page[] =
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>xdistill: token needed</title></head>"
    "<body style=\"font-family:sans-serif;margin:3em\"><h1>This dashboard needs its token</h1>"
    "<p>Open the URL that <code>xcoord</code> printed when it started "
    "(<code>http://HOST:PORT/?token=&hellip;</code>), or take the token from <code>dashboard.token</code> "
    "in the coordinator's directory and open <code>/?token=TOKEN</code>.</p></body></html>\n";

/* ---- the embedded files ---- */

void coord_http_assets_init(coord_http *h) {
    for (int i = 0; i < coord_http_n_assets && i < (int)(sizeof h->etags / sizeof h->etags[0]); i++) {
        char hex[65];
        xd_sha256_hex(coord_http_assets[i].data, *coord_http_assets[i].len, hex);
        snprintf(h->etags[i], sizeof h->etags[i], "\"%.16s\"", hex);
    }
}

static bool send_asset(coord_http_conn *c, const char *path) {
    const coord_http *h = c->srv;
    for (int i = 0; i < coord_http_n_assets; i++) {
        const coord_http_asset *a = &coord_http_assets[i];
        if (strcmp(a->path, path)) continue;
        const char *etag = i < (int)(sizeof h->etags / sizeof h->etags[0]) ? h->etags[i] : "";
        const char *inm = coord_http_header_get(c, "If-None-Match");
        char extra[512];
        snprintf(extra, sizeof extra, "ETag: %s\r\nCache-Control: no-cache\r\n%s", etag,
                 strncmp(a->content_type, "text/html", 9)
                     ? ""
                     : "Content-Security-Policy: default-src 'self'; img-src 'self' data:; style-src 'self'; "
                       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n");
        if (inm && *etag && strstr(inm, etag)) coord_http_send(c, 304, "", extra, NULL, 0, true, false);
        else coord_http_send(c, 200, a->content_type, extra, a->data, *a->len, true, false);
        return true;
    }
    return false;
}

/* ---- the routes ---- */

static void route_api(coord_http_conn *c, const char *path, const char *query) {
    coord_http *h = c->srv;
    const coord_http_api *api = &h->api;
    char id[MAX_ID];
    if (!strcmp(path, "/api/runs")) {
        send_json(c, api->runs(api->ctx), 200);
    } else if (!strncmp(path, "/api/runs/", 10) || !strncmp(path, "/api/jobs/", 10)) {
        bool run = path[5] == 'r';
        if (pct_decode(path + 10, strlen(path + 10), id, sizeof id, false) < 0 || !id_ok(id)) {
            coord_http_send_error(c, 400, run ? "bad run id" : "bad job id");
            return;
        }
        int status = 200;
        char *text = run ? api->run(api->ctx, id, &status) : api->job(api->ctx, id, &status);
        if (status < 200 || status > 599) status = 500;
        if (!text && status == 200) status = 500;
        if (!text && status == 404) {
            char msg[MAX_ID + 32];
            snprintf(msg, sizeof msg, "no %s \"%s\"", run ? "run" : "job", id);
            coord_http_send_error(c, 404, msg);
            return;
        }
        send_json(c, text, status);
    } else if (!strcmp(path, "/api/workers")) {
        send_json(c, api->workers(api->ctx), 200);
    } else if (!strcmp(path, "/api/events")) {
        char since_s[32] = "0";
        int has_run = query_get(query, "run", id, sizeof id), has_since = query_get(query, "since", since_s, sizeof since_s);
        char *end = NULL;
        long since = strtol(since_s, &end, 10);
        if (has_run < 0 || (has_run && *id && !id_ok(id)) || has_since < 0 || !*since_s || *end || since < 0) {
            coord_http_send_error(c, 400, "expected /api/events?run=RUN_ID&since=N (N >= 0)");
            return;
        }
        send_json(c, api->events(api->ctx, has_run && *id ? id : NULL, since), 200);
    } else if (!strcmp(path, "/api/stream")) {
        if (coord_http_is_head(c))
            coord_http_send(c, 200, "text/event-stream", NULL, NULL, 0, true, true);
        else
            coord_http_start_stream(c);
    } else {
        coord_http_send_error(c, 404, "no such route: see docs/dashboard.md");
    }
}

void coord_http_route(coord_http_conn *c) {
    coord_http *h = c->srv;
    const char *url = coord_http_url_of(c);
    if (url[0] != '/') {
        coord_http_send_error(c, 400, "the request target must be a path");
        return;
    }
    char path[2048];
    size_t pl = strcspn(url, "?#");
    if (pl >= sizeof path) {
        coord_http_send_error(c, 404, "no such route");
        return;
    }
    memcpy(path, url, pl);
    path[pl] = 0;
    const char *query = url[pl] == '?' ? url + pl + 1 : "";

    if (!strcmp(path, "/healthz")) {
        coord_http_send(c, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3, true, false);
        return;
    }
    const char *host = coord_http_header_get(c, "Host"), *origin = coord_http_header_get(c, "Origin");
    int hosts = 0;
    for (int i = 0; i < c->n_headers; i++) hosts += !strcasecmp(c->head + c->headers[i].name, "Host");
    if (hosts > 1) {
        coord_http_send_error(c, 400, "more than one Host header");
        return;
    }
    if (!coord_http_host_ok(h, host)) {
        coord_http_send_error(c, 403, "this Host is not the dashboard's (a DNS-rebinding guard): use the address it printed");
        return;
    }
    if (origin && !coord_http_origin_ok(h, origin, host)) {
        coord_http_send_error(c, 403, "cross-origin requests are refused");
        return;
    }
    bool page = !strcmp(path, "/") || !strcmp(path, "/index.html");
    char token[COORD_HTTP_TOKEN_HEX + 8];
    int has_token = page ? query_get(query, "token", token, sizeof token) : 0;
    if (has_token) { /* /?token=T: trade it for the cookie and drop it from the address bar */
        if (has_token < 0 || !coord_http_token_eq(h, token, strlen(token))) {
            coord_http_send(c, 401, "text/html; charset=utf-8", NULL, unauthorized_page, sizeof unauthorized_page - 1, true,
                            false);
            return;
        }
        char extra[256];
        snprintf(extra, sizeof extra, "Set-Cookie: %s=%s; Path=/; HttpOnly; SameSite=Strict\r\nLocation: /\r\n",
                 h->cookie_name, h->token);
        coord_http_send(c, 302, "text/plain; charset=utf-8", extra, "see /\n", 6, true, false);
        return;
    }
    if (!coord_http_authorized(c)) {
        if (page)
            coord_http_send(c, 401, "text/html; charset=utf-8", "WWW-Authenticate: Bearer realm=\"xdistill\"\r\n",
                            unauthorized_page, sizeof unauthorized_page - 1, true, false);
        else
            coord_http_send_error(c, 401, "the dashboard's token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN");
        return;
    }
    if (page) {
        send_asset(c, "/");
        return;
    }
    if (!strncmp(path, "/api/", 5)) {
        route_api(c, path, query);
        return;
    }
    if (!strcmp(path, "/metrics")) {
        char *text = h->api.prometheus(h->api.ctx);
        if (!text) {
            coord_http_send_error(c, 500, "the coordinator could not answer (see its log)");
            return;
        }
        coord_http_send(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, strlen(text), false, false);
        free(text);
        return;
    }
    if (!send_asset(c, path)) coord_http_send_error(c, 404, "no such route: see docs/dashboard.md");
}
