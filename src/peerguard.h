/* peerguard.h - cluster identity on every raft connection.
 *
 * A raft_uv_transport that wraps libraft's TCP transport. After libraft's
 * own handshake (protocol, server id, address) the dialling side sends a
 * 32-byte jinn preamble (magic, version, flags, cluster id, sender id,
 * the id it expects to reach) and
 * waits for a 24-byte answer (magic, version, status, flags, node id,
 * cluster id) before libraft may use the stream. The accepting side reads
 * exactly the preamble (the dialler sends nothing else until answered, so
 * nothing of libraft's traffic is consumed), checks it, answers, and only
 * then hands the stream to libraft. So:
 *   - a node of another cluster (or a stray process) never reaches raft;
 *   - a dialler that expected server id X at an address now held by a node
 *     with another id (a wiped and restarted voter) is refused, so a new
 *     node is never mistaken for the voter it replaced;
 *   - a node with no cluster id yet (a new member waiting to be added)
 *     adopts the cluster id of the first node that dials it.
 * A probe (flag in the preamble) is answered with the node's id, cluster id
 * and whether it holds raft state, then closed: `members add` and
 * `--bootstrap` use it. */
#ifndef JINN_PEERGUARD_H
#define JINN_PEERGUARD_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define JINN_PG_PREAMBLE 32 /* dialler -> acceptor */
#define JINN_PG_SIZE 24     /* the answer */
#define JINN_PG_HANDSHAKE_MS 3000u
#define JINN_PG_HAS_STATE 1u
#define JINN_PG_KNOWS_SENDER 2u

struct jinn_pg_conn;

struct jinn_peerguard {
    struct raft_uv_transport transport; /* what raft_uv uses (impl == this) */
    struct raft_uv_transport *inner;    /* libraft's TCP transport */
    uv_loop_t *loop;
    raft_uv_accept_cb accept_cb;
    uint64_t self_id;
    uint64_t cluster_id; /* 0: none yet */
    /* What a probe answer says about us: JINN_PG_HAS_STATE when this node
     * holds more log than a bootstrap entry, JINN_PG_KNOWS_SENDER when the prober's id is in
     * our node directory (it has been a member before). */
    uint8_t (*probe_flags)(void *data, uint64_t sender);
    /* Called once when a node without cluster id adopts one. */
    void (*learned)(void *data, uint64_t cluster_id);
    void *data;
    struct jinn_pg_conn *conns; /* handshakes in progress */
    uint64_t next_log_ms;       /* rate limit for refusal log lines */
    uint64_t refused;           /* connections refused, for metrics */
    raft_uv_transport_close_cb close_cb;
};

/* inner must be initialised (raft_uv_tcp_init) and outlive the guard. */
void jinn_peerguard_init(struct jinn_peerguard *pg, uv_loop_t *loop,
                         struct raft_uv_transport *inner, uint64_t self_id,
                         uint64_t cluster_id);

/* Probe answer states. */
enum jinn_probe_state {
    JINN_PROBE_UNREACHABLE, /* no answer (down, refused, not a jinn) */
    JINN_PROBE_OK           /* answered: see id, cluster_id, has_state */
};

struct jinn_probe_result {
    enum jinn_probe_state state;
    uint64_t id;
    uint64_t cluster_id;
    bool has_state;    /* its log holds more than a bootstrap entry */
    bool knows_sender; /* our id is in its node directory */
};

typedef void (*jinn_probe_cb)(void *data, const struct jinn_probe_result *res);

/* Dials address ("ip:port") and probes the jinn there. cb is called exactly
 * once, from the loop (never from inside this call). self_id is sent in
 * libraft's handshake. Returns 0, or an error code (cb never called). */
int jinn_peerguard_probe(uv_loop_t *loop, const char *address, uint64_t self_id,
                         uint64_t timeout_ms, jinn_probe_cb cb, void *data);

/* While a --bootstrap node probes its peers, it answers their probes too
 * ("no cluster, no state yet") on its raft address, so nodes started
 * together see each other. Stop it before raft starts (runs the loop until
 * everything is closed). */
struct ps_conn;
struct jinn_probe_server {
    uv_loop_t *loop;
    struct ps_conn *conns;
    uv_tcp_t tcp;
    uint64_t self_id;
    unsigned open; /* handles not yet closed */
};
int jinn_probe_server_start(struct jinn_probe_server *srv, uv_loop_t *loop,
                            const char *listen_address, uint64_t self_id);
void jinn_probe_server_stop(struct jinn_probe_server *srv);

#endif
