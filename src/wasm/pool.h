/* pool.h - the sandbox processes of one function version on this node.
 *
 * A pool keeps `size` sandbox processes (`jinn sandbox SO MEM STACK`,
 * wasm/sandbox.h) warm, each talking to the node over a socketpair (fd 3,
 * frames per wasm/proto.h). A job runs on an idle sandbox, or waits in a
 * bounded queue (JINN_WASM_QUEUE_MAX; beyond it the submit is refused) for
 * at most its timeout. A job still running at its timeout is ended by
 * SIGKILL; a sandbox that crashes or breaks the protocol is killed and
 * replaced (with backoff when replacements fail before they are ready).
 * Everything a sandbox says is untrusted and bounded by JINN_SBX_FRAME_MAX:
 * the node never buffers more than one frame of it. */
#ifndef JINN_WASM_POOL_H
#define JINN_WASM_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "wasm/host.h"

/* Jobs waiting for a sandbox, per pool; one more is refused (503). */
#define JINN_WASM_QUEUE_MAX 256
/* The sandbox's call-depth limit (wasm2c's stack depth counter). The
 * sandbox can only lower the depth modules are compiled for, which is
 * wasm-rt.h's WASM_RT_MAX_CALL_STACK_DEPTH default (500; compile.c does not
 * raise it: deeper wasm recursion would need a larger native stack). */
#define JINN_WASM_STACK_DEPTH 500

enum jinn_wasm_outcome {
    JINN_WASM_EXITED = 0,    /* _start returned or proc_exit: detail = exit code */
    JINN_WASM_TRAPPED,       /* detail = enum jinn_sbx_trap */
    JINN_WASM_TOO_LARGE,     /* stdout over JINN_SBX_STDOUT_MAX */
    JINN_WASM_TIMEOUT,       /* killed at the timeout */
    JINN_WASM_CRASH,         /* the sandbox died mid-call: detail = signal (0: exit/EOF) */
    JINN_WASM_PROTOCOL,      /* the sandbox broke the protocol and was killed */
    JINN_WASM_UNAVAILABLE,   /* no sandbox could be started (detail: consecutive failures) */
    JINN_WASM_QUEUE_TIMEOUT, /* waited its whole timeout for an idle sandbox */
    JINN_WASM_STOPPED,       /* the pool was destroyed (shutdown) */
    JINN_WASM_ABANDONED,     /* its caller left while it waited: never run */
};

struct jinn_wasm_result {
    enum jinn_wasm_outcome outcome;
    uint32_t detail;
    const uint8_t *out; /* stdout (EXITED); valid during the callback */
    size_t out_len;
    uint64_t run_us;    /* from INVOKE sent to the end */
    uint64_t queued_us; /* waiting for a sandbox */
};

struct jinn_wasm_job;

struct jinn_wasm_job_ops {
    /* Exactly once per submitted job. */
    void (*done)(void *data, const struct jinn_wasm_result *res);
    /* A host call other than LOG: answer through reply(rdata, ...) exactly
     * once, unless done() ran first (then reply must not be called). */
    void (*hostcall)(void *data, int call, uint32_t a, uint32_t outmax, const void *b1,
                     size_t n1, const void *b2, size_t n2, jinn_wasm_reply_fn reply,
                     void *rdata);
    /* A LOG host call (level as the guest gave it) or, level < 0, bytes the
     * guest wrote to stderr. */
    void (*log)(void *data, int level, const void *msg, size_t len);
    /* Optional: false when nobody waits for the answer any more (the
     * client hung up); a queued job is then dropped instead of run. */
    bool (*wanted)(void *data);
};

struct jinn_wasm_job {
    const struct jinn_wasm_job_ops *ops;
    void *data;
    uint64_t id;           /* invocation id (INVOKE) */
    const uint8_t *invoke; /* the INVOKE payload after the id: args, env, stdin; borrowed
                              until done() */
    size_t invoke_len;
    /* private to pool.c */
    struct jinn_wasm_job *next;
    uint64_t queued_at;  /* uv_hrtime */
    uint64_t started_at; /* uv_hrtime */
};

struct jinn_wasm_pool_config {
    const char *name;    /* the function, for log lines; copied */
    const char *so_path; /* copied */
    uint64_t memory_limit;
    unsigned size;       /* sandboxes kept */
    uint64_t timeout_ms; /* per invocation, and the longest wait in the queue */
    const char *exe;     /* NULL: /proc/self/exe */
};

struct jinn_wasm_pool;

struct jinn_wasm_pool_stats {
    unsigned size;  /* sandboxes alive (starting, idle or busy) */
    unsigned ready; /* idle */
    unsigned busy;
    unsigned queued;
    uint64_t spawned; /* sandboxes started since the pool was made */
    uint64_t killed;  /* killed: timeouts, protocol errors */
    uint64_t crashed; /* died on their own */
};

int jinn_wasm_pool_create(uv_loop_t *loop, const struct jinn_wasm_pool_config *cfg,
                          struct jinn_wasm_pool **out);

/* Runs job now or queues it. Returns 0 (done will run), JINN_EBUSY (the
 * queue is full) or JINN_ESHUTDOWN (the pool is draining or stopped); then
 * done never runs. */
int jinn_wasm_pool_submit(struct jinn_wasm_pool *p, struct jinn_wasm_job *job);

/* No new jobs; those queued or running finish; then the sandboxes are
 * killed and reaped, the pool frees itself and cb(data) runs. A draining
 * pool may still be destroyed (then destroy's cb replaces this one). */
void jinn_wasm_pool_drain(struct jinn_wasm_pool *p, void (*cb)(void *data), void *data);

/* Ends everything now: queued and running jobs get JINN_WASM_STOPPED, the
 * sandboxes are killed; cb(data) runs once every one of them has been
 * reaped and the pool is freed. */
void jinn_wasm_pool_destroy(struct jinn_wasm_pool *p, void (*cb)(void *data), void *data);

void jinn_wasm_pool_stats(const struct jinn_wasm_pool *p, struct jinn_wasm_pool_stats *out);

#endif
