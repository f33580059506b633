/* fn.c - the replicated registry of functions (see fn.h).
 *
 * Three ordered indexes: functions by name (deleted ones too, so they can
 * be rolled back), active functions by route (unique: a deploy or rollback
 * onto another active function's route is refused), and module bytes by
 * sha256, shared by every version that deployed the same bytes and freed
 * with the last of them. A function keeps its JINN_FN_VERSIONS_KEPT most
 * recent versions in an inline array, oldest first; its active version is
 * an index into it (-1: deleted). */
#include "fsm/fn.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "fsm/cmd.h"
#include "fsm/fatal.h"
#include "log.h"
#include "sha256.h"
#include "wasm/module.h"

_Static_assert(JINN_FN_NAME_MAX == JINN_CMD_FN_NAME_MAX, "one name limit");
_Static_assert(JINN_FN_SETTINGS_MAX == JINN_CMD_FN_SETTINGS_MAX, "one settings limit");
_Static_assert(JINN_FN_MODULE_MAX == JINN_CMD_FN_MODULE_MAX, "one module limit");
_Static_assert(JINN_FN_PURGE == JINN_CMD_FN_PURGE, "one purge flag");

struct fn_module {
    struct jinn_tree_node node;
    uint8_t sha[32];
    uint8_t *bytes;
    size_t len;
    uint64_t refs; /* versions (of any function) using it */
    /* Snapshots being written from it (jinn_fns_pin). A module no version
     * uses any more leaves the index at once, but its bytes live until the
     * last pin is released. */
    unsigned pins;
};

struct pinned {
    struct fn_module *m;
    const uint8_t *bytes;
    size_t len;
};

struct jinn_fns_pin {
    size_t n;
    struct pinned items[];
};

struct fn_entry {
    struct jinn_tree_node by_name;
    struct jinn_tree_node by_route; /* linked while routed */
    bool routed;
    /* The key of by_route: a copy of the active version's route, so that it
     * never changes under the tree while versions move (entry_push). */
    char route[JINN_FN_ROUTE_MAX + 1];
    char name[JINN_FN_NAME_MAX + 1];
    uint64_t last_version; /* the highest version ever deployed */
    int active;            /* index into versions, -1: deleted */
    struct jinn_fn pub;
    struct jinn_fn_version versions[JINN_FN_VERSIONS_KEPT];
};

#define ENTRY(n, member) jinn_tree_entry(n, struct fn_entry, member)
#define MODULE(n) jinn_tree_entry(n, struct fn_module, node)

static int name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(ENTRY(a, by_name)->name, ENTRY(b, by_name)->name);
}

static int route_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(ENTRY(a, by_route)->route, ENTRY(b, by_route)->route);
}

static int sha_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return memcmp(MODULE(a)->sha, MODULE(b)->sha, 32);
}

void jinn_fns_init(struct jinn_fns *fns)
{
    memset(fns, 0, sizeof *fns);
    jinn_tree_init(&fns->by_name, name_cmp);
    jinn_tree_init(&fns->by_route, route_cmp);
    jinn_tree_init(&fns->modules, sha_cmp);
}

/* ---- names, routes, settings (pure functions of bytes) -------------------- */

static bool is_lower_digit(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

static bool is_alnum(char c)
{
    return is_lower_digit(c) || (c >= 'A' && c <= 'Z');
}

bool jinn_fn_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > JINN_FN_NAME_MAX || !is_lower_digit(name[0])) {
        return false;
    }
    for (size_t i = 1; i < len; i++) {
        if (!is_lower_digit(name[i]) && name[i] != '_' && name[i] != '-') {
            return false;
        }
    }
    return true;
}

/* Whether route is prefix or lies under it (segment-wise). */
static bool under(const char *route, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(route, prefix, n) == 0 && (len == n || route[n] == '/');
}

bool jinn_fn_route_valid(const char *route, size_t len)
{
    static const char *const reserved[] = {"/v1", "/fn", "/healthz", "/readyz", "/metrics"};
    if (len == 0) {
        return true;
    }
    if (route == NULL || len > JINN_FN_ROUTE_MAX || route[0] != '/' || route[len - 1] == '/') {
        return false;
    }
    for (size_t i = 1; i < len; i++) {
        char c = route[i];
        if (c == '/') {
            if (route[i - 1] == '/') {
                return false;
            }
            continue;
        }
        if (!is_alnum(c) && c != '.' && c != '_' && c != '~' && c != '-') {
            return false;
        }
    }
    /* "." and ".." segments would be normalised away by clients. */
    for (size_t i = 0; i < len; i++) {
        if (route[i] == '/') {
            size_t j = i + 1;
            while (j < len && route[j] == '.') {
                j++;
            }
            if ((j == len || route[j] == '/') && j - i - 1 <= 2) {
                return false;
            }
        }
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (under(route, len, reserved[i])) {
            return false;
        }
    }
    return true;
}

static bool ident_valid(const char *s, size_t len, size_t max, bool dot)
{
    if (len == 0 || len > max) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!is_alnum(c) && c != '_' && c != '-' && !(dot && c == '.')) {
            return false;
        }
    }
    return true;
}

/* "K=V": K is [A-Za-z_][A-Za-z0-9_]*. */
static bool env_valid(const char *s)
{
    const char *eq = strchr(s, '=');
    if (eq == NULL || eq == s || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    for (const char *p = s; p < eq; p++) {
        if (!is_alnum(*p) && *p != '_') {
            return false;
        }
    }
    return true;
}

void jinn_fn_settings_defaults(struct jinn_fn_settings *s)
{
    memset(s, 0, sizeof *s);
    s->timeout_ms = JINN_FN_TIMEOUT_DEFAULT_MS;
    s->memory_limit = JINN_FN_MEMORY_DEFAULT;
    s->pool_size = JINN_FN_POOL_DEFAULT;
    s->workers = JINN_FN_WORKERS_DEFAULT;
    snprintf(s->ns, sizeof s->ns, "default");
}

bool jinn_fn_settings_need_deploy2(const struct jinn_fn_settings *s)
{
    return s->workers != JINN_FN_WORKERS_DEFAULT || s->cron[0] != '\0';
}

static void free_list(char **list, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        jinn_free(list[i]);
    }
    jinn_free(list);
}

void jinn_fn_settings_free(struct jinn_fn_settings *s)
{
    free_list(s->env, s->n_env);
    free_list(s->args, s->n_args);
    free_list(s->kv_read, s->n_kv_read);
    free_list(s->kv_write, s->n_kv_write);
    s->env = s->args = s->kv_read = s->kv_write = NULL;
    s->n_env = s->n_args = s->n_kv_read = s->n_kv_write = 0;
}

