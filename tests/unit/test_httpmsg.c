/* test_httpmsg.c - the HTTP parser against good, malformed, truncated and
 * oversized messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "httpmsg.h"
#include "unit.h"

static const struct jinn_http_limits limits = {1024, 256, 100};

static int parse(const char *text, struct jinn_http_msg *m)
{
    return jinn_http_parse_head(text, strlen(text), false, &limits, m);
}

TEST(http_parses_request)
{
    static const char req[] = "PUT /v1/kv/ns/k%20ey?ttl=30s&x=a+b HTTP/1.1\r\n"
                              "Host: x\r\nContent-Length: 5\r\nIf-Match:  \"7\" \r\n\r\nhello";
    struct jinn_http_msg m;
    const char *body, *path, *query;
    size_t body_len, total, path_len, query_len;
    bool owned;
    char v[32];
    CHECK_INT(parse(req, &m), 0);
    CHECK_STR(m.method, "PUT");
    CHECK_INT(m.minor_version, 1);
    CHECK(m.keep_alive);
    CHECK_INT(m.content_length, 5);
    CHECK_INT(m.n_headers, 3);
    const struct jinn_http_header *h = jinn_http_header_find(&m, "if-match");
    CHECK(h != NULL);
    CHECK_INT(h->value_len, 3);
    CHECK(memcmp(h->value, "\"7\"", 3) == 0);
    CHECK_INT(jinn_http_parse_body(req, strlen(req), &m, 100, &body, &body_len, &owned, &total),
              0);
    CHECK_INT(body_len, 5);
    CHECK(!owned);
    CHECK_INT(total, strlen(req));
    CHECK(memcmp(body, "hello", 5) == 0);
    jinn_http_split_target(m.target, m.target_len, &path, &path_len, &query, &query_len);
    CHECK_INT(path_len, strlen("/v1/kv/ns/k%20ey"));
    CHECK_INT(jinn_http_query_get(query, query_len, "ttl", v, sizeof v), 3);
    CHECK_STR(v, "30s");
    CHECK_INT(jinn_http_query_get(query, query_len, "x", v, sizeof v), 3);
    CHECK_STR(v, "a b");
    CHECK_INT(jinn_http_query_get(query, query_len, "nope", v, sizeof v), -1);
    CHECK_INT(jinn_http_unescape("k%20ey", 6, v, sizeof v, false), 4);
    CHECK_STR(v, "k ey");
    CHECK_INT(jinn_http_unescape("bad%2", 5, v, sizeof v, false), -1);
    CHECK_INT(jinn_http_unescape("bad%zz", 6, v, sizeof v, false), -1);
    CHECK_INT(jinn_http_unescape("toolong", 7, v, 4, false), -2); /* does not fit */
}

TEST(http_needs_more_for_every_prefix)
{
    static const char req[] = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    size_t head = strlen(req) - 3;
    for (size_t n = 0; n < head; n++) {
        struct jinn_http_msg m;
        CHECK_INT(jinn_http_parse_head(req, n, false, &limits, &m), JINN_HTTP_NEED_MORE);
    }
    for (size_t n = head; n < strlen(req); n++) {
        struct jinn_http_msg m;
        const char *b;
        size_t bl, t;
        bool o;
        CHECK_INT(jinn_http_parse_head(req, n, false, &limits, &m), 0);
        CHECK_INT(jinn_http_parse_body(req, n, &m, 100, &b, &bl, &o, &t), JINN_HTTP_NEED_MORE);
    }
}

