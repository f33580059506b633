/* lock.c - see lock.h. */
#include "fsm/lock.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/fatal.h"

static int name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_lock *x = jinn_tree_entry(a, struct jinn_lock, by_name);
    const struct jinn_lock *y = jinn_tree_entry(b, struct jinn_lock, by_name);
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Tokens are NOT unique: every grant made by one command (an expiry or
 * release passing several locks to their lines) carries that command's
 * index. The name is, so (expires_at, token, name) is a total order. */
static int expiry_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_lock *x = jinn_tree_entry(a, struct jinn_lock, by_expiry);
    const struct jinn_lock *y = jinn_tree_entry(b, struct jinn_lock, by_expiry);
    if (x->expires_at != y->expires_at) {
        return x->expires_at < y->expires_at ? -1 : 1;
    }
    if (x->token != y->token) {
        return x->token < y->token ? -1 : 1;
    }
    return name_cmp(&x->by_name, &y->by_name);
}

#define WAITER(n, member) jinn_tree_entry(n, struct jinn_lock_waiter, member)

static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);
    return c ? c : (alen > blen) - (alen < blen);
}

/* The line: by lock name, then arrival (raft index). */
static int line_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_lock_waiter *x = WAITER(a, in_line), *y = WAITER(b, in_line);
    int c = bytes_cmp(x->name, x->name_len, y->name, y->name_len);
    return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* (deadline, id, name): one acquire makes one waiter, but the name keeps
 * the order total whatever a snapshot holds. */
static int line_exp_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    const struct jinn_lock_waiter *x = WAITER(a, by_deadline), *y = WAITER(b, by_deadline);
    if (x->deadline != y->deadline) {
        return x->deadline < y->deadline ? -1 : 1;
    }
    if (x->id != y->id) {
        return x->id < y->id ? -1 : 1;
    }
    return bytes_cmp(x->name, x->name_len, y->name, y->name_len);
}

void jinn_locks_init(struct jinn_locks *l)
{
    jinn_tree_init(&l->by_name, name_cmp);
    jinn_tree_init(&l->by_expiry, expiry_cmp);
    jinn_tree_init(&l->line, line_cmp);
    jinn_tree_init(&l->line_exp, line_exp_cmp);
}

static void free_by_key(struct jinn_tree_node *n)
{
    jinn_free(jinn_tree_entry(n, struct jinn_lock, by_name));
}

static void free_waiter(struct jinn_tree_node *n) { jinn_free(WAITER(n, in_line)); }

void jinn_locks_clear(struct jinn_locks *l)
{
    jinn_tree_release_all(&l->by_name, free_by_key);
    jinn_tree_release_all(&l->line, free_waiter);
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
    jinn_fsm_unlink(&l->by_name, &k->by_name, "locks by name");
    jinn_fsm_unlink(&l->by_expiry, &k->by_expiry, "locks by expiry");
}

static void link_lock(struct jinn_locks *l, struct jinn_lock *k)
{
    jinn_fsm_link(&l->by_name, &k->by_name, "locks by name");
    jinn_fsm_link(&l->by_expiry, &k->by_expiry, "locks by expiry");
}

static struct jinn_lock *lock_new(struct jinn_slice name, struct jinn_slice owner);

static void unlink_waiter(struct jinn_locks *l, struct jinn_lock_waiter *w)
{
    jinn_fsm_unlink(&l->line, &w->in_line, "lock line");
    jinn_fsm_unlink(&l->line_exp, &w->by_deadline, "lock line by deadline");
}

/* The lock `name` was just freed by the command at index: the first in
 * line, if any, gets it (token index). A waiter that cannot be granted for
 * want of memory stops the replica, as any failed apply does. */
