/* jobs.c - see jobs.h.
 *
 * A slot is a small state machine on the loop: FETCH (waiting for the
 * pool's fetch) -> RUN (the runner has the job; a progress timer keeps the lease)
 * -> SETTLE (ack or nak in flight) -> FETCH again; on a failed fetch or
 * settle it waits (BACKOFF) and tries again. The idle slots of a function
 * share one long-poll, which leases as many jobs as there are idle slots
 * (one Q_FETCH entry for many jobs), under one worker id per node and
 * function, and the acks its slots finish in one loop turn go to the
 * leader together (one JOB_ACK for many; naks stay one by one). Every request goes through
 * fetch.c to this node's own API, which forwards what is the leader's to
 * the leader: one code path for leader and followers, and the leader's
 * own checks (lease holder, delivery count) decide. A slot whose function
 * is gone (deleted, workers 0, module no longer warm here, or the node cap
 * shrank) leaves after its current job. */
#include "wasm/jobs.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "api/api.h"
#include "config.h"
#include "error.h"
#include "fetch.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"
#include "fsm/fsm.h"
#include "fsm/jobs.h"
#include "log.h"
#include "node.h"
#include "wasm/runner.h"

#define TICK_MS 250            /* looks at the registry (restores, warm pools) */
#define FETCH_WAIT "20s"       /* long-poll of one fetch */
#define FETCH_TIMEOUT_MS 25000 /* the fetch's whole exchange: the wait + margin */
#define REQ_TIMEOUT_MS 5000    /* progress, ack, nak */
#define BACKOFF_MIN_MS 100     /* after a failed fetch (no leader, no quorum) */
#define BACKOFF_MAX_MS 5000
#define SETTLE_TRIES 8 /* an ack/nak that failed to reach the leader */
/* The runner here cannot take the function's jobs now (its pool queue is
 * full, the pool drains or is not warm): a slot waits before it leases
 * (CAPACITY_WAIT_*), and a job it leased anyway is naked with a delay that
 * grows with each such refusal (REFUSED_DELAY_*), never 0: each nak costs a
 * delivery, so the job must not bounce back at once. */
#define CAPACITY_WAIT_MIN_MS 50
#define CAPACITY_WAIT_MAX_MS 1000
#define REFUSED_DELAY_MIN_MS 500
#define REFUSED_DELAY_MAX_MS 30000
#define QUEUE_PREFIX "WORKERS_"
#define SLOTS_PER_FN_MAX 64 /* the settings' workers cap */
/* A pool's fetch leases at most this many payload bytes (the API's body
 * limit each), so its response stays under fetch.c's limit. */
#define FETCH_BATCH_BYTES (64u << 20)
/* Ack requests of one function in flight at once: the acks that finish
 * meanwhile wait and go together when one is back (group commit). */
#define ACKS_IN_FLIGHT_MAX 2
/* Fetches of one function in flight at once. Slots that become idle while
 * one is out wait for it to be back and go in the next; 2 (a second fetch
 * for them) halved the jobs per fetch (4.9 -> 2.7) for no measurable gain
 * in bench/jobs, so one. */
#define FETCHES_IN_FLIGHT_MAX 1
#define HEADERS "Content-Type: application/json\r\n"

/* The setting J1 adds to struct jinn_fn_settings (`workers`, default 1).
 * JOBS_FN_WORKERS is the one place that reads it. */
#ifdef JINN_FN_WORKERS_DEFAULT
#define JOBS_FN_WORKERS(s) ((s)->workers)
#else
#define JOBS_FN_WORKERS(s) ((void)(s), 1u)
#endif

enum slot_state { S_FETCH, S_RUN, S_SETTLE, S_BACKOFF, S_DONE };

struct slot;

/* One HTTP request of a slot in flight; its address is fetch.c's
 * cancellation handle. */
struct sreq {
    struct slot *s;
    bool busy;
};

/* The pool's shared fetch in flight. */
struct preq {
    struct fnpool *fp;
    bool busy;
    unsigned max; /* jobs it asked for: at most the slots waiting for it */
};

struct fnpool {
    struct fnpool *next;
    struct jinn_job_pools *j;
    char name[JINN_FN_NAME_MAX + 1];
    char queue[JINN_QUEUE_NAME_MAX + 1];
    char worker[JINN_QUEUE_WORKER_MAX + 1]; /* NODE/F: the lease holder of its jobs */
    uint64_t ack_wait_ms;
    unsigned fails; /* consecutive fetch failures (backoff) */
    struct preq rq_fetch[FETCHES_IN_FLIGHT_MAX];
    struct slot *ackq[SLOTS_PER_FN_MAX]; /* acks waiting for the loop turn's batch */
    unsigned n_ackq;
    unsigned acks_in_flight;
    uint64_t ack_batches; /* batched ack requests sent */
    uint64_t fetches;     /* fetch requests sent */
    uint64_t acks_alone;  /* acks sent on their own (alone in their turn) */
    unsigned want;                             /* slots this node keeps for it now */
    unsigned wish;                             /* slots it asks for (workers, warm) */
    bool starved;                              /* asks, but the node cap left it none */
    struct slot *slots[SLOTS_PER_FN_MAX];      /* NULL: free index */
    uint64_t done, failed, dead_settles, lost; /* counters since start */
};

struct slot {
    struct fnpool *fp;
    unsigned idx;
    enum slot_state state;
    char worker[JINN_QUEUE_WORKER_MAX + 1];
    uint64_t seq, delivery, ack_wait_ms, started_ms;
    unsigned waits;   /* consecutive capacity waits before a fetch */
    unsigned refused; /* consecutive jobs the runner refused (nak delay) */
    unsigned settle_tries;
    bool running;        /* the runner holds it */
    bool handed_back;    /* naked at shutdown: the run's outcome is dropped */
    bool leaving;        /* stops after its current job */
    char *settle_target; /* the settle request, kept for retries */
    char *settle_body;
    uv_timer_t timer; /* backoff; progress while running */
    bool timer_open;
    struct sreq rq_progress, rq_settle;
};

struct jinn_job_pools {
    struct jinn_api *api;
    uv_loop_t *loop;
    char base_url[320];
    struct fnpool *pools;
    unsigned slots; /* all functions together */
    uv_timer_t tick, soon, flush; /* flush: the loop turn's acks */
    unsigned timers_open;
    uint64_t rng;
    bool stopping, grace_over;
    uv_timer_t grace;
    bool grace_open;
    void (*stopped)(void *data);
    void *stopped_data;
    bool stop_reported;
    uint64_t fetch_errors, settle_errors, handed_back;
    bool cron_proposing; /* a JOB_CRON of ours is in flight */
    uint64_t synced_generation; /* the registry's generation at the last sync */
    uint64_t cron_proposed, cron_fired;
};

static void slot_next(struct slot *s);
static void pool_fetch(struct fnpool *fp);

static unsigned fetches_busy(const struct fnpool *fp)
{
    unsigned n = 0;
    for (unsigned i = 0; i < FETCHES_IN_FLIGHT_MAX; i++) {
        n += fp->rq_fetch[i].busy;
    }
    return n;
}
static void tick_cb(uv_timer_t *t);
static void maybe_stopped(struct jinn_job_pools *j);
static void soon_cb(uv_timer_t *t);

