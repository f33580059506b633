/* sql_diff.c - differential fuzzer for replicated SQL (libFuzzer).
 *
 * The input is a program of SQL transactions built from a small grammar:
 * tables, indexes, views, triggers, fts5 and rtree tables, every allowed
 * function (random(), randomblob(), 'now', 'localtime', printf, json...),
 * rowid 2^63-1 followed by inserts that need a random rowid, runaway CTEs
 * against a small step budget, refused statements (TEMP, PRAGMA,
 * changes()), and raw bytes as SQL. Each transaction is applied through
 * the FSM to two replicas at the same index and time; between steps the
 * second may be snapshotted and restored into a fresh state machine (new
 * files, new connections, a cold page cache). After every step both must
 * have the same result (code, message, per-statement results) and the
 * same content: every database's schema and rows, read by a plain
 * connection. Nothing may crash, leak or stop the node (a fatal apply
 * exits, which libFuzzer reports).
 *
 * The Makefile's fuzz rules build it like every tests/fuzz target: with
 * clang-14 -fsanitize=fuzzer,address,undefined, linked with the library
 * sources (all of src/ but main.c); corpus in tests/fuzz/corpus/sql_diff. */
#include <ftw.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: sql_diff check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define MAX_STEPS 48

static char dirs[3][64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_dirs(void)
{
    for (int i = 0; i < 3; i++) {
        nftw(dirs[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR);
    json_set_alloc_funcs(jinn_malloc, jinn_free);
    for (int i = 0; i < 3; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/jinn-sqldiff-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        CHECK(mkdtemp(dirs[i]) != NULL);
    }
    atexit(rm_dirs);
    return 0;
}

/* ---- the grammar ------------------------------------------------------------ */

struct prog {
    const uint8_t *p;
    size_t left;
};

static unsigned next(struct prog *g)
{
    if (g->left == 0) {
        return 0;
    }
    g->left--;
    return *g->p++;
}

#define PICK(g, arr) (arr)[next(g) % (sizeof(arr) / sizeof((arr)[0]))]

static const char *const exprs[] = {
    "random()", "randomblob(%u)", "hex(randomblob(4))", "datetime('now')",
    "datetime('now', 'localtime')", "datetime(%u, 'unixepoch', 'utc')", "julianday('now')",
    "unixepoch('now')", "CURRENT_TIMESTAMP", "strftime('%%Y %%j', 'now')",
    "printf('%%d-%%s-%%5.2f', %u, 'x', 1.5)", "format('%%.3c|%%-4s|', 'é', 'ab')",
    "printf('%%.*c', %u, 'z')", "instr('hello', 'l')", "json_object('k', %u)",
    "json_extract('{\"a\":[1,%u]}', '$.a[1]')", "json_array(%u, 'x') ->> '$[0]'", "upper('abc')",
    "replace('aaa', 'a', 'bc')", "abs(-%u)", "%u", "'t%u'", "NULL", "zeroblob(%u)",
    "(SELECT count(*) FROM t%u)", "(SELECT max(rowid) FROM t%u)", "sqrt(%u)",
    "round(%u / 7.0, 2)", "length(hex(zeroblob(%u)))", "substr('abcdef', %u %% 6)",
    "quote(x'00ff')", "typeof(random())", "iif(random() > 0, 1, 2)", "unicode('é')",
    "trunc(%u / 3.0)", "coalesce(NULL, %u)", "likely(%u)", "char(65 + %u %% 26)",
};

static const char *const stmts[] = {
    "CREATE TABLE IF NOT EXISTS t%u(a, b, c)",
    "CREATE TABLE IF NOT EXISTS t%u(id INTEGER PRIMARY KEY, a, b, c)",
    "CREATE TABLE IF NOT EXISTS t%u(a DEFAULT ($E), b DEFAULT CURRENT_TIMESTAMP, c)",
    "CREATE TABLE IF NOT EXISTS t%u(a DEFAULT (total_changes()), b, c)",
    "INSERT INTO t%u DEFAULT VALUES",
    "CREATE INDEX IF NOT EXISTS i%u ON t%u(b)",
    "CREATE VIEW IF NOT EXISTS v%u AS SELECT a, $E FROM t%u",
    "CREATE TRIGGER IF NOT EXISTS tr%u AFTER INSERT ON t%u BEGIN INSERT INTO t%u(a, b) "
    "VALUES(new.a, $E); END",
    "INSERT INTO t%u(a, b, c) VALUES($E, $E, $E)",
    "INSERT INTO t%u(a, b, c) VALUES($E, $E, $E), ($E, $E, $E)",
    "INSERT INTO t%u(rowid, a) VALUES(9223372036854775807, $E)",
    "INSERT INTO t%u(a, b, c) SELECT $E, a, b FROM t%u LIMIT 7",
    "INSERT INTO t%u(a) SELECT a FROM v%u LIMIT 3",
    "UPDATE t%u SET b = $E WHERE rowid %% 3 = %u",
    "DELETE FROM t%u WHERE rowid %% 4 = %u",
    "CREATE VIRTUAL TABLE IF NOT EXISTS f%u USING fts5(body)",
    "INSERT INTO f%u(body) VALUES('alpha beta ' || $E)",
    "INSERT INTO t%u(a, b) SELECT rowid, bm25(f%u) FROM f%u WHERE f%u MATCH 'alpha'",
    "CREATE VIRTUAL TABLE IF NOT EXISTS r%u USING rtree(id, x0, x1)",
    "INSERT INTO r%u VALUES(NULL, %u, %u + 0.5)",
    "INSERT INTO t%u(a) SELECT id FROM r%u WHERE x0 < %u",
    "INSERT INTO t%u(a) SELECT value FROM json_each(json_array($E, $E))",
    "DROP TABLE IF EXISTS t%u",
    "DROP VIEW IF EXISTS v%u",
    "DROP TRIGGER IF EXISTS tr%u",
    "ALTER TABLE t%u ADD COLUMN d%u DEFAULT 7",
    "ALTER TABLE t%u RENAME TO t%u",
    "ALTER TABLE t%u RENAME COLUMN b TO b%u",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %u * 500) "
    "INSERT INTO t%u(a) SELECT x FROM c",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
    "INSERT INTO t%u(a) SELECT length(replace(printf('%%.*c', 200000, 'a'), 'a', 'bc')) FROM c",
    "SELECT count(*), $E FROM t%u",
    "INSERT INTO t%u(a, b) VALUES(rtrim(printf('%%.*c', 2000000, 'y')), 1)",
    /* refused, the same way everywhere */
    "CREATE TEMP TABLE tt%u(a)",
    "INSERT INTO t%u(a) SELECT changes() + total_changes() + last_insert_rowid()",
    "PRAGMA user_version = %u",
    "ATTACH 'x%u.db' AS x",
    "SELECT fts3_tokenizer('simple')",
    "VACUUM",
    "$RAW",
};

/* Appends a statement (JSON-escaped later by jansson) to out. */
static void gen_expr(struct prog *g, char *out, size_t cap)
{
    snprintf(out, cap, PICK(g, exprs), next(g) % 40);
}

static void gen_stmt(struct prog *g, char *out, size_t cap)
{
    const char *t = PICK(g, stmts);
    size_t n = 0;
    if (strcmp(t, "$RAW") == 0) {
        unsigned len = next(g) % 48;
        for (unsigned i = 0; i < len && n + 1 < cap; i++) {
            unsigned char ch = (unsigned char)next(g);
            out[n++] = (char)(ch == 0 ? ' ' : ch);
        }
        out[n] = '\0';
        return;
    }
    while (*t != '\0' && n + 64 < cap) {
        if (t[0] == '$' && t[1] == 'E') {
            char e[128];
            gen_expr(g, e, sizeof e);
            n += (size_t)snprintf(out + n, cap - n, "%s", e);
            t += 2;
        } else if (t[0] == '%' && t[1] == 'u') {
            n += (size_t)snprintf(out + n, cap - n, "%u", next(g) % 3);
            t += 2;
        } else if (t[0] == '%' && t[1] == '%') {
            out[n++] = '%';
            t += 2;
        } else {
            out[n++] = *t++;
        }
    }
    out[n] = '\0';
}

/* ---- replicas ----------------------------------------------------------------- */

struct replica {
    struct jinn_fsm fsm;
    int dir;
};

static void open_replica(struct replica *r, int dir)
{
    jinn_fsm_init(&r->fsm);
    r->dir = dir;
    CHECK(jinn_sql_set_dir(&r->fsm.sql, dirs[dir]) == 0);
}

/* Every database's schema and rows, canonical, through a plain connection
 * (no jinn authorizer, no jinn functions). */
static void dump(const struct replica *r, struct jinn_wbuf *w)
{
    for (const struct jinn_sql_db *db = jinn_sql_next(&r->fsm.sql, NULL); db;
         db = jinn_sql_next(&r->fsm.sql, db)) {
        char path[160];
        sqlite3 *conn = NULL;
        sqlite3_stmt *tables = NULL;
        snprintf(path, sizeof path, "%s/sql/%s.db", dirs[r->dir], db->name);
        CHECK(sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
        jinn_wbuf_put_str(w, db->name);
        CHECK(sqlite3_prepare_v2(conn,
                                 "SELECT type, name, ifnull(sql, ''), "
                                 "(SELECT user_version FROM pragma_user_version) "
                                 "FROM sqlite_schema ORDER BY type, name",
                                 -1, &tables, NULL) == SQLITE_OK);
        while (sqlite3_step(tables) == SQLITE_ROW) {
            const char *type = (const char *)sqlite3_column_text(tables, 0);
            const char *name = (const char *)sqlite3_column_text(tables, 1);
            const char *sql = (const char *)sqlite3_column_text(tables, 2);
            jinn_wbuf_put_str(w, type);
            jinn_wbuf_put_str(w, name);
            jinn_wbuf_put_str(w, sql);
            jinn_wbuf_put_u64(w, (uint64_t)sqlite3_column_int64(tables, 3));
            if (strcmp(type, "table") == 0 && strncmp(sql, "CREATE VIRTUAL", 14) != 0) {
                char *q = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY rowid", name);
                sqlite3_stmt *rows = NULL;
                if (sqlite3_prepare_v2(conn, q, -1, &rows, NULL) != SQLITE_OK) {
                    sqlite3_finalize(rows);
                    sqlite3_free(q);
                    q = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY 1", name);
                    CHECK(sqlite3_prepare_v2(conn, q, -1, &rows, NULL) == SQLITE_OK);
                }
                while (sqlite3_step(rows) == SQLITE_ROW) {
                    for (int i = 0; i < sqlite3_column_count(rows); i++) {
                        const void *v = sqlite3_column_blob(rows, i);
                        jinn_wbuf_put_u8(w, (uint8_t)sqlite3_column_type(rows, i));
                        jinn_wbuf_put_bytes(w, v, (size_t)sqlite3_column_bytes(rows, i));
                    }
                }
                sqlite3_finalize(rows);
                sqlite3_free(q);
            }
        }
        sqlite3_finalize(tables);
        sqlite3_close(conn);
    }
}

static void same_content(const struct replica *a, const struct replica *b)
{
    struct jinn_wbuf wa, wb;
    jinn_wbuf_init(&wa);
    jinn_wbuf_init(&wb);
    dump(a, &wa);
    dump(b, &wb);
    CHECK(!wa.failed && !wb.failed);
    CHECK(wa.len == wb.len && (wa.len == 0 || memcmp(wa.data, wb.data, wa.len) == 0));
    jinn_wbuf_free(&wa);
    jinn_wbuf_free(&wb);
}

/* b := a fresh state machine restored from b's snapshot, in the spare
 * directory. */
static void restore(struct replica *b, int *spare)
{
    struct jinn_wbuf w;
    struct replica fresh;
    int old = b->dir;
    jinn_wbuf_init(&w);
    CHECK(jinn_fsm_encode(&b->fsm, &w) == 0);
    open_replica(&fresh, *spare);
    CHECK(jinn_fsm_decode(&fresh.fsm, w.data, w.len) == 0);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&b->fsm);
    *b = fresh;
    *spare = old;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const db_names[] = {"app", "other"};
    static const uint64_t budgets[] = {2000, 50000, 400000};
    struct prog g = {data, size};
    struct replica a, b;
    int spare = 2;
    uint64_t index = 1, time_ms = 1700000000000;

    open_replica(&a, 0);
    open_replica(&b, 1);
    for (int step = 0; step < MAX_STEPS && g.left > 0; step++) {
        unsigned op = next(&g);
        if (op % 8 == 7) {
            restore(&b, &spare);
        } else {
            json_t *doc = json_object(), *list = json_array();
            struct jinn_cmd c;
            const struct jinn_result *ra, *rb;
            char *text, *reply_a;
            char err_a[sizeof a.fsm.sql.error];
            int code_a;
            unsigned n = 1 + next(&g) % 3;
            for (unsigned i = 0; i < n; i++) {
                char sql[1024];
                gen_stmt(&g, sql, sizeof sql);
                json_array_append_new(list, json_pack("{s:s}", "sql", sql));
            }
            json_object_set_new(doc, "statements", list);
            text = json_dumps(doc, JSON_COMPACT);
            json_decref(doc);
            CHECK(text != NULL);
            memset(&c, 0, sizeof c);
            c.type = JINN_CMD_SQL_EXEC;
            c.time_ms = time_ms;
            c.sql.db.p = (const uint8_t *)PICK(&g, db_names);
            c.sql.db.len = strlen((const char *)c.sql.db.p);
            c.sql.statements.p = (const uint8_t *)text;
            c.sql.statements.len = strlen(text);
            c.sql.step_budget = PICK(&g, budgets);
            c.sql.sqlite_version = (uint32_t)sqlite3_libversion_number();
            {
                struct jinn_wbuf w;
                jinn_wbuf_init(&w);
                CHECK(jinn_cmd_encode(&c, &w) == 0);
                ra = jinn_fsm_apply_buf(&a.fsm, index, w.data, w.len);
                code_a = ra->code;
                reply_a = a.fsm.sql.reply ? jinn_strdup(a.fsm.sql.reply) : NULL;
                memcpy(err_a, a.fsm.sql.error, sizeof err_a);
                rb = jinn_fsm_apply_buf(&b.fsm, index, w.data, w.len);
                jinn_wbuf_free(&w);
            }
            CHECK(code_a == rb->code);
            CHECK(strcmp(err_a, b.fsm.sql.error) == 0);
            CHECK((reply_a == NULL) == (b.fsm.sql.reply == NULL));
            CHECK(reply_a == NULL || strcmp(reply_a, b.fsm.sql.reply) == 0);
            jinn_free(reply_a);
            jinn_free(text);
            index++;
            time_ms += 1 + next(&g) * 1000u;
        }
        same_content(&a, &b);
    }
    jinn_fsm_close(&a.fsm);
    jinn_fsm_close(&b.fsm);
    return 0;
}
