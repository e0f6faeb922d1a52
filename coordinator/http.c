/* coordinator/http.c — the dashboard's HTTP/1.1 server on the coordinator's libuv loop: accepting
 * (at most COORD_HTTP_MAX_CONNS), parsing with http_parser under fixed limits, one request at a
 * time per connection (pipelined ones wait their turn), keep-alive, timeouts for slow and idle
 * clients, and the event streams of /api/stream. What each route answers is in http_routes.c.
 *
 * A connection only ever costs its own memory (one struct of ~33 KiB and the response being
 * written) and a bounded amount of work per read; nothing in here blocks the loop. */
#include "http_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- buffers ---- */

void coord_http_buf_put(coord_http_buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void coord_http_buf_puts(coord_http_buf *b, const char *s) { coord_http_buf_put(b, s, strlen(s)); }

void coord_http_buf_printf(coord_http_buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        coord_http_buf_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    coord_http_buf_put(b, big, (size_t)n);
    free(big);
}

/* ---- handles and their lifetimes ---- */

static void server_handle_closed(coord_http *h) {
    if (--h->open_handles == 0 && h->stopping) free(h);
}

static void on_server_handle_closed(uv_handle_t *hd) { server_handle_closed(hd->data); }

static void on_conn_closed(uv_handle_t *hd) {
    coord_http_conn *c = hd->data;
    coord_http *h = c->srv;
    free(c);
    server_handle_closed(h);
}

static void conn_close(coord_http_conn *c) {
    if (c->closing) return;
    c->closing = true;
    coord_http *h = c->srv;
    if (c->prev) c->prev->next = c->next;
    else h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    h->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static uint64_t now_ms(const coord_http_conn *c) { return uv_now(c->srv->loop); }

/* ---- reading ---- */

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *b) {
    coord_http_conn *c = hd->data;
    if (c->state == COORD_CONN_STREAM || c->state == COORD_CONN_LINGER) c->rlen = 0; /* read and dropped */
    b->base = c->rbuf + c->rlen;
    b->len = sizeof c->rbuf - c->rlen;
}

static void start_reading(coord_http_conn *c) {
    if (c->reading || c->closing) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

static void stop_reading(coord_http_conn *c) {
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

/* ---- the parser's callbacks: the request goes into c->head as url\0name\0value\0... ---- */

#define PIECE_NONE (-1)
#define PIECE_URL 0
#define PIECE_NAME 1
#define PIECE_VALUE 2
#define NO_VALUE UINT32_MAX

static int reject(coord_http_conn *c, int status) {
    if (!c->reject) c->reject = status;
    return -1;
}

static int on_message_begin(http_parser *p) {
    coord_http_conn *c = p->data;
    c->state = COORD_CONN_READING;
    c->deadline = now_ms(c) + COORD_HTTP_HEAD_TIMEOUT_MS;
    c->head_len = c->head_bytes = c->body_bytes = 0;
    c->url_len = -1;
    c->n_headers = 0;
    c->last_cb = PIECE_NONE;
    c->reject = 0;
    return 0;
}

static int head_piece(coord_http_conn *c, int kind, const char *at, size_t len) {
    c->head_bytes += len;
    if (kind != c->last_cb) {
        if (kind == PIECE_NAME) {
            if (c->n_headers == COORD_HTTP_MAX_HEADERS) return reject(c, 431);
            c->head_bytes += 4; /* ": " and CRLF */
        }
        if (c->head_bytes > COORD_HTTP_MAX_HEAD) return reject(c, 431);
        if (c->last_cb != PIECE_NONE) c->head[c->head_len++] = 0;
        if (kind == PIECE_URL) c->url_len = 0; /* it starts the head */
        if (kind == PIECE_NAME) {
            c->headers[c->n_headers].name = (uint32_t)c->head_len;
            c->headers[c->n_headers].value = NO_VALUE;
            c->n_headers++;
        } else if (kind == PIECE_VALUE) {
            if (c->n_headers == 0) return reject(c, 400);
            c->headers[c->n_headers - 1].value = (uint32_t)c->head_len;
        }
        c->last_cb = kind;
    }
    if (c->head_bytes > COORD_HTTP_MAX_HEAD) return reject(c, 431);
    memcpy(c->head + c->head_len, at, len);
    c->head_len += len;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    coord_http_conn *c = p->data;
    if (c->last_cb != PIECE_NONE && c->last_cb != PIECE_URL) return reject(c, 400);
    return head_piece(c, PIECE_URL, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
    return head_piece(p->data, PIECE_NAME, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    return head_piece(p->data, PIECE_VALUE, at, len);
}

static int on_headers_complete(http_parser *p) {
    coord_http_conn *c = p->data;
    if (c->last_cb == PIECE_NONE) return reject(c, 400);
    c->head[c->head_len++] = 0;
    if (c->url_len < 0) return reject(c, 400);
    c->url_len = (int)strlen(c->head);
    if (c->url_len == 0) return reject(c, 400);
    /* a body larger than the limit is refused before it is read; so is any method but GET/HEAD */
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && p->content_length > COORD_HTTP_MAX_BODY)
        return reject(c, 413);
    if (p->method != HTTP_GET && p->method != HTTP_HEAD) return reject(c, 405);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
    coord_http_conn *c = p->data;
    c->body_bytes += len;
    return c->body_bytes > COORD_HTTP_MAX_BODY ? reject(c, 413) : 0;
}

static int on_message_complete(http_parser *p) {
    http_parser_pause(p, 1); /* one request at a time: the rest waits in rbuf */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

const char *coord_http_url_of(const coord_http_conn *c) { return c->head; }

bool coord_http_is_head(const coord_http_conn *c) { return c->parser.method == HTTP_HEAD; }

const char *coord_http_header_get(const coord_http_conn *c, const char *name) {
    for (int i = 0; i < c->n_headers; i++)
        if (!strcasecmp(c->head + c->headers[i].name, name))
            return c->headers[i].value == NO_VALUE ? "" : c->head + c->headers[i].value;
    return NULL;
}

static const char *reject_message(int status, enum http_errno err) {
    switch (status) {
    case 405: return "only GET and HEAD: nothing on HTTP changes state";
    case 408: return "the request did not arrive in time";
    case 413: return "request body too large: the API takes no body (64 KiB at most)";
    case 431: return "request header fields too large: 16 KiB and 64 fields at most";
    default: return err == HPE_OK ? "malformed request" : http_errno_description(err);
    }
}

static void process_input(coord_http_conn *c) {
    if (c->rlen == 0 || c->closing) return;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->rbuf, c->rlen);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) { /* a whole request: answer it, keep what follows */
        if (n > c->rlen) n = c->rlen;
        memmove(c->rbuf, c->rbuf + n, c->rlen - n);
        c->rlen -= n;
        stop_reading(c);
        c->state = COORD_CONN_RESPONDING;
        c->deadline = 0;
        c->keep_alive = http_should_keep_alive(&c->parser) && !c->parser.upgrade;
        coord_http_route(c);
        return;
    }
    c->rlen = 0;
    if (err == HPE_OK) return; /* all consumed, the request goes on */
    int status = c->reject ? c->reject : err == HPE_HEADER_OVERFLOW ? 431 : 400;
    stop_reading(c);
    c->state = COORD_CONN_RESPONDING;
    c->deadline = 0;
    coord_http_send_error(c, status, reject_message(status, c->reject ? HPE_OK : err));
    c->keep_alive = false;
}

static void conn_linger(coord_http_conn *c);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
    coord_http_conn *c = s->data;
    if (c->closing || nread == 0) return;
    if (nread < 0) {
        if (nread == UV_EOF && c->state == COORD_CONN_RESPONDING) {
            c->peer_eof = true; /* half-closed: answer, then close */
            stop_reading(c);
            return;
        }
        conn_close(c);
        return;
    }
    switch (c->state) {
    case COORD_CONN_STREAM: return;
    case COORD_CONN_LINGER:
        c->linger_bytes += (size_t)nread;
        if (c->linger_bytes > COORD_HTTP_MAX_BODY) conn_close(c);
        return;
    default:
        c->rlen += (size_t)nread;
        process_input(c);
    }
}

/* ---- writing ---- */

typedef struct write_req {
    uv_write_t req;
    coord_http_conn *c;
    char *mem;
} write_req;

static void on_shutdown(uv_shutdown_t *r, int status) {
    coord_http_conn *c = r->data;
    free(r);
    if (c->closing) return;
    if (status < 0 || c->peer_eof) conn_close(c);
}

/* After a response with Connection: close: send FIN and read what the client still sends for a
 * little while, so that its unread request body does not turn our close into a reset that
 * destroys the response before it is read. */
static void conn_linger(coord_http_conn *c) {
    if (c->peer_eof) {
        conn_close(c);
        return;
    }
    c->state = COORD_CONN_LINGER;
    c->deadline = now_ms(c) + COORD_HTTP_LINGER_MS;
    c->linger_bytes = 0;
    c->rlen = 0;
    uv_shutdown_t *r = malloc(sizeof *r);
    if (!r) {
        conn_close(c);
        return;
    }
    r->data = c;
    if (uv_shutdown(r, (uv_stream_t *)&c->tcp, on_shutdown)) {
        free(r);
        conn_close(c);
        return;
    }
    start_reading(c);
}

static void on_write(uv_write_t *r, int status) {
    write_req *w = (write_req *)r;
    coord_http_conn *c = w->c;
    free(w->mem);
    free(w);
    c->writes_pending--;
    if (c->closing) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    c->write_since = now_ms(c);
    if (c->writes_pending > 0 || c->state != COORD_CONN_RESPONDING) return;
    if (!c->keep_alive || c->peer_eof) {
        conn_linger(c);
        return;
    }
    c->state = COORD_CONN_IDLE;
    c->deadline = now_ms(c) + COORD_HTTP_IDLE_TIMEOUT_MS;
    http_parser_pause(&c->parser, 0);
    process_input(c); /* a pipelined request may be waiting */
    if (!c->closing && (c->state == COORD_CONN_IDLE || c->state == COORD_CONN_READING)) start_reading(c);
}

/* Writes bufs; mem (malloc'd, may be NULL) is freed when done. */
static void conn_write(coord_http_conn *c, uv_buf_t *bufs, unsigned n, char *mem) {
    if (c->closing) {
        free(mem);
        return;
    }
    write_req *w = malloc(sizeof *w);
    if (!w) {
        free(mem);
        conn_close(c);
        return;
    }
    w->c = c;
    w->mem = mem;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
    if (rc) {
        free(mem);
        free(w);
        conn_close(c);
        return;
    }
    if (c->writes_pending++ == 0) c->write_since = now_ms(c);
}

const char *coord_http_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return status < 400 ? "OK" : status < 500 ? "Bad Request" : "Internal Server Error";
    }
}