static uint64_t rng_next(struct jinn_job_pools *j)
{
    j->rng ^= j->rng << 13;
    j->rng ^= j->rng >> 7;
    j->rng ^= j->rng << 17;
    return j->rng;
}

static const struct jinn_fns *registry(const struct jinn_job_pools *j)
{
    return &jinn_node_fsm(j->api->node)->fns;
}

static bool slot_idle(const struct slot *s)
{
    return !s->running && !s->rq_progress.busy && !s->rq_settle.busy;
}

static void slot_timer_closed(uv_handle_t *h)
{
    struct slot *s = h->data;
    struct jinn_job_pools *j = s->fp->j;
    jinn_free(s);
    maybe_stopped(j);
}

/* Frees s once nothing of it is in flight. */
static void slot_maybe_free(struct slot *s)
{
    struct fnpool *fp = s->fp;
    if (s->state != S_DONE || !slot_idle(s) || !s->timer_open) {
        return;
    }
    fp->slots[s->idx] = NULL;
    fp->j->slots--;
    jinn_free(s->settle_target);
    jinn_free(s->settle_body);
    s->settle_target = s->settle_body = NULL;
    s->timer_open = false;
    uv_close((uv_handle_t *)&s->timer, slot_timer_closed);
}

static void slot_finish(struct slot *s)
{
    struct jinn_job_pools *j = s->fp->j;
    s->state = S_DONE;
    uv_timer_stop(&s->timer);
    slot_maybe_free(s);
    maybe_stopped(j);
}

/* Every request of the pools: a POST to this node's own API. */
static int post_raw(struct jinn_job_pools *j, const char *target, const char *body,
                    size_t body_len, uint64_t timeout_ms, jinn_fetch_cb cb, void *data)
{
    char headers[sizeof HEADERS + 256];
    /* With tokens on, the node's internal credential (read per request:
     * the key arrives with the bootstrap entry, after the pools start;
     * until then the calls get 401 and back off). With http_tls, fetch.c
     * speaks TLS to every URL, this node's own included. */
    memcpy(headers, HEADERS, sizeof HEADERS);
    jinn_api_auth_internal_header(j->api, headers + sizeof HEADERS - 1,
                                  sizeof headers - (sizeof HEADERS - 1));
    return jinn_fetch(j->loop, j->base_url, "POST", target, strlen(target), headers, body,
                      body_len, timeout_ms, cb, data);
}

static int post(struct slot *s, struct sreq *rq, const char *target, const char *body,
                uint64_t timeout_ms, jinn_fetch_cb cb)
{
    int rv = post_raw(s->fp->j, target, body, strlen(body), timeout_ms, cb, rq);
    rq->busy = rv == 0;
    return rv;
}

static char *target_for(const struct slot *s, const char *what)
{
    char buf[512];
    snprintf(buf, sizeof buf, "/v1/queues/%s/%" PRIu64 "/%s", s->fp->queue, s->seq, what);
    return jinn_strdup(buf);
}

/* Appends s (n bytes of UTF-8) as a JSON string. Written here rather than
 * through jansson: a job's request and ack are built per job on the loop,
 * and json_dumps was a tenth of a node's CPU in bench/jobs. */
/* Nesting depth kept in an ack's response: the ack wraps the response one
 * level deeper (two in a batch), and the API refuses JSON deeper than
 * jansson's 2048 levels, so a deeper response would be refused at every
 * delivery and the job run again until it is dead. */
#define JOB_RESPONSE_DEPTH_MAX 2000

/* The deepest nesting of the compact JSON text s (strings skipped). */
static unsigned json_depth(const char *s, size_t n)
{
    unsigned depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > deepest) {
                deepest = depth;
            }
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return deepest;
}

static void put_json_string(struct jinn_wbuf *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    jinn_wbuf_put_raw(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen = 2;
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        jinn_wbuf_put_raw(w, s + run, i - run);
        run = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
            break;
        }
        jinn_wbuf_put_raw(w, esc, elen);
    }
    jinn_wbuf_put_raw(w, s + run, n - run);
    jinn_wbuf_put_raw(w, "\"", 1);
}

/* The wbuf's bytes as a NUL-terminated string (jinn_free), or NULL. */
static char *wbuf_string(struct jinn_wbuf *w)
{
    char *out = NULL;
    jinn_wbuf_put_raw(w, "", 1);
    if (!w->failed) {
        out = (char *)w->data;
        w->data = NULL;
    }
    jinn_wbuf_free(w);
    return out;
}

/* ---- backoff ------------------------------------------------------------------------- */

/* min doubled n times, at most max. */
static uint64_t grow(uint64_t min, uint64_t max, unsigned n)
{
    uint64_t ms = min;
    for (unsigned i = 0; i < n && ms < max; i++) {
        ms *= 2;
    }
    return ms < max ? ms : max;
}

/* The first slot back from a fetch backoff brings the others waiting with
 * it, so the next fetch is one for all of them again. */
static void backoff_done(uv_timer_t *t)
{
    struct slot *s = t->data;
    struct fnpool *fp = s->fp;
    if (s->state != S_BACKOFF) {
        return;
    }
    if (fp->j->stopping) {
        slot_finish(s);
        return;
    }
    if (!s->leaving && !jinn_wasm_runner_can_take(fp->j->api->wasm, fp->name)) {
        /* The runner here cannot take the job now: wait, do not lease. */
        uv_timer_start(&s->timer, backoff_done,
                       grow(CAPACITY_WAIT_MIN_MS, CAPACITY_WAIT_MAX_MS, s->waits++), 0);
        return;
    }
    s->waits = 0;
    for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
        struct slot *o = fp->slots[i];
        if (o != NULL && o->state == S_BACKOFF) {
            uv_timer_stop(&o->timer);
            if (o->leaving) {
                slot_finish(o);
            } else {
                o->state = S_FETCH;
            }
        }
    }
    pool_fetch(fp);
}

/* A fetch failed (no leader, no quorum, the leader refused): the slots
 * that waited for it wait, doubling up to BACKOFF_MAX_MS, with jitter so
 * the pools of every node do not come back together. */
static void pool_backoff(struct fnpool *fp)
{
    struct jinn_job_pools *j = fp->j;
    uint64_t ms = BACKOFF_MIN_MS;
    for (unsigned i = 0; i < fp->fails && ms < BACKOFF_MAX_MS; i++) {
        ms *= 2;
    }
    if (ms > BACKOFF_MAX_MS) {
        ms = BACKOFF_MAX_MS;
    }
    fp->fails++;
    for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
        struct slot *s = fp->slots[i];
        if (s != NULL && s->state == S_FETCH) {
            s->state = S_BACKOFF;
            uv_timer_start(&s->timer, backoff_done, ms / 2 + rng_next(j) % (ms / 2 + 1), 0);
        }
    }
}

/* ---- settle -------------------------------------------------------------------------- */

static void settle_send(struct slot *s);

static void settle_retry(uv_timer_t *t)
{
    struct slot *s = t->data;
    if (s->state == S_SETTLE && !s->rq_settle.busy) {
        settle_send(s);
    }
}

