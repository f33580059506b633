/* api.c - route table, dispatch, leader forwarding and the propose helper.
 *
 * Adding an endpoint is one row in `routes` and one handler. */
#include "api/api.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "error.h"
#include "fetch.h"
#include "fsm/fsm.h"
#include "limit.h"
#include "fsm/auth.h"
#include "log.h"
#include "tls.h"

#define FORWARDED_HEADER "X-Jinn-Forwarded-By"
/* Node-to-node requests name their cluster; another cluster's are refused. */
#define CLUSTER_HEADER "X-Jinn-Cluster"
#define FORWARD_GRACE_MS 1000 /* beyond the leader's own request timeout */
#define FORWARD_LONG_POLL_MS 300000

/* Last two columns: what a token needs (api/auth.c, docs/api.md
 * "Authentication"). A row without them needs cluster:admin. */
#define NEED(kind, actions) JINN_AUTH_##kind, (actions)
#define R_ JINN_AUTH_READ
#define W_ JINN_AUTH_WRITE
#define PUB_ JINN_AUTH_PUBLISH
#define CON_ JINN_AUTH_CONSUME
#define ADM_ JINN_AUTH_ADMIN
#define INV_ JINN_AUTH_INVOKE
#define DEP_ JINN_AUTH_DEPLOY
#define HOLD_ JINN_AUTH_HOLD
static const struct jinn_route routes[] = {
    /* status names every function and member: admins only */
    {"GET", "/v1/status", jinn_api_status, 0, NEED(CLUSTER, ADM_)},
    {"GET", "/healthz", jinn_api_healthz, 0, NEED(PUBLIC, 0)},
    {"GET", "/readyz", jinn_api_readyz, 0, NEED(PUBLIC, 0)},
    {"GET", "/metrics", jinn_api_metrics, 0, NEED(CLUSTER, ADM_ | JINN_AUTH_METRICS)},
    {"GET", "/v1/stream", jinn_api_stream, 0, NEED(CLUSTER, ADM_ | JINN_AUTH_REPLICA)},
    {"POST", "/v1/internal/nodes", jinn_api_node_set, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    {"PUT", "/v1/kv/{}/{+}", jinn_api_kv_put, JINN_ROUTE_LEADER, NEED(KV, W_)},
    {"DELETE", "/v1/kv/{}/{+}", jinn_api_kv_delete, JINN_ROUTE_LEADER, NEED(KV, W_)},
    {"GET", "/v1/kv/{}/{+}", jinn_api_kv_get, 0, NEED(KV, R_)},
    {"GET", "/v1/kv/{}", jinn_api_kv_list, JINN_ROUTE_LIST, NEED(KV, R_)},
    {"GET", "/v1/locks", jinn_api_lock_list, JINN_ROUTE_LIST, NEED(LOCK, HOLD_)},
    {"POST", "/v1/locks/{}/refresh", jinn_api_lock_refresh, JINN_ROUTE_LEADER, NEED(LOCK, HOLD_)},
    {"POST", "/v1/locks/{}", jinn_api_lock_acquire, JINN_ROUTE_LEADER, NEED(LOCK, HOLD_)},
    {"DELETE", "/v1/locks/{}", jinn_api_lock_release, JINN_ROUTE_LEADER, NEED(LOCK, HOLD_)},
    {"GET", "/v1/locks/{}", jinn_api_lock_show, 0, NEED(LOCK, HOLD_)},
    {"GET", "/v1/queues", jinn_api_queue_list, JINN_ROUTE_LIST, NEED(QUEUE, PUB_ | CON_ | ADM_)},
    {"POST", "/v1/queues/{}", jinn_api_queue_publish, JINN_ROUTE_LEADER, NEED(QUEUE, PUB_)},
    {"GET", "/v1/queues/{}", jinn_api_queue_stats, 0, NEED(QUEUE, PUB_ | CON_ | ADM_)},
    {"POST", "/v1/queues/{}/fetch", jinn_api_queue_fetch, JINN_ROUTE_LEADER, NEED(QUEUE, CON_)},
    {"GET", "/v1/queues/{}/dead", jinn_api_queue_dead, 0, NEED(QUEUE, ADM_)},
    {"POST", "/v1/queues/{}/dead/{}/requeue", jinn_api_queue_requeue, JINN_ROUTE_LEADER,
     NEED(QUEUE, ADM_)},
    {"DELETE", "/v1/queues/{}/dead/{}", jinn_api_queue_drop, JINN_ROUTE_LEADER, NEED(QUEUE, ADM_)},
    {"POST", "/v1/queues/{}/{}/ack", jinn_api_queue_ack, JINN_ROUTE_LEADER, NEED(QUEUE, CON_)},
    {"POST", "/v1/queues/{}/{}/nak", jinn_api_queue_nak, JINN_ROUTE_LEADER, NEED(QUEUE, CON_)},
    {"POST", "/v1/queues/{}/{}/progress", jinn_api_queue_progress, JINN_ROUTE_LEADER,
     NEED(QUEUE, CON_)},
    {"POST", "/v1/queues/{}/{}/term", jinn_api_queue_term, JINN_ROUTE_LEADER, NEED(QUEUE, CON_)},
    /* exec: a read-only check here, then the leader */
    {"POST", "/v1/sql/{}/exec", jinn_api_sql_exec, 0, NEED(SQL, W_)},
    {"POST", "/v1/sql/{}/query", jinn_api_sql_query, 0, NEED(SQL, R_)},
    {"GET", "/v1/sql/{}", jinn_api_sql_info, 0, NEED(SQL, R_)},
    {"GET", "/v1/sql/{}/backup", jinn_api_sql_backup, 0, NEED(SQL, R_)}, /* api/backup.c */
    {"GET", "/v1/snapshot", jinn_api_snapshot, 0, NEED(CLUSTER, ADM_)},
    {"POST", "/v1/cluster/check", jinn_api_check_start, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    {"GET", "/v1/cluster/check", jinn_api_check_show, JINN_ROUTE_LEADER,
     NEED(CLUSTER, ADM_ | JINN_AUTH_REPLICA)}, /* an edge replica's verdict */
    {"GET", "/v1/internal/digest", jinn_api_check_digest, 0, NEED(CLUSTER, ADM_)},
    {"GET", "/v1/cluster/members", jinn_api_members_list, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    {"POST", "/v1/cluster/members", jinn_api_members_add, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    {"DELETE", "/v1/cluster/members/{}", jinn_api_members_remove, JINN_ROUTE_LEADER,
     NEED(CLUSTER, ADM_)},
    {"POST", "/v1/cluster/members/{}/promote", jinn_api_members_promote, JINN_ROUTE_LEADER,
     NEED(CLUSTER, ADM_)},
    {"POST", "/v1/cluster/members/{}/demote", jinn_api_members_demote, JINN_ROUTE_LEADER,
     NEED(CLUSTER, ADM_)},
    {"POST", "/v1/cluster/leader/transfer", jinn_api_leader_transfer, JINN_ROUTE_LEADER,
     NEED(CLUSTER, ADM_)},
    {"GET", "/v1/functions/{}/logs", jinn_api_fn_logs, 0, NEED(FN, DEP_)},
    {"GET", "/v1/functions", jinn_api_fn_list, JINN_ROUTE_LIST, NEED(FN, INV_ | DEP_)},
    {"PUT", "/v1/functions/{}", jinn_api_fn_deploy, JINN_ROUTE_LEADER, NEED(FN, DEP_)},
    {"GET", "/v1/functions/{}", jinn_api_fn_show, 0, NEED(FN, INV_ | DEP_)},
    {"DELETE", "/v1/functions/{}", jinn_api_fn_delete, JINN_ROUTE_LEADER, NEED(FN, DEP_)},
    {"POST", "/v1/functions/{}/rollback", jinn_api_fn_rollback, JINN_ROUTE_LEADER, NEED(FN, DEP_)},
    {"GET", "/v1/functions/{}/module", jinn_api_fn_module, 0, NEED(FN, DEP_)},
    {"POST", "/v1/tokens", jinn_api_token_create, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    {"GET", "/v1/tokens", jinn_api_token_list, 0, NEED(CLUSTER, ADM_)},
    {"DELETE", "/v1/tokens/{}", jinn_api_token_revoke, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    /* Any authenticated token: the policy is what a deployer must sign
     * for, not a secret (PUBLIC past auth_begin = any valid credential). */
    {"GET", "/v1/functions-policy", jinn_api_fn_policy_get, 0, NEED(PUBLIC, 0)},
    {"PUT", "/v1/functions-policy", jinn_api_fn_policy_put, JINN_ROUTE_LEADER,
     NEED(CLUSTER, ADM_)},
    {"POST", "/v1/functions/{}/jobs", jinn_api_job_submit, JINN_ROUTE_LEADER, NEED(FN, INV_)},
    {"GET", "/v1/functions/{}/jobs", jinn_api_job_list, 0, NEED(FN, INV_ | DEP_)},
    {"GET", "/v1/functions/{}/jobs/{}", jinn_api_job_show, 0, NEED(FN, INV_ | DEP_)},
    /* a worker settles its job (nodes: the internal key) */
    {"POST", "/v1/functions/{}/jobs/{}/ack", jinn_api_job_ack, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
    {"POST", "/v1/functions/{}/jobs/ack", jinn_api_job_ack_batch, JINN_ROUTE_LEADER, NEED(CLUSTER, ADM_)},
};

void jinn_api_init(struct jinn_api *api, uv_loop_t *loop, const struct jinn_config *cfg,
                   struct jinn_node *node)
{
    memset(api, 0, sizeof *api);
    api->loop = loop;
    api->cfg = cfg;
    api->node = node;
    uv_timer_init(loop, &api->queue_kick);
    api->queue_kick.data = api;
    jinn_api_check_init(api);
    jinn_api_fn_init(api);
    uv_timer_init(loop, &api->watch_kick);
    api->watch_kick.data = api;
    jinn_api_auth_init(api);
}

/* Matches path against pattern, capturing {} segments into args. Returns 1
 * on a match, 0 on none, -1 when a captured segment is malformed, -2 when
 * it is too long. */
static int match(const char *pattern, const char *path, size_t path_len,
                 struct jinn_route_args *args)
{
    const char *p = pattern, *s = path, *end = path + path_len;

    args->n = 0;
    while (*p != '\0') {
        bool rest = strncmp(p, "{+}", 3) == 0;
        if ((p[0] == '{' && p[1] == '}') || rest) {
            const char *seg_end = rest ? end : memchr(s, '/', (size_t)(end - s));
            long n;
            if (seg_end == NULL) {
                seg_end = end;
            }
            if (seg_end == s || args->n == JINN_ROUTE_MAX_ARGS) {
                return 0;
            }
            n = jinn_http_unescape(s, (size_t)(seg_end - s), args->arg[args->n],
                                   JINN_ROUTE_ARG_MAX, false);
            if (n < 0) {
                return n == -2 ? -2 : -1;
            }
            args->len[args->n++] = (size_t)n;
            s = seg_end;
            p += rest ? 3 : 2;
            continue;
        }
        if (s == end || *p != *s) {
            return 0;
        }
        p++;
        s++;
    }
    return s == end ? 1 : 0;
}

/* ---- forwarding to the leader ------------------------------------------- */

static bool hop_by_hop(const struct jinn_http_header *h)
{
    static const char *const names[] = {"connection", "keep-alive", "transfer-encoding",
                                        "content-length", "host", "te", "upgrade",
                                        "proxy-connection", "expect"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (h->name_len == strlen(names[i]) && strncasecmp(h->name, names[i], h->name_len) == 0) {
            return true;
        }
    }
    return false;
}

static void forwarded(void *data, int code, const struct jinn_http_msg *head, const char *body,
                      size_t body_len)
{
    struct jinn_http_request *req = data;
    struct jinn_api *api = req->user;
    const char *ctype = "application/octet-stream";
    char name[128], value[512];

    if (code != JINN_OK) {
        api->forwards_failed++;
        jinn_http_reply_error(req, code, NULL);
        return;
    }
    for (unsigned i = 0; i < head->n_headers; i++) {
        const struct jinn_http_header *h = &head->headers[i];
        if (hop_by_hop(h) || h->name_len >= sizeof name || h->value_len >= sizeof value) {
            continue;
        }
        memcpy(name, h->name, h->name_len);
        name[h->name_len] = '\0';
        memcpy(value, h->value, h->value_len);
        value[h->value_len] = '\0';
        if (strcasecmp(name, "content-type") == 0) {
            continue;
        }
        jinn_http_add_header(req, name, value);
    }
    const struct jinn_http_header *ct = jinn_http_header_find(head, "content-type");
    if (ct != NULL && ct->value_len < sizeof value) {
        memcpy(value, ct->value, ct->value_len);
        value[ct->value_len] = '\0';
        ctype = value;
    }
    jinn_http_reply(req, head->status, ctype, body, body_len);
}

/* A relayed long poll (a waiting lock acquire, a parked queue fetch)
 * watches its client: when the client goes, the relay to the leader is
 * dropped too, so the leader sees its client go (and withdraws a waiting
 * acquire) instead of holding a place for nobody. */
#define RELAY_POLL_MS 100

struct long_relay {
    uv_timer_t timer;
    struct jinn_http_request *req;
};

static void long_relay_closed(uv_handle_t *h) { jinn_free(h->data); }

static void long_relay_tick(uv_timer_t *t)
{
    struct long_relay *lr = t->data;
    if (!jinn_http_client_alive(lr->req)) {
        jinn_fetch_cancel(lr); /* runs long_forwarded now */
    }
}

static void long_forwarded(void *data, int code, const struct jinn_http_msg *head,
                           const char *body, size_t body_len)
{
    struct long_relay *lr = data;
    struct jinn_http_request *req = lr->req;
    uv_timer_stop(&lr->timer);
    uv_close((uv_handle_t *)&lr->timer, long_relay_closed);
    forwarded(req, code, head, body, body_len);
}

static bool header_is(const struct jinn_http_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

void jinn_api_forward_or_reply(struct jinn_api *api, struct jinn_http_request *req)
{
    struct long_relay *lr = NULL;
    struct jinn_node_status st;
    struct jinn_wbuf headers;
    const char *leader_api;
    bool replica = jinn_node_is_replica(api->node);
    uint64_t timeout;
    int rv;

    if (jinn_http_header_find(&req->msg, FORWARDED_HEADER) != NULL) {
        /* Leadership moved while the request was in flight: one hop only. */
        jinn_http_reply_error(req, JINN_ENOTLEADER, NULL);
        return;
    }
    jinn_node_status(api->node, &st);
    if (replica) {
        /* An edge replica relays as a client would call the leader: the
         * leader named by the last primary heartbeat, none while read-only. */
        leader_api = jinn_node_replica_leader_api(api->node);
        if (leader_api == NULL) {
            jinn_http_reply_error(req, JINN_EREADONLY,
                                  "this replica has had no primary heartbeat within "
                                  "replica_stale_after: read-only until the leader is heard "
                                  "again");
            return;
        }
    } else if (st.leader_id == 0 || !st.quorum) {
        jinn_http_reply_error(req, JINN_ENOLEADER, NULL);
        return;
    } else if (st.leader_api == NULL) {
        jinn_http_reply_error(req, JINN_ENOLEADER, "the leader has not announced its API yet");
        return;
    } else {
        leader_api = st.leader_api;
    }
    jinn_wbuf_init(&headers);
    for (unsigned i = 0; i < req->msg.n_headers; i++) {
        const struct jinn_http_header *h = &req->msg.headers[i];
        /* A replica is not a peer: no node-to-node marker leaves it. */
        if (!hop_by_hop(h) &&
            !(replica && (header_is(h, FORWARDED_HEADER) || header_is(h, CLUSTER_HEADER)))) {
            jinn_wbuf_printf(&headers, "%.*s: %.*s\r\n", (int)h->name_len, h->name,
                             (int)h->value_len, h->value);
        }
    }
    if (!replica) {
        jinn_wbuf_printf(&headers, "%s: %s\r\n%s: %016" PRIx64 "\r\n", FORWARDED_HEADER,
                         api->cfg->server_name, CLUSTER_HEADER, st.cluster_id);
    }
    jinn_wbuf_put_u8(&headers, 0);
    if (headers.failed) {
        jinn_wbuf_free(&headers);
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    req->user = api;
    api->forwards_total++;
    /* A queue fetch or a waiting lock acquire may long-poll at the leader
     * for up to 5 minutes. */
    timeout = api->cfg->request_timeout_ms + FORWARD_GRACE_MS;
    {
        char wait[16];
        if ((req->path_len > 6 && memcmp(req->path + req->path_len - 6, "/fetch", 6) == 0) ||
            jinn_http_query_get(req->query, req->query_len, "wait", wait, sizeof wait) >= 0 ||
            (req->body_len > 0 && memmem(req->body, req->body_len, "\"wait\"", 6) != NULL)) {
            timeout += FORWARD_LONG_POLL_MS;
            lr = jinn_malloc(sizeof *lr);
        }
    }
    if (lr != NULL) {
        lr->req = req;
        uv_timer_init(api->loop, &lr->timer);
        lr->timer.data = lr;
        uv_timer_start(&lr->timer, long_relay_tick, RELAY_POLL_MS, RELAY_POLL_MS);
        rv = jinn_fetch(api->loop, leader_api, req->msg.method, req->msg.target,
                        req->msg.target_len, (const char *)headers.data, req->body,
                        req->body_len, timeout, long_forwarded, lr);
        if (rv != 0) {
            uv_close((uv_handle_t *)&lr->timer, long_relay_closed);
        }
    } else {
        rv = jinn_fetch(api->loop, leader_api, req->msg.method, req->msg.target,
                        req->msg.target_len, (const char *)headers.data, req->body,
                        req->body_len, timeout, forwarded, req);
    }
    jinn_wbuf_free(&headers);
    if (rv != 0) {
        api->forwards_failed++;
        jinn_http_reply_error(req, rv, NULL);
    }
}

/* Headers read as one value: the handlers look at the first only, so a
 * second one (a second fence, a second If-Match) would be silently ignored
 * and a write the client meant to guard would be applied. Returns the name
 * of one that is repeated, or NULL. */
static const char *repeated_header(const struct jinn_http_msg *msg)
{
    static const char *const single[] = {"x-jinn-fence", "if-match", "if-none-match",
                                         "idempotency-key", "content-type", "x-jinn-min-index",
                                         "x-jinn-signature", "x-jinn-key"};
    for (size_t k = 0; k < sizeof single / sizeof single[0]; k++) {
        size_t len = strlen(single[k]);
        unsigned seen = 0;
        for (unsigned i = 0; i < msg->n_headers; i++) {
            if (msg->headers[i].name_len == len &&
                strncasecmp(msg->headers[i].name, single[k], len) == 0 && ++seen > 1) {
                return single[k];
            }
        }
    }
    return NULL;
}

/* ---- limits (limit.h) ---------------------------------------------------- */

/* The IPv4 address before ":port" (after "http://" when given), 0 if none. */
static uint32_t host_ip(const char *text)
{
    char host[INET_ADDRSTRLEN];
    const char *colon;
    struct in_addr a;
    size_t len;

    if (strncmp(text, "http://", 7) == 0) {
        text += 7;
    }
    colon = strchr(text, ':');
    len = colon != NULL ? (size_t)(colon - text) : strlen(text);
    if (len == 0 || len >= sizeof host) {
        return 0;
    }
    memcpy(host, text, len);
    host[len] = '\0';
    return inet_pton(AF_INET, host, &a) == 1 ? ntohl(a.s_addr) : 0;
}

bool jinn_api_is_peer_ip(void *data, uint32_t ip)
{
    struct jinn_api *api = data;
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);

    for (unsigned i = 0; i < api->cfg->n_peers; i++) {
        if (host_ip(api->cfg->peers[i].address) == ip) {
            return true;
        }
    }
    if (fsm != NULL) {
        for (unsigned i = 0; i < fsm->nodes.n; i++) {
            if (host_ip(fsm->nodes.items[i].api) == ip) {
                return true;
            }
        }
    }
    return false;
}

static void limit_done(void *arg)
{
    jinn_limit_request_end(NULL, arg);
}

/* Counts req against its token's rate and concurrency; answers 429 with
 * Retry-After beyond them. Peers (forwarded requests, announcements) are
 * not limited: the node that took the client's request counted it. Health
 * probes are not limited either. */
static bool limits_or_reply(struct jinn_api *api, struct jinn_http_request *req)
{
    /* Counted by token name (a function's host calls: its deployer's);
     * without a token (auth off) every client is "anonymous". Admin
     * tokens and proven peers may use the capacity kept for them. A peer
     * is proven by its client certificate; only where nothing can be
     * proven (no tokens, no https) does a member's address stand for it,
     * so that with auth on a client on a member's host is limited like
     * any other. */
    bool auth_on = jinn_auth_enabled(api);
    const char *token = api->auth_name != NULL ? api->auth_name : "anonymous";
    bool peer = jinn_http_from_peer(req) ||
                (!auth_on && api->cfg->http_tls_cert == NULL &&
                 jinn_limit_is_peer(api->limit, req->client_ip));
    bool privileged =
        peer || (auth_on && jinn_api_auth_allows(api, JINN_AUTH_CLUSTER, "", 0, JINN_AUTH_ADMIN));
    struct jinn_limit_token *ticket;
    unsigned retry_s;
    int rv;

    if (strcmp(req->msg.method, "GET") == 0 &&
        ((req->path_len == 8 && memcmp(req->path, "/healthz", 8) == 0) ||
         (req->path_len == 7 && memcmp(req->path, "/readyz", 7) == 0))) {
        return true;
    }
    rv = jinn_limit_request_begin(api->limit, token, uv_now(api->loop), privileged, &ticket,
                                  &retry_s);
    if (rv == JINN_ETOOMANY) {
        char value[16];
        snprintf(value, sizeof value, "%u", retry_s);
        jinn_http_add_header(req, "Retry-After", value);
        jinn_http_reply_error(req, rv,
                              "this token is over its request limit (limit_rate, "
                              "limit_concurrent); retry after Retry-After seconds");
        return false;
    }
    if (rv != 0) {
        jinn_http_reply_error(req, rv, NULL);
        return false;
    }
    if (ticket != NULL) {
        req->done = limit_done;
        req->done_arg = ticket;
    }
    return true;
}

/* The route's scope check: the resource name from the captured segments
 * (kv: "NS/KEY"; a KV listing: "NS/" + its prefix). False when it has
 * replied 403. */
static bool route_allowed(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route *r, const struct jinn_route_args *args)
{
    char name[2 * JINN_ROUTE_ARG_MAX + 2];
    size_t len = 0;
    if (api->auth_all) {
        return true;
    }
    if (args->n > 0) {
        memcpy(name, args->arg[0], args->len[0]);
        len = args->len[0];
    }
    if (r->kind == JINN_AUTH_KV && args->n > 0) {
        name[len++] = '/';
        if (args->n > 1) {
            memcpy(name + len, args->arg[1], args->len[1]);
            len += args->len[1];
        } else {
            long n = jinn_http_query_get(req->query, req->query_len, "prefix", name + len,
                                         sizeof name - len);
            len += n > 0 ? (size_t)n : 0;
        }
    }
    if (!jinn_api_auth_or_reply(api, req, r->kind, name, len, r->actions,
                                (r->flags & JINN_ROUTE_LIST) != 0)) {
        return false;
    }
    {
        /* A fenced write reads the fence lock's state: the token must be
         * allowed that lock too (or a 409 would tell about another's). */
        const struct jinn_http_header *h = jinn_http_header_find(&req->msg, "x-jinn-fence");
        const char *colon = h != NULL && h->value_len ? memrchr(h->value, ':', h->value_len)
                                                      : NULL;
        if (colon != NULL &&
            !jinn_api_auth_or_reply(api, req, JINN_AUTH_LOCK, h->value,
                                    (size_t)(colon - h->value), JINN_AUTH_HOLD, false)) {
            return false;
        }
    }
    return true;
}

static void handle(struct jinn_api *api, struct jinn_http_request *req);

/* Whether req may use what only nodes use: /v1/internal/... and the
 * forwarding headers. Enforced when peers can prove who they are (http_tls
 * and cluster_tls both configured). */
static bool peer_allowed(const struct jinn_api *api, const struct jinn_http_request *req)
{
    static const char internal[] = "/v1/internal/";
    bool node_only = (req->path_len >= sizeof internal - 1 &&
                      memcmp(req->path, internal, sizeof internal - 1) == 0) ||
                     jinn_http_header_find(&req->msg, FORWARDED_HEADER) != NULL ||
                     jinn_http_header_find(&req->msg, CLUSTER_HEADER) != NULL;
    if (!node_only || api->cfg->http_tls_cert == NULL || !jinn_tls_peer_ca_set()) {
        return true;
    }
    return jinn_http_from_peer(req);
}

static void reply_not_peer(struct jinn_http_request *req)
{
    jinn_http_reply_json(req, 403,
                         json_pack("{s:s, s:s}", "error", "forbidden", "message",
                                   "internal endpoint: only cluster members (a client "
                                   "certificate signed by the cluster CA) may call it"));
}

bool jinn_api_limits_unknown_or_reply(struct jinn_api *api, struct jinn_http_request *req)
{
    bool ok;
    if (api->limit == NULL) {
        return true;
    }
    api->auth_name = "-unauthenticated"; /* not a token name: its own bucket */
    api->auth_all = false;                /* nobody authenticated: not privileged */
    ok = limits_or_reply(api, req);
    api->auth_name = NULL;
    api->auth_all = true;
    return ok;
}

void jinn_api_handle(void *data, struct jinn_http_request *req)
{
    struct jinn_api *api = data;
    bool public_path = (req->path_len == 8 && memcmp(req->path, "/healthz", 8) == 0) ||
                       (req->path_len == 7 && memcmp(req->path, "/readyz", 7) == 0);
    /* Peer-only endpoints and headers first: a credential this node does
     * not know yet is forwarded by auth_begin over this node's own
     * (peer) connection, which must not launder a client into a peer. */
    if (!peer_allowed(api, req)) {
        reply_not_peer(req);
        return;
    }
    if (jinn_api_auth_begin(api, req, public_path)) {
        handle(api, req);
    }
    jinn_api_auth_end(api);
}

static void handle(struct jinn_api *api, struct jinn_http_request *req)
{
    struct jinn_route_args args;
    bool path_known = false;
    const struct jinn_http_header *cluster = jinn_http_header_find(&req->msg, CLUSTER_HEADER);
    const char *repeated = repeated_header(&req->msg);

    if (repeated != NULL) {
        char msg[96];
        snprintf(msg, sizeof msg, "header '%s' given more than once", repeated);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return;
    }

    /* Internal endpoints and node-to-node markers: with http_tls and
     * cluster_tls, only a client whose certificate the cluster CA signed
     * (a member, or this node calling itself) gets past here. */
    if (!peer_allowed(api, req)) {
        reply_not_peer(req);
        return;
    }

    /* A forward or announcement from a node of another cluster (or one that
     * does not say) never reaches a handler. */
    if (cluster != NULL || jinn_http_header_find(&req->msg, FORWARDED_HEADER) != NULL) {
        char ours[20];
        snprintf(ours, sizeof ours, "%016" PRIx64, jinn_node_cluster_id(api->node));
        if (cluster == NULL || cluster->value_len != 16 ||
            memcmp(cluster->value, ours, 16) != 0) {
            jinn_http_reply_error(req, JINN_ECONFLICT,
                                  "forwarded from a node of another cluster (X-Jinn-Cluster)");
            return;
        }
    }

    if (api->limit != NULL && !limits_or_reply(api, req)) {
        return;
    }

    /* Functions take any method, before the route table. */
    if (jinn_api_invoke_maybe(api, req)) {
        return;
    }

    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct jinn_route *r = &routes[i];
        int m = match(r->pattern, req->path, req->path_len, &args);
        if (m < 0) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  m == -2 ? "a path segment is too long (keys: 1-1024 bytes)"
                                          : "bad percent-encoding in path");
            return;
        }
        if (m == 0) {
            continue;
        }
        path_known = true;
        if (strcmp(r->method, req->msg.method) != 0) {
            continue;
        }
        if (!route_allowed(api, req, r, &args)) {
            return;
        }
        if ((r->flags & JINN_ROUTE_LEADER) && !jinn_node_is_leader(api->node)) {
            jinn_api_forward_or_reply(api, req);
            return;
        }
        r->fn(api, req, &args);
        return;
    }
    jinn_http_reply_error(req, path_known ? JINN_EMETHOD : JINN_ENOTFOUND, NULL);
}

/* ---- helpers ------------------------------------------------------------- */

json_t *jinn_api_body_json_or_reply(struct jinn_http_request *req)
{
    json_error_t jerr;
    char msg[256];
    json_t *obj = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);

    if (obj == NULL) {
        snprintf(msg, sizeof msg, "invalid JSON body: %s", jerr.text);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        jinn_http_reply_error(req, JINN_EINVAL, "the JSON body must be an object");
        return NULL;
    }
    return obj;
}

struct pending_commit {
    struct jinn_api *api;
    struct jinn_http_request *req;
    jinn_api_commit_fn reply;
};

static void committed(void *data, int code, const struct jinn_result *res)
{
    struct pending_commit *pc = data;
    if (code != JINN_OK) {
        jinn_http_reply_error(pc->req, code == JINN_ETIMEOUT ? JINN_EUNKNOWN : code,
                              code == JINN_ETIMEOUT
                                  ? "not committed within the request timeout; the write "
                                    "may still be applied"
                                  : NULL);
    } else {
        /* Read-your-writes: the index this write was committed at; a read
         * with min_index set to it sees the write, on any node. */
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRIu64, res->index);
        jinn_http_add_header(pc->req, "X-Jinn-Index", buf);
        pc->reply(pc->api, pc->req, res); /* it answers res->code too */
    }
    jinn_free(pc);
}

void jinn_api_propose_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                               struct jinn_cmd *c, jinn_api_commit_fn reply)
{
    struct pending_commit *pc = jinn_malloc(sizeof *pc);
    int rv;

    if (pc == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    pc->api = api;
    pc->req = req;
    pc->reply = reply;
    rv = jinn_node_propose(api->node, c, api->cfg->request_timeout_ms, committed, pc);
    if (rv != JINN_OK) {
        jinn_free(pc);
        jinn_http_reply_error(req, rv, NULL);
    }
}

/* ---- self-announcement --------------------------------------------------- */

static void announced(void *data, int code, const struct jinn_http_msg *head, const char *body,
                      size_t body_len)
{
    struct jinn_api *api = data;
    (void)body;
    (void)body_len;
    api->announcing = false;
    if (code != JINN_OK || head->status != 200) {
        jinn_debug("announce to leader failed (%s, status %d)", jinn_error_name(code),
                   head ? head->status : 0);
    }
}

void jinn_api_announce(void *data, const char *leader_api)
{
    struct jinn_api *api = data;
    struct jinn_node_status st;
    char url[320], headers[256], auth[160];
    char *body;
    json_t *obj;
    int rv;

    if (api->announcing) {
        return;
    }
    jinn_node_status(api->node, &st);
    if (api->cfg->http_advertise != NULL) {
        snprintf(url, sizeof url, "%s", api->cfg->http_advertise);
    } else {
        snprintf(url, sizeof url, "http://%s", api->cfg->http_listen);
    }
    obj = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)st.id, "name", st.name, "api", url);
    body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (body == NULL) {
        return;
    }
    jinn_api_auth_internal_header(api, auth, sizeof auth);
    snprintf(headers, sizeof headers,
             "Content-Type: application/json\r\n" CLUSTER_HEADER ": %016" PRIx64 "\r\n%s",
             st.cluster_id, auth);
    rv = jinn_fetch(api->loop, leader_api, "POST", "/v1/internal/nodes", 18, headers, body,
                    strlen(body),
                    api->cfg->request_timeout_ms, announced, api);
    jinn_free(body);
    api->announcing = rv == 0;
}

/* ---- reads ---------------------------------------------------------------- */

void jinn_api_freshness(struct jinn_api *api, struct jinn_http_request *req, bool linearizable)
{
    struct jinn_node_status st;
    char buf[32];
    jinn_node_status(api->node, &st);
    snprintf(buf, sizeof buf, "%" PRIu64,
             st.applied_index > api->applied_seen ? st.applied_index : api->applied_seen);
    jinn_http_add_header(req, "X-Jinn-Applied-Index", buf);
    snprintf(buf, sizeof buf, "%" PRId64, st.leader_contact_ms);
    jinn_http_add_header(req, "X-Jinn-Leader-Contact-Ms", buf);
    jinn_http_add_header(req, "X-Jinn-Consistency", linearizable ? "linearizable" : "stale");
}

struct pending_read {
    struct jinn_api *api;
    struct jinn_http_request *req;
    jinn_api_read_fn fn;
};

static void serve_at_index(struct jinn_api *api, struct jinn_http_request *req,
                           bool linearizable, jinn_api_read_fn fn);

static void linearized(void *data, int code)
{
    struct pending_read *pr = data;
    if (code != JINN_OK) {
        jinn_http_reply_error(pr->req, code == JINN_EUNKNOWN ? JINN_ENOLEADER : code,
                              "leadership could not be confirmed; retry");
    } else {
        serve_at_index(pr->api, pr->req, true, pr->fn);
    }
    jinn_free(pr);
}

/* ---- min_index: reads that wait until this node applied an index ------- */

#define INDEX_WAITS_MAX 4096

struct jinn_index_wait {
    struct jinn_api *api;
    struct jinn_http_request *req;
    jinn_api_read_fn fn;
    bool linearizable;
    bool raw; /* fn adds its own freshness headers */
    uint64_t min;
    uv_timer_t timer;
    struct jinn_index_wait *prev, *next;
};

static void index_wait_closed(uv_handle_t *h) { jinn_free(h->data); }

static void index_unpark(struct jinn_index_wait *w)
{
    struct jinn_api *api = w->api;
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        api->index_waits = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    api->n_index_waits--;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, index_wait_closed);
}

