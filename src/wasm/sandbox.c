/* sandbox.c - see sandbox.h. The wire is proto.h's; the runtime rt.c's;
 * WASI wasi.c's. This file loads the module, locks the process down, runs
 * invocations and defines the `gojinn` host symbols (HOSTCALL frames). */
#include "wasm/sandbox.h"

#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "wasm/abi.h"
#include "wasm/proto.h"
#include "wasm/rt.h"
#include "wasm/wasi.h"

#define HOST_FAIL 0xFFFFFFFFu
/* Address space beyond what is mapped once the module is loaded: frames
 * (up to JINN_SBX_FRAME_MAX each, two buffers), stdout, tables. */
#define AS_HEADROOM (512ull << 20)
/* Buffers above this are released after an invocation rather than kept. */
#define BUF_KEEP_MAX (1u << 20)

struct module {
    void *so;
    size_t instance_size;
    uint32_t depth_base;
    void (*init)(void);
    void (*instantiate)(void *inst, void *gojinn_ctx, void *wasi_ctx);
    void (*free)(void *inst);
    void (*start)(void *inst);
};

struct frame_buf {
    uint8_t *data;
    size_t cap;
};

static struct module mod;
static void *inst;
static int init_failure; /* jump value of jinn_mod_init, 0 = fine */
static int inst_failure; /* of the last instantiate, 0 = an instance is ready */
static struct frame_buf invoke_buf, reply_buf;
static size_t log_budget; /* stderr + host_log bytes left in this invocation */
/* LOG and STDERR frames left in this invocation: each costs the node an
 * allocation and a log line, so a flood of one-byte host_log calls is
 * bounded by count as well as by bytes. */
#define LOG_FRAMES_MAX 1000u
static unsigned log_frames;
static bool log_truncated;
static char gojinn_ctx, wasi_ctx; /* the glue passes these back; unused */

/* ---- frames ---- */

