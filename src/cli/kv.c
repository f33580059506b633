/* cli/kv.c - `jinn kv ...`: the key-value API from the shell.
 *
 *   jinn kv put    NS KEY [VALUE|-] [--ttl D]
 *   jinn kv create NS KEY [VALUE|-] [--ttl D]     only if absent
 *   jinn kv cas    NS KEY REV [VALUE|-] [--ttl D] only if at revision REV
 *   jinn kv get    NS KEY [--stale|--linearizable]
 *   jinn kv del    NS KEY [--rev REV]
 *   jinn kv ls     NS [--prefix P] [--limit N] [--values] [--stale]
 *   jinn kv watch  NS [--prefix P] [--after REV]
 *
 * VALUE "-" (or no VALUE) reads stdin. Exit 0 on success, 1 on an error
 * from the node (its message on stderr), 2 on bad usage. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"

#define STDIN_MAX (64u << 20)

static const char usage[] =
    "usage: jinn kv put|create NS KEY [VALUE|-] [--ttl D]\n"
    "       jinn kv cas NS KEY REV [VALUE|-] [--ttl D]\n"
    "       jinn kv get NS KEY [--stale|--linearizable] [--min-index N]\n"
    "       jinn kv del NS KEY [--rev REV]\n"
    "       jinn kv ls NS [--prefix P] [--limit N] [--values] [--stale] [--min-index N]\n"
    "       jinn kv watch NS [--prefix P] [--after REV]\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

struct kv_args {
    const char *addr;
    const char *pos[4];
    int n_pos;
    const char *ttl, *rev, *prefix, *limit, *after, *consistency, *min_index;
    int values, json;
};

static int parse(int argc, char **argv, struct kv_args *a)
{
    const char *env = getenv("JINN_ADDR");
    memset(a, 0, sizeof *a);
    a->addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        const char **slot = NULL;
        if (strcmp(o, "--addr") == 0) {
            slot = &a->addr;
        } else if (strcmp(o, "--ttl") == 0) {
            slot = &a->ttl;
        } else if (strcmp(o, "--rev") == 0) {
            slot = &a->rev;
        } else if (strcmp(o, "--prefix") == 0) {
            slot = &a->prefix;
        } else if (strcmp(o, "--limit") == 0) {
            slot = &a->limit;
        } else if (strcmp(o, "--after") == 0) {
            slot = &a->after;
        } else if (strcmp(o, "--min-index") == 0) {
            slot = &a->min_index;
        } else if (strcmp(o, "--values") == 0) {
            a->values = 1;
            continue;
        } else if (strcmp(o, "--json") == 0) {
            a->json = 1;
            continue;
        } else if (strcmp(o, "--stale") == 0 || strcmp(o, "--linearizable") == 0) {
            a->consistency = o + 2;
            continue;
        } else if (o[0] == '-' && o[1] == '-') {
            fprintf(stderr, "jinn: unknown option '%s'\n%s", o, usage);
            return 2;
        } else {
            if (a->n_pos == 4) {
                fprintf(stderr, "jinn: too many arguments\n%s", usage);
                return 2;
            }
            a->pos[a->n_pos++] = o;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "jinn: %s needs a value\n%s", o, usage);
            return 2;
        }
        *slot = argv[++i];
    }
    return 0;
}

/* Builds /v1/kv/NS[/KEY][?query...] */
static void path(struct jinn_wbuf *w, const char *ns, const char *key)
{
    jinn_wbuf_printf(w, "/v1/kv/");
    jinn_cli_escape(w, ns, strlen(ns));
    if (key != NULL) {
        jinn_wbuf_put_u8(w, '/');
        jinn_cli_escape(w, key, strlen(key));
    }
}

