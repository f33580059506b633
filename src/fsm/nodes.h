/* nodes.h - the replicated directory of cluster members.
 *
 * Each node announces its raft id, name and API URL through a NODE_SET
 * command, so every replica learns where to forward requests without extra
 * configuration. Kept sorted by id so iteration order (and the snapshot
 * bytes) are the same on every replica. */
#ifndef JINN_NODES_H
#define JINN_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "fsm/cmd.h"

#define JINN_NODES_MAX 64

struct jinn_node_info {
    uint64_t id;
    char *name; /* owned */
    char *api;  /* owned; "" until announced */
};

struct jinn_nodes {
    struct jinn_node_info items[JINN_NODES_MAX];
    unsigned n;
};

void jinn_nodes_init(struct jinn_nodes *nodes);
void jinn_nodes_clear(struct jinn_nodes *nodes);
/* Borrowed pointer, or NULL. */
const struct jinn_node_info *jinn_nodes_find(const struct jinn_nodes *nodes, uint64_t id);

/* Whether url (len bytes, not NUL-terminated) is an API URL a node may
 * announce: "http://" HOST ":" PORT, optionally followed by one "/", and
 * nothing else. HOST is a dotted-quad IPv4 address, a bracketed IPv6
 * address or a DNS name (labels of [A-Za-z0-9-], 1-253 bytes); PORT is
 * 1-65535 without leading zeros. No userinfo, path, query, fragment,
 * whitespace or control bytes. A pure function of the bytes: the state
 * machine uses it during apply, so every replica decides alike. */
bool jinn_nodes_url_valid(const char *url, size_t len);

/* Applies NODE_SET or NODE_DEL. NODE_DEL removes the id from the directory
 * (the leader proposes it for ids that left the raft configuration); a
 * NODE_SET with an empty API URL records a member's name before it has
 * announced itself; any other URL must pass jinn_nodes_url_valid. Returns 0,
 * JINN_EINVAL (bad URL, nothing changed), JINN_ENOMEM or JINN_EBUSY (full). */
int jinn_nodes_apply(struct jinn_nodes *nodes, const struct jinn_cmd *c);

void jinn_nodes_encode(const struct jinn_nodes *nodes, struct jinn_wbuf *w);
/* Decodes into an empty nodes; on failure nodes is left empty. */
int jinn_nodes_decode(struct jinn_nodes *nodes, struct jinn_rbuf *r);

#endif
