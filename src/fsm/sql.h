/* sql.h - replicated SQLite databases.
 *
 * Each database is a SQLite file under data_dir/sql/, fed only by SQL_EXEC
 * commands from the log: every replica runs the same statements in the same
 * order in one transaction each. The files are derived state: they are
 * rebuilt from the snapshot and the log at every start.
 *
 * Determinism: the statements see cluster time (date('now'),
 * CURRENT_TIMESTAMP, ...) through a VFS whose clock is the entry's time,
 * random() and randomblob() are replaced by generators seeded with the raft
 * index, and runaway statements are stopped after a fixed number of VM
 * steps (the same count on every replica), never by a wall clock.
 *
 * Databases use WAL with synchronous=OFF: durability comes from the raft log,
 * and readers on other threads (jinn_sql_open_reader) never block apply. */
#ifndef JINN_SQL_H
#define JINN_SQL_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "fsm/cmd.h"
#include "tree.h"

#define JINN_SQL_DBS_MAX 256
#define JINN_SQL_STATEMENTS_MAX 100
/* VM steps one exec may run: measured ~20 ms on the loop (see
 * docs/design.md); carried in the entry, so every replica stops at the
 * same step. */
#define JINN_SQL_DEFAULT_STEPS 400000u
/* The largest string, blob or row (SQLITE_LIMIT_LENGTH) and the longest
 * statement text: single-step functions (printf, replace, zeroblob) fail
 * fast with "string or blob too big" instead of running for seconds. */
#define JINN_SQL_VALUE_MAX (1 << 20)
#define JINN_SQL_STATEMENT_MAX (256 << 10)
/* What one running query may hold in SQLite's memory (sorts, DISTINCT,
 * materialized subqueries: temp_store is MEMORY); past it, "out of
 * memory" for that query only. */
#define JINN_SQL_QUERY_MEMORY_MAX (256u << 20)
/* max_page_count of every database (4 KiB pages: 1 GiB). Reaching it is a
 * deterministic SQLITE_FULL, the same result on every replica. */
#define JINN_SQL_DB_PAGES_MAX 262144u
/* Environmental failures during apply: busy wait per attempt, attempts
 * before the node stops. */
#define JINN_SQL_BUSY_WAIT_MS 100
#define JINN_SQL_APPLY_ATTEMPTS 3

struct jinn_sql_db {
    struct jinn_tree_node by_name;
    char name[JINN_SQL_DB_MAX + 1];
    sqlite3 *conn; /* the apply connection; loop thread only */
    uint32_t version; /* SQLite that wrote it (PRAGMA user_version); 0: new */
};

struct jinn_sql {
    char *dir; /* owned; NULL until jinn_sql_set_dir */
    uint64_t generation; /* bumped when files are replaced (restore): stale readers */
    struct jinn_tree by_name;
    /* The outcome of the last exec, for its proposer (valid during apply):
     * a JSON array of per-statement results, or the SQLite error message. */
    char *reply;
    char error[512];
};

void jinn_sql_init(struct jinn_sql *s);
void jinn_sql_clear(struct jinn_sql *s);
/* Sets the directory for database files (copied) and removes stale files
 * from an earlier run. Returns 0 or JINN_EIO. */
int jinn_sql_set_dir(struct jinn_sql *s, const char *data_dir);

/* Applies SQL_EXEC. JINN_OK (s->reply set), JINN_ESQL (s->error set; the
 * database is unchanged), JINN_EFULL, JINN_ECORRUPT, JINN_EIO. */
int jinn_sql_exec(struct jinn_sql *s, uint64_t index, uint64_t now, const struct jinn_cmd *c);

const struct jinn_sql_db *jinn_sql_get(const struct jinn_sql *s, const char *name);
const struct jinn_sql_db *jinn_sql_next(const struct jinn_sql *s, const struct jinn_sql_db *after);

