/* load.c - the HTTP load generator used by bench/run.
 *
 * Keeps --conns keep-alive connections busy against one or more jinn nodes
 * (connections are spread round-robin over the --url list), each issuing
 * one request at a time for --duration seconds after --warmup seconds, and
 * prints one JSON line: ops/s, latency percentiles, errors. Workloads:
 *   put       PUT  /v1/kv/NS/k<i>        (--value-size bytes)
 *   get       GET  /v1/kv/NS/k<i>        (the namespace's default consistency)
 *   get-lin   GET  ...?consistency=linearizable
 *   get-stale GET  ...?consistency=stale
 *   cas       PUT  with If-Match on a few hot keys (412s count as done)
 *   lock      acquire + release of a lock per connection (one op = the pair)
 *   lock-hot  every connection contends for one lock; one op = one grant
 *             (acquire + release); refused attempts are retried
 *   sql-insert  POST /v1/sql/NS/exec: one single-row INSERT into t(v) per op
 *   sql-read    POST /v1/sql/NS/query?consistency=stale: SELECT by primary key
 *   publish   POST /v1/queues/NS (--value-size bytes)
 *   consume   fetch up to 8 jobs of queue NS, ack each; one op = one ack
 *   fn        GET --path (a function, e.g. /fn/hello) on keep-alive connections
 *   post      POST --path with a --value-size body (e.g. /v1/functions/F/jobs);
 *             with --batch N the body is N lines of application/x-ndjson, each
 *             a JSON string of --value-size bytes (a batch of N jobs: one op)
 * Keys k0..k<keys-1> are chosen round-robin per connection.
 * --rate R paces the whole run to R requests/s (each connection sends its
 * next request on its own schedule, start + i * conns / R, or at once when
 * behind it), so a target rate can be held while something else is measured
 * (bench/replica's lag); ops_per_s says the rate reached.
 *
 * --target etcd speaks etcd's v3 HTTP/JSON gateway instead (put, get-lin,
 * get-stale, cas, lock: the lock service with one lease per connection),
 * so bench/compare drives every system with the same generator.
 *
 *   build/bench/load --url http://127.0.0.1:8081 --workload put --conns 64
 */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "codec.h"
#include "fetch.h"
#include "httpmsg.h"

#define MAX_URLS 8
#define MAX_CONNS 4096
#define BUF_SIZE 65536
#define MAX_SAMPLES (1u << 24)

struct options {
    bool etcd;
    const char *urls[MAX_URLS];
    int n_urls;
    const char *workload;
    const char *ns;
    const char *path; /* workload fn */
    int conns, threads, keys, value_size;
    int batch; /* post: N ndjson lines a request (0: the raw body) */
    double duration, warmup;
    double rate; /* --rate: requests/s in all (paced, open loop); 0: as fast as answered */
};

/* --cacert FILE [--cert FILE --key FILE]: https:// URLs are TLS (the
 * sockets stay blocking; SSL_pending covers records read ahead). */
static SSL_CTX *tls_ctx;

struct conn {
    int fd;
    SSL *ssl;
    int url;
    char out[2048 + 65536];
    size_t out_len, out_sent;
    char in[BUF_SIZE];
    size_t in_len;
    double started;
    double due; /* --rate: when the next request goes (0: waiting for none) */
    unsigned seq;
    unsigned long long revision; /* for cas: the last revision seen */
    unsigned long long token;    /* for lock: held token, 0 = acquiring */
    double pair_started;
    unsigned long long jobs[16]; /* for consume: fetched, not yet acked */
    int n_jobs;
    char lease[32];    /* etcd lock: this connection's lease id */
    char lock_key[256]; /* etcd lock: the key the lock service gave us */
};

static void b64(char *out, size_t cap, const char *in, size_t n)
{
    struct jinn_wbuf w;
    jinn_wbuf_init(&w);
    jinn_wbuf_put_base64(&w, in, n);
    snprintf(out, cap, "%.*s", (int)w.len, w.data ? (const char *)w.data : "");
    jinn_wbuf_free(&w);
}

