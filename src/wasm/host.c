/* host.c - see host.h. Every host call becomes one request (two for a
 * refreshed mutex or a WITH statement that turns out to write) to this
 * node's own HTTP API through fetch.c, so namespace policies, forwarding to
 * the leader, fencing and every limit are exactly those of any client.
 *
 * Everything a guest passes is hostile: names are checked against the
 * API's own rules (and stricter ones where a name ends up in a header)
 * before they are percent-encoded into a target; sizes are bounded before
 * anything is copied. A call whose input is refused never leaves the node.
 *
 * Locks: an invocation keeps the locks it holds in acquisition order. Its
 * KV and SQL writes carry X-Jinn-Fence with the most recently acquired one
 * still held, so once that lock has expired (the guest paused past its
 * TTL) and someone else took it, the state machine refuses the write in
 * the same apply that would have made it. What is still held at the end is
 * released in the background with a few retries; the TTL frees it if all
 * of them fail. */
#include "wasm/host.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/random.h>
#include <uv.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"
#include "fetch.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"
#include "log.h"
#include "wasm/proto.h"

#define HOST_FAIL UINT32_C(0xFFFFFFFF)
#define HOST_NS_MAX 64                /* namespaces and database names */
#define HOST_LOCKS_MAX 64             /* locks one invocation may hold at once */
#define HOST_SQL_MAX (256u << 10)     /* statement text (the API's own limit) */
#define HOST_DB_RESULT_MAX (2u << 20) /* query answers rewritten on the loop (a few ms/MiB) */
#define HOST_QUEUE_PREFIX "WORKERS_"
#define HOST_QUEUE_PREFIX_LEN 8
#define HOST_ENQUEUE_NAME_MAX (JINN_QUEUE_NAME_MAX - HOST_QUEUE_PREFIX_LEN)
#define HOST_RELEASE_TRIES 6      /* background releases at the end: ~8 s, past an election */
#define HOST_RELEASE_DELAY_MS 250 /* doubled after every failed try */
#define HOST_LOG_PER_SEC 50       /* log lines per second, all functions together */
#define HOST_LOG_LINE_MAX 512
#define HOST_TRACE_MAX 64
#define HOST_STATS_MAX JINN_FN_MAX /* functions with their own counters */
#define HOST_FETCH_MARGIN_MS 1000  /* past request_timeout: the API answers first */

struct held {
    struct held *next;
    uint64_t token;
    size_t name_len;
    char name[]; /* NUL-terminated */
};

struct stats {
    char fn[JINN_FN_NAME_MAX + 1];
    struct jinn_wasm_host_counters c;
};

struct call;
struct release;

struct jinn_wasm_host {
    struct jinn_api *api;
    uv_loop_t *loop;
    char url[80]; /* this node's own API, e.g. http://127.0.0.1:8080 */
    uint64_t fetch_timeout_ms;
    struct jinn_wasm_inv *open;
    struct call *pending;
    struct release *releases;
    struct stats *stats; /* sorted by fn */
    unsigned n_stats, cap_stats;
    struct stats other; /* functions past HOST_STATS_MAX */
    uint64_t log_window_ms;
    unsigned log_in_window;
    /* Random per start of the node: lock owners stay unique across
     * restarts (invocation ids start again at 1). */
    uint32_t boot;
    uint64_t log_dropped;
    jinn_wasm_host_log_fn log_fn;
    void *log_data;
};

struct jinn_wasm_inv {
    struct jinn_wasm_host *h;
    struct jinn_wasm_inv *prev, *next; /* h->open while not ended */
    unsigned refs;                     /* the owner's, plus one per call in flight */
    bool ended;
    char fn[JINN_FN_NAME_MAX + 1];
    char trace[HOST_TRACE_MAX + 1];
    char owner[JINN_LOCK_OWNER_MAX + 1];
    char ns[HOST_NS_MAX + 1];
    char db[HOST_NS_MAX + 1];
    char **kv_read, **kv_write;
    size_t *kv_read_len, *kv_write_len;
    unsigned n_kv_read, n_kv_write;
    uint64_t timeout_ms;
    uint64_t min_index; /* the highest write index seen: reads wait for it */
    struct held *held;  /* acquisition order; the last one fences */
    unsigned n_held;
};

enum step {
    STEP_KV_GET,
    STEP_KV_SET,
    STEP_LOCK,
    STEP_REFRESH,
    STEP_UNLOCK,
    STEP_QUERY,
    STEP_EXEC,
    STEP_ENQUEUE,
};

struct call {
    struct jinn_wasm_host *h;
    struct jinn_wasm_inv *inv;
    struct call *prev, *next; /* h->pending while a request is in flight */
    enum step step;
    uint32_t outmax;
    jinn_wasm_reply_fn reply;
    void *data;
    uint64_t ttl_ms;
    uint64_t token;                     /* REFRESH / UNLOCK: the token held */
    char fence[JINN_LOCK_NAME_MAX + 1]; /* the fencing lock of a write, "" = none */
    bool with;                          /* a WITH statement: may be retried as an exec */
    size_t text_len;                    /* key, lock name or SQL */
    char text[];
};

struct release {
    struct jinn_wasm_host *h; /* NULL once the host is gone: no more tries */
    struct release *prev, *next;
    uv_timer_t timer;
    bool timer_open;
    unsigned tries;
    uint64_t token;
    char fn[JINN_FN_NAME_MAX + 1];
    size_t name_len;
    char name[];
};

/* ---- small helpers ---- */

static void put_escaped(struct jinn_wbuf *w, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            jinn_wbuf_put_u8(w, c);
        } else {
            uint8_t e[3] = {'%', (uint8_t)hex[c >> 4], (uint8_t)hex[c & 15]};
            jinn_wbuf_put_raw(w, e, 3);
        }
    }
}

/* Printable ASCII as is, the rest as \xNN, at most 80 input bytes. */
static void quote_bytes(char *out, size_t cap, const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t o = 0;
    size_t shown = n < 80 ? n : 80;
    for (size_t i = 0; i < shown && o + 5 < cap; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\') {
            out[o++] = (char)s[i];
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02X", s[i]);
        }
    }
    if (shown < n && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o < cap ? o : cap - 1] = '\0';
}

static bool fn_name_valid(const char *p, size_t n, size_t max)
{
    if (n == 0 || n > max || !((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= '0' && p[0] <= '9'))) {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

/* Namespaces 1-64 of A-Z a-z 0-9 _ - . ; databases the same without '.'. */
static bool ns_valid(const char *s, bool dot)
{
    size_t n = strlen(s);
    if (n == 0 || n > HOST_NS_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || (dot && c == '.'))) {
            return false;
        }
    }
    return true;
}

/* KV keys: 1-1024 bytes of UTF-8 without NUL (the API's rule; NUL would
 * end a C guest's string anyway). */
static bool key_valid(const char *p, size_t n)
{
    return n > 0 && n <= JINN_KV_KEY_MAX && memchr(p, '\0', n) == NULL && jinn_utf8_valid(p, n);
}

/* Lock names: the API's 1-256 bytes of UTF-8, and, because the name goes
 * into an X-Jinn-Fence header, no control byte and no blank at either end
 * (a header value is trimmed). */
