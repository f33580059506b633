/* runner.c - see runner.h.
 *
 * The runner mirrors the registry: after an apply changed it (or on a slow
 * tick, for restores) it walks the active versions; each gets a struct
 * version holding a copy of its settings, the compiled module of its hash
 * (struct compiled, shared by versions with the same sha) and, once that is
 * ready, a pool of sandboxes. A version that is no longer active drains:
 * invocations already queued or running on it finish there, new ones go to
 * the new version. Per function name (struct fnstat) it keeps counters, a
 * duration histogram, the recent durations (quantiles) and a ring of the
 * last log lines. */
#include "wasm/runner.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "api/api.h"
#include "error.h"
#include "fetch.h"
#include "fsm/fn.h"
#include "log.h"
#include "tree.h"
#include "wasm/compile.h"
#include "wasm/host.h"
#include "wasm/jobs.h"
#include "wasm/pool.h"
#include "wasm/proto.h"

#define TICK_MS 250                /* looks at the registry generation (restores) */
#define LOG_RING_BYTES (64u << 10) /* last log lines kept per function */
#define LOG_LINE_MAX 1024          /* bytes of one line (longer ones are cut) */
#define LOG_RATE_PER_S 20          /* lines per function and second to the node's log */
#define LOG_BURST 100
#define LOG_LINES_PER_INV 2000u /* more lines of one invocation are counted, not kept */
#define RECENT_MAX 1024 /* durations kept for quantiles */
#define TRACE_MAX 128
#define BAD_OUTPUT_LOGGED 200 /* first bytes of a bad output that are logged */
#define RELAY_HEADER "X-Jinn-Fn-Relay"
#define NOT_READY_HEADER "X-Jinn-Fn-Not-Ready"
#define CLUSTER_HEADER "X-Jinn-Cluster"
#define RELAY_GRACE_MS 5000
/* stdout above this is parsed on the thread pool, not on the loop; of such
 * an output the reply keeps this many headers and values per header (the
 * reply's header bytes are bounded anyway). */
#define PARSE_ON_LOOP_MAX (64u << 10)
#define OUTPUT_HEADERS_KEPT 256u
#define OUTPUT_HEADER_VALUES_KEPT 16u
#define COMPILE_RETRY_MS 250 /* a compile refused by a full queue is offered again */
/* Request JSON held by invocations queued or running on this node, all
 * functions together (each is up to 16 MiB); beyond it calls get 503 busy. */
#define INFLIGHT_BYTES_MAX (256u << 20)
/* Functions given series in /metrics and entries in /v1/status (a scrape
 * stays small and cheap on the loop however many functions exist). */
#define METRICS_FNS_MAX 256u

/* Duration histogram bounds, ms. */
static const uint64_t bounds_ms[] = {1,   2,   5,    10,   25,   50,   100,
                                     250, 500, 1000, 2500, 5000, 10000};
#define NBOUNDS (sizeof bounds_ms / sizeof bounds_ms[0])

/* Error kinds, counted per function. */
#define KINDS(X)                                                                               \
    X(K_UNREACHABLE, "trap:unreachable")                                                       \
    X(K_OOB, "trap:out_of_bounds")                                                             \
    X(K_INT_OVERFLOW, "trap:integer_overflow")                                                 \
    X(K_DIV_ZERO, "trap:division_by_zero")                                                     \
    X(K_CONVERSION, "trap:invalid_conversion")                                                 \
    X(K_CALL_INDIRECT, "trap:call_indirect")                                                   \
    X(K_STACK, "trap:stack_exhausted")                                                         \
    X(K_OOM, "trap:out_of_memory")                                                             \
    X(K_TRAP_OTHER, "trap:other")                                                              \
    X(K_TIMEOUT, "timeout")                                                                    \
    X(K_CRASH, "crash")                                                                        \
    X(K_PROTOCOL, "protocol")                                                                  \
    X(K_BAD_OUTPUT, "bad_output")                                                              \
    X(K_TOO_LARGE, "output_too_large")                                                         \
    X(K_EXIT, "exit")                                                                          \
    X(K_BUSY, "busy")                                                                          \
    X(K_UNAVAILABLE, "unavailable")                                                            \
    X(K_NOT_READY, "not_ready")                                                                \
    X(K_BAD_REQUEST, "bad_request")                                                            \
    X(K_ABANDONED, "abandoned")
#define KIND_ENUM(k, s) k,
enum kind { KINDS(KIND_ENUM) KIND_COUNT };
#undef KIND_ENUM
#define KIND_NAME(k, s) s,
static const char *const kind_names[] = {KINDS(KIND_NAME)};
#undef KIND_NAME

struct logline {
    struct logline *next;
    uint64_t time_ms;
    int level; /* -1: stderr */
    size_t bytes;
    char trace[TRACE_MAX + 1];
    char line[]; /* NUL-terminated */
};

/* A name in the stats' index (the key of a lookup is one on the stack). */
struct stat_key {
    struct jinn_tree_node node;
    const char *name;
};

struct fnstat {
    struct fnstat *next;
    struct stat_key by_name; /* in r->stats_by_name: O(log n) lookups */
    char name[JINN_FN_NAME_MAX + 1];
    unsigned refs;          /* versions that point here */
    struct version *active; /* NULL: none (deleted, or not seen yet) */
    /* The previous version's warm pool, serving new calls while the active
     * version has no pool here yet (compiling, or failed to compile): a
     * redeploy is no outage. Drained once the active version's pool starts. */
    struct version *fallback;
    uint64_t invocations, errors[KIND_COUNT];
    uint64_t buckets[NBOUNDS + 1], sum_us;
    uint32_t recent[RECENT_MAX]; /* durations, µs (saturating) */
    unsigned recent_n, recent_pos;
    struct logline *log_head, *log_tail;
    size_t log_bytes;
    double tokens;
    uint64_t tokens_ms;
    uint64_t log_suppressed; /* lines not written to the node's log (rate limit) */
    uint64_t relayed;        /* invocations sent to another node */
};

struct compiled {
    struct compiled *next;
    struct jinn_wasm_runner *r;
    uint8_t sha[32];
    enum jinn_fn_state state;
    bool started;      /* jinn_wasm_compile called */
    bool in_flight;    /* its callback has not run yet */
    uint64_t start_at; /* loop ms (the compile-delay test hook) */
    char *message;     /* FAILED: the compiler's output */
    char *so_path;
    uint64_t compile_ms;
};

struct version {
    struct version *next;
    struct jinn_wasm_runner *r;
    struct fnstat *fs;
    uint64_t version;
    uint8_t sha[32];
    struct jinn_fn_settings settings; /* deep copy */
    struct jinn_wbuf prefix;          /* INVOKE: args and env, encoded */
    struct compiled *c;
    struct jinn_wasm_pool *pool; /* NULL until compiled; kept while draining */
    bool wanted;                 /* the active version of its function */
    bool draining;
    unsigned inflight;
};

struct jinn_wasm_runner {
    struct jinn_api *api;
    uv_loop_t *loop;
    struct jinn_wasm_host *host;
    struct fnstat *stats;
    /* The same by name: the job pools ask for every function on every
     * sync (jobs.c), a list search each would be O(functions^2). */
    struct jinn_tree stats_by_name;
    struct compiled *compiled;
    struct version *versions;
    uv_timer_t tick, soon;
    uint64_t generation;
    bool synced_once;
    bool dirty; /* compiles, pools or frees may be due: the next sync walks */
    uint64_t next_id;
    uint64_t rng;
    unsigned relay_rr;
    uint64_t compile_delay_ms; /* TEST ONLY: JINN_TEST_COMPILE_DELAY_MS */
    uint64_t inflight_bytes;   /* request JSON of invocations not finished */
    bool stopping;
    unsigned pools_stopping;
    unsigned parsing; /* outputs being parsed on the thread pool */
    unsigned timers_open;
    void (*stopped)(void *data);
    void *stopped_data;
    bool stop_done;
};

struct inv {
    struct jinn_wasm_runner *r;
    struct version *v;
    struct jinn_http_request *req;
    struct jinn_wasm_job job;
    struct jinn_wbuf payload;
    struct jinn_wasm_inv *hinv;
    unsigned log_lines; /* lines of this invocation, LOG_LINES_PER_INV at most */
    char trace[TRACE_MAX + 1];
    /* A job (jinn_wasm_runner_run): no req; the answer that would have
     * gone to the client is kept here and handed to cb when the
     * invocation is freed. */
    jinn_wasm_run_cb cb;
    void *cb_data;
    struct jinn_wasm_run_result res;
    char *res_response; /* the response object's JSON (jansson-allocated) */
    char res_kind[64];
    char res_message[256];
    char errtail[JINN_WASM_STDERR_TAIL]; /* the last stderr bytes, whole lines */
    size_t errtail_len;
};

static void sync_now(struct jinn_wasm_runner *r);
static void tick_cb(uv_timer_t *t);

static const struct jinn_fns *registry(const struct jinn_wasm_runner *r)
{
    return &jinn_node_fsm(r->api->node)->fns;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t rng_next(struct jinn_wasm_runner *r)
{
    /* xorshift64*: trace ids only, never state */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 0x2545F4914F6CDD1DULL;
}

/* ---- settings copies -------------------------------------------------------- */

static void strv_free(char **v, unsigned n)
{
    for (unsigned i = 0; v != NULL && i < n; i++) {
        jinn_free(v[i]);
    }
    jinn_free(v);
}

static char **strv_dup(char *const *v, unsigned n, bool *failed)
{
    char **out;
    if (n == 0) {
        return NULL;
    }
    out = jinn_calloc(n, sizeof *out);
    if (out == NULL) {
        *failed = true;
        return NULL;
    }
    for (unsigned i = 0; i < n; i++) {
        out[i] = jinn_strdup(v[i]);
        *failed |= out[i] == NULL;
    }
    return out;
}

static void settings_free(struct jinn_fn_settings *s)
{
    strv_free(s->env, s->n_env);
    strv_free(s->args, s->n_args);
    strv_free(s->kv_read, s->n_kv_read);
    strv_free(s->kv_write, s->n_kv_write);
    memset(s, 0, sizeof *s);
}

static int settings_copy(struct jinn_fn_settings *dst, const struct jinn_fn_settings *src)
{
    bool failed = false;
    *dst = *src;
    dst->env = strv_dup(src->env, src->n_env, &failed);
    dst->args = strv_dup(src->args, src->n_args, &failed);
    dst->kv_read = strv_dup(src->kv_read, src->n_kv_read, &failed);
    dst->kv_write = strv_dup(src->kv_write, src->n_kv_write, &failed);
    if (failed) {
        settings_free(dst);
        return JINN_ENOMEM;
    }
    return 0;
}

/* ---- per-function state --------------------------------------------------------- */

static int stat_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(jinn_tree_entry(a, struct stat_key, node)->name,
                  jinn_tree_entry(b, struct stat_key, node)->name);
}

