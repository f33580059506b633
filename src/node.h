/* node.h - the Raft node: libraft on the libuv event loop.
 *
 * Owns the raft instance, its disk (raft_uv) and TCP transport, the FSM, and
 * the node's duties as a cluster member: bootstrapping a fresh cluster from
 * cluster_peers, announcing its API URL in the replicated node directory,
 * promoting standbys when a voter is lost, handing leadership over on
 * shutdown. Proposals enter the log only through jinn_node_propose(). */
#ifndef JINN_NODE_H
#define JINN_NODE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"

struct jinn_node;

/* Called once per proposal: code is JINN_OK with res set (res->code holds
 * the command's own outcome), or an error (JINN_ENOTLEADER: not applied;
 * JINN_EUNKNOWN / JINN_ETIMEOUT: may or may not be applied). res is valid
 * only during the call. */
typedef void (*jinn_propose_cb)(void *data, int code, const struct jinn_result *res);

/* Creates the node (nothing runs until jinn_node_start). cfg is borrowed
 * and must outlive the node. Returns 0 or an error code; *out set on 0. */
int jinn_node_create(uv_loop_t *loop, const struct jinn_config *cfg, struct jinn_node **out);

/* Loads the log and snapshot (bootstrapping a fresh data_dir), starts raft.
 * On failure an explanation has been logged. */
int jinn_node_start(struct jinn_node *node);

/* Proposes c (its time_ms is stamped here). Returns JINN_OK when queued (cb
 * will be called exactly once, possibly after timeout_ms with
 * JINN_ETIMEOUT), or an error with cb never called. c is copied. */
int jinn_node_propose(struct jinn_node *node, struct jinn_cmd *c, uint64_t timeout_ms,
                      jinn_propose_cb cb, void *data);

/* Proposes cs[0..n-1] (1..JINN_PROPOSE_MANY_MAX) as n consecutive log
 * entries in one append: one disk write and one message per follower for
 * all of them, each applied on its own (its own index and result). cb is
 * called exactly once: JINN_OK with res[0..n-1] when all n are applied
 * (res valid only during the call), or an error as for jinn_node_propose
 * (JINN_EUNKNOWN / JINN_ETIMEOUT: any of them may or may not be applied).
 * Returns JINN_OK when queued, or an error with cb never called. */
#define JINN_PROPOSE_MANY_MAX 256
typedef void (*jinn_propose_many_cb)(void *data, int code, const struct jinn_result *res,
                                     unsigned n);
int jinn_node_propose_many(struct jinn_node *node, struct jinn_cmd *cs, unsigned n,
                           uint64_t timeout_ms, jinn_propose_many_cb cb, void *data);

/* raft_apply(raft, req, bufs, n, cb) with the ownership of bufs settled:
 * on 0 raft owns all n; on an error (raft's code) *kept of them (the first
 * ones) stay in raft's log and are raft's, the rest have been freed here
 * (jinn_free) and set to NULL, and cb will never be called for req. The
 * two propose paths use it; exported for the unit test. */
int jinn_raft_apply(struct raft *raft, struct raft_apply *req, struct raft_buffer bufs[],
                    unsigned n, raft_apply_cb cb, unsigned *kept);

/* After raft_add, raft_assign or raft_remove returned rv: returns rv when
 * libraft refused before touching its state (0 included), and otherwise
 * stops this node (exit code 3) with a line naming `what`, because libraft
 * 0.15 then runs on a configuration its log does not hold (see node.c).
 * Exported for the unit test. */
int jinn_raft_change_check(struct raft *raft, int rv, const char *what);

/* Linearizable reads: calls cb(data, JINN_OK) once this node has proven it
 * is still the leader and has applied everything committed before the
 * call; then local state may be read. All reads waiting at one moment
 * share one raft barrier. Returns JINN_ENOTLEADER (cb never called) on a
 * follower; later failures reach cb as JINN_EUNKNOWN. */
typedef void (*jinn_read_cb)(void *data, int code);
int jinn_node_linearize(struct jinn_node *node, jinn_read_cb cb, void *data);

/* Called after every applied command (not part of replicated state). */
void jinn_node_set_apply_hook(struct jinn_node *node, void (*fn)(void *data, uint64_t index),
                              void *data);

