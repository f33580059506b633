/* test_wasm_host.c - the host functions (wasm/host.c) against a fake node
 * API: a real HTTP server on loopback (http.c) that records every request
 * host.c makes and answers from a script. Checks what reaches the API
 * (targets, percent-encoding, fence headers, owners, TTLs), what never
 * does (hostile or denied input), and what the guest gets back. */
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "api/api.h"
#include "config.h"
#include "fetch.h"
#include "fsm/fn.h"
#include "http.h"
#include "unit.h"
#include "wasm/host.h"
#include "wasm/proto.h"

#define FAKE_MAX 16

struct seen {
    char method[16];
    char target[2048];
    char fence[300];
    char body[2048];
};

struct canned {
    int status;
    const char *body;
    const char *index; /* X-Jinn-Index or NULL */
};

static struct {
    struct seen seen[FAKE_MAX];
    unsigned n_seen;
    struct canned script[FAKE_MAX];
    unsigned n_script, next;
} fake;

struct answer {
    bool got;
    uint32_t result;
    char bytes[4096];
    size_t len;  /* of bytes (the start of the answer) */
    size_t full; /* of the whole answer */
};

static void fake_handle(void *data, struct jinn_http_request *req)
{
    const struct jinn_http_header *f = jinn_http_header_find(&req->msg, "x-jinn-fence");
    struct seen *s = &fake.seen[fake.n_seen < FAKE_MAX ? fake.n_seen : FAKE_MAX - 1];
    (void)data;
    fake.n_seen++;
    snprintf(s->method, sizeof s->method, "%s", req->msg.method);
    snprintf(s->target, sizeof s->target, "%.*s", (int)req->msg.target_len, req->msg.target);
    snprintf(s->fence, sizeof s->fence, "%.*s", f ? (int)f->value_len : 0, f ? f->value : "");
    snprintf(s->body, sizeof s->body, "%.*s", (int)req->body_len, req->body ? req->body : "");
    if (fake.next < fake.n_script) {
        const struct canned *c = &fake.script[fake.next++];
        if (c->index != NULL) {
            jinn_http_add_header(req, "X-Jinn-Index", c->index);
        }
        jinn_http_reply(req, c->status, "application/json", c->body, strlen(c->body));
    } else {
        jinn_http_reply(req, 500, "application/json", "{}", 2);
    }
}

static void script(int status, const char *body, const char *index)
{
    fake.script[fake.n_script++] = (struct canned){status, body, index};
}

struct env {
    uv_loop_t loop;
    struct jinn_config cfg;
    struct jinn_api api;
    struct jinn_http_server *server;
    struct jinn_wasm_host *host;
    struct jinn_fn_settings settings;
    uv_timer_t tick; /* wakes the loop, so every wait below ends at its deadline */
    bool stopped;
};

static void tick(uv_timer_t *t)
{
    (void)t;
}

static int pick_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

static bool env_start(struct env *e)
{
    char listen[32];
    struct jinn_http_config hc = {0};
    memset(&fake, 0, sizeof fake);
    memset(e, 0, sizeof *e);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", pick_port());
    if (uv_loop_init(&e->loop) != 0 || jinn_config_defaults(&e->cfg) != 0) {
        return false;
    }
    jinn_free(e->cfg.http_listen);
    e->cfg.http_listen = jinn_strdup(listen);
    hc.listen = listen;
    hc.max_body = e->cfg.max_body_bytes;
    hc.idle_timeout_ms = 10000;
    hc.read_timeout_ms = 10000;
    hc.max_connections = 64;
    if (jinn_http_start(&e->loop, &hc, fake_handle, NULL, &e->server) != 0) {
        return false;
    }
    uv_timer_init(&e->loop, &e->tick);
    uv_timer_start(&e->tick, tick, 50, 50);
    e->api.loop = &e->loop;
    e->api.cfg = &e->cfg;
    e->host = jinn_wasm_host_create(&e->api);
    e->settings.timeout_ms = 5000;
    snprintf(e->settings.ns, sizeof e->settings.ns, "app");
    return e->host != NULL;
}

