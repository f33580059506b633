/* node.c - see node.h.
 *
 * Everything here runs on the event loop thread. libraft's uv backend does
 * its disk I/O on libuv's thread pool, so no call below blocks the loop. */
#include "node.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "disk.h"
#include "error.h"
#include "clock.h"
#include "fresh.h"
#include "fsm/fatal.h"
#include "ioguard.h"
#include "log.h"
#include "peerguard.h"

/* How often the node looks after its membership duties. */
#define TICK_MS 100u
/* A tick this late means the loop stalled; messages read in the next
 * STALL_DISTRUST_MS may be old and do not count for freshness. */
#define STALL_MS (3u * TICK_MS)
#define STALL_DISTRUST_MS (2u * TICK_MS)
/* A member seen within this many election timeouts counts as healthy. */
#define HEALTHY_TIMEOUTS 2u
/* Last contact is tracked for this many raft ids at most. */
#define SEEN_MAX (2u * JINN_CONFIG_MAX_PEERS)
/* The identity file in data_dir (see write_identity). */
#define ID_FILE "jinn.id"
#define ID_FILE_VERSION 1
#define ID_FILE_MAX 1024
/* How long a --bootstrap node waits for each peer's probe answer. */
#define BOOTSTRAP_PROBE_MS 1000u
/* A new voter is promoted once its log is at most this far behind. */
#define CATCHUP_SLACK 64u
/* How long `members add` waits for a new voter to catch up. */
#define CATCHUP_MAX_MS 120000u

enum start_mode { MODE_RECOVER, MODE_BOOTSTRAP, MODE_JOIN };

enum op_step { OP_NONE, OP_PROBE, OP_ADD, OP_STANDBY, OP_CATCHUP, OP_VOTER, OP_REMOVE,
               OP_ASSIGN };

/* The one operator membership change in flight (members add/remove/...). */
struct member_op {
    enum op_step step;
    uint64_t id;
    char name[JINN_NAME_MAX + 1];
    char address[256];
    bool standby; /* add: stop once it replicates as a standby */
    int role;     /* assign: the target role */
    uint64_t deadline;
    jinn_member_cb cb;
    void *data;
};

struct proposal {
    struct raft_apply req; /* req.data == this */
    struct jinn_node *node;
    jinn_propose_cb cb; /* NULL once the caller has been answered */
    void *data;
    uv_timer_t timer;
    /* jinn_node_propose_many: n entries from req.index on, appended in one
     * raft_apply. libraft answers req at the first; node_applied collects
     * every entry's result (on the node's list while unanswered). */
    jinn_propose_many_cb many_cb; /* NULL once answered */
    unsigned n, got;
    uint64_t term;  /* the leader's term when proposed */
    bool raft_done; /* libraft has called req's callback */
    struct proposal *next_many;
    bool listed; /* on node->many */
    struct jinn_result *res; /* n of them */
};

/* Module bytes of deploys applied since the last snapshot this node forced,
 * beyond which it forces another at once (snapshot_threshold aside). Each
 * FN_DEPLOY entry (up to 16 MiB) otherwise stays in libraft's in-memory log
 * and its segments until snapshot_threshold + snapshot_trailing entries
 * pass it: 40 deploys of 15 MiB grew every replica by ~1 GiB (rev1 M1). */
#define DEPLOY_LOG_BYTES_MAX (64u << 20)
/* Entries kept behind a forced snapshot. Not 0: raft_uv takes trailing 0
 * for a snapshot being installed and would drop the log after it. */
#define FORCED_SNAPSHOT_TRAILING 1

static void node_applied(void *data, uint64_t index);

struct read_waiter {
    jinn_read_cb cb;
    void *data;
    struct read_waiter *next;
};

#define JOIN_IDS_MAX 8 /* peers a node without configuration talks with */

/* How often a replica checks that its primary heartbeats still arrive. */
#define REPLICA_TICK_MS 50u
/* Bytes kept of a heartbeat's leader URL and names. */
#define REPLICA_URL_MAX 300

/* A replica's view of its stream and of the cluster (node.h). */
struct replica_state {
    uint64_t position;               /* last record applied or restored */
    enum jinn_replica_state client;  /* what the stream client says it does */
    char source[JINN_CONFIG_MAX_URL + 1];
    bool forced_read_only; /* the client said READ_ONLY: until a primary heartbeat */
    bool read_only;        /* writes answer 503 read_only */
    uint64_t started;      /* loop ms of start */
    /* The last primary heartbeat: who leads, and what it had committed. */
    uint64_t last_primary; /* loop ms; 0: never */
    uint64_t term, leader_id, leader_commit;
    uint64_t election_timeout_ms; /* the cluster's, as last heard; 0: never said */
    char leader_name[JINN_NAME_MAX + 1];
    char leader_api[REPLICA_URL_MAX];
    uint64_t heartbeats, primary_heartbeats, applied, restores;
    uint64_t sql_generation;  /* data_dir/sql/GENERATION: bumped at each restore */
    uint64_t mismatch_logged; /* loop ms another cluster's heartbeat was logged */
    bool halted;              /* a fatal condition: applies nothing more */
    /* The last heartbeat's position and applied index (0: none sent): at
     * that position we have all the node had applied (see replica_applied),
     * and the largest such index announced to the apply hook. */
    uint64_t hb_position, hb_applied, announced;
    uv_timer_t timer;
    bool timer_on;
};

struct jinn_node {
    uv_loop_t *loop;
    const struct jinn_config *cfg;
    uint64_t id;
    const char *address; /* our advertised raft address (cfg-owned) */
    char api_url[300];   /* what we announce to the cluster */

    struct raft_uv_transport transport;
    struct raft_io io;          /* raft_uv: disk and network */
    struct jinn_ioguard guard;  /* what raft talks to; wraps io */
    struct jinn_fresh fresh;    /* honest staleness (fresh.h) */
    struct raft raft;
    struct jinn_fsm fsm;
    bool transport_ready, io_ready, raft_ready;
    int lock_fd;

    uv_timer_t tick;
    uint64_t last_stamp_ms;        /* last cluster time we proposed */
    struct jinn_clock clock;       /* cluster time (clock.h) */
    int64_t test_clock_offset_ms;  /* TEST ONLY: JINN_TEST_CLOCK_OFFSET_MS */
    uint64_t seen_time, seen_mono; /* applied cluster time, and when (mono ms) seen */
    uint64_t last_tick;            /* loop ms of the last tick */
    uint64_t distrust_until;       /* loop ms: messages may be stale in transit */
    uint64_t last_leader_contact;  /* loop ms; 0 = never */
    struct {
        uint64_t id, at; /* loop ms a message from id was last seen */
    } seen[SEEN_MAX];
    uint64_t cluster_id;  /* 0 while a new member has not been contacted */
    enum start_mode mode;
    struct jinn_peerguard pg; /* checks cluster identity on raft streams */
    uint64_t join_ids[JOIN_IDS_MAX]; /* ids admitted before we had a configuration */
    unsigned n_join_ids;
    struct member_op op;
    uint64_t auto_pause_until; /* loop ms: no automatic promotion before */
    struct raft_transfer op_transfer; /* jinn leader transfer */
    jinn_member_cb transfer_cb;
    void *transfer_data;
    unsigned probes_left;
    bool probe_ok[JINN_CONFIG_MAX_PEERS]; /* peer answered: no cluster state */
    char refuse_msg[512];
    raft_index checked_config; /* configuration compared with cluster_peers */
    char note[600];
    bool was_leader;
    /* What the log last said, so changes are logged once (not per tick). */
    uint64_t logged_leader;                    /* leader id last logged; 0 none */
    bool logged_leader_set;                    /* a leader state was logged */
    uint64_t logged_down[JINN_CONFIG_MAX_PEERS]; /* leader: peers logged unreachable */
    uint64_t leader_since;                     /* loop ms this node became leader */

    uint64_t announce_next;   /* loop ms before which we do not re-announce */
    uint64_t forget_next;     /* loop ms before which we propose no removal */
    bool bad_url_logged;
    jinn_announce_fn announcer;
    void *announcer_data;

    bool change_inflight;
    struct raft_change change;
    struct raft_barrier barrier; /* commits the start of each leader term */
    bool barrier_inflight;
    uint64_t ready_term; /* term whose barrier has been applied */
    uint64_t orphans_term; /* term whose first command was LOCK_ORPHANS */
    struct raft_transfer transfer;

    /* Linearizable reads: `reading` wait on the barrier in flight, `queued`
     * arrived after it started and wait for the next one. */
    struct raft_barrier read_barrier;
    bool read_barrier_inflight;
    struct read_waiter *reading, *queued, **queued_tail;
    struct read_waiter *finished; /* answered from `kick`, outside raft's stack */
    int finished_code;
    uv_timer_t kick;
    uint64_t read_barriers, reads_linearized;
    bool time_tick_inflight; /* a NOOP proposed to advance cluster time */

    /* Snapshots forced by deploy bytes (node_applied): the fns counter at
     * the last one, the index it was asked at (0: none pending). */
    uint64_t deploy_bytes_base;
    uint64_t forced_snapshot;
    void (*apply_hook)(void *data, uint64_t index);
    void *apply_hook_data;
    /* The stream feed (jinn_node_set_stream_hooks): the last record's
     * index, or the applied index where a restored snapshot left it. */
    void (*record_hook)(void *data, uint64_t index, uint64_t prev, const void *buf,
                        size_t len);
    void (*restore_hook)(void *data, uint64_t index);
    void *stream_hook_data;
    uint64_t stream_pos;
    bool restore_pending; /* restored; raft sets the index after the FSM's restore */

    bool stopping;
    unsigned inflight;  /* proposals raft has not answered yet */
    unsigned unanswered; /* proposals whose caller has not been answered yet */
    /* propose_many proposals still collecting results, oldest first: all of
     * one term (a proposal in a new term first answers the older ones), so
     * in the order of their log indexes */
    struct proposal *many, *many_tail;
    uint64_t drain_deadline;
    uv_timer_t drain;
    void (*stop_cb)(void *data);
    void *stop_data;
    uint64_t proposals_ok, proposals_failed;

    struct jinn_disk disk;             /* free space on data_dir */
    struct raft_transfer disk_transfer; /* a full leader hands over */
    bool disk_transfer_inflight;
    uint64_t disk_transfer_next; /* loop ms before which we do not try again */
    uint64_t io_error_next;      /* loop ms before which raft I/O errors are not logged */

    /* Edge replica mode (jinn_node_create_replica): no raft at all. */
    bool replica;
    struct replica_state rep;
};

/* ---- allocation: raft allocates through jinn's wrapper too -------------- */

/* libraft allocates what a peer's message declares before reading it. No
 * real message comes near 1 TiB: such a length is hostile, and refused the
 * way malloc refuses it in a release build (the sanitizer build would abort
 * instead, so a client could stop a test node with 40 bytes). */
#define RAFT_ALLOC_MAX (UINT64_C(1) << 40)

static void *heap_malloc(void *d, size_t n)
{
    (void)d;
    return n > RAFT_ALLOC_MAX ? NULL : jinn_malloc(n);
}
static void heap_free(void *d, void *p)
{
    (void)d;
    jinn_free(p);
}
static void *heap_calloc(void *d, size_t n, size_t size)
{
    (void)d;
    return size != 0 && n > RAFT_ALLOC_MAX / size ? NULL : jinn_calloc(n, size);
}
static void *heap_realloc(void *d, void *p, size_t n)
{
    (void)d;
    return n > RAFT_ALLOC_MAX ? NULL : jinn_realloc(p, n);
}
static void *heap_aligned_alloc(void *d, size_t alignment, size_t n)
{
    (void)d;
    if (n > RAFT_ALLOC_MAX) {
        return NULL;
    }
    return aligned_alloc(alignment, (n + alignment - 1) / alignment * alignment);
}
static void heap_aligned_free(void *d, size_t alignment, void *p)
{
    (void)d;
    (void)alignment;
    free(p);
}

static struct raft_heap jinn_raft_heap = {NULL,        heap_malloc,        heap_free,
                                          heap_calloc, heap_realloc,       heap_aligned_alloc,
                                          heap_aligned_free};

uint64_t jinn_node_id_for(const char *name)
{
    /* 53 bits: ids stay exact as JSON numbers in every client language. */
    uint64_t id = raft_digest(name, 0) & ((UINT64_C(1) << 53) - 1);
    return id == 0 ? 1 : id;
}

const char *jinn_role_name(enum jinn_role role)
{
    static const char *const names[] = {"unavailable", "follower", "candidate", "leader",
                                        "standby",     "joining",  "replica"};
    return names[role];
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* TEST ONLY hooks, read once at start and logged loudly when set:
 * JINN_TEST_CLOCK_OFFSET_MS (signed) shifts this node's wall clock, to test
 * clock steps and skewed leaders; JINN_TEST_APPEND_DELAY_MS makes its log
 * writes report completion that much later (a slow disk);
 * JINN_TEST_APPEND_FAULT_FILE makes them fail at once while that file
 * exists (a failing disk). */
static long long test_env_ms(const char *name, long long min, long long max, const char *what)
{
    const char *v = getenv(name);
    long long ms;
    char *end;
    if (v == NULL || *v == '\0') {
        return 0;
    }
    ms = strtoll(v, &end, 10);
    if (*end != '\0' || ms < min || ms > max) {
        jinn_warn("ignoring %s=%s (%lld to %lld)", name, v, min, max);
        return 0;
    }
    jinn_warn("TEST ONLY: %s by %lld ms (%s)", what, ms, name);
    return ms;
}

/* The same for the hooks that name a file (JINN_TEST_APPEND_FAULT_FILE,
 * JINN_TEST_APPEND_FAIL_ONCE_FILE, JINN_TEST_SNAPSHOT_INSTALL_FAIL_ONCE_FILE):
 * NULL when unset or empty. */
static const char *test_env_file(const char *name, const char *what)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        return NULL;
    }
    jinn_warn("TEST ONLY: %s %s exists (%s)", what, v, name);
    return v;
}

static uint64_t term_of(const struct raft *r, uint64_t index);

/* True when no leader before this one committed anything: every entry past
 * the bootstrap configuration (index 1) is of the current term (terms never
 * decrease along the log), and nothing was compacted. No entry in such a
 * log carries a cluster time this leader did not stamp itself. */
static bool fresh_log(struct raft *r)
{
    uint64_t last = raft_last_index(r);
    return r->log.snapshot.last_index == 0 &&
           (last < 2 || term_of(r, 2) == r->current_term);
}

/* The cluster time a command proposed now gets (clock.h). */
static uint64_t cluster_now(struct jinn_node *node, bool commit)
{
    uint64_t wall = wall_ms() + (uint64_t)node->test_clock_offset_ms; /* wraps as signed */
    uint64_t mono = uv_hrtime() / 1000000u;
    uint64_t resume = 0;
    if (node->seen_time != 0 && node->seen_time == node->fsm.time_ms) {
        resume = node->seen_time + (mono - node->seen_mono);
    }
    if (node->ready_term != node->raft.current_term) {
        /* A new leader that has not applied its log yet does not know the
         * cluster time: no anchor (and no wall clock) until it has. */
        uint64_t t = node->fsm.time_ms > node->clock.last ? node->fsm.time_ms : node->clock.last;
        t = resume > t ? resume : t;
        if (t == 0 && fresh_log(&node->raft)) {
            /* A fresh cluster has no time to continue from: stamped 0, a
             * lock or TTL granted now ran out at the first stamped entry
             * (0 + ttl is long past the wall clock). */
            return wall;
        }
        return t;
    }
    return jinn_clock_stamp(&node->clock, node->raft.current_term, mono, wall,
                            node->fsm.time_ms, resume, commit);
}

static int peer_index(const struct jinn_node *node, uint64_t id)
{
    for (unsigned i = 0; i < node->cfg->n_peers; i++) {
        if (jinn_node_id_for(node->cfg->peers[i].name) == id) {
            return (int)i;
        }
    }
    return -1;
}

static const struct raft_server *self_server(const struct jinn_node *node)
{
    for (unsigned i = 0; i < node->raft.configuration.n; i++) {
        if (node->raft.configuration.servers[i].id == node->id) {
            return &node->raft.configuration.servers[i];
        }
    }
    return NULL;
}

/* ---- creation and start -------------------------------------------------- */

static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof buf) {
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            buf[i] = saved;
        }
    }
    return 0;
}

/* ---- the stream feed's hooks (net/stream.c) -------------------------------- */

/* libraft sets last_applied to a restored snapshot's index only after the
 * FSM's restore returns: the position is taken on the next look. No
 * command was applied in between, so the state there is the snapshot's. */
static void resolve_restore(struct jinn_node *node)
{
    if (!node->restore_pending) {
        return;
    }
    node->restore_pending = false;
    node->stream_pos = raft_last_applied(&node->raft);
    if (node->restore_hook != NULL) {
        node->restore_hook(node->stream_hook_data, node->stream_pos);
    }
}

static void node_restored(void *data)
{
    struct jinn_node *node = data;
    node->restore_pending = true;
}

static void node_record(void *data, uint64_t index, const void *buf, size_t len)
{
    struct jinn_node *node = data;
    uint64_t prev;
    resolve_restore(node);
    prev = node->stream_pos;
    node->stream_pos = index;
    if (node->record_hook != NULL) {
        node->record_hook(node->stream_hook_data, index, prev, buf, len);
    }
}

int jinn_node_create(uv_loop_t *loop, const struct jinn_config *cfg, struct jinn_node **out)
{
    struct jinn_node *node = jinn_calloc(1, sizeof *node);
    unsigned self = jinn_config_self(cfg);

    if (node == NULL) {
        return JINN_ENOMEM;
    }
    raft_heap_set(&jinn_raft_heap);
    node->loop = loop;
    node->cfg = cfg;
    node->id = jinn_node_id_for(cfg->server_name);
    node->address = cfg->peers[self].address;
    node->lock_fd = -1;
    node->queued_tail = &node->queued;
    if (cfg->http_advertise != NULL) {
        snprintf(node->api_url, sizeof node->api_url, "%s", cfg->http_advertise);
    } else {
        snprintf(node->api_url, sizeof node->api_url, "http://%s", cfg->http_listen);
    }
    jinn_fsm_init(&node->fsm);
    node->fsm.on_apply = node_applied;
    node->fsm.on_apply_data = node;
    node->fsm.on_record = node_record;
    node->fsm.on_restore = node_restored;
    node->fsm.on_record_data = node;
    *out = node;
    return 0;
}

