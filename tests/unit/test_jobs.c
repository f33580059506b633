/* test_jobs.c - jobs in the state machine (fsm/jobs.h) and the cron parser
 * (cron.h): JOB_ACK, JOB_CRON, FN_DEPLOY2, results' retention, snapshots. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "clock.h"
#include "cron.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"
#include "fsm/fsm.h"
#include "fsm/jobs.h"
#include "fsm_apply.h"
#include "unit.h"

/* (module (import "gojinn" "host_log" (func (param i32 i32 i32)))
 *         (memory (export "memory") 1) (func (export "_start"))) */
static const uint8_t hello[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x02, 0x60, 0x03,
    0x7f, 0x7f, 0x7f, 0x00, 0x60, 0x00, 0x00, 0x02, 0x13, 0x01, 0x06, 0x67, 0x6f,
    0x6a, 0x69, 0x6e, 0x6e, 0x08, 0x68, 0x6f, 0x73, 0x74, 0x5f, 0x6c, 0x6f, 0x67,
    0x00, 0x00, 0x03, 0x02, 0x01, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13,
    0x02, 0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73,
    0x74, 0x61, 0x72, 0x74, 0x00, 0x01, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

#define S(text) ((struct jinn_slice){(const uint8_t *)(text), strlen(text)})

/* ---- cron ------------------------------------------------------------------ */

TEST(cron_known_answers)
{
    static const struct {
        const char *expr;
        uint64_t after, next;
    } cases[] = {
        {"*/5 * * * *", 1795778550000ULL, 1795778700000ULL},   /* 11:22:30 -> 11:25 */
        {"0 0 31 * *", 1776211200000ULL, 1780185600000ULL},    /* April has no 31st */
        {"0 12 29 2 *", 1740787200000ULL, 1835438400000ULL},   /* 2025-03 -> 2028-02-29 */
        {"0 0 29 2 1", 1740787200000ULL, 1769990400000ULL},    /* Feb 29 OR Monday */
        {"0 0 * * 7", 1795737600000ULL, 1795910400000ULL},     /* 7 = Sunday */
        {"59 23 31 12 *", 1798761540000ULL, 1830297540000ULL}, /* strictly after */
        {"@hourly", 1795777200000ULL, 1795780800000ULL},
        {"@daily", 1795777200000ULL, 1795824000000ULL},
        {"1-10/2 * * * *", 1795781340000ULL, 1795784460000ULL}, /* 12:09 -> 13:01 */
        {"0 0 29 2 *", 3981398400000ULL, 4233686400000ULL},     /* 2100 is no leap year */
        {"0 9 * * 1-5", 1795773600000ULL, 1796029200000ULL},    /* Fri 10:00 -> Mon 9:00 */
        {"0 0 1,15 * 3", 1795737600000ULL, 1796083200000ULL},   /* the 1st OR Wednesday */
        {"0 0 * 2 */2", 1798761600000ULL, 1801526400000ULL},    /* `*` dow: AND rule */
        {"@every 30s", 1000, 30000},
        {"@every 30s", 30000, 60000},
        {"@every 5m", 0, 300000},
        {"@every 24h", 86400000, 172800000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = jinn_cron_next(cases[i].expr, cases[i].after);
        if (got != cases[i].next) {
            fprintf(stderr, "  %s after %llu: got %llu want %llu\n", cases[i].expr,
                    (unsigned long long)cases[i].after, (unsigned long long)got,
                    (unsigned long long)cases[i].next);
        }
        CHECK(got == cases[i].next);
    }
    /* Ticks move strictly forward, sub-minute offsets included. */
    CHECK(jinn_cron_next("* * * * *", 59999) == 60000);
    CHECK(jinn_cron_next("* * * * *", 60000) == 120000);
    /* Nothing after year 9999. */
    CHECK(jinn_cron_next("* * * * *", UINT64_MAX - 5) == 0);
    CHECK(jinn_cron_next("@every 1s", UINT64_MAX - 5) == 0);
}

TEST(cron_refuses_what_it_does_not_know)
{
    static const char *const bad[] = {
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 30 2 *",
        "0 0 31 4,6 *",
        "@every 0s",
        "@every 25h",
        "@every 86401s",
        "@every 5",
        "@every s",
        "@every 1d",
        "@every 10s ",
        "@yearly",
        "@weekly",
        "*/0 * * * *",
        "5-1 * * * *",
        "MON * * * *",
        "* * * * 8",
        "*  * * * *",
        "1,,2 * * * *",
        "1, * * * *",
        "* * * * * ",
        " * * * * *",
        "100 * * * *",
        "-1 * * * *",
        "1-2-3 * * * *",
        "*/5/2 * * * *",
        "* * * JAN *",
    };
    struct jinn_cron c;
    char err[160];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rv = jinn_cron_parse(bad[i], strlen(bad[i]), &c, err, sizeof err);
        if (rv != JINN_EINVAL) {
            fprintf(stderr, "  accepted: '%s'\n", bad[i]);
        }
        CHECK_INT(rv, JINN_EINVAL);
        CHECK(strncmp(err, "cron: ", 6) == 0);
        CHECK(jinn_cron_next(bad[i], 0) == 0);
    }
    CHECK_INT(jinn_cron_parse("0 0 1 1 0", 9, &c, err, sizeof err), 0);
    CHECK_INT(jinn_cron_parse("0-59/15 0,12 1-31 */3 0-7", 25, &c, err, sizeof err), 0);
    CHECK(c.dow == 0x7f);
    CHECK_INT(jinn_cron_parse("5/15 * * * *", 12, &c, err, sizeof err), 0);
    CHECK(c.minutes == ((1ull << 5) | (1ull << 20) | (1ull << 35) | (1ull << 50)));
}

TEST(cron_dates_and_iso8601)
{
    char iso[21];
    int64_t y;
    unsigned m, d;
    CHECK(jinn_days_from_civil(1970, 1, 1) == 0);
    CHECK(jinn_days_from_civil(2000, 3, 1) == 11017);
    CHECK(jinn_days_from_civil(1969, 12, 31) == -1);
    /* Round trip over 400 years around the epoch (every calendar case). */
    for (int64_t z = -73000; z < 73050; z += 1) {
        jinn_civil_from_days(z, &y, &m, &d);
        if (jinn_days_from_civil(y, m, d) != z) {
            CHECK(0);
            break;
        }
    }
    jinn_cron_iso8601(1835438400000ULL, iso);
    CHECK_STR(iso, "2028-02-29T12:00:00Z");
    jinn_cron_iso8601(0, iso);
    CHECK_STR(iso, "1970-01-01T00:00:00Z");
}

/* ---- commands ----------------------------------------------------------------- */

static struct jinn_cmd ack_cmd(const char *fn, const char *worker, uint64_t seq,
                               uint64_t delivery, const char *response)
{
    static char queue[80];
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    snprintf(queue, sizeof queue, "WORKERS_%s", fn);
    c.type = JINN_CMD_JOB_ACK;
    c.job.queue = S(queue);
    c.job.n = 1;
    c.job.item[0].worker = S(worker);
    c.job.item[0].seq = seq;
    c.job.item[0].delivery = delivery;
    c.job.item[0].status = 200;
    c.job.item[0].response = S(response);
    c.job.keep_ms = 3600000;
    c.job.keep_bytes = 64u << 20;
    return c;
}

/* A one-ack JOB_ACK's outcome: the entry's code, else its ack's. */
static int ack_code(struct jinn_fsm *fsm, uint64_t index, uint64_t time, struct jinn_cmd c)
{
    const struct jinn_result *res = unit_apply(fsm, index, time, c);
    if (res->code != JINN_OK) {
        return res->code;
    }
    /* Shape errors show as a code no caller expects. */
    if (fsm->jobs.n_acked != 1 || res->value != (fsm->jobs.acked[0] == JINN_OK)) {
        return -1000;
    }
    return fsm->jobs.acked[0];
}

static struct jinn_cmd cron_cmd(const char *fn, uint64_t tick)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_JOB_CRON;
    c.cron.name = S(fn);
    c.cron.tick_ms = tick;
    c.cron.max_length = 100;
    c.cron.max_bytes = 1 << 20;
    c.cron.max_deliver = 5;
    return c;
}