static int cmd_write(const struct kv_args *a, const char *verb)
{
    bool is_cas = strcmp(verb, "cas") == 0;
    int need = is_cas ? 3 : 2;
    struct jinn_wbuf target, value, headers;
    const char *v;
    char *resp = NULL;
    size_t resp_len;
    int status, rv = 1;
    bool first = true;

    if (a->n_pos < need || a->n_pos > need + 1) {
        fprintf(stderr, "jinn: kv %s: wrong number of arguments\n%s", verb, usage);
        return 2;
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_init(&value);
    jinn_wbuf_init(&headers);
    path(&target, a->pos[0], a->pos[1]);
    jinn_cli_query(&target, &first, "ttl", a->ttl);
    if (strcmp(verb, "create") == 0) {
        jinn_wbuf_printf(&headers, "If-None-Match: *\r\n");
    } else if (is_cas) {
        jinn_wbuf_printf(&headers, "If-Match: \"%s\"\r\n", a->pos[2]);
    }
    jinn_wbuf_put_u8(&headers, 0);
    v = a->n_pos > need ? a->pos[need] : "-";
    if (strcmp(v, "-") == 0) {
        if (jinn_cli_read_stdin(&value, STDIN_MAX) != 0) {
            goto out;
        }
    } else {
        jinn_wbuf_put_raw(&value, v, strlen(v));
    }
    rv = jinn_cli_call(a->addr, "PUT", &target, (const char *)headers.data,
              value.data ? (const char *)value.data : "", value.len, &resp, &resp_len,
              &status);
    if (rv == 0) {
        if (a->json) {
            printf("%.*s\n", (int)resp_len, resp);
        } else {
            json_t *o = json_loadb(resp, resp_len, 0, NULL);
            printf("revision %" JSON_INTEGER_FORMAT "\n",
                   json_integer_value(json_object_get(o, "revision")));
            json_decref(o);
        }
    }
out:
    jinn_free(resp);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&value);
    jinn_wbuf_free(&headers);
    return rv;
}

