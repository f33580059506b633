/* config.c - Caddyfile-syntax configuration parser.
 *
 * Two passes: the lexer turns the text into tokens (each remembering its
 * line, column and whether it starts a new line, and with {env.VAR}
 * placeholders already replaced), then the parser walks the global options
 * block directive by directive. Unknown directives, missing or extra
 * arguments and bad values are all errors: nothing is silently ignored. */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"

#define MAX_TOKENS 4096
#define MAX_TOKEN_LEN 4096

struct token {
    char *text;
    int line;
    int column;
    bool first_on_line; /* a directive starts here */
    bool quoted;        /* "{" in quotes is a word, not a block */
};

struct parser {
    struct token *tokens;
    size_t n;
    size_t pos;
    struct jinn_config_error *err;
};

static int fail_at(struct jinn_config_error *err, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(struct jinn_config_error *err, int line, int column, const char *fmt, ...)
{
    va_list ap;
    err->line = line;
    err->column = column;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return JINN_ECONFIG;
}

/* ---- defaults ---------------------------------------------------------- */

static int set_str(char **slot, const char *value)
{
    char *copy = jinn_strdup(value);
    if (copy == NULL) {
        return JINN_ENOMEM;
    }
    jinn_free(*slot);
    *slot = copy;
    return 0;
}

int jinn_config_defaults(struct jinn_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->replicas = 0; /* resolved after parsing: all peers */
    cfg->election_timeout_ms = 500;
    cfg->install_snapshot_timeout_ms = 5000;
    cfg->heartbeat_timeout_ms = 50;
    cfg->snapshot_threshold = 8192;
    cfg->snapshot_trailing = 2048;
    cfg->request_timeout_ms = 5000;
    cfg->standby_promote_after_ms = 10000;
    cfg->max_body_bytes = 1u << 20;
    cfg->idle_timeout_ms = 60000;
    cfg->read_timeout_ms = 10000;
    cfg->lock_max_ttl_ms = 3600000;
    cfg->job_result_ttl_ms = 3600000;
    cfg->job_results_max_bytes = 64u << 20;
    cfg->max_connections = 0; /* derived from the descriptor limit at start (daemon.c) */
    cfg->limit_conns_per_addr = 256;
    cfg->reserved_conns = 32;
    cfg->check_interval_ms = 600000;
    cfg->min_free_space = UINT64_C(64) << 20;
    cfg->job_workers = 16;
    cfg->job_grace_ms = 10000;
    cfg->stream_heartbeat_ms = 200;
    cfg->stream_coalesce_ms = 3;
    cfg->stream_max_replicas = 64;
    cfg->stream_buffer_bytes = UINT64_C(64) << 20;
    cfg->stream_max_lag_bytes = UINT64_C(32) << 20;
    if (set_str(&cfg->server_name, "jinn") || set_str(&cfg->data_dir, "./jinn-data") ||
        set_str(&cfg->http_listen, "127.0.0.1:8080") ||
        set_str(&cfg->cluster_name, "jinn") ||
        set_str(&cfg->cluster_listen, "127.0.0.1:7000")) {
        return JINN_ENOMEM;
    }
    return 0;
}

int jinn_config_replica_defaults(struct jinn_config *cfg)
{
    int rv = jinn_config_defaults(cfg);
    cfg->replica = true;
    cfg->replica_stale_after_ms = JINN_DEFAULT_REPLICA_STALE_AFTER_MS;
    cfg->replica_max_snapshot = JINN_DEFAULT_REPLICA_MAX_SNAPSHOT;
    return rv;
}

bool jinn_config_token_ok(const char *t, size_t len)
{
    if (len < 16 || len > 256 || strncmp(t, "jinn.", 5) == 0 || strncmp(t, "jinn-", 5) == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f) {
            return false;
        }
    }
    return true;
}

void jinn_config_free(struct jinn_config *cfg)
{
    jinn_free(cfg->server_name);
    jinn_free(cfg->data_dir);
    jinn_free(cfg->http_listen);
    jinn_free(cfg->http_advertise);
    jinn_free(cfg->bootstrap_token);
    jinn_free(cfg->cluster_name);
    jinn_free(cfg->cluster_listen);
    jinn_free(cfg->cluster_tls_cert);
    jinn_free(cfg->cluster_tls_key);
    jinn_free(cfg->cluster_tls_ca);
    jinn_free(cfg->http_tls_cert);
    jinn_free(cfg->http_tls_key);
    jinn_free(cfg->http_tls_client_ca);
    for (unsigned i = 0; i < cfg->n_replica_of; i++) {
        jinn_free(cfg->replica_of[i]);
    }
    jinn_free(cfg->replica_token);
    jinn_free(cfg->replica_ca);
    jinn_free(cfg->replica_cert);
    jinn_free(cfg->replica_key);
    for (unsigned i = 0; i < cfg->n_peers; i++) {
        jinn_free(cfg->peers[i].name);
        jinn_free(cfg->peers[i].address);
    }
    for (unsigned i = 0; i < cfg->n_policies; i++) {
        jinn_free(cfg->policies[i].ns);
    }
    jinn_free(cfg->policies);
    for (unsigned i = 0; i < cfg->n_queue_policies; i++) {
        jinn_free(cfg->queue_policies[i].name);
    }
    jinn_free(cfg->queue_policies);
    memset(cfg, 0, sizeof *cfg);
}

struct jinn_policy jinn_config_policy(const struct jinn_config *cfg, const char *ns)
{
    struct jinn_policy cp = {NULL, JINN_MODE_CP, false, JINN_DEFAULT_MAX_STALENESS_MS};
    for (unsigned i = 0; i < cfg->n_policies; i++) {
        if (strcmp(cfg->policies[i].ns, ns) == 0) {
            return cfg->policies[i];
        }
    }
    if (cfg->replica) {
        /* An edge replica exists to answer reads locally: a namespace its
         * config does not list reads stale (with its freshness headers and
         * max_staleness); `mode cp` there relays its reads to the leader. */
        cp.mode = JINN_MODE_AP;
        cp.stale_reads = true;
    }
    return cp;
}

static struct jinn_queue_policy queue_defaults(void)
{
    struct jinn_queue_policy p = {NULL, 30000, 5, {1000, 5000, 30000}, 3, 1000000,
                                  UINT64_C(1) << 30, 120000};
    return p;
}

struct jinn_queue_policy jinn_config_queue(const struct jinn_config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->n_queue_policies; i++) {
        if (strcmp(cfg->queue_policies[i].name, name) == 0) {
            return cfg->queue_policies[i];
        }
    }
    return queue_defaults();
}

unsigned jinn_config_self(const struct jinn_config *cfg)
{
    for (unsigned i = 0; i < cfg->n_peers; i++) {
        if (strcmp(cfg->peers[i].name, cfg->server_name) == 0) {
            return i;
        }
    }
    return 0;
}

/* ---- value parsers ----------------------------------------------------- */

/* Parses a decimal uint64 prefix; returns chars consumed, 0 on none/overflow. */
static size_t parse_u64_prefix(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    while (isdigit((unsigned char)s[i])) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0;
        }
        v = v * 10 + d;
        i++;
    }
    *out = v;
    return i;
}

int jinn_parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    uint64_t v;
    size_t n = parse_u64_prefix(s, &v);

    if (n == 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s + n, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].ms) {
                return -1;
            }
            *ms = v * units[i].ms;
            return 0;
        }
    }
    return -1;
}

