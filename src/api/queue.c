/* queue.c - the work-queue API (seed §4: WORKERS_ groups, redelivery).
 *
 * Every state change is a command through the log, decided by the state
 * machine. Commands carry the leader's queue settings (limits, ack_wait,
 * max_deliver, the nak delay) so every replica decides alike. A fetch that
 * would lease nothing costs no log entry: the leader answers it from its
 * state, or parks it (long-poll) until a message is ready for the worker. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"

#define FETCH_WAIT_MAX_MS 300000
#define ACK_WAIT_MAX_MS 43200000
#define NAK_DELAY_MAX_MS 86400000
#define DEAD_LIST_MAX 1000
/* A fetch reply's bytes: the leader leases no more messages than fit (each
 * counted as the reply encodes it), the first one always. Without it one
 * fetch could lease 256 messages of max_body each, a reply the HTTP server
 * refuses (over its per-reply limit) with all of them leased for nobody. */
#define JINN_QUEUE_FETCH_REPLY_MAX (8u << 20)
#define FETCH_MSG_OVERHEAD 96 /* {"seq":..,"delivery":..,"deadline_ms":..,"payload":""}, */

struct jinn_fetcher {
    struct jinn_api *api;
    struct jinn_http_request *req;
    struct jinn_fetcher *prev, *next;
    uv_timer_t timer;
    struct jinn_cmd cmd; /* slices point into the fields below */
    char queue[JINN_QUEUE_NAME_MAX + 1];
    char worker[JINN_QUEUE_WORKER_MAX + 1];
    bool proposing; /* a FETCH for it is in the log */
    unsigned max;   /* messages the client asked for */
};

static bool queue_name_or_reply(struct jinn_http_request *req, const struct jinn_route_args *args)
{
    for (size_t i = 0; i < args->len[0]; i++) {
        char c = args->arg[0][i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.')) {
            args = NULL;
            break;
        }
    }
    if (args == NULL || args->len[0] == 0 || args->len[0] > JINN_QUEUE_NAME_MAX) {
        jinn_http_reply_error(req, JINN_EINVAL, "queue name must be 1-64 of A-Z a-z 0-9 _ - .");
        return false;
    }
    return true;
}

static bool duration_or_reply(struct jinn_http_request *req, json_t *body, const char *name,
                              uint64_t dflt, uint64_t min, uint64_t max, uint64_t *out)
{
    char buf[32], msg[128];
    bool present;
    if (!jinn_api_param_or_reply(req, body, name, buf, sizeof buf, &present)) {
        return false;
    }
    *out = dflt;
    if (present && (jinn_parse_duration(buf, out) != 0 || *out < min || *out > max)) {
        snprintf(msg, sizeof msg, "%s must be a duration from %llums to %llums", name,
                 (unsigned long long)min, (unsigned long long)max);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return false;
    }
    return true;
}

static bool number_or_reply(struct jinn_http_request *req, json_t *body, const char *name,
                            uint64_t dflt, uint64_t min, uint64_t max, uint64_t *out)
{
    return jinn_api_uint_or_reply(req, body, name, dflt, min, max, out);
}

static bool worker_or_reply(struct jinn_http_request *req, json_t *body, char *worker)
{
    bool present;
    if (!jinn_api_param_or_reply(req, body, "worker", worker, JINN_QUEUE_WORKER_MAX + 1,
                                 &present)) {
        return false;
    }
    if (!present || worker[0] == '\0' || !jinn_utf8_valid(worker, strlen(worker))) {
        jinn_http_reply_error(req, JINN_EINVAL, "worker is required (1-128 bytes of UTF-8)");
        return false;
    }
    return true;
}

static void put_payload(json_t *obj, const uint8_t *p, size_t len)
{
    if (jinn_utf8_valid(p, len) && memchr(p, '\0', len) == NULL) {
        json_object_set_new(obj, "payload", json_stringn((const char *)p, len));
    } else {
        struct jinn_wbuf w;
        jinn_wbuf_init(&w);
        jinn_wbuf_put_base64(&w, p, len);
        json_object_set_new(obj, "payload_base64",
                            json_stringn(w.data ? (const char *)w.data : "", w.len));
        jinn_wbuf_free(&w);
    }
}

