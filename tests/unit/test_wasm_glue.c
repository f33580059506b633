/* test_wasm_glue.c - the glue generator: one definition per import with the
 * module's own signature, result conversions, instantiate's parameters, and
 * refusals. (tests/cluster/test_wasm_sandbox.py compiles real output.) */
#include <string.h>

#include "codec.h"
#include "error.h"
#include "wasm/glue.h"
#include "unit.h"

static void add(struct jinn_wasm_info *info, const char *mod, const char *name,
                const char *params, const char *results)
{
    struct jinn_wasm_import *imp = &info->imports[info->n_imports++];
    snprintf(imp->module, sizeof imp->module, "%s", mod);
    snprintf(imp->name, sizeof imp->name, "%s", name);
    snprintf(imp->params, sizeof imp->params, "%s", params);
    snprintf(imp->results, sizeof imp->results, "%s", results);
    if (strcmp(mod, "gojinn") == 0) {
        info->uses_gojinn = true;
    } else {
        info->uses_wasi = true;
    }
}

/* NUL-terminated copy of the generated text, for strstr. */
static char *glue_text(const struct jinn_wasm_info *info, int *rc)
{
    static char text[16384];
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    *rc = jinn_wasm_glue_write(&w, info);
    snprintf(text, sizeof text, "%.*s", (int)w.len, w.data ? (char *)w.data : "");
    jinn_wbuf_free(&w);
    return text;
}

TEST(wasm_glue_signatures_and_conversions)
{
    struct jinn_wasm_info info;
    int rc;
    const char *t;
    memset(&info, 0, sizeof info);
    add(&info, "wasi_snapshot_preview1", "fd_write", "iiii", "i");
    add(&info, "wasi_snapshot_preview1", "proc_exit", "i", "");
    add(&info, "wasi_snapshot_preview1", "clock_time_get", "iIi", "i");
    add(&info, "gojinn", "host_kv_get", "iiii", "I"); /* the Rust SDK's i64 */
    add(&info, "gojinn", "host_log", "iii", "i");     /* an SDK expecting a result */
    add(&info, "gojinn", "host_kv_set", "iiii", "");  /* result ignored */
    add(&info, "wasi_snapshot_preview1", "fd_write", "iiii", "i"); /* twice: one definition */
    t = glue_text(&info, &rc);
    CHECK_INT(rc, 0);
    CHECK(strstr(t, "#include \"m.h\"") != NULL);
    CHECK(strstr(t,
                 "u32 Z_wasi_snapshot_preview1Z_fd_write(struct "
                 "Z_wasi_snapshot_preview1_instance_t *ctx, u32 a0, u32 a1, u32 a2, "
                 "u32 a3)\n{\n    return jinn_wasi_fd_write(ctx, a0, a1, a2, a3);\n}") != NULL);
    /* Imported twice, defined once. */
    CHECK(strstr(strstr(t, "Z_wasi_snapshot_preview1Z_fd_write(") + 1,
                 "Z_wasi_snapshot_preview1Z_fd_write(") == NULL);
    CHECK(strstr(t, "void Z_wasi_snapshot_preview1Z_proc_exit(struct "
                    "Z_wasi_snapshot_preview1_instance_t *ctx, u32 a0)\n{\n    "
                    "jinn_wasi_proc_exit(ctx, a0);\n}") != NULL);
    CHECK(strstr(t, "u32 a0, u64 a1, u32 a2)") != NULL);
    CHECK(strstr(t,
                 "u64 Z_gojinnZ_host_kv_get(struct Z_gojinn_instance_t *ctx, u32 a0, u32 a1, "
                 "u32 a2, u32 a3)\n{\n    return (u64)jinn_host_kv_get(ctx, a0, a1, a2, "
                 "a3);") != NULL);
    CHECK(strstr(t,
                 "u32 Z_gojinnZ_host_log(struct Z_gojinn_instance_t *ctx, u32 a0, u32 a1, "
                 "u32 a2)\n{\n    jinn_host_log(ctx, a0, a1, a2);\n    return 0;\n}") != NULL);
    CHECK(strstr(t, "void Z_gojinnZ_host_kv_set(struct Z_gojinn_instance_t *ctx, u32 a0, u32 "
                    "a1, u32 a2, u32 a3)\n{\n    (void)jinn_host_kv_set(") != NULL);
    CHECK(strstr(t, "extern uint32_t") == NULL); /* c_type spells u32 */
    CHECK(strstr(t, "extern u32 jinn_host_kv_get(void *, u32, u32, u32, u32);") != NULL);
    CHECK(strstr(t, "extern void jinn_wasi_proc_exit(void *, u32);") != NULL);
    CHECK(strstr(t, "Z_m_instantiate((Z_m_instance_t *)inst, (struct Z_gojinn_instance_t "
                    "*)gojinn_ctx, (struct Z_wasi_snapshot_preview1_instance_t *)wasi_ctx);") !=
          NULL);
    CHECK(strstr(t, "#error") != NULL);
    CHECK(strstr(t, "jinn_mod_instance_size = sizeof(Z_m_instance_t)") != NULL);
}

/* Instantiate's parameters follow the import modules actually used. */
TEST(wasm_glue_instantiate_parameters)
{
    struct jinn_wasm_info info;
    int rc;
    const char *t;
    memset(&info, 0, sizeof info);
    t = glue_text(&info, &rc);
    CHECK_INT(rc, 0);
    CHECK(strstr(t, "Z_m_instantiate((Z_m_instance_t *)inst);") != NULL);
    add(&info, "gojinn", "host_mutex_unlock", "ii", "i");
    t = glue_text(&info, &rc);
    CHECK_INT(rc, 0);
    CHECK(strstr(t, "Z_m_instantiate((Z_m_instance_t *)inst, (struct Z_gojinn_instance_t "
                    "*)gojinn_ctx);") != NULL);
    memset(&info, 0, sizeof info);
    add(&info, "wasi_snapshot_preview1", "sched_yield", "", "i");
    t = glue_text(&info, &rc);
    CHECK_INT(rc, 0);
    CHECK(strstr(t, "Z_m_instantiate((Z_m_instance_t *)inst, (struct "
                    "Z_wasi_snapshot_preview1_instance_t *)wasi_ctx);") != NULL);
    CHECK(strstr(t, "u32 Z_wasi_snapshot_preview1Z_sched_yield(struct "
                    "Z_wasi_snapshot_preview1_instance_t *ctx)\n{\n    return "
                    "jinn_wasi_sched_yield(ctx);") != NULL);
}

TEST(wasm_glue_refusals)
{
    struct jinn_wasm_info info;
    int rc;
    memset(&info, 0, sizeof info);
    add(&info, "gojinn", "host_foo", "ii", "i");
    glue_text(&info, &rc);
    CHECK_INT(rc, JINN_EINVAL);
    memset(&info, 0, sizeof info);
    add(&info, "gojinn", "host_kv_get", "iii", "i"); /* wrong arity */
    glue_text(&info, &rc);
    CHECK_INT(rc, JINN_EINVAL);
    memset(&info, 0, sizeof info);
    add(&info, "env", "fd_write", "iiii", "i");
    glue_text(&info, &rc);
    CHECK_INT(rc, JINN_EINVAL);
    /* One name, two accepted signatures: C cannot define both. */
    memset(&info, 0, sizeof info);
    add(&info, "gojinn", "host_kv_get", "iiii", "i");
    add(&info, "gojinn", "host_kv_get", "iiii", "I");
    glue_text(&info, &rc);
    CHECK_INT(rc, JINN_EINVAL);
}
