/* clock.c - see clock.h. */
#include "clock.h"

uint64_t jinn_clock_stamp(struct jinn_clock *c, uint64_t term, uint64_t mono, uint64_t wall,
                          uint64_t floor, uint64_t resume, bool commit)
{
    uint64_t t, elapsed, slew, ideal;
    if (!c->set || c->term != term) {
        /* A new leadership: continue from the log, whatever our clock says. */
        t = floor > c->last ? floor : c->last;
        if (resume > t) {
            t = resume;
        }
        if (t == 0) {
            t = wall; /* a fresh cluster starts at the wall clock */
        }
        if (commit) {
            c->set = true;
            c->term = term;
            c->anchor = t;
            c->anchor_mono = mono;
            c->last = t;
        }
        return t;
    }
    elapsed = mono > c->anchor_mono ? mono - c->anchor_mono : 0;
    ideal = c->anchor + elapsed;
    slew = elapsed / (1000000u / JINN_CLOCK_SLEW_PPM);
    if (wall > ideal) {
        t = ideal + (wall - ideal < slew ? wall - ideal : slew);
    } else {
        t = ideal - (ideal - wall < slew ? ideal - wall : slew);
    }
    if (t < c->last) {
        t = c->last; /* never backwards */
    }
    if (t < floor) {
        t = floor;
    }
    if (commit) {
        c->last = t;
        if (elapsed >= JINN_CLOCK_ANCHOR_MS) {
            c->anchor = t;
            c->anchor_mono = mono;
        }
    }
    return t;
}
