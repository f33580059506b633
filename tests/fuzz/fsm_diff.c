/* fsm_diff.c - differential fuzzer for the replicated state machine.
 *
 * The input is a program: each step advances cluster time and applies one
 * command (many locks with equal TTLs, waiters and refreshes, queue
 * publish/fetch/ack/nak/progress/term with leases, KV puts with TTLs and
 * fences, deletes, a little SQL, node announcements, function deploys,
 * deletes and rollbacks, job acks with results, cron ticks and FN_DEPLOY2,
 * tokens (TOKEN_PUT, TOKEN_PUT2, revokes, function scopes), malformed known
 * commands) to two state machines at the same index. Between steps, the
 * second one may be snapshotted (jinn_fsm_encode) and restored into a
 * fresh state machine. After every step both must have given the same
 * result and hold the same state: the snapshot sections of nodes, KV, locks,
 * queues, functions (module bytes included), jobs and tokens byte for byte,
 * the cluster time, and each SQL database's schema and rows (SQL images
 * are compared by content: their page layout may legitimately differ after
 * a restore). No crash, no leak, no fatal apply (which exits and is
 * reported as a crash). */
#include <sqlite3.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fuzz.h"
#include "log.h"

#define MAX_STEPS 160

static const char *dirs[3];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR); /* fatal-apply messages stay visible */
    for (int i = 0; i < 3; i++) {
        dirs[i] = fuzz_tmpdir();
    }
    return 0;
}

/* ---- reading the program ------------------------------------------------- */

struct prog {
    const uint8_t *p;
    size_t left;
};

static uint8_t next(struct prog *g)
{
    if (g->left == 0) {
        return 0;
    }
    g->left--;
    return *g->p++;
}

#define PICK(g, arr) (arr)[next(g) % (sizeof(arr) / sizeof((arr)[0]))]

static struct jinn_slice S(const char *s)
{
    struct jinn_slice x;
    x.p = (const uint8_t *)s;
    x.len = strlen(s);
    return x;
}

static const char *const ns_names[] = {"a", "b"};
static const char *const keys[] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"};
static const char *const values[] = {"", "v", "value", "\xff\x00 binary"};
static const char *const lock_names[] = {"L0", "L1", "L2", "L3", "L4", "L5"};
static const char *const owners[] = {"o0", "o1", "o2"};
static const char *const queues[] = {"q0", "q1", "WORKERS_f0"}; /* f0's jobs */
static const char *const workers[] = {"w0", "w1", "w2"};
static const char *const idems[] = {"", "", "i0", "i1"};
static const char *const dbs[] = {"d0", "d1"};
static const uint64_t ttls[] = {0, 1000, 1000, 1000, 2000, 500, UINT64_MAX};
static const uint64_t lock_ttls[] = {1000, 1000, 1000, 2000, 2500, 500};
static const uint64_t waits[] = {0, 10000, 10000, 1000, 0};
static const uint64_t steps_ms[] = {0, 0, 1, 10, 100, 500, 1000, 1000, 2000, 5000};
static const char *const sqls[] = {
    "{\"statements\":[{\"sql\":\"CREATE TABLE IF NOT EXISTS t(k TEXT PRIMARY KEY, v)\"}]}",
    "{\"statements\":[{\"sql\":\"CREATE TABLE IF NOT EXISTS t(k TEXT PRIMARY KEY, v)\"},"
    "{\"sql\":\"INSERT OR REPLACE INTO t VALUES(?, ?)\",\"params\":[\"x\", 1]}]}",
    "{\"statements\":[{\"sql\":\"INSERT INTO t VALUES(hex(randomblob(4)), datetime('now'))\"}]}",
    "{\"statements\":[{\"sql\":\"UPDATE t SET v = coalesce(v, 0) || 'z'\"}]}",
    "{\"statements\":[{\"sql\":\"DELETE FROM t WHERE rowid % 2 = 0\"}]}",
    "{\"statements\":[{\"sql\":\"CREATE TABLE IF NOT EXISTS u(x)\"},"
    "{\"sql\":\"INSERT INTO u VALUES(random())\"},{\"sql\":\"INSERT INTO nosuch VALUES(1)\"}]}",
    "{\"statements\":[{\"sql\":\"WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c) "
    "SELECT count(*) FROM c\"}]}",
    "{\"statements\":[{\"sql\":\"CREATE INDEX IF NOT EXISTS tv ON t(v)\"}]}",
    "not json",
};

