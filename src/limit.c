/* limit.c - see limit.h.
 *
 * Two chained hash maps: addresses with open connections (an entry lives
 * while its address has one; at most JINN_LIMIT_ADDRS_MAX) and tokens (an
 * entry keeps the token's bucket and in-flight count; at most
 * JINN_LIMIT_TOKENS_MAX, idle ones evicted to make room). The hash is
 * salted per process, so a client choosing addresses or names cannot aim
 * them all at one chain. */
#include "limit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"

#define BUCKETS 4096 /* chains of both maps */
#define MILLI 1000u  /* a request costs one token = 1000 milli-tokens */

struct addr_entry {
    struct addr_entry *next;
    uint32_t ip;
    unsigned open;
};

struct jinn_limit_token {
    struct jinn_limit_token *next;
    uint64_t milli;   /* milli-tokens in the bucket */
    uint64_t last_ms; /* of the last refill */
    unsigned inflight;
    char name[JINN_LIMIT_TOKEN_NAME_MAX + 1];
};

struct jinn_limit {
    struct jinn_limit_config cfg;
    uint64_t salt;
    bool (*is_peer)(void *data, uint32_t ip);
    void *peer_data;
    struct addr_entry *addrs[BUCKETS];
    struct jinn_limit_token *tokens[BUCKETS];
    struct jinn_limit_stats stats;
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

static size_t addr_bucket(const struct jinn_limit *l, uint32_t ip)
{
    return (size_t)(mix(l->salt ^ ip) % BUCKETS);
}

static size_t token_bucket(const struct jinn_limit *l, const char *name)
{
    uint64_t h = l->salt;
    for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
        h = (h ^ *p) * UINT64_C(0x100000001b3);
    }
    return (size_t)(mix(h) % BUCKETS);
}

struct jinn_limit *jinn_limit_create(const struct jinn_limit_config *cfg)
{
    struct jinn_limit *l = jinn_calloc(1, sizeof *l);
    struct timespec ts;
    if (l == NULL) {
        return NULL;
    }
    l->cfg = *cfg;
    if (l->cfg.burst == 0) {
        l->cfg.burst = l->cfg.rate;
    }
    if (l->cfg.reserved_conns >= l->cfg.max_connections) {
        l->cfg.reserved_conns = l->cfg.max_connections / 2; /* config.c checks; stay sane */
    }
    /* Not a secret, only not predictable from outside: chains stay short. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    l->salt = mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)l);
    return l;
}

void jinn_limit_destroy(struct jinn_limit *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < BUCKETS; i++) {
        for (struct addr_entry *a = l->addrs[i], *next; a != NULL; a = next) {
            next = a->next;
            jinn_free(a);
        }
        for (struct jinn_limit_token *t = l->tokens[i], *next; t != NULL; t = next) {
            next = t->next;
            jinn_free(t);
        }
    }
    jinn_free(l);
}

void jinn_limit_set_peer_check(struct jinn_limit *l, bool (*is_peer)(void *data, uint32_t ip),
                               void *data)
{
    l->is_peer = is_peer;
    l->peer_data = data;
}

bool jinn_limit_is_peer(const struct jinn_limit *l, uint32_t ip)
{
    return ip != 0 && l->is_peer != NULL && l->is_peer(l->peer_data, ip);
}

/* ---- connections per address ---------------------------------------------- */

int jinn_limit_conn_open(struct jinn_limit *l, uint32_t ip, enum jinn_limit_conn_kind *kind)
{
    size_t b;
    struct addr_entry *a;

    *kind = JINN_LIMIT_CONN_NONE;
    if (jinn_limit_is_peer(l, ip)) {
        /* Peers may use every connection, the reserved ones included; the
         * server's own max_connections check still bounds them. */
        l->stats.conns_peer++;
        *kind = JINN_LIMIT_CONN_PEER;
        return 0;
    }
    if (l->stats.conns_client >= (uint64_t)(l->cfg.max_connections - l->cfg.reserved_conns)) {
        l->stats.conns_refused_total++;
        return JINN_EBUSY;
    }
    b = addr_bucket(l, ip);
    for (a = l->addrs[b]; a != NULL && a->ip != ip; a = a->next) {
    }
    if (a == NULL) {
        if (l->stats.addrs >= JINN_LIMIT_ADDRS_MAX) {
            l->stats.conns_refused_total++;
            return JINN_EBUSY;
        }
        a = jinn_calloc(1, sizeof *a);
        if (a == NULL) {
            return JINN_ENOMEM;
        }
        a->ip = ip;
        a->next = l->addrs[b];
        l->addrs[b] = a;
        l->stats.addrs++;
    }
    if (l->cfg.conns_per_addr != 0 && a->open >= l->cfg.conns_per_addr) {
        l->stats.conns_refused_addr++;
        return JINN_ETOOMANY; /* a has open > 0: it stays */
    }
    a->open++;
    l->stats.conns_client++;
    *kind = JINN_LIMIT_CONN_CLIENT;
    return 0;
}

void jinn_limit_conn_close(struct jinn_limit *l, uint32_t ip, enum jinn_limit_conn_kind kind)
{
    struct addr_entry **pa;
    size_t b;

    if (kind == JINN_LIMIT_CONN_PEER) {
        l->stats.conns_peer--;
        return;
    }
    if (kind != JINN_LIMIT_CONN_CLIENT) {
        return;
    }
    l->stats.conns_client--;
    b = addr_bucket(l, ip);
    for (pa = &l->addrs[b]; *pa != NULL && (*pa)->ip != ip; pa = &(*pa)->next) {
    }
    if (*pa == NULL) {
        return; /* cannot happen: every counted connection has its entry */
    }
    if (--(*pa)->open == 0) {
        struct addr_entry *dead = *pa;
        *pa = dead->next;
        jinn_free(dead);
        l->stats.addrs--;
    }
}

/* ---- requests per token ------------------------------------------------------- */

static uint64_t bucket_cap(const struct jinn_limit *l)
{
    return (uint64_t)l->cfg.burst * MILLI;
}

static void refill(const struct jinn_limit *l, struct jinn_limit_token *t, uint64_t now_ms)
{
    if (now_ms > t->last_ms) {
        /* rate tokens/s = rate milli-tokens/ms; a day refills any bucket
         * and keeps the product far from overflowing */
        uint64_t elapsed = now_ms - t->last_ms > 86400000u ? 86400000u : now_ms - t->last_ms;
        uint64_t add = elapsed * (uint64_t)l->cfg.rate;
        t->milli = add >= bucket_cap(l) - t->milli ? bucket_cap(l) : t->milli + add;
        t->last_ms = now_ms;
    }
}

/* An entry nobody is using and whose bucket is full again carries no state
 * a new entry would not have. */
static bool token_idle(const struct jinn_limit *l, struct jinn_limit_token *t, uint64_t now_ms)
{
    refill(l, t, now_ms);
    return t->inflight == 0 && t->milli >= bucket_cap(l);
}

static bool evict_one(struct jinn_limit *l, uint64_t now_ms)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        for (struct jinn_limit_token **pt = &l->tokens[i]; *pt != NULL; pt = &(*pt)->next) {
            if (token_idle(l, *pt, now_ms)) {
                struct jinn_limit_token *dead = *pt;
                *pt = dead->next;
                jinn_free(dead);
                l->stats.tokens--;
                l->stats.tokens_evicted++;
                return true;
            }
        }
    }
    return false;
}

