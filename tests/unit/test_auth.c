/* test_auth.c - scoped tokens: rule grammar, matching, the replicated table,
 * its command and snapshot encodings. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fsm/auth.h"
#include "alloc.h"
#include "fsm/cmd.h"
#include "fsm/digest.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "unit.h"

static int parse(const char *text, struct jinn_auth_rules *r, char *canon, size_t cap)
{
    char err[200];
    return jinn_auth_rules_parse(text, strlen(text), r, canon, cap, err, sizeof err);
}

TEST(auth_rules_parse_accepts_and_canonicalizes)
{
    static const struct {
        const char *in, *canon;
    } ok[] = {
        {"kv:sessions/*:read,write", "kv:sessions/*:read,write"},
        {"kv:sessions/*:write,read", "kv:sessions/*:read,write"},
        {"lock:orders*", "lock:orders*"},
        {"queue:emails:publish", "queue:emails:publish"},
        {"queue:q:admin,consume,publish", "queue:q:publish,consume,admin"},
        {"sql:shop:read", "sql:shop:read"},
        {"fn:*:invoke", "fn:*:invoke"},
        {"fn:billing:deploy,invoke", "fn:billing:invoke,deploy"},
        {"cluster:admin", "cluster:admin"},
        {"cluster:metrics", "cluster:metrics"},
        {"cluster:replica", "cluster:replica"},
        {"cluster:replica kv:a/*:read", "cluster:replica kv:a/*:read"},
        {"kv:a/b:read lock:x queue:y:consume", "kv:a/b:read lock:x queue:y:consume"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct jinn_auth_rules r;
        char canon[JINN_AUTH_RULES_MAX + 1];
        CHECK_INT(parse(ok[i].in, &r, canon, sizeof canon), 0);
        CHECK(strcmp(canon, ok[i].canon) == 0);
        jinn_auth_rules_free(&r);
        /* the canonical form is a fixed point */
        CHECK_INT(parse(ok[i].canon, &r, canon, sizeof canon), 0);
        CHECK(strcmp(canon, ok[i].canon) == 0);
        jinn_auth_rules_free(&r);
    }
}

TEST(auth_rules_parse_refuses)
{
    static const char *const bad[] = {
        "",
        " ",
        "kv",
        "kv:",
        "kv:*",
        "kv::read",
        "kv:a:",
        "kv:a:read,",
        "kv:a:,read",
        "kv:a:read,read",
        "kv:a:publish",
        "kv:a*b:read",
        "kv:**:read",
        "kv:a:b:read",
        "kv:a%2f:read",
        "lock:a:hold",
        "lock:",
        "queue:q:read",
        "sql:d:invoke",
        "fn:f:read",
        "cluster:*",
        "cluster:admin:x",
        "cluster:metrics:x",
        "cluster:replica:x",
        "cluster:replica,metrics",
        "kv:a:replica",
        "cluster:admin,metrics",
        "kv:a:metrics",
        "cluster:",
        "nosuch:a:read",
        "KV:a:read",
        "kv:a:READ",
        "kv:a:read  lock:b",
        " kv:a:read",
        "kv:a:read ",
        "kv:\x01:read",
        "kv:\xc3\xa9:read",
        "kv:a:read kv:a:write",
        "lock:a lock:a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct jinn_auth_rules r;
        char canon[JINN_AUTH_RULES_MAX + 1];
        int rv = parse(bad[i], &r, canon, sizeof canon);
        if (rv != JINN_EINVAL) {
            fprintf(stderr, "  accepted: '%s'\n", bad[i]);
        }
        CHECK_INT(rv, JINN_EINVAL);
        CHECK(r.rule == NULL && r.n == 0);
    }
}

