/* node.c - see node.h.
 *
 * Everything here runs on the event loop thread. libraft's uv backend does
 * its disk I/O on libuv's thread pool, so no call below blocks the loop. */
#include "node.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <raft/uv.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "clock.h"
#include "fresh.h"
#include "ioguard.h"
#include "log.h"

/* How often the node looks after its membership duties. */
#define TICK_MS 100u
/* A tick this late means the loop stalled; messages read in the next
 * STALL_DISTRUST_MS may be old and do not count for freshness. */
#define STALL_MS (3u * TICK_MS)
#define STALL_DISTRUST_MS (2u * TICK_MS)
/* A member seen within this many election timeouts counts as healthy. */
#define HEALTHY_TIMEOUTS 2u

struct proposal {
    struct raft_apply req; /* req.data == this */
    struct jinn_node *node;
    jinn_propose_cb cb; /* NULL once the caller has been answered */
    void *data;
    uv_timer_t timer;
};

struct read_waiter {
    jinn_read_cb cb;
    void *data;
    struct read_waiter *next;
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
    uint64_t last_seen[JINN_CONFIG_MAX_PEERS]; /* loop ms, by cfg peer index */
    bool was_leader;

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

    bool stopping;
    unsigned inflight;  /* proposals raft has not answered yet */
    uint64_t drain_deadline;
    uv_timer_t drain;
    void (*stop_cb)(void *data);
    void *stop_data;
    uint64_t proposals_ok, proposals_failed;
};

/* ---- allocation: raft allocates through jinn's wrapper too -------------- */

static void *heap_malloc(void *d, size_t n)
{
    (void)d;
    return jinn_malloc(n);
}
static void heap_free(void *d, void *p)
{
    (void)d;
    jinn_free(p);
}
static void *heap_calloc(void *d, size_t n, size_t size)
{
    (void)d;
    return jinn_calloc(n, size);
}
static void *heap_realloc(void *d, void *p, size_t n)
{
    (void)d;
    return jinn_realloc(p, n);
}
static void *heap_aligned_alloc(void *d, size_t alignment, size_t n)
{
    (void)d;
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
                                        "standby"};
    return names[role];
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* TEST ONLY: JINN_TEST_CLOCK_OFFSET_MS (signed) shifts this node's wall
 * clock, read once at start, to test clock steps and skewed leaders. */
static int64_t test_clock_offset(void)
{
    const char *v = getenv("JINN_TEST_CLOCK_OFFSET_MS");
    long long ms;
    char *end;
    if (v == NULL || *v == '\0') {
        return 0;
    }
    ms = strtoll(v, &end, 10);
    if (*end != '\0' || ms > 100000000000LL || ms < -100000000000LL) {
        jinn_warn("ignoring JINN_TEST_CLOCK_OFFSET_MS=%s", v);
        return 0;
    }
    jinn_warn("TEST ONLY: wall clock shifted by %lld ms (JINN_TEST_CLOCK_OFFSET_MS)", ms);
    return (int64_t)ms;
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
        return resume > t ? resume : t;
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
    if (rv == RAFT_CANTBOOTSTRAP) {
        return 0; /* existing state on disk: recover it instead */
    }
    if (rv != 0) {
        jinn_error("bootstrap: %s", raft_errmsg(&node->raft));
        return JINN_ERAFT;
    }
    jinn_info("bootstrapped a new cluster of %u peers (%u voters)", node->cfg->n_peers,
              node->cfg->replicas);
    return 0;
}

static void tick_cb(uv_timer_t *timer);

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
        jinn_fresh_heard_leader(&node->fresh, now, m->append_entries.leader_commit);
    } else if (m->type == RAFT_IO_APPEND_ENTRIES_RESULT &&
               m->append_entries_result.term == node->raft.current_term &&
               raft_state(&node->raft) == RAFT_LEADER) {
        jinn_fresh_heard_peer(&node->fresh, m->server_id, now);
    }
}

/* TEST ONLY: JINN_TEST_APPEND_DELAY_MS makes this node's log writes report
 * completion that much later (a slow disk), read once at start. */
