/* stream.c - see stream.h.
 *
 * One connection at a time (struct conn). Its life: resolve (host names
 * only) -> TCP connect -> TLS handshake (wss://) -> the upgrade request ->
 * the 101 (checked: status, Upgrade, Sec-WebSocket-Accept) -> WebSocket
 * messages fed to ws.c, whose callbacks land in on_message. Any failure
 * closes the connection; a 50 ms tick then starts the next attempt on the
 * next URL (immediately after a connection that had streamed, after a
 * backoff once every URL failed in a row), watches the connection's
 * silence, and recomputes the replica's state. A connection is freed only
 * when its handles have closed, so a callback that closes it (inside
 * jinn_ws_feed) never frees memory ws.c is still using. */
#include "replica/stream.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "httpmsg.h"
#include "log.h"
#include "net/ws.h"
#include "node.h"
#include "tls.h"

#define TICK_MS 50
/* A stream that lasted this long worked: its end is not a failure. */
#define STABLE_MS 1000
#define READ_BUFFER (64u * 1024)
/* What this replica may have waiting to go to its node (libuv's write
 * queue, past the kernel's buffer, plus the pongs wslay holds). It sends
 * only pongs and a close, so more means a node that pings and never reads
 * (A3 m4): without this the pongs piled up without limit. */
#define OUT_MAX (64u * 1024)

/* ---- pure parts (unit tested) ----------------------------------------- */

int jinn_stream_parse_url(const char *url, struct jinn_stream_url *out)
{
    const char *p, *end, *colon;
    size_t host_len;
    memset(out, 0, sizeof *out);
    if (strncmp(url, "ws://", 5) == 0) {
        p = url + 5;
        out->port = 80;
    } else if (strncmp(url, "wss://", 6) == 0) {
        p = url + 6;
        out->tls = true;
        out->port = 443;
    } else {
        return -1;
    }
    end = strchr(p, '/');
    if (end == NULL) {
        end = p + strlen(p);
    } else {
        size_t n = strlen(end);
        while (n > 0 && end[n - 1] == '/') {
            n--; /* "/" alone, or a prefix's trailing slash */
        }
        if (n >= sizeof out->path) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)end[i];
            if (ch <= 0x20 || ch >= 0x7f || ch == '?' || ch == '#' || ch == '%') {
                return -1; /* nothing that would change the query or the line */
            }
        }
        memcpy(out->path, end, n);
        out->path[n] = '\0';
    }
    colon = memchr(p, ':', (size_t)(end - p));
    host_len = (size_t)((colon != NULL ? colon : end) - p);
    if (host_len == 0 || host_len >= sizeof out->host) {
        return -1;
    }
    for (size_t i = 0; i < host_len; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '-')) {
            return -1; /* no userinfo, no IPv6 literal, nothing for a header */
        }
    }
    memcpy(out->host, p, host_len);
    out->host[host_len] = '\0';
    if (colon != NULL) {
        long port = 0;
        const char *q = colon + 1;
        if (q == end || end - q > 5) {
            return -1;
        }
        for (; q < end; q++) {
            if (*q < '0' || *q > '9') {
                return -1;
            }
            port = port * 10 + (*q - '0');
        }
        if (port <= 0 || port > 65535) {
            return -1;
        }
        out->port = (int)port;
    }
    snprintf(out->hostport, sizeof out->hostport, "%s:%d", out->host, out->port);
    return 0;
}

