/* auth.c - scoped tokens on the HTTP side (issue 15 item 3).
 *
 * Every request is authenticated once, in the router (jinn_api_handle),
 * before it is forwarded: the node that receives it checks the token
 * against its applied table, and a forwarded request keeps its header so
 * the leader checks it again at its own applied state (a token the leader
 * has revoked is refused there even when a follower has not applied the
 * revocation yet).
 *
 * Presented credentials (Authorization: Bearer X):
 *   jinn.NAME.SECRET   a token created by POST /v1/tokens (SECRET: 64 hex)
 *   jinn-node.KEY      a node's own calls (KEY: the cluster's internal key,
 *                      64 hex), allowed everything
 *   jinn-fn.NAME.MAC   a function's host calls (MAC: hex HMAC-SHA256 with
 *                      the key of "fn:" and NAME), allowed what its deployer's token
 *                      allowed when it deployed it, while that token exists
 *   anything else      the configured bootstrap token, while the table has
 *                      never held a token (and only on a leader that has
 *                      applied its log; other nodes forward it to the
 *                      leader); afterwards the "bootstrap" entry
 *
 * Auth is off (every request allowed, as before) while no token was ever
 * created and no bootstrap token is configured. Once the first token is
 * applied it stays on, even if every token is revoked later. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc.h"
#include "api/api.h"
#include "error.h"
#include "fsm/auth.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "log.h"
#include "sha256.h"

#define TOKEN_PREFIX "jinn."
#define NODE_PREFIX "jinn-node."
#define FN_PREFIX "jinn-fn."
#define CREDENTIAL_MAX 512
#define SECRET_BYTES 32
#define BOOTSTRAP_NAME "bootstrap"
#define BOOTSTRAP_POLL_MS 200
#define TTL_MAX_MS (UINT64_C(10) * 365 * 24 * 3600 * 1000)
/* A follower relays a token-shaped credential it does not know to the
 * leader (it may have been created a moment ago) only with a body up to
 * this size: unauthenticated bytes must not ride the forwarding path. */
#define UNKNOWN_FORWARD_BODY_MAX (64u * 1024)

static const struct jinn_auth *table(struct jinn_api *api)
{
    return &jinn_node_fsm(api->node)->auth;
}

/* For expiry: the cluster time this node applied, or its own wall clock
 * when that is later (an idle cluster's time moves only with entries; a
 * token must not outlive its TTL meanwhile). A node whose clock runs
 * ahead expires tokens early, never late. */
static uint64_t auth_now(struct jinn_api *api)
{
    struct timespec ts;
    uint64_t t = jinn_node_fsm(api->node)->time_ms, wall;
    clock_gettime(CLOCK_REALTIME, &ts);
    wall = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return wall > t ? wall : t;
}

bool jinn_auth_enabled(struct jinn_api *api)
{
    const struct jinn_auth *a = table(api);
    return a->has_key || a->n > 0 || api->auth_bootstrap != NULL;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool random_bytes(void *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = getrandom((uint8_t *)p + done, n - done, 0);
        if (r <= 0) {
            return false;
        }
        done += (size_t)r;
    }
    return true;
}

