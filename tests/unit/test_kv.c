/* test_kv.c - the key-value state: conditions, TTLs, ordering, history and
 * snapshots with bad input. */
#include <stdlib.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm/kv.h"
#include "fsm_apply.h"
#include "unit.h"

static struct jinn_cmd put_cmd(const char *ns, const char *key, const char *value)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    c.kv.ns.p = (const uint8_t *)ns;
    c.kv.ns.len = strlen(ns);
    c.kv.key.p = (const uint8_t *)key;
    c.kv.key.len = strlen(key);
    c.kv.value.p = (const uint8_t *)value;
    c.kv.value.len = strlen(value);
    return c;
}

static const struct jinn_result *apply(struct jinn_fsm *fsm, uint64_t index, uint64_t time,
                                       struct jinn_cmd c)
{
    return unit_apply(fsm, index, time, c);
}

TEST(kv_put_get_conditions)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c;
    const struct jinn_kv_entry *e;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 10, 1, put_cmd("a", "k", "v1"))->code, JINN_OK);
    CHECK_INT(fsm.result.value, 10);
    c = put_cmd("a", "k", "v2");
    c.kv.flags = JINN_KV_CREATE_ONLY;
    CHECK_INT(apply(&fsm, 11, 1, c)->code, JINN_EPRECONDITION);
    CHECK_INT(fsm.result.value, 10); /* the current revision */
    c = put_cmd("a", "k", "v2");
    c.kv.expect_revision = 9;
    CHECK_INT(apply(&fsm, 12, 1, c)->code, JINN_EPRECONDITION);
    c.kv.expect_revision = 10;
    CHECK_INT(apply(&fsm, 13, 1, c)->code, JINN_OK);
    e = jinn_kv_get(&fsm.kv, "a", (const uint8_t *)"k", 1);
    CHECK(e != NULL);
    CHECK_INT(e->revision, 13);
    CHECK_INT(e->create_revision, 10);
    CHECK(e->value_len == 2 && memcmp(e->value, "v2", 2) == 0);
    CHECK(jinn_kv_get(&fsm.kv, "b", (const uint8_t *)"k", 1) == NULL); /* namespaces apart */
    /* Delete: conditional, then missing. */
    c = put_cmd("a", "k", "");
    c.type = JINN_CMD_KV_DEL;
    c.kv.expect_revision = 10;
    CHECK_INT(apply(&fsm, 14, 1, c)->code, JINN_EPRECONDITION);
    c.kv.expect_revision = 0;
    CHECK_INT(apply(&fsm, 15, 1, c)->code, JINN_OK);
    CHECK_INT(apply(&fsm, 16, 1, c)->code, JINN_ENOTFOUND);
    CHECK_INT(jinn_kv_count(&fsm.kv), 0);
    CHECK_INT(fsm.kv.bytes, 0);
    jinn_fsm_close(&fsm);
}

TEST(kv_ttl_expires_in_cluster_time_only)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c = put_cmd("s", "session", "x");
    struct jinn_cmd noop;
    jinn_fsm_init(&fsm);
    c.kv.ttl_ms = 1000;
    CHECK_INT(apply(&fsm, 1, 5000, c)->code, JINN_OK);
    CHECK_INT(jinn_kv_next_expiry(&fsm.kv), 6000);
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    apply(&fsm, 2, 5999, noop);
    CHECK(jinn_kv_get(&fsm.kv, "s", (const uint8_t *)"session", 7) != NULL);
    apply(&fsm, 3, 6000, noop);
    CHECK(jinn_kv_get(&fsm.kv, "s", (const uint8_t *)"session", 7) == NULL);
    CHECK_INT(jinn_kv_next_expiry(&fsm.kv), 0);
    /* The history says it expired, at the revision of the entry that did it. */
    CHECK_INT(jinn_kv_history_len(&fsm.kv), 2);
    CHECK_INT(jinn_kv_history_at(&fsm.kv, 1)->type, JINN_KV_EVENT_EXPIRE);
    CHECK_INT(jinn_kv_history_at(&fsm.kv, 1)->revision, 3);
    /* A put refreshes the TTL (and a put without ttl clears it). */
    CHECK_INT(apply(&fsm, 4, 7000, c)->code, JINN_OK);
    c.kv.ttl_ms = 0;
    CHECK_INT(apply(&fsm, 5, 7500, c)->code, JINN_OK);
    apply(&fsm, 6, 100000, noop);
    CHECK(jinn_kv_get(&fsm.kv, "s", (const uint8_t *)"session", 7) != NULL);
    jinn_fsm_close(&fsm);
}

