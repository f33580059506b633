/* ws.h - one WebSocket endpoint (RFC 6455) over any byte transport.
 *
 * A thin wrapper around Debian's libwslay (framing, masking, control
 * frames, close handshake). It owns no socket: the owner feeds it the bytes
 * it read (jinn_ws_feed, any split) and gives it a write callback. Sending
 * only queues; jinn_ws_flush hands the queued frames to io->write, at most
 * JINN_WS_FLUSH_CHUNK bytes gathered into one write per call. The owner
 * calls flush after sending and after feeding (pings are answered, close
 * frames echoed, through the same queue), and again whenever its transport
 * drained, and stops calling it while its own queue is above its
 * watermark: a slow peer's bytes then pile up here, counted by
 * jinn_ws_queued_bytes, not in the transport's queue or the kernel.

 * Messages to send are refcounted buffers (jinn_ws_buf): one encoded frame
 * body is shared by every endpoint that sends it (the stream feed sends one
 * batch to many replicas) and is freed when the last endpoint wrote it.
 *
 * Roles: a server endpoint expects masked frames from its client and sends
 * unmasked ones; a client endpoint masks (wslay draws the masks from
 * RAND_bytes through our callback). A frame with the wrong masking, a
 * message over max_message (close 1009), invalid UTF-8 in a text message
 * (1007) or any other protocol error makes the endpoint send a close frame
 * and call io->on_close once; after that, feed and send fail with
 * JINN_ESHUTDOWN and the owner closes the transport (after flushing, if it
 * wants the close frame to arrive).
 *
 * Single-threaded: call everything from the thread that owns the transport
 * (the loop). on_message runs inside jinn_ws_feed; on_close runs once, at
 * the end of jinn_ws_feed or jinn_ws_flush (never inside another
 * callback). jinn_ws_flush called from inside a callback does nothing:
 * flush after feed returns. The endpoint must not be destroyed from inside
 * a callback (on_close included): close the transport and destroy the
 * endpoint in the transport's close callback. */
#ifndef JINN_NET_WS_H
#define JINN_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hard upper bound on max_message (a single message is buffered whole). */
#define JINN_WS_MAX_MESSAGE_LIMIT (4ull << 30)

/* Close codes used by jinn. */
#define JINN_WS_CLOSE_NORMAL 1000
#define JINN_WS_CLOSE_GOING_AWAY 1001
#define JINN_WS_CLOSE_PROTOCOL 1002
#define JINN_WS_CLOSE_UNSUPPORTED 1003
#define JINN_WS_CLOSE_NO_STATUS 1005
#define JINN_WS_CLOSE_ABNORMAL 1006
#define JINN_WS_CLOSE_INVALID_DATA 1007
#define JINN_WS_CLOSE_POLICY 1008
#define JINN_WS_CLOSE_TOO_BIG 1009
#define JINN_WS_CLOSE_INTERNAL 1011

struct jinn_ws;

struct jinn_ws_io {
    /* Writes n bytes to the transport (the owner queues them; buf is only
     * borrowed for the call). Returns 0 or an error (the endpoint then
     * reports on_close with 1006). */
    int (*write)(void *data, const void *buf, size_t n);
    /* A complete message arrived (binary or text); msg borrowed for the
     * call. */
    void (*on_message)(void *data, bool binary, const uint8_t *msg, size_t len);
    /* The peer closed, or a protocol error happened, or a write failed:
     * called once; the owner closes the transport. code is the close code
     * (the peer's, or the one we sent), why a static or borrowed text. */
    void (*on_close)(void *data, int code, const char *why);
    void *data;
};

/* Refcounted message bytes, shared by many endpoints. data/len are the
 * message; fill data after jinn_ws_buf_new, then send it (the sender's
 * reference is its own: unref after the sends). */
struct jinn_ws_buf {
    uint8_t *data;
    size_t len;
    unsigned refs;
};
/* NULL on out-of-memory; refs = 1. len may be 0. */
struct jinn_ws_buf *jinn_ws_buf_new(size_t len);
/* Wraps data (from jinn_malloc; owned from now on, freed with the buffer,
 * also when this fails) without copying it. NULL on out-of-memory. */
struct jinn_ws_buf *jinn_ws_buf_adopt(void *data, size_t len);
void jinn_ws_buf_ref(struct jinn_ws_buf *b);
/* Frees at the last reference; NULL is ignored. */
void jinn_ws_buf_unref(struct jinn_ws_buf *b);

