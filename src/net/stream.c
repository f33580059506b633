/* stream.c - see stream.h.
 *
 * The ring: records arrive from the node's hook (inside libraft's apply
 * loop) and are appended to the open batch, an 'E' frame being built; it is
 * sealed at the end of the loop turn (a uv_check handle; at most every
 * stream_coalesce while records flow, see check_cb) or once it passes
 * JINN_STREAM_BATCH_MAX, and becomes one refcounted message in the ring,
 * numbered by a sequence number. The ring keeps at most
 * stream_buffer_bytes of sealed batches (the oldest go first, the newest
 * always stays).
 *
 * A replica is a position (what it will have once everything queued to it
 * arrived) and the sequence number of the next batch to queue. Batches are
 * queued (by reference) only while the WebSocket endpoint holds less than
 * PUMP_WATERMARK, and the endpoint hands bytes to the HTTP connection only
 * while that holds less than CONN_WATERMARK, so a replica that does not
 * read costs the node its ring (shared) plus under 2 MiB; when the ring
 * bytes it has not been sent pass stream_max_lag_bytes it is cut off.
 *
 * Nothing here runs a snapshot or writes to a socket inside the apply
 * loop: the hooks only append to the open batch or reset the ring, and the
 * check handle does the rest after the loop turn's callbacks. */
#include "net/stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/auth.h"
#include "fsm/fsm.h"
#include "log.h"

#define PUMP_WATERMARK (1u << 20)   /* endpoint bytes below which batches are queued */
#define CONN_WATERMARK (256u << 10) /* transport bytes below which the endpoint flushes */
#define CLIENT_MESSAGE_MAX 4096     /* replicas send control frames only */
/* A replica's connection is not read while its output (wslay's own queue,
 * pongs, plus the transport's) is at least READ_PAUSE: what a client can
 * make the node answer is bounded by what the node reads. One read (a
 * buffer) of tiny pings can still queue more pongs than a replica ever
 * needs: past CONTROL_MAX of them it is cut off. */
#define READ_PAUSE CONN_WATERMARK
#define CONTROL_MAX (64u << 10)
/* A heartbeat means "as of now": it is queued only while less than this
 * waits ahead of it (the endpoint's, the transport's and the kernel's
 * unsent bytes), else it is skipped and one goes as soon as the backlog
 * drains (R3 M1). */
#define HB_AHEAD_MAX (64u << 10)
/* The cached snapshot is dropped once no replica waits for one and none
 * was served one for this long (it is a full copy of the state). */
#define SNAP_KEEP_MS 5000
/* Each snapshot is a full copy of the state, held until every replica it
 * was queued to has been sent all of it. A client can make the node encode
 * a new one (a `from` this node cannot stream from, newer than the cached
 * snapshot) and then read slowly or not at all: so at most this many
 * snapshots other than the cached one may be on their way out; a replica
 * that needs a newer one waits (heartbeats go on) until one is sent or its
 * replica gone (A5 C1: 14 such clients held 14 copies of a 200 MB state). */
#define SNAPSHOTS_IN_FLIGHT 2
/* A replica kept waiting for a slot that long (in heartbeats; clients that
 * read slowly enough to escape the "not reading" cut can hold both for
 * hours, R8) is closed 1008 and goes to its next listed node. */
#define SNAP_SLOT_WAIT_HEARTBEATS 150
/* Encoding a snapshot's in-memory sections holds the loop (jinn_fsm_encode_
 * begin; 100-250 ms for 300 MB): the next one waits SNAP_LOOP_SHARE times
 * as long, so snapshots take at most about a tenth of the loop whoever
 * asks for them. */
#define SNAP_LOOP_SHARE 9
#define E_HEAD 5                    /* 'E', u32 count */
#define R_HEAD 20                   /* u64 index, u64 prev, u32 len */
#define S_HEAD 9                    /* 'S', u64 index */

struct rec {
    uint64_t index, prev;
    uint64_t prev_time; /* the FSM's time_ms at prev (what a replica at prev has) */
    size_t off; /* of its header in the frame */
};

struct batch {
    struct jinn_ws_buf *frame;
    struct rec *recs;
    uint32_t n;
    uint64_t sealed_ms;
    uint64_t end_total; /* frame bytes sealed up to and including this batch */
    uint64_t bytes;     /* what it costs the ring */
};

enum rstate { R_SNAPSHOT, R_STREAMING, R_WAITING, R_CLOSING };

struct replica {
    struct replica *prev, *next;
    struct jinn_stream *s;
    struct jinn_http_conn *conn;
    struct jinn_ws *ws;
    enum rstate state;
    char name[JINN_STREAM_NAME_MAX + 1];
    char addr[16];
    uint64_t want;       /* the position it asked for (a snapshot must not be older) */
    uint64_t pos;        /* once everything queued arrived */
    uint64_t next_seq;   /* R_STREAMING: the next batch to queue */
    uint64_t snap_end;   /* the snapshot is out once sent bytes reach this */
    struct jinn_ws_buf *snap_buf; /* that snapshot (a reference) until it is out */
    uint64_t slot_wait_ms;        /* R_SNAPSHOT, kept waiting for a slot since (0: not) */
    uint64_t hb_end;     /* a heartbeat is queued until sent bytes reach this */
    bool hb_due;         /* one was skipped behind a backlog: send once drained */
    bool in_feed;        /* inside jinn_ws_feed: the endpoint cannot flush yet */
    bool paused;         /* its connection is not read (READ_PAUSE) */
    bool pinged;         /* it sent pings since its transport last drained */
    uint64_t pings_seen;
    uint64_t drained_ms; /* the transport last took bytes (a write completed) */
    uint64_t waiting_ms; /* R_WAITING since (loop ms) */
    bool has_at;         /* the request named its cluster time at its position */
    uint64_t at;
};

struct snap_job {
    uv_work_t work;
    struct jinn_stream *s; /* NULL once the feed stopped */
    struct jinn_wbuf w;
    struct jinn_sql_pin *pin;
    struct jinn_fns_pin *fns_pin;
    uint64_t index;
    uint64_t next_seq;
    uint64_t epoch;
    int code;
};

