/* queue.c - see queue.h. A message sits in `all` (by seq) and in exactly
 * one state tree; moving between states is unlink + relink of by_state. */
#include "fsm/queue.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/fatal.h"
#include "fsm/snapenc.h"

struct idem_entry {
    struct jinn_tree_node by_key;
    struct jinn_tree_node by_exp;
    uint64_t seq;
    uint64_t expires_at;
    size_t len;
    char key[];
};

#define MSG(n, member) jinn_tree_entry(n, struct jinn_qmsg, member)
#define IDEM(n, member) jinn_tree_entry(n, struct idem_entry, member)

static int u64_cmp(uint64_t a, uint64_t b) { return (a > b) - (a < b); }

static int seq_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return u64_cmp(MSG(a, by_seq)->seq, MSG(b, by_seq)->seq);
}

static int state_seq_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return u64_cmp(MSG(a, by_state)->seq, MSG(b, by_state)->seq);
}

static int state_due_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_qmsg *x = MSG(a, by_state), *y = MSG(b, by_state);
    int c = u64_cmp(x->due, y->due);
    return c ? c : u64_cmp(x->seq, y->seq);
}

static int idem_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct idem_entry *x = IDEM(a, by_key), *y = IDEM(b, by_key);
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : u64_cmp(x->len, y->len);
}

/* (expires_at, seq, key): the key (unique in `idem`) keeps the order total
 * even if two keys ever named the same message. */
static int idem_exp_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct idem_entry *x = IDEM(a, by_exp), *y = IDEM(b, by_exp);
    int c = u64_cmp(x->expires_at, y->expires_at);
    if (c == 0) {
        c = u64_cmp(x->seq, y->seq);
    }
    return c ? c : idem_cmp(&x->by_key, &y->by_key);
}

static int name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(jinn_tree_entry(a, struct jinn_queue, by_name)->name,
                  jinn_tree_entry(b, struct jinn_queue, by_name)->name);
}

void jinn_queues_init(struct jinn_queues *qs)
{
    memset(qs, 0, sizeof *qs);
    jinn_tree_init(&qs->by_name, name_cmp);
}

static struct jinn_queue *queue_new(const char *name, size_t len)
{
    struct jinn_queue *q;
    /* Callers check the name; this keeps a missed check from writing past
     * q->name (and from indexing a name without its NUL). */
    if (len == 0 || len > JINN_QUEUE_NAME_MAX) {
        return NULL;
    }
    q = jinn_calloc(1, sizeof *q);
    if (q == NULL) {
        return NULL;
    }
    memcpy(q->name, name, len);
    jinn_tree_init(&q->all, seq_cmp);
    jinn_tree_init(&q->ready, state_seq_cmp);
    jinn_tree_init(&q->leased, state_due_cmp);
    jinn_tree_init(&q->delayed, state_due_cmp);
    jinn_tree_init(&q->dead, state_seq_cmp);
    jinn_tree_init(&q->idem, idem_cmp);
    jinn_tree_init(&q->idem_exp, idem_exp_cmp);
    return q;
}

static void msg_free(struct jinn_tree_node *n)
{
    struct jinn_qmsg *m = MSG(n, by_seq);
    jinn_free(m->reason);
    jinn_free(m);
}

static void idem_free(struct jinn_tree_node *n) { jinn_free(IDEM(n, by_key)); }

static void queue_free(struct jinn_tree_node *n)
{
    struct jinn_queue *q = jinn_tree_entry(n, struct jinn_queue, by_name);
    jinn_tree_release_all(&q->all, msg_free);
    jinn_tree_release_all(&q->idem, idem_free);
    jinn_free(q);
}

void jinn_queues_clear(struct jinn_queues *qs)
{
    jinn_tree_release_all(&qs->by_name, queue_free);
    jinn_queues_init(qs);
}

static struct jinn_queue *find(const struct jinn_queues *qs, const char *name, size_t len)
{
    struct jinn_queue probe;
    struct jinn_tree_node *n;
    if (len > JINN_QUEUE_NAME_MAX) {
        return NULL;
    }
    memcpy(probe.name, name, len);
    probe.name[len] = '\0';
    n = jinn_tree_find(&qs->by_name, &probe.by_name);
    return n ? jinn_tree_entry(n, struct jinn_queue, by_name) : NULL;
}

