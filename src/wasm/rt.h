/* rt.h - jinn's implementation of the wasm2c runtime (wasm-rt.h, wabt 1.0.32).
 *
 * Generated code (m.c, loaded by the sandbox) calls the wasm_rt_* functions
 * declared in /usr/src/wasm2c/wasm-rt.h; rt.c defines them for the sandbox
 * process. Why not wabt's wasm-rt-impl.c: it reserves 8 GiB of address
 * space per memory and leaks it on free, and keeps trap state in globals.
 * Here the state is global too, but a sandbox runs one module and one
 * invocation at a time (one process per invocation slot), so that is safe.
 *
 * Memory: one anonymous mapping per process, sized to the sandbox's memory
 * limit, serves every instance in turn: allocate hands it out with the
 * module's initial pages, grow past the limit (or the module's maximum)
 * returns -1 (never traps), free zeroes what was used so the next instance
 * starts clean. The generated code checks every access explicitly
 * (WASM_RT_MEMCHECK_SIGNAL_HANDLER=0), so nothing relies on guard pages.
 *
 * Traps: wasm_rt_trap() longjmps to wasm_rt_jmp_buf, armed by jinn_rt_run
 * around jinn_mod_init, instantiate and _start. The
 * sandbox's own ways out of guest code (proc_exit, output too large, out of
 * memory) use the same jump with the JINN_RT_JMP_* values. */
#ifndef JINN_WASM_RT_H
#define JINN_WASM_RT_H

#define WASM_RT_MEMCHECK_SIGNAL_HANDLER 0
#define WASM_RT_USE_STACK_DEPTH_COUNT 1

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <wasm-rt.h>

#define JINN_RT_PAGE 65536u
#define JINN_RT_PAGES_MAX 65535u       /* wasm_rt_memory_t.size is a u32 */
#define JINN_RT_TABLE_MAX (1u << 20)   /* elements per table (16 MiB) */
#define JINN_RT_FUNC_TYPES_MAX 100000u /* distinct function types */

/* Values wasm_rt_jmp_buf's setjmp returns besides a wasm_rt_trap_t. */
#define JINN_RT_JMP_EXIT 0x100   /* proc_exit: jinn_rt_exit_code() */
#define JINN_RT_JMP_OUTPUT 0x101 /* stdout over its limit */
#define JINN_RT_JMP_OOM 0x102    /* the sandbox itself ran out of memory */
#define JINN_RT_JMP_PROTO 0x103  /* the node broke the protocol mid-call */

extern jmp_buf wasm_rt_jmp_buf;

/* Maps the process's one linear memory: memory_limit bytes, rounded down
 * to whole 64 KiB pages, at most JINN_RT_PAGES_MAX. Returns 0 or -1. */
int jinn_rt_setup(uint64_t memory_limit);
uint32_t jinn_rt_limit_pages(void);

/* Leave guest code now: to the armed setjmp, with a JINN_RT_JMP_* value. */
__attribute__((noreturn)) void jinn_rt_jump(int value);
__attribute__((noreturn)) void jinn_rt_exit(uint32_t code);
uint32_t jinn_rt_exit_code(void);

/* Runs fn(arg) as guest code: returns 0 when it returned, else the value
 * it left with (a wasm_rt_trap_t or JINN_RT_JMP_*). The call depth count
 * starts at depth_base (generated code traps when it passes its compiled
 * WASM_RT_MAX_CALL_STACK_DEPTH). */
int jinn_rt_run(void (*fn)(void *), void *arg, uint32_t depth_base);

/* Native stack overflow while the module's own code runs becomes a
 * stack_exhausted trap instead of a crash: a SIGSEGV handler on an
 * alternate stack checks that the faulting address lies in the main
 * thread's stack region (stack_top = an address near its top) and that the
 * faulting instruction is in the module's code [code_lo, code_hi) — never
 * in jinn's or libc's, where jumping out could leave their state half
 * updated; anything else stays a crash. Returns 0, or -1 when it cannot be
 * set up (x86-64 and arm64 only). */
int jinn_rt_guard_stack(const void *stack_top, uintptr_t code_lo, uintptr_t code_hi);

/* The linear memory of the live instance, or NULL between instances. */
wasm_rt_memory_t *jinn_rt_memory(void);

/* A pointer to guest bytes [ptr, ptr+len) when they lie inside the live
 * memory (overflow-safe; len 0 is fine anywhere up to the end), else NULL. */
uint8_t *jinn_rt_guest(uint32_t ptr, uint64_t len);

#endif