struct jinn_stream {
    uv_loop_t *loop;
    struct jinn_node *node;
    const struct jinn_config *cfg;
    uv_timer_t timer;
    uv_check_t check;
    uv_timer_t feed_timer; /* a feed held back by stream_coalesce */
    uint64_t last_feed_ms;
    int open_handles;
    bool stopping;
    struct replica *replicas;
    unsigned n_replicas;
    /* sealed batches [head_seq, tail_seq), at ring[seq % ring_cap] */
    struct batch **ring;
    uint64_t ring_cap;
    uint64_t head_seq, tail_seq;
    uint64_t ring_bytes;
    uint64_t sealed_total;
    /* the open batch */
    struct jinn_wbuf open;
    struct rec *open_recs;
    uint32_t open_n, open_cap;
    uint64_t open_ms;
    size_t open_hint; /* bytes of the last sealed batch: the next one's first reservation */
    uint64_t position; /* the last record's index (or a restored snapshot's) */
    uint64_t pos_time; /* the FSM's time_ms right after position was applied */
    uint64_t epoch;    /* restores seen */
    struct snap_job *job;
    bool want_snapshot;
    /* The last snapshot, reused for replicas asking while the records
     * after it are still in the ring: however many join, one encoding. */
    struct jinn_ws_buf *snap_frame;
    uint64_t snap_index, snap_next_seq, snap_epoch;
    uint64_t snap_used_ms;
    uint64_t snap_next_ms; /* no new encoding before this (loop ms; SNAP_LOOP_SHARE) */
    /* No replica for idle_ms: the ring is emptied and records are not
     * kept (a replica joining then gets a snapshot). */
    bool idle;
    uint64_t last_replica_ms;
    uint64_t bytes_sent_gone; /* by replicas that left */
    uint64_t cut_off;
    uint64_t snapshots;
};

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* ---- the ring --------------------------------------------------------------- */

static struct batch *ring_at(const struct jinn_stream *s, uint64_t seq)
{
    return s->ring[seq % s->ring_cap];
}

static void batch_free(struct batch *b)
{
    jinn_ws_buf_unref(b->frame);
    jinn_free(b->recs);
    jinn_free(b);
}

static void open_reset(struct jinn_stream *s)
{
    jinn_wbuf_free(&s->open);
    jinn_free(s->open_recs);
    s->open_recs = NULL;
    s->open_n = s->open_cap = 0;
}

static void ring_drop_head(struct jinn_stream *s)
{
    struct batch *b = ring_at(s, s->head_seq);
    s->ring[s->head_seq % s->ring_cap] = NULL;
    s->ring_bytes -= b->bytes;
    s->head_seq++;
    batch_free(b);
}

static bool ring_push(struct jinn_stream *s, struct batch *b)
{
    if (s->tail_seq - s->head_seq == s->ring_cap) {
        uint64_t cap = s->ring_cap ? s->ring_cap * 2 : 64;
        struct batch **r = jinn_calloc((size_t)cap, sizeof *r);
        if (r == NULL) {
            return false;
        }
        for (uint64_t q = s->head_seq; q < s->tail_seq; q++) {
            r[q % cap] = s->ring[q % s->ring_cap];
        }
        jinn_free(s->ring);
        s->ring = r;
        s->ring_cap = cap;
    }
    s->ring[s->tail_seq % s->ring_cap] = b;
    s->tail_seq++;
    s->ring_bytes += b->bytes;
    while (s->ring_bytes > s->cfg->stream_buffer_bytes && s->tail_seq - s->head_seq > 1) {
        ring_drop_head(s);
    }
    return true;
}

static void request_snapshot(struct replica *r);
static void kick(struct jinn_stream *s);

/* Forgets every record (a restore, or out of memory): replicas streaming
 * from the old chain get a snapshot. */
static void ring_reset(struct jinn_stream *s)
{
    s->epoch++; /* a chain break: the cached snapshot and a job under way are stale */
    while (s->head_seq < s->tail_seq) {
        ring_drop_head(s);
    }
    open_reset(s);
    for (struct replica *r = s->replicas; r != NULL; r = r->next) {
        if (r->state == R_STREAMING && r->pos != s->position) {
            r->want = r->pos;
            request_snapshot(r);
        } else if (r->state == R_STREAMING) {
            r->next_seq = s->tail_seq;
        }
    }
}

/* The open batch becomes a sealed one. */
static void seal(struct jinn_stream *s)
{
    struct batch *b;
    if (s->open_n == 0) {
        return;
    }
    b = jinn_calloc(1, sizeof *b);
    if (b == NULL) {
        goto nomem;
    }
    jinn_wbuf_patch_u32(&s->open, 1, s->open_n);
    b->n = s->open_n;
    b->recs = s->open_recs;
    s->open_recs = NULL;
    if (s->open.cap > s->open.len + s->open.len / 8) {
        /* the ring counts what it holds: no growth slack kept */
        uint8_t *fit = jinn_realloc(s->open.data, s->open.len);
        if (fit != NULL) {
            s->open.data = fit;
            s->open.cap = s->open.len;
        }
    }
    b->bytes = s->open.cap + (uint64_t)s->open_cap * sizeof *b->recs + sizeof *b + 64;
    s->open_hint = s->open.len < JINN_STREAM_BATCH_MAX ? s->open.len : JINN_STREAM_BATCH_MAX;
    b->frame = jinn_ws_buf_adopt(s->open.data, s->open.len);
    jinn_wbuf_init(&s->open);
    s->open_n = s->open_cap = 0;
    if (b->frame == NULL) {
        jinn_free(b->recs);
        jinn_free(b);
        goto nomem;
    }
    b->sealed_ms = uv_now(s->loop);
    s->sealed_total += b->frame->len;
    b->end_total = s->sealed_total;
    if (!ring_push(s, b)) {
        batch_free(b);
        goto nomem;
    }
    return;
nomem:
    jinn_warn("stream: out of memory keeping records; replicas get a snapshot");
    ring_reset(s);
}

static void on_record(void *data, uint64_t index, uint64_t prev, const void *buf, size_t len)
{
    struct jinn_stream *s = data;
    size_t key_off;
    uint64_t prev_time = s->pos_time;
    s->position = index;
    s->pos_time = jinn_node_fsm(s->node)->time_ms; /* the hook runs after the apply */
    if (s->idle) {
        return; /* no replica to keep records for */
    }
    if (len > UINT32_MAX - R_HEAD) {
        jinn_warn("stream: entry %" PRIu64 " too large to stream; replicas get a snapshot",
                  index);
        ring_reset(s);
        kick(s);
        return;
    }
    if (s->open_n == s->open_cap) {
        uint32_t cap = s->open_cap ? s->open_cap * 2 : 64;
        struct rec *r = jinn_realloc(s->open_recs, cap * sizeof *r);
        if (r == NULL) {
            goto nomem;
        }
        s->open_recs = r;
        s->open_cap = cap;
    }
    if (s->open_n == 0) {
        /* batches come at a steady size under load: one allocation, not a
         * doubling series of reallocs per batch */
        (void)jinn_wbuf_reserve(&s->open, s->open_hint + E_HEAD + R_HEAD + len);
        jinn_wbuf_put_u8(&s->open, 'E');
        jinn_wbuf_put_u32(&s->open, 0); /* the count, patched when sealed */
        s->open_ms = uv_now(s->loop);
    }
    s->open_recs[s->open_n].index = index;
    s->open_recs[s->open_n].prev = prev;
    s->open_recs[s->open_n].prev_time = prev_time;
    s->open_recs[s->open_n].off = s->open.len;
    jinn_wbuf_put_u64(&s->open, index);
    jinn_wbuf_put_u64(&s->open, prev);
    jinn_wbuf_put_u32(&s->open, (uint32_t)len);
    jinn_wbuf_put_raw(&s->open, buf, len);
    if (s->open.failed) {
        goto nomem;
    }
    if (jinn_auth_entry_key_offset(buf, len, &key_off) &&
        jinn_auth_replica_key(s->open.data + s->open.len - len + key_off,
                              s->open.data + s->open.len - len + key_off) != 0) {
        /* never the key itself: the replicas start again from a snapshot */
        memset(s->open.data + s->open.len - len + key_off, 0, JINN_AUTH_KEY_LEN);
        jinn_error("stream: cannot redact entry %" PRIu64 "; replicas get a snapshot", index);
        ring_reset(s);
        kick(s);
        return;
    }
    s->open_n++;
    if (s->open.len >= JINN_STREAM_BATCH_MAX) {
        seal(s);
    }
    kick(s);
    return;
nomem:
    jinn_warn("stream: out of memory at record %" PRIu64 "; replicas get a snapshot", index);
    ring_reset(s);
    kick(s);
}

