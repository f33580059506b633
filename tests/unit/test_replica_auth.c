/* test_replica_auth.c - an edge replica never holds the cluster's internal
 * key (K1): the stream's snapshot and TOKEN_PUT records carry R in its
 * place, a replica's state digests as the voters' redacted digest, the
 * replica refuses node and function credentials (token hashes still work)
 * and fetches its check verdict with its replica_token. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc.h"
#include "api/api.h"
#include "codec.h"
#include "config.h"
#include "error.h"
#include "fetch.h"
#include "fsm/auth.h"
#include "fsm/cmd.h"
#include "fsm/digest.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "http.h"
#include "node.h"
#include "unit.h"

static const uint8_t KEY[JINN_AUTH_KEY_LEN] = {0x4b, 0x31, 0x9a, 0x07, 0xee, 0x12, 0x5c, 0x61,
                                               0x22, 0x90, 0x3d, 0x48, 0x7f, 0x01, 0xab, 0xcd,
                                               0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
                                               0xdd, 0xee, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50};
static const uint8_t SALT[JINN_AUTH_SALT_LEN] = {3, 1, 4, 1, 5, 9, 2, 6};
/* the token's full credential, as POST /v1/tokens would hand it out */
static const char CRED[] =
    "jinn.edge.00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static struct jinn_cmd token_put(uint8_t *hash, bool with_key)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    jinn_auth_hash(SALT, CRED, strlen(CRED), hash);
    c.type = JINN_CMD_TOKEN_PUT;
    c.token.name = (struct jinn_slice){(const uint8_t *)"edge", 4};
    c.token.salt = (struct jinn_slice){SALT, JINN_AUTH_SALT_LEN};
    c.token.hash = (struct jinn_slice){hash, JINN_AUTH_HASH_LEN};
    c.token.rules = (struct jinn_slice){(const uint8_t *)"cluster:admin", 13};
    if (with_key) {
        c.token.key = (struct jinn_slice){KEY, JINN_AUTH_KEY_LEN};
    }
    c.token.flags = JINN_CMD_TOKEN_BOOTSTRAP;
    return c;
}

static struct jinn_cmd kv_put(const char *key, const char *value)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_KV_PUT;
    c.kv.ns = (struct jinn_slice){(const uint8_t *)"app", 3};
    c.kv.key = (struct jinn_slice){(const uint8_t *)key, strlen(key)};
    c.kv.value = (struct jinn_slice){(const uint8_t *)value, strlen(value)};
    return c;
}

static int encode(struct jinn_cmd *c, uint64_t time, struct jinn_wbuf *w)
{
    c->time_ms = time;
    jinn_wbuf_init(w);
    return jinn_cmd_encode(c, w);
}

/* What the node side of the stream does to a record (net/stream.c). */
static void redact_entry(uint8_t *buf, size_t len)
{
    size_t off;
    if (jinn_auth_entry_key_offset(buf, len, &off)) {
        jinn_auth_replica_key(buf + off, buf + off);
    }
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    return memmem(hay, n, needle, m) != NULL;
}

