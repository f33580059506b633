/* bench_sandbox.c - warm invocation round trip of `jinn sandbox`, measured
 * from a C client over the socketpair (what wasm/pool.c pays per call,
 * without the event loop).
 *
 * Usage: bench_sandbox JINN SO N [STDIN]   prints "N calls, X us/call,
 * p50 Y us, p99 Z us". Host calls are answered with result 3, data "xyz". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int fd;

static void rd(void *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) {
            fprintf(stderr, "bench: sandbox closed\n");
            exit(1);
        }
        p = (char *)p + r;
        n -= (size_t)r;
    }
}

static void wr(const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n) {
        fprintf(stderr, "bench: write failed\n");
        exit(1);
    }
}

static uint8_t buf[1 << 25];

static uint8_t frame(uint32_t *len)
{
    uint32_t n;
    rd(&n, 4);
    if (n < 1 || n > sizeof buf) {
        exit(1);
    }
    rd(buf, n);
    *len = n - 1;
    return buf[0];
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int sv[2], n;
    uint8_t inv[256], reply[] = {12, 0, 0, 0, 2, 3, 0, 0, 0, 3, 0, 0, 0, 'x', 'y', 'z'};
    const char *in = argc > 4 ? argv[4] : "{\"method\":\"GET\"}";
    uint32_t len, k = 0, inlen = (uint32_t)strlen(in);
    double *t;
    pid_t pid;

    if (argc < 4 || (n = atoi(argv[3])) <= 0 || inlen > 200) {
        fprintf(stderr, "usage: bench_sandbox JINN SO N [STDIN]\n");
        return 2;
    }
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pid = fork();
    if (pid == 0) {
        dup2(sv[1], 3);
        execl(argv[1], argv[1], "sandbox", argv[2], "67108864", "0", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    fd = sv[0];
    if (frame(&len) != 10) {
        return 1;
    }
    /* INVOKE: id, 1 arg "fn", 0 env, stdin */
    k = 4;
    inv[k++] = 1;
    memset(inv + k, 0, 8), k += 8;
    memcpy(inv + k, "\1\0\0\0\2\0\0\0fn\0\0\0\0", 14), k += 14;
    memcpy(inv + k, &inlen, 4), k += 4;
    memcpy(inv + k, in, inlen), k += inlen;
    len = k - 4;
    memcpy(inv, &len, 4);
    t = calloc((size_t)n, sizeof *t);
    for (int i = -200; i < n; i++) {
        double t0 = now_us();
        uint8_t type;
        wr(inv, k);
        while ((type = frame(&len)) != 13) {
            if (type == 11 && buf[1] != 1) {
                wr(reply, sizeof reply);
            }
        }
        if (i >= 0) {
            t[i] = now_us() - t0;
        }
    }
    {
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += t[i];
        }
        qsort(t, (size_t)n, sizeof *t, cmp);
        printf("%d calls, %.1f us/call, p50 %.1f us, p99 %.1f us\n", n, sum / n, t[n / 2],
               t[(size_t)n * 99 / 100]);
    }
    close(fd);
    waitpid(pid, NULL, 0);
    free(t);
    return 0;
}