static void put_json_str(struct jinn_wbuf *w, const char *s)
{
    jinn_wbuf_put_u8(w, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            jinn_wbuf_put_u8(w, '\\');
            jinn_wbuf_put_u8(w, *p);
        } else if (*p < 0x20) {
            jinn_wbuf_printf(w, "\\u%04x", *p);
        } else {
            jinn_wbuf_put_u8(w, *p);
        }
    }
    jinn_wbuf_put_u8(w, '"');
}

static void put_json_list(struct jinn_wbuf *w, const char *key, char *const *list, unsigned n)
{
    jinn_wbuf_printf(w, ",\"%s\":[", key);
    for (unsigned i = 0; i < n; i++) {
        if (i > 0) {
            jinn_wbuf_put_u8(w, ',');
        }
        put_json_str(w, list[i]);
    }
    jinn_wbuf_put_u8(w, ']');
}

void jinn_fn_settings_canonical(const struct jinn_fn_settings *s, struct jinn_wbuf *w)
{
    jinn_wbuf_printf(w, "{\"route\":");
    put_json_str(w, s->route);
    jinn_wbuf_printf(w, ",\"timeout_ms\":%llu,\"memory_limit\":%llu,\"pool_size\":%u",
                     (unsigned long long)s->timeout_ms, (unsigned long long)s->memory_limit,
                     s->pool_size);
    put_json_list(w, "env", s->env, s->n_env);
    put_json_list(w, "args", s->args, s->n_args);
    put_json_list(w, "kv_read", s->kv_read, s->n_kv_read);
    put_json_list(w, "kv_write", s->kv_write, s->n_kv_write);
    jinn_wbuf_printf(w, ",\"db\":");
    put_json_str(w, s->db);
    jinn_wbuf_printf(w, ",\"ns\":");
    put_json_str(w, s->ns);
    if (s->workers != JINN_FN_WORKERS_DEFAULT) {
        jinn_wbuf_printf(w, ",\"workers\":%u", s->workers);
    }
    if (s->cron[0] != '\0') {
        jinn_wbuf_printf(w, ",\"cron\":");
        put_json_str(w, s->cron);
    }
    jinn_wbuf_put_u8(w, '}');
}

enum list_kind { LIST_ENV, LIST_ARG, LIST_PREFIX };

static int parse_list(json_t *root, const char *key, enum list_kind kind, char ***out,
                      unsigned *n_out, char *err, size_t errlen)
{
    json_t *a = json_object_get(root, key), *v;
    size_t i;

    if (!json_is_array(a)) {
        snprintf(err, errlen, "settings: %s must be an array of strings", key);
        return JINN_EINVAL;
    }
    if (json_array_size(a) > JINN_FN_LIST_MAX) {
        snprintf(err, errlen, "settings: at most %u %s entries", JINN_FN_LIST_MAX, key);
        return JINN_EINVAL;
    }
    if (json_array_size(a) == 0) {
        return 0;
    }
    *out = jinn_calloc(json_array_size(a), sizeof **out);
    if (*out == NULL) {
        return JINN_ENOMEM;
    }
    json_array_foreach(a, i, v)
    {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        size_t max = kind == LIST_PREFIX ? JINN_KV_KEY_MAX : JINN_FN_ENTRY_MAX;
        if (s == NULL || len == 0 || len > max || strlen(s) != len) {
            snprintf(err, errlen, "settings: %s entries must be 1-%zu bytes of text", key, max);
            return JINN_EINVAL;
        }
        if (kind == LIST_ENV && !env_valid(s)) {
            snprintf(err, errlen, "settings: env entries are K=V with K of [A-Za-z_][A-Za-z0-9_]*");
            return JINN_EINVAL;
        }
        (*out)[i] = jinn_strndup(s, len);
        if ((*out)[i] == NULL) {
            return JINN_ENOMEM;
        }
        (*n_out)++;
    }
    return 0;
}

