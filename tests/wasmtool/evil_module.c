/* evil_module.c - a hand-made "compiled module" for the sandbox's
 * lock-down test: native code as if wasm2c had a bug, doing what the
 * seccomp filter must stop. EVIL (read at init, before the filter) picks
 * what jinn_mod_start does: socket, open, mmap_exec, kill_parent, segv, ok. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

const unsigned jinn_mod_glue_version = 1;
const size_t jinn_mod_instance_size = 64;
const uint32_t jinn_mod_max_call_depth = 500;
static char mode[32];

void jinn_mod_init(void)
{
    const char *e = getenv("EVIL");
    strncpy(mode, e ? e : "ok", sizeof mode - 1);
}

void jinn_mod_instantiate(void *inst, void *g, void *w)
{
    (void)inst, (void)g, (void)w;
}

void jinn_mod_free(void *inst) { (void)inst; }

void jinn_mod_start(void *inst)
{
    (void)inst;
    if (strcmp(mode, "socket") == 0) {
        socket(AF_INET, SOCK_STREAM, 0);
    } else if (strcmp(mode, "open") == 0) {
        open("/etc/hostname", O_RDONLY);
    } else if (strcmp(mode, "mmap_exec") == 0) {
        mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    } else if (strcmp(mode, "kill_parent") == 0) {
        kill(getppid(), SIGTERM);
    } else if (strcmp(mode, "segv") == 0) {
        *(volatile int *)(uintptr_t)16 = 1; /* not a stack overflow: a crash */
    }
}

void *jinn_mod_memory(void *inst) { return inst; }
