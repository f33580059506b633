/* sha256.h - SHA-256, through OpenSSL's libcrypto.
 *
 * Modules are content-addressed by their SHA-256 (the registry's key, the
 * compile cache's directory name, the checksum of a cached shared object).
 * One wrapper so every caller hashes the same way. */
#ifndef JINN_SHA256_H
#define JINN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define JINN_SHA256_LEN 32
#define JINN_SHA256_HEX_LEN 64 /* without the NUL */

/* out = SHA-256(data[0..len)). Returns 0, or JINN_ENOMEM when libcrypto
 * could not allocate its context (out is then zeroed). */
int jinn_sha256(const void *data, size_t len, uint8_t out[JINN_SHA256_LEN]);

/* out = SHA-256 of the file at path, read in chunks (no size limit).
 * Returns 0, JINN_EIO (errno kept) when it cannot be opened or read, or
 * JINN_ENOMEM. */
int jinn_sha256_file(const char *path, uint8_t out[JINN_SHA256_LEN]);

/* Lower-case hex of a digest into hex (65 bytes with the NUL). */
void jinn_sha256_hex(const uint8_t sha[JINN_SHA256_LEN], char hex[JINN_SHA256_HEX_LEN + 1]);

/* Parses exactly 64 hex digits (either case) followed by the end of the
 * string. Returns 0, or JINN_EINVAL. */
int jinn_sha256_from_hex(const char *hex, uint8_t sha[JINN_SHA256_LEN]);

#endif