static void index_wait_timeout(uv_timer_t *t)
{
    struct jinn_index_wait *w = t->data;
    char msg[128];
    snprintf(msg, sizeof msg,
             "this node has not applied index %" PRIu64 " within the request timeout",
             w->min);
    jinn_http_reply_error(w->req, JINN_ESTALE, msg);
    index_unpark(w);
}

static uint64_t applied_index(struct jinn_api *api)
{
    struct jinn_node_status st;
    jinn_node_status(api->node, &st);
    return st.applied_index > api->applied_seen ? st.applied_index : api->applied_seen;
}

static void serve(struct jinn_api *api, struct jinn_http_request *req, bool linearizable,
                  jinn_api_read_fn fn)
{
    jinn_api_freshness(api, req, linearizable);
    fn(api, req);
}

void jinn_api_index_applied(struct jinn_api *api, uint64_t index)
{
    api->applied_seen = index; /* this hook runs with index applied */
    for (struct jinn_index_wait *w = api->index_waits, *next; w != NULL; w = next) {
        next = w->next;
        if (index >= w->min) {
            struct jinn_http_request *req = w->req;
            jinn_api_read_fn fn = w->fn;
            bool lin = w->linearizable, raw = w->raw;
            index_unpark(w);
            if (raw) {
                fn(api, req);
            } else {
                serve(api, req, lin, fn);
            }
        }
    }
}

