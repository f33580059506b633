/* test_fetch.c - what may reach an outgoing request: the announced-URL
 * allow-list (jinn_nodes_url_valid) and the request-head checks of
 * jinn_fetch_build_request; and the node directory refusing bad URLs and
 * forgetting ids in apply. */
#include <stdlib.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "error.h"
#include "fetch.h"
#include "fsm/nodes.h"
#include "unit.h"

static bool valid(const char *url)
{
    return jinn_nodes_url_valid(url, strlen(url));
}

TEST(url_valid_accepts_allowed_forms)
{
    static const char *const good[] = {
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/",
        "http://0.0.0.0:1",
        "http://255.255.255.255:65535",
        "http://10.0.0.1:80",
        "http://localhost:8080",
        "http://node-1.example.com:8080/",
        "http://a:1",
        "http://A1.b-2.C3:443",
        "http://[::1]:8080",
        "http://[::1]:8080/",
        "http://[fe80::1:2:3:4]:9000",
        "http://[2001:db8::ffff:192.0.2.1]:80",
        "http://123abc:80",
        "http://1-2-3-4:80",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!valid(good[i])) {
            fprintf(stderr, "  rejected: %s\n", good[i]);
        }
        CHECK(valid(good[i]));
    }
}

TEST(url_valid_rejects_everything_else)
{
    static const char *const bad[] = {
        "",
        "http://",
        "http://:8080",
        "http://127.0.0.1",
        "http://127.0.0.1:",
        "http://127.0.0.1/",
        "http://127.0.0.1:0",
        "http://127.0.0.1:65536",
        "http://127.0.0.1:99999999999999999999",
        "http://127.0.0.1:080",
        "http://127.0.0.1:+80",
        "http://127.0.0.1:-80",
        "http://127.0.0.1:8080//",
        "http://127.0.0.1:8080/x",
        "http://127.0.0.1:8080/?a=b",
        "http://127.0.0.1:8080?a=b",
        "http://127.0.0.1:8080#frag",
        "http://127.0.0.1:8080/#frag",
        "http://127.0.0.1:29999/\r\nX-Injected: yes",
        "http://127.0.0.1:29999\r\n",
        "http://127.0.0.1:29999\n",
        "http://127.0.0.1\r\n:29999",
        "http://127.0.0.1:2999 9",
        "http://127.0.0.1 :29999",
        " http://127.0.0.1:29999",
        "http://127.0.0.1:29999 ",
        "http://user@127.0.0.1:8080",
        "http://user:pw@127.0.0.1:8080",
        "http://127.0.0.1:8080@evil:80",
        "https://127.0.0.1:8080",
        "HTTP://127.0.0.1:8080",
        "ftp://127.0.0.1:8080",
        "http:/127.0.0.1:8080",
        "//127.0.0.1:8080",
        "127.0.0.1:8080",
        "http://256.0.0.1:80",
        "http://999.1.1.1:80",
        "http://1.2.3:80",
        "http://1.2.3.4.5:80",
        "http://01.2.3.4:80",
        "http://1..2.3:80",
        "http://1.2.3.4.:80",
        "http://.example.com:80",
        "http://example..com:80",
        "http://example.com.:80",
        "http://-example.com:80",
        "http://example-.com:80",
        "http://exa_mple.com:80",
        "http://exa%41mple.com:80",
        "http://exämple.com:80",
        "http://[::1:8080",
        "http://::1:8080",
        "http://[::1]:",
        "http://[::1]",
        "http://[]:80",
        "http://[::1%eth0]:80",
        "http://[::g]:80",
        "http://[1:2:3:4:5:6:7:8:9]:80",
        "http://[::1]x:80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (valid(bad[i])) {
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        }
        CHECK(!valid(bad[i]));
    }
}