/* The stream feed (net/stream.c). record runs after every command raft
 * applied, with its index, the previous record's index (or the index a
 * restored snapshot left the node at) and the entry's bytes (borrowed for
 * the call); restore runs once a snapshot was restored (installed from the
 * leader, or loaded at start), with the index it stands for, before any
 * record that follows it. Not part of replicated state. */
void jinn_node_set_stream_hooks(struct jinn_node *node,
                                void (*record)(void *data, uint64_t index, uint64_t prev,
                                               const void *buf, size_t len),
                                void (*restore)(void *data, uint64_t index), void *data);
/* The last record's index (0: none since a fresh start), as record's prev
 * for the next one. */
uint64_t jinn_node_stream_position(struct jinn_node *node);

/* Gracefully stops: hands leadership over if leader, closes raft. cb runs
 * once everything is closed; then jinn_node_destroy may be called. */
void jinn_node_stop(struct jinn_node *node, void (*cb)(void *data), void *data);
void jinn_node_destroy(struct jinn_node *node);

enum jinn_role {
    JINN_ROLE_UNAVAILABLE,
    JINN_ROLE_FOLLOWER,
    JINN_ROLE_CANDIDATE,
    JINN_ROLE_LEADER,
    JINN_ROLE_STANDBY,
    JINN_ROLE_JOINING, /* not in the configuration: waiting for members add */
    JINN_ROLE_REPLICA  /* an edge replica (jinn replica): no raft, not a member */
};

struct jinn_member {
    uint64_t id;
    const char *name; /* borrowed from config or the node directory */
    const char *address;
    const char *api; /* "" when not yet announced */
    bool voter;
    bool spare;               /* added, not replicating yet */
    int64_t last_contact_ms;  /* leader only: since its last message; -1 unknown */
    uint64_t match_index;     /* leader only */
    bool reachable;           /* leader only: heard from recently */
};

/* A consistent snapshot of the node's state. Pointers are borrowed and
 * valid until the event loop runs again. */
struct jinn_node_status {
    const char *name;
    uint64_t id;
    uint64_t cluster_id; /* 0: not contacted by a cluster yet */
    const char *note;    /* NULL, or what the operator should know */
    enum jinn_role role;
    uint64_t term;
    uint64_t leader_id; /* 0 when none is known */
    const char *leader_name;
    const char *leader_api; /* NULL when unknown */
    uint64_t commit_index;
    uint64_t applied_index;
    uint64_t last_index;
    uint64_t cluster_time_ms;
    bool quorum;               /* a leader with a quorum is known */
    bool leader_ready;         /* leader whose own term has a committed entry */
    bool commit_current;       /* the commit index we know is an entry of the current term */
    int64_t leader_contact_ms; /* -1: never heard from a leader */
    struct jinn_member members[JINN_CONFIG_MAX_PEERS];
    unsigned n_members;
    uint64_t proposals_ok, proposals_failed;
    uint64_t read_barriers, reads_linearized;
    uint64_t appends, entries_appended, acks_capped; /* from the ioguard */
    uint64_t raft_refused; /* raft connections the peerguard refused */
    bool disk_full; /* free space below min_free_space: writes refused */
    uint64_t disk_free_bytes, disk_min_free_bytes;
};

void jinn_node_status(struct jinn_node *node, struct jinn_node_status *st);
const char *jinn_role_name(enum jinn_role role);

/* Read-only access to replicated state, for handlers on the loop thread. */
const struct jinn_fsm *jinn_node_fsm(const struct jinn_node *node);

/* The cluster time now, as this node estimates it: the applied state's time
 * plus the monotonic time since this node applied it. Only for "time left"
 * figures in replies (the applied state's time stands still between
 * entries: a lock granted for 60s read "60000 ms left" for a minute); never
 * for apply. */
uint64_t jinn_node_time_now(const struct jinn_node *node);
/* This node's wall clock (UTC ms; with the TEST ONLY offset): what a leader
 * puts in JOB_CRON (cron is UTC). Never read during apply. */
uint64_t jinn_node_wall_now(const struct jinn_node *node);

/* The cluster id (0 while a new member has not been contacted yet). */
uint64_t jinn_node_cluster_id(const struct jinn_node *node);

/* Whether this node is the raft leader right now. */
bool jinn_node_is_leader(struct jinn_node *node);

/* Proposals (jinn_node_propose, jinn_node_propose_many) whose callback has
 * not run yet, plus one while a linearizable read barrier is in flight: at
 * shutdown HTTP stays up until they are answered. */