/* Functions: two small valid modules (the second = the first + a custom
 * section), one the inspection refuses (imports gojinn.host_nope), and a
 * few settings, canonical or not. */
static const uint8_t fn_hello[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x03, 0x7f,
    0x7f, 0x7f, 0x00, 0x60, 0x00, 0x00, 0x02, 0x13, 0x01, 0x06, 0x67, 0x6f, 0x6a, 0x69,
    0x6e, 0x6e, 0x08, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6c, 0x6f, 0x67, 0x00, 0x00, 0x03,
    0x02, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65,
    0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00,
    0x01, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
    /* custom section "pad" */
    0x00, 0x05, 0x03, 0x70, 0x61, 0x64, 0x2a};
#define FN_HELLO_LEN 77
static const uint8_t fn_nope[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x60, 0x01, 0x7f,
    0x00, 0x60, 0x00, 0x00, 0x02, 0x14, 0x01, 0x06, 0x67, 0x6f, 0x6a, 0x69, 0x6e, 0x6e,
    0x09, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6e, 0x6f, 0x70, 0x65, 0x00, 0x00, 0x03, 0x02,
    0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65, 0x6d,
    0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00, 0x01,
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};
static const char *const fn_names[] = {"f0", "f1", "f2"};
#define FN_SETTINGS(route, args)                                                           \
    "{\"route\":\"" route "\",\"timeout_ms\":5000,\"memory_limit\":67108864,"               \
    "\"pool_size\":2,\"env\":[],\"args\":[" args "],\"kv_read\":[],\"kv_write\":[],"      \
    "\"db\":\"\",\"ns\":\"default\"}"
static const char *const fn_settings[] = {
    FN_SETTINGS("", ""), FN_SETTINGS("/r", ""), FN_SETTINGS("/r", "\"x\""),
    FN_SETTINGS("/s", ""), "{\"route\": \"\"}", FN_SETTINGS("/v1", "")};
/* Settings with jobs keys: FN_DEPLOY2 takes them, FN_DEPLOY refuses them. */
#define FN_SETTINGS_JOBS(extra)                                                            \
    "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,"                        \
    "\"pool_size\":2,\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],"                \
    "\"db\":\"\",\"ns\":\"default\"" extra "}"
static const char *const fn_job_settings[] = {
    FN_SETTINGS_JOBS(",\"cron\":\"@every 1s\""), FN_SETTINGS_JOBS(",\"workers\":0"),
    FN_SETTINGS_JOBS(",\"workers\":3,\"cron\":\"* * * * *\""), FN_SETTINGS_JOBS(""),
    FN_SETTINGS_JOBS(",\"cron\":\"0 0 30 2 *\"")};

/* Tokens (fsm/auth.h): TOKEN_PUT (29) and TOKEN_PUT2 (32) with rules the
 * release before cluster:replica knows or not, canonical or not; scopes
 * for the functions above; revokes. */
static const char *const token_names[] = {"t0", "t1", "bootstrap"};
static const char *const token_rules[] = {
    "kv:a/*:read", "cluster:admin", "cluster:replica", "kv:a/*:read cluster:replica",
    "cluster:metrics cluster:replica", "kv:a/*:write,read", "cluster:replicas"};
static const uint8_t token_salt[16] = {1}, token_hash[32] = {2}, token_key[32] = {3};

static void make_token(struct prog *g, struct jinn_cmd *c, uint8_t k)
{
    c->type = k % 4 == 2 ? JINN_CMD_TOKEN_REVOKE
              : (k / 4) % 2 ? JINN_CMD_TOKEN_PUT2
                            : JINN_CMD_TOKEN_PUT;
    if (k % 4 == 3) { /* a function's scope, from a token or an admin */
        c->token.name = S(PICK(g, fn_names));
        c->token.flags = JINN_CMD_TOKEN_FNSCOPE;
        c->token.deployer = S(next(g) % 2 ? "t0" : "");
    } else {
        c->token.name = S(PICK(g, token_names));
        c->token.flags = k % 4 == 1 ? JINN_CMD_TOKEN_BOOTSTRAP : 0;
        c->token.key.p = token_key;
        c->token.key.len = next(g) % 2 ? sizeof token_key : 0;
        c->token.expires_ms = next(g) % 2 ? 0 : (uint64_t)next(g) * 100;
    }
    c->token.rules = S(PICK(g, token_rules));
    c->token.salt.p = token_salt;
    c->token.salt.len = sizeof token_salt;
    c->token.hash.p = token_hash;
    c->token.hash.len = sizeof token_hash;
}