static bool write_all(struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(JINN_SBX_FD, iov, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return true;
}

/* at_eof: set when the peer closed the socket before the first byte. */
static bool read_all(uint8_t *p, size_t n, bool *at_eof)
{
    bool first = true;
    while (n > 0) {
        ssize_t r = read(JINN_SBX_FD, p, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            if (r == 0 && first && at_eof != NULL) {
                *at_eof = true;
            }
            return false;
        }
        first = false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* Reads one frame into fb: *type and the payload (*len bytes at fb->data).
 * False on EOF (*at_eof set when it came between frames), an error or a
 * malformed length. */
static bool read_frame(struct frame_buf *fb, uint8_t *type, size_t *len, bool *at_eof)
{
    uint8_t hdr[5];
    uint32_t n;
    /* Length and type in one read: every frame has a type byte. */
    if (!read_all(hdr, 5, at_eof)) {
        return false;
    }
    n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
        (uint32_t)hdr[3] << 24;
    if (n < 1 || n > JINN_SBX_FRAME_MAX) {
        return false;
    }
    *type = hdr[4];
    *len = n - 1;
    if (*len > fb->cap) {
        uint8_t *grown = jinn_realloc(fb->data, *len);
        if (grown == NULL) {
            return false;
        }
        fb->data = grown;
        fb->cap = *len;
    }
    return read_all(fb->data, *len, NULL);
}

static void shrink(struct frame_buf *fb)
{
    if (fb->cap > BUF_KEEP_MAX) {
        jinn_free(fb->data);
        fb->data = NULL;
        fb->cap = 0;
    }
}

static bool send_simple(uint8_t type, const void *p, size_t n, bool with_len)
{
    uint8_t hdr[9];
    struct iovec iov[2];
    size_t hlen = with_len ? 9 : 5;
    put32(hdr, (uint32_t)(hlen - 4 + n));
    hdr[4] = type;
    put32(hdr + 5, (uint32_t)n);
    iov[0] = (struct iovec){hdr, hlen};
    iov[1] = (struct iovec){(void *)p, n};
    return write_all(iov, n ? 2 : 1);
}

/* ---- guest output that goes to the node's log ---- */

static void send_log_bytes(const uint8_t *p, size_t n, bool is_hostlog, uint32_t level)
{
    static const char note[] = "[jinn: log output over the per-invocation limit dropped]\n";
    if (log_frames == 0) {
        log_budget = 0;
    }
    if (n > log_budget) {
        n = log_budget;
    }
    if (n > 0) {
        log_budget -= n;
        log_frames--;
        if (is_hostlog) {
            uint8_t hdr[4 + 1 + 1 + 4 + 4 + 4], empty[4] = {0};
            struct iovec iov[3];
            put32(hdr, (uint32_t)(sizeof hdr - 4 + n + 4));
            hdr[4] = JINN_SBX_HOSTCALL;
            hdr[5] = JINN_SBX_LOG;
            put32(hdr + 6, level);
            put32(hdr + 10, 0);
            put32(hdr + 14, (uint32_t)n);
            iov[0] = (struct iovec){hdr, sizeof hdr};
            iov[1] = (struct iovec){(void *)p, n};
            iov[2] = (struct iovec){empty, 4};
            if (!write_all(iov, 3)) {
                jinn_rt_jump(JINN_RT_JMP_PROTO);
            }
        } else if (!send_simple(JINN_SBX_STDERR, p, n, true)) {
            jinn_rt_jump(JINN_RT_JMP_PROTO);
        }
    }
    if (log_budget == 0 && !log_truncated) {
        log_truncated = true;
        if (!send_simple(JINN_SBX_STDERR, note, sizeof note - 1, true)) {
            jinn_rt_jump(JINN_RT_JMP_PROTO);
        }
    }
}

static void guest_stderr(const uint8_t *p, size_t n)
{
    send_log_bytes(p, n, false, 0);
}

/* The sandbox's own word about a host call the guest got wrong. */
static void host_complain(const char *fn, const char *what)
{
    char line[160];
    int n = snprintf(line, sizeof line, "jinn: %s: %s\n", fn, what);
    send_log_bytes((const uint8_t *)line, (size_t)n, false, 0);
}

/* ---- host calls (abi.h's gojinn imports) ---- */

/* Sends HOSTCALL (b1, b2 in guest memory) and, for calls that answer,
 * waits for HOSTREPLY. With an out buffer, the reply's data is copied there
 * when it fits outmax (the result is then its length), else HOST_FAIL. */
static uint32_t hostcall(const char *fn, uint8_t call, uint32_t a, uint32_t p1, uint32_t n1,
                         uint32_t p2, uint32_t n2, bool has_out, uint32_t outptr,
                         uint32_t outmax)
{
    uint8_t hdr[4 + 1 + 1 + 4 + 4 + 4], len2[4], type;
    const uint8_t *b1 = jinn_rt_guest(p1, n1), *b2 = jinn_rt_guest(p2, n2);
    uint8_t *out = has_out ? jinn_rt_guest(outptr, outmax) : NULL;
    struct iovec iov[4];
    struct jinn_rbuf r;
    const uint8_t *data;
    size_t len, data_len;
    uint32_t result;
    uint64_t total = sizeof hdr - 4 + (uint64_t)n1 + 4 + n2;

    if (b1 == NULL || b2 == NULL || (has_out && out == NULL)) {
        host_complain(fn, "a pointer/length argument is outside the module's memory");
        return HOST_FAIL;
    }
    if (total > JINN_SBX_FRAME_MAX) {
        host_complain(fn, "arguments too large");
        return HOST_FAIL;
    }
    put32(hdr, (uint32_t)total);
    hdr[4] = JINN_SBX_HOSTCALL;
    hdr[5] = call;
    put32(hdr + 6, a);
    put32(hdr + 10, has_out ? outmax : 0);
    put32(hdr + 14, n1);
    put32(len2, n2);
    iov[0] = (struct iovec){hdr, sizeof hdr};
    iov[1] = (struct iovec){(void *)b1, n1};
    iov[2] = (struct iovec){len2, 4};
    iov[3] = (struct iovec){(void *)b2, n2};
    if (!write_all(iov, 4) || !read_frame(&reply_buf, &type, &len, NULL) ||
        type != JINN_SBX_HOSTREPLY) {
        jinn_rt_jump(JINN_RT_JMP_PROTO);
    }
    jinn_rbuf_init(&r, reply_buf.data, len);
    result = jinn_rbuf_get_u32(&r);
    data_len = jinn_rbuf_get_bytes(&r, &data, JINN_SBX_FRAME_MAX);
    if (r.failed || r.left != 0) {
        jinn_rt_jump(JINN_RT_JMP_PROTO);
    }
    if (!has_out || result == HOST_FAIL) {
        return result;
    }
    if (data_len > outmax) {
        return HOST_FAIL;
    }
    /* The memory cannot have moved or shrunk: the guest was waiting. */
    memcpy(out, data, data_len);
    return (uint32_t)data_len;
}

void jinn_host_log(void *ctx, uint32_t level, uint32_t ptr, uint32_t len)
{
    const uint8_t *p = jinn_rt_guest(ptr, len);
    (void)ctx;
    if (p == NULL) {
        host_complain("host_log", "message outside the module's memory");
        return;
    }
    send_log_bytes(p, len, true, level);
}

uint32_t jinn_host_kv_set(void *ctx, uint32_t kptr, uint32_t klen, uint32_t vptr, uint32_t vlen)
{
    (void)ctx;
    return hostcall("host_kv_set", JINN_SBX_KV_SET, 0, kptr, klen, vptr, vlen, false, 0, 0);
}

uint32_t jinn_host_kv_get(void *ctx, uint32_t kptr, uint32_t klen, uint32_t outptr,
                          uint32_t outmax)
{
    (void)ctx;
    return hostcall("host_kv_get", JINN_SBX_KV_GET, 0, kptr, klen, 0, 0, true, outptr, outmax);
}

/* The mutex calls answer 1 or 0, never anything else: a bad pointer or a
 * key too large is 0 (FOLLOWER / not released), as docs/api.md promises,
 * so a guest testing the result for non-zero stays safe. */
uint32_t jinn_host_mutex_lock(void *ctx, uint32_t kptr, uint32_t klen, uint32_t ttl_s)
{
    (void)ctx;
    return hostcall("host_mutex_lock", JINN_SBX_MUTEX_LOCK, ttl_s, kptr, klen, 0, 0, false, 0,
                    0) == 1;
}

uint32_t jinn_host_mutex_unlock(void *ctx, uint32_t kptr, uint32_t klen)
{
    (void)ctx;
    return hostcall("host_mutex_unlock", JINN_SBX_MUTEX_UNLOCK, 0, kptr, klen, 0, 0, false, 0,
                    0) == 1;
}

uint32_t jinn_host_db_query(void *ctx, uint32_t qptr, uint32_t qlen, uint32_t outptr,
                            uint32_t outmax)
{
    (void)ctx;
    return hostcall("host_db_query", JINN_SBX_DB_QUERY, 0, qptr, qlen, 0, 0, true, outptr,
                    outmax);
}

uint32_t jinn_host_enqueue(void *ctx, uint32_t fptr, uint32_t flen, uint32_t pptr,
                           uint32_t plen)
{
    (void)ctx;
    return hostcall("host_enqueue", JINN_SBX_ENQUEUE, 0, fptr, flen, pptr, plen, false, 0, 0);
}

/* ---- the module ---- */

static void *sym(const char *name)
{
    void *p = dlsym(mod.so, name);
    if (p == NULL) {
        fprintf(stderr, "jinn sandbox: the module has no symbol %s (not built by jinn?)\n",
                name);
    }
    return p;
}

/* dlsym for a function: POSIX guarantees the conversion, ISO C does not
 * spell it, so the pointer's bytes are copied. */
static bool fsym(const char *name, void *fn, size_t fn_size)
{
    void *p = sym(name);
    if (p == NULL || fn_size != sizeof p) {
        return false;
    }
    memcpy(fn, &p, sizeof p);
    return true;
}

static int load(const char *path, uint32_t stack_depth)
{
    const unsigned *version;
    const size_t *size;
    const uint32_t *max_depth;

    mod.so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (mod.so == NULL) {
        fprintf(stderr, "jinn sandbox: %s\n", dlerror());
        return -1;
    }
    version = sym("jinn_mod_glue_version");
    size = sym("jinn_mod_instance_size");
    max_depth = sym("jinn_mod_max_call_depth");
    if (!version || !size || !max_depth || !fsym("jinn_mod_init", &mod.init, sizeof mod.init) ||
        !fsym("jinn_mod_instantiate", &mod.instantiate, sizeof mod.instantiate) ||
        !fsym("jinn_mod_free", &mod.free, sizeof mod.free) ||
        !fsym("jinn_mod_start", &mod.start, sizeof mod.start)) {
        return -1;
    }
    if (*version != JINN_WASM_GLUE_VERSION) {
        fprintf(stderr, "jinn sandbox: glue version %u, this jinn speaks %d\n", *version,
                JINN_WASM_GLUE_VERSION);
        return -1;
    }
    mod.instance_size = *size;
    /* The compiled limit is a constant in m.c; a lower one is had by
     * starting the count higher. */
    mod.depth_base = stack_depth && stack_depth < *max_depth ? *max_depth - stack_depth : 0;
    return 0;
}

/* The executable segments of the module's shared object, for the stack
 * guard (rt.h): found by the load address dladdr reports. */
struct code_range {
    uintptr_t base, lo, hi;
};

static int find_code(struct dl_phdr_info *info, size_t size, void *data)
{
    struct code_range *r = data;
    (void)size;
    if (info->dlpi_addr != r->base) {
        return 0;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
            r->lo = r->lo == 0 || lo < r->lo ? lo : r->lo;
            r->hi = hi > r->hi ? hi : r->hi;
        }
    }
    return 1;
}

static int guard_stack(const void *stack_top)
{
    Dl_info di;
    struct code_range r = {0, 0, 0};
    void *start;
    memcpy(&start, &mod.start, sizeof start);
    if (dladdr(start, &di) == 0 || di.dli_fbase == NULL) {
        return -1;
    }
    r.base = (uintptr_t)di.dli_fbase;
    if (dl_iterate_phdr(find_code, &r) != 1 || r.lo == 0) {
        return -1;
    }
    return jinn_rt_guard_stack(stack_top, r.lo, r.hi);
}

static void call_init(void *arg)
{
    (void)arg;
    mod.init();
}

static void call_instantiate(void *arg)
{
    mod.instantiate(arg, &gojinn_ctx, &wasi_ctx);
}

static void call_start(void *arg)
{
    mod.start(arg);
}

static void call_free(void *arg)
{
    mod.free(arg);
}

/* A fresh instance for the next invocation: the last one's memory zeroed
 * (rt.c), data segments and tables written again. */
static void rebuild(void)
{
    if (init_failure != 0) {
        inst_failure = init_failure;
        return;
    }
    /* Also after a failed instantiate, which may have allocated some of
     * it (the instance was zeroed first; rt.c frees only what it gave). */
    jinn_rt_run(call_free, inst, 0);
    memset(inst, 0, mod.instance_size);
    inst_failure = jinn_rt_run(call_instantiate, inst, mod.depth_base);
}

static uint32_t trap_kind(int v)
{
    switch (v) {
    case WASM_RT_TRAP_OOB:
        return JINN_TRAP_OOB;
    case WASM_RT_TRAP_INT_OVERFLOW:
        return JINN_TRAP_INT_OVERFLOW;
    case WASM_RT_TRAP_DIV_BY_ZERO:
        return JINN_TRAP_DIV_BY_ZERO;
    case WASM_RT_TRAP_INVALID_CONVERSION:
        return JINN_TRAP_INVALID_CONVERSION;
    case WASM_RT_TRAP_UNREACHABLE:
        return JINN_TRAP_UNREACHABLE;
    case WASM_RT_TRAP_CALL_INDIRECT:
        return JINN_TRAP_CALL_INDIRECT;
    case WASM_RT_TRAP_EXHAUSTION:
        return JINN_TRAP_STACK_EXHAUSTED;
    case JINN_RT_JMP_OOM:
        return JINN_TRAP_OUT_OF_MEMORY;
    default:
        return JINN_TRAP_OTHER;
    }
}

static bool send_done(uint8_t outcome, uint32_t detail, const uint8_t *out, size_t n)
{
    uint8_t hdr[4 + 1 + 1 + 4 + 4];
    struct iovec iov[2];
    put32(hdr, (uint32_t)(sizeof hdr - 4 + n));
    hdr[4] = JINN_SBX_DONE;
    hdr[5] = outcome;
    put32(hdr + 6, detail);
    put32(hdr + 10, (uint32_t)n);
    iov[0] = (struct iovec){hdr, sizeof hdr};
    iov[1] = (struct iovec){(void *)out, n};
    return write_all(iov, n ? 2 : 1);
}

/* Reads a list of "bytes" into an array (allocated; caller frees). */
static struct jinn_wasi_str *get_strings(struct jinn_rbuf *r, uint32_t *n)
{
    struct jinn_wasi_str *v;
    *n = jinn_rbuf_get_u32(r);
    if (r->failed || *n > r->left / 4) {
        r->failed = true;
        return NULL;
    }
    v = jinn_calloc(*n ? *n : 1, sizeof *v);
    if (v == NULL) {
        r->failed = true;
        return NULL;
    }
    for (uint32_t i = 0; i < *n; i++) {
        const uint8_t *p;
        v[i].len = (uint32_t)jinn_rbuf_get_bytes(r, &p, JINN_SBX_FRAME_MAX);
        v[i].p = p;
    }
    return v;
}

/* One INVOKE: returns false when the sandbox must end. */
static bool invoke(const uint8_t *payload, size_t len, struct jinn_wbuf *out)
{
    struct jinn_rbuf r;
    struct jinn_wasi_invocation wi;
    struct jinn_wasi_str *args = NULL, *env = NULL;
    const uint8_t *in;
    uint8_t outcome;
    uint32_t detail;
    bool ok = false;
    int v;

    memset(&wi, 0, sizeof wi);
    jinn_rbuf_init(&r, payload, len);
    (void)jinn_rbuf_get_u64(&r); /* invocation id: the node's bookkeeping */
    args = get_strings(&r, &wi.n_args);
    env = get_strings(&r, &wi.n_env);
    wi.in_len = jinn_rbuf_get_bytes(&r, &in, JINN_SBX_STDIN_MAX);
    if (r.failed || r.left != 0) {
        fprintf(stderr, "jinn sandbox: malformed INVOKE frame\n");
        goto cleanup;
    }
    wi.args = args;
    wi.env = env;
    wi.in = in;
    wi.out = out;
    wi.out_max = JINN_SBX_STDOUT_MAX;
    wi.err = guest_stderr;
    out->len = 0;
    out->failed = false;
    log_budget = JINN_SBX_STDERR_MAX;
    log_frames = LOG_FRAMES_MAX;
    log_truncated = false;
    jinn_wasi_begin(&wi);

    v = inst_failure != 0 ? inst_failure : jinn_rt_run(call_start, inst, mod.depth_base);
    if (v == JINN_RT_JMP_PROTO) {
        goto cleanup;
    }
    if (v == 0 || v == JINN_RT_JMP_EXIT) {
        outcome = JINN_SBX_EXITED;
        detail = v == 0 ? 0 : jinn_rt_exit_code();
    } else if (v == JINN_RT_JMP_OUTPUT) {
        outcome = JINN_SBX_OUTPUT_TOO_LARGE;
        detail = 0;
        out->len = 0;
    } else {
        outcome = JINN_SBX_TRAPPED;
        detail = trap_kind(v);
        out->len = 0;
    }
    if (!send_done(outcome, detail, out->data, out->len)) {
        goto cleanup;
    }
    ok = true;
cleanup:
    jinn_free(args);
    jinn_free(env);
    return ok;
}

/* ---- lock-down ---- */

static void set_limit(int resource, rlim_t value)
{
    struct rlimit rl = {value, value};
    if (setrlimit(resource, &rl) != 0) {
        /* Lowering a hard limit cannot fail for lack of privilege; any
         * failure is worth a line but not fatal. */
        fprintf(stderr, "jinn sandbox: setrlimit(%d): %s\n", resource, strerror(errno));
    }
}

#ifndef __SANITIZE_ADDRESS__
static uint64_t vm_size(void)
{
    unsigned long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%llu", &pages) != 1) {
            pages = 0;
        }
        fclose(f);
    }
    return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}
