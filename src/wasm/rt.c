/* rt.c - see rt.h. */
#include "wasm/rt.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <ucontext.h>

#include "alloc.h"

/* Zeroing a freed memory: memset while it is small (the pages stay
 * mapped, so the next instance does not fault them in again), madvise
 * above that (the kernel hands back zero pages). */
#define ZERO_BY_MEMSET_MAX (2u << 20)

jmp_buf wasm_rt_jmp_buf;
uint32_t wasm_rt_call_stack_depth;

static uint32_t saved_call_stack_depth;
static bool initialized;
static volatile bool armed;
static volatile int jump_value;
static uint32_t exit_code;

static uint8_t *mem_base; /* the one mapping */
static size_t mem_map_len;
static uint32_t mem_limit_pages;
static wasm_rt_memory_t *mem_owner; /* the instance's memory using the mapping */

struct func_type {
    uint32_t n_params, n_results;
    wasm_rt_type_t *types; /* params, then results */
};
static struct func_type *func_types;
static uint32_t n_func_types;

#define EXCEPTION_MAX JINN_RT_PAGE
static uint32_t tag_count;
static uint32_t exception_tag, exception_size;
static uint8_t exception_data[EXCEPTION_MAX];
static WASM_RT_UNWIND_TARGET *unwind_target;

int jinn_rt_setup(uint64_t memory_limit)
{
    uint64_t pages = memory_limit / JINN_RT_PAGE;
    void *p;
    if (mem_base != NULL) {
        return -1;
    }
    if (pages > JINN_RT_PAGES_MAX) {
        pages = JINN_RT_PAGES_MAX;
    }
    mem_limit_pages = (uint32_t)pages;
    /* A module with no pages at all still gets a valid data pointer. */
    mem_map_len = pages ? (size_t)pages * JINN_RT_PAGE : JINN_RT_PAGE;
    p = mmap(NULL, mem_map_len, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        return -1;
    }
    mem_base = p;
    return 0;
}

uint32_t jinn_rt_limit_pages(void)
{
    return mem_limit_pages;
}

int jinn_rt_run(void (*fn)(void *), void *arg, uint32_t depth_base)
{
    wasm_rt_call_stack_depth = depth_base;
    saved_call_stack_depth = depth_base;
    unwind_target = &wasm_rt_jmp_buf;
    jump_value = 0;
    armed = true;
    /* setjmp's value is only compared (C11 7.13.1.1); the reason travels
     * in jump_value. */
    if (setjmp(wasm_rt_jmp_buf) == 0) {
        fn(arg);
    }
    armed = false;
    return jump_value;
}

void jinn_rt_jump(int value)
{
    if (!armed) {
        /* Guest code runs only inside jinn_rt_enter/leave; anything else
         * is a bug in the sandbox, and the node sees a crash. */
        abort();
    }
    wasm_rt_call_stack_depth = saved_call_stack_depth;
    jump_value = value;
    longjmp(wasm_rt_jmp_buf, 1);
}

void jinn_rt_exit(uint32_t code)
{
    exit_code = code;
    jinn_rt_jump(JINN_RT_JMP_EXIT);
}

uint32_t jinn_rt_exit_code(void)
{
    return exit_code;
}

static uintptr_t guard_top, guard_span, guard_code_lo, guard_code_hi;
static uint8_t guard_altstack[64 << 10];
static struct sigaction guard_previous;

static uintptr_t fault_pc(void *ctx)
{
#if defined(__x86_64__)
    return (uintptr_t)((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)((ucontext_t *)ctx)->uc_mcontext.pc;
#else
    (void)ctx;
    return 0;
#endif
}

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    uintptr_t a = (uintptr_t)si->si_addr, pc = fault_pc(ctx);
    if (armed && a < guard_top && guard_top - a <= guard_span && pc >= guard_code_lo &&
        pc < guard_code_hi) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        jinn_rt_jump(WASM_RT_TRAP_EXHAUSTION);
    }
    /* Not ours: the previous handler (the default action, or ASan's
     * report) when the instruction faults again. */
    sigaction(sig, &guard_previous, NULL);
}

int jinn_rt_guard_stack(const void *stack_top, uintptr_t code_lo, uintptr_t code_hi)
{
    struct rlimit rl;
    stack_t ss;
    struct sigaction sa;
#if !defined(__x86_64__) && !defined(__aarch64__)
    return -1;
#endif
    if (getrlimit(RLIMIT_STACK, &rl) != 0) {
        return -1;
    }
    /* The stack can reach its limit below the top, and the kernel keeps a
     * guard gap (1 MiB by default) under that. */
    guard_span =
        (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1ull << 32) ? (uintptr_t)1 << 32
                                                                    : (uintptr_t)rl.rlim_cur) +
        ((uintptr_t)4 << 20);
    guard_top = (uintptr_t)stack_top;
    guard_code_lo = code_lo;
    guard_code_hi = code_hi;
    ss.ss_sp = guard_altstack;
    ss.ss_size = sizeof guard_altstack;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) != 0) {
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSEGV, &sa, &guard_previous);
}

