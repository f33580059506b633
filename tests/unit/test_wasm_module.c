/* test_wasm_module.c - jinn_wasm_inspect: what it accepts, every reason it
 * refuses, and that no truncation or corrupted length reads out of bounds.
 *
 * Modules come from two places: hand-assembled bytes (sections given as
 * hex) for malformed encodings no assembler produces, and wat2wasm (wabt,
 * a runtime dependency of jinn) for realistic modules. */
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "sha256.h"
#include "wasm/abi.h"
#include "wasm/module.h"
#include "unit.h"
#include "wat.h"

/* ---- hand-assembled modules ---- */

static void put_hex(struct jinn_wbuf *w, const char *hex)
{
    while (*hex) {
        unsigned v;
        if (*hex == ' ') {
            hex++;
            continue;
        }
        sscanf(hex, "%2x", &v);
        jinn_wbuf_put_u8(w, (uint8_t)v);
        hex += 2;
    }
}

static void put_leb(struct jinn_wbuf *w, uint32_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        jinn_wbuf_put_u8(w, (uint8_t)(b | (v ? 0x80 : 0)));
    } while (v);
}

static void put_header(struct jinn_wbuf *w)
{
    put_hex(w, "0061736d 01000000");
}

/* A section: id, then its contents given as hex (size computed). */
static void put_sec(struct jinn_wbuf *w, uint8_t id, const char *hex)
{
    struct jinn_wbuf body;
    jinn_wbuf_init(&body);
    put_hex(&body, hex);
    jinn_wbuf_put_u8(w, id);
    put_leb(w, (uint32_t)body.len);
    jinn_wbuf_put_raw(w, body.data, body.len);
    jinn_wbuf_free(&body);
}

/* "_start" = 5f7374617274, "memory" = 6d656d6f7279 */
#define SEC_TYPE_VOID "01 60 00 00"
#define SEC_FUNC_ONE "01 00"
#define SEC_MEM_ONE "01 00 01"
#define SEC_EXPORTS "02 06 5f7374617274 00 00 06 6d656d6f7279 02 00"
#define SEC_CODE_ONE "01 02 00 0b"

/* The smallest module jinn accepts: one memory, _start. */
static void minimal(struct jinn_wbuf *w)
{
    put_header(w);
    put_sec(w, 1, SEC_TYPE_VOID);
    put_sec(w, 3, SEC_FUNC_ONE);
    put_sec(w, 5, SEC_MEM_ONE);
    put_sec(w, 7, SEC_EXPORTS);
    put_sec(w, 10, SEC_CODE_ONE);
}

static int inspect(const struct jinn_wbuf *w, struct jinn_wasm_info *info, char *err,
                   size_t errlen)
{
    return jinn_wasm_inspect(w->data, w->len, info, err, errlen);
}

