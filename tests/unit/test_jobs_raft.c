/* test_jobs_raft.c - a cron tick fires once across a leader change, on
 * three replicas in libraft's fixture: the old leader's JOB_CRON and the new
 * leader's for the same tick (it proposes from the same pending tick) give
 * one message in WORKERS_<fn>, on every replica, whichever commits. */
#include <raft.h>
#include <raft/fixture.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "unit.h"

#define N 3

static const uint8_t hello[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x03,
    0x7f, 0x7f, 0x7f, 0x00, 0x60, 0x00, 0x00, 0x02, 0x13, 0x01, 0x06, 0x67, 0x6f,
    0x6a, 0x69, 0x6e, 0x6e, 0x08, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6c, 0x6f, 0x67,
    0x00, 0x00, 0x03, 0x02, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13,
    0x02, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73,
    0x74, 0x61, 0x72, 0x74, 0x00, 0x01, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

static void applied(struct raft_apply *req, int status, void *result)
{
    (void)status;
    (void)result;
    free(req);
}

static void propose(struct raft_fixture *f, unsigned leader, struct jinn_cmd *c)
{
    struct jinn_wbuf w;
    struct raft_buffer buf;
    struct raft_apply *req = calloc(1, sizeof *req);
    jinn_wbuf_init(&w);
    if (req == NULL || jinn_cmd_encode(c, &w) != 0) {
        free(req);
        jinn_wbuf_free(&w);
        return;
    }
    buf.base = w.data;
    buf.len = w.len;
    if (raft_apply(raft_fixture_get(f, leader), req, &buf, 1, applied) != 0) {
        jinn_wbuf_free(&w);
        free(req);
    }
}

static struct jinn_cmd tick_cmd(uint64_t now, uint64_t tick)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_JOB_CRON;
    c.time_ms = now;
    c.cron.name.p = (const uint8_t *)"tick";
    c.cron.name.len = 4;
    c.cron.tick_ms = tick;
    c.cron.max_length = 100;
    c.cron.max_bytes = 1 << 20;
    c.cron.max_deliver = 3;
    return c;
}

static bool all_applied(struct raft_fixture *f)
{
    raft_index target = 0;
    for (unsigned i = 0; i < N; i++) {
        raft_index last = raft_last_index(raft_fixture_get(f, i));
        target = last > target ? last : target;
    }
    return raft_fixture_step_until_applied(f, N, target, 20000);
}

