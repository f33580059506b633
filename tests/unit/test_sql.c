/* test_sql.c - replicated SQLite: replicas stay byte-identical through
 * nondeterministic SQL, failed transactions change nothing, snapshots carry
 * whole databases. */
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "unit.h"

static const struct jinn_result *exec(struct jinn_fsm *fsm, uint64_t index, uint64_t time,
                                      const char *json, uint64_t budget)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"app";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)json;
    c.sql.statements.len = strlen(json);
    c.sql.step_budget = budget;
    return unit_apply(fsm, index, time, c);
}


static uint32_t checksum(const struct jinn_fsm *fsm)
{
    uint64_t size;
    const struct jinn_sql_db *db = jinn_sql_get(&fsm->sql, "app");
    return db ? jinn_sql_checksum(db, &size) : 0;
}

static const char *workload[] = {
    "{\"statements\":[{\"sql\":\"CREATE TABLE t(id INTEGER PRIMARY KEY, r INT, b BLOB, "
    "at TEXT, j REAL)\"}]}",
    "{\"statements\":[{\"sql\":\"INSERT INTO t(r, b, at, j) VALUES(random(), randomblob(16), "
    "datetime('now'), julianday('now'))\"},{\"sql\":\"INSERT INTO t(r) SELECT abs(random()) % "
    "1000 FROM t\"}]}",
    "{\"statements\":[{\"sql\":\"UPDATE t SET at = CURRENT_TIMESTAMP, r = r + ? WHERE id = "
    "(SELECT max(id) FROM t)\",\"params\":[7]},{\"sql\":\"INSERT INTO t(b) VALUES(?)\",\"params\":"
    "[{\"base64\":\"AAEC\"}]}]}",
};

TEST(sql_replicas_byte_identical_with_random_and_time)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    for (uint64_t i = 0; i < 3; i++) {
        CHECK_INT(exec(&a, 10 + i, 1000000 + i, workload[i], 1000000)->code, JINN_OK);
        CHECK_INT(exec(&b, 10 + i, 1000000 + i, workload[i], 1000000)->code, JINN_OK);
    }
    CHECK(checksum(&a) != 0);
    CHECK_INT(checksum(&a), checksum(&b));
    /* A different index (another log) gives other random values. */
    unit_sql_fsm_done(&b, d2);
    char d3[] = "/tmp/jinn-sql-XXXXXX";
    CHECK_INT(unit_sql_fsm(&b, d3), 0);
    CHECK_INT(exec(&b, 10, 1000000, workload[0], 1000000)->code, JINN_OK);
    CHECK_INT(exec(&b, 99, 1000001, workload[1], 1000000)->code, JINN_OK);
    CHECK_INT(exec(&b, 12, 1000002, workload[2], 1000000)->code, JINN_OK);
    CHECK(checksum(&a) != checksum(&b));
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d3);
}

TEST(sql_failed_transaction_changes_nothing)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    const struct jinn_result *res;
    uint32_t before;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec(&fsm, 1, 1, workload[0], 1000000)->code, JINN_OK);
    before = checksum(&fsm);
    res = exec(&fsm, 2, 2,
               "{\"statements\":[{\"sql\":\"INSERT INTO t(r) VALUES(1)\"},{\"sql\":\"SELEC x\"}]}",
               1000000);
    CHECK_INT(res->code, JINN_ESQL);
    CHECK(strstr(fsm.sql.error, "statement 2") != NULL);
    CHECK_INT(checksum(&fsm), before);
    /* Wrong parameter count, forbidden statements, runaway work. */
    CHECK_INT(exec(&fsm, 3, 3, "{\"statements\":[{\"sql\":\"INSERT INTO t(r) VALUES(?)\"}]}",
                   1000000)->code,
              JINN_ESQL);
    CHECK_INT(exec(&fsm, 4, 4, "{\"statements\":[{\"sql\":\"PRAGMA journal_mode=delete\"}]}",
                   1000000)->code,
              JINN_ESQL);
    CHECK_INT(exec(&fsm, 5, 5, "{\"statements\":[{\"sql\":\"ATTACH 'x.db' AS x\"}]}",
                   1000000)->code,
              JINN_ESQL);
    CHECK_INT(exec(&fsm, 6, 6, "{\"statements\":[{\"sql\":\"COMMIT\"}]}", 1000000)->code,
              JINN_ESQL);
    res = exec(&fsm, 7, 7,
               "{\"statements\":[{\"sql\":\"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT "
               "x+1 FROM c) INSERT INTO t(r) SELECT x FROM c\"}]}",
               100000);
    CHECK_INT(res->code, JINN_ESQL);
    CHECK(strstr(fsm.sql.error, "step budget") != NULL);
    CHECK_INT(checksum(&fsm), before);
    /* Bytes that are not a statements document are rejected as corrupt. */
    CHECK_INT(exec(&fsm, 8, 8, "{\"nope\":1}", 1000000)->code, JINN_ECORRUPT);
    unit_sql_fsm_done(&fsm, d);
}

TEST(sql_snapshot_restores_databases)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    for (uint64_t i = 0; i < 3; i++) {
        CHECK_INT(exec(&a, 10 + i, 5000 + i, workload[i], 1000000)->code, JINN_OK);
    }
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(checksum(&b), checksum(&a));
    /* Both continue identically after the restore. */
    CHECK_INT(exec(&a, 20, 9000, workload[1], 1000000)->code, JINN_OK);
    CHECK_INT(exec(&b, 20, 9000, workload[1], 1000000)->code, JINN_OK);
    CHECK_INT(checksum(&b), checksum(&a));
    /* A corrupt image is refused before any file is touched. */
    w.data[w.len - 40] ^= 0xff;
    CHECK(jinn_fsm_decode(&b, w.data, w.len) != 0);
    CHECK_INT(checksum(&b), checksum(&a));
    jinn_wbuf_free(&w);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

TEST(sql_fenced_exec_runs_only_under_the_lock)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    struct jinn_cmd c;
    uint32_t before;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec(&fsm, 1, 1, workload[0], 1000000)->code, JINN_OK);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_LOCK_ACQUIRE;
    c.lock.name.p = (const uint8_t *)"db-writer";
    c.lock.name.len = 9;
    c.lock.owner.p = (const uint8_t *)"w";
    c.lock.owner.len = 1;
    c.lock.ttl_ms = 1000;
    CHECK_INT(unit_apply(&fsm, 2, 10, c)->code, JINN_OK); /* token 2 */
    before = checksum(&fsm);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"app";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)workload[1];
    c.sql.statements.len = strlen(workload[1]);
    c.sql.step_budget = 1000000;
    c.sql.fence.p = (const uint8_t *)"db-writer";
    c.sql.fence.len = 9;
    c.sql.fence_token = 1; /* stale */
    CHECK_INT(unit_apply(&fsm, 3, 20, c)->code, JINN_ECONFLICT);
    CHECK_INT(checksum(&fsm), before);
    c.sql.fence_token = 2;
    CHECK_INT(unit_apply(&fsm, 4, 20, c)->code, JINN_OK);
    CHECK(checksum(&fsm) != before);
    unit_sql_fsm_done(&fsm, d);
}

