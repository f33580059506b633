/* kv.c - the key-value API: writes through the log, reads by policy.
 *
 * Writes (PUT, DELETE) run on the leader. Reads follow the namespace's
 * consensus policy: linearizable reads are served by the leader after a
 * shared barrier (followers relay them); stale reads are served from this
 * node's state, with headers saying how fresh it is, and refused past
 * max_staleness. Watches long-poll the node's history of changes. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"
#include "fetch.h"
#include "log.h"

#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000
/* A values=1 page stops before this many bytes (always >= 1 key). */
#define LIST_MAX_REPLY_BYTES (4u << 20)
#define WATCH_MAX_EVENTS 1000
/* One watch reply stops adding events past this many bytes of JSON (it
 * always holds at least one event) and says "more": a client far behind
 * catches up in steps instead of making the loop build one huge reply. */
#define WATCH_MAX_REPLY_BYTES (1u << 20)
/* One change can wake every watcher at once: past this many bytes of
 * replies built in one loop turn, the rest are answered on the next turns,
 * so the loop stays within its budget however many watch. */
#define WATCH_FANOUT_BYTES (2u << 20)
#define WATCH_DEFAULT_MS 30000
#define WATCH_MAX_MS 300000
#define WATCHERS_MAX 4096
#define TTL_MAX_MS (UINT64_C(10) * 365 * 24 * 3600 * 1000)

struct jinn_watcher {
    struct jinn_api *api;
    struct jinn_http_request *req;
    struct jinn_watcher *prev, *next;
    uv_timer_t timer;
    char ns[JINN_KV_NS_MAX + 1];
    uint8_t prefix[JINN_KV_KEY_MAX];
    size_t prefix_len;
    uint64_t after;
};

/* ---- argument checks (each either succeeds or has replied) --------------- */

static bool valid_ns(const char *ns, size_t len)
{
    /* "." and ".." are dot segments that URL clients normalise away. */
    if (len == 0 || len > JINN_KV_NS_MAX || (len == 1 && ns[0] == '.') ||
        (len == 2 && ns[0] == '.' && ns[1] == '.')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = ns[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.')) {
            return false;
        }
    }
    return true;
}

static bool ns_key_or_reply(struct jinn_http_request *req, const struct jinn_route_args *args,
                            bool with_key)
{
    if (!valid_ns(args->arg[0], args->len[0])) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "namespace must be 1-64 of A-Z a-z 0-9 _ - .");
        return false;
    }
    if (with_key && (args->len[1] == 0 || args->len[1] > JINN_KV_KEY_MAX ||
                     !jinn_utf8_valid(args->arg[1], args->len[1]))) {
        jinn_http_reply_error(req, JINN_EINVAL, "key must be 1-1024 bytes of UTF-8");
        return false;
    }
    return true;
}

/* Reads a query parameter into buf; false (replied) if malformed. *present
 * tells whether it was given. */
static bool query_or_reply(struct jinn_http_request *req, const char *name, char *buf,
                           size_t cap, bool *present)
{
    return jinn_api_param_or_reply(req, NULL, name, buf, cap, present);
}

/* A key-like query parameter (prefix, start_after): raw bytes, so a %00 in
 * it counts, as it does in keys. *len is 0 when absent. */
static bool key_param_or_reply(struct jinn_http_request *req, const char *name, char *buf,
                               size_t cap, size_t *len, bool *present)
{
    long n = jinn_http_query_get(req->query, req->query_len, name, buf, cap);
    char msg[128];
    *present = n >= 0;
    *len = n >= 0 ? (size_t)n : 0;
    if (n == -2) {
        snprintf(msg, sizeof msg, "bad or too long parameter '%s'", name);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        return false;
    }
    if (n < 0) {
        buf[0] = '\0';
    }
    return true;
}

/* A numeric query parameter in [min, max] (the shared strict parser: an
 * overflowing, signed or empty number is a 400, never a wrapped value). */
static bool uint_or_reply(struct jinn_http_request *req, const char *name, uint64_t dflt,
                          uint64_t min, uint64_t max, uint64_t *out)
{
    return jinn_api_uint_or_reply(req, NULL, name, dflt, min, max, out);
}