/* One jinn per data_dir: a second one would corrupt the log. */
static int lock_data_dir(struct jinn_node *node)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/LOCK", node->cfg->data_dir);
    node->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (node->lock_fd < 0) {
        jinn_error("cannot open %s: %s", path, strerror(errno));
        return JINN_EIO;
    }
    if (flock(node->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        jinn_error("data_dir %s is in use by another jinn process", node->cfg->data_dir);
        return JINN_EIO;
    }
    return 0;
}

static int bootstrap(struct jinn_node *node)
{
    struct raft_configuration conf;
    int rv;

    raft_configuration_init(&conf);
    for (unsigned i = 0; i < node->cfg->n_peers; i++) {
        const struct jinn_peer *p = &node->cfg->peers[i];
        int role = i < node->cfg->replicas ? RAFT_VOTER : RAFT_STANDBY;
        rv = raft_configuration_add(&conf, jinn_node_id_for(p->name), p->address, role);
        if (rv != 0) {
            jinn_error("cluster_peers: %s: %s", p->name, raft_strerror(rv));
            raft_configuration_close(&conf);
            return JINN_ECONFIG;
        }
    }
    rv = raft_bootstrap(&node->raft, &conf);
    raft_configuration_close(&conf);
    if (rv != 0) {
        jinn_error("bootstrap: %s", raft_errmsg(&node->raft));
        return JINN_ERAFT;
    }
    jinn_info("bootstrapped a new cluster of %u peers (%u voters)", node->cfg->n_peers,
              node->cfg->replicas);
    return 0;
}

/* ---- identity: jinn.id ----------------------------------------------------
 *
 * data_dir/jinn.id holds who this node is: format version, raft id, cluster
 * id, server name, then a CRC-32 of the lines before it. It is written
 * once (and again when a new member learns its cluster id), atomically:
 * tmp file, fsync, rename, fsync of the directory. A node whose data_dir
 * was wiped gets a fresh random id, so it can never come back as the voter
 * it used to be: that voter's votes and log are gone with the data. */

struct identity {
    uint64_t id;
    uint64_t cluster_id;
    char name[JINN_NAME_MAX + 1];
};

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv;
    if (fd < 0) {
        return -1;
    }
    rv = fsync(fd);
    close(fd);
    return rv;
}

/* Writes dir/name with text atomically and durably: a temporary file,
 * fsynced, renamed over name, then the directory fsynced. */
static int write_file_atomic(const char *dir, const char *name, const char *text, size_t n)
{
    char path[4200], tmp[4210];
    int fd;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        jinn_error("cannot write %s: %s", tmp, strerror(errno));
        return JINN_EIO;
    }
    if (write(fd, text, n) != (ssize_t)n || fsync(fd) != 0) {
        jinn_error("cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        return JINN_EIO;
    }
    close(fd);
    if (rename(tmp, path) != 0 || fsync_dir(dir) != 0) {
        jinn_error("cannot write %s: %s", path, strerror(errno));
        return JINN_EIO;
    }
    return 0;
}

static int write_identity(const char *dir, const struct identity *ident)
{
    char text[ID_FILE_MAX];
    int n;
    uint32_t crc;

    n = snprintf(text, sizeof text, "jinn-identity %d\nnode_id %llu\ncluster_id %016llx\nname %s\n",
                 ID_FILE_VERSION, (unsigned long long)ident->id,
                 (unsigned long long)ident->cluster_id, ident->name);
    if (n < 0 || (size_t)n + 32 > sizeof text) {
        return JINN_EINVAL;
    }
    crc = jinn_crc32(0, text, (size_t)n);
    n += snprintf(text + n, sizeof text - (size_t)n, "crc32 %08x\n", crc);
    return write_file_atomic(dir, ID_FILE, text, (size_t)n);
}

/* 0: read; JINN_ENOTFOUND: no file; JINN_EIO: unreadable or corrupt
 * (logged). */
static int read_identity(const char *dir, struct identity *ident)
{
    char path[4200], text[ID_FILE_MAX + 1];
    unsigned long long id, cid;
    unsigned crc;
    int version, fd, consumed = 0;
    ssize_t n;
    const char *crc_line;

    snprintf(path, sizeof path, "%s/%s", dir, ID_FILE);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return JINN_ENOTFOUND;
        }
        jinn_error("cannot read %s: %s", path, strerror(errno));
        return JINN_EIO;
    }
    n = read(fd, text, ID_FILE_MAX);
    close(fd);
    if (n < 0) {
        jinn_error("cannot read %s: %s", path, strerror(errno));
        return JINN_EIO;
    }
    text[n] = '\0';
    crc_line = strstr(text, "crc32 ");
    memset(ident, 0, sizeof *ident);
    if (crc_line == NULL || sscanf(crc_line, "crc32 %8x", &crc) != 1 ||
        jinn_crc32(0, text, (size_t)(crc_line - text)) != crc) {
        jinn_error("%s is corrupt (checksum): refusing to guess this node's identity; "
                   "restore the file or wipe the data_dir and add the node again",
                   path);
        return JINN_EIO;
    }
    version = 0;
    /* %llu takes "-5" and saturates past 2^64: ids are 53 bits (see
     * jinn_node_id_for), anything else is not an id this node was given. */
    if (sscanf(text, "jinn-identity %d\nnode_id %llu\ncluster_id %llx\nname %64s\n%n", &version,
               &id, &cid, ident->name, &consumed) != 4 ||
        version != ID_FILE_VERSION || id == 0 || id >= (UINT64_C(1) << 53)) {
        jinn_error("%s: not a valid identity (format version %d; this jinn reads version %d, "
                   "node_id 1 to 2^53-1)",
                   path, version, ID_FILE_VERSION);
        return JINN_EIO;
    }
    ident->id = id;
    ident->cluster_id = cid;
    return 0;
}

/* Whether data_dir holds raft state (libraft writes metadata1/2 first). */
static bool has_raft_state(const char *dir)
{
    char path[4200];
    struct stat st;
    for (int i = 1; i <= 2; i++) {
        snprintf(path, sizeof path, "%s/metadata%d", dir, i);
        if (stat(path, &st) == 0) {
            return true;
        }
    }
    return false;
}

static uint64_t random_id(void)
{
    uint64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
            v = wall_ms() ^ ((uint64_t)getpid() << 32); /* getrandom cannot fail here */
        }
        v &= (UINT64_C(1) << 53) - 1;
    }
    return v;
}

static int cmp_peer(const void *a, const void *b)
{
    const struct jinn_peer *x = a, *y = b;
    return strcmp(x->name, y->name);
}

uint64_t jinn_node_cluster_id_for(const struct jinn_config *cfg)
{
    /* Every node bootstrapping the same configuration computes the same id,
     * without talking to the others. */
    struct jinn_peer sorted[JINN_CONFIG_MAX_PEERS];
    struct jinn_wbuf w;
    uint64_t id;

    memcpy(sorted, cfg->peers, cfg->n_peers * sizeof sorted[0]);
    qsort(sorted, cfg->n_peers, sizeof sorted[0], cmp_peer);
    jinn_wbuf_init(&w);
    jinn_wbuf_printf(&w, "jinn cluster %s replicas %u", cfg->cluster_name, cfg->replicas);
    for (unsigned i = 0; i < cfg->n_peers; i++) {
        jinn_wbuf_printf(&w, "\n%s=%s", sorted[i].name, sorted[i].address);
    }
    jinn_wbuf_put_u8(&w, 0);
    id = w.failed ? 0 : raft_digest((const char *)w.data, cfg->n_peers);
    jinn_wbuf_free(&w);
    return id == 0 ? 1 : id;
}

struct bootstrap_probe {
    struct jinn_node *node;
    unsigned peer; /* index in cfg->peers */
};

static void bootstrap_probed(void *data, const struct jinn_probe_result *res)
{
    struct bootstrap_probe *bp = data;
    struct jinn_node *node = bp->node;
    const struct jinn_peer *p = &node->cfg->peers[bp->peer];

    node->probes_left--;
    if (res->state != JINN_PROBE_OK) {
        jinn_free(bp);
        return; /* asked again next round */
    }
    if (res->other_cluster || (res->cluster_id != 0 && res->cluster_id != node->cluster_id)) {
        /* (without TLS a probe learns no cluster id but its own: 0) */
        snprintf(node->refuse_msg, sizeof node->refuse_msg,
                 "%s (%s) belongs to another cluster (%016llx; 0: not told): check "
                 "cluster_name and cluster_peers",
                 p->name, p->address, (unsigned long long)res->cluster_id);
    } else if (res->has_state || res->knows_sender) {
        /* A running cluster: this node may be one of its voters whose
         * data_dir was wiped (maybe before it announced itself), and a
         * voter must never come back with its vote and log forgotten. */
        snprintf(node->refuse_msg, sizeof node->refuse_msg,
                 "%s (%s) already belongs to a running cluster. A new node, or a member "
                 "whose data_dir was lost, joins without --bootstrap: start it without "
                 "--bootstrap, then from a member run: jinn members remove %s; jinn members "
                 "add %s=%s",
                 p->name, p->address, node->cfg->server_name, node->cfg->server_name,
                 node->address);
    } else {
        node->probe_ok[bp->peer] = true;
    }
    jinn_free(bp);
}

static void probe_round_wait(uv_timer_t *t)
{
    struct jinn_node *node = t->data;
    node->probes_left--;
}

/* Before founding a cluster, every peer in cluster_peers must answer that
 * it holds no cluster state: a peer that is down might be a running
 * cluster's member, and this node one of its wiped voters. Peers started
 * together with --bootstrap answer each other (jinn_probe_server) while
 * they wait. The first disqualifying answer refuses at once. */
static int probe_before_bootstrap(struct jinn_node *node)
{
    const struct jinn_config *cfg = node->cfg;
    struct jinn_probe_server srv;
    uint64_t next_log = 0;
    uv_timer_t wait;
    int rv = 0;

    if (jinn_probe_server_start(&srv, node->loop, cfg->cluster_listen, node->id) != 0) {
        jinn_error("cannot listen on cluster_listen %s (in use?)", cfg->cluster_listen);
        return JINN_ECONFIG;
    }
    uv_timer_init(node->loop, &wait);
    wait.data = node;
    for (;;) {
        bool all = true;
        char missing[512] = "";
        for (unsigned i = 0; i < cfg->n_peers; i++) {
            struct bootstrap_probe *bp;
            if (node->probe_ok[i] || strcmp(cfg->peers[i].name, cfg->server_name) == 0) {
                continue;
            }
            all = false;
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %s (%s)",
                     cfg->peers[i].name, cfg->peers[i].address);
            bp = jinn_malloc(sizeof *bp);
            if (bp == NULL) {
                continue;
            }
            bp->node = node;
            bp->peer = i;
            if (jinn_peerguard_probe(node->loop, cfg->peers[i].address, node->id,
                                     node->cluster_id, BOOTSTRAP_PROBE_MS, bootstrap_probed, bp) != 0) {
                jinn_free(bp);
                continue;
            }
            node->probes_left++;
        }
        if (all) {
            break;
        }
        if (uv_now(node->loop) >= next_log) {
            jinn_info("bootstrap: waiting for every peer to answer; not yet:%s", missing);
            next_log = uv_now(node->loop) + 5000;
        }
        node->probes_left++; /* the pause between rounds */
        uv_timer_start(&wait, probe_round_wait, 250, 0);
        while (node->probes_left > 0) {
            uv_run(node->loop, UV_RUN_ONCE);
        }
        if (node->refuse_msg[0] != '\0') {
            jinn_error("refusing to bootstrap: %s", node->refuse_msg);
            rv = JINN_ECONFIG;
            break;
        }
    }
    uv_close((uv_handle_t *)&wait, NULL);
    jinn_probe_server_stop(&srv); /* runs the loop until closed */
    return rv;
}

/* Decides who this node is and how it starts: recover what data_dir holds,
 * bootstrap a new cluster (told to, or a one-node cluster), or wait as a
 * new member with a fresh id until `jinn members add` adds it. */
static int setup_identity(struct jinn_node *node)
{
    const struct jinn_config *cfg = node->cfg;
    struct identity ident;
    bool state = has_raft_state(cfg->data_dir);
    int rv = read_identity(cfg->data_dir, &ident);

    if (rv != 0 && rv != JINN_ENOTFOUND) {
        return rv;
    }
    if (rv == 0 && ident.cluster_id == 0 && !state && cfg->bootstrap) {
        rv = JINN_ENOTFOUND; /* a new node never contacted may still found a cluster */
    }
    if (rv == 0) {
        node->id = ident.id;
        node->cluster_id = ident.cluster_id;
        node->mode = MODE_RECOVER;
        if (strcmp(ident.name, cfg->server_name) != 0) {
            jinn_warn("%s/%s says this data_dir is node %s's; server_name is %s (the raft "
                      "id %llu is kept)",
                      cfg->data_dir, ID_FILE, ident.name, cfg->server_name,
                      (unsigned long long)ident.id);
        }
        if (cfg->bootstrap) {
            jinn_warn("--bootstrap ignored: %s already holds node %llu's state",
                      cfg->data_dir, (unsigned long long)ident.id);
        }
        return 0;
    }
    memset(&ident, 0, sizeof ident);
    snprintf(ident.name, sizeof ident.name, "%s", cfg->server_name);
    if (state) {
        /* A data_dir from before jinn.id existed: it was bootstrapped from
         * cluster_peers, with the id derived from the name. */
        node->id = jinn_node_id_for(cfg->server_name);
        node->cluster_id = jinn_node_cluster_id_for(cfg);
        node->mode = MODE_RECOVER;
        if (cfg->bootstrap) {
            jinn_warn("--bootstrap ignored: %s already holds raft state", cfg->data_dir);
        }
    } else if (cfg->n_peers == 1 && !cfg->bootstrap) {
        /* One-node cluster (no cluster_peers): it bootstraps itself. Its
         * cluster id is random: a wiped one-node cluster is a new cluster. */
        node->id = jinn_node_id_for(cfg->server_name);
        node->cluster_id = random_id();
        node->mode = MODE_BOOTSTRAP;
    } else if (cfg->bootstrap) {
        node->id = jinn_node_id_for(cfg->server_name);
        /* Alone, nobody has to agree with us: a fresh random cluster id. */
        node->cluster_id = cfg->n_peers == 1 ? random_id() : jinn_node_cluster_id_for(cfg);
        node->mode = MODE_BOOTSTRAP;
        rv = probe_before_bootstrap(node);
        if (rv != 0) {
            return rv;
        }
        /* jinn.id is written after raft_bootstrap (see jinn_node_start). */
        return 0;
    } else {
        node->id = random_id();
        node->cluster_id = 0;
        node->mode = MODE_JOIN;
        jinn_warn("%s is empty and --bootstrap was not given: starting as a new node (id "
                  "%llu) that is not a member yet; add it from any member with: jinn members "
                  "add %s=%s",
                  cfg->data_dir, (unsigned long long)node->id, cfg->server_name, node->address);
    }
    ident.id = node->id;
    ident.cluster_id = node->cluster_id;
    return node->mode == MODE_BOOTSTRAP ? 0 : write_identity(cfg->data_dir, &ident);
}

static uint8_t probe_flags(void *data, uint64_t sender)
{
    struct jinn_node *node = data;
    uint8_t flags = 0;
    /* More than the bootstrap configuration entry: the cluster has been
     * running (a leader committed at least its barrier). */
    if (node->raft_ready && raft_last_index(&node->raft) > 1) {
        flags |= JINN_PG_HAS_STATE;
    }
    /* A node that has ever seen a leader announced itself in the directory:
     * if the prober's id is there, it ran before (and may have voted). */
    if (jinn_nodes_find(&node->fsm.nodes, sender) != NULL) {
        flags |= JINN_PG_KNOWS_SENDER;
    }
    return flags;
}

/* The name a peer's certificate must carry for server id: the directory's
 * name for it, else the configured peer at address. */
static bool peer_name(void *data, uint64_t id, const char *address, char *out, size_t n)
{
    struct jinn_node *node = data;
    const char *name = jinn_node_member_name(node, id);
    if (strcmp(name, "?") != 0) {
        snprintf(out, n, "%s", name);
        return true;
    }
    for (unsigned i = 0; i < node->cfg->n_peers; i++) {
        if (strcmp(node->cfg->peers[i].address, address) == 0) {
            snprintf(out, n, "%s", node->cfg->peers[i].name);
            return true;
        }
    }
    return false;
}

/* Who raft may talk with (peerguard.h, member): libraft 0.15 keeps a
 * redialling client for every server id it hears from, forever. With a
 * configuration, only its members at their configured addresses; a node
 * waiting to be added has none yet and takes the first JOIN_IDS_MAX ids that
 * reach it (its leader, and the one after a change of leader). */
static bool peer_member(void *data, uint64_t id, const char *address, bool inbound)
{
    struct jinn_node *node = data;
    const struct raft_configuration *conf = &node->raft.configuration;
    if (conf->n > 0) {
        for (unsigned i = 0; i < conf->n; i++) {
            if (conf->servers[i].id == id) {
                return strcmp(conf->servers[i].address, address) == 0;
            }
        }
        return false;
    }
    for (unsigned i = 0; i < node->n_join_ids; i++) {
        if (node->join_ids[i] == id) {
            return true;
        }
    }
    if (!inbound) {
        return false;
    }
    if (node->n_join_ids == JOIN_IDS_MAX) {
        /* Full: the id heard from least recently gives way (its live
         * connection stays), so ids made up by whoever reached us first
         * cannot keep the real leader out. */
        unsigned lru = 0;
        uint64_t oldest = UINT64_MAX;
        for (unsigned i = 0; i < node->n_join_ids; i++) {
            uint64_t at = jinn_peerguard_last_active(&node->pg, node->join_ids[i]);
            if (at < oldest) {
                oldest = at;
                lru = i;
            }
        }
        node->join_ids[lru] = id;
        return true;
    }
    node->join_ids[node->n_join_ids++] = id;
    return true;
}

