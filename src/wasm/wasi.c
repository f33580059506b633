/* wasi.c - see wasi.h. Layouts and numbers are WASI preview 1's
 * (wasi_snapshot_preview1.witx): guest memory is little endian and
 * unaligned, so every field goes through memcpy. */
#include "wasm/wasi.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "wasm/rt.h"

#define FILETYPE_UNKNOWN 0
#define RIGHT_FD_READ (1u << 1)
#define RIGHT_FD_WRITE (1u << 6)
#define RIGHT_POLL_FD_READWRITE (1u << 27)

#define SUB_SIZE 48
#define EVENT_SIZE 32
#define EVENTTYPE_CLOCK 0
#define EVENTTYPE_FD_READ 1
#define EVENTTYPE_FD_WRITE 2
#define SUBCLOCK_ABSTIME 1

static const struct jinn_wasi_invocation *inv;
static size_t in_pos;

void jinn_wasi_begin(const struct jinn_wasi_invocation *invocation)
{
    inv = invocation;
    in_pos = 0;
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint16_t get_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void set_u32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof v);
}

static void set_u64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, sizeof v);
}

static uint32_t store_u32(uint32_t ptr, uint32_t v)
{
    uint8_t *p = jinn_rt_guest(ptr, 4);
    if (p == NULL) {
        return JINN_WASI_EFAULT;
    }
    set_u32(p, v);
    return JINN_WASI_ESUCCESS;
}

static uint32_t store_u64(uint32_t ptr, uint64_t v)
{
    uint8_t *p = jinn_rt_guest(ptr, 8);
    if (p == NULL) {
        return JINN_WASI_EFAULT;
    }
    set_u64(p, v);
    return JINN_WASI_ESUCCESS;
}

/* ---- args and environment: argv-style arrays of NUL-terminated strings ---- */

static uint64_t strings_size(const struct jinn_wasi_str *s, uint32_t n)
{
    uint64_t size = 0;
    for (uint32_t i = 0; i < n; i++) {
        size += (uint64_t)s[i].len + 1;
    }
    return size;
}

static uint32_t strings_sizes(const struct jinn_wasi_str *s, uint32_t n, uint32_t count_out,
                              uint32_t size_out)
{
    uint64_t size = strings_size(s, n);
    if (size > UINT32_MAX) {
        return JINN_WASI_E2BIG;
    }
    if (jinn_rt_guest(count_out, 4) == NULL || jinn_rt_guest(size_out, 4) == NULL) {
        return JINN_WASI_EFAULT;
    }
    store_u32(count_out, n);
    store_u32(size_out, (uint32_t)size);
    return JINN_WASI_ESUCCESS;
}

static uint32_t strings_get(const struct jinn_wasi_str *s, uint32_t n, uint32_t vec,
                            uint32_t buf)
{
    uint64_t size = strings_size(s, n);
    uint8_t *v = jinn_rt_guest(vec, (uint64_t)n * 4), *b = jinn_rt_guest(buf, size);
    uint32_t at = buf;
    if (v == NULL || b == NULL) {
        return JINN_WASI_EFAULT;
    }
    for (uint32_t i = 0; i < n; i++) {
        set_u32(v + (size_t)i * 4, at);
        memcpy(b, s[i].p, s[i].len);
        b[s[i].len] = 0;
        b += s[i].len + 1;
        at += s[i].len + 1;
    }
    return JINN_WASI_ESUCCESS;
}

uint32_t jinn_wasi_args_sizes_get(void *ctx, uint32_t argc_out, uint32_t size_out)
{
    (void)ctx;
    return strings_sizes(inv->args, inv->n_args, argc_out, size_out);
}

uint32_t jinn_wasi_args_get(void *ctx, uint32_t argv, uint32_t buf)
{
    (void)ctx;
    return strings_get(inv->args, inv->n_args, argv, buf);
}

uint32_t jinn_wasi_environ_sizes_get(void *ctx, uint32_t count_out, uint32_t size_out)
{
    (void)ctx;
    return strings_sizes(inv->env, inv->n_env, count_out, size_out);
}

uint32_t jinn_wasi_environ_get(void *ctx, uint32_t envv, uint32_t buf)
{
    (void)ctx;
    return strings_get(inv->env, inv->n_env, envv, buf);
}