void coord_http_send(coord_http_conn *c, int status, const char *content_type, const char *extra, const void *body,
                     size_t len, bool is_static, bool close) {
    if (c->closing) return;
    if (close) c->keep_alive = false;
    bool head_only = coord_http_is_head(c), no_content = status == 304 || status == 204;
    coord_http_buf b = {0};
    coord_http_buf_printf(&b, "HTTP/1.1 %d %s\r\n", status, coord_http_reason(status));
    if (!no_content) coord_http_buf_printf(&b, "Content-Type: %s\r\nContent-Length: %zu\r\n", content_type, len);
    coord_http_buf_puts(&b, "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n");
    if (!extra || !strstr(extra, "Cache-Control:")) coord_http_buf_puts(&b, "Cache-Control: no-store\r\n");
    if (extra) coord_http_buf_puts(&b, extra);
    coord_http_buf_puts(&b, c->keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
    bool with_body = !head_only && !no_content && len > 0;
    if (with_body && !is_static) coord_http_buf_put(&b, body, len);
    if (b.oom) {
        free(b.data);
        conn_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(b.data, (unsigned)b.len), uv_buf_init((char *)body, (unsigned)len)};
    conn_write(c, bufs, with_body && is_static ? 2 : 1, b.data);
}

void coord_http_send_error(coord_http_conn *c, int status, const char *message) {
    json_t *o = json_pack("{s:s}", "error", message);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        conn_close(c);
        return;
    }
    /* after these the connection's input cannot be trusted to be at a request boundary */
    bool close = status == 400 || status == 405 || status == 408 || status == 413 || status == 431 || status == 500;
    const char *extra = status == 401   ? "WWW-Authenticate: Bearer realm=\"xdistill\"\r\n"
                        : status == 405 ? "Allow: GET, HEAD\r\n"
                                        : NULL;
    coord_http_send(c, status, "application/json", extra, text, strlen(text), false, close);
    free(text);
}

