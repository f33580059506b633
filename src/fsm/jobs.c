/* jobs.c - see jobs.h. A kept result sits in four trees: by (fn, seq) for
 * lookups, by (fn, ack index descending) for a function's newest-first
 * list, by ack index (cluster time never goes back, so this is
 * oldest-finished first) for the byte bound, and by expiry for the sweep.
 * The acks of one JOB_ACK share its index: the job id (seq, unique in the
 * one queue a JOB_ACK acts on) tells them apart in every order. */
#include "fsm/jobs.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/fatal.h"
#include "fsm/snapenc.h"
#include "log.h"

#define RES(n, member) jinn_tree_entry(n, struct jinn_job_result, member)
#define CRON(n, member) jinn_tree_entry(n, struct jinn_job_cron, member)

static int u64_cmp(uint64_t a, uint64_t b)
{
    return (a > b) - (a < b);
}

static int key_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_job_result *x = RES(a, by_key), *y = RES(b, by_key);
    int c = strcmp(x->fn, y->fn);
    return c ? c : u64_cmp(x->seq, y->seq);
}

static int fn_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_job_result *x = RES(a, by_fn), *y = RES(b, by_fn);
    int c = strcmp(x->fn, y->fn);
    c = c ? c : u64_cmp(y->index, x->index); /* newest first */
    return c ? c : u64_cmp(y->seq, x->seq);
}

static int index_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_job_result *x = RES(a, by_index), *y = RES(b, by_index);
    int c = u64_cmp(x->index, y->index);
    return c ? c : u64_cmp(x->seq, y->seq);
}

static int expiry_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_job_result *x = RES(a, by_expiry), *y = RES(b, by_expiry);
    int c = u64_cmp(x->expires_ms, y->expires_ms);
    c = c ? c : u64_cmp(x->index, y->index);
    return c ? c : u64_cmp(x->seq, y->seq);
}

static int cron_name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(CRON(a, by_name)->fn, CRON(b, by_name)->fn);
}

static int cron_next_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_job_cron *x = CRON(a, by_next), *y = CRON(b, by_next);
    int c = u64_cmp(x->next_ms, y->next_ms);
    return c ? c : strcmp(x->fn, y->fn);
}

void jinn_jobs_init(struct jinn_jobs *jobs)
{
    memset(jobs, 0, sizeof *jobs);
    jinn_tree_init(&jobs->results, key_cmp);
    jinn_tree_init(&jobs->by_fn, fn_cmp);
    jinn_tree_init(&jobs->by_index, index_cmp);
    jinn_tree_init(&jobs->by_expiry, expiry_cmp);
    jinn_tree_init(&jobs->crons, cron_name_cmp);
    jinn_tree_init(&jobs->cron_next, cron_next_cmp);
}

static void result_release(struct jinn_tree_node *n)
{
    jinn_free(RES(n, by_key));
}
static void cron_release(struct jinn_tree_node *n)
{
    jinn_free(CRON(n, by_name));
}

void jinn_jobs_clear(struct jinn_jobs *jobs)
{
    jinn_tree_release_all(&jobs->results, result_release);
    jinn_tree_release_all(&jobs->crons, cron_release);
    jinn_jobs_init(jobs);
}

static uint64_t result_cost(const struct jinn_job_result *r)
{
    return r->len + JINN_JOB_RESULT_OVERHEAD;
}

static void result_link(struct jinn_jobs *jobs, struct jinn_job_result *r)
{
    jinn_fsm_link(&jobs->results, &r->by_key, "job results");
    jinn_fsm_link(&jobs->by_fn, &r->by_fn, "job results by function");
    jinn_fsm_link(&jobs->by_index, &r->by_index, "job results by index");
    jinn_fsm_link(&jobs->by_expiry, &r->by_expiry, "job results by expiry");
    jobs->bytes += result_cost(r);
}

