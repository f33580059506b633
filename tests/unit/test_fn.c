/* test_fn.c - the function registry: commands, apply, settings, snapshot. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/digest.h"
#include "fsm/fn.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "sha256.h"
#include "unit.h"
#include "wasm/abi.h"
#include "wasm/module.h"
#include "wat.h"

/* (module (import "gojinn" "host_log" (func (param i32 i32 i32)))
 *         (memory (export "memory") 1) (func (export "_start"))) */
static const uint8_t hello[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x03, 0x7f,
    0x7f, 0x7f, 0x00, 0x60, 0x00, 0x00, 0x02, 0x13, 0x01, 0x06, 0x67, 0x6f, 0x6a, 0x69,
    0x6e, 0x6e, 0x08, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6c, 0x6f, 0x67, 0x00, 0x00, 0x03,
    0x02, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65,
    0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00,
    0x01, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

/* The same, importing gojinn.host_nope. */
static const uint8_t nope[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x60, 0x01, 0x7f,
    0x00, 0x60, 0x00, 0x00, 0x02, 0x14, 0x01, 0x06, 0x67, 0x6f, 0x6a, 0x69, 0x6e, 0x6e,
    0x09, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6e, 0x6f, 0x70, 0x65, 0x00, 0x00, 0x03, 0x02,
    0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02, 0x06, 0x6d, 0x65, 0x6d,
    0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74, 0x61, 0x72, 0x74, 0x00, 0x01,
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

/* (module (memory (export "memory") 100) (func (export "_start"))) */
static const uint8_t bigmem[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00,
    0x00, 0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x64, 0x07, 0x13, 0x02,
    0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74,
    0x61, 0x72, 0x74, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

/* hello plus a custom section of pad bytes: another valid module (another
 * sha256) of any size. Caller frees. */
static uint8_t *padded(size_t pad, uint8_t fill, size_t *len)
{
    size_t payload = 4 + pad, n = payload, at = sizeof hello;
    uint8_t *m = jinn_malloc(sizeof hello + 1 + 5 + payload);
    memcpy(m, hello, sizeof hello);
    m[at++] = 0; /* custom section */
    do {
        uint8_t b = n & 0x7f;
        n >>= 7;
        m[at++] = (uint8_t)(b | (n ? 0x80 : 0));
    } while (n);
    m[at++] = 3;
    memcpy(m + at, "pad", 3);
    at += 3;
    memset(m + at, fill, pad);
    *len = at + pad;
    return m;
}

/* Canonical settings JSON for defaults with route (and one arg when arg). */
static char *settings(const char *route, const char *arg)
{
    struct jinn_fn_settings s;
    struct jinn_wbuf w;
    char *args[1];
    char *out;
    jinn_fn_settings_defaults(&s);
    snprintf(s.route, sizeof s.route, "%s", route);
    if (arg != NULL) {
        args[0] = (char *)arg;
        s.args = args;
        s.n_args = 1;
    }
    jinn_wbuf_init(&w);
    jinn_fn_settings_canonical(&s, &w);
    out = jinn_strndup((const char *)w.data, w.len);
    jinn_wbuf_free(&w);
    return out;
}

static struct jinn_cmd deploy_cmd(const char *name, const void *module, size_t len,
                                  const char *json)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_DEPLOY;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    c.fn.module.p = module;
    c.fn.module.len = len;
    c.fn.settings.p = (const uint8_t *)json;
    c.fn.settings.len = strlen(json);
    return c;
}

static struct jinn_cmd name_cmd(int type, const char *name, uint64_t arg)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = (uint8_t)type;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    if (type == JINN_CMD_FN_DELETE) {
        c.fn.flags = arg;
    } else {
        c.fn.version = arg;
    }
    return c;
}

static int deploy(struct jinn_fsm *fsm, uint64_t index, const char *name, const void *module,
                  size_t len, const char *json, uint64_t *value)
{
    const struct jinn_result *r = unit_apply(fsm, index, 1000 + index,
                                             deploy_cmd(name, module, len, json));
    if (r == NULL) {
        return -1;
    }
    if (value != NULL) {
        *value = r->value;
    }
    return r->code;
}

TEST(fn_cmd_round_trip_and_strict_decode)
{
    static const char *bad_names[] = {"", "A", "_x", "-x", "x.y", "x/y", "\xc3\xa9",
                                      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    struct jinn_cmd c, d;
    struct jinn_wbuf w;
    char *json = settings("/x", NULL);

    c = deploy_cmd("my-fn_1", hello, sizeof hello, json);
    c.time_ms = 77;
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.type, JINN_CMD_FN_DEPLOY);
    CHECK(d.fn.name.len == 7 && memcmp(d.fn.name.p, "my-fn_1", 7) == 0);
    CHECK(d.fn.module.len == sizeof hello && memcmp(d.fn.module.p, hello, sizeof hello) == 0);
    CHECK(d.fn.settings.len == strlen(json));
    /* Every truncation is refused. */
    for (size_t n = 0; n < w.len; n += 8) {
        CHECK(jinn_cmd_decode(w.data, n, &d) != 0);
    }
    /* A format-1 entry cannot hold a function command. */
    w.data[1] = 1;
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    jinn_wbuf_free(&w);

    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        struct jinn_cmd b = name_cmd(JINN_CMD_FN_DELETE, bad_names[i], 0);
        jinn_wbuf_init(&w);
        CHECK_INT(jinn_cmd_encode(&b, &w), JINN_EINVAL);
        jinn_wbuf_free(&w);
        /* Written by hand: the decoder refuses it too. */
        jinn_wbuf_init(&w);
        jinn_wbuf_put_u8(&w, JINN_CMD_MAGIC);
        jinn_wbuf_put_u8(&w, JINN_CMD_VERSION);
        jinn_wbuf_put_u8(&w, JINN_CMD_FN_DELETE);
        jinn_wbuf_put_u8(&w, 0);
        jinn_wbuf_put_u64(&w, 1);
        jinn_wbuf_put_bytes(&w, bad_names[i], strlen(bad_names[i]));
        jinn_wbuf_put_u64(&w, 0);
        while (w.len % 8 != 0) {
            jinn_wbuf_put_u8(&w, 0);
        }
        CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
        jinn_wbuf_free(&w);
    }
    /* Unknown delete flags, empty module or settings. */
    c = name_cmd(JINN_CMD_FN_DELETE, "f", 2);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = deploy_cmd("f", hello, 0, json);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
    c = name_cmd(JINN_CMD_FN_ROLLBACK, "f", 3);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.fn.version, 3);
    CHECK_STR(jinn_cmd_type_name(d.type), "fn_rollback");
    jinn_wbuf_free(&w);
    jinn_free(json);
}

