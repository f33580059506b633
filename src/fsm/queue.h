/* queue.h - replicated work queues (seed §4: WORKERS_ groups, redelivery).
 *
 * A message is published once (its seq is the raft index of the publish),
 * leased to one worker at a time by a FETCH command, and then acked, naked
 * (retried after a delay), extended, or terminated. A lease that is not
 * acked by its deadline, in cluster time, makes the message ready again;
 * after max_deliver deliveries a failing message moves to the dead letters
 * with the reason. Every decision is a command or the expiry sweep at the
 * start of a command, so all replicas agree on every lease. */
#ifndef JINN_QUEUE_H
#define JINN_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "fsm/cmd.h"
#include "tree.h"

#define JINN_QUEUES_MAX 10000u
#define JINN_QUEUE_SEEN_MAX 16 /* recent fetchers remembered per queue */

enum jinn_qmsg_state { JINN_QM_READY = 1, JINN_QM_LEASED, JINN_QM_DELAYED, JINN_QM_DEAD };

struct jinn_qmsg {
    struct jinn_tree_node by_seq;
    struct jinn_tree_node by_state; /* in the tree of its state */
    uint64_t seq;
    uint64_t due; /* LEASED: lease deadline; DELAYED: when it is ready again */
    uint64_t delivery;
    uint64_t max_deliver;
    uint64_t leased_ms; /* cluster time of the current (or last) lease; 0 = never */
    uint8_t state;
    char worker[JINN_QUEUE_WORKER_MAX + 1]; /* the current or last holder */
    char *reason;                           /* last failure, owned; may be NULL */
    size_t len;
    uint8_t payload[];
};

struct jinn_queue_seen {
    char worker[JINN_QUEUE_WORKER_MAX + 1];
    uint64_t at;
};

struct jinn_queue {
    struct jinn_tree_node by_name;
    char name[JINN_QUEUE_NAME_MAX + 1];
    struct jinn_tree all;     /* by seq */
    struct jinn_tree ready;   /* by seq: FIFO */
    struct jinn_tree leased;  /* by deadline */
    struct jinn_tree delayed; /* by due time */
    struct jinn_tree dead;    /* by seq */
    struct jinn_tree idem;    /* Idempotency-Key -> seq */
    struct jinn_tree idem_exp;
    uint64_t bytes, published, delivered, acked;
    struct jinn_queue_seen seen[JINN_QUEUE_SEEN_MAX];
    unsigned n_seen;
};

struct jinn_queues {
    struct jinn_tree by_name;
    /* What the last FETCH leased, for its proposer (valid during apply). */
    uint64_t fetched[JINN_QUEUE_FETCH_MAX];
    unsigned n_fetched;
};

void jinn_queues_init(struct jinn_queues *qs);
void jinn_queues_clear(struct jinn_queues *qs);

/* Runs every expiry due at now: leases, delays, idempotency keys. */
void jinn_queues_expire(struct jinn_queues *qs, uint64_t now);
/* Earliest deadline of any lease, delay or idempotency key; 0 when none. */
uint64_t jinn_queues_next_due(const struct jinn_queues *qs);

/* Applies a queue command. *value: PUBLISH the seq (an older seq when the
 * Idempotency-Key repeats), FETCH the number leased. Errors: JINN_EFULL,
 * JINN_ENOTFOUND (no such message), JINN_ECONFLICT (not your lease / not a
 * dead letter), JINN_ENOMEM. State changes only on JINN_OK. */
int jinn_queues_apply(struct jinn_queues *qs, uint64_t index, uint64_t now,
                      const struct jinn_cmd *c, uint64_t *value);
/* The check an ACK, NAK, PROGRESS or TERM c makes before it changes
 * anything: 0 when c's worker holds the lease of c's message (with c's
 * delivery, if not 0), else what jinn_queues_apply would return. */
int jinn_queues_lease_check(const struct jinn_queues *qs, const struct jinn_cmd *c);

const struct jinn_queue *jinn_queues_get(const struct jinn_queues *qs, const char *name,
                                         size_t len);
const struct jinn_queue *jinn_queues_next(const struct jinn_queues *qs,
                                          const struct jinn_queue *after);
const struct jinn_qmsg *jinn_queue_msg(const struct jinn_queue *q, uint64_t seq);
/* Counts the messages that a fetch by worker could lease now. */
bool jinn_queue_has_ready_for(const struct jinn_queue *q, const char *worker, uint64_t now,
                              uint64_t ack_wait);
/* How many of the messages a FETCH of at most max by worker would lease now
 * fit in limit bytes, each costing cost(payload) (the reply's encoding of
 * it): counted in lease order, stopping before the first that would pass
 * limit, but at least one when any is ready. The leader proposes that count,
 * so every replica (of any build) leases the same messages. */
unsigned jinn_queue_fetch_fit(const struct jinn_queue *q, const char *worker, uint64_t now,
                              uint64_t ack_wait, unsigned max, uint64_t limit,
                              uint64_t (*cost)(const uint8_t *p, size_t len));

/* The snapshot section; version is the snapshot's (leased_ms from 3 on). */
void jinn_queues_encode(const struct jinn_queues *qs, struct jinn_wbuf *w);
/* The queues section of the replica digest: as jinn_queues_encode without
 * the messages' leased_ms (informational, not agreed after a format-2
 * restore; queue.c). */
void jinn_queues_encode_digest(const struct jinn_queues *qs, struct jinn_wbuf *w);
int jinn_queues_decode(struct jinn_queues *qs, struct jinn_rbuf *r, uint32_t version);

#endif
