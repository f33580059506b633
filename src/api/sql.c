/* sql.c - the SQL API: exec through the log, queries off the event loop.
 *
 * exec runs on the leader as one SQL_EXEC command (all statements, one
 * transaction, every replica). While this node has no live leader, SQL is
 * read-only: exec is refused at once with 503 read_only. A query is
 * checked read-only by SQLite itself, follows the consistency policy of the
 * namespace named like the database, and runs on libuv's thread pool with
 * its own read-only connection (WAL lets it read while apply writes), under
 * a row, byte and time limit. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"

#define QUERY_ROWS_MAX 100000
#define QUERY_BYTES_MAX (16u << 20)
#define QUERY_TIMEOUT_MS 5000
#define QUERIES_MAX 8        /* running at once on the thread pool */
#define QUERIES_QUEUED_MAX 4096 /* waiting for a slot; beyond, 503 busy */
#define READERS_IDLE_MAX 32  /* reader connections kept open for reuse */

static bool db_name_or_reply(struct jinn_http_request *req, const struct jinn_route_args *args)
{
    bool ok = jinn_sql_name_allowed(args->arg[0], args->len[0]);
    if (!ok) {
        jinn_http_reply_error(req, JINN_EINVAL, "database name must be 1-64 of A-Z a-z 0-9 _ -");
    }
    return ok;
}

/* A database written by another SQLite than ours is refused here: this
 * node cannot promise the same results (and, as leader, must not propose
 * entries the others would apply differently). */
static bool version_ok_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                                const struct jinn_route_args *args)
{
    char name[JINN_SQL_DB_MAX + 1], msg[160];
    uint32_t recorded;
    snprintf(name, sizeof name, "%.*s", (int)args->len[0], args->arg[0]);
    if (jinn_sql_version_ok(&jinn_node_fsm(api->node)->sql, name, &recorded)) {
        return true;
    }
    snprintf(msg, sizeof msg, "database %s was written by SQLite %u, this node has %d", name,
             recorded, sqlite3_libversion_number());
    jinn_http_reply_error(req, JINN_ESQLVERSION, msg);
    return false;
}

/* A statement object: {"sql": "...", "params": [...] | {...}}. */
static bool statement_ok(json_t *st, char *msg, size_t cap, size_t i)
{
    json_t *sql = json_object_get(st, "sql"), *params = json_object_get(st, "params");
    const char *key;
    json_t *v;
    if (!json_is_object(st) || !json_is_string(sql) || json_string_length(sql) == 0) {
        snprintf(msg, cap, "statement %zu: expected {\"sql\": \"...\", \"params\": [...]}", i + 1);
        return false;
    }
    json_object_foreach(st, key, v)
    {
        if (strcmp(key, "sql") != 0 && strcmp(key, "params") != 0) {
            snprintf(msg, cap, "statement %zu: unknown field '%s'", i + 1, key);
            return false;
        }
    }
    if (params != NULL && !json_is_array(params) && !json_is_object(params) &&
        !json_is_null(params)) {
        snprintf(msg, cap, "statement %zu: params must be an array or an object", i + 1);
        return false;
    }
    return true;
}

