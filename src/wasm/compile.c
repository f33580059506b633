/* compile.c - turning a module into a shared object off the loop (see
 * compile.h).
 *
 * One compile thread per process, started at the first compile: the machine
 * jinn targets has two cores and cc -O2 on a wasm2c translation takes
 * seconds, so builds run one at a time, in the order they were asked for.
 * The thread runs the tools as child processes in their own process group
 * (so cc's own children die with it), with their output captured through a
 * pipe, a time limit, and a kill at shutdown. Each job has its own uv_async
 * on the caller's loop: the result is delivered there, and shutdown closes
 * the handles of jobs whose result was not delivered.
 *
 * The cache: data_dir/fn/<sha256 hex>/module.so, and module.so.sha256
 * holding the shared object's own SHA-256 and the build key (glue version,
 * compiler flags). Both are written to temporary names, fsynced and renamed
 * (the .so first), so a crash leaves either a complete entry or one that
 * fails its checksum and is rebuilt. */
#include "wasm/compile.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "log.h"
#include "sha256.h"
#include "wasm/abi.h"
#include "wasm/glue.h"
#include "wasm/module.h"

extern char **environ;

/* Jobs waiting (not counting the one running), and their module bytes. */
#define COMPILE_QUEUE_MAX 64
#define COMPILE_QUEUE_BYTES (256u << 20)
/* A tool still running after this long is killed: a module whose
 * translation the compiler cannot finish is a failed compile, not a stuck
 * compile thread. cc -O2 needs ~100 s of CPU per MB of dense module code
 * (measured: 8 s for 100 KB), and the cores are shared with the node: 300 s
 * plus 300 s per MiB, at most an hour. */
#define COMPILE_TOOL_TIMEOUT_BASE_MS (300u * 1000u)
#define COMPILE_TOOL_TIMEOUT_PER_MIB_MS (300u * 1000u)
#define COMPILE_TOOL_TIMEOUT_MAX_MS (3600u * 1000u)
/* Address space for each tool (prlimit --as): a module the compiler
 * cannot build within it fails to compile instead of pushing the node out
 * of memory. cc -O2 on a 1 MB module peaks at 0.8 GB RSS (measured), so
 * this allows modules of several MB of code. */
#define COMPILE_TOOL_MEMORY (6ull << 30)
/* The tool output kept for the status message. */
#define COMPILE_MESSAGE_MAX 2048
#define COMPILE_PATH_MAX 4096

#define CC_FLAGS                                                                             \
    "-O2", "-fPIC", "-shared", "-I/usr/src/wasm2c", "-DWASM_RT_MEMCHECK_SIGNAL_HANDLER=0",   \
        "-DWASM_RT_USE_STACK_DEPTH_COUNT=1"
#define CC_FLAGS_TEXT                                                                        \
    "-O2 -fPIC -shared -I/usr/src/wasm2c -DWASM_RT_MEMCHECK_SIGNAL_HANDLER=0 "               \
    "-DWASM_RT_USE_STACK_DEPTH_COUNT=1"

/* What a cached object was built with; an entry built otherwise (an older
 * jinn) is rebuilt. */
#define STR_(x) #x
#define STR(x) STR_(x)
#define BUILD_KEY "jinn-glue " STR(JINN_WASM_GLUE_VERSION) "; wasm2c -n m; cc " CC_FLAGS_TEXT

struct job {
    uv_async_t async; /* first: the handle's address is the job's */
    jinn_wasm_compile_cb cb;
    void *data;
    uint8_t sha[JINN_SHA256_LEN];
    uint8_t *module;
    size_t len;
    char dir[COMPILE_PATH_MAX];
    /* The result, written by the compile thread before uv_async_send. */
    int code;
    char so_path[COMPILE_PATH_MAX];
    char message[COMPILE_MESSAGE_MAX + 256];
    uint64_t compile_ms;
    bool cancelled; /* set by the loop thread under C.mu */
    bool checked;   /* its cache was checked while queued (a miss); under C.mu */
    bool busy;      /* the compile thread holds it (cancel leaves it queued) */
    struct job *next;              /* in the queue */
    struct job *all_prev, *all_next; /* every undelivered job */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool running, stop;
    pthread_t thread;
    struct job *head, *tail;
    unsigned queued;
    size_t queued_bytes;
    struct job *all;
    pid_t child; /* the running tool (and its process group), 0 when none */
    uint64_t test_timeout_ms, test_memory; /* jinn_wasm_compile_set_limits */
} C = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool stopping(void)
{
    bool s;
    pthread_mutex_lock(&C.mu);
    s = C.stop;
    pthread_mutex_unlock(&C.mu);
    return s;
}

