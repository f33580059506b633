/* digest.h - a digest of the whole replicated state at one log index.
 *
 * Replicas that applied the same log must hold the same state; the digest
 * lets them prove it to each other (the CHECK command, api/check.c). It is
 * split into sections so a mismatch says what differs:
 *
 *   meta     cluster time
 *   nodes    the node directory      (jinn_nodes_encode)
 *   kv       the key-value store     (jinn_kv_encode)
 *   locks    locks and their lines   (jinn_locks_encode)
 *   queues   queues and messages     (jinn_queues_encode)
 *   functions the function registry  (jinn_fns_encode, modules by sha256)
 *   jobs     kept job results, cron  (jinn_jobs_encode)
 *   sql:DB   one per SQL database, over its CONTENT, not its image
 *
 * The in-memory sections hash the snapshot encoding, which is canonical
 * (ordered, byte-identical across replicas). A SQL database's image is not:
 * its header's change counter and version-valid-for, the free list and the
 * WAL differ after different checkpoint and restore histories with the same
 * rows. So a database is hashed as: every sqlite_schema row (type, name,
 * tbl_name, sql) in name order, then every table's rows in rowid order
 * (WITHOUT ROWID tables in primary-key order), each value with a type tag
 * (integers as 8 bytes, reals as their IEEE bits, text and blobs with a
 * length). The hash is FNV-1a 64: not cryptographic — it finds accidents
 * (bugs, disks, operators), not an attacker who controls a replica. */
#ifndef JINN_DIGEST_H
#define JINN_DIGEST_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fsm/cmd.h"
#include "fsm/sql.h"

#define JINN_DIGEST_NAME_MAX (4 + JINN_SQL_DB_MAX + 1) /* "sql:" + db name + NUL */
#define JINN_DIGEST_SECTIONS_MAX (7 + JINN_SQL_DBS_MAX)
#define JINN_FNV_OFFSET UINT64_C(0xcbf29ce484222325)

struct jinn_fsm;

struct jinn_digest_section {
    char name[JINN_DIGEST_NAME_MAX];
    uint64_t hash;
};

struct jinn_digest {
    uint64_t index; /* the log index the state was taken at */
    unsigned n;
    struct jinn_digest_section sections[JINN_DIGEST_SECTIONS_MAX];
    uint64_t total; /* over every section's name and hash (jinn_digest_finish) */
};

/* FNV-1a 64 of p[0..n) continuing from h (start with JINN_FNV_OFFSET). */
uint64_t jinn_fnv1a64(uint64_t h, const void *p, size_t n);

/* The in-memory state, encoded as a snapshot encodes it. Taking it is a
 * copy (fast, on the loop); hashing it (~5 ns a byte) can then run on any
 * thread while apply goes on. */
#define JINN_DIGEST_CAPTURED 7 /* nodes, kv, locks, queues, functions, jobs, auth */
struct jinn_digest_capture {
    uint64_t time_ms;
    struct jinn_wbuf sections[JINN_DIGEST_CAPTURED];
};

/* 0 or JINN_ENOMEM; free with jinn_digest_capture_free either way. */
int jinn_digest_capture(const struct jinn_fsm *fsm, struct jinn_digest_capture *cap);
void jinn_digest_capture_free(struct jinn_digest_capture *cap);
/* Resets d to the in-memory sections (meta, nodes, kv, locks, queues,
 * functions, jobs). */
void jinn_digest_from_capture(const struct jinn_digest_capture *cap, uint64_t index,
                              struct jinn_digest *d);

/* Both at once: 0 or JINN_ENOMEM. */
int jinn_digest_memory(const struct jinn_fsm *fsm, uint64_t index, struct jinn_digest *d);

/* Content hash of the database open on conn (see above). Runs inside the
 * caller's read transaction when there is one, else in its own. Safe on any
 * thread that owns conn. 0, or JINN_EIO with a message in err. */
int jinn_digest_sql(sqlite3 *conn, uint64_t *out, char *err, size_t err_len);

/* Appends section "sql:NAME" with hash. 0 or JINN_EFULL. */
int jinn_digest_add(struct jinn_digest *d, const char *name, uint64_t hash);

/* Computes d->total from the sections, in order. */
void jinn_digest_finish(struct jinn_digest *d);

/* The redacted digest (an edge replica's view, fsm/auth.h): the "auth"
 * section hashed with R in place of the internal key, every other section
 * as it is. Voters digest their own state as before (mixed versions compare
 * that) and publish this one besides, for edge replicas to compare with.
 * From cap (any thread): the auth section's redacted hash into *auth (its
 * plain hash when it holds no key; *present false when there is no auth
 * section). 0 or JINN_EINTERNAL. */
int jinn_digest_capture_auth_redacted(const struct jinn_digest_capture *cap, bool *present,
                                      uint64_t *auth);
/* d's total with the "auth" section's hash taken as auth (d unchanged;
 * d->total when it has no auth section). */
uint64_t jinn_digest_total_with_auth(const struct jinn_digest *d, uint64_t auth);

/* The section named name, or NULL. */
const struct jinn_digest_section *jinn_digest_find(const struct jinn_digest *d,
                                                   const char *name);

#endif
