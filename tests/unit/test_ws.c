/* test_ws.c - a server and a client jinn_ws wired back to back through
 * two byte pipes: messages of every size in any split, shared buffers,
 * the masking rule, oversized messages, close handshakes, handshake keys. */
#include <stdlib.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "net/ws.h"
#include "unit.h"

struct end {
    struct jinn_ws *ws;
    struct jinn_wbuf out; /* bytes written to the transport */
    int fail_writes;
    /* received messages, concatenated, with their count */
    struct jinn_wbuf got;
    size_t n_msgs;
    bool last_binary;
    int close_code;
    int n_closes;
};

static int end_write(void *data, const void *buf, size_t n)
{
    struct end *e = data;
    if (e->fail_writes) {
        return JINN_EIO;
    }
    jinn_wbuf_put_raw(&e->out, buf, n);
    return e->out.failed ? JINN_ENOMEM : 0;
}

static void end_msg(void *data, bool binary, const uint8_t *msg, size_t len)
{
    struct end *e = data;
    jinn_wbuf_put_raw(&e->got, msg, len);
    e->n_msgs++;
    e->last_binary = binary;
}

static void end_close(void *data, int code, const char *why)
{
    struct end *e = data;
    (void)why;
    e->close_code = code;
    e->n_closes++;
}

static int end_init(struct end *e, bool server, uint64_t max)
{
    memset(e, 0, sizeof *e);
    jinn_wbuf_init(&e->out);
    jinn_wbuf_init(&e->got);
    struct jinn_ws_io io = {end_write, end_msg, end_close, e};
    return jinn_ws_create(server, max, &io, &e->ws);
}

static void end_free(struct end *e)
{
    jinn_ws_destroy(e->ws);
    jinn_wbuf_free(&e->out);
    jinn_wbuf_free(&e->got);
}

/* Moves everything src wrote into dst, in pieces of 1..split bytes
 * (split 0: all at once). Returns the last feed result. */
static int pump(struct end *src, struct end *dst, size_t split, unsigned *seed)
{
    int rc = 0;
    for (int round = 0; round < 100000; round++) {
        jinn_ws_flush(src->ws);
        if (src->out.len == 0) {
            break;
        }
        size_t off = 0;
        while (off < src->out.len) {
            size_t n = src->out.len - off;
            if (split > 0) {
                size_t k = 1 + (size_t)rand_r(seed) % split;
                n = k < n ? k : n;
            }
            rc = jinn_ws_feed(dst->ws, src->out.data + off, n);
            off += n;
            if (rc != 0) {
                break;
            }
        }
        src->out.len = 0;
        if (rc != 0) {
            break;
        }
    }
    return rc;
}

TEST(ws_messages_any_size_any_split)
{
    struct end s, c;
    unsigned seed = 17;
    CHECK_INT(end_init(&s, true, 2u << 20), 0);
    CHECK_INT(end_init(&c, false, 2u << 20), 0);
    static const size_t sizes[] = {1, 2, 125, 126, 127, 65535, 65536, 70000, 1u << 20};
    static const size_t splits[] = {0, 1, 7, 4096};
    uint8_t *pat = jinn_malloc(1u << 20);
    CHECK(pat != NULL);
    for (size_t i = 0; i < (1u << 20); i++) {
        pat[i] = (uint8_t)(i * 31 + 7);
    }
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        for (size_t pi = 0; pi < sizeof splits / sizeof *splits; pi++) {
            size_t n = sizes[si];
            if (n > 70000 && splits[pi] == 1) {
                continue; /* 1 MiB one byte at a time: covered by 7 */
            }
            /* server -> client, shared buffer sent twice */
            struct jinn_ws_buf *b = jinn_ws_buf_new(n);
            CHECK(b != NULL);
            memcpy(b->data, pat, n);
            CHECK_INT(jinn_ws_send(s.ws, true, b), 0);
            CHECK_INT(jinn_ws_send(s.ws, true, b), 0);
            CHECK_INT(jinn_ws_queued_bytes(s.ws), 2 * n);
            jinn_ws_buf_unref(b);
            c.got.len = 0;
            c.n_msgs = 0;
            CHECK_INT(pump(&s, &c, splits[pi], &seed), 0);
            CHECK_INT(jinn_ws_queued_bytes(s.ws), 0);
            CHECK_INT(c.n_msgs, 2);
            CHECK(c.last_binary);
            CHECK_INT(c.got.len, 2 * n);
            CHECK(memcmp(c.got.data, pat, n) == 0);
            CHECK(memcmp(c.got.data + n, pat, n) == 0);
            /* client -> server (masked), text */
            memset(pat, 'a', n); /* text: valid UTF-8 */
            CHECK_INT(jinn_ws_send_copy(c.ws, false, pat, n), 0);
            s.got.len = 0;
            s.n_msgs = 0;
            CHECK_INT(pump(&c, &s, splits[pi], &seed), 0);
            CHECK_INT(s.n_msgs, 1);
            CHECK(!s.last_binary);
            CHECK_INT(s.got.len, n);
            CHECK(memcmp(s.got.data, pat, n) == 0);
            for (size_t i = 0; i < n; i++) {
                pat[i] = (uint8_t)(i * 31 + 7);
            }
        }
    }
    CHECK_INT(s.n_closes + c.n_closes, 0);
    CHECK(jinn_ws_sent_bytes(s.ws) > 0);
    jinn_free(pat);
    end_free(&s);
    end_free(&c);
}