void jinn_api_index_stop(struct jinn_api *api)
{
    while (api->index_waits != NULL) {
        jinn_http_reply_error(api->index_waits->req, JINN_ESHUTDOWN, NULL);
        index_unpark(api->index_waits);
    }
}

/* How many query parameters are named name (a repeat is refused, never
 * silently read as its first). */
static unsigned query_count(const char *query, size_t query_len, const char *name)
{
    size_t name_len = strlen(name);
    unsigned n = 0;
    for (const char *p = query, *end = query + query_len; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == name_len && strncmp(p, name, name_len) == 0) {
            n++;
        }
        p = pe + 1;
    }
    return n;
}

bool jinn_api_min_index_or_reply(struct jinn_http_request *req, uint64_t *min)
{
    char buf[32];
    const struct jinn_http_header *h;
    long n = jinn_http_query_get(req->query, req->query_len, "min_index", buf, sizeof buf);
    *min = 0;
    /* Two of them (twice in the query, or query and header): which one the
     * client meant is unknown; the first alone may be served too early. */
    if (query_count(req->query, req->query_len, "min_index") > 1 ||
        (n != -1 && jinn_http_header_find(&req->msg, "X-Jinn-Min-Index") != NULL)) {
        jinn_http_reply_error(req, JINN_EINVAL, "min_index given more than once");
        return false;
    }
    /* A value too long or badly escaped (-2) is refused, never read as
     * absent: that served the read at once, before the index asked for. */
    if (n != -1) {
        if (n == -2 || strlen(buf) != (size_t)n || !jinn_api_parse_uint(buf, INT64_MAX, min)) {
            jinn_http_reply_error(req, JINN_EINVAL, "min_index must be a raft index (a number)");
            return false;
        }
        return true;
    }
    h = jinn_http_header_find(&req->msg, "X-Jinn-Min-Index");
    if (h != NULL) {
        if (h->value_len >= sizeof buf) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "X-Jinn-Min-Index must be a raft index (a number)");
            return false;
        }
        memcpy(buf, h->value, h->value_len);
        buf[h->value_len] = '\0';
        if (!jinn_api_parse_uint(buf, INT64_MAX, min)) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "X-Jinn-Min-Index must be a raft index (a number)");
            return false;
        }
    }
    return true;
}