static int grant_next(struct jinn_locks *l, const char *name, size_t len, uint64_t index,
                      uint64_t now)
{
    struct jinn_lock_waiter probe;
    struct jinn_tree_iter it;
    struct jinn_tree_node *n;
    struct jinn_lock_waiter *w;
    struct jinn_slice sname, sowner;
    struct jinn_lock *k;

    probe.name = name;
    probe.name_len = len;
    probe.id = 0;
    n = jinn_tree_seek(&l->line, &probe.in_line, &it);
    if (n == NULL) {
        return JINN_OK;
    }
    w = WAITER(n, in_line);
    if (bytes_cmp(w->name, w->name_len, name, len) != 0) {
        return JINN_OK;
    }
    sname.p = (const uint8_t *)w->name;
    sname.len = w->name_len;
    sowner.p = (const uint8_t *)w->owner;
    sowner.len = w->owner_len;
    k = lock_new(sname, sowner);
    if (k == NULL) {
        return JINN_ENOMEM;
    }
    k->token = index;
    k->request = w->id;
    k->granted_at = now;
    k->ttl_ms = w->ttl_ms;
    k->expires_at = jinn_fsm_deadline(now, w->ttl_ms);
    unlink_waiter(l, w);
    jinn_free(w);
    link_lock(l, k);
    return JINN_OK;
}

void jinn_locks_expire(struct jinn_locks *l, uint64_t index, uint64_t now)
{
    struct jinn_tree_node *n;
    /* Waiters whose wait ended leave the line first: they gave up. */
    while ((n = jinn_tree_first(&l->line_exp)) != NULL && WAITER(n, by_deadline)->deadline <= now) {
        struct jinn_lock_waiter *w = WAITER(n, by_deadline);
        unlink_waiter(l, w);
        jinn_free(w);
    }
    while ((n = jinn_tree_first(&l->by_expiry)) != NULL) {
        struct jinn_lock *k = jinn_tree_entry(n, struct jinn_lock, by_expiry);
        char name[JINN_LOCK_NAME_MAX];
        size_t len = k->name_len;
        if (k->expires_at > now) {
            break;
        }
        memcpy(name, k->name, len);
        unlink_lock(l, k);
        jinn_free(k);
        if (grant_next(l, name, len, index, now) != JINN_OK) {
            jinn_fsm_fatal("out of memory granting expired lock to its line");
        }
    }
}

