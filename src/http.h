/* http.h - the HTTP/1.1 server on the node's event loop.
 *
 * Accepts connections, reads and parses requests within fixed limits
 * (431/413/414 past them, 400 for malformed input, 408 for a client too
 * slow to send a request), hands each complete request to one callback and
 * writes the reply. Keep-alive and pipelining are supported; a connection
 * handles one request at a time, so replies keep their order. A request may
 * be answered later (after a raft commit): if the client disconnects
 * meanwhile the reply is dropped, never written to freed memory. */
#ifndef JINN_HTTP_H
#define JINN_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "httpmsg.h"
#include "limit.h"

#define JINN_HTTP_MAX_HEAD (16u * 1024)  /* request line + headers */
#define JINN_HTTP_MAX_TARGET (8u * 1024) /* request target */
#define JINN_HTTP_MAX_REPLY_HEADERS 1024 /* bytes of extra reply headers */
/* Output bounds. A connection holds at most one reply (requests are answered
 * one at a time); one reply may be at most max(JINN_HTTP_MAX_OUTPUT,
 * 2 * max_body + 64 KiB) bytes (larger ones are refused with a 500), all
 * connections together queue at most max(JINN_HTTP_MAX_OUTPUT_TOTAL, 4 x
 * that) (503 beyond), and a client that does not read its reply within
 * idle_timeout is cut off. */
#define JINN_HTTP_MAX_OUTPUT (16u << 20)
#define JINN_HTTP_MAX_OUTPUT_TOTAL (256u << 20)

struct jinn_http_server;

struct jinn_http_conn;

struct jinn_http_request {
    struct jinn_http_server *server;
    struct jinn_http_conn *conn; /* private to http.c */
    struct jinn_http_msg msg; /* head; borrowed from the connection's buffer */
    const char *path;         /* raw (still percent-encoded), borrowed */
    size_t path_len;
    const char *query;
    size_t query_len;
    const char *body; /* borrowed until the reply is sent */
    size_t body_len;
    uint64_t received_ms; /* loop time */
    void *user;           /* free for the handler */
    uint32_t client_ip;   /* IPv4, host order; 0 when not an IP socket */
    /* NULL, or called once when the reply is sent (or the request is
     * dropped): request limits count a request until then. */
    void (*done)(void *arg);
    void *done_arg;
};

/* Requests whose route allows a body over max_body (function modules) that
 * may be buffered at once; more are answered 503 busy. */
#define JINN_HTTP_BIG_BODIES_MAX 4

struct jinn_http_config {
    const char *listen; /* "ip:port" */
    uint64_t max_body;
    /* NULL, or the body limit for one request, chosen from its head: a
     * value over max_body lets that route take more (at most
     * JINN_HTTP_BIG_BODIES_MAX such requests at once). */
    uint64_t (*body_limit)(const struct jinn_http_msg *msg);
    uint64_t idle_timeout_ms;
    uint64_t read_timeout_ms; /* a started request must arrive within it */
    unsigned max_connections;
    /* 0, or TEST ONLY a smaller total output limit than the default
     * (JINN_TEST_OUTPUT_TOTAL_LIMIT), to test the refusal path without
     * queueing 256 MiB. */
    uint64_t test_output_total;
    /* NULL, or the per-address connection limits (limit.h, borrowed): a
     * connection over them is answered 429 (per address) or 503 and closed. */
    struct jinn_limit *limit;
    /* NULL: plain HTTP. Else every connection is TLS with this context
     * (a reference is taken; jinn_http_set_tls swaps it for new
     * connections). A connection must finish its handshake within
     * read_timeout. */
    SSL_CTX *tls;
};

/* Called for every complete request. The handler must eventually answer
 * with exactly one jinn_http_reply* call, now or later. */
typedef void (*jinn_http_handler)(void *data, struct jinn_http_request *req);

/* Binds and listens. Returns 0 or an error (logged). cfg is copied. */
int jinn_http_start(uv_loop_t *loop, const struct jinn_http_config *cfg,
                    jinn_http_handler handler, void *data, struct jinn_http_server **out);

/* Serves an already connected stream socket as if it had been accepted
 * (tests and the fuzzer feed the server through a socketpair). Returns 0,
 * the server then owning fd, or an error with fd left open. */
int jinn_http_adopt(struct jinn_http_server *server, int fd);

/* Stops accepting, closes idle connections, drops pending replies; cb runs
 * when every handle is closed and the server is freed. */
void jinn_http_stop(struct jinn_http_server *server, void (*cb)(void *data), void *data);

/* Adds a header to the coming reply ("Name", "value"); both copied. Ignored
 * (logged) beyond JINN_HTTP_MAX_REPLY_HEADERS. */
void jinn_http_add_header(struct jinn_http_request *req, const char *name, const char *value);

/* Sends the reply. body is copied. After this call req must not be used. */
void jinn_http_reply(struct jinn_http_request *req, int status, const char *content_type,
                     const void *body, size_t len);

/* Sends obj (reference stolen) as JSON. */
void jinn_http_reply_json(struct jinn_http_request *req, int status, json_t *obj);

