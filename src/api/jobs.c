/* jobs.c - functions as background jobs over HTTP (issue 14).
 *
 * A job of function F is a message of the replicated queue WORKERS_F (its
 * id is the message's seq), so submission is a queue publish, and while the
 * message exists its state is the job's state. A worker settles a success
 * with JOB_ACK, which removes the message and stores the function's
 * response in the state machine's job results (fsm/jobs.c), kept for a
 * bounded time and size; status reads look there once the message is gone.
 *
 * Reads are linearizable, as GET /v1/queues/{q}: served by the leader after
 * a barrier (followers relay them), so a 202 followed by a status read never
 * answers 404 for the job it just created. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"
#include "fsm/jobs.h"

#define WORKERS_PREFIX JINN_JOB_QUEUE_PREFIX
/* Jobs one batch submission carries (each its own log entry, all in one
 * append), and the Idempotency-Key room left for "#POSITION". */
#define JOB_BATCH_MAX JINN_PROPOSE_MANY_MAX
#define JOB_BATCH_IDEM_MAX (JINN_QUEUE_IDEM_MAX - 6)
#define JOB_LIST_DEFAULT 20
#define JOB_LIST_MAX 100
/* A list's responses, in total: past this the objects carry
 * "response_omitted" (parsing many large responses would hold the loop). */
#define JOB_LIST_RESPONSE_BYTES (1u << 20)

/* ---- inputs ----------------------------------------------------------- */

/* WORKERS_<fn> into queue; false when it would be over a queue name's 64
 * bytes (function names may have 64, their job queues leave 56). */
static bool queue_of(const char *fn, char queue[JINN_QUEUE_NAME_MAX + 1])
{
    size_t p = strlen(WORKERS_PREFIX), n = strlen(fn);
    if (p + n > JINN_QUEUE_NAME_MAX) {
        return false;
    }
    memcpy(queue, WORKERS_PREFIX, p);
    memcpy(queue + p, fn, n + 1);
    return true;
}

/* The function's name, and its queue's: false when it has replied. */
static bool names_or_reply(struct jinn_http_request *req, const struct jinn_route_args *args,
                           char queue[JINN_QUEUE_NAME_MAX + 1])
{
    if (!jinn_fn_name_valid(args->arg[0], args->len[0])) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "function name must be 1-64 of a-z 0-9 _ - (starting a-z 0-9)");
        return false;
    }
    if (!queue_of(args->arg[0], queue)) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "a function with jobs has a name of at most 56 bytes");
        return false;
    }
    return true;
}

/* A job id: a decimal u64 (no sign, space or suffix), not 0. */
static bool id_or_reply(struct jinn_http_request *req, const struct jinn_route_args *args,
                        uint64_t *id)
{
    if (!jinn_api_parse_uint(args->arg[1], INT64_MAX, id) || *id == 0 ||
        strlen(args->arg[1]) != args->len[1]) {
        jinn_http_reply_error(req, JINN_EINVAL, "the job id must be a positive decimal number");
        return false;
    }
    return true;
}

/* The function as the state machine has it now: NULL when unknown or
 * deleted (a deleted function takes no new jobs). */
static const struct jinn_fn *active_fn(struct jinn_api *api, const char *name)
{
    const struct jinn_fn *f = jinn_fns_get(&jinn_node_fsm(api->node)->fns, name);
    return f != NULL && f->active != NULL ? f : NULL;
}

/* ---- submission -------------------------------------------------------- */

static void submitted(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_result *res)
{
    (void)api;
    if (res->code != JINN_OK) {
        jinn_api_queue_reply_code(req, res->code);
        return;
    }
    if (res->value != res->index) {
        /* A repeated Idempotency-Key: the first job's id, nothing added. */
        jinn_http_reply_json(req, 202,
                             json_pack("{s:I, s:I, s:b}", "job", (json_int_t)res->value,
                                       "index", (json_int_t)res->index, "duplicate", 1));
        return;
    }
    jinn_http_reply_json(req, 202,
                         json_pack("{s:I, s:I}", "job", (json_int_t)res->value, "index",
                                   (json_int_t)res->index));
}

