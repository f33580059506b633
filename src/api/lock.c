/* lock.c - the distributed mutex API (seed §3: LEADER / FOLLOWER).
 *
 * Acquire, refresh and release are single commands through the log, so the
 * decision is atomic and the same on every replica; locks are CP whatever
 * the namespace policies say. Reads of lock state are linearizable. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"

#define LOCK_DEFAULT_TTL_MS 30000
#define LOCK_LIST_MAX 1000
#define LOCK_WAIT_MAX_MS 300000
#define LOCK_WAITS_MAX 4096

/* An acquire waiting in a lock's line (the line itself is replicated). */
struct jinn_lock_wait {
    struct jinn_api *api;
    struct jinn_http_request *req;
    struct jinn_lock_wait *prev, *next;
    uv_timer_t timer;
    char name[JINN_LOCK_NAME_MAX + 1];
    size_t name_len;
    uint64_t id; /* raft index of the acquire */
    uint64_t deadline; /* loop ms: gives up then */
    uint64_t granted;  /* token of a grant seen while withdrawing */
    bool withdrawing;  /* its WITHDRAW is in flight; answered by it */
    const char *why;   /* static text: why it gave up */
};

static bool name_or_reply(struct jinn_http_request *req, const struct jinn_route_args *args)
{
    if (args->len[0] == 0 || args->len[0] > JINN_LOCK_NAME_MAX ||
        !jinn_utf8_valid(args->arg[0], args->len[0])) {
        jinn_http_reply_error(req, JINN_EINVAL, "lock name must be 1-256 bytes of UTF-8");
        return false;
    }
    return true;
}

static bool ttl_or_reply(struct jinn_api *api, struct jinn_http_request *req, json_t *body,
                         uint64_t dflt, uint64_t *ttl)
{
    char buf[32], msg[128];
    bool present;
    if (!jinn_api_param_or_reply(req, body, "ttl", buf, sizeof buf, &present)) {
        return false;
    }
    *ttl = dflt;
    if (present && (jinn_parse_duration(buf, ttl) != 0 || *ttl == 0 ||
                    *ttl > api->cfg->lock_max_ttl_ms)) {
        snprintf(msg, sizeof msg, "ttl must be a duration from 1ms to %llums (lock_max_ttl)",
                 (unsigned long long)api->cfg->lock_max_ttl_ms);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return false;
    }
    return true;
}

static bool token_or_reply(struct jinn_http_request *req, json_t *body, uint64_t *token)
{
    char buf[32];
    bool present;
    if (!jinn_api_param_or_reply(req, body, "token", buf, sizeof buf, &present)) {
        return false;
    }
    *token = 0;
    if (!present || !jinn_api_parse_uint(buf, INT64_MAX, token) || *token == 0) {
        jinn_http_reply_error(req, JINN_EINVAL, "token must be the fencing token (a number)");
        return false;
    }
    return true;
}

static json_t *lock_json(const struct jinn_lock *k, uint64_t now, bool with_token)
{
    json_t *obj = json_pack("{s:s%, s:s%, s:I}", "name", k->name, k->name_len, "owner",
                            k->owner, k->owner_len, "expires_in_ms",
                            (json_int_t)(k->expires_at > now ? k->expires_at - now : 0));
    if (obj != NULL && with_token) {
        json_object_set_new(obj, "token", json_integer((json_int_t)k->token));
    }
    return obj;
}

/* After the command applied: answer from the state it left. */
static void park(struct jinn_api *api, struct jinn_http_request *req, const char *name,
                 size_t len, uint64_t id, uint64_t wait_ms);

static uint64_t wait_of(struct jinn_http_request *req)
{
    /* The wait was validated by the handler; re-read it from the request. */
    char buf[32];
    uint64_t ms = 0;
    json_t *body = req->body_len ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
    bool present;
    if (jinn_http_query_get(req->query, req->query_len, "wait", buf, sizeof buf) >= 0) {
        present = true;
    } else {
        json_t *v = json_object_get(body, "wait");
        present = json_is_string(v) && json_string_length(v) < sizeof buf;
        if (present) {
            memcpy(buf, json_string_value(v), json_string_length(v) + 1);
        }
    }
    json_decref(body);
    if (!present || jinn_parse_duration(buf, &ms) != 0) {
        ms = 0;
    }
    return ms;
}

