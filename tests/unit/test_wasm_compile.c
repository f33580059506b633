/* test_wasm_compile.c - the compile thread and its cache, with the real
 * tools (wasm2c, cc): a build, a cache hit after a restart that does not
 * rebuild, a corrupted or foreign cache entry rebuilt, the tool's message on
 * failure, a missing tool named, and shutdown in the middle of a build
 * neither hanging nor leaking nor calling back. */
#include <dirent.h>
#include <dlfcn.h>
#include <ftw.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "sha256.h"
#include "unit.h"
#include "wasm/abi.h"
#include "wasm/compile.h"
#include "wat.h"

struct result {
    int calls;
    int code;
    char so[4096];
    char message[4096];
    uint64_t ms;
    pthread_t thread;
};

static void on_compiled(void *data, int code, const char *so_path, const char *message,
                        uint64_t compile_ms)
{
    struct result *r = data;
    r->calls++;
    r->code = code;
    r->thread = pthread_self();
    snprintf(r->so, sizeof r->so, "%s", so_path ? so_path : "");
    snprintf(r->message, sizeof r->message, "%s", message ? message : "");
    r->ms = compile_ms;
}

static void on_deadline(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until r has its callback or timeout_ms passed. */
static int wait_result(uv_loop_t *loop, struct result *r, uint64_t timeout_ms)
{
    uv_timer_t timer;
    int expired = 0;
    uv_timer_init(loop, &timer);
    timer.data = &expired;
    uv_timer_start(&timer, on_deadline, timeout_ms, 0);
    while (r->calls == 0 && !expired) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return r->calls == 1 ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Shuts the compiler down and lets the loop close what it left. */
static int finish_loop(uv_loop_t *loop)
{
    jinn_wasm_compile_shutdown();
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop);
}

static const char *const good_wat =
    "(module\n"
    "  (import \"gojinn\" \"host_kv_get\" (func $get (param i32 i32 i32 i32) (result i64)))\n"
    "  (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) "
    "(result i32)))\n"
    "  (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n"
    "  (memory (export \"memory\") 1 4)\n"
    "  (data (i32.const 16) \"{\\\"status\\\":200}\")\n"
    "  (func (export \"_start\")\n"
    "    (drop (call $get (i32.const 0) (i32.const 1) (i32.const 64) (i32.const 64)))\n"
    "    (i32.store (i32.const 0) (i32.const 16))\n"
    "    (i32.store (i32.const 4) (i32.const 14))\n"
    "    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))\n"
    "    (call $exit (i32.const 0))))\n";

struct fixture {
    char dir[64];
    struct jinn_wbuf mod;
    uint8_t sha[JINN_SHA256_LEN];
    char so[4200], sum[4200];
};

static int fixture_init(struct fixture *f, const char *text)
{
    char hex[JINN_SHA256_HEX_LEN + 1];
    snprintf(f->dir, sizeof f->dir, "/tmp/jinn-compile-XXXXXX");
    if (mkdtemp(f->dir) == NULL || wat(text, &f->mod) != 0 ||
        jinn_sha256(f->mod.data, f->mod.len, f->sha) != 0) {
        return -1;
    }
    jinn_sha256_hex(f->sha, hex);
    snprintf(f->so, sizeof f->so, "%s/fn/%s/module.so", f->dir, hex);
    snprintf(f->sum, sizeof f->sum, "%s/fn/%s/module.so.sha256", f->dir, hex);
    return 0;
}

static void fixture_free(struct fixture *f)
{
    jinn_wbuf_free(&f->mod);
    rm_tree(f->dir);
}

static int compile(uv_loop_t *loop, struct fixture *f, struct result *r)
{
    int rv;
    memset(r, 0, sizeof *r);
    rv = jinn_wasm_compile(loop, f->dir, f->sha, f->mod.data, f->mod.len, on_compiled, r);
    if (rv != 0) {
        return rv;
    }
    return wait_result(loop, r, 120000);
}

/* The checksum file names the .so's actual SHA-256. */
static int sum_matches(const struct fixture *f)
{
    uint8_t sha[JINN_SHA256_LEN];
    char hex[JINN_SHA256_HEX_LEN + 1], text[512];
    FILE *fp = fopen(f->sum, "r");
    size_t n;
    if (fp == NULL) {
        return 0;
    }
    n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = '\0';
    if (jinn_sha256_file(f->so, sha) != 0) {
        return 0;
    }
    jinn_sha256_hex(sha, hex);
    return n > JINN_SHA256_HEX_LEN && memcmp(text, hex, JINN_SHA256_HEX_LEN) == 0 &&
           text[JINN_SHA256_HEX_LEN] == '\n';
}

TEST(wasm_compile_build_then_cache_hit_after_restart)
{
    static struct fixture f;
    static struct result r;
    uv_loop_t loop;
    struct stat st1, st2;
    uint8_t elf[4] = {0};
    FILE *fp;
    char path[4300];

    CHECK_INT(fixture_init(&f, good_wat), 0);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    if (r.code != 0) {
        fprintf(stderr, "  compile failed: %s\n", r.message);
    }
    CHECK_INT(r.code, 0);
    CHECK(pthread_equal(r.thread, pthread_self()));
    CHECK(strcmp(r.so, f.so) == 0);
    CHECK(r.ms > 0);
    CHECK(sum_matches(&f));
    fp = fopen(f.so, "rb");
    CHECK(fp != NULL);
    CHECK(fread(elf, 1, 4, fp) == 4);
    fclose(fp);
    CHECK(memcmp(elf, "\x7f" "ELF", 4) == 0);
    /* The translation's C is removed once built; the module is kept. */
    snprintf(path, sizeof path, "%.*s/m.c", (int)(strlen(f.so) - strlen("/module.so")), f.so);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "%.*s/module.wasm", (int)(strlen(f.so) - strlen("/module.so")),
             f.so);
    CHECK(access(path, F_OK) == 0);
    CHECK_INT(stat(f.so, &st1), 0);
    /* It loads: every symbol it needs is one jinn defines (this binary
     * links the same objects, with -rdynamic), and it carries the glue's
     * entry points. */
    {
        void *h = dlopen(f.so, RTLD_NOW | RTLD_LOCAL);
        const unsigned *version;
        if (h == NULL) {
            fprintf(stderr, "  dlopen: %s\n", dlerror());
        }
        CHECK(h != NULL);
        version = dlsym(h, "jinn_mod_glue_version");
        CHECK(version != NULL && *version == JINN_WASM_GLUE_VERSION);
        CHECK(dlsym(h, "jinn_mod_start") != NULL && dlsym(h, "jinn_mod_instantiate") != NULL);
        dlclose(h);
    }
    CHECK_INT(finish_loop(&loop), 0);

    /* A restart: a new compile thread, the same data_dir. */
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);
    CHECK_INT(r.ms, 0);
    CHECK(strcmp(r.so, f.so) == 0);
    CHECK_INT(stat(f.so, &st2), 0);
    CHECK(st1.st_ino == st2.st_ino);
    CHECK(st1.st_mtim.tv_sec == st2.st_mtim.tv_sec && st1.st_mtim.tv_nsec == st2.st_mtim.tv_nsec);
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}