/* The host part of a raft address equals ip (peerguard.h, peer_host). */
static bool host_is(const char *address, const char *ip)
{
    const char *colon = strrchr(address, ':');
    size_t n = strlen(ip);
    return colon != NULL && (size_t)(colon - address) == n && strncmp(address, ip, n) == 0;
}

static bool peer_host(void *data, const char *ip)
{
    struct jinn_node *node = data;
    const struct raft_configuration *conf = &node->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].id != node->id && host_is(conf->servers[i].address, ip)) {
            return true;
        }
    }
    for (unsigned i = 0; i < node->cfg->n_peers; i++) {
        if (strcmp(node->cfg->peers[i].name, node->cfg->server_name) != 0 &&
            host_is(node->cfg->peers[i].address, ip)) {
            return true;
        }
    }
    return false;
}

static void cluster_learned(void *data, uint64_t cluster_id)
{
    struct jinn_node *node = data;
    struct identity ident;
    memset(&ident, 0, sizeof ident);
    node->cluster_id = cluster_id;
    ident.id = node->id;
    ident.cluster_id = cluster_id;
    snprintf(ident.name, sizeof ident.name, "%s", node->cfg->server_name);
    /* A few ms of fsync on the loop, once in the node's life. */
    if (write_identity(node->cfg->data_dir, &ident) != 0) {
        jinn_warn("cluster id %016llx not saved; it is learned again after a restart",
                  (unsigned long long)cluster_id);
    }
}

static void tick_cb(uv_timer_t *timer);

static void start_failed_closed(struct raft *raft)
{
    struct jinn_node *node = raft->data;
    raft_uv_close(&node->io);
    raft_uv_tcp_close(&node->transport);
    node->io_ready = false;
    node->transport_ready = false;
    node->raft_ready = false;
}

/* raft_start failed: say which file is damaged, release raft (the daemon
 * runs the loop once more before it exits). libraft names a damaged
 * segment itself; for a snapshot it may not, and it loads the newest. */
static int start_failed(struct jinn_node *node, int rv)
{
    const char *msg = raft_errmsg(&node->raft);
    char snap[256];
    int code = JINN_ERAFT;

    if (rv == RAFT_CORRUPT || rv == RAFT_IOERR) {
        jinn_disk_newest_snapshot(node->cfg->data_dir, snap, sizeof snap);
        jinn_error("data_dir %s: a raft log or snapshot file is damaged: %s (%s)%s%s; the node "
                   "will not start on it; see \"Full and failing disks\" in docs/operations.md",
                   node->cfg->data_dir, msg, jinn_raft_strerror(rv),
                   strstr(msg, "segment") == NULL && snap[0] ? "; newest snapshot: " : "",
                   strstr(msg, "segment") == NULL && snap[0] ? snap : "");
        code = JINN_ECORRUPT;
    } else {
        jinn_error("raft start: %s (%s)", jinn_raft_strerror(rv), msg);
    }
    node->raft.data = node;
    raft_close(&node->raft, start_failed_closed);
    return code;
}

static uint64_t term_of(const struct raft *r, uint64_t index);

/* Freshness: what the leader vouched for, and who answered the leader. */
static void heard(void *data, const struct raft_message *m)
{
    struct jinn_node *node = data;
    uint64_t now = uv_now(node->loop);
    if (now < node->distrust_until) {
        /* Just back from a stall: what arrives now may have waited in the
         * socket all along, and says nothing about the present. */
        return;
    }
    if (m->type == RAFT_IO_APPEND_ENTRIES && m->append_entries.term >= node->raft.current_term) {
        /* A leader knows the commit index only once an entry of its own
         * term has committed (Raft 5.4.2): before that, the index it sends
         * can be below writes its predecessor acknowledged, and vouches for
         * nothing. (An entry not in our log yet: we lag anyway.) */
        const struct raft_append_entries *ae = &m->append_entries;
        uint64_t term = term_of(&node->raft, ae->leader_commit);
        if (ae->leader_commit > ae->prev_log_index &&
            ae->leader_commit - ae->prev_log_index <= ae->n_entries) {
            term = ae->entries[ae->leader_commit - ae->prev_log_index - 1].term;
        }
        if (term == ae->term) {
            jinn_fresh_heard_leader(&node->fresh, now, ae->leader_commit);
        }
    } else if (m->type == RAFT_IO_APPEND_ENTRIES_RESULT &&
               m->append_entries_result.term == node->raft.current_term &&
               raft_state(&node->raft) == RAFT_LEADER) {
        jinn_fresh_heard_peer(&node->fresh, m->server_id, now);
    }
}

/* Staleness in ms (fresh.h): -1 when this node was never known fresh. */
static int64_t staleness(struct jinn_node *node, uint64_t now)
{
    uint64_t at;
    if (raft_state(&node->raft) == RAFT_LEADER) {
        uint64_t voters[JINN_FRESH_PEERS];
        unsigned n = 0;
        for (unsigned i = 0; i < node->raft.configuration.n && n < JINN_FRESH_PEERS; i++) {
            if (node->raft.configuration.servers[i].role == RAFT_VOTER) {
                voters[n++] = node->raft.configuration.servers[i].id;
            }
        }
        at = jinn_fresh_leader(&node->fresh, now, node->id, voters, n);
    } else {
        at = jinn_fresh_follower(&node->fresh, raft_last_applied(&node->raft));
    }
    return at == 0 ? -1 : (int64_t)(now - at);
}

static int replica_start(struct jinn_node *node);
static void append_failed(void *data, int status, const char *errmsg);
static _Noreturn void append_untrusted(struct jinn_node *node, int status, const char *errmsg);
static void snapshot_failed(void *data, unsigned trailing, raft_index index, int status,
                            const char *errmsg);

