/* http.c - see http.h.
 *
 * A connection moves READING -> HANDLING -> WRITING -> READING ... and ends
 * in CLOSING. Its memory is freed only when both libuv handles are closed
 * and no handler still holds its request, whichever happens last.
 *
 * Buffer ownership: a request is read into one growing buffer. While it
 * arrives (READING) the buffer may move, so nothing may keep a pointer into
 * it: only the framing (head length, body length, chunked, Expect) is kept
 * between reads. Once the whole request is in, its head is parsed again
 * into req and the buffer stops moving (alloc_cb grows it only in
 * READING) until the reply has been written. */
#include "http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include "alloc.h"
#include "error.h"
#include "log.h"
#include "tls.h"

#define INITIAL_BUFFER 4096
#define SHRINK_ABOVE (64u * 1024) /* a buffer this big is shrunk after its request */
#define CHUNK_OVERHEAD (64u * 1024) /* chunk framing allowed beyond max_body */

/* LINGERING: the reply is sent and our side shut down; unread input is
 * drained for a moment so that closing does not reset the connection and
 * destroy the reply before the client reads it. */
/* UPGRADED: answered 101; the bytes belong to jinn_http_upgrade's owner. */
enum conn_state { READING, HANDLING, WRITING, LINGERING, CLOSING, UPGRADED };

#define LINGER_MS 1000
/* Connections refused by the limits that may linger to deliver their 429;
 * more are closed without a reply (they do not count against
 * max_connections, so a flood of them cannot take peers' room). */
#define REFUSED_LINGER_MAX 64
#define TLS_READ_BUFFER (17u * 1024) /* one TLS record and change per socket read */
#define ACCEPT_RETRY_MS 100

struct conn {
    struct jinn_http_server *server;
    struct conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    enum conn_state state;
    bool handler_pending; /* a handler holds req */
    bool head_parsed;
    bool sent_continue;
    bool keep_alive;
    bool reading;
    bool request_started; /* the read deadline runs from a request's first byte */
    bool expect_continue; /* the parsed head asked for "100 Continue" */
    char *buf;
    size_t len, cap;
    size_t request_size; /* bytes of buf the current request spans */
    char *owned_body;    /* decoded chunked body */
    uint64_t max_body;   /* the current request's body limit */
    bool big;            /* counted in big_bodies (over cfg.max_body) */
    struct jinn_http_request req;
    char reply_headers[JINN_HTTP_MAX_REPLY_HEADERS];
    size_t reply_headers_len;
    uv_write_t write;
    uv_write_t cont_write; /* "100 Continue", queued before any reply */
    uv_shutdown_t shutdown;
    uv_buf_t out;
    /* A streamed reply (jinn_http_stream_*): one piece in flight at most. */
    uv_write_t stream_write;
    void (*stream_cb)(void *data, int status);
    void *stream_data;
    size_t stream_piece;
    uint32_t ip;                         /* the client's IPv4 address, 0 if none */
    enum jinn_limit_conn_kind limit_kind; /* how the limits counted it */
    bool refused;                        /* over the limits: answered, then closed */
    /* TLS (server cfg.tls): ciphertext is read into raw, decrypted into buf
     * by tls_pull. Until the handshake is done nothing reaches the parser. */
    bool tls_on;
    bool tls_started; /* a first byte arrived */
    bool peer; /* the client certificate chains to the cluster CA */
    struct jinn_tls tls;
    char *raw;
    /* upgraded connections (jinn_http_upgrade) */
    bool upgraded; /* on_close owed to up */
    struct jinn_http_upgrade_io up;
    uint64_t up_queued;
};

/* One write of an upgraded connection (its own copy of the bytes). */
struct up_write {
    uv_write_t w;
    struct conn *c;
    size_t n;
    char data[];
};

/* A write of ciphertext standing for a caller's uv_write. */
struct tls_write {
    uv_write_t req;
    uv_write_t *orig; /* NULL: handshake or alert bytes */
    uv_write_cb cb;
    char *data;
};

struct jinn_http_server {
    uv_loop_t *loop;
    struct jinn_http_config cfg;
    jinn_http_handler handler;
    void *data;
    uv_tcp_t listener;
    struct conn *conns;
    unsigned n_conns;
    bool stopping;
    bool listener_closed;
    uv_timer_t accept_retry; /* accepting again after a connection could not be allocated */
    bool accept_retry_closed;
    void (*stop_cb)(void *data);
    void *stop_data;
    struct jinn_http_stats stats;
    uint64_t last_accept_warn_ms;
    int unstarted_closed;
    unsigned big_bodies; /* connections reading or holding a body over max_body */
    unsigned n_refused;  /* refused connections still delivering their 429 */
    SSL_CTX *tls;        /* for new connections (NULL: plain HTTP) */
};

static void conn_close(struct conn *c);
static struct conn *conn_new(struct jinn_http_server *s);
static void conn_start(struct conn *c);
static void process(struct conn *c);
static void on_timer(uv_timer_t *t);

static struct conn *conn_of(const struct jinn_http_request *req)
{
    return (struct conn *)(void *)req->conn;
}

static size_t buffer_limit(const struct conn *c)
{
    return JINN_HTTP_MAX_HEAD + (size_t)c->max_body + CHUNK_OVERHEAD;
}

/* The request is over: its body limit goes back to the default. */
static void big_release(struct conn *c)
{
    if (c->big) {
        c->big = false;
        c->server->big_bodies--;
    }
    c->max_body = c->server->cfg.max_body;
}

/* The most one reply may queue: the largest value, JSON-escaped or base64,
 * fits. */
static uint64_t output_limit(const struct jinn_http_server *s)
{
    uint64_t by_body = 2 * s->cfg.max_body + 64 * 1024;
    return by_body > JINN_HTTP_MAX_OUTPUT ? by_body : JINN_HTTP_MAX_OUTPUT;
}

