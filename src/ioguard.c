/* ioguard.c - see ioguard.h. Every raft_io call is passed through; only
 * recv (to learn what the leader vouched for) and send (to cap the answer)
 * look at the traffic. libraft keeps its own pointer in io->data, so the
 * inner io's data points back at the guard. */
#include "ioguard.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"

static struct jinn_ioguard *guard_of(struct raft_io *io) { return io->data; }

static void copy_errmsg(struct jinn_ioguard *g, int rv)
{
    if (rv != 0) {
        memcpy(g->io.errmsg, g->inner->errmsg, sizeof g->io.errmsg);
    }
}

static int g_init(struct raft_io *io, raft_id id, const char *address)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->init(g->inner, id, address);
    copy_errmsg(g, rv);
    return rv;
}

static void g_closed(struct raft_io *inner)
{
    struct jinn_ioguard *g = guard_of(inner);
    if (g->close_cb != NULL) {
        g->close_cb(&g->io);
    }
}

static void g_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    g->close_cb = cb;
    g->inner->close(g->inner, g_closed);
}

static int g_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                  struct raft_snapshot **snapshot, raft_index *start_index,
                  struct raft_entry *entries[], size_t *n_entries)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->load(g->inner, term, voted_for, snapshot, start_index, entries, n_entries);
    copy_errmsg(g, rv);
    return rv;
}

static void g_tick(struct raft_io *inner)
{
    struct jinn_ioguard *g = guard_of(inner);
    g->tick(&g->io);
}

static void g_recv(struct raft_io *inner, struct raft_message *msg)
{
    struct jinn_ioguard *g = guard_of(inner);
    if (g->on_recv != NULL) {
        g->on_recv(g->on_recv_data, msg);
    }
    if (msg->type == RAFT_IO_APPEND_ENTRIES) {
        /* libraft answers entry-less appends synchronously, from inside this
         * call; those are the answers that need the cap. */
        g->cap = msg->append_entries.prev_log_index + msg->append_entries.n_entries;
        g->in_append = 1;
        g->recv(&g->io, msg);
        g->in_append = 0;
        return;
    }
    g->recv(&g->io, msg);
}

static int g_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                   raft_io_recv_cb recv)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv;
    g->tick = tick;
    g->recv = recv;
    rv = g->inner->start(g->inner, msecs, g_tick, g_recv);
    copy_errmsg(g, rv);
    return rv;
}

static int g_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->bootstrap(g->inner, conf);
    copy_errmsg(g, rv);
    return rv;
}

static int g_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->recover(g->inner, conf);
    copy_errmsg(g, rv);
    return rv;
}

static int g_set_term(struct raft_io *io, raft_term term)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->set_term(g->inner, term);
    copy_errmsg(g, rv);
    return rv;
}

static int g_set_vote(struct raft_io *io, raft_id server_id)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->set_vote(g->inner, server_id);
    copy_errmsg(g, rv);
    return rv;
}

static int g_send(struct raft_io *io, struct raft_io_send *req,
                  const struct raft_message *message, raft_io_send_cb cb)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv;
    if (g->in_append && message->type == RAFT_IO_APPEND_ENTRIES_RESULT &&
        message->append_entries_result.rejected == 0 &&
        message->append_entries_result.last_log_index > g->cap) {
        /* The transport encodes the message before send returns. */
        struct raft_message capped = *message;
        capped.append_entries_result.last_log_index = g->cap;
        g->capped++;
        rv = g->inner->send(g->inner, req, &capped, cb);
    } else {
        rv = g->inner->send(g->inner, req, message, cb);
    }
    copy_errmsg(g, rv);
    return rv;
}

/* ---- TEST ONLY: a slow disk ------------------------------------------------ */

struct jinn_slow_append {
    uv_timer_t timer;
    struct jinn_ioguard *g;
    struct raft_io_append *req;
    raft_io_append_cb cb;
    int status;
    struct jinn_slow_append *next;
};

/* The one guard with a slow disk in this process (req->data is libraft's,
 * so a completion finds its guard here). */
static struct jinn_ioguard *slow_owner;

static void slow_closed(uv_handle_t *h) { jinn_free(h->data); }

static void slow_fire(uv_timer_t *t)
{
    struct jinn_slow_append *s = t->data;
    s->cb(s->req, s->status);
    uv_close((uv_handle_t *)&s->timer, slow_closed);
}

static void slow_written(struct raft_io_append *req, int status)
{
    struct jinn_ioguard *g = slow_owner;
    struct jinn_slow_append **pp, *s = NULL;
    for (pp = &g->slow; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->req == req) {
            s = *pp;
            *pp = s->next;
            break;
        }
    }
    if (s == NULL) {
        return;
    }
    s->status = status;
    uv_timer_start(&s->timer, slow_fire, g->append_delay_ms, 0);
}

