/* cli/members.c - `jinn members ...`: cluster membership from the shell.
 *
 *   jinn members [list]                      every member, as the leader sees it
 *   jinn members add NAME=HOST:PORT [--standby]
 *   jinn members remove NAME|ID
 *   jinn members promote NAME|ID
 *   jinn members demote NAME|ID
 *   jinn leader transfer [NAME|ID]
 *
 * HOST:PORT is the new node's raft address (its cluster_listen, or what
 * peers dial). The leader probes it for the node's id, so nobody types ids.
 * Exit 0 on success, 1 when refused or unreachable, 2 on bad usage. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"

/* A voter's catch-up may take a while: the leader answers when it is done. */
#define MEMBERS_CHANGE_TIMEOUT_MS 130000

static const char usage[] =
    "usage: jinn members [list]\n"
    "       jinn members add NAME=HOST:PORT [--standby]   HOST:PORT: its raft address\n"
    "       jinn members remove NAME|ID\n"
    "       jinn members promote NAME|ID | jinn members demote NAME|ID\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

static void print_list(json_t *o)
{
    size_t i;
    json_t *m;
    printf("%-12s %-17s %-8s %-9s %-8s %-11s %-22s %s\n", "NAME", "ID", "ROLE", "REACHABLE",
           "CONTACT", "MATCH", "RAFT", "API");
    json_array_foreach(json_object_get(o, "members"), i, m)
    {
        json_t *reach = json_object_get(m, "reachable");
        json_t *contact = json_object_get(m, "last_contact_ms");
        json_t *match = json_object_get(m, "match_index");
        const char *api = json_string_value(json_object_get(m, "api"));
        char contact_s[32] = "-", match_s[32] = "-";
        if (json_is_integer(contact)) {
            snprintf(contact_s, sizeof contact_s, "%" JSON_INTEGER_FORMAT "ms",
                     json_integer_value(contact));
        }
        if (json_is_integer(match)) {
            snprintf(match_s, sizeof match_s, "%" JSON_INTEGER_FORMAT,
                     json_integer_value(match));
        }
        printf("%-12s %-17" JSON_INTEGER_FORMAT " %-8s %-9s %-8s %-11s %-22s %s\n",
               json_string_value(json_object_get(m, "name")),
               json_integer_value(json_object_get(m, "id")),
               json_string_value(json_object_get(m, "role")),
               json_is_boolean(reach) ? (json_is_true(reach) ? "yes" : "NO") : "-", contact_s,
               match_s, json_string_value(json_object_get(m, "address")), api ? api : "-");
    }
    printf("leader %s, last index %" JSON_INTEGER_FORMAT ", cluster %s\n",
           json_string_value(json_object_get(o, "leader"))
               ? json_string_value(json_object_get(o, "leader"))
               : "none",
           json_integer_value(json_object_get(o, "last_index")),
           json_string_value(json_object_get(o, "cluster_id")));
}

int jinn_cli_members(int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *verb = "list", *arg = NULL, *method = "GET";
    int json = 0, standby = 0, status, rv;
    struct jinn_wbuf target;
    char *resp = NULL, *body = NULL;
    size_t len;
    json_t *o;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--standby") == 0) {
            standby = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (i == 0 && argv[i][0] != '-') {
            verb = argv[i];
        } else if (arg == NULL && argv[i][0] != '-') {
            arg = argv[i];
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_printf(&target, "/v1/cluster/members");
    if (strcmp(verb, "list") == 0 || strcmp(verb, "ls") == 0) {
        if (arg != NULL) {
            fprintf(stderr, "jinn: members list takes no argument\n%s", usage);
            jinn_wbuf_free(&target);
            return 2;
        }
    } else if (strcmp(verb, "add") == 0) {
        const char *eq = arg ? strchr(arg, '=') : NULL;
        json_t *b;
        if (eq == NULL || eq == arg || eq[1] == '\0') {
            fprintf(stderr, "jinn: members add NAME=HOST:PORT\n%s", usage);
            jinn_wbuf_free(&target);
            return 2;
        }
        b = json_pack("{s:s%, s:s, s:b}", "name", arg, (size_t)(eq - arg), "address", eq + 1,
                      "standby", standby);
        body = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        method = "POST";
        jinn_wbuf_printf(&target, "?wait=1"); /* a forwarding follower waits as long */
        jinn_cli_timeout_ms = MEMBERS_CHANGE_TIMEOUT_MS;
    } else if (strcmp(verb, "remove") == 0 || strcmp(verb, "rm") == 0 ||
               strcmp(verb, "promote") == 0 || strcmp(verb, "demote") == 0) {
        if (arg == NULL) {
            fprintf(stderr, "jinn: members %s NAME|ID\n%s", verb, usage);
            jinn_wbuf_free(&target);
            return 2;
        }
        jinn_wbuf_put_u8(&target, '/');
        jinn_cli_escape(&target, arg, strlen(arg));
        if (verb[0] == 'r') {
            method = "DELETE";
        } else {
            method = "POST";
            jinn_wbuf_printf(&target, "/%s?wait=1", verb);
            jinn_cli_timeout_ms = MEMBERS_CHANGE_TIMEOUT_MS;
        }
    } else {
        fprintf(stderr, "jinn: unknown members command '%s'\n%s", verb, usage);
        jinn_wbuf_free(&target);
        return 2;
    }
    rv =
        jinn_cli_call(addr, method, &target, body ? "Content-Type: application/json\r\n" : NULL,
                      body ? body : "", body ? strlen(body) : 0, &resp, &len, &status);
    jinn_wbuf_free(&target);
    jinn_free(body); /* json_dumps allocates through jinn_malloc (see main.c) */
    if (rv != 0) {
        return rv;
    }
    o = json_loadb(resp, len, 0, NULL);
    if (json || o == NULL) {
        printf("%.*s\n", (int)len, resp);
    } else if (strcmp(method, "GET") == 0) {
        print_list(o);
    } else {
        const char *msg = json_string_value(json_object_get(o, "message"));
        printf("%s\n", msg != NULL ? msg : "done");
    }
    json_decref(o);
    jinn_free(resp);
    return 0;
}

int jinn_cli_leader(int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *to = NULL;
    int json = 0, status, rv, n_pos = 0;
    struct jinn_wbuf target;
    bool first = true;
    char *resp = NULL;
    size_t len;
    json_t *o;
    static const char leader_usage[] =
        "usage: jinn leader transfer [NAME|ID]   hand leadership over (default: the most\n"
        "                                       up-to-date voter)\n"
        "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(leader_usage, stdout);
            return 0;
        } else if (argv[i][0] != '-' && n_pos == 0 && strcmp(argv[i], "transfer") == 0) {
            n_pos++;
        } else if (argv[i][0] != '-' && n_pos == 1 && to == NULL) {
            to = argv[i];
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\n%s", argv[i], leader_usage);
            return 2;
        }
    }
    if (n_pos != 1) {
        fputs(leader_usage, stderr);
        return 2;
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_printf(&target, "/v1/cluster/leader/transfer");
    jinn_cli_query(&target, &first, "to", to);
    rv = jinn_cli_call(addr, "POST", &target, NULL, "", 0, &resp, &len, &status);
    jinn_wbuf_free(&target);
    if (rv != 0) {
        return rv;
    }
    o = json_loadb(resp, len, 0, NULL);
    if (json || o == NULL) {
        printf("%.*s\n", (int)len, resp);
    } else {
        const char *msg = json_string_value(json_object_get(o, "message"));
        printf("%s\n", msg != NULL ? msg : "done");
    }
    json_decref(o);
    jinn_free(resp);
    return 0;
}