static void server_stopped(void *data)
{
    ((struct env *)data)->stopped = true;
}

static void env_stop(struct env *e)
{
    jinn_wasm_host_destroy(e->host);
    jinn_fetch_close_idle();
    jinn_http_stop(e->server, server_stopped, e);
    uv_close((uv_handle_t *)&e->tick, NULL);
    for (int i = 0; i < 1000 && (!e->stopped || uv_loop_alive(&e->loop)); i++) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_loop_close(&e->loop);
    jinn_config_free(&e->cfg);
}

static void on_reply(void *data, uint32_t result, const void *bytes, size_t len)
{
    struct answer *a = data;
    a->got = true;
    a->result = result;
    a->full = len;
    a->len = len < sizeof a->bytes ? len : sizeof a->bytes - 1;
    if (len > 0) {
        memcpy(a->bytes, bytes, a->len);
    }
    a->bytes[a->len] = '\0';
}

/* Runs the loop until the answer came (or ~5 s passed). */
static void wait_answer(struct env *e, struct answer *a)
{
    uint64_t end = uv_now(&e->loop) + 5000;
    while (!a->got && uv_now(&e->loop) < end) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
}

/* Runs the loop until the fake saw n requests (or ~5 s passed). */
static void wait_seen(struct env *e, unsigned n)
{
    uint64_t end = uv_now(&e->loop) + 5000;
    while (fake.n_seen < n && uv_now(&e->loop) < end) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
}

static struct answer call(struct env *e, struct jinn_wasm_inv *inv, int kind, uint32_t a,
                          uint32_t outmax, const void *b1, size_t n1, const void *b2, size_t n2)
{
    struct answer ans = {0};
    jinn_wasm_inv_call(inv, kind, a, outmax, b1, n1, b2, n2, on_reply, &ans);
    wait_answer(e, &ans);
    return ans;
}

#define FAIL32 0xFFFFFFFFu

/* CHECK_STR's message buffer is small for these arrays: print here. */
static bool same(const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "  got  \"%s\"\n  want \"%s\"\n", got, want);
        return false;
    }
    return true;
}
#define CHECK_SAME(a, b) CHECK(same((a), (b)))

TEST(wasm_host_kv_get_set_and_missing)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct answer a;
    CHECK(env_start(&e));
    inv = jinn_wasm_inv_begin(e.host, "f1", &e.settings, 7, "trace-1");
    CHECK(inv != NULL);

    script(200, "{\"revision\":12,\"index\":12}", "12");
    a = call(&e, inv, JINN_SBX_KV_SET, 0, 0, "a b/c", 5, "v1", 2);
    CHECK(a.got);
    CHECK_INT(a.result, 0);
    CHECK_SAME(fake.seen[0].method, "PUT");
    CHECK_SAME(fake.seen[0].target, "/v1/kv/app/a%20b%2Fc");
    CHECK_SAME(fake.seen[0].body, "v1");
    CHECK_SAME(fake.seen[0].fence, ""); /* no lock held: not fenced */

    /* A read after our write waits for its index (read-your-writes). */
    script(200, "hello", NULL);
    a = call(&e, inv, JINN_SBX_KV_GET, 0, 16, "a b/c", 5, NULL, 0);
    CHECK_INT(a.result, 5);
    CHECK_SAME(a.bytes, "hello");
    CHECK_SAME(fake.seen[1].target, "/v1/kv/app/a%20b%2Fc?min_index=12");

    script(200, "hello", NULL); /* does not fit outmax 4 */
    a = call(&e, inv, JINN_SBX_KV_GET, 0, 4, "k", 1, NULL, 0);
    CHECK_INT(a.result, FAIL32);
    CHECK_INT(a.len, 0);

    script(404, "{\"error\":\"not_found\"}", NULL);
    a = call(&e, inv, JINN_SBX_KV_GET, 0, 16, "nope", 4, NULL, 0);
    CHECK_INT(a.result, FAIL32);

    script(503, "{\"error\":\"no_leader\",\"message\":\"x\"}", NULL);
    a = call(&e, inv, JINN_SBX_KV_SET, 0, 0, "k", 1, "v", 1);
    CHECK_INT(a.result, FAIL32);
    CHECK_INT(fake.n_seen, 5);

    jinn_wasm_inv_end(inv);
    env_stop(&e);
}