static bool round_trips(struct jinn_cmd c)
{
    struct jinn_wbuf w;
    struct jinn_cmd d;
    bool ok;
    jinn_wbuf_init(&w);
    ok = jinn_cmd_encode(&c, &w) == 0 && jinn_cmd_decode(w.data, w.len, &d) == 0 &&
         d.type == c.type;
    /* Every truncation is refused. */
    for (size_t n = 0; ok && n + 8 <= w.len; n += 8) {
        ok = jinn_cmd_decode(w.data, n, &d) != 0;
    }
    jinn_wbuf_free(&w);
    return ok;
}

TEST(jobs_cmd_round_trip_and_limits)
{
    struct jinn_cmd c = ack_cmd("thumb", "n1/thumb/0", 7, 2, "{\"ok\":true}"), d;
    struct jinn_wbuf w;
    static uint8_t sig[64], big[JINN_JOB_RESULT_MAX + 1];

    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK(d.job.n == 1 && d.job.item[0].seq == 7 && d.job.item[0].delivery == 2 &&
          d.job.item[0].status == 200 && d.job.keep_ms == 3600000 &&
          d.job.item[0].response.len == 11 &&
          memcmp(d.job.queue.p, "WORKERS_thumb", 13) == 0);
    CHECK_STR(jinn_cmd_type_name(JINN_CMD_JOB_ACK), "job_ack");
    jinn_wbuf_free(&w);
    CHECK(round_trips(c));
    CHECK(round_trips(cron_cmd("thumb", 60000)));
    /* Not a job queue, an empty worker, a response over the limit. */
    c.job.queue = S("thumb");
    CHECK(!round_trips(c));
    c.job.queue = S("WORKERS_");
    CHECK(!round_trips(c));
    c.job.queue = S("WORKERS_Bad");
    CHECK(!round_trips(c));
    c = ack_cmd("thumb", "", 7, 2, "");
    CHECK(!round_trips(c));
    c = ack_cmd("thumb", "w", 7, 2, "");
    c.job.item[0].response.p = big;
    c.job.item[0].response.len = sizeof big;
    CHECK(!round_trips(c));
    c.job.item[0].response.len = JINN_JOB_RESULT_MAX;
    CHECK(round_trips(c));
    /* 1..JINN_JOB_ACK_MAX acks, their responses within JINN_JOB_ACK_BYTES_MAX. */
    c = ack_cmd("thumb", "w", 7, 2, "");
    c.job.n = 0;
    CHECK(!round_trips(c));
    for (unsigned i = 1; i < JINN_JOB_ACK_MAX + 1; i++) {
        c.job.item[i - 1] = c.job.item[0];
        c.job.item[i - 1].seq = i;
    }
    c.job.n = JINN_JOB_ACK_MAX;
    CHECK(round_trips(c));
    c.job.n = JINN_JOB_ACK_MAX + 1;
    CHECK(!round_trips(c));
    c.job.n = JINN_JOB_ACK_BYTES_MAX / JINN_JOB_RESULT_MAX;
    for (unsigned i = 0; i < c.job.n; i++) {
        c.job.item[i].response.p = big;
        c.job.item[i].response.len = JINN_JOB_RESULT_MAX;
    }
    CHECK(round_trips(c));
    c.job.item[0].response.len = JINN_JOB_RESULT_MAX - 1;
    c.job.n++;
    c.job.item[c.job.n - 1] = c.job.item[1];
    CHECK(!round_trips(c)); /* one byte under a result too many over the batch's */
    c = cron_cmd("-x", 1);
    CHECK(!round_trips(c));

    /* FN_DEPLOY2: a signature is 0 or 64 bytes, a key id at most 64. */
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_DEPLOY2;
    c.fn.name = S("thumb");
    c.fn.settings = S("{}");
    c.fn.module.p = hello;
    c.fn.module.len = sizeof hello;
    CHECK(round_trips(c));
    c.fn.signature.p = sig;
    c.fn.signature.len = 64;
    c.fn.key_id = S("release-2026");
    CHECK(round_trips(c));
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK(d.fn.signature.len == 64 && d.fn.key_id.len == 12 && d.fn.module.len == sizeof hello);
    jinn_wbuf_free(&w);
    c.fn.signature.len = 63;
    CHECK(!round_trips(c));
    c.fn.signature.len = 64;
    c.fn.key_id.p = big;
    c.fn.key_id.len = 65;
    CHECK(!round_trips(c));
}

/* ---- settings and deploys --------------------------------------------------------- */

static char *settings_json(uint32_t workers, const char *cron)
{
    struct jinn_fn_settings s;
    struct jinn_wbuf w;
    char *out;
    jinn_fn_settings_defaults(&s);
    s.workers = workers;
    snprintf(s.cron, sizeof s.cron, "%s", cron);
    jinn_wbuf_init(&w);
    jinn_fn_settings_canonical(&s, &w);
    out = jinn_strndup((const char *)w.data, w.len);
    jinn_wbuf_free(&w);
    return out;
}

