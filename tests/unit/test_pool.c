/* test_pool.c - wasm/pool.c against a fake sandbox (tests/unit/fake_sandbox.py)
 * that answers, misbehaves or dies on demand: outcomes, host calls, logs,
 * protocol errors, timeouts, crashes, failed starts, the queue bound, drain
 * and destroy (every child reaped: the loop ends with no handle open). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "error.h"
#include "unit.h"
#include "wasm/pool.h"
#include "wasm/proto.h"

#define FAKE "tests/unit/fake_sandbox.py"

struct probe {
    struct jinn_wasm_job job;
    bool done;
    enum jinn_wasm_outcome outcome;
    uint32_t detail;
    char out[128];
    int hostcalls, logs, stderr_lines;
    bool defer;     /* keep host calls unanswered */
    bool abandoned; /* its caller left */
};

static void p_done(void *data, const struct jinn_wasm_result *res)
{
    struct probe *p = data;
    p->done = true;
    p->outcome = res->outcome;
    p->detail = res->detail;
    snprintf(p->out, sizeof p->out, "%.*s", (int)res->out_len, (const char *)res->out);
}

static void p_hostcall(void *data, int call, uint32_t a, uint32_t outmax, const void *b1,
                       size_t n1, const void *b2, size_t n2, jinn_wasm_reply_fn reply,
                       void *rdata)
{
    struct probe *p = data;
    (void)a;
    (void)outmax;
    (void)b2;
    (void)n2;
    p->hostcalls++;
    if (p->defer) {
        return; /* the job ends first: reply must then never be called */
    }
    if (call == JINN_SBX_KV_GET && n1 == 3 && memcmp(b1, "key", 3) == 0) {
        reply(rdata, 42, "v", 1);
    } else {
        reply(rdata, 0xFFFFFFFFu, NULL, 0);
    }
}

static void p_log(void *data, int level, const void *msg, size_t len)
{
    struct probe *p = data;
    (void)msg;
    (void)len;
    if (level < 0) {
        p->stderr_lines++;
    } else {
        p->logs++;
    }
}

static bool p_wanted(void *data)
{
    struct probe *p = data;
    return !p->abandoned;
}

static const struct jinn_wasm_job_ops ops = {p_done, p_hostcall, p_log, p_wanted};

/* INVOKE after the id: no args, no env, stdin "the request" */
static const uint8_t invoke[] = {0,   0,   0,   0,   0,   0,   0,   0,   11,  0,   0,  0,
                                 't', 'h', 'e', ' ', 'r', 'e', 'q', 'u', 'e', 's', 't'};

static void probe_init(struct probe *p)
{
    memset(p, 0, sizeof *p);
    p->job.ops = &ops;
    p->job.data = p;
    p->job.id = 7;
    p->job.invoke = invoke;
    p->job.invoke_len = sizeof invoke;
}

static void deadline_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *flag or ms passed. Its own timer bounds each wait:
 * an idle pool keeps no timer running. */