static bool lock_name_valid(const char *p, size_t n)
{
    if (n == 0 || n > JINN_LOCK_NAME_MAX || !jinn_utf8_valid(p, n) || p[0] == ' ' ||
        p[n - 1] == ' ') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

static bool has_prefix(char **prefixes, const size_t *lens, unsigned n, const char *key,
                       size_t key_len)
{
    if (n == 0) {
        return true; /* none listed: the whole namespace */
    }
    for (unsigned i = 0; i < n; i++) {
        if (lens[i] <= key_len && memcmp(prefixes[i], key, lens[i]) == 0) {
            return true;
        }
    }
    return false;
}

static const char *call_name(int call)
{
    switch (call) {
    case JINN_SBX_LOG:
        return "host_log";
    case JINN_SBX_KV_SET:
        return "host_kv_set";
    case JINN_SBX_KV_GET:
        return "host_kv_get";
    case JINN_SBX_MUTEX_LOCK:
        return "host_mutex_lock";
    case JINN_SBX_MUTEX_UNLOCK:
        return "host_mutex_unlock";
    case JINN_SBX_DB_QUERY:
        return "host_db_query";
    case JINN_SBX_ENQUEUE:
        return "host_enqueue";
    default:
        return "unknown";
    }
}

static int step_call(enum step s)
{
    switch (s) {
    case STEP_KV_GET:
        return JINN_SBX_KV_GET;
    case STEP_KV_SET:
        return JINN_SBX_KV_SET;
    case STEP_LOCK:
    case STEP_REFRESH:
        return JINN_SBX_MUTEX_LOCK;
    case STEP_UNLOCK:
        return JINN_SBX_MUTEX_UNLOCK;
    case STEP_QUERY:
    case STEP_EXEC:
        return JINN_SBX_DB_QUERY;
    case STEP_ENQUEUE:
        return JINN_SBX_ENQUEUE;
    }
    return 0;
}

/* ---- counters ---- */

/* Where fn is, or would go, in the sorted stats array. */
static unsigned stats_search(const struct jinn_wasm_host *h, const char *fn, bool *found)
{
    unsigned lo = 0, hi = h->n_stats;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        int c = strcmp(h->stats[mid].fn, fn);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = false;
    return lo;
}

static struct stats *stats_of(struct jinn_wasm_host *h, const char *fn)
{
    bool found;
    unsigned lo = stats_search(h, fn, &found);
    if (found) {
        return &h->stats[lo];
    }
    if (h->n_stats == HOST_STATS_MAX) {
        return &h->other;
    }
    if (h->n_stats == h->cap_stats) {
        unsigned cap = h->cap_stats ? h->cap_stats * 2 : 16;
        struct stats *grown = jinn_realloc(h->stats, cap * sizeof *grown);
        if (grown == NULL) {
            return &h->other;
        }
        h->stats = grown;
        h->cap_stats = cap;
    }
    memmove(&h->stats[lo + 1], &h->stats[lo], (h->n_stats - lo) * sizeof *h->stats);
    memset(&h->stats[lo], 0, sizeof h->stats[lo]);
    snprintf(h->stats[lo].fn, sizeof h->stats[lo].fn, "%s", fn);
    h->n_stats++;
    return &h->stats[lo];
}

static const struct stats *stats_find(const struct jinn_wasm_host *h, const char *fn)
{
    bool found;
    unsigned i = stats_search(h, fn, &found);
    return found ? &h->stats[i] : NULL;
}

/* ---- logging ---- */

static void host_log(struct jinn_wasm_host *h, const char *fn, const char *trace,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void host_log(struct jinn_wasm_host *h, const char *fn, const char *trace,
                     const char *fmt, ...)
{
    char line[HOST_LOG_LINE_MAX];
    uint64_t now = uv_now(h->loop);
    va_list ap;

    if (now - h->log_window_ms >= 1000) {
        if (h->log_dropped > 0) {
            jinn_warn("wasm host: %" PRIu64 " log lines about host calls dropped (over %d/s)",
                      h->log_dropped, HOST_LOG_PER_SEC);
        }
        h->log_window_ms = now;
        h->log_in_window = 0;
        h->log_dropped = 0;
    }
    if (h->log_in_window >= HOST_LOG_PER_SEC) {
        h->log_dropped++;
        return;
    }
    h->log_in_window++;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    jinn_warn("fn %s trace %s: %s", fn, trace[0] ? trace : "-", line);
    if (h->log_fn != NULL) {
        h->log_fn(h->log_data, fn, trace, line);
    }
}

#define INV_LOG(inv, ...) host_log((inv)->h, (inv)->fn, (inv)->trace, __VA_ARGS__)

/* ---- invocations ---- */

static void inv_unref(struct jinn_wasm_inv *inv)
{
    if (--inv->refs > 0) {
        return;
    }
    for (unsigned i = 0; inv->kv_read != NULL && i < inv->n_kv_read; i++) {
        jinn_free(inv->kv_read[i]);
    }
    for (unsigned i = 0; inv->kv_write != NULL && i < inv->n_kv_write; i++) {
        jinn_free(inv->kv_write[i]);
    }
    jinn_free(inv->kv_read);
    jinn_free(inv->kv_write);
    jinn_free(inv->kv_read_len);
    jinn_free(inv->kv_write_len);
    while (inv->held != NULL) {
        struct held *x = inv->held;
        inv->held = x->next;
        jinn_free(x);
    }
    jinn_free(inv);
}

static bool copy_list(char **src, unsigned n, char ***dst, size_t **lens)
{
    if (n == 0) {
        return true;
    }
    *dst = jinn_calloc(n, sizeof **dst);
    *lens = jinn_calloc(n, sizeof **lens);
    if (*dst == NULL || *lens == NULL) {
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        (*lens)[i] = strlen(src[i]);
        (*dst)[i] = jinn_strdup(src[i]);
        if ((*dst)[i] == NULL) {
            return false;
        }
    }
    return true;
}

struct jinn_wasm_inv *jinn_wasm_inv_begin(struct jinn_wasm_host *h, const char *fn_name,
                                          const struct jinn_fn_settings *settings,
                                          uint64_t invocation_id, const char *trace_id)
{
    struct jinn_wasm_inv *inv = jinn_calloc(1, sizeof *inv);
    unsigned n_read, n_write;
    if (inv == NULL) {
        return NULL;
    }
    inv->h = h;
    inv->refs = 1;
    snprintf(inv->fn, sizeof inv->fn, "%s", fn_name);
    /* Trace ids come from clients: keep a safe subset for log lines. */
    for (size_t i = 0; trace_id != NULL && trace_id[i] != '\0' && i < HOST_TRACE_MAX; i++) {
        char ch = trace_id[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == ':';
        inv->trace[i] = ok ? ch : '?';
    }
    snprintf(inv->owner, sizeof inv->owner, "fn/%s/%s/%08" PRIx32 "-%" PRIu64, inv->fn,
             h->api->cfg->server_name, h->boot, invocation_id);
    snprintf(inv->ns, sizeof inv->ns, "%s", settings->ns[0] ? settings->ns : "default");
    snprintf(inv->db, sizeof inv->db, "%s", settings->db);
    inv->timeout_ms = settings->timeout_ms;
    /* fn.c bounds these; never trust a count past the documented limit. */
    n_read = settings->n_kv_read < JINN_FN_LIST_MAX ? settings->n_kv_read : JINN_FN_LIST_MAX;
    n_write = settings->n_kv_write < JINN_FN_LIST_MAX ? settings->n_kv_write : JINN_FN_LIST_MAX;
    inv->n_kv_read = n_read;
    inv->n_kv_write = n_write;
    if (!copy_list(settings->kv_read, n_read, &inv->kv_read, &inv->kv_read_len) ||
        !copy_list(settings->kv_write, n_write, &inv->kv_write, &inv->kv_write_len)) {
        inv_unref(inv);
        return NULL;
    }
    inv->next = h->open;
    if (h->open != NULL) {
        h->open->prev = inv;
    }
    h->open = inv;
    return inv;
}

/* ---- background releases ---- */

/* Releases not finished, hosts destroyed or not: the daemon waits (briefly)
 * for them at shutdown before it stops jinn_fetch. Loop thread only. */
static unsigned releases_open;

unsigned jinn_wasm_host_releases_open(void)
{
    return releases_open;
}

static void release_closed(uv_handle_t *hd)
{
    jinn_free(hd->data);
}

static void release_free(struct release *r)
{
    struct jinn_wasm_host *h = r->h;
    releases_open--;
    if (h != NULL) {
        if (r->prev != NULL) {
            r->prev->next = r->next;
        } else {
            h->releases = r->next;
        }
        if (r->next != NULL) {
            r->next->prev = r->prev;
        }
        r->h = NULL;
    }
    if (r->timer_open) {
        uv_close((uv_handle_t *)&r->timer, release_closed);
    } else {
        jinn_free(r);
    }
}

static void release_send(struct release *r);

static void release_timer(uv_timer_t *t)
{
    release_send(t->data);
}

static void release_done(void *data, int code, const struct jinn_http_msg *head,
                         const char *body, size_t body_len)
{
    struct release *r = data;
    struct jinn_wasm_host *h = r->h;
    (void)body;
    (void)body_len;
    /* 200 released; 409 not ours any more (expired, taken over); 404 gone. */
    if (code == JINN_OK &&
        (head->status == 200 || head->status == 409 || head->status == 404)) {
        if (h != NULL && head->status == 200) {
            stats_of(h, r->fn)->c.locks_released_at_end++;
        }
        release_free(r);
        return;
    }
    if (h == NULL || r->tries >= HOST_RELEASE_TRIES || !r->timer_open) {
        if (h != NULL) {
            stats_of(h, r->fn)->c.lock_release_failures++;
            host_log(h, r->fn, "",
                     "could not release lock \"%.64s\" (token %" PRIu64
                     ") after %u tries; its TTL frees it",
                     r->name, r->token, r->tries);
        }
        release_free(r);
        return;
    }
    uv_timer_start(&r->timer, release_timer, (uint64_t)HOST_RELEASE_DELAY_MS << (r->tries - 1),
                   0);
}

static void release_send(struct release *r)
{
    struct jinn_wbuf t;
    char auth[256];
    int rv;
    jinn_api_auth_fn_header(r->h->api, r->fn, auth, sizeof auth);
    jinn_wbuf_init(&t);
    jinn_wbuf_printf(&t, "/v1/locks/");
    put_escaped(&t, r->name, r->name_len);
    jinn_wbuf_printf(&t, "?token=%" PRIu64, r->token);
    r->tries++;
    /* Only called while the host exists (its destroy drops waiting ones). */
    rv = t.failed ? JINN_ENOMEM
                  : jinn_fetch(r->h->loop, r->h->url, "DELETE", (const char *)t.data, t.len,
                               auth, NULL, 0, r->h->fetch_timeout_ms, release_done, r);
    jinn_wbuf_free(&t);
    if (rv != 0) {
        if (r->h != NULL) {
            stats_of(r->h, r->fn)->c.lock_release_failures++;
        }
        release_free(r);
    }
}

static void release_start(struct jinn_wasm_host *h, const char *fn, const char *name,
                          size_t name_len, uint64_t token)
{
    struct release *r = jinn_calloc(1, sizeof *r + name_len + 1);
    if (r == NULL) {
        stats_of(h, fn)->c.lock_release_failures++;
        return; /* the TTL frees it */
    }
    releases_open++;
    r->h = h;
    r->token = token;
    snprintf(r->fn, sizeof r->fn, "%s", fn);
    memcpy(r->name, name, name_len);
    r->name_len = name_len;
    r->timer_open = uv_timer_init(h->loop, &r->timer) == 0;
    r->timer.data = r;
    r->next = h->releases;
    if (h->releases != NULL) {
        h->releases->prev = r;
    }
    h->releases = r;
    release_send(r);
}

/* ---- calls ---- */

static void call_unlink(struct call *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else if (c->h->pending == c) {
        c->h->pending = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

/* Answers the guest (unless the invocation ended) and frees c. */
static void call_finish(struct call *c, uint32_t result, const void *bytes, size_t len)
{
    struct jinn_wasm_inv *inv = c->inv;
    struct stats *st = stats_of(c->h, inv->fn);
    if (result == HOST_FAIL || (c->step >= STEP_QUERY && c->step <= STEP_EXEC && len >= 9 &&
                                memcmp(bytes, "[{\"error\"", 9) == 0)) {
        st->c.failed++;
    }
    if (!inv->ended) {
        c->reply(c->data, result, bytes, len);
    }
    inv_unref(inv);
    jinn_free(c);
}

static void on_response(void *data, int code, const struct jinn_http_msg *head,
                        const char *body, size_t body_len);
static void finish_error_row(struct call *c, const char *msg);

/* Sends the request for c; on failure answers the guest (fail) and frees c. */
static void call_send(struct call *c, const char *method, struct jinn_wbuf *target,
                      const char *headers, const void *body, size_t body_len)
{
    /* With tokens on, the function acts with its deployer's scope (api/auth.c). */
    struct jinn_wbuf hdr;
    char auth[256];
    int rv;
    jinn_wbuf_init(&hdr);
    jinn_api_auth_fn_header(c->h->api, c->inv->fn, auth, sizeof auth);
    jinn_wbuf_printf(&hdr, "%s%s", headers ? headers : "", auth);
    jinn_wbuf_put_u8(&hdr, 0);
    rv = target->failed || hdr.failed
             ? JINN_ENOMEM
             : jinn_fetch(c->h->loop, c->h->url, method, (const char *)target->data,
                          target->len, (const char *)hdr.data, body, body_len,
                          c->h->fetch_timeout_ms, on_response, c);
    jinn_wbuf_free(&hdr);
    jinn_wbuf_free(target);
    if (rv != 0) {
        INV_LOG(c->inv, "%s: could not reach this node's API: %s",
                call_name(step_call(c->step)), jinn_error_name(rv));
        if (c->step == STEP_QUERY || c->step == STEP_EXEC) {
            finish_error_row(c, "could not reach this node's API");
        } else {
            call_finish(c,
                        c->step == STEP_LOCK || c->step == STEP_REFRESH ||
                                c->step == STEP_UNLOCK
                            ? 0
                            : HOST_FAIL,
                        NULL, 0);
        }
        return;
    }
    c->next = c->h->pending;
    if (c->h->pending != NULL) {
        c->h->pending->prev = c;
    }
    c->h->pending = c;
}

/* The most recently acquired lock still held, or NULL. */
static const struct held *fence_of(const struct jinn_wasm_inv *inv)
{
    const struct held *last = NULL;
    for (const struct held *x = inv->held; x != NULL; x = x->next) {
        last = x;
    }
    return last;
}

/* "X-Jinn-Fence: NAME:TOKEN\r\n" (and more) for a write; c->fence names it. */
static void fence_header(struct call *c, struct jinn_wbuf *hdr)
{
    const struct held *f = fence_of(c->inv);
    c->fence[0] = '\0';
    if (f != NULL) {
        jinn_wbuf_printf(hdr, "X-Jinn-Fence: %s:%" PRIu64 "\r\n", f->name, f->token);
        snprintf(c->fence, sizeof c->fence, "%s", f->name);
        c->token = f->token;
    }
}

/* Appends min_index for reads after this invocation's own writes. */
static void read_your_writes(const struct jinn_wasm_inv *inv, struct jinn_wbuf *t, char sep)
{
    if (inv->min_index > 0) {
        jinn_wbuf_printf(t, "%cmin_index=%" PRIu64, sep, inv->min_index);
    }
}

static void note_index(struct jinn_wasm_inv *inv, const struct jinn_http_msg *head)
{
    const struct jinn_http_header *x = jinn_http_header_find(head, "x-jinn-index");
    uint64_t v = 0;
    if (x == NULL || x->value_len == 0 || x->value_len > 19) {
        return;
    }
    for (size_t i = 0; i < x->value_len; i++) {
        if (x->value[i] < '0' || x->value[i] > '9') {
            return;
        }
        v = v * 10 + (uint64_t)(x->value[i] - '0');
    }
    if (v > inv->min_index) {
        inv->min_index = v;
    }
}

/* The API's error name and message, for logs and error rows. */
static void error_text(int code, const struct jinn_http_msg *head, const char *body,
                       size_t body_len, char *out, size_t cap)
{
    json_t *j;
    if (code != JINN_OK) {
        snprintf(out, cap, "%s",
                 code == JINN_EUNKNOWN ? "no answer from this node's API "
                                         "(outcome unknown)"
                                       : "could not reach this node's API");
        return;
    }
    j = body_len > 0 && body_len < 65536 ? json_loadb(body, body_len, 0, NULL) : NULL;
    if (json_is_object(j) && json_is_string(json_object_get(j, "error"))) {
        const char *m = json_string_value(json_object_get(j, "message"));
        snprintf(out, cap, "%d %s: %s", head->status,
                 json_string_value(json_object_get(j, "error")), m ? m : "");
    } else {
        snprintf(out, cap, "HTTP %d", head->status);
    }
    json_decref(j);
}

static void finish_error_row(struct call *c, const char *msg)
{
    /* msg may end in a UTF-8 sequence cut by a bounded snprintf: drop it. */
    size_t n = strlen(msg);
    json_t *row;
    char *text;
    while (n > 0 && !jinn_utf8_valid(msg, n)) {
        n--;
    }
    row = json_pack("[{s:s%}]", "error", msg, n);
    text = row ? json_dumps(row, JSON_COMPACT) : NULL;
    json_decref(row);
    if (text == NULL) {
        call_finish(c, HOST_FAIL, NULL, 0);
        return;
    }
    if (strlen(text) > c->outmax) {
        call_finish(c, HOST_FAIL, NULL, 0);
    } else {
        call_finish(c, (uint32_t)strlen(text), text, strlen(text));
    }
    jinn_free(text);
}

static void held_remove(struct jinn_wasm_inv *inv, const char *name, size_t len)
{
    for (struct held **p = &inv->held; *p != NULL; p = &(*p)->next) {
        if ((*p)->name_len == len && memcmp((*p)->name, name, len) == 0) {
            struct held *x = *p;
            *p = x->next;
            jinn_free(x);
            inv->n_held--;
            return;
        }
    }
}

static struct held *held_find(struct jinn_wasm_inv *inv, const char *name, size_t len)
{
    for (struct held *x = inv->held; x != NULL; x = x->next) {
        if (x->name_len == len && memcmp(x->name, name, len) == 0) {
            return x;
        }
    }
    return NULL;
}

/* Appends (name, token) as the most recently acquired lock. */
static bool held_add(struct jinn_wasm_inv *inv, const char *name, size_t len, uint64_t token)
{
    struct held **p = &inv->held;
    struct held *x = jinn_malloc(sizeof *x + len + 1);
    if (x == NULL) {
        return false;
    }
    x->next = NULL;
    x->token = token;
    x->name_len = len;
    memcpy(x->name, name, len);
    x->name[len] = '\0';
    while (*p != NULL) {
        p = &(*p)->next;
    }
    *p = x;
    inv->n_held++;
    return true;
}

static uint64_t token_of(const char *body, size_t body_len)
{
    json_t *j = json_loadb(body, body_len, 0, NULL);
    json_t *t = json_object_get(j, "token");
    uint64_t token =
        json_is_integer(t) && json_integer_value(t) > 0 ? (uint64_t)json_integer_value(t) : 0;
    json_decref(j);
    return token;
}

static void send_lock(struct call *c)
{
    struct jinn_wbuf t;
    jinn_wbuf_init(&t);
    jinn_wbuf_printf(&t, "/v1/locks/");
    put_escaped(&t, c->text, c->text_len);
    jinn_wbuf_printf(&t, "?owner=");
    put_escaped(&t, c->inv->owner, strlen(c->inv->owner));
    jinn_wbuf_printf(&t, "&ttl=%" PRIu64 "ms", c->ttl_ms);
    c->step = STEP_LOCK;
    call_send(c, "POST", &t, NULL, NULL, 0);
}

static void send_exec(struct call *c)
{
    struct jinn_wbuf t, hdr;
    json_t *body = json_pack("{s:[{s:s%}]}", "statements", "sql", c->text, c->text_len);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        finish_error_row(c, "out of memory");
        return;
    }
    jinn_wbuf_init(&t);
    jinn_wbuf_init(&hdr);
    jinn_wbuf_printf(&t, "/v1/sql/%s/exec", c->inv->db);
    jinn_wbuf_printf(&hdr, "Content-Type: application/json\r\n");
    fence_header(c, &hdr);
    jinn_wbuf_put_u8(&hdr, 0);
    c->step = STEP_EXEC;
    if (hdr.failed) {
        jinn_wbuf_free(&t);
        jinn_wbuf_free(&hdr);
        jinn_free(text);
        finish_error_row(c, "out of memory");
        return;
    }
    call_send(c, "POST", &t, (const char *)hdr.data, text, strlen(text));
    jinn_wbuf_free(&hdr);
    jinn_free(text);
}

/* ---- the query answer, rewritten without building a JSON tree ----
 *
 * A query answer can be megabytes; turning it into jansson objects costs
 * ~200 ms per MiB here, far past the loop's budget. The answer comes from
 * our own API (jansson's compact output), so its values are copied as they
 * are, byte ranges found by a small scanner that checks what it skips:
 * ~7 ms per MiB (HOST_DB_RESULT_MAX bounds it). */

static const char *scan_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

/* Past one JSON string starting at p (on its quote), or NULL. */
static const char *scan_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        } else if ((unsigned char)*p < 0x20) {
            return NULL;
        }
    }
    return NULL;
}

static bool is_delim(char ch)
{
    switch (ch) {
    case ',':
    case ':':
    case ']':
    case '}':
    case ' ':
    case '\t':
    case '\r':
    case '\n':
        return true;
    default:
        return false;
    }
}

/* Past one JSON value starting at p, or NULL. Nesting is bounded. */
static const char *scan_value(const char *p, const char *end)
{
    int depth = 0;
    p = scan_ws(p, end);
    do {
        if (p >= end) {
            return NULL;
        }
        if (*p == '"') {
            p = scan_string(p, end);
            if (p == NULL) {
                return NULL;
            }
        } else if (*p == '[' || *p == '{') {
            if (++depth > 64) {
                return NULL;
            }
            p++;
        } else if (*p == ']' || *p == '}') {
            if (--depth < 0) {
                return NULL;
            }
            p++;
        } else if (*p == ',' || *p == ':' || *p == ' ' || *p == '\t' || *p == '\n' ||
                   *p == '\r') {
            if (depth == 0) {
                return NULL;
            }
            p++;
        } else {
            /* a number or a literal: up to the next delimiter */
            const char *q = p;
            while (p < end && !is_delim(*p)) {
                p++;
            }
            if (p == q) {
                return NULL;
            }
        }
    } while (depth > 0);
    return p;
}

/* Appends the rows of the answer as objects: 0; 1 when it stopped once
 * past limit bytes; -1 when the answer is malformed. */
static int rows_to_objects(struct jinn_wbuf *out, const char *p, const char *end, json_t *cols,
                           size_t limit)
{
    size_t n_cols = json_array_size(cols);
    char **names = jinn_calloc(n_cols + 1, sizeof *names);
    size_t *name_len = jinn_calloc(n_cols + 1, sizeof *name_len);
    size_t *next_same = jinn_calloc(n_cols + 1, sizeof *next_same);
    const char **vs = jinn_calloc(n_cols + 1, sizeof *vs),
               **ve = jinn_calloc(n_cols + 1, sizeof *ve);
    int rv = -1;
    bool first_row = true;

    if (names == NULL || name_len == NULL || next_same == NULL || vs == NULL || ve == NULL) {
        goto cleanup;
    }
    for (size_t k = 0; k < n_cols; k++) {
        json_t *name = json_array_get(cols, k);
        names[k] =
            json_is_string(name) ? json_dumps(name, JSON_ENCODE_ANY) : jinn_strdup("\"?\"");
        if (names[k] == NULL) {
            goto cleanup;
        }
        name_len[k] = strlen(names[k]);
    }
    /* Duplicate column names: as in an object, the last value a row has
     * for a name wins. */
    for (size_t k = 0; k < n_cols; k++) {
        next_same[k] = SIZE_MAX;
        for (size_t m = k + 1; m < n_cols; m++) {
            if (strcmp(names[k], names[m]) == 0) {
                next_same[k] = m;
                break;
            }
        }
    }
    p = scan_ws(p, end);
    if (p >= end || *p != '[') {
        goto cleanup;
    }
    jinn_wbuf_put_u8(out, '[');
    for (p = scan_ws(p + 1, end); p < end && *p != ']';) {
        bool first = true;
        size_t n = 0;
        if (!first_row) {
            if (*p != ',') {
                goto cleanup;
            }
            p = scan_ws(p + 1, end);
        }
        first_row = false;
        if (p >= end || *p != '[') {
            goto cleanup;
        }
        /* The row's values, then the object. */
        for (p = scan_ws(p + 1, end); p < end && *p != ']'; n++) {
            if (n > 0) {
                if (*p != ',') {
                    goto cleanup;
                }
                p = scan_ws(p + 1, end);
            }
            vs[n] = p;
            p = scan_value(p, end);
            if (p == NULL || n >= n_cols) {
                goto cleanup;
            }
            ve[n] = p;
            p = scan_ws(p, end);
        }
        if (p >= end) {
            goto cleanup;
        }
        jinn_wbuf_put_u8(out, '{');
        for (size_t k = 0; k < n; k++) {
            if (next_same[k] < n) {
                continue;
            }
            if (!first) {
                jinn_wbuf_put_u8(out, ',');
            }
            first = false;
            jinn_wbuf_put_raw(out, names[k], name_len[k]);
            jinn_wbuf_put_u8(out, ':');
            jinn_wbuf_put_raw(out, vs[k], (size_t)(ve[k] - vs[k]));
        }
        jinn_wbuf_put_u8(out, '}');
        p = scan_ws(p + 1, end);
        if (out->len > limit) {
            rv = 1; /* too large anyway: stop here */
            goto cleanup;
        }
        if (p < end && *p == ',') {
            jinn_wbuf_put_u8(out, ',');
        }
    }
    if (p >= end) {
        goto cleanup;
    }
    jinn_wbuf_put_u8(out, ']');
    rv = out->failed ? -1 : 0;
cleanup:
    for (size_t k = 0; names != NULL && k < n_cols; k++) {
        jinn_free(names[k]);
    }
    jinn_free(names);
    jinn_free(name_len);
    jinn_free(next_same);
    jinn_free(vs);
    jinn_free(ve);
    return rv;
}

/* True when the JSON string key[0..len) (quotes included) is name. */
static bool key_is(const char *key, size_t len, const char *name)
{
    size_t n = strlen(name);
    json_t *j;
    bool same;
    if (memchr(key, '\\', len) == NULL) {
        return len == n + 2 && memcmp(key + 1, name, n) == 0;
    }
    j = json_loadb(key, len, JSON_DECODE_ANY, NULL); /* escapes: decode */
    same = json_is_string(j) && strcmp(json_string_value(j), name) == 0;
    json_decref(j);
    return same;
}

int jinn_wasm_host_rows(const char *body, size_t len, size_t limit, struct jinn_wbuf *out)
{
    const char *p = body, *end = body + len, *rows = NULL;
    json_t *cols = NULL;
    int rv = -1;

    /* The top-level object: "columns" parsed (small), "rows" found; as in
     * a JSON object, a key given twice means its last value. */
    p = scan_ws(p, end);
    if (p >= end || *p != '{') {
        return -1;
    }
    p = scan_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *key = p, *key_end, *v;
        key_end = scan_string(p, end);
        p = key_end ? scan_ws(key_end, end) : NULL;
        if (p == NULL || p >= end || *p != ':') {
            goto cleanup;
        }
        v = scan_ws(p + 1, end);
        p = scan_value(v, end);
        if (p == NULL) {
            goto cleanup;
        }
        if (key_is(key, (size_t)(key_end - key), "columns")) {
            json_decref(cols);
            cols = json_loadb(v, (size_t)(p - v), 0, NULL);
        } else if (key_is(key, (size_t)(key_end - key), "rows")) {
            rows = v;
        }
        p = scan_ws(p, end);
        if (p < end && *p == ',') {
            p = scan_ws(p + 1, end);
        } else {
            break;
        }
    }
    if (p >= end || *p != '}' || scan_ws(p + 1, end) != end) {
        goto cleanup;
    }
    if (json_is_array(cols) && rows != NULL) {
        rv = rows_to_objects(out, rows, end, cols, limit);
    }
cleanup:
    json_decref(cols);
    return rv;
}