/* ---- event streams ---- */

static char *event_text(long id, size_t *len) {
    coord_http_buf b = {0};
    coord_http_buf_printf(&b, "event: change\ndata: {\"last_event_id\": %ld}\n\n", id);
    *len = b.len;
    if (b.oom) free(b.data);
    return b.oom ? NULL : b.data;
}

void coord_http_start_stream(coord_http_conn *c) {
    coord_http *h = c->srv;
    c->state = COORD_CONN_STREAM;
    c->deadline = 0;
    c->rlen = 0;
    c->last_ping = now_ms(c);
    if (h->api.last_event_id) h->last_event_id = h->api.last_event_id(h->api.ctx);
    coord_http_buf b = {0};
    coord_http_buf_puts(&b, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
                            "X-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\nConnection: keep-alive\r\n\r\n"
                            "retry: 3000\n\n");
    size_t n;
    char *ev = event_text(h->last_event_id, &n);
    if (ev) coord_http_buf_put(&b, ev, n);
    free(ev);
    if (b.oom || !ev) {
        free(b.data);
        conn_close(c);
        return;
    }
    uv_buf_t buf = uv_buf_init(b.data, (unsigned)b.len);
    conn_write(c, &buf, 1, b.data);
    start_reading(c); /* to see the client go */
}

