/* fatal.h - the one way an apply stops the node.
 *
 * An applied command must produce the same state on every replica. When a
 * replica cannot do that - the entry is of a version or type this build
 * does not know, memory or the disk failed mid-apply, or an index of the
 * state machine is found inconsistent - carrying on would fork the state,
 * and skipping the entry would too. Instead the node stops: one clear log
 * line naming the entry and its command, then _exit(JINN_EXIT_FATAL_APPLY)
 * without writing anything more (no snapshot, no log append, no reply).
 * Nothing of the failed entry is acknowledged, so a restart replays the log
 * from the last snapshot and, once the cause is fixed (memory, disk, a
 * newer build), catches up with the others. */
#ifndef JINN_FSM_FATAL_H
#define JINN_FSM_FATAL_H

#include <stdint.h>

#include "tree.h"

#define JINN_EXIT_FATAL_APPLY 3

/* Logs "entry N (command): <message>; stopping" and exits the process. */
_Noreturn void jinn_fsm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Which entry is being applied, for jinn_fsm_fatal's message. Set by the
 * FSM around every apply (type 0: not applying). */
void jinn_fsm_fatal_context(uint64_t index, int type);

/* Tree updates inside apply: an insert that finds an equal node or a
 * remove that finds none means the index is inconsistent; stop. `what`
 * names the index in the message. */
void jinn_fsm_link(struct jinn_tree *t, struct jinn_tree_node *n, const char *what);
void jinn_fsm_unlink(struct jinn_tree *t, struct jinn_tree_node *n, const char *what);

/* Saturating cluster-time arithmetic: a huge TTL means "never", not a
 * deadline that wrapped into the past. */
static inline uint64_t jinn_fsm_deadline(uint64_t now, uint64_t delta)
{
    return delta > UINT64_MAX - now ? UINT64_MAX : now + delta;
}

#endif
