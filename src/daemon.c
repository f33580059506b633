/* daemon.c - see daemon.h.
 *
 * Shutdown order: the first SIGTERM/SIGINT stops the HTTP listener and the
 * node (which hands leadership over first when it is the leader); pending
 * requests are answered or dropped; the loop then runs dry. A second signal
 * exits at once. Whatever happens, the process is gone within the shutdown
 * deadline: a watchdog thread exits with a message if the loop has not
 * finished by then (a stuck peer or handle must not keep the data_dir
 * locked forever). */
#include "daemon.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <uv.h>

#include "alloc.h"
#include "api/api.h"
#include "config.h"
#include "error.h"
#include "fetch.h"
#include "http.h"
#include "log.h"
#include "loopmon.h"
#include "net/stream.h"
#include "node.h"
#include "peerguard.h"
#include "replica/stream.h"
#include "tls.h"
#include "version.h"
#include "wasm/host.h"
#include "wasm/jobs.h"
#include "wasm/runner.h"

struct daemon {
    uv_loop_t loop;
    struct jinn_config cfg;
    struct jinn_node *node;
    struct jinn_api api;
    uv_signal_t sigterm, sigint, sighup;
    bool sighup_on;
    struct jinn_loopmon loopmon;
    bool stopping;
    int pending_stops;
    uv_timer_t http_linger;  /* keeps HTTP up while waiters are withdrawn */
    uint64_t http_linger_until;
    uv_timer_t unlock_wait; /* functions' lock releases before jinn_fetch stops */
    uint64_t unlock_wait_until;
    /* `jinn replica`: the stream client (replica/stream.h); NULL on a member */
    struct jinn_replica_stream *stream;
    SSL_CTX *stream_tls;   /* wss:// client context; NULL without wss URLs */
    struct reload *reload; /* a SIGHUP reload on a worker, or NULL */
    bool reload_again;     /* a SIGHUP arrived meanwhile: reload once more after it */
};

/* Locks held by invocations ended at shutdown are released by requests to
 * this node's API (wasm/host.c); they get this long before outgoing
 * requests stop (else they stay held for their TTL). */
#define WASM_UNLOCK_WAIT_MS 2000

static void stopped_one(void *data)
{
    struct daemon *d = data;
    d->pending_stops--;
    if (d->pending_stops == 0) {
        uv_close((uv_handle_t *)&d->sigterm, NULL);
        uv_close((uv_handle_t *)&d->sigint, NULL);
        if (d->sighup_on) {
            uv_close((uv_handle_t *)&d->sighup, NULL);
        }
        jinn_info("stopped");
    }
}

/* The drain (two election timeouts), a leadership transfer, proposals that
 * may run to their timeout, then a margin. */
static uint64_t shutdown_deadline_ms(const struct jinn_config *cfg)
{
    return 4 * cfg->election_timeout_ms + cfg->request_timeout_ms + WASM_UNLOCK_WAIT_MS + 5000 +
           cfg->job_grace_ms;
}

static void *watchdog(void *arg)
{
    uint64_t ms = (uint64_t)(uintptr_t)arg;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    jinn_error("shutdown did not finish within %llu ms; exiting anyway",
               (unsigned long long)ms);
    _exit(1);
    return NULL;
}

static void start_watchdog(uint64_t ms)
{
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) != 0) {
        return;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, watchdog, (void *)(uintptr_t)ms) != 0) {
        jinn_warn("no shutdown watchdog: thread creation failed");
    }
    pthread_attr_destroy(&attr);
}

