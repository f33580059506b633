/* loopmon.c - see loopmon.h. */
#include "loopmon.h"

#include <string.h>

const uint64_t jinn_loopmon_bounds[JINN_LOOPMON_BUCKETS - 1] = {5,   10,  20,  50,
                                                                100, 250, 1000, 5000};

static void tick(uv_timer_t *t)
{
    struct jinn_loopmon *m = t->data;
    uint64_t now = uv_hrtime();
    uint64_t late_ms = now > m->due_ns ? (now - m->due_ns) / 1000000 : 0;
    unsigned b = 0;

    while (b < JINN_LOOPMON_BUCKETS - 1 && late_ms > jinn_loopmon_bounds[b]) {
        b++;
    }
    m->buckets[b]++;
    m->ticks++;
    m->sum_ms += late_ms;
    if (late_ms > m->max_ms) {
        m->max_ms = late_ms;
    }
    if (late_ms > JINN_LOOP_BUDGET_MS) {
        m->over_budget++;
    }
    /* The next tick is due a period after this one actually ran: a stall is
     * counted once, not again by every tick it delayed. */
    m->due_ns = now + (uint64_t)JINN_LOOPMON_TICK_MS * 1000000;
}

void jinn_loopmon_start(uv_loop_t *loop, struct jinn_loopmon *m)
{
    memset(m, 0, sizeof *m);
    uv_timer_init(loop, &m->timer);
    m->timer.data = m;
    m->due_ns = uv_hrtime() + (uint64_t)JINN_LOOPMON_TICK_MS * 1000000;
    uv_timer_start(&m->timer, tick, JINN_LOOPMON_TICK_MS, JINN_LOOPMON_TICK_MS);
    uv_unref((uv_handle_t *)&m->timer);
}

void jinn_loopmon_stop(struct jinn_loopmon *m)
{
    if (!uv_is_closing((uv_handle_t *)&m->timer)) {
        uv_close((uv_handle_t *)&m->timer, NULL);
    }
}