/* A log write as the inner io sees it: its completion passes through
 * written() first, which sees the status before libraft does. */
struct jinn_append {
    struct raft_io_append req; /* handed to the inner io */
    struct jinn_ioguard *g;
    struct raft_io_append *outer; /* libraft's */
    raft_io_append_cb cb;         /* libraft's */
    int fail;                     /* TEST ONLY: report RAFT_IOERR */
};

static void written(struct raft_io_append *req, int status)
{
    struct jinn_append *a = (struct jinn_append *)req; /* req is the first member */
    struct jinn_ioguard *g = a->g;
    struct raft_io_append *outer = a->outer;
    raft_io_append_cb cb = a->cb;
    if (a->fail && status == 0) {
        snprintf(g->io.errmsg, sizeof g->io.errmsg, "test fault: %s existed",
                 g->append_fail_once_file);
        status = RAFT_IOERR;
    } else if (status != 0) {
        memcpy(g->io.errmsg, g->inner->errmsg, sizeof g->io.errmsg);
    }
    jinn_free(a);
    if (status != 0 && status != RAFT_CANCELED && g->on_append_failed != NULL) {
        g->on_append_failed(g->on_append_failed_data, status, g->io.errmsg);
    }
    cb(outer, status);
}

static int g_append(struct raft_io *io, struct raft_io_append *req,
                    const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    struct jinn_slow_append *s = NULL;
    struct jinn_append *a;
    int rv;
    if (g->append_fault_file != NULL && access(g->append_fault_file, F_OK) == 0) {
        snprintf(g->io.errmsg, sizeof g->io.errmsg, "test fault: %s exists",
                 g->append_fault_file);
        return RAFT_IOERR;
    }
    a = jinn_calloc(1, sizeof *a);
    if (a == NULL) {
        snprintf(g->io.errmsg, sizeof g->io.errmsg, "out of memory for a log write");
        return RAFT_NOMEM;
    }
    a->g = g;
    a->outer = req;
    a->cb = cb;
    if (g->append_fail_once_file != NULL && unlink(g->append_fail_once_file) == 0) {
        a->fail = 1;
    }
    req = &a->req;
    cb = written;
    if (g->append_delay_ms > 0 && g->loop != NULL) {
        s = jinn_calloc(1, sizeof *s);
    }
    if (s != NULL) {
        s->g = g;
        s->req = req;
        s->cb = cb;
        uv_timer_init(g->loop, &s->timer);
        s->timer.data = s;
        s->next = g->slow;
        g->slow = s;
        slow_owner = g;
        rv = g->inner->append(g->inner, req, entries, n, slow_written);
        if (rv != 0) {
            g->slow = s->next;
            uv_close((uv_handle_t *)&s->timer, slow_closed);
        }
    } else {
        rv = g->inner->append(g->inner, req, entries, n, cb);
    }
    if (rv == 0) {
        g->appends++;
        g->entries_appended += n;
    } else {
        /* Failed at once: libraft's raft_apply fails and libraft frees
         * its own request (appendLeader) or drops the entries (follower).
         * raft_uv 0.15's UvAppend keeps no reference when it fails before
         * queuing (allocation, encoding, a closing io); it can also fail
         * after queuing the request (uvAppendMaybeStart cannot start
         * preparing a segment), and such a write may still complete and
         * call back later: libraft's own request is freed on that path as
         * well, so that callback would find freed memory in libraft
         * whatever the guard keeps. Not seen in practice; docs/operations.md
         * ("Full and failing disks") says what is and is not promised. */
        jinn_free(a);
    }
    copy_errmsg(g, rv);
    return rv;
}

static int g_truncate(struct raft_io *io, raft_index index)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->truncate(g->inner, index);
    copy_errmsg(g, rv);
    return rv;
}

/* A snapshot write as the inner io sees it: its completion passes through
 * put_done() first, which sees the status before libraft does. */
struct jinn_put {
    struct raft_io_snapshot_put req; /* handed to the inner io */
    struct jinn_ioguard *g;
    struct raft_io_snapshot_put *outer; /* libraft's */
    raft_io_snapshot_put_cb cb;         /* libraft's */
    unsigned trailing;                  /* 0: installed from the leader */
    raft_term term;
    raft_index index;
    int fail; /* TEST ONLY: report RAFT_IOERR */
};