static bool get_uint(json_t *root, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                     char *err, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
        snprintf(err, errlen, "settings: %s must be an integer in [%llu, %llu]", key,
                 (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static bool get_str(json_t *root, const char *key, char *buf, size_t cap, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(root, key);
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) >= cap || strlen(s) != json_string_length(v)) {
        snprintf(err, errlen, "settings: %s must be text of at most %zu bytes", key, cap - 1);
        return false;
    }
    memcpy(buf, s, json_string_length(v) + 1);
    return true;
}

static int settings_parse(json_t *root, struct jinn_fn_settings *s, char *err, size_t errlen)
{
    uint64_t pool, workers = JINN_FN_WORKERS_DEFAULT;
    size_t keys = 10;
    int rv;

    s->workers = JINN_FN_WORKERS_DEFAULT;
    keys += json_object_get(root, "workers") != NULL;
    keys += json_object_get(root, "cron") != NULL;
    if (!json_is_object(root) || json_object_size(root) != keys) {
        snprintf(err, errlen, "settings: an object with exactly route, timeout_ms, "
                              "memory_limit, pool_size, env, args, kv_read, kv_write, db, ns "
                              "(and optionally workers, cron)");
        return JINN_EINVAL;
    }
    if ((json_object_get(root, "workers") != NULL &&
         !get_uint(root, "workers", 0, JINN_FN_WORKERS_MAX, &workers, err, errlen)) ||
        (json_object_get(root, "cron") != NULL &&
         !get_str(root, "cron", s->cron, sizeof s->cron, err, errlen))) {
        return JINN_EINVAL;
    }
    s->workers = (uint32_t)workers;
    if (s->cron[0] != '\0') {
        struct jinn_cron cron;
        rv = jinn_cron_parse(s->cron, strlen(s->cron), &cron, err, errlen);
        if (rv != 0) {
            return rv;
        }
    }
    if (!get_str(root, "route", s->route, sizeof s->route, err, errlen) ||
        !get_uint(root, "timeout_ms", 1, JINN_FN_TIMEOUT_MAX_MS, &s->timeout_ms, err, errlen) ||
        !get_uint(root, "memory_limit", JINN_FN_MEMORY_MIN, JINN_FN_MEMORY_MAX, &s->memory_limit,
                  err, errlen) ||
        !get_uint(root, "pool_size", 1, JINN_FN_POOL_MAX, &pool, err, errlen) ||
        !get_str(root, "db", s->db, sizeof s->db, err, errlen) ||
        !get_str(root, "ns", s->ns, sizeof s->ns, err, errlen)) {
        return JINN_EINVAL;
    }
    s->pool_size = (uint32_t)pool;
    if (!jinn_fn_route_valid(s->route, strlen(s->route))) {
        snprintf(err, errlen,
                 "settings: route must be empty or /segment[/segment...] of A-Z a-z 0-9 . _ ~ "
                 "-, at most %u bytes, not under /v1, /fn, /healthz, /readyz or /metrics",
                 JINN_FN_ROUTE_MAX);
        return JINN_EINVAL;
    }
    if (s->memory_limit % JINN_FN_MEMORY_MIN != 0) {
        snprintf(err, errlen, "settings: memory_limit must be a multiple of 64 KiB");
        return JINN_EINVAL;
    }
    if (s->db[0] != '\0' && !ident_valid(s->db, strlen(s->db), JINN_SQL_DB_MAX, false)) {
        snprintf(err, errlen, "settings: db must be empty or 1-64 of A-Z a-z 0-9 _ -");
        return JINN_EINVAL;
    }
    /* "." and ".." are refused: a client's /v1/kv/.. never reaches them
     * (URL paths normalise dot segments), so their keys would be hidden. */
    if (!ident_valid(s->ns, strlen(s->ns), JINN_KV_NS_MAX, true) || strcmp(s->ns, ".") == 0 ||
        strcmp(s->ns, "..") == 0) {
        snprintf(err, errlen, "settings: ns must be 1-64 of A-Z a-z 0-9 _ - . (not . or ..)");
        return JINN_EINVAL;
    }
    rv = parse_list(root, "env", LIST_ENV, &s->env, &s->n_env, err, errlen);
    if (rv == 0) {
        rv = parse_list(root, "args", LIST_ARG, &s->args, &s->n_args, err, errlen);
    }
    if (rv == 0) {
        rv = parse_list(root, "kv_read", LIST_PREFIX, &s->kv_read, &s->n_kv_read, err, errlen);
    }
    if (rv == 0) {
        rv = parse_list(root, "kv_write", LIST_PREFIX, &s->kv_write, &s->n_kv_write, err,
                        errlen);
    }
    return rv;
}

int jinn_fn_settings_parse(const void *json, size_t len, struct jinn_fn_settings *s, char *err,
                           size_t errlen)
{
    json_error_t jerr;
    struct jinn_wbuf w;
    json_t *root;
    unsigned long failures;
    int rv;

    memset(s, 0, sizeof *s);
    if (len == 0 || len > JINN_FN_SETTINGS_MAX) {
        snprintf(err, errlen, "settings: 1-%u bytes of JSON", JINN_FN_SETTINGS_MAX);
        return JINN_EINVAL;
    }
    failures = jinn_alloc_failures();
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        /* An allocation failure is this replica's, not the entry's: apply
         * must stop rather than refuse what the others accept. jansson
         * reports some as syntax errors, so count them. */
        if (jinn_alloc_failures() != failures) {
            return JINN_ENOMEM;
        }
        snprintf(err, errlen, "settings: not JSON (%s)", jerr.text);
        return JINN_EINVAL;
    }
    rv = settings_parse(root, s, err, errlen);
    json_decref(root);
    if (rv != 0) {
        jinn_fn_settings_free(s);
        return rv;
    }
    /* One spelling per settings: equal settings are equal bytes (a
     * redeploy with the same settings is recognised by comparing them). */
    jinn_wbuf_init(&w);
    jinn_fn_settings_canonical(s, &w);
    if (w.failed) {
        rv = JINN_ENOMEM;
    } else if (w.len != len || memcmp(w.data, json, len) != 0) {
        snprintf(err, errlen, "settings: not in canonical form");
        rv = JINN_EINVAL;
    }
    jinn_wbuf_free(&w);
    if (rv != 0) {
        jinn_fn_settings_free(s);
    }
    return rv;
}

/* ---- lookups --------------------------------------------------------------- */

static struct fn_entry *find_entry(const struct jinn_fns *fns, const char *name, size_t len)
{
    struct fn_entry k; /* name_cmp reads the name only */
    struct jinn_tree_node *n;
    if (len > JINN_FN_NAME_MAX) {
        return NULL;
    }
    memcpy(k.name, name, len);
    k.name[len] = '\0';
    n = jinn_tree_find(&fns->by_name, &k.by_name);
    return n != NULL ? ENTRY(n, by_name) : NULL;
}

const struct jinn_fn *jinn_fns_get(const struct jinn_fns *fns, const char *name)
{
    struct fn_entry *e = name != NULL ? find_entry(fns, name, strlen(name)) : NULL;
    return e != NULL ? &e->pub : NULL;
}

static struct fn_entry *find_route(const struct jinn_fns *fns, const char *route, size_t len)
{
    struct fn_entry k; /* route_cmp reads the route only */
    struct jinn_tree_node *n;
    if (len > JINN_FN_ROUTE_MAX) {
        return NULL;
    }
    memcpy(k.route, route, len);
    k.route[len] = '\0';
    n = jinn_tree_find(&fns->by_route, &k.by_route);
    return n != NULL ? ENTRY(n, by_route) : NULL;
}

const struct jinn_fn *jinn_fns_by_route(const struct jinn_fns *fns, const char *path)
{
    size_t len;
    if (path == NULL || path[0] != '/' || fns->by_route.count == 0) {
        return NULL;
    }
    len = strcspn(path, "?#");
    for (size_t l = len < JINN_FN_ROUTE_MAX ? len : JINN_FN_ROUTE_MAX; l > 1; l--) {
        if (l == len || path[l] == '/') {
            struct fn_entry *e = find_route(fns, path, l);
            if (e != NULL) {
                return &e->pub;
            }
        }
    }
    return NULL;
}

const struct jinn_fn *jinn_fns_next(const struct jinn_fns *fns, const char *after)
{
    struct jinn_tree_iter it;
    struct jinn_tree_node *n;
    if (after == NULL) {
        n = jinn_tree_first(&fns->by_name);
        return n != NULL ? &ENTRY(n, by_name)->pub : NULL;
    }
    {
        struct fn_entry k;
        snprintf(k.name, sizeof k.name, "%s", after);
        n = jinn_tree_seek(&fns->by_name, &k.by_name, &it);
        if (n != NULL && strcmp(ENTRY(n, by_name)->name, k.name) == 0) {
            n = jinn_tree_next(&it);
        }
    }
    return n != NULL ? &ENTRY(n, by_name)->pub : NULL;
}

uint64_t jinn_fns_generation(const struct jinn_fns *fns) { return fns->generation; }

