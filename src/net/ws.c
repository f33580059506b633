/* ws.c - one WebSocket endpoint over libwslay's event API.
 *
 * Input: jinn_ws_feed stores the caller's bytes and runs wslay_event_recv,
 * whose recv callback drains them and then says WOULDBLOCK. wslay buffers
 * a message up to max_message (then queues close 1009 and stops reading),
 * answers pings and close frames itself and checks the masking rule.
 *
 * Output: data messages are ours, not wslay's: each send appends an item
 * (a reference to a shared jinn_ws_buf and an offset) to a FIFO, and is
 * queued in wslay as a "fragmented message" whose read callback copies the
 * next piece of the head item straight into wslay's frame buffer, so the
 * shared bytes are never copied per endpoint except piece by piece on the
 * way out. wslay's send callback hands the frames to io->write, at most
 * JINN_WS_FLUSH_CHUNK per flush (then WOULDBLOCK), which is what lets the
 * owner apply back-pressure. */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "net/ws.h"

struct ws_item {
    struct ws_item *next;
    struct jinn_ws_buf *buf;
    size_t off;
};

struct jinn_ws {
    wslay_event_context_ptr ctx;
    struct jinn_ws_io io;
    bool server;
    bool closed;      /* on_close ran, or we closed */
    bool in_callback; /* inside feed/flush: on_close deferred to the end */
    bool close_pending;
    int close_code;
    const char *close_why;
    /* input being fed */
    const uint8_t *in;
    size_t in_left;
    /* output FIFO of data messages */
    struct ws_item *head, *tail;
    uint64_t queued; /* payload bytes of the FIFO not yet read out */
    uint64_t items;  /* FIFO items not yet read out */
    uint64_t pings;  /* ping frames received */
    uint64_t sent;
    size_t flush_budget;
    struct jinn_wbuf out; /* this flush's bytes */
    bool write_failed;
    /* the message being received, from frame headers: why wslay stopped */
    uint64_t max_message;
    uint64_t in_msg_len;
    bool in_msg_text;
    bool in_msg_too_big;
    bool in_msg_fin; /* the refused frame was the message's last */
    /* The data message being received, joined here rather than in wslay
     * (no buffering): wslay would join its chunks into a new buffer on the
     * loop at the last frame (a 200 MB snapshot: ~140 ms of copying and
     * page faults), and the owner could not keep it. Here it grows as the
     * bytes arrive (realloc: mremap for large blocks) and the owner may
     * take it (jinn_ws_take_message). */
    uint8_t *in_buf;
    size_t in_len, in_cap;
    bool in_ctrl;        /* the frame being received is a control frame */
    bool closed_by_peer; /* the peer's close frame ended it */
    /* jinn_ws_close: the close frame is queued in wslay only once our
     * FIFO is empty, since wslay sends control frames first */
    bool close_wanted;
    bool close_queued;
    uint16_t want_code;
    char want_reason[124];
};

#define WS_SIZE_SLACK (64u * 1024)

struct jinn_ws_buf *jinn_ws_buf_new(size_t len)
{
    struct jinn_ws_buf *b = jinn_malloc(sizeof *b + (len ? len : 1));
    if (b == NULL) {
        return NULL;
    }
    b->data = (uint8_t *)(b + 1);
    b->len = len;
    b->refs = 1;
    return b;
}

struct jinn_ws_buf *jinn_ws_buf_adopt(void *data, size_t len)
{
    struct jinn_ws_buf *b = jinn_malloc(sizeof *b);
    if (b == NULL) {
        jinn_free(data);
        return NULL;
    }
    b->data = data;
    b->len = len;
    b->refs = 1;
    return b;
}

void jinn_ws_buf_ref(struct jinn_ws_buf *b)
{
    b->refs++;
}