TEST(replica_auth_stream_redacts_snapshot_and_token_put)
{
    struct jinn_fsm voter, from_snap, from_records;
    struct jinn_wbuf e1, e2, snap, plain;
    struct jinn_sql_pin *pin;
    struct jinn_fns_pin *fns_pin;
    struct jinn_cmd c;
    uint8_t hash[JINN_AUTH_HASH_LEN], r[JINN_AUTH_KEY_LEN];
    size_t off;

    CHECK_INT(jinn_auth_replica_key(KEY, r), 0);
    CHECK(memcmp(r, KEY, sizeof r) != 0);
    jinn_fsm_init(&voter);
    jinn_fsm_init(&from_snap);
    jinn_fsm_init(&from_records);

    /* the first TOKEN_PUT carries the key; the redacted record carries R
     * at the same place, every other byte the same */
    c = token_put(hash, true);
    CHECK_INT(encode(&c, 100, &e1), 0);
    CHECK(jinn_auth_entry_key_offset(e1.data, e1.len, &off));
    CHECK(off + JINN_AUTH_KEY_LEN <= e1.len && memcmp(e1.data + off, KEY, sizeof KEY) == 0);
    c = kv_put("k", "v");
    CHECK_INT(encode(&c, 110, &e2), 0);
    CHECK(!jinn_auth_entry_key_offset(e2.data, e2.len, &off));
    CHECK(jinn_fsm_apply_buf(&voter, 1, e1.data, e1.len)->code == 0);
    CHECK(jinn_fsm_apply_buf(&voter, 2, e2.data, e2.len)->code == 0);
    CHECK(voter.auth.has_key && memcmp(voter.auth.key, KEY, sizeof KEY) == 0);
    redact_entry(e1.data, e1.len);
    redact_entry(e2.data, e2.len);
    CHECK(!contains(e1.data, e1.len, KEY, sizeof KEY) &&
          contains(e1.data, e1.len, r, sizeof r));
    CHECK(jinn_fsm_apply_buf(&from_records, 1, e1.data, e1.len)->code == 0);
    CHECK(jinn_fsm_apply_buf(&from_records, 2, e2.data, e2.len)->code == 0);
    CHECK(from_records.auth.has_key && memcmp(from_records.auth.key, r, sizeof r) == 0);

    /* the stream's snapshot: R, never the key; raft's keeps the key */
    jinn_wbuf_init(&snap);
    CHECK_INT(jinn_fsm_encode_begin_redacted(&voter, &snap, &pin, &fns_pin), 0);
    CHECK_INT(jinn_fsm_encode_finish(pin, fns_pin, &snap), 0);
    jinn_sql_pin_free(pin);
    jinn_fns_pin_free(fns_pin);
    CHECK(!contains(snap.data, snap.len, KEY, sizeof KEY));
    CHECK(contains(snap.data, snap.len, r, sizeof r));
    jinn_wbuf_init(&plain);
    CHECK_INT(jinn_fsm_encode(&voter, &plain), 0);
    CHECK(contains(plain.data, plain.len, KEY, sizeof KEY));
    CHECK(!contains(plain.data, plain.len, r, sizeof r));
    CHECK_INT(plain.len, snap.len); /* the format is unchanged */
    CHECK_INT(jinn_fsm_decode(&from_snap, snap.data, snap.len), 0);
    CHECK(from_snap.auth.has_key && memcmp(from_snap.auth.key, r, sizeof r) == 0);
    /* token checks (salted hashes) work on what a replica holds */
    CHECK(jinn_auth_check(&from_snap.auth, "edge", 4, CRED, strlen(CRED), 1) != NULL);
    CHECK(jinn_auth_check(&from_records.auth, "edge", 4, CRED, strlen(CRED), 1) != NULL);

    /* the digests: a replica's state digests as the voters' redacted digest
     * (computed from their capture), and differs from their own */
    {
        struct jinn_digest_capture cap;
        struct jinn_digest dv, ds, dr;
        uint64_t auth, redacted;
        bool present;
        CHECK_INT(jinn_digest_capture(&voter, &cap), 0);
        jinn_digest_from_capture(&cap, 2, &dv);
        CHECK_INT(jinn_digest_capture_auth_redacted(&cap, &present, &auth), 0);
        jinn_digest_capture_free(&cap);
        CHECK(present);
        jinn_digest_finish(&dv);
        redacted = jinn_digest_total_with_auth(&dv, auth);
        CHECK_INT(jinn_digest_memory(&from_snap, 2, &ds), 0);
        jinn_digest_finish(&ds);
        CHECK_INT(jinn_digest_memory(&from_records, 2, &dr), 0);
        jinn_digest_finish(&dr);
        CHECK(ds.total == redacted && dr.total == redacted);
        CHECK(dv.total != redacted);
        /* the voter's own digest is what it was */
        {
            struct jinn_digest again;
            CHECK_INT(jinn_digest_memory(&voter, 2, &again), 0);
            jinn_digest_finish(&again);
            CHECK(again.total == dv.total);
        }
    }
    jinn_wbuf_free(&e1);
    jinn_wbuf_free(&e2);
    jinn_wbuf_free(&snap);
    jinn_wbuf_free(&plain);
    jinn_fsm_close(&voter);
    jinn_fsm_close(&from_snap);
    jinn_fsm_close(&from_records);
}

/* Without a key (no tokens, or tokens only), redacting changes nothing. */
TEST(replica_auth_redacted_digest_equals_plain_without_key)
{
    struct jinn_fsm f;
    struct jinn_digest_capture cap;
    struct jinn_digest d;
    struct jinn_cmd c = kv_put("k", "v");
    uint64_t auth;
    bool present;
    jinn_fsm_init(&f);
    CHECK(unit_apply(&f, 1, 100, c)->code == 0);
    CHECK_INT(jinn_digest_capture(&f, &cap), 0);
    jinn_digest_from_capture(&cap, 1, &d);
    CHECK_INT(jinn_digest_capture_auth_redacted(&cap, &present, &auth), 0);
    jinn_digest_capture_free(&cap);
    jinn_digest_finish(&d);
    CHECK(!present);
    CHECK(jinn_digest_total_with_auth(&d, auth) == d.total);
    jinn_fsm_close(&f);
}

