/* common/xd.h — what every part of xdistill shares: errors, logging, files, checked arithmetic,
 * number formats, SHA-256. This is the only header of common/. */
#ifndef XD_COMMON_H
#define XD_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XD_ERR_MAX 512

/* An error message the caller can print. Functions return 0 on success and a negative value on
 * failure, after filling the message; they never abort on bad input from outside. */
typedef struct xd_err {
    char msg[XD_ERR_MAX];
} xd_err;

#if defined(__GNUC__)
#define XD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define XD_PRINTF(a, b)
#endif

/* Fills e (when not NULL) and returns -1, so `return xd_fail(e, ...)` reads naturally. */
int xd_fail(xd_err *e, const char *fmt, ...) XD_PRINTF(2, 3);
/* Prefixes an existing message: "context: old message". Returns -1. */
int xd_wrap(xd_err *e, const char *fmt, ...) XD_PRINTF(2, 3);

/* Logging to stderr. Level from XD_LOG (error, warn, info, debug); default info. */
enum { XD_LOG_ERROR = 0, XD_LOG_WARN = 1, XD_LOG_INFO = 2, XD_LOG_DEBUG = 3 };
void xd_log(int level, const char *fmt, ...) XD_PRINTF(2, 3);
#define xd_info(...) xd_log(XD_LOG_INFO, __VA_ARGS__)
#define xd_warn(...) xd_log(XD_LOG_WARN, __VA_ARGS__)
#define xd_debug(...) xd_log(XD_LOG_DEBUG, __VA_ARGS__)

/* Allocation that reports failure as an error instead of returning NULL silently. */
void *xd_malloc(size_t n, xd_err *e);
void *xd_calloc(size_t count, size_t size, xd_err *e);

/* Checked arithmetic: return false on overflow. */
static inline bool xd_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool xd_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* A read-only memory map of a whole file. */
typedef struct xd_mapped_file {
    const uint8_t *data;
    size_t size;
} xd_mapped_file;
int xd_map_file(const char *path, xd_mapped_file *out, xd_err *e);
void xd_unmap_file(xd_mapped_file *m);

/* Reads a whole (small) file into a NUL-terminated buffer; refuses files over max_bytes. */
int xd_read_file(const char *path, size_t max_bytes, char **out, size_t *len, xd_err *e);
/* Writes a file atomically: temporary name, fsync, rename, fsync of the directory. */
int xd_write_file_atomic(const char *path, const void *data, size_t len, xd_err *e);
bool xd_is_dir(const char *path);
bool xd_file_exists(const char *path);
/* dir + "/" + name into out (size cap); error when it does not fit. */
int xd_path_join(char *out, size_t cap, const char *dir, const char *name, xd_err *e);

/* Number formats. */
float xd_f16_to_f32(uint16_t h);
uint16_t xd_f32_to_f16(float f);
float xd_bf16_to_f32(uint16_t h);
uint16_t xd_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

/* Monotonic clock in seconds. */
double xd_now(void);

/* Deterministic random numbers (splitmix64 seeded xoshiro256**). */
typedef struct xd_rng {
    uint64_t s[4];
} xd_rng;
void xd_rng_seed(xd_rng *r, uint64_t seed);
uint64_t xd_rng_next(xd_rng *r);
double xd_rng_uniform(xd_rng *r); /* [0, 1) */
float xd_rng_normal(xd_rng *r);

/* SHA-256 (FIPS 180-4), incrementally or in one call; the checksum of token shards. */
typedef struct xd_sha256_ctx {
    uint32_t h[8];
    uint64_t total; /* bytes hashed */
    uint8_t buf[64];
    size_t used;
} xd_sha256_ctx;
void xd_sha256_init(xd_sha256_ctx *c);
void xd_sha256_update(xd_sha256_ctx *c, const void *data, size_t len);
void xd_sha256_final(xd_sha256_ctx *c, uint8_t out[32]);
/* The digest of data as 64 lowercase hex digits + NUL. */
void xd_sha256_hex(const void *data, size_t len, char out[65]);
/* n bytes as 2n lowercase hex digits + NUL. */
void xd_hex(const uint8_t *bytes, size_t n, char *out);

#endif