struct collected {
    char keys[16][16];
    int n;
};

static bool collect(void *data, const struct jinn_kv_entry *e)
{
    struct collected *c = data;
    snprintf(c->keys[c->n++], 16, "%.*s", (int)e->key_len, (const char *)e->key);
    return c->n < 16;
}

TEST(kv_scan_prefix_and_paging)
{
    static const char *keys[] = {"b/2", "a", "b/1", "c", "b/10", "b", "ba"};
    struct jinn_fsm fsm;
    struct collected got;
    jinn_fsm_init(&fsm);
    for (uint64_t i = 0; i < 7; i++) {
        CHECK_INT(apply(&fsm, i + 1, 1, put_cmd("n", keys[i], "v"))->code, JINN_OK);
    }
    CHECK_INT(apply(&fsm, 8, 1, put_cmd("m", "b/0", "other ns"))->code, JINN_OK);
    memset(&got, 0, sizeof got);
    jinn_kv_scan(&fsm.kv, "n", (const uint8_t *)"b/", 2, NULL, 0, collect, &got);
    CHECK_INT(got.n, 3);
    CHECK_STR(got.keys[0], "b/1");
    CHECK_STR(got.keys[1], "b/10");
    CHECK_STR(got.keys[2], "b/2");
    memset(&got, 0, sizeof got);
    jinn_kv_scan(&fsm.kv, "n", (const uint8_t *)"b/", 2, (const uint8_t *)"b/10", 4, collect,
                 &got);
    CHECK_INT(got.n, 1);
    CHECK_STR(got.keys[0], "b/2");
    memset(&got, 0, sizeof got);
    jinn_kv_scan(&fsm.kv, "n", (const uint8_t *)"", 0, (const uint8_t *)"a", 1, collect, &got);
    CHECK_INT(got.n, 6);
    CHECK_STR(got.keys[0], "b");
    CHECK_STR(got.keys[5], "c");
    jinn_fsm_close(&fsm);
}

TEST(kv_snapshot_round_trip_is_byte_identical_and_rejects_corruption)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w1, w2;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    for (uint64_t i = 1; i <= 50; i++) {
        char key[16], value[16];
        struct jinn_cmd c;
        snprintf(key, sizeof key, "k%llu", (unsigned long long)(i * 37 % 50));
        snprintf(value, sizeof value, "v%llu", (unsigned long long)i);
        c = put_cmd(i % 2 ? "odd" : "even", key, value);
        c.kv.ttl_ms = i % 3 ? 0 : 100000;
        CHECK_INT(apply(&a, i, 1000 + i, c)->code, JINN_OK);
    }
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_fsm_encode(&a, &w1), 0);
    CHECK_INT(jinn_fsm_decode(&b, w1.data, w1.len), 0);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    CHECK_INT(jinn_kv_count(&b.kv), jinn_kv_count(&a.kv));
    CHECK_INT(jinn_kv_next_expiry(&b.kv), jinn_kv_next_expiry(&a.kv));
    CHECK_INT(b.kv.history_floor, 50); /* older changes are compacted */
    for (size_t n = 0; n < w1.len; n += 7) {
        CHECK(jinn_fsm_decode(&b, w1.data, n) != 0);
    }
    for (size_t i = 0; i < w1.len; i += 3) {
        w1.data[i] ^= 0x40;
        CHECK(jinn_fsm_decode(&b, w1.data, w1.len) != 0);
        w1.data[i] ^= 0x40;
    }
    CHECK_INT(jinn_kv_count(&b.kv), jinn_kv_count(&a.kv)); /* untouched */
    jinn_wbuf_free(&w1);
    jinn_wbuf_free(&w2);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(kv_cmd_encoding_rejects_bad_fields)
{
    char big[JINN_KV_KEY_MAX + 1];
    struct jinn_cmd c = put_cmd("ns", "k", "v"), d;
    struct jinn_wbuf w;
    memset(big, 'k', sizeof big);
    c.kv.key.p = (const uint8_t *)big;
    c.kv.key.len = sizeof big;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = put_cmd("", "k", "v");
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = put_cmd("ns", "k", "v");
    c.kv.flags = 0x80;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = put_cmd("ns", "key", "value");
    c.kv.ttl_ms = 5;
    c.kv.expect_revision = 77;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.kv.ttl_ms, 5);
    CHECK_INT(d.kv.expect_revision, 77);
    CHECK(d.kv.value.len == 5 && memcmp(d.kv.value.p, "value", 5) == 0);
    for (size_t n = 0; n < w.len; n++) {
        CHECK(jinn_cmd_decode(w.data, n, &d) != 0);
    }
    jinn_wbuf_free(&w);
}

