/* sandbox.h - `jinn sandbox`: the process that runs one compiled module.
 *
 * Spawned by the node (wasm/pool.c) as `jinn sandbox SO_PATH MEMORY_LIMIT
 * STACK_DEPTH`, with the protocol socket (proto.h) as fd 3. It loads the
 * shared object, locks itself down (rlimits, no new privileges, dies with
 * its parent), keeps one instance ready and runs `_start` once per INVOKE.
 * A trap ends the invocation, not the process; a crash ends the process. */
#ifndef JINN_WASM_SANDBOX_H
#define JINN_WASM_SANDBOX_H

#include <stdint.h>

/* argv: SO_PATH MEMORY_LIMIT (bytes; rounded down to 64 KiB pages, at most
 * 65535 of them) STACK_DEPTH (wasm call depth; 0 or more than the module
 * was compiled for = its compiled WASM_RT_MAX_CALL_STACK_DEPTH). Returns the
 * process's exit status: 0 at EOF on fd 3, else nonzero. */
int jinn_sandbox_main(int argc, char **argv);

/* The `gojinn` host symbols (abi.h), called by the glue. Each sends a
 * HOSTCALL frame and (but host_log) waits for HOSTREPLY. A pointer/length
 * outside the guest's memory, or arguments over the frame limit, answer
 * 0xFFFFFFFF without a call (and say why on the guest's log). */
void jinn_host_log(void *ctx, uint32_t level, uint32_t ptr, uint32_t len);
uint32_t jinn_host_kv_set(void *ctx, uint32_t kptr, uint32_t klen, uint32_t vptr,
                          uint32_t vlen);
uint32_t jinn_host_kv_get(void *ctx, uint32_t kptr, uint32_t klen, uint32_t outptr,
                          uint32_t outmax);
uint32_t jinn_host_mutex_lock(void *ctx, uint32_t kptr, uint32_t klen, uint32_t ttl_s);
uint32_t jinn_host_mutex_unlock(void *ctx, uint32_t kptr, uint32_t klen);
uint32_t jinn_host_db_query(void *ctx, uint32_t qptr, uint32_t qlen, uint32_t outptr,
                            uint32_t outmax);
uint32_t jinn_host_enqueue(void *ctx, uint32_t fptr, uint32_t flen, uint32_t pptr,
                           uint32_t plen);

#endif