static bool fence_or_reply(struct jinn_http_request *req, struct jinn_cmd *c)
{
    bool present;
    if (!jinn_api_fence_or_reply(req, &c->kv.fence, &c->kv.fence_token, &present)) {
        return false;
    }
    if (present) {
        c->kv.flags |= JINN_KV_FENCED;
    }
    return true;
}

/* Parses If-Match / If-None-Match into the command. */
static bool conditions_or_reply(struct jinn_http_request *req, struct jinn_cmd *c, bool put)
{
    const struct jinn_http_header *im = jinn_http_header_find(&req->msg, "if-match");
    const struct jinn_http_header *inm = jinn_http_header_find(&req->msg, "if-none-match");
    if (inm != NULL) {
        if (!put || inm->value_len != 1 || inm->value[0] != '*' || im != NULL) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "If-None-Match takes only \"*\" (create if absent), "
                                  "on PUT, without If-Match");
            return false;
        }
        c->kv.flags |= JINN_KV_CREATE_ONLY;
    }
    if (im != NULL) {
        const char *v = im->value;
        size_t n = im->value_len;
        uint64_t rev = 0;
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v++;
            n -= 2;
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i] < '0' || v[i] > '9' || rev > (UINT64_MAX - 9) / 10) {
                n = 0;
                break;
            }
            rev = rev * 10 + (uint64_t)(v[i] - '0');
        }
        if (n == 0 || rev == 0) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "If-Match must be a revision like \"42\" (from an ETag)");
            return false;
        }
        c->kv.expect_revision = rev;
    }
    return true;
}

static void set_etag(struct jinn_http_request *req, uint64_t revision)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%" PRIu64 "\"", revision);
    jinn_http_add_header(req, "ETag", etag);
}

static void reply_revision(struct jinn_http_request *req, int code, uint64_t revision)
{
    json_t *obj;
    if (code == JINN_OK) {
        set_etag(req, revision);
        jinn_http_reply_json(req, 200, json_pack("{s:I, s:I}", "revision", (json_int_t)revision,
                                                 "index", (json_int_t)revision));
        return;
    }
    if (code == JINN_ECONFLICT) {
        jinn_http_reply_error(req, code,
                              "fence: the lock is not held with that token; nothing written");
        return;
    }
    if (code == JINN_EPRECONDITION || code == JINN_ENOTFOUND) {
        /* The current revision lets the client retry its compare-and-set. */
        obj = json_pack("{s:s, s:s, s:I}", "error", jinn_error_name(code), "message",
                        jinn_error_message(code), "revision", (json_int_t)revision);
        jinn_http_reply_json(req, jinn_error_http_status(code), obj);
        return;
    }
    jinn_http_reply_error(req, code, NULL);
}

static void write_committed(struct jinn_api *api, struct jinn_http_request *req,
                            const struct jinn_result *res)
{
    (void)api;
    reply_revision(req, res->code, res->value);
}

static void fill_ns_key(struct jinn_cmd *c, const struct jinn_route_args *args)
{
    c->kv.ns.p = (const uint8_t *)args->arg[0];
    c->kv.ns.len = args->len[0];
    c->kv.key.p = (const uint8_t *)args->arg[1];
    c->kv.key.len = args->len[1];
}

void jinn_api_kv_put(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args)
{
    struct jinn_cmd c;
    char ttl[32];
    bool has_ttl;

    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    if (!ns_key_or_reply(req, args, true) || !conditions_or_reply(req, &c, true) ||
        !fence_or_reply(req, &c) || !query_or_reply(req, "ttl", ttl, sizeof ttl, &has_ttl)) {
        return;
    }
    if (has_ttl && (jinn_parse_duration(ttl, &c.kv.ttl_ms) != 0 || c.kv.ttl_ms == 0 ||
                    c.kv.ttl_ms > TTL_MAX_MS)) {
        jinn_http_reply_error(req, JINN_EINVAL, "ttl must be a duration like 30s, 1ms..10y");
        return;
    }
    if (req->body_len > api->cfg->max_body_bytes || req->body_len > JINN_KV_VALUE_MAX) {
        jinn_http_reply_error(req, JINN_ETOOBIG, NULL);
        return;
    }
    fill_ns_key(&c, args);
    c.kv.value.p = (const uint8_t *)req->body;
    c.kv.value.len = req->body_len;
    jinn_api_propose_or_reply(api, req, &c, write_committed);
}