/* {"columns":[...],"types":[...],"rows":[[...]]} -> [{"col":value,...},...] */
static void answer_rows(struct call *c, const char *body, size_t body_len)
{
    struct jinn_wbuf out;
    char msg[160];
    int rv;

    /* A row object is never shorter than the row array it comes from, so
     * an answer far past outmax cannot fit: do not even read it. */
    if (body_len > HOST_DB_RESULT_MAX || body_len > 2 * (size_t)c->outmax + 65536) {
        snprintf(msg, sizeof msg,
                 "the result (about %zu bytes) does not fit the %" PRIu32 "-byte buffer",
                 body_len, c->outmax);
        INV_LOG(c->inv, "host_db_query: %s", msg);
        finish_error_row(c, msg);
        return;
    }
    jinn_wbuf_init(&out);
    rv = jinn_wasm_host_rows(body, body_len, c->outmax, &out);
    if (rv < 0 || out.failed) {
        jinn_wbuf_free(&out);
        finish_error_row(c, rv < 0 ? "malformed query answer" : "out of memory");
        return;
    }
    if (out.len > c->outmax) {
        snprintf(msg, sizeof msg,
                 "the result (%s%zu bytes) does not fit the %" PRIu32 "-byte buffer",
                 rv == 1 ? "over " : "", out.len, c->outmax);
        INV_LOG(c->inv, "host_db_query: %s", msg);
        finish_error_row(c, msg);
    } else {
        call_finish(c, (uint32_t)out.len, out.data, out.len);
    }
    jinn_wbuf_free(&out);
}

