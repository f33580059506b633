/* test_digest.c - state digests: equal states give equal digests whatever
 * the history, one changed key or row changes exactly its section, and SQL
 * databases are compared by content, not by image. */
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "config.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/digest.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "unit.h"

static struct jinn_cmd kv_put(const char *key, const char *value)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    c.kv.ns.p = (const uint8_t *)"ns";
    c.kv.ns.len = 2;
    c.kv.key.p = (const uint8_t *)key;
    c.kv.key.len = strlen(key);
    c.kv.value.p = (const uint8_t *)value;
    c.kv.value.len = strlen(value);
    return c;
}

static struct jinn_cmd lock_acquire(const char *name)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_LOCK_ACQUIRE;
    c.lock.name.p = (const uint8_t *)name;
    c.lock.name.len = strlen(name);
    c.lock.owner.p = (const uint8_t *)"me";
    c.lock.owner.len = 2;
    c.lock.ttl_ms = 60000;
    return c;
}

static struct jinn_cmd publish(const char *payload)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_Q_PUBLISH;
    c.q.queue.p = (const uint8_t *)"jobs";
    c.q.queue.len = 4;
    c.q.payload.p = (const uint8_t *)payload;
    c.q.payload.len = strlen(payload);
    c.q.count = 1000;
    c.q.bytes = 1u << 20;
    c.q.max_deliver = 5;
    return c;
}

static struct jinn_cmd sql_exec(const char *db, const char *json)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)db;
    c.sql.db.len = strlen(db);
    c.sql.statements.p = (const uint8_t *)json;
    c.sql.statements.len = strlen(json);
    c.sql.step_budget = 10000000;
    return c;
}


/* The full digest, SQL included, as the CHECK apply hook computes it. */
static int digest(const struct jinn_fsm *fsm, uint64_t index, struct jinn_digest *d)
{
    char err[200];
    int rv = jinn_digest_memory(fsm, index, d);
    for (const struct jinn_sql_db *db = jinn_sql_next(&fsm->sql, NULL); rv == 0 && db;
         db = jinn_sql_next(&fsm->sql, db)) {
        sqlite3 *conn = jinn_sql_open_internal_reader(&fsm->sql, db->name);
        uint64_t h = 0;
        char name[JINN_DIGEST_NAME_MAX];
        if (conn == NULL) {
            return JINN_EIO;
        }
        rv = jinn_digest_sql(conn, &h, err, sizeof err);
        sqlite3_close_v2(conn);
        snprintf(name, sizeof name, "sql:%s", db->name);
        if (rv == 0) {
            rv = jinn_digest_add(d, name, h);
        }
    }
    jinn_digest_finish(d);
    return rv;
}

static uint64_t section(const struct jinn_digest *d, const char *name)
{
    const struct jinn_digest_section *s = jinn_digest_find(d, name);
    return s ? s->hash : 0;
}

static const char *const T_CREATE =
    "{\"statements\":[{\"sql\":\"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, r REAL, b "
    "BLOB)\"},{\"sql\":\"CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID\"}]}";

/* The same commands on two state machines. */
static void apply_all(struct jinn_fsm *fsm, uint64_t *index)
{
    unit_apply(fsm, ++*index, 1000, kv_put("a", "1"));
    unit_apply(fsm, ++*index, 1001, kv_put("b", "2"));
    unit_apply(fsm, ++*index, 1002, lock_acquire("l"));
    unit_apply(fsm, ++*index, 1003, publish("job"));
    unit_apply(fsm, ++*index, 1004, sql_exec("app", T_CREATE));
    unit_apply(fsm, ++*index, 1005,
               sql_exec("app", "{\"statements\":[{\"sql\":\"INSERT INTO t(v, r, b) VALUES "
                               "('x', 1.5, x'00ff'), (NULL, -0.0, NULL)\"},{\"sql\":\"INSERT "
                               "INTO w VALUES ('k2', 2), ('k1', 'one')\"}]}"));
}