static struct fnstat *fnstat_find(const struct jinn_wasm_runner *r, const char *name)
{
    struct stat_key key = {.name = name};
    struct jinn_tree_node *n = jinn_tree_find(&r->stats_by_name, &key.node);
    return n != NULL ? jinn_tree_entry(jinn_tree_entry(n, struct stat_key, node), struct fnstat,
                                       by_name)
                     : NULL;
}

static struct fnstat *fnstat_get(struct jinn_wasm_runner *r, const char *name)
{
    struct fnstat *fs = fnstat_find(r, name);
    if (fs != NULL || strlen(name) > JINN_FN_NAME_MAX) {
        return fs;
    }
    fs = jinn_calloc(1, sizeof *fs);
    if (fs == NULL) {
        return NULL;
    }
    snprintf(fs->name, sizeof fs->name, "%s", name);
    fs->tokens = LOG_BURST;
    fs->tokens_ms = uv_now(r->loop);
    fs->by_name.name = fs->name;
    jinn_tree_insert(&r->stats_by_name, &fs->by_name.node); /* not present: found above */
    fs->next = r->stats;
    r->stats = fs;
    return fs;
}

static void fnstat_free_log(struct fnstat *fs)
{
    while (fs->log_head != NULL) {
        struct logline *l = fs->log_head;
        fs->log_head = l->next;
        jinn_free(l);
    }
    fs->log_tail = NULL;
    fs->log_bytes = 0;
}

static void record(struct fnstat *fs, int kind, uint64_t us)
{
    uint64_t ms = us / 1000;
    unsigned b = 0;
    fs->invocations++;
    if (kind >= 0) {
        fs->errors[kind]++;
    }
    while (b < NBOUNDS && ms >= bounds_ms[b]) {
        b++;
    }
    /* bucket b holds durations below bounds_ms[b] (and >= the previous) */
    fs->buckets[b]++;
    fs->sum_us += us;
    fs->recent[fs->recent_pos] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    fs->recent_pos = (fs->recent_pos + 1) % RECENT_MAX;
    if (fs->recent_n < RECENT_MAX) {
        fs->recent_n++;
    }
}

/* One log line of a function: into its ring, and (rate-limited) into the
 * node's log. Control bytes are replaced, so a guest cannot forge lines. */
static void fn_log(struct jinn_wasm_runner *r, struct fnstat *fs, const char *trace, int level,
                   const void *msg, size_t len)
{
    struct logline *l;
    uint64_t now = uv_now(r->loop);
    const uint8_t *m = msg;
    size_t n = len > LOG_LINE_MAX ? LOG_LINE_MAX : len;

    while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == '\r')) {
        n--;
    }
    l = jinn_malloc(sizeof *l + n + 1);
    if (l == NULL) {
        return;
    }
    l->next = NULL;
    l->time_ms = wall_ms();
    l->level = level;
    l->bytes = sizeof *l + n + 1;
    snprintf(l->trace, sizeof l->trace, "%s", trace);
    for (size_t i = 0; i < n; i++) {
        l->line[i] = m[i] < 0x20 || m[i] == 0x7f ? ' ' : (char)m[i];
    }
    l->line[n] = '\0';
    /* The line may be cut inside a UTF-8 sequence, and guests write what
     * they like: replace invalid bytes so the ring serves as JSON. */
    if (!jinn_utf8_valid(l->line, n)) {
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)l->line[i] >= 0x80) {
                l->line[i] = '?';
            }
        }
    }
    if (fs->log_tail != NULL) {
        fs->log_tail->next = l;
    } else {
        fs->log_head = l;
    }
    fs->log_tail = l;
    fs->log_bytes += l->bytes;
    while (fs->log_bytes > LOG_RING_BYTES && fs->log_head != NULL && fs->log_head != l) {
        struct logline *old = fs->log_head;
        fs->log_head = old->next;
        fs->log_bytes -= old->bytes;
        jinn_free(old);
    }
    fs->tokens += (double)(now - fs->tokens_ms) * LOG_RATE_PER_S / 1000.0;
    fs->tokens_ms = now;
    if (fs->tokens > LOG_BURST) {
        fs->tokens = LOG_BURST;
    }
    if (fs->tokens < 1.0) {
        fs->log_suppressed++;
        return;
    }
    fs->tokens -= 1.0;
    if (level == 3) {
        jinn_error("fn %s trace %s: %s", fs->name, trace, l->line);
    } else {
        jinn_info("fn %s trace %s: %s%s", fs->name, trace, level < 0 ? "stderr: " : "",
                  l->line);
    }
}

/* ---- versions and compiles ------------------------------------------------------- */

static struct compiled *compiled_find(struct jinn_wasm_runner *r, const uint8_t sha[32])
{
    for (struct compiled *c = r->compiled; c != NULL; c = c->next) {
        if (memcmp(c->sha, sha, 32) == 0) {
            return c;
        }
    }
    return NULL;
}

static void compiled_done(void *data, int code, const char *so_path, const char *message,
                          uint64_t compile_ms)
{
    struct compiled *c = data;
    struct jinn_wasm_runner *r = c->r;
    c->in_flight = false;
    c->compile_ms = compile_ms;
    if (code == 0 && so_path != NULL && (c->so_path = jinn_strdup(so_path)) != NULL) {
        c->state = JINN_FN_READY;
    } else {
        c->state = JINN_FN_FAILED;
        c->message = jinn_strdup(message != NULL ? message : jinn_error_message(code));
    }
    if (c->state == JINN_FN_FAILED) {
        jinn_warn("compiling a function module failed: %.300s", c->message ? c->message : "?");
    }
    /* Start the pools on the next loop turn (a compile nobody wants any
     * more is freed there too). */
    r->dirty = true;
    uv_timer_start(&r->soon, tick_cb, 0, 0);
}

static void version_free(struct version *v)
{
    struct jinn_wasm_runner *r = v->r;
    for (struct version **pp = &r->versions; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == v) {
            *pp = v->next;
            break;
        }
    }
    v->fs->refs--;
    if (v->fs->active == v) {
        v->fs->active = NULL;
    }
    if (v->fs->fallback == v) {
        v->fs->fallback = NULL;
    }
    settings_free(&v->settings);
    jinn_wbuf_free(&v->prefix);
    jinn_free(v);
}

static void version_maybe_free(struct version *v)
{
    if (!v->wanted && v->pool == NULL && v->inflight == 0) {
        version_free(v);
    }
}

static void pool_gone(void *data)
{
    struct version *v = data;
    struct jinn_wasm_runner *r = v->r;
    v->pool = NULL;
    r->dirty = true;
    if (r->stopping) {
        r->pools_stopping--;
    }
    version_maybe_free(v);
    if (r->stopping) {
        sync_now(r); /* finishes the stop when this was the last */
    }
}

static struct version *version_new(struct jinn_wasm_runner *r, struct fnstat *fs,
                                   const struct jinn_fn *fn)
{
    const struct jinn_fn_version *fv = fn->active;
    struct version *v = jinn_calloc(1, sizeof *v);
    if (v == NULL) {
        return NULL;
    }
    if (settings_copy(&v->settings, &fv->settings) != 0) {
        jinn_free(v);
        return NULL;
    }
    v->r = r;
    v->fs = fs;
    v->version = fv->version;
    memcpy(v->sha, fv->sha256, 32);
    /* argv (argv[0] is the function's name), then the environment */
    jinn_wbuf_init(&v->prefix);
    jinn_wbuf_put_u32(&v->prefix, v->settings.n_args + 1);
    jinn_wbuf_put_str(&v->prefix, fs->name);
    for (unsigned i = 0; i < v->settings.n_args; i++) {
        jinn_wbuf_put_str(&v->prefix, v->settings.args[i]);
    }
    jinn_wbuf_put_u32(&v->prefix, v->settings.n_env);
    for (unsigned i = 0; i < v->settings.n_env; i++) {
        jinn_wbuf_put_str(&v->prefix, v->settings.env[i]);
    }
    if (v->prefix.failed) {
        settings_free(&v->settings);
        jinn_wbuf_free(&v->prefix);
        jinn_free(v);
        return NULL;
    }
    v->c = compiled_find(r, v->sha);
    if (v->c != NULL && v->c->state == JINN_FN_FAILED && !v->c->in_flight) {
        /* A deploy of a module that failed here compiles it again: the
         * failure may have been this node's (a full disk, a killed cc). */
        v->c->state = JINN_FN_COMPILING;
        v->c->started = false;
        jinn_free(v->c->message);
        v->c->message = NULL;
        v->c->start_at = uv_now(r->loop) + r->compile_delay_ms;
    }
    if (v->c == NULL) {
        v->c = jinn_calloc(1, sizeof *v->c);
        if (v->c == NULL) {
            settings_free(&v->settings);
            jinn_wbuf_free(&v->prefix);
            jinn_free(v);
            return NULL;
        }
        memcpy(v->c->sha, v->sha, 32);
        v->c->r = r;
        v->c->state = JINN_FN_COMPILING;
        v->c->start_at = uv_now(r->loop) + r->compile_delay_ms;
        v->c->next = r->compiled;
        r->compiled = v->c;
    }
    fs->refs++;
    v->next = r->versions;
    r->versions = v;
    return v;
}

static void drain(struct version *v)
{
    if (v->fs->fallback == v) {
        v->fs->fallback = NULL;
    }
    if (v->pool != NULL && !v->draining) {
        v->draining = true;
        jinn_wasm_pool_drain(v->pool, pool_gone, v);
    }
}