/* ---- sandbox, determinism, limits, environmental failures ------------------ */

/* Runs one statement as its own exec; returns the result code. */
static int exec1(struct jinn_fsm *fsm, uint64_t index, const char *sql)
{
    json_t *doc = json_pack("{s:[{s:s}]}", "statements", "sql", sql);
    char *text = json_dumps(doc, JSON_COMPACT);
    int code = exec(fsm, index, 1000 + index, text, 1000000)->code;
    jinn_free(text);
    json_decref(doc);
    return code;
}

TEST(sql_fts3_tokenizer_cannot_crash_a_replica)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    /* Before: the first registered a pointer, the second jumped to it
     * (SIGSEGV on every replica, again at every replay). */
    CHECK_INT(exec1(&fsm, 1, "SELECT fts3_tokenizer('evil', X'4141414141414141')"), JINN_ESQL);
    CHECK(strstr(fsm.sql.error, "not authorized") != NULL);
    CHECK_INT(exec1(&fsm, 2, "CREATE VIRTUAL TABLE v USING fts3(a, tokenize=evil)"), JINN_ESQL);
    CHECK_INT(exec1(&fsm, 3, "SELECT fts3_tokenizer('simple')"), JINN_ESQL);
    CHECK_INT(exec1(&fsm, 4, "CREATE VIRTUAL TABLE v USING fts4(a)"), JINN_ESQL);
    CHECK_INT(exec1(&fsm, 5, "CREATE VIRTUAL TABLE v USING fts3tokenize(simple)"), JINN_ESQL);
    unit_sql_fsm_done(&fsm, d);
}

/* Every entry of the allow-list, allowed and refused, on the apply path. */
TEST(sql_allow_list)
{
    static const char *const allowed[] = {
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b REAL, c BLOB)",
        "CREATE INDEX ta ON t(a)",
        "CREATE VIEW tv AS SELECT id, upper(a) AS ua FROM t",
        "CREATE TABLE log(x)",
        "CREATE TRIGGER tt AFTER INSERT ON t BEGIN INSERT INTO log VALUES(new.id); END",
        "INSERT INTO t(a, b, c) VALUES('x', 1.5, randomblob(4)), ('y', 2, zeroblob(3))",
        "INSERT INTO log SELECT abs(-1) + length('ab') + instr('abc','b') + unicode('a') + "
        "sign(-2) + ceil(1.2) + floor(1.2) + trunc(1.5) + mod(7,3) + pi() + sqrt(4) + "
        "degrees(1) + radians(1) + round(1.25, 1) + likely(1) + unlikely(1) + likelihood(1, 0.5)",
        "INSERT INTO log SELECT char(65) || coalesce(NULL, 'a') || ifnull(NULL, 'b') || "
        "iif(1, 'c', 'd') || lower('E') || ltrim(' f') || rtrim('g ') || trim(' h ') || "
        "replace('i', 'i', 'j') || substr('klm', 2) || substring('nop', 2, 1) || hex('q') || "
        "quote('r') || typeof(1) || printf('%d', 5) || format('%s', 's') || nullif(1, 2) || "
        "max(1, 2) || min(1, 2)",
        "INSERT INTO log SELECT 'a' LIKE 'A' AND 'a' GLOB 'a' AND random() IS NOT NULL",
        "INSERT INTO log SELECT date('now') || time('now') || datetime('now') || "
        "julianday('now') || strftime('%s', 'now') || unixepoch('now') || CURRENT_DATE || "
        "CURRENT_TIME || CURRENT_TIMESTAMP",
        "INSERT INTO log SELECT json_object('a', json_array(1, 2)) -> '$.a' ->> '$[0]'",
        "INSERT INTO log SELECT json_extract(json_set(json_insert(json_replace(json_remove("
        "json_patch('{\"a\":1}', '{\"b\":2}'), '$.a'), '$.b', 3), '$.c', 4), '$.d', 5), '$.d') "
        "+ json_array_length('[1]') + json_valid('{}') + length(json_type('1')) + "
        "length(json_quote('x')) + length(json('{}'))",
        "INSERT INTO log SELECT json_group_array(value) || json_group_object(key, value) FROM "
        "json_each('{\"a\":1,\"b\":2}')",
        "INSERT INTO log SELECT count(*) FROM json_tree('{\"a\":[1,2]}')",
        "INSERT INTO log SELECT avg(id) + count(*) + sum(id) + total(id) || group_concat(a) "
        "FROM t",
        "INSERT INTO log SELECT row_number() OVER w + rank() OVER w + dense_rank() OVER w + "
        "percent_rank() OVER w + cume_dist() OVER w + ntile(2) OVER w + "
        "ifnull(lag(id) OVER w, 0) + ifnull(lead(id) OVER w, 0) + first_value(id) OVER w + "
        "last_value(id) OVER w + ifnull(nth_value(id, 1) OVER w, 0) FROM t WINDOW w AS "
        "(ORDER BY id)",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) "
        "INSERT INTO log SELECT x FROM c",
        "CREATE VIRTUAL TABLE docs USING fts5(body)",
        "INSERT INTO docs(body) VALUES('the quick brown fox'), ('lazy dogs')",
        "INSERT INTO log SELECT bm25(docs) || highlight(docs, 0, '[', ']') || "
        "snippet(docs, 0, '[', ']', '...', 4) FROM docs WHERE docs MATCH 'quick'",
        "CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1, y0, y1)",
        "INSERT INTO boxes VALUES(1, 0, 10, 0, 10), (2, 5, 15, 5, 15)",
        "INSERT INTO log SELECT id FROM boxes WHERE x0 <= 6 AND x1 >= 6",
        "UPDATE t SET a = a || '!' WHERE id = 1",
        "DELETE FROM log WHERE x IS NULL",
        "ALTER TABLE log ADD COLUMN y INT",
        "CREATE TABLE d2(a DEFAULT (random()), b DEFAULT CURRENT_TIMESTAMP, c DEFAULT 'x')",
        "INSERT INTO d2 DEFAULT VALUES",
        "ANALYZE",
        "REINDEX ta",
        "CREATE TABLE ren(x, y)",
        "ALTER TABLE ren RENAME TO ren2",
        "ALTER TABLE ren2 RENAME COLUMN x TO x2",
        "ALTER TABLE ren2 DROP COLUMN y",
        "INSERT INTO ren2 VALUES(1) ON CONFLICT DO NOTHING RETURNING x2",
        "SELECT * FROM tv",
        "DROP VIEW tv",
        "DROP TRIGGER tt",
        "DROP INDEX ta",
        "DROP TABLE docs",
        "PRAGMA data_version",
        /* JSON in triggers and views (trusted_schema must stay on for it) */
        "CREATE TABLE jt(a)",
        "CREATE TRIGGER jtr AFTER INSERT ON jt BEGIN INSERT INTO log(x) VALUES(json_object('a', "
        "new.a) -> '$.a'); END",
        "CREATE VIEW jv AS SELECT json_extract(json_array(a), '$[0]') AS j FROM jt",
        "INSERT INTO jt VALUES(1)",
        "INSERT INTO log(x) SELECT j FROM jv",
    };
    static const char *const refused[] = {
        /* TEMP schema: not in the snapshot */
        "CREATE TEMP TABLE tt(a)",
        "CREATE TABLE temp.tt(a)",
        "CREATE TEMP VIEW v AS SELECT 1",
        "CREATE TEMP TRIGGER tr AFTER INSERT ON main.t BEGIN SELECT 1; END",
        /* column defaults run without the authorizer: checked after DDL */
        "CREATE TABLE d1(a DEFAULT (total_changes()))",
        "ALTER TABLE log ADD COLUMN z DEFAULT (sqlite_version())",
        "CREATE TABLE d3(a DEFAULT (exp(1)))",
        /* connection history */
        "INSERT INTO log SELECT changes()",
        "INSERT INTO log SELECT total_changes()",
        "INSERT INTO log SELECT last_insert_rowid()",
        /* introspection, extensions, libm */
        "INSERT INTO log SELECT sqlite_version()",
        "INSERT INTO log SELECT sqlite_source_id()",
        "INSERT INTO log SELECT sqlite_compileoption_used('THREADSAFE')",
        "INSERT INTO log SELECT sqlite_compileoption_get(0)",
        "INSERT INTO log SELECT sqlite_offset(a) FROM t",
        "INSERT INTO log SELECT sqlite_rename_table('main', 'table', 't', 'x', 'y', 0)",
        "SELECT load_extension('/tmp/x.so')",
        "INSERT INTO log SELECT exp(1)",
        "INSERT INTO log SELECT pow(2, 0.5)",
        "INSERT INTO log SELECT rtreecheck('boxes')",
        "INSERT INTO log SELECT name FROM pragma_table_info('t')",
        "INSERT INTO log SELECT count(*) FROM dbstat",
        "INSERT INTO log SELECT count(*) FROM sqlite_dbpage",
        /* settings, files, transactions */
        "PRAGMA journal_mode=delete",
        "PRAGMA database_list",
        "PRAGMA writable_schema=1",
        "PRAGMA page_size=65536",
        "ATTACH '/tmp/x.db' AS x",
        "DETACH x",
        "BEGIN",
        "COMMIT",
        "SAVEPOINT s",
        "RELEASE s",
        "VACUUM",
        "VACUUM INTO '/tmp/jinn-vacuum-into.db'",
        /* modules */
        "CREATE VIRTUAL TABLE v USING fts4(a)",
        "CREATE VIRTUAL TABLE v USING fts5vocab(docs, row)",
        "CREATE VIRTUAL TABLE v USING dbstat",
        /* fts5 shadow tables are not writable (defensive mode) */
        "INSERT INTO boxes_node VALUES(99, zeroblob(10))",
    };
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    uint64_t index = 1;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        int code = exec1(&fsm, index++, allowed[i]);
        if (code != JINN_OK) {
            fprintf(stderr, "  refused: %s: %s\n", allowed[i], fsm.sql.error);
        }
        CHECK_INT(code, JINN_OK);
    }
    CHECK_INT(exec1(&fsm, index++, "CREATE VIRTUAL TABLE docs USING fts5(body)"), JINN_OK);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int code = exec1(&fsm, index++, refused[i]);
        if (code != JINN_ESQL) {
            fprintf(stderr, "  allowed: %s\n", refused[i]);
        }
        CHECK_INT(code, JINN_ESQL);
    }
    CHECK(access("/tmp/jinn-vacuum-into.db", F_OK) != 0);
    /* A trigger body is checked when it fires (it is compiled into the
     * statement that fires it): a refused function fails that statement. */
    exec1(&fsm, index++,
          "CREATE TRIGGER bad AFTER INSERT ON jt BEGIN INSERT INTO log(x) "
          "VALUES(total_changes()); END");
    CHECK_INT(exec1(&fsm, index++, "INSERT INTO jt VALUES(2)"), JINN_ESQL);
    CHECK(strstr(fsm.sql.error, "not authorized") != NULL);
    unit_sql_fsm_done(&fsm, d);
}

