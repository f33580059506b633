/* digest.c - see digest.h. */
#include "fsm/digest.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/auth.h"
#include "fsm/fsm.h"

#define FNV_PRIME UINT64_C(0x100000001b3)

uint64_t jinn_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t hash_u64(uint64_t h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (8 * i));
    }
    return jinn_fnv1a64(h, b, 8);
}

/* A length-prefixed string, so "ab"+"c" and "a"+"bc" differ. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    return jinn_fnv1a64(hash_u64(h, n), p, n);
}

int jinn_digest_add(struct jinn_digest *d, const char *name, uint64_t hash)
{
    struct jinn_digest_section *s;
    if (d->n >= JINN_DIGEST_SECTIONS_MAX) {
        return JINN_EFULL;
    }
    s = &d->sections[d->n++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->hash = hash;
    return 0;
}

static uint64_t total_with(const struct jinn_digest *d, const char *name, uint64_t hash);

void jinn_digest_finish(struct jinn_digest *d)
{
    d->total = total_with(d, NULL, 0);
}

static uint64_t total_with(const struct jinn_digest *d, const char *name, uint64_t hash)
{
    uint64_t h = JINN_FNV_OFFSET;
    for (unsigned i = 0; i < d->n; i++) {
        bool it = name != NULL && strcmp(d->sections[i].name, name) == 0;
        h = hash_bytes(h, d->sections[i].name, strlen(d->sections[i].name));
        h = hash_u64(h, it ? hash : d->sections[i].hash);
    }
    return h;
}

uint64_t jinn_digest_total_with_auth(const struct jinn_digest *d, uint64_t auth)
{
    return total_with(d, "auth", auth);
}

const struct jinn_digest_section *jinn_digest_find(const struct jinn_digest *d,
                                                   const char *name)
{
    for (unsigned i = 0; i < d->n; i++) {
        if (strcmp(d->sections[i].name, name) == 0) {
            return &d->sections[i];
        }
    }
    return NULL;
}

static const char *const captured_names[JINN_DIGEST_CAPTURED] = {
    "nodes", "kv", "locks", "queues", "functions", "jobs", "auth"};

int jinn_digest_capture(const struct jinn_fsm *fsm, struct jinn_digest_capture *cap)
{
    cap->time_ms = fsm->time_ms;
    for (int i = 0; i < JINN_DIGEST_CAPTURED; i++) {
        jinn_wbuf_init(&cap->sections[i]);
    }
    jinn_nodes_encode(&fsm->nodes, &cap->sections[0]);
    jinn_kv_encode(&fsm->kv, &cap->sections[1]);
    jinn_locks_encode(&fsm->locks, &cap->sections[2]);
    /* Without leased_ms, the signing policy only when set: what every
     * replica agrees on, and a cluster that uses neither jobs nor
     * signing digests as a build from before them. */
    jinn_queues_encode_digest(&fsm->queues, &cap->sections[3]);
    /* Module bytes by their sha256 (computed from the bytes at apply): a
     * check copies this on the loop, and modules would be the bulk of it. */
    jinn_fns_encode_digest(&fsm->fns, &cap->sections[4]);
    /* Left out while empty, so replicas of a build from before the jobs
     * section agree with this one until jobs are used (which such a build
     * could not apply anyway). */
    if (fsm->jobs.results.count != 0 || fsm->jobs.crons.count != 0) {
        jinn_jobs_encode(&fsm->jobs, &cap->sections[5]);
    }
    /* Tokens and function scopes; left out (an empty capture, no section)
     * while the table never held anything, so a cluster without tokens
     * digests the same as on a build from before them (rolling upgrades). */
    if (fsm->auth.has_key || fsm->auth.n > 0 || fsm->auth.n_scopes > 0) {
        jinn_auth_encode(&fsm->auth, &cap->sections[6]);
    }
    for (int i = 0; i < JINN_DIGEST_CAPTURED; i++) {
        if (cap->sections[i].failed) {
            return JINN_ENOMEM;
        }
    }
    return 0;
}