TEST(auth_rules_parse_limits)
{
    struct jinn_auth_rules r;
    char canon[JINN_AUTH_RULES_MAX + 1];
    char *text = malloc(JINN_AUTH_RULES_MAX * 2);
    size_t n = 0;
    CHECK(text != NULL);
    /* 64 rules: fine; 65: refused */
    for (int i = 0; i < 65; i++) {
        n += (size_t)sprintf(text + n, "%skv:n%d/*:read", i ? " " : "", i);
        if (i == 63) {
            CHECK_INT(jinn_auth_rules_parse(text, n, &r, canon, sizeof canon, canon, 64), 0);
            CHECK_INT(r.n, 64);
            jinn_auth_rules_free(&r);
        }
    }
    CHECK_INT(jinn_auth_rules_parse(text, n, &r, canon, sizeof canon, canon, 64), JINN_EINVAL);
    /* a pattern of JINN_AUTH_PATTERN_MAX bytes: fine; one more: refused */
    memcpy(text, "kv:", 3);
    memset(text + 3, 'a', JINN_AUTH_PATTERN_MAX + 1);
    memcpy(text + 3 + JINN_AUTH_PATTERN_MAX, ":read", 5);
    CHECK_INT(jinn_auth_rules_parse(text, 3 + JINN_AUTH_PATTERN_MAX + 5, &r, canon,
                                    sizeof canon, canon, 64),
              0);
    jinn_auth_rules_free(&r);
    text[3 + JINN_AUTH_PATTERN_MAX] = 'a';
    memcpy(text + 4 + JINN_AUTH_PATTERN_MAX, ":read", 5);
    CHECK_INT(jinn_auth_rules_parse(text, 4 + JINN_AUTH_PATTERN_MAX + 5, &r, canon,
                                    sizeof canon, canon, 64),
              JINN_EINVAL);
    /* an embedded NUL is refused, not read as the end */
    CHECK_INT(jinn_auth_rules_parse("kv:a\0b:read", 11, &r, canon, sizeof canon, canon, 64),
              JINN_EINVAL);
    free(text);
}

/* Every kind allows what it names and nothing else. */
TEST(auth_rules_allow_table)
{
    static const struct {
        const char *rules;
        int kind;
        const char *name;
        unsigned actions;
        bool want;
    } t[] = {
        {"kv:sessions/*:read,write", JINN_AUTH_KV, "sessions/a", JINN_AUTH_READ, true},
        {"kv:sessions/*:read,write", JINN_AUTH_KV, "sessions/", JINN_AUTH_WRITE, true},
        {"kv:sessions/*:read,write", JINN_AUTH_KV, "sessionsx/a", JINN_AUTH_READ, false},
        {"kv:sessions/*:read", JINN_AUTH_KV, "sessions/a", JINN_AUTH_WRITE, false},
        {"kv:sessions/a:read", JINN_AUTH_KV, "sessions/ab", JINN_AUTH_READ, false},
        {"kv:sessions/a:read", JINN_AUTH_KV, "sessions/a", JINN_AUTH_READ, true},
        {"kv:*:read", JINN_AUTH_KV, "x/y", JINN_AUTH_READ, true},
        {"kv:*:read", JINN_AUTH_SQL, "x", JINN_AUTH_READ, false},
        {"lock:orders*", JINN_AUTH_LOCK, "orders-1", JINN_AUTH_HOLD, true},
        {"lock:orders*", JINN_AUTH_LOCK, "order", JINN_AUTH_HOLD, false},
        {"lock:orders*", JINN_AUTH_KV, "orders/x", JINN_AUTH_READ, false},
        {"queue:emails:publish", JINN_AUTH_QUEUE, "emails", JINN_AUTH_PUBLISH, true},
        {"queue:emails:publish", JINN_AUTH_QUEUE, "emails", JINN_AUTH_CONSUME, false},
        {"queue:emails:publish", JINN_AUTH_QUEUE, "emails2", JINN_AUTH_PUBLISH, false},
        {"queue:emails:publish", JINN_AUTH_QUEUE, "emails",
         JINN_AUTH_CONSUME | JINN_AUTH_PUBLISH, true},
        {"queue:q:admin", JINN_AUTH_QUEUE, "q", JINN_AUTH_ADMIN, true},
        {"queue:q:admin", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN, false},
        {"sql:shop:read", JINN_AUTH_SQL, "shop", JINN_AUTH_READ, true},
        {"sql:shop:read", JINN_AUTH_SQL, "shop", JINN_AUTH_WRITE, false},
        {"fn:*:invoke", JINN_AUTH_FN, "billing", JINN_AUTH_INVOKE, true},
        {"fn:*:invoke", JINN_AUTH_FN, "billing", JINN_AUTH_DEPLOY, false},
        {"fn:billing:deploy", JINN_AUTH_FN, "billing", JINN_AUTH_DEPLOY, true},
        {"fn:billing:deploy", JINN_AUTH_FN, "billing2", JINN_AUTH_DEPLOY, false},
        {"cluster:admin", JINN_AUTH_KV, "any/thing", JINN_AUTH_WRITE, true},
        {"cluster:admin", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN, true},
        {"kv:a/*:read", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN, false},
        {"kv:a/*:read", JINN_AUTH_ANY, "", 0, true},
        /* cluster:metrics: GET /metrics (CLUSTER, admin or metrics), nothing else */
        {"cluster:metrics", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN | JINN_AUTH_METRICS, true},
        {"cluster:metrics", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN, false},
        {"cluster:metrics", JINN_AUTH_KV, "a/b", JINN_AUTH_READ, false},
        {"cluster:metrics", JINN_AUTH_FN, "f", JINN_AUTH_INVOKE, false},
        {"cluster:metrics", JINN_AUTH_ANY, "", 0, true},
        {"cluster:metrics kv:a/*:read", JINN_AUTH_KV, "a/b", JINN_AUTH_READ, true},
        {"cluster:admin", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN | JINN_AUTH_METRICS, true},
        /* cluster:replica: GET /v1/stream (CLUSTER, admin or replica), nothing else */
        {"cluster:replica", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN | JINN_AUTH_REPLICA, true},
        {"cluster:replica", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN | JINN_AUTH_METRICS, false},
        {"cluster:metrics", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN | JINN_AUTH_REPLICA, false},
        {"cluster:replica", JINN_AUTH_KV, "a/b", JINN_AUTH_READ, false},
        {"cluster:replica", JINN_AUTH_ANY, "", 0, true},
        {"cluster:admin", JINN_AUTH_CLUSTER, "", JINN_AUTH_ADMIN | JINN_AUTH_REPLICA, true},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct jinn_auth_rules r;
        char canon[JINN_AUTH_RULES_MAX + 1];
        bool got;
        CHECK_INT(parse(t[i].rules, &r, canon, sizeof canon), 0);
        got = jinn_auth_rules_allow(&r, t[i].kind, t[i].name, strlen(t[i].name), t[i].actions);
        jinn_auth_rules_free(&r);
        if (got != t[i].want) {
            fprintf(stderr, "  row %zu: %s on '%s'\n", i, t[i].rules, t[i].name);
        }
        CHECK(got == t[i].want);
    }
}