/* The query connections have their own, read-only allow-list. */
TEST(sql_query_connections_are_read_only)
{
    static const char *const allowed[] = {
        "SELECT count(*) FROM t",
        "SELECT json_extract('{\"a\":1}', '$.a'), datetime('now'), random()",
        "SELECT value FROM json_each('[1,2]')",
        "SELECT rowid, bm25(docs) FROM docs WHERE docs MATCH 'hello'",
        "SELECT id FROM boxes WHERE x0 < 1",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) "
        "SELECT x FROM c",
    };
    static const char *const refused[] = {
        "ATTACH '/etc/passwd' AS x",
        "PRAGMA database_list",
        "SELECT * FROM pragma_database_list",
        "BEGIN",
        "SAVEPOINT s",
        "DELETE FROM t",
        "CREATE TEMP TABLE x(a)",
        "SELECT fts3_tokenizer('simple')",
        "SELECT changes()",
        "SELECT sqlite_version()",
        "PRAGMA query_only=0",
    };
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    sqlite3 *conn;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&fsm, 2, "CREATE VIRTUAL TABLE docs USING fts5(body)"), JINN_OK);
    CHECK_INT(exec1(&fsm, 3, "INSERT INTO docs VALUES('hello world')"), JINN_OK);
    CHECK_INT(exec1(&fsm, 4, "CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1)"), JINN_OK);
    CHECK_INT(exec1(&fsm, 5, "INSERT INTO boxes VALUES(1, 0, 2)"), JINN_OK);
    conn = jinn_sql_open_reader(&fsm.sql, "app");
    CHECK(conn != NULL);
    for (size_t i = 0; conn && i < sizeof allowed / sizeof allowed[0]; i++) {
        sqlite3_stmt *stmt = NULL;
        int rc = sqlite3_prepare_v2(conn, allowed[i], -1, &stmt, NULL);
        if (rc == SQLITE_OK) {
            while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            }
            rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        }
        if (rc != SQLITE_OK) {
            fprintf(stderr, "  refused: %s: %s\n", allowed[i], sqlite3_errmsg(conn));
        }
        CHECK_INT(rc, SQLITE_OK);
        sqlite3_finalize(stmt);
    }
    for (size_t i = 0; conn && i < sizeof refused / sizeof refused[0]; i++) {
        sqlite3_stmt *stmt = NULL;
        int rc = sqlite3_prepare_v2(conn, refused[i], -1, &stmt, NULL);
        if (rc == SQLITE_OK) {
            fprintf(stderr, "  allowed: %s\n", refused[i]);
        }
        CHECK(rc != SQLITE_OK);
        sqlite3_finalize(stmt);
    }
    CHECK(conn == NULL || sqlite3_get_autocommit(conn));
    sqlite3_close_v2(conn);
    /* Trailing blanks, ';' and comments are one statement. */
    CHECK(jinn_sql_tail_blank(";\r\n"));
    CHECK(jinn_sql_tail_blank(" ; -- done\n/* c */ "));
    CHECK(!jinn_sql_tail_blank("; SELECT 2"));
    CHECK_INT(exec1(&fsm, 6, "INSERT INTO t VALUES(1);\r\n"), JINN_OK);
    unit_sql_fsm_done(&fsm, d);
}

