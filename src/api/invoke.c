/* invoke.c - the HTTP side of functions: ANY /fn/{name}[/...] and each
 * function's route prefix, on every node, dispatched before the route
 * table; and GET /v1/functions/{name}/logs (this node's last lines).
 * The work is the runner's (wasm/runner.c). */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "error.h"
#include "fsm/auth.h"
#include "fsm/fn.h"
#include "wasm/proto.h"
#include "wasm/runner.h"

#define FN_PREFIX "/fn/"

/* Paths that belong to jinn's own API: a function's route never takes them
 * (the registry should refuse such routes; this keeps the API reachable
 * whatever it holds). */
static bool api_path(const char *path, size_t len)
{
    static const char *const exact[] = {"/healthz", "/readyz", "/metrics"};
    if (len >= 4 && memcmp(path, "/v1/", 4) == 0) {
        return true;
    }
    if (len == 3 && memcmp(path, "/v1", 3) == 0) {
        return true;
    }
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (len == strlen(exact[i]) && memcmp(path, exact[i], len) == 0) {
            return true;
        }
    }
    return false;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool jinn_api_invoke_maybe(struct jinn_api *api, struct jinn_http_request *req)
{
    const struct jinn_fns *fns = &jinn_node_fsm(api->node)->fns;
    const struct jinn_fn *fn = NULL;
    char name[JINN_FN_NAME_MAX + 1];
    size_t plen = strlen(FN_PREFIX);

    if (api->wasm == NULL) {
        return false;
    }
    if (req->path_len > plen && memcmp(req->path, FN_PREFIX, plen) == 0) {
        const char *p = req->path + plen, *end = req->path + req->path_len;
        size_t n = 0;
        while (p + n < end && p[n] != '/') {
            if (n >= JINN_FN_NAME_MAX || !name_char(p[n])) {
                jinn_http_reply_error(req, JINN_ENOTFOUND, "no such function");
                return true;
            }
            name[n] = p[n];
            n++;
        }
        name[n] = '\0';
        /* Scope first: whether a function exists is not told to a token
         * that may not invoke it. */
        if (!jinn_api_auth_or_reply(api, req, JINN_AUTH_FN, name, n, JINN_AUTH_INVOKE, false)) {
            return true;
        }
        fn = n > 0 ? jinn_fns_get(fns, name) : NULL;
        if (fn == NULL || fn->active == NULL) {
            jinn_http_reply_error(req, JINN_ENOTFOUND, "no such function");
            return true;
        }
    } else if (!api_path(req->path, req->path_len)) {
        char path[JINN_HTTP_MAX_TARGET + 1];
        size_t n = req->path_len < JINN_HTTP_MAX_TARGET ? req->path_len : JINN_HTTP_MAX_TARGET;
        memcpy(path, req->path, n);
        path[n] = '\0';
        fn = jinn_fns_by_route(fns, path);
        if (fn == NULL || fn->active == NULL) {
            return false;
        }
        if (!jinn_api_auth_allows(api, JINN_AUTH_FN, fn->name, strlen(fn->name),
                                  JINN_AUTH_INVOKE)) {
            /* The same answer as a path no function serves: a token that
             * may not invoke it does not learn that a route exists. */
            jinn_http_reply_error(req, JINN_ENOTFOUND, NULL);
            return true;
        }
    } else {
        return false;
    }
    if (req->body_len > JINN_SBX_STDIN_MAX) {
        jinn_http_reply_error(req, JINN_ETOOBIG, "a function's request body is at most 16 MiB");
        return true;
    }
    jinn_wasm_runner_invoke(api->wasm, req, fn);
    return true;
}

void jinn_api_fn_logs(struct jinn_api *api, struct jinn_http_request *req,
                      const struct jinn_route_args *args)
{
    const struct jinn_fns *fns = &jinn_node_fsm(api->node)->fns;
    json_t *lines;
    if (jinn_fns_get(fns, args->arg[0]) == NULL) {
        jinn_http_reply_error(req, JINN_ENOTFOUND, "no such function");
        return;
    }
    lines = api->wasm != NULL ? jinn_wasm_runner_logs(api->wasm, args->arg[0]) : NULL;
    jinn_http_reply_json(req, 200,
                         json_pack("{s:s, s:s, s:o}", "function", args->arg[0], "node",
                                   api->cfg->server_name, "lines",
                                   lines != NULL ? lines : json_array()));
}