static void on_restore(void *data, uint64_t index)
{
    struct jinn_stream *s = data;
    s->position = index;
    s->pos_time = jinn_node_fsm(s->node)->time_ms; /* nothing applied since the restore */
    s->epoch++;
    ring_reset(s);
    kick(s);
}

/* ---- replicas ------------------------------------------------------------------ */

static uint64_t replica_sent(const struct replica *r)
{
    return jinn_ws_sent_bytes(r->ws);
}

static void flush(struct replica *r)
{
    if (jinn_http_conn_queued(r->conn) < CONN_WATERMARK) {
        jinn_ws_flush(r->ws);
    }
}

/* Ends the connection after what is queued (the close frame included);
 * the connection's close callback frees the replica. */
static void replica_end(struct replica *r)
{
    if (r->state == R_CLOSING) {
        return;
    }
    r->state = R_CLOSING;
    if (!r->in_feed) { /* else conn_read does it once the endpoint can flush */
        jinn_ws_flush(r->ws);
        jinn_http_conn_close(r->conn);
    }
}

static void cut_off(struct replica *r, int code, const char *why)
{
    if (r->state == R_CLOSING) {
        return;
    }
    if (code == JINN_WS_CLOSE_POLICY) {
        r->s->cut_off++;
        jinn_warn("stream: replica %s (%s) cut off at %" PRIu64 ": %s", r->name, r->addr,
                  r->pos, why);
    }
    jinn_ws_abort(r->ws, code, why);
    replica_end(r);
}

static void request_snapshot(struct replica *r)
{
    r->state = R_SNAPSHOT;
    r->slot_wait_ms = 0;
    r->s->want_snapshot = true;
    kick(r->s);
}

/* Sends what batch b holds after the replica's position. false when the
 * chain does not continue from it (then it gets a snapshot). */
