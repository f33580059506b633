/* cli.h - the client commands: `jinn status`, `jinn version`.
 *
 * They talk to a node's HTTP API (--addr, else $JINN_ADDR, else
 * http://127.0.0.1:8080), print for humans by default and JSON with
 * --json, and exit non-zero with a clear message when the node cannot be
 * reached. */
#ifndef JINN_CLI_H
#define JINN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define JINN_CLI_DEFAULT_ADDR "http://127.0.0.1:8080"
#define JINN_CLI_TIMEOUT_MS 5000
#define JINN_CLI_MAX_RESPONSE (64u << 20)

/* How long one request may take (the watch command raises it). */
extern int64_t jinn_cli_timeout_ms;
/* Read-your-writes: when non-zero, every request carries X-Jinn-Min-Index
 * with it (--min-index, or the SQL shell's last index). */
extern uint64_t jinn_cli_min_index;
/* The highest X-Jinn-Index / X-Jinn-Applied-Index any reply carried. */
extern uint64_t jinn_cli_last_index;

/* Takes the options every command shares out of argv (argv[0] is the
 * program): --cacert FILE, --cert FILE, --key FILE (TLS to an https://
 * address: the CA to trust, a client certificate) and --token TOKEN (sent
 * as Authorization: Bearer), each also from JINN_CACERT, JINN_CERT,
 * JINN_KEY, JINN_TOKEN. --key counts only right after --cert FILE (queue
 * pub and fn sign have a --key of their own). 0, or 2 after printing why. */
int jinn_cli_global_opts(int *argc, char **argv);

/* The bearer token (--token or JINN_TOKEN), or NULL. */
const char *jinn_cli_bearer(void);

/* A raw connection for streaming (snapshot save): http:// or https://
 * (TLS with the options above). open fills hostport (for Host:); send
 * sends all (0/-1); recv gives > 0 bytes, 0 at the end, -1 on error
 * (errno ETIMEDOUT when nothing came within timeout_ms). */
struct jinn_cli_stream;
struct jinn_cli_stream *jinn_cli_stream_open(const char *addr, int64_t timeout_ms,
                                             char *hostport, size_t hostport_len, char *err,
                                             size_t err_len);
int jinn_cli_stream_send(struct jinn_cli_stream *st, const void *p, size_t n,
                         int64_t timeout_ms);
ssize_t jinn_cli_stream_recv(struct jinn_cli_stream *st, void *p, size_t n, int64_t timeout_ms);
void jinn_cli_stream_close(struct jinn_cli_stream *st);

int jinn_cli_status(int argc, char **argv);
int jinn_cli_version(int argc, char **argv);
/* jinn kv put|get|create|cas|del|ls|watch ... (cli/kv.c) */
int jinn_cli_kv(int argc, char **argv);
/* jinn lock acquire|refresh|release|show|ls ... (cli/lock.c) */
int jinn_cli_lock(int argc, char **argv);
/* jinn queue ... and jinn worker ... (cli/queue.c) */
int jinn_cli_queue(int argc, char **argv);
int jinn_cli_worker(int argc, char **argv);
/* jinn sql exec|query DB SQL [PARAM...], jinn sql DB (cli/sql.c) */
int jinn_cli_sql(int argc, char **argv);
/* jinn snapshot save|inspect|restore ... (cli/snapshot.c) */
int jinn_cli_snapshot(int argc, char **argv);
/* jinn check: a replica check; exit 0 agree, 1 diverged, 2 incomplete (cli/check.c) */
int jinn_cli_check(int argc, char **argv);
/* jinn members [list|add|remove|promote|demote] ... (cli/members.c) */
int jinn_cli_members(int argc, char **argv);
/* jinn leader transfer [NAME|ID] (cli/members.c) */
int jinn_cli_leader(int argc, char **argv);
/* jinn fn deploy|ls|show|rm|rollback|call|logs ... (cli/fn.c) */
int jinn_cli_fn(int argc, char **argv);
/* jinn fn keygen | sign | policy (cli/fnsig.c); argv after the verb. */
int jinn_cli_fn_sig(const char *verb, int argc, char **argv);
/* The X-Jinn-Signature / X-Jinn-Key header lines from a MODULE.sig for
 * function fn, appended to headers. 0, or -1 with a message printed. */
struct jinn_wbuf;
int jinn_cli_fn_sig_headers(const char *sig_path, const char *fn, struct jinn_wbuf *headers);

/* True when argv asks for help (--help or -h before any "--"): then the
 * usage text went to stdout and the command should exit 0. */
bool jinn_cli_help(int argc, char **argv, const char *usage);

/* How long an idempotent call (GET, PUT, DELETE, a SQL query) keeps
 * retrying while the cluster has no leader (503 no_leader/not_leader/forward_failed: nothing
 * was applied), saying so on stderr. */
#define JINN_CLI_LEADER_WAIT_MS 10000
/* jinn token create|ls|revoke ... (cli/token.c) */
int jinn_cli_token(int argc, char **argv);
/* jinn certs init DIR | add DIR NODE [--ip IP]... (cli/certs.c) */
int jinn_cli_certs(int argc, char **argv);

/* One blocking HTTP request. Returns 0 and fills *status and *body (caller
 * frees, NUL-terminated), or -1 with a message in err. */
int jinn_cli_request(const char *addr, const char *method, const char *target,
                     const char *headers, const char *body, size_t body_len, int *status,
                     char **resp, size_t *resp_len, char *err, size_t err_len);

/* Percent-encodes s for a path segment into w. */
struct jinn_wbuf;
void jinn_cli_escape(struct jinn_wbuf *w, const char *s, size_t n);

/* Appends all of stdin to w (at most max bytes). 0, or -1 with a message. */
int jinn_cli_read_stdin(struct jinn_wbuf *w, size_t max);

/* Appends ?name=value or &name=value (escaped) when value is not NULL. */
void jinn_cli_query(struct jinn_wbuf *w, bool *first, const char *name, const char *value);

/* Sends method target (a wbuf, NUL appended here) to addr. Returns 0 on a
 * 2xx with *resp (caller frees); otherwise prints the node's error (with the
 * current revision when it has one) and returns 1. */
int jinn_cli_call(const char *addr, const char *method, struct jinn_wbuf *target,
                  const char *headers, const char *body, size_t body_len, char **resp,
                  size_t *resp_len, int *status);

#endif
