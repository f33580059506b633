/* test_lock.c - locks in the state machine: grants, expiry, tokens,
 * fencing and snapshots. */
#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "unit.h"

static struct jinn_cmd lock_cmd(uint8_t type, const char *name, const char *owner,
                                uint64_t token, uint64_t ttl)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.lock.name.p = (const uint8_t *)name;
    c.lock.name.len = strlen(name);
    c.lock.owner.p = (const uint8_t *)owner;
    c.lock.owner.len = strlen(owner);
    c.lock.token = token;
    c.lock.ttl_ms = ttl;
    return c;
}

static int apply(struct jinn_fsm *fsm, uint64_t index, uint64_t time, struct jinn_cmd c)
{
    const struct jinn_result *res = unit_apply(fsm, index, time, c);
    return res ? res->code : -1;
}

TEST(lock_grant_conflict_expiry_and_token_order)
{
    struct jinn_fsm fsm;
    const struct jinn_lock *k;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 5, 1000, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "m", "w1", 0, 500)), 0);
    CHECK_INT(fsm.result.value, 5); /* the token is the grant's index */
    CHECK_INT(apply(&fsm, 6, 1200, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "m", "w2", 0, 500)),
              JINN_ECONFLICT);
    CHECK_INT(fsm.result.value, 5);
    /* Not a millisecond early: at 1499 it is still held. */
    CHECK_INT(apply(&fsm, 7, 1499, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "m", "w2", 0, 500)),
              JINN_ECONFLICT);
    CHECK_INT(apply(&fsm, 8, 1500, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "m", "w2", 0, 500)), 0);
    CHECK_INT(fsm.result.value, 8);
    k = jinn_locks_get(&fsm.locks, "m", 1);
    CHECK(k != NULL && k->token == 8 && k->expires_at == 2000);
    CHECK(k->owner_len == 2 && memcmp(k->owner, "w2", 2) == 0);
    /* The old holder can neither refresh nor release. */
    CHECK_INT(apply(&fsm, 9, 1600, lock_cmd(JINN_CMD_LOCK_REFRESH, "m", "", 5, 0)),
              JINN_ECONFLICT);
    CHECK_INT(apply(&fsm, 10, 1600, lock_cmd(JINN_CMD_LOCK_RELEASE, "m", "", 5, 0)),
              JINN_ECONFLICT);
    /* The holder refreshes (same TTL when none is given) and releases. */
    CHECK_INT(apply(&fsm, 11, 1900, lock_cmd(JINN_CMD_LOCK_REFRESH, "m", "", 8, 0)), 0);
    CHECK_INT(jinn_locks_get(&fsm.locks, "m", 1)->expires_at, 2400);
    CHECK_INT(jinn_locks_next_expiry(&fsm.locks), 2400);
    CHECK_INT(apply(&fsm, 12, 1950, lock_cmd(JINN_CMD_LOCK_RELEASE, "m", "", 8, 0)), 0);
    CHECK(jinn_locks_get(&fsm.locks, "m", 1) == NULL);
    CHECK_INT(jinn_locks_next_expiry(&fsm.locks), 0);
    jinn_fsm_close(&fsm);
}

TEST(lock_fenced_kv_writes)
{
    struct jinn_fsm fsm;
    struct jinn_cmd put;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 3, 100, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "res", "w", 0, 1000)), 0);
    memset(&put, 0, sizeof put);
    put.type = JINN_CMD_KV_PUT;
    put.kv.ns.p = (const uint8_t *)"ns";
    put.kv.ns.len = 2;
    put.kv.key.p = (const uint8_t *)"counter";
    put.kv.key.len = 7;
    put.kv.value.p = (const uint8_t *)"1";
    put.kv.value.len = 1;
    put.kv.flags = JINN_KV_FENCED;
    put.kv.fence.p = (const uint8_t *)"res";
    put.kv.fence.len = 3;
    put.kv.fence_token = 3;
    CHECK_INT(apply(&fsm, 4, 200, put), 0);
    put.kv.fence_token = 2; /* a stale holder */
    CHECK_INT(apply(&fsm, 5, 300, put), JINN_ECONFLICT);
    put.kv.fence_token = 3; /* the lock expired at 1100 */
    CHECK_INT(apply(&fsm, 6, 1100, put), JINN_ECONFLICT);
    CHECK_INT(jinn_kv_get(&fsm.kv, "ns", (const uint8_t *)"counter", 7)->revision, 4);
    put.type = JINN_CMD_KV_DEL;
    CHECK_INT(apply(&fsm, 7, 1100, put), JINN_ECONFLICT);
    CHECK(jinn_kv_get(&fsm.kv, "ns", (const uint8_t *)"counter", 7) != NULL);
    jinn_fsm_close(&fsm);
}