TEST(http_rejects_malformed)
{
    static const struct {
        const char *text;
        int code;
    } cases[] = {
        {"GET\r\n\r\n", JINN_EINVAL},
        {"GET / HTTP/2.0\r\n\r\n", JINN_EINVAL},
        {"GET / HTTP/1.1 extra\r\n\r\n", JINN_EINVAL},
        {"GET noslash HTTP/1.1\r\n\r\n", JINN_EINVAL},
        {"G@T / HTTP/1.1\r\n\r\n", JINN_EINVAL},
        {"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", JINN_EINVAL},
        {"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", JINN_EINVAL},
        {"GET / HTTP/1.1\r\n folded: x\r\n\r\n", JINN_EINVAL},
        {"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", JINN_EINVAL},
        {"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", JINN_EINVAL},
        {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", JINN_EINVAL},
        {"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         JINN_EINVAL},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", JINN_EINVAL},
        {"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", JINN_ETOOBIG},
        {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", JINN_EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct jinn_http_msg m;
        int rv = parse(cases[i].text, &m);
        if (rv != cases[i].code) {
            fprintf(stderr, "  case %zu: got %d\n", i, rv);
        }
        CHECK_INT(rv, cases[i].code);
    }
}

TEST(http_limits_give_431_and_414)
{
    char buf[4096];
    struct jinn_http_msg m;
    int n = snprintf(buf, sizeof buf, "GET /%0300d HTTP/1.1\r\n\r\n", 0);
    CHECK_INT(jinn_http_parse_head(buf, (size_t)n, false, &limits, &m), JINN_EURI);
    n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %01100d\r\n\r\n", 0);
    CHECK_INT(jinn_http_parse_head(buf, (size_t)n, false, &limits, &m), JINN_EHEADERS);
    /* A start line that never ends within the head limit. */
    memset(buf, 'a', 2000);
    memcpy(buf, "GET /", 5);
    CHECK_INT(jinn_http_parse_head(buf, 2000, false, &limits, &m), JINN_EURI);
    /* Too many headers. */
    {
        struct jinn_http_limits big = {65536, 256, 100};
        char *many = malloc(65536);
        size_t len = (size_t)sprintf(many, "GET / HTTP/1.1\r\n");
        CHECK(many != NULL);
        for (int i = 0; i <= JINN_HTTP_MAX_HEADERS; i++) {
            len += (size_t)sprintf(many + len, "X-%d: y\r\n", i);
        }
        len += (size_t)sprintf(many + len, "\r\n");
        int rv = jinn_http_parse_head(many, len, false, &big, &m);
        free(many);
        CHECK_INT(rv, JINN_EHEADERS);
    }
}

TEST(http_chunked_body)
{
    static const char req[] = "POST /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    struct jinn_http_msg m;
    const char *b;
    size_t bl, total;
    bool owned;
    CHECK_INT(parse(req, &m), 0);
    CHECK(m.chunked);
    CHECK_INT(jinn_http_parse_body(req, strlen(req), &m, 100, &b, &bl, &owned, &total), 0);
    CHECK(owned);
    CHECK_INT(bl, 11);
    CHECK(memcmp(b, "hello world", 11) == 0);
    CHECK_INT(total, strlen(req) - 4);
    jinn_free((void *)b);
    /* Every truncation needs more; never reads past the end. */
    for (size_t n = m.head_len; n < strlen(req) - 6; n++) {
        int rv = jinn_http_parse_body(req, n, &m, 100, &b, &bl, &owned, &total);
        CHECK_INT(rv, JINN_HTTP_NEED_MORE);
    }
    /* Too large once decoded. */
    CHECK_INT(jinn_http_parse_body(req, strlen(req), &m, 10, &b, &bl, &owned, &total),
              JINN_ETOOBIG);
}

TEST(http_chunked_malformed)
{
    static const char *bodies[] = {"zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n",
                                   "5 \r\nhello\r\n0\r\n\r\n"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char req[256];
        struct jinn_http_msg m;
        const char *b;
        size_t bl, total;
        bool owned;
        int n = snprintf(req, sizeof req, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%s",
                         bodies[i]);
        CHECK_INT(jinn_http_parse_head(req, (size_t)n, false, &limits, &m), 0);
        CHECK_INT(jinn_http_parse_body(req, (size_t)n, &m, 100, &b, &bl, &owned, &total),
                  JINN_EINVAL);
    }
}

TEST(http_keep_alive_rules)
{
    struct jinn_http_msg m;
    CHECK_INT(parse("GET / HTTP/1.0\r\n\r\n", &m), 0);
    CHECK(!m.keep_alive);
    CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &m), 0);
    CHECK(m.keep_alive);
    CHECK_INT(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &m), 0);
    CHECK(!m.keep_alive);
}

TEST(http_parses_responses)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n"
                               "Retry-After: 1\r\n\r\nok";
    static const char until_close[] = "HTTP/1.0 200 OK\r\n\r\npartial";
    struct jinn_http_limits rl = {1024, 0, 1000};
    struct jinn_http_msg m;
    const char *b;
    size_t bl, total;
    bool owned;
    CHECK_INT(jinn_http_parse_head(resp, strlen(resp), true, &rl, &m), 0);
    CHECK_INT(m.status, 503);
    CHECK_INT(jinn_http_parse_body(resp, strlen(resp), &m, 1000, &b, &bl, &owned, &total), 0);
    CHECK_INT(bl, 2);
    CHECK_INT(jinn_http_parse_head(until_close, strlen(until_close), true, &rl, &m), 0);
    CHECK(m.body_until_close);
    CHECK_INT(jinn_http_parse_body(until_close, strlen(until_close), &m, 1000, &b, &bl, &owned,
                                   &total),
              JINN_HTTP_NEED_MORE);
    CHECK_INT(bl, 7);
    CHECK(jinn_http_parse_head("HTTP/1.1 2x0 OK\r\n\r\n", 19, true, &rl, &m) == JINN_EINVAL);
    CHECK(jinn_http_parse_head("HTTP/3 200 OK\r\n\r\n", 17, true, &rl, &m) == JINN_EINVAL);
}