/* Sends {"error": name, "message": ...} with the code's HTTP status. detail,
 * when non-NULL, replaces the table's message. 503s carry Retry-After. */
void jinn_http_reply_error(struct jinn_http_request *req, int code, const char *detail);

/* A streamed reply of len bytes (Content-Length: len, then the connection
 * closes), for bodies too large to copy: a snapshot. start sends the head;
 * each write queues one piece (bufs' memory borrowed until cb; one piece
 * in flight)
 * and cb(data, 0) runs once the kernel took it, so the producer goes at
 * the client's pace; cb(data, error) when the client is gone. The same
 * idle_timeout cuts off a client that stops reading. end must be called
 * exactly once after start (also after a failed start or write), with
 * complete false when fewer than len bytes were sent. */
int jinn_http_stream_start(struct jinn_http_request *req, int status, const char *content_type,
                           uint64_t len);
int jinn_http_stream_write(struct jinn_http_request *req, const uv_buf_t *bufs, unsigned n,
                           void (*cb)(void *data, int status), void *data);
void jinn_http_stream_end(struct jinn_http_request *req, bool complete);

/* ---- connection upgrade (WebSocket) ----------------------------------------
 * jinn_http_upgrade answers req with "101 Switching Protocols" (plus
 * extra_headers, each "Name: value\r\n") and hands the connection, plain
 * or TLS, to io: from then on the bytes the client sends go to on_read and
 * the owner writes with jinn_http_conn_write. The connection leaves HTTP's
 * idle and read timeouts (the owner runs its own heartbeats) and keeps
 * counting toward max_connections. on_writable runs each time a write
 * completed (the owner refills when its queue is low); on_close runs
 * exactly once, from the loop, when the connection is gone (either side,
 * jinn_http_conn_close included, server stop included): conn must not be
 * used after it. Bytes the client sent right after its request arrive on
 * the next loop turn, never inside jinn_http_upgrade. */
struct jinn_http_upgrade_io {
    void (*on_read)(void *data, const uint8_t *bytes, size_t n);
    void (*on_writable)(void *data);
    void (*on_close)(void *data);
    void *data;
};
/* Returns 0 with *out set, or an error (the client left: nothing was sent,
 * no callback runs, req is still to be answered with jinn_http_reply*;
 * JINN_EINVAL when extra_headers is too long). */
int jinn_http_upgrade(struct jinn_http_request *req, const char *extra_headers,
                      const struct jinn_http_upgrade_io *io, struct jinn_http_conn **out);
/* Queues n bytes (copied); 0, or JINN_ESHUTDOWN once closing, JINN_ENOMEM. */
int jinn_http_conn_write(struct jinn_http_conn *conn, const void *bytes, size_t n);
/* Bytes written but not yet taken by the kernel. */
uint64_t jinn_http_conn_queued(const struct jinn_http_conn *conn);
/* Ends the connection once the queued bytes are out (within LINGER, 1 s,
 * however slowly the peer reads); on_close follows. */
void jinn_http_conn_close(struct jinn_http_conn *conn);
/* jinn_http_conn_queued plus what the kernel holds and has not sent yet
 * (SIOCOUTQNSD; bytes in flight not counted, they arrive within a round
 * trip): what waits ahead of the next write. */
uint64_t jinn_http_conn_unsent(const struct jinn_http_conn *conn);
/* Stops (pause true) or resumes reading the connection: what the owner
 * must answer (pongs) is bounded by what it reads, so it stops reading
 * while its output is backed up. Bytes already read are still delivered.
 * Does nothing once the connection is closing. */
void jinn_http_conn_pause(struct jinn_http_conn *conn, bool pause);
/* The peer's IPv4 address ("a.b.c.d"), "" when not an IP socket. */
void jinn_http_conn_addr(const struct jinn_http_conn *conn, char out[16]);

/* Serves new connections with ctx (a reference is taken; the old one is
 * released, connections using it keep it until they close). */
void jinn_http_set_tls(struct jinn_http_server *server, SSL_CTX *ctx);

/* Whether req came over TLS with a client certificate chaining to the
 * cluster CA (jinn_tls_set_peer_ca): a cluster member sent it. */
bool jinn_http_from_peer(const struct jinn_http_request *req);

/* Whether req came over TLS. */
bool jinn_http_is_tls(const struct jinn_http_request *req);

/* True while the client that sent req is still connected. */
bool jinn_http_client_alive(const struct jinn_http_request *req);

struct jinn_http_stats {
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t requests_total;
    uint64_t responses[6]; /* by class: [2] = 2xx ... [5] = 5xx */
    uint64_t output_queued_bytes; /* reply bytes written but not yet taken by the kernel */
    uint64_t replies_refused;     /* over the output limits */
    uint64_t slow_readers_cut;    /* did not read a reply within idle_timeout */
    uint64_t accept_errors;       /* EMFILE and the like; never fatal */
    uint64_t connections_max;
    uint64_t tls_handshake_failures; /* bad, foreign or too slow TLS clients */
};
void jinn_http_stats(const struct jinn_http_server *server, struct jinn_http_stats *out);

#endif