bool jinn_locks_waiting(const struct jinn_locks *l, const char *name, size_t len, uint64_t id)
{
    struct jinn_lock_waiter probe;
    probe.name = name;
    probe.name_len = len;
    probe.id = id;
    return jinn_tree_find(&l->line, &probe.in_line) != NULL;
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

/* A waiter for c at index (not yet in the line), or NULL. */
static struct jinn_lock_waiter *waiter_new(uint64_t index, uint64_t now, const struct jinn_cmd *c)
{
    struct jinn_lock_waiter *w;
    char *p;
    w = jinn_malloc(sizeof *w + c->lock.name.len + c->lock.owner.len + 2);
    if (w == NULL) {
        return NULL;
    }
    memset(w, 0, sizeof *w);
    p = (char *)(w + 1);
    memcpy(p, c->lock.name.p, c->lock.name.len);
    p[c->lock.name.len] = '\0';
    w->name = p;
    w->name_len = c->lock.name.len;
    p += c->lock.name.len + 1;
    memcpy(p, c->lock.owner.p, c->lock.owner.len);
    p[c->lock.owner.len] = '\0';
    w->owner = p;
    w->owner_len = c->lock.owner.len;
    w->id = index;
    w->ttl_ms = c->lock.ttl_ms;
    w->deadline = jinn_fsm_deadline(now, c->lock.wait_ms);
    return w;
}

static int enqueue(struct jinn_locks *l, uint64_t index, uint64_t now, const struct jinn_cmd *c)
{
    struct jinn_lock_waiter *w;
    if (l->line.count >= JINN_LOCKS_MAX) {
        return JINN_EFULL;
    }
    w = waiter_new(index, now, c);
    if (w == NULL) {
        return JINN_ENOMEM;
    }
    jinn_fsm_link(&l->line, &w->in_line, "lock line");
    jinn_fsm_link(&l->line_exp, &w->by_deadline, "lock line by deadline");
    return JINN_EQUEUED;
}

int jinn_locks_acquire(struct jinn_locks *l, uint64_t index, uint64_t now,
                       const struct jinn_cmd *c, uint64_t *token)
{
    struct jinn_lock *held = find(l, (const char *)c->lock.name.p, c->lock.name.len);
    struct jinn_lock *k;

    if (held != NULL) {
        *token = held->token;
        if (c->lock.wait_ms == 0) {
            return JINN_ECONFLICT;
        }
        return enqueue(l, index, now, c);
    }
    if (l->by_name.count >= JINN_LOCKS_MAX) {
        return JINN_EFULL;
    }
    k = lock_new(c->lock.name, c->lock.owner);
    if (k == NULL) {
        return JINN_ENOMEM;
    }
    k->token = index;
    k->request = index;
    k->granted_at = now;
    k->ttl_ms = c->lock.ttl_ms;
    k->expires_at = jinn_fsm_deadline(now, c->lock.ttl_ms);
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
    jinn_fsm_unlink(&l->by_expiry, &k->by_expiry, "locks by expiry");
    if (c->lock.ttl_ms != 0) {
        k->ttl_ms = c->lock.ttl_ms;
    }
    k->expires_at = jinn_fsm_deadline(now, k->ttl_ms);
    jinn_fsm_link(&l->by_expiry, &k->by_expiry, "locks by expiry");
    return JINN_OK;
}

int jinn_locks_release(struct jinn_locks *l, uint64_t index, uint64_t now,
                       const struct jinn_cmd *c)
{
    struct jinn_lock *k = find(l, (const char *)c->lock.name.p, c->lock.name.len);
    if (k == NULL || k->token != c->lock.token) {
        return JINN_ECONFLICT;
    }
    unlink_lock(l, k);
    jinn_free(k);
    return grant_next(l, (const char *)c->lock.name.p, c->lock.name.len, index, now);
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
    struct jinn_tree_node *w = jinn_tree_first(&l->line_exp);
    uint64_t due = n ? jinn_tree_entry(n, struct jinn_lock, by_expiry)->expires_at : 0;
    if (w != NULL && (due == 0 || WAITER(w, by_deadline)->deadline < due)) {
        due = WAITER(w, by_deadline)->deadline;
    }
    return due;
}

/* Snapshot section: u64 count, then per lock in name order: name, owner,
 * u64 token, granted_at, expires_at, ttl_ms, request; then u64 waiters and
 * per waiter in line order: name, owner, id, ttl_ms, deadline. */
void jinn_locks_encode(const struct jinn_locks *l, struct jinn_wbuf *w)
{
    struct jinn_tree_iter it;
    jinn_wbuf_put_u64(w, l->by_name.count);
    for (const struct jinn_lock *k = jinn_locks_next(l, NULL); k; k = jinn_locks_next(l, k)) {
        jinn_wbuf_put_bytes(w, k->name, k->name_len);
        jinn_wbuf_put_bytes(w, k->owner, k->owner_len);
        jinn_wbuf_put_u64(w, k->token);
        jinn_wbuf_put_u64(w, k->granted_at);
        jinn_wbuf_put_u64(w, k->expires_at);
        jinn_wbuf_put_u64(w, k->ttl_ms);
        jinn_wbuf_put_u64(w, k->request);
    }
    jinn_wbuf_put_u64(w, l->line.count);
    for (struct jinn_tree_node *n = jinn_tree_seek(&l->line, NULL, &it); n;
         n = jinn_tree_next(&it)) {
        const struct jinn_lock_waiter *x = WAITER(n, in_line);
        jinn_wbuf_put_bytes(w, x->name, x->name_len);
        jinn_wbuf_put_bytes(w, x->owner, x->owner_len);
        jinn_wbuf_put_u64(w, x->id);
        jinn_wbuf_put_u64(w, x->ttl_ms);
        jinn_wbuf_put_u64(w, x->deadline);
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
        k->request = jinn_rbuf_get_u64(r);
        /* Names strictly increasing; with the name in the expiry order,
         * neither insert can then find a duplicate. */
        if (r->failed || k->token == 0 || (prev && name_cmp(&prev->by_name, &k->by_name) >= 0) ||
            jinn_tree_insert(&l->by_name, &k->by_name) != NULL) {
            jinn_free(k);
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
        if (jinn_tree_insert(&l->by_expiry, &k->by_expiry) != NULL) {
            jinn_tree_remove(&l->by_name, &k->by_name);
            jinn_free(k);
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
        prev = k;
    }
    count = jinn_rbuf_get_u64(r);
    if (r->failed || count > JINN_LOCKS_MAX) {
        jinn_locks_clear(l);
        return JINN_ECORRUPT;
    }
    for (uint64_t i = 0; i < count; i++) {
        struct jinn_cmd c;
        struct jinn_lock_waiter *w;
        uint64_t id, deadline;
        memset(&c, 0, sizeof c);
        c.lock.name.len = jinn_rbuf_get_bytes(r, &c.lock.name.p, JINN_LOCK_NAME_MAX);
        c.lock.owner.len = jinn_rbuf_get_bytes(r, &c.lock.owner.p, JINN_LOCK_OWNER_MAX);
        id = jinn_rbuf_get_u64(r);
        c.lock.ttl_ms = jinn_rbuf_get_u64(r);
        deadline = jinn_rbuf_get_u64(r);
        if (r->failed || c.lock.name.len == 0 || id == 0 ||
            jinn_locks_waiting(l, (const char *)c.lock.name.p, c.lock.name.len, id)) {
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
        /* waiter_new computes the deadline from a wait; give it the stored one. */
        c.lock.wait_ms = deadline;
        w = waiter_new(id, 0, &c);
        if (w == NULL) {
            jinn_locks_clear(l);
            return JINN_ENOMEM;
        }
        if (jinn_tree_insert(&l->line, &w->in_line) != NULL) {
            jinn_free(w);
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
        if (jinn_tree_insert(&l->line_exp, &w->by_deadline) != NULL) {
            jinn_tree_remove(&l->line, &w->in_line);
            jinn_free(w);
            jinn_locks_clear(l);
            return JINN_ECORRUPT;
        }
    }
    return 0;
}

size_t jinn_locks_line_length(const struct jinn_locks *l, const char *name, size_t len)
{
    struct jinn_lock_waiter probe;
    struct jinn_tree_iter it;
    size_t n = 0;
    probe.name = name;
    probe.name_len = len;
    probe.id = 0;
    for (struct jinn_tree_node *t = jinn_tree_seek(&l->line, &probe.in_line, &it); t;
         t = jinn_tree_next(&it)) {
        const struct jinn_lock_waiter *w = WAITER(t, in_line);
        if (bytes_cmp(w->name, w->name_len, name, len) != 0) {
            break;
        }
        n++;
    }
    return n;
}

size_t jinn_locks_drop_waiters_before(struct jinn_locks *l, uint64_t index)
{
    size_t dropped = 0;
    struct jinn_tree_iter it;
    struct jinn_tree_node *n = jinn_tree_seek(&l->line, NULL, &it);
    while (n != NULL) {
        struct jinn_lock_waiter *w = WAITER(n, in_line), probe;
        char name[JINN_LOCK_NAME_MAX];
        if (w->id >= index) {
            n = jinn_tree_next(&it);
            continue;
        }
        /* The tree must not change under an iterator: remove, then seek
         * again just past where the removed waiter stood. */
        memcpy(name, w->name, w->name_len);
        probe.name = name;
        probe.name_len = w->name_len;
        probe.id = w->id;
        unlink_waiter(l, w);
        jinn_free(w);
        dropped++;
        n = jinn_tree_seek(&l->line, &probe.in_line, &it);
    }
    return dropped;
}

int jinn_locks_withdraw(struct jinn_locks *l, const struct jinn_cmd *c, uint64_t *token)
{
    struct jinn_lock_waiter probe;
    struct jinn_tree_node *n;
    const struct jinn_lock *k;

    *token = 0;
    probe.name = (const char *)c->lock.name.p;
    probe.name_len = c->lock.name.len;
    probe.id = c->lock.token;
    n = jinn_tree_find(&l->line, &probe.in_line);
    if (n != NULL) {
        struct jinn_lock_waiter *w = WAITER(n, in_line);
        unlink_waiter(l, w);
        jinn_free(w);
        return JINN_OK;
    }
    /* Granted before the withdrawal got here: the grant stands and the
     * acquirer is told so (it holds the lock and its token). */
    k = find(l, (const char *)c->lock.name.p, c->lock.name.len);
    if (k != NULL && k->request == c->lock.token) {
        *token = k->token;
        return JINN_OK;
    }
    return JINN_ENOTFOUND;
}