wasm_rt_memory_t *jinn_rt_memory(void)
{
    return mem_owner;
}

uint8_t *jinn_rt_guest(uint32_t ptr, uint64_t len)
{
    if (mem_owner == NULL || len > mem_owner->size || ptr > mem_owner->size - len) {
        return NULL;
    }
    return mem_owner->data + ptr;
}

/* ---- the wasm-rt.h API ---- */

void wasm_rt_init(void)
{
    initialized = true;
}

bool wasm_rt_is_initialized(void)
{
    return initialized;
}

void wasm_rt_free(void)
{
    for (uint32_t i = 0; i < n_func_types; i++) {
        jinn_free(func_types[i].types);
    }
    jinn_free(func_types);
    func_types = NULL;
    n_func_types = 0;
    initialized = false;
}

void wasm_rt_trap(wasm_rt_trap_t code)
{
    jinn_rt_jump(code == WASM_RT_TRAP_NONE ? (int)WASM_RT_TRAP_UNREACHABLE : (int)code);
}

const char *wasm_rt_strerror(wasm_rt_trap_t trap)
{
    switch (trap) {
    case WASM_RT_TRAP_NONE:
        return "no error";
    case WASM_RT_TRAP_OOB:
        return "out-of-bounds access in linear memory or a table";
    case WASM_RT_TRAP_INT_OVERFLOW:
        return "integer overflow on divide or truncation";
    case WASM_RT_TRAP_DIV_BY_ZERO:
        return "integer divide by zero";
    case WASM_RT_TRAP_INVALID_CONVERSION:
        return "conversion from NaN to integer";
    case WASM_RT_TRAP_UNREACHABLE:
        return "unreachable instruction executed";
    case WASM_RT_TRAP_CALL_INDIRECT:
        return "invalid call_indirect";
    case WASM_RT_TRAP_UNCAUGHT_EXCEPTION:
        return "uncaught exception";
    case WASM_RT_TRAP_EXHAUSTION:
        return "call stack exhausted";
    }
    return "invalid trap code";
}

uint32_t wasm_rt_register_func_type(uint32_t params, uint32_t results, ...)
{
    wasm_rt_type_t *types;
    struct func_type *grown;
    uint64_t n = (uint64_t)params + results;
    va_list ap;

    /* A module has at most a few thousand types; these bounds only keep
     * the arithmetic honest. Registration runs in jinn_mod_init, under
     * the sandbox's armed jump. */
    if (n > 4096 || n_func_types >= JINN_RT_FUNC_TYPES_MAX) {
        jinn_rt_jump(JINN_RT_JMP_OOM);
    }
    types = jinn_malloc(n ? (size_t)n * sizeof *types : 1);
    if (types == NULL) {
        jinn_rt_jump(JINN_RT_JMP_OOM);
    }
    va_start(ap, results);
    for (uint64_t i = 0; i < n; i++) {
        types[i] = va_arg(ap, wasm_rt_type_t);
    }
    va_end(ap);
    for (uint32_t i = 0; i < n_func_types; i++) {
        if (func_types[i].n_params == params && func_types[i].n_results == results &&
            memcmp(func_types[i].types, types, (size_t)n * sizeof *types) == 0) {
            jinn_free(types);
            return i + 1;
        }
    }
    grown = jinn_realloc(func_types, (n_func_types + 1) * sizeof *func_types);
    if (grown == NULL) {
        jinn_free(types);
        jinn_rt_jump(JINN_RT_JMP_OOM);
    }
    func_types = grown;
    func_types[n_func_types] = (struct func_type){params, results, types};
    return ++n_func_types; /* 0 stays "no type" (a null funcref's) */
}

uint32_t wasm_rt_register_tag(uint32_t size)
{
    if (size > EXCEPTION_MAX) {
        wasm_rt_trap(WASM_RT_TRAP_EXHAUSTION);
    }
    return tag_count++;
}

void wasm_rt_load_exception(uint32_t tag, uint32_t size, const void *values)
{
    if (size > EXCEPTION_MAX) {
        wasm_rt_trap(WASM_RT_TRAP_EXHAUSTION);
    }
    exception_tag = tag;
    exception_size = size;
    if (size) {
        memcpy(exception_data, values, size);
    }
}

