/* host.h - the node's side of the `gojinn` host functions.
 *
 * One struct jinn_wasm_inv per invocation holds what the host functions
 * need: the function's namespace, database, permissions and the locks this
 * invocation holds (whose token fences its KV and SQL writes). Calls arrive
 * from the sandbox (wasm/pool.c) as HOSTCALL frames and are served through
 * the same request path as the HTTP API, so policies, forwarding to the
 * leader and fencing behave exactly as for any client. */
#ifndef JINN_WASM_HOST_H
#define JINN_WASM_HOST_H

#include <stddef.h>
#include <stdint.h>

struct jinn_api;
struct jinn_fn_settings;
struct jinn_wasm_host;
struct jinn_wasm_inv;

struct jinn_wasm_host *jinn_wasm_host_create(struct jinn_api *api);
/* Ends every invocation still open (their locks are released). */
void jinn_wasm_host_destroy(struct jinn_wasm_host *h);
/* Lock releases still in flight (of any host, destroyed ones too): the
 * daemon's shutdown waits for them before it stops outgoing requests. */
unsigned jinn_wasm_host_releases_open(void);

/* settings are copied. */
struct jinn_wasm_inv *jinn_wasm_inv_begin(struct jinn_wasm_host *h, const char *fn_name,
                                          const struct jinn_fn_settings *settings,
                                          uint64_t invocation_id, const char *trace_id);

/* The answer to one host call: result as in proto.h's HOSTREPLY, bytes
 * copied by the callee. */
typedef void (*jinn_wasm_reply_fn)(void *data, uint32_t result, const void *bytes,
                                   size_t len);

/* Serves one HOSTCALL (enum jinn_sbx_call, except LOG which wasm/pool.c
 * logs itself). reply runs exactly once, possibly before this returns,
 * unless jinn_wasm_inv_end() runs first. */
void jinn_wasm_inv_call(struct jinn_wasm_inv *inv, int call, uint32_t a, uint32_t outmax,
                        const void *b1, size_t n1, const void *b2, size_t n2,
                        jinn_wasm_reply_fn reply, void *data);

/* The invocation is over (done, trapped, timed out or crashed): pending
 * calls never reply; locks it still holds are released in the background.
 * inv must not be used again. */
void jinn_wasm_inv_end(struct jinn_wasm_inv *inv);

/* Additions (D2): what pool.c/runner.c and status may use. */

/* Where host.c's log lines about an invocation go besides the node's log
 * (e.g. the function's ring for `jinn fn logs`): fn_name, trace_id and a
 * one-line message (NUL-terminated, control bytes escaped). Lines are
 * rate-limited before they reach either. NULL fn: the node's log only. */
typedef void (*jinn_wasm_host_log_fn)(void *data, const char *fn_name, const char *trace_id,
                                      const char *line);
void jinn_wasm_host_set_log(struct jinn_wasm_host *h, jinn_wasm_host_log_fn fn, void *data);

/* Counters of one function's host calls on this node. */
struct jinn_wasm_host_counters {
    uint64_t calls[8];        /* by enum jinn_sbx_call (index 0 unused) */
    uint64_t failed;          /* answered 0xFFFFFFFF / an error row, denials included */
    uint64_t denied;          /* refused by kv_read / kv_write or invalid input */
    uint64_t fenced_out;      /* KV or SQL writes refused: the fencing lock was lost */
    uint64_t locks_acquired;  /* host_mutex_lock answered 1 */
    uint64_t locks_contended; /* host_mutex_lock answered 0: held by someone else */
    uint64_t locks_released_at_end; /* still held when the invocation ended */
    uint64_t lock_release_failures; /* gave up releasing (the TTL frees it) */
};

/* The counters of fn_name (zeros for a function never seen). */
void jinn_wasm_host_counters(const struct jinn_wasm_host *h, const char *fn_name,
                             struct jinn_wasm_host_counters *out);

/* Appends Prometheus series (jinn_fn_host_calls_total{function,call},
 * jinn_fn_host_denied_total, jinn_fn_host_fenced_out_total, ...) to out. */
struct jinn_wbuf;
void jinn_wasm_host_metrics(const struct jinn_wasm_host *h, struct jinn_wbuf *out);

/* For tests and the fuzzer: rewrites the body of a /v1/sql/{db}/query
 * answer ({"columns":[...],"rows":[[...]],...}) into host_db_query's array
 * of row objects, appended to out. 0; 1 when it stopped once out passed
 * limit bytes; -1 when the answer is malformed. */
int jinn_wasm_host_rows(const char *body, size_t len, size_t limit, struct jinn_wbuf *out);

#endif