static void lock_committed(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_result *res)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct jinn_route_args args;
    const struct jinn_lock *k;
    json_t *obj;
    const char *p = req->path + strlen("/v1/locks/");
    const char *end = memchr(p, '/', req->path_len - strlen("/v1/locks/"));
    size_t raw = end ? (size_t)(end - p) : req->path_len - strlen("/v1/locks/");
    long n = jinn_http_unescape(p, raw, args.arg[0], JINN_ROUTE_ARG_MAX, false);

    bool acquire = strcmp(req->msg.method, "POST") == 0 &&
                   !(req->path_len >= 8 && memcmp(req->path + req->path_len - 8, "/refresh", 8) == 0);

    k = n > 0 ? jinn_locks_get(&fsm->locks, args.arg[0], (size_t)n) : NULL;
    if (res->code == JINN_EQUEUED && n > 0) {
        park(api, req, args.arg[0], (size_t)n, res->index, wait_of(req));
        return;
    }
    if (res->code == JINN_OK && strcmp(req->msg.method, "DELETE") == 0) {
        jinn_http_reply_json(req, 200, json_pack("{s:b}", "released", 1));
        return;
    }
    if (res->code == JINN_OK && k != NULL) {
        obj = lock_json(k, fsm->time_ms, true);
        json_object_set_new(obj, "state", json_string("leader"));
        if (acquire) {
            json_object_set_new(obj, "granted", json_true());
        }
        jinn_http_reply_json(req, 200, obj);
        return;
    }
    if (res->code == JINN_ECONFLICT) {
        if (k != NULL) {
            obj = lock_json(k, jinn_node_time_now(api->node), false);
        } else {
            obj = json_object();
        }
        json_object_set_new(obj, "state", json_string("follower"));
        if (acquire) {
            json_object_set_new(obj, "granted", json_false());
        }
        json_object_set_new(obj, "error", json_string(jinn_error_name(JINN_ECONFLICT)));
        json_object_set_new(obj, "message",
                            json_string(acquire ? "held by another owner"
                                                : "not the current token: the lock expired "
                                                  "or was taken over"));
        jinn_http_reply_json(req, 409, obj);
        return;
    }
    jinn_http_reply_error(req, res->code == JINN_OK ? JINN_EINTERNAL : res->code, NULL);
}

/* A refused acquire need not cost a log entry: when the leader's state
 * shows the lock held, a shared read barrier confirms that state is current
 * and the refusal is answered from it. Only attempts that may succeed go
 * through the log, so a crowd contending for one lock does not drown it. */
struct pending_acquire {
    struct jinn_api *api;
    struct jinn_http_request *req;
    struct jinn_cmd cmd;
    char name[JINN_LOCK_NAME_MAX];
    char owner[JINN_LOCK_OWNER_MAX + 1];
};

static const struct jinn_lock *held(struct jinn_api *api, const struct jinn_cmd *c)
{
    return jinn_locks_get(&jinn_node_fsm(api->node)->locks, (const char *)c->lock.name.p,
                          c->lock.name.len);
}

static void acquire_confirmed(void *data, int code)
{
    struct pending_acquire *pa = data;
    if (code != JINN_OK) {
        jinn_http_reply_error(pa->req, code == JINN_EUNKNOWN ? JINN_ENOLEADER : code,
                              "leadership could not be confirmed; retry");
    } else if (held(pa->api, &pa->cmd) != NULL) {
        struct jinn_result refused = {JINN_ECONFLICT, 0, 0};
        lock_committed(pa->api, pa->req, &refused);
    } else {
        jinn_api_propose_or_reply(pa->api, pa->req, &pa->cmd, lock_committed);
    }
    jinn_free(pa);
}

static void acquire_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_cmd *c)
{
    struct pending_acquire *pa;
    int rv;
    /* A waiting acquire must join the line in the log, held or not. */
    if (held(api, c) == NULL || c->lock.wait_ms > 0) {
        jinn_api_propose_or_reply(api, req, (struct jinn_cmd *)c, lock_committed);
        return;
    }
    pa = jinn_malloc(sizeof *pa);
    if (pa == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    pa->api = api;
    pa->req = req;
    pa->cmd = *c;
    memcpy(pa->name, c->lock.name.p, c->lock.name.len);
    memcpy(pa->owner, c->lock.owner.p, c->lock.owner.len);
    pa->cmd.lock.name.p = (const uint8_t *)pa->name;
    pa->cmd.lock.owner.p = (const uint8_t *)pa->owner;
    rv = jinn_node_linearize(api->node, acquire_confirmed, pa);
    if (rv != JINN_OK) {
        jinn_free(pa);
        jinn_http_reply_error(req, rv, NULL);
    }
}

/* Builds the command for an acquire, refresh or release from the path,
 * query and optional JSON body. Either succeeds or has replied. owner must
 * hold JINN_LOCK_OWNER_MAX + 1 bytes; c borrows from it and from args. */
static bool command_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args, uint8_t type,
                             struct jinn_cmd *c, char *owner)
{
    bool present = false, failed, ok;
    json_t *body;

