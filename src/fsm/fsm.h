/* fsm.h - jinn's replicated state machine.
 *
 * The FSM owns all replicated state (today: cluster time and the node
 * directory; each feature adds its own section) and is driven only by
 * committed log entries, so every replica reaches the same state:
 *
 *   - no local clock: time is the leader's stamp inside each command, kept
 *     monotonic (cluster time never goes backwards across leaders);
 *   - no randomness, no iteration over unordered memory;
 *   - a command that cannot be decoded changes nothing, on every replica.
 *
 * apply() always returns 0 to raft (a non-zero return would wedge libraft's
 * apply loop); the outcome goes to the proposer through jinn_result. */
#ifndef JINN_FSM_H
#define JINN_FSM_H

#include <raft.h>
#include <stdint.h>

#include "codec.h"
#include "fsm/auth.h"
#include "fsm/fn.h"
#include "fsm/jobs.h"
#include "fsm/kv.h"
#include "fsm/lock.h"
#include "fsm/queue.h"
#include "fsm/sql.h"
#include "fsm/nodes.h"

#define JINN_SNAPSHOT_MAGIC "JINNSNAP"
#define JINN_SNAPSHOT_VERSION 3     /* written: v2 + leased_ms, signing policy, jobs, auth */
#define JINN_SNAPSHOT_VERSION_MIN 1 /* still read (no functions) */

/* What applying one command produced. Lives inside the FSM and is valid
 * only during the apply callback, which copies what it needs. */
struct jinn_result {
    int code;       /* JINN_OK or an error from error.h */
    uint64_t index; /* raft index the command was applied at */
    uint64_t value; /* command-specific (e.g. a revision) */
};

struct jinn_snap_job;

struct jinn_fsm {
    struct raft_fsm iface; /* handed to raft_init; iface.data == this */
    struct raft *raft;     /* read-only: the index being applied */
    uint64_t time_ms;      /* cluster time */
    uint64_t applied;      /* commands applied since start or restore */
    struct jinn_nodes nodes;
    struct jinn_kv kv;
    struct jinn_locks locks;
    struct jinn_queues queues;
    struct jinn_sql sql;
    struct jinn_fns fns;
    struct jinn_jobs jobs;
    struct jinn_auth auth; /* scoped tokens (fsm/auth.h) */
    struct jinn_result result;
    struct jinn_snap_job *snap; /* a snapshot being taken (fsm.c); not state */
    /* Told after every applied command (watchers wake up here). Not state. */
    void (*on_apply)(void *data, uint64_t index);
    void *on_apply_data;
    /* The stream feed (net/stream.c), through the node: each command
     * applied by raft, with its entry's bytes exactly as applied (borrowed
     * for the call), and each snapshot restored. Not state. */
    void (*on_record)(void *data, uint64_t index, const void *buf, size_t len);
    void (*on_restore)(void *data);
    void *on_record_data;
    /* Index of the last CHECK applied here, for the apply hook. Not state. */
    uint64_t check_index;
};

void jinn_fsm_init(struct jinn_fsm *fsm);
void jinn_fsm_close(struct jinn_fsm *fsm);

/* Takes snapshots in two steps, SQL images on libraft's worker thread (the
 * raft_io must have async_work: libuv's does, the test fixture's does not).
 * Without this call snapshots are taken synchronously on the loop. */
void jinn_fsm_async_snapshots(struct jinn_fsm *fsm);

/* Serialises the whole state (the snapshot format) into w. */
int jinn_fsm_encode(const struct jinn_fsm *fsm, struct jinn_wbuf *w);

/* Replaces the state with a decoded snapshot. On any error the FSM is left
 * exactly as it was. buf is borrowed. */
int jinn_fsm_decode(struct jinn_fsm *fsm, const void *buf, size_t len);

/* jinn_fsm_decode in two steps, so that a replica decodes off its loop
 * (A3 m5). prepare checks and decodes the whole snapshot into a fresh
 * state and writes its SQL images beside the live files; it reads only
 * fsm->sql's directory, so it may run on a worker thread while the loop
 * keeps serving (and nothing applies to) fsm. On error nothing changed,
 * nothing is left on disk and *out is NULL. commit (the loop, nothing
 * applied since prepare) swaps the decoded state in: struct moves, the old
 * functions cleared, the SQL images renamed over the live files (a
 * failure there stops the process, as in jinn_fsm_decode). free (any
 * thread, after commit or instead of it) frees the replaced state, or the
 * unused decoded one and its image files. */
struct jinn_fsm_restore;
int jinn_fsm_restore_prepare(const struct jinn_fsm *fsm, const void *buf, size_t len,
                             struct jinn_fsm_restore **out);
void jinn_fsm_restore_commit(struct jinn_fsm *fsm, struct jinn_fsm_restore *rs);
void jinn_fsm_restore_free(struct jinn_fsm_restore *rs);

/* Applies one encoded command outside raft (tests, tools). */
const struct jinn_result *jinn_fsm_apply_buf(struct jinn_fsm *fsm, uint64_t index,
                                             const void *buf, size_t len);

/* A snapshot in two steps, as libraft's async snapshots take them (for
 * backups): begin on the loop between two applies (in-memory sections into
 * the empty w, SQL databases and function modules pinned at this index),
 * finish on any thread (the pinned images, the module bytes and the CRC).
 * Free the SQL pin after finish (any thread); free fns_pin with
 * jinn_fns_pin_free on the loop only (its counts are the loop's). The
 * bytes equal jinn_fsm_encode's at the time of begin. On error begin holds
 * no pin. */
int jinn_fsm_encode_begin(const struct jinn_fsm *fsm, struct jinn_wbuf *w,
                          struct jinn_sql_pin **pin, struct jinn_fns_pin **fns_pin);
/* The same for an edge replica's stream: the auth section carries R in place
 * of the internal key (jinn_auth_encode_redacted); nothing else differs. */
int jinn_fsm_encode_begin_redacted(const struct jinn_fsm *fsm, struct jinn_wbuf *w,
                                   struct jinn_sql_pin **pin, struct jinn_fns_pin **fns_pin);
int jinn_fsm_encode_finish(struct jinn_sql_pin *pin, const struct jinn_fns_pin *fns_pin,
                           struct jinn_wbuf *w);

#endif
