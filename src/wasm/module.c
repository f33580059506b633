/* module.c - reading a WebAssembly module's shape (see module.h).
 *
 * A hand-written reader of the binary format's outer structure: the header,
 * every section's id, order and size, and the contents of the sections that
 * decide whether jinn can run the module (types, imports, functions,
 * memories, exports, start). Function bodies, data and element segments are
 * only bounded, not read: wabt's wasm-validate checks those at deploy.
 *
 * Every length comes from the input, so every read goes through one cursor
 * that never moves past its end; vector counts are checked against the bytes
 * left before they are used. Nothing is allocated (the state machine's apply
 * calls this, where an out-of-memory would be a local failure): what later
 * sections need from earlier ones is found again in the module's bytes. The
 * first problem found ends the parse with one line naming it. */
#include "wasm/module.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "wasm/abi.h"

/* wasm limits a memory to 65536 pages of 64 KiB (4 GiB) in wasm32. */
#define PAGES_MAX 65536u
/* The limits web engines apply (V8's, also in the JS API spec): a module
 * past them runs nowhere, and they bound the time a hostile module costs
 * here (a 16 MiB type section would otherwise be 5.6 million types). */
#define TYPES_MAX 1000000u
#define FUNCTIONS_MAX 1000000u
#define EXPORTS_MAX 100000u

enum {
    SEC_CUSTOM = 0,
    SEC_TYPE = 1,
    SEC_IMPORT = 2,
    SEC_FUNCTION = 3,
    SEC_TABLE = 4,
    SEC_MEMORY = 5,
    SEC_GLOBAL = 6,
    SEC_EXPORT = 7,
    SEC_START = 8,
    SEC_ELEMENT = 9,
    SEC_CODE = 10,
    SEC_DATA = 11,
    SEC_DATACOUNT = 12,
    SEC_TAG = 13,
    SEC_COUNT = 14
};

static const char *const section_names[SEC_COUNT] = {
    "custom", "type",  "import", "function", "table",     "memory", "global",
    "export", "start", "element", "code",    "data", "data count", "tag"};

/* The order non-custom sections must appear in (the spec's, with the later
 * additions data count and tag in their places); index = section id. */
static const int section_rank[SEC_COUNT] = {
    [SEC_TYPE] = 1,     [SEC_IMPORT] = 2,  [SEC_FUNCTION] = 3, [SEC_TABLE] = 4,
    [SEC_MEMORY] = 5,   [SEC_TAG] = 6,     [SEC_GLOBAL] = 7,   [SEC_EXPORT] = 8,
    [SEC_START] = 9,    [SEC_ELEMENT] = 10, [SEC_DATACOUNT] = 11, [SEC_CODE] = 12,
    [SEC_DATA] = 13};

struct cursor {
    const uint8_t *p, *end;
};

/* Positions kept to find a type by index: a lookup skips at most
 * n_types / TYPE_MARKS types (a few LEB128 reads each). */
#define TYPE_MARKS 1024

/* One function type: where its parameter and result vectors start in the
 * module (they were checked when the type section was read). */
struct functype {
    const uint8_t *params, *results;
    uint32_t n_params, n_results;
};

struct parser {
    struct jinn_wasm_info *info;
    char *err;
    size_t errlen;
    int section; /* the section being read, for messages; -1 = header */

    /* No allocation (apply calls this; an out-of-memory there would be a
     * local failure): types are found again in the type section, from
     * every type_stride-th type's position kept in type_mark. */
    uint32_t n_types, type_stride;
    const uint8_t *type_mark[TYPE_MARKS];
    const uint8_t *types_end;
    uint32_t import_type[JINN_WASM_IMPORTS_MAX]; /* type index of each function import */
    struct cursor funcs;                         /* the function section's entries */
    uint32_t n_funcs, n_func_imports, n_defined;
    uint32_t n_memories;
    bool have_code, have_datacount, have_data;
    uint32_t code_count, datacount, data_count;
    bool start_found, memory_found;
    uint32_t start_func;
};