size_t jinn_fns_count(const struct jinn_fns *fns) { return fns->by_name.count; }

uint64_t jinn_fns_module_bytes(const struct jinn_fns *fns) { return fns->module_bytes; }

const struct jinn_fn_version *jinn_fn_version_find(const struct jinn_fn *f, uint64_t version)
{
    for (unsigned i = 0; i < f->n_versions; i++) {
        if (f->versions[i].version == version) {
            return &f->versions[i];
        }
    }
    return NULL;
}

/* ---- modules --------------------------------------------------------------- */

static struct fn_module *module_find(const struct jinn_fns *fns, const uint8_t sha[32])
{
    struct fn_module k;
    struct jinn_tree_node *n;
    memcpy(k.sha, sha, 32);
    n = jinn_tree_find(&fns->modules, &k.node);
    return n != NULL ? MODULE(n) : NULL;
}

/* The module with these bytes (NULL: len bytes to be filled in), created
 * (refs 0) when new: NULL on ENOMEM. */
static struct fn_module *module_get(struct jinn_fns *fns, const uint8_t sha[32],
                                    const uint8_t *bytes, size_t len)
{
    struct fn_module *m = module_find(fns, sha);
    if (m != NULL) {
        return m;
    }
    m = jinn_calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->bytes = jinn_malloc(len);
    if (m->bytes == NULL) {
        jinn_free(m);
        return NULL;
    }
    if (bytes != NULL) {
        memcpy(m->bytes, bytes, len);
    }
    memcpy(m->sha, sha, 32);
    m->len = len;
    jinn_fsm_link(&fns->modules, &m->node, "fn modules");
    fns->module_bytes += len;
    return m;
}

static void module_put(struct jinn_fns *fns, const uint8_t sha[32])
{
    struct fn_module *m = module_find(fns, sha);
    if (m == NULL || m->refs == 0) {
        jinn_fsm_fatal("fn: a version refers to a module that is not kept");
    }
    if (--m->refs == 0) {
        jinn_fsm_unlink(&fns->modules, &m->node, "fn modules");
        fns->module_bytes -= m->len;
        if (m->pins == 0) {
            jinn_free(m->bytes);
            jinn_free(m);
        }
    }
}

/* ---- entries ---------------------------------------------------------------- */

static void version_free(struct jinn_fns *fns, struct jinn_fn_version *v)
{
    module_put(fns, v->sha256);
    jinn_fn_settings_free(&v->settings);
    jinn_free((char *)v->settings_json);
    memset(v, 0, sizeof *v);
}

/* Keeps pub and the route index in step with active. */
static void entry_sync(struct jinn_fns *fns, struct fn_entry *e)
{
    const struct jinn_fn_version *a = e->active >= 0 ? &e->versions[e->active] : NULL;
    if (e->routed) {
        jinn_fsm_unlink(&fns->by_route, &e->by_route, "fn routes");
        e->routed = false;
    }
    e->pub.name = e->name;
    e->pub.versions = e->versions;
    e->pub.active = a;
    snprintf(e->route, sizeof e->route, "%s", a != NULL ? a->settings.route : "");
    if (e->route[0] != '\0') {
        jinn_fsm_link(&fns->by_route, &e->by_route, "fn routes");
        e->routed = true;
    }
}

static void entry_free(struct jinn_fns *fns, struct fn_entry *e)
{
    if (e->routed) {
        jinn_fsm_unlink(&fns->by_route, &e->by_route, "fn routes");
    }
    for (unsigned i = 0; i < e->pub.n_versions; i++) {
        version_free(fns, &e->versions[i]);
    }
    jinn_free(e);
}

/* Whether route is free for function e (another active function holding it
 * is a conflict). */
static bool route_free(const struct jinn_fns *fns, const struct fn_entry *e, const char *route)
{
    struct fn_entry *holder;
    if (route[0] == '\0') {
        return true;
    }
    holder = find_route(fns, route, strlen(route));
    return holder == NULL || holder == e;
}

void jinn_fns_clear(struct jinn_fns *fns)
{
    struct jinn_tree_node *n;
    while ((n = jinn_tree_first(&fns->by_name)) != NULL) {
        struct fn_entry *e = ENTRY(n, by_name);
        jinn_tree_remove(&fns->by_name, n);
        entry_free(fns, e);
    }
    uint64_t generation = fns->generation;
    jinn_fns_init(fns);
    fns->generation = generation + 1;
}

/* Appends a version to e (dropping the oldest when full) and makes it
 * active. v's owned fields move into e. */
static void entry_push(struct jinn_fns *fns, struct fn_entry *e, struct jinn_fn_version *v)
{
    if (e->pub.n_versions == JINN_FN_VERSIONS_KEPT) {
        version_free(fns, &e->versions[0]);
        memmove(&e->versions[0], &e->versions[1],
                (JINN_FN_VERSIONS_KEPT - 1) * sizeof e->versions[0]);
        e->pub.n_versions--;
    }
    e->versions[e->pub.n_versions] = *v;
    e->active = (int)e->pub.n_versions;
    e->pub.n_versions++;
    if (v->version > e->last_version) {
        e->last_version = v->version;
    }
    entry_sync(fns, e);
}

static struct fn_entry *entry_new(struct jinn_fns *fns, const char *name, size_t len)
{
    struct fn_entry *e = jinn_calloc(1, sizeof *e);
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->name, name, len);
    e->name[len] = '\0';
    e->active = -1;
    e->pub.name = e->name;
    e->pub.versions = e->versions;
    jinn_fsm_link(&fns->by_name, &e->by_name, "fn names");
    return e;
}

int jinn_fns_deploy_check(const struct jinn_fns *fns, const char *name, size_t name_len,
                          const char *route, const uint8_t *sha, size_t module_len)
{
    const struct fn_entry *e = find_entry(fns, name, name_len);
    if (!route_free(fns, e, route)) {
        return JINN_ECONFLICT;
    }
    if (e == NULL && fns->by_name.count >= JINN_FN_MAX) {
        return JINN_EFULL;
    }
    if (sha != NULL && module_find(fns, sha) == NULL &&
        fns->module_bytes + module_len > JINN_FN_MODULES_TOTAL_MAX) {
        return JINN_EFULL;
    }
    return 0;
}

bool jinn_fns_deploy_unchanged(const struct jinn_fns *fns, const char *name, size_t name_len,
                               const uint8_t sha[32], const void *settings,
                               size_t settings_len)
{
    const struct fn_entry *e = find_entry(fns, name, name_len);
    const struct jinn_fn_version *a;
    if (e == NULL || e->active < 0) {
        return false;
    }
    a = &e->versions[e->active];
    return memcmp(a->sha256, sha, 32) == 0 && strlen(a->settings_json) == settings_len &&
           memcmp(a->settings_json, settings, settings_len) == 0;
}