TEST(http_random_bytes_never_crash)
{
    unsigned seed = 99;
    char buf[512];
    for (int i = 0; i < 20000; i++) {
        struct jinn_http_msg m;
        size_t n = (size_t)(rand_r(&seed) % (int)sizeof buf);
        for (size_t k = 0; k < n; k++) {
            static const char alphabet[] = "GET /HTP1.\r\n: abcContent-Length0123456789;";
            buf[k] = (i & 1) ? (char)rand_r(&seed)
                             : alphabet[rand_r(&seed) % (int)(sizeof alphabet - 1)];
        }
        int rv = jinn_http_parse_head(buf, n, (i & 2) != 0, &limits, &m);
        CHECK(rv == 0 || rv == JINN_HTTP_NEED_MORE || rv == JINN_EINVAL || rv == JINN_EURI ||
              rv == JINN_EHEADERS || rv == JINN_ETOOBIG);
        if (rv == 0) {
            const char *b;
            size_t bl, t;
            bool o;
            rv = jinn_http_parse_body(buf, n, &m, 100, &b, &bl, &o, &t);
            CHECK(rv == 0 || rv == JINN_HTTP_NEED_MORE || rv == JINN_EINVAL ||
                  rv == JINN_ETOOBIG || rv == JINN_EHEADERS);
            CHECK(rv != 0 || t <= n);
            if (rv == 0 && o) {
                jinn_free((void *)b);
            }
        }
    }
}

/* Trailers are header lines (the same grammar), bounded in bytes and
 * count; anything else is an error, never silently skipped. */
TEST(http_chunked_trailers_checked)
{
    struct {
        const char *trailers;
        int want;
    } cases[] = {
        {"\r\n", 0},
        {"X-Sum: 1\r\nX-Other:\r\n\r\n", 0},
        {"no colon\r\n\r\n", JINN_EINVAL},
        {": no name\r\n\r\n", JINN_EINVAL},
        {"Bad Name: x\r\n\r\n", JINN_EINVAL},
        {"X-Ctl: a\001b\r\n\r\n", JINN_EINVAL},
        {" folded: x\r\n\r\n", JINN_EINVAL},
        {"X-Sum: 1\r\n", JINN_HTTP_NEED_MORE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[256];
        struct jinn_http_msg m;
        const char *b = NULL;
        size_t bl, total;
        bool owned = false;
        int n = snprintf(req, sizeof req,
                         "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3\r\nabc\r\n0\r\n%s",
                         cases[i].trailers);
        CHECK_INT(jinn_http_parse_head(req, (size_t)n, false, &limits, &m), 0);
        CHECK_INT(jinn_http_parse_body(req, (size_t)n, &m, 100, &b, &bl, &owned, &total),
                  cases[i].want);
        if (cases[i].want == 0) {
            CHECK_INT(total, (size_t)n);
            CHECK_INT(bl, 3);
            jinn_free((void *)b);
        }
    }
}

TEST(http_chunked_trailers_bounded)
{
    size_t cap = 64 + 2 * JINN_HTTP_MAX_TRAILERS;
    char *req = malloc(cap);
    struct jinn_http_msg m;
    const char *b;
    size_t bl, total, n;
    bool owned;
    CHECK(req != NULL);
    /* One endless trailer line. */
    n = (size_t)snprintf(req, cap, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ");
    memset(req + n, 'a', cap - n);
    CHECK_INT(jinn_http_parse_head(req, n, false, &limits, &m), 0);
    CHECK_INT(jinn_http_parse_body(req, cap, &m, 100, &b, &bl, &owned, &total), JINN_EHEADERS);
    /* Too many short lines. */
    n = (size_t)snprintf(req, cap, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i <= JINN_HTTP_MAX_HEADERS; i++) {
        n += (size_t)snprintf(req + n, cap - n, "X: y\r\n");
    }
    n += (size_t)snprintf(req + n, cap - n, "\r\n");
    CHECK_INT(jinn_http_parse_body(req, n, &m, 100, &b, &bl, &owned, &total), JINN_EHEADERS);
    free(req);
}

/* A decoded segment that does not fit is "too long" (-2), not "bad
 * escape" (-1): callers report it as such. */
TEST(http_unescape_overflow_is_not_bad_escape)
{
    char dst[8];
    CHECK_INT(jinn_http_unescape("%41%42%43", 9, dst, sizeof dst, false), 3);
    CHECK_STR(dst, "ABC");
    CHECK_INT(jinn_http_unescape("%4", 2, dst, sizeof dst, false), -1);
    CHECK_INT(jinn_http_unescape("%zz", 3, dst, sizeof dst, false), -1);
    CHECK_INT(jinn_http_unescape("%41%41%41%41%41%41%41%41", 24, dst, sizeof dst, false), -2);
    CHECK_INT(jinn_http_unescape("abcdefgh", 8, dst, sizeof dst, false), -2);
    CHECK_INT(jinn_http_unescape("abcdefg", 7, dst, sizeof dst, false), 7);
}