/* Inspects w, expecting a refusal whose message contains want. */
static int refused_with(const struct jinn_wbuf *w, const char *want)
{
    static struct jinn_wasm_info info;
    char err[256];
    int rv = inspect(w, &info, err, sizeof err);
    if (rv != JINN_EINVAL) {
        fprintf(stderr, "  expected a refusal containing \"%s\", got %d\n", want, rv);
        return 0;
    }
    if (strstr(err, want) == NULL || strchr(err, '\n') != NULL) {
        fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

#define CHECK_REFUSED(hexmod, want)                                                          \
    do {                                                                                     \
        int ok_ = refused_with(&(hexmod), want);                                             \
        jinn_wbuf_free(&(hexmod));                                                           \
        CHECK(ok_);                                                                          \
    } while (0)

TEST(wasm_module_minimal_accepted)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    jinn_wbuf_init(&w);
    minimal(&w);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    CHECK_INT(info.n_imports, 0);
    CHECK_INT(info.memory_min_pages, 1);
    CHECK_INT(info.memory_max_pages, 65536);
    CHECK(!info.uses_gojinn && !info.uses_wasi);
    jinn_wbuf_free(&w);
}

TEST(wasm_module_header_refusals)
{
    struct jinn_wbuf w;
    static struct jinn_wasm_info info;
    char err[256];

    CHECK_INT(jinn_wasm_inspect(NULL, 0, &info, err, sizeof err), JINN_EINVAL);
    CHECK(strstr(err, "empty") != NULL);
    jinn_wbuf_init(&w);
    put_hex(&w, "7f454c46 02010100");
    CHECK_REFUSED(w, "not a WebAssembly module");
    jinn_wbuf_init(&w);
    put_hex(&w, "0061736d 02000000");
    CHECK_REFUSED(w, "version 2 is not supported");
    jinn_wbuf_init(&w);
    put_hex(&w, "0061736d 0d000100"); /* the component model's layer 1 */
    CHECK_REFUSED(w, "is not supported");
    jinn_wbuf_init(&w);
    put_hex(&w, "0061736d 01");
    CHECK_REFUSED(w, "ends inside its header");
}

TEST(wasm_module_leb128)
{
    struct jinn_wbuf w;
    static struct jinn_wasm_info info;
    char err[256];

    /* Padded encodings (5 bytes at most) are valid and linkers emit them. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_hex(&w, "01 84808080 00 01 60 00 00"); /* type section, size 4 padded */
    put_sec(&w, 3, "81 80 80 80 00 00");      /* count 1, padded */
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    jinn_wbuf_free(&w);

    /* Six bytes: overlong. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 3, "81 80 80 80 80 00 00");
    CHECK_REFUSED(w, "more than 5 bytes");

    /* Bits beyond 32 in the fifth byte. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 3, "81 80 80 80 10 00");
    CHECK_REFUSED(w, "does not fit 32 bits");

    /* A section size of 2^32-1: runs past the end, never trusted. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_hex(&w, "01 ffffffff0f 01 60 00 00");
    CHECK_REFUSED(w, "section 1 (type) runs past the end of the module");

    /* A count the section cannot hold is refused before allocating. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, "ffffffff0f 60 00 00");
    CHECK_REFUSED(w, "runs past the end of the section");
}

TEST(wasm_module_section_structure)
{
    struct jinn_wbuf w;
    static struct jinn_wasm_info info;
    char err[256];

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 3, "00");
    put_sec(&w, 1, SEC_TYPE_VOID);
    CHECK_REFUSED(w, "section 1 (type) is out of order");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 1, SEC_TYPE_VOID);
    CHECK_REFUSED(w, "section 1 (type) appears twice");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 14, "00");
    CHECK_REFUSED(w, "unknown section id 14");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, "01 60 00 00 00");
    CHECK_REFUSED(w, "section 1 (type) has 1 bytes after its contents");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, "01 5f 00 00");
    CHECK_REFUSED(w, "type 0 is not a function type");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, "01 60 01 40 00");
    CHECK_REFUSED(w, "unknown value type 0x40");

    /* Custom sections anywhere, including between ordered ones. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 0, "04 6e616d65 0102");
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 0, "00");
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 12, "00"); /* data count 0, no data section */
    put_sec(&w, 10, SEC_CODE_ONE);
    put_sec(&w, 0, "03 616263");
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    jinn_wbuf_free(&w);

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 0, "05 6e616d65");
    CHECK_REFUSED(w, "a name of 5 bytes runs past the end of the section");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 0, "02 c328");
    CHECK_REFUSED(w, "not valid UTF-8");

    /* Counts that disagree. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, "02 00 00");
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "the code section has 1 bodies for 2 declared functions");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    CHECK_REFUSED(w, "declares 1 functions but has no code section");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 12, "02");
    put_sec(&w, 10, SEC_CODE_ONE);
    put_sec(&w, 11, "01 00 41 00 0b 00");
    CHECK_REFUSED(w, "the data count section says 2 segments, the data section has 1");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, "01 05");
    CHECK_REFUSED(w, "function 0 uses type 5, but the module has 1 types");
}

TEST(wasm_module_memory_refusals)
{
    struct jinn_wbuf w;
    static struct jinn_wasm_info info;
    char err[256];

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 5, "02 00 01 00 01");
    CHECK_REFUSED(w, "defines 2 memories");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 5, "01 03 01 02");
    CHECK_REFUSED(w, "limits flag 0x03 (shared or 64-bit memory)");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 5, "01 01 02 01");
    CHECK_REFUSED(w, "the maximum (1 pages) is below the minimum (2)");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 5, "01 00 8180 04"); /* 65537 pages */
    CHECK_REFUSED(w, "a limit above 65536 pages");

    /* A declared maximum is reported. */
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, "01 01 02 10");
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    CHECK_INT(info.memory_min_pages, 2);
    CHECK_INT(info.memory_max_pages, 16);
    jinn_wbuf_free(&w);
}