static bool send_batch(struct replica *r, const struct batch *b)
{
    uint32_t k = 0, lo, hi;
    int rc;
    if (b->recs[b->n - 1].index <= r->pos) {
        return true; /* had it all */
    }
    lo = 0;
    hi = b->n - 1;
    while (lo < hi) { /* the first record past the position */
        uint32_t mid = lo + (hi - lo) / 2;
        if (b->recs[mid].index > r->pos) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    k = lo;
    if (b->recs[k].prev != r->pos) {
        return false;
    }
    if (k == 0) {
        rc = jinn_ws_send(r->ws, true, b->frame);
    } else {
        /* resuming inside a batch: this replica's own tail of it */
        size_t off = b->recs[k].off, n = b->frame->len - off;
        struct jinn_ws_buf *part = jinn_ws_buf_new(E_HEAD + n);
        if (part == NULL) {
            cut_off(r, JINN_WS_CLOSE_INTERNAL, "out of memory");
            return true;
        }
        part->data[0] = 'E';
        put_u32le(part->data + 1, b->n - k);
        memcpy(part->data + E_HEAD, b->frame->data + off, n);
        rc = jinn_ws_send(r->ws, true, part);
        jinn_ws_buf_unref(part);
    }
    if (rc != 0) {
        cut_off(r, JINN_WS_CLOSE_INTERNAL, "cannot queue");
        return true;
    }
    r->pos = b->recs[b->n - 1].index;
    return true;
}

static void pump(struct replica *r)
{
    struct jinn_stream *s = r->s;
    while (r->state == R_STREAMING && jinn_ws_queued_bytes(r->ws) < PUMP_WATERMARK &&
           r->next_seq < s->tail_seq) {
        if (r->next_seq < s->head_seq) {
            cut_off(r, JINN_WS_CLOSE_POLICY, "too slow");
            return;
        }
        if (!send_batch(r, ring_at(s, r->next_seq))) {
            r->want = r->pos; /* never older than what it has */
            request_snapshot(r);
            break;
        }
        r->next_seq++;
    }
    if (r->state != R_CLOSING) {
        flush(r);
    }
}

/* Bytes the replica has not been sent, a snapshot in flight not counted. */
static uint64_t lag_bytes(const struct replica *r)
{
    const struct jinn_stream *s = r->s;
    uint64_t lag = jinn_ws_queued_bytes(r->ws) + jinn_ws_control_bytes(r->ws) +
                   jinn_http_conn_queued(r->conn);
    uint64_t sent = replica_sent(r);
    uint64_t snap_left = r->snap_end > sent ? r->snap_end - sent : 0;
    lag = lag > snap_left ? lag - snap_left : 0;
    if (r->state == R_STREAMING && r->next_seq < s->tail_seq && r->next_seq >= s->head_seq) {
        const struct batch *b = ring_at(s, r->next_seq);
        lag += s->sealed_total - (b->end_total - b->frame->len);
    }
    return lag;
}

/* Whether a replica's cluster time at its position (the request's `at`)
 * is the one this node's chain has there: the same index on another chain
 * (the cluster wiped and bootstrapped again: same id, new records) almost
 * never has the same time. No `at` (an older replica): index only. */
static bool same_time(const struct replica *r, uint64_t t)
{
    return !r->has_at || r->at == t;
}

/* Starts r at x if the first of recs[0..n) past x follows x on the same
 * chain (its prev is x, at the replica's time); the records come from
 * batch seq. False: x is not on this stretch of the chain. */
static bool start_at(struct replica *r, const struct rec *recs, uint32_t n, uint64_t x,
                     uint64_t seq)
{
    for (uint32_t k = 0; k < n; k++) {
        if (recs[k].index > x) {
            if (recs[k].prev != x || !same_time(r, recs[k].prev_time)) {
                return false;
            }
            r->pos = x;
            r->next_seq = seq;
            r->state = R_STREAMING;
            return true;
        }
    }
    return false;
}

/* Where a replica at position x starts: streaming from the ring, waiting
 * for the record after x, or a snapshot. */
static void place(struct replica *r, uint64_t x)
{
    struct jinn_stream *s = r->s;
    r->want = x;
    if (x == 0) {
        request_snapshot(r);
        return;
    }
    if (x == s->position && !same_time(r, s->pos_time)) {
        request_snapshot(r); /* at x == position: the snapshot is at x or later */
        return;
    }
    if (x == s->position) {
        r->pos = x;
        r->next_seq = s->tail_seq; /* the open batch's records are skipped */
        r->state = R_STREAMING;
        return;
    }
    if (x > s->position) {
        r->want = x;
        r->state = R_WAITING; /* heartbeats only, until the node gets there */
        r->waiting_ms = uv_now(s->loop);
        return;
    }
    /* x < position: the batch holding the first record past x */
    if (s->head_seq < s->tail_seq && ring_at(s, s->head_seq)->recs[0].prev <= x) {
        uint64_t lo = s->head_seq, hi = s->tail_seq;
        while (lo < hi) {
            uint64_t mid = lo + (hi - lo) / 2;
            const struct batch *b = ring_at(s, mid);
            if (b->recs[b->n - 1].index > x) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if (lo < s->tail_seq) {
            const struct batch *b = ring_at(s, lo);
            if (start_at(r, b->recs, b->n, x, lo)) {
                return;
            }
        } else if (s->open_n > 0) {
            /* past every sealed batch: in the open one */
            if (start_at(r, s->open_recs, s->open_n, x, s->tail_seq)) {
                return;
            }
        }
    } else if (s->head_seq == s->tail_seq && s->open_n > 0 && s->open_recs[0].prev <= x) {
        if (start_at(r, s->open_recs, s->open_n, x, s->tail_seq)) {
            return;
        }
    }
    request_snapshot(r); /* older than the ring, or not on this node's chain */
}

/* ---- snapshots ------------------------------------------------------------------- */

static void job_free(struct snap_job *job)
{
    jinn_sql_pin_free(job->pin);
    jinn_fns_pin_free(job->fns_pin); /* on the loop: its counts are the loop's */
    jinn_wbuf_free(&job->w);
    jinn_free(job);
}

static void maybe_free(struct jinn_stream *s);

/* On the thread pool: touches only the job. */
static void job_run(uv_work_t *work)
{
    struct snap_job *job = work->data;
    job->code = jinn_fsm_encode_finish(job->pin, job->fns_pin, &job->w);
    jinn_sql_pin_free(job->pin);
    job->pin = NULL;
    if (job->code == 0) {
        /* The 'S' head goes in front here, off the loop, so that the frame
         * adopts this buffer (no copy of the state on the loop). */
        uint8_t head[S_HEAD];
        size_t n = job->w.len;
        head[0] = 'S';
        put_u64le(head + 1, job->index);
        jinn_wbuf_put_raw(&job->w, head, S_HEAD);
        if (job->w.failed) {
            job->code = JINN_ENOMEM;
            return;
        }
        memmove(job->w.data + S_HEAD, job->w.data, n);
        memcpy(job->w.data, head, S_HEAD);
        if (job->w.cap > job->w.len + job->w.len / 8) {
            uint8_t *fit = jinn_realloc(job->w.data, job->w.len); /* kept: no slack */
            if (fit != NULL) {
                job->w.data = fit;
                job->w.cap = job->w.len;
            }
        }
    }
}

static void start_job(struct jinn_stream *s);

/* Whether the cached snapshot can still start a replica: taken on this
 * chain, and the records after it still in the ring. */
static bool snap_usable(struct jinn_stream *s)
{
    if (s->snap_frame != NULL &&
        (s->snap_epoch != s->epoch || s->snap_next_seq < s->head_seq)) {
        jinn_ws_buf_unref(s->snap_frame);
        s->snap_frame = NULL;
    }
    return s->snap_frame != NULL;
}

/* Drops the replica's reference to its snapshot once all of it was sent. */
static void snap_release(struct replica *r)
{
    if (r->snap_buf != NULL && replica_sent(r) >= r->snap_end) {
        jinn_ws_buf_unref(r->snap_buf);
        r->snap_buf = NULL;
        if (r->s->want_snapshot) {
            kick(r->s); /* one may have waited for this (SNAPSHOTS_IN_FLIGHT) */
        }
    }
}

/* Snapshots other than the cached one still on their way to a replica
 * (each counted once however many replicas it goes to). */
static unsigned snaps_in_flight(struct jinn_stream *s)
{
    unsigned n = 0;
    for (struct replica *r = s->replicas; r != NULL; r = r->next) {
        bool seen = false;
        snap_release(r);
        if (r->snap_buf == NULL || r->snap_buf == s->snap_frame) {
            continue;
        }
        for (struct replica *q = s->replicas; q != r && !seen; q = q->next) {
            seen = q->snap_buf == r->snap_buf;
        }
        n += !seen;
    }
    return n;
}

/* The snapshot slots are taken: replicas waiting for one past
 * SNAP_SLOT_WAIT_HEARTBEATS try another node. */
static void slot_wait(struct jinn_stream *s)
{
    uint64_t now = uv_now(s->loop);
    uint64_t limit = SNAP_SLOT_WAIT_HEARTBEATS * (uint64_t)s->cfg->stream_heartbeat_ms;
    for (struct replica *r = s->replicas, *next; r != NULL; r = next) {
        next = r->next;
        if (r->state != R_SNAPSHOT) {
            continue;
        }
        if (r->slot_wait_ms == 0) {
            r->slot_wait_ms = now;
        } else if (now - r->slot_wait_ms > limit) {
            cut_off(r, JINN_WS_CLOSE_POLICY, "no snapshot slot: others are downloading");
        }
    }
}

/* Queues the cached snapshot to every replica waiting for one. */
static void deliver_snapshot(struct jinn_stream *s)
{
    for (struct replica *r = s->replicas, *next; r != NULL; r = next) {
        next = r->next;
        if (r->state != R_SNAPSHOT) {
            continue;
        }
        if (r->want > s->snap_index) {
            /* older than what it has: replicas never go back */
            s->want_snapshot = true;
            continue;
        }
        if (jinn_ws_send(r->ws, true, s->snap_frame) != 0) {
            cut_off(r, JINN_WS_CLOSE_INTERNAL, "cannot queue");
            continue;
        }
        r->snap_end = replica_sent(r) + jinn_ws_queued_bytes(r->ws);
        jinn_ws_buf_unref(r->snap_buf);
        jinn_ws_buf_ref(s->snap_frame);
        r->snap_buf = s->snap_frame;
        s->snap_used_ms = uv_now(s->loop);
        r->pos = s->snap_index;
        r->next_seq = s->snap_next_seq;
        r->state = R_STREAMING;
        pump(r);
    }
}

static void job_done(uv_work_t *work, int status)
{
    struct snap_job *job = work->data;
    struct jinn_stream *s = job->s;
    struct jinn_ws_buf *frame = NULL;

    if (s == NULL) {
        job_free(job);
        return;
    }
    s->job = NULL;
    if (s->stopping) {
        job_free(job);
        maybe_free(s);
        return;
    }
    if (status != 0 || job->code != 0) {
        jinn_error("stream: snapshot encoding failed: %s",
                   jinn_error_message(job->code ? job->code : JINN_EINTERNAL));
    } else if (job->epoch == s->epoch && job->next_seq >= s->head_seq) {
        frame = jinn_ws_buf_adopt(job->w.data, job->w.len); /* 'S', index, snapshot */
        jinn_wbuf_init(&job->w);
    }
    s->snapshots++;
    if (status != 0 || job->code != 0) {
        for (struct replica *r = s->replicas, *next; r != NULL; r = next) {
            next = r->next;
            if (r->state == R_SNAPSHOT) {
                cut_off(r, JINN_WS_CLOSE_INTERNAL, "snapshot failed");
            }
        }
    } else if (frame != NULL) {
        jinn_ws_buf_unref(s->snap_frame);
        s->snap_frame = frame;
        s->snap_index = job->index;
        s->snap_next_seq = job->next_seq;
        s->snap_epoch = job->epoch;
        s->snap_used_ms = uv_now(s->loop);
        deliver_snapshot(s);
    } else {
        s->want_snapshot = true; /* stale (a restore, or the ring moved on): again */
    }
    job_free(job);
    if (s->want_snapshot) {
        kick(s);
    }
}

static void start_job(struct jinn_stream *s)
{
    struct snap_job *job;
    uint64_t t0;
    int rv;
    s->want_snapshot = false;
    for (struct replica *r = s->replicas; r != NULL; r = r->next) {
        r->slot_wait_ms = 0; /* waiting for this encoding, not for a slot */
    }
    job = jinn_calloc(1, sizeof *job);
    if (job == NULL) {
        rv = JINN_ENOMEM;
        goto fail;
    }
    jinn_wbuf_init(&job->w);
    (void)jinn_node_stream_position(s->node); /* a pending restore resolved first */
    seal(s);
    job->s = s;
    job->index = s->position;
    job->next_seq = s->tail_seq;
    job->epoch = s->epoch;
    job->work.data = job;
    /* Replicas never get the internal key (fsm/auth.h: R in its place). */
    t0 = uv_hrtime();
    rv = jinn_fsm_encode_begin_redacted(jinn_node_fsm(s->node), &job->w, &job->pin,
                                        &job->fns_pin);
    uv_update_time(s->loop); /* the gate counts from the encoding's end */
    s->snap_next_ms = uv_now(s->loop) + (uv_hrtime() - t0) / 1000000 * SNAP_LOOP_SHARE;
    if (rv == 0 && uv_queue_work(s->loop, &job->work, job_run, job_done) != 0) {
        rv = JINN_EINTERNAL;
    }
    if (rv != 0) {
        job_free(job);
        goto fail;
    }
    s->job = job;
    return;
fail:
    jinn_error("stream: cannot take a snapshot: %s", jinn_error_message(rv));
    for (struct replica *r = s->replicas; r != NULL; r = r->next) {
        if (r->state == R_SNAPSHOT) {
            cut_off(r, JINN_WS_CLOSE_INTERNAL, "snapshot failed");
        }
    }
}

/* ---- the loop: end of each turn, and the heartbeat ---------------------------------- */

static void service(struct jinn_stream *s)
{
    for (struct replica *r = s->replicas, *next; r != NULL; r = next) {
        next = r->next;
        if (r->state == R_WAITING && s->position >= r->want) {
            place(r, r->want);
        }
        if (r->state == R_STREAMING && r->next_seq < s->head_seq) {
            /* the ring dropped what it still needs (behind a snapshot, say) */
            cut_off(r, JINN_WS_CLOSE_POLICY, "too slow");
            continue;
        }
        if (r->state == R_STREAMING) {
            pump(r);
        }
        if ((r->state == R_STREAMING || r->state == R_SNAPSHOT) &&
            lag_bytes(r) > s->cfg->stream_max_lag_bytes) {
            cut_off(r, JINN_WS_CLOSE_POLICY, "too slow");
        }
    }
    if (s->want_snapshot && s->job == NULL && !s->stopping) {
        bool any = false;
        for (struct replica *r = s->replicas; r != NULL; r = r->next) {
            any = any || r->state == R_SNAPSHOT;
        }
        if (any && snap_usable(s)) {
            s->want_snapshot = false;
            deliver_snapshot(s); /* sets want_snapshot again for any it could not serve */
        }
        if (any && s->want_snapshot) {
            /* else it stays wanted: the heartbeat timer, a snapshot sent
             * out or a replica gone tries again */
            if (snaps_in_flight(s) >= SNAPSHOTS_IN_FLIGHT) {
                slot_wait(s);
            } else if (uv_now(s->loop) >= s->snap_next_ms) {
                start_job(s);
            }
        } else {
            s->want_snapshot = false;
        }
    }
}

static void feed(struct jinn_stream *s)
{
    s->last_feed_ms = uv_now(s->loop);
    seal(s);
    service(s);
}

static void feed_timer_cb(uv_timer_t *t)
{
    feed(t->data);
}

/* The end of a loop turn that had something for the replicas. Records are
 * fed at most every stream_coalesce (3 ms): under a high write rate a
 * batch per loop turn means a write and a wake-up per replica per commit
 * round (with 16 replicas 13-19 % of the nodes' write throughput in an
 * earlier measure); one every 3 ms took 4-5 points off (bench/README.md).
 * A write after a quiet spell goes at once: the delay only exists while
 * records flow. */
static void check_cb(uv_check_t *h)
{
    struct jinn_stream *s = h->data;
    uint64_t now = uv_now(s->loop), every = s->cfg->stream_coalesce_ms;
    uv_check_stop(h);
    if (every > 0 && now < s->last_feed_ms + every && s->open.len < JINN_STREAM_BATCH_MAX) {
        if (!uv_is_active((uv_handle_t *)&s->feed_timer)) {
            uv_timer_start(&s->feed_timer, feed_timer_cb, s->last_feed_ms + every - now, 0);
        }
        return;
    }
    uv_timer_stop(&s->feed_timer);
    feed(s);
}

/* Runs check_cb at the end of this loop turn. */
static void kick(struct jinn_stream *s)
{
    if (!s->stopping) {
        uv_check_start(&s->check, check_cb);
    }
}

/* "applied": this node's applied index, barriers included. A replica at
 * `position` has everything the node had applied then (entries that are no
 * commands never reach it), so it counts as applied that far: a client's
 * min_index from a voter's barrier read is answered without a record. */
static json_t *with_applied(struct jinn_stream *s, json_t *hb)
{
    struct jinn_node_status st;
    jinn_node_status(s->node, &st);
    if (hb != NULL &&
        json_object_set_new(hb, "applied", json_integer((json_int_t)st.applied_index)) != 0) {
        json_decref(hb);
        return NULL;
    }
    return hb;
}

static json_t *heartbeat_json(struct jinn_stream *s)
{
    struct jinn_node_status st;
    char leader_id[17];
    const struct jinn_fsm *fsm = jinn_node_fsm(s->node);
    uint64_t commit;
    (void)jinn_node_stream_position(s->node); /* a pending restore first: applied says it */
    jinn_node_status(s->node, &st);
    snprintf(leader_id, sizeof leader_id, "%016" PRIx64, st.leader_id);
    /* The commit index as a stream position: once applied here, the last
     * record at or below it (entries without a command, barriers, make
     * the two differ; a caught-up replica's position is the record's). */
    commit = st.applied_index >= st.commit_index ? s->position : st.commit_index;
    /* election_timeout_ms: how long an old leader may still believe it
     * leads; a replica keeps the newer term it heard at least twice that
     * (node.c, jinn_node_replica_heartbeat). Older replicas ignore it. */
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:b, s:I, s:I}", "type",
                     "heartbeat", "node", s->cfg->server_name, "leader_id",
                     st.leader_id ? json_string(leader_id) : json_null(), "leader_name",
                     st.leader_id && st.leader_name ? json_string(st.leader_name) : json_null(),
                     "leader_api", st.leader_api ? json_string(st.leader_api) : json_null(),
                     "term", (json_int_t)st.term, "commit", (json_int_t)commit, "position",
                     (json_int_t)s->position, "time_ms", (json_int_t)fsm->time_ms, "quorum",
                     st.quorum, "leader_contact_ms", (json_int_t)st.leader_contact_ms,
                     "election_timeout_ms", (json_int_t)s->cfg->election_timeout_ms);
}

