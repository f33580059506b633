/* fetch.h - a small asynchronous HTTP/1.1 client on the event loop.
 *
 * Used to forward a request to the leader and for a node to announce itself.
 * Keep-alive connections are pooled per URL; a deadline covers the whole
 * exchange, and the response size is bounded. The callback says whether the
 * request could have reached the server: that decides whether a failed
 * write is "not applied" or "outcome unknown". */
#ifndef JINN_FETCH_H
#define JINN_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "codec.h"
#include "httpmsg.h"

#define JINN_FETCH_MAX_RESPONSE (80u << 20)

/* code: JINN_OK (head and body valid during the call); JINN_EFORWARD (the
 * request was never fully sent: it had no effect); JINN_EUNKNOWN (sent, but
 * no complete reply: it may have had an effect). */
typedef void (*jinn_fetch_cb)(void *data, int code, const struct jinn_http_msg *head,
                              const char *body, size_t body_len);

/* base_url is "http://ip:port". extra_headers is a block of "Name: value\r\n"
 * lines (may be NULL). Everything is copied. Returns 0 (cb will run exactly
 * once) or an error (cb never runs): JINN_EINVAL when anything bound for the
 * request head fails jinn_fetch_build_request's checks, JINN_ESHUTDOWN after
 * jinn_fetch_stop_all. */
int jinn_fetch(uv_loop_t *loop, const char *base_url, const char *method, const char *target,
               size_t target_len, const char *extra_headers, const void *body, size_t body_len,
               uint64_t timeout_ms, jinn_fetch_cb cb, void *data);

/* Abandons the request in flight whose callback data is `data` (if any):
 * its connection closes, so the server sees its client go, and its
 * callback runs now (JINN_EFORWARD or JINN_EUNKNOWN). */
void jinn_fetch_cancel(void *data);

/* Closes the idle keep-alive connections. */
void jinn_fetch_close_idle(void);

/* At shutdown: every request in flight fails now (its callback runs with
 * JINN_EFORWARD or JINN_EUNKNOWN), every connection closes, and later
 * jinn_fetch calls are refused, so no handle of ours keeps the loop alive. */
void jinn_fetch_stop_all(void);

/* Appends the request to out after checking everything that goes into its
 * head: base_url must pass jinn_nodes_url_valid (the Host header is its
 * host:port), method is a token of at most 16 bytes, target is 1+ bytes
 * with no space or control byte, extra_headers lines have token names and
 * values without control bytes (HTAB allowed), each ending in one CRLF.
 * Returns 0, JINN_EINVAL (nothing safe to send) or JINN_ENOMEM. */
int jinn_fetch_build_request(struct jinn_wbuf *out, const char *base_url, const char *method,
                             const char *target, size_t target_len, const char *extra_headers,
                             const void *body, size_t body_len);

/* NULL: plain HTTP. Else every later connection (to peers and to this
 * node itself) is TLS with ctx: it presents the node's cluster
 * certificate and verifies the server (a reference is taken; pooled
 * connections made with the old context stay until they close). URLs keep
 * their http:// form: a cluster is TLS on every node or on none. */
void jinn_fetch_set_tls(SSL_CTX *ctx);

/* Splits "http://ip:port[/...]" into a socket address. 0 on success. */
int jinn_fetch_parse_url(const char *url, struct sockaddr_in *addr);

#endif