/* ---- a replica node: credentials and the verdict fetch --------------------- */

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&a, 0, sizeof a);
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

static struct {
    unsigned check_asks;
    char auth[256];
    char majority[17], majority_redacted[17]; /* "" = left out of the answer */
} leader_saw;

static void fake_leader(void *data, struct jinn_http_request *req)
{
    const struct jinn_http_header *h = jinn_http_header_find(&req->msg, "authorization");
    (void)data;
    leader_saw.check_asks++;
    snprintf(leader_saw.auth, sizeof leader_saw.auth, "%.*s", h ? (int)h->value_len : 0,
             h ? h->value : "");
    json_t *o = json_pack("{s:I, s:s, s:b, s:[]}", "index", (json_int_t)3, "state", "agreed",
                          "done", 1, "nodes");
    if (leader_saw.majority[0] != '\0') {
        json_object_set_new(o, "majority", json_string(leader_saw.majority));
    }
    if (leader_saw.majority_redacted[0] != '\0') {
        json_object_set_new(o, "majority_redacted", json_string(leader_saw.majority_redacted));
    }
    jinn_http_reply_json(req, 200, o);
}

struct answer {
    bool got;
    int status;
    char body[512];
};

static void answered(void *data, int code, const struct jinn_http_msg *head, const char *body,
                     size_t len)
{
    struct answer *a = data;
    (void)code;
    a->got = true;
    a->status = head ? head->status : 0;
    snprintf(a->body, sizeof a->body, "%.*s", (int)len, body ? body : "");
}

static void api_applied(void *data, uint64_t index)
{
    jinn_api_kv_applied(data, index);
}

static void stopped(void *data)
{
    *(bool *)data = true;
}

#define RUN_UNTIL(loop, cond, deadline_ms)                                                     \
    do {                                                                                       \
        uint64_t until_ = uv_now(loop) + (deadline_ms);                                        \
        while (!(cond) && uv_now(loop) < until_) {                                             \
            uv_run((loop), UV_RUN_ONCE);                                                       \
        }                                                                                      \
    } while (0)

static void hexs(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    }
}

static int get(uv_loop_t *loop, const char *url, const char *target, const char *cred,
               struct answer *a)
{
    char headers[512];
    snprintf(headers, sizeof headers, "Authorization: Bearer %s\r\n", cred);
    memset(a, 0, sizeof *a);
    if (jinn_fetch(loop, url, "GET", target, strlen(target), headers, NULL, 0, 5000, answered,
                   a) != 0) {
        return -1;
    }
    RUN_UNTIL(loop, a->got, 5000);
    return a->status;
}

/* What the fake leader publishes for the round (check index 3). */
enum published { PUB_NONE, PUB_PLAIN, PUB_REDACTED, PUB_OTHER };

static void set_published(char out[17], enum published what, uint64_t plain, uint64_t redacted)
{
    uint64_t v = what == PUB_PLAIN ? plain : what == PUB_REDACTED ? redacted : 0xff;
    if (what == PUB_NONE) {
        out[0] = '\0';
    } else {
        snprintf(out, 17, "%016llx", (unsigned long long)v);
    }
}

/* A replica node fed the records 1-3 (TOKEN_PUT, KV_PUT, CHECK), redacted
 * as the stream sends them (or not: a node of an older build), whose check
 * verdict says majority / majority_redacted. creds: also try credentials. */