int jinn_node_start(struct jinn_node *node)
{
    const struct jinn_config *cfg = node->cfg;
    int rv;

    if (node->replica) {
        return replica_start(node);
    }
    if (make_dirs(cfg->data_dir) != 0) {
        jinn_error("cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
        return JINN_EIO;
    }
    rv = lock_data_dir(node);
    if (rv != 0) {
        return rv;
    }
    if (cfg->cluster_tls_cert != NULL) {
        char err[512];
        if (jinn_peerguard_tls_load(cfg->cluster_tls_cert, cfg->cluster_tls_key,
                                    cfg->cluster_tls_ca, err, sizeof err) != 0) {
            jinn_error("%s", err);
            return JINN_ECONFIG;
        }
        for (unsigned i = 0; i < cfg->n_cluster_tls_pins; i++) {
            (void)jinn_peerguard_tls_pin(cfg->cluster_tls_pins[i].name,
                                         cfg->cluster_tls_pins[i].sha256);
        }
        jinn_info("cluster_tls: mutual TLS 1.3 on every raft connection");
    }
    /* libraft crashes when it cannot preallocate a log segment: never let
     * it start on a disk that cannot hold them. */
    rv = jinn_disk_check_start(cfg->data_dir);
    if (rv != 0) {
        return rv;
    }
    rv = jinn_disk_check_snapshots(cfg->data_dir);
    if (rv != 0) {
        return rv;
    }
    rv = jinn_sql_set_dir(&node->fsm.sql, cfg->data_dir);
    if (rv != 0) {
        jinn_error("cannot prepare %s/sql for databases", cfg->data_dir);
        return rv;
    }
    rv = setup_identity(node);
    if (rv != 0) {
        return rv;
    }
    rv = raft_uv_tcp_init(&node->transport, node->loop);
    if (rv != 0) {
        jinn_error("raft transport: %s", raft_strerror(rv));
        return JINN_ERAFT;
    }
    node->transport_ready = true;
    rv = raft_uv_tcp_set_bind_address(&node->transport, cfg->cluster_listen);
    if (rv != 0) {
        jinn_error("cluster_listen %s: %s", cfg->cluster_listen, raft_strerror(rv));
        return JINN_ECONFIG;
    }
    jinn_peerguard_init(&node->pg, node->loop, cfg->cluster_listen, node->id, node->cluster_id);
    node->pg.probe_flags = probe_flags;
    node->pg.learned = cluster_learned;
    node->pg.name_of = peer_name;
    node->pg.member = peer_member;
    node->pg.peer_host = peer_host;
    node->pg.idle_ms = (uint64_t)cfg->election_timeout_ms * 10;
    {
        uint64_t in_memory = (uint64_t)cfg->snapshot_threshold + cfg->snapshot_trailing + 1024;
        if (in_memory > node->pg.max_entries) {
            node->pg.max_entries = in_memory;
        }
    }
    node->pg.data = node;
    rv = raft_uv_init(&node->io, node->loop, cfg->data_dir, &node->pg.transport);
    if (rv != 0) {
        jinn_error("raft storage in %s: %s", cfg->data_dir, node->io.errmsg);
        return JINN_EIO;
    }
    node->io_ready = true;
    /* Reconnect quickly after a partition heals or a peer restarts. */
    raft_uv_set_connect_retry_delay(&node->io, 200);
    /* libraft's auto-recovery silently deletes a closed segment that fails
     * its checksum, with every committed entry in it: a voter would forget
     * entries it acknowledged. A damaged file must stop the node instead. */
    raft_uv_set_auto_recovery(&node->io, false);
    jinn_ioguard_init(&node->guard, &node->io);
    jinn_fresh_init(&node->fresh);
    node->guard.on_recv = heard;
    node->guard.on_recv_data = node;
    node->guard.loop = node->loop;
    node->guard.append_delay_ms =
        (unsigned)test_env_ms("JINN_TEST_APPEND_DELAY_MS", 0, 60000, "log writes reported late");
    node->guard.append_fault_file =
        test_env_file("JINN_TEST_APPEND_FAULT_FILE", "log writes fail at once while");
    node->guard.on_append_failed = append_failed;
    node->guard.on_append_failed_data = node;
    node->guard.append_fail_once_file = test_env_file(
        "JINN_TEST_APPEND_FAIL_ONCE_FILE", "the next log write is reported failed when");
    node->guard.on_snapshot_failed = snapshot_failed;
    node->guard.on_snapshot_failed_data = node;
    node->guard.snapshot_install_fail_once_file =
        test_env_file("JINN_TEST_SNAPSHOT_INSTALL_FAIL_ONCE_FILE",
                      "the next snapshot installed from the leader is reported failed when");
    node->test_clock_offset_ms = (int64_t)test_env_ms(
        "JINN_TEST_CLOCK_OFFSET_MS", -100000000000LL, 100000000000LL, "wall clock shifted");
    if (node->guard.io.async_work != NULL) { /* not io.version: see ioguard.c */
        jinn_fsm_async_snapshots(&node->fsm); /* SQL images off the loop */
    }
    rv = raft_init(&node->raft, &node->guard.io, &node->fsm.iface, node->id, node->address);
    if (rv != 0) {
        jinn_error("raft init: %s", raft_errmsg(&node->raft));
        return JINN_ERAFT;
    }
    node->raft_ready = true;
    node->raft.data = node;
    node->fsm.raft = &node->raft;
    raft_set_election_timeout(&node->raft, cfg->election_timeout_ms);
    raft_set_heartbeat_timeout(&node->raft, cfg->heartbeat_timeout_ms);
    raft_set_snapshot_threshold(&node->raft, cfg->snapshot_threshold);
    raft_set_snapshot_trailing(&node->raft, cfg->snapshot_trailing);
    /* libraft 0.15 may send a follower an older snapshot than the index it
     * then waits for (its sendSnapshot TODO): the follower answers, the
     * leader keeps waiting, and only this timeout resends. Its default (30 s)
     * left a restarted follower that far behind. */
    raft_set_install_snapshot_timeout(&node->raft, cfg->install_snapshot_timeout_ms);
    raft_set_pre_vote(&node->raft, true);
    if (node->mode == MODE_BOOTSTRAP) {
        struct identity ident;
        rv = bootstrap(node);
        if (rv != 0) {
            return rv;
        }
        /* Only now: a crash before this leaves state without jinn.id, which
         * recovers as a bootstrapped node (see setup_identity). */
        memset(&ident, 0, sizeof ident);
        ident.id = node->id;
        ident.cluster_id = node->cluster_id;
        snprintf(ident.name, sizeof ident.name, "%s", cfg->server_name);
        rv = write_identity(cfg->data_dir, &ident);
        if (rv != 0) {
            return rv;
        }
    }
    rv = raft_start(&node->raft);
    if (rv != 0) {
        return start_failed(node, rv);
    }
    resolve_restore(node); /* the snapshot raft_start loaded */
    uv_timer_init(node->loop, &node->tick);
    node->tick.data = node;
    uv_timer_start(&node->tick, tick_cb, TICK_MS, TICK_MS);
    jinn_disk_start(&node->disk, node->loop, cfg->data_dir, cfg->min_free_space);
    uv_timer_init(node->loop, &node->kick);
    node->kick.data = node;
    jinn_info("raft started: id %llu, cluster %016llx, address %s, %u entries in log, "
              "applied %llu",
              (unsigned long long)node->id, (unsigned long long)node->cluster_id, node->address,
              (unsigned)(raft_last_index(&node->raft)),
              (unsigned long long)raft_last_applied(&node->raft));
    return 0;
}

/* ---- proposals --------------------------------------------------------- */

static void proposal_closed(uv_handle_t *h)
{
    struct proposal *p = h->data;
    jinn_free(p->res);
    jinn_free(p);
}

/* ---- proposals of many entries (jinn_node_propose_many) ---------------- */

static void many_unlink(struct proposal *p)
{
    struct proposal *prev = NULL;
    if (!p->listed) {
        return;
    }
    p->listed = false;
    /* answered in order, mostly: p is found near the head */
    for (struct proposal **pp = &p->node->many; *pp != NULL; pp = &(*pp)->next_many) {
        if (*pp == p) {
            *pp = p->next_many;
            if (p->node->many_tail == p) {
                p->node->many_tail = prev;
            }
            return;
        }
        prev = *pp;
    }
}

static void many_answer(struct proposal *p, int code);

/* Answers the batches of an earlier term than this node's current one
 * "unknown": a later term may reuse their indexes (their entries may or may
 * not survive; many_collect would say the same when those indexes apply).
 * Called before a new batch is appended, and before its raft_apply, so
 * that what their callbacks propose comes first in the log and in the
 * list: the list stays in index order. */
static void many_sweep(struct jinn_node *node)
{
    while (node->many != NULL && node->many->term != node->raft.current_term) {
        many_answer(node->many, JINN_EUNKNOWN); /* unlinks it */
    }
}

/* Appends p (just appended to the log in the current term) to the list. */
static void many_append(struct jinn_node *node, struct proposal *p)
{
    p->next_many = NULL;
    p->listed = true;
    if (node->many_tail != NULL && node->many != NULL) {
        node->many_tail->next_many = p;
    } else {
        node->many = p;
    }
    node->many_tail = p;
}

/* Answers once; p goes once libraft is done with its request too. */
static void many_answer(struct proposal *p, int code)
{
    jinn_propose_many_cb cb = p->many_cb;
    many_unlink(p);
    if (cb != NULL) {
        p->many_cb = NULL;
        p->node->unanswered--;
        if (code == JINN_OK) {
            p->node->proposals_ok++;
        } else {
            p->node->proposals_failed++;
        }
        cb(p->data, code, code == JINN_OK ? p->res : NULL, p->n);
    }
    if (p->raft_done) {
        uv_timer_stop(&p->timer);
        uv_close((uv_handle_t *)&p->timer, proposal_closed);
    }
}

/* From node_applied: index's result, if it is one of ours. An index in a
 * proposal's range is its entry only while this node is still the leader
 * of the term that appended it (a leader never overwrites its own log);
 * otherwise another leader's entry may sit there: the outcome is unknown. */
static void many_collect(struct jinn_node *node, uint64_t index)
{
    struct proposal *p = node->many, *next;
    for (; p != NULL; p = next) {
        next = p->next_many;
        if (index < p->req.index) {
            break; /* in index order: the rest start later (one walk, not N per entry) */
        }
        if (index >= p->req.index + p->n) {
            continue;
        }
        if (raft_state(&node->raft) != RAFT_LEADER || node->raft.current_term != p->term) {
            many_answer(p, JINN_EUNKNOWN);
            continue;
        }
        p->res[index - p->req.index] = node->fsm.result;
        p->got++;
        if (p->got == p->n) {
            many_answer(p, JINN_OK);
        }
    }
}

static void proposal_answer(struct proposal *p, int code, const struct jinn_result *res)
{
    jinn_propose_cb cb = p->cb;
    if (cb == NULL) {
        return;
    }
    p->cb = NULL;
    p->node->unanswered--;
    if (code == JINN_OK) {
        p->node->proposals_ok++;
    } else {
        p->node->proposals_failed++;
    }
    cb(p->data, code, res);
}

static void proposal_timeout(uv_timer_t *t)
{
    struct proposal *p = t->data;
    if (p->n > 0) {
        many_answer(p, JINN_ETIMEOUT);
        return;
    }
    proposal_answer(p, JINN_ETIMEOUT, NULL);
}

static void proposal_applied(struct raft_apply *req, int status, void *result)
{
    struct proposal *p = req->data;
    const struct jinn_result *res = result;

    assert(p->node->inflight > 0);
    p->node->inflight--;
    if (p->n > 0) {
        /* Many entries: the first is applied (node_applied has its result;
         * the others follow), or the request failed. */
        (void)result;
        p->raft_done = true;
        if (status == RAFT_IOERR || status == RAFT_NOSPACE || status == RAFT_CORRUPT) {
            append_untrusted(p->node, status, raft_errmsg(&p->node->raft));
        }
        if (status != 0) {
            many_answer(p, status == RAFT_SHUTDOWN ? JINN_ESHUTDOWN : JINN_EUNKNOWN);
        } else if (p->many_cb == NULL) {
            many_answer(p, JINN_OK); /* answered already: only closes */
        }
        return;
    }
    uv_timer_stop(&p->timer);
    if (status == 0) {
        assert(res != NULL && res->index == req->index);
        proposal_answer(p, JINN_OK, res);
    } else {
        if (status == RAFT_IOERR || status == RAFT_NOSPACE || status == RAFT_CORRUPT) {
            append_untrusted(p->node, status, raft_errmsg(&p->node->raft));
        }
        /* Leadership lost or shutting down: the entry may still commit. */
        proposal_answer(p, status == RAFT_SHUTDOWN ? JINN_ESHUTDOWN : JINN_EUNKNOWN, NULL);
    }
    uv_close((uv_handle_t *)&p->timer, proposal_closed);
}

static int propose_checks(struct jinn_node *node, int type);

/* Stops this node at once when libraft's memory no longer matches its log
 * on disk: going on would replicate, vote or answer from state that no
 * restart would find again. Nothing more is written; a restart reloads
 * raft's log and configuration from disk. Requests in flight get no answer
 * (a closed connection: their outcome is unknown to the client). */
static _Noreturn void raft_untrusted(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static _Noreturn void raft_untrusted(const char *fmt, ...)
{
    char why[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    jinn_error("%s; stopping this node (a restart reloads raft's log and configuration from "
               "disk)",
               why);
    fflush(NULL);
    _exit(JINN_EXIT_FATAL_APPLY); /* the same class as a failed apply: stop, write nothing */
}

static const char *role_name(int state)
{
    switch (state) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    default:
        return "unavailable";
    }
}

/* A log write failed after it was accepted (the disk's answer, not
 * raft_apply's). libraft 0.15's leader (replication.c, appendLeaderCb)
 * then answers only the request whose entries start the failed write,
 * drops from its log in memory every entry from there on (other requests'
 * entries too, which followers may already hold with the same term) and
 * stays leader: the next entries reuse those indexes, and a request still
 * queued for one of them is answered with a newer entry's result (a reply
 * that is not the client's, a 2xx for a write that never committed); a
 * follower's log (appendFollowerCb) keeps in memory what is not on disk.
 * Reported by the guard before libraft sees it, whatever the role and
 * whichever request (command, barrier, membership change) owns the
 * entries; the proposal callbacks check the same statuses too. */
static _Noreturn void append_untrusted(struct jinn_node *node, int status, const char *errmsg)
{
    raft_untrusted("raft could not write its log as %s in term %llu (last log index %llu): "
                   "%s (%s); its log in memory no longer matches its disk",
                   role_name(raft_state(&node->raft)),
                   (unsigned long long)node->raft.current_term,
                   (unsigned long long)raft_last_index(&node->raft), jinn_raft_strerror(status),
                   errmsg);
}

static void append_failed(void *data, int status, const char *errmsg)
{
    append_untrusted(data, status, errmsg);
}

/* A snapshot write failed after it was accepted. Installing the leader's
 * snapshot (trailing 0), libraft 0.15 (replicationInstallSnapshot) has
 * already reset its log in memory to the snapshot before writing it; on
 * the failure it only rejects the snapshot: its log in memory no longer
 * matches its disk, its state machine is never restored (applied index
 * stuck, every read too stale), and a restart may find the disk log
 * inconsistent. A snapshot this node took (trailing > 0) is dropped by
 * libraft with its log untouched: one line, and the next one is tried at
 * the next threshold. */
static void snapshot_failed(void *data, unsigned trailing, raft_index index, int status,
                            const char *errmsg)
{
    struct jinn_node *node = data;
    if (trailing == 0) {
        raft_untrusted("raft could not store a snapshot sent by the leader (index %llu) in term "
                       "%llu: %s (%s); its log in memory no longer matches its disk",
                       (unsigned long long)index, (unsigned long long)node->raft.current_term,
                       jinn_raft_strerror(status), errmsg);
    }
    jinn_error("raft could not store the snapshot it took at index %llu: %s (%s); its log is "
               "kept and the next snapshot is tried later",
               (unsigned long long)index, jinn_raft_strerror(status), errmsg);
}

/* Who owns bufs after a failed raft_apply, from libraft 0.15.0 (client.c,
 * log.c): the state check (RAFT_NOTLEADER) takes nothing; a failure after
 * the append (replicationTrigger: the io's append failing at once, or out
 * of memory) removes the entries again with logDiscard, which does not free
 * them, and dequeues req: the caller still owns all n. Only
 * logAppendCommands failing at entry i > 0 (out of memory) leaves entries
 * 0..i-1 in the log, raft's from then on, with req not queued. The log's
 * last index tells these apart whatever the code: raft kept what it grew
 * by. Should that ever not add up, nothing is freed: a leak on a path that
 * cannot happen beats a double free of a buffer raft may still write. */
int jinn_raft_apply(struct raft *raft, struct raft_apply *req, struct raft_buffer bufs[],
                    unsigned n, raft_apply_cb cb, unsigned *kept)
{
    raft_index last = raft_last_index(raft);
    raft_index grown;
    int rv;

    *kept = 0;
    rv = raft_apply(raft, req, bufs, n, cb);
    if (rv == 0) {
        *kept = n;
        return 0;
    }
    grown = raft_last_index(raft) - last;
    if (raft_last_index(raft) < last || grown > n) {
        *kept = n; /* cannot happen (see above): free nothing */
        return rv;
    }
    *kept = (unsigned)grown;
    for (unsigned i = *kept; i < n; i++) {
        jinn_free(bufs[i].base);
        bufs[i].base = NULL;
    }
    return rv;
}

/* raft_apply for both propose paths. On failure no callback comes for
 * p->req (libraft never queued it) and bufs are settled: freed, or kept by
 * raft. Returns a jinn code. */
static int propose_apply(struct jinn_node *node, struct proposal *p, struct raft_buffer bufs[],
                         unsigned n)
{
    uint64_t now;
    unsigned kept;
    int rv;

    rv = jinn_raft_apply(&node->raft, &p->req, bufs, n, proposal_applied, &kept);
    if (rv == 0) {
        return JINN_OK;
    }
    if (rv == RAFT_NOTLEADER) {
        return JINN_ENOTLEADER;
    }
    if (kept > 0) {
        /* libraft 0.15 keeps these entries in memory and never writes them
         * (its next append starts after them): its disk log would no longer
         * match its memory. A restart reloads the log from disk. */
        raft_untrusted("raft kept %u of %u entries after a failed append (%s: %s)", kept, n,
                       jinn_raft_strerror(rv), raft_errmsg(&node->raft));
    }
    now = uv_now(node->loop);
    if (now >= node->io_error_next) {
        /* A disk fault fails every proposal: at most one line a second. */
        jinn_error("raft could not append a proposal: %s (%s)", jinn_raft_strerror(rv),
                   raft_errmsg(&node->raft));
        node->io_error_next = now + 1000;
    }
    return JINN_ERAFT;
}

int jinn_node_propose(struct jinn_node *node, struct jinn_cmd *c, uint64_t timeout_ms,
                      jinn_propose_cb cb, void *data)
{
    struct jinn_wbuf w;
    struct raft_buffer buf;
    struct proposal *p;
    uint64_t now;
    int rv;

    rv = propose_checks(node, c->type);
    if (rv != 0) {
        return rv;
    }
    /* Monotonic from the log's last cluster time, steered by the wall clock
     * at most 1 %: a clock step on any node cannot end a TTL early. */
    now = cluster_now(node, true);
    if (now < node->last_stamp_ms) {
        now = node->last_stamp_ms;
    }
    c->time_ms = now;
    jinn_wbuf_init(&w);
    rv = jinn_cmd_encode(c, &w);
    if (rv != 0) {
        jinn_wbuf_free(&w);
        return rv;
    }
    p = jinn_calloc(1, sizeof *p);
    if (p == NULL) {
        jinn_wbuf_free(&w);
        return JINN_ENOMEM;
    }
    p->node = node;
    p->cb = cb;
    p->data = data;
    p->req.data = p;
    buf.base = w.data; /* transferred to raft on success */
    buf.len = w.len;
    rv = propose_apply(node, p, &buf, 1);
    if (rv != JINN_OK) {
        jinn_free(p); /* buf: settled by propose_apply */
        return rv;
    }
    node->last_stamp_ms = now;
    node->inflight++;
    node->unanswered += cb != NULL;
    uv_timer_init(node->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, proposal_timeout, timeout_ms, 0);
    return JINN_OK;
}

int jinn_node_propose_many(struct jinn_node *node, struct jinn_cmd *cs, unsigned n,
                           uint64_t timeout_ms, jinn_propose_many_cb cb, void *data)
{
    struct raft_buffer *bufs = NULL;
    struct proposal *p = NULL;
    uint64_t now;
    unsigned built = 0;
    int rv;

    if (n == 0 || n > JINN_PROPOSE_MANY_MAX) {
        return JINN_EINVAL;
    }
    for (unsigned i = 0; i < n; i++) {
        rv = propose_checks(node, cs[i].type);
        if (rv != 0) {
            return rv;
        }
    }
    many_sweep(node);
    now = cluster_now(node, true);
    if (now < node->last_stamp_ms) {
        now = node->last_stamp_ms;
    }
    bufs = jinn_calloc(n, sizeof *bufs);
    p = jinn_calloc(1, sizeof *p);
    if (bufs == NULL || p == NULL || (p->res = jinn_calloc(n, sizeof *p->res)) == NULL) {
        rv = JINN_ENOMEM;
        goto fail;
    }
    for (; built < n; built++) {
        struct jinn_wbuf w;
        cs[built].time_ms = now; /* one append, one cluster time */
        jinn_wbuf_init(&w);
        rv = jinn_cmd_encode(&cs[built], &w);
        if (rv != 0) {
            jinn_wbuf_free(&w);
            goto fail;
        }
        bufs[built].base = w.data; /* transferred to raft on success */
        bufs[built].len = w.len;
    }
    p->node = node;
    p->data = data;
    p->many_cb = cb;
    p->n = n;
    p->term = node->raft.current_term;
    p->req.data = p;
    rv = propose_apply(node, p, bufs, n);
    if (rv != JINN_OK) {
        built = 0; /* bufs: settled by propose_apply */
        goto fail;
    }
    jinn_free(bufs);
    node->last_stamp_ms = now;
    node->inflight++;
    node->unanswered += cb != NULL;
    many_append(node, p);
    uv_timer_init(node->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, proposal_timeout, timeout_ms, 0);
    return JINN_OK;

fail:
    for (unsigned i = 0; i < built; i++) {
        jinn_free(bufs[i].base);
    }
    jinn_free(bufs);
    if (p != NULL) {
        jinn_free(p->res);
    }
    jinn_free(p);
    return rv;
}

/* What every proposal checks first (and the term's first command). */
static int propose_checks(struct jinn_node *node, int type)
{
    int rv;

    if (node->stopping) {
        return JINN_ESHUTDOWN;
    }
    /* A replica relays writes (api.c). */
    if (node->replica || raft_state(&node->raft) != RAFT_LEADER) {
        return JINN_ENOTLEADER;
    }
    /* Below min_free_space nothing new enters the log: what is left is
     * raft's own reserve (barriers, snapshots, segments being closed). */
    if (node->disk.full) {
        return JINN_ENOSPACE;
    }
    /* The first command of every term: waiters queued under earlier
     * leaders have no client listening here (fsm/lock.h). First, so that
     * no expiry sweep in this term can grant one of them a lock. */
    if (node->orphans_term != node->raft.current_term && type != JINN_CMD_LOCK_ORPHANS) {
        struct jinn_cmd orphans;
        memset(&orphans, 0, sizeof orphans);
        orphans.type = JINN_CMD_LOCK_ORPHANS;
        rv = jinn_node_propose(node, &orphans, node->cfg->request_timeout_ms, NULL, NULL);
        if (rv != 0) {
            return rv;
        }
        node->orphans_term = node->raft.current_term;
    }
    return JINN_OK;
}

/* ---- linearizable reads ------------------------------------------------- */

static void start_read_barrier(struct jinn_node *node);

static void fail_waiters(struct read_waiter *w, int code)
{
    while (w != NULL) {
        struct read_waiter *next = w->next;
        w->cb(w->data, code);
        jinn_free(w);
        w = next;
    }
}

/* libraft calls read_barrier_done from deep inside its own state changes
 * (applying, or stepping down); answering readers there could re-enter raft
 * (a reader may propose). So the answers, and the next barrier, run from a
 * zero-delay timer on the next loop turn. */
static void kick_cb(uv_timer_t *t)
{
    struct jinn_node *node = t->data;
    struct read_waiter *w = node->finished;
    int code = node->finished_code;

    node->finished = NULL;
    if (code == JINN_OK) {
        for (struct read_waiter *x = w; x != NULL; x = x->next) {
            node->reads_linearized++;
        }
    }
    fail_waiters(w, code);
    if (node->queued != NULL && !node->read_barrier_inflight && !node->stopping) {
        start_read_barrier(node);
    }
}

static void read_barrier_done(struct raft_barrier *req, int status)
{
    struct jinn_node *node = req->data;
    assert(node->finished == NULL);
    node->read_barrier_inflight = false;
    node->finished = node->reading;
    node->finished_code = status == 0 ? JINN_OK : JINN_EUNKNOWN;
    node->reading = NULL;
    uv_timer_start(&node->kick, kick_cb, 0, 0);
}

static void start_read_barrier(struct jinn_node *node)
{
    int rv;
    assert(!node->read_barrier_inflight && node->queued != NULL);
    node->reading = node->queued;
    node->queued = NULL;
    node->queued_tail = &node->queued;
    node->read_barrier.data = node;
    rv = raft_barrier(&node->raft, &node->read_barrier, read_barrier_done);
    if (rv != 0) {
        struct read_waiter *w = node->reading;
        node->reading = NULL;
        fail_waiters(w, rv == RAFT_NOTLEADER ? JINN_ENOTLEADER : JINN_ERAFT);
        return;
    }
    node->read_barrier_inflight = true;
    node->read_barriers++;
}

int jinn_node_linearize(struct jinn_node *node, jinn_read_cb cb, void *data)
{
    struct read_waiter *w;
    if (node->stopping) {
        return JINN_ESHUTDOWN;
    }
    if (node->replica || raft_state(&node->raft) != RAFT_LEADER) {
        return JINN_ENOTLEADER;
    }
    w = jinn_malloc(sizeof *w);
    if (w == NULL) {
        return JINN_ENOMEM;
    }
    w->cb = cb;
    w->data = data;
    w->next = NULL;
    *node->queued_tail = w;
    node->queued_tail = &w->next;
    if (!node->read_barrier_inflight && node->finished == NULL) {
        start_read_barrier(node);
    }
    return JINN_OK;
}

void jinn_node_set_apply_hook(struct jinn_node *node, void (*fn)(void *data, uint64_t index),
                              void *data)
{
    node->apply_hook = fn;
    node->apply_hook_data = data;
}

void jinn_node_set_stream_hooks(struct jinn_node *node,
                                void (*record)(void *data, uint64_t index, uint64_t prev,
                                               const void *buf, size_t len),
                                void (*restore)(void *data, uint64_t index), void *data)
{
    resolve_restore(node);
    node->record_hook = record;
    node->restore_hook = restore;
    node->stream_hook_data = data;
}

uint64_t jinn_node_stream_position(struct jinn_node *node)
{
    resolve_restore(node);
    return node->stream_pos;
}

/* After every applied command, inside libraft's apply loop: libraft asks
 * whether to snapshot once the batch is applied, so a threshold lowered
 * here takes effect at once. Local only: when snapshots happen is not
 * replicated state. */
static void node_applied(void *data, uint64_t index)
{
    struct jinn_node *node = data;
    uint64_t bytes = node->fsm.fns.deploy_bytes;

    if (node->replica) {
        /* No raft log to compact: only the hook. */
        if (node->apply_hook != NULL) {
            node->apply_hook(node->apply_hook_data, index);
        }
        return;
    }
    if (bytes < node->deploy_bytes_base) {
        node->deploy_bytes_base = bytes; /* a restore or clear reset the counter */
    }
    if (node->forced_snapshot != 0 &&
        node->raft.log.snapshot.last_index >= node->forced_snapshot) {
        /* Taken (and the log behind it released): the usual cadence again. */
        raft_set_snapshot_threshold(&node->raft, node->cfg->snapshot_threshold);
        raft_set_snapshot_trailing(&node->raft, node->cfg->snapshot_trailing);
        node->forced_snapshot = 0;
    }
    if (node->forced_snapshot == 0 && bytes - node->deploy_bytes_base >= DEPLOY_LOG_BYTES_MAX) {
        jinn_debug("%llu bytes of deploys since the last forced snapshot: snapshot at %llu",
                   (unsigned long long)(bytes - node->deploy_bytes_base),
                   (unsigned long long)index);
        node->deploy_bytes_base = bytes;
        node->forced_snapshot = index;
        raft_set_snapshot_threshold(&node->raft, 1);
        raft_set_snapshot_trailing(&node->raft, FORCED_SNAPSHOT_TRAILING);
    }
    if (node->many != NULL) {
        many_collect(node, index);
    }
    if (node->apply_hook != NULL) {
        node->apply_hook(node->apply_hook_data, index);
    }
}

/* ---- periodic duties ---------------------------------------------------- */

static void time_ticked(void *data, int code, const struct jinn_result *res)
{
    struct jinn_node *node = data;
    (void)code;
    (void)res;
    node->time_tick_inflight = false;
}

/* Keys expire when an applied entry carries a cluster time past their
 * deadline. With no writes flowing, the leader proposes a NOOP so expiry
 * still happens on time. */
static void advance_cluster_time(struct jinn_node *node)
{
    uint64_t due = jinn_kv_next_expiry(&node->fsm.kv);
    uint64_t lock_due = jinn_locks_next_expiry(&node->fsm.locks);
    uint64_t queue_due = jinn_queues_next_due(&node->fsm.queues);
    uint64_t jobs_due = jinn_jobs_next_due(&node->fsm.jobs); /* results' expiry */
    struct jinn_cmd c;
    if (lock_due != 0 && (due == 0 || lock_due < due)) {
        due = lock_due;
    }
    if (queue_due != 0 && (due == 0 || queue_due < due)) {
        due = queue_due;
    }
    if (jobs_due != 0 && (due == 0 || jobs_due < due)) {
        due = jobs_due;
    }
    if (due == 0 || node->time_tick_inflight || cluster_now(node, false) < due) {
        return;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_NOOP;
    if (jinn_node_propose(node, &c, node->cfg->request_timeout_ms, time_ticked, node) == 0) {
        node->time_tick_inflight = true;
    }
}

/* ---- periodic duties (membership) ---------------------------------------- */

static bool configuration_has(const struct jinn_node *node, uint64_t id);

/* Last contact, by raft id (ids of operator-added members are random, so
 * this is not indexed by cluster_peers). */
static uint64_t *seen_slot(struct jinn_node *node, uint64_t id)
{
    unsigned free_slot = SEEN_MAX;
    for (unsigned i = 0; i < SEEN_MAX; i++) {
        if (node->seen[i].id == id) {
            return &node->seen[i].at;
        }
        if (free_slot == SEEN_MAX &&
            (node->seen[i].id == 0 || !configuration_has(node, node->seen[i].id))) {
            free_slot = i;
        }
    }
    if (free_slot == SEEN_MAX) {
        return NULL;
    }
    node->seen[free_slot].id = id;
    node->seen[free_slot].at = uv_now(node->loop); /* a grace period to start with */
    return &node->seen[free_slot].at;
}

static uint64_t seen_at(const struct jinn_node *node, uint64_t id)
{
    for (unsigned i = 0; i < SEEN_MAX; i++) {
        if (node->seen[i].id == id) {
            return node->seen[i].at;
        }
    }
    return 0;
}

static bool member_healthy(const struct jinn_node *node, uint64_t id, uint64_t now)
{
    uint64_t window = (uint64_t)node->cfg->election_timeout_ms * HEALTHY_TIMEOUTS;
    uint64_t at = seen_at(node, id);
    return at != 0 && now - at <= window;
}

static void op_step(struct jinn_node *node);

static void op_finish(struct jinn_node *node, int code, const char *msg)
{
    jinn_member_cb cb = node->op.cb;
    void *data = node->op.data;
    node->op.step = OP_NONE;
    node->op.cb = NULL;
    /* The operator decided: automatic standby promotion waits a full
     * standby_promote_after before it may act on the new configuration. */
    node->auto_pause_until = uv_now(node->loop) + node->cfg->standby_promote_after_ms;
    if (code == 0) {
        jinn_info("membership: %s", msg);
    } else {
        jinn_warn("membership change failed: %s", msg);
    }
    if (cb != NULL) {
        cb(data, code, msg);
    }
}

static void change_done(struct raft_change *req, int status)
{
    struct jinn_node *node = req->data;
    char msg[600];
    node->change_inflight = false;
    if (node->op.step == OP_NONE) {
        if (status != 0) {
            jinn_warn("membership change failed: %s", raft_strerror(status));
        }
        return;
    }
    if (status != 0) {
        snprintf(msg, sizeof msg, "%s: %s", node->op.name, raft_strerror(status));
        op_finish(node, status == RAFT_NOTLEADER || status == RAFT_LEADERSHIPLOST
                            ? JINN_ENOTLEADER
                            : JINN_ERAFT,
                  msg);
        return;
    }
    switch (node->op.step) {
    case OP_ADD:
        node->op.step = OP_STANDBY;
        op_step(node);
        break;
    case OP_STANDBY:
        if (node->op.standby) {
            snprintf(msg, sizeof msg, "added %s (id %llu, %s) as a standby", node->op.name,
                     (unsigned long long)node->op.id, node->op.address);
            op_finish(node, 0, msg);
        } else {
            jinn_info("membership: %s (id %llu) replicates as a standby; promoting it once "
                      "it has caught up",
                      node->op.name, (unsigned long long)node->op.id);
            node->op.step = OP_CATCHUP; /* the tick promotes it */
        }
        break;
    case OP_VOTER:
        snprintf(msg, sizeof msg, "%s (id %llu, %s) is now a voter", node->op.name,
                 (unsigned long long)node->op.id, node->op.address);
        op_finish(node, 0, msg);
        break;
    case OP_REMOVE:
        snprintf(msg, sizeof msg, "removed %s (id %llu)", node->op.name,
                 (unsigned long long)node->op.id);
        op_finish(node, 0, msg);
        break;
    case OP_ASSIGN:
        snprintf(msg, sizeof msg, "%s (id %llu) is now a %s", node->op.name,
                 (unsigned long long)node->op.id,
                 node->op.role == RAFT_VOTER ? "voter" : "standby");
        op_finish(node, 0, msg);
        break;
    default:
        break;
    }
}

/* What a failed raft_add, raft_assign or raft_remove leaves behind, from
 * libraft 0.15.0 (src/client.c, src/membership.c, src/replication.c):
 *  - membershipCanChangeConfiguration (RAFT_NOTLEADER, RAFT_CANTCHANGE),
 *    raft_assign's role checks (RAFT_BADROLE) and lookup (RAFT_NOTFOUND),
 *    raft_remove's lookup (RAFT_BADID) and raft_add's
 *    raft_configuration_add on a copy (RAFT_DUPLICATEID,
 *    RAFT_DUPLICATEADDRESS) fail before anything is touched;
 *  - everything after goes through clientChangeConfiguration: when
 *    replicationTrigger fails (appendLeader: the io's append failing at
 *    once, a disk fault, or out of memory) the entry is truncated from the
 *    log but r->configuration is not restored (a TODO there). For
 *    raft_add/raft_remove it is worse: r->configuration was replaced by the
 *    copy, which raft_add/raft_remove then close on their error path, so
 *    r->configuration.servers points at freed memory. When
 *    progressRebuildArray fails (out of memory) the entry stays in the log
 *    with r->configuration not switched to it. raft_assign restores the
 *    role but leaves r->leader_state.change set, so libraft's next raft_add
 *    or raft_remove trips its assert that no change is pending;
 *  - RAFT_NOMEM comes from before (configurationCopy) and after
 *    (logAppendConfiguration, progressRebuildArray) alike.
 * So only the codes of the first group are safe to go on from; any other
 * failure stops the node, and a restart rebuilds the configuration from
 * the log (without the change, which never reached the disk). */
int jinn_raft_change_check(struct raft *raft, int rv, const char *what)
{
    switch (rv) {
    case 0:
    case RAFT_NOTLEADER:
    case RAFT_CANTCHANGE:
    case RAFT_BADROLE:
    case RAFT_NOTFOUND:
    case RAFT_BADID:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return rv;
    default:
        break;
    }
    raft_untrusted("raft could not log a membership change (%s): %s (%s); its configuration "
                   "in memory no longer matches its log",
                   what, jinn_raft_strerror(rv), raft_errmsg(raft));
}

static void assign(struct jinn_node *node, const struct raft_server *s, int role)
{
    char what[600];
    int rv;
    node->change.data = node;
    snprintf(what, sizeof what, "%s %s", role == RAFT_VOTER ? "promote" : "demote", s->address);
    rv = raft_assign(&node->raft, &node->change, s->id, role, change_done);
    rv = jinn_raft_change_check(&node->raft, rv, what);
    if (rv == 0) {
        node->change_inflight = true;
        jinn_info("membership: %s %s", role == RAFT_VOTER ? "promoting" : "demoting",
                  s->address);
    }
}

/* Keeps `replicas` healthy voters: a standby replaces a voter unseen for
 * standby_promote_after, and a surplus unhealthy voter becomes a standby.
 * It stays out of the way while an operator's change is in progress. */
static void manage_membership(struct jinn_node *node, uint64_t now)
{
    const struct raft_configuration *conf = &node->raft.configuration;
    const struct raft_server *stale_voter = NULL, *healthy_standby = NULL;
    unsigned voters = 0, healthy_voters = 0;
    uint64_t oldest = UINT64_MAX;

    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        uint64_t *at = seen_slot(node, s->id);
        if (at == NULL) {
            continue;
        }
        if (s->id == node->id || node->raft.leader_state.progress[i].recent_recv) {
            *at = now;
        }
        if (s->role == RAFT_VOTER) {
            voters++;
            if (member_healthy(node, s->id, now)) {
                healthy_voters++;
            }
            if (now - *at >= node->cfg->standby_promote_after_ms && *at < oldest) {
                oldest = *at;
                stale_voter = s;
            }
        } else if (s->role == RAFT_STANDBY && member_healthy(node, s->id, now) &&
                   !(node->op.step != OP_NONE && s->id == node->op.id)) {
            healthy_standby = healthy_standby ? healthy_standby : s;
        }
    }
    if (node->change_inflight || node->stopping || node->op.step != OP_NONE ||
        node->raft.configuration_uncommitted_index != 0 || now < node->auto_pause_until) {
        return;
    }
    if (voters > node->cfg->replicas && stale_voter != NULL) {
        assign(node, stale_voter, RAFT_STANDBY);
    } else if (healthy_standby != NULL &&
               (voters < node->cfg->replicas ||
                (stale_voter != NULL && healthy_voters < node->cfg->replicas))) {
        assign(node, healthy_standby, RAFT_VOTER);
    }
}

/* The leader drops directory entries of ids that left the raft
 * configuration (one removal a second), so the bounded table holds members
 * only. The state machine cannot see raft's configuration, so the leader
 * decides and the command carries the decision (NODE_DEL). */
static void forget_departed(struct jinn_node *node, uint64_t now)
{
    const struct jinn_nodes *nodes = &node->fsm.nodes;
    if (now < node->forget_next || node->raft.configuration_uncommitted_index != 0 ||
        node->ready_term != node->raft.current_term) {
        return;
    }
    for (unsigned i = 0; i < nodes->n; i++) {
        const struct jinn_node_info *n = &nodes->items[i];
        bool member = false;
        struct jinn_cmd c;
        for (unsigned j = 0; j < node->raft.configuration.n && !member; j++) {
            member = node->raft.configuration.servers[j].id == n->id;
        }
        if (member) {
            continue;
        }
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_NODE_DEL;
        c.node.id = n->id;
        node->forget_next = now + 1000;
        if (jinn_node_propose(node, &c, node->cfg->request_timeout_ms, NULL, NULL) != 0) {
            jinn_debug("forget node %llu: propose failed", (unsigned long long)n->id);
        }
        return;
    }
}

static const struct raft_server *config_server(const struct jinn_node *node, uint64_t id,
                                               unsigned *index)
{
    for (unsigned i = 0; i < node->raft.configuration.n; i++) {
        if (node->raft.configuration.servers[i].id == id) {
            if (index != NULL) {
                *index = i;
            }
            return &node->raft.configuration.servers[i];
        }
    }
    return NULL;
}

static bool configuration_has(const struct jinn_node *node, uint64_t id)
{
    return config_server(node, id, NULL) != NULL;
}

/* Runs the current step of node->op (called when the previous one ends). */
static void op_step(struct jinn_node *node)
{
    struct member_op *op = &node->op;
    char msg[600], what[600];
    int rv = 0;

    node->change.data = node;
    snprintf(what, sizeof what, "%s %s (id %llu, %s)",
             op->step == OP_ADD      ? "add"
             : op->step == OP_REMOVE ? "remove"
                                     : "assign a role to",
             op->name, (unsigned long long)op->id, op->address);
    switch (op->step) {
    case OP_ADD:
        rv = raft_add(&node->raft, &node->change, op->id, op->address, change_done);
        break;
    case OP_STANDBY:
        rv = raft_assign(&node->raft, &node->change, op->id, RAFT_STANDBY, change_done);
        break;
    case OP_VOTER:
        rv = raft_assign(&node->raft, &node->change, op->id, RAFT_VOTER, change_done);
        break;
    case OP_REMOVE:
        rv = raft_remove(&node->raft, &node->change, op->id, change_done);
        break;
    case OP_ASSIGN:
        rv = raft_assign(&node->raft, &node->change, op->id, op->role, change_done);
        break;
    default:
        return;
    }
    rv = jinn_raft_change_check(&node->raft, rv, what);
    if (rv != 0) {
        snprintf(msg, sizeof msg, "%s: %s", op->name, raft_errmsg(&node->raft));
        op_finish(node, rv == RAFT_NOTLEADER ? JINN_ENOTLEADER : JINN_ECONFLICT, msg);
        return;
    }
    node->change_inflight = true;
}

/* From the tick: promotes a caught-up new voter, enforces deadlines. */
static void op_tick(struct jinn_node *node, uint64_t now)
{
    struct member_op *op = &node->op;
    unsigned idx;
    char msg[600];

    if (op->step == OP_NONE) {
        return;
    }
    if (op->step != OP_PROBE && raft_state(&node->raft) != RAFT_LEADER && !node->change_inflight) {
        op_finish(node, JINN_ENOTLEADER, "leadership lost during the change");
        return;
    }
    if (op->step != OP_CATCHUP) {
        return;
    }
    if (config_server(node, op->id, &idx) == NULL) {
        op_finish(node, JINN_ECONFLICT, "the new member left the configuration");
        return;
    }
    if (node->raft.leader_state.progress[idx].match_index + CATCHUP_SLACK >=
            raft_last_index(&node->raft) &&
        !node->change_inflight && node->raft.configuration_uncommitted_index == 0) {
        op->step = OP_VOTER;
        op_step(node);
        return;
    }
    if (now >= op->deadline) {
        snprintf(msg, sizeof msg,
                 "%s was added as a standby but has not caught up yet (match index %llu of "
                 "%llu); promote it later with: jinn members promote %s",
                 op->name,
                 (unsigned long long)node->raft.leader_state.progress[idx].match_index,
                 (unsigned long long)raft_last_index(&node->raft), op->name);
        op_finish(node, JINN_ETIMEOUT, msg);
    }
}

static int op_begin(struct jinn_node *node, enum op_step step, uint64_t id, const char *name,
                    const char *address, jinn_member_cb cb, void *data)
{
    if (node->stopping) {
        return JINN_ESHUTDOWN;
    }
    if (raft_state(&node->raft) != RAFT_LEADER) {
        return JINN_ENOTLEADER;
    }
    if (node->op.step != OP_NONE || node->change_inflight ||
        node->raft.configuration_uncommitted_index != 0) {
        return JINN_EBUSY;
    }
    memset(&node->op, 0, sizeof node->op);
    node->op.step = step;
    node->op.id = id;
    snprintf(node->op.name, sizeof node->op.name, "%s", name);
    snprintf(node->op.address, sizeof node->op.address, "%s", address ? address : "");
    node->op.cb = cb;
    node->op.data = data;
    node->op.deadline = uv_now(node->loop) + CATCHUP_MAX_MS;
    return 0;
}

static void add_probed(void *data, const struct jinn_probe_result *res)
{
    struct jinn_node *node = data;
    struct member_op *op = &node->op;
    char msg[400];
    struct jinn_cmd c;

    if (op->step != OP_PROBE) {
        return; /* the node is stopping */
    }
    if (raft_state(&node->raft) != RAFT_LEADER) {
        op_finish(node, JINN_ENOTLEADER, "leadership lost while probing the new node");
        return;
    }
    if (res->state != JINN_PROBE_OK) {
        snprintf(msg, sizeof msg,
                 "no jinn answers at %s: start it first (jinn run, without --bootstrap)%s",
                 op->address,
                 jinn_peerguard_tls_on()
                     ? "; with cluster_tls, also check its certificate (the log says why)"
                     : "");
        op_finish(node, JINN_EINVAL, msg);
        return;
    }
    if (res->other_cluster || (res->cluster_id != 0 && res->cluster_id != node->cluster_id)) {
        snprintf(msg, sizeof msg,
                 "the jinn at %s belongs to another cluster (%016llx; 0: not told); ours is "
                 "%016llx",
                 op->address, (unsigned long long)res->cluster_id,
                 (unsigned long long)node->cluster_id);
        op_finish(node, JINN_ECONFLICT, msg);
        return;
    }
    if (configuration_has(node, res->id)) {
        snprintf(msg, sizeof msg, "the jinn at %s (id %llu) is already a member", op->address,
                 (unsigned long long)res->id);
        op_finish(node, JINN_ECONFLICT, msg);
        return;
    }
    if (res->has_state) {
        snprintf(msg, sizeof msg,
                 "the jinn at %s holds a raft log already; wipe its data_dir first",
                 op->address);
        op_finish(node, JINN_ECONFLICT, msg);
        return;
    }
    op->id = res->id;
    /* The directory learns its name now; its API URL when it announces. */
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_NODE_SET;
    c.node.id = op->id;
    c.node.name.p = (const uint8_t *)op->name;
    c.node.name.len = strlen(op->name);
    c.node.api.p = (const uint8_t *)"";
    c.node.api.len = 0;
    (void)jinn_node_propose(node, &c, node->cfg->request_timeout_ms, NULL, NULL);
    op->step = OP_ADD;
    op_step(node);
}

int jinn_node_member_add(struct jinn_node *node, const char *name, const char *address,
                         bool standby, jinn_member_cb cb, void *data)
{
    int rv;
    for (unsigned i = 0; i < node->raft.configuration.n; i++) {
        const struct raft_server *s = &node->raft.configuration.servers[i];
        if (strcmp(s->address, address) == 0) {
            return JINN_ECONFLICT; /* remove the old member at that address first */
        }
    }
    rv = op_begin(node, OP_PROBE, 0, name, address, cb, data);
    if (rv != 0) {
        return rv;
    }
    node->op.standby = standby;
    rv = jinn_peerguard_probe(node->loop, address, node->id, node->cluster_id,
                              BOOTSTRAP_PROBE_MS * 2, add_probed, node);
    if (rv != 0) {
        node->op.step = OP_NONE;
        return JINN_EINVAL;
    }
    return 0;
}

int jinn_node_member_remove(struct jinn_node *node, uint64_t id, jinn_member_cb cb, void *data)
{
    const struct raft_server *s = config_server(node, id, NULL);
    unsigned voters = 0;
    int rv;
    if (s == NULL) {
        return JINN_ENOTFOUND;
    }
    if (id == node->id) {
        return JINN_EINVAL; /* hand leadership over first */
    }
    for (unsigned i = 0; i < node->raft.configuration.n; i++) {
        voters += node->raft.configuration.servers[i].role == RAFT_VOTER;
    }
    if (s->role == RAFT_VOTER && voters <= 1) {
        return JINN_EINVAL;
    }
    rv = op_begin(node, OP_REMOVE, id, jinn_node_member_name(node, id), s->address, cb, data);
    if (rv == 0) {
        op_step(node);
    }
    return rv;
}

int jinn_node_member_assign(struct jinn_node *node, uint64_t id, bool voter, jinn_member_cb cb,
                            void *data)
{
    const struct raft_server *s = config_server(node, id, NULL);
    int rv;
    if (s == NULL) {
        return JINN_ENOTFOUND;
    }
    if (!voter && id == node->id) {
        return JINN_EINVAL; /* hand leadership over first */
    }
    if ((s->role == RAFT_VOTER) == voter) {
        return JINN_ECONFLICT;
    }
    rv = op_begin(node, voter ? OP_CATCHUP : OP_ASSIGN, id, jinn_node_member_name(node, id),
                  s->address, cb, data);
    if (rv != 0) {
        return rv;
    }
    node->op.role = voter ? RAFT_VOTER : RAFT_STANDBY;
    if (!voter) {
        op_step(node);
    } else if (s->role == RAFT_SPARE) {
        node->op.step = OP_STANDBY; /* replicate first, then catch up */
        op_step(node);
    }
    return 0;
}

static void op_transfer_done(struct raft_transfer *req)
{
    struct jinn_node *node = req->data;
    jinn_member_cb cb = node->transfer_cb;
    raft_id leader_id;
    const char *address;
    char msg[200];

    if (cb == NULL) {
        return; /* answered already (the node is stopping) */
    }
    node->transfer_cb = NULL;
    raft_leader(&node->raft, &leader_id, &address);
    if (leader_id != 0 && leader_id != node->id) {
        snprintf(msg, sizeof msg, "leadership handed to %s (id %llu)",
                 jinn_node_member_name(node, leader_id), (unsigned long long)leader_id);
        jinn_info("%s", msg);
        cb(node->transfer_data, 0, msg);
    } else {
        cb(node->transfer_data, JINN_ETIMEOUT, "the transfer did not finish; still the leader");
    }
}

int jinn_node_leader_transfer(struct jinn_node *node, uint64_t id, jinn_member_cb cb, void *data)
{
    const struct raft_server *s = id != 0 ? config_server(node, id, NULL) : NULL;
    int rv;
    if (node->stopping) {
        return JINN_ESHUTDOWN;
    }
    if (raft_state(&node->raft) != RAFT_LEADER) {
        return JINN_ENOTLEADER;
    }
    if (id != 0 && (s == NULL || s->role != RAFT_VOTER)) {
        return JINN_ENOTFOUND;
    }
    if (id == node->id) {
        return JINN_ECONFLICT;
    }
    if (node->transfer_cb != NULL || node->op.step != OP_NONE) {
        return JINN_EBUSY;
    }
    node->op_transfer.data = node;
    rv = raft_transfer(&node->raft, &node->op_transfer, id, op_transfer_done);
    if (rv != 0) {
        return rv == RAFT_NOTFOUND ? JINN_ENOTFOUND : JINN_ECONFLICT;
    }
    node->transfer_cb = cb;
    node->transfer_data = data;
    return 0;
}

const char *jinn_node_member_name(const struct jinn_node *node, uint64_t id)
{
    const struct jinn_node_info *info = jinn_nodes_find(&node->fsm.nodes, id);
    int idx = peer_index(node, id);
    if (info != NULL && info->name[0] != '\0') {
        return info->name;
    }
    return idx >= 0 ? node->cfg->peers[idx].name : "?";
}

static void announce(struct jinn_node *node, uint64_t now)
{
    const struct jinn_node_info *me = jinn_nodes_find(&node->fsm.nodes, node->id);
    raft_id leader_id;
    const char *leader_address;
    const struct jinn_node_info *leader;

    if (raft_state(&node->raft) == RAFT_LEADER) {
        forget_departed(node, now);
    }
    if (!jinn_nodes_url_valid(node->api_url, strlen(node->api_url))) {
        if (!node->bad_url_logged) {
            jinn_warn("not announcing API URL %s: it must be http://HOST:PORT", node->api_url);
            node->bad_url_logged = true;
        }
        return;
    }
    if (me != NULL && strcmp(me->api, node->api_url) == 0 &&
        strcmp(me->name, node->cfg->server_name) == 0) {
        return;
    }
    if (now < node->announce_next) {
        return;
    }
    node->announce_next = now + 1000;
    if (raft_state(&node->raft) == RAFT_LEADER) {
        struct jinn_cmd c;
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_NODE_SET;
        c.node.id = node->id;
        c.node.name.p = (const uint8_t *)node->cfg->server_name;
        c.node.name.len = strlen(node->cfg->server_name);
        c.node.api.p = (const uint8_t *)node->api_url;
        c.node.api.len = strlen(node->api_url);
        if (jinn_node_propose(node, &c, node->cfg->request_timeout_ms, NULL, NULL) != 0) {
            jinn_debug("announce: propose failed");
        }
        return;
    }
    raft_leader(&node->raft, &leader_id, &leader_address);
    leader = leader_id ? jinn_nodes_find(&node->fsm.nodes, leader_id) : NULL;
    if (leader != NULL && leader->api[0] != '\0' && node->announcer != NULL) {
        node->announcer(node->announcer_data, leader->api);
    }
}

static void barrier_done(struct raft_barrier *req, int status)
{
    struct jinn_node *node = req->data;
    node->barrier_inflight = false;
    if (status == 0) {
        node->ready_term = node->raft.current_term;
    }
}

/* A new leader knows what is committed only once an entry of its own term
 * commits (Raft §5.4.2); until then it is not ready to serve. */
static void commit_term_start(struct jinn_node *node)
{
    if (node->barrier_inflight || node->ready_term == node->raft.current_term) {
        return;
    }
    node->barrier.data = node;
    if (raft_barrier(&node->raft, &node->barrier, barrier_done) == 0) {
        node->barrier_inflight = true;
    }
}

static void disk_transfer_done(struct raft_transfer *req)
{
    struct jinn_node *node = req->data;
    raft_id leader_id;
    const char *address;
    node->disk_transfer_inflight = false;
    raft_leader(&node->raft, &leader_id, &address);
    if (leader_id != node->id && leader_id != 0) {
        jinn_info("disk full: handed leadership to %s (%s)",
                  jinn_node_member_name(node, leader_id), address);
    }
}

/* A leader whose disk is full refuses every write; another voter may have
 * room. libraft picks the most up-to-date voter; if its disk is full too it
 * hands back, so a try is made at most every 10 s. */
static void disk_hand_over(struct jinn_node *node, uint64_t now)
{
    unsigned voters = 0;
    if (!node->disk.full || node->disk_transfer_inflight || node->stopping ||
        now < node->disk_transfer_next) {
        return;
    }
    for (unsigned i = 0; i < node->raft.configuration.n; i++) {
        voters += node->raft.configuration.servers[i].role == RAFT_VOTER;
    }
    if (voters < 2) {
        return;
    }
    node->disk_transfer_next = now + 10000;
    node->disk_transfer.data = node;
    if (raft_transfer(&node->raft, &node->disk_transfer, 0, disk_transfer_done) == 0) {
        node->disk_transfer_inflight = true;
        jinn_warn("disk full: handing leadership to another voter");
    }
}

/* cluster_peers only bootstraps; once the replicated configuration is
 * known, say (once per configuration) where the two disagree and which
 * command makes them agree. */
static void check_config_agrees(struct jinn_node *node)
{
    const struct raft_configuration *conf = &node->raft.configuration;
    const struct raft_server *me = self_server(node);
    char only_cfg[400] = "", only_conf[400] = "";

    if (conf->n == 0 || node->raft.configuration_index == node->checked_config) {
        return;
    }
    node->checked_config = node->raft.configuration_index;
    if (me != NULL && strcmp(me->address, node->address) != 0) {
        jinn_warn("cluster_peers gives this node the raft address %s but the cluster dials %s; "
                  "to move it: jinn members remove %s, then jinn members add %s=%s",
                  node->address, me->address, node->cfg->server_name, node->cfg->server_name,
                  node->address);
    }
    if (node->cfg->n_peers <= 1) {
        return; /* no cluster_peers given: nothing to compare */
    }
    for (unsigned i = 0; i < node->cfg->n_peers; i++) {
        const struct jinn_peer *p = &node->cfg->peers[i];
        bool found = false;
        for (unsigned k = 0; k < conf->n; k++) {
            found |= strcmp(conf->servers[k].address, p->address) == 0;
        }
        if (!found) {
            snprintf(only_cfg + strlen(only_cfg), sizeof only_cfg - strlen(only_cfg), " %s=%s",
                     p->name, p->address);
        }
    }
    for (unsigned k = 0; k < conf->n; k++) {
        bool found = false;
        for (unsigned i = 0; i < node->cfg->n_peers; i++) {
            found |= strcmp(conf->servers[k].address, node->cfg->peers[i].address) == 0;
        }
        if (!found) {
            snprintf(only_conf + strlen(only_conf), sizeof only_conf - strlen(only_conf),
                     " %s=%s", jinn_node_member_name(node, conf->servers[k].id),
                     conf->servers[k].address);
        }
    }
    if (only_cfg[0] != '\0' || only_conf[0] != '\0') {
        jinn_info("membership differs from cluster_peers (which only bootstraps; `jinn "
                  "members` shows and changes membership): in cluster_peers only:%s; "
                  "members only:%s",
                  only_cfg[0] ? only_cfg : " -", only_conf[0] ? only_conf : " -");
    }
}


/* Logs leader changes once each (followers too): who leads now, by name. */
static void log_leader_change(struct jinn_node *node, raft_id leader_id)
{
    if (node->logged_leader_set && leader_id == node->logged_leader) {
        return;
    }
    if (leader_id == 0) {
        if (node->logged_leader_set && node->logged_leader != node->id) {
            jinn_warn("leader %s lost: no leader known (term %llu)",
                      jinn_node_member_name(node, node->logged_leader),
                      (unsigned long long)node->raft.current_term);
        }
    } else if (leader_id != node->id) {
        jinn_info("leader is %s (id %llu) in term %llu", jinn_node_member_name(node, leader_id),
                  (unsigned long long)leader_id, (unsigned long long)node->raft.current_term);
    }
    node->logged_leader = leader_id;
    node->logged_leader_set = leader_id != 0 || node->logged_leader_set;
}

static bool logged_down_has(const struct jinn_node *node, uint64_t id, unsigned *slot)
{
    *slot = JINN_CONFIG_MAX_PEERS;
    for (unsigned i = 0; i < JINN_CONFIG_MAX_PEERS; i++) {
        if (node->logged_down[i] == id) {
            *slot = i;
            return true;
        }
        if (*slot == JINN_CONFIG_MAX_PEERS && node->logged_down[i] == 0) {
            *slot = i;
        }
    }
    return false;
}

/* Leader: logs a member that stops answering, and again when it answers,
 * once per change (the health window is HEALTHY_TIMEOUTS election
 * timeouts, so a dropped heartbeat or two says nothing). */
static void log_peer_health(struct jinn_node *node, uint64_t now)
{
    const struct raft_configuration *conf = &node->raft.configuration;
    for (unsigned i = 0; i < JINN_CONFIG_MAX_PEERS; i++) {
        if (node->logged_down[i] != 0 && !configuration_has(node, node->logged_down[i])) {
            node->logged_down[i] = 0; /* removed: forget it */
        }
    }
    for (unsigned k = 0; k < conf->n; k++) {
        const struct raft_server *s = &conf->servers[k];
        unsigned slot;
        bool down_logged;
        if (s->id == node->id || s->role == RAFT_SPARE) {
            continue;
        }
        down_logged = logged_down_has(node, s->id, &slot);
        /* Not heard from since this leadership began: a grace period first. */
        if (member_healthy(node, s->id, now) ||
            (seen_at(node, s->id) == 0 &&
             now - node->leader_since <=
                 (uint64_t)node->cfg->election_timeout_ms * HEALTHY_TIMEOUTS)) {
            if (down_logged) {
                node->logged_down[slot] = 0;
                jinn_info("peer %s (%s) answers again", jinn_node_member_name(node, s->id),
                          s->address);
            }
        } else if (!down_logged && slot < JINN_CONFIG_MAX_PEERS) {
            uint64_t at = seen_at(node, s->id);
            node->logged_down[slot] = s->id;
            jinn_warn("peer %s (%s, %s) unreachable: no answer for %llu ms",
                      jinn_node_member_name(node, s->id), s->address,
                      s->role == RAFT_VOTER ? "voter" : "standby",
                      (unsigned long long)(now - (at != 0 ? at : node->leader_since)));
        }
    }
}

static void tick_cb(uv_timer_t *timer)
{
    struct jinn_node *node = timer->data;
    uint64_t now = uv_now(node->loop);
    resolve_restore(node);
    int state = raft_state(&node->raft);
    raft_id leader_id;
    const char *leader_address;

    if (state == RAFT_UNAVAILABLE && !node->stopping) {
        /* libraft 0.15 turns a started raft RAFT_UNAVAILABLE when handling a
         * message or its tick fails (recvCb, tickCb: e.g. a follower's log
         * append failing at once on a disk error, which its uv io does for
         * every append once one write failed) and never leaves that state
         * (only raft_start converts it to follower): the node would stay out
         * of the cluster, silent, with /healthz 200. A restart reloads the
         * log from disk and rejoins. */
        raft_untrusted("raft stopped taking part in the cluster (libraft went unavailable in "
                       "term %llu, last log index %llu: handling a message or its tick failed, "
                       "usually a failed write to the raft log)",
                       (unsigned long long)node->raft.current_term,
                       (unsigned long long)raft_last_index(&node->raft));
    }
    raft_leader(&node->raft, &leader_id, &leader_address);
    if (node->cluster_id == 0 && leader_id != 0 && leader_id != node->id &&
        configuration_has(node, node->id)) {
        /* A new node takes the cluster id of the leader raft follows once
         * a configuration including it arrived, never the first
         * dialler's (peerguard.h). */
        uint64_t cid = jinn_peerguard_cluster_of(&node->pg, leader_id);
        if (cid != 0) {
            node->pg.cluster_id = cid;
            jinn_info("joined cluster %016llx (leader %llu)", (unsigned long long)cid,
                      (unsigned long long)leader_id);
            cluster_learned(node, cid);
        }
    }
    /* libuv runs timers before I/O in a loop turn, so after a stall (the
     * process was stopped, starved or swapped) this runs before the
     * messages that queued up meanwhile are read: those are not taken as
     * news from the present (freshness, fresh.h). */
    if (node->last_tick != 0 && now - node->last_tick > STALL_MS) {
        node->distrust_until = now + STALL_DISTRUST_MS;
        jinn_debug("event loop stalled for %llu ms", (unsigned long long)(now - node->last_tick));
    }
    node->last_tick = now;
    if (node->fsm.time_ms != node->seen_time) {
        /* Noted at most a tick late: the time since is underestimated. */
        node->seen_time = node->fsm.time_ms;
        node->seen_mono = uv_hrtime() / 1000000u;
    }
    if (state == RAFT_LEADER) {
        if (!node->was_leader) {
            /* Fresh leadership: give every member a full grace period. */
            for (unsigned i = 0; i < SEEN_MAX; i++) {
                node->seen[i].at = now;
            }
            node->was_leader = true;
            jinn_info("became leader in term %llu",
                      (unsigned long long)node->raft.current_term);
            memset(node->logged_down, 0, sizeof node->logged_down);
            node->leader_since = now;
        }
        log_peer_health(node, now);
        node->last_leader_contact = now;
        commit_term_start(node);
        advance_cluster_time(node);
        manage_membership(node, now);
        disk_hand_over(node, now);
    } else {
        /* (op_tick below fails an operator change that lost leadership) */
        if (node->was_leader) {
            jinn_info("lost leadership");
        }
        node->was_leader = false;
        if (state == RAFT_FOLLOWER && leader_id != 0) {
            node->last_leader_contact = node->raft.election_timer_start;
        }
    }
    log_leader_change(node, leader_id);
    op_tick(node, now);
    check_config_agrees(node);
    if (leader_id != 0 && !node->stopping) {
        announce(node, now);
    }
}

void jinn_node_set_announcer(struct jinn_node *node, jinn_announce_fn fn, void *data)
{
    node->announcer = fn;
    node->announcer_data = data;
}

/* ---- status ---------------------------------------------------------- */

/* The term of the entry at index in raft's in-memory log (0 when not held).
 * libraft 0.15 exports no lookup; struct raft_log is public. */
static uint64_t term_of(const struct raft *r, uint64_t index)
{
    const struct raft_log *l = &r->log;
    size_t n = l->back >= l->front ? l->back - l->front : l->size - l->front + l->back;

    if (index != 0 && index == l->snapshot.last_index) {
        return l->snapshot.last_term;
    }
    if (index <= l->offset || index > l->offset + n || l->size == 0) {
        return 0;
    }
    return l->entries[(l->front + (index - l->offset - 1)) % l->size].term;
}

static void replica_node_status(struct jinn_node *node, struct jinn_node_status *st);

void jinn_node_status(struct jinn_node *node, struct jinn_node_status *st)
{
    uint64_t now = uv_now(node->loop);
    const struct raft_server *me;
    int state;
    raft_id leader_id;
    const char *leader_address;
    const struct jinn_node_info *info;

    if (node->replica) {
        replica_node_status(node, st);
        return;
    }
    me = self_server(node);
    state = raft_state(&node->raft);
    memset(st, 0, sizeof *st);
    st->name = node->cfg->server_name;
    st->id = node->id;
    st->cluster_id = node->cluster_id;
    if (state == RAFT_FOLLOWER && me == NULL) {
        snprintf(node->note, sizeof node->note,
                 "not a member yet; add it with: jinn members add %s=%s",
                 node->cfg->server_name, node->address);
        st->note = node->note;
    } else if (me != NULL && strcmp(me->address, node->address) != 0) {
        /* The configuration, not cluster_peers, is what peers dial. */
        snprintf(node->note, sizeof node->note,
                 "cluster_peers gives this node the raft address %s but the cluster dials "
                 "%s; to move it: jinn members remove %s, then jinn members add %s=%s",
                 node->address, me->address, node->cfg->server_name, node->cfg->server_name,
                 node->address);
        st->note = node->note;
    }
    switch (state) {
    case RAFT_LEADER:
        st->role = JINN_ROLE_LEADER;
        break;
    case RAFT_CANDIDATE:
        st->role = JINN_ROLE_CANDIDATE;
        break;
    case RAFT_FOLLOWER:
        st->role = me == NULL                ? JINN_ROLE_JOINING
                   : me->role != RAFT_VOTER ? JINN_ROLE_STANDBY
                                            : JINN_ROLE_FOLLOWER;
        break;
    default:
        st->role = JINN_ROLE_UNAVAILABLE;
    }
    st->term = node->raft.current_term;
    raft_leader(&node->raft, &leader_id, &leader_address);
    st->leader_id = leader_id;
    if (leader_id != 0) {
        int idx = peer_index(node, leader_id);
        info = jinn_nodes_find(&node->fsm.nodes, leader_id);
        st->leader_name = idx >= 0 ? node->cfg->peers[idx].name : (info ? info->name : "?");
        st->leader_api = info != NULL && info->api[0] != '\0' ? info->api : NULL;
    }
    st->commit_index = node->raft.commit_index;
    st->leader_ready = state == RAFT_LEADER && node->ready_term == node->raft.current_term;
    /* After a restart every node's commit index is the bootstrap entry's,
     * and a new leader's first heartbeats carry that stale value: a follower
     * knows it has caught up only once the commit index it learnt is an
     * entry of the current term (the leader's term-start barrier at least). */
    st->commit_current = term_of(&node->raft, node->raft.commit_index) == node->raft.current_term;
    st->applied_index = raft_last_applied(&node->raft);
    st->last_index = raft_last_index(&node->raft);
    st->cluster_time_ms = node->fsm.time_ms;
    /* Honest staleness (fresh.h), not libraft's election timer: that one
     * is reset by every heartbeat, even while this node lags far behind. */
    st->leader_contact_ms = staleness(node, now);
    if (state == RAFT_LEADER) {
        /* A leader no quorum answered within an election timeout may have
         * been deposed already: it says so. */
        st->quorum = st->leader_contact_ms >= 0 &&
                     st->leader_contact_ms < (int64_t)node->cfg->election_timeout_ms;
        /* Until its term-start barrier applied, a new leader may not have
         * applied what its predecessor acknowledged (Raft 5.4.2): it is in
         * contact with a quorum, but not known fresh. */
        if (node->ready_term != node->raft.current_term) {
            st->leader_contact_ms = -1;
        }
    } else {
        int64_t heard_ms = -1;
        if (state == RAFT_FOLLOWER && leader_id != 0) {
            heard_ms = (int64_t)(now - node->raft.election_timer_start);
        } else if (node->last_leader_contact != 0) {
            heard_ms = (int64_t)(now - node->last_leader_contact);
        }
        st->quorum = leader_id != 0 && heard_ms >= 0 &&
                     heard_ms < (int64_t)node->cfg->election_timeout_ms;
    }
    for (unsigned i = 0; i < node->raft.configuration.n && i < JINN_CONFIG_MAX_PEERS; i++) {
        const struct raft_server *s = &node->raft.configuration.servers[i];
        struct jinn_member *m = &st->members[st->n_members++];
        int idx = peer_index(node, s->id);
        info = jinn_nodes_find(&node->fsm.nodes, s->id);
        m->id = s->id;
        m->address = s->address;
        m->name = info != NULL && info->name[0] ? info->name
                  : idx >= 0                   ? node->cfg->peers[idx].name
                                               : "?";
        m->api = info != NULL ? info->api : "";
        m->voter = s->role == RAFT_VOTER;
        m->spare = s->role == RAFT_SPARE;
        m->last_contact_ms = -1;
        if (state == RAFT_LEADER) {
            uint64_t at = s->id == node->id ? now : seen_at(node, s->id);
            m->match_index = s->id == node->id ? raft_last_index(&node->raft)
                                               : node->raft.leader_state.progress[i].match_index;
            m->last_contact_ms = at != 0 ? (int64_t)(now - at) : -1;
            m->reachable = s->id == node->id || member_healthy(node, s->id, now);
        }
    }
    st->proposals_ok = node->proposals_ok;
    st->proposals_failed = node->proposals_failed;
    st->read_barriers = node->read_barriers;
    st->appends = node->guard.appends;
    st->entries_appended = node->guard.entries_appended;
    st->acks_capped = node->guard.capped;
    st->raft_refused = node->pg.refused;
    st->reads_linearized = node->reads_linearized;
    st->disk_full = node->disk.full;
    st->disk_free_bytes = node->disk.free_bytes;
    st->disk_min_free_bytes = node->disk.reserve;
}

const struct jinn_fsm *jinn_node_fsm(const struct jinn_node *node) { return &node->fsm; }

uint64_t jinn_node_time_now(const struct jinn_node *node)
{
    uint64_t mono = uv_hrtime() / 1000000u;
    if (node->seen_time != 0 && node->seen_time == node->fsm.time_ms && mono > node->seen_mono) {
        return node->fsm.time_ms + (mono - node->seen_mono);
    }
    return node->fsm.time_ms;
}

uint64_t jinn_node_cluster_id(const struct jinn_node *node) { return node->cluster_id; }

bool jinn_node_is_leader(struct jinn_node *node)
{
    return !node->replica && raft_state(&node->raft) == RAFT_LEADER;
}

unsigned jinn_node_unanswered(const struct jinn_node *node)
{
    /* A read barrier in flight (or its readers' answers, due on the next
     * loop turn) counts as one: its readers are answered when it ends. */
    return node->unanswered + (node->reading != NULL || node->finished != NULL);
}

void jinn_node_fail_reads(struct jinn_node *node)
{
    /* Stopping: a read has no effect, so answering "shutting down" before
     * its barrier ends is true; the barrier's end then finds no readers. */
    struct read_waiter *w = node->reading, *f = node->finished;
    node->reading = NULL;
    node->finished = NULL;
    fail_waiters(w, JINN_ESHUTDOWN);
    fail_waiters(f, JINN_ESHUTDOWN);
    w = node->queued;
    node->queued = NULL;
    node->queued_tail = &node->queued;
    fail_waiters(w, JINN_ESHUTDOWN);
}

/* ---- shutdown ---------------------------------------------------------- */

static void kick_closed(uv_handle_t *h)
{
    struct jinn_node *node = h->data;
    if (node->stop_cb != NULL) {
        node->stop_cb(node->stop_data);
    }
}

static void tick_closed(uv_handle_t *h)
{
    struct jinn_node *node = h->data;
    /* Readers still waiting are answered before the node goes away. */
    if (node->finished != NULL) {
        fail_waiters(node->finished, node->finished_code);
        node->finished = NULL;
    }
    fail_waiters(node->queued, JINN_ESHUTDOWN);
    node->queued = NULL;
    node->queued_tail = &node->queued;
    uv_close((uv_handle_t *)&node->kick, kick_closed);
}

static void raft_closed(struct raft *raft)
{
    struct jinn_node *node = raft->data;
    raft_uv_close(&node->io);
    raft_uv_tcp_close(&node->transport);
    node->io_ready = false;
    node->transport_ready = false;
    node->raft_ready = false;
    uv_close((uv_handle_t *)&node->tick, tick_closed);
}

static void close_raft(struct jinn_node *node)
{
    if (node->disk.full) {
        /* libraft 0.15's storage can fail on ENOSPC in the background
         * (segment preallocation), and closing it then can call back into
         * freed state (seen: a close callback with a garbage io). Every
         * acknowledged entry is fsynced already and SQL files are rebuilt at
         * start, so stop as a power cut would: raft is built for that. */
        jinn_warn("disk full: exiting without closing raft storage (nothing acknowledged "
                  "is lost; the next start replays the log)");
        fflush(NULL);
        _exit(0);
    }
    raft_close(&node->raft, raft_closed);
}

static void transfer_done(struct raft_transfer *req)
{
    struct jinn_node *node = req->data;
    raft_id leader_id;
    const char *address;
    raft_leader(&node->raft, &leader_id, &address);
    if (leader_id != node->id && leader_id != 0) {
        jinn_info("leadership transfer done: %s leads", jinn_node_member_name(node, leader_id));
    } else {
        jinn_info("leadership transfer %s", leader_id != node->id ? "done" : "did not finish");
    }
    close_raft(node);
}

static void hand_over_and_close(struct jinn_node *node);

static void drain_closed(uv_handle_t *h)
{
    hand_over_and_close(h->data);
}

/* Proposals in flight finish (or the deadline passes) before raft closes:
 * libraft 0.15 can crash when closed under in-flight appends. */
static void drain_check(uv_timer_t *t)
{
    struct jinn_node *node = t->data;
    if (node->inflight == 0 || uv_now(node->loop) >= node->drain_deadline) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, drain_closed);
    }
}