/* The bytes put_payload writes for a payload, at most: text as a JSON
 * string (a control character is 6 bytes as \u00XX, a quote or backslash
 * 2), anything else base64. */
static uint64_t payload_reply_bytes(const uint8_t *p, size_t len)
{
    uint64_t n = FETCH_MSG_OVERHEAD;
    if (!jinn_utf8_valid(p, len) || memchr(p, '\0', len) != NULL) {
        return n + (len + 2) / 3 * 4;
    }
    for (size_t i = 0; i < len; i++) {
        n += p[i] < 0x20 ? 6 : p[i] == '"' || p[i] == '\\' ? 2 : 1;
    }
    return n;
}

static void reply_code(struct jinn_http_request *req, int code)
{
    const char *why = NULL;
    if (code == JINN_ECONFLICT) {
        why = "you do not hold this lease (it expired, or is another worker's)";
    } else if (code == JINN_ENOTFOUND) {
        why = "no such message in this queue";
    } else if (code == JINN_EFULL) {
        why = "the queue is full (max_length / max_bytes)";
    }
    jinn_http_reply_error(req, code, why);
}

/* ---- publish -------------------------------------------------------------- */

static void published(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_result *res)
{
    (void)api;
    if (res->code != JINN_OK) {
        reply_code(req, res->code);
        return;
    }
    if (res->value != res->index) {
        /* A repeated Idempotency-Key: the original seq, nothing added. */
        jinn_http_reply_json(req, 200, json_pack("{s:I, s:b}", "seq", (json_int_t)res->value,
                                                 "duplicate", 1));
        return;
    }
    jinn_http_reply_json(req, 201, json_pack("{s:I}", "seq", (json_int_t)res->value));
}

/* The one publish path: POST /v1/queues/{q} and job submission
 * (POST /v1/functions/{name}/jobs, api/jobs.c) share the Idempotency-Key
 * check, the queue's configured limits and the command; only the reply
 * differs. queue (len bytes, already validated) is copied into the entry
 * before this returns. */
void jinn_api_queue_publish_to(struct jinn_api *api, struct jinn_http_request *req,
                               const char *queue, size_t len, jinn_api_commit_fn reply)
{
    const struct jinn_http_header *idem = jinn_http_header_find(&req->msg, "idempotency-key");
    struct jinn_queue_policy pol;
    struct jinn_cmd c;

    if (idem != NULL && (idem->value_len == 0 || idem->value_len > JINN_QUEUE_IDEM_MAX)) {
        jinn_http_reply_error(req, JINN_EINVAL, "Idempotency-Key must be 1-256 bytes");
        return;
    }
    pol = jinn_config_queue(api->cfg, queue);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_Q_PUBLISH;
    c.q.queue.p = (const uint8_t *)queue;
    c.q.queue.len = len;
    c.q.payload.p = (const uint8_t *)req->body;
    c.q.payload.len = req->body_len;
    if (idem != NULL) {
        c.q.idem.p = (const uint8_t *)idem->value;
        c.q.idem.len = idem->value_len;
    }
    c.q.count = pol.max_length;
    c.q.bytes = pol.max_bytes;
    c.q.ms = pol.idempotency_window_ms;
    c.q.max_deliver = pol.max_deliver;
    jinn_api_propose_or_reply(api, req, &c, reply);
}

void jinn_api_queue_publish(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args)
{
    if (queue_name_or_reply(req, args)) {
        jinn_api_queue_publish_to(api, req, args->arg[0], args->len[0], published);
    }
}

/* Error replies of queue commands (not-your-lease, no such message, full). */
void jinn_api_queue_reply_code(struct jinn_http_request *req, int code) { reply_code(req, code); }

/* ---- fetch ---------------------------------------------------------------- */

static void fetcher_closed(uv_handle_t *h) { jinn_free(h->data); }

static void fetcher_unlink(struct jinn_fetcher *f)
{
    struct jinn_api *api = f->api;
    if (f->prev) {
        f->prev->next = f->next;
    } else {
        api->fetchers = f->next;
    }
    if (f->next) {
        f->next->prev = f->prev;
    }
    api->n_fetchers--;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, fetcher_closed);
}

