/* config.c - libFuzzer target for the config parser on arbitrary text.
 *
 * Any text either parses or is refused with a positioned, NUL-terminated
 * message; nothing leaks either way. */
#include <string.h>

#include "config.h"
#include "error.h"
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_SILENT);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jinn_config cfg;
    struct jinn_config_error err;
    int rv;

    memset(&err, 0, sizeof err);
    if (jinn_config_defaults(&cfg) != 0) {
        jinn_config_free(&cfg);
        return 0;
    }
    rv = jinn_config_parse(&cfg, "fuzz.conf", (const char *)data, size, &err);
    if (rv != 0) {
        FUZZ_CHECK(rv == JINN_ECONFIG || rv == JINN_ENOMEM);
        FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
        FUZZ_CHECK(memchr(err.file, '\0', sizeof err.file) != NULL);
    } else {
        /* The accessors the daemon calls on a parsed config. */
        (void)jinn_config_policy(&cfg, "default");
        (void)jinn_config_queue(&cfg, "jobs");
    }
    jinn_config_free(&cfg);
    return 0;
}
