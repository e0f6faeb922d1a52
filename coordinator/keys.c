/* coordinator/keys.c — security at the socket: which endpoints may go without keys, the CURVE
 * server key, and the ZAP handler that admits only the public keys in DIR/authorized/.
 * Key files are Z85 text (40 characters, as zmq_curve_keypair writes them), one key a file:
 *   DIR/server.key   the coordinator's secret key (mode 0600: refused when others can read it)
 *   DIR/server.pub   its public key (clients and workers need it to connect)
 *   DIR/authorized/NAME.pub   one admitted client or worker each; NAME is its ZAP user id */
#include "internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#define KEYS_MAX 4096

typedef struct authorized_key {
    uint8_t key[32];
    char name[128];
} authorized_key;

struct coord_keys {
    char dir[PATH_MAX];
    char secret[41];
    authorized_key *keys;
    int n;
    struct timespec authorized_mtime;
};

bool coord_endpoint_is_local(const char *ep) {
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9)) return true;
    if (strncmp(ep, "tcp://", 6)) return false;
    const char *host = ep + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host) return false;
    char h[256];
    size_t n = (size_t)(colon - host);
    if (n >= sizeof h) return false;
    memcpy(h, host, n);
    h[n] = 0;
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        memmove(h, h + 1, n - 2);
        h[n - 2] = 0;
    }
    if (!strcmp(h, "localhost") || !strcmp(h, "lo") || !strcmp(h, "::1")) return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, h, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    return false;
}

/* A Z85 key file: the first line, trimmed, must be 40 characters that decode to 32 bytes. */
static int read_key(const char *path, char z85[41], uint8_t raw[32], xd_err *e) {
    char *text;
    size_t len;
    if (xd_read_file(path, 4096, &text, &len, e)) return -1;
    char *s = text;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t k = 0;
    while (s[k] && s[k] != '\n' && s[k] != '\r' && s[k] != ' ' && s[k] != '\t') k++;
    int rc = 0;
    if (k != 40) {
        rc = xd_fail(e, "%s: not a Z85 key (expected 40 characters, got %zu)", path, k);
    } else {
        memcpy(z85, s, 40);
        z85[40] = 0;
        if (!zmq_z85_decode(raw, z85)) rc = xd_fail(e, "%s: not a Z85 key", path);
    }
    free(text);
    return rc;
}

static int load_authorized(coord_keys *k, bool strict, xd_err *e) {
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/authorized", k->dir);
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        return xd_fail(e, "%s: missing: it holds the public keys (NAME.pub) of admitted clients and workers", dir);
    DIR *d = opendir(dir);
    if (!d) return xd_fail(e, "%s: cannot list", dir);
    authorized_key *keys = calloc(KEYS_MAX, sizeof *keys);
    if (!keys) {
        closedir(d);
        return xd_fail(e, "out of memory");
    }
    int n = 0, rc = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) && rc == 0) {
        size_t len = strlen(ent->d_name);
        if (len < 5 || strcmp(ent->d_name + len - 4, ".pub")) continue;
        if (n == KEYS_MAX) {
            rc = xd_fail(e, "%s: more than %d keys", dir, KEYS_MAX);
            break;
        }
        char path[PATH_MAX + 300], z85[41];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        xd_err ke = {{0}};
        if (read_key(path, z85, keys[n].key, &ke)) {
            if (strict) rc = xd_fail(e, "%s", ke.msg);
            else xd_warn("xcoord: skipping %s", ke.msg);
            continue;
        }
        snprintf(keys[n].name, sizeof keys[n].name, "%.*s", (int)(len - 4), ent->d_name);
        n++;
    }
    closedir(d);
    if (rc) {
        free(keys);
        return -1;
    }
    free(k->keys);
    k->keys = keys;
    k->n = n;
    k->authorized_mtime = sb.st_mtim;
    return 0;
}