/* Answers with what the FETCH just leased (the apply that made it is the
 * one running: the list is in the state machine right now). */
static void reply_fetched(struct jinn_api *api, struct jinn_http_request *req, const char *queue)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    const struct jinn_queue *q = jinn_queues_get(&fsm->queues, queue, strlen(queue));
    json_t *list = json_array();
    for (unsigned i = 0; q != NULL && list != NULL && i < fsm->queues.n_fetched; i++) {
        const struct jinn_qmsg *m = jinn_queue_msg(q, fsm->queues.fetched[i]);
        json_t *obj = json_pack("{s:I, s:I, s:I}", "seq", (json_int_t)m->seq, "delivery",
                                (json_int_t)m->delivery, "deadline_ms",
                                (json_int_t)(m->due > fsm->time_ms ? m->due - fsm->time_ms : 0));
        put_payload(obj, m->payload, m->len);
        json_array_append_new(list, obj);
    }
    jinn_http_reply_json(req, 200, list);
}

static void fetch_wait_timeout(uv_timer_t *t)
{
    struct jinn_fetcher *f = t->data;
    if (f->proposing) {
        return; /* the fetch in the log answers */
    }
    jinn_http_reply_json(f->req, 200, json_array());
    fetcher_unlink(f);
}

static void fetcher_committed(void *data, int code, const struct jinn_result *res)
{
    struct jinn_fetcher *f = data;
    f->proposing = false;
    if (code != JINN_OK) {
        jinn_http_reply_error(f->req, code == JINN_ETIMEOUT ? JINN_EUNKNOWN : code, NULL);
        fetcher_unlink(f);
        return;
    }
    if (res->code != JINN_OK || res->value > 0 || !uv_is_active((uv_handle_t *)&f->timer) ||
        f->api->stopping) {
        if (res->code != JINN_OK) {
            reply_code(f->req, res->code);
        } else {
            reply_fetched(f->api, f->req, f->queue);
        }
        fetcher_unlink(f);
    }
    /* Leased nothing (another worker won the race): keep waiting, unless the
     * node is stopping (nothing would wake it again). */
}

/* Proposes f's FETCH for as many messages as fit in the reply (q holds one
 * for f's worker). */
static int propose_fetch(struct jinn_api *api, struct jinn_fetcher *f, const struct jinn_queue *q)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    unsigned fit = jinn_queue_fetch_fit(q, f->worker, fsm->time_ms, f->cmd.q.ms, f->max,
                                        JINN_QUEUE_FETCH_REPLY_MAX, payload_reply_bytes);
    f->cmd.q.count = fit > 0 ? fit : 1;
    f->proposing = true;
    int rv = jinn_node_propose(api->node, &f->cmd, api->cfg->request_timeout_ms,
                               fetcher_committed, f);
    if (rv != 0) {
        f->proposing = false;
    }
    return rv;
}

static void wake_fetchers(struct jinn_api *api)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    for (struct jinn_fetcher *f = api->fetchers, *next; f != NULL; f = next) {
        const struct jinn_queue *q;
        next = f->next;
        if (f->proposing) {
            continue;
        }
        if (!jinn_http_client_alive(f->req)) {
            /* Its client left (a worker that stopped, a relay dropped by
             * its follower): leasing for it would hold a job for nobody
             * until ack_wait. */
            jinn_http_reply_json(f->req, 200, json_array());
            fetcher_unlink(f);
            continue;
        }
        q = jinn_queues_get(&fsm->queues, f->queue, strlen(f->queue));
        if (q == NULL || !jinn_queue_has_ready_for(q, f->worker, fsm->time_ms, f->cmd.q.ms)) {
            continue;
        }
        int rv = propose_fetch(api, f, q);
        if (rv != 0) {
            /* no_space says why; anything else: not applied, ask again */
            jinn_http_reply_error(f->req, rv == JINN_ENOSPACE ? rv : JINN_ENOTLEADER, NULL);
            fetcher_unlink(f);
        }
    }
}

static void queue_kick(uv_timer_t *t) { wake_fetchers(t->data); }

