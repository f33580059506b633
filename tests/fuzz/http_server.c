/* http_server.c - libFuzzer target for the HTTP server's read path.
 *
 * The bytes are fed to a real server connection (src/http.c, adopted from
 * one end of a socketpair) in pieces whose sizes come from the start of the
 * input, one loop turn per piece, so every way a request can be split
 * across reads - head, body, chunk framing, pipelined requests - is
 * reachable. The handler reads everything the request points to (head,
 * path, query, body), so a pointer into a moved or freed buffer is an ASan
 * report, and answers at once or a few pieces later (a request held while
 * more bytes arrive). After the input the client side closes; every
 * connection must then be freed: no crash, no leak, no UB, no stuck
 * connection.
 *
 * Input: [k][k split-size bytes][mode][stream...]
 *   piece sizes cycle through the split bytes b: 1 + b (b < 128), else
 *   1 + (b - 128) * 97; with k = 0 the stream is written at once.
 *   mode bit 0: defer replies; bit 1: large replies; bit 2: half-close
 *   (shutdown) before the final close. */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "error.h"
#include "http.h"
#include "log.h"

#define MAX_BODY 4096
#define MAX_DEFERRED 8
#define DEFER_TURNS 3

static uv_loop_t loop;
static struct jinn_http_server *server;
static struct {
    struct jinn_http_request *req;
    int turns;
} deferred[MAX_DEFERRED];
static int n_deferred;
static bool defer_replies, large_replies;
static volatile unsigned sink; /* keeps the reads below from being optimized away */

static void touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        sink += b[i];
    }
}

static void answer(struct jinn_http_request *req)
{
    static char big[64 * 1024];
    char text[64];
    int n;
    /* The request must still be intact when the answer is made. */
    touch(req->msg.target, req->msg.target_len);
    touch(req->body, req->body_len);
    if (large_replies) {
        jinn_http_add_header(req, "X-Fuzz", "large");
        jinn_http_reply(req, 200, "application/octet-stream", big, sizeof big);
        return;
    }
    n = snprintf(text, sizeof text, "{\"body\":%zu}", req->body_len);
    jinn_http_reply(req, req->body_len % 2 ? 200 : 404, "application/json", text, (size_t)n);
}

static void handler(void *data, struct jinn_http_request *req)
{
    (void)data;
    touch(req->msg.method, strlen(req->msg.method));
    touch(req->msg.target, req->msg.target_len);
    touch(req->path, req->path_len);
    touch(req->query, req->query_len);
    for (unsigned i = 0; i < req->msg.n_headers; i++) {
        touch(req->msg.headers[i].name, req->msg.headers[i].name_len);
        touch(req->msg.headers[i].value, req->msg.headers[i].value_len);
    }
    touch(req->body, req->body_len);
    if (req->body_len > MAX_BODY) {
        abort(); /* the server let through more than max_body */
    }
    if (defer_replies && n_deferred < MAX_DEFERRED) {
        deferred[n_deferred].req = req;
        deferred[n_deferred].turns = DEFER_TURNS;
        n_deferred++;
        return;
    }
    answer(req);
}

/* Answers the deferred requests whose time has come (all with force). */
static void flush_deferred(bool force)
{
    int kept = 0;
    for (int i = 0; i < n_deferred; i++) {
        if (force || --deferred[i].turns <= 0) {
            answer(deferred[i].req);
        } else {
            deferred[kept++] = deferred[i];
        }
    }
    n_deferred = kept;
}

static void drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

static void turn(int client)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    flush_deferred(false);
    if (client >= 0) {
        drain(client);
    }
}

static void setup(void)
{
    struct jinn_http_config cfg = {
        .listen = "127.0.0.1:0",
        .max_body = MAX_BODY,
        .idle_timeout_ms = 600000,
        .read_timeout_ms = 600000,
        .max_connections = 16,
    };
    jinn_log_set_level(JINN_LOG_SILENT);
    signal(SIGPIPE, SIG_IGN); /* as jinn run does: a closed peer is an error code */
    uv_loop_init(&loop);
    if (jinn_http_start(&loop, &cfg, handler, NULL, &server) != 0) {
        abort();
    }
}

static size_t piece_size(const uint8_t *splits, size_t k, size_t i)
{
    uint8_t b = splits[i % k];
    return b < 128 ? 1u + b : 1u + (size_t)(b - 128) * 97;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    struct jinn_http_stats st;
    const uint8_t *splits, *stream;
    size_t k, n, off = 0, piece = 0;
    uint8_t mode;
    int sv[2];

    if (!ready) {
        setup();
        ready = true;
    }
    if (size < 2) {
        return 0;
    }
    k = data[0] % 8;
    if (size < 2 + k) {
        return 0;
    }
    splits = data + 1;
    mode = data[1 + k];
    stream = data + 2 + k;
    n = size - 2 - k;
    defer_replies = mode & 1;
    large_replies = mode & 2;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
        abort();
    }
    if (jinn_http_adopt(server, sv[1]) != 0) {
        abort();
    }
    while (off < n) {
        size_t want = k == 0 ? n - off : piece_size(splits, k, piece++);
        ssize_t w;
        int stuck = 0;
        if (want > n - off) {
            want = n - off;
        }
        while ((w = write(sv[0], stream + off, want)) < 0 && errno == EAGAIN && stuck < 50) {
            turn(sv[0]); /* the server is not reading yet: let it catch up */
            stuck++;
        }
        if (w <= 0) {
            break; /* the server stopped reading for good (an error reply) */
        }
        off += (size_t)w;
        turn(sv[0]);
    }
    for (int i = 0; i < DEFER_TURNS + 2; i++) {
        turn(sv[0]);
    }
    if (mode & 4) {
        shutdown(sv[0], SHUT_WR);
        turn(sv[0]);
    }
    close(sv[0]);
    /* Every connection must go away once its client has: answer whatever
     * is still held and let the closes run. */
    for (int i = 0; i < 1000; i++) {
        flush_deferred(true);
        uv_run(&loop, UV_RUN_NOWAIT);
        jinn_http_stats(server, &st);
        if (st.connections_open == 0 && n_deferred == 0) {
            return 0;
        }
    }
    fprintf(stderr, "a connection outlived its client\n");
    abort();
}