static struct jinn_ws_buf *json_buf(json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    struct jinn_ws_buf *b;
    json_decref(obj);
    if (text == NULL) {
        return NULL;
    }
    b = jinn_ws_buf_adopt(text, strlen(text));
    return b;
}

/* At most one heartbeat waits in a replica's queue, and never behind
 * more than HB_AHEAD_MAX: a replica dates a heartbeat from its receipt,
 * so one that waited behind a backlog would claim a freshness the replica
 * does not have. Behind a backlog it gets none (and ages truthfully). */
static void send_heartbeat(struct replica *r, struct jinn_ws_buf *hb)
{
    if (r->state == R_CLOSING || replica_sent(r) < r->hb_end) {
        return;
    }
    if (jinn_ws_queued_bytes(r->ws) + jinn_http_conn_unsent(r->conn) >= HB_AHEAD_MAX) {
        r->hb_due = true;
        return;
    }
    r->hb_due = false;
    if (jinn_ws_send(r->ws, false, hb) != 0) {
        cut_off(r, JINN_WS_CLOSE_INTERNAL, "cannot queue");
        return;
    }
    r->hb_end = replica_sent(r) + jinn_ws_queued_bytes(r->ws);
    flush(r);
}

/* How long a replica's transport may take nothing while bytes wait:
 * 100 heartbeats (20 s by default), at least 1 s. */
