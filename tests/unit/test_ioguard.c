/* test_ioguard.c - the raft_io shim caps only what it must. */
#include <raft.h>
#include <raft/uv.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include "fsm/fsm.h"
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

/* Debian's libraft 0.15: raft_uv_init gives io->version 1 with async_work
 * set, and raft_init refuses a version-3 (async snapshot) fsm unless
 * io->version > 1. The guard must present version 2 whenever the inner io
 * has async_work, or snapshots (SQL images, CRC) run on the event loop. */
static int fake_async_work(struct raft_io *io, struct raft_io_async_work *req,
                           raft_io_async_work_cb cb)
{
    (void)io;
    (void)req;
    (void)cb;
    return 0;
}

TEST(ioguard_offers_async_work_as_version_2)
{
    struct fake f;
    struct jinn_ioguard g;
    struct raft_io_async_work req;

    memset(&f, 0, sizeof f);
    f.io.version = 1;
    f.io.async_work = fake_async_work;
    jinn_ioguard_init(&g, &f.io);
    CHECK_INT(g.io.version, 2);
    CHECK(g.io.async_work != NULL);
    CHECK_INT(g.io.async_work(&g.io, &req, NULL), 0);

    memset(&f, 0, sizeof f); /* no async_work: stays version 1, none offered */
    f.io.version = 1;
    jinn_ioguard_init(&g, &f.io);
    CHECK_INT(g.io.version, 1);
    CHECK(g.io.async_work == NULL);
}

TEST(ioguard_lets_raft_init_take_async_snapshots_over_raft_uv)
{
    char dir[] = "/tmp/jinn-unit-ioguard-XXXXXX";
    uv_loop_t loop;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct jinn_ioguard g;
    struct jinn_fsm fsm;
    struct raft raft;

    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(raft_uv_tcp_init(&transport, &loop), 0);
    CHECK_INT(raft_uv_init(&io, &loop, dir, &transport), 0);
    jinn_ioguard_init(&g, &io);
    jinn_fsm_init(&fsm);
    CHECK(g.io.async_work != NULL); /* as node.c checks before this call */
    jinn_fsm_async_snapshots(&fsm);
    CHECK_INT(raft_init(&raft, &g.io, &fsm.iface, 1, "127.0.0.1:9"), 0);
    raft_close(&raft, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    raft_uv_close(&io);
    raft_uv_tcp_close(&transport);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
    jinn_fsm_close(&fsm);
    rmdir(dir);
}
