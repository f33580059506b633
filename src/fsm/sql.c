/* sql.c - see sql.h. */
#include "fsm/sql.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "fsm/fatal.h"
#include "log.h"

#define VFS_NAME "jinn"
#define JULIAN_UNIX_EPOCH_MS INT64_C(210866760000000)

/* ---- the deterministic VFS --------------------------------------------- */

/* Set only on the loop thread while a command applies; readers on other
 * threads see the real clock. */
static _Thread_local int in_apply;
static _Thread_local uint64_t apply_time_ms;
static _Thread_local uint64_t rng_state;
/* An I/O call of the apply thread failed: a SQLITE_FULL then comes from the
 * disk (environmental), not from max_page_count (deterministic). */
static _Thread_local int io_failed;

/* Test hooks (loop thread only): the next n writes / opens during apply
 * fail with code. */
static int fault_write_code, fault_write_left, fault_open_left;

static sqlite3_vfs jinn_vfs;
static sqlite3_vfs *base_vfs;
static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;
static int vfs_status;

static uint64_t next_random(void)
{
    if (rng_state == 0) {
        /* A reader thread: its random() is nobody else's business, but it
         * must not touch SQLite's global PRNG, which apply seeds. */
        base_vfs->xRandomness(base_vfs, sizeof rng_state, (char *)&rng_state);
        rng_state |= 1;
    }
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static int vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    if (in_apply) {
        *out = (sqlite3_int64)apply_time_ms + JULIAN_UNIX_EPOCH_MS;
        return SQLITE_OK;
    }
    return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    sqlite3_int64 ms;
    int rv = vfs_current_time_int64(vfs, &ms);
    *out = (double)ms / 86400000.0;
    return rv;
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    (void)vfs;
    if (in_apply) {
        for (int i = 0; i < n; i++) {
            out[i] = (char)(next_random() >> 56);
        }
        return n;
    }
    return base_vfs->xRandomness(base_vfs, n, out);
}

/* Every file is wrapped so that apply learns whether an I/O call failed
 * (and so tests can make one fail). */
struct pfile {
    sqlite3_file base;
    sqlite3_file *real; /* right after this struct, base_vfs->szOsFile bytes */
};

#define REAL(f) (((struct pfile *)(f))->real)

static int io_note(int rc)
{
    if (in_apply && rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ &&
        (rc & 0xff) != SQLITE_BUSY) {
        io_failed = 1;
    }
    return rc;
}

static int p_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int p_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return io_note(REAL(f)->pMethods->xRead(REAL(f), buf, n, off));
}

static int p_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    if (in_apply && fault_write_left > 0) {
        fault_write_left--;
        return io_note(fault_write_code);
    }
    return io_note(REAL(f)->pMethods->xWrite(REAL(f), buf, n, off));
}

static int p_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return io_note(REAL(f)->pMethods->xTruncate(REAL(f), size));
}

static int p_sync(sqlite3_file *f, int flags)
{
    return io_note(REAL(f)->pMethods->xSync(REAL(f), flags));
}

static int p_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return io_note(REAL(f)->pMethods->xFileSize(REAL(f), size));
}

static int p_lock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int p_unlock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int p_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}

static int p_file_control(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int p_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

static int p_device_characteristics(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}

static int p_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **out)
{
    return io_note(REAL(f)->pMethods->xShmMap(REAL(f), pg, pgsz, extend, out));
}

static int p_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}

static void p_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int p_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}

static int p_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **out)
{
    return io_note(REAL(f)->pMethods->xFetch(REAL(f), off, n, out));
}

static int p_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods proxy_v1 = {
    1, p_close, p_read, p_write, p_truncate, p_sync, p_file_size, p_lock, p_unlock,
    p_check_reserved, p_file_control, p_sector_size, p_device_characteristics,
    NULL, NULL, NULL, NULL, NULL, NULL,
};

static const sqlite3_io_methods proxy_v3 = {
    3, p_close, p_read, p_write, p_truncate, p_sync, p_file_size, p_lock, p_unlock,
    p_check_reserved, p_file_control, p_sector_size, p_device_characteristics,
    p_shm_map, p_shm_lock, p_shm_barrier, p_shm_unmap, p_fetch, p_unfetch,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    struct pfile *p = (struct pfile *)f;
    int rc;
    (void)vfs;
    p->base.pMethods = NULL;
    p->real = (sqlite3_file *)(p + 1);
    memset(p->real, 0, (size_t)base_vfs->szOsFile);
    if (in_apply && fault_open_left > 0) {
        fault_open_left--;
        return io_note(SQLITE_CANTOPEN);
    }
    rc = base_vfs->xOpen(base_vfs, name, p->real, flags, out);
    if (rc != SQLITE_OK) {
        if (p->real->pMethods != NULL) {
            p->real->pMethods->xClose(p->real);
        }
        return io_note(rc);
    }
    p->base.pMethods = p->real->pMethods->iVersion >= 3 ? &proxy_v3 : &proxy_v1;
    return SQLITE_OK;
}

/* 'localtime' and 'utc' read the host's time zone: SQLite asks this hook
 * instead (a test-control, present in Debian's library), so every replica
 * and every query treats local time as UTC. Returns 0 on success. */
static int localtime_is_utc(const void *t, void *tm)
{
    return gmtime_r((const time_t *)t, (struct tm *)tm) == NULL;
}

/* ---- metered allocation ------------------------------------------------- */

/* A VM step can be expensive: replace(), printf(), || and friends touch
 * up to JINN_SQL_VALUE_MAX bytes in one step, and a loop of them runs for
 * seconds within the step budget. So, while a user statement runs on the
 * apply thread, every allocation of at least METER_MIN bytes is charged
 * to the budget (one step per METER_BYTES_PER_STEP bytes). Such
 * allocations hold values, records and sorter memory: the same on every
 * replica. What depends on a connection's history is left out: the page
 * cache (pages, its hash, its bulk blocks: a restored replica starts cold,
 * so they differ) is wrapped to mark its allocations, and lookaside
 * fallbacks are at most 1200 bytes, below METER_MIN. */
#define METER_MIN 2048
/* Page-size buffers outside the cache (a b-tree's scratch page, allocated
 * once per connection at its first write) are not metered either. */
#define METER_PAGE 4096
#define METER_BYTES_PER_STEP 16

static _Thread_local int metering;
/* Inside the page cache: pages, their hash and bulk blocks depend on the
 * connection's history (a restored replica starts cold), never metered. */
static _Thread_local int in_pcache;
static _Thread_local uint64_t metered_bytes;
/* While metering: the statement's budget and connection. A loop of few,
 * heavy steps may not reach the next progress callback for a long time,
 * so the allocator interrupts the statement itself once over budget (at
 * the same allocation on every replica). */
static _Thread_local struct budget *metered_budget;
static _Thread_local sqlite3 *metered_conn;

struct budget {
    uint64_t limit; /* steps */
    uint64_t calls;
};

static bool budget_spent(const struct budget *b)
{
    return b->calls * 1000 + metered_bytes / METER_BYTES_PER_STEP > b->limit;
}

static void meter(int n)
{
    if (metering && !in_pcache && n >= METER_MIN && n != METER_PAGE) {
        metered_bytes += (uint64_t)n;
        if (budget_spent(metered_budget)) {
            sqlite3_interrupt(metered_conn);
        }
    }
}

/* ---- query memory -------------------------------------------------------- */

/* A query runs on a thread-pool worker, bounded in time only: with
 * temp_store=MEMORY a sort, DISTINCT or materialized subquery keeps every
 * row in memory (one 150-byte query held 2.5 GB after 5 s; eight at once
 * exhaust the host). So what a query thread allocates, net of what is
 * freed (from any thread), is held in a per-thread slot and capped at
 * JINN_SQL_QUERY_MEMORY_MAX: past it an allocation fails and the query
 * ends with "out of memory". Apply is never capped here (its work is
 * bounded by the step budget, the same on every replica). */
#define QUERY_SLOTS 64
static _Atomic int64_t query_held[QUERY_SLOTS + 1]; /* [0]: unused */
static _Atomic int query_slots_taken;
static _Thread_local int query_slot; /* 1..QUERY_SLOTS while a query runs */
static _Thread_local int query_slot_owned;

void jinn_sql_query_memory_begin(void)
{
    if (query_slot_owned == 0) {
        int k = atomic_fetch_add(&query_slots_taken, 1) + 1;
        query_slot_owned = k <= QUERY_SLOTS ? k : QUERY_SLOTS; /* the last is shared */
    }
    query_slot = query_slot_owned;
}

void jinn_sql_query_memory_end(void)
{
    query_slot = 0;
}

/* Sizes are kept in a header (not malloc_usable_size) so that SQLite sees
 * exactly what it asked for on every host and build. Low 32 bits: the
 * size; the next byte: the query slot charged, 0 for none. */
#define HDR_SIZE(h) ((int)((h)&0x7fffffff))
#define HDR_SLOT(h) ((int)(((h) >> 32) & 0xff))

