/* cmd_decode.c - libFuzzer target for jinn_cmd_decode.
 *
 * Arbitrary bytes must decode or be refused without reading out of bounds;
 * what decodes must re-encode to exactly the same bytes (the format is
 * canonical, so replicas that re-encode never disagree). */
#include <string.h>

#include "codec.h"
#include "error.h"
#include "fsm/cmd.h"
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
    struct jinn_cmd c;
    struct jinn_wbuf w;
    int rv = jinn_cmd_decode(data, size, &c);

    if (rv != 0) {
        FUZZ_CHECK(rv == JINN_ECORRUPT || rv == JINN_EVERSION);
        return 0;
    }
    jinn_wbuf_init(&w);
    rv = jinn_cmd_encode(&c, &w);
    FUZZ_CHECK(rv == 0);
    FUZZ_CHECK(w.len == size);
    FUZZ_CHECK(memcmp(w.data, data, size) == 0);
    jinn_wbuf_free(&w);
    (void)jinn_cmd_type_name(c.type);
    return 0;
}