static void exec_committed(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_result *res)
{
    const struct jinn_sql *sql = &jinn_node_fsm(api->node)->sql;
    char *text;
    if (res->code == JINN_ESQL) {
        jinn_http_reply_error(req, JINN_ESQL, sql->error);
        return;
    }
    if (res->code == JINN_ECONFLICT) {
        jinn_http_reply_error(req, JINN_ECONFLICT,
                              "fence: the lock is not held with that token; nothing ran");
        return;
    }
    if (res->code != JINN_OK || sql->reply == NULL) {
        jinn_http_reply_error(req, res->code == JINN_OK ? JINN_EINTERNAL : res->code, NULL);
        return;
    }
    /* {"results": <the array apply produced>} */
    text = jinn_malloc(strlen(sql->reply) + 48);
    if (text == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    sprintf(text, "{\"results\":%s,\"index\":%" PRIu64 "}", sql->reply, res->index);
    jinn_http_reply(req, 200, "application/json", text, strlen(text));
    jinn_free(text);
}

void jinn_api_sql_exec(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args)
{
    struct jinn_node_status st;
    json_t *body, *list, *stmt;
    char msg[256], *text;
    struct jinn_cmd c;
    bool fenced;
    size_t i;

    if (!db_name_or_reply(req, args)) {
        return;
    }
    jinn_node_status(api->node, &st);
    if (!st.quorum) {
        jinn_http_reply_error(req, JINN_EREADONLY, NULL);
        return;
    }
    if (!jinn_node_is_leader(api->node)) {
        jinn_api_forward_or_reply(api, req);
        return;
    }
    if (!version_ok_or_reply(api, req, args)) {
        return;
    }
    memset(&c, 0, sizeof c);
    if (!jinn_api_fence_or_reply(req, &c.sql.fence, &c.sql.fence_token, &fenced)) {
        return;
    }
    body = jinn_api_body_json_or_reply(req);
    if (body == NULL) {
        return;
    }
    list = json_object_get(body, "statements");
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > JINN_SQL_STATEMENTS_MAX || json_object_size(body) != 1) {
        json_decref(body);
        jinn_http_reply_error(req, JINN_EINVAL,
                              "expected {\"statements\": [{\"sql\": ..., \"params\": ...}]}, "
                              "1 to 100 statements");
        return;
    }
    json_array_foreach(list, i, stmt)
    {
        if (!statement_ok(stmt, msg, sizeof msg, i)) {
            json_decref(body);
            jinn_http_reply_error(req, JINN_EINVAL, msg);
            return;
        }
    }
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    c.type = JINN_CMD_SQL_EXEC;
    c.sql.db.p = (const uint8_t *)args->arg[0];
    c.sql.db.len = args->len[0];
    c.sql.statements.p = (const uint8_t *)text;
    c.sql.statements.len = strlen(text);
    c.sql.step_budget = JINN_SQL_DEFAULT_STEPS;
    c.sql.sqlite_version = (uint32_t)sqlite3_libversion_number();
    jinn_api_propose_or_reply(api, req, &c, exec_committed);
    jinn_free(text);
}

/* ---- queries ------------------------------------------------------------- */

struct query {
    uv_work_t work;
    struct query *next; /* in the wait queue */
    char db[JINN_SQL_DB_MAX + 1];
    uint64_t generation;
    struct jinn_api *api;
    struct jinn_http_request *req;
    sqlite3 *conn;  /* opened on the loop thread, used on the worker */
    char *sql;      /* owned */
    json_t *params; /* owned; touched by the worker only */
    char *out;      /* the JSON reply, built on the worker */
    int code;
    char error[512];
    struct timespec deadline;
};

/* All of this is touched on the loop thread only. */
static unsigned queries_in_flight, queries_queued;
static struct query *queue_head, **queue_tail = &queue_head;

struct reader {
    char db[JINN_SQL_DB_MAX + 1];
    uint64_t generation;
    sqlite3 *conn;
};
static struct reader idle[READERS_IDLE_MAX];
static unsigned n_idle;

/* A reader connection for db: an idle one, or a new one. Idle readers of
 * replaced files (opened before a restore) are closed on the way. */
static sqlite3 *take_reader(const struct jinn_sql *sql, const char *db)
{
    for (unsigned i = n_idle; i-- > 0;) {
        if (idle[i].generation != sql->generation) {
            sqlite3_close_v2(idle[i].conn);
            idle[i] = idle[--n_idle];
        }
    }
    for (unsigned i = n_idle; i-- > 0;) {
        if (strcmp(idle[i].db, db) == 0) {
            sqlite3 *conn = idle[i].conn;
            idle[i] = idle[--n_idle];
            return conn;
        }
    }
    return jinn_sql_open_reader(sql, db);
}

static void give_back(const struct jinn_sql *sql, struct query *q)
{
    /* Readers of replaced files (a restore), beyond the cap, or left inside
     * a transaction (never reusable: they would pin an old snapshot) are
     * closed. */
    if (q->conn == NULL) {
        return;
    }
    if (q->generation != sql->generation || n_idle == READERS_IDLE_MAX ||
        !sqlite3_get_autocommit(q->conn)) {
        sqlite3_close_v2(q->conn);
    } else {
        snprintf(idle[n_idle].db, sizeof idle[n_idle].db, "%s", q->db);
        idle[n_idle].generation = q->generation;
        idle[n_idle].conn = q->conn;
        n_idle++;
    }
    q->conn = NULL;
}

/* Bytes a value adds to the JSON reply, counted before it is built. */
static size_t json_cost(sqlite3_stmt *stmt, int i)
{
    size_t n = (size_t)sqlite3_column_bytes(stmt, i), cost = 0;
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(stmt, i);
        for (size_t k = 0; p != NULL && k < n; k++) {
            cost += p[k] < 0x20 ? 6 : (p[k] == '"' || p[k] == '\\') ? 2 : 1;
        }
        return cost + 16;
    }
    case SQLITE_BLOB:
        return (n + 2) / 3 * 4 + 32;
    default:
        return 32;
    }
}