TEST(wasm_module_export_refusals)
{
    struct jinn_wbuf w;

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, "01 06 6d656d6f7279 02 00");
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "no exported _start");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, "01 06 5f7374617274 00 00");
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "no exported memory named \"memory\"");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, "02 06 5f7374617274 02 00 06 6d656d6f7279 02 00");
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "export _start is not a function");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, "02 06 5f7374617274 00 00 06 6d656d6f7279 00 00");
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "export memory is not a memory");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, "02 06 5f7374617274 00 07 06 6d656d6f7279 02 00");
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "export _start names function 7, but the module has 1");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, "01 60 01 7f 00");
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "_start has type (i32) -> (); it must take and return nothing");

    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    put_sec(&w, 3, SEC_FUNC_ONE);
    put_sec(&w, 5, SEC_MEM_ONE);
    put_sec(&w, 7, SEC_EXPORTS);
    put_sec(&w, 8, "00");
    put_sec(&w, 10, SEC_CODE_ONE);
    CHECK_REFUSED(w, "has a start section");
}

/* ---- modules from wat2wasm ---- */

#define WAT_HEAD "(module\n"
#define WAT_TAIL                                                                             \
    "  (memory (export \"memory\") 2 32)\n"                                                  \
    "  (func (export \"_start\") (drop (call $get (i32.const 0) (i32.const 1) "             \
    "(i32.const 8) (i32.const 16)))))\n"

static const char *const wat_hello =
    WAT_HEAD
    "  (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) "
    "(result i32)))\n"
    "  (import \"gojinn\" \"host_log\" (func $log (param i32 i32 i32)))\n"
    "  (import \"gojinn\" \"host_kv_get\" (func $get (param i32 i32 i32 i32) (result i32)))\n"
    "  (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n"
    "  (import \"wasi_snapshot_preview1\" \"clock_time_get\" (func $clk (param i32 i64 i32) "
    "(result i32)))\n"
    "  (data (i32.const 0) \"hi\")\n" WAT_TAIL;

TEST(wasm_module_wat_hello)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    CHECK_INT(wat(wat_hello, &w), 0);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    CHECK_INT(info.n_imports, 5);
    CHECK_STR(info.imports[0].module, "wasi_snapshot_preview1");
    CHECK_STR(info.imports[0].name, "fd_write");
    CHECK_STR(info.imports[0].params, "iiii");
    CHECK_STR(info.imports[0].results, "i");
    CHECK_STR(info.imports[1].name, "host_log");
    CHECK_STR(info.imports[1].results, "");
    CHECK_STR(info.imports[2].module, "gojinn");
    CHECK_STR(info.imports[2].name, "host_kv_get");
    CHECK_STR(info.imports[2].results, "i");
    CHECK_STR(info.imports[3].name, "proc_exit");
    CHECK_STR(info.imports[3].params, "i");
    CHECK_STR(info.imports[4].params, "iIi");
    CHECK(info.uses_gojinn && info.uses_wasi);
    CHECK_INT(info.memory_min_pages, 2);
    CHECK_INT(info.memory_max_pages, 32);
    jinn_wbuf_free(&w);
}

