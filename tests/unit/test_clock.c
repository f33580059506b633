/* test_clock.c - cluster time a clock step cannot break (issue 12 item 2). */
#include "clock.h"
#include "unit.h"

TEST(clock_a_forward_step_is_slewed_not_jumped)
{
    struct jinn_clock c = {0};
    uint64_t t0 = jinn_clock_stamp(&c, 1, 0, 1000000, 1000000, 0, true);
    CHECK_INT(t0, 1000000);
    /* The wall clock jumps one hour ahead; 10 s of real time pass. */
    uint64_t t = jinn_clock_stamp(&c, 1, 10000, 1000000 + 3600000 + 10000, 0, 0, true);
    CHECK(t >= t0 + 10000 && t <= t0 + 10000 + 100); /* at most 1 % more */
    /* A backward step: time still advances, at least 99 % of real time. */
    uint64_t u = jinn_clock_stamp(&c, 1, 20000, 0, 0, 0, true);
    CHECK(u >= t + 9900 && u <= t + 10000);
}

TEST(clock_a_new_leader_continues_from_the_log_not_its_clock)
{
    struct jinn_clock c = {0};
    /* Its wall clock is an hour ahead; the log says 5000. */
    uint64_t t = jinn_clock_stamp(&c, 7, 123, 5000 + 3600000, 5000, 0, true);
    CHECK_INT(t, 5000);
    /* resume (applied time + local time since) is taken when larger. */
    struct jinn_clock d = {0};
    CHECK_INT(jinn_clock_stamp(&d, 7, 123, 0, 5000, 5400, true), 5400);
    /* Never backwards, even when the floor is lower. */
    CHECK(jinn_clock_stamp(&d, 8, 124, 0, 10, 0, true) >= 5400);
    /* A fresh cluster (time 0) starts at the wall clock. */
    struct jinn_clock e = {0};
    CHECK_INT(jinn_clock_stamp(&e, 1, 0, 777, 0, 0, true), 777);
    /* Reading does not change anything. */
    uint64_t a = jinn_clock_stamp(&e, 1, 500, 777, 0, 0, false);
    CHECK_INT(a, jinn_clock_stamp(&e, 1, 500, 777, 0, 0, false));
    CHECK_INT(e.last, 777);
}