/* Serves the read now when this node applied min_index (from the request),
 * else parks it until it has (bounded by the request timeout: 503
 * too_stale). Never blocks the loop. */
static void park_at_index(struct jinn_api *api, struct jinn_http_request *req,
                          bool linearizable, bool raw, jinn_api_read_fn fn)
{
    uint64_t min;
    struct jinn_index_wait *w;
    if (!jinn_api_min_index_or_reply(req, &min)) {
        return;
    }
    if (min == 0 || min <= applied_index(api)) {
        if (raw) {
            fn(api, req);
        } else {
            serve(api, req, linearizable, fn);
        }
        return;
    }
    if (api->n_index_waits >= INDEX_WAITS_MAX || api->stopping ||
        (w = jinn_calloc(1, sizeof *w)) == NULL) {
        jinn_http_reply_error(req, JINN_EBUSY, "too many reads waiting for min_index");
        return;
    }
    api->n_index_waits++;
    w->api = api;
    w->req = req;
    w->fn = fn;
    w->linearizable = linearizable;
    w->raw = raw;
    w->min = min;
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    w->next = api->index_waits;
    if (api->index_waits) {
        api->index_waits->prev = w;
    }
    api->index_waits = w;
    uv_timer_start(&w->timer, index_wait_timeout, api->cfg->request_timeout_ms, 0);
}

