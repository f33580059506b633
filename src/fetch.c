/* fetch.c - see fetch.h. Finished connections whose reply allowed keep-alive
 * wait in a small pool for the next request to the same URL; an idle one
 * that the server closes (or that idles too long) is dropped. */
#include "fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/nodes.h"
#include "log.h"
#include "tls.h"

#define POOL_MAX 64
#define METHOD_MAX 16
#define POOL_IDLE_MS 20000 /* below the servers' idle timeout */
#define TLS_READ_BUFFER (17u * 1024)

struct fetch {
    char url[JINN_NODE_API_MAX + 1];
    uv_loop_t *loop;
    struct fetch *pool_next;
    struct fetch *live_prev, *live_next; /* every fetch whose handles are open */
    bool idle;
    bool write_pending;
    uint64_t idle_since;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    int open_handles;
    struct jinn_wbuf request;
    char *buf;
    size_t len, cap;
    bool sent;
    bool done;
    jinn_fetch_cb cb;
    void *data;
    bool tls_on;
    bool tls_closed; /* close_notify (or a broken session) read: never pooled */
    struct jinn_tls tls;
    char *raw; /* ciphertext read (TLS) */
};

struct tls_write {
    uv_write_t req;
    struct fetch *f;
    bool request; /* the request's bytes: on_written when done */
    char *data;
};

static SSL_CTX *tls_ctx;

void jinn_fetch_set_tls(SSL_CTX *ctx)
{
    if (ctx != NULL) {
        SSL_CTX_up_ref(ctx);
    }
    SSL_CTX_free(tls_ctx);
    tls_ctx = ctx;
}

static struct fetch *pool;
static unsigned pool_len;
static struct fetch *live; /* all of them, idle or busy, until their handles close */
static bool stopping;      /* jinn_fetch_stop_all ran: no new requests */

int jinn_fetch_parse_url(const char *url, struct sockaddr_in *addr)
{
    char host[64];
    const char *p, *colon, *end;
    long port;
    char *port_end;

    if (strncmp(url, "http://", 7) != 0) {
        return -1;
    }
    p = url + 7;
    end = strchr(p, '/');
    if (end == NULL) {
        end = p + strlen(p);
    }
    colon = memchr(p, ':', (size_t)(end - p));
    if (colon == NULL || (size_t)(colon - p) >= sizeof host || colon == p) {
        return -1;
    }
    memcpy(host, p, (size_t)(colon - p));
    host[colon - p] = '\0';
    port = strtol(colon + 1, &port_end, 10);
    if (port_end != end || port <= 0 || port > 65535) {
        return -1;
    }
    return uv_ip4_addr(host, (int)port, addr) == 0 ? 0 : -1;
}

static void closed(uv_handle_t *h)
{
    struct fetch *f = h->data;
    if (--f->open_handles == 0) {
        if (f->live_prev != NULL) {
            f->live_prev->live_next = f->live_next;
        } else {
            live = f->live_next;
        }
        if (f->live_next != NULL) {
            f->live_next->live_prev = f->live_prev;
        }
        jinn_wbuf_free(&f->request);
        jinn_free(f->buf);
        jinn_free(f->raw);
        jinn_tls_close(&f->tls);
        jinn_free(f);
    }
}

static void close_conn(struct fetch *f)
{
    if (uv_is_closing((uv_handle_t *)&f->tcp)) {
        return;
    }
    uv_close((uv_handle_t *)&f->timer, closed);
    uv_close((uv_handle_t *)&f->tcp, closed);
}

static void unpool(struct fetch *f)
{
    for (struct fetch **p = &pool; *p != NULL; p = &(*p)->pool_next) {
        if (*p == f) {
            *p = f->pool_next;
            pool_len--;
            break;
        }
    }
    f->idle = false;
}

static void finish(struct fetch *f, int code, const struct jinn_http_msg *head,
                   const char *body, size_t body_len, bool reusable)
{
    if (f->done) {
        return;
    }
    f->done = true;
    f->cb(f->data, code, head, body, body_len);
    if (reusable && !f->tls_closed && !f->write_pending && pool_len < POOL_MAX) {
        uv_timer_stop(&f->timer);
        f->len = 0;
        f->idle = true;
        f->idle_since = uv_now(f->loop);
        f->pool_next = pool;
        pool = f;
        pool_len++;
        return;
    }
    close_conn(f);
}

static void fail(struct fetch *f)
{
    finish(f, f->sent ? JINN_EUNKNOWN : JINN_EFORWARD, NULL, NULL, 0, false);
}

static void on_timeout(uv_timer_t *t) { fail(t->data); }

