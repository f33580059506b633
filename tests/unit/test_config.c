/* test_config.c - the config parser: good files, and every kind of bad one
 * reported with the right line and column. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "error.h"
#include "unit.h"

static const char example[] =
    "# a three-node cluster\n"
    "{\n"
    "    server_name      n1\n"
    "    data_dir         ./data/n1\n"
    "    http_listen      127.0.0.1:8081\n"
    "    cluster_name     demo\n"
    "    cluster_listen   127.0.0.1:7001\n"
    "    cluster_peers    n1=127.0.0.1:7001 n2=127.0.0.1:7002 n3=127.0.0.1:7003\n"
    "    cluster_replicas 3\n"
    "    consensus {\n"
    "        payments { mode cp  stale_reads false }\n"
    "        sessions { mode ap  stale_reads true }\n"
    "    }\n"
    "}\n";

TEST(config_example_parses)
{
    struct jinn_config cfg;
    struct jinn_config_error err;
    struct jinn_policy p;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", example, sizeof example - 1, &err), 0);
    CHECK_STR(cfg.server_name, "n1");
    CHECK_STR(cfg.data_dir, "./data/n1");
    CHECK_STR(cfg.http_listen, "127.0.0.1:8081");
    CHECK_STR(cfg.cluster_name, "demo");
    CHECK_INT(cfg.n_peers, 3);
    CHECK_STR(cfg.peers[2].name, "n3");
    CHECK_STR(cfg.peers[2].address, "127.0.0.1:7003");
    CHECK_INT(cfg.replicas, 3);
    CHECK_INT(cfg.n_policies, 2);
    p = jinn_config_policy(&cfg, "sessions");
    CHECK_INT(p.mode, JINN_MODE_AP);
    CHECK(p.stale_reads);
    p = jinn_config_policy(&cfg, "payments");
    CHECK_INT(p.mode, JINN_MODE_CP);
    CHECK(!p.stale_reads);
    p = jinn_config_policy(&cfg, "unlisted");
    CHECK_INT(p.mode, JINN_MODE_CP); /* the safe default */
    CHECK_INT(jinn_config_self(&cfg), 0);
    jinn_config_free(&cfg);
}

TEST(config_queues)
{
    static const char text[] = "{\n  queues {\n    jobs { ack_wait 10s  max_deliver 3\n"
                               "      backoff 100ms 1s 10s  max_length 50  max_bytes 1MiB\n"
                               "      idempotency_window 5m }\n    other { }\n  }\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    struct jinn_queue_policy q;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, sizeof text - 1, &err), 0);
    q = jinn_config_queue(&cfg, "jobs");
    CHECK_INT(q.ack_wait_ms, 10000);
    CHECK_INT(q.max_deliver, 3);
    CHECK_INT(q.n_backoff, 3);
    CHECK_INT(q.backoff_ms[2], 10000);
    CHECK_INT(q.max_length, 50);
    CHECK_INT(q.max_bytes, 1048576);
    CHECK_INT(q.idempotency_window_ms, 300000);
    q = jinn_config_queue(&cfg, "other"); /* listed without options: defaults */
    CHECK_INT(q.ack_wait_ms, 30000);
    CHECK_INT(q.max_deliver, 5);
    q = jinn_config_queue(&cfg, "unlisted");
    CHECK_INT(q.n_backoff, 3);
    jinn_config_free(&cfg);
}

TEST(config_defaults_single_node)
{
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", "", 0, &err), 0);
    CHECK_INT(cfg.n_peers, 1);
    CHECK_STR(cfg.peers[0].name, "jinn");
    CHECK_STR(cfg.http_listen, "127.0.0.1:8080");
    CHECK_STR(cfg.data_dir, "./jinn-data");
    CHECK_INT(cfg.replicas, 1);
    jinn_config_free(&cfg);
}

TEST(config_env_quotes_durations)
{
    static const char text[] = "{\n server_name {env.JINN_TEST_NAME}\n"
                               " data_dir \"/tmp/with space/{env.JINN_TEST_NAME}\"\n"
                               " election_timeout 1s\n heartbeat_timeout 100ms\n"
                               " request_timeout 2m\n max_body 64KiB\n"
                               " consensus {\n  cache {\n   mode ap\n   max_staleness 10s\n  }\n }\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    setenv("JINN_TEST_NAME", "edge-7", 1);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, sizeof text - 1, &err), 0);
    CHECK_STR(cfg.server_name, "edge-7");
    CHECK_STR(cfg.data_dir, "/tmp/with space/edge-7");
    CHECK_INT(cfg.election_timeout_ms, 1000);
    CHECK_INT(cfg.heartbeat_timeout_ms, 100);
    CHECK_INT(cfg.request_timeout_ms, 120000);
    CHECK_INT(cfg.max_body_bytes, 65536);
    CHECK_INT(cfg.policies[0].max_staleness_ms, 10000);
    CHECK(cfg.policies[0].stale_reads); /* ap defaults to stale reads */
    jinn_config_free(&cfg);
}