static void replica_stop(struct jinn_node *node);

void jinn_node_stop(struct jinn_node *node, void (*cb)(void *data), void *data)
{
    assert(!node->stopping);
    node->stopping = true;
    if (node->replica) {
        node->stop_cb = cb;
        node->stop_data = data;
        replica_stop(node);
        return;
    }
    if (node->op.step != OP_NONE) {
        op_finish(node, JINN_ESHUTDOWN, "the leader is shutting down");
    }
    if (node->transfer_cb != NULL) {
        jinn_member_cb answer = node->transfer_cb;
        node->transfer_cb = NULL;
        answer(node->transfer_data, JINN_ESHUTDOWN, "the leader is shutting down");
    }
    {
        /* Reads not yet behind a barrier are answered now, while HTTP is up
         * (no new barrier starts once stopping); the daemon keeps HTTP up
         * for the barrier in flight (jinn_node_unanswered). */
        struct read_waiter *w = node->queued;
        node->queued = NULL;
        node->queued_tail = &node->queued;
        fail_waiters(w, JINN_ESHUTDOWN);
    }
    node->stop_cb = cb;
    node->stop_data = data;
    uv_timer_stop(&node->tick);
    jinn_disk_stop(&node->disk);
    node->drain_deadline = uv_now(node->loop) + 2u * node->cfg->election_timeout_ms;
    uv_timer_init(node->loop, &node->drain);
    node->drain.data = node;
    uv_timer_start(&node->drain, drain_check, 0, 10);
}