static int past_deadline(void *data)
{
    struct query *q = data;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > q->deadline.tv_sec ||
           (now.tv_sec == q->deadline.tv_sec && now.tv_nsec > q->deadline.tv_nsec);
}

static void run_query(uv_work_t *work)
{
    struct query *q = work->data;
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    json_t *columns = json_array(), *types = json_array(), *rows = json_array();
    size_t bytes = 0;
    int step, n;

    q->code = JINN_ESQL;
    jinn_sql_query_memory_begin();
    sqlite3_progress_handler(q->conn, 1000, past_deadline, q);
    if (sqlite3_prepare_v2(q->conn, q->sql, -1, &stmt, &tail) != SQLITE_OK || stmt == NULL) {
        if ((sqlite3_errcode(q->conn) & 0xff) == SQLITE_AUTH) {
            q->code = JINN_EINVAL;
            snprintf(q->error, sizeof q->error,
                     "%s: a query is one read-only SELECT over the allowed functions "
                     "(no PRAGMA, ATTACH or BEGIN); send writes to /exec",
                     sqlite3_errmsg(q->conn));
        } else {
            snprintf(q->error, sizeof q->error, "%s",
                     stmt == NULL && sqlite3_errcode(q->conn) == 0 ? "empty statement"
                                                                    : sqlite3_errmsg(q->conn));
        }
        goto out;
    }
    if (!jinn_sql_tail_blank(tail)) {
        snprintf(q->error, sizeof q->error, "one SQL statement per query");
        goto out;
    }
    if (!sqlite3_stmt_readonly(stmt)) {
        q->code = JINN_EINVAL;
        snprintf(q->error, sizeof q->error,
                 "query runs read-only statements only; send writes to /exec");
        goto out;
    }
    if (jinn_sql_bind(stmt, q->params, q->error, sizeof q->error) != 0) {
        goto out;
    }
    n = sqlite3_column_count(stmt);
    for (int i = 0; i < n; i++) {
        const char *decl = sqlite3_column_decltype(stmt, i);
        json_array_append_new(columns, json_string(sqlite3_column_name(stmt, i)));
        json_array_append_new(types, decl ? json_string(decl) : json_null());
    }
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        json_t *row, *value;
        if (json_array_size(rows) == QUERY_ROWS_MAX) {
            snprintf(q->error, sizeof q->error, "result larger than %d rows", QUERY_ROWS_MAX);
            goto out;
        }
        row = json_array();
        json_array_append_new(rows, row);
        for (int i = 0; i < n; i++) {
            /* Checked per value, before it is copied: one value can be as
             * large as the whole budget. */
            bytes += json_cost(stmt, i);
            if (bytes > QUERY_BYTES_MAX) {
                snprintf(q->error, sizeof q->error, "result larger than %u bytes",
                         QUERY_BYTES_MAX);
                goto out;
            }
            value = jinn_sql_column_json(stmt, i);
            if (value == NULL) {
                /* was appended as nothing: a row one value short */
                snprintf(q->error, sizeof q->error,
                         sqlite3_column_type(stmt, i) == SQLITE_TEXT
                             ? "column %d: text that is not valid UTF-8 (select it as "
                               "CAST(... AS BLOB))"
                         : sqlite3_column_type(stmt, i) == SQLITE_FLOAT
                             ? "column %d: an infinite real (JSON has none; select it "
                               "as quote(...))"
                             : "column %d: out of memory",
                         i + 1);
                goto out;
            }
            json_array_append_new(row, value);
        }
    }
    if (step != SQLITE_DONE) {
        snprintf(q->error, sizeof q->error, "%s",
                 step == SQLITE_INTERRUPT ? "interrupted: the query ran past its time limit"
                 : step == SQLITE_NOMEM  ? "out of memory: the query needed more than its "
                                           "256 MiB (sorts, DISTINCT and subqueries are held "
                                           "in memory)"
                                         : sqlite3_errmsg(q->conn));
        goto out;
    }
    {
        json_t *obj = json_pack("{s:O, s:O, s:O}", "columns", columns, "types", types, "rows",
                                rows);
        q->out = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        json_decref(obj);
        q->code = q->out ? JINN_OK : JINN_ENOMEM;
    }