static bool query_over(int64_t more)
{
    return query_slot != 0 && more > 0 &&
           atomic_load(&query_held[query_slot]) + more > (int64_t)JINN_SQL_QUERY_MEMORY_MAX;
}

static void *m_malloc(int n)
{
    sqlite3_int64 *p;
    if (query_over(n)) {
        return NULL;
    }
    p = malloc((size_t)n + sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p[0] = (sqlite3_int64)n | ((sqlite3_int64)query_slot << 32);
    if (query_slot != 0) {
        atomic_fetch_add(&query_held[query_slot], n);
    }
    meter(n);
    return p + 1;
}

static void m_free(void *ptr)
{
    if (ptr != NULL) {
        sqlite3_int64 *p = (sqlite3_int64 *)ptr - 1;
        if (HDR_SLOT(p[0]) != 0) {
            atomic_fetch_sub(&query_held[HDR_SLOT(p[0])], HDR_SIZE(p[0]));
        }
        free(p);
    }
}

static void *m_realloc(void *ptr, int n)
{
    sqlite3_int64 *p = (sqlite3_int64 *)ptr - 1;
    sqlite3_int64 old = p[0];
    if (query_over(HDR_SLOT(old) == query_slot ? (int64_t)n - HDR_SIZE(old) : n)) {
        return NULL;
    }
    p = realloc(p, (size_t)n + sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    if (HDR_SLOT(old) != 0) {
        atomic_fetch_sub(&query_held[HDR_SLOT(old)], HDR_SIZE(old));
    }
    if (query_slot != 0) {
        atomic_fetch_add(&query_held[query_slot], n);
    }
    p[0] = (sqlite3_int64)n | ((sqlite3_int64)query_slot << 32);
    meter(n);
    return p + 1;
}

static int m_size(void *ptr)
{
    return ptr ? HDR_SIZE(((sqlite3_int64 *)ptr)[-1]) : 0;
}

static int m_roundup(int n)
{
    return (n + 7) & ~7;
}

static int m_init(void *data)
{
    (void)data;
    return SQLITE_OK;
}

static void m_shutdown(void *data)
{
    (void)data;
}

static const sqlite3_mem_methods metered_malloc = {
    m_malloc, m_free, m_realloc, m_size, m_roundup, m_init, m_shutdown, NULL,
};

/* SQLite's own page cache, wrapped only to mark its allocations. */
static sqlite3_pcache_methods2 pcache_orig;

static int pc_init(void *arg)
{
    (void)arg;
    return pcache_orig.xInit(pcache_orig.pArg);
}

static void pc_shutdown(void *arg)
{
    (void)arg;
    pcache_orig.xShutdown(pcache_orig.pArg);
}

static sqlite3_pcache *pc_create(int sz_page, int sz_extra, int purgeable)
{
    sqlite3_pcache *p;
    in_pcache++;
    p = pcache_orig.xCreate(sz_page, sz_extra, purgeable);
    in_pcache--;
    return p;
}

static void pc_cachesize(sqlite3_pcache *p, int n)
{
    in_pcache++;
    pcache_orig.xCachesize(p, n);
    in_pcache--;
}

static int pc_pagecount(sqlite3_pcache *p)
{
    return pcache_orig.xPagecount(p);
}

static sqlite3_pcache_page *pc_fetch(sqlite3_pcache *p, unsigned key, int create)
{
    sqlite3_pcache_page *pg;
    in_pcache++;
    pg = pcache_orig.xFetch(p, key, create);
    in_pcache--;
    return pg;
}

static void pc_unpin(sqlite3_pcache *p, sqlite3_pcache_page *pg, int discard)
{
    in_pcache++;
    pcache_orig.xUnpin(p, pg, discard);
    in_pcache--;
}

static void pc_rekey(sqlite3_pcache *p, sqlite3_pcache_page *pg, unsigned from, unsigned to)
{
    in_pcache++;
    pcache_orig.xRekey(p, pg, from, to);
    in_pcache--;
}

static void pc_truncate(sqlite3_pcache *p, unsigned limit)
{
    in_pcache++;
    pcache_orig.xTruncate(p, limit);
    in_pcache--;
}

static void pc_destroy(sqlite3_pcache *p)
{
    in_pcache++;
    pcache_orig.xDestroy(p);
    in_pcache--;
}

static void pc_shrink(sqlite3_pcache *p)
{
    in_pcache++;
    pcache_orig.xShrink(p);
    in_pcache--;
}

static const sqlite3_pcache_methods2 pcache_marked = {
    1, NULL, pc_init, pc_shutdown, pc_create, pc_cachesize, pc_pagecount, pc_fetch, pc_unpin,
    pc_rekey, pc_truncate, pc_destroy, pc_shrink,
};

static void vfs_register(void)
{
    /* Must come before SQLite initializes: jinn_sql_set_dir is the first
     * SQLite call of the process. */
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &metered_malloc) != SQLITE_OK &&
        (sqlite3_shutdown() != SQLITE_OK ||
         sqlite3_config(SQLITE_CONFIG_MALLOC, &metered_malloc) != SQLITE_OK)) {
        /* Someone initialized SQLite first and it cannot be shut down: the
         * budget would differ from other replicas'. Refuse to run. */
        jinn_error("sql: SQLite was initialized before jinn could configure it");
        vfs_status = SQLITE_MISUSE;
        return;
    }
    if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &pcache_orig) != SQLITE_OK ||
        pcache_orig.iVersion < 1 || sqlite3_config(SQLITE_CONFIG_PCACHE2, &pcache_marked) != SQLITE_OK) {
        jinn_error("sql: cannot wrap SQLite's page cache");
        vfs_status = SQLITE_MISUSE;
        return;
    }
    base_vfs = sqlite3_vfs_find(NULL);
    if (base_vfs == NULL || base_vfs->iVersion < 2) {
        vfs_status = SQLITE_ERROR;
        return;
    }
    jinn_vfs = *base_vfs;
    jinn_vfs.zName = VFS_NAME;
    jinn_vfs.pNext = NULL;
    jinn_vfs.szOsFile = (int)sizeof(struct pfile) + base_vfs->szOsFile;
    jinn_vfs.xOpen = vfs_open;
    jinn_vfs.xCurrentTime = vfs_current_time;
    jinn_vfs.xCurrentTimeInt64 = vfs_current_time_int64;
    jinn_vfs.xRandomness = vfs_randomness;
    vfs_status = sqlite3_vfs_register(&jinn_vfs, 0);
    if (vfs_status == SQLITE_OK &&
        sqlite3_test_control(SQLITE_TESTCTRL_LOCALTIME_FAULT, 2, localtime_is_utc) != 0) {
        vfs_status = SQLITE_ERROR;
    }
}

uint64_t jinn_sql_test_metered(void)
{
    return metered_bytes;
}

void jinn_sql_test_fault(int write_code, int writes, int opens)
{
    fault_write_code = write_code;
    fault_write_left = writes;
    fault_open_left = opens;
}

/* random() and randomblob(N), seeded by the raft index during apply. */
static void fn_random(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, (sqlite3_int64)next_random());
}

