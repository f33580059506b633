/* peerguard.h - jinn's raft transport: no unchecked byte reaches libraft.
 *
 * A raft_uv_transport of its own (libraft's TCP transport is not used for
 * the network): jinn listens and dials, and every raft connection is
 * terminated by jinn. Each one is bridged to libraft through a socketpair:
 * libraft gets one end (a uv_pipe_t), jinn keeps the other and copies bytes
 * between it and the network (through TLS when cluster_tls is configured).
 *
 * On the wire, in this order (inside TLS 1.3 with cluster_tls):
 *   1. libraft's handshake: u64 protocol (1), u64 server id, u64 address
 *      length, the address (NUL-terminated, padded to 8 bytes);
 *   2. jinn's 32-byte preamble (magic, version, flags, cluster id, sender
 *      id, the id the dialler expects to reach);
 *   3. the acceptor's 24-byte answer (magic, version, status, flags, its
 *      id, its cluster id); then raft messages flow dialler -> acceptor.
 * The accepting side parses all of it itself and checks every raft message
 * header against libraft 0.15's encoding (allow-listed types, exact header
 * sizes, bounded counts and lengths, entry types, the configuration inside
 * an InstallSnapshot) before writing a byte of it to libraft's end. A
 * connection breaking a rule is closed, counted (raft_refused) and logged
 * once per address per minute.
 *
 *   - a node of another cluster (or a stray process) never reaches raft;
 *   - a dialler that expected server id X at an address now held by a node
 *     with another id (a wiped and restarted voter) is refused;
 *   - a node with no cluster id yet (a new member waiting to be added)
 *     adopts one only from an authenticated peer (TLS), or, without TLS,
 *     the cluster id of the leader libraft follows (jinn_peerguard_cluster_of)
 *     - never from the first dialler;
 *   - with cluster_tls, both sides present certificates signed by the
 *     configured CA, and the certificate must name (SAN DNS) the node the
 *     server id belongs to.
 * Places and time are bounded so that no peer can hold them against
 * another: 64 connections in their hello (16 per address; when full the
 * oldest gives way; 64 more for the hosts of configured peers), a first byte within 500 ms and
 * the hello within 3 s; 64 admitted connections, 2 per server id (the newest kept), closed when
 * idle (idle_ms); a message complete within 30 s plus its payload at
 * JINN_RAFT_MIN_RATE; declared payloads within budgets for all and per
 * server id, reclaimed from reservations below the minimum rate.
 * A probe (flag in the preamble) is answered with the node's id, whether
 * it belongs to the prober's cluster (its id only then, or through TLS)
 * and whether it holds raft state, then closed: `members add` and
 * `--bootstrap` use it. */
#ifndef JINN_PEERGUARD_H
#define JINN_PEERGUARD_H

#include <openssl/ssl.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define JINN_PG_PREAMBLE 32 /* dialler -> acceptor */
#define JINN_PG_SIZE 24     /* the answer */
#define JINN_PG_HANDSHAKE_MS 3000u
#define JINN_PG_HAS_STATE 1u
#define JINN_PG_KNOWS_SENDER 2u
#define JINN_PG_OTHER_CLUSTER 4u /* probe answer: we belong to a cluster, not the prober's */

/* Bounds on what a peer may declare (libraft allocates declared lengths
 * before reading them). */
#define JINN_RAFT_ADDRESS_MAX 256                    /* libraft handshake address */
#define JINN_RAFT_MAX_ENTRIES (1u << 20)             /* entries in one AppendEntries */
#define JINN_RAFT_MAX_MESSAGE (UINT64_C(2) << 30)    /* payload of one message */
#define JINN_RAFT_RESERVE_MAX (UINT64_C(4) << 30)    /* declared, not yet sent (all) */
#define JINN_RAFT_RESERVE_MEMBER (UINT64_C(2) << 30) /* of that, by one server id */
#define JINN_RAFT_MIN_RATE (UINT64_C(1) << 20)       /* bytes/s a declared payload must keep */
#define JINN_RAFT_MAX_SERVERS 64                     /* in a snapshot's configuration */
#define JINN_RAFT_MAX_INBOUND 64        /* admitted (past the hello) inbound connections */
#define JINN_RAFT_MAX_INBOUND_MEMBER 2  /* of those, from one server id (newest kept) */
#define JINN_RAFT_MAX_PENDING 64        /* inbound connections still in their hello */
#define JINN_RAFT_MAX_PENDING_PER_IP 16 /* of those, from one address */
#define JINN_RAFT_STALL_MS 30000u       /* grace for a message, before the minimum rate */
#define JINN_PG_FIRST_BYTE_MS 500u      /* an inbound connection must start its hello */
#define JINN_RAFT_IDLE_MS 10000u        /* admitted connection without a message (default) */

struct pg_conn;