static uint64_t output_total_limit(const struct jinn_http_server *s)
{
    uint64_t four = 4 * output_limit(s);
    if (s->cfg.test_output_total != 0) {
        return s->cfg.test_output_total;
    }
    return four > JINN_HTTP_MAX_OUTPUT_TOTAL ? four : JINN_HTTP_MAX_OUTPUT_TOTAL;
}

static void maybe_finish_stop(struct jinn_http_server *s)
{
    if (s->stopping && s->listener_closed && s->accept_retry_closed && s->n_conns == 0) {
        void (*cb)(void *) = s->stop_cb;
        void *data = s->stop_data;
        SSL_CTX_free(s->tls);
        jinn_free(s);
        if (cb != NULL) {
            cb(data);
        }
    }
}

static void conn_free_if_done(struct conn *c)
{
    struct jinn_http_server *s = c->server;
    if (c->open_handles > 0 || c->handler_pending) {
        return;
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    s->n_conns--;
    s->stats.connections_open = s->n_conns;
    if (c->refused) {
        s->n_refused--;
    }
    if (s->cfg.limit != NULL) {
        jinn_limit_conn_close(s->cfg.limit, c->ip, c->limit_kind);
    }
    if (c->upgraded) {
        c->upgraded = false;
        c->up.on_close(c->up.data);
    }
    big_release(c);
    jinn_free(c->owned_body);
    jinn_free(c->out.base);
    jinn_free(c->buf);
    jinn_free(c->raw);
    jinn_tls_close(&c->tls);
    jinn_free(c);
    maybe_finish_stop(s);
}

static void handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->open_handles--;
    conn_free_if_done(c);
}

static void conn_close(struct conn *c)
{
    if (c->state == CLOSING) {
        return;
    }
    c->state = CLOSING;
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

/* ---- replies ------------------------------------------------------------- */

static void request_done(struct jinn_http_request *req)
{
    void (*done)(void *) = req->done;
    if (done != NULL) {
        req->done = NULL;
        done(req->done_arg);
    }
}

void jinn_http_add_header(struct jinn_http_request *req, const char *name, const char *value)
{
    struct conn *c = conn_of(req);
    size_t room = sizeof c->reply_headers - c->reply_headers_len;
    int n = snprintf(c->reply_headers + c->reply_headers_len, room, "%s: %s\r\n", name, value);
    if (n < 0 || (size_t)n >= room) {
        c->reply_headers[c->reply_headers_len] = '\0';
        jinn_warn("reply header %s dropped: headers too long", name);
        return;
    }
    c->reply_headers_len += (size_t)n;
}

static void tls_written(uv_write_t *w, int status)
{
    struct tls_write *tw = w->data;
    jinn_free(tw->data);
    if (tw->cb != NULL) {
        tw->cb(tw->orig, status);
    }
    jinn_free(tw);
}

/* Sends what OpenSSL has queued; cb(orig) runs once it is written (the
 * caller's uv_write_t is not submitted itself). 0 or a libuv error. */
static int tls_flush(struct conn *c, uv_write_t *orig, uv_write_cb cb)
{
    size_t len;
    bool oom;
    char *data = jinn_tls_take(&c->tls, &len, &oom);
    struct tls_write *tw;
    uv_buf_t b;
    int rv;
    if (oom) {
        return UV_ENOMEM;
    }
    if (data == NULL && cb == NULL) {
        return 0;
    }
    tw = jinn_malloc(sizeof *tw);
    if (tw == NULL) {
        jinn_free(data);
        return UV_ENOMEM;
    }
    tw->req.data = tw;
    tw->orig = orig;
    tw->cb = cb;
    tw->data = data;
    b = uv_buf_init(data != NULL ? data : (char *)"", (unsigned)len);
    rv = uv_write(&tw->req, (uv_stream_t *)&c->tcp, &b, 1, tls_written);
    if (rv != 0) {
        jinn_free(data);
        jinn_free(tw);
    }
    return rv;
}

/* uv_write through the connection's TLS session when it has one. */
static int conn_write(struct conn *c, uv_write_t *w, const uv_buf_t *bufs, unsigned n,
                      uv_write_cb cb)
{
    if (!c->tls_on) {
        return uv_write(w, (uv_stream_t *)&c->tcp, bufs, n, cb);
    }
    for (unsigned i = 0; i < n; i++) {
        if (jinn_tls_write(&c->tls, bufs[i].base, bufs[i].len) != 0) {
            return UV_EPROTO;
        }
    }
    return tls_flush(c, w, cb);
}

static void shut_down(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* the linger timer or the peer's EOF ends the connection */
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void linger(struct conn *c)
{
    c->state = LINGERING;
    if (c->tls_on) {
        jinn_tls_shutdown(&c->tls);
        (void)tls_flush(c, NULL, NULL);
    }
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shut_down) != 0) {
        conn_close(c);
        return;
    }
    /* Reading may have stopped on a full buffer: resume it, or the input is
     * not drained and the peer's close is not seen until the timer. */
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static void written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->server->stats.output_queued_bytes -= c->out.len;
    jinn_free(c->out.base);
    c->out.base = NULL;
    c->out.len = 0;
    if (c->state == CLOSING) {
        return;
    }
    if (status != 0 || c->server->stopping) {
        conn_close(c);
        return;
    }
    if (!c->keep_alive) {
        linger(c);
        return;
    }
    assert(!c->refused);
    /* Drop the finished request and go on with anything pipelined after it. */
    assert(c->request_size <= c->len);
    memmove(c->buf, c->buf + c->request_size, c->len - c->request_size);
    c->len -= c->request_size;
    c->request_size = 0;
    if (c->cap > SHRINK_ABOVE && c->len <= INITIAL_BUFFER) {
        /* One large request must not pin its buffer for the connection's
         * life. Nothing points into the buffer between requests. */
        char *small = jinn_realloc(c->buf, INITIAL_BUFFER);
        if (small != NULL) {
            c->buf = small;
            c->cap = INITIAL_BUFFER;
        }
    }
    c->head_parsed = false;
    c->sent_continue = false;
    c->expect_continue = false;
    big_release(c);
    jinn_free(c->owned_body);
    c->owned_body = NULL;
    c->state = READING;
    process(c);
}