TEST(jobs_cron_tick_once_across_a_leader_change)
{
    static const char settings[] =
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\","
        "\"cron\":\"@every 10s\"}";
    struct raft_fixture f;
    struct raft_configuration conf;
    struct jinn_fsm fsms[N];
    struct jinn_cmd c;
    unsigned old, now;
    char name[65];

    memset(&f, 0, sizeof f);
    CHECK_INT(raft_fixture_initialize(&f), 0);
    for (unsigned i = 0; i < N; i++) {
        jinn_fsm_init(&fsms[i]);
        CHECK_INT(raft_fixture_grow(&f, &fsms[i].iface), 0);
        fsms[i].raft = raft_fixture_get(&f, i);
    }
    raft_fixture_configuration(&f, N, &conf);
    raft_fixture_bootstrap(&f, &conf);
    raft_fixture_start(&f);
    raft_configuration_close(&conf);
    CHECK(raft_fixture_step_until_has_leader(&f, 10000));
    old = raft_fixture_leader_index(&f);

    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_DEPLOY2;
    c.time_ms = 95000;
    c.fn.name.p = (const uint8_t *)"tick";
    c.fn.name.len = 4;
    c.fn.settings.p = (const uint8_t *)settings;
    c.fn.settings.len = sizeof settings - 1;
    c.fn.module.p = hello;
    c.fn.module.len = sizeof hello;
    propose(&f, old, &c);
    CHECK(all_applied(&f));
    CHECK(jinn_jobs_cron_next(&fsms[old].jobs, name) == 100000);

    /* The leader proposes the due tick and is cut off before it commits:
     * the entry sits in its log only. */
    for (unsigned k = 0; k < N; k++) {
        if (k != old) {
            raft_fixture_disconnect(&f, old, k);
            raft_fixture_disconnect(&f, k, old);
        }
    }
    c = tick_cmd(100100, 100000);
    propose(&f, old, &c);
    raft_fixture_step_until_elapsed(&f, 50);
    /* Another leader, same pending tick, proposes it too. */
    now = N;
    for (int t = 0; t < 200 && now == N; t++) {
        raft_fixture_step_until_elapsed(&f, 100);
        for (unsigned k = 0; k < N; k++) {
            if (k != old && raft_state(raft_fixture_get(&f, k)) == RAFT_LEADER) {
                now = k;
            }
        }
    }
    CHECK(now != N);
    if (now == N) {
        goto out;
    }
    c = tick_cmd(100300, jinn_jobs_cron_next(&fsms[now].jobs, name));
    CHECK(c.cron.tick_ms == 100000);
    propose(&f, now, &c);
    /* ...and proposes it again (a retry after a timeout). */
    c.time_ms = 100400;
    propose(&f, now, &c);
    for (unsigned k = 0; k < N; k++) {
        if (k != old) {
            raft_fixture_reconnect(&f, old, k);
            raft_fixture_reconnect(&f, k, old);
        }
    }
    raft_fixture_step_until_elapsed(&f, 2000);
    CHECK(raft_fixture_step_until_has_leader(&f, 20000));
    CHECK(all_applied(&f));
    for (unsigned i = 0; i < N; i++) {
        const struct jinn_queue *q = jinn_queues_get(&fsms[i].queues, "WORKERS_tick", 12);
        CHECK(q != NULL && q->all.count == 1 && q->published == 1);
        CHECK(jinn_jobs_cron_of(&fsms[i].jobs, "tick") == 110000);
    }
    {
        struct jinn_wbuf a, b;
        jinn_wbuf_init(&a);
        CHECK_INT(jinn_fsm_encode(&fsms[0], &a), 0);
        for (unsigned i = 1; i < N; i++) {
            jinn_wbuf_init(&b);
            CHECK_INT(jinn_fsm_encode(&fsms[i], &b), 0);
            CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
            jinn_wbuf_free(&b);
        }
        jinn_wbuf_free(&a);
    }
out:
    raft_fixture_close(&f);
    for (unsigned i = 0; i < N; i++) {
        jinn_fsm_close(&fsms[i]);
    }
}

/* jinn_node_propose_many (batch job submission) relies on libraft 0.15
 * taking n buffers in one raft_apply as n consecutive entries, each
 * applied on its own, with the request answered at the first: every job of
 * a batch is a plain Q_PUBLISH whose id is its own index, the same on every
 * replica. */
static uint64_t many_first, many_value;
static int many_calls;

static void many_applied(struct raft_apply *req, int status, void *result)
{
    const struct jinn_result *res = result;
    many_calls++;
    many_first = status == 0 ? req->index : 0;
    many_value = status == 0 && res != NULL ? res->value : 0;
    free(req);
}

