/* snapshot_decode.c - libFuzzer target for jinn_fsm_decode.
 *
 * The input is a snapshot restored into a fresh FSM. Snapshots carry a
 * CRC32 trailer, which random bytes almost never match; when the first
 * byte is odd the target rewrites the trailer first, so the fuzzer reaches
 * the section decoders. A snapshot that decodes must re-encode to a
 * snapshot that decodes to the same encoding (restore is stable). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fsm/fsm.h"
#include "fuzz.h"
#include "log.h"

static const char *dir_a, *dir_b;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_SILENT);
    dir_a = fuzz_tmpdir();
    dir_b = fuzz_tmpdir();
    return 0;
}

static void fresh(struct jinn_fsm *fsm, const char *dir)
{
    jinn_fsm_init(fsm);
    FUZZ_CHECK(jinn_sql_set_dir(&fsm->sql, dir) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jinn_fsm a, b;
    struct jinn_wbuf w1, w2;
    uint8_t *buf;
    int rv;

    if (size < 1) {
        return 0;
    }
    buf = jinn_malloc(size - 1 + 1);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data + 1, size - 1);
    size -= 1;
    if ((data[0] & 1) && size >= 4) {
        uint32_t crc = jinn_crc32(0, buf, size - 4);
        for (int i = 0; i < 4; i++) {
            buf[size - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
        }
    }
    fresh(&a, dir_a);
    rv = jinn_fsm_decode(&a, buf, size);
    if (rv != 0) {
        FUZZ_CHECK(rv == JINN_ECORRUPT || rv == JINN_EVERSION || rv == JINN_ENOMEM ||
                   rv == JINN_EIO);
        /* A refused snapshot leaves the fresh state as it was. */
        FUZZ_CHECK(a.time_ms == 0 && jinn_kv_count(&a.kv) == 0);
        goto out;
    }
    jinn_wbuf_init(&w1);
    FUZZ_CHECK(jinn_fsm_encode(&a, &w1) == 0);
    fresh(&b, dir_b);
    rv = jinn_fsm_decode(&b, w1.data, w1.len);
    FUZZ_CHECK(rv == 0);
    jinn_wbuf_init(&w2);
    FUZZ_CHECK(jinn_fsm_encode(&b, &w2) == 0);
    FUZZ_CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
    jinn_wbuf_free(&w1);
    jinn_wbuf_free(&w2);
    jinn_fsm_close(&b);
out:
    jinn_fsm_close(&a);
    jinn_free(buf);
    return 0;
}
