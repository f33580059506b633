/* stream.c - GET /v1/stream: the WebSocket feed of edge replicas
 * (protocol: docs/api.md, net/stream.h).
 *
 * Everything that can be refused is refused here, as a plain HTTP error,
 * before the upgrade: a request that is not a WebSocket handshake (400),
 * bad or unknown parameters (400), a node without a cluster id yet (503),
 * a replica of another cluster (409), too many replicas (503). Tokens are
 * checked by the route table (cluster:replica, or cluster:admin). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "error.h"
#include "net/stream.h"
#include "net/ws.h"

static bool header_is(const struct jinn_http_request *req, const char *name, const char *value)
{
    const struct jinn_http_header *h = jinn_http_header_find(&req->msg, name);
    size_t n = strlen(value);
    return h != NULL && h->value_len == n && strncasecmp(h->value, value, n) == 0;
}

/* Connection is a list of tokens ("keep-alive, Upgrade"): one is upgrade. */
static bool connection_upgrade(const struct jinn_http_request *req)
{
    const struct jinn_http_header *h = jinn_http_header_find(&req->msg, "connection");
    size_t i = 0;
    if (h == NULL) {
        return false;
    }
    while (i < h->value_len) {
        size_t start, end;
        while (i < h->value_len && (h->value[i] == ' ' || h->value[i] == '\t')) {
            i++;
        }
        start = i;
        while (i < h->value_len && h->value[i] != ',') {
            i++;
        }
        end = i;
        while (end > start && (h->value[end - 1] == ' ' || h->value[end - 1] == '\t')) {
            end--;
        }
        if (end - start == 7 && strncasecmp(h->value + start, "upgrade", 7) == 0) {
            return true;
        }
        i++;
    }
    return false;
}

/* Sec-WebSocket-Key: the base64 of 16 bytes (24 characters, "==" last). */
static bool key_ok(const struct jinn_http_header *h)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (h == NULL || h->value_len != 24 || h->value[22] != '=' || h->value[23] != '=') {
        return false;
    }
    for (size_t i = 0; i < 22; i++) {
        if (h->value[i] == '\0' || strchr(b64, h->value[i]) == NULL) {
            return false;
        }
    }
    return true;
}

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > JINN_STREAM_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Only from, cluster, name and at, each at most once. */
static bool params_known(const char *q, size_t len)
{
    static const char *const known[] = {"from", "cluster", "name", "at"};
    unsigned seen = 0;
    size_t i = 0;
    while (i < len) {
        size_t start = i, klen;
        unsigned k;
        while (i < len && q[i] != '&') {
            i++;
        }
        klen = 0;
        while (start + klen < i && q[start + klen] != '=') {
            klen++;
        }
        for (k = 0; k < 4; k++) {
            if (klen == strlen(known[k]) && memcmp(q + start, known[k], klen) == 0) {
                break;
            }
        }
        if (k == 4 || (seen & (1u << k))) {
            return false;
        }
        seen |= 1u << k;
        i++;
    }
    return true;
}

/* `at` (optional): the replica's cluster time at its position, which names
 * the chain it is on (a cluster bootstrapped again has the same id and
 * indexes). true unless present and not a decimal u64. */
static bool parse_at(struct jinn_http_request *req, uint64_t *at, bool *has_at)
{
    char s[24], *end;
    long n = jinn_http_query_get(req->query, req->query_len, "at", s, sizeof s);
    if (n == -1) {
        return true; /* absent: an older replica, index only */
    }
    if (n <= 0 || n > 20 || s[0] < '0' || s[0] > '9' || (n > 1 && s[0] == '0')) {
        return false;
    }
    errno = 0;
    *at = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *has_at = true;
    return true;
}

/* Whether a replica can be at `from`: on the leader, whose log holds
 * every committed entry, not past its last index (a replica applies only
 * committed records). A follower cannot tell (it may lag the replica's
 * last source): there a replica ahead waits, and is cut off after a while
 * (net/stream.c, "ahead of this node"). */