void jinn_ws_buf_unref(struct jinn_ws_buf *b)
{
    if (b != NULL && --b->refs == 0) {
        if (b->data != (uint8_t *)(b + 1)) {
            jinn_free(b->data); /* adopted */
        }
        jinn_free(b);
    }
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    struct jinn_ws *ws = user;
    (void)flags;
    if (ws->in_left == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < ws->in_left ? len : ws->in_left;
    memcpy(buf, ws->in, n);
    ws->in += n;
    ws->in_left -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct jinn_ws *ws = user;
    (void)flags;
    if (ws->flush_budget == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > ws->flush_budget) {
        len = ws->flush_budget; /* a partial write: wslay keeps the rest */
    }
    /* gathered, and handed to io->write once per flush: one transport
     * write for many small frames */
    jinn_wbuf_put_raw(&ws->out, data, len);
    if (ws->out.failed) {
        ws->write_failed = true;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ws->flush_budget = len >= ws->flush_budget ? 0 : ws->flush_budget - len;
    return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)user;
    if (len > 0 && RAND_bytes(buf, (int)len) != 1) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

/* Reports the close to the owner once (deferred while inside a wslay call
 * so the owner never sees it half-way through one). */
static void mark_closed(struct jinn_ws *ws, int code, const char *why, bool notify)
{
    if (ws->closed) {
        return;
    }
    ws->closed = true;
    if (notify) {
        ws->close_pending = true;
        ws->close_code = code;
        ws->close_why = why;
    }
}

static void fire_close(struct jinn_ws *ws)
{
    if (ws->close_pending && !ws->in_callback) {
        ws->close_pending = false;
        ws->io.on_close(ws->io.data, ws->close_code, ws->close_why);
    }
}

/* Fails the connection with code: queue our close frame, stop reading. */
static void fail(struct jinn_ws *ws, int code, const char *why)
{
    if (ws->closed) {
        return;
    }
    size_t rl = strlen(why);
    wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)why, rl > 120 ? 120 : rl);
    wslay_event_shutdown_read(ws->ctx);
    mark_closed(ws, code, why, true);
}

static void on_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct jinn_ws *ws = user;
    (void)ctx;
    if (arg->opcode == WSLAY_PING) {
        ws->pings++;
    }
    ws->in_ctrl = arg->opcode >= WSLAY_CONNECTION_CLOSE;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
        ws->in_msg_text = arg->opcode == WSLAY_TEXT_FRAME;
        ws->in_msg_len = 0;
        ws->in_len = 0;
    }
    if (arg->opcode < WSLAY_CONNECTION_CLOSE) {
        ws->in_msg_len += arg->payload_length;
        if (ws->in_msg_len > ws->max_message || arg->payload_length > ws->max_message) {
            /* refused from the header, before any of its payload is
             * buffered */
            ws->in_msg_too_big = true;
            ws->in_msg_fin = arg->fin != 0;
            fail(ws, JINN_WS_CLOSE_TOO_BIG, "message too big");
        }
    }
}

/* A piece of a frame's payload. Data frames are joined in in_buf (their
 * total checked against max_message from the headers, before any of it
 * arrives); control frames are wslay's. */