static void settle_over(struct slot *s)
{
    jinn_free(s->settle_target);
    jinn_free(s->settle_body);
    s->settle_target = s->settle_body = NULL;
    s->state = S_BACKOFF;
    if (s->fp->j->stopping || s->leaving) {
        slot_finish(s);
    } else {
        slot_next(s);
    }
}

static void settled(void *data, int code, const struct jinn_http_msg *head, const char *body,
                    size_t body_len)
{
    struct sreq *rq = data;
    struct slot *s = rq->s;
    struct jinn_job_pools *j = s->fp->j;
    (void)body;
    (void)body_len;
    rq->busy = false;
    if (code == JINN_OK && head->status == 404 && strstr(s->settle_target, "/jobs/") != NULL) {
        /* The jobs ack endpoint is missing (a node of a build before it
         * answered): the plain queue ack settles the lease all the same. */
        char *t = target_for(s, "ack");
        if (t != NULL) {
            jinn_free(s->settle_target);
            s->settle_target = t;
            settle_send(s);
            return;
        }
    }
    if (code == JINN_OK && (head->status < 500 || head->status == 507)) {
        if (head->status == 409 || head->status == 404) {
            s->fp->lost++; /* the lease had expired: another worker has the job */
        } else if (head->status >= 400) {
            j->settle_errors++; /* refused: the lease expires, the job comes back */
        }
        settle_over(s);
        return;
    }
    /* No answer, or 5xx (no leader, not committed in time): the lease is
     * still ours until it expires, so try again a few times. A settle that
     * may have been applied (JINN_EUNKNOWN) is retried too: the second ack
     * or nak of the same delivery gets 409, which is fine. */
    j->settle_errors++;
    if (++s->settle_tries >= SETTLE_TRIES || j->grace_over) {
        settle_over(s);
        return;
    }
    uv_timer_start(&s->timer, settle_retry,
                   BACKOFF_MIN_MS * s->settle_tries + rng_next(j) % BACKOFF_MIN_MS, 0);
}

static void settle_send(struct slot *s)
{
    if (post(s, &s->rq_settle, s->settle_target, s->settle_body, REQ_TIMEOUT_MS, settled) !=
        0) {
        settle_over(s); /* refused by fetch.c: shutting down */
    }
}

static void settle(struct slot *s, char *target, json_t *body)
{
    s->state = S_SETTLE;
    s->settle_tries = 0;
    uv_timer_stop(&s->timer);
    jinn_free(s->settle_target);
    jinn_free(s->settle_body);
    s->settle_target = target;
    s->settle_body = NULL;
    if (body != NULL) {
        char *dumped = json_dumps(body, JSON_COMPACT);
        s->settle_body = dumped != NULL ? jinn_strdup(dumped) : NULL;
        free(dumped);
    }
    json_decref(body);
    if (s->settle_target == NULL || s->settle_body == NULL) {
        settle_over(s); /* out of memory: the lease expires and the job comes back */
        return;
    }
    settle_send(s);
}

/* ---- batched acks --------------------------------------------------------------------
 *
 * The acks of one function finished in one loop turn go in one request
 * (POST /v1/functions/F/jobs/ack, one JOB_ACK), and while ACKS_IN_FLIGHT_MAX
 * such requests are in flight, the acks finished meanwhile wait for one to
 * be back: the slower the commits, the bigger the batches. Each ack is
 * settled on its own there, and the answer says how each went. A batch that got no answer (or
 * a node without the batch endpoint) falls back to the single acks, with
 * their retries: a second ack of one already applied gets 409, which is
 * fine. */

struct abatch {
    struct fnpool *fp;
    unsigned n;
    struct slot *slots[JINN_JOB_ACK_MAX];
};

static void pool_flush(struct fnpool *fp);

static void batch_settled(void *data, int code, const struct jinn_http_msg *head,
                          const char *body, size_t body_len)
{
    struct abatch *b = data;
    struct fnpool *fp = b->fp;
    struct jinn_job_pools *j = fp->j;
    json_t *results = NULL, *doc = NULL;
    json_error_t jerr;

    fp->acks_in_flight--;
    for (unsigned i = 0; i < b->n; i++) {
        b->slots[i]->rq_settle.busy = false;
    }
    if (code == JINN_OK && head->status == 200) {
        doc = json_loadb(body, body_len, 0, &jerr);
        results = json_object_get(doc, "results");
    }
    for (unsigned i = 0; i < b->n; i++) {
        struct slot *s = b->slots[i];
        json_t *r = json_array_get(results, i);
        json_int_t st = json_integer_value(json_object_get(r, "status"));
        if (r == NULL || (uint64_t)json_integer_value(json_object_get(r, "job")) != s->seq) {
            settle_send(s); /* no (usable) answer: alone, with retries */
            continue;
        }
        if (st == 409 || st == 404) {
            fp->lost++; /* the lease had expired: another worker has the job */
        } else if (st != 200) {
            j->settle_errors++;
        }
        settle_over(s);
    }
    json_decref(doc);
    jinn_free(b);
    pool_flush(fp); /* the acks that waited for this one */
}

/* Sends the function's waiting acks: batches of up to JINN_JOB_ACK_MAX
 * within the API's body limit; a lone one goes alone. */
static void pool_flush(struct fnpool *fp)
{
    struct jinn_job_pools *j = fp->j;
    uint64_t limit = j->api->cfg->max_body_bytes > 1024 ? j->api->cfg->max_body_bytes - 1024 : 0;
    unsigned at = 0;
    char target[256];

    if (limit > JINN_JOB_ACK_BYTES_MAX) {
        limit = JINN_JOB_ACK_BYTES_MAX;
    }
    snprintf(target, sizeof target, "/v1/functions/%s/jobs/ack", fp->name);
    while (at < fp->n_ackq && fp->acks_in_flight < ACKS_IN_FLIGHT_MAX) {
        struct abatch *b = NULL;
        struct jinn_wbuf w;
        size_t bytes = 0;
        unsigned n = 0;
        while (at + n < fp->n_ackq && n < JINN_JOB_ACK_MAX &&
               (n == 0 || bytes + strlen(fp->ackq[at + n]->settle_body) + 32 <= limit)) {
            bytes += strlen(fp->ackq[at + n]->settle_body) + 32;
            n++;
        }
        fp->acks_alone += n == 1;
        b = jinn_calloc(1, sizeof *b);
        if (b == NULL) {
            for (unsigned i = 0; i < n; i++) {
                settle_send(fp->ackq[at + i]); /* out of memory: one by one */
            }
            at += n;
            continue;
        }
        b->fp = fp;
        b->n = n;
        jinn_wbuf_init(&w);
        jinn_wbuf_printf(&w, "{\"acks\":[");
        for (unsigned i = 0; i < n; i++) {
            struct slot *s = fp->ackq[at + i];
            b->slots[i] = s;
            /* {"job":ID, + the single form's body after its '{' */
            jinn_wbuf_printf(&w, "%s{\"job\":%" PRIu64 ",%s", i > 0 ? "," : "", s->seq,
                             s->settle_body + 1);
        }
        jinn_wbuf_printf(&w, "]}");
        at += n;
        if (w.failed ||
            post_raw(j, target, (const char *)w.data, w.len, REQ_TIMEOUT_MS, batch_settled,
                     b) != 0) {
            for (unsigned i = 0; i < n; i++) {
                settle_send(b->slots[i]);
            }
            jinn_free(b);
        } else {
            fp->ack_batches += n > 1;
            fp->acks_in_flight++;
            for (unsigned i = 0; i < n; i++) {
                b->slots[i]->rq_settle.busy = true;
            }
        }
        jinn_wbuf_free(&w);
    }
    /* The rest waits for a request in flight to be back. */
    memmove(fp->ackq, fp->ackq + at, (fp->n_ackq - at) * sizeof fp->ackq[0]);
    fp->n_ackq -= at;
}

