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

/* ---- failed log writes are reported before libraft sees them ------------- */

struct fake_disk {
    struct raft_io io;
    struct raft_io_append *req; /* the last append taken */
    int fail_at_once;
};

static int fake_append(struct raft_io *io, struct raft_io_append *req,
                       const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    struct fake_disk *d = (struct fake_disk *)io;
    (void)entries;
    (void)n;
    if (d->fail_at_once) {
        return RAFT_IOERR;
    }
    req->cb = cb; /* as raft_uv and the fixture keep it */
    d->req = req;
    return 0;
}

static int events; /* in order: report, then libraft's callback */
static int reported_status, reported_at;
static int raft_status, raft_at;
static struct raft_io_append *raft_req;

static void on_failed(void *data, int status, const char *errmsg)
{
    (void)data;
    (void)errmsg;
    reported_status = status;
    reported_at = ++events;
}

static void raft_written(struct raft_io_append *req, int status)
{
    raft_req = req;
    raft_status = status;
    raft_at = ++events;
}

static void disk_reset(void)
{
    events = reported_status = reported_at = raft_status = raft_at = 0;
    raft_req = NULL;
}

/* libraft 0.15's leader, told that a write failed, answers one request,
 * drops the entries from its log in memory and stays leader (node.c,
 * append_untrusted): the guard must tell the node first, whatever request
 * owns the write; success and cancellation pass untouched. */
TEST(ioguard_reports_a_failed_log_write_before_libraft)
{
    struct fake_disk d;
    struct jinn_ioguard g;
    struct raft_io_append req;
    struct raft_entry e;
    char path[] = "/tmp/jinn-unit-failonce-XXXXXX";
    int fd;

    memset(&d, 0, sizeof d);
    memset(&e, 0, sizeof e);
    d.io.version = 1;
    d.io.append = fake_append;
    jinn_ioguard_init(&g, &d.io);
    g.on_append_failed = on_failed;

    disk_reset(); /* written: passes through, nothing reported */
    CHECK_INT(g.io.append(&g.io, &req, &e, 1, raft_written), 0);
    CHECK(d.req != NULL && d.req != &req);
    d.req->cb(d.req, 0);
    CHECK(raft_req == &req);
    CHECK_INT(raft_status, 0);
    CHECK_INT(reported_at, 0);

    disk_reset(); /* the disk's write fails later: reported, then libraft told */
    CHECK_INT(g.io.append(&g.io, &req, &e, 1, raft_written), 0);
    d.req->cb(d.req, RAFT_IOERR);
    CHECK_INT(reported_status, RAFT_IOERR);
    CHECK_INT(reported_at, 1);
    CHECK(raft_req == &req);
    CHECK_INT(raft_status, RAFT_IOERR);
    CHECK_INT(raft_at, 2);

    disk_reset(); /* closing: canceled writes are not a disk failure */
    CHECK_INT(g.io.append(&g.io, &req, &e, 1, raft_written), 0);
    d.req->cb(d.req, RAFT_CANCELED);
    CHECK_INT(reported_at, 0);
    CHECK_INT(raft_status, RAFT_CANCELED);

    disk_reset(); /* failing at once: raft_apply's error, libraft undoes it */
    d.fail_at_once = 1;
    CHECK_INT(g.io.append(&g.io, &req, &e, 1, raft_written), RAFT_IOERR);
    CHECK_INT(events, 0); /* and the wrapper is freed (LeakSanitizer) */
    d.fail_at_once = 0;

    /* TEST ONLY hook: the next write is reported failed, once. */
    fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    g.append_fail_once_file = path;
    disk_reset();
    CHECK_INT(g.io.append(&g.io, &req, &e, 1, raft_written), 0);
    CHECK(access(path, F_OK) != 0); /* taken */
    d.req->cb(d.req, 0);
    CHECK_INT(reported_status, RAFT_IOERR);
    CHECK_INT(raft_status, RAFT_IOERR);
    CHECK(strstr(g.io.errmsg, "test fault") != NULL);
    disk_reset();
    CHECK_INT(g.io.append(&g.io, &req, &e, 1, raft_written), 0);
    d.req->cb(d.req, 0);
    CHECK_INT(reported_at, 0);
    CHECK_INT(raft_status, 0);
}

/* ---- failed snapshot writes: an install stops the node, a take does not -- */

struct fake_snap {
    struct raft_io io;
    struct raft_io_snapshot_put *req; /* the last put taken */
    unsigned trailing;
};

static int fake_snapshot_put(struct raft_io *io, unsigned trailing,
                             struct raft_io_snapshot_put *req,
                             const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb)
{
    struct fake_snap *d = (struct fake_snap *)io;
    (void)snapshot;
    req->cb = cb; /* as raft_uv keeps it */
    d->req = req;
    d->trailing = trailing;
    return 0;
}

static unsigned snap_trailing;
static raft_index snap_index;
static int snap_status, snap_reported_at, snap_raft_status, snap_raft_at;
static struct raft_io_snapshot_put *snap_raft_req;

static void on_snap_failed(void *data, unsigned trailing, raft_index index, int status,
                           const char *errmsg)
{
    (void)data;
    (void)errmsg;
    snap_trailing = trailing;
    snap_index = index;
    snap_status = status;
    snap_reported_at = ++events;
}

static void raft_put_done(struct raft_io_snapshot_put *req, int status)
{
    snap_raft_req = req;
    snap_raft_status = status;
    snap_raft_at = ++events;
}

