/* peerguard.c - see peerguard.h.
 *
 * Wire format (all integers little endian):
 *   preamble (dialler -> acceptor): "JNPG", u8 version, u8 flags (1 =
 *     probe), u16 zero, u64 cluster id (0 = none), u64 sender id, u64 the
 *     id the dialler expects to reach (0 = anyone: probes)
 *   answer (acceptor -> dialler): "JNPA", u8 version, u8 status, u8 flags
 *     (1 = holds raft state), u8 zero, u64 acceptor id, u64 cluster id
 * Streams are read with a buffer exactly as large as what is still missing,
 * so nothing past the preamble or answer is ever consumed. */
#include "peerguard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "log.h"

#define PG_VERSION 1
#define PG_FLAG_PROBE 1u
#define PG_LOG_EVERY_MS 10000u

enum pg_status {
    PG_OK = 0,
    PG_WRONG_CLUSTER = 1,
    PG_NO_CLUSTER = 2,
    PG_BAD = 3,
    PG_PROBED = 4,
    PG_WRONG_NODE = 5, /* the dialler expected another id at our address */
};

struct jinn_pg_conn {
    struct jinn_peerguard *pg; /* NULL once finished */
    struct jinn_pg_conn *next;
    uv_stream_t *stream; /* ours until handed to libraft or closed */
    bool inbound;
    bool done;
    bool close_after_write;
    raft_id id;
    char address[256];
    struct raft_uv_connect inner_req;
    struct raft_uv_connect *req; /* outbound: libraft's request */
    raft_uv_connect_cb cb;
    uint8_t out[JINN_PG_PREAMBLE];
    uint8_t in[JINN_PG_PREAMBLE];
    size_t want; /* bytes to read: the preamble or the answer */
    size_t got;
    uv_write_t wreq;
    uv_timer_t timer;
    unsigned refs; /* the timer handle, a write in flight */
};

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void pg_refuse_log(struct jinn_peerguard *pg, const char *fmt, const char *addr,
                          unsigned long long a, unsigned long long b)
{
    uint64_t now = uv_now(pg->loop);
    char msg[512];
    pg->refused++;
    if (now < pg->next_log_ms) {
        return;
    }
    pg->next_log_ms = now + PG_LOG_EVERY_MS;
    snprintf(msg, sizeof msg, fmt, addr, a, b);
    jinn_warn("raft connection refused: %s (logged at most every %us)", msg,
              PG_LOG_EVERY_MS / 1000);
}

/* ---- connection bookkeeping -------------------------------------------- */

static void conn_release(struct jinn_pg_conn *c)
{
    if (--c->refs == 0) {
        jinn_free(c);
    }
}

static void timer_closed(uv_handle_t *h)
{
    conn_release(h->data);
}

static void stream_closed(uv_handle_t *h)
{
    raft_free(h); /* libraft allocated it through raft_malloc */
}