/* Tool output goes into status and logs: keep printable ASCII, newlines and
 * tabs (the tools run with LC_ALL=C; anything else is from the module). */
static void sanitize(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\n' && c != '\t') || c >= 0x7f) {
            *s = '?';
        }
    }
}

/* Tool messages name the files they were given by their full path under
 * data_dir; the status reads better (and leaks no local paths) without it. */
static void strip_dir(char *s, const char *dir)
{
    size_t dl = strlen(dir), n;
    char *at;
    while ((at = strstr(s, dir)) != NULL && at[dl] == '/') {
        n = strlen(at + dl + 1);
        memmove(at, at + dl + 1, n + 1);
    }
}

/* The environment for the tools: jinn's, with the locale forced to C so
 * their messages are plain ASCII. NULL when out of memory. */
static char **tool_env(void)
{
    size_t n = 0, k = 0;
    char **env;
    while (environ != NULL && environ[n] != NULL) {
        n++;
    }
    env = jinn_calloc(n + 2, sizeof *env);
    if (env == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "LC_ALL=", 7) != 0 && strncmp(environ[i], "LANG=", 5) != 0 &&
            strncmp(environ[i], "LANGUAGE=", 9) != 0) {
            env[k++] = environ[i];
        }
    }
    env[k++] = "LC_ALL=C";
    env[k] = NULL;
    return env;
}

/* Finds name in PATH like execvp would; false when it is not there. */
static bool find_in_path(const char *name, char *out, size_t outlen)
{
    const char *p = getenv("PATH");
    if (p == NULL) {
        p = "/usr/local/bin:/usr/bin:/bin";
    }
    for (;;) {
        const char *end = strchr(p, ':');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int n = len == 0 ? snprintf(out, outlen, "./%s", name)
                         : snprintf(out, outlen, "%.*s/%s", (int)len, p, name);
        if (n > 0 && (size_t)n < outlen && access(out, X_OK) == 0) {
            return true;
        }
        if (end == NULL) {
            return false;
        }
        p = end + 1;
    }
}

/* Runs argv (looked up in PATH) to completion, its stdout and stderr
 * captured (the first outmax-1 bytes kept in out, NUL-terminated).
 * Returns 0 when it exited 0; JINN_ENOTFOUND when the tool is not in PATH;
 * JINN_ESHUTDOWN when shutdown killed it; JINN_ETIMEOUT when it ran past
 * the time limit (killed); JINN_EINTERNAL when it failed (out says why). */
