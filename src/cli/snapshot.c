/* snapshot.c - `jinn snapshot save|inspect|restore`: online backups.
 *
 * save streams GET /v1/snapshot from the leader into FILE.tmp, fsyncs it,
 * reads it back and verifies every checksum, and only then renames it to
 * FILE: a FILE that exists is whole. inspect and restore verify the file
 * the same way and decode the snapshot into a scratch state machine (its
 * SQL databases in a temporary directory), so a file that does not decode
 * is refused before anything is written. restore seeds the data_dir of
 * each node of a NEW cluster: a jinn.id naming each node with a new
 * cluster id, so the copy can never talk to the cluster it came from, and a
 * raft snapshot at the backup's index (term 1) whose configuration is the
 * given nodes (sorted by name). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"
#include "config.h"
#include "error.h"
#include "fetch.h"
#include "fsm/fn.h"
#include "fsm/fsm.h"
#include "fsm/snapfile.h"
#include "httpmsg.h"
#include "log.h"
#include "node.h"

/* How long save waits for the next bytes of the stream (the leader
 * serialises SQL images before the first byte). */
#define SAVE_IDLE_MS 120000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *addr_default(void)
{
    const char *env = getenv("JINN_ADDR");
    return env && *env ? env : JINN_CLI_DEFAULT_ADDR;
}

static void progress(uint64_t got, uint64_t total, int64_t started, bool done)
{
    double secs = (double)(now_ms() - started) / 1000.0;
    double mb = (double)got / 1e6;
    fprintf(stderr, "\r%.1f / %.1f MB  %.1f MB/s%s", mb, (double)total / 1e6,
            secs > 0 ? mb / secs : 0.0, done ? "\n" : "");
    fflush(stderr);
}

/* The leader's API URL, from addr's status; addr itself when it is the
 * leader or knows none. */
static void find_leader(const char *addr, char *out, size_t cap)
{
    char *resp = NULL;
    size_t len = 0;
    int status = 0;
    char err[256];
    snprintf(out, cap, "%s", addr);
    if (jinn_cli_request(addr, "GET", "/v1/status", NULL, NULL, 0, &status, &resp, &len, err,
                         sizeof err) == 0 &&
        status == 200) {
        json_t *st = json_loadb(resp, len, 0, NULL);
        const char *role = json_string_value(json_object_get(st, "role"));
        const char *leader =
            json_string_value(json_object_get(json_object_get(st, "leader"), "api"));
        if (role != NULL && strcmp(role, "leader") != 0 && leader != NULL &&
            leader[0] != '\0') {
            /* Directory URLs are http://; a cluster serving https (http_tls
             * on every node) is reached the way addr was. */
            if (strncmp(addr, "https://", 8) == 0 && strncmp(leader, "http://", 7) == 0) {
                snprintf(out, cap, "https://%s", leader + 7);
            } else {
                snprintf(out, cap, "%s", leader);
            }
            /* Trailing slash allowed in directory URLs. */
            if (strlen(out) > 0 && out[strlen(out) - 1] == '/') {
                out[strlen(out) - 1] = '\0';
            }
        }
        json_decref(st);
    }
    jinn_free(resp);
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, rv;
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) + (slash == path), path);
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    rv = fsync(fd);
    close(fd);
    return rv;
}

