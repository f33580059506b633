/* snapfile.c - see snapfile.h. */
#include "fsm/snapfile.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/fsm.h"

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

void jinn_backup_header_encode(const struct jinn_backup_header *h,
                               uint8_t out[JINN_BACKUP_HEADER_LEN])
{
    memcpy(out, JINN_BACKUP_MAGIC, 8);
    put32(out + 8, h->version);
    put32(out + 12, h->snapshot_version);
    put32(out + 16, h->cmd_version);
    put32(out + 20, h->chunk_size);
    put64(out + 24, h->cluster_id);
    put64(out + 32, h->index);
    put64(out + 40, h->term);
    put64(out + 48, h->time_ms);
    put64(out + 56, h->payload_len);
    put32(out + 64, jinn_crc32(0, out, 64));
}

int jinn_backup_header_decode(const uint8_t *in, size_t len, struct jinn_backup_header *h,
                              char *err, size_t err_len)
{
    if (len < 12 || memcmp(in, JINN_BACKUP_MAGIC, 8) != 0) {
        snprintf(err, err_len, "not a jinn snapshot file (no JINNBKUP header)");
        return JINN_ECORRUPT;
    }
    /* The version before the checksum: a newer layout may differ. */
    h->version = get32(in + 8);
    if (h->version != JINN_BACKUP_VERSION) {
        snprintf(
            err, err_len,
            "snapshot file version %u; this build reads version %u only (use a newer jinn)",
            h->version, JINN_BACKUP_VERSION);
        return JINN_EVERSION;
    }
    if (len < JINN_BACKUP_HEADER_LEN) {
        snprintf(err, err_len, "truncated header (%zu of %u bytes)", len,
                 JINN_BACKUP_HEADER_LEN);
        return JINN_ECORRUPT;
    }
    if (get32(in + 64) != jinn_crc32(0, in, 64)) {
        snprintf(err, err_len, "header checksum mismatch (the file is damaged)");
        return JINN_ECORRUPT;
    }
    h->snapshot_version = get32(in + 12);
    h->cmd_version = get32(in + 16);
    h->chunk_size = get32(in + 20);
    h->cluster_id = get64(in + 24);
    h->index = get64(in + 32);
    h->term = get64(in + 40);
    h->time_ms = get64(in + 48);
    h->payload_len = get64(in + 56);
    /* Every snapshot format jinn_fsm_decode still reads (rev1 m1). */
    if (h->snapshot_version < JINN_SNAPSHOT_VERSION_MIN ||
        h->snapshot_version > JINN_SNAPSHOT_VERSION) {
        snprintf(err, err_len,
                 "the snapshot inside has format version %u; this build reads versions %u-%u "
                 "(use a newer jinn)",
                 h->snapshot_version, JINN_SNAPSHOT_VERSION_MIN, JINN_SNAPSHOT_VERSION);
        return JINN_EVERSION;
    }
    if (h->chunk_size == 0 || h->chunk_size > JINN_BACKUP_CHUNK_MAX ||
        h->payload_len > JINN_BACKUP_PAYLOAD_MAX) {
        snprintf(err, err_len, "header has chunk size %u and payload %llu bytes: out of range",
                 h->chunk_size, (unsigned long long)h->payload_len);
        return JINN_ECORRUPT;
    }
    return 0;
}

uint64_t jinn_backup_chunks(const struct jinn_backup_header *h)
{
    return (h->payload_len + h->chunk_size - 1) / h->chunk_size;
}

uint64_t jinn_backup_file_size(const struct jinn_backup_header *h)
{
    return JINN_BACKUP_HEADER_LEN + h->payload_len + 4 * jinn_backup_chunks(h) +
           JINN_BACKUP_TRAILER_LEN;
}

void jinn_backup_trailer_encode(uint64_t payload_len, uint32_t crc,
                                uint8_t out[JINN_BACKUP_TRAILER_LEN])
{
    memcpy(out, JINN_BACKUP_END_MAGIC, 8);
    put64(out + 8, payload_len);
    put32(out + 16, crc);
    put32(out + 20, jinn_crc32(0, out, 20));
}