TEST(ws_empty_message_and_ping)
{
    struct end s, c;
    unsigned seed = 1;
    CHECK_INT(end_init(&s, true, 1024), 0);
    CHECK_INT(end_init(&c, false, 1024), 0);
    CHECK_INT(jinn_ws_send_copy(s.ws, true, "", 0), 0);
    CHECK_INT(jinn_ws_ping(s.ws), 0);
    CHECK_INT(pump(&s, &c, 0, &seed), 0);
    CHECK_INT(c.n_msgs, 1);
    CHECK_INT(c.got.len, 0);
    /* the client answered the ping with a pong: the server takes it */
    CHECK_INT(pump(&c, &s, 0, &seed), 0);
    CHECK_INT(s.n_msgs, 0);
    CHECK_INT(s.n_closes, 0);
    end_free(&s);
    end_free(&c);
}

/* A client that does not mask (two servers talking) breaks RFC 6455: the
 * receiving server closes with 1002. Likewise a masked frame to a client. */
TEST(ws_masking_violation)
{
    struct end a, b;
    unsigned seed = 2;
    CHECK_INT(end_init(&a, true, 1024), 0);
    CHECK_INT(end_init(&b, true, 1024), 0);
    CHECK_INT(jinn_ws_send_copy(a.ws, true, "hi", 2), 0);
    CHECK(pump(&a, &b, 0, &seed) != 0);
    CHECK_INT(b.n_msgs, 0);
    CHECK_INT(b.n_closes, 1);
    CHECK_INT(b.close_code, JINN_WS_CLOSE_PROTOCOL);
    CHECK(jinn_ws_closed(b.ws));
    CHECK_INT(jinn_ws_send_copy(b.ws, true, "x", 1), JINN_ESHUTDOWN);
    CHECK_INT(jinn_ws_feed(b.ws, (const uint8_t *)"x", 1), JINN_ESHUTDOWN);
    end_free(&a);
    end_free(&b);
    CHECK_INT(end_init(&a, false, 1024), 0);
    CHECK_INT(end_init(&b, false, 1024), 0);
    CHECK_INT(jinn_ws_send_copy(a.ws, true, "hi", 2), 0);
    CHECK(pump(&a, &b, 0, &seed) != 0);
    CHECK_INT(b.n_msgs, 0);
    CHECK_INT(b.close_code, JINN_WS_CLOSE_PROTOCOL);
    end_free(&a);
    end_free(&b);
}

/* A message over max_message is refused with close 1009, and the close
 * frame reaches the peer. */