static void stream_write(coord_http_conn *c, const char *text, size_t len) {
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > COORD_HTTP_SSE_MAX_QUEUE) {
        conn_close(c); /* it does not read: drop it, its EventSource reconnects */
        return;
    }
    char *copy = malloc(len);
    if (!copy) {
        conn_close(c);
        return;
    }
    memcpy(copy, text, len);
    uv_buf_t buf = uv_buf_init(copy, (unsigned)len);
    conn_write(c, &buf, 1, copy);
}

void coord_http_broadcast(coord_http *h, long last_event_id) {
    size_t n;
    char *ev = event_text(last_event_id, &n);
    if (!ev) return;
    for (coord_http_conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == COORD_CONN_STREAM) stream_write(c, ev, n);
    }
    free(ev);
}

static void on_notify(uv_timer_t *t) {
    coord_http *h = t->data;
    if (h->api.last_event_id) h->last_event_id = h->api.last_event_id(h->api.ctx);
    coord_http_broadcast(h, h->last_event_id);
}

void coord_http_notify(coord_http *h) {
    if (!h || h->stopping || uv_is_active((uv_handle_t *)&h->notify_timer)) return;
    uv_timer_start(&h->notify_timer, on_notify, COORD_HTTP_NOTIFY_DELAY_MS, 0);
}

/* ---- the once-a-second sweep: deadlines, stalled writes, keep-alive comments, new events ---- */

