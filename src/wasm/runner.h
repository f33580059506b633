/* runner.h - functions on this node: compile, pools, invocations.
 *
 * The runner follows the replicated registry (fsm/fn.h): for every active
 * version it gets a compiled module (wasm/compile.h) and keeps a warm pool
 * of pool_size sandbox processes. Invocations are queued (bounded) until a
 * sandbox is idle, killed at their timeout, and answered with the module's
 * response, or 500 (trap, with its kind), 504 (timeout), 502 (output that
 * is not the response JSON). Per function it keeps counters, a duration
 * histogram and the last log lines. */
#ifndef JINN_WASM_RUNNER_H
#define JINN_WASM_RUNNER_H

#include <jansson.h>
#include <stdint.h>

#include "codec.h"

struct jinn_api;
struct jinn_wasm_runner;

enum jinn_fn_state {
    JINN_FN_UNKNOWN = 0, /* not seen by this node yet */
    JINN_FN_COMPILING,
    JINN_FN_READY,
    JINN_FN_FAILED,
};

struct jinn_wasm_runner *jinn_wasm_runner_create(struct jinn_api *api);
/* Kills the sandboxes; pending invocations are answered 503. */
void jinn_wasm_runner_destroy(struct jinn_wasm_runner *r);

/* This node's state for the module with this hash; *message (may be NULL)
 * is the compiler's output for FAILED. */
enum jinn_fn_state jinn_wasm_runner_state(const struct jinn_wasm_runner *r,
                                          const uint8_t sha[32], const char **message);

/* Adds this node's view of function `name` to obj under "local": state,
 * message, compile_ms, pool (size, busy, queued), invocations, errors by
 * kind, duration quantiles. */
void jinn_wasm_runner_describe(const struct jinn_wasm_runner *r, const char *name, json_t *obj);

/* Appends the runner's Prometheus series to out. */
void jinn_wasm_runner_metrics(const struct jinn_wasm_runner *r, struct jinn_wbuf *out);

/* ---- added by D1 (invocations, wiring) ---------------------------------- */

struct jinn_fn;
struct jinn_http_request;

/* The apply hook: the registry may have changed (cheap; the runner looks
 * again on the next loop turn, never inside raft's apply). */
void jinn_wasm_runner_applied(struct jinn_wasm_runner *r);

/* Answers req by running fn's active version on this node, or, while this
 * node's copy is not ready, by relaying it to a node where it is (one hop:
 * a relayed request is never relayed again). */
void jinn_wasm_runner_invoke(struct jinn_wasm_runner *r, struct jinn_http_request *req,
                             const struct jinn_fn *fn);

/* The last log lines of function `name` on this node (oldest first), as a
 * JSON array of {"time_ms","trace_id","level","line"}; NULL when unknown. */
json_t *jinn_wasm_runner_logs(const struct jinn_wasm_runner *r, const char *name);

/* Adds the "functions" section of /v1/status to obj. */
void jinn_wasm_runner_status(const struct jinn_wasm_runner *r, json_t *obj);

/* Shutdown: pending invocations are answered 503, sandboxes are killed;
 * cb(data) runs once all of them are reaped. jinn_wasm_runner_destroy()
 * then frees the runner. */
void jinn_wasm_runner_stop(struct jinn_wasm_runner *r, void (*cb)(void *data), void *data);

/* ---- added by J2 (jobs: invocations without an HTTP request) ----------- */

#include <stdbool.h>
#include <stddef.h>

#define JINN_WASM_STDERR_TAIL 1024 /* stderr bytes a job's outcome keeps */

/* The outcome of jinn_wasm_runner_run, valid during the callback only.
 * status is what an HTTP call would have answered: the response's status
 * when the module answered (response = its response object's JSON), else
 * the runner's error status with error set ("trap", "timeout", "exit",
 * "bad_output", "output_too_large", "crash", "busy", "unavailable",
 * "shutting_down", ...) and kind the trap's kind ("unreachable", ...). */
struct jinn_wasm_run_result {
    int status;
    const char *error;    /* NULL when the module answered */
    const char *kind;     /* "" unless a trap */
    const char *message;  /* "" when the module answered */
    const char *response; /* NUL-terminated JSON, or NULL */
    size_t response_len;
    const char *stderr_tail; /* the last stderr lines, <= JINN_WASM_STDERR_TAIL */
    size_t stderr_len;
};

typedef void (*jinn_wasm_run_cb)(void *data, const struct jinn_wasm_run_result *res);

/* Runs function name's active version on this node with request (the
 * request JSON bytes, the shape the module reads on stdin), through the
 * same pools, limits, logs and counters as an HTTP invocation. trace
 * names it in the function's log. While the active version compiles here,
 * the previous version's warm pool runs it (as an HTTP call). Returns 0 (cb runs exactly once, never
 * from inside this call) or JINN_ENOTFOUND (no ready active version here),
 * JINN_EBUSY, JINN_ETOOBIG, JINN_ENOMEM, JINN_ESHUTDOWN (cb never runs). */
int jinn_wasm_runner_run(struct jinn_wasm_runner *r, const char *name, const void *request,
                         size_t request_len, const char *trace, jinn_wasm_run_cb cb,
                         void *data);

/* Whether a job of name can run here now: its active version has a warm
 * pool on this node, or the previous version's pool still serves while the
 * active one compiles. */
bool jinn_wasm_runner_ready(struct jinn_wasm_runner *r, const char *name);

/* Whether jinn_wasm_runner_run(name) would be taken now: ready, and the
 * pool's queue and the runner's in-flight bytes have room. A job worker
 * asks before it leases a job, so local load does not burn deliveries. */
bool jinn_wasm_runner_can_take(struct jinn_wasm_runner *r, const char *name);

#endif