static void conn_unlink(struct jinn_pg_conn *c)
{
    struct jinn_pg_conn **pp;
    if (c->pg == NULL) {
        return;
    }
    for (pp = &c->pg->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    c->pg = NULL;
    c->next = NULL;
}

/* Ends the handshake's own resources; the stream is dealt with by the
 * caller before. */
static void conn_finish(struct jinn_pg_conn *c)
{
    if (c->done) {
        return;
    }
    c->done = true;
    conn_unlink(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, timer_closed);
}

static void conn_fail(struct jinn_pg_conn *c, int status)
{
    raft_uv_connect_cb cb = c->cb;
    struct raft_uv_connect *req = c->req;
    if (c->stream != NULL) {
        uv_read_stop(c->stream);
        uv_close((uv_handle_t *)c->stream, stream_closed);
        c->stream = NULL;
    }
    c->cb = NULL;
    conn_finish(c);
    if (!c->inbound && cb != NULL) {
        cb(req, NULL, status);
    }
}

static void write_done(uv_write_t *w, int status)
{
    struct jinn_pg_conn *c = w->data;
    if (c->close_after_write) {
        (void)status;
        uv_close((uv_handle_t *)w->handle, stream_closed);
    }
    conn_release(c);
}

/* Writes c->out on the stream; close_after: the stream is closed once the
 * bytes are out (a refusal or probe answer). */
static int conn_write(struct jinn_pg_conn *c, bool close_after, unsigned len)
{
    uv_buf_t b = uv_buf_init((char *)c->out, len);
    int rv;
    c->wreq.data = c;
    c->close_after_write = close_after;
    rv = uv_write(&c->wreq, c->stream, &b, 1, write_done);
    if (rv == 0) {
        c->refs++;
    }
    return rv;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct jinn_pg_conn *c = h->data;
    (void)suggested;
    buf->base = (char *)c->in + c->got;
    buf->len = c->want - c->got;
}

static void timeout_cb(uv_timer_t *t)
{
    struct jinn_pg_conn *c = t->data;
    jinn_debug("raft handshake with %s timed out", c->address);
    conn_fail(c, RAFT_NOCONNECTION);
}

static struct jinn_pg_conn *conn_new(struct jinn_peerguard *pg, bool inbound, raft_id id,
                                     const char *address)
{
    struct jinn_pg_conn *c = jinn_calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->pg = pg;
    c->inbound = inbound;
    c->id = id;
    snprintf(c->address, sizeof c->address, "%s", address != NULL ? address : "?");
    uv_timer_init(pg->loop, &c->timer);
    c->timer.data = c;
    c->refs = 1;
    c->next = pg->conns;
    pg->conns = c;
    return c;
}

/* ---- accepting side -------------------------------------------------- */

static void answer(struct jinn_pg_conn *c, struct jinn_peerguard *pg, enum pg_status status)
{
    uint8_t flags =
        pg->probe_flags != NULL ? pg->probe_flags(pg->data, get_u64(c->in + 16)) : 0;
    memcpy(c->out, "JNPA", 4);
    c->out[4] = PG_VERSION;
    c->out[5] = (uint8_t)status;
    c->out[6] = flags;
    c->out[7] = 0;
    put_u64(c->out + 8, pg->self_id);
    put_u64(c->out + 16, pg->cluster_id);
}

/* Answers and closes: a refusal or a probe. */
static void refuse(struct jinn_pg_conn *c, struct jinn_peerguard *pg, enum pg_status status)
{
    uv_stream_t *s = c->stream;
    answer(c, pg, status);
    if (conn_write(c, true, JINN_PG_SIZE) != 0) {
        uv_close((uv_handle_t *)s, stream_closed);
    }
    c->stream = NULL;
    conn_finish(c);
}

static void inbound_ready(struct jinn_pg_conn *c)
{
    struct jinn_peerguard *pg = c->pg;
    uint64_t their_cluster = get_u64(c->in + 8);
    uint64_t sender = get_u64(c->in + 16);
    uint64_t target = get_u64(c->in + 24);
    uv_stream_t *s = c->stream;

    if (memcmp(c->in, "JNPG", 4) != 0 || c->in[4] != PG_VERSION) {
        pg_refuse_log(pg, "%s: not a jinn peer of this version%.0llu%.0llu", c->address, 0, 0);
        refuse(c, pg, PG_BAD);
        return;
    }
    if (c->in[5] & PG_FLAG_PROBE) {
        jinn_debug("probed by %s", c->address);
        refuse(c, pg, PG_PROBED);
        return;
    }
    if (target != 0 && target != pg->self_id) {
        /* Dialled as a member we are not (our data_dir was wiped and we
         * got a new id): refused before anything is learned from it. */
        refuse(c, pg, PG_WRONG_NODE);
        return;
    }
    if (sender != c->id) {
        pg_refuse_log(pg, "%s: sent id %llu in libraft's handshake and %llu in jinn's",
                      c->address, (unsigned long long)c->id, (unsigned long long)sender);
        refuse(c, pg, PG_BAD);
        return;
    }
    if (their_cluster == 0 || (pg->cluster_id != 0 && their_cluster != pg->cluster_id)) {
        pg_refuse_log(pg,
                      their_cluster == 0 ? "%s: node %llu belongs to no cluster yet%.0llu"
                                         : "%s: node %llu belongs to cluster %016llx, not ours",
                      c->address, (unsigned long long)sender,
                      (unsigned long long)their_cluster);
        refuse(c, pg, their_cluster == 0 ? PG_NO_CLUSTER : PG_WRONG_CLUSTER);
        return;
    }
    if (pg->cluster_id == 0) {
        pg->cluster_id = their_cluster;
        jinn_info("joined cluster %016llx (first contact from node %llu at %s)",
                  (unsigned long long)their_cluster, (unsigned long long)sender, c->address);
        if (pg->learned != NULL) {
            pg->learned(pg->data, their_cluster);
        }
    }
    answer(c, pg, PG_OK);
    if (conn_write(c, false, JINN_PG_SIZE) != 0) {
        conn_fail(c, RAFT_NOCONNECTION);
        return;
    }
    c->stream = NULL;
    {
        raft_uv_accept_cb cb = pg->accept_cb;
        raft_id id = c->id;
        char address[sizeof c->address];
        memcpy(address, c->address, sizeof address);
        conn_finish(c);
        cb(&pg->transport, id, address, s);
    }
}

static void outbound_ready(struct jinn_pg_conn *c);

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct jinn_pg_conn *c = s->data;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        jinn_debug("raft handshake with %s: %s", c->address, uv_strerror((int)nread));
        conn_fail(c, RAFT_NOCONNECTION);
        return;
    }
    c->got += (size_t)nread;
    if (c->got < c->want) {
        return;
    }
    uv_read_stop(s);
    if (c->inbound) {
        inbound_ready(c);
    } else {
        outbound_ready(c);
    }
}