out:
    sqlite3_finalize(stmt);
    sqlite3_progress_handler(q->conn, 0, NULL, NULL);
    jinn_sql_query_memory_end();
    json_decref(columns);
    json_decref(types);
    json_decref(rows);
    json_decref(q->params);
    q->params = NULL;
}

static void start_query(struct query *q);

static void query_done(uv_work_t *work, int status)
{
    struct query *q = work->data;
    queries_in_flight--;
    give_back(&jinn_node_fsm(q->api->node)->sql, q);
    if (queue_head != NULL) {
        struct query *next = queue_head;
        queue_head = next->next;
        if (queue_head == NULL) {
            queue_tail = &queue_head;
        }
        queries_queued--;
        start_query(next);
    }
    if (status != 0) {
        jinn_http_reply_error(q->req, JINN_EINTERNAL, NULL);
    } else if (q->code == JINN_OK) {
        jinn_http_reply(q->req, 200, "application/json", q->out, strlen(q->out));
    } else {
        jinn_http_reply_error(q->req, q->code, q->code == JINN_ENOMEM ? NULL : q->error);
    }
    jinn_free(q->out);
    jinn_free(q->sql);
    jinn_free(q);
}

/* Runs on the loop after the consistency decision; req's body holds the
 * query, parsed again here because the handler's parse did not outlive it. */
static void query_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_sql *sql = &jinn_node_fsm(api->node)->sql;
    char name[JINN_SQL_DB_MAX + 1];
    const char *p = req->path + strlen("/v1/sql/");
    const char *slash = memchr(p, '/', req->path_len - strlen("/v1/sql/"));
    long n = jinn_http_unescape(p, (size_t)(slash - p), name, sizeof name, false);
    json_t *body = json_loadb(req->body, req->body_len, 0, NULL);
    struct query *q;
    uint32_t recorded;

    if (n <= 0 || body == NULL) {
        json_decref(body);
        jinn_http_reply_error(req, JINN_EINTERNAL, NULL);
        return;
    }
    if (queries_queued >= QUERIES_QUEUED_MAX) {
        json_decref(body);
        jinn_http_reply_error(req, JINN_EBUSY, "too many queries waiting; retry");
        return;
    }
    if (jinn_sql_get(sql, name) == NULL) {
        json_decref(body);
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such database");
        return;
    }
    if (!jinn_sql_version_ok(sql, name, &recorded)) {
        char msg[160];
        json_decref(body);
        snprintf(msg, sizeof msg, "database %s was written by SQLite %u, this node has %d",
                 name, recorded, sqlite3_libversion_number());
        jinn_http_reply_error(req, JINN_ESQLVERSION, msg);
        return;
    }
    q = jinn_calloc(1, sizeof *q);
    if (q == NULL) {
        json_decref(body);
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    q->api = api;
    q->req = req;
    snprintf(q->db, sizeof q->db, "%s", name);
    q->sql = jinn_strdup(json_string_value(json_object_get(body, "sql")));
    q->params = json_deep_copy(json_object_get(body, "params"));
    json_decref(body);
    if (q->sql == NULL) {
        json_decref(q->params);
        jinn_free(q);
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    if (queries_in_flight >= QUERIES_MAX) {
        *queue_tail = q; /* FIFO: started by query_done */
        queue_tail = &q->next;
        queries_queued++;
        return;
    }
    start_query(q);
}

static void start_query(struct query *q)
{
    const struct jinn_sql *sql = &jinn_node_fsm(q->api->node)->sql;
    q->generation = sql->generation;
    q->conn = take_reader(sql, q->db);
    clock_gettime(CLOCK_MONOTONIC, &q->deadline);
    q->deadline.tv_sec += QUERY_TIMEOUT_MS / 1000;
    q->work.data = q;
    if (q->conn == NULL || uv_queue_work(q->api->loop, &q->work, run_query, query_done) != 0) {
        jinn_http_reply_error(q->req, q->conn ? JINN_ENOMEM : JINN_ENOTFOUND, NULL);
        if (q->conn) {
            sqlite3_close_v2(q->conn);
        }
        jinn_free(q->sql);
        json_decref(q->params);
        jinn_free(q);
        return;
    }
    queries_in_flight++;
}

void jinn_api_sql_query(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    struct jinn_policy pol;
    json_t *body;
    char msg[160], want[32];
    bool present, linearizable;

    if (!db_name_or_reply(req, args)) {
        return;
    }
    body = jinn_api_body_json_or_reply(req);
    if (body == NULL) {
        return;
    }
    if (!statement_ok(body, msg, sizeof msg, 0)) {
        json_decref(body);
        jinn_http_reply_error(req, JINN_EINVAL, msg + strlen("statement 1: "));
        return;
    }
    json_decref(body);
    pol = jinn_config_policy(api->cfg, args->arg[0]);
    if (!jinn_api_param_or_reply(req, NULL, "consistency", want, sizeof want, &present)) {
        return;
    }
    linearizable = !pol.stale_reads;
    if (present && strcmp(want, "linearizable") == 0) {
        linearizable = true;
    } else if (present && strcmp(want, "stale") == 0) {
        if (!pol.stale_reads) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "stale reads are not allowed in this namespace (mode cp)");
            return;
        }
        linearizable = false;
    } else if (present) {
        jinn_http_reply_error(req, JINN_EINVAL, "consistency must be linearizable or stale");
        return;
    }
    if (!linearizable && pol.max_staleness_ms != 0) {
        struct jinn_node_status st;
        jinn_node_status(api->node, &st);
        if ((st.leader_contact_ms < 0 || (uint64_t)st.leader_contact_ms > pol.max_staleness_ms)) {
            jinn_http_reply_error(req, JINN_ESTALE, NULL);
            return;
        }
    }
    jinn_api_read_or_reply(api, req, linearizable, query_now);
}