void wasm_rt_throw(void)
{
    if (unwind_target == NULL || unwind_target == &wasm_rt_jmp_buf) {
        wasm_rt_trap(WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
    }
    longjmp(*unwind_target, WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
}

WASM_RT_UNWIND_TARGET *wasm_rt_get_unwind_target(void)
{
    return unwind_target;
}

void wasm_rt_set_unwind_target(WASM_RT_UNWIND_TARGET *target)
{
    unwind_target = target;
}

uint32_t wasm_rt_exception_tag(void)
{
    return exception_tag;
}

uint32_t wasm_rt_exception_size(void)
{
    return exception_size;
}

void *wasm_rt_exception(void)
{
    return exception_data;
}

void wasm_rt_allocate_memory(wasm_rt_memory_t *memory, uint32_t initial_pages,
                             uint32_t max_pages)
{
    memset(memory, 0, sizeof *memory);
    /* One memory per process (wasm2c 1.0.32 without multi-memory), and a
     * module whose initial size is over the limit cannot run at all. */
    if (mem_base == NULL || mem_owner != NULL || initial_pages > mem_limit_pages) {
        jinn_rt_jump(JINN_RT_JMP_OOM);
    }
    memory->data = mem_base;
    memory->pages = initial_pages;
    memory->max_pages = max_pages < mem_limit_pages ? max_pages : mem_limit_pages;
    memory->size = initial_pages * JINN_RT_PAGE;
    mem_owner = memory;
}

uint32_t wasm_rt_grow_memory(wasm_rt_memory_t *memory, uint32_t delta)
{
    uint32_t old_pages = memory->pages;
    uint64_t new_pages = (uint64_t)old_pages + delta;
    if (memory != mem_owner || new_pages > memory->max_pages) {
        return UINT32_MAX;
    }
    /* Pages past the old size are already zero (free zeroes what was
     * used, and nothing writes past size). */
    memory->pages = (uint32_t)new_pages;
    memory->size = (uint32_t)new_pages * JINN_RT_PAGE;
    return old_pages;
}

void wasm_rt_free_memory(wasm_rt_memory_t *memory)
{
    size_t used;
    if (memory != mem_owner || memory->data != mem_base) {
        return; /* never allocated (instantiate trapped first) */
    }
    used = memory->size;
    if (used <= ZERO_BY_MEMSET_MAX) {
        memset(mem_base, 0, used);
    } else if (madvise(mem_base, used, MADV_DONTNEED) != 0) {
        memset(mem_base, 0, used);
    }
    memset(memory, 0, sizeof *memory);
    mem_owner = NULL;
}

#define DEFINE_TABLE_OPS(type)                                                                 \
    void wasm_rt_allocate_##type##_table(wasm_rt_##type##_table_t *table, uint32_t elements,   \
                                         uint32_t max_elements)                                \
    {                                                                                          \
        table->size = 0;                                                                       \
        table->max_size = max_elements;                                                        \
        table->data = NULL;                                                                    \
        if (elements > JINN_RT_TABLE_MAX) {                                                    \
            jinn_rt_jump(JINN_RT_JMP_OOM);                                                     \
        }                                                                                      \
        table->data = jinn_calloc(elements ? elements : 1, sizeof(wasm_rt_##type##_t));        \
        if (table->data == NULL) {                                                             \
            jinn_rt_jump(JINN_RT_JMP_OOM);                                                     \
        }                                                                                      \
        table->size = elements;                                                                \
    }                                                                                          \
    void wasm_rt_free_##type##_table(wasm_rt_##type##_table_t *table)                          \
    {                                                                                          \
        jinn_free(table->data);                                                                \
        table->data = NULL;                                                                    \
        table->size = 0;                                                                       \
    }                                                                                          \
    uint32_t wasm_rt_grow_##type##_table(wasm_rt_##type##_table_t *table, uint32_t delta,      \
                                         wasm_rt_##type##_t init)                              \
    {                                                                                          \
        uint32_t old = table->size;                                                            \
        uint64_t want = (uint64_t)old + delta;                                                 \
        wasm_rt_##type##_t *grown;                                                             \
        if (want > table->max_size || want > JINN_RT_TABLE_MAX) {                              \
            return UINT32_MAX;                                                                 \
        }                                                                                      \
        if (delta == 0) {                                                                      \
            return old;                                                                        \
        }                                                                                      \
        grown = jinn_realloc(table->data, (size_t)want * sizeof(wasm_rt_##type##_t));          \
        if (grown == NULL) {                                                                   \
            return UINT32_MAX;                                                                 \
        }                                                                                      \
        table->data = grown;                                                                   \
        for (uint64_t i = old; i < want; i++) {                                                \
            table->data[i] = init;                                                             \
        }                                                                                      \
        table->size = (uint32_t)want;                                                          \
        return old;                                                                            \
    }

DEFINE_TABLE_OPS(funcref)
DEFINE_TABLE_OPS(externref)