void jinn_http_reply(struct jinn_http_request *req, int status, const char *content_type,
                     const void *body, size_t len)
{
    struct conn *c = conn_of(req);
    struct jinn_http_server *s = c->server;
    char head[512 + JINN_HTTP_MAX_REPLY_HEADERS];
    int head_len;
    uv_buf_t out;
    int rv;

    assert(c->handler_pending);
    request_done(req);
    c->handler_pending = false;
    if (c->state == CLOSING) {
        s->stats.responses[status / 100 <= 5 ? status / 100 : 5]++;
        conn_free_if_done(c); /* the client left; nobody to answer */
        return;
    }
    assert(c->state == HANDLING);
    if (status >= 400 && status != 404 && status != 409 && status != 412 && status < 500 &&
        !c->head_parsed) {
        c->keep_alive = false; /* we could not frame the request: resync is impossible */
    }
    if ((uint64_t)len + sizeof head > output_limit(s)) {
        /* A reply this large would pin memory for as long as the client
         * takes to read it: refuse it rather than queue it. */
        s->stats.replies_refused++;
        jinn_warn("reply of %zu bytes refused: over the %llu-byte output limit", len,
                  (unsigned long long)output_limit(s));
        c->handler_pending = true;
        jinn_http_reply_error(req, JINN_EINTERNAL,
                              "the reply is larger than the server's output limit; "
                              "ask for less (limit, prefix)");
        return;
    }
    if (s->stats.output_queued_bytes + len + sizeof head > output_total_limit(s)) {
        /* Any reply, a 503 included, would queue more: close instead.
         * (Answering with an error here went through this same check
         * again, recursing until the stack overflowed: rev1 C3.) */
        s->stats.replies_refused++;
        jinn_warn("reply of %zu bytes refused and connection closed: %llu bytes already "
                  "queued to slow clients (limit %llu)",
                  len, (unsigned long long)s->stats.output_queued_bytes,
                  (unsigned long long)output_total_limit(s));
        c->reply_headers_len = 0;
        c->reply_headers[0] = '\0';
        conn_close(c);
        return;
    }
    s->stats.responses[status / 100 <= 5 ? status / 100 : 5]++;
    head_len = snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: %s\r\n%s\r\n",
                        status, jinn_http_reason(status), content_type, len,
                        c->keep_alive ? "keep-alive" : "close", c->reply_headers);
    c->reply_headers_len = 0;
    c->reply_headers[0] = '\0';
    assert(head_len > 0 && (size_t)head_len < sizeof head);
    c->out.base = jinn_malloc((size_t)head_len + len);
    if (c->out.base == NULL) {
        conn_close(c);
        return;
    }
    memcpy(c->out.base, head, (size_t)head_len);
    if (len > 0) {
        memcpy(c->out.base + head_len, body, len);
    }
    c->out.len = (size_t)head_len + len;
    s->stats.output_queued_bytes += c->out.len;
    c->state = WRITING;
    c->write.data = c;
    out = c->out; /* libuv copies the buffer array */
    rv = conn_write(c, &c->write, &out, 1, written);
    if (rv != 0) {
        s->stats.output_queued_bytes -= c->out.len;
        jinn_free(c->out.base);
        c->out.base = NULL;
        c->out.len = 0;
        conn_close(c);
        return;
    }
    /* A client that never reads its reply is cut off after the idle timeout:
     * its reply is the only output it can hold (requests are answered one
     * at a time), and this bounds how long. */
    uv_timer_start(&c->timer, on_timer, s->cfg.idle_timeout_ms, 0);
}

void jinn_http_reply_json(struct jinn_http_request *req, int status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL) {
        static const char oom[] = "{\"error\":\"out_of_memory\",\"message\":\"out of memory\"}";
        jinn_http_reply(req, 503, "application/json", oom, sizeof oom - 1);
        return;
    }
    jinn_http_reply(req, status, "application/json", text, strlen(text));
    jinn_free(text);
}

void jinn_http_reply_error(struct jinn_http_request *req, int code, const char *detail)
{
    int status = jinn_error_http_status(code);
    json_t *obj = json_pack("{s:s, s:s}", "error", jinn_error_name(code), "message",
                            detail ? detail : jinn_error_message(code));
    if (status == 503) {
        jinn_http_add_header(req, "Retry-After", "1");
    }
    jinn_http_reply_json(req, status, obj);
}

bool jinn_http_client_alive(const struct jinn_http_request *req)
{
    return conn_of(req)->state != CLOSING;
}

/* ---- streamed replies ------------------------------------------------------ */

static void stream_head_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    (void)status; /* a failed write fails the next piece too */
    c->server->stats.output_queued_bytes -= c->out.len;
    jinn_free(c->out.base);
    c->out.base = NULL;
    c->out.len = 0;
}