#endif

static int lock_down(pid_t parent)
{
    /* Die with the node; if it is already gone, go now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
        return -1;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* When memory runs out, the kernel kills a sandbox before the node
     * (raising one's own score needs no privilege; best effort). */
    {
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (write(fd, "1000", 4) != 4) {
                /* an older kernel or a restricted /proc: nothing to do */
            }
            close(fd);
        }
    }
    /* Nothing but stdio and the protocol socket. */
    if (close_range(JINN_SBX_FD + 1, ~0u, 0) != 0) {
        for (int fd = JINN_SBX_FD + 1; fd < 1024; fd++) {
            close(fd);
        }
    }
    set_limit(RLIMIT_CORE, 0);
    set_limit(RLIMIT_NOFILE, 16);
#ifndef __SANITIZE_ADDRESS__
    /* ASan reserves terabytes of shadow, writes its reports to stderr
     * (maybe a file) and may start a symbolizer: these only without it. */
    set_limit(RLIMIT_AS, (rlim_t)(vm_size() + AS_HEADROOM));
    signal(SIGXFSZ, SIG_IGN);
    set_limit(RLIMIT_FSIZE, 0);
    set_limit(RLIMIT_NPROC, 0);
#endif
    return 0;
}

/* The system calls a running sandbox makes: frames (read, write, writev),
 * memory (malloc, rt.c's madvise), clocks and sleeps (vDSO fallbacks),
 * getrandom, sched_yield, exit, and abort()'s signal to itself. Anything
 * else kills the process (the node reports a crash). mmap and mprotect
 * may not ask for executable memory; tgkill only at this process. Under
 * ASan its runtime's own calls (reports, the leak check at exit) are
 * allowed too. Only where the filter's numbers are known (x86-64, arm64). */