static bool from_possible(struct jinn_api *api, uint64_t from)
{
    struct jinn_node_status st;
    jinn_node_status(api->node, &st);
    return st.role != JINN_ROLE_LEADER || from <= st.last_index;
}

void jinn_api_stream(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args)
{
    char from_s[24], cluster_s[24], name[JINN_STREAM_NAME_MAX + 2], ours[17], accept[29];
    char key[25];
    const struct jinn_http_header *kh = jinn_http_header_find(&req->msg, "sec-websocket-key");
    long n;
    uint64_t from = 0, cluster_id, at = 0;
    bool has_at = false;
    char *end;
    int rv;

    (void)args;
    if (!header_is(req, "upgrade", "websocket") || !connection_upgrade(req) ||
        !header_is(req, "sec-websocket-version", "13") || !key_ok(kh)) {
        jinn_http_reply_error(
            req, JINN_EINVAL,
            "a WebSocket handshake is needed (Upgrade: websocket, Connection: "
            "Upgrade, Sec-WebSocket-Version: 13, Sec-WebSocket-Key)");
        return;
    }
    if (!params_known(req->query, req->query_len)) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "parameters: from, cluster, name, at (each once), nothing else");
        return;
    }
    n = jinn_http_query_get(req->query, req->query_len, "from", from_s, sizeof from_s);
    if (n > 0 && n <= 20 && from_s[0] >= '0' && from_s[0] <= '9' &&
        (n == 1 || from_s[0] != '0')) {
        errno = 0;
        from = strtoull(from_s, &end, 10);
        if (errno != 0 || *end != '\0') {
            n = -2;
        }
    } else {
        n = -2;
    }
    if (n < 0) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "from: the replica's position, a decimal index");
        return;
    }
    n = jinn_http_query_get(req->query, req->query_len, "name", name, sizeof name);
    if (n < 0 || !name_ok(name, (size_t)n)) {
        jinn_http_reply_error(req, JINN_EINVAL, "name: 1 to 64 bytes of [A-Za-z0-9._-]");
        return;
    }
    cluster_id = jinn_node_cluster_id(api->node);
    snprintf(ours, sizeof ours, "%016" PRIx64, cluster_id);
    n = jinn_http_query_get(req->query, req->query_len, "cluster", cluster_s, sizeof cluster_s);
    if (n == -2 || (n >= 0 && (n != 16 || strspn(cluster_s, "0123456789abcdef") != 16))) {
        jinn_http_reply_error(req, JINN_EINVAL, "cluster: 16 lowercase hex digits");
        return;
    }
    if (api->stream == NULL || cluster_id == 0) {
        jinn_http_reply_error(req, JINN_ENOLEADER,
                              api->stream == NULL ? "this node serves no replicas"
                                                  : "this node has no cluster id yet; retry");
        return;
    }
    if (n == 16 && memcmp(cluster_s, ours, 16) != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "this node belongs to cluster %s, not %s", ours, cluster_s);
        jinn_http_reply_error(req, JINN_ECONFLICT, msg);
        return;
    }
    if (!from_possible(api, from)) {
        /* Two causes, told apart only by the other nodes: this leader was
         * deposed and does not know it yet (the replica followed its
         * successor), or the replica holds another chain. */
        char msg[200];
        snprintf(
            msg, sizeof msg,
            "from %" PRIu64 " is past the end of this leader's log: it was deposed and "
            "does not know yet, or the replica followed another chain (a restored cluster)",
            from);
        jinn_http_reply_error(req, JINN_ECONFLICT, msg);
        return;
    }
    if (!jinn_stream_has_room(api->stream)) {
        jinn_http_reply_error(req, JINN_EBUSY, "too many replicas (stream_max_replicas)");
        return;
    }
    memcpy(key, kh->value, 24);
    key[24] = '\0';
    jinn_ws_accept_key(key, accept);
    if (!parse_at(req, &at, &has_at)) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "at: the replica's cluster time (ms) at its position, decimal");
        return;
    }
    rv = jinn_stream_attach_at(api->stream, req, from, has_at ? &at : NULL, name, accept);
    if (rv != 0) {
        jinn_http_reply_error(req, rv, NULL);
    }
}
