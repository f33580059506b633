/* cli/fn.c - `jinn fn ...`: WebAssembly functions from the shell.
 *
 *   jinn fn deploy NAME module.wasm [--route /path] [--timeout 2s] [--memory 64MiB]
 *                  [--pool 4] [--env K=V]... [--arg A]... [--kv-read P]...
 *                  [--kv-write P]... [--db DB] [--ns NS] [--workers N] [--cron EXPR]
 *   jinn fn ls
 *   jinn fn show NAME
 *   jinn fn rm NAME [--purge]
 *   jinn fn rollback NAME [--version N]
 *   jinn fn call NAME [--data BODY|@file] [--method M] [--path /x]
 *   jinn fn logs NAME
 *   jinn fn keygen | sign | policy ...   (cli/fnsig.c)
 *   jinn fn enqueue NAME [--key IDEM] [DATA|-]
 *   jinn fn enqueue NAME --batch FILE|- [--key IDEM]
 *   jinn fn job NAME ID [--wait SECS]
 *   jinn fn jobs NAME [--limit N]
 *
 * Exit 0 on success, 1 when the node refuses or cannot be reached (for
 * call: when the function answers other than 2xx), 2 on bad usage. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"
#include "fsm/cmd.h"
#include "fsm/fn.h"

static const char usage[] =
    "usage: jinn fn deploy NAME module.wasm [--route /path] [--timeout 2s] [--memory 64MiB]\n"
    "                      [--pool 4] [--env K=V]... [--arg A]... [--kv-read PREFIX]...\n"
    "                      [--kv-write PREFIX]... [--db DB] [--ns NAMESPACE]\n"
    "                      [--workers N] [--cron 'EXPR' (UTC: '*/5 * * * *', '@every 30s')]\n"
    "       jinn fn ls                              functions and their active versions\n"
    "       jinn fn show NAME                       versions, settings, this node's state\n"
    "       jinn fn rm NAME [--purge]               deactivate (kept for rollback) or forget\n"
    "       jinn fn rollback NAME [--version N]     to N, else the version before the active\n"
    "       jinn fn call NAME [--data BODY|@FILE] [--method M] [--path /x]   (POST by default)\n"
    "       jinn fn logs NAME                       the function's last log lines on the node\n"
    "       jinn fn keygen NAME                     an ed25519 key pair: NAME.key, NAME.pub\n"
    "       jinn fn sign MODULE --key NAME.key [--name FN]   writes MODULE.sig\n"
    "       jinn fn policy [--require-signature on|off] [--trust NAME=PUBKEY]... [--untrust NAME]...\n"
    "       (deploy sends MODULE.sig when present, or --sig FILE)\n"
    "       jinn fn enqueue NAME [--key IDEM] [DATA|-]   run as a job (- reads stdin); prints its id\n"
    "       jinn fn enqueue NAME --batch FILE|- [--key IDEM]   one job per line (JSON each, at most\n"
    "                                   256); prints the ids, one a line\n"
    "       jinn fn job NAME ID [--wait SECS]       a job's state; --wait polls until it finished\n"
    "       jinn fn jobs NAME [--limit N]           recent jobs, newest first\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

