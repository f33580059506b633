/* test_queue.c - queues in the state machine: leases, redelivery in
 * cluster time, backoff, dead letters, idempotency, limits, snapshots. */
#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "unit.h"

static struct jinn_cmd qcmd(uint8_t type, const char *worker, uint64_t seq)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.q.queue.p = (const uint8_t *)"jobs";
    c.q.queue.len = 4;
    c.q.worker.p = (const uint8_t *)worker;
    c.q.worker.len = strlen(worker);
    c.q.seq = seq;
    return c;
}

static struct jinn_cmd pub(const char *payload, const char *idem)
{
    struct jinn_cmd c = qcmd(JINN_CMD_Q_PUBLISH, "", 0);
    c.q.payload.p = (const uint8_t *)payload;
    c.q.payload.len = strlen(payload);
    c.q.idem.p = (const uint8_t *)idem;
    c.q.idem.len = strlen(idem);
    c.q.count = 3;      /* max_length */
    c.q.bytes = 1000;   /* max_bytes */
    c.q.ms = 60000;     /* idempotency window */
    c.q.max_deliver = 2;
    return c;
}

static struct jinn_cmd fetch(const char *worker, uint64_t max, uint64_t ack_wait)
{
    struct jinn_cmd c = qcmd(JINN_CMD_Q_FETCH, worker, 0);
    c.q.count = max;
    c.q.ms = ack_wait;
    return c;
}

static const struct jinn_result *apply(struct jinn_fsm *fsm, uint64_t index, uint64_t time,
                                       struct jinn_cmd c)
{
    return unit_apply(fsm, index, time, c);
}

static const struct jinn_queue *jobs(const struct jinn_fsm *fsm)
{
    return jinn_queues_get(&fsm->queues, "jobs", 4);
}

TEST(queue_publish_fetch_ack_fifo_and_limits)
{
    struct jinn_fsm fsm;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply(&fsm, 10, 1, pub("a", ""))->value, 10);
    CHECK_INT(apply(&fsm, 11, 1, pub("b", "key-1"))->value, 11);
    CHECK_INT(apply(&fsm, 12, 1, pub("b again", "key-1"))->value, 11); /* retry: same seq */
    CHECK_INT(jobs(&fsm)->all.count, 2);
    CHECK_INT(apply(&fsm, 13, 1, pub("c", ""))->code, JINN_OK);
    CHECK_INT(apply(&fsm, 14, 1, pub("d", ""))->code, JINN_EFULL); /* max_length 3 */
    /* FIFO by seq; each message leased to exactly one worker. */
    CHECK_INT(apply(&fsm, 15, 100, fetch("w1", 2, 1000))->value, 2);
    CHECK_INT(fsm.queues.fetched[0], 10);
    CHECK_INT(fsm.queues.fetched[1], 11);
    CHECK_INT(apply(&fsm, 16, 100, fetch("w2", 5, 1000))->value, 1);
    CHECK_INT(fsm.queues.fetched[0], 13);
    CHECK_INT(apply(&fsm, 17, 100, fetch("w3", 5, 1000))->value, 0);
    /* Only the holder may act on a lease. */
    CHECK_INT(apply(&fsm, 18, 200, qcmd(JINN_CMD_Q_ACK, "w2", 10))->code, JINN_ECONFLICT);
    CHECK_INT(apply(&fsm, 19, 200, qcmd(JINN_CMD_Q_ACK, "w1", 10))->code, JINN_OK);
    CHECK_INT(apply(&fsm, 20, 200, qcmd(JINN_CMD_Q_ACK, "w1", 10))->code, JINN_ENOTFOUND);
    CHECK_INT(jobs(&fsm)->acked, 1);
    CHECK_INT(jobs(&fsm)->leased.count, 2);
    jinn_fsm_close(&fsm);
}