/* The original system's Rust SDK declares host_kv_get as returning i64. */
TEST(wasm_module_wat_kv_get_i64)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    static const char *const text =
        WAT_HEAD "  (import \"gojinn\" \"host_kv_get\" (func $get (param i32 i32 i32 i32) "
                 "(result i64)))\n"
                 "  (memory (export \"memory\") 1)\n"
                 "  (func (export \"_start\") (drop (call $get (i32.const 0) (i32.const 1) "
                 "(i32.const 8) (i32.const 16)))))\n";
    CHECK_INT(wat(text, &w), 0);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    CHECK_INT(info.n_imports, 1);
    CHECK_STR(info.imports[0].results, "I");
    CHECK(info.uses_gojinn && !info.uses_wasi);
    CHECK_INT(info.memory_max_pages, 65536);
    jinn_wbuf_free(&w);
}

static int wat_refused(const char *text, const char *want)
{
    struct jinn_wbuf w;
    int ok;
    if (wat(text, &w) != 0) {
        jinn_wbuf_free(&w);
        return 0;
    }
    ok = refused_with(&w, want);
    jinn_wbuf_free(&w);
    return ok;
}

#define MEM_START "  (memory (export \"memory\") 1)\n  (func (export \"_start\")))\n"

TEST(wasm_module_wat_import_refusals)
{
    CHECK(wat_refused(WAT_HEAD "  (import \"gojinn\" \"host_foo\" (func (param i32)))\n" MEM_START,
                      "import gojinn.host_foo is not provided by jinn"));
    CHECK(wat_refused(WAT_HEAD "  (import \"env\" \"abort\" (func))\n" MEM_START,
                      "import env.abort is not provided by jinn"));
    CHECK(wat_refused(WAT_HEAD "  (import \"gojinn\" \"host_kv_get\" (func (param i32 i32 i32) "
                               "(result i32)))\n" MEM_START,
                      "import gojinn.host_kv_get has type (i32 i32 i32) -> i32; jinn provides "
                      "(i32 i32 i32 i32) -> i32 or (i32 i32 i32 i32) -> i64"));
    CHECK(wat_refused(WAT_HEAD "  (import \"gojinn\" \"host_log\" (func (param i32 f32 i32)))\n"
                               MEM_START,
                      "import gojinn.host_log (i32 f32 i32) -> () takes a f32"));
    CHECK(wat_refused(WAT_HEAD "  (import \"gojinn\" \"host_kv_get\" (func (param i32 i32 i32 "
                               "i32) (result f64)))\n" MEM_START,
                      "returns a f64"));
    CHECK(wat_refused(WAT_HEAD "  (import \"gojinn\" \"host_log\" (func (param i32 i32 i32) "
                               "(result i32 i32)))\n" MEM_START,
                      "import gojinn.host_log has type (i32 i32 i32) -> i32 i32"));
    CHECK(wat_refused(WAT_HEAD "  (import \"env\" \"memory\" (memory 1))\n"
                               "  (func (export \"_start\")))\n",
                      "import env.memory is a memory; jinn provides only function imports"));
    CHECK(wat_refused(WAT_HEAD "  (import \"env\" \"t\" (table 1 funcref))\n" MEM_START,
                      "import env.t is a table"));
    CHECK(wat_refused(WAT_HEAD "  (import \"env\" \"g\" (global i32))\n" MEM_START,
                      "import env.g is a global"));
    CHECK(wat_refused(WAT_HEAD "  (import \"gojinn\" \"host_log\" (func (param i32 i32 i32)))\n"
                               "  (import \"gojinn\" \"host_log\" (func (param i32 i32 i32)))\n"
                               MEM_START,
                      "import gojinn.host_log appears more than once"));
    CHECK(wat_refused(WAT_HEAD "  (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $e "
                               "(param i32)))\n"
                               "  (memory (export \"memory\") 1)\n"
                               "  (export \"_start\" (func $e)))\n",
                      "_start has type (i32) -> ()"));
    CHECK(wat_refused(WAT_HEAD "  (memory (export \"memory\") 1)\n"
                               "  (func $s (export \"_start\"))\n  (start $s))\n",
                      "has a start section"));
}

