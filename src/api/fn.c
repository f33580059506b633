/* fn.c - the function registry over HTTP (docs/api.md, "Functions").
 *
 *   PUT    /v1/functions/{name}            deploy: body = module, settings
 *                                          as query parameters
 *   GET    /v1/functions                   list (paged: after, limit)
 *   GET    /v1/functions/{name}            versions, settings, this node's state
 *   DELETE /v1/functions/{name}[?purge=1]  no active version (or forget it)
 *   POST   /v1/functions/{name}/rollback[?version=N]
 *
 * A deploy is checked before it is proposed, on the leader: the name and
 * settings (the same parser apply uses), jinn_wasm_inspect (imports against
 * abi.h, _start, memory), then wabt's wasm-validate (function bodies), run
 * as a child process off the loop with the module in a temporary file under
 * data_dir, bounded in time and output. Apply checks again, deterministically,
 * what does not need the tool. Module bodies may be larger than max_body:
 * this route alone takes up to JINN_FN_MODULE_MAX (jinn_api_body_limit).
 *
 * What apply checks against the state (route conflicts, the function and
 * module-byte limits: jinn_fns_deploy_check) is checked here too, after a
 * linearized read and again just before proposing, so that a deploy
 * refused at apply (a 16 MiB entry on every replica for nothing) is only
 * ever a race with a concurrent change. A deploy identical to the active
 * version is answered "unchanged" after the linearized read, without a
 * log entry: the state it compares with is then the committed one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "api/api.h"
#include "config.h"
#include "error.h"
#include "fsm/fn.h"
#include "fsm/jobs.h"
#include "log.h"
#include "sha256.h"
#include "wasm/module.h"
#include "wasm/runner.h"

#define VALIDATE_TIMEOUT_MS 10000
#define VALIDATE_OUTPUT_MAX 2048 /* bytes of the tool's output kept for the reply */
/* Deploys a leader admits at once, from the body's arrival to the answer
 * (validation, then the log): each is a log entry of up to 16 MiB on every
 * replica, so they go one at a time; another meanwhile is refused with
 * 503 busy and Retry-After. */
#define DEPLOYS_IN_FLIGHT_MAX 1
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define PREFIX "/v1/functions/"

struct jinn_fn_validation {
    struct jinn_api *api;
    struct jinn_http_request *req; /* NULL once answered (shutdown) */
    struct jinn_fn_validation *prev, *next;
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timer;
    uv_work_t work;    /* the module's sha256 and temporary file, off the loop */
    uint8_t sha[32];
    int work_rv, work_errno;
    int open_handles;
    bool spawned, exited, timed_out;
    int64_t exit_status;
    int term_signal;
    char name[JINN_FN_NAME_MAX + 1];
    char route[JINN_FN_ROUTE_MAX + 1];
    struct jinn_wbuf settings; /* canonical JSON */
    bool deploy2;              /* settings use workers/cron: FN_DEPLOY2 */
    struct jinn_api_fn_scope scope; /* what the deployer's credential allows */
    struct jinn_wbuf output;   /* the tool's stdout and stderr, bounded */
    char path[4096];
};

uint64_t jinn_api_body_limit(const struct jinn_http_msg *msg)
{
    size_t plen = sizeof PREFIX - 1, end;
    if (strcmp(msg->method, "PUT") != 0 || msg->target_len <= plen ||
        memcmp(msg->target, PREFIX, plen) != 0) {
        return 0;
    }
    end = plen;
    while (end < msg->target_len && msg->target[end] != '?' && msg->target[end] != '/') {
        end++;
    }
    if (end == plen || (end < msg->target_len && msg->target[end] == '/')) {
        return 0; /* not /v1/functions/{name} */
    }
    return JINN_FN_MODULE_MAX;
}

/* The {name} of a /v1/functions/{name}[/...] path, decoded and checked;
 * false (and a 400 sent) when it is not a function name. */
static bool name_from_path(struct jinn_http_request *req, char name[JINN_FN_NAME_MAX + 1],
                           bool reply)
{
    size_t plen = sizeof PREFIX - 1, end = plen;
    char buf[JINN_ROUTE_ARG_MAX];
    long n = -1;
    while (end < req->path_len && req->path[end] != '/') {
        end++;
    }
    if (req->path_len > plen) {
        n = jinn_http_unescape(req->path + plen, end - plen, buf, sizeof buf, false);
    }
    if (n <= 0 || !jinn_fn_name_valid(buf, (size_t)n)) {
        if (reply) {
            jinn_http_reply_error(req, JINN_EINVAL,
                                  "function names are 1-64 of a-z 0-9 _ -, starting with a "
                                  "letter or digit");
        }
        return false;
    }
    memcpy(name, buf, (size_t)n + 1);
    return true;
}

static void hex(const uint8_t sha[32], char out[65]) { jinn_sha256_hex(sha, out); }

/* ---- settings from the query string ---------------------------------------- */

static int list_add(char ***list, unsigned *n, const char *value)
{
    char **grown;
    if (*n >= JINN_FN_LIST_MAX) {
        return JINN_EINVAL;
    }
    grown = jinn_realloc(*list, (*n + 1) * sizeof **list);
    if (grown == NULL) {
        return JINN_ENOMEM;
    }
    *list = grown;
    grown[*n] = jinn_strdup(value);
    if (grown[*n] == NULL) {
        return JINN_ENOMEM;
    }
    (*n)++;
    return 0;
}

/* Fills s from the query (defaults for what is absent). 0, or an error
 * with msg set. */