static struct jinn_cmd deploy_cmd(int type, const char *name, const char *json)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = (uint8_t)type;
    c.fn.name = S(name);
    c.fn.module.p = hello;
    c.fn.module.len = sizeof hello;
    c.fn.settings = S(json);
    return c;
}

static int deploy(struct jinn_fsm *fsm, uint64_t index, uint64_t time, const char *name,
                  uint32_t workers, const char *cron)
{
    char *json = settings_json(workers, cron);
    const struct jinn_result *r =
        unit_apply(fsm, index, time, deploy_cmd(JINN_CMD_FN_DEPLOY2, name, json));
    jinn_free(json);
    return r ? r->code : -1;
}

TEST(jobs_settings_workers_cron_and_deploy2)
{
    struct jinn_fn_settings s;
    struct jinn_fsm fsm;
    char err[200];
    char *plain = settings_json(1, ""), *jobs = settings_json(4, "*/5 * * * *");
    const struct jinn_fn *f;

    /* Defaults are not written: settings from before keep their bytes. */
    CHECK(strstr(plain, "workers") == NULL && strstr(plain, "cron") == NULL);
    CHECK(strstr(jobs, ",\"workers\":4,\"cron\":\"*/5 * * * *\"}") != NULL);
    CHECK_INT(jinn_fn_settings_parse(jobs, strlen(jobs), &s, err, sizeof err), 0);
    CHECK(s.workers == 4 && strcmp(s.cron, "*/5 * * * *") == 0);
    CHECK(jinn_fn_settings_need_deploy2(&s));
    jinn_fn_settings_free(&s);
    CHECK_INT(jinn_fn_settings_parse(plain, strlen(plain), &s, err, sizeof err), 0);
    CHECK(s.workers == 1 && s.cron[0] == '\0' && !jinn_fn_settings_need_deploy2(&s));
    jinn_fn_settings_free(&s);
    {
        /* Refused: a bad schedule, workers out of range, a default written. */
        char *bad = settings_json(1, "0 0 30 2 *");
        char *many = settings_json(65, "");
        char *one = settings_json(1, "");
        size_t n = strlen(one);
        one = jinn_realloc(one, n + 16);
        memcpy(one + n - 1, ",\"workers\":1}", 14);
        CHECK_INT(jinn_fn_settings_parse(bad, strlen(bad), &s, err, sizeof err), JINN_EINVAL);
        CHECK(strstr(err, "never runs") != NULL);
        CHECK_INT(jinn_fn_settings_parse(many, strlen(many), &s, err, sizeof err), JINN_EINVAL);
        CHECK_INT(jinn_fn_settings_parse(one, strlen(one), &s, err, sizeof err), JINN_EINVAL);
        jinn_free(bad);
        jinn_free(many);
        jinn_free(one);
    }

    jinn_fsm_init(&fsm);
    /* FN_DEPLOY refuses the new keys (as a build from before does)... */
    CHECK_INT(unit_apply(&fsm, 1, 1000, deploy_cmd(JINN_CMD_FN_DEPLOY, "a", jobs))->code,
              JINN_EINVAL);
    CHECK(jinn_fns_get(&fsm.fns, "a") == NULL);
    /* ...FN_DEPLOY2 takes them, and plain settings too. */
    CHECK_INT(unit_apply(&fsm, 2, 1000, deploy_cmd(JINN_CMD_FN_DEPLOY2, "a", jobs))->code, 0);
    f = jinn_fns_get(&fsm.fns, "a");
    CHECK(f != NULL && f->active->settings.workers == 4);
    CHECK_INT(unit_apply(&fsm, 3, 1000, deploy_cmd(JINN_CMD_FN_DEPLOY, "b", plain))->code, 0);
    CHECK_INT(unit_apply(&fsm, 4, 1000, deploy_cmd(JINN_CMD_FN_DEPLOY2, "c", plain))->code, 0);
    jinn_fsm_close(&fsm);
    jinn_free(plain);
    jinn_free(jobs);
}

/* ---- JOB_ACK ----------------------------------------------------------------------- */

static struct jinn_cmd qcmd(uint8_t type, const char *queue, const char *worker, uint64_t seq)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.q.queue = S(queue);
    c.q.worker = S(worker);
    c.q.seq = seq;
    c.q.payload = S("{}");
    c.q.count = 1000;
    c.q.bytes = 1 << 20;
    c.q.max_deliver = 5;
    c.q.ms = 30000; /* FETCH: ack_wait */
    return c;
}

TEST(jobs_ack_checks_the_lease_and_keeps_the_result)
{
    struct jinn_fsm fsm;
    const struct jinn_queue *q;
    const struct jinn_job_result *r;
    jinn_fsm_init(&fsm);
    CHECK_INT(unit_apply(&fsm, 10, 1000, qcmd(JINN_CMD_Q_PUBLISH, "WORKERS_f", "", 0))->code,
              0);
    /* Not leased yet: conflict, as Q_ACK. */
    CHECK_INT(ack_code(&fsm, 11, 1100, ack_cmd("f", "n1/f/0", 10, 0, "{}")),
              JINN_ECONFLICT);
    CHECK_INT(
        unit_apply(&fsm, 12, 1200, qcmd(JINN_CMD_Q_FETCH, "WORKERS_f", "n1/f/0", 1))->value, 1);
    q = jinn_queues_get(&fsm.queues, "WORKERS_f", 9);
    CHECK(jinn_queue_msg(q, 10)->leased_ms == 1200);
    /* Another worker, another delivery, an unknown job: refused, nothing kept. */
    CHECK_INT(ack_code(&fsm, 13, 1300, ack_cmd("f", "n2/f/0", 10, 0, "{}")),
              JINN_ECONFLICT);
    CHECK_INT(ack_code(&fsm, 14, 1300, ack_cmd("f", "n1/f/0", 10, 2, "{}")),
              JINN_ECONFLICT);
    CHECK_INT(ack_code(&fsm, 15, 1300, ack_cmd("f", "n1/f/0", 99, 0, "{}")),
              JINN_ENOTFOUND);
    CHECK_INT(ack_code(&fsm, 16, 1300, ack_cmd("g", "n1/f/0", 10, 0, "{}")),
              JINN_ENOTFOUND);
    CHECK(jinn_jobs_result(&fsm.jobs, "f", 10) == NULL);
    CHECK(jinn_queue_msg(q, 10) != NULL);
    /* The holder's ack: the message goes, the result stays. */
    CHECK_INT(ack_code(&fsm, 17, 1400, ack_cmd("f", "n1/f/0", 10, 1, "{\"n\":1}")), 0);
    CHECK(fsm.result.value == 1 && fsm.jobs.acked_seq[0] == 10);
    CHECK(jinn_queue_msg(q, 10) == NULL);
    CHECK(q->acked == 1);
    r = jinn_jobs_result(&fsm.jobs, "f", 10);
    CHECK(r != NULL && r->status == 200 && r->finished_ms == 1400 && r->delivery == 1 &&
          r->len == 7 && memcmp(r->response, "{\"n\":1}", 7) == 0 &&
          strcmp(r->worker, "n1/f/0") == 0 && r->expires_ms == 1400 + 3600000);
    CHECK(jinn_jobs_next_due(&fsm.jobs) == 1400 + 3600000);
    /* Acked once: a second ack finds nothing. */
    CHECK_INT(ack_code(&fsm, 18, 1500, ack_cmd("f", "n1/f/0", 10, 1, "{}")),
              JINN_ENOTFOUND);
    CHECK(jinn_jobs_result(&fsm.jobs, "f", 10)->finished_ms == 1400);
    jinn_fsm_close(&fsm);
}