/* Reads path (at most max bytes) into w. 0, or -1 with a message printed. */
static int read_file(const char *path, struct jinn_wbuf *w, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "jinn: cannot open %s: ", path);
        perror(NULL);
        return -1;
    }
    for (;;) {
        size_t n;
        if (!jinn_wbuf_reserve(w, 65536)) {
            fprintf(stderr, "jinn: out of memory\n");
            fclose(f);
            return -1;
        }
        n = fread(w->data + w->len, 1, 65536, f);
        w->len += n;
        if (w->len > max) {
            fprintf(stderr, "jinn: %s is larger than %zu bytes\n", path, max);
            fclose(f);
            return -1;
        }
        if (n < 65536) {
            break;
        }
    }
    if (ferror(f)) {
        fprintf(stderr, "jinn: cannot read %s\n", path);
        fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

static void print_summary(json_t *f)
{
    json_t *v = json_object_get(f, "version");
    const char *route = json_string_value(json_object_get(f, "route"));
    const char *sha = json_string_value(json_object_get(f, "sha256"));
    json_t *local = json_object_get(f, "local");
    if (json_is_true(json_object_get(f, "deleted"))) {
        printf("%s\tdeleted\t%" JSON_INTEGER_FORMAT " versions kept\n",
               json_string_value(json_object_get(f, "name")),
               json_integer_value(json_object_get(f, "versions")));
        return;
    }
    printf("%s\tv%" JSON_INTEGER_FORMAT "\t%.12s\t%s",
           json_string_value(json_object_get(f, "name")), json_integer_value(v),
           sha ? sha : "", route && *route ? route : "-");
    if (json_is_object(local)) {
        /* This node's view (when it runs functions). */
        json_t *errors = json_object_get(local, "errors"), *n;
        const char *k;
        json_int_t errs = 0;
        json_object_foreach(errors, k, n)
        {
            errs += json_integer_value(n);
        }
        const char *state = json_string_value(json_object_get(local, "state"));
        printf("\t%s\t%" JSON_INTEGER_FORMAT " calls\t%" JSON_INTEGER_FORMAT " errors",
               state != NULL ? state : "-",
               json_integer_value(json_object_get(local, "invocations")), errs);
    }
    putchar('\n');
}

static int call_fn(const char *addr, const char *name, const char *data, const char *method,
                   const char *path)
{
    struct jinn_wbuf target, body;
    char err[512], *resp = NULL;
    size_t len = 0;
    int status = 0, rv = 0;

    jinn_wbuf_init(&target);
    jinn_wbuf_init(&body);
    if (data != NULL && data[0] == '@') {
        if (read_file(data + 1, &body, JINN_CLI_MAX_RESPONSE) != 0) {
            rv = 1;
            goto out;
        }
    } else if (data != NULL) {
        jinn_wbuf_put_raw(&body, data, strlen(data));
    }
    if (method == NULL) {
        method = "POST";
    }
    jinn_wbuf_printf(&target, "/fn/");
    jinn_cli_escape(&target, name, strlen(name));
    if (path != NULL && *path != '\0') {
        jinn_wbuf_printf(&target, "%s%s", path[0] == '/' ? "" : "/", path);
    }
    jinn_wbuf_put_u8(&target, 0);
    if (target.failed || body.failed) {
        fprintf(stderr, "jinn: out of memory\n");
        rv = 1;
        goto out;
    }
    if (jinn_cli_request(addr, method, (const char *)target.data, NULL,
                         body.len ? (const char *)body.data : "", body.len, &status, &resp, &len,
                         err, sizeof err) != 0) {
        fprintf(stderr, "jinn: %s\n", err);
        rv = 1;
        goto out;
    }
    fwrite(resp, 1, len, stdout);
    if (len > 0 && resp[len - 1] != '\n') {
        putchar('\n');
    }
    if (status < 200 || status > 299) {
        fprintf(stderr, "jinn: the function answered %d\n", status);
        rv = 1;
    }

out:
    jinn_free(resp);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&body);
    return rv;
}

static void print_logs(const char *resp, size_t len)
{
    json_t *o = json_loadb(resp, len, 0, NULL), *lines = json_object_get(o, "lines"), *l;
    size_t i;
    if (!json_is_array(lines)) {
        printf("%.*s\n", (int)len, resp);
        json_decref(o);
        return;
    }
    json_array_foreach(lines, i, l)
    {
        const char *line = json_string_value(json_object_get(l, "line"));
        if (json_is_string(l)) {
            printf("%s\n", json_string_value(l));
        } else if (line != NULL) {
            const char *level = json_string_value(json_object_get(l, "level"));
            const char *trace = json_string_value(json_object_get(l, "trace_id"));
            printf("%s\t%s\t%s\n", level ? level : "-", trace ? trace : "-", line);
        } else {
            char *s = json_dumps(l, JSON_COMPACT);
            printf("%s\n", s ? s : "");
            jinn_free(s);
        }
    }
    json_decref(o);
}

