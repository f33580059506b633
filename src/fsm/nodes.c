/* nodes.c - see nodes.h. */
#include "fsm/nodes.h"

#include <string.h>

#include "alloc.h"
#include "error.h"

void jinn_nodes_init(struct jinn_nodes *nodes) { memset(nodes, 0, sizeof *nodes); }

void jinn_nodes_clear(struct jinn_nodes *nodes)
{
    for (unsigned i = 0; i < nodes->n; i++) {
        jinn_free(nodes->items[i].name);
        jinn_free(nodes->items[i].api);
    }
    jinn_nodes_init(nodes);
}

/* Index of id, or of where it would be inserted. */
static unsigned position(const struct jinn_nodes *nodes, uint64_t id)
{
    unsigned lo = 0, hi = nodes->n;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (nodes->items[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

const struct jinn_node_info *jinn_nodes_find(const struct jinn_nodes *nodes, uint64_t id)
{
    unsigned at = position(nodes, id);
    return at < nodes->n && nodes->items[at].id == id ? &nodes->items[at] : NULL;
}

static int put(struct jinn_nodes *nodes, uint64_t id, struct jinn_slice name,
               struct jinn_slice api)
{
    unsigned at = position(nodes, id);
    char *name_copy = jinn_strndup((const char *)name.p, name.len);
    char *api_copy = jinn_strndup((const char *)api.p, api.len);
    struct jinn_node_info *slot;

    if (name_copy == NULL || api_copy == NULL) {
        goto err_free_copies;
    }
    if (at < nodes->n && nodes->items[at].id == id) {
        slot = &nodes->items[at];
        jinn_free(slot->name);
        jinn_free(slot->api);
    } else {
        if (nodes->n == JINN_NODES_MAX) {
            jinn_free(name_copy);
            jinn_free(api_copy);
            return JINN_EBUSY;
        }
        memmove(&nodes->items[at + 1], &nodes->items[at],
                (nodes->n - at) * sizeof nodes->items[0]);
        nodes->n++;
        slot = &nodes->items[at];
        slot->id = id;
    }
    slot->name = name_copy;
    slot->api = api_copy;
    return 0;

err_free_copies:
    jinn_free(name_copy);
    jinn_free(api_copy);
    return JINN_ENOMEM;
}

int jinn_nodes_apply(struct jinn_nodes *nodes, const struct jinn_cmd *c)
{
    return put(nodes, c->node.id, c->node.name, c->node.api);
}

void jinn_nodes_encode(const struct jinn_nodes *nodes, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u32(w, nodes->n);
    for (unsigned i = 0; i < nodes->n; i++) {
        jinn_wbuf_put_u64(w, nodes->items[i].id);
        jinn_wbuf_put_str(w, nodes->items[i].name);
        jinn_wbuf_put_str(w, nodes->items[i].api);
    }
}

int jinn_nodes_decode(struct jinn_nodes *nodes, struct jinn_rbuf *r)
{
    uint32_t n = jinn_rbuf_get_u32(r);
    uint64_t prev = 0;

    if (n > JINN_NODES_MAX) {
        return JINN_ECORRUPT;
    }
    for (uint32_t i = 0; i < n && !r->failed; i++) {
        uint64_t id = jinn_rbuf_get_u64(r);
        struct jinn_slice name, api;
        int rv;
        name.len = jinn_rbuf_get_bytes(r, &name.p, JINN_NODE_NAME_MAX);
        api.len = jinn_rbuf_get_bytes(r, &api.p, JINN_NODE_API_MAX);
        if (r->failed || (i > 0 && id <= prev)) {
            break;
        }
        rv = put(nodes, id, name, api);
        if (rv != 0) {
            jinn_nodes_clear(nodes);
            return rv;
        }
        prev = id;
    }
    if (r->failed || nodes->n != n) {
        jinn_nodes_clear(nodes);
        return JINN_ECORRUPT;
    }
    return 0;
}