TEST(wasm_host_hostile_and_denied_input_never_reaches_the_api)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct answer a;
    struct jinn_wasm_host_counters c;
    char big[JINN_KV_KEY_MAX + 1];
    char *rd[] = {"pub/"}, *wr[] = {"pub/w/", "tmp-"};
    CHECK(env_start(&e));
    e.settings.kv_read = rd;
    e.settings.n_kv_read = 1;
    e.settings.kv_write = wr;
    e.settings.n_kv_write = 2;
    inv = jinn_wasm_inv_begin(e.host, "f2", &e.settings, 8, "t\r\nx");
    CHECK(inv != NULL);
    memset(big, 'k', sizeof big);

    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, "priv/x", 6, NULL, 0).result, FAIL32);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_SET, 0, 0, "pub/x", 5, "v", 1).result, FAIL32);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, "", 0, NULL, 0).result, FAIL32);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, "pub/\0x", 6, NULL, 0).result, FAIL32);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, "pub/\xff", 5, NULL, 0).result, FAIL32);
    memcpy(big, "pub/", 4);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, big, sizeof big, NULL, 0).result, FAIL32);
    /* Lock names go into a header: no CR/LF, no blank ends. */
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 1, 0, "a\r\nX-Evil: 1", 12, NULL, 0).result,
              0);
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 1, 0, " a", 2, NULL, 0).result, 0);
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 4000000, 0, "a", 1, NULL, 0).result, 0);
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_UNLOCK, 0, 0, "never", 5, NULL, 0).result, 0);
    CHECK_INT(call(&e, inv, JINN_SBX_ENQUEUE, 0, 0, "../x", 4, "p", 1).result, FAIL32);
    CHECK_INT(call(&e, inv, JINN_SBX_ENQUEUE, 0, 0, "UPPER", 5, "p", 1).result, FAIL32);
    memset(big, 'a', 57);
    CHECK_INT(call(&e, inv, JINN_SBX_ENQUEUE, 0, 0, big, 57, "p", 1).result, FAIL32);
    CHECK_INT(call(&e, inv, 99, 0, 0, "x", 1, NULL, 0).result, FAIL32);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT 1", 8, NULL, 0);
    CHECK(strstr(a.bytes, "no database configured") != NULL);
    CHECK_INT(a.result, a.len);
    CHECK_INT(fake.n_seen, 0);

    /* Allowed by the prefixes: these do reach it. */
    script(200, "{}", "3");
    CHECK_INT(call(&e, inv, JINN_SBX_KV_SET, 0, 0, "tmp-1", 5, "v", 1).result, 0);
    script(200, "v", NULL);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, "pub/a", 5, NULL, 0).result, 1);
    CHECK_INT(fake.n_seen, 2);

    jinn_wasm_host_counters(e.host, "f2", &c);
    CHECK_INT(c.denied, 14);
    CHECK_INT(c.calls[JINN_SBX_KV_GET], 6);
    jinn_wasm_inv_end(inv);
    env_stop(&e);
}

/* A lock request's target: head, the owner's 8 hex digits of boot id, tail
 * (owners are fn/<name>/<node>/<boot>-<invocation id>). */
static bool owner_target(const char *target, const char *head, const char *tail)
{
    size_t h = strlen(head), t = strlen(tail), n = strlen(target);
    if (n != h + 8 + t || strncmp(target, head, h) != 0 || strcmp(target + h + 8, tail) != 0) {
        return false;
    }
    for (size_t i = h; i < h + 8; i++) {
        if (!isxdigit((unsigned char)target[i])) {
            return false;
        }
    }
    return true;
}