static void on_chunk_cb(wslay_event_context_ptr ctx,
                        const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    struct jinn_ws *ws = user;
    (void)ctx;
    if (ws->closed || ws->in_ctrl || ws->in_msg_too_big || arg->data_length == 0) {
        return;
    }
    if (ws->in_len + arg->data_length > ws->in_cap) {
        size_t cap = ws->in_cap < 4096 ? 4096 : ws->in_cap;
        uint8_t *p;
        while (cap < ws->in_len + arg->data_length) {
            cap *= 2;
        }
        if (cap > ws->max_message) {
            cap = (size_t)ws->max_message; /* the total was checked against it */
        }
        p = jinn_realloc(ws->in_buf, cap);
        if (p == NULL) {
            fail(ws, JINN_WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        ws->in_buf = p;
        ws->in_cap = cap;
    }
    memcpy(ws->in_buf + ws->in_len, arg->data, arg->data_length);
    ws->in_len += arg->data_length;
}

/* Big buffers are not kept between messages. */
#define WS_IN_KEEP (64u * 1024)

static void on_msg_cb(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *user)
{
    struct jinn_ws *ws = user;
    (void)ctx;
    if (ws->closed) {
        return;
    }
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME: {
        static const uint8_t empty[1];
        bool text = arg->opcode == WSLAY_TEXT_FRAME;
        const uint8_t *msg = ws->in_buf != NULL ? ws->in_buf : empty;
        size_t len = ws->in_len;
        if (text && !jinn_utf8_valid(msg, len)) {
            fail(ws, JINN_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
            return;
        }
        ws->io.on_message(ws->io.data, !text, msg, len);
        ws->in_len = 0;
        if (ws->in_cap > WS_IN_KEEP) {
            jinn_free(ws->in_buf);
            ws->in_buf = NULL;
            ws->in_cap = 0;
        }
        return;
    }
    case WSLAY_CONNECTION_CLOSE:
        /* wslay queued the answering close frame and stopped reading. */
        ws->closed_by_peer = !ws->closed;
        mark_closed(ws, arg->status_code ? arg->status_code : JINN_WS_CLOSE_NO_STATUS,
                    "closed by the peer", true);
        return;
    default:
        return; /* ping (answered by wslay), pong */
    }
}

/* The read callback of a queued data message: the next piece of the head
 * item of the FIFO (wslay sends messages in queue order). */
static ssize_t read_msg_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                           const union wslay_event_msg_source *source, int *eof, void *user)
{
    struct jinn_ws *ws = user;
    struct ws_item *it = source->data;
    (void)ctx;
    size_t left = it->buf->len - it->off;
    size_t n = len < left ? len : left;
    if (n > 0) {
        memcpy(buf, it->buf->data + it->off, n);
    }
    it->off += n;
    ws->queued -= n;
    ws->sent += n;
    if (it->off == it->buf->len) {
        *eof = 1;
        /* it is the FIFO's head: wslay reads messages in order */
        ws->head = it->next;
        if (ws->head == NULL) {
            ws->tail = NULL;
        }
        ws->items--;
        jinn_ws_buf_unref(it->buf);
        jinn_free(it);
    }
    return (ssize_t)n;
}

static void queue_wanted_close(struct jinn_ws *ws)
{
    if (ws->close_wanted && !ws->close_queued) {
        ws->close_queued = true;
        wslay_event_queue_close(ws->ctx, ws->want_code, (const uint8_t *)ws->want_reason,
                                strlen(ws->want_reason));
    }
}

int jinn_ws_create(bool server, uint64_t max_message, const struct jinn_ws_io *io,
                   struct jinn_ws **out)
{
    if (io == NULL || io->write == NULL || io->on_message == NULL || io->on_close == NULL ||
        max_message == 0 || max_message > JINN_WS_MAX_MESSAGE_LIMIT) {
        return JINN_EINVAL;
    }
    struct jinn_ws *ws = jinn_calloc(1, sizeof *ws);
    if (ws == NULL) {
        return JINN_ENOMEM;
    }
    ws->io = *io;
    ws->server = server;
    jinn_wbuf_init(&ws->out);
    struct wslay_event_callbacks cb = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .genmask_callback = genmask_cb,
        .on_frame_recv_start_callback = on_frame_start_cb,
        .on_frame_recv_chunk_callback = on_chunk_cb,
        .on_msg_recv_callback = on_msg_cb,
    };
    int rc = server ? wslay_event_context_server_init(&ws->ctx, &cb, ws)
                    : wslay_event_context_client_init(&ws->ctx, &cb, ws);
    if (rc != 0) {
        jinn_free(ws);
        return JINN_ENOMEM;
    }
    /* Two limits. wslay's refuses without saying why (its close code is
     * unknown until sent) and is checked before on_frame_start_cb, so a
     * message it refuses is reported as a protocol error with no size;
     * ours, from each frame header, names the size. wslay's stays above
     * ours by WS_SIZE_SLACK so that ours sees a message growing past the
     * limit in frames up to that size (jinn's nodes send ~4 KiB
     * fragments). Data frames are not buffered by wslay (on_chunk_cb
     * joins them, and skips a refused one); control frames still are. */
    wslay_event_config_set_max_recv_msg_length(ws->ctx, max_message + WS_SIZE_SLACK);
    wslay_event_config_set_no_buffering(ws->ctx, 1); /* data joined in on_chunk_cb */
    ws->max_message = max_message;
    *out = ws;
    return 0;
}

void jinn_ws_destroy(struct jinn_ws *ws)
{
    if (ws == NULL) {
        return;
    }
    wslay_event_context_free(ws->ctx);
    jinn_free(ws->in_buf);
    jinn_wbuf_free(&ws->out);
    struct ws_item *it = ws->head;
    while (it != NULL) {
        struct ws_item *next = it->next;
        jinn_ws_buf_unref(it->buf);
        jinn_free(it);
        it = next;
    }
    jinn_free(ws);
}

/* After a wslay call: a stopped reader or writer means the connection is
 * over; tell the owner why. */