int jinn_parse_size(const char *s, uint64_t *bytes)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},          {"B", 1},           {"KB", 1000},
                 {"KiB", 1024},    {"MB", 1000000},    {"MiB", 1048576},
                 {"GB", 1000000000}, {"GiB", 1073741824}};
    uint64_t v;
    size_t n = parse_u64_prefix(s, &v);

    if (n == 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s + n, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].mult) {
                return -1;
            }
            *bytes = v * units[i].mult;
            return 0;
        }
    }
    return -1;
}

int jinn_parse_hostport(const char *s)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    struct in_addr addr;
    uint64_t port;
    size_t n;

    if (colon == NULL || (size_t)(colon - s) >= sizeof host || colon == s) {
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    if (inet_pton(AF_INET, host, &addr) != 1) {
        return -1;
    }
    n = parse_u64_prefix(colon + 1, &port);
    if (n == 0 || colon[1 + n] != '\0' || port == 0 || port > 65535) {
        return -1;
    }
    return 0;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JINN_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.') {
            return false;
        }
    }
    return true;
}

/* ---- lexer ------------------------------------------------------------- */

struct lexer {
    const char *text;
    size_t len;
    size_t pos;
    int line;
    int column;
    struct jinn_config_error *err;
};

static int peek(struct lexer *lx) { return lx->pos < lx->len ? (unsigned char)lx->text[lx->pos] : -1; }

static void advance(struct lexer *lx)
{
    if (lx->text[lx->pos] == '\n') {
        lx->line++;
        lx->column = 1;
    } else {
        lx->column++;
    }
    lx->pos++;
}

/* Replaces every {env.NAME} in raw by the variable's value. An unset
 * variable is an error: silently substituting "" would hide a typo. */
static int expand_env(struct lexer *lx, int line, int column, const char *raw, size_t n,
                      char **out)
{
    char *buf = jinn_malloc(MAX_TOKEN_LEN + 1);
    size_t len = 0;

    if (buf == NULL) {
        return JINN_ENOMEM;
    }
    for (size_t i = 0; i < n;) {
        const char *piece = raw + i;
        size_t piece_len = 1;
        if (n - i > 5 && strncmp(raw + i, "{env.", 5) == 0) {
            const char *end = memchr(raw + i, '}', n - i);
            char name[128];
            size_t name_len;
            if (end == NULL) {
                jinn_free(buf);
                return fail_at(lx->err, line, column, "unterminated {env.} placeholder");
            }
            name_len = (size_t)(end - (raw + i + 5));
            if (name_len == 0 || name_len >= sizeof name) {
                jinn_free(buf);
                return fail_at(lx->err, line, column, "bad {env.} placeholder");
            }
            memcpy(name, raw + i + 5, name_len);
            name[name_len] = '\0';
            piece = getenv(name);
            if (piece == NULL) {
                jinn_free(buf);
                return fail_at(lx->err, line, column, "environment variable %s is not set",
                               name);
            }
            piece_len = strlen(piece);
            i += name_len + 6;
        } else {
            i++;
        }
        if (len + piece_len > MAX_TOKEN_LEN) {
            jinn_free(buf);
            return fail_at(lx->err, line, column, "token longer than %d bytes", MAX_TOKEN_LEN);
        }
        memcpy(buf + len, piece, piece_len);
        len += piece_len;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

static void tokens_free(struct token *tokens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        jinn_free(tokens[i].text);
    }
    jinn_free(tokens);
}

static int lex(struct lexer *lx, struct token **out, size_t *n_out)
{
    struct token *tokens = jinn_calloc(MAX_TOKENS, sizeof *tokens);
    char *raw = jinn_malloc(MAX_TOKEN_LEN + 1);
    size_t n = 0;
    bool new_line = true;
    int rv = 0;

    if (tokens == NULL || raw == NULL) {
        rv = JINN_ENOMEM;
        goto out;
    }
    for (;;) {
        int c = peek(lx);
        int line = lx->line, column = lx->column;
        size_t raw_len = 0;
        bool quoted = false;

        if (c == -1) {
            break;
        }
        if (c == '\0') {
            rv = fail_at(lx->err, line, column, "NUL byte in config");
            goto out;
        }
        if (c == '\n') {
            new_line = true;
            advance(lx);
            continue;
        }
        if (isspace(c)) {
            advance(lx);
            continue;
        }
        if (c == '#') {
            while (peek(lx) != -1 && peek(lx) != '\n') {
                advance(lx);
            }
            continue;
        }
        if (n == MAX_TOKENS) {
            rv = fail_at(lx->err, line, column, "more than %d tokens", MAX_TOKENS);
            goto out;
        }
        if (c == '"') {
            quoted = true;
            advance(lx);
            for (;;) {
                c = peek(lx);
                if (c == -1 || c == '\n') {
                    rv = fail_at(lx->err, line, column, "unterminated quoted string");
                    goto out;
                }
                if (c == '\0') {
                    rv = fail_at(lx->err, lx->line, lx->column, "NUL byte in config");
                    goto out;
                }
                advance(lx);
                if (c == '"') {
                    break;
                }
                if (c == '\\' && (peek(lx) == '"' || peek(lx) == '\\')) {
                    c = peek(lx);
                    advance(lx);
                }
                if (raw_len == MAX_TOKEN_LEN) {
                    rv = fail_at(lx->err, line, column, "token longer than %d bytes",
                                 MAX_TOKEN_LEN);
                    goto out;
                }
                raw[raw_len++] = (char)c;
            }
        } else {
            while ((c = peek(lx)) != -1 && !isspace(c) && c != '\0') {
                if (raw_len == MAX_TOKEN_LEN) {
                    rv = fail_at(lx->err, line, column, "token longer than %d bytes",
                                 MAX_TOKEN_LEN);
                    goto out;
                }
                raw[raw_len++] = (char)c;
                advance(lx);
            }
        }
        rv = expand_env(lx, line, column, raw, raw_len, &tokens[n].text);
        if (rv != 0) {
            goto out;
        }
        tokens[n].line = line;
        tokens[n].column = column;
        tokens[n].first_on_line = new_line;
        tokens[n].quoted = quoted;
        new_line = false;
        n++;
    }
out:
    jinn_free(raw);
    if (rv != 0) {
        if (tokens != NULL) {
            tokens_free(tokens, n);
        }
        return rv;
    }
    *out = tokens;
    *n_out = n;
    return 0;
}

/* ---- parser ------------------------------------------------------------ */

static bool is_open(const struct token *t) { return !t->quoted && strcmp(t->text, "{") == 0; }
static bool is_close(const struct token *t) { return !t->quoted && strcmp(t->text, "}") == 0; }

/* The arguments of the directive at tokens[pos]: tokens on the same line,
 * up to a block opener or closer. */
static size_t count_args(const struct parser *p, size_t pos)
{
    size_t n = 0;
    for (size_t i = pos + 1; i < p->n; i++) {
        const struct token *t = &p->tokens[i];
        if (t->first_on_line || is_open(t) || is_close(t)) {
            break;
        }
        n++;
    }
    return n;
}

static int want_args(struct parser *p, const struct token *d, size_t have, size_t want)
{
    if (have < want) {
        return fail_at(p->err, d->line, d->column, "%s: missing argument", d->text);
    }
    if (have > want) {
        const struct token *extra = d + want + 1;
        return fail_at(p->err, extra->line, extra->column, "%s: unexpected argument '%s'",
                       d->text, extra->text);
    }
    return 0;
}

static int arg_duration(struct parser *p, const struct token *d, const struct token *a,
                        uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t ms;
    if (jinn_parse_duration(a->text, &ms) != 0) {
        return fail_at(p->err, a->line, a->column,
                       "%s: bad duration '%s' (use e.g. 500ms, 30s, 2m)", d->text, a->text);
    }
    if (ms < min || ms > max) {
        return fail_at(p->err, a->line, a->column,
                       "%s: %s out of range (%llums..%llums)", d->text, a->text,
                       (unsigned long long)min, (unsigned long long)max);
    }
    *out = ms;
    return 0;
}

static int arg_uint(struct parser *p, const struct token *d, const struct token *a,
                    uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v;
    size_t n = parse_u64_prefix(a->text, &v);
    if (n == 0 || a->text[n] != '\0') {
        return fail_at(p->err, a->line, a->column, "%s: bad number '%s'", d->text, a->text);
    }
    if (v < min || v > max) {
        return fail_at(p->err, a->line, a->column, "%s: %s out of range (%llu..%llu)",
                       d->text, a->text, (unsigned long long)min, (unsigned long long)max);
    }
    *out = v;
    return 0;
}

static int arg_bool(struct parser *p, const struct token *d, const struct token *a, bool *out)
{
    if (strcmp(a->text, "true") == 0) {
        *out = true;
    } else if (strcmp(a->text, "false") == 0) {
        *out = false;
    } else {
        return fail_at(p->err, a->line, a->column, "%s: expected true or false, got '%s'",
                       d->text, a->text);
    }
    return 0;
}

/* http://HOST:PORT[/] with HOST an IPv4 address or a DNS name (letters,
 * digits, '-', '.'; at most 253). Copies HOST into host (when given) and
 * the port into *port. */
static bool url_shape_ok(const char *url, char *host, size_t host_len, unsigned *port)
{
    const char *h, *colon, *end;
    unsigned long v = 0;
    size_t n;
    if (strncmp(url, "http://", 7) != 0) {
        return false;
    }
    h = url + 7;
    colon = strrchr(h, ':');
    if (colon == NULL || colon == h) {
        return false;
    }
    n = (size_t)(colon - h);
    if (n > 253) {
        return false;
    }
    for (const char *c = h; c < colon; c++) {
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.') {
            return false;
        }
    }
    end = colon + 1;
    if (!isdigit((unsigned char)*end)) {
        return false;
    }
    while (isdigit((unsigned char)*end) && v <= 65535) {
        v = v * 10 + (unsigned long)(*end++ - '0');
    }
    if (v == 0 || v > 65535 || (*end != '\0' && strcmp(end, "/") != 0)) {
        return false;
    }
    if (host != NULL) {
        if (n >= host_len) {
            return false;
        }
        memcpy(host, h, n);
        host[n] = '\0';
    }
    if (port != NULL) {
        *port = (unsigned)v;
    }
    return true;
}