static int corrupt_byte(const char *path, long at)
{
    FILE *fp = fopen(path, "r+b");
    int c;
    if (fp == NULL || fseek(fp, at, SEEK_SET) != 0 || (c = fgetc(fp)) == EOF ||
        fseek(fp, at, SEEK_SET) != 0 || fputc(c ^ 0x55, fp) == EOF) {
        if (fp != NULL) {
            fclose(fp);
        }
        return -1;
    }
    return fclose(fp);
}

TEST(wasm_compile_bad_cache_entries_rebuilt)
{
    static struct fixture f;
    static struct result r;
    uv_loop_t loop;
    FILE *fp;

    CHECK_INT(fixture_init(&f, good_wat), 0);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);

    /* One flipped byte. */
    CHECK_INT(corrupt_byte(f.so, 200), 0);
    CHECK(!sum_matches(&f));
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);
    CHECK(r.ms > 0);
    CHECK(sum_matches(&f));

    /* Truncated (a crash before fsync on a filesystem that lost data). */
    CHECK_INT(truncate(f.so, 100), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);
    CHECK(r.ms > 0);
    CHECK(sum_matches(&f));

    /* The checksum file missing. */
    CHECK_INT(unlink(f.sum), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);
    CHECK(r.ms > 0);
    CHECK(sum_matches(&f));

    /* Built by another jinn: the right checksum, another build key. */
    {
        char text[512];
        size_t n;
        fp = fopen(f.sum, "r");
        CHECK(fp != NULL);
        n = fread(text, 1, JINN_SHA256_HEX_LEN, fp);
        fclose(fp);
        CHECK_INT(n, JINN_SHA256_HEX_LEN);
        text[n] = '\0';
        fp = fopen(f.sum, "w");
        CHECK(fp != NULL);
        fprintf(fp, "%s\njinn-glue 0; cc -O0\n", text);
        fclose(fp);
    }
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);
    CHECK(r.ms > 0);
    CHECK(sum_matches(&f));

    /* And a good entry is a hit again. */
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, 0);
    CHECK_INT(r.ms, 0);
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}