static void fn_randomblob(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_int64 n = argc > 0 ? sqlite3_value_int64(argv[0]) : 0;
    unsigned char *p;
    if (n < 1) {
        n = 1;
    }
    if (n > 1000000) {
        sqlite3_result_error(ctx, "randomblob: at most 1000000 bytes", -1);
        return;
    }
    p = sqlite3_malloc64((sqlite3_uint64)n);
    if (p == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    for (sqlite3_int64 i = 0; i < n; i++) {
        p[i] = (unsigned char)(next_random() >> 56);
    }
    sqlite3_result_blob(ctx, p, (int)n, sqlite3_free);
}

/* printf()/format(): SQLite's own, conversion by conversion, except that
 * widths and precisions above JINN_SQL_VALUE_MAX are "string or blob too
 * big" and %c repeats are built here. Debian's 3.40 repeats '%.*c' one
 * character at a time even after the length limit tripped: 900 million
 * failed appends, 12 s on the loop. Missing arguments are 0 / NULL, like
 * SQLite's; an unknown conversion ends the output, like SQLite's. */
static long long arg_int(int argc, sqlite3_value **argv, int *next)
{
    return *next < argc ? (long long)sqlite3_value_int64(argv[(*next)++]) : 0;
}

/* The magnitude of a '*' width or precision. Anything past
 * JINN_SQL_VALUE_MAX is "too big" anyway, and negating INT64_MIN is
 * undefined behaviour (an abort on every replica in the sanitizer build). */
static long long arg_magnitude(long long v)
{
    return v >= 0 ? v : v < -(long long)JINN_SQL_VALUE_MAX ? JINN_SQL_VALUE_MAX + 1LL : -v;
}

static void fn_printf(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const char *f = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : NULL;
    sqlite3_str *out;
    int next = 1, rc;
    if (f == NULL) {
        return;
    }
    out = sqlite3_str_new(sqlite3_context_db_handle(ctx));
    while (*f != '\0' && sqlite3_str_errcode(out) == SQLITE_OK) {
        const char *pct = strchr(f, '%');
        char spec[64], flags[8];
        size_t nflags = 0;
        long long width = -1, prec = -1;
        bool left = false;
        char conv;
        if (pct == NULL) {
            sqlite3_str_appendall(out, f);
            break;
        }
        sqlite3_str_append(out, f, (int)(pct - f));
        f = pct + 1;
        for (; *f != '\0' && strchr("-+ #!0,", *f) != NULL; f++) {
            left |= *f == '-';
            if (memchr(flags, *f, nflags) == NULL && nflags < sizeof flags - 1) {
                flags[nflags++] = *f;
            }
        }
        if (*f == '*') {
            width = arg_int(argc, argv, &next);
            f++;
            if (width < 0) {
                width = arg_magnitude(width);
                if (!left && nflags < sizeof flags - 1) {
                    flags[nflags++] = '-';
                }
                left = true;
            }
        } else if (*f >= '0' && *f <= '9') {
            for (width = 0; *f >= '0' && *f <= '9'; f++) {
                width = width > JINN_SQL_VALUE_MAX ? width : width * 10 + (*f - '0');
            }
        }
        if (*f == '.') {
            f++;
            if (*f == '*') {
                prec = arg_int(argc, argv, &next);
                prec = arg_magnitude(prec);
                f++;
            } else {
                for (prec = 0; *f >= '0' && *f <= '9'; f++) {
                    prec = prec > JINN_SQL_VALUE_MAX ? prec : prec * 10 + (*f - '0');
                }
            }
        }
        while (*f == 'l') {
            f++;
        }
        conv = *f;
        if (conv == '\0') {
            break;
        }
        f++;
        if (width > JINN_SQL_VALUE_MAX || prec > JINN_SQL_VALUE_MAX) {
            sqlite3_free(sqlite3_str_finish(out));
            sqlite3_result_error_toobig(ctx);
            return;
        }
        flags[nflags] = '\0';
        snprintf(spec, sizeof spec, "%%%s", flags);
        if (width >= 0) {
            snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%lld", width);
        }
        if (prec >= 0 && conv != 'c') {
            snprintf(spec + strlen(spec), sizeof spec - strlen(spec), ".%lld", prec);
        }
        switch (conv) {
        case '%':
            sqlite3_str_appendchar(out, 1, '%');
            break;
        case 'd':
        case 'i':
        case 'u':
        case 'o':
        case 'x':
        case 'X':
        case 'r':
        case 'p':
            snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "ll%c",
                     conv == 'p' ? 'x' : conv);
            sqlite3_str_appendf(out, spec, arg_int(argc, argv, &next));
            break;
        case 'f':
        case 'e':
        case 'E':
        case 'g':
        case 'G':
            snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%c", conv);
            sqlite3_str_appendf(out, spec,
                                next < argc ? sqlite3_value_double(argv[next++]) : 0.0);
            break;
        case 's':
        case 'z':
        case 'q':
        case 'Q':
        case 'w': {
            const char *t = next < argc ? (const char *)sqlite3_value_text(argv[next++]) : NULL;
            snprintf(spec + strlen(spec), sizeof spec - strlen(spec), "%c",
                     conv == 'z' ? 's' : conv);
            sqlite3_str_appendf(out, spec, (conv == 's' || conv == 'z') && t == NULL ? "" : t);
            break;
        }
        case 'c': {
            /* the first character of the text, precision times, padded */
            const unsigned char *t =
                next < argc ? sqlite3_value_text(argv[next++]) : NULL;
            char ch[4] = {0};
            int len = 1;
            long long copies = prec > 1 ? prec : 1;
            long long pad = width > copies ? width - copies : 0;
            if (t != NULL && t[0] != '\0') {
                ch[0] = (char)t[0];
                if ((t[0] & 0xc0) == 0xc0) {
                    while (len < 4 && (t[len] & 0xc0) == 0x80) {
                        ch[len] = (char)t[len];
                        len++;
                    }
                }
            }
            if (!left && pad > 0) {
                sqlite3_str_appendchar(out, (int)pad, ' ');
            }
            if (len == 1) {
                sqlite3_str_appendchar(out, (int)copies, ch[0]);
            }
            for (long long k = 0; len > 1 && k < copies && sqlite3_str_errcode(out) == SQLITE_OK;
                 k++) {
                sqlite3_str_append(out, ch, len);
            }
            if (left && pad > 0) {
                sqlite3_str_appendchar(out, (int)pad, ' ');
            }
            break;
        }
        case 'n':
            break;
        default:
            /* %T, %S and unknown conversions: SQLite stops here */
            f = "";
            break;
        }
    }
    rc = sqlite3_str_errcode(out);
    if (rc == SQLITE_TOOBIG) {
        sqlite3_free(sqlite3_str_finish(out));
        sqlite3_result_error_toobig(ctx);
    } else if (rc != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(out));
        sqlite3_result_error_nomem(ctx);
    } else {
        int n = sqlite3_str_length(out);
        char *text = sqlite3_str_finish(out);
        sqlite3_result_text(ctx, text ? text : "", n, text ? sqlite3_free : SQLITE_STATIC);
    }
}

/* instr(): SQLite's compares at every offset (needle x haystack: a
 * megabyte each is hours); memmem is linear. Same results: 1-based
 * position in characters (bytes for two blobs), 0 if absent, NULL if
 * either is NULL. */
static void fn_instr(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    const unsigned char *h, *n, *at;
    int hl, nl;
    bool blobs;
    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL || sqlite3_value_type(argv[1]) == SQLITE_NULL) {
        return;
    }
    blobs = sqlite3_value_type(argv[0]) == SQLITE_BLOB &&
            sqlite3_value_type(argv[1]) == SQLITE_BLOB;
    if (blobs) {
        h = sqlite3_value_blob(argv[0]);
        n = sqlite3_value_blob(argv[1]);
    } else {
        h = sqlite3_value_text(argv[0]);
        n = sqlite3_value_text(argv[1]);
    }
    hl = sqlite3_value_bytes(argv[0]);
    nl = sqlite3_value_bytes(argv[1]);
    if ((h == NULL && hl > 0) || (n == NULL && nl > 0)) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    if (nl == 0) {
        sqlite3_result_int(ctx, 1);
        return;
    }
    at = h ? memmem(h, (size_t)hl, n, (size_t)nl) : NULL;
    if (at == NULL) {
        sqlite3_result_int(ctx, 0);
    } else if (blobs) {
        sqlite3_result_int64(ctx, (sqlite3_int64)(at - h) + 1);
    } else {
        sqlite3_int64 chars = 1;
        for (const unsigned char *p = h; p < at; p++) {
            chars += (*p & 0xc0) != 0x80;
        }
        sqlite3_result_int64(ctx, chars);
    }
}

/* ---- what SQL may do: allow-lists ----------------------------------------- */

/* Functions a statement may call (by lower-case name; SQLite passes the
 * name as written, compared without case). Everything else is "not
 * authorized". Left out on purpose: fts3_tokenizer (hands out and takes
 * function pointers: a crash and an ASLR leak), load_extension,
 * changes/total_changes/last_insert_rowid (depend on the connection's
 * history, not the data), sqlite_* introspection (paths, versions, page
 * offsets), the libm functions (exp, ln, pow, sin, ...: results may differ
 * between C libraries), rtree/fts internals (rtreecheck, rtreenode,
 * fts5(), fts5_source_id). random() and randomblob() are jinn's. */
static const char *const functions_allowed[] = {
    /* core scalar */
    "abs", "char", "coalesce", "format", "glob", "hex", "ifnull", "iif", "instr", "length",
    "like", "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "printf", "quote",
    "random", "randomblob", "replace", "round", "rtrim", "sign", "substr", "substring", "trim",
    "typeof", "unicode", "unlikely", "upper", "zeroblob",
    /* arithmetic that does not depend on libm */
    "ceil", "ceiling", "floor", "trunc", "mod", "pi", "sqrt", "degrees", "radians",
    /* aggregate and window */
    "avg", "count", "group_concat", "sum", "total", "row_number", "rank", "dense_rank",
    "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value",
    "nth_value",
    /* date and time: cluster time during apply, local time is UTC */
    "date", "time", "datetime", "julianday", "strftime", "unixepoch", "current_date",
    "current_time", "current_timestamp",
    /* JSON (json_each / json_tree are table-valued, see tables_refused) */
    "json", "json_array", "json_array_length", "json_extract", "json_insert", "json_object",
    "json_patch", "json_remove", "json_replace", "json_set", "json_type", "json_valid",
    "json_quote", "json_group_array", "json_group_object", "->", "->>",
    /* FTS5: the MATCH operator and the auxiliary functions */
    "match", "bm25", "highlight", "snippet",
    /* ALTER TABLE's own (SQLite refuses them in user statements) */
    "sqlite_rename_column", "sqlite_rename_table", "sqlite_rename_test", "sqlite_drop_column",
    "sqlite_rename_quotefix",
};

/* Virtual table modules CREATE VIRTUAL TABLE may use. fts3/fts4 are out
 * (their tokenizer interface is the fts3_tokenizer hole), and so are
 * fts3tokenize, fts5vocab, dbstat, geopoly. */