TEST(queue_lease_expiry_redelivers_then_dead_letters)
{
    struct jinn_fsm fsm;
    const struct jinn_qmsg *m;
    struct jinn_cmd noop;
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    jinn_fsm_init(&fsm);
    apply(&fsm, 1, 0, pub("job", ""));
    CHECK_INT(apply(&fsm, 2, 1000, fetch("w1", 1, 500))->value, 1);
    apply(&fsm, 3, 1499, noop);
    CHECK_INT(jobs(&fsm)->leased.count, 1); /* not a millisecond early */
    apply(&fsm, 4, 1500, noop);
    CHECK_INT(jobs(&fsm)->ready.count, 1);
    /* The failed worker does not get it back while another is fetching. */
    apply(&fsm, 5, 1500, fetch("w2", 1, 500)); /* w2 takes it: delivery 2 */
    m = jinn_queue_msg(jobs(&fsm), 1);
    CHECK(m != NULL && m->delivery == 2 && strcmp(m->worker, "w2") == 0);
    apply(&fsm, 6, 2000, noop); /* second lease expires: max_deliver 2 used up */
    CHECK_INT(jobs(&fsm)->dead.count, 1);
    CHECK(strstr(jinn_queue_msg(jobs(&fsm), 1)->reason, "after 2 deliveries") != NULL);
    /* Requeue resets the delivery count; drop forgets it. */
    CHECK_INT(apply(&fsm, 7, 2000, qcmd(JINN_CMD_Q_DROP, "", 99))->code, JINN_ENOTFOUND);
    CHECK_INT(apply(&fsm, 8, 2000, qcmd(JINN_CMD_Q_REQUEUE, "", 1))->code, JINN_OK);
    CHECK_INT(jinn_queue_msg(jobs(&fsm), 1)->delivery, 0);
    CHECK_INT(apply(&fsm, 9, 2000, qcmd(JINN_CMD_Q_DROP, "", 1))->code, JINN_ECONFLICT);
    jinn_fsm_close(&fsm);
}

/* "Preferably not the node that failed it": a node's job slots are
 * NODE/FN/I, so another slot of the same node is the same host and the
 * job goes to another node's slot; an id without '/' is its own host. */
/* A node's job slots share one worker id, "NODE/FN" (wasm/jobs.c), so a job
 * one node failed goes preferably to another node. Ids are compared whole
 * (as every earlier build does: a rule that read parts of an id would lease
 * differently in a cluster of mixed builds). */
TEST(queue_redelivery_prefers_another_host)
{
    struct jinn_fsm fsm;
    const struct jinn_qmsg *m;
    struct jinn_cmd c;
    jinn_fsm_init(&fsm);
    c = pub("job", "");
    c.q.max_deliver = 5;
    apply(&fsm, 1, 0, c);
    CHECK_INT(apply(&fsm, 2, 0, fetch("a/f", 1, 1000))->value, 1);
    CHECK_INT(apply(&fsm, 3, 50, fetch("b/f", 1, 1000))->value, 0); /* b fetches: seen */
    c = qcmd(JINN_CMD_Q_NAK, "a/f", 1);
    c.q.reason.p = (const uint8_t *)"boom";
    c.q.reason.len = 4;
    CHECK_INT(apply(&fsm, 4, 100, c)->code, JINN_OK); /* no delay: ready again */
    /* Node a does not take it back while b fetches. */
    CHECK_INT(apply(&fsm, 5, 200, fetch("a/f", 1, 1000))->value, 0);
    CHECK(jinn_queue_has_ready_for(jobs(&fsm), "b/f", 200, 1000));
    CHECK(!jinn_queue_has_ready_for(jobs(&fsm), "a/f", 200, 1000));
    CHECK_INT(apply(&fsm, 7, 300, fetch("b/f", 1, 1000))->value, 1);
    m = jinn_queue_msg(jobs(&fsm), 1);
    CHECK(m != NULL && m->delivery == 2 && strcmp(m->worker, "b/f") == 0);
    /* b fails it too: b skips it while a fetched within the window, then
     * gets it (a node that is the only one still fetching is not kept
     * waiting). */
    c = qcmd(JINN_CMD_Q_NAK, "b/f", 1);
    c.q.delivery = 2;
    CHECK_INT(apply(&fsm, 8, 400, c)->code, JINN_OK);
    CHECK_INT(apply(&fsm, 9, 1200, fetch("b/f", 1, 1000))->value, 0); /* a seen at 200 */
    CHECK_INT(apply(&fsm, 10, 1201, fetch("b/f", 1, 1000))->value, 1);
    jinn_fsm_close(&fsm);
}