    memset(c, 0, sizeof *c);
    c->type = type;
    if (!name_or_reply(req, args)) {
        return false;
    }
    body = jinn_api_optional_body_or_reply(req, &failed);
    if (failed) {
        return false;
    }
    if (type == JINN_CMD_LOCK_ACQUIRE) {
        char wait[32];
        bool has_wait;
        ok = jinn_api_param_or_reply(req, body, "owner", owner, JINN_LOCK_OWNER_MAX + 1,
                                     &present) &&
             ttl_or_reply(api, req, body, LOCK_DEFAULT_TTL_MS, &c->lock.ttl_ms) &&
             jinn_api_param_or_reply(req, body, "wait", wait, sizeof wait, &has_wait);
        if (ok && has_wait &&
            (jinn_parse_duration(wait, &c->lock.wait_ms) != 0 ||
             c->lock.wait_ms > LOCK_WAIT_MAX_MS)) {
            jinn_http_reply_error(req, JINN_EINVAL, "wait must be a duration up to 5m");
            ok = false;
        }
    } else {
        ok = token_or_reply(req, body, &c->lock.token) &&
             (type != JINN_CMD_LOCK_REFRESH || ttl_or_reply(api, req, body, 0, &c->lock.ttl_ms));
    }
    json_decref(body);
    if (!ok) {
        return false;
    }
    if (type == JINN_CMD_LOCK_ACQUIRE) {
        if (!present || owner[0] == '\0' || !jinn_utf8_valid(owner, strlen(owner))) {
            jinn_http_reply_error(req, JINN_EINVAL, "owner is required (1-256 bytes of UTF-8)");
            return false;
        }
        c->lock.owner.p = (const uint8_t *)owner;
        c->lock.owner.len = strlen(owner);
    }
    c->lock.name.p = (const uint8_t *)args->arg[0];
    c->lock.name.len = args->len[0];
    return true;
}

void jinn_api_lock_acquire(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    char owner[JINN_LOCK_OWNER_MAX + 1];
    struct jinn_cmd c;
    if (command_or_reply(api, req, args, JINN_CMD_LOCK_ACQUIRE, &c, owner)) {
        acquire_or_reply(api, req, &c);
    }
}

static void token_command(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args, uint8_t type)
{
    char owner[JINN_LOCK_OWNER_MAX + 1];
    struct jinn_cmd c;
    if (command_or_reply(api, req, args, type, &c, owner)) {
        jinn_api_propose_or_reply(api, req, &c, lock_committed);
    }
}

void jinn_api_lock_refresh(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    token_command(api, req, args, JINN_CMD_LOCK_REFRESH);
}

void jinn_api_lock_release(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    token_command(api, req, args, JINN_CMD_LOCK_RELEASE);
}

static void show_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char name[JINN_ROUTE_ARG_MAX];
    const char *p = req->path + strlen("/v1/locks/");
    long n = jinn_http_unescape(p, req->path_len - strlen("/v1/locks/"), name, sizeof name,
                                false);
    const struct jinn_lock *k = n > 0 ? jinn_locks_get(&fsm->locks, name, (size_t)n) : NULL;
    json_t *obj;
    if (k == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "the lock is not held");
        return;
    }
    obj = lock_json(k, jinn_node_time_now(api->node), true);
    json_object_set_new(obj, "waiting",
                        json_integer((json_int_t)jinn_locks_line_length(&fsm->locks, name,
                                                                        (size_t)n)));
    jinn_http_reply_json(req, 200, obj);
}

void jinn_api_lock_show(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    if (name_or_reply(req, args)) {
        jinn_api_read_or_reply(api, req, true, show_now);
    }
}

