/* test_ioguard.c - the raft_io shim caps only what it must. */
#include <raft.h>

#include "ioguard.h"
#include "unit.h"

struct fake {
    struct raft_io io;
    raft_io_recv_cb recv;
    struct raft_message sent;
    int n_sent;
};

static int fake_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                      raft_io_recv_cb recv)
{
    struct fake *f = (struct fake *)io;
    (void)msecs;
    (void)tick;
    f->recv = recv;
    return 0;
}

static int fake_send(struct raft_io *io, struct raft_io_send *req,
                     const struct raft_message *m, raft_io_send_cb cb)
{
    struct fake *f = (struct fake *)io;
    (void)req;
    (void)cb;
    f->sent = *m;
    f->n_sent++;
    return 0;
}

/* Plays libraft: answers an append with its whole log length (44). */
static struct raft_message answer;
static void raft_recv(struct raft_io *io, struct raft_message *msg)
{
    struct raft_io_send req;
    (void)msg;
    io->send(io, &req, &answer, NULL);
}

static void tick(struct raft_io *io) { (void)io; }

TEST(ioguard_caps_synchronous_append_answers)
{
    struct fake f;
    struct jinn_ioguard g;
    struct raft_message ae;
    struct raft_io_send req;

    memset(&f, 0, sizeof f);
    f.io.version = 1;
    f.io.start = fake_start;
    f.io.send = fake_send;
    jinn_ioguard_init(&g, &f.io);
    CHECK_INT(g.io.start(&g.io, 100, tick, raft_recv), 0);

    memset(&ae, 0, sizeof ae);
    ae.type = RAFT_IO_APPEND_ENTRIES;
    ae.append_entries.prev_log_index = 42;
    ae.append_entries.n_entries = 0;
    memset(&answer, 0, sizeof answer);
    answer.type = RAFT_IO_APPEND_ENTRIES_RESULT;
    answer.append_entries_result.last_log_index = 44;

    f.recv(&f.io, &ae); /* heartbeat while we hold a stale tail 43..44 */
    CHECK_INT(f.n_sent, 1);
    CHECK_INT(f.sent.append_entries_result.last_log_index, 42);
    CHECK_INT(g.capped, 1);

    answer.append_entries_result.rejected = 43; /* rejections pass untouched */
    f.recv(&f.io, &ae);
    CHECK_INT(f.sent.append_entries_result.last_log_index, 44);

    answer.append_entries_result.rejected = 0;
    ae.append_entries.n_entries = 5; /* vouches for up to 47 */
    f.recv(&f.io, &ae);
    CHECK_INT(f.sent.append_entries_result.last_log_index, 44);

    /* An answer sent later (after a disk write) is not touched. */
    g.io.send(&g.io, &req, &answer, NULL);
    CHECK_INT(f.sent.append_entries_result.last_log_index, 44);
    CHECK_INT(g.capped, 1);
}