size_t jinn_api_auth_internal_header(struct jinn_api *api, char *buf, size_t cap)
{
    const struct jinn_auth *a = api->node != NULL ? table(api) : NULL;
    char k[2 * JINN_AUTH_KEY_LEN + 1];
    int n;
    /* an edge replica holds R, not the key: it has no node credential */
    if (a == NULL || !a->has_key || jinn_node_is_replica(api->node)) {
        buf[0] = '\0';
        return 0;
    }
    hex(a->key, JINN_AUTH_KEY_LEN, k);
    n = snprintf(buf, cap, "Authorization: Bearer " NODE_PREFIX "%s\r\n", k);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

/* hex(HMAC-SHA256(key, "fn:" || name)) into out (65 bytes). False without
 * a key. A real MAC, not SHA-256(key || ...): no length extension. */
static bool fn_mac(const struct jinn_auth *a, const char *fn, size_t len, char *out)
{
    uint8_t buf[3 + JINN_AUTH_NAME_MAX], mac[32];
    unsigned mac_len = 0;
    if (!a->has_key || len > JINN_AUTH_NAME_MAX) {
        return false;
    }
    memcpy(buf, "fn:", 3);
    memcpy(buf + 3, fn, len);
    if (HMAC(EVP_sha256(), a->key, JINN_AUTH_KEY_LEN, buf, 3 + len, mac, &mac_len) == NULL ||
        mac_len != sizeof mac) {
        return false;
    }
    hex(mac, sizeof mac, out);
    return true;
}

size_t jinn_api_auth_fn_header(struct jinn_api *api, const char *fn, char *buf, size_t cap)
{
    char mac[65];
    int n;
    buf[0] = '\0';
    if (api->node == NULL || jinn_node_is_replica(api->node) || /* unit tests; no key */
        !fn_mac(table(api), fn, strlen(fn), mac)) {
        return 0;
    }
    n = snprintf(buf, cap, "Authorization: Bearer " FN_PREFIX "%s.%s\r\n", fn, mac);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

/* ---- who is asking ----------------------------------------------------------- */

/* WHO_BOOTSTRAP: the configured bootstrap secret while this node's applied
 * table is empty; only a leader that has applied its whole log may take it
 * (its empty table is then the cluster's), others ask the leader. */
enum who { WHO_NOBODY, WHO_ALL, WHO_TOKEN, WHO_BOOTSTRAP };

/* Compares two secrets of any lengths in time independent of both. */
static bool secret_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    uint8_t ha[32], hb[32];
    if (jinn_sha256(a, alen, ha) != 0 || jinn_sha256(b, blen, hb) != 0) {
        return false;
    }
    return jinn_auth_ct_equal(ha, hb, sizeof ha);
}

/* Finds the credential; WHO_NOBODY when absent or not valid. */
/* jinn.NAME.<64 hex>: the shape of a token POST /v1/tokens made. */
static bool token_shaped(const char *v, size_t len)
{
    const char *name = v + strlen(TOKEN_PREFIX), *dot;
    if (len <= strlen(TOKEN_PREFIX) + 1 + 2 * SECRET_BYTES ||
        memcmp(v, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) != 0) {
        return false;
    }
    dot = v + len - 2 * SECRET_BYTES - 1;
    if (*dot != '.' || !jinn_auth_name_ok(name, (size_t)(dot - name))) {
        return false;
    }
    for (const char *p = dot + 1; p < v + len; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return false;
        }
    }
    return true;
}