__attribute__((format(printf, 2, 3))) static int fail(struct parser *ps, const char *fmt, ...)
{
    va_list ap;
    /* Only the first problem is reported. */
    if (ps->err != NULL && ps->errlen > 0 && ps->err[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(ps->err, ps->errlen, fmt, ap);
        va_end(ap);
    }
    return JINN_EINVAL;
}

/* Names go into one-line messages: anything but printable ASCII becomes '?',
 * and a long name is cut. */
static void printable(char *out, size_t outlen, const uint8_t *p, size_t n)
{
    size_t i, o = 0;
    for (i = 0; i < n && o + 4 < outlen; i++) {
        out[o++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    }
    if (i < n && o + 3 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static const char *section_name(int id)
{
    return id >= 0 && id < SEC_COUNT ? section_names[id] : "unknown";
}

static int truncated(struct parser *ps)
{
    if (ps->section < 0) {
        return fail(ps, "the module ends inside its header");
    }
    return fail(ps, "section %d (%s) is truncated: a field runs past its end", ps->section,
                section_name(ps->section));
}

static int get_u8(struct parser *ps, struct cursor *c, uint8_t *out)
{
    if (c->p >= c->end) {
        return truncated(ps);
    }
    *out = *c->p++;
    return 0;
}

/* Unsigned LEB128 of at most 32 bits. The binary format allows padded
 * (non-minimal) encodings up to 5 bytes, which linkers do emit; a sixth byte
 * or bits beyond 32 in the fifth are malformed. */
static int get_u32(struct parser *ps, struct cursor *c, uint32_t *out, const char *what)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 5; i++) {
        uint8_t b;
        if (c->p >= c->end) {
            return truncated(ps);
        }
        b = *c->p++;
        if (i == 4 && (b & 0x70) != 0) {
            return fail(ps, "section %d (%s): %s does not fit 32 bits", ps->section,
                        section_name(ps->section), what);
        }
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return fail(ps, "section %d (%s): %s is encoded in more than 5 bytes", ps->section,
                section_name(ps->section), what);
}

/* A vector count: every element takes at least min_size bytes, so a count
 * the remaining bytes cannot hold is refused before it is used. */
static int get_count(struct parser *ps, struct cursor *c, uint32_t *out, size_t min_size,
                     const char *what)
{
    int rv = get_u32(ps, c, out, what);
    if (rv != 0) {
        return rv;
    }
    if ((uint64_t)*out * min_size > (uint64_t)(c->end - c->p)) {
        return fail(ps, "section %d (%s): %s %u runs past the end of the section", ps->section,
                    section_name(ps->section), what, *out);
    }
    return 0;
}

/* A name: a length-prefixed UTF-8 string, borrowed from the module. */
static int get_name(struct parser *ps, struct cursor *c, const uint8_t **p, uint32_t *n)
{
    int rv = get_u32(ps, c, n, "a name's length");
    if (rv != 0) {
        return rv;
    }
    if (*n > (size_t)(c->end - c->p)) {
        return fail(ps, "section %d (%s): a name of %u bytes runs past the end of the section",
                    ps->section, section_name(ps->section), *n);
    }
    *p = c->p;
    c->p += *n;
    if (!jinn_utf8_valid(*p, *n)) {
        return fail(ps, "section %d (%s): a name is not valid UTF-8", ps->section,
                    section_name(ps->section));
    }
    return 0;
}

static bool name_is(const uint8_t *p, uint32_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* The letter a value type gets in messages and in jinn_wasm_import:
 * abi.h's 'i' and 'I' for the integer types it knows; others are refused
 * for imports but may appear in the module's own function types. */
static char valtype_letter(uint8_t t)
{
    switch (t) {
    case 0x7f:
        return 'i';
    case 0x7e:
        return 'I';
    case 0x7d:
        return 'f';
    case 0x7c:
        return 'F';
    case 0x7b:
        return 'v';
    case 0x70:
    case 0x6f:
        return 'r';
    default:
        return 0;
    }
}

static const char *letter_name(char l)
{
    switch (l) {
    case 'i':
        return "i32";
    case 'I':
        return "i64";
    case 'f':
        return "f32";
    case 'F':
        return "f64";
    case 'v':
        return "v128";
    default:
        return "ref";
    }
}

/* "(i32 i32) -> i32" for messages. */
static void describe_type(char *out, size_t outlen, const struct functype *ft)
{
    size_t o = 0;
    int n;
    out[0] = '\0';
    n = snprintf(out, outlen, "(");
    o = n > 0 ? (size_t)n : 0;
    for (uint32_t i = 0; i < ft->n_params && o < outlen; i++) {
        n = snprintf(out + o, outlen - o, "%s%s", i ? " " : "",
                     letter_name(valtype_letter(ft->params[i])));
        o += n > 0 ? (size_t)n : 0;
    }
    if (o < outlen) {
        n = snprintf(out + o, outlen - o, ") ->");
        o += n > 0 ? (size_t)n : 0;
    }
    if (ft->n_results == 0 && o < outlen) {
        n = snprintf(out + o, outlen - o, " ()");
        o += n > 0 ? (size_t)n : 0;
    }
    for (uint32_t i = 0; i < ft->n_results && o < outlen; i++) {
        n = snprintf(out + o, outlen - o, " %s", letter_name(valtype_letter(ft->results[i])));
        o += n > 0 ? (size_t)n : 0;
    }
}

static int read_valtypes(struct parser *ps, struct cursor *c, const uint8_t **start,
                         uint32_t *count)
{
    int rv = get_count(ps, c, count, 1, "a value type count");
    if (rv != 0) {
        return rv;
    }
    *start = c->p;
    for (uint32_t i = 0; i < *count; i++) {
        if (valtype_letter(c->p[i]) == 0) {
            return fail(ps, "section 1 (type): unknown value type 0x%02x", c->p[i]);
        }
    }
    c->p += *count;
    return 0;
}

static int read_types(struct parser *ps, struct cursor *c)
{
    uint32_t n;
    int rv = get_count(ps, c, &n, 3, "the type count");
    if (rv != 0) {
        return rv;
    }
    if (n > TYPES_MAX) {
        return fail(ps, "section 1 (type): %u types, more than the %u engines allow", n,
                    TYPES_MAX);
    }
    ps->type_stride = n / TYPE_MARKS + 1;
    for (uint32_t i = 0; i < n; i++) {
        struct functype ft;
        uint8_t form = 0;
        if (i % ps->type_stride == 0) {
            ps->type_mark[i / ps->type_stride] = c->p;
        }
        if ((rv = get_u8(ps, c, &form)) != 0) {
            return rv;
        }
        if (form != 0x60) {
            return fail(ps, "section 1 (type): type %u is not a function type (0x%02x)", i,
                        form);
        }
        if ((rv = read_valtypes(ps, c, &ft.params, &ft.n_params)) != 0 ||
            (rv = read_valtypes(ps, c, &ft.results, &ft.n_results)) != 0) {
            return rv;
        }
    }
    ps->n_types = n;
    ps->types_end = c->p;
    return 0;
}

/* Type idx (< n_types) of the type section read above, which is well-formed
 * up to types_end. */
static int type_at(struct parser *ps, uint32_t idx, struct functype *ft)
{
    struct cursor c = {ps->type_mark[idx / ps->type_stride], ps->types_end};
    uint8_t form = 0;
    int rv = 0;
    for (uint32_t i = idx - idx % ps->type_stride;; i++) {
        if ((rv = get_u8(ps, &c, &form)) != 0 ||
            (rv = get_u32(ps, &c, &ft->n_params, "a value type count")) != 0) {
            return rv;
        }
        ft->params = c.p;
        c.p += ft->n_params;
        if ((rv = get_u32(ps, &c, &ft->n_results, "a value type count")) != 0) {
            return rv;
        }
        ft->results = c.p;
        c.p += ft->n_results;
        if (i == idx) {
            return 0;
        }
    }
}

static int read_limits(struct parser *ps, struct cursor *c, uint32_t *min, uint32_t *max,
                       bool *has_max)
{
    uint8_t flags = 0;
    int rv = get_u8(ps, c, &flags);
    if (rv != 0) {
        return rv;
    }
    if (flags > 1) {
        /* 2/3: shared (threads), 4+: memory64. */
        return fail(ps, "section %d (%s): limits flag 0x%02x (shared or 64-bit memory) is not "
                        "supported",
                    ps->section, section_name(ps->section), flags);
    }
    if ((rv = get_u32(ps, c, min, "a limit")) != 0) {
        return rv;
    }
    *has_max = flags == 1;
    *max = 0;
    if (*has_max && (rv = get_u32(ps, c, max, "a limit")) != 0) {
        return rv;
    }
    return 0;
}

/* Finds an import in abi.h's list. Returns 1 when name and signature are
 * listed, 0 when the name is listed with other signatures, -1 when the
 * name is not listed at all. */
static int abi_lookup(const char *module, const char *name, const char *params,
                      const char *results, char *sigs, size_t sigslen)
{
    int found = -1;
    size_t o = 0;
    sigs[0] = '\0';
#define JINN_ABI_MATCH(mod, nm, sym, p, r, hr)                                                  \
    if (strcmp(module, mod) == 0 && strcmp(name, nm) == 0) {                                   \
        if (strcmp(params, p) == 0 && strcmp(results, r) == 0) {                               \
            return 1;                                                                           \
        }                                                                                       \
        found = 0;                                                                              \
        if (o < sigslen) {                                                                      \
            int n_ = snprintf(sigs + o, sigslen - o, "%s(%s) -> %s", o ? " or " : "", p,        \
                              r[0] ? r : "()");                                                 \
            o += n_ > 0 ? (size_t)n_ : 0;                                                       \
        }                                                                                       \
    }
    JINN_WASM_IMPORTS(JINN_ABI_MATCH)
#undef JINN_ABI_MATCH
    return found;
}

/* abi.h spells a signature with letters; messages spell wasm types. */
static void letters_to_types(char *out, size_t outlen, const char *sig)
{
    size_t o = 0;
    out[0] = '\0';
    for (const char *s = sig; *s && o < outlen; s++) {
        int n;
        if (*s == 'i' || *s == 'I') {
            n = snprintf(out + o, outlen - o, "%s%s", (o && s[-1] != ' ' && s[-1] != '(') ? " " : "",
                         *s == 'i' ? "i32" : "i64");
        } else {
            n = snprintf(out + o, outlen - o, "%c", *s);
        }
        o += n > 0 ? (size_t)n : 0;
    }
}

static int check_import(struct parser *ps, const uint8_t *mod, uint32_t modlen,
                        const uint8_t *name, uint32_t namelen, const struct functype *ft)
{
    struct jinn_wasm_info *info = ps->info;
    struct jinn_wasm_import *im;
    char pm[48], pn[80], sig[64], sigs[256], want[512];
    int found;

    printable(pm, sizeof pm, mod, modlen);
    printable(pn, sizeof pn, name, namelen);
    if (modlen >= sizeof im->module || namelen >= sizeof im->name ||
        memchr(mod, '\0', modlen) != NULL || memchr(name, '\0', namelen) != NULL) {
        return fail(ps, "import %s.%s is not provided by jinn", pm, pn);
    }
    if (info->n_imports == JINN_WASM_IMPORTS_MAX) {
        return fail(ps, "the module has more than %d function imports", JINN_WASM_IMPORTS_MAX);
    }
    im = &info->imports[info->n_imports];
    memset(im, 0, sizeof *im);
    memcpy(im->module, mod, modlen);
    memcpy(im->name, name, namelen);
    for (unsigned i = 0; i < info->n_imports; i++) {
        if (strcmp(info->imports[i].module, im->module) == 0 &&
            strcmp(info->imports[i].name, im->name) == 0) {
            return fail(ps, "import %s.%s appears more than once", pm, pn);
        }
    }
    /* The name first: an unknown import is the likeliest mistake, and its
     * types do not matter then. */
    if (abi_lookup(im->module, im->name, "", "", sigs, sizeof sigs) < 0) {
        return fail(ps, "import %s.%s is not provided by jinn", pm, pn);
    }
    describe_type(sig, sizeof sig, ft);
    for (uint32_t i = 0; i < ft->n_params; i++) {
        char l = valtype_letter(ft->params[i]);
        if (l != 'i' && l != 'I') {
            return fail(ps, "import %s.%s %s takes a %s; jinn's host functions take only i32 "
                            "and i64",
                        pm, pn, sig, letter_name(l));
        }
    }
    for (uint32_t i = 0; i < ft->n_results; i++) {
        char l = valtype_letter(ft->results[i]);
        if (l != 'i' && l != 'I') {
            return fail(ps, "import %s.%s %s returns a %s; jinn's host functions return only "
                            "i32 and i64",
                        pm, pn, sig, letter_name(l));
        }
    }
    if (ft->n_params > JINN_WASM_PARAMS_MAX || ft->n_results > 1) {
        found = 0;
    } else {
        for (uint32_t i = 0; i < ft->n_params; i++) {
            im->params[i] = valtype_letter(ft->params[i]);
        }
        if (ft->n_results == 1) {
            im->results[0] = valtype_letter(ft->results[0]);
        }
        found = abi_lookup(im->module, im->name, im->params, im->results, sigs, sizeof sigs);
    }
    if (found != 1) {
        letters_to_types(want, sizeof want, sigs);
        return fail(ps, "import %s.%s has type %s; jinn provides %s", pm, pn, sig, want);
    }
    if (strcmp(im->module, "gojinn") == 0) {
        info->uses_gojinn = true;
    } else {
        info->uses_wasi = true;
    }
    info->n_imports++;
    return 0;
}

static int read_imports(struct parser *ps, struct cursor *c)
{
    uint32_t n;
    int rv = get_count(ps, c, &n, 4, "the import count");
    if (rv != 0) {
        return rv;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *mod, *name;
        uint32_t modlen, namelen, idx;
        uint8_t kind = 0;
        struct functype ft;
        char pm[48], pn[80];
        if ((rv = get_name(ps, c, &mod, &modlen)) != 0 ||
            (rv = get_name(ps, c, &name, &namelen)) != 0 || (rv = get_u8(ps, c, &kind)) != 0) {
            return rv;
        }
        printable(pm, sizeof pm, mod, modlen);
        printable(pn, sizeof pn, name, namelen);
        switch (kind) {
        case 0x00:
            break;
        case 0x01:
            return fail(ps, "import %s.%s is a table; jinn provides only function imports", pm,
                        pn);
        case 0x02:
            return fail(ps, "import %s.%s is a memory; jinn provides only function imports "
                            "(the module must define and export its own memory)",
                        pm, pn);
        case 0x03:
            return fail(ps, "import %s.%s is a global; jinn provides only function imports", pm,
                        pn);
        case 0x04:
            return fail(ps, "import %s.%s is a tag; jinn provides only function imports", pm,
                        pn);
        default:
            return fail(ps, "section 2 (import): import %s.%s has unknown kind 0x%02x", pm, pn,
                        kind);
        }
        if ((rv = get_u32(ps, c, &idx, "a type index")) != 0) {
            return rv;
        }
        if (idx >= ps->n_types) {
            return fail(ps, "import %s.%s uses type %u, but the module has %u types", pm, pn,
                        idx, ps->n_types);
        }
        if ((rv = type_at(ps, idx, &ft)) != 0 ||
            (rv = check_import(ps, mod, modlen, name, namelen, &ft)) != 0) {
            return rv;
        }
        ps->import_type[ps->n_func_imports++] = idx;
        ps->n_funcs = ps->n_func_imports;
    }
    return 0;
}

static int read_functions(struct parser *ps, struct cursor *c)
{
    uint32_t n;
    int rv = get_count(ps, c, &n, 1, "the function count");
    if (rv != 0) {
        return rv;
    }
    if (n > FUNCTIONS_MAX) {
        return fail(ps, "section 3 (function): %u functions, more than the %u engines allow",
                    n, FUNCTIONS_MAX);
    }
    ps->n_defined = n;
    ps->n_funcs = ps->n_func_imports + n;
    ps->funcs.p = c->p;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx;
        if ((rv = get_u32(ps, c, &idx, "a type index")) != 0) {
            return rv;
        }
        if (idx >= ps->n_types) {
            return fail(ps, "section 3 (function): function %u uses type %u, but the module "
                            "has %u types",
                        ps->n_func_imports + i, idx, ps->n_types);
        }
    }
    ps->funcs.end = c->p;
    return 0;
}

static int read_memories(struct parser *ps, struct cursor *c)
{
    uint32_t n = 0, min = 0, max = 0;
    bool has_max = false;
    int rv = get_count(ps, c, &n, 2, "the memory count");
    if (rv != 0) {
        return rv;
    }
    if (n > 1) {
        return fail(ps, "the module defines %u memories; jinn runs modules with one", n);
    }
    ps->n_memories = n;
    if (n == 0) {
        return 0;
    }
    if ((rv = read_limits(ps, c, &min, &max, &has_max)) != 0) {
        return rv;
    }
    if (min > PAGES_MAX || (has_max && max > PAGES_MAX)) {
        return fail(ps, "section 5 (memory): a limit above %u pages (4 GiB)", PAGES_MAX);
    }
    if (has_max && max < min) {
        return fail(ps, "section 5 (memory): the maximum (%u pages) is below the minimum (%u)",
                    max, min);
    }
    ps->info->memory_min_pages = min;
    ps->info->memory_max_pages = has_max ? max : PAGES_MAX;
    return 0;
}

static int read_exports(struct parser *ps, struct cursor *c)
{
    uint32_t n;
    int rv = get_count(ps, c, &n, 3, "the export count");
    if (rv != 0) {
        return rv;
    }
    if (n > EXPORTS_MAX) {
        return fail(ps, "section 7 (export): %u exports, more than the %u engines allow", n,
                    EXPORTS_MAX);
    }
    /* Export names are unique by the spec; wasm-validate checks that for
     * all of them, this only for the two jinn reads. */
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *name;
        uint32_t namelen, idx;
        uint8_t kind = 0;
        char pn[80];
        if ((rv = get_name(ps, c, &name, &namelen)) != 0 || (rv = get_u8(ps, c, &kind)) != 0 ||
            (rv = get_u32(ps, c, &idx, "an export index")) != 0) {
            return rv;
        }
        printable(pn, sizeof pn, name, namelen);
        if (kind > 0x04) {
            return fail(ps, "section 7 (export): export %s has unknown kind 0x%02x", pn, kind);
        }
        if (name_is(name, namelen, "_start")) {
            if (ps->start_found) {
                return fail(ps, "export _start appears more than once");
            }
            if (kind != 0x00) {
                return fail(ps, "export _start is not a function");
            }
            if (idx >= ps->n_funcs) {
                return fail(ps, "export _start names function %u, but the module has %u", idx,
                            ps->n_funcs);
            }
            ps->start_found = true;
            ps->start_func = idx;
        } else if (name_is(name, namelen, "memory")) {
            if (ps->memory_found) {
                return fail(ps, "export memory appears more than once");
            }
            if (kind != 0x02) {
                return fail(ps, "export memory is not a memory");
            }
            if (idx >= ps->n_memories) {
                return fail(ps, "export memory names memory %u, but the module defines %u", idx,
                            ps->n_memories);
            }
            ps->memory_found = true;
        }
    }
    return 0;
}

/* Reads one known section's contents; the cursor ends exactly at the
 * section's end or the section is malformed. */
static int read_section(struct parser *ps, int id, struct cursor *c)
{
    uint32_t n, idx;
    const uint8_t *name;
    int rv = 0;

    switch (id) {
    case SEC_CUSTOM:
        /* A name, then anything: only the name is checked. */
        if ((rv = get_name(ps, c, &name, &n)) != 0) {
            return rv;
        }
        c->p = c->end;
        return 0;
    case SEC_TYPE:
        rv = read_types(ps, c);
        break;
    case SEC_IMPORT:
        rv = read_imports(ps, c);
        break;
    case SEC_FUNCTION:
        rv = read_functions(ps, c);
        break;
    case SEC_MEMORY:
        rv = read_memories(ps, c);
        break;
    case SEC_EXPORT:
        rv = read_exports(ps, c);
        break;
    case SEC_START:
        if ((rv = get_u32(ps, c, &idx, "the start function")) != 0) {
            return rv;
        }
        return fail(ps, "the module has a start section (function %u would run when it is "
                        "instantiated); jinn runs only the exported _start",
                    idx);
    case SEC_CODE:
        /* Bodies are wasm-validate's; only the count is checked here. */
        if ((rv = get_count(ps, c, &ps->code_count, 1, "the body count")) != 0) {
            return rv;
        }
        ps->have_code = true;
        c->p = c->end;
        return 0;
    case SEC_DATA:
        if ((rv = get_count(ps, c, &ps->data_count, 1, "the segment count")) != 0) {
            return rv;
        }
        ps->have_data = true;
        c->p = c->end;
        return 0;
    case SEC_DATACOUNT:
        if ((rv = get_u32(ps, c, &ps->datacount, "the data count")) != 0) {
            return rv;
        }
        ps->have_datacount = true;
        break;
    default:
        /* table, global, element, tag: bounded by the section size. */
        c->p = c->end;
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    if (c->p != c->end) {
        return fail(ps, "section %d (%s) has %zu bytes after its contents", id,
                    section_name(id), (size_t)(c->end - c->p));
    }
    return 0;
}

static int finish(struct parser *ps)
{
    const struct functype *ft;
    struct functype ftype;
    uint32_t idx = 0;
    char sig[64];
    int rv;

    if (ps->n_defined > 0 && !ps->have_code) {
        return fail(ps, "the module declares %u functions but has no code section",
                    ps->n_defined);
    }
    if (ps->have_code && ps->code_count != ps->n_defined) {
        return fail(ps, "the code section has %u bodies for %u declared functions",
                    ps->code_count, ps->n_defined);
    }
    if (ps->have_datacount && ps->datacount != (ps->have_data ? ps->data_count : 0)) {
        return fail(ps, "the data count section says %u segments, the data section has %u",
                    ps->datacount, ps->have_data ? ps->data_count : 0);
    }
    if (!ps->start_found) {
        return fail(ps, "no exported _start (jinn runs WASI commands)");
    }
    if (!ps->memory_found) {
        return fail(ps, "no exported memory named \"memory\"");
    }
    if (ps->start_func < ps->n_func_imports) {
        idx = ps->import_type[ps->start_func];
    } else {
        /* The function section was read whole: find _start's entry. */
        struct cursor c = ps->funcs;
        for (uint32_t i = ps->n_func_imports; i <= ps->start_func; i++) {
            if ((rv = get_u32(ps, &c, &idx, "a type index")) != 0) {
                return rv;
            }
        }
    }
    if ((rv = type_at(ps, idx, &ftype)) != 0) {
        return rv;
    }
    ft = &ftype;
    if (ft->n_params != 0 || ft->n_results != 0) {
        describe_type(sig, sizeof sig, ft);
        return fail(ps, "_start has type %s; it must take and return nothing", sig);
    }
    if (ps->start_func < ps->n_func_imports) {
        return fail(ps, "_start is an imported function; it must be defined by the module");
    }
    return 0;
}

int jinn_wasm_inspect(const void *bytes, size_t len, struct jinn_wasm_info *info, char *err,
                      size_t errlen)
{
    static const uint8_t header[8] = {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00};
    struct parser ps;
    struct cursor c;
    int rv, last_rank = 0;
    bool seen[SEC_COUNT] = {false};

    memset(info, 0, sizeof *info);
    memset(&ps, 0, sizeof ps);
    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }
    ps.info = info;
    ps.err = err;
    ps.errlen = errlen;
    ps.section = -1;
    if (len == 0) {
        rv = fail(&ps, "the module is empty");
        goto cleanup;
    }
    if (memcmp(bytes, header, len < 4 ? len : 4) != 0) {
        rv = fail(&ps, "not a WebAssembly module (no \\0asm magic)");
        goto cleanup;
    }
    if (len < 8) {
        rv = truncated(&ps);
        goto cleanup;
    }
    if (memcmp((const uint8_t *)bytes + 4, header + 4, 4) != 0) {
        const uint8_t *v = (const uint8_t *)bytes + 4;
        rv = fail(&ps, "WebAssembly binary version %u is not supported (only 1)",
                  (unsigned)(v[0] | v[1] << 8 | v[2] << 16 | (uint32_t)v[3] << 24));
        goto cleanup;
    }
    c.p = (const uint8_t *)bytes + 8;
    c.end = (const uint8_t *)bytes + len;
    while (c.p < c.end) {
        uint8_t id;
        uint32_t size;
        struct cursor sc;
        const uint8_t *at = c.p;

        ps.section = -1;
        id = *c.p++;
        if (id >= SEC_COUNT) {
            rv = fail(&ps, "unknown section id %u at offset %zu", id,
                      (size_t)(at - (const uint8_t *)bytes));
            goto cleanup;
        }
        ps.section = id;
        if ((rv = get_u32(&ps, &c, &size, "the section size")) != 0) {
            goto cleanup;
        }
        if (size > (size_t)(c.end - c.p)) {
            rv = fail(&ps, "section %u (%s) runs past the end of the module", id,
                      section_name(id));
            goto cleanup;
        }
        if (id != SEC_CUSTOM) {
            if (seen[id]) {
                rv = fail(&ps, "section %u (%s) appears twice", id, section_name(id));
                goto cleanup;
            }
            if (section_rank[id] < last_rank) {
                rv = fail(&ps, "section %u (%s) is out of order", id, section_name(id));
                goto cleanup;
            }
            seen[id] = true;
            last_rank = section_rank[id];
        }
        sc.p = c.p;
        sc.end = c.p + size;
        if ((rv = read_section(&ps, id, &sc)) != 0) {
            goto cleanup;
        }
        c.p += size;
    }
    ps.section = -1;
    rv = finish(&ps);
cleanup:
    if (rv != 0) {
        memset(info, 0, sizeof *info);
        if (err != NULL && errlen > 0 && err[0] == '\0') {
            snprintf(err, errlen, "malformed module");
        }
        return JINN_EINVAL;
    }
    return 0;
}
