/* test_disk.c - the free-space rules: when the disk counts as full, the
 * start check, and the min_free_space directive. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "disk.h"
#include "error.h"
#include "unit.h"

#define MIB (UINT64_C(1) << 20)

TEST(disk_full_below_reserve_with_hysteresis)
{
    uint64_t r = 64 * MIB;
    CHECK(!jinn_disk_decide(false, r, r));
    CHECK(jinn_disk_decide(false, r - 1, r));
    /* Once full, it stays full until reserve + reserve/16 is free. */
    CHECK(jinn_disk_decide(true, r, r));
    CHECK(jinn_disk_decide(true, r + 4 * MIB - 1, r));
    CHECK(!jinn_disk_decide(true, r + 4 * MIB, r));
    /* Small reserves get a 1 MiB margin. */
    CHECK(jinn_disk_decide(true, 2 * MIB - 1, MIB));
    CHECK(!jinn_disk_decide(true, 2 * MIB, MIB));
    /* 0 disables the reserve. */
    CHECK(!jinn_disk_decide(false, 0, 0));
    CHECK(!jinn_disk_decide(true, 0, 0));
}

TEST(disk_start_check_and_open_segments)
{
    char dir[] = "/tmp/jinn-unit-disk-XXXXXX";
    char path[128];
    int fd;
    CHECK(mkdtemp(dir) != NULL);
    CHECK_INT(jinn_disk_open_segment_bytes(dir), 0);
    snprintf(path, sizeof path, "%s/open-1", dir);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    CHECK_INT(posix_fallocate(fd, 0, (off_t)MIB), 0);
    close(fd);
    snprintf(path, sizeof path, "%s/0000000000000001-0000000000000001", dir);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    CHECK(fd >= 0);
    CHECK_INT(posix_fallocate(fd, 0, (off_t)MIB), 0);
    close(fd);
    /* Only open segments count (libraft gives their space back at start). */
    CHECK(jinn_disk_open_segment_bytes(dir) >= MIB);
    CHECK(jinn_disk_open_segment_bytes(dir) < 2 * MIB);
    /* The test machine's /tmp has room for 25 MiB. */
    CHECK_INT(jinn_disk_check_start(dir), 0);
    CHECK_INT(jinn_disk_check_start("/nonexistent/jinn/dir"), JINN_EIO);
    unlink(path);
    snprintf(path, sizeof path, "%s/open-1", dir);
    unlink(path);
    rmdir(dir);
}

TEST(config_min_free_space)
{
    struct jinn_config cfg;
    struct jinn_config_error err;
    static const char ok[] = "{\n min_free_space 1GiB\n}\n";
    static const char off[] = "{\n min_free_space 0\n}\n";
    static const char bad[] = "{\n min_free_space lots\n}\n";

    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK(cfg.min_free_space == 64 * MIB);
    CHECK_INT(jinn_config_parse(&cfg, "t", ok, sizeof ok - 1, &err), 0);
    CHECK(cfg.min_free_space == 1024 * MIB);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", off, sizeof off - 1, &err), 0);
    CHECK(cfg.min_free_space == 0);
    jinn_config_free(&cfg);
    CHECK_INT(jinn_config_defaults(&cfg), 0);
    CHECK_INT(jinn_config_parse(&cfg, "t", bad, sizeof bad - 1, &err), JINN_ECONFIG);
    CHECK_INT(err.line, 2);
    jinn_config_free(&cfg);
}

static int write_file(const char *path, const unsigned char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        return -1;
    }
    if (fwrite(data, 1, n, f) != n) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* A truncated compressed snapshot hangs libraft 0.15 at start: the check
 * must catch every truncation of a whole frame and pass the whole one. */
TEST(disk_snapshot_check_catches_every_truncation)
{
    /* magic, FLG (v01, independent blocks, content size, content checksum),
     * BD, content size 10, HC, an uncompressed 5-byte block, a compressed
     * 3-byte block, end mark, content checksum. */
    static const unsigned char frame[] = {0x04, 0x22, 0x4d, 0x18, 0x6c, 0x70, 10, 0, 0,    0,
                                          0,    0,    0,    0,    0xaa, 5,    0,  0, 0x80, 'h',
                                          'e',  'l',  'l',  'o',  3,    0,    0,  0, 0x50, 'w',
                                          'o',  0,    0,    0,    0,    1,    2,  3, 4};
    static const unsigned char plain[] = "JINNSNAP not compressed";
    char dir[] = "/tmp/jinn-unit-snap-XXXXXX";
    char path[128], name[128];

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/snapshot-1-48-1621295", dir);
    CHECK_INT(write_file(path, frame, sizeof frame), 0);
    CHECK_INT(jinn_disk_check_snapshots(dir), 0);
    for (size_t n = 0; n < sizeof frame; n++) {
        CHECK_INT(write_file(path, frame, n), 0);
        CHECK_INT(jinn_disk_check_snapshots(dir), n < 4 ? 0 : JINN_ECORRUPT);
    }
    /* Not LZ4 (jinn's own CRC checks those), and .meta files: left alone. */
    CHECK_INT(write_file(path, plain, sizeof plain), 0);
    CHECK_INT(jinn_disk_check_snapshots(dir), 0);
    snprintf(name, sizeof name, "%s/snapshot-1-48-1621295.meta", dir);
    CHECK_INT(write_file(name, frame, 9), 0);
    CHECK_INT(jinn_disk_check_snapshots(dir), 0);
    /* The newest snapshot is the one libraft loads first. */
    jinn_disk_newest_snapshot(dir, name, sizeof name);
    CHECK_STR(name, "snapshot-1-48-1621295");
    snprintf(name, sizeof name, "%s/snapshot-2-10-5", dir);
    CHECK_INT(write_file(name, plain, sizeof plain), 0);
    jinn_disk_newest_snapshot(dir, name, sizeof name);
    CHECK_STR(name, "snapshot-2-10-5");
    unlink(path);
    snprintf(path, sizeof path, "%s/snapshot-1-48-1621295.meta", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/snapshot-2-10-5", dir);
    unlink(path);
    rmdir(dir);
}