static void flush_cb(uv_timer_t *t)
{
    struct jinn_job_pools *j = t->data;
    for (struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        pool_flush(fp);
    }
}

/* An ack waits for the rest of this loop turn's (a zero timer runs after
 * the turn's completions). body: the single form's JSON object (jinn_free),
 * taken over like target. */
static void ack_later(struct slot *s, char *target, char *body)
{
    struct fnpool *fp = s->fp;
    struct jinn_job_pools *j = fp->j;
    s->state = S_SETTLE;
    s->settle_tries = 0;
    uv_timer_stop(&s->timer);
    jinn_free(s->settle_target);
    jinn_free(s->settle_body);
    s->settle_target = target;
    s->settle_body = body;
    if (s->settle_target == NULL || s->settle_body == NULL || s->settle_body[0] != '{' ||
        fp->n_ackq >= SLOTS_PER_FN_MAX) {
        if (s->settle_target == NULL || s->settle_body == NULL) {
            settle_over(s); /* out of memory: the lease expires and the job comes back */
        } else {
            settle_send(s);
        }
        return;
    }
    fp->ackq[fp->n_ackq++] = s;
    if (j->stopping) {
        pool_flush(fp); /* the flush timer is closed */
    } else if (!uv_is_active((uv_handle_t *)&j->flush)) {
        uv_timer_start(&j->flush, flush_cb, 0, 0);
    }
}

/* Nak: delay -1 is the queue's backoff by delivery count (the leader's
 * policy), 0 at shutdown (others take it at once). */
static void nak(struct slot *s, const char *reason, int64_t delay_ms)
{
    json_t *body = json_pack("{s:s, s:I, s:s}", "worker", s->worker, "delivery",
                             (json_int_t)s->delivery, "reason", reason);
    if (body != NULL && delay_ms >= 0) {
        char d[32];
        snprintf(d, sizeof d, "%" PRId64 "ms", delay_ms);
        json_object_set_new(body, "delay", json_string(d));
    }
    settle(s, target_for(s, "nak"), body);
}

/* ---- progress ------------------------------------------------------------------------ */

static void progress_due(uv_timer_t *t);

static void progressed(void *data, int code, const struct jinn_http_msg *head, const char *body,
                       size_t body_len)
{
    struct sreq *rq = data;
    struct slot *s = rq->s;
    (void)code;
    (void)head;
    (void)body;
    (void)body_len;
    rq->busy = false;
    /* A failed progress is tried again at the next period; a 409 means the
     * lease is lost (the job runs on elsewhere): the run finishes and its
     * settle gets 409 too. */
    if (s->state == S_RUN && s->running) {
        uv_timer_start(&s->timer, progress_due, s->ack_wait_ms / 3, 0);
    }
    slot_maybe_free(s);
}

static void progress_due(uv_timer_t *t)
{
    struct slot *s = t->data;
    char *target;
    json_t *body;
    char *dumped;
    if (s->state != S_RUN || s->rq_progress.busy) {
        return;
    }
    target = target_for(s, "progress");
    body = json_pack("{s:s, s:I}", "worker", s->worker, "delivery", (json_int_t)s->delivery);
    dumped = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (target == NULL || dumped == NULL ||
        post(s, &s->rq_progress, target, dumped, s->ack_wait_ms / 3, progressed) != 0) {
        uv_timer_start(&s->timer, progress_due, s->ack_wait_ms / 3, 0);
    }
    jinn_free(target);
    free(dumped);
}

/* ---- run ----------------------------------------------------------------------------- */

static void ran(void *data, const struct jinn_wasm_run_result *res)
{
    struct slot *s = data;
    struct fnpool *fp = s->fp;
    char reason[JINN_QUEUE_REASON_MAX + 1];
    size_t n;

    s->running = false;
    if (s->handed_back || s->state != S_RUN) {
        slot_maybe_free(s); /* naked at shutdown already */
        maybe_stopped(fp->j);
        return;
    }
    uv_timer_stop(&s->timer);
    if (res->error == NULL && res->status >= 200 && res->status <= 299) {
        char target[512];
        /* The ack carries the response: it must fit the kept result
         * (JINN_JOB_RESULT_MAX) and the API's body limit, or the ack would
         * be refused and the job run again. A bigger one is acked with a
         * note instead (the function's status is kept). */
        uint64_t limit =
            fp->j->api->cfg->max_body_bytes > 1024 ? fp->j->api->cfg->max_body_bytes - 1024 : 0;
        struct jinn_wbuf w;
        if (limit > JINN_JOB_RESULT_MAX) {
            limit = JINN_JOB_RESULT_MAX;
        }
        /* {"worker":W,"delivery":D,"status":S,"response":R}: R is the
         * runner's compact dump of the response object, embedded as it is
         * (not parsed and dumped again per job). */
        jinn_wbuf_init(&w);
        jinn_wbuf_put_raw(&w, "{\"worker\":", 10);
        put_json_string(&w, s->worker, strlen(s->worker));
        jinn_wbuf_printf(&w,
                         ",\"delivery\":%" PRIu64 ",\"status\":%d,\"response\":", s->delivery,
                         res->status);
        if (res->response != NULL && (res->response_len > limit ||
                                      json_depth(res->response, res->response_len) >
                                          JOB_RESPONSE_DEPTH_MAX)) {
            jinn_wbuf_printf(&w, "{\"status\":%d,\"truncated\":true,\"bytes\":%zu}",
                             res->status, res->response_len);
        } else if (res->response != NULL && res->response_len >= 2 && res->response[0] == '{' &&
                   res->response[res->response_len - 1] == '}') {
            jinn_wbuf_put_raw(&w, res->response, res->response_len);
        } else {
            jinn_wbuf_put_raw(&w, "{}", 2);
        }
        jinn_wbuf_put_raw(&w, "}", 1);
        fp->done++;
        snprintf(target, sizeof target, "/v1/functions/%s/jobs/%" PRIu64 "/ack", fp->name,
                 s->seq);
        ack_later(s, jinn_strdup(target), wbuf_string(&w));
        return;
    }
    fp->failed++;
    if (res->error == NULL) {
        n = (size_t)snprintf(reason, sizeof reason, "status %d", res->status);
    } else if (strcmp(res->error, "trap") == 0) {
        n = (size_t)snprintf(reason, sizeof reason, "trap: %s", res->kind);
    } else if (strcmp(res->error, "timeout") == 0) {
        n = (size_t)snprintf(reason, sizeof reason, "timeout after %" PRIu64 "ms",
                             (uint64_t)(uv_now(fp->j->loop) - s->started_ms));
    } else {
        n = (size_t)snprintf(reason, sizeof reason, "%s (status %d): %s", res->error,
                             res->status, res->message);
    }
    if (n < sizeof reason - 2 && res->stderr_len > 0) {
        /* The end of stderr: the last lines are what explains a failure. */
        size_t room = sizeof reason - 1 - n - 2;
        size_t take = res->stderr_len < room ? res->stderr_len : room;
        snprintf(reason + n, sizeof reason - n, "\n%.*s", (int)take,
                 res->stderr_tail + (res->stderr_len - take));
    }
    nak(s, reason, -1);
}