const struct jinn_queue *jinn_queues_get(const struct jinn_queues *qs, const char *name,
                                         size_t len)
{
    return find(qs, name, len);
}

const struct jinn_queue *jinn_queues_next(const struct jinn_queues *qs,
                                          const struct jinn_queue *after)
{
    struct jinn_tree_iter it;
    struct jinn_tree_node *n = jinn_tree_seek(&qs->by_name, after ? &after->by_name : NULL, &it);
    if (n != NULL && after != NULL && name_cmp(n, &after->by_name) == 0) {
        n = jinn_tree_next(&it);
    }
    return n ? jinn_tree_entry(n, struct jinn_queue, by_name) : NULL;
}

static struct jinn_tree *state_tree(struct jinn_queue *q, uint8_t state)
{
    switch (state) {
    case JINN_QM_READY:
        return &q->ready;
    case JINN_QM_LEASED:
        return &q->leased;
    case JINN_QM_DELAYED:
        return &q->delayed;
    case JINN_QM_DEAD:
        return &q->dead;
    default:
        jinn_fsm_fatal("queue %s: message in unknown state %u", q->name, state);
    }
}

/* Moves m to state (due matters for LEASED and DELAYED). */
static void move(struct jinn_queue *q, struct jinn_qmsg *m, uint8_t state, uint64_t due)
{
    if (m->state != 0) {
        jinn_fsm_unlink(state_tree(q, m->state), &m->by_state, "queue messages by state");
    }
    m->state = state;
    m->due = due;
    jinn_fsm_link(state_tree(q, state), &m->by_state, "queue messages by state");
}

static struct jinn_qmsg *find_msg(const struct jinn_queue *q, uint64_t seq)
{
    struct jinn_qmsg probe;
    struct jinn_tree_node *n;
    probe.seq = seq;
    n = jinn_tree_find(&q->all, &probe.by_seq);
    return n ? MSG(n, by_seq) : NULL;
}

const struct jinn_qmsg *jinn_queue_msg(const struct jinn_queue *q, uint64_t seq)
{
    return find_msg(q, seq);
}

static void remove_msg(struct jinn_queue *q, struct jinn_qmsg *m)
{
    jinn_fsm_unlink(state_tree(q, m->state), &m->by_state, "queue messages by state");
    jinn_fsm_unlink(&q->all, &m->by_seq, "queue messages by seq");
    q->bytes -= m->len;
    msg_free(&m->by_seq);
}

static void set_reason(struct jinn_qmsg *m, const char *text, size_t len)
{
    char *copy = jinn_strndup(text, len);
    if (copy == NULL) {
        /* The reason is part of the replicated state (and the snapshot). */
        jinn_fsm_fatal("out of memory recording a failure reason");
    }
    jinn_free(m->reason);
    m->reason = copy;
}

/* Where a failed delivery goes: dead letters once max_deliver is used up. */
static void fail_delivery(struct jinn_queue *q, struct jinn_qmsg *m, uint64_t now,
                          uint64_t delay, const char *reason, size_t reason_len)
{
    if (reason_len > 0) {
        set_reason(m, reason, reason_len);
    }
    if (m->max_deliver != 0 && m->delivery >= m->max_deliver) {
        char why[96];
        int n = snprintf(why, sizeof why, "%s after %llu deliveries",
                         reason_len ? "failed" : "ack_wait expired",
                         (unsigned long long)m->delivery);
        if (reason_len == 0) {
            set_reason(m, why, (size_t)n);
        }
        move(q, m, JINN_QM_DEAD, 0);
    } else if (delay == 0) {
        move(q, m, JINN_QM_READY, 0);
    } else {
        move(q, m, JINN_QM_DELAYED, jinn_fsm_deadline(now, delay));
    }
}