static int settings_from_query(const char *q, size_t qlen, struct jinn_fn_settings *s,
                               char *msg, size_t msglen)
{
    static const char *const singles[] = {"route", "timeout", "memory", "pool",
                                          "db",    "ns",      "workers", "cron"};
    unsigned seen = 0;
    size_t i = 0;

    jinn_fn_settings_defaults(s);
    while (i < qlen) {
        size_t end = i, eq;
        char key[32], *val;
        long kn, vn;
        int rv = 0;
        while (end < qlen && q[end] != '&') {
            end++;
        }
        eq = i;
        while (eq < end && q[eq] != '=') {
            eq++;
        }
        if (end == i) {
            i = end + 1;
            continue;
        }
        kn = jinn_http_unescape(q + i, eq - i, key, sizeof key, true);
        if (kn <= 0) {
            snprintf(msg, msglen, "malformed query parameter");
            return JINN_EINVAL;
        }
        val = jinn_malloc(JINN_FN_ENTRY_MAX + 2);
        if (val == NULL) {
            return JINN_ENOMEM;
        }
        vn = eq < end ? jinn_http_unescape(q + eq + 1, end - eq - 1, val, JINN_FN_ENTRY_MAX + 1,
                                           true)
                      : 0;
        if (eq == end) {
            val[0] = '\0';
        }
        i = end + 1;
        if (vn >= 0 && !jinn_utf8_valid(val, (size_t)vn)) {
            snprintf(msg, msglen, "query parameter %s: not UTF-8", key);
            jinn_free(val);
            return JINN_EINVAL;
        }
        if (vn < 0 || strlen(val) != (size_t)vn) {
            snprintf(msg, msglen, "query parameter %s: malformed, too long (over %u bytes) or "
                                  "holding a NUL",
                     key, JINN_FN_ENTRY_MAX);
            jinn_free(val);
            return JINN_EINVAL;
        }
        for (unsigned k = 0; k < sizeof singles / sizeof singles[0]; k++) {
            if (strcmp(key, singles[k]) == 0) {
                if (seen & (1u << k)) {
                    snprintf(msg, msglen, "query parameter %s given twice", key);
                    rv = JINN_EINVAL;
                }
                seen |= 1u << k;
            }
        }
        if (rv != 0) {
            /* reported above */
        } else if (strcmp(key, "route") == 0) {
            if (strlen(val) > JINN_FN_ROUTE_MAX) {
                snprintf(msg, msglen, "route: at most %u bytes", JINN_FN_ROUTE_MAX);
                rv = JINN_EINVAL;
            } else {
                snprintf(s->route, sizeof s->route, "%s", val);
            }
        } else if (strcmp(key, "timeout") == 0) {
            if (jinn_parse_duration(val, &s->timeout_ms) != 0) {
                snprintf(msg, msglen, "timeout: a duration like 500ms, 2s or 1m");
                rv = JINN_EINVAL;
            }
        } else if (strcmp(key, "memory") == 0) {
            if (jinn_parse_size(val, &s->memory_limit) != 0) {
                snprintf(msg, msglen, "memory: a size like 65536, 640KiB or 64MiB");
                rv = JINN_EINVAL;
            }
        } else if (strcmp(key, "pool") == 0) {
            uint64_t v;
            if (!jinn_api_parse_uint(val, JINN_FN_POOL_MAX, &v) || v == 0) {
                snprintf(msg, msglen, "pool: an integer in [1, %u]", JINN_FN_POOL_MAX);
                rv = JINN_EINVAL;
            } else {
                s->pool_size = (uint32_t)v;
            }
        } else if (strcmp(key, "workers") == 0) {
            uint64_t v;
            if (!jinn_api_parse_uint(val, JINN_FN_WORKERS_MAX, &v)) {
                snprintf(msg, msglen, "workers: an integer in [0, %u]", JINN_FN_WORKERS_MAX);
                rv = JINN_EINVAL;
            } else {
                s->workers = (uint32_t)v;
            }
        } else if (strcmp(key, "cron") == 0) {
            struct jinn_cron cron;
            /* "" = no schedule; else the parser apply uses, with its message. */
            if (val[0] != '\0' &&
                jinn_cron_parse(val, strlen(val), &cron, msg, msglen) != 0) {
                rv = JINN_EINVAL;
            } else {
                snprintf(s->cron, sizeof s->cron, "%s", val);
            }
        } else if (strcmp(key, "db") == 0 || strcmp(key, "ns") == 0) {
            char *dst = key[0] == 'd' ? s->db : s->ns;
            if (strlen(val) >= sizeof s->db) {
                snprintf(msg, msglen, "%s: at most 64 bytes", key);
                rv = JINN_EINVAL;
            } else {
                snprintf(dst, sizeof s->db, "%s", val);
            }
        } else if (strcmp(key, "env") == 0 || strcmp(key, "arg") == 0 ||
                   strcmp(key, "kv_read") == 0 || strcmp(key, "kv_write") == 0) {
            char ***list = key[0] == 'e'   ? &s->env
                           : key[0] == 'a' ? &s->args
                           : key[3] == 'r' ? &s->kv_read
                                           : &s->kv_write;
            unsigned *n = key[0] == 'e'   ? &s->n_env
                          : key[0] == 'a' ? &s->n_args
                          : key[3] == 'r' ? &s->n_kv_read
                                          : &s->n_kv_write;
            rv = list_add(list, n, val);
            if (rv == JINN_EINVAL) {
                snprintf(msg, msglen, "%s: at most %u entries", key, JINN_FN_LIST_MAX);
            }
        } else {
            snprintf(msg, msglen,
                     "unknown query parameter %s (route, timeout, memory, pool, env, arg, "
                     "kv_read, kv_write, db, ns, workers, cron)",
                     key);
            rv = JINN_EINVAL;
        }
        jinn_free(val);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

/* ---- deploy ---------------------------------------------------------------- */

static void reply_apply_error(struct jinn_http_request *req, int code)
{
    const char *why = NULL;
    if (code == JINN_ECONFLICT) {
        why = "the route is another active function's";
    } else if (code == JINN_ENOTFOUND) {
        why = "no such function or version";
    } else if (code == JINN_EFULL) {
        why = "the registry is full (1024 functions, or 64 MiB of modules; delete with "
              "?purge=1 to free)";
    } else if (code == JINN_EINVAL) {
        why = "refused by the state machine (module or settings invalid)";
    }
    jinn_http_reply_error(req, code, why);
}

static void deployed(struct jinn_api *api, struct jinn_http_request *req,
                     const struct jinn_result *res)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char name[JINN_FN_NAME_MAX + 1], sha[65];
    const struct jinn_fn *f;
    const struct jinn_fn_version *v;
    uint64_t version = res->value & ~JINN_FN_UNCHANGED;

    if (res->code != JINN_OK) {
        reply_apply_error(req, res->code);
        return;
    }
    if (!name_from_path(req, name, true)) {
        return;
    }
    f = jinn_fns_get(&fsm->fns, name);
    v = f != NULL ? jinn_fn_version_find(f, version) : NULL;
    if (v == NULL) {
        jinn_http_reply_error(req, JINN_EINTERNAL, "the deployed version is not kept");
        return;
    }
    hex(v->sha256, sha);
    jinn_http_reply_json(req, (res->value & JINN_FN_UNCHANGED) ? 200 : 201,
                         json_pack("{s:s, s:I, s:s, s:I, s:b}", "name", name, "version",
                                   (json_int_t)version, "sha256", sha, "index",
                                   (json_int_t)v->index, "unchanged",
                                   (res->value & JINN_FN_UNCHANGED) != 0));
}

/* A deploy's signature: X-Jinn-Signature (standard base64 of the 64-byte
 * ed25519 signature, fsm/fnsig.h) and X-Jinn-Key (the trusted key's name),
 * both or neither. *present says which; false (and a 400 sent) when they
 * are malformed. */
static bool signature_from_headers(struct jinn_http_request *req, uint8_t sig[JINN_FNSIG_SIZE],
                                   char key[JINN_FNSIG_KEY_NAME_MAX + 1], bool *present)
{
    const struct jinn_http_header *hs = jinn_http_header_find(&req->msg, "x-jinn-signature");
    const struct jinn_http_header *hk = jinn_http_header_find(&req->msg, "x-jinn-key");

    *present = false;
    if (hs == NULL && hk == NULL) {
        return true;
    }
    if (hs == NULL || hk == NULL) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "X-Jinn-Signature and X-Jinn-Key go together (jinn fn sign)");
        return false;
    }
    if (!jinn_fnsig_base64_decode(hs->value, hs->value_len, sig, JINN_FNSIG_SIZE)) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "X-Jinn-Signature must be the standard base64 of a 64-byte "
                              "ed25519 signature (88 characters)");
        return false;
    }
    if (!jinn_fnsig_key_name_valid(hk->value, hk->value_len)) {
        jinn_http_reply_error(req, JINN_EINVAL,
                              "X-Jinn-Key must be a key name: [a-z0-9][a-z0-9_.-]{0,63}");
        return false;
    }
    memcpy(key, hk->value, hk->value_len);
    key[hk->value_len] = '\0';
    *present = true;
    return true;
}

