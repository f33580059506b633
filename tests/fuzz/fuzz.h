/* fuzz.h - shared by the libFuzzer targets in tests/fuzz/.
 *
 * Each NAME.c here is one target (see the Makefile's fuzz rules); a failed
 * property calls FUZZ_CHECK, which aborts so libFuzzer saves the input. */
#ifndef JINN_FUZZ_H
#define JINN_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* Makes a fresh temporary directory (for SQL databases) that is removed,
 * with what is in it, when the process exits. Aborts on failure. */
const char *fuzz_tmpdir(void);

/* Defined here (header included by one .c per target). */
#define FUZZ_MAX_TMPDIRS 8
static char fuzz_dirs[FUZZ_MAX_TMPDIRS][64];
static int fuzz_ndirs;

static int fuzz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fuzz_rm_dirs(void)
{
    for (int i = 0; i < fuzz_ndirs; i++) {
        nftw(fuzz_dirs[i], fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
}

const char *fuzz_tmpdir(void)
{
    char *d;
    if (fuzz_ndirs == FUZZ_MAX_TMPDIRS) {
        abort();
    }
    d = fuzz_dirs[fuzz_ndirs];
    /* tmpfs when there is one: the SQL files are rewritten at every input. */
    snprintf(d, sizeof fuzz_dirs[0], "%s/jinn-fuzz-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (mkdtemp(d) == NULL) {
        perror("mkdtemp");
        abort();
    }
    if (fuzz_ndirs++ == 0) {
        atexit(fuzz_rm_dirs);
    }
    return d;
}

#endif
