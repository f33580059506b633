/* kv.c - see kv.h. An entry and its namespace, key and value are one
 * allocation, replaced whole on every put. */
#include "fsm/kv.h"

#include <assert.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/fatal.h"
#include "fsm/snapenc.h"

static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return (alen > blen) - (alen < blen);
}

static int key_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_kv_entry *x = jinn_tree_entry(a, struct jinn_kv_entry, by_key);
    const struct jinn_kv_entry *y = jinn_tree_entry(b, struct jinn_kv_entry, by_key);
    int c = bytes_cmp(x->ns, x->ns_len, y->ns, y->ns_len);
    return c ? c : bytes_cmp(x->key, x->key_len, y->key, y->key_len);
}

/* Expiry order; the revision breaks ties, so the order is total. */
static int expiry_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_kv_entry *x = jinn_tree_entry(a, struct jinn_kv_entry, by_expiry);
    const struct jinn_kv_entry *y = jinn_tree_entry(b, struct jinn_kv_entry, by_expiry);
    if (x->expires_at != y->expires_at) {
        return x->expires_at < y->expires_at ? -1 : 1;
    }
    if (x->revision != y->revision) {
        return x->revision < y->revision ? -1 : 1;
    }
    return key_cmp(&x->by_key, &y->by_key);
}

void jinn_kv_init(struct jinn_kv *kv)
{
    memset(kv, 0, sizeof *kv);
    jinn_tree_init(&kv->by_key, key_cmp);
    jinn_tree_init(&kv->by_expiry, expiry_cmp);
}

static void event_free(struct jinn_kv_event *ev)
{
    jinn_free(ev->ns);
    jinn_free(ev->key);
    jinn_free(ev->value);
    memset(ev, 0, sizeof *ev);
}

static uint64_t event_bytes(const struct jinn_kv_event *ev)
{
    return (ev->ns ? strlen(ev->ns) : 0) + ev->key_len + (ev->value ? ev->value_len : 0);
}

/* Frees a ring event, keeping the byte counters. */
static void history_forget(struct jinn_kv *kv, struct jinn_kv_event *ev)
{
    kv->history_bytes -= event_bytes(ev);
    if (ev->value != NULL) {
        kv->history_value_bytes -= ev->value_len;
    }
    event_free(ev);
}

/* Doubles the ring (up to JINN_KV_HISTORY slots), oldest event first: a
 * node with little traffic does not hold 65 536 empty slots. On failure the
 * ring is unchanged. */
static void history_grow(struct jinn_kv *kv)
{
    size_t cap = kv->ring_cap ? kv->ring_cap * 2 : 64;
    struct jinn_kv_event *ring;
    if (cap > JINN_KV_HISTORY) {
        cap = JINN_KV_HISTORY;
    }
    ring = jinn_calloc(cap, sizeof *ring);
    if (ring == NULL) {
        return;
    }
    for (size_t i = 0; i < kv->ring_len; i++) {
        ring[i] = kv->ring[(kv->ring_start + i) % kv->ring_cap];
    }
    jinn_free(kv->ring);
    kv->ring = ring;
    kv->ring_cap = cap;
    kv->ring_start = 0;
}

/* Drops values, oldest first, until the ring is within its byte budget. */
static void history_trim_values(struct jinn_kv *kv)
{
    while (kv->history_value_bytes > JINN_KV_HISTORY_VALUE_BYTES &&
           kv->ring_values < kv->ring_len) {
        struct jinn_kv_event *ev = &kv->ring[(kv->ring_start + kv->ring_values) % kv->ring_cap];
        if (ev->value != NULL) {
            jinn_free(ev->value);
            ev->value = NULL;
            ev->value_dropped = true;
            kv->history_value_bytes -= ev->value_len;
            kv->history_bytes -= ev->value_len;
        }
        kv->ring_values++;
    }
}

static void free_by_key(struct jinn_tree_node *n)
{
    jinn_free(jinn_tree_entry(n, struct jinn_kv_entry, by_key));
}

void jinn_kv_clear(struct jinn_kv *kv)
{
    jinn_tree_release_all(&kv->by_key, free_by_key);
    for (size_t i = 0; i < kv->ring_len; i++) {
        history_forget(kv, &kv->ring[(kv->ring_start + i) % kv->ring_cap]);
    }
    jinn_free(kv->ring);
    jinn_kv_init(kv);
}

static struct jinn_kv_entry probe(const char *ns, size_t ns_len, const uint8_t *key,
                                  size_t key_len)
{
    struct jinn_kv_entry p;
    memset(&p, 0, sizeof p);
    p.ns = ns;
    p.ns_len = ns_len;
    p.key = key;
    p.key_len = key_len;
    return p;
}