/* ---- apply ------------------------------------------------------------------ */

static int apply_deploy(struct jinn_fns *fns, uint64_t index, uint64_t time_ms,
                        const struct jinn_cmd *c, uint64_t *value)
{
    const char *name = (const char *)c->fn.name.p;
    size_t name_len = c->fn.name.len;
    struct jinn_wasm_info *info = NULL;
    struct jinn_fn_version v;
    struct fn_entry *e;
    struct fn_module *m;
    char err[256];
    int rv;

    memset(&v, 0, sizeof v);
    if (!jinn_fn_name_valid(name, name_len) || c->fn.module.len == 0 ||
        c->fn.module.len > JINN_FN_MODULE_MAX) {
        return JINN_EINVAL;
    }
    rv = jinn_fn_settings_parse(c->fn.settings.p, c->fn.settings.len, &v.settings, err,
                                sizeof err);
    if (rv != 0) {
        if (rv == JINN_EINVAL) {
            jinn_warn("fn deploy %.*s refused: %s", (int)name_len, name, err);
        }
        return rv;
    }
    /* A build from before workers/cron refuses them in type 23; so does
     * this one, so that both agree on every entry of a rolling upgrade. */
    if (c->type == JINN_CMD_FN_DEPLOY && jinn_fn_settings_need_deploy2(&v.settings)) {
        jinn_warn("fn deploy %.*s refused: workers and cron need an fn_deploy2 entry",
                  (int)name_len, name);
        rv = JINN_EINVAL;
        goto fail;
    }
    info = jinn_malloc(sizeof *info);
    if (info == NULL) {
        rv = JINN_ENOMEM;
        goto fail;
    }
    /* The handler checked the module; an entry made by hand is checked the
     * same way here, identically on every replica. */
    rv = jinn_wasm_inspect(c->fn.module.p, c->fn.module.len, info, err, sizeof err);
    if (rv == 0 && (uint64_t)info->memory_min_pages * JINN_FN_MEMORY_MIN >
                       v.settings.memory_limit) {
        snprintf(err, sizeof err, "the module's memory starts at %u pages, over memory_limit",
                 info->memory_min_pages);
        rv = JINN_EINVAL;
    }
    if (rv != 0) {
        if (rv == JINN_EINVAL) {
            jinn_warn("fn deploy %.*s refused: %s", (int)name_len, name, err);
        }
        goto fail;
    }
    rv = jinn_sha256(c->fn.module.p, c->fn.module.len, v.sha256);
    if (rv != 0) {
        goto fail;
    }
    /* Under require_signature only a module signed by a trusted key is
     * installed (type 23 carries no signature: refused then). */
    if (fns->policy.require_signature) {
        const char *why = NULL;
        bool d2 = c->type == JINN_CMD_FN_DEPLOY2;
        rv = jinn_fns_signature_check(fns, name, name_len, v.sha256,
                                      d2 ? c->fn.signature.p : NULL,
                                      d2 ? c->fn.signature.len : 0,
                                      d2 ? c->fn.key_id.p : NULL, d2 ? c->fn.key_id.len : 0,
                                      &why);
        if (rv != 0) {
            if (rv == JINN_EUNSIGNED) {
                jinn_warn("fn deploy %.*s refused: %s", (int)name_len, name, why);
            }
            goto fail;
        }
    }
    e = find_entry(fns, name, name_len);
    if (jinn_fns_deploy_unchanged(fns, name, name_len, v.sha256, c->fn.settings.p,
                                  c->fn.settings.len)) {
        *value = e->versions[e->active].version | JINN_FN_UNCHANGED;
        rv = 0;
        goto fail; /* nothing to keep */
    }
    /* The oldest version a deploy drops may free bytes, but the module
     * total is checked before it: simple, and the same on every replica. */
    rv = jinn_fns_deploy_check(fns, name, name_len, v.settings.route, v.sha256,
                               c->fn.module.len);
    if (rv != 0) {
        goto fail;
    }
    m = module_find(fns, v.sha256);
    if (m == NULL) {
        m = module_get(fns, v.sha256, c->fn.module.p, c->fn.module.len);
        if (m == NULL) {
            rv = JINN_ENOMEM;
            goto fail;
        }
    }
    v.settings_json = jinn_strndup((const char *)c->fn.settings.p, c->fn.settings.len);
    if (v.settings_json == NULL) {
        rv = JINN_ENOMEM; /* the module (refs 0) is freed by the fatal exit */
        goto fail;
    }
    if (e == NULL) {
        e = entry_new(fns, name, name_len);
        if (e == NULL) {
            rv = JINN_ENOMEM;
            goto fail;
        }
    }
    m->refs++;
    v.module = m->bytes;
    v.module_len = m->len;
    v.version = e->last_version + 1;
    v.deployed_ms = time_ms;
    v.index = index;
    /* Kept whatever the policy: a rollback to this version is checked
     * against the policy of its own time. */
    if (c->type == JINN_CMD_FN_DEPLOY2 && c->fn.signature.len == sizeof v.sig &&
        c->fn.key_id.len > 0 && c->fn.key_id.len < sizeof v.key_id &&
        jinn_fnsig_key_name_valid((const char *)c->fn.key_id.p, c->fn.key_id.len)) {
        memcpy(v.sig, c->fn.signature.p, sizeof v.sig);
        v.sig_len = sizeof v.sig;
        memcpy(v.key_id, c->fn.key_id.p, c->fn.key_id.len);
        v.key_id[c->fn.key_id.len] = '\0';
    }
    entry_push(fns, e, &v);
    *value = e->last_version;
    jinn_free(info);
    return 0;

fail:
    jinn_free(info);
    jinn_fn_settings_free(&v.settings);
    jinn_free((char *)v.settings_json);
    return rv;
}

static int apply_delete(struct jinn_fns *fns, const struct jinn_cmd *c, uint64_t *value)
{
    struct fn_entry *e = find_entry(fns, (const char *)c->fn.name.p, c->fn.name.len);
    if (e == NULL) {
        return JINN_ENOTFOUND;
    }
    if (c->fn.flags & JINN_FN_PURGE) {
        jinn_fsm_unlink(&fns->by_name, &e->by_name, "fn names");
        *value = 0;
        entry_free(fns, e);
        return 0;
    }
    if (e->active < 0) {
        return JINN_ENOTFOUND;
    }
    *value = e->versions[e->active].version;
    e->active = -1;
    entry_sync(fns, e);
    return 0;
}