static void put_valtypes(struct jinn_wbuf *w, const char *letters)
{
    put_leb(w, (uint32_t)strlen(letters));
    for (const char *l = letters; *l; l++) {
        jinn_wbuf_put_u8(w, *l == 'i' ? 0x7f : 0x7e);
    }
}

/* A module importing, as function i, abi.h's entry number `only` (or every
 * entry whose name is not already imported when only < 0). */
static int abi_module(struct jinn_wbuf *w, int only, unsigned *n_out)
{
    struct jinn_wbuf types, imps;
    const char *seen[128];
    unsigned n = 0, k = 0;
    int idx = 0;
    jinn_wbuf_init(&types);
    jinn_wbuf_init(&imps);
#define X(mod, nm, sym, p, r, hr)                                                              \
    do {                                                                                       \
        int dup_ = 0;                                                                          \
        for (unsigned j_ = 0; j_ < k; j_++) {                                                  \
            dup_ |= strcmp(seen[j_], nm) == 0;                                                 \
        }                                                                                      \
        if ((only < 0 && !dup_) || only == idx) {                                              \
            seen[k++] = nm;                                                                    \
            jinn_wbuf_put_u8(&types, 0x60);                                                    \
            put_valtypes(&types, p);                                                           \
            put_valtypes(&types, r);                                                           \
            put_leb(&imps, (uint32_t)strlen(mod));                                             \
            jinn_wbuf_put_raw(&imps, mod, strlen(mod));                                        \
            put_leb(&imps, (uint32_t)strlen(nm));                                              \
            jinn_wbuf_put_raw(&imps, nm, strlen(nm));                                          \
            jinn_wbuf_put_u8(&imps, 0);                                                        \
            put_leb(&imps, n + 1);                                                             \
            n++;                                                                               \
        }                                                                                      \
        idx++;                                                                                 \
    } while (0);
    JINN_WASM_IMPORTS(X)
#undef X
    put_header(w);
    jinn_wbuf_put_u8(w, 1);
    {
        struct jinn_wbuf sec;
        jinn_wbuf_init(&sec);
        put_leb(&sec, n + 1);
        put_hex(&sec, "60 00 00"); /* type 0: _start's */
        jinn_wbuf_put_raw(&sec, types.data, types.len);
        put_leb(w, (uint32_t)sec.len);
        jinn_wbuf_put_raw(w, sec.data, sec.len);
        jinn_wbuf_free(&sec);
        jinn_wbuf_init(&sec);
        put_leb(&sec, n);
        jinn_wbuf_put_raw(&sec, imps.data, imps.len);
        jinn_wbuf_put_u8(w, 2);
        put_leb(w, (uint32_t)sec.len);
        jinn_wbuf_put_raw(w, sec.data, sec.len);
        jinn_wbuf_free(&sec);
    }
    put_sec(w, 3, SEC_FUNC_ONE);
    put_sec(w, 5, SEC_MEM_ONE);
    /* _start is function n (after the n imports). */
    {
        char hex[80];
        snprintf(hex, sizeof hex, "02 06 5f7374617274 00 %02x%s 06 6d656d6f7279 02 00",
                 n < 128 ? n : (n & 0x7f) | 0x80, n < 128 ? "" : "01");
        put_sec(w, 7, hex);
    }
    put_sec(w, 10, SEC_CODE_ONE);
    jinn_wbuf_free(&types);
    jinn_wbuf_free(&imps);
    *n_out = n;
    return idx;
}

/* Every import abi.h lists is accepted, alone and all together, with the
 * letters it lists. */
TEST(wasm_module_every_abi_import)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    unsigned n;
    int total;

    jinn_wbuf_init(&w);
    total = abi_module(&w, -1, &n);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    CHECK_INT(info.n_imports, n);
    CHECK(n > 50);
    CHECK(info.uses_gojinn && info.uses_wasi);
    jinn_wbuf_free(&w);
    for (int i = 0; i < total; i++) {
        jinn_wbuf_init(&w);
        abi_module(&w, i, &n);
        CHECK_INT(n, 1);
        if (inspect(&w, &info, err, sizeof err) != 0) {
            fprintf(stderr, "  abi.h entry %d refused: %s\n", i, err);
        }
        CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
        CHECK_INT(info.n_imports, 1);
        jinn_wbuf_free(&w);
    }
}