void jinn_api_queue_applied(struct jinn_api *api)
{
    /* Called from inside raft's apply: propose on the next loop turn. */
    if (api->fetchers != NULL && !api->stopping &&
        !uv_is_active((uv_handle_t *)&api->queue_kick)) {
        uv_timer_start(&api->queue_kick, queue_kick, 0, 0);
    }
}

void jinn_api_queue_stop(struct jinn_api *api)
{
    /* Parked fetchers are answered now. One whose FETCH is in the log stays
     * alive: its proposal callback still runs (applied, timed out, or failed
     * when raft closes) and is the one that answers and frees it; freeing it
     * here left that callback writing into freed memory. */
    for (struct jinn_fetcher *f = api->fetchers, *next; f != NULL; f = next) {
        next = f->next;
        if (f->proposing) {
            continue;
        }
        jinn_http_reply_json(f->req, 200, json_array());
        fetcher_unlink(f);
    }
    uv_close((uv_handle_t *)&api->queue_kick, NULL);
}

void jinn_api_queue_fetch(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct jinn_queue_policy pol;
    struct jinn_fetcher *f;
    char worker[JINN_QUEUE_WORKER_MAX + 1];
    uint64_t max, wait, ack_wait;
    const struct jinn_queue *q;
    bool failed;
    json_t *body;

    if (!queue_name_or_reply(req, args)) {
        return;
    }
    pol = jinn_config_queue(api->cfg, args->arg[0]);
    body = jinn_api_optional_body_or_reply(req, &failed);
    if (failed) {
        return;
    }
    if (!worker_or_reply(req, body, worker) ||
        !number_or_reply(req, body, "max", 1, 1, JINN_QUEUE_FETCH_MAX, &max) ||
        !duration_or_reply(req, body, "wait", 0, 0, FETCH_WAIT_MAX_MS, &wait) ||
        !duration_or_reply(req, body, "ack_wait", pol.ack_wait_ms, 100, ACK_WAIT_MAX_MS,
                           &ack_wait)) {
        json_decref(body);
        return;
    }
    json_decref(body);
    f = jinn_calloc(1, sizeof *f);
    if (f == NULL || api->n_fetchers >= JINN_API_FETCHERS_MAX || api->stopping) {
        jinn_free(f);
        jinn_http_reply_error(req, f ? JINN_EBUSY : JINN_ENOMEM, NULL);
        return;
    }
    f->api = api;
    f->req = req;
    memcpy(f->queue, args->arg[0], args->len[0] + 1);
    snprintf(f->worker, sizeof f->worker, "%s", worker);
    f->cmd.type = JINN_CMD_Q_FETCH;
    f->cmd.q.queue.p = (const uint8_t *)f->queue;
    f->cmd.q.queue.len = strlen(f->queue);
    f->cmd.q.worker.p = (const uint8_t *)f->worker;
    f->cmd.q.worker.len = strlen(f->worker);
    f->max = (unsigned)max;
    f->cmd.q.count = max;
    f->cmd.q.ms = ack_wait;
    uv_timer_init(api->loop, &f->timer);
    f->timer.data = f;
    f->next = api->fetchers;
    if (api->fetchers) {
        api->fetchers->prev = f;
    }
    api->fetchers = f;
    api->n_fetchers++;
    q = jinn_queues_get(&fsm->queues, f->queue, strlen(f->queue));
    if (q != NULL && jinn_queue_has_ready_for(q, f->worker, fsm->time_ms, ack_wait)) {
        int rv = propose_fetch(api, f, q);
        if (rv != 0) {
            jinn_http_reply_error(req, rv == JINN_ENOSPACE ? rv : JINN_ENOTLEADER, NULL);
            fetcher_unlink(f);
        }
        return;
    }
    if (wait == 0) {
        jinn_http_reply_json(req, 200, json_array());
        fetcher_unlink(f);
        return;
    }
    uv_timer_start(&f->timer, fetch_wait_timeout, wait, 0);
}

/* ---- ack / nak / progress / term ---------------------------------------- */

static bool seq_or_reply(struct jinn_http_request *req, const char *text, uint64_t *seq)
{
    if (!jinn_api_parse_uint(text, INT64_MAX, seq) || *seq == 0) {
        jinn_http_reply_error(req, JINN_EINVAL, "the message seq must be a number");
        return false;
    }
    return true;
}