/* A module inspect accepts but whose code does not validate: wasm2c says
 * why, and that is the message. */
TEST(wasm_compile_wasm2c_message)
{
    static struct fixture f;
    static struct result r;
    uv_loop_t loop;

    /* _start [] -> [] whose body leaves an i32 (wat2wasm would refuse to
     * assemble it). */
    {
        static const uint8_t bad[] = {
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00,
            0x00, 0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x13, 0x02,
            0x06, '_',  's',  't',  'a',  'r',  't',  0x00, 0x00, 0x06, 'm',  'e',  'm',
            'o',  'r',  'y',  0x02, 0x00, 0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b};
        snprintf(f.dir, sizeof f.dir, "/tmp/jinn-compile-XXXXXX");
        CHECK(mkdtemp(f.dir) != NULL);
        jinn_wbuf_init(&f.mod);
        jinn_wbuf_put_raw(&f.mod, bad, sizeof bad);
        CHECK_INT(jinn_sha256(bad, sizeof bad, f.sha), 0);
    }
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, JINN_EINVAL);
    CHECK(strncmp(r.message, "wasm2c: module.wasm:", 20) == 0);
    CHECK(strstr(r.message, "type mismatch") != NULL);
    CHECK(r.so[0] == '\0');
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}

/* SIMD: wasm-validate accepts it, Debian 12's wasm2c cannot translate it
 * (by default it aborts without a word); the message says so. */
TEST(wasm_compile_simd_named)
{
    static struct fixture f;
    static struct result r;
    uv_loop_t loop;

    CHECK_INT(fixture_init(&f, "(module (memory (export \"memory\") 1)\n"
                               "  (func (export \"_start\") (drop (i32x4.add "
                               "(v128.const i32x4 1 2 3 4) (v128.const i32x4 5 6 7 8)))))\n"),
              0);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, JINN_EINVAL);
    CHECK(strncmp(r.message, "wasm2c: ", 8) == 0);
    CHECK(strstr(r.message, "SIMD") != NULL);
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}

TEST(wasm_compile_refusals)
{
    static struct fixture f;
    static struct result r;
    uv_loop_t loop;

    CHECK_INT(fixture_init(&f, "(module (memory (export \"memory\") 1) (func (export \"main\")))"),
              0);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, JINN_EINVAL);
    CHECK(strstr(r.message, "no exported _start") != NULL);

    /* Bytes that are not what the sha says. */
    f.sha[0] ^= 1;
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, JINN_EINVAL);
    CHECK(strstr(r.message, "do not match its sha256") != NULL);

    /* A data_dir where nothing can be created. */
    f.sha[0] ^= 1;
    {
        char notdir[128];
        FILE *fp;
        snprintf(notdir, sizeof notdir, "%s/file", f.dir);
        fp = fopen(notdir, "w");
        CHECK(fp != NULL);
        fclose(fp);
        memset(&r, 0, sizeof r);
        CHECK_INT(jinn_wasm_compile(&loop, notdir, f.sha, f.mod.data, f.mod.len, on_compiled, &r),
                  0);
        CHECK_INT(wait_result(&loop, &r, 60000), 0);
        CHECK_INT(r.code, JINN_EIO);
        CHECK(strstr(r.message, "cannot create data_dir/fn/") != NULL);
        CHECK(strstr(r.message, f.dir) == NULL);
    }

    CHECK_INT(jinn_wasm_compile(&loop, f.dir, f.sha, NULL, 1, on_compiled, &r), JINN_EINVAL);
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, f.sha, f.mod.data, f.mod.len, NULL, &r),
              JINN_EINVAL);
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}