struct bad_case {
    const char *text;
    int line, column;
    const char *needle;
};

static const struct bad_case bad_cases[] = {
    {"{\n  servr_name n1\n}\n", 2, 3, "unknown directive 'servr_name'"},
    {"{\n  server_name\n}\n", 2, 3, "missing argument"},
    {"{\n  server_name a b\n}\n", 2, 17, "unexpected argument 'b'"},
    {"{\n  cluster_replicas three\n}\n", 2, 20, "bad number"},
    {"{\n  cluster_replicas 0\n}\n", 2, 20, "out of range"},
    {"{\n  snapshot_trailing 0\n}\n", 2, 21, "out of range"},
    {"{\n  stream_coalesce 101ms\n}\n", 2, 19, "out of range"},
    {"{\n  election_timeout 5sec\n}\n", 2, 20, "bad duration"},
    {"{\n  election_timeout 5 s\n}\n", 2, 22, "unexpected argument 's'"},
    {"{\n  election_timeout 10ms\n}\n", 2, 20, "out of range"},
    {"{\n  request_timeout -1s\n}\n", 2, 19, "bad duration"},
    {"{\n  server_name n9\n  cluster_peers n1=127.0.0.1:7001 n2=127.0.0.1:7002\n}\n", 3, 3,
     "does not contain this node"},
    {"{\n  cluster_peers n1=127.0.0.1:99999\n}\n", 2, 17, "bad address"},
    {"{\n  cluster_peers n1:127.0.0.1:7001\n}\n", 2, 17, "expected name=ip:port"},
    {"{\n  server_name n1\n  cluster_peers n1=127.0.0.1:1 n1=127.0.0.1:2\n}\n", 3, 32,
     "duplicate peer"},
    {"{\n  http_listen localhost:80\n}\n", 2, 15, "bad address"},
    {"{\n  server_name \"unterminated\n}\n", 2, 15, "unterminated quoted string"},
    {"{\n  server_name n1\n", 1, 1, "unclosed '{'"},
    {"{\n  consensus {\n    pay { mode xp }\n  }\n}\n", 3, 16, "expected cp or ap"},
    {"{\n  consensus {\n    pay { mode cp  stale_reads true }\n  }\n}\n", 3, 32,
     "contradicts mode cp"},
    {"{\n  consensus {\n    pay { mode ap  colour blue }\n  }\n}\n", 3, 20,
     "unknown namespace option 'colour'"},
    {"{\n  consensus {\n    pay { stale_reads true }\n  }\n}\n", 3, 5, "needs a mode"},
    {"{\n  consensus {\n    pay { mode ap }\n    pay { mode cp }\n  }\n}\n", 4, 5,
     "configured twice"},
    {"{\n  server_name {env.JINN_SURELY_UNSET_VAR}\n}\n", 2, 15, "is not set"},
    {"{\n  server_name a\n  server_name b\n}\n", 3, 3, "given twice"},
    {"example.com {\n  respond hi\n}\n", 1, 1, "global options block"},
    {"{\n}\nexample.com\n", 3, 1, "after the global options block"},
    {"{\n  server_name bad/name\n}\n", 2, 15, "bad name"},
    {"{\n  cluster_peers n1=127.0.0.1:1\n  cluster_replicas 2\n  server_name n1\n}\n", 3, 3,
     "more than the 1 peers"},
    {"{\n  max_body 12XB\n}\n", 2, 12, "bad size"},
    {"{\n  debug maybe\n}\n", 2, 9, "expected true or false"},
    {"{\n  data_dir x {\n  }\n}\n", 2, 14, "takes no block"},
    {"{\n  queues {\n    jobs { color red }\n  }\n}\n", 3, 12, "unknown queue option"},
    {"{\n  queues {\n    jobs { backoff 1s soon }\n  }\n}\n", 3, 23, "unknown queue option 'soon'"},
    {"{\n  queues {\n    jobs { backoff 1s 5x }\n  }\n}\n", 3, 23, "bad duration"},
    {"{\n  queues {\n    jobs { max_deliver }\n  }\n}\n", 3, 12, "missing argument"},
    {"{\n  queues {\n    jobs { ack_wait 1s 2s }\n  }\n}\n", 3, 24, "unexpected argument"},
    {"{\n  queues {\n    a { }\n    a { }\n  }\n}\n", 4, 5, "configured twice"},
    {"{\n  queues {\n    jobs { max_deliver 0 }\n  }\n}\n", 3, 24, "out of range"},
};