void jinn_api_kv_delete(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_DEL;
    if (!ns_key_or_reply(req, args, true) || !conditions_or_reply(req, &c, false) ||
        !fence_or_reply(req, &c)) {
        return;
    }
    fill_ns_key(&c, args);
    jinn_api_propose_or_reply(api, req, &c, write_committed);
}

/* ---- reads ---------------------------------------------------------------- */

enum read_mode { READ_LINEARIZABLE, READ_STALE };

/* Decides how to serve a read in ns; false when it has replied (bad
 * request, too stale). */
static bool read_mode_or_reply(struct jinn_api *api, struct jinn_http_request *req,
                               const char *ns, enum read_mode *mode)
{
    struct jinn_policy pol = jinn_config_policy(api->cfg, ns);
    struct jinn_node_status st;
    char want[32];
    bool present;

    if (!query_or_reply(req, "consistency", want, sizeof want, &present)) {
        return false;
    }
    if (!present) {
        *mode = pol.stale_reads ? READ_STALE : READ_LINEARIZABLE;
    } else if (strcmp(want, "linearizable") == 0) {
        *mode = READ_LINEARIZABLE;
    } else if (strcmp(want, "stale") == 0) {
        if (!pol.stale_reads) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "stale reads are not allowed in this namespace (mode cp)");
            return false;
        }
        *mode = READ_STALE;
    } else {
        jinn_http_reply_error(req, JINN_EINVAL, "consistency must be linearizable or stale");
        return false;
    }
    if (*mode == READ_STALE) {
        jinn_node_status(api->node, &st);
        /* The leader too: one cut off from its quorum may be deposed. */
        if (pol.max_staleness_ms != 0 &&
            (st.leader_contact_ms < 0 || (uint64_t)st.leader_contact_ms > pol.max_staleness_ms)) {
            jinn_http_reply_error(req, JINN_ESTALE, NULL);
            return false;
        }
    }
    return true;
}

/* The route args do not outlive the handler: reads that wait re-derive
 * them from the request path. */
static bool args_of(struct jinn_http_request *req, struct jinn_route_args *args, bool with_key)
{
    const char *p = req->path + strlen("/v1/kv/");
    const char *end = req->path + req->path_len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    long n;
    if (slash == NULL) {
        slash = end;
    }
    n = jinn_http_unescape(p, (size_t)(slash - p), args->arg[0], JINN_ROUTE_ARG_MAX, false);
    if (n < 0) {
        return false;
    }
    args->len[0] = (size_t)n;
    if (with_key) {
        n = jinn_http_unescape(slash + 1, (size_t)(end - slash - 1), args->arg[1],
                               JINN_ROUTE_ARG_MAX, false);
        if (n < 0) {
            return false;
        }
        args->len[1] = (size_t)n;
    }
    return true;
}

static void get_now(struct jinn_api *api, struct jinn_http_request *req)
{
    struct jinn_route_args *args = jinn_malloc(sizeof *args);
    const struct jinn_kv_entry *e;
    if (args == NULL || !args_of(req, args, true)) {
        jinn_free(args);
        jinn_http_reply_error(req, args ? JINN_EINVAL : JINN_ENOMEM, NULL);
        return;
    }
    e = jinn_kv_get(&jinn_node_fsm(api->node)->kv, args->arg[0], (const uint8_t *)args->arg[1],
                    args->len[1]);
    jinn_free(args);
    if (e == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such key");
        return;
    }
    set_etag(req, e->revision);
    jinn_http_reply(req, 200, "application/octet-stream", e->value, e->value_len);
}

void jinn_api_kv_get(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_route_args *args)
{
    enum read_mode mode;
    if (!ns_key_or_reply(req, args, true) || !read_mode_or_reply(api, req, args->arg[0], &mode)) {
        return;
    }
    jinn_api_read_or_reply(api, req, mode == READ_LINEARIZABLE, get_now);
}

/* ---- listing ------------------------------------------------------------ */

/* Bytes of value as a JSON string: control characters take 6 (\u00XX),
 * quote and backslash 2. */
static size_t json_text_bytes(const uint8_t *value, size_t len)
{
    size_t n = len + 2;
    for (size_t i = 0; i < len; i++) {
        n += value[i] < 0x20 ? 5 : (value[i] == '"' || value[i] == '\\') ? 1 : 0;
    }
    return n;
}