/* A JOB_ACK of many: each ack on its own (a stale lease, an unknown job, a
 * repeat fail alone), the good ones kept under the entry's one index. */
TEST(jobs_ack_batch_settles_each_on_its_own)
{
    struct jinn_fsm fsm, b;
    const struct jinn_queue *q;
    const struct jinn_job_result *r;
    struct jinn_cmd c = ack_cmd("f", "n1/f", 10, 1, "{\"a\":1}");
    struct jinn_wbuf w;
    unsigned seen = 0;

    jinn_fsm_init(&fsm);
    jinn_fsm_init(&b);
    for (uint64_t i = 10; i < 13; i++) {
        CHECK_INT(unit_apply(&fsm, i, 1000, qcmd(JINN_CMD_Q_PUBLISH, "WORKERS_f", "", 0))->code,
                  0);
    }
    CHECK_INT(
        unit_apply(&fsm, 13, 1100, qcmd(JINN_CMD_Q_FETCH, "WORKERS_f", "n1/f", 3))->value, 3);
    c.job.n = 6;
    c.job.item[1] = c.job.item[0]; /* 11 by another worker: conflict */
    c.job.item[1].seq = 11;
    c.job.item[1].worker = S("n2/f");
    c.job.item[2] = c.job.item[0]; /* unknown */
    c.job.item[2].seq = 99;
    c.job.item[3] = c.job.item[0]; /* 12, another response */
    c.job.item[3].seq = 12;
    c.job.item[3].response = S("{\"b\":2}");
    c.job.item[4] = c.job.item[0]; /* 10 again: acked already */
    c.job.item[5] = c.job.item[1]; /* 11 by another delivery: conflict */
    c.job.item[5].worker = S("n1/f");
    c.job.item[5].delivery = 2;
    CHECK_INT(unit_apply(&fsm, 14, 1200, c)->code, 0);
    CHECK_INT(fsm.result.value, 2);
    CHECK_INT(fsm.jobs.n_acked, 6);
    CHECK_INT(fsm.jobs.acked[0], 0);
    CHECK_INT(fsm.jobs.acked[1], JINN_ECONFLICT);
    CHECK_INT(fsm.jobs.acked[2], JINN_ENOTFOUND);
    CHECK_INT(fsm.jobs.acked[3], 0);
    CHECK_INT(fsm.jobs.acked[4], JINN_ENOTFOUND);
    CHECK_INT(fsm.jobs.acked[5], JINN_ECONFLICT);
    CHECK(fsm.jobs.acked_seq[3] == 12);
    q = jinn_queues_get(&fsm.queues, "WORKERS_f", 9);
    CHECK(jinn_queue_msg(q, 10) == NULL && jinn_queue_msg(q, 12) == NULL);
    CHECK(jinn_queue_msg(q, 11) != NULL && jinn_queue_msg(q, 11)->state == JINN_QM_LEASED);
    CHECK(q->acked == 2);
    r = jinn_jobs_result(&fsm.jobs, "f", 12);
    CHECK(r != NULL && r->index == 14 && r->len == 7 && memcmp(r->response, "{\"b\":2}", 7) == 0);
    r = jinn_jobs_result(&fsm.jobs, "f", 10);
    CHECK(r != NULL && r->index == 14 && r->len == 7 && memcmp(r->response, "{\"a\":1}", 7) == 0);
    /* Both listed, newest first (the higher id first within one entry). */
    for (r = jinn_jobs_results_next(&fsm.jobs, "f", NULL); r != NULL;
         r = jinn_jobs_results_next(&fsm.jobs, "f", r)) {
        CHECK(r->seq == (seen == 0 ? 12u : 10u));
        seen++;
    }
    CHECK_INT(seen, 2);
    /* Results sharing an index survive a snapshot. */
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&fsm, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK(b.jobs.results.count == 2 && jinn_jobs_result(&b.jobs, "f", 12) != NULL);
    /* The byte bound evicts them oldest first, one by one. */
    c = ack_cmd("f", "n1/f", 11, 1, "");
    c.job.keep_bytes = 2 * (7 + JINN_JOB_RESULT_OVERHEAD);
    CHECK_INT(ack_code(&fsm, 15, 1300, c), 0);
    CHECK(fsm.jobs.results.count == 2 && jinn_jobs_result(&fsm.jobs, "f", 10) == NULL);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&fsm);
    jinn_fsm_close(&b);
}

/* Publishes and leases a job of fn at index (time = index), then acks it at
 * index + 2 with keep_ms / keep_bytes. */
static int run_job(struct jinn_fsm *fsm, const char *fn, uint64_t index, const char *response,
                   uint64_t keep_ms, uint64_t keep_bytes)
{
    char queue[80];
    struct jinn_cmd a = ack_cmd(fn, "w", index, 0, response);
    snprintf(queue, sizeof queue, "WORKERS_%s", fn);
    unit_apply(fsm, index, index, qcmd(JINN_CMD_Q_PUBLISH, queue, "", 0));
    unit_apply(fsm, index + 1, index + 1, qcmd(JINN_CMD_Q_FETCH, queue, "w", 0));
    a.job.keep_ms = keep_ms;
    a.job.keep_bytes = keep_bytes;
    return ack_code(fsm, index + 2, index + 2, a);
}