static void on_sweep(uv_timer_t *t) {
    coord_http *h = t->data;
    uint64_t now = uv_now(h->loop);
    for (coord_http_conn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->writes_pending && now - c->write_since > COORD_HTTP_WRITE_TIMEOUT_MS) {
            conn_close(c);
        } else if (c->deadline && now >= c->deadline) {
            if (c->state == COORD_CONN_READING) { /* a request that dribbles in */
                stop_reading(c);
                c->state = COORD_CONN_RESPONDING;
                c->deadline = 0;
                coord_http_send_error(c, 408, reject_message(408, HPE_OK));
                if (!c->closing) c->deadline = now + COORD_HTTP_LINGER_MS; /* and it need not read it */
            } else {
                conn_close(c);
            }
        } else if (c->state == COORD_CONN_STREAM && now - c->last_ping >= COORD_HTTP_SSE_PING_MS) {
            c->last_ping = now;
            stream_write(c, ": keep-alive\n\n", 14);
        }
    }
    if (h->api.last_event_id) {
        long id = h->api.last_event_id(h->api.ctx);
        if (id != h->last_event_id) {
            h->last_event_id = id;
            coord_http_broadcast(h, id);
        }
    }
}

/* ---- accepting ---- */

static void free_handle(uv_handle_t *hd) { free(hd); }

static const char busy_response[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 46\r\n"
    "Connection: close\r\n\r\n{\"error\": \"too many connections to the dashboard\"}";

static void on_connection(uv_stream_t *server, int status) {
    coord_http *h = server->data;
    if (status < 0) {
        xd_warn("dashboard: accept: %s", uv_strerror(status));
        return;
    }
    if (h->n_conns >= COORD_HTTP_MAX_CONNS || h->stopping) { /* full: take it off the backlog, say so, close */
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t) return;
        uv_tcp_init(h->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0) {
            uv_buf_t buf = uv_buf_init((char *)busy_response, sizeof busy_response - 1);
            uv_try_write((uv_stream_t *)t, &buf, 1);
        }
        uv_close((uv_handle_t *)t, free_handle);
        return;
    }
    coord_http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = h;
    uv_tcp_init(h->loop, &c->tcp);
    c->tcp.data = c;
    h->open_handles++;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->state = COORD_CONN_IDLE;
    c->keep_alive = true;
    c->deadline = now_ms(c) + COORD_HTTP_IDLE_TIMEOUT_MS;
    start_reading(c);
}

/* ---- start and stop ---- */

static int parse_host_port(const char *s, char *host, size_t cap, int *port, xd_err *e) {
    const char *colon;
    size_t hl;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') return xd_fail(e, "dashboard address \"%s\": expected [IPv6]:PORT", s);
        hl = (size_t)(end - s - 1);
        memcpy(host, s + 1, hl < cap ? hl : 0);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        hl = colon ? (size_t)(colon - s) : 0;
        if (colon && memchr(s, ':', hl))
            return xd_fail(e, "dashboard address \"%s\": write an IPv6 address as [ADDR]:PORT", s);
        memcpy(host, s, hl < cap ? hl : 0);
        if (!colon) colon = s - 1; /* PORT alone */
    }
    if (hl >= cap) return xd_fail(e, "dashboard address \"%s\": host name too long", s);
    host[hl] = 0;
    if (!host[0]) snprintf(host, cap, "127.0.0.1");
    const char *p = colon + 1;
    long v = 0;
    if (!*p || strlen(p) > 5) return xd_fail(e, "dashboard address \"%s\": expected HOST:PORT", s);
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return xd_fail(e, "dashboard address \"%s\": expected HOST:PORT", s);
        v = v * 10 + (*p - '0');
    }
    if (v > 65535) return xd_fail(e, "dashboard address \"%s\": port out of range", s);
    *port = (int)v;
    return 0;
}