static size_t base64_bytes(size_t len) { return (len + 2) / 3 * 4 + 2; }

/* The value as "value" when it is text that escapes no larger than its
 * base64, else as "value_base64": either way at most ~4/3 of its length,
 * so one listed value always fits one reply (the output limit is twice
 * max_body). Returns the bytes it adds. */
static size_t put_json_value(json_t *obj, const uint8_t *value, size_t len)
{
    if (jinn_utf8_valid(value, len) && memchr(value, '\0', len) == NULL &&
        json_text_bytes(value, len) <= base64_bytes(len)) {
        json_object_set_new(obj, "value", json_stringn((const char *)value, len));
        return json_text_bytes(value, len);
    } else {
        struct jinn_wbuf w;
        jinn_wbuf_init(&w);
        jinn_wbuf_put_base64(&w, value, len);
        if (!w.failed) {
            json_object_set_new(obj, "value_base64",
                                json_stringn(w.data ? (const char *)w.data : "", w.len));
        }
        jinn_wbuf_free(&w);
        return base64_bytes(len);
    }
}

struct list_state {
    json_t *keys;
    uint64_t limit;
    uint64_t now;
    bool values;
    bool more;
    size_t count;
    size_t bytes; /* of the reply so far, about */
};

static bool list_one(void *data, const struct jinn_kv_entry *e)
{
    struct list_state *ls = data;
    json_t *item;
    if (ls->count == ls->limit ||
        (ls->count > 0 && ls->values &&
         ls->bytes + base64_bytes(e->value_len) + 6 * e->key_len > LIST_MAX_REPLY_BYTES)) {
        /* Paged by bytes too: a page of large values is built within the
         * loop budget and fits a reply; the first item always goes in. */
        ls->more = true;
        return false;
    }
    ls->bytes += 6 * e->key_len + 96;
    item = json_pack("{s:s%, s:I, s:I}", "key", (const char *)e->key, e->key_len, "revision",
                     (json_int_t)e->revision, "create_revision", (json_int_t)e->create_revision);
    if (item == NULL) {
        return false;
    }
    if (e->expires_at != 0) {
        json_object_set_new(item, "expires_in_ms",
                            json_integer(e->expires_at > ls->now
                                             ? (json_int_t)(e->expires_at - ls->now)
                                             : 0));
    }
    if (ls->values) {
        ls->bytes += put_json_value(item, e->value, e->value_len);
    }
    json_array_append_new(ls->keys, item);
    ls->count++;
    return true;
}

static void list_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct jinn_route_args *args = jinn_malloc(sizeof *args);
    char *prefix = jinn_malloc(JINN_KV_KEY_MAX + 1), *after = jinn_malloc(JINN_KV_KEY_MAX + 1);
    struct list_state ls;
    uint64_t values;
    bool has_prefix, has_after;
    size_t prefix_len = 0, after_len = 0;
    json_t *obj;

    memset(&ls, 0, sizeof ls);
    if (args == NULL || prefix == NULL || after == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto out;
    }
    if (!args_of(req, args, false) ||
        !key_param_or_reply(req, "prefix", prefix, JINN_KV_KEY_MAX + 1, &prefix_len,
                            &has_prefix) ||
        !key_param_or_reply(req, "start_after", after, JINN_KV_KEY_MAX + 1, &after_len,
                            &has_after) ||
        !uint_or_reply(req, "limit", LIST_DEFAULT_LIMIT, 1, LIST_MAX_LIMIT, &ls.limit) ||
        !uint_or_reply(req, "values", 0, 0, 1, &values)) {
        goto out;
    }
    ls.values = values == 1;
    ls.now = jinn_node_time_now(api->node); /* "time left" as of now */
    ls.keys = json_array();
    if (ls.keys == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto out;
    }
    jinn_kv_scan(&fsm->kv, args->arg[0], (const uint8_t *)prefix, prefix_len,
                 has_after ? (const uint8_t *)after : NULL, after_len, list_one, &ls);
    obj = json_pack("{s:o, s:b, s:I}", "keys", ls.keys, "more", ls.more, "revision",
                    (json_int_t)fsm->kv.last_revision);
    jinn_http_reply_json(req, 200, obj);
out:
    jinn_free(args);
    jinn_free(prefix);
    jinn_free(after);
}

/* ---- watch ---------------------------------------------------------------- */