static void replica_case(bool redact, enum published majority, enum published redacted_pub,
                         bool want_diverged, bool creds)
{
    uv_loop_t loop;
    struct jinn_config cfg;
    struct jinn_node *node = NULL;
    struct jinn_api api;
    struct jinn_http_server *leader = NULL;
    struct jinn_http_config hc;
    struct jinn_replica_heartbeat hb;
    struct jinn_cmd c;
    struct jinn_wbuf w;
    struct answer a;
    char dir[64], listen_l[32], listen_r[32], leader_url[64], replica_url[64];
    char cred[256], hex[2 * JINN_AUTH_KEY_LEN + 1], mac_hex[65];
    uint8_t hash[JINN_AUTH_HASH_LEN], r[JINN_AUTH_KEY_LEN], mac[32];
    unsigned mac_len = 0;
    bool l_stopped = false, r_stopped = false, n_stopped = false;
    uint64_t redacted = 0, plain = 0;

    memset(&leader_saw, 0, sizeof leader_saw);
    snprintf(dir, sizeof dir, "/tmp/jinn-k1-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(jinn_config_replica_defaults(&cfg), 0);
    jinn_free(cfg.data_dir);
    cfg.data_dir = jinn_strdup(dir);
    cfg.replica_token = jinn_strdup(CRED);
    CHECK_INT(jinn_node_create_replica(&loop, &cfg, &node), 0);
    CHECK_INT(jinn_node_start(node), 0);
    CHECK_INT(jinn_auth_replica_key(KEY, r), 0);

    /* what the voters' redacted digest at the CHECK (3) is */
    {
        struct jinn_fsm v;
        struct jinn_digest_capture cap;
        struct jinn_digest d;
        uint64_t auth;
        bool present;
        jinn_fsm_init(&v);
        CHECK(unit_apply(&v, 1, 100, token_put(hash, true))->code == 0);
        CHECK(unit_apply(&v, 2, 110, kv_put("k", "v"))->code == 0);
        memset(&c, 0, sizeof c);
        c.type = JINN_CMD_CHECK;
        CHECK(unit_apply(&v, 3, 120, c)->code == 0);
        CHECK_INT(jinn_digest_capture(&v, &cap), 0);
        jinn_digest_from_capture(&cap, 3, &d);
        CHECK_INT(jinn_digest_capture_auth_redacted(&cap, &present, &auth), 0);
        jinn_digest_capture_free(&cap);
        jinn_digest_finish(&d);
        redacted = jinn_digest_total_with_auth(&d, auth);
        plain = d.total;
        jinn_fsm_close(&v);
        set_published(leader_saw.majority, majority, plain, redacted);
        set_published(leader_saw.majority_redacted, redacted_pub, plain, redacted);
    }

    snprintf(listen_l, sizeof listen_l, "127.0.0.1:%d", free_port());
    snprintf(listen_r, sizeof listen_r, "127.0.0.1:%d", free_port());
    snprintf(leader_url, sizeof leader_url, "http://%s", listen_l);
    snprintf(replica_url, sizeof replica_url, "http://%s", listen_r);
    {
        char u[64]; /* the leader is a replica_of host: writes may be relayed to it */
        snprintf(u, sizeof u, "ws://%s", listen_l);
        cfg.replica_of[cfg.n_replica_of++] = jinn_strdup(u);
    }
    memset(&hc, 0, sizeof hc);
    hc.max_body = 1 << 20;
    hc.idle_timeout_ms = 10000;
    hc.read_timeout_ms = 10000;
    hc.max_connections = 64;
    hc.listen = listen_l;
    CHECK_INT(jinn_http_start(&loop, &hc, fake_leader, NULL, &leader), 0);
    jinn_api_init(&api, &loop, &cfg, node);
    hc.listen = listen_r;
    CHECK_INT(jinn_http_start(&loop, &hc, jinn_api_handle, &api, &api.http), 0);
    jinn_node_set_apply_hook(node, api_applied, &api);
    memset(&hb, 0, sizeof hb);
    hb.cluster_id = 0xabcdef0123456789u;
    hb.leader_id = 7;
    hb.term = 3;
    hb.commit = 3;
    hb.position = 3;
    hb.time_ms = 1000;
    hb.leader_name = "n1";
    hb.leader_api = leader_url;
    hb.node = "n2";
    hb.quorum = true;
    hb.leader_contact_ms = 20;
    jinn_node_replica_heartbeat(node, &hb);

    /* the records as the stream sends them: R in the TOKEN_PUT */
    c = token_put(hash, true);
    CHECK_INT(encode(&c, 100, &w), 0);
    if (redact) {
        redact_entry(w.data, w.len);
    }
    CHECK_INT(jinn_node_replica_apply(node, 1, 0, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    c = kv_put("k", "v");
    CHECK_INT(encode(&c, 110, &w), 0);
    CHECK_INT(jinn_node_replica_apply(node, 2, 1, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    CHECK(memcmp(jinn_node_fsm(node)->auth.key, redact ? r : KEY, sizeof r) == 0);
    hb.commit = hb.position = 2; /* fresh: it applied what the leader committed */
    jinn_node_replica_heartbeat(node, &hb);

    if (creds) {
        /* node credentials: neither the key nor R; function credentials: no */
        hexs(KEY, sizeof KEY, hex);
        snprintf(cred, sizeof cred, "jinn-node.%s", hex);
        CHECK_INT(get(&loop, replica_url, "/v1/kv/app/k", cred, &a), 401);
        hexs(r, sizeof r, hex);
        snprintf(cred, sizeof cred, "jinn-node.%s", hex);
        CHECK_INT(get(&loop, replica_url, "/v1/kv/app/k", cred, &a), 401);
        CHECK(HMAC(EVP_sha256(), r, sizeof r, (const uint8_t *)"fn:f", 4, mac, &mac_len) !=
              NULL);
        hexs(mac, sizeof mac, mac_hex);
        snprintf(cred, sizeof cred, "jinn-fn.f.%s", mac_hex);
        CHECK_INT(get(&loop, replica_url, "/v1/kv/app/k", cred, &a), 401);
        /* the token still works here */
        get(&loop, replica_url, "/v1/kv/app/k", CRED, &a);
        if (a.status != 200) {
            fprintf(stderr, "  token read: %d %s\n", a.status, a.body);
        }
        CHECK_INT(a.status, 200);
    }

    /* a CHECK at 3: the replica asks the leader with its replica_token and
     * judges its digest against the published ones */
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_CHECK;
    CHECK_INT(encode(&c, 120, &w), 0);
    CHECK_INT(jinn_node_replica_apply(node, 3, 2, w.data, w.len), 0);
    jinn_wbuf_free(&w);
    if (want_diverged) {
        RUN_UNTIL(&loop, jinn_api_check_diverged(&api), 5000);
        CHECK(jinn_api_check_diverged(&api));
    } else {
        uint64_t until = uv_now(&loop) + 5000;
        bool checked = false;
        while (!checked && uv_now(&loop) < until) {
            get(&loop, replica_url, "/v1/internal/digest?index=3", CRED, &a);
            checked = strstr(a.body, "\"verdict_checked\":true") != NULL;
        }
        if (!checked) {
            fprintf(stderr, "  digest: %s\n", a.body);
        }
        CHECK(checked);
    }
    CHECK(leader_saw.check_asks >= 1);
    snprintf(cred, sizeof cred, "Bearer %s", CRED);
    CHECK(strcmp(leader_saw.auth, cred) == 0);
    CHECK(jinn_api_check_diverged(&api) == want_diverged);
    if (!want_diverged && redact) {
        char mine[17];
        snprintf(mine, sizeof mine, "%016llx", (unsigned long long)redacted);
        CHECK(strstr(a.body, mine) != NULL); /* its digest is the voters' redacted one */
    }

    api.stopping = true;
    jinn_fetch_close_idle();
    jinn_api_queue_stop(&api);
    jinn_api_lock_stop(&api);
    jinn_api_index_stop(&api);
    jinn_api_sql_stop(&api);
    jinn_api_check_stop(&api);
    jinn_api_fn_stop(&api);
    uv_close((uv_handle_t *)&api.watch_kick, NULL);
    uv_close((uv_handle_t *)&api.auth_timer, NULL);
    jinn_http_stop(api.http, stopped, &r_stopped);
    jinn_http_stop(leader, stopped, &l_stopped);
    RUN_UNTIL(&loop, r_stopped && l_stopped, 5000);
    jinn_node_stop(node, stopped, &n_stopped);
    while (!n_stopped && uv_run(&loop, UV_RUN_ONCE) != 0) {
    }
    jinn_node_destroy(node);
    uv_loop_close(&loop);
    jinn_config_free(&cfg);
    snprintf(cred, sizeof cred, "rm -rf '%s'", dir);
    if (system(cred) != 0) {
        fprintf(stderr, "  could not remove %s\n", dir);
    }
}

TEST(replica_auth_refuses_node_fn_credentials_and_asks_verdict_with_its_token)
{
    /* the voters' own digest is not the replica's; their redacted one is */
    replica_case(true, PUB_OTHER, PUB_REDACTED, false, true);
}

TEST(replica_auth_verdict_against_redacted_and_plain_digests)
{
    /* the usual answer: plain and redacted, the replica matches the latter */
    replica_case(true, PUB_PLAIN, PUB_REDACTED, false, false);
    /* fed by a node of an older build it holds the key: the plain one matches */
    replica_case(false, PUB_PLAIN, PUB_REDACTED, false, false);
    /* a leader of an older build (no redacted digest): nothing to judge by */
    replica_case(true, PUB_PLAIN, PUB_NONE, false, false);
    /* a redacted digest that is not the replica's: diverged, halted */
    replica_case(true, PUB_PLAIN, PUB_OTHER, true, false);
}