static const char *const modules_allowed[] = {"fts5", "rtree"};

static bool in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (name != NULL && strcasecmp(list[i], name) == 0) {
            return true;
        }
    }
    return false;
}

#define IN_LIST(list, name) in_list(list, sizeof list / sizeof list[0], name)

/* Tables no statement may read: eponymous virtual tables that expose
 * pages, pragmas or prepared statements, and the temp schema. */
static bool temp_schema_table(const char *table, const char *schema)
{
    /* ALTER TABLE rewrites the (always empty) temp schema too */
    return table != NULL && schema != NULL && strcasecmp(schema, "temp") == 0 &&
           (strcasecmp(table, "sqlite_temp_master") == 0 ||
            strcasecmp(table, "sqlite_temp_schema") == 0);
}

static bool table_refused(const char *table, const char *schema)
{
    return table == NULL || strncasecmp(table, "pragma_", 7) == 0 ||
           strcasecmp(table, "dbstat") == 0 || strcasecmp(table, "sqlite_dbpage") == 0 ||
           strcasecmp(table, "sqlite_stmt") == 0 || strcasecmp(table, "fts3tokenize") == 0 ||
           (schema != NULL && strcasecmp(schema, "main") != 0 &&
            !temp_schema_table(table, schema));
}

/* PRAGMAs fts5 and rtree run inside their own methods, read-only (no
 * value): allowed, because a user statement of that form is harmless too
 * (its result is not visible in exec and is the same on every replica). */
static bool pragma_allowed(const char *name, const char *value)
{
    return value == NULL && name != NULL &&
           (strcasecmp(name, "data_version") == 0 || strcasecmp(name, "page_size") == 0);
}

/* Set while jinn runs its own statements (BEGIN, COMMIT, serialize) on
 * the apply thread. */
static _Thread_local int trusted;

/* A CREATE TABLE or ALTER TABLE was authorized: its column defaults must
 * be checked (SQLite evaluates DEFAULT expressions without asking the
 * authorizer). */
static _Thread_local int ddl_seen;

/* What exec and query connections both allow when a statement reads:
 * SQLITE_OK or SQLITE_DENY, or -1 for an action that is not a read. */
static int authorize_read(int action, const char *a, const char *b, const char *schema)
{
    switch (action) {
    case SQLITE_SELECT:
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_READ:
        return table_refused(a, schema) ? SQLITE_DENY : SQLITE_OK;
    case SQLITE_FUNCTION:
        return IN_LIST(functions_allowed, b) ? SQLITE_OK : SQLITE_DENY;
    case SQLITE_PRAGMA:
        return pragma_allowed(a, b) ? SQLITE_OK : SQLITE_DENY;
    default:
        return -1;
    }
}

/* The authorizer of the apply connection: an allow-list. */
static int authorize_exec(void *data, int action, const char *a, const char *b,
                          const char *schema, const char *trigger)
{
    (void)data;
    (void)trigger;
    if (trusted) {
        return SQLITE_OK;
    }
    if (action == SQLITE_CREATE_TABLE || action == SQLITE_ALTER_TABLE) {
        ddl_seen = 1;
    }
    int read = authorize_read(action, a, b, schema);
    if (read >= 0) {
        return read;
    }
    switch (action) {
    case SQLITE_CREATE_VTABLE:
        return IN_LIST(modules_allowed, b) && schema && strcasecmp(schema, "main") == 0
                   ? SQLITE_OK
                   : SQLITE_DENY;
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_REINDEX:
    case SQLITE_ANALYZE:
        /* main only: the snapshot carries main, nothing else */
        return (schema != NULL && strcasecmp(schema, "main") == 0) ||
                       (action == SQLITE_UPDATE && temp_schema_table(a, schema))
                   ? SQLITE_OK
                   : SQLITE_DENY;
    case SQLITE_ALTER_TABLE: /* a: the schema, b: the table */
        return a != NULL && strcasecmp(a, "main") == 0 ? SQLITE_OK : SQLITE_DENY;
    default:
        /* TEMP objects, transaction control, savepoints, ATTACH, DETACH,
         * and whatever a later SQLite adds. */
        return SQLITE_DENY;
    }
}

static bool shadow_table(const char *name)
{
    static const char *const suffixes[] = {"_node", "_rowid", "_parent", "_data",
                                           "_idx", "_content", "_docsize", "_config"};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k && strcmp(name + n - k, suffixes[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* The authorizer of query connections: reads only. */
static int authorize_query(void *data, int action, const char *a, const char *b,
                           const char *schema, const char *trigger)
{
    (void)data;
    (void)trigger;
    int read = authorize_read(action, a, b, schema);
    if (read >= 0) {
        return read;
    }
    switch (action) {
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        /* Asked only by the parse of a virtual table's declaration
         * (json_each) and by rtree's constructor, which prepares its
         * shadow-table writes; nothing here can write anyway (read-only
         * file, query_only, and the user's statement must be read-only). */
        return a != NULL && (strcmp(a, "sqlite_master") == 0 || shadow_table(a)) ? SQLITE_OK
                                                                                  : SQLITE_DENY;
    default:
        return SQLITE_DENY;
    }
}

/* The same limits on every connection of every replica. */
static const struct {
    int id, value;
} limits[] = {
    {SQLITE_LIMIT_LENGTH, JINN_SQL_VALUE_MAX},
    {SQLITE_LIMIT_SQL_LENGTH, JINN_SQL_STATEMENT_MAX},
    {SQLITE_LIMIT_COLUMN, 200},
    {SQLITE_LIMIT_EXPR_DEPTH, 200},
    {SQLITE_LIMIT_COMPOUND_SELECT, 50},
    {SQLITE_LIMIT_VDBE_OP, 25000},
    {SQLITE_LIMIT_FUNCTION_ARG, 32},
    {SQLITE_LIMIT_ATTACHED, 0},
    {SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 100},
    {SQLITE_LIMIT_VARIABLE_NUMBER, 1000},
    {SQLITE_LIMIT_TRIGGER_DEPTH, 10},
    {SQLITE_LIMIT_WORKER_THREADS, 0},
};

/* Settings shared by apply and query connections; before the authorizer.
 * trusted_schema stays on: SQLite 3.40 does not mark the JSON functions
 * innocuous, so it would refuse them in views and triggers, and the
 * authorizer already checks every function a view or trigger calls (they
 * are compiled into the statement that uses them). */
static int harden(sqlite3 *conn)
{
    int rv = SQLITE_OK;
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        sqlite3_limit(conn, limits[i].id, limits[i].value);
    }
    sqlite3_extended_result_codes(conn, 1);
    if (sqlite3_db_config(conn, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, (int *)NULL) ||
        sqlite3_db_config(conn, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL) ||
        sqlite3_db_config(conn, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL)) {
        return SQLITE_ERROR;
    }
    /* Sorts and temp tables stay in memory: no temp files (whose names
     * would draw from SQLite's PRNG, which apply seeds). */
    rv = sqlite3_exec(conn, "PRAGMA temp_store=MEMORY;", NULL, NULL, NULL);
    if (rv == SQLITE_OK) {
        rv = sqlite3_create_function(conn, "random", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL,
                                     fn_random, NULL, NULL);
    }
    if (rv == SQLITE_OK) {
        rv = sqlite3_create_function(conn, "randomblob", 1, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL,
                                     fn_randomblob, NULL, NULL);
    }
    for (int i = 0; rv == SQLITE_OK && i < 2; i++) {
        rv = sqlite3_create_function(conn, i ? "format" : "printf", -1,
                                     SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                     fn_printf, NULL, NULL);
    }
    if (rv == SQLITE_OK) {
        rv = sqlite3_create_function(conn, "instr", 2,
                                     SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                     fn_instr, NULL, NULL);
    }
    return rv;
}

/* Deterministic runaway guard: SQLite calls this every 1000 VM steps of
 * each statement (its own and nested ones alike); metered bytes count too. */
static int over_budget(void *data)
{
    struct budget *b = data;
    b->calls++;
    return budget_spent(b);
}

/* ---- databases ---------------------------------------------------------- */

static int name_cmp(const struct jinn_tree_node *a, const struct jinn_tree_node *b)
{
    return strcmp(jinn_tree_entry(a, struct jinn_sql_db, by_name)->name,
                  jinn_tree_entry(b, struct jinn_sql_db, by_name)->name);
}

void jinn_sql_init(struct jinn_sql *s)
{
    memset(s, 0, sizeof *s);
    jinn_tree_init(&s->by_name, name_cmp);
}

static void db_free(struct jinn_tree_node *n)
{
    struct jinn_sql_db *db = jinn_tree_entry(n, struct jinn_sql_db, by_name);
    sqlite3_close_v2(db->conn);
    jinn_free(db);
}

static void close_all(struct jinn_sql *s)
{
    jinn_tree_release_all(&s->by_name, db_free);
    jinn_free(s->reply);
    s->reply = NULL;
}

void jinn_sql_clear(struct jinn_sql *s)
{
    close_all(s);
    jinn_free(s->dir);
    jinn_sql_init(s);
}

static void path_of(const struct jinn_sql *s, const char *name, const char *suffix, char *out,
                    size_t cap)
{
    snprintf(out, cap, "%s/%s.db%s", s->dir, name, suffix);
}

/* Removes the database files (NAME.db and its -wal/-shm/-journal): they
 * are rebuilt from snapshot and log. keep_restores spares NAME.db.restore,
 * the images a restore is about to swap in. */
static int wipe_dir(const struct jinn_sql *s, bool keep_restores)
{
    DIR *d = opendir(s->dir);
    struct dirent *e;
    char path[4400];
    if (d == NULL) {
        return JINN_EIO;
    }
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".db") != NULL &&
            !(keep_restores && strstr(e->d_name, ".db.restore") != NULL)) {
            snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return 0;
}

int jinn_sql_set_dir(struct jinn_sql *s, const char *data_dir)
{
    char path[4200];
    pthread_once(&vfs_once, vfs_register);
    if (vfs_status != SQLITE_OK) {
        return JINN_EIO;
    }
    snprintf(path, sizeof path, "%s/sql", data_dir);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        return JINN_EIO;
    }
    jinn_free(s->dir);
    s->dir = jinn_strdup(path);
    if (s->dir == NULL) {
        return JINN_ENOMEM;
    }
    return wipe_dir(s, false);
}