/* Watch replies are written as JSON text directly: a reply holds values of
 * up to max_body, and building them as jansson trees, then dumping them,
 * costs several times the loop time of one pass over the bytes. */
static void put_json_string(struct jinn_wbuf *w, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    jinn_wbuf_put_raw(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        jinn_wbuf_put_raw(w, p + run, i - run);
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            jinn_wbuf_put_raw(w, esc, sizeof esc);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jinn_wbuf_put_raw(w, esc, sizeof esc);
        }
        run = i + 1;
    }
    jinn_wbuf_put_raw(w, p + run, n - run);
    jinn_wbuf_put_raw(w, "\"", 1);
}

/* One event, as event objects always were: type, key, revision, and for a
 * put "value" (UTF-8 without NUL) or "value_base64". */
static void put_event(struct jinn_wbuf *w, const struct jinn_kv_event *ev)
{
    static const char *const types[] = {"", "put", "delete", "expire"};
    jinn_wbuf_printf(w, "{\"type\":\"%s\",\"key\":", types[ev->type]);
    put_json_string(w, ev->key, ev->key_len);
    jinn_wbuf_printf(w, ",\"revision\":%" PRIu64, ev->revision);
    if (ev->type == JINN_KV_EVENT_PUT && ev->value_dropped) {
        /* Over the history's byte budget: the watcher re-reads the key. */
        jinn_wbuf_put_raw(w, ",\"value_dropped\":true", 21);
    } else if (ev->type == JINN_KV_EVENT_PUT) {
        const uint8_t *v = ev->value ? ev->value : (const uint8_t *)"";
        if (jinn_utf8_valid(v, ev->value_len) && memchr(v, '\0', ev->value_len) == NULL) {
            jinn_wbuf_put_raw(w, ",\"value\":", 9);
            put_json_string(w, v, ev->value_len);
        } else {
            jinn_wbuf_put_raw(w, ",\"value_base64\":\"", 17);
            jinn_wbuf_put_base64(w, v, ev->value_len);
            jinn_wbuf_put_raw(w, "\"", 1);
        }
    }
    jinn_wbuf_put_raw(w, "}", 1);
}

/* Appends to w (as "ev,ev,...") the events after w->after matching the
 * watch, at most WATCH_MAX_EVENTS and WATCH_MAX_REPLY_BYTES once the event
 * that crosses it is in (*more tells that it stopped there). Never splits a
 * revision across replies. Returns how many it wrote. */
static size_t collect(const struct jinn_kv *kv, const struct jinn_watcher *wt,
                      struct jinn_wbuf *w, uint64_t *last, bool *more)
{
    size_t n = jinn_kv_history_len(kv), count = 0, start = w->len;
    size_t lo = 0, hi = n;

    /* Binary search for the first event after wt->after (revisions ascend). */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (jinn_kv_history_at(kv, mid)->revision <= wt->after) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (size_t i = lo; i < n && !w->failed; i++) {
        const struct jinn_kv_event *ev = jinn_kv_history_at(kv, i);
        if (strcmp(ev->ns, wt->ns) != 0 || ev->key_len < wt->prefix_len ||
            memcmp(ev->key, wt->prefix, wt->prefix_len) != 0) {
            continue;
        }
        if ((count >= WATCH_MAX_EVENTS || w->len - start >= WATCH_MAX_REPLY_BYTES) &&
            ev->revision != *last) {
            *more = true;
            break;
        }
        if (count > 0) {
            jinn_wbuf_put_raw(w, ",", 1);
        }
        put_event(w, ev);
        *last = ev->revision;
        count++;
    }
    return count;
}

static void watcher_closed(uv_handle_t *h) { jinn_free(h->data); }

/* Answers the watch with the events already in w (may be empty) and frees
 * the watcher. */
static void watcher_finish(struct jinn_watcher *wt, struct jinn_wbuf *w, uint64_t revision,
                           bool more)
{
    struct jinn_api *api = wt->api;
    if (wt->prev) {
        wt->prev->next = wt->next;
    } else {
        api->watchers = wt->next;
    }
    if (wt->next) {
        wt->next->prev = wt->prev;
    }
    api->n_watchers--;
    jinn_wbuf_printf(w, "],\"revision\":%" PRIu64 ",\"more\":%s}", revision,
                     more ? "true" : "false");
    if (w->failed) {
        jinn_http_reply_error(wt->req, JINN_ENOMEM, NULL);
    } else {
        jinn_http_reply(wt->req, 200, "application/json", w->data, w->len);
    }
    uv_close((uv_handle_t *)&wt->timer, watcher_closed);
}

