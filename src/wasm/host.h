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

#endif