TEST(sql_rows_affected_counts_this_statement_only)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&fsm, 2, "INSERT INTO t VALUES(1)"), JINN_OK);
    {
        static const char batch[] =
            "{\"statements\":[{\"sql\":\"UPDATE t SET a = 2\"},{\"sql\":\"SELECT count(*) "
            "FROM t\"},{\"sql\":\"CREATE TABLE u(b)\"},{\"sql\":\"INSERT INTO u "
            "VALUES(1),(2)\"},{\"sql\":\"DELETE FROM u WHERE b = 9\"}]}";
        int code = exec(&fsm, 3, 3, batch, 1000000)->code;
        CHECK_INT(code, JINN_OK);
    }
    CHECK_STR(fsm.sql.reply,
              "[{\"rows_affected\":1,\"last_insert_id\":0},{\"rows_affected\":0,\"last_insert_"
              "id\":0},{\"rows_affected\":0,\"last_insert_id\":0},{\"rows_affected\":2,\"last_"
              "insert_id\":2},{\"rows_affected\":0,\"last_insert_id\":0}]");
    unit_sql_fsm_done(&fsm, d);
}

static int64_t max_rowid(struct jinn_fsm *fsm)
{
    sqlite3 *conn = jinn_sql_open_reader(&fsm->sql, "app");
    sqlite3_stmt *stmt = NULL;
    int64_t v = -1;
    if (conn && sqlite3_prepare_v2(conn, "SELECT id FROM t WHERE a = 2", -1, &stmt, NULL) == 0 &&
        sqlite3_step(stmt) == SQLITE_ROW) {
        v = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    sqlite3_close_v2(conn);
    return v;
}

/* Once rowid 2^63-1 is taken SQLite picks rowids from its own PRNG: it is
 * seeded from the entry, so replicas pick the same. */
TEST(sql_random_rowids_match_across_replicas)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(id INTEGER PRIMARY KEY, a INT)"), JINN_OK);
    CHECK_INT(exec1(&b, 1, "CREATE TABLE t(id INTEGER PRIMARY KEY, a INT)"), JINN_OK);
    CHECK_INT(exec1(&a, 2, "INSERT INTO t VALUES(9223372036854775807, 1)"), JINN_OK);
    CHECK_INT(exec1(&b, 2, "INSERT INTO t VALUES(9223372036854775807, 1)"), JINN_OK);
    CHECK_INT(exec1(&a, 3, "INSERT INTO t(a) VALUES(2)"), JINN_OK);
    CHECK_INT(exec1(&b, 3, "INSERT INTO t(a) VALUES(2)"), JINN_OK);
    CHECK(max_rowid(&a) > 0);
    CHECK(max_rowid(&a) == max_rowid(&b));
    CHECK_INT(checksum(&a), checksum(&b));
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* 'localtime' and 'utc' ignore the host's time zone. */
TEST(sql_localtime_is_utc_on_every_host)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    const char *old = getenv("TZ");
    char *saved = old ? jinn_strdup(old) : NULL;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    setenv("TZ", "America/New_York", 1);
    tzset();
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a, b)"), JINN_OK);
    CHECK_INT(exec1(&fsm, 2,
                    "INSERT INTO t SELECT datetime(0, 'unixepoch', 'localtime'), "
                    "datetime(0, 'unixepoch', 'utc')"),
              JINN_OK);
    CHECK_INT(exec(&fsm, 3, 3,
                   "{\"statements\":[{\"sql\":\"DELETE FROM t WHERE a = '1970-01-01 00:00:00' "
                   "AND b = '1970-01-01 00:00:00'\"}]}",
                   1000000)
                  ->code,
              JINN_OK);
    CHECK(fsm.sql.reply != NULL && strstr(fsm.sql.reply, "\"rows_affected\":1") != NULL);
    if (saved) {
        setenv("TZ", saved, 1);
    } else {
        unsetenv("TZ");
    }
    tzset();
    jinn_free(saved);
    unit_sql_fsm_done(&fsm, d);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Single-step blow-ups fail fast on the length limit, runaway loops on
 * the step budget; none of them takes long. */
TEST(sql_limits_stop_hostile_statements_fast)
{
    static const char *const hostile[] = {
        "INSERT INTO t VALUES(zeroblob(300000000))",
        "INSERT INTO t VALUES(printf('%.*c', 900000000, 'a'))",
        "INSERT INTO t VALUES(replace(printf('%.*c', 1000000, 'a'), 'a', 'bb'))",
        "INSERT INTO t VALUES(hex(zeroblob(600000)))",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
        "INSERT INTO t SELECT count(*) FROM c",
        /* few steps, each one heavy: the metered bytes stop it */
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
        "INSERT INTO t SELECT length(replace(printf('%.*c', 500000, 'a'), 'a', 'b')) FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
        "INSERT INTO t SELECT length(hex(zeroblob(400000)) || x) FROM c",
    };
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    sqlite3 *conn;
    sqlite3_stmt *stmt = NULL;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        struct timespec t0;
        json_t *doc = json_pack("{s:[{s:s}]}", "statements", "sql", hostile[i]);
        char *text = json_dumps(doc, JSON_COMPACT);
        int code;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        code = exec(&fsm, 2 + i, 2 + i, text, JINN_SQL_DEFAULT_STEPS)->code;
        if (getenv("UNIT_TIMES")) {
            fprintf(stderr, "  %6.1f ms  %.60s\n", ms_since(&t0), hostile[i]);
        }
        CHECK(ms_since(&t0) < 500);
        CHECK_INT(code, JINN_ESQL);
        CHECK(strstr(fsm.sql.error, "too big") != NULL ||
              strstr(fsm.sql.error, "step budget") != NULL);
        jinn_free(text);
        json_decref(doc);
    }
    conn = jinn_sql_open_reader(&fsm.sql, "app");
    CHECK(conn != NULL);
    CHECK_INT(sqlite3_prepare_v2(conn, "SELECT ifnull(max(length(a)), 0) FROM t", -1, &stmt,
                                 NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_step(stmt), SQLITE_ROW);
    CHECK(sqlite3_column_int64(stmt, 0) <= JINN_SQL_VALUE_MAX);
    sqlite3_finalize(stmt);
    sqlite3_close_v2(conn);
    unit_sql_fsm_done(&fsm, d);
}

