/* test_limit.c - per-token request limits and per-address connection caps. */
#include <stdint.h>

#include "error.h"
#include "limit.h"
#include "unit.h"

static bool peer_is_ten(void *data, uint32_t ip)
{
    (void)data;
    return ip == 0x0a000001u; /* 10.0.0.1 */
}

TEST(limit_conns_per_addr_and_reserve)
{
    struct jinn_limit_config cfg = {.conns_per_addr = 2, .reserved_conns = 2,
                                    .max_connections = 5};
    struct jinn_limit *l = jinn_limit_create(&cfg);
    struct jinn_limit_stats st;
    enum jinn_limit_conn_kind k[8];
    CHECK(l != NULL);
    jinn_limit_set_peer_check(l, peer_is_ten, NULL);

    CHECK_INT(jinn_limit_conn_open(l, 0x7f000003u, &k[0]), 0);
    CHECK_INT(k[0], JINN_LIMIT_CONN_CLIENT);
    CHECK_INT(jinn_limit_conn_open(l, 0x7f000003u, &k[1]), 0);
    /* A third from the same address is over its cap... */
    CHECK_INT(jinn_limit_conn_open(l, 0x7f000003u, &k[2]), JINN_ETOOMANY);
    CHECK_INT(k[2], JINN_LIMIT_CONN_NONE);
    /* ...another address is served, up to max - reserved = 3 clients. */
    CHECK_INT(jinn_limit_conn_open(l, 0x7f000002u, &k[3]), 0);
    CHECK_INT(jinn_limit_conn_open(l, 0x7f000004u, &k[4]), JINN_EBUSY);
    /* The reserve is the peers'. */
    CHECK_INT(jinn_limit_conn_open(l, 0x0a000001u, &k[5]), 0);
    CHECK_INT(k[5], JINN_LIMIT_CONN_PEER);
    CHECK_INT(jinn_limit_conn_open(l, 0x0a000001u, &k[6]), 0);
    CHECK_INT(jinn_limit_conn_open(l, 0x0a000001u, &k[7]), 0); /* not capped per address */
    jinn_limit_stats(l, &st);
    CHECK_INT(st.conns_client, 3);
    CHECK_INT(st.conns_peer, 3);
    CHECK_INT(st.addrs, 2);
    CHECK_INT(st.conns_refused_addr, 1);
    CHECK_INT(st.conns_refused_total, 1);

    /* Closing frees the address's room and, at zero, its entry. */
    jinn_limit_conn_close(l, 0x7f000003u, k[0]);
    CHECK_INT(jinn_limit_conn_open(l, 0x7f000003u, &k[0]), 0);
    jinn_limit_conn_close(l, 0x7f000003u, k[0]);
    jinn_limit_conn_close(l, 0x7f000003u, k[1]);
    jinn_limit_conn_close(l, 0x7f000003u, k[2]); /* NONE: nothing to give back */
    jinn_limit_conn_close(l, 0x7f000002u, k[3]);
    for (int i = 5; i < 8; i++) {
        jinn_limit_conn_close(l, 0x0a000001u, k[i]);
    }
    jinn_limit_stats(l, &st);
    CHECK_INT(st.conns_client, 0);
    CHECK_INT(st.conns_peer, 0);
    CHECK_INT(st.addrs, 0);
    jinn_limit_destroy(l);
}

TEST(limit_token_rate_refills_and_is_per_token)
{
    struct jinn_limit_config cfg = {.rate = 2, .max_connections = 10};
    struct jinn_limit *l = jinn_limit_create(&cfg);
    struct jinn_limit_token *t;
    unsigned retry;
    CHECK(l != NULL);

    /* A burst of rate (2), then refused with a Retry-After. */
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1000, false, &t, &retry), 0);
    jinn_limit_request_end(l, t);
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1000, false, &t, &retry), 0);
    jinn_limit_request_end(l, t);
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1000, false, &t, &retry), JINN_ETOOMANY);
    CHECK(t == NULL);
    CHECK_INT(retry, 1);
    /* Another token is served meanwhile; privileged callers always are. */
    CHECK_INT(jinn_limit_request_begin(l, "bob", 1000, false, &t, &retry), 0);
    jinn_limit_request_end(l, t);
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1000, true, &t, &retry), 0);
    CHECK(t == NULL);
    /* 500 ms at 2/s gives one request back. */
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1499, false, &t, &retry), JINN_ETOOMANY);
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1500, false, &t, &retry), 0);
    jinn_limit_request_end(l, t);
    CHECK_INT(jinn_limit_request_begin(l, "alice", 1500, false, &t, &retry), JINN_ETOOMANY);
    /* A long pause refills to the burst, not beyond. */
    for (int i = 0; i < 2; i++) {
        CHECK_INT(jinn_limit_request_begin(l, "alice", 100000, false, &t, &retry), 0);
        jinn_limit_request_end(l, t);
    }
    CHECK_INT(jinn_limit_request_begin(l, "alice", 100000, false, &t, &retry), JINN_ETOOMANY);
    jinn_limit_destroy(l);
}