TEST(fn_settings_are_canonical_and_bounded)
{
    struct jinn_fn_settings s, p;
    struct jinn_wbuf w;
    char err[256];
    char *env[] = {"A=1", "QUOTE=\"x\"\\y\n\t\x01"};
    char *pre[] = {"pub/"};

    jinn_fn_settings_defaults(&s);
    snprintf(s.route, sizeof s.route, "/api/v1x");
    s.env = env;
    s.n_env = 2;
    s.kv_read = pre;
    s.n_kv_read = 1;
    snprintf(s.db, sizeof s.db, "app");
    jinn_wbuf_init(&w);
    jinn_fn_settings_canonical(&s, &w);
    CHECK_INT(jinn_fn_settings_parse(w.data, w.len, &p, err, sizeof err), 0);
    CHECK_STR(p.route, "/api/v1x");
    CHECK_INT(p.n_env, 2);
    CHECK_STR(p.env[1], env[1]);
    CHECK_STR(p.kv_read[0], "pub/");
    CHECK_INT(p.timeout_ms, JINN_FN_TIMEOUT_DEFAULT_MS);
    CHECK_STR(p.ns, "default");
    jinn_fn_settings_free(&p);
    jinn_wbuf_free(&w);

    static const char *refused[] = {
        "", "{}", "[]", "nope",
        /* not canonical: a space, another key order */
        "{\"route\": \"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"timeout_ms\":5000,\"route\":\"\",\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        /* out of range */
        "{\"route\":\"\",\"timeout_ms\":0,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108865,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":65,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"route\":\"/v1\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[\"=x\"],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[\"a\\u0000b\"],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\"}",
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"\"}",
        "{\"route\":\"\",\"timeout_ms\":5000,\"memory_limit\":67108864,\"pool_size\":2,"
        "\"env\":[],\"args\":[],\"kv_read\":[],\"kv_write\":[],\"db\":\"\",\"ns\":\"default\","
        "\"ns\":\"default\"}",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int rv = jinn_fn_settings_parse(refused[i], strlen(refused[i]), &p, err, sizeof err);
        if (rv != JINN_EINVAL) {
            fprintf(stderr, "  accepted #%zu: %s\n", i, refused[i]);
        }
        CHECK_INT(rv, JINN_EINVAL);
        CHECK(strncmp(err, "settings:", 9) == 0);
    }
    /* 65 env entries */
    {
        char *many[65];
        for (int i = 0; i < 65; i++) {
            many[i] = "K=V";
        }
        jinn_fn_settings_defaults(&s);
        s.env = many;
        s.n_env = 65;
        jinn_wbuf_init(&w);
        jinn_fn_settings_canonical(&s, &w);
        CHECK_INT(jinn_fn_settings_parse(w.data, w.len, &p, err, sizeof err), JINN_EINVAL);
        CHECK(strstr(err, "env") != NULL);
        jinn_wbuf_free(&w);
    }
}

