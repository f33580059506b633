/* ioguard.h - a raft_io shim that closes a replication hole in libraft 0.15.
 *
 * libraft 0.15 answers an AppendEntries that brings no new entries (a
 * heartbeat, or a resend of entries it already has) with its whole log
 * length as last_log_index. When the follower still holds an uncommitted
 * tail from an older term beyond the leader's prev_log_index, the leader
 * takes that length as its match index and may count the follower towards a
 * quorum for entries it does not have: an acknowledged write can then be
 * lost, and the follower never repairs its log (seen in tests/unit/test_fsm.c
 * under libraft's fixture). The guard sits between libraft and its real I/O
 * and caps such an answer at prev_log_index + n_entries, the most the leader
 * has vouched for. It does not otherwise touch the protocol. */
#ifndef JINN_IOGUARD_H
#define JINN_IOGUARD_H

#include <raft.h>
#include <uv.h>

struct jinn_ioguard {
    struct raft_io io;     /* hand this to raft_init */
    struct raft_io *inner; /* the real I/O (raft_uv or the test fixture's) */
    raft_io_tick_cb tick;
    raft_io_recv_cb recv;
    raft_io_close_cb close_cb;
    raft_index cap; /* while a received AppendEntries is being handled */
    int in_append;
    unsigned long long capped; /* answers corrected, for metrics and tests */
    unsigned long long appends, entries_appended; /* disk writes, entries they carried */
    /* Told about every received message before libraft sees it (freshness). */
    void (*on_recv)(void *data, const struct raft_message *msg);
    void *on_recv_data;
    /* TEST ONLY (JINN_TEST_APPEND_DELAY_MS): completions of log writes are
     * reported this much later, as a slow disk would. 0 = off. */
    uv_loop_t *loop;
    unsigned append_delay_ms;
    struct jinn_slow_append *slow; /* completions waiting to be reported */
    /* TEST ONLY (JINN_TEST_APPEND_FAULT_FILE): while this file exists, log
     * writes fail at once with RAFT_IOERR, as a failing disk's can. NULL =
     * off. */
    const char *append_fault_file;
    /* Told about every log write that completes with an error (not
     * RAFT_CANCELED), before libraft is: libraft 0.15's leader then drops
     * the entries from its log in memory and stays leader (appendLeaderCb),
     * so the owner must not let it go on. */
    void (*on_append_failed)(void *data, int status, const char *errmsg);
    void *on_append_failed_data;
    /* TEST ONLY (JINN_TEST_APPEND_FAIL_ONCE_FILE): when this file exists,
     * the next log write goes to disk as usual but its completion reports
     * RAFT_IOERR (as a failed fsync does), and the file is removed. NULL =
     * off. */
    const char *append_fail_once_file;
    /* Told about every snapshot write (snapshot_put) that completes with
     * an error (not RAFT_CANCELED), before libraft is. trailing == 0 is a
     * snapshot installed from the leader: libraft 0.15
     * (replicationInstallSnapshot) has already reset its log in memory to
     * the snapshot, and on a failure only rejects it, so its log in memory
     * no longer matches its disk. trailing > 0 is a snapshot this node
     * took: libraft drops it and its log is untouched. */
    void (*on_snapshot_failed)(void *data, unsigned trailing, raft_index index, int status,
                               const char *errmsg);
    void *on_snapshot_failed_data;
    /* TEST ONLY (JINN_TEST_SNAPSHOT_INSTALL_FAIL_ONCE_FILE): when this file
     * exists, the next installed snapshot (trailing == 0) is written as
     * usual but its completion reports RAFT_IOERR, and the file is
     * removed. NULL = off. */
    const char *snapshot_install_fail_once_file;
};

/* Wraps inner. inner must stay alive as long as the guard. */
void jinn_ioguard_init(struct jinn_ioguard *g, struct raft_io *inner);

/* raft_strerror for a status of raft's storage. libraft 0.15's table stops
 * at RAFT_IOERR: RAFT_NOTFOUND .. RAFT_TOOMANY read "unknown error", NOSPACE
 * among them (a follower whose disk fills past its reserve). */
const char *jinn_raft_strerror(int status);

#endif
