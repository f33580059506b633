/* jobs.h - the replicated side of function jobs: kept results and cron.
 *
 * Jobs of function F are messages of the queue WORKERS_F (queue.h): the
 * queue commands lease, nak and terminate them. This section adds
 *
 *   results  JOB_ACK acks a leased message exactly as Q_ACK does and, in
 *            the same apply, keeps the job's result: (fn, seq) -> status,
 *            response bytes, finished_ms, delivery, worker. A result is
 *            forgotten at finished_ms + keep_ms (cluster time, in the sweep
 *            before every command), and while the results' total bytes are
 *            over keep_bytes the oldest-finished go first. Both values are
 *            the leader's policy, carried in each JOB_ACK.
 *   cron     for every active function with a `cron` setting, the next tick
 *            (first tick strictly after the deploy's cluster time). The
 *            leader proposes JOB_CRON(fn, tick) when the tick is due
 *            (jinn_jobs_cron_next); apply fires it only if tick is still
 *            the function's next tick and not in the future of the entry:
 *            one message published to WORKERS_F, and the next tick becomes
 *            the first one strictly after the entry's time. So a tick runs
 *            at most once whatever the leaders propose, and ticks missed
 *            while the cluster had no quorum collapse into one run. */
#ifndef JINN_FSM_JOBS_H
#define JINN_FSM_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "cron.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"
#include "fsm/queue.h"
#include "tree.h"

/* Functions with longer names have no jobs queue (WORKERS_ + name is a
 * queue name, at most JINN_QUEUE_NAME_MAX bytes): no cron, no jobs. */
#define JINN_JOB_FN_NAME_MAX (JINN_QUEUE_NAME_MAX - (sizeof JINN_JOB_QUEUE_PREFIX - 1))

/* Bytes a kept result counts beyond its response (bounds their number). */
#define JINN_JOB_RESULT_OVERHEAD 256u
#define JINN_JOB_RESULTS_MAX_BYTES_LIMIT (1ull << 40) /* snapshot sanity bound */

struct jinn_job_result {
    struct jinn_tree_node by_key;    /* (fn, seq) */
    struct jinn_tree_node by_fn;     /* (fn, index, seq descending): newest first */
    struct jinn_tree_node by_index;  /* (index, seq): oldest finished first */
    struct jinn_tree_node by_expiry; /* (expires_ms, index, seq) */
    char fn[JINN_FN_NAME_MAX + 1];
    uint64_t seq;         /* the job id: its WORKERS_<fn> message seq */
    uint64_t index;       /* raft index of the JOB_ACK */
    uint64_t finished_ms; /* cluster time of the JOB_ACK */
    uint64_t expires_ms;
    uint64_t delivery;
    uint32_t status;
    char worker[JINN_QUEUE_WORKER_MAX + 1];
    size_t len;
    uint8_t response[];
};

struct jinn_job_cron {
    struct jinn_tree_node by_name;
    struct jinn_tree_node by_next; /* (next_ms, name) */
    char fn[JINN_FN_NAME_MAX + 1];
    char expr[JINN_CRON_EXPR_MAX + 1];
    uint64_t next_ms;
};

struct jinn_jobs {
    struct jinn_tree results; /* by_key */
    struct jinn_tree by_fn;
    struct jinn_tree by_index;
    struct jinn_tree by_expiry;
    uint64_t bytes;             /* sum of len + JINN_JOB_RESULT_OVERHEAD */
    struct jinn_tree crons;     /* by_name */
    struct jinn_tree cron_next; /* by_next */
    /* Not state: the per-ack outcome of the JOB_ACK just applied (0,
     * JINN_ENOTFOUND, JINN_ECONFLICT), read by its proposer's callback as
     * queues.fetched is. */
    uint32_t n_acked;
    int acked[JINN_JOB_ACK_MAX];
    uint64_t acked_seq[JINN_JOB_ACK_MAX];
};

void jinn_jobs_init(struct jinn_jobs *jobs);
void jinn_jobs_clear(struct jinn_jobs *jobs);

/* Forgets every result whose time is up at now. */
void jinn_jobs_expire(struct jinn_jobs *jobs, uint64_t now);
/* Earliest result expiry; 0 when none (the leader's NOOP timer). Cron ticks
 * are not in it: the leader proposes JOB_CRON for those. */
uint64_t jinn_jobs_next_due(const struct jinn_jobs *jobs);

/* JOB_ACK at index, cluster time now: 0 (*value = how many of its acks
 * took effect) or JINN_ENOMEM. Each ack is applied on its own, in order:
 * acked[i] = 0, JINN_ENOTFOUND (no such message) or JINN_ECONFLICT (not
 * the caller's lease / delivery), and one refused ack changes nothing. */
int jinn_jobs_ack(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                  const struct jinn_cmd *c, uint64_t *value);
/* JOB_CRON: 0 (*value = the published seq, = index), JINN_ECONFLICT (not the
 * function's next tick, or not due at now: nothing changes), JINN_EFULL
 * (the queue is full: the tick is dropped and the next one scheduled),
 * JINN_ENOMEM. Due-ness and the next tick use max(now, the entry's
 * cron.now_ms), the proposer's wall clock. */
int jinn_jobs_cron(struct jinn_jobs *jobs, struct jinn_queues *qs, uint64_t index, uint64_t now,
                   const struct jinn_cmd *c, uint64_t *value);
/* After an FN_* command on name applied: the function's cron entry follows
 * its active version (added, recomputed when the expression changed,
 * removed). */
void jinn_jobs_fn_changed(struct jinn_jobs *jobs, const struct jinn_fns *fns, const char *name,
                          size_t name_len, uint64_t now);

/* The earliest due cron tick and its function (name[65]); 0 when none. */
uint64_t jinn_jobs_cron_next(const struct jinn_jobs *jobs, char name[65]);
/* The next tick of one function; 0 when it has no schedule. */
uint64_t jinn_jobs_cron_of(const struct jinn_jobs *jobs, const char *fn);

/* Handler lookups (loop thread; valid until the next apply). */
const struct jinn_job_result *jinn_jobs_result(const struct jinn_jobs *jobs, const char *fn,
                                               uint64_t seq);
/* fn's results newest first: after == NULL gives the newest. */
const struct jinn_job_result *jinn_jobs_results_next(const struct jinn_jobs *jobs,
                                                     const char *fn,
                                                     const struct jinn_job_result *after);

/* Snapshot section (format 3): results, then cron entries. */
void jinn_jobs_encode(const struct jinn_jobs *jobs, struct jinn_wbuf *w);
int jinn_jobs_decode(struct jinn_jobs *jobs, const struct jinn_fns *fns, struct jinn_rbuf *r);

#endif