TEST(jobs_results_expire_and_evict_oldest_first)
{
    struct jinn_fsm fsm;
    const struct jinn_job_result *r;
    uint64_t cost = 10 + JINN_JOB_RESULT_OVERHEAD;
    jinn_fsm_init(&fsm);
    /* Three results of 10 bytes; the bound holds two. */
    CHECK_INT(run_job(&fsm, "f", 100, "0123456789", 1000, 2 * cost), 0);
    CHECK_INT(run_job(&fsm, "g", 200, "0123456789", 1000, 2 * cost), 0);
    CHECK_INT(run_job(&fsm, "f", 300, "0123456789", 50, 2 * cost), 0);
    CHECK(jinn_jobs_result(&fsm.jobs, "f", 100) == NULL); /* oldest finished: evicted */
    CHECK(jinn_jobs_result(&fsm.jobs, "g", 200) != NULL);
    CHECK(jinn_jobs_result(&fsm.jobs, "f", 300) != NULL);
    CHECK(fsm.jobs.bytes == 2 * cost);
    /* Newest first per function. */
    r = jinn_jobs_results_next(&fsm.jobs, "f", NULL);
    CHECK(r != NULL && r->seq == 300);
    CHECK(jinn_jobs_results_next(&fsm.jobs, "f", r) == NULL);
    /* Expiry in cluster time: f/300 (keep 50 ms) goes first, at 352. */
    CHECK(jinn_jobs_next_due(&fsm.jobs) == 352);
    unit_apply(&fsm, 400, 351, (struct jinn_cmd){.type = JINN_CMD_NOOP});
    CHECK(jinn_jobs_result(&fsm.jobs, "f", 300) != NULL);
    unit_apply(&fsm, 401, 352, (struct jinn_cmd){.type = JINN_CMD_NOOP});
    CHECK(jinn_jobs_result(&fsm.jobs, "f", 300) == NULL);
    CHECK(jinn_jobs_next_due(&fsm.jobs) == 1202);
    unit_apply(&fsm, 402, 1202, (struct jinn_cmd){.type = JINN_CMD_NOOP});
    CHECK(jinn_jobs_result(&fsm.jobs, "g", 200) == NULL);
    CHECK(fsm.jobs.bytes == 0 && jinn_jobs_next_due(&fsm.jobs) == 0);
    /* Several of one function, listed newest first. */
    CHECK_INT(run_job(&fsm, "h", 500, "a", 10000, 1 << 20), 0);
    CHECK_INT(run_job(&fsm, "h", 510, "b", 10000, 1 << 20), 0);
    CHECK_INT(run_job(&fsm, "i", 520, "c", 10000, 1 << 20), 0);
    CHECK_INT(run_job(&fsm, "h", 530, "d", 10000, 1 << 20), 0);
    r = jinn_jobs_results_next(&fsm.jobs, "h", NULL);
    CHECK(r && r->seq == 530);
    r = jinn_jobs_results_next(&fsm.jobs, "h", r);
    CHECK(r && r->seq == 510);
    r = jinn_jobs_results_next(&fsm.jobs, "h", r);
    CHECK(r && r->seq == 500);
    CHECK(jinn_jobs_results_next(&fsm.jobs, "h", r) == NULL);
    CHECK(jinn_jobs_results_next(&fsm.jobs, "zz", NULL) == NULL);
    jinn_fsm_close(&fsm);
}

/* ---- JOB_CRON -------------------------------------------------------------------------- */

/* R1-F3: cron is UTC, but cluster time resumes where the log left it after
 * a full-cluster outage and catches up with the wall clock only at 1 %
 * (clock.h). JOB_CRON carries the leader's wall clock, and apply takes the
 * later of it and the entry's time: the tick due by UTC fires, the hour's
 * missed ticks collapse into that one run, and the next tick is the next
 * UTC hour. On the old code the tick waited for cluster time (an hour late,
 * for days). */
TEST(jobs_r1_cron_after_full_outage_tracks_utc)
{
    struct jinn_fsm fsm;
    struct jinn_clock clk;
    struct jinn_cmd c;
    const uint64_t hour = 3600000;
    const uint64_t t0 = 1795000000000ull / hour * hour + 1000; /* 1 s after an hour */
    uint64_t wall = t0 + hour + 600000, mono0 = 5000000, stamp;
    const struct jinn_queue *q;
    jinn_fsm_init(&fsm);
    CHECK_INT(deploy(&fsm, 1, t0, "hourly", 1, "0 * * * *"), 0);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "hourly") == t0 - 1000 + hour);
    /* The whole cluster was down for an hour; the first leader after it
     * stamps from the last applied time (t0), 10 minutes of real time on. */
    memset(&clk, 0, sizeof clk);
    (void)jinn_clock_stamp(&clk, 7, mono0, t0 + hour, t0, 0, true);
    stamp = jinn_clock_stamp(&clk, 7, mono0 + 600000, wall, t0, 0, true);
    CHECK(wall - stamp > 3000000); /* cluster time still lags UTC by ~1 h */
    CHECK(stamp < t0 - 1000 + hour); /* so by cluster time the tick is not due */
    /* The leader's wall clock says it is due: it fires, once. */
    c = cron_cmd("hourly", t0 - 1000 + hour);
    c.cron.now_ms = wall;
    {
        /* The wall clock is in the entry (cmd.c). */
        struct jinn_wbuf w;
        struct jinn_cmd d;
        jinn_wbuf_init(&w);
        CHECK_INT(jinn_cmd_encode(&c, &w), 0);
        CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
        CHECK(d.cron.now_ms == wall && d.cron.tick_ms == c.cron.tick_ms);
        jinn_wbuf_free(&w);
    }
    CHECK_INT(unit_apply(&fsm, 2, stamp, c)->code, 0);
    q = jinn_queues_get(&fsm.queues, "WORKERS_hourly", 14);
    CHECK(q != NULL && q->all.count == 1);
    /* The next tick is the next UTC hour, not the next cluster-time hour. */
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "hourly") == t0 - 1000 + 2 * hour);
    /* The same proposal again, or one whose wall clock and cluster time are
     * both before the tick: refused, nothing runs twice or early. */
    CHECK_INT(unit_apply(&fsm, 3, stamp + 1, c)->code, JINN_ECONFLICT);
    c = cron_cmd("hourly", t0 - 1000 + 2 * hour);
    c.cron.now_ms = wall + 1000;
    CHECK_INT(unit_apply(&fsm, 4, stamp + 2, c)->code, JINN_ECONFLICT);
    CHECK(q->all.count == 1);
    /* Without a wall clock in the entry (0) cluster time still decides. */
    c.cron.now_ms = 0;
    CHECK_INT(unit_apply(&fsm, 5, t0 - 1000 + 2 * hour, c)->code, 0);
    CHECK(q->all.count == 2);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "hourly") == t0 - 1000 + 3 * hour);
    jinn_fsm_close(&fsm);
}

