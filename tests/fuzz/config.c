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

static void parse_one(const uint8_t *data, size_t size, bool replica)
{
    struct jinn_config cfg;
    struct jinn_config_error err;
    int rv;

    memset(&err, 0, sizeof err);
    if ((replica ? jinn_config_replica_defaults(&cfg) : jinn_config_defaults(&cfg)) != 0) {
        jinn_config_free(&cfg);
        return;
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
        /* A replica config names 1-16 well-formed sources (config.h). */
        FUZZ_CHECK(!replica || (cfg.n_replica_of >= 1 &&
                                cfg.n_replica_of <= JINN_CONFIG_MAX_SOURCES));
        FUZZ_CHECK(replica || cfg.n_replica_of == 0);
    }
    jinn_config_free(&cfg);
}

/* The same text as a member's config and as a replica's (jinn replica). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_one(data, size, false);
    parse_one(data, size, true);
    return 0;
}