/* jinn's printf()/format() and instr() give SQLite's results. */
TEST(sql_printf_and_instr_match_sqlite)
{
    static const char *const exprs[] = {
        "printf('%d|%5d|%-5d|%05d|%+d|% d|%,d', 42, 42, 42, 42, 42, 42, 1234567)",
        "printf('%x|%X|%o|%#x|%u|%lld|%lli', 255, 255, 8, 255, 7, 9, 10)",
        "printf('%f|%.2f|%10.3f|%-10.1e|%g|%G|%E|%!.3g', 3.14159, 2.5, 1.0, 12345.678, 1e-5, "
        "1e20, 5.0, 2.0)",
        "printf('%s|%10s|%-10s|%.2s|%s', 'abc', 'abc', 'abc', 'abc', NULL)",
        "printf('%q|%Q|%Q|%w', 'it''s', 'x', NULL, 'a\"b')",
        "printf('%c|%5c|%-5c|%.3c|%c', 'xyz', 'a', 'b', 'c', 'é')",
        "printf('%*d|%-*d|%.*f|%*.*s', 6, 1, 6, 2, 3, 1.23456, 8, 2, 'hello')",
        "printf('100%%|%d%s', 1)",
        "printf('%r %r %r %r', 1, 2, 3, 11)",
        "printf('%d and %y then %d', 1, 2)",
        "printf(NULL)",
        "format('%s-%d', 'a', 7)",
        "printf('%.3c', '')",
        "instr('hello world', 'o w') || instr('héllo', 'l') || instr('abc', '') || "
        "ifnull(instr(NULL, 'a'), 'N') || instr('abc', 'z') || instr(x'00112233', x'2233') || "
        "instr('a1b2', 2)",
    };
    sqlite3 *plain = NULL, *ours;
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    ours = jinn_sql_open_reader(&fsm.sql, "app");
    CHECK_INT(sqlite3_open(":memory:", &plain), SQLITE_OK);
    for (size_t i = 0; ours && i < sizeof exprs / sizeof exprs[0]; i++) {
        char sql[512];
        sqlite3_stmt *a = NULL, *b = NULL;
        snprintf(sql, sizeof sql, "SELECT quote(%s)", exprs[i]);
        CHECK_INT(sqlite3_prepare_v2(plain, sql, -1, &a, NULL), SQLITE_OK);
        CHECK_INT(sqlite3_prepare_v2(ours, sql, -1, &b, NULL), SQLITE_OK);
        CHECK_INT(sqlite3_step(a), SQLITE_ROW);
        CHECK_INT(sqlite3_step(b), SQLITE_ROW);
        if (strcmp((const char *)sqlite3_column_text(a, 0),
                   (const char *)sqlite3_column_text(b, 0)) != 0) {
            fprintf(stderr, "  %s\n    sqlite: %s\n    jinn:   %s\n", exprs[i],
                    sqlite3_column_text(a, 0), sqlite3_column_text(b, 0));
            CHECK(0);
        }
        sqlite3_finalize(a);
        sqlite3_finalize(b);
    }
    sqlite3_close(plain);
    sqlite3_close_v2(ours);
    CHECK_INT(exec1(&fsm, 2, "INSERT INTO t VALUES(printf('%2000000d', 1))"), JINN_ESQL);
    CHECK(strstr(fsm.sql.error, "too big") != NULL);
    CHECK_INT(exec1(&fsm, 3, "INSERT INTO t VALUES(printf('%.*c', 2000000, 'a'))"), JINN_ESQL);
    unit_sql_fsm_done(&fsm, d);
}

static void exec_cmd(struct jinn_fsm *fsm, uint64_t index, const char *sql, uint32_t version,
                     int *code)
{
    static char text[512];
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    snprintf(text, sizeof text, "{\"statements\":[{\"sql\":\"%s\"}]}", sql);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"app";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)text;
    c.sql.statements.len = strlen(text);
    c.sql.step_budget = 1000000;
    c.sql.sqlite_version = version;
    *code = jinn_sql_exec(&fsm->sql, index, 1000 + index, &c);
}

static int64_t count_rows(struct jinn_fsm *fsm)
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

/* A lock held by an outside process, a failing disk, a file that cannot be
 * opened: retried, then the node stops (JINN_EIO: fsm.c stops the node),
 * never a "sql_error" result that the other replicas did not get. */
TEST(sql_environmental_failures_stop_instead_of_diverging)
{
    char d[] = "/tmp/jinn-sql-XXXXXX", path[128];
    struct jinn_fsm fsm;
    sqlite3 *outside = NULL;
    int code;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    /* An operator's sqlite3 shell holds the write lock. */
    snprintf(path, sizeof path, "%s/sql/app.db", d);
    CHECK_INT(sqlite3_open(path, &outside), SQLITE_OK);
    CHECK_INT(sqlite3_exec(outside, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    exec_cmd(&fsm, 2, "INSERT INTO t VALUES(1)", 0, &code);
    CHECK_INT(code, JINN_EIO);
    CHECK_INT(sqlite3_exec(outside, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(outside);
    /* Replayed after the restart (here: the lock is gone), it applies. */
    exec_cmd(&fsm, 2, "INSERT INTO t VALUES(1)", 0, &code);
    CHECK_INT(code, JINN_OK);
    CHECK_INT(count_rows(&fsm), 1);
    /* One failed write is retried and the entry applies once. */
    jinn_sql_test_fault(SQLITE_IOERR_WRITE, 1, 0);
    exec_cmd(&fsm, 3, "INSERT INTO t VALUES(2)", 0, &code);
    CHECK_INT(code, JINN_OK);
    CHECK_INT(count_rows(&fsm), 2);
    /* A disk that stays full (SQLITE_FULL from a write, not from
     * max_page_count) stops the node; nothing is applied. */
    jinn_sql_test_fault(SQLITE_FULL, 1000, 0);
    exec_cmd(&fsm, 4, "INSERT INTO t VALUES(3)", 0, &code);
    CHECK_INT(code, JINN_EIO);
    jinn_sql_test_fault(0, 0, 0);
    CHECK_INT(count_rows(&fsm), 2);
    /* Opening a new database fails (no file descriptors): retried, then
     * stop, no abort(). */
    {
        struct jinn_cmd c;
        static const char stmts[] = "{\"statements\":[{\"sql\":\"CREATE TABLE x(a)\"}]}";
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_SQL_EXEC;
        c.sql.db.p = (const uint8_t *)"other";
        c.sql.db.len = 5;
        c.sql.statements.p = (const uint8_t *)stmts;
        c.sql.statements.len = strlen(stmts);
        c.sql.step_budget = 1000000;
        jinn_sql_test_fault(0, 0, 1);
        CHECK_INT(jinn_sql_exec(&fsm.sql, 5, 1005, &c), JINN_OK); /* one failure: retried */
        jinn_sql_test_fault(0, 0, 1000);
        c.sql.db.p = (const uint8_t *)"third";
        CHECK_INT(jinn_sql_exec(&fsm.sql, 6, 1006, &c), JINN_EIO);
        jinn_sql_test_fault(0, 0, 0);
        CHECK(jinn_sql_get(&fsm.sql, "third") == NULL);
    }
    unit_sql_fsm_done(&fsm, d);
}

/* The SQLite version is part of the replicated state: an entry written by
 * a leader with another library stops this node; a database records the
 * version that created it. */
TEST(sql_version_recorded_and_checked)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    uint32_t local = (uint32_t)sqlite3_libversion_number(), recorded = 0;
    struct jinn_wbuf w;
    struct jinn_cmd c, back;
    int code;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    exec_cmd(&fsm, 1, "CREATE TABLE t(a)", local, &code);
    CHECK_INT(code, JINN_OK);
    CHECK(jinn_sql_version_ok(&fsm.sql, "app", &recorded));
    CHECK_INT(recorded, local);
    CHECK_INT(jinn_sql_get(&fsm.sql, "app")->version, local);
    exec_cmd(&fsm, 2, "INSERT INTO t VALUES(1)", local + 1, &code);
    CHECK_INT(code, JINN_EIO);
    CHECK_INT(count_rows(&fsm), 0);
    /* The field survives encoding; entries without it decode as 0. */
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"app";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)"{}";
    c.sql.statements.len = 2;
    c.sql.sqlite_version = local;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &back), 0);
    CHECK_INT(back.sql.sqlite_version, local);
    jinn_wbuf_free(&w);
    c.sql.sqlite_version = 0;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &back), 0);
    CHECK_INT(back.sql.sqlite_version, 0);
    jinn_wbuf_free(&w);
    unit_sql_fsm_done(&fsm, d);
}