/* Recent tokens and seqs, so refresh/release/ack/nak often hit real ones. */
struct memory {
    uint64_t tokens[8];
    uint64_t seqs[8];
    unsigned nt, ns;
};

static uint64_t recall(const uint64_t *arr, unsigned n, struct prog *g)
{
    uint8_t b = next(g);
    if (n == 0 || b >= 224) {
        return b; /* sometimes a made-up one */
    }
    return arr[b % (n < 8 ? n : 8)];
}

/* Fills c from the program. *truncate: apply it a word short (a malformed
 * command of a known type). */
static void make_cmd(struct prog *g, struct memory *mem, struct jinn_cmd *c, bool *truncate)
{
    uint8_t op = next(g);
    memset(c, 0, sizeof *c);
    *truncate = false;
    switch (op % 20) {
    case 0:
        c->type = JINN_CMD_NOOP;
        break;
    case 1:
        c->type = JINN_CMD_NODE_SET;
        c->node.id = 1 + next(g) % 3;
        c->node.name = S(PICK(g, owners));
        c->node.api = S("http://127.0.0.1:1");
        break;
    case 2:
    case 3:
    case 4:
        c->type = JINN_CMD_KV_PUT;
        c->kv.ns = S(PICK(g, ns_names));
        c->kv.key = S(PICK(g, keys));
        c->kv.value = S(PICK(g, values));
        c->kv.value.len += (size_t)(c->kv.value.len == 9); /* the NUL inside */
        c->kv.ttl_ms = PICK(g, ttls);
        switch (next(g) % 6) {
        case 0:
            c->kv.flags = JINN_KV_CREATE_ONLY;
            break;
        case 1:
            c->kv.expect_revision = next(g);
            break;
        case 2:
            c->kv.flags = JINN_KV_FENCED;
            c->kv.fence = S(PICK(g, lock_names));
            c->kv.fence_token = recall(mem->tokens, mem->nt, g);
            break;
        default:
            break;
        }
        break;
    case 5:
        c->type = JINN_CMD_KV_DEL;
        c->kv.ns = S(PICK(g, ns_names));
        c->kv.key = S(PICK(g, keys));
        if (next(g) % 4 == 0) {
            c->kv.expect_revision = next(g);
        }
        break;
    case 6:
    case 7:
    case 8:
        c->type = JINN_CMD_LOCK_ACQUIRE;
        c->lock.name = S(PICK(g, lock_names));
        c->lock.owner = S(PICK(g, owners));
        c->lock.ttl_ms = PICK(g, lock_ttls);
        c->lock.wait_ms = PICK(g, waits);
        break;
    case 9:
        c->type = JINN_CMD_LOCK_REFRESH;
        c->lock.name = S(PICK(g, lock_names));
        c->lock.token = recall(mem->tokens, mem->nt, g);
        c->lock.ttl_ms = PICK(g, ttls) % 5000;
        break;
    case 10:
        /* odd multiples: a waiter withdrawing (token = its acquire's index) */
        c->type = (op / 20) % 2 ? JINN_CMD_LOCK_WITHDRAW : JINN_CMD_LOCK_RELEASE;
        c->lock.name = S(PICK(g, lock_names));
        c->lock.token = recall(mem->tokens, mem->nt, g);
        break;
    case 11:
    case 12:
        c->type = JINN_CMD_Q_PUBLISH;
        c->q.queue = S(PICK(g, queues));
        c->q.payload = S(PICK(g, values));
        c->q.idem = S(PICK(g, idems));
        c->q.count = next(g) % 2 ? 0 : 6;
        c->q.bytes = next(g) % 2 ? 0 : 40;
        c->q.ms = next(g) % 2 ? 1000 : 120000;
        c->q.max_deliver = next(g) % 4;
        break;
    case 13:
    case 14:
        c->type = JINN_CMD_Q_FETCH;
        c->q.queue = S(PICK(g, queues));
        c->q.worker = S(PICK(g, workers));
        c->q.count = 1 + next(g) % 4;
        c->q.ms = next(g) % 2 ? 1000 : 500;
        break;
    case 15:
    case 16: {
        static const uint8_t types[] = {JINN_CMD_Q_ACK,  JINN_CMD_Q_NAK,     JINN_CMD_Q_PROGRESS,
                                        JINN_CMD_Q_TERM, JINN_CMD_Q_REQUEUE, JINN_CMD_Q_DROP};
        c->type = PICK(g, types);
        c->q.queue = S(PICK(g, queues));
        if (c->type != JINN_CMD_Q_REQUEUE && c->type != JINN_CMD_Q_DROP) {
            c->q.worker = S(PICK(g, workers));
            c->q.delivery = next(g) % 3;
        }
        c->q.seq = recall(mem->seqs, mem->ns, g);
        c->q.ms = next(g) % 2 ? 0 : 1000;
        if (c->type == JINN_CMD_Q_NAK || c->type == JINN_CMD_Q_TERM) {
            c->q.reason = S(next(g) % 2 ? "" : "boom");
        }
        break;
    }
    case 17:
    case 18:
        c->type = JINN_CMD_SQL_EXEC;
        c->sql.db = S(PICK(g, dbs));
        c->sql.statements = S(PICK(g, sqls));
        c->sql.step_budget = next(g) % 4 == 0 ? 2000 : 50000; /* runaways end fast */
        if (next(g) % 5 == 0) {
            c->sql.fence = S(PICK(g, lock_names));
            c->sql.fence_token = recall(mem->tokens, mem->nt, g);
        }
        break;
    default:
        if (op % 40 == 19) { /* jobs: ack with a result, a cron tick, deploy2 */
            uint8_t k = next(g);
            if (k >= 240) { /* tokens: 29, 32 (cluster:replica), revoke, scopes */
                make_token(g, c, (uint8_t)(k - 240));
                break;
            }
            if (k % 3 == 0) {
                c->type = JINN_CMD_JOB_ACK;
                c->job.queue = S(k % 2 ? "WORKERS_f0" : "WORKERS_f1");
                c->job.n = 1 + next(g) % 3; /* a batch, sometimes with repeats */
                for (uint32_t i = 0; i < c->job.n; i++) {
                    c->job.item[i].worker = S(PICK(g, workers));
                    c->job.item[i].seq = recall(mem->seqs, mem->ns, g);
                    c->job.item[i].delivery = next(g) % 3;
                    c->job.item[i].status = 200;
                    c->job.item[i].response = S(PICK(g, values));
                }
                c->job.keep_ms = next(g) % 2 ? 500 : 100000;
                c->job.keep_bytes = next(g) % 2 ? 300 : 1u << 20;
            } else if (k % 3 == 1) {
                c->type = JINN_CMD_JOB_CRON;
                c->cron.name = S(PICK(g, fn_names));
                /* Often the pending tick, sometimes a stale one. */
                c->cron.tick_ms = next(g) % 4 == 0 ? (uint64_t)next(g) * 1000 : 0;
                c->cron.max_length = next(g) % 2 ? 2 : 100;
                c->cron.max_bytes = 1u << 20;
                c->cron.max_deliver = 3;
                /* The proposer's wall clock: behind, at or ahead of the
                 * entry's cluster time (apply takes the later). */
                c->cron.now_ms = next(g) % 3 == 0 ? 0 : (uint64_t)next(g) * 1000;
            } else {
                c->type = JINN_CMD_FN_DEPLOY2;
                c->fn.name = S(PICK(g, fn_names));
                c->fn.settings = S(PICK(g, fn_job_settings));
                c->fn.module.p = fn_hello;
                c->fn.module.len = FN_HELLO_LEN;
            }
            break;
        }
        if (op % 40 == 39) { /* functions: deploy, delete (or purge), rollback */
            uint8_t k = next(g);
            c->fn.name = S(PICK(g, fn_names));
            if (k % 3 == 0) {
                c->type = JINN_CMD_FN_DEPLOY;
                c->fn.settings = S(PICK(g, fn_settings));
                c->fn.module.p = (k / 3) % 4 == 3 ? fn_nope : fn_hello;
                c->fn.module.len = (k / 3) % 4 == 3   ? sizeof fn_nope
                                   : (k / 3) % 4 == 2 ? sizeof fn_hello
                                                      : FN_HELLO_LEN;
            } else if (k % 3 == 1) {
                c->type = JINN_CMD_FN_DELETE;
                c->fn.flags = (k / 3) % 4 == 0 ? 1 : 0;
            } else {
                c->type = JINN_CMD_FN_ROLLBACK;
                c->fn.version = (k / 3) % 4;
            }
            break;
        }
        c->type = JINN_CMD_KV_PUT;
        c->kv.ns = S("a");
        c->kv.key = S(PICK(g, keys));
        c->kv.value = S("trunc");
        *truncate = true;
        break;
    }
}