/* The signing policy with a reply (403 signature_required), before
 * anything is proposed; apply decides the same way. sha NULL: not known
 * yet, only a missing signature is refused. */
static bool signature_refuses(struct jinn_api *api, struct jinn_http_request *req,
                              const char *name, const uint8_t *sha)
{
    const struct jinn_fns *fns = &jinn_node_fsm(api->node)->fns;
    uint8_t sig[JINN_FNSIG_SIZE];
    char key[JINN_FNSIG_KEY_NAME_MAX + 1];
    const char *why = NULL;
    bool present;
    int rv;

    if (!signature_from_headers(req, sig, key, &present)) {
        return true;
    }
    if (!fns->policy.require_signature) {
        return false;
    }
    if (!present) {
        jinn_http_reply_error(req, JINN_EUNSIGNED,
                              "the cluster requires signed modules (require_signature): sign "
                              "with `jinn fn sign MODULE --key K.key --name NAME` and deploy "
                              "with --sig, or send X-Jinn-Signature and X-Jinn-Key");
        return true;
    }
    if (sha == NULL) {
        return false;
    }
    rv = jinn_fns_signature_check(fns, name, strlen(name), sha, sig, sizeof sig,
                                  (const uint8_t *)key, strlen(key), &why);
    if (rv != 0) {
        jinn_http_reply_error(req, rv, why);
        return true;
    }
    return false;
}

/* jinn_fns_deploy_check with a reply: true (and req answered) when the
 * current state refuses the deploy. */