/* A restore that cannot write its images leaves the old databases as they
 * were (it used to wipe them first). */
TEST(sql_failed_restore_keeps_the_old_databases)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX", path[160];
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    struct jinn_cmd c;
    uint32_t before;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&a, 2, "INSERT INTO t VALUES('new')"), JINN_OK);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"zzz";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)workload[0];
    c.sql.statements.len = strlen(workload[0]);
    c.sql.step_budget = 1000000;
    CHECK_INT(unit_apply(&a, 3, 3, c)->code, JINN_OK);
    CHECK_INT(exec1(&b, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&b, 2, "INSERT INTO t VALUES('old')"), JINN_OK);
    before = checksum(&b);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    /* zzz's image cannot be written (a directory is in the way). */
    snprintf(path, sizeof path, "%s/sql/zzz.db", d2);
    CHECK_INT(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/sql/zzz.db.restore", d2);
    CHECK_INT(mkdir(path, 0755), 0);
    CHECK(jinn_fsm_decode(&b, w.data, w.len) != 0);
    CHECK_INT(checksum(&b), before);
    CHECK_INT(count_rows(&b), 1);
    CHECK_INT(exec1(&b, 3, "INSERT INTO t VALUES('still works')"), JINN_OK);
    /* Without the obstacle the restore swaps everything in. */
    CHECK_INT(rmdir(path), 0);
    snprintf(path, sizeof path, "%s/sql/zzz.db", d2);
    CHECK_INT(rmdir(path), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(checksum(&b), checksum(&a));
    CHECK(jinn_sql_get(&b.sql, "zzz") != NULL);
    jinn_wbuf_free(&w);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* A snapshot whose second database image passes the framing checks
 * ("SQLite format 3", length) but is not a database: the restore must fail
 * with the old state whole. It used to validate only the framing, swap the
 * first image in, then fail on the second after wiping the live files: the
 * FSM kept its old in-memory state over half-new SQL files (reviewer R1). */
TEST(sql_restore_of_a_bad_image_keeps_every_old_database)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    struct jinn_cmd c;
    uint8_t *second = NULL;
    uint32_t before, crc;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&a, 2, "INSERT INTO t VALUES('new')"), JINN_OK);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)"zzz";
    c.sql.db.len = 3;
    c.sql.statements.p = (const uint8_t *)workload[0];
    c.sql.statements.len = strlen(workload[0]);
    c.sql.step_budget = 1000000;
    CHECK_INT(unit_apply(&a, 3, 3, c)->code, JINN_OK);
    CHECK_INT(exec1(&b, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&b, 2, "INSERT INTO t VALUES('old')"), JINN_OK);
    before = checksum(&b);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    /* The images are in name order: app's, then zzz's. Break zzz's page
     * size (header bytes 16-17) and re-seal the snapshot's checksum. */
    for (size_t i = 0, seen = 0; i + 16 <= w.len; i++) {
        if (memcmp(w.data + i, "SQLite format 3", 16) == 0 && ++seen == 2) {
            second = w.data + i;
            break;
        }
    }
    CHECK(second != NULL);
    if (second != NULL) {
        second[16] = 0x00;
        second[17] = 0x03;
        crc = jinn_crc32(0, w.data, w.len - 4);
        for (int i = 0; i < 4; i++) {
            w.data[w.len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
        }
        CHECK(jinn_fsm_decode(&b, w.data, w.len) != 0);
        /* Every old database as it was, and still writable. */
        CHECK_INT(checksum(&b), before);
        CHECK_INT(count_rows(&b), 1);
        CHECK(jinn_sql_get(&b.sql, "zzz") == NULL);
        CHECK_INT(exec1(&b, 3, "INSERT INTO t VALUES('still works')"), JINN_OK);
    }
    jinn_wbuf_free(&w);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* The metered bytes (part of the step budget) are the same on a replica
 * restored from a snapshot (cold page cache, fresh connection) as on one
 * that applied everything itself: the page cache's own allocations (its
 * hash grows with the pages a big transaction keeps) are not metered. */
TEST(sql_metered_work_is_the_same_on_a_restored_replica)
{
    static const char *const work[] = {
        "UPDATE t SET v = upper(v) WHERE w < 50",
        "INSERT INTO t(v, w) SELECT v || 'x', w + 1 FROM t WHERE id % 7 = 0",
        "DELETE FROM t WHERE id % 5 = 0",
        "INSERT INTO t(v, w) SELECT group_concat(v), w FROM t GROUP BY w ORDER BY w LIMIT 20",
    };
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w INT)"), JINN_OK);
    CHECK_INT(exec1(&a, 2, "CREATE INDEX tw ON t(w)"), JINN_OK);
    {
        static const char fill[] =
            "{\"statements\":[{\"sql\":\"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
            "FROM c WHERE x < 20000) INSERT INTO t(v, w) SELECT printf('%0500d', x), x % 97 FROM "
            "c\"}]}";
        int code = exec(&a, 3, 3, fill, 100000000)->code;
        CHECK_INT(code, JINN_OK);
    }
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    uint64_t total = 0;
    for (size_t i = 0; i < sizeof work / sizeof work[0]; i++) {
        uint64_t on_a, on_b;
        json_t *doc = json_pack("{s:[{s:s}]}", "statements", "sql", work[i]);
        char *text = json_dumps(doc, JSON_COMPACT);
        CHECK_INT(exec(&a, 10 + i, 10, text, 100000000)->code, JINN_OK);
        on_a = jinn_sql_test_metered();
        CHECK_INT(exec(&b, 10 + i, 10, text, 100000000)->code, JINN_OK);
        on_b = jinn_sql_test_metered();
        total += on_a;
        CHECK_INT(on_a, on_b);
        jinn_free(text);
        json_decref(doc);
    }
    CHECK(total > 0);
    CHECK_INT(count_rows(&a), count_rows(&b));
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* Snapshots with SQL images taken off the loop (fsm.c, issue 10: no dump on
 * the event loop): the loop step pins every database, apply goes on, and the
 * worker step produces exactly the bytes jinn_fsm_encode gave at the pin. */
