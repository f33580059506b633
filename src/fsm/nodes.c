/* nodes.c - see nodes.h. */
#include "fsm/nodes.h"

#include <arpa/inet.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

#define DNS_NAME_MAX 253
#define DNS_LABEL_MAX 63
#define IPV6_TEXT_MAX 45 /* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" */

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

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* "a.b.c.d", each 0-255 without leading zeros. */
static bool ipv4_valid(const char *p, size_t len)
{
    unsigned parts = 0;
    size_t i = 0;
    while (i < len) {
        unsigned v = 0;
        size_t start = i;
        while (i < len && is_digit(p[i]) && i - start < 3) {
            v = v * 10 + (unsigned)(p[i] - '0');
            i++;
        }
        if (i == start || v > 255 || (i - start > 1 && p[start] == '0')) {
            return false;
        }
        parts++;
        if (i == len) {
            break;
        }
        if (p[i] != '.' || parts == 4) {
            return false;
        }
        i++;
        if (i == len) {
            return false; /* trailing dot */
        }
    }
    return parts == 4;
}

/* Labels of [A-Za-z0-9-], 1-63 bytes, not starting or ending with '-'. A
 * name made only of digits and dots must be a valid IPv4 address instead
 * (so "999.1.1.1" or "1.2.3" are not taken as names). */
static bool dns_name_valid(const char *p, size_t len)
{
    bool all_numeric = true;
    size_t label = 0;
    if (len == 0 || len > DNS_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '.') {
            if (label == 0 || p[i - 1] == '-') {
                return false;
            }
            label = 0;
            continue;
        }
        if (!is_alnum(c) && c != '-') {
            return false;
        }
        if ((c == '-' && label == 0) || ++label > DNS_LABEL_MAX) {
            return false;
        }
        all_numeric = all_numeric && is_digit(c);
    }
    if (label == 0 || p[len - 1] == '-') {
        return false;
    }
    return !all_numeric || ipv4_valid(p, len);
}

/* "[...]" holding an IPv6 address as inet_pton reads it (no zone id). */
static bool ipv6_valid(const char *p, size_t len)
{
    char text[IPV6_TEXT_MAX + 1];
    struct in6_addr addr;
    if (len < 4 || p[0] != '[' || p[len - 1] != ']' || len - 2 > IPV6_TEXT_MAX) {
        return false;
    }
    for (size_t i = 1; i + 1 < len; i++) {
        char c = p[i];
        if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
              c == '.')) {
            return false;
        }
    }
    memcpy(text, p + 1, len - 2);
    text[len - 2] = '\0';
    return inet_pton(AF_INET6, text, &addr) == 1;
}

bool jinn_nodes_url_valid(const char *url, size_t len)
{
    static const char scheme[] = "http://";
    const size_t scheme_len = sizeof scheme - 1;
    const char *host, *end, *colon;
    size_t host_len, port_len;
    unsigned long port = 0;

    if (url == NULL || len <= scheme_len || len > JINN_NODE_API_MAX ||
        memcmp(url, scheme, scheme_len) != 0) {
        return false;
    }
    end = url + len;
    if (end[-1] == '/') {
        end--; /* one optional trailing slash */
    }
    host = url + scheme_len;
    /* The port follows the last ':' (an IPv6 host has its own inside []). */
    colon = NULL;
    for (const char *p = end; p > host; p--) {
        if (p[-1] == ':') {
            colon = p - 1;
            break;
        }
        if (!is_digit(p[-1])) {
            return false;
        }
    }
    if (colon == NULL) {
        return false;
    }
    port_len = (size_t)(end - colon - 1);
    if (port_len == 0 || port_len > 5 || colon[1] == '0') {
        return false;
    }
    for (size_t i = 0; i < port_len; i++) {
        port = port * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (port == 0 || port > 65535) {
        return false;
    }
    host_len = (size_t)(colon - host);
    if (host_len > 0 && host[0] == '[') {
        return ipv6_valid(host, host_len);
    }
    return dns_name_valid(host, host_len);
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

static void forget(struct jinn_nodes *nodes, uint64_t id)
{
    unsigned at = position(nodes, id);
    if (at < nodes->n && nodes->items[at].id == id) {
        jinn_free(nodes->items[at].name);
        jinn_free(nodes->items[at].api);
        memmove(&nodes->items[at], &nodes->items[at + 1],
                (nodes->n - at - 1) * sizeof nodes->items[0]);
        nodes->n--;
    }
}

int jinn_nodes_apply(struct jinn_nodes *nodes, const struct jinn_cmd *c)
{
    /* The same bytes give the same answer on every replica: a bad URL in a
     * committed entry is refused everywhere and changes nothing (format 1
     * entries, from before the check, apply as they did; fetch.c still
     * refuses to dial a bad URL). */
    if (c->type == JINN_CMD_NODE_DEL) {
        forget(nodes, c->node.id); /* the leader saw it leave the configuration */
        return 0;
    }
    if (c->version != 1 && c->node.api.len != 0 &&
        !jinn_nodes_url_valid((const char *)c->node.api.p, c->node.api.len)) {
        return JINN_EINVAL;
    }
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
