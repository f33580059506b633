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

#include "codec.h"
#include "cron.h"
#include "fsm/fnsig.h"
#include "tree.h"

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
#define JINN_FN_WORKERS_DEFAULT 1
#define JINN_FN_WORKERS_MAX 64
/* Module bytes the whole cluster keeps (every kept version, each distinct
 * module counted once); beyond, a deploy is refused with store_full (507).
 * Every node holds them in memory and in every snapshot (written off the
 * loop; a restore copies them on it, ~45 ms for 64 MiB here). */
#define JINN_FN_MODULES_TOTAL_MAX (64u << 20)
#define JINN_FN_ENTRY_MAX 4096 /* one env "K=V", arg or key prefix, bytes */
#define JINN_FN_MEMORY_MIN (64u << 10) /* one wasm page */
/* jinn_result.value of an FN_DEPLOY identical to the active version (same
 * module, same settings): no new version; the low bits are the active one. */
#define JINN_FN_UNCHANGED (UINT64_C(1) << 63)
/* FN_DELETE flags */
#define JINN_FN_PURGE 0x1 /* forget the function and its versions entirely */

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
    /* Jobs (fsm/jobs.h); in the canonical JSON only when not the default,
     * so settings without them keep their bytes (and FN_DEPLOY). */
    uint32_t workers;      /* job worker slots per node, 0..64; default 1 */
    char cron[JINN_CRON_EXPR_MAX + 1]; /* "" or a cron.h schedule (UTC) */
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

/* The cluster's signing policy (FN_POLICY; fsm/fnsig.h). */
struct jinn_fn_trusted_key {
    char name[JINN_FNSIG_KEY_NAME_MAX + 1];
    uint8_t pub[JINN_FNSIG_PUB_SIZE];
};
struct jinn_fn_policy {
    bool require_signature;
    unsigned n_keys; /* in ascending name order */
    struct jinn_fn_trusted_key keys[JINN_FNSIG_TRUSTED_MAX];
};

/* Lives inside struct jinn_fsm (fsm.h); the fields are fn.c's. */
struct jinn_fns {
    struct jinn_tree by_name;  /* every function, deleted ones included */
    struct jinn_tree by_route; /* active functions with a route */
    struct jinn_tree modules;  /* module bytes by sha256, refcounted */
    uint64_t module_bytes;     /* sum over modules */
    uint64_t generation;       /* not state: local change counter */
    /* Not state: module bytes of every FN_DEPLOY applied here since start
     * (refused ones too: each was a log entry that big). Restores and
     * clears reset it; the node compares it to decide on a snapshot. */
    uint64_t deploy_bytes;
    struct jinn_fn_policy policy; /* state: in the snapshot from format 3 */
};

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

/* The checks a deploy of module sha (module_len bytes) with this route
 * must pass against the current state, exactly as apply makes them: 0,
 * JINN_ECONFLICT (the route is another active function's) or JINN_EFULL
 * (JINN_FN_MAX functions, or a new module over JINN_FN_MODULES_TOTAL_MAX).
 * sha may be NULL (not known yet): the module total is then not checked.
 * The handler calls it so that a refusal at apply (a 16 MiB log entry
 * spent for nothing) happens only when a concurrent change raced it. */
int jinn_fns_deploy_check(const struct jinn_fns *fns, const char *name, size_t name_len,
                          const char *route, const uint8_t *sha, size_t module_len);
/* Whether a deploy of module sha as name with this signature (0 or 64
 * bytes) by key key_id passes the signing policy, as apply decides: 0,
 * JINN_EUNSIGNED (required and missing, unknown key, or not verifying; why
 * in why when non-NULL) or JINN_ENOMEM. Without require_signature every
 * deploy passes and a signature is not looked at. */
int jinn_fns_signature_check(const struct jinn_fns *fns, const char *name, size_t name_len,
                             const uint8_t sha[32], const uint8_t *sig, size_t sig_len,
                             const uint8_t *key_id, size_t key_id_len, const char **why);

/* Whether fns's active version of name is exactly this module and these
 * canonical settings (a deploy of them would change nothing). */
bool jinn_fns_deploy_unchanged(const struct jinn_fns *fns, const char *name, size_t name_len,
                               const uint8_t sha[32], const void *settings,
                               size_t settings_len);

/* ---- the state machine's side (fsm.c) ------------------------------------ */

