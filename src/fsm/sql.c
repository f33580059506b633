/* sql.c - see sql.h. */
#include "fsm/sql.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "log.h"

#define VFS_NAME "jinn"
#define JULIAN_UNIX_EPOCH_MS INT64_C(210866760000000)

/* ---- the deterministic VFS --------------------------------------------- */

/* Set only on the loop thread while a command applies; readers on other
 * threads see the real clock. */
static _Thread_local int in_apply;
static _Thread_local uint64_t apply_time_ms;
static _Thread_local uint64_t rng_state;

static sqlite3_vfs jinn_vfs;
static sqlite3_vfs *base_vfs;
static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;
static int vfs_status;

static uint64_t next_random(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static int vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    if (in_apply) {
        *out = (sqlite3_int64)apply_time_ms + JULIAN_UNIX_EPOCH_MS;
        return SQLITE_OK;
    }
    return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    sqlite3_int64 ms;
    int rv = vfs_current_time_int64(vfs, &ms);
    *out = (double)ms / 86400000.0;
    return rv;
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    if (in_apply) {
        for (int i = 0; i < n; i++) {
            out[i] = (char)(next_random() >> 56);
        }
        return n;
    }
    return base_vfs->xRandomness(base_vfs, n, out);
}

static void vfs_register(void)
{
    base_vfs = sqlite3_vfs_find(NULL);
    if (base_vfs == NULL || base_vfs->iVersion < 2) {
        vfs_status = SQLITE_ERROR;
        return;
    }
    jinn_vfs = *base_vfs;
    jinn_vfs.zName = VFS_NAME;
    jinn_vfs.pNext = NULL;
    jinn_vfs.xCurrentTime = vfs_current_time;
    jinn_vfs.xCurrentTimeInt64 = vfs_current_time_int64;
    jinn_vfs.xRandomness = vfs_randomness;
    vfs_status = sqlite3_vfs_register(&jinn_vfs, 0);
}

/* random() and randomblob(N), seeded by the raft index during apply. */
static void fn_random(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, (sqlite3_int64)next_random());
}

static void fn_randomblob(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_int64 n = argc > 0 ? sqlite3_value_int64(argv[0]) : 0;
    unsigned char *p;
    if (n < 1) {
        n = 1;
    }
    if (n > 1000000) {
        sqlite3_result_error(ctx, "randomblob: at most 1000000 bytes", -1);
        return;
    }
    p = sqlite3_malloc64((sqlite3_uint64)n);
    if (p == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    for (sqlite3_int64 i = 0; i < n; i++) {
        p[i] = (unsigned char)(next_random() >> 56);
    }
    sqlite3_result_blob(ctx, p, (int)n, sqlite3_free);
}

/* What replicated statements may not do: steer transactions themselves,
 * attach other files, or change the database's settings. */
static int authorize(void *data, int action, const char *a, const char *b, const char *c,
                     const char *d)
{
    (void)data;
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    switch (action) {
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
    case SQLITE_PRAGMA:
        return SQLITE_DENY;
    default:
        return SQLITE_OK;
    }
}

/* Deterministic runaway guard: SQLite calls this every 1000 VM steps. */
struct budget {
    uint64_t left;
};

static int over_budget(void *data)
{
    struct budget *b = data;
    if (b->left == 0) {
        return 1;
    }
    b->left--;
    return 0;
}

/* ---- databases ---------------------------------------------------------- */

static int name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(jinn_tree_entry(a, struct jinn_sql_db, by_name)->name,
                  jinn_tree_entry(b, struct jinn_sql_db, by_name)->name);
}

void jinn_sql_init(struct jinn_sql *s)
{
    memset(s, 0, sizeof *s);
    jinn_tree_init(&s->by_name, name_cmp);
}

static void db_free(struct jinn_tree_node *n)
{
    struct jinn_sql_db *db = jinn_tree_entry(n, struct jinn_sql_db, by_name);
    sqlite3_close_v2(db->conn);
    jinn_free(db);
}

static void close_all(struct jinn_sql *s)
{
    jinn_tree_release_all(&s->by_name, db_free);
    jinn_free(s->reply);
    s->reply = NULL;
}

void jinn_sql_clear(struct jinn_sql *s)
{
    close_all(s);
    jinn_free(s->dir);
    jinn_sql_init(s);
}

