/* test_fnsig.c - signed modules: ed25519 through OpenSSL, the FN_POLICY
 * command, the policy in apply and in snapshots, hostile input. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"
#include "fsm/fnsig.h"
#include "fsm/fsm.h"
#include "fsm_apply.h"
#include "sha256.h"
#include "unit.h"

/* (module (memory (export "memory") 1) (func (export "_start"))) */
static const uint8_t mod_a[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00,
    0x00, 0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02,
    0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, 0x06, 0x5f, 0x73, 0x74,
    0x61, 0x72, 0x74, 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b};

static int hexval(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static void unhex(const char *h, uint8_t *out)
{
    for (size_t i = 0; h[2 * i] != '\0'; i++) {
        out[i] = (uint8_t)(hexval(h[2 * i]) << 4 | hexval(h[2 * i + 1]));
    }
}

/* RFC 8032 section 7.1, TEST 2 (one-byte message 0x72): what libsodium's
 * crypto_sign_detached gives too. */
TEST(fnsig_rfc8032_known_answer)
{
    uint8_t seed[32], pub[32], want_pub[32], sig[64], want_sig[64], msg = 0x72;
    unhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", seed);
    unhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", want_pub);
    unhex("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
          "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
          want_sig);
    CHECK_INT(jinn_fnsig_public(seed, pub), 0);
    CHECK(memcmp(pub, want_pub, 32) == 0);
    CHECK_INT(jinn_fnsig_sign(seed, &msg, 1, sig), 0);
    CHECK(memcmp(sig, want_sig, 64) == 0);
    CHECK_INT(jinn_fnsig_verify(pub, sig, &msg, 1), 0);
    msg = 0x73;
    CHECK_INT(jinn_fnsig_verify(pub, sig, &msg, 1), JINN_EUNSIGNED);
}

TEST(fnsig_keygen_sign_verify_and_tamper)
{
    uint8_t seed[32], pub[32], pub2[32], seed2[32], sig[64], sha[32], msg[JINN_FNSIG_MESSAGE_MAX];
    size_t n;
    CHECK_INT(jinn_fnsig_keygen(seed, pub), 0);
    CHECK_INT(jinn_fnsig_keygen(seed2, pub2), 0);
    CHECK(memcmp(pub, pub2, 32) != 0);
    CHECK_INT(jinn_sha256(mod_a, sizeof mod_a, sha), 0);
    n = jinn_fnsig_message("hello", 5, sha, msg);
    CHECK_INT(n, 15 + 5 + 1 + 32);
    CHECK(memcmp(msg, "jinn-fn-sig-v1\0hello\0", 21) == 0);
    CHECK_INT(jinn_fnsig_sign(seed, msg, n, sig), 0);
    CHECK_INT(jinn_fnsig_verify(pub, sig, msg, n), 0);
    CHECK_INT(jinn_fnsig_verify(pub2, sig, msg, n), JINN_EUNSIGNED); /* another key */
    sig[10] ^= 1;
    CHECK_INT(jinn_fnsig_verify(pub, sig, msg, n), JINN_EUNSIGNED); /* tampered */
    /* Any 32 bytes are a key that just never verifies. */
    memset(pub2, 0xff, 32);
    sig[10] ^= 1;
    CHECK_INT(jinn_fnsig_verify(pub2, sig, msg, n), JINN_EUNSIGNED);
    memset(sig, 0, 64);
    CHECK_INT(jinn_fnsig_verify(pub, sig, msg, n), JINN_EUNSIGNED);
}

TEST(fnsig_base64_strict)
{
    uint8_t out[64], pub[32];
    /* 32 bytes: 44 characters with one '='. */
    const char *ok = "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=";
    CHECK(jinn_fnsig_base64_decode(ok, strlen(ok), pub, 32));
    CHECK(pub[0] == 0x3d && pub[31] == 0x0c);
    CHECK(!jinn_fnsig_base64_decode(ok, strlen(ok) - 1, pub, 32));      /* short */
    CHECK(!jinn_fnsig_base64_decode(ok, strlen(ok), out, 31));          /* wrong size */
    CHECK(!jinn_fnsig_base64_decode(ok, strlen(ok), out, 33));
    CHECK(!jinn_fnsig_base64_decode("PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgx=", 44, pub,
                                    32)); /* non-zero unused bits */
    CHECK(!jinn_fnsig_base64_decode("PUAXw-hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=", 44, pub,
                                    32)); /* url alphabet */
    CHECK(!jinn_fnsig_base64_decode("PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zg==", 44, pub,
                                    32)); /* too much padding */
    CHECK(!jinn_fnsig_base64_decode("PUAX=+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=", 44, pub,
                                    32)); /* padding inside */
    CHECK(!jinn_fnsig_base64_decode("PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw\n", 44, pub,
                                    32));
    CHECK(!jinn_fnsig_base64_decode("", 0, pub, 32));
    CHECK(jinn_fnsig_key_name_valid("ci-2026.a_b", 11));
    CHECK(!jinn_fnsig_key_name_valid("-x", 2));
    CHECK(!jinn_fnsig_key_name_valid("A", 1));
    CHECK(!jinn_fnsig_key_name_valid("a/b", 3));
    CHECK(!jinn_fnsig_key_name_valid("", 0));
}

static struct jinn_cmd policy_cmd(uint8_t require, unsigned n, const char *const *names,
                                  const uint8_t (*pubs)[32])
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_POLICY;
    c.fn_policy.require_signature = require;
    c.fn_policy.n_keys = n;
    for (unsigned i = 0; i < n; i++) {
        c.fn_policy.key_name[i].p = (const uint8_t *)names[i];
        c.fn_policy.key_name[i].len = strlen(names[i]);
        c.fn_policy.key_pub[i] = pubs[i];
    }
    return c;
}