int jinn_http_stream_start(struct jinn_http_request *req, int status, const char *content_type,
                           uint64_t len)
{
    struct conn *c = conn_of(req);
    struct jinn_http_server *s = c->server;
    char head[512 + JINN_HTTP_MAX_REPLY_HEADERS];
    int head_len;
    uv_buf_t out;

    assert(c->handler_pending);
    if (c->state != HANDLING) {
        return JINN_ESHUTDOWN; /* the client left: jinn_http_stream_end still frees */
    }
    s->stats.responses[status / 100 <= 5 ? status / 100 : 5]++;
    c->keep_alive = false; /* the connection ends with the body */
    head_len = snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %llu\r\n"
                        "Connection: close\r\n%s\r\n",
                        status, jinn_http_reason(status), content_type, (unsigned long long)len,
                        c->reply_headers);
    c->reply_headers_len = 0;
    c->reply_headers[0] = '\0';
    assert(head_len > 0 && (size_t)head_len < sizeof head);
    c->out.base = jinn_malloc((size_t)head_len);
    if (c->out.base == NULL) {
        conn_close(c);
        return JINN_ENOMEM;
    }
    memcpy(c->out.base, head, (size_t)head_len);
    c->out.len = (size_t)head_len;
    s->stats.output_queued_bytes += c->out.len;
    c->state = WRITING;
    c->write.data = c;
    out = c->out;
    if (conn_write(c, &c->write, &out, 1, stream_head_written) != 0) {
        s->stats.output_queued_bytes -= c->out.len;
        jinn_free(c->out.base);
        c->out.base = NULL;
        c->out.len = 0;
        conn_close(c);
        return JINN_EIO;
    }
    uv_timer_start(&c->timer, on_timer, s->cfg.idle_timeout_ms, 0);
    return 0;
}

static void stream_piece_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    void (*cb)(void *, int) = c->stream_cb;
    c->server->stats.output_queued_bytes -= c->stream_piece;
    c->stream_piece = 0;
    c->stream_cb = NULL;
    if (status != 0 || c->state == CLOSING || c->server->stopping) {
        conn_close(c);
        status = JINN_EIO;
    } else {
        /* The client took this piece: its idle allowance starts again. */
        uv_timer_start(&c->timer, on_timer, c->server->cfg.idle_timeout_ms, 0);
    }
    cb(c->stream_data, status);
}

int jinn_http_stream_write(struct jinn_http_request *req, const uv_buf_t *bufs, unsigned n,
                           void (*cb)(void *data, int status), void *data)
{
    struct conn *c = conn_of(req);
    size_t len = 0;
    int rv;
    assert(c->handler_pending && c->stream_cb == NULL);
    if (c->state != WRITING) {
        return JINN_EIO;
    }
    for (unsigned i = 0; i < n; i++) {
        len += bufs[i].len;
    }
    c->stream_cb = cb;
    c->stream_data = data;
    c->stream_piece = len;
    c->server->stats.output_queued_bytes += len;
    c->stream_write.data = c;
    rv = conn_write(c, &c->stream_write, bufs, n, stream_piece_written);
    if (rv != 0) {
        c->server->stats.output_queued_bytes -= len;
        c->stream_piece = 0;
        c->stream_cb = NULL;
        conn_close(c);
        return JINN_EIO;
    }
    return 0;
}

void jinn_http_stream_end(struct jinn_http_request *req, bool complete)
{
    struct conn *c = conn_of(req);
    assert(c->handler_pending && c->stream_cb == NULL);
    request_done(req);
    c->handler_pending = false;
    if (c->state == CLOSING) {
        conn_free_if_done(c);
    } else if (!complete || c->state != WRITING) {
        conn_close(c); /* a short body: the client sees the connection end early */
    } else {
        linger(c);
    }
}

/* ---- reading and parsing -------------------------------------------------- */

/* Answers an error the parser found, then closes: after a framing error the
 * rest of the stream cannot be trusted. */
static void fail_request(struct conn *c, int code)
{
    c->keep_alive = false;
    c->state = HANDLING;
    c->handler_pending = true;
    c->request_size = c->len;
    jinn_http_reply_error(&c->req, code, NULL);
}

static void up_deliver(struct conn *c);
static void up_tls_pull(struct conn *c);

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state == UPGRADED) {
        /* not a timeout: bytes that came with the request are delivered */
        up_deliver(c);
        if (c->tls_on) {
            up_tls_pull(c);
        }
        return;
    }
    if (c->tls_on && !c->tls.established && c->state != LINGERING) {
        c->server->stats.tls_handshake_failures++;
        conn_close(c); /* no TLS session: nothing can be answered */
        return;
    }
    if (c->state == READING && c->len > 0) {
        fail_request(c, JINN_ETIMEOUT_IDLE);
        return;
    }
    if (c->state == WRITING) {
        c->server->stats.slow_readers_cut++;
    }
    conn_close(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    size_t limit = buffer_limit(c);
    (void)suggested;
    if (c->tls_on) {
        buf->base = c->raw;
        buf->len = TLS_READ_BUFFER;
        return;
    }
    if (c->state == LINGERING) {
        c->len = 0; /* drained input is discarded */
    }
    /* Never move the buffer while a handler borrows the request from it. */
    if (c->state == READING && c->cap - c->len < 1024 && c->cap < limit) {
        size_t cap = c->cap ? c->cap * 2 : INITIAL_BUFFER;
        char *grown;
        if (cap > limit) {
            cap = limit;
        }
        grown = jinn_realloc(c->buf, cap);
        if (grown != NULL) {
            c->buf = grown;
            c->cap = cap;
        }
    }
    buf->base = c->buf + c->len;
    buf->len = c->cap - c->len; /* 0 makes libuv report UV_ENOBUFS */
}

/* Grows the request buffer while a request is read (as alloc_cb does for
 * plain connections). */
static void grow(struct conn *c)
{
    size_t limit = buffer_limit(c);
    if (c->state == READING && c->cap - c->len < 1024 && c->cap < limit) {
        size_t cap = c->cap ? c->cap * 2 : INITIAL_BUFFER;
        char *grown;
        if (cap > limit) {
            cap = limit;
        }
        grown = jinn_realloc(c->buf, cap);
        if (grown != NULL) {
            c->buf = grown;
            c->cap = cap;
        }
    }
}