static void answer_exec(struct call *c, const char *body, size_t body_len)
{
    json_t *j = json_loadb(body, body_len, 0, NULL);
    json_t *results = json_object_get(j, "results");
    char *text = json_is_array(results) ? json_dumps(results, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        finish_error_row(c, "malformed exec answer");
        return;
    }
    if (strlen(text) > c->outmax) {
        call_finish(c, HOST_FAIL, NULL, 0);
    } else {
        call_finish(c, (uint32_t)strlen(text), text, strlen(text));
    }
    jinn_free(text);
}

static void fenced_out(struct call *c, const char *what)
{
    stats_of(c->h, c->inv->fn)->c.fenced_out++;
    INV_LOG(c->inv,
            "%s refused: lock \"%.64s\" (token %" PRIu64 ") was lost before the write "
            "(its TTL ran out and someone else may hold it); nothing was written",
            what, c->fence, c->token);
}

static void on_response(void *data, int code, const struct jinn_http_msg *head,
                        const char *body, size_t body_len)
{
    struct call *c = data;
    struct jinn_wasm_inv *inv = c->inv;
    int status = code == JINN_OK ? head->status : 0;
    char err[256];
    char key[100];

    call_unlink(c);
    quote_bytes(key, sizeof key, c->text, c->text_len);
    if (status >= 200 && status < 300 && c->step != STEP_KV_GET && c->step != STEP_QUERY) {
        note_index(inv, head);
    }
    switch (c->step) {
    case STEP_KV_GET:
        if (status == 200) {
            if (body_len > c->outmax) {
                INV_LOG(inv,
                        "host_kv_get \"%s\": the value (%zu bytes) does not fit the "
                        "%" PRIu32 "-byte buffer",
                        key, body_len, c->outmax);
                call_finish(c, HOST_FAIL, NULL, 0);
            } else {
                call_finish(c, (uint32_t)body_len, body, body_len);
            }
            return;
        }
        if (status != 404) {
            error_text(code, head, body, body_len, err, sizeof err);
            INV_LOG(inv, "host_kv_get \"%s\": %s", key, err);
        }
        call_finish(c, HOST_FAIL, NULL, 0);
        return;
    case STEP_KV_SET:
        if (status == 200) {
            call_finish(c, 0, NULL, 0);
            return;
        }
        if (status == 409 && c->fence[0] != '\0') {
            char what[160];
            snprintf(what, sizeof what, "host_kv_set \"%s\"", key);
            fenced_out(c, what);
        } else {
            error_text(code, head, body, body_len, err, sizeof err);
            INV_LOG(inv, "host_kv_set \"%s\": %s", key, err);
        }
        call_finish(c, HOST_FAIL, NULL, 0);
        return;
    case STEP_REFRESH:
        if (status == 200) {
            /* Refreshed: it is now the most recently acquired. */
            held_remove(inv, c->text, c->text_len);
            if (!held_add(inv, c->text, c->text_len, c->token)) {
                INV_LOG(inv, "host_mutex_lock \"%s\": out of memory", key);
                call_finish(c, 0, NULL, 0);
                return;
            }
            stats_of(c->h, inv->fn)->c.locks_acquired++;
            call_finish(c, 1, NULL, 0);
            return;
        }
        if (status == 409) {
            /* Lost since: forget it and try to take it afresh. */
            held_remove(inv, c->text, c->text_len);
            send_lock(c);
            return;
        }
        error_text(code, head, body, body_len, err, sizeof err);
        INV_LOG(inv, "host_mutex_lock \"%s\" (refresh): %s", key, err);
        call_finish(c, 0, NULL, 0);
        return;
    case STEP_LOCK:
        if (status == 200) {
            uint64_t token = token_of(body, body_len);
            if (token == 0) {
                INV_LOG(inv, "host_mutex_lock \"%s\": the answer had no token", key);
                call_finish(c, 0, NULL, 0);
                return;
            }
            if (inv->ended || !held_add(inv, c->text, c->text_len, token)) {
                /* Nobody will use it: give it back now. */
                release_start(c->h, inv->fn, c->text, c->text_len, token);
                call_finish(c, 0, NULL, 0);
                return;
            }
            stats_of(c->h, inv->fn)->c.locks_acquired++;
            call_finish(c, 1, NULL, 0);
            return;
        }
        if (status == 409) {
            stats_of(c->h, inv->fn)->c.locks_contended++;
            call_finish(c, 0, NULL, 0);
            return;
        }
        error_text(code, head, body, body_len, err, sizeof err);
        INV_LOG(inv, "host_mutex_lock \"%s\": %s", key, err);
        call_finish(c, 0, NULL, 0);
        return;
    case STEP_UNLOCK:
        if (status == 200) {
            held_remove(inv, c->text, c->text_len);
            call_finish(c, 1, NULL, 0);
            return;
        }
        if (status == 409 || status == 404) {
            held_remove(inv, c->text, c->text_len);
            INV_LOG(inv,
                    "host_mutex_unlock \"%s\": the lock was lost before the unlock (its "
                    "TTL ran out)",
                    key);
            call_finish(c, 0, NULL, 0);
            return;
        }
        /* Unknown: keep it, the end of the invocation tries again. */
        error_text(code, head, body, body_len, err, sizeof err);
        INV_LOG(inv, "host_mutex_unlock \"%s\": %s", key, err);
        call_finish(c, 0, NULL, 0);
        return;
    case STEP_QUERY:
        if (status == 200) {
            answer_rows(c, body, body_len);
            return;
        }
        if (status == 400 && c->with && body_len < 65536 &&
            memmem(body, body_len, "not authorized", 14) != NULL) {
            /* WITH ... INSERT/UPDATE/DELETE: a write after all. */
            send_exec(c);
            return;
        }
        error_text(code, head, body, body_len, err, sizeof err);
        finish_error_row(c, err);
        return;
    case STEP_EXEC:
        if (status == 200) {
            answer_exec(c, body, body_len);
            return;
        }
        if (status == 409 && c->fence[0] != '\0') {
            fenced_out(c, "host_db_query (a write)");
            snprintf(err, sizeof err,
                     "fenced out: lock \"%.64s\" was lost; nothing was written", c->fence);
        } else {
            error_text(code, head, body, body_len, err, sizeof err);
        }
        finish_error_row(c, err);
        return;
    case STEP_ENQUEUE:
        if (status == 200 || status == 201 || status == 202) {
            call_finish(c, 0, NULL, 0);
            return;
        }
        error_text(code, head, body, body_len, err, sizeof err);
        INV_LOG(inv, "host_enqueue \"%s\": %s", key, err);
        call_finish(c, HOST_FAIL, NULL, 0);
        return;
    }
}