/* A version no longer active keeps serving (as its function's fallback)
 * while the new active version has no pool here. */
static bool keep_as_fallback(const struct version *v)
{
    const struct fnstat *fs = v->fs;
    return v->pool != NULL && !v->draining && fs->active != NULL && fs->active != v &&
           fs->active->pool == NULL && (fs->fallback == NULL || fs->fallback == v);
}

static void start_pool(struct jinn_wasm_runner *r, struct version *v)
{
    struct jinn_wasm_pool_config pc;
    memset(&pc, 0, sizeof pc);
    pc.name = v->fs->name;
    pc.so_path = v->c->so_path;
    pc.memory_limit = v->settings.memory_limit;
    pc.size = v->settings.pool_size;
    pc.timeout_ms = v->settings.timeout_ms;
    if (jinn_wasm_pool_create(r->loop, &pc, &v->pool) != 0) {
        v->pool = NULL;
        jinn_warn("fn %s: out of memory starting its pool", v->fs->name);
    }
}

/* Brings the runner in line with the registry. Cheap when nothing changed. */
static void sync_now(struct jinn_wasm_runner *r)
{
    const struct jinn_fns *fns;
    uint64_t now = uv_now(r->loop);

    if (r->stopping) {
        if (!r->stop_done && r->pools_stopping == 0 && r->timers_open == 0 &&
            r->parsing == 0) {
            r->stop_done = true;
            if (r->stopped != NULL) {
                r->stopped(r->stopped_data);
            }
        }
        return;
    }
    fns = registry(r);
    if (!r->synced_once || jinn_fns_generation(fns) != r->generation) {
        r->synced_once = true;
        r->dirty = true;
        r->generation = jinn_fns_generation(fns);
        for (struct version *v = r->versions; v != NULL; v = v->next) {
            v->wanted = false;
        }
        for (const struct jinn_fn *fn = jinn_fns_next(fns, NULL); fn != NULL;
             fn = jinn_fns_next(fns, fn->name)) {
            struct fnstat *fs;
            struct version *v;
            if (fn->active == NULL) {
                continue;
            }
            fs = fnstat_get(r, fn->name);
            if (fs == NULL) {
                continue;
            }
            v = fs->active;
            if (v == NULL || v->version != fn->active->version) {
                v = NULL;
                for (struct version *w = r->versions; w != NULL; w = w->next) {
                    if (w->fs == fs && w->version == fn->active->version && !w->draining) {
                        v = w;
                    }
                }
                if (v == NULL && (v = version_new(r, fs, fn)) == NULL) {
                    jinn_warn("fn %s: out of memory; not served on this node", fn->name);
                    continue;
                }
            }
            v->wanted = true;
            fs->active = v;
        }
        for (struct version *v = r->versions; v != NULL; v = v->next) {
            if (!v->wanted && v->fs->active == v) {
                v->fs->active = NULL; /* deleted */
            }
        }
        for (struct version *v = r->versions, *next; v != NULL; v = next) {
            next = v->next;
            if (v->wanted) {
                if (v->fs->fallback == v) {
                    v->fs->fallback = NULL; /* a rollback to it */
                }
                continue;
            }
            if (keep_as_fallback(v)) {
                v->fs->fallback = v;
                continue;
            }
            drain(v);
            version_maybe_free(v);
        }
        /* Forget what the registry no longer has (bounded by it). */
        for (struct fnstat **pp = &r->stats; *pp != NULL;) {
            struct fnstat *fs = *pp;
            if (fs->refs == 0 && jinn_fns_get(fns, fs->name) == NULL) {
                *pp = fs->next;
                jinn_tree_remove(&r->stats_by_name, &fs->by_name.node);
                fnstat_free_log(fs);
                jinn_free(fs);
            } else {
                pp = &fs->next;
            }
        }
    }
    if (!r->dirty) {
        return;
    }
    r->dirty = false;
    /* Compiles to start (with the module bytes of the registry, which has
     * them as long as a version of that hash is active). One per loop turn:
     * starting one copies the module (up to 16 MiB), and the compile
     * thread builds one at a time anyway. */
    bool compile_started = false;
    for (struct version *v = r->versions; v != NULL; v = v->next) {
        struct compiled *c = v->c;
        if (!v->wanted || c->started) {
            continue;
        }
        if (compile_started) {
            r->dirty = true;
            uv_timer_start(&r->soon, tick_cb, 0, 0); /* the next one next turn */
            break;
        }
        if (now < c->start_at) {
            r->dirty = true; /* the tick looks again */
            continue;
        }
        const struct jinn_fn *fn = jinn_fns_get(fns, v->fs->name);
        if (fn == NULL || fn->active == NULL || fn->active->version != v->version) {
            continue;
        }
        c->started = true;
        c->in_flight = true;
        compile_started = true;
        int rv = jinn_wasm_compile(r->loop, r->api->cfg->data_dir, c->sha, fn->active->module,
                                   fn->active->module_len, compiled_done, c);
        if (rv == JINN_EBUSY) {
            /* The compile queue is full (a deploy burst, a restart with no
             * cache): not a failure; it stays compiling and is offered
             * again later, when the queue has room. */
            c->started = false;
            c->in_flight = false;
            c->start_at = now + COMPILE_RETRY_MS;
            r->dirty = true;
            break;
        }
        if (rv != 0) {
            c->in_flight = false;
            c->state = JINN_FN_FAILED;
            c->message = jinn_strdup(jinn_error_message(rv));
        }
    }
    for (struct version *v = r->versions; v != NULL; v = v->next) {
        if (v->wanted && v->pool == NULL && v->c->state == JINN_FN_READY) {
            start_pool(r, v);
            r->dirty |= v->pool == NULL;
            if (v->pool != NULL && v->fs->fallback != NULL) {
                drain(v->fs->fallback); /* new calls go to this one now */
            }
        }
    }
    /* Compiled modules no version uses any more. */
    for (struct compiled **pp = &r->compiled; *pp != NULL;) {
        struct compiled *c = *pp;
        bool used = c->in_flight;
        for (struct version *v = r->versions; v != NULL && !used; v = v->next) {
            used = v->c == c;
        }
        if (!used) {
            *pp = c->next;
            jinn_free(c->message);
            jinn_free(c->so_path);
            jinn_free(c);
        } else {
            pp = &c->next;
        }
    }
}

static void tick_cb(uv_timer_t *t)
{
    sync_now(t->data);
}

static void timer_closed(uv_handle_t *h)
{
    struct jinn_wasm_runner *r = h->data;
    r->timers_open--;
    sync_now(r);
}

/* ---- invocations ------------------------------------------------------------------- */

static const char *const trap_names[] = {"other",
                                         "unreachable",
                                         "out_of_bounds",
                                         "integer_overflow",
                                         "division_by_zero",
                                         "invalid_conversion",
                                         "call_indirect",
                                         "stack_exhausted",
                                         "out_of_memory",
                                         "other"};

/* A reply to HEAD carries no body (http.c writes what it is given; body
 * bytes after a HEAD answer would be read as the next response). */
static bool is_head(const struct jinn_http_request *req)
{
    return strcmp(req->msg.method, "HEAD") == 0;
}

static void reply_error(struct jinn_http_request *req, int status, const char *error,
                        const char *message, const char *trace, json_t *extra)
{
    json_t *obj =
        json_pack("{s:s, s:s, s:s}", "error", error, "message", message, "trace_id", trace);
    if (obj != NULL && extra != NULL) {
        json_object_update(obj, extra);
    }
    json_decref(extra);
    if (status == 503) {
        jinn_http_add_header(req, "Retry-After", "1");
    }
    if (trace[0] != '\0') {
        jinn_http_add_header(req, "X-Request-Id", trace);
    }
    if (obj == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    if (is_head(req)) {
        json_decref(obj);
        jinn_http_reply(req, status, "application/json", "", 0);
        return;
    }
    jinn_http_reply_json(req, status, obj);
}

/* The error answer of an invocation: to its client, or kept for the
 * job's callback (extra's "kind", a trap's kind, is kept). */
static void inv_reply_error(struct inv *inv, int status, const char *error, const char *message,
                            json_t *extra)
{
    if (inv->req != NULL) {
        reply_error(inv->req, status, error, message, inv->trace, extra);
        return;
    }
    inv->res.status = status;
    inv->res.error = error; /* string literals */
    snprintf(inv->res_message, sizeof inv->res_message, "%s", message);
    if (json_is_string(json_object_get(extra, "kind"))) {
        snprintf(inv->res_kind, sizeof inv->res_kind, "%s",
                 json_string_value(json_object_get(extra, "kind")));
    }
    json_decref(extra);
}

static bool tchar(unsigned char c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Response headers a function may set: a token name, a value without
 * control bytes, and nothing that is the server's to say (framing,
 * connection management, jinn's own headers). */
static bool header_allowed(const char *name, const char *value)
{
    static const char *const refused[] = {
        "connection", "keep-alive", "transfer-encoding", "content-length", "te",
        "trailer",    "upgrade",    "proxy-connection",  "host",           "content-type",
        "date",       "server",     "x-request-id"}; /* jinn sets the trace id */
    size_t n = strlen(name);
    if (n == 0 || n > 64 || strlen(value) > 1024) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!tchar((unsigned char)name[i])) {
            return false;
        }
    }
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
            return false;
        }
    }
    if (strncasecmp(name, "x-jinn-", 7) == 0) {
        return false;
    }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (strcasecmp(name, refused[i]) == 0) {
            return false;
        }
    }
    return true;
}

static void log_bad_output(struct jinn_wasm_runner *r, struct fnstat *fs, const char *trace,
                           const char *why, const uint8_t *out, size_t len)
{
    char msg[BAD_OUTPUT_LOGGED * 4 + 128];
    size_t n = 0;
    n += (size_t)snprintf(msg, sizeof msg, "bad output (%s), %zu bytes: ", why, len);
    for (size_t i = 0; i < len && i < BAD_OUTPUT_LOGGED && n + 5 < sizeof msg; i++) {
        if (out[i] >= 0x20 && out[i] < 0x7f && out[i] != '\\') {
            msg[n++] = (char)out[i];
        } else {
            n += (size_t)snprintf(msg + n, sizeof msg - n, "\\x%02x", out[i]);
        }
    }
    fn_log(r, fs, trace, 3, msg, n);
}