TEST(queue_nak_delay_progress_term)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c, noop;
    memset(&noop, 0, sizeof noop);
    noop.type = JINN_CMD_NOOP;
    jinn_fsm_init(&fsm);
    apply(&fsm, 1, 0, pub("job", ""));
    apply(&fsm, 2, 0, fetch("w", 1, 1000));
    c = qcmd(JINN_CMD_Q_NAK, "w", 1);
    c.q.ms = 300;
    c.q.reason.p = (const uint8_t *)"boom";
    c.q.reason.len = 4;
    CHECK_INT(apply(&fsm, 3, 100, c)->code, JINN_OK);
    CHECK_INT(jobs(&fsm)->delayed.count, 1);
    CHECK_INT(jinn_queues_next_due(&fsm.queues), 400);
    CHECK_INT(apply(&fsm, 4, 399, fetch("w", 1, 1000))->value, 0); /* not before the delay */
    CHECK_INT(apply(&fsm, 5, 400, fetch("w", 1, 1000))->value, 1); /* alone: may retry */
    c = qcmd(JINN_CMD_Q_PROGRESS, "w", 1);
    c.q.ms = 5000;
    CHECK_INT(apply(&fsm, 6, 900, c)->code, JINN_OK);
    apply(&fsm, 7, 1500, noop); /* the original deadline (1400) passed: still leased */
    CHECK_INT(jobs(&fsm)->leased.count, 1);
    c = qcmd(JINN_CMD_Q_TERM, "w", 1);
    c.q.delivery = 1; /* an older delivery's handle is stale */
    CHECK_INT(apply(&fsm, 8, 1500, c)->code, JINN_ECONFLICT);
    c.q.delivery = 2;
    CHECK_INT(apply(&fsm, 9, 1500, c)->code, JINN_OK);
    CHECK_INT(jobs(&fsm)->dead.count, 1);
    CHECK_STR(jinn_queue_msg(jobs(&fsm), 1)->reason, "terminated");
    jinn_fsm_close(&fsm);
}

TEST(queue_snapshot_round_trip_and_corruption)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w1, w2;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    apply(&a, 1, 0, pub("one", "k1"));
    apply(&a, 2, 0, pub("two", ""));
    apply(&a, 3, 0, pub("three", "k3"));
    apply(&a, 4, 10, fetch("w", 1, 1000));
    apply(&a, 5, 10, qcmd(JINN_CMD_Q_TERM, "w", 1));
    apply(&a, 6, 10, fetch("w", 1, 1000));
    jinn_wbuf_init(&w1);
    CHECK_INT(jinn_fsm_encode(&a, &w1), 0);
    CHECK_INT(jinn_fsm_decode(&b, w1.data, w1.len), 0);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    CHECK_INT(jobs(&b)->dead.count, 1);
    CHECK_INT(jobs(&b)->leased.count, 1);
    CHECK_INT(jobs(&b)->idem.count, 2);
    /* The restored replica decides the same: the same lease expires. */
    CHECK_INT(jinn_queues_next_due(&b.queues), jinn_queues_next_due(&a.queues));
    for (size_t n = 0; n < w1.len; n += 3) {
        CHECK(jinn_fsm_decode(&b, w1.data, n) != 0);
    }
    jinn_wbuf_free(&w1);
    jinn_wbuf_free(&w2);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(queue_commands_reject_bad_fields)
{
    char big[JINN_QUEUE_IDEM_MAX + 2];
    struct jinn_cmd c = pub("x", ""), d;
    struct jinn_wbuf w;
    memset(big, 'k', sizeof big);
    c.q.idem.p = (const uint8_t *)big;
    c.q.idem.len = sizeof big;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = pub("x", "");
    c.q.queue.len = 0;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = fetch("w", 3, 100);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.q.count, 3);
    CHECK_INT(d.q.ms, 100);
    for (size_t n = 0; n < w.len; n++) {
        CHECK(jinn_cmd_decode(w.data, n, &d) != 0);
    }
    jinn_wbuf_free(&w);
}