TEST(fnsig_policy_command_round_trip_and_hostile)
{
    static const char *const names[] = {"alice", "bob"};
    static const char *const unsorted[] = {"bob", "alice"};
    static const char *const dup[] = {"bob", "bob"};
    static const char *const bad[] = {"Bob"};
    uint8_t pubs[2][32];
    struct jinn_wbuf w;
    struct jinn_cmd c = policy_cmd(1, 2, names, (const uint8_t(*)[32])pubs), d;
    memset(pubs[0], 1, 32);
    memset(pubs[1], 2, 32);
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_cmd_encode(&c, &w), 0);
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), 0);
    CHECK_INT(d.type, JINN_CMD_FN_POLICY);
    CHECK_INT(d.fn_policy.require_signature, 1);
    CHECK_INT(d.fn_policy.n_keys, 2);
    CHECK(d.fn_policy.key_name[1].len == 3 && memcmp(d.fn_policy.key_name[1].p, "bob", 3) == 0);
    CHECK(memcmp(d.fn_policy.key_pub[1], pubs[1], 32) == 0);
    CHECK_STR(jinn_cmd_type_name(JINN_CMD_FN_POLICY), "fn_policy");
    /* Every truncation is refused. */
    for (size_t n = 0; n < w.len; n++) {
        CHECK(jinn_cmd_decode(w.data, n, &d) != 0);
    }
    /* The byte after the header is the flag: 2 is not a boolean. */
    w.data[JINN_CMD_HEADER_SIZE] = 2;
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    /* 17 keys declared. */
    w.data[JINN_CMD_HEADER_SIZE] = 1;
    w.data[JINN_CMD_HEADER_SIZE + 1] = 17;
    CHECK_INT(jinn_cmd_decode(w.data, w.len, &d), JINN_ECORRUPT);
    jinn_wbuf_free(&w);
    /* Non-canonical policies do not encode. */
    jinn_wbuf_init(&w);
    c = policy_cmd(1, 2, unsorted, (const uint8_t(*)[32])pubs);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    c = policy_cmd(1, 2, dup, (const uint8_t(*)[32])pubs);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    c = policy_cmd(1, 1, bad, (const uint8_t(*)[32])pubs);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    c = policy_cmd(2, 0, NULL, NULL);
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    c = policy_cmd(0, 0, NULL, NULL);
    c.fn_policy.n_keys = 17;
    CHECK_INT(jinn_cmd_encode(&c, &w), JINN_EINVAL);
    jinn_wbuf_free(&w);
}