TEST(limit_token_retry_after_slow_rate)
{
    /* rate 1 with a burst of 1: the next request is a whole second away. */
    struct jinn_limit_config cfg = {.rate = 1, .max_connections = 10};
    struct jinn_limit *l = jinn_limit_create(&cfg);
    struct jinn_limit_token *t;
    unsigned retry = 0;
    CHECK(l != NULL);
    CHECK_INT(jinn_limit_request_begin(l, "a", 0, false, &t, &retry), 0);
    jinn_limit_request_end(l, t);
    CHECK_INT(jinn_limit_request_begin(l, "a", 1, false, &t, &retry), JINN_ETOOMANY);
    CHECK_INT(retry, 1);
    jinn_limit_destroy(l);
}

TEST(limit_token_concurrency_counts_until_end)
{
    struct jinn_limit_config cfg = {.concurrent = 2, .max_connections = 10};
    struct jinn_limit *l = jinn_limit_create(&cfg);
    struct jinn_limit_token *a, *b, *c;
    unsigned retry;
    CHECK(l != NULL);
    CHECK_INT(jinn_limit_request_begin(l, "anonymous", 0, false, &a, &retry), 0);
    CHECK_INT(jinn_limit_request_begin(l, "anonymous", 0, false, &b, &retry), 0);
    CHECK_INT(jinn_limit_request_begin(l, "anonymous", 0, false, &c, &retry), JINN_ETOOMANY);
    CHECK_INT(jinn_limit_request_begin(l, "other", 0, false, &c, &retry), 0);
    jinn_limit_request_end(l, c);
    jinn_limit_request_end(l, a);
    CHECK_INT(jinn_limit_request_begin(l, "anonymous", 0, false, &a, &retry), 0);
    jinn_limit_request_end(l, a);
    jinn_limit_request_end(l, b);
    jinn_limit_destroy(l);
}

TEST(limit_token_map_is_bounded_and_evicts_idle)
{
    struct jinn_limit_config cfg = {.concurrent = 1, .max_connections = 10};
    struct jinn_limit *l = jinn_limit_create(&cfg);
    struct jinn_limit_stats st;
    struct jinn_limit_token *t, *held = NULL;
    unsigned retry;
    char name[32];
    CHECK(l != NULL);
    /* Names beyond the limit evict idle entries: the map never grows. */
    for (unsigned i = 0; i < JINN_LIMIT_TOKENS_MAX + 100; i++) {
        snprintf(name, sizeof name, "t%u", i);
        CHECK_INT(jinn_limit_request_begin(l, name, 0, false, &t, &retry), 0);
        jinn_limit_request_end(l, t);
    }
    jinn_limit_stats(l, &st);
    CHECK_INT(st.tokens, JINN_LIMIT_TOKENS_MAX);
    CHECK_INT(st.tokens_evicted, 100);
    jinn_limit_destroy(l);

    /* When every entry is busy a new name is refused, not added. */
    l = jinn_limit_create(&cfg);
    CHECK(l != NULL);
    for (unsigned i = 0; i < JINN_LIMIT_TOKENS_MAX; i++) {
        snprintf(name, sizeof name, "busy%u", i);
        CHECK_INT(jinn_limit_request_begin(l, name, 0, false, &t, &retry), 0);
        if (i == 0) {
            held = t;
        }
    }
    CHECK_INT(jinn_limit_request_begin(l, "late", 0, false, &t, &retry), JINN_ETOOMANY);
    jinn_limit_request_end(l, held);
    CHECK_INT(jinn_limit_request_begin(l, "late", 0, false, &t, &retry), 0); /* busy0 evicted */
    jinn_limit_stats(l, &st);
    CHECK_INT(st.tokens, JINN_LIMIT_TOKENS_MAX);
    jinn_limit_destroy(l); /* frees entries still in flight */
}

TEST(limit_off_counts_nothing)
{
    struct jinn_limit_config cfg = {.max_connections = 10};
    struct jinn_limit *l = jinn_limit_create(&cfg);
    struct jinn_limit_stats st;
    struct jinn_limit_token *t;
    enum jinn_limit_conn_kind k;
    unsigned retry;
    CHECK(l != NULL);
    for (int i = 0; i < 100; i++) {
        CHECK_INT(jinn_limit_request_begin(l, "x", 0, false, &t, &retry), 0);
        CHECK(t == NULL);
    }
    for (int i = 0; i < 10; i++) {
        CHECK_INT(jinn_limit_conn_open(l, 1, &k), 0); /* conns_per_addr 0: no cap */
    }
    CHECK_INT(jinn_limit_conn_open(l, 1, &k), JINN_EBUSY); /* max_connections still */
    jinn_limit_stats(l, &st);
    CHECK_INT(st.tokens, 0);
    jinn_limit_destroy(l);
}