void jinn_digest_capture_free(struct jinn_digest_capture *cap)
{
    for (int i = 0; i < JINN_DIGEST_CAPTURED; i++) {
        jinn_wbuf_free(&cap->sections[i]);
    }
}

void jinn_digest_from_capture(const struct jinn_digest_capture *cap, uint64_t index,
                              struct jinn_digest *d)
{
    d->index = index;
    d->n = 0;
    d->total = 0;
    jinn_digest_add(d, "meta", hash_u64(JINN_FNV_OFFSET, cap->time_ms));
    for (int i = 0; i < JINN_DIGEST_CAPTURED; i++) {
        const struct jinn_wbuf *w = &cap->sections[i];
        if ((i == 5 || i == 6) && w->len == 0) {
            continue; /* no jobs state, auth never used (see jinn_digest_capture) */
        }
        jinn_digest_add(d, captured_names[i], jinn_fnv1a64(JINN_FNV_OFFSET, w->data, w->len));
    }
}

int jinn_digest_capture_auth_redacted(const struct jinn_digest_capture *cap, bool *present,
                                      uint64_t *auth)
{
    const struct jinn_wbuf *w = &cap->sections[6];
    const size_t k = JINN_AUTH_SECTION_KEY_OFFSET;
    uint8_t r[JINN_AUTH_KEY_LEN];
    uint64_t h;

    *present = w->len != 0;
    if (w->len < k + JINN_AUTH_KEY_LEN || w->data[0] != 1) {
        *auth = jinn_fnv1a64(JINN_FNV_OFFSET, w->data, w->len);
        return 0;
    }
    /* The same bytes as jinn_auth_encode_redacted would give, hashed in
     * place: the capture is not copied. */
    if (jinn_auth_replica_key(w->data + k, r) != 0) {
        return JINN_EINTERNAL;
    }
    h = jinn_fnv1a64(JINN_FNV_OFFSET, w->data, k);
    h = jinn_fnv1a64(h, r, sizeof r);
    *auth = jinn_fnv1a64(h, w->data + k + sizeof r, w->len - k - sizeof r);
    return 0;
}

int jinn_digest_memory(const struct jinn_fsm *fsm, uint64_t index, struct jinn_digest *d)
{
    struct jinn_digest_capture cap;
    int rv = jinn_digest_capture(fsm, &cap);
    if (rv == 0) {
        jinn_digest_from_capture(&cap, index, d);
    }
    jinn_digest_capture_free(&cap);
    return rv;
}

/* ---- SQL content ---------------------------------------------------------- */

static uint64_t hash_value(uint64_t h, sqlite3_stmt *stmt, int i)
{
    int type = sqlite3_column_type(stmt, i);
    uint8_t tag = (uint8_t)type;
    h = jinn_fnv1a64(h, &tag, 1);
    switch (type) {
    case SQLITE_INTEGER:
        return hash_u64(h, (uint64_t)sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT: {
        double v = sqlite3_column_double(stmt, i);
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        return hash_u64(h, bits);
    }
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(stmt, i);
        return hash_bytes(h, p, (size_t)sqlite3_column_bytes(stmt, i));
    }
    case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(stmt, i);
        return hash_bytes(h, p, (size_t)sqlite3_column_bytes(stmt, i));
    }
    default:
        return h; /* NULL: the tag says it all */
    }
}

/* Runs sql and hashes every row of it into *h. */
static int hash_rows(sqlite3 *conn, const char *sql, uint64_t *h, char *err, size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    uint64_t rows = 0;
    int step;

    if (sqlite3_prepare_v2(conn, sql, -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(conn));
        sqlite3_finalize(stmt);
        return JINN_EIO;
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        int n = sqlite3_column_count(stmt);
        *h = hash_u64(*h, (uint64_t)n);
        for (int i = 0; i < n; i++) {
            *h = hash_value(*h, stmt, i);
        }
        rows++;
    }
    sqlite3_finalize(stmt);
    if (step != SQLITE_DONE) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(conn));
        return JINN_EIO;
    }
    *h = hash_u64(*h, rows);
    return 0;
}