/* The request JSON of the original's async call. A payload that is not
 * text (the queue gave it base64) reaches the function as its base64 text
 * with X-Jinn-Payload-Encoding: base64. payload is UTF-8 (a JSON string's
 * value). Returns a string to jinn_free, or NULL. */
static char *job_request(const struct slot *s, const char *payload, size_t payload_len,
                         bool base64)
{
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    jinn_wbuf_printf(&w,
                     "{\"method\":\"ASYNC\",\"uri\":\"internal://async/job\",\"headers\":{"
                     "\"X-Source\":[\"internal\"],\"X-Jinn-Job\":[\"%" PRIu64
                     "\"],\"X-Jinn-Delivery\":[\"%" PRIu64 "\"]%s},\"body\":",
                     s->seq, s->delivery,
                     base64 ? ",\"X-Jinn-Payload-Encoding\":[\"base64\"]" : "");
    put_json_string(&w, payload, payload_len);
    jinn_wbuf_put_raw(&w, "}", 1);
    return wbuf_string(&w);
}

/* Hands one leased message to s and starts its run. */
static void slot_start(struct slot *s, json_t *m)
{
    struct fnpool *fp = s->fp;
    struct jinn_job_pools *j = fp->j;
    json_t *payload;
    char trace[128];
    char *request;
    bool base64 = false;
    int rv;

    s->seq = (uint64_t)json_integer_value(json_object_get(m, "seq"));
    s->delivery = (uint64_t)json_integer_value(json_object_get(m, "delivery"));
    s->started_ms = uv_now(j->loop);
    s->handed_back = false;
    payload = json_object_get(m, "payload");
    if (!json_is_string(payload)) {
        payload = json_object_get(m, "payload_base64");
        base64 = true;
    }
    request = json_is_string(payload) ? job_request(s, json_string_value(payload),
                                                    json_string_length(payload), base64)
                                      : NULL;
    s->state = S_RUN;
    if (request == NULL) {
        nak(s, "out of memory on the worker's node", 0);
        return;
    }
    snprintf(trace, sizeof trace, "job-%" PRIu64 "-%" PRIu64, s->seq, s->delivery);
    rv = jinn_wasm_runner_run(j->api->wasm, fp->name, request, strlen(request), trace, ran, s);
    jinn_free(request);
    if (rv != 0) {
        char reason[160];
        snprintf(reason, sizeof reason, "%s on node %s: %s", jinn_error_name(rv),
                 j->api->cfg->server_name, jinn_error_message(rv));
        /* Not the job's fault: back, but not at once (a delivery is spent). */
        nak(s, reason, grow(REFUSED_DELAY_MIN_MS, REFUSED_DELAY_MAX_MS, s->refused++));
        return;
    }
    s->refused = 0;
    s->running = true;
    uv_timer_start(&s->timer, progress_due, s->ack_wait_ms / 3, 0);
}

/* One of the pool's fetches is back: its jobs go to the slots waiting
 * (there are at least as many as the fetches out asked for: a waiting slot
 * leaves only once they are back), and the slots still waiting fetch
 * again. */
static void fetched(void *data, int code, const struct jinn_http_msg *head, const char *body,
                    size_t body_len)
{
    struct preq *rq = data;
    struct fnpool *fp = rq->fp;
    struct jinn_job_pools *j = fp->j;
    json_error_t jerr;
    json_t *list;
    size_t next = 0;

    rq->busy = false;
    rq->max = 0;
    if (code != JINN_OK || head->status != 200) {
        if (!j->stopping) {
            bool left = false;
            for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
                struct slot *s = fp->slots[i];
                if (s != NULL && s->state == S_FETCH && s->leaving) {
                    slot_finish(s); /* sync_pools cancelled the fetch for it */
                    left = true;
                }
            }
            if (left) {
                pool_fetch(fp);
                return;
            }
            j->fetch_errors++;
            if (fetches_busy(fp) == 0) {
                pool_backoff(fp);
            } /* else the slots wait for the other; its end decides */
            return;
        }
        list = NULL;
    } else {
        fp->fails = 0;
        list = json_loadb(body, body_len, 0, &jerr);
    }
    for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
        struct slot *s = fp->slots[i];
        json_t *m = json_array_get(list, next);
        if (s == NULL || s->state != S_FETCH) {
            continue;
        }
        if (m != NULL) {
            next++;
            slot_start(s, m); /* a leaving slot runs this one job, then leaves */
        } else if (j->stopping || s->leaving) {
            slot_finish(s);
        }
    }
    if (json_array_get(list, next) != NULL) {
        /* More jobs than slots waiting: cannot happen (see above); were it
         * to, their leases expire and they come back. */
        j->fetch_errors++;
    }
    json_decref(list);
    pool_fetch(fp);
}

/* A long-poll for the slots waiting that no fetch in flight covers, if
 * fewer than FETCHES_IN_FLIGHT_MAX are out. */
static void pool_fetch(struct fnpool *fp)
{
    struct jinn_job_pools *j = fp->j;
    char target[256], body[512];
    unsigned waiting = 0, covered = 0, cap;
    struct preq *rq = NULL;
    int rv;

    if (j->stopping) {
        return;
    }
    for (unsigned i = 0; i < FETCHES_IN_FLIGHT_MAX; i++) {
        covered += fp->rq_fetch[i].busy ? fp->rq_fetch[i].max : 0;
        if (!fp->rq_fetch[i].busy && rq == NULL) {
            rq = &fp->rq_fetch[i];
        }
    }
    for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
        waiting += fp->slots[i] != NULL && fp->slots[i]->state == S_FETCH;
    }
    if (rq == NULL || waiting <= covered) {
        return;
    }
    waiting -= covered;
    cap = (unsigned)(FETCH_BATCH_BYTES / (j->api->cfg->max_body_bytes + 1));
    cap = cap < 1 ? 1 : cap;
    cap = cap < JINN_QUEUE_FETCH_MAX ? cap : JINN_QUEUE_FETCH_MAX;
    rq->max = waiting < cap ? waiting : cap;
    snprintf(target, sizeof target, "/v1/queues/%s/fetch", fp->queue);
    snprintf(body, sizeof body,
             "{\"worker\":\"%s\",\"max\":%u,\"wait\":\"" FETCH_WAIT "\",\"ack_wait\":\"%" PRIu64
             "ms\"}",
             fp->worker, rq->max, fp->ack_wait_ms);
    rv = post_raw(j, target, body, strlen(body), FETCH_TIMEOUT_MS, fetched, rq);
    rq->busy = rv == 0;
    fp->fetches += rv == 0;
    if (rv != 0) {
        rq->max = 0;
        /* Refused by fetch.c (shutting down): the waiting slots end. */
        for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
            if (fp->slots[i] != NULL && fp->slots[i]->state == S_FETCH) {
                slot_finish(fp->slots[i]);
            }
        }
    }
}

