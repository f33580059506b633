/* test_fsm.c - the state machine: apply, snapshot/restore with bad input,
 * and replicas that stay byte-identical through partitions, crashes and
 * snapshot installs in libraft's deterministic fixture (seeded). */
#include <raft.h>
#include <raft/fixture.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fatal.h"
#include "fsm/fsm.h"
#include "ioguard.h"
#include "log.h"
#include "unit.h"

static void encode_node(struct jinn_wbuf *w, uint64_t time_ms, uint64_t id, const char *name,
                        const char *api)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_NODE_SET;
    c.time_ms = time_ms;
    c.node.id = id;
    c.node.name.p = (const uint8_t *)name;
    c.node.name.len = strlen(name);
    c.node.api.p = (const uint8_t *)api;
    c.node.api.len = strlen(api);
    jinn_wbuf_init(w);
    jinn_cmd_encode(&c, w);
}

static int apply_node(struct jinn_fsm *fsm, uint64_t index, uint64_t time_ms, uint64_t id,
                      const char *name)
{
    struct jinn_wbuf w;
    const struct jinn_result *res;
    encode_node(&w, time_ms, id, name, "http://127.0.0.1:1");
    res = jinn_fsm_apply_buf(fsm, index, w.data, w.len);
    jinn_wbuf_free(&w);
    return res->code;
}

TEST(fsm_apply_and_time_is_monotonic)
{
    struct jinn_fsm fsm;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply_node(&fsm, 1, 1000, 5, "a"), 0);
    CHECK_INT(fsm.time_ms, 1000);
    /* A new leader with a slow clock cannot move cluster time back. */
    CHECK_INT(apply_node(&fsm, 2, 400, 3, "b"), 0);
    CHECK_INT(fsm.time_ms, 1000);
    CHECK_INT(apply_node(&fsm, 3, 1500, 5, "a2"), 0);
    CHECK_INT(fsm.time_ms, 1500);
    CHECK_INT(fsm.nodes.n, 2);
    CHECK_INT(fsm.nodes.items[0].id, 3); /* kept sorted */
    CHECK_STR(jinn_nodes_find(&fsm.nodes, 5)->name, "a2");
    jinn_fsm_close(&fsm);
}

TEST(fsm_bad_command_changes_nothing)
{
    struct jinn_fsm fsm;
    struct jinn_wbuf w;
    const struct jinn_result *res;
    jinn_fsm_init(&fsm);
    CHECK_INT(apply_node(&fsm, 1, 1000, 5, "a"), 0);
    encode_node(&w, 99999, 6, "b", "x");
    w.len -= 1; /* truncated */
    res = jinn_fsm_apply_buf(&fsm, 2, w.data, w.len);
    CHECK_INT(res->code, JINN_ECORRUPT);
    CHECK_INT(res->index, 2);
    CHECK_INT(fsm.time_ms, 1000);
    CHECK_INT(fsm.nodes.n, 1);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&fsm);
}

static void in_fresh_fsm(void *arg)
{
    void (*fn)(struct jinn_fsm *) = *(void (**)(struct jinn_fsm *))arg;
    struct jinn_fsm fsm;
    jinn_fsm_init(&fsm);
    fn(&fsm);
}

/* Runs fn on a fresh FSM in a child (unit_run_child): the fatal-apply
 * path exits the process, so it can only be observed from outside. */
static int run_child(void (*fn)(struct jinn_fsm *), char *out, size_t cap)
{
    return unit_run_child(in_fresh_fsm, &fn, out, cap);
}

static void apply_raw(struct jinn_fsm *fsm, uint64_t index, uint8_t version, uint8_t type,
                      uint8_t flags)
{
    uint8_t buf[16];
    memset(buf, 0, sizeof buf);
    buf[0] = JINN_CMD_MAGIC;
    buf[1] = version;
    buf[2] = type;
    buf[3] = flags;
    jinn_fsm_apply_buf(fsm, index, buf, sizeof buf);
}