static int run_tool(char *const argv[], uint64_t timeout_ms, uint64_t memory, char *out,
                    size_t outmax)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    char **env = NULL;
    char tool[COMPILE_PATH_MAX], prlimit[COMPILE_PATH_MAX], as[48], *full[24];
    int pipefd[2] = {-1, -1}, rv = JINN_EINTERNAL, status = 0, err;
    size_t outlen = 0;
    pid_t pid = 0;
    uint64_t deadline = now_ms() + timeout_ms;
    bool killed_stop = false, killed_time = false, fa_ok = false, attr_ok = false;

    out[0] = '\0';
    /* The tool runs under prlimit (util-linux, essential in Debian) for
     * its memory limit; prlimit execs it by full path, so a missing tool is
     * found missing here. */
    if (!find_in_path(argv[0], tool, sizeof tool)) {
        snprintf(out, outmax, "cannot run %s: not found in PATH", argv[0]);
        return JINN_ENOTFOUND;
    }
    if (find_in_path("prlimit", prlimit, sizeof prlimit)) {
        size_t n = 0;
        snprintf(as, sizeof as, "--as=%llu", (unsigned long long)memory);
        full[n++] = prlimit;
        full[n++] = as;
        full[n++] = "--core=0";
        full[n++] = "--";
        full[n++] = tool;
        for (size_t i = 1; argv[i] != NULL && n + 1 < sizeof full / sizeof full[0]; i++) {
            full[n++] = argv[i];
        }
        full[n] = NULL;
    } else {
        size_t n = 0;
        full[n++] = tool;
        for (size_t i = 1; argv[i] != NULL && n + 1 < sizeof full / sizeof full[0]; i++) {
            full[n++] = argv[i];
        }
        full[n] = NULL;
    }
    env = tool_env();
    if (env == NULL) {
        snprintf(out, outmax, "out of memory");
        return JINN_ENOMEM;
    }
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(out, outmax, "pipe: %s", strerror(errno));
        goto cleanup;
    }
    if (posix_spawn_file_actions_init(&fa) != 0) {
        goto cleanup;
    }
    fa_ok = true;
    if (posix_spawnattr_init(&attr) != 0) {
        goto cleanup;
    }
    attr_ok = true;
    sigemptyset(&none);
    sigfillset(&all);
    /* The compile thread blocks every signal and jinn ignores SIGPIPE: the
     * tools start with an empty mask and default dispositions, in their own
     * process group, with only stdin (/dev/null), stdout and stderr (the
     * pipe) open. */
    if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2) != 0 ||
        posix_spawn_file_actions_addclosefrom_np(&fa, 3) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                            POSIX_SPAWN_SETSIGDEF) != 0 ||
        posix_spawnattr_setpgroup(&attr, 0) != 0 || posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &all) != 0) {
        snprintf(out, outmax, "cannot set up %s", argv[0]);
        goto cleanup;
    }
    pthread_mutex_lock(&C.mu);
    if (C.stop) {
        pthread_mutex_unlock(&C.mu);
        rv = JINN_ESHUTDOWN;
        goto cleanup;
    }
    err = posix_spawn(&pid, full[0], &fa, &attr, full, env);
    if (err == 0) {
        C.child = pid;
    }
    pthread_mutex_unlock(&C.mu);
    if (err != 0) {
        pid = 0;
        rv = err == ENOENT ? JINN_ENOTFOUND : JINN_EINTERNAL;
        snprintf(out, outmax, "cannot run %s: %s", argv[0], strerror(err));
        goto cleanup;
    }
    close(pipefd[1]);
    pipefd[1] = -1;

    /* Read until EOF (every process of the group is gone or closed the
     * pipe), checking for shutdown and the time limit between reads. */
    for (;;) {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        char buf[4096];
        ssize_t got;
        int pr = poll(&p, 1, 100);
        if (pr < 0 && errno != EINTR) {
            break;
        }
        if (!killed_stop && !killed_time) {
            if (stopping()) {
                killed_stop = true;
                kill(-pid, SIGKILL);
            } else if (now_ms() > deadline) {
                killed_time = true;
                kill(-pid, SIGKILL);
            }
        }
        if (pr <= 0) {
            continue;
        }
        got = read(pipefd[0], buf, sizeof buf);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (got <= 0) {
            break;
        }
        if (outlen + 1 < outmax) {
            size_t take = (size_t)got < outmax - 1 - outlen ? (size_t)got : outmax - 1 - outlen;
            memcpy(out + outlen, buf, take);
            outlen += take;
            out[outlen] = '\0';
        }
    }
    /* The group may outlive its leader (a compiler driver's children):
     * nothing of a finished tool may keep running. The leader is killed
     * with its group while it is an unreaped zombie at most, so its pid,
     * which names the group, cannot have been reused. */
    {
        siginfo_t si;
        while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
        }
    }
    pthread_mutex_lock(&C.mu);
    C.child = 0;
    killed_stop = killed_stop || C.stop;
    pthread_mutex_unlock(&C.mu);
    kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    sanitize(out);
    if (killed_stop) {
        rv = JINN_ESHUTDOWN;
    } else if (killed_time) {
        snprintf(out, outmax, "%s ran longer than %.1f s and was killed", argv[0],
                 (double)timeout_ms / 1000.0);
        rv = JINN_ETIMEOUT;
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        rv = 0;
    } else {
        rv = JINN_EINTERNAL;
        if (outlen == 0) {
            if (WIFSIGNALED(status)) {
                snprintf(out, outmax, "killed by signal %d", WTERMSIG(status));
            } else {
                snprintf(out, outmax, "exit status %d", WEXITSTATUS(status));
            }
        }
    }
cleanup:
    if (fa_ok) {
        posix_spawn_file_actions_destroy(&fa);
    }
    if (attr_ok) {
        posix_spawnattr_destroy(&attr);
    }
    if (pipefd[0] >= 0) {
        close(pipefd[0]);
    }
    if (pipefd[1] >= 0) {
        close(pipefd[1]);
    }
    jinn_free(env);
    return rv;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes a whole file (created or truncated), fsynced when sync. */
static int write_file(const char *path, const void *p, size_t n, bool sync)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rv = 0;
    if (fd < 0) {
        return -1;
    }
    if (write_all(fd, p, n) != 0 || (sync && fsync(fd) != 0)) {
        rv = -1;
    }
    if (close(fd) != 0) {
        rv = -1;
    }
    return rv;
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC), rv;
    if (fd < 0) {
        return -1;
    }
    rv = fsync(fd);
    close(fd);
    return rv;
}