static int apply_rollback(struct jinn_fns *fns, const struct jinn_cmd *c, uint64_t *value)
{
    struct fn_entry *e = find_entry(fns, (const char *)c->fn.name.p, c->fn.name.len);
    int to = -1;
    if (e == NULL || e->pub.n_versions == 0) {
        return JINN_ENOTFOUND;
    }
    if (c->fn.version != 0) {
        for (unsigned i = 0; i < e->pub.n_versions; i++) {
            if (e->versions[i].version == c->fn.version) {
                to = (int)i;
            }
        }
    } else if (e->active < 0) {
        to = (int)e->pub.n_versions - 1; /* deleted: back to the newest */
    } else {
        to = e->active - 1; /* the one before the active version */
    }
    if (to < 0) {
        return JINN_ENOTFOUND;
    }
    /* require_signature covers rollbacks: the target's recorded
     * signature must verify with a key trusted now (the same verdict on
     * every replica: policy and signature are both replicated state). */
    if (fns->policy.require_signature) {
        const struct jinn_fn_version *v = &e->versions[to];
        const char *why = NULL;
        int rv = jinn_fns_signature_check(fns, e->name, strlen(e->name), v->sha256, v->sig,
                                          v->sig_len, (const uint8_t *)v->key_id,
                                          strlen(v->key_id), &why);
        if (rv != 0) {
            if (rv == JINN_EUNSIGNED) {
                jinn_warn("fn rollback %s to version %llu refused: %s", e->name,
                          (unsigned long long)v->version, why);
            }
            return rv;
        }
    }
    if (!route_free(fns, e, e->versions[to].settings.route)) {
        return JINN_ECONFLICT;
    }
    e->active = to;
    entry_sync(fns, e);
    *value = e->versions[to].version;
    return 0;
}

/* ---- the signing policy (fnsig.h) ----------------------------------------- */

int jinn_fns_signature_check(const struct jinn_fns *fns, const char *name, size_t name_len,
                             const uint8_t sha[32], const uint8_t *sig, size_t sig_len,
                             const uint8_t *key_id, size_t key_id_len, const char **why)
{
    const struct jinn_fn_trusted_key *key = NULL;
    uint8_t msg[JINN_FNSIG_MESSAGE_MAX];
    size_t msg_len;
    int rv;

    if (why != NULL) {
        *why = NULL;
    }
    if (!fns->policy.require_signature) {
        return 0;
    }
    if (sig_len == 0) {
        if (why != NULL) {
            *why = "the module is not signed (require_signature is on)";
        }
        return JINN_EUNSIGNED;
    }
    for (unsigned i = 0; i < fns->policy.n_keys; i++) {
        const struct jinn_fn_trusted_key *k = &fns->policy.keys[i];
        if (strlen(k->name) == key_id_len && memcmp(k->name, key_id, key_id_len) == 0) {
            key = k;
        }
    }
    if (key == NULL || sig_len != JINN_FNSIG_SIZE) {
        if (why != NULL) {
            *why = key == NULL ? "the signing key is not trusted by the cluster"
                               : "the signature is not 64 bytes";
        }
        return JINN_EUNSIGNED;
    }
    msg_len = jinn_fnsig_message(name, name_len, sha, msg);
    rv = jinn_fnsig_verify(key->pub, sig, msg, msg_len);
    if (rv == JINN_EUNSIGNED && why != NULL) {
        *why = "the signature does not verify with the named trusted key (another module, "
               "another function name, or another key)";
    }
    return rv;
}

static int apply_policy(struct jinn_fns *fns, const struct jinn_cmd *c)
{
    struct jinn_fn_policy p;
    /* cmd.c checked the body: at most 16 valid names, ascending. */
    memset(&p, 0, sizeof p);
    p.require_signature = c->fn_policy.require_signature != 0;
    p.n_keys = c->fn_policy.n_keys;
    for (unsigned i = 0; i < p.n_keys; i++) {
        memcpy(p.keys[i].name, c->fn_policy.key_name[i].p, c->fn_policy.key_name[i].len);
        memcpy(p.keys[i].pub, c->fn_policy.key_pub[i], JINN_FNSIG_PUB_SIZE);
    }
    fns->policy = p;
    return 0;
}

int jinn_fns_apply(struct jinn_fns *fns, uint64_t index, uint64_t time_ms,
                   const struct jinn_cmd *c, uint64_t *value)
{
    int rv;
    *value = 0;
    switch (c->type) {
    case JINN_CMD_FN_DEPLOY:
    case JINN_CMD_FN_DEPLOY2:
        fns->deploy_bytes += c->fn.module.len;
        rv = apply_deploy(fns, index, time_ms, c, value);
        break;
    case JINN_CMD_FN_DELETE:
        rv = apply_delete(fns, c, value);
        break;
    case JINN_CMD_FN_ROLLBACK:
        rv = apply_rollback(fns, c, value);
        break;
    case JINN_CMD_FN_POLICY:
        rv = apply_policy(fns, c);
        break;
    default:
        rv = JINN_EINVAL;
        break;
    }
    if (rv == 0 && !(*value & JINN_FN_UNCHANGED)) {
        fns->generation++; /* the runner looks again */
    }
    return rv;
}

/* ---- snapshot ----------------------------------------------------------------
 *
 * The section (also what the digest hashes):
 *   u32 modules, each in sha order: sha256[32], u64 length
 *   u32 functions, each in name order: str name, u64 last_version,
 *       u64 active version (0: deleted), u32 versions, each oldest first:
 *       u64 version, sha256[32], str settings_json, u64 deployed_ms, u64 index
 * The module bytes follow elsewhere (fsm.c puts them after the SQL images,
 * so they are copied off the loop): each module's bytes, in sha order. */

/* Format 3 ends the section with the signing policy:
 *   u8 require_signature, u32 keys, each in name order: str name, pub[32] */
static void encode_policy(const struct jinn_fn_policy *p, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u8(w, p->require_signature ? 1 : 0);
    jinn_wbuf_put_u32(w, p->n_keys);
    for (unsigned i = 0; i < p->n_keys; i++) {
        jinn_wbuf_put_str(w, p->keys[i].name);
        jinn_wbuf_put_raw(w, p->keys[i].pub, JINN_FNSIG_PUB_SIZE);
    }
}