static void apply_unknown_type(struct jinn_fsm *fsm) { apply_raw(fsm, 42, 1, 200, 0); }
static void apply_unknown_version(struct jinn_fsm *fsm)
{
    apply_raw(fsm, 43, JINN_CMD_VERSION + 1, 1, 0);
}
static void apply_unknown_flags(struct jinn_fsm *fsm) { apply_raw(fsm, 44, 1, 1, 0x80); }

/* Issue 10 item 7: an old replica skipped a command it did not know while
 * new ones applied it - a fork during every rolling upgrade. It must stop,
 * saying which entry and what to do. */
TEST(fsm_unknown_command_version_or_type_stops_the_node)
{
    char out[2048];
    int st = run_child(apply_unknown_type, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == JINN_EXIT_FATAL_APPLY);
    CHECK(strstr(out, "entry 42 has command version 1 / type 200") != NULL);
    CHECK(strstr(out, "upgrade this node") != NULL);
    st = run_child(apply_unknown_version, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == JINN_EXIT_FATAL_APPLY);
    CHECK(strstr(out, "entry 43 has command version 3 / type 1") != NULL);
    st = run_child(apply_unknown_flags, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == JINN_EXIT_FATAL_APPLY);
    CHECK(strstr(out, "entry 44") != NULL && strstr(out, "flags 128") != NULL);
}

static void apply_put_out_of_memory(struct jinn_fsm *fsm)
{
    struct jinn_cmd c;
    struct jinn_wbuf w;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    c.time_ms = 5;
    c.kv.ns.p = (const uint8_t *)"ns";
    c.kv.ns.len = 2;
    c.kv.key.p = (const uint8_t *)"k";
    c.kv.key.len = 1;
    c.kv.value.p = (const uint8_t *)"v";
    c.kv.value.len = 1;
    jinn_wbuf_init(&w);
    jinn_cmd_encode(&c, &w);
    jinn_alloc_fail_after(0);
    jinn_fsm_apply_buf(fsm, 7, w.data, w.len);
}

/* Issue 10 item 4: an allocation failure in apply stopped every replica
 * with abort(). Now: one clear line naming the entry, exit code 3, and
 * nothing of the entry applied (a restart replays it). */
TEST(fsm_out_of_memory_in_apply_stops_cleanly)
{
    char out[2048];
    int st = run_child(apply_put_out_of_memory, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == JINN_EXIT_FATAL_APPLY);
    CHECK(strstr(out, "fatal apply: entry 7 (kv_put, type 3): out of memory") != NULL);
}

/* A known type with a malformed body changes nothing, identically on every
 * replica: it is the same bytes everywhere. Applying it twice to two FSMs
 * leaves both byte-identical to before. */