TEST(url_valid_length_and_nul_bounds)
{
    char buf[400];
    /* A 63-byte label is fine, 64 is not. */
    snprintf(buf, sizeof buf, "http://%.*s:1", 63,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK(valid(buf));
    snprintf(buf, sizeof buf, "http://%.*s:1", 64,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK(!valid(buf));
    /* The whole URL is at most JINN_NODE_API_MAX (256) bytes: a 247-byte
     * name (labels of 50 and dots) with ":1" fits, one more byte does not. */
    {
        char name[300];
        size_t n = 0;
        while (n < 247) {
            name[n] = (n % 51 == 50) ? '.' : 'b';
            n++;
        }
        name[n] = '\0';
        snprintf(buf, sizeof buf, "http://%s:1", name);
        CHECK_INT(strlen(buf), JINN_NODE_API_MAX);
        CHECK(valid(buf));
        name[247] = 'b';
        name[248] = '\0';
        snprintf(buf, sizeof buf, "http://%s:1", name);
        CHECK(!valid(buf));
    }
    /* An embedded NUL is a byte like any other: refused. */
    CHECK(!jinn_nodes_url_valid("http://127.0.0.1:80\0", 20));
    CHECK(!jinn_nodes_url_valid("http://127.0\0.0.1:80", 20));
    CHECK(!jinn_nodes_url_valid(NULL, 0));
}

static int build(const char *url, const char *method, const char *target, const char *headers,
                 char *out, size_t cap)
{
    struct jinn_wbuf w;
    int rv;
    jinn_wbuf_init(&w);
    rv = jinn_fetch_build_request(&w, url, method, target, strlen(target), headers, "x", 1);
    if (rv == 0 && out != NULL) {
        snprintf(out, cap, "%.*s", (int)w.len, (const char *)w.data);
    }
    jinn_wbuf_free(&w);
    return rv;
}

TEST(fetch_request_head_is_checked)
{
    char out[512];
    CHECK_INT(build("http://127.0.0.1:8080/", "PUT", "/v1/kv/ns/k?x=%20",
                    "Authorization: Bearer a\tb\r\nX-Jinn-Fence: l:1\r\n", out, sizeof out),
              0);
    /* The Host header is host:port, without the URL's trailing slash. */
    CHECK(strcmp(out, "PUT /v1/kv/ns/k?x=%20 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                      "Connection: keep-alive\r\nContent-Length: 1\r\n"
                      "Authorization: Bearer a\tb\r\nX-Jinn-Fence: l:1\r\n\r\nx") == 0);
    CHECK_INT(build("http://127.0.0.1:8080", "GET", "/", NULL, NULL, 0), 0);
    /* The directory's URL. */
    CHECK_INT(build("http://127.0.0.1:29999/\r\nX-Injected: yes", "GET", "/", NULL, NULL, 0),
              JINN_EINVAL);
    CHECK_INT(build("http://u@127.0.0.1:1", "GET", "/", NULL, NULL, 0), JINN_EINVAL);
    /* The target. */
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/a\r\nX-Injected: yes", NULL, NULL, 0),
              JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/a b", NULL, NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/a\nb", NULL, NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "", NULL, NULL, 0), JINN_EINVAL);
    {
        struct jinn_wbuf w;
        jinn_wbuf_init(&w);
        CHECK_INT(jinn_fetch_build_request(&w, "http://127.0.0.1:1", "GET", "/a\0b", 4, NULL,
                                           NULL, 0),
                  JINN_EINVAL);
        jinn_wbuf_free(&w);
    }
    /* The method. */
    CHECK_INT(build("http://127.0.0.1:1", "GE T", "/", NULL, NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET\r\n", "/", NULL, NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "", "/", NULL, NULL, 0), JINN_EINVAL);
    /* Header names and values. */
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X-A: b\r\nX-B: c\rX-C: d\r\n", NULL, 0),
              JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X-A: b\nX-C: d\r\n", NULL, 0),
              JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X-A: b", NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X A: b\r\n", NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", ": b\r\n", NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X-A b\r\n", NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X-A: b\x01\r\n", NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "X-A: b\x7f\r\n", NULL, 0), JINN_EINVAL);
    CHECK_INT(build("http://127.0.0.1:1", "GET", "/", "\r\n", NULL, 0), JINN_EINVAL);
}

static void node_cmd(struct jinn_cmd *c, uint64_t id, const char *name, const char *api)
{
    memset(c, 0, sizeof *c);
    c->type = JINN_CMD_NODE_SET;
    c->node.id = id;
    c->node.name.p = (const uint8_t *)name;
    c->node.name.len = strlen(name);
    c->node.api.p = (const uint8_t *)api;
    c->node.api.len = strlen(api);
}

static void del_cmd(struct jinn_cmd *c, uint64_t id)
{
    memset(c, 0, sizeof *c);
    c->type = JINN_CMD_NODE_DEL;
    c->node.id = id;
}

TEST(nodes_apply_refuses_bad_urls_and_forgets)
{
    struct jinn_nodes nodes;
    struct jinn_cmd c;
    jinn_nodes_init(&nodes);
    node_cmd(&c, 7, "n7", "http://127.0.0.1:8080");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    /* A hijack attempt in a committed entry changes nothing, anywhere. */
    node_cmd(&c, 7, "n7", "http://127.0.0.1:29999/\r\nX-Injected: yes");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), JINN_EINVAL);
    CHECK(strcmp(jinn_nodes_find(&nodes, 7)->api, "http://127.0.0.1:8080") == 0);
    node_cmd(&c, 8, "n8", "http://evil@127.0.0.1:1");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), JINN_EINVAL);
    CHECK(jinn_nodes_find(&nodes, 8) == NULL);
    CHECK_INT(nodes.n, 1);
    /* An entry of format 1 (written before the check) replays as it
     * applied then, on every replica; fetch.c still never dials it. */
    node_cmd(&c, 8, "n8", "http://evil@127.0.0.1:1");
    c.version = 1;
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    CHECK(jinn_nodes_find(&nodes, 8) != NULL);
    del_cmd(&c, 8);
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    CHECK_INT(nodes.n, 1);
    /* NODE_DEL forgets the id; forgetting an unknown id is a no-op. A
     * NODE_SET without a URL records a member added but not announced. */
    node_cmd(&c, 9, "n9", "http://[::1]:9");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    del_cmd(&c, 7);
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    CHECK(jinn_nodes_find(&nodes, 7) == NULL);
    CHECK_INT(nodes.n, 1);
    CHECK(jinn_nodes_find(&nodes, 9) != NULL);
    del_cmd(&c, 7);
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    CHECK_INT(nodes.n, 1);
    node_cmd(&c, 7, "n7", "");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    CHECK(jinn_nodes_find(&nodes, 7) != NULL && jinn_nodes_find(&nodes, 7)->api[0] == '\0');
    del_cmd(&c, 7);
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    CHECK_INT(nodes.n, 1);
    /* Forgetting frees a slot of a full table. */
    for (uint64_t id = 100; nodes.n < JINN_NODES_MAX; id++) {
        node_cmd(&c, id, "x", "http://10.0.0.1:1");
        CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    }
    node_cmd(&c, 5, "n5", "http://10.0.0.5:1");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), JINN_EBUSY);
    del_cmd(&c, 100);
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    node_cmd(&c, 5, "n5", "http://10.0.0.5:1");
    CHECK_INT(jinn_nodes_apply(&nodes, &c), 0);
    for (unsigned i = 1; i < nodes.n; i++) {
        CHECK(nodes.items[i - 1].id < nodes.items[i].id);
    }
    jinn_nodes_clear(&nodes);
}

