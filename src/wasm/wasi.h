/* wasi.h - WASI preview 1 for the sandbox's guest (wasi.c).
 *
 * What a command sees: its args and environment from the INVOKE frame,
 * stdin = the request bytes, stdout = a bounded buffer that becomes the
 * DONE frame, stderr = STDERR frames (the sandbox bounds them), clocks,
 * random_get, proc_exit, sched_yield, poll_oneoff for clocks. No files, no
 * sockets: every other preview-1 function exists and answers ENOSYS,
 * ENOTCAPABLE or EBADF (no preopened directories). Every guest pointer and
 * length is checked against the memory's current size (EFAULT otherwise).
 *
 * The jinn_wasi_* functions below are the host symbols abi.h names; the
 * glue calls them with the context pointer given at instantiation (unused:
 * the state is per process, one invocation at a time). */
#ifndef JINN_WASM_WASI_H
#define JINN_WASM_WASI_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct jinn_wasi_str {
    const uint8_t *p;
    uint32_t len;
};

struct jinn_wasi_invocation {
    const struct jinn_wasi_str *args; /* argv, argv[0] included */
    uint32_t n_args;
    const struct jinn_wasi_str *env; /* "K=V" */
    uint32_t n_env;
    const uint8_t *in; /* stdin */
    size_t in_len;
    struct jinn_wbuf *out; /* stdout; over out_max -> JINN_RT_JMP_OUTPUT */
    size_t out_max;
    /* fd 2: called with each write's bytes (the sandbox bounds them). */
    void (*err)(const uint8_t *p, size_t n);
};

/* Starts an invocation (inv and what it points to must outlive it). */
void jinn_wasi_begin(const struct jinn_wasi_invocation *inv);

#define JINN_WASI_ESUCCESS 0
#define JINN_WASI_E2BIG 1
#define JINN_WASI_EBADF 8
#define JINN_WASI_EFAULT 21
#define JINN_WASI_EINVAL 28
#define JINN_WASI_EIO 29
#define JINN_WASI_ENOSYS 52
#define JINN_WASI_ENOTSUP 58
#define JINN_WASI_ESPIPE 70
#define JINN_WASI_ENOTCAPABLE 76

uint32_t jinn_wasi_args_get(void *ctx, uint32_t argv, uint32_t buf);
uint32_t jinn_wasi_args_sizes_get(void *ctx, uint32_t argc_out, uint32_t size_out);
uint32_t jinn_wasi_environ_get(void *ctx, uint32_t envv, uint32_t buf);
uint32_t jinn_wasi_environ_sizes_get(void *ctx, uint32_t count_out, uint32_t size_out);
uint32_t jinn_wasi_clock_res_get(void *ctx, uint32_t id, uint32_t out);
uint32_t jinn_wasi_clock_time_get(void *ctx, uint32_t id, uint64_t precision, uint32_t out);
uint32_t jinn_wasi_fd_advise(void *ctx, uint32_t fd, uint64_t off, uint64_t len,
                             uint32_t advice);
uint32_t jinn_wasi_fd_allocate(void *ctx, uint32_t fd, uint64_t off, uint64_t len);
uint32_t jinn_wasi_fd_close(void *ctx, uint32_t fd);
uint32_t jinn_wasi_fd_datasync(void *ctx, uint32_t fd);
uint32_t jinn_wasi_fd_fdstat_get(void *ctx, uint32_t fd, uint32_t out);
uint32_t jinn_wasi_fd_fdstat_set_flags(void *ctx, uint32_t fd, uint32_t flags);
uint32_t jinn_wasi_fd_fdstat_set_rights(void *ctx, uint32_t fd, uint64_t base,
                                        uint64_t inheriting);
uint32_t jinn_wasi_fd_filestat_get(void *ctx, uint32_t fd, uint32_t out);
uint32_t jinn_wasi_fd_filestat_set_size(void *ctx, uint32_t fd, uint64_t size);
uint32_t jinn_wasi_fd_filestat_set_times(void *ctx, uint32_t fd, uint64_t atim, uint64_t mtim,
                                         uint32_t flags);
