/* api.h - the HTTP API: one route table, one dispatcher.
 *
 * Every request takes the same path: http.c parses it, jinn_api_handle()
 * finds its route, forwards it to the leader when the route must run there
 * and this node is not the leader, then calls the route's handler. A handler
 * answers with jinn_http_reply*, directly or after its command commits. */
#ifndef JINN_API_H
#define JINN_API_H

#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "node.h"

#define JINN_ROUTE_MAX_ARGS 4
#define JINN_ROUTE_ARG_MAX 1100 /* a decoded path segment (keys: 1024 bytes) */

struct jinn_loopmon;
struct jinn_stream;

struct jinn_api {
    uv_loop_t *loop;
    const struct jinn_config *cfg; /* borrowed */
    struct jinn_node *node;        /* borrowed */
    struct jinn_http_server *http; /* borrowed; NULL until listening */
    bool announcing;               /* one self-announcement in flight at most */
    uint64_t forwards_total, forwards_failed;
    struct jinn_watcher *watchers; /* long-polling KV watches */
    unsigned n_watchers;
    struct jinn_fetcher *fetchers; /* long-polling queue fetches */
    struct jinn_lock_wait *lock_waits; /* acquires waiting in a lock's line */
    unsigned n_lock_waits;
    unsigned n_fetchers;
    uv_timer_t queue_kick; /* wakes fetchers outside raft's apply */
    uv_timer_t watch_kick; /* answers woken watchers left over from a loop turn */
    bool stopping;
    struct jinn_index_wait *index_waits; /* reads waiting for min_index */
    unsigned n_index_waits;
    uint64_t applied_seen; /* the apply hook's index: libraft counts it only after */
    struct jinn_check *check; /* replica checks (api/check.c); NULL once stopped */
    const struct jinn_loopmon *loopmon; /* borrowed; NULL in tests without a daemon */
    struct jinn_fn_validation *fn_validations; /* deploys being checked (api/fn.c) */
    unsigned fn_proposed; /* deploys proposed and not yet answered (api/fn.c) */
    struct jinn_wasm_runner *wasm; /* this node's functions; NULL until wired */
    struct jinn_limit *limit;      /* owned by the daemon; NULL: no limits (tests) */
    /* Scoped tokens (api/auth.c). auth_all/auth_rules: the request being
     * routed, valid only during jinn_api_handle (handlers that filter a
     * listing read them synchronously). */
    const char *auth_bootstrap; /* borrowed (config or environment); NULL: none */
    bool auth_all;
    const struct jinn_auth_rules *auth_rules;
    const char *auth_rules_text; /* canonical, of auth_rules */
    const char *auth_name;       /* the token's name (a function's: its deployer's) */
    bool auth_bootstrapping;
    uv_timer_t auth_timer;
    struct jinn_job_pools *jobs;        /* this node's job worker pools (wasm/jobs.h) */
    struct jinn_stream *stream; /* edge replicas' feed (net/stream.h); NULL: none */
};

#define JINN_API_FETCHERS_MAX 4096

struct jinn_route_args {
    char arg[JINN_ROUTE_MAX_ARGS][JINN_ROUTE_ARG_MAX]; /* percent-decoded */
    size_t len[JINN_ROUTE_MAX_ARGS];
    unsigned n;
};

typedef void (*jinn_route_fn)(struct jinn_api *api, struct jinn_http_request *req,
                              const struct jinn_route_args *args);

enum {
    JINN_ROUTE_LEADER = 1 << 0, /* runs on the leader; followers forward it */
    JINN_ROUTE_LIST = 1 << 1,   /* a listing: the token needs a prefix rule covering it */
};

struct jinn_route {
    const char *method;
    const char *pattern; /* "/v1/x/{}/{+}": {} captures one segment, {+} the rest */
    jinn_route_fn fn;
    unsigned flags;
    /* What a token needs (fsm/auth.h): kind and any one of the actions, on
     * the name in the first captured segment (kv: "NS/KEY"). A row that
     * states no kind needs cluster:admin. */
    unsigned char kind;
    unsigned short actions;
};

