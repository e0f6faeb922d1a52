/* keygen DIR [--name NAME] [--force]: a CURVE keypair from zmq_curve_keypair, as DIR/NAME.key
 * (the secret, mode 0600) and DIR/NAME.pub (mode 0644), each 40 characters of Z85 and a newline.
 * Prints the public key. Refuses to replace an existing key without --force. */
#include "xctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* Written to a temporary name with its mode, then renamed over path. */
static int write_key(const char *path, const char *key, mode_t mode, bool force) {
    char tmp[1200], line[48];
    if (!force && access(path, F_OK) == 0) {
        fprintf(stderr, "xctl keygen: %s exists (--force to replace it)\n", path);
        return XCTL_FAIL;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "xctl keygen: %s: %s\n", tmp, strerror(errno));
        return XCTL_FAIL;
    }
    int n = snprintf(line, sizeof line, "%s\n", key);
    bool ok = fchmod(fd, mode) == 0 && write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, "xctl keygen: %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return XCTL_FAIL;
    }
    return XCTL_OK;
}

int xctl_cmd_keygen(xctl *x) {
    const char *dir = x->pos[0], *name = x->name ? x->name : "client";
    size_t n = strlen(name);
    bool plain = n > 0 && n <= 64;
    for (const char *c = name; *c && plain; c++)
        plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_';
    if (!plain) {
        fprintf(stderr, "xctl keygen: --name must be a plain name (letters, digits, - and _), like server, worker, client\n");
        return XCTL_USAGE;
    }
    if (!zmq_has("curve")) {
        fprintf(stderr, "xctl keygen: this libzmq was built without CURVE security\n");
        return XCTL_FAIL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "xctl keygen: %s: cannot create: %s\n", dir, strerror(errno));
        return XCTL_FAIL;
    }
    char pub[41], sec[41], pk[1100], sk[1100];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "xctl keygen: zmq_curve_keypair: %s\n", zmq_strerror(zmq_errno()));
        return XCTL_FAIL;
    }
    snprintf(sk, sizeof sk, "%s/%s.key", dir, name);
    snprintf(pk, sizeof pk, "%s/%s.pub", dir, name);
    if (!x->force && (access(sk, F_OK) == 0 || access(pk, F_OK) == 0)) {
        fprintf(stderr, "xctl keygen: %s exists (--force to replace it)\n", access(sk, F_OK) == 0 ? sk : pk);
        return XCTL_FAIL;
    }
    int rc = write_key(sk, sec, 0600, x->force);
    if (rc == XCTL_OK) rc = write_key(pk, pub, 0644, x->force);
    memset(sec, 0, sizeof sec);
    if (rc) return rc;
    if (x->json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "name", name, "public", pub, "secret_file", sk, "public_file", pk);
        xctl_print_json(o);
        json_decref(o);
    } else {
        printf("%s\n", pub);
    }
    return XCTL_OK;
}