static void hand_over_and_close(struct jinn_node *node)
{
    unsigned voters = 0;

    for (unsigned i = 0; i < node->raft.configuration.n; i++) {
        voters += node->raft.configuration.servers[i].role == RAFT_VOTER;
    }
    if (raft_state(&node->raft) == RAFT_LEADER && voters > 1) {
        node->transfer.data = node;
        if (raft_transfer(&node->raft, &node->transfer, 0, transfer_done) == 0) {
            jinn_info("handing leadership over before shutdown");
            return;
        }
    }
    close_raft(node);
}

void jinn_node_destroy(struct jinn_node *node)
{
    if (node == NULL) {
        return;
    }
    /* A node that failed to start never ran raft: release what was set up. */
    if (node->io_ready) {
        raft_uv_close(&node->io);
    }
    if (node->transport_ready) {
        raft_uv_tcp_close(&node->transport);
    }
    jinn_fsm_close(&node->fsm);
    jinn_peerguard_tls_free();
    if (node->lock_fd >= 0) {
        close(node->lock_fd);
    }
    jinn_free(node);
}

int jinn_node_write_identity(const char *data_dir, uint64_t id, uint64_t cluster_id,
                             const char *name)
{
    struct identity ident;
    memset(&ident, 0, sizeof ident);
    ident.id = id;
    ident.cluster_id = cluster_id;
    snprintf(ident.name, sizeof ident.name, "%s", name);
    return write_identity(data_dir, &ident);
}