int jinn_config_resolve(struct jinn_config *cfg, struct jinn_config_error *err)
{
    char host[256], ip[INET_ADDRSTRLEN], url[300];
    struct in_addr a4;
    struct addrinfo hints, *res = NULL;
    unsigned port;
    int rc;

    if (cfg->http_advertise == NULL) {
        return 0;
    }
    if (!url_shape_ok(cfg->http_advertise, host, sizeof host, &port)) {
        return fail_at(err, cfg->http_advertise_line, cfg->http_advertise_column,
                       "http_advertise: expected http://HOST:PORT, got '%s'",
                       cfg->http_advertise);
    }
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return 0; /* an address already */
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET; /* forwarding speaks IPv4 */
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL) {
        int rv = fail_at(err, cfg->http_advertise_line, cfg->http_advertise_column,
                         "http_advertise: host '%s' does not resolve to an IPv4 address (%s); "
                         "give an address or a name this machine resolves",
                         host, rc != 0 ? gai_strerror(rc) : "no address");
        if (res != NULL) {
            freeaddrinfo(res);
        }
        return rv;
    }
    inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)res->ai_addr)->sin_addr, ip,
              sizeof ip);
    freeaddrinfo(res);
    snprintf(url, sizeof url, "http://%s:%u", ip, port);
    {
        char *copy = jinn_strdup(url);
        if (copy == NULL) {
            return JINN_ENOMEM;
        }
        jinn_free(cfg->http_advertise);
        cfg->http_advertise = copy;
    }
    return 0;
}

static int arg_hostport(struct parser *p, const struct token *d, const struct token *a)
{
    if (jinn_parse_hostport(a->text) != 0) {
        return fail_at(p->err, a->line, a->column,
                       "%s: bad address '%s' (want IPv4 ip:port, e.g. 127.0.0.1:7001)",
                       d->text, a->text);
    }
    return 0;
}

static int arg_name(struct parser *p, const struct token *d, const struct token *a)
{
    if (!valid_name(a->text)) {
        return fail_at(p->err, a->line, a->column,
                       "%s: bad name '%s' (1-%d of A-Z a-z 0-9 _ - .)", d->text, a->text,
                       JINN_NAME_MAX);
    }
    return 0;
}

static int parse_peers(struct parser *p, struct jinn_config *cfg, const struct token *d,
                       size_t n_args)
{
    if (n_args == 0) {
        return fail_at(p->err, d->line, d->column, "%s: missing argument", d->text);
    }
    if (n_args > JINN_CONFIG_MAX_PEERS) {
        return fail_at(p->err, d->line, d->column, "%s: more than %d peers", d->text,
                       JINN_CONFIG_MAX_PEERS);
    }
    for (size_t i = 0; i < n_args; i++) {
        const struct token *a = d + 1 + i;
        const char *eq = strchr(a->text, '=');
        struct jinn_peer *peer = &cfg->peers[cfg->n_peers];
        struct token name_tok = *a;
        char *name;

        if (eq == NULL) {
            return fail_at(p->err, a->line, a->column,
                           "%s: expected name=ip:port, got '%s'", d->text, a->text);
        }
        name = jinn_strndup(a->text, (size_t)(eq - a->text));
        if (name == NULL) {
            return JINN_ENOMEM;
        }
        name_tok.text = name;
        if (arg_name(p, d, &name_tok) != 0) {
            jinn_free(name);
            return JINN_ECONFIG;
        }
        for (unsigned k = 0; k < cfg->n_peers; k++) {
            if (strcmp(cfg->peers[k].name, name) == 0 ||
                strcmp(cfg->peers[k].address, eq + 1) == 0) {
                jinn_free(name);
                return fail_at(p->err, a->line, a->column, "%s: duplicate peer '%s'",
                               d->text, a->text);
            }
        }
        name_tok.text = (char *)eq + 1;
        if (arg_hostport(p, d, &name_tok) != 0) {
            jinn_free(name);
            return JINN_ECONFIG;
        }
        peer->name = name;
        peer->address = jinn_strdup(eq + 1);
        cfg->n_peers++;
        if (peer->address == NULL) {
            return JINN_ENOMEM;
        }
    }
    return 0;
}