/* server: true for the accepting side. max_message: the largest message
 * accepted from the peer (1..JINN_WS_MAX_MESSAGE_LIMIT); io is copied.
 * Returns 0, JINN_EINVAL or JINN_ENOMEM. */
int jinn_ws_create(bool server, uint64_t max_message, const struct jinn_ws_io *io,
                   struct jinn_ws **out);
/* Frees the endpoint and drops its references to queued buffers. No
 * callback runs. NULL is ignored. */
void jinn_ws_destroy(struct jinn_ws *ws);

/* Feeds bytes read from the transport (any split). Complete messages are
 * delivered to on_message before it returns. Returns 0, or an error after
 * which the endpoint is closed (on_close has run or runs now). */
int jinn_ws_feed(struct jinn_ws *ws, const uint8_t *buf, size_t n);

/* Queues a message; the buffer is referenced, not copied. 0, or
 * JINN_ESHUTDOWN once closed, JINN_ENOMEM. */
int jinn_ws_send(struct jinn_ws *ws, bool binary, struct jinn_ws_buf *msg);
int jinn_ws_send_copy(struct jinn_ws *ws, bool binary, const void *p, size_t n);
int jinn_ws_ping(struct jinn_ws *ws);
/* Sends a close frame with code and reason (<= 123 bytes, cut beyond)
 * after the messages already queued; on_close is NOT called for our own
 * close (the owner decided it). After it, send fails and the endpoint
 * only flushes what is queued. */
int jinn_ws_close(struct jinn_ws *ws, int code, const char *reason);
/* The same, but the close frame goes next and the queued messages are
 * never sent (cutting off a peer too slow to take them). */
int jinn_ws_abort(struct jinn_ws *ws, int code, const char *reason);

/* Message bytes queued but not yet handed to io->write (frame headers not
 * counted). */
uint64_t jinn_ws_queued_bytes(const struct jinn_ws *ws);
/* Bytes wslay holds in its own queue (pongs it answers to pings, close
 * frames, empty messages), plus JINN_WS_CONTROL_OVERHEAD per queued
 * message of any kind (what wslay allocates for each): a peer that pings
 * and never reads grows this, so the owner bounds it (stops reading). */
uint64_t jinn_ws_control_bytes(const struct jinn_ws *ws);
#define JINN_WS_CONTROL_OVERHEAD 64
/* Ping frames received so far (each one asks for a pong). */
uint64_t jinn_ws_pings_received(const struct jinn_ws *ws);
/* Total message payload bytes handed to io->write so far. */
uint64_t jinn_ws_sent_bytes(const struct jinn_ws *ws);
/* True once closed (by either side or an error). */
bool jinn_ws_closed(const struct jinn_ws *ws);
/* True when the close frame we sent (or answered) has been handed to
 * io->write: the owner may close the transport once it flushed that. */
bool jinn_ws_close_sent(const struct jinn_ws *ws);

/* Hands queued frames to io->write, at most JINN_WS_FLUSH_CHUNK payload
 * bytes per call (so one call never holds the loop long). send does not
 * write by itself: the owner calls flush after sending (many sends become
 * one burst) and again whenever its transport drained, and stops calling
 * while its own queue is above its watermark; that is the back-pressure. */
void jinn_ws_flush(struct jinn_ws *ws);
#define JINN_WS_FLUSH_CHUNK (256u * 1024)

/* Handshake helpers. accept_key: base64(SHA1(client_key + GUID)), 28 chars
 * + NUL. client_key: 16 random bytes (RAND_bytes) in base64, 24 chars + NUL;
 * returns 0 or JINN_EINTERNAL when the RNG fails. */
void jinn_ws_accept_key(const char *client_key, char out[29]);
int jinn_ws_client_key(char out[25]);

/* After on_close: whether the peer's close frame ended it (else this
 * endpoint refused something, or the transport failed), and, for a message
 * refused as too big (1009), the length its frame headers announced up to
 * the refusal (0 otherwise), so the owner can say what it refused; *whole
 * tells whether that was the whole message (its final frame) or only the
 * fragments seen (the message is longer). */
bool jinn_ws_closed_by_peer(const struct jinn_ws *ws);
uint64_t jinn_ws_refused_length(const struct jinn_ws *ws, bool *whole);
/* Inside on_message only: takes the message's bytes (msg, jinn_malloc'd;
 * the caller frees them with jinn_free, on any thread) instead of copying
 * them. NULL for an empty message. */
uint8_t *jinn_ws_take_message(struct jinn_ws *ws, size_t *len);

#endif