static int cmd_get(const struct kv_args *a)
{
    struct jinn_wbuf target;
    char *resp = NULL;
    size_t len;
    int status, rv;
    bool first = true;
    if (a->n_pos != 2) {
        fprintf(stderr, "jinn: kv get NS KEY\n%s", usage);
        return 2;
    }
    jinn_wbuf_init(&target);
    path(&target, a->pos[0], a->pos[1]);
    jinn_cli_query(&target, &first, "consistency", a->consistency);
    rv = jinn_cli_call(a->addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
    if (rv == 0) {
        fwrite(resp, 1, len, stdout);
        if (len > 0 && resp[len - 1] != '\n' && isatty(1)) {
            putchar('\n');
        }
    }
    jinn_free(resp);
    jinn_wbuf_free(&target);
    return rv;
}

static int cmd_del(const struct kv_args *a)
{
    struct jinn_wbuf target, headers;
    char *resp = NULL;
    size_t len;
    int status, rv;
    if (a->n_pos != 2) {
        fprintf(stderr, "jinn: kv del NS KEY [--rev REV]\n%s", usage);
        return 2;
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_init(&headers);
    path(&target, a->pos[0], a->pos[1]);
    if (a->rev) {
        jinn_wbuf_printf(&headers, "If-Match: \"%s\"\r\n", a->rev);
    }
    jinn_wbuf_put_u8(&headers, 0);
    rv = jinn_cli_call(a->addr, "DELETE", &target, (const char *)headers.data, "", 0, &resp, &len, &status);
    if (rv == 0) {
        printf("%s\n", a->json ? resp : "deleted");
    }
    jinn_free(resp);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&headers);
    return rv;
}

static void print_item(json_t *item, bool with_type)
{
    json_t *v = json_object_get(item, "value");
    json_t *b = json_object_get(item, "value_base64");
    if (with_type) {
        printf("%-6s ", json_string_value(json_object_get(item, "type")));
    }
    printf("%" JSON_INTEGER_FORMAT "\t%s", json_integer_value(json_object_get(item, "revision")),
           json_string_value(json_object_get(item, "key")));
    if (json_is_string(v)) {
        printf("\t%s", json_string_value(v));
    } else if (json_is_string(b)) {
        printf("\tbase64:%s", json_string_value(b));
    }
    putchar('\n');
}

static int cmd_ls(const struct kv_args *a)
{
    struct jinn_wbuf target;
    char *resp = NULL;
    size_t len;
    int status, rv;
    bool first = true;
    if (a->n_pos != 1) {
        fprintf(stderr, "jinn: kv ls NS\n%s", usage);
        return 2;
    }
    jinn_wbuf_init(&target);
    path(&target, a->pos[0], NULL);
    jinn_cli_query(&target, &first, "prefix", a->prefix);
    jinn_cli_query(&target, &first, "limit", a->limit);
    jinn_cli_query(&target, &first, "values", a->values ? "1" : NULL);
    jinn_cli_query(&target, &first, "consistency", a->consistency);
    rv = jinn_cli_call(a->addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
    if (rv == 0 && a->json) {
        printf("%.*s\n", (int)len, resp);
    } else if (rv == 0) {
        json_t *o = json_loadb(resp, len, 0, NULL);
        size_t i;
        json_t *item;
        json_array_foreach(json_object_get(o, "keys"), i, item)
        {
            print_item(item, false);
        }
        if (json_is_true(json_object_get(o, "more"))) {
            printf("... more (use --limit or --prefix)\n");
        }
        json_decref(o);
    }
    jinn_free(resp);
    jinn_wbuf_free(&target);
    return rv;
}

static int cmd_watch(const struct kv_args *a)
{
    char after[32];
    if (a->n_pos != 1) {
        fprintf(stderr, "jinn: kv watch NS\n%s", usage);
        return 2;
    }
    snprintf(after, sizeof after, "%s", a->after ? a->after : "");
    jinn_cli_timeout_ms = 40000;
    for (;;) {
        struct jinn_wbuf target;
        char *resp = NULL;
        size_t len, i;
        int status, rv;
        bool first = true;
        json_t *o, *ev;
        jinn_wbuf_init(&target);
        path(&target, a->pos[0], NULL);
        jinn_cli_query(&target, &first, "watch", "1");
        jinn_cli_query(&target, &first, "prefix", a->prefix);
        jinn_cli_query(&target, &first, "after", after[0] ? after : NULL);
        jinn_cli_query(&target, &first, "timeout", "30s");
        rv = jinn_cli_call(a->addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
        jinn_wbuf_free(&target);
        if (rv != 0) {
            return rv;
        }
        o = json_loadb(resp, len, 0, NULL);
        jinn_free(resp);
        json_array_foreach(json_object_get(o, "events"), i, ev)
        {
            if (a->json) {
                json_dumpf(ev, stdout, JSON_COMPACT);
                putchar('\n');
            } else {
                print_item(ev, true);
            }
        }
        fflush(stdout);
        snprintf(after, sizeof after, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(o, "revision")));
        json_decref(o);
    }
}

int jinn_cli_kv(int argc, char **argv)
{
    struct kv_args a;
    int rv;
    if (jinn_cli_help(argc, argv, usage)) {
        return 0;
    }
    if (argc < 1) {
        fputs(usage, stderr);
        return 2;
    }
    rv = parse(argc - 1, argv + 1, &a);
    if (rv == 0 && a.min_index != NULL) {
        char *end;
        jinn_cli_min_index = strtoull(a.min_index, &end, 10);
        if (*a.min_index < '0' || *a.min_index > '9' || *end != '\0') {
            fprintf(stderr, "jinn: --min-index needs a raft index (a number)\n%s", usage);
            return 2;
        }
    }
    if (rv != 0) {
        return rv;
    }
    if (strcmp(argv[0], "put") == 0 || strcmp(argv[0], "create") == 0 ||
        strcmp(argv[0], "cas") == 0) {
        return cmd_write(&a, argv[0]);
    }
    if (strcmp(argv[0], "get") == 0) {
        return cmd_get(&a);
    }
    if (strcmp(argv[0], "del") == 0) {
        return cmd_del(&a);
    }
    if (strcmp(argv[0], "ls") == 0) {
        return cmd_ls(&a);
    }
    if (strcmp(argv[0], "watch") == 0) {
        return cmd_watch(&a);
    }
    fprintf(stderr, "jinn: unknown kv command '%s'\n%s", argv[0], usage);
    return 2;
}