/* NAME { mode cp|ap  stale_reads true|false  max_staleness DUR } pairs may
 * share a line, as in the examples users copy. */
static int parse_policy(struct parser *p, struct jinn_config *cfg)
{
    const struct token *name = &p->tokens[p->pos];
    struct jinn_policy pol = {NULL, JINN_MODE_CP, false, JINN_DEFAULT_MAX_STALENESS_MS};
    bool have_mode = false, have_stale = false;
    const struct token *stale_tok = NULL;
    struct jinn_policy *grown;

    if (arg_name(p, name, name) != 0) {
        return JINN_ECONFIG;
    }
    for (unsigned i = 0; i < cfg->n_policies; i++) {
        if (strcmp(cfg->policies[i].ns, name->text) == 0) {
            return fail_at(p->err, name->line, name->column,
                           "consensus: namespace '%s' configured twice", name->text);
        }
    }
    if (cfg->n_policies == JINN_CONFIG_MAX_POLICIES) {
        return fail_at(p->err, name->line, name->column, "consensus: more than %d namespaces",
                       JINN_CONFIG_MAX_POLICIES);
    }
    if (p->pos + 1 >= p->n || !is_open(&p->tokens[p->pos + 1])) {
        return fail_at(p->err, name->line, name->column,
                       "consensus: expected '{' after namespace '%s'", name->text);
    }
    p->pos += 2;
    for (;;) {
        const struct token *key, *val;
        if (p->pos >= p->n) {
            return fail_at(p->err, name->line, name->column,
                           "consensus: unclosed block for '%s'", name->text);
        }
        key = &p->tokens[p->pos];
        if (is_close(key)) {
            p->pos++;
            break;
        }
        if (p->pos + 1 >= p->n || is_close(&p->tokens[p->pos + 1]) ||
            is_open(&p->tokens[p->pos + 1])) {
            return fail_at(p->err, key->line, key->column, "%s: missing argument", key->text);
        }
        val = &p->tokens[p->pos + 1];
        if (strcmp(key->text, "mode") == 0) {
            if (strcmp(val->text, "cp") == 0) {
                pol.mode = JINN_MODE_CP;
            } else if (strcmp(val->text, "ap") == 0) {
                pol.mode = JINN_MODE_AP;
            } else {
                return fail_at(p->err, val->line, val->column,
                               "mode: expected cp or ap, got '%s'", val->text);
            }
            have_mode = true;
        } else if (strcmp(key->text, "stale_reads") == 0) {
            if (arg_bool(p, key, val, &pol.stale_reads) != 0) {
                return JINN_ECONFIG;
            }
            have_stale = true;
            stale_tok = val;
        } else if (strcmp(key->text, "max_staleness") == 0) {
            if (arg_duration(p, key, val, 1, 86400000, &pol.max_staleness_ms) != 0) {
                return JINN_ECONFIG;
            }
        } else {
            return fail_at(p->err, key->line, key->column,
                           "consensus: unknown namespace option '%s'", key->text);
        }
        p->pos += 2;
    }
    if (!have_mode) {
        return fail_at(p->err, name->line, name->column,
                       "consensus: namespace '%s' needs a mode (cp or ap)", name->text);
    }
    if (!have_stale) {
        pol.stale_reads = pol.mode == JINN_MODE_AP;
    }
    if (pol.mode == JINN_MODE_CP && pol.stale_reads) {
        return fail_at(p->err, stale_tok->line, stale_tok->column,
                       "stale_reads true contradicts mode cp");
    }
    grown = jinn_realloc(cfg->policies, (cfg->n_policies + 1) * sizeof *grown);
    if (grown == NULL) {
        return JINN_ENOMEM;
    }
    cfg->policies = grown;
    pol.ns = jinn_strdup(name->text);
    if (pol.ns == NULL) {
        return JINN_ENOMEM;
    }
    cfg->policies[cfg->n_policies++] = pol;
    return 0;
}

/* NAME { ack_wait D  max_deliver N  backoff D D ...  max_length N
 *        max_bytes SIZE  idempotency_window D } */
static int parse_queue(struct parser *p, struct jinn_config *cfg)
{
    const struct token *name = &p->tokens[p->pos];
    struct jinn_queue_policy pol = queue_defaults();
    struct jinn_queue_policy *grown;

    if (arg_name(p, name, name) != 0) {
        return JINN_ECONFIG;
    }
    for (unsigned i = 0; i < cfg->n_queue_policies; i++) {
        if (strcmp(cfg->queue_policies[i].name, name->text) == 0) {
            return fail_at(p->err, name->line, name->column,
                           "queues: queue '%s' configured twice", name->text);
        }
    }
    if (cfg->n_queue_policies == JINN_CONFIG_MAX_POLICIES) {
        return fail_at(p->err, name->line, name->column, "queues: too many queues");
    }
    if (p->pos + 1 >= p->n || !is_open(&p->tokens[p->pos + 1])) {
        return fail_at(p->err, name->line, name->column, "queues: expected '{' after '%s'",
                       name->text);
    }
    p->pos += 2;
    for (;;) {
        const struct token *key;
        size_t n_vals = 0;
        if (p->pos >= p->n) {
            return fail_at(p->err, name->line, name->column, "queues: unclosed block for '%s'",
                           name->text);
        }
        key = &p->tokens[p->pos];
        if (is_close(key)) {
            p->pos++;
            break;
        }
        if (strcmp(key->text, "ack_wait") != 0 && strcmp(key->text, "max_deliver") != 0 &&
            strcmp(key->text, "backoff") != 0 && strcmp(key->text, "max_length") != 0 &&
            strcmp(key->text, "max_bytes") != 0 && strcmp(key->text, "idempotency_window") != 0) {
            return fail_at(p->err, key->line, key->column, "queues: unknown queue option '%s'",
                           key->text);
        }
        /* Values run until the next option name or the closing brace. */
        while (p->pos + 1 + n_vals < p->n) {
            const struct token *v = &p->tokens[p->pos + 1 + n_vals];
            if (is_close(v) || is_open(v) || (v->text[0] >= 'a' && v->text[0] <= 'z')) {
                break;
            }
            n_vals++;
        }
        if (n_vals == 0) {
            return fail_at(p->err, key->line, key->column, "%s: missing argument", key->text);
        }
        if (strcmp(key->text, "backoff") == 0) {
            if (n_vals > JINN_BACKOFF_MAX) {
                return fail_at(p->err, key->line, key->column, "backoff: at most %d delays",
                               JINN_BACKOFF_MAX);
            }
            for (size_t i = 0; i < n_vals; i++) {
                if (arg_duration(p, key, key + 1 + i, 0, 86400000, &pol.backoff_ms[i]) != 0) {
                    return JINN_ECONFIG;
                }
            }
            pol.n_backoff = (unsigned)n_vals;
        } else if (n_vals != 1) {
            const struct token *extra = key + 2;
            return fail_at(p->err, extra->line, extra->column, "%s: unexpected argument '%s'",
                           key->text, extra->text);
        } else if (strcmp(key->text, "ack_wait") == 0) {
            if (arg_duration(p, key, key + 1, 100, 43200000, &pol.ack_wait_ms) != 0) {
                return JINN_ECONFIG;
            }
        } else if (strcmp(key->text, "idempotency_window") == 0) {
            if (arg_duration(p, key, key + 1, 1000, 86400000, &pol.idempotency_window_ms) != 0) {
                return JINN_ECONFIG;
            }
        } else if (strcmp(key->text, "max_deliver") == 0) {
            if (arg_uint(p, key, key + 1, 1, 1000000, &pol.max_deliver) != 0) {
                return JINN_ECONFIG;
            }
        } else if (strcmp(key->text, "max_length") == 0) {
            if (arg_uint(p, key, key + 1, 1, 100000000, &pol.max_length) != 0) {
                return JINN_ECONFIG;
            }
        } else if (strcmp(key->text, "max_bytes") == 0) {
            const struct token *a = key + 1;
            if (jinn_parse_size(a->text, &pol.max_bytes) != 0 || pol.max_bytes == 0) {
                return fail_at(p->err, a->line, a->column, "max_bytes: bad size '%s'", a->text);
            }
        } else {
            assert(!"option names are checked above");
        }
        p->pos += 1 + n_vals;
    }
    grown = jinn_realloc(cfg->queue_policies, (cfg->n_queue_policies + 1) * sizeof *grown);
    if (grown == NULL) {
        return JINN_ENOMEM;
    }
    cfg->queue_policies = grown;
    pol.name = jinn_strdup(name->text);
    if (pol.name == NULL) {
        return JINN_ENOMEM;
    }
    cfg->queue_policies[cfg->n_queue_policies++] = pol;
    return 0;
}