/* ---- comparing ----------------------------------------------------------- */

static void encode_core(const struct jinn_fsm *fsm, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u64(w, fsm->time_ms);
    jinn_nodes_encode(&fsm->nodes, w);
    jinn_kv_encode(&fsm->kv, w);
    jinn_locks_encode(&fsm->locks, w);
    jinn_queues_encode(&fsm->queues, w);
    jinn_fns_encode(&fsm->fns, w);
    jinn_fns_encode_modules(&fsm->fns, w);
    jinn_jobs_encode(&fsm->jobs, w);
    jinn_auth_encode(&fsm->auth, w);
    FUZZ_CHECK(!w->failed);
}

/* Every SQL database's schema and rows, in a canonical order. */
static void encode_sql(const struct jinn_fsm *fsm, struct jinn_wbuf *w)
{
    for (const struct jinn_sql_db *db = jinn_sql_next(&fsm->sql, NULL); db;
         db = jinn_sql_next(&fsm->sql, db)) {
        sqlite3_stmt *tables;
        jinn_wbuf_put_str(w, db->name);
        FUZZ_CHECK(sqlite3_prepare_v2(db->conn,
                                      "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                                      "ORDER BY type, name",
                                      -1, &tables, NULL) == SQLITE_OK);
        while (sqlite3_step(tables) == SQLITE_ROW) {
            const char *type = (const char *)sqlite3_column_text(tables, 0);
            const char *name = (const char *)sqlite3_column_text(tables, 1);
            const char *sql = (const char *)sqlite3_column_text(tables, 3);
            jinn_wbuf_put_str(w, type ? type : "");
            jinn_wbuf_put_str(w, name ? name : "");
            jinn_wbuf_put_str(w, sql ? sql : "");
            if (type != NULL && strcmp(type, "table") == 0 && name != NULL) {
                char q[256];
                sqlite3_stmt *rows;
                int n;
                snprintf(q, sizeof q, "SELECT rowid, * FROM \"%s\" ORDER BY rowid", name);
                FUZZ_CHECK(sqlite3_prepare_v2(db->conn, q, -1, &rows, NULL) == SQLITE_OK);
                n = sqlite3_column_count(rows);
                while (sqlite3_step(rows) == SQLITE_ROW) {
                    for (int i = 0; i < n; i++) {
                        const unsigned char *v = sqlite3_column_text(rows, i);
                        jinn_wbuf_put_u8(w, (uint8_t)sqlite3_column_type(rows, i));
                        jinn_wbuf_put_str(w, v ? (const char *)v : "");
                    }
                }
                sqlite3_finalize(rows);
            }
        }
        sqlite3_finalize(tables);
    }
    FUZZ_CHECK(!w->failed);
}