static struct jinn_cmd put_cmd(const char *name, const char *rules, const uint8_t *salt,
                               const uint8_t *hash, uint64_t flags)
{
    struct jinn_cmd c;
    static const uint8_t key[JINN_AUTH_KEY_LEN] = {7};
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_TOKEN_PUT;
    c.token.name = (struct jinn_slice){(const uint8_t *)name, strlen(name)};
    c.token.salt = (struct jinn_slice){salt, JINN_AUTH_SALT_LEN};
    c.token.hash = (struct jinn_slice){hash, JINN_AUTH_HASH_LEN};
    c.token.rules = (struct jinn_slice){(const uint8_t *)rules, strlen(rules)};
    c.token.key = (struct jinn_slice){key, JINN_AUTH_KEY_LEN};
    c.token.flags = flags;
    return c;
}

TEST(auth_table_apply_check_snapshot)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w, w2;
    uint8_t salt[JINN_AUTH_SALT_LEN] = {1, 2, 3}, hash[JINN_AUTH_HASH_LEN];
    const char *secret = "jinn.t1.s3cret";
    struct jinn_cmd c;
    const struct jinn_token *t;

    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    jinn_auth_hash(salt, secret, strlen(secret), hash);
    /* bootstrap into the empty table, then never again */
    CHECK_INT(
        unit_apply(&a, 1, 100,
                   put_cmd("bootstrap", "cluster:admin", salt, hash, JINN_CMD_TOKEN_BOOTSTRAP))
            ->code,
        0);
    CHECK(a.auth.has_key && a.auth.key[0] == 7);
    CHECK_INT(
        unit_apply(&a, 2, 110,
                   put_cmd("other", "cluster:admin", salt, hash, JINN_CMD_TOKEN_BOOTSTRAP))
            ->code,
        JINN_ECONFLICT);
    CHECK_INT(unit_apply(&a, 3, 120, put_cmd("t1", "kv:a/*:read", salt, hash, 0))->code, 0);
    CHECK_INT(unit_apply(&a, 4, 130, put_cmd("t1", "kv:a/*:read", salt, hash, 0))->code,
              JINN_ECONFLICT);
    /* a non-canonical rule text is refused by apply, identically everywhere */
    CHECK_INT(unit_apply(&a, 5, 140, put_cmd("t2", "kv:a/*:write,read", salt, hash, 0))->code,
              JINN_EINVAL);
    c = put_cmd("t3", "kv:b:read", salt, hash, 0);
    c.token.expires_ms = 1000;
    CHECK_INT(unit_apply(&a, 6, 150, c)->code, 0);
    CHECK_INT(a.auth.n, 3);
    CHECK_STR(a.auth.tokens[0].name, "bootstrap"); /* sorted */
    CHECK_STR(a.auth.tokens[1].name, "t1");

    t = jinn_auth_check(&a.auth, "t1", 2, secret, strlen(secret), 500);
    CHECK(t != NULL && t->created_ms == 120);
    CHECK(jinn_auth_check(&a.auth, "t1", 2, "jinn.t1.s3cres", 14, 500) == NULL);
    CHECK(jinn_auth_check(&a.auth, "t9", 2, secret, strlen(secret), 500) == NULL);
    CHECK(jinn_auth_check(&a.auth, "t3", 2, secret, strlen(secret), 999) != NULL);
    CHECK(jinn_auth_check(&a.auth, "t3", 2, secret, strlen(secret), 1000) == NULL);

    /* snapshot round trip */
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(b.auth.n, 3);
    CHECK(b.auth.has_key && memcmp(b.auth.key, a.auth.key, JINN_AUTH_KEY_LEN) == 0);
    CHECK(jinn_auth_check(&b.auth, "t1", 2, secret, strlen(secret), 500) != NULL);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w.len == w2.len && memcmp(w.data, w2.data, w.len) == 0);
    jinn_wbuf_free(&w2);
    /* every truncation is refused, the state kept */
    for (size_t n = 0; n < w.len; n += 7) {
        CHECK(jinn_fsm_decode(&b, w.data, n) != 0);
    }
    CHECK_INT(b.auth.n, 3);
    jinn_wbuf_free(&w);

    /* revoke */
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_TOKEN_REVOKE;
    c.token.name = (struct jinn_slice){(const uint8_t *)"t1", 2};
    CHECK_INT(unit_apply(&a, 7, 160, c)->code, 0);
    CHECK_INT(unit_apply(&a, 8, 170, c)->code, JINN_ENOTFOUND);
    CHECK(jinn_auth_check(&a.auth, "t1", 2, secret, strlen(secret), 500) == NULL);
    CHECK_INT(a.auth.n, 2);
    /* revoking everything keeps the key: auth never silently turns off */
    c.token.name = (struct jinn_slice){(const uint8_t *)"bootstrap", 9};
    CHECK_INT(unit_apply(&a, 9, 180, c)->code, 0);
    c.token.name = (struct jinn_slice){(const uint8_t *)"t3", 2};
    CHECK_INT(unit_apply(&a, 10, 190, c)->code, 0);
    CHECK(a.auth.n == 0 && a.auth.has_key);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(auth_cmd_round_trip_and_refusals)
{
    uint8_t salt[JINN_AUTH_SALT_LEN] = {9}, hash[JINN_AUTH_HASH_LEN] = {8};
    struct jinn_cmd c = put_cmd("n-1", "lock:x*", salt, hash, 0), d;
    struct jinn_wbuf w;
    c.time_ms = 42;
    c.token.expires_ms = 77;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.type, JINN_CMD_TOKEN_PUT);
    CHECK(d.token.name.len == 3 && memcmp(d.token.name.p, "n-1", 3) == 0);
    CHECK(d.token.rules.len == 7 && d.token.expires_ms == 77 && d.token.key.len == 32);
    CHECK_STR(jinn_cmd_type_name(JINN_CMD_TOKEN_REVOKE), "token_revoke");
    jinn_wbuf_free(&w);
    /* encode refuses what decode would: a bad name, a short salt, flags */
    c.token.name = (struct jinn_slice){(const uint8_t *)"Bad", 3};
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = put_cmd("ok", "lock:x*", salt, hash, 0);
    c.token.salt.len = 15;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = put_cmd("ok", "lock:x*", salt, hash, 4);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    /* a decoder bound: a salt slice of 17 bytes is corrupt, not over-read */
    c = put_cmd("ok", "lock:x*", salt, hash, 0);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    w.data[12 + 4 + 2] = 17; /* the salt's length prefix (u32 after the name) */
    CHECK(jinn_cmd_decode(w.data, w.len, &d) == JINN_ECORRUPT);
    jinn_wbuf_free(&w);
}

