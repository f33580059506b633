/* cli.c - see cli.h. Blocking sockets are fine here: the CLI has no event
 * loop to stall. */
#include "cli/cli.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "codec.h"
#include "error.h"
#include "fetch.h"
#include "fsm/cmd.h"
#include "fsm/fsm.h"
#include "fsm/snapfile.h"
#include "httpmsg.h"
#include "version.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

int64_t jinn_cli_timeout_ms = JINN_CLI_TIMEOUT_MS;

/* --cacert/--cert/--key/--token (or JINN_CACERT, JINN_CERT, JINN_KEY,
 * JINN_TOKEN): TLS to an https:// address, and a bearer token. */
static const char *opt_cacert, *opt_cert, *opt_key, *opt_token;

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? v : NULL;
}

int jinn_cli_global_opts(int *argc, char **argv)
{
    static const struct {
        const char *flag;
        const char **dst;
    } opts[] = {{"--cacert", &opt_cacert}, {"--cert", &opt_cert}, {"--key", &opt_key},
                {"--token", &opt_token}};
    int out = 1;
    bool rest = false, after_cert = false;
    /* `jinn token` reads --token itself: it is seen here and left. */
    bool keep_token = *argc > 1 && strcmp(argv[1], "token") == 0;
    opt_cacert = env_or_null("JINN_CACERT");
    opt_cert = env_or_null("JINN_CERT");
    opt_key = env_or_null("JINN_KEY");
    opt_token = env_or_null("JINN_TOKEN");
    for (int i = 1; i < *argc; i++) {
        bool taken = false, was_cert = false;
        int first = i;
        rest = rest || strcmp(argv[i], "--") == 0;
        for (size_t k = 0; !rest && !taken && k < sizeof opts / sizeof opts[0]; k++) {
            size_t n = strlen(opts[k].flag);
            /* --key is the client key only right after --cert FILE: other
             * commands have a --key of their own (queue pub, fn sign). */
            if (opts[k].dst == &opt_key && !after_cert) {
                continue;
            }
            if (strcmp(argv[i], opts[k].flag) == 0) {
                if (i + 1 >= *argc) {
                    fprintf(stderr, "jinn: %s needs a value\n", opts[k].flag);
                    return 2;
                }
                *opts[k].dst = argv[++i];
                taken = true;
            } else if (strncmp(argv[i], opts[k].flag, n) == 0 && argv[i][n] == '=') {
                *opts[k].dst = argv[i] + n + 1;
                taken = true;
            }
            was_cert = taken && opts[k].dst == &opt_cert;
            if (taken && keep_token && opts[k].dst == &opt_token) {
                for (int j = first; j <= i; j++) {
                    argv[out++] = argv[j];
                }
            }
        }
        after_cert = was_cert;
        if (!taken) {
            argv[out++] = argv[i];
        }
    }
    argv[out] = NULL;
    *argc = out;
    if ((opt_cert == NULL) != (opt_key == NULL)) {
        fprintf(stderr, "jinn: --cert FILE --key FILE go together, in that order "
                        "(or JINN_CERT and JINN_KEY)\n");
        return 2;
    }
    if (opt_token != NULL) {
        for (const char *c = opt_token; *c != '\0'; c++) {
            if (*c <= 0x20 || *c == 0x7f) {
                fprintf(stderr, "jinn: --token: no spaces or control characters\n");
                return 2;
            }
        }
    }
    return 0;
}
uint64_t jinn_cli_min_index;
uint64_t jinn_cli_last_index;

static void note_index(const struct jinn_http_msg *head, const char *name)
{
    const struct jinn_http_header *h = jinn_http_header_find(head, name);
    char buf[24];
    unsigned long long v;
    if (h == NULL || h->value_len == 0 || h->value_len >= sizeof buf) {
        return;
    }
    memcpy(buf, h->value, h->value_len);
    buf[h->value_len] = '\0';
    if (sscanf(buf, "%llu", &v) == 1 && v > jinn_cli_last_index) {
        jinn_cli_last_index = v;
    }
}

