#include "worker_keys.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

int worker_key_read(const char *path, char out[WORKER_KEY_Z85 + 1], xd_err *e) {
    char *text;
    size_t len;
    if (xd_read_file(path, 4096, &text, &len, e)) return xd_wrap(e, "CURVE key");
    size_t a = 0, b = len;
    while (a < b && isspace((unsigned char)text[a])) a++;
    while (b > a && isspace((unsigned char)text[b - 1])) b--;
    int rc = 0;
    if (b - a != WORKER_KEY_Z85) {
        rc = xd_fail(e, "%s: expected a %d-character Z85 key, found %zu characters", path,
                     WORKER_KEY_Z85, b - a);
    } else {
        memcpy(out, text + a, WORKER_KEY_Z85);
        out[WORKER_KEY_Z85] = 0;
        uint8_t raw[32];
        if (!zmq_z85_decode(raw, out)) rc = xd_fail(e, "%s: not a Z85 key", path);
    }
    free(text);
    return rc;
}

int worker_keys_apply(void *sock, const char *dir, const char *name, xd_err *e) {
    char path[1200], secret[WORKER_KEY_Z85 + 1], public[WORKER_KEY_Z85 + 1], server[WORKER_KEY_Z85 + 1];
    if (!zmq_has("curve")) return xd_fail(e, "this libzmq was built without CURVE security");
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    if (worker_key_read(path, secret, e)) return -1;
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    if (worker_key_read(path, public, e)) return -1;
    char derived[WORKER_KEY_Z85 + 1];
    if (zmq_curve_public(derived, secret) == 0 && strcmp(derived, public) != 0)
        return xd_fail(e, "%s/%s.key and %s.pub are not one keypair", dir, name, name);
    snprintf(path, sizeof path, "%s/server.pub", dir);
    if (worker_key_read(path, server, e)) return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server, WORKER_KEY_Z85 + 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public, WORKER_KEY_Z85 + 1) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, WORKER_KEY_Z85 + 1))
        return xd_fail(e, "CURVE keys from %s: %s", dir, zmq_strerror(zmq_errno()));
    return 0;
}