/* ---- jobs: enqueue, job, jobs -------------------------------------------- */

#define JOB_WAIT_MAX_S 86400
#define JOB_BATCH_FILE_MAX (64u << 20) /* --batch input read; the node's max_body decides */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line for a job object: ID STATE deliveries, then what the state has. */
static void print_job_line(json_t *j)
{
    const char *state = json_string_value(json_object_get(j, "state"));
    printf("%" JSON_INTEGER_FORMAT "\t%s\tdelivery %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
           json_integer_value(json_object_get(j, "job")), state ? state : "?",
           json_integer_value(json_object_get(j, "delivery")),
           json_integer_value(json_object_get(j, "max_deliver")));
    if (json_is_string(json_object_get(j, "node"))) {
        printf("\ton %s", json_string_value(json_object_get(j, "node")));
    }
    if (json_is_integer(json_object_get(j, "status"))) {
        printf("\tstatus %" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(j, "status")));
    }
    if (json_is_string(json_object_get(j, "last_error"))) {
        printf("\t%s", json_string_value(json_object_get(j, "last_error")));
    }
    putchar('\n');
}

static void jobs_target(struct jinn_wbuf *t, const char *name, const char *id)
{
    jinn_wbuf_printf(t, "/v1/functions/");
    jinn_cli_escape(t, name, strlen(name));
    jinn_wbuf_printf(t, "/jobs");
    if (id != NULL) {
        jinn_wbuf_put_u8(t, '/');
        jinn_cli_escape(t, id, strlen(id));
    }
}