static int parse_block(struct parser *p, struct jinn_config *cfg, const struct token *d,
                       int (*entry)(struct parser *, struct jinn_config *))
{
    int rv;
    if (p->pos + 1 >= p->n || !is_open(&p->tokens[p->pos + 1])) {
        return fail_at(p->err, d->line, d->column, "%s: expected '{'", d->text);
    }
    p->pos += 2;
    for (;;) {
        if (p->pos >= p->n) {
            return fail_at(p->err, d->line, d->column, "%s: unclosed block", d->text);
        }
        if (is_close(&p->tokens[p->pos])) {
            p->pos++;
            return 0;
        }
        rv = entry(p, cfg);
        if (rv != 0) {
            return rv;
        }
    }
}

/* pin NAME SHA256 (64 hex digits, colons allowed). */
static int parse_tls_pin(struct parser *p, struct jinn_config *cfg, const struct token *key)
{
    size_t n_args = count_args(p, p->pos);
    const struct token *name, *hex;
    unsigned got = 0, i;
    int rv = want_args(p, key, n_args, 2);
    if (rv != 0) {
        return rv;
    }
    name = key + 1;
    hex = key + 2;
    if (arg_name(p, key, name) != 0) {
        return JINN_ECONFIG;
    }
    if (cfg->n_cluster_tls_pins == JINN_CONFIG_MAX_PEERS) {
        return fail_at(p->err, key->line, key->column, "cluster_tls: more than %d pins",
                       JINN_CONFIG_MAX_PEERS);
    }
    i = cfg->n_cluster_tls_pins;
    for (const char *c = hex->text; *c != '\0'; c++) {
        int v = isdigit((unsigned char)*c) ? *c - '0'
                : (*c >= 'a' && *c <= 'f') ? *c - 'a' + 10
                : (*c >= 'A' && *c <= 'F') ? *c - 'A' + 10
                                           : -1;
        if (*c == ':') {
            continue;
        }
        if (v < 0 || got == 64) {
            got = 0;
            break;
        }
        cfg->cluster_tls_pins[i].sha256[got / 2] =
            (uint8_t)(got % 2 == 0 ? v << 4 : cfg->cluster_tls_pins[i].sha256[got / 2] | v);
        got++;
    }
    if (got != 64) {
        return fail_at(p->err, hex->line, hex->column,
                       "cluster_tls: pin needs a SHA-256 fingerprint (64 hex digits)");
    }
    snprintf(cfg->cluster_tls_pins[i].name, sizeof cfg->cluster_tls_pins[i].name, "%s",
             name->text);
    cfg->n_cluster_tls_pins++;
    p->pos += 3;
    return 0;
}

/* One line of cluster_tls { cert FILE  key FILE  ca FILE  [pin NAME SHA256]... }. */
static int parse_tls_entry(struct parser *p, struct jinn_config *cfg)
{
    const struct token *key = &p->tokens[p->pos];
    char **field = NULL;
    size_t n_args;
    int rv;

    if (strcmp(key->text, "pin") == 0) {
        return parse_tls_pin(p, cfg, key);
    }
    if (strcmp(key->text, "cert") == 0) {
        field = &cfg->cluster_tls_cert;
    } else if (strcmp(key->text, "key") == 0) {
        field = &cfg->cluster_tls_key;
    } else if (strcmp(key->text, "ca") == 0) {
        field = &cfg->cluster_tls_ca;
    } else {
        return fail_at(p->err, key->line, key->column,
                       "cluster_tls: unknown setting '%s' (cert, key, ca)", key->text);
    }
    if (*field != NULL) {
        return fail_at(p->err, key->line, key->column, "cluster_tls: '%s' given twice",
                       key->text);
    }
    n_args = count_args(p, p->pos);
    rv = want_args(p, key, n_args, 1);
    if (rv != 0) {
        return rv;
    }
    if (p->tokens[p->pos + 1].text[0] == '\0') {
        return fail_at(p->err, key->line, key->column, "cluster_tls: empty %s", key->text);
    }
    rv = set_str(field, p->tokens[p->pos + 1].text);
    p->pos += 2;
    return rv;
}

static int parse_cluster_tls(struct parser *p, struct jinn_config *cfg, const struct token *d)
{
    int rv = parse_block(p, cfg, d, parse_tls_entry);
    if (rv == 0 && (cfg->cluster_tls_cert == NULL || cfg->cluster_tls_key == NULL ||
                    cfg->cluster_tls_ca == NULL)) {
        return fail_at(p->err, d->line, d->column, "cluster_tls: needs cert, key and ca");
    }
    return rv;
}

/* One line of http_tls { cert FILE  key FILE  [client_ca FILE] }. */
static int parse_http_tls_entry(struct parser *p, struct jinn_config *cfg)
{
    const struct token *key = &p->tokens[p->pos];
    char **field = NULL;
    size_t n_args;
    int rv;

    if (strcmp(key->text, "cert") == 0) {
        field = &cfg->http_tls_cert;
    } else if (strcmp(key->text, "key") == 0) {
        field = &cfg->http_tls_key;
    } else if (strcmp(key->text, "client_ca") == 0) {
        field = &cfg->http_tls_client_ca;
    } else {
        return fail_at(p->err, key->line, key->column,
                       "http_tls: unknown setting '%s' (cert, key, client_ca)", key->text);
    }
    if (*field != NULL) {
        return fail_at(p->err, key->line, key->column, "http_tls: '%s' given twice",
                       key->text);
    }
    n_args = count_args(p, p->pos);
    rv = want_args(p, key, n_args, 1);
    if (rv != 0) {
        return rv;
    }
    if (p->tokens[p->pos + 1].text[0] == '\0') {
        return fail_at(p->err, key->line, key->column, "http_tls: empty %s", key->text);
    }
    rv = set_str(field, p->tokens[p->pos + 1].text);
    p->pos += 2;
    return rv;
}

