/* test_membership.c - the libraft 0.15 behaviour jinn's safe rejoin leans
 * on, checked in libraft's deterministic fixture:
 *   - a server whose log is empty (no configuration: a node that starts
 *     without --bootstrap) never campaigns, and grants no vote even when
 *     dialled under an id the others hold as a voter (a wiped voter);
 *   - so an intact voter with one dead peer and one wiped peer never wins
 *     an election: two wiped voters of three can never elect anything.
 * (jinn also gives wiped nodes fresh ids and refuses, in peerguard, raft
 * connections to a node that is not the id the dialler expects; this test
 * checks the last line of defence underneath.) */
#include <raft.h>
#include <raft/fixture.h>
#include <stdlib.h>
#include <string.h>

#include "fsm/fsm.h"
#include "unit.h"

TEST(membership_empty_server_never_votes_or_campaigns)
{
    struct raft_fixture f;
    struct raft_configuration conf;
    struct jinn_fsm fsms[3];
    bool leader_seen = false, wiped_campaigned = false;

    memset(&f, 0, sizeof f);
    CHECK(raft_fixture_initialize(&f) == 0);
    for (unsigned i = 0; i < 3; i++) {
        jinn_fsm_init(&fsms[i]);
        CHECK(raft_fixture_grow(&f, &fsms[i].iface) == 0);
        fsms[i].raft = raft_fixture_get(&f, i);
    }
    /* Servers 1 and 2 (ids 1, 2) hold the three-voter configuration; server
     * 3 (id 3, index 2) is that voter after its data_dir was wiped. */
    raft_configuration_init(&conf);
    CHECK(raft_fixture_configuration(&f, 3, &conf) == 0);
    CHECK(raft_bootstrap(raft_fixture_get(&f, 0), &conf) == 0);
    CHECK(raft_bootstrap(raft_fixture_get(&f, 1), &conf) == 0);
    CHECK(raft_fixture_start(&f) == 0);
    raft_configuration_close(&conf);
    raft_fixture_kill(&f, 1); /* the other voter is gone for good */

    for (int step = 0; step < 300; step++) { /* 30 s: many election timeouts */
        raft_fixture_step_until_elapsed(&f, 100);
        leader_seen |= raft_fixture_leader_index(&f) != raft_fixture_n(&f);
        wiped_campaigned |= raft_state(raft_fixture_get(&f, 2)) != RAFT_FOLLOWER;
    }
    /* The intact voter did campaign (so the wiped one was asked). */
    CHECK(raft_fixture_get(&f, 0)->current_term > 1);
    CHECK(!leader_seen);
    CHECK(!wiped_campaigned);
    CHECK_INT(raft_fixture_get(&f, 2)->voted_for, 0);
    CHECK_INT(raft_last_index(raft_fixture_get(&f, 2)), 0);

    raft_fixture_close(&f);
    for (unsigned i = 0; i < 3; i++) {
        jinn_fsm_close(&fsms[i]);
    }
}