/* ---- batch submission ---------------------------------------------------- */

/* A batch (Content-Type: application/x-ndjson, one JSON payload a line)
 * becomes one Q_PUBLISH per job, appended together in one raft_apply
 * (jinn_node_propose_many): one disk write and one message per follower
 * for the batch, while each job keeps its own entry, index and id, and the
 * state machine applies exactly what a single submission applies (no new
 * command, nothing new in the snapshot). */
#define NDJSON "application/x-ndjson"

struct batch_commit {
    struct jinn_http_request *req;
};

static void batch_committed(void *data, int code, const struct jinn_result *res, unsigned n)
{
    struct batch_commit *bc = data;
    struct jinn_http_request *req = bc->req;
    json_t *ids, *obj;
    int first_err = JINN_OK;
    unsigned dup = 0;
    char buf[24];

    jinn_free(bc);
    if (code != JINN_OK) {
        jinn_http_reply_error(req, code == JINN_ETIMEOUT ? JINN_EUNKNOWN : code,
                              code == JINN_ETIMEOUT || code == JINN_EUNKNOWN
                                  ? "not committed within the request timeout (or the leader "
                                    "changed); any of the batch's jobs may still be applied"
                                  : NULL);
        return;
    }
    ids = json_array();
    for (unsigned i = 0; i < n; i++) {
        if (res[i].code != JINN_OK) {
            first_err = first_err == JINN_OK ? res[i].code : first_err;
            json_array_append_new(ids, json_null());
            continue;
        }
        dup += res[i].value != res[i].index; /* a repeated Idempotency-Key */
        json_array_append_new(ids, json_integer((json_int_t)res[i].value));
    }
    snprintf(buf, sizeof buf, "%" PRIu64, res[n - 1].index);
    jinn_http_add_header(req, "X-Jinn-Index", buf);
    if (first_err != JINN_OK) {
        /* Each job is its own entry: the ones before the failure (a full
         * queue) are in; "jobs" says which (null: not submitted). */
        obj = json_pack("{s:s, s:s, s:o}", "error", jinn_error_name(first_err), "message",
                        first_err == JINN_EFULL ? "the queue is full (max_length / max_bytes); "
                                                  "\"jobs\" lists the ones submitted"
                                                : jinn_error_message(first_err),
                        "jobs", ids);
        jinn_http_reply_json(req, jinn_error_http_status(first_err), obj);
        return;
    }
    obj = json_pack("{s:o, s:I}", "jobs", ids, "index", (json_int_t)res[n - 1].index);
    if (obj != NULL && dup > 0) {
        json_object_set_new(obj, "duplicates", json_integer((json_int_t)dup));
    }
    jinn_http_reply_json(req, 202, obj);
}

/* The content type without parameters, compared case-insensitively. */
static bool is_ndjson(const struct jinn_http_request *req)
{
    const struct jinn_http_header *ct = jinn_http_header_find(&req->msg, "content-type");
    size_t n = strlen(NDJSON);
    return ct != NULL && ct->value_len >= n && strncasecmp(ct->value, NDJSON, n) == 0 &&
           (ct->value_len == n || ct->value[n] == ';' || ct->value[n] == ' ');
}

