/* wat.h - assembling WebAssembly text in unit tests with wabt's wat2wasm
 * (a runtime dependency of jinn: the same package provides wasm2c). */
#ifndef JINN_UNIT_WAT_H
#define JINN_UNIT_WAT_H

#include "codec.h"

/* Assembles text into out (initialized here; the caller frees it, also on
 * failure). Returns 0, or -1 with the reason on stderr. */
int wat(const char *text, struct jinn_wbuf *out);

#endif