/* The toolchain's part of the build key: wasm-rt.h (the struct layouts
 * this binary's rt.c shares with every module), wasm2c and cc, by their
 * contents, so an upgrade of wabt or the compiler rebuilds the cache
 * instead of loading objects built against other layouts. Computed once
 * (compile thread). JINN_TEST_WASM_RT_H (tests only) names another header
 * to hash. */
#define WASM_RT_H "/usr/src/wasm2c/wasm-rt.h"
static pthread_once_t build_key_once = PTHREAD_ONCE_INIT;
static char build_key_text[sizeof BUILD_KEY + 64];

static void build_key_init(void)
{
    const char *test = getenv("JINN_TEST_WASM_RT_H");
    char path[COMPILE_PATH_MAX], hex[JINN_SHA256_HEX_LEN + 1];
    uint8_t parts[3][JINN_SHA256_LEN], all[JINN_SHA256_LEN];
    memset(parts, 0, sizeof parts); /* a missing tool: its build fails anyway */
    jinn_sha256_file(test != NULL && *test != '\0' ? test : WASM_RT_H, parts[0]);
    if (find_in_path("wasm2c", path, sizeof path)) {
        jinn_sha256_file(path, parts[1]);
    }
    if (find_in_path("cc", path, sizeof path)) {
        jinn_sha256_file(path, parts[2]);
    }
    jinn_sha256(parts, sizeof parts, all);
    jinn_sha256_hex(all, hex);
    snprintf(build_key_text, sizeof build_key_text, "%s; tools %.16s", BUILD_KEY, hex);
}

static const char *build_key(void)
{
    pthread_once(&build_key_once, build_key_init);
    return build_key_text;
}

/* The cache entry's checksum file: the object's SHA-256 in hex, then the
 * build key, one per line. */
static bool cache_valid(struct job *j, const char *so, const char *sum, bool quiet)
{
    char text[512], hex[JINN_SHA256_HEX_LEN + 1], want[sizeof text], why[160];
    uint8_t actual[JINN_SHA256_LEN];
    int fd;
    ssize_t n;
    struct stat st;
    bool have_so = stat(so, &st) == 0, have_sum;

    fd = open(sum, O_RDONLY | O_CLOEXEC);
    have_sum = fd >= 0;
    if (!have_so && !have_sum) {
        return false; /* never built */
    }
    n = have_sum ? read(fd, text, sizeof text - 1) : -1;
    if (fd >= 0) {
        close(fd);
    }
    why[0] = '\0';
    if (!have_so || n <= 0) {
        snprintf(why, sizeof why, "is incomplete (%s missing)",
                 have_so ? "module.so.sha256" : "module.so");
    } else {
        text[n] = '\0';
        snprintf(want, sizeof want, "%.64s\n%s\n", text, build_key());
        if (n < JINN_SHA256_HEX_LEN + 1 || strcmp(text, want) != 0) {
            snprintf(why, sizeof why, "was built by another jinn (build key differs)");
        } else if (jinn_sha256_file(so, actual) != 0) {
            snprintf(why, sizeof why, "cannot be read (%s)", strerror(errno));
        } else {
            jinn_sha256_hex(actual, hex);
            if (memcmp(hex, text, JINN_SHA256_HEX_LEN) != 0) {
                snprintf(why, sizeof why, "fails its checksum (module.so: %lld bytes)",
                         (long long)st.st_size);
            }
        }
    }
    if (why[0] != '\0' && !quiet) {
        jinn_warn("fn cache %s %s; rebuilding", j->dir, why);
    }
    return why[0] == '\0';
}

static int mkdir_one(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        return -1;
    }
    return 0;
}

static int path_in(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, COMPILE_PATH_MAX, "%s/%s", dir, name);
    return n > 0 && n < COMPILE_PATH_MAX ? 0 : -1;
}

__attribute__((format(printf, 3, 4))) static void job_fail(struct job *j, int code,
                                                            const char *fmt, ...)
{
    va_list ap;
    j->code = code;
    va_start(ap, fmt);
    vsnprintf(j->message, sizeof j->message, fmt, ap);
    va_end(ap);
}

#define FAIL(c, ...)                                                                         \
    do {                                                                                     \
        job_fail(j, (c), __VA_ARGS__);                                                       \
        goto cleanup;                                                                        \
    } while (0)

