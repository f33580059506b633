/* limit.h - request limits per token and connection limits per address.
 *
 * So that one tenant or one flood cannot starve another, nor the cluster's
 * own forwarding:
 *
 *  - connections: at most conns_per_addr open connections per client IPv4
 *    address, and at most max_connections - reserved_conns from all
 *    non-peer addresses together; the last reserved_conns are kept for
 *    cluster members (their addresses: cluster_peers and the replicated
 *    node directory), whose connections are not counted per address;
 *  - requests: a token bucket (rate requests/s, burst of `burst`) and a cap
 *    on concurrent requests (long-polls included, until answered) per
 *    token name. Peers (forwarded requests) and privileged callers (admin
 *    tokens) are not limited.
 *
 * Beyond a limit the caller answers 429 too_many_requests with a
 * Retry-After. Every map here has a named size limit; entries are freed
 * when their last connection closes (addresses) or evicted when idle
 * (tokens). Event-loop only (not thread-safe). */
#ifndef JINN_LIMIT_H
#define JINN_LIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define JINN_LIMIT_ADDRS_MAX 65536 /* addresses with open connections */
#define JINN_LIMIT_TOKENS_MAX 4096 /* token entries; idle ones are evicted */
#define JINN_LIMIT_TOKEN_NAME_MAX 128

struct jinn_limit_config {
    unsigned rate;           /* requests/s per token; 0 = no rate limit */
    unsigned burst;          /* bucket size; 0 = rate (one second's worth) */
    unsigned concurrent;     /* requests in flight per token; 0 = no cap */
    unsigned conns_per_addr; /* open connections per address; 0 = no cap */
    unsigned reserved_conns; /* of max_connections, kept for peers */
    unsigned max_connections;
};

/* How a connection was counted (give it back to jinn_limit_conn_close). */
enum jinn_limit_conn_kind { JINN_LIMIT_CONN_NONE = 0, JINN_LIMIT_CONN_CLIENT, JINN_LIMIT_CONN_PEER };

struct jinn_limit;
struct jinn_limit_token; /* a token's entry; the ticket of a request */

struct jinn_limit *jinn_limit_create(const struct jinn_limit_config *cfg);
void jinn_limit_destroy(struct jinn_limit *l);

/* Decides whether an address belongs to a cluster member (NULL: none do). */
void jinn_limit_set_peer_check(struct jinn_limit *l, bool (*is_peer)(void *data, uint32_t ip),
                               void *data);
bool jinn_limit_is_peer(const struct jinn_limit *l, uint32_t ip);

/* A connection from ip (IPv4, host order; 0 = not an IP socket, counted as
 * one address) was accepted. Returns 0 with *kind set, JINN_ETOOMANY when
 * ip has conns_per_addr open already, or JINN_EBUSY when the non-reserved
 * connections are all taken. */
int jinn_limit_conn_open(struct jinn_limit *l, uint32_t ip, enum jinn_limit_conn_kind *kind);
void jinn_limit_conn_close(struct jinn_limit *l, uint32_t ip, enum jinn_limit_conn_kind kind);

/* A request by token (a name, "anonymous" without one) starts at now_ms
 * (loop time). privileged requests pass without being counted (*ticket
 * NULL). Returns 0 with *ticket (give it to jinn_limit_request_end exactly
 * once), or JINN_ETOOMANY with *retry_after_s (>= 1) set. */
int jinn_limit_request_begin(struct jinn_limit *l, const char *token, uint64_t now_ms,
                             bool privileged, struct jinn_limit_token **ticket,
                             unsigned *retry_after_s);
void jinn_limit_request_end(struct jinn_limit *l, struct jinn_limit_token *ticket);

struct jinn_limit_stats {
    uint64_t conns_client, conns_peer;  /* open now */
    uint64_t addrs, tokens;             /* map entries now */
    uint64_t conns_refused_addr;        /* over conns_per_addr */
    uint64_t conns_refused_total;       /* over max_connections - reserved_conns */
    uint64_t requests_refused_rate;     /* over a token's rate */
    uint64_t requests_refused_concurrent;
    uint64_t tokens_evicted;
};
void jinn_limit_stats(const struct jinn_limit *l, struct jinn_limit_stats *out);

#endif
