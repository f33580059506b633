/* test_wasm_rt.c - jinn's wasm2c runtime (wasm/rt.c): the one memory
 * mapping and its limit, zeroing between instances, guest pointer checks,
 * traps and exits through jinn_rt_run, function types and tables. */
#include <string.h>

#include "wasm/rt.h"
#include "unit.h"

#define LIMIT_PAGES 64u

static void setup_once(void)
{
    static bool done;
    if (!done) {
        done = jinn_rt_setup((uint64_t)LIMIT_PAGES * JINN_RT_PAGE + 100) == 0;
        wasm_rt_init();
    }
}

static wasm_rt_memory_t mem;
static uint32_t alloc_initial, alloc_max;

static void do_alloc(void *arg)
{
    (void)arg;
    wasm_rt_allocate_memory(&mem, alloc_initial, alloc_max);
}

static void do_free(void *arg)
{
    (void)arg;
    wasm_rt_free_memory(&mem);
}

static int alloc(uint32_t initial, uint32_t max)
{
    alloc_initial = initial;
    alloc_max = max;
    return jinn_rt_run(do_alloc, NULL, 0);
}

TEST(wasm_rt_memory_limit_and_grow)
{
    setup_once();
    CHECK_INT(jinn_rt_limit_pages(), LIMIT_PAGES);
    CHECK_INT(jinn_rt_setup(JINN_RT_PAGE), -1); /* one mapping per process */
    CHECK_INT(alloc(1, 10), 0);
    CHECK(jinn_rt_memory() == &mem);
    CHECK_INT(mem.max_pages, 10);
    CHECK_INT(wasm_rt_grow_memory(&mem, 2), 1);
    CHECK_INT(wasm_rt_grow_memory(&mem, 8), UINT32_MAX); /* past the module's max */
    CHECK_INT(wasm_rt_grow_memory(&mem, 0), 3);
    CHECK_INT(mem.size, 3 * JINN_RT_PAGE);
    jinn_rt_run(do_free, NULL, 0);
    CHECK(jinn_rt_memory() == NULL);

    /* No maximum declared: the sandbox's limit is the maximum. */
    CHECK_INT(alloc(1, 65536), 0);
    CHECK_INT(mem.max_pages, LIMIT_PAGES);
    CHECK_INT(wasm_rt_grow_memory(&mem, LIMIT_PAGES), UINT32_MAX);
    CHECK_INT(wasm_rt_grow_memory(&mem, UINT32_MAX), UINT32_MAX); /* no wrap-around */
    CHECK_INT(wasm_rt_grow_memory(&mem, LIMIT_PAGES - 1), 1);
    CHECK_INT(mem.size, LIMIT_PAGES * JINN_RT_PAGE);
    /* One memory at a time. */
    {
        wasm_rt_memory_t saved = mem;
        CHECK_INT(alloc(1, 1), JINN_RT_JMP_OOM);
        mem = saved;
    }
    jinn_rt_run(do_free, NULL, 0);

    /* An initial size over the limit cannot be instantiated. */
    CHECK_INT(alloc(LIMIT_PAGES + 1, 65536), JINN_RT_JMP_OOM);
    CHECK(jinn_rt_memory() == NULL);
}

/* What an instance wrote is gone for the next one, through both zeroing
 * paths (memset for small memories, madvise for large ones). */
TEST(wasm_rt_memory_is_zeroed_between_instances)
{
    uint32_t sizes[] = {2, 48};
    setup_once();
    for (unsigned k = 0; k < 2; k++) {
        CHECK_INT(alloc(1, 65536), 0);
        CHECK_INT(wasm_rt_grow_memory(&mem, sizes[k] - 1), 1);
        memset(mem.data, 0xAB, mem.size);
        jinn_rt_run(do_free, NULL, 0);
        CHECK_INT(alloc(sizes[k], 65536), 0);
        for (uint32_t i = 0; i < mem.size; i += 4093) {
            CHECK_INT(mem.data[i], 0);
        }
        CHECK_INT(mem.data[mem.size - 1], 0);
        jinn_rt_run(do_free, NULL, 0);
    }
}