/* Skips blanks and SQL comments; true when the first keyword is kw. */
static bool first_keyword_is(const char *s, size_t n, const char *kw)
{
    size_t i = 0, k = strlen(kw);
    for (;;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n' ||
                         s[i] == '\f' || s[i] == '(')) {
            i++;
        }
        if (i + 1 < n && s[i] == '-' && s[i + 1] == '-') {
            while (i < n && s[i] != '\n') {
                i++;
            }
        } else if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
            const char *end = memmem(s + i + 2, n - i - 2, "*/", 2);
            i = end ? (size_t)(end - s) + 2 : n;
        } else {
            break;
        }
    }
    if (n - i < k || strncasecmp(s + i, kw, k) != 0) {
        return false;
    }
    return i + k == n ||
           !((s[i + k] >= 'a' && s[i + k] <= 'z') || (s[i + k] >= 'A' && s[i + k] <= 'Z') ||
             (s[i + k] >= '0' && s[i + k] <= '9') || s[i + k] == '_');
}

static void reply_now(struct jinn_wasm_inv *inv, jinn_wasm_reply_fn reply, void *data,
                      uint32_t result, const void *bytes, size_t len)
{
    inv->refs++;
    if (!inv->ended) {
        reply(data, result, bytes, len);
    }
    inv_unref(inv);
}

