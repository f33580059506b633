/* sink.c - stream consumers for bench/replica: what N edge replicas cost
 * the nodes, without their apply CPU on this machine.
 *
 * Opens --streams WebSockets to GET /v1/stream (spread round-robin over the
 * --url list, from=0 as a new replica), reads everything the nodes send for
 * --duration seconds and checks it as a replica would: every 'E' record's
 * prev must equal the stream's position (a snapshot 'S' sets it). Pings are
 * answered. Prints one JSON line: records and bytes received, messages,
 * chain breaks (must be 0), streams closed by the node (cut off), and the
 * streams still open at the end. SIGTERM ends it early (with the same line).
 *
 * A real replica also applies every record; on one 2-core machine sixteen of
 * them take the CPU the nodes would be idle in, which is not the nodes'
 * cost of feeding them (bench/README.md, "Edge replicas").
 *
 * --pace MS: after each round of reads, sleep MS milliseconds. The nodes'
 * sends then find no reader waiting on the socket and wake nobody: what the
 * node pays for a send is its own part (on another machine a replica's
 * wake-up costs that machine), and the sink's own CPU and wake-ups, which
 * here take turns with the nodes on the same two cores, fall to a few per
 * cent of one core's time. Records wait in the socket buffers meanwhile
 * (at most MS ms of the feed; the kernel's buffers hold far more).
 *
 *   build/bench/sink --url http://127.0.0.1:8081 --streams 16 --duration 5
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_URLS 8
#define MAX_STREAMS 256
#define READ_CHUNK (256u << 10)
#define MESSAGE_MAX (1ull << 32) /* a snapshot in this bench is far smaller */

struct stream {
    int fd;
    bool open;
    bool snapshot_seen;
    uint8_t *in;        /* bytes read, not yet a whole frame */
    size_t in_len, in_cap;
    uint8_t *msg;       /* the message being joined from frames */
    size_t msg_len, msg_cap;
    int msg_op;
    uint64_t pos;
};

struct totals {
    uint64_t records, bytes, messages, breaks, closed, snapshots;
};

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static void *grow(void *p, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return p;
    }
    size_t c = *cap ? *cap : 4096;
    while (c < need) {
        c *= 2;
    }
    void *q = realloc(p, c);
    if (q == NULL) {
        fprintf(stderr, "sink: out of memory\n");
        exit(1);
    }
    *cap = c;
    return q;
}

static int connect_stream(const char *url, int i)
{
    char host[256], req[512], head[4096];
    int port, fd, n;
    size_t got = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (sscanf(url, "http://%255[^:]:%d", host, &port) != 2 &&
        sscanf(url, "ws://%255[^:]:%d", host, &port) != 2) {
        fprintf(stderr, "sink: --url must be http://HOST:PORT or ws://HOST:PORT\n");
        exit(2);
    }
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "sink: %s is not an IPv4 address\n", host);
        exit(2);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("sink: connect");
        exit(1);
    }
    n = snprintf(req, sizeof req,
                 "GET /v1/stream?from=0&name=sink%d HTTP/1.1\r\nHost: %s:%d\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                 i, host, port);
    if (write(fd, req, (size_t)n) != n) {
        perror("sink: write");
        exit(1);
    }
    /* the 101 head, byte by byte so no frame byte is taken with it */
    while (got < sizeof head - 1) {
        if (read(fd, head + got, 1) != 1) {
            fprintf(stderr, "sink: handshake: connection closed\n");
            exit(1);
        }
        got++;
        if (got >= 4 && memcmp(head + got - 4, "\r\n\r\n", 4) == 0) {
            break;
        }
    }
    head[got] = '\0';
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "sink: handshake refused: %.80s\n", head);
        exit(1);
    }
    return fd;
}

/* A masked frame from the client (RFC 6455 5.3); the mask is fixed: the
 * node does not care which. */
static void send_control(struct stream *s, int op, const uint8_t *p, size_t n)
{
    uint8_t f[2 + 4 + 125];
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    if (n > 125) {
        n = 125;
    }
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(0x80 | n);
    memcpy(f + 2, mask, 4);
    for (size_t i = 0; i < n; i++) {
        f[6 + i] = p[i] ^ mask[i % 4];
    }
    if (write(s->fd, f, 6 + n) < 0) {
        s->open = false;
    }
}

static void on_message(struct stream *s, struct totals *t)
{
    t->messages++;
    if (s->msg_op != 2 || s->msg_len == 0) {
        return; /* hello and heartbeats */
    }
    if (s->msg[0] == 'S' && s->msg_len >= 9) {
        s->pos = get_le(s->msg + 1, 8);
        s->snapshot_seen = true;
        t->snapshots++;
        return;
    }
    if (s->msg[0] != 'E' || s->msg_len < 5) {
        t->breaks++;
        return;
    }
    uint64_t count = get_le(s->msg + 1, 4);
    size_t off = 5;
    for (uint64_t k = 0; k < count; k++) {
        if (s->msg_len - off < 20) {
            t->breaks++;
            return;
        }
        uint64_t index = get_le(s->msg + off, 8), prev = get_le(s->msg + off + 8, 8);
        uint64_t len = get_le(s->msg + off + 16, 4);
        if (len > s->msg_len - off - 20) {
            t->breaks++;
            return;
        }
        if (!s->snapshot_seen || prev != s->pos) {
            t->breaks++;
        }
        s->pos = index;
        t->records++;
        off += 20 + len;
    }
}