static int open_conn(const struct jinn_sql *s, const char *name, sqlite3 **out)
{
    char path[4400], pragmas[192];
    sqlite3 *conn = NULL;
    int rv;
    path_of(s, name, "", path, sizeof path);
    /* cache_spill=OFF: WAL frames are written at COMMIT only, never in the
     * middle of a statement; a WAL restart there would draw from SQLite's
     * PRNG (new salts) at a point that depends on this replica's readers,
     * and shift the random rowids that follow. */
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_spill=OFF; "
             "PRAGMA max_page_count=%u;",
             JINN_SQL_DB_PAGES_MAX);
    rv = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, VFS_NAME);
    if (rv == SQLITE_OK) {
        rv = sqlite3_exec(conn, pragmas, NULL, NULL, NULL);
    }
    if (rv == SQLITE_OK) {
        rv = harden(conn);
    }
    if (rv == SQLITE_OK) {
        /* An outside process holding a lock on this file: wait a little,
         * then the exec retries and finally stops this node. */
        rv = sqlite3_busy_timeout(conn, JINN_SQL_BUSY_WAIT_MS);
    }
    if (rv == SQLITE_OK) {
        rv = sqlite3_set_authorizer(conn, authorize_exec, NULL);
    }
    if (rv != SQLITE_OK) {
        jinn_warn("sql: cannot open %s: %s", path,
                  conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rv));
        sqlite3_close_v2(conn);
        return rv == SQLITE_NOMEM ? JINN_ENOMEM : JINN_EIO;
    }
    *out = conn;
    return 0;
}

static struct jinn_sql_db *find(const struct jinn_sql *s, const char *name)
{
    struct jinn_sql_db probe;
    struct jinn_tree_node *n;
    snprintf(probe.name, sizeof probe.name, "%s", name);
    n = jinn_tree_find(&s->by_name, &probe.by_name);
    return n ? jinn_tree_entry(n, struct jinn_sql_db, by_name) : NULL;
}

const struct jinn_sql_db *jinn_sql_get(const struct jinn_sql *s, const char *name)
{
    return find(s, name);
}

const struct jinn_sql_db *jinn_sql_next(const struct jinn_sql *s, const struct jinn_sql_db *after)
{
    struct jinn_tree_iter it;
    struct jinn_tree_node *n = jinn_tree_seek(&s->by_name, after ? &after->by_name : NULL, &it);
    if (n != NULL && after != NULL && name_cmp(n, &after->by_name) == 0) {
        n = jinn_tree_next(&it);
    }
    return n ? jinn_tree_entry(n, struct jinn_sql_db, by_name) : NULL;
}

static struct jinn_sql_db *open_db(struct jinn_sql *s, const char *name)
{
    struct jinn_sql_db *db = find(s, name);
    sqlite3_stmt *stmt = NULL;
    if (db != NULL) {
        return db;
    }
    if (s->dir == NULL || s->by_name.count >= JINN_SQL_DBS_MAX) {
        return NULL;
    }
    db = jinn_calloc(1, sizeof *db);
    if (db == NULL) {
        return NULL;
    }
    snprintf(db->name, sizeof db->name, "%s", name);
    if (open_conn(s, name, &db->conn) != 0) {
        jinn_free(db);
        return NULL;
    }
    /* The SQLite version that wrote this database (0: none yet). */
    sqlite3_set_authorizer(db->conn, NULL, NULL);
    if (sqlite3_prepare_v2(db->conn, "PRAGMA user_version", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_step(stmt) != SQLITE_ROW) {
        jinn_warn("sql: cannot read the version of %s: %s", name, sqlite3_errmsg(db->conn));
        sqlite3_finalize(stmt);
        sqlite3_close_v2(db->conn);
        jinn_free(db);
        return NULL;
    }
    db->version = (uint32_t)sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    sqlite3_set_authorizer(db->conn, authorize_exec, NULL);
    jinn_tree_insert(&s->by_name, &db->by_name);
    return db;
}

bool jinn_sql_version_ok(const struct jinn_sql *s, const char *name, uint32_t *recorded)
{
    const struct jinn_sql_db *db = find(s, name);
    *recorded = db ? db->version : 0;
    return *recorded == 0 || *recorded == (uint32_t)sqlite3_libversion_number();
}

sqlite3 *jinn_sql_open_reader(const struct jinn_sql *s, const char *name)
{
    char path[4400];
    sqlite3 *conn = NULL;
    if (s->dir == NULL || find(s, name) == NULL) {
        return NULL;
    }
    path_of(s, name, "", path, sizeof path);
    if (sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, VFS_NAME) !=
            SQLITE_OK ||
        sqlite3_exec(conn, "PRAGMA query_only=1;", NULL, NULL, NULL) != SQLITE_OK ||
        harden(conn) != SQLITE_OK ||
        sqlite3_set_authorizer(conn, authorize_query, NULL) != SQLITE_OK) {
        sqlite3_close_v2(conn);
        return NULL;
    }
    return conn;
}

sqlite3 *jinn_sql_open_internal_reader(const struct jinn_sql *s, const char *name)
{
    sqlite3 *conn = jinn_sql_open_reader(s, name);
    if (conn != NULL) {
        /* jinn's own statements (digest: BEGIN, pragma_table_info; image:
         * PRAGMA page_count) on a connection no client ever sees */
        sqlite3_set_authorizer(conn, NULL, NULL);
    }
    return conn;
}

bool jinn_sql_tail_blank(const char *tail)
{
    while (tail != NULL && *tail != '\0') {
        if (*tail == ';' || *tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' ||
            *tail == '\f' || *tail == '\v') {
            tail++;
        } else if (tail[0] == '-' && tail[1] == '-') {
            tail += strcspn(tail, "\n");
        } else if (tail[0] == '/' && tail[1] == '*') {
            const char *end = strstr(tail + 2, "*/");
            tail = end ? end + 2 : tail + strlen(tail); /* an open comment runs to the end */
        } else {
            return false;
        }
    }
    return true;
}

/* ---- binding and results ------------------------------------------------ */

static int bind_one(sqlite3_stmt *stmt, int i, json_t *v, char *err, size_t err_len)
{
    int rv;
    if (json_is_null(v)) {
        rv = sqlite3_bind_null(stmt, i);
    } else if (json_is_true(v) || json_is_false(v)) {
        rv = sqlite3_bind_int64(stmt, i, json_is_true(v));
    } else if (json_is_integer(v)) {
        rv = sqlite3_bind_int64(stmt, i, (sqlite3_int64)json_integer_value(v));
    } else if (json_is_real(v)) {
        rv = sqlite3_bind_double(stmt, i, json_real_value(v));
    } else if (json_is_string(v)) {
        rv = sqlite3_bind_text64(stmt, i, json_string_value(v), json_string_length(v),
                                 SQLITE_TRANSIENT, SQLITE_UTF8);
    } else if (json_is_object(v) && json_is_string(json_object_get(v, "base64")) &&
               json_object_size(v) == 1) {
        const char *b64 = json_string_value(json_object_get(v, "base64"));
        size_t n = strlen(b64), out = 0;
        unsigned char *buf = jinn_malloc(n / 4 * 3 + 3);
        uint32_t acc = 0;
        int bits = 0;
        if (buf == NULL) {
            snprintf(err, err_len, "out of memory");
            return -1;
        }
        for (size_t k = 0; k < n; k++) {
            const char *alphabet =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            const char *pos = b64[k] ? strchr(alphabet, b64[k]) : NULL;
            if (b64[k] == '=') {
                break;
            }
            if (pos == NULL) {
                jinn_free(buf);
                snprintf(err, err_len, "parameter %d: bad base64", i);
                return -1;
            }
            acc = (acc << 6) | (uint32_t)(pos - alphabet);
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                buf[out++] = (unsigned char)(acc >> bits);
            }
        }
        rv = sqlite3_bind_blob64(stmt, i, buf, out, SQLITE_TRANSIENT);
        jinn_free(buf);
    } else {
        snprintf(err, err_len,
                 "parameter %d: use null, a boolean, a number, a string or {\"base64\": ...}", i);
        return -1;
    }
    if (rv != SQLITE_OK) {
        snprintf(err, err_len, "parameter %d: %s", i, sqlite3_errstr(rv));
        return -1;
    }
    return 0;
}

