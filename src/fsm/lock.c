/* lock.c - see lock.h. */
#include "fsm/lock.h"

#include <assert.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

static int name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_lock *x = jinn_tree_entry(a, struct jinn_lock, by_name);
    const struct jinn_lock *y = jinn_tree_entry(b, struct jinn_lock, by_name);
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Tokens are unique, so (expires_at, token) orders every lock. */
static int expiry_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_lock *x = jinn_tree_entry(a, struct jinn_lock, by_expiry);
    const struct jinn_lock *y = jinn_tree_entry(b, struct jinn_lock, by_expiry);
    if (x->expires_at != y->expires_at) {
        return x->expires_at < y->expires_at ? -1 : 1;
    }
    return (x->token > y->token) - (x->token < y->token);
}

void jinn_locks_init(struct jinn_locks *l)
{
    jinn_tree_init(&l->by_name, name_cmp);
    jinn_tree_init(&l->by_expiry, expiry_cmp);
}

static void free_by_key(struct jinn_tree_node *n)
{
    jinn_free(jinn_tree_entry(n, struct jinn_lock, by_name));
}

void jinn_locks_clear(struct jinn_locks *l)
{
    jinn_tree_release_all(&l->by_name, free_by_key);
    jinn_locks_init(l);
}

static struct jinn_lock *find(const struct jinn_locks *l, const char *name, size_t len)
{
    struct jinn_lock probe;
    struct jinn_tree_node *n;
    probe.name = name;
    probe.name_len = len;
    n = jinn_tree_find(&l->by_name, &probe.by_name);
    return n ? jinn_tree_entry(n, struct jinn_lock, by_name) : NULL;
}

const struct jinn_lock *jinn_locks_get(const struct jinn_locks *l, const char *name, size_t len)
{
    return find(l, name, len);
}

const struct jinn_lock *jinn_locks_next(const struct jinn_locks *l, const struct jinn_lock *after)
{
    struct jinn_tree_iter it;
    struct jinn_tree_node *n = jinn_tree_seek(&l->by_name, after ? &after->by_name : NULL, &it);
    if (n != NULL && after != NULL && name_cmp(n, &after->by_name) == 0) {
        n = jinn_tree_next(&it);
    }
    return n ? jinn_tree_entry(n, struct jinn_lock, by_name) : NULL;
}

static void unlink_lock(struct jinn_locks *l, struct jinn_lock *k)
{
    struct jinn_tree_node *gone = jinn_tree_remove(&l->by_name, &k->by_name);
    assert(gone == &k->by_name);
    gone = jinn_tree_remove(&l->by_expiry, &k->by_expiry);
    assert(gone == &k->by_expiry);
    (void)gone;
}

static void link_lock(struct jinn_locks *l, struct jinn_lock *k)
{
    struct jinn_tree_node *dup = jinn_tree_insert(&l->by_name, &k->by_name);
    assert(dup == NULL);
    dup = jinn_tree_insert(&l->by_expiry, &k->by_expiry);
    assert(dup == NULL);
    (void)dup;
}

void jinn_locks_expire(struct jinn_locks *l, uint64_t now)
{
    struct jinn_tree_node *n;
    while ((n = jinn_tree_first(&l->by_expiry)) != NULL) {
        struct jinn_lock *k = jinn_tree_entry(n, struct jinn_lock, by_expiry);
        if (k->expires_at > now) {
            break;
        }
        unlink_lock(l, k);
        jinn_free(k);
    }
}

static struct jinn_lock *lock_new(struct jinn_slice name, struct jinn_slice owner)
{
    struct jinn_lock *k = jinn_malloc(sizeof *k + name.len + owner.len + 2);
    char *p;
    if (k == NULL) {
        return NULL;
    }
    memset(k, 0, sizeof *k);
    p = (char *)(k + 1);
    memcpy(p, name.p, name.len);
    p[name.len] = '\0';
    k->name = p;
    k->name_len = name.len;
    p += name.len + 1;
    memcpy(p, owner.p, owner.len);
    p[owner.len] = '\0';
    k->owner = p;
    k->owner_len = owner.len;
    return k;
}

