/* test_snapenc.c - the KV, queue and job-result section encoders write
 * fields in place (fsm/snapenc.h) after one reserve per item; their bytes
 * must stay exactly those of the field-by-field jinn_wbuf_put_* encoding
 * they replaced. Each section is built here the old way, decoded, encoded
 * again and compared byte for byte. */
#include <string.h>

#include "codec.h"
#include "fsm/fn.h"
#include "fsm/jobs.h"
#include "fsm/kv.h"
#include "fsm/queue.h"
#include "unit.h"

static bool same(const struct jinn_wbuf *a, const struct jinn_wbuf *b)
{
    return !a->failed && !b->failed && a->len == b->len &&
           memcmp(a->data, b->data, a->len) == 0;
}

TEST(snapenc_kv_section_is_byte_identical)
{
    struct jinn_wbuf ref, out;
    struct jinn_rbuf r;
    struct jinn_kv kv;
    char value[3000];

    memset(value, 'v', sizeof value);
    jinn_wbuf_init(&ref);
    jinn_wbuf_init(&out);
    jinn_kv_init(&kv);
    jinn_wbuf_put_u64(&ref, 0x0102030405060708ull); /* last_revision */
    jinn_wbuf_put_u64(&ref, 3);
    /* key order: (ns, key) */
    jinn_wbuf_put_bytes(&ref, "a", 1);
    jinn_wbuf_put_bytes(&ref, "k1", 2);
    jinn_wbuf_put_bytes(&ref, "", 0); /* empty value */
    jinn_wbuf_put_u64(&ref, 5);
    jinn_wbuf_put_u64(&ref, 4);
    jinn_wbuf_put_u64(&ref, 0);
    jinn_wbuf_put_bytes(&ref, "a", 1);
    jinn_wbuf_put_bytes(&ref, "k2", 2);
    jinn_wbuf_put_bytes(&ref, value, sizeof value);
    jinn_wbuf_put_u64(&ref, 0x0102030405060700ull);
    jinn_wbuf_put_u64(&ref, 6);
    jinn_wbuf_put_u64(&ref, 123456789012ull);
    jinn_wbuf_put_bytes(&ref, "b", 1);
    jinn_wbuf_put_bytes(&ref, "k", 1);
    jinn_wbuf_put_bytes(&ref, "x", 1);
    jinn_wbuf_put_u64(&ref, 77);
    jinn_wbuf_put_u64(&ref, 77);
    jinn_wbuf_put_u64(&ref, 0);
    jinn_rbuf_init(&r, ref.data, ref.len);
    CHECK_INT(jinn_kv_decode(&kv, &r), 0);
    CHECK_INT(r.left, 0);
    jinn_kv_encode(&kv, &out);
    CHECK(same(&ref, &out));
    jinn_kv_clear(&kv);
    jinn_wbuf_free(&ref);
    jinn_wbuf_free(&out);
}

/* The old per-field encoding of one message (format 3: leased_ms kept
 * unless for the digest). */
static void put_msg(struct jinn_wbuf *w, uint64_t seq, uint8_t state, const char *worker,
                    const char *reason, const char *payload, size_t len, bool leased)
{
    jinn_wbuf_put_u64(w, seq);
    jinn_wbuf_put_u64(w, seq * 1000); /* due */
    jinn_wbuf_put_u64(w, seq % 3);    /* delivery */
    jinn_wbuf_put_u64(w, 5);          /* max_deliver */
    if (leased) {
        jinn_wbuf_put_u64(w, seq * 7); /* leased_ms */
    }
    jinn_wbuf_put_u8(w, state);
    jinn_wbuf_put_str(w, worker);
    jinn_wbuf_put_str(w, reason);
    jinn_wbuf_put_bytes(w, payload, len);
}

static void put_queue_section(struct jinn_wbuf *w, bool leased)
{
    static const char big[2000] = {'p'};
    jinn_wbuf_put_u64(w, 1);
    jinn_wbuf_put_str(w, "jobs");
    jinn_wbuf_put_u64(w, 9);
    jinn_wbuf_put_u64(w, 4);
    jinn_wbuf_put_u64(w, 1);
    jinn_wbuf_put_u32(w, 1);
    jinn_wbuf_put_str(w, "w1");
    jinn_wbuf_put_u64(w, 4242);
    jinn_wbuf_put_u64(w, 3);
    put_msg(w, 1, JINN_QM_READY, "", "", "hello", 5, leased);
    put_msg(w, 2, JINN_QM_LEASED, "worker-2", "", "", 0, leased);
    put_msg(w, 7, JINN_QM_DEAD, "w1", "too many deliveries", big, sizeof big, leased);
    jinn_wbuf_put_u64(w, 1);
    jinn_wbuf_put_bytes(w, "idem-1", 6);
    jinn_wbuf_put_u64(w, 2);
    jinn_wbuf_put_u64(w, 99999);
}