static void result_remove(struct jinn_jobs *jobs, struct jinn_job_result *r)
{
    jinn_fsm_unlink(&jobs->results, &r->by_key, "job results");
    jinn_fsm_unlink(&jobs->by_fn, &r->by_fn, "job results by function");
    jinn_fsm_unlink(&jobs->by_index, &r->by_index, "job results by index");
    jinn_fsm_unlink(&jobs->by_expiry, &r->by_expiry, "job results by expiry");
    jobs->bytes -= result_cost(r);
    jinn_free(r);
}

void jinn_jobs_expire(struct jinn_jobs *jobs, uint64_t now)
{
    struct jinn_tree_node *n;
    while ((n = jinn_tree_first(&jobs->by_expiry)) != NULL &&
           RES(n, by_expiry)->expires_ms <= now) {
        result_remove(jobs, RES(n, by_expiry));
    }
}

uint64_t jinn_jobs_next_due(const struct jinn_jobs *jobs)
{
    struct jinn_tree_node *n = jinn_tree_first(&jobs->by_expiry);
    return n ? RES(n, by_expiry)->expires_ms : 0;
}

static struct jinn_job_result *find_result(const struct jinn_jobs *jobs, const char *fn,
                                           uint64_t seq)
{
    struct jinn_job_result probe;
    struct jinn_tree_node *n;
    if (strlen(fn) > JINN_FN_NAME_MAX) {
        return NULL;
    }
    memcpy(probe.fn, fn, strlen(fn) + 1);
    probe.seq = seq;
    n = jinn_tree_find(&jobs->results, &probe.by_key);
    return n ? RES(n, by_key) : NULL;
}

const struct jinn_job_result *jinn_jobs_result(const struct jinn_jobs *jobs, const char *fn,
                                               uint64_t seq)
{
    return find_result(jobs, fn, seq);
}

const struct jinn_job_result *jinn_jobs_results_next(const struct jinn_jobs *jobs,
                                                     const char *fn,
                                                     const struct jinn_job_result *after)
{
    struct jinn_job_result probe;
    struct jinn_tree_iter it;
    struct jinn_tree_node *n;
    if (strlen(fn) > JINN_FN_NAME_MAX) {
        return NULL;
    }
    memcpy(probe.fn, fn, strlen(fn) + 1);
    /* Newest first: seek to (fn, newest possible), or just past after. */
    probe.index = after != NULL ? after->index : UINT64_MAX;
    probe.seq = after != NULL ? after->seq : UINT64_MAX;
    n = jinn_tree_seek(&jobs->by_fn, &probe.by_fn, &it);
    if (n != NULL && after != NULL && RES(n, by_fn) == after) {
        n = jinn_tree_next(&it);
    }
    if (n == NULL || strcmp(RES(n, by_fn)->fn, fn) != 0) {
        return NULL;
    }
    return RES(n, by_fn);
}

/* ---- JOB_ACK --------------------------------------------------------------- */

