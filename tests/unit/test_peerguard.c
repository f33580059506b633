/* test_peerguard.c - the raft message check (peerguard): what may reach
 * libraft 0.15's decoder, and the packets that used to crash it. */
#include <stdint.h>
#include <string.h>

#include "peerguard.h"
#include "unit.h"

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* An AppendEntries header with n entries of the given lengths. */
static size_t append_entries(uint8_t *h, unsigned n, const uint32_t *lens, uint8_t type)
{
    size_t len = 48 + 16 * (size_t)n;
    memset(h, 0, len);
    put64(h, 7);      /* term */
    put64(h + 32, n); /* entry count */
    for (unsigned i = 0; i < n; i++) {
        uint8_t *e = h + 40 + 16 * i;
        put64(e, 7);
        e[8] = type;
        put32(e + 12, lens[i]);
    }
    return len;
}

TEST(peerguard_allows_what_libraft_sends)
{
    uint8_t h[512];
    uint64_t payload;
    uint32_t lens[3] = {16, 8, 5};
    size_t len = append_entries(h, 3, lens, RAFT_COMMAND);
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h, len, &payload) == NULL);
    CHECK_INT(payload, 29);
    len = append_entries(h, 0, lens, RAFT_COMMAND); /* a heartbeat */
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h, len, &payload) == NULL);
    CHECK_INT(payload, 0);
    memset(h, 0, 64);
    CHECK(jinn_peerguard_check(RAFT_IO_REQUEST_VOTE, h, 40, &payload) == NULL);
    CHECK(jinn_peerguard_check(RAFT_IO_REQUEST_VOTE, h, 32, &payload) == NULL);
    CHECK(jinn_peerguard_check(RAFT_IO_REQUEST_VOTE_RESULT, h, 24, &payload) == NULL);
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES_RESULT, h, 24, &payload) == NULL);
    CHECK(jinn_peerguard_check(RAFT_IO_TIMEOUT_NOW, h, 24, &payload) == NULL);
}

TEST(peerguard_refuses_the_known_crashes)
{
    uint8_t h[512];
    uint64_t payload;
    uint32_t lens[2] = {1, 1};
    /* header length 7 for a RequestVote (libraft reads 32 bytes) */
    memset(h, 0, sizeof h);
    CHECK(jinn_peerguard_check(RAFT_IO_REQUEST_VOTE, h, 7, &payload) != NULL);
    CHECK(jinn_peerguard_check(RAFT_IO_REQUEST_VOTE, h, 33, &payload) != NULL);
    /* a 64-byte AppendEntries header of 0xff: 2^64-1 entries declared */
    memset(h, 0xff, 64);
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h, 64, &payload) != NULL);
    /* two unpadded entries: libraft places the second past the payload */
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h,
                               append_entries(h, 2, lens, RAFT_COMMAND), &payload) != NULL);
    /* an entry of unknown type */
    lens[0] = 8;
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h, append_entries(h, 1, lens, 9),
                               &payload) != NULL);
    /* unknown message types, 0 included */
    CHECK(jinn_peerguard_check(0, h, 24, &payload) != NULL);
    CHECK(jinn_peerguard_check(7, h, 24, &payload) != NULL);
    /* more entries than JINN_RAFT_MAX_ENTRIES */
    CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h,
                               48 + 16 * ((uint64_t)JINN_RAFT_MAX_ENTRIES + 1),
                               &payload) != NULL);
}

/* An InstallSnapshot header around conf (conf_len bytes), declaring data. */
static size_t install_snapshot(uint8_t *h, const uint8_t *conf, size_t conf_len, uint64_t data)
{
    memset(h, 0, 56 + conf_len);
    put64(h, 3);
    put64(h + 32, conf_len);
    memcpy(h + 40, conf, conf_len);
    put64(h + 40 + conf_len, data);
    return 56 + conf_len;
}

