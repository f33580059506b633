/* peerguard.c - see peerguard.h.
 *
 * Wire format (all integers little endian):
 *   libraft's handshake (dialler -> acceptor): u64 protocol 1, u64 server
 *     id, u64 address length L, L bytes of address (NUL-terminated)
 *   preamble (dialler -> acceptor): "JNPG", u8 version, u8 flags (1 =
 *     probe), u16 zero, u64 cluster id (0 = none), u64 sender id, u64 the
 *     id the dialler expects to reach (0 = anyone: probes)
 *   answer (acceptor -> dialler): "JNPA", u8 version, u8 status, u8 flags
 *     (1 = holds raft state), u8 zero, u64 acceptor id, u64 cluster id
 *   then libraft's messages (dialler -> acceptor only): u64 type, u64
 *     header length H, H bytes of header, the payload the header declares.
 *
 * Every connection, inbound or outbound, is one struct pg_conn: jinn's TCP
 * handle on the network side, optionally an OpenSSL session driven through
 * memory BIOs, and once the hello is through, one end of a socketpair whose
 * other end libraft owns. Bytes libraft writes are copied to the network;
 * bytes from the network reach libraft only through parse(), which lets a
 * message header through once it has checked all of it. Writes are bounded
 * (PG_HIGH_WATER): past it, reading from the other side stops until the
 * queue drains. */
#include "peerguard.h"

#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "tls.h"

#define PG_VERSION 1
#define PG_FLAG_PROBE 1u
#define PG_QUIET_MS 60000u
#define PG_READ_BUF 65536
#define PG_HIGH_WATER (4u << 20)
#define PG_HELLO_MAX (24 + JINN_RAFT_ADDRESS_MAX + JINN_PG_PREAMBLE)
#define PG_HDR_MIN_ALLOC 4096

/* libraft 0.15's message types and header sizes (src/uv_encoding.c). */
#define RAFT_PREAMBLE 16
#define AE_FIXED 48 /* term, (unused), prev index, prev term, commit, n */
#define IS_FIXED 56 /* term, last index, last term, conf index, conf len, data len, unused */
#define IS_HDR_MAX (IS_FIXED + 9 + JINN_RAFT_MAX_SERVERS * (8 + JINN_RAFT_ADDRESS_MAX + 1) + 8)

enum pg_status {
    PG_OK = 0,
    PG_WRONG_CLUSTER = 1,
    PG_NO_CLUSTER = 2,
    PG_BAD = 3,
    PG_PROBED = 4,
    PG_WRONG_NODE = 5, /* the dialler expected another id at our address */
};

enum conn_kind { K_IN, K_OUT, K_PROBE };
enum conn_state { C_CONNECTING, C_TLS, C_HELLO, C_BRIDGE, C_DRAIN, C_DEAD };

struct pg_conn {
    struct jinn_peerguard *pg; /* NULL for a probe */
    struct pg_conn *next;
    bool listed, counted;
    enum conn_kind kind;
    enum conn_state state;
    uv_loop_t *loop;
    uv_tcp_t net;
    uv_pipe_t local; /* our end of the socketpair */
    bool local_init;
    uv_timer_t timer;
    uv_connect_t creq;
    unsigned handles;    /* ours not yet closed; freed at 0 */
    uv_pipe_t *raft_end; /* libraft's end until handed over */
    SSL *ssl;
    BIO *rbio, *wbio;
    char ip[64]; /* the peer, for logs */
    raft_id id;
    char address[JINN_RAFT_ADDRESS_MAX];
    uint64_t cluster;     /* inbound: what the dialler claimed */
    uint64_t last_active; /* inbound: loop ms of the last message */
    uint64_t born;        /* loop ms it was accepted or dialled */
    bool got_byte;        /* inbound: its hello has begun */
    bool peer_host;       /* inbound: from the host of a configured peer */
    /* inbound: the message being received (0: none) and when it must be
     * complete: JINN_RAFT_STALL_MS, then JINN_RAFT_MIN_RATE for the
     * payload it declares. */
    uint64_t msg_start, msg_deadline, msg_declared;
    /* outbound */
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    /* probe */
    jinn_probe_cb probe_cb;
    void *probe_data;
    uint64_t probe_self, probe_cluster;
    struct jinn_probe_result res;
    /* hello: inbound handshake + preamble, or the answer */
    uint8_t hello[PG_HELLO_MAX];
    size_t hello_want, hello_got;
    bool head_done;
    /* inbound message parser */
    uint8_t pre[RAFT_PREAMBLE];
    size_t pre_got;
    uint8_t *hdr;
    size_t hdr_len, hdr_cap, hdr_got;
    uint64_t payload_left;
    /* outbound: libraft's backlog (messages it queued while we dialled) */
    uint64_t backlog;  /* bytes of it not read from libraft's end yet */
    uint64_t out_left; /* of the message being passed on or dropped */
    bool out_drop;
    uint8_t *stage; /* checked bytes for libraft, written once per read */
    size_t stage_len, stage_cap;
    /* flow control */
    size_t net_queued, local_queued;
    bool net_paused, local_paused;
    char rbuf[PG_READ_BUF];
};

struct pg_wr {
    uv_write_t w;
    struct pg_conn *c;
    bool to_net;
    size_t len;
    char data[];
};

static SSL_CTX *g_tls;
#define PG_PINS 16
static struct {
    char name[JINN_RAFT_ADDRESS_MAX];
    uint8_t sha256[32];
} g_pins[PG_PINS];
static unsigned g_n_pins;
/* Refusal log lines of probes (they belong to no guard). */
static struct {
    char ip[64];
    uint64_t until;
} g_probe_quiet[8];

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

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- TLS ---------------------------------------------------------------- */

static void tls_error(char *err, size_t n, const char *what, const char *file)
{
    char buf[256] = "unknown error";
    unsigned long e = ERR_get_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    snprintf(err, n, "cluster_tls %s %s: %s", what, file, buf);
    ERR_clear_error();
}

int jinn_peerguard_tls_load(const char *cert, const char *key, const char *ca, char *err,
                            size_t n)
{
    SSL_CTX *ctx = jinn_peerguard_tls_build(cert, key, ca, err, n);
    if (ctx == NULL) {
        return -1;
    }
    jinn_peerguard_tls_install(ctx);
    return 0;
}

void jinn_peerguard_tls_install(SSL_CTX *ctx)
{
    jinn_peerguard_tls_free();
    g_tls = ctx;
}

SSL_CTX *jinn_peerguard_tls_build(const char *cert, const char *key, const char *ca, char *err,
                                  size_t n)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        snprintf(err, n, "cluster_tls: cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* Both sides present a certificate; none without one gets through. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls_error(err, n, "cert", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_error(err, n, "key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, n, "cluster_tls: key %s does not belong to cert %s", key, cert);
        ERR_clear_error();
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        tls_error(err, n, "ca", ca);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int jinn_peerguard_tls_pin(const char *name, const uint8_t sha256[32])
{
    if (g_n_pins == PG_PINS) {
        return -1;
    }
    snprintf(g_pins[g_n_pins].name, sizeof g_pins[g_n_pins].name, "%s", name);
    memcpy(g_pins[g_n_pins].sha256, sha256, 32);
    g_n_pins++;
    return 0;
}

void jinn_peerguard_tls_free(void)
{
    SSL_CTX_free(g_tls);
    g_tls = NULL;
    g_n_pins = 0;
}

bool jinn_peerguard_tls_on(void)
{
    return g_tls != NULL;
}

/* ---- logging ------------------------------------------------------------ */