/* Queue names and workers are kept as C strings: "jobs\0x" would alias
 * "jobs". Such a command is refused by the encoder and, if one came from
 * elsewhere, decoded as malformed (a no-op on every replica). */
TEST(queue_names_and_workers_with_nul_are_refused)
{
    struct jinn_cmd c = pub("x", ""), d;
    struct jinn_wbuf w;
    size_t at;
    c.q.queue.p = (const uint8_t *)"jobs\0x";
    c.q.queue.len = 6;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = fetch("w\0x", 1, 100);
    c.q.worker.len = 3;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    /* The same bytes forged past the encoder: "jobX" -> "job\0". */
    c = fetch("w", 1, 100);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    at = (size_t)(d.q.queue.p - w.data) + 3;
    w.data[at] = '\0';
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    /* A format-1 entry (written before the check) keeps format 1's
     * meaning, so an old log replays as it applied. */
    w.data[1] = 1;
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.version, 1);
    jinn_wbuf_free(&w);
}

static uint64_t len_cost(const uint8_t *p, size_t len)
{
    (void)p;
    return 10 + len;
}

/* A fetch reply's byte cap (api/queue.c JINN_QUEUE_FETCH_REPLY_MAX): the
 * leader proposes only as many messages as fit, counted in lease order with
 * the worker preference applied, the first always; a FETCH of that count
 * leases exactly those. */
TEST(queue_fetch_fit_counts_messages_within_the_reply_limit)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c;
    char big[301];
    memset(big, 'x', 300);
    big[300] = '\0';
    jinn_fsm_init(&fsm);
    c = pub("a", "");
    c.q.count = 100;
    c.q.bytes = 100000;
    for (uint64_t i = 1; i <= 4; i++) {
        c.q.payload.p = (const uint8_t *)(i == 3 ? big : "0123456789");
        c.q.payload.len = i == 3 ? 300 : 10;
        CHECK_INT(apply(&fsm, i, 1, c)->code, JINN_OK);
    }
    /* costs 20, 20, 310, 20 */
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 1000, len_cost), 4);
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 3, 1000, len_cost), 3);
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 350, len_cost), 3);
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 349, len_cost), 2);
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 40, len_cost), 2);
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 39, len_cost), 1);
    /* Stops at the first that does not fit: no smaller one after it. */
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 300, len_cost), 2);
    /* At least one, however large. */
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w1", 1, 1000, 256, 0, len_cost), 1);
    CHECK_INT(apply(&fsm, 5, 1, fetch("w1", 2, 1000))->value, 2);
    /* Now the big one leads: alone it is over the limit, and still goes. */
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w2", 1, 1000, 256, 100, len_cost), 1);
    CHECK_INT(apply(&fsm, 6, 1, fetch("w2", 1, 1000))->value, 1);
    CHECK_INT(fsm.queues.fetched[0], 3);
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w2", 1, 1000, 256, 100, len_cost), 1);
    CHECK_INT(apply(&fsm, 7, 1, fetch("w2", 1, 1000))->value, 1);
    /* Nothing ready: 0 (the API then parks the fetch). */
    CHECK_INT(jinn_queue_fetch_fit(jobs(&fsm), "w2", 1, 1000, 256, 100, len_cost), 0);
    jinn_fsm_close(&fsm);
}