TEST(wasm_compile_missing_wasm2c_named)
{
    static struct fixture f;
    static struct result r;
    uv_loop_t loop;
    char *old = getenv("PATH") ? jinn_strdup(getenv("PATH")) : NULL;
    int rv;

    CHECK_INT(fixture_init(&f, good_wat), 0);
    CHECK_INT(uv_loop_init(&loop), 0);
    setenv("PATH", f.dir, 1); /* an empty directory */
    rv = compile(&loop, &f, &r);
    if (old != NULL) {
        setenv("PATH", old, 1);
        jinn_free(old);
    }
    CHECK_INT(rv, 0);
    CHECK_INT(r.code, JINN_EINTERNAL);
    CHECK(strstr(r.message, "wasm2c") != NULL && strstr(r.message, "wabt") != NULL);
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}

/* A module big enough that cc runs for seconds. */
static char *big_wat(unsigned n_funcs)
{
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    jinn_wbuf_printf(&w, "(module (memory (export \"memory\") 1)\n");
    for (unsigned i = 0; i < n_funcs; i++) {
        jinn_wbuf_printf(&w,
                         "(func $f%u (param i32) (result i32) (local i32)\n"
                         " (loop $l (local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) "
                         "(i32.const %u))))\n"
                         "  (i32.store (i32.and (local.get 1) (i32.const 1020)) (local.get 0))\n"
                         "  (br_if $l (i32.lt_u (local.get 1) (i32.const %u))))\n"
                         " (i32.xor (local.get 1) (i32.load (i32.const %u))))\n",
                         i, i * 7 + 1, 1000 + i, (i * 4) & 1020);
    }
    jinn_wbuf_printf(&w, "(func (export \"_start\")");
    for (unsigned i = 0; i < n_funcs; i++) {
        jinn_wbuf_printf(&w, " (drop (call $f%u (i32.const %u)))", i, i);
    }
    jinn_wbuf_printf(&w, "))\n");
    jinn_wbuf_put_u8(&w, 0);
    return (char *)w.data;
}

/* Processes (not zombies) whose command line mentions s. */
static int processes_mentioning(const char *s)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    while (d != NULL && (e = readdir(d)) != NULL) {
        char path[300], buf[8192];
        size_t n;
        FILE *fp;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') {
            continue;
        }
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        fp = fopen(path, "rb");
        if (fp == NULL) {
            continue;
        }
        n = fread(buf, 1, sizeof buf - 1, fp);
        fclose(fp);
        for (size_t i = 0; i < n; i++) {
            buf[i] = buf[i] ? buf[i] : ' ';
        }
        buf[n] = '\0';
        found += strstr(buf, s) != NULL;
    }
    if (d != NULL) {
        closedir(d);
    }
    return found;
}

/* A file in data_dir/fn/<sha hex>/. */
static int exists_in_dir(const char *data_dir, const uint8_t sha[JINN_SHA256_LEN],
                         const char *name)
{
    char hex[JINN_SHA256_HEX_LEN + 1], path[4300];
    jinn_sha256_hex(sha, hex);
    snprintf(path, sizeof path, "%s/fn/%s/%s", data_dir, hex, name);
    return access(path, F_OK) == 0;
}