void jinn_queues_expire(struct jinn_queues *qs, uint64_t now)
{
    struct jinn_tree_iter qit;
    for (struct jinn_tree_node *qn = jinn_tree_seek(&qs->by_name, NULL, &qit); qn;
         qn = jinn_tree_next(&qit)) {
        struct jinn_queue *q = jinn_tree_entry(qn, struct jinn_queue, by_name);
        struct jinn_tree_node *n;
        while ((n = jinn_tree_first(&q->leased)) != NULL && MSG(n, by_state)->due <= now) {
            fail_delivery(q, MSG(n, by_state), now, 0, NULL, 0);
        }
        while ((n = jinn_tree_first(&q->delayed)) != NULL && MSG(n, by_state)->due <= now) {
            move(q, MSG(n, by_state), JINN_QM_READY, 0);
        }
        while ((n = jinn_tree_first(&q->idem_exp)) != NULL &&
               IDEM(n, by_exp)->expires_at <= now) {
            struct idem_entry *e = IDEM(n, by_exp);
            jinn_fsm_unlink(&q->idem_exp, &e->by_exp, "queue idempotency keys by expiry");
            jinn_fsm_unlink(&q->idem, &e->by_key, "queue idempotency keys");
            jinn_free(e);
        }
    }
}

static uint64_t earliest(uint64_t a, uint64_t b) { return a == 0 || (b != 0 && b < a) ? b : a; }

uint64_t jinn_queues_next_due(const struct jinn_queues *qs)
{
    uint64_t due = 0;
    for (const struct jinn_queue *q = jinn_queues_next(qs, NULL); q; q = jinn_queues_next(qs, q)) {
        struct jinn_tree_node *n;
        if ((n = jinn_tree_first(&q->leased)) != NULL) {
            due = earliest(due, MSG(n, by_state)->due);
        }
        if ((n = jinn_tree_first(&q->delayed)) != NULL) {
            due = earliest(due, MSG(n, by_state)->due);
        }
        if ((n = jinn_tree_first(&q->idem_exp)) != NULL) {
            due = earliest(due, IDEM(n, by_exp)->expires_at);
        }
    }
    return due;
}

/* A message another worker failed goes preferably to someone else: skip it
 * for its last holder while another worker has fetched recently. */
static bool skip_for(const struct jinn_queue *q, const struct jinn_qmsg *m, const char *worker,
                     uint64_t now, uint64_t window)
{
    if (m->delivery == 0 || strcmp(m->worker, worker) != 0) {
        return false;
    }
    for (unsigned i = 0; i < q->n_seen; i++) {
        if (strcmp(q->seen[i].worker, worker) != 0 && q->seen[i].at + window >= now) {
            return true;
        }
    }
    return false;
}