TEST(config_bad_inputs_name_line_and_column)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *bc = &bad_cases[i];
        struct jinn_config cfg;
        struct jinn_config_error err;
        int rv;
        CHECK_INT(jinn_config_defaults(&cfg), 0);
        rv = jinn_config_parse(&cfg, "bad.conf", bc->text, strlen(bc->text), &err);
        jinn_config_free(&cfg);
        if (rv != JINN_ECONFIG || err.line != bc->line || err.column != bc->column ||
            strstr(err.message, bc->needle) == NULL) {
            fprintf(stderr, "  case %zu: rv %d at %d:%d: %s\n", i, rv, err.line, err.column,
                    err.message);
        }
        CHECK_INT(rv, JINN_ECONFIG);
        CHECK_STR(err.file, "bad.conf");
        CHECK_INT(err.line, bc->line);
        CHECK_INT(err.column, bc->column);
        CHECK(strstr(err.message, bc->needle) != NULL);
    }
}

TEST(config_nul_and_oversized)
{
    static const char with_nul[] = "{\n  server_name a\0b\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    char *big;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", with_nul, sizeof with_nul - 1, &err), JINN_ECONFIG);
    CHECK(strstr(err.message, "NUL") != NULL);
    jinn_config_free(&cfg);

    big = malloc(JINN_CONFIG_MAX_FILE + 2);
    CHECK(big != NULL);
    memset(big, ' ', JINN_CONFIG_MAX_FILE + 1);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", big, JINN_CONFIG_MAX_FILE + 1, &err), JINN_ECONFIG);
    CHECK(strstr(err.message, "larger than") != NULL);
    jinn_config_free(&cfg);
    free(big);
}

TEST(config_truncated_prefixes_never_crash)
{
    /* Every prefix of a valid file either parses or fails cleanly. */
    for (size_t n = 0; n < sizeof example - 1; n++) {
        struct jinn_config cfg;
        struct jinn_config_error err;
        int rv;
        CHECK_INT(jinn_config_defaults(&cfg), 0);
        rv = jinn_config_parse(&cfg, "t", example, n, &err);
        CHECK(rv == 0 || rv == JINN_ECONFIG);
        jinn_config_free(&cfg);
    }
}

TEST(config_out_of_memory_is_clean)
{
    /* Fail each allocation in turn: never a crash or leak, always ENOMEM
     * or success. */
    for (long n = 0; n < 400; n++) {
        struct jinn_config cfg;
        struct jinn_config_error err;
        int rv;
        jinn_alloc_fail_reset();
        if (jinn_config_defaults(&cfg) != 0) {
            jinn_config_free(&cfg);
            continue;
        }
        jinn_alloc_fail_after(n);
        rv = jinn_config_parse(&cfg, "t", example, sizeof example - 1, &err);
        jinn_alloc_fail_reset();
        jinn_config_free(&cfg);
        CHECK(rv == 0 || rv == JINN_ENOMEM);
        if (rv == 0) {
            return; /* n was past the last allocation */
        }
    }
    CHECK(!"parse never succeeded");
}

TEST(config_value_parsers)
{
    uint64_t v;
    CHECK_INT(jinn_parse_duration("500ms", &v), 0);
    CHECK_INT(v, 500);
    CHECK_INT(jinn_parse_duration("2h", &v), 0);
    CHECK_INT(v, 7200000);
    CHECK(jinn_parse_duration("", &v) != 0);
    CHECK(jinn_parse_duration("ms", &v) != 0);
    CHECK(jinn_parse_duration("1.5s", &v) != 0);
    CHECK(jinn_parse_duration("99999999999999999999s", &v) != 0);
    CHECK_INT(jinn_parse_size("1MiB", &v), 0);
    CHECK_INT(v, 1048576);
    CHECK_INT(jinn_parse_size("100", &v), 0);
    CHECK_INT(v, 100);
    CHECK(jinn_parse_size("1TB", &v) != 0);
    CHECK_INT(jinn_parse_hostport("127.0.0.1:1"), 0);
    CHECK(jinn_parse_hostport("127.0.0.1:0") != 0);
    CHECK(jinn_parse_hostport("127.0.0.1") != 0);
    CHECK(jinn_parse_hostport(":80") != 0);
    CHECK(jinn_parse_hostport("1.2.3.4:80x") != 0);
}

