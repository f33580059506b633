/* config.h - node configuration: defaults and the Caddyfile-syntax parser.
 *
 * A config file holds one global options block (Caddy's syntax: tokens,
 * quoted strings, { } blocks, # comments, {env.VAR} placeholders). Every
 * directive is known and checked; a mistake is reported with file, line and
 * column and the node does not start. */
#ifndef JINN_CONFIG_H
#define JINN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINN_CONFIG_MAX_FILE (1u << 20) /* config files above 1 MiB are refused */
#define JINN_CONFIG_MAX_PEERS 16
#define JINN_CONFIG_MAX_POLICIES 256
#define JINN_NAME_MAX 64 /* server, cluster and namespace names */
#define JINN_CONFIG_MAX_SOURCES 16 /* replica_of URLs */
#define JINN_CONFIG_MAX_URL 1024   /* bytes of one replica_of URL */
#define JINN_DEFAULT_REPLICA_STALE_AFTER_MS 2000
/* The largest snapshot a replica accepts (it is received whole, in memory). */
#define JINN_DEFAULT_REPLICA_MAX_SNAPSHOT (UINT64_C(4) << 30)

enum jinn_mode { JINN_MODE_CP, JINN_MODE_AP };

struct jinn_peer {
    char *name;
    char *address; /* "ip:port" other nodes dial for raft */
};

struct jinn_policy {
    char *ns;
    enum jinn_mode mode;
    bool stale_reads;
    uint64_t max_staleness_ms; /* default JINN_DEFAULT_MAX_STALENESS_MS */
};

/* A stale read is refused (503 too_stale) when this node was last known to
 * hold everything the leader had committed longer ago than this. */
#define JINN_DEFAULT_MAX_STALENESS_MS 5000

#define JINN_BACKOFF_MAX 8

struct jinn_queue_policy {
    char *name; /* NULL for the defaults */
    uint64_t ack_wait_ms;
    uint64_t max_deliver;
    uint64_t backoff_ms[JINN_BACKOFF_MAX]; /* delay before the nth retry */
    unsigned n_backoff;
    uint64_t max_length;
    uint64_t max_bytes;
    uint64_t idempotency_window_ms;
};

struct jinn_config {
    char *server_name;
    char *data_dir;
    char *http_listen;    /* "ip:port" */
    char *http_advertise; /* URL other nodes use to reach our API */
    /* Scoped tokens (api/auth.c): the first token, created by the leader
     * when the table is empty; NULL: none (env JINN_BOOTSTRAP_TOKEN too). */
    char *bootstrap_token;
    int http_advertise_line, http_advertise_column; /* where it was given (0: not) */
    char *cluster_name;
    char *cluster_listen; /* "ip:port" raft binds to */
    struct jinn_peer peers[JINN_CONFIG_MAX_PEERS];
    unsigned n_peers;
    unsigned replicas; /* voters */
    struct jinn_policy *policies;
    unsigned n_policies;
    struct jinn_queue_policy *queue_policies;
    unsigned n_queue_policies;
    unsigned election_timeout_ms;
    unsigned install_snapshot_timeout_ms; /* leader resends a snapshot after this */
    unsigned heartbeat_timeout_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
    uint64_t request_timeout_ms;
    uint64_t standby_promote_after_ms;
    uint64_t max_body_bytes;
    uint64_t idle_timeout_ms;
    uint64_t read_timeout_ms; /* a started request must be complete by then */
    uint64_t lock_max_ttl_ms;
    /* Jobs (fsm/jobs.h): how long and how many bytes of succeeded jobs'
     * results the cluster keeps (the leader's values go into each JOB_ACK). */
    uint64_t job_result_ttl_ms;
    uint64_t job_results_max_bytes;
    unsigned max_connections;
    /* Limits (limit.h): per token, per client address, kept for peers. */
    unsigned limit_rate;           /* requests/s per token; 0 = off */
    unsigned limit_burst;          /* 0 = limit_rate */
    unsigned limit_concurrent;     /* requests in flight per token; 0 = off */
    unsigned limit_conns_per_addr; /* 0 = off */
    unsigned reserved_conns;       /* of max_connections, for cluster members */
    unsigned check_interval_ms; /* leader proposes a replica check; 0 = never */
    uint64_t min_free_space;    /* bytes; below it writes answer 507 (0 = off) */
    bool debug_log;
    /* cluster_tls { cert FILE key FILE ca FILE }: mutual TLS on every raft
     * connection (all three, or none: plaintext with jinn's preamble). */
    char *cluster_tls_cert;
    char *cluster_tls_key;
    char *cluster_tls_ca;
    /* pin NAME SHA256: node NAME must present exactly this certificate
     * (its SHA-256 fingerprint) instead of one naming it. */
    struct {
        char name[JINN_NAME_MAX + 1];
        uint8_t sha256[32];
    } cluster_tls_pins[JINN_CONFIG_MAX_PEERS];
    unsigned n_cluster_tls_pins;
    /* http_tls { cert FILE key FILE [client_ca FILE] }: the HTTP API over
     * TLS (and node-to-node calls to it); with client_ca, clients must
     * present a certificate it (or the cluster CA) signed. */
    char *http_tls_cert;
    char *http_tls_key;
    char *http_tls_client_ca;
    /* `insecure`: serve HTTP on a non-loopback address without any
     * authentication (protected mode off). */
    bool insecure;
    /* `jinn run --bootstrap`: found a new cluster from cluster_peers if
     * data_dir is empty (never from a config file: see docs/operations.md). */
    bool bootstrap;
    /* Job worker slots this node runs, all functions together (0: this
     * node runs no jobs); and how long a shutdown waits for running jobs
     * before it hands them back (wasm/jobs.h). */
    unsigned job_workers;
    uint64_t job_grace_ms;
    /* Edge replica (`jinn replica`, node.h): set by
     * jinn_config_replica_defaults before parsing. A replica config takes
     * the replica_* keys and refuses the cluster ones (cluster_peers,
     * cluster_listen, ...); a member's config refuses replica_*. */
    bool replica;
    char *replica_of[JINN_CONFIG_MAX_SOURCES]; /* ws:// or wss:// URLs, in order */
    unsigned n_replica_of;
    char *replica_token;             /* Bearer token; env JINN_REPLICA_TOKEN too */
    uint64_t replica_stale_after_ms; /* no primary heartbeat this long: read-only */
    uint64_t replica_max_snapshot;   /* bytes: a larger snapshot is refused */
    char *replica_ca;                /* CA file for wss:// */
    char *replica_cert;              /* client certificate for mTLS (with key) */
    char *replica_key;
    /* The stream feed of edge replicas (net/stream.h): heartbeat period,
     * the least time between two feeds of new records (0: every loop turn),
     * replicas at once (0: none served), bytes of recent records kept for
     * resuming replicas, unsent bytes after which a replica is cut off. */
    unsigned stream_heartbeat_ms;
    unsigned stream_coalesce_ms;
    unsigned stream_max_replicas;
    uint64_t stream_buffer_bytes;
    uint64_t stream_max_lag_bytes;
};

