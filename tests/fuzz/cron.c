/* cron.c - libFuzzer target for the cron parser (src/cron.c).
 *
 * Any text parses or is refused with a "cron: " message, without reading
 * out of bounds; a schedule that parses has a next tick strictly after any
 * time (up to year 9999) that is a whole second, matches the schedule's
 * granularity, and is stable: the tick after (tick - 1) is the tick. */
#include <stdio.h>
#include <string.h>

#include "cron.h"
#include "error.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jinn_cron c;
    char err[160];
    /* A NUL and 8 bytes first choose the time (else a fixed one). */
    uint64_t after = UINT64_C(1795778550123);
    int rv;

    if (size > 9 + JINN_CRON_EXPR_MAX) {
        return 0;
    }
    if (size >= 9 && data[0] == '\0') {
        memcpy(&after, data + 1, 8);
        data += 9;
        size -= 9;
        after %= UINT64_C(253402300800000); /* year 10000 */
    }
    err[0] = '\0';
    rv = jinn_cron_parse((const char *)data, size, &c, err, sizeof err);
    if (rv != 0) {
        FUZZ_CHECK(rv == JINN_EINVAL);
        FUZZ_CHECK(strncmp(err, "cron: ", 6) == 0);
        return 0;
    }
    {
        uint64_t next = jinn_cron_next_parsed(&c, after);
        if (next == 0) {
            /* Only near the end of the range. */
            FUZZ_CHECK(after > UINT64_C(253402300800000) - UINT64_C(9) * 366 * 86400000);
            return 0;
        }
        FUZZ_CHECK(next > after);
        FUZZ_CHECK(next % 1000 == 0);
        if (c.every_ms != 0) {
            FUZZ_CHECK(next - after <= c.every_ms);
            FUZZ_CHECK(next % c.every_ms == 0);
        } else {
            FUZZ_CHECK(next % 60000 == 0);
        }
        FUZZ_CHECK(jinn_cron_next_parsed(&c, next - 1) == next);
    }
    return 0;
}