void jinn_api_init(struct jinn_api *api, uv_loop_t *loop, const struct jinn_config *cfg,
                   struct jinn_node *node);

/* True when ip (IPv4, host order) is a cluster member's address: a
 * cluster_peers address or a node's announced API URL. data: the api. */
bool jinn_api_is_peer_ip(void *data, uint32_t ip);

/* The jinn_http_handler for the server; data is the struct jinn_api. */
void jinn_api_handle(void *data, struct jinn_http_request *req);

/* The node's announcer: tells the leader our API URL over HTTP. */
void jinn_api_announce(void *data, const char *leader_api);

/* Handlers (api/status.c). */
void jinn_api_status(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args);
void jinn_api_healthz(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
void jinn_api_readyz(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args);
void jinn_api_metrics(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
void jinn_api_node_set(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args);

/* GET /v1/stream (api/stream.c): an edge replica's WebSocket feed. */
void jinn_api_stream(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args);

void jinn_api_kv_put(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args);
void jinn_api_kv_delete(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_kv_get(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args);
void jinn_api_kv_list(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
void jinn_api_lock_acquire(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);
void jinn_api_lock_refresh(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);
void jinn_api_lock_release(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);
void jinn_api_lock_show(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_lock_list(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);

void jinn_api_queue_publish(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args);
void jinn_api_queue_fetch(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args);
void jinn_api_queue_ack(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_queue_nak(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_queue_progress(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args);
void jinn_api_queue_term(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
void jinn_api_queue_requeue(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args);
void jinn_api_queue_drop(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
void jinn_api_queue_stats(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args);
void jinn_api_queue_list(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
void jinn_api_queue_dead(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
/* Jobs (api/jobs.c): WORKERS_<fn> messages and their stored results. */
void jinn_api_job_submit(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
void jinn_api_job_show(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args);
void jinn_api_job_list(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args);
void jinn_api_job_ack_batch(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args);
void jinn_api_job_ack(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
void jinn_api_sql_exec(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args);
void jinn_api_sql_query(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_sql_info(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args);
/* Online backups (api/backup.c): GET /v1/snapshot, GET /v1/sql/{db}/backup. */
void jinn_api_snapshot(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args);
void jinn_api_sql_backup(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
/* Membership (api/cluster.c). */
void jinn_api_members_list(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);
void jinn_api_members_add(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args);
void jinn_api_members_remove(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args);
void jinn_api_members_promote(struct jinn_api *api, struct jinn_http_request *req,
                              const struct jinn_route_args *args);
void jinn_api_members_demote(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args);
void jinn_api_leader_transfer(struct jinn_api *api, struct jinn_http_request *req,
                              const struct jinn_route_args *args);
/* Answers queued queries and closes idle reader connections (shutdown). */
void jinn_api_sql_stop(struct jinn_api *api);
/* Stats object for one queue (metrics and GET /v1/queues). */
struct jinn_queue;
json_t *jinn_api_queue_stats_json(const struct jinn_queue *q);
/* After every applied command: waiting acquires may have been granted. */
void jinn_api_lock_applied(struct jinn_api *api);
/* Answers every waiting acquire (shutdown). */
void jinn_api_lock_stop(struct jinn_api *api);
/* After every applied command: parked fetches may now lease something. */
void jinn_api_queue_applied(struct jinn_api *api);
/* Answers parked fetches and closes the kick timer (shutdown). */
void jinn_api_queue_stop(struct jinn_api *api);

/* Wakes watchers after an applied command (the node's apply hook). */
void jinn_api_kv_applied(void *data, uint64_t index);
/* Answers every pending watch (shutdown). */
void jinn_api_stop(struct jinn_api *api);

/* min_index (read-your-writes): parked reads are served once this node
 * applied their index (called after every applied command), answered 503
 * at shutdown. */
void jinn_api_index_applied(struct jinn_api *api, uint64_t index);
void jinn_api_index_stop(struct jinn_api *api);
/* min_index from the query, else the X-Jinn-Min-Index header; 0 when
 * absent. False when it has replied (400). */
bool jinn_api_min_index_or_reply(struct jinn_http_request *req, uint64_t *min);
/* Replica checks (api/check.c). */
void jinn_api_check_init(struct jinn_api *api);
void jinn_api_check_stop(struct jinn_api *api);
/* After every applied command: digests the state when it was a CHECK. */
void jinn_api_check_applied(struct jinn_api *api, uint64_t index);
/* True once the leader found this node diverged: local reads are refused. */
bool jinn_api_check_diverged(const struct jinn_api *api);
void jinn_api_check_status(const struct jinn_api *api, json_t *status);
struct jinn_wbuf;
void jinn_api_check_metrics(const struct jinn_api *api, struct jinn_wbuf *w);
void jinn_api_check_digest(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);
void jinn_api_check_show(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
void jinn_api_check_start(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args);

/* Functions (api/invoke.c): true when req was a function invocation
 * (/fn/NAME/... or a function's route) and has been answered. */
bool jinn_api_invoke_maybe(struct jinn_api *api, struct jinn_http_request *req);
void jinn_api_fn_logs(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
/* Functions (api/fn.c). */
void jinn_api_fn_deploy(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_fn_list(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
void jinn_api_fn_show(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args);
void jinn_api_fn_delete(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
/* The module signing policy (api/fnpolicy.c). */
void jinn_api_fn_policy_get(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args);
void jinn_api_fn_policy_put(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args);
void jinn_api_fn_module(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args);
void jinn_api_fn_rollback(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args);
/* Removes temporary modules a crash left in data_dir (start). */
void jinn_api_fn_init(struct jinn_api *api);
/* Kills deploy validations in flight (shutdown); their requests get 503. */
void jinn_api_fn_stop(struct jinn_api *api);
/* The http server's body_limit: PUT /v1/functions/{name} takes a module of
 * up to JINN_FN_MODULE_MAX, more than max_body. */
uint64_t jinn_api_body_limit(const struct jinn_http_msg *msg);

/* Shared helpers for handlers. */

/* Reads: fn serves req from local state. Stale: now. Linearizable: on the
 * leader after a shared barrier, relayed from followers. Freshness headers
 * are added either way. Either succeeds or has replied. */
typedef void (*jinn_api_read_fn)(struct jinn_api *api, struct jinn_http_request *req);
void jinn_api_read_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                            bool linearizable, jinn_api_read_fn fn);
void jinn_api_freshness(struct jinn_api *api, struct jinn_http_request *req, bool linearizable);
/* fn(api, req) once this node applied the request's min_index (now when
 * absent); fn adds its own freshness headers. Either runs fn or replies. */
void jinn_api_at_index_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                                jinn_api_read_fn fn);

/* A parameter from the query string, else from the JSON body object (may be
 * NULL): copied into buf as text. False when it has replied (malformed). */
bool jinn_api_param_or_reply(struct jinn_http_request *req, json_t *body, const char *name,
                             char *buf, size_t cap, bool *present);
/* The one strict parser for numeric parameters: 1-20 ASCII digits, no sign,
 * no space, no suffix, no overflow, and at most max. True when valid. */
bool jinn_api_parse_uint(const char *text, uint64_t max, uint64_t *out);
/* A numeric parameter (query, else JSON body; body may be NULL) through
 * jinn_api_parse_uint: dflt when absent; a 400 naming the range [min, max]
 * when malformed, out of range or empty. False when it has replied. */
bool jinn_api_uint_or_reply(struct jinn_http_request *req, json_t *body, const char *name,
                            uint64_t dflt, uint64_t min, uint64_t max, uint64_t *out);
/* The body as a JSON object when there is one (caller decrefs), NULL when
 * empty; *failed (a 400 sent) when it is not a JSON object. */
json_t *jinn_api_optional_body_or_reply(struct jinn_http_request *req, bool *failed);

/* X-Jinn-Fence: LOCK:TOKEN, for writes that must apply only while LOCK is
 * held with TOKEN (checked by the state machine, atomically with the
 * write). fence borrows from the header. False when it has replied (400). */
bool jinn_api_fence_or_reply(struct jinn_http_request *req, struct jinn_slice *fence,
                             uint64_t *token, bool *present);

/* Relays req to the leader, or has replied with why it could not. */
void jinn_api_forward_or_reply(struct jinn_api *api, struct jinn_http_request *req);

/* Parses the body as a JSON object. Returns it (caller decrefs) or NULL
 * with a 400 already sent. */
json_t *jinn_api_body_json_or_reply(struct jinn_http_request *req);

/* Proposes c and answers req when it commits: reply(api, req, res) once
 * applied (res->code is the command's own outcome, which reply answers),
 * the matching error if it never commits. Either succeeds or has replied. */
typedef void (*jinn_api_commit_fn)(struct jinn_api *api, struct jinn_http_request *req,
                                   const struct jinn_result *res);
void jinn_api_propose_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                               struct jinn_cmd *c, jinn_api_commit_fn reply);

/* Scoped tokens (api/auth.c). */
struct jinn_auth_rules;
void jinn_api_auth_init(struct jinn_api *api);
/* True when requests need a token: a token was ever created, or a
 * bootstrap token is configured. */
bool jinn_auth_enabled(struct jinn_api *api);
/* Authenticates req (once, in the router). False when it has replied 401. */
bool jinn_api_auth_begin(struct jinn_api *api, struct jinn_http_request *req, bool public_path);
/* Counts a request with a credential this node does not know against the
 * limits (bucket "-unauthenticated") before it is forwarded; false when it
 * replied 429. */
bool jinn_api_limits_unknown_or_reply(struct jinn_api *api, struct jinn_http_request *req);
void jinn_api_auth_end(struct jinn_api *api);
/* During routing: does the request's token allow actions on name? */
bool jinn_api_auth_allows(const struct jinn_api *api, int kind, const char *name, size_t len,
                          unsigned actions);
/* The same, replying 403 when not (listing: a prefix rule must cover name). */
bool jinn_api_auth_or_reply(struct jinn_api *api, struct jinn_http_request *req, int kind,
                            const char *name, size_t len, unsigned actions, bool listing);
/* "Authorization: Bearer jinn-node.KEY\r\n" for a node's own calls to
 * another node, or "" while auth was never enabled. Returns its length. */
size_t jinn_api_auth_internal_header(struct jinn_api *api, char *buf, size_t cap);
/* "Authorization: Bearer jinn-fn.NAME.MAC\r\n" for function fn's host
 * calls (the scope its deployer gave it), or "" while auth was never on. */
size_t jinn_api_auth_fn_header(struct jinn_api *api, const char *fn, char *buf, size_t cap);
/* The router, on the leader, before a deploy's handler: records the
 * deploying credential's rules as function fn's scope. */
/* The scope a deploy by the current request's credential gives its
 * function: captured in the deploy handler (while the request's
 * credential is known), proposed right after the deploy's FN_DEPLOY by
 * jinn_api_auth_scope_propose (adjacent entries; apply takes it only
 * when that deploy applied: see fsm.c). rules NULL: auth is off. */
struct jinn_api_fn_scope {
    char deployer[65]; /* JINN_AUTH_NAME_MAX + 1; "": an admin credential */
    char *rules;       /* canonical rule text, owned */
};
void jinn_api_auth_scope_capture(struct jinn_api *api, struct jinn_api_fn_scope *out);
void jinn_api_auth_scope_propose(struct jinn_api *api, const char *fn,
                                 const struct jinn_api_fn_scope *s);
void jinn_api_token_create(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);
void jinn_api_token_list(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args);
void jinn_api_token_revoke(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args);

/* The publish path of POST /v1/queues/{q} (Idempotency-Key check, the
 * queue's configured limits), answered by reply: job submission uses it
 * too (api/queue.c). queue must be a valid queue name. */
void jinn_api_queue_publish_to(struct jinn_api *api, struct jinn_http_request *req,
                               const char *queue, size_t len, jinn_api_commit_fn reply);
/* The error reply of a queue command's outcome (409 not your lease, ...). */
void jinn_api_queue_reply_code(struct jinn_http_request *req, int code);

#endif