/* Builds (or finds) one job's shared object; fills j->code and the rest. */
static void run_job(struct job *j)
{
    char wasm[COMPILE_PATH_MAX], mc[COMPILE_PATH_MAX], mh[COMPILE_PATH_MAX],
        glue[COMPILE_PATH_MAX], so[COMPILE_PATH_MAX], sum[COMPILE_PATH_MAX],
        so_tmp[COMPILE_PATH_MAX], sum_tmp[COMPILE_PATH_MAX], fn_dir[COMPILE_PATH_MAX];
    char out[COMPILE_MESSAGE_MAX + 1], err[256], hex[JINN_SHA256_HEX_LEN + 1],
        sumtext[JINN_SHA256_HEX_LEN + sizeof build_key_text + 4];
    static struct jinn_wasm_info info; /* compile thread only */
    uint8_t sha[JINN_SHA256_LEN];
    struct jinn_wbuf g;
    uint64_t t0 = now_ms();
    uint64_t timeout_ms = COMPILE_TOOL_TIMEOUT_BASE_MS +
                          (uint64_t)j->len * COMPILE_TOOL_TIMEOUT_PER_MIB_MS / (1u << 20);
    uint64_t memory = COMPILE_TOOL_MEMORY;
    int rv;
    bool built = false;

    if (timeout_ms > COMPILE_TOOL_TIMEOUT_MAX_MS) {
        timeout_ms = COMPILE_TOOL_TIMEOUT_MAX_MS;
    }
    pthread_mutex_lock(&C.mu);
    if (C.test_timeout_ms > 0) {
        timeout_ms = C.test_timeout_ms;
    }
    if (C.test_memory > 0) {
        memory = C.test_memory;
    }
    pthread_mutex_unlock(&C.mu);
    jinn_wbuf_init(&g);
    j->code = JINN_EINTERNAL;
    j->message[0] = '\0';
    if (path_in(wasm, j->dir, "module.wasm") != 0 || path_in(mc, j->dir, "m.c") != 0 ||
        path_in(mh, j->dir, "m.h") != 0 || path_in(glue, j->dir, "glue.c") != 0 ||
        path_in(so, j->dir, "module.so") != 0 || path_in(sum, j->dir, "module.so.sha256") != 0 ||
        path_in(so_tmp, j->dir, "module.so.tmp") != 0 ||
        path_in(sum_tmp, j->dir, "module.so.sha256.tmp") != 0) {
        FAIL(JINN_EINVAL, "data_dir path too long");
    }
    snprintf(fn_dir, sizeof fn_dir, "%s", j->dir);
    *strrchr(fn_dir, '/') = '\0';
    if (mkdir_one(fn_dir) != 0 || mkdir_one(j->dir) != 0) {
        FAIL(JINN_EIO, "cannot create data_dir/fn/%s: %s", strrchr(j->dir, '/') + 1,
             strerror(errno));
    }
    if (cache_valid(j, so, sum, false)) {
        j->code = 0;
        j->compile_ms = 0;
        snprintf(j->so_path, sizeof j->so_path, "%s", so);
        goto cleanup;
    }
    unlink(so);
    unlink(sum);

    if (jinn_sha256(j->module, j->len, sha) != 0) {
        FAIL(JINN_ENOMEM, "out of memory hashing the module");
    }
    if (memcmp(sha, j->sha, sizeof sha) != 0) {
        FAIL(JINN_EINVAL, "the module's bytes do not match its sha256");
    }
    rv = jinn_wasm_inspect(j->module, j->len, &info, err, sizeof err);
    if (rv != 0) {
        FAIL(rv, "%s", err);
    }
    if (write_file(wasm, j->module, j->len, false) != 0) {
        FAIL(JINN_EIO, "cannot write module.wasm: %s", strerror(errno));
    }
    /* The bytes are on disk; the copy is not needed any more. */
    jinn_free(j->module);
    j->module = NULL;

    {
        /* (wabt 1.0.32's wasm2c refuses every feature flag, --disable-simd
         * included, with "only supports a limited set of features".) */
        char *argv[] = {"wasm2c", "-n", "m", wasm, "-o", mc, NULL};
        rv = run_tool(argv, timeout_ms, memory, out, sizeof out);
    }
    if (rv == JINN_ENOTFOUND) {
        FAIL(JINN_EINTERNAL, "wasm2c is not installed (not found in PATH): install Debian's "
                             "wabt package");
    }
    if (rv == JINN_ESHUTDOWN) {
        FAIL(rv, "shutting down");
    }
    if (rv != 0) {
        /* The translator refusing is the module's problem. */
        strip_dir(out, j->dir);
        if (rv == JINN_ETIMEOUT) {
            FAIL(rv, "%s", out);
        }
        /* wasm2c accepts SIMD modules (wasm-validate does too) and then
         * aborts without a word: wasm-validate without SIMD says where and
         * what, for that and any other refusal. */
        {
            char vout[COMPILE_MESSAGE_MAX / 2 + 1];
            char *vargv[] = {"wasm-validate", "--disable-simd", wasm, NULL};
            size_t used = strlen(out);
            if (used + 2 < sizeof out &&
                run_tool(vargv, timeout_ms, memory, vout, sizeof vout) == JINN_EINTERNAL) {
                strip_dir(vout, j->dir);
                snprintf(out + used, sizeof out - used, "%s%s", used > 0 && out[used - 1] != '\n' ? "\n" : "", vout);
            }
        }
        for (size_t n = strlen(out); n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '); n--) {
            out[n - 1] = '\0';
        }
        FAIL(JINN_EINVAL, "wasm2c: %s%s", out,
             strstr(out, "opcode: 0xfd") != NULL
                 ? " (0xfd opcodes are SIMD, which Debian 12's wasm2c cannot translate: build "
                   "the module without simd128)"
                 : "");
    }

    rv = jinn_wasm_glue_write(&g, &info);
    if (rv != 0 || g.failed) {
        FAIL(rv != 0 ? rv : JINN_ENOMEM, "cannot generate the glue (error %d)", rv);
    }
    if (write_file(glue, g.data, g.len, false) != 0) {
        FAIL(JINN_EIO, "cannot write glue.c: %s", strerror(errno));
    }

    {
        char *argv[] = {"cc", CC_FLAGS, mc, glue, "-o", so_tmp, NULL};
        rv = run_tool(argv, timeout_ms, memory, out, sizeof out);
    }
    if (rv == JINN_ENOTFOUND) {
        FAIL(JINN_EINTERNAL, "cc is not installed (not found in PATH): install Debian's gcc "
                             "(build-essential)");
    }
    if (rv == JINN_ESHUTDOWN) {
        FAIL(rv, "shutting down");
    }
    if (rv != 0) {
        strip_dir(out, j->dir);
        if (rv == JINN_ETIMEOUT) {
            FAIL(rv, "%s", out);
        }
        FAIL(JINN_EINTERNAL, "cc: %s", out);
    }

    /* Durable before it is named: the .so, then its checksum, then the
     * directory holding both names. */
    if (fsync_path(so_tmp, O_RDONLY) != 0) {
        FAIL(JINN_EIO, "cannot fsync module.so.tmp: %s", strerror(errno));
    }
    rv = jinn_sha256_file(so_tmp, sha);
    if (rv != 0) {
        FAIL(rv, "cannot read module.so.tmp: %s", strerror(errno));
    }
    jinn_sha256_hex(sha, hex);
    snprintf(sumtext, sizeof sumtext, "%s\n%s\n", hex, build_key());
    if (write_file(sum_tmp, sumtext, strlen(sumtext), true) != 0) {
        FAIL(JINN_EIO, "cannot write module.so.sha256.tmp: %s", strerror(errno));
    }
    if (rename(so_tmp, so) != 0 || rename(sum_tmp, sum) != 0 ||
        fsync_path(j->dir, O_RDONLY | O_DIRECTORY) != 0) {
        FAIL(JINN_EIO, "cannot install module.so: %s", strerror(errno));
    }
    built = true;
    j->code = 0;
    j->compile_ms = now_ms() - t0;
    if (j->compile_ms == 0) {
        j->compile_ms = 1; /* 0 means a cache hit */
    }
    snprintf(j->so_path, sizeof j->so_path, "%s", so);
cleanup:
    /* The translation (12 MB of C for a 1 MB module) is never kept: a
     * failed build is reproduced from module.wasm, and glue.c (small) is
     * kept for that. */
    unlink(mc);
    unlink(mh);
    if (built) {
        unlink(glue);
    }
    if (j->code != 0) {
        unlink(so_tmp);
        unlink(sum_tmp);
    }
    jinn_wbuf_free(&g);
    sanitize(j->message);
}

