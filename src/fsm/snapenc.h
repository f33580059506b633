/* snapenc.h - unchecked field writers for the snapshot section encoders. */
#ifndef JINN_SNAPENC_H
#define JINN_SNAPENC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Unchecked writers for encoders of large sections (snapshots): the caller
 * reserves the item's exact size once (jinn_wbuf_reserve), writes its
 * fields straight into w->data + w->len with these, then adds the size to
 * w->len. Same byte layout as the jinn_wbuf_put_* functions; what they save
 * is a bounds check and a call per field, which is most of a snapshot's
 * time on the event loop for a few hundred thousand small items. */
static inline uint8_t *jinn_enc_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + 4;
}

static inline uint8_t *jinn_enc_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + 8;
}

/* A length-prefixed byte string; n must fit a u32 (checked by the caller's
 * sizing, which the jinn_wbuf_put_bytes bound also applies). */
static inline uint8_t *jinn_enc_bytes(uint8_t *p, const void *src, size_t n)
{
    p = jinn_enc_u32(p, (uint32_t)n);
    if (n != 0) {
        memcpy(p, src, n);
    }
    return p + n;
}

#endif