TEST(jobs_batch_entries_in_one_raft_apply)
{
    struct raft_fixture f;
    struct raft_configuration conf;
    struct jinn_fsm fsms[N];
    struct raft_buffer bufs[3];
    struct raft_apply *req;
    unsigned leader;
    static const char *payloads[3] = {"\"a\"", "{\"b\":1}", "3"};

    memset(&f, 0, sizeof f);
    CHECK_INT(raft_fixture_initialize(&f), 0);
    for (unsigned i = 0; i < N; i++) {
        jinn_fsm_init(&fsms[i]);
        CHECK_INT(raft_fixture_grow(&f, &fsms[i].iface), 0);
        fsms[i].raft = raft_fixture_get(&f, i);
    }
    raft_fixture_configuration(&f, N, &conf);
    raft_fixture_bootstrap(&f, &conf);
    raft_fixture_start(&f);
    raft_configuration_close(&conf);
    CHECK(raft_fixture_step_until_has_leader(&f, 10000));
    leader = raft_fixture_leader_index(&f);

    for (unsigned k = 0; k < 3; k++) {
        struct jinn_cmd c;
        struct jinn_wbuf w;
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_Q_PUBLISH;
        c.time_ms = 1000;
        c.q.queue.p = (const uint8_t *)"WORKERS_b";
        c.q.queue.len = 9;
        c.q.payload.p = (const uint8_t *)payloads[k];
        c.q.payload.len = strlen(payloads[k]);
        c.q.max_deliver = 3;
        jinn_wbuf_init(&w);
        CHECK_INT(jinn_cmd_encode(&c, &w), 0);
        bufs[k].base = w.data;
        bufs[k].len = w.len;
    }
    req = calloc(1, sizeof *req);
    CHECK(req != NULL);
    CHECK_INT(raft_apply(raft_fixture_get(&f, leader), req, bufs, 3, many_applied), 0);
    CHECK(all_applied(&f));
    CHECK_INT(many_calls, 1);
    CHECK(many_first > 0 && many_value == many_first); /* answered at the first entry */
    for (unsigned i = 0; i < N; i++) {
        const struct jinn_queue *q = jinn_queues_get(&fsms[i].queues, "WORKERS_b", 9);
        CHECK(q != NULL);
        if (q == NULL) {
            continue;
        }
        for (unsigned k = 0; k < 3; k++) {
            const struct jinn_qmsg *m = jinn_queue_msg(q, many_first + k);
            CHECK(m != NULL && m->len == strlen(payloads[k]) &&
                  memcmp(m->payload, payloads[k], m->len) == 0);
        }
        CHECK(jinn_queue_msg(q, many_first + 3) == NULL);
    }
    raft_fixture_close(&f);
    for (unsigned i = 0; i < N; i++) {
        jinn_fsm_close(&fsms[i]);
    }
}

/* F1: jinn_node_propose_many when the leader changes in the middle of a
 * batch. node.c (many_collect) takes an index of the batch's range as its
 * entry only while the node is still the leader of the term that appended
 * it, and answers JINN_EUNKNOWN otherwise (and when libraft fails the
 * request). The node itself runs on raft_uv, so this drives libraft's
 * fixture directly: the old leader appends a batch, is cut off, a new
 * leader writes other entries at those indexes, and the old leader, back,
 * applies them. The test watches the old leader's apply with node.c's rule
 * and checks that the rule never claims an entry that is not the batch's. */
static int (*watch_orig)(struct raft_fsm *, const struct raft_buffer *, void **);
static struct raft *watch_raft;
static raft_term watch_term;
static raft_index watch_lo, watch_hi;
static unsigned watch_owned, watch_foreign;
static int batch_calls, batch_status;

static int watch_apply(struct raft_fsm *iface, const struct raft_buffer *buf, void **result)
{
    raft_index index = watch_raft->last_applied + 1; /* as fsm.c: before it advances */
    bool owned =
        raft_state(watch_raft) == RAFT_LEADER && watch_raft->current_term == watch_term;
    int rv = watch_orig(iface, buf, result);
    if (index >= watch_lo && index < watch_hi) {
        if (owned) {
            watch_owned++;
        } else {
            watch_foreign++;
        }
    }
    return rv;
}

static void batch_applied(struct raft_apply *req, int status, void *result)
{
    (void)req;
    (void)result;
    batch_calls++;
    batch_status = status;
}

static struct raft_buffer publish_buf(const char *payload)
{
    struct jinn_wbuf w;
    unit_encode_publish("WORKERS_b", payload, 2000, &w);
    return (struct raft_buffer){w.data, w.data != NULL ? w.len : 0};
}