static void check_same(const struct jinn_fsm *a, const struct jinn_fsm *b, bool with_sql)
{
    struct jinn_wbuf wa, wb;
    jinn_wbuf_init(&wa);
    jinn_wbuf_init(&wb);
    encode_core(a, &wa);
    encode_core(b, &wb);
    if (with_sql) {
        encode_sql(a, &wa);
        encode_sql(b, &wb);
    }
    FUZZ_CHECK(wa.len == wb.len);
    FUZZ_CHECK(memcmp(wa.data, wb.data, wa.len) == 0);
    jinn_wbuf_free(&wa);
    jinn_wbuf_free(&wb);
}

/* ---- the run ------------------------------------------------------------- */

/* With JINN_FUZZ_DUMP_SNAPSHOTS=DIR, each input's final state is written
 * there as a snapshot_decode input (a 0 byte, then the snapshot): how that
 * target's seed corpus is made. */
static void dump_snapshot(const struct jinn_fsm *fsm, const uint8_t *data, size_t size)
{
    const char *dir = getenv("JINN_FUZZ_DUMP_SNAPSHOTS");
    struct jinn_wbuf w;
    char path[512];
    FILE *f;
    if (dir == NULL) {
        return;
    }
    jinn_wbuf_init(&w);
    jinn_wbuf_put_u8(&w, 0);
    FUZZ_CHECK(jinn_fsm_encode(fsm, &w) == 0);
    snprintf(path, sizeof path, "%s/seed-%08x", dir, jinn_crc32(0, data, size));
    f = fopen(path, "wb");
    if (f != NULL) {
        fwrite(w.data, 1, w.len, f);
        fclose(f);
    }
    jinn_wbuf_free(&w);
}