static void queue_remove(struct job *j)
{
    struct job *prev = NULL;
    for (struct job *q = C.head; q != NULL; prev = q, q = q->next) {
        if (q != j) {
            continue;
        }
        if (prev != NULL) {
            prev->next = j->next;
        } else {
            C.head = j->next;
        }
        if (C.tail == j) {
            C.tail = prev;
        }
        j->next = NULL;
        C.queued--;
        C.queued_bytes -= j->len;
        return;
    }
}

/* A cache check only, for a job still queued: true (and the result set)
 * on a hit. Quiet: a bad entry is logged when its build starts. */
static bool precheck(struct job *j)
{
    char so[COMPILE_PATH_MAX], sum[COMPILE_PATH_MAX];
    if (path_in(so, j->dir, "module.so") != 0 || path_in(sum, j->dir, "module.so.sha256") != 0 ||
        !cache_valid(j, so, sum, true)) {
        return false;
    }
    j->code = 0;
    j->compile_ms = 0;
    j->message[0] = '\0';
    snprintf(j->so_path, sizeof j->so_path, "%s", so);
    return true;
}

/* Every queued job's cache is checked before the next build starts, so
 * modules already built (a restart) are ready at once instead of waiting,
 * possibly minutes, behind a build queued before them. */
static void *compile_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&C.mu);
    while (!C.stop) {
        struct job *j = C.head;
        bool hit;
        if (j == NULL) {
            pthread_cond_wait(&C.cond, &C.mu);
            continue;
        }
        while (j != NULL && j->checked) {
            j = j->next;
        }
        if (j != NULL) {
            j->busy = true;
            pthread_mutex_unlock(&C.mu);
            hit = precheck(j);
            pthread_mutex_lock(&C.mu);
            j->busy = false;
            if (C.stop) {
                break;
            }
            if (hit || j->cancelled) {
                /* A cancelled job goes to the loop to be closed, unbuilt. */
                queue_remove(j);
                uv_async_send(&j->async);
            } else {
                j->checked = true;
            }
            continue;
        }
        /* The smallest module first (the oldest among equals): a tiny
         * function deployed after a 1 MB one must not wait minutes behind
         * it. A stream of small deploys can delay a big one, never drop it
         * (the queue is bounded). */
        j = C.head;
        for (struct job *q = C.head->next; q != NULL; q = q->next) {
            if (q->len < j->len) {
                j = q;
            }
        }
        queue_remove(j);
        if (j->cancelled) {
            uv_async_send(&j->async);
            continue;
        }
        pthread_mutex_unlock(&C.mu);

        run_job(j);

        pthread_mutex_lock(&C.mu);
        if (C.stop) {
            break; /* shutdown closes the job's handle */
        }
        uv_async_send(&j->async);
    }
    pthread_mutex_unlock(&C.mu);
    return NULL;
}