TEST(wasm_host_locks_fence_writes_and_are_released_at_the_end)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct answer a;
    struct jinn_wasm_host_counters c;
    CHECK(env_start(&e));
    snprintf(e.settings.db, sizeof e.settings.db, "appdb");
    inv = jinn_wasm_inv_begin(e.host, "f3", &e.settings, 42, "t");
    CHECK(inv != NULL);

    script(200, "{\"state\":\"leader\",\"granted\":true,\"token\":17}", "17");
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 0, 0, "Key_A", 5, NULL, 0).result, 1);
    CHECK_SAME(fake.seen[0].method, "POST");
    /* ttl 0 = the function's timeout + 1 s; the owner names the invocation. */
    CHECK(owner_target(fake.seen[0].target, "/v1/locks/Key_A?owner=fn%2Ff3%2Fjinn%2F",
                       "-42&ttl=6000ms"));

    script(409, "{\"state\":\"follower\",\"granted\":false}", NULL);
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 3, 0, "Key_B", 5, NULL, 0).result, 0);
    CHECK(owner_target(fake.seen[1].target, "/v1/locks/Key_B?owner=fn%2Ff3%2Fjinn%2F",
                       "-42&ttl=3000ms"));

    /* Writes under the lock carry its fence. */
    script(200, "{}", "20");
    CHECK_INT(call(&e, inv, JINN_SBX_KV_SET, 0, 0, "counter", 7, "1", 1).result, 0);
    CHECK_SAME(fake.seen[2].fence, "Key_A:17");

    script(200, "{\"state\":\"leader\",\"granted\":true,\"token\":21}", "21");
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 2, 0, "Key_C", 5, NULL, 0).result, 1);
    /* The most recently acquired one fences; SQL writes go to exec. */
    script(200, "{\"results\":[{\"rows_affected\":1,\"last_insert_id\":1}],\"index\":22}",
           "22");
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "INSERT INTO t VALUES(1)", 23, NULL, 0);
    CHECK_SAME(a.bytes, "[{\"rows_affected\":1,\"last_insert_id\":1}]");
    CHECK_SAME(fake.seen[4].target, "/v1/sql/appdb/exec");
    CHECK_SAME(fake.seen[4].fence, "Key_C:21");
    CHECK_SAME(fake.seen[4].body, "{\"statements\":[{\"sql\":\"INSERT INTO t VALUES(1)\"}]}");

    /* Lost lock: the state machine refuses the fenced write. */
    script(409, "{\"error\":\"conflict\"}", NULL);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_SET, 0, 0, "counter", 7, "2", 1).result, FAIL32);
    script(409, "{\"error\":\"conflict\"}", NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "UPDATE t SET x = 1", 18, NULL, 0);
    CHECK(strstr(a.bytes, "fenced out") != NULL);

    /* Unlock what it holds; a second unlock has nothing to release. */
    script(200, "{\"released\":true}", "30");
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_UNLOCK, 0, 0, "Key_C", 5, NULL, 0).result, 1);
    CHECK_SAME(fake.seen[7].method, "DELETE");
    CHECK_SAME(fake.seen[7].target, "/v1/locks/Key_C?token=21");
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_UNLOCK, 0, 0, "Key_C", 5, NULL, 0).result, 0);
    CHECK_INT(fake.n_seen, 8);

    /* Re-locking a held lock refreshes it instead of conflicting. */
    script(200, "{\"state\":\"leader\",\"token\":17}", "31");
    CHECK_INT(call(&e, inv, JINN_SBX_MUTEX_LOCK, 9, 0, "Key_A", 5, NULL, 0).result, 1);
    CHECK_SAME(fake.seen[8].target, "/v1/locks/Key_A/refresh?token=17&ttl=9000ms");

    /* Key_A is still held: the end releases it. */
    script(200, "{\"released\":true}", "32");
    jinn_wasm_inv_end(inv);
    wait_seen(&e, 10);
    CHECK_INT(fake.n_seen, 10);
    CHECK_SAME(fake.seen[9].method, "DELETE");
    CHECK_SAME(fake.seen[9].target, "/v1/locks/Key_A?token=17");
    for (int i = 0; i < 50; i++) {
        uv_run(&e.loop, UV_RUN_NOWAIT);
    }
    jinn_wasm_host_counters(e.host, "f3", &c);
    CHECK_INT(c.fenced_out, 2);
    CHECK_INT(c.locks_acquired, 3);
    CHECK_INT(c.locks_contended, 1);
    CHECK_INT(c.locks_released_at_end, 1);
    env_stop(&e);
}

