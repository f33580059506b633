/* ws_feed.c - libFuzzer target for jinn_ws_feed (net/ws.h), server side:
 * the frames a hostile replica may send to a node's /v1/stream, and (with
 * the first byte's low bit set) the client side, what a replica reads.
 *
 * The first byte also picks how the rest is split into feeds (1..16 bytes
 * or all at once). Properties: no message over max_message is delivered,
 * text messages are valid UTF-8, on_close runs at most once, nothing is
 * delivered after it, feed fails exactly once the endpoint is closed, and
 * flushing and destroying at any point is clean. */
#include <string.h>

#include "codec.h"
#include "error.h"
#include "fuzz.h"
#include "log.h"
#include "net/ws.h"

#define MAX_MESSAGE 4096

struct state {
    int closes;
    size_t messages;
    size_t written;
};

static int on_write(void *data, const void *buf, size_t n)
{
    struct state *st = data;
    (void)buf;
    st->written += n;
    return 0;
}

static void on_message(void *data, bool binary, const uint8_t *msg, size_t len)
{
    struct state *st = data;
    FUZZ_CHECK(st->closes == 0);
    FUZZ_CHECK(len <= MAX_MESSAGE);
    FUZZ_CHECK(binary || jinn_utf8_valid(msg, len));
    st->messages++;
}

static void on_close(void *data, int code, const char *why)
{
    struct state *st = data;
    FUZZ_CHECK(why != NULL);
    FUZZ_CHECK(code >= 1000 && code < 5000);
    st->closes++;
    FUZZ_CHECK(st->closes == 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct state st = {0, 0, 0};
    struct jinn_ws_io io = {on_write, on_message, on_close, &st};
    struct jinn_ws *ws = NULL;
    size_t split, off = 1;

    if (size == 0) {
        return 0;
    }
    split = (data[0] >> 1) & 0x0f; /* 0: all at once */
    FUZZ_CHECK(jinn_ws_create((data[0] & 1) == 0, MAX_MESSAGE, &io, &ws) == 0);
    while (off < size) {
        size_t n = split == 0 ? size - off : split;
        int rc;
        if (n > size - off) {
            n = size - off;
        }
        rc = jinn_ws_feed(ws, data + off, n);
        off += n;
        FUZZ_CHECK((rc != 0) == jinn_ws_closed(ws));
        jinn_ws_flush(ws);
        if (rc != 0) {
            FUZZ_CHECK(jinn_ws_feed(ws, data, 1) == JINN_ESHUTDOWN);
            FUZZ_CHECK(jinn_ws_send_copy(ws, true, "x", 1) == JINN_ESHUTDOWN);
            break;
        }
        /* the node keeps sending while it reads */
        if ((data[off - 1] & 0x40) != 0) {
            FUZZ_CHECK(jinn_ws_send_copy(ws, true, data + off - n, n) == 0);
        }
    }
    jinn_ws_flush(ws);
    jinn_ws_destroy(ws);
    return 0;
}
