/* glue.h - the C file that connects one wasm2c translation to the sandbox.
 *
 * For every import the module uses, the glue defines the function wasm2c's
 * output calls (Z_gojinnZ_host_kv_get, Z_wasi_snapshot_preview1Z_fd_write,
 * ...) with exactly the module's signature, forwarding to the host symbol
 * abi.h names and converting results where abi.h allows a variant. It also
 * defines the fixed entry points listed at the end of abi.h, so the sandbox
 * loads any module the same way. wasm2c runs with `-n m`.
 *
 * The glue #includes "m.h": wasm2c must write m.c and m.h next to it
 * (`wasm2c -n m module.wasm -o m.c`), and the glue is compiled with the same
 * flags as m.c (-I/usr/src/wasm2c -DWASM_RT_MEMCHECK_SIGNAL_HANDLER=0
 * -DWASM_RT_USE_STACK_DEPTH_COUNT=1; it stops with #error otherwise). Besides
 * abi.h's entry points it exports `const unsigned jinn_mod_glue_version`
 * (JINN_WASM_GLUE_VERSION, checked by the sandbox) and `const uint32_t
 * jinn_mod_max_call_depth` (the WASM_RT_MAX_CALL_STACK_DEPTH compiled into
 * m.c; the sandbox's STACK_DEPTH limit can only be lower). */
#ifndef JINN_WASM_GLUE_H
#define JINN_WASM_GLUE_H

#include "codec.h"
#include "wasm/module.h"

/* Appends the glue's C source to out. Returns 0, or JINN_EINVAL for an
 * import abi.h does not list (inspect refuses those first). */
int jinn_wasm_glue_write(struct jinn_wbuf *out, const struct jinn_wasm_info *info);

#endif
