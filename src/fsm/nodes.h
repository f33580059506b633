/* nodes.h - the replicated directory of cluster members.
 *
 * Each node announces its raft id, name and API URL through a NODE_SET
 * command, so every replica learns where to forward requests without extra
 * configuration. Kept sorted by id so iteration order (and the snapshot
 * bytes) are the same on every replica. */
#ifndef JINN_NODES_H
#define JINN_NODES_H

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

/* Applies a NODE_SET command. Returns 0, JINN_ENOMEM or JINN_EBUSY (full). */
int jinn_nodes_apply(struct jinn_nodes *nodes, const struct jinn_cmd *c);

void jinn_nodes_encode(const struct jinn_nodes *nodes, struct jinn_wbuf *w);
/* Decodes into an empty nodes; on failure nodes is left empty. */
int jinn_nodes_decode(struct jinn_nodes *nodes, struct jinn_rbuf *r);

#endif