TEST(fn_names_and_routes)
{
    CHECK(jinn_fn_name_valid("a", 1));
    CHECK(jinn_fn_name_valid("0-a_b", 5));
    CHECK(!jinn_fn_name_valid("Ab", 2));
    CHECK(!jinn_fn_name_valid("-a", 2));
    CHECK(!jinn_fn_name_valid("a.b", 3));
    CHECK(jinn_fn_route_valid("", 0));
    CHECK(jinn_fn_route_valid("/hello", 6));
    CHECK(jinn_fn_route_valid("/api/v1.x/~me", 13));
    CHECK(jinn_fn_route_valid("/v1x", 4));
    CHECK(jinn_fn_route_valid("/fnord", 6));
    static const char *bad[] = {"/", "x", "/a/", "//a", "/a//b", "/a/./b", "/a/..", "/v1",
                                "/v1/kv", "/fn", "/fn/x", "/healthz", "/metrics/x", "/a b",
                                "/a?b", "/a%20"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!jinn_fn_route_valid(bad[i], strlen(bad[i])));
    }
}

TEST(fn_apply_versions_routes_rollback_delete)
{
    struct jinn_fsm fsm;
    char *s_hello = settings("/hello", NULL), *s_hello2 = settings("/hello", "x");
    char *s_sub = settings("/hello/sub", NULL), *s_none = settings("", NULL);
    const struct jinn_fn *f;
    uint64_t v, gen;
    uint8_t sha[32];

    jinn_fsm_init(&fsm);
    gen = jinn_fns_generation(&fsm.fns);
    CHECK_INT(deploy(&fsm, 1, "greet", hello, sizeof hello, s_hello, &v), 0);
    CHECK_INT(v, 1);
    CHECK(jinn_fns_generation(&fsm.fns) != gen);
    f = jinn_fns_get(&fsm.fns, "greet");
    CHECK(f != NULL && f->active != NULL && f->active->version == 1);
    CHECK_INT(f->active->index, 1);
    CHECK_INT(f->active->deployed_ms, 1001);
    CHECK_STR(f->active->settings.route, "/hello");
    CHECK_INT(jinn_sha256(hello, sizeof hello, sha), 0);
    CHECK(memcmp(f->active->sha256, sha, 32) == 0);
    CHECK(f->active->module_len == sizeof hello);

    /* Identical: no new version. */
    CHECK_INT(deploy(&fsm, 2, "greet", hello, sizeof hello, s_hello, &v), 0);
    CHECK(v == (1 | JINN_FN_UNCHANGED));
    CHECK_INT(jinn_fns_get(&fsm.fns, "greet")->n_versions, 1);
    /* New settings, same module: version 2, the module is shared. */
    CHECK_INT(deploy(&fsm, 3, "greet", hello, sizeof hello, s_hello2, &v), 0);
    CHECK_INT(v, 2);
    CHECK_INT(jinn_fns_module_bytes(&fsm.fns), sizeof hello);
    /* Route conflicts; a longer route is another route. */
    CHECK_INT(deploy(&fsm, 4, "other", hello, sizeof hello, s_hello, NULL), JINN_ECONFLICT);
    CHECK(jinn_fns_get(&fsm.fns, "other") == NULL);
    CHECK_INT(deploy(&fsm, 5, "other", hello, sizeof hello, s_sub, NULL), 0);
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/hello/sub/x?q=1")->name, "other");
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/hello/subway")->name, "greet");
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/hello")->name, "greet");
    CHECK(jinn_fns_by_route(&fsm.fns, "/hellos") == NULL);
    CHECK(jinn_fns_by_route(&fsm.fns, "/") == NULL);

    /* Refused modules and names change nothing. */
    gen = jinn_fns_generation(&fsm.fns);
    CHECK_INT(deploy(&fsm, 6, "bad", nope, sizeof nope, s_none, NULL), JINN_EINVAL);
    CHECK_INT(deploy(&fsm, 7, "bad", "\0asm\x02\0\0\0", 8, s_none, NULL), JINN_EINVAL);
    CHECK_INT(deploy(&fsm, 8, "bad", hello, sizeof hello, "{}", NULL), JINN_EINVAL);
    {
        struct jinn_fn_settings s;
        struct jinn_wbuf w;
        jinn_fn_settings_defaults(&s);
        s.memory_limit = 1u << 20; /* bigmem starts at 100 pages */
        jinn_wbuf_init(&w);
        jinn_fn_settings_canonical(&s, &w);
        jinn_wbuf_put_u8(&w, 0);
        CHECK_INT(deploy(&fsm, 9, "bad", bigmem, sizeof bigmem, (char *)w.data, NULL),
                  JINN_EINVAL);
        jinn_wbuf_free(&w);
    }
    CHECK(jinn_fns_get(&fsm.fns, "bad") == NULL);
    CHECK(jinn_fns_generation(&fsm.fns) == gen);

    /* Rollback: to the previous, to a given one, nothing before the first. */
    CHECK_INT(unit_apply(&fsm, 10, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "greet", 0))->code, 0);
    CHECK_INT(jinn_fns_get(&fsm.fns, "greet")->active->version, 1);
    CHECK_INT(unit_apply(&fsm, 11, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "greet", 0))->code,
              JINN_ENOTFOUND);
    CHECK_INT(unit_apply(&fsm, 12, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "greet", 2))->code, 0);
    CHECK_INT(unit_apply(&fsm, 13, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "greet", 7))->code,
              JINN_ENOTFOUND);
    CHECK_INT(unit_apply(&fsm, 14, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "nobody", 0))->code,
              JINN_ENOTFOUND);

    /* Delete keeps the versions and frees the route; rollback takes it back
     * unless someone else took it. */
    CHECK_INT(unit_apply(&fsm, 15, 2000, name_cmd(JINN_CMD_FN_DELETE, "greet", 0))->code, 0);
    f = jinn_fns_get(&fsm.fns, "greet");
    CHECK(f->active == NULL && f->n_versions == 2);
    CHECK(jinn_fns_by_route(&fsm.fns, "/hello") == NULL);
    CHECK_INT(unit_apply(&fsm, 16, 2000, name_cmd(JINN_CMD_FN_DELETE, "greet", 0))->code,
              JINN_ENOTFOUND);
    CHECK_INT(deploy(&fsm, 17, "thief", hello, sizeof hello, s_hello, NULL), 0);
    CHECK_INT(unit_apply(&fsm, 18, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "greet", 0))->code,
              JINN_ECONFLICT);
    CHECK_INT(unit_apply(&fsm, 19, 2000, name_cmd(JINN_CMD_FN_DELETE, "thief", JINN_FN_PURGE))
                  ->code,
              0);
    CHECK(jinn_fns_get(&fsm.fns, "thief") == NULL);
    CHECK_INT(unit_apply(&fsm, 20, 2000, name_cmd(JINN_CMD_FN_ROLLBACK, "greet", 0))->code, 0);
    CHECK_INT(jinn_fns_get(&fsm.fns, "greet")->active->version, 2); /* the newest */

    /* Five versions kept; numbers are never reused. */
    for (int i = 0; i < 6; i++) {
        char arg[8], *s;
        snprintf(arg, sizeof arg, "%d", i % 10);
        s = settings("/hello", arg);
        CHECK_INT(deploy(&fsm, 30 + (uint64_t)i, "greet", hello, sizeof hello, s, &v), 0);
        jinn_free(s);
    }
    f = jinn_fns_get(&fsm.fns, "greet");
    CHECK_INT(f->n_versions, JINN_FN_VERSIONS_KEPT);
    CHECK_INT(f->versions[0].version, 4);
    CHECK_INT(f->active->version, 8);
    CHECK(jinn_fn_version_find(f, 3) == NULL);

    /* Listing is in name order. */
    CHECK_STR(jinn_fns_next(&fsm.fns, NULL)->name, "greet");
    CHECK_STR(jinn_fns_next(&fsm.fns, "greet")->name, "other");
    CHECK(jinn_fns_next(&fsm.fns, "other") == NULL);
    CHECK_STR(jinn_fns_next(&fsm.fns, "a")->name, "greet");

    /* Purging everything frees every module byte. */
    CHECK_INT(unit_apply(&fsm, 40, 2000, name_cmd(JINN_CMD_FN_DELETE, "greet", JINN_FN_PURGE))
                  ->code,
              0);
    CHECK_INT(unit_apply(&fsm, 41, 2000, name_cmd(JINN_CMD_FN_DELETE, "other", JINN_FN_PURGE))
                  ->code,
              0);
    CHECK_INT(jinn_fns_module_bytes(&fsm.fns), 0);
    CHECK_INT(jinn_fns_count(&fsm.fns), 0);
    jinn_fsm_close(&fsm);
    jinn_free(s_hello);
    jinn_free(s_hello2);
    jinn_free(s_sub);
    jinn_free(s_none);
}

