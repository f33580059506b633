/* test_membership_fault.c - a membership change whose log append fails
 * (jinn_raft_change_check, node.c), on libraft's fixture. libraft 0.15
 * refuses some changes before it touches anything (not the leader, a
 * change pending, unknown id, duplicate id, a role the server has): jinn
 * answers those and goes on. When the append of the change's entry fails
 * at once (a disk fault), libraft takes the entry out of its log but keeps
 * the new configuration in memory (raft_add, raft_remove: one whose server
 * array it has freed) or a pending change (raft_assign): the node must
 * stop, exit code 3, with a line that says why. Each fault case runs in a
 * child process, as a node would. */
#include <raft.h>
#include <raft/fixture.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fsm/fatal.h"
#include "fsm/fsm.h"
#include "log.h"
#include "node.h"
#include "unit.h"

#define MF_SERVERS 2

/* Server 0 a voter and the leader, server 1 (id 2) a standby. */
static int mf_start(struct raft_fixture *f, struct jinn_fsm fsms[MF_SERVERS])
{
    struct raft_configuration conf;
    int rv;
    memset(f, 0, sizeof *f);
    rv = raft_fixture_initialize(f);
    for (unsigned i = 0; i < MF_SERVERS && rv == 0; i++) {
        jinn_fsm_init(&fsms[i]);
        rv = raft_fixture_grow(f, &fsms[i].iface);
        fsms[i].raft = raft_fixture_get(f, i);
    }
    if (rv != 0) {
        return rv;
    }
    raft_configuration_init(&conf);
    rv = raft_fixture_configuration(f, 1, &conf);
    if (rv == 0) {
        rv = raft_fixture_bootstrap(f, &conf);
    }
    if (rv == 0) {
        rv = raft_fixture_start(f);
    }
    raft_configuration_close(&conf);
    if (rv != 0) {
        return rv;
    }
    return raft_fixture_step_until_has_leader(f, 10000) && raft_fixture_leader_index(f) == 0
               ? 0
               : -1;
}

static void mf_close(struct raft_fixture *f, struct jinn_fsm fsms[MF_SERVERS])
{
    raft_fixture_close(f);
    for (unsigned i = 0; i < MF_SERVERS; i++) {
        jinn_fsm_close(&fsms[i]);
    }
}

static bool mf_settled(struct raft_fixture *f, void *arg)
{
    (void)arg;
    return raft_fixture_get(f, 0)->configuration_uncommitted_index == 0;
}

static int mf_changed;
static void mf_change_cb(struct raft_change *req, int status)
{
    (void)req;
    mf_changed = status == 0 ? 1 : -1;
}

TEST(membership_refusals_leave_raft_as_it_was)
{
    struct raft_fixture f;
    struct jinn_fsm fsms[MF_SERVERS];
    struct raft_change req;
    struct raft *r;
    raft_index last;

    CHECK_INT(mf_start(&f, fsms), 0);
    r = raft_fixture_get(&f, 0);
    last = raft_last_index(r);
    /* Each refused before libraft touched anything: returned, the node goes on. */
    CHECK_INT(jinn_raft_change_check(r, raft_add(r, &req, 1, "9", mf_change_cb), "t"),
              RAFT_DUPLICATEID);
    CHECK_INT(jinn_raft_change_check(r, raft_add(r, &req, 3, "2", mf_change_cb), "t"),
              RAFT_DUPLICATEADDRESS);
    CHECK_INT(jinn_raft_change_check(r, raft_remove(r, &req, 99, mf_change_cb), "t"),
              RAFT_BADID);
    CHECK_INT(
        jinn_raft_change_check(r, raft_assign(r, &req, 99, RAFT_SPARE, mf_change_cb), "t"),
        RAFT_NOTFOUND);
    CHECK_INT(
        jinn_raft_change_check(r, raft_assign(r, &req, 2, RAFT_STANDBY, mf_change_cb), "t"),
        RAFT_BADROLE);
    CHECK_INT(jinn_raft_change_check(r, raft_assign(r, &req, 2, 42, mf_change_cb), "t"),
              RAFT_BADROLE);
    CHECK_INT(jinn_raft_change_check(
                  raft_fixture_get(&f, 1),
                  raft_add(raft_fixture_get(&f, 1), &req, 3, "3", mf_change_cb), "t"),
              RAFT_NOTLEADER);
    CHECK_INT(raft_last_index(r), last);
    CHECK_INT(r->configuration.n, 2);
    CHECK(r->leader_state.change == NULL);

    /* A change goes through; a second one while it is pending is refused. */
    mf_changed = 0;
    CHECK_INT(jinn_raft_change_check(r, raft_add(r, &req, 3, "3", mf_change_cb), "t"), 0);
    CHECK_INT(jinn_raft_change_check(r, raft_remove(r, &req, 2, mf_change_cb), "t"),
              RAFT_CANTCHANGE);
    CHECK(raft_fixture_step_until(&f, mf_settled, NULL, 10000));
    CHECK_INT(mf_changed, 1);
    CHECK_INT(r->configuration.n, 3);
    CHECK_INT(raft_last_index(r), last + 1);
    mf_close(&f, fsms);
}

enum mf_op { MF_ADD, MF_REMOVE, MF_ASSIGN };

/* In the child: the change's append fails at once. Exit codes other than
 * JINN_EXIT_FATAL_APPLY: 10 setup failed, 11 libraft 0.15's state after the
 * failure is not what node.c's comment says, 0 jinn went on. */
static void mf_fault_child(enum mf_op op)
{
    struct raft_fixture f;
    struct jinn_fsm fsms[MF_SERVERS];
    struct raft_change req;
    struct raft *r;
    raft_index last;
    int rv = 0;
    bool diverged = false;

    if (mf_start(&f, fsms) != 0) {
        _exit(10);
    }
    r = raft_fixture_get(&f, 0);
    last = raft_last_index(r);
    raft_fixture_io_fault(&f, 0, 0, 1); /* the next I/O request: the entry's append */
    switch (op) {
    case MF_ADD:
        rv = raft_add(r, &req, 3, "3", mf_change_cb);
        /* The entry is gone, the 3-server configuration stays (its server
         * array freed: only n is read here). */
        diverged = rv == RAFT_IOERR && r->configuration.n == 3;
        break;
    case MF_REMOVE:
        rv = raft_remove(r, &req, 2, mf_change_cb);
        diverged = rv == RAFT_IOERR && r->configuration.n == 1;
        break;
    case MF_ASSIGN:
        rv = raft_assign(r, &req, 2, RAFT_SPARE, mf_change_cb);
        /* The role is restored, but the change stays pending for libraft. */
        diverged = rv == RAFT_IOERR && r->leader_state.change == &req;
        break;
    }
    if (!diverged || raft_last_index(r) != last) {
        _exit(11);
    }
    (void)jinn_raft_change_check(r, rv, "test change");
    _exit(0); /* returned: the node would have gone on */
}

static void mf_child(void *arg)
{
    mf_fault_child(*(enum mf_op *)arg);
}

TEST(membership_append_fault_stops_the_node)
{
    static const enum mf_op ops[] = {MF_ADD, MF_REMOVE, MF_ASSIGN};
    char out[4096];
    for (unsigned i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        enum mf_op op = ops[i];
        int status = unit_run_child(mf_child, &op, out, sizeof out);
        CHECK(WIFEXITED(status));
        CHECK_INT(WEXITSTATUS(status), JINN_EXIT_FATAL_APPLY);
        CHECK(strstr(out, "raft could not log a membership change (test change)") != NULL);
        CHECK(strstr(out, "no longer matches its log; stopping this node") != NULL);
    }
}
