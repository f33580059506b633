/* abi.h - every function a WebAssembly module may import from jinn.
 *
 * One allow-list, read by three places: the deploy validator (module.c)
 * refuses any import not listed here with exactly these types; the glue
 * generator (compile.c) writes, for each import a module uses, the C
 * function wasm2c's output calls, forwarding to the host symbol named here;
 * the sandbox (wasi.c, sandbox.c) defines those host symbols.
 *
 * X(module, name, host_symbol, params, results, host_results)
 *   params, results: the wasm types the module declares, one letter each:
 *     'i' = i32, 'I' = i64; "" = none.
 *   host_results: the C return type of host_symbol ("" void, "i" uint32_t,
 *     "I" uint64_t). Where results differs from host_results (the
 *     original system's Rust SDK declares host_kv_get as returning i64; some
 *     SDKs declare host_kv_set and host_log with an i32 result), the glue
 *     converts: u32 -> u64 zero-extends, a result the module ignores is
 *     dropped, a void host call answers 0.
 * Host symbols take the import's context pointer first (wasm2c passes the
 * pointer given at instantiation), then one uint32_t per 'i' and one
 * uint64_t per 'I'.
 *
 * An import may appear more than once (one line per accepted signature);
 * every line of one name has the same host symbol and params. */
#ifndef JINN_WASM_ABI_H
#define JINN_WASM_ABI_H

#define JINN_WASM_GOJINN_IMPORTS(X)                                                 \
    X("gojinn", "host_log", jinn_host_log, "iii", "", "")                           \
    X("gojinn", "host_log", jinn_host_log, "iii", "i", "")                          \
    X("gojinn", "host_kv_set", jinn_host_kv_set, "iiii", "", "i")                   \
    X("gojinn", "host_kv_set", jinn_host_kv_set, "iiii", "i", "i")                  \
    X("gojinn", "host_kv_get", jinn_host_kv_get, "iiii", "i", "i")                  \
    X("gojinn", "host_kv_get", jinn_host_kv_get, "iiii", "I", "i")                  \
    X("gojinn", "host_mutex_lock", jinn_host_mutex_lock, "iii", "i", "i")           \
    X("gojinn", "host_mutex_unlock", jinn_host_mutex_unlock, "ii", "i", "i")        \
    X("gojinn", "host_db_query", jinn_host_db_query, "iiii", "i", "i")              \
    X("gojinn", "host_enqueue", jinn_host_enqueue, "iiii", "i", "i")

/* WASI preview 1 (wasi_snapshot_preview1), complete: functions jinn does
 * not offer (files, sockets) exist and answer ENOSYS / ENOTCAPABLE. */