TEST(fn_module_bytes_are_limited)
{
    struct jinn_fsm fsm;
    char *s = settings("", NULL);
    size_t len, total = 0;
    int i;
    jinn_fsm_init(&fsm);
    for (i = 0;; i++) {
        char name[8];
        uint8_t *m = padded(13u << 20, (uint8_t)i, &len);
        int rv;
        snprintf(name, sizeof name, "f%d", i);
        rv = deploy(&fsm, 1 + (uint64_t)i, name, m, len, s, NULL);
        jinn_free(m);
        if (total + len > JINN_FN_MODULES_TOTAL_MAX) {
            CHECK_INT(rv, JINN_EFULL);
            break;
        }
        CHECK_INT(rv, 0);
        total += len;
    }
    CHECK_INT(i, 4);
    CHECK_INT(jinn_fns_module_bytes(&fsm.fns), total);
    /* The same bytes again cost nothing. */
    {
        uint8_t *m = padded(13u << 20, 0, &len);
        CHECK_INT(deploy(&fsm, 10, "again", m, len, s, NULL), 0);
        jinn_free(m);
    }
    CHECK_INT(jinn_fns_module_bytes(&fsm.fns), total);
    jinn_fsm_close(&fsm);
    jinn_free(s);
}

static void build(struct jinn_fsm *fsm)
{
    char *a = settings("/a", NULL), *b = settings("", "x");
    size_t len;
    uint8_t *m = padded(1000, 7, &len);
    jinn_fsm_init(fsm);
    deploy(fsm, 1, "alpha", hello, sizeof hello, a, NULL);
    deploy(fsm, 2, "alpha", m, len, a, NULL);
    deploy(fsm, 3, "beta", hello, sizeof hello, b, NULL);
    unit_apply(fsm, 4, 5000, name_cmd(JINN_CMD_FN_ROLLBACK, "alpha", 1));
    unit_apply(fsm, 5, 5000, name_cmd(JINN_CMD_FN_DELETE, "beta", 0));
    jinn_free(m);
    jinn_free(a);
    jinn_free(b);
}

