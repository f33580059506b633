/* cli/sql.c - `jinn sql ...`: statements from the shell, and a small shell.
 *
 *   jinn sql exec  DB "SQL" [PARAM...]   one statement through the log
 *   jinn sql query DB "SQL" [PARAM...]   one read-only statement
 *   jinn sql DB                          interactive: statements end with ';'
 *
 * PARAMs that parse as JSON (numbers, null, true, "quoted") are passed as
 * such; anything else is text. Results print as an aligned table. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"

static const char usage[] =
    "usage: jinn sql exec DB \"SQL\" [PARAM...]\n"
    "       jinn sql query DB \"SQL\" [PARAM...]\n"
    "       jinn sql DB            (interactive; end statements with ';', .quit to leave)\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json,\n"
    "         --min-index N (read at least what index N wrote; the shell passes\n"
    "         the last index it saw, so you always see your own writes)\n";

static json_t *params_of(int argc, char **argv)
{
    json_t *list = json_array();
    for (int i = 0; i < argc && list; i++) {
        json_t *v = json_loads(argv[i], JSON_DECODE_ANY, NULL);
        json_array_append_new(list, v ? v : json_string(argv[i]));
    }
    return list;
}

static void print_table(json_t *res)
{
    json_t *cols = json_object_get(res, "columns"), *rows = json_object_get(res, "rows");
    size_t nc = json_array_size(cols), i, j;
    size_t width[64] = {0};
    json_t *row, *v;
    if (nc > 64) {
        nc = 64;
    }
    for (j = 0; j < nc; j++) {
        width[j] = strlen(json_string_value(json_array_get(cols, j)));
    }
    json_array_foreach(rows, i, row)
    {
        for (j = 0; j < nc; j++) {
            json_t *cell = json_array_get(row, j);
            char *text = json_is_string(cell) ? NULL : json_dumps(cell, JSON_ENCODE_ANY);
            size_t w = json_is_string(cell) ? json_string_length(cell) : text ? strlen(text) : 4;
            width[j] = w > width[j] ? (w > 40 ? 40 : w) : width[j];
            jinn_free(text);
        }
    }
    for (j = 0; j < nc; j++) {
        printf("%s%-*s", j ? " | " : "", (int)width[j], json_string_value(json_array_get(cols, j)));
    }
    putchar('\n');
    json_array_foreach(rows, i, row)
    {
        for (j = 0; j < nc; j++) {
            v = json_array_get(row, j);
            if (json_is_string(v)) {
                printf("%s%-*.*s", j ? " | " : "", (int)width[j], (int)width[j],
                       json_string_value(v));
            } else {
                char *text = json_dumps(v, JSON_ENCODE_ANY);
                printf("%s%-*.*s", j ? " | " : "", (int)width[j], (int)width[j],
                       text ? text : "?");
                jinn_free(text);
            }
        }
        putchar('\n');
    }
    printf("(%zu row%s)\n", json_array_size(rows), json_array_size(rows) == 1 ? "" : "s");
}

/* Sends one statement; query (read-only) or exec. Returns 0 on success. */
static int send_sql(const char *addr, const char *db, bool query, const char *sql,
                    json_t *params, int as_json)
{
    struct jinn_wbuf t;
    json_t *body;
    char *text, *resp = NULL;
    size_t len;
    int status, rv;

    if (query) {
        body = json_pack("{s:s, s:O}", "sql", sql, "params", params);
    } else {
        body = json_pack("{s:[{s:s, s:O}]}", "statements", "sql", sql, "params", params);
    }
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        fprintf(stderr, "jinn: out of memory\n");
        return 1;
    }
    jinn_wbuf_init(&t);
    jinn_wbuf_printf(&t, "/v1/sql/");
    jinn_cli_escape(&t, db, strlen(db));
    jinn_wbuf_printf(&t, query ? "/query" : "/exec");
    rv = jinn_cli_call(addr, "POST", &t, "Content-Type: application/json\r\n", text, strlen(text),
                       &resp, &len, &status);
    jinn_wbuf_free(&t);
    jinn_free(text);
    if (rv != 0) {
        return rv;
    }
    if (as_json) {
        printf("%.*s\n", (int)len, resp);
    } else {
        json_t *res = json_loadb(resp, len, 0, NULL);
        if (query) {
            print_table(res);
        } else {
            json_t *r = json_array_get(json_object_get(res, "results"), 0);
            printf("ok, %" JSON_INTEGER_FORMAT " row(s) changed, last id %" JSON_INTEGER_FORMAT
                   "\n",
                   json_integer_value(json_object_get(r, "rows_affected")),
                   json_integer_value(json_object_get(r, "last_insert_id")));
        }
        json_decref(res);
    }
    jinn_free(resp);
    return 0;
}