/* ---- clocks ---- */

static bool clock_of(uint32_t id, clockid_t *out)
{
    static const clockid_t ids[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID,
                                    CLOCK_THREAD_CPUTIME_ID};
    if (id >= sizeof ids / sizeof ids[0]) {
        return false;
    }
    *out = ids[id];
    return true;
}

static uint64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t jinn_wasi_clock_res_get(void *ctx, uint32_t id, uint32_t out)
{
    clockid_t c;
    struct timespec ts;
    (void)ctx;
    if (!clock_of(id, &c)) {
        return JINN_WASI_EINVAL;
    }
    clock_getres(c, &ts);
    return store_u64(out, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

uint32_t jinn_wasi_clock_time_get(void *ctx, uint32_t id, uint64_t precision, uint32_t out)
{
    clockid_t c;
    (void)ctx;
    (void)precision;
    if (!clock_of(id, &c)) {
        return JINN_WASI_EINVAL;
    }
    return store_u64(out, clock_ns(c));
}

/* ---- stdio ---- */

/* iovecs of one fd_read (Linux's IOV_MAX): more is EINVAL. */
#define FD_READ_IOVS_MAX 1024u

uint32_t jinn_wasi_fd_read(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t out)
{
    const uint8_t *guest_vec = jinn_rt_guest(iovs, (uint64_t)n * 8);
    uint8_t vec[FD_READ_IOVS_MAX * 8];
    uint64_t total = 0;
    (void)ctx;
    if (fd != 0) {
        return JINN_WASI_EBADF; /* stdout and stderr are not readable */
    }
    if (guest_vec == NULL || jinn_rt_guest(out, 4) == NULL) {
        return JINN_WASI_EFAULT;
    }
    if (n > FD_READ_IOVS_MAX) {
        return JINN_WASI_EINVAL;
    }
    /* A copy: a buffer may overlap the iovec array, and the copies below
     * must use the iovecs that were checked. */
    memcpy(vec, guest_vec, (size_t)n * 8);
    for (uint32_t i = 0; i < n; i++) {
        if (jinn_rt_guest(get_u32(vec + (size_t)i * 8), get_u32(vec + (size_t)i * 8 + 4)) ==
            NULL) {
            return JINN_WASI_EFAULT;
        }
    }
    for (uint32_t i = 0; i < n && in_pos < inv->in_len; i++) {
        uint32_t len = get_u32(vec + (size_t)i * 8 + 4);
        uint8_t *dst = jinn_rt_guest(get_u32(vec + (size_t)i * 8), len);
        size_t k = inv->in_len - in_pos < len ? inv->in_len - in_pos : len;
        memcpy(dst, inv->in + in_pos, k);
        in_pos += k;
        total += k;
    }
    return store_u32(out, (uint32_t)total);
}

uint32_t jinn_wasi_fd_write(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t out)
{
    const uint8_t *vec = jinn_rt_guest(iovs, (uint64_t)n * 8);
    uint64_t total = 0;
    (void)ctx;
    if (fd != 1 && fd != 2) {
        return JINN_WASI_EBADF;
    }
    if (vec == NULL || jinn_rt_guest(out, 4) == NULL) {
        return JINN_WASI_EFAULT;
    }
    /* Check everything first: a faulting iovec writes nothing. */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = get_u32(vec + (size_t)i * 8 + 4);
        if (jinn_rt_guest(get_u32(vec + (size_t)i * 8), len) == NULL) {
            return JINN_WASI_EFAULT;
        }
        total += len;
    }
    if (total > UINT32_MAX) {
        return JINN_WASI_EINVAL;
    }
    if (fd == 1 && total > inv->out_max - inv->out->len) {
        jinn_rt_jump(JINN_RT_JMP_OUTPUT);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = get_u32(vec + (size_t)i * 8 + 4);
        const uint8_t *src = jinn_rt_guest(get_u32(vec + (size_t)i * 8), len);
        if (fd == 1) {
            jinn_wbuf_put_raw(inv->out, src, len);
        } else if (len > 0) {
            inv->err(src, len);
        }
    }
    if (inv->out->failed) {
        jinn_rt_jump(JINN_RT_JMP_OOM);
    }
    return store_u32(out, (uint32_t)total);
}

uint32_t jinn_wasi_fd_fdstat_get(void *ctx, uint32_t fd, uint32_t out)
{
    uint8_t *p = jinn_rt_guest(out, 24);
    uint64_t rights = (fd == 0 ? RIGHT_FD_READ : RIGHT_FD_WRITE) | RIGHT_POLL_FD_READWRITE;
    (void)ctx;
    if (fd > 2) {
        return JINN_WASI_EBADF;
    }
    if (p == NULL) {
        return JINN_WASI_EFAULT;
    }
    /* Not a character device: wasi-libc then treats stdout as a pipe
     * (fully buffered, one fd_write per response) rather than a tty. */
    memset(p, 0, 24);
    p[0] = FILETYPE_UNKNOWN;
    set_u64(p + 8, rights);
    return JINN_WASI_ESUCCESS;
}

/* ---- the rest of the fd functions: stdio cannot do them, nothing else
 * exists. No preopened directories (fd_prestat_get says EBADF for fd 3,
 * which is how libc learns the list is empty). ---- */

static uint32_t no_fd_op(uint32_t fd)
{
    return fd <= 2 ? JINN_WASI_ENOTCAPABLE : JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_advise(void *ctx, uint32_t fd, uint64_t off, uint64_t len,
                             uint32_t advice)
{
    (void)ctx, (void)off, (void)len, (void)advice;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_allocate(void *ctx, uint32_t fd, uint64_t off, uint64_t len)
{
    (void)ctx, (void)off, (void)len;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_close(void *ctx, uint32_t fd)
{
    (void)ctx;
    return fd <= 2 ? JINN_WASI_ENOTSUP : JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_datasync(void *ctx, uint32_t fd)
{
    (void)ctx;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_fdstat_set_flags(void *ctx, uint32_t fd, uint32_t flags)
{
    (void)ctx, (void)flags;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_fdstat_set_rights(void *ctx, uint32_t fd, uint64_t base,
                                        uint64_t inheriting)
{
    (void)ctx, (void)base, (void)inheriting;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_filestat_get(void *ctx, uint32_t fd, uint32_t out)
{
    (void)ctx, (void)out;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_filestat_set_size(void *ctx, uint32_t fd, uint64_t size)
{
    (void)ctx, (void)size;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_filestat_set_times(void *ctx, uint32_t fd, uint64_t atim, uint64_t mtim,
                                         uint32_t flags)
{
    (void)ctx, (void)atim, (void)mtim, (void)flags;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_pread(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint64_t off,
                            uint32_t out)
{
    (void)ctx, (void)iovs, (void)n, (void)off, (void)out;
    return fd <= 2 ? JINN_WASI_ESPIPE : JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_pwrite(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint64_t off,
                             uint32_t out)
{
    (void)ctx, (void)iovs, (void)n, (void)off, (void)out;
    return fd <= 2 ? JINN_WASI_ESPIPE : JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_prestat_get(void *ctx, uint32_t fd, uint32_t out)
{
    (void)ctx, (void)fd, (void)out;
    return JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_prestat_dir_name(void *ctx, uint32_t fd, uint32_t path, uint32_t len)
{
    (void)ctx, (void)fd, (void)path, (void)len;
    return JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_readdir(void *ctx, uint32_t fd, uint32_t buf, uint32_t len,
                              uint64_t cookie, uint32_t out)
{
    (void)ctx, (void)buf, (void)len, (void)cookie, (void)out;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_renumber(void *ctx, uint32_t fd, uint32_t to)
{
    (void)ctx;
    return fd <= 2 && to <= 2 ? JINN_WASI_ENOTCAPABLE : JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_seek(void *ctx, uint32_t fd, uint64_t off, uint32_t whence, uint32_t out)
{
    (void)ctx, (void)off, (void)whence, (void)out;
    return fd <= 2 ? JINN_WASI_ESPIPE : JINN_WASI_EBADF;
}

uint32_t jinn_wasi_fd_sync(void *ctx, uint32_t fd)
{
    (void)ctx;
    return no_fd_op(fd);
}

uint32_t jinn_wasi_fd_tell(void *ctx, uint32_t fd, uint32_t out)
{
    (void)ctx, (void)out;
    return fd <= 2 ? JINN_WASI_ESPIPE : JINN_WASI_EBADF;
}

/* ---- paths and sockets: no capability for either ---- */

uint32_t jinn_wasi_path_create_directory(void *ctx, uint32_t fd, uint32_t path, uint32_t len)
{
    (void)ctx, (void)fd, (void)path, (void)len;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_filestat_get(void *ctx, uint32_t fd, uint32_t flags, uint32_t path,
                                     uint32_t len, uint32_t out)
{
    (void)ctx, (void)fd, (void)flags, (void)path, (void)len, (void)out;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_filestat_set_times(void *ctx, uint32_t fd, uint32_t flags,
                                           uint32_t path, uint32_t len, uint64_t atim,
                                           uint64_t mtim, uint32_t fst_flags)
{
    (void)ctx, (void)fd, (void)flags, (void)path, (void)len, (void)atim, (void)mtim,
        (void)fst_flags;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_link(void *ctx, uint32_t fd, uint32_t flags, uint32_t path,
                             uint32_t len, uint32_t fd2, uint32_t path2, uint32_t len2)
{
    (void)ctx, (void)fd, (void)flags, (void)path, (void)len, (void)fd2, (void)path2, (void)len2;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_open(void *ctx, uint32_t fd, uint32_t dirflags, uint32_t path,
                             uint32_t len, uint32_t oflags, uint64_t base, uint64_t inheriting,
                             uint32_t fdflags, uint32_t out)
{
    (void)ctx, (void)fd, (void)dirflags, (void)path, (void)len, (void)oflags, (void)base,
        (void)inheriting, (void)fdflags, (void)out;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_readlink(void *ctx, uint32_t fd, uint32_t path, uint32_t len,
                                 uint32_t buf, uint32_t buflen, uint32_t out)
{
    (void)ctx, (void)fd, (void)path, (void)len, (void)buf, (void)buflen, (void)out;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_remove_directory(void *ctx, uint32_t fd, uint32_t path, uint32_t len)
{
    (void)ctx, (void)fd, (void)path, (void)len;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_rename(void *ctx, uint32_t fd, uint32_t path, uint32_t len,
                               uint32_t fd2, uint32_t path2, uint32_t len2)
{
    (void)ctx, (void)fd, (void)path, (void)len, (void)fd2, (void)path2, (void)len2;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_symlink(void *ctx, uint32_t path, uint32_t len, uint32_t fd,
                                uint32_t path2, uint32_t len2)
{
    (void)ctx, (void)path, (void)len, (void)fd, (void)path2, (void)len2;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_path_unlink_file(void *ctx, uint32_t fd, uint32_t path, uint32_t len)
{
    (void)ctx, (void)fd, (void)path, (void)len;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_sock_accept(void *ctx, uint32_t fd, uint32_t flags, uint32_t out)
{
    (void)ctx, (void)fd, (void)flags, (void)out;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_sock_recv(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t flags,
                             uint32_t out_len, uint32_t out_flags)
{
    (void)ctx, (void)fd, (void)iovs, (void)n, (void)flags, (void)out_len, (void)out_flags;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_sock_send(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t flags,
                             uint32_t out_len)
{
    (void)ctx, (void)fd, (void)iovs, (void)n, (void)flags, (void)out_len;
    return JINN_WASI_ENOTCAPABLE;
}

uint32_t jinn_wasi_sock_shutdown(void *ctx, uint32_t fd, uint32_t how)
{
    (void)ctx, (void)fd, (void)how;
    return JINN_WASI_ENOTCAPABLE;
}

/* ---- process ---- */

void jinn_wasi_proc_exit(void *ctx, uint32_t code)
{
    (void)ctx;
    jinn_rt_exit(code);
}

uint32_t jinn_wasi_proc_raise(void *ctx, uint32_t sig)
{
    (void)ctx, (void)sig;
    return JINN_WASI_ENOSYS;
}

uint32_t jinn_wasi_sched_yield(void *ctx)
{
    (void)ctx;
    sched_yield();
    return JINN_WASI_ESUCCESS;
}

uint32_t jinn_wasi_random_get(void *ctx, uint32_t buf, uint32_t len)
{
    uint8_t *p = jinn_rt_guest(buf, len);
    size_t done = 0;
    (void)ctx;
    if (p == NULL) {
        return JINN_WASI_EFAULT;
    }
    while (done < len) {
        ssize_t n = getrandom(p + done, len - done, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return JINN_WASI_EIO;
        }
        done += (size_t)n;
    }
    return JINN_WASI_ESUCCESS;
}

/* poll_oneoff: clock subscriptions sleep (the node's timeout bounds the
 * whole invocation); stdin is always readable (all of the request is
 * there) and stdout/stderr always writable; any other fd is EBADF. */
uint32_t jinn_wasi_poll_oneoff(void *ctx, uint32_t in, uint32_t out, uint32_t n,
                               uint32_t nevents_out)
{
    const uint8_t *subs = jinn_rt_guest(in, (uint64_t)n * SUB_SIZE);
    uint8_t *events = jinn_rt_guest(out, (uint64_t)n * EVENT_SIZE);
    uint64_t sleep_ns = UINT64_MAX;
    bool immediate = false;
    uint32_t count = 0;
    (void)ctx;
    if (n == 0) {
        return JINN_WASI_EINVAL;
    }
    if (subs == NULL || events == NULL || jinn_rt_guest(nevents_out, 4) == NULL) {
        return JINN_WASI_EFAULT;
    }
    /* Pass 1: what is ready now, and how long the shortest clock is. */
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *s = subs + (size_t)i * SUB_SIZE;
        clockid_t c;
        if (s[8] != EVENTTYPE_CLOCK || !clock_of(get_u32(s + 16), &c)) {
            immediate = true;
            continue;
        }
        uint64_t t = get_u64(s + 24), left = t;
        if (get_u16(s + 40) & SUBCLOCK_ABSTIME) {
            uint64_t now = clock_ns(c);
            left = t > now ? t - now : 0;
        }
        sleep_ns = left < sleep_ns ? left : sleep_ns;
    }
    if (!immediate && sleep_ns > 0) {
        struct timespec ts = {(time_t)(sleep_ns / 1000000000u), (long)(sleep_ns % 1000000000u)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
    /* Pass 2: one event per subscription that is ready. */
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *s = subs + (size_t)i * SUB_SIZE;
        uint8_t ev[EVENT_SIZE] = {0};
        uint8_t type = s[8];
        uint16_t error = JINN_WASI_ESUCCESS;
        clockid_t c;
        memcpy(ev, s, 8); /* userdata */
        if (type == EVENTTYPE_CLOCK) {
            uint64_t t = get_u64(s + 24), left = t;
            if (!clock_of(get_u32(s + 16), &c)) {
                error = JINN_WASI_EINVAL;
            } else if (immediate) {
                if (get_u16(s + 40) & SUBCLOCK_ABSTIME) {
                    uint64_t now = clock_ns(c);
                    left = t > now ? t - now : 0;
                }
                if (left > 0) {
                    continue;
                }
            } else if (left > sleep_ns && !(get_u16(s + 40) & SUBCLOCK_ABSTIME)) {
                continue;
            } else if (get_u16(s + 40) & SUBCLOCK_ABSTIME && t > clock_ns(c)) {
                continue;
            }
        } else if (type == EVENTTYPE_FD_READ) {
            if (get_u32(s + 16) == 0) {
                set_u64(ev + 16, inv->in_len - in_pos);
            } else {
                error = JINN_WASI_EBADF;
            }
        } else if (type == EVENTTYPE_FD_WRITE) {
            uint32_t fd = get_u32(s + 16);
            if (fd == 1) {
                set_u64(ev + 16, inv->out_max - inv->out->len);
            } else if (fd != 2) {
                error = JINN_WASI_EBADF;
            }
        } else {
            error = JINN_WASI_EINVAL;
        }
        memcpy(ev + 8, &error, 2);
        ev[10] = type;
        memcpy(events + (size_t)count * EVENT_SIZE, ev, EVENT_SIZE);
        count++;
    }
    return store_u32(nevents_out, count);
}