TEST(jobs_cron_fires_each_tick_once)
{
    struct jinn_fsm fsm;
    const struct jinn_queue *q;
    const struct jinn_qmsg *m;
    char name[65];
    jinn_fsm_init(&fsm);
    /* Deployed at 95 000: the first tick is 100 000 (every 10 s). */
    CHECK_INT(deploy(&fsm, 1, 95000, "tick", 1, "@every 10s"), 0);
    CHECK(jinn_jobs_cron_next(&fsm.jobs, name) == 100000);
    CHECK_STR(name, "tick");
    /* Not yet due, or not the pending tick: nothing happens. */
    CHECK_INT(unit_apply(&fsm, 2, 99999, cron_cmd("tick", 100000))->code, JINN_ECONFLICT);
    CHECK_INT(unit_apply(&fsm, 3, 100000, cron_cmd("tick", 90000))->code, JINN_ECONFLICT);
    CHECK_INT(unit_apply(&fsm, 4, 100000, cron_cmd("nope", 100000))->code, JINN_ECONFLICT);
    CHECK(jinn_queues_get(&fsm.queues, "WORKERS_tick", 12) == NULL);
    /* Due: one message, its seq the entry's index. */
    CHECK_INT(unit_apply(&fsm, 5, 100004, cron_cmd("tick", 100000))->code, 0);
    CHECK(fsm.result.value == 5);
    q = jinn_queues_get(&fsm.queues, "WORKERS_tick", 12);
    CHECK(q != NULL && q->all.count == 1);
    m = jinn_queue_msg(q, 5);
    CHECK(m != NULL && m->max_deliver == 5);
    {
        const char *want = "{\"event_type\":\"cron\",\"source\":\"gojinn_scheduler\","
                           "\"tick_ms\":100000,\"tick\":\"1970-01-01T00:01:40Z\"}";
        CHECK(m->len == strlen(want) && memcmp(m->payload, want, m->len) == 0);
    }
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 110000);
    /* A new leader proposing the same tick again (it had not seen the
     * first commit): refused, no second run. */
    CHECK_INT(unit_apply(&fsm, 6, 100500, cron_cmd("tick", 100000))->code, JINN_ECONFLICT);
    CHECK(q->all.count == 1);
    /* No quorum from 110 000 to 145 123: the missed ticks run once. */
    CHECK_INT(unit_apply(&fsm, 7, 145123, cron_cmd("tick", 110000))->code, 0);
    CHECK(q->all.count == 2);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 150000);
    CHECK_INT(unit_apply(&fsm, 8, 145200, cron_cmd("tick", 120000))->code, JINN_ECONFLICT);
    CHECK_INT(unit_apply(&fsm, 9, 145200, cron_cmd("tick", 150000))->code, JINN_ECONFLICT);
    CHECK(q->all.count == 2);
    /* Redeploying the same schedule keeps the pending tick; another one
     * recomputes it from the deploy's time; deleting removes it. */
    CHECK_INT(deploy(&fsm, 10, 146000, "tick", 2, "@every 10s"), 0);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 150000);
    CHECK_INT(deploy(&fsm, 11, 146000, "tick", 2, "@every 1m"), 0);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 180000);
    CHECK_INT(unit_apply(&fsm, 12, 147000,
                         (struct jinn_cmd){.type = JINN_CMD_FN_ROLLBACK,
                                           .fn = {.name = S("tick"), .version = 0}})
                  ->code,
              0);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 150000); /* back to @every 10s */
    CHECK_INT(
        unit_apply(&fsm, 13, 148000,
                   (struct jinn_cmd){.type = JINN_CMD_FN_DELETE, .fn = {.name = S("tick")}})
            ->code,
        0);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 0);
    CHECK(jinn_jobs_cron_next(&fsm.jobs, name) == 0);
    CHECK_INT(unit_apply(&fsm, 14, 150000, cron_cmd("tick", 150000))->code, JINN_ECONFLICT);
    /* A deploy without cron has no schedule. */
    CHECK_INT(deploy(&fsm, 15, 150000, "plain", 3, ""), 0);
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "plain") == 0);
    jinn_fsm_close(&fsm);
}

TEST(jobs_cron_full_queue_drops_the_tick)
{
    struct jinn_fsm fsm;
    struct jinn_cmd c = cron_cmd("tick", 100000);
    jinn_fsm_init(&fsm);
    CHECK_INT(deploy(&fsm, 1, 95000, "tick", 1, "@every 10s"), 0);
    c.cron.max_length = 1;
    CHECK_INT(unit_apply(&fsm, 2, 100000, c)->code, 0);
    c.cron.tick_ms = 110000;
    CHECK_INT(unit_apply(&fsm, 3, 110000, c)->code, JINN_EFULL);
    /* Dropped, not retried at every entry: the next tick is scheduled. */
    CHECK(jinn_jobs_cron_of(&fsm.jobs, "tick") == 120000);
    CHECK(jinn_queues_get(&fsm.queues, "WORKERS_tick", 12)->all.count == 1);
    jinn_fsm_close(&fsm);
}

/* ---- snapshots -------------------------------------------------------------------------- */

TEST(jobs_snapshot_round_trip_format3)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w, w2;
    const struct jinn_queue *q;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    CHECK_INT(deploy(&a, 1, 95000, "tick", 1, "*/5 * * * *"), 0);
    CHECK_INT(run_job(&a, "f", 100, "{\"r\":1}", 1 << 30, 1 << 20), 0);
    unit_apply(&a, 200, 200000, qcmd(JINN_CMD_Q_PUBLISH, "WORKERS_f", "", 0));
    unit_apply(&a, 201, 200100, qcmd(JINN_CMD_Q_FETCH, "WORKERS_f", "n2/f/1", 0));
    jinn_wbuf_init(&w);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK(w.data[8] == 3);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w.len == w2.len && memcmp(w.data, w2.data, w.len) == 0);
    CHECK(jinn_jobs_result(&b.jobs, "f", 100) != NULL);
    CHECK(jinn_jobs_cron_of(&b.jobs, "tick") == 300000);
    q = jinn_queues_get(&b.queues, "WORKERS_f", 9);
    CHECK(q && jinn_queue_msg(q, 200)->leased_ms == 200100);
    CHECK(b.jobs.bytes == a.jobs.bytes);
    /* Every truncation and flipped byte is refused, the state kept. */
    for (size_t n = 0; n < w.len; n += 3) {
        CHECK(jinn_fsm_decode(&b, w.data, n) != 0);
    }
    CHECK(jinn_jobs_result(&b.jobs, "f", 100) != NULL);
    jinn_wbuf_free(&w);
    jinn_wbuf_free(&w2);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