static struct jinn_kv_entry *find(const struct jinn_kv *kv, const char *ns, size_t ns_len,
                                  const uint8_t *key, size_t key_len)
{
    struct jinn_kv_entry p = probe(ns, ns_len, key, key_len);
    struct jinn_tree_node *n = jinn_tree_find(&kv->by_key, &p.by_key);
    return n ? jinn_tree_entry(n, struct jinn_kv_entry, by_key) : NULL;
}

const struct jinn_kv_entry *jinn_kv_get(const struct jinn_kv *kv, const char *ns,
                                        const uint8_t *key, size_t key_len)
{
    return find(kv, ns, strlen(ns), key, key_len);
}

static struct jinn_kv_entry *entry_new(const char *ns, size_t ns_len, const uint8_t *key,
                                       size_t key_len, const uint8_t *value, size_t value_len)
{
    struct jinn_kv_entry *e = jinn_malloc(sizeof *e + ns_len + 1 + key_len + value_len);
    char *p;
    if (e == NULL) {
        return NULL;
    }
    memset(e, 0, sizeof *e);
    p = (char *)(e + 1);
    memcpy(p, ns, ns_len);
    p[ns_len] = '\0';
    e->ns = p;
    e->ns_len = ns_len;
    p += ns_len + 1;
    if (key_len) {
        memcpy(p, key, key_len);
    }
    e->key = (const uint8_t *)p;
    e->key_len = key_len;
    p += key_len;
    if (value_len) {
        memcpy(p, value, value_len);
    }
    e->value = (const uint8_t *)p;
    e->value_len = value_len;
    return e;
}

/* Appends a change to the history ring (best effort: out of memory only
 * shortens the history, never the state). */
static void record(struct jinn_kv *kv, uint8_t type, const struct jinn_kv_entry *e,
                   uint64_t revision)
{
    struct jinn_kv_event ev;
    memset(&ev, 0, sizeof ev);
    if (kv->ring_len == kv->ring_cap && kv->ring_cap < JINN_KV_HISTORY) {
        history_grow(kv);
    }
    ev.revision = revision;
    ev.type = type;
    ev.ns = jinn_strndup(e->ns, e->ns_len);
    ev.key = jinn_malloc(e->key_len);
    ev.key_len = e->key_len;
    if (type == JINN_KV_EVENT_PUT && e->value_len > 0) {
        ev.value_len = e->value_len;
        if (e->value_len <= JINN_KV_HISTORY_VALUE_BYTES) {
            ev.value = jinn_malloc(e->value_len);
        } else {
            ev.value_dropped = true; /* larger than the whole budget */
        }
    }
    if (kv->ring == NULL || (kv->ring_len == kv->ring_cap && kv->ring_cap < JINN_KV_HISTORY) ||
        ev.ns == NULL || ev.key == NULL ||
        (ev.value_len > 0 && !ev.value_dropped && ev.value == NULL)) {
        /* Lose the history rather than the change: the history is this
         * node's cache for watchers, not replicated state. Watchers must
         * re-list (410 compacted). */
        event_free(&ev);
        for (size_t i = 0; kv->ring && i < kv->ring_len; i++) {
            history_forget(kv, &kv->ring[(kv->ring_start + i) % kv->ring_cap]);
        }
        kv->ring_len = 0;
        kv->ring_values = 0;
        kv->history_floor = revision;
        return;
    }
    memcpy(ev.key, e->key, e->key_len);
    if (ev.value != NULL) {
        memcpy(ev.value, e->value, ev.value_len);
    }
    if (kv->ring_len == JINN_KV_HISTORY) {
        struct jinn_kv_event *oldest = &kv->ring[kv->ring_start];
        /* Keep whole revisions: drop every event of the oldest revision. */
        uint64_t drop = oldest->revision;
        while (kv->ring_len > 0 && kv->ring[kv->ring_start].revision == drop) {
            history_forget(kv, &kv->ring[kv->ring_start]);
            kv->ring_start = (kv->ring_start + 1) % kv->ring_cap;
            kv->ring_len--;
            if (kv->ring_values > 0) {
                kv->ring_values--;
            }
        }
        kv->history_floor = drop;
    }
    kv->ring[(kv->ring_start + kv->ring_len) % kv->ring_cap] = ev;
    kv->ring_len++;
    kv->history_bytes += event_bytes(&ev);
    if (ev.value != NULL) {
        kv->history_value_bytes += ev.value_len;
    }
    history_trim_values(kv);
}

