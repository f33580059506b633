/* main.c - runs every registered unit test. */
#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "log.h"
#include "unit.h"

#define MAX_TESTS 512

static struct {
    const char *name;
    void (*fn)(void);
} tests[MAX_TESTS];
static int n_tests;
static int current_failed;

void unit_register(const char *name, void (*fn)(void))
{
    if (n_tests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[n_tests].name = name;
    tests[n_tests].fn = fn;
    n_tests++;
}

void unit_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "  %s:%d: CHECK failed: %s\n", file, line, what);
    current_failed = 1;
}

int unit_run_child(void (*fn)(void *), void *arg, char *out, size_t cap)
{
    int fds[2], status = 0;
    size_t got = 0;
    ssize_t n;
    pid_t pid;
    if (pipe(fds) != 0) {
        return -1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        jinn_log_set_level(JINN_LOG_ERROR);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    while (got + 1 < cap && (n = read(fds[0], out + got, cap - 1 - got)) > 0) {
        got += (size_t)n;
    }
    out[got] = '\0';
    close(fds[0]);
    waitpid(pid, &status, 0);
    return status;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    json_set_alloc_funcs(jinn_malloc, jinn_free);
    jinn_log_set_level(getenv("UNIT_LOG") ? JINN_LOG_DEBUG : JINN_LOG_SILENT);
    for (int i = 0; i < n_tests; i++) {
        if (argc > 1 && strstr(tests[i].name, argv[1]) == NULL) {
            continue;
        }
        current_failed = 0;
        tests[i].fn();
        jinn_alloc_fail_reset();
        if (current_failed) {
            fprintf(stderr, "FAIL %s\n", tests[i].name);
            failed++;
        } else {
            passed++;
        }
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
