/* loopmon.c - see loopmon.h. */
#include "loopmon.h"

#include <string.h>
#include <time.h>

const uint64_t jinn_loopmon_bounds[JINN_LOOPMON_BUCKETS - 1] = {5,   10,  20,  50,
                                                                100, 250, 1000, 5000};

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned bucket_of(uint64_t ms)
{
    unsigned b = 0;
    while (b < JINN_LOOPMON_BUCKETS - 1 && ms > jinn_loopmon_bounds[b]) {
        b++;
    }
    return b;
}

static void tick(uv_timer_t *t)
{
    struct jinn_loopmon *m = t->data;
    uint64_t now = uv_hrtime();
    uint64_t late_ms = now > m->due_ns ? (now - m->due_ns) / 1000000 : 0;
    uint64_t cpu = thread_cpu_ns();
    uint64_t cpu_ms = cpu > m->cpu_ns ? (cpu - m->cpu_ns) / 1000000 : 0;
    uint64_t busy_ms = cpu_ms < late_ms ? cpu_ms : late_ms;

    m->cpu_ns = cpu;
    m->busy_buckets[bucket_of(busy_ms)]++;
    m->busy_sum_ms += busy_ms;
    if (busy_ms > m->busy_max_ms) {
        m->busy_max_ms = busy_ms;
    }
    m->buckets[bucket_of(late_ms)]++;
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
    m->cpu_ns = thread_cpu_ns();
    uv_timer_start(&m->timer, tick, JINN_LOOPMON_TICK_MS, JINN_LOOPMON_TICK_MS);
    uv_unref((uv_handle_t *)&m->timer);
}

void jinn_loopmon_stop(struct jinn_loopmon *m)
{
    if (!uv_is_closing((uv_handle_t *)&m->timer)) {
        uv_close((uv_handle_t *)&m->timer, NULL);
    }
}