TEST(fsm_malformed_known_command_is_deterministic_no_op)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf sa, sb;
    uint8_t bad[24];
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    CHECK_INT(apply_node(&a, 1, 1000, 5, "a"), 0);
    CHECK_INT(apply_node(&b, 1, 1000, 5, "a"), 0);
    memset(bad, 0, sizeof bad);
    bad[0] = JINN_CMD_MAGIC;
    bad[1] = JINN_CMD_VERSION;
    bad[2] = JINN_CMD_KV_PUT; /* a PUT with no body */
    bad[4] = 0xff; /* a time far ahead: must not move cluster time */
    CHECK_INT(jinn_fsm_apply_buf(&a, 2, bad, sizeof bad)->code, JINN_ECORRUPT);
    CHECK_INT(jinn_fsm_apply_buf(&b, 2, bad, sizeof bad)->code, JINN_ECORRUPT);
    jinn_wbuf_init(&sa);
    jinn_wbuf_init(&sb);
    CHECK_INT(jinn_fsm_encode(&a, &sa), 0);
    CHECK_INT(jinn_fsm_encode(&b, &sb), 0);
    CHECK(sa.len == sb.len && memcmp(sa.data, sb.data, sa.len) == 0);
    CHECK_INT(a.time_ms, 1000);
    jinn_wbuf_free(&sa);
    jinn_wbuf_free(&sb);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(fsm_snapshot_round_trip_and_corruption)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w, w2;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    for (uint64_t i = 1; i <= 10; i++) {
        char name[16];
        snprintf(name, sizeof name, "n%llu", (unsigned long long)i);
        CHECK_INT(apply_node(&a, i, 100 * i, i * 7919 % 101, name), 0);
    }
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK_INT(w.len, w2.len);
    CHECK(memcmp(w.data, w2.data, w.len) == 0);
    jinn_wbuf_free(&w2);

    /* Flip each byte in turn: always rejected, state untouched. */
    CHECK_INT(apply_node(&b, 11, 5000, 1000, "extra"), 0);
    for (size_t i = 0; i < w.len; i++) {
        w.data[i] ^= 0x5a;
        int rv = jinn_fsm_decode(&b, w.data, w.len);
        w.data[i] ^= 0x5a;
        CHECK(rv == JINN_ECORRUPT || rv == JINN_EVERSION);
        CHECK(jinn_nodes_find(&b.nodes, 1000) != NULL);
    }
    /* Every truncation is rejected. */
    for (size_t n = 0; n < w.len; n++) {
        CHECK_INT(jinn_fsm_decode(&b, w.data, n), JINN_ECORRUPT);
    }
    CHECK_INT(b.time_ms, 5000);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(fsm_snapshot_future_version_rejected)
{
    struct jinn_fsm a;
    struct jinn_wbuf w;
    uint32_t crc;
    jinn_fsm_init(&a);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    w.data[8] = JINN_SNAPSHOT_VERSION + 1;
    /* Refused as "newer" even before its checksum is looked at: a newer
     * format may checksum differently. */
    CHECK_INT(jinn_fsm_decode(&a, w.data, w.len), JINN_EVERSION);
    crc = jinn_crc32(0, w.data, w.len - 4);
    jinn_wbuf_patch_u32(&w, w.len - 4, crc);
    CHECK_INT(jinn_fsm_decode(&a, w.data, w.len), JINN_EVERSION);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
}

TEST(fsm_decode_out_of_memory_is_clean)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    int ok = 0;
    jinn_fsm_init(&a);
    for (uint64_t i = 1; i <= 5; i++) {
        CHECK_INT(apply_node(&a, i, i, i, "node"), 0);
    }
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    for (long n = 0; n < 100 && !ok; n++) {
        jinn_fsm_init(&b);
        CHECK_INT(apply_node(&b, 1, 1, 77, "keep"), 0);
        jinn_alloc_fail_after(n);
        int rv = jinn_fsm_decode(&b, w.data, w.len);
        jinn_alloc_fail_reset();
        CHECK(rv == 0 || rv == JINN_ENOMEM);
        if (rv == 0) {
            ok = 1;
            CHECK_INT(b.nodes.n, 5);
        } else {
            CHECK(jinn_nodes_find(&b.nodes, 77) != NULL); /* untouched */
        }
        jinn_fsm_close(&b);
    }
    CHECK(ok);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
}

/* ---- replicas under faults, in libraft's fixture ------------------------ */

#define N_SERVERS 3

struct acked {
    uint64_t ids[4096]; /* acknowledged directory writes, checked by id */
    unsigned n;
    unsigned total; /* every acknowledged write */
    uint64_t tokens[4]; /* the last token seen per lock, for refresh/release */
    uint64_t seqs[4];   /* recent queue messages, for ack/nak */
    unsigned n_seqs;
};

struct apply_req {
    struct raft_apply req;
    struct acked *acked;
    uint64_t id;
    int type;     /* the command's type */
    unsigned which; /* LOCK_ACQUIRE: the lock's slot in acked->tokens */
};