static void reply_start(struct jinn_wbuf *w)
{
    jinn_wbuf_init(w);
    jinn_wbuf_put_raw(w, "{\"events\":[", 11);
}

static void watcher_finish_empty(struct jinn_watcher *wt, uint64_t revision)
{
    struct jinn_wbuf w;
    reply_start(&w);
    watcher_finish(wt, &w, revision, false);
    jinn_wbuf_free(&w);
}

static void watch_timeout(uv_timer_t *t)
{
    struct jinn_watcher *w = t->data;
    const struct jinn_fsm *fsm = jinn_node_fsm(w->api->node);
    uint64_t last = 0;
    bool more = false;
    struct jinn_wbuf out;

    /* Events may be waiting for a later loop turn (WATCH_FANOUT_BYTES):
     * deliver them rather than report a revision past them. */
    reply_start(&out);
    if (collect(&fsm->kv, w, &out, &last, &more) > 0 || out.failed) {
        watcher_finish(w, &out, last, more);
    } else {
        last = fsm->kv.last_revision > w->after ? fsm->kv.last_revision : w->after;
        watcher_finish(w, &out, last, false);
    }
    jinn_wbuf_free(&out);
}

static void watch_kick(uv_timer_t *t);

/* Answers the watchers that have new events, up to WATCH_FANOUT_BYTES of
 * replies; the rest on the next loop turn. */
static void wake_watchers(struct jinn_api *api)
{
    const struct jinn_kv *kv = &jinn_node_fsm(api->node)->kv;
    size_t built = 0;
    for (struct jinn_watcher *w = api->watchers, *next; w != NULL; w = next) {
        uint64_t last = 0;
        bool more = false;
        struct jinn_wbuf out;
        next = w->next;
        if (kv->last_revision <= w->after) {
            continue;
        }
        if (built >= WATCH_FANOUT_BYTES) {
            /* 1 ms, not 0: libuv runs a 0 ms timer started from a timer
             * callback in the same loop turn. */
            if (!api->stopping) {
                uv_timer_start(&api->watch_kick, watch_kick, 1, 0);
            }
            return;
        }
        reply_start(&out);
        if (collect(kv, w, &out, &last, &more) > 0 || out.failed) {
            uv_timer_stop(&w->timer);
            built += out.len;
            watcher_finish(w, &out, last, more);
        }
        jinn_wbuf_free(&out);
    }
}

static void watch_kick(uv_timer_t *t) { wake_watchers(t->data); }

void jinn_api_kv_applied(void *data, uint64_t index)
{
    struct jinn_api *api = data;
    jinn_api_index_applied(api, index);
    jinn_api_queue_applied(api);
    jinn_api_lock_applied(api);
    jinn_api_check_applied(api, index);
    wake_watchers(api);
}

void jinn_api_stop(struct jinn_api *api)
{
    api->stopping = true;
    jinn_fetch_stop_all();
    jinn_api_queue_stop(api);
    jinn_api_lock_stop(api);
    jinn_api_index_stop(api);
    jinn_api_sql_stop(api);
    jinn_api_check_stop(api);
    jinn_api_fn_stop(api);
    while (api->watchers != NULL) {
        struct jinn_watcher *w = api->watchers;
        uv_timer_stop(&w->timer);
        watcher_finish_empty(w, w->after);
    }
    uv_close((uv_handle_t *)&api->watch_kick, NULL);
    uv_close((uv_handle_t *)&api->auth_timer, NULL); /* api/auth.c */
}

