/* clock.h - cluster time that a clock step cannot break.
 *
 * The leader stamps every command with cluster time. It advances by the
 * leader's monotonic clock from where the log left it (a new leader
 * continues from the last cluster time it applied); the wall clock only
 * steers it, by at most JINN_CLOCK_SLEW_PPM of the elapsed time (1 %), never
 * by a jump. So with clocks stepped by any amount on any node, cluster time
 * advances at most 1 % faster than real time, and no lock, lease or TTL of
 * duration d ends before d / 1.01 of real time has passed. The only jump
 * allowed is the very first stamp of a fresh cluster (cluster time 0). */
#ifndef JINN_CLOCK_H
#define JINN_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#define JINN_CLOCK_SLEW_PPM 10000u /* 1 %: how fast the wall clock may steer */
#define JINN_CLOCK_ANCHOR_MS 1000u /* a new anchor at most this often */

struct jinn_clock {
    bool set;
    uint64_t term;        /* leadership term the anchor belongs to */
    uint64_t anchor;      /* cluster ms at anchor_mono */
    uint64_t anchor_mono; /* monotonic ms */
    uint64_t last;        /* last stamp given */
};

/* The cluster time for a command proposed now: mono is the monotonic clock
 * (ms), wall the wall clock (ms), floor the applied cluster time, term the
 * leader's term. resume is where a new leadership may start: the applied
 * cluster time plus the monotonic time since this node applied it (never
 * more than the real time since the old leader stamped it). commit=false
 * only reads (nothing changes). */
uint64_t jinn_clock_stamp(struct jinn_clock *c, uint64_t term, uint64_t mono, uint64_t wall,
                          uint64_t floor, uint64_t resume, bool commit);

#endif
