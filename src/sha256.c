/* sha256.c - SHA-256 through libcrypto's EVP interface (see sha256.h). */
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

int jinn_sha256(const void *data, size_t len, uint8_t out[JINN_SHA256_LEN])
{
    unsigned int n = 0;
    /* EVP_Digest allocates a context inside: its failure is out-of-memory
     * (SHA-256 is always available in libcrypto's default provider). */
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != JINN_SHA256_LEN) {
        memset(out, 0, JINN_SHA256_LEN);
        return JINN_ENOMEM;
    }
    return 0;
}

int jinn_sha256_file(const char *path, uint8_t out[JINN_SHA256_LEN])
{
    uint8_t buf[65536];
    EVP_MD_CTX *ctx = NULL;
    unsigned int n = 0;
    int fd = -1, rv = JINN_ENOMEM, saved = 0;

    memset(out, 0, JINN_SHA256_LEN);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        saved = errno;
        rv = JINN_EIO;
        goto cleanup;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        goto cleanup;
    }
    for (;;) {
        ssize_t got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            saved = errno;
            rv = JINN_EIO;
            goto cleanup;
        }
        if (got == 0) {
            break;
        }
        if (EVP_DigestUpdate(ctx, buf, (size_t)got) != 1) {
            goto cleanup;
        }
    }
    if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != JINN_SHA256_LEN) {
        memset(out, 0, JINN_SHA256_LEN);
        goto cleanup;
    }
    rv = 0;
cleanup:
    EVP_MD_CTX_free(ctx);
    if (fd >= 0) {
        close(fd);
    }
    if (saved != 0) {
        errno = saved;
    }
    return rv;
}

void jinn_sha256_hex(const uint8_t sha[JINN_SHA256_LEN], char hex[JINN_SHA256_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < JINN_SHA256_LEN; i++) {
        hex[2 * i] = digits[sha[i] >> 4];
        hex[2 * i + 1] = digits[sha[i] & 15];
    }
    hex[JINN_SHA256_HEX_LEN] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int jinn_sha256_from_hex(const char *hex, uint8_t sha[JINN_SHA256_LEN])
{
    uint8_t tmp[JINN_SHA256_LEN];
    for (size_t i = 0; i < JINN_SHA256_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo;
        if (hi < 0) {
            return JINN_EINVAL;
        }
        lo = hexval(hex[2 * i + 1]);
        if (lo < 0) {
            return JINN_EINVAL;
        }
        tmp[i] = (uint8_t)(hi << 4 | lo);
    }
    if (hex[JINN_SHA256_HEX_LEN] != '\0') {
        return JINN_EINVAL;
    }
    memcpy(sha, tmp, sizeof tmp);
    return 0;
}