static bool state_refuses(struct jinn_api *api, struct jinn_http_request *req, const char *name,
                          const char *route, const uint8_t *sha, size_t module_len)
{
    const struct jinn_fns *fns = &jinn_node_fsm(api->node)->fns;
    const struct jinn_fn *holder;
    char msg[512];
    int rv;

    if (signature_refuses(api, req, name, sha)) {
        return true;
    }
    rv = jinn_fns_deploy_check(fns, name, strlen(name), route, sha, module_len);
    if (rv == 0) {
        return false;
    }
    if (rv == JINN_ECONFLICT) {
        holder = jinn_fns_by_route(fns, route);
        snprintf(msg, sizeof msg, "route %s is function %s's", route,
                 holder != NULL ? holder->name : "another");
    } else if (rv == JINN_EFULL && jinn_fns_get(fns, name) == NULL &&
               jinn_fns_count(fns) >= JINN_FN_MAX) {
        snprintf(msg, sizeof msg, "the registry holds %u functions already", JINN_FN_MAX);
    } else if (rv == JINN_EFULL) {
        snprintf(msg, sizeof msg,
                 "the cluster keeps %llu bytes of modules; this one (%zu bytes) would pass "
                 "the %u MiB limit: delete functions with ?purge=1 to free",
                 (unsigned long long)jinn_fns_module_bytes(fns), module_len,
                 JINN_FN_MODULES_TOTAL_MAX >> 20);
    } else {
        msg[0] = '\0';
    }
    jinn_http_reply_error(req, rv, msg[0] != '\0' ? msg : NULL);
    return true;
}

struct deploy_proposal {
    struct jinn_api *api;
    struct jinn_http_request *req;
};

/* As api.c's commit callback, counting the deploy out. */
static void deploy_committed(void *data, int code, const struct jinn_result *res)
{
    struct deploy_proposal *p = data;
    p->api->fn_proposed--;
    if (code != JINN_OK) {
        jinn_http_reply_error(p->req, code == JINN_ETIMEOUT ? JINN_EUNKNOWN : code,
                              code == JINN_ETIMEOUT
                                  ? "not committed within the request timeout; the deploy "
                                    "may still be applied"
                                  : NULL);
    } else {
        char buf[24];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)res->index);
        jinn_http_add_header(p->req, "X-Jinn-Index", buf);
        deployed(p->api, p->req, res);
    }
    jinn_free(p);
}

static void propose_deploy(struct jinn_api *api, struct jinn_http_request *req,
                           const char *name, const struct jinn_wbuf *settings, bool deploy2,
                           const struct jinn_api_fn_scope *scope)
{
    struct deploy_proposal *p;
    struct jinn_cmd c;
    uint8_t sig[JINN_FNSIG_SIZE];
    char key[JINN_FNSIG_KEY_NAME_MAX + 1];
    bool signed_deploy;
    int rv;

    if (!signature_from_headers(req, sig, key, &signed_deploy)) {
        return; /* checked before: cannot happen */
    }
    p = jinn_malloc(sizeof *p);
    if (p == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    p->api = api;
    p->req = req;
    memset(&c, 0, sizeof c);
    /* Type 23 whenever it can carry the settings: a cluster mid-upgrade
     * applies it on every build; 28 only for what needs it. */
    c.type = deploy2 ? JINN_CMD_FN_DEPLOY2 : JINN_CMD_FN_DEPLOY;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    c.fn.settings.p = settings->data;
    c.fn.settings.len = settings->len;
    c.fn.module.p = (const uint8_t *)req->body;
    c.fn.module.len = req->body_len;
    if (signed_deploy) {
        /* Type 28 carries the signature; 23 stays for unsigned deploys so
         * that they still apply on builds from before it. */
        c.type = JINN_CMD_FN_DEPLOY2;
        c.fn.signature.p = sig;
        c.fn.signature.len = sizeof sig;
        c.fn.key_id.p = (const uint8_t *)key;
        c.fn.key_id.len = strlen(key);
    }
    api->fn_proposed++; /* counted out by deploy_committed */
    rv = jinn_node_propose(api->node, &c, api->cfg->request_timeout_ms, deploy_committed, p);
    if (rv != JINN_OK) {
        api->fn_proposed--;
        jinn_free(p);
        jinn_http_reply_error(req, rv, NULL);
        return;
    }
    jinn_api_auth_scope_propose(api, name, scope); /* adjacent to the deploy */
}

static void validation_free(struct jinn_fn_validation *v)
{
    jinn_free(v->scope.rules);
    jinn_wbuf_free(&v->settings);
    jinn_wbuf_free(&v->output);
    jinn_free(v);
}

/* The tool's output as one message: the temporary file's path is ours, not
 * the client's; lines are joined with "; ". */
static void tool_message(struct jinn_fn_validation *v, char *msg, size_t cap)
{
    size_t plen = strlen(v->path), o = 0;
    const char *p = (const char *)v->output.data, *end = p + v->output.len;
    o += (size_t)snprintf(msg, cap, "wasm-validate: ");
    while (p < end && o + 1 < cap) {
        if ((size_t)(end - p) >= plen && memcmp(p, v->path, plen) == 0) {
            const char *w = "module.wasm";
            while (*w && o + 1 < cap) {
                msg[o++] = *w++;
            }
            p += plen;
            continue;
        }
        if (*p == '\n') {
            if (p + 1 < end && o + 3 < cap) {
                msg[o++] = ';';
                msg[o++] = ' ';
            }
        } else if ((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f) {
            msg[o++] = *p;
        }
        p++;
    }
    msg[o < cap ? o : cap - 1] = '\0';
    /* 0xfd prefixes every SIMD opcode: say what it is. */
    if (strstr(msg, "unexpected opcode: 0xfd") != NULL && o + 1 < cap) {
        snprintf(msg + o, cap - o, " (SIMD, which Debian 12's wasm2c cannot compile: build "
                                   "the module without -msimd128)");
    }
}

static void validation_unlist(struct jinn_fn_validation *v)
{
    unlink(v->path);
    if (v->prev) {
        v->prev->next = v->next;
    } else {
        v->api->fn_validations = v->next;
    }
    if (v->next) {
        v->next->prev = v->prev;
    }
}

static void validation_done(struct jinn_fn_validation *v)
{
    struct jinn_api *api = v->api;
    struct jinn_http_request *req = v->req;
    char msg[VALIDATE_OUTPUT_MAX + 64];

    validation_unlist(v);
    if (req == NULL) {
        validation_free(v);
        return;
    }
    if (api->stopping) {
        jinn_http_reply_error(req, JINN_ESHUTDOWN, NULL);
    } else if (v->timed_out) {
        jinn_http_reply_error(req, JINN_EINTERNAL,
                              "wasm-validate did not finish within 10 s; not deployed");
    } else if (!v->exited || v->term_signal != 0 || (v->exit_status != 0 && v->exit_status != 1)) {
        snprintf(msg, sizeof msg, "wasm-validate failed (exit %lld, signal %d); not deployed",
                 (long long)v->exit_status, v->term_signal);
        jinn_http_reply_error(req, JINN_EINTERNAL, msg);
    } else if (v->exit_status != 0) {
        tool_message(v, msg, sizeof msg);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
    } else if (!state_refuses(api, req, v->name, v->route, v->sha, req->body_len)) {
        /* Checked again: the state may have changed while the tool ran. */
        propose_deploy(api, req, v->name, &v->settings, v->deploy2, &v->scope);
    }
    validation_free(v);
}

static void validation_closed(uv_handle_t *h)
{
    struct jinn_fn_validation *v = h->data;
    if (--v->open_handles == 0) {
        validation_done(v);
    }
}

static void validation_close_all(struct jinn_fn_validation *v)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&v->proc, (uv_handle_t *)&v->out,
                         (uv_handle_t *)&v->err, (uv_handle_t *)&v->timer};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        if (!uv_is_closing(hs[i])) {
            uv_close(hs[i], validation_closed);
        }
    }
}