static void submit_batch(struct jinn_api *api, struct jinn_http_request *req, const char *queue)
{
    const struct jinn_http_header *idem = jinn_http_header_find(&req->msg, "idempotency-key");
    struct jinn_queue_policy pol = jinn_config_queue(api->cfg, queue);
    char(*keys)[JINN_QUEUE_IDEM_MAX + 1] = NULL;
    struct jinn_cmd *cs = NULL;
    struct batch_commit *bc = NULL;
    const char *p = req->body, *end = req->body + req->body_len;
    unsigned n = 0;
    char msg[256];
    int rv;

    /* key#1 .. key#N: one key a job, so a retried batch adds nothing and a
     * single submission's key never collides with a batch's. */
    if (idem != NULL && (idem->value_len == 0 || idem->value_len > JOB_BATCH_IDEM_MAX)) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "Idempotency-Key of a batch must be 1-250 bytes (each job's "
                              "key is KEY#POSITION)");
        return;
    }
    cs = jinn_calloc(JOB_BATCH_MAX, sizeof *cs);
    keys = idem != NULL ? jinn_calloc(JOB_BATCH_MAX, sizeof *keys) : NULL;
    bc = jinn_calloc(1, sizeof *bc);
    if (cs == NULL || bc == NULL || (idem != NULL && keys == NULL)) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto cleanup;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        size_t len = (size_t)(le - p);
        json_error_t jerr;
        json_t *v;
        if (len > 0 && p[len - 1] == '\r') {
            len--;
        }
        if (n == JOB_BATCH_MAX) {
            snprintf(msg, sizeof msg, "a batch carries at most %u jobs", JOB_BATCH_MAX);
            jinn_http_reply_error(req, JINN_EINVAL, msg);
            goto cleanup;
        }
        if (len == 0) {
            snprintf(msg, sizeof msg, "line %u is empty (one JSON payload a line)", n + 1);
            jinn_http_reply_error(req, JINN_EINVAL, msg);
            goto cleanup;
        }
        v = json_loadb(p, len, JSON_DECODE_ANY, &jerr);
        if (v == NULL) {
            snprintf(msg, sizeof msg, "line %u is not JSON: %s (nothing was submitted)", n + 1,
                     jerr.text);
            jinn_http_reply_error(req, JINN_EINVAL, msg);
            goto cleanup;
        }
        json_decref(v);
        cs[n].type = JINN_CMD_Q_PUBLISH;
        cs[n].q.queue.p = (const uint8_t *)queue;
        cs[n].q.queue.len = strlen(queue);
        cs[n].q.payload.p = (const uint8_t *)p;
        cs[n].q.payload.len = len;
        if (idem != NULL) {
            int k = snprintf(keys[n], sizeof keys[n], "%.*s#%u", (int)idem->value_len,
                             idem->value, n + 1);
            cs[n].q.idem.p = (const uint8_t *)keys[n];
            cs[n].q.idem.len = (size_t)k;
        }
        cs[n].q.count = pol.max_length;
        cs[n].q.bytes = pol.max_bytes;
        cs[n].q.ms = pol.idempotency_window_ms;
        cs[n].q.max_deliver = pol.max_deliver;
        n++;
        p = nl != NULL ? nl + 1 : end;
    }
    if (n == 0) {
        jinn_http_reply_error(req, JINN_EINVAL, "the batch is empty (one JSON payload a line)");
        goto cleanup;
    }
    bc->req = req;
    rv = jinn_node_propose_many(api->node, cs, n, api->cfg->request_timeout_ms, batch_committed,
                                bc);
    if (rv != JINN_OK) {
        jinn_http_reply_error(req, rv, NULL);
        goto cleanup;
    }
    bc = NULL; /* batch_committed frees it */
cleanup:
    jinn_free(bc);
    jinn_free(keys);
    jinn_free(cs);
}

void jinn_api_job_submit(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    char queue[JINN_QUEUE_NAME_MAX + 1];
    if (!names_or_reply(req, args, queue)) {
        return;
    }
    /* Checked on the leader against its state: a function deleted after
     * this check and before the publish applies leaves a job nobody runs
     * (visible as queued; deleting a function does not drop its queue). */
    if (active_fn(api, args->arg[0]) == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such function (or it is deleted)");
        return;
    }
    if (is_ndjson(req)) {
        submit_batch(api, req, queue);
        return;
    }
    jinn_api_queue_publish_to(api, req, queue, strlen(queue), submitted);
}

/* ---- status ------------------------------------------------------------ */

