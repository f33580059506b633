/* test_stream_client.c - the replica's stream client: URLs, the upgrade
 * request, hello / heartbeat parsing, the primary-heartbeat rule and the
 * 'E' batch framing (contracts17 section 3). */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "replica/stream.h"
#include "unit.h"

TEST(stream_url_parse)
{
    struct jinn_stream_url u;
    CHECK_INT(jinn_stream_parse_url("ws://127.0.0.1:8001", &u), 0);
    CHECK(!u.tls);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_INT(u.port, 8001);
    CHECK_STR(u.hostport, "127.0.0.1:8001");
    CHECK_INT(jinn_stream_parse_url("wss://db.example.com/", &u), 0);
    CHECK(u.tls);
    CHECK_INT(u.port, 443);
    CHECK_STR(u.hostport, "db.example.com:443");
    CHECK_INT(jinn_stream_parse_url("ws://h", &u), 0);
    CHECK_INT(u.port, 80);
    /* refused: other schemes, paths, userinfo, bad ports, empty host,
     * anything that could break the Host header */
    CHECK_INT(jinn_stream_parse_url("http://127.0.0.1:8001", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://127.0.0.1:8001/edge/", &u), 0);
    CHECK_STR(u.path, "/edge"); /* a proxy's prefix */
    CHECK_INT(jinn_stream_parse_url("ws://h/", &u), 0);
    CHECK_STR(u.path, "");
    CHECK_INT(jinn_stream_parse_url("ws://127.0.0.1:8001/a?b", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://127.0.0.1:8001/a b", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://u@h:1", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://h:0", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://h:65536", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://h:12a", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://h:", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://:80", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://h\r\nX: y:80", &u), -1);
    CHECK_INT(jinn_stream_parse_url("ws://[::1]:80", &u), -1);
}

TEST(stream_request_is_the_contract)
{
    struct jinn_stream_url u;
    struct jinn_wbuf w;
    char *s;
    const char key[25] = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_INT(jinn_stream_parse_url("ws://127.0.0.1:8001", &u), 0);
    jinn_wbuf_init(&w);
    CHECK_INT(
        jinn_stream_build_request(&w, &u, 42, UINT64_C(0xab), "edge 1", "tok.en-123", key), 0);
    jinn_wbuf_put_u8(&w, 0);
    s = (char *)w.data;
    CHECK(strncmp(s,
                  "GET /v1/stream?from=42&cluster=00000000000000ab&name=edge%201 HTTP/1.1\r\n",
                  70) == 0);
    CHECK(strstr(s, "\r\nHost: 127.0.0.1:8001\r\n") != NULL);
    CHECK(strstr(s, "\r\nUpgrade: websocket\r\n") != NULL);
    CHECK(strstr(s, "\r\nConnection: Upgrade\r\n") != NULL);
    CHECK(strstr(s, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    CHECK(strstr(s, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") != NULL);
    CHECK(strstr(s, "\r\nAuthorization: Bearer tok.en-123\r\n\r\n") != NULL);
    jinn_wbuf_free(&w);

    /* a new replica: from=0, no cluster, no token */
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_stream_build_request(&w, &u, 0, 0, "r1", NULL, key), 0);
    jinn_wbuf_put_u8(&w, 0);
    s = (char *)w.data;
    CHECK(strncmp(s, "GET /v1/stream?from=0&name=r1 HTTP/1.1\r\n", 40) == 0);
    CHECK(strstr(s, "Authorization") == NULL);
    jinn_wbuf_free(&w);

    CHECK_INT(jinn_stream_parse_url("wss://e.example/edge", &u), 0);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_stream_build_request(&w, &u, 5, 0, "r1", NULL, key), 0);
    jinn_wbuf_put_u8(&w, 0);
    CHECK(strncmp((char *)w.data, "GET /edge/v1/stream?from=5&name=r1 HTTP/1.1\r\n", 45) == 0);
    CHECK(strstr((char *)w.data, "\r\nHost: e.example:443\r\n") != NULL);
    jinn_wbuf_free(&w);

    /* with the cluster time at the position (M2: it names the chain) */
    {
        uint64_t at = 1700000000123u;
        jinn_wbuf_init(&w);
        CHECK_INT(jinn_stream_build_request_at(&w, &u, 5, &at, UINT64_C(0xab), "r1", NULL, key),
                  0);
        jinn_wbuf_put_u8(&w, 0);
        CHECK(strncmp((char *)w.data,
                      "GET /edge/v1/stream?from=5&cluster=00000000000000ab&at=1700000000123"
                      "&name=r1 HTTP/1.1\r\n",
                      87) == 0);
        jinn_wbuf_free(&w);
    }

    /* a token that would split the header is never sent */
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_stream_build_request(&w, &u, 0, 0, "r1", "abc\r\nX-Evil: 1", key),
              JINN_EINVAL);
    CHECK_INT(jinn_stream_build_request(&w, &u, 0, 0, "r1", "abc def", key), JINN_EINVAL);
    CHECK_INT(jinn_stream_build_request(&w, &u, 0, 0, "", NULL, key), JINN_EINVAL);
    jinn_wbuf_free(&w);
}

TEST(stream_hello_parse)
{
    uint64_t cluster = 0;
    char node[65];
    const char *ok =
        "{\"type\":\"hello\",\"v\":1,\"cluster\":\"0123456789abcdef\",\"node\":\"n2\"}";
    CHECK_INT(jinn_stream_parse_hello(ok, strlen(ok), &cluster, node), 0);
    CHECK(cluster == UINT64_C(0x0123456789abcdef));
    CHECK_STR(node, "n2");
    {
        const char *bad[] = {
            "{\"type\":\"hello\",\"v\":2,\"cluster\":\"0123456789abcdef\",\"node\":\"n2\"}",
            "{\"type\":\"hello\",\"v\":1,\"cluster\":\"0123456789ABCDEF\",\"node\":\"n2\"}",
            "{\"type\":\"hello\",\"v\":1,\"cluster\":\"0123456789abcde\",\"node\":\"n2\"}",
            "{\"type\":\"hello\",\"v\":1,\"cluster\":\"0123456789abcdef\"}",
            /* fuzzer (stream_client): an empty node name */
            "{\"type\":\"hello\",\"v\":1,\"cluster\":\"0123456789abcdef\",\"node\":\"\"}",
            "{\"type\":\"heartbeat\",\"v\":1,\"cluster\":\"0123456789abcdef\",\"node\":\"n2\"}",
            "{\"type\":\"hello\",\"type\":\"hello\",\"v\":1,\"cluster\":\"0123456789abcdef\","
            "\"node\":\"n2\"}",
            "[1]",
            "{\"type\":\"hello\"",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            CHECK_INT(jinn_stream_parse_hello(bad[i], strlen(bad[i]), &cluster, node), -1);
        }
    }
}

TEST(stream_heartbeat_and_primary)
{
    struct jinn_stream_heartbeat hb;
    const char *primary =
        "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":\"00000000000000ff\","
        "\"leader_name\":\"n1\",\"leader_api\":\"http://127.0.0.1:8001\",\"term\":3,"
        "\"commit\":120,\"position\":118,\"time_ms\":1700000000000,\"quorum\":true,"
        "\"leader_contact_ms\":150}";
    const char *no_leader =
        "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"leader_name\":null,"
        "\"leader_api\":null,\"term\":3,\"commit\":120,\"position\":118,\"time_ms\":5,"
        "\"quorum\":false,\"leader_contact_ms\":-1}";
    CHECK_INT(jinn_stream_parse_heartbeat(primary, strlen(primary), &hb), 0);
    CHECK_STR(hb.node, "n2");
    CHECK(hb.has_leader && hb.leader_id == 0xff);
    CHECK_STR(hb.leader_name, "n1");
    CHECK(strcmp(hb.leader_api, "http://127.0.0.1:8001") == 0);
    CHECK_INT(hb.term, 3);
    CHECK_INT(hb.commit, 120);
    CHECK_INT(hb.position, 118);
    CHECK(hb.quorum);
    CHECK_INT(hb.leader_contact_ms, 150);
    CHECK(jinn_stream_primary(&hb, 2000));
    CHECK(jinn_stream_primary(&hb, 150));  /* at the bound: still primary */
    CHECK(!jinn_stream_primary(&hb, 149)); /* a leader heard from too long ago */
    hb.quorum = false;
    CHECK(!jinn_stream_primary(&hb, 2000));
    hb.quorum = true;
    hb.leader_contact_ms = -1;
    CHECK(!jinn_stream_primary(&hb, 2000));

    CHECK_INT(hb.applied, 0); /* an older node: no "applied" */
    {
        const char *with_applied =
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"leader_name\":null,"
            "\"leader_api\":null,\"term\":3,\"commit\":120,\"position\":118,\"time_ms\":5,"
            "\"quorum\":false,\"leader_contact_ms\":-1,\"applied\":121}";
        const char *bad_applied =
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"leader_name\":null,"
            "\"leader_api\":null,\"term\":3,\"commit\":120,\"position\":118,\"time_ms\":5,"
            "\"quorum\":false,\"leader_contact_ms\":-1,\"applied\":\"121\"}";
        CHECK_INT(jinn_stream_parse_heartbeat(with_applied, strlen(with_applied), &hb), 0);
        CHECK_INT(hb.applied, 121);
        CHECK_INT(jinn_stream_parse_heartbeat(bad_applied, strlen(bad_applied), &hb), -1);
    }
    CHECK_INT(hb.election_timeout_ms, 0); /* an older node: none */
    {
        /* A4 m3: the node's election timeout, optional; a lie is clamped */
        const char *with_et =
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"leader_name\":null,"
            "\"leader_api\":null,\"term\":3,\"commit\":120,\"position\":118,\"time_ms\":5,"
            "\"quorum\":false,\"leader_contact_ms\":-1,\"election_timeout_ms\":500}";
        const char *huge_et =
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"leader_name\":null,"
            "\"leader_api\":null,\"term\":3,\"commit\":120,\"position\":118,\"time_ms\":5,"
            "\"quorum\":false,\"leader_contact_ms\":-1,\"election_timeout_ms\":99999999999}";
        const char *bad_et =
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"leader_name\":null,"
            "\"leader_api\":null,\"term\":3,\"commit\":120,\"position\":118,\"time_ms\":5,"
            "\"quorum\":false,\"leader_contact_ms\":-1,\"election_timeout_ms\":-5}";
        CHECK_INT(jinn_stream_parse_heartbeat(with_et, strlen(with_et), &hb), 0);
        CHECK_INT(hb.election_timeout_ms, 500);
        CHECK_INT(jinn_stream_parse_heartbeat(huge_et, strlen(huge_et), &hb), 0);
        CHECK_INT(hb.election_timeout_ms, JINN_STREAM_ELECTION_TIMEOUT_MAX);
        CHECK_INT(jinn_stream_parse_heartbeat(bad_et, strlen(bad_et), &hb), -1);
    }
    CHECK_INT(jinn_stream_parse_heartbeat(no_leader, strlen(no_leader), &hb), 0);
    CHECK(!hb.has_leader);
    CHECK_INT(hb.leader_contact_ms, -1);
    CHECK(!jinn_stream_primary(&hb, 2000));
    {
        /* a negative index, a contact below -1, a bad leader id, a missing
         * field, or a string where a number belongs: not a heartbeat */
        const char *bad[] = {
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"term\":-1,\"commit\":"
            "1,"
            "\"position\":1,\"time_ms\":5,\"quorum\":false,\"leader_contact_ms\":-1}",
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"term\":1,\"commit\":"
            "1,"
            "\"position\":1,\"time_ms\":5,\"quorum\":false,\"leader_contact_ms\":-2}",
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":\"xyz\",\"term\":1,"
            "\"commit\":1,"
            "\"position\":1,\"time_ms\":5,\"quorum\":true,\"leader_contact_ms\":0}",
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"term\":1,\"commit\":"
            "1,"
            "\"time_ms\":5,\"quorum\":false,\"leader_contact_ms\":0}",
            "{\"type\":\"heartbeat\",\"node\":\"n2\",\"leader_id\":null,\"term\":1,\"commit\":"
            "\"1\","
            "\"position\":1,\"time_ms\":5,\"quorum\":false,\"leader_contact_ms\":0}",
            "{\"type\":\"heartbeat\",\"leader_id\":null,\"term\":1,\"commit\":1,"
            "\"position\":1,\"time_ms\":5,\"quorum\":false,\"leader_contact_ms\":0}",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            CHECK_INT(jinn_stream_parse_heartbeat(bad[i], strlen(bad[i]), &hb), -1);
        }
    }
}

struct seen {
    unsigned n;
    uint64_t index[8], prev[8];
    size_t len[8];
    uint8_t first[8];
    int fail_at; /* return JINN_ECONFLICT at this record (0: never) */
};

static int record(void *data, uint64_t index, uint64_t prev, const uint8_t *buf, size_t len)
{
    struct seen *s = data;
    if (s->fail_at != 0 && s->n + 1 == (unsigned)s->fail_at) {
        return JINN_ECONFLICT;
    }
    s->index[s->n] = index;
    s->prev[s->n] = prev;
    s->len[s->n] = len;
    s->first[s->n] = buf[0];
    s->n++;
    return 0;
}

static void batch(struct jinn_wbuf *w, unsigned count, const uint64_t *index,
                  const uint64_t *prev, const uint32_t *len)
{
    jinn_wbuf_init(w);
    jinn_wbuf_put_u8(w, 'E');
    jinn_wbuf_put_u32(w, count);
    for (unsigned i = 0; i < count; i++) {
        jinn_wbuf_put_u64(w, index[i]);
        jinn_wbuf_put_u64(w, prev[i]);
        jinn_wbuf_put_u32(w, len[i]);
        for (uint32_t k = 0; k < len[i]; k++) {
            jinn_wbuf_put_u8(w, (uint8_t)('a' + i));
        }
    }
}

TEST(stream_batch_decode)
{
    struct jinn_wbuf w;
    struct seen s;
    const uint64_t index[3] = {11, 12, 15}, prev[3] = {10, 11, 12};
    const uint32_t len[3] = {8, 16, 24};

    batch(&w, 3, index, prev, len);
    memset(&s, 0, sizeof s);
    CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), 0);
    CHECK_INT(s.n, 3);
    for (unsigned i = 0; i < 3; i++) {
        CHECK(s.index[i] == index[i] && s.prev[i] == prev[i] && s.len[i] == len[i]);
        CHECK_INT(s.first[i], 'a' + i);
    }

    /* every truncation is refused before anything is applied */
    for (size_t cut = 0; cut < w.len; cut++) {
        memset(&s, 0, sizeof s);
        CHECK_INT(jinn_stream_decode_batch(w.data, cut, record, &s), JINN_ECORRUPT);
        CHECK_INT(s.n, 0);
    }
    /* a trailing byte too */
    jinn_wbuf_put_u8(&w, 0);
    memset(&s, 0, sizeof s);
    CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECORRUPT);
    CHECK_INT(s.n, 0);
    jinn_wbuf_free(&w);

    /* the callback's refusal stops the walk and is returned */
    batch(&w, 3, index, prev, len);
    memset(&s, 0, sizeof s);
    s.fail_at = 2;
    CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECONFLICT);
    CHECK_INT(s.n, 1);
    w.data[0] = 'S'; /* not a batch */
    CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECORRUPT);
    jinn_wbuf_free(&w);

    /* index <= prev, an empty record, a count of 0, a count larger than
     * the records present */
    {
        const uint64_t bi[1] = {10}, bp[1] = {10};
        const uint32_t bl[1] = {8}, zl[1] = {0};
        const uint64_t gi[1] = {11};
        batch(&w, 1, bi, bp, bl);
        memset(&s, 0, sizeof s);
        CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECORRUPT);
        jinn_wbuf_free(&w);
        batch(&w, 1, gi, bp, zl);
        CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECORRUPT);
        jinn_wbuf_free(&w);
        batch(&w, 0, gi, bp, bl);
        CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECORRUPT);
        jinn_wbuf_free(&w);
        batch(&w, 1, gi, bp, bl);
        jinn_wbuf_patch_u32(&w, 1, 2);
        CHECK_INT(jinn_stream_decode_batch(w.data, w.len, record, &s), JINN_ECORRUPT);
        CHECK_INT(s.n, 0);
        jinn_wbuf_free(&w);
    }
}