/* "name" with embedded quotes doubled. */
static void quote_ident(struct jinn_wbuf *w, const char *name)
{
    jinn_wbuf_put_u8(w, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"') {
            jinn_wbuf_put_u8(w, '"');
        }
        jinn_wbuf_put_u8(w, (uint8_t)*p);
    }
    jinn_wbuf_put_u8(w, '"');
}

/* SELECT for table name in its storage order: by rowid, or for a WITHOUT
 * ROWID table by its primary key columns (a full scan could otherwise pick
 * a covering index in another order). */
static int table_select(sqlite3 *conn, const char *name, struct jinn_wbuf *q, char *err,
                        size_t err_len)
{
    sqlite3_stmt *stmt = NULL;
    unsigned pk = 0;
    int rv = 0;

    /* A table has a rowid unless its definition says otherwise. */
    q->len = 0;
    jinn_wbuf_printf(q, "SELECT _rowid_, * FROM ");
    quote_ident(q, name);
    jinn_wbuf_printf(q, " ORDER BY _rowid_");
    jinn_wbuf_put_u8(q, 0);
    if (q->failed) {
        return JINN_ENOMEM;
    }
    if (sqlite3_prepare_v2(conn, (const char *)q->data, -1, &stmt, NULL) == SQLITE_OK) {
        sqlite3_finalize(stmt);
        return 0;
    }
    sqlite3_finalize(stmt);
    q->len = 0;
    jinn_wbuf_printf(q, "SELECT * FROM ");
    quote_ident(q, name);
    if (sqlite3_prepare_v2(conn,
                           "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk",
                           -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(conn));
        sqlite3_finalize(stmt);
        return JINN_EIO;
    }
    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        jinn_wbuf_printf(q, pk++ == 0 ? " ORDER BY " : ", ");
        quote_ident(q, (const char *)sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    jinn_wbuf_put_u8(q, 0);
    if (q->failed) {
        rv = JINN_ENOMEM;
    }
    return rv;
}

int jinn_digest_sql(sqlite3 *conn, uint64_t *out, char *err, size_t err_len)
{
    struct jinn_wbuf q;
    sqlite3_stmt *tables = NULL;
    uint64_t h = JINN_FNV_OFFSET;
    bool own_txn = sqlite3_get_autocommit(conn) != 0;
    int rv, step = SQLITE_DONE;

    err[0] = '\0';
    jinn_wbuf_init(&q);
    /* One read transaction: the schema and every table from one moment. */
    if (own_txn && sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(conn));
        return JINN_EIO;
    }
    /* The schema, without rootpage: page numbers are layout, not content. */
    rv = hash_rows(conn, "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name",
                   &h, err, err_len);
    if (rv == 0 &&
        sqlite3_prepare_v2(conn,
                           "SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                           "coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
                           -1, &tables, NULL) != SQLITE_OK) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(conn));
        rv = JINN_EIO;
    }
    /* Virtual tables are skipped: their content lives in shadow tables,
     * which are ordinary tables and hashed here. */
    while (rv == 0 && (step = sqlite3_step(tables)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(tables, 0);
        h = hash_bytes(h, name, strlen(name));
        rv = table_select(conn, name, &q, err, err_len);
        if (rv == 0) {
            rv = hash_rows(conn, (const char *)q.data, &h, err, err_len);
        }
    }
    if (rv == 0 && step != SQLITE_DONE) {
        snprintf(err, err_len, "%s", sqlite3_errmsg(conn));
        rv = JINN_EIO;
    }
    sqlite3_finalize(tables);
    if (own_txn) {
        sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
    }
    jinn_wbuf_free(&q);
    *out = h;
    return rv;
}