TEST(wasm_host_db_query_reads_answer_row_objects)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct answer a;
    CHECK(env_start(&e));
    snprintf(e.settings.db, sizeof e.settings.db, "appdb");
    inv = jinn_wasm_inv_begin(e.host, "f4", &e.settings, 1, "t");
    CHECK(inv != NULL);

    script(200,
           "{\"columns\":[\"id\",\"name\"],\"types\":[\"INTEGER\",\"TEXT\"],"
           "\"rows\":[[1,\"ada\"],[2,null]]}",
           NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, " -- c\n select id, name from t", 29, NULL,
             0);
    CHECK_SAME(a.bytes, "[{\"id\":1,\"name\":\"ada\"},{\"id\":2,\"name\":null}]");
    CHECK_INT(a.result, a.len);
    CHECK_SAME(fake.seen[0].target, "/v1/sql/appdb/query");
    CHECK_SAME(fake.seen[0].body, "{\"sql\":\" -- c\\n select id, name from t\"}");

    script(400, "{\"error\":\"sql_error\",\"message\":\"no such table: t\"}", NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT * FROM t", 15, NULL, 0);
    CHECK_SAME(a.bytes, "[{\"error\":\"400 sql_error: no such table: t\"}]");

    /* A long message cut inside a UTF-8 sequence is still an error row. */
    {
        static char msg[1024];
        size_t m = (size_t)snprintf(msg, sizeof msg, "{\"error\":\"sql_error\",\"message\":\"x");
        for (int i = 0; i < 300; i++) {
            m += (size_t)snprintf(msg + m, sizeof msg - m, "\xc3\xa9");
        }
        snprintf(msg + m, sizeof msg - m, "\"}");
        script(400, msg, NULL);
        a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT 1", 8, NULL, 0);
        CHECK(a.result != FAIL32 && a.result == a.full);
        static const char want[] = "[{\"error\":\"400 sql_error: x\xc3\xa9";
        CHECK(strncmp(a.bytes, want, sizeof want - 1) == 0);
        fake.seen[fake.n_seen - 1].target[0] = '\0';
        fake.n_seen--; /* keep the request numbering below */
    }

    /* WITH ... INSERT is refused by the read-only connection: it is retried
     * as an exec. */
    script(400, "{\"error\":\"sql_error\",\"message\":\"not authorized\"}", NULL);
    script(200, "{\"results\":[{\"rows_affected\":1,\"last_insert_id\":5}]}", "9");
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096,
             "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", 50, NULL, 0);
    CHECK_SAME(a.bytes, "[{\"rows_affected\":1,\"last_insert_id\":5}]");
    CHECK_SAME(fake.seen[3].target, "/v1/sql/appdb/exec");

    /* An answer that cannot fit outmax is an error row, or 0xFFFFFFFF
     * when even that does not fit. */
    script(200, "{\"columns\":[\"a\"],\"types\":[\"TEXT\"],\"rows\":[[\"0123456789\"]]}", NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 8, "SELECT a FROM t", 15, NULL, 0);
    CHECK_INT(a.result, FAIL32);
    CHECK_INT(a.len, 0);

    /* A tiny answer ("[{}]": a row of no columns) is shorter than the
     * error-row prefix the failure count compares with. */
    script(200, "{\"columns\":[],\"types\":[],\"rows\":[[]]}", NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT", 6, NULL, 0);
    CHECK_SAME(a.bytes, "[{}]");
    CHECK_INT(a.result, 4);

    /* host_enqueue submits a job through the jobs endpoint (202): it
     * checks the function exists and needs fn:F:invoke. */
    script(202, "{\"job\":10,\"index\":10}", "10");
    CHECK_INT(call(&e, inv, JINN_SBX_ENQUEUE, 0, 0, "job-1", 5, "payload", 7).result, 0);
    CHECK_SAME(fake.seen[6].target, "/v1/functions/job-1/jobs");
    CHECK_SAME(fake.seen[6].body, "payload");
    script(404, "{\"error\":\"not_found\"}", NULL);
    CHECK_INT(call(&e, inv, JINN_SBX_ENQUEUE, 0, 0, "nosuch", 6, "p", 1).result, FAIL32);
    CHECK_SAME(fake.seen[7].target, "/v1/functions/nosuch/jobs");
    jinn_wasm_inv_end(inv);
    env_stop(&e);
}