int jinn_limit_request_begin(struct jinn_limit *l, const char *token, uint64_t now_ms,
                             bool privileged, struct jinn_limit_token **ticket,
                             unsigned *retry_after_s)
{
    size_t b, len = strlen(token);
    struct jinn_limit_token *t;

    *ticket = NULL;
    *retry_after_s = 1;
    if (privileged || (l->cfg.rate == 0 && l->cfg.concurrent == 0)) {
        return 0;
    }
    if (len > JINN_LIMIT_TOKEN_NAME_MAX) {
        len = JINN_LIMIT_TOKEN_NAME_MAX; /* token names are shorter (auth.h) */
    }
    b = token_bucket(l, token);
    for (t = l->tokens[b]; t != NULL; t = t->next) {
        if (strncmp(t->name, token, len) == 0 && t->name[len] == '\0') {
            break;
        }
    }
    if (t == NULL) {
        if (l->stats.tokens >= JINN_LIMIT_TOKENS_MAX && !evict_one(l, now_ms)) {
            /* Every entry is busy: a flood of names, not of one token. */
            l->stats.requests_refused_concurrent++;
            return JINN_ETOOMANY;
        }
        t = jinn_calloc(1, sizeof *t);
        if (t == NULL) {
            return JINN_ENOMEM;
        }
        memcpy(t->name, token, len);
        t->milli = bucket_cap(l);
        t->last_ms = now_ms;
        t->next = l->tokens[b];
        l->tokens[b] = t;
        l->stats.tokens++;
    }
    if (l->cfg.concurrent != 0 && t->inflight >= l->cfg.concurrent) {
        l->stats.requests_refused_concurrent++;
        return JINN_ETOOMANY;
    }
    if (l->cfg.rate != 0) {
        refill(l, t, now_ms);
        if (t->milli < MILLI) {
            uint64_t wait_ms = (MILLI - t->milli + l->cfg.rate - 1) / l->cfg.rate;
            *retry_after_s = (unsigned)((wait_ms + 999) / 1000);
            if (*retry_after_s == 0) {
                *retry_after_s = 1;
            }
            l->stats.requests_refused_rate++;
            return JINN_ETOOMANY;
        }
        t->milli -= MILLI;
    }
    t->inflight++;
    *ticket = t;
    return 0;
}

void jinn_limit_request_end(struct jinn_limit *l, struct jinn_limit_token *ticket)
{
    (void)l;
    if (ticket != NULL && ticket->inflight > 0) {
        ticket->inflight--;
    }
}

void jinn_limit_stats(const struct jinn_limit *l, struct jinn_limit_stats *out)
{
    *out = l->stats;
}