TEST(ws_oversized_message)
{
    struct end s, c;
    unsigned seed = 3;
    CHECK_INT(end_init(&s, true, 1000), 0);
    CHECK_INT(end_init(&c, false, 1u << 20), 0);
    char big[1001];
    memset(big, 'x', sizeof big);
    CHECK_INT(jinn_ws_send_copy(c.ws, true, big, 1000), 0);
    CHECK_INT(pump(&c, &s, 0, &seed), 0);
    CHECK_INT(s.n_msgs, 1);
    CHECK_INT(jinn_ws_send_copy(c.ws, true, big, 1001), 0);
    CHECK(pump(&c, &s, 5, &seed) != 0);
    CHECK_INT(s.n_msgs, 1);
    CHECK_INT(s.n_closes, 1);
    CHECK_INT(s.close_code, JINN_WS_CLOSE_TOO_BIG);
    /* the refusing side knows the size it refused, and that it closed */
    {
        bool whole = false;
        CHECK_INT(jinn_ws_refused_length(s.ws, &whole), 1001);
        CHECK(whole);
    }
    CHECK(!jinn_ws_closed_by_peer(s.ws));
    /* the server's close frame tells the client why */
    pump(&s, &c, 0, &seed);
    CHECK_INT(c.n_closes, 1);
    CHECK_INT(c.close_code, JINN_WS_CLOSE_TOO_BIG);
    CHECK(jinn_ws_closed_by_peer(c.ws));
    {
        bool whole = true;
        CHECK_INT(jinn_ws_refused_length(c.ws, &whole), 0);
        CHECK(!whole);
    }
    end_free(&s);
    end_free(&c);
}

/* R3 M3: a message far over the limit (a snapshot over the replica's
 * replica_max_snapshot) was refused by wslay's own check before ours, and
 * reported as a protocol error (1002) or, after a text message, 1007,
 * with no size. */
TEST(ws_far_oversized_message_says_its_size)
{
    struct end s, c;
    unsigned seed = 5;
    static char big[64 * 1024];
    CHECK_INT(end_init(&s, false, 1000), 0);
    CHECK_INT(end_init(&c, true, 1u << 20), 0);
    CHECK_INT(jinn_ws_send_copy(c.ws, false, "hello", 5), 0); /* a text message first */
    CHECK_INT(pump(&c, &s, 0, &seed), 0);
    CHECK_INT(s.n_msgs, 1);
    memset(big, 'S', sizeof big);
    CHECK_INT(jinn_ws_send_copy(c.ws, true, big, sizeof big), 0);
    CHECK(pump(&c, &s, 5, &seed) != 0);
    CHECK_INT(s.n_msgs, 1);
    CHECK_INT(s.n_closes, 1);
    CHECK_INT(s.close_code, JINN_WS_CLOSE_TOO_BIG);
    {
        /* sent in fragments: the refusal came at the first one over 1000 */
        bool whole = true;
        uint64_t n = jinn_ws_refused_length(s.ws, &whole);
        CHECK(n > 1000 && n <= sizeof big);
        CHECK(!whole);
    }
    CHECK(!jinn_ws_closed_by_peer(s.ws));
    end_free(&s);
    end_free(&c);
}

TEST(ws_invalid_utf8_text)
{
    struct end s, c;
    unsigned seed = 4;
    CHECK_INT(end_init(&s, true, 1000), 0);
    CHECK_INT(end_init(&c, false, 1000), 0);
    CHECK_INT(jinn_ws_send_copy(c.ws, false, "\xff\xfe", 2), 0);
    CHECK(pump(&c, &s, 0, &seed) != 0);
    CHECK_INT(s.n_msgs, 0);
    CHECK_INT(s.close_code, JINN_WS_CLOSE_INVALID_DATA);
    end_free(&s);
    end_free(&c);
}

/* Our own close: no on_close on our side, the peer sees the code and
 * answers; everything queued before the close still arrives first. */
