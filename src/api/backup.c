/* backup.c - online backups: GET /v1/snapshot and GET /v1/sql/{db}/backup.
 *
 * GET /v1/snapshot streams a backup file (fsm/snapfile.h) of the whole
 * state at a linearized point: the leader confirms its leadership with a
 * raft barrier (jinn_node_linearize), then, on the loop between two
 * applies, encodes the in-memory sections and pins every SQL database with
 * a WAL read transaction, exactly as libraft's snapshots are taken
 * (jinn_fsm_encode_begin). The database images are serialised on the
 * thread pool, along with the per-chunk checksums; then the file goes out
 * in 1 MiB pieces, the next only once the kernel took the previous one, so
 * a slow client costs the node one snapshot's memory and no more. Limits:
 * one backup at a time per node (503 busy otherwise), and the node holds
 * the encoded snapshot in memory while it streams.
 *
 * GET /v1/sql/{db}/backup serialises one database on the thread pool from
 * a reader whose WAL read transaction pins one state, and streams it as a
 * plain SQLite file, in 1 MiB pieces with the same back-pressure. Limits:
 * SQL_BACKUPS_MAX at once per node (503 busy otherwise); each holds its
 * database's image in memory while it streams. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/snapfile.h"
#include "http.h"
#include "log.h"

/* One backup streams at a time: each holds a whole snapshot in memory. */
static bool backup_running;

/* SQL backups at once per node: each holds a whole database image in
 * memory until the client has read it (up to 1 GiB: sql.h). */
#define SQL_BACKUPS_MAX 2
/* Each piece of an SQL image goes out only once the kernel took the
 * previous one, so a slow client queues at most this much output. */
#define SQL_BACKUP_PIECE (1u << 20)
static unsigned sql_backups_running;

