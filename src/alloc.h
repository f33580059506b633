/* alloc.h - the one allocation wrapper.
 *
 * Every heap allocation in jinn goes through these functions so that tests
 * can make the Nth allocation fail (jinn_alloc_fail_after) and check that
 * every caller handles out-of-memory cleanly. */
#ifndef JINN_ALLOC_H
#define JINN_ALLOC_H

#include <stddef.h>

void *jinn_malloc(size_t size);
void *jinn_calloc(size_t n, size_t size);
void *jinn_realloc(void *ptr, size_t size);
void jinn_free(void *ptr);

/* Returns a copy of s (caller frees), or NULL when out of memory. */
char *jinn_strdup(const char *s);
/* Returns a NUL-terminated copy of the first n bytes of s. */
char *jinn_strndup(const char *s, size_t n);

/* How many allocations of the calling thread have failed so far. A
 * library that reports an allocation failure as something else (jansson's
 * parser says "invalid token") is told apart by comparing this before and
 * after the call. */
unsigned long jinn_alloc_failures(void);

/* Test hook: the next n allocations succeed, then every later one fails
 * until jinn_alloc_fail_reset() is called (n = 0: the very next fails). */
void jinn_alloc_fail_after(long n);
void jinn_alloc_fail_reset(void);

#endif