#define JINN_WASI "wasi_snapshot_preview1"
#define JINN_WASM_WASI_IMPORTS(X)                                                   \
    X(JINN_WASI, "args_get", jinn_wasi_args_get, "ii", "i", "i")                    \
    X(JINN_WASI, "args_sizes_get", jinn_wasi_args_sizes_get, "ii", "i", "i")        \
    X(JINN_WASI, "environ_get", jinn_wasi_environ_get, "ii", "i", "i")              \
    X(JINN_WASI, "environ_sizes_get", jinn_wasi_environ_sizes_get, "ii", "i", "i")  \
    X(JINN_WASI, "clock_res_get", jinn_wasi_clock_res_get, "ii", "i", "i")          \
    X(JINN_WASI, "clock_time_get", jinn_wasi_clock_time_get, "iIi", "i", "i")       \
    X(JINN_WASI, "fd_advise", jinn_wasi_fd_advise, "iIIi", "i", "i")                \
    X(JINN_WASI, "fd_allocate", jinn_wasi_fd_allocate, "iII", "i", "i")             \
    X(JINN_WASI, "fd_close", jinn_wasi_fd_close, "i", "i", "i")                     \
    X(JINN_WASI, "fd_datasync", jinn_wasi_fd_datasync, "i", "i", "i")               \
    X(JINN_WASI, "fd_fdstat_get", jinn_wasi_fd_fdstat_get, "ii", "i", "i")          \
    X(JINN_WASI, "fd_fdstat_set_flags", jinn_wasi_fd_fdstat_set_flags, "ii", "i", "i") \
    X(JINN_WASI, "fd_fdstat_set_rights", jinn_wasi_fd_fdstat_set_rights, "iII", "i", "i") \
    X(JINN_WASI, "fd_filestat_get", jinn_wasi_fd_filestat_get, "ii", "i", "i")      \
    X(JINN_WASI, "fd_filestat_set_size", jinn_wasi_fd_filestat_set_size, "iI", "i", "i") \
    X(JINN_WASI, "fd_filestat_set_times", jinn_wasi_fd_filestat_set_times, "iIIi", "i", "i") \
    X(JINN_WASI, "fd_pread", jinn_wasi_fd_pread, "iiiIi", "i", "i")                 \
    X(JINN_WASI, "fd_prestat_get", jinn_wasi_fd_prestat_get, "ii", "i", "i")        \
    X(JINN_WASI, "fd_prestat_dir_name", jinn_wasi_fd_prestat_dir_name, "iii", "i", "i") \
    X(JINN_WASI, "fd_pwrite", jinn_wasi_fd_pwrite, "iiiIi", "i", "i")               \
    X(JINN_WASI, "fd_read", jinn_wasi_fd_read, "iiii", "i", "i")                    \
    X(JINN_WASI, "fd_readdir", jinn_wasi_fd_readdir, "iiiIi", "i", "i")             \
    X(JINN_WASI, "fd_renumber", jinn_wasi_fd_renumber, "ii", "i", "i")              \
    X(JINN_WASI, "fd_seek", jinn_wasi_fd_seek, "iIii", "i", "i")                    \
    X(JINN_WASI, "fd_sync", jinn_wasi_fd_sync, "i", "i", "i")                       \
    X(JINN_WASI, "fd_tell", jinn_wasi_fd_tell, "ii", "i", "i")                      \
    X(JINN_WASI, "fd_write", jinn_wasi_fd_write, "iiii", "i", "i")                  \
    X(JINN_WASI, "path_create_directory", jinn_wasi_path_create_directory, "iii", "i", "i") \
    X(JINN_WASI, "path_filestat_get", jinn_wasi_path_filestat_get, "iiiii", "i", "i") \
    X(JINN_WASI, "path_filestat_set_times", jinn_wasi_path_filestat_set_times, "iiiiIIi", "i", "i") \
    X(JINN_WASI, "path_link", jinn_wasi_path_link, "iiiiiii", "i", "i")             \
    X(JINN_WASI, "path_open", jinn_wasi_path_open, "iiiiiIIii", "i", "i")           \
    X(JINN_WASI, "path_readlink", jinn_wasi_path_readlink, "iiiiii", "i", "i")      \
    X(JINN_WASI, "path_remove_directory", jinn_wasi_path_remove_directory, "iii", "i", "i") \
    X(JINN_WASI, "path_rename", jinn_wasi_path_rename, "iiiiii", "i", "i")          \
    X(JINN_WASI, "path_symlink", jinn_wasi_path_symlink, "iiiii", "i", "i")         \
    X(JINN_WASI, "path_unlink_file", jinn_wasi_path_unlink_file, "iii", "i", "i")   \
    X(JINN_WASI, "poll_oneoff", jinn_wasi_poll_oneoff, "iiii", "i", "i")            \
    X(JINN_WASI, "proc_exit", jinn_wasi_proc_exit, "i", "", "")                     \
    X(JINN_WASI, "proc_raise", jinn_wasi_proc_raise, "i", "i", "i")                 \
    X(JINN_WASI, "sched_yield", jinn_wasi_sched_yield, "", "i", "i")                \
    X(JINN_WASI, "random_get", jinn_wasi_random_get, "ii", "i", "i")                \
    X(JINN_WASI, "sock_accept", jinn_wasi_sock_accept, "iii", "i", "i")             \
    X(JINN_WASI, "sock_recv", jinn_wasi_sock_recv, "iiiiii", "i", "i")              \
    X(JINN_WASI, "sock_send", jinn_wasi_sock_send, "iiiii", "i", "i")               \
    X(JINN_WASI, "sock_shutdown", jinn_wasi_sock_shutdown, "ii", "i", "i")

#define JINN_WASM_IMPORTS(X) JINN_WASM_GOJINN_IMPORTS(X) JINN_WASM_WASI_IMPORTS(X)

/* What the glue (compile.c) exports from every compiled module, so the
 * sandbox needs no module-specific symbol names (wasm2c runs with -n m):
 *   size_t jinn_mod_instance_size;              sizeof(Z_m_instance_t)
 *   void jinn_mod_init(void);                   Z_m_init_module()
 *   void jinn_mod_instantiate(void *inst, void *gojinn_ctx, void *wasi_ctx);
 *   void jinn_mod_free(void *inst);
 *   void jinn_mod_start(void *inst);            Z_mZ__start
 *   wasm_rt_memory_t *jinn_mod_memory(void *inst);   the exported "memory" */
#define JINN_WASM_GLUE_VERSION 1

#endif