/* http_advertise: the URL's shape is checked at parse (with position); a
 * host name is resolved by jinn_config_resolve (startup), not the parser. */
TEST(config_http_advertise)
{
    static const char *const bad[] = {"http://", "http://:8080", "http://h", "http://h:0",
                                      "http://h:65536", "http://h:80/x", "https://h:80",
                                      "http://a b:80", "http://[::1]:80"};
    struct jinn_config cfg;
    struct jinn_config_error err;
    char text[128];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int n = snprintf(text, sizeof text, "{\n    http_advertise \"%s\"\n}\n", bad[i]);
        CHECK_INT(jinn_config_defaults(&cfg), 0);
        CHECK_INT(jinn_config_parse(&cfg, "t", text, (size_t)n, &err), JINN_ECONFIG);
        CHECK_INT(err.line, 2);
        CHECK_INT(err.column, 20);
        jinn_config_free(&cfg);
    }

    /* A name is kept as given by the parser, and resolved once. */
    snprintf(text, sizeof text, "{\n    http_advertise http://localhost:8080/\n}\n");
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, strlen(text), &err), 0);
    CHECK_STR(cfg.http_advertise, "http://localhost:8080/");
    CHECK_INT(jinn_config_resolve(&cfg, &err), 0);
    CHECK_STR(cfg.http_advertise, "http://127.0.0.1:8080");
    jinn_config_free(&cfg);

    /* An address is left alone; a name that does not resolve is refused
     * at the directive's position (.invalid never resolves: RFC 6761). */
    snprintf(text, sizeof text, "{\n  http_advertise http://10.1.2.3:80\n}\n");
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, strlen(text), &err), 0);
    CHECK_INT(jinn_config_resolve(&cfg, &err), 0);
    CHECK_STR(cfg.http_advertise, "http://10.1.2.3:80");
    jinn_config_free(&cfg);
    snprintf(text, sizeof text, "{\n  http_advertise http://jinn-test.invalid:80\n}\n");
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, strlen(text), &err), 0);
    CHECK_INT(jinn_config_resolve(&cfg, &err), JINN_ECONFIG);
    CHECK_INT(err.line, 2);
    CHECK_INT(err.column, 18);
    jinn_config_free(&cfg);
}

TEST(config_cluster_tls)
{
    static const char text[] = "{\n  cluster_tls {\n    cert a.crt\n    key a.key\n"
                               "    ca ca.crt\n  }\n}\n";
    static const char partial[] = "{\n  cluster_tls {\n    cert a.crt\n  }\n}\n";
    static const char unknown[] = "{\n  cluster_tls {\n    cert a.crt\n    pin x\n  }\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK(cfg.cluster_tls_cert == NULL);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, sizeof text - 1, &err), 0);
    CHECK_STR(cfg.cluster_tls_cert, "a.crt");
    CHECK_STR(cfg.cluster_tls_key, "a.key");
    CHECK_STR(cfg.cluster_tls_ca, "ca.crt");
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", partial, sizeof partial - 1, &err), JINN_ECONFIG);
    CHECK(strstr(err.message, "needs cert, key and ca") != NULL);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", unknown, sizeof unknown - 1, &err), JINN_ECONFIG);
    CHECK_INT(err.line, 4);
    jinn_config_free(&cfg);
}

TEST(config_cluster_tls_pins)
{
    static const char text[] =
        "{\n  cluster_tls {\n    cert a.crt\n    key a.key\n    ca ca.crt\n"
        "    pin n3 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
        "00112233445566778899aabbccddeeff\n  }\n}\n";
    static const char bad[] = "{\n  cluster_tls {\n    cert a.crt\n    key a.key\n"
                              "    ca ca.crt\n    pin n3 0011\n  }\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, sizeof text - 1, &err), 0);
    CHECK_INT(cfg.n_cluster_tls_pins, 1);
    CHECK_STR(cfg.cluster_tls_pins[0].name, "n3");
    CHECK_INT(cfg.cluster_tls_pins[0].sha256[0], 0x00);
    CHECK_INT(cfg.cluster_tls_pins[0].sha256[10], 0xaa);
    CHECK_INT(cfg.cluster_tls_pins[0].sha256[31], 0xff);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", bad, sizeof bad - 1, &err), JINN_ECONFIG);
    CHECK(strstr(err.message, "64 hex digits") != NULL);
    jinn_config_free(&cfg);
}