static void settled(struct jinn_api *api, struct jinn_http_request *req,
                    const struct jinn_result *res)
{
    (void)api;
    if (res->code != JINN_OK) {
        reply_code(req, res->code);
        return;
    }
    jinn_http_reply_json(req, 200, json_pack("{s:I}", "seq", (json_int_t)res->value));
}

static void lease_command(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args, uint8_t type)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct jinn_queue_policy pol;
    char worker[JINN_QUEUE_WORKER_MAX + 1], reason[JINN_QUEUE_REASON_MAX + 1];
    uint64_t seq, delivery;
    bool failed, has_reason = false;
    json_t *body;
    struct jinn_cmd c;

    if (!queue_name_or_reply(req, args) || !seq_or_reply(req, args->arg[1], &seq)) {
        return;
    }
    pol = jinn_config_queue(api->cfg, args->arg[0]);
    memset(&c, 0, sizeof c);
    c.type = type;
    c.q.seq = seq;
    body = jinn_api_optional_body_or_reply(req, &failed);
    if (failed) {
        return;
    }
    if (!worker_or_reply(req, body, worker) ||
        !number_or_reply(req, body, "delivery", 0, 0, UINT32_MAX, &delivery) ||
        (type == JINN_CMD_Q_PROGRESS &&
         !duration_or_reply(req, body, "ack_wait", pol.ack_wait_ms, 100, ACK_WAIT_MAX_MS,
                            &c.q.ms)) ||
        ((type == JINN_CMD_Q_NAK || type == JINN_CMD_Q_TERM) &&
         !jinn_api_param_or_reply(req, body, "reason", reason, sizeof reason, &has_reason))) {
        json_decref(body);
        return;
    }
    if (type == JINN_CMD_Q_NAK) {
        /* The default delay follows the backoff list by delivery count, as
         * the leader sees it now; the command carries the number. */
        const struct jinn_queue *q = jinn_queues_get(&fsm->queues, args->arg[0], args->len[0]);
        const struct jinn_qmsg *m = q ? jinn_queue_msg(q, seq) : NULL;
        uint64_t n = m && m->delivery > 0 ? m->delivery - 1 : 0;
        uint64_t dflt = pol.n_backoff == 0 ? 0
                        : pol.backoff_ms[n < pol.n_backoff ? n : pol.n_backoff - 1];
        if (!duration_or_reply(req, body, "delay", dflt, 0, NAK_DELAY_MAX_MS, &c.q.ms)) {
            json_decref(body);
            return;
        }
    }
    json_decref(body);
    c.q.queue.p = (const uint8_t *)args->arg[0];
    c.q.queue.len = args->len[0];
    c.q.worker.p = (const uint8_t *)worker;
    c.q.worker.len = strlen(worker);
    c.q.delivery = delivery;
    if (has_reason) {
        c.q.reason.p = (const uint8_t *)reason;
        c.q.reason.len = strlen(reason);
    }
    jinn_api_propose_or_reply(api, req, &c, settled);
}

void jinn_api_queue_ack(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    lease_command(api, req, args, JINN_CMD_Q_ACK);
}

void jinn_api_queue_nak(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    lease_command(api, req, args, JINN_CMD_Q_NAK);
}

void jinn_api_queue_progress(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_route_args *args)
{
    lease_command(api, req, args, JINN_CMD_Q_PROGRESS);
}

void jinn_api_queue_term(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    lease_command(api, req, args, JINN_CMD_Q_TERM);
}

static void dead_command(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args, uint8_t type)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    if (!queue_name_or_reply(req, args) || !seq_or_reply(req, args->arg[1], &c.q.seq)) {
        return;
    }
    c.q.queue.p = (const uint8_t *)args->arg[0];
    c.q.queue.len = args->len[0];
    jinn_api_propose_or_reply(api, req, &c, settled);
}

void jinn_api_queue_requeue(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args)
{
    dead_command(api, req, args, JINN_CMD_Q_REQUEUE);
}

void jinn_api_queue_drop(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    dead_command(api, req, args, JINN_CMD_Q_DROP);
}

/* ---- reads ---------------------------------------------------------------- */