struct backup {
    uv_work_t work;
    struct jinn_http_request *req;
    struct jinn_wbuf w; /* the snapshot (payload) */
    struct jinn_sql_pin *pin;
    struct jinn_fns_pin *fns_pin; /* the module bytes; released on the loop */
    struct jinn_backup_header h;
    uint8_t head[JINN_BACKUP_HEADER_LEN];
    uint8_t tail[JINN_BACKUP_TRAILER_LEN];
    uint8_t *crcs; /* 4 bytes per chunk */
    uint64_t next; /* the next chunk to send; == chunks: the trailer */
    uint64_t n_chunks;
    int code;
    bool sql; /* a single database (GET /v1/sql/{db}/backup) */
    sqlite3 *conn;
    unsigned char *image;
    sqlite3_int64 image_len;
    char name[JINN_SQL_DB_MAX + 1];
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void backup_free(struct backup *b)
{
    jinn_sql_pin_free(b->pin);
    jinn_fns_pin_free(b->fns_pin); /* always on the loop: pin counts are the loop's */
    jinn_wbuf_free(&b->w);
    jinn_free(b->crcs);
    sqlite3_free(b->image);
    sqlite3_close_v2(b->conn);
    if (!b->sql) {
        backup_running = false;
    } else {
        sql_backups_running--;
    }
    jinn_free(b);
}

/* On the thread pool: touches only the job. */
static void snapshot_run(uv_work_t *work)
{
    struct backup *b = work->data;
    uint32_t total = 0;
    b->code = jinn_fsm_encode_finish(b->pin, b->fns_pin, &b->w);
    jinn_sql_pin_free(b->pin);
    b->pin = NULL;
    if (b->code != 0) {
        return;
    }
    b->h.payload_len = b->w.len;
    b->n_chunks = jinn_backup_chunks(&b->h);
    b->crcs = jinn_malloc(4 * b->n_chunks + 1);
    if (b->crcs == NULL) {
        b->code = JINN_ENOMEM;
        return;
    }
    for (uint64_t i = 0; i < b->n_chunks; i++) {
        size_t off = (size_t)(i * b->h.chunk_size);
        size_t n = b->w.len - off < b->h.chunk_size ? b->w.len - off : b->h.chunk_size;
        put32(b->crcs + 4 * i, jinn_crc32(0, b->w.data + off, n));
        total = jinn_crc32(total, b->w.data + off, n);
    }
    jinn_backup_header_encode(&b->h, b->head);
    jinn_backup_trailer_encode(b->h.payload_len, total, b->tail);
}

static void stream_next(void *data, int status);

static void stream_finish(struct backup *b, bool complete)
{
    jinn_http_stream_end(b->req, complete);
    if (!complete) {
        jinn_warn("backup stream ended early (client gone or too slow)");
    }
    backup_free(b);
}

/* Sends the next piece once the previous one was taken (back-pressure). */
static void stream_next(void *data, int status)
{
    struct backup *b = data;
    uv_buf_t bufs[2];
    unsigned n = 0;
    bool last = false;

    if (status != 0) {
        stream_finish(b, false);
        return;
    }
    if (b->sql) {
        /* b->next is the offset of the next piece (rev1 C3: the whole
         * image went out as one write, past every output limit). */
        uint64_t left = (uint64_t)b->image_len - b->next;
        size_t len = left < SQL_BACKUP_PIECE ? (size_t)left : SQL_BACKUP_PIECE;
        if (len == 0) {
            stream_finish(b, true);
            return;
        }
        bufs[n++] = uv_buf_init((char *)b->image + b->next, (unsigned)len);
        b->next += len;
    } else if (b->next < b->n_chunks) {
        size_t off = (size_t)(b->next * b->h.chunk_size);
        size_t len = b->w.len - off < b->h.chunk_size ? b->w.len - off : b->h.chunk_size;
        bufs[n++] = uv_buf_init((char *)b->w.data + off, (unsigned)len);
        bufs[n++] = uv_buf_init((char *)b->crcs + 4 * b->next, 4);
        b->next++;
    } else if (b->next == b->n_chunks) {
        bufs[n++] = uv_buf_init((char *)b->tail, sizeof b->tail);
        b->next++;
    } else {
        last = true;
    }
    if (last) {
        stream_finish(b, true);
        return;
    }
    if (jinn_http_stream_write(b->req, bufs, n, stream_next, b) != 0) {
        stream_finish(b, false);
    }
}

static void backup_done(uv_work_t *work, int status)
{
    struct backup *b = work->data;
    char value[32];
    uv_buf_t head;

    if (status != 0 || b->code != 0) {
        jinn_http_reply_error(b->req, status != 0 ? JINN_EINTERNAL : b->code, NULL);
        b->req = NULL;
        backup_free(b);
        return;
    }
    if (b->sql) {
        /* X-Jinn-Applied-Index and the other freshness headers are set
         * already (api.c serves reads with them). */
        if (jinn_http_stream_start(b->req, 200, "application/vnd.sqlite3",
                                   (uint64_t)b->image_len) != 0) {
            stream_finish(b, false);
            return;
        }
        stream_next(b, 0);
        return;
    }
    snprintf(value, sizeof value, "%llu", (unsigned long long)b->h.index);
    jinn_http_add_header(b->req, "X-Jinn-Index", value);
    snprintf(value, sizeof value, "%016llx", (unsigned long long)b->h.cluster_id);
    jinn_http_add_header(b->req, "X-Jinn-Cluster-Id", value);
    if (jinn_http_stream_start(b->req, 200, "application/octet-stream",
                               jinn_backup_file_size(&b->h)) != 0) {
        stream_finish(b, false);
        return;
    }
    head = uv_buf_init((char *)b->head, sizeof b->head);
    if (jinn_http_stream_write(b->req, &head, 1, stream_next, b) != 0) {
        stream_finish(b, false);
    }
}

/* On the loop, after the barrier: the state as of now. */
static void snapshot_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct jinn_node_status st;
    struct backup *b;
    int rv;