bool jinn_cli_help(int argc, char **argv, const char *usage)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            return false;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            if (usage[0] != '\0' && usage[strlen(usage) - 1] != '\n') {
                putchar('\n');
            }
            return true;
        }
    }
    return false;
}

struct cli_opts {
    const char *addr;
    int json;
};

static int parse_opts(int argc, char **argv, struct cli_opts *o, const char *usage)
{
    const char *env = getenv("JINN_ADDR");
    o->addr = env && *env ? env : JINN_CLI_DEFAULT_ADDR;
    o->json = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            o->json = 1;
        } else if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc) {
            o->addr = argv[++i];
        } else if (strncmp(argv[i], "--addr=", 7) == 0) {
            o->addr = argv[i] + 7;
        } else {
            fprintf(stderr, "jinn: unexpected argument '%s'\nusage: %s\n", argv[i], usage);
            return 2;
        }
    }
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events before the deadline. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd p = {fd, events, 0};
    int64_t left = deadline - mono_ms();
    int rv;
    if (left <= 0) {
        return -1;
    }
    do {
        rv = poll(&p, 1, (int)left);
    } while (rv < 0 && errno == EINTR);
    return rv == 1 ? 0 : -1;
}

void jinn_cli_escape(struct jinn_wbuf *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            jinn_wbuf_put_u8(w, c);
        } else {
            jinn_wbuf_put_u8(w, '%');
            jinn_wbuf_put_u8(w, (uint8_t)hex[c >> 4]);
            jinn_wbuf_put_u8(w, (uint8_t)hex[c & 15]);
        }
    }
}

/* One connection: a socket, and a TLS session over it for https://. */
struct conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

static void tls_err(char *err, size_t err_len, const char *addr, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    snprintf(buf, sizeof buf, "unknown error");
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    ERR_clear_error();
    snprintf(err, err_len, "%s: %s: %s", addr, what, buf);
}

/* Waits for what OpenSSL asked for. 0, or -1 on a timeout. */
static int tls_wait(struct conn *c, int r, int64_t deadline)
{
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        return wait_fd(c->fd, POLLIN, deadline);
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        return wait_fd(c->fd, POLLOUT, deadline);
    }
    return -2;
}

static int tls_open(struct conn *c, const char *addr, const char *host, int64_t deadline,
                    char *err, size_t err_len)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL) {
        tls_err(err, err_len, addr, "TLS");
        return -1;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (opt_cacert != NULL ? SSL_CTX_load_verify_locations(c->ctx, opt_cacert, NULL) != 1
                           : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
        tls_err(err, err_len, opt_cacert ? opt_cacert : "system CA store", "cannot load");
        return -1;
    }
    if (opt_cert != NULL && (SSL_CTX_use_certificate_chain_file(c->ctx, opt_cert) != 1 ||
                             SSL_CTX_use_PrivateKey_file(c->ctx, opt_key, SSL_FILETYPE_PEM) != 1 ||
                             SSL_CTX_check_private_key(c->ctx) != 1)) {
        tls_err(err, err_len, opt_cert, "client certificate/key");
        return -1;
    }
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->ssl = SSL_new(c->ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1 ||
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1) {
        tls_err(err, err_len, addr, "TLS");
        return -1;
    }
    for (;;) {
        int r = SSL_connect(c->ssl);
        int w;
        if (r == 1) {
            return 0;
        }
        w = tls_wait(c, r, deadline);
        if (w == -1) {
            snprintf(err, err_len, "%s: TLS handshake timed out", addr);
            return -1;
        }
        if (w != 0) {
            long v = SSL_get_verify_result(c->ssl);
            if (v != X509_V_OK) {
                ERR_clear_error();
                snprintf(err, err_len, "%s: server certificate not trusted: %s%s", addr,
                         X509_verify_cert_error_string(v),
                         opt_cacert == NULL ? " (give the CA with --cacert or JINN_CACERT)" : "");
                return -1;
            }
            tls_err(err, err_len, addr, "TLS handshake failed");
            return -1;
        }
    }
}