static void inner_accepted(struct raft_uv_transport *inner, raft_id id, const char *address,
                           struct uv_stream_s *stream)
{
    struct jinn_peerguard *pg = inner->data;
    struct jinn_pg_conn *c = conn_new(pg, true, id, address);
    if (c == NULL) {
        uv_close((uv_handle_t *)stream, stream_closed);
        return;
    }
    c->stream = stream;
    c->want = JINN_PG_PREAMBLE;
    stream->data = c;
    uv_timer_start(&c->timer, timeout_cb, JINN_PG_HANDSHAKE_MS, 0);
    if (uv_read_start(stream, alloc_cb, read_cb) != 0) {
        conn_fail(c, RAFT_NOCONNECTION);
    }
}

/* ---- dialling side ------------------------------------------------------ */

static void outbound_ready(struct jinn_pg_conn *c)
{
    struct jinn_peerguard *pg = c->pg;
    enum pg_status status = (enum pg_status)c->in[5];
    uint64_t their_id = get_u64(c->in + 8);
    uint64_t their_cluster = get_u64(c->in + 16);
    raft_uv_connect_cb cb = c->cb;
    struct raft_uv_connect *req = c->req;
    uv_stream_t *s = c->stream;

    if (memcmp(c->in, "JNPA", 4) != 0 || c->in[4] != PG_VERSION) {
        pg_refuse_log(pg, "%s: answered with something that is not jinn's%.0llu%.0llu",
                      c->address, 0, 0);
        conn_fail(c, RAFT_NOCONNECTION);
        return;
    }
    if (status == PG_WRONG_NODE || (status == PG_OK && c->id != 0 && their_id != c->id)) {
        pg_refuse_log(pg,
                      "%s is now node %llu, not member %llu (wiped and restarted? "
                      "jinn members remove the old one, then jinn members add the new one)",
                      c->address, (unsigned long long)their_id, (unsigned long long)c->id);
        conn_fail(c, RAFT_NOCONNECTION);
        return;
    }
    if (status != PG_OK) {
        pg_refuse_log(pg, "%s refused us: its cluster is %016llx, ours %016llx", c->address,
                      (unsigned long long)their_cluster, (unsigned long long)pg->cluster_id);
        conn_fail(c, RAFT_NOCONNECTION);
        return;
    }
    c->stream = NULL;
    c->cb = NULL;
    conn_finish(c);
    cb(req, s, 0);
}