static int exists_in(const char *so, const char *name)
{
    char path[4300];
    snprintf(path, sizeof path, "%.*s/%s", (int)(strlen(so) - strlen("/module.so")), so, name);
    return access(path, F_OK) == 0;
}

TEST(wasm_compile_shutdown_while_compiling)
{
    static struct fixture f;
    static struct result r1, r2;
    struct timespec t0, t1, pause = {0, 10 * 1000 * 1000};
    uv_loop_t loop;
    char *text = big_wat(3000);
    uint8_t other_sha[JINN_SHA256_LEN];
    double waited = 0, took;

    CHECK(text != NULL);
    CHECK_INT(fixture_init(&f, text), 0);
    jinn_free(text);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, f.sha, f.mod.data, f.mod.len, on_compiled, &r1), 0);
    /* A second job waiting behind it. */
    memcpy(other_sha, f.sha, sizeof other_sha);
    other_sha[0] ^= 1;
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, other_sha, "x", 1, on_compiled, &r2), 0);
    /* glue.c is written once wasm2c is done, right before cc starts. */
    while (!exists_in(f.so, "glue.c") && waited < 60) {
        nanosleep(&pause, NULL);
        waited += 0.01;
    }
    CHECK(exists_in(f.so, "glue.c"));
    /* cc (the driver, then cc1) on m.c in that directory. */
    waited = 0;
    while (processes_mentioning(f.dir) == 0 && waited < 10) {
        nanosleep(&pause, NULL);
        waited += 0.01;
    }
    CHECK(processes_mentioning(f.dir) > 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    jinn_wasm_compile_shutdown();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(took < 2.0);
    /* Nothing of the build survives it (killed processes may take a moment
     * to be reaped by init). */
    waited = 0;
    while (processes_mentioning(f.dir) > 0 && waited < 5) {
        nanosleep(&pause, NULL);
        waited += 0.01;
    }
    CHECK_INT(processes_mentioning(f.dir), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(uv_loop_close(&loop), 0);
    CHECK_INT(r1.calls, 0);
    CHECK_INT(r2.calls, 0);
    CHECK(!exists_in(f.so, "module.so"));
    CHECK(!exists_in(f.so, "module.so.tmp"));
    fixture_free(&f);
}

/* The queue is bounded: past COMPILE_QUEUE_MAX waiting jobs, busy. */
TEST(wasm_compile_queue_bounded)
{
    static struct fixture f;
    static struct result r[80];
    uv_loop_t loop;
    char *text = big_wat(3000);
    int accepted = 0, busy = 0;

    CHECK(text != NULL);
    CHECK_INT(fixture_init(&f, text), 0);
    jinn_free(text);
    CHECK_INT(uv_loop_init(&loop), 0);
    memset(r, 0, sizeof r);
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, f.sha, f.mod.data, f.mod.len, on_compiled, &r[0]),
              0);
    /* The first is being built (the smallest waiting job goes first: the
     * tiny ones below must not get the thread before it). */
    {
        struct timespec pause = {0, 5 * 1000 * 1000};
        for (int i = 0; i < 12000 && !exists_in(f.so, "module.wasm"); i++) {
            nanosleep(&pause, NULL);
        }
    }
    CHECK(exists_in(f.so, "module.wasm"));
    for (int i = 1; i < 80; i++) {
        uint8_t sha[JINN_SHA256_LEN];
        int rv;
        memcpy(sha, f.sha, sizeof sha);
        sha[1] = (uint8_t)i;
        rv = jinn_wasm_compile(&loop, f.dir, sha, "x", 1, on_compiled, &r[i]);
        accepted += rv == 0;
        busy += rv == JINN_EBUSY;
    }
    /* 64 wait; the first may or may not have left the queue yet. */
    CHECK(accepted == 63 || accepted == 64);
    CHECK_INT(accepted + busy, 79);
    CHECK_INT(finish_loop(&loop), 0);
    for (int i = 0; i < 80; i++) {
        CHECK_INT(r[i].calls, 0);
    }
    fixture_free(&f);
}

/* A cancelled compile never calls back: queued, it is dropped; running,
 * it finishes (the cache keeps the result) unreported. */