/* True when n is where a section of the module in w starts (or the end of
 * the header): a module cut there is a shorter well-formed module. */
static int section_boundary(const struct jinn_wbuf *w, size_t n)
{
    size_t at = 8;
    while (at < w->len) {
        uint32_t size = 0;
        unsigned shift = 0;
        if (at == n) {
            return 1;
        }
        at++;
        while (w->data[at] & 0x80) {
            size |= (uint32_t)(w->data[at++] & 0x7f) << shift;
            shift += 7;
        }
        size |= (uint32_t)w->data[at++] << shift;
        at += size;
    }
    return at == n;
}

/* Every proper prefix of a valid module is refused (and never read past:
 * each prefix is copied into its own allocation, so ASan sees overruns),
 * except a cut exactly between sections, which may leave a shorter valid
 * module: wat_hello's last section is its data, without which it is still
 * runnable. The module without data is refused at every cut. */
static int truncations(const char *text, int *accepted)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    int ok = 1;
    *accepted = 0;
    if (wat(text, &w) != 0 || jinn_wasm_inspect(w.data, w.len, &info, err, sizeof err) != 0) {
        jinn_wbuf_free(&w);
        return 0;
    }
    for (size_t n = 0; n < w.len && ok; n++) {
        uint8_t *copy = jinn_malloc(n ? n : 1);
        int rv;
        if (copy == NULL) {
            ok = 0;
            break;
        }
        memcpy(copy, w.data, n);
        rv = jinn_wasm_inspect(n ? copy : NULL, n, &info, err, sizeof err);
        jinn_free(copy);
        if (rv == 0 && section_boundary(&w, n)) {
            (*accepted)++;
        } else if (rv != JINN_EINVAL || err[0] == '\0' || info.n_imports != 0) {
            fprintf(stderr, "  prefix of %zu/%zu bytes: rv %d\n", n, w.len, rv);
            ok = 0;
        }
    }
    jinn_wbuf_free(&w);
    return ok;
}

TEST(wasm_module_truncation_everywhere)
{
    int accepted;
    CHECK(truncations(wat_hello, &accepted));
    CHECK_INT(accepted, 1); /* cut before the data section */
    CHECK(truncations(WAT_HEAD "  (import \"gojinn\" \"host_log\" (func (param i32 i32 i32)))\n"
                      "  (memory (export \"memory\") 1)\n"
                      "  (func (export \"_start\") (nop)))\n",
                      &accepted));
    CHECK_INT(accepted, 0);
}

/* Flipping any one byte never crashes or reads out of bounds; a refusal
 * always has a message. */
TEST(wasm_module_corruption_everywhere)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    CHECK_INT(wat(wat_hello, &w), 0);
    for (size_t i = 0; i < w.len; i++) {
        static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
        for (size_t v = 0; v < sizeof vals; v++) {
            uint8_t *copy = jinn_malloc(w.len);
            int rv;
            CHECK(copy != NULL);
            memcpy(copy, w.data, w.len);
            copy[i] = vals[v];
            rv = jinn_wasm_inspect(copy, w.len, &info, err, sizeof err);
            jinn_free(copy);
            CHECK(rv == 0 || (rv == JINN_EINVAL && err[0] != '\0'));
        }
    }
    jinn_wbuf_free(&w);
}

/* Nothing is allocated: with every allocation failing, the same answer. */
TEST(wasm_module_allocates_nothing)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];
    int rv;
    CHECK_INT(wat(wat_hello, &w), 0);
    jinn_alloc_fail_after(0);
    rv = jinn_wasm_inspect(w.data, w.len, &info, err, sizeof err);
    jinn_alloc_fail_reset();
    CHECK_INT(rv, 0);
    CHECK_INT(info.n_imports, 5);
    jinn_wbuf_free(&w);
}