static uint64_t stall_ms(const struct jinn_stream *s)
{
    uint64_t ms = 100 * (uint64_t)s->cfg->stream_heartbeat_ms;
    return ms < 1000 ? 1000 : ms;
}

static void read_gate(struct replica *r);

/* No replica for this long: the ring is let go (50 heartbeats, 10 s by
 * default, at least 1 s: a replica reconnecting resumes within it). */
static uint64_t idle_ms(const struct jinn_stream *s)
{
    uint64_t ms = 50 * (uint64_t)s->cfg->stream_heartbeat_ms;
    return ms < 1000 ? 1000 : ms;
}

/* What nobody uses is not kept: the cached snapshot once no replica
 * waits for it for SNAP_KEEP_MS (the replicas sending it hold their own
 * references), the ring once no replica is connected for idle_ms. */
static void idle_check(struct jinn_stream *s)
{
    uint64_t now = uv_now(s->loop);
    bool waiting = false;
    for (struct replica *r = s->replicas; r != NULL; r = r->next) {
        waiting = waiting || r->state == R_SNAPSHOT;
    }
    if (s->snap_frame != NULL && !waiting && now - s->snap_used_ms > SNAP_KEEP_MS) {
        jinn_ws_buf_unref(s->snap_frame);
        s->snap_frame = NULL;
    }
    if (s->n_replicas > 0) {
        s->last_replica_ms = now;
    } else if (!s->idle && now - s->last_replica_ms > idle_ms(s)) {
        s->idle = true;
        ring_reset(s);
    }
}

/* How long a replica may wait ahead of this node's log: 25 heartbeats
 * (5 s by default), at least 1 s. A true replica is ahead only of a node
 * that lags (it came from one that had more), by a little, for a little
 * while; past this it is better served by another node, and a client
 * asking a position this node does not reach (from=2^64-1) would hold a
 * stream_max_replicas slot for ever on heartbeats alone (A3 m3). */
static uint64_t ahead_ms(const struct jinn_stream *s)
{
    uint64_t ms = 25 * (uint64_t)s->cfg->stream_heartbeat_ms;
    return ms < 1000 ? 1000 : ms;
}

/* This node's last log index (read once per tick, into *cache). A
 * replica ahead of the records but not of the log waits for this node's
 * apply, or sits at a barrier's index (a node's raft snapshot there) in a
 * quiet cluster: both are served here, in time. */
static uint64_t log_end(const struct jinn_stream *s, uint64_t *cache)
{
    if (*cache == 0) {
        struct jinn_node_status st;
        jinn_node_status(s->node, &st);
        *cache = st.last_index > s->position ? st.last_index : s->position;
    }
    return *cache;
}

/* How long a client that pings may leave its output backed up (reads
 * paused) while its transport takes nothing: 10 heartbeats, at least 1 s
 * (jinn's replicas do not ping; a slow one that does not is left to the
 * longer stall_ms bound). */
static uint64_t pong_stuck_ms(const struct jinn_stream *s)
{
    uint64_t ms = 10 * (uint64_t)s->cfg->stream_heartbeat_ms;
    return ms < 1000 ? 1000 : ms;
}

