/* disk.c - see disk.h. */
#include "disk.h"

#include <dirent.h>
#include <stdlib.h>
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
                  "accepted again",
                  d->dir, free_bytes);
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

/* "snapshot-TERM-INDEX-TIME" (no ".meta"): 0 and the numbers, or -1. */
static int parse_snapshot_name(const char *name, unsigned long long v[3])
{
    int n = 0;
    if (strlen(name) > 100 || strstr(name, ".meta") != NULL ||
        sscanf(name, "snapshot-%llu-%llu-%llu%n", &v[0], &v[1], &v[2], &n) != 3 ||
        name[n] != '\0') {
        return -1;
    }
    return 0;
}

void jinn_disk_newest_snapshot(const char *dir, char *out, size_t size)
{
    unsigned long long best[3] = {0, 0, 0}, v[3];
    DIR *dp = opendir(dir);
    struct dirent *e;

    out[0] = '\0';
    if (dp == NULL) {
        return;
    }
    while ((e = readdir(dp)) != NULL) {
        if (parse_snapshot_name(e->d_name, v) != 0) {
            continue;
        }
        if (out[0] == '\0' || v[0] > best[0] || (v[0] == best[0] && v[1] > best[1]) ||
            (v[0] == best[0] && v[1] == best[1] && v[2] > best[2])) {
            memcpy(best, v, sizeof best);
            snprintf(out, size, "%s", e->d_name);
        }
    }
    closedir(dp);
}

/* LZ4 frame magic, little-endian. libraft writes one frame per snapshot. */
static const unsigned char lz4_magic[4] = {0x04, 0x22, 0x4d, 0x18};

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Walks an LZ4 frame's block headers (a few reads: blocks are up to 4 MiB)
 * and checks that the end mark and content checksum end the file exactly.
 * 0 when complete or not LZ4 (jinn's own CRC checks that at restore). */
static int check_snapshot_file(const char *path)
{
    unsigned char head[7], word[4];
    struct stat st;
    uint64_t pos, size;
    int rv = -1;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        return 0; /* gone or unreadable: libraft reports it */
    }
    if (fstat(fileno(f), &st) != 0 || fread(head, 1, 4, f) != 4 ||
        memcmp(head, lz4_magic, 4) != 0) {
        rv = 0;
        goto out;
    }
    if (fread(head + 4, 1, 2, f) != 2) {
        goto out; /* the frame header itself is cut */
    }
    size = (uint64_t)st.st_size;
    /* magic, FLG, BD, [content size 8], [dict id 4], HC */
    pos = 6 + ((head[4] & 0x08) ? 8 : 0) + ((head[4] & 0x01) ? 4 : 0) + 1;
    for (;;) {
        uint32_t n;
        if (pos + 4 > size || fseeko(f, (off_t)pos, SEEK_SET) != 0 ||
            fread(word, 1, 4, f) != 4) {
            goto out;
        }
        n = le32(word);
        pos += 4;
        if (n == 0) {
            rv = pos + ((head[4] & 0x04) ? 4 : 0) == size ? 0 : -1;
            goto out;
        }
        pos += (n & 0x7fffffffu) + ((head[4] & 0x10) ? 4 : 0);
    }
out:
    fclose(f);
    return rv;
}

int jinn_disk_check_snapshots(const char *dir)
{
    unsigned long long v[3];
    char path[4200];
    struct dirent *e;
    int rv = 0;
    DIR *dp = opendir(dir);

    if (dp == NULL) {
        return 0;
    }
    while (rv == 0 && (e = readdir(dp)) != NULL) {
        if (parse_snapshot_name(e->d_name, v) != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (check_snapshot_file(path) != 0) {
            jinn_error("snapshot %s is truncated (its LZ4 frame ends early): the data_dir "
                       "is damaged and the node will not start; see \"Full and failing "
                       "disks\" in docs/operations.md",
                       path);
            rv = JINN_ECORRUPT;
        }
    }
    closedir(dp);
    return rv;
}