int coord_keys_load(const char *dir, coord_keys **out, xd_err *e) {
    *out = NULL;
    coord_keys *k = calloc(1, sizeof *k);
    if (!k) return xd_fail(e, "out of memory");
    snprintf(k->dir, sizeof k->dir, "%s", dir);
    char path[PATH_MAX + 16], pub_z85[41], derived[41];
    uint8_t raw[32];
    struct stat sb;
    snprintf(path, sizeof path, "%s/server.key", dir);
    int rc = 0;
    if (stat(path, &sb)) rc = xd_fail(e, "%s: missing (xctl keygen writes it)", path);
    else if (sb.st_mode & 077) rc = xd_fail(e, "%s: readable by others (mode %o): chmod 600 it", path, sb.st_mode & 0777);
    else rc = read_key(path, k->secret, raw, e);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/server.pub", dir);
        rc = read_key(path, pub_z85, raw, e);
    }
    if (rc == 0 && (zmq_curve_public(derived, k->secret) || strcmp(derived, pub_z85)))
        rc = xd_fail(e, "%s/server.pub is not the public key of server.key", dir);
    if (rc == 0) rc = load_authorized(k, true, e);
    if (rc) {
        coord_keys_free(k);
        return -1;
    }
    *out = k;
    return 0;
}

void coord_keys_free(coord_keys *k) {
    if (!k) return;
    memset(k->secret, 0, sizeof k->secret);
    free(k->keys);
    free(k);
}

const char *coord_keys_server_secret(const coord_keys *k) { return k->secret; }

static const authorized_key *find_key(const coord_keys *k, const uint8_t *key) {
    for (int i = 0; i < k->n; i++)
        if (!memcmp(k->keys[i].key, key, 32)) return &k->keys[i];
    return NULL;
}

/* Keys added or removed while the coordinator runs count from the next connection: the
 * directory is reread when its mtime changed (one stat per handshake). */
static const authorized_key *lookup(coord_keys *k, const uint8_t *key) {
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/authorized", k->dir);
    struct stat sb;
    if (stat(dir, &sb) == 0 && (sb.st_mtim.tv_sec != k->authorized_mtime.tv_sec ||
                                sb.st_mtim.tv_nsec != k->authorized_mtime.tv_nsec)) {
        xd_err e = {{0}};
        if (load_authorized(k, false, &e)) xd_warn("xcoord: %s", e.msg);
        else xd_info("xcoord: reloaded %s: %d keys", dir, k->n);
    }
    return find_key(k, key);
}

/* ZAP (RFC 27): version, request id, domain, address, identity, mechanism, credentials... in;
 * version, request id, status code, status text, user id, metadata out. */
void coord_zap_serve(coord *c) {
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(c->zap, ZMQ_EVENTS, &events, &sz) || !(events & ZMQ_POLLIN)) return;
        zmq_msg_t frames[8];
        int n = 0, more = 1;
        bool broken = false;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c->zap, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                broken = true;
                break;
            }
            more = zmq_msg_more(&m);
            if (n < 8) frames[n++] = m;
            else zmq_msg_close(&m);
        }
        if (broken && n == 0) return;
        const char *status = "500", *text = "malformed ZAP request", *user = "";
        char address[64] = "";
        if (n >= 7 && zmq_msg_size(&frames[5]) == 5 && !memcmp(zmq_msg_data(&frames[5]), "CURVE", 5) &&
            zmq_msg_size(&frames[6]) == 32) {
            snprintf(address, sizeof address, "%.*s", (int)(zmq_msg_size(&frames[3]) < 60 ? zmq_msg_size(&frames[3]) : 60),
                     (const char *)zmq_msg_data(&frames[3]));
            const authorized_key *a = c->keys ? lookup(c->keys, zmq_msg_data(&frames[6])) : NULL;
            if (a) {
                status = "200", text = "OK", user = a->name;
            } else {
                status = "400", text = "key not authorized";
                uint64_t now = coord_mono_ms();
                if (now - c->refused_logged_at >= 1000) {
                    char z85[41];
                    zmq_z85_encode(z85, zmq_msg_data(&frames[6]), 32);
                    xd_warn("xcoord: refused a connection from %s: key %s is not in %s/authorized", address, z85,
                            c->keys->dir);
                    c->refused_logged_at = now;
                }
            }
        } else if (n >= 6) {
            status = "400", text = "only CURVE is accepted";
        }
        /* the reply: version and request id echo the request */
        const char *version = "1.0";
        zmq_send(c->zap, version, 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        if (n >= 2) zmq_send(c->zap, zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        else zmq_send(c->zap, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(c->zap, status, 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(c->zap, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(c->zap, user, strlen(user), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(c->zap, "", 0, ZMQ_DONTWAIT);
        for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
    }
}
