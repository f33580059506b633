/* cli/token.c - `jinn token ...`: scoped tokens (docs/api.md "Authentication").
 *
 *   jinn token create NAME --allow RULE [--allow RULE]... [--ttl D]
 *                                         prints the token (shown once)
 *   jinn token ls
 *   jinn token revoke NAME
 *
 * Every request carries $JINN_TOKEN (or --token) as a Bearer token (an
 * admin's: these need cluster:admin). Exit 0 on success, 1 when the node
 * refuses or cannot be reached, 2 on bad usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"
#include "fsm/auth.h"

static const char usage[] =
    "usage: jinn token create NAME --allow RULE [--allow RULE]... [--ttl D]\n"
    "       jinn token ls\n"
    "       jinn token revoke NAME\n"
    "rules: kv:NS/PREFIX*:read,write  lock:NAME*  queue:NAME:publish,consume,admin\n"
    "       sql:DB:read,write  fn:NAME:invoke,deploy  cluster:admin\n"
    "       cluster:metrics (GET /metrics only)\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "),\n"
    "         --token T (default $JINN_TOKEN), --json; --ttl: 90s, 30m, 12h, 7d\n";

/* "90s", "30m", "12h", "7d", "500ms" -> ms; 0 when malformed. */
static uint64_t duration_ms(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t unit;
    if (end == s || v == 0 || v > 100000000ULL) {
        return 0;
    }
    if (strcmp(end, "ms") == 0) {
        unit = 1;
    } else if (strcmp(end, "s") == 0) {
        unit = 1000;
    } else if (strcmp(end, "m") == 0) {
        unit = 60000;
    } else if (strcmp(end, "h") == 0) {
        unit = 3600000;
    } else if (strcmp(end, "d") == 0) {
        unit = 86400000;
    } else {
        return 0;
    }
    return (uint64_t)v * unit;
}

int jinn_cli_token(int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR"), *tenv = getenv("JINN_TOKEN");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *token = tenv && *tenv ? tenv : NULL, *ttl = NULL, *name = NULL, *verb;
    const char *allow[JINN_AUTH_RULE_COUNT_MAX];
    int n_allow = 0, json = 0, status, rv;
    struct jinn_wbuf target, headers;
    char *resp = NULL, *body = NULL;
    size_t len;
    json_t *o;

    if (jinn_cli_help(argc, argv, usage)) {
        return 0;
    }
    if (argc < 1) {
        fputs(usage, stderr);
        return 2;
    }
    verb = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--allow") == 0) {
            if (n_allow == JINN_AUTH_RULE_COUNT_MAX) {
                fprintf(stderr, "jinn: at most %d rules\n", JINN_AUTH_RULE_COUNT_MAX);
                return 2;
            }
            allow[n_allow++] = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--ttl") == 0) {
            ttl = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--token") == 0) {
            token = argv[++i];
        } else if (argv[i][0] != '-' && name == NULL) {
            name = argv[i];
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_init(&headers);
    jinn_wbuf_printf(&target, "/v1/tokens");
    if (token != NULL) {
        if (strpbrk(token, "\r\n") != NULL) {
            fprintf(stderr, "jinn: a token is one line\n");
            rv = 2;
            goto cleanup;
        }
        jinn_wbuf_printf(&headers, "Authorization: Bearer %s\r\n", token);
    }
    jinn_wbuf_printf(&headers, "Content-Type: application/json\r\n");
    jinn_wbuf_put_u8(&headers, 0);
    if (strcmp(verb, "create") == 0) {
        json_t *doc, *rules = json_array();
        if (name == NULL || n_allow == 0) {
            fprintf(stderr, "jinn: token create needs NAME and at least one --allow\n%s",
                    usage);
            json_decref(rules);
            rv = 2;
            goto cleanup;
        }
        for (int i = 0; i < n_allow; i++) {
            json_array_append_new(rules, json_string(allow[i]));
        }
        doc = json_pack("{s:s, s:o}", "name", name, "allow", rules);
        if (ttl != NULL) {
            uint64_t ms = duration_ms(ttl);
            if (ms == 0) {
                fprintf(stderr, "jinn: --ttl: a duration like 90s, 30m, 12h, 7d\n");
                json_decref(doc);
                rv = 2;
                goto cleanup;
            }
            json_object_set_new(doc, "ttl_ms", json_integer((json_int_t)ms));
        }
        body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        rv = jinn_cli_call(addr, "POST", &target, (const char *)headers.data, body ? body : "",
                           body ? strlen(body) : 0, &resp, &len, &status);
    } else if (strcmp(verb, "ls") == 0 && name == NULL) {
        rv = jinn_cli_call(addr, "GET", &target, (const char *)headers.data, "", 0, &resp, &len,
                           &status);
    } else if (strcmp(verb, "revoke") == 0 && name != NULL) {
        jinn_wbuf_put_u8(&target, '/');
        jinn_cli_escape(&target, name, strlen(name));
        rv = jinn_cli_call(addr, "DELETE", &target, (const char *)headers.data, "", 0, &resp,
                           &len, &status);
    } else {
        fprintf(stderr, "jinn: token %s: wrong arguments\n%s", verb, usage);
        rv = 2;
        goto cleanup;
    }
    if (rv != 0) {
        goto cleanup;
    }
    o = json_loadb(resp, len, 0, NULL);
    if (json || o == NULL) {
        printf("%.*s\n", (int)len, resp);
    } else if (strcmp(verb, "create") == 0) {
        /* the token alone on stdout (for $(...)); it is never shown again */
        printf("%s\n", json_string_value(json_object_get(o, "token")));
        fprintf(stderr, "token '%s' created; store it now, it is not shown again\n", name);
    } else if (strcmp(verb, "ls") == 0) {
        size_t i, j;
        json_t *t, *r;
        json_array_foreach(json_object_get(o, "tokens"), i, t)
        {
            printf("%s\t", json_string_value(json_object_get(t, "name")));
            json_array_foreach(json_object_get(t, "allow"), j, r)
            {
                printf("%s%s", j ? " " : "", json_string_value(r));
            }
            if (json_object_get(t, "expires_ms") != NULL) {
                printf("\texpires_ms %" JSON_INTEGER_FORMAT,
                       json_integer_value(json_object_get(t, "expires_ms")));
            }
            printf("\n");
        }
    } else {
        printf("revoked\n");
    }
    json_decref(o);

cleanup:
    jinn_free(body);
    jinn_free(resp);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&headers);
    return rv;
}