static void slot_next(struct slot *s)
{
    struct jinn_job_pools *j = s->fp->j;
    if (j->stopping || s->leaving) {
        slot_finish(s);
        return;
    }
    if (!jinn_wasm_runner_can_take(j->api->wasm, s->fp->name)) {
        /* Lease only what can run now; poll the local pool meanwhile. */
        s->state = S_BACKOFF;
        uv_timer_start(&s->timer, backoff_done,
                       grow(CAPACITY_WAIT_MIN_MS, CAPACITY_WAIT_MAX_MS, s->waits++), 0);
        return;
    }
    s->waits = 0;
    s->state = S_FETCH;
    pool_fetch(s->fp);
}

/* ---- following the registry ------------------------------------------------------------ */

static struct slot *slot_new(struct fnpool *fp, unsigned idx)
{
    struct jinn_job_pools *j = fp->j;
    struct slot *s = jinn_calloc(1, sizeof *s);
    if (s == NULL) {
        return NULL;
    }
    s->fp = fp;
    s->idx = idx;
    s->rq_progress.s = s->rq_settle.s = s;
    /* The pool's fetch leased its jobs: progress, ack and nak as its worker. */
    snprintf(s->worker, sizeof s->worker, "%s", fp->worker);
    s->ack_wait_ms = fp->ack_wait_ms;
    uv_timer_init(j->loop, &s->timer);
    s->timer.data = s;
    s->timer_open = true;
    fp->slots[idx] = s;
    j->slots++;
    slot_next(s);
    return s;
}

/* The pools are kept in name order (sync_pools inserts them so). */
static struct fnpool *pool_find(struct jinn_job_pools *j, const char *name)
{
    for (struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        int c = strcmp(fp->name, name);
        if (c >= 0) {
            return c == 0 ? fp : NULL;
        }
    }
    return NULL;
}

static unsigned wanted_workers(struct jinn_job_pools *j, const struct jinn_fn *fn)
{
    unsigned w;
    if (fn->active == NULL || strlen(fn->name) + strlen(QUEUE_PREFIX) > JINN_QUEUE_NAME_MAX) {
        return 0; /* deleted, or its queue name would be too long */
    }
    w = JOBS_FN_WORKERS(&fn->active->settings);
    if (w > SLOTS_PER_FN_MAX) {
        w = SLOTS_PER_FN_MAX;
    }
    if (w > 0 && !jinn_wasm_runner_ready(j->api->wasm, fn->name)) {
        return 0; /* not warm here (compiling, failed): other nodes run its jobs */
    }
    return w;
}

/* Hands the node cap out round-robin: one slot to every function that
 * asks first, then a second to each, and so on (A1 M3: in name order, the
 * last functions got none on any node). Each node starts the rotation at
 * its own share of the list (its index among the configured peers), so
 * when the cap is below the number of functions the nodes cover different
 * ones: every function runs somewhere as long as cap x nodes >= functions. */
static void share_budget(struct jinn_job_pools *j, unsigned n, unsigned budget)
{
    const struct jinn_config *cfg = j->api->cfg;
    unsigned peers = cfg->n_peers > 0 ? cfg->n_peers : 1;
    unsigned start = (unsigned)((uint64_t)jinn_config_self(cfg) * n / peers);
    for (unsigned round = 0; budget > 0 && round < SLOTS_PER_FN_MAX; round++) {
        bool gave = false;
        for (int part = 0; part < 2 && budget > 0; part++) {
            unsigned k = 0;
            for (struct fnpool *fp = j->pools; fp != NULL && budget > 0; fp = fp->next) {
                bool here;
                if (fp->wish == 0) {
                    continue;
                }
                here = part == 0 ? k >= start : k < start;
                k++;
                if (here && fp->wish > round) {
                    fp->want++;
                    budget--;
                    gave = true;
                }
            }
        }
        if (!gave) {
            break;
        }
    }
}

static void sync_pools(struct jinn_job_pools *j)
{
    const struct jinn_fns *fns = registry(j);
    struct fnpool **at = &j->pools;
    unsigned asking = 0;

    if (j->stopping || j->api->wasm == NULL) {
        return;
    }
    j->synced_generation = jinn_fns_generation(fns);
    for (struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        fp->want = 0;
        fp->wish = 0;
    }
    /* The pools are in name order like the functions, so one merge walk
     * pairs them (O(functions + pools), not a search each). */
    for (const struct jinn_fn *fn = jinn_fns_next(fns, NULL); fn != NULL;
         fn = jinn_fns_next(fns, fn->name)) {
        unsigned w = wanted_workers(j, fn);
        struct fnpool *fp;
        while (*at != NULL && strcmp((*at)->name, fn->name) < 0) {
            at = &(*at)->next;
        }
        fp = *at != NULL && strcmp((*at)->name, fn->name) == 0 ? *at : NULL;
        if (w == 0 && fp == NULL) {
            continue;
        }
        if (fp == NULL) {
            fp = jinn_calloc(1, sizeof *fp);
            if (fp == NULL) {
                continue;
            }
            fp->j = j;
            snprintf(fp->name, sizeof fp->name, "%s", fn->name);
            snprintf(fp->queue, sizeof fp->queue, QUEUE_PREFIX "%s", fn->name);
            /* Worker names are ASCII: the node name and function name are.
             * One per node and function: a job this node failed goes
             * preferably to another node (fsm/queue.c, by worker id). */
            snprintf(fp->worker, sizeof fp->worker, "%s/%s", j->api->cfg->server_name,
                     fn->name);
            {
                struct jinn_queue_policy pol = jinn_config_queue(j->api->cfg, fp->queue);
                fp->ack_wait_ms = pol.ack_wait_ms >= 300 ? pol.ack_wait_ms : 300;
            }
            for (unsigned k = 0; k < FETCHES_IN_FLIGHT_MAX; k++) {
                fp->rq_fetch[k].fp = fp;
            }
            fp->next = *at; /* before the first greater name: order kept */
            *at = fp;
        }
        fp->wish = w;
        asking += w > 0;
    }
    share_budget(j, asking, j->api->cfg->job_workers);
    for (struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        bool starved = fp->wish > 0 && fp->want == 0;
        if (starved && !fp->starved) {
            jinn_warn("function %s asks for %u job workers but this node's job_workers cap "
                      "(%u) is used by other functions: it runs none of its jobs here",
                      fp->name, fp->wish, j->api->cfg->job_workers);
        }
        fp->starved = starved;
        for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
            struct slot *s = fp->slots[i];
            if (i < fp->want && s == NULL) {
                slot_new(fp, i);
            } else if (i < fp->want && s->leaving && s->state != S_DONE) {
                s->leaving = false; /* wanted again before it left */
            } else if (i >= fp->want && s != NULL && !s->leaving) {
                s->leaving = true;
                if (s->state == S_FETCH && fetches_busy(fp) > 0) {
                    /* -> fetched: the leaving slots finish, the others
                     * fetch again */
                    for (unsigned k = 0; k < FETCHES_IN_FLIGHT_MAX; k++) {
                        jinn_fetch_cancel(&fp->rq_fetch[k]);
                    }
                } else if (s->state == S_FETCH || s->state == S_BACKOFF) {
                    slot_finish(s);
                }
            }
        }
    }
}