static bool run_until(uv_loop_t *loop, const bool *flag, uint64_t ms)
{
    uv_timer_t deadline;
    uint64_t end = uv_now(loop) + ms;
    uv_timer_init(loop, &deadline);
    uv_timer_start(&deadline, deadline_cb, ms, 0);
    while (!*flag && uv_now(loop) < end) {
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

static void set_flag(void *data)
{
    *(bool *)data = true;
}

static struct jinn_wasm_pool *make(uv_loop_t *loop, const char *mode, unsigned size,
                                   uint64_t timeout_ms)
{
    struct jinn_wasm_pool_config cfg = {.name = "t",
                                        .so_path = mode,
                                        .memory_limit = 1 << 20,
                                        .size = size,
                                        .timeout_ms = timeout_ms,
                                        .exe = FAKE};
    struct jinn_wasm_pool *p = NULL;
    if (jinn_wasm_pool_create(loop, &cfg, &p) != 0) {
        return NULL;
    }
    return p;
}

/* Destroys the pool and checks the loop has nothing left open. */
static bool finish(uv_loop_t *loop, struct jinn_wasm_pool *p)
{
    bool gone = false;
    jinn_wasm_pool_destroy(p, set_flag, &gone);
    if (!run_until(loop, &gone, 10000)) {
        return false;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0;
}

TEST(pool_runs_jobs_with_host_calls_and_logs_and_skips_abandoned_ones)
{
    uv_loop_t loop;
    struct probe a, b, c;
    struct jinn_wasm_pool_stats st;
    uv_loop_init(&loop);
    struct jinn_wasm_pool *p = make(&loop, "ok", 1, 10000);
    CHECK(p != NULL);
    probe_init(&a);
    probe_init(&b);
    probe_init(&c);
    c.abandoned = true;
    CHECK_INT(jinn_wasm_pool_submit(p, &a.job), 0);
    CHECK_INT(jinn_wasm_pool_submit(p, &c.job), 0);
    CHECK_INT(jinn_wasm_pool_submit(p, &b.job), 0); /* queued behind a: one sandbox */
    jinn_wasm_pool_stats(p, &st);
    CHECK_INT(st.queued, 3); /* the sandbox is not ready yet */
    CHECK(run_until(&loop, &b.done, 20000));
    CHECK(a.done && c.done);
    CHECK_INT(c.outcome, JINN_WASM_ABANDONED); /* its caller left: never run */
    CHECK_INT(c.hostcalls, 0);
    CHECK_INT(a.outcome, JINN_WASM_EXITED);
    CHECK_STR(a.out, "result=42 stdin=11");
    CHECK_INT(a.hostcalls, 1);
    CHECK_INT(a.logs, 1);
    CHECK_INT(a.stderr_lines, 1);
    CHECK_STR(b.out, "result=42 stdin=11");
    jinn_wasm_pool_stats(p, &st);
    CHECK_INT(st.size, 1);
    CHECK_INT(st.spawned, 1); /* the same sandbox ran both */
    CHECK(finish(&loop, p));
}

static void outcome_case(const char *mode, enum jinn_wasm_outcome want, uint32_t detail,
                         uint64_t timeout_ms, bool *ok)
{
    bool defer = strcmp(mode, "hostcall_twice") == 0;
    uv_loop_t loop;
    struct probe a;
    struct jinn_wasm_pool_stats st;
    *ok = false;
    uv_loop_init(&loop);
    struct jinn_wasm_pool *p = make(&loop, mode, 1, timeout_ms);
    CHECK(p != NULL);
    probe_init(&a);
    a.defer = defer;
    CHECK_INT(jinn_wasm_pool_submit(p, &a.job), 0);
    CHECK(run_until(&loop, &a.done, 20000));
    CHECK_INT(a.outcome, want);
    CHECK_INT(a.detail, detail);
    /* the broken sandbox is replaced */
    if (want != JINN_WASM_TRAPPED) {
        bool never = false;
        run_until(&loop, &never, 300);
        jinn_wasm_pool_stats(p, &st);
        CHECK_INT(st.spawned, 2);
    }
    CHECK(finish(&loop, p));
    *ok = true;
}

TEST(pool_trap_keeps_the_sandbox)
{
    bool ok;
    outcome_case("trap", JINN_WASM_TRAPPED, 7, 10000, &ok);
    CHECK(ok);
}

TEST(pool_frame_over_the_limit_is_a_protocol_error)
{
    bool ok;
    outcome_case("bigframe", JINN_WASM_PROTOCOL, 0, 10000, &ok);
    CHECK(ok);
}

TEST(pool_second_hostcall_before_the_reply_is_a_protocol_error)
{
    bool ok;
    outcome_case("hostcall_twice", JINN_WASM_PROTOCOL, 0, 10000, &ok);
    CHECK(ok);
}

TEST(pool_timeout_kills_the_sandbox)
{
    bool ok;
    outcome_case("hang", JINN_WASM_TIMEOUT, 0, 300, &ok);
    CHECK(ok);
}

TEST(pool_crash_reports_the_signal)
{
    bool ok;
    outcome_case("crash", JINN_WASM_CRASH, 11, 10000, &ok);
    CHECK(ok);
}

TEST(pool_done_before_ready_is_refused_and_failed_starts_end_queued_jobs)
{
    uv_loop_t loop;
    struct probe a;
    struct jinn_wasm_pool_stats st;
    uv_loop_init(&loop);
    struct jinn_wasm_pool *p = make(&loop, "early_done", 1, 60000);
    CHECK(p != NULL);
    probe_init(&a);
    CHECK_INT(jinn_wasm_pool_submit(p, &a.job), 0);
    CHECK(run_until(&loop, &a.done, 20000));
    CHECK_INT(a.outcome, JINN_WASM_UNAVAILABLE);
    jinn_wasm_pool_stats(p, &st);
    CHECK(st.spawned >= 3);
    CHECK(st.spawned <= 5); /* with backoff, not a fork loop */
    CHECK(finish(&loop, p));
}

TEST(pool_queue_is_bounded_and_drain_finishes_queued_jobs)
{
    uv_loop_t loop;
    static struct probe jobs[JINN_WASM_QUEUE_MAX + 1];
    bool gone = false;
    uv_loop_init(&loop);
    struct jinn_wasm_pool *p = make(&loop, "ok", 2, 60000);
    CHECK(p != NULL);
    for (unsigned i = 0; i < JINN_WASM_QUEUE_MAX; i++) {
        probe_init(&jobs[i]);
        CHECK_INT(jinn_wasm_pool_submit(p, &jobs[i].job), 0);
    }
    probe_init(&jobs[JINN_WASM_QUEUE_MAX]);
    CHECK_INT(jinn_wasm_pool_submit(p, &jobs[JINN_WASM_QUEUE_MAX].job), JINN_EBUSY);
    jinn_wasm_pool_drain(p, set_flag, &gone);
    CHECK_INT(jinn_wasm_pool_submit(p, &jobs[JINN_WASM_QUEUE_MAX].job), JINN_ESHUTDOWN);
    CHECK(run_until(&loop, &gone, 60000));
    for (unsigned i = 0; i < JINN_WASM_QUEUE_MAX; i++) {
        CHECK(jobs[i].done);
        CHECK_INT(jobs[i].outcome, JINN_WASM_EXITED);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
}

TEST(pool_destroy_ends_running_and_queued_jobs)
{
    uv_loop_t loop;
    struct probe a, b;
    bool never = false;
    uv_loop_init(&loop);
    struct jinn_wasm_pool *p = make(&loop, "hang", 1, 60000);
    CHECK(p != NULL);
    probe_init(&a);
    probe_init(&b);
    CHECK_INT(jinn_wasm_pool_submit(p, &a.job), 0);
    CHECK_INT(jinn_wasm_pool_submit(p, &b.job), 0);
    run_until(&loop, &never, 1500); /* a runs (hangs), b waits */
    CHECK(!a.done && !b.done);
    CHECK(finish(&loop, p));
    CHECK(a.done && b.done);
    CHECK_INT(a.outcome, JINN_WASM_STOPPED);
    CHECK_INT(b.outcome, JINN_WASM_STOPPED);
}