/* etcd's gateway: every call is a POST of JSON. */
static void etcd_request(const struct options *o, struct conn *c, int id, unsigned key,
                         const char *value)
{
    char k[64], kb[128], vb[512], body[1400];
    const char *path = "/v3/kv/put";
    const char *w = o->workload;
    int blen, n;
    snprintf(k, sizeof k, strcmp(w, "cas") == 0 ? "hot%u" : "k%u",
             strcmp(w, "cas") == 0 ? key % 8 : key);
    b64(kb, sizeof kb, k, strlen(k));
    b64(vb, sizeof vb, value, (size_t)(o->value_size > 300 ? 300 : o->value_size));
    if (strcmp(w, "put") == 0) {
        blen = snprintf(body, sizeof body, "{\"key\":\"%s\",\"value\":\"%s\"}", kb, vb);
    } else if (strcmp(w, "get-lin") == 0 || strcmp(w, "get-stale") == 0) {
        path = "/v3/kv/range";
        blen = snprintf(body, sizeof body, "{\"key\":\"%s\"%s}", kb,
                        strcmp(w, "get-stale") == 0 ? ",\"serializable\":true" : "");
    } else if (strcmp(w, "cas") == 0) {
        path = "/v3/kv/txn";
        blen = snprintf(body, sizeof body,
                        "{\"compare\":[{\"key\":\"%s\",\"target\":\"MOD\",\"mod_revision\":"
                        "\"%llu\"}],\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":"
                        "\"%s\"}}],\"failure\":[{\"request_range\":{\"key\":\"%s\"}}]}",
                        kb, c->revision, kb, vb, kb);
    } else if (c->lease[0] == '\0') {
        path = "/v3/lease/grant";
        blen = snprintf(body, sizeof body, "{\"TTL\":60}");
    } else if (c->lock_key[0] == '\0') {
        char name[32], nb[64];
        snprintf(name, sizeof name, "L%d", id);
        b64(nb, sizeof nb, name, strlen(name));
        path = "/v3/lock/lock";
        blen = snprintf(body, sizeof body, "{\"name\":\"%s\",\"lease\":\"%s\"}", nb,
                        c->lease);
    } else {
        path = "/v3/lock/unlock";
        blen = snprintf(body, sizeof body, "{\"key\":\"%s\"}", c->lock_key);
    }
    n = snprintf(c->out, sizeof c->out,
                 "POST %s HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                 "Content-Length: %d\r\n\r\n%s",
                 path, blen, body);
    c->out_len = (size_t)n;
}

/* Copies the JSON string value of name from body into out. */
static bool json_field(const char *body, size_t len, const char *name, char *out, size_t cap)
{
    char pat[64];
    const char *p, *q;
    snprintf(pat, sizeof pat, "\"%s\":\"", name);
    p = memmem(body, len, pat, strlen(pat));
    if (p == NULL) {
        return false;
    }
    p += strlen(pat);
    q = memchr(p, '"', (size_t)(body + len - p));
    if (q == NULL || (size_t)(q - p) >= cap) {
        return false;
    }
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return true;
}