static void path_of(const struct jinn_sql *s, const char *name, const char *suffix, char *out,
                    size_t cap)
{
    snprintf(out, cap, "%s/%s.db%s", s->dir, name, suffix);
}

/* Removes every database file: they are rebuilt from snapshot and log. */
static int wipe_dir(const struct jinn_sql *s)
{
    DIR *d = opendir(s->dir);
    struct dirent *e;
    char path[4400];
    if (d == NULL) {
        return JINN_EIO;
    }
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".db") != NULL) {
            snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return 0;
}

int jinn_sql_set_dir(struct jinn_sql *s, const char *data_dir)
{
    char path[4200];
    pthread_once(&vfs_once, vfs_register);
    if (vfs_status != SQLITE_OK) {
        return JINN_EIO;
    }
    snprintf(path, sizeof path, "%s/sql", data_dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        return JINN_EIO;
    }
    jinn_free(s->dir);
    s->dir = jinn_strdup(path);
    if (s->dir == NULL) {
        return JINN_ENOMEM;
    }
    return wipe_dir(s);
}

static int open_conn(const struct jinn_sql *s, const char *name, sqlite3 **out)
{
    char path[4400];
    sqlite3 *conn = NULL;
    int rv;
    path_of(s, name, "", path, sizeof path);
    rv = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, VFS_NAME);
    if (rv == SQLITE_OK) {
        rv = sqlite3_exec(conn, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;", NULL, NULL,
                          NULL);
    }
    if (rv == SQLITE_OK) {
        rv = sqlite3_create_function(conn, "random", 0, SQLITE_UTF8, NULL, fn_random, NULL,
                                     NULL);
    }
    if (rv == SQLITE_OK) {
        rv = sqlite3_create_function(conn, "randomblob", 1, SQLITE_UTF8, NULL, fn_randomblob,
                                     NULL, NULL);
    }
    if (rv == SQLITE_OK) {
        rv = sqlite3_set_authorizer(conn, authorize, NULL);
    }
    if (rv != SQLITE_OK) {
        jinn_error("sql: cannot open %s: %s", path, conn ? sqlite3_errmsg(conn) : "no memory");
        sqlite3_close_v2(conn);
        return JINN_EIO;
    }
    sqlite3_limit(conn, SQLITE_LIMIT_ATTACHED, 0);
    *out = conn;
    return 0;
}

static struct jinn_sql_db *find(const struct jinn_sql *s, const char *name)
{
    struct jinn_sql_db probe;
    struct jinn_tree_node *n;
    snprintf(probe.name, sizeof probe.name, "%s", name);
    n = jinn_tree_find(&s->by_name, &probe.by_name);
    return n ? jinn_tree_entry(n, struct jinn_sql_db, by_name) : NULL;
}

const struct jinn_sql_db *jinn_sql_get(const struct jinn_sql *s, const char *name)
{
    return find(s, name);
}

const struct jinn_sql_db *jinn_sql_next(const struct jinn_sql *s, const struct jinn_sql_db *after)
{
    struct jinn_tree_iter it;
    struct jinn_tree_node *n = jinn_tree_seek(&s->by_name, after ? &after->by_name : NULL, &it);
    if (n != NULL && after != NULL && name_cmp(n, &after->by_name) == 0) {
        n = jinn_tree_next(&it);
    }
    return n ? jinn_tree_entry(n, struct jinn_sql_db, by_name) : NULL;
}

static struct jinn_sql_db *open_db(struct jinn_sql *s, const char *name)
{
    struct jinn_sql_db *db = find(s, name);
    if (db != NULL) {
        return db;
    }
    if (s->dir == NULL || s->by_name.count >= JINN_SQL_DBS_MAX) {
        return NULL;
    }
    db = jinn_calloc(1, sizeof *db);
    if (db == NULL) {
        return NULL;
    }
    snprintf(db->name, sizeof db->name, "%s", name);
    if (open_conn(s, name, &db->conn) != 0) {
        jinn_free(db);
        return NULL;
    }
    jinn_tree_insert(&s->by_name, &db->by_name);
    return db;
}