TEST(peerguard_walks_the_snapshot_configuration)
{
    uint8_t conf[64], h[256];
    uint64_t payload;
    size_t n;
    conf[0] = 1;
    put64(conf + 1, 1);
    put64(conf + 9, 42);
    memcpy(conf + 17, "127.0.0.1:7001", 15); /* NUL included */
    conf[32] = RAFT_VOTER;
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, install_snapshot(h, conf, 33, 4096),
                               &payload) == NULL);
    CHECK_INT(payload, 4096);
    /* without data */
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, install_snapshot(h, conf, 33, 0),
                               &payload) != NULL);
    /* address without its NUL */
    n = install_snapshot(h, conf, 31, 4096);
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, n, &payload) != NULL);
    /* two servers declared, one present */
    put64(conf + 1, 2);
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, install_snapshot(h, conf, 33, 4096),
                               &payload) != NULL);
    /* a role libraft does not know */
    put64(conf + 1, 1);
    conf[32] = 7;
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, install_snapshot(h, conf, 33, 4096),
                               &payload) != NULL);
    /* a configuration length that disagrees with the header */
    conf[32] = RAFT_VOTER;
    n = install_snapshot(h, conf, 33, 4096);
    put64(h + 32, 40);
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, n, &payload) != NULL);
    /* data over JINN_RAFT_MAX_MESSAGE */
    CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h,
                               install_snapshot(h, conf, 33, JINN_RAFT_MAX_MESSAGE + 1),
                               &payload) != NULL);
}

TEST(peerguard_refuses_terms_and_indexes_past_2_63)
{
    /* (atk3 C1) one RequestVote with term 2^64-1 left the cluster without a
     * leader for good: libraft's next term wrapped to 0. */
    uint8_t h[512];
    uint64_t payload;
    uint32_t lens[1] = {8};
    static const struct {
        uint64_t type;
        size_t len, off;
    } cases[] = {
        {RAFT_IO_REQUEST_VOTE, 40, 0},
        {RAFT_IO_REQUEST_VOTE, 32, 16},
        {RAFT_IO_REQUEST_VOTE, 40, 24},
        {RAFT_IO_REQUEST_VOTE_RESULT, 24, 0},
        {RAFT_IO_APPEND_ENTRIES_RESULT, 24, 0},
        {RAFT_IO_APPEND_ENTRIES_RESULT, 24, 8},
        {RAFT_IO_APPEND_ENTRIES_RESULT, 24, 16},
        {RAFT_IO_TIMEOUT_NOW, 24, 0},
        {RAFT_IO_TIMEOUT_NOW, 24, 8},
        {RAFT_IO_TIMEOUT_NOW, 24, 16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(h, 0, sizeof h);
        put64(h + cases[i].off, UINT64_C(1) << 63);
        CHECK(jinn_peerguard_check(cases[i].type, h, cases[i].len, &payload) != NULL);
        put64(h + cases[i].off, (UINT64_C(1) << 63) - 1);
        CHECK(jinn_peerguard_check(cases[i].type, h, cases[i].len, &payload) == NULL);
    }
    /* AppendEntries: term, prev index, prev term, commit, an entry's term */
    for (size_t off = 0; off <= 40; off += 8) {
        size_t len = append_entries(h, 1, lens, RAFT_COMMAND);
        if (off == 32) {
            continue; /* the entry count */
        }
        put64(h + off, UINT64_MAX);
        CHECK(jinn_peerguard_check(RAFT_IO_APPEND_ENTRIES, h, len, &payload) != NULL);
    }
    /* InstallSnapshot: term, last index, last term, configuration index */
    {
        uint8_t conf[33];
        conf[0] = 1;
        put64(conf + 1, 1);
        put64(conf + 9, 42);
        memcpy(conf + 17, "127.0.0.1:7001", 15);
        conf[32] = RAFT_VOTER;
        for (size_t off = 0; off < 32; off += 8) {
            size_t len = install_snapshot(h, conf, 33, 4096);
            CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, len, &payload) == NULL);
            put64(h + off, UINT64_MAX);
            CHECK(jinn_peerguard_check(RAFT_IO_INSTALL_SNAPSHOT, h, len, &payload) != NULL);
        }
    }
}

TEST(peerguard_address_is_host_and_port)
{
    /* (atk3 m1) "127.0.0.1:23997\n<forged line>" dialled fine (atoi) and
     * reached the log unescaped. */
    CHECK(jinn_peerguard_address_ok("127.0.0.1:7001"));
    CHECK(jinn_peerguard_address_ok("node-1.example:65535"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1:23997\n2026 info forged"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1\n:7001"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1:7001x"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1:0"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1:65536"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1:"));
    CHECK(!jinn_peerguard_address_ok(":7001"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1"));
    CHECK(!jinn_peerguard_address_ok("127.0.0.1:+7001"));
}