static void deny(struct jinn_wasm_inv *inv, int call, jinn_wasm_reply_fn reply, void *data,
                 uint32_t result, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void deny(struct jinn_wasm_inv *inv, int call, jinn_wasm_reply_fn reply, void *data,
                 uint32_t result, const char *fmt, ...)
{
    char why[HOST_LOG_LINE_MAX - 32];
    struct stats *st = stats_of(inv->h, inv->fn);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    st->c.denied++;
    st->c.failed++;
    INV_LOG(inv, "%s denied: %s", call_name(call), why);
    reply_now(inv, reply, data, result, NULL, 0);
}

static void deny_rows(struct jinn_wasm_inv *inv, jinn_wasm_reply_fn reply, void *data,
                      uint32_t outmax, const char *why)
{
    json_t *row = json_pack("[{s:s}]", "error", why);
    char *text = row ? json_dumps(row, JSON_COMPACT) : NULL;
    struct stats *st = stats_of(inv->h, inv->fn);
    json_decref(row);
    st->c.denied++;
    st->c.failed++;
    INV_LOG(inv, "host_db_query denied: %s", why);
    if (text != NULL && strlen(text) <= outmax) {
        reply_now(inv, reply, data, (uint32_t)strlen(text), text, strlen(text));
    } else {
        reply_now(inv, reply, data, HOST_FAIL, NULL, 0);
    }
    jinn_free(text);
}

static struct call *call_new(struct jinn_wasm_inv *inv, enum step step, const void *text,
                             size_t len, uint32_t outmax, jinn_wasm_reply_fn reply, void *data)
{
    struct call *c = jinn_calloc(1, sizeof *c + len + 1);
    if (c == NULL) {
        return NULL;
    }
    c->h = inv->h;
    c->inv = inv;
    c->step = step;
    c->outmax = outmax;
    c->reply = reply;
    c->data = data;
    memcpy(c->text, text, len);
    c->text_len = len;
    inv->refs++;
    return c;
}

void jinn_wasm_inv_call(struct jinn_wasm_inv *inv, int call, uint32_t a, uint32_t outmax,
                        const void *b1, size_t n1, const void *b2, size_t n2,
                        jinn_wasm_reply_fn reply, void *data)
{
    struct jinn_wasm_host *h = inv->h;
    const struct jinn_config *cfg = h->api->cfg;
    const char *s1 = b1 != NULL ? b1 : "";
    struct stats *st = stats_of(h, inv->fn);
    char key[100];
    struct jinn_wbuf t, hdr;
    struct call *c;

    if (inv->ended) {
        return;
    }
    if (call > 0 && call < 8) {
        st->c.calls[call]++;
    }
    quote_bytes(key, sizeof key, s1, n1);
    switch (call) {
    case JINN_SBX_KV_GET:
    case JINN_SBX_KV_SET: {
        bool set = call == JINN_SBX_KV_SET;
        if (!key_valid(s1, n1)) {
            deny(inv, call, reply, data, HOST_FAIL,
                 "key \"%s\" (%zu bytes): keys are 1-%d "
                 "bytes of UTF-8 without NUL",
                 key, n1, JINN_KV_KEY_MAX);
            return;
        }
        if (!ns_valid(inv->ns, true)) {
            deny(inv, call, reply, data, HOST_FAIL, "namespace \"%s\" is not valid", inv->ns);
            return;
        }
        if (set ? !has_prefix(inv->kv_write, inv->kv_write_len, inv->n_kv_write, s1, n1)
                : !has_prefix(inv->kv_read, inv->kv_read_len, inv->n_kv_read, s1, n1)) {
            deny(inv, call, reply, data, HOST_FAIL,
                 "key \"%s\" is outside the function's "
                 "%s prefixes",
                 key, set ? "kv_write" : "kv_read");
            return;
        }
        if (set && n2 > cfg->max_body_bytes) {
            deny(inv, call, reply, data, HOST_FAIL,
                 "key \"%s\": a value of %zu bytes is over "
                 "max_body (%" PRIu64 ")",
                 key, n2, cfg->max_body_bytes);
            return;
        }
        c = call_new(inv, set ? STEP_KV_SET : STEP_KV_GET, s1, n1, outmax, reply, data);
        if (c == NULL) {
            reply_now(inv, reply, data, HOST_FAIL, NULL, 0);
            return;
        }
        jinn_wbuf_init(&t);
        jinn_wbuf_printf(&t, "/v1/kv/%s/", inv->ns);
        put_escaped(&t, s1, n1);
        if (set) {
            jinn_wbuf_init(&hdr);
            fence_header(c, &hdr);
            jinn_wbuf_put_u8(&hdr, 0);
            if (hdr.failed) {
                t.failed = true;
            }
            call_send(c, "PUT", &t, hdr.len > 1 ? (const char *)hdr.data : NULL, b2 ? b2 : "",
                      n2);
            jinn_wbuf_free(&hdr);
        } else {
            read_your_writes(inv, &t, '?');
            call_send(c, "GET", &t, NULL, NULL, 0);
        }
        return;
    }
    case JINN_SBX_MUTEX_LOCK: {
        uint64_t ttl_ms = a == 0 ? inv->timeout_ms + 1000 : (uint64_t)a * 1000;
        const struct held *x;
        if (!lock_name_valid(s1, n1)) {
            deny(inv, call, reply, data, 0,
                 "lock name \"%s\" (%zu bytes): names are 1-%d bytes "
                 "of UTF-8 without control bytes or blanks at either end",
                 key, n1, JINN_LOCK_NAME_MAX);
            return;
        }
        if (ttl_ms > cfg->lock_max_ttl_ms) {
            deny(inv, call, reply, data, 0,
                 "lock \"%s\": a TTL of %" PRIu32 " s is over "
                 "lock_max_ttl (%" PRIu64 " ms)",
                 key, a, cfg->lock_max_ttl_ms);
            return;
        }
        x = held_find(inv, s1, n1);
        if (x == NULL && inv->n_held >= HOST_LOCKS_MAX) {
            deny(inv, call, reply, data, 0, "lock \"%s\": an invocation holds at most %d locks",
                 key, HOST_LOCKS_MAX);
            return;
        }
        c = call_new(inv, STEP_LOCK, s1, n1, 0, reply, data);
        if (c == NULL) {
            reply_now(inv, reply, data, 0, NULL, 0);
            return;
        }
        c->ttl_ms = ttl_ms;
        if (x == NULL) {
            send_lock(c);
            return;
        }
        /* Held already: extend it rather than conflict with ourselves. */
        c->step = STEP_REFRESH;
        c->token = x->token;
        jinn_wbuf_init(&t);
        jinn_wbuf_printf(&t, "/v1/locks/");
        put_escaped(&t, s1, n1);
        jinn_wbuf_printf(&t, "/refresh?token=%" PRIu64 "&ttl=%" PRIu64 "ms", x->token, ttl_ms);
        call_send(c, "POST", &t, NULL, NULL, 0);
        return;
    }
    case JINN_SBX_MUTEX_UNLOCK: {
        const struct held *x =
            n1 > 0 && n1 <= JINN_LOCK_NAME_MAX ? held_find(inv, s1, n1) : NULL;
        if (x == NULL) {
            reply_now(inv, reply, data, 0, NULL, 0); /* not held by this invocation */
            return;
        }
        c = call_new(inv, STEP_UNLOCK, s1, n1, 0, reply, data);
        if (c == NULL) {
            reply_now(inv, reply, data, 0, NULL, 0);
            return;
        }
        c->token = x->token;
        jinn_wbuf_init(&t);
        jinn_wbuf_printf(&t, "/v1/locks/");
        put_escaped(&t, s1, n1);
        jinn_wbuf_printf(&t, "?token=%" PRIu64, x->token);
        call_send(c, "DELETE", &t, NULL, NULL, 0);
        return;
    }
    case JINN_SBX_DB_QUERY: {
        bool read;
        if (inv->db[0] == '\0' || !ns_valid(inv->db, false)) {
            deny_rows(inv, reply, data, outmax,
                      "no database configured for this function (deploy it with db=NAME)");
            return;
        }
        if (n1 == 0 || n1 > HOST_SQL_MAX || memchr(s1, '\0', n1) != NULL ||
            !jinn_utf8_valid(s1, n1)) {
            deny_rows(inv, reply, data, outmax,
                      "the statement must be 1-262144 bytes of UTF-8 without NUL");
            return;
        }
        c = call_new(inv, STEP_QUERY, s1, n1, outmax, reply, data);
        if (c == NULL) {
            reply_now(inv, reply, data, HOST_FAIL, NULL, 0);
            return;
        }
        c->with = first_keyword_is(s1, n1, "with");
        read =
            c->with || first_keyword_is(s1, n1, "select") || first_keyword_is(s1, n1, "values");
        if (!read) {
            send_exec(c);
            return;
        }
        {
            json_t *body = json_pack("{s:s%}", "sql", s1, n1);
            char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
            json_decref(body);
            if (text == NULL) {
                finish_error_row(c, "out of memory");
                return;
            }
            jinn_wbuf_init(&t);
            jinn_wbuf_printf(&t, "/v1/sql/%s/query", inv->db);
            read_your_writes(inv, &t, '?');
            call_send(c, "POST", &t, "Content-Type: application/json\r\n", text, strlen(text));
            jinn_free(text);
        }
        return;
    }
    case JINN_SBX_ENQUEUE:
        if (!fn_name_valid(s1, n1, HOST_ENQUEUE_NAME_MAX)) {
            deny(inv, call, reply, data, HOST_FAIL,
                 "function name \"%s\": [a-z0-9][a-z0-9_-]* "
                 "of at most %d bytes (the queue is " HOST_QUEUE_PREFIX "<name>)",
                 key, HOST_ENQUEUE_NAME_MAX);
            return;
        }
        if (n2 > cfg->max_body_bytes) {
            deny(inv, call, reply, data, HOST_FAIL,
                 "a payload of %zu bytes is over max_body "
                 "(%" PRIu64 ")",
                 n2, cfg->max_body_bytes);
            return;
        }
        c = call_new(inv, STEP_ENQUEUE, s1, n1, 0, reply, data);
        if (c == NULL) {
            reply_now(inv, reply, data, HOST_FAIL, NULL, 0);
            return;
        }
        jinn_wbuf_init(&t);
        /* The jobs endpoint, not the queue's: it checks that the function
         * exists, and enqueueing a job of F is invoking F, so with tokens
         * on the scope needed is fn:F:invoke (not queue:WORKERS_F:publish). */
        jinn_wbuf_printf(&t, "/v1/functions/%.*s/jobs", (int)n1, s1);
        call_send(c, "POST", &t, NULL, b2 ? b2 : "", n2);
        return;
    default:
        /* LOG is pool.c's; anything else is a sandbox bug or an attack. */
        deny(inv, call, reply, data, HOST_FAIL, "unknown host call %d", call);
        return;
    }
}

void jinn_wasm_inv_end(struct jinn_wasm_inv *inv)
{
    struct jinn_wasm_host *h = inv->h;
    if (inv->ended) {
        return;
    }
    inv->ended = true;
    if (inv->prev != NULL) {
        inv->prev->next = inv->next;
    } else {
        h->open = inv->next;
    }
    if (inv->next != NULL) {
        inv->next->prev = inv->prev;
    }
    while (inv->held != NULL) {
        struct held *x = inv->held;
        inv->held = x->next;
        release_start(h, inv->fn, x->name, x->name_len, x->token);
        jinn_free(x);
    }
    inv->n_held = 0;
    inv_unref(inv);
}

/* ---- the host ---- */

struct jinn_wasm_host *jinn_wasm_host_create(struct jinn_api *api)
{
    struct jinn_wasm_host *h = jinn_calloc(1, sizeof *h);
    const char *listen = api->cfg->http_listen;
    if (h == NULL) {
        return NULL;
    }
    h->api = api;
    h->loop = api->loop;
    if (getrandom(&h->boot, sizeof h->boot, GRND_NONBLOCK) != (ssize_t)sizeof h->boot) {
        h->boot = (uint32_t)(uv_hrtime() ^ ((uint64_t)getpid() << 16));
    }
    /* Our own listener; a wildcard address is reached on loopback. */
    if (strncmp(listen, "0.0.0.0:", 8) == 0) {
        snprintf(h->url, sizeof h->url, "http://127.0.0.1:%s", listen + 8);
    } else {
        snprintf(h->url, sizeof h->url, "http://%s", listen);
    }
    h->fetch_timeout_ms = api->cfg->request_timeout_ms + HOST_FETCH_MARGIN_MS;
    snprintf(h->other.fn, sizeof h->other.fn, "_other");
    return h;
}

void jinn_wasm_host_destroy(struct jinn_wasm_host *h)
{
    if (h == NULL) {
        return;
    }
    while (h->open != NULL) {
        jinn_wasm_inv_end(h->open);
    }
    /* Calls in flight answer now (to nobody: their invocations ended). */
    while (h->pending != NULL) {
        struct call *c = h->pending;
        jinn_fetch_cancel(c);
        if (h->pending == c) { /* not in fetch's hands after all */
            call_unlink(c);
            call_finish(c, HOST_FAIL, NULL, 0);
        }
    }
    /* Releases go on without us: one last try each, then their TTLs. */
    while (h->releases != NULL) {
        struct release *r = h->releases;
        h->releases = r->next;
        r->h = NULL;
        r->prev = r->next = NULL;
        r->tries = HOST_RELEASE_TRIES;
        if (r->timer_open && uv_is_active((uv_handle_t *)&r->timer)) {
            uv_timer_stop(&r->timer);
            release_free(r); /* its last try already failed */
        }
    }
    jinn_free(h->stats);
    jinn_free(h);
}

void jinn_wasm_host_set_log(struct jinn_wasm_host *h, jinn_wasm_host_log_fn fn, void *data)
{
    h->log_fn = fn;
    h->log_data = data;
}

void jinn_wasm_host_counters(const struct jinn_wasm_host *h, const char *fn_name,
                             struct jinn_wasm_host_counters *out)
{
    const struct stats *st = stats_find(h, fn_name);
    memset(out, 0, sizeof *out);
    if (st != NULL) {
        *out = st->c;
    }
}

void jinn_wasm_host_metrics(const struct jinn_wasm_host *h, struct jinn_wbuf *out)
{
    static const int calls[] = {JINN_SBX_KV_SET,       JINN_SBX_KV_GET,   JINN_SBX_MUTEX_LOCK,
                                JINN_SBX_MUTEX_UNLOCK, JINN_SBX_DB_QUERY, JINN_SBX_ENQUEUE};
    unsigned n = h->n_stats;
#define HOST_SERIES(name, help, field)                                                         \
    do {                                                                                       \
        jinn_wbuf_printf(out, "# HELP " name " " help "\n# TYPE " name " counter\n");          \
        for (unsigned i = 0; i <= n; i++) {                                                    \
            const struct stats *s = i < n ? &h->stats[i] : &h->other;                          \
            if (i < n || s->c.calls[JINN_SBX_KV_GET] + s->c.calls[JINN_SBX_KV_SET] +           \
                                 s->c.calls[JINN_SBX_MUTEX_LOCK] >                             \
                             0) {                                                              \
                jinn_wbuf_printf(out, name "{function=\"%s\"} %" PRIu64 "\n", s->fn,           \
                                 s->c.field);                                                  \
            }                                                                                  \
        }                                                                                      \
    } while (0)

    jinn_wbuf_printf(out, "# HELP jinn_fn_host_calls_total Host calls made by functions.\n"
                          "# TYPE jinn_fn_host_calls_total counter\n");
    for (unsigned i = 0; i <= n; i++) {
        const struct stats *s = i < n ? &h->stats[i] : &h->other;
        for (size_t k = 0; k < sizeof calls / sizeof calls[0]; k++) {
            if (i < n || s->c.calls[calls[k]] > 0) {
                jinn_wbuf_printf(
                    out, "jinn_fn_host_calls_total{function=\"%s\",call=\"%s\"} %" PRIu64 "\n",
                    s->fn, call_name(calls[k]), s->c.calls[calls[k]]);
            }
        }
    }
    HOST_SERIES("jinn_fn_host_failed_total", "Host calls that answered failure.", failed);
    HOST_SERIES("jinn_fn_host_denied_total",
                "Host calls refused before any request: permissions or invalid input.", denied);
    HOST_SERIES("jinn_fn_host_fenced_out_total",
                "KV and SQL writes refused because the invocation's lock was lost.",
                fenced_out);
    HOST_SERIES("jinn_fn_locks_acquired_total", "host_mutex_lock calls answered 1.",
                locks_acquired);
    HOST_SERIES("jinn_fn_locks_contended_total", "host_mutex_lock calls answered 0 (held).",
                locks_contended);
    HOST_SERIES("jinn_fn_locks_released_at_end_total",
                "Locks an invocation still held when it ended, released for it.",
                locks_released_at_end);
    HOST_SERIES("jinn_fn_lock_release_failures_total",
                "End-of-invocation releases given up (the lock's TTL frees it).",
                lock_release_failures);
#undef HOST_SERIES
}
