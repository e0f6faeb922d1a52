/* coordinator/http_internal.h — what the dashboard server's files share (http.h is the way in).
 * http.c: connections, parsing, limits, timeouts, writing; http_routes.c: what each route answers;
 * http_auth.c: the token, the Host/Origin checks, cookies. */
#ifndef XD_COORD_HTTP_INTERNAL_H
#define XD_COORD_HTTP_INTERNAL_H

#include "coordinator/http.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits: a client never holds more than these, and never holds the loop. */
#define COORD_HTTP_MAX_HEAD (16 * 1024)   /* request line + headers */
#define COORD_HTTP_MAX_HEADERS 64
#define COORD_HTTP_MAX_BODY (64 * 1024)   /* GET-only: a body is read and dropped, larger is 413 */
#define COORD_HTTP_MAX_CONNS 256          /* beyond: a new connection gets 503 and is closed */
#define COORD_HTTP_READ_BUF (16 * 1024)
#define COORD_HTTP_HEAD_TIMEOUT_MS 10000  /* from a request's first byte to its end */
#define COORD_HTTP_IDLE_TIMEOUT_MS 60000  /* a kept-alive connection with no request */
#define COORD_HTTP_WRITE_TIMEOUT_MS 30000 /* a response the client does not read */
#define COORD_HTTP_LINGER_MS 2000         /* after a closing response, to let the client read it */
#define COORD_HTTP_SSE_PING_MS 15000      /* a comment on /api/stream so proxies keep it open */
#define COORD_HTTP_SSE_MAX_QUEUE (256 * 1024) /* unread event bytes before a stream is dropped */
#define COORD_HTTP_NOTIFY_DELAY_MS 100    /* coalesces bursts of coord_http_notify */
#define COORD_HTTP_TOKEN_HEX 64           /* 32 random bytes */

typedef enum {
    COORD_CONN_IDLE,       /* between requests */
    COORD_CONN_READING,    /* a request has begun */
    COORD_CONN_RESPONDING, /* a response is being written; reading is paused */
    COORD_CONN_STREAM,     /* /api/stream: events until the client goes */
    COORD_CONN_LINGER,     /* response sent with Connection: close; draining the client's rest */
} coord_http_conn_state;

typedef struct coord_http_header {
    uint32_t name, value; /* offsets into conn->head, NUL-terminated */
} coord_http_header;

typedef struct coord_http_conn coord_http_conn;
struct coord_http_conn {
    uv_tcp_t tcp;
    coord_http *srv;
    coord_http_conn *prev, *next; /* srv->conns */
    coord_http_conn_state state;
    bool closing, peer_eof, keep_alive, reading;
    uint64_t deadline; /* loop ms; 0: none */
    http_parser parser;
    /* the request being read */
    char head[COORD_HTTP_MAX_HEAD + 2 * COORD_HTTP_MAX_HEADERS + 8]; /* url\0 name\0 value\0 ... */
    size_t head_len, head_bytes;
    int url_len; /* -1: none yet */
    coord_http_header headers[COORD_HTTP_MAX_HEADERS];
    int n_headers;
    int last_cb; /* 0 url, 1 header name, 2 header value */
    size_t body_bytes;
    int reject; /* an error status decided while parsing */
    /* unparsed input kept while a response is written (pipelining) */
    char rbuf[COORD_HTTP_READ_BUF];
    size_t rlen;
    /* writes */
    int writes_pending;
    uint64_t write_since;
    uint64_t last_ping;
    size_t linger_bytes;
};

struct coord_http {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep, notify_timer;
    int open_handles;
    bool stopping;
    coord_http_api api;
    coord_http_conn *conns;
    int n_conns;
    long last_event_id;
    /* access */
    char token[COORD_HTTP_TOKEN_HEX + 1];
    char host[256]; /* as configured, without brackets */
    bool wildcard;  /* bound to 0.0.0.0 or :: */
    bool ipv6;
    int port;
    char cookie_name[32];
    char url[512];
    char hostname[256]; /* gethostname(), for a wildcard bind */
    /* ETags of the embedded files */
    char etags[8][24];
};

/* A growable text buffer; oom is sticky. */
typedef struct coord_http_buf {
    char *data;
    size_t len, cap;
    bool oom;
} coord_http_buf;
void coord_http_buf_put(coord_http_buf *b, const void *s, size_t n);
void coord_http_buf_puts(coord_http_buf *b, const char *s);
void coord_http_buf_printf(coord_http_buf *b, const char *fmt, ...) XD_PRINTF(2, 3);

/* ---- http.c: what routes use to answer ---- */
const char *coord_http_header_get(const coord_http_conn *c, const char *name);
const char *coord_http_url_of(const coord_http_conn *c);
bool coord_http_is_head(const coord_http_conn *c);
/* Sends a complete response. extra: more header lines, each ending in \r\n (or NULL). body is
 * copied unless is_static (then it must outlive the write). Closes afterwards when close. */
void coord_http_send(coord_http_conn *c, int status, const char *content_type, const char *extra, const void *body,
                     size_t len, bool is_static, bool close);
/* {"error": message} with that status. */
void coord_http_send_error(coord_http_conn *c, int status, const char *message);
/* Turns the connection into an event stream: headers, the retry hint, the current event id. */
void coord_http_start_stream(coord_http_conn *c);
/* Writes an event to every stream. */
void coord_http_broadcast(coord_http *h, long last_event_id);
const char *coord_http_reason(int status);

/* ---- http_routes.c ---- */
void coord_http_route(coord_http_conn *c);
/* The embedded files (generated from coordinator/dashboard at build time). */
typedef struct coord_http_asset {
    const char *path, *content_type;
    const unsigned char *data;
    const size_t *len;
} coord_http_asset;
extern const coord_http_asset coord_http_assets[];
extern const int coord_http_n_assets;
void coord_http_assets_init(coord_http *h); /* ETags */

/* ---- http_auth.c ---- */
int coord_http_token_init(coord_http *h, const char *token_dir, xd_err *e);
/* true when a and the token are equal, in time independent of where they differ */
bool coord_http_token_eq(const coord_http *h, const char *a, size_t len);
/* Host: one of the names this server answers to (403 otherwise: DNS rebinding). */
bool coord_http_host_ok(const coord_http *h, const char *host);
/* Origin, when sent, must be this very server as the Host header names it. */
bool coord_http_origin_ok(const coord_http *h, const char *origin, const char *host);
/* The token from "Authorization: Bearer T" or the cookie. */
bool coord_http_authorized(const coord_http_conn *c);

#endif