/* Counts a refused connection and logs why, once per address per minute. */
static void refuse_log(struct pg_conn *c, const char *fmt, ...)
{
    struct jinn_peerguard *pg = c->pg;
    uint64_t now = uv_now(c->loop);
    unsigned slot = 0, oldest = 0, n;
    char msg[512];
    va_list ap;
    if (pg != NULL) {
        pg->refused++;
    }
    n = pg != NULL ? sizeof pg->quiet / sizeof pg->quiet[0]
                   : sizeof g_probe_quiet / sizeof g_probe_quiet[0];
    for (unsigned i = 0; i < n; i++) {
        char *ip = pg != NULL ? pg->quiet[i].ip : g_probe_quiet[i].ip;
        uint64_t until = pg != NULL ? pg->quiet[i].until : g_probe_quiet[i].until;
        uint64_t oldest_until =
            pg != NULL ? pg->quiet[oldest].until : g_probe_quiet[oldest].until;
        if (strcmp(ip, c->ip) == 0) {
            if (now < until) {
                return;
            }
            slot = i;
            goto log;
        }
        if (until < oldest_until) {
            oldest = i;
        }
    }
    slot = oldest;
log:
    if (pg != NULL) {
        snprintf(pg->quiet[slot].ip, sizeof pg->quiet[slot].ip, "%s", c->ip);
        pg->quiet[slot].until = now + PG_QUIET_MS;
    } else {
        snprintf(g_probe_quiet[slot].ip, sizeof g_probe_quiet[slot].ip, "%s", c->ip);
        g_probe_quiet[slot].until = now + PG_QUIET_MS;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jinn_warn("raft connection refused (%s %s): %s (logged once a minute per address)",
              c->kind == K_IN ? "from" : "to", c->ip, msg);
}

/* ---- connection lifetime -------------------------------------------------- */

static void conn_free(struct pg_conn *c)
{
    struct jinn_peerguard *pg = c->pg;
    if (c->kind == K_PROBE && c->probe_cb != NULL) {
        c->probe_cb(c->probe_data, &c->res);
    }
    SSL_free(c->ssl); /* frees the BIOs too */
    jinn_free(c->hdr);
    jinn_free(c->stage);
    jinn_free(c);
    if (pg != NULL) {
        pg->open--;
        if (pg->closing && pg->open == 0 && pg->close_cb != NULL) {
            raft_uv_transport_close_cb cb = pg->close_cb;
            pg->close_cb = NULL;
            cb(&pg->transport);
        }
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct pg_conn *c = h->data;
    if (--c->handles == 0) {
        conn_free(c);
    }
}

static void raft_end_closed(uv_handle_t *h)
{
    raft_free(h); /* libraft frees the streams it closes the same way */
}

static void conn_unlink(struct pg_conn *c)
{
    struct pg_conn **pp;
    if (!c->listed) {
        return;
    }
    for (pp = &c->pg->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    c->listed = false;
}

/* Ends the connection; an outbound one not handed to libraft yet reports
 * status to libraft (from the loop: every caller is a callback). */
static void conn_close(struct pg_conn *c, int status)
{
    raft_uv_connect_cb cb = c->cb;
    if (c->state == C_DEAD) {
        return;
    }
    c->state = C_DEAD;
    c->cb = NULL;
    conn_unlink(c);
    if (c->pg != NULL) {
        if (c->counted) {
            c->pg->inbound--;
        }
        c->pg->reserved -= c->payload_left;
        c->payload_left = 0;
    }
    if (c->raft_end != NULL) {
        uv_close((uv_handle_t *)c->raft_end, raft_end_closed);
        c->raft_end = NULL;
    }
    uv_close((uv_handle_t *)&c->net, handle_closed);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (c->local_init) {
        uv_close((uv_handle_t *)&c->local, handle_closed);
    }
    if (c->kind == K_OUT && cb != NULL) {
        cb(c->req, NULL, status);
    }
}

static struct pg_conn *conn_new(struct jinn_peerguard *pg, uv_loop_t *loop, enum conn_kind kind)
{
    struct pg_conn *c = jinn_calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->pg = pg;
    c->loop = loop;
    c->kind = kind;
    c->state = C_CONNECTING;
    c->born = uv_now(loop);
    snprintf(c->ip, sizeof c->ip, "?");
    uv_tcp_init(loop, &c->net);
    uv_timer_init(loop, &c->timer);
    c->net.data = c;
    c->timer.data = c;
    c->handles = 2;
    if (pg != NULL) {
        pg->open++;
        c->next = pg->conns;
        pg->conns = c;
        c->listed = true;
    }
    return c;
}

/* ---- writing -------------------------------------------------------------- */

static void net_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void local_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void any_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void timer_fired(uv_timer_t *t);
static void arm_inbound(struct pg_conn *c);

static void wr_done(uv_write_t *w, int status)
{
    struct pg_wr *r = (struct pg_wr *)w;
    struct pg_conn *c = r->c;
    if (r->to_net) {
        c->net_queued -= r->len;
    } else {
        c->local_queued -= r->len;
    }
    jinn_free(r);
    if (c->state == C_DEAD) {
        return;
    }
    if (status != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->state == C_DRAIN && c->net_queued == 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->net_paused && c->local_queued < PG_HIGH_WATER / 2) {
        c->net_paused = false;
        uv_read_start((uv_stream_t *)&c->net, any_alloc, net_read);
    }
    if (c->local_paused && c->net_queued < PG_HIGH_WATER / 2) {
        c->local_paused = false;
        uv_read_start((uv_stream_t *)&c->local, any_alloc, local_read);
    }
}

/* Queues a copy of p on the network (to_net) or on libraft's end. */
static int wr(struct pg_conn *c, bool to_net, const void *p, size_t n)
{
    struct pg_wr *r;
    uv_buf_t b;
    if (n == 0) {
        return 0;
    }
    {
        /* Most writes go out at once: only what the kernel does not take
         * is copied and queued. */
        uv_buf_t direct = uv_buf_init((char *)(uintptr_t)p, (unsigned)n);
        int k = uv_try_write(to_net ? (uv_stream_t *)&c->net : (uv_stream_t *)&c->local,
                             &direct, 1);
        if (k > 0) {
            p = (const char *)p + k;
            n -= (size_t)k;
            if (n == 0) {
                return 0;
            }
        } else if (k != UV_EAGAIN) {
            return -1;
        }
    }
    r = jinn_malloc(sizeof *r + n);
    if (r == NULL) {
        return -1;
    }
    memcpy(r->data, p, n);
    r->c = c;
    r->to_net = to_net;
    r->len = n;
    b = uv_buf_init(r->data, (unsigned)n);
    if (uv_write(&r->w, to_net ? (uv_stream_t *)&c->net : (uv_stream_t *)&c->local, &b, 1,
                 wr_done) != 0) {
        jinn_free(r);
        return -1;
    }
    if (to_net) {
        c->net_queued += n;
        if (c->net_queued > PG_HIGH_WATER && c->local_init && !c->local_paused) {
            c->local_paused = true;
            uv_read_stop((uv_stream_t *)&c->local);
        }
    } else {
        c->local_queued += n;
        if (c->local_queued > PG_HIGH_WATER && !c->net_paused) {
            c->net_paused = true;
            uv_read_stop((uv_stream_t *)&c->net);
        }
    }
    return 0;
}

/* Appends checked bytes for libraft; flush_stage writes them in one go. */
static int stage(struct pg_conn *c, const void *p, size_t n)
{
    if (c->stage_len + n > c->stage_cap) {
        size_t cap = c->stage_cap < 4096 ? 4096 : c->stage_cap;
        uint8_t *grown;
        while (cap < c->stage_len + n) {
            cap *= 2;
        }
        grown = jinn_realloc(c->stage, cap);
        if (grown == NULL) {
            return -1;
        }
        c->stage = grown;
        c->stage_cap = cap;
    }
    memcpy(c->stage + c->stage_len, p, n);
    c->stage_len += n;
    return 0;
}

static int flush_stage(struct pg_conn *c)
{
    int rv = 0;
    if (c->stage_len > 0 && c->state == C_BRIDGE) {
        rv = wr(c, false, c->stage, c->stage_len);
    }
    c->stage_len = 0;
    if (c->stage_cap > PG_READ_BUF * 2) { /* a big header passed: give it back */
        jinn_free(c->stage);
        c->stage = NULL;
        c->stage_cap = 0;
    }
    return rv;
}

/* Sends what OpenSSL wrote to the memory BIO, in one write. */
static int flush_tls(struct pg_conn *c)
{
    char *p;
    long n = BIO_get_mem_data(c->wbio, &p);
    int rv = 0;
    if (n > 0) {
        rv = wr(c, true, p, (size_t)n);
        (void)BIO_reset(c->wbio);
    }
    return rv;
}

static int send_net(struct pg_conn *c, const void *p, size_t n)
{
    const char *q = p;
    if (c->ssl == NULL) {
        return wr(c, true, p, n);
    }
    while (n > 0) {
        int chunk = n > 65536 ? 65536 : (int)n;
        int k;
        ERR_clear_error();
        k = SSL_write(c->ssl, q, chunk);
        if (k <= 0) {
            return -1;
        }
        q += k;
        n -= (size_t)k;
    }
    return flush_tls(c);
}

/* Answers a dialler and closes once the answer is out. */
static void answer(struct pg_conn *c, enum pg_status status, bool then_close)
{
    struct jinn_peerguard *pg = c->pg;
    uint8_t out[JINN_PG_SIZE];
    const uint8_t *pre = c->hello + 24 + get_u64(c->hello + 16);
    uint64_t sender = get_u64(pre + 16), theirs = get_u64(pre + 8);
    uint64_t cluster = 0;
    uint8_t flags = 0;
    if (!pg->probe_only && pg->probe_flags != NULL) {
        flags = pg->probe_flags(pg->data, sender);
    }
    /* Our cluster id goes only to who has it already (or, with TLS, to a
     * peer the CA vouches for): a probe learns "yours" or "another one",
     * and a refused dialler learns nothing. */
    if (!pg->probe_only && pg->cluster_id != 0) {
        if (status == PG_OK ||
            (status == PG_PROBED && (c->ssl != NULL || theirs == pg->cluster_id))) {
            cluster = pg->cluster_id;
        } else if (status == PG_PROBED) {
            flags |= JINN_PG_OTHER_CLUSTER;
        }
    }
    memcpy(out, "JNPA", 4);
    out[4] = PG_VERSION;
    out[5] = (uint8_t)status;
    out[6] = flags;
    out[7] = 0;
    put_u64(out + 8, pg->self_id);
    put_u64(out + 16, cluster);
    if (send_net(c, out, sizeof out) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (then_close) {
        c->state = C_DRAIN;
        uv_read_stop((uv_stream_t *)&c->net);
        if (c->net_queued == 0) {
            conn_close(c, RAFT_NOCONNECTION);
        }
    }
}

/* ---- the bridge ----------------------------------------------------------- */

/* Creates the socketpair: our end is read (outbound: what libraft sends;
 * inbound: only to see libraft close it), libraft's end is c->raft_end. */
static int bridge_start(struct pg_conn *c)
{
    int fds[2];
    uv_pipe_t *r;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
        return -1;
    }
    r = raft_malloc(sizeof *r);
    if (r == NULL) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    uv_pipe_init(c->loop, &c->local, 0);
    c->local.data = c;
    c->local_init = true;
    c->handles++;
    uv_pipe_init(c->loop, r, 0);
    c->raft_end = r;
    if (uv_pipe_open(&c->local, fds[0]) != 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (uv_pipe_open(r, fds[1]) != 0) {
        close(fds[1]);
        return -1;
    }
    if (uv_read_start((uv_stream_t *)&c->local, any_alloc, local_read) != 0) {
        return -1;
    }
    uv_timer_stop(&c->timer);
    c->state = C_BRIDGE;
    return 0;
}

static uint64_t declared_payload(uint64_t type, const uint8_t *h, size_t len)
{
    uint64_t payload = 0;
    if (type == RAFT_IO_APPEND_ENTRIES && len >= AE_FIXED) {
        uint64_t n = (len - AE_FIXED) / 16;
        for (uint64_t i = 0; i < n; i++) {
            payload += get_u32(h + 40 + 16 * i + 12);
        }
    } else if (type == RAFT_IO_INSTALL_SNAPSHOT && len >= IS_FIXED) {
        payload = get_u64(h + 40 + (len - IS_FIXED));
    }
    return payload;
}

/* The first bytes libraft writes on a new outbound connection are the
 * messages it queued while there was none (libraft 0.15 flushes them from
 * the connect callback), some created long before. AppendEntries among
 * them are dropped, as a network may drop them (raft resends): a leader
 * commit index delivered late would make the follower believe itself fresh
 * as of the delivery (fresh.h). Other messages (votes) pass. Returns how
 * many bytes of p it consumed. */
static size_t backlog_filter(struct pg_conn *c, const uint8_t *p, size_t n)
{
    size_t used = 0;
    while (used < n && c->state == C_BRIDGE &&
           (c->backlog > 0 || c->out_left > 0 || c->pre_got > 0)) {
        size_t take;
        if (c->out_left > 0) {
            take = n - used < c->out_left ? n - used : (size_t)c->out_left;
            if (!c->out_drop && send_net(c, p + used, take) != 0) {
                conn_close(c, RAFT_NOCONNECTION);
                return n;
            }
            c->out_left -= take;
        } else if (c->pre_got < RAFT_PREAMBLE) {
            take = RAFT_PREAMBLE - c->pre_got;
            take = n - used < take ? n - used : take;
            memcpy(c->pre + c->pre_got, p + used, take);
            c->pre_got += take;
            if (c->pre_got == RAFT_PREAMBLE) {
                c->hdr_len = (size_t)get_u64(c->pre + 8);
                c->hdr_got = 0;
                if (c->hdr_len > 64u << 20) { /* our own libraft: cannot be */
                    conn_close(c, RAFT_NOCONNECTION);
                    return n;
                }
            }
        } else {
            take = c->hdr_len - c->hdr_got;
            take = n - used < take ? n - used : take;
            if (c->hdr_got + take > c->hdr_cap) {
                uint8_t *grown = jinn_realloc(c->hdr, c->hdr_len);
                if (grown == NULL) {
                    conn_close(c, RAFT_NOCONNECTION);
                    return n;
                }
                c->hdr = grown;
                c->hdr_cap = c->hdr_len;
            }
            memcpy(c->hdr + c->hdr_got, p + used, take);
            c->hdr_got += take;
            if (c->hdr_got == c->hdr_len) {
                uint64_t type = get_u64(c->pre);
                c->out_drop = type == RAFT_IO_APPEND_ENTRIES;
                c->out_left = declared_payload(type, c->hdr, c->hdr_len);
                if (!c->out_drop && (send_net(c, c->pre, RAFT_PREAMBLE) != 0 ||
                                     send_net(c, c->hdr, c->hdr_len) != 0)) {
                    conn_close(c, RAFT_NOCONNECTION);
                    return n;
                }
                c->pre_got = 0;
            }
        }
        used += take;
        c->backlog -= take < c->backlog ? take : c->backlog;
    }
    return used;
}

static void local_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct pg_conn *c = s->data;
    if (nread == 0 || c->state == C_DEAD) {
        return;
    }
    if (nread < 0) {
        conn_close(c, RAFT_NOCONNECTION); /* libraft closed its end */
        return;
    }
    if (c->kind == K_OUT) {
        size_t used = backlog_filter(c, (const uint8_t *)buf->base, (size_t)nread);
        if (c->state == C_BRIDGE && used < (size_t)nread &&
            send_net(c, buf->base + used, (size_t)nread - used) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
        }
    }
    /* Inbound: libraft never writes on a connection it receives on. */
}

/* ---- checking libraft's messages ------------------------------------------ */

static bool header_len_ok(uint64_t type, uint64_t len, uint64_t max_entries)
{
    switch (type) {
    case RAFT_IO_APPEND_ENTRIES:
        return len >= AE_FIXED && (len - AE_FIXED) % 16 == 0 &&
               (len - AE_FIXED) / 16 <= max_entries;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
    case RAFT_IO_TIMEOUT_NOW:
        return len == 24;
    case RAFT_IO_REQUEST_VOTE:
        return len == 32 || len == 40; /* without and with the flags */
    case RAFT_IO_REQUEST_VOTE_RESULT:
        return len == 16 || len == 24;
    case RAFT_IO_INSTALL_SNAPSHOT:
        return len >= IS_FIXED + 9 && len <= IS_HDR_MAX;
    default:
        return false;
    }
}

/* A configuration as libraft encodes it: u8 format 1, u64 n, then n times
 * u64 id, NUL-terminated address, u8 role. libraft's decoder trusts n and
 * looks for the NULs with strlen. */
static const char *check_conf(const uint8_t *b, size_t len)
{
    size_t off = 9;
    uint64_t n;
    if (len < 9 || b[0] != 1) {
        return "snapshot configuration of an unknown format";
    }
    n = get_u64(b + 1);
    if (n == 0 || n > JINN_RAFT_MAX_SERVERS) {
        return "snapshot configuration with a bad server count";
    }
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *nul;
        if (len - off < 8 + 2) {
            return "snapshot configuration cut short";
        }
        off += 8;
        nul = memchr(b + off, '\0', len - off);
        if (nul == NULL || (size_t)(nul - (b + off)) >= JINN_RAFT_ADDRESS_MAX) {
            return "snapshot configuration address not terminated";
        }
        off = (size_t)(nul - b) + 1;
        if (off >= len || b[off] > RAFT_SPARE) {
            return "snapshot configuration with a bad role";
        }
        off++;
    }
    return NULL;
}

/* Checks a complete header; sets the payload length it declares. NULL when
 * libraft may decode it, else why not. */
/* Terms and log indexes no real cluster reaches: at 2^64-1, libraft's next
 * election wraps the term to 0 and no candidate can win again (the term is
 * persisted, so restarts do not help). Anything >= 2^63 is refused. */
#define PG_NUMBER_MAX (UINT64_C(1) << 63)

/* Offsets of the terms and indexes in each fixed header (libraft 0.15's
 * encoding); 0 ends a list after the first (the term, at 0). */
static bool numbers_ok(uint64_t type, const uint8_t *h, size_t len)
{
    static const uint8_t ae[] = {8, 16, 24, 0}; /* prev index, prev term, commit */
    static const uint8_t aer[] = {8, 16, 0};    /* rejected index, last log index */
    static const uint8_t rv[] = {16, 24, 0};    /* last log index, last log term */
    static const uint8_t is[] = {8, 16, 24, 0}; /* last index, last term, conf index */
    static const uint8_t tn[] = {8, 16, 0};     /* last log index, last log term */
    static const uint8_t none[] = {0};
    const uint8_t *off = none;
    if (len < 8 || get_u64(h) >= PG_NUMBER_MAX) {
        return false;
    }
    switch (type) {
    case RAFT_IO_APPEND_ENTRIES:
        off = ae;
        break;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        off = aer;
        break;
    case RAFT_IO_REQUEST_VOTE:
        off = rv;
        break;
    case RAFT_IO_INSTALL_SNAPSHOT:
        off = is;
        break;
    case RAFT_IO_TIMEOUT_NOW:
        off = tn;
        break;
    default:
        break;
    }
    for (; *off != 0; off++) {
        if ((size_t)*off + 8 > len || get_u64(h + *off) >= PG_NUMBER_MAX) {
            return false;
        }
    }
    return true;
}

static const char *check_header(uint64_t type, const uint8_t *h, size_t len, uint64_t *payload)
{
    *payload = 0;
    if (!numbers_ok(type, h, len)) {
        return "a term or log index of 2^63 or more";
    }
    if (type == RAFT_IO_APPEND_ENTRIES) {
        uint64_t n = get_u64(h + 32);
        if (n != (len - AE_FIXED) / 16) {
            return "AppendEntries whose entry count does not match its header";
        }
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *e = h + 40 + 16 * i;
            uint32_t elen = get_u32(e + 12);
            if (get_u64(e) >= PG_NUMBER_MAX) {
                return "a term or log index of 2^63 or more";
            }
            if (e[8] != RAFT_COMMAND && e[8] != RAFT_BARRIER && e[8] != RAFT_CHANGE) {
                return "AppendEntries with an entry of unknown type";
            }
            /* libraft lays entries out at 8-byte steps: an unpadded one
             * before the last would make it read past the payload. */
            if (i + 1 < n && elen % 8 != 0) {
                return "AppendEntries with an unpadded entry";
            }
            *payload += elen;
        }
    } else if (type == RAFT_IO_INSTALL_SNAPSHOT) {
        uint64_t conf_len = get_u64(h + 32);
        const char *why;
        if (conf_len != len - IS_FIXED) {
            return "InstallSnapshot whose configuration length does not match its header";
        }
        why = check_conf(h + 40, (size_t)conf_len);
        if (why != NULL) {
            return why;
        }
        *payload = get_u64(h + 40 + conf_len);
        if (*payload == 0) {
            return "InstallSnapshot without data";
        }
    }
    if (*payload > JINN_RAFT_MAX_MESSAGE) {
        return "a message larger than JINN_RAFT_MAX_MESSAGE";
    }
    return NULL;
}

const char *jinn_peerguard_check(uint64_t type, const uint8_t *hdr, uint64_t len,
                                 uint64_t *payload)
{
    *payload = 0;
    if (!header_len_ok(type, len, JINN_RAFT_MAX_ENTRIES)) {
        return "message type and header length not allowed";
    }
    return check_header(type, hdr, (size_t)len, payload);
}

static void reject(struct pg_conn *c, const char *why, uint64_t a, uint64_t b)
{
    refuse_log(c, "node %llu: %s (%llu, %llu)", (unsigned long long)c->id, why,
               (unsigned long long)a, (unsigned long long)b);
    conn_close(c, RAFT_NOCONNECTION);
}

/* What the admitted connections of server id declared and have not
 * delivered yet. */
static uint64_t member_reserved(const struct jinn_peerguard *pg, uint64_t id)
{
    uint64_t sum = 0;
    for (const struct pg_conn *o = pg->conns; o != NULL; o = o->next) {
        if (o->kind == K_IN && o->state == C_BRIDGE && o->id == id) {
            sum += o->payload_left;
        }
    }
    return sum;
}

/* Whether c's payload in flight arrives slower than JINN_RAFT_MIN_RATE
 * (after a second of grace): such a reservation is given up as soon as
 * another message needs the budget. */
static bool behind(const struct pg_conn *c, uint64_t now)
{
    uint64_t elapsed, got;
    if (c->kind != K_IN || c->state != C_BRIDGE || c->payload_left == 0 || c->msg_start == 0 ||
        now < c->msg_start + 1000) {
        return false;
    }
    elapsed = now - c->msg_start - 1000;
    got = c->msg_declared - c->payload_left;
    return got < elapsed * (JINN_RAFT_MIN_RATE / 1000);
}

/* A header declaring payload does not fit a budget: closes the other
 * connections whose reservations are behind the minimum rate, so one that
 * declares much and trickles cannot hold the budget against real
 * messages. */
static void reclaim(struct jinn_peerguard *pg, struct pg_conn *c, uint64_t now)
{
    struct pg_conn *o = pg->conns, *next;
    for (; o != NULL; o = next) {
        next = o->next;
        if (o != c && behind(o, now)) {
            refuse_log(o,
                       "node %llu: %llu of %llu declared payload bytes in %llu ms, below "
                       "%llu bytes/s, and the reservation is needed",
                       (unsigned long long)o->id,
                       (unsigned long long)(o->msg_declared - o->payload_left),
                       (unsigned long long)o->msg_declared,
                       (unsigned long long)(now - o->msg_start),
                       (unsigned long long)JINN_RAFT_MIN_RATE);
            conn_close(o, RAFT_NOCONNECTION);
        }
    }
}

static bool budget_fits(const struct jinn_peerguard *pg, const struct pg_conn *c,
                        uint64_t payload)
{
    return payload <= JINN_RAFT_RESERVE_MAX - pg->reserved &&
           payload <= JINN_RAFT_RESERVE_MEMBER - member_reserved(pg, c->id);
}

/* Inbound bytes after the hello: whole preambles and headers are held and
 * checked; payload bytes pass as they come (their length was checked). */
static void parse(struct pg_conn *c, const uint8_t *p, size_t n)
{
    struct jinn_peerguard *pg = c->pg;
    while (n > 0 && c->state == C_BRIDGE) {
        size_t take;
        if (c->payload_left > 0) {
            take = n < c->payload_left ? n : (size_t)c->payload_left;
            if (stage(c, p, take) != 0) {
                conn_close(c, RAFT_NOCONNECTION);
                return;
            }
            c->payload_left -= take;
            pg->reserved -= take;
            p += take;
            n -= take;
            if (c->payload_left == 0) {
                c->msg_start = 0;
            }
            continue;
        }
        if (c->pre_got < RAFT_PREAMBLE) {
            uint64_t type, hlen;
            if (c->pre_got == 0) {
                /* A message begins: the whole of it, header and payload,
                 * has a deadline; bytes trickling in do not extend it. */
                c->msg_start = uv_now(c->loop);
                c->msg_deadline = c->msg_start + JINN_RAFT_STALL_MS;
            }
            take = RAFT_PREAMBLE - c->pre_got;
            take = n < take ? n : take;
            memcpy(c->pre + c->pre_got, p, take);
            c->pre_got += take;
            p += take;
            n -= take;
            if (c->pre_got < RAFT_PREAMBLE) {
                break;
            }
            type = get_u64(c->pre);
            hlen = get_u64(c->pre + 8);
            if (!header_len_ok(type, hlen, pg->max_entries)) {
                reject(c, "message type and header length not allowed", type, hlen);
                return;
            }
            c->hdr_len = (size_t)hlen;
            c->hdr_got = 0;
            continue;
        }
        take = c->hdr_len - c->hdr_got;
        take = n < take ? n : take;
        if (c->hdr_got + take > c->hdr_cap) {
            /* Grown as bytes arrive: a declared length reserves nothing. */
            size_t cap = c->hdr_cap < PG_HDR_MIN_ALLOC ? PG_HDR_MIN_ALLOC : c->hdr_cap;
            uint8_t *grown;
            while (cap < c->hdr_got + take) {
                cap *= 2;
            }
            cap = cap > c->hdr_len ? c->hdr_len : cap;
            grown = jinn_realloc(c->hdr, cap);
            if (grown == NULL) {
                conn_close(c, RAFT_NOCONNECTION);
                return;
            }
            c->hdr = grown;
            c->hdr_cap = cap;
        }
        memcpy(c->hdr + c->hdr_got, p, take);
        c->hdr_got += take;
        p += take;
        n -= take;
        if (c->hdr_got == c->hdr_len) {
            uint64_t type = get_u64(c->pre), payload;
            const char *why = check_header(type, c->hdr, c->hdr_len, &payload);
            if (why != NULL) {
                reject(c, why, type, c->hdr_len);
                return;
            }
            if (!budget_fits(pg, c, payload)) {
                reclaim(pg, c, uv_now(c->loop));
            }
            if (!budget_fits(pg, c, payload)) {
                uint64_t mine = member_reserved(pg, c->id);
                reject(c, "declares more than the reservation budget (all, its own) has left",
                       payload,
                       JINN_RAFT_RESERVE_MAX - pg->reserved < JINN_RAFT_RESERVE_MEMBER - mine
                           ? JINN_RAFT_RESERVE_MAX - pg->reserved
                           : JINN_RAFT_RESERVE_MEMBER - mine);
                return;
            }
            if (stage(c, c->pre, RAFT_PREAMBLE) != 0 || stage(c, c->hdr, c->hdr_len) != 0) {
                conn_close(c, RAFT_NOCONNECTION);
                return;
            }
            pg->reserved += payload;
            c->payload_left = payload;
            c->msg_declared = payload;
            if (payload == 0) {
                c->msg_start = 0;
            } else {
                c->msg_start = uv_now(c->loop);
                c->msg_deadline =
                    c->msg_start + JINN_RAFT_STALL_MS + payload / (JINN_RAFT_MIN_RATE / 1000);
            }
            c->pre_got = 0;
            c->hdr_got = 0;
            c->hdr_len = 0;
            c->last_active = uv_now(c->loop);
            if (c->hdr_cap > PG_HDR_MIN_ALLOC) {
                jinn_free(c->hdr);
                c->hdr = NULL;
                c->hdr_cap = 0;
            }
        }
    }
}

/* ---- hello ---------------------------------------------------------------- */

static bool expected_name(struct pg_conn *c, char *out, size_t n)
{
    struct jinn_peerguard *pg = c->pg;
    return pg != NULL && pg->name_of != NULL &&
           pg->name_of(pg->data, c->id, c->address, out, n);
}

/* With TLS: the certificate (already checked against the CA) must name the
 * node behind server id c->id when we know its name. */
static bool cert_matches(struct pg_conn *c)
{
    char want[JINN_RAFT_ADDRESS_MAX], subject[256];
    X509 *cert;
    if (c->ssl == NULL || !expected_name(c, want, sizeof want)) {
        return true;
    }
    cert = SSL_get0_peer_certificate(c->ssl);
    for (unsigned i = 0; i < g_n_pins; i++) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        if (strcmp(g_pins[i].name, want) != 0) {
            continue;
        }
        if (cert != NULL && X509_digest(cert, EVP_sha256(), md, &len) == 1 && len == 32 &&
            memcmp(md, g_pins[i].sha256, 32) == 0) {
            return true;
        }
        refuse_log(c, "node %llu ('%s') must present the certificate pinned for it",
                   (unsigned long long)c->id, want);
        return false;
    }
    if (cert != NULL && X509_check_host(cert, want, strlen(want),
                                        X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1) {
        return true;
    }
    subject[0] = '\0';
    if (cert != NULL) {
        X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    }
    refuse_log(c, "node %llu must present a certificate naming '%s'; it presented '%s'",
               (unsigned long long)c->id, want, subject);
    return false;
}

/* A raft address as jinn writes one: host (letters, digits, '.', '-'),
 * ':', a port 1..65535 in digits. Anything else (control bytes included:
 * the address reaches the log and libraft dials it) is refused. */
bool jinn_peerguard_address_ok(const char *a)
{
    const char *colon = strrchr(a, ':');
    unsigned long port = 0;
    size_t digits;
    if (colon == NULL || colon == a || colon - a > 253) {
        return false;
    }
    for (const char *p = a; p < colon; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '-')) {
            return false;
        }
    }
    digits = strlen(colon + 1);
    if (digits == 0 || digits > 5 || strspn(colon + 1, "0123456789") != digits) {
        return false;
    }
    port = strtoul(colon + 1, NULL, 10);
    return port >= 1 && port <= 65535;
}