TEST(snapenc_queue_section_is_byte_identical)
{
    struct jinn_wbuf ref, out, ref_digest, out_digest;
    struct jinn_rbuf r;
    struct jinn_queues qs;

    jinn_wbuf_init(&ref);
    jinn_wbuf_init(&out);
    jinn_wbuf_init(&ref_digest);
    jinn_wbuf_init(&out_digest);
    jinn_queues_init(&qs);
    put_queue_section(&ref, true);
    put_queue_section(&ref_digest, false);
    jinn_rbuf_init(&r, ref.data, ref.len);
    CHECK_INT(jinn_queues_decode(&qs, &r, 3), 0);
    CHECK_INT(r.left, 0);
    jinn_queues_encode(&qs, &out);
    CHECK(same(&ref, &out));
    jinn_queues_encode_digest(&qs, &out_digest); /* without leased_ms */
    CHECK(same(&ref_digest, &out_digest));
    jinn_queues_clear(&qs);
    jinn_wbuf_free(&ref);
    jinn_wbuf_free(&out);
    jinn_wbuf_free(&ref_digest);
    jinn_wbuf_free(&out_digest);
}

TEST(snapenc_job_results_section_is_byte_identical)
{
    struct jinn_wbuf ref, out;
    struct jinn_rbuf r;
    struct jinn_jobs jobs;
    struct jinn_fns fns;

    jinn_wbuf_init(&ref);
    jinn_wbuf_init(&out);
    jinn_jobs_init(&jobs);
    jinn_fns_init(&fns);
    jinn_wbuf_put_u64(&ref, 2);
    jinn_wbuf_put_str(&ref, "resize");
    jinn_wbuf_put_u64(&ref, 3);    /* seq */
    jinn_wbuf_put_u64(&ref, 40);   /* index */
    jinn_wbuf_put_u64(&ref, 1000); /* finished_ms */
    jinn_wbuf_put_u64(&ref, 2000); /* expires_ms */
    jinn_wbuf_put_u64(&ref, 1);    /* delivery */
    jinn_wbuf_put_u32(&ref, 200);
    jinn_wbuf_put_str(&ref, "n1/w0");
    jinn_wbuf_put_bytes(&ref, "{\"ok\":true}", 11);
    jinn_wbuf_put_str(&ref, "resize");
    jinn_wbuf_put_u64(&ref, 4);
    jinn_wbuf_put_u64(&ref, 41);
    jinn_wbuf_put_u64(&ref, 1001);
    jinn_wbuf_put_u64(&ref, 2001);
    jinn_wbuf_put_u64(&ref, 2);
    jinn_wbuf_put_u32(&ref, 500);
    jinn_wbuf_put_str(&ref, "n2/w1");
    jinn_wbuf_put_bytes(&ref, "", 0);
    jinn_wbuf_put_u64(&ref, 0); /* no crons */
    jinn_rbuf_init(&r, ref.data, ref.len);
    CHECK_INT(jinn_jobs_decode(&jobs, &fns, &r), 0);
    CHECK_INT(r.left, 0);
    jinn_jobs_encode(&jobs, &out);
    CHECK(same(&ref, &out));
    jinn_jobs_clear(&jobs);
    jinn_fns_clear(&fns);
    jinn_wbuf_free(&ref);
    jinn_wbuf_free(&out);
}

/* A failed buffer stays failed: the in-place writers never write past a
 * reserve that did not happen. */
TEST(snapenc_kv_encode_into_failed_buffer_writes_nothing)
{
    struct jinn_wbuf ref, out;
    struct jinn_rbuf r;
    struct jinn_kv kv;

    jinn_wbuf_init(&ref);
    jinn_wbuf_init(&out);
    jinn_kv_init(&kv);
    jinn_wbuf_put_u64(&ref, 1);
    jinn_wbuf_put_u64(&ref, 1);
    jinn_wbuf_put_bytes(&ref, "a", 1);
    jinn_wbuf_put_bytes(&ref, "k", 1);
    jinn_wbuf_put_bytes(&ref, "v", 1);
    jinn_wbuf_put_u64(&ref, 1);
    jinn_wbuf_put_u64(&ref, 1);
    jinn_wbuf_put_u64(&ref, 0);
    jinn_rbuf_init(&r, ref.data, ref.len);
    CHECK_INT(jinn_kv_decode(&kv, &r), 0);
    out.failed = true;
    jinn_kv_encode(&kv, &out);
    CHECK(out.failed);
    CHECK_INT(out.len, 0);
    jinn_kv_clear(&kv);
    jinn_wbuf_free(&ref);
    jinn_wbuf_free(&out);
}
