/* test_http_upgrade.c - jinn_http_upgrade on a real server connection
 * (adopted from a socketpair): the 101 head with extra headers, bytes the
 * client sent right after its request delivered on the next loop turn,
 * writes, queued-bytes accounting, and on_close exactly once whichever
 * side ends the connection. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "http.h"
#include "unit.h"

struct up {
    struct jinn_http_conn *conn;
    struct jinn_wbuf got; /* bytes on_read saw */
    int closes;
    int writables;
    bool upgraded_in_handler;
    bool read_during_upgrade;
    bool in_upgrade;
};

static struct up U;

static void up_read(void *data, const uint8_t *bytes, size_t n)
{
    struct up *u = data;
    if (u->in_upgrade) {
        u->read_during_upgrade = true;
    }
    jinn_wbuf_put_raw(&u->got, bytes, n);
    /* echo, upper-cased first byte */
    if (n > 0) {
        (void)jinn_http_conn_write(u->conn, bytes, n);
    }
}

static void up_writable(void *data)
{
    struct up *u = data;
    u->writables++;
}

static void up_closed(void *data)
{
    struct up *u = data;
    u->closes++;
}

static void handler(void *data, struct jinn_http_request *req)
{
    struct jinn_http_upgrade_io io = {up_read, up_writable, up_closed, &U};
    (void)data;
    if (req->path_len == 3 && memcmp(req->path, "/ws", 3) == 0) {
        U.in_upgrade = true;
        U.upgraded_in_handler = jinn_http_upgrade(req, "X-Test: 1\r\n", &io, &U.conn) == 0;
        U.in_upgrade = false;
        return;
    }
    jinn_http_reply(req, 404, "text/plain", "no", 2);
}

static struct jinn_wbuf client_got;

static void pump_client(int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            return;
        }
        jinn_wbuf_put_raw(&client_got, buf, (size_t)n);
    }
}

/* Runs the loop until cond or about 5 s. */
#define SPIN(loop, fd, cond)                                                                   \
    do {                                                                                       \
        for (int spin_ = 0; spin_ < 5000 && !(cond); spin_++) {                                \
            uv_run((loop), UV_RUN_NOWAIT);                                                     \
            pump_client(fd);                                                                   \
            usleep(1000);                                                                      \
        }                                                                                      \
    } while (0)

static bool has(const struct jinn_wbuf *w, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= w->len; i++) {
        if (memcmp(w->data + i, s, n) == 0) {
            return true;
        }
    }
    return false;
}

static void stopped(void *data)
{
    *(int *)data = 1;
}

static int run_case(bool client_closes)
{
    uv_loop_t loop;
    struct jinn_http_server *server = NULL;
    struct jinn_http_config cfg = {0};
    int sv[2], done = 0, ok = 0;
    static const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\nEARLY";

    memset(&U, 0, sizeof U);
    jinn_wbuf_init(&U.got);
    jinn_wbuf_init(&client_got);
    uv_loop_init(&loop);
    cfg.listen = "127.0.0.1:0";
    cfg.max_body = 4096;
    cfg.idle_timeout_ms = 100; /* an upgraded connection must outlive it */
    cfg.read_timeout_ms = 100;
    cfg.max_connections = 8;
    if (jinn_http_start(&loop, &cfg, handler, NULL, &server) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        return 0;
    }
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    if (jinn_http_adopt(server, sv[0]) != 0) {
        return 0;
    }
    if (write(sv[1], req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        return 0;
    }
    SPIN(&loop, sv[1], U.got.len >= 5 && has(&client_got, "EARLY"));
    ok = U.upgraded_in_handler && !U.read_during_upgrade && U.got.len == 5 &&
         memcmp(U.got.data, "EARLY", 5) == 0 &&
         has(&client_got, "HTTP/1.1 101 Switching Protocols\r\n") &&
         has(&client_got, "X-Test: 1\r\n") && has(&client_got, "\r\n\r\nEARLY");
    /* past the idle and read timeouts: still open */
    for (int i = 0; i < 300; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    ok = ok && U.closes == 0;
    if (write(sv[1], "MORE", 4) != 4) {
        ok = 0;
    }
    SPIN(&loop, sv[1], has(&client_got, "EARLYMORE"));
    ok = ok && has(&client_got, "EARLYMORE") && U.writables >= 2;
    SPIN(&loop, sv[1], jinn_http_conn_queued(U.conn) == 0);
    ok = ok && jinn_http_conn_queued(U.conn) == 0;
    if (client_closes) {
        close(sv[1]);
        SPIN(&loop, -1, U.closes > 0);
    } else {
        jinn_http_conn_close(U.conn);
        jinn_http_conn_close(U.conn); /* twice: harmless */
        SPIN(&loop, sv[1], U.closes > 0);
        close(sv[1]);
    }
    ok = ok && U.closes == 1;
    jinn_http_stop(server, stopped, &done);
    SPIN(&loop, -1, done);
    uv_run(&loop, UV_RUN_DEFAULT);
    ok = ok && done && U.closes == 1;
    uv_loop_close(&loop);
    jinn_wbuf_free(&U.got);
    jinn_wbuf_free(&client_got);
    return ok;
}

TEST(http_upgrade_server_closes)
{
    CHECK(run_case(false));
}

TEST(http_upgrade_client_closes)
{
    CHECK(run_case(true));
}
