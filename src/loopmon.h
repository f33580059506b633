/* loopmon.h - measures event-loop stalls.
 *
 * The loop budget (docs/design.md): no request, entry or timer may hold the
 * loop longer than JINN_LOOP_BUDGET_MS. A repeating timer every
 * JINN_LOOPMON_TICK_MS compares when it fired with when it was due; the
 * difference is how long the loop was busy elsewhere (to ~1 ms): a stall,
 * as clients see it. It also counts the loop thread's CPU time over the
 * same interval: "busy" is the part of a stall spent computing on the loop,
 * which a loaded machine (the process not scheduled) does not inflate, and
 * which blocking calls on the loop do not show. Tests assert on busy time,
 * operators watch stalls. */
#ifndef JINN_LOOPMON_H
#define JINN_LOOPMON_H

#include <stdint.h>
#include <uv.h>

#define JINN_LOOP_BUDGET_MS 20
#define JINN_LOOPMON_TICK_MS 10
#define JINN_LOOPMON_BUCKETS 9

/* Upper bounds (ms) of the histogram buckets; the last is +Inf. */
extern const uint64_t jinn_loopmon_bounds[JINN_LOOPMON_BUCKETS - 1];

struct jinn_loopmon {
    uv_timer_t timer;
    uint64_t due_ns;       /* when the next tick should fire (uv_hrtime) */
    uint64_t max_ms;       /* longest stall since start */
    uint64_t over_budget;  /* stalls longer than JINN_LOOP_BUDGET_MS */
    uint64_t buckets[JINN_LOOPMON_BUCKETS]; /* ticks by lateness, not cumulative */
    uint64_t ticks;
    uint64_t sum_ms;
    uint64_t busy_max_ms;
    uint64_t busy_buckets[JINN_LOOPMON_BUCKETS]; /* ticks by busy time, not cumulative */
    uint64_t busy_sum_ms;
    uint64_t cpu_ns; /* the loop thread's CPU time at the last tick */
};

/* Starts measuring on loop. The timer does not keep the loop alive. */
void jinn_loopmon_start(uv_loop_t *loop, struct jinn_loopmon *m);

/* Closes the timer (m must stay valid until the loop runs its close). */
void jinn_loopmon_stop(struct jinn_loopmon *m);

#endif