TEST(ws_close_handshake)
{
    struct end s, c;
    unsigned seed = 5;
    CHECK_INT(end_init(&s, true, 1000), 0);
    CHECK_INT(end_init(&c, false, 1000), 0);
    CHECK_INT(jinn_ws_send_copy(s.ws, true, "last", 4), 0);
    CHECK_INT(jinn_ws_close(s.ws, JINN_WS_CLOSE_POLICY, "too slow"), 0);
    CHECK(jinn_ws_closed(s.ws));
    CHECK_INT(jinn_ws_send_copy(s.ws, true, "x", 1), JINN_ESHUTDOWN);
    CHECK(pump(&s, &c, 0, &seed) != 0);
    CHECK(jinn_ws_close_sent(s.ws));
    CHECK_INT(c.n_msgs, 1);
    CHECK_INT(c.n_closes, 1);
    CHECK_INT(c.close_code, JINN_WS_CLOSE_POLICY);
    pump(&c, &s, 0, &seed); /* the client's answer */
    CHECK_INT(s.n_closes, 0);
    end_free(&s);
    end_free(&c);
}

/* flush hands over at most JINN_WS_FLUSH_CHUNK per call; a failing write
 * closes with 1006; destroy with queued shared buffers frees them. */
TEST(ws_flush_chunks_and_write_failure)
{
    struct end s;
    CHECK_INT(end_init(&s, true, 1000), 0);
    struct jinn_ws_buf *b = jinn_ws_buf_new(1u << 20);
    CHECK(b != NULL);
    memset(b->data, 1, b->len);
    CHECK_INT(jinn_ws_send(s.ws, true, b), 0);
    jinn_ws_flush(s.ws);
    CHECK(s.out.len <= JINN_WS_FLUSH_CHUNK + 64);
    CHECK(s.out.len >= JINN_WS_FLUSH_CHUNK / 2);
    CHECK(jinn_ws_queued_bytes(s.ws) >= (1u << 20) - JINN_WS_FLUSH_CHUNK - 8192);
    s.fail_writes = 1;
    jinn_ws_flush(s.ws);
    CHECK_INT(s.n_closes, 1);
    CHECK_INT(s.close_code, JINN_WS_CLOSE_ABNORMAL);
    CHECK_INT(jinn_ws_send(s.ws, true, b), JINN_ESHUTDOWN);
    CHECK_INT(b->refs, 2);
    end_free(&s); /* drops the queued reference */
    CHECK_INT(b->refs, 1);
    jinn_ws_buf_unref(b);
}

TEST(ws_handshake_keys)
{
    char out[29];
    /* RFC 6455 section 1.3's example */
    jinn_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    char k1[25], k2[25];
    CHECK_INT(jinn_ws_client_key(k1), 0);
    CHECK_INT(jinn_ws_client_key(k2), 0);
    CHECK_INT(strlen(k1), 24);
    CHECK(strcmp(k1, k2) != 0);
    CHECK(k1[22] == '=' && k1[23] == '=');
}

TEST(ws_create_rejects_bad_args)
{
    struct jinn_ws *ws = NULL;
    struct jinn_ws_io io = {end_write, end_msg, end_close, NULL};
    CHECK_INT(jinn_ws_create(true, 0, &io, &ws), JINN_EINVAL);
    CHECK_INT(jinn_ws_create(true, JINN_WS_MAX_MESSAGE_LIMIT + 1, &io, &ws), JINN_EINVAL);
    io.write = NULL;
    CHECK_INT(jinn_ws_create(true, 10, &io, &ws), JINN_EINVAL);
}

TEST(ws_buf_adopt_shared)
{
    struct end s, c;
    unsigned seed = 9;
    CHECK_INT(end_init(&s, true, 100), 0);
    CHECK_INT(end_init(&c, false, 100), 0);
    char *p = jinn_malloc(5);
    CHECK(p != NULL);
    memcpy(p, "hello", 5);
    struct jinn_ws_buf *b = jinn_ws_buf_adopt(p, 5);
    CHECK(b != NULL);
    CHECK_INT(jinn_ws_send(s.ws, false, b), 0);
    jinn_ws_buf_unref(b); /* the endpoint's reference keeps it */
    CHECK_INT(pump(&s, &c, 2, &seed), 0);
    CHECK_INT(c.got.len, 5);
    CHECK(memcmp(c.got.data, "hello", 5) == 0);
    end_free(&s);
    end_free(&c);
}