static void conn_end(struct conn *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0) {
        close(c->fd);
    }
}

/* Sends or receives up to n bytes: > 0 done, 0 end of stream (receive),
 * -1 error (errno), -2 try again after waiting (handled inside). */
const char *jinn_cli_bearer(void)
{
    return opt_token;
}

static ssize_t conn_io(struct conn *c, bool send_it, void *p, size_t n, int64_t deadline)
{
    for (;;) {
        ssize_t k;
        if (c->ssl != NULL) {
            int r = send_it ? SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n)
                            : SSL_read(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
            int w;
            if (r > 0) {
                return r;
            }
            if (!send_it && SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN) {
                return 0;
            }
            w = tls_wait(c, r, deadline);
            if (w == 0) {
                continue;
            }
            ERR_clear_error();
            errno = w == -1 ? ETIMEDOUT : EPROTO;
            if (!send_it && w == -2 && SSL_get_error(c->ssl, r) == SSL_ERROR_SYSCALL) {
                return 0; /* closed without close_notify: the parser judges */
            }
            return -1;
        }
        k = send_it ? send(c->fd, p, n, MSG_NOSIGNAL) : recv(c->fd, p, n, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(c->fd, send_it ? POLLOUT : POLLIN, deadline) != 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
        return k;
    }
}

/* Connects to addr (http://ip:port or https://ip:port: TLS with the
 * --cacert/--cert options) before deadline; *plain gets "http://ip:port"
 * (its host:port for the Host header). 0, or -1 with err filled. */
static int conn_open(struct conn *c, const char *addr, int64_t deadline, char *plain,
                     size_t plain_len, char *err, size_t err_len)
{
    struct sockaddr_in sa;
    bool https = strncmp(addr, "https://", 8) == 0;
    char host[64];
    int fd;

    c->fd = -1;
    c->ctx = NULL;
    c->ssl = NULL;
    /* https://ip:port is parsed as its http:// twin. */
    snprintf(plain, plain_len, "http://%s", https ? addr + 8 : addr + 7);
    if ((!https && strncmp(addr, "http://", 7) != 0) || jinn_fetch_parse_url(plain, &sa) != 0) {
        snprintf(err, err_len, "bad address '%s' (want http://ip:port or https://ip:port)",
                 addr);
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)strcspn(plain + 7, ":"), plain + 7);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    c->fd = fd;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        snprintf(err, err_len, "cannot reach %s: %s", addr, strerror(errno));
        return -1;
    }
    if (wait_fd(fd, POLLOUT, deadline) != 0) {
        snprintf(err, err_len, "cannot reach %s: timed out", addr);
        return -1;
    }
    {
        int soerr = 0;
        socklen_t l = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        if (soerr != 0) {
            snprintf(err, err_len, "cannot reach %s: %s", addr, strerror(soerr));
            return -1;
        }
    }
    if (https && tls_open(c, addr, host, deadline, err, err_len) != 0) {
        return -1;
    }
    return 0;
}

struct jinn_cli_stream {
    struct conn c;
};

