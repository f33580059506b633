/* test_codec.c - binary encoding, command round trips, and malformed,
 * truncated and oversized commands. */
#include <stdlib.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/cmd.h"
#include "unit.h"

TEST(codec_round_trip)
{
    struct jinn_wbuf w;
    struct jinn_rbuf r;
    const uint8_t *p;
    char *s;
    jinn_wbuf_init(&w);
    jinn_wbuf_put_u8(&w, 7);
    jinn_wbuf_put_u32(&w, 0xdeadbeef);
    jinn_wbuf_put_u64(&w, UINT64_C(0x0102030405060708));
    jinn_wbuf_put_str(&w, "hello");
    jinn_wbuf_put_bytes(&w, "", 0);
    CHECK(!w.failed);
    CHECK_INT(w.data[1], 0xef); /* little-endian on the wire */
    jinn_rbuf_init(&r, w.data, w.len);
    CHECK_INT(jinn_rbuf_get_u8(&r), 7);
    CHECK_INT(jinn_rbuf_get_u32(&r), 0xdeadbeef);
    CHECK(jinn_rbuf_get_u64(&r) == UINT64_C(0x0102030405060708));
    s = jinn_rbuf_get_str(&r, 16);
    CHECK_STR(s, "hello");
    jinn_free(s);
    CHECK_INT(jinn_rbuf_get_bytes(&r, &p, 16), 0);
    CHECK(!r.failed);
    CHECK_INT(r.left, 0);
    jinn_rbuf_get_u8(&r);
    CHECK(r.failed); /* reading past the end is sticky */
    CHECK_INT(jinn_rbuf_get_u64(&r), 0);
    jinn_wbuf_free(&w);
}

TEST(codec_rejects_lengths_over_limit_and_embedded_nul)
{
    struct jinn_wbuf w;
    struct jinn_rbuf r;
    jinn_wbuf_init(&w);
    jinn_wbuf_put_str(&w, "0123456789");
    jinn_rbuf_init(&r, w.data, w.len);
    CHECK(jinn_rbuf_get_str(&r, 9) == NULL);
    CHECK(r.failed);
    jinn_wbuf_free(&w);

    jinn_wbuf_init(&w);
    jinn_wbuf_put_bytes(&w, "a\0b", 3);
    jinn_rbuf_init(&r, w.data, w.len);
    CHECK(jinn_rbuf_get_str(&r, 9) == NULL);
    jinn_wbuf_free(&w);

    /* A length prefix larger than what follows. */
    jinn_wbuf_init(&w);
    jinn_wbuf_put_u32(&w, 1000);
    jinn_wbuf_put_raw(&w, "abc", 3);
    jinn_rbuf_init(&r, w.data, w.len);
    {
        const uint8_t *p;
        CHECK_INT(jinn_rbuf_get_bytes(&r, &p, 5000), 0);
        CHECK(r.failed);
    }
    jinn_wbuf_free(&w);
}

TEST(codec_crc32_known_value)
{
    CHECK(jinn_crc32(0, "123456789", 9) == 0xCBF43926u);
    CHECK(jinn_crc32(jinn_crc32(0, "1234", 4), "56789", 5) == 0xCBF43926u);
}

TEST(codec_wbuf_out_of_memory_is_sticky)
{
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    jinn_alloc_fail_after(0);
    jinn_wbuf_put_u64(&w, 1);
    jinn_alloc_fail_reset();
    CHECK(w.failed);
    jinn_wbuf_put_u64(&w, 1);
    CHECK(w.failed);
    CHECK_INT(w.len, 0);
    jinn_wbuf_free(&w);
}

static struct jinn_cmd node_cmd(void)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_NODE_SET;
    c.time_ms = 1234567;
    c.node.id = 42;
    c.node.name.p = (const uint8_t *)"n1";
    c.node.name.len = 2;
    c.node.api.p = (const uint8_t *)"http://127.0.0.1:8081";
    c.node.api.len = 21;
    return c;
}

TEST(cmd_round_trip)
{
    struct jinn_cmd c = node_cmd(), d;
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.type, JINN_CMD_NODE_SET);
    CHECK_INT(d.time_ms, 1234567);
    CHECK_INT(d.node.id, 42);
    CHECK_INT(d.node.name.len, 2);
    CHECK(memcmp(d.node.name.p, "n1", 2) == 0);
    CHECK_INT(d.node.api.len, 21);
    jinn_wbuf_free(&w);

    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_NOOP;
    c.time_ms = 9;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(w.len, 16); /* 12-byte header padded to 8-byte words */
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.type, JINN_CMD_NOOP);
    jinn_wbuf_free(&w);
}