static int parse_http_tls(struct parser *p, struct jinn_config *cfg, const struct token *d)
{
    int rv = parse_block(p, cfg, d, parse_http_tls_entry);
    if (rv == 0 && (cfg->http_tls_cert == NULL || cfg->http_tls_key == NULL)) {
        return fail_at(p->err, d->line, d->column, "http_tls: needs cert and key");
    }
    return rv;
}

static int parse_consensus(struct parser *p, struct jinn_config *cfg, const struct token *d)
{
    return parse_block(p, cfg, d, parse_policy);
}

enum kind { K_NAME, K_STR, K_HOSTPORT, K_URL, K_DURATION, K_UINT, K_SIZE, K_BOOL, K_PEERS, K_BLOCK,
            K_SOURCES };

struct directive {
    const char *name;
    enum kind kind;
    size_t offset; /* of the field in struct jinn_config */
    uint64_t min, max;
};

#define FIELD(f) offsetof(struct jinn_config, f)
static const struct directive directives[] = {
    {"server_name", K_NAME, FIELD(server_name), 0, 0},
    {"data_dir", K_STR, FIELD(data_dir), 0, 0},
    {"http_listen", K_HOSTPORT, FIELD(http_listen), 0, 0},
    {"http_advertise", K_URL, FIELD(http_advertise), 0, 0},
    {"cluster_name", K_NAME, FIELD(cluster_name), 0, 0},
    {"cluster_listen", K_HOSTPORT, FIELD(cluster_listen), 0, 0},
    {"cluster_peers", K_PEERS, 0, 0, 0},
    {"cluster_replicas", K_UINT, FIELD(replicas), 1, JINN_CONFIG_MAX_PEERS},
    {"election_timeout", K_DURATION, FIELD(election_timeout_ms), 50, 60000},
    {"install_snapshot_timeout", K_DURATION, FIELD(install_snapshot_timeout_ms), 100, 600000},
    {"heartbeat_timeout", K_DURATION, FIELD(heartbeat_timeout_ms), 10, 10000},
    {"snapshot_threshold", K_UINT, FIELD(snapshot_threshold), 16, 100000000},
    /* not 0: raft_uv reads trailing 0 as "a snapshot being installed" and
     * would drop the log after the snapshot (design.md) */
    {"snapshot_trailing", K_UINT, FIELD(snapshot_trailing), 1, 100000000},
    {"request_timeout", K_DURATION, FIELD(request_timeout_ms), 100, 600000},
    {"standby_promote_after", K_DURATION, FIELD(standby_promote_after_ms), 1000, 86400000},
    {"max_body", K_SIZE, FIELD(max_body_bytes), 1024, 1u << 30},
    {"idle_timeout", K_DURATION, FIELD(idle_timeout_ms), 1000, 3600000},
    {"read_timeout", K_DURATION, FIELD(read_timeout_ms), 100, 600000},
    {"lock_max_ttl", K_DURATION, FIELD(lock_max_ttl_ms), 1000, 604800000},
    {"job_result_ttl", K_DURATION, FIELD(job_result_ttl_ms), 1000, 2592000000},
    {"job_results_max_bytes", K_SIZE, FIELD(job_results_max_bytes), 0, UINT64_C(1) << 32},
    {"max_connections", K_UINT, FIELD(max_connections), 1, 100000},
    {"limit_rate", K_UINT, FIELD(limit_rate), 0, 10000000},
    {"limit_burst", K_UINT, FIELD(limit_burst), 0, 10000000},
    {"limit_concurrent", K_UINT, FIELD(limit_concurrent), 0, 100000},
    {"limit_conns_per_addr", K_UINT, FIELD(limit_conns_per_addr), 0, 100000},
    {"reserved_conns", K_UINT, FIELD(reserved_conns), 0, 100000},
    {"debug", K_BOOL, FIELD(debug_log), 0, 0},
    {"check_interval", K_DURATION, FIELD(check_interval_ms), 0, 604800000},
    {"min_free_space", K_SIZE, FIELD(min_free_space), 0, UINT64_C(1) << 50},
    {"job_workers", K_UINT, FIELD(job_workers), 0, 1024},
    {"job_grace", K_DURATION, FIELD(job_grace_ms), 0, 3600000},
    {"consensus", K_BLOCK, 0, 0, 0},
    {"queues", K_BLOCK, 0, 0, 0},
    {"cluster_tls", K_BLOCK, 0, 0, 0},
    {"bootstrap_token", K_STR, FIELD(bootstrap_token), 0, 0},
    {"http_tls", K_BLOCK, 0, 0, 0},
    {"insecure", K_BOOL, FIELD(insecure), 0, 0},
    /* `jinn replica` only (config.h): */
    {"replica_of", K_SOURCES, 0, 0, 0},
    {"replica_token", K_STR, FIELD(replica_token), 0, 0},
    {"replica_stale_after", K_DURATION, FIELD(replica_stale_after_ms), 100, 3600000},
    {"replica_ca", K_STR, FIELD(replica_ca), 0, 0},
    {"replica_cert", K_STR, FIELD(replica_cert), 0, 0},
    {"replica_key", K_STR, FIELD(replica_key), 0, 0},
    {"replica_max_snapshot", K_SIZE, FIELD(replica_max_snapshot), 1u << 20, UINT64_C(4) << 30},
    {"stream_heartbeat", K_DURATION, FIELD(stream_heartbeat_ms), 10, 60000},
    {"stream_coalesce", K_DURATION, FIELD(stream_coalesce_ms), 0, 100},
    {"stream_max_replicas", K_UINT, FIELD(stream_max_replicas), 0, 100000},
    {"stream_buffer_bytes", K_SIZE, FIELD(stream_buffer_bytes), 1u << 20, UINT64_C(1) << 40},
    {"stream_max_lag_bytes", K_SIZE, FIELD(stream_max_lag_bytes), 1u << 20, UINT64_C(1) << 40},
};

/* What a replica config may say: its own HTTP side, the namespaces' read
 * policies and the replica_* keys. Everything about raft, membership,
 * jobs or the cluster's own settings belongs to the members' configs, and
 * is refused rather than silently ignored. */
static const char *const replica_keys[] = {
    "server_name",  "data_dir",        "http_listen",          "request_timeout",
    "max_body",     "idle_timeout",    "read_timeout",         "max_connections",
    "limit_rate",   "limit_burst",     "limit_concurrent",     "limit_conns_per_addr",
    "reserved_conns", "debug",         "min_free_space",       "consensus",
    "http_tls",     "insecure",        "replica_of",           "replica_token",
    "replica_stale_after", "replica_ca", "replica_cert",       "replica_key",
    "replica_max_snapshot",
};

static bool replica_key(const char *name)
{
    for (size_t i = 0; i < sizeof replica_keys / sizeof replica_keys[0]; i++) {
        if (strcmp(replica_keys[i], name) == 0) {
            return true;
        }
    }
    return false;
}

/* A replica_of URL: ws:// or wss://, a host of letters, digits, '.', '-'
 * (or an IPv4 address), an optional :PORT (1-65535), an optional /path;
 * printable ASCII without spaces, at most JINN_CONFIG_MAX_URL bytes. */