TEST(api_parse_uint_is_strict)
{
    uint64_t v = 7;
    CHECK(jinn_api_parse_uint("0", 10, &v) && v == 0);
    CHECK(jinn_api_parse_uint("10", 10, &v) && v == 10);
    CHECK(jinn_api_parse_uint("007", 10, &v) && v == 7);
    CHECK(jinn_api_parse_uint("18446744073709551615", UINT64_MAX, &v) && v == UINT64_MAX);
    v = 5;
    CHECK(!jinn_api_parse_uint("18446744073709551616", UINT64_MAX, &v));
    CHECK(!jinn_api_parse_uint("99999999999999999999", UINT64_MAX, &v));
    CHECK(!jinn_api_parse_uint("999999999999999999999999999999", UINT64_MAX, &v));
    CHECK(!jinn_api_parse_uint("9223372036854775808", INT64_MAX, &v));
    CHECK(!jinn_api_parse_uint("11", 10, &v));
    CHECK(!jinn_api_parse_uint("", 10, &v));
    CHECK(!jinn_api_parse_uint(NULL, 10, &v));
    CHECK(!jinn_api_parse_uint("-1", 10, &v));
    CHECK(!jinn_api_parse_uint("+1", 10, &v));
    CHECK(!jinn_api_parse_uint(" 1", 10, &v));
    CHECK(!jinn_api_parse_uint("1 ", 10, &v));
    CHECK(!jinn_api_parse_uint("1x", 10, &v));
    CHECK(!jinn_api_parse_uint("0x1", 10, &v));
    CHECK(!jinn_api_parse_uint("1e1", 100, &v));
    CHECK_INT(v, 5); /* untouched on failure */
}