static void put_done(struct raft_io_snapshot_put *req, int status)
{
    struct jinn_put *p = (struct jinn_put *)req; /* req is the first member */
    struct jinn_ioguard *g = p->g;
    struct raft_io_snapshot_put *outer = p->outer;
    raft_io_snapshot_put_cb cb = p->cb;
    unsigned trailing = p->trailing;
    raft_index index = p->index;
    if (p->fail && status == 0) {
        snprintf(g->io.errmsg, sizeof g->io.errmsg, "test fault: %s existed",
                 g->snapshot_install_fail_once_file);
        status = RAFT_IOERR;
    } else if (status != 0) {
        /* raft_uv 0.15 keeps a failed snapshot write's detail in its own
         * request (uvSnapshotPut's errmsg) and never copies it to
         * io->errmsg, which may hold an older, unrelated message. */
        snprintf(g->io.errmsg, sizeof g->io.errmsg,
                 "writing snapshot-%llu-%llu-* in data_dir failed; raft_uv gives no detail",
                 (unsigned long long)p->term, (unsigned long long)p->index);
    }
    jinn_free(p);
    if (status != 0 && status != RAFT_CANCELED && g->on_snapshot_failed != NULL) {
        g->on_snapshot_failed(g->on_snapshot_failed_data, trailing, index, status,
                              g->io.errmsg);
    }
    cb(outer, status);
}

static int g_snapshot_put(struct raft_io *io, unsigned trailing,
                          struct raft_io_snapshot_put *req, const struct raft_snapshot *snapshot,
                          raft_io_snapshot_put_cb cb)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    struct jinn_put *p = jinn_calloc(1, sizeof *p);
    int rv;
    if (p == NULL) {
        snprintf(g->io.errmsg, sizeof g->io.errmsg, "out of memory for a snapshot write");
        return RAFT_NOMEM;
    }
    p->g = g;
    p->outer = req;
    p->cb = cb;
    p->trailing = trailing;
    p->term = snapshot->term;
    p->index = snapshot->index;
    if (trailing == 0 && g->snapshot_install_fail_once_file != NULL &&
        unlink(g->snapshot_install_fail_once_file) == 0) {
        p->fail = 1;
    }
    rv = g->inner->snapshot_put(g->inner, trailing, &p->req, snapshot, put_done);
    if (rv != 0) {
        /* raft_uv 0.15's UvSnapshotPut only fails before it queues the
         * request (allocation, encoding, a barrier it could not take): no
         * callback will come. */
        jinn_free(p);
    }
    copy_errmsg(g, rv);
    return rv;
}

static int g_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                          raft_io_snapshot_get_cb cb)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->snapshot_get(g->inner, req, cb);
    copy_errmsg(g, rv);
    return rv;
}

static raft_time g_time(struct raft_io *io)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    return g->inner->time(g->inner);
}

static int g_random(struct raft_io *io, int min, int max)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    return g->inner->random(g->inner, min, max);
}

static int g_async_work(struct raft_io *io, struct raft_io_async_work *req,
                        raft_io_async_work_cb cb)
{
    struct jinn_ioguard *g = (struct jinn_ioguard *)io;
    int rv = g->inner->async_work(g->inner, req, cb);
    copy_errmsg(g, rv);
    return rv;
}

const char *jinn_raft_strerror(int status)
{
    switch (status) {
    case RAFT_NOTFOUND:
        return "not found";
    case RAFT_INVALID:
        return "invalid argument";
    case RAFT_UNAUTHORIZED:
        return "permission denied";
    case RAFT_NOSPACE:
        return "no space left on device";
    case RAFT_TOOMANY:
        return "a system or raft limit was hit";
    default:
        return raft_strerror(status);
    }
}

void jinn_ioguard_init(struct jinn_ioguard *g, struct raft_io *inner)
{
    memset(g, 0, sizeof *g);
    g->inner = inner;
    inner->data = g;
    g->io.version = inner->version;
    g->io.impl = inner->impl;
    g->io.init = g_init;
    g->io.close = g_close;
    g->io.load = g_load;
    g->io.start = g_start;
    g->io.bootstrap = g_bootstrap;
    g->io.recover = g_recover;
    g->io.set_term = g_set_term;
    g->io.set_vote = g_set_vote;
    g->io.send = g_send;
    g->io.append = g_append;
    g->io.truncate = g_truncate;
    g->io.snapshot_put = g_snapshot_put;
    g->io.snapshot_get = g_snapshot_get;
    g->io.time = g_time;
    g->io.random = g_random;
    /* Debian's libraft 0.15 raft_uv_init sets async_work (uv_queue_work on
     * libuv's pool) but leaves io->version at 1, and raft_init refuses a
     * version-3 fsm unless io->version > 1. async_work is the only field
     * version 2 adds, so the guard, which has it whenever the inner io
     * does, says version 2. Gating on the inner version turned async
     * snapshots off: every snapshot, SQL images and CRC included, ran on
     * the loop (650 ms for 140k queued messages and 150 MB of KV). */
    g->io.async_work = inner->async_work ? g_async_work : NULL;
    if (g->io.async_work != NULL && g->io.version < 2) {
        g->io.version = 2;
    }
}