int jinn_sql_bind(sqlite3_stmt *stmt, json_t *params, char *err, size_t err_len)
{
    int expected = sqlite3_bind_parameter_count(stmt);
    if (params == NULL || json_is_null(params)) {
        if (expected != 0) {
            snprintf(err, err_len, "the statement takes %d parameters, none given", expected);
            return -1;
        }
        return 0;
    }
    if (json_is_array(params)) {
        if ((int)json_array_size(params) != expected) {
            snprintf(err, err_len, "the statement takes %d parameters, %zu given", expected,
                     json_array_size(params));
            return -1;
        }
        for (int i = 0; i < expected; i++) {
            if (bind_one(stmt, i + 1, json_array_get(params, (size_t)i), err, err_len) != 0) {
                return -1;
            }
        }
        return 0;
    }
    if (json_is_object(params)) {
        const char *key;
        json_t *v;
        if ((int)json_object_size(params) != expected) {
            snprintf(err, err_len, "the statement takes %d parameters, %zu given", expected,
                     json_object_size(params));
            return -1;
        }
        json_object_foreach(params, key, v)
        {
            char name[128];
            int i;
            snprintf(name, sizeof name, "%s%s", strchr(":@$", key[0]) && key[0] ? "" : ":", key);
            i = sqlite3_bind_parameter_index(stmt, name);
            if (i == 0) {
                snprintf(err, err_len, "no parameter named %s", name);
                return -1;
            }
            if (bind_one(stmt, i, v, err, err_len) != 0) {
                return -1;
            }
        }
        return 0;
    }
    snprintf(err, err_len, "params must be an array or an object");
    return -1;
}

json_t *jinn_sql_column_json(sqlite3_stmt *stmt, int i)
{
    switch (sqlite3_column_type(stmt, i)) {
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_column_int64(stmt, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(stmt, i));
    case SQLITE_TEXT:
        return json_stringn((const char *)sqlite3_column_text(stmt, i),
                            (size_t)sqlite3_column_bytes(stmt, i));
    case SQLITE_BLOB: {
        /* A zeroblob is expanded here: NULL when that allocation fails
         * (a query at its memory cap), never read. */
        const void *blob = sqlite3_column_blob(stmt, i);
        size_t n = (size_t)sqlite3_column_bytes(stmt, i);
        struct jinn_wbuf w;
        json_t *obj;
        if (blob == NULL && n > 0) {
            return NULL;
        }
        jinn_wbuf_init(&w);
        jinn_wbuf_put_base64(&w, blob, n);
        obj = json_pack("{s:s%}", "base64", w.data ? (const char *)w.data : "", w.len);
        jinn_wbuf_free(&w);
        return obj;
    }
    default:
        return json_null();
    }
}

/* ---- exec --------------------------------------------------------------- */

/* jinn's own statements (transaction control, serialisation) run without
 * the authorizer that fences the user's. */
static int run_unguarded(sqlite3 *conn, const char *sql)
{
    int rv;
    trusted = 1; /* cheaper than swapping authorizers (that expires statements) */
    rv = sqlite3_exec(conn, sql, NULL, NULL, NULL);
    trusted = 0;
    return rv;
}

static unsigned char *serialize(sqlite3 *conn, sqlite3_int64 *n)
{
    unsigned char *image;
    trusted = 1;
    image = sqlite3_serialize(conn, "main", n, 0);
    trusted = 0;
    return image;
}

/* Failures that belong to this replica, not to the statement: another
 * process holds a lock, the disk is full or failing, memory ran out, the
 * file vanished. Retried; if they persist the node stops. A SQLITE_FULL
 * without a failed write is max_page_count: a result like any other. */
static bool environmental(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_PERM:
        return true;
    case SQLITE_FULL:
        return io_failed != 0;
    default:
        return false;
    }
}

/* Column defaults are expressions SQLite evaluates at INSERT time without
 * the authorizer: `DEFAULT (total_changes())` would differ per replica.
 * After DDL, every default is prepared as `SELECT <default>` under the
 * authorizer; one that is not allowed fails the statement. 0 or a SQLite
 * code with err set. */
static int check_defaults(sqlite3 *conn, char *err, size_t cap)
{
    sqlite3_stmt *q = NULL;
    int rc;
    trusted = 1;
    rc = sqlite3_prepare_v2(conn,
                            "SELECT m.name, p.dflt_value FROM main.sqlite_schema AS m, "
                            "pragma_table_xinfo(m.name, 'main') AS p WHERE m.type = 'table' "
                            "AND p.dflt_value IS NOT NULL ORDER BY m.name, p.cid",
                            -1, &q, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *table = (const char *)sqlite3_column_text(q, 0);
        char *probe_sql = sqlite3_mprintf("SELECT %s", (const char *)sqlite3_column_text(q, 1));
        sqlite3_stmt *probe = NULL;
        trusted = 0;
        rc = probe_sql ? sqlite3_prepare_v2(conn, probe_sql, -1, &probe, NULL) : SQLITE_NOMEM;
        trusted = 1;
        sqlite3_finalize(probe);
        sqlite3_free(probe_sql);
        if (rc != SQLITE_OK) {
            snprintf(err, cap, "a column default of %s: %s", table ? table : "?",
                     sqlite3_errmsg(conn));
        }
    }
    trusted = 0;
    if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    } else if (rc != SQLITE_OK && err[0] == '\0') {
        snprintf(err, cap, "%s", sqlite3_errmsg(conn));
    }
    sqlite3_finalize(q);
    return rc;
}

struct run {
    struct jinn_sql *s;
    struct jinn_sql_db *db;
    int env_rc; /* set when the attempt failed for an environmental reason */
    char env_msg[256];
};

static int fail(struct run *r, int n, int rc, const char *msg)
{
    if (environmental(rc)) {
        r->env_rc = rc;
        snprintf(r->env_msg, sizeof r->env_msg, "statement %d: %s", n, msg);
    } else {
        snprintf(r->s->error, sizeof r->s->error, "statement %d: %s", n, msg);
    }
    run_unguarded(r->db->conn, "ROLLBACK");
    return JINN_ESQL;
}

/* One attempt at the whole transaction. JINN_OK with *results filled,
 * JINN_ESQL (r->env_rc says whether it was environmental). */