TEST(wasm_compile_cancel)
{
    static struct fixture f;
    static struct result ra, rb, rc;
    uv_loop_t loop;
    uint8_t other[JINN_SHA256_LEN];

    CHECK_INT(fixture_init(&f, good_wat), 0);
    CHECK_INT(uv_loop_init(&loop), 0);
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    memset(&rc, 0, sizeof rc);
    memcpy(other, f.sha, sizeof other);
    other[0] ^= 1;
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, f.sha, f.mod.data, f.mod.len, on_compiled, &ra), 0);
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, other, "x", 1, on_compiled, &rb), 0);
    CHECK_INT(jinn_wasm_compile(&loop, f.dir, f.sha, f.mod.data, f.mod.len, on_compiled, &rc), 0);
    jinn_wasm_compile_cancel(&rb);
    /* ra is running once it wrote module.wasm. */
    {
        struct timespec pause = {0, 5 * 1000 * 1000};
        for (int i = 0; i < 12000 && !exists_in(f.so, "module.wasm"); i++) {
            nanosleep(&pause, NULL);
        }
    }
    CHECK(exists_in(f.so, "module.wasm"));
    jinn_wasm_compile_cancel(&ra);
    /* rc runs after ra (one at a time, in order): when rc is reported,
     * ra's result has reached the loop too. */
    CHECK_INT(wait_result(&loop, &rc, 120000), 0);
    CHECK_INT(rc.code, 0);
    CHECK_INT(rc.ms, 0); /* a cache hit: ra built it */
    CHECK_INT(ra.calls, 0);
    CHECK_INT(rb.calls, 0);
    CHECK(sum_matches(&f));
    CHECK_INT(finish_loop(&loop), 0);
    CHECK_INT(ra.calls, 0);
    fixture_free(&f);
}

/* Modules already built are ready without waiting behind a build queued
 * before them: every queued job's cache is checked before the next build
 * starts (a restart with one uncached module among many). */
TEST(wasm_compile_cache_hits_pass_queued_builds)
{
    static struct fixture good, x, y;
    static struct result rg, rx, ry, rz;
    struct timespec pause = {0, 5 * 1000 * 1000};
    uv_loop_t loop;
    char *tx = big_wat(300), *ty = big_wat(3000);

    CHECK(tx != NULL && ty != NULL);
    CHECK_INT(fixture_init(&good, good_wat), 0);
    CHECK_INT(fixture_init(&x, tx), 0);
    CHECK_INT(fixture_init(&y, ty), 0);
    jinn_free(tx);
    jinn_free(ty);
    CHECK_INT(uv_loop_init(&loop), 0);
    CHECK_INT(compile(&loop, &good, &rg), 0);
    CHECK_INT(rg.code, 0);

    /* x builds; y (uncached) and z (good again: cached) queue behind it. */
    memset(&rx, 0, sizeof rx);
    memset(&ry, 0, sizeof ry);
    memset(&rz, 0, sizeof rz);
    CHECK_INT(jinn_wasm_compile(&loop, good.dir, x.sha, x.mod.data, x.mod.len, on_compiled, &rx),
              0);
    for (int i = 0; i < 12000 && !exists_in_dir(good.dir, x.sha, "glue.c"); i++) {
        nanosleep(&pause, NULL);
    }
    CHECK(exists_in_dir(good.dir, x.sha, "glue.c"));
    CHECK_INT(jinn_wasm_compile(&loop, good.dir, y.sha, y.mod.data, y.mod.len, on_compiled, &ry),
              0);
    CHECK_INT(jinn_wasm_compile(&loop, good.dir, good.sha, good.mod.data, good.mod.len,
                                on_compiled, &rz),
              0);
    CHECK_INT(wait_result(&loop, &rz, 120000), 0);
    CHECK_INT(rz.code, 0);
    CHECK_INT(rz.ms, 0);
    CHECK_INT(ry.calls, 0); /* y's build had not even started */
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&good);
    fixture_free(&x);
    fixture_free(&y);
}

