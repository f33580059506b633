/* sandbox.h - `jinn sandbox`: the process that runs one compiled module.
 *
 * Spawned by the node (wasm/pool.c) as `jinn sandbox SO_PATH MEMORY_LIMIT
 * STACK_DEPTH`, with the protocol socket (proto.h) as fd 3. It loads the
 * shared object, locks itself down (rlimits, no new privileges, dies with
 * its parent), keeps one instance ready and runs `_start` once per INVOKE.
 * A trap ends the invocation, not the process; a crash ends the process. */
#ifndef JINN_WASM_SANDBOX_H
#define JINN_WASM_SANDBOX_H

int jinn_sandbox_main(int argc, char **argv);

#endif