/* Moves decrypted bytes into buf while there is room. Returns false when
 * the session ended or broke (the connection is closed). */
static bool tls_pull(struct conn *c)
{
    for (;;) {
        long k;
        grow(c);
        if (c->cap == c->len) {
            return true; /* the rest waits in OpenSSL until buf has room */
        }
        k = jinn_tls_read(&c->tls, c->buf + c->len, c->cap - c->len);
        if (k == 0) {
            return true;
        }
        if (k < 0) {
            (void)tls_flush(c, NULL, NULL); /* an alert, if any */
            conn_close(c);
            return false;
        }
        c->len += (size_t)k;
    }
}

static void plain_written(uv_write_t *w, int status)
{
    (void)status;
    jinn_free(w);
}

/* Ends a connection whose TLS handshake cannot go on: sends what is
 * queued (an alert), shuts down, drains briefly. */
static void tls_refuse(struct conn *c)
{
    c->server->stats.tls_handshake_failures++;
    c->keep_alive = false;
    c->state = LINGERING;
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shut_down) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

/* A plain HTTP request on the TLS port (a TLS record starts with a byte
 * below 0x20; a request with a method's capital letter): told, in plain
 * HTTP, to use https, then closed. */
static void refuse_plain(struct conn *c)
{
    static char reply[] =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        "Content-Length: 76\r\nConnection: close\r\n\r\n"
        "{\"error\":\"https_required\",\"message\":\"this port speaks HTTPS: use https://\"}\n";
    uv_write_t *w = jinn_malloc(sizeof *w);
    uv_buf_t b = uv_buf_init(reply, sizeof reply - 1);
    if (w == NULL || uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, plain_written) != 0) {
        jinn_free(w);
        conn_close(c);
        return;
    }
    tls_refuse(c);
}

static void tls_on_read(struct conn *c, ssize_t nread)
{
    if (c->state == LINGERING) {
        return; /* drained input is discarded */
    }
    if (!c->tls_started) {
        c->tls_started = true;
        if (c->raw[0] >= 'A' && c->raw[0] <= 'Z') {
            refuse_plain(c);
            return;
        }
    }
    if (jinn_tls_feed(&c->tls, c->raw, (size_t)nread) != 0) {
        conn_close(c);
        return;
    }
    if (!c->tls.established) {
        int r = jinn_tls_handshake(&c->tls);
        if (tls_flush(c, NULL, NULL) != 0) {
            conn_close(c);
            return;
        }
        if (r < 0) {
            /* Not TLS (plain HTTP on the TLS port), a bad or missing
             * certificate, or garbage: the alert is sent, then close. */
            char why[256];
            jinn_debug("http tls handshake failed: %s", jinn_tls_error(why, sizeof why));
            tls_refuse(c);
            return;
        }
        if (r == 0) {
            return;
        }
        c->peer = jinn_tls_is_peer(&c->tls);
        uv_timer_stop(&c->timer);
    }
    if (c->state == UPGRADED) {
        up_tls_pull(c);
        return;
    }
    if (!tls_pull(c)) {
        return;
    }
    if (c->state == READING) {
        process(c);
    } else if (c->len == c->cap && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp); /* resumed when the request is done */
        c->reading = false;
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    (void)buf;
    if (c->tls_on) {
        if (nread < 0) {
            conn_close(c);
        } else if (nread > 0 && c->state != CLOSING) {
            tls_on_read(c, nread);
        }
        return;
    }
    if (c->state == UPGRADED) {
        if (nread < 0 && nread != UV_ENOBUFS) {
            conn_close(c);
            return;
        }
        if (nread > 0) {
            c->len += (size_t)nread;
        }
        up_deliver(c);
        return;
    }
    if (nread == UV_ENOBUFS && c->state != READING && c->state != CLOSING) {
        uv_read_stop(stream); /* resumed when the current request is done */
        c->reading = false;
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->state == CLOSING || c->state == LINGERING) {
        return;
    }
    c->len += (size_t)nread;
    if (c->state == READING) {
        process(c);
    } else if (c->len == c->cap) {
        uv_read_stop(stream);
        c->reading = false;
    }
}

/* Idle connections get idle_timeout; a request, once started, must be
 * complete within read_timeout however slowly its bytes trickle in. */
static void arm_timer(struct conn *c)
{
    if (c->len == 0) {
        c->request_started = false;
        uv_timer_start(&c->timer, on_timer, c->server->cfg.idle_timeout_ms, 0);
    } else if (!c->request_started) {
        c->request_started = true;
        uv_timer_start(&c->timer, on_timer, c->server->cfg.read_timeout_ms, 0);
    }
}

static void dispatch(struct conn *c)
{
    struct jinn_http_server *s = c->server;
    struct jinn_http_request *req = &c->req;

    uv_timer_stop(&c->timer);
    c->request_started = false;
    c->state = HANDLING;
    c->handler_pending = true;
    c->keep_alive = req->msg.keep_alive && !s->stopping;
    jinn_http_split_target(req->msg.target, req->msg.target_len, &req->path, &req->path_len,
                           &req->query, &req->query_len);
    req->received_ms = uv_now(s->loop);
    req->user = NULL;
    req->client_ip = c->ip;
    req->done = NULL;
    req->done_arg = NULL;
    s->stats.requests_total++;
    s->handler(s->data, req);
}

static void continue_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status; /* a failed write also fails the reply; nothing to free */
}

static bool is_body_method(const char *method)
{
    return strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0 ||
           strcmp(method, "PATCH") == 0;
}