static void inner_connected(struct raft_uv_connect *inner_req, struct uv_stream_s *stream,
                            int status)
{
    struct jinn_pg_conn *c = inner_req->data;
    struct jinn_peerguard *pg = c->pg;

    if (status != 0 || pg == NULL) {
        if (stream != NULL && status == 0) {
            uv_close((uv_handle_t *)stream, stream_closed);
        }
        conn_fail(c, status != 0 ? status : RAFT_CANCELED);
        return;
    }
    c->stream = stream;
    c->want = JINN_PG_SIZE;
    stream->data = c;
    memcpy(c->out, "JNPG", 4);
    c->out[4] = PG_VERSION;
    c->out[5] = 0;
    c->out[6] = 0;
    c->out[7] = 0;
    put_u64(c->out + 8, pg->cluster_id);
    put_u64(c->out + 16, pg->self_id);
    put_u64(c->out + 24, c->id);
    uv_timer_start(&c->timer, timeout_cb, JINN_PG_HANDSHAKE_MS, 0);
    if (conn_write(c, false, JINN_PG_PREAMBLE) != 0 ||
        uv_read_start(stream, alloc_cb, read_cb) != 0) {
        conn_fail(c, RAFT_NOCONNECTION);
    }
}

/* ---- the transport interface ------------------------------------------ */

static int t_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct jinn_peerguard *pg = t->impl;
    return pg->inner->init(pg->inner, id, address);
}

static int t_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct jinn_peerguard *pg = t->impl;
    pg->accept_cb = cb;
    return pg->inner->listen(pg->inner, inner_accepted);
}

static int t_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb)
{
    struct jinn_peerguard *pg = t->impl;
    struct jinn_pg_conn *c = conn_new(pg, false, id, address);
    int rv;
    if (c == NULL) {
        return RAFT_NOMEM;
    }
    c->req = req;
    c->cb = cb;
    c->inner_req.data = c;
    rv = pg->inner->connect(pg->inner, &c->inner_req, id, address, inner_connected);
    if (rv != 0) {
        c->cb = NULL;
        conn_finish(c);
    }
    return rv;
}

static void inner_closed(struct raft_uv_transport *inner)
{
    struct jinn_peerguard *pg = inner->data;
    if (pg->close_cb != NULL) {
        pg->close_cb(&pg->transport);
    }
}

static void t_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct jinn_peerguard *pg = t->impl;
    pg->close_cb = cb;
    /* Handshakes in progress end now; dials still connecting are cancelled
     * by the inner transport, which calls inner_connected. */
    while (pg->conns != NULL) {
        struct jinn_pg_conn *c = pg->conns;
        if (c->stream != NULL || c->inbound) {
            conn_fail(c, RAFT_CANCELED);
        } else {
            conn_unlink(c); /* inner_connected sees pg == NULL */
        }
    }
    pg->inner->close(pg->inner, inner_closed);
}

void jinn_peerguard_init(struct jinn_peerguard *pg, uv_loop_t *loop,
                         struct raft_uv_transport *inner, uint64_t self_id, uint64_t cluster_id)
{
    memset(pg, 0, sizeof *pg);
    pg->inner = inner;
    pg->loop = loop;
    pg->self_id = self_id;
    pg->cluster_id = cluster_id;
    inner->data = pg;
    pg->transport.impl = pg;
    pg->transport.init = t_init;
    pg->transport.listen = t_listen;
    pg->transport.connect = t_connect;
    pg->transport.close = t_close;
}

/* ---- probes --------------------------------------------------------- */

struct probe {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t timer;
    uint8_t out[72];
    size_t out_len;
    uint8_t in[JINN_PG_SIZE];
    size_t got;
    unsigned open; /* handles not yet closed */
    bool finished;
    jinn_probe_cb cb;
    void *data;
    struct jinn_probe_result res;
};

static void probe_closed(uv_handle_t *h)
{
    struct probe *p = h->data;
    if (--p->open == 0) {
        p->cb(p->data, &p->res);
        jinn_free(p);
    }
}

static void probe_finish(struct probe *p)
{
    if (p->finished) {
        return;
    }
    p->finished = true;
    uv_close((uv_handle_t *)&p->tcp, probe_closed);
    uv_close((uv_handle_t *)&p->timer, probe_closed);
}

static void probe_timeout(uv_timer_t *t)
{
    probe_finish(t->data);
}

