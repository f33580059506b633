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
    /* The test machine's /tmp has room for 32 MiB. */
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
