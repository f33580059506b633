/* backup_file.c - libFuzzer target for the backup file reader
 * (jinn_backup_read_file): files come from people's shelves and disks.
 *
 * When the first byte is odd the target rewrites the input into a
 * well-formed container (header, per-chunk and trailer checksums fixed up,
 * a small chunk size from the second byte) around the rest, so the fuzzer
 * also reaches the chunk loop and the trailer checks. Whatever the input,
 * the reader must not crash, and a file it accepts must hold exactly the
 * payload length its header names. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/fsm.h"
#include "fsm/snapfile.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_SILENT);
    return 0;
}

static void wrap(const uint8_t *data, size_t size, struct jinn_wbuf *out)
{
    uint32_t chunk = size > 1 ? (uint32_t)(data[1] % 64) + 1 : 1;
    const uint8_t *p = size > 2 ? data + 2 : data;
    size_t len = size > 2 ? size - 2 : 0;
    struct jinn_backup_header h = {
        JINN_BACKUP_VERSION, JINN_SNAPSHOT_VERSION, 2, chunk, 1, 2, 3, 4, len};
    uint8_t head[JINN_BACKUP_HEADER_LEN], tail[JINN_BACKUP_TRAILER_LEN];
    uint32_t total = 0;
    jinn_backup_header_encode(&h, head);
    jinn_wbuf_put_raw(out, head, sizeof head);
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        jinn_wbuf_put_raw(out, p + off, n);
        jinn_wbuf_put_u32(out, jinn_crc32(0, p + off, n));
        total = jinn_crc32(total, p + off, n);
    }
    jinn_backup_trailer_encode(len, total, tail);
    jinn_wbuf_put_raw(out, tail, sizeof tail);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jinn_wbuf file, payload;
    struct jinn_backup_header h;
    char err[512];
    FILE *f;
    int rv;

    jinn_wbuf_init(&file);
    jinn_wbuf_init(&payload);
    if (size > 0 && (data[0] & 1)) {
        wrap(data, size, &file);
    } else {
        jinn_wbuf_put_raw(&file, data, size);
    }
    FUZZ_CHECK(!file.failed);
    f = fmemopen(file.len > 0 ? file.data : (uint8_t *)"", file.len, "rb");
    FUZZ_CHECK(f != NULL);
    rv = jinn_backup_read_file(f, &h, &payload, err, sizeof err);
    fclose(f);
    FUZZ_CHECK(rv == 0 || rv == JINN_ECORRUPT || rv == JINN_EVERSION || rv == JINN_ENOMEM);
    if (rv == 0) {
        FUZZ_CHECK(payload.len == h.payload_len);
        FUZZ_CHECK(jinn_backup_file_size(&h) == file.len);
    }
    if (size > 0 && (data[0] & 1)) {
        FUZZ_CHECK(rv == 0); /* a well-formed container always reads */
    }
    jinn_wbuf_free(&payload);
    jinn_wbuf_free(&file);
    return 0;
}