sqlite3 *jinn_sql_open_reader(const struct jinn_sql *s, const char *name)
{
    char path[4400];
    sqlite3 *conn = NULL;
    if (s->dir == NULL || find(s, name) == NULL) {
        return NULL;
    }
    path_of(s, name, "", path, sizeof path);
    if (sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, VFS_NAME) !=
        SQLITE_OK) {
        sqlite3_close_v2(conn);
        return NULL;
    }
    sqlite3_exec(conn, "PRAGMA query_only=1;", NULL, NULL, NULL);
    return conn;
}

/* ---- binding and results ------------------------------------------------ */

static int bind_one(sqlite3_stmt *stmt, int i, json_t *v, char *err, size_t err_len)
{
    int rv;
    if (json_is_null(v)) {
        rv = sqlite3_bind_null(stmt, i);
    } else if (json_is_true(v) || json_is_false(v)) {
        rv = sqlite3_bind_int64(stmt, i, json_is_true(v));
    } else if (json_is_integer(v)) {
        rv = sqlite3_bind_int64(stmt, i, (sqlite3_int64)json_integer_value(v));
    } else if (json_is_real(v)) {
        rv = sqlite3_bind_double(stmt, i, json_real_value(v));
    } else if (json_is_string(v)) {
        rv = sqlite3_bind_text64(stmt, i, json_string_value(v), json_string_length(v),
                                 SQLITE_TRANSIENT, SQLITE_UTF8);
    } else if (json_is_object(v) && json_is_string(json_object_get(v, "base64")) &&
               json_object_size(v) == 1) {
        const char *b64 = json_string_value(json_object_get(v, "base64"));
        size_t n = strlen(b64), out = 0;
        unsigned char *buf = jinn_malloc(n / 4 * 3 + 3);
        uint32_t acc = 0;
        int bits = 0;
        if (buf == NULL) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        for (size_t k = 0; k < n; k++) {
            const char *alphabet =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            const char *pos = b64[k] ? strchr(alphabet, b64[k]) : NULL;
            if (b64[k] == '=') {
                break;
            }
            if (pos == NULL) {
                jinn_free(buf);
                snprintf(err, err_len, "parameter %d: bad base64", i);
                return -1;
            }
            acc = (acc << 6) | (uint32_t)(pos - alphabet);
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                buf[out++] = (unsigned char)(acc >> bits);
            }
        }
        rv = sqlite3_bind_blob64(stmt, i, buf, out, SQLITE_TRANSIENT);
        jinn_free(buf);
    } else {
        snprintf(err, err_len,
                 "parameter %d: use null, a boolean, a number, a string or {\"base64\": ...}", i);
        return -1;
    }
    if (rv != SQLITE_OK) {
        snprintf(err, err_len, "parameter %d: %s", i, sqlite3_errstr(rv));
        return -1;
    }
    return 0;
}

int jinn_sql_bind(sqlite3_stmt *stmt, json_t *params, char *err, size_t err_len)
{
    int expected = sqlite3_bind_parameter_count(stmt);
    if (params == NULL || json_is_null(params)) {
        if (expected != 0) {
            snprintf(err, err_len, "the statement takes %d parameters, none given", expected);
            return -1;
        }
        return 0;
    }
    if (json_is_array(params)) {
        if ((int)json_array_size(params) != expected) {
            snprintf(err, err_len, "the statement takes %d parameters, %zu given", expected,
                     json_array_size(params));
            return -1;
        }
        for (int i = 0; i < expected; i++) {
            if (bind_one(stmt, i + 1, json_array_get(params, (size_t)i), err, err_len) != 0) {
                return -1;
            }
        }
        return 0;
    }
    if (json_is_object(params)) {
        const char *key;
        json_t *v;
        if ((int)json_object_size(params) != expected) {
            snprintf(err, err_len, "the statement takes %d parameters, %zu given", expected,
                     json_object_size(params));
            return -1;
        }
        json_object_foreach(params, key, v)
        {
            char name[128];
            int i;
            snprintf(name, sizeof name, "%s%s", strchr(":@$", key[0]) && key[0] ? "" : ":", key);
            i = sqlite3_bind_parameter_index(stmt, name);
            if (i == 0) {
                snprintf(err, err_len, "no parameter named %s", name);
                return -1;
            }
            if (bind_one(stmt, i, v, err, err_len) != 0) {
                return -1;
            }
        }
        return 0;
    }
    snprintf(err, err_len, "params must be an array or an object");
    return -1;
}

