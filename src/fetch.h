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
#include <uv.h>

#include "httpmsg.h"

#define JINN_FETCH_MAX_RESPONSE (80u << 20)

/* code: JINN_OK (head and body valid during the call); JINN_EFORWARD (the
 * request was never fully sent: it had no effect); JINN_EUNKNOWN (sent, but
 * no complete reply: it may have had an effect). */
typedef void (*jinn_fetch_cb)(void *data, int code, const struct jinn_http_msg *head,
                              const char *body, size_t body_len);

/* base_url is "http://ip:port". extra_headers is a block of "Name: value\r\n"
 * lines (may be NULL). Everything is copied. Returns 0 (cb will run exactly
 * once) or an error (cb never runs). */
int jinn_fetch(uv_loop_t *loop, const char *base_url, const char *method, const char *target,
               size_t target_len, const char *extra_headers, const void *body, size_t body_len,
               uint64_t timeout_ms, jinn_fetch_cb cb, void *data);

/* Closes the idle keep-alive connections (at shutdown). */
void jinn_fetch_close_idle(void);

/* Splits "http://ip:port[/...]" into a socket address. 0 on success. */
int jinn_fetch_parse_url(const char *url, struct sockaddr_in *addr);

#endif
