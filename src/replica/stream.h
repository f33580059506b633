/* stream.h - the replica's stream client (protocol v1, docs/replica.md).
 *
 * A replica process (`jinn replica -c FILE`) follows a cluster through one
 * WebSocket at a time: `GET /v1/stream?from=POSITION&cluster=HEX16&name=NAME`
 * to the first reachable URL of replica_of (ws:// or wss://), then applies
 * what the node sends - a snapshot ('S') when it is new or off the node's
 * chain, then batches of committed commands ('E') in order - through the
 * replica node's API (node.h), and tracks the node's heartbeats.
 *
 * Rules the client keeps:
 * - a record is applied only when its prev is the replica's position
 *   (never skipped, never applied twice); anything else closes the
 *   connection and resumes from the position, on the next URL;
 * - no message for JINN_STREAM_SILENCE_MS on a connection: it is dead,
 *   the next URL is tried (a node that stopped, or was SIGSTOPped);
 * - heartbeats, but no primary one on this connection for
 *   replica_stale_after: the node lost the cluster (or lags); the next URL
 *   is tried, a round of such nodes backs off like failed connects;
 * - a message over replica_max_snapshot is refused from its frame headers
 *   and the next attempt waits JINN_STREAM_TOO_BIG_BACKOFF_MS;
 * - no *primary* heartbeat (quorum, a leader, leader contact within
 *   replica_stale_after) for replica_stale_after, through any node: the
 *   replica is READ_ONLY until the next primary heartbeat arrives;
 * - a node of another cluster (hello's cluster id) is never applied from.
 * Everything runs on the loop; nothing here blocks it. */
#ifndef JINN_REPLICA_STREAM_H
#define JINN_REPLICA_STREAM_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct jinn_node;

#define JINN_STREAM_MAX_URLS 16
#define JINN_STREAM_URL_MAX 512
#define JINN_STREAM_HEAD_MAX (16u * 1024) /* the 101 reply's head */
#define JINN_STREAM_TEXT_MAX (64u * 1024) /* a hello or heartbeat */
/* The largest message (a snapshot; batches are ~1 MiB) when the config
 * says nothing: replica_max_snapshot's default, ws.h's hard limit. */
#define JINN_STREAM_MAX_MESSAGE (4ull << 30)
/* After a snapshot over the limit: the node would send the same one again,
 * so wait this long (not the usual 100 ms..2 s) before the next attempt. */
#define JINN_STREAM_TOO_BIG_BACKOFF_MS (5u * 60 * 1000)
/* The server's heartbeat period (stream_heartbeat's default) and the
 * silence after which a connection is given up: two heartbeats and 1 s. */
#define JINN_STREAM_HEARTBEAT_MS 200
#define JINN_STREAM_SILENCE_MS (2 * JINN_STREAM_HEARTBEAT_MS + 1000)
/* Connect, TLS and the 101 must be done within this. */
#define JINN_STREAM_CONNECT_MS 3000
/* Backoff between rounds of failed attempts: doubles up to the max. */
#define JINN_STREAM_BACKOFF_MIN_MS 100
#define JINN_STREAM_BACKOFF_MAX_MS 2000

struct jinn_stream_url {
    bool tls;       /* wss:// */
    char host[256]; /* as written (an IPv4 literal, or a name to resolve) */
    char hostport[262];
    int port;
    char path[256]; /* a prefix before /v1/stream (a proxy's), "" for none */
};

/* Parses "ws://HOST[:PORT][/PREFIX]" or "wss://..." (default ports 80 and
 * 443; a PREFIX, e.g. a reverse proxy's, goes before /v1/stream). 0, or -1
 * when malformed. */
int jinn_stream_parse_url(const char *url, struct jinn_stream_url *out);

