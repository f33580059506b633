/* stream.h - the node's feed of committed commands to edge replicas
 * (GET /v1/stream, docs/api.md; protocol v1).
 *
 * The node tells the feed every command raft applies (index, the previous
 * record's index, the entry's bytes) and every snapshot it restores. The
 * feed keeps the recent records in a ring bounded by stream_buffer_bytes,
 * in 'E' batches encoded once and shared by every replica (refcounted
 * WebSocket messages), and a replica resumes from its position when the
 * record after it is still in the ring; otherwise it gets an 'S' snapshot
 * (one encoding shared by the replicas asking at the same time, taken like
 * a backup: begun on the loop, finished on the thread pool). A replica
 * whose unsent bytes pass stream_max_lag_bytes (a snapshot in flight not
 * counted) is cut off with close 1008 "too slow"; nothing a replica does
 * makes the node queue more than that, or work on the loop for longer than
 * one batch (at most JINN_STREAM_BATCH_MAX bytes) at a time (a snapshot's
 * memory sections excepted: jinn_fsm_encode_begin runs on the loop). Its
 * connection is not read while its output is backed up (pings cannot grow
 * the node's queues), heartbeats never wait behind more than 64 KiB, the
 * ring is kept only while replicas are around and the cached snapshot
 * only while one needs it. */
#ifndef JINN_NET_STREAM_H
#define JINN_NET_STREAM_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "http.h"
#include "net/ws.h"
#include "node.h"

#define JINN_STREAM_PROTOCOL 1
#define JINN_STREAM_BATCH_MAX (1u << 20) /* an 'E' batch closes past this size */
#define JINN_STREAM_NAME_MAX 64

struct jinn_stream;

/* Creates the feed and attaches it to node's hooks. cfg is borrowed.
 * Returns 0 or JINN_ENOMEM. */
int jinn_stream_create(uv_loop_t *loop, struct jinn_node *node, const struct jinn_config *cfg,
                       struct jinn_stream **out);
/* Detaches from the node, closes every replica (1001) and frees the feed
 * once they are gone and no snapshot is being encoded. NULL is ignored. */
void jinn_stream_stop(struct jinn_stream *s);

/* Whether one more replica may connect (stream_max_replicas). */
bool jinn_stream_has_room(const struct jinn_stream *s);

/* Upgrades req (already validated by the handler: api/stream.c) to a
 * WebSocket and serves the replica at position from. accept_key: the
 * Sec-WebSocket-Accept value. name: the replica's name (status only).
 * Returns 0 (req was answered) or an error (req not answered). */
int jinn_stream_attach(struct jinn_stream *s, struct jinn_http_request *req, uint64_t from,
                       const char *name, const char *accept_key);
/* The same with the replica's cluster time at `from` (the request's `at`,
 * NULL when absent): the node resumes it at `from` only if its own chain
 * had that time there, else it sends a snapshot (never older than from). */
int jinn_stream_attach_at(struct jinn_stream *s, struct jinn_http_request *req, uint64_t from,
                          const uint64_t *at, const char *name, const char *accept_key);

struct jinn_stream_stats {
    unsigned replicas;
    uint64_t bytes_sent;   /* message bytes handed to replicas' transports */
    uint64_t cut_off;      /* replicas cut off as too slow */
    uint64_t buffer_bytes; /* the ring's bytes */
    uint64_t snapshots;    /* snapshot encodings made */
    uint64_t position;     /* the last record's index */
    uint64_t snapshot_bytes; /* the cached snapshot frame (0: none) */
};
void jinn_stream_stats(const struct jinn_stream *s, struct jinn_stream_stats *out);
/* The "stream" object of /v1/status (new reference; NULL on OOM). */
json_t *jinn_stream_status_json(const struct jinn_stream *s);

#endif