static enum who authenticate(struct jinn_api *api, struct jinn_http_request *req,
                             const struct jinn_token **tok, const struct jinn_fn_scope **scope,
                             bool *shaped)
{
    const struct jinn_auth *a = table(api);
    const struct jinn_http_header *h = NULL;
    const char *v;
    size_t len;
    unsigned seen = 0;

    *tok = NULL;
    *scope = NULL;
    *shaped = false;
    for (unsigned i = 0; i < req->msg.n_headers; i++) {
        if (req->msg.headers[i].name_len == 13 &&
            strncasecmp(req->msg.headers[i].name, "authorization", 13) == 0) {
            h = &req->msg.headers[i];
            seen++;
        }
    }
    if (seen != 1 || h->value_len < 8 || strncasecmp(h->value, "Bearer ", 7) != 0) {
        return WHO_NOBODY;
    }
    v = h->value + 7;
    len = h->value_len - 7;
    if (len == 0 || len > CREDENTIAL_MAX) {
        return WHO_NOBODY;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f) {
            return WHO_NOBODY;
        }
    }
    /* An edge replica holds R = SHA-256(label || key) where members hold
     * the key (fsm/auth.h): node and function credentials, which the key
     * makes, are never valid on it; without this, R itself would be one. */
    if (jinn_node_is_replica(api->node) &&
        ((len > strlen(NODE_PREFIX) && memcmp(v, NODE_PREFIX, strlen(NODE_PREFIX)) == 0) ||
         (len > strlen(FN_PREFIX) && memcmp(v, FN_PREFIX, strlen(FN_PREFIX)) == 0))) {
        return WHO_NOBODY;
    }
    if (len > strlen(NODE_PREFIX) && memcmp(v, NODE_PREFIX, strlen(NODE_PREFIX)) == 0) {
        char k[2 * JINN_AUTH_KEY_LEN + 1];
        if (!a->has_key || len != strlen(NODE_PREFIX) + 2 * JINN_AUTH_KEY_LEN) {
            return WHO_NOBODY;
        }
        hex(a->key, JINN_AUTH_KEY_LEN, k);
        return jinn_auth_ct_equal(k, v + strlen(NODE_PREFIX), 2 * JINN_AUTH_KEY_LEN)
                   ? WHO_ALL
                   : WHO_NOBODY;
    }
    if (len > strlen(FN_PREFIX) && memcmp(v, FN_PREFIX, strlen(FN_PREFIX)) == 0) {
        const char *fn = v + strlen(FN_PREFIX);
        const char *dot = memrchr(fn, '.', len - strlen(FN_PREFIX));
        const struct jinn_fn_scope *sc;
        char mac[65];
        size_t fn_len = dot ? (size_t)(dot - fn) : 0;
        if (dot == NULL || len - strlen(FN_PREFIX) - fn_len - 1 != 64 ||
            !fn_mac(a, fn, fn_len, mac) || !jinn_auth_ct_equal(mac, dot + 1, 64)) {
            return WHO_NOBODY;
        }
        sc = jinn_auth_fn_scope(a, fn, fn_len);
        /* never more than its deployer: gone with the deploying token */
        if (sc == NULL || (sc->deployer[0] != '\0' &&
                           jinn_auth_find(a, sc->deployer, strlen(sc->deployer)) == NULL)) {
            return WHO_NOBODY;
        }
        *scope = sc;
        return WHO_TOKEN;
    }
    if (len > strlen(TOKEN_PREFIX) && memcmp(v, TOKEN_PREFIX, strlen(TOKEN_PREFIX)) == 0) {
        const char *name = v + strlen(TOKEN_PREFIX);
        *shaped = token_shaped(v, len);
        const char *dot = memchr(name, '.', len - strlen(TOKEN_PREFIX));
        if (dot == NULL) {
            return WHO_NOBODY;
        }
        *tok = jinn_auth_check(a, name, (size_t)(dot - name), v, len, auth_now(api));
        return *tok != NULL ? WHO_TOKEN : WHO_NOBODY;
    }
    /* The bootstrap token: from this node's config until the first token
     * exists (the leader is proposing it), then from the table. */
    if (!a->has_key && a->n == 0) {
        const char *b = api->auth_bootstrap;
        if (b != NULL && secret_equal(b, strlen(b), v, len)) {
            return WHO_BOOTSTRAP;
        }
        return WHO_NOBODY;
    }
    *tok = jinn_auth_check(a, BOOTSTRAP_NAME, strlen(BOOTSTRAP_NAME), v, len, auth_now(api));
    return *tok != NULL ? WHO_TOKEN : WHO_NOBODY;
}

static void reply_unauthorized(struct jinn_http_request *req)
{
    jinn_http_add_header(req, "WWW-Authenticate", "Bearer realm=\"jinn\"");
    jinn_http_reply_error(req, JINN_EUNAUTHORIZED, NULL);
}

static void scope_done(void *data, int code, const struct jinn_result *res)
{
    (void)data;
    if (code != JINN_OK || res->code != JINN_OK) {
        jinn_warn("a function's scope was not recorded (%s)",
                  jinn_error_name(code != JINN_OK ? code : res->code));
    }
}