static int jobs_cli(const char *verb, int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *pos[3] = {NULL, NULL, NULL}, *key = NULL, *limit = NULL, *wait = NULL;
    const char *batch = NULL;
    int n_pos = 0, json = 0, rv = 0, status = 0, want;
    struct jinn_wbuf target, body, headers;
    char *resp = NULL;
    size_t len = 0;
    bool first = true;
    json_t *o = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--key") == 0 && strcmp(verb, "enqueue") == 0) {
            key = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--batch") == 0 &&
                   strcmp(verb, "enqueue") == 0) {
            batch = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--wait") == 0 && strcmp(verb, "job") == 0) {
            wait = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--limit") == 0 && strcmp(verb, "jobs") == 0) {
            limit = argv[++i];
        } else if ((argv[i][0] != '-' || strcmp(argv[i], "-") == 0) && n_pos < 3) {
            pos[n_pos++] = argv[i];
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    want = strcmp(verb, "job") == 0 ? 2 : 1;
    if ((n_pos != want && !(strcmp(verb, "enqueue") == 0 && n_pos == 2 && batch == NULL))) {
        fprintf(stderr, "jinn: fn %s: wrong arguments\n%s", verb, usage);
        return 2;
    }
    jinn_wbuf_init(&target);
    jinn_wbuf_init(&body);
    jinn_wbuf_init(&headers);
    if (strcmp(verb, "enqueue") == 0) {
        if (batch != NULL) {
            /* application/x-ndjson: the file as it is; the node checks it. */
            if (strcmp(batch, "-") != 0 && freopen(batch, "rb", stdin) == NULL) {
                fprintf(stderr, "jinn: cannot read %s: %s\n", batch, strerror(errno));
                rv = 1;
                goto out;
            }
            if (jinn_cli_read_stdin(&body, JOB_BATCH_FILE_MAX) != 0) {
                rv = 1;
                goto out;
            }
            jinn_wbuf_printf(&headers, "Content-Type: application/x-ndjson\r\n");
        } else if (pos[1] != NULL && strcmp(pos[1], "-") == 0) {
            if (jinn_cli_read_stdin(&body, JINN_QUEUE_PAYLOAD_MAX) != 0) {
                rv = 1;
                goto out;
            }
        } else if (pos[1] != NULL) {
            jinn_wbuf_put_raw(&body, pos[1], strlen(pos[1]));
        }
        if (key != NULL) {
            if (strpbrk(key, "\r\n") != NULL) {
                fprintf(stderr, "jinn: --key must be one line\n");
                rv = 2;
                goto out;
            }
            jinn_wbuf_printf(&headers, "Idempotency-Key: %s\r\n", key);
        }
        jinn_wbuf_put_u8(&headers, 0);
        jobs_target(&target, pos[0], NULL);
        rv = jinn_cli_call(addr, "POST", &target,
                           key != NULL || batch != NULL ? (const char *)headers.data : NULL,
                           body.len ? (const char *)body.data : "", body.len, &resp, &len,
                           &status);
        if (rv == 0) {
            o = json_loadb(resp, len, 0, NULL);
            if (json || o == NULL) {
                printf("%.*s\n", (int)len, resp);
            } else if (batch != NULL) {
                size_t i;
                json_t *id;
                json_array_foreach(json_object_get(o, "jobs"), i, id) {
                    printf("%" JSON_INTEGER_FORMAT "\n", json_integer_value(id));
                }
            } else {
                printf("%" JSON_INTEGER_FORMAT "%s\n", json_integer_value(json_object_get(o, "job")),
                       json_is_true(json_object_get(o, "duplicate")) ? " (duplicate)" : "");
            }
        }
    } else if (strcmp(verb, "jobs") == 0) {
        jobs_target(&target, pos[0], NULL);
        jinn_cli_query(&target, &first, "limit", limit);
        rv = jinn_cli_call(addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
        if (rv == 0) {
            size_t i;
            json_t *j;
            o = json_loadb(resp, len, 0, NULL);
            if (json || o == NULL) {
                printf("%.*s\n", (int)len, resp);
            } else {
                json_array_foreach(json_object_get(o, "jobs"), i, j)
                {
                    print_job_line(j);
                }
            }
        }
    } else {
        /* job: one read, or with --wait polls until succeeded or dead. */
        uint64_t secs = 0;
        int64_t deadline;
        long pause = 50;
        const char *state = NULL;
        if (wait != NULL) {
            char *end;
            errno = 0;
            secs = strtoull(wait, &end, 10);
            if (wait[0] < '0' || wait[0] > '9' || *end != '\0' || errno != 0 ||
                secs > JOB_WAIT_MAX_S) {
                fprintf(stderr, "jinn: --wait takes whole seconds (0-%d)\n", JOB_WAIT_MAX_S);
                rv = 2;
                goto out;
            }
        }
        deadline = now_ms() + (int64_t)secs * 1000;
        for (;;) {
            target.len = 0;
            jobs_target(&target, pos[0], pos[1]);
            rv = jinn_cli_call(addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
            if (rv != 0) {
                goto out;
            }
            json_decref(o);
            o = json_loadb(resp, len, 0, NULL);
            state = json_string_value(json_object_get(o, "state"));
            if (wait == NULL || state == NULL || strcmp(state, "succeeded") == 0 ||
                strcmp(state, "dead") == 0 || now_ms() + pause > deadline) {
                break;
            }
            jinn_free(resp);
            resp = NULL;
            sleep_ms(pause);
            pause = pause * 2 > 500 ? 500 : pause * 2;
        }
        if (json || o == NULL) {
            printf("%.*s\n", (int)len, resp);
        } else {
            char *s = json_dumps(o, JSON_INDENT(2));
            printf("%s\n", s ? s : "");
            jinn_free(s);
        }
        if (wait != NULL && (state == NULL || strcmp(state, "succeeded") != 0)) {
            fprintf(stderr, "jinn: job %s is %s\n", pos[1],
                    state == NULL                ? "unreadable"
                    : strcmp(state, "dead") == 0 ? "dead"
                                                 : "not finished (--wait ran out)");
            rv = 1;
        }
    }

out:
    json_decref(o);
    jinn_free(resp);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&body);
    jinn_wbuf_free(&headers);
    return rv;
}

int jinn_cli_fn(int argc, char **argv)
{
    static const struct {
        const char *flag, *param;
    } settings[] = {{"--route", "route"},   {"--timeout", "timeout"}, {"--memory", "memory"},
                    {"--pool", "pool"},     {"--env", "env"},         {"--arg", "arg"},
                    {"--kv-read", "kv_read"}, {"--kv-write", "kv_write"}, {"--db", "db"},
                    {"--ns", "ns"},         {"--workers", "workers"}, {"--cron", "cron"}};
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    const char *pos[2] = {NULL, NULL}, *version = NULL, *data = NULL, *method = NULL,
               *path = NULL, *verb, *sig = NULL;
    int n_pos = 0, json = 0, purge = 0, status, rv, want;
    struct jinn_wbuf target, query, module, headers;
    char *resp = NULL;
    size_t len;
    bool first = true;
    json_t *o;

    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    verb = argv[0];
    if (strcmp(verb, "keygen") == 0 || strcmp(verb, "sign") == 0 ||
        strcmp(verb, "policy") == 0) {
        return jinn_cli_fn_sig(verb, argc - 1, argv + 1);
    }
    if (strcmp(verb, "enqueue") == 0 || strcmp(verb, "job") == 0 || strcmp(verb, "jobs") == 0) {
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                fputs(usage, stdout);
                return 0;
            }
        }
        return jobs_cli(verb, argc, argv);
    }
    jinn_wbuf_init(&query);
    for (int i = 1; i < argc; i++) {
        bool matched = false;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            jinn_wbuf_free(&query);
            return 0;
        }
        for (size_t k = 0; k < sizeof settings / sizeof settings[0] && !matched; k++) {
            if (i + 1 < argc && strcmp(argv[i], settings[k].flag) == 0) {
                jinn_cli_query(&query, &first, settings[k].param, argv[++i]);
                matched = true;
            }
        }
        if (matched) {
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--purge") == 0) {
            purge = 1;
        } else if (i + 1 < argc && strcmp(argv[i], "--addr") == 0) {
            addr = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--version") == 0) {
            version = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--data") == 0) {
            data = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--method") == 0) {
            method = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--path") == 0) {
            path = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--sig") == 0) {
            sig = argv[++i];
        } else if (argv[i][0] != '-' && n_pos < 2) {
            pos[n_pos++] = argv[i];
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\n%s", argv[i], usage);
            jinn_wbuf_free(&query);
            return 2;
        }
    }
    want = strcmp(verb, "deploy") == 0 ? 2 : strcmp(verb, "ls") == 0 ? 0 : 1;
    if ((strcmp(verb, "deploy") != 0 && query.len > 0) ||
        (strcmp(verb, "deploy") != 0 && strcmp(verb, "ls") != 0 && strcmp(verb, "show") != 0 &&
         strcmp(verb, "rm") != 0 && strcmp(verb, "rollback") != 0 &&
         strcmp(verb, "call") != 0 && strcmp(verb, "logs") != 0)) {
        fprintf(stderr, "jinn: fn %s: unknown command or option\n%s", verb, usage);
        jinn_wbuf_free(&query);
        return 2;
    }
    if (n_pos != want) {
        fprintf(stderr, "jinn: fn %s: wrong arguments\n%s", verb, usage);
        jinn_wbuf_free(&query);
        return 2;
    }
    if (strcmp(verb, "call") == 0) {
        jinn_wbuf_free(&query);
        jinn_cli_timeout_ms = 330000; /* up to the longest function timeout */
        return call_fn(addr, pos[0], data, method, path);
    }

    jinn_wbuf_init(&target);
    jinn_wbuf_init(&module);
    jinn_wbuf_init(&headers);
    jinn_wbuf_printf(&target, "/v1/functions");
    if (want > 0) {
        jinn_wbuf_put_u8(&target, '/');
        jinn_cli_escape(&target, pos[0], strlen(pos[0]));
    }
    if (strcmp(verb, "deploy") == 0) {
        char auto_sig[4096];
        if (read_file(pos[1], &module, JINN_FN_MODULE_MAX) != 0) {
            rv = 1;
            goto out;
        }
        /* MODULE.sig from `jinn fn sign`, unless --sig names another. */
        snprintf(auto_sig, sizeof auto_sig, "%s.sig", pos[1]);
        if (sig == NULL && access(auto_sig, R_OK) == 0) {
            sig = auto_sig;
        }
        if (sig != NULL && jinn_cli_fn_sig_headers(sig, pos[0], &headers) != 0) {
            rv = 1;
            goto out;
        }
        jinn_wbuf_put_u8(&headers, 0);
        jinn_wbuf_put_raw(&target, query.data, query.len);
        jinn_cli_timeout_ms = 60000; /* validation and a 16 MiB upload */
        rv = jinn_cli_call(addr, "PUT", &target, (const char *)headers.data,
                           module.len ? (const char *)module.data : "", module.len, &resp, &len,
                           &status);
    } else if (strcmp(verb, "rm") == 0) {
        jinn_cli_query(&target, &first, "purge", purge ? "1" : NULL);
        rv = jinn_cli_call(addr, "DELETE", &target, NULL, "", 0, &resp, &len, &status);
    } else if (strcmp(verb, "rollback") == 0) {
        jinn_wbuf_printf(&target, "/rollback");
        jinn_cli_query(&target, &first, "version", version);
        rv = jinn_cli_call(addr, "POST", &target, NULL, "", 0, &resp, &len, &status);
    } else if (strcmp(verb, "logs") == 0) {
        jinn_wbuf_printf(&target, "/logs");
        rv = jinn_cli_call(addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
    } else {
        rv = jinn_cli_call(addr, "GET", &target, NULL, "", 0, &resp, &len, &status);
    }
    if (rv != 0) {
        goto out;
    }
    o = json_loadb(resp, len, 0, NULL);
    if (json || o == NULL) {
        printf("%.*s\n", (int)len, resp);
    } else if (strcmp(verb, "deploy") == 0) {
        printf("%s v%" JSON_INTEGER_FORMAT " %s%s\n", json_string_value(json_object_get(o, "name")),
               json_integer_value(json_object_get(o, "version")),
               json_string_value(json_object_get(o, "sha256")),
               json_is_true(json_object_get(o, "unchanged")) ? " (unchanged)" : "");
    } else if (strcmp(verb, "ls") == 0) {
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(o, "functions"), i, f)
        {
            print_summary(f);
        }
        if (json_is_true(json_object_get(o, "more"))) {
            printf("(more: GET /v1/functions?after=NAME)\n");
        }
    } else if (strcmp(verb, "rm") == 0) {
        printf("%s %s\n", pos[0], purge ? "forgotten" : "deleted (kept for rollback)");
    } else if (strcmp(verb, "rollback") == 0) {
        printf("%s v%" JSON_INTEGER_FORMAT " active\n", pos[0],
               json_integer_value(json_object_get(o, "version")));
    } else if (strcmp(verb, "logs") == 0) {
        print_logs(resp, len);
    } else {
        char *s = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", s ? s : "");
        jinn_free(s);
    }
    json_decref(o);

out:
    jinn_free(resp);
    jinn_wbuf_free(&target);
    jinn_wbuf_free(&module);
    jinn_wbuf_free(&headers);
    jinn_wbuf_free(&query);
    return rv;
}
