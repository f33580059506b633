/* cli/sql.c - `jinn sql ...`: statements from the shell, and a small shell.
 *
 *   jinn sql exec  DB "SQL" [PARAM...]   one statement through the log
 *   jinn sql query DB "SQL" [PARAM...]   one read-only statement
 *   jinn sql DB                          interactive: statements end with ';'
 *
 * PARAMs that parse as JSON (numbers, null, true, "quoted") are passed as
 * such; anything else is text. Results print as an aligned table (or, in
 * the shell, as .mode says).
 *
 * The shell reads plain lines (no readline/libedit: no dependency, and it
 * runs the same on a pipe); what was typed on a terminal is appended to a
 * history file, $XDG_STATE_HOME/jinn/sql_history, else
 * $HOME/.jinn_sql_history, cut to its last SQL_HISTORY_LINES lines. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"

#define SQL_HISTORY_LINES 1000
#define SQL_HISTORY_LINE_MAX 4096 /* longer lines are not kept */
#define SQL_STATEMENT_MAX (1u << 20) /* what the shell gathers before a ';' */
#define SQL_READ_DEPTH 8             /* .read inside .read */

/* MODE_LIST (values only, '|' between) is the shell's own for .tables and
 * .schema. */
enum out_mode { MODE_TABLE, MODE_JSON, MODE_CSV, MODE_LINE, MODE_LIST };

static const char usage[] =
    "usage: jinn sql exec DB \"SQL\" [PARAM...]\n"
    "       jinn sql query DB \"SQL\" [PARAM...]\n"
    "       jinn sql DB            (interactive; end statements with ';', .help for more)\n"
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

/* One cell as text: strings as they are, the rest as JSON (null, 12, 1.5). */
static char *cell_text(json_t *v)
{
    if (json_is_string(v)) {
        return jinn_strndup(json_string_value(v), json_string_length(v));
    }
    return json_dumps(v, JSON_ENCODE_ANY);
}

/* RFC 4180: quote when the field holds a comma, quote or line break. */
static void put_csv(const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') {
            putchar('"');
        }
        putchar(*s);
    }
    putchar('"');
}

static void print_rows(json_t *res, enum out_mode mode)
{
    json_t *cols = json_object_get(res, "columns"), *rows = json_object_get(res, "rows");
    size_t nc = json_array_size(cols), i, j, wide = 0;
    json_t *row;
    if (mode == MODE_TABLE) {
        print_table(res);
        return;
    }
    for (j = 0; j < nc; j++) {
        size_t l = strlen(json_string_value(json_array_get(cols, j)));
        wide = l > wide ? l : wide;
    }
    if (mode == MODE_LIST) {
        json_array_foreach(rows, i, row)
        {
            for (j = 0; j < nc; j++) {
                char *text = cell_text(json_array_get(row, j));
                printf("%s%s", j ? "|" : "", text ? text : "?");
                jinn_free(text);
            }
            putchar('\n');
        }
        return;
    }
    if (mode == MODE_CSV) {
        for (j = 0; j < nc; j++) {
            fputs(j ? "," : "", stdout);
            put_csv(json_string_value(json_array_get(cols, j)));
        }
        fputs("\r\n", stdout);
    }
    json_array_foreach(rows, i, row)
    {
        if (mode == MODE_LINE && i > 0) {
            putchar('\n');
        }
        for (j = 0; j < nc; j++) {
            json_t *cell = json_array_get(row, j);
            char *text = cell_text(cell);
            if (mode == MODE_CSV) {
                fputs(j ? "," : "", stdout);
                put_csv(text && !json_is_null(cell) ? text : ""); /* NULL: empty, as sqlite3 */
            } else {
                printf("%*s = %s\n", (int)wide, json_string_value(json_array_get(cols, j)),
                       text ? text : "?");
            }
            jinn_free(text);
        }
        if (mode == MODE_CSV) {
            fputs("\r\n", stdout);
        }
    }
}