static void applied_cb(struct raft_apply *req, int status, void *result)
{
    struct apply_req *r = req->data;
    const struct jinn_result *res = result;
    if (status == 0 && res->code != JINN_ECORRUPT) {
        r->acked->total++;
    }
    if (status == 0 && res->code == JINN_OK && r->id != 0 && r->acked->n < 4096) {
        r->acked->ids[r->acked->n++] = r->id;
    }
    if (status == 0 && r->type == JINN_CMD_LOCK_ACQUIRE && res->value != 0) {
        r->acked->tokens[r->which] = res->value;
    }
    if (status == 0 && r->type == JINN_CMD_Q_PUBLISH && res->code == JINN_OK) {
        r->acked->seqs[r->acked->n_seqs++ % 4] = res->value;
    }
    free(r);
}

static uint64_t next_rand(uint64_t *s)
{
    /* xorshift64*: the whole scenario is a function of the seed. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static void propose(struct raft_fixture *f, unsigned leader, uint64_t time_ms, uint64_t id,
                    struct acked *acked)
{
    struct jinn_wbuf w;
    struct raft_buffer buf;
    struct apply_req *r = calloc(1, sizeof *r);
    char name[32];
    snprintf(name, sizeof name, "n%llu", (unsigned long long)id);
    if (id % 2 == 0 && (id / 2) % 5 != 0) {
        /* Several locks with equal TTLs and waiters, queues with leases and
         * SQL databases at once. */
        static const char *const locks[] = {"L0", "L1", "L2", "L3"};
        static const char *const queues[] = {"q0", "q1"};
        static const char *const dbs[] = {"d0", "d1", "d2"};
        static const char *const sqls[] = {
            "{\"statements\":[{\"sql\":\"CREATE TABLE IF NOT EXISTS t(k PRIMARY KEY, v)\"}]}",
            "{\"statements\":[{\"sql\":\"CREATE TABLE IF NOT EXISTS t(k PRIMARY KEY, v)\"},"
            "{\"sql\":\"INSERT OR REPLACE INTO t VALUES(random() % 5, datetime('now'))\"}]}",
            "{\"statements\":[{\"sql\":\"DELETE FROM t WHERE k = 1\"}]}",
        };
        struct jinn_cmd c;
        unsigned which = (unsigned)(id / 10) % 4;
        memset(&c, 0, sizeof c);
        c.time_ms = time_ms;
        switch ((id / 2) % 5) {
        case 1:
            c.type = JINN_CMD_LOCK_ACQUIRE;
            c.lock.name.p = (const uint8_t *)locks[which];
            c.lock.name.len = 2;
            c.lock.owner.p = (const uint8_t *)name;
            c.lock.owner.len = strlen(name);
            c.lock.ttl_ms = 300; /* equal TTLs: grants by one command tie */
            c.lock.wait_ms = id % 3 == 0 ? 0 : 2000;
            r->which = which;
            break;
        case 2:
            c.type = id % 3 == 0 ? JINN_CMD_LOCK_RELEASE : JINN_CMD_LOCK_REFRESH;
            c.lock.name.p = (const uint8_t *)locks[which];
            c.lock.name.len = 2;
            c.lock.token = acked->tokens[which];
            c.lock.ttl_ms = id % 4 == 0 ? 0 : 300;
            break;
        case 3:
            c.q.queue.p = (const uint8_t *)queues[id % 2];
            c.q.queue.len = 2;
            c.q.worker.p = (const uint8_t *)"w";
            c.q.worker.len = 1;
            switch (id % 4) {
            case 0:
                c.type = JINN_CMD_Q_PUBLISH;
                c.q.payload.p = (const uint8_t *)name;
                c.q.payload.len = strlen(name);
                c.q.max_deliver = 3;
                c.q.ms = 1000;
                c.q.worker.len = 0;
                break;
            case 1:
                c.type = JINN_CMD_Q_FETCH;
                c.q.count = 2;
                c.q.ms = 200; /* leases expire during the run */
                break;
            default:
                c.type = id % 4 == 2 ? JINN_CMD_Q_ACK : JINN_CMD_Q_NAK;
                c.q.seq = acked->seqs[id % 4];
                c.q.ms = 100;
                break;
            }
            break;
        default:
            c.type = JINN_CMD_SQL_EXEC;
            c.sql.db.p = (const uint8_t *)dbs[id % 3];
            c.sql.db.len = 2;
            c.sql.statements.p = (const uint8_t *)sqls[(id / 3) % 3];
            c.sql.statements.len = strlen(sqls[(id / 3) % 3]);
            c.sql.step_budget = 100000;
            break;
        }
        r->type = c.type;
        jinn_wbuf_init(&w);
        jinn_cmd_encode(&c, &w);
        id = 0;
    } else if (id % 2 == 0) {
        /* Every other write is a KV put on a few hot keys, some with TTLs
         * that expire during the run, some conditional. */
        struct jinn_cmd c;
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_KV_PUT;
        c.time_ms = time_ms;
        c.kv.ns.p = (const uint8_t *)"ns";
        c.kv.ns.len = 2;
        static const char *const hot[] = {"alpha", "beta", "gamma", "delta"};
        c.kv.key.p = (const uint8_t *)hot[id % 4];
        c.kv.key.len = strlen(hot[id % 4]);
        c.kv.value.p = (const uint8_t *)name;
        c.kv.value.len = strlen(name);
        c.kv.ttl_ms = (id % 5) * 150;
        c.kv.flags = id % 7 == 0 ? JINN_KV_CREATE_ONLY : 0;
        jinn_wbuf_init(&w);
        jinn_cmd_encode(&c, &w);
        id = 0; /* not a directory entry: not checked by name below */
    } else {
        encode_node(&w, time_ms, id, name, "http://10.0.0.1:1");
    }
    buf.base = w.data;
    buf.len = w.len;
    r->req.data = r;
    r->acked = acked;
    r->id = id;
    if (raft_apply(raft_fixture_get(f, leader), &r->req, &buf, 1, applied_cb) != 0) {
        jinn_wbuf_free(&w);
        free(r);
    }
}