/* Opens a read-only connection to db for another thread (caller closes),
 * with the query authorizer and limits. NULL if the database does not
 * exist. */
sqlite3 *jinn_sql_open_reader(const struct jinn_sql *s, const char *name);
/* Around a query on a worker thread: what SQLite allocates on this thread
 * in between is capped at JINN_SQL_QUERY_MEMORY_MAX. */
void jinn_sql_query_memory_begin(void);
void jinn_sql_query_memory_end(void);

/* The same, for jinn's own reads (content digest, image checksum): no
 * authorizer. Never hand it to client SQL. */
sqlite3 *jinn_sql_open_internal_reader(const struct jinn_sql *s, const char *name);

/* False if database name was written by another SQLite version than this
 * node's library (*recorded says which); such a node refuses SQL on it. */
bool jinn_sql_version_ok(const struct jinn_sql *s, const char *name, uint32_t *recorded);

/* True if nothing but blanks, ';' and comments follow a statement. */
bool jinn_sql_tail_blank(const char *tail);

/* Test hook: the next `writes` file writes during apply fail with
 * write_code, the next `opens` file opens with SQLITE_CANTOPEN. */
void jinn_sql_test_fault(int write_code, int writes, int opens);
/* Test hook: bytes charged to the step budget by the last exec. */
uint64_t jinn_sql_test_metered(void);

/* CRC-32 of the database image: replicas that applied the same log agree. */
uint32_t jinn_sql_checksum(const struct jinn_sql_db *db, uint64_t *size);

void jinn_sql_encode(const struct jinn_sql *s, struct jinn_wbuf *w);

/* The SQL section of a snapshot taken off the loop, in two steps. On the
 * loop, jinn_sql_pin opens a reader per database whose WAL read
 * transaction pins the state as of now (databases without files are
 * serialised at once); on any thread, jinn_sql_pin_encode appends exactly
 * what jinn_sql_encode would have appended at pin time. Free with
 * jinn_sql_pin_free (any thread). */
struct jinn_sql_pin;
int jinn_sql_pin(const struct jinn_sql *s, struct jinn_sql_pin **out);
void jinn_sql_pin_encode(struct jinn_sql_pin *p, struct jinn_wbuf *w);
void jinn_sql_pin_free(struct jinn_sql_pin *p);
int jinn_sql_decode(struct jinn_sql *s, struct jinn_rbuf *r);
/* jinn_sql_decode in two steps. restore_write validates the section and
 * writes every image beside the live files (NAME.db.restore), reading only
 * s->dir: any thread, while the loop serves the live databases. On error
 * nothing is left behind and *out is NULL. restore_swap (the loop) closes
 * the live databases and renames the images over them; a failure there
 * stops the process (jinn_fsm_fatal), as jinn_sql_decode does.
 * restore_free (any thread) removes images never swapped in. */
struct jinn_sql_restore;
int jinn_sql_restore_write(const struct jinn_sql *s, struct jinn_rbuf *r,
                           struct jinn_sql_restore **out);
void jinn_sql_restore_swap(struct jinn_sql *s, struct jinn_sql_restore *rs);
void jinn_sql_restore_free(struct jinn_sql_restore *rs);

/* Binds JSON params (array: positional; object: named) to stmt. Returns 0
 * or writes a message into err. Shared with the query path. */
struct json_t;
int jinn_sql_bind(sqlite3_stmt *stmt, struct json_t *params, char *err, size_t err_len);
/* The JSON form of column i of the current row (blobs as {"base64": ...}). */
struct json_t *jinn_sql_column_json(sqlite3_stmt *stmt, int i);

/* A database name the API and snapshots accept: 1 to JINN_SQL_DB_MAX of
 * A-Z a-z 0-9 _ - (so never a path, and never one of the files beside a
 * database: NAME.db-wal, NAME.db.restore). */
bool jinn_sql_name_allowed(const void *name, size_t len);

#endif