    if (backup_running) {
        jinn_http_reply_error(req, JINN_EBUSY, "another snapshot is being streamed; retry");
        return;
    }
    b = jinn_calloc(1, sizeof *b);
    if (b == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    jinn_wbuf_init(&b->w);
    b->req = req;
    jinn_node_status(api->node, &st);
    b->h.version = JINN_BACKUP_VERSION;
    b->h.snapshot_version = JINN_SNAPSHOT_VERSION;
    b->h.cmd_version = JINN_CMD_VERSION;
    b->h.chunk_size = JINN_BACKUP_CHUNK;
    b->h.cluster_id = st.cluster_id;
    b->h.index = api->applied_seen > st.applied_index ? api->applied_seen : st.applied_index;
    b->h.term = st.term;
    b->h.time_ms = fsm->time_ms;
    backup_running = true;
    rv = jinn_fsm_encode_begin(fsm, &b->w, &b->pin, &b->fns_pin);
    b->work.data = b;
    if (rv == 0 && uv_queue_work(api->loop, &b->work, snapshot_run, backup_done) != 0) {
        rv = JINN_EINTERNAL;
    }
    if (rv != 0) {
        backup_free(b);
        jinn_http_reply_error(req, rv, NULL);
    }
}

void jinn_api_snapshot(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args)
{
    (void)args;
    if (!jinn_node_is_leader(api->node)) {
        /* Not forwarded: the relay buffers replies, and a snapshot may be
         * gigabytes. The client asks the leader (status says which). */
        struct jinn_node_status st;
        char msg[600];
        jinn_node_status(api->node, &st);
        snprintf(msg, sizeof msg, "snapshots are taken on the leader; ask %s",
                 st.leader_api != NULL ? st.leader_api : "the leader (none known now)");
        jinn_http_reply_error(req, JINN_ENOTLEADER, msg);
        return;
    }
    if (backup_running) {
        jinn_http_reply_error(req, JINN_EBUSY, "another snapshot is being streamed; retry");
        return;
    }
    jinn_api_read_or_reply(api, req, true, snapshot_now);
}

/* ---- GET /v1/sql/{db}/backup ---------------------------------------------- */

static void sql_backup_run(uv_work_t *work)
{
    struct backup *b = work->data;
    b->image = sqlite3_serialize(b->conn, "main", &b->image_len, 0);
    b->code = b->image != NULL ? 0 : JINN_EIO;
    sqlite3_close_v2(b->conn); /* ends the read transaction */
    b->conn = NULL;
    if (b->image != NULL && b->image_len >= 100) {
        /* The live file is in WAL mode (header bytes 18-19 = 2); the copy
         * is a plain rollback-journal file that opens anywhere, even
         * read-only, without creating a -wal beside it. */
        b->image[18] = 1;
        b->image[19] = 1;
    }
}

static void sql_backup_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_sql *sql = &jinn_node_fsm(api->node)->sql;
    char name[JINN_SQL_DB_MAX + 1];
    const char *p = req->path + strlen("/v1/sql/");
    size_t plen = req->path_len - strlen("/v1/sql/") - strlen("/backup");
    long n = jinn_http_unescape(p, plen, name, sizeof name, false);
    struct backup *b;

    if (n <= 0 || jinn_sql_get(sql, name) == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such database");
        return;
    }
    if (sql_backups_running >= SQL_BACKUPS_MAX) {
        jinn_http_reply_error(req, JINN_EBUSY,
                              "too many SQL backups running on this node; retry");
        return;
    }
    b = jinn_calloc(1, sizeof *b);
    if (b == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    jinn_wbuf_init(&b->w);
    b->sql = true;
    sql_backups_running++; /* backup_free gives it back */
    b->req = req;
    snprintf(b->name, sizeof b->name, "%s", name);
    /* The read transaction begins now, on the loop: the image is the
     * state as of the applied index (X-Jinn-Applied-Index) whatever apply
     * does meanwhile. */
    b->conn = jinn_sql_open_internal_reader(sql, b->name);
    if (b->conn == NULL || sqlite3_exec(b->conn, "BEGIN; SELECT count(*) FROM sqlite_schema;",
                                        NULL, NULL, NULL) != SQLITE_OK) {
        backup_free(b);
        jinn_http_reply_error(req, JINN_EIO, NULL);
        return;
    }
    b->work.data = b;
    if (uv_queue_work(api->loop, &b->work, sql_backup_run, backup_done) != 0) {
        backup_free(b);
        jinn_http_reply_error(req, JINN_EINTERNAL, NULL);
    }
}

void jinn_api_sql_backup(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    if (args->len[0] == 0 || args->len[0] > JINN_SQL_DB_MAX) {
        jinn_http_reply_error(req, JINN_EINVAL, "bad database name");
        return;
    }
    /* The leader reads at a linearized point; a follower serves its own
     * applied state (X-Jinn-Applied-Index says which; min_index waits). */
    jinn_api_read_or_reply(api, req, jinn_node_is_leader(api->node), sql_backup_now);
}