/* ---- cron (the leader) ---------------------------------------------------------------- */

static void cron_done(void *data, int code, const struct jinn_result *res)
{
    struct jinn_job_pools *j = data;
    (void)res;
    j->cron_proposing = false;
    if (code == JINN_OK) {
        j->cron_fired++;
    }
    /* JINN_ECONFLICT is normal: another leader's JOB_CRON fired that tick
     * first, or this one's stamp was still before it. The next look
     * proposes the next due tick. */
    if (!j->stopping) {
        uv_timer_start(&j->soon, soon_cb, 0, 0);
    }
}

/* The state machine decides which tick is due and fires it at most once;
 * the leader only proposes the earliest due one (one at a time). */
static void cron_check(struct jinn_job_pools *j)
{
    struct jinn_node *node = j->api->node;
    const struct jinn_fsm *fsm = jinn_node_fsm(node);
    char name[JINN_FN_NAME_MAX + 1], queue[sizeof JINN_JOB_QUEUE_PREFIX + JINN_FN_NAME_MAX];
    struct jinn_queue_policy pol;
    struct jinn_cmd c;
    uint64_t tick, now;

    if (j->stopping || j->cron_proposing || !jinn_node_is_leader(node)) {
        return;
    }
    /* Cron is UTC: the leader's wall clock decides a tick is due, and goes
     * in the entry (apply takes the later of it and the entry's cluster
     * time, which lags UTC after a full-cluster outage). */
    now = jinn_node_wall_now(node);
    if (jinn_node_time_now(node) > now) {
        now = jinn_node_time_now(node);
    }
    tick = jinn_jobs_cron_next(&fsm->jobs, name);
    if (tick == 0 || tick > now) {
        return;
    }
    snprintf(queue, sizeof queue, JINN_JOB_QUEUE_PREFIX "%s", name);
    pol = jinn_config_queue(j->api->cfg, queue);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_JOB_CRON;
    c.cron.name.p = (const uint8_t *)name;
    c.cron.name.len = strlen(name);
    c.cron.tick_ms = tick;
    c.cron.max_length = pol.max_length;
    c.cron.max_bytes = pol.max_bytes;
    c.cron.max_deliver = pol.max_deliver;
    c.cron.now_ms = now;
    if (jinn_node_propose(node, &c, j->api->cfg->request_timeout_ms, cron_done, j) == 0) {
        j->cron_proposing = true;
        j->cron_proposed++;
    }
}

static void tick_cb(uv_timer_t *t)
{
    sync_pools(t->data);
    cron_check(t->data);
}

/* After applies: the pools follow the registry at once when it changed;
 * otherwise the periodic tick (which also sees functions become ready
 * here) is enough, so a write load does not resync every loop turn. */
static void soon_cb(uv_timer_t *t)
{
    struct jinn_job_pools *j = t->data;
    if (j->api->wasm != NULL && jinn_fns_generation(registry(j)) != j->synced_generation) {
        sync_pools(j);
    }
    cron_check(j);
}

static void timer_closed(uv_handle_t *h)
{
    struct jinn_job_pools *j = h->data;
    j->timers_open--;
    maybe_stopped(j);
}

struct jinn_job_pools *jinn_job_pools_create(struct jinn_api *api)
{
    struct jinn_job_pools *j = jinn_calloc(1, sizeof *j);
    if (j == NULL) {
        return NULL;
    }
    j->api = api;
    j->loop = api->loop;
    if (api->cfg->http_advertise != NULL) {
        snprintf(j->base_url, sizeof j->base_url, "%s", api->cfg->http_advertise);
    } else {
        snprintf(j->base_url, sizeof j->base_url, "http://%s", api->cfg->http_listen);
    }
    j->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x2545F4914F6CDD1DULL;
    if (j->rng == 0) {
        j->rng = 1;
    }
    uv_timer_init(j->loop, &j->tick);
    uv_timer_init(j->loop, &j->soon);
    uv_timer_init(j->loop, &j->flush);
    j->tick.data = j->soon.data = j->flush.data = j;
    j->timers_open = 3;
    uv_timer_start(&j->tick, tick_cb, TICK_MS, TICK_MS);
    uv_timer_start(&j->soon, tick_cb, 0, 0);
    return j;
}

void jinn_job_pools_applied(struct jinn_job_pools *j)
{
    if (j != NULL && !j->stopping) {
        uv_timer_start(&j->soon, soon_cb, 0, 0);
    }
}

/* ---- shutdown ------------------------------------------------------------------------ */

/* Nothing left to wait for: every slot is gone, or was handed back and
 * only its run is left (the runner's stop, next, ends that run; the slot
 * is freed when its callback comes). */
static bool all_idle(const struct jinn_job_pools *j)
{
    for (const struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
            const struct slot *s = fp->slots[i];
            if (s != NULL && !(s->handed_back && s->state == S_DONE &&
                               !s->rq_progress.busy && !s->rq_settle.busy)) {
                return false;
            }
        }
    }
    return true;
}

static void grace_over(uv_timer_t *t);

static void maybe_stopped(struct jinn_job_pools *j)
{
    if (!j->stopping || j->stop_reported || !all_idle(j)) {
        return;
    }
    /* The last running job settled within the grace: end the grace now
     * rather than hold the shutdown for the rest of job_grace (nothing is
     * left to hand back; grace_over closes the timer). */
    if (j->grace_open && !j->grace_over && !uv_is_closing((uv_handle_t *)&j->grace)) {
        uv_timer_stop(&j->grace);
        grace_over(&j->grace);
        return; /* grace_closed comes back here */
    }
    if (j->timers_open > 0) {
        return;
    }
    j->stop_reported = true;
    if (j->stopped != NULL) {
        j->stopped(j->stopped_data);
    }
}

static void grace_closed(uv_handle_t *h)
{
    struct jinn_job_pools *j = h->data;
    j->grace_open = false;
    j->timers_open--;
    maybe_stopped(j);
}

/* The grace is over: every job still running is handed back now. */
static void grace_over(uv_timer_t *t)
{
    struct jinn_job_pools *j = t->data;
    j->grace_over = true;
    for (struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
            struct slot *s = fp->slots[i];
            if (s != NULL && s->state == S_RUN && !s->handed_back) {
                char reason[200];
                s->handed_back = true;
                j->handed_back++;
                uv_timer_stop(&s->timer);
                snprintf(reason, sizeof reason,
                         "node %s shut down while the job ran (job_grace %" PRIu64 "ms)",
                         j->api->cfg->server_name, j->api->cfg->job_grace_ms);
                nak(s, reason, 0);
            }
        }
    }
    uv_close((uv_handle_t *)&j->grace, grace_closed);
}