/* Done once the child exited and both pipes reached EOF. */
static void validation_maybe_done(struct jinn_fn_validation *v)
{
    if (v->exited && uv_is_closing((uv_handle_t *)&v->out) &&
        uv_is_closing((uv_handle_t *)&v->err)) {
        validation_close_all(v);
    }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int signal)
{
    struct jinn_fn_validation *v = p->data;
    v->exited = true;
    v->exit_status = status;
    v->term_signal = signal;
    uv_timer_stop(&v->timer);
    validation_maybe_done(v);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[4096]; /* the loop's thread only; copied at once */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct jinn_fn_validation *v = s->data;
    if (n > 0) {
        size_t room = v->output.len < VALIDATE_OUTPUT_MAX ? VALIDATE_OUTPUT_MAX - v->output.len : 0;
        jinn_wbuf_put_raw(&v->output, buf->base, (size_t)n < room ? (size_t)n : room);
        return;
    }
    if (n < 0) { /* EOF, or the child's end failed: either way, done reading */
        uv_close((uv_handle_t *)s, validation_closed);
        validation_maybe_done(v);
    }
}

static void on_timeout(uv_timer_t *t)
{
    struct jinn_fn_validation *v = t->data;
    v->timed_out = true;
    uv_process_kill(&v->proc, SIGKILL);
}

/* Writes the module to v->path (a new file). On the thread pool. */
static int write_module(struct jinn_fn_validation *v, const char *bytes, size_t len)
{
    int fd = open(v->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        return JINN_EIO;
    }
    while (len > 0) {
        ssize_t n = write(fd, bytes, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            close(fd);
            unlink(v->path);
            return JINN_EIO;
        }
        bytes += n;
        len -= (size_t)n;
    }
    close(fd);
    return 0;
}

static unsigned count_validations(const struct jinn_api *api)
{
    unsigned n = 0;
    for (const struct jinn_fn_validation *v = api->fn_validations; v != NULL; v = v->next) {
        n++;
    }
    return n;
}

static void spawn_validator(struct jinn_fn_validation *v)
{
    struct jinn_api *api = v->api;
    uv_process_options_t opts;
    uv_stdio_container_t stdio[3];
    char *args[4];
    int rv;

    /* Every handle is v's: v is freed once the last one is closed. */
    uv_pipe_init(api->loop, &v->out, 0);
    uv_pipe_init(api->loop, &v->err, 0);
    uv_timer_init(api->loop, &v->timer);
    v->out.data = v;
    v->err.data = v;
    v->timer.data = v;
    v->proc.data = v;
    v->open_handles = 4;
    memset(&opts, 0, sizeof opts);
    /* Debian 12's wasm2c aborts on SIMD, which wasm-validate accepts by
     * default: a SIMD module must be refused here, not committed and then
     * fail to compile on every node. */
    args[0] = "wasm-validate";
    args[1] = "--disable-simd";
    args[2] = v->path;
    args[3] = NULL;
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&v->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&v->err;
    opts.file = "wasm-validate";
    opts.args = args;
    opts.exit_cb = on_exit_cb;
    opts.stdio = stdio;
    opts.stdio_count = 3;
    rv = uv_spawn(api->loop, &v->proc, &opts);
    if (rv != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 rv == UV_ENOENT ? "wasm-validate not found: install Debian's package wabt "
                                   "on every node (%s)"
                                 : "cannot run wasm-validate: %s",
                 uv_strerror(rv));
        jinn_http_reply_error(v->req, JINN_EINTERNAL, msg);
        /* uv_spawn initialised the process handle even so: close it all. */
        v->req = NULL;
        v->exited = true;
        validation_close_all(v);
        return;
    }
    v->spawned = true;
    uv_timer_start(&v->timer, on_timeout, VALIDATE_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&v->out, alloc_cb, on_read);
    uv_read_start((uv_stream_t *)&v->err, alloc_cb, on_read);
}