static int ack_one(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                   const struct jinn_cmd *c, const struct jinn_job_ack_item *it)
{
    size_t prefix = sizeof JINN_JOB_QUEUE_PREFIX - 1;
    struct jinn_cmd ack;
    struct jinn_job_result *r, *old;
    struct jinn_tree_node *n;
    uint64_t value;
    int rv;

    /* Exactly Q_ACK's checks and effect (the same code), so a job acked
     * either way is acked the same. */
    memset(&ack, 0, sizeof ack);
    ack.type = JINN_CMD_Q_ACK;
    ack.version = c->version;
    ack.time_ms = c->time_ms;
    ack.q.queue = c->job.queue;
    ack.q.worker = it->worker;
    ack.q.seq = it->seq;
    ack.q.delivery = it->delivery;
    rv = jinn_queues_lease_check(qs, &ack);
    if (rv != JINN_OK) {
        return rv;
    }
    /* cmd.c checked the queue is WORKERS_<valid fn name> and the sizes. */
    r = jinn_calloc(1, sizeof *r + it->response.len);
    if (r == NULL) {
        return JINN_ENOMEM;
    }
    memcpy(r->fn, c->job.queue.p + prefix, c->job.queue.len - prefix);
    r->seq = it->seq;
    r->index = index;
    r->finished_ms = now;
    r->expires_ms = jinn_fsm_deadline(now, c->job.keep_ms);
    r->status = it->status;
    memcpy(r->worker, it->worker.p, it->worker.len);
    r->len = it->response.len;
    if (r->len > 0) {
        memcpy(r->response, it->response.p, r->len);
    }
    {
        const struct jinn_queue *q =
            jinn_queues_get(qs, (const char *)c->job.queue.p, c->job.queue.len);
        r->delivery = jinn_queue_msg(q, it->seq)->delivery; /* checked leased above */
    }
    rv = jinn_queues_apply(qs, index, now, &ack, &value);
    if (rv != JINN_OK) {
        jinn_fsm_fatal("job ack: the queue refused an ack its check allowed (%s)",
                       jinn_error_name(rv));
    }
    /* A seq is acked once (ack removes the message); a result already kept
     * under it would come from a hand-made snapshot: the new one wins. */
    old = find_result(jobs, r->fn, r->seq);
    if (old != NULL) {
        result_remove(jobs, old);
    }
    result_link(jobs, r);
    /* Over the byte bound: the oldest-finished go first (this one last). */
    while (jobs->bytes > c->job.keep_bytes && (n = jinn_tree_first(&jobs->by_index)) != NULL) {
        result_remove(jobs, RES(n, by_index));
    }
    return JINN_OK;
}

int jinn_jobs_ack(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                  const struct jinn_cmd *c, uint64_t *value)
{
    *value = 0;
    jobs->n_acked = c->job.n;
    for (uint32_t i = 0; i < c->job.n; i++) {
        int rv = ack_one(jobs, qs, index, now, c, &c->job.item[i]);
        if (rv == JINN_ENOMEM) {
            return rv;
        }
        jobs->acked[i] = rv;
        jobs->acked_seq[i] = c->job.item[i].seq;
        *value += rv == JINN_OK;
    }
    return JINN_OK;
}

/* ---- cron ------------------------------------------------------------------- */

static struct jinn_job_cron *find_cron(const struct jinn_jobs *jobs, const char *fn, size_t len)
{
    struct jinn_job_cron probe;
    struct jinn_tree_node *n;
    if (len > JINN_FN_NAME_MAX) {
        return NULL;
    }
    memcpy(probe.fn, fn, len);
    probe.fn[len] = '\0';
    n = jinn_tree_find(&jobs->crons, &probe.by_name);
    return n ? CRON(n, by_name) : NULL;
}

static void cron_remove(struct jinn_jobs *jobs, struct jinn_job_cron *e)
{
    jinn_fsm_unlink(&jobs->cron_next, &e->by_next, "cron by next tick");
    jinn_fsm_unlink(&jobs->crons, &e->by_name, "cron by function");
    jinn_free(e);
}

static void cron_set_next(struct jinn_jobs *jobs, struct jinn_job_cron *e, uint64_t next)
{
    jinn_fsm_unlink(&jobs->cron_next, &e->by_next, "cron by next tick");
    e->next_ms = next;
    jinn_fsm_link(&jobs->cron_next, &e->by_next, "cron by next tick");
}