TEST(sql_async_snapshot_is_the_state_at_the_pin)
{
    char d[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm, copy;
    struct jinn_wbuf at_pin;
    struct raft_buffer *bufs = NULL;
    unsigned n = 0;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    jinn_fsm_async_snapshots(&fsm);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"), JINN_OK);
    CHECK_INT(exec1(&fsm, 2, "INSERT INTO t(v) VALUES ('before')"), JINN_OK);
    jinn_wbuf_init(&at_pin);
    CHECK_INT(jinn_fsm_encode(&fsm, &at_pin), 0);
    CHECK_INT(fsm.iface.snapshot(&fsm.iface, &bufs, &n), 0);
    CHECK(n == 1 && bufs != NULL && bufs[0].base == NULL); /* no image copied yet */
    /* One at a time: libraft retries a second request later. */
    {
        struct raft_buffer *b2 = NULL;
        unsigned n2 = 0;
        CHECK_INT(fsm.iface.snapshot(&fsm.iface, &b2, &n2), RAFT_BUSY);
    }
    /* Apply goes on while the worker has not run yet. */
    CHECK_INT(exec1(&fsm, 3, "INSERT INTO t(v) VALUES ('after')"), JINN_OK);
    CHECK_INT(exec1(&fsm, 4, "CREATE TABLE u(x)"), JINN_OK);
    CHECK_INT(fsm.iface.snapshot_async(&fsm.iface, &bufs, &n), 0);
    CHECK(bufs[0].len == at_pin.len && memcmp(bufs[0].base, at_pin.data, at_pin.len) == 0);
    /* It restores, to the state at the pin. */
    CHECK_INT(unit_sql_fsm(&copy, d2), 0);
    CHECK_INT(jinn_fsm_decode(&copy, bufs[0].base, bufs[0].len), 0);
    CHECK(jinn_sql_get(&copy.sql, "app") != NULL);
    CHECK_INT(fsm.iface.snapshot_finalize(&fsm.iface, &bufs, &n), 0);
    CHECK(bufs == NULL && fsm.snap == NULL);
    /* A snapshot never finished (raft closed first) is released at close. */
    CHECK_INT(fsm.iface.snapshot(&fsm.iface, &bufs, &n), 0);
    raft_free(bufs);
    unit_sql_fsm_done(&copy, d2);
    jinn_wbuf_free(&at_pin);
    unit_sql_fsm_done(&fsm, d);
}

/* A '*' width or precision of INT64_MIN: negating it was undefined
 * behaviour in fn_printf, an abort on every replica (and at every replay)
 * in the sanitizer build. Now "too big", like any width past the limit. */
TEST(sql_printf_star_int64_min_is_too_big)
{
    static const char *const stmts[] = {
        "INSERT INTO t VALUES(printf('%*d', -9223372036854775808, 1))",
        "INSERT INTO t VALUES(printf('%.*d', -9223372036854775808, 1))",
        "INSERT INTO t VALUES(printf('%.*c', -9223372036854775808, 'a'))",
        "INSERT INTO t VALUES(format('%*.*s', -9223372036854775808, -9223372036854775808, 'a'))",
        "INSERT INTO t VALUES(printf('%*c', -1048577, 'a'))",
    };
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    sqlite3 *reader;
    sqlite3_stmt *stmt = NULL;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        CHECK_INT(exec1(&fsm, 2 + i, stmts[i]), JINN_ESQL);
        CHECK(strstr(fsm.sql.error, "too big") != NULL);
    }
    CHECK_INT(exec1(&fsm, 10, "INSERT INTO t VALUES(printf('%*d|%-*d', -3, 1, 3, 2))"), JINN_OK);
    CHECK_INT(count_rows(&fsm), 1);
    /* the same function on a query connection */
    reader = jinn_sql_open_reader(&fsm.sql, "app");
    CHECK(reader != NULL);
    CHECK_INT(sqlite3_prepare_v2(reader, "SELECT printf('%*d', -9223372036854775808, 1)", -1, &stmt,
                                 NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_step(stmt), SQLITE_TOOBIG);
    sqlite3_finalize(stmt);
    sqlite3_close_v2(reader);
    unit_sql_fsm_done(&fsm, d);
}

/* What a query thread allocates is capped: past the cap SQLite's
 * allocations fail (that query ends "out of memory"); what is freed, from
 * any thread, counts again; apply (outside a query) is not capped. */
TEST(sql_query_memory_is_capped_per_thread)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    sqlite3 *reader;
    sqlite3_stmt *stmt = NULL;
    void *hold, *more;
    CHECK_INT(unit_sql_fsm(&fsm, d), 0);
    CHECK_INT(exec1(&fsm, 1, "CREATE TABLE t(a)"), JINN_OK);
    reader = jinn_sql_open_reader(&fsm.sql, "app");
    CHECK(reader != NULL);
    jinn_sql_query_memory_begin();
    more = sqlite3_malloc64(JINN_SQL_QUERY_MEMORY_MAX + 1ull);
    CHECK(more == NULL);
    hold = sqlite3_malloc64(JINN_SQL_QUERY_MEMORY_MAX - 500000ull);
    CHECK(hold != NULL);
    more = sqlite3_malloc(1000000);
    CHECK(more == NULL);
    /* a statement that needs memory fails cleanly */
    if (sqlite3_prepare_v2(reader, "SELECT length(printf('%.*c', 900000, 'x'))", -1, &stmt,
                           NULL) == SQLITE_OK) {
        CHECK_INT(sqlite3_step(stmt), SQLITE_NOMEM);
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    sqlite3_free(hold);
    CHECK_INT(sqlite3_prepare_v2(reader, "SELECT length(printf('%.*c', 900000, 'x'))", -1, &stmt,
                                 NULL),
              SQLITE_OK);
    CHECK_INT(sqlite3_step(stmt), SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(stmt, 0), 900000);
    sqlite3_finalize(stmt);
    jinn_sql_query_memory_end();
    more = sqlite3_malloc64(JINN_SQL_QUERY_MEMORY_MAX + 1ull);
    CHECK(more != NULL);
    sqlite3_free(more);
    sqlite3_close_v2(reader);
    unit_sql_fsm_done(&fsm, d);
}

/* make fuzz (snapshot_decode): a snapshot naming one database twice passed
 * validation, wrote the twin's image over the first beside the live files,
 * and failed only after the swap (a fatal stop). Names must be strictly
 * increasing, as the encoder writes them: refused before any file moves. */
TEST(sql_restore_refuses_a_database_named_twice)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_wbuf one, two;
    struct jinn_rbuf r;
    uint32_t before;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(x)"), JINN_OK);
    CHECK_INT(exec1(&b, 1, "CREATE TABLE u(y)"), JINN_OK);
    before = checksum(&b);
    jinn_wbuf_init(&one);
    jinn_sql_encode(&a.sql, &one); /* u32 1, then "app" and its image */
    jinn_wbuf_init(&two);
    jinn_wbuf_put_u32(&two, 2);
    jinn_wbuf_put_raw(&two, one.data + 4, one.len - 4);
    jinn_wbuf_put_raw(&two, one.data + 4, one.len - 4);
    CHECK(!one.failed && !two.failed);
    jinn_rbuf_init(&r, two.data, two.len);
    CHECK_INT(jinn_sql_decode(&b.sql, &r), JINN_ECORRUPT);
    CHECK_INT(checksum(&b), before); /* the old database stays */
    jinn_wbuf_free(&one);
    jinn_wbuf_free(&two);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* R5 m2: the decoder took any name without '/' or NUL, so a hostile
 * source could name a database x.db.restore (or ".." parts). Names must be
 * the API's (1-64 of A-Z a-z 0-9 _ -): no snapshot can hold another. */
TEST(sql_restore_refuses_a_name_the_api_refuses)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    char long_name[JINN_SQL_DB_MAX + 2];
    const char *bad[] = {"x.db.restore", "a.b", "a b", "..", "caf\xc3\xa9", long_name};
    struct jinn_fsm a, b;
    struct jinn_wbuf one;
    uint32_t before;
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(x)"), JINN_OK);
    CHECK_INT(exec1(&b, 1, "CREATE TABLE u(y)"), JINN_OK);
    before = checksum(&b);
    jinn_wbuf_init(&one);
    jinn_sql_encode(&a.sql, &one); /* u32 1, then bytes "app" and its image */
    CHECK(!one.failed && one.len > 4 + 4 + 3);
    for (size_t i = 0; i <= sizeof bad / sizeof bad[0]; i++) {
        /* the last round: an allowed name, restored */
        const char *name = i < sizeof bad / sizeof bad[0] ? bad[i] : "ok-Name_9";
        struct jinn_wbuf w;
        struct jinn_rbuf r;
        jinn_wbuf_init(&w);
        jinn_wbuf_put_u32(&w, 1);
        jinn_wbuf_put_bytes(&w, name, strlen(name));
        jinn_wbuf_put_raw(&w, one.data + 4 + 4 + 3, one.len - 4 - 4 - 3);
        CHECK(!w.failed);
        jinn_rbuf_init(&r, w.data, w.len);
        if (i < sizeof bad / sizeof bad[0]) {
            CHECK_INT(jinn_sql_decode(&b.sql, &r), JINN_ECORRUPT);
            CHECK_INT(checksum(&b), before); /* the old database stays */
        } else {
            CHECK_INT(jinn_sql_decode(&b.sql, &r), 0);
        }
        jinn_wbuf_free(&w);
    }
    jinn_wbuf_free(&one);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}

