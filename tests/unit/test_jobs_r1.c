/* test_jobs_r1.c - regressions for reviewer R1's findings on jobs (issue
 * 14): replica digests across the format-2 -> 3 upgrade (F1, F2) and cron
 * against the leader's wall clock after a full-cluster outage (F3). Each
 * failed on main ed2c5d1. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "codec.h"
#include "cron.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/digest.h"
#include "fsm/fn.h"
#include "fsm/fsm.h"
#include "fsm/jobs.h"
#include "fsm/queue.h"
#include "fsm_apply.h"
#include "unit.h"

#define S(text) ((struct jinn_slice){(const uint8_t *)(text), strlen(text)})

static struct jinn_cmd r1_q(uint8_t type, const char *queue, const char *worker)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.q.queue = S(queue);
    c.q.worker = S(worker);
    c.q.payload = S("{}");
    c.q.count = 1000;
    c.q.bytes = 1 << 20;
    c.q.max_deliver = 5;
    c.q.ms = 30000;
    return c;
}

static uint64_t section_hash(const struct jinn_fsm *fsm, const char *name)
{
    struct jinn_digest d;
    const struct jinn_digest_section *s;
    if (jinn_digest_memory(fsm, 1, &d) != 0) {
        return 0;
    }
    s = jinn_digest_find(&d, name);
    return s ? s->hash : 0;
}

/* F1: a replica that restored a format-2 snapshot (written by the build
 * before jobs, e.g. during the upgrade) holds leased_ms = 0 for a message
 * that a replica which replayed the Q_FETCH holds as its lease time. Same
 * log, different `queues` digest: the replica check marks one of them
 * diverged (it then refuses reads), and it stays so after the lease ends,
 * because leased_ms is kept as "the last lease" (dead letters: forever). */
TEST(jobs_r1_v2_restore_and_replay_digest_the_same_queues)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf q, f, w;
    uint8_t needle[16];
    size_t at = (size_t)-1;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    /* Replica A: applies the log live. */
    CHECK_INT(unit_apply(&a, 42, 1000, r1_q(JINN_CMD_Q_PUBLISH, "WORKERS_f", ""))->code, 0);
    CHECK_INT(unit_apply(&a, 43, 1100, r1_q(JINN_CMD_Q_FETCH, "WORKERS_f", "n1/f/0"))->code, 0);
    /* Replica B: the same state as the old build's format-2 snapshot at 43
     * (A's own encodings with the format-3 additions removed). */
    jinn_wbuf_init(&q);
    jinn_wbuf_init(&f);
    jinn_wbuf_init(&w);
    jinn_queues_encode(&a.queues, &q);
    /* max_deliver (5) then leased_ms (1100), in the message's encoding */
    for (int i = 0; i < 8; i++) {
        needle[i] = (uint8_t)(UINT64_C(5) >> (8 * i));
        needle[8 + i] = (uint8_t)(UINT64_C(1100) >> (8 * i));
    }
    for (size_t i = 0; i + 16 <= q.len; i++) {
        if (memcmp(q.data + i, needle, 16) == 0) {
            at = i + 8;
            break;
        }
    }
    CHECK(at != (size_t)-1);
    memmove(q.data + at, q.data + at + 8, q.len - at - 8); /* drop leased_ms */
    q.len -= 8;
    jinn_fns_encode(&a.fns, &f);
    CHECK(f.len >= 5);
    f.len -= 5; /* drop the signing policy (u8 + u32) */
    jinn_wbuf_put_raw(&w, JINN_SNAPSHOT_MAGIC, 8);
    jinn_wbuf_put_u32(&w, 2);
    jinn_wbuf_put_u64(&w, a.time_ms);
    jinn_nodes_encode(&a.nodes, &w);
    jinn_kv_encode(&a.kv, &w);
    jinn_locks_encode(&a.locks, &w);
    jinn_wbuf_put_raw(&w, q.data, q.len);
    jinn_wbuf_put_raw(&w, f.data, f.len);
    jinn_sql_encode(&a.sql, &w);
    jinn_wbuf_put_u32(&w, jinn_crc32(0, w.data, w.len));
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    /* F2: both digest as the old build would: its queues section is
     * the encoding without leased_ms, its functions section the registry
     * without the signing policy. */
    CHECK(section_hash(&a, "queues") == jinn_fnv1a64(JINN_FNV_OFFSET, q.data, q.len));
    CHECK(section_hash(&a, "functions") == jinn_fnv1a64(JINN_FNV_OFFSET, f.data, f.len));
    CHECK(section_hash(&b, "functions") == jinn_fnv1a64(JINN_FNV_OFFSET, f.data, f.len));
    CHECK(section_hash(&a, "jobs") == 0); /* no jobs section while empty */
    CHECK(section_hash(&b, "queues") == jinn_fnv1a64(JINN_FNV_OFFSET, q.data, q.len));
    /* Both go on with the same entries: the lease expires (no ack). */
    {
        struct jinn_cmd noop;
        memset(&noop, 0, sizeof noop);
        noop.type = JINN_CMD_NOOP;
        unit_apply(&a, 44, 40000, noop);
        unit_apply(&b, 44, 40000, noop);
    }
    fprintf(stderr, "  r1: queues digest live=%016llx restored-v2=%016llx\n",
            (unsigned long long)section_hash(&a, "queues"),
            (unsigned long long)section_hash(&b, "queues"));
    {
        /* The only difference: patch B's leased_ms and they agree. */
        const struct jinn_queue *qb = jinn_queues_get(&b.queues, "WORKERS_f", 9);
        uint64_t before = section_hash(&b, "queues");
        ((struct jinn_qmsg *)jinn_queue_msg(qb, 42))->leased_ms = 1100;
        fprintf(stderr, "  r1: with B's leased_ms set to 1100: %s\n",
                section_hash(&a, "queues") == section_hash(&b, "queues") ? "equal" : "still differ");
        ((struct jinn_qmsg *)jinn_queue_msg(qb, 42))->leased_ms = 0;
        (void)before;
        CHECK(section_hash(&a, "queues") == section_hash(&b, "queues"));
    }
    jinn_wbuf_free(&q);
    jinn_wbuf_free(&f);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