/* Takes the whole frames in s->in. */
static void frames(struct stream *s, struct totals *t)
{
    size_t off = 0;
    while (s->open) {
        const uint8_t *p = s->in + off;
        size_t left = s->in_len - off, h = 2;
        uint64_t n;
        if (left < 2) {
            break;
        }
        int fin = p[0] >> 7, op = p[0] & 15;
        n = p[1] & 127;
        if (n == 126) {
            h = 4;
        } else if (n == 127) {
            h = 10;
        }
        if (left < h) {
            break;
        }
        if (n == 126) {
            n = (uint64_t)p[2] << 8 | p[3];
        } else if (n == 127) {
            n = 0;
            for (int i = 0; i < 8; i++) {
                n = n << 8 | p[2 + i];
            }
        }
        if (n > MESSAGE_MAX) {
            fprintf(stderr, "sink: frame of %" PRIu64 " bytes\n", n);
            exit(1);
        }
        if (left - h < n) {
            break;
        }
        const uint8_t *pl = p + h;
        if (op == 8) { /* close: the node cut this stream */
            t->closed++;
            s->open = false;
        } else if (op == 9) {
            send_control(s, 10, pl, (size_t)n);
        } else if (op == 0 || op == 1 || op == 2) {
            if (op != 0) {
                s->msg_op = op;
                s->msg_len = 0;
            }
            s->msg = grow(s->msg, &s->msg_cap, s->msg_len + (size_t)n);
            memcpy(s->msg + s->msg_len, pl, (size_t)n);
            s->msg_len += (size_t)n;
            if (fin) {
                on_message(s, t);
            }
        }
        off += h + (size_t)n;
    }
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
}

int main(int argc, char **argv)
{
    const char *urls[MAX_URLS];
    int n_urls = 0, n = 16, pace_ms = 0;
    double duration = 5;
    static struct stream ss[MAX_STREAMS];
    static struct pollfd pf[MAX_STREAMS];
    struct totals t = {0};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0 && n_urls < MAX_URLS) {
            urls[n_urls++] = argv[i + 1];
        } else if (strcmp(argv[i], "--streams") == 0) {
            n = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--duration") == 0) {
            duration = atof(argv[i + 1]);
        } else if (strcmp(argv[i], "--pace") == 0) {
            pace_ms = atoi(argv[i + 1]);
        } else {
            fprintf(stderr, "usage: sink --url URL [--url URL...] --streams N --duration S "
                            "[--pace MS]\n");
            return 2;
        }
    }
    if (n_urls == 0 || n < 1 || n > MAX_STREAMS || pace_ms < 0 || pace_ms > 1000) {
        fprintf(stderr, "usage: sink --url URL [--url URL...] --streams N (1..%d) --duration S\n",
                MAX_STREAMS);
        return 2;
    }
    for (int i = 0; i < n; i++) {
        ss[i].fd = connect_stream(urls[i % n_urls], i);
        ss[i].open = true;
    }
    struct sigaction sa = {.sa_handler = on_term}; /* no SA_RESTART: poll returns */
    sigaction(SIGTERM, &sa, NULL);
    double end = now_s() + duration;
    while (!stop && now_s() < end) {
        int open = 0;
        for (int i = 0; i < n; i++) {
            pf[i].fd = ss[i].open ? ss[i].fd : -1;
            pf[i].events = POLLIN;
            open += ss[i].open;
        }
        if (open == 0) {
            break;
        }
        int ms = (int)((end - now_s()) * 1000) + 1;
        if (poll(pf, (nfds_t)n, ms) < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("sink: poll");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct stream *s = &ss[i];
            if (!s->open || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            s->in = grow(s->in, &s->in_cap, s->in_len + READ_CHUNK);
            ssize_t r = read(s->fd, s->in + s->in_len, READ_CHUNK);
            if (r <= 0) {
                t.closed++;
                s->open = false;
                continue;
            }
            s->in_len += (size_t)r;
            t.bytes += (uint64_t)r;
            frames(s, &t);
        }
        if (pace_ms > 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)pace_ms * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop) {
            }
        }
    }
    int open = 0;
    for (int i = 0; i < n; i++) {
        open += ss[i].open;
        close(ss[i].fd);
        free(ss[i].in);
        free(ss[i].msg);
    }
    printf("{\"streams\":%d,\"open_at_end\":%d,\"closed\":%" PRIu64 ",\"records\":%" PRIu64
           ",\"bytes\":%" PRIu64 ",\"messages\":%" PRIu64 ",\"snapshots\":%" PRIu64
           ",\"chain_breaks\":%" PRIu64 "}\n",
           n, open, t.closed, t.records, t.bytes, t.messages, t.snapshots, t.breaks);
    return t.breaks == 0 ? 0 : 1;
}