static void process(struct conn *c)
{
    struct jinn_http_server *s = c->server;
    /* The body limit depends on the route: the head is read first with
     * none, then checked against the request's own (c->max_body). */
    struct jinn_http_limits limits = {JINN_HTTP_MAX_HEAD, JINN_HTTP_MAX_TARGET, UINT64_MAX};
    struct jinn_http_request *req = &c->req;
    bool owned;
    int rv;

    if (c->state != READING) {
        return;
    }
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
    if (c->tls_on && !tls_pull(c)) {
        return; /* plaintext OpenSSL held while buf was full */
    }
    if (!c->head_parsed) {
        const struct jinn_http_header *expect;
        memset(req, 0, sizeof *req);
        req->server = s;
        req->conn = (struct jinn_http_conn *)(void *)c;
        rv = jinn_http_parse_head(c->buf, c->len, false, &limits, &req->msg);
        if (rv == JINN_HTTP_NEED_MORE) {
            arm_timer(c);
            return;
        }
        if (rv != 0) {
            fail_request(c, rv);
            return;
        }
        if (!req->msg.has_length && !req->msg.chunked && is_body_method(req->msg.method)) {
            /* Without a length an empty value and a lost body look the
             * same: ask for one (RFC 9110, 411). */
            fail_request(c, JINN_ELENGTH);
            return;
        }
        if (s->cfg.body_limit != NULL) {
            uint64_t limit = s->cfg.body_limit(&req->msg);
            if (limit > s->cfg.max_body &&
                (req->msg.chunked || req->msg.content_length > s->cfg.max_body)) {
                if (s->big_bodies >= JINN_HTTP_BIG_BODIES_MAX) {
                    fail_request(c, JINN_EBUSY);
                    return;
                }
                s->big_bodies++;
                c->big = true;
                c->max_body = limit;
            }
        }
        if (req->msg.has_length && req->msg.content_length > c->max_body) {
            fail_request(c, JINN_ETOOBIG);
            return;
        }
        expect = jinn_http_header_find(&req->msg, "expect");
        c->expect_continue = expect != NULL && expect->value_len == 12 &&
                             strncasecmp(expect->value, "100-continue", 12) == 0;
        c->head_parsed = true;
        /* Until the request is complete the buffer may move: the head's
         * pointers are stale after the next read. Below, only the framing
         * fields of req->msg (lengths, flags) are used. */
    }
    rv = jinn_http_parse_body(c->buf, c->len, &req->msg, c->max_body, &req->body,
                              &req->body_len, &owned, &c->request_size);
    if (rv == JINN_HTTP_NEED_MORE) {
        if (c->expect_continue && !c->sent_continue) {
            static char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t b = uv_buf_init(cont, sizeof cont - 1);
            /* Queued like any write, so it always precedes the reply. */
            c->cont_write.data = c;
            c->sent_continue =
                conn_write(c, &c->cont_write, &b, 1, continue_written) == 0;
        }
        if (c->len == c->cap && c->cap == buffer_limit(c)) {
            fail_request(c, JINN_ETOOBIG);
        } else {
            arm_timer(c);
        }
        return;
    }
    if (rv != 0) {
        fail_request(c, rv);
        return;
    }
    if (owned) {
        c->owned_body = (char *)req->body;
    }
    /* The whole request is in and the buffer will not move until the reply
     * is written: point the head into it now. Same bytes, same result. */
    limits.max_body = c->max_body;
    rv = jinn_http_parse_head(c->buf, c->len, false, &limits, &req->msg);
    if (rv != 0) {
        fail_request(c, rv == JINN_HTTP_NEED_MORE ? JINN_EINTERNAL : rv);
        return;
    }
    dispatch(c);
}

static void on_connection(uv_stream_t *listener, int status);

static uint32_t peer_ip(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = (int)sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0 ||
        ss.ss_family != AF_INET) {
        return 0;
    }
    return ntohl(((const struct sockaddr_in *)(const void *)&ss)->sin_addr.s_addr);
}

/* Counts c against the per-address limits; over them it is answered (429
 * per address, 503 over the non-reserved total) and closed. */
static bool admit(struct conn *c)
{
    struct jinn_http_server *s = c->server;
    int rv;

    c->ip = peer_ip(c);
    rv = jinn_limit_conn_open(s->cfg.limit, c->ip, &c->limit_kind);
    if (rv == 0) {
        return true;
    }
    /* On a TLS port a plaintext reply would reach a TLS client as a
     * broken record, and a handshake only to refuse would spend the most
     * expensive work on the connection being shed: closed unanswered. */
    if (s->n_refused >= REFUSED_LINGER_MAX || s->tls != NULL) {
        conn_close(c);
        return false;
    }
    s->n_refused++;
    c->refused = true;
    c->keep_alive = false;
    c->handler_pending = true;
    c->state = HANDLING;
    if (rv == JINN_ETOOMANY) {
        jinn_http_add_header(&c->req, "Retry-After", "1");
        jinn_http_reply_error(&c->req, rv, "too many connections from this address");
    } else {
        jinn_http_reply_error(&c->req, rv, "too many connections; try again shortly");
    }
    return false;
}

static void retry_accept(uv_timer_t *t)
{
    struct jinn_http_server *s = t->data;
    if (!s->stopping) {
        on_connection((uv_stream_t *)&s->listener, 0);
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct jinn_http_server *s = listener->data;
    struct conn *c;

    if (status != 0) {
        /* Never fatal. On EMFILE/ENFILE libuv sheds the waiting connections
         * with its reserve descriptor, so the loop does not spin; we only
         * count and log (once a second at most). */
        uint64_t now = uv_now(s->loop);
        s->stats.accept_errors++;
        if (s->last_accept_warn_ms == 0 || now - s->last_accept_warn_ms >= 1000) {
            s->last_accept_warn_ms = now;
            jinn_warn("http accept: %s (%llu so far); connections are refused until "
                      "descriptors free up",
                      uv_strerror(status), (unsigned long long)s->stats.accept_errors);
        }
        return;
    }
    c = conn_new(s);
    if (c == NULL) {
        /* libuv stops polling the listener until we accept: try again
         * shortly instead of never. */
        if (!s->stopping) {
            uv_timer_start(&s->accept_retry, retry_accept, ACCEPT_RETRY_MS, 0);
        }
        return;
    }
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
        s->n_conns - s->n_refused > s->cfg.max_connections) {
        conn_close(c);
        return;
    }
    if (s->cfg.limit != NULL && !admit(c)) {
        return;
    }
    conn_start(c);
}