TEST(fn_snapshot_round_trip_digest_and_v1)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w, w2, pre;
    struct jinn_digest *da = jinn_malloc(sizeof *da), *db = jinn_malloc(sizeof *db);
    const struct jinn_fn *f;
    size_t at;

    build(&a);
    jinn_fsm_init(&b);
    jinn_wbuf_init(&w);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w.len == w2.len && memcmp(w.data, w2.data, w.len) == 0);
    f = jinn_fns_get(&b.fns, "alpha");
    CHECK(f != NULL && f->n_versions == 2 && f->active->version == 1);
    CHECK_STR(jinn_fns_by_route(&b.fns, "/a/x")->name, "alpha");
    CHECK(memcmp(f->versions[1].module, jinn_fns_get(&a.fns, "alpha")->versions[1].module,
                 f->versions[1].module_len) == 0);
    CHECK(jinn_fns_get(&b.fns, "beta")->active == NULL);
    CHECK_INT(jinn_fns_module_bytes(&b.fns), jinn_fns_module_bytes(&a.fns));
    CHECK_INT(jinn_digest_memory(&a, 5, da), 0);
    CHECK_INT(jinn_digest_memory(&b, 5, db), 0);
    CHECK(da->sections[5].hash == db->sections[5].hash);
    CHECK_STR(da->sections[5].name, "functions");
    /* A different registry, a different functions digest. */
    unit_apply(&b, 6, 5000, name_cmd(JINN_CMD_FN_ROLLBACK, "beta", 0));
    CHECK_INT(jinn_digest_memory(&b, 6, db), 0);
    CHECK(da->sections[5].hash != db->sections[5].hash);
    CHECK(da->sections[2].hash == db->sections[2].hash);

    /* Every truncation and every flipped byte of the functions part is
     * refused, the state kept. */
    for (size_t n = 0; n < w.len; n += 7) {
        CHECK(jinn_fsm_decode(&b, w.data, n) != 0);
    }
    CHECK(jinn_fns_get(&b.fns, "beta")->active != NULL);

    /* Version 1: the same without the functions section, still read. */
    jinn_wbuf_init(&pre);
    jinn_nodes_encode(&a.nodes, &pre);
    jinn_kv_encode(&a.kv, &pre);
    jinn_locks_encode(&a.locks, &pre);
    jinn_queues_encode(&a.queues, &pre);
    at = 8 + 4 + 8 + pre.len;
    jinn_wbuf_free(&pre);
    jinn_wbuf_init(&pre);
    jinn_fns_encode(&a.fns, &pre);
    jinn_jobs_encode(&a.jobs, &pre); /* format 3's jobs section goes too */
    CHECK(memcmp(w.data + at, pre.data, pre.len) == 0);
    memmove(w.data + at, w.data + at + pre.len, w.len - at - pre.len);
    w.len -= pre.len;
    /* ...and the module bytes before the CRC. */
    {
        size_t mb = (size_t)jinn_fns_module_bytes(&a.fns);
        CHECK(w.len > mb + 4);
        memmove(w.data + w.len - 4 - mb, w.data + w.len - 4, 4);
        w.len -= mb;
    }
    jinn_wbuf_patch_u32(&w, 8, 1);
    jinn_wbuf_patch_u32(&w, w.len - 4, jinn_crc32(0, w.data, w.len - 4));
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(jinn_fns_count(&b.fns), 0);
    CHECK_INT(jinn_fns_module_bytes(&b.fns), 0);
    /* ...but not as version 2 (the section is missing). */
    jinn_wbuf_patch_u32(&w, 8, 2);
    jinn_wbuf_patch_u32(&w, w.len - 4, jinn_crc32(0, w.data, w.len - 4));
    CHECK(jinn_fsm_decode(&b, w.data, w.len) != 0);

    jinn_wbuf_free(&pre);
    jinn_wbuf_free(&w);
    jinn_wbuf_free(&w2);
    jinn_free(da);
    jinn_free(db);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(fn_decode_out_of_memory_is_clean)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    int ok = 0;
    build(&a);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    for (long n = 0; n < 200 && !ok; n++) {
        int rv;
        jinn_fsm_init(&b);
        jinn_alloc_fail_after(n);
        rv = jinn_fsm_decode(&b, w.data, w.len);
        jinn_alloc_fail_reset();
        if (rv != 0 && rv != JINN_ENOMEM) {
            fprintf(stderr, "  allocation %ld failing: %s\n", n, jinn_error_name(rv));
        }
        CHECK(rv == 0 || rv == JINN_ENOMEM);
        ok = rv == 0;
        jinn_fsm_close(&b);
    }
    CHECK(ok);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
}

/* A snapshot written off the loop sees the modules as they were when it
 * was pinned, even if apply drops them meanwhile (and frees nothing twice:
 * ASan watches). */
