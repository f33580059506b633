/* test_replica.c - the edge replica node mode (node.h, issue 17): records
 * applied through the voters' FSM path give byte-identical state, restores
 * are all or nothing, primary heartbeats drive the read-only switch and
 * freshness, and the replica config keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <uv.h>

#include "alloc.h"
#include "codec.h"
#include "config.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "node.h"
#include "unit.h"

/* ---- helpers ----------------------------------------------------------- */

struct rig {
    uv_loop_t loop;
    struct jinn_config cfg;
    struct jinn_node *node;
    char dir[64];
    uint64_t hook_index; /* last index the apply hook saw */
    unsigned hook_calls;
};

static void hook(void *data, uint64_t index)
{
    struct rig *r = data;
    r->hook_index = index;
    r->hook_calls++;
}

/* listen ("HOST:PORT") becomes a replica_of URL: writes may be relayed there. */
static void allow_source(struct jinn_config *cfg, const char *listen)
{
    char u[64];
    snprintf(u, sizeof u, "ws://%s", listen);
    cfg->replica_of[cfg->n_replica_of++] = jinn_strdup(u);
}

static int rig_start(struct rig *r, uint64_t stale_after_ms)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/jinn-replica-XXXXXX");
    if (mkdtemp(r->dir) == NULL || uv_loop_init(&r->loop) != 0 ||
        jinn_config_replica_defaults(&r->cfg) != 0) {
        return -1;
    }
    jinn_free(r->cfg.data_dir);
    r->cfg.data_dir = jinn_strdup(r->dir);
    r->cfg.replica_stale_after_ms = stale_after_ms;
    /* the cluster the heartbeats below name as leaders (relay allow-list) */
    for (int i = 1; i <= 3; i++) {
        char u[32];
        snprintf(u, sizeof u, "ws://127.0.0.1:800%d", i);
        r->cfg.replica_of[r->cfg.n_replica_of++] = jinn_strdup(u);
    }
    if (jinn_node_create_replica(&r->loop, &r->cfg, &r->node) != 0) {
        return -1;
    }
    jinn_node_set_apply_hook(r->node, hook, r);
    return jinn_node_start(r->node);
}

static void stopped(void *data) { *(bool *)data = true; }

static void rig_done(struct rig *r)
{
    bool done = false;
    char cmd[128];
    if (r->node != NULL) {
        jinn_node_stop(r->node, stopped, &done);
        while (!done && uv_run(&r->loop, UV_RUN_ONCE) != 0) {
        }
        jinn_node_destroy(r->node);
    }
    uv_loop_close(&r->loop);
    jinn_config_free(&r->cfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "  could not remove %s\n", r->dir);
    }
}

/* Runs the loop until cond holds or deadline_ms passes (no sleeps). */
#define RUN_UNTIL(r, cond, deadline_ms)                                                    \
    do {                                                                                    \
        uint64_t until_ = uv_now(&(r)->loop) + (deadline_ms);                               \
        while (!(cond) && uv_now(&(r)->loop) < until_) {                                    \
            uv_run(&(r)->loop, UV_RUN_ONCE);                                                \
        }                                                                                   \
    } while (0)

static int encode(struct jinn_cmd *c, uint64_t time, struct jinn_wbuf *w)
{
    c->time_ms = time;
    jinn_wbuf_init(w);
    return jinn_cmd_encode(c, w);
}

static struct jinn_cmd kv_put(const char *key, const char *value)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    c.kv.ns.p = (const uint8_t *)"app";
    c.kv.ns.len = 3;
    c.kv.key.p = (const uint8_t *)key;
    c.kv.key.len = strlen(key);
    c.kv.value.p = (const uint8_t *)value;
    c.kv.value.len = strlen(value);
    return c;
}

static struct jinn_cmd sql_exec(const char *json)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"app";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)json;
    c.sql.statements.len = strlen(json);
    c.sql.step_budget = 1000000;
    return c;
}

/* The commands both sides apply: KV, and SQL whose random() and time come
 * from the entry (deterministic). */
static const char *const workload_sql[] = {
    "{\"statements\":[{\"sql\":\"CREATE TABLE t(a, r, ts)\"}]}",
    "{\"statements\":[{\"sql\":\"INSERT INTO t VALUES (1, random(), datetime('now'))\"}]}",
    "{\"statements\":[{\"sql\":\"INSERT INTO t VALUES (2, randomblob(8), 0)\"}]}",
};

/* Applies the workload to a voter's FSM and to the replica as records:
 * index i, prev i-1. */
