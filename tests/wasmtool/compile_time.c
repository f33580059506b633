/* compile_time.c - how long a node takes to make a module runnable.
 *
 * Usage: compile_time DATA_DIR MODULE.wasm...
 * For each module: the first jinn_wasm_compile (wasm2c + glue + cc -O2,
 * exactly what a node does after a deploy), then a second one, which is a
 * cache hit (the .so's checksum verified) - the cost of a restart. Prints
 * one line per module; exits non-zero when a compile fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <uv.h>

#include "alloc.h"
#include "sha256.h"
#include "wasm/compile.h"

struct result {
    int done, code;
    uint64_t ms;
    char message[2400];
};

static void on_compiled(void *data, int code, const char *so, const char *message, uint64_t ms)
{
    struct result *r = data;
    (void)so;
    r->done = 1;
    r->code = code;
    r->ms = ms;
    snprintf(r->message, sizeof r->message, "%s", message ? message : "");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds used by finished children (the tools) so far: on a shared
 * machine a steadier figure than wall time. */
static double children_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int run(uv_loop_t *loop, const char *dir, const uint8_t *sha, const void *mod, size_t len,
               struct result *r, double *wall)
{
    double t0 = now_s();
    memset(r, 0, sizeof *r);
    if (jinn_wasm_compile(loop, dir, sha, mod, len, on_compiled, r) != 0) {
        return -1;
    }
    while (!r->done) {
        uv_run(loop, UV_RUN_ONCE);
    }
    *wall = now_s() - t0;
    return r->code;
}

int main(int argc, char **argv)
{
    uv_loop_t loop;
    int failed = 0;
    if (argc < 3) {
        fprintf(stderr, "usage: compile_time DATA_DIR MODULE.wasm...\n");
        return 2;
    }
    uv_loop_init(&loop);
    for (int i = 2; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        uint8_t *mod, sha[JINN_SHA256_LEN];
        long len;
        struct result r1, r2;
        double w1, w2, cpu0 = children_cpu(), cpu;
        if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
            fseek(f, 0, SEEK_SET) != 0) {
            fprintf(stderr, "%s: cannot read\n", argv[i]);
            return 1;
        }
        mod = jinn_malloc((size_t)len + 1);
        if (mod == NULL || fread(mod, 1, (size_t)len, f) != (size_t)len) {
            return 1;
        }
        fclose(f);
        jinn_sha256(mod, (size_t)len, sha);
        if (run(&loop, argv[1], sha, mod, (size_t)len, &r1, &w1) != 0 ||
            (cpu = children_cpu() - cpu0,
             run(&loop, argv[1], sha, mod, (size_t)len, &r2, &w2) != 0)) {
            fprintf(stderr, "%s: compile failed: %s\n", argv[i], r1.message[0] ? r1.message
                                                                                : r2.message);
            failed = 1;
        } else {
            printf("%s: %ld bytes: compile %.2f s wall, %.2f s CPU in wasm2c+cc (compile_ms "
                   "%llu); cache hit %.1f ms (compile_ms %llu)\n",
                   argv[i], len, w1, cpu, (unsigned long long)r1.ms, w2 * 1000,
                   (unsigned long long)r2.ms);
        }
        jinn_free(mod);
    }
    jinn_wasm_compile_shutdown();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return failed;
}