void jinn_jobs_fn_changed(struct jinn_jobs *jobs, const struct jinn_fns *fns, const char *name,
                          size_t name_len, uint64_t now)
{
    char fn[JINN_FN_NAME_MAX + 1];
    const struct jinn_fn *f;
    struct jinn_job_cron *e;
    const char *expr;
    uint64_t next;

    if (name_len > JINN_FN_NAME_MAX) {
        return;
    }
    memcpy(fn, name, name_len);
    fn[name_len] = '\0';
    f = jinn_fns_get(fns, fn);
    e = find_cron(jobs, fn, name_len);
    expr = f != NULL && f->active != NULL ? f->active->settings.cron : "";
    if (name_len > JINN_JOB_FN_NAME_MAX) {
        expr = ""; /* WORKERS_<name> would be over the queue name limit */
    }
    if (expr[0] == '\0') {
        if (e != NULL) {
            cron_remove(jobs, e);
        }
        return;
    }
    if (e != NULL && strcmp(e->expr, expr) == 0) {
        return; /* same schedule: its next tick stands */
    }
    /* Settings were validated at apply (cron.h), so a tick exists unless
     * cluster time is past year 9999: then the function just has none. */
    next = jinn_cron_next(expr, now);
    if (next == 0) {
        if (e != NULL) {
            cron_remove(jobs, e);
        }
        return;
    }
    if (e == NULL) {
        e = jinn_calloc(1, sizeof *e);
        if (e == NULL) {
            jinn_fsm_fatal("out of memory scheduling %s's cron", fn);
        }
        memcpy(e->fn, fn, name_len + 1);
        e->next_ms = next;
        snprintf(e->expr, sizeof e->expr, "%s", expr);
        jinn_fsm_link(&jobs->crons, &e->by_name, "cron by function");
        jinn_fsm_link(&jobs->cron_next, &e->by_next, "cron by next tick");
        return;
    }
    snprintf(e->expr, sizeof e->expr, "%s", expr);
    cron_set_next(jobs, e, next);
}

int jinn_jobs_cron(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                   const struct jinn_cmd *c, uint64_t *value)
{
    struct jinn_job_cron *e = find_cron(jobs, (const char *)c->cron.name.p, c->cron.name.len);
    char queue[JINN_QUEUE_NAME_MAX + JINN_FN_NAME_MAX + 1], iso[21], payload[192];
    struct jinn_cmd pub;
    uint64_t next, at;
    int n, rv;

    *value = 0;
    /* Cron is UTC: "now" is the later of the entry's cluster time and the
     * proposer's wall clock carried in the entry (deterministic: every
     * replica reads the same entry). Cluster time lags UTC by the outage
     * after a full-cluster restart and only catches up at 1 % (clock.h);
     * the leader's wall clock does not. A leader whose clock runs ahead
     * moves ticks earlier, as any cron's host clock would. */
    at = c->cron.now_ms > now ? c->cron.now_ms : now;
    /* Only the function's pending tick, once it is due: a stale or repeated
     * proposal (two leaders, a retry) changes nothing. */
    if (e == NULL || c->cron.tick_ms != e->next_ms || e->next_ms > at) {
        return JINN_ECONFLICT;
    }
    jinn_cron_iso8601(e->next_ms, iso);
    n = snprintf(payload, sizeof payload,
                 "{\"event_type\":\"cron\",\"source\":\"gojinn_scheduler\",\"tick_ms\":%llu,"
                 "\"tick\":\"%s\"}",
                 (unsigned long long)e->next_ms, iso);
    snprintf(queue, sizeof queue, "%s%s", JINN_JOB_QUEUE_PREFIX, e->fn);
    memset(&pub, 0, sizeof pub);
    pub.type = JINN_CMD_Q_PUBLISH;
    pub.version = c->version;
    pub.time_ms = c->time_ms;
    pub.q.queue.p = (const uint8_t *)queue;
    pub.q.queue.len = strlen(queue);
    pub.q.payload.p = (const uint8_t *)payload;
    pub.q.payload.len = (size_t)n;
    pub.q.count = c->cron.max_length;
    pub.q.bytes = c->cron.max_bytes;
    pub.q.max_deliver = c->cron.max_deliver;
    rv = jinn_queues_apply(qs, index, now, &pub, value);
    if (rv == JINN_ENOMEM) {
        return rv;
    }
    /* Fired or dropped (JINN_EFULL: the queue is full), the schedule moves
     * on to the first tick after this entry's "now" (at, above): missed
     * ticks run once, never
     * as a flood, and a full queue is not retried at every entry. */
    next = jinn_cron_next(e->expr, at);
    if (next == 0) {
        cron_remove(jobs, e);
    } else {
        cron_set_next(jobs, e, next);
    }
    return rv;
}

