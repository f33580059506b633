/* stream_client.c - libFuzzer target for the replica's stream client
 * decoders (src/replica/stream.c), which read what a cluster node - or
 * anything answering at a replica_of URL - sends.
 *
 * The first byte picks the decoder: 0 an 'E' batch, 1 a hello, 2 a
 * heartbeat, 3 a replica_of URL. A batch either is refused whole
 * (JINN_ECORRUPT, no record seen) or its records, seen in order, cover the
 * message exactly with index > prev and non-empty bytes inside it; text
 * parsers never read past their input and leave NUL-terminated strings. */
#include <string.h>

#include "error.h"
#include "fuzz.h"
#include "log.h"
#include "replica/stream.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR);
    return 0;
}

struct walk {
    const uint8_t *msg;
    size_t len;
    size_t covered; /* header + records seen so far */
    unsigned n;
};

static int record(void *data, uint64_t index, uint64_t prev, const uint8_t *buf, size_t len)
{
    struct walk *w = data;
    FUZZ_CHECK(index > prev);
    FUZZ_CHECK(len > 0);
    FUZZ_CHECK(buf == w->msg + w->covered + 20); /* right after its 20-byte head */
    FUZZ_CHECK(w->covered + 20 + len <= w->len);
    w->covered += 20 + len;
    w->n++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) {
        return 0;
    }
    switch (data[0] % 4) {
    case 0: {
        struct walk w = {data + 1, size - 1, 5, 0};
        int rv = jinn_stream_decode_batch(data + 1, size - 1, record, &w);
        if (rv == 0) {
            FUZZ_CHECK(w.n > 0 && w.covered == size - 1);
        } else {
            FUZZ_CHECK(rv == JINN_ECORRUPT && w.n == 0);
        }
        break;
    }
    case 1: {
        uint64_t cluster = 0;
        char node[65];
        if (jinn_stream_parse_hello((const char *)data + 1, size - 1, &cluster, node) == 0) {
            FUZZ_CHECK(strlen(node) < sizeof node && node[0] != '\0');
        }
        break;
    }
    case 2: {
        struct jinn_stream_heartbeat hb;
        if (jinn_stream_parse_heartbeat((const char *)data + 1, size - 1, &hb) == 0) {
            FUZZ_CHECK(strlen(hb.node) < sizeof hb.node);
            FUZZ_CHECK(strlen(hb.leader_api) < sizeof hb.leader_api);
            FUZZ_CHECK(hb.leader_contact_ms >= -1);
            (void)jinn_stream_primary(&hb, 2000);
        }
        break;
    }
    default: {
        char url[JINN_STREAM_URL_MAX + 1];
        struct jinn_stream_url u;
        size_t n = size - 1 < JINN_STREAM_URL_MAX ? size - 1 : JINN_STREAM_URL_MAX;
        memcpy(url, data + 1, n);
        url[n] = '\0';
        if (jinn_stream_parse_url(url, &u) == 0) {
            FUZZ_CHECK(u.port > 0 && u.port <= 65535 && u.host[0] != '\0');
            FUZZ_CHECK(strchr(u.hostport, '\r') == NULL && strchr(u.path, ' ') == NULL);
        }
        break;
    }
    }
    return 0;
}
