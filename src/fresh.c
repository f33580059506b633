/* fresh.c - see fresh.h. */
#include "fresh.h"

#include <string.h>

void jinn_fresh_init(struct jinn_fresh *f)
{
    memset(f, 0, sizeof *f);
}

void jinn_fresh_heard_leader(struct jinn_fresh *f, uint64_t now, uint64_t leader_commit)
{
    if (f->n > 0 && f->ring[f->n - 1].commit == leader_commit) {
        f->ring[f->n - 1].at = now; /* same requirement, later time */
        return;
    }
    if (f->n == JINN_FRESH_RING) {
        /* Merge the two oldest: the older time with the larger commit
         * index asks more for less, so what it vouches for stays true. */
        if (f->ring[1].commit > f->ring[0].commit) {
            f->ring[0].commit = f->ring[1].commit;
        }
        memmove(&f->ring[1], &f->ring[2], (f->n - 2) * sizeof f->ring[0]);
        f->n--;
    }
    f->ring[f->n].at = now;
    f->ring[f->n].commit = leader_commit;
    f->n++;
}

void jinn_fresh_heard_peer(struct jinn_fresh *f, uint64_t id, uint64_t now)
{
    unsigned i;
    for (i = 0; i < f->n_peers; i++) {
        if (f->peers[i].id == id) {
            f->peers[i].at = now;
            return;
        }
    }
    if (f->n_peers < JINN_FRESH_PEERS) {
        f->peers[f->n_peers].id = id;
        f->peers[f->n_peers].at = now;
        f->n_peers++;
    }
}

uint64_t jinn_fresh_follower(struct jinn_fresh *f, uint64_t applied)
{
    unsigned last = f->n;
    for (unsigned i = 0; i < f->n; i++) {
        if (f->ring[i].commit <= applied) {
            last = i;
            if (f->ring[i].at > f->fresh_at) {
                f->fresh_at = f->ring[i].at;
            }
        }
    }
    if (last != f->n) {
        /* Everything received up to `last` is now vouched for or older. */
        memmove(&f->ring[0], &f->ring[last + 1], (f->n - last - 1) * sizeof f->ring[0]);
        f->n -= last + 1;
    }
    return f->fresh_at;
}

uint64_t jinn_fresh_leader(const struct jinn_fresh *f, uint64_t now, uint64_t self,
                           const uint64_t *voters, unsigned n_voters)
{
    uint64_t times[JINN_FRESH_PEERS];
    unsigned n = 0, need = n_voters / 2 + 1;
    for (unsigned v = 0; v < n_voters && n < JINN_FRESH_PEERS; v++) {
        uint64_t at = 0;
        if (voters[v] == self) {
            at = now;
        } else {
            for (unsigned i = 0; i < f->n_peers; i++) {
                if (f->peers[i].id == voters[v]) {
                    at = f->peers[i].at;
                }
            }
        }
        /* insertion sort, newest first */
        unsigned j = n++;
        while (j > 0 && times[j - 1] < at) {
            times[j] = times[j - 1];
            j--;
        }
        times[j] = at;
    }
    return n >= need ? times[need - 1] : 0;
}