/* On the thread pool: the body does not move while its request waits. */
static void hash_and_write(uv_work_t *w)
{
    struct jinn_fn_validation *v = w->data;
    v->work_rv = jinn_sha256(v->req->body, v->req->body_len, v->sha);
    if (v->work_rv == 0) {
        v->work_rv = write_module(v, v->req->body, v->req->body_len);
        v->work_errno = errno;
    }
}

static void validation_abort(struct jinn_fn_validation *v)
{
    validation_unlist(v);
    validation_free(v);
}

/* After the linearized read: the local state holds everything committed
 * before it, so "unchanged" and the state's refusals are answered from
 * the committed state, not from a deposed leader's stale view. */
static void linearized(void *data, int code)
{
    struct jinn_fn_validation *v = data;
    struct jinn_api *api = v->api;
    struct jinn_http_request *req = v->req;
    const struct jinn_fns *fns;
    const struct jinn_fn *f;

    if (api->stopping || code != JINN_OK) {
        jinn_http_reply_error(req, api->stopping ? JINN_ESHUTDOWN : code, NULL);
        validation_abort(v);
        return;
    }
    fns = &jinn_node_fsm(api->node)->fns;
    if (jinn_fns_deploy_unchanged(fns, v->name, strlen(v->name), v->sha, v->settings.data,
                                  v->settings.len)) {
        /* Already what runs: no new version, nothing through the log. */
        char shahex[65];
        f = jinn_fns_get(fns, v->name);
        hex(v->sha, shahex);
        jinn_http_reply_json(req, 200,
                             json_pack("{s:s, s:I, s:s, s:I, s:b}", "name", v->name, "version",
                                       (json_int_t)f->active->version, "sha256", shahex,
                                       "index", (json_int_t)f->active->index, "unchanged", 1));
        validation_abort(v);
        return;
    }
    if (state_refuses(api, req, v->name, v->route, v->sha, req->body_len)) {
        validation_abort(v);
        return;
    }
    spawn_validator(v);
}

static void hashed(uv_work_t *w, int status)
{
    struct jinn_fn_validation *v = w->data;
    struct jinn_api *api = v->api;
    struct jinn_http_request *req = v->req;
    int rv;

    if (status != 0 || api->stopping || v->work_rv != 0) {
        if (v->work_rv == JINN_EIO) {
            jinn_warn("fn deploy %s: cannot write %s: %s", v->name, v->path,
                      strerror(v->work_errno));
        }
        jinn_http_reply_error(req,
                              api->stopping         ? JINN_ESHUTDOWN
                              : v->work_rv == JINN_EIO ? JINN_EIO
                                                       : JINN_ENOMEM,
                              v->work_rv == JINN_EIO ? "cannot write the module to data_dir"
                                                     : NULL);
        validation_abort(v);
        return;
    }
    rv = jinn_node_linearize(api->node, linearized, v);
    if (rv != JINN_OK) {
        jinn_http_reply_error(req, rv, NULL);
        validation_abort(v);
    }
}

/* Hashes the body and writes it to a temporary file (thread pool), then
 * runs wasm-validate on it; proposes the deploy when it passes. */
static void validate_then_propose(struct jinn_api *api, struct jinn_http_request *req,
                                  const char *name, const struct jinn_fn_settings *s)
{
    static uint64_t counter;
    struct jinn_fn_validation *v;

    if (count_validations(api) + api->fn_proposed >= DEPLOYS_IN_FLIGHT_MAX) {
        jinn_http_reply_error(req, JINN_EBUSY,
                              "another deploy is in progress (one at a time); retry");
        return;
    }
    v = jinn_calloc(1, sizeof *v);
    if (v == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    v->api = api;
    v->req = req;
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->route, sizeof v->route, "%s", s->route);
    snprintf(v->path, sizeof v->path, "%s/fn-validate-%d-%llu.wasm", api->cfg->data_dir,
             (int)getpid(), (unsigned long long)++counter);
    jinn_wbuf_init(&v->settings);
    jinn_wbuf_init(&v->output);
    jinn_fn_settings_canonical(s, &v->settings);
    v->deploy2 = jinn_fn_settings_need_deploy2(s);
    jinn_api_auth_scope_capture(api, &v->scope); /* the request's credential, now */
    if (v->settings.failed) {
        validation_free(v);
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        return;
    }
    v->work.data = v;
    if (uv_queue_work(api->loop, &v->work, hash_and_write, hashed) != 0) {
        validation_free(v);
        jinn_http_reply_error(req, JINN_EINTERNAL, "cannot queue the module's checks");
        return;
    }
    v->next = api->fn_validations;
    if (v->next) {
        v->next->prev = v;
    }
    api->fn_validations = v;
}