/* The job object of a message still in the queue. */
static json_t *msg_json(const char *fn, const struct jinn_qmsg *m)
{
    const char *state = "queued";
    json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I}", "job", (json_int_t)m->seq, "function",
                          fn, "state", "queued", "delivery", (json_int_t)m->delivery,
                          "max_deliver", (json_int_t)m->max_deliver);
    if (o == NULL) {
        return NULL;
    }
    switch (m->state) {
    case JINN_QM_READY:
        /* Back in line after a lease expired or a nak with no delay. */
        state = m->delivery > 0 && m->reason != NULL ? "failed" : "queued";
        break;
    case JINN_QM_DELAYED:
        state = "failed";
        break; /* waiting out its backoff */
    case JINN_QM_LEASED: {
        const char *slash = strchr(m->worker, '/');
        size_t n = slash ? (size_t)(slash - m->worker) : strlen(m->worker);
        state = "running";
        json_object_set_new(o, "node", json_stringn(m->worker, n));
        json_object_set_new(o, "worker", json_string(m->worker));
        json_object_set_new(o, "since_ms", json_integer((json_int_t)m->leased_ms));
        break;
    }
    case JINN_QM_DEAD:
        state = "dead";
        break;
    default:
        break;
    }
    json_object_set_new(o, "state", json_string(state));
    if (m->reason != NULL && m->state != JINN_QM_LEASED && strcmp(state, "queued") != 0) {
        json_object_set_new(o, "last_error", json_string(m->reason));
    }
    return o;
}

/* Stored responses go into a reply as they are, not parsed and dumped
 * again on the loop (up to 1 MiB each): the ack handler stored each as a
 * compact JSON object. The object carries a marker string in its place,
 * replaced in the dumped text (reply_spliced). */
struct splice {
    const struct jinn_job_result *r[JOB_LIST_MAX];
    unsigned n;
};

#define SPLICE_MARK "\"response\":\"\\u0001R" /* how json_dumps writes the marker */

/* The job object of a stored result. *budget: response bytes this reply
 * may still carry; past it the response is left out (said so). */
static json_t *result_json(const char *fn, const struct jinn_job_result *r, size_t *budget,
                           struct splice *sp)
{
    json_t *o =
        json_pack("{s:I, s:s, s:s, s:I, s:I, s:I}", "job", (json_int_t)r->seq, "function", fn,
                  "state", "succeeded", "delivery", (json_int_t)r->delivery, "status",
                  (json_int_t)r->status, "finished_ms", (json_int_t)r->finished_ms);
    if (o == NULL) {
        return NULL;
    }
    if (r->len > *budget) {
        json_object_set_new(o, "response_omitted", json_true());
        return o;
    }
    *budget -= r->len;
    /* The worker sent an object (the ack handler checks and stores it
     * compact); anything else stored is shown as text rather than dropped. */
    if (r->len >= 2 && r->response[0] == '{' && r->response[r->len - 1] == '}' &&
        sp->n < JOB_LIST_MAX) {
        char mark[16];
        snprintf(mark, sizeof mark, "\001R%u", sp->n);
        sp->r[sp->n++] = r;
        json_object_set_new(o, "response", json_string(mark));
    } else {
        json_object_set_new(o, "response", json_stringn((const char *)r->response, r->len));
    }
    return o;
}

/* Sends obj (reference stolen) with each marker of sp replaced by its
 * stored response. A marker can only be the value of a "response" key:
 * inside a dumped string every quote is escaped. */
