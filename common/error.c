#include "xd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int xd_fail(xd_err *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int xd_wrap(xd_err *e, const char *fmt, ...) {
    if (!e) return -1;
    char prefix[XD_ERR_MAX], old[XD_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    old[sizeof old - 1] = 0;
    size_t n = strlen(prefix);
    if (n > sizeof e->msg - 3) n = sizeof e->msg - 3;
    memcpy(e->msg, prefix, n);
    memcpy(e->msg + n, ": ", 2);
    size_t rest = sizeof e->msg - n - 3;
    size_t m = strlen(old);
    if (m > rest) m = rest;
    memcpy(e->msg + n + 2, old, m);
    e->msg[n + 2 + m] = 0;
    return -1;
}

static int log_level = -1;

void xd_log(int level, const char *fmt, ...) {
    if (log_level < 0) {
        const char *s = getenv("XD_LOG");
        log_level = XD_LOG_INFO;
        if (s) {
            if (!strcmp(s, "error")) log_level = XD_LOG_ERROR;
            else if (!strcmp(s, "warn")) log_level = XD_LOG_WARN;
            else if (!strcmp(s, "debug")) log_level = XD_LOG_DEBUG;
        }
    }
    if (level > log_level) return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "[%s] ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void *xd_malloc(size_t n, xd_err *e) {
    void *p = malloc(n ? n : 1);
    if (!p) xd_fail(e, "out of memory allocating %zu bytes", n);
    return p;
}

void *xd_calloc(size_t count, size_t size, xd_err *e) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) xd_fail(e, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