TEST(fn_pinned_modules_outlive_their_versions)
{
    struct jinn_fsm a;
    struct jinn_wbuf before, pinned;
    struct jinn_fns_pin *pin = NULL;
    build(&a);
    jinn_wbuf_init(&before);
    jinn_wbuf_init(&pinned);
    jinn_fns_encode_modules(&a.fns, &before);
    CHECK(before.len == jinn_fns_module_bytes(&a.fns) && before.len > 1000);
    CHECK_INT(jinn_fns_pin(&a.fns, &pin), 0);
    CHECK_INT(unit_apply(&a, 10, 6000, name_cmd(JINN_CMD_FN_DELETE, "alpha", JINN_FN_PURGE))->code,
              0);
    CHECK_INT(unit_apply(&a, 11, 6000, name_cmd(JINN_CMD_FN_DELETE, "beta", JINN_FN_PURGE))->code,
              0);
    CHECK_INT(jinn_fns_module_bytes(&a.fns), 0);
    jinn_fns_pin_encode(pin, &pinned);
    CHECK(pinned.len == before.len && memcmp(pinned.data, before.data, before.len) == 0);
    jinn_fns_pin_free(pin);
    jinn_fsm_close(&a);
    /* Pinned while the FSM closes: the bytes go with the last pin. */
    build(&a);
    CHECK_INT(jinn_fns_pin(&a.fns, &pin), 0);
    jinn_fsm_close(&a);
    jinn_fns_pin_free(pin);
    jinn_wbuf_free(&before);
    jinn_wbuf_free(&pinned);
}

/* Regression: the route index's key lived inside the versions array, which
 * a sixth deploy shifts: the active version's route changed under the tree
 * and the unlink found nothing (a fatal apply on every replica). */
TEST(fn_route_survives_versions_moving)
{
    struct jinn_fsm fsm;
    char *a = settings("/a", NULL), *b = settings("/b", NULL), *bb = settings("/bb", NULL);
    jinn_fsm_init(&fsm);
    /* Another routed function, so that a search by the wrong key misses. */
    CHECK_INT(deploy(&fsm, 100, "g", hello, sizeof hello, bb, NULL), 0);
    for (int i = 0; i < JINN_FN_VERSIONS_KEPT; i++) {
        char arg[12], *s;
        snprintf(arg, sizeof arg, "%d", i);
        s = settings(i % 2 ? "/a" : "/c", arg);
        CHECK_INT(deploy(&fsm, 1 + (uint64_t)i, "f", hello, sizeof hello, s, NULL), 0);
        jinn_free(s);
    }
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/c/x")->name, "f");
    CHECK_INT(deploy(&fsm, 10, "f", hello, sizeof hello, b, NULL), 0);
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/b")->name, "f");
    CHECK(jinn_fns_by_route(&fsm.fns, "/c") == NULL);
    /* Back to the oldest kept, then a deploy drops exactly that slot. */
    CHECK_INT(unit_apply(&fsm, 11, 2000,
                         name_cmd(JINN_CMD_FN_ROLLBACK, "f",
                                  jinn_fns_get(&fsm.fns, "f")->versions[0].version))
                  ->code,
              0);
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/a")->name, "f");
    CHECK_INT(deploy(&fsm, 12, "f", hello, sizeof hello, b, NULL), 0);
    CHECK(jinn_fns_by_route(&fsm.fns, "/a") == NULL);
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/b")->name, "f");
    CHECK_INT(jinn_fns_get(&fsm.fns, "f")->n_versions, JINN_FN_VERSIONS_KEPT);
    CHECK_STR(jinn_fns_by_route(&fsm.fns, "/bb")->name, "g");
    jinn_fsm_close(&fsm);
    jinn_free(a);
    jinn_free(b);
    jinn_free(bb);
}

/* ---- what apply accepts may only grow ---------------------------------------
 *
 * Apply refuses a module whose imports are not all in abi.h's allow-list
 * (jinn_wasm_inspect). A build whose list lost an entry would refuse, at
 * apply, an FN_DEPLOY entry older builds accepted: replicas of different
 * builds would then diverge on the same log (docs/design.md, "Upgrades").
 * The list as of this writing is pinned here; entries may be added to
 * abi.h (and then here), never removed or changed. */