static unsigned test_append_delay(void)
{
    const char *v = getenv("JINN_TEST_APPEND_DELAY_MS");
    unsigned long ms;
    char *end;
    if (v == NULL || *v == '\0') {
        return 0;
    }
    ms = strtoul(v, &end, 10);
    if (*end != '\0' || ms > 60000) {
        jinn_warn("ignoring JINN_TEST_APPEND_DELAY_MS=%s (0-60000)", v);
        return 0;
    }
    jinn_warn("TEST ONLY: log writes are reported %lu ms late (JINN_TEST_APPEND_DELAY_MS)", ms);
    return (unsigned)ms;
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

int jinn_node_start(struct jinn_node *node)
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
    rv = jinn_sql_set_dir(&node->fsm.sql, cfg->data_dir);
    if (rv != 0) {
        jinn_error("cannot prepare %s/sql for databases", cfg->data_dir);
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
    rv = raft_uv_init(&node->io, node->loop, cfg->data_dir, &node->transport);
    if (rv != 0) {
        jinn_error("raft storage in %s: %s", cfg->data_dir, node->io.errmsg);
        return JINN_EIO;
    }
    node->io_ready = true;
    /* Reconnect quickly after a partition heals or a peer restarts. */
    raft_uv_set_connect_retry_delay(&node->io, 200);
    jinn_ioguard_init(&node->guard, &node->io);
    jinn_fresh_init(&node->fresh);
    node->guard.on_recv = heard;
    node->guard.on_recv_data = node;
    node->guard.loop = node->loop;
    node->guard.append_delay_ms = test_append_delay();
    node->test_clock_offset_ms = test_clock_offset();
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
    raft_set_pre_vote(&node->raft, true);
    rv = bootstrap(node);
    if (rv != 0) {
        return rv;
    }
    rv = raft_start(&node->raft);
    if (rv != 0) {
        jinn_error("raft start: %s (%s)", raft_strerror(rv), raft_errmsg(&node->raft));
        return JINN_ERAFT;
    }
    uv_timer_init(node->loop, &node->tick);
    node->tick.data = node;
    uv_timer_start(&node->tick, tick_cb, TICK_MS, TICK_MS);
    uv_timer_init(node->loop, &node->kick);
    node->kick.data = node;
    jinn_info("raft started: id %llu, address %s, %u entries in log, applied %llu",
              (unsigned long long)node->id, node->address,
              (unsigned)(raft_last_index(&node->raft)),
              (unsigned long long)raft_last_applied(&node->raft));
    return 0;
}

/* ---- proposals --------------------------------------------------------- */

static void proposal_closed(uv_handle_t *h)
{
    jinn_free(h->data);
}

static void proposal_answer(struct proposal *p, int code, const struct jinn_result *res)
{
    jinn_propose_cb cb = p->cb;
    if (cb == NULL) {
        return;
    }
    p->cb = NULL;
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
    proposal_answer(p, JINN_ETIMEOUT, NULL);
}

static void proposal_applied(struct raft_apply *req, int status, void *result)
{
    struct proposal *p = req->data;
    const struct jinn_result *res = result;

    assert(p->node->inflight > 0);
    p->node->inflight--;
    uv_timer_stop(&p->timer);
    if (status == 0) {
        assert(res != NULL && res->index == req->index);
        proposal_answer(p, JINN_OK, res);
    } else {
        /* Leadership lost or shutting down: the entry may still commit. */
        proposal_answer(p, status == RAFT_SHUTDOWN ? JINN_ESHUTDOWN : JINN_EUNKNOWN, NULL);
    }
    uv_close((uv_handle_t *)&p->timer, proposal_closed);
}

int jinn_node_propose(struct jinn_node *node, struct jinn_cmd *c, uint64_t timeout_ms,
                      jinn_propose_cb cb, void *data)
{
    struct jinn_wbuf w;
    struct raft_buffer buf;
    struct proposal *p;
    uint64_t now;
    int rv;

    if (node->stopping) {
        return JINN_ESHUTDOWN;
    }
    if (raft_state(&node->raft) != RAFT_LEADER) {
        return JINN_ENOTLEADER;
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
    rv = raft_apply(&node->raft, &p->req, &buf, 1, proposal_applied);
    if (rv != 0) {
        jinn_wbuf_free(&w);
        jinn_free(p);
        return rv == RAFT_NOTLEADER ? JINN_ENOTLEADER : JINN_ERAFT;
    }
    node->last_stamp_ms = now;
    node->inflight++;
    uv_timer_init(node->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, proposal_timeout, timeout_ms, 0);
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
    if (raft_state(&node->raft) != RAFT_LEADER) {
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
    node->fsm.on_apply = fn;
    node->fsm.on_apply_data = data;
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
    struct jinn_cmd c;
    if (lock_due != 0 && (due == 0 || lock_due < due)) {
        due = lock_due;
    }
    if (queue_due != 0 && (due == 0 || queue_due < due)) {
        due = queue_due;
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

static bool member_healthy(const struct jinn_node *node, int idx, uint64_t now)
{
    uint64_t window = (uint64_t)node->cfg->election_timeout_ms * HEALTHY_TIMEOUTS;
    return idx >= 0 && node->last_seen[idx] != 0 && now - node->last_seen[idx] <= window;
}

static void change_done(struct raft_change *req, int status)
{
    struct jinn_node *node = req->data;
    node->change_inflight = false;
    if (status != 0) {
        jinn_warn("membership change failed: %s", raft_strerror(status));
    }
}

static void assign(struct jinn_node *node, const struct raft_server *s, int role)
{
    int rv;
    node->change.data = node;
    rv = raft_assign(&node->raft, &node->change, s->id, role, change_done);
    if (rv == 0) {
        node->change_inflight = true;
        jinn_info("membership: %s %s", role == RAFT_VOTER ? "promoting" : "demoting",
                  s->address);
    }
}

/* Keeps `replicas` healthy voters: a standby replaces a voter unseen for
 * standby_promote_after, and a surplus unhealthy voter becomes a standby. */
static void manage_membership(struct jinn_node *node, uint64_t now)
{
    const struct raft_configuration *conf = &node->raft.configuration;
    const struct raft_server *stale_voter = NULL, *healthy_standby = NULL;
    unsigned voters = 0, healthy_voters = 0;
    uint64_t oldest = UINT64_MAX;

    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        int idx = peer_index(node, s->id);
        if (idx < 0) {
            continue;
        }
        if (s->id == node->id || node->raft.leader_state.progress[i].recent_recv) {
            node->last_seen[idx] = now;
        }
        if (s->role == RAFT_VOTER) {
            voters++;
            if (member_healthy(node, idx, now)) {
                healthy_voters++;
            }
            if (now - node->last_seen[idx] >= node->cfg->standby_promote_after_ms &&
                node->last_seen[idx] < oldest) {
                oldest = node->last_seen[idx];
                stale_voter = s;
            }
        } else if (s->role == RAFT_STANDBY && member_healthy(node, idx, now)) {
            healthy_standby = healthy_standby ? healthy_standby : s;
        }
    }
    if (node->change_inflight || node->stopping ||
        node->raft.configuration_uncommitted_index != 0) {
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
 * decides and the command carries the decision: an empty API URL. */
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
        c.type = JINN_CMD_NODE_SET;
        c.node.id = n->id;
        c.node.name.p = (const uint8_t *)n->name;
        c.node.name.len = strlen(n->name);
        node->forget_next = now + 1000;
        if (jinn_node_propose(node, &c, node->cfg->request_timeout_ms, NULL, NULL) != 0) {
            jinn_debug("forget node %llu: propose failed", (unsigned long long)n->id);
        }
        return;
    }
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

static void tick_cb(uv_timer_t *timer)
{
    struct jinn_node *node = timer->data;
    uint64_t now = uv_now(node->loop);
    int state = raft_state(&node->raft);
    raft_id leader_id;
    const char *leader_address;

    raft_leader(&node->raft, &leader_id, &leader_address);
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
            for (unsigned i = 0; i < node->cfg->n_peers; i++) {
                node->last_seen[i] = now;
            }
            node->was_leader = true;
            jinn_info("became leader in term %llu",
                      (unsigned long long)node->raft.current_term);
        }
        node->last_leader_contact = now;
        commit_term_start(node);
        advance_cluster_time(node);
        manage_membership(node, now);
    } else {
        if (node->was_leader) {
            jinn_info("lost leadership");
        }
        node->was_leader = false;
        if (state == RAFT_FOLLOWER && leader_id != 0) {
            node->last_leader_contact = node->raft.election_timer_start;
        }
    }
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

void jinn_node_status(struct jinn_node *node, struct jinn_node_status *st)
{
    uint64_t now = uv_now(node->loop);
    const struct raft_server *me = self_server(node);
    int state = raft_state(&node->raft);
    raft_id leader_id;
    const char *leader_address;
    const struct jinn_node_info *info;

    memset(st, 0, sizeof *st);
    st->name = node->cfg->server_name;
    st->id = node->id;
    switch (state) {
    case RAFT_LEADER:
        st->role = JINN_ROLE_LEADER;
        break;
    case RAFT_CANDIDATE:
        st->role = JINN_ROLE_CANDIDATE;
        break;
    case RAFT_FOLLOWER:
        st->role = me != NULL && me->role != RAFT_VOTER ? JINN_ROLE_STANDBY : JINN_ROLE_FOLLOWER;
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
        m->name = idx >= 0 ? node->cfg->peers[idx].name : (info ? info->name : "?");
        m->api = info != NULL ? info->api : "";
        m->voter = s->role == RAFT_VOTER;
    }
    st->proposals_ok = node->proposals_ok;
    st->proposals_failed = node->proposals_failed;
    st->read_barriers = node->read_barriers;
    st->appends = node->guard.appends;
    st->entries_appended = node->guard.entries_appended;
    st->acks_capped = node->guard.capped;
    st->reads_linearized = node->reads_linearized;
}

const struct jinn_fsm *jinn_node_fsm(const struct jinn_node *node) { return &node->fsm; }

bool jinn_node_is_leader(struct jinn_node *node)
{
    return raft_state(&node->raft) == RAFT_LEADER;
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
    raft_close(&node->raft, raft_closed);
}

static void transfer_done(struct raft_transfer *req)
{
    struct jinn_node *node = req->data;
    raft_id leader_id;
    const char *address;
    raft_leader(&node->raft, &leader_id, &address);
    jinn_info("leadership transfer %s", leader_id != node->id ? "done" : "did not finish");
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

void jinn_node_stop(struct jinn_node *node, void (*cb)(void *data), void *data)
{
    assert(!node->stopping);
    node->stopping = true;
    node->stop_cb = cb;
    node->stop_data = data;
    uv_timer_stop(&node->tick);
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
    if (node->lock_fd >= 0) {
        close(node->lock_fd);
    }
    jinn_free(node);
}