static void probe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct probe *p = h->data;
    (void)suggested;
    buf->base = (char *)p->in + p->got;
    buf->len = JINN_PG_SIZE - p->got;
}

static void probe_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct probe *p = s->data;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        probe_finish(p);
        return;
    }
    p->got += (size_t)nread;
    if (p->got < JINN_PG_SIZE) {
        return;
    }
    uv_read_stop(s);
    if (memcmp(p->in, "JNPA", 4) == 0 && p->in[4] == PG_VERSION) {
        p->res.state = JINN_PROBE_OK;
        p->res.has_state = (p->in[6] & JINN_PG_HAS_STATE) != 0;
        p->res.knows_sender = (p->in[6] & JINN_PG_KNOWS_SENDER) != 0;
        p->res.id = get_u64(p->in + 8);
        p->res.cluster_id = get_u64(p->in + 16);
    }
    probe_finish(p);
}

static void probe_written(uv_write_t *w, int status)
{
    if (status != 0) {
        probe_finish(w->data);
    }
}

static void probe_connected(uv_connect_t *req, int status)
{
    struct probe *p = req->data;
    uv_buf_t b = uv_buf_init((char *)p->out, (unsigned)p->out_len);
    if (status != 0 || p->finished) {
        probe_finish(p);
        return;
    }
    p->wreq.data = p;
    if (uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &b, 1, probe_written) != 0 ||
        uv_read_start((uv_stream_t *)&p->tcp, probe_alloc, probe_read) != 0) {
        probe_finish(p);
    }
}

int jinn_peerguard_probe(uv_loop_t *loop, const char *address, uint64_t self_id,
                         uint64_t timeout_ms, jinn_probe_cb cb, void *data)
{
    static const char who[8] = "probe"; /* libraft's address field, padded */
    struct sockaddr_in sa;
    char host[64];
    const char *colon = strrchr(address, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - address) : 0;
    struct probe *p;
    uint8_t *o;

    if (colon == NULL || hlen == 0 || hlen >= sizeof host) {
        return -1;
    }
    memcpy(host, address, hlen);
    host[hlen] = '\0';
    if (uv_ip4_addr(host, atoi(colon + 1), &sa) != 0) {
        return -1;
    }
    p = jinn_calloc(1, sizeof *p);
    if (p == NULL) {
        return -1;
    }
    p->cb = cb;
    p->data = data;
    p->res.state = JINN_PROBE_UNREACHABLE;
    /* libraft's handshake: u64 protocol (1), u64 our id, u64 address
     * length, address padded to 8 bytes; then jinn's preamble. */
    o = p->out;
    put_u64(o, 1);
    put_u64(o + 8, self_id);
    put_u64(o + 16, sizeof who);
    memcpy(o + 24, who, sizeof who);
    o += 24 + sizeof who;
    memcpy(o, "JNPG", 4);
    o[4] = PG_VERSION;
    o[5] = PG_FLAG_PROBE;
    o[6] = 0;
    o[7] = 0;
    put_u64(o + 8, 0);
    put_u64(o + 16, self_id);
    put_u64(o + 24, 0);
    p->out_len = 24 + sizeof who + JINN_PG_PREAMBLE;
    uv_tcp_init(loop, &p->tcp);
    uv_timer_init(loop, &p->timer);
    p->open = 2;
    p->tcp.data = p;
    p->timer.data = p;
    p->creq.data = p;
    uv_timer_start(&p->timer, probe_timeout, timeout_ms, 0);
    if (uv_tcp_connect(&p->creq, &p->tcp, (const struct sockaddr *)&sa, probe_connected) != 0) {
        probe_finish(p); /* cb runs from the close callbacks */
    }
    return 0;
}

/* ---- answering probes before raft runs (--bootstrap) ------------------ */

#define PS_ADDR_MAX 4096 /* libraft's address field, bounded */

struct ps_conn {
    uv_tcp_t tcp;
    struct jinn_probe_server *srv;
    struct ps_conn *next, **pprev; /* srv->conns */
    uint8_t head[24 + PS_ADDR_MAX + JINN_PG_PREAMBLE];
    size_t want, got;
    bool head_done;
    uint8_t out[JINN_PG_SIZE];
    uv_write_t wreq;
};

