/* compile.h - turning a module into native code, once per node and hash.
 *
 * wasm2c (Debian's wabt) translates the module to C, glue.c adds the
 * bridge to the sandbox's host functions, and the system C compiler builds
 * a shared object under data_dir/fn/<sha256 hex>/. All of it runs off the
 * event loop (a dedicated thread running the tools as child processes).
 * The cache survives restarts: an entry whose checksum file does not match
 * the shared object is rebuilt, never loaded. */
#ifndef JINN_WASM_COMPILE_H
#define JINN_WASM_COMPILE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* code: 0 with so_path set (the shared object to load), or an error code
 * with message set (the tool's first lines of output, for status). Both
 * strings are valid only during the call. compile_ms: 0 on a cache hit. */
typedef void (*jinn_wasm_compile_cb)(void *data, int code, const char *so_path,
                                     const char *message, uint64_t compile_ms);

/* Starts compiling module (copied) whose sha256 is sha. cb runs exactly
 * once on the loop thread, unless jinn_wasm_compile_shutdown() ran first.
 * Returns 0 or an error code (cb never runs). */
int jinn_wasm_compile(uv_loop_t *loop, const char *data_dir, const uint8_t sha[32],
                      const void *module, size_t len, jinn_wasm_compile_cb cb, void *data);

/* On the loop thread: the callbacks of every unfinished compile started
 * with this data pointer will not run (a queued one is dropped, a running
 * one finishes and fills the cache, unreported). For a caller about to free
 * what data points to. */
void jinn_wasm_compile_cancel(void *data);

/* Tests: each tool's time limit and address-space limit for the compiles
 * that start from now on (0 = the defaults: 300 s + 300 s per MiB of
 * module, 6 GiB). */
void jinn_wasm_compile_set_limits(uint64_t timeout_ms, uint64_t memory);

/* Stops the compile thread (waiting for a running tool to be killed);
 * callbacks of unfinished compiles never run. */
void jinn_wasm_compile_shutdown(void);

#endif