json_t *jinn_sql_column_json(sqlite3_stmt *stmt, int i)
{
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(stmt, i));
    case SQLITE_TEXT:
        return json_stringn((const char *)sqlite3_column_text(stmt, i),
                            (size_t)sqlite3_column_bytes(stmt, i));
    case SQLITE_BLOB: {
        struct jinn_wbuf w;
        json_t *obj;
        jinn_wbuf_init(&w);
        jinn_wbuf_put_base64(&w, sqlite3_column_blob(stmt, i),
                             (size_t)sqlite3_column_bytes(stmt, i));
        obj = json_pack("{s:s%}", "base64", w.data ? (const char *)w.data : "", w.len);
        jinn_wbuf_free(&w);
        return obj;
    }
    default:
        return json_null();
    }
}

/* ---- exec --------------------------------------------------------------- */

/* jinn's own statements (transaction control, serialisation) run without
 * the authorizer that fences the user's. */
static int run_unguarded(sqlite3 *conn, const char *sql)
{
    int rv;
    sqlite3_set_authorizer(conn, NULL, NULL);
    rv = sqlite3_exec(conn, sql, NULL, NULL, NULL);
    sqlite3_set_authorizer(conn, authorize, NULL);
    return rv;
}

static unsigned char *serialize(sqlite3 *conn, sqlite3_int64 *n)
{
    unsigned char *image;
    sqlite3_set_authorizer(conn, NULL, NULL);
    image = sqlite3_serialize(conn, "main", n, 0);
    sqlite3_set_authorizer(conn, authorize, NULL);
    return image;
}

static int fail(struct jinn_sql *s, sqlite3 *conn, int n, const char *msg)
{
    snprintf(s->error, sizeof s->error, "statement %d: %s", n, msg);
    run_unguarded(conn, "ROLLBACK");
    return JINN_ESQL;
}

int jinn_sql_exec(struct jinn_sql *s, uint64_t index, uint64_t now, const struct jinn_cmd *c)
{
    char name[JINN_SQL_DB_MAX + 1];
    struct jinn_sql_db *db;
    json_t *doc, *list, *results;
    struct budget budget;
    int rv = JINN_OK;
    size_t i;
    json_t *st;

    jinn_free(s->reply);
    s->reply = NULL;
    s->error[0] = '\0';
    doc = json_loadb((const char *)c->sql.statements.p, c->sql.statements.len, 0, NULL);
    list = doc ? json_object_get(doc, "statements") : NULL;
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > JINN_SQL_STATEMENTS_MAX) {
        json_decref(doc);
        return JINN_ECORRUPT; /* the leader validated it: these bytes are not ours */
    }
    memcpy(name, c->sql.db.p, c->sql.db.len);
    name[c->sql.db.len] = '\0';
    db = open_db(s, name);
    results = json_array();
    if (db == NULL || results == NULL) {
        json_decref(doc);
        json_decref(results);
        return s->by_name.count >= JINN_SQL_DBS_MAX ? JINN_EFULL : JINN_EIO;
    }
    in_apply = 1;
    apply_time_ms = now;
    rng_state = index * UINT64_C(0x9E3779B97F4A7C15) | 1;
    budget.left = c->sql.step_budget / 1000 + 1;
    sqlite3_progress_handler(db->conn, 1000, over_budget, &budget);
    run_unguarded(db->conn, "BEGIN");
    json_array_foreach(list, i, st)
    {
        const char *sql = json_string_value(json_object_get(st, "sql"));
        const char *tail = NULL;
        sqlite3_stmt *stmt = NULL;
        char err[256];
        int step;
        if (sql == NULL) {
            rv = fail(s, db->conn, (int)i + 1, "missing sql");
            break;
        }
        if (sqlite3_prepare_v2(db->conn, sql, -1, &stmt, &tail) != SQLITE_OK || stmt == NULL) {
            rv = fail(s, db->conn, (int)i + 1, stmt == NULL && sqlite3_errcode(db->conn) == 0
                                                    ? "empty statement"
                                                    : sqlite3_errmsg(db->conn));
            sqlite3_finalize(stmt);
            break;
        }
        while (tail && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';')) {
            tail++;
        }
        if (tail && *tail != '\0') {
            sqlite3_finalize(stmt);
            rv = fail(s, db->conn, (int)i + 1, "one SQL statement per entry");
            break;
        }
        if (jinn_sql_bind(stmt, json_object_get(st, "params"), err, sizeof err) != 0) {
            sqlite3_finalize(stmt);
            rv = fail(s, db->conn, (int)i + 1, err);
            break;
        }
        while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        }
        if (step != SQLITE_DONE) {
            const char *msg = step == SQLITE_INTERRUPT ? "too much work (the step budget ran out)"
                                                       : sqlite3_errmsg(db->conn);
            snprintf(err, sizeof err, "%s", msg);
            sqlite3_finalize(stmt);
            rv = fail(s, db->conn, (int)i + 1, err);
            break;
        }
        sqlite3_finalize(stmt);
        json_array_append_new(results,
                              json_pack("{s:I, s:I}", "rows_affected",
                                        (json_int_t)sqlite3_changes64(db->conn),
                                        "last_insert_id",
                                        (json_int_t)sqlite3_last_insert_rowid(db->conn)));
    }
    if (rv == JINN_OK && run_unguarded(db->conn, "COMMIT") != SQLITE_OK) {
        rv = fail(s, db->conn, (int)json_array_size(list), sqlite3_errmsg(db->conn));
    }
    sqlite3_progress_handler(db->conn, 0, NULL, NULL);
    in_apply = 0;
    if (rv == JINN_OK) {
        s->reply = json_dumps(results, JSON_COMPACT);
    }
    json_decref(results);
    json_decref(doc);
    return rv;
}