uint64_t jinn_kv_history_bytes(const struct jinn_kv *kv) { return kv->history_bytes; }

size_t jinn_kv_history_len(const struct jinn_kv *kv) { return kv->ring_len; }

const struct jinn_kv_event *jinn_kv_history_at(const struct jinn_kv *kv, size_t i)
{
    assert(i < kv->ring_len);
    return &kv->ring[(kv->ring_start + i) % kv->ring_cap];
}

static void unlink_entry(struct jinn_kv *kv, struct jinn_kv_entry *e)
{
    jinn_fsm_unlink(&kv->by_key, &e->by_key, "kv by key");
    if (e->expires_at != 0) {
        jinn_fsm_unlink(&kv->by_expiry, &e->by_expiry, "kv by expiry");
    }
    kv->bytes -= e->key_len + e->value_len;
}

static void link_entry(struct jinn_kv *kv, struct jinn_kv_entry *e)
{
    jinn_fsm_link(&kv->by_key, &e->by_key, "kv by key");
    if (e->expires_at != 0) {
        jinn_fsm_link(&kv->by_expiry, &e->by_expiry, "kv by expiry");
    }
    kv->bytes += e->key_len + e->value_len;
}

void jinn_kv_expire(struct jinn_kv *kv, uint64_t index, uint64_t now)
{
    struct jinn_tree_node *n;
    while ((n = jinn_tree_first(&kv->by_expiry)) != NULL) {
        struct jinn_kv_entry *e = jinn_tree_entry(n, struct jinn_kv_entry, by_expiry);
        if (e->expires_at > now) {
            break;
        }
        unlink_entry(kv, e);
        record(kv, JINN_KV_EVENT_EXPIRE, e, index);
        kv->last_revision = index;
        jinn_free(e);
    }
}

int jinn_kv_put(struct jinn_kv *kv, uint64_t index, uint64_t now, const struct jinn_cmd *c,
                uint64_t *revision)
{
    const char *ns = (const char *)c->kv.ns.p;
    struct jinn_kv_entry *old = find(kv, ns, c->kv.ns.len, c->kv.key.p, c->kv.key.len);
    struct jinn_kv_entry *e;

    *revision = old ? old->revision : 0;
    if ((c->kv.flags & JINN_KV_CREATE_ONLY) && old != NULL) {
        return JINN_EPRECONDITION;
    }
    if (c->kv.expect_revision != 0 && (old == NULL || old->revision != c->kv.expect_revision)) {
        return JINN_EPRECONDITION;
    }
    if (old == NULL && kv->by_key.count >= JINN_KV_MAX_KEYS) {
        return JINN_EFULL;
    }
    e = entry_new(ns, c->kv.ns.len, c->kv.key.p, c->kv.key.len, c->kv.value.p,
                  c->kv.value.len);
    if (e == NULL) {
        return JINN_ENOMEM;
    }
    e->revision = index;
    e->create_revision = old ? old->create_revision : index;
    e->expires_at = c->kv.ttl_ms ? jinn_fsm_deadline(now, c->kv.ttl_ms) : 0;
    if (old != NULL) {
        unlink_entry(kv, old);
        jinn_free(old);
    }
    link_entry(kv, e);
    record(kv, JINN_KV_EVENT_PUT, e, index);
    kv->last_revision = index;
    *revision = index;
    return JINN_OK;
}

int jinn_kv_del(struct jinn_kv *kv, uint64_t index, const struct jinn_cmd *c,
                uint64_t *revision)
{
    struct jinn_kv_entry *old =
        find(kv, (const char *)c->kv.ns.p, c->kv.ns.len, c->kv.key.p, c->kv.key.len);

    *revision = old ? old->revision : 0;
    if (c->kv.expect_revision != 0 && (old == NULL || old->revision != c->kv.expect_revision)) {
        return JINN_EPRECONDITION;
    }
    if (old == NULL) {
        return JINN_ENOTFOUND;
    }
    unlink_entry(kv, old);
    record(kv, JINN_KV_EVENT_DELETE, old, index);
    kv->last_revision = index;
    jinn_free(old);
    *revision = index;
    return JINN_OK;
}

