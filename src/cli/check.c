/* cli/check.c - `jinn check`: runs a replica check and shows its outcome.
 *
 * POST /v1/cluster/check starts one (or joins the one running) and answers
 * its index; GET /v1/cluster/check is then polled until the leader has
 * compared every replica's digest for that index or given up on the silent
 * ones. Exit status: 0 all replicas agree, 1 some diverged (or the cluster
 * could not be asked), 2 incomplete (a replica did not report in time). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cli/cli.h"
#include "codec.h"

#define CHECK_WAIT_MS 45000 /* beyond the leader's own 30 s per check */
#define CHECK_POLL_MS 200

static const char *usage = "jinn check [--addr URL] [--json]";

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static json_t *call_json(const char *addr, const char *method, const char *path)
{
    struct jinn_wbuf target;
    char *resp = NULL;
    size_t len = 0;
    int status = 0;
    json_t *obj;
    jinn_wbuf_init(&target);
    jinn_wbuf_printf(&target, "%s", path);
    if (jinn_cli_call(addr, method, &target, NULL, NULL, 0, &resp, &len, &status) != 0) {
        jinn_wbuf_free(&target);
        return NULL;
    }
    jinn_wbuf_free(&target);
    obj = json_loadb(resp, len, 0, NULL);
    jinn_free(resp);
    if (obj == NULL) {
        fprintf(stderr, "jinn: %s: the answer is not JSON\n", addr);
    }
    return obj;
}

static void print_round(json_t *round)
{
    json_t *nodes = json_object_get(round, "nodes"), *n;
    const char *majority = json_string_value(json_object_get(round, "majority"));
    const char *redacted = json_string_value(json_object_get(round, "majority_redacted"));
    size_t i;

    printf("check at index %" JSON_INTEGER_FORMAT ": %s\n",
           json_integer_value(json_object_get(round, "index")),
           json_string_value(json_object_get(round, "state")));
    json_array_foreach(nodes, i, n)
    {
        const char *state = json_string_value(json_object_get(n, "state"));
        const char *digest = json_string_value(json_object_get(n, "digest"));
        const char *diff = json_string_value(json_object_get(n, "sections_differing"));
        char upper[32] = "?";
        for (size_t k = 0; state != NULL && k + 1 < sizeof upper; k++) {
            upper[k] = (char)(state[k] >= 'a' && state[k] <= 'z' ? state[k] - 32 : state[k]);
            upper[k + 1] = '\0';
            if (state[k] == '\0') {
                break;
            }
        }
        printf("  %-16s %-16s %s", json_string_value(json_object_get(n, "name")),
               digest ? digest : "-", upper);
        if (diff != NULL) {
            printf(" (differs in: %s)", diff);
        }
        putchar('\n');
    }
    if (majority != NULL) {
        printf("majority digest %s\n", majority);
    }
    /* what edge replicas compare with (their auth section holds R, not the
     * key; docs/replica.md), when it differs */
    if (redacted != NULL && (majority == NULL || strcmp(redacted, majority) != 0)) {
        printf("edge replicas' digest %s\n", redacted);
    }
}

int jinn_cli_check(int argc, char **argv)
{
    const char *env = getenv("JINN_ADDR");
    const char *addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    bool json = false;
    json_t *started, *round = NULL;
    json_int_t index;
    int64_t deadline;
    int rv;

    if (jinn_cli_help(argc, argv,
                      "usage: jinn check [--addr URL] [--json]\n"
                      "  asks the leader to compare every replica's state\n"
                      "exit status: 0 all agree, 1 diverged, 2 incomplete or bad usage\n")) {
        return 0;
    }
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            addr = argv[++i];
        } else if (strncmp(argv[i], "--addr=", 7) == 0) {
            addr = argv[i] + 7;
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\nusage: %s\n", argv[i], usage);
            return 2;
        }
    }
    deadline = mono_ms() + CHECK_WAIT_MS;
    /* The leader refuses a second check within a second of the last one
     * (503 busy): wait for it rather than fail. */
    for (;;) {
        char err[256], *resp = NULL;
        size_t len = 0;
        int status = 0;
        bool busy;
        if (jinn_cli_request(addr, "POST", "/v1/cluster/check", NULL, NULL, 0, &status, &resp,
                             &len, err, sizeof err) != 0) {
            fprintf(stderr, "jinn: %s\n", err);
            return 1;
        }
        started = json_loadb(resp, len, 0, NULL);
        jinn_free(resp);
        {
            const char *error = json_string_value(json_object_get(started, "error"));
            busy = status == 503 && error != NULL && strcmp(error, "busy") == 0;
        }
        if (status == 200 && json_is_integer(json_object_get(started, "index"))) {
            break;
        }
        if (!busy || mono_ms() >= deadline) {
            const char *msg = json_string_value(json_object_get(started, "message"));
            fprintf(stderr, "jinn: %d %s\n", status, msg ? msg : "no check started");
            json_decref(started);
            return 1;
        }
        json_decref(started);
        {
            struct timespec ts = {0, CHECK_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    index = json_integer_value(json_object_get(started, "index"));
    json_decref(started);
    for (;;) {
        json_t *done;
        round = call_json(addr, "GET", "/v1/cluster/check");
        if (round == NULL) {
            return 1;
        }
        done = json_object_get(round, "done");
        if (json_integer_value(json_object_get(round, "index")) > index ||
            (json_integer_value(json_object_get(round, "index")) == index &&
             json_is_true(done))) {
            break;
        }
        if (mono_ms() >= deadline) {
            fprintf(stderr, "jinn: check %" JSON_INTEGER_FORMAT " not finished within %d s\n",
                    index, CHECK_WAIT_MS / 1000);
            json_decref(round);
            return 2;
        }
        json_decref(round);
        {
            struct timespec ts = {0, CHECK_POLL_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (json) {
        json_dumpf(round, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        print_round(round);
    }
    {
        const char *state = json_string_value(json_object_get(round, "state"));
        if (json_integer_value(json_object_get(round, "index")) != index) {
            fprintf(stderr,
                    "jinn: a newer check (%" JSON_INTEGER_FORMAT
                    ") replaced %" JSON_INTEGER_FORMAT "\n",
                    json_integer_value(json_object_get(round, "index")), index);
            rv = 2;
        } else {
            rv = state && strcmp(state, "agreed") == 0     ? 0
                 : state && strcmp(state, "diverged") == 0 ? 1
                                                           : 2;
        }
    }
    json_decref(round);
    return rv;
}
