/* coordinator/options.c — xcoord's command line. */
#include "internal.h"
#include "stages/args.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const char *const usage =
    "xcoord --listen tcp://HOST:PORT --db FILE --artifacts DIR [--keys DIR] [--heartbeat-ms 1000] [--lease-ms 5000]"
    " [--http HOST:PORT [--http-public]]";

/* Whether HOST:PORT ("127.0.0.1:8080", "[::1]:0", "localhost:8080") names a loopback address. */
static bool http_is_loopback(const char *host_port) {
    char host[256];
    const char *end;
    if (host_port[0] == '[') {
        host_port++;
        end = strchr(host_port, ']');
    } else {
        end = strrchr(host_port, ':');
    }
    if (!end || (size_t)(end - host_port) >= sizeof host) return false;
    snprintf(host, sizeof host, "%.*s", (int)(end - host_port), host_port);
    if (!strcmp(host, "localhost") || !strcmp(host, "::1")) return true;
    unsigned char a[4];
    return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
}

int coord_parse_args(int argc, char **argv, coord_options *o, xd_err *e) {
    *o = (coord_options){.heartbeat_ms = 1000, .lease_ms = 5000, .backoff_ms = 1000, .backoff_max_ms = 60000};
    arg_spec specs[] = {
        {"--listen", ARG_STRING, &o->listen, "endpoint to bind: tcp://HOST:PORT (PORT * picks one), ipc://PATH", false},
        {"--db", ARG_STRING, &o->db_path, "SQLite database (created when missing)", false},
        {"--artifacts", ARG_STRING, &o->artifacts, "directory jobs write into: ARTIFACTS/RUN_ID/JOB_NAME", false},
        {"--keys", ARG_STRING, &o->keys_dir, "CURVE keys: server.key, server.pub, authorized/*.pub (required off loopback)", false},
        {"--heartbeat-ms", ARG_INT, &o->heartbeat_ms, "how often workers heartbeat (default 1000)", false},
        {"--lease-ms", ARG_INT, &o->lease_ms, "attempt lease and worker silence limit (default 5000)", false},
        {"--backoff-ms", ARG_INT, &o->backoff_ms, "first retry delay, doubled per failure (default 1000)", false},
        {"--backoff-max-ms", ARG_INT, &o->backoff_max_ms, "cap of the retry delay (default 60000)", false},
        {"--http", ARG_STRING, &o->http, "serve the dashboard on HOST:PORT (PORT 0 picks one); token in the db's directory", false},
        {"--http-public", ARG_FLAG, &o->http_public, "let --http bind an address other hosts reach (0.0.0.0, a LAN IP)", false},
    };
    int n = (int)(sizeof specs / sizeof specs[0]);
    int rc = args_parse(specs, n, argc, argv, e);
    if (rc == 1) {
        args_usage(usage, specs, n);
        return 1;
    }
    if (rc) return -1;
    if (!o->listen) return xd_fail(e, "--listen is required (%s)", usage);
    if (!o->db_path) return xd_fail(e, "--db is required");
    if (!o->artifacts) return xd_fail(e, "--artifacts is required");
    if (o->heartbeat_ms < 10 || o->heartbeat_ms > 600000) return xd_fail(e, "--heartbeat-ms must be 10..600000");
    if (o->lease_ms < 2 * o->heartbeat_ms || o->lease_ms > 3600000)
        return xd_fail(e, "--lease-ms must be at least twice --heartbeat-ms (and at most 3600000)");
    if (o->backoff_ms < 1 || o->backoff_max_ms < o->backoff_ms || o->backoff_max_ms > 86400000)
        return xd_fail(e, "--backoff-ms must be >= 1 and --backoff-max-ms at least that");
    if (o->http_public && !o->http) return xd_fail(e, "--http-public needs --http HOST:PORT");
    if (o->http && !http_is_loopback(o->http) && !o->http_public)
        return xd_fail(e, "--http %s is reachable from other hosts: bind 127.0.0.1:PORT (and tunnel, ssh -L), or give "
                          "--http-public to serve the dashboard (token-protected, plain HTTP) off loopback", o->http);
    return 0;
}