struct worker {
    const struct options *o;
    int first, count; /* connection ids */
    struct conn *conns;
    double *lat;
    size_t n_lat, cap_lat;
    unsigned long long ok, errors, precondition;
    double t_start, t_measure, t_end;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_to(const char *url)
{
    struct sockaddr_in sa;
    int fd, one = 1;
    char plain[128];
    if (strncmp(url, "https://", 8) == 0) {
        snprintf(plain, sizeof plain, "http://%s", url + 8);
        url = plain;
    }
    if (jinn_fetch_parse_url(url, &sa) != 0) {
        fprintf(stderr, "load: bad url %s\n", url);
        exit(2);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "load: connect %s: %s\n", url, strerror(errno));
        exit(1);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void build_request(const struct options *o, struct conn *c, int id)
{
    static char value[65536];
    unsigned key = (unsigned)(id * 7919 + (int)c->seq) % (unsigned)o->keys;
    const char *w = o->workload;
    int n;
    c->seq++;
    if (value[0] == 0) {
        memset(value, 'v', sizeof value);
    }
    if (o->etcd) {
        etcd_request(o, c, id, key, value);
        c->out_sent = 0;
        return;
    }
    if (strcmp(w, "fn") == 0) {
        n = snprintf(c->out, 2048, "GET %s HTTP/1.1\r\nHost: b\r\n\r\n", o->path);
        c->out_len = (size_t)n;
    } else if (strcmp(w, "sql-insert") == 0 || strcmp(w, "sql-read") == 0) {
        char body[512];
        int blen = strcmp(w, "sql-insert") == 0
                       ? snprintf(body, sizeof body,
                                  "{\"statements\":[{\"sql\":\"INSERT INTO t(v) VALUES(?)\","
                                  "\"params\":[\"%.*s\"]}]}",
                                  o->value_size > 200 ? 200 : o->value_size, value)
                       : snprintf(body, sizeof body,
                                  "{\"sql\":\"SELECT v FROM t WHERE id = ?\",\"params\":[%u]}",
                                  key + 1);
        n = snprintf(c->out, 2048,
                     "POST /v1/sql/%s/%s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s",
                     o->ns, strcmp(w, "sql-insert") == 0 ? "exec" : "query?consistency=stale",
                     blen, body);
        c->out_len = (size_t)n;
    } else if (strcmp(w, "post") == 0 && o->batch > 0) {
        /* N lines "vvv..." (value_size bytes each, quotes included) */
        size_t vs = o->value_size < 3 ? 3 : (size_t)o->value_size, blen = (size_t)o->batch * (vs + 1);
        n = snprintf(c->out, 2048,
                     "POST %s HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-ndjson\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     o->path, blen);
        for (int i = 0; i < o->batch; i++) {
            char *q = c->out + n + (size_t)i * (vs + 1);
            q[0] = '"';
            memcpy(q + 1, value, vs - 2);
            q[vs - 1] = '"';
            q[vs] = '\n';
        }
        c->out_len = (size_t)n + blen;
    } else if (strcmp(w, "post") == 0) {
        n = snprintf(c->out, 2048, "POST %s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n",
                     o->path, o->value_size);
        memcpy(c->out + n, value, (size_t)o->value_size);
        c->out_len = (size_t)n + (size_t)o->value_size;
    } else if (strcmp(w, "publish") == 0) {
        n = snprintf(c->out, 2048, "POST /v1/queues/%s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n",
                     o->ns, o->value_size);
        memcpy(c->out + n, value, (size_t)o->value_size);
        c->out_len = (size_t)n + (size_t)o->value_size;
    } else if (strcmp(w, "consume") == 0) {
        if (c->n_jobs == 0) {
            n = snprintf(c->out, 2048,
                         "POST /v1/queues/%s/fetch?worker=c%d&max=8&wait=200ms HTTP/1.1\r\n"
                         "Host: b\r\nContent-Length: 0\r\n\r\n",
                         o->ns, id);
        } else {
            n = snprintf(c->out, 2048,
                         "POST /v1/queues/%s/%llu/ack?worker=c%d HTTP/1.1\r\nHost: b\r\n"
                         "Content-Length: 0\r\n\r\n",
                         o->ns, c->jobs[c->n_jobs - 1], id);
        }
        c->out_len = (size_t)n;
    } else if (strncmp(w, "lock", 4) == 0) {
        char name[32];
        if (strcmp(w, "lock-hot") == 0) {
            snprintf(name, sizeof name, "hot");
        } else {
            snprintf(name, sizeof name, "L%d", id);
        }
        if (c->token == 0) {
            n = snprintf(c->out, 2048,
                         "POST /v1/locks/%s?owner=c%d&ttl=10s HTTP/1.1\r\nHost: b\r\n"
                         "Content-Length: 0\r\n\r\n",
                         name, id);
        } else {
            n = snprintf(c->out, 2048,
                         "DELETE /v1/locks/%s?token=%llu HTTP/1.1\r\nHost: b\r\n\r\n", name,
                         c->token);
        }
        c->out_len = (size_t)n;
    } else if (strcmp(w, "put") == 0) {
        n = snprintf(c->out, 2048, "PUT /v1/kv/%s/k%u HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n",
                     o->ns, key, o->value_size);
        memcpy(c->out + n, value, (size_t)o->value_size);
        c->out_len = (size_t)n + (size_t)o->value_size;
    } else if (strcmp(w, "cas") == 0) {
        key %= 8; /* hot keys */
        n = snprintf(c->out, 2048,
                     "PUT /v1/kv/%s/hot%u HTTP/1.1\r\nHost: b\r\nIf-Match: \"%llu\"\r\n"
                     "Content-Length: %d\r\n\r\n",
                     o->ns, key, c->revision ? c->revision : 1, o->value_size);
        memcpy(c->out + n, value, (size_t)o->value_size);
        c->out_len = (size_t)n + (size_t)o->value_size;
    } else {
        const char *q = strcmp(w, "get-lin") == 0     ? "?consistency=linearizable"
                        : strcmp(w, "get-stale") == 0 ? "?consistency=stale"
                                                      : "";
        n = snprintf(c->out, 2048, "GET /v1/kv/%s/k%u%s HTTP/1.1\r\nHost: b\r\n\r\n", o->ns,
                     key, q);
        c->out_len = (size_t)n;
    }
    c->out_sent = 0;
}

static void record(struct worker *w, double latency)
{
    if (w->n_lat == w->cap_lat && w->cap_lat < MAX_SAMPLES) {
        w->cap_lat = w->cap_lat ? w->cap_lat * 2 : 65536;
        w->lat = realloc(w->lat, w->cap_lat * sizeof *w->lat);
        if (w->lat == NULL) {
            exit(1);
        }
    }
    if (w->n_lat < w->cap_lat) {
        w->lat[w->n_lat++] = latency;
    }
}

/* Returns 1 when a whole response was consumed. */
static int consume(struct worker *w, struct conn *c, double t)
{
    struct jinn_http_limits limits = {BUF_SIZE, 0, BUF_SIZE};
    struct jinn_http_msg m;
    const char *body;
    size_t body_len, total;
    bool owned;
    if (jinn_http_parse_head(c->in, c->in_len, true, &limits, &m) != 0 ||
        jinn_http_parse_body(c->in, c->in_len, &m, BUF_SIZE, &body, &body_len, &owned,
                             &total) != 0) {
        return 0;
    }
    if (w->o->etcd) {
        bool measuring = t >= w->t_measure && t < w->t_end;
        char field[256];
        bool op_done = m.status == 200;
        if (strcmp(w->o->workload, "cas") == 0 && m.status == 200) {
            if (memmem(body, body_len, "\"succeeded\":true", 16) != NULL) {
                if (json_field(body, body_len, "revision", field, sizeof field)) {
                    c->revision = strtoull(field, NULL, 10);
                }
            } else if (json_field(body, body_len, "mod_revision", field, sizeof field)) {
                c->revision = strtoull(field, NULL, 10); /* refused: retry from here */
            }
        } else if (strcmp(w->o->workload, "lock") == 0 && m.status == 200) {
            op_done = false;
            if (c->lease[0] == '\0') {
                json_field(body, body_len, "ID", c->lease, sizeof c->lease);
            } else if (c->lock_key[0] == '\0') {
                json_field(body, body_len, "key", c->lock_key, sizeof c->lock_key);
            } else {
                c->lock_key[0] = '\0';
                op_done = true; /* acquire + release */
            }
        }
        if (measuring && m.status != 200) {
            w->errors++;
        } else if (measuring && op_done) {
            w->ok++;
            record(w, t - c->pair_started);
        }
        if (op_done || m.status != 200) {
            c->pair_started = t;
        }
        memmove(c->in, c->in + total, c->in_len - total);
        c->in_len -= total;
        return 1;
    }
    if (strcmp(w->o->workload, "consume") == 0) {
        bool measuring = t >= w->t_measure && t < w->t_end;
        if (c->n_jobs == 0 && m.status == 200) {
            const char *p = body, *end = body + body_len;
            while (c->n_jobs < 16 && (p = memmem(p, (size_t)(end - p), "\"seq\":", 6)) != NULL) {
                c->jobs[c->n_jobs++] = strtoull(p + 6, NULL, 10);
                p += 6;
            }
        } else if (c->n_jobs > 0) {
            c->n_jobs--;
            if (measuring && m.status == 200) {
                w->ok++;
                record(w, t - c->started);
            } else if (measuring) {
                w->errors++;
            }
        } else if (measuring) {
            w->errors++;
        }
        memmove(c->in, c->in + total, c->in_len - total);
        c->in_len -= total;
        return 1;
    }
    if (strncmp(w->o->workload, "lock", 4) == 0) {
        const char *tok = strstr(body, "\"token\":");
        bool measuring = t >= w->t_measure && t < w->t_end;
        if (c->token == 0 && m.status == 200 && tok != NULL && (size_t)(tok - body) < body_len) {
            c->token = strtoull(tok + 8, NULL, 10); /* granted: release next */
        } else if (c->token != 0 && m.status == 200) {
            c->token = 0; /* released: one whole op */
            if (measuring) {
                w->ok++;
                record(w, t - c->pair_started);
            }
        } else if (m.status == 409) {
            if (measuring) {
                w->precondition++; /* refused: the lock is busy; try again */
            }
        } else if (measuring) {
            w->errors++;
            c->token = 0;
        }
        if (c->token == 0) {
            c->pair_started = t;
        }
        memmove(c->in, c->in + total, c->in_len - total);
        c->in_len -= total;
        return 1;
    }
    if (t >= w->t_measure && t < w->t_end) {
        if (m.status == 200 || m.status == 201 || m.status == 202 || m.status == 404) {
            w->ok++;
            record(w, t - c->started);
        } else if (m.status == 412) {
            w->precondition++;
            w->ok++;
            record(w, t - c->started);
        } else {
            w->errors++;
        }
    }
    if (strcmp(w->o->workload, "cas") == 0) {
        const struct jinn_http_header *etag = jinn_http_header_find(&m, "etag");
        const char *rev = body ? strstr(body, "\"revision\":") : NULL;
        if (etag != NULL) {
            c->revision = strtoull(etag->value + 1, NULL, 10);
        } else if (rev != NULL && (size_t)(rev - body) < body_len) {
            c->revision = strtoull(rev + 11, NULL, 10);
        }
    }
    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;
    return 1;
}

static ssize_t c_read(struct conn *c, void *p, size_t n)
{
    return c->ssl != NULL ? SSL_read(c->ssl, p, (int)n) : read(c->fd, p, n);
}

static ssize_t c_write(struct conn *c, const void *p, size_t n)
{
    return c->ssl != NULL ? SSL_write(c->ssl, p, (int)n) : write(c->fd, p, n);
}

static void tls_connect(const struct options *o, struct conn *c)
{
    if (strncmp(o->urls[c->url], "https://", 8) != 0) {
        return;
    }
    if (tls_ctx == NULL) {
        fprintf(stderr, "load: https:// needs --cacert\n");
        exit(2);
    }
    c->ssl = SSL_new(tls_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_connect(c->ssl) != 1) {
        fprintf(stderr, "load: TLS handshake with %s failed\n", o->urls[c->url]);
        exit(1);
    }
}

/* Sends c's next request; `slot` is when it was due (paced: its latency
 * counts from there, so a late answer neither hides nor slows the
 * schedule) or now. */
static void send_next(struct worker *w, struct conn *c, double slot)
{
    build_request(w->o, c, w->first + (int)(c - w->conns));
    c->started = slot;
    if (c_write(c, c->out, c->out_len) != (ssize_t)c->out_len) {
        fprintf(stderr, "load: short write\n");
        exit(1);
    }
}

static void *run(void *arg)
{
    struct worker *w = arg;
    const struct options *o = w->o;
    int ep = epoll_create1(0);
    struct epoll_event events[256];

    for (int i = 0; i < w->count; i++) {
        struct conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        c->url = (w->first + i) % o->n_urls;
        c->fd = connect_to(o->urls[c->url]);
        tls_connect(o, c);
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        build_request(o, c, w->first + i);
        c->started = now_s();
        c->pair_started = c->started;
        if (c_write(c, c->out, c->out_len) != (ssize_t)c->out_len) {
            fprintf(stderr, "load: short write\n");
            exit(1);
        }
    }
    for (;;) {
        double t = now_s();
        int n, timeout = 100;
        if (t >= w->t_end) {
            break;
        }
        if (o->rate > 0) { /* paced connections whose time has come send now */
            for (int i = 0; i < w->count; i++) {
                struct conn *c = &w->conns[i];
                if (c->due > 0 && c->due <= t) {
                    double slot = c->due;
                    c->due = 0;
                    send_next(w, c, slot);
                } else if (c->due > 0 && (int)((c->due - t) * 1000) < timeout) {
                    timeout = (int)((c->due - t) * 1000);
                }
            }
        }
        n = epoll_wait(ep, events, 256, timeout);
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            do {
                ssize_t r = c_read(c, c->in + c->in_len, BUF_SIZE - c->in_len);
                if (r <= 0) {
                    fprintf(stderr, "load: connection closed by server\n");
                    exit(1);
                }
                c->in_len += (size_t)r;
                t = now_s();
                while (consume(w, c, t)) {
                    double slot = t;
                    if (o->rate > 0) {
                        /* its next slot; one behind schedule goes at once */
                        slot = c->started + o->conns / o->rate;
                        if (slot > t) {
                            c->due = slot;
                            break;
                        }
                    }
                    send_next(w, c, slot);
                }
            } while (c->ssl != NULL && SSL_pending(c->ssl) > 0);
        }
    }
    for (int i = 0; i < w->count; i++) {
        SSL_free(w->conns[i].ssl);
        close(w->conns[i].fd);
    }
    close(ep);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct options o = {.workload = "put", .ns = "bench", .path = "/fn/hello", .conns = 64,
                        .threads = 2,
                        .keys = 1000, .value_size = 64, .duration = 5, .warmup = 1};
    struct worker workers[16];
    pthread_t tids[16];
    double *all;
    size_t total = 0;
    unsigned long long ok = 0, errors = 0, pre = 0;
    double t0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "load: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--url") == 0 && o.n_urls < MAX_URLS) {
            o.urls[o.n_urls++] = v;
        } else if (strcmp(a, "--target") == 0) {
            o.etcd = strcmp(v, "etcd") == 0;
        } else if (strcmp(a, "--workload") == 0) {
            o.workload = v;
        } else if (strcmp(a, "--ns") == 0) {
            o.ns = v;
        } else if (strcmp(a, "--path") == 0) {
            o.path = v;
        } else if (strcmp(a, "--conns") == 0) {
            o.conns = atoi(v);
        } else if (strcmp(a, "--threads") == 0) {
            o.threads = atoi(v);
        } else if (strcmp(a, "--keys") == 0) {
            o.keys = atoi(v);
        } else if (strcmp(a, "--batch") == 0) {
            o.batch = atoi(v);
        } else if (strcmp(a, "--value-size") == 0) {
            o.value_size = atoi(v);
        } else if (strcmp(a, "--duration") == 0) {
            o.duration = atof(v);
        } else if (strcmp(a, "--warmup") == 0) {
            o.warmup = atof(v);
        } else if (strcmp(a, "--rate") == 0) {
            o.rate = atof(v);
        } else if (strcmp(a, "--cacert") == 0) {
            if (tls_ctx == NULL) {
                tls_ctx = SSL_CTX_new(TLS_client_method());
            }
            if (tls_ctx == NULL || SSL_CTX_load_verify_locations(tls_ctx, v, NULL) != 1) {
                fprintf(stderr, "load: cannot load %s\n", v);
                return 2;
            }
            SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
        } else {
            fprintf(stderr, "load: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (o.n_urls == 0 || o.conns < 1 || o.conns > MAX_CONNS || o.threads < 1 ||
        o.threads > 16 || o.keys < 1 || o.value_size < 0 || o.value_size > 65536 ||
        o.rate < 0) {
        fprintf(stderr, "load: need --url and sane limits\n");
        return 2;
    }
    if (o.batch < 0 || o.batch > 4096 ||
        (long)o.batch * (o.value_size < 3 ? 4 : o.value_size + 1) > 65536) {
        fprintf(stderr, "load: --batch x (--value-size + 1) must fit 64 KiB\n");
        return 2;
    }
    t0 = now_s();
    for (int i = 0; i < o.threads; i++) {
        struct worker *w = &workers[i];
        memset(w, 0, sizeof *w);
        w->o = &o;
        w->first = o.conns * i / o.threads;
        w->count = o.conns * (i + 1) / o.threads - w->first;
        w->conns = calloc((size_t)w->count + 1, sizeof *w->conns);
        w->t_start = t0;
        w->t_measure = t0 + o.warmup;
        w->t_end = t0 + o.warmup + o.duration;
        pthread_create(&tids[i], NULL, run, w);
    }
    for (int i = 0; i < o.threads; i++) {
        pthread_join(tids[i], NULL);
        total += workers[i].n_lat;
        ok += workers[i].ok;
        errors += workers[i].errors;
        pre += workers[i].precondition;
    }
    all = malloc((total + 1) * sizeof *all);
    total = 0;
    for (int i = 0; i < o.threads; i++) {
        memcpy(all + total, workers[i].lat, workers[i].n_lat * sizeof *all);
        total += workers[i].n_lat;
        free(workers[i].lat);
        free(workers[i].conns);
    }
    qsort(all, total, sizeof *all, cmp_double);
#define PCT(p) (total ? all[(size_t)((double)(total - 1) * (p))] * 1000.0 : 0.0)
    printf("{\"workload\":\"%s\",\"conns\":%d,\"duration_s\":%.1f,\"ops\":%llu,"
           "\"ops_per_s\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"max_ms\":%.3f,\"errors\":%llu,\"refused\":%llu}\n",
           o.workload, o.conns, o.duration, ok, (double)ok / o.duration, PCT(0.50), PCT(0.90),
           PCT(0.99), PCT(1.0), errors, pre);
    free(all);
    return errors > ok / 100 ? 1 : 0;
}