static bool source_url_ok(const char *url)
{
    const char *h, *p;
    size_t n = strlen(url);
    if (n > JINN_CONFIG_MAX_URL) {
        return false;
    }
    if (strncmp(url, "ws://", 5) == 0) {
        h = url + 5;
    } else if (strncmp(url, "wss://", 6) == 0) {
        h = url + 6;
    } else {
        return false;
    }
    for (p = h; *p != '\0' && *p != ':' && *p != '/'; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-') {
            return false;
        }
    }
    if (p == h) {
        return false;
    }
    if (*p == ':') {
        unsigned long port = 0;
        const char *d = ++p;
        for (; *p >= '0' && *p <= '9' && p - d < 6; p++) {
            port = port * 10 + (unsigned long)(*p - '0');
        }
        if (p == d || port == 0 || port > 65535) {
            return false;
        }
    }
    if (*p != '\0' && *p != '/') {
        return false;
    }
    for (; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            return false;
        }
    }
    return true;
}

static int parse_sources(struct parser *p, struct jinn_config *cfg, const struct token *d,
                         size_t n_args)
{
    if (n_args == 0 || n_args > JINN_CONFIG_MAX_SOURCES) {
        return fail_at(p->err, d->line, d->column, "%s: 1 to %d URLs (ws://HOST:PORT ...)",
                       d->text, JINN_CONFIG_MAX_SOURCES);
    }
    for (size_t i = 0; i < n_args; i++) {
        const struct token *a = d + 1 + i;
        if (!source_url_ok(a->text)) {
            return fail_at(p->err, a->line, a->column,
                           "%s: expected ws://HOST:PORT or wss://HOST:PORT (a cluster node's "
                           "HTTP address), got '%s'",
                           d->text, a->text);
        }
        for (unsigned k = 0; k < cfg->n_replica_of; k++) {
            if (strcmp(cfg->replica_of[k], a->text) == 0) {
                return fail_at(p->err, a->line, a->column, "%s: '%s' listed twice", d->text,
                               a->text);
            }
        }
        cfg->replica_of[cfg->n_replica_of] = jinn_strdup(a->text);
        if (cfg->replica_of[cfg->n_replica_of] == NULL) {
            return JINN_ENOMEM;
        }
        cfg->n_replica_of++;
    }
    return 0;
}

/* A bearer token sent in a header: 16-1024 visible ASCII bytes. */
static bool replica_token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < 16 || n > 1024) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f) {
            return false;
        }
    }
    return true;
}

static bool is_u64_field(size_t offset)
{
    return offset == FIELD(request_timeout_ms) || offset == FIELD(standby_promote_after_ms) ||
           offset == FIELD(max_body_bytes) || offset == FIELD(idle_timeout_ms) ||
           offset == FIELD(read_timeout_ms) || offset == FIELD(lock_max_ttl_ms) ||
           offset == FIELD(min_free_space) || offset == FIELD(job_result_ttl_ms) ||
           offset == FIELD(job_results_max_bytes) || offset == FIELD(job_grace_ms) ||
           offset == FIELD(replica_stale_after_ms) || offset == FIELD(replica_max_snapshot) ||
           offset == FIELD(stream_buffer_bytes) || offset == FIELD(stream_max_lag_bytes);
}

static void store_number(struct jinn_config *cfg, size_t offset, uint64_t v)
{
    char *base = (char *)cfg;
    if (is_u64_field(offset)) {
        *(uint64_t *)(void *)(base + offset) = v;
    } else {
        *(unsigned *)(void *)(base + offset) = (unsigned)v;
    }
}

static int parse_directive(struct parser *p, struct jinn_config *cfg, bool seen[])
{
    const struct token *d = &p->tokens[p->pos];
    const struct directive *dir = NULL;
    size_t n_args, idx;
    uint64_t num = 0;
    bool flag;
    int rv;

    for (idx = 0; idx < sizeof directives / sizeof directives[0]; idx++) {
        if (strcmp(directives[idx].name, d->text) == 0) {
            dir = &directives[idx];
            break;
        }
    }
    if (dir == NULL) {
        return fail_at(p->err, d->line, d->column, "unknown directive '%s'", d->text);
    }
    if (!d->first_on_line) {
        return fail_at(p->err, d->line, d->column, "directive '%s' must start a line",
                       d->text);
    }
    if (seen[idx]) {
        return fail_at(p->err, d->line, d->column, "directive '%s' given twice", d->text);
    }
    if (cfg->replica && !replica_key(dir->name)) {
        return fail_at(p->err, d->line, d->column,
                       "'%s' is a cluster member's setting: a replica config (jinn replica) "
                       "takes server_name, data_dir, http_listen, the HTTP limits, http_tls, "
                       "consensus and the replica_* keys",
                       d->text);
    }
    if (!cfg->replica && strncmp(dir->name, "replica_", 8) == 0) {
        return fail_at(p->err, d->line, d->column,
                       "'%s' belongs in a replica's config (jinn replica -c FILE), not a "
                       "member's",
                       d->text);
    }
    seen[idx] = true;
    if (dir->kind == K_BLOCK) {
        if (strcmp(dir->name, "cluster_tls") == 0) {
            return parse_cluster_tls(p, cfg, d);
        }
        if (strcmp(dir->name, "http_tls") == 0) {
            return parse_http_tls(p, cfg, d);
        }
        return strcmp(dir->name, "queues") == 0 ? parse_block(p, cfg, d, parse_queue)
                                                : parse_consensus(p, cfg, d);
    }
    n_args = count_args(p, p->pos);
    if (p->pos + n_args + 1 < p->n && is_open(&p->tokens[p->pos + n_args + 1])) {
        const struct token *b = &p->tokens[p->pos + n_args + 1];
        return fail_at(p->err, b->line, b->column, "%s: takes no block", d->text);
    }
    if (dir->kind == K_PEERS) {
        rv = parse_peers(p, cfg, d, n_args);
        p->pos += n_args + 1;
        return rv;
    }
    if (dir->kind == K_SOURCES) {
        rv = parse_sources(p, cfg, d, n_args);
        p->pos += n_args + 1;
        return rv;
    }
    rv = want_args(p, d, n_args, 1);
    if (rv != 0) {
        return rv;
    }
    const struct token *a = d + 1;
    switch (dir->kind) {
    case K_NAME:
        rv = arg_name(p, d, a);
        break;
    case K_HOSTPORT:
        rv = arg_hostport(p, d, a);
        break;
    case K_URL:
        if (!url_shape_ok(a->text, NULL, 0, NULL)) {
            rv = fail_at(p->err, a->line, a->column,
                         "%s: expected http://HOST:PORT (HOST an IPv4 address or a DNS name, "
                         "PORT 1-65535), got '%s'",
                         d->text, a->text);
        }
        cfg->http_advertise_line = a->line;
        cfg->http_advertise_column = a->column;
        break;
    case K_STR:
        if (a->text[0] == '\0') {
            rv = fail_at(p->err, a->line, a->column, "%s: empty value", d->text);
        } else if (dir->offset == FIELD(bootstrap_token) &&
                   !jinn_config_token_ok(a->text, strlen(a->text))) {
            rv = fail_at(p->err, a->line, a->column,
                         "bootstrap_token: 16 to 256 printable ASCII characters without "
                         "spaces, not starting with 'jinn.' or 'jinn-'");
        } else if (dir->offset == FIELD(replica_token) && !replica_token_ok(a->text)) {
            rv = fail_at(p->err, a->line, a->column,
                         "replica_token: 16 to 1024 printable ASCII characters without spaces "
                         "(a token with the cluster:replica rule)");
        }
        break;
    case K_DURATION:
        rv = arg_duration(p, d, a, dir->min, dir->max, &num);
        break;
    case K_UINT:
        rv = arg_uint(p, d, a, dir->min, dir->max, &num);
        break;
    case K_SIZE:
        if (jinn_parse_size(a->text, &num) != 0) {
            rv = fail_at(p->err, a->line, a->column, "%s: bad size '%s' (e.g. 1MiB)", d->text,
                         a->text);
        } else if (num < dir->min || num > dir->max) {
            rv = fail_at(p->err, a->line, a->column, "%s: %s out of range", d->text, a->text);
        }
        break;
    case K_BOOL:
        rv = arg_bool(p, d, a, &flag);
        if (rv == 0) {
            *(bool *)(void *)((char *)cfg + dir->offset) = flag;
        }
        break;
    case K_PEERS:
    case K_BLOCK:
    case K_SOURCES:
        assert(!"handled before the switch");
        rv = JINN_EINTERNAL;
        break;
    }
    if (rv != 0) {
        return rv;
    }
    if (dir->kind == K_NAME || dir->kind == K_STR || dir->kind == K_HOSTPORT ||
        dir->kind == K_URL) {
        rv = set_str((char **)(void *)((char *)cfg + dir->offset), a->text);
    } else if (dir->kind != K_BOOL) {
        store_number(cfg, dir->offset, num);
    }
    p->pos += 2;
    return rv;
}