uint64_t jinn_node_wall_now(const struct jinn_node *node)
{
    return wall_ms() + (uint64_t)node->test_clock_offset_ms; /* wraps as signed */
}

/* ---- edge replicas ---------------------------------------------------------
 *
 * A replica node has the FSM and nothing of raft: the stream client
 * (src/replica/) feeds it records and heartbeats. Its state lives in memory
 * and in data_dir/sql (wiped at start: a restarted replica asks for a
 * snapshot, as a new one does). It never proposes, never announces itself
 * and runs no jobs: it is not a member. */

const char *jinn_replica_state_name(enum jinn_replica_state s)
{
    static const char *const names[] = {"connecting", "catching_up", "streaming", "read_only"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}

int jinn_node_create_replica(uv_loop_t *loop, const struct jinn_config *cfg,
                             struct jinn_node **out)
{
    struct jinn_node *node;
    if (!cfg->replica) {
        return JINN_ECONFIG; /* a member's config: jinn_node_create */
    }
    node = jinn_calloc(1, sizeof *node);
    if (node == NULL) {
        return JINN_ENOMEM;
    }
    node->replica = true;
    node->loop = loop;
    node->cfg = cfg;
    node->id = jinn_node_id_for(cfg->server_name); /* for logs and status only */
    node->address = "";
    node->lock_fd = -1;
    node->queued_tail = &node->queued;
    node->rep.client = JINN_REPLICA_CONNECTING;
    node->rep.read_only = true; /* no leader known yet */
    jinn_fresh_init(&node->fresh);
    jinn_fsm_init(&node->fsm);
    node->fsm.on_apply = node_applied;
    node->fsm.on_apply_data = node;
    *out = node;
    return 0;
}

bool jinn_node_is_replica(const struct jinn_node *node) { return node->replica; }

uint64_t jinn_node_replica_position(const struct jinn_node *node) { return node->rep.position; }

static uint64_t stale_after(const struct jinn_node *node)
{
    return node->cfg->replica_stale_after_ms != 0 ? node->cfg->replica_stale_after_ms
                                                  : JINN_DEFAULT_REPLICA_STALE_AFTER_MS;
}

/* A node too old to send its election_timeout: assume the default. */
#define REPLICA_ASSUMED_ELECTION_TIMEOUT_MS 500

/* How long the term of the last primary heartbeat is kept (see
 * jinn_node_replica_heartbeat): replica_stale_after plus two election
 * timeouts. */
static uint64_t term_kept_ms(const struct jinn_node *node)
{
    uint64_t et = node->rep.election_timeout_ms != 0 ? node->rep.election_timeout_ms
                                                     : REPLICA_ASSUMED_ELECTION_TIMEOUT_MS;
    return stale_after(node) + 2 * et;
}

/* The read-only switch: on when no primary heartbeat arrived for
 * replica_stale_after (counted from start before the first one), or the
 * stream client said so; off only through a primary heartbeat. */
static void replica_check_stale(struct jinn_node *node, uint64_t now)
{
    uint64_t since = node->rep.last_primary != 0 ? node->rep.last_primary : node->rep.started;
    bool stale = node->rep.last_primary == 0 || now - since > stale_after(node);
    if (node->rep.read_only || !(stale || node->rep.forced_read_only)) {
        return;
    }
    node->rep.read_only = true;
    if (node->rep.forced_read_only) {
        jinn_warn("replica: read-only (the stream from %s has no primary heartbeat)",
                  node->rep.source[0] ? node->rep.source : "?");
    } else {
        jinn_warn("replica: no primary heartbeat for %llu ms (replica_stale_after %llu ms): "
                  "read-only; writes answer 503 read_only until the leader is heard again",
                  (unsigned long long)(now - since), (unsigned long long)stale_after(node));
    }
}

static void replica_tick(uv_timer_t *t)
{
    struct jinn_node *node = t->data;
    uint64_t now = uv_now(node->loop);
    /* A stall says nothing about the stream (see tick_cb): the heartbeats
     * queued meanwhile are read right after this. */
    if (node->last_tick != 0 && now - node->last_tick > STALL_MS) {
        node->distrust_until = now + STALL_DISTRUST_MS;
    }
    node->last_tick = now;
    if (now >= node->distrust_until) {
        replica_check_stale(node, now);
    }
}

/* data_dir/sql/GENERATION: a decimal number rewritten (tmp, fsync,
 * rename) after each snapshot restore. A restore renames new database
 * files over the old ones, so a reader outside jinn that keeps a
 * connection open would read the old files for ever: it reads this file
 * before a transaction and reopens its connections when it changed. It
 * survives restarts (the start wipes only *.db*), so it never goes back. */
#define SQL_GENERATION_FILE "GENERATION"

static uint64_t read_sql_generation(const char *data_dir)
{
    char path[4200], text[32];
    unsigned long long v = 0;
    ssize_t n;
    int fd;
    snprintf(path, sizeof path, "%s/sql/%s", data_dir, SQL_GENERATION_FILE);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    text[n] = '\0';
    if (sscanf(text, "%llu", &v) != 1) {
        return 0;
    }
    return (uint64_t)v;
}

static int write_sql_generation(const char *data_dir, uint64_t gen)
{
    char dir[4200], text[32];
    int n;
    snprintf(dir, sizeof dir, "%s/sql", data_dir);
    n = snprintf(text, sizeof text, "%llu\n", (unsigned long long)gen);
    return write_file_atomic(dir, SQL_GENERATION_FILE, text, (size_t)n);
}

static int replica_start(struct jinn_node *node)
{
    const struct jinn_config *cfg = node->cfg;
    int rv;

    if (make_dirs(cfg->data_dir) != 0) {
        jinn_error("cannot create data_dir %s: %s", cfg->data_dir, strerror(errno));
        return JINN_EIO;
    }
    rv = lock_data_dir(node);
    if (rv != 0) {
        return rv;
    }
    /* The databases are rebuilt from the snapshot the stream sends first. */
    rv = jinn_sql_set_dir(&node->fsm.sql, cfg->data_dir);
    if (rv != 0) {
        jinn_error("cannot prepare %s/sql for databases", cfg->data_dir);
        return rv;
    }
    node->rep.sql_generation = read_sql_generation(cfg->data_dir);
    node->rep.started = uv_now(node->loop);
    node->last_tick = node->rep.started;
    uv_timer_init(node->loop, &node->rep.timer);
    node->rep.timer.data = node;
    uv_timer_start(&node->rep.timer, replica_tick, REPLICA_TICK_MS, REPLICA_TICK_MS);
    node->rep.timer_on = true;
    jinn_info("replica %s started: data %s, read-only until a primary heartbeat arrives",
              cfg->server_name, cfg->data_dir);
    return 0;
}

static void replica_timer_closed(uv_handle_t *h)
{
    struct jinn_node *node = h->data;
    node->rep.timer_on = false;
    if (node->stop_cb != NULL) {
        node->stop_cb(node->stop_data);
    }
}

static void replica_stop(struct jinn_node *node)
{
    if (node->rep.timer_on) {
        uv_timer_stop(&node->rep.timer);
        uv_close((uv_handle_t *)&node->rep.timer, replica_timer_closed);
    } else if (node->stop_cb != NULL) {
        node->stop_cb(node->stop_data);
    }
}

/* After the state moved (an apply or a restore): cluster time seen now,
 * then the hooks a voter runs (watches, min_index waits, checks). */
static void replica_moved(struct jinn_node *node, uint64_t index)
{
    node->rep.announced = index;
    if (node->fsm.time_ms != node->seen_time) {
        node->seen_time = node->fsm.time_ms;
        node->seen_mono = uv_hrtime() / 1000000u;
    }
    if (node->fsm.on_apply != NULL) {
        node->fsm.on_apply(node->fsm.on_apply_data, index);
    }
}

int jinn_node_replica_restore_check(const struct jinn_node *node, uint64_t index)
{
    if (!node->replica || node->stopping) {
        return node->replica ? JINN_ESHUTDOWN : JINN_EINVAL;
    }
    if (node->rep.halted) {
        return JINN_EDIVERGED;
    }
    if (index < node->rep.position) {
        /* Never go back: what the replica served would un-happen. */
        jinn_error("replica: snapshot at %llu refused: older than the position %llu",
                   (unsigned long long)index, (unsigned long long)node->rep.position);
        return JINN_ECONFLICT;
    }
    return 0;
}

int jinn_node_replica_restore_commit(struct jinn_node *node, uint64_t index,
                                     struct jinn_fsm_restore *rs, size_t len)
{
    /* Checked again: the node may have stopped or halted, or moved,
     * while the snapshot was decoded. */
    int rv = jinn_node_replica_restore_check(node, index);
    if (rv != 0) {
        return rv;
    }
    jinn_fsm_restore_commit(&node->fsm, rs);
    node->rep.position = index;
    node->rep.hb_applied = 0; /* it spoke of the state replaced */
    /* The term heard belongs to the chain replaced (a cluster bootstrapped
     * again starts at a lower one): relearned from the next heartbeat. */
    node->rep.term = 0;
    node->rep.restores++;
    /* Readers outside jinn hold the replaced files: tell them. A failure
     * to write it is logged; the state itself is restored. */
    node->rep.sql_generation++;
    (void)write_sql_generation(node->cfg->data_dir, node->rep.sql_generation);
    jinn_info("replica: snapshot restored at %llu (%zu bytes, cluster time %llu)",
              (unsigned long long)index, len, (unsigned long long)node->fsm.time_ms);
    replica_moved(node, index);
    return 0;
}

int jinn_node_replica_restore(struct jinn_node *node, uint64_t index, const void *snap,
                              size_t len)
{
    struct jinn_fsm_restore *rs = NULL;
    int rv = jinn_node_replica_restore_check(node, index);
    if (rv != 0) {
        return rv;
    }
    /* The voters' restore: decoded into a fresh state, swapped in whole
     * (SQL images written beside the live files, then renamed over them),
     * or nothing changes. */
    rv = jinn_fsm_restore_prepare(&node->fsm, snap, len, &rs);
    if (rv != 0) {
        jinn_error("replica: snapshot at %llu (%zu bytes) refused: %s; the state stays at %llu",
                   (unsigned long long)index, len, jinn_error_message(rv),
                   (unsigned long long)node->rep.position);
        return rv;
    }
    rv = jinn_node_replica_restore_commit(node, index, rs, len);
    jinn_fsm_restore_free(rs);
    return rv;
}

int jinn_node_replica_apply(struct jinn_node *node, uint64_t index, uint64_t prev,
                            const void *buf, size_t len)
{
    if (!node->replica || node->stopping) {
        return node->replica ? JINN_ESHUTDOWN : JINN_EINVAL;
    }
    if (node->rep.halted) {
        return JINN_EDIVERGED;
    }
    if (prev != node->rep.position || index <= prev) {
        /* Not the next record of our chain: never skip, never twice. */
        return JINN_ECONFLICT;
    }
    /* The voters' apply path (fsm.c apply_at): a record no build could
     * apply, or a local failure, stops this process with a clear message
     * exactly as it stops a voter. */
    (void)jinn_fsm_apply_buf(&node->fsm, index, buf, len);
    node->rep.position = index;
    node->rep.applied++;
    replica_moved(node, index);
    return 0;
}

static void copy_bounded(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strnlen(src, cap) : 0;
    if (n >= cap) {
        n = 0; /* too long to be what it claims: unknown */
    }
    memcpy(dst, src != NULL ? src : "", n);
    dst[n] = '\0';
}

/* A leader URL fit to relay to: http(s)://, printable, no spaces. */
static bool url_ok(const char *url)
{
    size_t n;
    if (url == NULL || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        return false;
    }
    n = strnlen(url, REPLICA_URL_MAX);
    if (n >= REPLICA_URL_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f) {
            return false;
        }
    }
    return true;
}