static const char *default_settings(void)
{
    static char buf[4096];
    struct jinn_fn_settings s;
    struct jinn_wbuf w;
    jinn_fn_settings_defaults(&s);
    jinn_wbuf_init(&w);
    jinn_fn_settings_canonical(&s, &w);
    snprintf(buf, sizeof buf, "%.*s", (int)w.len, (const char *)w.data);
    jinn_wbuf_free(&w);
    return buf;
}

static struct jinn_cmd deploy2(const char *name, const uint8_t *module, size_t len,
                               const uint8_t *sig, const char *key)
{
    struct jinn_cmd c;
    const char *json = default_settings();
    memset(&c, 0, sizeof c);
    c.type = sig != NULL || key != NULL ? JINN_CMD_FN_DEPLOY2 : JINN_CMD_FN_DEPLOY;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    c.fn.module.p = module;
    c.fn.module.len = len;
    c.fn.settings.p = (const uint8_t *)json;
    c.fn.settings.len = strlen(json);
    if (sig != NULL) {
        c.fn.signature.p = sig;
        c.fn.signature.len = 64;
    }
    if (key != NULL) {
        c.fn.key_id.p = (const uint8_t *)key;
        c.fn.key_id.len = strlen(key);
    }
    return c;
}

static void sign_for(const uint8_t seed[32], const char *name, const uint8_t *module,
                     size_t len, uint8_t sig[64])
{
    uint8_t sha[32], msg[JINN_FNSIG_MESSAGE_MAX];
    size_t n;
    jinn_sha256(module, len, sha);
    n = jinn_fnsig_message(name, strlen(name), sha, msg);
    jinn_fnsig_sign(seed, msg, n, sig);
}

TEST(fnsig_apply_enforces_policy_and_snapshots_it)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w, w2;
    uint8_t seed[32], pubs[1][32], seed_other[32], pub_other[32], sig[64], bad[64];
    uint8_t *tampered;
    static const char *const names[] = {"ci"};
    const struct jinn_result *r;

    CHECK_INT(jinn_fnsig_keygen(seed, pubs[0]), 0);
    CHECK_INT(jinn_fnsig_keygen(seed_other, pub_other), 0);
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    /* Policy off: anything deploys, signed or not. */
    r = unit_apply(&a, 1, 1000, deploy2("free", mod_a, sizeof mod_a, NULL, NULL));
    CHECK(r != NULL && r->code == 0);
    r = unit_apply(&a, 2, 1000, policy_cmd(1, 1, names, (const uint8_t(*)[32])pubs));
    CHECK(r != NULL && r->code == 0);
    CHECK(a.fns.policy.require_signature && a.fns.policy.n_keys == 1);
    /* Unsigned: refused, as type 23 and as type 28 without a signature. */
    r = unit_apply(&a, 3, 1000, deploy2("hello", mod_a, sizeof mod_a, NULL, NULL));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    r = unit_apply(&a, 4, 1000, deploy2("hello", mod_a, sizeof mod_a, NULL, "ci"));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    /* Signed by the trusted key: installed. */
    sign_for(seed, "hello", mod_a, sizeof mod_a, sig);
    r = unit_apply(&a, 5, 1000, deploy2("hello", mod_a, sizeof mod_a, sig, "ci"));
    CHECK_INT(r->code, 0);
    CHECK(jinn_fns_get(&a.fns, "hello") != NULL);
    /* The same signature under another function name, another key name, a
     * key the cluster does not trust, or a tampered module: refused. */
    r = unit_apply(&a, 6, 1000, deploy2("billing", mod_a, sizeof mod_a, sig, "ci"));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    r = unit_apply(&a, 7, 1000, deploy2("hello", mod_a, sizeof mod_a, sig, "other"));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    sign_for(seed_other, "hello", mod_a, sizeof mod_a, bad);
    r = unit_apply(&a, 8, 1000, deploy2("hello", mod_a, sizeof mod_a, bad, "ci"));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    tampered = jinn_malloc(sizeof mod_a + 8);
    memcpy(tampered, mod_a, sizeof mod_a);
    memcpy(tampered + sizeof mod_a, "\x00\x06\x01x12345", 8); /* a custom section */
    r = unit_apply(&a, 9, 1000, deploy2("hello2", tampered, sizeof mod_a + 8, sig, "ci"));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    jinn_free(tampered);
    CHECK(jinn_fns_get(&a.fns, "billing") == NULL && jinn_fns_get(&a.fns, "hello2") == NULL);

    /* The policy survives a snapshot, byte for byte, and still enforces. */
    jinn_wbuf_init(&w);
    jinn_wbuf_init(&w2);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    CHECK_INT(jinn_fsm_encode(&b, &w2), 0);
    CHECK(w.len == w2.len && memcmp(w.data, w2.data, w.len) == 0);
    CHECK(b.fns.policy.require_signature && b.fns.policy.n_keys == 1);
    CHECK_STR(b.fns.policy.keys[0].name, "ci");
    r = unit_apply(&b, 10, 1000, deploy2("other", mod_a, sizeof mod_a, NULL, NULL));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    /* Turned off again: unsigned deploys pass. */
    r = unit_apply(&b, 11, 1000, policy_cmd(0, 0, NULL, NULL));
    CHECK_INT(r->code, 0);
    r = unit_apply(&b, 12, 1000, deploy2("other", mod_a, sizeof mod_a, NULL, NULL));
    CHECK_INT(r->code, 0);
    jinn_wbuf_free(&w);
    jinn_wbuf_free(&w2);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}