int jinn_http_adopt(struct jinn_http_server *s, int fd)
{
    struct conn *c = conn_new(s);
    if (c == NULL) {
        return JINN_ENOMEM;
    }
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        conn_close(c);
        return JINN_EIO;
    }
    conn_start(c);
    return 0;
}

static struct conn *conn_new(struct jinn_http_server *s)
{
    struct conn *c = jinn_calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->server = s;
    c->max_body = s->cfg.max_body;
    c->req.server = s;
    c->req.conn = (struct jinn_http_conn *)(void *)c;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->n_conns++;
    s->stats.connections_total++;
    s->stats.connections_open = s->n_conns;
    return c;
}

static void conn_start(struct conn *c)
{
    struct jinn_http_server *s = c->server;
    uv_tcp_nodelay(&c->tcp, 1); /* fails harmlessly on an adopted non-TCP socket */
    c->state = READING;
    if (s->tls != NULL) {
        c->raw = jinn_malloc(TLS_READ_BUFFER);
        if (c->raw == NULL || jinn_tls_open(&c->tls, s->tls, true) != 0) {
            conn_close(c);
            return;
        }
        c->tls_on = true;
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
        /* The handshake deadline: a client that opens a connection and
         * sends half a ClientHello is cut off like a slow request. */
        uv_timer_start(&c->timer, on_timer, s->cfg.read_timeout_ms, 0);
        return;
    }
    process(c);
}

/* ---- upgraded connections ---------------------------------------------------- */

/* Hands what was read to the owner; it borrows buf for the call. */
static void up_deliver(struct conn *c)
{
    while (c->state == UPGRADED && c->len > 0) {
        size_t n = c->len;
        c->len = 0;
        c->up.on_read(c->up.data, (const uint8_t *)c->buf, n);
    }
}

/* Decrypts and delivers everything OpenSSL holds, a buffer at a time. */
static void up_tls_pull(struct conn *c)
{
    while (c->state == UPGRADED) {
        long k = jinn_tls_read(&c->tls, c->buf + c->len, c->cap - c->len);
        if (k == 0) {
            return;
        }
        if (k < 0) {
            (void)tls_flush(c, NULL, NULL); /* an alert, if any */
            conn_close(c);
            return;
        }
        c->len += (size_t)k;
        up_deliver(c);
    }
}

static void up_written(uv_write_t *w, int status)
{
    struct up_write *uw = w->data;
    struct conn *c = uw->c;
    c->up_queued -= uw->n;
    c->server->stats.output_queued_bytes -= uw->n;
    jinn_free(uw);
    if (c->state == CLOSING) {
        return;
    }
    if (status != 0) {
        conn_close(c);
        return;
    }
    if (c->state == UPGRADED && c->up.on_writable != NULL) {
        c->up.on_writable(c->up.data);
    }
}

static int up_write(struct conn *c, const void *bytes, size_t n)
{
    struct up_write *uw = jinn_malloc(sizeof *uw + (n ? n : 1));
    uv_buf_t b;
    if (uw == NULL) {
        return JINN_ENOMEM;
    }
    uw->w.data = uw;
    uw->c = c;
    uw->n = n;
    memcpy(uw->data, bytes, n);
    b = uv_buf_init(uw->data, (unsigned)n);
    c->up_queued += n;
    c->server->stats.output_queued_bytes += n;
    if (conn_write(c, &uw->w, &b, 1, up_written) != 0) {
        c->up_queued -= n;
        c->server->stats.output_queued_bytes -= n;
        jinn_free(uw);
        return JINN_EIO;
    }
    return 0;
}

int jinn_http_upgrade(struct jinn_http_request *req, const char *extra_headers,
                      const struct jinn_http_upgrade_io *io, struct jinn_http_conn **out)
{
    struct conn *c = conn_of(req);
    struct jinn_http_server *s = c->server;
    char head[512 + 2 * JINN_HTTP_MAX_REPLY_HEADERS];
    int head_len;

    assert(c->handler_pending);
    if (c->state != HANDLING || s->stopping) {
        return JINN_ESHUTDOWN;
    }
    if (extra_headers == NULL) {
        extra_headers = "";
    }
    if (strlen(extra_headers) > JINN_HTTP_MAX_REPLY_HEADERS) {
        return JINN_EINVAL;
    }
    head_len = snprintf(head, sizeof head,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n%s%s\r\n",
                        c->reply_headers, extra_headers);
    assert(head_len > 0 && (size_t)head_len < sizeof head);
    c->reply_headers_len = 0;
    c->reply_headers[0] = '\0';
    s->stats.responses[1]++;
    request_done(req);
    c->handler_pending = false;
    c->keep_alive = false;
    c->state = UPGRADED;
    c->upgraded = true;
    c->up = *io;
    uv_timer_stop(&c->timer);
    /* what the client sent after its request is the owner's */
    memmove(c->buf, c->buf + c->request_size, c->len - c->request_size);
    c->len -= c->request_size;
    c->request_size = 0;
    big_release(c);
    jinn_free(c->owned_body);
    c->owned_body = NULL;
    *out = (struct jinn_http_conn *)(void *)c;
    if (up_write(c, head, (size_t)head_len) != 0) {
        conn_close(c); /* on_close follows from the loop */
        return 0;
    }
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
            conn_close(c);
            return 0;
        }
        c->reading = true;
    }
    if (c->len > 0 || c->tls_on) {
        uv_timer_start(&c->timer, on_timer, 0, 0);
    }
    return 0;
}

