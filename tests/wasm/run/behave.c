/* behave.c - one guest for the runner's tests (tests/cluster/test_wasm_run.py):
 * the last segment of the request's uri picks what it does.
 *   (default)  200 "hello VERSION" (VERSION from the environment)
 *   echo       200 with the request JSON as the body
 *   trap div oob stack   trap: unreachable, division by zero, out of
 *              bounds, call stack exhausted
 *   loop       never returns (the timeout kills it)
 *   grow       allocates until malloc fails; answers how many MiB it got
 *   notjson    writes text that is not a response JSON
 *   exit3      exits with code 3 without writing anything
 *   stderr     writes two lines to stderr, then answers
 *   headers    answers with allowed and refused response headers
 *   sleep?ms=N sleeps N ms (poll_oneoff), then answers like the default
 *   args       200 with argv joined by '|'
 *   manyheaders 200 with 300 response headers (more than a reply may carry) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char in[1 << 20];

static void reply(int status, const char *body)
{
    printf("{\"status\":%d,\"headers\":{\"Content-Type\":[\"text/plain\"]},\"body\":\"%s\"}",
           status, body);
}

static void json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static int deeper(int n);
static int (*volatile next)(int) = deeper;

static int deeper(int n)
{
    /* an indirect call per level: no tail-call or loop rewriting */
    return next(n + 1) * 3 + n;
}

int main(int argc, char **argv)
{
    size_t len = 0;
    ssize_t n;
    char uri[512] = "", body[128];
    const char *u, *act, *version = getenv("VERSION");

    while (len < sizeof in - 1 && (n = read(0, in + len, sizeof in - 1 - len)) > 0) {
        len += (size_t)n;
    }
    in[len] = '\0';
    u = strstr(in, "\"uri\":\"");
    if (u != NULL) {
        size_t i = 0;
        for (u += 7; u[i] != '\0' && u[i] != '"' && i < sizeof uri - 1; i++) {
            uri[i] = u[i];
        }
        uri[i] = '\0';
    }
    {
        char *q = strchr(uri, '?');
        if (q != NULL) {
            *q = '\0'; /* the query stays in `in` */
        }
    }
    act = strrchr(uri, '/');
    act = act != NULL ? act + 1 : "";
    if (version == NULL) {
        version = "none";
    }

    if (strcmp(act, "trap") == 0) {
        __builtin_trap();
    } else if (strcmp(act, "div") == 0) {
        volatile int zero = 0;
        return 10 / zero;
    } else if (strcmp(act, "oob") == 0) {
        return *(volatile int *)(uintptr_t)0xFFFFFFF0u;
    } else if (strcmp(act, "stack") == 0) {
        return deeper(0);
    } else if (strcmp(act, "loop") == 0) {
        volatile unsigned long spin = 0;
        for (;;) {
            spin++;
        }
    } else if (strcmp(act, "grow") == 0) {
        unsigned mib = 0;
        char *volatile p;
        /* each block is written to, so the allocation cannot be elided */
        while ((p = malloc(1 << 20)) != NULL) {
            p[0] = 1;
            p[(1 << 20) - 1] = 1;
            mib++;
        }
        snprintf(body, sizeof body, "grew %u MiB", mib);
        reply(200, body);
    } else if (strcmp(act, "notjson") == 0) {
        fputs("this is not json\n", stdout);
    } else if (strcmp(act, "exit3") == 0) {
        return 3;
    } else if (strcmp(act, "stderr") == 0) {
        fputs("first line to stderr\nsecond line to stderr\n", stderr);
        reply(200, "wrote to stderr");
    } else if (strcmp(act, "echo") == 0) {
        printf("{\"status\":201,\"headers\":{\"Content-Type\":[\"application/json\"]},\"body\":");
        json_string(in, len);
        putchar('}');
    } else if (strcmp(act, "headers") == 0) {
        printf("{\"status\":418,\"headers\":{\"X-Custom\":[\"one\",\"two\"],"
               "\"Set-Cookie\":\"a=1\",\"Content-Length\":[\"999\"],"
               "\"Bad\\r\\nInjected\":[\"x\"],\"X-Split\":[\"a\\r\\nInjected: y\"],"
               "\"X-Jinn-Fn-Node\":[\"forged\"]},\"body\":\"teapot\"}");
    } else if (strcmp(act, "manyheaders") == 0) {
        printf("{\"status\":200,\"headers\":{");
        for (int i = 0; i < 300; i++) {
            printf("%s\"X-H-%d\":[\"value-%d\"]", i ? "," : "", i, i);
        }
        printf("},\"body\":\"many\"}");
    } else if (strcmp(act, "args") == 0) {
        char joined[256] = "";
        for (int i = 0; i < argc; i++) {
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s",
                     i ? "|" : "", argv[i]);
        }
        reply(200, joined);
    } else if (strcmp(act, "sleep") == 0) {
        const char *ms = strstr(in, "ms=");
        long v = ms != NULL ? atol(ms + 3) : 100;
        struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        snprintf(body, sizeof body, "slept %s", version);
        reply(200, body);
    } else {
        snprintf(body, sizeof body, "hello %s", version);
        reply(200, body);
    }
    return 0;
}