static int apply_both(struct jinn_fsm *voter, struct rig *r, uint64_t first)
{
    uint64_t index = first;
    for (size_t i = 0; i < 6; i++, index++) {
        struct jinn_cmd c;
        struct jinn_wbuf w;
        char key[16];
        int rv;
        snprintf(key, sizeof key, "k%zu", i);
        c = i % 2 == 0 ? kv_put(key, "v") : sql_exec(workload_sql[i / 2]);
        if (encode(&c, 1000 + index, &w) != 0) {
            jinn_wbuf_free(&w);
            return -1;
        }
        (void)jinn_fsm_apply_buf(voter, index, w.data, w.len);
        rv = jinn_node_replica_apply(r->node, index, index - 1, w.data, w.len);
        jinn_wbuf_free(&w);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static bool same_state(const struct jinn_fsm *a, const struct jinn_fsm *b)
{
    struct jinn_wbuf wa, wb;
    bool same;
    jinn_wbuf_init(&wa);
    jinn_wbuf_init(&wb);
    same = jinn_fsm_encode(a, &wa) == 0 && jinn_fsm_encode(b, &wb) == 0 && wa.len == wb.len &&
           memcmp(wa.data, wb.data, wa.len) == 0;
    jinn_wbuf_free(&wa);
    jinn_wbuf_free(&wb);
    return same;
}

static int64_t rows(const struct jinn_fsm *fsm)
{
    sqlite3 *conn = jinn_sql_open_reader(&fsm->sql, "app");
    sqlite3_stmt *stmt = NULL;
    int64_t v = -1;
    if (conn && sqlite3_prepare_v2(conn, "SELECT count(*) FROM t", -1, &stmt, NULL) == 0 &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        v = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    sqlite3_close_v2(conn);
    return v;
}

/* ---- apply ------------------------------------------------------------- */

TEST(replica_apply_is_byte_identical_and_fires_hooks)
{
    char d[] = "/tmp/jinn-voter-XXXXXX";
    struct jinn_fsm voter;
    struct rig r;
    struct jinn_node_status st;
    CHECK_INT(unit_sql_fsm(&voter, d), 0);
    CHECK_INT(rig_start(&r, 2000), 0);
    CHECK(jinn_node_is_replica(r.node));
    CHECK_INT(jinn_node_replica_position(r.node), 0);

    CHECK_INT(apply_both(&voter, &r, 1), 0);
    CHECK_INT(jinn_node_replica_position(r.node), 6);
    CHECK_INT(r.hook_calls, 6); /* watches, min_index waits, checks */
    CHECK_INT(r.hook_index, 6);
    CHECK(same_state(&voter, jinn_node_fsm(r.node)));
    CHECK_INT(rows(jinn_node_fsm(r.node)), 2);

    jinn_node_status(r.node, &st);
    CHECK_INT(st.role, JINN_ROLE_REPLICA);
    CHECK_STR(jinn_role_name(st.role), "replica");
    CHECK_INT(st.applied_index, 6);
    CHECK(!jinn_node_is_leader(r.node));

    unit_sql_fsm_done(&voter, d);
    rig_done(&r);
}

static void never_called(void *data, int code, const struct jinn_result *res)
{
    (void)code;
    (void)res;
    *(bool *)data = true;
}

static void never_read(void *data, int code)
{
    (void)code;
    *(bool *)data = true;
}

TEST(replica_apply_refuses_gaps_and_repeats_and_never_proposes)
{
    struct rig r;
    struct jinn_cmd c = kv_put("k", "v");
    struct jinn_wbuf w;
    bool called = false;
    CHECK_INT(rig_start(&r, 2000), 0);
    CHECK_INT(encode(&c, 10, &w), 0);
    /* prev must be the position; the index must move forward */
    CHECK_INT(jinn_node_replica_apply(r.node, 5, 4, w.data, w.len), JINN_ECONFLICT);
    CHECK_INT(jinn_node_replica_apply(r.node, 0, 0, w.data, w.len), JINN_ECONFLICT);
    CHECK_INT(jinn_node_replica_position(r.node), 0);
    CHECK_INT(r.hook_calls, 0);
    CHECK(jinn_kv_get(&jinn_node_fsm(r.node)->kv, "app", (const uint8_t *)"k", 1) == NULL);
    /* gaps in raft indexes (barriers, configurations) are normal */
    CHECK_INT(jinn_node_replica_apply(r.node, 3, 0, w.data, w.len), 0);
    CHECK_INT(jinn_node_replica_position(r.node), 3);
    /* the same record again: refused, applied once */
    CHECK_INT(jinn_node_replica_apply(r.node, 3, 0, w.data, w.len), JINN_ECONFLICT);
    CHECK_INT(r.hook_calls, 1);
    CHECK(jinn_kv_get(&jinn_node_fsm(r.node)->kv, "app", (const uint8_t *)"k", 1) != NULL);
    /* a replica never proposes nor linearizes: api.c relays instead */
    CHECK_INT(jinn_node_propose(r.node, &c, 1000, never_called, &called), JINN_ENOTLEADER);
    CHECK_INT(jinn_node_linearize(r.node, never_read, &called), JINN_ENOTLEADER);
    CHECK(!called);
    jinn_wbuf_free(&w);
    rig_done(&r);
}

/* ---- restore ----------------------------------------------------------- */

TEST(replica_restore_replaces_state_or_changes_nothing)
{
    char d[] = "/tmp/jinn-voter-XXXXXX";
    struct jinn_fsm voter;
    struct jinn_wbuf snap, before;
    struct rig r, fresh;
    CHECK_INT(unit_sql_fsm(&voter, d), 0);
    CHECK_INT(rig_start(&r, 2000), 0);
    CHECK_INT(rig_start(&fresh, 2000), 0);
    CHECK_INT(apply_both(&voter, &r, 1), 0);

    /* A new replica restores the voter's snapshot: identical state, SQL
     * files written, position = the snapshot's index, hooks told. */
    jinn_wbuf_init(&snap);
    CHECK_INT(jinn_fsm_encode(&voter, &snap), 0);
    CHECK_INT(jinn_node_replica_restore(fresh.node, 6, snap.data, snap.len), 0);
    CHECK_INT(jinn_node_replica_position(fresh.node), 6);
    CHECK_INT(fresh.hook_index, 6);
    CHECK(same_state(&voter, jinn_node_fsm(fresh.node)));
    CHECK_INT(rows(jinn_node_fsm(fresh.node)), 2);

    /* A damaged snapshot: refused, nothing changed. */
    jinn_wbuf_init(&before);
    CHECK_INT(jinn_fsm_encode(jinn_node_fsm(fresh.node), &before), 0);
    snap.data[snap.len / 2] ^= 0x40;
    CHECK_INT(jinn_node_replica_restore(fresh.node, 9, snap.data, snap.len), JINN_ECORRUPT);
    snap.data[snap.len / 2] ^= 0x40;
    CHECK_INT(jinn_node_replica_position(fresh.node), 6);
    CHECK(same_state(&voter, jinn_node_fsm(fresh.node)));

    /* Then the stream goes on from the restored position. */
    {
        struct jinn_cmd c = kv_put("after", "restore");
        struct jinn_wbuf w;
        CHECK_INT(encode(&c, 5000, &w), 0);
        CHECK_INT(jinn_node_replica_apply(fresh.node, 8, 6, w.data, w.len), 0);
        (void)jinn_fsm_apply_buf(&voter, 8, w.data, w.len);
        jinn_wbuf_free(&w);
        CHECK(same_state(&voter, jinn_node_fsm(fresh.node)));
    }

    /* R3 m2: a snapshot older than the position is refused: the replica
     * never goes back. Only the accepted restore bumped the SQL
     * generation readers watch (R3 M4), in status and in the file. */
    CHECK_INT(jinn_node_replica_restore(fresh.node, 7, snap.data, snap.len), JINN_ECONFLICT);
    CHECK_INT(jinn_node_replica_position(fresh.node), 8);
    CHECK(same_state(&voter, jinn_node_fsm(fresh.node)));
    {
        struct jinn_replica_status rs;
        char path[300], text[32] = {0};
        FILE *f;
        jinn_node_replica_status(fresh.node, &rs);
        CHECK_INT(rs.sql_generation, 1);
        snprintf(path, sizeof path, "%s/sql/GENERATION", fresh.dir);
        f = fopen(path, "r");
        CHECK(f != NULL);
        if (f != NULL) {
            CHECK(fgets(text, sizeof text, f) != NULL);
            fclose(f);
        }
        CHECK_STR(text, "1\n");
        /* a restore at the position itself is not going back */
        CHECK_INT(jinn_node_replica_restore(fresh.node, 8, before.data, before.len), 0);
        jinn_node_replica_status(fresh.node, &rs);
        CHECK_INT(rs.sql_generation, 2);
    }
    jinn_wbuf_free(&before);
    jinn_wbuf_free(&snap);
    unit_sql_fsm_done(&voter, d);
    rig_done(&r);
    rig_done(&fresh);
}

/* A snapshot whose checksum is right but whose SQL section is followed by
 * more bytes used to be refused only after its SQL images had replaced the
 * live databases: new SQL files under the old in-memory state. */
TEST(fsm_decode_trailing_bytes_leave_sql_unchanged)
{
    char d[] = "/tmp/jinn-voter-XXXXXX", e[] = "/tmp/jinn-other-XXXXXX";
    struct jinn_fsm voter, other;
    struct jinn_wbuf snap, before, after;
    struct jinn_cmd c;
    CHECK_INT(unit_sql_fsm(&voter, d), 0);
    CHECK_INT(unit_sql_fsm(&other, e), 0);
    c = sql_exec(workload_sql[0]);
    CHECK_INT(unit_apply(&voter, 1, 10, c)->code, JINN_OK);
    CHECK_INT(unit_apply(&other, 1, 10, c)->code, JINN_OK);
    c = sql_exec(workload_sql[1]);
    CHECK_INT(unit_apply(&voter, 2, 20, c)->code, JINN_OK);
    CHECK_INT(rows(&voter), 1);
    CHECK_INT(rows(&other), 0);

    jinn_wbuf_init(&snap);
    CHECK_INT(jinn_fsm_encode(&voter, &snap), 0);
    snap.len -= 4; /* drop the CRC, add two bytes, checksum again */
    jinn_wbuf_put_u8(&snap, 'x');
    jinn_wbuf_put_u8(&snap, 'y');
    jinn_wbuf_put_u32(&snap, jinn_crc32(0, snap.data, snap.len));

    jinn_wbuf_init(&before);
    jinn_wbuf_init(&after);
    CHECK_INT(jinn_fsm_encode(&other, &before), 0);
    CHECK_INT(jinn_fsm_decode(&other, snap.data, snap.len), JINN_ECORRUPT);
    CHECK_INT(rows(&other), 0); /* the old database, not the snapshot's */
    CHECK_INT(jinn_fsm_encode(&other, &after), 0);
    CHECK_INT(after.len, before.len);
    CHECK(memcmp(after.data, before.data, after.len) == 0);
    jinn_wbuf_free(&snap);
    jinn_wbuf_free(&before);
    jinn_wbuf_free(&after);
    unit_sql_fsm_done(&voter, d);
    unit_sql_fsm_done(&other, e);
}

/* ---- heartbeats and the read-only switch -------------------------------- */

static struct jinn_replica_heartbeat primary(uint64_t term, uint64_t commit, uint64_t position)
{
    struct jinn_replica_heartbeat hb;
    memset(&hb, 0, sizeof hb);
    hb.cluster_id = 0xabcdef0123456789u;
    hb.leader_id = 7;
    hb.term = term;
    hb.commit = commit;
    hb.position = position;
    hb.time_ms = 1000;
    hb.leader_name = "n1";
    hb.leader_api = "http://127.0.0.1:8001";
    hb.node = "n2";
    hb.quorum = true;
    hb.leader_contact_ms = 20;
    return hb;
}

TEST(replica_read_only_until_a_primary_heartbeat_and_after_it_stops)
{
    struct rig r;
    struct jinn_replica_status rs;
    struct jinn_replica_heartbeat hb;
    struct jinn_node_status st;
    CHECK_INT(rig_start(&r, 150), 0);

    /* New: nothing to relay to, not ready. */
    jinn_node_replica_set_state(r.node, JINN_REPLICA_STREAMING, "ws://127.0.0.1:8002");
    jinn_node_replica_status(r.node, &rs);
    CHECK(rs.read_only);
    CHECK_INT(rs.state, JINN_REPLICA_READ_ONLY);
    CHECK(jinn_node_replica_leader_api(r.node) == NULL);
    CHECK(!jinn_node_replica_ready(r.node));

    /* Heartbeats that are not primary change nothing. */
    hb = primary(3, 0, 0);
    hb.quorum = false;
    jinn_node_replica_heartbeat(r.node, &hb);
    hb = primary(3, 0, 0);
    hb.leader_id = 0;
    jinn_node_replica_heartbeat(r.node, &hb);
    hb = primary(3, 0, 0);
    hb.leader_contact_ms = 151; /* beyond replica_stale_after */
    jinn_node_replica_heartbeat(r.node, &hb);
    hb = primary(3, 0, 0);
    hb.leader_contact_ms = -1;
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_replica_status(r.node, &rs);
    CHECK(rs.read_only);
    CHECK_INT(rs.last_heartbeat_ms, -1);

    /* A primary heartbeat: writes are relayed to its leader. */
    hb = primary(3, 0, 0);
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_replica_status(r.node, &rs);
    CHECK(!rs.read_only);
    CHECK_INT(rs.state, JINN_REPLICA_STREAMING);
    CHECK_STR(rs.source, "ws://127.0.0.1:8002");
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8001");
    CHECK(jinn_node_replica_ready(r.node));
    CHECK_INT(jinn_node_cluster_id(r.node), 0xabcdef0123456789u);
    jinn_node_status(r.node, &st);
    CHECK(st.quorum);
    CHECK_INT(st.leader_id, 7);
    CHECK_STR(st.leader_name, "n1");
    CHECK_INT(st.term, 3);

    /* Another cluster's heartbeat and an older term's are ignored. */
    hb = primary(4, 0, 0);
    hb.cluster_id = 1;
    hb.leader_api = "http://10.9.9.9:1";
    jinn_node_replica_heartbeat(r.node, &hb);
    hb = primary(2, 0, 0);
    hb.leader_api = "http://10.9.9.9:2";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8001");

    /* The heartbeats stop: read-only after replica_stale_after. */
    RUN_UNTIL(&r, jinn_node_replica_leader_api(r.node) == NULL, 2000);
    jinn_node_replica_status(r.node, &rs);
    CHECK(rs.read_only);
    CHECK_INT(rs.state, JINN_REPLICA_READ_ONLY);
    CHECK(rs.last_heartbeat_ms >= 150);
    CHECK(!jinn_node_replica_ready(r.node));
    jinn_node_status(r.node, &st);
    CHECK(!st.quorum); /* SQL exec answers 503 read_only */

    /* A new leader's heartbeat (through any node) ends it. */
    hb = primary(5, 0, 0);
    hb.leader_id = 8;
    hb.leader_name = "n3";
    hb.leader_api = "http://127.0.0.1:8003";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8003");
    jinn_node_replica_status(r.node, &rs);
    CHECK(!rs.read_only);

    /* The stream client may say READ_ONLY itself (a source without a
     * leader): until the next primary heartbeat. */
    jinn_node_replica_set_state(r.node, JINN_REPLICA_READ_ONLY, NULL);
    CHECK(jinn_node_replica_leader_api(r.node) == NULL);
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK(jinn_node_replica_leader_api(r.node) != NULL);
    rig_done(&r);
}

/* A4 m3: the term heard is kept replica_stale_after + 2 election timeouts
 * (the cluster's, from its heartbeats), not replica_stale_after alone: an
 * old leader cut off from its quorum believes it leads for up to two
 * election timeouts, and its heartbeats (term below the one heard) must not
 * count as primary meanwhile, though the replica is read-only. */
TEST(replica_keeps_the_term_heard_for_two_election_timeouts)
{
    struct rig r;
    struct jinn_replica_heartbeat hb;
    uint64_t t0;
    CHECK_INT(rig_start(&r, 100), 0);
    hb = primary(5, 0, 0); /* the new leader, n1 */
    hb.election_timeout_ms = 300;
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8001");
    t0 = uv_now(&r.loop);

    /* Its heartbeats stop: read-only after replica_stale_after (100 ms). */
    RUN_UNTIL(&r, jinn_node_replica_leader_api(r.node) == NULL, 2000);
    CHECK(jinn_node_replica_leader_api(r.node) == NULL);

    /* The deposed leader n3 (term 4), not stepped down yet: ignored while
     * the term 5 is kept (before: accepted after 100 ms). */
    hb = primary(4, 0, 0);
    hb.leader_id = 9;
    hb.leader_name = "n3";
    hb.leader_api = "http://127.0.0.1:8003";
    hb.election_timeout_ms = 300;
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK(jinn_node_replica_leader_api(r.node) == NULL);
    RUN_UNTIL(&r, uv_now(&r.loop) - t0 >= 350, 2000); /* of 100 + 2 x 300 ms */
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK(jinn_node_replica_leader_api(r.node) == NULL);

    /* Then it expires: a lie (one huge term) does not outlive it. */
    RUN_UNTIL(&r, uv_now(&r.loop) - t0 > 720, 2000);
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8003");
    rig_done(&r);
}

/* m6: a heartbeat names where clients' writes (with their Authorization)
 * are relayed; only a replica_of host is trusted with them, else the node
 * the heartbeat came through. */
TEST(replica_relays_only_to_a_replica_of_host)
{
    struct rig r;
    struct jinn_replica_heartbeat hb;
    CHECK_INT(rig_start(&r, 2000), 0);

    hb = primary(3, 0, 0); /* http://127.0.0.1:8001, a replica_of host */
    hb.source_url = "ws://127.0.0.1:8002";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8001");

    hb = primary(3, 0, 0); /* a host no replica_of names: the source instead */
    hb.leader_api = "http://10.6.6.6:8001";
    hb.source_url = "ws://127.0.0.1:8002/";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8002");

    hb = primary(3, 0, 0); /* a wss:// source: http:// URL, TLS from the config */
    hb.leader_api = "http://10.6.6.6:8001";
    hb.source_url = "wss://N2.example:8443/edge";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://n2.example:8443");

    hb = primary(3, 0, 0); /* the right host, another port */
    hb.leader_api = "http://127.0.0.1:9001";
    hb.source_url = "ws://127.0.0.1:8003";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8003");

    hb = primary(3, 0, 0); /* no port: 80, which no replica_of names */
    hb.leader_api = "http://127.0.0.1";
    hb.source_url = "ws://127.0.0.1:8002";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8002");

    hb = primary(3, 0, 0); /* user info is no host of ours */
    hb.leader_api = "http://127.0.0.1:8001@10.6.6.6:80";
    hb.source_url = "ws://127.0.0.1:8003";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8003");

    hb = primary(3, 0, 0); /* a path after the host:port is kept */
    hb.leader_api = "http://127.0.0.1:8002/base";
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK_STR(jinn_node_replica_leader_api(r.node), "http://127.0.0.1:8002/base");
    rig_done(&r);
}

/* M3: a voter's X-Jinn-Applied-Index may be a barrier's, never a record: a
 * replica at the position its source streamed has all the source had
 * applied, and says so (min_index reads parked for it are served). */
TEST(replica_applied_index_from_the_heartbeat_at_its_position)
{
    struct rig r;
    struct jinn_replica_heartbeat hb;
    struct jinn_node_status st;
    struct jinn_cmd c = kv_put("k", "v");
    struct jinn_wbuf w;
    CHECK_INT(rig_start(&r, 2000), 0);
    CHECK_INT(encode(&c, 10, &w), 0);
    CHECK_INT(jinn_node_replica_apply(r.node, 1, 0, w.data, w.len), 0);
    CHECK_INT(r.hook_index, 1);

    hb = primary(3, 4, 2); /* streamed up to 2, applied 4: we are not at 2 */
    hb.applied = 4;
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_status(r.node, &st);
    CHECK_INT(st.applied_index, 1);
    CHECK_INT(r.hook_index, 1);

    CHECK_INT(jinn_node_replica_apply(r.node, 2, 1, w.data, w.len), 0);
    jinn_node_status(r.node, &st);
    CHECK_INT(st.applied_index, 4); /* 3 and 4: no commands (barriers) */
    hb = primary(3, 5, 2);
    hb.applied = 5;
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_status(r.node, &st);
    CHECK_INT(st.applied_index, 5);
    CHECK_INT(r.hook_index, 5); /* parked min_index reads wake */

    hb = primary(3, 5, 2); /* an older node: no "applied" */
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_status(r.node, &st);
    CHECK_INT(st.applied_index, 2);
    hb = primary(3, 5, 2); /* applied below position: nonsense, ignored */
    hb.applied = 1;
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_status(r.node, &st);
    CHECK_INT(st.applied_index, 2);
    jinn_wbuf_free(&w);
    rig_done(&r);
}

TEST(replica_freshness_from_primary_heartbeats)
{
    struct rig r;
    struct jinn_replica_status rs;
    struct jinn_replica_heartbeat hb;
    struct jinn_node_status st;
    struct jinn_cmd c = kv_put("k", "v");
    struct jinn_wbuf w;
    CHECK_INT(rig_start(&r, 2000), 0);
    CHECK_INT(encode(&c, 10, &w), 0);

    /* Commit 2 at the source, which had streamed up to 1 only (it had not
     * applied 2 yet): fresh once we hold 2, not 1. */
    hb = primary(3, 2, 1);
    jinn_node_replica_heartbeat(r.node, &hb);
    jinn_node_replica_status(r.node, &rs);
    CHECK_INT(rs.lag_ms, -1);
    CHECK_INT(rs.lag_entries, 2);
    CHECK_INT(rs.leader_commit, 2);
    jinn_node_status(r.node, &st);
    CHECK_INT(st.leader_contact_ms, -1); /* X-Jinn-Leader-Contact-Ms, max_staleness */

    CHECK_INT(jinn_node_replica_apply(r.node, 1, 0, w.data, w.len), 0);
    jinn_node_replica_status(r.node, &rs);
    CHECK_INT(rs.lag_ms, -1); /* 1 of 2: still not */
    CHECK_INT(jinn_node_replica_apply(r.node, 2, 1, w.data, w.len), 0);
    jinn_node_replica_status(r.node, &rs);
    /* fresh as of when the source last heard the leader (20 ms before) */
    CHECK(rs.lag_ms >= 20 && rs.lag_ms < 1000);
    CHECK_INT(rs.lag_entries, 0);
    jinn_node_status(r.node, &st);
    CHECK(st.leader_contact_ms >= 20 && st.leader_contact_ms < 1000);
    jinn_wbuf_free(&w);
    rig_done(&r);
}

/* ---- config ------------------------------------------------------------ */

static int parse_replica(const char *text, struct jinn_config *cfg, struct jinn_config_error *err)
{
    if (jinn_config_replica_defaults(cfg) != 0) {
        return JINN_ENOMEM;
    }
    return jinn_config_parse(cfg, "r.conf", text, strlen(text), err);
}

TEST(config_replica_keys)
{
    static const char text[] =
        "{\n"
        "    server_name  edge1\n"
        "    data_dir     ./edge1\n"
        "    http_listen  127.0.0.1:9001\n"
        "    replica_of   ws://127.0.0.1:8001 wss://n2.example.com:8443/ ws://10.0.0.3\n"
        "    replica_token jinn.edge.0123456789abcdef\n"
        "    replica_stale_after 500ms\n"
        "    replica_ca   ca.pem\n"
        "    consensus { app { mode ap  stale_reads true } }\n"
        "}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(parse_replica(text, &cfg, &err), 0);
    CHECK(cfg.replica);
    CHECK_INT(cfg.n_replica_of, 3);
    CHECK_STR(cfg.replica_of[1], "wss://n2.example.com:8443/");
    CHECK_STR(cfg.replica_token, "jinn.edge.0123456789abcdef");
    CHECK_INT(cfg.replica_stale_after_ms, 500);
    CHECK_STR(cfg.replica_ca, "ca.pem");
    CHECK_INT(cfg.n_peers, 0); /* not a member */
    jinn_config_free(&cfg);

    /* the default bound */
    CHECK_INT(parse_replica("{\n replica_of ws://127.0.0.1:8001\n}\n", &cfg, &err), 0);
    CHECK_INT(cfg.replica_stale_after_ms, JINN_DEFAULT_REPLICA_STALE_AFTER_MS);
    CHECK(cfg.replica_max_snapshot == JINN_DEFAULT_REPLICA_MAX_SNAPSHOT);
    jinn_config_free(&cfg);

    /* R3 M3: the snapshot limit is a replica key, 1 MiB .. 4 GiB */
    CHECK_INT(
        parse_replica("{\n replica_of ws://127.0.0.1:8001\n replica_max_snapshot 2MiB\n}\n",
                      &cfg, &err),
        0);
    CHECK(cfg.replica_max_snapshot == 2u << 20);
    jinn_config_free(&cfg);
    CHECK(parse_replica("{\n replica_of ws://127.0.0.1:8001\n replica_max_snapshot 5GiB\n}\n",
                        &cfg, &err) != 0);
    jinn_config_free(&cfg);
}

TEST(config_replica_refuses_member_keys_and_bad_sources)
{
    static const char *const bad[] = {
        "{\n replica_of ws://127.0.0.1:8001\n cluster_peers n1=127.0.0.1:7001\n}\n",
        "{\n replica_of ws://127.0.0.1:8001\n cluster_listen 127.0.0.1:7001\n}\n",
        "{\n replica_of ws://127.0.0.1:8001\n election_timeout 1s\n}\n",
        "{\n replica_of ws://127.0.0.1:8001\n job_workers 2\n}\n",
        "{\n replica_of http://127.0.0.1:8001\n}\n",
        "{\n replica_of ws://\n}\n",
        "{\n replica_of ws://127.0.0.1:0\n}\n",
        "{\n replica_of ws://127.0.0.1:70000\n}\n",
        "{\n replica_of ws://a b\n}\n",
        "{\n replica_of ws://h:1 ws://h:1\n}\n",
        "{\n replica_of\n}\n",
        "{\n server_name e\n}\n", /* no replica_of */
        "{\n replica_of ws://h:1\n replica_token short\n}\n",
        "{\n replica_of ws://h:1\n replica_cert c.pem\n}\n",
        "{\n replica_of ws://h:1\n replica_stale_after 1ms\n}\n",
        "{\n replica_of ws://h:1 ws://h:2 ws://h:3 ws://h:4 ws://h:5 ws://h:6 ws://h:7 "
        "ws://h:8 ws://h:9 ws://h:10 ws://h:11 ws://h:12 ws://h:13 ws://h:14 ws://h:15 "
        "ws://h:16 ws://h:17\n}\n",
    };
    struct jinn_config cfg;
    struct jinn_config_error err;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rv = parse_replica(bad[i], &cfg, &err);
        jinn_config_free(&cfg);
        if (rv != JINN_ECONFIG) {
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        }
        CHECK_INT(rv, JINN_ECONFIG);
        CHECK(err.message[0] != '\0');
    }
    /* 16 sources are fine */
    CHECK_INT(parse_replica("{\n replica_of ws://h:1 ws://h:2 ws://h:3 ws://h:4 ws://h:5 "
                            "ws://h:6 ws://h:7 ws://h:8 ws://h:9 ws://h:10 ws://h:11 ws://h:12 "
                            "ws://h:13 ws://h:14 ws://h:15 ws://h:16\n}\n",
                            &cfg, &err),
              0);
    CHECK_INT(cfg.n_replica_of, 16);
    jinn_config_free(&cfg);
}

TEST(config_member_refuses_replica_keys)
{
    static const char text[] = "{\n    replica_of ws://127.0.0.1:8001\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "m.conf", text, strlen(text), &err), JINN_ECONFIG);
    CHECK_INT(err.line, 2);
    jinn_config_free(&cfg);
}

TEST(config_replica_token_from_environment)
{
    static const char text[] = "{\n replica_of ws://127.0.0.1:8001\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    setenv("JINN_REPLICA_TOKEN", "jinn.edge.from-the-environment", 1);
    CHECK_INT(parse_replica(text, &cfg, &err), 0);
    CHECK_STR(cfg.replica_token, "jinn.edge.from-the-environment");
    jinn_config_free(&cfg);
    /* the file's wins */
    CHECK_INT(parse_replica("{\n replica_of ws://h:1\n replica_token jinn.edge.in-the-file\n}\n",
                            &cfg, &err),
              0);
    CHECK_STR(cfg.replica_token, "jinn.edge.in-the-file");
    jinn_config_free(&cfg);
    setenv("JINN_REPLICA_TOKEN", "bad token", 1);
    CHECK_INT(parse_replica(text, &cfg, &err), JINN_ECONFIG);
    jinn_config_free(&cfg);
    unsetenv("JINN_REPLICA_TOKEN");
}

/* ---- relaying writes (api.c) --------------------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "fetch.h"
#include "http.h"

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

/* What the fake leader saw of the relayed request. */
static struct {
    unsigned requests;
    char method[8], target[128], auth[128], body[64];
    bool peer_headers;
    unsigned check_asks;
    uint64_t check_index;
} leader_saw;

static void fake_leader(void *data, struct jinn_http_request *req)
{
    const struct jinn_http_header *h = jinn_http_header_find(&req->msg, "authorization");
    (void)data;
    if (req->msg.target_len >= 17 && memcmp(req->msg.target, "/v1/cluster/check", 17) == 0) {
        /* The leader's round for the replica's check: a majority digest
         * the replica does not have. */
        leader_saw.check_asks++;
        jinn_http_reply_json(req, 200,
                             json_pack("{s:I, s:s, s:b, s:s, s:[]}", "index",
                                       (json_int_t)leader_saw.check_index, "state", "agreed",
                                       "done", 1, "majority", "00000000000000ff", "nodes"));
        return;
    }
    leader_saw.requests++;
    snprintf(leader_saw.method, sizeof leader_saw.method, "%s", req->msg.method);
    snprintf(leader_saw.target, sizeof leader_saw.target, "%.*s", (int)req->msg.target_len,
             req->msg.target);
    snprintf(leader_saw.auth, sizeof leader_saw.auth, "%.*s", h ? (int)h->value_len : 0,
             h ? h->value : "");
    snprintf(leader_saw.body, sizeof leader_saw.body, "%.*s", (int)req->body_len, req->body);
    leader_saw.peer_headers = jinn_http_header_find(&req->msg, "X-Jinn-Forwarded-By") != NULL ||
                              jinn_http_header_find(&req->msg, "X-Jinn-Cluster") != NULL;
    jinn_http_add_header(req, "X-Jinn-Index", "3");
    jinn_http_reply_json(req, 200, json_pack("{s:I}", "revision", (json_int_t)3));
}

struct answer {
    bool got;
    int code, status;
    char index[32], error[64], body[256];
};

static void answered(void *data, int code, const struct jinn_http_msg *head, const char *body,
                     size_t len)
{
    struct answer *a = data;
    const struct jinn_http_header *h = head ? jinn_http_header_find(head, "X-Jinn-Index") : NULL;
    a->got = true;
    a->code = code;
    a->status = head ? head->status : 0;
    snprintf(a->index, sizeof a->index, "%.*s", h ? (int)h->value_len : 0, h ? h->value : "");
    snprintf(a->body, sizeof a->body, "%.*s", (int)len, body ? body : "");
    {
        json_t *o = json_loadb(body, len, 0, NULL);
        const char *e = json_string_value(json_object_get(o, "error"));
        snprintf(a->error, sizeof a->error, "%s", e ? e : "");
        json_decref(o);
    }
}

static void api_applied(void *data, uint64_t index) { jinn_api_kv_applied(data, index); }

static void http_stopped(void *data) { *(bool *)data = true; }

TEST(replica_relays_writes_without_peer_headers_and_reads_its_own_write)
{
    struct rig r;
    struct jinn_api api;
    struct jinn_http_server *leader = NULL;
    struct jinn_http_config hc;
    struct answer a;
    struct jinn_replica_heartbeat hb;
    char leader_url[64], replica_url[64], listen_l[32], listen_r[32];
    bool l_stopped = false, r_stopped = false;
    static const char auth[] =
        "Authorization: Bearer jinn.edge.0123456789abcdef\r\nContent-Type: text/plain\r\n";

    memset(&leader_saw, 0, sizeof leader_saw);
    CHECK_INT(rig_start(&r, 2000), 0);
    snprintf(listen_l, sizeof listen_l, "127.0.0.1:%d", free_port());
    snprintf(listen_r, sizeof listen_r, "127.0.0.1:%d", free_port());
    snprintf(leader_url, sizeof leader_url, "http://%s", listen_l);
    snprintf(replica_url, sizeof replica_url, "http://%s", listen_r);
    allow_source(&r.cfg, listen_l);
    memset(&hc, 0, sizeof hc);
    hc.max_body = 1 << 20;
    hc.idle_timeout_ms = 10000;
    hc.read_timeout_ms = 10000;
    hc.max_connections = 64;
    hc.listen = listen_l;
    CHECK_INT(jinn_http_start(&r.loop, &hc, fake_leader, NULL, &leader), 0);
    jinn_api_init(&api, &r.loop, &r.cfg, r.node);
    hc.listen = listen_r;
    CHECK_INT(jinn_http_start(&r.loop, &hc, jinn_api_handle, &api, &api.http), 0);
    jinn_node_set_apply_hook(r.node, api_applied, &api);

    /* No primary heartbeat yet: 503 read_only, nothing relayed. */
    memset(&a, 0, sizeof a);
    CHECK_INT(jinn_fetch(&r.loop, replica_url, "PUT", "/v1/kv/app/k", 12, auth, "v1", 2, 5000,
                         answered, &a),
              0);
    RUN_UNTIL(&r, a.got, 5000);
    CHECK_INT(a.status, 503);
    CHECK_STR(a.error, "read_only");
    CHECK_INT(leader_saw.requests, 0);

    /* Streaming and caught up (fresh: the source had streamed up to 1). */
    {
        struct jinn_cmd c = kv_put("other", "x");
        struct jinn_wbuf w;
        CHECK_INT(encode(&c, 10, &w), 0);
        CHECK_INT(jinn_node_replica_apply(r.node, 1, 0, w.data, w.len), 0);
        jinn_wbuf_free(&w);
    }
    /* With a primary heartbeat: relayed as the client sent it, the index
     * header back. */
    hb = primary(3, 1, 1);
    hb.leader_api = leader_url;
    jinn_node_replica_heartbeat(r.node, &hb);
    memset(&a, 0, sizeof a);
    CHECK_INT(jinn_fetch(&r.loop, replica_url, "PUT", "/v1/kv/app/k", 12, auth, "v1", 2, 5000,
                         answered, &a),
              0);
    RUN_UNTIL(&r, a.got, 5000);
    CHECK_INT(a.status, 200);
    CHECK_STR(a.index, "3");
    CHECK_INT(leader_saw.requests, 1);
    CHECK_STR(leader_saw.method, "PUT");
    CHECK_STR(leader_saw.target, "/v1/kv/app/k");
    CHECK_STR(leader_saw.auth, "Bearer jinn.edge.0123456789abcdef");
    CHECK_STR(leader_saw.body, "v1");
    CHECK(!leader_saw.peer_headers); /* a replica is not a peer */

    /* Read-your-write: min_index=3 waits until the replica applied 3. */
    memset(&a, 0, sizeof a);
    CHECK_INT(jinn_fetch(&r.loop, replica_url, "GET", "/v1/kv/app/k?min_index=3", 24, NULL,
                         NULL, 0, 5000, answered, &a),
              0);
    RUN_UNTIL(&r, a.got, 200); /* parked: nothing applied yet */
    if (a.got) {
        fprintf(stderr, "  early: %d %s\n", a.status, a.body);
    }
    CHECK(!a.got);
    {
        struct jinn_cmd c = kv_put("k", "v1");
        struct jinn_wbuf w;
        CHECK_INT(encode(&c, 11, &w), 0);
        CHECK_INT(jinn_node_replica_apply(r.node, 3, 1, w.data, w.len), 0);
        jinn_wbuf_free(&w);
    }
    RUN_UNTIL(&r, a.got, 5000);
    CHECK_INT(a.status, 200);
    CHECK(strstr(a.body, "v1") != NULL);
    CHECK_INT(leader_saw.requests, 1); /* served locally */

    jinn_node_set_apply_hook(r.node, hook, &r);
    /* jinn_api_stop without jinn_fetch_stop_all, which is for good (the
     * process's other tests still fetch). */
    api.stopping = true;
    jinn_fetch_close_idle();
    jinn_api_queue_stop(&api);
    jinn_api_lock_stop(&api);
    jinn_api_index_stop(&api);
    jinn_api_sql_stop(&api);
    jinn_api_check_stop(&api);
    jinn_api_fn_stop(&api);
    uv_close((uv_handle_t *)&api.watch_kick, NULL);
    uv_close((uv_handle_t *)&api.auth_timer, NULL);
    jinn_http_stop(api.http, http_stopped, &r_stopped);
    jinn_http_stop(leader, http_stopped, &l_stopped);
    RUN_UNTIL(&r, r_stopped && l_stopped, 5000);
    rig_done(&r);
}

TEST(replica_check_verdict_mismatch_stops_applying)
{
    struct rig r;
    struct jinn_api api;
    struct jinn_http_server *leader = NULL;
    struct jinn_http_config hc;
    struct jinn_replica_heartbeat hb;
    struct jinn_replica_status rs;
    struct jinn_cmd c;
    struct jinn_wbuf w;
    char leader_url[64], listen_l[32];
    bool l_stopped = false;

    memset(&leader_saw, 0, sizeof leader_saw);
    leader_saw.check_index = 2;
    CHECK_INT(rig_start(&r, 2000), 0);
    snprintf(listen_l, sizeof listen_l, "127.0.0.1:%d", free_port());
    snprintf(leader_url, sizeof leader_url, "http://%s", listen_l);
    allow_source(&r.cfg, listen_l);
    memset(&hc, 0, sizeof hc);
    hc.max_body = 1 << 20;
    hc.idle_timeout_ms = 10000;
    hc.read_timeout_ms = 10000;
    hc.max_connections = 64;
    hc.listen = listen_l;
    CHECK_INT(jinn_http_start(&r.loop, &hc, fake_leader, NULL, &leader), 0);
    jinn_api_init(&api, &r.loop, &r.cfg, r.node);
    jinn_node_set_apply_hook(r.node, api_applied, &api);
    hb = primary(3, 2, 2);
    hb.leader_api = leader_url;
    jinn_node_replica_heartbeat(r.node, &hb);

    /* A CHECK at 2: the replica digests its state, asks the leader for the
     * round's verdict, finds the majority's digest is not its own. */
    c = kv_put("k", "v");
    CHECK_INT(encode(&c, 10, &w), 0);
    CHECK_INT(jinn_node_replica_apply(r.node, 1, 0, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_CHECK;
    CHECK_INT(encode(&c, 11, &w), 0);
    CHECK_INT(jinn_node_replica_apply(r.node, 2, 1, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    RUN_UNTIL(&r, jinn_api_check_diverged(&api), 5000);
    CHECK(jinn_api_check_diverged(&api));
    CHECK(leader_saw.check_asks >= 1);

    /* Stopped: nothing more applies, nothing is relayed, not ready. */
    c = kv_put("k", "v2");
    CHECK_INT(encode(&c, 12, &w), 0);
    CHECK_INT(jinn_node_replica_apply(r.node, 3, 2, w.data, w.len), JINN_EDIVERGED);
    jinn_wbuf_free(&w);
    CHECK_INT(jinn_node_replica_position(r.node), 2);
    jinn_node_replica_heartbeat(r.node, &hb);
    CHECK(jinn_node_replica_leader_api(r.node) == NULL);
    jinn_node_replica_status(r.node, &rs);
    CHECK_INT(rs.state, JINN_REPLICA_READ_ONLY);

    jinn_node_set_apply_hook(r.node, hook, &r);
    api.stopping = true;
    jinn_fetch_close_idle();
    jinn_api_index_stop(&api);
    jinn_api_sql_stop(&api);
    jinn_api_check_stop(&api);
    jinn_api_fn_stop(&api);
    jinn_api_queue_stop(&api);
    jinn_api_lock_stop(&api);
    uv_close((uv_handle_t *)&api.watch_kick, NULL);
    uv_close((uv_handle_t *)&api.auth_timer, NULL);
    jinn_http_stop(leader, http_stopped, &l_stopped);
    RUN_UNTIL(&r, l_stopped, 5000);
    rig_done(&r);
}