/* Replies with the module's response JSON, parsed into obj (NULL: it did
 * not parse, parse_error says why); obj is consumed. out/len: the raw
 * output, for the log of a bad one. Returns the error kind, or -1. */
static int reply_output(struct inv *inv, json_t *obj, const char *parse_error,
                        const uint8_t *out, size_t len)
{
    struct jinn_wasm_runner *r = inv->r;
    struct fnstat *fs = inv->v->fs;
    struct jinn_http_request *req = inv->req;
    json_t *st, *hd, *bd;
    const char *ctype = "text/plain; charset=utf-8";
    json_int_t status = 200;
    char why[200];

    if (obj == NULL || !json_is_object(obj)) {
        snprintf(why, sizeof why, "%s",
                 obj == NULL ? (parse_error != NULL ? parse_error : "?") : "not a JSON object");
        goto bad;
    }
    st = json_object_get(obj, "status");
    hd = json_object_get(obj, "headers");
    bd = json_object_get(obj, "body");
    if (st != NULL && !json_is_null(st)) {
        /* 1xx are not final responses: a function cannot answer with one. */
        if (!json_is_integer(st) || json_integer_value(st) < 200 ||
            json_integer_value(st) > 599) {
            snprintf(why, sizeof why, "status must be an integer from 200 to 599");
            goto bad;
        }
        status = json_integer_value(st);
    }
    if (bd != NULL && !json_is_null(bd) && !json_is_string(bd)) {
        snprintf(why, sizeof why, "body must be a string");
        goto bad;
    }
    if (hd != NULL && !json_is_null(hd) && !json_is_object(hd)) {
        snprintf(why, sizeof why, "headers must be an object");
        goto bad;
    }
    if (req == NULL) {
        /* A job: its outcome is the status and the response object. */
        inv->res.status = (int)status;
        inv->res_response = json_dumps(obj, JSON_COMPACT);
        if (inv->res_response == NULL) {
            inv->res.status = 503;
            inv->res.error = "out_of_memory";
        }
        json_decref(obj);
        return -1;
    }
    if (json_is_object(hd)) {
        const char *name;
        json_t *vals;
        /* http.c keeps JINN_HTTP_MAX_REPLY_HEADERS bytes of extra headers;
         * room is left for the two of ours, the rest is dropped here (one
         * log line, not one per header). */
        size_t room = JINN_HTTP_MAX_REPLY_HEADERS - 200, dropped = 0;
        json_object_foreach(hd, name, vals)
        {
            size_t nvals = json_is_array(vals) ? json_array_size(vals) : 1;
            for (size_t i = 0; i < nvals; i++) {
                json_t *val = json_is_array(vals) ? json_array_get(vals, i) : vals;
                const char *text = json_string_value(val);
                if (text == NULL) {
                    continue;
                }
                size_t need = strlen(name) + strlen(text) + 4;
                if (strcasecmp(name, "content-type") == 0 && i == 0 &&
                    header_allowed("x", text)) {
                    ctype = text;
                } else if (header_allowed(name, text) && need <= room) {
                    jinn_http_add_header(req, name, text);
                    room -= need;
                } else if (header_allowed(name, text)) {
                    dropped++;
                } else if (dropped++ < 4) {
                    char msg[160];
                    int n = snprintf(msg, sizeof msg,
                                     "response header '%.64s' dropped "
                                     "(not allowed)",
                                     name);
                    fn_log(r, fs, inv->trace, 1, msg, (size_t)n);
                }
            }
        }
        if (dropped > 0) {
            char msg[160];
            int n = snprintf(msg, sizeof msg,
                             "%zu response header(s) dropped (not allowed, "
                             "or past %u bytes of headers)",
                             dropped, JINN_HTTP_MAX_REPLY_HEADERS - 200);
            fn_log(r, fs, inv->trace, 1, msg, (size_t)n);
        }
    }
    jinn_http_add_header(req, "X-Request-Id", inv->trace);
    jinn_http_add_header(req, "X-Jinn-Fn-Node", r->api->cfg->server_name);
    if (status == 204 || status == 304 || !json_is_string(bd) || is_head(req)) {
        jinn_http_reply(req, (int)status, ctype, "", 0);
    } else {
        jinn_http_reply(req, (int)status, ctype, json_string_value(bd), json_string_length(bd));
    }
    json_decref(obj);
    return -1;

bad:
    json_decref(obj);
    log_bad_output(r, fs, inv->trace, why, out, len);
    inv_reply_error(inv, 502, "bad_output",
                    "the function's output is not a response JSON "
                    "({\"status\",\"headers\",\"body\"}); its first bytes are in its log",
                    NULL);
    return K_BAD_OUTPUT;
}

static void inv_free(struct inv *inv)
{
    struct version *v = inv->v;
    inv->r->inflight_bytes -= inv->payload.len;
    if (inv->hinv != NULL) {
        jinn_wasm_inv_end(inv->hinv);
        inv->hinv = NULL;
    }
    if (inv->cb != NULL) {
        inv->res.response = inv->res_response;
        inv->res.response_len = inv->res_response != NULL ? strlen(inv->res_response) : 0;
        inv->res.kind = inv->res_kind;
        inv->res.message = inv->res_message;
        inv->res.stderr_tail = inv->errtail;
        inv->res.stderr_len = inv->errtail_len;
        inv->cb(inv->cb_data, &inv->res);
        free(inv->res_response); /* jansson's allocator is malloc */
    }
    jinn_wbuf_free(&inv->payload);
    jinn_free(inv);
    v->inflight--;
    version_maybe_free(v);
}

/* The answer to an invocation that exited with code, its stdout parsed
 * into obj (consumed; NULL: parse_error). */
static int output_done(struct inv *inv, uint32_t code, json_t *obj, const char *parse_error,
                       const uint8_t *out, size_t len)
{
    char msg[160];
    if (code != 0 && !json_is_object(obj)) {
        /* A module may exit non-zero after writing its response (Go's
         * os.Exit); only without one is the exit code the answer. */
        json_decref(obj);
        snprintf(msg, sizeof msg, "the function exited with code %u and no response", code);
        inv_reply_error(inv, 500, "exit", msg, json_pack("{s:I}", "code", (json_int_t)code));
        return K_EXIT;
    }
    return reply_output(inv, obj, parse_error, out, len);
}

/* A big output is parsed on the thread pool: a tree of millions of values
 * takes seconds to build and to free (measured 2-4 s for 16 MiB), which
 * must not stall the loop. The worker keeps only what the reply needs
 * (status, body, a bounded part of headers) and frees the rest there. */
struct parse_work {
    uv_work_t work;
    struct inv *inv;
    uint32_t code;
    uint64_t us;
    uint8_t *out;
    size_t len;
    json_t *obj;
    char error[160];
};

static json_t *output_essentials(json_t *obj)
{
    json_t *small = json_object(), *hd = json_object_get(obj, "headers");
    const char *keys[] = {"status", "body"};
    if (small == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < 2; i++) {
        json_t *x = json_object_get(obj, keys[i]);
        if (x != NULL) {
            json_object_set(small, keys[i], x);
        }
    }
    if (json_is_object(hd)) {
        json_t *keep = json_object();
        const char *name;
        json_t *vals;
        size_t n = 0;
        json_object_foreach(hd, name, vals)
        {
            if (keep == NULL || n++ >= OUTPUT_HEADERS_KEPT) {
                break;
            }
            if (json_is_array(vals) && json_array_size(vals) > OUTPUT_HEADER_VALUES_KEPT) {
                json_t *a = json_array();
                for (size_t i = 0; a != NULL && i < OUTPUT_HEADER_VALUES_KEPT; i++) {
                    json_array_append(a, json_array_get(vals, i));
                }
                json_object_set_new(keep, name, a != NULL ? a : json_null());
            } else {
                json_object_set(keep, name, vals);
            }
        }
        json_object_set_new(small, "headers", keep != NULL ? keep : json_null());
    } else if (hd != NULL) {
        json_object_set(small, "headers", hd);
    }
    return small;
}

static void parse_work(uv_work_t *w)
{
    struct parse_work *pw = w->data;
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)pw->out, pw->len, 0, &jerr);
    if (obj == NULL) {
        snprintf(pw->error, sizeof pw->error, "%s", jerr.text);
    } else if (json_is_object(obj)) {
        pw->obj = output_essentials(obj);
        if (pw->obj == NULL) {
            snprintf(pw->error, sizeof pw->error, "out of memory");
        }
    } else {
        snprintf(pw->error, sizeof pw->error, "not a JSON object");
    }
    json_decref(obj);
}

static void parse_done(uv_work_t *w, int status)
{
    struct parse_work *pw = w->data;
    struct inv *inv = pw->inv;
    struct jinn_wasm_runner *r = inv->r;
    int kind;
    (void)status; /* never cancelled */
    kind = output_done(inv, pw->code, pw->obj, pw->error, pw->out, pw->len);
    record(inv->v->fs, kind, pw->us);
    inv_free(inv);
    jinn_free(pw->out);
    jinn_free(pw);
    r->parsing--;
    if (r->stopping) {
        sync_now(r); /* the stop waits for these */
    }
}

static bool parse_off_loop(struct inv *inv, const struct jinn_wasm_result *res)
{
    struct parse_work *pw = jinn_calloc(1, sizeof *pw);
    if (pw == NULL || (pw->out = jinn_malloc(res->out_len)) == NULL) {
        jinn_free(pw);
        return false;
    }
    memcpy(pw->out, res->out, res->out_len); /* res->out lives for the callback only */
    pw->len = res->out_len;
    pw->inv = inv;
    pw->code = res->detail;
    pw->us = res->run_us + res->queued_us;
    pw->work.data = pw;
    if (uv_queue_work(inv->r->loop, &pw->work, parse_work, parse_done) != 0) {
        jinn_free(pw->out);
        jinn_free(pw);
        return false;
    }
    inv->r->parsing++;
    /* The run is over: the host's side ends now (its locks are released
     * at once, and a runner stop meanwhile destroys the host). */
    if (inv->hinv != NULL) {
        jinn_wasm_inv_end(inv->hinv);
        inv->hinv = NULL;
    }
    return true;
}