static int attempt(struct run *r, uint64_t index, const struct jinn_cmd *c, json_t *list,
                   json_t *results)
{
    sqlite3 *conn = r->db->conn;
    struct budget budget;
    size_t i;
    json_t *st;
    int rc;

    /* The same random stream on every replica and every attempt: jinn's
     * random()/randomblob() and SQLite's own PRNG (random rowids once
     * rowid 2^63-1 is taken) are seeded from the entry's index. */
    rng_state = index * UINT64_C(0x9E3779B97F4A7C15) | 1;
    sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SEED, (int)(uint32_t)(index * 2654435761u) | 1,
                         (sqlite3 *)NULL);
    io_failed = 0;
    /* The schema is loaded now, outside the step budget: a fresh connection
     * (or one whose schema a rolled-back DDL reset) reads it, a warm one
     * does not, and the budget must not differ. */
    rc = run_unguarded(conn, "BEGIN IMMEDIATE; SELECT 1 FROM main.sqlite_master LIMIT 0;");
    if (rc != SQLITE_OK) {
        return fail(r, 0, rc, sqlite3_errmsg(conn));
    }
    if (r->db->version == 0) {
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version=%u",
                 c->sql.sqlite_version ? c->sql.sqlite_version
                                       : (uint32_t)sqlite3_libversion_number());
        rc = run_unguarded(conn, set);
        if (rc != SQLITE_OK) {
            return fail(r, 0, rc, sqlite3_errmsg(conn));
        }
    }
    budget.limit = c->sql.step_budget;
    budget.calls = 0;
    metered_bytes = 0;
    sqlite3_progress_handler(conn, 1000, over_budget, &budget);
    json_array_foreach(list, i, st)
    {
        const char *sql = json_string_value(json_object_get(st, "sql"));
        const char *tail = NULL;
        sqlite3_stmt *stmt = NULL;
        sqlite3_int64 total_before;
        char err[256];
        int n = (int)i + 1;
        if (sql == NULL) {
            sqlite3_progress_handler(conn, 0, NULL, NULL);
            return fail(r, n, SQLITE_ERROR, "missing sql");
        }
        ddl_seen = 0;
        rc = sqlite3_prepare_v2(conn, sql, -1, &stmt, &tail);
        if (rc != SQLITE_OK || stmt == NULL) {
            snprintf(err, sizeof err, "%s",
                     rc == SQLITE_OK ? "empty statement" : sqlite3_errmsg(conn));
            sqlite3_finalize(stmt);
            sqlite3_progress_handler(conn, 0, NULL, NULL);
            return fail(r, n, rc, err);
        }
        if (!jinn_sql_tail_blank(tail)) {
            sqlite3_finalize(stmt);
            sqlite3_progress_handler(conn, 0, NULL, NULL);
            return fail(r, n, SQLITE_ERROR, "one SQL statement per entry");
        }
        if (jinn_sql_bind(stmt, json_object_get(st, "params"), err, sizeof err) != 0) {
            sqlite3_finalize(stmt);
            sqlite3_progress_handler(conn, 0, NULL, NULL);
            return fail(r, n, SQLITE_ERROR, err);
        }
        total_before = sqlite3_total_changes64(conn);
        sqlite3_set_last_insert_rowid(conn, 0);
        metered_budget = &budget;
        metered_conn = conn;
        metering = 1;
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        }
        metering = 0;
        if (rc != SQLITE_DONE) {
            snprintf(err, sizeof err, "%s",
                     rc == SQLITE_INTERRUPT ? "too much work (the step budget ran out)"
                                            : sqlite3_errmsg(conn));
            sqlite3_finalize(stmt);
            sqlite3_progress_handler(conn, 0, NULL, NULL);
            return fail(r, n, rc, err);
        }
        sqlite3_finalize(stmt);
        err[0] = '\0';
        if (ddl_seen && (rc = check_defaults(conn, err, sizeof err)) != SQLITE_OK) {
            sqlite3_progress_handler(conn, 0, NULL, NULL);
            return fail(r, n, rc, err);
        }
        /* sqlite3_changes64 keeps the last DML's count through SELECTs and
         * DDL: report it only when this statement changed rows. */
        json_array_append_new(
            results,
            json_pack("{s:I, s:I}", "rows_affected",
                      (json_int_t)(sqlite3_total_changes64(conn) != total_before
                                       ? sqlite3_changes64(conn)
                                       : 0),
                      "last_insert_id", (json_int_t)sqlite3_last_insert_rowid(conn)));
    }
    sqlite3_progress_handler(conn, 0, NULL, NULL);
    rc = run_unguarded(conn, "COMMIT");
    if (rc != SQLITE_OK) {
        return fail(r, (int)json_array_size(list), rc, sqlite3_errmsg(conn));
    }
    if (r->db->version == 0) {
        r->db->version = c->sql.sqlite_version ? c->sql.sqlite_version
                                               : (uint32_t)sqlite3_libversion_number();
    }
    return JINN_OK;
}

static void backoff(int attempt_no)
{
    struct timespec ts = {0, (long)attempt_no * 20 * 1000000L};
    nanosleep(&ts, NULL);
}

int jinn_sql_exec(struct jinn_sql *s, uint64_t index, uint64_t now, const struct jinn_cmd *c)
{
    char name[JINN_SQL_DB_MAX + 1];
    struct run r;
    json_t *doc, *list, *results = NULL;
    uint32_t local = (uint32_t)sqlite3_libversion_number();
    int rv = JINN_EIO;

    jinn_free(s->reply);
    s->reply = NULL;
    s->error[0] = '\0';
    doc = json_loadb((const char *)c->sql.statements.p, c->sql.statements.len, 0, NULL);
    list = doc ? json_object_get(doc, "statements") : NULL;
    if (!json_is_array(list) || json_array_size(list) == 0 ||
        json_array_size(list) > JINN_SQL_STATEMENTS_MAX) {
        json_decref(doc);
        return JINN_ECORRUPT; /* the leader validated it: these bytes are not ours */
    }
    memcpy(name, c->sql.db.p, c->sql.db.len);
    name[c->sql.db.len] = '\0';
    if (c->sql.sqlite_version != 0 && c->sql.sqlite_version != local) {
        /* The leader runs another SQLite: this node cannot promise the
         * same result. Stop; it can follow again with the same library. */
        jinn_error("entry %llu, database %s: written for SQLite %u, this node has %u: "
                   "cannot apply it identically; stopping (sql_version_mismatch)",
                   (unsigned long long)index, name, c->sql.sqlite_version, local);
        json_decref(doc);
        return JINN_EIO;
    }
    memset(&r, 0, sizeof r);
    r.s = s;
    in_apply = 1;
    apply_time_ms = now;
    for (int n = 1; n <= JINN_SQL_APPLY_ATTEMPTS; n++) {
        json_decref(results);
        results = json_array();
        r.env_rc = 0;
        r.db = open_db(s, name);
        if (r.db == NULL) {
            if (s->by_name.count >= JINN_SQL_DBS_MAX || s->dir == NULL) {
                rv = JINN_EFULL; /* the same on every replica */
                break;
            }
            r.env_rc = SQLITE_CANTOPEN;
            snprintf(r.env_msg, sizeof r.env_msg, "cannot open the database file (%s)",
                     strerror(errno));
        } else if (results == NULL) {
            r.env_rc = SQLITE_NOMEM;
            snprintf(r.env_msg, sizeof r.env_msg, "out of memory");
        } else if (c->sql.sqlite_version != 0 && r.db->version != 0 &&
                   r.db->version != c->sql.sqlite_version) {
            snprintf(s->error, sizeof s->error,
                     "sql_version_mismatch: database written by SQLite %u, entry by %u",
                     r.db->version, c->sql.sqlite_version);
            rv = JINN_ESQL;
            break;
        } else {
            rv = attempt(&r, index, c, list, results);
        }
        if (r.env_rc == 0) {
            break;
        }
        jinn_warn("entry %llu, database %s: %s (%s), attempt %d of %d",
                  (unsigned long long)index, name, r.env_msg, sqlite3_errstr(r.env_rc), n,
                  JINN_SQL_APPLY_ATTEMPTS);
        if (n < JINN_SQL_APPLY_ATTEMPTS) {
            backoff(n);
        }
    }
    in_apply = 0;
    if (r.env_rc != 0) {
        jinn_error("entry %llu, database %s: %s (%s) after %d attempts: this replica cannot "
                   "apply what the others did; stopping (a restart catches up from the log)",
                   (unsigned long long)index, name, r.env_msg, sqlite3_errstr(r.env_rc),
                   JINN_SQL_APPLY_ATTEMPTS);
        rv = r.env_rc == SQLITE_NOMEM ? JINN_ENOMEM : JINN_EIO;
    } else if (rv == JINN_OK) {
        s->reply = json_dumps(results, JSON_COMPACT);
        if (s->reply == NULL) {
            rv = JINN_ENOMEM; /* committed here: the node must stop, not skip */
        }
    }
    json_decref(results);
    json_decref(doc);
    return rv;
}

uint32_t jinn_sql_checksum(const struct jinn_sql_db *db, uint64_t *size)
{
    sqlite3_int64 n = 0;
    unsigned char *image = serialize(db->conn, &n);
    uint32_t crc = image ? jinn_crc32(0, image, (size_t)n) : 0;
    *size = (uint64_t)n;
    sqlite3_free(image);
    return crc;
}

/* ---- snapshots ------------------------------------------------------------ */

/* Section: u32 count; per database in name order: name, the serialized
 * database image (SQLite's own file format). */
void jinn_sql_encode(const struct jinn_sql *s, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u32(w, (uint32_t)s->by_name.count);
    for (const struct jinn_sql_db *db = jinn_sql_next(s, NULL); db; db = jinn_sql_next(s, db)) {
        sqlite3_int64 n = 0;
        unsigned char *image = serialize(db->conn, &n);
        if (image == NULL) {
            w->failed = true;
            return;
        }
        jinn_wbuf_put_str(w, db->name);
        jinn_wbuf_put_bytes(w, image, (size_t)n);
        sqlite3_free(image);
    }
}

struct jinn_sql_pin {
    unsigned n;
    struct pinned {
        char name[JINN_SQL_DB_MAX + 1];
        sqlite3 *conn;          /* a reader inside its read transaction, or */
        unsigned char *image;   /* the image, when the database has no file */
        sqlite3_int64 len;
    } dbs[];
};

int jinn_sql_pin(const struct jinn_sql *s, struct jinn_sql_pin **out)
{
    struct jinn_sql_pin *p;
    unsigned i = 0;

    p = jinn_calloc(1, sizeof *p + s->by_name.count * sizeof p->dbs[0]);
    if (p == NULL) {
        return JINN_ENOMEM;
    }
    for (const struct jinn_sql_db *db = jinn_sql_next(s, NULL); db; db = jinn_sql_next(s, db)) {
        struct pinned *d = &p->dbs[i++];
        p->n = i;
        snprintf(d->name, sizeof d->name, "%s", db->name);
        d->conn = s->dir != NULL ? jinn_sql_open_internal_reader(s, db->name) : NULL;
        /* A WAL read transaction begins at its first read. */
        if (d->conn != NULL &&
            sqlite3_exec(d->conn, "BEGIN; SELECT count(*) FROM sqlite_schema;", NULL, NULL,
                         NULL) != SQLITE_OK) {
            sqlite3_close_v2(d->conn);
            d->conn = NULL;
        }
        if (d->conn == NULL) {
            /* No file to read beside apply (tests, or no descriptor left):
             * serialise now, on this thread, as the synchronous path does. */
            d->image = serialize(db->conn, &d->len);
            if (d->image == NULL) {
                jinn_sql_pin_free(p);
                return JINN_ENOMEM;
            }
        }
    }
    *out = p;
    return 0;
}