void jinn_job_pools_stop(struct jinn_job_pools *j, void (*cb)(void *data), void *data)
{
    j->stopping = true;
    j->stopped = cb;
    j->stopped_data = data;
    uv_timer_stop(&j->tick);
    uv_timer_stop(&j->soon);
    uv_close((uv_handle_t *)&j->tick, timer_closed);
    uv_close((uv_handle_t *)&j->soon, timer_closed);
    flush_cb(&j->flush); /* the acks of this turn go now */
    uv_timer_stop(&j->flush);
    uv_close((uv_handle_t *)&j->flush, timer_closed);
    uv_timer_init(j->loop, &j->grace);
    j->grace.data = j;
    j->timers_open++;
    for (struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        for (unsigned k = 0; k < FETCHES_IN_FLIGHT_MAX; k++) {
            jinn_fetch_cancel(&fp->rq_fetch[k]); /* stop leasing: its slots finish */
        }
        for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
            struct slot *s = fp->slots[i];
            if (s != NULL && s->state == S_BACKOFF) {
                slot_finish(s);
            }
        }
    }
    /* Open from here: maybe_stopped (called by the settles above) ends
     * the grace early only once it runs. */
    j->grace_open = true;
    uv_timer_start(&j->grace, grace_over, j->api->cfg->job_grace_ms, 0);
    if (all_idle(j)) {
        uv_timer_stop(&j->grace);
        grace_over(&j->grace);
    }
}

void jinn_job_pools_destroy(struct jinn_job_pools *j)
{
    if (j == NULL) {
        return;
    }
    while (j->pools != NULL) {
        struct fnpool *fp = j->pools;
        j->pools = fp->next;
        jinn_free(fp);
    }
    jinn_free(j);
}

/* ---- status and metrics ----------------------------------------------------------------- */

static void count_slots(const struct fnpool *fp, unsigned *busy, unsigned *idle)
{
    *busy = *idle = 0;
    for (unsigned i = 0; i < SLOTS_PER_FN_MAX; i++) {
        const struct slot *s = fp->slots[i];
        if (s == NULL) {
            continue;
        }
        if (s->state == S_RUN || s->state == S_SETTLE) {
            (*busy)++;
        } else {
            (*idle)++;
        }
    }
}

static json_t *pool_json(const struct fnpool *fp)
{
    unsigned busy, idle;
    count_slots(fp, &busy, &idle);
    return json_pack("{s:i, s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I}", "slots", (int)fp->want,
                     "busy", (int)busy, "idle", (int)idle, "done", (json_int_t)fp->done,
                     "failed", (json_int_t)fp->failed, "lost_leases", (json_int_t)fp->lost,
                     "fetches", (json_int_t)fp->fetches, "ack_batches",
                     (json_int_t)fp->ack_batches, "acks_alone", (json_int_t)fp->acks_alone);
}

void jinn_job_pools_status(const struct jinn_job_pools *j, json_t *obj)
{
    json_t *fns, *jobs, *starved;
    if (j == NULL) {
        return;
    }
    fns = json_object();
    for (const struct fnpool *fp = j->pools; fp != NULL && fns != NULL; fp = fp->next) {
        json_t *p = pool_json(fp);
        if (p != NULL) {
            json_object_set_new(fns, fp->name, p);
        }
    }
    /* Functions that ask for workers but got no slot here (the cap). */
    starved = json_array();
    for (const struct fnpool *fp = j->pools; fp != NULL && starved != NULL; fp = fp->next) {
        if (fp->starved) {
            json_array_append_new(starved, json_string(fp->name));
        }
    }
    jobs = json_pack("{s:i, s:i, s:b, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "job_workers",
                     (int)j->api->cfg->job_workers, "slots", (int)j->slots, "stopping",
                     j->stopping, "fetch_errors", (json_int_t)j->fetch_errors, "settle_errors",
                     (json_int_t)j->settle_errors, "handed_back", (json_int_t)j->handed_back,
                     "cron_proposed", (json_int_t)j->cron_proposed, "cron_fired",
                     (json_int_t)j->cron_fired, "functions", fns != NULL ? fns : json_object(),
                     "no_slot", starved != NULL ? starved : json_array());
    if (jobs != NULL) {
        json_object_set_new(obj, "jobs", jobs);
    }
}

void jinn_job_pools_describe(const struct jinn_job_pools *j, const char *name, json_t *obj)
{
    const struct fnpool *fp = j != NULL ? pool_find((struct jinn_job_pools *)j, name) : NULL;
    json_t *p = fp != NULL ? pool_json(fp)
                           : json_pack("{s:i, s:i, s:i}", "slots", 0, "busy", 0, "idle", 0);
    if (p != NULL) {
        json_object_set_new(obj, "jobs", p);
    }
}

void jinn_job_pools_metrics(const struct jinn_job_pools *j, struct jinn_wbuf *w)
{
    if (j == NULL) {
        return;
    }
    jinn_wbuf_printf(w,
                     "# HELP jinn_jobs_slots Job worker slots on this node.\n"
                     "# TYPE jinn_jobs_slots gauge\njinn_jobs_slots %u\n"
                     "# HELP jinn_jobs_fetch_errors_total Job fetches that failed (no "
                     "leader, no quorum).\n# TYPE jinn_jobs_fetch_errors_total counter\n"
                     "jinn_jobs_fetch_errors_total %" PRIu64 "\n"
                     "# HELP jinn_jobs_handed_back_total Running jobs naked at shutdown.\n"
                     "# TYPE jinn_jobs_handed_back_total counter\n"
                     "jinn_jobs_handed_back_total %" PRIu64 "\n"
                     "# HELP jinn_jobs_cron_fired_total Cron ticks this node proposed as "
                     "leader that fired.\n# TYPE jinn_jobs_cron_fired_total counter\n"
                     "jinn_jobs_cron_fired_total %" PRIu64 "\n",
                     j->slots, j->fetch_errors, j->handed_back, j->cron_fired);
    jinn_wbuf_printf(w, "# HELP jinn_jobs_busy Job slots running or settling a job.\n"
                        "# TYPE jinn_jobs_busy gauge\n");
    for (const struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        unsigned busy, idle;
        count_slots(fp, &busy, &idle);
        jinn_wbuf_printf(w, "jinn_jobs_busy{function=\"%s\"} %u\n", fp->name, busy);
    }
    jinn_wbuf_printf(w, "# HELP jinn_jobs_done_total Jobs that succeeded on this node.\n"
                        "# TYPE jinn_jobs_done_total counter\n");
    for (const struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        jinn_wbuf_printf(w, "jinn_jobs_done_total{function=\"%s\"} %" PRIu64 "\n", fp->name,
                         fp->done);
    }
    jinn_wbuf_printf(w, "# HELP jinn_jobs_failed_total Job runs that failed on this node "
                        "(naked).\n# TYPE jinn_jobs_failed_total counter\n");
    for (const struct fnpool *fp = j->pools; fp != NULL; fp = fp->next) {
        jinn_wbuf_printf(w, "jinn_jobs_failed_total{function=\"%s\"} %" PRIu64 "\n", fp->name,
                         fp->failed);
    }
}