static void inv_done(void *data, const struct jinn_wasm_result *res)
{
    struct inv *inv = data;
    struct fnstat *fs = inv->v->fs;
    int kind = -1;
    char msg[160];

    switch (res->outcome) {
    case JINN_WASM_EXITED: {
        json_error_t jerr;
        json_t *obj;
        if (res->out_len > PARSE_ON_LOOP_MAX && parse_off_loop(inv, res)) {
            return; /* answered and recorded when the parse is done */
        }
        obj = json_loadb((const char *)res->out, res->out_len, 0, &jerr);
        kind = output_done(inv, res->detail, obj, jerr.text, res->out, res->out_len);
        break;
    }
    case JINN_WASM_TRAPPED: {
        unsigned t = res->detail < 10 ? res->detail : 9;
        snprintf(msg, sizeof msg, "the function trapped: %s", trap_names[t]);
        fn_log(inv->r, fs, inv->trace, 3, msg, strlen(msg));
        inv_reply_error(inv, 500, "trap", msg, json_pack("{s:s}", "kind", trap_names[t]));
        kind = t == 9 || t == 0 ? K_TRAP_OTHER : K_UNREACHABLE + (int)t - 1;
        break;
    }
    case JINN_WASM_TOO_LARGE:
        snprintf(msg, sizeof msg, "the function wrote more than %u bytes to stdout",
                 JINN_SBX_STDOUT_MAX);
        fn_log(inv->r, fs, inv->trace, 3, msg, strlen(msg));
        inv_reply_error(inv, 502, "output_too_large", msg, NULL);
        kind = K_TOO_LARGE;
        break;
    case JINN_WASM_TIMEOUT:
        snprintf(msg, sizeof msg,
                 "the function ran past its timeout (%" PRIu64 " ms) and "
                 "was killed",
                 inv->v->settings.timeout_ms);
        fn_log(inv->r, fs, inv->trace, 3, msg, strlen(msg));
        inv_reply_error(inv, 504, "timeout", msg, NULL);
        kind = K_TIMEOUT;
        break;
    case JINN_WASM_CRASH:
        snprintf(msg, sizeof msg, "the function's sandbox died (signal %u)", res->detail);
        fn_log(inv->r, fs, inv->trace, 3, msg, strlen(msg));
        inv_reply_error(inv, 500, "crash", msg,
                        json_pack("{s:I}", "signal", (json_int_t)res->detail));
        kind = K_CRASH;
        break;
    case JINN_WASM_PROTOCOL:
        inv_reply_error(inv, 500, "crash",
                        "the function's sandbox broke the protocol and was "
                        "killed",
                        NULL);
        kind = K_PROTOCOL;
        break;
    case JINN_WASM_UNAVAILABLE:
        inv_reply_error(inv, 503, "unavailable",
                        "no sandbox for this function could be started "
                        "on this node (see the node's log)",
                        NULL);
        kind = K_UNAVAILABLE;
        break;
    case JINN_WASM_QUEUE_TIMEOUT:
        inv_reply_error(inv, 503, "busy",
                        "every sandbox of this function stayed busy for its "
                        "whole timeout",
                        NULL);
        kind = K_BUSY;
        break;
    case JINN_WASM_STOPPED:
        inv_reply_error(inv, 503, "shutting_down", jinn_error_message(JINN_ESHUTDOWN), NULL);
        kind = K_UNAVAILABLE;
        break;
    case JINN_WASM_ABANDONED:
        /* dropped by http.c: the connection is gone */
        inv_reply_error(inv, 503, "busy", "the client left while the call waited", NULL);
        kind = K_ABANDONED;
        break;
    }
    record(fs, kind, res->run_us + res->queued_us);
    inv_free(inv);
}

static void inv_hostcall(void *data, int call, uint32_t a, uint32_t outmax, const void *b1,
                         size_t n1, const void *b2, size_t n2, jinn_wasm_reply_fn reply,
                         void *rdata)
{
    struct inv *inv = data;
    if (inv->hinv == NULL) {
        reply(rdata, 0xFFFFFFFFu, NULL, 0);
        return;
    }
    jinn_wasm_inv_call(inv->hinv, call, a, outmax, b1, n1, b2, n2, reply, rdata);
}

/* Keeps the last stderr lines of a job (its dead-letter reason): whole
 * lines, "\n"-separated, the oldest dropped first. */
static void errtail_add(struct inv *inv, const uint8_t *line, size_t len)
{
    size_t cap = sizeof inv->errtail - 1;
    if (len > cap - 1) {
        line += len - (cap - 1); /* the end of a long line */
        len = cap - 1;
    }
    while (inv->errtail_len > 0 && inv->errtail_len + 1 + len > cap) {
        char *nl = memchr(inv->errtail, '\n', inv->errtail_len);
        size_t drop = nl != NULL ? (size_t)(nl - inv->errtail) + 1 : inv->errtail_len;
        memmove(inv->errtail, inv->errtail + drop, inv->errtail_len - drop);
        inv->errtail_len -= drop;
    }
    if (inv->errtail_len > 0) {
        inv->errtail[inv->errtail_len++] = '\n';
    }
    memcpy(inv->errtail + inv->errtail_len, line, len);
    inv->errtail_len += len;
    inv->errtail[inv->errtail_len] = '\0';
}

static void inv_log(void *data, int level, const void *msg, size_t len)
{
    struct inv *inv = data;
    const uint8_t *p = msg, *end = p + len;
    if (level >= 0) {
        if (inv->log_lines++ < LOG_LINES_PER_INV) {
            fn_log(inv->r, inv->v->fs, inv->trace, level, msg, len);
        } else {
            inv->v->fs->log_suppressed++;
        }
        return;
    }
    /* stderr: one log line per line written */
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *stop = nl != NULL ? nl : end;
        if (stop > p && inv->cb != NULL) {
            errtail_add(inv, p, (size_t)(stop - p));
        }
        if (stop > p && inv->log_lines++ < LOG_LINES_PER_INV) {
            fn_log(inv->r, inv->v->fs, inv->trace, -1, p, (size_t)(stop - p));
        } else if (stop > p) {
            inv->v->fs->log_suppressed++;
        }
        p = stop + (nl != NULL);
    }
}

static bool inv_wanted(void *data)
{
    struct inv *inv = data;
    return inv->req == NULL || jinn_http_client_alive(inv->req);
}

static const struct jinn_wasm_job_ops inv_ops = {inv_done, inv_hostcall, inv_log, inv_wanted};

/* Go's canonical header key ("content-type" -> "Content-Type"): what
 * modules written for the original system look up. */
static void canonical_key(char *dst, const char *src, size_t n)
{
    bool upper = true;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        dst[i] = upper ? (char)toupper((unsigned char)c) : (char)tolower((unsigned char)c);
        upper = c == '-';
    }
    dst[n] = '\0';
}

/* The trace id: X-Request-Id when it is sane, else traceparent's trace id,
 * else a new one. */
static void trace_id(struct jinn_wasm_runner *r, const struct jinn_http_request *req,
                     char out[TRACE_MAX + 1])
{
    const struct jinn_http_header *h = jinn_http_header_find(&req->msg, "x-request-id");
    if (h != NULL && h->value_len > 0 && h->value_len <= TRACE_MAX) {
        bool ok = true;
        for (size_t i = 0; i < h->value_len && ok; i++) {
            unsigned char c = (unsigned char)h->value[i];
            ok = isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':';
        }
        if (ok) {
            memcpy(out, h->value, h->value_len);
            out[h->value_len] = '\0';
            return;
        }
    }
    h = jinn_http_header_find(&req->msg, "traceparent");
    if (h != NULL && h->value_len >= 55 && h->value[2] == '-' && h->value[35] == '-') {
        bool ok = true;
        for (size_t i = 3; i < 35 && ok; i++) {
            ok = isxdigit((unsigned char)h->value[i]) != 0;
        }
        if (ok) {
            memcpy(out, h->value + 3, 32);
            out[32] = '\0';
            return;
        }
    }
    snprintf(out, TRACE_MAX + 1, "%016" PRIx64 "%016" PRIx64, rng_next(r), rng_next(r));
}

/* The request JSON of the original system's contract. Returns NULL after
 * replying (400/413/503). */
