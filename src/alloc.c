/* alloc.c - allocation wrapper with fault injection for tests. */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

/* -1 means "never fail". Only tests touch it, from one thread. */
static long fail_countdown = -1;

static int should_fail(void)
{
    if (fail_countdown < 0) {
        return 0;
    }
    if (fail_countdown == 0) {
        return 1;
    }
    fail_countdown--;
    return 0;
}

/* Failed allocations of this thread (jinn_alloc_failures). */
static _Thread_local unsigned long failures;

static void *counted(void *p)
{
    if (p == NULL) {
        failures++;
    }
    return p;
}

unsigned long jinn_alloc_failures(void) { return failures; }

void jinn_alloc_fail_after(long n) { fail_countdown = n; }
void jinn_alloc_fail_reset(void) { fail_countdown = -1; }

void *jinn_malloc(size_t size)
{
    if (should_fail()) {
        return counted(NULL);
    }
    return counted(malloc(size == 0 ? 1 : size));
}

void *jinn_calloc(size_t n, size_t size)
{
    if (should_fail()) {
        return counted(NULL);
    }
    return counted(calloc(n == 0 ? 1 : n, size == 0 ? 1 : size));
}

void *jinn_realloc(void *ptr, size_t size)
{
    if (should_fail()) {
        return counted(NULL);
    }
    return counted(realloc(ptr, size == 0 ? 1 : size));
}

void jinn_free(void *ptr) { free(ptr); }

char *jinn_strndup(const char *s, size_t n)
{
    char *copy = jinn_malloc(n + 1);
    if (copy == NULL) {
        return NULL;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

char *jinn_strdup(const char *s) { return jinn_strndup(s, strlen(s)); }
