/* fnsig.h - signed function modules (issue 15 item 5).
 *
 * Ed25519 (RFC 8032) through OpenSSL 3's EVP_PKEY_ED25519: the same
 * algorithm and 64-byte signature format as libsodium's
 * crypto_sign_detached, so keys and signatures made with either work with
 * the other; no new dependency.
 *
 * What is signed (a deploy refused under require_signature unless it
 * verifies, identically on every replica):
 *
 *   "jinn-fn-sig-v1" 0x00 NAME 0x00 SHA256(module bytes)
 *
 * The function name is bound so that a module signed as "hello" cannot be
 * deployed as "billing"; the settings are not (they are the deployer's
 * scope, checked by tokens: S2). Files: NAME.key holds base64(seed[32] ||
 * public[32]) (libsodium's secret key layout), NAME.pub base64(public[32]),
 * MODULE.sig base64(signature[64]); each one line. */
#ifndef JINN_FSM_FNSIG_H
#define JINN_FSM_FNSIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINN_FNSIG_PUB_SIZE 32
#define JINN_FNSIG_SEED_SIZE 32
#define JINN_FNSIG_SIZE 64
#define JINN_FNSIG_KEY_NAME_MAX 64 /* [a-z0-9][a-z0-9_.-]{0,63} */
#define JINN_FNSIG_TRUSTED_MAX 16  /* trusted keys in the cluster policy */
/* "jinn-fn-sig-v1\0" + name + "\0" + sha256 */
#define JINN_FNSIG_MESSAGE_MAX (15 + 64 + 1 + 32)

/* The bytes signed for a module with this sha256 deployed as name;
 * returns their length (out holds JINN_FNSIG_MESSAGE_MAX). */
size_t jinn_fnsig_message(const char *name, size_t name_len, const uint8_t sha256[32],
                          uint8_t *out);

/* 0 when sig is pub's signature of msg, JINN_EUNSIGNED when it is not
 * (any 32 bytes are accepted as a key: a bad point never verifies), or
 * JINN_ENOMEM (OpenSSL could not allocate: the caller, an apply, stops the
 * node rather than turn that into a result). Deterministic. */
int jinn_fnsig_verify(const uint8_t pub[32], const uint8_t sig[64], const uint8_t *msg,
                      size_t len);

/* A new key pair. 0, or JINN_EINTERNAL. */
int jinn_fnsig_keygen(uint8_t seed[32], uint8_t pub[32]);
/* Signs msg with the key whose seed is given. 0, or JINN_EINTERNAL. */
int jinn_fnsig_sign(const uint8_t seed[32], const uint8_t *msg, size_t len, uint8_t sig[64]);
/* The public key of a seed. 0, or JINN_EINTERNAL. */
int jinn_fnsig_public(const uint8_t seed[32], uint8_t pub[32]);

/* Strict standard base64 (RFC 4648, padding required, no whitespace) of
 * exactly want bytes: true and out filled, or false. */
bool jinn_fnsig_base64_decode(const char *text, size_t len, uint8_t *out, size_t want);

/* [a-z0-9][a-z0-9_.-]{0,63} */
bool jinn_fnsig_key_name_valid(const char *name, size_t len);

#endif