struct jinn_config_error {
    char file[256];
    int line; /* 1-based; 0 when the error is not tied to a position */
    int column;
    char message[256];
};

/* Fills cfg with the single-node defaults (strings owned by cfg). Returns
 * 0 or JINN_ENOMEM. */
int jinn_config_defaults(struct jinn_config *cfg);

/* The defaults of a replica config (`jinn replica`): jinn_config_defaults
 * with replica set, so parsing takes replica keys and refuses cluster ones;
 * the parse also reads JINN_REPLICA_TOKEN when no replica_token is given. */
int jinn_config_replica_defaults(struct jinn_config *cfg);

/* Parses text (len bytes, need not be NUL-terminated) over the defaults
 * already in cfg. file names the source in errors (copied). On error returns
 * JINN_ECONFIG (or JINN_ENOMEM) with err filled; cfg must still be freed. */
int jinn_config_parse(struct jinn_config *cfg, const char *file, const char *text,
                      size_t len, struct jinn_config_error *err);

/* Reads and parses path over the defaults. */
int jinn_config_load(struct jinn_config *cfg, const char *path,
                     struct jinn_config_error *err);

/* Resolves a host name in http_advertise to an IPv4 address (getaddrinfo,
 * once, at startup: peers forward to an address, and a name that does not
 * resolve is refused here with the directive's file:line:column rather than
 * breaking forwarding later). 0, or JINN_ECONFIG/JINN_ENOMEM with err set.
 * Not part of jinn_config_parse, which does no I/O. */
int jinn_config_resolve(struct jinn_config *cfg, struct jinn_config_error *err);

void jinn_config_free(struct jinn_config *cfg);

/* The policy for namespace ns: the configured one, or the CP default (on a
 * replica: AP with stale reads, max_staleness 5 s). */
struct jinn_policy jinn_config_policy(const struct jinn_config *cfg, const char *ns);

/* The settings for queue name: the configured ones, or the defaults. */
struct jinn_queue_policy jinn_config_queue(const struct jinn_config *cfg, const char *name);

/* Index of this node in peers (the parser guarantees it is there). */
unsigned jinn_config_self(const struct jinn_config *cfg);

/* Parses "500ms", "30s", "2m", "1h" into milliseconds. 0 on success. */
int jinn_parse_duration(const char *s, uint64_t *ms);
/* Parses "1048576", "64KiB", "1MiB", "1MB" ... into bytes. 0 on success. */
int jinn_parse_size(const char *s, uint64_t *bytes);
/* Parses an "a.b.c.d:port" address. 0 on success. */
int jinn_parse_hostport(const char *s);

/* A bootstrap token's shape: 16-256 visible ASCII bytes, not in the
 * namespace of generated tokens ("jinn.") or node credentials ("jinn-"). */
bool jinn_config_token_ok(const char *t, size_t len);

#endif