TEST(cmd_rejects_truncated_padded_and_foreign)
{
    struct jinn_cmd c = node_cmd(), d;
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    for (size_t n = 0; n < w.len; n++) {
        CHECK_INT(jinn_cmd_decode(w.data, n, &d), JINN_ECORRUPT);
    }
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(w.len % 8, 0);
    for (int k = 0; k < 8; k++) {
        jinn_wbuf_put_u8(&w, 0); /* a whole extra word of padding */
    }
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    w.len -= 8;
    if (w.data[w.len - 1] == 0) {
        w.data[w.len - 1] = 7; /* non-zero padding */
        CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
        w.data[w.len - 1] = 0;
    }
    w.data[0] = 'X';
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    w.data[0] = JINN_CMD_MAGIC;
    w.data[1] = JINN_CMD_VERSION + 1;
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_EVERSION);
    w.data[1] = JINN_CMD_VERSION;
    /* An unknown type or flag is a newer build's command: EVERSION, which
     * stops the FSM, never ECORRUPT, which it skips. */
    w.data[2] = 200; /* unknown type */
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_EVERSION);
    w.data[2] = JINN_CMD_TYPE_MAX; /* the first type after the known ones */
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_EVERSION);
    w.data[2] = JINN_CMD_NODE_SET;
    w.data[3] = 1; /* unknown flags */
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_EVERSION);
    jinn_wbuf_free(&w);
}

TEST(cmd_rejects_oversized_fields)
{
    char big[JINN_NODE_API_MAX + 2];
    struct jinn_cmd c = node_cmd(), d;
    struct jinn_wbuf w;
    memset(big, 'a', sizeof big);
    c.node.api.p = (const uint8_t *)big;
    c.node.api.len = sizeof big;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);

    /* Hand-build an entry whose name claims more than the limit. */
    jinn_wbuf_init(&w);
    jinn_wbuf_put_u8(&w, JINN_CMD_MAGIC);
    jinn_wbuf_put_u8(&w, JINN_CMD_VERSION);
    jinn_wbuf_put_u8(&w, JINN_CMD_NODE_SET);
    jinn_wbuf_put_u8(&w, 0);
    jinn_wbuf_put_u64(&w, 1);
    jinn_wbuf_put_u64(&w, 1);
    jinn_wbuf_put_bytes(&w, big, JINN_NODE_NAME_MAX + 1);
    jinn_wbuf_put_bytes(&w, "", 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    jinn_wbuf_free(&w);
}

TEST(cmd_random_bytes_never_crash)
{
    unsigned seed = 12345;
    uint8_t buf[64];
    for (int i = 0; i < 20000; i++) {
        struct jinn_cmd d;
        size_t n = (size_t)(rand_r(&seed) % (int)sizeof buf);
        for (size_t k = 0; k < n; k++) {
            buf[k] = (uint8_t)rand_r(&seed);
        }
        if (n > 3 && (i & 1)) {
            buf[0] = JINN_CMD_MAGIC;
            buf[1] = JINN_CMD_VERSION;
            buf[2] = (uint8_t)(1 + i % (JINN_CMD_TYPE_MAX - 1));
            buf[3] = 0;
        }
        int rv = jinn_cmd_decode(buf, n, &d);
        CHECK(rv == 0 || rv == JINN_ECORRUPT || rv == JINN_EVERSION);
    }
}

/* The sliced CRC (8 bytes a step) against the plain bytewise definition,
 * over every length 0..300 and offset 0..7 (alignment) of pseudo-random
 * bytes, and chained in uneven pieces. */
static uint32_t crc32_bytewise(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
        }
    }
    return ~crc;
}

TEST(codec_crc32_sliced_matches_bytewise)
{
    static uint8_t buf[320];
    uint32_t x = 12345, chained = 0;

    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len + off <= 300; len++) {
            CHECK(jinn_crc32(0, buf + off, len) == crc32_bytewise(0, buf + off, len));
            CHECK(jinn_crc32(0xDEADBEEFu, buf + off, len) ==
                  crc32_bytewise(0xDEADBEEFu, buf + off, len));
        }
    }
    for (size_t off = 0, step = 1; off < sizeof buf; off += step, step = step * 3 % 17 + 1) {
        size_t n = off + step > sizeof buf ? sizeof buf - off : step;
        chained = jinn_crc32(chained, buf + off, n);
    }
    CHECK(chained == crc32_bytewise(0, buf, sizeof buf));
}