uint64_t jinn_jobs_cron_next(const struct jinn_jobs *jobs, char name[65])
{
    struct jinn_tree_node *n = jinn_tree_first(&jobs->cron_next);
    name[0] = '\0';
    if (n == NULL) {
        return 0;
    }
    memcpy(name, CRON(n, by_next)->fn, strlen(CRON(n, by_next)->fn) + 1);
    return CRON(n, by_next)->next_ms;
}

uint64_t jinn_jobs_cron_of(const struct jinn_jobs *jobs, const char *fn)
{
    const struct jinn_job_cron *e = find_cron(jobs, fn, strlen(fn));
    return e ? e->next_ms : 0;
}

/* ---- snapshot ----------------------------------------------------------------
 *
 * u64 result count; per result in (fn, seq) order: str fn, u64 seq, index,
 * finished_ms, expires_ms, delivery, u32 status, str worker, bytes response;
 * u64 cron count; per entry in name order: str fn, str expr, u64 next_ms. */
void jinn_jobs_encode(const struct jinn_jobs *jobs, struct jinn_wbuf *w)
{
    struct jinn_tree_iter it;
    jinn_wbuf_put_u64(w, jobs->results.count);
    for (struct jinn_tree_node *n = jinn_tree_seek(&jobs->results, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        const struct jinn_job_result *r = RES(n, by_key);
        size_t fn_len = strlen(r->fn), worker_len = strlen(r->worker);
        /* One reserve per result, fields written in place (codec.h). */
        size_t size = 4 + fn_len + 40 + 4 + 4 + worker_len + 4 + r->len;
        uint8_t *p;
        if (!jinn_wbuf_reserve(w, size)) {
            return;
        }
        p = w->data + w->len;
        p = jinn_enc_bytes(p, r->fn, fn_len);
        p = jinn_enc_u64(p, r->seq);
        p = jinn_enc_u64(p, r->index);
        p = jinn_enc_u64(p, r->finished_ms);
        p = jinn_enc_u64(p, r->expires_ms);
        p = jinn_enc_u64(p, r->delivery);
        p = jinn_enc_u32(p, r->status);
        p = jinn_enc_bytes(p, r->worker, worker_len);
        (void)jinn_enc_bytes(p, r->response, r->len);
        w->len += size;
    }
    jinn_wbuf_put_u64(w, jobs->crons.count);
    for (struct jinn_tree_node *n = jinn_tree_seek(&jobs->crons, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        const struct jinn_job_cron *e = CRON(n, by_name);
        jinn_wbuf_put_str(w, e->fn);
        jinn_wbuf_put_str(w, e->expr);
        jinn_wbuf_put_u64(w, e->next_ms);
    }
}

static bool text_ok(const uint8_t *p, size_t len)
{
    return memchr(p, '\0', len) == NULL;
}

static int decode_results(struct jinn_jobs *jobs, struct jinn_rbuf *r)
{
    uint64_t count = jinn_rbuf_get_u64(r);
    /* Each result takes at least 58 bytes (1-byte name and worker, empty
     * response): a count beyond what is left is a lie, refused before
     * anything is allocated for it. */
    if (r->failed || count > r->left / 58) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *fn, *worker, *resp;
        size_t fn_len = jinn_rbuf_get_bytes(r, &fn, JINN_FN_NAME_MAX);
        uint64_t seq = jinn_rbuf_get_u64(r), index = jinn_rbuf_get_u64(r);
        uint64_t finished = jinn_rbuf_get_u64(r), expires = jinn_rbuf_get_u64(r);
        uint64_t delivery = jinn_rbuf_get_u64(r);
        uint32_t status = jinn_rbuf_get_u32(r);
        size_t worker_len = jinn_rbuf_get_bytes(r, &worker, JINN_QUEUE_WORKER_MAX);
        size_t len = jinn_rbuf_get_bytes(r, &resp, JINN_JOB_RESULT_MAX);
        struct jinn_job_result *res;
        if (r->failed || !jinn_fn_name_valid((const char *)fn, fn_len) || worker_len == 0 ||
            !text_ok(worker, worker_len) || seq == 0 || index == 0 || expires < finished) {
            return JINN_ECORRUPT;
        }
        res = jinn_calloc(1, sizeof *res + len);
        if (res == NULL) {
            return JINN_ENOMEM;
        }
        memcpy(res->fn, fn, fn_len);
        res->seq = seq;
        res->index = index;
        res->finished_ms = finished;
        res->expires_ms = expires;
        res->delivery = delivery;
        res->status = status;
        memcpy(res->worker, worker, worker_len);
        res->len = len;
        if (len > 0) {
            memcpy(res->response, resp, len);
        }
        /* Keys and (ack index, seq) are unique: a duplicate is a corrupt
         * file. */
        if (jinn_tree_insert(&jobs->results, &res->by_key) != NULL) {
            jinn_free(res);
            return JINN_ECORRUPT;
        }
        if (jinn_tree_insert(&jobs->by_index, &res->by_index) != NULL) {
            jinn_tree_remove(&jobs->results, &res->by_key);
            jinn_free(res);
            return JINN_ECORRUPT;
        }
        jinn_tree_insert(&jobs->by_fn, &res->by_fn);         /* (fn, index, seq): unique */
        jinn_tree_insert(&jobs->by_expiry, &res->by_expiry); /* (expiry, index, seq) */
        jobs->bytes += result_cost(res);
    }
    return 0;
}

static int decode_crons(struct jinn_jobs *jobs, const struct jinn_fns *fns, struct jinn_rbuf *r)
{
    uint64_t count = jinn_rbuf_get_u64(r);
    if (r->failed || count > JINN_FN_MAX || count > r->left / 17) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *fn, *expr;
        size_t fn_len = jinn_rbuf_get_bytes(r, &fn, JINN_FN_NAME_MAX);
        size_t expr_len = jinn_rbuf_get_bytes(r, &expr, JINN_CRON_EXPR_MAX);
        uint64_t next = jinn_rbuf_get_u64(r);
        struct jinn_cron parsed;
        struct jinn_job_cron *e;
        char err[160];
        const struct jinn_fn *f;
        /* WORKERS_<fn> must fit a queue name (JOB_CRON builds it), the
         * expression must round-trip (no NUL) and parse, and the entry must
         * be the one jinn_jobs_fn_changed keeps: the function's active
         * version with this very schedule. Anything else is a forged file. */
        if (r->failed || fn_len > JINN_JOB_FN_NAME_MAX ||
            !jinn_fn_name_valid((const char *)fn, fn_len) || next == 0 || expr_len == 0 ||
            !text_ok(expr, expr_len) ||
            jinn_cron_parse((const char *)expr, expr_len, &parsed, err, sizeof err) != 0) {
            return JINN_ECORRUPT;
        }
        e = jinn_calloc(1, sizeof *e);
        if (e == NULL) {
            return JINN_ENOMEM;
        }
        memcpy(e->fn, fn, fn_len);
        memcpy(e->expr, expr, expr_len);
        e->next_ms = next;
        f = jinn_fns_get(fns, e->fn);
        if (f == NULL || f->active == NULL || strcmp(f->active->settings.cron, e->expr) != 0) {
            jinn_free(e);
            return JINN_ECORRUPT;
        }
        if (jinn_tree_insert(&jobs->crons, &e->by_name) != NULL) {
            jinn_free(e);
            return JINN_ECORRUPT;
        }
        jinn_tree_insert(&jobs->cron_next, &e->by_next); /* (next, name): unique */
    }
    return 0;
}

int jinn_jobs_decode(struct jinn_jobs *jobs, const struct jinn_fns *fns, struct jinn_rbuf *r)
{
    int rv = decode_results(jobs, r);
    if (rv == 0) {
        rv = decode_crons(jobs, fns, r);
    }
    if (rv != 0) {
        jinn_jobs_clear(jobs);
    }
    return rv;
}
