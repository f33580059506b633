/* disk.h - free space on data_dir: the start check and the write reserve.
 *
 * libraft 0.15 preallocates its open log segments (8 MiB each, one in use
 * and a pool of two) and crashes (SIGSEGV in its append path) when it cannot
 * create one because the disk is full; an append that fails on ENOSPC
 * leaves proposals with an unknown outcome. jinn therefore keeps libraft
 * away from a full disk: a node refuses to start when data_dir cannot hold
 * JINN_DISK_MIN_BYTES, and while free space is below min_free_space the
 * leader proposes nothing (writes answer 507 no_space), so the reserve is
 * left for what raft itself must still store (heartbeat-era barriers,
 * entries replicated from another leader, snapshots). */
#ifndef JINN_DISK_H
#define JINN_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* libraft's default open segment size (raft_uv_set_segment_size). */
#define JINN_DISK_SEGMENT_BYTES (UINT64_C(8) << 20)
/* What a node needs to start: three preallocated open segments (one in
 * use plus libraft's pool of two) and 1 MiB for the metadata files and
 * the first closed segments. Measured: a fresh node holds 24 MiB of
 * segments after its first write. Not more: a node that stopped with a
 * full disk gets its 24 MiB of open segments back and must be able to
 * start again (below min_free_space, serving reads). */
#define JINN_DISK_MIN_BYTES (3 * JINN_DISK_SEGMENT_BYTES + (UINT64_C(1) << 20))
/* How often free space is looked at (one statvfs, a few microseconds). */
#define JINN_DISK_CHECK_MS 250u

struct jinn_disk {
    const char *dir;  /* borrowed: the data_dir */
    uint64_t reserve; /* min_free_space; 0 disables the write reserve */
    uint64_t free_bytes;
    uint64_t total_bytes;
    bool full;         /* free_bytes below the reserve: writes refused */
    bool error_logged; /* statvfs failing, logged once */
    bool timer_ready;
    uv_timer_t timer;
};

/* Free and total bytes of the file system holding dir (statvfs, bytes
 * available to unprivileged users). 0 or -1 with errno set. */
int jinn_disk_space(const char *dir, uint64_t *free_bytes, uint64_t *total_bytes);

/* Bytes held by libraft's open segments (open-N) in dir: libraft
 * finalises them at start, so a restart gets that space back. */
uint64_t jinn_disk_open_segment_bytes(const char *dir);

/* Whether the disk is full, given the previous answer: full below reserve,
 * and full again only once free space is back above reserve plus a margin
 * (reserve/16, at least 1 MiB) so one segment's churn does not flap. */
bool jinn_disk_decide(bool was_full, uint64_t free_bytes, uint64_t reserve);

/* The start check: 0 when dir (already created) can hold
 * JINN_DISK_MIN_BYTES; else logs why and returns JINN_ENOSPACE (or JINN_EIO
 * when free space cannot be read). */
int jinn_disk_check_start(const char *dir);

/* Samples now, then every JINN_DISK_CHECK_MS on loop; logs once when the
 * disk becomes full and once when it recovers. */
void jinn_disk_start(struct jinn_disk *d, uv_loop_t *loop, const char *dir, uint64_t reserve);
/* Stops the timer (the handle is closed; d must live until the loop has
 * run once more). */
void jinn_disk_stop(struct jinn_disk *d);

#endif

/* Checks what libraft 0.15 cannot check safely before it loads data_dir: a
 * truncated LZ4-compressed snapshot makes its decompressor loop forever,
 * so every compressed snapshot-* must hold a whole LZ4 frame (block
 * headers walked up to the end mark and content checksum). Logs the file and returns
 * JINN_ECORRUPT, or 0. */
int jinn_disk_check_snapshots(const char *dir);

/* The snapshot file libraft loads first (newest by term, index, time), in
 * out; "" when there is none. */
void jinn_disk_newest_snapshot(const char *dir, char *out, size_t size);