/* A3 m5: a replica decodes a snapshot on a worker thread
 * (jinn_fsm_restore_prepare) while its loop serves the old state, then
 * swaps on the loop. Until the commit the old state is whole (databases
 * and memory); a prepared restore dropped instead leaves no file behind;
 * a refused one changes nothing. */
struct prepare_job {
    const struct jinn_fsm *fsm;
    const struct jinn_wbuf *w;
    struct jinn_fsm_restore *rs;
    int rv;
};

static void *prepare_thread(void *arg)
{
    struct prepare_job *j = arg;
    j->rv = jinn_fsm_restore_prepare(j->fsm, j->w->data, j->w->len, &j->rs);
    return NULL;
}

static int restore_files(const char *dir)
{
    char path[160];
    int n = 0;
    DIR *d;
    struct dirent *e;
    snprintf(path, sizeof path, "%s/sql", dir);
    d = opendir(path);
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        n += strstr(e->d_name, ".restore") != NULL;
    }
    closedir(d);
    return n;
}

TEST(sql_restore_prepared_on_a_thread_swaps_only_at_commit)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    struct prepare_job j;
    pthread_t t;
    uint32_t before;
    uint64_t time_before;
    CHECK_INT(unit_sql_fsm(&a, d1), 0);
    CHECK_INT(unit_sql_fsm(&b, d2), 0);
    CHECK_INT(exec1(&a, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&a, 2, "INSERT INTO t VALUES('new'), ('newer')"), JINN_OK);
    CHECK_INT(exec1(&b, 1, "CREATE TABLE t(a)"), JINN_OK);
    CHECK_INT(exec1(&b, 2, "INSERT INTO t VALUES('old')"), JINN_OK);
    before = checksum(&b);
    time_before = b.time_ms;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);

    /* Prepared on another thread: nothing of b changed, images wait. */
    memset(&j, 0, sizeof j);
    j.fsm = &b;
    j.w = &w;
    CHECK_INT(pthread_create(&t, NULL, prepare_thread, &j), 0);
    CHECK_INT(pthread_join(t, NULL), 0);
    CHECK_INT(j.rv, 0);
    CHECK(j.rs != NULL);
    CHECK_INT(checksum(&b), before);
    CHECK_INT(count_rows(&b), 1);
    CHECK(b.time_ms == time_before);
    CHECK_INT(restore_files(d2), 1);
    /* Dropped instead of committed: the old state, no image left. */
    jinn_fsm_restore_free(j.rs);
    CHECK_INT(restore_files(d2), 0);
    CHECK_INT(checksum(&b), before);
    CHECK_INT(exec1(&b, 3, "INSERT INTO t VALUES('still works')"), JINN_OK);
    before = checksum(&b);

    /* Refused (corrupt): nothing written, nothing changed. */
    w.data[w.len - 40] ^= 0xff;
    j.rs = (struct jinn_fsm_restore *)&j; /* must be reset */
    CHECK(jinn_fsm_restore_prepare(&b, w.data, w.len, &j.rs) != 0);
    CHECK(j.rs == NULL);
    CHECK_INT(restore_files(d2), 0);
    CHECK_INT(checksum(&b), before);
    w.data[w.len - 40] ^= 0xff;

    /* Prepared, then committed: a's state; the replaced one freed after. */
    CHECK_INT(pthread_create(&t, NULL, prepare_thread, &j), 0);
    CHECK_INT(pthread_join(t, NULL), 0);
    CHECK_INT(j.rv, 0);
    jinn_fsm_restore_commit(&b, j.rs);
    jinn_fsm_restore_free(j.rs);
    CHECK_INT(restore_files(d2), 0);
    CHECK_INT(checksum(&b), checksum(&a));
    CHECK(b.time_ms == a.time_ms);
    CHECK_INT(count_rows(&b), 2);
    /* Both go on identically. */
    CHECK_INT(exec1(&a, 4, "INSERT INTO t VALUES('after')"), JINN_OK);
    CHECK_INT(exec1(&b, 4, "INSERT INTO t VALUES('after')"), JINN_OK);
    CHECK_INT(checksum(&b), checksum(&a));
    jinn_wbuf_free(&w);
    unit_sql_fsm_done(&a, d1);
    unit_sql_fsm_done(&b, d2);
}