static void job_free(uv_handle_t *h)
{
    struct job *j = (struct job *)h;
    jinn_free(j->module);
    jinn_free(j);
}

static void all_remove(struct job *j)
{
    if (j->all_prev != NULL) {
        j->all_prev->all_next = j->all_next;
    } else {
        C.all = j->all_next;
    }
    if (j->all_next != NULL) {
        j->all_next->all_prev = j->all_prev;
    }
    j->all_prev = j->all_next = NULL;
}

/* On the loop: the compile thread finished the job. */
static void job_done(uv_async_t *a)
{
    struct job *j = (struct job *)a;
    pthread_mutex_lock(&C.mu);
    all_remove(j);
    pthread_mutex_unlock(&C.mu);
    if (j->cancelled) {
        /* Not reported; the cache keeps what was built. */
    } else if (j->code == 0) {
        if (j->compile_ms > 0) {
            jinn_info("fn %.12s compiled in %llu ms", strrchr(j->dir, '/') + 1,
                      (unsigned long long)j->compile_ms);
        }
        j->cb(j->data, 0, j->so_path, NULL, j->compile_ms);
    } else {
        jinn_warn("fn %.12s failed to compile: %.200s", strrchr(j->dir, '/') + 1, j->message);
        j->cb(j->data, j->code, NULL, j->message, 0);
    }
    uv_close((uv_handle_t *)&j->async, job_free);
}

/* COMPILE_QUEUE_MAX, or lower for tests: JINN_TEST_COMPILE_QUEUE_MAX (read
 * once, loop thread) makes a full queue easy to reach. */
static unsigned queue_max(void)
{
    static unsigned max;
    if (max == 0) {
        const char *e = getenv("JINN_TEST_COMPILE_QUEUE_MAX");
        char *end;
        unsigned long v = e != NULL && *e != '\0' ? strtoul(e, &end, 10) : 0;
        max = v >= 1 && v < COMPILE_QUEUE_MAX && *end == '\0' ? (unsigned)v : COMPILE_QUEUE_MAX;
    }
    return max;
}