static void check_state(struct jinn_ws *ws)
{
    if (ws->closed) {
        return;
    }
    if (ws->write_failed) {
        mark_closed(ws, JINN_WS_CLOSE_ABNORMAL, "transport write failed", true);
    } else if (!wslay_event_get_read_enabled(ws->ctx)) {
        /* wslay queued a close frame whose code its API does not tell
         * until sent: the frame headers seen say which check failed */
        int code = JINN_WS_CLOSE_PROTOCOL;
        const char *why = "protocol error";
        if (ws->in_msg_too_big) {
            code = JINN_WS_CLOSE_TOO_BIG;
            why = "message too big";
        } else if (ws->in_msg_text) {
            code = JINN_WS_CLOSE_INVALID_DATA;
            why = "invalid text message";
        }
        mark_closed(ws, code, why, true);
    }
}

int jinn_ws_feed(struct jinn_ws *ws, const uint8_t *buf, size_t n)
{
    if (ws->closed) {
        return JINN_ESHUTDOWN;
    }
    ws->in = buf;
    ws->in_left = n;
    ws->in_callback = true;
    int rc = wslay_event_recv(ws->ctx);
    ws->in_callback = false;
    ws->in = NULL;
    ws->in_left = 0;
    if (rc != 0 && !ws->closed) {
        wslay_event_shutdown_read(ws->ctx);
        mark_closed(ws, rc == WSLAY_ERR_NOMEM ? JINN_WS_CLOSE_INTERNAL : JINN_WS_CLOSE_PROTOCOL,
                    rc == WSLAY_ERR_NOMEM ? "out of memory" : "protocol error", true);
    }
    check_state(ws);
    bool closed = ws->closed;
    fire_close(ws);
    return closed ? JINN_ESHUTDOWN : 0;
}

int jinn_ws_send(struct jinn_ws *ws, bool binary, struct jinn_ws_buf *msg)
{
    if (ws->closed) {
        return JINN_ESHUTDOWN;
    }
    struct ws_item *it = jinn_calloc(1, sizeof *it);
    if (it == NULL) {
        return JINN_ENOMEM;
    }
    it->buf = msg;
    struct wslay_event_fragmented_msg fm = {
        .opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
        .source.data = it,
        .read_callback = read_msg_cb,
    };
    if (msg->len == 0) {
        /* wslay's fragmented path needs bytes; an empty message is a
         * plain one */
        struct wslay_event_msg m = {.opcode = fm.opcode, .msg = NULL, .msg_length = 0};
        jinn_free(it);
        return wslay_event_queue_msg(ws->ctx, &m) == 0 ? 0 : JINN_ENOMEM;
    }
    int rc = wslay_event_queue_fragmented_msg(ws->ctx, &fm);
    if (rc != 0) {
        jinn_free(it);
        return rc == WSLAY_ERR_NOMEM ? JINN_ENOMEM : JINN_ESHUTDOWN;
    }
    jinn_ws_buf_ref(msg);
    if (ws->tail != NULL) {
        ws->tail->next = it;
    } else {
        ws->head = it;
    }
    ws->tail = it;
    ws->items++;
    ws->queued += msg->len;
    return 0;
}

int jinn_ws_send_copy(struct jinn_ws *ws, bool binary, const void *p, size_t n)
{
    struct jinn_ws_buf *b = jinn_ws_buf_new(n);
    if (b == NULL) {
        return JINN_ENOMEM;
    }
    if (n > 0) {
        memcpy(b->data, p, n);
    }
    int rc = jinn_ws_send(ws, binary, b);
    jinn_ws_buf_unref(b);
    return rc;
}

int jinn_ws_ping(struct jinn_ws *ws)
{
    if (ws->closed) {
        return JINN_ESHUTDOWN;
    }
    struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};
    return wslay_event_queue_msg(ws->ctx, &m) == 0 ? 0 : JINN_ENOMEM;
}

int jinn_ws_close(struct jinn_ws *ws, int code, const char *reason)
{
    if (ws->closed) {
        return JINN_ESHUTDOWN;
    }
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > sizeof ws->want_reason - 1) {
        rl = sizeof ws->want_reason - 1;
    }
    ws->close_wanted = true;
    ws->want_code = (uint16_t)code;
    if (rl > 0) {
        memcpy(ws->want_reason, reason, rl);
    }
    ws->want_reason[rl] = '\0';
    mark_closed(ws, code, reason, false);
    if (ws->head == NULL) {
        queue_wanted_close(ws);
    }
    return 0;
}

