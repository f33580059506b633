/* fnsig.c - see fnsig.h. */
#include "fsm/fnsig.h"

#include <openssl/evp.h>
#include <string.h>

#include "error.h"

#define DOMAIN "jinn-fn-sig-v1"

size_t jinn_fnsig_message(const char *name, size_t name_len, const uint8_t sha256[32],
                          uint8_t *out)
{
    size_t n = 0;
    if (name_len > JINN_FNSIG_KEY_NAME_MAX) {
        name_len = JINN_FNSIG_KEY_NAME_MAX; /* function names are at most 64 too */
    }
    memcpy(out, DOMAIN, sizeof DOMAIN); /* with its NUL */
    n += sizeof DOMAIN;
    memcpy(out + n, name, name_len);
    n += name_len;
    out[n++] = 0;
    memcpy(out + n, sha256, 32);
    return n + 32;
}

int jinn_fnsig_verify(const uint8_t pub[32], const uint8_t sig[64], const uint8_t *msg,
                      size_t len)
{
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *ctx = NULL;
    int rv = JINN_ENOMEM, ok;

    /* Ed25519 keys are copied, not decoded, here: only allocation fails. */
    if (key == NULL) {
        goto out;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) != 1) {
        goto out;
    }
    ok = EVP_DigestVerify(ctx, sig, 64, msg, len);
    rv = ok == 1 ? 0 : ok == 0 ? JINN_EUNSIGNED : JINN_ENOMEM;
out:
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return rv;
}

int jinn_fnsig_public(const uint8_t seed[32], uint8_t pub[32])
{
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    size_t n = 32;
    int rv = JINN_EINTERNAL;
    if (key != NULL && EVP_PKEY_get_raw_public_key(key, pub, &n) == 1 && n == 32) {
        rv = 0;
    }
    EVP_PKEY_free(key);
    return rv;
}

int jinn_fnsig_keygen(uint8_t seed[32], uint8_t pub[32])
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t ns = 32, np = 32;
    int rv = JINN_EINTERNAL;
    if (key != NULL && EVP_PKEY_get_raw_private_key(key, seed, &ns) == 1 && ns == 32 &&
        EVP_PKEY_get_raw_public_key(key, pub, &np) == 1 && np == 32) {
        rv = 0;
    }
    EVP_PKEY_free(key);
    return rv;
}

int jinn_fnsig_sign(const uint8_t seed[32], const uint8_t *msg, size_t len, uint8_t sig[64])
{
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = 64;
    int rv = JINN_EINTERNAL;
    if (key != NULL && ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
        EVP_DigestSign(ctx, sig, &n, msg, len) == 1 && n == 64) {
        rv = 0;
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return rv;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return -1;
}

bool jinn_fnsig_base64_decode(const char *text, size_t len, uint8_t *out, size_t want)
{
    size_t o = 0;
    if (want == 0 || len != (want + 2) / 3 * 4) {
        return false;
    }
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        unsigned pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = text[i + (size_t)k];
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad > 0 || (v[k] = b64_value(c)) < 0) {
                return false; /* a character after '=', or outside the alphabet */
            }
        }
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                        (uint32_t)v[3];
        uint8_t b[3] = {(uint8_t)(bits >> 16), (uint8_t)(bits >> 8), (uint8_t)bits};
        for (unsigned k = 0; k < 3 - pad; k++) {
            if (o == want) {
                return false;
            }
            out[o++] = b[k];
        }
        /* Canonical: the bits a padded group does not use are zero. */
        if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0)) {
            return false;
        }
    }
    return o == want;
}

bool jinn_fnsig_key_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > JINN_FNSIG_KEY_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (i > 0 && (c == '_' || c == '-' || c == '.'));
        if (!ok) {
            return false;
        }
    }
    return true;
}