/* GET /v1/sql/{db}: the image checksum is computed on the thread pool
 * from a reader connection of its own (a 300 MB database takes a second:
 * never on the loop). */
struct info {
    uv_work_t work;
    struct jinn_http_request *req;
    sqlite3 *conn;
    char name[JINN_SQL_DB_MAX + 1];
    uint32_t crc;
    uint64_t size;
    int code;
};

static void info_run(uv_work_t *work)
{
    struct info *in = work->data;
    sqlite3_int64 n = 0;
    unsigned char *image;
    image = sqlite3_serialize(in->conn, "main", &n, 0);
    in->code = image ? JINN_OK : JINN_EIO;
    in->crc = image ? jinn_crc32(0, image, (size_t)n) : 0;
    in->size = (uint64_t)n;
    sqlite3_free(image);
    sqlite3_close_v2(in->conn);
    in->conn = NULL;
}

static void info_done(uv_work_t *work, int status)
{
    struct info *in = work->data;
    if (status != 0 || in->code != JINN_OK) {
        jinn_http_reply_error(in->req, status != 0 ? JINN_EINTERNAL : in->code, NULL);
    } else {
        jinn_http_reply_json(in->req, 200,
                             json_pack("{s:s, s:I, s:I}", "name", in->name, "checksum",
                                       (json_int_t)in->crc, "size", (json_int_t)in->size));
    }
    jinn_free(in);
}

static void info_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_sql *sql = &jinn_node_fsm(api->node)->sql;
    char name[JINN_SQL_DB_MAX + 1];
    const char *p = req->path + strlen("/v1/sql/");
    long n = jinn_http_unescape(p, req->path_len - strlen("/v1/sql/"), name, sizeof name, false);
    const struct jinn_sql_db *db = n > 0 ? jinn_sql_get(sql, name) : NULL;
    struct info *in;
    if (db == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such database");
        return;
    }
    in = jinn_calloc(1, sizeof *in);
    if (in == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    in->req = req;
    snprintf(in->name, sizeof in->name, "%s", db->name);
    in->conn = jinn_sql_open_internal_reader(sql, name);
    in->work.data = in;
    if (in->conn == NULL || uv_queue_work(api->loop, &in->work, info_run, info_done) != 0) {
        sqlite3_close_v2(in->conn);
        jinn_free(in);
        jinn_http_reply_error(req, JINN_EIO, NULL);
    }
}

void jinn_api_sql_info(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args)
{
    if (db_name_or_reply(req, args)) {
        jinn_api_read_or_reply(api, req, false, info_now);
    }
}

void jinn_api_sql_stop(struct jinn_api *api)
{
    (void)api;
    while (queue_head != NULL) {
        struct query *q = queue_head;
        queue_head = q->next;
        jinn_http_reply_error(q->req, JINN_ESHUTDOWN, NULL);
        jinn_free(q->sql);
        json_decref(q->params);
        jinn_free(q);
    }
    queue_tail = &queue_head;
    queries_queued = 0;
    while (n_idle > 0) {
        sqlite3_close_v2(idle[--n_idle].conn);
    }
}