TEST(config_job_result_retention)
{
    static const char text[] = "{\n job_result_ttl 10m\n job_results_max_bytes 1MiB\n}\n";
    static const char bad[] = "{\n job_result_ttl 100ms\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK(cfg.job_result_ttl_ms == 3600000 && cfg.job_results_max_bytes == (64u << 20));
    CHECK_INT(jinn_config_parse(&cfg, "t", text, sizeof text - 1, &err), 0);
    CHECK(cfg.job_result_ttl_ms == 600000 && cfg.job_results_max_bytes == (1u << 20));
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK(jinn_config_parse(&cfg, "t", bad, sizeof bad - 1, &err) != 0);
    jinn_config_free(&cfg);
}

TEST(config_http_tls_and_insecure)
{
    static const char text[] = "{\n  http_tls {\n    cert a.crt\n    key a.key\n"
                               "    client_ca c.crt\n  }\n  insecure true\n}\n";
    static const char partial[] = "{\n  http_tls {\n    key a.key\n  }\n}\n";
    static const char unknown[] = "{\n  http_tls {\n    cert a.crt\n    ca x\n  }\n}\n";
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK(cfg.http_tls_cert == NULL && !cfg.insecure);
    CHECK_INT(jinn_config_parse(&cfg, "t", text, sizeof text - 1, &err), 0);
    CHECK_STR(cfg.http_tls_cert, "a.crt");
    CHECK_STR(cfg.http_tls_key, "a.key");
    CHECK_STR(cfg.http_tls_client_ca, "c.crt");
    CHECK(cfg.insecure);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", partial, sizeof partial - 1, &err), JINN_ECONFIG);
    CHECK(strstr(err.message, "needs cert and key") != NULL);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", unknown, sizeof unknown - 1, &err), JINN_ECONFIG);
    CHECK_INT(err.line, 4);
    CHECK(strstr(err.message, "client_ca") != NULL);
    jinn_config_free(&cfg);
}

/* The job worker pools' node settings (wasm/jobs.c): defaults, 0 allowed
 * (a node that runs no jobs), bounds. */
TEST(config_job_workers_and_grace)
{
    static const char ok[] = "{\n  job_workers 0\n  job_grace 2s\n}\n";
    static const char *const bad[] = {"{\n  job_workers 1025\n}\n", "{\n  job_grace 2h\n}\n",
                                      "{\n  job_workers -1\n}\n", "{\n  job_grace soon\n}\n"};
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", "", 0, &err), 0);
    CHECK_INT(cfg.job_workers, 16);
    CHECK_INT(cfg.job_grace_ms, 10000);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", ok, strlen(ok), &err), 0);
    CHECK_INT(cfg.job_workers, 0);
    CHECK_INT(cfg.job_grace_ms, 2000);
    jinn_config_free(&cfg);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(jinn_config_defaults(&cfg), 0);
        CHECK_INT(jinn_config_parse(&cfg, "t", bad[i], strlen(bad[i]), &err), JINN_ECONFIG);
        CHECK_INT(err.line, 2);
        jinn_config_free(&cfg);
    }
}

/* The stream feed's keys (net/stream.h): defaults, values, bounds. */
TEST(config_stream_keys)
{
    static const char ok[] = "{\n  stream_heartbeat 50ms\n  stream_max_replicas 0\n"
                             "  stream_buffer_bytes 8MiB\n  stream_max_lag_bytes 2MiB\n}\n";
    static const char *const bad[] = {
        "{\n  stream_heartbeat 5ms\n}\n",       "{\n  stream_heartbeat 2m\n}\n",
        "{\n  stream_max_replicas -1\n}\n",     "{\n  stream_buffer_bytes 1KiB\n}\n",
        "{\n  stream_max_lag_bytes 100\n}\n",   "{\n  stream_max_replicas many\n}\n"};
    struct jinn_config cfg;
    struct jinn_config_error err;
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", "", 0, &err), 0);
    CHECK_INT(cfg.stream_heartbeat_ms, 200);
    CHECK_INT(cfg.stream_max_replicas, 64);
    CHECK(cfg.stream_buffer_bytes == 64u << 20);
    CHECK(cfg.stream_max_lag_bytes == 32u << 20);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", ok, strlen(ok), &err), 0);
    CHECK_INT(cfg.stream_heartbeat_ms, 50);
    CHECK_INT(cfg.stream_max_replicas, 0);
    CHECK(cfg.stream_buffer_bytes == 8u << 20);
    CHECK(cfg.stream_max_lag_bytes == 2u << 20);
    jinn_config_free(&cfg);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(jinn_config_defaults(&cfg), 0);
        CHECK_INT(jinn_config_parse(&cfg, "t", bad[i], strlen(bad[i]), &err), JINN_ECONFIG);
        CHECK_INT(err.line, 2);
        jinn_config_free(&cfg);
    }
}