TEST(lock_snapshot_round_trip_and_bad_commands)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w1, w2;
    struct jinn_cmd c, d;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    for (uint64_t i = 1; i <= 20; i++) {
        char name[16];
        snprintf(name, sizeof name, "L%llu", (unsigned long long)(i * 7 % 20));
        CHECK_INT(apply(&a, i, 10, lock_cmd(JINN_CMD_LOCK_ACQUIRE, name, "o", 0, 100 + i)), 0);
    }
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_fsm_encode(&a, &w1), 0);
    CHECK_INT(jinn_fsm_decode(&b, w1.data, w1.len), 0);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    for (size_t n = 0; n < w1.len; n += 5) {
        CHECK(jinn_fsm_decode(&b, w1.data, n) != 0);
    }
    jinn_wbuf_free(&w1);
    jinn_wbuf_free(&w2);
    /* Commands: no owner on acquire, empty name, oversized name. */
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "x", "", 0, 10);
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_cmd_encode(&c, &w1), JINN_EINVAL);
    jinn_wbuf_free(&w1);
    c = lock_cmd(JINN_CMD_LOCK_RELEASE, "", "", 1, 0);
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_cmd_encode(&c, &w1), JINN_EINVAL);
    jinn_wbuf_free(&w1);
    c = lock_cmd(JINN_CMD_LOCK_REFRESH, "name", "", 42, 99);
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_cmd_encode(&c, &w1), 0);
    CHECK_INT(jinn_cmd_decode(w1.data, w1.len, &d), 0);
    CHECK_INT(d.lock.token, 42);
    CHECK_INT(d.lock.ttl_ms, 99);
    for (size_t n = 0; n < w1.len; n++) {
        CHECK(jinn_cmd_decode(w1.data, n, &d) != 0);
    }
    jinn_wbuf_free(&w1);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(lock_waiters_get_it_in_order_on_release_and_expiry)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c, noop;
    const struct jinn_lock *k;
    struct jinn_wbuf w1, w2;
    struct jinn_fsm copy;
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "q", "first", 0, 1000)), 0);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "q", "second", 0, 500);
    c.lock.wait_ms = 5000;
    CHECK_INT(apply(&fsm, 2, 10, c), JINN_EQUEUED);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "q", "third", 0, 500);
    c.lock.wait_ms = 1200;
    CHECK_INT(apply(&fsm, 3, 20, c), JINN_EQUEUED);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "q", "impatient", 0, 500);
    CHECK_INT(apply(&fsm, 4, 30, c), JINN_ECONFLICT); /* no wait: refused at once */
    CHECK(jinn_locks_waiting(&fsm.locks, "q", 1, 2));
    CHECK(jinn_locks_waiting(&fsm.locks, "q", 1, 3));
    CHECK_INT(jinn_locks_next_expiry(&fsm.locks), 1000);
    /* The snapshot carries the line. */
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_fsm_encode(&fsm, &w1), 0);
    jinn_fsm_init(&copy);
    CHECK_INT(jinn_fsm_decode(&copy, w1.data, w1.len), 0);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&copy, &w2), 0);
    CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    jinn_wbuf_free(&w1);
    jinn_wbuf_free(&w2);
    jinn_fsm_close(&copy);
    /* Release at index 5: the first in line gets it with token 5. */
    CHECK_INT(apply(&fsm, 5, 100, lock_cmd(JINN_CMD_LOCK_RELEASE, "q", "", 1, 0)), 0);
    k = jinn_locks_get(&fsm.locks, "q", 1);
    CHECK(k != NULL && k->token == 5 && k->request == 2 && k->expires_at == 600);
    CHECK(k->owner_len == 6 && memcmp(k->owner, "second", 6) == 0);
    CHECK(!jinn_locks_waiting(&fsm.locks, "q", 1, 2));
    /* It expires at 600; the third waits until 1220: it gets it next. */
    apply(&fsm, 6, 600, noop);
    k = jinn_locks_get(&fsm.locks, "q", 1);
    CHECK(k != NULL && k->token == 6 && k->request == 3);
    /* A waiter whose wait ended leaves the line and never gets the lock. */
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "q", "late", 0, 500);
    c.lock.wait_ms = 100;
    CHECK_INT(apply(&fsm, 7, 700, c), JINN_EQUEUED);
    apply(&fsm, 8, 800, noop);
    CHECK(!jinn_locks_waiting(&fsm.locks, "q", 1, 7));
    apply(&fsm, 9, 1100, noop); /* the third's lease ends; nobody waits */
    CHECK(jinn_locks_get(&fsm.locks, "q", 1) == NULL);
    jinn_fsm_close(&fsm);
}

/* Issue 12 item 3: a waiter that gives up leaves the line by a command, and
 * that command says whether it had been granted. */