bool jinn_api_auth_begin(struct jinn_api *api, struct jinn_http_request *req, bool public_path)
{
    const struct jinn_token *tok;
    const struct jinn_fn_scope *scope;
    bool shaped;
    enum who who;

    api->auth_all = true;
    api->auth_rules = NULL;
    api->auth_rules_text = NULL;
    api->auth_name = NULL;
    if (!jinn_auth_enabled(api) || public_path) {
        return true;
    }
    who = authenticate(api, req, &tok, &scope, &shaped);
    if (who == WHO_BOOTSTRAP) {
        /* An empty applied table on a node that is not a leader with its
         * whole log applied says nothing (a restart before catch-up, a new
         * member): the bootstrap token may have been revoked long ago. */
        struct jinn_node_status st;
        jinn_node_status(api->node, &st);
        if (st.leader_ready) {
            who = WHO_ALL;
        } else if (!jinn_node_is_leader(api->node) &&
                   jinn_http_header_find(&req->msg, "X-Jinn-Forwarded-By") == NULL) {
            jinn_api_forward_or_reply(api, req); /* the leader's table decides */
            return false;
        } else {
            jinn_http_reply_error(req, JINN_EBUSY,
                                  "this node has not applied its log yet; retry");
            return false;
        }
    }
    if (who == WHO_NOBODY && shaped && !jinn_node_is_leader(api->node) &&
        jinn_http_header_find(&req->msg, "X-Jinn-Forwarded-By") == NULL &&
        req->body_len <= UNKNOWN_FORWARD_BODY_MAX &&
        !(req->path_len >= 13 && memcmp(req->path, "/v1/internal/", 13) == 0)) {
        /* A token this follower does not know (yet): it may have been
         * created a moment ago and not be applied here. The leader's table
         * decides (it answers 401 if it does not know it either). Counted
         * against the limits as "unauthenticated" first; never for the
         * nodes' internal endpoints. */
        if (!jinn_api_limits_unknown_or_reply(api, req)) {
            return false;
        }
        jinn_api_forward_or_reply(api, req);
        return false;
    }
    if (who == WHO_NOBODY) {
        reply_unauthorized(req);
        return false;
    }
    api->auth_all = who == WHO_ALL;
    if (tok != NULL) {
        api->auth_rules = &tok->rules;
        api->auth_rules_text = tok->rules_text;
        api->auth_name = tok->name;
    } else if (scope != NULL) {
        api->auth_rules = &scope->rules;
        api->auth_rules_text = scope->rules_text;
        api->auth_name = scope->deployer;
    }
    return true;
}

void jinn_api_auth_end(struct jinn_api *api)
{
    api->auth_all = true;
    api->auth_rules = NULL;
    api->auth_rules_text = NULL;
    api->auth_name = NULL;
}

void jinn_api_auth_scope_capture(struct jinn_api *api, struct jinn_api_fn_scope *out)
{
    const char *rules = api->auth_all ? "cluster:admin" : api->auth_rules_text;
    const char *deployer = api->auth_all || api->auth_name == NULL ? "" : api->auth_name;
    memset(out, 0, sizeof *out);
    if (!jinn_auth_enabled(api) || rules == NULL || strlen(deployer) >= sizeof out->deployer) {
        return;
    }
    out->rules = jinn_malloc(strlen(rules) + 1);
    if (out->rules != NULL) {
        memcpy(out->rules, rules, strlen(rules) + 1);
        memcpy(out->deployer, deployer, strlen(deployer) + 1);
    }
}