TEST(kv_utf8_and_base64)
{
    struct jinn_wbuf w;
    CHECK(jinn_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    CHECK(!jinn_utf8_valid("\xc0\xaf", 2));         /* overlong */
    CHECK(!jinn_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!jinn_utf8_valid("\xe2\x82", 2));         /* truncated */
    CHECK(!jinn_utf8_valid("\xf4\x90\x80\x80", 4)); /* beyond U+10FFFF */
    jinn_wbuf_init(&w);
    jinn_wbuf_put_base64(&w, "foobar", 6);
    jinn_wbuf_put_base64(&w, "fo", 2);
    jinn_wbuf_put_u8(&w, 0);
    CHECK_STR((const char *)w.data, "Zm9vYmFyZm8=");
    jinn_wbuf_free(&w);
}

/* Issue 10 item 4: the watch history kept every value whole (1 500 PUTs of
 * 1 MiB: 3 GB RSS). Values now live in the history only within
 * JINN_KV_HISTORY_VALUE_BYTES; older events keep revision, type and key and
 * say value_dropped, and no change is lost. */
TEST(kv_watch_history_values_are_bounded_in_bytes)
{
    struct jinn_fsm fsm;
    const size_t mib = 1u << 20, n = (JINN_KV_HISTORY_VALUE_BYTES / (1u << 20)) + 8;
    char *big = jinn_malloc(mib + 1);
    size_t kept = 0;
    CHECK(big != NULL);
    memset(big, 'v', mib);
    big[mib] = '\0';
    jinn_fsm_init(&fsm);
    for (size_t i = 1; i <= n; i++) {
        big[0] = (char)('a' + i % 26);
        CHECK_INT(apply(&fsm, i, 10, put_cmd("ns", "k", big))->code, 0);
        CHECK(fsm.kv.history_value_bytes <= JINN_KV_HISTORY_VALUE_BYTES);
    }
    CHECK_INT(jinn_kv_history_len(&fsm.kv), n); /* every change is still there */
    for (size_t i = 0; i < n; i++) {
        const struct jinn_kv_event *ev = jinn_kv_history_at(&fsm.kv, i);
        CHECK_INT(ev->revision, i + 1);
        CHECK_INT(ev->value_len, mib);
        CHECK(ev->value_dropped == (ev->value == NULL));
        if (ev->value != NULL) {
            CHECK_INT(ev->value[0], 'a' + (i + 1) % 26);
            kept++;
        } else {
            CHECK(kept == 0); /* only the oldest lose their values */
        }
    }
    CHECK_INT(kept, JINN_KV_HISTORY_VALUE_BYTES / mib);
    CHECK_INT(jinn_kv_history_bytes(&fsm.kv), n * 3 + kept * mib); /* "ns" + "k" each */
    /* The newest value is the state's, whatever the history dropped. */
    CHECK_INT(jinn_kv_get(&fsm.kv, "ns", (const uint8_t *)"k", 1)->value_len, mib);
    jinn_fsm_close(&fsm);
    jinn_free(big);
}

/* The ring grows from 64 slots as changes come (a quiet node does not hold
 * 65 536 empty slots) and, once full, drops the oldest revisions in order. */
TEST(kv_watch_history_grows_then_wraps_in_order)
{
    struct jinn_fsm fsm;
    const size_t n = JINN_KV_HISTORY + 100;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 10, put_cmd("ns", "k", "v"))->code, 0);
    CHECK_INT(fsm.kv.ring_cap, 64);
    for (size_t i = 2; i <= n; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i % 7);
        CHECK_INT(apply(&fsm, i, 10, put_cmd("ns", key, "v"))->code, 0);
    }
    CHECK_INT(fsm.kv.ring_cap, JINN_KV_HISTORY);
    CHECK_INT(jinn_kv_history_len(&fsm.kv), JINN_KV_HISTORY);
    CHECK_INT(fsm.kv.history_floor, 100);
    for (size_t i = 0; i < JINN_KV_HISTORY; i += 997) {
        CHECK_INT(jinn_kv_history_at(&fsm.kv, i)->revision, 101 + i);
    }
    CHECK_INT(jinn_kv_history_at(&fsm.kv, JINN_KV_HISTORY - 1)->revision, n);
    /* "ns" + "kN" + "v" per event: the counters follow the drops. */
    CHECK_INT(jinn_kv_history_bytes(&fsm.kv), (uint64_t)JINN_KV_HISTORY * 5);
    jinn_fsm_close(&fsm);
}