static void reply_spliced(struct jinn_http_request *req, json_t *obj, const struct splice *sp)
{
    char *text, *out = NULL;
    size_t len, need, at = 0;
    const char *p, *hit;

    if (sp->n == 0 || obj == NULL) {
        jinn_http_reply_json(req, 200, obj);
        return;
    }
    text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    len = strlen(text);
    need = len;
    for (unsigned i = 0; i < sp->n; i++) {
        need += sp->r[i]->len;
    }
    out = jinn_malloc(need + 1);
    if (out == NULL) {
        jinn_free(text);
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    for (p = text; (hit = strstr(p, SPLICE_MARK)) != NULL;) {
        const char *num = hit + strlen(SPLICE_MARK);
        char *end;
        unsigned long i = strtoul(num, &end, 10);
        size_t head = (size_t)(hit - p) + strlen("\"response\":");
        if (end == num || *end != '"' || i >= sp->n) {
            break; /* not ours: cannot happen (see above) */
        }
        memcpy(out + at, p, head);
        at += head;
        memcpy(out + at, sp->r[i]->response, sp->r[i]->len);
        at += sp->r[i]->len;
        p = end + 1;
    }
    memcpy(out + at, p, len - (size_t)(p - text));
    at += len - (size_t)(p - text);
    jinn_http_reply(req, 200, "application/json", out, at);
    jinn_free(out);
    jinn_free(text);
}

static bool path_names(struct jinn_http_request *req, char fn[JINN_FN_NAME_MAX + 1],
                       uint64_t *id)
{
    /* Re-read from the path: a linearizable read runs after a barrier, when
     * the route's arguments are gone. /v1/functions/NAME/jobs[/ID] */
    const char *p = req->path + strlen("/v1/functions/");
    size_t left = req->path_len - strlen("/v1/functions/");
    const char *slash = memchr(p, '/', left);
    long n = jinn_http_unescape(p, slash ? (size_t)(slash - p) : left, fn, JINN_FN_NAME_MAX + 1,
                                false);
    if (n <= 0 || slash == NULL) {
        return false;
    }
    if (id != NULL) {
        const char *q = slash + strlen("/jobs/");
        char text[24];
        if (q > req->path + req->path_len) {
            return false;
        }
        n = jinn_http_unescape(q, req->path_len - (size_t)(q - req->path), text, sizeof text,
                               false);
        return n > 0 && strlen(text) == (size_t)n && jinn_api_parse_uint(text, INT64_MAX, id);
    }
    return true;
}

static void show_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char fn[JINN_FN_NAME_MAX + 1], queue[JINN_QUEUE_NAME_MAX + 1];
    const struct jinn_queue *q;
    const struct jinn_qmsg *m = NULL;
    const struct jinn_job_result *r;
    size_t budget = JINN_JOB_RESULT_MAX;
    struct splice sp = {.n = 0};
    uint64_t id;

    if (!path_names(req, fn, &id) || !queue_of(fn, queue)) {
        jinn_http_reply_error(req, JINN_EINVAL, NULL);
        return;
    }
    q = jinn_queues_get(&fsm->queues, queue, strlen(queue));
    if (q != NULL) {
        m = jinn_queue_msg(q, id);
    }
    if (m != NULL) {
        jinn_http_reply_json(req, 200, msg_json(fn, m));
        return;
    }
    r = jinn_jobs_result(&fsm->jobs, fn, id);
    if (r != NULL) {
        reply_spliced(req, result_json(fn, r, &budget, &sp), &sp);
        return;
    }
    jinn_http_reply_error(req, JINN_ENOTFOUND,
                          "no such job (never submitted, or its result expired)");
}

void jinn_api_job_show(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args)
{
    char queue[JINN_QUEUE_NAME_MAX + 1];
    uint64_t id;
    if (names_or_reply(req, args, queue) && id_or_reply(req, args, &id)) {
        jinn_api_read_or_reply(api, req, true, show_now);
    }
}

/* ---- list --------------------------------------------------------------- */

/* How many messages of q have a seq >= lo, counting up to limit. */
static unsigned count_from(const struct jinn_queue *q, uint64_t lo, unsigned limit)
{
    struct jinn_qmsg probe;
    struct jinn_tree_iter it;
    unsigned n = 0;
    memset(&probe, 0, sizeof probe);
    probe.seq = lo;
    for (struct jinn_tree_node *t = jinn_tree_seek(&q->all, &probe.by_seq, &it);
         t != NULL && n < limit; t = jinn_tree_next(&it)) {
        n++;
    }
    return n;
}