/* F2: design.md says a cluster that never used jobs/tokens digests exactly
 * as a build from before them, "so a check during a rolling upgrade does
 * not call the upgraded nodes diverged". The functions section now always
 * ends with the signing policy (5 bytes even when empty), so an empty
 * registry's `functions` hash differs from the format-2 encoding's. */
TEST(jobs_r1_empty_functions_section_digests_as_before_jobs)
{
    struct jinn_fsm a;
    struct jinn_wbuf f, old;
    jinn_fsm_init(&a);
    jinn_wbuf_init(&f);
    jinn_wbuf_init(&old);
    jinn_fns_encode_digest(&a.fns, &f);
    jinn_wbuf_put_u32(&old, 0); /* format 2's empty section (test_jobs.c) */
    jinn_wbuf_put_u32(&old, 0);
    fprintf(stderr, "  r1: empty functions section: %zu bytes now, %zu before jobs\n", f.len,
            old.len);
    CHECK(jinn_fnv1a64(JINN_FNV_OFFSET, f.data, f.len) ==
          jinn_fnv1a64(JINN_FNV_OFFSET, old.data, old.len));
    CHECK(section_hash(&a, "functions") == jinn_fnv1a64(JINN_FNV_OFFSET, old.data, old.len));
    /* The snapshot (format 3) still carries the policy, set or not. */
    jinn_wbuf_free(&f);
    jinn_wbuf_init(&f);
    jinn_fns_encode(&a.fns, &f);
    CHECK_INT(f.len, old.len + 5);
    /* A policy that is set is state every replica holds: digested. */
    a.fns.policy.require_signature = true;
    CHECK(section_hash(&a, "functions") != jinn_fnv1a64(JINN_FNV_OFFSET, old.data, old.len));
    a.fns.policy.require_signature = false;
    jinn_wbuf_free(&f);
    jinn_wbuf_free(&old);
    jinn_fsm_close(&a);
}