/* Sends one statement; query (read-only) or exec. Returns 0 on success. */
static int send_sql(const char *addr, const char *db, bool query, const char *sql,
                    json_t *params, enum out_mode mode)
{
    struct jinn_wbuf t;
    json_t *body;
    char *text, *resp = NULL;
    size_t len;
    int status, rv;

    if (!jinn_utf8_valid(sql, strlen(sql))) {
        fprintf(stderr, "jinn: the statement is not UTF-8 text; not sent\n");
        return 1;
    }
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
    if (mode == MODE_JSON) {
        printf("%.*s\n", (int)len, resp);
    } else {
        json_t *res = json_loadb(resp, len, 0, NULL);
        if (query) {
            print_rows(res, mode);
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

static const char shell_help[] =
    "statements end with ';' (SELECT/WITH/EXPLAIN/VALUES are reads, the rest go\n"
    "through the log); dot-commands take one line:\n"
    "  .help                 this text\n"
    "  .tables               the tables (and views) of this database\n"
    "  .schema [TABLE]       the CREATE statements (of TABLE only)\n"
    "  .mode table|json|csv|line   how results print (now: %s)\n"
    "  .read FILE            run the statements in FILE\n"
    "  .history              the last lines typed (file: %s)\n"
    "  .quit | .exit         leave (so does end of input)\n";

static const char *const mode_names[] = {"table", "json", "csv", "line"};

struct shell {
    const char *addr, *db;
    enum out_mode mode;
    struct jinn_wbuf stmt;
    int failures;
    int depth; /* .read nesting */
    bool quit;
    bool dropping; /* skipping the rest of a statement too long to send */
    char history[1024]; /* "" when there is no place for one */
};

/* $XDG_STATE_HOME/jinn/sql_history, else ~/.jinn_sql_history. */
static void history_path(struct shell *sh)
{
    const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    sh->history[0] = '\0';
    if (state != NULL && state[0] == '/') {
        char dir[sizeof sh->history - 16];
        int n = snprintf(dir, sizeof dir, "%s/jinn", state);
        (void)mkdir(state, 0700); /* XDG: created when missing */
        if (n > 0 && (size_t)n < sizeof dir && (mkdir(dir, 0700) == 0 || errno == EEXIST)) {
            snprintf(sh->history, sizeof sh->history, "%s/sql_history", dir);
        }
    } else if (home != NULL && home[0] == '/') {
        int n = snprintf(sh->history, sizeof sh->history, "%s/.jinn_sql_history", home);
        if (n < 0 || (size_t)n >= sizeof sh->history) {
            sh->history[0] = '\0';
        }
    }
}

/* Reads the history file's lines (at most SQL_HISTORY_LINES, the last). */
static size_t history_load(const struct shell *sh, char **lines, size_t max)
{
    char buf[SQL_HISTORY_LINE_MAX + 2];
    size_t n = 0;
    FILE *f = sh->history[0] ? fopen(sh->history, "r") : NULL;
    if (f == NULL) {
        return 0;
    }
    while (fgets(buf, sizeof buf, f) != NULL) {
        if (n == max) {
            jinn_free(lines[0]);
            memmove(lines, lines + 1, (max - 1) * sizeof *lines);
            n--;
        }
        lines[n] = jinn_strndup(buf, strlen(buf));
        n += lines[n] != NULL;
    }
    fclose(f);
    return n;
}

/* Appends a line; rewrites the file with the last SQL_HISTORY_LINES when
 * it has grown past twice that (so a write is cheap and the file bounded). */
static void history_add(const struct shell *sh, const char *line)
{
    size_t len = strlen(line);
    FILE *f;
    if (sh->history[0] == '\0' || len <= 1 || len > SQL_HISTORY_LINE_MAX) {
        return;
    }
    f = fopen(sh->history, "a");
    if (f == NULL) {
        return;
    }
    fchmod(fileno(f), 0600); /* statements can hold secrets */
    fputs(line, f);
    if (line[len - 1] != '\n') {
        fputc('\n', f);
    }
    if (ftell(f) > (long)(2 * SQL_HISTORY_LINES * 80)) {
        char **lines = jinn_calloc(SQL_HISTORY_LINES, sizeof *lines);
        size_t n;
        fclose(f);
        if (lines == NULL) {
            return;
        }
        n = history_load(sh, lines, SQL_HISTORY_LINES);
        f = fopen(sh->history, "w");
        for (size_t i = 0; i < n; i++) {
            if (f != NULL) {
                fputs(lines[i], f);
            }
            jinn_free(lines[i]);
        }
        jinn_free(lines);
    }
    if (f != NULL) {
        fclose(f);
    }
}

static void history_show(const struct shell *sh)
{
    char *lines[20];
    size_t n = history_load(sh, lines, 20);
    for (size_t i = 0; i < n; i++) {
        fputs(lines[i], stdout);
        jinn_free(lines[i]);
    }
}

static void run_query(struct shell *sh, const char *sql, const char *param)
{
    json_t *params = param ? json_pack("[s]", param) : json_array();
    jinn_cli_min_index = jinn_cli_last_index;
    sh->failures += send_sql(sh->addr, sh->db, true, sql, params, sh->mode) != 0;
    json_decref(params);
}

static void run_file(struct shell *sh, const char *path);

/* A dot-command: the line starts with '.'. */
static void dot_command(struct shell *sh, char *line)
{
    char *cmd = strtok(line, " \t\r\n"), *arg = strtok(NULL, " \t\r\n");
    enum out_mode saved = sh->mode;
    if (strcmp(cmd, ".quit") == 0 || strcmp(cmd, ".exit") == 0) {
        sh->quit = true;
    } else if (strcmp(cmd, ".help") == 0) {
        printf(shell_help, mode_names[sh->mode], sh->history[0] ? sh->history : "none");
    } else if (strcmp(cmd, ".tables") == 0) {
        if (sh->mode != MODE_JSON) {
            sh->mode = MODE_LIST; /* one name a line, no frame */
        }
        run_query(sh,
                  "SELECT name FROM sqlite_master WHERE type IN ('table','view') AND "
                  "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                  NULL);
        sh->mode = saved;
    } else if (strcmp(cmd, ".schema") == 0) {
        if (sh->mode != MODE_JSON) {
            sh->mode = MODE_LIST; /* whole statements, not cut to a column */
        }
        run_query(sh,
                  arg ? "SELECT sql || ';' AS sql FROM sqlite_master WHERE sql IS NOT NULL "
                        "AND tbl_name = ? ORDER BY type DESC, name"
                      : "SELECT sql || ';' AS sql FROM sqlite_master WHERE sql IS NOT NULL "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY tbl_name, "
                        "type DESC, name",
                  arg);
        sh->mode = saved;
    } else if (strcmp(cmd, ".mode") == 0) {
        unsigned m;
        for (m = 0; arg != NULL && m < 4 && strcmp(arg, mode_names[m]) != 0; m++) {
        }
        if (arg == NULL) {
            printf("mode %s\n", mode_names[sh->mode]);
        } else if (m == 4) {
            fprintf(stderr, "jinn: .mode table|json|csv|line\n");
            sh->failures++;
        } else {
            sh->mode = (enum out_mode)m;
        }
    } else if (strcmp(cmd, ".read") == 0) {
        if (arg == NULL) {
            fprintf(stderr, "jinn: .read FILE\n");
            sh->failures++;
        } else {
            run_file(sh, arg);
        }
    } else if (strcmp(cmd, ".history") == 0) {
        history_show(sh);
    } else {
        fprintf(stderr, "jinn: unknown command %s (.help lists them)\n", cmd);
        sh->failures++;
    }
}

/* Feeds one line: a dot-command, or part of a statement that runs when a
 * line ends with ';'. */
static void feed(struct shell *sh, char *line)
{
    char *semi;
    if (sh->dropping) {
        /* The rest of a dropped statement is never sent on its own. */
        semi = strrchr(line, ';');
        if (semi != NULL && strspn(semi + 1, " \t\r\n") == strlen(semi + 1)) {
            sh->dropping = false;
        }
        return;
    }
    if (sh->stmt.len == 0) {
        char *p = line + strspn(line, " \t");
        if (*p == '.') {
            dot_command(sh, p);
            return;
        }
        if (*p == '\n' || *p == '\0' || strncmp(p, "--", 2) == 0) {
            return;
        }
    }
    if (sh->stmt.len + strlen(line) > SQL_STATEMENT_MAX) {
        fprintf(stderr, "jinn: statement longer than %u bytes; dropped\n", SQL_STATEMENT_MAX);
        sh->stmt.len = 0;
        sh->failures++;
        semi = strrchr(line, ';');
        sh->dropping = semi == NULL || strspn(semi + 1, " \t\r\n") != strlen(semi + 1);
        return;
    }
    jinn_wbuf_put_raw(&sh->stmt, line, strlen(line));
    jinn_wbuf_put_u8(&sh->stmt, 0);
    sh->stmt.len--;
    if (sh->stmt.failed) {
        fprintf(stderr, "jinn: out of memory\n");
        sh->quit = true;
        return;
    }
    semi = strrchr((char *)sh->stmt.data, ';');
    if (semi == NULL || strspn(semi + 1, " \t\r\n") != strlen(semi + 1)) {
        return;
    }
    *semi = '\0';
    {
        json_t *none = json_array();
        /* Read-your-writes: never read older than what was last seen. */
        jinn_cli_min_index = jinn_cli_last_index;
        sh->failures += send_sql(sh->addr, sh->db, reads_only((const char *)sh->stmt.data),
                                 (const char *)sh->stmt.data, none, sh->mode) != 0;
        json_decref(none);
    }
    sh->stmt.len = 0;
}

/* Reads one whole line into w (NUL-terminated), however it is cut by
 * fgets: a line cut in two would run its tail as a line of its own (a
 * dot-command hidden after a long one). A line over SQL_STATEMENT_MAX is
 * not kept: *too_long is set and *ends_statement says whether it ended
 * with ';'. Returns false at the end of input. */
static bool read_line(FILE *in, struct jinn_wbuf *w, bool *too_long, bool *ends_statement)
{
    char chunk[65536];
    bool any = false;
    w->len = 0;
    *too_long = false;
    *ends_statement = false;
    while (fgets(chunk, sizeof chunk, in) != NULL) {
        size_t k = strlen(chunk);
        char *semi = strrchr(chunk, ';');
        any = true;
        if (semi != NULL) {
            *ends_statement = strspn(semi + 1, " \t\r\n") == strlen(semi + 1);
        } else if (strspn(chunk, " \t\r\n") != k) {
            *ends_statement = false;
        }
        if (!*too_long && w->len + k > SQL_STATEMENT_MAX) {
            *too_long = true;
        }
        if (!*too_long) {
            jinn_wbuf_put_raw(w, chunk, k);
        }
        if (k > 0 && chunk[k - 1] == '\n') {
            break;
        }
    }
    jinn_wbuf_put_u8(w, 0);
    w->len--;
    return any;
}

static void run_lines(struct shell *sh, FILE *in, bool tty)
{
    struct jinn_wbuf line;
    bool too_long, ends;
    jinn_wbuf_init(&line);
    while (!sh->quit) {
        if (tty) {
            printf(sh->stmt.len ? "   ...> " : "jinn> ");
            fflush(stdout);
        }
        if (!read_line(in, &line, &too_long, &ends)) {
            break;
        }
        if (line.failed) {
            fprintf(stderr, "jinn: out of memory\n");
            break;
        }
        if (too_long) {
            fprintf(stderr, "jinn: a line longer than %u bytes; dropped with its statement\n",
                    SQL_STATEMENT_MAX);
            sh->failures++;
            sh->stmt.len = 0;
            sh->dropping = !ends;
            continue;
        }
        if (tty) {
            history_add(sh, (char *)line.data);
        }
        feed(sh, (char *)line.data);
    }
    jinn_wbuf_free(&line);
}

static void run_file(struct shell *sh, const char *path)
{
    FILE *f;
    size_t pending = sh->stmt.len;
    if (sh->depth >= SQL_READ_DEPTH) {
        fprintf(stderr, "jinn: .read nested more than %d deep\n", SQL_READ_DEPTH);
        sh->failures++;
        return;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "jinn: .read %s: %s\n", path, strerror(errno));
        sh->failures++;
        return;
    }
    sh->depth++;
    run_lines(sh, f, false);
    sh->depth--;
    if (sh->stmt.len > pending) {
        fprintf(stderr, "jinn: %s ends inside a statement (no ';'); dropped\n", path);
        sh->stmt.len = 0;
        sh->failures++;
    }
    fclose(f);
    sh->quit = false; /* .quit in a file ends that file only */
}

static int shell(const char *addr, const char *db, int as_json)
{
    struct shell sh;
    bool tty = isatty(0);
    memset(&sh, 0, sizeof sh);
    sh.addr = addr;
    sh.db = db;
    sh.mode = as_json ? MODE_JSON : MODE_TABLE;
    jinn_wbuf_init(&sh.stmt);
    if (tty) {
        history_path(&sh);
        printf("jinn sql shell on %s at %s; end statements with ';', .help for more\n", db,
               addr);
    }
    run_lines(&sh, stdin, tty);
    jinn_wbuf_free(&sh.stmt);
    return sh.failures ? 1 : 0;
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