/* Query answers are rewritten by a scanner, not a JSON tree: values of
 * every shape are copied exactly, duplicate names keep the last, anything
 * malformed is an error row, and a result past outmax stops early. */
TEST(wasm_host_db_query_rows_of_every_shape)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct answer a;
    static char big[300000];
    size_t n = 0;
    CHECK(env_start(&e));
    snprintf(e.settings.db, sizeof e.settings.db, "appdb");
    inv = jinn_wasm_inv_begin(e.host, "f6", &e.settings, 1, "t");
    CHECK(inv != NULL);

    script(200,
           "{\"columns\":[\"a\",\"b\\\"q\",\"a\",\"\\u00e9\"],\"types\":[],\"rows\":"
           "[[1.5e3,\"x]\\\"},[\",{\"base64\":\"AAE=\"},null], [ -2 , true , \"\" , false ]]}",
           NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT 1", 8, NULL, 0);
    /* (the names are re-encoded: \u00e9 comes out as UTF-8) */
    CHECK_SAME(a.bytes,
               "[{\"b\\\"q\":\"x]\\\"},[\",\"a\":{\"base64\":\"AAE=\"},\"\xc3\xa9\":null},"
               "{\"b\\\"q\":true,\"a\":\"\",\"\xc3\xa9\":false}]");

    /* A later duplicate the row has no value for does not hide the earlier. */
    script(200, "{\"columns\":[\"a\",\"b\",\"a\"],\"rows\":[[1,2],[3,4,5]]}", NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT 1", 8, NULL, 0);
    CHECK_SAME(a.bytes, "[{\"a\":1,\"b\":2},{\"b\":4,\"a\":5}]");

    script(200, "{\"rows\":[],\"columns\":[\"x\"]}", NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT 1", 8, NULL, 0);
    CHECK_SAME(a.bytes, "[]");

    static const char *const bad[] = {
        "{\"columns\":[\"x\"],\"rows\":[[1,2]]}", /* more values than columns */
        "{\"columns\":[\"x\"],\"rows\":[[\"unterminated]]}",
        "{\"columns\":[\"x\"],\"rows\":[[1]",
        "{\"columns\":[\"x\"],\"rows\":[[1][2]]}",
        "{\"columns\":[\"x\"]}",
        "{\"columns\":\"x\",\"rows\":[]}",
        "[]",
        "",
        "{\"columns\":[\"x\"],\"rows\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]]"
        "]]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        script(200, bad[i], NULL);
        a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 4096, "SELECT 1", 8, NULL, 0);
        if (strstr(a.bytes, "malformed query answer") == NULL) {
            fprintf(stderr, "  accepted: %s -> %s\n", bad[i], a.bytes);
        }
        CHECK(strstr(a.bytes, "malformed query answer") != NULL);
        fake.n_script = fake.next = 0;
    }

    /* Many rows: converted, and stopped early once past outmax. */
    n += (size_t)snprintf(big + n, sizeof big - n, "{\"columns\":[\"id\"],\"rows\":[");
    for (int i = 0; n < sizeof big - 64; i++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "%s[%d]", i ? "," : "", i);
    }
    snprintf(big + n, sizeof big - n, "]}");
    script(200, big, NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 200000, "SELECT id", 9, NULL, 0);
    CHECK(strstr(a.bytes, "(over 2000") != NULL);
    CHECK(strstr(a.bytes, "does not fit the 200000-byte buffer") != NULL);
    script(200, big, NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 1000, "SELECT id", 9, NULL, 0);
    CHECK(strstr(a.bytes, "(about ") != NULL);
    CHECK(strstr(a.bytes, "does not fit the 1000-byte buffer") != NULL);
    script(200, big, NULL);
    a = call(&e, inv, JINN_SBX_DB_QUERY, 0, 600000, "SELECT id", 9, NULL, 0);
    CHECK(a.result == a.full && a.full > 300000 && a.full < 600000);
    CHECK(memcmp(a.bytes, "[{\"id\":0},{\"id\":1},", 19) == 0);
    jinn_wasm_inv_end(inv);
    env_stop(&e);
}