/* Reads exactly n bytes; a short read is a truncated file. */
static int read_exact(FILE *f, void *buf, size_t n, const char *what, uint64_t offset,
                      char *err, size_t err_len)
{
    size_t got = fread(buf, 1, n, f);
    if (got == n) {
        return 0;
    }
    if (ferror(f)) {
        snprintf(err, err_len, "read error at byte %llu: %s", (unsigned long long)offset,
                 strerror(errno));
        return JINN_EIO;
    }
    snprintf(err, err_len, "truncated: the file ends at byte %llu, inside %s",
             (unsigned long long)(offset + got), what);
    return JINN_ECORRUPT;
}

int jinn_backup_read_file(FILE *f, struct jinn_backup_header *h, struct jinn_wbuf *payload,
                          char *err, size_t err_len)
{
    uint8_t head[JINN_BACKUP_HEADER_LEN], tail[JINN_BACKUP_TRAILER_LEN], crcb[4];
    uint8_t *chunk = NULL;
    uint64_t offset = 0, left, n_chunks;
    uint32_t total = 0;
    size_t got;
    int rv;

    got = fread(head, 1, sizeof head, f);
    if (ferror(f)) {
        snprintf(err, err_len, "read error: %s", strerror(errno));
        return JINN_EIO;
    }
    rv = jinn_backup_header_decode(head, got, h, err, err_len);
    if (rv != 0) {
        return rv;
    }
    offset = sizeof head;
    chunk = jinn_malloc(h->chunk_size);
    if (chunk == NULL) {
        snprintf(err, err_len, "out of memory");
        return JINN_ENOMEM;
    }
    left = h->payload_len;
    n_chunks = jinn_backup_chunks(h);
    for (uint64_t i = 0; i < n_chunks; i++) {
        size_t n = left < h->chunk_size ? (size_t)left : h->chunk_size;
        char what[64];
        snprintf(what, sizeof what, "chunk %llu of %llu", (unsigned long long)i + 1,
                 (unsigned long long)n_chunks);
        rv = read_exact(f, chunk, n, what, offset, err, err_len);
        if (rv == 0) {
            rv = read_exact(f, crcb, 4, what, offset + n, err, err_len);
        }
        if (rv != 0) {
            goto out;
        }
        if (get32(crcb) != jinn_crc32(0, chunk, n)) {
            snprintf(err, err_len,
                     "checksum mismatch in %s (bytes %llu-%llu): the file is damaged", what,
                     (unsigned long long)offset, (unsigned long long)(offset + n - 1));
            rv = JINN_ECORRUPT;
            goto out;
        }
        total = jinn_crc32(total, chunk, n);
        if (payload != NULL) {
            jinn_wbuf_put_raw(payload, chunk, n);
            if (payload->failed) {
                snprintf(err, err_len, "out of memory");
                rv = JINN_ENOMEM;
                goto out;
            }
        }
        offset += n + 4;
        left -= n;
    }
    rv = read_exact(f, tail, sizeof tail, "the trailer", offset, err, err_len);
    if (rv != 0) {
        goto out;
    }
    if (memcmp(tail, JINN_BACKUP_END_MAGIC, 8) != 0 ||
        get32(tail + 20) != jinn_crc32(0, tail, 20) || get64(tail + 8) != h->payload_len) {
        snprintf(err, err_len, "damaged trailer at byte %llu", (unsigned long long)offset);
        rv = JINN_ECORRUPT;
        goto out;
    }
    if (get32(tail + 16) != total) {
        snprintf(err, err_len, "whole-payload checksum mismatch: the file is damaged");
        rv = JINN_ECORRUPT;
        goto out;
    }
    if (fgetc(f) != EOF) {
        snprintf(err, err_len, "unexpected bytes after the trailer (byte %llu)",
                 (unsigned long long)(offset + sizeof tail));
        rv = JINN_ECORRUPT;
        goto out;
    }
out:
    jinn_free(chunk);
    return rv;
}