TEST(fnsig_signature_check_says_why)
{
    struct jinn_fns fns;
    uint8_t seed[32], sha[32], sig[64], msg[JINN_FNSIG_MESSAGE_MAX];
    const char *why;
    size_t n;
    jinn_fns_init(&fns);
    CHECK_INT(jinn_fnsig_keygen(seed, fns.policy.keys[0].pub), 0);
    strcpy(fns.policy.keys[0].name, "ci");
    fns.policy.n_keys = 1;
    memset(sha, 7, 32);
    n = jinn_fnsig_message("f", 1, sha, msg);
    jinn_fnsig_sign(seed, msg, n, sig);
    /* Off: nothing is looked at. */
    CHECK_INT(jinn_fns_signature_check(&fns, "f", 1, sha, NULL, 0, NULL, 0, &why), 0);
    fns.policy.require_signature = true;
    CHECK_INT(jinn_fns_signature_check(&fns, "f", 1, sha, NULL, 0, NULL, 0, &why),
              JINN_EUNSIGNED);
    CHECK(strstr(why, "not signed") != NULL);
    CHECK_INT(jinn_fns_signature_check(&fns, "f", 1, sha, sig, 64, (const uint8_t *)"cx", 2,
                                       &why),
              JINN_EUNSIGNED);
    CHECK(strstr(why, "not trusted") != NULL);
    CHECK_INT(jinn_fns_signature_check(&fns, "f", 1, sha, sig, 63, (const uint8_t *)"ci", 2,
                                       &why),
              JINN_EUNSIGNED);
    CHECK_INT(jinn_fns_signature_check(&fns, "f", 1, sha, sig, 64, (const uint8_t *)"ci", 2,
                                       &why),
              0);
    sha[0] ^= 1;
    CHECK_INT(jinn_fns_signature_check(&fns, "f", 1, sha, sig, 64, (const uint8_t *)"ci", 2,
                                       &why),
              JINN_EUNSIGNED);
    CHECK(strstr(why, "does not verify") != NULL);
    jinn_fns_clear(&fns);
}

static struct jinn_cmd rollback_cmd(const char *name, uint64_t version)
{
    struct jinn_cmd c;
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_ROLLBACK;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    c.fn.version = version;
    return c;
}

/* R2 M2: a rollback under require_signature re-verifies the target
 * version's recorded signature with the keys trusted at the time. */