#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef SECCOMP_ARCH
/* clang-format off */
static const long allowed_syscalls[] = {
    SYS_read, SYS_write, SYS_writev, SYS_close, SYS_munmap, SYS_mremap, SYS_brk, SYS_madvise,
    SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep, SYS_gettimeofday,
    SYS_getrandom, SYS_sched_yield, SYS_exit, SYS_exit_group, SYS_rt_sigreturn,
    SYS_rt_sigprocmask, SYS_rt_sigaction, SYS_getpid, SYS_gettid, SYS_futex, SYS_fstat,
    SYS_newfstatat,
#ifdef __SANITIZE_ADDRESS__
    SYS_openat, SYS_readlinkat, SYS_getdents64, SYS_lseek, SYS_pread64, SYS_sigaltstack,
    SYS_prctl, SYS_sched_getaffinity, SYS_clone, SYS_wait4, SYS_ptrace, SYS_getppid,
    SYS_pipe2, SYS_dup3, SYS_execve, SYS_set_robust_list, SYS_rseq, SYS_uname,
    SYS_process_vm_readv, SYS_getrlimit, SYS_prlimit64, SYS_mincore,
#ifdef SYS_open
    SYS_open, SYS_readlink, SYS_stat, SYS_lstat, SYS_access, SYS_pipe, SYS_dup2, SYS_fork,
    SYS_getdents,
    SYS_vfork, SYS_arch_prctl,
#endif
#endif
};
/* clang-format on */