static bool header_is(const struct jinn_http_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

static bool build_request(struct jinn_wasm_runner *r, struct inv *inv)
{
    struct jinn_http_request *req = inv->req;
    json_t *obj = json_object(), *headers = json_object(), *body;
    char key[128];
    size_t size;
    (void)r;

    if (obj == NULL || headers == NULL) {
        goto nomem;
    }
    json_object_set_new(obj, "method", json_string(req->msg.method));
    json_object_set_new(obj, "uri", json_stringn(req->msg.target, req->msg.target_len));
    for (unsigned i = 0; i < req->msg.n_headers; i++) {
        const struct jinn_http_header *h = &req->msg.headers[i];
        json_t *vals, *val;
        /* jinn's own relay headers only, by their exact names (a prefix
         * test dropped "X", "X-Jinn", ...). Longer names are dropped too.
         * The caller's credential never reaches the guest: a function acts
         * with its deployer's scope, and its code must not be able to read
         * (and replay) the bearer token of whoever invokes it. */
        if (h->name_len >= sizeof key || header_is(h, RELAY_HEADER) ||
            header_is(h, CLUSTER_HEADER) || header_is(h, "Authorization") ||
            header_is(h, "X-Jinn-Forwarded-By")) {
            continue;
        }
        canonical_key(key, h->name, h->name_len);
        val = json_stringn(h->value, h->value_len);
        if (val == NULL) {
            json_decref(obj);
            json_decref(headers);
            reply_error(req, 400, "bad_request",
                        "a header value is not UTF-8 (the request JSON carries text only)",
                        inv->trace, NULL);
            return false;
        }
        vals = json_object_get(headers, key);
        if (vals == NULL) {
            vals = json_array();
            json_object_set_new(headers, key, vals);
        }
        json_array_append_new(vals, val);
    }
    json_object_set_new(obj, "headers", headers);
    headers = NULL;
    body = json_stringn(req->body != NULL ? req->body : "", req->body_len);
    if (body == NULL) {
        json_decref(obj);
        reply_error(req, 400, "bad_request",
                    "the body is not UTF-8 text: the request JSON's body is a string "
                    "(encode binary data, e.g. base64)",
                    inv->trace, NULL);
        return false;
    }
    json_object_set_new(obj, "body", body);
    json_object_set_new(obj, "trace_id", json_string(inv->trace));
    size = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (size == 0) {
        goto nomem;
    }
    if (size > JINN_SBX_STDIN_MAX) {
        json_decref(obj);
        reply_error(req, 413, "body_too_large",
                    "the request JSON would exceed the function's input limit (16 MiB)",
                    inv->trace, NULL);
        return false;
    }
    jinn_wbuf_init(&inv->payload);
    if (!jinn_wbuf_reserve(&inv->payload, inv->v->prefix.len + 4 + size)) {
        goto nomem;
    }
    jinn_wbuf_put_raw(&inv->payload, inv->v->prefix.data, inv->v->prefix.len);
    jinn_wbuf_put_u32(&inv->payload, (uint32_t)size);
    if (json_dumpb(obj, (char *)inv->payload.data + inv->payload.len, size, JSON_COMPACT) !=
        size) {
        goto nomem;
    }
    inv->payload.len += size;
    json_decref(obj);
    return true;

nomem:
    json_decref(obj);
    json_decref(headers);
    jinn_wbuf_free(&inv->payload);
    reply_error(req, 503, "out_of_memory", jinn_error_message(JINN_ENOMEM), inv->trace, NULL);
    return false;
}

/* Starts inv (its payload built) on version v: 0, JINN_EBUSY (the bytes
 * waiting for functions, or the pool's queue, are full) or another error
 * of jinn_wasm_pool_submit (the version is being replaced). On an error
 * nothing is left running and inv is still the caller's. */
static int inv_submit(struct jinn_wasm_runner *r, struct inv *inv)
{
    struct version *v = inv->v;
    int rv;
    if (r->inflight_bytes + inv->payload.len > INFLIGHT_BYTES_MAX) {
        return JINN_EBUSY;
    }
    r->inflight_bytes += inv->payload.len;
    inv->job.ops = &inv_ops;
    inv->job.data = inv;
    inv->job.id = ++r->next_id;
    inv->job.invoke = inv->payload.data;
    inv->job.invoke_len = inv->payload.len;
    if (r->host != NULL) {
        inv->hinv =
            jinn_wasm_inv_begin(r->host, v->fs->name, &v->settings, inv->job.id, inv->trace);
    }
    rv = jinn_wasm_pool_submit(v->pool, &inv->job);
    if (rv != 0) {
        if (inv->hinv != NULL) {
            jinn_wasm_inv_end(inv->hinv);
            inv->hinv = NULL;
        }
        r->inflight_bytes -= inv->payload.len;
    }
    return rv;
}

static void run_here(struct jinn_wasm_runner *r, struct jinn_http_request *req,
                     struct version *v, const char *trace)
{
    struct inv *inv = jinn_calloc(1, sizeof *inv);
    int rv;
    if (inv == NULL) {
        reply_error(req, 503, "out_of_memory", jinn_error_message(JINN_ENOMEM), trace, NULL);
        return;
    }
    inv->r = r;
    inv->v = v;
    inv->req = req;
    snprintf(inv->trace, sizeof inv->trace, "%s", trace);
    v->inflight++;
    if (!build_request(r, inv)) {
        record(v->fs, K_BAD_REQUEST, 0);
        jinn_wbuf_free(&inv->payload);
        jinn_free(inv);
        v->inflight--;
        return;
    }
    rv = inv_submit(r, inv);
    if (rv != 0) {
        record(v->fs, K_BUSY, 0);
        reply_error(req, 503, "busy",
                    rv == JINN_EBUSY &&
                            r->inflight_bytes + inv->payload.len > INFLIGHT_BYTES_MAX
                        ? "too many request bytes are waiting for functions on this node"
                    : rv == JINN_EBUSY ? "too many invocations of this function are waiting "
                                         "on this node"
                                       : "this function version is being replaced; retry",
                    inv->trace, NULL);
        jinn_wbuf_free(&inv->payload);
        jinn_free(inv);
        v->inflight--;
        version_maybe_free(v);
    }
}

/* The version a job of function name runs on here: the active one when
 * its pool is up, else the previous one's warm pool while the new one
 * compiles (as for HTTP calls: a redeploy is no outage); NULL when none. */
static struct version *job_version(struct jinn_wasm_runner *r, const char *name)
{
    struct fnstat *fs = fnstat_find(r, name);
    if (fs == NULL || fs->active == NULL) {
        return NULL; /* deleted */
    }
    if (fs->active->pool != NULL && !fs->active->draining) {
        return fs->active;
    }
    if (fs->fallback != NULL && fs->fallback->pool != NULL && !fs->fallback->draining) {
        return fs->fallback;
    }
    return NULL;
}

int jinn_wasm_runner_run(struct jinn_wasm_runner *r, const char *name, const void *request,
                         size_t request_len, const char *trace, jinn_wasm_run_cb cb, void *data)
{
    struct version *v;
    struct inv *inv;
    int rv;

    if (r == NULL || r->stopping) {
        return JINN_ESHUTDOWN;
    }
    if (request_len > JINN_SBX_STDIN_MAX || request_len > UINT32_MAX) {
        return JINN_ETOOBIG;
    }
    if (jinn_fns_generation(registry(r)) != r->generation) {
        sync_now(r);
    }
    v = job_version(r, name);
    if (v == NULL) {
        return JINN_ENOTFOUND;
    }
    inv = jinn_calloc(1, sizeof *inv);
    if (inv == NULL) {
        return JINN_ENOMEM;
    }
    inv->r = r;
    inv->v = v;
    inv->cb = cb;
    inv->cb_data = data;
    snprintf(inv->trace, sizeof inv->trace, "%s", trace != NULL ? trace : "");
    jinn_wbuf_init(&inv->payload);
    if (!jinn_wbuf_reserve(&inv->payload, v->prefix.len + 4 + request_len)) {
        jinn_free(inv);
        return JINN_ENOMEM;
    }
    jinn_wbuf_put_raw(&inv->payload, v->prefix.data, v->prefix.len);
    jinn_wbuf_put_u32(&inv->payload, (uint32_t)request_len);
    jinn_wbuf_put_raw(&inv->payload, request, request_len);
    v->inflight++;
    rv = inv_submit(r, inv);
    if (rv != 0) {
        jinn_wbuf_free(&inv->payload);
        jinn_free(inv);
        v->inflight--;
        version_maybe_free(v);
        return rv == JINN_EBUSY ? JINN_EBUSY : JINN_ENOTFOUND;
    }
    return 0;
}

bool jinn_wasm_runner_ready(struct jinn_wasm_runner *r, const char *name)
{
    if (r == NULL || r->stopping) {
        return false;
    }
    if (jinn_fns_generation(registry(r)) != r->generation) {
        sync_now(r);
    }
    return job_version(r, name) != NULL;
}

bool jinn_wasm_runner_can_take(struct jinn_wasm_runner *r, const char *name)
{
    struct jinn_wasm_pool_stats st;
    struct version *v;
    if (!jinn_wasm_runner_ready(r, name)) {
        return false;
    }
    v = job_version(r, name);
    jinn_wasm_pool_stats(v->pool, &st);
    /* Room for a job's request (at most JINN_SBX_STDIN_MAX bytes). */
    return st.queued < JINN_WASM_QUEUE_MAX &&
           r->inflight_bytes + JINN_SBX_STDIN_MAX <= INFLIGHT_BYTES_MAX;
}

/* ---- relays ------------------------------------------------------------------------- */

struct relay {
    struct jinn_wasm_runner *r;
    struct jinn_http_request *req;
    /* No fnstat pointer: a purge applied while the relay is in flight frees
     * it; the stats are looked up by name when the relay ends. */
    char name[JINN_FN_NAME_MAX + 1];
    char urls[JINN_CONFIG_MAX_PEERS][320];
    unsigned n_urls, next;
    char *headers;
    uint64_t timeout_ms;
    char trace[TRACE_MAX + 1];
    char local_why[256]; /* why this node does not run it */
    int local_status;
};

static bool hop_by_hop(const char *name, size_t len)
{
    static const char *const names[] = {
        "connection", "keep-alive", "transfer-encoding", "content-length", "host",
        "te",         "upgrade",    "proxy-connection",  "expect",         "content-type"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (len == strlen(names[i]) && strncasecmp(name, names[i], len) == 0) {
            return true;
        }
    }
    return false;
}

static void relay_next(struct relay *rl);

static void relay_finish_not_ready(struct relay *rl)
{
    jinn_http_add_header(rl->req, NOT_READY_HEADER, "1");
    reply_error(rl->req, rl->local_status,
                rl->local_status == 503 ? "function_not_ready" : "compile_failed",
                rl->local_why, rl->trace, NULL);
    struct fnstat *fs = fnstat_find(rl->r, rl->name);
    if (fs != NULL) {
        record(fs, K_NOT_READY, 0);
    }
    jinn_free(rl->headers);
    jinn_free(rl);
}

static void relayed(void *data, int code, const struct jinn_http_msg *head, const char *body,
                    size_t body_len)
{
    struct relay *rl = data;
    struct jinn_http_request *req = rl->req;
    char name[128], value[1024], ctype[256] = "application/octet-stream";

    if (code == JINN_EFORWARD ||
        (code == JINN_OK && jinn_http_header_find(head, NOT_READY_HEADER) != NULL)) {
        relay_next(rl); /* never reached the function there: try another node */
        return;
    }
    if (code != JINN_OK) {
        /* Sent, but no answer: it may have run; running it again elsewhere
         * could run it twice. */
        reply_error(req, 502, "relay_failed",
                    "relayed to another node (this node's copy is not ready) and got no "
                    "answer; the function may have run",
                    rl->trace, NULL);
        jinn_free(rl->headers);
        jinn_free(rl);
        return;
    }
    for (unsigned i = 0; i < head->n_headers; i++) {
        const struct jinn_http_header *h = &head->headers[i];
        if (h->name_len >= sizeof name || h->value_len >= sizeof value) {
            continue;
        }
        if (h->name_len == 12 && strncasecmp(h->name, "content-type", 12) == 0 &&
            h->value_len < sizeof ctype) {
            memcpy(ctype, h->value, h->value_len);
            ctype[h->value_len] = '\0';
            continue;
        }
        if (hop_by_hop(h->name, h->name_len)) {
            continue;
        }
        memcpy(name, h->name, h->name_len);
        name[h->name_len] = '\0';
        memcpy(value, h->value, h->value_len);
        value[h->value_len] = '\0';
        jinn_http_add_header(req, name, value);
    }
    struct fnstat *fs = fnstat_find(rl->r, rl->name);
    if (fs != NULL) {
        fs->relayed++;
    }
    jinn_http_reply(req, head->status, ctype, body, is_head(req) ? 0 : body_len);
    jinn_free(rl->headers);
    jinn_free(rl);
}

static void relay_next(struct relay *rl)
{
    while (rl->next < rl->n_urls) {
        const char *url = rl->urls[rl->next++];
        int rv = jinn_fetch(rl->r->loop, url, rl->req->msg.method, rl->req->msg.target,
                            rl->req->msg.target_len, rl->headers, rl->req->body,
                            rl->req->body_len, rl->timeout_ms, relayed, rl);
        if (rv == 0) {
            return;
        }
    }
    relay_finish_not_ready(rl);
}

static void relay(struct jinn_wasm_runner *r, struct jinn_http_request *req,
                  const struct jinn_fn *fn, const char *trace, int status,
                  const char *why)
{
    struct jinn_node_status st;
    struct jinn_wbuf h;
    struct relay *rl = jinn_calloc(1, sizeof *rl);
    unsigned n;

    if (rl == NULL) {
        reply_error(req, 503, "out_of_memory", jinn_error_message(JINN_ENOMEM), trace, NULL);
        return;
    }
    rl->r = r;
    rl->req = req;
    rl->local_status = status;
    snprintf(rl->name, sizeof rl->name, "%s", fn->name);
    snprintf(rl->trace, sizeof rl->trace, "%s", trace);
    snprintf(rl->local_why, sizeof rl->local_why, "%s", why);
    rl->timeout_ms = 2 * fn->active->settings.timeout_ms + RELAY_GRACE_MS;
    if (jinn_http_header_find(&req->msg, RELAY_HEADER) != NULL) {
        relay_finish_not_ready(rl); /* one hop: relays never chain */
        return;
    }
    jinn_node_status(r->api->node, &st);
    n = st.n_members;
    for (unsigned k = 0; k < n; k++) {
        const struct jinn_member *m = &st.members[(k + r->relay_rr) % n];
        if (m->id != st.id && m->api != NULL && m->api[0] != '\0' &&
            strlen(m->api) < sizeof rl->urls[0]) {
            snprintf(rl->urls[rl->n_urls++], sizeof rl->urls[0], "%s", m->api);
        }
    }
    r->relay_rr++;
    jinn_wbuf_init(&h);
    for (unsigned i = 0; i < req->msg.n_headers; i++) {
        const struct jinn_http_header *hd = &req->msg.headers[i];
        if (!hop_by_hop(hd->name, hd->name_len) ||
            (hd->name_len == 12 && strncasecmp(hd->name, "content-type", 12) == 0)) {
            jinn_wbuf_printf(&h, "%.*s: %.*s\r\n", (int)hd->name_len, hd->name,
                             (int)hd->value_len, hd->value);
        }
    }
    if (jinn_http_header_find(&req->msg, "x-request-id") == NULL) {
        jinn_wbuf_printf(&h, "X-Request-Id: %s\r\n", trace);
    }
    jinn_wbuf_printf(&h, "%s: %s\r\n%s: %016" PRIx64 "\r\n", RELAY_HEADER,
                     r->api->cfg->server_name, CLUSTER_HEADER, st.cluster_id);
    jinn_wbuf_put_u8(&h, 0);
    if (h.failed) {
        jinn_wbuf_free(&h);
        jinn_free(rl);
        reply_error(req, 503, "out_of_memory", jinn_error_message(JINN_ENOMEM), trace, NULL);
        return;
    }
    rl->headers = (char *)h.data;
    relay_next(rl);
}

void jinn_wasm_runner_invoke(struct jinn_wasm_runner *r, struct jinn_http_request *req,
                             const struct jinn_fn *fn)
{
    char trace[TRACE_MAX + 1];
    struct fnstat *fs;
    struct version *v;
    char why[256];

    trace_id(r, req, trace);
    if (r->stopping) {
        reply_error(req, 503, "shutting_down", jinn_error_message(JINN_ESHUTDOWN), trace, NULL);
        return;
    }
    if (jinn_fns_generation(registry(r)) != r->generation) {
        sync_now(r); /* a deploy applied this loop turn is seen at once */
    }
    fs = fnstat_find(r, fn->name);
    v = fs != NULL ? fs->active : NULL;
    if (v != NULL && v->version == fn->active->version && v->pool != NULL) {
        run_here(r, req, v, trace);
        return;
    }
    if (fs != NULL && fs->fallback != NULL && fs->fallback->pool != NULL &&
        !fs->fallback->draining) {
        run_here(r, req, fs->fallback, trace); /* the new version is not ready here yet */
        return;
    }
    if (v != NULL && v->c->state == JINN_FN_FAILED) {
        snprintf(why, sizeof why,
                 "compiling the module failed on this node and no other "
                 "node could run it: %.180s",
                 v->c->message != NULL ? v->c->message : "?");
        relay(r, req, fn, trace, 500, why);
        return;
    }
    snprintf(why, sizeof why,
             "the function is still compiling on this node and no other "
             "node has it ready; retry shortly");
    relay(r, req, fn, trace, 503, why);
}

/* ---- the rest of the interface -------------------------------------------------------- */

/* host.c's lines about an invocation (denials, fenced-out writes) join
 * the function's log. */
static void host_log(void *data, const char *fn_name, const char *trace, const char *line)
{
    struct jinn_wasm_runner *r = data;
    struct fnstat *fs = fnstat_find(r, fn_name);
    if (fs != NULL) {
        fn_log(r, fs, trace, 1, line, strlen(line));
    }
}

struct jinn_wasm_runner *jinn_wasm_runner_create(struct jinn_api *api)
{
    struct jinn_wasm_runner *r = jinn_calloc(1, sizeof *r);
    const char *delay;
    if (r == NULL) {
        return NULL;
    }
    r->api = api;
    r->loop = api->loop;
    jinn_tree_init(&r->stats_by_name, stat_cmp);
    r->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
    if (r->rng == 0) {
        r->rng = 1;
    }
    /* TEST ONLY, read once: compiles start this much later (relay tests). */
    delay = getenv("JINN_TEST_COMPILE_DELAY_MS");
    if (delay != NULL && *delay != '\0') {
        char *end;
        unsigned long long ms = strtoull(delay, &end, 10);
        if (*end == '\0' && ms <= 600000) {
            r->compile_delay_ms = ms;
            jinn_warn("TEST ONLY: function compiles start %llu ms late "
                      "(JINN_TEST_COMPILE_DELAY_MS)",
                      ms);
        }
    }
    r->host = jinn_wasm_host_create(api);
    if (r->host != NULL) {
        jinn_wasm_host_set_log(r->host, host_log, r);
    }
    uv_timer_init(r->loop, &r->tick);
    uv_timer_init(r->loop, &r->soon);
    r->tick.data = r;
    r->soon.data = r;
    r->timers_open = 2;
    uv_timer_start(&r->tick, tick_cb, TICK_MS, TICK_MS);
    uv_timer_start(&r->soon, tick_cb, 0, 0);
    return r;
}

void jinn_wasm_runner_applied(struct jinn_wasm_runner *r)
{
    if (r == NULL || r->stopping || jinn_fns_generation(registry(r)) == r->generation) {
        return;
    }
    uv_timer_start(&r->soon, tick_cb, 0, 0);
}

static void stop_pool_done(void *data)
{
    struct version *v = data;
    pool_gone(v);
}

void jinn_wasm_runner_stop(struct jinn_wasm_runner *r, void (*cb)(void *data), void *data)
{
    if (r->stopping) {
        return;
    }
    r->stopping = true;
    r->stopped = cb;
    r->stopped_data = data;
    jinn_wasm_compile_shutdown();
    for (struct compiled *c = r->compiled; c != NULL; c = c->next) {
        c->in_flight = false; /* its callback never runs now */
    }
    uv_close((uv_handle_t *)&r->tick, timer_closed);
    uv_close((uv_handle_t *)&r->soon, timer_closed);
    for (struct version *v = r->versions; v != NULL; v = v->next) {
        v->wanted = false;
        if (v->pool != NULL) {
            r->pools_stopping++;
        }
    }
    for (struct version *v = r->versions, *next; v != NULL; v = next) {
        next = v->next;
        if (v->pool != NULL) {
            jinn_wasm_pool_destroy(v->pool, stop_pool_done, v);
        } else {
            version_maybe_free(v);
        }
    }
    /* After the pools: destroying them ended every invocation (each called
     * jinn_wasm_inv_end), so the host has none left to end. */
    if (r->host != NULL) {
        jinn_wasm_host_destroy(r->host);
        r->host = NULL;
    }
}

void jinn_wasm_runner_destroy(struct jinn_wasm_runner *r)
{
    if (r == NULL) {
        return;
    }
    /* Everything below is gone once stop finished; whatever is left (a
     * stop that could not finish) is freed here without touching handles. */
    while (r->versions != NULL) {
        version_free(r->versions);
    }
    jinn_tree_init(&r->stats_by_name, stat_cmp); /* its nodes are freed below */
    while (r->stats != NULL) {
        struct fnstat *fs = r->stats;
        r->stats = fs->next;
        fnstat_free_log(fs);
        jinn_free(fs);
    }
    while (r->compiled != NULL) {
        struct compiled *c = r->compiled;
        r->compiled = c->next;
        jinn_free(c->message);
        jinn_free(c->so_path);
        jinn_free(c);
    }
    jinn_free(r);
}

enum jinn_fn_state jinn_wasm_runner_state(const struct jinn_wasm_runner *r,
                                          const uint8_t sha[32], const char **message)
{
    if (message != NULL) {
        *message = NULL;
    }
    for (const struct compiled *c = r->compiled; c != NULL; c = c->next) {
        if (memcmp(c->sha, sha, 32) == 0) {
            if (message != NULL) {
                *message = c->message;
            }
            return c->state;
        }
    }
    return JINN_FN_UNKNOWN;
}

static const char *state_name(enum jinn_fn_state s)
{
    switch (s) {
    case JINN_FN_COMPILING:
        return "compiling";
    case JINN_FN_READY:
        return "ready";
    case JINN_FN_FAILED:
        return "failed";
    default:
        return "unknown";
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static json_t *local_json(const struct jinn_wasm_runner *r, const struct fnstat *fs,
                          bool quantiles)
{
    struct jinn_wasm_pool_stats ps;
    const struct version *v = fs->active;
    json_t *obj, *errors = json_object();
    uint32_t sorted[RECENT_MAX];
    double p50 = 0, p99 = 0;
    (void)r;

    memset(&ps, 0, sizeof ps);
    if (v != NULL && v->pool != NULL) {
        jinn_wasm_pool_stats(v->pool, &ps);
    }
    for (int k = 0; k < KIND_COUNT && errors != NULL; k++) {
        if (fs->errors[k] > 0) {
            json_object_set_new(errors, kind_names[k], json_integer((json_int_t)fs->errors[k]));
        }
    }
    if (quantiles && fs->recent_n > 0) {
        memcpy(sorted, fs->recent, fs->recent_n * sizeof sorted[0]);
        qsort(sorted, fs->recent_n, sizeof sorted[0], cmp_u32);
        p50 = sorted[(fs->recent_n - 1) / 2] / 1000.0;
        p99 = sorted[(fs->recent_n - 1) * 99 / 100] / 1000.0;
    }
    obj = json_pack(
        "{s:s, s:s?, s:I, s:I, s:{s:i, s:i, s:i, s:i}, s:I, s:o, s:{s:f, s:f},"
        " s:I, s:I}",
        "state", v != NULL ? state_name(v->c->state) : "none", "message",
        v != NULL ? v->c->message : NULL, "version", (json_int_t)(v != NULL ? v->version : 0),
        "compile_ms", (json_int_t)(v != NULL ? v->c->compile_ms : 0), "pool", "size", ps.size,
        "ready", ps.ready, "busy", ps.busy, "queued", ps.queued, "invocations",
        (json_int_t)fs->invocations, "errors", errors != NULL ? errors : json_object(),
        "duration_ms", "p50", p50, "p99", p99, "relayed", (json_int_t)fs->relayed,
        "log_lines_suppressed", (json_int_t)fs->log_suppressed);
    if (obj != NULL && fs->fallback != NULL) {
        /* the active version is not ready (or failed) here: this one serves */
        json_object_set_new(obj, "serving_version", json_integer((json_int_t)fs->fallback->version));
    }
    return obj;
}

void jinn_wasm_runner_describe(const struct jinn_wasm_runner *r, const char *name, json_t *obj)
{
    const struct fnstat *fs = r != NULL ? fnstat_find(r, name) : NULL;
    json_t *local;
    if (fs == NULL) {
        local = json_pack("{s:s}", "state", "unknown");
    } else {
        local = local_json(r, fs, true);
    }
    if (local != NULL && r != NULL) {
        jinn_job_pools_describe(r->api->jobs, name, local);
    }
    if (local != NULL) {
        json_object_set_new(obj, "local", local);
    }
}

void jinn_wasm_runner_status(const struct jinn_wasm_runner *r, json_t *obj)
{
    json_t *fns = json_object();
    if (fns == NULL) {
        return;
    }
    unsigned listed = 0;
    /* Bounded work on the loop: no quantiles here (GET /v1/functions/NAME
     * has them), and at most METRICS_FNS_MAX functions. */
    for (const struct fnstat *fs = r != NULL ? r->stats : NULL;
         fs != NULL && listed < METRICS_FNS_MAX; fs = fs->next, listed++) {
        json_t *l = local_json(r, fs, false);
        if (l != NULL) {
            json_object_del(l, "duration_ms");
            json_object_set_new(fns, fs->name, l);
        }
    }
    json_object_set_new(obj, "functions", fns);
}

json_t *jinn_wasm_runner_logs(const struct jinn_wasm_runner *r, const char *name)
{
    const struct fnstat *fs = fnstat_find(r, name);
    json_t *arr;
    if (fs == NULL || (arr = json_array()) == NULL) {
        return NULL;
    }
    for (const struct logline *l = fs->log_head; l != NULL; l = l->next) {
        json_array_append_new(arr,
                              json_pack("{s:I, s:s, s:s, s:s}", "time_ms",
                                        (json_int_t)l->time_ms, "trace_id", l->trace, "level",
                                        l->level < 0    ? "stderr"
                                        : l->level == 3 ? "error"
                                                        : "info",
                                        "line", l->line));
    }
    return arr;
}

void jinn_wasm_runner_metrics(const struct jinn_wasm_runner *r, struct jinn_wbuf *w)
{
    const struct fnstat *end = NULL; /* series for the first METRICS_FNS_MAX only */
    unsigned n = 0;
    if (r == NULL) {
        return;
    }
    for (end = r->stats; end != NULL && n < METRICS_FNS_MAX; end = end->next) {
        n++;
    }
    jinn_wbuf_printf(w,
                     "# HELP jinn_fn_metrics_functions_max Functions given per-function "
                     "series here.\n# TYPE jinn_fn_metrics_functions_max gauge\n"
                     "jinn_fn_metrics_functions_max %u\n",
                     METRICS_FNS_MAX);
    jinn_wbuf_printf(w,
                     "# HELP jinn_fn_inflight_bytes Request JSON held by invocations "
                     "queued or running here.\n# TYPE jinn_fn_inflight_bytes gauge\n"
                     "jinn_fn_inflight_bytes %" PRIu64 "\n",
                     r->inflight_bytes);
    jinn_wbuf_printf(w, "# HELP jinn_fn_invocations_total Function invocations run or "
                        "refused on this node.\n# TYPE jinn_fn_invocations_total counter\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        jinn_wbuf_printf(w, "jinn_fn_invocations_total{function=\"%s\"} %" PRIu64 "\n",
                         fs->name, fs->invocations);
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_errors_total Failed invocations by kind.\n"
                        "# TYPE jinn_fn_errors_total counter\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        for (int k = 0; k < KIND_COUNT; k++) {
            if (fs->errors[k] > 0) {
                jinn_wbuf_printf(
                    w, "jinn_fn_errors_total{function=\"%s\",kind=\"%s\"} %" PRIu64 "\n",
                    fs->name, kind_names[k], fs->errors[k]);
            }
        }
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_relayed_total Invocations relayed to another node "
                        "(this node's copy was not ready).\n"
                        "# TYPE jinn_fn_relayed_total counter\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        jinn_wbuf_printf(w, "jinn_fn_relayed_total{function=\"%s\"} %" PRIu64 "\n", fs->name,
                         fs->relayed);
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_duration_ms Invocation time (queue + run).\n"
                        "# TYPE jinn_fn_duration_ms histogram\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        uint64_t cum = 0;
        for (unsigned b = 0; b <= NBOUNDS; b++) {
            cum += fs->buckets[b];
            if (b < NBOUNDS) {
                jinn_wbuf_printf(w,
                                 "jinn_fn_duration_ms_bucket{function=\"%s\",le=\"%" PRIu64
                                 "\"} %" PRIu64 "\n",
                                 fs->name, bounds_ms[b], cum);
            } else {
                jinn_wbuf_printf(
                    w, "jinn_fn_duration_ms_bucket{function=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                    fs->name, cum);
            }
        }
        jinn_wbuf_printf(w,
                         "jinn_fn_duration_ms_sum{function=\"%s\"} %.3f\n"
                         "jinn_fn_duration_ms_count{function=\"%s\"} %" PRIu64 "\n",
                         fs->name, (double)fs->sum_us / 1000.0, fs->name, cum);
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_pool Sandboxes of the active version by state.\n"
                        "# TYPE jinn_fn_pool gauge\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        struct jinn_wasm_pool_stats ps;
        memset(&ps, 0, sizeof ps);
        if (fs->active != NULL && fs->active->pool != NULL) {
            jinn_wasm_pool_stats(fs->active->pool, &ps);
        }
        jinn_wbuf_printf(w,
                         "jinn_fn_pool{function=\"%s\",state=\"size\"} %u\n"
                         "jinn_fn_pool{function=\"%s\",state=\"idle\"} %u\n"
                         "jinn_fn_pool{function=\"%s\",state=\"busy\"} %u\n"
                         "jinn_fn_pool{function=\"%s\",state=\"queued\"} %u\n",
                         fs->name, ps.size, fs->name, ps.ready, fs->name, ps.busy, fs->name,
                         ps.queued);
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_compile_ms Time this node took to compile the active "
                        "version (0: cache hit or not done).\n"
                        "# TYPE jinn_fn_compile_ms gauge\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        jinn_wbuf_printf(w, "jinn_fn_compile_ms{function=\"%s\"} %" PRIu64 "\n", fs->name,
                         fs->active != NULL ? fs->active->c->compile_ms : 0);
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_ready 1 when the active version is compiled and "
                        "served here.\n# TYPE jinn_fn_ready gauge\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        jinn_wbuf_printf(w, "jinn_fn_ready{function=\"%s\"} %d\n", fs->name,
                         fs->active != NULL && fs->active->c->state == JINN_FN_READY);
    }
    jinn_wbuf_printf(w, "# HELP jinn_fn_log_lines_suppressed_total Function log lines kept "
                        "out of the node's log by the rate limit.\n"
                        "# TYPE jinn_fn_log_lines_suppressed_total counter\n");
    for (const struct fnstat *fs = r->stats; fs != end; fs = fs->next) {
        jinn_wbuf_printf(w, "jinn_fn_log_lines_suppressed_total{function=\"%s\"} %" PRIu64 "\n",
                         fs->name, fs->log_suppressed);
    }
    if (r->host != NULL) {
        jinn_wasm_host_metrics(r->host, w);
    }
}