/* Returns true when a whole response was found and delivered. */
static bool try_complete(struct fetch *f, bool eof)
{
    struct jinn_http_limits limits = {64u * 1024, 0, JINN_FETCH_MAX_RESPONSE};
    struct jinn_http_msg head;
    const char *body;
    size_t body_len, total;
    bool owned;
    int rv = jinn_http_parse_head(f->buf, f->len, true, &limits, &head);

    if (rv == JINN_HTTP_NEED_MORE) {
        return false;
    }
    if (rv != 0) {
        fail(f);
        return true;
    }
    rv = jinn_http_parse_body(f->buf, f->len, &head, JINN_FETCH_MAX_RESPONSE, &body,
                              &body_len, &owned, &total);
    if (rv == JINN_HTTP_NEED_MORE && !(eof && head.body_until_close)) {
        return false;
    }
    if (rv != 0 && rv != JINN_HTTP_NEED_MORE) {
        fail(f);
        return true;
    }
    finish(f, JINN_OK, &head, body, body_len,
           rv == 0 && head.keep_alive && !head.body_until_close && total == f->len);
    if (owned) {
        jinn_free((void *)body);
    }
    return true;
}

static void grow(struct fetch *f)
{
    if (f->cap - f->len < 4096 && f->cap < JINN_FETCH_MAX_RESPONSE + 65536) {
        size_t cap = f->cap ? f->cap * 2 : 16384;
        char *grown = jinn_realloc(f->buf, cap);
        if (grown != NULL) {
            f->buf = grown;
            f->cap = cap;
        }
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fetch *f = h->data;
    (void)suggested;
    if (f->tls_on) {
        buf->base = f->raw;
        buf->len = TLS_READ_BUFFER;
        return;
    }
    if (f->cap - f->len < 4096 && f->cap < JINN_FETCH_MAX_RESPONSE + 65536) {
        size_t cap = f->cap ? f->cap * 2 : 16384;
        char *grown = jinn_realloc(f->buf, cap);
        if (grown != NULL) {
            f->buf = grown;
            f->cap = cap;
        }
    }
    buf->base = f->buf + f->len;
    buf->len = f->cap - f->len;
}

static void send_request(struct fetch *f);
static int tls_flush(struct fetch *f, bool request);

/* Ciphertext arrived: advance the handshake (then send the request), and
 * move the plaintext into buf. false when the exchange failed. */
static bool tls_input(struct fetch *f, size_t n)
{
    if (jinn_tls_feed(&f->tls, f->raw, n) != 0) {
        return false;
    }
    if (!f->tls.established) {
        int r = jinn_tls_handshake(&f->tls);
        if (tls_flush(f, false) != 0) {
            return false;
        }
        if (r < 0) {
            char why[256];
            jinn_warn("TLS to %s failed: %s", f->url, jinn_tls_error(why, sizeof why));
            return false;
        }
        if (r == 0) {
            return true;
        }
        send_request(f);
        if (f->done) {
            return true;
        }
    }
    for (;;) {
        long k;
        grow(f);
        if (f->cap == f->len) {
            return false; /* over the response limit */
        }
        k = jinn_tls_read(&f->tls, f->buf + f->len, f->cap - f->len);
        if (k == 0) {
            return true;
        }
        if (k < 0) {
            /* The server ended the session (close_notify), possibly right
             * after a complete response in the same read: the caller
             * decides from what arrived. */
            f->tls_closed = true;
            return true;
        }
        f->len += (size_t)k;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct fetch *f = s->data;
    (void)buf;
    if (f->tls_on && nread > 0 && !f->idle && !f->done) {
        if (!tls_input(f, (size_t)nread)) {
            fail(f);
            return;
        }
        if (!f->done && f->tls.established && f->sent) {
            if (!try_complete(f, f->tls_closed) && f->tls_closed) {
                fail(f);
            }
        } else if (!f->done && f->tls_closed) {
            fail(f);
        }
        return;
    }
    if (f->idle) {
        /* The server closed (or spoke on) a connection we were keeping. */
        unpool(f);
        close_conn(f);
        return;
    }
    if (f->done) {
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF || !try_complete(f, true)) {
            fail(f);
        }
        return;
    }
    f->len += (size_t)nread;
    try_complete(f, false);
}

static void on_written(uv_write_t *w, int status)
{
    struct fetch *f = w->data;
    f->write_pending = false;
    if (status != 0) {
        fail(f);
    }
}

static void tls_written(uv_write_t *w, int status)
{
    struct tls_write *tw = w->data;
    struct fetch *f = tw->f;
    bool request = tw->request;
    jinn_free(tw->data);
    jinn_free(tw);
    if (request) {
        f->write_pending = false;
        if (status != 0) {
            fail(f);
        }
    }
}

/* Sends the ciphertext OpenSSL queued. 0 or a libuv error. */
static int tls_flush(struct fetch *f, bool request)
{
    size_t len;
    bool oom;
    char *data = jinn_tls_take(&f->tls, &len, &oom);
    struct tls_write *tw;
    uv_buf_t b;
    int rv;
    if (oom) {
        return UV_ENOMEM;
    }
    if (data == NULL && !request) {
        return 0;
    }
    tw = jinn_malloc(sizeof *tw);
    if (tw == NULL) {
        jinn_free(data);
        return UV_ENOMEM;
    }
    tw->req.data = tw;
    tw->f = f;
    tw->request = request;
    tw->data = data;
    b = uv_buf_init(data != NULL ? data : (char *)"", (unsigned)len);
    rv = uv_write(&tw->req, (uv_stream_t *)&f->tcp, &b, 1, tls_written);
    if (rv != 0) {
        jinn_free(data);
        jinn_free(tw);
    }
    return rv;
}

static void send_request(struct fetch *f)
{
    uv_buf_t b = uv_buf_init((char *)f->request.data, (unsigned)f->request.len);
    f->write.data = f;
    if (f->tls_on) {
        if (jinn_tls_write(&f->tls, f->request.data, f->request.len) != 0 ||
            tls_flush(f, true) != 0) {
            fail(f);
            return;
        }
        f->write_pending = true;
        f->sent = true;
        return;
    }
    if (uv_write(&f->write, (uv_stream_t *)&f->tcp, &b, 1, on_written) != 0) {
        fail(f);
        return;
    }
    f->write_pending = true;
    /* From here on the server may act on the request. */
    f->sent = true;
}

/* An idle pooled connection to url, or NULL. Stale ones are closed. */
static struct fetch *from_pool(uv_loop_t *loop, const char *url)
{
    for (struct fetch *f = pool, *next; f != NULL; f = next) {
        next = f->pool_next;
        if (uv_now(loop) - f->idle_since > POOL_IDLE_MS) {
            unpool(f);
            close_conn(f);
        } else if (strcmp(f->url, url) == 0) {
            unpool(f);
            return f;
        }
    }
    return NULL;
}

void jinn_fetch_close_idle(void)
{
    while (pool != NULL) {
        struct fetch *f = pool;
        unpool(f);
        close_conn(f);
    }
}

static int expect_url_ip(struct fetch *f)
{
    struct sockaddr_in addr;
    char ip[INET_ADDRSTRLEN];
    if (jinn_fetch_parse_url(f->url, &addr) != 0 ||
        uv_ip4_name(&addr, ip, sizeof ip) != 0) {
        return -1;
    }
    return jinn_tls_expect_ip(&f->tls, ip);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct fetch *f = req->data;
    if (f->done) {
        return;
    }
    if (status != 0) {
        fail(f);
        return;
    }
    if (tls_ctx != NULL) {
        f->raw = jinn_malloc(TLS_READ_BUFFER);
        if (f->raw == NULL || jinn_tls_open(&f->tls, tls_ctx, false) != 0) {
            fail(f);
            return;
        }
        f->tls_on = true;
        /* The server must be the node at that address (its IP in the
         * certificate), or this node itself (its pinned leaf). */
        if (expect_url_ip(f) != 0) {
            fail(f);
            return;
        }
    }
    if (uv_read_start((uv_stream_t *)&f->tcp, alloc_cb, on_read) != 0) {
        fail(f);
        return;
    }
    if (f->tls_on) {
        /* The ClientHello; the request follows the handshake. */
        if (jinn_tls_handshake(&f->tls) < 0 || tls_flush(f, false) != 0) {
            fail(f);
        }
        return;
    }
    send_request(f);
}

/* RFC 9110 token characters: header names and methods. */
static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Visible bytes only: no space, no control byte (CR, LF, NUL...). Bytes
 * from 0x80 up pass: they cannot end a line. */
static bool target_ok(const char *t, size_t len)
{
    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

/* A block of "Name: value\r\n" lines: names are tokens, values hold no
 * control byte but HTAB, and every line ends with exactly one CRLF. */
static bool headers_ok(const char *h)
{
    while (*h != '\0') {
        const char *p = h;
        while (is_tchar((unsigned char)*p)) {
            p++;
        }
        if (p == h || *p != ':') {
            return false;
        }
        for (p++; *p != '\r'; p++) {
            unsigned char c = (unsigned char)*p;
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                return false; /* includes NUL (end of block) and a bare LF */
            }
        }
        if (p[1] != '\n') {
            return false;
        }
        h = p + 2;
    }
    return true;
}

int jinn_fetch_build_request(struct jinn_wbuf *out, const char *base_url, const char *method,
                             const char *target, size_t target_len, const char *extra_headers,
                             const void *body, size_t body_len)
{
    size_t url_len = base_url != NULL ? strlen(base_url) : 0;
    size_t method_len = method != NULL ? strlen(method) : 0;
    int host_len;

    /* Everything that goes into the head is checked here, whoever gave it:
     * a client (target, headers), the node directory (the URL) or code. */
    if (!jinn_nodes_url_valid(base_url, url_len) || method_len == 0 ||
        method_len > METHOD_MAX || target == NULL || !target_ok(target, target_len) ||
        (extra_headers != NULL && !headers_ok(extra_headers))) {
        return JINN_EINVAL;
    }
    for (size_t i = 0; i < method_len; i++) {
        if (!is_tchar((unsigned char)method[i])) {
            return JINN_EINVAL;
        }
    }
    host_len = (int)(url_len - 7 - (base_url[url_len - 1] == '/'));
    jinn_wbuf_printf(out, "%s %.*s HTTP/1.1\r\nHost: %.*s\r\nConnection: keep-alive\r\n",
                     method, (int)target_len, target, host_len, base_url + 7);
    jinn_wbuf_printf(out, "Content-Length: %zu\r\n%s\r\n", body_len,
                     extra_headers ? extra_headers : "");
    jinn_wbuf_put_raw(out, body, body_len);
    return out->failed ? JINN_ENOMEM : 0;
}

void jinn_fetch_cancel(void *data)
{
    for (struct fetch *f = live; f != NULL; f = f->live_next) {
        if (!f->done && !f->idle && f->data == data) {
            fail(f); /* not reusable: closes the connection */
            return;
        }
    }
}

void jinn_fetch_stop_all(void)
{
    stopping = true;
    jinn_fetch_close_idle();
    for (struct fetch *f = live; f != NULL; f = f->live_next) {
        /* fail() runs the callback once and closes; close_conn skips what
         * is already closing. */
        fail(f);
        close_conn(f);
    }
}

int jinn_fetch(uv_loop_t *loop, const char *base_url, const char *method, const char *target,
               size_t target_len, const char *extra_headers, const void *body, size_t body_len,
               uint64_t timeout_ms, jinn_fetch_cb cb, void *data)
{
    struct sockaddr_in addr;
    struct fetch *f;
    struct jinn_wbuf request;
    int rv;

    if (stopping) {
        return JINN_ESHUTDOWN;
    }
    if (base_url == NULL || jinn_fetch_parse_url(base_url, &addr) != 0 ||
        strlen(base_url) >= sizeof f->url) {
        return JINN_EINVAL;
    }
    jinn_wbuf_init(&request);
    rv = jinn_fetch_build_request(&request, base_url, method, target, target_len, extra_headers,
                                  body, body_len);
    if (rv != 0) {
        jinn_wbuf_free(&request);
        return rv;
    }
    f = from_pool(loop, base_url);
    if (f != NULL) {
        jinn_wbuf_free(&f->request);
        f->request = request;
        f->cb = cb;
        f->data = data;
        f->done = false;
        f->sent = false;
        uv_timer_start(&f->timer, on_timeout, timeout_ms, 0);
        send_request(f);
        return 0;
    }
    f = jinn_calloc(1, sizeof *f);
    if (f == NULL) {
        jinn_wbuf_free(&request);
        return JINN_ENOMEM;
    }
    f->request = request;
    f->loop = loop;
    f->live_next = live;
    if (live != NULL) {
        live->live_prev = f;
    }
    live = f;
    snprintf(f->url, sizeof f->url, "%s", base_url);
    f->cb = cb;
    f->data = data;
    uv_tcp_init(loop, &f->tcp);
    uv_timer_init(loop, &f->timer);
    f->tcp.data = f;
    f->timer.data = f;
    f->open_handles = 2;
    f->connect.data = f;
    uv_timer_start(&f->timer, on_timeout, timeout_ms, 0);
    if (uv_tcp_connect(&f->connect, &f->tcp, (const struct sockaddr *)&addr, on_connect) != 0) {
        f->done = true;
        uv_close((uv_handle_t *)&f->timer, closed);
        uv_close((uv_handle_t *)&f->tcp, closed);
        return JINN_EFORWARD;
    }
    return 0;
}