/* Replica checks cover the token table, and only once it was used (a
 * cluster without tokens digests as a build from before them). */
TEST(auth_digest_section_only_once_used)
{
    struct jinn_fsm a, b;
    struct jinn_digest *da = jinn_malloc(sizeof *da), *db = jinn_malloc(sizeof *db);
    uint8_t salt[JINN_AUTH_SALT_LEN] = {1}, hash[JINN_AUTH_HASH_LEN] = {2}, other[32] = {3};
    CHECK(da != NULL && db != NULL);
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    CHECK_INT(jinn_digest_memory(&a, 1, da), 0);
    CHECK(jinn_digest_find(da, "auth") == NULL);
    CHECK_INT(unit_apply(&a, 1, 100, put_cmd("t", "kv:a/*:read", salt, hash, 0))->code, 0);
    CHECK_INT(unit_apply(&b, 1, 100, put_cmd("t", "kv:a/*:read", salt, other, 0))->code, 0);
    CHECK_INT(jinn_digest_memory(&a, 1, da), 0);
    CHECK_INT(jinn_digest_memory(&b, 1, db), 0);
    CHECK(jinn_digest_find(da, "auth") != NULL);
    CHECK(jinn_digest_find(da, "auth")->hash != jinn_digest_find(db, "auth")->hash);
    jinn_digest_finish(da);
    jinn_digest_finish(db);
    CHECK(da->total != db->total);
    jinn_free(da);
    jinn_free(db);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

/* R2 M3, M6, m3: bootstrap never recreated once the key exists; scopes are
 * bounded in bytes, dropped with their deployer, and sized by content. */
TEST(auth_bootstrap_once_and_scope_bounds)
{
    struct jinn_auth a;
    uint8_t salt[JINN_AUTH_SALT_LEN] = {1}, hash[JINN_AUTH_HASH_LEN] = {2};
    struct jinn_cmd c;
    char fn[16];
    unsigned n = 0;
    int rv = 0;

    jinn_auth_init(&a);
    c = put_cmd("bootstrap", "cluster:admin", salt, hash, JINN_CMD_TOKEN_BOOTSTRAP);
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_TOKEN_REVOKE;
    c.token.name = (struct jinn_slice){(const uint8_t *)"bootstrap", 9};
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    CHECK(a.n == 0 && a.has_key);
    /* every token revoked: the configured bootstrap never comes back */
    c = put_cmd("bootstrap", "cluster:admin", salt, hash, JINN_CMD_TOKEN_BOOTSTRAP);
    CHECK_INT(jinn_auth_apply(&a, &c), JINN_ECONFLICT);
    CHECK_INT(a.n, 0);

    /* a one-rule set holds one rule, not 64 */
    c = put_cmd("dev", "kv:a/*:read", salt, hash, 0);
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    CHECK_INT(a.tokens[0].rules.n, 1);
    CHECK_INT((int)strlen(a.tokens[0].rules_text), 11);

    /* scopes: the deployer's revocation drops them */
    c = put_cmd("f1", "kv:a/*:read", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    c.token.deployer = (struct jinn_slice){(const uint8_t *)"dev", 3};
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    c.token.name = (struct jinn_slice){(const uint8_t *)"f2", 2};
    c.token.deployer = (struct jinn_slice){(const uint8_t *)"", 0};
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    CHECK_INT(a.n_scopes, 2);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_TOKEN_REVOKE;
    c.token.name = (struct jinn_slice){(const uint8_t *)"dev", 3};
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    CHECK_INT(a.n_scopes, 1);
    CHECK(jinn_auth_fn_scope(&a, "f1", 2) == NULL && jinn_auth_fn_scope(&a, "f2", 2) != NULL);
    jinn_auth_scope_drop(&a, "f2", 2);
    CHECK(a.n_scopes == 0 && a.scope_bytes == 0);

    /* the bytes bound stops scopes before the count bound, deterministically */
    while (n < JINN_AUTH_SCOPES_MAX) {
        snprintf(fn, sizeof fn, "f%06u", n);
        c = put_cmd(fn, "kv:a/*:read", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
        rv = jinn_auth_apply(&a, &c);
        if (rv != 0) {
            break;
        }
        n++;
    }
    CHECK_INT(rv, JINN_EFULL);
    CHECK(n > 1000 && n < JINN_AUTH_SCOPES_MAX);
    CHECK(a.scope_bytes <= JINN_AUTH_SCOPE_BYTES_MAX);
    /* replacing one with the same size still fits; freeing one makes room */
    snprintf(fn, sizeof fn, "f%06u", 0u);
    c = put_cmd(fn, "kv:a/*:read", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    jinn_auth_scope_drop(&a, fn, strlen(fn));
    snprintf(fn, sizeof fn, "f%06u", n);
    c = put_cmd(fn, "kv:a/*:read", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    CHECK_INT(jinn_auth_apply(&a, &c), 0);
    jinn_auth_clear(&a);
}

/* R2 M5: a function scope applies only right after its deploy applied. */
TEST(auth_fnscope_only_after_its_deploy)
{
    struct jinn_fsm f;
    uint8_t salt[JINN_AUTH_SALT_LEN] = {1}, hash[JINN_AUTH_HASH_LEN] = {2};
    struct jinn_cmd c;

    jinn_fsm_init(&f);
    c = put_cmd("dev", "fn:x:deploy", salt, hash, 0);
    CHECK_INT(unit_apply(&f, 1, 100, c)->code, 0);
    /* no function x: refused */
    c = put_cmd("x", "fn:x:deploy", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    c.token.deployer = (struct jinn_slice){(const uint8_t *)"dev", 3};
    CHECK_INT(unit_apply(&f, 2, 110, c)->code, JINN_ECONFLICT);
    CHECK(jinn_auth_fn_scope(&f.auth, "x", 1) == NULL);
    jinn_fsm_close(&f);
}

/* F1: cluster:replica came after the release fbe5ee0, whose apply refuses
 * it: a TOKEN_PUT (29) carrying it would store nothing on old replicas and
 * a token on new ones. The leader writes TOKEN_PUT2 (32) for it (an old
 * build cannot decode 32 and stops), and 29 refuses it on new builds too. */
TEST(auth_token_put2_for_cluster_replica)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    uint8_t salt[JINN_AUTH_SALT_LEN] = {1}, hash[JINN_AUTH_HASH_LEN] = {2};
    struct jinn_cmd c, d;

    CHECK(jinn_auth_rules_need_put2("cluster:replica", 15));
    CHECK(jinn_auth_rules_need_put2("cluster:admin cluster:replica", 29));
    CHECK(jinn_auth_rules_need_put2("cluster:replica kv:a:read", 25));
    CHECK(!jinn_auth_rules_need_put2("cluster:admin cluster:metrics", 29));
    CHECK(!jinn_auth_rules_need_put2("cluster:replicas", 16));
    CHECK(!jinn_auth_rules_need_put2("kv:cluster:replica", 18));
    CHECK(!jinn_auth_rules_need_put2("cluster:replica", 14)); /* a prefix of it */

    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    /* 29: refused as invalid rules, nothing stored, on every replica */
    CHECK_INT(unit_apply(&a, 1, 100, put_cmd("edge", "cluster:replica", salt, hash, 0))->code,
              JINN_EINVAL);
    CHECK_INT(
        unit_apply(&a, 2, 110, put_cmd("edge", "kv:a/*:read cluster:replica", salt, hash, 0))
            ->code,
        JINN_EINVAL);
    CHECK(a.auth.n == 0 && !a.auth.has_key);
    c = put_cmd("f1", "cluster:replica", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    CHECK_INT(jinn_auth_apply(&a.auth, &c), JINN_EINVAL);
    CHECK_INT(a.auth.n_scopes, 0);
    /* 32: the same body is taken */
    c = put_cmd("edge", "kv:a/*:read cluster:replica", salt, hash, 0);
    c.type = JINN_CMD_TOKEN_PUT2;
    CHECK_INT(unit_apply(&a, 3, 120, c)->code, 0);
    CHECK(a.auth.n == 1 && a.auth.has_key);
    CHECK_STR(a.auth.tokens[0].rules_text, "kv:a/*:read cluster:replica");
    CHECK_INT(a.auth.tokens[0].created_ms, 120);
    /* and any rules the old release knows (the leader never writes that) */
    c = put_cmd("plain", "kv:a/*:read", salt, hash, 0);
    c.type = JINN_CMD_TOKEN_PUT2;
    CHECK_INT(unit_apply(&a, 4, 130, c)->code, 0);
    c = put_cmd("f1", "cluster:replica", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    c.type = JINN_CMD_TOKEN_PUT2;
    CHECK_INT(jinn_auth_apply(&a.auth, &c), 0);
    CHECK(jinn_auth_fn_scope(&a.auth, "f1", 2) != NULL);
    /* 32 keeps 29's other refusals: a name taken, non-canonical rules */
    c = put_cmd("edge", "cluster:replica", salt, hash, 0);
    c.type = JINN_CMD_TOKEN_PUT2;
    CHECK_INT(unit_apply(&a, 5, 140, c)->code, JINN_ECONFLICT);
    c = put_cmd("e2", "kv:a/*:write,read cluster:replica", salt, hash, 0);
    c.type = JINN_CMD_TOKEN_PUT2;
    CHECK_INT(unit_apply(&a, 6, 150, c)->code, JINN_EINVAL);
    CHECK_INT(a.auth.n, 2);
    /* a snapshot holds the token whichever command wrote it */
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(b.auth.n, 2);
    CHECK_STR(b.auth.tokens[0].rules_text, "kv:a/*:read cluster:replica");
    CHECK(jinn_auth_fn_scope(&b.auth, "f1", 2) != NULL);
    jinn_wbuf_free(&w);

    /* the format: 32 round-trips with 29's body and its own type */
    c = put_cmd("edge", "cluster:replica", salt, hash, JINN_CMD_TOKEN_FNSCOPE);
    c.type = JINN_CMD_TOKEN_PUT2;
    c.time_ms = 42;
    c.token.expires_ms = 77;
    c.token.deployer = (struct jinn_slice){(const uint8_t *)"dev", 3};
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(w.data[2], JINN_CMD_TOKEN_PUT2);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.type, JINN_CMD_TOKEN_PUT2);
    CHECK(d.time_ms == 42 && d.token.expires_ms == 77);
    CHECK(d.token.flags == JINN_CMD_TOKEN_FNSCOPE && d.token.deployer.len == 3 &&
          memcmp(d.token.deployer.p, "dev", 3) == 0);
    CHECK(d.token.rules.len == 15 && memcmp(d.token.rules.p, "cluster:replica", 15) == 0);
    CHECK(d.token.salt.len == JINN_AUTH_SALT_LEN && d.token.hash.len == JINN_AUTH_HASH_LEN &&
          d.token.key.len == JINN_AUTH_KEY_LEN);
    /* the same bytes as a 29 but for the type byte */
    {
        struct jinn_wbuf w29;
        c.type = JINN_CMD_TOKEN_PUT;
        jinn_wbuf_init(&w29);
        CHECK_INT(jinn_cmd_encode(&c, &w29), 0);
        CHECK(w29.len == w.len && w29.data[2] == JINN_CMD_TOKEN_PUT);
        w29.data[2] = JINN_CMD_TOKEN_PUT2;
        CHECK(memcmp(w29.data, w.data, w.len) == 0);
        jinn_wbuf_free(&w29);
    }
    /* decode refuses a malformed 32 like a malformed 29 */
    CHECK_INT(jinn_cmd_decode(w.data, w.len - 8, &d), JINN_ECORRUPT);
    CHECK_STR(jinn_cmd_type_name(JINN_CMD_TOKEN_PUT2), "token_put2");
    CHECK(jinn_cmd_is_token(JINN_CMD_TOKEN_PUT2) && jinn_cmd_is_token_put(JINN_CMD_TOKEN_PUT2));
    /* a build before it stops at 32 (the type after its last, 31): decode
     * says "a type I do not know", which the FSM turns into a stop */
    w.data[2] = JINN_CMD_TOKEN_PUT2 + 1;
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_EVERSION);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}