void jinn_api_auth_scope_propose(struct jinn_api *api, const char *fn,
                                 const struct jinn_api_fn_scope *s)
{
    const char *rules = s->rules, *deployer = s->deployer;
    size_t len = strlen(fn);
    static const uint8_t zero[JINN_AUTH_HASH_LEN];
    struct jinn_cmd c;

    if (rules == NULL || !jinn_auth_name_ok(fn, len)) {
        return;
    }
    /* Proposed right after the deploy's FN_DEPLOY, in the same loop turn:
     * raft_apply appends at once, so the two entries are adjacent. Apply
     * drops the function's scope when a deploy applies and takes this one
     * only into a function that has an active version and no scope: a
     * refused deploy leaves the old scope as it was. If this proposal
     * fails, host calls get 401 (no scope), never a wider one. */
    memset(&c, 0, sizeof c);
    /* TOKEN_PUT2 when the rules use what the release before refuses: a
     * node of that release stops at it rather than diverge (fsm/auth.h). */
    c.type = jinn_auth_rules_need_put2(rules, strlen(rules)) ? JINN_CMD_TOKEN_PUT2
                                                             : JINN_CMD_TOKEN_PUT;
    c.token.name = (struct jinn_slice){(const uint8_t *)fn, len};
    c.token.salt = (struct jinn_slice){zero, JINN_AUTH_SALT_LEN};
    c.token.hash = (struct jinn_slice){zero, JINN_AUTH_HASH_LEN};
    c.token.rules = (struct jinn_slice){(const uint8_t *)rules, strlen(rules)};
    c.token.flags = JINN_CMD_TOKEN_FNSCOPE;
    c.token.deployer = (struct jinn_slice){(const uint8_t *)deployer, strlen(deployer)};
    if (jinn_node_propose(api->node, &c, api->cfg->request_timeout_ms, scope_done, api) !=
        JINN_OK) {
        jinn_warn("function %.*s: its scope could not be proposed", (int)len, fn);
    }
}

bool jinn_api_auth_allows(const struct jinn_api *api, int kind, const char *name, size_t len,
                          unsigned actions)
{
    if (api->auth_all || kind == JINN_AUTH_PUBLIC) {
        return true;
    }
    if (api->auth_rules == NULL) {
        return false;
    }
    if (kind == JINN_AUTH_NONE) {
        kind = JINN_AUTH_CLUSTER; /* a route that states nothing: admins only */
        actions = JINN_AUTH_ADMIN;
    }
    return jinn_auth_rules_allow(api->auth_rules, kind, name, len, actions);
}

/* Listings: only a prefix rule covering every name they could show. */
static bool covers(const struct jinn_auth_rules *rules, int kind, const char *prefix,
                   size_t len, unsigned actions)
{
    for (unsigned i = 0; i < rules->n; i++) {
        const struct jinn_auth_rule *r = &rules->rule[i];
        if (r->kind == JINN_AUTH_CLUSTER) {
            if ((r->actions & JINN_AUTH_ADMIN) != 0) {
                return true;
            }
            continue; /* cluster:metrics covers no listing */
        }
        if (r->kind == kind && r->prefix && (r->actions & actions) != 0 &&
            r->pattern_len <= len && memcmp(r->pattern, prefix, r->pattern_len) == 0) {
            return true;
        }
    }
    return false;
}

bool jinn_api_auth_or_reply(struct jinn_api *api, struct jinn_http_request *req, int kind,
                            const char *name, size_t len, unsigned actions, bool listing)
{
    bool ok;
    if (api->auth_all) {
        return true;
    }
    if (listing && kind != JINN_AUTH_NONE && api->auth_rules != NULL) {
        ok = covers(api->auth_rules, kind, name, len, actions);
    } else {
        ok = jinn_api_auth_allows(api, kind, name, len, actions);
    }
    if (!ok) {
        jinn_http_reply_error(req, JINN_EFORBIDDEN, NULL);
    }
    return ok;
}

/* ---- /v1/tokens ---------------------------------------------------------------- */

struct token_create {
    char name[JINN_AUTH_NAME_MAX + 1];
    char secret[2 * SECRET_BYTES + 1];
};

static json_t *rules_json(const char *text)
{
    json_t *arr = json_array();
    for (const char *p = text; arr != NULL && *p != '\0';) {
        const char *sp = strchr(p, ' ');
        size_t n = sp ? (size_t)(sp - p) : strlen(p);
        json_array_append_new(arr, json_stringn(p, n));
        p += n + (sp ? 1 : 0);
    }
    return arr;
}