TEST(digest_same_log_same_digest_and_sections)
{
    char d1[] = "/tmp/jinn-dig-XXXXXX", d2[] = "/tmp/jinn-dig-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_digest *da = jinn_malloc(sizeof *da), *db = jinn_malloc(sizeof *db);
    uint64_t ia = 0, ib = 0;
    CHECK(da != NULL && db != NULL);
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    apply_all(&a, &ia);
    apply_all(&b, &ib);
    CHECK_INT(digest(&a, ia, da), 0);
    CHECK_INT(digest(&b, ib, db), 0);
    CHECK_INT(da->n, 7);
    CHECK_STR(da->sections[0].name, "meta");
    CHECK_STR(da->sections[5].name, "functions");
    CHECK_STR(da->sections[6].name, "sql:app");
    CHECK(da->total == db->total);
    for (unsigned i = 0; i < da->n; i++) {
        CHECK(da->sections[i].hash == db->sections[i].hash);
    }
    jinn_free(da);
    jinn_free(db);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

TEST(digest_one_changed_key_or_row_changes_only_its_section)
{
    char d1[] = "/tmp/jinn-dig-XXXXXX", d2[] = "/tmp/jinn-dig-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_digest *da = jinn_malloc(sizeof *da), *db = jinn_malloc(sizeof *db);
    uint64_t ia = 0, ib = 0;
    char err[200];
    sqlite3 *conn;
    CHECK(da != NULL && db != NULL);
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    apply_all(&a, &ia);
    apply_all(&b, &ib);
    /* b's copy of one key differs (same revision, same index: only the value). */
    unit_apply(&a, ++ia, 2000, kv_put("c", "3"));
    unit_apply(&b, ++ib, 2000, kv_put("c", "4"));
    CHECK_INT(digest(&a, ia, da), 0);
    CHECK_INT(digest(&b, ib, db), 0);
    CHECK(da->total != db->total);
    CHECK(section(da, "kv") != section(db, "kv"));
    CHECK(section(da, "meta") == section(db, "meta"));
    CHECK(section(da, "locks") == section(db, "locks"));
    CHECK(section(da, "queues") == section(db, "queues"));
    CHECK(section(da, "sql:app") == section(db, "sql:app"));

    /* One row changed behind the state machine's back, as an outside
     * process would: only sql:app moves. */
    unit_apply(&b, ib, 2000, kv_put("c", "3")); /* same index again: equal kv */
    CHECK_INT(digest(&b, ib, db), 0);
    CHECK(da->total == db->total);
    {
        char path[256];
        snprintf(path, sizeof path, "%s/sql/app.db", d2);
        CHECK_INT(sqlite3_open(path, &conn), SQLITE_OK);
        CHECK_INT(sqlite3_exec(conn, "UPDATE w SET v = 3 WHERE k = 'k2'", NULL, NULL, NULL),
                  SQLITE_OK);
        sqlite3_close(conn);
    }
    CHECK_INT(digest(&b, ib, db), 0);
    CHECK(section(da, "sql:app") != section(db, "sql:app"));
    CHECK(section(da, "kv") == section(db, "kv"));
    CHECK(da->total != db->total);
    (void)err;
    jinn_free(da);
    jinn_free(db);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

static const char *const SQL_A =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
    "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE \"odd \"\"name\"(x);"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
    "WHERE i < 500) INSERT INTO t SELECT i, printf('%0200d', i) FROM n;"
    "INSERT INTO w VALUES ('a', 1), ('b', 2.5), ('c', x'01');"
    "INSERT INTO \"odd \"\"name\" VALUES (NULL);";

static const char *const SQL_B =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
    "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE \"odd \"\"name\"(x);"
    "CREATE TABLE scratch(x);"
    "INSERT INTO scratch VALUES (zeroblob(100000));"
    "WITH RECURSIVE n(i) AS (SELECT 500 UNION ALL SELECT i - 1 FROM n "
    "WHERE i > 1) INSERT INTO t SELECT i, printf('%0200d', i) FROM n;"
    "INSERT INTO t VALUES (9999, 'gone');"
    "INSERT INTO w VALUES ('c', x'01'), ('b', 2.5), ('a', 1);"
    "INSERT INTO \"odd \"\"name\" VALUES (NULL);"
    "DELETE FROM t WHERE id = 9999; DROP TABLE scratch;";

/* Rows inserted in another order, with other rows added and removed in
 * between, and a page layout that differs: the same content. */
TEST(digest_sql_content_not_history_or_layout)
{
    char dir[] = "/tmp/jinn-dig-XXXXXX", path_a[256], path_b[256], err[200];
    sqlite3 *a, *b;
    uint64_t ha = 0, hb = 0;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path_a, sizeof path_a, "%s/a.db", dir);
    snprintf(path_b, sizeof path_b, "%s/b.db", dir);
    CHECK_INT(sqlite3_open(path_a, &a), SQLITE_OK);
    CHECK_INT(sqlite3_open(path_b, &b), SQLITE_OK);
    CHECK_INT(sqlite3_exec(a, SQL_A, NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_exec(b, SQL_B, NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(jinn_digest_sql(a, &ha, err, sizeof err), 0);
    CHECK_INT(jinn_digest_sql(b, &hb, err, sizeof err), 0);
    CHECK(ha == hb);
    {
        sqlite3_int64 na = 0, nb = 0;
        unsigned char *ia = sqlite3_serialize(a, "main", &na, 0);
        unsigned char *ib = sqlite3_serialize(b, "main", &nb, 0);
        CHECK(ia != NULL && ib != NULL);
        /* The images differ (free pages, layout): an image checksum would
         * call these replicas diverged. */
        CHECK(na != nb || memcmp(ia, ib, (size_t)na) != 0);
        sqlite3_free(ia);
        sqlite3_free(ib);
    }
    /* A typed difference is a difference: 1 vs '1' vs 1.0. */
    CHECK_INT(sqlite3_exec(b, "UPDATE w SET v = '1' WHERE k = 'a'", NULL, NULL, NULL),
              SQLITE_OK);
    CHECK_INT(jinn_digest_sql(b, &hb, err, sizeof err), 0);
    CHECK(ha != hb);
    CHECK_INT(sqlite3_exec(b, "UPDATE w SET v = 1.0 WHERE k = 'a'", NULL, NULL, NULL),
              SQLITE_OK);
    CHECK_INT(jinn_digest_sql(b, &hb, err, sizeof err), 0);
    CHECK(ha != hb);
    CHECK_INT(sqlite3_exec(b, "UPDATE w SET v = 1 WHERE k = 'a'", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(jinn_digest_sql(b, &hb, err, sizeof err), 0);
    CHECK(ha == hb);
    /* The schema counts too. */
    CHECK_INT(sqlite3_exec(b, "CREATE INDEX wv ON w(v)", NULL, NULL, NULL), SQLITE_OK);
    CHECK_INT(jinn_digest_sql(b, &hb, err, sizeof err), 0);
    CHECK(ha != hb);
    sqlite3_close(a);
    sqlite3_close(b);
    {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK_INT(system(cmd), 0);
    }
}

/* Two files whose bytes differ only in the header's change counter and
 * version-valid-for (what checkpoints and restores leave behind). */
TEST(digest_sql_same_rows_different_header_bytes)
{
    char dir[] = "/tmp/jinn-dig-XXXXXX", path_a[256], path_b[256], err[200];
    sqlite3 *a, *b;
    uint64_t ha = 0, hb = 0;
    unsigned char *image;
    sqlite3_int64 n = 0;
    FILE *f;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path_a, sizeof path_a, "%s/a.db", dir);
    snprintf(path_b, sizeof path_b, "%s/b.db", dir);
    CHECK_INT(sqlite3_open(path_a, &a), SQLITE_OK);
    CHECK_INT(sqlite3_exec(a, "CREATE TABLE t(x); INSERT INTO t VALUES (1), ('two'), (3.0);",
                           NULL, NULL, NULL),
              SQLITE_OK);
    image = sqlite3_serialize(a, "main", &n, 0);
    CHECK(image != NULL && n >= 100);
    image[24] ^= 0x5a; /* file change counter */
    image[95] ^= 0x33; /* version-valid-for */
    f = fopen(path_b, "wb");
    CHECK(f != NULL);
    CHECK_INT(fwrite(image, 1, (size_t)n, f), n);
    fclose(f);
    sqlite3_free(image);
    CHECK_INT(sqlite3_open(path_b, &b), SQLITE_OK);
    CHECK_INT(jinn_digest_sql(a, &ha, err, sizeof err), 0);
    CHECK_INT(jinn_digest_sql(b, &hb, err, sizeof err), 0);
    CHECK(ha == hb);
    sqlite3_close(a);
    sqlite3_close(b);
    {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        CHECK_INT(system(cmd), 0);
    }
}

/* A replica restored from a snapshot digests like one that applied the log. */
TEST(digest_survives_snapshot_restore)
{
    char d1[] = "/tmp/jinn-dig-XXXXXX", d2[] = "/tmp/jinn-dig-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_digest *da = jinn_malloc(sizeof *da), *db = jinn_malloc(sizeof *db);
    struct jinn_wbuf w;
    uint64_t ia = 0;
    CHECK(da != NULL && db != NULL);
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    apply_all(&a, &ia);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    CHECK_INT(digest(&a, ia, da), 0);
    CHECK_INT(digest(&b, ia, db), 0);
    CHECK(da->total == db->total);
    jinn_free(da);
    jinn_free(db);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* CHECK round-trips and changes no state (only marks where it applied). */
TEST(digest_check_command_changes_nothing)
{
    char d1[] = "/tmp/jinn-dig-XXXXXX";
    struct jinn_fsm a;
    struct jinn_wbuf before, after, enc;
    struct jinn_cmd c, out;
    uint64_t ia = 0;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    apply_all(&a, &ia);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_CHECK;
    c.time_ms = 77;
    jinn_wbuf_init(&enc);
    CHECK_INT(jinn_cmd_encode(&c, &enc), 0);
    CHECK_INT(enc.len, JINN_CMD_HEADER_SIZE + 4);
    CHECK_INT(jinn_cmd_decode(enc.data, enc.len, &out), 0);
    CHECK_INT(out.type, JINN_CMD_CHECK);
    CHECK_STR(jinn_cmd_type_name(JINN_CMD_CHECK), "check");
    jinn_wbuf_free(&enc);
    jinn_wbuf_init(&before);
    jinn_wbuf_init(&after);
    CHECK_INT(jinn_fsm_encode(&a, &before), 0);
    CHECK_INT(unit_apply(&a, ++ia, 1005, c)->code, JINN_OK);
    CHECK_INT(a.check_index, ia);
    CHECK_INT(jinn_fsm_encode(&a, &after), 0);
    CHECK_INT(before.len, after.len);
    CHECK(memcmp(before.data, after.data, before.len) == 0);
    jinn_wbuf_free(&before);
    jinn_wbuf_free(&after);
    unit_sql_fsm_done(&a, d1);
}

TEST(digest_check_interval_config)
{
    struct jinn_config cfg;
    struct jinn_config_error err;
    const char *off = "{\n check_interval 0s\n}\n", *bad = "{\n check_interval 10\n}\n";
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(cfg.check_interval_ms, 600000);
    CHECK_INT(jinn_config_parse(&cfg, "t", off, strlen(off), &err), 0);
    CHECK_INT(cfg.check_interval_ms, 0);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", bad, strlen(bad), &err), JINN_ECONFIG);
    CHECK_INT(err.line, 2);
    jinn_config_free(&cfg);
}
