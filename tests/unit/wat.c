/* wat.c - see wat.h. */
#include "wat.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int wat(const char *text, struct jinn_wbuf *out)
{
    char dir[] = "/tmp/jinn-wat-XXXXXX", src[64], dst[64];
    char *argv[] = {"wat2wasm", src, "-o", dst, NULL};
    posix_spawn_file_actions_t fa;
    uint8_t buf[65536];
    pid_t pid;
    int fd, status = -1, rv = -1;
    size_t len = strlen(text);
    ssize_t n;

    jinn_wbuf_init(out);
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(src, sizeof src, "%s/m.wat", dir);
    snprintf(dst, sizeof dst, "%s/m.wasm", dir);
    fd = open(src, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        goto cleanup;
    }
    close(fd);
    fd = -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, "wat2wasm", &fa, NULL, argv, environ) == 0) {
        waitpid(pid, &status, 0);
    } else {
        fprintf(stderr, "  cannot run wat2wasm (install Debian's wabt)\n");
    }
    posix_spawn_file_actions_destroy(&fa);
    if (status != 0) {
        fprintf(stderr, "  wat2wasm failed (status %d)\n", status);
        goto cleanup;
    }
    fd = open(dst, O_RDONLY);
    while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0) {
        jinn_wbuf_put_raw(out, buf, (size_t)n);
    }
    rv = fd >= 0 && !out->failed ? 0 : -1;
cleanup:
    if (fd >= 0) {
        close(fd);
    }
    unlink(src);
    unlink(dst);
    rmdir(dir);
    return rv;
}
