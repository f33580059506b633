/* fresh.h - how stale this node's state is, measured honestly.
 *
 * Staleness is how long ago this node was known to have applied everything
 * the leader had committed:
 *
 *   - a follower records, for every AppendEntries it receives, the time of
 *     receipt and the leader's commit index carried in it; it is fresh as of
 *     the latest such receipt whose commit index it has applied. A follower
 *     that hears heartbeats but lags (catching up after a restart, a slow
 *     disk, a big snapshot) grows stale, unlike libraft's election timer,
 *     which every heartbeat resets;
 *   - a leader is fresh as of the latest moment a quorum of voters (itself
 *     included) had answered it in its term: past that it may have been
 *     deposed without knowing.
 *
 * Times are the loop's monotonic milliseconds. Pure bookkeeping, no I/O. */
#ifndef JINN_FRESH_H
#define JINN_FRESH_H

#include <stdint.h>

#define JINN_FRESH_RING 64  /* (time, leader commit) pairs kept */
#define JINN_FRESH_PEERS 64 /* voters whose last answer is tracked */

struct jinn_fresh {
    struct {
        uint64_t at;     /* loop ms of receipt */
        uint64_t commit; /* the leader's commit index then */
    } ring[JINN_FRESH_RING];
    unsigned n;
    uint64_t fresh_at; /* follower: loop ms; 0 = never */
    struct {
        uint64_t id;
        uint64_t at;
    } peers[JINN_FRESH_PEERS];
    unsigned n_peers;
};

void jinn_fresh_init(struct jinn_fresh *f);

/* A follower received an AppendEntries with leader_commit at now. */
void jinn_fresh_heard_leader(struct jinn_fresh *f, uint64_t now, uint64_t leader_commit);

/* A leader received an answer from voter id, in its term, at now. */
void jinn_fresh_heard_peer(struct jinn_fresh *f, uint64_t id, uint64_t now);

/* Follower: the loop ms as of which it is known to hold everything the
 * leader had committed, given it has applied `applied` (0: never). */
uint64_t jinn_fresh_follower(struct jinn_fresh *f, uint64_t applied);

/* Leader: the latest loop ms at which a majority of `voters` (self counts
 * as now) had answered; 0 when no majority ever has. */
uint64_t jinn_fresh_leader(const struct jinn_fresh *f, uint64_t now, uint64_t self,
                           const uint64_t *voters, unsigned n_voters);

#endif