static json_t *token_json(const struct jinn_token *t)
{
    json_t *o = json_pack("{s:s, s:o, s:I}", "name", t->name, "allow",
                          rules_json(t->rules_text), "created_ms", (json_int_t)t->created_ms);
    if (o != NULL && t->expires_ms != 0) {
        json_object_set_new(o, "expires_ms", json_integer((json_int_t)t->expires_ms));
    }
    return o;
}

static void token_created(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_result *res)
{
    struct token_create *tc = req->user;
    const struct jinn_token *t;
    char token[sizeof TOKEN_PREFIX + JINN_AUTH_NAME_MAX + 1 + 2 * SECRET_BYTES + 1];
    json_t *o;

    req->user = NULL;
    if (res->code != JINN_OK) {
        jinn_http_reply_error(req, res->code,
                              res->code == JINN_ECONFLICT ? "a token with that name exists"
                              : res->code == JINN_EFULL   ? "the token table is full"
                                                          : NULL);
        jinn_free(tc);
        return;
    }
    t = jinn_auth_find(table(api), tc->name, strlen(tc->name));
    snprintf(token, sizeof token, TOKEN_PREFIX "%s.%s", tc->name, tc->secret);
    o = t != NULL ? token_json(t) : json_pack("{s:s}", "name", tc->name);
    if (o != NULL) {
        json_object_set_new(o, "token", json_string(token));
    }
    jinn_http_reply_json(req, 201, o);
    memset(tc->secret, 0, sizeof tc->secret);
    memset(token, 0, sizeof token);
    jinn_free(tc);
}