void jinn_sql_pin_encode(struct jinn_sql_pin *p, struct jinn_wbuf *w)
{
    jinn_wbuf_put_u32(w, p->n);
    for (unsigned i = 0; i < p->n && !w->failed; i++) {
        struct pinned *d = &p->dbs[i];
        if (d->image == NULL) {
            d->image = serialize(d->conn, &d->len);
            if (d->image == NULL) {
                w->failed = true;
                return;
            }
        }
        jinn_wbuf_put_str(w, d->name);
        jinn_wbuf_put_bytes(w, d->image, (size_t)d->len);
        sqlite3_free(d->image);
        d->image = NULL;
        sqlite3_close_v2(d->conn); /* ends the read transaction */
        d->conn = NULL;
    }
}

void jinn_sql_pin_free(struct jinn_sql_pin *p)
{
    if (p == NULL) {
        return;
    }
    for (unsigned i = 0; i < p->n; i++) {
        sqlite3_free(p->dbs[i].image);
        sqlite3_close_v2(p->dbs[i].conn);
    }
    jinn_free(p);
}

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok;
    if (f == NULL) {
        return -1;
    }
    ok = fwrite(p, 1, n, f) == n;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    return ok ? 0 : -1;
}

static void remove_db_files(const struct jinn_sql *s, const char *name, const char *suffix)
{
    static const char *const parts[] = {"", "-wal", "-shm", "-journal"};
    char path[4400], part[32];
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(part, sizeof part, "%s%s", suffix, parts[i]);
        path_of(s, name, part, path, sizeof path);
        unlink(path);
    }
}

/* Whether the image written at path opens as a database and its schema
 * parses: the framing checks (magic, length) pass for a broken header or
 * schema, which would otherwise show up only after the swap. */
static bool image_readable(const struct jinn_sql *s, const char *name)
{
    char path[4400];
    sqlite3 *conn = NULL;
    sqlite3_stmt *stmt = NULL;
    bool ok;
    path_of(s, name, ".restore", path, sizeof path);
    ok = sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
         sqlite3_prepare_v2(conn, "SELECT count(*) FROM main.sqlite_schema", -1, &stmt, NULL) ==
             SQLITE_OK &&
         sqlite3_step(stmt) == SQLITE_ROW;
    sqlite3_finalize(stmt);
    sqlite3_close(conn);
    /* A WAL image made its -wal and -shm files beside it: not to be kept. */
    path_of(s, name, ".restore-wal", path, sizeof path);
    unlink(path);
    path_of(s, name, ".restore-shm", path, sizeof path);
    unlink(path);
    return ok;
}

/* A snapshot can hold no name outside the API's allow-list (every
 * version's API checked it), so one such as x.db.restore or with '.' is a
 * hostile or broken snapshot: refused (R5 m2). */
bool jinn_sql_name_allowed(const void *p, size_t len)
{
    const uint8_t *name = p;
    bool ok = len > 0 && len <= JINN_SQL_DB_MAX;
    for (size_t i = 0; ok && i < len; i++) {
        uint8_t c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-';
    }
    return ok;
}

/* A restore prepared by jinn_sql_restore_write: the images on disk beside
 * the live files, by name. */
struct jinn_sql_restore {
    struct jinn_sql dir; /* only .dir is set (a copy): path_of */
    uint32_t count;
    bool swapped; /* renamed over the live files: nothing left to remove */
    char names[][JINN_SQL_DB_MAX + 1];
};

/* The restore writes every image beside the live files first
 * (NAME.db.restore); only when all are on disk does it close the live
 * databases and rename the new images over them (jinn_sql_restore_swap).
 * A failure before that leaves the old state as it was. This step reads
 * only s->dir (set once at start): it runs on a worker thread for a
 * replica (A3 m5), while the loop goes on serving the live databases. */
int jinn_sql_restore_write(const struct jinn_sql *s, struct jinn_rbuf *r,
                           struct jinn_sql_restore **out)
{
    struct jinn_rbuf check = *r;
    uint32_t count = jinn_rbuf_get_u32(&check);
    uint32_t written = 0;
    struct jinn_sql_restore *rs;
    int rv = 0;

    *out = NULL;
    /* Validate everything before touching a file. */
    if (check.failed || count > JINN_SQL_DBS_MAX) {
        return JINN_ECORRUPT;
    }
    char prev[JINN_SQL_DB_MAX + 1] = "";
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *name, *image;
        char cur[JINN_SQL_DB_MAX + 1];
        size_t name_len = jinn_rbuf_get_bytes(&check, &name, JINN_SQL_DB_MAX);
        size_t len = jinn_rbuf_get_bytes(&check, &image, UINT32_MAX);
        if (check.failed || !jinn_sql_name_allowed(name, name_len) || len < 100 ||
            memcmp(image, "SQLite format 3", 16) != 0) {
            return JINN_ECORRUPT;
        }
        /* Names in strictly increasing order, as jinn_sql_encode writes
         * them: a duplicate would overwrite its twin's image beside the
         * live files and fail only after the swap. */
        memcpy(cur, name, name_len);
        cur[name_len] = '\0';
        if (i > 0 && strcmp(prev, cur) >= 0) {
            return JINN_ECORRUPT;
        }
        memcpy(prev, cur, name_len + 1);
    }
    if (s->dir == NULL && count != 0) {
        return JINN_EIO;
    }
    rs = jinn_calloc(1, sizeof *rs + (size_t)count * sizeof rs->names[0]);
    if (rs == NULL) {
        return JINN_ENOMEM;
    }
    if (s->dir != NULL && (rs->dir.dir = jinn_strdup(s->dir)) == NULL) {
        jinn_free(rs);
        return JINN_ENOMEM;
    }
    rs->count = count;
    jinn_rbuf_get_u32(r);
    for (; written < count; written++) {
        const uint8_t *name_p, *image;
        char *name = rs->names[written], path[4400];
        size_t name_len = jinn_rbuf_get_bytes(r, &name_p, JINN_SQL_DB_MAX);
        size_t len = jinn_rbuf_get_bytes(r, &image, UINT32_MAX);
        memcpy(name, name_p, name_len);
        name[name_len] = '\0';
        path_of(&rs->dir, name, ".restore", path, sizeof path);
        remove_db_files(&rs->dir, name, ".restore");
        if (write_file(path, image, len) != 0) {
            jinn_error("sql: cannot write %s: %s; the old databases stay", path,
                       strerror(errno));
            rv = JINN_EIO;
            written++; /* its partial file is removed too */
            break;
        }
        if (!image_readable(&rs->dir, name)) {
            /* Checked before the swap, so the old databases stay. */
            jinn_error("sql: the snapshot's image of %s is not a readable database; "
                       "the old databases stay",
                       name);
            rv = JINN_ECORRUPT;
            written++;
            break;
        }
    }
    if (rv != 0) {
        rs->count = written;
        jinn_sql_restore_free(rs);
        return rv;
    }
    *out = rs;
    return 0;
}

void jinn_sql_restore_swap(struct jinn_sql *s, struct jinn_sql_restore *rs)
{
    /* Point of no return: swap. */
    /* From here a failure would leave the FSM's old in-memory state over
     * half-swapped files (and the next exec on a missing database would
     * create it empty): stop instead; a restart rebuilds from the
     * snapshot and log. */
    if (s->dir == NULL) {
        rs->swapped = true;
        return; /* no databases (checked when written) */
    }
    close_all(s);
    s->generation++;
    if (wipe_dir(s, true) != 0) {
        jinn_fsm_fatal("sql: cannot clear %s to restore a snapshot", s->dir);
    }
    for (uint32_t i = 0; i < rs->count; i++) {
        const char *name = rs->names[i];
        char from[4400], to[4400];
        path_of(s, name, ".restore", from, sizeof from);
        path_of(s, name, "", to, sizeof to);
        if (rename(from, to) != 0 || open_db(s, name) == NULL) {
            jinn_fsm_fatal("sql: cannot restore database %s (%s) after swapping images in",
                           name, strerror(errno));
        }
    }
    rs->swapped = true;
}

void jinn_sql_restore_free(struct jinn_sql_restore *rs)
{
    if (rs == NULL) {
        return;
    }
    for (uint32_t i = 0; !rs->swapped && i < rs->count; i++) {
        remove_db_files(&rs->dir, rs->names[i], ".restore");
    }
    jinn_free(rs->dir.dir);
    jinn_free(rs);
}

int jinn_sql_decode(struct jinn_sql *s, struct jinn_rbuf *r)
{
    struct jinn_sql_restore *rs;
    int rv = jinn_sql_restore_write(s, r, &rs);
    if (rv == 0) {
        jinn_sql_restore_swap(s, rs);
        jinn_sql_restore_free(rs);
    }
    return rv;
}