/* The sha256 wrapper (src/sha256.c) against FIPS 180-2's vectors. */
TEST(sha256_vectors)
{
    uint8_t sha[JINN_SHA256_LEN], back[JINN_SHA256_LEN];
    char hex[JINN_SHA256_HEX_LEN + 1], path[] = "/tmp/jinn-sha-XXXXXX";
    int fd;

    CHECK_INT(jinn_sha256("abc", 3, sha), 0);
    jinn_sha256_hex(sha, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK_INT(jinn_sha256(NULL, 0, sha), 0);
    jinn_sha256_hex(sha, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK_INT(jinn_sha256_from_hex(hex, back), 0);
    CHECK(memcmp(sha, back, sizeof sha) == 0);
    CHECK_INT(jinn_sha256_from_hex("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                                   back),
              0);
    CHECK(memcmp(sha, back, sizeof sha) == 0);
    CHECK_INT(jinn_sha256_from_hex("e3b0", back), JINN_EINVAL);
    CHECK_INT(jinn_sha256_from_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                                   "0",
                                   back),
              JINN_EINVAL);
    CHECK_INT(jinn_sha256_from_hex("g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                                   back),
              JINN_EINVAL);

    /* A file hashed in chunks equals the one-shot digest. */
    fd = mkstemp(path);
    CHECK(fd >= 0);
    {
        static uint8_t big[200000];
        for (size_t i = 0; i < sizeof big; i++) {
            big[i] = (uint8_t)(i * 7);
        }
        CHECK(write(fd, big, sizeof big) == (ssize_t)sizeof big);
        close(fd);
        CHECK_INT(jinn_sha256(big, sizeof big, sha), 0);
    }
    CHECK_INT(jinn_sha256_file(path, back), 0);
    CHECK(memcmp(sha, back, sizeof sha) == 0);
    unlink(path);
    CHECK_INT(jinn_sha256_file(path, back), JINN_EIO);
}

/* Many types: a lookup starts from a kept position and skips to the type
 * (positions are kept for every n/1024-th type), so types between the
 * kept ones, and the last, must come out exactly. Type i takes i % 5 i32
 * and returns an i32 when i % 7 == 0. */
static void many_types(struct jinn_wbuf *w, uint32_t n, uint32_t log_type, uint32_t get_type,
                       uint32_t start_type)
{
    struct jinn_wbuf sec;
    char hex[128];
    put_header(w);
    jinn_wbuf_init(&sec);
    put_leb(&sec, n);
    for (uint32_t i = 0; i < n; i++) {
        jinn_wbuf_put_u8(&sec, 0x60);
        put_leb(&sec, i % 5);
        for (uint32_t k = 0; k < i % 5; k++) {
            jinn_wbuf_put_u8(&sec, 0x7f);
        }
        put_leb(&sec, i % 7 == 0);
        if (i % 7 == 0) {
            jinn_wbuf_put_u8(&sec, 0x7f);
        }
    }
    jinn_wbuf_put_u8(w, 1);
    put_leb(w, (uint32_t)sec.len);
    jinn_wbuf_put_raw(w, sec.data, sec.len);
    jinn_wbuf_free(&sec);
    /* imports: gojinn.host_log, gojinn.host_kv_get */
    jinn_wbuf_init(&sec);
    put_leb(&sec, 2);
    put_leb(&sec, 6);
    jinn_wbuf_put_raw(&sec, "gojinn", 6);
    put_leb(&sec, 8);
    jinn_wbuf_put_raw(&sec, "host_log", 8);
    jinn_wbuf_put_u8(&sec, 0);
    put_leb(&sec, log_type);
    put_leb(&sec, 6);
    jinn_wbuf_put_raw(&sec, "gojinn", 6);
    put_leb(&sec, 11);
    jinn_wbuf_put_raw(&sec, "host_kv_get", 11);
    jinn_wbuf_put_u8(&sec, 0);
    put_leb(&sec, get_type);
    jinn_wbuf_put_u8(w, 2);
    put_leb(w, (uint32_t)sec.len);
    jinn_wbuf_put_raw(w, sec.data, sec.len);
    jinn_wbuf_free(&sec);
    /* three functions; _start is the last (function 4) */
    jinn_wbuf_init(&sec);
    put_leb(&sec, 3);
    put_leb(&sec, 0);
    put_leb(&sec, 5);
    put_leb(&sec, start_type);
    jinn_wbuf_put_u8(w, 3);
    put_leb(w, (uint32_t)sec.len);
    jinn_wbuf_put_raw(w, sec.data, sec.len);
    jinn_wbuf_free(&sec);
    put_sec(w, 5, SEC_MEM_ONE);
    snprintf(hex, sizeof hex, "02 06 5f7374617274 00 04 06 6d656d6f7279 02 00");
    put_sec(w, 7, hex);
    put_sec(w, 10, "03 02 00 0b 02 00 0b 02 00 0b");
}

TEST(wasm_module_many_types)
{
    static struct jinn_wasm_info info;
    struct jinn_wbuf w;
    char err[256];

    /* 2998: (i32 i32 i32) -> (); 2989: (i32 x4) -> i32; 2995: [] -> [] */
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2998, 2989, 2995);
    CHECK_INT(inspect(&w, &info, err, sizeof err), 0);
    CHECK_INT(info.n_imports, 2);
    CHECK_STR(info.imports[0].params, "iii");
    CHECK_STR(info.imports[0].results, "");
    CHECK_STR(info.imports[1].params, "iiii");
    CHECK_STR(info.imports[1].results, "i");
    jinn_wbuf_free(&w);

    /* Off by one either way is another type. */
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2997, 2989, 2995);
    CHECK_REFUSED(w, "import gojinn.host_log has type (i32 i32) -> (); jinn provides");
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2998, 2990, 2995);
    CHECK_REFUSED(w, "import gojinn.host_kv_get has type () -> ();");
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2998, 2989, 2996);
    CHECK_REFUSED(w, "_start has type (i32) -> i32;");
    /* The last type, and the first. */
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2998, 2989, 2999);
    CHECK_REFUSED(w, "_start has type (i32 i32 i32 i32) -> ()");
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2998, 2989, 0);
    CHECK_REFUSED(w, "_start has type () -> i32");
    jinn_wbuf_init(&w);
    many_types(&w, 3000, 2998, 2989, 3000);
    CHECK_REFUSED(w, "function 4 uses type 3000, but the module has 3000 types");
}