TEST(lock_withdraw_leaves_the_line_or_reports_the_grant)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c;
    struct jinn_wbuf w;
    const struct jinn_lock *k;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "w", "holder", 0, 1000)), 0);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "w", "gone", 0, 30000);
    c.lock.wait_ms = 20000;
    CHECK_INT(apply(&fsm, 2, 10, c), JINN_EQUEUED);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "w", "patient", 0, 500);
    c.lock.wait_ms = 20000;
    CHECK_INT(apply(&fsm, 3, 20, c), JINN_EQUEUED);
    /* The encoding round-trips. */
    c = lock_cmd(JINN_CMD_LOCK_WITHDRAW, "w", "", 2, 0);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    {
        struct jinn_cmd d;
        CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
        CHECK_INT(d.type, JINN_CMD_LOCK_WITHDRAW);
        CHECK_INT(d.lock.token, 2);
        CHECK(d.lock.name.len == 1 && d.lock.name.p[0] == 'w');
    }
    jinn_wbuf_free(&w);
    /* "gone" withdraws while in line: removed, not granted. */
    CHECK_INT(apply(&fsm, 4, 30, c), 0);
    CHECK_INT(fsm.result.value, 0);
    CHECK(!jinn_locks_waiting(&fsm.locks, "w", 1, 2));
    /* The release passes the lock to "patient", never to "gone". */
    CHECK_INT(apply(&fsm, 5, 40, lock_cmd(JINN_CMD_LOCK_RELEASE, "w", "", 1, 0)), 0);
    k = jinn_locks_get(&fsm.locks, "w", 1);
    CHECK(k != NULL && k->request == 3 && k->token == 5);
    /* "patient" gives up too late: it was granted, and is told its token. */
    CHECK_INT(apply(&fsm, 6, 50, lock_cmd(JINN_CMD_LOCK_WITHDRAW, "w", "", 3, 0)), 0);
    CHECK_INT(fsm.result.value, 5);
    CHECK(jinn_locks_get(&fsm.locks, "w", 1) != NULL);
    /* Withdrawing twice, or an unknown acquire: neither waiting nor holding. */
    CHECK_INT(apply(&fsm, 7, 60, lock_cmd(JINN_CMD_LOCK_WITHDRAW, "w", "", 2, 0)),
              JINN_ENOTFOUND);
    jinn_fsm_close(&fsm);
}

/* Issue 10 item 2: locks A and B with equal TTLs, one waiter on each. Both
 * expire in the same command, which grants both with that command's index
 * as token: two entries with equal (expires_at, token) in the expiry index.
 * The old order had no tie-breaker and every replica aborted in link_lock,
 * again on every restart. */
TEST(lock_equal_ttl_grants_by_one_command_do_not_tie)
{
    struct jinn_fsm fsm, copy;
    struct jinn_cmd c, noop;
    const struct jinn_lock *a, *b;
    struct jinn_wbuf w1, w2;
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "A", "x", 0, 1000)), 0);
    CHECK_INT(apply(&fsm, 2, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "B", "x", 0, 1000)), 0);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "A", "y", 0, 1000);
    c.lock.wait_ms = 10000;
    CHECK_INT(apply(&fsm, 3, 0, c), JINN_EQUEUED);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "B", "y", 0, 1000);
    c.lock.wait_ms = 10000;
    CHECK_INT(apply(&fsm, 4, 0, c), JINN_EQUEUED);
    /* One command expires both and grants both: same token, same expiry. */
    apply(&fsm, 5, 1000, noop);
    a = jinn_locks_get(&fsm.locks, "A", 1);
    b = jinn_locks_get(&fsm.locks, "B", 1);
    CHECK(a != NULL && b != NULL);
    CHECK(a->token == 5 && b->token == 5 && a->expires_at == 2000 && b->expires_at == 2000);
    CHECK_INT(fsm.locks.by_expiry.count, 2);
    CHECK_INT(jinn_locks_line_length(&fsm.locks, "A", 1), 0);
    /* Both are in the expiry index: both expire (the old insert failed
     * silently and that lock never expired). */
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_fsm_encode(&fsm, &w1), 0);
    jinn_fsm_init(&copy);
    CHECK_INT(jinn_fsm_decode(&copy, w1.data, w1.len), 0); /* not "corrupt" */
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&copy, &w2), 0);
    CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    jinn_wbuf_free(&w1);
    jinn_wbuf_free(&w2);
    apply(&fsm, 6, 2000, noop);
    apply(&copy, 6, 2000, noop);
    CHECK(jinn_locks_get(&fsm.locks, "A", 1) == NULL && jinn_locks_get(&fsm.locks, "B", 1) == NULL);
    CHECK(jinn_locks_get(&copy.locks, "A", 1) == NULL && jinn_locks_get(&copy.locks, "B", 1) == NULL);
    CHECK_INT(fsm.locks.by_expiry.count, 0);
    jinn_fsm_close(&copy);
    jinn_fsm_close(&fsm);
}