TEST(fnsig_rollback_needs_a_trusted_signature)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w;
    uint8_t seed[32], pubs[2][32], sig_a[64], sig_b[64], sig2_a[64], sig2_b[64];
    uint8_t mod_b[sizeof mod_a + 8];
    static const char *const ci[] = {"ci"};
    static const char *const other[] = {"other"};
    const struct jinn_result *r;

    memcpy(mod_b, mod_a, sizeof mod_a);
    memcpy(mod_b + sizeof mod_a, "\x00\x06\x01x12345", 8); /* a custom section */
    CHECK_INT(jinn_fnsig_keygen(seed, pubs[0]), 0);
    {
        uint8_t seed_other[32];
        CHECK_INT(jinn_fnsig_keygen(seed_other, pubs[1]), 0);
    }
    sign_for(seed, "greet", mod_b, sizeof mod_b, sig_b);
    sign_for(seed, "greet", mod_a, sizeof mod_a, sig_a);
    sign_for(seed, "fine", mod_a, sizeof mod_a, sig2_a);
    sign_for(seed, "fine", mod_b, sizeof mod_b, sig2_b);
    jinn_fsm_init(&a);
    jinn_fsm_init(&b);
    /* v1 unsigned (policy off), then the policy, then v2 signed. */
    r = unit_apply(&a, 1, 1000, deploy2("greet", mod_a, sizeof mod_a, NULL, NULL));
    CHECK_INT(r->code, 0);
    r = unit_apply(&a, 2, 1000, policy_cmd(1, 1, ci, (const uint8_t(*)[32])pubs));
    CHECK_INT(r->code, 0);
    r = unit_apply(&a, 3, 1000, deploy2("greet", mod_b, sizeof mod_b, sig_b, "ci"));
    CHECK_INT(r->code, 0);
    CHECK_INT(r->value, 2);
    r = unit_apply(&a, 4, 1000, rollback_cmd("greet", 1));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    r = unit_apply(&a, 5, 1000, rollback_cmd("greet", 0)); /* "the one before" */
    CHECK_INT(r->code, JINN_EUNSIGNED);
    CHECK_INT(jinn_fns_get(&a.fns, "greet")->active->version, 2);
    /* Both versions signed: the rollback goes through. */
    r = unit_apply(&a, 6, 1000, deploy2("fine", mod_a, sizeof mod_a, sig2_a, "ci"));
    CHECK_INT(r->code, 0);
    r = unit_apply(&a, 7, 1000, deploy2("fine", mod_b, sizeof mod_b, sig2_b, "ci"));
    CHECK_INT(r->code, 0);
    r = unit_apply(&a, 8, 1000, rollback_cmd("fine", 1));
    CHECK_INT(r->code, 0);
    CHECK_INT(jinn_fns_get(&a.fns, "fine")->active->version, 1);
    /* Signatures survive a snapshot; untrusting their key refuses the
     * rollback on the restored replica too. */
    jinn_wbuf_init(&w);
    CHECK_INT(jinn_fsm_encode(&a, &w), 0);
    CHECK_INT(jinn_fsm_decode(&b, w.data, w.len), 0);
    r = unit_apply(&b, 9, 1000, rollback_cmd("fine", 2));
    CHECK_INT(r->code, 0);
    r = unit_apply(&b, 10, 1000, policy_cmd(1, 1, other, (const uint8_t(*)[32])&pubs[1]));
    CHECK_INT(r->code, 0);
    r = unit_apply(&b, 11, 1000, rollback_cmd("fine", 1));
    CHECK_INT(r->code, JINN_EUNSIGNED);
    CHECK_INT(jinn_fns_get(&b.fns, "fine")->active->version, 2);
    /* Policy off: rollbacks are free again. */
    r = unit_apply(&b, 12, 1000, policy_cmd(0, 0, NULL, NULL));
    CHECK_INT(r->code, 0);
    r = unit_apply(&b, 13, 1000, rollback_cmd("greet", 1));
    CHECK_INT(r->code, 0);
    jinn_wbuf_free(&w);
    jinn_fsm_close(&a);
    jinn_fsm_close(&b);
}