/* "http://host:port" of an http(s) or ws(s) URL, the default port (80,
 * 443 for https and wss) made explicit, the host lowercased: what the relay
 * allow-list compares, and the URL relays go to (fetch.c speaks http://
 * URLs only; TLS comes from the configuration, wss:// replica_of). false
 * when it is no such URL. */
static bool url_origin(const char *url, char *out, size_t cap)
{
    const char *h, *e, *port;
    bool tls;
    size_t hn, n = 0;
    if (url == NULL) {
        return false;
    }
    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "ws://", 5) == 0) {
        tls = false;
    } else if (strncmp(url, "https://", 8) == 0 || strncmp(url, "wss://", 6) == 0) {
        tls = true;
    } else {
        return false;
    }
    h = strstr(url, "://") + 3;
    for (e = h; *e != '\0' && *e != '/' && *e != '?' && *e != '#'; e++) {
        if ((unsigned char)*e <= 0x20 || (unsigned char)*e >= 0x7f || *e == '@') {
            return false; /* no credentials, nothing a header could not carry */
        }
    }
    port = memchr(h, ':', (size_t)(e - h));
    hn = port != NULL ? (size_t)(port - h) : (size_t)(e - h);
    if (hn == 0 || (port != NULL && port + 1 == e) || hn + 16 > cap) {
        return false;
    }
    n = (size_t)snprintf(out, cap, "http://");
    for (size_t i = 0; i < hn; i++) {
        out[n++] = (char)tolower((unsigned char)h[i]);
    }
    out[n] = '\0';
    if (port != NULL) {
        size_t pn = (size_t)(e - port);
        if (n + pn + 1 > cap) {
            return false;
        }
        memcpy(out + n, port, pn);
        out[n + pn] = '\0';
    } else {
        snprintf(out + n, cap - n, ":%s", tls ? "443" : "80");
    }
    return true;
}

/* Where writes are relayed (m6: a heartbeat is not trusted with clients'
 * credentials): the heartbeat's leader_api when its host:port is that of a
 * replica_of URL, else the node this heartbeat came through, which
 * forwards to its leader as it does for any client. false: neither is
 * usable. */
static bool relay_target(const struct jinn_config *cfg, const char *leader_api,
                         const char *source_url, char *out, size_t cap)
{
    char want[REPLICA_URL_MAX], have[REPLICA_URL_MAX];
    if (url_ok(leader_api) && url_origin(leader_api, want, sizeof want)) {
        for (unsigned i = 0; i < cfg->n_replica_of; i++) {
            if (url_origin(cfg->replica_of[i], have, sizeof have) && strcmp(want, have) == 0) {
                snprintf(out, cap, "%s", leader_api);
                return true;
            }
        }
    }
    return url_origin(source_url, out, cap) && url_ok(out);
}

/* The applied index a replica answers with (X-Jinn-Applied-Index, min_index
 * waits): its position, or the streaming node's applied index of the last
 * heartbeat if that was sent at our position. Entries that are no commands
 * (a new leader's barrier, a linearizable read's) never reach a replica, so
 * at that position it has the state the node had at that index. */
static uint64_t replica_applied(const struct jinn_node *node)
{
    if (node->rep.hb_position == node->rep.position &&
        node->rep.hb_applied > node->rep.position) {
        return node->rep.hb_applied;
    }
    return node->rep.position;
}

static void replica_heard_applied(struct jinn_node *node,
                                  const struct jinn_replica_heartbeat *hb)
{
    uint64_t applied;
    node->rep.hb_position = hb->position;
    node->rep.hb_applied = hb->applied >= hb->position ? hb->applied : 0;
    applied = replica_applied(node);
    if (applied > node->rep.announced && !node->rep.halted) {
        node->rep.announced = applied;
        /* min_index reads parked for a barrier's index are served now */
        if (node->apply_hook != NULL) {
            node->apply_hook(node->apply_hook_data, applied);
        }
    }
}

void jinn_node_replica_heartbeat(struct jinn_node *node, const struct jinn_replica_heartbeat *hb)
{
    uint64_t now = uv_now(node->loop);
    uint64_t contact, at;
    bool primary, term_heard;
    char relay[REPLICA_URL_MAX];

    if (!node->replica || node->stopping) {
        return;
    }
    if (hb->cluster_id != 0 && node->cluster_id != 0 && hb->cluster_id != node->cluster_id) {
        /* The stream request names our cluster, so a node of another one
         * refuses it; this is a safety net. */
        if (node->rep.mismatch_logged == 0 || now - node->rep.mismatch_logged > 10000) {
            jinn_error("replica: heartbeat from cluster %016llx ignored: this replica follows "
                       "cluster %016llx",
                       (unsigned long long)hb->cluster_id, (unsigned long long)node->cluster_id);
            node->rep.mismatch_logged = now;
        }
        return;
    }
    if (hb->cluster_id != 0 && node->cluster_id == 0) {
        node->cluster_id = hb->cluster_id;
        jinn_info("replica: following cluster %016llx", (unsigned long long)hb->cluster_id);
    }
    node->rep.heartbeats++;
    replica_heard_applied(node, hb);
    if (now < node->distrust_until) {
        return; /* may have waited in the socket during a stall */
    }
    primary = hb->quorum && hb->leader_id != 0 && hb->leader_contact_ms >= 0 &&
              (uint64_t)hb->leader_contact_ms <= stale_after(node);
    /* A node still in contact with an older leader than one we heard of
     * (partitioned with it) speaks for nobody - but only while that newer
     * term is still being heard: the term remembered expires some time
     * after the last primary heartbeat at it (term_kept_ms). Kept for good,
     * one heartbeat with a huge term (a hostile or MITM ws:// source, a
     * corrupted one, a cluster bootstrapped again) made the replica ignore
     * every true heartbeat after it: read-only until restarted (A3 m1).
     * Expiring it must cost nothing real: the old leader cut off from its
     * quorum keeps believing it leads until its check of the quorum's
     * contact, up to two election timeouts after it lost it (libraft
     * checks once per election timeout), and a follower still in contact
     * with it counts as primary until its leader_contact_ms passes
     * replica_stale_after after that. So the term is kept for
     * replica_stale_after + 2 election timeouts, with the cluster's
     * election timeout from its heartbeats: replica_stale_after alone (as
     * low as 100 ms, the election timeout 500 ms by default and up to
     * 60 s) let the old leader's heartbeats count again (A4 m3). A source
     * that lies keeps lying whatever is remembered; this only stops one
     * lie from outliving it (by at most replica_stale_after + 120 s). */
    term_heard =
        node->rep.last_primary != 0 && now - node->rep.last_primary <= term_kept_ms(node);
    if (!primary || (hb->term < node->rep.term && term_heard) || !url_ok(hb->leader_api) ||
        !relay_target(node->cfg, hb->leader_api, hb->source_url, relay, sizeof relay)) {
        return;
    }
    node->rep.primary_heartbeats++;
    if (hb->term != node->rep.term || hb->leader_id != node->rep.leader_id) {
        jinn_info("replica: primary heartbeat: leader %s (term %llu) through %s",
                  hb->leader_name ? hb->leader_name : "?", (unsigned long long)hb->term,
                  hb->node ? hb->node : "?");
    }
    node->rep.term = hb->term;
    if (hb->election_timeout_ms != 0) {
        node->rep.election_timeout_ms = hb->election_timeout_ms;
    }
    node->rep.leader_id = hb->leader_id;
    copy_bounded(node->rep.leader_name, sizeof node->rep.leader_name, hb->leader_name);
    copy_bounded(node->rep.leader_api, sizeof node->rep.leader_api, relay);
    node->rep.leader_commit = hb->commit;
    node->rep.last_primary = now;
    node->rep.forced_read_only = false;
    /* Freshness as a follower's (fresh.h): the streaming node heard the
     * leader leader_contact_ms ago, when everything up to `commit` was
     * committed (the node sends its commit index as a stream position:
     * its last record's index once it applied all of it, since entries
     * that are no commands, such as a new leader's barrier, never reach a
     * replica). Once we applied that far, we are fresh as of then. */
    contact = (uint64_t)hb->leader_contact_ms;
    at = now > contact ? now - contact : 1;
    jinn_fresh_heard_leader(&node->fresh, at, hb->commit);
    if (node->rep.read_only && !node->rep.halted) {
        node->rep.read_only = false;
        jinn_info("replica: primary heartbeat from leader %s (term %llu): writes are relayed "
                  "again",
                  node->rep.leader_name[0] ? node->rep.leader_name : "?",
                  (unsigned long long)hb->term);
    }
}

void jinn_node_replica_set_state(struct jinn_node *node, enum jinn_replica_state s,
                                 const char *source)
{
    if (!node->replica || (unsigned)s > JINN_REPLICA_READ_ONLY) {
        return;
    }
    if (source != NULL) {
        copy_bounded(node->rep.source, sizeof node->rep.source, source);
    }
    if (s == JINN_REPLICA_READ_ONLY) {
        node->rep.forced_read_only = true;
        replica_check_stale(node, uv_now(node->loop));
        return;
    }
    if (s != node->rep.client) {
        jinn_debug("replica: %s (%s)", jinn_replica_state_name(s), node->rep.source);
    }
    node->rep.client = s;
}

static int64_t replica_staleness(struct jinn_node *node, uint64_t now)
{
    uint64_t at = jinn_fresh_follower(&node->fresh, node->rep.position);
    return at == 0 ? -1 : (int64_t)(now - at);
}

void jinn_node_replica_status(struct jinn_node *node, struct jinn_replica_status *st)
{
    uint64_t now = uv_now(node->loop);
    memset(st, 0, sizeof *st);
    if (node->replica && node->rep.timer_on && now >= node->distrust_until) {
        replica_check_stale(node, now); /* not a tick late */
    }
    st->read_only = node->rep.read_only;
    st->state = node->rep.halted || st->read_only ? JINN_REPLICA_READ_ONLY : node->rep.client;
    st->source = node->rep.source;
    st->position = node->rep.position;
    st->leader_commit = node->rep.leader_commit;
    st->lag_entries = node->rep.leader_commit > node->rep.position
                          ? node->rep.leader_commit - node->rep.position
                          : 0;
    st->lag_ms = node->replica ? replica_staleness(node, now) : -1;
    st->last_heartbeat_ms =
        node->rep.last_primary != 0 ? (int64_t)(now - node->rep.last_primary) : -1;
    st->leader_api = jinn_node_replica_leader_api(node);
    st->sql_generation = node->rep.sql_generation;
}

bool jinn_node_replica_ready(struct jinn_node *node)
{
    struct jinn_replica_status rs;
    jinn_node_replica_status(node, &rs);
    return node->replica && rs.state == JINN_REPLICA_STREAMING;
}

const char *jinn_node_replica_leader_api(const struct jinn_node *node)
{
    if (!node->replica || node->rep.read_only || node->rep.halted ||
        node->rep.leader_api[0] == '\0') {
        return NULL;
    }
    return node->rep.leader_api;
}

void jinn_node_replica_halt(struct jinn_node *node, const char *why)
{
    if (!node->replica || node->rep.halted) {
        return;
    }
    node->rep.halted = true;
    node->rep.read_only = true;
    jinn_error("replica: stopped applying at %llu: %s. Restart it: it then rebuilds its state "
               "from a snapshot of the cluster",
               (unsigned long long)node->rep.position, why);
}

static void replica_node_status(struct jinn_node *node, struct jinn_node_status *st)
{
    uint64_t now = uv_now(node->loop);
    struct jinn_replica_status rs;

    jinn_node_replica_status(node, &rs);
    memset(st, 0, sizeof *st);
    st->name = node->cfg->server_name;
    st->id = node->id;
    st->cluster_id = node->cluster_id;
    st->role = JINN_ROLE_REPLICA;
    st->term = node->rep.term;
    if (node->rep.leader_id != 0) {
        st->leader_id = node->rep.leader_id;
        st->leader_name = node->rep.leader_name[0] ? node->rep.leader_name : "?";
        st->leader_api = rs.leader_api;
    }
    st->commit_index = node->rep.leader_commit;
    st->applied_index = replica_applied(node);
    st->last_index = node->rep.position;
    st->cluster_time_ms = node->fsm.time_ms;
    /* "A leader with a quorum is known": a primary heartbeat within
     * replica_stale_after. SQL exec checks this before relaying. */
    st->quorum = !rs.read_only;
    st->commit_current = true;
    st->leader_contact_ms = replica_staleness(node, now);
    if (node->rep.halted) {
        st->note = "stopped applying (see the log); restart this replica";
    } else if (rs.read_only) {
        st->note = "read-only: no primary heartbeat within replica_stale_after";
    }
}
