/* kv.h - the replicated key-value store.
 *
 * Keys live in namespaces; both orders the store needs are AVL trees (by
 * namespace+key for reads and listings, by expiry time for TTLs), so every
 * replica iterates identically. Revisions are raft indexes. Expiry runs in
 * cluster time at the start of every applied command, so every replica
 * expires the same keys at the same revision.
 *
 * The store also keeps a bounded history of changes for watchers. It is
 * derived from the log (not part of the snapshot): after a restore, changes
 * at or below the restored revision are "compacted". It is bounded twice:
 * by count (JINN_KV_HISTORY changes, revision, type, namespace and key each)
 * and in value bytes (JINN_KV_HISTORY_VALUE_BYTES): past that budget the
 * oldest events lose their value (value_dropped; the watcher re-reads the
 * key) but keep their place, so a watch never misses a change. */
#ifndef JINN_KV_H
#define JINN_KV_H

#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "fsm/cmd.h"
#include "tree.h"

#define JINN_KV_MAX_KEYS 10000000u     /* across all namespaces */
#define JINN_KV_HISTORY 65536u         /* changes kept for watchers */
/* Values kept in the history, in bytes. Keys are bounded by the count:
 * 65 536 x (64 + 1024) bytes at most. */
#define JINN_KV_HISTORY_VALUE_BYTES (64u << 20)

struct jinn_kv_entry {
    struct jinn_tree_node by_key;
    struct jinn_tree_node by_expiry;
    const char *ns; /* these point into the same allocation as the entry */
    size_t ns_len;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    uint64_t revision;        /* of the last change */
    uint64_t create_revision; /* when the key was created */
    uint64_t expires_at;      /* cluster ms; 0 = never */
};

enum jinn_kv_event_type { JINN_KV_EVENT_PUT = 1, JINN_KV_EVENT_DELETE, JINN_KV_EVENT_EXPIRE };

struct jinn_kv_event {
    uint64_t revision;
    uint8_t type;
    char *ns; /* owned; NUL-terminated */
    uint8_t *key; /* owned */
    size_t key_len;
    uint8_t *value; /* owned; PUT only; NULL when dropped */
    size_t value_len; /* the value's length, also when dropped */
    bool value_dropped; /* over the history's byte budget: re-read the key */
};

struct jinn_kv {
    struct jinn_tree by_key;
    struct jinn_tree by_expiry;
    uint64_t bytes;         /* keys + values */
    uint64_t last_revision; /* of the last change */
    /* history ring for watchers */
    struct jinn_kv_event *ring;
    size_t ring_start, ring_len, ring_cap; /* ring_cap grows to JINN_KV_HISTORY */
    size_t ring_values; /* ring offset of the oldest event that may hold a value */
    uint64_t history_floor; /* changes after this revision are all in the ring */
    uint64_t history_value_bytes; /* value bytes held by the ring */
    uint64_t history_bytes;       /* ns + key + value bytes held by the ring */
};

void jinn_kv_init(struct jinn_kv *kv);
void jinn_kv_clear(struct jinn_kv *kv);

/* Removes every key whose expiry is <= now, at revision index. */
void jinn_kv_expire(struct jinn_kv *kv, uint64_t index, uint64_t now);

/* Apply KV_PUT / KV_DEL. Return JINN_OK with *revision the new revision,
 * or JINN_EPRECONDITION / JINN_ENOTFOUND with *revision the current one
 * (0 when absent), or JINN_EFULL / JINN_ENOMEM. State changes only on OK. */
int jinn_kv_put(struct jinn_kv *kv, uint64_t index, uint64_t now, const struct jinn_cmd *c,
                uint64_t *revision);
int jinn_kv_del(struct jinn_kv *kv, uint64_t index, const struct jinn_cmd *c,
                uint64_t *revision);

/* Borrowed entry or NULL. */
const struct jinn_kv_entry *jinn_kv_get(const struct jinn_kv *kv, const char *ns,
                                        const uint8_t *key, size_t key_len);

/* Calls fn for keys of ns starting with prefix, in key order, beginning
 * after start_after (if not NULL), until fn returns false. */
typedef bool (*jinn_kv_visit)(void *data, const struct jinn_kv_entry *e);
void jinn_kv_scan(const struct jinn_kv *kv, const char *ns, const uint8_t *prefix,
                  size_t prefix_len, const uint8_t *start_after, size_t start_after_len,
                  jinn_kv_visit fn, void *data);

/* Earliest expiry (cluster ms), or 0 when no key has a TTL. */
uint64_t jinn_kv_next_expiry(const struct jinn_kv *kv);
size_t jinn_kv_count(const struct jinn_kv *kv);

/* History: the i-th change after the floor, oldest first. */
size_t jinn_kv_history_len(const struct jinn_kv *kv);
const struct jinn_kv_event *jinn_kv_history_at(const struct jinn_kv *kv, size_t i);
/* Bytes the history holds (namespaces, keys and the values it still has). */
uint64_t jinn_kv_history_bytes(const struct jinn_kv *kv);

void jinn_kv_encode(const struct jinn_kv *kv, struct jinn_wbuf *w);
/* Decodes into an empty kv; on failure kv is left empty. */
int jinn_kv_decode(struct jinn_kv *kv, struct jinn_rbuf *r);

#endif
