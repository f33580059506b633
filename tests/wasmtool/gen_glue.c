/* gen_glue.c - test tool: writes jinn's glue for a wasm2c translation.
 *
 * Usage: gen_glue m.h > glue.c. The imports are read from the header wasm2c
 * wrote ("/ * import: 'MOD' 'NAME' * /" followed by the prototype), so the
 * glue is checked against wasm2c's own declarations, independently of
 * module.c's parser. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "wasm/glue.h"

static char letter(const char *type)
{
    return strncmp(type, "u64", 3) == 0 ? 'I' : strncmp(type, "u32", 3) == 0 ? 'i' : 0;
}

int main(int argc, char **argv)
{
    static struct jinn_wasm_info info;
    char line[4096], mod[64], name[128];
    struct jinn_wbuf w;
    FILE *f;
    int rc;

    if (argc != 2 || (f = fopen(argv[1], "r")) == NULL) {
        fprintf(stderr, "usage: gen_glue m.h\n");
        return 2;
    }
    while (fgets(line, sizeof line, f)) {
        struct jinn_wasm_import *imp;
        char *p;
        size_t n = 0;
        if (sscanf(line, "/* import: '%63[^']' '%127[^']' */", mod, name) != 2) {
            continue;
        }
        if (fgets(line, sizeof line, f) == NULL || info.n_imports == JINN_WASM_IMPORTS_MAX) {
            return 1;
        }
        imp = &info.imports[info.n_imports++];
        snprintf(imp->module, sizeof imp->module, "%s", mod);
        snprintf(imp->name, sizeof imp->name, "%s", name);
        imp->results[0] = letter(line);
        p = strchr(line, ',');
        while (p != NULL && n < JINN_WASM_PARAMS_MAX) {
            p++;
            while (*p == ' ') {
                p++;
            }
            imp->params[n++] = letter(p);
            p = strchr(p, ',');
        }
        if (strcmp(mod, "gojinn") == 0) {
            info.uses_gojinn = true;
        } else {
            info.uses_wasi = true;
        }
    }
    fclose(f);
    jinn_wbuf_init(&w);
    rc = jinn_wasm_glue_write(&w, &info);
    if (rc != 0) {
        fprintf(stderr, "gen_glue: error %d\n", rc);
        return 1;
    }
    fwrite(w.data, 1, w.len, stdout);
    jinn_wbuf_free(&w);
    return 0;
}