/* A heartbeat as received (strings copied, bounded). */
struct jinn_stream_heartbeat {
    char node[65];
    bool has_leader;
    uint64_t leader_id;
    char leader_name[65];
    char leader_api[JINN_STREAM_URL_MAX];
    uint64_t term, commit, position, time_ms;
    bool quorum;
    int64_t leader_contact_ms; /* -1: never */
    uint64_t applied;          /* optional "applied"; 0: absent */
    /* optional "election_timeout_ms" (the node's), at most
     * JINN_STREAM_ELECTION_TIMEOUT_MAX; 0: absent (an older node) */
    uint64_t election_timeout_ms;
};
/* The largest election timeout a node may be configured with (config.c). */
#define JINN_STREAM_ELECTION_TIMEOUT_MAX 60000

/* The text messages. hello: 0 with *cluster and node (65 bytes) filled;
 * heartbeat: 0 with hb filled; -1 when the JSON is not such a message. */
int jinn_stream_parse_hello(const char *json, size_t len, uint64_t *cluster, char node[65]);
int jinn_stream_parse_heartbeat(const char *json, size_t len, struct jinn_stream_heartbeat *hb);

/* Whether hb proves a live leader with a quorum no longer ago than
 * stale_after_ms: it resets the read-only timer. */
bool jinn_stream_primary(const struct jinn_stream_heartbeat *hb, uint64_t stale_after_ms);

/* Checks an 'E' message's framing (count, lengths, index > prev, every
 * byte accounted for) and calls fn for each record in order; fn's non-zero
 * return stops the walk and is returned. JINN_ECORRUPT when malformed
 * (then fn was never called). */
typedef int (*jinn_stream_record_fn)(void *data, uint64_t index, uint64_t prev,
                                     const uint8_t *buf, size_t len);
int jinn_stream_decode_batch(const uint8_t *msg, size_t len, jinn_stream_record_fn fn,
                             void *data);

/* Builds the upgrade request for url (parsed) at position; cluster 0: not
 * known yet; token NULL: none. Returns 0, or JINN_EINVAL (a token or name
 * that cannot go into a header) / JINN_ENOMEM. */
struct jinn_wbuf;
int jinn_stream_build_request(struct jinn_wbuf *out, const struct jinn_stream_url *url,
                              uint64_t position, uint64_t cluster, const char *name,
                              const char *token, const char key[25]);
/* The same with `&at=` (the replica's cluster time at position, which names
 * its chain) when at is not NULL. */
int jinn_stream_build_request_at(struct jinn_wbuf *out, const struct jinn_stream_url *url,
                                 uint64_t position, const uint64_t *at, uint64_t cluster,
                                 const char *name, const char *token, const char key[25]);

struct jinn_replica_stream_config {
    const char *const *urls; /* replica_of, in order; copied */
    unsigned n_urls;
    const char *name;  /* this replica's server_name (copied) */
    const char *token; /* NULL: none (copied) */
    uint64_t stale_after_ms;
    SSL_CTX *tls;          /* client context for wss:// (a reference is taken); NULL: refused */
    uint64_t max_snapshot; /* replica_max_snapshot; 0: JINN_STREAM_MAX_MESSAGE */
};

struct jinn_replica_stream;

/* Starts following the cluster. 0 or an error (nothing started). */
int jinn_replica_stream_start(uv_loop_t *loop, struct jinn_node *node,
                              const struct jinn_replica_stream_config *cfg,
                              struct jinn_replica_stream **out);

/* Connections from now on use tls (SIGHUP: replica_ca / replica_cert
 * read again); an open one keeps its own. Takes a reference. */
void jinn_replica_stream_set_tls(struct jinn_replica_stream *s, SSL_CTX *tls);

/* Closes the connection and the timers; cb runs once every handle is
 * closed, then the stream is freed. */
void jinn_replica_stream_stop(struct jinn_replica_stream *s, void (*cb)(void *data),
                              void *data);

/* Counters for status and tests. */
struct jinn_replica_stream_stats {
    uint64_t connects, disconnects, records, snapshots, bytes_received;
    const char *source; /* the node streaming now, NULL */
};
void jinn_replica_stream_stats(const struct jinn_replica_stream *s,
                               struct jinn_replica_stream_stats *out);

#endif