struct jinn_cmd;

void jinn_fns_init(struct jinn_fns *fns);
void jinn_fns_clear(struct jinn_fns *fns);

/* Applies FN_DEPLOY, FN_DELETE or FN_ROLLBACK at index with cluster time
 * time_ms. Deterministic: the same entry gives the same result everywhere.
 * Returns 0 (*value = the version now active, | JINN_FN_UNCHANGED for a
 * deploy identical to the active version), JINN_EINVAL (name, settings or
 * module refused: nothing changes), JINN_ENOTFOUND, JINN_ECONFLICT (the
 * route is another active function's), JINN_EFULL (JINN_FN_MAX functions
 * or JINN_FN_MODULES_TOTAL_MAX bytes), JINN_ENOMEM (the FSM stops). */
int jinn_fns_apply(struct jinn_fns *fns, uint64_t index, uint64_t time_ms,
                   const struct jinn_cmd *c, uint64_t *value);

/* The snapshot section: everything but the module bytes (each module's
 * sha256 and length stand for them). The digest hashes exactly this. */
void jinn_fns_encode(const struct jinn_fns *fns, struct jinn_wbuf *w);
/* The functions section of the replica digest: jinn_fns_encode with the
 * signing policy only when it is not the default (digest.c). */
void jinn_fns_encode_digest(const struct jinn_fns *fns, struct jinn_wbuf *w);
/* The module bytes, in the section's order (fsm.c writes them after the SQL
 * images). */
void jinn_fns_encode_modules(const struct jinn_fns *fns, struct jinn_wbuf *w);
/* The same for a snapshot written off the loop: pin (on the loop) keeps
 * every module's bytes alive, whatever apply does meanwhile; pin_encode runs
 * on any thread; pin_free on the loop again. */
struct jinn_fns_pin;
int jinn_fns_pin(struct jinn_fns *fns, struct jinn_fns_pin **out);
void jinn_fns_pin_encode(const struct jinn_fns_pin *pin, struct jinn_wbuf *w);
void jinn_fns_pin_free(struct jinn_fns_pin *pin);
/* Decodes the section into an empty fns (left empty on failure); the
 * modules' bytes are then read by jinn_fns_decode_modules from p[0..len),
 * which must be exactly jinn_fns_module_bytes(fns) long. */
int jinn_fns_decode(struct jinn_fns *fns, struct jinn_rbuf *r, uint32_t snapshot_version);
int jinn_fns_decode_modules(struct jinn_fns *fns, const uint8_t *p, size_t len);

/* ---- shared by the handler, the CLI and apply ----------------------------- */

/* [a-z0-9][a-z0-9_-]{0,63} */
bool jinn_fn_name_valid(const char *name, size_t len);
/* "" or "/" followed by segments of [A-Za-z0-9._~-] separated by single
 * "/", no trailing "/", at most JINN_FN_ROUTE_MAX bytes, and not under a
 * path jinn serves itself (/v1, /fn, /healthz, /readyz, /metrics). */
bool jinn_fn_route_valid(const char *route, size_t len);

/* Parses settings JSON (the canonical form only: every key, in order, as
 * jinn_fn_settings_canonical writes it) into s (free with
 * jinn_fn_settings_free). 0, JINN_EINVAL with one line in err, or
 * JINN_ENOMEM. A pure function of the bytes. */
int jinn_fn_settings_parse(const void *json, size_t len, struct jinn_fn_settings *s, char *err,
                           size_t errlen);
/* Whether s uses a key FN_DEPLOY (23) must refuse: workers or cron not at
 * their defaults (only FN_DEPLOY2 carries them). */
bool jinn_fn_settings_need_deploy2(const struct jinn_fn_settings *s);
/* Writes the canonical JSON of s (no NUL). */
void jinn_fn_settings_canonical(const struct jinn_fn_settings *s, struct jinn_wbuf *w);
void jinn_fn_settings_defaults(struct jinn_fn_settings *s);
void jinn_fn_settings_free(struct jinn_fn_settings *s);

/* The version of f numbered version, or NULL. */
const struct jinn_fn_version *jinn_fn_version_find(const struct jinn_fn *f, uint64_t version);
/* Number of functions (deleted included), and module bytes kept. */
size_t jinn_fns_count(const struct jinn_fns *fns);
uint64_t jinn_fns_module_bytes(const struct jinn_fns *fns);

#endif
