/* auth_rules.c - libFuzzer target for the token rule grammar (fsm/auth.c).
 *
 * Arbitrary bytes parse or are refused with EINVAL; what parses has a
 * canonical form that parses again to itself (the leader writes it, every
 * replica re-checks it in apply), and matching never reads past a name. */
#include <string.h>

#include "error.h"
#include "fsm/auth.h"
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
    static char canon[JINN_AUTH_RULES_MAX + 1], again[JINN_AUTH_RULES_MAX + 1];
    char err[200];
    struct jinn_auth_rules r, r2;
    size_t split = size > 0 ? data[0] % (size + 1) : 0;
    int rv = jinn_auth_rules_parse((const char *)data, size, &r, canon, sizeof canon, err,
                                   sizeof err);

    if (rv != 0) {
        FUZZ_CHECK(rv == JINN_EINVAL && r.rule == NULL && err[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(r.n >= 1 && r.n <= JINN_AUTH_RULE_COUNT_MAX);
    rv = jinn_auth_rules_parse(canon, strlen(canon), &r2, again, sizeof again, err, sizeof err);
    FUZZ_CHECK(rv == 0 && r2.n == r.n && strcmp(canon, again) == 0);
    /* the input's own bytes as a resource name, for every kind and action */
    for (int kind = JINN_AUTH_KV; kind <= JINN_AUTH_CLUSTER; kind++) {
        (void)jinn_auth_rules_allow(&r, kind, (const char *)data + split, size - split, 0xff);
        (void)jinn_auth_rules_may_list(&r, kind, (const char *)data, split, 0xff);
    }
    jinn_auth_rules_free(&r2);
    jinn_auth_rules_free(&r);
    return 0;
}