static int decode_policy(struct jinn_fn_policy *p, struct jinn_rbuf *r)
{
    uint8_t require = jinn_rbuf_get_u8(r);
    uint32_t n = jinn_rbuf_get_u32(r);
    memset(p, 0, sizeof *p);
    if (r->failed || require > 1 || n > JINN_FNSIG_TRUSTED_MAX) {
        return JINN_ECORRUPT;
    }
    p->require_signature = require == 1;
    p->n_keys = n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *name;
        size_t len = jinn_rbuf_get_bytes(r, &name, JINN_FNSIG_KEY_NAME_MAX);
        const uint8_t *pub = jinn_rbuf_get_raw(r, JINN_FNSIG_PUB_SIZE);
        if (r->failed || !jinn_fnsig_key_name_valid((const char *)name, len)) {
            memset(p, 0, sizeof *p);
            return JINN_ECORRUPT;
        }
        memcpy(p->keys[i].name, name, len);
        memcpy(p->keys[i].pub, pub, JINN_FNSIG_PUB_SIZE);
        if (i > 0 && strcmp(p->keys[i - 1].name, p->keys[i].name) >= 0) {
            memset(p, 0, sizeof *p);
            return JINN_ECORRUPT; /* one order, no duplicates */
        }
    }
    return 0;
}

/* digest: a version's signature fields only when it is signed, so a
 * registry without signatures digests as on a build from before them (a
 * replica check during a rolling upgrade agrees). */
static void encode_registry(const struct jinn_fns *fns, struct jinn_wbuf *w, bool digest)
{
    struct jinn_tree_iter it;
    jinn_wbuf_put_u32(w, (uint32_t)fns->modules.count);
    for (struct jinn_tree_node *n = jinn_tree_seek(&fns->modules, NULL, &it); n != NULL;
         n = jinn_tree_next(&it)) {
        const struct fn_module *m = MODULE(n);
        jinn_wbuf_put_raw(w, m->sha, 32);
        jinn_wbuf_put_u64(w, m->len);
    }
    jinn_wbuf_put_u32(w, (uint32_t)fns->by_name.count);
    for (struct jinn_tree_node *n = jinn_tree_seek(&fns->by_name, NULL, &it); n != NULL;
         n = jinn_tree_next(&it)) {
        const struct fn_entry *e = ENTRY(n, by_name);
        jinn_wbuf_put_str(w, e->name);
        jinn_wbuf_put_u64(w, e->last_version);
        jinn_wbuf_put_u64(w, e->active >= 0 ? e->versions[e->active].version : 0);
        jinn_wbuf_put_u32(w, e->pub.n_versions);
        for (unsigned i = 0; i < e->pub.n_versions; i++) {
            const struct jinn_fn_version *v = &e->versions[i];
            jinn_wbuf_put_u64(w, v->version);
            jinn_wbuf_put_raw(w, v->sha256, 32);
            jinn_wbuf_put_str(w, v->settings_json);
            jinn_wbuf_put_u64(w, v->deployed_ms);
            jinn_wbuf_put_u64(w, v->index);
            /* Format 3: bytes sig (0 or 64), str key_id (empty iff unsigned). */
            if (!digest || v->sig_len > 0) {
                jinn_wbuf_put_bytes(w, v->sig, v->sig_len);
                jinn_wbuf_put_str(w, v->key_id);
            }
        }
    }
}

void jinn_fns_encode(const struct jinn_fns *fns, struct jinn_wbuf *w)
{
    encode_registry(fns, w, false);
    encode_policy(&fns->policy, w);
}

void jinn_fns_encode_digest(const struct jinn_fns *fns, struct jinn_wbuf *w)
{
    encode_registry(fns, w, true);
    /* The default policy (nothing required, no keys) is left out, so a
     * cluster that never set one digests exactly as a build from before
     * signing policies: a replica check during a rolling upgrade agrees.
     * A set policy is state every replica holds, so it is digested. */
    if (fns->policy.require_signature || fns->policy.n_keys > 0) {
        encode_policy(&fns->policy, w);
    }
}

void jinn_fns_encode_modules(const struct jinn_fns *fns, struct jinn_wbuf *w)
{
    struct jinn_tree_iter it;
    for (struct jinn_tree_node *n = jinn_tree_seek(&fns->modules, NULL, &it); n != NULL;
         n = jinn_tree_next(&it)) {
        jinn_wbuf_put_raw(w, MODULE(n)->bytes, MODULE(n)->len);
    }
}

int jinn_fns_pin(struct jinn_fns *fns, struct jinn_fns_pin **out)
{
    struct jinn_tree_iter it;
    struct jinn_fns_pin *pin =
        jinn_malloc(sizeof *pin + fns->modules.count * sizeof pin->items[0]);
    size_t i = 0;
    if (pin == NULL) {
        return JINN_ENOMEM;
    }
    for (struct jinn_tree_node *n = jinn_tree_seek(&fns->modules, NULL, &it); n != NULL;
         n = jinn_tree_next(&it)) {
        struct fn_module *m = MODULE(n);
        m->pins++;
        pin->items[i].m = m;
        pin->items[i].bytes = m->bytes;
        pin->items[i].len = m->len;
        i++;
    }
    pin->n = i;
    *out = pin;
    return 0;
}

void jinn_fns_pin_encode(const struct jinn_fns_pin *pin, struct jinn_wbuf *w)
{
    for (size_t i = 0; i < pin->n; i++) {
        jinn_wbuf_put_raw(w, pin->items[i].bytes, pin->items[i].len);
    }
}

void jinn_fns_pin_free(struct jinn_fns_pin *pin)
{
    if (pin == NULL) {
        return;
    }
    for (size_t i = 0; i < pin->n; i++) {
        struct fn_module *m = pin->items[i].m;
        if (--m->pins == 0 && m->refs == 0) {
            jinn_free(m->bytes); /* left the index when its last version went */
            jinn_free(m);
        }
    }
    jinn_free(pin);
}

int jinn_fns_decode_modules(struct jinn_fns *fns, const uint8_t *p, size_t len)
{
    struct jinn_tree_iter it;
    if (len != fns->module_bytes) {
        return JINN_ECORRUPT;
    }
    for (struct jinn_tree_node *n = jinn_tree_seek(&fns->modules, NULL, &it); n != NULL;
         n = jinn_tree_next(&it)) {
        struct fn_module *m = MODULE(n);
        memcpy(m->bytes, p, m->len);
        p += m->len;
    }
    return 0;
}

