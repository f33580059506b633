/* snapfile.h - the backup file: a versioned, checksummed container around
 * the bytes of jinn_fsm_encode (the snapshot format, fsm.c).
 *
 * Layout (integers little-endian):
 *
 *   header, 68 bytes:
 *     "JINNBKUP"  u32 file version (1)  u32 snapshot format version
 *     u32 command format version of the writer  u32 chunk size
 *     u64 cluster id  u64 raft index  u64 raft term  u64 cluster time (ms)
 *     u64 payload length  u32 crc32 of the 64 bytes before it
 *   payload in chunks of `chunk size` bytes (the last one shorter), each
 *     followed by the u32 crc32 of that chunk
 *   trailer, 24 bytes:
 *     "JINNEND!"  u64 payload length  u32 crc32 of the whole payload
 *     u32 crc32 of the 20 trailer bytes before it
 *
 * The payload is itself a snapshot with its own magic, version and CRC;
 * the container adds what a file on a shelf needs: who and when, a length
 * that tells a truncated file from a whole one, and a checksum per chunk
 * so a reader can verify while it streams. */
#ifndef JINN_SNAPFILE_H
#define JINN_SNAPFILE_H

#include <stdint.h>
#include <stdio.h>

#include "codec.h"

#define JINN_BACKUP_MAGIC "JINNBKUP"
#define JINN_BACKUP_END_MAGIC "JINNEND!"
#define JINN_BACKUP_VERSION 1
#define JINN_BACKUP_HEADER_LEN 68
#define JINN_BACKUP_TRAILER_LEN 24
#define JINN_BACKUP_CHUNK (1u << 20)
/* A reader refuses chunk sizes outside this range (a hostile header must
 * not make it allocate gigabytes) and payloads past this length. */
#define JINN_BACKUP_CHUNK_MAX (64u << 20)
#define JINN_BACKUP_PAYLOAD_MAX (UINT64_C(64) << 30)

struct jinn_backup_header {
    uint32_t version;          /* JINN_BACKUP_VERSION */
    uint32_t snapshot_version; /* the payload's format (JINN_SNAPSHOT_VERSION) */
    uint32_t cmd_version;      /* the writer's JINN_CMD_VERSION (information) */
    uint32_t chunk_size;
    uint64_t cluster_id;
    uint64_t index;
    uint64_t term;
    uint64_t time_ms; /* cluster time of the state */
    uint64_t payload_len;
};

void jinn_backup_header_encode(const struct jinn_backup_header *h,
                               uint8_t out[JINN_BACKUP_HEADER_LEN]);

/* 0, JINN_ECORRUPT (not a backup file, or a damaged header) or
 * JINN_EVERSION (a file or snapshot version this build does not read); a
 * message for people in err. */
int jinn_backup_header_decode(const uint8_t *in, size_t len, struct jinn_backup_header *h,
                              char *err, size_t err_len);

/* Number of chunks, and the size of the whole file. */
uint64_t jinn_backup_chunks(const struct jinn_backup_header *h);
uint64_t jinn_backup_file_size(const struct jinn_backup_header *h);

void jinn_backup_trailer_encode(uint64_t payload_len, uint32_t crc,
                                uint8_t out[JINN_BACKUP_TRAILER_LEN]);

/* Reads and verifies a whole backup file from f: header, every chunk's
 * checksum, the trailer, and that nothing follows it. With payload
 * non-NULL the payload is appended to it (else only verified). 0, or
 * JINN_ECORRUPT / JINN_EVERSION / JINN_EIO / JINN_ENOMEM with a message
 * naming what is wrong in err. */
int jinn_backup_read_file(FILE *f, struct jinn_backup_header *h, struct jinn_wbuf *payload,
                          char *err, size_t err_len);

#endif