static void watch(struct jinn_api *api, struct jinn_http_request *req,
                  const struct jinn_route_args *args, const char *prefix, size_t prefix_len)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    struct jinn_policy pol = jinn_config_policy(api->cfg, args->arg[0]);
    struct jinn_node_status st;
    struct jinn_watcher *w;
    uint64_t after, timeout_ms, last = 0;
    char tbuf[32];
    bool has_timeout, more = false;
    struct jinn_wbuf out;
    size_t found;

    /* Revisions are JSON integers: nothing past INT64_MAX can exist. */
    if (!uint_or_reply(req, "after", fsm->kv.last_revision, 0, INT64_MAX, &after) ||
        !query_or_reply(req, "timeout", tbuf, sizeof tbuf, &has_timeout)) {
        return;
    }
    timeout_ms = WATCH_DEFAULT_MS;
    if (has_timeout && (jinn_parse_duration(tbuf, &timeout_ms) != 0 || timeout_ms == 0 ||
                        timeout_ms > WATCH_MAX_MS)) {
        jinn_http_reply_error(req, JINN_EINVAL, "timeout must be a duration up to 5m");
        return;
    }
    jinn_node_status(api->node, &st);
    if (!pol.stale_reads && !st.quorum) {
        /* A CP watch must not feed a client from a cut-off replica. */
        jinn_http_reply_error(req, JINN_ENOLEADER, NULL);
        return;
    }
    if (after < fsm->kv.history_floor) {
        json_t *obj = json_pack("{s:s, s:s, s:I}", "error", jinn_error_name(JINN_ECOMPACTED),
                                "message", jinn_error_message(JINN_ECOMPACTED), "revision",
                                (json_int_t)fsm->kv.history_floor);
        jinn_http_reply_json(req, 410, obj);
        return;
    }
    w = jinn_calloc(1, sizeof *w);
    if (w == NULL || api->n_watchers >= WATCHERS_MAX || api->stopping) {
        jinn_free(w);
        jinn_http_reply_error(req, w ? JINN_EBUSY : JINN_ENOMEM, NULL);
        return;
    }
    w->api = api;
    w->req = req;
    memcpy(w->ns, args->arg[0], args->len[0] + 1);
    w->prefix_len = prefix_len;
    memcpy(w->prefix, prefix, w->prefix_len);
    w->after = after;
    jinn_api_freshness(api, req, false);
    reply_start(&out);
    found = collect(&fsm->kv, w, &out, &last, &more);
    uv_timer_init(api->loop, &w->timer);
    w->timer.data = w;
    w->next = api->watchers;
    if (api->watchers) {
        api->watchers->prev = w;
    }
    api->watchers = w;
    api->n_watchers++;
    if (found > 0 || out.failed) {
        watcher_finish(w, &out, last, more);
        jinn_wbuf_free(&out);
        return;
    }
    jinn_wbuf_free(&out);
    uv_timer_start(&w->timer, watch_timeout, timeout_ms, 0);
}

/* A watch whose min_index was applied: its args are re-derived from the
 * request (the route args do not outlive the handler). */
static void watch_at_index(struct jinn_api *api, struct jinn_http_request *req)
{
    struct jinn_route_args *args = jinn_malloc(sizeof *args);
    char *prefix = jinn_malloc(JINN_KV_KEY_MAX + 1);
    size_t prefix_len = 0;
    bool has_prefix;
    if (args == NULL || prefix == NULL || !args_of(req, args, false)) {
        jinn_http_reply_error(req, args && prefix ? JINN_EINVAL : JINN_ENOMEM, NULL);
    } else if (key_param_or_reply(req, "prefix", prefix, JINN_KV_KEY_MAX + 1, &prefix_len,
                                  &has_prefix)) {
        if (!has_prefix) {
            prefix[0] = '\0';
            prefix_len = 0;
        }
        args->arg[0][args->len[0]] = '\0';
        watch(api, req, args, prefix, prefix_len);
    }
    jinn_free(args);
    jinn_free(prefix);
}

void jinn_api_kv_list(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    enum read_mode mode;
    uint64_t is_watch;
    char prefix[JINN_KV_KEY_MAX + 1];
    size_t prefix_len;
    bool has_prefix;

    if (!ns_key_or_reply(req, args, false) || !uint_or_reply(req, "watch", 0, 0, 1, &is_watch) ||
        !key_param_or_reply(req, "prefix", prefix, sizeof prefix, &prefix_len, &has_prefix)) {
        return;
    }
    if (is_watch) {
        /* min_index: the watch starts once this node applied it. */
        jinn_api_at_index_or_reply(api, req, watch_at_index);
        return;
    }
    if (!read_mode_or_reply(api, req, args->arg[0], &mode)) {
        return;
    }
    jinn_api_read_or_reply(api, req, mode == READ_LINEARIZABLE, list_now);
}