/* R3 C1: each ping makes wslay queue a pong in its own queue, which the
 * owner must see to bound it: jinn_ws_control_bytes counts those (with a
 * per-frame overhead, so empty pongs count too) and not our data
 * messages; jinn_ws_pings_received counts the pings. */
TEST(ws_control_bytes_count_pongs)
{
    struct end s, c;
    unsigned seed = 3;
    char data[1000];
    memset(data, 'x', sizeof data);
    CHECK_INT(end_init(&s, true, 1024), 0);
    CHECK_INT(end_init(&c, false, 1024), 0);
    CHECK_INT(jinn_ws_control_bytes(s.ws), 0);
    CHECK_INT(jinn_ws_send_copy(s.ws, true, data, sizeof data), 0);
    CHECK_INT(jinn_ws_control_bytes(s.ws), 0); /* data messages are not control */
    for (int i = 0; i < 100; i++) {
        CHECK_INT(jinn_ws_ping(c.ws), 0);
    }
    jinn_ws_flush(c.ws);
    /* fed, not flushed: the 100 pongs wait in the server's queue */
    CHECK_INT(jinn_ws_feed(s.ws, c.out.data, c.out.len), 0);
    c.out.len = 0;
    CHECK_INT(jinn_ws_pings_received(s.ws), 100);
    CHECK(jinn_ws_control_bytes(s.ws) >= 100 * JINN_WS_CONTROL_OVERHEAD);
    CHECK_INT(pump(&s, &c, 0, &seed), 0);
    CHECK_INT(jinn_ws_control_bytes(s.ws), 0);
    CHECK_INT(c.n_msgs, 1);
    CHECK_INT(s.n_closes + c.n_closes, 0);
    end_free(&s);
    end_free(&c);
}

/* A3 m5: a data message is joined by ws.c (wslay does not buffer it) and
 * its owner may take the bytes instead of copying them: a replica hands a
 * snapshot to a worker thread this way. A ping between the fragments is
 * answered and not mixed into the message; the next message starts anew. */
struct taker {
    struct end e;
    uint8_t *taken;
    size_t taken_len;
    bool same;
};

static void take_msg(void *data, bool binary, const uint8_t *msg, size_t len)
{
    struct taker *t = data;
    if (t->taken == NULL) {
        t->taken = jinn_ws_take_message(t->e.ws, &t->taken_len);
        t->same = t->taken == msg && t->taken_len == len;
    }
    end_msg(&t->e, binary, msg, len);
}

TEST(ws_message_taken_by_its_owner)
{
    struct end s;
    struct taker t;
    unsigned seed = 5;
    const size_t n = 70000;
    uint8_t *pat = jinn_malloc(n);
    CHECK(pat != NULL);
    for (size_t i = 0; i < n; i++) {
        pat[i] = (uint8_t)(i * 13 + 1);
    }
    CHECK_INT(end_init(&s, true, 1u << 20), 0);
    memset(&t, 0, sizeof t);
    jinn_wbuf_init(&t.e.out);
    jinn_wbuf_init(&t.e.got);
    struct jinn_ws_io io = {end_write, take_msg, end_close, &t};
    CHECK_INT(jinn_ws_create(false, 1u << 20, &io, &t.e.ws), 0);
    CHECK_INT(jinn_ws_send_copy(s.ws, true, pat, n), 0);
    CHECK_INT(jinn_ws_ping(s.ws), 0);
    CHECK_INT(jinn_ws_send_copy(s.ws, true, pat, n / 2), 0);
    CHECK_INT(pump(&s, &t.e, 4096, &seed), 0);
    CHECK_INT(t.e.n_msgs, 2);
    CHECK(t.same);
    CHECK_INT(t.taken_len, n);
    CHECK(memcmp(t.taken, pat, n) == 0);
    /* the second, delivered after the first was taken, is whole too */
    CHECK_INT(t.e.got.len, n + n / 2);
    CHECK(memcmp(t.e.got.data + n, pat, n / 2) == 0);
    CHECK_INT(jinn_ws_pings_received(t.e.ws), 1);
    CHECK_INT(t.e.n_closes, 0);
    jinn_free(t.taken);
    jinn_free(pat);
    end_free(&s);
    end_free(&t.e);
}