static void http_linger_check(uv_timer_t *t)
{
    struct daemon *d = t->data;
    /* Writes this node proposed before the signal are still answered: the
     * node drains them (their entries usually commit), and a client cut
     * off would not know whether they did. */
    if ((d->api.n_lock_waits > 0 || jinn_node_unanswered(d->node) > 0) &&
        uv_now(&d->loop) < d->http_linger_until) {
        return;
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    /* Out of time: reads whose barrier could not end (a leader cut off
     * from its quorum) get their answer before HTTP closes, not a reset. */
    jinn_node_fail_reads(d->node);
    if (d->api.http != NULL) {
        jinn_http_stop(d->api.http, stopped_one, d);
        d->api.http = NULL;
    } else {
        stopped_one(d); /* no server: that part is done */
    }
}

/* The rest of the shutdown, once the functions' lock releases finished (or
 * their wait ran out). */
static void unlock_wait_check(uv_timer_t *t)
{
    struct daemon *d = t->data;
    if (jinn_wasm_host_releases_open() > 0 && uv_now(&d->loop) < d->unlock_wait_until) {
        return;
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    jinn_stream_stop(d->api.stream); /* before raft goes: it holds the node's hooks */
    d->api.stream = NULL;
    jinn_api_stop(&d->api);
    /* Waiting lock acquires leave their line by a command (api/lock.c) and
     * are answered when it applies: HTTP stays up for that, at most
     * request_timeout. */
    d->http_linger_until = uv_now(&d->loop) + d->cfg.request_timeout_ms + 100;
    uv_timer_init(&d->loop, &d->http_linger);
    d->http_linger.data = d;
    uv_timer_start(&d->http_linger, http_linger_check, 0, 10);
    jinn_node_stop(d->node, stopped_one, d);
}

/* The rest of the shutdown, once the jobs are handed over (they need the
 * runner, HTTP and the node until then). */
static void shutdown_rest(void *data)
{
    struct daemon *d = data;
    d->pending_stops = 2;
    jinn_node_set_announcer(d->node, NULL, NULL);
    if (d->stream != NULL) {
        /* A replica: no more records while the node stops. */
        d->pending_stops++;
        jinn_replica_stream_stop(d->stream, stopped_one, d);
        d->stream = NULL;
    }
    if (d->api.wasm != NULL) {
        /* First: ending the invocations starts their lock releases, which
         * need jinn_fetch, HTTP and the node. Sandboxes are killed and
         * reaped before the loop may end. */
        d->pending_stops++;
        jinn_wasm_runner_stop(d->api.wasm, stopped_one, d);
    }
    d->unlock_wait_until = uv_now(&d->loop) + WASM_UNLOCK_WAIT_MS;
    uv_timer_init(&d->loop, &d->unlock_wait);
    d->unlock_wait.data = d;
    uv_timer_start(&d->unlock_wait, unlock_wait_check, 0, 10);
}

/* The TLS contexts of the HTTP server (NULL without http_tls) and of
 * node-to-node calls (fetch.c; NULL without http_tls: peers speak plain
 * HTTP), and the cluster CA that makes a client a peer. Returns 0, or -1
 * with err filled and nothing changed. */
static int tls_build(const struct jinn_config *cfg, SSL_CTX **server, SSL_CTX **client,
                     char *err, size_t n)
{
    const char *trust[1];
    size_t n_trust = 0;
    *server = NULL;
    *client = NULL;
    if (cfg->http_tls_cert == NULL) {
        return 0;
    }
    *server = jinn_tls_server_ctx(cfg->http_tls_cert, cfg->http_tls_key, cfg->http_tls_client_ca,
                                  cfg->cluster_tls_ca, err, n);
    if (*server == NULL) {
        return -1;
    }
    /* Peers are verified against the cluster CA only (their address in
     * the certificate's SAN); without one, against client_ca (an operator's
     * private CA), never the system's CAs; with neither, only this node's
     * own leaf (pinned below) is accepted, so no call - and no credential -
     * leaves for another node over https. */
    if (cfg->cluster_tls_ca != NULL) {
        trust[n_trust++] = cfg->cluster_tls_ca;
    } else if (cfg->http_tls_client_ca != NULL) {
        trust[n_trust++] = cfg->http_tls_client_ca;
    }
    /* The client certificate: the node's cluster identity, else its HTTP
     * one (a loopback call to a node requiring client certificates). */
    *client = cfg->cluster_tls_cert != NULL
                  ? jinn_tls_client_ctx(cfg->cluster_tls_cert, cfg->cluster_tls_key, trust,
                                        n_trust, err, n)
                  : jinn_tls_client_ctx(cfg->http_tls_cert, cfg->http_tls_key, trust, n_trust,
                                        err, n);
    /* Calls to itself meet its own http_tls leaf: pinned by fingerprint,
     * not by trusting the chain file (its intermediates would make every
     * certificate they issued a peer). */
    if (*client != NULL && jinn_tls_client_pin_leaf(*client, cfg->http_tls_cert, err, n) != 0) {
        SSL_CTX_free(*client);
        *client = NULL;
    }
    if (*client == NULL) {
        SSL_CTX_free(*server);
        *server = NULL;
        return -1;
    }
    return 0;
}

static SSL_CTX *replica_tls_build(const struct jinn_config *cfg, bool *ok, char *err,
                                  size_t errlen);

/* A replica's wss:// context, read again: its next connections and its
 * relays (same trust, same client certificate) use it. */
static void replica_tls_install(struct daemon *d, SSL_CTX *ctx)
{
    jinn_replica_stream_set_tls(d->stream, ctx);
    jinn_fetch_set_tls(ctx);
    jinn_fetch_close_idle();
    SSL_CTX_free(d->stream_tls);
    d->stream_tls = ctx;
}

/* A TLS file (certificate chain, key, CA bundle) is at most this large:
 * Debian's whole CA bundle is ~220 KB. OpenSSL's load of many certificates
 * is quadratic (its duplicate check): a larger file would only cost
 * seconds of CPU, and memory. */
#define TLS_FILE_MAX (1024 * 1024)

/* Every TLS file of the configuration is a regular file of at most
 * TLS_FILE_MAX bytes, checked before OpenSSL opens it (a FIFO there would
 * block the open until someone writes to it). A file that cannot be
 * stat'ed is left to OpenSSL, whose message names the file. Runs on a
 * worker on SIGHUP. 0, or -1 with err filled. */
static int tls_files_check(const struct jinn_config *cfg, char *err, size_t n)
{
    const struct {
        const char *what, *file;
    } f[] = {
        {"http_tls cert", cfg->http_tls_cert},
        {"http_tls key", cfg->http_tls_key},
        {"http_tls client_ca", cfg->http_tls_client_ca},
        {"cluster_tls cert", cfg->cluster_tls_cert},
        {"cluster_tls key", cfg->cluster_tls_key},
        {"cluster_tls ca", cfg->cluster_tls_ca},
        {"replica_ca", cfg->replica_ca},
        {"replica_cert", cfg->replica_cert},
        {"replica_key", cfg->replica_key},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        struct stat st;
        if (f[i].file == NULL || stat(f[i].file, &st) != 0) {
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            snprintf(err, n, "%s %s: not a regular file", f[i].what, f[i].file);
            return -1;
        }
        if (st.st_size > TLS_FILE_MAX) {
            snprintf(err, n, "%s %s: %lld bytes, over the limit of %d for a TLS file",
                     f[i].what, f[i].file, (long long)st.st_size, TLS_FILE_MAX);
            return -1;
        }
    }
    return 0;
}

/* One SIGHUP reload: everything is read and checked on a worker (libuv's
 * pool), then installed on the loop, all or nothing. */
struct reload {
    uv_work_t work;
    struct daemon *d;
    bool replica;     /* a wss:// replica: replica_ca / replica_cert too */
    const char *what; /* NULL, or what was not reloaded (err says why) */
    char err[512];
    SSL_CTX *server, *client, *rtls, *raft;
    X509_STORE *peers;
    uint64_t started;
};

static void reload_work(uv_work_t *w)
{
    struct reload *r = w->data;
    const struct jinn_config *cfg = &r->d->cfg;
    bool ok = true;
    if (tls_files_check(cfg, r->err, sizeof r->err) != 0) {
        r->what = "certificates not reloaded";
        return;
    }
    if (r->replica) {
        r->rtls = replica_tls_build(cfg, &ok, r->err, sizeof r->err);
        if (!ok) {
            r->what = "replica_ca / replica_cert not reloaded (nor http_tls)";
            return;
        }
    }
    if (cfg->http_tls_cert == NULL && cfg->cluster_tls_ca == NULL) {
        return;
    }
    if (tls_build(cfg, &r->server, &r->client, r->err, sizeof r->err) != 0) {
        r->what = "http_tls not reloaded";
        return;
    }
    if (cfg->cluster_tls_ca != NULL) {
        r->peers = jinn_tls_peer_ca_load(cfg->cluster_tls_ca, r->err, sizeof r->err);
        if (r->peers != NULL) {
            r->raft = jinn_peerguard_tls_build(cfg->cluster_tls_cert, cfg->cluster_tls_key,
                                               cfg->cluster_tls_ca, r->err, sizeof r->err);
        }
        if (r->raft == NULL) {
            r->what = "cluster_tls not reloaded (nor http_tls)";
        }
    }
}

static void reload_start(struct daemon *d);

static void reload_done(uv_work_t *w, int status)
{
    struct reload *r = w->data;
    struct daemon *d = r->d;
    const struct jinn_config *cfg = &d->cfg;
    unsigned long long ms = (unsigned long long)((uv_hrtime() - r->started) / 1000000);
    d->reload = NULL;
    if (status != 0 || r->what != NULL || d->stopping) {
        if (r->what != NULL && !d->stopping) {
            jinn_error("SIGHUP: %s, the old certificates stay in use: %s", r->what, r->err);
        }
        SSL_CTX_free(r->server);
        SSL_CTX_free(r->client);
        SSL_CTX_free(r->rtls);
        SSL_CTX_free(r->raft);
        X509_STORE_free(r->peers);
        goto next;
    }
    /* Nothing below can fail. */
    if (r->peers != NULL) {
        jinn_tls_peer_ca_install(r->peers);
        jinn_peerguard_tls_install(r->raft); /* drops the pins: set again */
        for (unsigned i = 0; i < cfg->n_cluster_tls_pins; i++) {
            (void)jinn_peerguard_tls_pin(cfg->cluster_tls_pins[i].name,
                                         cfg->cluster_tls_pins[i].sha256);
        }
    }
    if (r->server != NULL) {
        jinn_http_set_tls(d->api.http, r->server);
        if (!cfg->replica) { /* a replica's relays keep the replica_ca context */
            jinn_fetch_set_tls(r->client);
            jinn_fetch_close_idle(); /* later calls present the new certificate */
        }
        SSL_CTX_free(r->server);
        SSL_CTX_free(r->client);
    }
    if (r->rtls != NULL) {
        replica_tls_install(d, r->rtls); /* after http_tls's client: relays use this one */
    }
    if (r->server == NULL && r->peers == NULL) {
        jinn_info("SIGHUP: replica_ca / replica_cert reloaded (read in %llu ms off the loop)",
                  ms);
    } else {
        jinn_info("SIGHUP: certificates reloaded (read in %llu ms off the loop)", ms);
    }
next:
    jinn_free(r);
    if (d->reload_again && !d->stopping) {
        d->reload_again = false;
        reload_start(d);
    }
}

static void reload_start(struct daemon *d)
{
    struct reload *r = jinn_calloc(1, sizeof *r);
    int rv;
    if (r == NULL) {
        jinn_error("SIGHUP: out of memory: nothing reloaded");
        return;
    }
    r->d = d;
    r->replica = d->cfg.replica && d->stream_tls != NULL;
    r->started = uv_hrtime();
    r->work.data = r;
    rv = uv_queue_work(&d->loop, &r->work, reload_work, reload_done);
    if (rv != 0) {
        jinn_error("SIGHUP: nothing reloaded: %s", uv_strerror(rv));
        jinn_free(r);
        return;
    }
    d->reload = r;
}

/* SIGHUP: the certificate, key and CA files are read again (a replica's
 * replica_ca / replica_cert / replica_key too), on a worker: a large or
 * slow file must not hold the loop. New connections use them; open ones
 * keep theirs; a file that does not load keeps everything as it was
 * (logged). A SIGHUP while a reload runs is coalesced into one more reload
 * after it (the files may have changed since it read them). Raft is not
 * touched: the node keeps its role. */
static void on_sighup(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    const struct jinn_config *cfg = &d->cfg;
    (void)signum;
    if (d->stopping) {
        return; /* the HTTP server may be gone */
    }
    if (d->reload != NULL) {
        d->reload_again = true;
        return;
    }
    if (cfg->http_tls_cert == NULL && cfg->cluster_tls_ca == NULL &&
        !(cfg->replica && d->stream_tls != NULL)) {
        jinn_info("SIGHUP: no http_tls or cluster_tls configured: nothing to reload");
        return;
    }
    reload_start(d);
}

/* 127.0.0.0/8 in "ip:port" or "http://ip:port". */
static bool loopback(const char *s)
{
    if (strncmp(s, "http://", 7) == 0) {
        s += 7;
    }
    return strncmp(s, "127.", 4) == 0 || strncmp(s, "localhost:", 10) == 0;
}

/* Whether clients must authenticate on a network: https, and who may
 * speak is proven (client certificates from client_ca, or bearer tokens,
 * whose first comes from bootstrap_token). TLS alone lets anyone in; tokens
 * alone cross the network in the clear. */
static bool auth_configured(const struct jinn_config *cfg)
{
    const char *boot = getenv("JINN_BOOTSTRAP_TOKEN");
    bool tokens = (boot != NULL && *boot != '\0') ||
                  (cfg->bootstrap_token != NULL && *cfg->bootstrap_token != '\0');
    return cfg->http_tls_cert != NULL && (cfg->http_tls_client_ca != NULL || tokens);
}

/* Protected mode: without authentication the API serves loopback only,
 * unless the configuration says `insecure true`. */
static int protected_mode(const struct jinn_config *cfg)
{
    const char *what = NULL, *addr = NULL;
    if (cfg->insecure) {
        return 0;
    }
    /* The raft port: without cluster_tls anyone reaching it speaks raft
     * (peerguard's preamble is no secret) and reads the log. */
    if (!cfg->replica && cfg->cluster_tls_cert == NULL && cfg->cluster_listen != NULL &&
        !loopback(cfg->cluster_listen)) {
        fprintf(stderr,
                "jinn: cluster_listen %s is not a loopback address, and cluster_tls is not "
                "configured (protected mode): anyone who can reach it could join the raft "
                "cluster and read or rewrite its log.\n"
                "  Fix: add `cluster_tls { cert FILE  key FILE  ca FILE }` (see `jinn certs`), "
                "or listen on 127.0.0.1, or (trusted network only) add `insecure true` to the "
                "config.\n",
                cfg->cluster_listen);
        return 2;
    }
    if (auth_configured(cfg)) {
        return 0;
    }
    if (!loopback(cfg->http_listen)) {
        what = "http_listen";
        addr = cfg->http_listen;
    } else if (cfg->http_advertise != NULL && !loopback(cfg->http_advertise)) {
        what = "http_advertise";
        addr = cfg->http_advertise;
    }
    if (what == NULL) {
        return 0;
    }
    fprintf(stderr,
            "jinn: %s %s is not a loopback address, and no authentication is configured "
            "(protected mode): anyone who can reach it could read and write everything.\n"
            "  Fix: add `http_tls { cert FILE  key FILE  client_ca FILE }` (see `jinn certs`), "
            "or http_tls and a bootstrap_token,\n"
            "  or listen on 127.0.0.1, or (trusted network only) add `insecure true` to the "
            "config.\n",
            what, addr);
    return 2;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    if (d->stopping) {
        jinn_warn("second signal: exiting now");
        _exit(1);
    }
    d->stopping = true;
    jinn_info("%s: shutting down", strsignal(signum));
    start_watchdog(shutdown_deadline_ms(&d->cfg));
    if (d->api.jobs != NULL) {
        /* No new leases; running jobs get job_grace, the rest are naked
         * at once so other nodes take them now. */
        jinn_job_pools_stop(d->api.jobs, shutdown_rest, d);
        return;
    }
    shutdown_rest(d);
}

/* After every applied command: the API's waiters, then the functions
 * runner (a deploy, delete or rollback changes what this node runs). */
static void applied(void *data, uint64_t index)
{
    struct daemon *d = data;
    jinn_api_kv_applied(&d->api, index);
    jinn_wasm_runner_applied(d->api.wasm);
    jinn_job_pools_applied(d->api.jobs);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

/* Descriptors HTTP clients may not take: raft's connections and segments,
 * SQL files and their WAL, relays to the leader, logs. The larger of these
 * two is kept back from the soft limit. */
#define FD_RESERVE_MIN 64
#define FD_RESERVE_PERCENT 25
/* A derived max_connections is capped here (each costs ~8 KiB idle). */
#define MAX_CONNECTIONS_AUTO_CAP 16384
#define MAX_CONNECTIONS_MIN 8

/* Raises the descriptor soft limit to the hard one and decides how many
 * HTTP connections fit under it. An explicit max_connections above that is
 * clamped with a warning. Returns 0, or -1 when the limit leaves no room. */
static int connection_budget(const struct jinn_config *cfg, unsigned *out)
{
    struct rlimit rl;
    uint64_t soft, reserve, allowed;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        jinn_warn("getrlimit(RLIMIT_NOFILE) failed; assuming 1024 descriptors");
        rl.rlim_cur = rl.rlim_max = 1024;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            rl.rlim_cur = rl.rlim_max;
        } else {
            jinn_warn("could not raise the descriptor limit from %llu to %llu",
                      (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
        }
    }
    soft = rl.rlim_cur == RLIM_INFINITY ? UINT64_C(1) << 20 : (uint64_t)rl.rlim_cur;
    reserve = soft * FD_RESERVE_PERCENT / 100;
    if (reserve < FD_RESERVE_MIN) {
        reserve = FD_RESERVE_MIN;
    }
    allowed = soft > reserve ? soft - reserve : 0;
    if (allowed < MAX_CONNECTIONS_MIN) {
        jinn_error("descriptor limit %llu is too low: jinn keeps %llu for raft and SQL and "
                   "needs %d more for clients (raise ulimit -n)",
                   (unsigned long long)soft, (unsigned long long)reserve, MAX_CONNECTIONS_MIN);
        return -1;
    }
    if (cfg->max_connections == 0) {
        *out = allowed > MAX_CONNECTIONS_AUTO_CAP ? MAX_CONNECTIONS_AUTO_CAP : (unsigned)allowed;
    } else if (cfg->max_connections > allowed) {
        jinn_warn("max_connections %u clamped to %llu: the descriptor limit is %llu and %llu "
                  "are kept for raft, SQL and forwarding",
                  cfg->max_connections, (unsigned long long)allowed, (unsigned long long)soft,
                  (unsigned long long)reserve);
        *out = (unsigned)allowed;
    } else {
        *out = cfg->max_connections;
    }
    jinn_info("descriptor limit %llu: up to %u HTTP connections", (unsigned long long)soft,
              *out);
    return 0;
}

/* The limits (limit.h) over the connection budget: reserved_conns must
 * leave clients some room. */
static int start_limits(struct daemon *d, unsigned max_connections)
{
    struct jinn_limit_config lc = {
        .rate = d->cfg.limit_rate,
        .burst = d->cfg.limit_burst,
        .concurrent = d->cfg.limit_concurrent,
        .conns_per_addr = d->cfg.limit_conns_per_addr,
        .reserved_conns = d->cfg.reserved_conns,
        .max_connections = max_connections,
    };
    if (lc.reserved_conns >= max_connections) {
        lc.reserved_conns = max_connections / 4;
        jinn_warn("reserved_conns %u clamped to %u: max_connections is %u", d->cfg.reserved_conns,
                  lc.reserved_conns, max_connections);
    }
    d->api.limit = jinn_limit_create(&lc);
    if (d->api.limit == NULL) {
        return JINN_ENOMEM;
    }
    jinn_limit_set_peer_check(d->api.limit, jinn_api_is_peer_ip, &d->api);
    return 0;
}

static int load_config(struct jinn_config *cfg, const char *path, bool replica)
{
    struct jinn_config_error err;
    int rv = replica ? jinn_config_replica_defaults(cfg) : jinn_config_defaults(cfg);
    if (rv != 0) {
        fprintf(stderr, "jinn: out of memory\n");
        return 1;
    }
    if (path == NULL) {
        rv = jinn_config_parse(cfg, "(defaults)", "", 0, &err);
    } else {
        rv = jinn_config_load(cfg, path, &err);
    }
    if (rv != 0) {
        if (err.line > 0) {
            fprintf(stderr, "jinn: %s:%d:%d: %s\n", err.file, err.line, err.column, err.message);
        } else {
            fprintf(stderr, "jinn: %s: %s\n", err.file, err.message);
        }
        return 2;
    }
    return 0;
}

/* A host name in http_advertise becomes an address once, here. */
static int resolve_advertise(struct jinn_config *cfg, const char *path)
{
    struct jinn_config_error err;
    char *before = cfg->http_advertise ? jinn_strdup(cfg->http_advertise) : NULL;
    int rv;
    memset(&err, 0, sizeof err);
    snprintf(err.file, sizeof err.file, "%s", path ? path : "(defaults)");
    rv = jinn_config_resolve(cfg, &err);
    if (rv != 0) {
        if (err.line > 0) {
            fprintf(stderr, "jinn: %s:%d:%d: %s\n", err.file, err.line, err.column, err.message);
        } else {
            fprintf(stderr, "jinn: %s: %s\n", err.file, err.message[0] ? err.message
                                                                      : "out of memory");
        }
        jinn_free(before);
        return 2;
    }
    if (before != NULL && strcmp(before, cfg->http_advertise) != 0) {
        jinn_info("http_advertise %s resolved to %s (once, at startup)", before,
                  cfg->http_advertise);
    }
    jinn_free(before);
    return 0;
}

/* Whether ip:port can be bound now. The probe binds as libuv does
 * (SO_REUSEADDR), so a port in TIME_WAIT is not reported as taken. */
static int port_free(const char *directive, const char *hostport)
{
    char url[96];
    struct sockaddr_in sa;
    int fd, one = 1, rv = 0;
    snprintf(url, sizeof url, "http://%s", hostport);
    if (jinn_fetch_parse_url(url, &sa) != 0) {
        return 0; /* the parser checked it; let the real bind report */
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1) != 0) {
        fprintf(stderr,
                "jinn: %s %s: %s%s; nothing was started and nothing written to data_dir\n",
                directive, hostport, strerror(errno),
                errno == EADDRINUSE ? " (another process, or another jinn node, listens there)"
                                    : "");
        rv = 2;
    }
    close(fd);
    return rv;
}

/* Both listening ports are checked before data_dir is touched: a second
 * node started by mistake on the same ports must not create or lock
 * anything (its data_dir may be new, or another node's). */
static int ports_free(const struct jinn_config *cfg)
{
    int rv = port_free("http_listen", cfg->http_listen);
    if (cfg->replica) {
        return rv; /* no raft port */
    }
    if (rv == 0 && strcmp(cfg->cluster_listen, cfg->http_listen) == 0) {
        fprintf(stderr, "jinn: http_listen and cluster_listen are both %s\n", cfg->http_listen);
        return 2;
    }
    return rv != 0 ? rv : port_free("cluster_listen", cfg->cluster_listen);
}

/* `jinn replica`: the client context for wss:// replica_of URLs, trusting
 * replica_ca (else the system's CAs) and presenting replica_cert/key when
 * given. NULL with *ok when no URL is wss://. */
static SSL_CTX *replica_tls_build(const struct jinn_config *cfg, bool *ok, char *err,
                                  size_t errlen)
{
    const char *trust[1] = {cfg->replica_ca};
    bool wss = false;
    SSL_CTX *ctx;
    *ok = true;
    for (unsigned i = 0; i < cfg->n_replica_of; i++) {
        wss = wss || strncmp(cfg->replica_of[i], "wss://", 6) == 0;
    }
    if (!wss) {
        return NULL;
    }
    ctx = jinn_tls_client_ctx(cfg->replica_cert, cfg->replica_key, trust,
                              cfg->replica_ca != NULL ? 1 : 0, err, errlen);
    if (ctx != NULL && cfg->replica_ca == NULL && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(err, errlen, "cannot load the system's CA certificates");
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    *ok = ctx != NULL;
    return ctx;
}

static SSL_CTX *replica_tls(const struct jinn_config *cfg, bool *ok)
{
    char err[512];
    SSL_CTX *ctx = replica_tls_build(cfg, ok, err, sizeof err);
    if (!*ok) {
        fprintf(stderr, "jinn: replica_ca / replica_cert: %s\n", err);
    }
    return ctx;
}

/* Starts the stream client of a replica (after its HTTP server). */
static int start_stream(struct daemon *d)
{
    const char *env = getenv("JINN_REPLICA_TOKEN");
    struct jinn_replica_stream_config sc = {
        .urls = (const char *const *)d->cfg.replica_of,
        .n_urls = d->cfg.n_replica_of,
        .name = d->cfg.server_name,
        .token = d->cfg.replica_token != NULL ? d->cfg.replica_token
                                              : (env != NULL && *env != '\0' ? env : NULL),
        .stale_after_ms = d->cfg.replica_stale_after_ms,
        .tls = d->stream_tls,
        .max_snapshot = d->cfg.replica_max_snapshot,
    };
    int rv = jinn_replica_stream_start(&d->loop, d->node, &sc, &d->stream);
    if (rv != 0) {
        jinn_error("replica: cannot start the stream client: %s", jinn_error_name(rv));
    }
    return rv;
}

static int daemon_run(const char *config_path, bool bootstrap, bool replica);

int jinn_daemon_run(const char *config_path, bool bootstrap)
{
    return daemon_run(config_path, bootstrap, false);
}

int jinn_daemon_run_replica(const char *config_path)
{
    return daemon_run(config_path, false, true);
}

static int daemon_run(const char *config_path, bool bootstrap, bool replica)
{
    struct daemon *d = jinn_calloc(1, sizeof *d);
    struct jinn_http_config http_cfg = {0};
    int exit_code = 1;
    int rv;

    if (d == NULL) {
        fprintf(stderr, "jinn: out of memory\n");
        return 1;
    }
    rv = load_config(&d->cfg, config_path, replica);
    if (rv != 0) {
        jinn_config_free(&d->cfg);
        jinn_free(d);
        return rv;
    }
    d->cfg.bootstrap = bootstrap;
    jinn_log_set_name(d->cfg.server_name);
    jinn_log_set_level(d->cfg.debug_log ? JINN_LOG_DEBUG : JINN_LOG_INFO);
    rv = resolve_advertise(&d->cfg, config_path);
    if (rv == 0) {
        rv = protected_mode(&d->cfg);
    }
    if (rv == 0) {
        char err[512];
        if (tls_files_check(&d->cfg, err, sizeof err) != 0) {
            fprintf(stderr, "jinn: %s\n", err);
            rv = 2;
        }
    }
    if (rv == 0) {
        char err[512];
        SSL_CTX *client = NULL;
        if (tls_build(&d->cfg, &http_cfg.tls, &client, err, sizeof err) != 0 ||
            (d->cfg.cluster_tls_ca != NULL &&
             jinn_tls_set_peer_ca(d->cfg.cluster_tls_ca, err, sizeof err) != 0)) {
            fprintf(stderr, "jinn: http_tls: %s\n", err);
            rv = 2;
        } else {
            jinn_fetch_set_tls(client);
            SSL_CTX_free(client);
        }
    }
    if (rv == 0 && replica) {
        bool ok;
        d->stream_tls = replica_tls(&d->cfg, &ok);
        rv = ok ? 0 : 2;
        /* Writes are relayed to the leader's API, which is https exactly
         * when the stream is wss (a cluster is TLS on every node or on
         * none): the same trust (replica_ca) and client certificate. */
        jinn_fetch_set_tls(d->stream_tls);
    }
    if (rv == 0) {
        rv = ports_free(&d->cfg);
    }
    if (rv != 0) {
        SSL_CTX_free(d->stream_tls);
        SSL_CTX_free(http_cfg.tls);
        jinn_fetch_set_tls(NULL);
        jinn_tls_set_peer_ca(NULL, NULL, 0);
        jinn_config_free(&d->cfg);
        jinn_free(d);
        return rv;
    }
    signal(SIGPIPE, SIG_IGN);
    if (connection_budget(&d->cfg, &http_cfg.max_connections) != 0) {
        SSL_CTX_free(d->stream_tls);
        jinn_config_free(&d->cfg);
        jinn_free(d);
        return 1;
    }
    uv_loop_init(&d->loop);
    jinn_loopmon_start(&d->loop, &d->loopmon);

    rv = replica ? jinn_node_create_replica(&d->loop, &d->cfg, &d->node)
                 : jinn_node_create(&d->loop, &d->cfg, &d->node);
    if (rv == 0) {
        rv = jinn_node_start(d->node);
    }
    if (rv != 0) {
        /* 2: the operator must act: fix the configuration or command, free
         * space on the disk, or repair damaged raft files. */
        exit_code = rv == JINN_ECONFIG || rv == JINN_ENOSPACE || rv == JINN_ECORRUPT ? 2 : 1;
        goto out_close_loop;
    }
    jinn_api_init(&d->api, &d->loop, &d->cfg, d->node);
    d->api.loopmon = &d->loopmon;
    if (start_limits(d, http_cfg.max_connections) != 0) {
        rv = JINN_ENOMEM;
        goto out_close_loop;
    }
    http_cfg.limit = d->api.limit;
    if (!replica) {
        jinn_node_set_announcer(d->node, jinn_api_announce, &d->api);
    }
    jinn_node_set_apply_hook(d->node, applied, d);
    http_cfg.listen = d->cfg.http_listen;
    http_cfg.max_body = d->cfg.max_body_bytes;
    http_cfg.body_limit = jinn_api_body_limit;
    http_cfg.idle_timeout_ms = d->cfg.idle_timeout_ms;
    http_cfg.read_timeout_ms = d->cfg.read_timeout_ms;
    {
        /* TEST ONLY: a small total output limit (http.h). */
        const char *t = getenv("JINN_TEST_OUTPUT_TOTAL_LIMIT");
        if (t != NULL && *t != '\0') {
            http_cfg.test_output_total = strtoull(t, NULL, 10);
            jinn_warn("TEST ONLY: total HTTP output limit %llu bytes",
                      (unsigned long long)http_cfg.test_output_total);
        }
    }
    rv = jinn_http_start(&d->loop, &http_cfg, jinn_api_handle, &d->api, &d->api.http);
    if (rv != 0) {
        /* Stop raft cleanly so the data dir is left consistent; the replica
         * checker's timer closes (and frees it) in the same loop run. */
        d->pending_stops = 1;
        d->stopping = true;
        jinn_api_check_stop(&d->api);
        jinn_node_stop(d->node, stopped_one, d);
        uv_signal_init(&d->loop, &d->sigterm);
        uv_signal_init(&d->loop, &d->sigint);
        uv_run(&d->loop, UV_RUN_DEFAULT);
        goto out_close_loop;
    }
    if (replica) {
        /* A replica runs no functions or jobs; it follows the cluster. */
        if (start_stream(d) != 0) {
            d->pending_stops = 2;
            d->stopping = true;
            jinn_api_stop(&d->api);
            jinn_http_stop(d->api.http, stopped_one, d);
            d->api.http = NULL;
            jinn_node_stop(d->node, stopped_one, d);
            uv_signal_init(&d->loop, &d->sigterm);
            uv_signal_init(&d->loop, &d->sigint);
            uv_run(&d->loop, UV_RUN_DEFAULT);
            goto out_close_loop;
        }
    } else if (jinn_stream_create(&d->loop, d->node, &d->cfg, &d->api.stream) != 0) {
        jinn_warn("out of memory: no edge replicas are served by this node");
    }
    if (replica) {
        /* no functions, no jobs */
    } else if ((d->api.wasm = jinn_wasm_runner_create(&d->api)) == NULL) {
        jinn_warn("out of memory: functions are not served on this node");
    } else if ((d->api.jobs = jinn_job_pools_create(&d->api)) == NULL) {
        jinn_warn("out of memory: this node runs no jobs");
    }
    uv_signal_init(&d->loop, &d->sigterm);
    uv_signal_init(&d->loop, &d->sigint);
    d->sigterm.data = d;
    d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_signal_init(&d->loop, &d->sighup);
    d->sighup_on = true;
    d->sighup.data = d;
    uv_signal_start(&d->sighup, on_sighup, SIGHUP);
    uv_unref((uv_handle_t *)&d->sighup); /* never what keeps the loop running */
    if (replica) {
        jinn_info("jinn %s (%s) replica serving %s://%s, following %s%s, data %s", JINN_VERSION,
                  jinn_revision(), http_cfg.tls != NULL ? "https" : "http", d->cfg.http_listen,
                  d->cfg.replica_of[0], d->cfg.n_replica_of > 1 ? " ..." : "",
                  d->cfg.data_dir);
    } else {
        jinn_info("jinn %s (%s) serving %s://%s, raft %s, data %s", JINN_VERSION,
                  jinn_revision(), http_cfg.tls != NULL ? "https" : "http",
                  d->cfg.http_listen, d->cfg.cluster_listen, d->cfg.data_dir);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    exit_code = 0;

out_close_loop:
    uv_walk(&d->loop, close_any, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d->loop) != 0) {
        jinn_warn("event loop closed with handles still open");
    }
    jinn_job_pools_destroy(d->api.jobs);
    jinn_wasm_runner_destroy(d->api.wasm);
    jinn_limit_destroy(d->api.limit); /* after the loop: no request holds a ticket */
    jinn_node_destroy(d->node);
    SSL_CTX_free(http_cfg.tls);
    SSL_CTX_free(d->stream_tls);
    jinn_fetch_set_tls(NULL);
    jinn_tls_set_peer_ca(NULL, NULL, 0);
    jinn_config_free(&d->cfg);
    jinn_free(d);
    if (rv == JINN_ECORRUPT) {
        /* libraft 0.15 leaks what it had loaded when a damaged file stops
         * raft_start (its load error paths free nothing); the process ends
         * here, so skip the exit-time leak report that would bury the
         * message and replace exit code 2. */
        fflush(stderr);
        _exit(2);
    }
    return exit_code;
}