uint32_t jinn_wasi_fd_pread(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint64_t off,
                            uint32_t out);
uint32_t jinn_wasi_fd_prestat_get(void *ctx, uint32_t fd, uint32_t out);
uint32_t jinn_wasi_fd_prestat_dir_name(void *ctx, uint32_t fd, uint32_t path, uint32_t len);
uint32_t jinn_wasi_fd_pwrite(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint64_t off,
                             uint32_t out);
uint32_t jinn_wasi_fd_read(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t out);
uint32_t jinn_wasi_fd_readdir(void *ctx, uint32_t fd, uint32_t buf, uint32_t len,
                              uint64_t cookie, uint32_t out);
uint32_t jinn_wasi_fd_renumber(void *ctx, uint32_t fd, uint32_t to);
uint32_t jinn_wasi_fd_seek(void *ctx, uint32_t fd, uint64_t off, uint32_t whence, uint32_t out);
uint32_t jinn_wasi_fd_sync(void *ctx, uint32_t fd);
uint32_t jinn_wasi_fd_tell(void *ctx, uint32_t fd, uint32_t out);
uint32_t jinn_wasi_fd_write(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t out);
uint32_t jinn_wasi_path_create_directory(void *ctx, uint32_t fd, uint32_t path, uint32_t len);
uint32_t jinn_wasi_path_filestat_get(void *ctx, uint32_t fd, uint32_t flags, uint32_t path,
                                     uint32_t len, uint32_t out);
uint32_t jinn_wasi_path_filestat_set_times(void *ctx, uint32_t fd, uint32_t flags,
                                           uint32_t path, uint32_t len, uint64_t atim,
                                           uint64_t mtim, uint32_t fst_flags);
uint32_t jinn_wasi_path_link(void *ctx, uint32_t fd, uint32_t flags, uint32_t path,
                             uint32_t len, uint32_t fd2, uint32_t path2, uint32_t len2);
uint32_t jinn_wasi_path_open(void *ctx, uint32_t fd, uint32_t dirflags, uint32_t path,
                             uint32_t len, uint32_t oflags, uint64_t base, uint64_t inheriting,
                             uint32_t fdflags, uint32_t out);
uint32_t jinn_wasi_path_readlink(void *ctx, uint32_t fd, uint32_t path, uint32_t len,
                                 uint32_t buf, uint32_t buflen, uint32_t out);
uint32_t jinn_wasi_path_remove_directory(void *ctx, uint32_t fd, uint32_t path, uint32_t len);
uint32_t jinn_wasi_path_rename(void *ctx, uint32_t fd, uint32_t path, uint32_t len,
                               uint32_t fd2, uint32_t path2, uint32_t len2);
uint32_t jinn_wasi_path_symlink(void *ctx, uint32_t path, uint32_t len, uint32_t fd,
                                uint32_t path2, uint32_t len2);
uint32_t jinn_wasi_path_unlink_file(void *ctx, uint32_t fd, uint32_t path, uint32_t len);
uint32_t jinn_wasi_poll_oneoff(void *ctx, uint32_t in, uint32_t out, uint32_t n,
                               uint32_t nevents_out);
__attribute__((noreturn)) void jinn_wasi_proc_exit(void *ctx, uint32_t code);
uint32_t jinn_wasi_proc_raise(void *ctx, uint32_t sig);
uint32_t jinn_wasi_sched_yield(void *ctx);
uint32_t jinn_wasi_random_get(void *ctx, uint32_t buf, uint32_t len);
uint32_t jinn_wasi_sock_accept(void *ctx, uint32_t fd, uint32_t flags, uint32_t out);
uint32_t jinn_wasi_sock_recv(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t flags,
                             uint32_t out_len, uint32_t out_flags);
uint32_t jinn_wasi_sock_send(void *ctx, uint32_t fd, uint32_t iovs, uint32_t n, uint32_t flags,
                             uint32_t out_len);
uint32_t jinn_wasi_sock_shutdown(void *ctx, uint32_t fd, uint32_t how);

#endif