/* The smallest queued module is built first: a small function deployed
 * behind a big one is ready without waiting for the big one's build (found
 * by an attacker: one 16 MiB module held every other compile for minutes). */
TEST(wasm_compile_smallest_first)
{
    static struct fixture big, bigger, small;
    static struct result rb, rg, rs;
    struct timespec pause = {0, 5 * 1000 * 1000};
    uv_loop_t loop;
    char *tb = big_wat(3000), *tg = big_wat(2000);

    CHECK(tb != NULL && tg != NULL);
    CHECK_INT(fixture_init(&big, tb), 0);
    CHECK_INT(fixture_init(&bigger, tg), 0);
    CHECK_INT(fixture_init(&small, good_wat), 0);
    jinn_free(tb);
    jinn_free(tg);
    CHECK_INT(uv_loop_init(&loop), 0);
    memset(&rb, 0, sizeof rb);
    memset(&rg, 0, sizeof rg);
    memset(&rs, 0, sizeof rs);
    CHECK_INT(jinn_wasm_compile(&loop, big.dir, big.sha, big.mod.data, big.mod.len, on_compiled,
                                &rb),
              0);
    for (int i = 0; i < 12000 && !exists_in_dir(big.dir, big.sha, "glue.c"); i++) {
        nanosleep(&pause, NULL);
    }
    CHECK(exists_in_dir(big.dir, big.sha, "glue.c"));
    /* Queued while big builds: the bigger one first, then the small one. */
    CHECK_INT(jinn_wasm_compile(&loop, big.dir, bigger.sha, bigger.mod.data, bigger.mod.len,
                                on_compiled, &rg),
              0);
    CHECK_INT(jinn_wasm_compile(&loop, big.dir, small.sha, small.mod.data, small.mod.len,
                                on_compiled, &rs),
              0);
    CHECK_INT(wait_result(&loop, &rs, 240000), 0);
    CHECK_INT(rs.code, 0);
    CHECK(rs.ms > 0);       /* really built, not a cache hit */
    CHECK_INT(rg.calls, 0); /* the bigger one queued first is still to come */
    CHECK_INT(wait_result(&loop, &rg, 240000), 0);
    CHECK_INT(rg.code, 0);
    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&big);
    fixture_free(&bigger);
    fixture_free(&small);
}

/* A tool past its time limit is killed with its process group and the
 * compile fails saying so; one past its memory limit fails with the
 * compiler's own message. Neither touches the caller. */
TEST(wasm_compile_tool_limits)
{
    static struct fixture f;
    static struct result r;
    struct timespec pause = {0, 10 * 1000 * 1000};
    uv_loop_t loop;
    char *text = big_wat(3000);
    double waited = 0;

    CHECK(text != NULL);
    CHECK_INT(fixture_init(&f, text), 0);
    jinn_free(text);
    CHECK_INT(uv_loop_init(&loop), 0);

    jinn_wasm_compile_set_limits(300, 0);
    CHECK_INT(compile(&loop, &f, &r), 0);
    CHECK_INT(r.code, JINN_ETIMEOUT);
    CHECK(strstr(r.message, "ran longer than 0.3 s and was killed") != NULL);
    CHECK(strncmp(r.message, "wasm2c ", 7) == 0 || strncmp(r.message, "cc ", 3) == 0);
    CHECK(!exists_in(f.so, "module.so"));
    while (processes_mentioning(f.dir) > 0 && waited < 5) {
        nanosleep(&pause, NULL);
        waited += 0.01;
    }
    CHECK_INT(processes_mentioning(f.dir), 0);

    jinn_wasm_compile_set_limits(0, 64u << 20);
    CHECK_INT(compile(&loop, &f, &r), 0);
    jinn_wasm_compile_set_limits(0, 0);
    CHECK(r.code != 0);
    CHECK(strstr(r.message, "memory") != NULL);
    CHECK(strncmp(r.message, "wasm2c: ", 8) == 0 || strncmp(r.message, "cc: ", 4) == 0);
    CHECK(!exists_in(f.so, "module.so"));

    CHECK_INT(finish_loop(&loop), 0);
    fixture_free(&f);
}