int jinn_wasm_compile(uv_loop_t *loop, const char *data_dir, const uint8_t sha[32],
                      const void *module, size_t len, jinn_wasm_compile_cb cb, void *data)
{
    struct job *j;
    char hex[JINN_SHA256_HEX_LEN + 1];
    int n, rv = 0;

    if (loop == NULL || data_dir == NULL || sha == NULL || cb == NULL ||
        (module == NULL && len > 0)) {
        return JINN_EINVAL;
    }
    if (len > COMPILE_QUEUE_BYTES) {
        return JINN_ETOOBIG;
    }
    j = jinn_calloc(1, sizeof *j);
    if (j == NULL) {
        return JINN_ENOMEM;
    }
    j->module = jinn_malloc(len ? len : 1);
    if (j->module == NULL) {
        jinn_free(j);
        return JINN_ENOMEM;
    }
    if (len > 0) {
        memcpy(j->module, module, len);
    }
    j->len = len;
    memcpy(j->sha, sha, sizeof j->sha);
    j->cb = cb;
    j->data = data;
    jinn_sha256_hex(sha, hex);
    n = snprintf(j->dir, sizeof j->dir, "%s/fn/%s", data_dir, hex);
    if (n < 0 || (size_t)n >= sizeof j->dir - 32) {
        job_free((uv_handle_t *)j);
        return JINN_EINVAL;
    }
    if (uv_async_init(loop, &j->async, job_done) != 0) {
        job_free((uv_handle_t *)j);
        return JINN_EINTERNAL;
    }

    pthread_mutex_lock(&C.mu);
    if (C.stop) {
        rv = JINN_ESHUTDOWN;
    } else if (C.queued >= queue_max() || C.queued_bytes + len > COMPILE_QUEUE_BYTES) {
        rv = JINN_EBUSY;
    } else if (!C.running) {
        sigset_t all, old;
        pthread_attr_t attr;
        /* No signal for the compile thread: they belong to the loop. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        if (pthread_attr_init(&attr) != 0) {
            rv = JINN_ENOMEM;
        } else {
            if (pthread_create(&C.thread, &attr, compile_thread, NULL) != 0) {
                rv = JINN_EINTERNAL;
            } else {
                C.running = true;
            }
            pthread_attr_destroy(&attr);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (rv == 0) {
        if (C.tail != NULL) {
            C.tail->next = j;
        } else {
            C.head = j;
        }
        C.tail = j;
        C.queued++;
        C.queued_bytes += len;
        j->all_next = C.all;
        if (C.all != NULL) {
            C.all->all_prev = j;
        }
        C.all = j;
        pthread_cond_signal(&C.cond);
    }
    pthread_mutex_unlock(&C.mu);
    if (rv != 0) {
        uv_close((uv_handle_t *)&j->async, job_free);
    }
    return rv;
}

void jinn_wasm_compile_set_limits(uint64_t timeout_ms, uint64_t memory)
{
    pthread_mutex_lock(&C.mu);
    C.test_timeout_ms = timeout_ms;
    C.test_memory = memory;
    pthread_mutex_unlock(&C.mu);
}

void jinn_wasm_compile_cancel(void *data)
{
    struct job *j, *next, *prev = NULL;
    pthread_mutex_lock(&C.mu);
    for (j = C.all; j != NULL; j = j->all_next) {
        if (j->data == data) {
            j->cancelled = true;
        }
    }
    /* Queued ones are not built at all. */
    for (j = C.head; j != NULL; j = next) {
        next = j->next;
        if (!j->cancelled || j->busy) {
            prev = j;
            continue;
        }
        if (prev != NULL) {
            prev->next = next;
        } else {
            C.head = next;
        }
        if (C.tail == j) {
            C.tail = prev;
        }
        C.queued--;
        C.queued_bytes -= j->len;
        all_remove(j);
        uv_close((uv_handle_t *)&j->async, job_free);
    }
    pthread_mutex_unlock(&C.mu);
}

void jinn_wasm_compile_shutdown(void)
{
    struct job *j;
    bool running;

    pthread_mutex_lock(&C.mu);
    running = C.running;
    C.stop = true;
    if (C.child > 0) {
        kill(-C.child, SIGKILL);
    }
    pthread_cond_broadcast(&C.cond);
    pthread_mutex_unlock(&C.mu);
    if (running) {
        pthread_join(C.thread, NULL);
    }
    /* The thread is gone: every job not delivered (queued, interrupted,
     * or finished with its async not yet run) is dropped, its callback
     * never run. uv_close on the job's own loop frees it. */
    pthread_mutex_lock(&C.mu);
    while ((j = C.all) != NULL) {
        all_remove(j);
        uv_close((uv_handle_t *)&j->async, job_free);
    }
    C.head = C.tail = NULL;
    C.queued = 0;
    C.queued_bytes = 0;
    C.running = false;
    C.child = 0;
    /* A later jinn_wasm_compile starts a new thread (tests restart). */
    C.stop = false;
    pthread_mutex_unlock(&C.mu);
}