static void serve_at_index(struct jinn_api *api, struct jinn_http_request *req,
                           bool linearizable, jinn_api_read_fn fn)
{
    park_at_index(api, req, linearizable, false, fn);
}

void jinn_api_at_index_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                                jinn_api_read_fn fn)
{
    park_at_index(api, req, false, true, fn);
}

void jinn_api_read_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                            bool linearizable, jinn_api_read_fn fn)
{
    struct pending_read *pr;
    int rv;
    /* A replica found diverged serves nothing from its own state. */
    if (jinn_api_check_diverged(api) && (!linearizable || jinn_node_is_leader(api->node))) {
        jinn_http_reply_error(req, JINN_EDIVERGED, NULL);
        return;
    }
    if (!linearizable) {
        serve_at_index(api, req, false, fn);
        return;
    }
    if (!jinn_node_is_leader(api->node)) {
        jinn_api_forward_or_reply(api, req);
        return;
    }
    pr = jinn_malloc(sizeof *pr);
    if (pr == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    pr->api = api;
    pr->req = req;
    pr->fn = fn;
    rv = jinn_node_linearize(api->node, linearized, pr);
    if (rv != JINN_OK) {
        jinn_free(pr);
        if (rv == JINN_ENOTLEADER) {
            jinn_api_forward_or_reply(api, req);
        } else {
            jinn_http_reply_error(req, rv, NULL);
        }
    }
}

/* ---- parameters ----------------------------------------------------------- */

bool jinn_api_parse_uint(const char *text, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    if (text == NULL || text[0] == '\0') {
        return false;
    }
    for (; text[i] != '\0'; i++) {
        unsigned d = (unsigned)(unsigned char)text[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    if (v > max) {
        return false;
    }
    *out = v;
    return true;
}

bool jinn_api_uint_or_reply(struct jinn_http_request *req, json_t *body, const char *name,
                            uint64_t dflt, uint64_t min, uint64_t max, uint64_t *out)
{
    char buf[32], msg[128];
    bool present;
    if (!jinn_api_param_or_reply(req, body, name, buf, sizeof buf, &present)) {
        return false;
    }
    if (!present) {
        *out = dflt;
        return true;
    }
    if (!jinn_api_parse_uint(buf, max, out) || *out < min) {
        snprintf(msg, sizeof msg, "%s must be a number from %llu to %llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return false;
    }
    return true;
}

bool jinn_api_param_or_reply(struct jinn_http_request *req, json_t *body, const char *name,
                             char *buf, size_t cap, bool *present)
{
    long n = jinn_http_query_get(req->query, req->query_len, name, buf, cap);
    char msg[128];
    *present = false;
    if (n == -2) {
        snprintf(msg, sizeof msg, "bad or too long parameter '%s'", name);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return false;
    }
    if (n >= 0 && strlen(buf) != (size_t)n) {
        /* %00 would silently cut the value short ("n3%00x" naming n3). */
        snprintf(msg, sizeof msg, "parameter '%s' must not contain NUL", name);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return false;
    }
    if (n >= 0) {
        *present = true;
        return true;
    }
    if (body != NULL) {
        json_t *v = json_object_get(body, name);
        if (v == NULL) {
            buf[0] = '\0';
            return true;
        }
        if (json_is_string(v) && json_string_length(v) < cap &&
            strlen(json_string_value(v)) == json_string_length(v)) {
            memcpy(buf, json_string_value(v), json_string_length(v) + 1);
        } else if (json_is_integer(v)) {
            snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        } else {
            snprintf(msg, sizeof msg, "parameter '%s' must be a string or a number", name);
            jinn_http_reply_error(req, JINN_EINVAL, msg);
            return false;
        }
        *present = true;
        return true;
    }
    buf[0] = '\0';
    return true;
}

json_t *jinn_api_optional_body_or_reply(struct jinn_http_request *req, bool *failed)
{
    *failed = false;
    if (req->body_len == 0) {
        return NULL;
    }
    json_t *obj = jinn_api_body_json_or_reply(req);
    *failed = obj == NULL;
    return obj;
}

bool jinn_api_fence_or_reply(struct jinn_http_request *req, struct jinn_slice *fence,
                             uint64_t *token, bool *present)
{
    const struct jinn_http_header *h = jinn_http_header_find(&req->msg, "x-jinn-fence");
    const char *colon;
    size_t name_len;
    *present = false;
    *token = 0;
    if (h == NULL) {
        return true;
    }
    colon = h->value_len ? memrchr(h->value, ':', h->value_len) : NULL;
    name_len = colon ? (size_t)(colon - h->value) : 0;
    if (colon != NULL) {
        size_t digits = h->value_len - name_len - 1;
        for (size_t i = 0; i < digits; i++) {
            char d = colon[1 + i];
            if (d < '0' || d > '9' || *token > (UINT64_MAX - 9) / 10) {
                *token = 0;
                break;
            }
            *token = *token * 10 + (uint64_t)(d - '0');
        }
    }
    if (colon == NULL || name_len == 0 || name_len > JINN_LOCK_NAME_MAX || *token == 0) {
        jinn_http_reply_error(req, JINN_EINVAL, "X-Jinn-Fence must be LOCK:TOKEN, e.g. orders:42");
        return false;
    }
    fence->p = (const uint8_t *)h->value;
    fence->len = name_len;
    *present = true;
    return true;
}
