/* raft_message.c - libFuzzer target for jinn_peerguard_check.
 *
 * Input: u64 message type, then a header. Whatever the check lets through
 * is read here the way libraft 0.15's decoder reads it (uv_encoding.c and
 * configurationDecode), from a buffer of exactly the header's size, so
 * AddressSanitizer catches any read libraft would make past it. */
#include <raft.h>
#include <string.h>

#include "fuzz.h"
#include "log.h"
#include "peerguard.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR);
    return 0;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* What libraft reads of an accepted header; returns a value so the reads
 * are not optimised away. */
static uint64_t libraft_reads(uint64_t type, const uint8_t *h, size_t len, uint64_t *payload)
{
    uint64_t sum = 0;
    switch (type) {
    case RAFT_IO_REQUEST_VOTE:
        sum = get64(h) + get64(h + 8) + get64(h + 16) + get64(h + 24);
        return len == 32 ? sum : sum + get64(h + 32);
    case RAFT_IO_REQUEST_VOTE_RESULT:
        sum = get64(h) + get64(h + 8);
        return len > 16 ? sum + get64(h + 16) : sum;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
    case RAFT_IO_TIMEOUT_NOW:
        return get64(h) + get64(h + 8) + get64(h + 16);
    case RAFT_IO_APPEND_ENTRIES: {
        uint64_t n = get64(h + 32);
        const uint8_t *e = h + 40;
        uint64_t at = 0;
        *payload = 0;
        for (uint64_t i = 0; i < n; i++, e += 16) {
            uint32_t elen;
            memcpy(&elen, e + 12, 4);
            sum += get64(e) + e[8];
            *payload += elen;
        }
        /* uvDecodeEntriesBatch: entries laid out at 8-byte steps must lie
         * inside the payload */
        e = h + 40;
        for (uint64_t i = 0; i < n; i++, e += 16) {
            uint32_t elen;
            memcpy(&elen, e + 12, 4);
            if (elen != 0) {
                FUZZ_CHECK(at + elen <= *payload);
                at += elen;
                at += elen % 8 != 0 ? 8 - elen % 8 : 0;
            }
        }
        return sum;
    }
    case RAFT_IO_INSTALL_SNAPSHOT: {
        uint64_t conf_len = get64(h + 32), n, off = 9;
        const uint8_t *c = h + 40;
        sum = get64(h) + get64(h + 8) + get64(h + 16) + get64(h + 24);
        FUZZ_CHECK(conf_len > 0);
        FUZZ_CHECK(c[0] == 1);
        memcpy(&n, c + 1, 8);
        for (uint64_t i = 0; i < n; i++) {
            size_t alen;
            sum += get64(c + off);
            off += 8;
            alen = strnlen((const char *)c + off, conf_len - off);
            FUZZ_CHECK(off + alen < conf_len); /* NUL inside */
            off += alen + 1;
            sum += c[off]; /* role */
            off++;
        }
        *payload = get64(c + conf_len);
        return sum;
    }
    default:
        FUZZ_CHECK(!"unknown type accepted");
        return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t type, payload, declared = 0;
    uint8_t *h;
    size_t len;
    if (size < 8) {
        return 0;
    }
    type = get64(data);
    len = size - 8;
    h = malloc(len != 0 ? len : 1);
    FUZZ_CHECK(h != NULL);
    memcpy(h, data + 8, len);
    if (jinn_peerguard_check(type, h, len, &payload) == NULL) {
        volatile uint64_t sink = libraft_reads(type, h, len, &declared);
        (void)sink;
        FUZZ_CHECK(declared == payload);
        FUZZ_CHECK(payload <= JINN_RAFT_MAX_MESSAGE);
    }
    free(h);
    return 0;
}