/* A hostile jobs section: counts that lie, duplicates, bad names. */
TEST(jobs_decode_refuses_hostile_sections)
{
    struct jinn_jobs jobs;
    struct jinn_wbuf w;
    struct jinn_rbuf r;
    struct jinn_fns fns;
    jinn_jobs_init(&jobs);
    jinn_fns_init(&fns);

    jinn_wbuf_init(&w);
    jinn_wbuf_put_u64(&w, UINT64_MAX); /* results */
    jinn_rbuf_init(&r, w.data, w.len);
    CHECK_INT(jinn_jobs_decode(&jobs, &fns, &r), JINN_ECORRUPT);
    jinn_wbuf_free(&w);

    /* dup 0: two functions' results under one (index, seq): one JOB_ACK
     * acts on one queue, so that is corrupt; dup 1: one job twice. (Two
     * jobs of one function under one index are one batched JOB_ACK.) */
    for (int dup = 0; dup < 2; dup++) {
        jinn_wbuf_init(&w);
        jinn_wbuf_put_u64(&w, 2);
        for (int i = 0; i < 2; i++) {
            jinn_wbuf_put_str(&w, dup ? "f" : i ? "g" : "f");
            jinn_wbuf_put_u64(&w, 5);                         /* seq */
            jinn_wbuf_put_u64(&w, dup ? 9 + (uint64_t)i : 9); /* index */
            jinn_wbuf_put_u64(&w, 1);
            jinn_wbuf_put_u64(&w, 2);
            jinn_wbuf_put_u64(&w, 1);
            jinn_wbuf_put_u32(&w, 200);
            jinn_wbuf_put_str(&w, "w");
            jinn_wbuf_put_bytes(&w, "{}", 2);
        }
        jinn_wbuf_put_u64(&w, 0);
        jinn_rbuf_init(&r, w.data, w.len);
        CHECK_INT(jinn_jobs_decode(&jobs, &fns, &r), JINN_ECORRUPT);
        CHECK(jobs.results.count == 0 && jobs.bytes == 0);
        jinn_wbuf_free(&w);
    }

    jinn_wbuf_init(&w);
    jinn_wbuf_put_u64(&w, 0);
    jinn_wbuf_put_u64(&w, 1);
    jinn_wbuf_put_str(&w, "f");
    jinn_wbuf_put_str(&w, "0 0 30 2 *"); /* never fires: refused */
    jinn_wbuf_put_u64(&w, 5);
    jinn_rbuf_init(&r, w.data, w.len);
    CHECK_INT(jinn_jobs_decode(&jobs, &fns, &r), JINN_ECORRUPT);
    jinn_wbuf_free(&w);
    jinn_jobs_clear(&jobs);
    jinn_fns_clear(&fns);
}

/* One cron entry (no results) with the given name, expression bytes and tick. */
static int decode_one_cron(const struct jinn_fns *fns, const char *fn, const void *expr,
                           size_t expr_len, uint64_t next)
{
    struct jinn_jobs jobs;
    struct jinn_wbuf w;
    struct jinn_rbuf r;
    int rv;
    jinn_jobs_init(&jobs);
    jinn_wbuf_init(&w);
    jinn_wbuf_put_u64(&w, 0);
    jinn_wbuf_put_u64(&w, 1);
    jinn_wbuf_put_str(&w, fn);
    jinn_wbuf_put_bytes(&w, expr, expr_len);
    jinn_wbuf_put_u64(&w, next);
    jinn_rbuf_init(&r, w.data, w.len);
    rv = jinn_jobs_decode(&jobs, fns, &r);
    if (rv == 0 && (jobs.crons.count != 1 || r.left != 0)) {
        rv = -1; /* accepted, but not as one entry */
    }
    jinn_wbuf_free(&w);
    jinn_jobs_clear(&jobs);
    return rv;
}

/* A1 M1/m3: a forged cron entry is refused at decode. A 57-64-byte name
 * made JOB_CRON build a 72-byte queue name (overflowing the queue's name,
 * then a fatal apply and an endless loop on replay); an entry for a function
 * that is not deployed with that schedule would fire forever. */
TEST(jobs_decode_refuses_forged_cron_entries)
{
    struct jinn_fsm fsm;
    char c56[57], c57[58], z64[65];
    memset(c56, 'c', 56);
    c56[56] = '\0';
    memset(c57, 'c', 57);
    c57[57] = '\0';
    memset(z64, 'z', 64);
    z64[64] = '\0';
    jinn_fsm_init(&fsm);
    CHECK_INT(deploy(&fsm, 1, 95000, "tick", 1, "@every 10s"), 0);
    CHECK_INT(deploy(&fsm, 2, 95000, c56, 1, "@every 1s"), 0);
    CHECK_INT(deploy(&fsm, 3, 95000, "plain", 1, ""), 0);
    /* The real entries decode. */
    CHECK_INT(decode_one_cron(&fsm.fns, "tick", "@every 10s", 10, 100000), 0);
    CHECK_INT(decode_one_cron(&fsm.fns, c56, "@every 1s", 9, 96000), 0);
    /* Names whose queue name would not fit. */
    CHECK_INT(decode_one_cron(&fsm.fns, c57, "@every 1s", 9, 96000), JINN_ECORRUPT);
    CHECK_INT(decode_one_cron(&fsm.fns, z64, "@every 1s", 9, 96000), JINN_ECORRUPT);
    /* No such function, no cron, another schedule. */
    CHECK_INT(decode_one_cron(&fsm.fns, "ghost", "@every 10s", 10, 100000), JINN_ECORRUPT);
    CHECK_INT(decode_one_cron(&fsm.fns, "plain", "@every 10s", 10, 100000), JINN_ECORRUPT);
    CHECK_INT(decode_one_cron(&fsm.fns, "tick", "@every 1m", 9, 100000), JINN_ECORRUPT);
    /* A NUL inside the expression (encode would write fewer bytes). */
    CHECK_INT(decode_one_cron(&fsm.fns, "tick", "@every 10s\0x", 12, 100000), JINN_ECORRUPT);
    jinn_fsm_close(&fsm);
}

