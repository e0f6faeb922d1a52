/* coordinator/http_auth.c — who may use the dashboard: a random token per start (in
 * DIR/dashboard.token, mode 0600, and in the URL that is printed), presented as a Bearer token or
 * as the cookie that opening /?token=... sets; and which Host and Origin headers are this server,
 * so that a page of another site that rebinds its DNS name to this address gets nothing. */
#include "http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int read_random(uint8_t *out, size_t n, xd_err *e) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return xd_fail(e, "dashboard: /dev/urandom: %s", strerror(errno));
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, out + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            return xd_fail(e, "dashboard: reading /dev/urandom failed");
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

/* DIR/dashboard.token, created 0600 under a temporary name and renamed into place. */
static int write_token_file(const char *dir, const char *token, xd_err *e) {
    char path[4096], tmp[4200];
    if (xd_path_join(path, sizeof path, dir, "dashboard.token", e)) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return xd_fail(e, "dashboard: cannot write %s: %s", tmp, strerror(errno));
    char line[COORD_HTTP_TOKEN_HEX + 2];
    snprintf(line, sizeof line, "%s\n", token);
    size_t len = strlen(line), done = 0;
    int rc = fchmod(fd, 0600);
    while (rc == 0 && done < len) {
        ssize_t w = write(fd, line + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) rc = -1;
        else done += (size_t)w;
    }
    if (rc == 0) rc = fsync(fd);
    int err = errno;
    if (close(fd) && rc == 0) rc = -1, err = errno;
    if (rc == 0 && rename(tmp, path)) rc = -1, err = errno;
    if (rc) {
        unlink(tmp);
        return xd_fail(e, "dashboard: cannot write %s: %s", path, strerror(err));
    }
    return 0;
}

int coord_http_token_init(coord_http *h, const char *token_dir, xd_err *e) {
    uint8_t raw[COORD_HTTP_TOKEN_HEX / 2];
    if (read_random(raw, sizeof raw, e)) return -1;
    xd_hex(raw, sizeof raw, h->token);
    memset(raw, 0, sizeof raw);
    return token_dir ? write_token_file(token_dir, h->token, e) : 0;
}

bool coord_http_token_eq(const coord_http *h, const char *a, size_t len) {
    if (len != COORD_HTTP_TOKEN_HEX) return false; /* the length is no secret */
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < COORD_HTTP_TOKEN_HEX; i++) diff |= (unsigned char)(a[i] ^ h->token[i]);
    return diff == 0;
}

/* "name:port", "[v6]:port", "name" (port -1). The name is copied without brackets. */
static bool split_authority(const char *s, char *name, size_t cap, long *port) {
    const char *end;
    size_t n;
    if (s[0] == '[') {
        end = strchr(s, ']');
        if (!end) return false;
        n = (size_t)(end - s - 1);
        s++;
        end++;
    } else {
        end = strchr(s, ':');
        if (!end) end = s + strlen(s);
        n = (size_t)(end - s);
    }
    if (n == 0 || n >= cap) return false;
    memcpy(name, s, n);
    name[n] = 0;
    if (!*end) {
        *port = -1;
        return true;
    }
    if (*end != ':' || !end[1] || strlen(end + 1) > 5) return false;
    long v = 0;
    for (const char *p = end + 1; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (*p - '0');
    }
    *port = v;
    return true;
}

static bool is_ip_literal(const char *name) {
    unsigned char buf[16];
    return uv_inet_pton(AF_INET, name, buf) == 0 || uv_inet_pton(AF_INET6, name, buf) == 0;
}

static bool is_loopback_name(const char *name) {
    if (!strcasecmp(name, "localhost") || !strcmp(name, "::1")) return true;
    unsigned char a[4];
    return uv_inet_pton(AF_INET, name, a) == 0 && a[0] == 127;
}

/* The machine's name, with or without its domain. */
static bool is_own_hostname(const coord_http *h, const char *name) {
    if (!h->hostname[0]) return false;
    if (!strcasecmp(name, h->hostname)) return true;
    size_t short_len = strcspn(h->hostname, ".");
    return strlen(name) == short_len && !strncasecmp(name, h->hostname, short_len);
}

bool coord_http_host_ok(const coord_http *h, const char *host) {
    char name[256];
    long port;
    if (!host || !split_authority(host, name, sizeof name, &port)) return false;
    /* A loopback name cannot be an attacker's DNS name; any port, so that a tunnel
     * (ssh -L 9000:localhost:PORT) keeps working. */
    if (is_loopback_name(name)) return true;
    bool known = !strcasecmp(name, h->host) || (h->wildcard && (is_ip_literal(name) || is_own_hostname(h, name)));
    return known && port == h->port;
}

bool coord_http_origin_ok(const coord_http *h, const char *origin, const char *host) {
    (void)h;
    /* same origin: the page that sends it was served by this very host:port */
    return host && !strncasecmp(origin, "http://", 7) && !strcasecmp(origin + 7, host);
}

static bool trimmed_token_eq(const coord_http *h, const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    return coord_http_token_eq(h, s, n);
}

bool coord_http_authorized(const coord_http_conn *c) {
    const coord_http *h = c->srv;
    size_t cookie_len = strlen(h->cookie_name);
    bool ok = false;
    for (int i = 0; i < c->n_headers; i++) {
        const char *name = c->head + c->headers[i].name;
        if (c->headers[i].value == UINT32_MAX) continue;
        const char *v = c->head + c->headers[i].value;
        if (!strcasecmp(name, "Authorization")) {
            if (!strncasecmp(v, "Bearer ", 7)) ok |= trimmed_token_eq(h, v + 7, strlen(v + 7));
        } else if (!strcasecmp(name, "Cookie")) {
            /* name=value; name=value */
            for (const char *p = v; *p;) {
                while (*p == ' ' || *p == ';') p++;
                size_t len = strcspn(p, ";");
                const char *eq = memchr(p, '=', len);
                if (eq && (size_t)(eq - p) == cookie_len && !memcmp(p, h->cookie_name, cookie_len))
                    ok |= trimmed_token_eq(h, eq + 1, len - cookie_len - 1);
                p += len;
            }
        }
    }
    return ok;
}