void jinn_api_fn_init(struct jinn_api *api)
{
    /* Temporary modules of validations a crash interrupted. */
    DIR *d = api->cfg != NULL && api->cfg->data_dir != NULL ? opendir(api->cfg->data_dir) : NULL;
    struct dirent *e;
    char path[4096];
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "fn-validate-", 12) == 0 && n > 5 &&
            strcmp(e->d_name + n - 5, ".wasm") == 0) {
            snprintf(path, sizeof path, "%s/%s", api->cfg->data_dir, e->d_name);
            unlink(path);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

void jinn_api_fn_stop(struct jinn_api *api)
{
    for (struct jinn_fn_validation *v = api->fn_validations; v != NULL; v = v->next) {
        if (v->spawned && !v->exited) {
            uv_process_kill(&v->proc, SIGKILL);
        }
    }
}

void jinn_api_fn_deploy(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    struct jinn_fn_settings s, parsed;
    struct jinn_wasm_info *info = NULL;
    struct jinn_wbuf json;
    char msg[512], name[JINN_FN_NAME_MAX + 1];
    int rv;

    (void)args;
    if (!name_from_path(req, name, true)) {
        return;
    }
    if (req->body_len == 0) {
        jinn_http_reply_error(req, JINN_EINVAL, "empty body: send the module's bytes");
        return;
    }
    if (req->body_len > JINN_FN_MODULE_MAX) {
        jinn_http_reply_error(req, JINN_ETOOBIG, "a module is at most 16 MiB");
        return;
    }
    jinn_wbuf_init(&json);
    memset(&parsed, 0, sizeof parsed);
    msg[0] = '\0';
    rv = settings_from_query(req->query, req->query_len, &s, msg, sizeof msg);
    if (rv == 0) {
        jinn_fn_settings_canonical(&s, &json);
        rv = json.failed ? JINN_ENOMEM
                         : jinn_fn_settings_parse(json.data, json.len, &parsed, msg, sizeof msg);
    }
    if (rv == 0 && jinn_fn_settings_need_deploy2(&s) && strlen(name) > JINN_JOB_FN_NAME_MAX) {
        /* Its jobs queue WORKERS_<name> would be over the queue name limit. */
        snprintf(msg, sizeof msg, "workers and cron need a function name of at most %zu bytes",
                 (size_t)JINN_JOB_FN_NAME_MAX);
        rv = JINN_EINVAL;
    }
    if (rv != 0) {
        jinn_http_reply_error(req, rv, rv == JINN_EINVAL ? msg : NULL);
        goto out;
    }
    info = jinn_malloc(sizeof *info);
    if (info == NULL) {
        jinn_http_reply_error(req, JINN_ENOMEM, NULL);
        goto out;
    }
    rv = jinn_wasm_inspect(req->body, req->body_len, info, msg, sizeof msg);
    if (rv != 0) {
        jinn_http_reply_error(req, rv, rv == JINN_EINVAL ? msg : NULL);
        goto out;
    }
    if ((uint64_t)info->memory_min_pages * JINN_FN_MEMORY_MIN > s.memory_limit) {
        snprintf(msg, sizeof msg,
                 "the module's memory starts at %u pages of 64 KiB, over memory=%llu bytes",
                 info->memory_min_pages, (unsigned long long)s.memory_limit);
        jinn_http_reply_error(req, JINN_EINVAL, msg);
        goto out;
    }
    if (state_refuses(api, req, name, s.route, NULL, req->body_len)) {
        goto out;
    }
    validate_then_propose(api, req, name, &s);

out:
    jinn_free(info);
    jinn_wbuf_free(&json);
    jinn_fn_settings_free(&s);
    jinn_fn_settings_free(&parsed);
}

/* ---- delete, rollback ------------------------------------------------------- */

static void changed(struct jinn_api *api, struct jinn_http_request *req,
                    const struct jinn_result *res)
{
    char name[JINN_FN_NAME_MAX + 1];
    (void)api;
    if (res->code != JINN_OK) {
        reply_apply_error(req, res->code);
        return;
    }
    if (!name_from_path(req, name, true)) {
        return;
    }
    jinn_http_reply_json(req, 200,
                         json_pack("{s:s, s:I, s:I}", "name", name, "version",
                                   (json_int_t)res->value, "index", (json_int_t)res->index));
}

void jinn_api_fn_delete(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    char name[JINN_FN_NAME_MAX + 1];
    struct jinn_cmd c;
    uint64_t purge;
    (void)args;
    if (!name_from_path(req, name, true) ||
        !jinn_api_uint_or_reply(req, NULL, "purge", 0, 0, 1, &purge)) {
        return;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_DELETE;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    c.fn.flags = purge ? JINN_FN_PURGE : 0;
    jinn_api_propose_or_reply(api, req, &c, changed);
}

void jinn_api_fn_rollback(struct jinn_api *api, struct jinn_http_request *req,
                          const struct jinn_route_args *args)
{
    char name[JINN_FN_NAME_MAX + 1];
    struct jinn_cmd c;
    uint64_t version;
    (void)args;
    if (!name_from_path(req, name, true) ||
        !jinn_api_uint_or_reply(req, NULL, "version", 0, 1, UINT64_MAX >> 1, &version)) {
        return;
    }
    memset(&c, 0, sizeof c);
    c.type = JINN_CMD_FN_ROLLBACK;
    c.fn.name.p = (const uint8_t *)name;
    c.fn.name.len = strlen(name);
    c.fn.version = version;
    jinn_api_propose_or_reply(api, req, &c, changed);
}

/* ---- reads ------------------------------------------------------------------ */

static json_t *list_json(char *const *list, unsigned n)
{
    json_t *a = json_array();
    for (unsigned i = 0; a != NULL && i < n; i++) {
        json_array_append_new(a, json_string(list[i]));
    }
    return a;
}

static json_t *settings_json(const struct jinn_fn_settings *s)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:s, s:s, s:I, s:s}", "route",
                     s->route, "timeout_ms", (json_int_t)s->timeout_ms, "memory_limit",
                     (json_int_t)s->memory_limit, "pool_size", (json_int_t)s->pool_size, "env",
                     list_json(s->env, s->n_env), "args", list_json(s->args, s->n_args),
                     "kv_read", list_json(s->kv_read, s->n_kv_read), "kv_write",
                     list_json(s->kv_write, s->n_kv_write), "db", s->db, "ns", s->ns,
                     "workers", (json_int_t)s->workers, "cron", s->cron);
}