unsigned jinn_node_unanswered(const struct jinn_node *node);
/* At shutdown, once HTTP can wait no longer: answers every linearizable
 * read still waiting (its barrier's too) with JINN_ESHUTDOWN. */
void jinn_node_fail_reads(struct jinn_node *node);

/* Fires after the loop's periodic tick when this node (not the leader)
 * must announce itself to the leader: implemented by the API layer, which
 * owns the HTTP client. */
typedef void (*jinn_announce_fn)(void *data, const char *leader_api);
void jinn_node_set_announcer(struct jinn_node *node, jinn_announce_fn fn, void *data);

/* The raft id jinn derives from a server name (members that bootstrapped
 * the cluster; members added later have random ids). */
uint64_t jinn_node_id_for(const char *name);

/* The cluster id every node bootstrapping cfg's cluster_peers computes. */
uint64_t jinn_node_cluster_id_for(const struct jinn_config *cfg);

/* ---- membership changes (operator), on the leader only ----------------
 * One change at a time. cb(data, code, msg) runs exactly once when the
 * change is committed (code 0) or has failed; msg says what happened. The
 * functions return 0 (cb will run) or an error (cb never runs):
 * JINN_ENOTLEADER, JINN_EBUSY (another change in progress),
 * JINN_ENOTFOUND (no such member), JINN_ECONFLICT, JINN_EINVAL. */
typedef void (*jinn_member_cb)(void *data, int code, const char *msg);

/* Probes address for the new node's id and cluster, adds it as a standby
 * and, unless standby, promotes it to voter once it has caught up. */
int jinn_node_member_add(struct jinn_node *node, const char *name, const char *address,
                         bool standby, jinn_member_cb cb, void *data);
int jinn_node_member_remove(struct jinn_node *node, uint64_t id, jinn_member_cb cb, void *data);
/* Promote (voter: after catching up) or demote. */
int jinn_node_member_assign(struct jinn_node *node, uint64_t id, bool voter, jinn_member_cb cb,
                            void *data);
/* Hands leadership to voter id (0: the most up-to-date one). cb as above. */
int jinn_node_leader_transfer(struct jinn_node *node, uint64_t id, jinn_member_cb cb,
                              void *data);
/* A member's name from the node directory or cluster_peers; "?" if none. */
const char *jinn_node_member_name(const struct jinn_node *node, uint64_t id);

/* Writes data_dir/jinn.id (atomically, fsynced) for a data_dir seeded
 * outside a running node (`jinn snapshot restore`). 0 or JINN_EIO. */
int jinn_node_write_identity(const char *data_dir, uint64_t id, uint64_t cluster_id,
                             const char *name);

/* ---- edge replicas (issue 17) ------------------------------------------
 * A replica node has no raft and is not a member: no node directory entry,
 * no jobs, pools or cron. It applies the records a cluster node streams
 * (jinn_fsm_apply_buf, the voters' code path: same apply hooks, same CHECK
 * digest verdicts) and serves reads locally; writes and linearizable reads
 * are relayed to the leader named by the last primary heartbeat. All calls
 * on the loop thread. */

/* Creates a replica node for cfg (a replica config: cfg->replica set, else
 * JINN_ECONFIG). cfg is borrowed and must outlive the node. jinn_node_start
 * locks data_dir, wipes data_dir/sql (a replica keeps no state across
 * restarts: it starts at position 0 and asks for a snapshot) and starts the
 * read-only timer; jinn_node_stop / jinn_node_destroy as for a member. The
 * cluster id is learnt from the first heartbeat naming one
 * (jinn_node_cluster_id). */
int jinn_node_create_replica(uv_loop_t *loop, const struct jinn_config *cfg,
                             struct jinn_node **out);

/* Whether node is a replica (created by jinn_node_create_replica). */
bool jinn_node_is_replica(const struct jinn_node *node);

/* The index of the last record applied or restored (0: new replica). */
uint64_t jinn_node_replica_position(const struct jinn_node *node);

/* Replaces the whole state with a jinn snapshot (jinn_fsm_encode format)
 * standing for stream position index; SQL files are rewritten as a voter's
 * restore does. On any error the state is unchanged. 0 or an error
 * (JINN_ECORRUPT, JINN_EVERSION, JINN_EIO, JINN_ENOMEM; JINN_EDIVERGED once
 * halted). The apply hook runs with index afterwards (waiters re-check). */