static int parse_hex16(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || strlen(s) != 16) {
        return -1;
    }
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9') {
            d = (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            d = (unsigned)(c - 'a' + 10);
        } else {
            return -1;
        }
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static int copy_str(json_t *o, const char *key, char *dst, size_t cap, bool required)
{
    json_t *v = json_object_get(o, key);
    size_t len;
    if (v == NULL || json_is_null(v)) {
        dst[0] = '\0';
        return required ? -1 : 0;
    }
    if (!json_is_string(v)) {
        return -1;
    }
    len = json_string_length(v);
    if (len >= cap || memchr(json_string_value(v), '\0', len) != NULL) {
        return -1;
    }
    memcpy(dst, json_string_value(v), len + 1);
    return 0;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static json_t *load_type(const char *json, size_t len, const char *type)
{
    json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *t = json_object_get(o, "type");
    if (!json_is_object(o) || !json_is_string(t) || strcmp(json_string_value(t), type) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int jinn_stream_parse_hello(const char *json, size_t len, uint64_t *cluster, char node[65])
{
    json_t *o = load_type(json, len, "hello");
    uint64_t v = 0;
    int rv = -1;
    if (o == NULL) {
        return -1;
    }
    if (get_u64(o, "v", &v) == 0 && v == 1 &&
        parse_hex16(json_string_value(json_object_get(o, "cluster")), cluster) == 0 &&
        copy_str(o, "node", node, 65, true) == 0 && node[0] != '\0') {
        rv = 0; /* a node always has a name (status and logs name it) */
    }
    json_decref(o);
    return rv;
}

int jinn_stream_parse_heartbeat(const char *json, size_t len, struct jinn_stream_heartbeat *hb)
{
    json_t *o = load_type(json, len, "heartbeat");
    json_t *lid, *q, *lc;
    int rv = -1;
    memset(hb, 0, sizeof *hb);
    if (o == NULL) {
        return -1;
    }
    lid = json_object_get(o, "leader_id");
    q = json_object_get(o, "quorum");
    lc = json_object_get(o, "leader_contact_ms");
    if (copy_str(o, "node", hb->node, sizeof hb->node, true) != 0 ||
        copy_str(o, "leader_name", hb->leader_name, sizeof hb->leader_name, false) != 0 ||
        copy_str(o, "leader_api", hb->leader_api, sizeof hb->leader_api, false) != 0 ||
        get_u64(o, "term", &hb->term) != 0 || get_u64(o, "commit", &hb->commit) != 0 ||
        get_u64(o, "position", &hb->position) != 0 ||
        get_u64(o, "time_ms", &hb->time_ms) != 0 || !json_is_boolean(q) ||
        !json_is_integer(lc) || json_integer_value(lc) < -1) {
        goto out;
    }
    if (lid != NULL && !json_is_null(lid)) {
        if (parse_hex16(json_string_value(lid), &hb->leader_id) != 0) {
            goto out;
        }
        hb->has_leader = true;
    }
    hb->quorum = json_is_true(q);
    hb->leader_contact_ms = (int64_t)json_integer_value(lc);
    if (json_object_get(o, "applied") != NULL && get_u64(o, "applied", &hb->applied) != 0) {
        goto out; /* optional (older nodes), but a number when present */
    }
    if (json_object_get(o, "election_timeout_ms") != NULL &&
        get_u64(o, "election_timeout_ms", &hb->election_timeout_ms) != 0) {
        goto out; /* the same */
    }
    if (hb->election_timeout_ms > JINN_STREAM_ELECTION_TIMEOUT_MAX) {
        /* a lie would keep a (lying) term for that long: clamped */
        hb->election_timeout_ms = JINN_STREAM_ELECTION_TIMEOUT_MAX;
    }
    rv = 0;
out:
    json_decref(o);
    return rv;
}

bool jinn_stream_primary(const struct jinn_stream_heartbeat *hb, uint64_t stale_after_ms)
{
    return hb->quorum && hb->has_leader && hb->leader_contact_ms >= 0 &&
           (uint64_t)hb->leader_contact_ms <= stale_after_ms;
}

int jinn_stream_decode_batch(const uint8_t *msg, size_t len, jinn_stream_record_fn fn,
                             void *data)
{
    struct jinn_rbuf r;
    uint32_t count;
    /* First the framing of the whole batch, so that a malformed one applies
     * nothing; then the records. */
    for (int pass = 0; pass < 2; pass++) {
        jinn_rbuf_init(&r, msg, len);
        if (jinn_rbuf_get_u8(&r) != 'E') {
            return JINN_ECORRUPT;
        }
        count = jinn_rbuf_get_u32(&r);
        if (r.failed || count == 0) {
            return JINN_ECORRUPT;
        }
        for (uint32_t i = 0; i < count; i++) {
            uint64_t index = jinn_rbuf_get_u64(&r);
            uint64_t prev = jinn_rbuf_get_u64(&r);
            uint32_t n = jinn_rbuf_get_u32(&r);
            const uint8_t *bytes = jinn_rbuf_get_raw(&r, n);
            if (r.failed || index <= prev || n == 0) {
                return JINN_ECORRUPT;
            }
            if (pass == 1) {
                int rv = fn(data, index, prev, bytes, n);
                if (rv != 0) {
                    return rv;
                }
            }
        }
        if (r.left != 0) {
            return JINN_ECORRUPT;
        }
    }
    return 0;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

int jinn_stream_build_request(struct jinn_wbuf *out, const struct jinn_stream_url *url,
                              uint64_t position, uint64_t cluster, const char *name,
                              const char *token, const char key[25])
{
    return jinn_stream_build_request_at(out, url, position, NULL, cluster, name, token, key);
}

int jinn_stream_build_request_at(struct jinn_wbuf *out, const struct jinn_stream_url *url,
                                 uint64_t position, const uint64_t *at, uint64_t cluster,
                                 const char *name, const char *token, const char key[25])
{
    size_t name_len = name != NULL ? strlen(name) : 0;
    if (name_len == 0 || name_len > 64) {
        return JINN_EINVAL;
    }
    if (token != NULL) {
        if (*token == '\0' || strlen(token) > 4096) {
            return JINN_EINVAL;
        }
        for (const char *t = token; *t != '\0'; t++) {
            if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f) {
                return JINN_EINVAL; /* nothing that could end or split a header */
            }
        }
    }
    jinn_wbuf_printf(out, "GET %s/v1/stream?from=%" PRIu64, url->path, position);
    if (cluster != 0) {
        jinn_wbuf_printf(out, "&cluster=%016" PRIx64, cluster);
    }
    if (at != NULL) {
        jinn_wbuf_printf(out, "&at=%" PRIu64, *at);
    }
    jinn_wbuf_printf(out, "&name=");
    for (size_t i = 0; i < name_len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (unreserved(c)) {
            jinn_wbuf_put_u8(out, c);
        } else {
            jinn_wbuf_printf(out, "%%%02X", c);
        }
    }
    jinn_wbuf_printf(out,
                     " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n",
                     url->hostport, key);
    if (token != NULL) {
        jinn_wbuf_printf(out, "Authorization: Bearer %s\r\n", token);
    }
    jinn_wbuf_printf(out, "\r\n");
    return out->failed ? JINN_ENOMEM : 0;
}

/* ---- the connection ----------------------------------------------------- */

enum phase { P_RESOLVE, P_CONNECT, P_TLS, P_UPGRADE, P_OPEN };

struct conn {
    struct jinn_replica_stream *s;
    unsigned url;
    enum phase phase;
    bool closing;
    int pending; /* handles and requests not yet called back */
    bool resolving;
    uv_getaddrinfo_t gai;
    bool tcp_on;
    uv_tcp_t tcp;
    uv_connect_t connect;
    bool tls_on;
    struct jinn_tls tls;
    char key[25];
    char *rbuf;  /* socket reads (ciphertext with TLS) */
    char *plain; /* plaintext out of TLS */
    char *head;  /* the 101's head */
    size_t head_len;
    struct jinn_ws *ws;
    bool hello;
    char source[65];
    bool have_hb;
    uint64_t hb_position;
    uint64_t opened_at, last_msg;
    /* Primary heartbeats on this connection: the last one's receipt (the
     * hello's before any), and whether any came. A node that lost the
     * cluster keeps sending heartbeats, only not primary ones: after
     * replica_stale_after of those the replica tries the next URL. */
    uint64_t primary_at;
    bool primary_seen;
    bool left_no_primary; /* closed for that reason */
    /* A snapshot decoding on a worker thread (A3 m5): reads are stopped,
     * and what had already been read after it waits here, in order, until
     * it is swapped in (or refused): whole messages (held_msgs), then
     * plaintext not yet fed to ws.c (held). Bounded by what one read can
     * bring (HELD_MAX). */
    bool installing;
    struct held_msg *held_msgs, **held_tail;
    char *held;
    size_t held_len;
    size_t held_bytes;     /* messages and plaintext */
    const uint8_t *ws_msg; /* the message ws.c is delivering (may be taken) */
};

/* One message read after a snapshot being installed. */
struct held_msg {
    struct held_msg *next;
    bool binary;
    size_t len;
    uint8_t data[];
};

/* What may wait behind an install: the rest of one socket read (a
 * READ_BUFFER of ciphertext or plaintext), twice over for framing. */
#define HELD_MAX (4u * READ_BUFFER)

/* A snapshot being decoded off the loop (see on_binary). */
struct install {
    uv_work_t req;
    struct jinn_replica_stream *s; /* counted in s->installs until freed */
    struct conn *c; /* holds a reference (c->pending) until install_done */
    const struct jinn_fsm *fsm;
    uint64_t index;
    uint8_t *msg;        /* the whole 'S' message, taken from ws.c; freed on the worker */
    const uint8_t *snap; /* its snapshot */
    size_t len;
    struct jinn_fsm_restore *rs;
    int rv;
    uint64_t copy_ms, decode_ms;
};

struct jinn_replica_stream {
    uv_loop_t *loop;
    struct jinn_node *node;
    char *urls[JINN_STREAM_MAX_URLS];
    struct jinn_stream_url parsed[JINN_STREAM_MAX_URLS];
    unsigned n_urls;
    char *name, *token;
    uint64_t stale_after_ms;
    uint64_t max_message; /* replica_max_snapshot */
    SSL_CTX *tls;
    uv_timer_t tick;
    bool tick_open;
    struct conn *conn;   /* the current one; NULL while waiting to retry */
    unsigned live_conns; /* allocated, current or closing */
    unsigned next_url;
    unsigned failures; /* attempts in a row that never streamed for STABLE_MS */
    /* Installs started and not yet freed (0 or 1): the stream, not the
     * connection, owns an install. No new connection while one is pending
     * (R5 M1): a connection closed during a decode would reconnect, get
     * a snapshot again and decode it in parallel over the same
     * NAME.db.restore images; and a decoded state not used is freed (its
     * images removed) before the next install can write any. */
    unsigned installs;
    uint64_t retry_at;
    uint64_t started_at;
    bool have_primary;
    uint64_t last_primary;
    uint64_t cluster;
    bool state_set;
    enum jinn_replica_state state;
    char state_source[65];
    bool stopping;
    void (*stop_cb)(void *data);
    void *stop_data;
    uint64_t connects, disconnects, records, snapshots, bytes_received;
    uint64_t rng;
};

static void conn_close(struct conn *c, const char *why);
static void update_state(struct jinn_replica_stream *s);

static void maybe_stopped(struct jinn_replica_stream *s)
{
    if (!s->stopping || s->tick_open || s->live_conns > 0 || s->installs > 0) {
        return;
    }
    void (*cb)(void *) = s->stop_cb;
    void *data = s->stop_data;
    for (unsigned i = 0; i < s->n_urls; i++) {
        jinn_free(s->urls[i]);
    }
    jinn_free(s->name);
    jinn_free(s->token);
    SSL_CTX_free(s->tls);
    jinn_free(s);
    if (cb != NULL) {
        cb(data);
    }
}

static void conn_release(struct conn *c)
{
    struct jinn_replica_stream *s = c->s;
    if (--c->pending > 0) {
        return;
    }
    if (c->ws != NULL) {
        jinn_ws_destroy(c->ws);
    }
    if (c->tls_on) {
        jinn_tls_close(&c->tls);
    }
    while (c->held_msgs != NULL) {
        struct held_msg *m = c->held_msgs;
        c->held_msgs = m->next;
        jinn_free(m);
    }
    jinn_free(c->held);
    jinn_free(c->rbuf);
    jinn_free(c->plain);
    jinn_free(c->head);
    jinn_free(c);
    s->live_conns--;
    maybe_stopped(s);
}

static void on_tcp_closed(uv_handle_t *h)
{
    conn_release(h->data);
}

static uint64_t jitter(struct jinn_replica_stream *s, uint64_t ms)
{
    /* xorshift: spreads the retries of many replicas; not replicated state */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return ms - ms / 5 + s->rng % (ms / 5 * 2 + 1);
}

static void conn_close(struct conn *c, const char *why)
{
    struct jinn_replica_stream *s = c->s;
    uint64_t now = uv_now(s->loop);
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (s->conn == c) {
        s->conn = NULL;
    }
    if (c->hello) {
        /* No leader anywhere: the first round of leaving nodes without
         * one is worth a warning each, then debug lines. */
        bool quiet = c->left_no_primary && !c->primary_seen && s->failures >= s->n_urls;
        s->disconnects++;
        jinn_log(s->stopping ? JINN_LOG_INFO
                 : quiet     ? JINN_LOG_DEBUG
                             : JINN_LOG_WARN,
                 "replica: stream from %s (%s) ended at position %" PRIu64 ": %s", c->source,
                 s->urls[c->url], jinn_node_replica_position(s->node), why);
    }
    if (c->hello && now - c->opened_at >= STABLE_MS &&
        !(c->left_no_primary && !c->primary_seen)) {
        s->failures = 0;
        s->retry_at = now; /* it worked: the next URL, now */
    } else {
        /* Never got going, or ended at once (a node that refuses what the
         * replica holds, over and over): a failure, so that a round of
         * them backs off instead of reconnecting at every tick. */
        unsigned rounds;
        if (!s->stopping && !c->hello) {
            /* The first round of failures is worth a line; then quieter. */
            jinn_log(s->failures < s->n_urls ? JINN_LOG_INFO : JINN_LOG_DEBUG,
                     "replica: %s: %s", s->urls[c->url], why);
        }
        s->failures++;
        rounds = s->failures / s->n_urls;
        if (s->failures % s->n_urls != 0) {
            s->retry_at = now; /* the next URL may answer */
        } else {
            uint64_t ms = JINN_STREAM_BACKOFF_MIN_MS;
            for (unsigned i = 1; i < rounds && ms < JINN_STREAM_BACKOFF_MAX_MS; i++) {
                ms *= 2;
            }
            if (ms > JINN_STREAM_BACKOFF_MAX_MS) {
                ms = JINN_STREAM_BACKOFF_MAX_MS;
            }
            s->retry_at = now + jitter(s, ms);
        }
    }
    if (c->resolving) {
        uv_cancel((uv_req_t *)&c->gai); /* its callback releases */
    }
    if (c->tcp_on) {
        uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
    }
    conn_release(c); /* the connection's own reference */
    if (!s->stopping) {
        update_state(s);
    }
}

/* ---- writes --------------------------------------------------------------- */

struct write_req {
    uv_write_t req;
    struct conn *c;
    char *data;
};

static void on_written(uv_write_t *w, int status)
{
    struct write_req *wr = w->data;
    struct conn *c = wr->c;
    jinn_free(wr->data);
    jinn_free(wr);
    if (status != 0) {
        conn_close(c, "write failed");
    } else if (!c->closing && c->ws != NULL) {
        jinn_ws_flush(c->ws);
    }
    conn_release(c);
}

/* Sends n bytes (taken: data is jinn_malloc'd and freed here). */
static int send_raw(struct conn *c, char *data, size_t n)
{
    struct write_req *wr;
    uv_buf_t b;
    if (c->closing || !c->tcp_on) {
        jinn_free(data);
        return JINN_ESHUTDOWN;
    }
    wr = jinn_malloc(sizeof *wr);
    if (wr == NULL) {
        jinn_free(data);
        return JINN_ENOMEM;
    }
    wr->req.data = wr;
    wr->c = c;
    wr->data = data;
    b = uv_buf_init(data, (unsigned)n);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        jinn_free(data);
        jinn_free(wr);
        return JINN_EIO;
    }
    c->pending++;
    return 0;
}

static int tls_flush(struct conn *c)
{
    size_t len = 0;
    bool oom = false;
    char *data = jinn_tls_take(&c->tls, &len, &oom);
    if (oom) {
        return JINN_ENOMEM;
    }
    if (data == NULL) {
        return 0;
    }
    return send_raw(c, data, len);
}

static int send_bytes(struct conn *c, const void *p, size_t n)
{
    char *copy;
    if (c->tls_on) {
        if (jinn_tls_write(&c->tls, p, n) != 0) {
            return JINN_EIO;
        }
        return tls_flush(c);
    }
    copy = jinn_malloc(n > 0 ? n : 1);
    if (copy == NULL) {
        return JINN_ENOMEM;
    }
    memcpy(copy, p, n);
    return send_raw(c, copy, n);
}

/* ---- messages ------------------------------------------------------------- */

static int apply_record(void *data, uint64_t index, uint64_t prev, const uint8_t *buf,
                        size_t len)
{
    struct conn *c = data;
    struct jinn_replica_stream *s = c->s;
    int rv = jinn_node_replica_apply(s->node, index, prev, buf, len);
    if (rv == 0) {
        s->records++;
    }
    return rv;
}

static void on_heartbeat(struct conn *c, const struct jinn_stream_heartbeat *hb)
{
    struct jinn_replica_stream *s = c->s;
    struct jinn_replica_heartbeat h = {
        .cluster_id = s->cluster,
        .leader_id = hb->leader_id,
        .term = hb->term,
        .commit = hb->commit,
        .position = hb->position,
        .time_ms = hb->time_ms,
        .leader_name = hb->leader_name,
        .leader_api = hb->leader_api,
        .node = hb->node,
        .quorum = hb->quorum,
        .leader_contact_ms = hb->leader_contact_ms,
        .applied = hb->applied,
        .election_timeout_ms = hb->election_timeout_ms,
        .source_url = s->urls[c->url],
    };
    uint64_t now = uv_now(s->loop);
    c->have_hb = true;
    c->hb_position = hb->position;
    if (jinn_stream_primary(hb, s->stale_after_ms)) {
        s->have_primary = true;
        s->last_primary = now;
        c->primary_at = now;
        c->primary_seen = true;
    }
    jinn_node_replica_heartbeat(s->node, &h);
    if (!c->closing && now - c->primary_at > s->stale_after_ms) {
        /* The node streams, but says it has no leader with a quorum (or
         * heard none lately: cut off, or lagging in apply): another listed
         * node may have one. Judged on heartbeats only, so a snapshot that
         * holds them back for minutes is never cut short by this. */
        char why[200];
        if (!hb->quorum || !hb->has_leader) {
            snprintf(
                why, sizeof why,
                "no primary heartbeat for %" PRIu64 " ms (%s has %s): trying the next node",
                now - c->primary_at, c->source, hb->has_leader ? "no quorum" : "no leader");
        } else {
            snprintf(why, sizeof why,
                     "no primary heartbeat for %" PRIu64 " ms (%s heard its leader %" PRId64
                     " ms ago): trying the next node",
                     now - c->primary_at, c->source, hb->leader_contact_ms);
        }
        c->left_no_primary = true;
        conn_close(c, why);
    }
}

static void on_text(struct conn *c, const uint8_t *msg, size_t len)
{
    struct jinn_replica_stream *s = c->s;
    if (len > JINN_STREAM_TEXT_MAX) {
        conn_close(c, "a text message over 64 KiB");
        return;
    }
    if (!c->hello) {
        uint64_t cluster = 0;
        if (jinn_stream_parse_hello((const char *)msg, len, &cluster, c->source) != 0) {
            conn_close(c, "the first message is not a v1 hello");
            return;
        }
        if (s->cluster != 0 && cluster != s->cluster) {
            char why[160];
            snprintf(why, sizeof why,
                     "node %s belongs to cluster %016" PRIx64 ", this replica to %016" PRIx64
                     ": not following it",
                     c->source, cluster, s->cluster);
            jinn_error("replica: %s: %s", s->urls[c->url], why);
            conn_close(c, why);
            return;
        }
        s->cluster = cluster;
        c->hello = true;
        c->primary_at = uv_now(s->loop);
        s->connects++;
        jinn_info("replica: streaming from %s (%s), cluster %016" PRIx64
                  ", from position %" PRIu64,
                  c->source, s->urls[c->url], cluster, jinn_node_replica_position(s->node));
        update_state(s);
        return;
    }
    {
        struct jinn_stream_heartbeat hb;
        if (jinn_stream_parse_heartbeat((const char *)msg, len, &hb) == 0) {
            on_heartbeat(c, &hb);
            update_state(s);
        } else {
            /* A newer server's message this client does not know: ignored,
             * like an unknown JSON field. Never state. */
            jinn_debug("replica: ignored a text message from %s", c->source);
        }
    }
}

/* ---- snapshot installs, off the loop (A3 m5) ------------------------------
 *
 * Decoding a large snapshot (CRC, every section, SQL images written to
 * disk) takes seconds; on the loop it stalled the replica's API. The
 * message is taken from ws.c, which joined it as its frames arrived (no
 * copy; one held behind another install, at most HELD_MAX, is copied),
 * reads stop, and a worker decodes it into a
 * fresh state while the loop serves the old one: reads answer from the old
 * position, with its freshness. The swap (jinn_node_replica_restore_commit)
 * is back on the loop: struct moves and renames. The replaced state is
 * freed on a worker again. Nothing read after the snapshot is applied
 * before it: such messages wait in the connection (held_msgs, held) and
 * are handled after the swap, in order, then reads start again. */

static void dispatch(struct conn *c, bool binary, const uint8_t *msg, size_t len);
static void plain_input(struct conn *c, const char *p, size_t n);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void install_work(uv_work_t *req)
{
    struct install *in = req->data;
    uint64_t t0 = uv_hrtime();
    in->rv = jinn_fsm_restore_prepare(in->fsm, in->snap, in->len, &in->rs);
    jinn_free(in->msg);
    in->msg = NULL;
    in->snap = NULL;
    in->decode_ms = (uv_hrtime() - t0) / 1000000u;
}

static void free_work(uv_work_t *req)
{
    struct install *in = req->data;
    jinn_fsm_restore_free(in->rs);
}

static void install_freed(struct install *in)
{
    struct jinn_replica_stream *s = in->s;
    jinn_free(in);
    s->installs--;
    maybe_stopped(s);
}

static void free_done(uv_work_t *req, int status)
{
    (void)status;
    install_freed(req->data);
}

/* Frees in->rs (the replaced state, or a decoded one not used) on a
 * worker, then in. */
static void install_free(uv_loop_t *loop, struct install *in)
{
    if (in->rs != NULL && uv_queue_work(loop, &in->req, free_work, free_done) == 0) {
        return;
    }
    jinn_fsm_restore_free(in->rs); /* could not queue: here, once */
    install_freed(in);
}

/* Handles what waited behind an install, in order, until everything is
 * handled or another snapshot starts installing; then reads again. */
static void install_resume(struct conn *c)
{
    while (!c->closing && !c->installing) {
        if (c->held_msgs != NULL) {
            struct held_msg *m = c->held_msgs;
            c->held_msgs = m->next;
            if (c->held_msgs == NULL) {
                c->held_tail = &c->held_msgs;
            }
            c->held_bytes -= m->len;
            dispatch(c, m->binary, m->data, m->len);
            jinn_free(m);
        } else if (c->held_len > 0) {
            /* Fed whole; messages after a new snapshot in it are held. */
            char *p = c->held;
            size_t n = c->held_len;
            c->held = NULL;
            c->held_len = 0;
            c->held_bytes -= n;
            plain_input(c, p, n);
            jinn_free(p);
        } else {
            break;
        }
    }
    if (!c->closing && !c->installing &&
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
        conn_close(c, "read_start failed");
    }
}

static void install_done(uv_work_t *req, int status)
{
    struct install *in = req->data;
    struct conn *c = in->c;
    struct jinn_replica_stream *s = c->s;
    uint64_t t0 = uv_hrtime();
    int rv = status != 0 ? JINN_ESHUTDOWN : in->rv;
    if (rv != 0) {
        jinn_error("replica: snapshot at %" PRIu64 " (%zu bytes) refused: %s; the state stays "
                   "at %" PRIu64,
                   in->index, in->len, jinn_error_message(rv),
                   jinn_node_replica_position(s->node));
    } else {
        rv = jinn_node_replica_restore_commit(s->node, in->index, in->rs, in->len);
        if (rv == 0) {
            s->snapshots++;
            jinn_info("replica: snapshot at %" PRIu64 " copied in %" PRIu64
                      " ms, decoded in %" PRIu64 " ms off the loop, swapped in in %" PRIu64
                      " ms",
                      in->index, in->copy_ms, in->decode_ms, (uv_hrtime() - t0) / 1000000u);
        }
    }
    c->installing = false;
    if (!c->closing) {
        if (rv != 0) {
            char why[128];
            snprintf(why, sizeof why, "the snapshot at %" PRIu64 " was refused: %s", in->index,
                     jinn_error_name(rv));
            conn_close(c, why);
        } else {
            c->last_msg = uv_now(s->loop);
            update_state(s);
            install_resume(c);
        }
    }
    install_free(s->loop, in);
    conn_release(c);
}

static int install_start(struct conn *c, uint64_t index, const uint8_t *msg, size_t msg_len)
{
    size_t len = msg_len - 9; /* 'S', u64 index, the snapshot */
    struct jinn_replica_stream *s = c->s;
    struct install *in;
    int rv = jinn_node_replica_restore_check(s->node, index);
    if (rv != 0) {
        return rv;
    }
    in = jinn_calloc(1, sizeof *in);
    if (in == NULL) {
        return JINN_ENOMEM;
    }
    uint64_t t0 = uv_hrtime();
    if (msg == c->ws_msg) {
        /* Taken from ws.c, which joined it as it arrived: no copy. */
        size_t n = 0;
        in->msg = jinn_ws_take_message(c->ws, &n);
        if (in->msg != msg || n != msg_len) {
            jinn_free(in->msg); /* cannot happen: ws.c delivers its buffer */
            jinn_free(in);
            return JINN_EINVAL;
        }
    } else {
        /* One that waited behind another install (held: at most HELD_MAX). */
        in->msg = jinn_malloc(msg_len);
        if (in->msg == NULL) {
            jinn_free(in);
            return JINN_ENOMEM;
        }
        memcpy(in->msg, msg, msg_len);
    }
    in->snap = in->msg + 9;
    in->copy_ms = (uv_hrtime() - t0) / 1000000u;
    in->len = len;
    in->index = index;
    in->s = s;
    in->c = c;
    in->fsm = jinn_node_fsm(s->node);
    in->req.data = in;
    if (uv_queue_work(s->loop, &in->req, install_work, install_done) != 0) {
        jinn_free(in->msg);
        jinn_free(in);
        return JINN_EIO;
    }
    c->pending++; /* released by install_done */
    s->installs++; /* released when in is freed */
    c->installing = true;
    if (c->held_msgs == NULL) {
        c->held_tail = &c->held_msgs; /* else behind those still held */
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    return 0;
}

/* A message or plaintext that arrived behind an install (copied). */
static void hold_msg(struct conn *c, bool binary, const uint8_t *msg, size_t len)
{
    struct held_msg *m;
    if (c->held_bytes + len > HELD_MAX || (m = jinn_malloc(sizeof *m + len)) == NULL) {
        conn_close(c, "too much read behind a snapshot being installed");
        return;
    }
    m->next = NULL;
    m->binary = binary;
    m->len = len;
    memcpy(m->data, msg, len);
    *c->held_tail = m;
    c->held_tail = &m->next;
    c->held_bytes += len;
}

static void hold_plain(struct conn *c, const char *p, size_t n)
{
    char *grown;
    if (c->held_bytes + n > HELD_MAX ||
        (grown = jinn_realloc(c->held, c->held_len + n)) == NULL) {
        conn_close(c, "too much read behind a snapshot being installed");
        return;
    }
    memcpy(grown + c->held_len, p, n);
    c->held = grown;
    c->held_len += n;
    c->held_bytes += n;
}

static void on_binary(struct conn *c, const uint8_t *msg, size_t len)
{
    struct jinn_replica_stream *s = c->s;
    int rv;
    if (!c->hello || len == 0) {
        conn_close(c, "a binary message before the hello");
        return;
    }
    if (msg[0] == 'E') {
        uint64_t before = jinn_node_replica_position(s->node);
        rv = jinn_stream_decode_batch(msg, len, apply_record, c);
        if (rv == JINN_ECORRUPT) {
            conn_close(c, "a malformed batch");
        } else if (rv == JINN_ECONFLICT) {
            char why[128];
            snprintf(why, sizeof why,
                     "a record does not follow position %" PRIu64 ": resuming from it",
                     jinn_node_replica_position(s->node));
            conn_close(c, why);
        } else if (rv != 0) {
            char why[128];
            snprintf(why, sizeof why, "applying after position %" PRIu64 " failed: %s", before,
                     jinn_error_name(rv));
            jinn_error("replica: %s", why);
            conn_close(c, why);
        }
    } else if (msg[0] == 'S') {
        struct jinn_rbuf r;
        uint64_t index;
        jinn_rbuf_init(&r, msg, len);
        (void)jinn_rbuf_get_u8(&r);
        index = jinn_rbuf_get_u64(&r);
        if (r.failed) {
            conn_close(c, "a malformed snapshot message");
            return;
        }
        jinn_info("replica: installing a snapshot at %" PRIu64 " from %s (%zu bytes)", index,
                  c->source, len - 9);
        rv = install_start(c, index, msg, len);
        if (rv != 0) {
            char why[128];
            snprintf(why, sizeof why, "the snapshot at %" PRIu64 " was refused: %s", index,
                     jinn_error_name(rv));
            jinn_error("replica: %s", why);
            conn_close(c, why);
            return;
        }
        return; /* install_done goes on */
    } else {
        conn_close(c, "an unknown binary message");
        return;
    }
    if (!c->closing) {
        update_state(s);
    }
}

static int ws_write(void *data, const void *buf, size_t n)
{
    struct conn *c = data;
    return send_bytes(c, buf, n);
}

static void dispatch(struct conn *c, bool binary, const uint8_t *msg, size_t len)
{
    if (binary) {
        on_binary(c, msg, len);
    } else {
        on_text(c, msg, len);
    }
}

static void ws_message(void *data, bool binary, const uint8_t *msg, size_t len)
{
    struct conn *c = data;
    if (c->closing) {
        return;
    }
    c->last_msg = uv_now(c->s->loop);
    c->s->bytes_received += len;
    if (c->installing) {
        hold_msg(c, binary, msg, len); /* after the snapshot, in order */
        return;
    }
    c->ws_msg = msg;
    if (binary) {
        on_binary(c, msg, len);
    } else {
        on_text(c, msg, len);
    }
    c->ws_msg = NULL;
}

static void ws_closed(void *data, int code, const char *why)
{
    struct conn *c = data;
    struct jinn_replica_stream *s = c->s;
    bool whole = false;
    uint64_t refused = jinn_ws_refused_length(c->ws, &whole);
    char msg[256];
    if (refused != 0) {
        /* The node would send the same snapshot again at once: say what
         * to change, and wait long instead of fetching it every 2 s. (A
         * batch is ~1 MiB: anything this large is a snapshot.) The size
         * is exact when it came in one frame; the node's fragments only
         * say how much was announced when the limit was passed. */
        snprintf(msg, sizeof msg,
                 "this replica refused a snapshot of %s%" PRIu64
                 " bytes over the limit %" PRIu64
                 " (replica_max_snapshot); next attempt in %u s",
                 whole ? "" : "more than ", whole ? refused : s->max_message, s->max_message,
                 JINN_STREAM_TOO_BIG_BACKOFF_MS / 1000);
        jinn_error("replica: %s: %s", s->urls[c->url], msg);
        conn_close(c, msg);
        s->retry_at = uv_now(s->loop) + JINN_STREAM_TOO_BIG_BACKOFF_MS;
        return;
    }
    if (jinn_ws_closed_by_peer(c->ws)) {
        snprintf(msg, sizeof msg, "closed by the node (%d)", code);
    } else {
        snprintf(msg, sizeof msg, "this replica closed the stream (%d %s)", code,
                 why != NULL ? why : "");
    }
    conn_close(c, msg);
}

/* ---- the upgrade ---------------------------------------------------------- */

static bool header_is(const struct jinn_http_msg *m, const char *name, const char *want)
{
    const struct jinn_http_header *h = jinn_http_header_find(m, name);
    size_t n = strlen(want);
    if (h == NULL) {
        return false;
    }
    /* Connection may list several tokens: look for want among them. */
    for (size_t i = 0; i + n <= h->value_len; i++) {
        if (strncasecmp(h->value + i, want, n) == 0) {
            return true;
        }
    }
    return false;
}

/* The head of the reply is in c->head (c->head_len bytes, maybe with the
 * first WebSocket bytes after it). true when more is needed. */
static bool upgrade_reply(struct conn *c)
{
    struct jinn_replica_stream *s = c->s;
    struct jinn_http_limits limits = {JINN_STREAM_HEAD_MAX, 0, UINT64_MAX}; /* body: not read */
    struct jinn_http_msg m;
    const struct jinn_http_header *accept;
    char want[29];
    struct jinn_ws_io io = {ws_write, ws_message, ws_closed, c};
    int rv = jinn_http_parse_head(c->head, c->head_len, true, &limits, &m);
    if (rv == JINN_HTTP_NEED_MORE) {
        if (c->head_len >= JINN_STREAM_HEAD_MAX) {
            conn_close(c, "the reply's head is too large");
        }
        return true;
    }
    if (rv != 0) {
        conn_close(c, "a malformed reply to the upgrade");
        return false;
    }
    if (m.status != 101) {
        char why[400];
        size_t body = c->head_len - m.head_len;
        /* What the node said (its JSON error), printable bytes only. */
        char text[256];
        size_t k = 0;
        for (size_t i = 0; i < body && k + 1 < sizeof text; i++) {
            char ch = c->head[m.head_len + i];
            text[k++] = (ch >= 0x20 && ch < 0x7f) ? ch : ' ';
        }
        text[k] = '\0';
        snprintf(why, sizeof why, "the stream was refused: %d %s", m.status, text);
        if (m.status == 401 || m.status == 403) {
            jinn_error("replica: %s: %s", s->urls[c->url], why);
        } else if (m.status == 409) {
            /* Another cluster, another chain, or a leader deposed without
             * knowing it yet (a replica ahead of it): the other nodes
             * decide which; only when every node refuses is it the first
             * two. */
            jinn_warn("replica: %s: %s; trying the next node", s->urls[c->url], why);
        }
        conn_close(c, why);
        return false;
    }
    jinn_ws_accept_key(c->key, want);
    accept = jinn_http_header_find(&m, "Sec-WebSocket-Accept");
    if (!header_is(&m, "Upgrade", "websocket") || !header_is(&m, "Connection", "upgrade") ||
        accept == NULL || accept->value_len != 28 || memcmp(accept->value, want, 28) != 0) {
        conn_close(c, "the 101 is not a WebSocket upgrade (Upgrade / Accept)");
        return false;
    }
    if (jinn_ws_create(false, s->max_message, &io, &c->ws) != 0) {
        conn_close(c, "out of memory");
        return false;
    }
    c->phase = P_OPEN;
    c->last_msg = uv_now(s->loop);
    if (c->head_len > m.head_len && jinn_ws_feed(c->ws, (const uint8_t *)c->head + m.head_len,
                                                 c->head_len - m.head_len) != 0) {
        conn_close(c, "a WebSocket protocol error");
    }
    jinn_free(c->head);
    c->head = NULL;
    c->head_len = 0;
    return false;
}

/* Plaintext from the node. */
static void plain_input(struct conn *c, const char *p, size_t n)
{
    while (n > 0 && !c->closing) {
        if (c->installing) {
            hold_plain(c, p, n); /* the rest of a read that came with it */
            return;
        }
        if (c->phase == P_OPEN) {
            /* Bytes are life too: a large snapshot holds the heartbeats
             * queued behind it for as long as it takes to arrive. */
            c->last_msg = uv_now(c->s->loop);
            if (jinn_ws_feed(c->ws, (const uint8_t *)p, n) != 0) {
                conn_close(c, "a WebSocket protocol error");
            } else if (!c->closing) {
                jinn_ws_flush(c->ws); /* pongs */
            }
            if (!c->closing &&
                c->tcp.write_queue_size + jinn_ws_control_bytes(c->ws) > OUT_MAX) {
                char why[128];
                snprintf(why, sizeof why,
                         "the node does not read what this replica sends (%zu bytes waiting)",
                         c->tcp.write_queue_size + (size_t)jinn_ws_control_bytes(c->ws));
                conn_close(c, why);
            }
            return;
        }
        {
            size_t room = JINN_STREAM_HEAD_MAX - c->head_len;
            size_t k = n < room ? n : room;
            memcpy(c->head + c->head_len, p, k);
            c->head_len += k;
            p += k;
            n -= k;
            if (upgrade_reply(c) && k == 0) {
                return;
            }
        }
    }
}

static void send_upgrade(struct conn *c)
{
    struct jinn_replica_stream *s = c->s;
    struct jinn_wbuf w;
    int rv;
    if (jinn_ws_client_key(c->key) != 0) {
        conn_close(c, "no random bytes for the WebSocket key");
        return;
    }
    jinn_wbuf_init(&w);
    {
        /* The cluster time at our position names the chain we are on. */
        uint64_t pos = jinn_node_replica_position(s->node);
        uint64_t at = jinn_node_fsm(s->node)->time_ms;
        rv = jinn_stream_build_request_at(&w, &s->parsed[c->url], pos, pos != 0 ? &at : NULL,
                                          s->cluster, s->name, s->token, c->key);
    }
    if (rv == 0) {
        rv = send_bytes(c, w.data, w.len);
    }
    jinn_wbuf_free(&w);
    if (rv != 0) {
        conn_close(c, "the upgrade request could not be sent");
        return;
    }
    c->phase = P_UPGRADE;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    buf->base = c->rbuf;
    buf->len = READ_BUFFER;
}

static void tls_input(struct conn *c, const char *p, size_t n)
{
    if (jinn_tls_feed(&c->tls, p, n) != 0) {
        conn_close(c, "TLS failed");
        return;
    }
    if (!c->tls.established) {
        int r = jinn_tls_handshake(&c->tls);
        if (tls_flush(c) != 0 || r < 0) {
            char why[256], err[200];
            snprintf(why, sizeof why, "TLS handshake failed: %s",
                     jinn_tls_error(err, sizeof err));
            conn_close(c, why);
            return;
        }
        if (r == 0) {
            return;
        }
        send_upgrade(c);
    }
    while (!c->closing) {
        long k = jinn_tls_read(&c->tls, c->plain, READ_BUFFER);
        if (k == 0) {
            return;
        }
        if (k < 0) {
            conn_close(c, "the node closed the TLS session");
            return;
        }
        plain_input(c, c->plain, (size_t)k);
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    (void)buf;
    if (c->closing || nread == 0) {
        return;
    }
    if (nread < 0) {
        conn_close(c, nread == UV_EOF ? "the node closed the connection"
                                      : uv_strerror((int)nread));
        return;
    }
    if (c->tls_on) {
        tls_input(c, c->rbuf, (size_t)nread);
    } else {
        plain_input(c, c->rbuf, (size_t)nread);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct jinn_replica_stream *s = c->s;
    const struct jinn_stream_url *u = &s->parsed[c->url];
    if (c->closing) {
        return;
    }
    if (status != 0) {
        char why[128];
        snprintf(why, sizeof why, "connect: %s", uv_strerror(status));
        conn_close(c, why);
        return;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0) {
        conn_close(c, "read_start failed");
        return;
    }
    if (!u->tls) {
        send_upgrade(c);
        return;
    }
    if (jinn_tls_open(&c->tls, s->tls, false) != 0) {
        conn_close(c, "TLS setup failed");
        return;
    }
    c->tls_on = true;
    {
        struct sockaddr_in sa;
        if (uv_ip4_addr(u->host, u->port, &sa) == 0) {
            if (jinn_tls_expect_ip(&c->tls, u->host) != 0) {
                conn_close(c, "TLS setup failed");
                return;
            }
        } else if (SSL_set1_host(c->tls.ssl, u->host) != 1 ||
                   SSL_set_tlsext_host_name(c->tls.ssl, u->host) != 1) {
            conn_close(c, "TLS setup failed");
            return;
        }
    }
    c->phase = P_TLS;
    if (jinn_tls_handshake(&c->tls) < 0 || tls_flush(c) != 0) {
        conn_close(c, "TLS handshake failed");
    }
}

static void connect_to(struct conn *c, const struct sockaddr *sa)
{
    if (uv_tcp_init(c->s->loop, &c->tcp) != 0) {
        conn_close(c, "tcp init failed");
        return;
    }
    c->tcp.data = c;
    c->tcp_on = true;
    c->pending++;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect.data = c;
    c->phase = P_CONNECT;
    if (uv_tcp_connect(&c->connect, &c->tcp, sa, on_connect) != 0) {
        conn_close(c, "connect failed");
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *c = req->data;
    c->resolving = false;
    if (!c->closing) {
        if (status != 0 || res == NULL) {
            char why[128];
            snprintf(why, sizeof why, "cannot resolve %s: %s", c->s->parsed[c->url].host,
                     uv_strerror(status));
            conn_close(c, why);
        } else {
            connect_to(c, res->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
    conn_release(c);
}

static void attempt(struct jinn_replica_stream *s)
{
    unsigned i = s->next_url;
    const struct jinn_stream_url *u = &s->parsed[i];
    struct conn *c;
    struct sockaddr_in sa;
    s->next_url = (s->next_url + 1) % s->n_urls;
    if (u->tls && s->tls == NULL) {
        /* Cannot happen with a validated config (the daemon builds one). */
        s->failures++;
        s->retry_at = uv_now(s->loop) + JINN_STREAM_BACKOFF_MAX_MS;
        return;
    }
    c = jinn_calloc(1, sizeof *c);
    if (c != NULL) {
        c->rbuf = jinn_malloc(READ_BUFFER);
        c->head = jinn_malloc(JINN_STREAM_HEAD_MAX);
        c->plain = u->tls ? jinn_malloc(READ_BUFFER) : NULL;
    }
    if (c == NULL || c->rbuf == NULL || c->head == NULL || (u->tls && c->plain == NULL)) {
        if (c != NULL) {
            jinn_free(c->rbuf);
            jinn_free(c->head);
            jinn_free(c->plain);
            jinn_free(c);
        }
        s->retry_at = uv_now(s->loop) + JINN_STREAM_BACKOFF_MAX_MS;
        return;
    }
    c->s = s;
    c->url = i;
    c->pending = 1; /* released by conn_close */
    c->opened_at = uv_now(s->loop);
    s->live_conns++;
    s->conn = c;
    if (uv_ip4_addr(u->host, u->port, &sa) == 0) {
        connect_to(c, (const struct sockaddr *)&sa);
        return;
    }
    {
        struct addrinfo hints;
        char port[8];
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof port, "%d", u->port);
        c->gai.data = c;
        c->phase = P_RESOLVE;
        if (uv_getaddrinfo(s->loop, &c->gai, on_resolved, u->host, port, &hints) != 0) {
            conn_close(c, "cannot resolve");
            return;
        }
        c->resolving = true;
        c->pending++;
    }
}

/* ---- state ------------------------------------------------------------------ */

static void update_state(struct jinn_replica_stream *s)
{
    uint64_t now = uv_now(s->loop);
    uint64_t since = s->have_primary ? s->last_primary : s->started_at;
    enum jinn_replica_state st;
    const char *source = NULL;
    struct conn *c = s->conn;
    if (c != NULL && c->hello && !c->closing) {
        source = c->source;
    }
    if (now - since > s->stale_after_ms) {
        st = JINN_REPLICA_READ_ONLY;
    } else if (source == NULL) {
        st = JINN_REPLICA_CONNECTING;
    } else if (c->have_hb && jinn_node_replica_position(s->node) >= c->hb_position) {
        st = JINN_REPLICA_STREAMING;
    } else {
        st = JINN_REPLICA_CATCHING_UP;
    }
    if (s->state_set && st == s->state && strcmp(s->state_source, source ? source : "") == 0) {
        return;
    }
    if (!s->state_set || st != s->state) {
        static const char *const names[] = {"connecting", "catching_up", "streaming",
                                            "read_only"};
        if (st == JINN_REPLICA_READ_ONLY) {
            jinn_warn("replica: no primary heartbeat for %" PRIu64 " ms: read-only",
                      now - since);
        } else {
            jinn_info("replica: %s%s%s", names[st], source ? " from " : "",
                      source ? source : "");
        }
    }
    s->state_set = true;
    s->state = st;
    snprintf(s->state_source, sizeof s->state_source, "%s", source ? source : "");
    jinn_node_replica_set_state(s->node, st, source);
}

static void on_tick(uv_timer_t *t)
{
    struct jinn_replica_stream *s = t->data;
    uint64_t now = uv_now(s->loop);
    struct conn *c = s->conn;
    if (s->stopping) {
        return;
    }
    if (c != NULL && !c->closing) {
        if (c->phase != P_OPEN && now - c->opened_at > JINN_STREAM_CONNECT_MS) {
            conn_close(c, "no upgrade within 3 s");
        } else if (c->phase == P_OPEN && !c->installing &&
                   now - c->last_msg > JINN_STREAM_SILENCE_MS) {
            /* Not while installing: reads are stopped, not the node. */
            char why[96];
            snprintf(why, sizeof why, "silent for %" PRIu64 " ms", now - c->last_msg);
            conn_close(c, why);
        }
    }
    if (s->conn == NULL && s->installs == 0 && now >= s->retry_at) {
        attempt(s);
    }
    update_state(s);
}

void jinn_replica_stream_set_tls(struct jinn_replica_stream *s, SSL_CTX *tls)
{
    /* An open connection's SSL holds its own reference to the old one. */
    if (s == NULL || tls == NULL) {
        return;
    }
    SSL_CTX_up_ref(tls);
    SSL_CTX_free(s->tls);
    s->tls = tls;
}

int jinn_replica_stream_start(uv_loop_t *loop, struct jinn_node *node,
                              const struct jinn_replica_stream_config *cfg,
                              struct jinn_replica_stream **out)
{
    struct jinn_replica_stream *s;
    if (cfg->n_urls == 0 || cfg->n_urls > JINN_STREAM_MAX_URLS || cfg->name == NULL) {
        return JINN_EINVAL;
    }
    s = jinn_calloc(1, sizeof *s);
    if (s == NULL) {
        return JINN_ENOMEM;
    }
    s->loop = loop;
    s->node = node;
    for (unsigned i = 0; i < cfg->n_urls; i++) {
        if (jinn_stream_parse_url(cfg->urls[i], &s->parsed[i]) != 0 ||
            (s->parsed[i].tls && cfg->tls == NULL)) {
            jinn_error("replica: cannot stream from %s: %s", cfg->urls[i],
                       s->parsed[i].tls ? "no TLS context"
                                        : "not ws[s]://HOST[:PORT][/PREFIX]");
            goto fail_inval;
        }
        s->urls[i] = jinn_strdup(cfg->urls[i]);
        s->n_urls = i + 1;
        if (s->urls[i] == NULL) {
            goto fail_nomem;
        }
    }
    s->name = jinn_strdup(cfg->name);
    s->token = cfg->token != NULL && *cfg->token != '\0' ? jinn_strdup(cfg->token) : NULL;
    if (s->name == NULL || (cfg->token != NULL && *cfg->token != '\0' && s->token == NULL)) {
        goto fail_nomem;
    }
    s->stale_after_ms = cfg->stale_after_ms;
    s->max_message = cfg->max_snapshot != 0 && cfg->max_snapshot < JINN_STREAM_MAX_MESSAGE
                         ? cfg->max_snapshot
                         : JINN_STREAM_MAX_MESSAGE;
    if (cfg->tls != NULL) {
        SSL_CTX_up_ref(cfg->tls);
        s->tls = cfg->tls;
    }
    s->cluster = jinn_node_cluster_id(node);
    s->started_at = uv_now(loop);
    s->rng = (uint64_t)uv_hrtime() | 1;
    uv_timer_init(loop, &s->tick);
    s->tick.data = s;
    s->tick_open = true;
    uv_timer_start(&s->tick, on_tick, 0, TICK_MS);
    update_state(s);
    *out = s;
    return 0;
fail_inval:
    for (unsigned i = 0; i < s->n_urls; i++) {
        jinn_free(s->urls[i]);
    }
    jinn_free(s);
    return JINN_EINVAL;
fail_nomem:
    for (unsigned i = 0; i < s->n_urls; i++) {
        jinn_free(s->urls[i]);
    }
    jinn_free(s->name);
    jinn_free(s->token);
    jinn_free(s);
    return JINN_ENOMEM;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct jinn_replica_stream *s = h->data;
    s->tick_open = false;
    maybe_stopped(s);
}

void jinn_replica_stream_stop(struct jinn_replica_stream *s, void (*cb)(void *data), void *data)
{
    if (s->stopping) {
        return;
    }
    s->stopping = true;
    s->stop_cb = cb;
    s->stop_data = data;
    if (s->conn != NULL) {
        conn_close(s->conn, "shutting down");
    }
    uv_timer_stop(&s->tick);
    uv_close((uv_handle_t *)&s->tick, on_tick_closed);
}

void jinn_replica_stream_stats(const struct jinn_replica_stream *s,
                               struct jinn_replica_stream_stats *out)
{
    out->connects = s->connects;
    out->disconnects = s->disconnects;
    out->records = s->records;
    out->snapshots = s->snapshots;
    out->bytes_received = s->bytes_received;
    out->source = s->conn != NULL && s->conn->hello ? s->conn->source : NULL;
}
