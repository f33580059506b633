/* jobs.h - this node's job worker pools (issue 14, the seed's WORKERS_ groups).
 *
 * Jobs of function F are the messages of the replicated queue WORKERS_F.
 * Every node follows the registry: for each active function whose settings
 * ask for workers (> 0) and whose module is warm here, it keeps
 * min(workers, what is left of the node's job_workers) slots. A slot
 * long-polls one job through this node's own API (POST
 * /v1/queues/WORKERS_F/fetch, worker "<node>/<F>/<slot>", forwarded to the
 * leader like any client's), runs it through the runner with the async
 * request shape, keeps the lease alive (progress at ack_wait/3) and
 * settles it: 2xx acks with the response (jobs ack endpoint), anything
 * else naks with the queue's backoff and a reason; max_deliver sends it to
 * the dead letters. Fetch/settle failures (no leader, no quorum) back off,
 * bounded and jittered. The leader also drives the cron timer: when the
 * state machine says a function's tick is due, it proposes JOB_CRON. */
#ifndef JINN_WASM_JOBS_H
#define JINN_WASM_JOBS_H

#include <jansson.h>

#include "codec.h"

struct jinn_api;
struct jinn_job_pools;

/* NULL on ENOMEM. Slots start on the next loop turn. */
struct jinn_job_pools *jinn_job_pools_create(struct jinn_api *api);

/* The apply hook: the registry or the queues may have changed (cheap; the
 * pools are looked at on a later loop turn). */
void jinn_job_pools_applied(struct jinn_job_pools *j);

/* Shutdown, before the runner stops: no new leases; running jobs get
 * job_grace to finish and settle; the rest are naked at once (delay 0) so
 * other nodes take them without waiting for their lease to expire. cb(data)
 * runs once nothing is running or in flight (on a later loop turn). */
void jinn_job_pools_stop(struct jinn_job_pools *j, void (*cb)(void *data), void *data);

/* After the stop's callback (or without a stop, when the loop is gone). */
void jinn_job_pools_destroy(struct jinn_job_pools *j);

/* /v1/status "jobs": per function slots busy/idle, done/failed counts. */
void jinn_job_pools_status(const struct jinn_job_pools *j, json_t *obj);
/* Adds "jobs" (this node's slots for function name) to obj. */
void jinn_job_pools_describe(const struct jinn_job_pools *j, const char *name, json_t *obj);
/* Prometheus series jinn_jobs_*. */
void jinn_job_pools_metrics(const struct jinn_job_pools *j, struct jinn_wbuf *out);

#endif