/* POST /v1/tokens {"name": N, "allow": [RULE...], "ttl_ms": T} */
void jinn_api_token_create(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    json_t *body = jinn_api_body_json_or_reply(req), *name, *allow, *v;
    struct jinn_wbuf text;
    struct jinn_auth_rules rules = {0};
    struct token_create *tc = NULL;
    uint8_t secret_raw[SECRET_BYTES], salt[JINN_AUTH_SALT_LEN], hash[JINN_AUTH_HASH_LEN];
    uint8_t key[JINN_AUTH_KEY_LEN];
    char *canon = NULL, err[192],
         full[sizeof TOKEN_PREFIX + JINN_AUTH_NAME_MAX + 1 + 2 * SECRET_BYTES + 1];
    uint64_t ttl = 0;
    struct jinn_cmd c;
    size_t i;
    int rv;

    (void)args;
    jinn_wbuf_init(&text);
    if (body == NULL) {
        return;
    }
    if (!table(api)->has_key && table(api)->n == 0 && api->auth_bootstrap != NULL) {
        /* The bootstrap token goes first (a token created before it would
         * turn the configured one off, bootstrap applying only into an
         * empty table): this leader proposes it within 200 ms. */
        jinn_http_reply_error(req, JINN_EBUSY, "the bootstrap token is being created; retry");
        goto cleanup;
    }
    {
        const char *k;
        json_object_foreach(body, k, v)
        {
            if (strcmp(k, "name") != 0 && strcmp(k, "allow") != 0 && strcmp(k, "ttl_ms") != 0) {
                jinn_http_reply_error(req, JINN_EINVAL,
                                      "unknown field (a token has name, allow, ttl_ms)");
                goto cleanup;
            }
        }
    }
    name = json_object_get(body, "name");
    allow = json_object_get(body, "allow");
    if (!json_is_string(name) ||
        !jinn_auth_name_ok(json_string_value(name), json_string_length(name))) {
        jinn_http_reply_error(req, JINN_EINVAL, "name: [a-z0-9][a-z0-9_-]{0,63}");
        goto cleanup;
    }
    if (!json_is_array(allow) || json_array_size(allow) == 0 ||
        json_array_size(allow) > JINN_AUTH_RULE_COUNT_MAX) {
        jinn_http_reply_error(req, JINN_EINVAL, "allow: a list of 1 to 64 rules");
        goto cleanup;
    }
    json_array_foreach(allow, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > JINN_AUTH_RULES_MAX ||
            memchr(json_string_value(v), ' ', json_string_length(v)) != NULL) {
            jinn_http_reply_error(req, JINN_EINVAL, "allow: each rule a string without spaces");
            goto cleanup;
        }
        if (i > 0) {
            jinn_wbuf_put_u8(&text, ' ');
        }
        jinn_wbuf_put_raw(&text, json_string_value(v), json_string_length(v));
    }
    v = json_object_get(body, "ttl_ms");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1000 ||
            (uint64_t)json_integer_value(v) > TTL_MAX_MS) {
            jinn_http_reply_error(req, JINN_EINVAL, "ttl_ms: 1000 ms to 10 years");
            goto cleanup;
        }
        ttl = (uint64_t)json_integer_value(v);
    }
    canon = jinn_malloc(JINN_AUTH_RULES_MAX + 1);
    if (text.failed || canon == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto cleanup;
    }
    rv = jinn_auth_rules_parse((const char *)text.data, text.len, &rules, canon,
                               JINN_AUTH_RULES_MAX + 1, err, sizeof err);
    if (rv != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "allow: %s", rv == JINN_EINVAL ? err : "out of memory");
        jinn_http_reply_error(req, rv, msg);
        goto cleanup;
    }
    tc = jinn_calloc(1, sizeof *tc);
    if (tc == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto cleanup;
    }
    /* Randomness here, in the leader's handler, never in apply. */
    if (!random_bytes(secret_raw, sizeof secret_raw) || !random_bytes(salt, sizeof salt) ||
        !random_bytes(key, sizeof key)) {
        jinn_http_reply_error(req, JINN_EINTERNAL, "no randomness available");
        goto cleanup;
    }
    memcpy(tc->name, json_string_value(name), json_string_length(name) + 1);
    hex(secret_raw, sizeof secret_raw, tc->secret);
    snprintf(full, sizeof full, TOKEN_PREFIX "%s.%s", tc->name, tc->secret);
    jinn_auth_hash(salt, full, strlen(full), hash);
    memset(&c, 0, sizeof c);
    c.type = jinn_auth_rules_need_put2(canon, strlen(canon)) ? JINN_CMD_TOKEN_PUT2
                                                             : JINN_CMD_TOKEN_PUT;
    c.time_ms = 0; /* stamped by the node */
    c.token.name = (struct jinn_slice){(const uint8_t *)tc->name, strlen(tc->name)};
    c.token.salt = (struct jinn_slice){salt, sizeof salt};
    c.token.hash = (struct jinn_slice){hash, sizeof hash};
    c.token.rules = (struct jinn_slice){(const uint8_t *)canon, strlen(canon)};
    c.token.key = (struct jinn_slice){key, sizeof key};
    if (ttl != 0) {
        c.token.expires_ms = auth_now(api) + ttl;
    }
    req->user = tc;
    tc = NULL;
    jinn_api_propose_or_reply(api, req, &c, token_created);

cleanup:
    memset(full, 0, sizeof full);
    memset(secret_raw, 0, sizeof secret_raw);
    jinn_free(tc);
    jinn_free(canon);
    jinn_auth_rules_free(&rules);
    jinn_wbuf_free(&text);
    json_decref(body);
}

static void tokens_list(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_auth *a = table(api);
    json_t *arr = json_array();
    for (unsigned i = 0; i < a->n && arr != NULL; i++) {
        json_array_append_new(arr, token_json(&a->tokens[i]));
    }
    jinn_http_reply_json(req, 200, json_pack("{s:o}", "tokens", arr ? arr : json_array()));
}

void jinn_api_token_list(struct jinn_api *api, struct jinn_http_request *req,
                         const struct jinn_route_args *args)
{
    (void)args;
    jinn_api_read_or_reply(api, req, false, tokens_list);
}

static void token_revoked(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_result *res)
{
    (void)api;
    if (res->code != JINN_OK) {
        jinn_http_reply_error(req, res->code,
                              res->code == JINN_ENOTFOUND ? "no such token" : NULL);
        return;
    }
    jinn_http_reply_json(req, 200, json_pack("{s:b}", "revoked", 1));
}