/* The whole-snapshot form of A1's M1 (snap_cron_longname.py): a real
 * snapshot whose cron entry is renamed to a 64-byte name, CRC fixed.
 * The same bytes are in the snapshot_decode fuzz corpus. */
TEST(jobs_snapshot_with_long_cron_name_is_refused)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w, forged;
    char c56[57];
    uint8_t pat[4 + 56 + 4 + 9];
    size_t at = SIZE_MAX;
    uint32_t crc;
    memset(c56, 'c', 56);
    c56[56] = '\0';
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    CHECK_INT(deploy(&a, 1, 95000, c56, 1, "@every 1s"), 0);
    CHECK(jinn_jobs_cron_of(&a.jobs, c56) == 96000);
    jinn_wbuf_init(&w);
    jinn_wbuf_init(&forged);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    pat[0] = 56, pat[1] = pat[2] = pat[3] = 0;
    memcpy(pat + 4, c56, 56);
    pat[60] = 9, pat[61] = pat[62] = pat[63] = 0;
    memcpy(pat + 64, "@every 1s", 9);
    for (size_t i = 0; i + sizeof pat <= w.len; i++) {
        if (memcmp(w.data + i, pat, sizeof pat) == 0) {
            at = i;
            break;
        }
    }
    CHECK(at != SIZE_MAX);
    if (at != SIZE_MAX) {
        jinn_wbuf_put_raw(&forged, w.data, at);
        jinn_wbuf_put_u32(&forged, 64);
        jinn_wbuf_put_raw(&forged, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 64);
        jinn_wbuf_put_raw(&forged, w.data + at + 60, w.len - 4 - (at + 60));
        crc = jinn_crc32(0, forged.data, forged.len);
        jinn_wbuf_put_u32(&forged, crc);
        CHECK_INT(jinn_fsm_decode(&b, forged.data, forged.len), JINN_ECORRUPT);
        CHECK(b.jobs.crons.count == 0);
        /* The untouched snapshot still decodes. */
        CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
        CHECK(jinn_jobs_cron_of(&b.jobs, c56) == 96000);
    }
    jinn_wbuf_free(&w);
    jinn_wbuf_free(&forged);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

/* The safety net behind it: a publish to a name over the queue name limit
 * is the command's result (JINN_EINVAL), not a write past the name. */
TEST(queue_publish_refuses_overlong_names)
{
    struct jinn_queues qs;
    struct jinn_cmd c;
    char name[73];
    uint64_t value = 7;
    memset(name, 'q', 72);
    name[72] = '\0';
    jinn_queues_init(&qs);
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_Q_PUBLISH;
    c.q.queue = S(name);
    c.q.payload = S("{}");
    CHECK_INT(jinn_queues_apply(&qs, 1, 1000, &c, &value), JINN_EINVAL);
    CHECK(qs.by_name.count == 0);
    c.q.queue.len = 65;
    CHECK_INT(jinn_queues_apply(&qs, 2, 1000, &c, &value), JINN_EINVAL);
    c.q.queue.len = 64;
    CHECK_INT(jinn_queues_apply(&qs, 3, 1000, &c, &value), 0);
    CHECK(qs.by_name.count == 1);
    jinn_queues_clear(&qs);
}

/* Format 2: queue messages without leased_ms, no jobs section. */
TEST(jobs_reads_format2_snapshots)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    const struct jinn_queue *q;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    jinn_wbuf_init(&w);
    jinn_wbuf_put_raw(&w, JINN_SNAPSHOT_MAGIC, 8);
    jinn_wbuf_put_u32(&w, 2);
    jinn_wbuf_put_u64(&w, 777);
    jinn_nodes_encode(&a.nodes, &w);
    jinn_kv_encode(&a.kv, &w);
    jinn_locks_encode(&a.locks, &w);
    /* queues, as format 2 wrote them */
    jinn_wbuf_put_u64(&w, 1);
    jinn_wbuf_put_str(&w, "WORKERS_f");
    jinn_wbuf_put_u64(&w, 1); /* published */
    jinn_wbuf_put_u64(&w, 1); /* delivered */
    jinn_wbuf_put_u64(&w, 0); /* acked */
    jinn_wbuf_put_u32(&w, 0); /* seen */
    jinn_wbuf_put_u64(&w, 1); /* messages */
    jinn_wbuf_put_u64(&w, 42);
    jinn_wbuf_put_u64(&w, 30777); /* due */
    jinn_wbuf_put_u64(&w, 1);
    jinn_wbuf_put_u64(&w, 5);
    jinn_wbuf_put_u8(&w, JINN_QM_LEASED);
    jinn_wbuf_put_str(&w, "n1/f/0");
    jinn_wbuf_put_str(&w, "");
    jinn_wbuf_put_bytes(&w, "{}", 2);
    jinn_wbuf_put_u64(&w, 0); /* idempotency keys */
    /* an empty functions section, as format 2 wrote it (no signing policy) */
    jinn_wbuf_put_u32(&w, 0);
    jinn_wbuf_put_u32(&w, 0);
    jinn_sql_encode(&a.sql, &w);
    jinn_wbuf_put_u32(&w, jinn_crc32(0, w.data, w.len));
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    q = jinn_queues_get(&b.queues, "WORKERS_f", 9);
    CHECK(q != NULL && jinn_queue_msg(q, 42) != NULL);
    CHECK(jinn_queue_msg(q, 42)->leased_ms == 0 && jinn_queue_msg(q, 42)->due == 30777);
    CHECK(b.jobs.results.count == 0 && b.jobs.crons.count == 0);
    /* The holder can still ack it with JOB_ACK after the upgrade. */
    CHECK_INT(ack_code(&b, 43, 1000, ack_cmd("f", "n1/f/0", 42, 1, "{}")), 0);
    CHECK(jinn_jobs_result(&b.jobs, "f", 42) != NULL);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

/* Many results of the smallest encoding (58 bytes) still decode: the
 * count's sanity bound must not refuse a real snapshot. */
TEST(jobs_snapshot_of_many_minimal_results)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    for (uint64_t i = 0; i < 100; i++) {
        CHECK_INT(run_job(&a, "f", 10 + 3 * i, "", 1 << 30, 1 << 30), 0);
    }
    CHECK(a.jobs.results.count == 100);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK(b.jobs.results.count == 100);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}
