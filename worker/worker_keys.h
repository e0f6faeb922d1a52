/* worker/worker_keys.h — CURVE keys on disk (docs/operations.md): DIR/NAME.key holds the secret
 * key and DIR/NAME.pub the public key, each 40 characters of Z85 on one line. xworker (NAME
 * worker) and xctl (NAME client) are CURVE clients of the coordinator, whose public key is
 * DIR/server.pub. */
#ifndef XD_WORKER_KEYS_H
#define XD_WORKER_KEYS_H

#include "common/xd.h"

#define WORKER_KEY_Z85 40

/* Reads one Z85 key (40 characters, surrounding whitespace allowed) into out (41 bytes). */
int worker_key_read(const char *path, char out[WORKER_KEY_Z85 + 1], xd_err *e);
/* Makes sock a CURVE client with DIR/NAME.key, DIR/NAME.pub and DIR/server.pub. */
int worker_keys_apply(void *sock, const char *dir, const char *name, xd_err *e);

#endif