static void snap_reset(void)
{
    events = snap_status = snap_reported_at = snap_raft_status = snap_raft_at = 0;
    snap_trailing = 99;
    snap_index = 0;
    snap_raft_req = NULL;
}

/* libraft 0.15 resets its log in memory to an installed snapshot before
 * writing it and, told the write failed, only rejects it (node.c,
 * snapshot_failed): the guard must tell the node first, with trailing and
 * index so it can tell an install (stop) from a snapshot it took (log);
 * success and cancellation pass untouched. */
TEST(ioguard_reports_a_failed_snapshot_write_before_libraft)
{
    struct fake_snap d;
    struct jinn_ioguard g;
    struct raft_io_snapshot_put req;
    struct raft_snapshot snap;
    char path[] = "/tmp/jinn-unit-snapfail-XXXXXX";
    int fd;

    memset(&d, 0, sizeof d);
    memset(&snap, 0, sizeof snap);
    snap.term = 2;
    snap.index = 131;
    d.io.version = 1;
    d.io.snapshot_put = fake_snapshot_put;
    jinn_ioguard_init(&g, &d.io);
    g.on_snapshot_failed = on_snap_failed;

    snap_reset(); /* an install written: passes through, nothing reported */
    CHECK_INT(g.io.snapshot_put(&g.io, 0, &req, &snap, raft_put_done), 0);
    CHECK(d.req != NULL && d.req != &req);
    CHECK_INT(d.trailing, 0);
    d.req->cb(d.req, 0);
    CHECK(snap_raft_req == &req);
    CHECK_INT(snap_raft_status, 0);
    CHECK_INT(snap_reported_at, 0);

    snap_reset(); /* an install fails later: reported, then libraft told */
    strcpy(d.io.errmsg, "an older message"); /* raft_uv leaves io->errmsg as it was */
    CHECK_INT(g.io.snapshot_put(&g.io, 0, &req, &snap, raft_put_done), 0);
    d.req->cb(d.req, RAFT_IOERR);
    CHECK(strstr(g.io.errmsg, "older") == NULL);
    CHECK(strstr(g.io.errmsg, "snapshot-2-131-") != NULL);
    CHECK_INT(snap_status, RAFT_IOERR);
    CHECK_INT(snap_trailing, 0);
    CHECK_INT(snap_index, 131);
    CHECK_INT(snap_reported_at, 1);
    CHECK(snap_raft_req == &req);
    CHECK_INT(snap_raft_status, RAFT_IOERR);
    CHECK_INT(snap_raft_at, 2);

    snap_reset(); /* a snapshot taken (trailing 8) fails: reported as such */
    CHECK_INT(g.io.snapshot_put(&g.io, 8, &req, &snap, raft_put_done), 0);
    d.req->cb(d.req, RAFT_NOSPACE);
    CHECK_INT(snap_status, RAFT_NOSPACE);
    CHECK_INT(snap_trailing, 8);
    CHECK_INT(snap_raft_status, RAFT_NOSPACE);

    snap_reset(); /* closing: a canceled install is not a disk failure */
    CHECK_INT(g.io.snapshot_put(&g.io, 0, &req, &snap, raft_put_done), 0);
    d.req->cb(d.req, RAFT_CANCELED);
    CHECK_INT(snap_reported_at, 0);
    CHECK_INT(snap_raft_status, RAFT_CANCELED);

    /* TEST ONLY hook: the next install is reported failed, once; a
     * snapshot taken meanwhile neither takes the file nor fails. */
    fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    g.snapshot_install_fail_once_file = path;
    snap_reset();
    CHECK_INT(g.io.snapshot_put(&g.io, 8, &req, &snap, raft_put_done), 0);
    d.req->cb(d.req, 0);
    CHECK(access(path, F_OK) == 0);
    CHECK_INT(snap_reported_at, 0);
    CHECK_INT(snap_raft_status, 0);
    snap_reset();
    CHECK_INT(g.io.snapshot_put(&g.io, 0, &req, &snap, raft_put_done), 0);
    CHECK(access(path, F_OK) != 0); /* taken */
    d.req->cb(d.req, 0);
    CHECK_INT(snap_status, RAFT_IOERR);
    CHECK_INT(snap_trailing, 0);
    CHECK_INT(snap_raft_status, RAFT_IOERR);
    CHECK(strstr(g.io.errmsg, "test fault") != NULL);
    snap_reset();
    CHECK_INT(g.io.snapshot_put(&g.io, 0, &req, &snap, raft_put_done), 0);
    d.req->cb(d.req, 0);
    CHECK_INT(snap_reported_at, 0);
    CHECK_INT(snap_raft_status, 0);
}

/* libraft 0.15's raft_strerror has no text past RAFT_IOERR: a follower
 * whose disk filled stopped with "unknown error (create segment ...)". */
TEST(ioguard_names_the_storage_statuses_libraft_does_not)
{
    CHECK(strcmp(jinn_raft_strerror(RAFT_NOSPACE), "no space left on device") == 0);
    CHECK(strcmp(jinn_raft_strerror(RAFT_IOERR), raft_strerror(RAFT_IOERR)) == 0);
    CHECK(strcmp(jinn_raft_strerror(RAFT_CORRUPT), raft_strerror(RAFT_CORRUPT)) == 0);
    for (int s = RAFT_NOMEM; s <= RAFT_TOOMANY; s++) {
        CHECK(strstr(jinn_raft_strerror(s), "unknown") == NULL);
    }
}