static void timer_cb(uv_timer_t *t)
{
    struct jinn_stream *s = t->data;
    struct jinn_ws_buf *hb;
    uint64_t last_index = 0;
    (void)jinn_node_stream_position(s->node); /* a restore raft finished since */
    seal(s);
    hb = s->n_replicas > 0 ? json_buf(with_applied(s, heartbeat_json(s))) : NULL;
    for (struct replica *r = s->replicas, *next; r != NULL && hb != NULL; r = next) {
        next = r->next;
        if (r->state != R_CLOSING && jinn_http_conn_queued(r->conn) > 0 &&
            uv_now(s->loop) - r->drained_ms > stall_ms(s)) {
            /* a quiet cluster sends too little to reach the lag bound: a
             * peer that takes nothing for this long holds a slot for nothing */
            cut_off(r, JINN_WS_CLOSE_POLICY, "not reading");
            continue;
        }
        if (r->state == R_WAITING && uv_now(s->loop) - r->waiting_ms > ahead_ms(s) &&
            r->want > log_end(s, &last_index)) {
            /* 1008: the replica moves on to its next listed node */
            jinn_info("stream: replica %s (%s) asked for %" PRIu64
                      ", still ahead of this node (at %" PRIu64 ")",
                      r->name, r->addr, r->want, s->position);
            cut_off(r, JINN_WS_CLOSE_POLICY, "ahead of this node");
            continue;
        }
        read_gate(r);
        if (r->state != R_CLOSING && r->paused && r->pinged &&
            uv_now(s->loop) - r->drained_ms > pong_stuck_ms(s)) {
            cut_off(r, JINN_WS_CLOSE_POLICY, "not reading (pings)");
            continue;
        }
        send_heartbeat(r, hb);
    }
    jinn_ws_buf_unref(hb);
    service(s);
    idle_check(s);
}

/* ---- the replica's connection ---------------------------------------------------------- */

static int ws_write(void *data, const void *buf, size_t n)
{
    struct replica *r = data;
    return jinn_http_conn_write(r->conn, buf, n);
}

static void ws_message(void *data, bool binary, const uint8_t *msg, size_t len)
{
    struct replica *r = data;
    (void)binary;
    (void)msg;
    (void)len;
    /* the protocol has the node send and the replica listen */
    cut_off(r, JINN_WS_CLOSE_UNSUPPORTED, "a replica sends no data messages");
}

static void ws_closed(void *data, int code, const char *why)
{
    struct replica *r = data;
    jinn_debug("stream: replica %s (%s) closed: %d %s", r->name, r->addr, code, why);
    replica_end(r);
}

/* Bounds what the client makes the node queue (see READ_PAUSE). */
static void read_gate(struct replica *r)
{
    uint64_t ctl = jinn_ws_control_bytes(r->ws);
    bool over;
    if (r->state == R_CLOSING) {
        return;
    }
    if (ctl > CONTROL_MAX) {
        cut_off(r, JINN_WS_CLOSE_POLICY, "not reading (control frames)");
        return;
    }
    if (jinn_ws_pings_received(r->ws) != r->pings_seen) {
        r->pings_seen = jinn_ws_pings_received(r->ws);
        r->pinged = true;
    }
    over = ctl + jinn_http_conn_queued(r->conn) >= READ_PAUSE;
    if (over != r->paused) {
        r->paused = over;
        jinn_http_conn_pause(r->conn, over);
    }
}

static void conn_read(void *data, const uint8_t *bytes, size_t n)
{
    struct replica *r = data;
    if (r->state == R_CLOSING) {
        return;
    }
    r->in_feed = true;
    (void)jinn_ws_feed(r->ws, bytes, n);
    r->in_feed = false;
    if (r->state == R_CLOSING) {
        jinn_ws_flush(r->ws); /* the close frame */
        jinn_http_conn_close(r->conn);
    } else {
        flush(r); /* pongs */
        read_gate(r);
    }
}

static void conn_writable(void *data)
{
    struct replica *r = data;
    r->drained_ms = uv_now(r->s->loop);
    r->pinged = false;
    snap_release(r);
    if (r->hb_due && r->state != R_CLOSING &&
        jinn_ws_queued_bytes(r->ws) + jinn_http_conn_unsent(r->conn) < HB_AHEAD_MAX) {
        /* the backlog drained: a heartbeat before more data */
        struct jinn_ws_buf *hb = json_buf(heartbeat_json(r->s));
        if (hb != NULL) {
            send_heartbeat(r, hb);
            jinn_ws_buf_unref(hb);
        }
    }
    if (r->state == R_STREAMING) {
        pump(r);
    } else if (r->state != R_CLOSING) {
        flush(r);
    }
    read_gate(r);
}

static void conn_closed(void *data)
{
    struct replica *r = data;
    struct jinn_stream *s = r->s;
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        s->replicas = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    s->n_replicas--;
    s->bytes_sent_gone += replica_sent(r);
    jinn_info("stream: replica %s (%s) gone at position %" PRIu64, r->name, r->addr, r->pos);
    jinn_ws_buf_unref(r->snap_buf);
    if (s->want_snapshot) {
        kick(s); /* one may have waited for this (SNAPSHOTS_IN_FLIGHT) */
    }
    jinn_ws_destroy(r->ws);
    jinn_free(r);
    maybe_free(s);
}

bool jinn_stream_has_room(const struct jinn_stream *s)
{
    return !s->stopping && s->n_replicas < s->cfg->stream_max_replicas;
}