int jinn_node_replica_restore(struct jinn_node *node, uint64_t index, const void *snap,
                              size_t len);
/* The same in steps, so that the decode runs off the loop (A3 m5; the
 * stream does this): restore_check (loop) refuses what restore would
 * refuse before decoding; jinn_fsm_restore_prepare (any thread, on
 * jinn_node_fsm's state) decodes; restore_commit (loop, nothing applied
 * in between) checks again and swaps rs in, then frees nothing: the caller
 * frees rs (jinn_fsm_restore_free; after a commit it holds the replaced
 * state). */
struct jinn_fsm_restore;
int jinn_node_replica_restore_check(const struct jinn_node *node, uint64_t index);
int jinn_node_replica_restore_commit(struct jinn_node *node, uint64_t index,
                                     struct jinn_fsm_restore *rs, size_t len);

/* Applies one record. Precondition prev == position (else JINN_ECONFLICT,
 * nothing done) and index > prev. A record the FSM cannot apply (corrupt,
 * or a CHECK digest mismatch) stops the node with a clear message, as on a
 * voter; 0 otherwise. */
int jinn_node_replica_apply(struct jinn_node *node, uint64_t index, uint64_t prev,
                            const void *buf, size_t len);

/* A stream heartbeat (contracts17 section 3). Strings borrowed for the
 * call. A primary heartbeat (quorum, leader_id != 0, 0 <= leader_contact_ms
 * <= replica_stale_after) feeds freshness and names the leader writes are
 * relayed to; it ends READ_ONLY. cluster_id 0: not given. */
struct jinn_replica_heartbeat {
    uint64_t cluster_id, leader_id, term, commit, position, time_ms;
    const char *leader_name, *leader_api, *node;
    bool quorum;
    int64_t leader_contact_ms;
    /* The streaming node's applied index (barriers included) when it sent
     * it; 0: not sent (an older node). */
    uint64_t applied;
    /* The streaming node's election_timeout; 0: not sent (an older node). */
    uint64_t election_timeout_ms;
    /* The replica_of URL of the connection it came on (ws:// or wss://):
     * writes are relayed there when leader_api is not a replica_of host. */
    const char *source_url;
};
void jinn_node_replica_heartbeat(struct jinn_node *node, const struct jinn_replica_heartbeat *hb);

enum jinn_replica_state {
    JINN_REPLICA_CONNECTING,
    JINN_REPLICA_CATCHING_UP,
    JINN_REPLICA_STREAMING,
    JINN_REPLICA_READ_ONLY
};
/* The stream client's view: what it is doing and with which node (source:
 * a URL or node name, copied; NULL keeps the current one). READ_ONLY is
 * also entered by the node itself when no primary heartbeat arrived for
 * replica_stale_after, and left only by a primary heartbeat. */
void jinn_node_replica_set_state(struct jinn_node *node, enum jinn_replica_state s,
                                 const char *source);
const char *jinn_replica_state_name(enum jinn_replica_state s);

/* Stops applying for good (a digest check found this replica diverged):
 * logged with why; later applies and restores answer JINN_EDIVERGED and
 * writes 503 read_only. A restart rebuilds the state. */
void jinn_node_replica_halt(struct jinn_node *node, const char *why);

/* Replica status (for /v1/status and /readyz). Pointers borrowed until the
 * loop runs again. */
struct jinn_replica_status {
    enum jinn_replica_state state;
    const char *source;     /* "" when never connected */
    uint64_t position;      /* last applied record */
    uint64_t leader_commit; /* from the last primary heartbeat; 0 none */
    uint64_t lag_entries;   /* leader_commit - position (0 when ahead) */
    int64_t lag_ms;         /* staleness (fresh.h); -1 never fresh */
    int64_t last_heartbeat_ms; /* since the last primary heartbeat; -1 never */
    const char *leader_api; /* where writes are relayed; NULL unknown */
    bool read_only;         /* writes answer 503 read_only */
    uint64_t sql_generation; /* data_dir/sql/GENERATION: restores so far */
};
void jinn_node_replica_status(struct jinn_node *node, struct jinn_replica_status *st);

/* Whether the replica is STREAMING (its /readyz answers 200). */
bool jinn_node_replica_ready(struct jinn_node *node);

/* The leader API URL writes are relayed to: from the last primary
 * heartbeat, or NULL (then writes answer 503 read_only / no_leader). */
const char *jinn_node_replica_leader_api(const struct jinn_node *node);

#endif