uint32_t jinn_sql_checksum(const struct jinn_sql_db *db, uint64_t *size)
{
    sqlite3_int64 n = 0;
    unsigned char *image = serialize(db->conn, &n);
    uint32_t crc = image ? jinn_crc32(0, image, (size_t)n) : 0;
    *size = (uint64_t)n;
    sqlite3_free(image);
    return crc;
}

/* ---- snapshots ------------------------------------------------------------ */

/* Section: u32 count; per database in name order: name, the serialized
 * database image (SQLite's own file format). */
void jinn_sql_encode(const struct jinn_sql *s, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u32(w, (uint32_t)s->by_name.count);
    for (const struct jinn_sql_db *db = jinn_sql_next(s, NULL); db; db = jinn_sql_next(s, db)) {
        sqlite3_int64 n = 0;
        unsigned char *image = serialize(db->conn, &n);
        if (image == NULL) {
            w->failed = true;
            return;
        }
        jinn_wbuf_put_str(w, db->name);
        jinn_wbuf_put_bytes(w, image, (size_t)n);
        sqlite3_free(image);
    }
}

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok;
    if (f == NULL) {
        return -1;
    }
    ok = fwrite(p, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

int jinn_sql_decode(struct jinn_sql *s, struct jinn_rbuf *r)
{
    struct jinn_rbuf check = *r;
    uint32_t count = jinn_rbuf_get_u32(&check);

    /* Validate everything before touching a file. */
    if (check.failed || count > JINN_SQL_DBS_MAX) {
        return JINN_ECORRUPT;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *name, *image;
        size_t name_len = jinn_rbuf_get_bytes(&check, &name, JINN_SQL_DB_MAX);
        size_t len = jinn_rbuf_get_bytes(&check, &image, UINT32_MAX);
        if (check.failed || name_len == 0 || memchr(name, '/', name_len) ||
            memchr(name, '\0', name_len) || len < 100 || memcmp(image, "SQLite format 3", 16) != 0) {
            return JINN_ECORRUPT;
        }
    }
    if (s->dir == NULL) {
        return count == 0 ? (*r = check, 0) : JINN_EIO;
    }
    close_all(s);
    s->generation++;
    if (wipe_dir(s) != 0) {
        return JINN_EIO;
    }
    jinn_rbuf_get_u32(r);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *name_p, *image;
        char name[JINN_SQL_DB_MAX + 1], path[4400];
        size_t name_len = jinn_rbuf_get_bytes(r, &name_p, JINN_SQL_DB_MAX);
        size_t len = jinn_rbuf_get_bytes(r, &image, UINT32_MAX);
        memcpy(name, name_p, name_len);
        name[name_len] = '\0';
        path_of(s, name, "", path, sizeof path);
        if (write_file(path, image, len) != 0 || open_db(s, name) == NULL) {
            jinn_error("sql: cannot restore database %s", name);
            return JINN_EIO;
        }
    }
    return 0;
}