struct jinn_cli_stream *jinn_cli_stream_open(const char *addr, int64_t timeout_ms,
                                             char *hostport, size_t hostport_len, char *err,
                                             size_t err_len)
{
    struct jinn_cli_stream *st = jinn_calloc(1, sizeof *st);
    char plain[128];
    if (st == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (conn_open(&st->c, addr, mono_ms() + timeout_ms, plain, sizeof plain, err, err_len) !=
        0) {
        conn_end(&st->c);
        jinn_free(st);
        return NULL;
    }
    snprintf(hostport, hostport_len, "%s", plain + 7);
    return st;
}

int jinn_cli_stream_send(struct jinn_cli_stream *st, const void *p, size_t n,
                         int64_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    const char *q = p;
    while (n > 0) {
        ssize_t k = conn_io(&st->c, true, (void *)(uintptr_t)q, n, deadline);
        if (k <= 0) {
            return -1;
        }
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

ssize_t jinn_cli_stream_recv(struct jinn_cli_stream *st, void *p, size_t n, int64_t timeout_ms)
{
    return conn_io(&st->c, false, p, n, mono_ms() + timeout_ms);
}

void jinn_cli_stream_close(struct jinn_cli_stream *st)
{
    if (st != NULL) {
        conn_end(&st->c);
        jinn_free(st);
    }
}

int jinn_cli_request(const char *addr, const char *method, const char *target,
                     const char *headers, const char *body, size_t body_len, int *status,
                     char **resp, size_t *resp_len, char *err, size_t err_len)
{
    struct conn conn = {-1, NULL, NULL};
    char plain[128];
    struct jinn_wbuf req, in;
    struct jinn_http_limits limits = {64u * 1024, 0, JINN_CLI_MAX_RESPONSE};
    struct jinn_http_msg head;
    int64_t deadline = mono_ms() + jinn_cli_timeout_ms;
    int rv = -1;
    size_t sent = 0;

    jinn_wbuf_init(&req);
    jinn_wbuf_init(&in);
    if (conn_open(&conn, addr, deadline, plain, sizeof plain, err, err_len) != 0) {
        goto out;
    }
    jinn_wbuf_printf(&req,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n%s",
                     method, target, plain + 7, body_len, headers ? headers : "");
    /* Scoped tokens: --token or $JINN_TOKEN on every request that names none. */
    if (opt_token != NULL && (headers == NULL || strcasestr(headers, "authorization:") == NULL)) {
        jinn_wbuf_printf(&req, "Authorization: Bearer %s\r\n", opt_token);
    }
    if (jinn_cli_min_index != 0) {
        jinn_wbuf_printf(&req, "X-Jinn-Min-Index: %llu\r\n",
                         (unsigned long long)jinn_cli_min_index);
    }
    jinn_wbuf_printf(&req, "\r\n");
    jinn_wbuf_put_raw(&req, body, body_len);
    if (req.failed) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    while (sent < req.len) {
        ssize_t n = conn_io(&conn, true, req.data + sent, req.len - sent, deadline);
        if (n < 0 && errno == ETIMEDOUT) {
            snprintf(err, err_len, "%s: timed out sending", addr);
            goto out;
        }
        if (n <= 0) {
            snprintf(err, err_len, "%s: %s", addr, strerror(errno));
            goto out;
        }
        sent += (size_t)n;
    }
    for (;;) {
        ssize_t n;
        if (!jinn_wbuf_reserve(&in, 65536)) {
            snprintf(err, err_len, "out of memory");
            goto out;
        }
        n = conn_io(&conn, false, in.data + in.len, in.cap - in.len, deadline);
        if (n < 0 && errno == ETIMEDOUT) {
            snprintf(err, err_len, "%s: timed out waiting for a reply", addr);
            goto out;
        }
        if (n < 0) {
            snprintf(err, err_len, "%s: %s", addr, strerror(errno));
            goto out;
        }
        if (n == 0) {
            break;
        }
        in.len += (size_t)n;
        if (in.len > JINN_CLI_MAX_RESPONSE) {
            snprintf(err, err_len, "%s: reply too large", addr);
            goto out;
        }
    }
    if (in.len == 0) {
        /* The node went away mid-request (it stopped, or crashed): a write
         * may or may not have taken effect. */
        snprintf(err, err_len,
                 "%s: the connection closed without an answer; the request may or may not "
                 "have taken effect",
                 addr);
        goto out;
    }
    if (jinn_http_parse_head((const char *)in.data, in.len, true, &limits, &head) != 0) {
        snprintf(err, err_len, "%s: malformed reply", addr);
        goto out;
    }
    {
        const char *b;
        size_t blen, total;
        bool owned;
        int prv = jinn_http_parse_body((const char *)in.data, in.len, &head,
                                       JINN_CLI_MAX_RESPONSE, &b, &blen, &owned, &total);
        if (prv != 0 && !(prv == JINN_HTTP_NEED_MORE && head.body_until_close)) {
            snprintf(err, err_len, "%s: truncated reply", addr);
            goto out;
        }
        *resp = jinn_strndup(b, blen);
        if (owned) {
            jinn_free((void *)b);
        }
        if (*resp == NULL) {
            snprintf(err, err_len, "out of memory");
            goto out;
        }
        *resp_len = blen;
    }
    *status = head.status;
    note_index(&head, "X-Jinn-Index");
    note_index(&head, "X-Jinn-Applied-Index");
    rv = 0;
out:
    conn_end(&conn);
    jinn_wbuf_free(&req);
    jinn_wbuf_free(&in);
    return rv;
}

/* GETs target as JSON; prints the error and returns NULL on failure. */
static json_t *get_json(const char *addr, const char *target, int *status)
{
    char err[512];
    char *body = NULL;
    size_t len;
    json_error_t jerr;
    json_t *obj;

    if (jinn_cli_request(addr, "GET", target, NULL, "", 0, status, &body, &len, err,
                         sizeof err) != 0) {
        fprintf(stderr, "jinn: %s\n", err);
        return NULL;
    }
    obj = json_loadb(body, len, 0, &jerr);
    jinn_free(body);
    if (obj == NULL) {
        fprintf(stderr, "jinn: %s%s: reply is not JSON\n", addr, target);
    }
    return obj;
}

static const char *str_or(json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

static const char status_usage[] =
    "usage: jinn status [--addr URL] [--json]\n"
    "  a node's view of the cluster: its role, the leader, quorum, log indexes\n"
    "  and every member, with reachability as the leader sees it.\n"
    "exit status: 0 a leader with a quorum is known, 3 no quorum (writes and\n"
    "  linearizable reads fail), 1 the node cannot be reached, 2 bad usage\n"
    "options: --addr URL (default $JINN_ADDR or " JINN_CLI_DEFAULT_ADDR "), --json\n";

/* The leader's view of member m (from /v1/cluster/members), or NULL. */
static json_t *leader_view(json_t *view, json_t *m)
{
    size_t i;
    json_t *v;
    json_int_t id = json_integer_value(json_object_get(m, "id"));
    json_array_foreach(json_object_get(view, "members"), i, v)
    {
        if (json_integer_value(json_object_get(v, "id")) == id) {
            return v;
        }
    }
    return NULL;
}

/* view: the leader's member list with reachability (NULL when unknown). */
static void print_status(json_t *st, json_t *view)
{
    json_t *leader = json_object_get(st, "leader");
    json_t *contact = json_object_get(st, "leader_contact_ms");
    json_t *members = json_object_get(st, "members");
    bool quorum = json_is_true(json_object_get(st, "quorum"));
    unsigned unreachable = 0;
    size_t i;
    json_t *m;

    printf("node     %s (id %" JSON_INTEGER_FORMAT ") %s, term %" JSON_INTEGER_FORMAT "\n",
           str_or(st, "name", "?"), json_integer_value(json_object_get(st, "id")),
           str_or(st, "role", "?"), json_integer_value(json_object_get(st, "term")));
    if (json_is_object(leader)) {
        printf("leader   %s %s\n", str_or(leader, "name", "?"), str_or(leader, "api", ""));
    } else {
        printf("leader   none known\n");
    }
    printf("quorum   %s", quorum ? "yes" : "NO");
    if (json_is_integer(contact)) {
        printf(" (up to date as of %" JSON_INTEGER_FORMAT " ms ago)", json_integer_value(contact));
    }
    printf("\nlog      commit %" JSON_INTEGER_FORMAT "  applied %" JSON_INTEGER_FORMAT
           "  last %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(st, "commit_index")),
           json_integer_value(json_object_get(st, "applied_index")),
           json_integer_value(json_object_get(st, "last_index")));
    json_array_foreach(members, i, m)
    {
        json_t *v = json_object_get(m, "reachable") ? m : leader_view(view, m);
        json_t *reach = v ? json_object_get(v, "reachable") : NULL;
        json_t *last = v ? json_object_get(v, "last_contact_ms") : NULL;
        char health[48] = "";
        if (json_is_false(reach)) {
            if (json_is_integer(last)) {
                snprintf(health, sizeof health, "UNREACHABLE (%" JSON_INTEGER_FORMAT " ms)",
                         json_integer_value(last));
            } else {
                snprintf(health, sizeof health, "UNREACHABLE (never answered)");
            }
            unreachable += strcmp(str_or(m, "role", ""), "voter") == 0;
        } else if (json_is_true(reach)) {
            snprintf(health, sizeof health, "ok");
        }
        printf("%s %-12s %-8s %-22s %-26s %s\n", i == 0 ? "members " : "        ",
               str_or(m, "name", "?"), str_or(m, "role", "?"), str_or(m, "address", ""),
               str_or(m, "api", "-"), health);
    }
    if (!quorum) {
        printf("NO QUORUM: no leader with a majority of voters is known; writes and "
               "linearizable reads fail (see `jinn members` on the other nodes)\n");
    } else if (unreachable > 0) {
        printf("DEGRADED: %u voter%s unreachable from the leader\n", unreachable,
               unreachable == 1 ? "" : "s");
    }
    if (strcmp(str_or(st, "disk", "ok"), "full") == 0) {
        printf("DISK FULL: %" JSON_INTEGER_FORMAT " bytes free, below min_free_space: writes "
               "refused (507 no_space) until space is freed\n",
               json_integer_value(json_object_get(st, "disk_free_bytes")));
    }
    if (json_is_true(json_object_get(st, "diverged"))) {
        json_t *d = json_object_get(st, "divergence");
        printf("DIVERGED at check %" JSON_INTEGER_FORMAT " in %s: reads refused; restart this "
               "node\n",
               json_integer_value(json_object_get(d, "index")), str_or(d, "sections", "?"));
    }
    printf("cluster  %s\n", str_or(st, "cluster_id", "none yet"));
    if (json_is_string(json_object_get(st, "note"))) {
        printf("note     %s\n", str_or(st, "note", ""));
    }
}

int jinn_cli_status(int argc, char **argv)
{
    struct cli_opts o;
    int status;
    json_t *st, *view = NULL;
    bool quorum;
    int rv;

    if (jinn_cli_help(argc, argv, status_usage)) {
        return 0;
    }
    rv = parse_opts(argc, argv, &o, "jinn status [--addr URL] [--json]");
    if (rv != 0) {
        return rv;
    }
    st = get_json(o.addr, "/v1/status", &status);
    if (st == NULL) {
        return 1;
    }
    if (status != 200) {
        fprintf(stderr, "jinn: %s: HTTP %d: %s\n", o.addr, status, str_or(st, "message", ""));
        json_decref(st);
        return 1;
    }
    quorum = json_is_true(json_object_get(st, "quorum"));
    if (quorum && strcmp(str_or(st, "role", ""), "leader") != 0) {
        /* Only the leader knows who answers: ask it through this node. A
         * failure here only leaves reachability unknown. */
        char err[256];
        char *body = NULL;
        size_t len;
        int vstatus;
        if (jinn_cli_request(o.addr, "GET", "/v1/cluster/members", NULL, "", 0, &vstatus, &body,
                             &len, err, sizeof err) == 0) {
            if (vstatus == 200) {
                view = json_loadb(body, len, 0, NULL);
            }
            jinn_free(body);
        }
    }
    if (o.json) {
        json_t *m;
        size_t i;
        json_array_foreach(json_object_get(st, "members"), i, m)
        {
            json_t *v = leader_view(view, m);
            if (v != NULL && json_object_get(m, "reachable") == NULL) {
                json_object_set(m, "reachable", json_object_get(v, "reachable"));
                json_object_set(m, "last_contact_ms", json_object_get(v, "last_contact_ms"));
                json_object_set(m, "match_index", json_object_get(v, "match_index"));
            }
        }
        json_dumpf(st, stdout, JSON_INDENT(2));
        putchar('\n');
    } else {
        print_status(st, view);
    }
    json_decref(view);
    json_decref(st);
    return quorum ? 0 : 3;
}

int jinn_cli_version(int argc, char **argv)
{
    struct cli_opts o;
    int status;
    json_t *st;
    bool ask_server = getenv("JINN_ADDR") != NULL;
    int rv;

    if (jinn_cli_help(argc, argv,
                      "usage: jinn version [--addr URL] [--json]\n"
                      "  prints this build's version; with --addr (or $JINN_ADDR) also the "
                      "node's\n")) {
        return 0;
    }
    for (int i = 0; i < argc; i++) {
        ask_server = ask_server || strncmp(argv[i], "--addr", 6) == 0;
    }
    char formats[160], formats_text[160];
    rv = parse_opts(argc, argv, &o, "jinn version [--addr URL] [--json]");
    if (rv != 0) {
        return rv;
    }
    /* The highest formats this build writes and reads (docs/operations.md,
     * "Upgrades"): a node meeting a newer one stops instead of skipping. */
    snprintf(formats, sizeof formats,
             "\"formats\": {\"command\": %d, \"command_min\": %d, \"snapshot\": %d, "
             "\"backup\": %d}",
             JINN_CMD_VERSION, JINN_CMD_VERSION_MIN, JINN_SNAPSHOT_VERSION, JINN_BACKUP_VERSION);
    snprintf(formats_text, sizeof formats_text,
             "formats: command %d-%d, snapshot %d, backup file %d", JINN_CMD_VERSION_MIN,
             JINN_CMD_VERSION, JINN_SNAPSHOT_VERSION, JINN_BACKUP_VERSION);
    if (!ask_server) {
        if (o.json) {
            printf("{\"version\": \"%s\", \"revision\": \"%s\", %s}\n", JINN_VERSION,
                   jinn_revision(), formats);
        } else {
            printf("jinn %s (%s)\n%s\n", JINN_VERSION, jinn_revision(), formats_text);
        }
        return 0;
    }
    st = get_json(o.addr, "/v1/status", &status);
    if (st == NULL) {
        return 1;
    }
    {
        json_t *f = json_object_get(st, "formats");
        char *server_formats = f ? json_dumps(f, JSON_COMPACT) : NULL;
        if (o.json) {
            printf("{\"version\": \"%s\", \"revision\": \"%s\", \"server_revision\": \"%s\", "
                   "%s, \"server_formats\": %s}\n",
                   JINN_VERSION, jinn_revision(), str_or(st, "version", "?"), formats,
                   server_formats ? server_formats : "null");
        } else {
            printf("jinn %s (%s)\n%s\nserver %s at %s\n", JINN_VERSION, jinn_revision(),
                   formats_text, str_or(st, "version", "?"), o.addr);
            if (f != NULL) {
                printf("server formats: command %lld-%lld, snapshot %lld, backup file %lld\n",
                       (long long)json_integer_value(json_object_get(f, "command_min")),
                       (long long)json_integer_value(json_object_get(f, "command")),
                       (long long)json_integer_value(json_object_get(f, "snapshot")),
                       (long long)json_integer_value(json_object_get(f, "backup")));
            }
        }
        jinn_free(server_formats);
    }
    json_decref(st);
    return 0;
}

void jinn_cli_query(struct jinn_wbuf *w, bool *first, const char *name, const char *value)
{
    if (value == NULL) {
        return;
    }
    jinn_wbuf_printf(w, "%s%s=", *first ? "?" : "&", name);
    jinn_cli_escape(w, value, strlen(value));
    *first = false;
}

/* 503s that mean "nothing was applied, a leader is being elected". */
static bool leaderless(const char *resp, size_t len)
{
    json_t *e = json_loadb(resp, len, 0, NULL);
    const char *code = json_string_value(json_object_get(e, "error"));
    bool yes = code != NULL && (strcmp(code, "no_leader") == 0 ||
                                strcmp(code, "not_leader") == 0 ||
                                strcmp(code, "forward_failed") == 0);
    json_decref(e);
    return yes;
}

/* 503 busy: nothing was applied, the node had no room for it now (one
 * function deploy at a time, say). */
static bool busy(const char *resp, size_t len)
{
    json_t *e = json_loadb(resp, len, 0, NULL);
    const char *code = json_string_value(json_object_get(e, "error"));
    bool yes = code != NULL && strcmp(code, "busy") == 0;
    json_decref(e);
    return yes;
}

int jinn_cli_call(const char *addr, const char *method, struct jinn_wbuf *target,
                  const char *headers, const char *body, size_t body_len, char **resp,
                  size_t *resp_len, int *status)
{
    char err[512];
    bool idempotent = strcmp(method, "GET") == 0 || strcmp(method, "PUT") == 0 ||
                      strcmp(method, "DELETE") == 0;
    int64_t give_up = mono_ms() + JINN_CLI_LEADER_WAIT_MS;
    int64_t pause = 100;
    bool said = false, said_busy = false;
    jinn_wbuf_put_u8(target, 0);
    if (target->failed) {
        fprintf(stderr, "jinn: out of memory\n");
        return 1;
    }
    if (strcmp(method, "POST") == 0 && strncmp((const char *)target->data, "/v1/sql/", 8) == 0) {
        /* A SQL query is a POST for its body, but only reads. */
        size_t len = strlen((const char *)target->data);
        idempotent = len > 6 && strcmp((const char *)target->data + len - 6, "/query") == 0;
    }
    for (;;) {
        if (jinn_cli_request(addr, method, (const char *)target->data, headers, body, body_len,
                             status, resp, resp_len, err, sizeof err) != 0) {
            fprintf(stderr, "jinn: %s\n", err);
            return 1;
        }
        if (!idempotent || *status != 503 || mono_ms() + pause > give_up) {
            break;
        }
        if (busy(*resp, *resp_len)) {
            if (!said_busy) {
                fprintf(stderr, "jinn: the node is busy; retrying...\n");
                said_busy = true;
            }
        } else if (!leaderless(*resp, *resp_len)) {
            break;
        } else if (!said) {
            fprintf(stderr, "jinn: waiting for a leader...\n");
            said = true;
        }
        jinn_free(*resp);
        *resp = NULL;
        {
            struct timespec ts = {pause / 1000, (pause % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
        pause = pause * 2 > 1000 ? 1000 : pause * 2;
    }
    if (said && *status >= 200 && *status <= 299) {
        fprintf(stderr, "jinn: a leader answered\n");
    }
    if (*status < 200 || *status > 299) {
        json_t *e = json_loadb(*resp, *resp_len, 0, NULL);
        const char *msg = e ? json_string_value(json_object_get(e, "message")) : NULL;
        json_t *rev = e ? json_object_get(e, "revision") : NULL;
        fprintf(stderr, "jinn: %d %s", *status, msg ? msg : *resp);
        if (json_is_integer(rev)) {
            fprintf(stderr, " (current revision %" JSON_INTEGER_FORMAT ")",
                    json_integer_value(rev));
        }
        if (said && *status == 503 && leaderless(*resp, *resp_len)) {
            fprintf(stderr, " (gave up waiting for a leader after %d s)",
                    JINN_CLI_LEADER_WAIT_MS / 1000);
        }
        fputc('\n', stderr);
        json_decref(e);
        jinn_free(*resp);
        *resp = NULL;
        return 1;
    }
    return 0;
}


int jinn_cli_read_stdin(struct jinn_wbuf *w, size_t max)
{
    for (;;) {
        size_t n;
        if (!jinn_wbuf_reserve(w, 65536)) {
            fprintf(stderr, "jinn: out of memory\n");
            return -1;
        }
        n = fread(w->data + w->len, 1, 65536, stdin);
        w->len += n;
        if (w->len > max) {
            fprintf(stderr, "jinn: input on stdin larger than %zu bytes\n", max);
            return -1;
        }
        if (n < 65536) {
            return ferror(stdin) ? -1 : 0;
        }
    }
}