static int install_seccomp(void)
{
    struct sock_filter f[6 + 2 * (sizeof allowed_syscalls / sizeof allowed_syscalls[0]) + 11];
    struct sock_fprog prog;
    unsigned n = 0;
    uint32_t pid = (uint32_t)getpid();

#define EMIT(code, jt, jf, k) (f[n++] = (struct sock_filter)BPF_JUMP(code, k, jt, jf))
#define LOAD(off) EMIT(BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(off))
#define RET(v) EMIT(BPF_RET | BPF_K, 0, 0, (uint32_t)(v))
    LOAD(offsetof(struct seccomp_data, arch));
    EMIT(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, SECCOMP_ARCH);
    RET(SECCOMP_RET_KILL_PROCESS);
    LOAD(offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
    EMIT(BPF_JMP | BPF_JGE | BPF_K, 0, 1, 0x40000000u); /* the x32 ABI */
    RET(SECCOMP_RET_KILL_PROCESS);
#endif
    for (size_t i = 0; i < sizeof allowed_syscalls / sizeof allowed_syscalls[0]; i++) {
        EMIT(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, (uint32_t)allowed_syscalls[i]);
        RET(SECCOMP_RET_ALLOW);
    }
    /* mmap and mprotect without PROT_EXEC (args[2], low word); then
     * tgkill at this process (args[0]); anything else is refused. */
    EMIT(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, (uint32_t)SYS_mmap);
    EMIT(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, (uint32_t)SYS_mprotect);
    LOAD(offsetof(struct seccomp_data, args[2]));
    EMIT(BPF_JMP | BPF_JSET | BPF_K, 0, 1, PROT_EXEC);
    RET(SECCOMP_RET_KILL_PROCESS);
    RET(SECCOMP_RET_ALLOW);
    EMIT(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, (uint32_t)SYS_tgkill);
    LOAD(offsetof(struct seccomp_data, args[0]));
    EMIT(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, pid);
    RET(SECCOMP_RET_ALLOW);
    RET(SECCOMP_RET_KILL_PROCESS);
#undef EMIT
#undef LOAD
#undef RET
    prog.len = (unsigned short)n;
    prog.filter = f;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}
#endif

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (*s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != 0) {
        return false;
    }
    *out = v;
    return true;
}

