/* proto.h - the wire between a node and its sandbox processes.
 *
 * A sandbox is `jinn sandbox`, spawned by the node (wasm/pool.c) with one
 * end of a socketpair as fd 3; it loads one compiled module and runs one
 * invocation at a time. Everything it says is untrusted: the node checks
 * every frame's type and length and kills a sandbox that breaks the
 * protocol.
 *
 * Frame: u32 length (little endian) of what follows, u8 type, payload.
 * length >= 1 and <= JINN_SBX_FRAME_MAX. Integers are little endian
 * (codec.h's jinn_wbuf_put_u32/u64); "bytes" is u32 length + raw bytes.
 *
 * node -> sandbox
 *   INVOKE     u64 invocation id; u32 n_args, bytes * n_args (argv, argv[0]
 *              included); u32 n_env, bytes * n_env ("K=V"); bytes stdin
 *              (the request JSON).
 *   HOSTREPLY  u32 result (the value the host function returns to the
 *              guest, e.g. 1/0 for a mutex, 0xFFFFFFFF for denied/missing);
 *              bytes data (KV_GET: the value, DB_QUERY: the JSON array; the
 *              sandbox copies it to the guest's out buffer when it fits
 *              outmax, otherwise the guest gets 0xFFFFFFFF).
 * sandbox -> node
 *   READY      (empty) the module is loaded and an instance is ready.
 *   HOSTCALL   u8 call (enum jinn_sbx_call); u32 a (LOG: level,
 *              MUTEX_LOCK: ttl seconds; else 0); u32 outmax; bytes b1 (key,
 *              message, query, function name); bytes b2 (value, payload;
 *              may be empty). The sandbox then blocks until HOSTREPLY.
 *              LOG expects no reply.
 *   STDERR     bytes: what the guest wrote to fd 2 (streamed, bounded per
 *              invocation by the sandbox; the node rate-limits logging).
 *   DONE       u8 outcome (enum jinn_sbx_outcome); u32 detail (exit code or
 *              enum jinn_sbx_trap); bytes stdout (at most JINN_SBX_STDOUT_MAX;
 *              more ends the invocation with JINN_SBX_OUTPUT_TOO_LARGE).
 *              After DONE the sandbox prepares a fresh instance, then waits
 *              for the next INVOKE (no second READY).
 * A crash, a timeout (the node sends SIGKILL) or a protocol error ends the
 * sandbox; the node spawns another. */
#ifndef JINN_WASM_PROTO_H
#define JINN_WASM_PROTO_H

#define JINN_SBX_FD 3
#define JINN_SBX_FRAME_MAX ((32u << 20) + 4096) /* a 32 MiB value plus headers */
#define JINN_SBX_STDIN_MAX (16u << 20)
#define JINN_SBX_STDOUT_MAX (16u << 20)
#define JINN_SBX_STDERR_MAX (64u << 10) /* per invocation; the rest is dropped */

enum jinn_sbx_frame {
    JINN_SBX_INVOKE = 1,
    JINN_SBX_HOSTREPLY = 2,
    JINN_SBX_READY = 10,
    JINN_SBX_HOSTCALL = 11,
    JINN_SBX_STDERR = 12,
    JINN_SBX_DONE = 13,
};

enum jinn_sbx_call {
    JINN_SBX_LOG = 1,
    JINN_SBX_KV_SET = 2,
    JINN_SBX_KV_GET = 3,
    JINN_SBX_MUTEX_LOCK = 4,
    JINN_SBX_MUTEX_UNLOCK = 5,
    JINN_SBX_DB_QUERY = 6,
    JINN_SBX_ENQUEUE = 7,
};

enum jinn_sbx_outcome {
    JINN_SBX_EXITED = 0,           /* _start returned or proc_exit: detail = code */
    JINN_SBX_TRAPPED = 1,          /* detail = enum jinn_sbx_trap */
    JINN_SBX_OUTPUT_TOO_LARGE = 2, /* stdout over JINN_SBX_STDOUT_MAX */
};

enum jinn_sbx_trap {
    JINN_TRAP_UNREACHABLE = 1,
    JINN_TRAP_OOB = 2,            /* memory or table access out of bounds */
    JINN_TRAP_INT_OVERFLOW = 3,
    JINN_TRAP_DIV_BY_ZERO = 4,
    JINN_TRAP_INVALID_CONVERSION = 5,
    JINN_TRAP_CALL_INDIRECT = 6,
    JINN_TRAP_STACK_EXHAUSTED = 7,
    JINN_TRAP_OUT_OF_MEMORY = 8,  /* memory.grow past the limit does not trap; this is
                                     the sandbox itself running out */
    JINN_TRAP_OTHER = 9,
};

#endif