/* The newest (highest seq) messages of q, up to limit, into seqs (newest
 * first); returns how many. The tree only walks upwards, so a bisection
 * finds the highest lo with at least limit messages at or above it (64
 * probes of at most limit steps), and the walk from there visits at most
 * limit messages: a list costs the same in a queue of a million. */
static unsigned newest_msgs(const struct jinn_queue *q, unsigned limit, uint64_t *seqs)
{
    uint64_t lo = 0, hi = UINT64_MAX; /* count_from(hi) < limit throughout */
    struct jinn_qmsg probe;
    struct jinn_tree_iter it;
    unsigned n = 0;
    if (count_from(q, 0, limit) == limit) {
        while (hi - lo > 1) { /* invariant: count_from(lo) == limit */
            uint64_t mid = lo + (hi - lo) / 2;
            if (count_from(q, mid, limit) == limit) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    memset(&probe, 0, sizeof probe);
    probe.seq = lo;
    for (struct jinn_tree_node *t = jinn_tree_seek(&q->all, &probe.by_seq, &it);
         t != NULL && n < limit; t = jinn_tree_next(&it)) {
        seqs[n++] = jinn_tree_entry(t, struct jinn_qmsg, by_seq)->seq;
    }
    for (unsigned i = 0; i < n / 2; i++) { /* newest first */
        uint64_t tmp = seqs[i];
        seqs[i] = seqs[n - 1 - i];
        seqs[n - 1 - i] = tmp;
    }
    return n;
}

static int by_id_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void list_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char fn[JINN_FN_NAME_MAX + 1], queue[JINN_QUEUE_NAME_MAX + 1];
    uint64_t limit, ids[2 * JOB_LIST_MAX];
    unsigned n = 0;
    const struct jinn_queue *q;
    const struct jinn_job_result *r = NULL;
    size_t budget = JOB_LIST_RESPONSE_BYTES;
    struct splice sp = {.n = 0};
    json_t *list;

    if (!path_names(req, fn, NULL) || !queue_of(fn, queue)) {
        jinn_http_reply_error(req, JINN_EINVAL, NULL);
        return;
    }
    if (!jinn_api_uint_or_reply(req, NULL, "limit", JOB_LIST_DEFAULT, 1, JOB_LIST_MAX,
                                &limit)) {
        return;
    }
    q = jinn_queues_get(&fsm->queues, queue, strlen(queue));
    if (q != NULL) {
        n = newest_msgs(q, (unsigned)limit, ids);
    }
    /* The newest-finished results; a job is either a message or a result,
     * never both (JOB_ACK removes the one and keeps the other). */
    for (unsigned k = 0; k < limit && (r = jinn_jobs_results_next(&fsm->jobs, fn, r)) != NULL;
         k++) {
        ids[n++] = r->seq;
    }
    qsort(ids, n, sizeof ids[0], by_id_desc);
    list = json_array();
    for (unsigned k = 0; k < n && list != NULL && json_array_size(list) < limit; k++) {
        const struct jinn_qmsg *m = q ? jinn_queue_msg(q, ids[k]) : NULL;
        json_t *o = NULL;
        if (m != NULL) {
            o = msg_json(fn, m);
        } else if ((r = jinn_jobs_result(&fsm->jobs, fn, ids[k])) != NULL) {
            o = result_json(fn, r, &budget, &sp);
        }
        if (o != NULL) {
            json_array_append_new(list, o);
        }
    }
    reply_spliced(req, json_pack("{s:o}", "jobs", list), &sp);
}

void jinn_api_job_list(struct jinn_api *api, struct jinn_http_request *req,
                       const struct jinn_route_args *args)
{
    char queue[JINN_QUEUE_NAME_MAX + 1];
    if (names_or_reply(req, args, queue)) {
        jinn_api_read_or_reply(api, req, true, list_now);
    }
}

/* ---- ack (workers) ------------------------------------------------------ */

/* The single form's answer: its one ack's outcome. */
static void acked(struct jinn_api *api, struct jinn_http_request *req,
                  const struct jinn_result *res)
{
    const struct jinn_jobs *jobs = &jinn_node_fsm(api->node)->jobs;
    int code = res->code;
    if (code == JINN_OK && jobs->n_acked >= 1) {
        code = jobs->acked[0];
    }
    if (code != JINN_OK) {
        jinn_api_queue_reply_code(req, code);
        return;
    }
    jinn_http_reply_json(req, 200,
                         json_pack("{s:I, s:I}", "job", (json_int_t)jobs->acked_seq[0], "index",
                                   (json_int_t)res->index));
}

/* The batch's answer: every ack's outcome, in order. */
static void acked_batch(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_result *res)
{
    const struct jinn_jobs *jobs = &jinn_node_fsm(api->node)->jobs;
    json_t *list;
    if (res->code != JINN_OK) {
        jinn_api_queue_reply_code(req, res->code);
        return;
    }
    list = json_array();
    for (uint32_t i = 0; i < jobs->n_acked && list != NULL; i++) {
        int code = jobs->acked[i];
        json_int_t job = (json_int_t)jobs->acked_seq[i];
        json_array_append_new(list, code == JINN_OK
                                        ? json_pack("{s:I, s:i}", "job", job, "status", 200)
                                        : json_pack("{s:I, s:i, s:s}", "job", job, "status",
                                                    jinn_error_http_status(code), "error",
                                                    jinn_error_name(code)));
    }
    jinn_http_reply_json(req, 200,
                         json_pack("{s:I, s:I, s:o}", "acked", (json_int_t)res->value, "index",
                                   (json_int_t)res->index, "results",
                                   list != NULL ? list : json_array()));
}

/* One ack's fields from obj into it (worker and the response text are
 * kept in the caller's buffers). */
static bool ack_item_or_reply(struct jinn_http_request *req, json_t *obj,
                              struct jinn_job_ack_item *it, char *worker, char **resp_text)
{
    uint64_t delivery, status;
    bool present;
    json_t *resp;
    if (!jinn_api_param_or_reply(req, obj, "worker", worker, JINN_QUEUE_WORKER_MAX + 1,
                                 &present)) {
        return false;
    }
    if (!present || worker[0] == '\0' || !jinn_utf8_valid(worker, strlen(worker))) {
        jinn_http_reply_error(req, JINN_EINVAL, "worker is required (1-128 bytes of UTF-8)");
        return false;
    }
    if (!jinn_api_uint_or_reply(req, obj, "delivery", 0, 0, UINT32_MAX, &delivery) ||
        !jinn_api_uint_or_reply(req, obj, "status", 200, 100, 599, &status)) {
        return false;
    }
    resp = json_object_get(obj, "response");
    if (resp != NULL && !json_is_object(resp)) {
        jinn_http_reply_error(req, JINN_EINVAL, "response must be a JSON object");
        return false;
    }
    *resp_text = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
    if (resp != NULL && *resp_text == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return false;
    }
    if (*resp_text != NULL && strlen(*resp_text) > JINN_JOB_RESULT_MAX) {
        jinn_http_reply_error(req, JINN_ETOOBIG, "response is over the job result limit");
        return false;
    }
    it->worker.p = (const uint8_t *)worker;
    it->worker.len = strlen(worker);
    it->delivery = delivery;
    it->status = (uint32_t)status;
    if (*resp_text != NULL) {
        it->response.p = (const uint8_t *)*resp_text;
        it->response.len = strlen(*resp_text);
    }
    return true;
}

static void ack_cmd_init(struct jinn_api *api, struct jinn_cmd *c, const char *queue)
{
    memset(c, 0, sizeof *c);
    c->type = JINN_CMD_JOB_ACK;
    c->job.queue.p = (const uint8_t *)queue;
    c->job.queue.len = strlen(queue);
    /* Retention is the leader's policy (job_result_ttl,
     * job_results_max_bytes), carried in the command. */
    c->job.keep_ms = api->cfg->job_result_ttl_ms;
    c->job.keep_bytes = api->cfg->job_results_max_bytes;
}

void jinn_api_job_ack(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    char queue[JINN_QUEUE_NAME_MAX + 1], worker[JINN_QUEUE_WORKER_MAX + 1];
    uint64_t id;
    json_t *body;
    char *resp_text = NULL;
    struct jinn_cmd c;

    if (!names_or_reply(req, args, queue) || !id_or_reply(req, args, &id)) {
        return;
    }
    body = jinn_api_body_json_or_reply(req);
    if (body == NULL) {
        return;
    }
    ack_cmd_init(api, &c, queue);
    c.job.n = 1;
    c.job.item[0].seq = id;
    if (ack_item_or_reply(req, body, &c.job.item[0], worker, &resp_text)) {
        jinn_api_propose_or_reply(api, req, &c, acked);
    }
    jinn_free(resp_text); /* jansson allocates through alloc.h (main.c) */
    json_decref(body);
}

/* POST /v1/functions/F/jobs/ack {"acks": [{"job", "worker", "delivery",
 * "status", "response"}, ...]}: 1..JINN_JOB_ACK_MAX acks in one JOB_ACK,
 * each settled on its own. */
void jinn_api_job_ack_batch(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_route_args *args)
{
    char queue[JINN_QUEUE_NAME_MAX + 1];
    char (*workers)[JINN_QUEUE_WORKER_MAX + 1] = NULL;
    char *texts[JINN_JOB_ACK_MAX] = {0};
    struct jinn_cmd *c = NULL;
    json_t *body, *acks;
    size_t n = 0, bytes = 0;

    if (!names_or_reply(req, args, queue)) {
        return;
    }
    body = jinn_api_body_json_or_reply(req);
    if (body == NULL) {
        return;
    }
    acks = json_object_get(body, "acks");
    if (!json_is_array(acks) || json_array_size(acks) == 0 ||
        json_array_size(acks) > JINN_JOB_ACK_MAX) {
        jinn_http_reply_error(req, JINN_EINVAL, "acks must be an array of 1-64 acks");
        goto cleanup;
    }
    c = jinn_malloc(sizeof *c);
    workers = jinn_malloc(JINN_JOB_ACK_MAX * sizeof *workers);
    if (c == NULL || workers == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto cleanup;
    }
    ack_cmd_init(api, c, queue);
    for (n = 0; n < json_array_size(acks); n++) {
        json_t *o = json_array_get(acks, n);
        json_t *job = json_object_get(o, "job");
        if (!json_is_object(o) || !json_is_integer(job) || json_integer_value(job) < 1) {
            jinn_http_reply_error(req, JINN_EINVAL, "each ack needs its job (a positive id)");
            goto cleanup;
        }
        c->job.item[n].seq = (uint64_t)json_integer_value(job);
        if (!ack_item_or_reply(req, o, &c->job.item[n], workers[n], &texts[n])) {
            n++; /* its text, if any, is freed below */
            goto cleanup;
        }
        bytes += c->job.item[n].response.len;
    }
    if (bytes > JINN_JOB_ACK_BYTES_MAX) {
        jinn_http_reply_error(req, JINN_ETOOBIG, "the responses are over the batch limit");
        goto cleanup;
    }
    c->job.n = (uint32_t)n;
    jinn_api_propose_or_reply(api, req, c, acked_batch);
cleanup:
    for (size_t i = 0; i < n && i < JINN_JOB_ACK_MAX; i++) {
        jinn_free(texts[i]);
    }
    jinn_free(workers);
    jinn_free(c);
    json_decref(body);
}