static void list_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    json_t *locks = json_array();
    unsigned n = 0;
    bool more = false;
    for (const struct jinn_lock *k = jinn_locks_next(&fsm->locks, NULL); k && locks;
         k = jinn_locks_next(&fsm->locks, k)) {
        if (n++ == LOCK_LIST_MAX) {
            more = true;
            break;
        }
        json_array_append_new(locks, lock_json(k, jinn_node_time_now(api->node), true));
    }
    jinn_http_reply_json(req, 200, json_pack("{s:o, s:b}", "locks", locks, "more", more));
}

void jinn_api_lock_list(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    (void)args;
    jinn_api_read_or_reply(api, req, true, list_now);
}

/* ---- waiting acquires ------------------------------------------------------- */

/* How often a parked acquire checks that its client is still there. */
#define LOCK_WAIT_POLL_MS 100

static void wait_closed(uv_handle_t *h) { jinn_free(h->data); }

static void unpark(struct jinn_lock_wait *w)
{
    struct jinn_api *api = w->api;
    if (w->prev) {
        w->prev->next = w->next;
    } else {
        api->lock_waits = w->next;
    }
    if (w->next) {
        w->next->prev = w->prev;
    }
    api->n_lock_waits--;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, wait_closed);
}

static void refuse(struct jinn_http_request *req, const char *why)
{
    json_t *obj = json_pack("{s:s, s:b, s:s, s:s}", "state", "follower", "granted", 0, "error",
                            jinn_error_name(JINN_ECONFLICT), "message", why);
    jinn_http_reply_json(req, 409, obj);
}

static void grant(struct jinn_api *api, struct jinn_http_request *req, const char *name,
                  size_t len, uint64_t token)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    const struct jinn_lock *k = jinn_locks_get(&fsm->locks, name, len);
    json_t *obj;
    if (k == NULL || k->token != token) {
        refuse(req, "the lock was granted, but its ttl ran out before the answer");
        return;
    }
    obj = lock_json(k, fsm->time_ms, true);
    json_object_set_new(obj, "state", json_string("leader"));
    json_object_set_new(obj, "granted", json_true());
    jinn_http_reply_json(req, 200, obj);
}

/* The answer to an acquire that gave up, from the outcome of its WITHDRAW:
 * the command decided, atomically with every grant, whether it was still
 * in line (removed: not granted) or already holding (granted: says so). */
static void answer_withdrawal(struct jinn_api *api, struct jinn_http_request *req,
                              const char *name, size_t len, uint64_t seen_grant,
                              const char *why, int code, const struct jinn_result *res)
{
    char msg[160];
    if (code != JINN_OK) {
        snprintf(msg, sizeof msg,
                 "%s; leaving the line was not confirmed (%s): the acquire may still be "
                 "granted before its wait ends",
                 why, jinn_error_name(code));
        jinn_http_reply_error(req, JINN_EUNKNOWN, msg);
    } else if (res->code == JINN_OK && res->value != 0) {
        grant(api, req, name, len, res->value);
    } else if (seen_grant != 0) {
        grant(api, req, name, len, seen_grant);
    } else {
        refuse(req, why);
    }
}

static void withdrawn(void *data, int code, const struct jinn_result *res)
{
    struct jinn_lock_wait *w = data;
    answer_withdrawal(w->api, w->req, w->name, w->name_len, w->granted, w->why, code, res);
    unpark(w);
}

static void withdraw_cmd(struct jinn_cmd *c, const char *name, size_t len, uint64_t id)
{
    memset(c, 0, sizeof *c);
    c->type = JINN_CMD_LOCK_WITHDRAW;
    c->lock.name.p = (const uint8_t *)name;
    c->lock.name.len = len;
    c->lock.token = id;
}

/* The waiter stops waiting: it leaves the replicated line by a command and
 * is answered when that command applies, never before. */
static void give_up(struct jinn_lock_wait *w, const char *why)
{
    struct jinn_cmd c;
    int rv;
    if (w->withdrawing) {
        return;
    }
    w->withdrawing = true;
    w->why = why;
    uv_timer_stop(&w->timer);
    withdraw_cmd(&c, w->name, w->name_len, w->id);
    rv = jinn_node_propose(w->api->node, &c, w->api->cfg->request_timeout_ms, withdrawn, w);
    if (rv != JINN_OK) {
        withdrawn(w, rv, NULL);
    }
}