static json_t *version_json(const struct jinn_fn_version *v, bool active)
{
    char sha[65];
    hex(v->sha256, sha);
    return json_pack("{s:I, s:s, s:I, s:o, s:I, s:I, s:b}", "version", (json_int_t)v->version,
                     "sha256", sha, "size", (json_int_t)v->module_len, "settings",
                     settings_json(&v->settings), "deployed_ms", (json_int_t)v->deployed_ms,
                     "index", (json_int_t)v->index, "active", active);
}

/* One line of the list: what is active, in short. */
static json_t *summary_json(const struct jinn_fn *f)
{
    const struct jinn_fn_version *a = f->active;
    char sha[65] = "";
    if (a != NULL) {
        hex(a->sha256, sha);
    }
    return json_pack("{s:s, s:o, s:o, s:o, s:I, s:b}", "name", f->name, "version",
                     a ? json_integer((json_int_t)a->version) : json_null(), "sha256",
                     a ? json_string(sha) : json_null(), "route",
                     a ? json_string(a->settings.route) : json_null(), "versions",
                     (json_int_t)f->n_versions, "deleted", a == NULL);
}

static void show_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char name[JINN_FN_NAME_MAX + 1];
    const struct jinn_fn *f;
    json_t *obj, *versions;
    if (!name_from_path(req, name, true)) {
        return;
    }
    f = jinn_fns_get(&fsm->fns, name);
    if (f == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such function");
        return;
    }
    obj = summary_json(f);
    versions = json_array();
    for (unsigned i = 0; versions != NULL && i < f->n_versions; i++) {
        json_array_append_new(versions, version_json(&f->versions[i], &f->versions[i] == f->active));
    }
    json_object_set_new(obj, "versions_kept", versions);
    if (jinn_jobs_cron_of(&fsm->jobs, name) != 0) {
        /* The pending cron tick (cluster time, UTC ms). */
        json_object_set_new(obj, "cron_next_ms",
                            json_integer((json_int_t)jinn_jobs_cron_of(&fsm->jobs, name)));
    }
    if (api->wasm != NULL) {
        jinn_wasm_runner_describe(api->wasm, name, obj);
    }
    jinn_http_reply_json(req, 200, obj);
}

static void module_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char name[JINN_FN_NAME_MAX + 1], sha[65], num[24];
    const struct jinn_fn *f;
    const struct jinn_fn_version *v;
    uint64_t version;
    if (!name_from_path(req, name, true) ||
        !jinn_api_uint_or_reply(req, NULL, "version", 0, 0, UINT64_MAX >> 1, &version)) {
        return;
    }
    f = jinn_fns_get(&fsm->fns, name);
    if (f == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such function");
        return;
    }
    v = version != 0     ? jinn_fn_version_find(f, version)
        : f->active      ? f->active
        : f->n_versions ? &f->versions[f->n_versions - 1]
                         : NULL;
    if (v == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such version kept");
        return;
    }
    hex(v->sha256, sha);
    snprintf(num, sizeof num, "%llu", (unsigned long long)v->version);
    jinn_http_add_header(req, "X-Jinn-Fn-Version", num);
    jinn_http_add_header(req, "X-Jinn-Fn-Sha256", sha);
    jinn_http_reply(req, 200, "application/wasm", v->module, v->module_len);
}

void jinn_api_fn_module(struct jinn_api *api, struct jinn_http_request *req,
                        const struct jinn_route_args *args)
{
    char name[JINN_FN_NAME_MAX + 1];
    (void)args;
    if (name_from_path(req, name, true)) {
        jinn_api_read_or_reply(api, req, false, module_now);
    }
}

void jinn_api_fn_show(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    char name[JINN_FN_NAME_MAX + 1];
    (void)args;
    if (name_from_path(req, name, true)) {
        jinn_api_read_or_reply(api, req, false, show_now);
    }
}

static void list_now(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fsm *fsm = jinn_node_fsm(api->node);
    char after[JINN_FN_NAME_MAX + 2];
    long n = jinn_http_query_get(req->query, req->query_len, "after", after, sizeof after);
    uint64_t limit;
    json_t *list = json_array();
    const struct jinn_fn *f;
    unsigned count = 0;
    bool more = false;

    if (n == -2) {
        json_decref(list);
        jinn_http_reply_error(req, JINN_EINVAL, "after: a function name");
        return;
    }
    if (!jinn_api_uint_or_reply(req, NULL, "limit", LIST_DEFAULT, 1, LIST_MAX, &limit)) {
        json_decref(list);
        return;
    }
    for (f = jinn_fns_next(&fsm->fns, n >= 0 ? after : NULL); f != NULL && list != NULL;
         f = jinn_fns_next(&fsm->fns, f->name)) {
        if (count++ == limit) {
            more = true;
            break;
        }
        json_t *obj = summary_json(f);
        if (obj != NULL && api->wasm != NULL) {
            jinn_wasm_runner_describe(api->wasm, f->name, obj);
        }
        json_array_append_new(list, obj);
    }
    jinn_http_reply_json(req, 200,
                         json_pack("{s:o, s:b, s:I, s:I}", "functions", list, "more", more,
                                   "module_bytes", (json_int_t)jinn_fns_module_bytes(&fsm->fns),
                                   "module_bytes_max", (json_int_t)JINN_FN_MODULES_TOTAL_MAX));
}

void jinn_api_fn_list(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    (void)args;
    jinn_api_read_or_reply(api, req, false, list_now);
}