int jinn_locks_acquire(struct jinn_locks *l, uint64_t index, uint64_t now,
                       const struct jinn_cmd *c, uint64_t *token)
{
    struct jinn_lock *held = find(l, (const char *)c->lock.name.p, c->lock.name.len);
    struct jinn_lock *k;

    if (held != NULL) {
        *token = held->token;
        return JINN_ECONFLICT;
    }
    if (l->by_name.count >= JINN_LOCKS_MAX) {
        return JINN_EFULL;
    }
    k = lock_new(c->lock.name, c->lock.owner);
    if (k == NULL) {
        return JINN_ENOMEM;
    }
    k->token = index;
    k->granted_at = now;
    k->ttl_ms = c->lock.ttl_ms;
    k->expires_at = now + c->lock.ttl_ms;
    link_lock(l, k);
    *token = index;
    return JINN_OK;
}

int jinn_locks_refresh(struct jinn_locks *l, uint64_t now, const struct jinn_cmd *c)
{
    struct jinn_lock *k = find(l, (const char *)c->lock.name.p, c->lock.name.len);
    if (k == NULL || k->token != c->lock.token) {
        return JINN_ECONFLICT;
    }
    jinn_tree_remove(&l->by_expiry, &k->by_expiry);
    if (c->lock.ttl_ms != 0) {
        k->ttl_ms = c->lock.ttl_ms;
    }
    k->expires_at = now + k->ttl_ms;
    jinn_tree_insert(&l->by_expiry, &k->by_expiry);
    return JINN_OK;
}

int jinn_locks_release(struct jinn_locks *l, const struct jinn_cmd *c)
{
    struct jinn_lock *k = find(l, (const char *)c->lock.name.p, c->lock.name.len);
    if (k == NULL || k->token != c->lock.token) {
        return JINN_ECONFLICT;
    }
    unlink_lock(l, k);
    jinn_free(k);
    return JINN_OK;
}

bool jinn_locks_fence_ok(const struct jinn_locks *l, const uint8_t *name, size_t len,
                         uint64_t token)
{
    const struct jinn_lock *k = find(l, (const char *)name, len);
    return k != NULL && k->token == token;
}

uint64_t jinn_locks_next_expiry(const struct jinn_locks *l)
{
    struct jinn_tree_node *n = jinn_tree_first(&l->by_expiry);
    return n ? jinn_tree_entry(n, struct jinn_lock, by_expiry)->expires_at : 0;
}

/* Snapshot section: u64 count, then per lock in name order: name, owner,
 * u64 token, granted_at, expires_at, ttl_ms. */
void jinn_locks_encode(const struct jinn_locks *l, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u64(w, l->by_name.count);
    for (const struct jinn_lock *k = jinn_locks_next(l, NULL); k; k = jinn_locks_next(l, k)) {
        jinn_wbuf_put_bytes(w, k->name, k->name_len);
        jinn_wbuf_put_bytes(w, k->owner, k->owner_len);
        jinn_wbuf_put_u64(w, k->token);
        jinn_wbuf_put_u64(w, k->granted_at);
        jinn_wbuf_put_u64(w, k->expires_at);
        jinn_wbuf_put_u64(w, k->ttl_ms);
    }
}

int jinn_locks_decode(struct jinn_locks *l, struct jinn_rbuf *r)
{
    uint64_t count = jinn_rbuf_get_u64(r);
    const struct jinn_lock *prev = NULL;
    if (r->failed || count > JINN_LOCKS_MAX) {
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        struct jinn_slice name, owner;
        struct jinn_lock *k;
        name.len = jinn_rbuf_get_bytes(r, &name.p, JINN_LOCK_NAME_MAX);
        owner.len = jinn_rbuf_get_bytes(r, &owner.p, JINN_LOCK_OWNER_MAX);
        if (r->failed || name.len == 0 || owner.len == 0) {
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
        k = lock_new(name, owner);
        if (k == NULL) {
            jinn_locks_clear(l);
            return JINN_ENOMEM;
        }
        k->token = jinn_rbuf_get_u64(r);
        k->granted_at = jinn_rbuf_get_u64(r);
        k->expires_at = jinn_rbuf_get_u64(r);
        k->ttl_ms = jinn_rbuf_get_u64(r);
        if (r->failed || k->token == 0 || (prev && name_cmp(&prev->by_name, &k->by_name) >= 0) ||
            jinn_tree_find(&l->by_expiry, &k->by_expiry) != NULL) {
            jinn_free(k);
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
        link_lock(l, k);
        prev = k;
    }
    return 0;
}