/* Statements that only read go to /query, the rest to /exec. */
static bool reads_only(const char *sql)
{
    while (*sql == ' ' || *sql == '\t' || *sql == '\n') {
        sql++;
    }
    return strncasecmp(sql, "select", 6) == 0 || strncasecmp(sql, "with", 4) == 0 ||
           strncasecmp(sql, "explain", 7) == 0 || strncasecmp(sql, "values", 6) == 0;
}

static int shell(const char *addr, const char *db, int as_json)
{
    struct jinn_wbuf stmt;
    char line[65536];
    bool tty = isatty(0);
    int failures = 0;
    jinn_wbuf_init(&stmt);
    if (tty) {
        printf("jinn sql shell on %s at %s; end statements with ';', .quit to leave\n", db, addr);
    }
    for (;;) {
        char *semi;
        if (tty) {
            printf(stmt.len ? "   ...> " : "jinn> ");
            fflush(stdout);
        }
        if (fgets(line, sizeof line, stdin) == NULL) {
            break;
        }
        if (stmt.len == 0 && (strncmp(line, ".quit", 5) == 0 || strncmp(line, ".exit", 5) == 0)) {
            break;
        }
        jinn_wbuf_put_raw(&stmt, line, strlen(line));
        jinn_wbuf_put_u8(&stmt, 0);
        stmt.len--;
        semi = strrchr((char *)stmt.data, ';');
        if (semi == NULL || strspn(semi + 1, " \t\r\n") != strlen(semi + 1)) {
            continue;
        }
        *semi = '\0';
        {
            json_t *none = json_array();
            /* Read-your-writes: never read older than what was last seen. */
            jinn_cli_min_index = jinn_cli_last_index;
            failures += send_sql(addr, db, reads_only((const char *)stmt.data),
                                 (const char *)stmt.data, none, as_json) != 0;
            json_decref(none);
        }
        stmt.len = 0;
    }
    jinn_wbuf_free(&stmt);
    return failures ? 1 : 0;
}

int jinn_cli_sql(int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    char *pos[64];
    int n = 0, as_json = 0, rv;
    json_t *params;

    if (jinn_cli_help(argc, argv, usage)) {
        return 0;
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = 1;
        } else if (strcmp(argv[i], "--min-index") == 0 && i + 1 < argc) {
            char *end;
            const char *v = argv[++i];
            jinn_cli_min_index = strtoull(v, &end, 10);
            if (*v < '0' || *v > '9' || *end != '\0') {
                fprintf(stderr, "jinn: --min-index needs a raft index (a number)\n");
                return 2;
            }
            jinn_cli_last_index = jinn_cli_min_index;
        } else if (n < 64) {
            pos[n++] = argv[i];
        }
    }
    if (n == 1) {
        return shell(addr, pos[0], as_json);
    }
    if (n < 3 || (strcmp(pos[0], "exec") != 0 && strcmp(pos[0], "query") != 0)) {
        fputs(usage, stderr);
        return 2;
    }
    params = params_of(n - 3, pos + 3);
    rv = send_sql(addr, pos[1], strcmp(pos[0], "query") == 0, pos[2], params, as_json);
    json_decref(params);
    return rv;
}