/* Streams GET target from addr into fd. 0, or 1 with a message printed. */
static int download(const char *addr, const char *target, int out_fd, const char *what,
                    uint64_t *got_out)
{
    struct jinn_cli_stream *st = NULL;
    struct jinn_http_limits limits = {64u * 1024, 0, UINT64_MAX};
    struct jinn_http_msg head;
    char req[2048], hostport[128], err[512], *buf = NULL;
    const char *token = jinn_cli_bearer();
    size_t len = 0, cap = 1 << 20;
    uint64_t got = 0, total = 0;
    int64_t started = now_ms(), last_progress = 0;
    bool tty = isatty(2), have_head = false;
    int rv = 1, n;

    buf = jinn_malloc(cap);
    if (buf == NULL) {
        fprintf(stderr, "jinn: out of memory\n");
        goto out;
    }
    /* http:// or https:// (the CLI's --cacert/--cert/--key options). */
    st = jinn_cli_stream_open(addr, JINN_CLI_TIMEOUT_MS, hostport, sizeof hostport, err,
                              sizeof err);
    if (st == NULL) {
        fprintf(stderr, "jinn: %s\n", err);
        goto out;
    }
    n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s%s%s\r\n",
                 target, hostport, token != NULL ? "Authorization: Bearer " : "",
                 token != NULL ? token : "", token != NULL ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof req ||
        jinn_cli_stream_send(st, req, (size_t)n, JINN_CLI_TIMEOUT_MS) != 0) {
        fprintf(stderr, "jinn: cannot send to %s: %s\n", addr, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t r = jinn_cli_stream_recv(st, buf + len, cap - len, SAVE_IDLE_MS);
        if (r < 0 && errno == ETIMEDOUT) {
            fprintf(stderr, "\njinn: %s: no data for %d s; giving up\n", addr,
                    SAVE_IDLE_MS / 1000);
            goto out;
        }
        if (r < 0) {
            fprintf(stderr, "\njinn: %s: %s\n", addr, strerror(errno));
            goto out;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
        if (!have_head) {
            int prv = jinn_http_parse_head(buf, len, true, &limits, &head);
            if (prv == JINN_HTTP_NEED_MORE && len < cap) {
                continue;
            }
            if (prv != 0) {
                fprintf(stderr, "jinn: %s: malformed reply\n", addr);
                goto out;
            }
            have_head = true;
            if (head.status != 200) {
                /* An error reply is small JSON: read it whole and say it. */
                continue;
            }
            if (!head.has_length) {
                fprintf(stderr, "jinn: %s: reply without a length\n", addr);
                goto out;
            }
            total = head.content_length;
            memmove(buf, buf + head.head_len, len - head.head_len);
            len -= head.head_len;
        }
        if (have_head && head.status != 200) {
            if (len >= cap) {
                break;
            }
            continue;
        }
        if (have_head) {
            size_t off = 0;
            while (off < len) {
                ssize_t w = write(out_fd, buf + off, len - off);
                if (w < 0 && errno == EINTR) {
                    continue;
                }
                if (w < 0) {
                    fprintf(stderr, "\njinn: cannot write %s: %s\n", what, strerror(errno));
                    goto out;
                }
                off += (size_t)w;
            }
            got += len;
            len = 0;
            if (tty && now_ms() - last_progress >= 200) {
                last_progress = now_ms();
                progress(got, total, started, false);
            }
        }
    }
    if (!have_head) {
        fprintf(stderr, "jinn: %s closed the connection without a reply\n", addr);
        goto out;
    }
    if (head.status != 200) {
        json_t *e = json_loadb(buf + head.head_len, len - head.head_len, 0, NULL);
        const char *msg = json_string_value(json_object_get(e, "message"));
        fprintf(stderr, "jinn: %s: %d %s\n", addr, head.status, msg ? msg : "error");
        json_decref(e);
        goto out;
    }
    if (tty) {
        progress(got, total, started, true);
    }
    if (got != total) {
        fprintf(stderr,
                "jinn: %s: the stream ended after %" PRIu64 " of %" PRIu64
                " bytes (leader changed or node stopped?); retry\n",
                addr, got, total);
        goto out;
    }
    *got_out = got;
    rv = 0;
out:
    jinn_cli_stream_close(st);
    jinn_free(buf);
    return rv;
}

/* ---- reading a file into a scratch state machine ------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct loaded {
    struct jinn_backup_header h;
    struct jinn_wbuf payload;
    struct jinn_fsm fsm;
    bool fsm_ready;
    char scratch[4200];
};

static void loaded_free(struct loaded *l)
{
    if (l->fsm_ready) {
        jinn_fsm_close(&l->fsm);
    }
    if (l->scratch[0] != '\0') {
        rm_tree(l->scratch);
    }
    jinn_wbuf_free(&l->payload);
}

/* Verifies file and decodes it into l->fsm, databases under a temporary
 * directory in parent. 0, or 1 with a message printed. */
static int load(const char *file, const char *parent, struct loaded *l)
{
    char err[512];
    FILE *f = fopen(file, "rb");
    int rv;

    memset(l, 0, sizeof *l);
    jinn_wbuf_init(&l->payload);
    if (f == NULL) {
        fprintf(stderr, "jinn: cannot open %s: %s\n", file, strerror(errno));
        return 1;
    }
    rv = jinn_backup_read_file(f, &l->h, &l->payload, err, sizeof err);
    fclose(f);
    if (rv != 0) {
        fprintf(stderr, "jinn: %s: %s\n", file, err);
        return 1;
    }
    snprintf(l->scratch, sizeof l->scratch, "%.4000s/.jinn-snapshot-XXXXXX", parent);
    if (mkdtemp(l->scratch) == NULL) {
        fprintf(stderr, "jinn: cannot create a scratch directory in %s: %s\n", parent,
                strerror(errno));
        l->scratch[0] = '\0';
        return 1;
    }
    jinn_fsm_init(&l->fsm);
    l->fsm_ready = true;
    if (jinn_sql_set_dir(&l->fsm.sql, l->scratch) != 0) {
        fprintf(stderr, "jinn: cannot prepare %s\n", l->scratch);
        return 1;
    }
    rv = jinn_fsm_decode(&l->fsm, l->payload.data, l->payload.len);
    if (rv != 0) {
        fprintf(stderr, "jinn: %s: the snapshot inside does not decode: %s\n", file,
                jinn_error_message(rv));
        return 1;
    }
    return 0;
}

static int cmd_save(int argc, char **argv)
{
    const char *addr = addr_default(), *file = NULL;
    char leader[512], tmp[4200];
    struct jinn_backup_header h;
    uint64_t got = 0;
    int64_t started = now_ms();
    int fd, rv;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strncmp(argv[i], "--addr=", 7) == 0) {
            addr = argv[i] + 7;
        } else if (file == NULL && argv[i][0] != '-') {
            file = argv[i];
        } else {
            fprintf(stderr, "jinn: snapshot save: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (file == NULL) {
        fprintf(stderr, "usage: jinn snapshot save FILE [--addr URL]\n");
        return 2;
    }
    find_leader(addr, leader, sizeof leader);
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "jinn: cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    rv = download(leader, "/v1/snapshot", fd, tmp, &got);
    if (rv == 0 && fsync(fd) != 0) {
        fprintf(stderr, "jinn: cannot fsync %s: %s\n", tmp, strerror(errno));
        rv = 1;
    }
    close(fd);
    if (rv != 0) {
        unlink(tmp);
        return rv;
    }
    /* Read back what is on disk, and decode it whole into a scratch state
     * machine as restore will: the checksums vouch for the file, not for
     * what went through the socket, and only a decoding snapshot is a
     * backup (rev1 C1: one without module bytes passed the checksums). */
    {
        char parent[4200];
        const char *slash = strrchr(file, '/');
        struct loaded l;
        if (slash == NULL) {
            snprintf(parent, sizeof parent, ".");
        } else {
            snprintf(parent, sizeof parent, "%.*s", (int)(slash - file) + (slash == file),
                     file);
        }
        rv = load(tmp, parent, &l);
        h = l.h;
        loaded_free(&l);
        if (rv != 0) {
            fprintf(stderr, "jinn: %s failed verification; not saved\n", tmp);
            unlink(tmp);
            return 1;
        }
    }
    if (rename(tmp, file) != 0 || fsync_dir_of(file) != 0) {
        fprintf(stderr, "jinn: cannot rename %s to %s: %s\n", tmp, file, strerror(errno));
        return 1;
    }
    {
        double secs = (double)(now_ms() - started) / 1000.0;
        printf("saved %s: %" PRIu64 " bytes, cluster %016" PRIx64 ", index %" PRIu64
               ", %.2f s, %.1f MB/s\n",
               file, got, h.cluster_id, h.index, secs,
               secs > 0 ? (double)got / 1e6 / secs : 0.0);
    }
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *file = NULL;
    bool as_json = false;
    struct loaded l;
    json_t *out, *ns, *queues, *dbs, *fns;
    const char *tmp = getenv("TMPDIR");
    struct jinn_tree_iter it;
    uint64_t keys = 0, msgs = 0, locks;
    char cid[20];
    int rv;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else if (file == NULL && argv[i][0] != '-') {
            file = argv[i];
        } else {
            fprintf(stderr, "jinn: snapshot inspect: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (file == NULL) {
        fprintf(stderr, "usage: jinn snapshot inspect FILE [--json]\n");
        return 2;
    }
    rv = load(file, tmp && *tmp ? tmp : "/tmp", &l);
    if (rv != 0) {
        loaded_free(&l);
        return rv;
    }
    ns = json_object();
    for (struct jinn_tree_node *n = jinn_tree_seek(&l.fsm.kv.by_key, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        const struct jinn_kv_entry *e = jinn_tree_entry(n, struct jinn_kv_entry, by_key);
        char name[JINN_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", (int)e->ns_len, e->ns);
        json_object_set_new(ns, name,
                            json_integer(json_integer_value(json_object_get(ns, name)) + 1));
        keys++;
    }
    queues = json_object();
    for (struct jinn_tree_node *n = jinn_tree_seek(&l.fsm.queues.by_name, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        const struct jinn_queue *q = jinn_tree_entry(n, struct jinn_queue, by_name);
        json_object_set_new(
            queues, q->name,
            json_pack("{s:I, s:I, s:I, s:I, s:I}", "messages", (json_int_t)q->all.count,
                      "ready", (json_int_t)q->ready.count, "leased",
                      (json_int_t)q->leased.count, "delayed", (json_int_t)q->delayed.count,
                      "dead", (json_int_t)q->dead.count));
        msgs += q->all.count;
    }
    dbs = json_object();
    for (const struct jinn_sql_db *db = jinn_sql_next(&l.fsm.sql, NULL); db;
         db = jinn_sql_next(&l.fsm.sql, db)) {
        uint64_t size = 0;
        uint32_t crc = jinn_sql_checksum(db, &size);
        json_object_set_new(
            dbs, db->name,
            json_pack("{s:I, s:I}", "size", (json_int_t)size, "checksum", (json_int_t)crc));
    }
    fns = json_object();
    for (const struct jinn_fn *f = jinn_fns_next(&l.fsm.fns, NULL); f;
         f = jinn_fns_next(&l.fsm.fns, f->name)) {
        json_object_set_new(fns, f->name,
                            json_pack("{s:I, s:I}", "active",
                                      (json_int_t)(f->active ? f->active->version : 0),
                                      "versions", (json_int_t)f->n_versions));
    }
    locks = l.fsm.locks.by_name.count;
    snprintf(cid, sizeof cid, "%016" PRIx64, l.h.cluster_id);
    out = json_pack("{s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:o, s:I, "
                    "s:I, s:o, s:I, s:o, s:I}",
                    "file_version", (json_int_t)l.h.version, "snapshot_version",
                    (json_int_t)l.h.snapshot_version, "command_version",
                    (json_int_t)l.h.cmd_version, "cluster_id", cid, "index",
                    (json_int_t)l.h.index, "term", (json_int_t)l.h.term, "cluster_time_ms",
                    (json_int_t)l.h.time_ms, "payload_bytes", (json_int_t)l.h.payload_len,
                    "keys", (json_int_t)keys, "namespaces", ns, "locks", (json_int_t)locks,
                    "lock_waiters", (json_int_t)l.fsm.locks.line.count, "queues", queues,
                    "messages", (json_int_t)msgs, "nodes", (json_int_t)l.fsm.nodes.n, "sql",
                    dbs, "kv_revision", (json_int_t)l.fsm.kv.last_revision, "functions", fns,
                    "module_bytes", (json_int_t)l.fsm.fns.module_bytes);
    if (as_json) {
        char *text = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
        printf("%s\n", text ? text : "{}");
        jinn_free(text);
    } else {
        const char *k;
        json_t *v;
        time_t t = (time_t)(l.h.time_ms / 1000);
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
        printf("file:      %s (backup format %u, snapshot format %u, written by command "
               "format %u)\n",
               file, l.h.version, l.h.snapshot_version, l.h.cmd_version);
        printf("cluster:   %s, index %" PRIu64 ", term %" PRIu64 ", cluster time %s\n", cid,
               l.h.index, l.h.term, when);
        printf("size:      %" PRIu64 " bytes of state\n", l.h.payload_len);
        printf("kv:        %" PRIu64 " keys (revision %" PRIu64 ")\n", keys,
               l.fsm.kv.last_revision);
        json_object_foreach(ns, k, v)
        {
            printf("             %s: %" JSON_INTEGER_FORMAT " keys\n", k,
                   json_integer_value(v));
        }
        printf("locks:     %" PRIu64 " held, %zu waiting\n", locks, l.fsm.locks.line.count);
        printf("queues:    %zu, %" PRIu64 " messages\n", json_object_size(queues), msgs);
        json_object_foreach(queues, k, v)
        {
            printf("             %s: %" JSON_INTEGER_FORMAT " messages (%" JSON_INTEGER_FORMAT
                   " dead)\n",
                   k, json_integer_value(json_object_get(v, "messages")),
                   json_integer_value(json_object_get(v, "dead")));
        }
        printf("sql:       %zu databases\n", json_object_size(dbs));
        json_object_foreach(dbs, k, v)
        {
            printf("             %s: %" JSON_INTEGER_FORMAT " bytes\n", k,
                   json_integer_value(json_object_get(v, "size")));
        }
        printf("functions: %zu, %" PRIu64 " bytes of modules\n", json_object_size(fns),
               l.fsm.fns.module_bytes);
        json_object_foreach(fns, k, v)
        {
            printf("             %s: version %" JSON_INTEGER_FORMAT " active (%" JSON_INTEGER_FORMAT
                   " kept)\n",
                   k, json_integer_value(json_object_get(v, "active")),
                   json_integer_value(json_object_get(v, "versions")));
        }
        printf("nodes:     %u in the directory (not restored)\n", l.fsm.nodes.n);
    }
    json_decref(out);
    loaded_free(&l);
    return 0;
}

/* ---- restore -------------------------------------------------------------- */

struct seed {
    bool done;
    int status;
};

static void seed_put_cb(struct raft_io_snapshot_put *req, int status)
{
    struct seed *s = req->data;
    s->done = true;
    s->status = status;
}

static void seed_closed(struct raft_io *io)
{
    (void)io;
}

/* Writes a raft snapshot at index (the backup's), term 1, with
 * configuration conf and the state bytes into dir (empty), as node id at
 * address; the log after it is empty and the current term 1. The index
 * must be the backup's: queue seqs, KV revisions, lock tokens and waiter
 * ids in the state are raft indexes, and new entries must come after them
 * (rev1 C2: seeded at 1, a publish collided with a restored seq and
 * stopped every replica, and lock tokens went backwards). */
static int seed_dir(const char *dir, uint64_t id, const char *address,
                    const struct raft_configuration *conf, uint64_t index,
                    const struct jinn_wbuf *state)
{
    uv_loop_t loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_snapshot snap;
    struct raft_io_snapshot_put req;
    struct raft_buffer buf;
    struct raft_snapshot *loaded = NULL;
    struct raft_entry *entries = NULL;
    raft_term term = 0;
    raft_id vote = 0;
    raft_index start = 0;
    size_t n_entries = 0;
    struct seed s = {false, 0};
    int rv = 1;

    memset(&io, 0, sizeof io);
    memset(&transport, 0, sizeof transport);
    uv_loop_init(&loop);
    if (raft_uv_tcp_init(&transport, &loop) != 0) {
        fprintf(stderr, "jinn: raft transport init failed\n");
        uv_loop_close(&loop);
        return 1;
    }
    if (raft_uv_init(&io, &loop, dir, &transport) != 0) {
        fprintf(stderr, "jinn: raft storage in %s: %s\n", dir, io.errmsg);
        goto close_transport;
    }
    if (io.init(&io, id, address) != 0 ||
        io.load(&io, &term, &vote, &loaded, &start, &entries, &n_entries) != 0) {
        fprintf(stderr, "jinn: raft storage in %s: %s\n", dir, io.errmsg);
        goto close_io;
    }
    if (loaded != NULL || n_entries != 0 || term != 0) {
        fprintf(stderr, "jinn: %s already holds raft state; restore seeds empty data dirs\n",
                dir);
        goto close_io;
    }
    /* No bootstrap entry: libraft starts from a snapshot at any index. */
    if (io.set_term(&io, 1) != 0) {
        fprintf(stderr, "jinn: writing the term in %s: %s\n", dir, io.errmsg);
        goto close_io;
    }
    memset(&snap, 0, sizeof snap);
    snap.index = index;
    snap.term = 1;
    snap.configuration = *conf;
    snap.configuration_index = index;
    buf.base = state->data;
    buf.len = state->len;
    snap.bufs = &buf;
    snap.n_bufs = 1;
    req.data = &s;
    if (io.snapshot_put(&io, 0, &req, &snap, seed_put_cb) != 0) {
        fprintf(stderr, "jinn: writing the snapshot in %s: %s\n", dir, io.errmsg);
        goto close_io;
    }
    while (!s.done) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    if (s.status != 0) {
        fprintf(stderr, "jinn: writing the snapshot in %s failed: %s\n", dir,
                raft_strerror(s.status));
        goto close_io;
    }
    rv = 0;
close_io:
    if (entries != NULL) {
        for (size_t i = 0; i < n_entries; i++) {
            if (entries[i].batch == NULL) {
                raft_free(entries[i].buf.base);
            }
        }
        if (n_entries > 0 && entries[0].batch != NULL) {
            raft_free(entries[0].batch);
        }
        raft_free(entries);
    }
    if (loaded != NULL) {
        raft_configuration_close(&loaded->configuration);
        for (unsigned i = 0; i < loaded->n_bufs; i++) {
            raft_free(loaded->bufs[i].base);
        }
        raft_free(loaded->bufs);
        raft_free(loaded);
    }
    io.close(&io, seed_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    raft_uv_close(&io);
close_transport:
    raft_uv_tcp_close(&transport);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rv;
}

static bool dir_in_use(const char *dir)
{
    char path[4200];
    const char *files[] = {"metadata1", "metadata2", "jinn.id"};
    for (unsigned i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%.4100s/%s", dir, files[i]);
        if (access(path, F_OK) == 0) {
            return true;
        }
    }
    return false;
}

static int mkdir_p(const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* FNV-1a 64, for the derived cluster id. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    }
    return h;
}

struct peer {
    char name[JINN_NAME_MAX + 1];
    char address[256];
};

static int peer_cmp(const void *a, const void *b)
{
    return strcmp(((const struct peer *)a)->name, ((const struct peer *)b)->name);
}

static int cmd_restore(int argc, char **argv)
{
    const char *file = NULL, *data_dir = NULL, *only = NULL, *cid_text = NULL;
    struct peer peers[JINN_CONFIG_MAX_PEERS];
    unsigned n_peers = 0, replicas = 0;
    struct loaded l;
    struct jinn_wbuf state;
    struct raft_configuration conf;
    uint64_t cid;
    int rv = 1;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--data-dir") == 0 && i + 1 < argc) {
            data_dir = argv[++i];
        } else if (strcmp(a, "--name") == 0 && i + 1 < argc) {
            const char *v = argv[++i], *eq = strchr(v, '=');
            if (eq == NULL || eq == v || (size_t)(eq - v) > JINN_NAME_MAX || eq[1] == '\0' ||
                strlen(eq + 1) >= sizeof peers[0].address || n_peers == JINN_CONFIG_MAX_PEERS) {
                fprintf(stderr,
                        "jinn: snapshot restore: --name wants NAME=HOST:PORT (the "
                        "node's cluster_listen address), at most %d\n",
                        JINN_CONFIG_MAX_PEERS);
                return 2;
            }
            snprintf(peers[n_peers].name, sizeof peers[0].name, "%.*s", (int)(eq - v), v);
            snprintf(peers[n_peers].address, sizeof peers[0].address, "%s", eq + 1);
            n_peers++;
        } else if (strcmp(a, "--node") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strcmp(a, "--replicas") == 0 && i + 1 < argc) {
            replicas = (unsigned)atoi(argv[++i]);
        } else if (strcmp(a, "--cluster-id") == 0 && i + 1 < argc) {
            cid_text = argv[++i];
        } else if (file == NULL && a[0] != '-') {
            file = a;
        } else {
            fprintf(stderr, "jinn: snapshot restore: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (file == NULL || data_dir == NULL || n_peers == 0) {
        fprintf(stderr,
                "usage: jinn snapshot restore FILE --data-dir DIR --name NAME=HOST:PORT "
                "[--name ...] [--node NAME] [--replicas N] [--cluster-id HEX]\n");
        return 2;
    }
    if (replicas == 0 || replicas > n_peers) {
        replicas = n_peers;
    }
    /* By name: the derived cluster id and the voters (the first
     * --replicas) must not depend on the order the names were given in,
     * or machines restoring with --node could seed different clusters
     * (rev1 m4). */
    qsort(peers, n_peers, sizeof peers[0], peer_cmp);
    if (only != NULL) {
        bool found = false;
        for (unsigned i = 0; i < n_peers; i++) {
            found = found || strcmp(peers[i].name, only) == 0;
        }
        if (!found) {
            fprintf(stderr,
                    "jinn: snapshot restore: --node %s is not one of the --name nodes\n", only);
            return 2;
        }
    }
    for (unsigned i = 0; i < n_peers; i++) {
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(peers[i].name, peers[j].name) == 0) {
                fprintf(stderr, "jinn: snapshot restore: %s named twice\n", peers[i].name);
                return 2;
            }
        }
    }
    if (mkdir_p(data_dir) != 0) {
        fprintf(stderr, "jinn: cannot create %s: %s\n", data_dir, strerror(errno));
        return 1;
    }
    /* Every target must be empty before anything is written. */
    for (unsigned i = 0; i < n_peers; i++) {
        char dir[4200];
        if (only != NULL && strcmp(peers[i].name, only) != 0) {
            continue;
        }
        if (only != NULL || n_peers == 1) {
            snprintf(dir, sizeof dir, "%.4000s", data_dir);
        } else {
            snprintf(dir, sizeof dir, "%.4000s/%.64s", data_dir, peers[i].name);
        }
        if (dir_in_use(dir)) {
            fprintf(stderr,
                    "jinn: %s already holds a node's state; restore seeds empty data "
                    "dirs only\n",
                    dir);
            return 1;
        }
    }
    if (load(file, data_dir, &l) != 0) {
        loaded_free(&l);
        return 1;
    }
    /* The node directory (API URLs) is the old cluster's: the new nodes
     * announce theirs. The rest of the state is restored as it was. */
    jinn_nodes_clear(&l.fsm.nodes);
    jinn_nodes_init(&l.fsm.nodes);
    jinn_wbuf_init(&state);
    if (jinn_fsm_encode(&l.fsm, &state) != 0) {
        fprintf(stderr, "jinn: out of memory\n");
        goto out;
    }
    if (cid_text != NULL) {
        char *end;
        cid = strtoull(cid_text, &end, 16);
        if (*end != '\0' || cid == 0) {
            fprintf(stderr, "jinn: --cluster-id wants a non-zero hex number\n");
            goto out;
        }
        if (cid == l.h.cluster_id) {
            /* The copy must never be able to talk to its original. */
            fprintf(stderr,
                    "jinn: --cluster-id %016" PRIx64 " is the backed-up cluster's own id; "
                    "a restore makes a new cluster, give another id\n",
                    cid);
            goto out;
        }
    } else {
        /* Derived, so that restoring the same file with the same nodes on
         * every machine (--node) agrees without talking; never the old
         * cluster's id. */
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        h = fnv(h, "jinn restore", 12);
        h = fnv(h, &l.h.cluster_id, sizeof l.h.cluster_id);
        h = fnv(h, &l.h.index, sizeof l.h.index);
        h = fnv(h, state.data, state.len < 4096 ? state.len : 4096);
        for (unsigned i = 0; i < n_peers; i++) {
            h = fnv(h, peers[i].name, strlen(peers[i].name) + 1);
            h = fnv(h, peers[i].address, strlen(peers[i].address) + 1);
        }
        cid = h & ((UINT64_C(1) << 53) - 1);
        if (cid == l.h.cluster_id || cid == 0) {
            cid ^= 1;
        }
    }
    raft_configuration_init(&conf);
    for (unsigned i = 0; i < n_peers; i++) {
        if (raft_configuration_add(&conf, jinn_node_id_for(peers[i].name), peers[i].address,
                                   i < replicas ? RAFT_VOTER : RAFT_STANDBY) != 0) {
            fprintf(stderr, "jinn: --name %s=%s: refused (duplicate id or address)\n",
                    peers[i].name, peers[i].address);
            raft_configuration_close(&conf);
            goto out;
        }
    }
    for (unsigned i = 0; i < n_peers; i++) {
        char dir[4200];
        uint64_t id = jinn_node_id_for(peers[i].name);
        uint64_t at = l.h.index > 0 ? l.h.index : 1;
        if (only != NULL && strcmp(peers[i].name, only) != 0) {
            continue;
        }
        if (only != NULL || n_peers == 1) {
            snprintf(dir, sizeof dir, "%.4000s", data_dir);
        } else {
            snprintf(dir, sizeof dir, "%.4000s/%.64s", data_dir, peers[i].name);
        }
        if (mkdir_p(dir) != 0) {
            fprintf(stderr, "jinn: cannot create %s: %s\n", dir, strerror(errno));
            raft_configuration_close(&conf);
            goto out;
        }
        /* The identity first: a dir whose seeding was interrupted then has
         * the new cluster id and is refused by a second restore, never a
         * raft state without jinn.id (which jinn run would give an id
         * derived from its config, possibly the old cluster's; rev1 m2). */
        if (jinn_node_write_identity(dir, id, cid, peers[i].name) != 0 ||
            seed_dir(dir, id, peers[i].address, &conf, at, &state) != 0) {
            raft_configuration_close(&conf);
            goto out;
        }
        printf("seeded %s: node %s (%s), cluster %016" PRIx64 "\n", dir, peers[i].name,
               peers[i].address, cid);
    }
    raft_configuration_close(&conf);
    printf("restored index %" PRIu64 " of cluster %016" PRIx64 " into a new cluster %016" PRIx64
           "; start each node with jinn run -c FILE (no --bootstrap), data_dir as above\n",
           l.h.index, l.h.cluster_id, cid);
    rv = 0;
out:
    jinn_wbuf_free(&state);
    loaded_free(&l);
    return rv;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage:\n"
        "  jinn snapshot save FILE [--addr URL]     stream a consistent backup from the "
        "leader\n"
        "  jinn snapshot inspect FILE [--json]      verify a backup and show what it holds\n"
        "  jinn snapshot restore FILE --data-dir DIR --name NAME=HOST:PORT [--name ...]\n"
        "                [--node NAME] [--replicas N] [--cluster-id HEX]\n"
        "                                           seed the data dirs of a new cluster\n");
}

int jinn_cli_snapshot(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    if (argc >= 1 && strcmp(argv[0], "save") == 0) {
        return cmd_save(argc - 1, argv + 1);
    }
    if (argc >= 1 && strcmp(argv[0], "inspect") == 0) {
        return cmd_inspect(argc - 1, argv + 1);
    }
    if (argc >= 1 && strcmp(argv[0], "restore") == 0) {
        return cmd_restore(argc - 1, argv + 1);
    }
    usage(stderr);
    return 2;
}