TEST(wasm_host_end_with_a_call_in_flight_never_replies)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct answer a = {0};
    CHECK(env_start(&e));
    inv = jinn_wasm_inv_begin(e.host, "f5", &e.settings, 2, "t");
    CHECK(inv != NULL);
    /* The lock is granted after the invocation ended: given back at once. */
    script(200, "{\"granted\":true,\"token\":5}", "5");
    script(200, "{\"released\":true}", "6");
    jinn_wasm_inv_call(inv, JINN_SBX_MUTEX_LOCK, 1, 0, "L", 1, NULL, 0, on_reply, &a);
    jinn_wasm_inv_end(inv);
    wait_seen(&e, 2);
    CHECK(!a.got);
    CHECK_INT(fake.n_seen, 2);
    CHECK_SAME(fake.seen[1].method, "DELETE");
    CHECK_SAME(fake.seen[1].target, "/v1/locks/L?token=5");

    /* Destroying the host with a call in flight: no reply, nothing leaks. */
    inv = jinn_wasm_inv_begin(e.host, "f5", &e.settings, 3, "t");
    CHECK(inv != NULL);
    jinn_wasm_inv_call(inv, JINN_SBX_KV_GET, 0, 16, "k", 1, NULL, 0, on_reply, &a);
    env_stop(&e);
    CHECK(!a.got);
}

TEST(wasm_host_metrics_name_every_series)
{
    struct env e;
    struct jinn_wasm_inv *inv;
    struct jinn_wbuf w;
    CHECK(env_start(&e));
    inv = jinn_wasm_inv_begin(e.host, "fm", &e.settings, 1, "t");
    CHECK(inv != NULL);
    CHECK_INT(call(&e, inv, JINN_SBX_KV_GET, 0, 16, "", 0, NULL, 0).result, FAIL32);
    jinn_wasm_inv_end(inv);
    jinn_wbuf_init(&w);
    jinn_wasm_host_metrics(e.host, &w);
    jinn_wbuf_put_u8(&w, 0);
    CHECK(!w.failed);
    CHECK(strstr((char *)w.data,
                 "jinn_fn_host_calls_total{function=\"fm\",call=\"host_kv_get\"} 1\n"));
    CHECK(strstr((char *)w.data, "jinn_fn_host_denied_total{function=\"fm\"} 1\n"));
    CHECK(strstr((char *)w.data, "jinn_fn_host_fenced_out_total{function=\"fm\"} 0\n"));
    jinn_wbuf_free(&w);
    env_stop(&e);
}