struct jinn_peerguard {
    struct raft_uv_transport transport; /* what raft_uv uses (impl == this) */
    uv_loop_t *loop;
    char bind[64]; /* cluster_listen */
    uv_tcp_t listener;
    bool listening, closing, probe_only;
    unsigned open; /* our handles (listener, connections) not yet closed */
    raft_id raft_self;
    char raft_address[JINN_RAFT_ADDRESS_MAX];
    raft_uv_accept_cb accept_cb;
    uint64_t self_id;
    uint64_t cluster_id; /* 0: none yet */
    /* What a probe answer says about us: JINN_PG_HAS_STATE when this node
     * holds more log than a bootstrap entry, JINN_PG_KNOWS_SENDER when the prober's id is in
     * our node directory (it has been a member before). */
    uint8_t (*probe_flags)(void *data, uint64_t sender);
    /* Called once when a node without cluster id adopts one (TLS). */
    void (*learned)(void *data, uint64_t cluster_id);
    /* The node name a certificate must carry for server id (or, when the
     * id is unknown, for address); false when neither is known (any
     * certificate from the CA is then accepted). */
    bool (*name_of)(void *data, uint64_t id, const char *address, char *out, size_t n);
    /* Whether raft may talk with server id at address (inbound: the
     * address its handshake gives, where libraft will answer; outbound:
     * where libraft dials). libraft 0.15 makes a permanent, redialling
     * client for every id it hears from, so only members of the current
     * configuration are let through (a node waiting to be added: the few
     * ids that reach it first). NULL: everyone. */
    bool (*member)(void *data, uint64_t id, const char *address, bool inbound);
    /* Whether ip is the host of a configured peer (a raft configuration
     * member or a cluster_peers entry, by the host part of its address):
     * dials from there have JINN_RAFT_MAX_PENDING places in their hello of
     * their own. NULL: no such places. */
    bool (*peer_host)(void *data, const char *ip);
    void *data;
    struct pg_conn *conns;
    unsigned inbound; /* inbound connections open */
    /* Entries one AppendEntries may carry (JINN_RAFT_MAX_ENTRIES; more
     * when the log kept in memory between snapshots can be longer:
     * libraft 0.15 sends a lagging follower everything it holds at once). */
    uint64_t max_entries;
    uint64_t reserved; /* payload bytes libraft was told of, not yet delivered */
    /* An admitted inbound connection carrying no message for this long is
     * closed (libraft redials when it has something to send):
     * JINN_RAFT_IDLE_MS unless set (jinn: 10 election timeouts). */
    uint64_t idle_ms;
    struct {
        char ip[64];
        uint64_t until;
    } quiet[32];      /* refusal log lines: once per address per minute */
    uint64_t refused; /* connections refused, for metrics */
    raft_uv_transport_close_cb close_cb;
};

/* Loads the TLS identity used on every raft connection (both ways) and by
 * probes: our certificate and key, and the CA peers' certificates must
 * chain to. Call once before starting; errors are written to err. */
int jinn_peerguard_tls_load(const char *cert, const char *key, const char *ca, char *err,
                            size_t n);
/* The same in two steps, for a reload that is all or nothing: build (any
 * thread; NULL with err filled, nothing changed), then install on the loop
 * (cannot fail; takes ctx, drops the pins: set them again after). */
SSL_CTX *jinn_peerguard_tls_build(const char *cert, const char *key, const char *ca, char *err,
                                  size_t n);
void jinn_peerguard_tls_install(SSL_CTX *ctx);
/* Pins node name to the certificate with this SHA-256 fingerprint: that
 * node is then checked by fingerprint, not by the name in its certificate
 * (which must still chain to the CA). 0, or -1 when the table is full. */
int jinn_peerguard_tls_pin(const char *name, const uint8_t sha256[32]);
void jinn_peerguard_tls_free(void);
bool jinn_peerguard_tls_on(void);

/* bind: "ip:port" to listen on (cluster_listen). */
void jinn_peerguard_init(struct jinn_peerguard *pg, uv_loop_t *loop, const char *bind,
                         uint64_t self_id, uint64_t cluster_id);

/* The cluster id a live inbound connection from server id claimed (the
 * most recently active one), 0 when none. A node without a cluster id
 * adopts its leader's this way when TLS does not authenticate peers. */
uint64_t jinn_peerguard_cluster_of(const struct jinn_peerguard *pg, uint64_t id);

/* The check every inbound raft message header passes before libraft
 * reads it (exposed for tests): NULL when a header of len bytes for
 * message type may reach libraft 0.15's decoder (*payload: the payload
 * bytes it declares), else why not. */
const char *jinn_peerguard_check(uint64_t type, const uint8_t *hdr, uint64_t len,
                                 uint64_t *payload);

/* Whether a raft address is host:port (host of letters, digits, '.' and
 * '-'; port 1..65535 in digits): what a handshake may give and libraft may
 * dial (exposed for tests). */
bool jinn_peerguard_address_ok(const char *address);

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
    /* It belongs to a cluster other than the one we named (cluster_id is
     * then 0: without TLS a probe learns no cluster id but its own). */
    bool other_cluster;
};

typedef void (*jinn_probe_cb)(void *data, const struct jinn_probe_result *res);

/* Dials address ("ip:port") and probes the jinn there (through TLS when it
 * is loaded: the peer's certificate must chain to the CA). cb is called
 * exactly once, from the loop (never from inside this call). self_id is
 * sent in libraft's handshake; cluster_id (ours, 0: none) is what the
 * answer is compared with: the peer returns its cluster id only when it
 * is the same (or through TLS), else says other_cluster. Returns 0, or an
 * error code (cb never called). */
int jinn_peerguard_probe(uv_loop_t *loop, const char *address, uint64_t self_id,
                         uint64_t cluster_id, uint64_t timeout_ms, jinn_probe_cb cb,
                         void *data);

/* Loop ms of the last message from server id on a live admitted inbound
 * connection, 0 when it has none. */
uint64_t jinn_peerguard_last_active(const struct jinn_peerguard *pg, uint64_t id);

/* While a --bootstrap node probes its peers, it answers their probes too
 * ("no cluster, no state yet") on its raft address, so nodes started
 * together see each other. Stop it before raft starts (runs the loop until
 * everything is closed). */
struct jinn_probe_server {
    struct jinn_peerguard pg; /* probe_only */
    bool started;
};
int jinn_probe_server_start(struct jinn_probe_server *srv, uv_loop_t *loop,
                            const char *listen_address, uint64_t self_id);
void jinn_probe_server_stop(struct jinn_probe_server *srv);

#endif