int jinn_ws_abort(struct jinn_ws *ws, int code, const char *reason)
{
    int rc = jinn_ws_close(ws, code, reason);
    if (rc == 0) {
        queue_wanted_close(ws); /* jumps the queued data; they are never sent */
    }
    return rc;
}

uint64_t jinn_ws_queued_bytes(const struct jinn_ws *ws)
{
    return ws->queued;
}

uint64_t jinn_ws_control_bytes(const struct jinn_ws *ws)
{
    /* wslay counts every queued message (our data ones too: a data
     * message read out but not yet framed still counts, one overhead
     * at most) but the length of its plain ones only */
    uint64_t n = wslay_event_get_queued_msg_count(ws->ctx);
    n = n > ws->items ? n - ws->items : 0;
    return wslay_event_get_queued_msg_length(ws->ctx) + n * JINN_WS_CONTROL_OVERHEAD;
}

uint64_t jinn_ws_pings_received(const struct jinn_ws *ws)
{
    return ws->pings;
}

uint64_t jinn_ws_sent_bytes(const struct jinn_ws *ws)
{
    return ws->sent;
}

bool jinn_ws_closed(const struct jinn_ws *ws)
{
    return ws->closed;
}

bool jinn_ws_close_sent(const struct jinn_ws *ws)
{
    return wslay_event_get_close_sent(ws->ctx) != 0;
}

void jinn_ws_flush(struct jinn_ws *ws)
{
    if (ws->in_callback) {
        return;
    }
    ws->flush_budget = JINN_WS_FLUSH_CHUNK;
    ws->in_callback = true;
    int rc = 0;
    for (int round = 0; round < 2 && rc == 0; round++) {
        if (!wslay_event_want_write(ws->ctx)) {
            break;
        }
        rc = wslay_event_send(ws->ctx);
        /* our data went out: a close asked for after it goes now */
        if (rc == 0 && ws->head == NULL && ws->close_wanted && !ws->close_queued &&
            ws->flush_budget > 0) {
            queue_wanted_close(ws);
        } else {
            break;
        }
    }
    ws->in_callback = false;
    if (ws->out.len > 0 && !ws->write_failed) {
        if (ws->io.write(ws->io.data, ws->out.data, ws->out.len) != 0) {
            ws->write_failed = true;
        }
    }
    ws->out.len = 0;
    if (ws->out.cap > 2 * JINN_WS_FLUSH_CHUNK) {
        jinn_wbuf_free(&ws->out); /* one big frame must not pin its buffer */
    }
    if ((rc != 0 || ws->write_failed) && !ws->closed) {
        mark_closed(ws, JINN_WS_CLOSE_ABNORMAL, "transport write failed", true);
    }
    fire_close(ws);
}

void jinn_ws_accept_key(const char *client_key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char md[SHA_DIGEST_LENGTH];
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int mdlen = 0;
    if (c == NULL || EVP_DigestInit_ex(c, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(c, client_key, strlen(client_key)) != 1 ||
        EVP_DigestUpdate(c, guid, sizeof guid - 1) != 1 ||
        EVP_DigestFinal_ex(c, md, &mdlen) != 1) {
        /* only out-of-memory gets here: a key nobody can match */
        memset(md, 0, sizeof md);
    }
    EVP_MD_CTX_free(c);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
    out[28] = '\0';
}

int jinn_ws_client_key(char out[25])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        out[0] = '\0';
        return JINN_EINTERNAL;
    }
    EVP_EncodeBlock((unsigned char *)out, raw, sizeof raw);
    out[24] = '\0';
    return 0;
}

bool jinn_ws_closed_by_peer(const struct jinn_ws *ws)
{
    return ws->closed_by_peer;
}

uint64_t jinn_ws_refused_length(const struct jinn_ws *ws, bool *whole)
{
    *whole = ws->in_msg_too_big && ws->in_msg_fin;
    return ws->in_msg_too_big ? ws->in_msg_len : 0;
}

uint8_t *jinn_ws_take_message(struct jinn_ws *ws, size_t *len)
{
    uint8_t *p = ws->in_buf;
    *len = ws->in_len;
    ws->in_buf = NULL;
    ws->in_len = ws->in_cap = 0;
    return p;
}