/* Counts past what engines allow are refused before they cost time. */
TEST(wasm_module_count_limits)
{
    struct jinn_wbuf w;
    struct jinn_wbuf body;

    jinn_wbuf_init(&body);
    put_leb(&body, 1000001);
    for (int i = 0; i < 1000001; i++) {
        put_hex(&body, "60 00 00");
    }
    jinn_wbuf_init(&w);
    put_header(&w);
    jinn_wbuf_put_u8(&w, 1);
    put_leb(&w, (uint32_t)body.len);
    jinn_wbuf_put_raw(&w, body.data, body.len);
    jinn_wbuf_free(&body);
    CHECK_REFUSED(w, "section 1 (type): 1000001 types, more than the 1000000 engines allow");

    jinn_wbuf_init(&body);
    put_leb(&body, 1000001);
    for (int i = 0; i < 1000001; i++) {
        jinn_wbuf_put_u8(&body, 0);
    }
    jinn_wbuf_init(&w);
    put_header(&w);
    put_sec(&w, 1, SEC_TYPE_VOID);
    jinn_wbuf_put_u8(&w, 3);
    put_leb(&w, (uint32_t)body.len);
    jinn_wbuf_put_raw(&w, body.data, body.len);
    jinn_wbuf_free(&body);
    CHECK_REFUSED(w, "1000001 functions, more than the 1000000 engines allow");
}
