/* lock.h - replicated mutexes with TTLs and fencing tokens.
 *
 * A lock is granted by one atomic command; its token is the raft index of
 * that command, so tokens only grow, per lock and across every leader and
 * restart. Expiry is decided in cluster time at the start of every applied
 * command, like KV TTLs. Release and refresh must present the current
 * token, so a holder whose lock expired can never touch its successor's.
 *
 * An acquire may wait: it then joins the lock's line (in log order) until
 * its wait ends, and the lock passes to the first in line when it is
 * released or expires, by the same command that freed it. */
#ifndef JINN_LOCK_H
#define JINN_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "fsm/cmd.h"
#include "tree.h"

#define JINN_LOCKS_MAX 1000000u

struct jinn_lock {
    struct jinn_tree_node by_name;
    struct jinn_tree_node by_expiry;
    const char *name; /* in the same allocation */
    size_t name_len;
    const char *owner;
    size_t owner_len;
    uint64_t token;      /* raft index of the grant */
    uint64_t granted_at; /* cluster ms */
    uint64_t expires_at; /* cluster ms */
    uint64_t ttl_ms;
    uint64_t request; /* raft index of the acquire this grant answers */
};

/* An acquire waiting in line. */
struct jinn_lock_waiter {
    struct jinn_tree_node in_line;  /* by (name, id): the line for each lock */
    struct jinn_tree_node by_deadline;
    const char *name; /* in the same allocation */
    size_t name_len;
    const char *owner;
    size_t owner_len;
    uint64_t id; /* raft index of the acquire */
    uint64_t ttl_ms;
    uint64_t deadline; /* cluster ms: gives up then */
};

struct jinn_locks {
    struct jinn_tree by_name;
    struct jinn_tree by_expiry;
    struct jinn_tree line;      /* waiters by (name, id) */
    struct jinn_tree line_exp;  /* waiters by deadline */
};

void jinn_locks_init(struct jinn_locks *l);
void jinn_locks_clear(struct jinn_locks *l);
/* Drops waiters whose wait ended, then expires locks (passing each to the
 * first in its line with token `index`). */
void jinn_locks_expire(struct jinn_locks *l, uint64_t index, uint64_t now);

/* JINN_OK with *token the new token; JINN_ECONFLICT (held by another, *token
 * the holder's); JINN_EQUEUED (held; the acquire waits in line);
 * JINN_EFULL; JINN_ENOMEM. */
int jinn_locks_acquire(struct jinn_locks *l, uint64_t index, uint64_t now,
                       const struct jinn_cmd *c, uint64_t *token);
/* JINN_OK, or JINN_ECONFLICT when c's token is not the current one. */
int jinn_locks_refresh(struct jinn_locks *l, uint64_t now, const struct jinn_cmd *c);
int jinn_locks_release(struct jinn_locks *l, uint64_t index, uint64_t now,
                       const struct jinn_cmd *c);

/* A waiting acquire gives up: c->lock.token is the raft index of the
 * acquire. JINN_OK with *token 0 when it was still in line (now removed);
 * JINN_OK with *token the lock's token when it had been granted and still
 * holds the lock (the grant stands); JINN_ENOTFOUND when it is neither in
 * line nor holding (its wait ended, or its grant already ended). */
int jinn_locks_withdraw(struct jinn_locks *l, const struct jinn_cmd *c, uint64_t *token);

/* LOCK_ORPHANS at index: every waiter queued before it leaves its line.
 * Waiters are parked on the leader that queued them; once leadership has
 * moved, nobody is listening for them, and granting one would make a
 * holder nobody knows about for a whole TTL. Returns how many left. */
size_t jinn_locks_drop_waiters_before(struct jinn_locks *l, uint64_t index);

/* How many acquires wait in line for name. */
size_t jinn_locks_line_length(const struct jinn_locks *l, const char *name, size_t len);

/* True while the acquire at raft index id is waiting in line for name. */
bool jinn_locks_waiting(const struct jinn_locks *l, const char *name, size_t len, uint64_t id);

/* True when lock `name` is held with exactly this token. */
bool jinn_locks_fence_ok(const struct jinn_locks *l, const uint8_t *name, size_t len,
                         uint64_t token);

const struct jinn_lock *jinn_locks_get(const struct jinn_locks *l, const char *name,
                                       size_t len);
/* The first lock in name order after `after` (NULL: the first). */
const struct jinn_lock *jinn_locks_next(const struct jinn_locks *l, const struct jinn_lock *after);
uint64_t jinn_locks_next_expiry(const struct jinn_locks *l);

void jinn_locks_encode(const struct jinn_locks *l, struct jinn_wbuf *w);
int jinn_locks_decode(struct jinn_locks *l, struct jinn_rbuf *r);

#endif
