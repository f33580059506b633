/* codec.h - bounds-checked little-endian binary encoding.
 *
 * Every durable or wire format jinn owns (log commands, snapshots) is built
 * with a jinn_wbuf and read back with a jinn_rbuf. Both carry a sticky error
 * flag so a decoder can read a whole record and check once at the end: a
 * truncated or oversized field never reads outside the buffer. */
#ifndef JINN_CODEC_H
#define JINN_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jinn_wbuf {
    uint8_t *data; /* owned; grows with jinn_realloc */
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; data is incomplete */
};

void jinn_wbuf_init(struct jinn_wbuf *w);
void jinn_wbuf_free(struct jinn_wbuf *w);
/* Makes sure n more bytes fit; false (and failed set) on out-of-memory. */
bool jinn_wbuf_reserve(struct jinn_wbuf *w, size_t n);
void jinn_wbuf_put_u8(struct jinn_wbuf *w, uint8_t v);
void jinn_wbuf_put_u32(struct jinn_wbuf *w, uint32_t v);
void jinn_wbuf_put_u64(struct jinn_wbuf *w, uint64_t v);
void jinn_wbuf_put_raw(struct jinn_wbuf *w, const void *p, size_t n);
/* A length-prefixed (u32) byte string. */
void jinn_wbuf_put_bytes(struct jinn_wbuf *w, const void *p, size_t n);
void jinn_wbuf_put_str(struct jinn_wbuf *w, const char *s);
/* Overwrites a u32 at offset (used to patch lengths and checksums). */
void jinn_wbuf_patch_u32(struct jinn_wbuf *w, size_t offset, uint32_t v);
/* Appends printf-style text (no NUL). */
void jinn_wbuf_printf(struct jinn_wbuf *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

struct jinn_rbuf {
    const uint8_t *p; /* borrowed */
    size_t left;
    bool failed; /* a read ran past the end or a field was malformed */
};

void jinn_rbuf_init(struct jinn_rbuf *r, const void *data, size_t len);
uint8_t jinn_rbuf_get_u8(struct jinn_rbuf *r);
uint32_t jinn_rbuf_get_u32(struct jinn_rbuf *r);
uint64_t jinn_rbuf_get_u64(struct jinn_rbuf *r);
/* Points *out into the buffer (borrowed); returns the length. A length
 * above max or past the end fails the reader. */
size_t jinn_rbuf_get_bytes(struct jinn_rbuf *r, const uint8_t **out, size_t max);
/* Returns a NUL-terminated copy (caller frees) or NULL on failure; a string
 * holding a NUL byte is malformed. */
char *jinn_rbuf_get_str(struct jinn_rbuf *r, size_t max);
const uint8_t *jinn_rbuf_get_raw(struct jinn_rbuf *r, size_t n);

/* True when p[0..n) is well-formed UTF-8 (no overlongs, no surrogates). */
bool jinn_utf8_valid(const void *p, size_t n);

/* Appends the standard base64 encoding of p[0..n) to w (no NUL). */
void jinn_wbuf_put_base64(struct jinn_wbuf *w, const void *p, size_t n);

/* CRC-32 (IEEE), continuing from crc (start with 0). */
uint32_t jinn_crc32(uint32_t crc, const void *data, size_t len);

#endif