/* The other way to a tie: unequal TTLs, then refreshes that land two locks
 * granted by one command on the same expiry. */
TEST(lock_refresh_onto_an_equal_expiry_keeps_both)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c, noop;
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "A", "x", 0, 1000)), 0);
    CHECK_INT(apply(&fsm, 2, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "B", "x", 0, 1000)), 0);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "A", "y", 0, 1000);
    c.lock.wait_ms = 10000;
    CHECK_INT(apply(&fsm, 3, 0, c), JINN_EQUEUED);
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "B", "y", 0, 3000);
    c.lock.wait_ms = 10000;
    CHECK_INT(apply(&fsm, 4, 0, c), JINN_EQUEUED);
    apply(&fsm, 5, 1000, noop); /* both granted with token 5; A to 2000, B to 4000 */
    CHECK_INT(jinn_locks_get(&fsm.locks, "B", 1)->expires_at, 4000);
    /* Refresh A to 4000 at 1500 + 2500: now equal to B. */
    CHECK_INT(apply(&fsm, 6, 1500, lock_cmd(JINN_CMD_LOCK_REFRESH, "A", "", 5, 2500)), 0);
    CHECK_INT(jinn_locks_get(&fsm.locks, "A", 1)->expires_at, 4000);
    CHECK_INT(fsm.locks.by_expiry.count, 2);
    apply(&fsm, 7, 4000, noop);
    CHECK(jinn_locks_get(&fsm.locks, "A", 1) == NULL);
    CHECK(jinn_locks_get(&fsm.locks, "B", 1) == NULL);
    jinn_fsm_close(&fsm);
}

/* A TTL or wait near UINT64_MAX saturates ("never") instead of wrapping
 * into the past and expiring at once. */
TEST(lock_huge_ttl_saturates)
{
    struct jinn_fsm fsm;
    struct jinn_cmd noop;
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 1000, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "A", "x", 0, UINT64_MAX)), 0);
    CHECK(jinn_locks_get(&fsm.locks, "A", 1)->expires_at == UINT64_MAX);
    apply(&fsm, 2, 5000, noop);
    CHECK(jinn_locks_get(&fsm.locks, "A", 1) != NULL);
    jinn_fsm_close(&fsm);
}

/* A3: a waiter parked on a leader that died was granted the lock when its
 * holder expired, though nobody listened for it. A new leader's first
 * command (LOCK_ORPHANS) drops every waiter queued before it, before the
 * expiry sweep of that same command can grant one. */
TEST(lock_orphans_leave_every_line_before_the_sweep)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c, orphans;
    memset(&orphans, 0, sizeof orphans);
    orphans.type = JINN_CMD_LOCK_ORPHANS;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 1, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "A", "a", 0, 1000)), 0);
    CHECK_INT(apply(&fsm, 2, 0, lock_cmd(JINN_CMD_LOCK_ACQUIRE, "B", "a", 0, 60000)), 0);
    for (uint64_t i = 3; i <= 5; i++) {
        c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, i == 5 ? "B" : "A", i == 3 ? "b" : "c", 0, 60000);
        c.lock.wait_ms = 120000;
        CHECK_INT(apply(&fsm, i, 10, c), JINN_EQUEUED);
    }
    CHECK_INT(jinn_locks_line_length(&fsm.locks, "A", 1), 2);
    /* A's holder expired at 1000; the new leader's first command is at 2000. */
    CHECK_INT(apply(&fsm, 7, 2000, orphans), 0);
    CHECK_INT(fsm.result.value, 3);
    CHECK(jinn_locks_get(&fsm.locks, "A", 1) == NULL); /* free, not granted to b */
    CHECK_INT(jinn_locks_line_length(&fsm.locks, "A", 1), 0);
    CHECK_INT(jinn_locks_line_length(&fsm.locks, "B", 1), 0);
    CHECK(jinn_locks_get(&fsm.locks, "B", 1) != NULL); /* holders stay */
    /* Waiters queued in the new term are kept. */
    c = lock_cmd(JINN_CMD_LOCK_ACQUIRE, "B", "d", 0, 60000);
    c.lock.wait_ms = 120000;
    CHECK_INT(apply(&fsm, 8, 2000, c), JINN_EQUEUED);
    CHECK_INT(apply(&fsm, 9, 2000, orphans), 0);
    CHECK_INT(fsm.result.value, 1); /* index 8 < 9: a later leader drops it too */
    jinn_fsm_close(&fsm);
}
