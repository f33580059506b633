/* disk.c - see disk.h. */
#include "disk.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "error.h"
#include "log.h"

#define MIB (UINT64_C(1) << 20)

int jinn_disk_space(const char *dir, uint64_t *free_bytes, uint64_t *total_bytes)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) {
        return -1;
    }
    *free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    *total_bytes = (uint64_t)vfs.f_blocks * (uint64_t)vfs.f_frsize;
    return 0;
}

uint64_t jinn_disk_open_segment_bytes(const char *dir)
{
    uint64_t total = 0;
    DIR *dp = opendir(dir);
    struct dirent *e;
    char path[4200];
    struct stat st;

    if (dp == NULL) {
        return 0;
    }
    while ((e = readdir(dp)) != NULL) {
        if (strncmp(e->d_name, "open-", 5) != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            total += (uint64_t)st.st_blocks * 512u;
        }
    }
    closedir(dp);
    return total;
}

bool jinn_disk_decide(bool was_full, uint64_t free_bytes, uint64_t reserve)
{
    uint64_t margin = reserve / 16 > MIB ? reserve / 16 : MIB;
    if (reserve == 0) {
        return false;
    }
    if (!was_full) {
        return free_bytes < reserve;
    }
    return free_bytes < reserve + margin;
}

int jinn_disk_check_start(const char *dir)
{
    uint64_t free_bytes, total, reclaim;

    if (jinn_disk_space(dir, &free_bytes, &total) != 0) {
        jinn_error("cannot read free space of data_dir %s: %s", dir, strerror(errno));
        return JINN_EIO;
    }
    reclaim = jinn_disk_open_segment_bytes(dir);
    if (free_bytes + reclaim < JINN_DISK_MIN_BYTES) {
        jinn_error("data_dir %s: %" PRIu64 " bytes free (%" PRIu64 " MiB of %" PRIu64
                   " MiB), jinn needs at least %" PRIu64 " MiB (libraft preallocates three "
                   "%" PRIu64 " MiB log segments); free space or move data_dir",
                   dir, free_bytes + reclaim, (free_bytes + reclaim) / MIB, total / MIB,
                   JINN_DISK_MIN_BYTES / MIB, JINN_DISK_SEGMENT_BYTES / MIB);
        return JINN_ENOSPACE;
    }
    return 0;
}

static void sample(struct jinn_disk *d)
{
    uint64_t free_bytes, total;
    bool full;

    if (jinn_disk_space(d->dir, &free_bytes, &total) != 0) {
        if (!d->error_logged) {
            jinn_error("cannot read free space of data_dir %s: %s", d->dir, strerror(errno));
            d->error_logged = true;
        }
        return; /* keep the last answer */
    }
    d->error_logged = false;
    d->free_bytes = free_bytes;
    d->total_bytes = total;
    full = jinn_disk_decide(d->full, free_bytes, d->reserve);
    if (full && !d->full) {
        jinn_error("disk full: data_dir %s has %" PRIu64 " bytes free, below min_free_space "
                   "%" PRIu64 "; writes are refused (507 no_space) until space is freed",
                   d->dir, free_bytes, d->reserve);
    } else if (!full && d->full) {
        jinn_info("disk space recovered: data_dir %s has %" PRIu64 " bytes free; writes "
                  "accepted again", d->dir, free_bytes);
    }
    d->full = full;
}

static void timer_cb(uv_timer_t *t)
{
    sample(t->data);
}

void jinn_disk_start(struct jinn_disk *d, uv_loop_t *loop, const char *dir, uint64_t reserve)
{
    d->dir = dir;
    d->reserve = reserve;
    sample(d);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, timer_cb, JINN_DISK_CHECK_MS, JINN_DISK_CHECK_MS);
    d->timer_ready = true;
}

void jinn_disk_stop(struct jinn_disk *d)
{
    if (d->timer_ready) {
        d->timer_ready = false;
        uv_timer_stop(&d->timer);
        uv_close((uv_handle_t *)&d->timer, NULL);
    }
}
