/* module.h - reading a WebAssembly module's shape before anything runs it.
 *
 * jinn_wasm_inspect() parses a module binary (never trusting a length),
 * lists its imports with their types, finds the exported `_start` and
 * `memory`, and checks every import against the allow-list in abi.h. It is
 * deterministic (same bytes, same answer on every node and version of
 * jinn that has the same abi.h), so the deploy handler and the state
 * machine's apply can both call it. It does not validate function bodies:
 * the deploy handler runs wabt's wasm-validate for that, off the loop. */
#ifndef JINN_WASM_MODULE_H
#define JINN_WASM_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINN_WASM_IMPORTS_MAX 128
#define JINN_WASM_PARAMS_MAX 15

struct jinn_wasm_import {
    char module[32];
    char name[64];
    char params[JINN_WASM_PARAMS_MAX + 1]; /* abi.h letters: 'i' i32, 'I' i64 */
    char results[2];                        /* "" or one letter */
};

struct jinn_wasm_info {
    struct jinn_wasm_import imports[JINN_WASM_IMPORTS_MAX]; /* function imports only */
    unsigned n_imports;
    bool uses_gojinn, uses_wasi; /* imports from module "gojinn" / WASI preview 1 */
    uint32_t memory_min_pages;   /* the exported memory "memory" (64 KiB pages) */
    uint32_t memory_max_pages;   /* 65536 when the module declares no maximum */
};

/* Returns 0 and fills info, or JINN_EINVAL with err set to one line naming
 * the problem ("import gojinn.host_foo is not provided by jinn", "no
 * exported _start", "section 3 runs past the end of the module", ...).
 * A module is refused when: the header is not wasm version 1; a section is
 * malformed, out of order or truncated; it imports anything but functions
 * listed in abi.h with exactly a listed signature; it has more than
 * JINN_WASM_IMPORTS_MAX imports; it does not export `_start` as a function
 * of type [] -> [] or does not export its memory as "memory"; or it has a
 * start section (code that would run at instantiation).
 * It allocates nothing, so it cannot fail for a local reason: the answer
 * depends on the bytes alone. */
int jinn_wasm_inspect(const void *bytes, size_t len, struct jinn_wasm_info *info, char *err,
                      size_t errlen);

#endif