static void ps_conn_closed(uv_handle_t *h)
{
    struct ps_conn *c = h->data;
    c->srv->open--;
    jinn_free(c);
}

static void ps_unlink(struct ps_conn *c)
{
    if (c->pprev != NULL) {
        *c->pprev = c->next;
        if (c->next != NULL) {
            c->next->pprev = c->pprev;
        }
        c->pprev = NULL;
    }
}

static void ps_close(struct ps_conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        ps_unlink(c);
        uv_close((uv_handle_t *)&c->tcp, ps_conn_closed);
    }
}

static void ps_written(uv_write_t *w, int status)
{
    (void)status;
    ps_close(w->data);
}

static void ps_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ps_conn *c = h->data;
    (void)suggested;
    buf->base = (char *)c->head + c->got;
    buf->len = c->want - c->got;
}

static void ps_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ps_conn *c = s->data;
    uv_buf_t b;
    (void)buf;
    if (nread == 0) {
        return;
    }
    if (nread < 0) {
        ps_close(c);
        return;
    }
    c->got += (size_t)nread;
    if (c->got < c->want) {
        return;
    }
    if (!c->head_done) {
        uint64_t addr_len = get_u64(c->head + 16);
        if (addr_len > PS_ADDR_MAX) {
            ps_close(c);
            return;
        }
        c->head_done = true;
        c->want = 24 + (size_t)addr_len + JINN_PG_PREAMBLE;
        return;
    }
    uv_read_stop(s);
    /* Whatever was asked (a probe, or raft from a peer already running):
     * "a node about to bootstrap: no cluster, no state". */
    memcpy(c->out, "JNPA", 4);
    c->out[4] = PG_VERSION;
    c->out[5] = PG_PROBED;
    c->out[6] = 0;
    c->out[7] = 0;
    put_u64(c->out + 8, c->srv->self_id);
    put_u64(c->out + 16, 0);
    b = uv_buf_init((char *)c->out, JINN_PG_SIZE);
    c->wreq.data = c;
    if (uv_write(&c->wreq, s, &b, 1, ps_written) != 0) {
        ps_close(c);
    }
}

static void ps_accept(uv_stream_t *server, int status)
{
    struct jinn_probe_server *srv = server->data;
    struct ps_conn *c;
    if (status != 0 || (c = jinn_calloc(1, sizeof *c)) == NULL) {
        return;
    }
    c->srv = srv;
    c->want = 24;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    srv->open++;
    c->next = srv->conns;
    if (c->next != NULL) {
        c->next->pprev = &c->next;
    }
    c->pprev = &srv->conns;
    srv->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, ps_alloc, ps_read) != 0) {
        ps_close(c);
    }
}

int jinn_probe_server_start(struct jinn_probe_server *srv, uv_loop_t *loop,
                            const char *listen_address, uint64_t self_id)
{
    struct sockaddr_in sa;
    char host[64];
    const char *colon = strrchr(listen_address, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - listen_address) : 0;

    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->self_id = self_id;
    if (colon == NULL || hlen == 0 || hlen >= sizeof host) {
        return -1;
    }
    memcpy(host, listen_address, hlen);
    host[hlen] = '\0';
    if (uv_ip4_addr(host, atoi(colon + 1), &sa) != 0) {
        return -1;
    }
    uv_tcp_init(loop, &srv->tcp);
    srv->tcp.data = srv;
    srv->open = 1;
    if (uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&srv->tcp, 16, ps_accept) != 0) {
        jinn_probe_server_stop(srv);
        return -1;
    }
    return 0;
}

static void ps_server_closed(uv_handle_t *h)
{
    struct jinn_probe_server *srv = h->data;
    srv->open--;
}

void jinn_probe_server_stop(struct jinn_probe_server *srv)
{
    if (srv->loop == NULL || uv_is_closing((uv_handle_t *)&srv->tcp)) {
        return;
    }
    uv_close((uv_handle_t *)&srv->tcp, ps_server_closed);
    while (srv->conns != NULL) {
        ps_close(srv->conns);
    }
    while (srv->open > 0) {
        uv_run(srv->loop, UV_RUN_ONCE);
    }
}