static void wait_tick(uv_timer_t *t)
{
    struct jinn_lock_wait *w = t->data;
    if (!jinn_http_client_alive(w->req)) {
        give_up(w, "the client went away");
    } else if (uv_now(w->api->loop) >= w->deadline) {
        give_up(w, "gave up waiting for the lock");
    }
}

/* A waiter that could not be parked still leaves the line by a command.
 * Its acquire is in the replicated line already: if the withdrawal cannot
 * even be proposed (shutting down, full disk, leadership gone) the answer
 * is outcome_unknown, never the proposal's own error, which says "not
 * applied" (no_space, not_leader) and invites a retry beside a ghost. */
struct lone_withdrawal {
    struct jinn_api *api;
    struct jinn_http_request *req;
    const char *why; /* static text */
    size_t name_len;
    char name[JINN_LOCK_NAME_MAX + 1];
};

static void lone_withdrawn(void *data, int code, const struct jinn_result *res)
{
    struct lone_withdrawal *l = data;
    answer_withdrawal(l->api, l->req, l->name, l->name_len, 0, l->why, code, res);
    jinn_free(l);
}

static void withdraw_unparked(struct jinn_api *api, struct jinn_http_request *req,
                              const char *name, size_t len, uint64_t id)
{
    const char *why =
        api->stopping ? "the node is shutting down" : "too many acquires waiting on this node";
    struct lone_withdrawal *l = jinn_calloc(1, sizeof *l);
    struct jinn_cmd c;
    int rv;

    if (l == NULL) {
        answer_withdrawal(api, req, name, len, 0, why, JINN_ENOMEM, NULL);
        return;
    }
    l->api = api;
    l->req = req;
    l->why = why;
    memcpy(l->name, name, len);
    l->name_len = len;
    withdraw_cmd(&c, name, len, id);
    rv = jinn_node_propose(api->node, &c, api->cfg->request_timeout_ms, lone_withdrawn, l);
    if (rv != JINN_OK) {
        jinn_free(l);
        answer_withdrawal(api, req, name, len, 0, why, rv, NULL);
    }
}

static void park(struct jinn_api *api, struct jinn_http_request *req, const char *name,
                 size_t len, uint64_t id, uint64_t wait_ms)
{
    struct jinn_lock_wait *w = NULL;
    if (api->n_lock_waits < LOCK_WAITS_MAX && !api->stopping) {
        w = jinn_calloc(1, sizeof *w);
    }
    if (w == NULL) {
        /* Not parked: withdraw at once (propose copies the command). */
        withdraw_unparked(api, req, name, len, id);
        return;
    }
    api->n_lock_waits++;
    w->api = api;
    w->req = req;
    memcpy(w->name, name, len);
    w->name_len = len;
    w->id = id;
    /* The replicated line decides; this only bounds a lost cause. */
    w->deadline = uv_now(api->loop) + wait_ms + api->cfg->request_timeout_ms;
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    w->next = api->lock_waits;
    if (api->lock_waits) {
        api->lock_waits->prev = w;
    }
    api->lock_waits = w;
    uv_timer_start(&w->timer, wait_tick, LOCK_WAIT_POLL_MS, LOCK_WAIT_POLL_MS);
}

void jinn_api_lock_applied(struct jinn_api *api)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    for (struct jinn_lock_wait *w = api->lock_waits, *next; w != NULL; w = next) {
        const struct jinn_lock *k = jinn_locks_get(&fsm->locks, w->name, w->name_len);
        next = w->next;
        if (k != NULL && k->request == w->id) {
            if (w->withdrawing) {
                w->granted = k->token; /* its WITHDRAW will say so */
                continue;
            }
            grant(api, w->req, w->name, w->name_len, k->token);
            unpark(w);
        } else if (!w->withdrawing &&
                   !jinn_locks_waiting(&fsm->locks, w->name, w->name_len, w->id)) {
            refuse(w->req, "the wait ended before the lock was free");
            unpark(w);
        }
    }
}

/* Shutdown: each waiter leaves the line by a command and is answered from
 * its outcome (withdrawn, or granted), never with a guess. */
void jinn_api_lock_stop(struct jinn_api *api)
{
    for (struct jinn_lock_wait *w = api->lock_waits, *next; w != NULL; w = next) {
        next = w->next;
        give_up(w, "the node is shutting down");
    }
}