static int decode_entry(struct jinn_fns *fns, struct jinn_rbuf *r, char *prev_name,
                        uint32_t snapshot_version)
{
    const uint8_t *name;
    size_t name_len = jinn_rbuf_get_bytes(r, &name, JINN_FN_NAME_MAX);
    uint64_t last_version = jinn_rbuf_get_u64(r);
    uint64_t active = jinn_rbuf_get_u64(r);
    uint32_t n = jinn_rbuf_get_u32(r);
    struct fn_entry *e;
    uint64_t prev = 0;
    char err[256];

    if (r->failed || !jinn_fn_name_valid((const char *)name, name_len) ||
        n > JINN_FN_VERSIONS_KEPT) {
        return JINN_ECORRUPT;
    }
    /* Strictly ascending names: no duplicate can reach the index. */
    {
        size_t pl = strlen(prev_name);
        int c = memcmp(prev_name, name, pl < name_len ? pl : name_len);
        if (prev_name[0] != '\0' && (c > 0 || (c == 0 && pl >= name_len))) {
            return JINN_ECORRUPT;
        }
    }
    e = entry_new(fns, (const char *)name, name_len);
    if (e == NULL) {
        return JINN_ENOMEM;
    }
    memcpy(prev_name, e->name, name_len + 1);
    e->last_version = last_version;
    for (uint32_t i = 0; i < n; i++) {
        struct jinn_fn_version *v = &e->versions[i];
        const uint8_t *sha, *settings;
        size_t settings_len;
        struct fn_module *m;
        v->version = jinn_rbuf_get_u64(r);
        sha = jinn_rbuf_get_raw(r, 32);
        settings_len = jinn_rbuf_get_bytes(r, &settings, JINN_FN_SETTINGS_MAX);
        v->deployed_ms = jinn_rbuf_get_u64(r);
        v->index = jinn_rbuf_get_u64(r);
        if (snapshot_version >= 3) {
            const uint8_t *sig, *key;
            size_t sig_len = jinn_rbuf_get_bytes(r, &sig, sizeof v->sig);
            size_t key_len = jinn_rbuf_get_bytes(r, &key, sizeof v->key_id - 1);
            if (r->failed || (sig_len != 0 && sig_len != sizeof v->sig) ||
                (sig_len == 0) != (key_len == 0) ||
                (key_len > 0 && !jinn_fnsig_key_name_valid((const char *)key, key_len))) {
                return JINN_ECORRUPT;
            }
            memcpy(v->sig, sig, sig_len);
            v->sig_len = sig_len;
            memcpy(v->key_id, key, key_len);
            v->key_id[key_len] = '\0';
        }
        if (r->failed || v->version <= prev || v->version > last_version) {
            return JINN_ECORRUPT;
        }
        prev = v->version;
        m = module_find(fns, sha);
        if (m == NULL) {
            return JINN_ECORRUPT;
        }
        int rv = jinn_fn_settings_parse(settings, settings_len, &v->settings, err, sizeof err);
        if (rv != 0) {
            return rv == JINN_EINVAL ? JINN_ECORRUPT : rv;
        }
        v->settings_json = jinn_strndup((const char *)settings, settings_len);
        if (v->settings_json == NULL) {
            jinn_fn_settings_free(&v->settings);
            return JINN_ENOMEM;
        }
        memcpy(v->sha256, sha, 32);
        m->refs++;
        v->module = m->bytes;
        v->module_len = m->len;
        e->pub.n_versions++;
        if (v->version == active) {
            e->active = (int)i;
        }
    }
    if (active != 0 && e->active < 0) {
        return JINN_ECORRUPT;
    }
    if (e->active >= 0 &&
        !route_free(fns, e, e->versions[e->active].settings.route)) {
        return JINN_ECORRUPT; /* two active functions on one route */
    }
    entry_sync(fns, e);
    return 0;
}

int jinn_fns_decode(struct jinn_fns *fns, struct jinn_rbuf *r, uint32_t snapshot_version)
{
    uint32_t n_modules = jinn_rbuf_get_u32(r), n;
    char prev_name[JINN_FN_NAME_MAX + 1] = "";
    uint8_t prev_sha[32];
    int rv = 0;

    if (r->failed || n_modules > (uint32_t)JINN_FN_MAX * JINN_FN_VERSIONS_KEPT) {
        return JINN_ECORRUPT;
    }
    for (uint32_t i = 0; i < n_modules && rv == 0; i++) {
        const uint8_t *sha = jinn_rbuf_get_raw(r, 32);
        uint64_t len = jinn_rbuf_get_u64(r);
        /* The bytes follow later in the same buffer: what is left bounds
         * them before anything is allocated. */
        if (r->failed || len == 0 || len > JINN_FN_MODULE_MAX ||
            (i > 0 && memcmp(prev_sha, sha, 32) >= 0) ||
            fns->module_bytes + len > JINN_FN_MODULES_TOTAL_MAX ||
            fns->module_bytes + len > r->left) {
            rv = JINN_ECORRUPT;
            break;
        }
        memcpy(prev_sha, sha, 32);
        /* The bytes come later (jinn_fns_decode_modules). */
        if (module_get(fns, sha, NULL, (size_t)len) == NULL) {
            rv = JINN_ENOMEM;
        }
    }
    n = jinn_rbuf_get_u32(r);
    if (rv == 0 && (r->failed || n > JINN_FN_MAX)) {
        rv = JINN_ECORRUPT;
    }
    for (uint32_t i = 0; i < n && rv == 0; i++) {
        rv = decode_entry(fns, r, prev_name, snapshot_version);
    }
    if (rv == 0 && snapshot_version >= 3) {
        rv = decode_policy(&fns->policy, r);
    }
    /* Every module is some version's. */
    if (rv == 0) {
        struct jinn_tree_iter it;
        for (struct jinn_tree_node *x = jinn_tree_seek(&fns->modules, NULL, &it); x != NULL;
             x = jinn_tree_next(&it)) {
            if (MODULE(x)->refs == 0) {
                rv = JINN_ECORRUPT;
            }
        }
    }
    if (rv != 0) {
        /* Modules nobody refers to are not freed by clearing entries. */
        struct jinn_tree_node *x;
        while ((x = jinn_tree_first(&fns->by_name)) != NULL) {
            struct fn_entry *e = ENTRY(x, by_name);
            jinn_tree_remove(&fns->by_name, x);
            entry_free(fns, e);
        }
        while ((x = jinn_tree_first(&fns->modules)) != NULL) {
            jinn_tree_remove(&fns->modules, x);
            jinn_free(MODULE(x)->bytes);
            jinn_free(MODULE(x));
        }
        jinn_fns_init(fns);
        return rv;
    }
    fns->generation++;
    return 0;
}