void jinn_api_token_revoke(struct jinn_api *api, struct jinn_http_request *req,
                           const struct jinn_route_args *args)
{
    struct jinn_cmd c;
    if (!jinn_auth_name_ok(args->arg[0], args->len[0])) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such token");
        return;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_TOKEN_REVOKE;
    c.token.name = (struct jinn_slice){(const uint8_t *)args->arg[0], args->len[0]};
    jinn_api_propose_or_reply(api, req, &c, token_revoked);
}

/* ---- bootstrap ----------------------------------------------------------------- */

static void bootstrap_done(void *data, int code, const struct jinn_result *res)
{
    struct jinn_api *api = data;
    api->auth_bootstrapping = false;
    if (code == JINN_OK && res->code == JINN_OK) {
        jinn_info("bootstrap token created (cluster:admin)");
    } else if (code == JINN_OK && res->code == JINN_ECONFLICT) {
        jinn_debug("bootstrap token not needed: the token table is not empty");
    }
}

static void bootstrap_tick(uv_timer_t *t)
{
    struct jinn_api *api = t->data;
    const struct jinn_auth *a = table(api);
    const char *b = api->auth_bootstrap;
    uint8_t salt[JINN_AUTH_SALT_LEN], hash[JINN_AUTH_HASH_LEN], key[JINN_AUTH_KEY_LEN];
    static const char rules[] = "cluster:admin";
    struct jinn_cmd c;

    if (a->has_key || a->n > 0) {
        uv_timer_stop(t); /* the table has had a token: never again */
        return;
    }
    if (api->auth_bootstrapping || api->stopping || !jinn_node_is_leader(api->node)) {
        return;
    }
    {
        /* Only a leader that has applied its log knows the table is empty
         * (apply refuses it anyway once the cluster's key exists). */
        struct jinn_node_status st;
        jinn_node_status(api->node, &st);
        if (!st.leader_ready) {
            return;
        }
    }
    if (!random_bytes(salt, sizeof salt) || !random_bytes(key, sizeof key)) {
        return;
    }
    jinn_auth_hash(salt, b, strlen(b), hash);
    memset(&c, 0, sizeof c);
    c.type = jinn_auth_rules_need_put2(rules, strlen(rules)) ? JINN_CMD_TOKEN_PUT2
                                                             : JINN_CMD_TOKEN_PUT;
    c.token.name = (struct jinn_slice){(const uint8_t *)BOOTSTRAP_NAME, strlen(BOOTSTRAP_NAME)};
    c.token.salt = (struct jinn_slice){salt, sizeof salt};
    c.token.hash = (struct jinn_slice){hash, sizeof hash};
    c.token.rules = (struct jinn_slice){(const uint8_t *)rules, strlen(rules)};
    c.token.key = (struct jinn_slice){key, sizeof key};
    c.token.flags = JINN_CMD_TOKEN_BOOTSTRAP;
    if (jinn_node_propose(api->node, &c, api->cfg->request_timeout_ms, bootstrap_done, api) ==
        JINN_OK) {
        api->auth_bootstrapping = true;
    }
}

void jinn_api_auth_init(struct jinn_api *api)
{
    const char *env = getenv("JINN_BOOTSTRAP_TOKEN");
    api->auth_all = true;
    api->auth_bootstrap = api->cfg->bootstrap_token;
    if (env != NULL && env[0] != '\0') {
        if (jinn_config_token_ok(env, strlen(env))) {
            api->auth_bootstrap = env; /* the environment wins over the file */
        } else {
            jinn_error("JINN_BOOTSTRAP_TOKEN ignored: 16 to 256 printable ASCII characters "
                       "without spaces, not starting with 'jinn.' or 'jinn-'");
        }
    }
    uv_timer_init(api->loop, &api->auth_timer);
    api->auth_timer.data = api;
    if (api->auth_bootstrap != NULL) {
        uv_timer_start(&api->auth_timer, bootstrap_tick, BOOTSTRAP_POLL_MS, BOOTSTRAP_POLL_MS);
    }
}
