/* wasm_inspect.c - libFuzzer target for jinn_wasm_inspect on arbitrary bytes.
 *
 * Any input is accepted or refused with one NUL-terminated line; nothing is
 * read out of bounds or leaked; the answer is the same twice (the state
 * machine's apply relies on that); an accepted module lists only imports
 * abi.h allows, with sane memory limits. */
#include <string.h>

#include "error.h"
#include "fuzz.h"
#include "log.h"
#include "wasm/abi.h"
#include "wasm/module.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    jinn_log_set_level(JINN_LOG_SILENT);
    return 0;
}

static int listed(const struct jinn_wasm_import *im)
{
#define X(mod, nm, sym, p, r, hr)                                                             \
    if (strcmp(im->module, mod) == 0 && strcmp(im->name, nm) == 0 &&                      \
        strcmp(im->params, p) == 0 && strcmp(im->results, r) == 0) {                       \
        return 1;                                                                          \
    }
    JINN_WASM_IMPORTS(X)
#undef X
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct jinn_wasm_info a, b;
    char ea[256], eb[256];
    int ra, rb;

    ra = jinn_wasm_inspect(data, size, &a, ea, sizeof ea);
    rb = jinn_wasm_inspect(data, size, &b, eb, sizeof eb);
    FUZZ_CHECK(ra == rb);
    FUZZ_CHECK(memcmp(&a, &b, sizeof a) == 0);
    FUZZ_CHECK(memchr(ea, '\0', sizeof ea) != NULL);
    FUZZ_CHECK(strcmp(ea, eb) == 0);
    if (ra != 0) {
        FUZZ_CHECK(ra == JINN_EINVAL);
        FUZZ_CHECK(ea[0] != '\0' && strchr(ea, '\n') == NULL);
        FUZZ_CHECK(a.n_imports == 0);
        return 0;
    }
    FUZZ_CHECK(a.n_imports <= JINN_WASM_IMPORTS_MAX);
    for (unsigned i = 0; i < a.n_imports; i++) {
        const struct jinn_wasm_import *im = &a.imports[i];
        FUZZ_CHECK(memchr(im->module, '\0', sizeof im->module) != NULL);
        FUZZ_CHECK(memchr(im->name, '\0', sizeof im->name) != NULL);
        FUZZ_CHECK(memchr(im->params, '\0', sizeof im->params) != NULL);
        FUZZ_CHECK(memchr(im->results, '\0', sizeof im->results) != NULL);
        FUZZ_CHECK(listed(im));
        for (unsigned j = 0; j < i; j++) {
            FUZZ_CHECK(strcmp(im->module, a.imports[j].module) != 0 ||
                       strcmp(im->name, a.imports[j].name) != 0);
        }
    }
    FUZZ_CHECK(a.memory_min_pages <= a.memory_max_pages);
    FUZZ_CHECK(a.memory_max_pages <= 65536);
    return 0;
}
