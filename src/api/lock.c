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
        jinn_http_reply_json(req, 200, obj);
        return;
    }
    if (res->code == JINN_ECONFLICT) {
        if (k != NULL) {
            obj = lock_json(k, fsm->time_ms, false);
        } else {
            obj = json_object();
        }
        json_object_set_new(obj, "state", json_string("follower"));
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
    obj = lock_json(k, fsm->time_ms, true);
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
        json_array_append_new(locks, lock_json(k, fsm->time_ms, true));
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

static void refuse(struct jinn_lock_wait *w, const char *why)
{
    json_t *obj = json_pack("{s:s, s:s, s:s}", "state", "follower", "error",
                            jinn_error_name(JINN_ECONFLICT), "message", why);
    jinn_http_reply_json(w->req, 409, obj);
    unpark(w);
}

static void wait_timeout(uv_timer_t *t)
{
    refuse(t->data, "gave up waiting for the lock");
}

static void park(struct jinn_api *api, struct jinn_http_request *req, const char *name,
                 size_t len, uint64_t id, uint64_t wait_ms)
{
    struct jinn_lock_wait *w;
    if (api->n_lock_waits >= LOCK_WAITS_MAX) {
        /* Still in the replicated line: it may be granted and then expire. */
        jinn_http_reply_error(req, JINN_EBUSY, "too many acquires waiting on this node");
        return;
    }
    w = jinn_calloc(1, sizeof *w);
    if (w == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    api->n_lock_waits++;
    w->api = api;
    w->req = req;
    memcpy(w->name, name, len);
    w->name_len = len;
    w->id = id;
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    w->next = api->lock_waits;
    if (api->lock_waits) {
        api->lock_waits->prev = w;
    }
    api->lock_waits = w;
    /* The replicated line decides; the timer only bounds a lost cause. */
    uv_timer_start(&w->timer, wait_timeout, wait_ms + api->cfg->request_timeout_ms, 0);
}

void jinn_api_lock_applied(struct jinn_api *api)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    for (struct jinn_lock_wait *w = api->lock_waits, *next; w != NULL; w = next) {
        const struct jinn_lock *k = jinn_locks_get(&fsm->locks, w->name, w->name_len);
        next = w->next;
        if (k != NULL && k->request == w->id) {
            json_t *obj = lock_json(k, fsm->time_ms, true);
            json_object_set_new(obj, "state", json_string("leader"));
            jinn_http_reply_json(w->req, 200, obj);
            unpark(w);
        } else if (!jinn_locks_waiting(&fsm->locks, w->name, w->name_len, w->id)) {
            refuse(w, "the wait ended before the lock was free");
        }
    }
}

/* The waiter is still in the replicated line: another leader may grant it
 * the lock later. A 409 would tell the client it did not get it (and the
 * lock would sit with a holder that does not know it), so: unknown. */
void jinn_api_lock_stop(struct jinn_api *api)
{
    while (api->lock_waits != NULL) {
        struct jinn_lock_wait *w = api->lock_waits;
        jinn_http_reply_error(w->req, JINN_EUNKNOWN,
                              "the node is shutting down while this acquire waits in the "
                              "lock's line: it may still be granted (it expires after its ttl)");
        unpark(w);
    }
}