static const struct {
    const char *module, *name, *params, *results;
} pinned_imports[] = {
    {"gojinn", "host_log", "iii", ""},
    {"gojinn", "host_log", "iii", "i"},
    {"gojinn", "host_kv_set", "iiii", ""},
    {"gojinn", "host_kv_set", "iiii", "i"},
    {"gojinn", "host_kv_get", "iiii", "i"},
    {"gojinn", "host_kv_get", "iiii", "I"},
    {"gojinn", "host_mutex_lock", "iii", "i"},
    {"gojinn", "host_mutex_unlock", "ii", "i"},
    {"gojinn", "host_db_query", "iiii", "i"},
    {"gojinn", "host_enqueue", "iiii", "i"},
    {"wasi_snapshot_preview1", "args_get", "ii", "i"},
    {"wasi_snapshot_preview1", "args_sizes_get", "ii", "i"},
    {"wasi_snapshot_preview1", "environ_get", "ii", "i"},
    {"wasi_snapshot_preview1", "environ_sizes_get", "ii", "i"},
    {"wasi_snapshot_preview1", "clock_res_get", "ii", "i"},
    {"wasi_snapshot_preview1", "clock_time_get", "iIi", "i"},
    {"wasi_snapshot_preview1", "fd_advise", "iIIi", "i"},
    {"wasi_snapshot_preview1", "fd_allocate", "iII", "i"},
    {"wasi_snapshot_preview1", "fd_close", "i", "i"},
    {"wasi_snapshot_preview1", "fd_datasync", "i", "i"},
    {"wasi_snapshot_preview1", "fd_fdstat_get", "ii", "i"},
    {"wasi_snapshot_preview1", "fd_fdstat_set_flags", "ii", "i"},
    {"wasi_snapshot_preview1", "fd_fdstat_set_rights", "iII", "i"},
    {"wasi_snapshot_preview1", "fd_filestat_get", "ii", "i"},
    {"wasi_snapshot_preview1", "fd_filestat_set_size", "iI", "i"},
    {"wasi_snapshot_preview1", "fd_filestat_set_times", "iIIi", "i"},
    {"wasi_snapshot_preview1", "fd_pread", "iiiIi", "i"},
    {"wasi_snapshot_preview1", "fd_prestat_get", "ii", "i"},
    {"wasi_snapshot_preview1", "fd_prestat_dir_name", "iii", "i"},
    {"wasi_snapshot_preview1", "fd_pwrite", "iiiIi", "i"},
    {"wasi_snapshot_preview1", "fd_read", "iiii", "i"},
    {"wasi_snapshot_preview1", "fd_readdir", "iiiIi", "i"},
    {"wasi_snapshot_preview1", "fd_renumber", "ii", "i"},
    {"wasi_snapshot_preview1", "fd_seek", "iIii", "i"},
    {"wasi_snapshot_preview1", "fd_sync", "i", "i"},
    {"wasi_snapshot_preview1", "fd_tell", "ii", "i"},
    {"wasi_snapshot_preview1", "fd_write", "iiii", "i"},
    {"wasi_snapshot_preview1", "path_create_directory", "iii", "i"},
    {"wasi_snapshot_preview1", "path_filestat_get", "iiiii", "i"},
    {"wasi_snapshot_preview1", "path_filestat_set_times", "iiiiIIi", "i"},
    {"wasi_snapshot_preview1", "path_link", "iiiiiii", "i"},
    {"wasi_snapshot_preview1", "path_open", "iiiiiIIii", "i"},
    {"wasi_snapshot_preview1", "path_readlink", "iiiiii", "i"},
    {"wasi_snapshot_preview1", "path_remove_directory", "iii", "i"},
    {"wasi_snapshot_preview1", "path_rename", "iiiiii", "i"},
    {"wasi_snapshot_preview1", "path_symlink", "iiiii", "i"},
    {"wasi_snapshot_preview1", "path_unlink_file", "iii", "i"},
    {"wasi_snapshot_preview1", "poll_oneoff", "iiii", "i"},
    {"wasi_snapshot_preview1", "proc_exit", "i", ""},
    {"wasi_snapshot_preview1", "proc_raise", "i", "i"},
    {"wasi_snapshot_preview1", "sched_yield", "", "i"},
    {"wasi_snapshot_preview1", "random_get", "ii", "i"},
    {"wasi_snapshot_preview1", "sock_accept", "iii", "i"},
    {"wasi_snapshot_preview1", "sock_recv", "iiiiii", "i"},
    {"wasi_snapshot_preview1", "sock_send", "iiiii", "i"},
    {"wasi_snapshot_preview1", "sock_shutdown", "ii", "i"},
};

static void wat_types(char *out, size_t cap, const char *letters)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = letters; *p && o + 5 < cap; p++) {
        o += (size_t)snprintf(out + o, cap - o, " %s", *p == 'I' ? "i64" : "i32");
    }
}