void jinn_kv_scan(const struct jinn_kv *kv, const char *ns, const uint8_t *prefix,
                  size_t prefix_len, const uint8_t *start_after, size_t start_after_len,
                  jinn_kv_visit fn, void *data)
{
    size_t ns_len = strlen(ns);
    struct jinn_kv_entry p = start_after ? probe(ns, ns_len, start_after, start_after_len)
                                         : probe(ns, ns_len, prefix, prefix_len);
    struct jinn_tree_iter it;
    struct jinn_tree_node *n = jinn_tree_seek(&kv->by_key, &p.by_key, &it);

    for (; n != NULL; n = jinn_tree_next(&it)) {
        const struct jinn_kv_entry *e = jinn_tree_entry(n, struct jinn_kv_entry, by_key);
        if (e->ns_len != ns_len || memcmp(e->ns, ns, ns_len) != 0) {
            break;
        }
        if (start_after && bytes_cmp(e->key, e->key_len, start_after, start_after_len) <= 0) {
            continue;
        }
        if (e->key_len < prefix_len || memcmp(e->key, prefix, prefix_len) != 0) {
            /* Keys sharing the prefix are contiguous: past it, we are done
             * unless we have not reached it yet (start_after before it). */
            if (bytes_cmp(e->key, e->key_len, prefix, prefix_len) > 0) {
                break;
            }
            continue;
        }
        if (!fn(data, e)) {
            break;
        }
    }
}

uint64_t jinn_kv_next_expiry(const struct jinn_kv *kv)
{
    struct jinn_tree_node *n = jinn_tree_first(&kv->by_expiry);
    return n ? jinn_tree_entry(n, struct jinn_kv_entry, by_expiry)->expires_at : 0;
}

size_t jinn_kv_count(const struct jinn_kv *kv) { return kv->by_key.count; }

/* Snapshot section: u64 last_revision, u64 count, then per entry in key
 * order: ns, key, value (length-prefixed), u64 revision, u64
 * create_revision, u64 expires_at. */
void jinn_kv_encode(const struct jinn_kv *kv, struct jinn_wbuf *w)
{
    struct jinn_tree_iter it;
    jinn_wbuf_put_u64(w, kv->last_revision);
    jinn_wbuf_put_u64(w, kv->by_key.count);
    for (struct jinn_tree_node *n = jinn_tree_seek(&kv->by_key, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        const struct jinn_kv_entry *e = jinn_tree_entry(n, struct jinn_kv_entry, by_key);
        /* One reserve per entry, fields written in place (codec.h). */
        size_t size = 12 + e->ns_len + e->key_len + e->value_len + 24;
        uint8_t *p;
        if (!jinn_wbuf_reserve(w, size)) {
            return;
        }
        p = w->data + w->len;
        p = jinn_enc_bytes(p, e->ns, e->ns_len);
        p = jinn_enc_bytes(p, e->key, e->key_len);
        p = jinn_enc_bytes(p, e->value, e->value_len);
        p = jinn_enc_u64(p, e->revision);
        p = jinn_enc_u64(p, e->create_revision);
        (void)jinn_enc_u64(p, e->expires_at);
        w->len += size;
    }
}

int jinn_kv_decode(struct jinn_kv *kv, struct jinn_rbuf *r)
{
    uint64_t last = jinn_rbuf_get_u64(r);
    uint64_t count = jinn_rbuf_get_u64(r);
    const struct jinn_kv_entry *prev = NULL;

    if (r->failed || count > JINN_KV_MAX_KEYS) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *ns, *key, *value;
        size_t ns_len = jinn_rbuf_get_bytes(r, &ns, JINN_KV_NS_MAX);
        size_t key_len = jinn_rbuf_get_bytes(r, &key, JINN_KV_KEY_MAX);
        size_t value_len = jinn_rbuf_get_bytes(r, &value, JINN_KV_VALUE_MAX);
        struct jinn_kv_entry *e;
        uint64_t rev = jinn_rbuf_get_u64(r), create = jinn_rbuf_get_u64(r);
        uint64_t expires = jinn_rbuf_get_u64(r);
        if (r->failed || ns_len == 0 || key_len == 0 || rev == 0 || rev > last ||
            create > rev || memchr(ns, '\0', ns_len) != NULL) {
            jinn_kv_clear(kv);
            return JINN_ECORRUPT;
        }
        e = entry_new((const char *)ns, ns_len, key, key_len, value, value_len);
        if (e == NULL) {
            jinn_kv_clear(kv);
            return JINN_ENOMEM;
        }
        e->revision = rev;
        e->create_revision = create;
        e->expires_at = expires;
        /* Entries must come in strictly increasing key order. */
        if (prev != NULL && key_cmp(&prev->by_key, &e->by_key) >= 0) {
            jinn_free(e);
            jinn_kv_clear(kv);
            return JINN_ECORRUPT;
        }
        link_entry(kv, e);
        prev = e;
    }
    kv->last_revision = last;
    kv->history_floor = last;
    return 0;
}