json_t *jinn_api_queue_stats_json(const struct jinn_queue *q)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "name", q->name, "ready",
                     (json_int_t)q->ready.count, "leased", (json_int_t)q->leased.count,
                     "delayed", (json_int_t)q->delayed.count, "dead", (json_int_t)q->dead.count,
                     "published", (json_int_t)q->published, "delivered",
                     (json_int_t)q->delivered, "acked", (json_int_t)q->acked, "bytes",
                     (json_int_t)q->bytes);
}

static const struct jinn_queue *queue_of_path(struct jinn_api *api, struct jinn_http_request *req)
{
    char name[JINN_QUEUE_NAME_MAX + 1];
    const char *p = req->path + strlen("/v1/queues/");
    size_t left = req->path_len - strlen("/v1/queues/");
    const char *slash = memchr(p, '/', left);
    long n = jinn_http_unescape(p, slash ? (size_t)(slash - p) : left, name, sizeof name, false);
    return n > 0 ? jinn_queues_get(&jinn_node_fsm(api->node)->queues, name, (size_t)n) : NULL;
}

static void stats_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_queue *q = queue_of_path(api, req);
    if (q == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such queue (nothing published yet)");
        return;
    }
    jinn_http_reply_json(req, 200, jinn_api_queue_stats_json(q));
}

/* GET /v1/queues: a page of at most QUEUE_LIST_MAX (up to 10 000 queues
 * can exist; all of them in one reply kept the loop busy for 250+ ms). */
#define QUEUE_LIST_MAX 1000

static void list_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_queues *qs = &jinn_node_fsm(api->node)->queues;
    struct jinn_queue *probe = NULL;
    const struct jinn_queue *q;
    uint64_t limit;
    char after[JINN_QUEUE_NAME_MAX + 1];
    bool present, more = false;
    json_t *list;
    unsigned n = 0;

    if (!jinn_api_uint_or_reply(req, NULL, "limit", QUEUE_LIST_MAX, 1, QUEUE_LIST_MAX, &limit) ||
        !jinn_api_param_or_reply(req, NULL, "start_after", after, sizeof after, &present)) {
        return;
    }
    if (present) {
        probe = jinn_calloc(1, sizeof *probe);
        if (probe == NULL) {
            jinn_http_reply_error(req, JINN_ENOMEM, NULL);
            return;
        }
        memcpy(probe->name, after, strlen(after) + 1);
    }
    list = json_array();
    for (q = jinn_queues_next(qs, probe); q && list; q = jinn_queues_next(qs, q)) {
        if (n++ == limit) {
            more = true;
            break;
        }
        json_array_append_new(list, jinn_api_queue_stats_json(q));
    }
    jinn_free(probe);
    jinn_http_reply_json(req, 200, json_pack("{s:o, s:b}", "queues", list, "more", more));
}

static void dead_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_queue *q = queue_of_path(api, req);
    json_t *list = json_array();
    struct jinn_tree_iter it;
    unsigned n = 0;
    if (q != NULL) {
        for (struct jinn_tree_node *t = jinn_tree_seek(&q->dead, NULL, &it);
             t != NULL && list != NULL && n < DEAD_LIST_MAX; t = jinn_tree_next(&it), n++) {
            const struct jinn_qmsg *m = jinn_tree_entry(t, struct jinn_qmsg, by_state);
            json_t *obj = json_pack("{s:I, s:I, s:s, s:s}", "seq", (json_int_t)m->seq,
                                    "delivery", (json_int_t)m->delivery, "reason",
                                    m->reason ? m->reason : "", "worker", m->worker);
            put_payload(obj, m->payload, m->len);
            json_array_append_new(list, obj);
        }
    }
    jinn_http_reply_json(req, 200, json_pack("{s:o}", "dead", list));
}

void jinn_api_queue_stats(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args)
{
    if (queue_name_or_reply(req, args)) {
        jinn_api_read_or_reply(api, req, true, stats_now);
    }
}

void jinn_api_queue_list(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    (void)args;
    jinn_api_read_or_reply(api, req, true, list_now);
}

void jinn_api_queue_dead(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    if (queue_name_or_reply(req, args)) {
        jinn_api_read_or_reply(api, req, true, dead_now);
    }
}