/* A listening socket, made by hand so that a failure leaves no libuv handle to close. */
static int listen_socket(coord_http *h, int *fd_out, xd_err *e) {
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    const char *name = !strcasecmp(h->host, "localhost") ? "127.0.0.1" : h->host;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (uv_ip4_addr(name, h->port, a4) == 0) {
        sl = sizeof *a4;
    } else if (uv_ip6_addr(name, h->port, a6) == 0) {
        sl = sizeof *a6;
    } else {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(name, NULL, &hints, &res);
        if (rc || !res) return xd_fail(e, "dashboard: cannot resolve \"%s\": %s", name, gai_strerror(rc));
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sl = (socklen_t)res->ai_addrlen;
        freeaddrinfo(res);
        if (ss.ss_family == AF_INET) a4->sin_port = htons((uint16_t)h->port);
        else a6->sin6_port = htons((uint16_t)h->port);
    }
    h->ipv6 = ss.ss_family == AF_INET6;
    h->wildcard = h->ipv6 ? !memcmp(&a6->sin6_addr, &in6addr_any, sizeof in6addr_any)
                          : a4->sin_addr.s_addr == htonl(INADDR_ANY);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return xd_fail(e, "dashboard: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 128)) {
        int err = errno;
        close(fd);
        return xd_fail(e, "dashboard: cannot listen on %s%s%s:%d: %s", h->ipv6 ? "[" : "", h->host, h->ipv6 ? "]" : "",
                       h->port, strerror(err));
    }
    sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? a6->sin6_port : a4->sin_port);
    *fd_out = fd;
    return 0;
}

int coord_http_start(uv_loop_t *loop, const char *host_port, const char *token_dir, const coord_http_api *api,
                     coord_http **out, xd_err *e) {
    *out = NULL;
    if (!api || !api->runs || !api->run || !api->job || !api->workers || !api->events || !api->prometheus)
        return xd_fail(e, "dashboard: every data callback of coord_http_api is needed");
    /* a client that goes while we write must not kill the process (libuv writes with write()) */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
    coord_http *h = calloc(1, sizeof *h);
    if (!h) return xd_fail(e, "out of memory");
    h->loop = loop;
    h->api = *api;
    int fd = -1;
    if (parse_host_port(host_port ? host_port : "127.0.0.1:0", h->host, sizeof h->host, &h->port, e) ||
        listen_socket(h, &fd, e)) {
        free(h);
        return -1;
    }
    if (coord_http_token_init(h, token_dir, e)) {
        close(fd);
        free(h);
        return -1;
    }
    snprintf(h->cookie_name, sizeof h->cookie_name, "xd_token_%d", h->port);
    if (gethostname(h->hostname, sizeof h->hostname - 1)) h->hostname[0] = 0;
    const char *shown = h->wildcard ? (h->hostname[0] ? h->hostname : "localhost") : h->host;
    bool brackets = !h->wildcard && strchr(shown, ':');
    snprintf(h->url, sizeof h->url, "http://%s%s%s:%d/?token=%s", brackets ? "[" : "", shown, brackets ? "]" : "",
             h->port, h->token);
    coord_http_assets_init(h);
    if (api->last_event_id) h->last_event_id = api->last_event_id(api->ctx);

    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->open_handles++;
    int rc = uv_tcp_open(&h->listener, fd);
    if (rc) close(fd);
    else rc = uv_listen((uv_stream_t *)&h->listener, 128, on_connection);
    if (rc) { /* cannot happen on a socket that listens already; the handle closes with the loop */
        h->stopping = true;
        uv_close((uv_handle_t *)&h->listener, on_server_handle_closed);
        return xd_fail(e, "dashboard: listen: %s", uv_strerror(rc));
    }
    uv_timer_init(loop, &h->sweep);
    uv_timer_init(loop, &h->notify_timer);
    h->sweep.data = h->notify_timer.data = h;
    h->open_handles += 2;
    uv_timer_start(&h->sweep, on_sweep, 1000, 1000);
    xd_info("dashboard: open %s", h->url);
    if (token_dir) xd_info("dashboard: the token is also in %s/dashboard.token", token_dir);
    *out = h;
    return 0;
}

const char *coord_http_url(const coord_http *h) { return h ? h->url : ""; }

void coord_http_stop(coord_http *h) {
    if (!h || h->stopping) return;
    h->stopping = true;
    while (h->conns) conn_close(h->conns);
    uv_close((uv_handle_t *)&h->listener, on_server_handle_closed);
    uv_close((uv_handle_t *)&h->sweep, on_server_handle_closed);
    uv_close((uv_handle_t *)&h->notify_timer, on_server_handle_closed);
}