static void fresh(struct jinn_fsm *fsm, const char *dir)
{
    jinn_fsm_init(fsm);
    FUZZ_CHECK(jinn_sql_set_dir(&fsm->sql, dir) == 0);
}

/* Snapshot b and restore it into a fresh state machine in the other
 * directory; the restored one replaces b. */
static void snapshot_restore(struct jinn_fsm **b, struct jinn_fsm *spare, int *b_dir)
{
    struct jinn_wbuf w;
    int other = *b_dir == 1 ? 2 : 1;
    jinn_wbuf_init(&w);
    FUZZ_CHECK(jinn_fsm_encode(*b, &w) == 0);
    fresh(spare, dirs[other]);
    FUZZ_CHECK(jinn_fsm_decode(spare, w.data, w.len) == 0);
    jinn_wbuf_free(&w);
    jinn_fsm_close(*b);
    *b = spare;
    *b_dir = other;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jinn_fsm fa, fb1, fb2;
    struct jinn_fsm *a = &fa, *b = &fb1;
    struct prog g = {data, size};
    struct memory mem;
    uint64_t time = 1000;
    int b_dir = 1;
    bool sql_used = false;

    memset(&mem, 0, sizeof mem);
    fresh(a, dirs[0]);
    fresh(b, dirs[1]);
    for (uint64_t index = 1; index <= MAX_STEPS && g.left > 0; index++) {
        struct jinn_cmd c;
        struct jinn_wbuf w;
        const struct jinn_result *ra, *rb;
        int code_a;
        uint64_t value_a;
        bool truncate;

        time += PICK(&g, steps_ms);
        make_cmd(&g, &mem, &c, &truncate);
        c.time_ms = time;
        if (c.type == JINN_CMD_JOB_CRON && c.cron.tick_ms == 0) {
            /* The pending tick, as a leader would propose it (due or not). */
            char fn[8];
            snprintf(fn, sizeof fn, "%.*s", (int)c.cron.name.len, (const char *)c.cron.name.p);
            c.cron.tick_ms = jinn_jobs_cron_of(&a->jobs, fn);
        }
        jinn_wbuf_init(&w);
        FUZZ_CHECK(jinn_cmd_encode(&c, &w) == 0);
        if (truncate) {
            w.len -= 8; /* a whole word short: ECORRUPT on every replica */
        }
        ra = jinn_fsm_apply_buf(a, index, w.data, w.len);
        code_a = ra->code;
        value_a = ra->value;
        rb = jinn_fsm_apply_buf(b, index, w.data, w.len);
        FUZZ_CHECK(rb->code == code_a && rb->value == value_a);
        FUZZ_CHECK(!truncate || code_a == JINN_ECORRUPT);
        /* What the release before cluster:replica refuses, a TOKEN_PUT
         * never stores here either (else mixed replicas diverge). */
        FUZZ_CHECK(c.type != JINN_CMD_TOKEN_PUT || code_a != JINN_OK ||
                   !jinn_auth_rules_need_put2((const char *)c.token.rules.p,
                                              c.token.rules.len));
        jinn_wbuf_free(&w);
        if (c.type == JINN_CMD_SQL_EXEC) {
            sql_used = true;
        }
        if (code_a == JINN_OK || code_a == JINN_EQUEUED || code_a == JINN_ECONFLICT) {
            if (c.type == JINN_CMD_LOCK_ACQUIRE) {
                mem.tokens[mem.nt++ % 8] = value_a;
            } else if (c.type == JINN_CMD_Q_PUBLISH ||
                       (c.type == JINN_CMD_JOB_CRON && code_a == JINN_OK)) {
                mem.seqs[mem.ns++ % 8] = value_a;
            }
        }
        if (c.type == JINN_CMD_LOCK_ACQUIRE || c.type == JINN_CMD_LOCK_RELEASE) {
            mem.tokens[mem.nt++ % 8] = index; /* grants to waiters carry it */
        }
        check_same(a, b, sql_used && (next(&g) % 4 == 0 || g.left == 0));
        if (next(&g) % 8 == 0) {
            snapshot_restore(&b, b == &fb1 ? &fb2 : &fb1, &b_dir);
            check_same(a, b, sql_used);
        }
    }
    check_same(a, b, sql_used);
    dump_snapshot(a, data, size);
    jinn_fsm_close(a);
    jinn_fsm_close(b);
    return 0;
}