int jinn_stream_attach_at(struct jinn_stream *s, struct jinn_http_request *req, uint64_t from,
                          const uint64_t *at, const char *name, const char *accept_key)
{
    struct replica *r;
    struct jinn_ws_io wio;
    struct jinn_http_upgrade_io uio;
    char extra[128];
    char cluster[17];
    struct jinn_ws_buf *b;
    int rv;

    if (!jinn_stream_has_room(s)) {
        return JINN_EBUSY;
    }
    r = jinn_calloc(1, sizeof *r);
    if (r == NULL) {
        return JINN_ENOMEM;
    }
    r->s = s;
    r->has_at = at != NULL;
    r->at = at != NULL ? *at : 0;
    snprintf(r->name, sizeof r->name, "%s", name);
    wio = (struct jinn_ws_io){ws_write, ws_message, ws_closed, r};
    rv = jinn_ws_create(true, CLIENT_MESSAGE_MAX, &wio, &r->ws);
    if (rv != 0) {
        jinn_free(r);
        return rv;
    }
    snprintf(extra, sizeof extra, "Sec-WebSocket-Accept: %s\r\n", accept_key);
    uio = (struct jinn_http_upgrade_io){conn_read, conn_writable, conn_closed, r};
    rv = jinn_http_upgrade(req, extra, &uio, &r->conn);
    if (rv != 0) {
        jinn_ws_destroy(r->ws);
        jinn_free(r);
        return rv;
    }
    /* From here conn_closed frees r, whatever happens. */
    jinn_http_conn_addr(r->conn, r->addr);
    s->idle = false; /* records kept again from here */
    s->last_replica_ms = uv_now(s->loop);
    r->next = s->replicas;
    if (s->replicas != NULL) {
        s->replicas->prev = r;
    }
    s->replicas = r;
    s->n_replicas++;
    jinn_info("stream: replica %s (%s) connected at position %" PRIu64 " (node at %" PRIu64 ")",
              r->name, r->addr, from, s->position);
    snprintf(cluster, sizeof cluster, "%016" PRIx64, jinn_node_cluster_id(s->node));
    b = json_buf(json_pack("{s:s, s:i, s:s, s:s}", "type", "hello", "v", JINN_STREAM_PROTOCOL,
                           "cluster", cluster, "node", s->cfg->server_name));
    if (b == NULL || jinn_ws_send(r->ws, false, b) != 0) {
        jinn_ws_buf_unref(b);
        cut_off(r, JINN_WS_CLOSE_INTERNAL, "out of memory");
        return 0;
    }
    jinn_ws_buf_unref(b);
    b = json_buf(with_applied(s, heartbeat_json(s)));
    if (b == NULL || jinn_ws_send(r->ws, false, b) != 0) {
        jinn_ws_buf_unref(b);
        cut_off(r, JINN_WS_CLOSE_INTERNAL, "out of memory");
        return 0;
    }
    jinn_ws_buf_unref(b);
    r->hb_end = replica_sent(r) + jinn_ws_queued_bytes(r->ws);
    r->drained_ms = uv_now(s->loop);
    seal(s);
    place(r, from);
    if (r->state == R_STREAMING) {
        pump(r);
    } else {
        flush(r);
    }
    return 0;
}

int jinn_stream_attach(struct jinn_stream *s, struct jinn_http_request *req, uint64_t from,
                       const char *name, const char *accept_key)
{
    return jinn_stream_attach_at(s, req, from, NULL, name, accept_key);
}

/* ---- life ------------------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    struct jinn_stream *s = h->data;
    s->open_handles--;
    maybe_free(s);
}

static void maybe_free(struct jinn_stream *s)
{
    if (!s->stopping || s->open_handles > 0 || s->n_replicas > 0 || s->job != NULL) {
        return;
    }
    while (s->head_seq < s->tail_seq) {
        ring_drop_head(s);
    }
    jinn_free(s->ring);
    open_reset(s);
    jinn_ws_buf_unref(s->snap_frame);
    jinn_free(s);
}

int jinn_stream_create(uv_loop_t *loop, struct jinn_node *node, const struct jinn_config *cfg,
                       struct jinn_stream **out)
{
    struct jinn_stream *s = jinn_calloc(1, sizeof *s);
    if (s == NULL) {
        return JINN_ENOMEM;
    }
    s->loop = loop;
    s->node = node;
    s->cfg = cfg;
    jinn_wbuf_init(&s->open);
    uv_timer_init(loop, &s->timer);
    uv_check_init(loop, &s->check);
    uv_timer_init(loop, &s->feed_timer);
    s->timer.data = s;
    s->check.data = s;
    s->feed_timer.data = s;
    s->open_handles = 3;
    uv_timer_start(&s->timer, timer_cb, cfg->stream_heartbeat_ms, cfg->stream_heartbeat_ms);
    s->position = jinn_node_stream_position(node);
    s->idle = true; /* until a replica connects */
    s->pos_time = jinn_node_fsm(node)->time_ms;
    jinn_node_set_stream_hooks(node, on_record, on_restore, s);
    *out = s;
    return 0;
}

void jinn_stream_stop(struct jinn_stream *s)
{
    if (s == NULL || s->stopping) {
        return;
    }
    s->stopping = true;
    jinn_node_set_stream_hooks(s->node, NULL, NULL, NULL);
    if (s->job != NULL) {
        s->job->s = NULL; /* freed by job_done */
        s->job = NULL;
    }
    for (struct replica *r = s->replicas, *next; r != NULL; r = next) {
        next = r->next;
        if (r->state != R_CLOSING) {
            jinn_ws_abort(r->ws, JINN_WS_CLOSE_GOING_AWAY, "node shutting down");
            replica_end(r);
        }
    }
    uv_close((uv_handle_t *)&s->timer, handle_closed);
    uv_close((uv_handle_t *)&s->check, handle_closed);
    uv_close((uv_handle_t *)&s->feed_timer, handle_closed);
}

void jinn_stream_stats(const struct jinn_stream *s, struct jinn_stream_stats *out)
{
    memset(out, 0, sizeof *out);
    out->replicas = s->n_replicas;
    out->bytes_sent = s->bytes_sent_gone;
    for (const struct replica *r = s->replicas; r != NULL; r = r->next) {
        out->bytes_sent += replica_sent(r);
    }
    out->cut_off = s->cut_off;
    out->buffer_bytes = s->ring_bytes + s->open.len;
    out->snapshot_bytes = s->snap_frame != NULL ? s->snap_frame->len : 0;
    out->snapshots = s->snapshots;
    out->position = s->position;
}

json_t *jinn_stream_status_json(const struct jinn_stream *s)
{
    struct jinn_stream_stats st;
    json_t *list = json_array();
    uint64_t now = uv_now(s->loop);
    if (list == NULL) {
        return NULL;
    }
    for (const struct replica *r = s->replicas; r != NULL; r = r->next) {
        uint64_t lag_ms = 0;
        if (r->pos < s->position) {
            if (r->state == R_STREAMING && r->next_seq >= s->head_seq &&
                r->next_seq < s->tail_seq) {
                lag_ms = now - ring_at(s, r->next_seq)->sealed_ms;
            } else if (r->state == R_STREAMING && s->open_n > 0) {
                lag_ms = now - s->open_ms;
            }
        }
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "name", r->name, "addr", r->addr,
                      "position", (json_int_t)r->pos, "lag_entries",
                      (json_int_t)(r->pos < s->position ? s->position - r->pos : 0), "lag_ms",
                      (json_int_t)lag_ms, "bytes_sent", (json_int_t)replica_sent(r), "state",
                      r->state == R_SNAPSHOT ||
                              (r->state == R_STREAMING && replica_sent(r) < r->snap_end)
                          ? "snapshot"
                      : r->state == R_WAITING ? "waiting"
                      : r->state == R_CLOSING ? "closing"
                                              : "streaming"));
    }
    jinn_stream_stats(s, &st);
    return json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "replicas", list, "bytes_sent",
                     (json_int_t)st.bytes_sent, "cut_off", (json_int_t)st.cut_off,
                     "buffer_bytes", (json_int_t)st.buffer_bytes, "snapshots",
                     (json_int_t)st.snapshots, "position", (json_int_t)st.position,
                     "snapshot_bytes", (json_int_t)st.snapshot_bytes, "recording", !s->idle);
}