static void inbound_hello(struct pg_conn *c)
{
    struct jinn_peerguard *pg = c->pg;
    size_t alen = (size_t)get_u64(c->hello + 16);
    const uint8_t *pre = c->hello + 24 + alen;
    uint64_t their_cluster = get_u64(pre + 8);
    uint64_t sender = get_u64(pre + 16);
    uint64_t target = get_u64(pre + 24);

    if (memchr(c->hello + 24, '\0', alen) == NULL) {
        refuse_log(c, "libraft handshake address not terminated");
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    snprintf(c->address, sizeof c->address, "%s", (const char *)c->hello + 24);
    if (memcmp(pre, "JNPG", 4) != 0 || pre[4] != PG_VERSION) {
        refuse_log(c, "not a jinn peer of this version");
        answer(c, PG_BAD, true);
        return;
    }
    if ((pre[5] & PG_FLAG_PROBE) || pg->probe_only) {
        jinn_debug("probed by %s", c->ip);
        answer(c, PG_PROBED, true);
        return;
    }
    if (!jinn_peerguard_address_ok(c->address)) {
        refuse_log(c, "libraft handshake address is not host:port");
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (target != 0 && target != pg->self_id) {
        /* Dialled as a member we are not (our data_dir was wiped and we
         * got a new id): refused before anything is learned from it. */
        answer(c, PG_WRONG_NODE, true);
        return;
    }
    if (sender != c->id) {
        refuse_log(c, "sent id %llu in libraft's handshake and %llu in jinn's",
                   (unsigned long long)c->id, (unsigned long long)sender);
        answer(c, PG_BAD, true);
        return;
    }
    if (their_cluster == 0 && pg->cluster_id != 0 && pg->member != NULL &&
        pg->member(pg->data, sender, c->address, true)) {
        /* A member of our configuration at its configured address that has
         * no cluster id yet: a node being added, which takes ours once its
         * configuration includes it (it must answer us to get there). */
    } else if (their_cluster == 0 || (pg->cluster_id != 0 && their_cluster != pg->cluster_id)) {
        if (their_cluster == 0) {
            refuse_log(c, "node %llu belongs to no cluster yet", (unsigned long long)sender);
        } else {
            refuse_log(c, "node %llu belongs to cluster %016llx, not ours",
                       (unsigned long long)sender, (unsigned long long)their_cluster);
        }
        answer(c, their_cluster == 0 ? PG_NO_CLUSTER : PG_WRONG_CLUSTER, true);
        return;
    }
    if (pg->member != NULL && !pg->member(pg->data, sender, c->address, true)) {
        refuse_log(c, "node %llu at %s is not a member of the raft configuration",
                   (unsigned long long)sender, c->ip);
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (!cert_matches(c)) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    c->cluster = their_cluster;
    {
        char want[JINN_RAFT_ADDRESS_MAX];
        if (pg->cluster_id == 0 && c->ssl != NULL && expected_name(c, want, sizeof want)) {
            /* Only a peer whose certificate names a node we know (a
             * cluster_peers node at its address; cert_matches checked the
             * name) binds a new node to its cluster at first contact: a
             * CA may sign for more than one cluster. Otherwise the node
             * takes its leader's once a configuration including it
             * arrives (jinn_peerguard_cluster_of, from the tick). */
            pg->cluster_id = their_cluster;
            jinn_info("joined cluster %016llx (first contact from node %llu '%s' at %s, "
                      "authenticated)",
                      (unsigned long long)their_cluster, (unsigned long long)sender, want,
                      c->ip);
            if (pg->learned != NULL) {
                pg->learned(pg->data, their_cluster);
            }
        }
    }
    {
        /* At most JINN_RAFT_MAX_INBOUND_MEMBER per server id: the newest
         * stays (a restarted peer's old connections may not be closed yet,
         * and slots taken in its name must not keep it out). */
        unsigned same = 0;
        struct pg_conn *oldest = NULL;
        for (struct pg_conn *o = pg->conns; o != NULL; o = o->next) {
            if (o != c && o->kind == K_IN && o->counted && o->state == C_BRIDGE &&
                o->id == c->id) {
                same++;
                if (oldest == NULL || o->born <= oldest->born) {
                    oldest = o;
                }
            }
        }
        if (same >= JINN_RAFT_MAX_INBOUND_MEMBER && oldest != NULL) {
            jinn_debug("raft connection from %s (node %llu): replaced by a newer one",
                       oldest->ip, (unsigned long long)oldest->id);
            conn_close(oldest, RAFT_NOCONNECTION);
        }
    }
    if (pg->inbound >= JINN_RAFT_MAX_INBOUND) {
        refuse_log(c, "%u raft connections open already", pg->inbound);
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    pg->inbound++;
    c->counted = true;
    answer(c, PG_OK, false);
    if (c->state == C_DEAD) {
        return;
    }
    if (bridge_start(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    c->last_active = uv_now(c->loop);
    {
        uv_pipe_t *r = c->raft_end;
        c->raft_end = NULL;
        pg->accept_cb(&pg->transport, c->id, c->address, (uv_stream_t *)r);
    }
    arm_inbound(c);
}

static void outbound_answer(struct pg_conn *c)
{
    struct jinn_peerguard *pg = c->pg;
    const uint8_t *in = c->hello;
    enum pg_status status = (enum pg_status)in[5];
    uint64_t their_id = get_u64(in + 8);
    uint64_t their_cluster = get_u64(in + 16);
    raft_uv_connect_cb cb = c->cb;
    uv_pipe_t *r;

    if (memcmp(in, "JNPA", 4) != 0 || in[4] != PG_VERSION) {
        refuse_log(c, "answered with something that is not jinn's");
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (status == PG_WRONG_NODE || (status == PG_OK && c->id != 0 && their_id != c->id)) {
        refuse_log(c,
                   "%s is now node %llu, not member %llu (wiped and restarted? "
                   "jinn members remove the old one, then jinn members add the new one)",
                   c->address, (unsigned long long)their_id, (unsigned long long)c->id);
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (status != PG_OK) {
        refuse_log(c, "it refused us (status %d): its cluster is %016llx, ours %016llx",
                   (int)status, (unsigned long long)their_cluster,
                   (unsigned long long)pg->cluster_id);
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (bridge_start(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    r = c->raft_end;
    c->raft_end = NULL;
    c->cb = NULL;
    cb(c->req, (uv_stream_t *)r, 0);
    /* What libraft wrote from inside the callback is its backlog: in our
     * end's receive queue, or still queued on its end. */
    if (c->state == C_BRIDGE) {
        int fd, avail = 0;
        if (uv_fileno((uv_handle_t *)&c->local, &fd) == 0 && ioctl(fd, FIONREAD, &avail) == 0 &&
            avail > 0) {
            c->backlog = (uint64_t)avail;
        }
        c->backlog += uv_stream_get_write_queue_size((uv_stream_t *)r);
    }
}

static void probe_answer(struct pg_conn *c)
{
    const uint8_t *in = c->hello;
    if (memcmp(in, "JNPA", 4) == 0 && in[4] == PG_VERSION) {
        c->res.state = JINN_PROBE_OK;
        c->res.has_state = (in[6] & JINN_PG_HAS_STATE) != 0;
        c->res.knows_sender = (in[6] & JINN_PG_KNOWS_SENDER) != 0;
        c->res.other_cluster = (in[6] & JINN_PG_OTHER_CLUSTER) != 0;
        c->res.id = get_u64(in + 8);
        c->res.cluster_id = get_u64(in + 16);
    }
    conn_close(c, RAFT_NOCONNECTION);
}

/* Dialler: libraft's handshake and jinn's preamble in one write. */
static void send_hello(struct pg_conn *c)
{
    static const char probe_who[8] = "probe";
    uint8_t out[PG_HELLO_MAX];
    const char *who = c->kind == K_PROBE ? probe_who : c->pg->raft_address;
    size_t wlen = c->kind == K_PROBE ? sizeof probe_who : strlen(who) + 1;
    size_t padded = (wlen + 7) / 8 * 8;
    uint8_t *o = out;
    memset(out, 0, sizeof out);
    put_u64(o, 1);
    put_u64(o + 8, c->kind == K_PROBE ? c->probe_self : c->pg->raft_self);
    put_u64(o + 16, padded);
    memcpy(o + 24, who, wlen);
    o += 24 + padded;
    memcpy(o, "JNPG", 4);
    o[4] = PG_VERSION;
    o[5] = c->kind == K_PROBE ? PG_FLAG_PROBE : 0;
    put_u64(o + 8, c->kind == K_PROBE ? c->probe_cluster : c->pg->cluster_id);
    put_u64(o + 16, c->kind == K_PROBE ? c->probe_self : c->pg->self_id);
    put_u64(o + 24, c->kind == K_PROBE ? 0 : c->id);
    c->state = C_HELLO;
    c->hello_want = JINN_PG_SIZE;
    c->hello_got = 0;
    if (send_net(c, out, 24 + padded + JINN_PG_PREAMBLE) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
    }
}

/* An admitted inbound connection's one timer: the deadline of the message
 * being received, else the idle timeout. */
static void arm_inbound(struct pg_conn *c)
{
    uint64_t now = uv_now(c->loop), ms;
    if (c->state != C_BRIDGE) {
        return;
    }
    if (c->pre_got > 0 || c->payload_left > 0) {
        ms = c->msg_deadline > now ? c->msg_deadline - now : 1;
    } else {
        ms = c->pg->idle_ms != 0 ? c->pg->idle_ms : JINN_RAFT_IDLE_MS;
    }
    uv_timer_start(&c->timer, timer_fired, ms, 0);
}

/* Plaintext from the peer (after TLS, when on). */
static void on_plain(struct pg_conn *c, const uint8_t *p, size_t n)
{
    while (n > 0 && c->state != C_DEAD) {
        if (c->state == C_HELLO) {
            size_t take = c->hello_want - c->hello_got;
            take = n < take ? n : take;
            memcpy(c->hello + c->hello_got, p, take);
            c->hello_got += take;
            p += take;
            n -= take;
            if (c->hello_got < c->hello_want) {
                return;
            }
            if (c->kind != K_IN) {
                if (n > 0) {
                    refuse_log(c, "sent more than its answer");
                    conn_close(c, RAFT_NOCONNECTION);
                    return;
                }
                if (c->kind == K_OUT) {
                    outbound_answer(c);
                } else {
                    probe_answer(c);
                }
                return;
            }
            if (!c->head_done) {
                uint64_t alen = get_u64(c->hello + 16);
                c->id = get_u64(c->hello + 8);
                if (get_u64(c->hello) != 1 || c->id == 0 || alen == 0 ||
                    alen > JINN_RAFT_ADDRESS_MAX) {
                    refuse_log(c,
                               "bad libraft handshake (protocol %llu, id %llu, address "
                               "length %llu)",
                               (unsigned long long)get_u64(c->hello), (unsigned long long)c->id,
                               (unsigned long long)alen);
                    conn_close(c, RAFT_NOCONNECTION);
                    return;
                }
                c->head_done = true;
                c->hello_want = 24 + (size_t)alen + JINN_PG_PREAMBLE;
                continue;
            }
            inbound_hello(c);
            continue;
        }
        if (c->state == C_BRIDGE && c->kind == K_IN) {
            parse(c, p, n);
            arm_inbound(c);
            return;
        }
        if (c->state == C_BRIDGE) {
            refuse_log(c, "sent bytes after its answer");
            conn_close(c, RAFT_NOCONNECTION);
        }
        return;
    }
}

/* ---- TLS and the network side --------------------------------------------- */

static void tls_step(struct pg_conn *c)
{
    int r, e;
    long v;
    const char *why;
    char buf[256];
    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (flush_tls(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (r == 1) {
        if (c->kind == K_OUT && !cert_matches(c)) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
        if (c->kind == K_IN) {
            c->state = C_HELLO;
            c->hello_want = 24;
        } else {
            send_hello(c);
        }
        return;
    }
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        return;
    }
    v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK) {
        why = X509_verify_cert_error_string(v);
    } else if (ERR_peek_error() != 0) {
        ERR_error_string_n(ERR_peek_error(), buf, sizeof buf);
        why = buf;
    } else {
        why = "the peer closed the connection";
    }
    refuse_log(c, "TLS handshake failed: %s", why);
    ERR_clear_error();
    conn_close(c, RAFT_NOCONNECTION);
}

/* The session over memory BIOs is src/tls.c's, as for HTTP. */
static int tls_start(struct pg_conn *c)
{
    struct jinn_tls t;
    if (jinn_tls_open(&t, g_tls, c->kind == K_IN) != 0) {
        return -1;
    }
    c->ssl = t.ssl;
    c->rbio = t.rbio;
    c->wbio = t.wbio;
    c->state = C_TLS;
    return 0;
}

static void any_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct pg_conn *c = h->data;
    (void)suggested;
    buf->base = c->rbuf;
    buf->len = sizeof c->rbuf;
}

static void net_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct pg_conn *c = s->data;
    char plain[16384];
    if (nread == 0 || c->state == C_DEAD) {
        return;
    }
    if (nread < 0) {
        if (c->state != C_BRIDGE && c->kind == K_IN && c->pg != NULL) {
            refuse_log(c, "closed before the end of its hello (%s)", uv_strerror((int)nread));
        }
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->kind == K_IN && !c->got_byte && c->state != C_BRIDGE) {
        /* It has begun (JINN_PG_FIRST_BYTE_MS): the hello as a whole has
         * JINN_PG_HANDSHAKE_MS from the accept. */
        uint64_t spent = uv_now(c->loop) - c->born;
        c->got_byte = true;
        uv_timer_start(&c->timer, timer_fired,
                       spent < JINN_PG_HANDSHAKE_MS ? JINN_PG_HANDSHAKE_MS - spent : 1, 0);
    }
    if (c->ssl == NULL) {
        on_plain(c, (const uint8_t *)buf->base, (size_t)nread);
        if (flush_stage(c) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
        }
        return;
    }
    {
        struct jinn_tls t = {c->ssl, c->rbio, c->wbio, false};
        if (jinn_tls_feed(&t, buf->base, (size_t)nread) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
    }
    if (c->state == C_TLS) {
        tls_step(c);
        if (c->state == C_TLS || c->state == C_DEAD) {
            return;
        }
    }
    while (c->state != C_DEAD && c->state != C_DRAIN) {
        int k, e;
        ERR_clear_error();
        k = SSL_read(c->ssl, plain, sizeof plain);
        if (k > 0) {
            on_plain(c, (const uint8_t *)plain, (size_t)k);
            continue;
        }
        e = SSL_get_error(c->ssl, k);
        if (e == SSL_ERROR_WANT_READ) {
            break;
        }
        if (e != SSL_ERROR_ZERO_RETURN) {
            refuse_log(c, "TLS error after the handshake");
        }
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->state != C_DEAD && (flush_stage(c) != 0 || flush_tls(c) != 0)) {
        conn_close(c, RAFT_NOCONNECTION);
    }
}

static void timer_fired(uv_timer_t *t)
{
    struct pg_conn *c = t->data;
    if (c->state == C_BRIDGE && c->kind == K_IN && c->net_paused) {
        /* We stopped reading (libraft is behind): the peer is not late,
         * and the time does not count against its message. */
        c->msg_deadline += 1000;
        uv_timer_start(&c->timer, timer_fired, 1000, 0);
        return;
    }
    if (c->state == C_BRIDGE && c->kind == K_IN && c->pre_got == 0 && c->payload_left == 0) {
        /* Not a refusal: libraft redials when it has something to send. */
        jinn_debug("raft connection from %s (node %llu): idle, closed", c->ip,
                   (unsigned long long)c->id);
    } else if (c->state == C_BRIDGE) {
        refuse_log(c,
                   "node %llu: a message not complete in %llu ms (%us, then %llu bytes/s for "
                   "its %llu bytes of payload)",
                   (unsigned long long)c->id,
                   (unsigned long long)(uv_now(c->loop) - c->msg_start),
                   JINN_RAFT_STALL_MS / 1000, (unsigned long long)JINN_RAFT_MIN_RATE,
                   (unsigned long long)c->msg_declared);
    } else if (c->kind == K_IN && !(c->pg != NULL && c->pg->closing)) {
        if (c->got_byte) {
            refuse_log(c, "hello not complete within %ums", JINN_PG_HANDSHAKE_MS);
        } else {
            refuse_log(c, "no byte within %ums", JINN_PG_FIRST_BYTE_MS);
        }
    } else {
        jinn_debug("raft connection to %s: no answer within %ums", c->ip, JINN_PG_HANDSHAKE_MS);
    }
    conn_close(c, RAFT_NOCONNECTION);
}

/* ---- accepting ------------------------------------------------------------ */

static void peer_ip(struct pg_conn *c)
{
    struct sockaddr_storage sa;
    int len = sizeof sa;
    char ip[48];
    if (uv_tcp_getpeername(&c->net, (struct sockaddr *)&sa, &len) == 0 &&
        sa.ss_family == AF_INET && uv_ip4_name((struct sockaddr_in *)&sa, ip, sizeof ip) == 0) {
        snprintf(c->ip, sizeof c->ip, "%s", ip);
    }
}

static void on_accept(uv_stream_t *server, int status)
{
    struct jinn_peerguard *pg = server->data;
    struct pg_conn *c;
    if (status != 0 || pg->closing) {
        return;
    }
    c = conn_new(pg, pg->loop, K_IN);
    if (c == NULL) {
        return;
    }
    if (uv_accept(server, (uv_stream_t *)&c->net) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    peer_ip(c);
    uv_tcp_nodelay(&c->net, 1);
    {
        /* Connections still in their hello are unauthenticated: they get
         * their own slots, a few per address, so a flood of idle dials
         * cannot take the slots of peers (admitted ones are counted apart,
         * in bridge_start). */
        unsigned pending = 0, same_ip = 0;
        struct pg_conn *oldest = NULL, *oldest_same = NULL;
        /* Dials from the host of a configured peer have places of their
         * own: a flood from elsewhere cannot evict them. */
        c->peer_host = pg->peer_host != NULL && pg->peer_host(pg->data, c->ip);
        for (struct pg_conn *o = pg->conns; o != NULL; o = o->next) {
            if (o != c && o->kind == K_IN && o->state != C_BRIDGE && o->state != C_DEAD &&
                o->peer_host == c->peer_host) {
                bool same = strcmp(o->ip, c->ip) == 0;
                pending++;
                same_ip += same;
                if (oldest == NULL || o->born <= oldest->born) {
                    oldest = o;
                }
                if (same && (oldest_same == NULL || o->born <= oldest_same->born)) {
                    oldest_same = o;
                }
            }
        }
        /* Full: the oldest gives way (from this address when this address
         * is at its cap), not the newcomer. A peer's hello takes a few ms;
         * to keep one out, a flood has to open JINN_RAFT_MAX_PENDING
         * connections within that time, and each lives at most
         * JINN_PG_FIRST_BYTE_MS without a byte. */
        if (same_ip >= JINN_RAFT_MAX_PENDING_PER_IP || pending >= JINN_RAFT_MAX_PENDING) {
            struct pg_conn *victim =
                same_ip >= JINN_RAFT_MAX_PENDING_PER_IP ? oldest_same : oldest;
            refuse_log(victim,
                       "%u raft connections in their hello (%u from this address%s): the "
                       "oldest gives way",
                       pending, same_ip, c->peer_host ? ", a peer's host" : "");
            conn_close(victim, RAFT_NOCONNECTION);
        }
    }
    uv_timer_start(&c->timer, timer_fired, JINN_PG_FIRST_BYTE_MS, 0);
    if (g_tls != NULL) {
        if (tls_start(c) != 0) {
            conn_close(c, RAFT_NOCONNECTION);
            return;
        }
    } else {
        c->state = C_HELLO;
        c->hello_want = 24;
    }
    if (uv_read_start((uv_stream_t *)&c->net, any_alloc, net_read) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
    }
}

/* ---- dialling ------------------------------------------------------------- */

static void on_connected(uv_connect_t *req, int status)
{
    struct pg_conn *c = req->data;
    if (c->state == C_DEAD) {
        return;
    }
    if (status != 0) {
        jinn_debug("raft connection to %s: %s", c->ip, uv_strerror(status));
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    /* Raft's small messages (results, heartbeats) are not held back for
     * Nagle; the bridge writes whole reads at once anyway. */
    uv_tcp_nodelay(&c->net, 1);
    if (uv_read_start((uv_stream_t *)&c->net, any_alloc, net_read) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    if (g_tls == NULL) {
        send_hello(c);
        return;
    }
    if (tls_start(c) != 0) {
        conn_close(c, RAFT_NOCONNECTION);
        return;
    }
    tls_step(c); /* the ClientHello */
}

static int parse_addr(const char *address, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(address, ':');
    size_t hlen = colon != NULL ? (size_t)(colon - address) : 0;
    if (colon == NULL || hlen == 0 || hlen >= sizeof host) {
        return -1;
    }
    memcpy(host, address, hlen);
    host[hlen] = '\0';
    if (!jinn_peerguard_address_ok(address)) {
        return -1;
    }
    return uv_ip4_addr(host, (int)strtol(colon + 1, NULL, 10), sa) != 0 ? -1 : 0;
}

/* Starts dialling c; 0 or -1 (c is then closed, no callback made). */
static int dial(struct pg_conn *c, const char *address)
{
    struct sockaddr_in sa;
    snprintf(c->ip, sizeof c->ip, "%s", address);
    c->creq.data = c;
    uv_timer_start(&c->timer, timer_fired, JINN_PG_HANDSHAKE_MS, 0);
    if (parse_addr(address, &sa) != 0 ||
        uv_tcp_connect(&c->creq, &c->net, (const struct sockaddr *)&sa, on_connected) != 0) {
        c->cb = NULL;
        conn_close(c, RAFT_NOCONNECTION);
        return -1;
    }
    return 0;
}

/* ---- the transport interface ---------------------------------------------- */

static int t_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct jinn_peerguard *pg = t->impl;
    pg->raft_self = id;
    if (strlen(address) + 1 > sizeof pg->raft_address) {
        return RAFT_NAMETOOLONG;
    }
    snprintf(pg->raft_address, sizeof pg->raft_address, "%s", address);
    return 0;
}

static int pg_listen(struct jinn_peerguard *pg)
{
    struct sockaddr_in sa;
    if (parse_addr(pg->bind, &sa) != 0) {
        return -1;
    }
    uv_tcp_init(pg->loop, &pg->listener);
    pg->listener.data = pg;
    pg->listening = true;
    pg->open++;
    if (uv_tcp_bind(&pg->listener, (const struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&pg->listener, 128, on_accept) != 0) {
        return -1;
    }
    return 0;
}

static int t_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct jinn_peerguard *pg = t->impl;
    pg->accept_cb = cb;
    if (pg_listen(pg) != 0) {
        jinn_error("cluster_listen %s: cannot listen", pg->bind);
        return RAFT_IOERR;
    }
    return 0;
}

static int t_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb)
{
    struct jinn_peerguard *pg = t->impl;
    struct pg_conn *c;
    if (!jinn_peerguard_address_ok(address) ||
        (pg->member != NULL && !pg->member(pg->data, id, address, false))) {
        /* libraft keeps its client and retries on a timer: a tick, no dial. */
        return RAFT_NOCONNECTION;
    }
    c = conn_new(pg, pg->loop, K_OUT);
    if (c == NULL) {
        return RAFT_NOMEM;
    }
    c->id = id;
    snprintf(c->address, sizeof c->address, "%s", address);
    c->req = req;
    c->cb = cb;
    return dial(c, address) != 0 ? RAFT_NOCONNECTION : 0;
}

static void listener_closed(uv_handle_t *h)
{
    struct jinn_peerguard *pg = h->data;
    pg->open--;
    if (pg->closing && pg->open == 0 && pg->close_cb != NULL) {
        raft_uv_transport_close_cb cb = pg->close_cb;
        pg->close_cb = NULL;
        cb(&pg->transport);
    }
}

static void pg_close_all(struct jinn_peerguard *pg)
{
    pg->closing = true;
    if (pg->listening) {
        pg->listening = false;
        uv_close((uv_handle_t *)&pg->listener, listener_closed);
    }
    while (pg->conns != NULL) {
        conn_close(pg->conns, RAFT_CANCELED);
    }
}

static void t_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct jinn_peerguard *pg = t->impl;
    pg->close_cb = cb;
    pg_close_all(pg);
    if (pg->open == 0 && pg->close_cb != NULL) {
        pg->close_cb = NULL;
        cb(t);
    }
}

void jinn_peerguard_init(struct jinn_peerguard *pg, uv_loop_t *loop, const char *bind,
                         uint64_t self_id, uint64_t cluster_id)
{
    memset(pg, 0, sizeof *pg);
    pg->loop = loop;
    snprintf(pg->bind, sizeof pg->bind, "%s", bind);
    pg->self_id = self_id;
    pg->cluster_id = cluster_id;
    pg->max_entries = JINN_RAFT_MAX_ENTRIES;
    pg->transport.impl = pg;
    pg->transport.init = t_init;
    pg->transport.listen = t_listen;
    pg->transport.connect = t_connect;
    pg->transport.close = t_close;
}

uint64_t jinn_peerguard_cluster_of(const struct jinn_peerguard *pg, uint64_t id)
{
    const struct pg_conn *best = NULL;
    for (const struct pg_conn *c = pg->conns; c != NULL; c = c->next) {
        if (c->kind == K_IN && c->state == C_BRIDGE && c->id == id &&
            (best == NULL || c->last_active >= best->last_active)) {
            best = c;
        }
    }
    return best != NULL ? best->cluster : 0;
}

/* ---- probes --------------------------------------------------------------- */

int jinn_peerguard_probe(uv_loop_t *loop, const char *address, uint64_t self_id,
                         uint64_t cluster_id, uint64_t timeout_ms, jinn_probe_cb cb, void *data)
{
    struct sockaddr_in sa;
    struct pg_conn *c;
    if (parse_addr(address, &sa) != 0) {
        return -1;
    }
    c = conn_new(NULL, loop, K_PROBE);
    if (c == NULL) {
        return -1;
    }
    c->probe_cb = cb;
    c->probe_data = data;
    c->probe_self = self_id;
    c->probe_cluster = cluster_id;
    c->res.state = JINN_PROBE_UNREACHABLE;
    snprintf(c->ip, sizeof c->ip, "%s", address);
    c->creq.data = c;
    uv_timer_start(&c->timer, timer_fired, timeout_ms, 0);
    if (uv_tcp_connect(&c->creq, &c->net, (const struct sockaddr *)&sa, on_connected) != 0) {
        conn_close(c, RAFT_NOCONNECTION); /* cb runs from the close callbacks */
    }
    return 0;
}

int jinn_probe_server_start(struct jinn_probe_server *srv, uv_loop_t *loop,
                            const char *listen_address, uint64_t self_id)
{
    memset(srv, 0, sizeof *srv);
    jinn_peerguard_init(&srv->pg, loop, listen_address, self_id, 0);
    srv->pg.probe_only = true;
    srv->started = true;
    if (pg_listen(&srv->pg) != 0) {
        jinn_probe_server_stop(srv);
        return -1;
    }
    return 0;
}

void jinn_probe_server_stop(struct jinn_probe_server *srv)
{
    if (!srv->started) {
        return;
    }
    srv->started = false;
    pg_close_all(&srv->pg);
    while (srv->pg.open > 0) {
        uv_run(srv->pg.loop, UV_RUN_ONCE);
    }
}

uint64_t jinn_peerguard_last_active(const struct jinn_peerguard *pg, uint64_t id)
{
    uint64_t at = 0;
    for (const struct pg_conn *c = pg->conns; c != NULL; c = c->next) {
        if (c->kind == K_IN && c->state == C_BRIDGE && c->id == id && c->last_active > at) {
            at = c->last_active;
        }
    }
    return at;
}
