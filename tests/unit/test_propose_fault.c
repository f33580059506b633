/* test_propose_fault.c - who owns a proposal's buffers when raft_apply
 * fails (jinn_raft_apply, node.c; both propose paths go through it). On
 * libraft's fixture: an append that fails at once (a disk fault) leaves all
 * buffers with the caller (freed once, here; not freeing them leaks on every
 * disk fault), and the leader keeps working; a log append that runs out of
 * memory part way leaves the first entries in raft's log, raft's to free
 * (freeing them too, as node.c did, is a double free at raft_close). ASan
 * and LeakSanitizer (`make unit`) check both directions. */
#include <raft.h>
#include <raft/fixture.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "node.h"
#include "fsm_apply.h"
#include "unit.h"

#define FAULT_BATCH 40 /* enough entries for the log's array to grow inside one append */

static struct raft_buffer fault_buf(unsigned k)
{
    char payload[16];
    struct jinn_wbuf w;
    snprintf(payload, sizeof payload, "%u", k);
    unit_encode_publish("WORKERS_f", payload, 1000, &w);
    return (struct raft_buffer){w.data, w.data != NULL ? w.len : 0};
}

static int fault_calls;

static void fault_applied(struct raft_apply *req, int status, void *result)
{
    (void)req;
    (void)status;
    (void)result;
    fault_calls++;
}

/* One voter on the fixture, elected. */
static int fault_start(struct raft_fixture *f, struct jinn_fsm *fsm)
{
    struct raft_configuration conf;
    int rv;
    memset(f, 0, sizeof *f);
    jinn_fsm_init(fsm);
    rv = raft_fixture_initialize(f);
    if (rv == 0) {
        rv = raft_fixture_grow(f, &fsm->iface);
    }
    if (rv != 0) {
        return rv;
    }
    fsm->raft = raft_fixture_get(f, 0);
    raft_fixture_configuration(f, 1, &conf);
    raft_fixture_bootstrap(f, &conf);
    raft_fixture_start(f);
    raft_configuration_close(&conf);
    return raft_fixture_step_until_has_leader(f, 10000) ? 0 : -1;
}

static uint64_t fault_published(const struct jinn_fsm *fsm)
{
    const struct jinn_queue *q = jinn_queues_get(&fsm->queues, "WORKERS_f", 9);
    return q == NULL ? 0 : q->published;
}

TEST(propose_append_fault_frees_once_and_the_leader_goes_on)
{
    struct raft_fixture f;
    struct jinn_fsm fsm;
    struct raft_apply req1, reqn, ok;
    struct raft_buffer one, bufs[3];
    struct raft *r;
    raft_index before;
    unsigned kept;

    CHECK_INT(fault_start(&f, &fsm), 0);
    r = raft_fixture_get(&f, 0);
    fault_calls = 0;

    /* The next I/O request fails: the append inside raft_apply (disk error). */
    before = raft_last_index(r);
    one = fault_buf(0);
    CHECK(one.base != NULL);
    raft_fixture_io_fault(&f, 0, 0, 1);
    CHECK_INT(jinn_raft_apply(r, &req1, &one, 1, fault_applied, &kept), RAFT_IOERR);
    CHECK_INT(kept, 0);
    CHECK(one.base == NULL); /* freed here, and only here */
    CHECK_INT(raft_last_index(r), before);

    for (unsigned k = 0; k < 3; k++) {
        bufs[k] = fault_buf(k);
        CHECK(bufs[k].base != NULL);
    }
    raft_fixture_io_fault(&f, 0, 0, 1);
    CHECK_INT(jinn_raft_apply(r, &reqn, bufs, 3, fault_applied, &kept), RAFT_IOERR);
    CHECK_INT(kept, 0);
    for (unsigned k = 0; k < 3; k++) {
        CHECK(bufs[k].base == NULL);
    }
    CHECK_INT(raft_last_index(r), before);

    /* Faults over: still the leader, and the next proposal commits. */
    CHECK_INT(raft_state(r), RAFT_LEADER);
    one = fault_buf(7);
    CHECK(one.base != NULL);
    CHECK_INT(jinn_raft_apply(r, &ok, &one, 1, fault_applied, &kept), 0);
    CHECK_INT(kept, 1);
    CHECK(raft_fixture_step_until_applied(&f, 0, before + 1, 10000));
    CHECK_INT(fault_calls, 1); /* only the one that was taken */
    CHECK_INT(fault_published(&fsm), 1);

    raft_fixture_close(&f);
    jinn_fsm_close(&fsm);
}

/* libraft's allocations through jinn's, so that jinn_alloc_fail_after
 * reaches the log's own growth. */
static void *th_malloc(void *d, size_t n)
{
    (void)d;
    return jinn_malloc(n);
}
static void th_free(void *d, void *p)
{
    (void)d;
    jinn_free(p);
}
static void *th_calloc(void *d, size_t n, size_t size)
{
    (void)d;
    return jinn_calloc(n, size);
}
static void *th_realloc(void *d, void *p, size_t n)
{
    (void)d;
    return jinn_realloc(p, n);
}
static void *th_aligned_alloc(void *d, size_t alignment, size_t n)
{
    (void)d;
    return aligned_alloc(alignment, (n + alignment - 1) / alignment * alignment);
}
static void th_aligned_free(void *d, size_t alignment, void *p)
{
    (void)d;
    (void)alignment;
    free(p);
}

static struct raft_heap th_heap = {NULL,       th_malloc,        th_free,        th_calloc,
                                   th_realloc, th_aligned_alloc, th_aligned_free};

TEST(propose_out_of_memory_mid_append_leaves_the_first_entries_to_raft)
{
    struct raft_fixture f;
    struct jinn_fsm fsm;
    struct raft_apply req;
    struct raft_buffer bufs[FAULT_BATCH];
    struct raft *r;
    raft_index before = 0;
    unsigned kept = 0;
    int rv;

    raft_heap_set(&th_heap);
    rv = fault_start(&f, &fsm);
    CHECK_INT(rv, 0);
    r = raft_fixture_get(&f, 0);
    /* The log's entry array and its reference table grow as entries are
     * appended: let the first n allocations of raft_apply succeed, n = 0, 1,
     * ..., until one growth inside the append fails with entries before it
     * appended (what failed with nothing appended changed nothing). */
    for (long n = 0; n < 64 && kept == 0; n++) {
        for (unsigned k = 0; k < FAULT_BATCH; k++) {
            bufs[k] = fault_buf(k);
            CHECK(bufs[k].base != NULL);
        }
        before = raft_last_index(r);
        jinn_alloc_fail_after(n);
        rv = jinn_raft_apply(r, &req, bufs, FAULT_BATCH, fault_applied, &kept);
        jinn_alloc_fail_reset();
        CHECK(rv != 0); /* some growth fails before all 40 are in */
        CHECK_INT(rv, RAFT_NOMEM);
        if (kept == 0) {
            CHECK_INT(raft_last_index(r), before);
            for (unsigned k = 0; k < FAULT_BATCH; k++) {
                CHECK(bufs[k].base == NULL);
            }
        }
    }
    CHECK(kept > 0 && kept < FAULT_BATCH);
    CHECK_INT(raft_last_index(r), before + kept);
    for (unsigned k = 0; k < FAULT_BATCH; k++) {
        CHECK((bufs[k].base != NULL) == (k < kept)); /* raft's / freed here */
    }
    /* raft_close frees the kept ones: a second free would show here. */
    raft_fixture_close(&f);
    jinn_fsm_close(&fsm);
    raft_heap_set_default();
}