bool jinn_queue_has_ready_for(const struct jinn_queue *q, const char *worker, uint64_t now,
                              uint64_t ack_wait)
{
    struct jinn_tree_iter it;
    for (struct jinn_tree_node *n = jinn_tree_seek(&q->ready, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        if (!skip_for(q, MSG(n, by_state), worker, now, ack_wait)) {
            return true;
        }
    }
    return false;
}

unsigned jinn_queue_fetch_fit(const struct jinn_queue *q, const char *worker, uint64_t now,
                              uint64_t ack_wait, unsigned max, uint64_t limit,
                              uint64_t (*cost)(const uint8_t *p, size_t len))
{
    struct jinn_tree_iter it;
    uint64_t total = 0;
    unsigned n = 0;
    /* The same walk as fetch(): ready messages in order, skip_for aside. */
    for (struct jinn_tree_node *t = jinn_tree_seek(&q->ready, NULL, &it); t && n < max;
         t = jinn_tree_next(&it)) {
        const struct jinn_qmsg *m = MSG(t, by_state);
        uint64_t c;
        if (skip_for(q, m, worker, now, ack_wait)) {
            continue;
        }
        c = cost(m->payload, m->len);
        if (n > 0 && (c > limit || total > limit - c)) {
            break;
        }
        total += c;
        n++;
    }
    return n;
}

static void saw(struct jinn_queue *q, const char *worker, uint64_t now)
{
    unsigned oldest = 0;
    for (unsigned i = 0; i < q->n_seen; i++) {
        if (strcmp(q->seen[i].worker, worker) == 0) {
            q->seen[i].at = now;
            return;
        }
        if (q->seen[i].at < q->seen[oldest].at) {
            oldest = i;
        }
    }
    if (q->n_seen < JINN_QUEUE_SEEN_MAX) {
        oldest = q->n_seen++;
    }
    snprintf(q->seen[oldest].worker, sizeof q->seen[oldest].worker, "%s", worker);
    q->seen[oldest].at = now;
}

static int publish(struct jinn_queues *qs, uint64_t index, uint64_t now, const struct jinn_cmd *c,
                   uint64_t *value)
{
    struct jinn_queue *q = find(qs, (const char *)c->q.queue.p, c->q.queue.len);
    struct jinn_qmsg *m;
    struct idem_entry *e = NULL;
    bool created = false;

    /* A name no queue can have is the command's result on every replica
     * (JOB_CRON builds names itself: a safety net behind its checks). */
    if (c->q.queue.len == 0 || c->q.queue.len > JINN_QUEUE_NAME_MAX) {
        return JINN_EINVAL;
    }
    if (q != NULL && c->q.idem.len > 0) {
        struct idem_entry *probe = jinn_malloc(sizeof *probe + c->q.idem.len);
        struct jinn_tree_node *n;
        if (probe == NULL) {
            return JINN_ENOMEM;
        }
        probe->len = c->q.idem.len;
        memcpy(probe->key, c->q.idem.p, c->q.idem.len);
        n = jinn_tree_find(&q->idem, &probe->by_key);
        jinn_free(probe);
        if (n != NULL) {
            *value = IDEM(n, by_key)->seq; /* a retry: nothing added */
            return JINN_OK;
        }
    }
    if (q != NULL && ((c->q.count != 0 && q->all.count >= c->q.count) ||
                      (c->q.bytes != 0 && q->bytes + c->q.payload.len > c->q.bytes))) {
        return JINN_EFULL;
    }
    if (q == NULL) {
        if (qs->by_name.count >= JINN_QUEUES_MAX) {
            return JINN_EFULL;
        }
        q = queue_new((const char *)c->q.queue.p, c->q.queue.len);
        if (q == NULL) {
            return JINN_ENOMEM;
        }
        created = true;
    }
    m = jinn_calloc(1, sizeof *m + c->q.payload.len);
    if (c->q.idem.len > 0) {
        e = jinn_calloc(1, sizeof *e + c->q.idem.len);
    }
    if (m == NULL || (c->q.idem.len > 0 && e == NULL)) {
        jinn_free(m);
        jinn_free(e);
        if (created) {
            queue_free(&q->by_name);
        }
        return JINN_ENOMEM;
    }
    if (created) {
        jinn_fsm_link(&qs->by_name, &q->by_name, "queues by name");
    }
    m->seq = index;
    m->max_deliver = c->q.max_deliver;
    m->len = c->q.payload.len;
    if (m->len) {
        memcpy(m->payload, c->q.payload.p, m->len);
    }
    jinn_fsm_link(&q->all, &m->by_seq, "queue messages by seq");
    move(q, m, JINN_QM_READY, 0);
    q->bytes += m->len;
    q->published++;
    if (e != NULL) {
        e->seq = index;
        e->expires_at = jinn_fsm_deadline(now, c->q.ms);
        e->len = c->q.idem.len;
        memcpy(e->key, c->q.idem.p, e->len);
        jinn_fsm_link(&q->idem, &e->by_key, "queue idempotency keys");
        jinn_fsm_link(&q->idem_exp, &e->by_exp, "queue idempotency keys by expiry");
    }
    *value = index;
    return JINN_OK;
}

static int fetch(struct jinn_queues *qs, uint64_t now, const struct jinn_cmd *c, uint64_t *value)
{
    struct jinn_queue *q = find(qs, (const char *)c->q.queue.p, c->q.queue.len);
    char worker[JINN_QUEUE_WORKER_MAX + 1];
    struct jinn_tree_iter it;
    struct jinn_tree_node *n, *next;
    uint64_t max = c->q.count < JINN_QUEUE_FETCH_MAX ? c->q.count : JINN_QUEUE_FETCH_MAX;

    qs->n_fetched = 0;
    *value = 0;
    if (q == NULL || c->q.worker.len == 0) {
        return q == NULL ? JINN_OK : JINN_EINVAL;
    }
    memcpy(worker, c->q.worker.p, c->q.worker.len);
    worker[c->q.worker.len] = '\0';
    /* Collect first: leasing moves messages out of the tree being walked. */
    for (n = jinn_tree_seek(&q->ready, NULL, &it); n && qs->n_fetched < max; n = next) {
        struct jinn_qmsg *m = MSG(n, by_state);
        next = jinn_tree_next(&it);
        if (!skip_for(q, m, worker, now, c->q.ms)) {
            qs->fetched[qs->n_fetched++] = m->seq;
        }
    }
    for (unsigned i = 0; i < qs->n_fetched; i++) {
        struct jinn_qmsg *m = find_msg(q, qs->fetched[i]);
        m->delivery++;
        m->leased_ms = now;
        memcpy(m->worker, worker, c->q.worker.len + 1);
        move(q, m, JINN_QM_LEASED, jinn_fsm_deadline(now, c->q.ms));
        q->delivered++;
    }
    saw(q, worker, now);
    *value = qs->n_fetched;
    return JINN_OK;
}

/* The message c acts on, if the caller holds its lease. */
static int leased_msg(const struct jinn_queues *qs, const struct jinn_cmd *c,
                      struct jinn_queue **qp, struct jinn_qmsg **mp)
{
    struct jinn_queue *q = find(qs, (const char *)c->q.queue.p, c->q.queue.len);
    struct jinn_qmsg *m = q ? find_msg(q, c->q.seq) : NULL;
    if (m == NULL) {
        return JINN_ENOTFOUND;
    }
    if (m->state != JINN_QM_LEASED || strlen(m->worker) != c->q.worker.len ||
        memcmp(m->worker, c->q.worker.p, c->q.worker.len) != 0 ||
        (c->q.delivery != 0 && c->q.delivery != m->delivery)) {
        return JINN_ECONFLICT;
    }
    *qp = q;
    *mp = m;
    return JINN_OK;
}

int jinn_queues_lease_check(const struct jinn_queues *qs, const struct jinn_cmd *c)
{
    struct jinn_queue *q;
    struct jinn_qmsg *m;
    return leased_msg(qs, c, &q, &m);
}

int jinn_queues_apply(struct jinn_queues *qs, uint64_t index, uint64_t now,
                      const struct jinn_cmd *c, uint64_t *value)
{
    struct jinn_queue *q = NULL;
    struct jinn_qmsg *m = NULL;
    int rv;

    *value = 0;
    switch (c->type) {
    case JINN_CMD_Q_PUBLISH:
        return publish(qs, index, now, c, value);
    case JINN_CMD_Q_FETCH:
        return fetch(qs, now, c, value);
    case JINN_CMD_Q_REQUEUE:
    case JINN_CMD_Q_DROP:
        q = find(qs, (const char *)c->q.queue.p, c->q.queue.len);
        m = q ? find_msg(q, c->q.seq) : NULL;
        if (m == NULL) {
            return JINN_ENOTFOUND;
        }
        if (m->state != JINN_QM_DEAD) {
            return JINN_ECONFLICT;
        }
        if (c->type == JINN_CMD_Q_DROP) {
            remove_msg(q, m);
        } else {
            m->delivery = 0;
            move(q, m, JINN_QM_READY, 0);
        }
        *value = c->q.seq;
        return JINN_OK;
    default:
        break;
    }
    rv = leased_msg(qs, c, &q, &m);
    if (rv != JINN_OK) {
        return rv;
    }
    switch (c->type) {
    case JINN_CMD_Q_ACK:
        q->acked++;
        remove_msg(q, m);
        break;
    case JINN_CMD_Q_NAK:
        fail_delivery(q, m, now, c->q.ms, (const char *)c->q.reason.p, c->q.reason.len);
        break;
    case JINN_CMD_Q_PROGRESS:
        move(q, m, JINN_QM_LEASED, jinn_fsm_deadline(now, c->q.ms));
        break;
    case JINN_CMD_Q_TERM:
        set_reason(m, c->q.reason.len ? (const char *)c->q.reason.p : "terminated",
                   c->q.reason.len ? c->q.reason.len : 10);
        move(q, m, JINN_QM_DEAD, 0);
        break;
    default:
        jinn_fsm_fatal("command type %d is not a queue command", c->type);
    }
    *value = c->q.seq;
    return JINN_OK;
}

/* Snapshot section: u64 queue count; per queue in name order: name,
 * counters, recent fetchers, messages in seq order (seq, due, delivery,
 * max_deliver, leased_ms (format 3 on), state, worker, reason, payload),
 * idempotency keys. */
static void encode_queues(const struct jinn_queues *qs, struct jinn_wbuf *w, bool with_leased)
{
    jinn_wbuf_put_u64(w, qs->by_name.count);
    for (const struct jinn_queue *q = jinn_queues_next(qs, NULL); q; q = jinn_queues_next(qs, q)) {
        struct jinn_tree_iter it;
        jinn_wbuf_put_str(w, q->name);
        jinn_wbuf_put_u64(w, q->published);
        jinn_wbuf_put_u64(w, q->delivered);
        jinn_wbuf_put_u64(w, q->acked);
        jinn_wbuf_put_u32(w, q->n_seen);
        for (unsigned i = 0; i < q->n_seen; i++) {
            jinn_wbuf_put_str(w, q->seen[i].worker);
            jinn_wbuf_put_u64(w, q->seen[i].at);
        }
        jinn_wbuf_put_u64(w, q->all.count);
        for (struct jinn_tree_node *n = jinn_tree_seek(&q->all, NULL, &it); n;
             n = jinn_tree_next(&it)) {
            const struct jinn_qmsg *m = MSG(n, by_seq);
            const char *reason = m->reason ? m->reason : "";
            size_t worker_len = strlen(m->worker), reason_len = strlen(reason);
            /* One reserve per message, fields written in place (codec.h). */
            size_t size = (with_leased ? 40 : 32) + 1 + 12 + worker_len + reason_len + m->len;
            uint8_t *p;
            if (!jinn_wbuf_reserve(w, size)) {
                return;
            }
            p = w->data + w->len;
            p = jinn_enc_u64(p, m->seq);
            p = jinn_enc_u64(p, m->due);
            p = jinn_enc_u64(p, m->delivery);
            p = jinn_enc_u64(p, m->max_deliver);
            if (with_leased) {
                p = jinn_enc_u64(p, m->leased_ms);
            }
            *p++ = m->state;
            p = jinn_enc_bytes(p, m->worker, worker_len);
            p = jinn_enc_bytes(p, reason, reason_len);
            (void)jinn_enc_bytes(p, m->payload, m->len);
            w->len += size;
        }
        jinn_wbuf_put_u64(w, q->idem.count);
        for (struct jinn_tree_node *n = jinn_tree_seek(&q->idem, NULL, &it); n;
             n = jinn_tree_next(&it)) {
            const struct idem_entry *e = IDEM(n, by_key);
            jinn_wbuf_put_bytes(w, e->key, e->len);
            jinn_wbuf_put_u64(w, e->seq);
            jinn_wbuf_put_u64(w, e->expires_at);
        }
    }
}

void jinn_queues_encode(const struct jinn_queues *qs, struct jinn_wbuf *w)
{
    encode_queues(qs, w, true);
}

/* leased_ms is informational (a running job's "since"): a replica that
 * restored a format-2 snapshot holds 0 where one that replayed the Q_FETCH
 * holds the lease time, and no apply decision reads it. The digest covers
 * only what every replica agrees on, so it is left out (this is also
 * format 2's encoding, so an upgraded node digests as an old one). */
void jinn_queues_encode_digest(const struct jinn_queues *qs, struct jinn_wbuf *w)
{
    encode_queues(qs, w, false);
}

static int decode_queue(struct jinn_queue *q, struct jinn_rbuf *r, uint32_t version)
{
    uint64_t n_msgs, n_idem;
    q->published = jinn_rbuf_get_u64(r);
    q->delivered = jinn_rbuf_get_u64(r);
    q->acked = jinn_rbuf_get_u64(r);
    q->n_seen = jinn_rbuf_get_u32(r);
    if (r->failed || q->n_seen > JINN_QUEUE_SEEN_MAX) {
        return JINN_ECORRUPT;
    }
    for (unsigned i = 0; i < q->n_seen; i++) {
        const uint8_t *p;
        size_t len = jinn_rbuf_get_bytes(r, &p, JINN_QUEUE_WORKER_MAX);
        if (r->failed) {
            return JINN_ECORRUPT;
        }
        memcpy(q->seen[i].worker, p, len);
        q->seen[i].worker[len] = '\0';
        q->seen[i].at = jinn_rbuf_get_u64(r);
    }
    n_msgs = jinn_rbuf_get_u64(r);
    if (r->failed || n_msgs > r->left) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < n_msgs; i++) {
        uint64_t seq = jinn_rbuf_get_u64(r), due = jinn_rbuf_get_u64(r);
        uint64_t delivery = jinn_rbuf_get_u64(r), max_deliver = jinn_rbuf_get_u64(r);
        uint64_t leased_ms = version >= 3 ? jinn_rbuf_get_u64(r) : 0;
        uint8_t state = jinn_rbuf_get_u8(r);
        const uint8_t *worker, *reason, *payload;
        size_t worker_len = jinn_rbuf_get_bytes(r, &worker, JINN_QUEUE_WORKER_MAX);
        size_t reason_len = jinn_rbuf_get_bytes(r, &reason, JINN_QUEUE_REASON_MAX);
        size_t len = jinn_rbuf_get_bytes(r, &payload, JINN_QUEUE_PAYLOAD_MAX);
        struct jinn_qmsg *m;
        if (r->failed || state < JINN_QM_READY || state > JINN_QM_DEAD || seq == 0 ||
            find_msg(q, seq) != NULL) {
            return JINN_ECORRUPT;
        }
        m = jinn_calloc(1, sizeof *m + len);
        if (m == NULL) {
            return JINN_ENOMEM;
        }
        m->seq = seq;
        m->delivery = delivery;
        m->max_deliver = max_deliver;
        m->leased_ms = leased_ms;
        m->len = len;
        memcpy(m->payload, payload, len);
        memcpy(m->worker, worker, worker_len);
        if (reason_len > 0 && (m->reason = jinn_strndup((const char *)reason, reason_len)) == NULL) {
            jinn_free(m);
            return JINN_ENOMEM;
        }
        jinn_tree_insert(&q->all, &m->by_seq); /* seq checked unique above */
        move(q, m, state, due);
        q->bytes += len;
    }
    n_idem = jinn_rbuf_get_u64(r);
    if (r->failed || n_idem > r->left) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < n_idem; i++) {
        const uint8_t *key;
        size_t len = jinn_rbuf_get_bytes(r, &key, JINN_QUEUE_IDEM_MAX);
        struct idem_entry *e = r->failed ? NULL : jinn_calloc(1, sizeof *e + len);
        if (e == NULL) {
            return r->failed ? JINN_ECORRUPT : JINN_ENOMEM;
        }
        e->len = len;
        memcpy(e->key, key, len);
        e->seq = jinn_rbuf_get_u64(r);
        e->expires_at = jinn_rbuf_get_u64(r);
        if (r->failed || jinn_tree_insert(&q->idem, &e->by_key) != NULL) {
            jinn_free(e);
            return JINN_ECORRUPT;
        }
        jinn_tree_insert(&q->idem_exp, &e->by_exp);
    }
    return 0;
}

int jinn_queues_decode(struct jinn_queues *qs, struct jinn_rbuf *r, uint32_t version)
{
    uint64_t count = jinn_rbuf_get_u64(r);
    if (r->failed || count > JINN_QUEUES_MAX) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *name;
        size_t len = jinn_rbuf_get_bytes(r, &name, JINN_QUEUE_NAME_MAX);
        struct jinn_queue *q;
        int rv;
        if (r->failed || len == 0 || memchr(name, '\0', len) != NULL) {
            jinn_queues_clear(qs);
            return JINN_ECORRUPT;
        }
        q = queue_new((const char *)name, len);
        if (q == NULL) {
            jinn_queues_clear(qs);
            return JINN_ENOMEM;
        }
        rv = decode_queue(q, r, version);
        if (rv == 0 && jinn_tree_insert(&qs->by_name, &q->by_name) != NULL) {
            rv = JINN_ECORRUPT;
        }
        if (rv != 0) {
            queue_free(&q->by_name);
            jinn_queues_clear(qs);
            return rv;
        }
    }
    return 0;
}
