/* test_fresh.c - honest staleness bookkeeping (issue 12 item 1). */
#include "fresh.h"
#include "unit.h"

TEST(fresh_follower_is_fresh_only_when_it_applied_what_the_leader_committed)
{
    struct jinn_fresh f;
    jinn_fresh_init(&f);
    CHECK_INT(jinn_fresh_follower(&f, 0), 0); /* never heard: never fresh */
    jinn_fresh_heard_leader(&f, 1000, 10);
    jinn_fresh_heard_leader(&f, 1100, 20);
    jinn_fresh_heard_leader(&f, 1200, 20); /* heartbeat, same commit */
    /* Heartbeats keep coming but this node has applied only 5: not fresh,
     * however recent the contact (libraft's election timer would say 0). */
    CHECK_INT(jinn_fresh_follower(&f, 5), 0);
    CHECK_INT(jinn_fresh_follower(&f, 10), 1000);
    CHECK_INT(jinn_fresh_follower(&f, 19), 1000);
    CHECK_INT(jinn_fresh_follower(&f, 20), 1200);
    /* Never goes back. */
    jinn_fresh_heard_leader(&f, 1300, 30);
    CHECK_INT(jinn_fresh_follower(&f, 20), 1200);
    CHECK_INT(jinn_fresh_follower(&f, 30), 1300);
}

TEST(fresh_follower_ring_overflow_stays_conservative)
{
    struct jinn_fresh f;
    jinn_fresh_init(&f);
    for (uint64_t i = 1; i <= 3 * JINN_FRESH_RING; i++) {
        jinn_fresh_heard_leader(&f, 1000 + i, i);
    }
    CHECK(f.n <= JINN_FRESH_RING);
    /* Whatever was merged, a time is only claimed once its commit (or a
     * larger one) is applied. */
    for (uint64_t a = 0; a <= 3 * JINN_FRESH_RING; a += 7) {
        uint64_t at = jinn_fresh_follower(&f, a);
        CHECK(at == 0 || at - 1000 <= a);
    }
    CHECK_INT(jinn_fresh_follower(&f, 3 * JINN_FRESH_RING), 1000 + 3 * JINN_FRESH_RING);
}

TEST(fresh_leader_needs_a_quorum_of_answers)
{
    struct jinn_fresh f;
    uint64_t voters[] = {1, 2, 3, 4, 5};
    jinn_fresh_init(&f);
    /* Alone in a 5-voter cluster: never fresh. */
    CHECK_INT(jinn_fresh_leader(&f, 5000, 1, voters, 5), 0);
    jinn_fresh_heard_peer(&f, 2, 4000);
    CHECK_INT(jinn_fresh_leader(&f, 5000, 1, voters, 5), 0);
    jinn_fresh_heard_peer(&f, 3, 4500);
    /* self (now), 3 at 4500, 2 at 4000: the third-newest is 4000. */
    CHECK_INT(jinn_fresh_leader(&f, 5000, 1, voters, 5), 4000);
    jinn_fresh_heard_peer(&f, 5, 4800);
    CHECK_INT(jinn_fresh_leader(&f, 5000, 1, voters, 5), 4500);
    /* A single voter is its own quorum. */
    CHECK_INT(jinn_fresh_leader(&f, 5000, 1, voters, 1), 5000);
}