/* Runs one seeded scenario; returns 0 when every replica ends byte-identical
 * and holds every acknowledged write. */
static int run_scenario(uint64_t seed, bool guarded, bool snapshots)
{
    struct raft_fixture f;
    struct jinn_ioguard guards[N_SERVERS];
    struct raft_configuration conf;
    struct jinn_fsm fsms[N_SERVERS];
    struct acked *acked = calloc(1, sizeof *acked);
    struct jinn_wbuf snap[N_SERVERS];
    uint64_t rng = seed, clock_ms = 1000, next_id = 1;
    raft_index target;
    int failed = 0;
    char dirs[N_SERVERS][64];

    /* raft_fixture_initialize leaves parts of f untouched: start from zero. */
    memset(&f, 0, sizeof f);
    if (acked == NULL || raft_fixture_initialize(&f) != 0) {
        return 1;
    }
    for (unsigned i = 0; i < N_SERVERS; i++) {
        jinn_fsm_init(&fsms[i]);
        snprintf(dirs[i], sizeof dirs[i], "/tmp/jinn-unit-fsm-XXXXXX");
        if (mkdtemp(dirs[i]) == NULL || jinn_sql_set_dir(&fsms[i].sql, dirs[i]) != 0) {
            return 1;
        }
        if (raft_fixture_grow(&f, &fsms[i].iface) != 0) {
            return 1;
        }
        fsms[i].raft = raft_fixture_get(&f, i);
        if (guarded) {
            jinn_ioguard_init(&guards[i], fsms[i].raft->io);
            fsms[i].raft->io = &guards[i].io;
            guards[i].io.data = fsms[i].raft;
        }
        f.servers[i].tracer.enabled = getenv("JINN_FSM_TRACE") != NULL;
        raft_set_snapshot_threshold(fsms[i].raft, snapshots ? 16 : 100000);
        raft_set_snapshot_trailing(fsms[i].raft, 4);
        raft_fixture_set_randomized_election_timeout(&f, i, 1000 + (unsigned)(next_rand(&rng) % 1000));
        raft_fixture_set_network_latency(&f, i, 5 + (unsigned)(next_rand(&rng) % 20));
    }
    raft_fixture_configuration(&f, N_SERVERS, &conf);
    raft_fixture_bootstrap(&f, &conf);
    raft_fixture_start(&f); /* reads conf: close it only afterwards */
    raft_configuration_close(&conf);

    for (int step = 0; step < 400; step++) {
        unsigned leader = raft_fixture_leader_index(&f);
        unsigned a = (unsigned)(next_rand(&rng) % N_SERVERS);
        unsigned b = (a + 1 + (unsigned)(next_rand(&rng) % (N_SERVERS - 1))) % N_SERVERS;
        switch (next_rand(&rng) % 40) {
        case 0:
        case 1:
            raft_fixture_disconnect(&f, a, b);
            break;
        case 2:
        case 3:
        case 4:
        case 5:
            raft_fixture_reconnect(&f, a, b);
            break;
        case 6:
            if (raft_fixture_alive(&f, a) && leader != a) {
                raft_fixture_kill(&f, a); /* a crashed follower */
            }
            break;
        case 7:
            if (leader == a) {
                /* The leader is cut off from everyone (both directions). */
                for (unsigned k = 0; k < N_SERVERS; k++) {
                    if (k != a) {
                        raft_fixture_disconnect(&f, a, k);
                        raft_fixture_disconnect(&f, k, a);
                    }
                }
            }
            break;
        case 8:
        case 9:
        case 10:
            raft_fixture_revive(&f, a);
            break;
        default:
            if (leader < N_SERVERS) {
                /* Leaders' clocks disagree: time may even step back. */
                clock_ms += next_rand(&rng) % 50;
                propose(&f, leader, clock_ms - next_rand(&rng) % 30, next_id++, acked);
            }
        }
        raft_fixture_step_until_elapsed(&f, 20 + (unsigned)(next_rand(&rng) % 300));
    }
    /* Heal everything and let the cluster converge. */
    for (unsigned i = 0; i < N_SERVERS; i++) {
        raft_fixture_revive(&f, i);
        for (unsigned j = 0; j < N_SERVERS; j++) {
            if (i != j) {
                raft_fixture_reconnect(&f, i, j);
            }
        }
    }
    if (!raft_fixture_step_until_has_leader(&f, 20000)) {
        fprintf(stderr, "  seed %llu: no leader after healing\n", (unsigned long long)seed);
        failed = 1;
        goto out;
    }
    propose(&f, raft_fixture_leader_index(&f), clock_ms, next_id++, acked);
    target = raft_last_index(raft_fixture_get(&f, raft_fixture_leader_index(&f)));
    if (!raft_fixture_step_until_applied(&f, N_SERVERS, target, 20000)) {
        fprintf(stderr, "  seed %llu: replicas did not apply index %llu (applied:",
                (unsigned long long)seed, (unsigned long long)target);
        for (unsigned i = 0; i < N_SERVERS; i++) {
            fprintf(stderr, " %llu", (unsigned long long)raft_last_applied(raft_fixture_get(&f, i)));
        }
        fprintf(stderr, ")\n");
        failed = 1;
        goto out;
    }
    for (unsigned i = 0; i < N_SERVERS; i++) {
        jinn_wbuf_init(&snap[i]);
        jinn_fsm_encode(&fsms[i], &snap[i]);
    }
    for (unsigned i = 1; i < N_SERVERS; i++) {
        if (snap[i].len != snap[0].len || memcmp(snap[i].data, snap[0].data, snap[0].len) != 0) {
            fprintf(stderr, "  seed %llu: replica %u differs from replica 0\n",
                    (unsigned long long)seed, i);
            failed = 1;
        }
    }
    for (unsigned k = 0; k < acked->n; k++) {
        for (unsigned i = 0; i < N_SERVERS; i++) {
            if (jinn_nodes_find(&fsms[i].nodes, acked->ids[k]) == NULL) {
                fprintf(stderr, "  seed %llu: acknowledged write %llu missing on %u\n",
                        (unsigned long long)seed, (unsigned long long)acked->ids[k], i);
                failed = 1;
            }
        }
    }
    /* The scenario reached every kind of state (not just the directory). */
    if (jinn_sql_next(&fsms[0].sql, NULL) == NULL || jinn_queues_next(&fsms[0].queues, NULL) == NULL ||
        (acked->tokens[0] | acked->tokens[1] | acked->tokens[2] | acked->tokens[3]) == 0) {
        fprintf(stderr, "  seed %llu: no SQL database, queue or lock grant\n",
                (unsigned long long)seed);
        failed = 1;
    }
    if (acked->total < 20) {
        fprintf(stderr, "  seed %llu: only %u of %llu writes acknowledged\n",
                (unsigned long long)seed, acked->total, (unsigned long long)next_id - 1);
        failed = 1;
    }
    for (unsigned i = 0; i < N_SERVERS; i++) {
        jinn_wbuf_free(&snap[i]);
    }
out:
    raft_fixture_close(&f);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        char cmd[128];
        jinn_fsm_close(&fsms[i]);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirs[i]);
        if (system(cmd) != 0) {
            fprintf(stderr, "  could not remove %s\n", dirs[i]);
        }
    }
    free(acked);
    return failed;
}