/* A replica config's cross-field checks. */
static int finish_replica(struct parser *p, struct jinn_config *cfg)
{
    if (cfg->n_replica_of == 0) {
        return fail_at(p->err, 0, 0,
                       "a replica config needs replica_of: the cluster nodes to stream from "
                       "(e.g. replica_of ws://10.0.0.1:8001 ws://10.0.0.2:8001)");
    }
    if ((cfg->replica_cert == NULL) != (cfg->replica_key == NULL)) {
        return fail_at(p->err, 0, 0, "replica_cert and replica_key go together (mutual TLS)");
    }
    if (cfg->replica_token == NULL) {
        const char *env = getenv("JINN_REPLICA_TOKEN");
        if (env != NULL && *env != '\0') {
            if (!replica_token_ok(env)) {
                return fail_at(p->err, 0, 0,
                               "JINN_REPLICA_TOKEN: 16 to 1024 printable ASCII characters "
                               "without spaces");
            }
            if (set_str(&cfg->replica_token, env) != 0) {
                return JINN_ENOMEM;
            }
        }
    }
    return 0;
}

/* Cross-field checks once every directive is known. */
static int finish(struct parser *p, struct jinn_config *cfg, const struct token *peers_tok,
                  const struct token *replicas_tok)
{
    int line = peers_tok ? peers_tok->line : 0;
    int column = peers_tok ? peers_tok->column : 0;
    bool found = false;

    if (cfg->replica) {
        return finish_replica(p, cfg);
    }
    if (cfg->n_peers == 0) {
        /* A single node: itself, at its raft listen address. */
        cfg->peers[0].name = jinn_strdup(cfg->server_name);
        cfg->peers[0].address = jinn_strdup(cfg->cluster_listen);
        cfg->n_peers = 1;
        if (cfg->peers[0].name == NULL || cfg->peers[0].address == NULL) {
            return JINN_ENOMEM;
        }
    }
    for (unsigned i = 0; i < cfg->n_peers; i++) {
        found = found || strcmp(cfg->peers[i].name, cfg->server_name) == 0;
    }
    if (!found) {
        return fail_at(p->err, line, column, "cluster_peers does not contain this node ('%s')",
                       cfg->server_name);
    }
    if (cfg->replicas == 0) {
        cfg->replicas = cfg->n_peers;
    }
    if (cfg->replicas > cfg->n_peers) {
        return fail_at(p->err, replicas_tok ? replicas_tok->line : 0,
                       replicas_tok ? replicas_tok->column : 0,
                       "cluster_replicas %u is more than the %u peers", cfg->replicas,
                       cfg->n_peers);
    }
    if (cfg->heartbeat_timeout_ms * 2 > cfg->election_timeout_ms) {
        return fail_at(p->err, 0, 0,
                       "heartbeat_timeout must be at most half of election_timeout");
    }
    return 0;
}

static const struct token *find_directive(const struct parser *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->tokens[i].first_on_line && strcmp(p->tokens[i].text, name) == 0) {
            return &p->tokens[i];
        }
    }
    return NULL;
}

int jinn_config_parse(struct jinn_config *cfg, const char *file, const char *text,
                      size_t len, struct jinn_config_error *err)
{
    struct lexer lx = {text, len, 0, 1, 1, err};
    struct parser p = {NULL, 0, 0, err};
    bool seen[sizeof directives / sizeof directives[0]] = {false};
    const struct token *open;
    int rv;

    memset(err, 0, sizeof *err);
    snprintf(err->file, sizeof err->file, "%s", file);
    if (len > JINN_CONFIG_MAX_FILE) {
        return fail_at(err, 0, 0, "config file larger than %u bytes", JINN_CONFIG_MAX_FILE);
    }
    rv = lex(&lx, &p.tokens, &p.n);
    if (rv != 0) {
        return rv;
    }
    if (p.n == 0) {
        rv = finish(&p, cfg, NULL, NULL);
        goto out;
    }
    open = &p.tokens[0];
    if (!is_open(open) || (p.n > 1 && !p.tokens[1].first_on_line && !is_close(&p.tokens[1]))) {
        rv = fail_at(err, open->line, open->column,
                     "expected the global options block '{' (site blocks are not supported)");
        goto out;
    }
    p.pos = 1;
    for (;;) {
        if (p.pos >= p.n) {
            rv = fail_at(err, open->line, open->column, "unclosed '{'");
            goto out;
        }
        if (is_close(&p.tokens[p.pos])) {
            break;
        }
        rv = parse_directive(&p, cfg, seen);
        if (rv != 0) {
            goto out;
        }
    }
    if (p.pos + 1 < p.n) {
        const struct token *t = &p.tokens[p.pos + 1];
        rv = fail_at(err, t->line, t->column,
                     "unexpected '%s' after the global options block", t->text);
        goto out;
    }
    rv = finish(&p, cfg, find_directive(&p, "cluster_peers"),
                find_directive(&p, "cluster_replicas"));
out:
    tokens_free(p.tokens, p.n);
    return rv;
}

int jinn_config_load(struct jinn_config *cfg, const char *path, struct jinn_config_error *err)
{
    FILE *f;
    char *text;
    size_t len;
    int rv;

    memset(err, 0, sizeof *err);
    snprintf(err->file, sizeof err->file, "%s", path);
    f = fopen(path, "rb");
    if (f == NULL) {
        return fail_at(err, 0, 0, "cannot open: %s", strerror(errno));
    }
    text = jinn_malloc(JINN_CONFIG_MAX_FILE + 1);
    if (text == NULL) {
        fclose(f);
        return JINN_ENOMEM;
    }
    len = fread(text, 1, JINN_CONFIG_MAX_FILE + 1, f);
    if (ferror(f)) {
        rv = fail_at(err, 0, 0, "cannot read: %s", strerror(errno));
    } else {
        rv = jinn_config_parse(cfg, path, text, len, err);
    }
    fclose(f);
    jinn_free(text);
    return rv;
}