int jinn_http_conn_write(struct jinn_http_conn *conn, const void *bytes, size_t n)
{
    struct conn *c = (struct conn *)(void *)conn;
    if (c->state != UPGRADED) {
        return JINN_ESHUTDOWN;
    }
    return up_write(c, bytes, n);
}

uint64_t jinn_http_conn_queued(const struct jinn_http_conn *conn)
{
    return ((const struct conn *)(const void *)conn)->up_queued;
}

void jinn_http_conn_close(struct jinn_http_conn *conn)
{
    struct conn *c = (struct conn *)(void *)conn;
    if (c->state == UPGRADED) {
        linger(c); /* shutdown after the queued writes; closed within LINGER_MS */
    }
}

uint64_t jinn_http_conn_unsent(const struct jinn_http_conn *conn)
{
    const struct conn *c = (const struct conn *)(const void *)conn;
    uv_os_fd_t fd;
    int n = 0;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) != 0 || ioctl(fd, SIOCOUTQNSD, &n) != 0 ||
        n < 0) {
        n = 0;
    }
    return c->up_queued + (uint64_t)n;
}

void jinn_http_conn_pause(struct jinn_http_conn *conn, bool pause)
{
    struct conn *c = (struct conn *)(void *)conn;
    if (c->state != UPGRADED || c->reading == !pause) {
        return;
    }
    if (pause) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    } else if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) == 0) {
        c->reading = true;
    } else {
        conn_close(c);
    }
}

void jinn_http_conn_addr(const struct jinn_http_conn *conn, char out[16])
{
    struct conn *c = (struct conn *)(void *)conn;
    uint32_t ip = c->ip != 0 ? c->ip : peer_ip(c);
    struct in_addr a;
    out[0] = '\0';
    if (ip != 0) {
        a.s_addr = htonl(ip);
        inet_ntop(AF_INET, &a, out, 16);
    }
}

void jinn_http_set_tls(struct jinn_http_server *s, SSL_CTX *ctx)
{
    if (ctx != NULL) {
        SSL_CTX_up_ref(ctx);
    }
    SSL_CTX_free(s->tls);
    s->tls = ctx;
}

bool jinn_http_from_peer(const struct jinn_http_request *req)
{
    return conn_of(req)->peer;
}

bool jinn_http_is_tls(const struct jinn_http_request *req)
{
    return conn_of(req)->tls_on;
}

/* Frees a server that never started, once its two handles are closed. */
static void free_unstarted(uv_handle_t *h)
{
    struct jinn_http_server *s = h->data;
    if (++s->unstarted_closed == 2) {
        SSL_CTX_free(s->tls);
        jinn_free(s);
    }
}

int jinn_http_start(uv_loop_t *loop, const struct jinn_http_config *cfg,
                    jinn_http_handler handler, void *data, struct jinn_http_server **out)
{
    struct jinn_http_server *s = jinn_calloc(1, sizeof *s);
    struct sockaddr_in addr;
    char host[64];
    const char *colon = strrchr(cfg->listen, ':');
    int rv;

    if (s == NULL) {
        return JINN_ENOMEM;
    }
    if (colon == NULL || (size_t)(colon - cfg->listen) >= sizeof host) {
        jinn_free(s);
        return JINN_ECONFIG;
    }
    memcpy(host, cfg->listen, (size_t)(colon - cfg->listen));
    host[colon - cfg->listen] = '\0';
    s->loop = loop;
    s->cfg = *cfg;
    s->handler = handler;
    s->data = data;
    s->cfg.tls = NULL;
    jinn_http_set_tls(s, cfg->tls);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(loop, &s->accept_retry);
    s->accept_retry.data = s;
    rv = uv_ip4_addr(host, atoi(colon + 1), &addr);
    if (rv == 0) {
        rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    }
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    }
    if (rv != 0) {
        jinn_error("http_listen %s: %s", cfg->listen, uv_strerror(rv));
        uv_close((uv_handle_t *)&s->listener, free_unstarted);
        uv_close((uv_handle_t *)&s->accept_retry, free_unstarted);
        *out = NULL;
        return JINN_EIO;
    }
    *out = s;
    return 0;
}

static void listener_closed(uv_handle_t *h)
{
    struct jinn_http_server *s = h->data;
    s->listener_closed = true;
    maybe_finish_stop(s);
}

static void accept_retry_closed(uv_handle_t *h)
{
    struct jinn_http_server *s = h->data;
    s->accept_retry_closed = true;
    maybe_finish_stop(s);
}

void jinn_http_stop(struct jinn_http_server *s, void (*cb)(void *data), void *data)
{
    s->stopping = true;
    s->stop_cb = cb;
    s->stop_data = data;
    if (!uv_is_closing((uv_handle_t *)&s->listener)) {
        uv_close((uv_handle_t *)&s->listener, listener_closed);
    } else {
        s->listener_closed = true;
    }
    if (!uv_is_closing((uv_handle_t *)&s->accept_retry)) {
        uv_close((uv_handle_t *)&s->accept_retry, accept_retry_closed);
    } else {
        s->accept_retry_closed = true;
    }
    for (struct conn *c = s->conns, *next; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
    }
    maybe_finish_stop(s);
}

void jinn_http_stats(const struct jinn_http_server *s, struct jinn_http_stats *out)
{
    *out = s->stats;
    out->connections_max = s->cfg.max_connections;
}
