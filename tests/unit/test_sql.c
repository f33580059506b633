/* test_sql.c - replicated SQLite: replicas stay byte-identical through
 * nondeterministic SQL, failed transactions change nothing, snapshots carry
 * whole databases. */
#include <stdlib.h>
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

static int make_fsm(struct jinn_fsm *fsm, char *dir)
{
    jinn_fsm_init(fsm);
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    return jinn_sql_set_dir(&fsm->sql, dir);
}

/* Closes the FSM and removes its scratch directory. */
static void done(struct jinn_fsm *fsm, const char *dir)
{
    char cmd[128];
    jinn_fsm_close(fsm);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "  could not remove %s\n", dir);
    }
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
    CHECK_INT(make_fsm(&a, d1), 0);
    CHECK_INT(make_fsm(&b, d2), 0);
    for (uint64_t i = 0; i < 3; i++) {
        CHECK_INT(exec(&a, 10 + i, 1000000 + i, workload[i], 1000000)->code, JINN_OK);
        CHECK_INT(exec(&b, 10 + i, 1000000 + i, workload[i], 1000000)->code, JINN_OK);
    }
    CHECK(checksum(&a) != 0);
    CHECK_INT(checksum(&a), checksum(&b));
    /* A different index (another log) gives other random values. */
    done(&b, d2);
    char d3[] = "/tmp/jinn-sql-XXXXXX";
    CHECK_INT(make_fsm(&b, d3), 0);
    CHECK_INT(exec(&b, 10, 1000000, workload[0], 1000000)->code, JINN_OK);
    CHECK_INT(exec(&b, 99, 1000001, workload[1], 1000000)->code, JINN_OK);
    CHECK_INT(exec(&b, 12, 1000002, workload[2], 1000000)->code, JINN_OK);
    CHECK(checksum(&a) != checksum(&b));
    done(&a, d1);
    done(&b, d3);
}

TEST(sql_failed_transaction_changes_nothing)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    const struct jinn_result *res;
    uint32_t before;
    CHECK_INT(make_fsm(&fsm, d), 0);
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
    done(&fsm, d);
}

TEST(sql_snapshot_restores_databases)
{
    char d1[] = "/tmp/jinn-sql-XXXXXX", d2[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    CHECK_INT(make_fsm(&a, d1), 0);
    CHECK_INT(make_fsm(&b, d2), 0);
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
    done(&a, d1);
    done(&b, d2);
}

TEST(sql_fenced_exec_runs_only_under_the_lock)
{
    char d[] = "/tmp/jinn-sql-XXXXXX";
    struct jinn_fsm fsm;
    struct jinn_cmd c;
    uint32_t before;
    CHECK_INT(make_fsm(&fsm, d), 0);
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
    done(&fsm, d);
}