#define COUNT_IMPORT(mod, nm, sym, p, r, hr) +1
TEST(fn_abi_allow_list_only_grows)
{
    size_t n = sizeof pinned_imports / sizeof pinned_imports[0];
    struct jinn_wbuf text, module;
    struct jinn_fsm fsm;
    char *s = settings("", NULL);
    uint64_t value = 0;

    CHECK_INT(n, 56); /* grow this with abi.h; never shrink it */
    CHECK(0 JINN_WASM_IMPORTS(COUNT_IMPORT) >= (int)n);
    /* A module may import a name once: module k imports the k-th pinned
     * signature of every name (two modules cover abi.h today). Each goes
     * through apply, as a replica sees it. */
    jinn_fsm_init(&fsm);
    for (unsigned pass = 0, covered = 0; covered < n; pass++) {
        char line[512], params[128], results[32], name[16];
        const char *head = "(module\n";
        unsigned in_module = 0;
        CHECK(pass < 8);
        jinn_wbuf_init(&text);
        jinn_wbuf_put_raw(&text, head, strlen(head));
        for (size_t i = 0; i < n; i++) {
            unsigned occurrence = 0;
            for (size_t j = 0; j < i; j++) {
                occurrence += strcmp(pinned_imports[j].module, pinned_imports[i].module) == 0 &&
                              strcmp(pinned_imports[j].name, pinned_imports[i].name) == 0;
            }
            if (occurrence != pass) {
                continue;
            }
            wat_types(params, sizeof params, pinned_imports[i].params);
            wat_types(results, sizeof results, pinned_imports[i].results);
            snprintf(line, sizeof line, "  (import \"%s\" \"%s\" (func (param%s) (result%s)))\n",
                     pinned_imports[i].module, pinned_imports[i].name, params, results);
            jinn_wbuf_put_raw(&text, line, strlen(line));
            in_module++;
        }
        head = "  (memory (export \"memory\") 1)\n  (func (export \"_start\")))\n";
        jinn_wbuf_put_raw(&text, head, strlen(head) + 1);
        CHECK(!text.failed && in_module > 0);
        CHECK_INT(wat((const char *)text.data, &module), 0);
        {
            static struct jinn_wasm_info info;
            char err[256] = "";
            if (jinn_wasm_inspect(module.data, module.len, &info, err, sizeof err) != 0) {
                fprintf(stderr, "  pinned imports refused: %s\n", err);
            }
            CHECK_INT(info.n_imports, in_module);
        }
        snprintf(name, sizeof name, "imports-%u", pass);
        CHECK_INT(deploy(&fsm, 1 + pass, name, module.data, module.len, s, &value), 0);
        CHECK_INT(value, 1);
        covered += in_module;
        jinn_wbuf_free(&module);
        jinn_wbuf_free(&text);
    }
    jinn_fsm_close(&fsm);
    jinn_free(s);
}
#undef COUNT_IMPORT

/* The handler's state checks are apply's (jinn_fns_deploy_check): what one
 * refuses, the other does, so a refusal at apply is only ever a race. */
TEST(fn_deploy_check_is_applys)
{
    struct jinn_fsm fsm;
    char *a = settings("/a", NULL), *plain = settings("", NULL);
    uint8_t sha[32], other[32];
    size_t len;
    uint8_t *m;
    jinn_fsm_init(&fsm);
    CHECK_INT(deploy(&fsm, 1, "f", hello, sizeof hello, a, NULL), 0);
    CHECK_INT(jinn_sha256(hello, sizeof hello, sha), 0);
    /* Route conflicts: another function, not f itself. */
    CHECK_INT(jinn_fns_deploy_check(&fsm.fns, "g", 1, "/a", NULL, sizeof hello), JINN_ECONFLICT);
    CHECK_INT(deploy(&fsm, 2, "g", hello, sizeof hello, a, NULL), JINN_ECONFLICT);
    CHECK_INT(jinn_fns_deploy_check(&fsm.fns, "f", 1, "/a", sha, sizeof hello), 0);
    CHECK_INT(jinn_fns_deploy_check(&fsm.fns, "g", 1, "/b", sha, sizeof hello), 0);
    /* Unchanged: same bytes, same settings. */
    CHECK(jinn_fns_deploy_unchanged(&fsm.fns, "f", 1, sha, a, strlen(a)));
    CHECK(!jinn_fns_deploy_unchanged(&fsm.fns, "f", 1, sha, plain, strlen(plain)));
    CHECK(!jinn_fns_deploy_unchanged(&fsm.fns, "g", 1, sha, a, strlen(a)));
    /* Module bytes: a new module over the total is refused; a kept one is
     * free; an unknown sha (NULL) is not checked. */
    for (int i = 0; i < 4; i++) {
        char name[8];
        snprintf(name, sizeof name, "big%d", i);
        m = padded((16u << 20) - 4096, (uint8_t)(10 + i), &len);
        CHECK_INT(deploy(&fsm, 3 + (uint64_t)i, name, m, len, plain, NULL), 0);
        if (i == 0) {
            CHECK_INT(jinn_sha256(m, len, other), 0);
        }
        jinn_free(m);
    }
    other[0] ^= 1; /* a module not kept */
    CHECK_INT(jinn_fns_deploy_check(&fsm.fns, "h", 1, "", other, 20000), JINN_EFULL);
    CHECK_INT(jinn_fns_deploy_check(&fsm.fns, "h", 1, "", sha, 20000), 0);
    CHECK_INT(jinn_fns_deploy_check(&fsm.fns, "h", 1, "", NULL, 20000), 0);
    m = padded(20000, 9, &len);
    CHECK_INT(deploy(&fsm, 10, "h", m, len, plain, NULL), JINN_EFULL);
    jinn_free(m);
    /* Every deploy's bytes are counted, refused ones too (the node's
     * snapshot trigger reads it). */
    CHECK(fsm.fns.deploy_bytes >= 2 * sizeof hello + 4 * ((16u << 20) - 4096) + 20000);
    jinn_fsm_close(&fsm);
    jinn_free(a);
    jinn_free(plain);
}