TEST(jobs_batch_leader_change_mid_batch_is_unknown)
{
    static const char *mine[3] = {"\"batch-a\"", "\"batch-b\"", "\"batch-c\""};
    static const char *theirs[3] = {"\"new-x\"", "\"new-y\"", "\"new-z\""};
    struct raft_fixture f;
    struct raft_configuration conf;
    struct jinn_fsm fsms[N];
    struct raft_buffer bufs[3];
    struct raft_apply *req = calloc(1, sizeof *req);
    unsigned old, now;

    CHECK(req != NULL);
    if (req == NULL) {
        return;
    }
    memset(&f, 0, sizeof f);
    CHECK_INT(raft_fixture_initialize(&f), 0);
    for (unsigned i = 0; i < N; i++) {
        jinn_fsm_init(&fsms[i]);
        CHECK_INT(raft_fixture_grow(&f, &fsms[i].iface), 0);
        fsms[i].raft = raft_fixture_get(&f, i);
    }
    raft_fixture_configuration(&f, N, &conf);
    raft_fixture_bootstrap(&f, &conf);
    raft_fixture_start(&f);
    raft_configuration_close(&conf);
    CHECK(raft_fixture_step_until_has_leader(&f, 10000));
    old = raft_fixture_leader_index(&f);
    CHECK(all_applied(&f));

    /* The leader is cut off, then appends the batch (as propose_many:
     * one raft_apply of n buffers, its term noted). */
    for (unsigned k = 0; k < N; k++) {
        if (k != old) {
            raft_fixture_disconnect(&f, old, k);
            raft_fixture_disconnect(&f, k, old);
        }
    }
    for (unsigned k = 0; k < 3; k++) {
        bufs[k] = publish_buf(mine[k]);
        CHECK(bufs[k].base != NULL);
    }
    watch_raft = raft_fixture_get(&f, old);
    watch_term = watch_raft->current_term;
    watch_orig = fsms[old].iface.apply;
    fsms[old].iface.apply = watch_apply;
    CHECK_INT(raft_apply(watch_raft, req, bufs, 3, batch_applied), 0);
    watch_lo = req->index;
    watch_hi = req->index + 3;
    CHECK(watch_lo > 0);

    /* Another leader writes its own entries over the batch's indexes. */
    now = N;
    for (int t = 0; t < 200 && now == N; t++) {
        raft_fixture_step_until_elapsed(&f, 100);
        for (unsigned k = 0; k < N; k++) {
            if (k != old && raft_state(raft_fixture_get(&f, k)) == RAFT_LEADER) {
                now = k;
            }
        }
    }
    CHECK(now != N);
    if (now == N) {
        goto out;
    }
    for (unsigned k = 0; k < 3; k++) {
        struct jinn_cmd c;
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_Q_PUBLISH;
        c.time_ms = 2100;
        c.q.queue.p = (const uint8_t *)"WORKERS_b";
        c.q.queue.len = 9;
        c.q.payload.p = (const uint8_t *)theirs[k];
        c.q.payload.len = strlen(theirs[k]);
        c.q.max_deliver = 3;
        propose(&f, now, &c);
    }
    for (unsigned k = 0; k < N; k++) {
        if (k != old) {
            raft_fixture_reconnect(&f, old, k);
            raft_fixture_reconnect(&f, k, old);
        }
    }
    raft_fixture_step_until_elapsed(&f, 2000);
    CHECK(raft_fixture_step_until_has_leader(&f, 20000));
    CHECK(all_applied(&f));

    /* libraft failed the batch's request (node.c: JINN_EUNKNOWN), and the
     * old leader applied every index of the batch's range as another
     * leader's: node.c's rule claimed none of them. */
    CHECK_INT(batch_calls, 1);
    CHECK_INT(batch_status, RAFT_LEADERSHIPLOST);
    CHECK_INT(watch_owned, 0);
    CHECK_INT(watch_foreign, 3);
    /* Right so: on every replica those indexes hold the new leader's
     * entries, and no entry of the batch exists anywhere. */
    for (unsigned i = 0; i < N; i++) {
        const struct jinn_queue *q = jinn_queues_get(&fsms[i].queues, "WORKERS_b", 9);
        unsigned theirs_seen = 0;
        CHECK(q != NULL);
        if (q == NULL) {
            continue;
        }
        for (raft_index s = watch_lo; s < watch_hi + 3; s++) {
            const struct jinn_qmsg *m = jinn_queue_msg(q, s);
            for (unsigned k = 0; m != NULL && k < 3; k++) {
                CHECK(!(m->len == strlen(mine[k]) && memcmp(m->payload, mine[k], m->len) == 0));
                theirs_seen +=
                    m->len == strlen(theirs[k]) && memcmp(m->payload, theirs[k], m->len) == 0;
            }
        }
        CHECK_INT(theirs_seen, 3);
        CHECK_INT(q->all.count, 3);
    }
out:
    fsms[old].iface.apply = watch_orig;
    raft_fixture_close(&f);
    for (unsigned i = 0; i < N; i++) {
        jinn_fsm_close(&fsms[i]);
    }
    free(req);
}