int jinn_sandbox_main(int argc, char **argv)
{
    pid_t parent = getppid();
    uint64_t memory_limit, stack_depth;
    struct jinn_wbuf out;
    uint8_t type;
    size_t len;
    int rc = 1;

    jinn_wbuf_init(&out);
    if (argc != 3 || !parse_u64(argv[1], &memory_limit) || !parse_u64(argv[2], &stack_depth) ||
        stack_depth > UINT32_MAX) {
        fprintf(stderr, "usage: jinn sandbox SO_PATH MEMORY_LIMIT_BYTES STACK_DEPTH\n"
                        "(started by a node, with its protocol socket as fd 3)\n");
        return 2;
    }
    /* The socket may come non-blocking (whoever made the pair); this
     * process waits on it and does nothing else. */
    {
        int fl = fcntl(JINN_SBX_FD, F_GETFL);
        if (fl < 0 || fcntl(JINN_SBX_FD, F_SETFL, fl & ~O_NONBLOCK) != 0) {
            fprintf(stderr, "jinn sandbox: fd %d is not open\n", JINN_SBX_FD);
            goto cleanup;
        }
    }
    if (load(argv[0], (uint32_t)stack_depth) != 0) {
        goto cleanup;
    }
    if (jinn_rt_setup(memory_limit) != 0) {
        fprintf(stderr, "jinn sandbox: cannot map %" PRIu64 " bytes of memory\n", memory_limit);
        goto cleanup;
    }
    if (lock_down(parent) != 0) {
        goto cleanup;
    }
    if (guard_stack(&parent) != 0) {
        fprintf(stderr, "jinn sandbox: no stack guard: a native stack overflow will be a "
                        "crash, not a trap\n");
    }
    inst = jinn_calloc(1, mod.instance_size ? mod.instance_size : 1);
    if (inst == NULL) {
        goto cleanup;
    }
    wasm_rt_init();
    init_failure = jinn_rt_run(call_init, NULL, 0);
    inst_failure =
        init_failure ? init_failure : jinn_rt_run(call_instantiate, inst, mod.depth_base);
#ifdef SECCOMP_ARCH
    if (install_seccomp() != 0) {
        fprintf(stderr, "jinn sandbox: seccomp: %s\n", strerror(errno));
        goto cleanup;
    }
#endif
    if (!send_simple(JINN_SBX_READY, NULL, 0, false)) {
        goto cleanup;
    }
    for (;;) {
        bool at_eof = false;
        if (!read_frame(&invoke_buf, &type, &len, &at_eof)) {
            if (at_eof) {
                rc = 0; /* the node is done with us */
            } else {
                fprintf(stderr, "jinn sandbox: malformed frame or read error\n");
            }
            break;
        }
        if (type != JINN_SBX_INVOKE) {
            fprintf(stderr, "jinn sandbox: unexpected frame type %u\n", type);
            break;
        }
        if (!invoke(invoke_buf.data, len, &out)) {
            break;
        }
        shrink(&invoke_buf);
        shrink(&reply_buf);
        if (out.cap > BUF_KEEP_MAX) {
            jinn_wbuf_free(&out);
        }
        rebuild();
    }
cleanup:
    if (inst != NULL && init_failure == 0) {
        jinn_rt_run(call_free, inst, 0);
    }
    jinn_free(inst);
    jinn_free(invoke_buf.data);
    jinn_free(reply_buf.data);
    jinn_wbuf_free(&out);
    wasm_rt_free();
    return rc;
}