TEST(wasm_rt_guest_pointer_checks)
{
    setup_once();
    CHECK(jinn_rt_guest(0, 0) == NULL); /* no live memory */
    CHECK_INT(alloc(1, 1), 0);
    CHECK(jinn_rt_guest(0, JINN_RT_PAGE) == mem.data);
    CHECK(jinn_rt_guest(JINN_RT_PAGE - 4, 4) == mem.data + JINN_RT_PAGE - 4);
    CHECK(jinn_rt_guest(JINN_RT_PAGE, 0) != NULL); /* empty, at the very end */
    CHECK(jinn_rt_guest(JINN_RT_PAGE - 3, 4) == NULL);
    CHECK(jinn_rt_guest(JINN_RT_PAGE + 1, 0) == NULL);
    CHECK(jinn_rt_guest(UINT32_MAX, 2) == NULL);
    CHECK(jinn_rt_guest(1, UINT64_MAX) == NULL);
    CHECK(jinn_rt_guest(0, (uint64_t)JINN_RT_PAGE + 1) == NULL);
    jinn_rt_run(do_free, NULL, 0);
}

static uint32_t seen_depth;

static void do_trap(void *arg)
{
    seen_depth = wasm_rt_call_stack_depth;
    wasm_rt_trap(*(wasm_rt_trap_t *)arg);
}

static void do_exit(void *arg)
{
    (void)arg;
    jinn_rt_exit(7);
}

static void do_nothing(void *arg)
{
    (void)arg;
}

TEST(wasm_rt_traps_and_exits)
{
    wasm_rt_trap_t t = WASM_RT_TRAP_DIV_BY_ZERO;
    setup_once();
    CHECK_INT(jinn_rt_run(do_trap, &t, 400), WASM_RT_TRAP_DIV_BY_ZERO);
    CHECK_INT(seen_depth, 400);
    CHECK_INT(wasm_rt_call_stack_depth, 400); /* restored to the entry's count */
    t = WASM_RT_TRAP_EXHAUSTION;
    CHECK_INT(jinn_rt_run(do_trap, &t, 0), WASM_RT_TRAP_EXHAUSTION);
    CHECK_INT(jinn_rt_run(do_exit, NULL, 0), JINN_RT_JMP_EXIT);
    CHECK_INT(jinn_rt_exit_code(), 7);
    CHECK_INT(jinn_rt_run(do_nothing, NULL, 0), 0);
    CHECK(strcmp(wasm_rt_strerror(WASM_RT_TRAP_OOB), "invalid trap code") != 0);
}

TEST(wasm_rt_func_types)
{
    uint32_t a, b, c, d;
    setup_once();
    a = wasm_rt_register_func_type(2, 1, WASM_RT_I32, WASM_RT_F32, WASM_RT_I64);
    b = wasm_rt_register_func_type(0, 1, WASM_RT_I32);
    c = wasm_rt_register_func_type(2, 1, WASM_RT_I32, WASM_RT_F32, WASM_RT_I64);
    d = wasm_rt_register_func_type(1, 0, WASM_RT_I32); /* same types, other split */
    CHECK(a != 0 && b != 0 && d != 0);
    CHECK_INT(a, c);
    CHECK(a != b && b != d && a != d);
    wasm_rt_free(); /* frees the registry */
    CHECK(!wasm_rt_is_initialized());
    wasm_rt_init();
    CHECK_INT(wasm_rt_register_func_type(0, 1, WASM_RT_I32), 1); /* a fresh registry */
    wasm_rt_free();
    wasm_rt_init();
}

static wasm_rt_funcref_table_t table;
static uint32_t table_elems;

static void do_table(void *arg)
{
    (void)arg;
    wasm_rt_allocate_funcref_table(&table, table_elems, 5);
}

TEST(wasm_rt_tables)
{
    wasm_rt_funcref_t f = {1, NULL, NULL};
    setup_once();
    table_elems = 3;
    CHECK_INT(jinn_rt_run(do_table, NULL, 0), 0);
    CHECK_INT(table.size, 3);
    CHECK(table.data[2].func_type == 0);
    CHECK_INT(wasm_rt_grow_funcref_table(&table, 2, f), 3);
    CHECK_INT(table.data[4].func_type, 1);
    CHECK_INT(wasm_rt_grow_funcref_table(&table, 1, f), UINT32_MAX); /* past max 5 */
    CHECK_INT(wasm_rt_grow_funcref_table(&table, UINT32_MAX, f), UINT32_MAX);
    wasm_rt_free_funcref_table(&table);
    /* A table too large to allocate is the sandbox's out-of-memory. */
    table_elems = JINN_RT_TABLE_MAX + 1;
    CHECK_INT(jinn_rt_run(do_table, NULL, 0), JINN_RT_JMP_OOM);
    wasm_rt_free_funcref_table(&table);
}