/* One process per scenario: a crash names its seed and the other scenarios
 * still run. Returns the number of failed seeds. */
static int run_seeds(const uint64_t *seeds, size_t n, bool snapshots)
{
    int failed = 0;
    for (size_t k = 0; k < n; k++) {
        uint64_t seed = seeds[k] * 0x9E3779B97F4A7C15ull;
        int status = 0, rv;
        pid_t pid = fork();
        if (pid < 0) {
            return failed + 1;
        }
        if (pid == 0) {
            _exit(run_scenario(seed, true, snapshots));
        }
        if (waitpid(pid, &status, 0) != pid) {
            return failed + 1;
        }
        rv = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        if (rv != 0) {
            fprintf(stderr, "  reproduce with JINN_FSM_SEED=%llu%s\n", (unsigned long long)seed,
                    snapshots ? " JINN_FSM_SNAPSHOTS=1" : "");
            failed++;
        }
    }
    return failed;
}

TEST(fsm_replicas_identical_under_partitions_and_crashes)
{
    const char *env = getenv("JINN_FSM_SEED");
    if (env != NULL) {
        CHECK_INT(run_scenario(strtoull(env, NULL, 10), getenv("JINN_FSM_UNGUARDED") == NULL,
                               getenv("JINN_FSM_SNAPSHOTS") != NULL),
                  0);
        return;
    }
    /* Seeds 15, 23 and 36 hit libraft 0.15's stale-tail hole without the
     * guard (see ioguard.h); keep them. */
    static const uint64_t seeds[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 23, 36};
    CHECK_INT(run_seeds(seeds, sizeof seeds / sizeof seeds[0], false), 0);
}

/* The same scenarios (several locks, queues and SQL databases at once) with
 * a snapshot every 16 entries, so lagging followers are caught up by
 * snapshot installs that restore all of it. */
TEST(fsm_replicas_identical_with_snapshot_installs)
{
    static const uint64_t seeds[] = {101, 102, 103, 104, 105, 106};
    if (getenv("JINN_FSM_SEED") != NULL) {
        return; /* the test above runs the one seed asked for */
    }
    CHECK_INT(run_seeds(seeds, sizeof seeds / sizeof seeds[0], true), 0);
}
