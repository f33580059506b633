/* cli/lock.c - `jinn lock ...`: the distributed mutex from the shell.
 *
 *   jinn lock acquire NAME --owner WHO [--ttl D] [--wait D]   prints the token
 *   jinn lock refresh NAME TOKEN [--ttl D]
 *   jinn lock release NAME TOKEN
 *   jinn lock show NAME
 *   jinn lock ls
 *
 * Exit 0 on success, 1 when the node refuses (held by another, stale token)
 * or cannot be reached, 2 on bad usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"

static const char usage[] =
    "usage: jinn lock acquire NAME --owner WHO [--ttl D] [--wait D]\n"
    "       jinn lock refresh NAME TOKEN [--ttl D]\n"
    "       jinn lock release NAME TOKEN\n"
    "       jinn lock show NAME | jinn lock ls\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

int jinn_cli_lock(int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *owner = NULL, *ttl = NULL, *wait = NULL, *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0, json = 0, status, rv, want;
    const char *verb, *method = "POST", *suffix = "";
    struct jinn_wbuf target;
    char *resp = NULL;
    size_t len;
    bool first = true;
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
        } else if (i + 1 < argc && strcmp(argv[i], "--owner") == 0) {
            owner = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--ttl") == 0) {
            ttl = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--wait") == 0) {
            wait = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (argv[i][0] != '-' && n_pos < 3) {
            pos[n_pos++] = argv[i];
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    if (strcmp(verb, "acquire") == 0) {
        want = 1;
    } else if (strcmp(verb, "refresh") == 0) {
        want = 2;
        suffix = "/refresh";
    } else if (strcmp(verb, "release") == 0) {
        want = 2;
        method = "DELETE";
    } else if (strcmp(verb, "show") == 0) {
        want = 1;
        method = "GET";
    } else if (strcmp(verb, "ls") == 0) {
        want = 0;
        method = "GET";
    } else {
        fprintf(stderr, "jinn: unknown lock command '%s'\n%s", verb, usage);
        return 2;
    }
    if (n_pos != want || (want == 1 && strcmp(verb, "acquire") == 0 && owner == NULL)) {
        fprintf(stderr, "jinn: lock %s: wrong arguments\n%s", verb, usage);
        return 2;
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_printf(&target, "/v1/locks");
    if (want > 0) {
        jinn_wbuf_put_u8(&target, '/');
        jinn_cli_escape(&target, pos[0], strlen(pos[0]));
        jinn_wbuf_printf(&target, "%s", suffix);
    }
    jinn_cli_query(&target, &first, "owner", owner);
    jinn_cli_query(&target, &first, "ttl", ttl);
    jinn_cli_query(&target, &first, "wait", wait);
    if (wait != NULL) {
        jinn_cli_timeout_ms = 310000;
    }
    jinn_cli_query(&target, &first, "token", want == 2 ? pos[1] : NULL);
    rv = jinn_cli_call(addr, method, &target, NULL, "", 0, &resp, &len, &status);
    jinn_wbuf_free(&target);
    if (rv != 0) {
        return rv;
    }
    o = json_loadb(resp, len, 0, NULL);
    if (json || o == NULL) {
        printf("%.*s\n", (int)len, resp);
    } else if (strcmp(verb, "ls") == 0) {
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(o, "locks"), i, k)
        {
            printf("%s\towner %s\ttoken %" JSON_INTEGER_FORMAT "\texpires in %" JSON_INTEGER_FORMAT
                   " ms\n",
                   json_string_value(json_object_get(k, "name")),
                   json_string_value(json_object_get(k, "owner")),
                   json_integer_value(json_object_get(k, "token")),
                   json_integer_value(json_object_get(k, "expires_in_ms")));
        }
    } else if (strcmp(verb, "release") == 0) {
        printf("released\n");
    } else {
        printf("%s token %" JSON_INTEGER_FORMAT " owner %s expires in %" JSON_INTEGER_FORMAT
               " ms\n",
               strcmp(verb, "show") == 0 ? "held" : "leader",
               json_integer_value(json_object_get(o, "token")),
               json_string_value(json_object_get(o, "owner")),
               json_integer_value(json_object_get(o, "expires_in_ms")));
    }
    json_decref(o);
    jinn_free(resp);
    return 0;
}
