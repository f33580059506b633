/* fn.h - deployed functions: the replicated registry of WebAssembly modules.
 *
 * A function is a name, its versions (module bytes, content-addressed by
 * sha256, and settings) and which version is active. Modules and settings
 * travel through the log (FN_DEPLOY), so every node runs exactly the same
 * version; FN_DELETE and FN_ROLLBACK change which version is active. The
 * state is part of the snapshot. Deploys are validated twice: by the
 * handler (wasm-validate, clear errors), and deterministically in apply
 * (jinn_wasm_inspect + settings parsing), so a hand-made entry cannot
 * install what a handler would refuse. */
#ifndef JINN_FSM_FN_H
#define JINN_FSM_FN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JINN_FN_NAME_MAX 64            /* [a-z0-9][a-z0-9_-]* */
#define JINN_FN_MODULE_MAX (16u << 20) /* module bytes */
#define JINN_FN_SETTINGS_MAX (64u << 10) /* canonical settings JSON */
#define JINN_FN_VERSIONS_KEPT 5        /* older versions are forgotten */
#define JINN_FN_MAX 1024               /* functions per cluster */
#define JINN_FN_ROUTE_MAX 256
#define JINN_FN_LIST_MAX 64            /* env, args, kv_read, kv_write entries */
#define JINN_FN_TIMEOUT_DEFAULT_MS 5000
#define JINN_FN_TIMEOUT_MAX_MS 300000
#define JINN_FN_MEMORY_DEFAULT (64u << 20)
#define JINN_FN_MEMORY_MAX (4ull << 30)
#define JINN_FN_POOL_DEFAULT 2
#define JINN_FN_POOL_MAX 64

struct jinn_fn_settings {
    char route[JINN_FN_ROUTE_MAX + 1]; /* "" or "/prefix" (also served at /fn/NAME) */
    uint64_t timeout_ms;
    uint64_t memory_limit; /* bytes, a multiple of 64 KiB */
    uint32_t pool_size;
    char **env;            /* "K=V" */
    unsigned n_env;
    char **args;           /* argv[1...]; argv[0] is the function name */
    unsigned n_args;
    char **kv_read;        /* key prefixes; none listed = every key of ns */
    unsigned n_kv_read;
    char **kv_write;
    unsigned n_kv_write;
    char db[65];           /* host_db_query's database; "" = none */
    char ns[65];           /* host_kv_*'s namespace; default "default" */
};

struct jinn_fn_version {
    uint64_t version;      /* 1, 2, ... per function; never reused */
    uint8_t sha256[32];    /* of the module bytes */
    const uint8_t *module; /* shared between versions with the same sha */
    size_t module_len;
    struct jinn_fn_settings settings;
    const char *settings_json; /* canonical form, as deployed */
    uint64_t deployed_ms;      /* cluster time of the deploy */
    uint64_t index;            /* raft index of the deploy */
};

struct jinn_fn {
    const char *name;
    const struct jinn_fn_version *active; /* NULL: deleted (kept for rollback) */
    const struct jinn_fn_version *versions; /* oldest first */
    unsigned n_versions;
};

struct jinn_fns; /* lives inside struct jinn_fsm (fsm.h) */

/* Lookups for handlers on the loop thread; results are valid until the
 * loop runs again (an apply may free them). */
const struct jinn_fn *jinn_fns_get(const struct jinn_fns *fns, const char *name);
/* The active function whose route is the longest prefix of path (on a
 * segment boundary), or NULL. */
const struct jinn_fn *jinn_fns_by_route(const struct jinn_fns *fns, const char *path);
/* In name order: first (after == NULL) or the next after `after`. */
const struct jinn_fn *jinn_fns_next(const struct jinn_fns *fns, const char *after);
/* Changes with every applied FN_* command and every restore, so the node's
 * runner knows when to look again. */
uint64_t jinn_fns_generation(const struct jinn_fns *fns);

#endif
